//! The pure planner of the swap (`exec.rs` runs it): from the new ruleset, what the kernel holds in our
//! table (`inventory.rs`) and, when the kernel's content hash confirms it, the ruleset it holds, work out
//! which sets to create (T1) and what the one switching transaction (T2) flushes, deletes and creates.
//! No I/O: the only kernel read, a set's elements, is a callback.
//!
//! # Copy on change
//!
//! A set the new rules use is either *reused* (a kernel set that already holds exactly its elements,
//! of the right kind) or *created* in T1 under a name no kernel object has: its IR name when that is
//! free, else a versioned name `NAME.N` ([`names::set_version`]). A set is never edited in place here, so
//! T1 cannot change what the old rules see; the old versions are deleted in T2, after the chains that
//! used them were flushed. Element-only changes do not come here: [`super::Dataplane::update`] sends
//! them as one batch (`delta.rs`), which is atomic by itself.
//!
//! Which kernel set is the live version of IR set `NAME` is told by the name: `NAME` or `NAME.N`
//! ([`names::is_set_version`]); the compiler's set names never end in `.N`. With the held ruleset known and one
//! version in the kernel, an unchanged set is reused without reading it back (reading a big set is
//! quadratic in the kernel) and a changed one is copied without reading either; without it (no state,
//! or a half-finished swap), every version of the right kind is read and compared.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::elems::kernel_holds;
use super::inventory::{Inventory, KChain, KElem, KSet};
use super::{pending_target, DataplaneError, HASH_CHAIN, TABLE_COMMENT};
use crate::compile::names;
use crate::netlink::{udata_comment_of, NFT_CHAIN_BASE, NFT_SET_MAP, NF_ACCEPT};
use crate::ruleset::{BaseHook, Chain, Hook, Match, PortMatch, Ruleset, Set, Verdict};

use super::batch::{set_flags, set_key, set_udata};

/// How a ruleset is brought into the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No table yet: T1 creates it with the sets (and the pending marker), T2 adds the rest.
    Create,
    /// Our table: the staged swap.
    Staged,
    /// A table of that name that is not ours: replaced whole in one transaction.
    Replace,
}

/// What the swap does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) mode: Mode,
    /// The kernel name of every IR set, by IR index: the set's own name or a version of it.
    pub(crate) names: Vec<String>,
    /// IR sets created in T1 (under `names`), in IR order.
    pub(crate) create_sets: Vec<usize>,
    /// T2: kernel chains flushed.
    pub(crate) flush: Vec<String>,
    /// T2: kernel sets and maps deleted (after the flush): every map, every set no IR set is bound to.
    pub(crate) delete_sets: Vec<String>,
    /// T2: kernel chains deleted (all but the kept ones; the [`HASH_CHAIN`] is replaced separately).
    pub(crate) delete_chains: Vec<String>,
    /// T2: IR chains created, in IR order.
    pub(crate) create_chains: Vec<usize>,
    /// T2: IR chains whose rules are loaded: all but the kept chains whose rules are unchanged and
    /// the edited ones.
    pub(crate) fill: Vec<usize>,
    /// T2: kept chains edited rule by rule (by kernel handle) instead of flushed and refilled.
    pub(crate) edits: Vec<ChainEdit>,
    /// The userdata of the kernel's [`HASH_CHAIN`] before the swap (None: there is none), to put it
    /// back when T2 is rejected after T1 marked the table.
    pub(crate) prior_hash: Option<Vec<u8>>,
}

impl Plan {
    fn new(mode: Mode) -> Plan {
        Plan {
            mode,
            names: Vec::new(),
            create_sets: Vec::new(),
            flush: Vec::new(),
            delete_sets: Vec::new(),
            delete_chains: Vec::new(),
            create_chains: Vec::new(),
            fill: Vec::new(),
            edits: Vec::new(),
            prior_hash: None,
        }
    }

    /// True when the swap takes two transactions (sets to create first): T1 then marks the table as
    /// in transition (the [`HASH_CHAIN`] with the pending comment) until T2 replaces the mark.
    pub(crate) fn staged(&self) -> bool {
        self.mode == Mode::Create || !self.create_sets.is_empty()
    }

    /// The kernel names of the IR sets that differ from their IR names (rules must be rewritten).
    pub(crate) fn renamed<'r>(&'r self, rs: &'r Ruleset) -> HashMap<&'r str, &'r str> {
        rs.sets
            .iter()
            .zip(&self.names)
            .filter(|(s, n)| s.name != **n)
            .map(|(s, n)| (s.name.as_str(), n.as_str()))
            .collect()
    }
}

/// The kernel handles of the rules of some chains of our table, in rule order, as read back right after
/// our own write (see [`super::Dataplane::learn_handles`]), and the handle of the table they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handles {
    pub table: u64,
    pub chains: HashMap<String, Vec<u64>>,
}

pub(crate) use super::batch::Place;

