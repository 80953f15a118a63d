//! The ruleset changes in nft terms: chains, rules, sets and set elements added and removed, between
//! the compiled rulesets of the two configurations for one node.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Serialize;

use super::diff;
use crate::ruleset::{Rule, Ruleset, SetElement};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleChange {
    pub chain: String,
    /// The rule as nft prints it.
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElementChange {
    pub set: String,
    pub element: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RulesetChanges {
    pub node: String,
    pub chains_added: Vec<String>,
    pub chains_removed: Vec<String>,
    pub rules_added: Vec<RuleChange>,
    pub rules_removed: Vec<RuleChange>,
    pub sets_added: Vec<String>,
    pub sets_removed: Vec<String>,
    pub elements_added: Vec<ElementChange>,
    pub elements_removed: Vec<ElementChange>,
    /// Verdict maps (interface dispatch) whose entries changed.
    pub maps_changed: Vec<String>,
}

impl RulesetChanges {
    pub fn is_empty(&self) -> bool {
        self.chains_added.is_empty()
            && self.chains_removed.is_empty()
            && self.rules_added.is_empty()
            && self.rules_removed.is_empty()
            && self.sets_added.is_empty()
            && self.sets_removed.is_empty()
            && self.elements_added.is_empty()
            && self.elements_removed.is_empty()
            && self.maps_changed.is_empty()
    }
}

fn element_text(e: &SetElement) -> String {
    match e {
        SetElement::V4(n) => n.to_string(),
        SetElement::V6(n) => n.to_string(),
        SetElement::Ports(a, b) if a == b => a.to_string(),
        SetElement::Ports(a, b) => format!("{a}-{b}"),
    }
}

fn sorted(v: &[SetElement]) -> std::borrow::Cow<'_, [SetElement]> {
    if v.is_sorted() {
        std::borrow::Cow::Borrowed(v)
    } else {
        let mut v = v.to_vec();
        v.sort();
        std::borrow::Cow::Owned(v)
    }
}

/// `before` → `after`; `render_rule` writes a rule as nft does.
pub fn changes(
    node: &str,
    before: &Ruleset,
    after: &Ruleset,
    render_rule: &dyn Fn(&Rule) -> String,
) -> RulesetChanges {
    let mut out = RulesetChanges {
        node: node.to_string(),
        ..RulesetChanges::default()
    };
    let index = |rs: &Ruleset| -> (HashMap<String, usize>, HashMap<String, usize>) {
        (
            rs.chains
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect(),
            rs.sets
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect(),
        )
    };
    let (old_chains, old_sets) = index(before);
    let (new_chains, new_sets) = index(after);
    for c in &after.chains {
        match old_chains.get(&c.name).map(|&i| &before.chains[i]) {
            None => {
                out.chains_added.push(c.name.clone());
                for r in &c.rules {
                    out.rules_added.push(RuleChange {
                        chain: c.name.clone(),
                        rule: render_rule(r),
                    });
                }
            }
            Some(old) => {
                for h in diff::hunks(&old.rules, &c.rules) {
                    for r in &old.rules[h.a.0..h.a.1] {
                        out.rules_removed.push(RuleChange {
                            chain: c.name.clone(),
                            rule: render_rule(r),
                        });
                    }
                    for r in &c.rules[h.b.0..h.b.1] {
                        out.rules_added.push(RuleChange {
                            chain: c.name.clone(),
                            rule: render_rule(r),
                        });
                    }
                }
            }
        }
    }
    for c in &before.chains {
        if !new_chains.contains_key(&c.name) {
            out.chains_removed.push(c.name.clone());
            for r in &c.rules {
                out.rules_removed.push(RuleChange {
                    chain: c.name.clone(),
                    rule: render_rule(r),
                });
            }
        }
    }
    for s in &after.sets {
        match old_sets.get(&s.name).map(|&i| &before.sets[i]) {
            None => out.sets_added.push(s.name.clone()),
            Some(old) => {
                let (a, b) = (sorted(&old.elements), sorted(&s.elements));
                let (mut i, mut j) = (0, 0);
                while i < a.len() || j < b.len() {
                    let ord = match (a.get(i), b.get(j)) {
                        (Some(x), Some(y)) => x.cmp(y),
                        (Some(_), None) => Ordering::Less,
                        (None, _) => Ordering::Greater,
                    };
                    match ord {
                        Ordering::Equal => {
                            i += 1;
                            j += 1;
                        }
                        Ordering::Less => {
                            out.elements_removed.push(ElementChange {
                                set: s.name.clone(),
                                element: element_text(&a[i]),
                            });
                            i += 1;
                        }
                        Ordering::Greater => {
                            out.elements_added.push(ElementChange {
                                set: s.name.clone(),
                                element: element_text(&b[j]),
                            });
                            j += 1;
                        }
                    }
                }
            }
        }
    }
    for s in &before.sets {
        if !new_sets.contains_key(&s.name) {
            out.sets_removed.push(s.name.clone());
        }
    }
    for m in &after.maps {
        if before.map(&m.name) != Some(m) {
            out.maps_changed.push(m.name.clone());
        }
    }
    for m in &before.maps {
        if after.map(&m.name).is_none() {
            out.maps_changed.push(m.name.clone());
        }
    }
    out
}
