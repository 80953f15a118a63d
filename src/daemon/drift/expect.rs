//! What the kernel should hold while we guard our table, and how it differs (see the [module
//! documentation](super)).

use std::collections::{BTreeMap, BTreeSet};

use crate::daemon::nftmon::{ChainPrint, Known, SetPrint, TablePrint};
use crate::ruleset::{Match, PortMatch, Ruleset, Verdict};

/// The names of the chains (with their rule counts) and of the named sets and maps of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub chains: BTreeMap<String, usize>,
    pub sets: BTreeSet<String>,
}

impl Layout {
    pub fn of_ruleset(r: &Ruleset) -> Layout {
        Layout {
            chains: r
                .chains
                .iter()
                .map(|c| (c.name.clone(), c.rules.len()))
                .collect(),
            sets: r
                .sets
                .iter()
                .map(|s| s.name.clone())
                .chain(r.maps.iter().map(|m| m.name.clone()))
                .collect(),
        }
    }

    pub fn of_print(p: &TablePrint) -> Layout {
        Layout {
            chains: p
                .chains
                .iter()
                .map(|(n, c)| (n.clone(), c.rules.len()))
                .collect(),
            sets: p
                .sets
                .iter()
                .filter(|(_, s)| !s.anonymous)
                .map(|(n, _)| n.clone())
                .collect(),
        }
    }
}

/// What the kernel must hold while we guard our table: the content hash, the layout, and the fingerprint
/// read right after our own last write (None when it could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub hash: String,
    pub layout: Layout,
    pub baseline: Option<TablePrint>,
    /// A digest of each set of the ruleset, as compiled: which sets the next write leaves unchanged.
    pub sets: BTreeMap<String, u64>,
    /// A digest of each chain of the ruleset, as compiled ([`chain_digests`]): which chains the next
    /// write leaves unchanged. Empty when the kernel did not hold the compiled layout right after the
    /// write (its baseline is then no reference for the chains' rules).
    pub chains: BTreeMap<String, u64>,
}

impl Expectation {
    /// The layout is the ruleset's chains (with their rule counts) and sets and maps, plus whatever else
    /// the kernel held right after our own write (a marker the dataplane adds, such as an empty chain
    /// carrying the content hash). Without a fingerprint it is the ruleset's alone. When the kernel right
    /// after our own write does not hold the ruleset's chains, rule counts and sets, either the dataplane
    /// lays the table out differently or someone raced our write; the kernel's own layout is expected
    /// then (never a repair loop against ourselves), and the second value is false so that the caller
    /// can say so.
    pub fn new(hash: &str, ruleset: &Ruleset, kernel: Option<TablePrint>) -> (Expectation, bool) {
        Expectation::with_sets(hash, ruleset, kernel, set_digests(ruleset))
    }

    /// [`Expectation::with_sets`], with the ruleset's [`chain_digests`] made too (what the next
    /// write's [`Expectation::unchanged_chains`] compares).
    pub fn with_digests(
        hash: &str,
        ruleset: &Ruleset,
        kernel: Option<TablePrint>,
        sets: BTreeMap<String, u64>,
        chains: BTreeMap<String, u64>,
    ) -> (Expectation, bool) {
        let (mut e, fits) = Expectation::with_sets(hash, ruleset, kernel, sets);
        if fits && e.baseline.is_some() {
            e.chains = chains;
        }
        (e, fits)
    }

    /// [`Expectation::new`], with the ruleset's [`set_digests`] already made.
    pub fn with_sets(
        hash: &str,
        ruleset: &Ruleset,
        kernel: Option<TablePrint>,
        sets: BTreeMap<String, u64>,
    ) -> (Expectation, bool) {
        let ir = Layout::of_ruleset(ruleset);
        let (layout, fits) = match &kernel {
            None => (ir, true),
            Some(p) => {
                let k = Layout::of_print(p);
                let fits = ir.chains.iter().all(|(c, n)| k.chains.get(c) == Some(n))
                    && ir.sets.iter().all(|s| {
                        // a set may live under a version of its name (copy on change)
                        k.sets
                            .iter()
                            .any(|n| crate::compile::names::is_set_version(n, s))
                    });
                if fits {
                    let mut layout = k;
                    // Counts and names as the ruleset says; extras as the kernel had them.
                    layout.chains.extend(ir.chains);
                    (layout, true)
                } else {
                    (k, false)
                }
            }
        };
        (
            Expectation {
                hash: hash.to_string(),
                layout,
                baseline: kernel,
                sets,
                chains: BTreeMap::new(),
            },
            fits,
        )
    }

