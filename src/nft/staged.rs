//! [`super::Netlink`]'s apply: a staged swap that never shows a packet a half-made ruleset.
//!
//! # Why not one transaction
//!
//! Measured on this machine's kernel (6.18) with plain `nft -f` and with this crate: a transaction that
//! *creates* an interval set (`flags interval`) and in the same transaction makes live an accept rule
//! that looks up through it, followed by a drop, drops an occasional packet around the commit (3-4 SYNs
//! per 200 swaps; the SYN is seen at prerouting -400, never at input +10), whether the table is deleted
//! and re-created or the chain is flushed and refilled. The likely cause: the set backend publishes a new
//! set's lookup structure after the generation flips, so a rule that just became active briefly looks up
//! an empty set. Rules that go live in one transaction and look up sets created in an *earlier* one lost
//! nothing (0 of ~130,000 connections over 1,000 swaps, same rules). Verdict maps (hash sets, no
//! `interval`) are not affected.
//!
//! # The swap
//!
//! The table is kept (it is created once, with the comment [`TABLE_COMMENT`]); what the kernel holds in
//! it is read first (`inventory.rs`). Then:
//!
//! 1. **Stage** (T1): create the table if missing; create every set of the new ruleset that does not
//!    exist yet, with its elements, referenced by nothing; bring the sets that are kept to their new
//!    elements in place (element diff against what the kernel holds, made per range as nft makes it:
//!    see `delta.rs`). Sets written literally in the configuration are named after their contents, so
//!    in practice only selector sets (`sel-*`, stable names) change in place; their old rules see the
//!    new members a moment early, as with any membership change. A set's kind (interval or hash set
//!    of single hosts) cannot change in the kernel: the compiler puts it in the name (`-v4` / `-v4h`),
//!    so a kind change is a new set created here, the rules switched to it in T2, the old set deleted in
//!    T3; a kept set of the other kind (same name, e.g. a hand-made ruleset) is re-created like a moved
//!    one ([`set_matches`]).
//! 2. **Switch** (T2, ONE transaction): flush every chain; delete the verdict maps, the chains that are
//!    not kept and the [`HASH_CHAIN`]; create the chains, the maps (hash sets), the rules, and the
//!    [`HASH_CHAIN`] carrying the new content hash. Base chains are kept when they are unchanged, so
//!    their hooks stay registered; a base chain whose hook or priority changed is re-created.
//!    When the caller knows the ruleset the kernel holds (`Dataplane::update`, the daemon's path, and
//!    the kernel's content hash confirms it), regular chains are kept in place too and T2 only flushes
//!    and refills the chains whose rules changed (or that use a verdict map, a moved set or a chain
//!    that is re-created); unchanged sets are not read back. A port changed in one of 10,000
//!    policies is then one chain's rules, not 50,000.
//! 3. **Clean up** (T3): delete the sets the new ruleset does not use. A failure here is only logged: the
//!    new ruleset is in force and unused sets are harmless (the next apply deletes them).
//!
//! # Order: `nft list` equal to `render()`
//!
//! The kernel lists sets and chains in the order they were created, and a kept set or chain keeps its
//! place. `render()` (loaded with `nft -f` into an empty namespace) gives the IR's order, with the
//! [`HASH_CHAIN`] last; the swap keeps the listing identical to it:
//!
//! - chains: the base chains are kept only as the longest prefix of the IR's chain list that the kernel
//!   already holds, in that order; every other chain is created in T2 in IR order, the [`HASH_CHAIN`]
//!   after them (deleted and created again at every swap, it is always last).
//! - sets: the longest prefix of the IR's set list that the kernel holds, in that order and of the same
//!   type, is kept. The sets after it that do not exist yet are created in T1, in order, as long as no
//!   existing set comes before them in the IR. From the first one that does exist ("moved" sets: a new
//!   set sorts before a kept one), a set cannot just be created in T1 (its name is taken, or it would
//!   come before the re-created one): each gets a *staging copy* (`hostpolicyd-staged-N`) in T1, the
//!   rules of T2 look up the copies, and T2 deletes the originals and creates the sets under their real
//!   names (referenced by nothing in T2, so not subject to the race). T3 then refills the chains that
//!   use them (flush + rules with the real names, ONE transaction: the sets were created in T2), creates
//!   the [`HASH_CHAIN`] (absent between T2 and T3, so a crash in between reads as "not our ruleset" and
//!   the next apply redoes the swap), and deletes the copies. A selector set whose members change keeps
//!   its place; a policy added to the configuration usually moves a few sets.
//! - maps are deleted and created again in T2, after every set: always in IR order, after the sets.
//!
//! # Failures
//!
//! - T1 rejected: nothing changed.
//! - T2 rejected: T1 is undone (best effort, one transaction): the sets it created are deleted, the
//!   element changes reverted, a table it created deleted. The error names the object of T2 the kernel
//!   rejected (`kernel rejected rule 3 of chain X (comment "..."), expression 5 (lookup): ...`); if the
//!   undo fails too, the message says so.
//! - T3 rejected: logged (`tracing::warn`), `Ok`: the new ruleset is in force.
//! - A transaction whose answer is lost (the error says "the outcome is unknown"): as before this module,
//!   the caller cannot know which ruleset is in force. T1 is then not undone (if the switch did commit,
//!   reverting element changes would alter the sets its rules use); the next apply converges either way.
//!
//! # A table that is not ours
//!
//! A table of the same name without our marks (neither [`TABLE_COMMENT`] nor the [`HASH_CHAIN`]; e.g.
//! one written by hand, or by an older hostpolicyd that kept the hash in the table's comment) may hold
//! objects this module does not model (flowtables, stateful objects, other chain types). It is replaced
//! whole in ONE transaction (add table, delete table, create table, everything; `batch::encode_apply`):
//! atomic, and nothing changes if it is rejected, at the price of the interval-set race above during that
//! one swap. (Splitting it into "delete + create the table with its sets" and "chains and rules" would
//! leave the host unfiltered between the two, and a rejected second step could not restore the table.)
//!
//! The inventory and the transactions are not fenced against another writer changing our table in
//! between (nft's generation check is not used): a concurrent change makes a later transaction fail
//! (and T1 is undone) rather than silently mixing.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::batch::{
    add_chains, add_hash_chain, add_rules, encode_apply, encode_flush, encode_map, encode_set,
    set_flags, set_ids, set_key, set_udata, Assembler, ElemList, EncodedBatch, Obj,
};
use super::describe::{describe, element_text, list_index};
use super::elems::key_value;
use super::elems::{diff_ranges, ir_ranges, kernel_set_ranges, Elem};
use super::inventory::{self, Inventory, KChain, KElem, KSet, NFT_CHAIN_BASE};
use super::kernel::send_batch;
use super::{clean_comment, DataplaneError, HASH_CHAIN, TABLE_COMMENT};
use crate::netlink::{self as nl, Writer};
use crate::netlink::{udata_comment_of, Reply};
use crate::ruleset::{BaseHook, Chain, Hook, Match, PortMatch, Ruleset, Set, Verdict};

use crate::netlink::{
    NFTA_RULE_CHAIN, NFTA_RULE_TABLE, NFTA_TABLE_FLAGS, NFT_MSG_DELRULE, NFT_MSG_DELSET, NF_ACCEPT,
};
/// Prefix of the names of staging copies of moved sets.
const STAGING_PREFIX: &str = "hostpolicyd-staged-";

/// How a ruleset is brought into the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No table yet: T1 creates it with the sets, T2 adds the rest.
    Create,
    /// Our table: the staged swap.
    Staged,
    /// A table of that name that is not ours: replaced whole in one transaction.
    Replace,
}

