//! The executor of the swap: read what the kernel holds, plan (`plan.rs`), encode every transaction
//! (`txn.rs`) before sending any, send T1 and T2, and undo T1 when T2 is rejected.
//!
//! # The transactions, and why each boundary shows the pure old or the pure new ruleset
//!
//! The kernel problem (README, "the kernel problem behind the staged swap"): a rule made live in the
//! transaction that creates the interval set it looks up misses packets; a set created one transaction
//! earlier does not. So a swap that needs new sets takes two transactions, any other one:
//!
//! - **T1, staging** (only when sets must be created): the table if there is none, every set the new
//!   rules need that the kernel does not hold exactly (a new set, a kind change, new contents of a kept
//!   set: *copy on change*) under a name no kernel object has (its own, else `NAME.N`), with its
//!   elements, and the [`HASH_CHAIN`] re-created with the pending comment (`hostpolicyd pending
//!   sha256:NEW`). No rule refers to the new sets and no set the old rules use is touched: **after
//!   T1 packets see the pure old ruleset** (or, when T1 created the table, no table at all, as before
//!   it). The pending mark is what a crash here leaves: `apply`, the daemon's start, drift repair and
//!   `status` read it as "not applied" ([`super::pending_target`]) and redo the swap, which deletes
//!   the staged sets (orphans) unless they are what the configuration then applied needs.
//! - **T2, the switch, ONE transaction**: the chains whose rules change flushed and refilled (looking up
//!   the sets under their kernel names), chains not kept deleted and created, verdict maps re-created
//!   (hash sets, which the kernel problem does not affect), the sets the new rules do not use deleted
//!   (the old versions, orphans), and the [`HASH_CHAIN`] with the new content hash. The kernel commits
//!   a transaction at once: **before T2 the pure old ruleset, after it the pure new one**, and nothing
//!   of the old one is left to clean up.
//!
//! Per swap kind:
//!
//! | swap | transactions |
//! |---|---|
//! | fresh (no table) | T1: table + sets + mark; T2: chains, maps, rules, hash |
//! | rules only | T2 |
//! | elements only | one batch of element changes + hash (`Dataplane::update`, `delta.rs`); here: T1 copies, T2 |
//! | elements + rules | T1: copies of the changed sets (`NAME.N`) + mark; T2: switch, old versions deleted |
//! | set kind change (hash ↔ interval) | T1: the set of the new kind (its name says the kind) + mark; T2 |
//! | no previous ruleset known (no state, or a half-done swap) | T1: every set whose kernel contents differ (read back and compared); T2 flushes and refills every chain |
//! | a table that is not ours | one transaction: the table replaced whole (`batch::encode_apply`) |
//!
//! # Failures
//!
//! - T1 rejected: nothing changed.
//! - T2 rejected: T1 is undone (one transaction: the staged sets deleted and the hash chain as it was,
//!   or the table deleted if T1 created it). The error names what the kernel rejected. If the undo
//!   fails too, the message says so, and the pending mark makes the next apply clean up.
//! - T2's answer lost ([`DataplaneError::outcome_unknown`]): T1 is left as it is (if T2 committed, its
//!   rules use the staged sets); the mark or the new hash tells the next apply which it was.
//!
//! The inventory and the transactions are not fenced against another writer changing our table in
//! between (nft's generation check is not used): a concurrent change makes T2 fail (and T1 is undone)
//! rather than silently mixing.

use super::batch::encode_apply;
use super::describe::describe;
use super::kernel::{send_batch, Kernel};
use super::plan::{plan, Handles, Mode, Plan};
use super::txn::{describe_tx, encode_t1, encode_t2, encode_undo, kernel_rules, Tx};
use super::{DataplaneError, HASH_CHAIN};
use crate::ruleset::Ruleset;

/// What a swap left as it was and what it edited by handle, for the handles the dataplane keeps
/// (`Nft`): the rule handles of a chain T2 left alone are still valid, those of an edited chain are
/// partly new.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Swapped {
    /// The handle of the table the swap kept (None: it made or replaced the table).
    pub(crate) table: Option<u64>,
    /// The chains whose rules T2 left alone.
    pub(crate) untouched: Vec<String>,
    /// The chains edited by handle: each rule's kernel handle when kept, None when inserted.
    pub(crate) edited: Vec<(String, Vec<Option<u64>>)>,
}