    /// What need not be read back after our write of `next` (its set and chain digests `sets`,
    /// `chains`): the sets and chains that write left as they were (see `fingerprint_known`).
    pub fn known_after(
        &self,
        next: &Ruleset,
        sets: &BTreeMap<String, u64>,
        chains: &BTreeMap<String, u64>,
    ) -> Known {
        Known {
            sets: self.unchanged_sets(sets),
            chains: self.unchanged_chains(next, chains, sets),
        }
    }

    /// What this expectation's baseline says about the sets the next ruleset (its [`set_digests`]) has
    /// unchanged (same name, same type and elements): their kernel elements need not be read again
    /// after writing it.
    pub fn unchanged_sets(&self, next: &BTreeMap<String, u64>) -> BTreeMap<String, SetPrint> {
        let Some(base) = &self.baseline else {
            return BTreeMap::new();
        };
        next.iter()
            .filter(|(name, d)| self.sets.get(*name) == Some(*d))
            .flat_map(|(name, _)| {
                base.sets
                    .iter()
                    .filter(|(k, _)| crate::compile::names::is_set_version(k, name))
                    .map(|(k, p)| (k.clone(), p.clone()))
            })
            .collect()
    }

    /// What this expectation's baseline says about the chains of `next` (whose [`chain_digests`] and
    /// [`set_digests`] are `chains` and `sets`) that a write from this ruleset to the next leaves as
    /// they were: same name, hook and rules (comments included), and every set and verdict map they
    /// look up still under its kernel name (an unchanged set keeps its kernel set, a map is re-created
    /// under its own name). The swap refills only the chains whose rules change, so their rules need
    /// not be read again after it. A chain that looks up a set whose elements change is read back: the
    /// staged swap puts the new elements into a new version of the set (`S.1`) and refills the chain
    /// with lookups of it, byte for byte the same compiled chain but not the kernel rules of the
    /// baseline. A chain someone else changed in between is still a difference from this baseline,
    /// found at the next look and repaired: the baseline is what we wrote, never what someone else left.
    pub fn unchanged_chains(
        &self,
        next: &Ruleset,
        chains: &BTreeMap<String, u64>,
        sets: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, ChainPrint> {
        let Some(base) = &self.baseline else {
            return BTreeMap::new();
        };
        let set_kept = |name: &str| {
            sets.get(name)
                .is_some_and(|d| self.sets.get(name) == Some(d))
        };
        let map_kept = |name: &str| base.sets.contains_key(name);
        let lookups_kept = |c: &crate::ruleset::Chain| {
            c.rules.iter().all(|r| {
                r.matches.iter().all(|m| match m {
                    Match::Addr { set, .. }
                    | Match::Port {
                        port: PortMatch::Set(set),
                        ..
                    } => set_kept(set),
                    _ => true,
                }) && match &r.verdict {
                    Some(Verdict::Vmap { map, .. }) => map_kept(map),
                    _ => true,
                }
            })
        };
        next.chains
            .iter()
            .filter(|c| {
                self.chains
                    .get(&c.name)
                    .is_some_and(|d| chains.get(&c.name) == Some(d))
            })
            .filter(|c| lookups_kept(c))
            .filter_map(|c| {
                base.chains
                    .get(&c.name)
                    .map(|p| (c.name.clone(), p.clone()))
            })
            .collect()
    }
}

/// A digest of each chain of `r` (its name, hook and rules, comments included), by name.
pub fn chain_digests(r: &Ruleset) -> BTreeMap<String, u64> {
    use std::hash::{Hash, Hasher};
    r.chains
        .iter()
        .map(|c| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            c.hash(&mut h);
            (c.name.clone(), h.finish())
        })
        .collect()
}