/// What the swap does, worked out from the new ruleset and the kernel's inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) mode: Mode,
    // --- T1
    /// Element changes of kept sets.
    pub(crate) diffs: Vec<SetDiff>,
    /// IR sets created under their names in T1, in IR order.
    pub(crate) create_sets: Vec<usize>,
    /// Moved IR sets and the names of their staging copies (created in T1; the real sets in T2).
    pub(crate) staged: Vec<(usize, String)>,
    // --- T2
    /// Kernel chains flushed.
    pub(crate) flush: Vec<String>,
    /// Kernel sets and maps deleted in T2: every map, the originals of moved sets, sets whose name a new
    /// map takes.
    pub(crate) delete_sets: Vec<String>,
    /// Kernel chains deleted (all but the kept base chains).
    pub(crate) delete_chains: Vec<String>,
    /// IR chains created, in IR order.
    pub(crate) create_chains: Vec<usize>,
    /// IR chains whose rules T2 loads: all but the kept chains whose rules are unchanged.
    pub(crate) fill: Vec<usize>,
    // --- T3
    /// IR chains whose rules use a moved set, refilled with the real names.
    pub(crate) refill: Vec<usize>,
    /// Kernel sets the new ruleset does not use, and the staging copies.
    pub(crate) unused_sets: Vec<String>,
}

/// Element changes of one kept set: `remove` (kernel elements, in nft's encoding) then `add` (`ir`
/// indexes the IR set's elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetDiff {
    pub(crate) set: usize,
    pub(crate) remove: Vec<Elem>,
    pub(crate) add: Vec<Elem>,
}

impl Plan {
    fn new(mode: Mode) -> Plan {
        Plan {
            mode,
            diffs: Vec::new(),
            create_sets: Vec::new(),
            staged: Vec::new(),
            flush: Vec::new(),
            delete_sets: Vec::new(),
            delete_chains: Vec::new(),
            create_chains: Vec::new(),
            fill: Vec::new(),
            refill: Vec::new(),
            unused_sets: Vec::new(),
        }
    }
}

/// Applies `rs` (already validated): reads the kernel, plans, sends T1, T2, T3. `previous` is the
/// ruleset the caller last applied, if any: when the kernel's content hash says it still holds it,
/// chains whose rules did not change are left alone and unchanged sets are not read back (see
/// [`plan`]).
pub(crate) fn apply(rs: &Ruleset, previous: Option<&Ruleset>) -> Result<(), DataplaneError> {
    let inv = inventory::read(&rs.table)?;
    let held = previous.filter(|p| inv.as_ref().is_some_and(|i| holds(i, p, &rs.table)));
    let plan = plan(rs, inv.as_ref(), held, &mut |set| {
        inventory::elements(&rs.table, set)
    })?;
    if plan.mode == Mode::Replace {
        let batch = encode_apply(rs)?;
        return send_batch(&batch, |seq, reply| describe(rs, &batch, seq, reply));
    }
    // Everything is encoded before anything is sent: a ruleset that cannot be encoded changes nothing.
    let rules = staging_rules(rs, &plan);
    let t1 = encode_t1(rs, &plan);
    let t2 = encode_t2(rs, &rules, &plan)?;
    let t3 = encode_t3(rs, &plan)?;
    if let Some(t1) = &t1 {
        send(rs, &plan, t1)?;
    }
    if let Err(mut e) = send(rs, &plan, &t2) {
        if t1.is_some() && e.outcome_unknown() {
            // The switch may have been committed: undoing T1 could change sets under its rules.
            e.message.push_str(
                "; the sets staged for it are left as they are (the next apply cleans up)",
            );
            return Err(e);
        }
        return Err(match t1 {
            Some(_) => undo(rs, &plan, e),
            None => e,
        });
    }
    if let Some(t3) = &t3 {
        if let Err(e) = send(rs, &plan, t3) {
            tracing::warn!(
                table = %rs.table,
                "the new ruleset is in force, but cleaning up after the swap failed (the next apply \
                 retries): {e}"
            );
        }
    }
    Ok(())
}

/// True when table `inv` carries `previous`'s content hash (the comment of the [`HASH_CHAIN`]), i.e.
/// holds what `previous` describes unless someone changed it without touching that chain (the drift
/// watcher's business).
fn holds(inv: &Inventory, previous: &Ruleset, table: &str) -> bool {
    previous.table == table
        && inv.chains.iter().any(|c| {
            c.name == HASH_CHAIN
                && c.userdata.as_deref().and_then(udata_comment_of).as_deref()
                    == Some(clean_comment(&previous.comment).as_ref())
        })
}

/// True when table `inv` was made by us (the static comment, or the hash chain) and can be swapped in
/// stages.
fn is_ours(inv: &Inventory) -> bool {
    inv.flags == 0
        && (inv.comment.as_deref() == Some(TABLE_COMMENT)
            || inv.chains.iter().any(|c| c.name == HASH_CHAIN))
}