/// A kept chain whose rules change a little, edited in T2 by handle: the rules of `delete` deleted
/// (DELRULE by `NFTA_RULE_HANDLE`), the IR rules `insert` created at their places. Every rule it keeps
/// is the held ruleset's, at its kernel handle, and refers only to what T2 keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainEdit {
    /// The IR chain.
    pub(crate) chain: usize,
    pub(crate) delete: Vec<u64>,
    /// (IR rule index, where), in rule order.
    pub(crate) insert: Vec<(usize, Place)>,
    /// The chain after T2, rule by rule: the kernel handle of a kept rule, None for an inserted one.
    pub(crate) slots: Vec<Option<u64>>,
}

/// At most this share of a chain (1/`EDIT_SHARE` of its rules, old or new, whichever is more) is
/// edited rule by rule; a bigger change flushes and refills it.
pub(crate) const EDIT_SHARE: usize = 4;

/// The edit of a kept chain from `old` (the held ruleset's rules, at kernel handles `handles`) to
/// `new`: the common prefix and suffix are kept, the rest deleted and inserted. None when the change
/// is too big ([`EDIT_SHARE`]), keeps nothing, or a kept rule fails `keep_ok` (it refers to something
/// T2 replaces).
pub(crate) fn edit_chain(
    chain: usize,
    old: &[crate::ruleset::Rule],
    handles: &[u64],
    new: &[crate::ruleset::Rule],
    keep_ok: impl Fn(&crate::ruleset::Rule) -> bool,
) -> Option<ChainEdit> {
    if old.len() != handles.len() {
        return None;
    }
    let (n, m) = (old.len(), new.len());
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (deleted, inserted) = (n - prefix - suffix, m - prefix - suffix);
    let kept = prefix + suffix;
    if kept == 0 || (deleted + inserted) * EDIT_SHARE > n.max(m) {
        return None;
    }
    let kept_old = (0..prefix).chain(n - suffix..n);
    if !kept_old.clone().all(|i| keep_ok(&old[i])) {
        return None;
    }
    let place = if suffix > 0 {
        Place::Before(handles[n - suffix])
    } else {
        Place::End
    };
    let mut slots: Vec<Option<u64>> = handles[..prefix].iter().copied().map(Some).collect();
    slots.extend(std::iter::repeat_n(None, inserted));
    slots.extend(handles[n - suffix..].iter().copied().map(Some));
    Some(ChainEdit {
        chain,
        delete: handles[prefix..n - suffix].to_vec(),
        insert: (prefix..m - suffix).map(|j| (j, place)).collect(),
        slots,
    })
}

/// True when table `inv` carries `previous`'s content hash as a finished swap (the comment of the
/// [`HASH_CHAIN`], not a pending mark), i.e. holds what `previous` describes unless someone changed it
/// without touching that chain (the drift watcher's business).
pub(crate) fn holds(inv: &Inventory, previous: &Ruleset, table: &str) -> bool {
    previous.table == table
        && inv.chains.iter().any(|c| {
            c.name == HASH_CHAIN
                && c.userdata.as_deref().and_then(udata_comment_of).as_deref()
                    == Some(super::clean_comment(&previous.comment).as_ref())
        })
}

/// The kernel's table is marked as in the middle of a swap.
pub(crate) fn is_pending(inv: &Inventory) -> bool {
    inv.chains.iter().any(|c| {
        c.name == HASH_CHAIN
            && c.userdata
                .as_deref()
                .and_then(udata_comment_of)
                .is_some_and(|t| pending_target(&t).is_some())
    })
}

/// True when table `inv` was made by us (the static comment, or the hash chain) and can be swapped in
/// stages.
fn is_ours(inv: &Inventory) -> bool {
    inv.flags == 0
        && (inv.comment.as_deref() == Some(TABLE_COMMENT)
            || inv.chains.iter().any(|c| c.name == HASH_CHAIN))
}