/// A digest of each set of `r` (name, type and elements), by name.
pub fn set_digests(r: &Ruleset) -> BTreeMap<String, u64> {
    use std::hash::{Hash, Hasher};
    r.sets
        .iter()
        .map(|s| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            s.hash(&mut h);
            (s.name.clone(), h.finish())
        })
        .collect()
}

/// How the kernel's table differs from the expectation, for people; empty when it does not.
pub fn diff(exp: &Expectation, now: &TablePrint) -> Vec<String> {
    let mut out = Vec::new();
    let base = exp.baseline.as_ref();
    for (name, &want) in &exp.layout.chains {
        let Some(c) = now.chains.get(name) else {
            out.push(format!("chain {name} deleted"));
            continue;
        };
        let have = c.rules.len();
        if have > want {
            out.push(format!(
                "{} rule{} added to chain {name}",
                have - want,
                plural(have - want)
            ));
        } else if have < want {
            out.push(format!(
                "{} rule{} removed from chain {name}",
                want - have,
                plural(want - have)
            ));
        } else if let Some(b) = base.and_then(|b| b.chains.get(name)) {
            if b.rules != c.rules {
                out.push(format!("rules changed in chain {name}"));
            }
            if b.def != c.def {
                out.push(format!("chain {name} redefined (hook, priority or policy)"));
            }
        }
    }
    for name in now.chains.keys() {
        if !exp.layout.chains.contains_key(name) {
            out.push(format!("chain {name} added"));
        }
    }
    for name in &exp.layout.sets {
        let Some(s) = now.sets.get(name) else {
            out.push(format!("set {name} deleted"));
            continue;
        };
        if let Some(b) = base.and_then(|b| b.sets.get(name)) {
            if b.def != s.def {
                out.push(format!("set {name} redefined"));
            } else if (b.elements, b.content) != (s.elements, s.content) {
                out.push(format!("elements changed in set {name}"));
            }
        }
    }
    for (name, s) in &now.sets {
        if !s.anonymous && !exp.layout.sets.contains(name) {
            out.push(format!("set {name} added"));
        }
    }
    if let Some(b) = base {
        let anon = |p: &TablePrint| -> Vec<(String, SetSummary)> {
            p.sets
                .iter()
                .filter(|(_, s)| s.anonymous)
                .map(|(n, s)| (n.clone(), (s.def, s.elements, s.content)))
                .collect()
        };
        if anon(b) != anon(now) && out.is_empty() {
            out.push("anonymous sets changed".to_string());
        }
    }
    out
}