fn hook_num(h: Hook) -> u32 {
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

/// The kernel set is a set of `set`'s type and kind (interval or hash) as we create it (not a map, no
/// other flags).
fn set_matches(set: &Set, k: &KSet) -> bool {
    let (key_type, key_len) = set_key(set.set_type);
    k.flags == set_flags(set.set_type)
        && k.data_type.is_none()
        && k.key_type == key_type
        && k.key_len == key_len
        && k.userdata.as_deref() == Some(set_udata().as_slice())
}

/// Works out the swap. `elements(name)` reads a kept set's elements from the kernel. `held`: the
/// ruleset the kernel holds (its content hash is the kernel's), if the caller knows it.
///
/// Without `held`, only base chains are kept (their hooks stay registered) and every chain is flushed
/// and refilled. With it, the cost follows what changed (issue 7): every chain of the longest prefix
/// of the IR's chains that the kernel holds in that order is kept, and a kept chain whose rules are
/// those of `held` is neither flushed nor refilled, unless its rules use something T2 deletes (a
/// verdict map, a moved set, a chain that is re-created); a set whose type and elements are those of
/// `held` is not read back (reading a large set is quadratic in the kernel).
pub(crate) fn plan(
    rs: &Ruleset,
    inv: Option<&Inventory>,
    held: Option<&Ruleset>,
    elements: &mut dyn FnMut(&str) -> Result<Vec<KElem>, DataplaneError>,
) -> Result<Plan, DataplaneError> {
    let Some(inv) = inv else {
        let mut p = Plan::new(Mode::Create);
        p.create_sets = (0..rs.sets.len()).collect();
        p.create_chains = (0..rs.chains.len()).collect();
        p.fill = p.create_chains.clone();
        return Ok(p);
    };
    if !is_ours(inv) {
        return Ok(Plan::new(Mode::Replace));
    }
    let mut p = Plan::new(Mode::Staged);

    // Chains: keep the longest prefix of unchanged base chains (and, with `held`, regular chains)
    // that the kernel holds in that order.
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
            break;
        };
        let same_kind = match c.base {
            Some(base) => base_chain_matches(&inv.chains[pos], base),
            None => held.is_some() && regular_chain_matches(&inv.chains[pos]),
        };
        if !same_kind || last.is_some_and(|l| pos < l) {
            break;
        }
        kept.insert(c.name.as_str());
        last = Some(pos);
    }
    p.delete_chains = inv
        .chains
        .iter()
        .filter(|k| !kept.contains(k.name.as_str()))
        .map(|k| k.name.clone())
        .collect();
    p.create_chains = (0..rs.chains.len())
        .filter(|&i| !kept.contains(rs.chains[i].name.as_str()))
        .collect();

    // Sets: keep the longest prefix that the kernel holds in that order, with the same type.
    let held_sets: HashMap<&str, &Set> = held
        .map(|h| h.sets.iter().map(|s| (s.name.as_str(), s)).collect())
        .unwrap_or_default();
    let kernel: HashMap<&str, (usize, &KSet)> = inv
        .sets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), (i, s)))
        .collect();
    let mut k = 0;
    let mut last = None;
    for (i, s) in rs.sets.iter().enumerate() {
        let Some(&(pos, ks)) = kernel.get(s.name.as_str()) else {
            break;
        };
        if last.is_some_and(|l| pos < l) || !set_matches(s, ks) {
            break;
        }
        if held_sets.get(s.name.as_str()) == Some(&s) {
            // The kernel holds exactly this set: nothing to read, nothing to change.
            last = Some(pos);
            k += 1;
            continue;
        }
        let Some(diff) = diff_elements(i, s, &elements(&s.name)?) else {
            break; // elements we would not have written: re-create it
        };
        if !diff.remove.is_empty() || !diff.add.is_empty() {
            p.diffs.push(diff);
        }
        last = Some(pos);
        k += 1;
    }
    let j = (k..rs.sets.len())
        .find(|&i| kernel.contains_key(rs.sets[i].name.as_str()))
        .unwrap_or(rs.sets.len());
    p.create_sets = (k..j).collect();
    let mut taken: HashSet<String> = inv
        .sets
        .iter()
        .map(|s| s.name.clone())
        .chain(rs.sets.iter().map(|s| s.name.clone()))
        .chain(rs.maps.iter().map(|m| m.name.clone()))
        .collect();
    for i in j..rs.sets.len() {
        let mut name = format!("{STAGING_PREFIX}{i}");
        let mut n = 0;
        while taken.contains(&name) {
            n += 1;
            name = format!("{STAGING_PREFIX}{i}-{n}");
        }
        taken.insert(name.clone());
        p.staged.push((i, name));
    }

    let ir_sets: HashSet<&str> = rs.sets.iter().map(|s| s.name.as_str()).collect();
    let ir_maps: HashSet<&str> = rs.maps.iter().map(|m| m.name.as_str()).collect();
    let moved: HashSet<&str> = rs.sets[j..].iter().map(|s| s.name.as_str()).collect();
    for ks in &inv.sets {
        let n = ks.name.as_str();
        if ks.flags & nl::NFT_SET_MAP != 0 || moved.contains(n) || ir_maps.contains(n) {
            p.delete_sets.push(ks.name.clone());
        } else if !ir_sets.contains(n) {
            p.unused_sets.push(ks.name.clone());
        }
    }
    p.unused_sets
        .extend(p.staged.iter().map(|(_, name)| name.clone()));
    p.refill = (0..rs.chains.len())
        .filter(|&c| {
            rs.chains[c].rules.iter().any(|r| {
                r.matches
                    .iter()
                    .any(|m| set_of(m).is_some_and(|s| moved.contains(s)))
            })
        })
        .collect();

    // Which kept chains T2 leaves alone, which it flushes, which it fills.
    let held_chains: HashMap<&str, &Chain> = held
        .map(|h| h.chains.iter().map(|c| (c.name.as_str(), c)).collect())
        .unwrap_or_default();
    let deleted_sets: HashSet<&str> = p.delete_sets.iter().map(String::as_str).collect();
    let untouched: HashSet<&str> = rs
        .chains
        .iter()
        .filter(|c| {
            kept.contains(c.name.as_str())
                && held_chains.get(c.name.as_str()).map(|h| &h.rules) == Some(&c.rules)
                && c.rules.iter().all(|r| {
                    !matches!(r.verdict, Some(Verdict::Vmap { .. }))
                        && jump_target(r.verdict.as_ref()).is_none_or(|t| kept.contains(t))
                        && r.matches.iter().all(|m| {
                            set_of(m)
                                .is_none_or(|s| !moved.contains(s) && !deleted_sets.contains(s))
                        })
                })
        })
        .map(|c| c.name.as_str())
        .collect();
    p.flush = inv
        .chains
        .iter()
        .filter(|k| k.name != HASH_CHAIN && !untouched.contains(k.name.as_str()))
        .map(|k| k.name.clone())
        .collect();
    p.fill = (0..rs.chains.len())
        .filter(|&i| !untouched.contains(rs.chains[i].name.as_str()))
        .collect();
    Ok(p)
}

/// The chain a rule jumps or goes to, if any.
fn jump_target(v: Option<&Verdict>) -> Option<&str> {
    match v {
        Some(Verdict::Jump(c) | Verdict::Goto(c)) => Some(c),
        _ => None,
    }
}

/// The kernel chain is a regular chain as we create it (no hook, no flags, no comment).
fn regular_chain_matches(k: &KChain) -> bool {
    k.hook.is_none() && k.flags == 0 && k.userdata.as_ref().is_none_or(|u| u.is_empty())
}

/// The set a match looks up, if any.
fn set_of(m: &Match) -> Option<&str> {
    match m {
        Match::Addr { set, .. }
        | Match::Port {
            port: PortMatch::Set(set),
            ..
        } => Some(set),
        _ => None,
    }
}

fn set_of_mut(m: &mut Match) -> Option<&mut String> {
    match m {
        Match::Addr { set, .. }
        | Match::Port {
            port: PortMatch::Set(set),
            ..
        } => Some(set),
        _ => None,
    }
}

/// The chains T2 loads: `rs`'s, with moved sets looked up through their staging copies (only the table
/// and the chains are filled in).
fn staging_rules<'r>(rs: &'r Ruleset, plan: &Plan) -> Cow<'r, Ruleset> {
    if plan.staged.is_empty() {
        return Cow::Borrowed(rs);
    }
    let copies: HashMap<&str, &str> = plan
        .staged
        .iter()
        .map(|(i, name)| (rs.sets[*i].name.as_str(), name.as_str()))
        .collect();
    let mut chains = rs.chains.clone();
    for m in chains
        .iter_mut()
        .flat_map(|c| c.rules.iter_mut())
        .flat_map(|r| r.matches.iter_mut())
    {
        if let Some(set) = set_of_mut(m) {
            if let Some(copy) = copies.get(set.as_str()) {
                *set = copy.to_string();
            }
        }
    }
    Cow::Owned(Ruleset {
        table: rs.table.clone(),
        comment: rs.comment.clone(),
        sets: Vec::new(),
        maps: Vec::new(),
        chains,
        origins: Default::default(),
    })
}

// ---------------------------------------------------------------------------------------------------
// Elements: what the kernel holds, as ranges, and the changes to the new ranges.

/// The element changes that bring the kernel's `elems` to `set`'s elements, per range (a range that is
/// not in both is deleted or added whole, start and end element), or None when the kernel's elements
/// are not in our encoding (see `elems::kernel_ranges`).
pub(crate) fn diff_elements(index: usize, set: &Set, elems: &[KElem]) -> Option<SetDiff> {
    let (leading, old) = kernel_set_ranges(set, elems)?;
    let d = diff_ranges(set.set_type, leading, &old, &ir_ranges(set));
    Some(SetDiff {
        set: index,
        remove: d.remove,
        add: d.add,
    })
}

// ---------------------------------------------------------------------------------------------------
// Encoding the transactions.

/// How to name the object of a message in an error, besides what its [`Obj`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    /// The whole description.
    Text(String),
    /// A message about the staging copy of a moved set: [`describe`]'s text plus this name.
    Staging(String),
}

/// One encoded transaction and, per sequence number, what [`Obj`] does not say.
struct Tx {
    batch: EncodedBatch,
    notes: Vec<Option<Note>>,
    /// The undo of T1 (its element lists are the other way round).
    undo: bool,
}

struct TxBuilder {
    asm: Assembler,
    notes: Vec<Option<Note>>,
}

impl TxBuilder {
    fn new(capacity: usize) -> TxBuilder {
        TxBuilder {
            asm: Assembler::new(capacity),
            notes: Vec::new(),
        }
    }

    /// Notes `note` for every message written since the last note.
    fn note_since(&mut self, from: usize, note: Note) {
        self.notes.resize(from, None);
        self.notes.resize(self.asm.objs.len(), Some(note));
    }