pub(crate) fn hook_num(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

/// The kernel chain is the base chain `type filter hook H priority P; policy accept;`, nothing more.
fn base_chain_matches(k: &KChain, base: BaseHook) -> bool {
    let Some(h) = &k.hook else { return false };
    h.num == hook_num(base.hook)
        && h.priority == base.priority
        && h.chain_type == "filter"
        && h.policy == Some(NF_ACCEPT)
        && !h.devices
        && k.flags & !NFT_CHAIN_BASE == 0
        && k.userdata.as_ref().is_none_or(|u| u.is_empty())
}

/// The kernel chain is a regular chain as we create it (no hook, no flags, no comment).
fn regular_chain_matches(k: &KChain) -> bool {
    k.hook.is_none() && k.flags == 0 && k.userdata.as_ref().is_none_or(|u| u.is_empty())
}

/// The kernel set is a set of `set`'s type and kind (interval or hash) as we create it (not a map, no
/// other flags).
pub(crate) fn set_matches(set: &Set, k: &KSet) -> bool {
    let (key_type, key_len) = set_key(set.set_type);
    k.flags == set_flags(set.set_type)
        && k.data_type.is_none()
        && k.key_type == key_type
        && k.key_len == key_len
        && k.userdata.as_deref() == Some(set_udata().as_slice())
}

/// The chain a rule jumps or goes to, if any.
fn jump_target(v: Option<&Verdict>) -> Option<&str> {
    match v {
        Some(Verdict::Jump(c) | Verdict::Goto(c)) => Some(c),
        _ => None,
    }
}

/// The set a match looks up, if any.
pub(crate) fn set_of(m: &Match) -> Option<&str> {
    match m {
        Match::Addr { set, .. }
        | Match::Port {
            port: PortMatch::Set(set),
            ..
        } => Some(set),
        _ => None,
    }
}

/// Works out the swap (see the module documentation). `elements(name)` reads a kernel set's elements.
/// `held`: the ruleset the kernel holds (its content hash is the kernel's, as a finished swap), if the
/// caller knows it. `handles`: the kernel handles of the held ruleset's rules in some chains (see
/// [`Handles`]), for the table whose handle they carry.
///
/// Chains: the longest prefix of the IR's chains that the kernel holds in that order is kept (base
/// chains as they are, so their hooks stay registered; regular chains only with `held`); with
/// `handles`, every IR chain the kernel holds, in the kernel's order, new chains created after them.
/// A kept chain
/// whose rules are `held`'s is left alone unless its rules use something T2 replaces (a verdict map, a
/// set of a new version, a chain that is re-created). Every other chain is flushed and refilled, or
/// deleted and created in IR order, in T2.
pub(crate) fn plan(
    rs: &Ruleset,
    inv: Option<&Inventory>,
    held: Option<&Ruleset>,
    handles: Option<&Handles>,
    elements: &mut dyn FnMut(&str) -> Result<Vec<KElem>, DataplaneError>,
) -> Result<Plan, DataplaneError> {
    let Some(inv) = inv else {
        let mut p = Plan::new(Mode::Create);
        p.names = rs.sets.iter().map(|s| s.name.clone()).collect();
        p.create_sets = (0..rs.sets.len()).collect();
        p.create_chains = (0..rs.chains.len()).collect();
        p.fill = p.create_chains.clone();
        return Ok(p);
    };
    if !is_ours(inv) {
        return Ok(Plan::new(Mode::Replace));
    }
    let held = held.filter(|h| holds(inv, h, &rs.table) && !is_pending(inv));
    let mut p = Plan::new(Mode::Staged);
    p.prior_hash = inv
        .chains
        .iter()
        .find(|c| c.name == HASH_CHAIN)
        .map(|c| c.userdata.clone().unwrap_or_default());

    // Sets: bind every IR set to a kernel set that holds exactly its elements, or to a new name.
    let held_sets: HashMap<&str, &Set> = held
        .map(|h| h.sets.iter().map(|s| (s.name.as_str(), s)).collect())
        .unwrap_or_default();
    let in_kernel: HashSet<&str> = inv.sets.iter().map(|s| s.name.as_str()).collect();
    let ir_names: HashSet<&str> = rs
        .sets
        .iter()
        .map(|s| s.name.as_str())
        .chain(rs.maps.iter().map(|m| m.name.as_str()))
        .collect();
    let mut chosen: HashSet<String> = HashSet::new();
    // IR sets bound to the one kernel version the chains use now (their rules need no rewrite).
    let mut reused: HashSet<usize> = HashSet::new();
    for (i, s) in rs.sets.iter().enumerate() {
        let candidates: Vec<&KSet> = inv
            .sets
            .iter()
            .filter(|k| names::is_set_version(&k.name, &s.name) && set_matches(s, k))
            .filter(|k| !chosen.contains(&k.name))
            .collect();
        let all_versions = inv
            .sets
            .iter()
            .filter(|k| names::is_set_version(&k.name, &s.name))
            .count();
        let choice = match (held_sets.get(s.name.as_str()), held) {
            // The kernel holds `held`, whose set is this one: its one version is it.
            (Some(h), Some(_)) if *h == s && candidates.len() == 1 && all_versions == 1 => {
                reused.insert(i);
                Some(candidates[0])
            }
            // It holds `held`, whose set differs (or is absent): nothing to read, a copy it is.
            (_, Some(_)) if all_versions <= 1 => None,
            // Not known: read each version of the right kind.
            _ => {
                let mut found = None;
                for k in candidates {
                    if kernel_holds(s, &elements(&k.name)?) {
                        found = Some(k);
                        break;
                    }
                }
                found
            }
        };
        let name = match choice {
            Some(k) => k.name.clone(),
            None => {
                p.create_sets.push(i);
                // Its own name if free, else the first free version: never a name the kernel, another
                // IR set or map, or an earlier choice has.
                let free = |n: &str| {
                    !in_kernel.contains(n)
                        && !chosen.contains(n)
                        && (n == s.name || !ir_names.contains(n))
                };
                let mut name = s.name.clone();
                let mut n = 0;
                while !free(&name) {
                    n += 1;
                    name = names::set_version(&s.name, n);
                }
                name
            }
        };
        chosen.insert(name.clone());
        p.names.push(name);
    }
    let bound: HashSet<&str> = p.names.iter().map(String::as_str).collect();
    p.delete_sets = inv
        .sets
        .iter()
        .filter(|k| k.flags & NFT_SET_MAP != 0 || !bound.contains(k.name.as_str()))
        .map(|k| k.name.clone())
        .collect();

    // Chains: keep the longest prefix of unchanged base chains (and, with `held`, regular chains) that
    // the kernel holds in that order, so that the kernel lists the chains in the IR's order. With
    // rule handles (the daemon's reloads), every such chain wherever it is in the kernel's order: the
    // order of a table's chains changes no packet's path, and a chain created between kept ones (a
    // policy added in the middle) would otherwise make every chain after it, the endpoint chain
    // included, be deleted and created again with its rules.
    let handles = handles.filter(|h| held.is_some() && h.table == inv.handle);
    let positions: HashMap<&str, usize> = inv
        .chains
        .iter()
        .enumerate()
        .map(|(i, k)| (k.name.as_str(), i))
        .collect();
    let mut kept: HashSet<&str> = HashSet::new();
    let mut last = None;
    for c in &rs.chains {
        let Some(&pos) = positions.get(c.name.as_str()) else {
            if handles.is_some() {
                continue;
            }
            break;
        };
        let same_kind = match c.base {
            Some(base) => base_chain_matches(&inv.chains[pos], base),
            None => held.is_some() && regular_chain_matches(&inv.chains[pos]),
        };
        if handles.is_some() {
            if same_kind {
                kept.insert(c.name.as_str());
            }
            continue;
        }
        if !same_kind || last.is_some_and(|l| pos < l) {
            break;
        }
        kept.insert(c.name.as_str());
        last = Some(pos);
    }
    p.delete_chains = inv
        .chains
        .iter()
        .filter(|k| k.name != HASH_CHAIN && !kept.contains(k.name.as_str()))
        .map(|k| k.name.clone())
        .collect();
    p.create_chains = (0..rs.chains.len())
        .filter(|&i| !kept.contains(rs.chains[i].name.as_str()))
        .collect();

    // Which kept chains T2 leaves alone, which it flushes, which it fills.
    let held_chains: HashMap<&str, &Arc<Chain>> = held
        .map(|h| h.chains.iter().map(|c| (c.name.as_str(), c)).collect())
        .unwrap_or_default();
    // A chain the daemon's compile took back from the held ruleset's (`compile::cache`) is the same
    // allocation: no need to compare its rules.
    let same_rules = |c: &Arc<Chain>| {
        held_chains
            .get(c.name.as_str())
            .is_some_and(|h| Arc::ptr_eq(h, c) || h.rules == c.rules)
    };
    let reused_names: HashSet<&str> = reused.iter().map(|&i| rs.sets[i].name.as_str()).collect();
    // A rule that can stay in the kernel as it is: it refers to nothing T2 deletes or re-creates.
    let stays = |r: &crate::ruleset::Rule| {
        !matches!(r.verdict, Some(Verdict::Vmap { .. }))
            && jump_target(r.verdict.as_ref()).is_none_or(|t| kept.contains(t))
            && r.matches
                .iter()
                .all(|m| set_of(m).is_none_or(|s| reused_names.contains(s)))
    };
    let untouched: HashSet<&str> = rs
        .chains
        .iter()
        .filter(|c| kept.contains(c.name.as_str()) && same_rules(c) && c.rules.iter().all(stays))
        .map(|c| c.name.as_str())
        .collect();
    // Kept chains whose rules change a little, edited by handle when the handles are known for this
    // very table (a table made again numbers its rules afresh).
    if let Some(handles) = handles {
        for (i, c) in rs.chains.iter().enumerate() {
            if !kept.contains(c.name.as_str()) || untouched.contains(c.name.as_str()) {
                continue;
            }
            let (Some(h), Some(hs)) = (
                held_chains.get(c.name.as_str()),
                handles.chains.get(&c.name),
            ) else {
                continue;
            };
            if let Some(e) = edit_chain(i, &h.rules, hs, &c.rules, stays) {
                p.edits.push(e);
            }
        }
    }
    let edited: HashSet<&str> = p
        .edits
        .iter()
        .map(|e| rs.chains[e.chain].name.as_str())
        .collect();
    p.flush = inv
        .chains
        .iter()
        .filter(|k| {
            k.name != HASH_CHAIN
                && !untouched.contains(k.name.as_str())
                && !edited.contains(k.name.as_str())
        })
        .map(|k| k.name.clone())
        .collect();
    p.fill = (0..rs.chains.len())
        .filter(|&i| {
            let name = rs.chains[i].name.as_str();
            !untouched.contains(name) && !edited.contains(name)
        })
        .collect();
    Ok(p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::netlink::{self as nl, NFT_SET_ELEM_INTERVAL_END};
    use crate::nft::elems::{kernel_elems, open_udata};
    use crate::nft::inventory::KHook;
    use crate::nft::txn::{encode_t1, encode_t2, encode_undo, kernel_rules};
    use crate::ruleset::{Direction, Family, Rule, SetElement, SetType, VerdictMap};

    pub(crate) fn kelems(set: &Set) -> Vec<KElem> {
        kernel_elems(set)
            .map(|e| KElem {
                key: e.key[..e.len as usize].to_vec(),
                flags: if e.end { NFT_SET_ELEM_INTERVAL_END } else { 0 },
                userdata: e.open.then(open_udata),
                other: false,
            })
            .collect()
    }

    fn v4set(name: &str, nets: &[&str]) -> Set {
        Set {
            name: name.into(),
            set_type: SetType::Ipv4Addr,
            elements: nets
                .iter()
                .map(|n| SetElement::V4(n.parse().unwrap()))
                .collect(),
        }
    }

    fn uses(set: &str, verdict: Verdict) -> Rule {
        Rule {
            matches: vec![Match::Addr {
                dir: Direction::Source,
                family: Family::Ipv4,
                set: set.into(),
                negate: false,
            }],
            verdict: Some(verdict),
            ..Rule::default()
        }
    }

    /// Table `hp`: base chain `in` jumping to `c`, whose rules look up every set (`verdict` each), a
    /// verdict map `m`.
    fn ruleset(sets: &[(&str, &[&str])], verdict: Verdict) -> Ruleset {
        Ruleset {
            table: "hp".into(),
            comment: "hostpolicyd sha256:1".into(),
            sets: sets.iter().map(|(n, e)| v4set(n, e)).collect(),
            maps: vec![VerdictMap {
                name: "m".into(),
                elements: vec![("eth0".into(), Verdict::Goto("c".into()))],
            }],
            chains: vec![
                Chain {
                    name: "in".into(),
                    base: Some(BaseHook {
                        hook: Hook::Input,
                        priority: 0,
                    }),
                    rules: vec![Rule {
                        verdict: Some(Verdict::Jump("c".into())),
                        ..Rule::default()
                    }],
                },
                Chain {
                    name: "c".into(),
                    base: None,
                    rules: sets.iter().map(|(n, _)| uses(n, verdict.clone())).collect(),
                },
            ]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
            origins: Default::default(),
        }
    }

    /// The inventory of our table after `rs` was applied, its sets under `names` (None: their own).
    fn inventory(rs: &Ruleset, names: Option<&[&str]>, comment: &str) -> Inventory {
        let mut chains: Vec<KChain> = rs
            .chains
            .iter()
            .map(|c| KChain {
                name: c.name.clone(),
                hook: c.base.map(|b| KHook {
                    num: hook_num(b.hook),
                    priority: b.priority,
                    chain_type: "filter".into(),
                    policy: Some(NF_ACCEPT),
                    devices: false,
                }),
                flags: if c.base.is_some() { NFT_CHAIN_BASE } else { 0 },
                userdata: None,
            })
            .collect();
        chains.push(KChain {
            name: HASH_CHAIN.into(),
            hook: None,
            flags: 0,
            userdata: Some(nl::udata_comment(comment)),
        });
        let mut sets: Vec<KSet> = rs
            .sets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (key_type, key_len) = set_key(s.set_type);
                KSet {
                    name: names.map_or(s.name.clone(), |n| n[i].to_string()),
                    flags: set_flags(s.set_type),
                    key_type,
                    key_len,
                    data_type: None,
                    userdata: Some(set_udata()),
                }
            })
            .collect();
        sets.push(KSet {
            name: "m".into(),
            flags: NFT_SET_MAP,
            key_type: 41,
            key_len: 16,
            data_type: Some(nl::NFT_DATA_VERDICT),
            userdata: None,
        });
        Inventory {
            comment: Some(TABLE_COMMENT.into()),
            flags: 0,
            handle: 1,
            chains,
            sets,
        }
    }

    /// Plans `rs` against a kernel holding `held` (sets under `names`), reading set elements from
    /// `held`; returns the plan and the sets read.
    fn plan_against(
        rs: &Ruleset,
        held: &Ruleset,
        names: Option<&[&str]>,
        comment: &str,
        known: bool,
    ) -> (Plan, Vec<String>) {
        let inv = inventory(held, names, comment);
        let mut read = Vec::new();
        let mut elements = |name: &str| -> Result<Vec<KElem>, DataplaneError> {
            read.push(name.to_string());
            let i = inv.sets.iter().position(|k| k.name == name).unwrap();
            Ok(kelems(&held.sets[i]))
        };
        let p = plan(rs, Some(&inv), known.then_some(held), None, &mut elements).unwrap();
        (p, read)
    }

    /// Message types (without the subsystem) of a transaction, and the names they carry.
    fn messages(tx: &crate::nft::txn::Tx) -> Vec<(u16, Vec<String>)> {
        nl::messages(&tx.batch.bytes)
            .map(|m| {
                let names = m
                    .attrs()
                    .filter(|a| matches!(a.ty, 2 | 3) && a.payload.last() == Some(&0))
                    .map(|a| nl::attr_str(a.payload))
                    .collect();
                (m.ty & 0xff, names)
            })
            .collect()
    }

    /// The mixed window: a set's elements AND a rule change in one save. The set is never edited
    /// in place: T1 creates its new contents under `s.1` (and touches nothing the old rules use); T2
    /// points the new rules at `s.1` and deletes `s`.
    #[test]
    fn a_mixed_change_copies_the_set_and_never_edits_it_in_place() {
        let old = ruleset(&[("s", &["198.51.100.21/32"])], Verdict::Accept);
        let mut new = ruleset(&[("s", &["198.51.100.20/32"])], Verdict::Drop);
        new.comment = "hostpolicyd sha256:2".into();
        let (p, read) = plan_against(&new, &old, None, &old.comment, true);
        assert!(
            read.is_empty(),
            "the held ruleset says what the kernel holds"
        );
        assert_eq!(p.names, ["s.1"]);
        assert_eq!(p.create_sets, [0]);
        assert_eq!(p.delete_sets, ["s", "m"]);
        assert_eq!(p.flush, ["c"], "only the chain whose rules change");
        let t1 = encode_t1(&new, &p).unwrap();
        let kinds = messages(&t1);
        // begin, NEWSET s.1, its elements, the hash chain replaced (add, delete, add), end
        assert_eq!(
            kinds.iter().map(|k| k.0).collect::<Vec<_>>(),
            [16, 9, 12, 3, 5, 3, 17]
        );
        assert!(kinds[1].1.contains(&"s.1".to_string()));
        assert!(
            !kinds
                .iter()
                .any(|(_, names)| names.contains(&"s".to_string())),
            "T1 does not touch the set the old rules use: {kinds:?}"
        );
        let hash = nl::messages(&t1.batch.bytes).nth(5).unwrap();
        let udata = hash
            .attrs()
            .find(|a| a.ty == nl::NFTA_CHAIN_USERDATA)
            .unwrap();
        assert_eq!(
            nl::udata_comment_of(udata.payload).as_deref(),
            Some("hostpolicyd pending sha256:2")
        );
        let rules = kernel_rules(&new, &p);
        assert_eq!(rules.chains[1].rules[0], uses("s.1", Verdict::Drop));
        let t2 = encode_t2(&new, &rules, &p).unwrap();
        let kinds = messages(&t2);
        assert!(kinds.contains(&(11, vec!["s".into()])), "{kinds:?}");
        assert!(
            !kinds
                .iter()
                .any(|(k, names)| (*k == 12 || *k == 14) && names[0] != "m"),
            "no element is added to or deleted from a set (the new map's aside): {kinds:?}"
        );
    }

    #[test]
    fn unchanged_sets_are_reused_and_their_chains_left_alone() {
        let old = ruleset(
            &[("a", &["10.0.0.0/8"]), ("b", &["192.0.2.0/24"])],
            Verdict::Accept,
        );
        let mut new = old.clone();
        new.comment = "hostpolicyd sha256:2".into();
        new.chain_mut(0).rules.push(uses("a", Verdict::Drop));
        let (p, read) = plan_against(&new, &old, None, &old.comment, true);
        assert!(read.is_empty());
        assert_eq!(p.names, ["a", "b"]);
        assert!(p.create_sets.is_empty() && !p.staged(), "one transaction");
        assert_eq!(p.flush, ["in"]);
        assert_eq!(p.fill, [0]);
        assert_eq!(p.delete_sets, ["m"]);
        // A set living under a version keeps it.
        let (p, _) = plan_against(&new, &old, Some(&["a.1", "b"]), &old.comment, true);
        assert_eq!(p.names, ["a.1", "b"]);
        assert!(p.create_sets.is_empty());
        assert_eq!(
            kernel_rules(&new, &p).chains[0].rules[1],
            uses("a.1", Verdict::Drop)
        );
        // ... and the next copy of it takes the free name again.
        let mut changed = new.clone();
        changed.sets[0] = v4set("a", &["10.0.0.0/9"]);
        let (p, _) = plan_against(&changed, &old, Some(&["a.1", "b"]), &old.comment, true);
        assert_eq!(p.names, ["a", "b"]);
        assert_eq!(p.create_sets, [0]);
        assert_eq!(p.delete_sets, ["a.1", "m"]);
    }

    #[test]
    fn without_the_held_ruleset_sets_are_read_and_compared() {
        let old = ruleset(
            &[("a", &["10.0.0.0/8"]), ("b", &["192.0.2.0/24"])],
            Verdict::Accept,
        );
        let mut new = ruleset(
            &[("a", &["10.0.0.0/8"]), ("b", &["192.0.2.0/25"])],
            Verdict::Accept,
        );
        new.comment = "hostpolicyd sha256:2".into();
        let (p, read) = plan_against(&new, &old, None, &old.comment, false);
        assert_eq!(read, ["a", "b"]);
        assert_eq!(p.names, ["a", "b.1"]);
        assert_eq!(p.create_sets, [1]);
        assert_eq!(p.delete_sets, ["b", "m"]);
        assert_eq!(p.flush, ["in", "c"], "every chain is refilled");
        // A half-finished swap (pending mark): the held ruleset is not trusted, orphans are deleted.
        let mut inv = inventory(&old, None, &crate::nft::pending_comment(&new.comment));
        inv.sets.push(KSet {
            name: "b.1".into(),
            ..inv.sets[1].clone()
        });
        let mut elements = |name: &str| -> Result<Vec<KElem>, DataplaneError> {
            Ok(match name {
                "a" => kelems(&old.sets[0]),
                "b" => kelems(&old.sets[1]),
                _ => kelems(&new.sets[1]), // the copy T1 of the interrupted swap made
            })
        };
        assert!(is_pending(&inv));
        let p = plan(&new, Some(&inv), Some(&old), None, &mut elements).unwrap();
        assert_eq!(
            p.names,
            ["a", "b.1"],
            "the staged copy is what the new rules need"
        );
        assert!(p.create_sets.is_empty());
        assert_eq!(p.delete_sets, ["b", "m"]);
        // Going back to the old configuration instead: the copy is an orphan.
        let p = plan(&old, Some(&inv), Some(&old), None, &mut elements).unwrap();
        assert_eq!(p.names, ["a", "b"]);
        assert_eq!(p.delete_sets, ["m", "b.1"]);
    }

    #[test]
    fn a_kind_change_is_a_new_set() {
        let old = ruleset(&[("a", &["10.0.0.0/8"])], Verdict::Accept);
        let mut new = old.clone();
        new.sets[0].set_type = SetType::Ipv4Hosts;
        new.sets[0].elements = vec![SetElement::V4("10.0.0.1/32".parse().unwrap())];
        new.comment = "hostpolicyd sha256:2".into();
        let (p, read) = plan_against(&new, &old, None, &old.comment, false);
        assert!(read.is_empty(), "a set of the other kind is not read");
        assert_eq!(p.names, ["a.1"]);
        assert_eq!(p.delete_sets, ["a", "m"]);
    }

    #[test]
    fn a_fresh_table_is_made_in_two_transactions_and_undone_whole() {
        let rs = ruleset(&[("a", &["10.0.0.0/8"])], Verdict::Accept);
        let mut none = |_: &str| -> Result<Vec<KElem>, DataplaneError> { unreachable!() };
        let p = plan(&rs, None, None, None, &mut none).unwrap();
        assert_eq!(p.mode, Mode::Create);
        assert!(p.staged());
        let t1 = encode_t1(&rs, &p).unwrap();
        assert_eq!(
            messages(&t1).iter().map(|k| k.0).collect::<Vec<_>>(),
            [16, 0, 9, 12, 3, 5, 3, 17],
            "table, set, elements, pending mark"
        );
        let t2 = encode_t2(&rs, &rs, &p).unwrap();
        let kinds: Vec<u16> = messages(&t2).iter().map(|k| k.0).collect();
        assert!(
            !kinds.contains(&9) || kinds.iter().filter(|k| **k == 9).count() == 1,
            "only the map"
        );
        assert_eq!(
            kinds[kinds.len() - 4..],
            [3, 5, 3, 17],
            "the hash chain replaced last"
        );
        let undo = encode_undo(&rs, &p).unwrap();
        assert_eq!(
            messages(&undo).iter().map(|k| k.0).collect::<Vec<_>>(),
            [16, 0, 2, 17]
        );
    }

    #[test]
    fn the_undo_deletes_the_copies_and_puts_the_hash_back() {
        let old = ruleset(&[("s", &["198.51.100.21/32"])], Verdict::Accept);
        let mut new = ruleset(&[("s", &["198.51.100.20/32"])], Verdict::Drop);
        new.comment = "hostpolicyd sha256:2".into();
        let (p, _) = plan_against(&new, &old, None, &old.comment, true);
        let undo = encode_undo(&new, &p).unwrap();
        let kinds = messages(&undo);
        assert_eq!(kinds[1], (11, vec!["s.1".into()]));
        let last = nl::messages(&undo.batch.bytes).nth(4).unwrap();
        let udata = last
            .attrs()
            .find(|a| a.ty == nl::NFTA_CHAIN_USERDATA)
            .unwrap();
        assert_eq!(
            nl::udata_comment_of(udata.payload).as_deref(),
            Some(old.comment.as_str())
        );
    }

    /// Plans `new` against a kernel holding `old` (hash `old.comment`) with `handles`.
    fn plan_with_handles(new: &Ruleset, old: &Ruleset, handles: &Handles) -> Plan {
        let inv = inventory(old, None, &old.comment);
        let mut elements = |name: &str| -> Result<Vec<KElem>, DataplaneError> {
            let i = inv.sets.iter().position(|k| k.name == name).unwrap();
            Ok(kelems(&old.sets[i]))
        };
        plan(new, Some(&inv), Some(old), Some(handles), &mut elements).unwrap()
    }

    #[test]
    fn kept_chains_that_change_a_little_are_edited_by_handle_the_others_refilled() {
        let old = ruleset(
            &[("a", &["10.0.0.0/8"]), ("b", &["192.0.2.0/24"])],
            Verdict::Accept,
        );
        let handles = Handles {
            table: 1,
            chains: [("in".to_string(), vec![3]), ("c".to_string(), vec![5, 6])]
                .into_iter()
                .collect(),
        };
        // A rule inserted at the start of `c` (8 rules, so that one is within a quarter).
        let mut big = old.clone();
        for _ in 0..6 {
            big.chain_mut(1).rules.push(uses("b", Verdict::Accept));
        }
        let mut big_handles = handles.clone();
        big_handles
            .chains
            .insert("c".into(), (5..13).collect::<Vec<u64>>());
        let mut new = big.clone();
        new.comment = "hostpolicyd sha256:2".into();
        new.chain_mut(1).rules.insert(0, uses("b", Verdict::Drop));
        let p = plan_with_handles(&new, &big, &big_handles);
        assert_eq!(
            p.edits,
            [ChainEdit {
                chain: 1,
                delete: vec![],
                insert: vec![(0, Place::Before(5))],
                slots: std::iter::once(None).chain((5..13).map(Some)).collect(),
            }]
        );
        assert!(!p.flush.contains(&"c".to_string()), "{:?}", p.flush);
        assert!(!p.fill.contains(&1));
        // The T2 of it: one NEWRULE with a position, no flush of `c`.
        let t2 = encode_t2(&new, &kernel_rules(&new, &p), &p).unwrap();
        let placed: Vec<nl::Msg<'_>> = nl::messages(&t2.batch.bytes)
            .filter(|m| m.ty & 0xff == nl::NFT_MSG_NEWRULE)
            .collect();
        assert_eq!(placed.len(), 1);
        assert_eq!(placed[0].flags & nl::NLM_F_APPEND, 0, "before, not after");
        let pos = placed[0]
            .attrs()
            .find(|a| a.ty == nl::NFTA_RULE_POSITION)
            .map(|a| nl::be64(a.payload));
        assert_eq!(pos, Some(Some(5)));
        // The last rule deleted: DELRULE by its handle.
        let mut shorter = big.clone();
        shorter.comment = "hostpolicyd sha256:3".into();
        shorter.chain_mut(1).rules.pop();
        let p = plan_with_handles(&shorter, &big, &big_handles);
        assert_eq!(p.edits.len(), 1);
        assert_eq!(p.edits[0].delete, [12]);
        assert!(p.edits[0].insert.is_empty());
        // Handles of another table (deleted and made again): refilled.
        let other = Handles {
            table: 2,
            ..big_handles.clone()
        };
        let p = plan_with_handles(&new, &big, &other);
        assert!(p.edits.is_empty());
        assert!(p.flush.contains(&"c".to_string()));
        // Handles that do not match the held chain's rules one to one: refilled.
        let p = plan_with_handles(&new, &big, &handles);
        assert!(p.edits.is_empty());
        // A kept rule looks up a set whose contents change (copied as `b.1`): refilled.
        let mut copied = new.clone();
        copied.sets[1] = v4set("b", &["192.0.2.0/25"]);
        let p = plan_with_handles(&copied, &big, &big_handles);
        assert!(p.edits.is_empty());
        assert_eq!(p.create_sets, [1]);
        // More than a quarter of the chain: refilled.
        let mut many = big.clone();
        many.comment = "hostpolicyd sha256:4".into();
        many.chain_mut(1).rules.truncate(5);
        let p = plan_with_handles(&many, &big, &big_handles);
        assert!(p.edits.is_empty());
        // A chain with a verdict map lookup (the map is made again in every switch): refilled.
        let mut vmap = big.clone();
        vmap.chain_mut(0).rules.push(Rule {
            verdict: Some(Verdict::Vmap {
                key: crate::ruleset::IfDir::In,
                map: "m".into(),
            }),
            ..Rule::default()
        });
        for _ in 0..7 {
            vmap.chain_mut(0).rules.push(uses("a", Verdict::Accept));
        }
        let mut vmap2 = vmap.clone();
        vmap2.comment = "hostpolicyd sha256:5".into();
        vmap2.chain_mut(0).rules.push(uses("a", Verdict::Drop));
        let mut h = big_handles.clone();
        h.chains.insert("in".into(), (20..29).collect());
        let p = plan_with_handles(&vmap2, &vmap, &h);
        assert!(p.edits.iter().all(|e| e.chain != 0), "{:?}", p.edits);
        // ... while the same change without the map lookup is an edit.
        let mut plain = vmap.clone();
        plain.chain_mut(0).rules.remove(1);
        let mut plain2 = plain.clone();
        plain2.comment = "hostpolicyd sha256:6".into();
        plain2.chain_mut(0).rules.push(uses("a", Verdict::Drop));
        h.chains.insert("in".into(), (20..28).collect());
        let p = plan_with_handles(&plain2, &plain, &h);
        assert_eq!(p.edits.len(), 1);
        assert_eq!(p.edits[0].chain, 0);
        assert_eq!(p.edits[0].insert, [(8, Place::End)]);
    }

    #[test]
    fn tables_that_are_not_ours_are_replaced() {
        let rs = ruleset(&[("a", &["10.0.0.0/8"])], Verdict::Accept);
        let mut inv = inventory(&rs, None, &rs.comment);
        inv.chains.retain(|c| c.name != HASH_CHAIN);
        inv.comment = Some("hostpolicyd sha256:1".into()); // an older hostpolicyd
        let mut none = |_: &str| -> Result<Vec<KElem>, DataplaneError> { Ok(vec![]) };
        assert_eq!(
            plan(&rs, Some(&inv), None, None, &mut none).unwrap().mode,
            Mode::Replace
        );
        inv.comment = Some(TABLE_COMMENT.into());
        assert_eq!(
            plan(&rs, Some(&inv), None, None, &mut none).unwrap().mode,
            Mode::Staged
        );
        inv.flags = 1; // dormant
        assert_eq!(
            plan(&rs, Some(&inv), None, None, &mut none).unwrap().mode,
            Mode::Replace
        );
    }
}