type SetSummary = (u64, usize, u64);

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// At most `max` items, then "and N more".
pub fn summarize(changes: &[String], max: usize) -> String {
    if changes.len() <= max {
        return changes.join("; ");
    }
    format!(
        "{}; and {} more",
        changes[..max].join("; "),
        changes.len() - max
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::nftmon::{ChainPrint, SetPrint};

    fn print(chains: &[(&str, &[u64])], sets: &[(&str, u64)]) -> TablePrint {
        TablePrint {
            table: 1,
            chains: chains
                .iter()
                .map(|(n, r)| {
                    (
                        n.to_string(),
                        ChainPrint {
                            def: 1,
                            rules: r.to_vec(),
                            handles: Vec::new(),
                        },
                    )
                })
                .collect(),
            sets: sets
                .iter()
                .map(|(n, c)| {
                    (
                        n.to_string(),
                        SetPrint {
                            anonymous: n.starts_with("__"),
                            def: 1,
                            elements: 2,
                            content: *c,
                        },
                    )
                })
                .collect(),
        }
    }

    fn ruleset() -> Ruleset {
        use crate::ruleset::{Chain, Rule, Set, SetType, Verdict};
        let rule = Rule {
            verdict: Some(Verdict::Accept),
            ..Rule::default()
        };
        Ruleset {
            table: "hostpolicy".into(),
            comment: String::new(),
            sets: vec![Set {
                name: "s".into(),
                set_type: SetType::InetService,
                elements: vec![],
            }],
            maps: vec![],
            chains: vec![
                Chain {
                    name: "in".into(),
                    base: None,
                    rules: vec![rule.clone(), rule],
                },
                Chain {
                    name: "x".into(),
                    base: None,
                    rules: vec![],
                },
            ]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
            origins: Default::default(),
        }
    }

    #[test]
    fn only_sets_the_next_ruleset_leaves_as_they_were_are_known() {
        use crate::ruleset::{Set, SetElement, SetType};
        let mut r1 = ruleset();
        r1.sets.push(Set {
            name: "t".into(),
            set_type: SetType::InetService,
            elements: vec![SetElement::Ports(22, 22)],
        });
        let kernel = print(
            &[("in", &[1, 2]), ("x", &[]), ("hostpolicyd-hash", &[])],
            &[("s", 5), ("t", 6)],
        );
        let (exp, _) = Expectation::new("h", &r1, Some(kernel.clone()));
        // Nothing changed: both sets are known, as the kernel held them.
        assert_eq!(exp.unchanged_sets(&set_digests(&r1)), kernel.sets);
        // `t` gets another element and `u` is new: only `s` is known.
        let mut r2 = r1.clone();
        r2.sets[1].elements.push(SetElement::Ports(80, 80));
        r2.sets.push(Set {
            name: "u".into(),
            set_type: SetType::InetService,
            elements: vec![],
        });
        let known = exp.unchanged_sets(&set_digests(&r2));
        assert_eq!(known.keys().collect::<Vec<_>>(), ["s"]);
        assert_eq!(known["s"], kernel.sets["s"]);
        // Without a baseline read from the kernel there is nothing to reuse.
        let (blind, _) = Expectation::new("h", &r1, None);
        assert!(blind.unchanged_sets(&set_digests(&r1)).is_empty());
    }

    #[test]
    fn differences_are_named() {
        let kernel = print(
            &[("in", &[1, 2]), ("x", &[]), ("hostpolicyd-hash", &[])],
            &[("s", 5)],
        );
        let (exp, fits) = Expectation::new("h", &ruleset(), Some(kernel.clone()));
        assert!(fits);
        assert!(
            exp.layout.chains.contains_key("hostpolicyd-hash"),
            "an extra object present right after our write is part of the layout"
        );
        assert_eq!(diff(&exp, &kernel), Vec::<String>::new());

        let mut k = kernel.clone();
        k.chains.get_mut("in").unwrap().rules.insert(0, 9);
        assert_eq!(diff(&exp, &k), ["1 rule added to chain in"]);
        let mut k = kernel.clone();
        k.chains.get_mut("in").unwrap().rules[1] = 9;
        assert_eq!(diff(&exp, &k), ["rules changed in chain in"]);
        let mut k = kernel.clone();
        k.chains.remove("x");
        k.chains.insert("intruder".into(), ChainPrint::default());
        assert_eq!(diff(&exp, &k), ["chain x deleted", "chain intruder added"]);
        let mut k = kernel.clone();
        k.sets.get_mut("s").unwrap().content = 6;
        assert_eq!(diff(&exp, &k), ["elements changed in set s"]);
        let mut k = kernel.clone();
        k.sets.clear();
        assert_eq!(diff(&exp, &k), ["set s deleted"]);
        let mut k = kernel.clone();
        k.chains.get_mut("in").unwrap().rules.clear();
        assert_eq!(diff(&exp, &k), ["2 rules removed from chain in"]);
    }

    #[test]
    fn a_kernel_that_does_not_fit_the_ruleset_is_its_own_layout() {
        // Right after our own write the kernel already held an extra rule (someone raced us, or the
        // dataplane lays the table out differently): the kernel's layout is expected, not the ruleset's.
        let kernel = print(&[("in", &[1, 2, 3]), ("x", &[])], &[("s", 5)]);
        let (exp, fits) = Expectation::new("h", &ruleset(), Some(kernel.clone()));
        assert!(!fits);
        assert_eq!(diff(&exp, &kernel), Vec::<String>::new());
        // Without a fingerprint, the ruleset alone.
        let (exp, fits) = Expectation::new("h", &ruleset(), None);
        assert!(fits);
        assert_eq!(
            diff(&exp, &print(&[("in", &[1, 2, 3]), ("x", &[])], &[("s", 5)])),
            ["1 rule added to chain in"]
        );
    }

    #[test]
    fn summaries_are_capped() {
        let c: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
        assert_eq!(summarize(&c, 5), "c0; c1; c2; c3; c4");
        assert_eq!(summarize(&c, 2), "c0; c1; and 3 more");
    }
}