    /// A message of `msg` with string attributes only.
    fn simple(&mut self, msg: u16, attrs: &[(u16, &str)], what: String) {
        let from = self.asm.objs.len();
        let m = self.asm.begin_with(msg, 0, Obj::TableEnsure);
        let mut w = Writer {
            buf: &mut self.asm.out,
        };
        for (ty, value) in attrs {
            w.strz(*ty, value);
        }
        w.end_msg(m);
        self.note_since(from, Note::Text(what));
    }

    fn flush_chain(&mut self, table: &str, chain: &str, why: &str) {
        self.simple(
            NFT_MSG_DELRULE,
            &[(NFTA_RULE_TABLE, table), (NFTA_RULE_CHAIN, chain)],
            format!("kernel rejected flushing chain {chain}{why} of table inet {table}"),
        );
    }

    fn delete_set(&mut self, table: &str, set: &str) {
        self.simple(
            NFT_MSG_DELSET,
            &[(nl::NFTA_SET_TABLE, table), (nl::NFTA_SET_NAME, set)],
            format!("kernel rejected deleting set {set} of table inet {table}"),
        );
    }

    fn delete_chain(&mut self, table: &str, chain: &str) {
        self.simple(
            nl::NFT_MSG_DELCHAIN,
            &[(nl::NFTA_CHAIN_TABLE, table), (nl::NFTA_CHAIN_NAME, chain)],
            format!("kernel rejected deleting chain {chain} of table inet {table}"),
        );
    }

    /// None when no message was written.
    fn finish(mut self) -> Option<Tx> {
        if self.asm.objs.len() <= 1 {
            return None;
        }
        let batch = self.asm.finish();
        self.notes.resize(batch.objs.len(), None);
        Some(Tx {
            batch,
            notes: self.notes,
            undo: false,
        })
    }
}

/// Element deletions then additions of the plan's set diffs (tagged with the diff's index); `undo`
/// swaps them (the additions are deleted, the deletions added back).
fn write_diffs(b: &mut TxBuilder, rs: &Ruleset, plan: &Plan, undo: bool) {
    for (k, d) in plan.diffs.iter().enumerate() {
        let set = rs.sets[d.set].name.as_str();
        let (del, add) = if undo {
            (&d.add, &d.remove)
        } else {
            (&d.remove, &d.add)
        };
        let list = |msg, flags| ElemList {
            table: &rs.table,
            set,
            set_id: None,
            msg,
            flags,
        };
        list(nl::NFT_MSG_DELSETELEM, 0).write(&mut b.asm, del.iter().copied(), |first| {
            Obj::DelElems { change: k, first }
        });
        list(nl::NFT_MSG_NEWSETELEM, nl::NLM_F_CREATE | nl::NLM_F_EXCL).write(
            &mut b.asm,
            add.iter().copied(),
            |first| Obj::AddElems { change: k, first },
        );
    }
}

fn elems_size(plan: &Plan) -> usize {
    plan.diffs
        .iter()
        .map(|d| d.remove.len() + d.add.len())
        .sum::<usize>()
        * 48
}

fn sets_size(rs: &Ruleset, which: impl Iterator<Item = usize>) -> usize {
    which.map(|i| rs.sets[i].elements.len() * 96 + 256).sum()
}

/// T1: the table (if new), element changes of kept sets, new sets, staging copies.
fn encode_t1(rs: &Ruleset, plan: &Plan) -> Option<Tx> {
    let staged = plan.staged.iter().map(|(i, _)| *i);
    let mut b = TxBuilder::new(
        512 + elems_size(plan)
            + sets_size(rs, plan.create_sets.iter().copied())
            + sets_size(rs, staged),
    );
    if plan.mode == Mode::Create {
        let m = b
            .asm
            .begin_with(nl::NFT_MSG_NEWTABLE, nl::NLM_F_CREATE, Obj::TableCreate);
        let mut w = Writer {
            buf: &mut b.asm.out,
        };
        w.strz(nl::NFTA_TABLE_NAME, &rs.table);
        w.u32_be(NFTA_TABLE_FLAGS, 0);
        w.attr(nl::NFTA_TABLE_USERDATA, &nl::udata_comment(TABLE_COMMENT));
        w.end_msg(m);
    }
    write_diffs(&mut b, rs, plan, false);
    let names: Vec<&String> = plan
        .create_sets
        .iter()
        .map(|&i| &rs.sets[i].name)
        .chain(plan.staged.iter().map(|(_, name)| name))
        .collect();
    let ids = set_ids(names.into_iter());
    for &i in &plan.create_sets {
        let set = &rs.sets[i];
        encode_set(&mut b.asm, &rs.table, i, set, ids[set.name.as_str()]);
    }
    for (i, name) in &plan.staged {
        let from = b.asm.objs.len();
        let copy = Set {
            name: name.clone(),
            ..rs.sets[*i].clone()
        };
        encode_set(&mut b.asm, &rs.table, *i, &copy, ids[name.as_str()]);
        b.note_since(from, Note::Staging(name.clone()));
    }
    b.finish()
}

/// T2, the switch: flush, delete, create chains (and the hash chain unless sets moved), the moved sets
/// under their real names, the maps, every rule (`rules`: with the staging names of moved sets).
fn encode_t2(rs: &Ruleset, rules: &Ruleset, plan: &Plan) -> Result<Tx, DataplaneError> {
    let staged = plan.staged.iter().map(|(i, _)| *i);
    let maps: usize = rs.maps.iter().map(|m| m.elements.len() * 96 + 256).sum();
    let mut b = TxBuilder::new(4096 + sets_size(rs, staged) + maps + rs.rule_count() * 192);
    for c in &plan.flush {
        b.flush_chain(&rs.table, c, "");
    }
    for s in &plan.delete_sets {
        b.delete_set(&rs.table, s);
    }
    for c in &plan.delete_chains {
        b.delete_chain(&rs.table, c);
    }
    add_chains(&mut b.asm, rs, &plan.create_chains);
    if plan.staged.is_empty() {
        add_hash_chain(&mut b.asm, &rs.table, &rs.comment);
    }
    let ids = set_ids(
        plan.staged
            .iter()
            .map(|(i, _)| &rs.sets[*i].name)
            .chain(rs.maps.iter().map(|m| &m.name)),
    );
    for (i, _) in &plan.staged {
        let set = &rs.sets[*i];
        encode_set(&mut b.asm, &rs.table, *i, set, ids[set.name.as_str()]);
    }
    for (i, map) in rs.maps.iter().enumerate() {
        encode_map(&mut b.asm, &rs.table, i, map, ids[map.name.as_str()]);
    }
    add_rules(&mut b.asm, rules, &plan.fill, &ids)?;
    Ok(b.finish()
        .expect("T2 always holds the rules or the hash chain"))
}

/// T3, the clean-up: after moved sets, the refill of the chains that use them and the hash chain; the
/// deletion of unused sets (and staging copies).
fn encode_t3(rs: &Ruleset, plan: &Plan) -> Result<Option<Tx>, DataplaneError> {
    let rules: usize = plan.refill.iter().map(|&c| rs.chains[c].rules.len()).sum();
    let mut b = TxBuilder::new(1024 + rules * 192 + plan.unused_sets.len() * 64);
    if !plan.staged.is_empty() {
        for &c in &plan.refill {
            b.flush_chain(&rs.table, &rs.chains[c].name, " (to refill it)");
        }
        add_rules(&mut b.asm, rs, &plan.refill, &HashMap::new())?;
        add_hash_chain(&mut b.asm, &rs.table, &rs.comment);
    }
    for s in &plan.unused_sets {
        b.delete_set(&rs.table, s);
    }
    Ok(b.finish())
}