/// Applies `rs` (already validated): reads the kernel, plans, sends T1 and T2. `previous` is the ruleset
/// the caller last applied, if any: when the kernel's content hash says it still holds it, chains whose
/// rules did not change are left alone and sets are not read back (see [`plan`]); `handles`, the kernel
/// handles of `previous`'s rules in some chains: such a chain whose rules change a little is edited
/// rule by rule in T2 instead of flushed and refilled. `had_edits` tells whether the plan edited any
/// chain by handle (set even when the swap fails).
pub(crate) fn apply(
    kernel: &mut dyn Kernel,
    rs: &Ruleset,
    previous: Option<&Ruleset>,
    handles: Option<&Handles>,
    had_edits: &mut bool,
) -> Result<Swapped, DataplaneError> {
    // The transactions of one swap on one socket (see `NetlinkKernel`).
    kernel.hold();
    let applied = swap(kernel, rs, previous, handles, had_edits);
    kernel.release();
    applied
}

fn swap(
    kernel: &mut dyn Kernel,
    rs: &Ruleset,
    previous: Option<&Ruleset>,
    handles: Option<&Handles>,
    had_edits: &mut bool,
) -> Result<Swapped, DataplaneError> {
    *had_edits = false;
    let inv = kernel.read_table(&rs.table)?;
    let plan = plan(rs, inv.as_ref(), previous, handles, &mut |set| {
        kernel.read_elements(&rs.table, set)
    })?;
    *had_edits = !plan.edits.is_empty();
    if plan.mode == Mode::Replace {
        let batch = encode_apply(rs)?;
        encoded();
        send_batch(kernel, &batch, |seq, reply| {
            describe(rs, &batch, seq, reply)
        })?;
        return Ok(Swapped::default());
    }
    let swapped = Swapped {
        table: (plan.mode == Mode::Staged)
            .then(|| inv.as_ref().map(|i| i.handle))
            .flatten(),
        untouched: {
            let refilled: std::collections::HashSet<usize> = plan
                .fill
                .iter()
                .copied()
                .chain(plan.edits.iter().map(|e| e.chain))
                .collect();
            (0..rs.chains.len())
                .filter(|i| !refilled.contains(i))
                .map(|i| rs.chains[i].name.clone())
                .collect()
        },
        edited: plan
            .edits
            .iter()
            .map(|e| (rs.chains[e.chain].name.clone(), e.slots.clone()))
            .collect(),
    };
    // Everything is encoded before anything is sent: a ruleset that cannot be encoded changes nothing.
    let rules = kernel_rules(rs, &plan);
    let t1 = encode_t1(rs, &plan);
    let t2 = encode_t2(rs, &rules, &plan)?;
    encoded();
    if let Some(t1) = &t1 {
        send(kernel, rs, t1)?;
    }
    if let Err(mut e) = send(kernel, rs, &t2) {
        if t1.is_none() {
            return Err(e);
        }
        if e.outcome_unknown() {
            e.message.push_str(
                "; the sets staged for it are left as they are (the next apply finishes or redoes the swap)",
            );
            return Err(e);
        }
        return Err(undo(kernel, rs, &plan, e));
    }
    Ok(swapped)
}

/// Who is told when a swap has encoded its transactions and is about to send them ([`when_encoded`]).
static WHEN_ENCODED: std::sync::Mutex<Vec<std::sync::mpsc::Sender<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Tells `tx` (once) when the next swap has encoded its transactions and starts sending them: from
/// then on this thread mostly waits for the kernel, and another can use the core (`hostpolicyd apply`
/// writes its state files then). `None` forgets every `tx` not told yet (dropping it: its receiver
/// learns that no such moment comes, say because the swap failed before).
pub fn when_encoded(tx: Option<std::sync::mpsc::Sender<()>>) {
    let mut waiting = WHEN_ENCODED.lock().unwrap_or_else(|e| e.into_inner());
    match tx {
        Some(tx) => waiting.push(tx),
        None => waiting.clear(),
    }
}

fn encoded() {
    let waiting = std::mem::take(&mut *WHEN_ENCODED.lock().unwrap_or_else(|e| e.into_inner()));
    for tx in waiting {
        let _ = tx.send(());
    }
}

fn undo(
    kernel: &mut dyn Kernel,
    rs: &Ruleset,
    plan: &Plan,
    mut err: DataplaneError,
) -> DataplaneError {
    if let Some(tx) = encode_undo(rs, plan) {
        if let Err(u) = send(kernel, rs, &tx) {
            err.message.push_str(&format!(
                "; undoing the sets staged for it failed too (table inet {} stays marked as in \
                 transition, chain {HASH_CHAIN}; the next apply cleans up): {u}",
                rs.table
            ));
        }
    }
    err
}

fn send(kernel: &mut dyn Kernel, rs: &Ruleset, tx: &Tx) -> Result<(), DataplaneError> {
    send_batch(kernel, &tx.batch, |seq, reply| {
        describe_tx(rs, tx, seq, reply)
    })
}