/// Undoing T1 after T2 was rejected: the table deleted if T1 created it, else the element changes
/// reverted and the sets T1 created deleted.
fn encode_undo(rs: &Ruleset, plan: &Plan) -> Option<Tx> {
    if plan.mode == Mode::Create {
        let batch = encode_flush(&rs.table);
        let notes = vec![None; batch.objs.len()];
        return Some(Tx {
            batch,
            notes,
            undo: true,
        });
    }
    let mut b = TxBuilder::new(512 + elems_size(plan) + 64 * plan.create_sets.len());
    write_diffs(&mut b, rs, plan, true);
    for &i in &plan.create_sets {
        b.delete_set(&rs.table, &rs.sets[i].name);
    }
    for (_, name) in &plan.staged {
        b.delete_set(&rs.table, name);
    }
    b.finish().map(|tx| Tx { undo: true, ..tx })
}

fn undo(rs: &Ruleset, plan: &Plan, mut err: DataplaneError) -> DataplaneError {
    if let Some(tx) = encode_undo(rs, plan) {
        if let Err(u) = send(rs, plan, &tx) {
            err.message.push_str(&format!(
                "; undoing the sets staged for it failed too (they stay until the next apply): {u}"
            ));
        }
    }
    err
}

fn send(rs: &Ruleset, plan: &Plan, tx: &Tx) -> Result<(), DataplaneError> {
    send_batch(&tx.batch, |seq, reply| {
        describe_tx(rs, plan, tx, seq, reply)
    })
}

/// Names the object of a rejected message of a staged transaction.
fn describe_tx(rs: &Ruleset, plan: &Plan, tx: &Tx, seq: u32, reply: &Reply) -> String {
    match tx.notes.get(seq as usize).cloned().flatten() {
        Some(Note::Text(t)) => return t,
        Some(Note::Staging(name)) => {
            return format!(
                "{} (its staging copy {name})",
                describe(rs, &tx.batch, seq, reply)
            )
        }
        None => {}
    }
    let (change, first, add) = match tx.batch.objs.get(seq as usize) {
        Some(&Obj::AddElems { change, first }) => (change, first, true),
        Some(&Obj::DelElems { change, first }) => (change, first, false),
        _ => return describe(rs, &tx.batch, seq, reply),
    };
    let Some(d) = plan.diffs.get(change) else {
        return describe(rs, &tx.batch, seq, reply);
    };
    let set = &rs.sets[d.set];
    // An undo sends the lists the other way round.
    let list = if add != tx.undo { &d.add } else { &d.remove };
    let verb = if add { "adding" } else { "deleting" };
    let k = tx
        .batch
        .message(seq)
        .zip(reply.offset)
        .and_then(|(m, off)| list_index(&m, off));
    match k.and_then(|k| list.get(first + k)) {
        Some(e) if e.end && key_value(&e.key[..e.len as usize]) == 0 => format!(
            "kernel rejected {verb} the leading end element (0) of set {}",
            set.name
        ),
        Some(e) if add && !tx.undo => format!(
            "kernel rejected adding element {} ({}{}) of set {}",
            e.ir,
            set.elements.get(e.ir).map(element_text).unwrap_or_default(),
            if e.end { ", its end" } else { "" },
            set.name
        ),
        Some(e) => format!(
            "kernel rejected {verb} the range {} {} of set {}",
            if e.end { "end" } else { "start" },
            key_text(e),
            set.name
        ),
        None => format!("kernel rejected {verb} elements of set {}", set.name),
    }
}

/// An element's key as an address or port.
fn key_text(e: &Elem) -> String {
    let key = &e.key[..e.len as usize];
    match e.len {
        4 => Ipv4Addr::from(u32::try_from(key_value(key)).unwrap_or(0)).to_string(),
        16 => Ipv6Addr::from(key_value(key)).to_string(),
        _ => key_value(key).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::elems::{
        bounds, kernel_elems, kernel_hosts, kernel_ranges, key_len, open_udata,
    };
    use crate::nft::inventory::KHook;
    use crate::ruleset::{
        Chain, Direction, Family, Rule, SetElement, SetType, Verdict, VerdictMap,
    };

    fn kelems(set: &Set) -> Vec<KElem> {
        kernel_elems(set)
            .map(|e| KElem {
                key: e.key[..e.len as usize].to_vec(),
                flags: if e.end {
                    nl::NFT_SET_ELEM_INTERVAL_END
                } else {
                    0
                },
                userdata: e.open.then(open_udata),
                other: false,
            })
            .collect()
    }

    fn v4set_hosts(name: &str, hosts: &[&str]) -> Set {
        Set {
            name: name.into(),
            set_type: SetType::Ipv4Hosts,
            elements: hosts
                .iter()
                .map(|h| SetElement::V4(format!("{h}/32").parse().unwrap()))
                .collect(),
        }
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

    fn ports(name: &str, r: &[(u16, u16)]) -> Set {
        Set {
            name: name.into(),
            set_type: SetType::InetService,
            elements: r.iter().map(|&(a, b)| SetElement::Ports(a, b)).collect(),
        }
    }

    /// (key, end, open) of encoded elements, as a sorted list.
    fn keys(elems: impl IntoIterator<Item = Elem>) -> Vec<(Vec<u8>, bool, bool)> {
        let mut v: Vec<_> = elems
            .into_iter()
            .map(|e| (e.key[..e.len as usize].to_vec(), e.end, e.open))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn kernel_ranges_read_back_what_we_write() {
        for set in [
            v4set("a", &["10.0.0.0/8", "128.0.0.0/1"]),
            v4set("b", &["0.0.0.0/8", "11.0.0.0/8", "12.0.0.0/8"]),
            v4set("c", &["0.0.0.0/0"]),
            v4set("d", &[]),
            ports("p", &[(0, 22), (80, 80), (65535, 65535)]),
        ] {
            let len = key_len(set.set_type);
            let (leading, ranges) = kernel_ranges(&kelems(&set), len).unwrap();
            let want: Vec<(u128, u128)> = set.elements.iter().map(bounds).collect();
            assert_eq!(ranges, want, "{}", set.name);
            assert_eq!(
                leading,
                want.first().is_some_and(|r| r.0 != 0),
                "{}",
                set.name
            );
        }
    }

    #[test]
    fn a_hash_set_dump_that_repeats_an_element_is_not_diffed() {
        let host = |v: u32| KElem {
            key: v.to_be_bytes().to_vec(),
            flags: 0,
            userdata: None,
            other: false,
        };
        let good = [host(1), host(3), host(2)];
        assert_eq!(kernel_hosts(&good, 4), Some(vec![(1, 1), (2, 2), (3, 3)]));
        // Read while the kernel resized the table: 2 seen twice, 3 missed.
        let torn = [host(1), host(2), host(2)];
        assert_eq!(kernel_hosts(&torn, 4), None);
        let set = v4set_hosts("h", &["0.0.0.1", "0.0.0.2", "0.0.0.3"]);
        assert!(
            diff_elements(0, &set, &torn).is_none(),
            "re-created, not diffed"
        );
        assert!(diff_elements(0, &set, &good).is_some());
    }

    #[test]
    fn kernel_ranges_refuse_what_we_would_not_write() {
        let set = v4set("a", &["10.0.0.0/8", "128.0.0.0/1"]);
        let good = kelems(&set);
        let mut two_starts = good.clone();
        two_starts.retain(|e| e.key != [11, 0, 0, 0]);
        let mut not_open = good.clone();
        not_open.last_mut().unwrap().userdata = None;
        let mut comment = good.clone();
        comment[1].userdata = Some(nl::udata_comment("x"));
        let mut data = good.clone();
        data[1].other = true;
        let mut wrong_len = good.clone();
        wrong_len[1].key.push(0);
        for (what, elems) in [
            ("two starts in a row", two_starts),
            ("a last range without the open flag", not_open),
            ("a comment", comment),
            ("other attributes", data),
            ("a key of another length", wrong_len),
        ] {
            assert_eq!(kernel_ranges(&elems, 4), None, "{what}");
        }
        let mut open_early = kelems(&v4set("b", &["10.0.0.0/8"]));
        open_early[1].userdata = Some(open_udata());
        assert_eq!(
            kernel_ranges(&open_early, 4),
            None,
            "open flag on a closed range"
        );
    }

    /// Applies a diff to the kernel's elements the way the kernel does and checks the result is exactly
    /// the encoding of `to`, and that every deleted element was there and every added one was not.
    fn check_diff(from: &Set, to: &Set) {
        let d = diff_elements(0, to, &kelems(from)).expect("our own encoding");
        let mut held = keys(kernel_elems(from));
        for e in keys(d.remove.iter().copied()) {
            let i = held.iter().position(|h| h.0 == e.0 && h.1 == e.1);
            let i = i.unwrap_or_else(|| panic!("{from:?} -> {to:?}: deletes {e:?}, not held"));
            held.remove(i);
        }
        for e in keys(d.add.iter().copied()) {
            assert!(
                !held.iter().any(|h| h.0 == e.0 && h.1 == e.1),
                "{from:?} -> {to:?}: adds {e:?}, held"
            );
            held.push(e);
        }
        held.sort();
        assert_eq!(held, keys(kernel_elems(to)), "{from:?} -> {to:?}");
        if from.elements == to.elements {
            assert!(d.remove.is_empty() && d.add.is_empty());
        }
    }

    #[test]
    fn element_diffs_give_exactly_the_new_encoding() {
        let sets = [
            v4set("s", &[]),
            v4set("s", &["10.0.0.0/8"]),
            v4set("s", &["10.0.0.0/9"]),
            v4set("s", &["0.0.0.0/8", "10.0.0.0/8"]),
            v4set("s", &["0.0.0.0/0"]),
            v4set("s", &["128.0.0.0/1"]),
            v4set("s", &["10.0.0.0/8", "128.0.0.0/1"]),
            v4set("s", &["11.0.0.0/8", "12.0.0.0/8"]),
            v4set("s", &["12.0.0.0/8"]),
            v4set("s", &["0.0.0.0/1", "128.0.0.0/1"]),
        ];
        for a in &sets {
            for b in &sets {
                check_diff(a, b);
            }
        }
        let p = [
            ports("p", &[(0, 0)]),
            ports("p", &[(0, 65535)]),
            ports("p", &[(22, 22), (80, 443)]),
            ports("p", &[(80, 80), (81, 443)]),
            ports("p", &[(65535, 65535)]),
            ports("p", &[]),
        ];
        for a in &p {
            for b in &p {
                check_diff(a, b);
            }
        }
    }

    #[test]
    fn element_diffs_on_random_sets() {
        // xorshift: deterministic, no dependency
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut random_ports = || {
            let mut r = Vec::new();
            let mut lo = rnd(4) as u32 * 3;
            while lo <= 65535 && r.len() < 12 {
                let hi = (lo + rnd(5) as u32).min(65535);
                r.push((lo as u16, hi as u16));
                lo = hi + 2 + rnd(3) as u32 * 20_000 / (1 + rnd(8) as u32);
            }
            ports("p", &r)
        };
        let all: Vec<Set> = (0..60).map(|_| random_ports()).collect();
        for w in all.windows(2) {
            check_diff(&w[0], &w[1]);
        }
    }

    // --- planning

    fn base(name: &str, hook: Hook, priority: i32) -> Chain {
        Chain {
            name: name.into(),
            base: Some(BaseHook { hook, priority }),
            rules: vec![Rule {
                verdict: Some(Verdict::Jump("c".into())),
                ..Rule::default()
            }],
        }
    }

    fn uses(set: &str) -> Rule {
        Rule {
            matches: vec![Match::Addr {
                dir: Direction::Source,
                family: Family::Ipv4,
                set: set.into(),
                negate: false,
            }],
            verdict: Some(Verdict::Accept),
            ..Rule::default()
        }
    }

    fn ruleset(sets: &[&str]) -> Ruleset {
        Ruleset {
            table: "hp".into(),
            comment: "hostpolicyd sha256:1".into(),
            sets: sets.iter().map(|s| v4set(s, &["10.0.0.0/8"])).collect(),
            maps: vec![VerdictMap {
                name: "m".into(),
                elements: vec![("eth0".into(), Verdict::Goto("c".into()))],
            }],
            chains: vec![
                base("in", Hook::Input, 0),
                base("out", Hook::Output, 0),
                Chain {
                    name: "c".into(),
                    base: None,
                    rules: sets.iter().map(|s| uses(s)).collect(),
                },
            ],
            origins: Default::default(),
        }
    }

    fn kchain(c: &Chain) -> KChain {
        KChain {
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
        }
    }

    fn kset(s: &Set) -> KSet {
        let (key_type, key_len) = set_key(s.set_type);
        KSet {
            name: s.name.clone(),
            flags: nl::NFT_SET_INTERVAL,
            key_type,
            key_len,
            data_type: None,
            userdata: Some(set_udata()),
        }
    }

    fn kmap(name: &str) -> KSet {
        KSet {
            name: name.into(),
            flags: nl::NFT_SET_MAP,
            key_type: 41,
            key_len: 16,
            data_type: Some(nl::NFT_DATA_VERDICT),
            userdata: None,
        }
    }

    /// The inventory of our table after `rs` was applied.
    fn inventory(rs: &Ruleset) -> Inventory {
        let mut chains: Vec<KChain> = rs.chains.iter().map(kchain).collect();
        chains.push(KChain {
            name: HASH_CHAIN.into(),
            hook: None,
            flags: 0,
            userdata: Some(nl::udata_comment(&rs.comment)),
        });
        let mut sets: Vec<KSet> = rs.sets.iter().map(kset).collect();
        sets.extend(rs.maps.iter().map(|m| kmap(&m.name)));
        Inventory {
            comment: Some(TABLE_COMMENT.into()),
            flags: 0,
            chains,
            sets,
        }
    }

    fn plan_from(rs: &Ruleset, held: &Ruleset) -> Plan {
        plan_with(rs, &inventory(held), held)
    }

    fn plan_with(rs: &Ruleset, inv: &Inventory, held: &Ruleset) -> Plan {
        let mut elements = |name: &str| -> Result<Vec<KElem>, DataplaneError> {
            Ok(held.set(name).map(kelems).unwrap_or_default())
        };
        plan(rs, Some(inv), None, &mut elements).unwrap()
    }

    fn names(rs: &Ruleset, idx: &[usize]) -> Vec<String> {
        idx.iter().map(|&i| rs.sets[i].name.clone()).collect()
    }

    #[test]
    fn no_table_is_created_in_two_steps() {
        let rs = ruleset(&["a", "b"]);
        let mut none = |_: &str| -> Result<Vec<KElem>, DataplaneError> { unreachable!() };
        let p = plan(&rs, None, None, &mut none).unwrap();
        assert_eq!(p.mode, Mode::Create);
        assert_eq!(p.create_sets, [0, 1]);
        assert_eq!(p.create_chains, [0, 1, 2]);
        let t1 = encode_t1(&rs, &p).unwrap();
        assert_eq!(
            t1.batch.objs,
            [
                Obj::BatchBegin,
                Obj::TableCreate,
                Obj::Set(0),
                Obj::SetElems { set: 0, first: 0 },
                Obj::Set(1),
                Obj::SetElems { set: 1, first: 0 },
                Obj::BatchEnd
            ]
        );
        let t2 = encode_t2(&rs, &rs, &p).unwrap();
        assert_eq!(
            t2.batch.objs[1..6],
            [
                Obj::Chain(0),
                Obj::Chain(1),
                Obj::Chain(2),
                Obj::HashChain,
                Obj::Map(0)
            ]
        );
        assert!(encode_t3(&rs, &p).unwrap().is_none());
        // A rejected switch deletes the table.
        let undo = encode_undo(&rs, &p).unwrap();
        assert_eq!(undo.batch.objs[1..3], [Obj::TableEnsure, Obj::TableDelete]);
    }

    #[test]
    fn tables_that_are_not_ours_are_replaced() {
        let rs = ruleset(&["a"]);
        let mut inv = inventory(&rs);
        inv.chains.retain(|c| c.name != HASH_CHAIN);
        inv.comment = Some("hostpolicyd sha256:1".into()); // an older hostpolicyd
        assert_eq!(plan_with(&rs, &inv, &rs).mode, Mode::Replace);
        inv.comment = None;
        assert_eq!(plan_with(&rs, &inv, &rs).mode, Mode::Replace);
        inv.comment = Some(TABLE_COMMENT.into());
        assert_eq!(
            plan_with(&rs, &inv, &rs).mode,
            Mode::Staged,
            "ours, swap unfinished"
        );
        inv.flags = 1; // dormant
        assert_eq!(plan_with(&rs, &inv, &rs).mode, Mode::Replace);
    }

    #[test]
    fn an_unchanged_layout_keeps_base_chains_and_sets() {
        let held = ruleset(&["a", "b"]);
        let mut rs = held.clone();
        rs.comment = "hostpolicyd sha256:2".into();
        rs.sets[1] = v4set("b", &["10.0.0.0/8", "192.0.2.0/24"]);
        let p = plan_from(&rs, &held);
        assert_eq!(p.mode, Mode::Staged);
        assert_eq!(p.flush, ["in", "out", "c"]);
        assert_eq!(p.delete_chains, ["c", HASH_CHAIN]);
        assert_eq!(p.create_chains, [2]);
        assert_eq!(p.delete_sets, ["m"]);
        assert!(p.create_sets.is_empty() && p.staged.is_empty() && p.unused_sets.is_empty());
        assert_eq!(p.diffs.len(), 1);
        assert_eq!(p.diffs[0].set, 1);
        assert!(p.diffs[0].remove.is_empty());
        assert_eq!(keys(p.diffs[0].add.iter().copied()).len(), 2);
        assert!(encode_t3(&rs, &p).unwrap().is_none());

        let t1 = encode_t1(&rs, &p).unwrap();
        assert_eq!(
            t1.batch.objs[1..],
            [
                Obj::AddElems {
                    change: 0,
                    first: 0
                },
                Obj::BatchEnd
            ]
        );
        let t2 = encode_t2(&rs, &rs, &p).unwrap();
        let kinds: Vec<u16> = nl::messages(&t2.batch.bytes).map(|m| m.ty & 0xff).collect();
        // begin, 3 flushes, 1 set deleted, 2 chains deleted, 1 chain + hash chain, map + elements, rules
        assert_eq!(
            kinds[1..10],
            [
                NFT_MSG_DELRULE,
                NFT_MSG_DELRULE,
                NFT_MSG_DELRULE,
                NFT_MSG_DELSET,
                nl::NFT_MSG_DELCHAIN,
                nl::NFT_MSG_DELCHAIN,
                nl::NFT_MSG_NEWCHAIN,
                nl::NFT_MSG_NEWCHAIN,
                nl::NFT_MSG_NEWSET,
            ]
        );
        assert_eq!(t2.batch.objs[8], Obj::HashChain);
        assert_eq!(
            t2.notes[1],
            Some(Note::Text(
                "kernel rejected flushing chain in of table inet hp".into()
            ))
        );
        // The undo removes what T1 added.
        let undo = encode_undo(&rs, &p).unwrap();
        assert_eq!(
            undo.batch.objs[1],
            Obj::DelElems {
                change: 0,
                first: 0
            }
        );
        assert!(undo.undo);
    }

    /// [`plan_with`] told that the kernel holds `held`, reading no set back.
    fn plan_knowing(rs: &Ruleset, held: &Ruleset) -> Plan {
        let mut elements = |name: &str| -> Result<Vec<KElem>, DataplaneError> {
            Ok(held.set(name).map(kelems).unwrap_or_default())
        };
        plan(rs, Some(&inventory(held)), Some(held), &mut elements).unwrap()
    }

    /// `ruleset(sets)` with two more regular chains: `d` (jumped to from `c`) and `e`.
    fn with_chains(sets: &[&str], e_verdict: Verdict) -> Ruleset {
        let mut rs = ruleset(sets);
        rs.chains[2].rules.push(Rule {
            verdict: Some(Verdict::Jump("d".into())),
            ..Rule::default()
        });
        for (name, verdict) in [("d", Verdict::Accept), ("e", e_verdict)] {
            rs.chains.push(Chain {
                name: name.into(),
                base: None,
                rules: vec![Rule {
                    verdict: Some(verdict),
                    ..Rule::default()
                }],
            });
        }
        rs
    }

    #[test]
    fn knowing_the_held_ruleset_only_changed_chains_are_flushed_and_filled() {
        let held = with_chains(&["a", "b"], Verdict::Accept);
        let mut rs = with_chains(&["a", "b"], Verdict::Drop);
        rs.comment = "hostpolicyd sha256:2".into();
        let p = plan_knowing(&rs, &held);
        assert_eq!(p.mode, Mode::Staged);
        // Only `e` changed; every chain is kept in place, none is deleted but the hash chain.
        assert_eq!(p.flush, ["e"]);
        assert_eq!(p.fill, [4]);
        assert_eq!(p.delete_chains, [HASH_CHAIN]);
        assert!(p.create_chains.is_empty() && p.diffs.is_empty());
        // Without knowing what the kernel holds: every chain flushed and refilled, regular chains
        // re-created.
        let blind = plan_from(&rs, &held);
        assert_eq!(blind.flush, ["in", "out", "c", "d", "e"]);
        assert_eq!(blind.fill, [0, 1, 2, 3, 4]);
        assert_eq!(blind.create_chains, [2, 3, 4]);

        // T2 holds the flush of `e`, the hash chain, the map and `e`'s rule: nothing else.
        let t2 = encode_t2(&rs, &rs, &p).unwrap();
        let objs = &t2.batch.objs;
        assert!(objs.contains(&Obj::Rule { chain: 4, rule: 0 }), "{objs:?}");
        assert!(
            !objs
                .iter()
                .any(|o| matches!(o, Obj::Rule { chain, .. } if *chain != 4)),
            "{objs:?}"
        );
    }

    #[test]
    fn knowing_the_held_ruleset_unchanged_sets_are_not_read_back() {
        let held = with_chains(&["a", "b"], Verdict::Accept);
        let mut rs = held.clone();
        rs.sets[1] = v4set("b", &["10.0.0.0/8", "192.0.2.0/24"]);
        let mut read = Vec::new();
        let mut elements = |name: &str| -> Result<Vec<KElem>, DataplaneError> {
            read.push(name.to_string());
            Ok(held.set(name).map(kelems).unwrap_or_default())
        };
        let p = plan(&rs, Some(&inventory(&held)), Some(&held), &mut elements).unwrap();
        assert_eq!(read, ["b"], "only the changed set is read back");
        assert_eq!(p.diffs.len(), 1);
        assert!(p.flush.is_empty() && p.fill.is_empty(), "{p:?}");
    }

    #[test]
    fn chains_that_use_what_t2_deletes_are_refilled_even_if_unchanged() {
        // A new chain `x` sorts before `d` and `e`: they are re-created, so `c` (which jumps to `d`)
        // must be flushed too although its rules did not change.
        let held = with_chains(&["a", "b"], Verdict::Accept);
        let mut rs = held.clone();
        rs.chains.insert(
            3,
            Chain {
                name: "x".into(),
                base: None,
                rules: vec![],
            },
        );
        let p = plan_knowing(&rs, &held);
        assert_eq!(p.flush, ["c", "d", "e"]);
        assert_eq!(p.delete_chains, ["d", "e", HASH_CHAIN]);
        assert_eq!(p.create_chains, [3, 4, 5]);
        assert_eq!(p.fill, [2, 3, 4, 5]);

        // A chain dispatching through the verdict map (deleted and re-created by every T2).
        let mut held = with_chains(&["a", "b"], Verdict::Accept);
        held.chains[0].rules[0].verdict = Some(Verdict::Vmap {
            key: crate::ruleset::IfDir::In,
            map: "m".into(),
        });
        let p = plan_knowing(&held, &held);
        assert_eq!(p.flush, ["in"]);
        assert_eq!(p.fill, [0]);
    }

    #[test]
    fn new_sets_after_the_kept_ones_are_created_first() {
        let held = ruleset(&["a", "b", "old"]);
        let rs = ruleset(&["a", "b", "c", "d"]);
        let p = plan_from(&rs, &held);
        assert_eq!(names(&rs, &p.create_sets), ["c", "d"]);
        assert!(p.staged.is_empty() && p.refill.is_empty());
        assert_eq!(p.unused_sets, ["old"]);
        let t3 = encode_t3(&rs, &p).unwrap().unwrap();
        assert_eq!(t3.batch.objs.len(), 3);
    }

    #[test]
    fn a_new_set_before_kept_ones_moves_them_through_staging_copies() {
        let held = ruleset(&["a", "c", "d"]);
        let mut rs = ruleset(&["a", "b", "c", "d", "e"]);
        rs.chains.push(Chain {
            name: "other".into(),
            base: None,
            rules: vec![uses("a")],
        });
        let p = plan_from(&rs, &held);
        assert_eq!(names(&rs, &p.create_sets), ["b"]);
        let staged: Vec<(String, String)> = p
            .staged
            .iter()
            .map(|(i, n)| (rs.sets[*i].name.clone(), n.clone()))
            .collect();
        assert_eq!(
            staged,
            [
                ("c".into(), "hostpolicyd-staged-2".into()),
                ("d".into(), "hostpolicyd-staged-3".into()),
                ("e".into(), "hostpolicyd-staged-4".into())
            ]
        );
        assert_eq!(p.delete_sets, ["c", "d", "m"]);
        assert_eq!(p.refill, [2], "only the chain that looks up c, d or e");
        assert_eq!(
            p.unused_sets,
            [
                "hostpolicyd-staged-2",
                "hostpolicyd-staged-3",
                "hostpolicyd-staged-4"
            ]
        );
        // T2's rules look up the copies; T3's the real sets.
        let rules = staging_rules(&rs, &p);
        assert_eq!(rules.chains[2].rules[0], uses("a"));
        assert_eq!(rules.chains[2].rules[2], uses("hostpolicyd-staged-2"));
        assert_eq!(rules.chains[3].rules[0], uses("a"));
        let t2 = encode_t2(&rs, &rules, &p).unwrap();
        assert!(
            !t2.batch.objs.contains(&Obj::HashChain),
            "the hash comes last, in T3"
        );
        let created: Vec<&Obj> = t2
            .batch
            .objs
            .iter()
            .filter(|o| matches!(o, Obj::Set(_) | Obj::Map(_)))
            .collect();
        assert_eq!(
            created,
            [&Obj::Set(2), &Obj::Set(3), &Obj::Set(4), &Obj::Map(0)]
        );
        let t3 = encode_t3(&rs, &p).unwrap().unwrap();
        assert_eq!(t3.batch.objs[1], Obj::TableEnsure); // the flush of chain c (a note)
        assert!(t3.batch.objs.contains(&Obj::Rule { chain: 2, rule: 4 }));
        assert!(!t3.batch.objs.contains(&Obj::Rule { chain: 3, rule: 0 }));
        assert!(t3.batch.objs.contains(&Obj::HashChain));
        // T1 makes copies, named in errors.
        let t1 = encode_t1(&rs, &p).unwrap();
        let copies = t1
            .notes
            .iter()
            .filter(|n| matches!(n, Some(Note::Staging(_))))
            .count();
        assert_eq!(copies, 6, "3 sets, each with its elements");
    }

    #[test]
    fn sets_that_changed_type_or_names_taken_by_maps_are_moved() {
        let mut held = ruleset(&["a", "b"]);
        held.sets.push(v4set("x", &[]));
        let mut rs = ruleset(&["a", "b"]);
        rs.sets[0].set_type = SetType::Ipv6Addr;
        rs.sets[0].elements.clear();
        rs.maps[0].name = "x".into(); // was a set
        rs.sets.push(v4set("m", &[])); // was a map
        rs.chains[2].rules.clear();
        let p = plan_from(&rs, &held);
        assert!(p.create_sets.is_empty());
        assert_eq!(
            names(&rs, &p.staged.iter().map(|s| s.0).collect::<Vec<_>>()),
            ["a", "b", "m"]
        );
        assert_eq!(p.delete_sets, ["a", "b", "x", "m"]);
        assert!(p.refill.is_empty());
    }

    #[test]
    fn staging_names_avoid_taken_ones() {
        let held = ruleset(&["b", "hostpolicyd-staged-1"]);
        let rs = ruleset(&["a", "b"]);
        let p = plan_from(&rs, &held);
        assert_eq!(p.staged, [(1, "hostpolicyd-staged-1-1".to_string())]);
        assert!(p.unused_sets.contains(&"hostpolicyd-staged-1".to_string()));
    }

    #[test]
    fn base_chains_are_kept_as_a_prefix_in_order() {
        let held = ruleset(&[]);
        // The priority of "in" changed: it and everything after it is created again.
        let mut rs = held.clone();
        rs.chains[0].base = Some(BaseHook {
            hook: Hook::Input,
            priority: 10,
        });
        let p = plan_from(&rs, &held);
        assert_eq!(p.delete_chains, ["in", "out", "c", HASH_CHAIN]);
        assert_eq!(p.create_chains, [0, 1, 2]);
        // "out" changed: "in" is kept.
        let mut rs = held.clone();
        rs.chains[1].base = Some(BaseHook {
            hook: Hook::Output,
            priority: -1,
        });
        assert_eq!(plan_from(&rs, &held).create_chains, [1, 2]);
        // A new base chain before the kept ones: created, and the ones after it too (order).
        let mut rs = held.clone();
        rs.chains.insert(0, base("pre", Hook::Prerouting, -300));
        assert_eq!(plan_from(&rs, &held).create_chains, [0, 1, 2, 3]);
        // Swapped order in the IR: the first is kept, the second moves.
        let mut rs = held.clone();
        rs.chains.swap(0, 1);
        assert_eq!(plan_from(&rs, &held).create_chains, [1, 2]);
        // A base chain with a comment is not ours as it is.
        let mut inv = inventory(&held);
        inv.chains[0].userdata = Some(nl::udata_comment("x"));
        assert_eq!(plan_with(&held, &inv, &held).create_chains, [0, 1, 2]);
    }

    #[test]
    fn element_errors_name_the_element() {
        let held = ruleset(&["a"]);
        let mut rs = held.clone();
        rs.sets[0] = v4set("a", &["10.0.0.0/8", "192.0.2.0/24"]);
        let p = plan_from(&rs, &held);
        let t1 = encode_t1(&rs, &p).unwrap();
        let m = t1.batch.message(1).unwrap();
        let list = nl::msg_attrs(&m)
            .find(|a| a.ty == nl::NFTA_SET_ELEM_LIST_ELEMENTS)
            .unwrap();
        let second = nl::attrs(list.payload, list.offset + 4).nth(1).unwrap();
        let reply = Reply {
            seq: 1,
            errno: libc::EEXIST,
            offset: Some(second.offset as u32),
            ..Reply::default()
        };
        assert_eq!(
            describe_tx(&rs, &p, &t1, 1, &reply),
            "kernel rejected adding element 1 (192.0.2.0/24, its end) of set a"
        );
        let undo = encode_undo(&rs, &p).unwrap();
        let reply = Reply {
            seq: 1,
            errno: libc::ENOENT,
            ..Reply::default()
        };
        assert_eq!(
            describe_tx(&rs, &p, &undo, 1, &reply),
            "kernel rejected deleting elements of set a"
        );
    }
}
