//! The apply protocol (DESIGN.md "Apply, probe, roll back"), shared by `hostpolicyd apply` and the daemon.
//!
//! Given the result of the pure pipeline (a compiled ruleset, or the diagnostics of an invalid
//! configuration), [`Engine::reconcile`] decides and does:
//!
//! 1. invalid configuration: no kernel I/O at all; the applied ruleset stays.
//! 2. the compiled content hash equals the one in our table's comment *in the kernel*: no kernel write.
//! 3. the same contents were rolled back before: not retried until the compile result changes.
//! 4. otherwise: run this node's connectivity checks (baseline), apply the new table atomically, run them
//!    again. A check that passed before and fails after ⇒ restore what the kernel held before the swap,
//!    atomically (our previous ruleset, or no table at all), and remember the rejected hash.
//!
//! The engine is generic over the [`Dataplane`] (netlink in production, a recording fake in tests) and the
//! [`Prober`]; it never reads the clock (the caller passes `now`) and never logs: it returns an
//! [`Outcome`] that the caller logs and turns into an exit status or a control-socket reply.

pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use crate::compile::{content_hash, hash_from_comment};
use crate::config::diag::Diagnostic;
use crate::config::model::{Config, ConnectivityCheck};
use crate::engine::state::{
    rfc3339, DriftSummary, EndpointSummary, ErrorSummary, InactiveEndpointSummary, RollbackSummary,
    StagePolicies, Summary,
};
use crate::exit;
use crate::host::probe::{CheckResult, Prober};
use crate::nft::{Dataplane, DataplaneError};
use crate::pipeline::{Compiled, Invalid};
use crate::resolve::{ActiveEndpoint, Dir, NodeView, Stage};
use crate::ruleset::{Kind, Match, PortMatch, Ruleset};

/// The checks of one reconcile: before the swap and after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    pub baseline: Vec<CheckResult>,
    pub after: Vec<CheckResult>,
}

impl Checks {
    /// Checks that passed before the swap and failed after it: the reason for a rollback.
    pub fn regressions(&self) -> Vec<CheckResult> {
        self.after
            .iter()
            .filter(|a| !a.passed && self.baseline.iter().any(|b| b.name == a.name && b.passed))
            .cloned()
            .collect()
    }
    /// Checks that failed already before the swap (and so cannot judge it).
    pub fn failing_before(&self) -> Vec<CheckResult> {
        self.baseline
            .iter()
            .filter(|b| !b.passed)
            .cloned()
            .collect()
    }
}

/// What the kernel holds after a rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Our previous ruleset, re-applied.
    Previous { generation: u64, hash: String },
    /// There was no table before the swap (first start): our table was deleted.
    Flushed,
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Restored::Previous { generation, hash } => {
                write!(f, "generation {generation} (sha256:{})", short(hash))
            }
            Restored::Flushed => f.write_str("no table (there was none before)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new ruleset is in force.
    Applied {
        generation: u64,
        hash: String,
        checks: Checks,
    },
    /// The kernel already holds this ruleset: nothing written.
    Unchanged { generation: u64, hash: String },
    /// The configuration is invalid: nothing written, the applied ruleset stays.
    Invalid { diagnostics: Vec<Diagnostic> },
    /// Applied, a check regressed, the previous state is restored.
    RolledBack {
        hash: String,
        failed: Vec<CheckResult>,
        restored: Restored,
        policies: Vec<String>,
        checks: Checks,
    },
    /// These contents were rolled back before; not retried until they change.
    NotRetried { hash: String, failed: Vec<String> },
    /// The kernel refused a batch (`message` is its error). Normally nothing changed: `previous_in_force`
    /// says whether a ruleset of ours was in force before (and still is), or none was (a first start: no
    /// table, or a table hostpolicyd did not write). `new_in_force` is set when the apply succeeded but the
    /// rollback after a failed check did not.
    Failed {
        hash: Option<String>,
        message: String,
        new_in_force: bool,
        previous_in_force: bool,
    },
}

impl Outcome {
    /// `applied`, `unchanged`, `invalid`, `rolled_back`, `not_retried`, `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::Invalid { .. } => "invalid",
            Outcome::RolledBack { .. } => "rolled_back",
            Outcome::NotRetried { .. } => "not_retried",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// 0 applied or unchanged, 1 invalid, 2 rolled back (now or before) or failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Applied { .. } | Outcome::Unchanged { .. } => exit::OK,
            Outcome::Invalid { .. } => exit::INVALID,
            Outcome::RolledBack { .. } | Outcome::NotRetried { .. } | Outcome::Failed { .. } => {
                exit::APPLY_FAILED
            }
        }
    }

    /// One line for people (logs, `reload`, STATUS=).
    pub fn message(&self, table: &str) -> String {
        match self {
            Outcome::Applied { generation, hash, .. } => {
                format!("applied generation {generation} (sha256:{}) to table inet {table}", short(hash))
            }
            Outcome::Unchanged { generation, hash } => format!(
                "unchanged: table inet {table} already holds this ruleset (generation {generation}, sha256:{})",
                short(hash)
            ),
            Outcome::Invalid { diagnostics } => {
                let errors = diagnostics.iter().filter(|d| d.is_error()).count();
                format!(
                    "configuration is invalid ({errors} error{}): nothing applied, the previous ruleset stays",
                    plural(errors)
                )
            }
            Outcome::RolledBack { hash, failed, restored, .. } => format!(
                "rolled back sha256:{}: check{} {} failed after the swap; in force: {restored}",
                short(hash),
                plural(failed.len()),
                names(failed.iter().map(|c| c.name.as_str()))
            ),
            Outcome::NotRetried { hash, failed } => format!(
                "not retried: these contents (sha256:{}) were rolled back before (check{} {} failed); change the files to retry",
                short(hash),
                plural(failed.len()),
                names(failed.iter().map(String::as_str))
            ),
            Outcome::Failed { message, new_in_force: false, previous_in_force: true, .. } => {
                format!("apply failed, the previous ruleset is still in force: {message}")
            }
            Outcome::Failed { message, new_in_force: false, previous_in_force: false, .. } => {
                format!("apply failed, and no ruleset of hostpolicyd is in force (there was none before): {message}")
            }
            Outcome::Failed { message, new_in_force: true, .. } => format!("rollback failed: {message}"),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

/// What `status` says of a table marked as in the middle of a swap to content hash `hash`.
pub fn pending_text(hash: &str) -> String {
    format!(
        "half-finished swap to sha256:{} (interrupted between its transactions; the next apply \
         finishes it)",
        short(hash)
    )
}

/// The first 12 hex digits of a content hash, for one-line messages.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// What the kernel holds, as far as our table goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kernel {
    /// No table of our name.
    None,
    /// A table with this content hash in its comment (empty when the comment is not ours).
    Table(String),
    /// Our table in the middle of a swap to the ruleset with this content hash: a run was interrupted
    /// between its transactions (see `nft/exec.rs`). Neither ruleset counts as applied; the next apply
    /// finishes or redoes the swap.
    Pending(String),
    /// The query failed.
    Unknown(String),
}

impl Kernel {
    /// What the kernel holds as table `inet TABLE`.
    pub fn of(dp: &mut impl Dataplane, table: &str) -> Kernel {
        match dp.table_comment(table) {
            Ok(None) => Kernel::None,
            Ok(Some(c)) => match crate::nft::pending_target(&c) {
                Some(t) => Kernel::Pending(hash_from_comment(&t).unwrap_or("").to_string()),
                None => Kernel::Table(hash_from_comment(&c).unwrap_or("").to_string()),
            },
            Err(e) => Kernel::Unknown(e.to_string()),
        }
    }

    /// The summary's `kernel`: `ours` (the table holds `our_hash`), `none`, `foreign ...`,
    /// `half-finished swap to ...`, `unknown (...)`.
    pub fn describe(&self, our_hash: Option<&str>) -> String {
        match self {
            Kernel::None => "none".into(),
            Kernel::Table(h) if Some(h.as_str()) == our_hash => "ours".into(),
            Kernel::Table(h) if h.is_empty() => "foreign (not written by hostpolicyd)".into(),
            Kernel::Table(h) => format!("foreign sha256:{}", short(h)),
            Kernel::Pending(h) => pending_text(h),
            Kernel::Unknown(e) => format!("unknown ({e})"),
        }
    }
}

#[derive(Debug, Clone)]
struct Rejected {
    hash: String,
    failed: Vec<String>,
}

pub struct Engine<D: Dataplane, P: Prober> {
    dp: D,
    prober: P,
    /// The last good ruleset: applied and kept by us (or adopted from the kernel / the state file).
    /// Shared with the [`Compiled`] it came from, not copied.
    last_good: Option<Arc<Ruleset>>,
    rejected: Option<Rejected>,
    summary: Summary,
    /// The content hash of the last good ruleset in the state directory and the file's stamp, as we
    /// last read or wrote it.
    saved: Option<(String, Option<crate::engine::state::Stamp>)>,
    /// Where the state file of a new ruleset is begun while the kernel commits it
    /// ([`Engine::stage_state_during_commit`]).
    stage_in: Option<crate::engine::state::Store>,
    /// The state file so begun, for [`Engine::save_state`].
    staged: Option<crate::engine::state::Staged>,
    /// Told right after each swap the kernel took, before the connectivity checks
    /// ([`Engine::after_swap`]).
    after_swap: Option<AfterSwap>,
}

/// See [`Engine::after_swap`]: the ruleset just written and the chains whose rules the write made or
/// changed ([`Dataplane::wrote`]).
pub type AfterSwap = Box<dyn FnMut(&Ruleset, &[String]) + Send>;

impl<D: Dataplane, P: Prober> Engine<D, P> {
    pub fn new(dp: D, prober: P, node: &str, table: &str) -> Self {
        let summary = Summary {
            node: node.to_string(),
            table: table.to_string(),
            ..Summary::default()
        };
        Engine {
            dp,
            prober,
            last_good: None,
            rejected: None,
            summary,
            saved: None,
            stage_in: None,
            staged: None,
            after_swap: None,
        }
    }

    /// Calls `f` right after each swap of a new ruleset the kernel took, before the connectivity
    /// checks: the daemon reads back the chains the write made or changed then, so that the rule
    /// handles it learns are those of our own rules, not of a change someone made during the checks.
    pub fn after_swap(&mut self, f: Option<AfterSwap>) {
        self.after_swap = f;
    }

    /// Begins the state file of a new ruleset in `store` on a second thread while the kernel checks
    /// and commits it (the commit `sendmsg` leaves the other core idle): its text (~11 MB of JSON at
    /// 10,000 policies, ~80 ms to make and write) goes to a temporary file that no reader looks at.
    /// The next [`Engine::save_state`] completes it and renames it into place, after the kernel said
    /// yes, as before; a swap the kernel refuses removes it. Off by default: a daemon's reload
    /// commits in a few milliseconds, much less than the text takes.
    pub fn stage_state_during_commit(&mut self, store: Option<crate::engine::state::Store>) {
        self.stage_in = store;
    }

    /// Starts from what the state directory remembers: the last good ruleset and the summary. Used
    /// only as the rollback target when the kernel still holds exactly that ruleset.
    pub fn restore(&mut self, last_good: Option<Ruleset>, summary: Option<Summary>) {
        let hash = last_good.as_ref().map(content_hash);
        self.restore_hashed(last_good.zip(hash), summary);
    }

    /// [`Engine::restore`] with the last good ruleset's content hash already known (checked when the
    /// state file was read: not computed again).
    fn restore_hashed(&mut self, last_good: Option<(Ruleset, String)>, summary: Option<Summary>) {
        let table = self.summary.table.clone();
        let node = self.summary.node.clone();
        let (last_good, hash) = match last_good.filter(|(r, _)| r.table == table) {
            Some((r, h)) => (Some(Arc::new(r)), Some(h)),
            None => (None, None),
        };
        self.last_good = last_good;
        if let Some(s) = summary.filter(|s| s.table == table) {
            self.summary = Summary {
                node,
                table,
                applies: 0,
                rollbacks: 0,
                drift_repairs: 0,
                degraded: None,
                // A flush lasts until the next reload or restart: this is a start.
                flushed_at: None,
                ..s
            };
        }
        if hash != self.summary.hash {
            // The two files disagree (one write of two got lost): trust the ruleset file.
            self.summary.hash = hash;
        }
    }

    /// [`Engine::restore`] from what the state directory holds: the generation is the larger of the
    /// two files' (a damaged `status.json` must not count generations again from 0 while
    /// `last-good.json` says 3).
    pub fn restore_from(
        &mut self,
        last_good: Option<crate::engine::state::LastGood>,
        summary: Option<Summary>,
    ) {
        let generation = last_good.as_ref().map_or(0, |l| l.generation);
        self.restore_hashed(last_good.map(|l| (l.ruleset, l.hash)), summary);
        if self.last_good.is_some() {
            self.summary.generation = self.summary.generation.max(generation);
        }
    }

    /// Says that the state directory's `last-good.json`, as `stamp` (taken before it was read) shows
    /// it, holds the last good ruleset just restored from it: the next [`Engine::save_state`] need not
    /// read it back to know (reading 10,000 policies' ruleset and hashing it costs ~100 ms).
    pub fn restored_from_file(&mut self, stamp: Option<crate::engine::state::Stamp>) {
        if let (Some(_), Some(hash), Some(stamp)) = (&self.last_good, &self.summary.hash, stamp) {
            self.saved = Some((hash.clone(), Some(stamp)));
        }
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn last_good(&self) -> Option<&Ruleset> {
        self.last_good.as_deref()
    }

    /// The last good ruleset, shared (for a thread that writes it, say).
    pub fn last_good_shared(&self) -> Option<&Arc<Ruleset>> {
        self.last_good.as_ref()
    }

    /// Writes the last good ruleset (when it changed) and the summary to the state directory.
    pub fn save_state(
        &mut self,
        store: &crate::engine::state::Store,
        now: SystemTime,
    ) -> std::io::Result<()> {
        let staged = self.staged.take();
        if let (Some(r), Some(hash)) = (&self.last_good, &self.summary.hash) {
            // The hash is the one the ruleset was applied under (its comment's), not computed again.
            let staged = staged.filter(|e| {
                e.holds(hash, self.summary.generation)
                    && self
                        .stage_in
                        .as_ref()
                        .is_some_and(|s| s.dir() == store.dir())
            });
            crate::engine::state::save_last_good_if_changed(
                store,
                &mut self.saved,
                (self.summary.generation, hash, r),
                staged,
                now,
            )?;
        }
        self.save_summary(store)
    }

    /// Writes the summary (`status.json`) alone.
    pub fn save_summary(&self, store: &crate::engine::state::Store) -> std::io::Result<()> {
        store.save_summary(&self.summary)
    }

    /// The last good ruleset to write, for a [`crate::engine::state::Writer`] (which writes it only if
    /// the file does not hold it already); None when there is none.
    pub fn last_good_job(&self, now: SystemTime) -> Option<crate::engine::state::LastGoodJob> {
        let (r, hash) = (self.last_good.as_ref()?, self.summary.hash.as_ref()?);
        Some(crate::engine::state::LastGoodJob {
            generation: self.summary.generation,
            hash: hash.clone(),
            ruleset: Arc::clone(r),
            now,
        })
    }

    /// What `last-good.json` holds as far as this engine knows (for a
    /// [`crate::engine::state::Writer`] that takes over writing it).
    pub fn saved_last_good(&self) -> crate::engine::state::Saved {
        self.saved.clone()
    }

    pub fn dataplane(&mut self) -> &mut D {
        &mut self.dp
    }

    /// Asks the kernel what it holds and records it in the summary (`kernel`).
    pub fn inspect_kernel(&mut self) -> Kernel {
        let table = self.summary.table.clone();
        let k = Kernel::of(&mut self.dp, &table);
        self.summary.kernel = k.describe(self.summary.hash.as_deref());
        k
    }

    /// Applies the last good ruleset again, as it is, without checks (it passed them when it was
    /// applied): the repair after someone else deleted or changed our table, and the fallback at start
    /// when the configuration is invalid and the kernel holds no table of ours.
    pub fn reapply_last_good(&mut self) -> Result<(), DataplaneError> {
        let ruleset = self
            .last_good
            .clone()
            .ok_or_else(|| DataplaneError::invalid("there is no last good ruleset to apply"))?;
        let ruleset: &Ruleset = &ruleset;
        let result = self.dp.apply(ruleset);
        self.inspect_kernel();
        result
    }

    /// `hostpolicyd flush` asked the daemon to stop enforcing: deletes our table (and nothing else) and
    /// records when (`Summary::flushed_at`); the next reload of the configuration enforces again. The
    /// last good ruleset is kept, for `status` and the state directory.
    pub fn flush(&mut self, now: SystemTime) -> Result<(), DataplaneError> {
        let table = self.summary.table.clone();
        let result = self.dp.flush(&table);
        self.inspect_kernel();
        if result.is_ok() {
            self.summary.flushed_at = Some(rfc3339(now));
        }
        result
    }

    /// Records a drift and its repair (counted when `drift.repaired`).
    pub fn record_drift(&mut self, drift: DriftSummary) {
        if drift.repaired {
            self.summary.drift_repairs += 1;
        }
        self.summary.last_drift = Some(drift);
    }

    /// Marks the daemon degraded (the ruleset in force is not the configuration's), or not.
    pub fn set_degraded(&mut self, reason: Option<String>) {
        self.summary.degraded = reason;
    }

    /// The last valid configuration compiled again because the node's interfaces or addresses changed
    /// (not a reload of the configuration): the same decision as [`Engine::reconcile`], but the summary's
    /// last reload result, its time, the last error and the degraded state stay those of the last reload
    /// of the files. An unchanged result changes nothing; a rollback or a failure is recorded as such.
    /// (Recording it as a reload made `status` say `unchanged` after an invalid configuration, whenever
    /// an address came or went: issue 17 item 2.)
    pub fn reconcile_interfaces(&mut self, compiled: &Compiled, now: SystemTime) -> Outcome {
        let outcome = self.reconcile_valid(compiled, now);
        match &outcome {
            Outcome::Failed { .. } | Outcome::RolledBack { .. } => {
                let kept = (
                    self.summary.last_result.take(),
                    self.summary.last_result_at.take(),
                    self.summary.degraded.clone(),
                );
                self.record(&outcome, now);
                (
                    self.summary.last_result,
                    self.summary.last_result_at,
                    self.summary.degraded,
                ) = kept;
            }
            _ => {}
        }
        outcome
    }

    /// One decision: see the module documentation.
    pub fn reconcile(&mut self, input: Result<&Compiled, &Invalid>, now: SystemTime) -> Outcome {
        let outcome = match input {
            Err(invalid) => Outcome::Invalid {
                diagnostics: invalid.diagnostics.clone(),
            },
            Ok(compiled) => self.reconcile_valid(compiled, now),
        };
        self.record(&outcome, now);
        outcome
    }

    fn reconcile_valid(&mut self, compiled: &Compiled, now: SystemTime) -> Outcome {
        let table = self.summary.table.clone();
        let new = &compiled.ruleset;
        let hash = hash_from_comment(&new.comment)
            .map(str::to_string)
            .unwrap_or_else(|| content_hash(new));

        let kernel = self.inspect_kernel();
        if kernel == Kernel::Table(hash.clone()) {
            if self.summary.hash.as_deref() != Some(&hash) {
                // The kernel holds it but we did not record it (state lost, or written by another run):
                // adopt it as the last good.
                self.summary.generation += 1;
                self.summary.applied_at = Some(rfc3339(now));
            }
            self.adopt(compiled, &hash);
            self.summary.kernel = "ours".into();
            return Outcome::Unchanged {
                generation: self.summary.generation,
                hash,
            };
        }
        if let Some(r) = self.rejected.as_ref().filter(|r| r.hash == hash) {
            return Outcome::NotRetried {
                hash,
                failed: r.failed.clone(),
            };
        }

        // What to restore if a check regresses: exactly what the kernel holds before the swap. Borrowed,
        // not copied: a copy of a 100,000-element ruleset would delay the swap.
        let previous = match &kernel {
            Kernel::None => None,
            // Ours, half-swapped, or a table we cannot reproduce: our last good is the best we have.
            Kernel::Table(_) | Kernel::Pending(_) | Kernel::Unknown(_) => self.last_good.as_deref(),
        };
        let checks = node_checks(&compiled.config, &self.summary.node);
        let baseline = if checks.is_empty() {
            Vec::new()
        } else {
            self.prober.run(&checks)
        };

        self.summary.applies += 1;
        let dp = &mut self.dp;
        let mut swap = || match previous {
            // Element changes only when only set elements differ and the kernel holds `prev` (issue 7).
            Some(prev) => dp.update(prev, new),
            None => dp.apply(new),
        };
        self.staged = None;
        let swapped = match &self.stage_in {
            Some(store) => std::thread::scope(|s| {
                // As generation `generation + 1`, what a swap the checks keep makes it.
                let generation = self.summary.generation + 1;
                let hash = hash.as_str();
                // Started once the swap's transactions are encoded (or the swap is over): the
                // encoding uses both cores.
                let (tx, rx) = std::sync::mpsc::channel();
                crate::nft::when_encoded(Some(tx));
                let staging = s.spawn(move || {
                    let _ = rx.recv();
                    store.stage_last_good(new, hash, generation, now)
                });
                let swapped = swap();
                crate::nft::when_encoded(None);
                // Not staged (a full disk, say): `save_state` writes it whole and reports the error.
                self.staged = staging.join().ok().and_then(Result::ok);
                swapped
            }),
            None => swap(),
        };
        if swapped.is_err() {
            // Removes the temporary file.
            self.staged = None;
        }
        if let Err(e) = swapped {
            self.inspect_kernel();
            return Outcome::Failed {
                hash: Some(hash),
                message: e.to_string(),
                new_in_force: false,
                previous_in_force: self.summary.kernel == "ours",
            };
        }
        if let Some(f) = self.after_swap.as_mut() {
            f(new, &self.dp.wrote());
        }
        let after = if checks.is_empty() {
            Vec::new()
        } else {
            self.prober.run(&checks)
        };
        let checks = Checks { baseline, after };
        let failed = checks.regressions();
        if failed.is_empty() {
            self.summary.generation += 1;
            self.summary.applied_at = Some(rfc3339(now));
            self.adopt(compiled, &hash);
            self.summary.kernel = "ours".into();
            self.rejected = None;
            return Outcome::Applied {
                generation: self.summary.generation,
                hash,
                checks,
            };
        }

        self.summary.rollbacks += 1;
        let policies = changed_policies(previous, new);
        let restore = match previous {
            Some(prev) => self.dp.apply(prev),
            None => self.dp.flush(&table),
        };
        self.rejected = Some(Rejected {
            hash: hash.clone(),
            failed: failed.iter().map(|c| c.name.clone()).collect(),
        });
        match restore {
            Ok(()) => {
                let restored = match previous {
                    Some(prev) => Restored::Previous {
                        generation: self.summary.generation,
                        hash: content_hash(prev),
                    },
                    None => Restored::Flushed,
                };
                self.inspect_kernel();
                Outcome::RolledBack {
                    hash,
                    failed,
                    restored,
                    policies,
                    checks,
                }
            }
            Err(e) => {
                self.inspect_kernel();
                Outcome::Failed {
                    hash: Some(hash),
                    message: format!(
                        "check{} {} failed after the swap and the rollback failed too ({e}): the NEW ruleset is in force",
                        plural(failed.len()),
                        names(failed.iter().map(|c| c.name.as_str()))
                    ),
                    new_in_force: true,
                    previous_in_force: false,
                }
            }
        }
    }

    /// Makes `compiled` the last good ruleset and describes it in the summary.
    fn adopt(&mut self, compiled: &Compiled, hash: &str) {
        let old = self.last_good.replace(Arc::clone(&compiled.ruleset));
        // Freeing the previous ruleset (~20 ms at 10,000 policies) is not the reload's business.
        crate::host::mem::drop_later(old);
        self.summary.hash = Some(hash.to_string());
        self.summary.endpoints = endpoint_summaries(&compiled.config, &compiled.view);
        self.summary.inactive_endpoints = compiled
            .view
            .inactive
            .iter()
            .map(|i| InactiveEndpointSummary {
                name: i.name.clone(),
                reason: i.reason.clone(),
            })
            .collect();
        self.summary.checks = node_checks(&compiled.config, &self.summary.node)
            .into_iter()
            .map(|c| c.name)
            .collect();
    }

    fn record(&mut self, outcome: &Outcome, now: SystemTime) {
        let at = rfc3339(now);
        self.summary.last_result = Some(outcome.kind().to_string());
        self.summary.last_result_at = Some(at.clone());
        let table = self.summary.table.clone();
        match outcome {
            Outcome::Invalid { diagnostics } => {
                self.summary.last_error = Some(ErrorSummary {
                    at,
                    kind: "invalid".into(),
                    message: outcome.message(&table),
                    // The first few and a count (a file can hold a million errors).
                    diagnostics: crate::config::diag::kept(
                        diagnostics.iter().filter(|d| d.is_error()),
                    ),
                })
            }
            Outcome::Failed { .. } => {
                self.summary.last_error = Some(ErrorSummary {
                    at,
                    kind: "apply_failed".into(),
                    message: outcome.message(&table),
                    diagnostics: Vec::new(),
                })
            }
            Outcome::RolledBack {
                hash,
                failed,
                restored,
                policies,
                ..
            } => {
                self.summary.last_rollback = Some(RollbackSummary {
                    at,
                    rejected_hash: hash.clone(),
                    restored: restored.to_string(),
                    failed_checks: failed.clone(),
                    policies: policies.clone(),
                })
            }
            // The configuration's own ruleset is in force: no longer degraded, and an earlier error (of
            // this run or a previous boot's, read back from the state file) is over.
            Outcome::Applied { .. } | Outcome::Unchanged { .. } => {
                self.summary.degraded = None;
                self.summary.last_error = None;
                self.summary.flushed_at = None;
            }
            Outcome::NotRetried { .. } => {}
        }
    }
}

/// The checks that run on `node`, in file order.
pub fn node_checks(config: &Config, node: &str) -> Vec<ConnectivityCheck> {
    config
        .checks
        .iter()
        .filter(|c| c.node.as_deref().is_none_or(|n| n == node))
        .cloned()
        .collect()
}

/// The host endpoints of `view` with their policy names per stage and direction, in evaluation order.
pub fn endpoint_summaries(config: &Config, view: &NodeView) -> Vec<EndpointSummary> {
    let one = |ep: &ActiveEndpoint, wildcard: bool| {
        let mut policies = Vec::new();
        for stage in Stage::ALL {
            for dir in Dir::BOTH {
                let found: Vec<&crate::config::model::GlobalNetworkPolicy> = ep
                    .policies
                    .get(stage, dir)
                    .iter()
                    .filter_map(|&i| config.policies.get(i).map(|p| &**p))
                    .collect();
                if !found.is_empty() {
                    let tiered = found
                        .iter()
                        .any(|p| p.tier.value != crate::config::model::DEFAULT_TIER);
                    policies.push(StagePolicies {
                        stage: stage.as_str().into(),
                        direction: dir.as_str().into(),
                        policies: found.iter().map(|p| p.name.clone()).collect(),
                        tiers: if tiered {
                            found.iter().map(|p| p.tier.value.clone()).collect()
                        } else {
                            Vec::new()
                        },
                    });
                }
            }
        }
        EndpointSummary {
            name: ep.name.clone(),
            interfaces: ep.interfaces.clone(),
            wildcard,
            profiles: ep.profiles.clone(),
            policies,
        }
    };
    view.endpoints
        .iter()
        .map(|ep| one(ep, false))
        .chain(view.wildcard.iter().map(|ep| one(ep, true)))
        .collect()
}

/// Policies whose compiled rules (with the sets they use, and the host endpoints and stages that walk
/// into them) are new or differ from `previous`, and policies whose rules disappeared: the likely
/// culprits of a rollback, for the log. Rules are attributed to policies by their origins; every policy
/// counts as new against a `previous` stored without origins (by an older version). A policy of another
/// tier than `default` is named `TIER/NAME`, as in the rule comments (tiers spec §2).
pub fn changed_policies(previous: Option<&Ruleset>, new: &Ruleset) -> Vec<String> {
    let now = policy_fingerprints(new);
    let before = previous.map(policy_fingerprints).unwrap_or_default();
    let mut changed: BTreeSet<&str> = now
        .iter()
        .filter(|(p, f)| before.get(*p) != Some(f))
        .map(|(p, _)| p.as_str())
        .collect();
    changed.extend(
        before
            .keys()
            .filter(|p| !now.contains_key(*p))
            .map(String::as_str),
    );
    changed.into_iter().map(str::to_string).collect()
}

/// Per policy: the text of its rules and of the sets they use, and of the rules of host endpoint chains
/// that jump into its chains, with their host endpoint, stage and direction (not the positions in the
/// files: a policy that only moved is unchanged).
///
/// A tier other than `default` is a culprit of its own, `tier NAME` (tiers spec §3.2): its place among
/// the tiers of every host endpoint chain (the tier before it) and its end (a drop, or none for
/// defaultAction Pass), so that a rollback after a change of a Tier's order or defaultAction alone
/// names it.
fn policy_fingerprints(r: &Ruleset) -> BTreeMap<String, String> {
    use std::fmt::Write;
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    // The tier of the previous rule of the same chain.
    let mut previous: Option<(&str, &str)> = None;
    for (chain, rule, origin) in r.rules_with_origins() {
        let Some(o) = origin else { continue };
        if let Some(tier) = o.tier.as_deref() {
            let before = previous.filter(|(c, _)| *c == chain.name).map(|(_, t)| t);
            let entered = matches!(o.kind, Kind::Tier) && before != Some(tier);
            if tier != crate::config::model::DEFAULT_TIER
                && o.kind != Kind::Policy
                && (entered || o.kind == Kind::EndOfTier)
            {
                let text = out.entry(format!("tier {tier}")).or_default();
                let _ = write!(
                    text,
                    "{:?} {:?} {:?} {:?} after {before:?} {:?};",
                    o.kind, o.host_endpoint, o.stage, o.direction, rule.verdict
                );
            }
            if o.kind != Kind::Policy {
                previous = Some((chain.name.as_str(), tier));
            }
        }
        let Some(policy) = o.policy.as_deref() else {
            continue;
        };
        let name = match o.tier.as_deref() {
            Some(tier) if tier != crate::config::model::DEFAULT_TIER => format!("{tier}/{policy}"),
            _ => policy.to_string(),
        };
        let text = out.entry(name).or_default();
        match o.kind {
            Kind::Policy => {
                // Without the comment, which carries the rule's line: a policy that only moved is
                // unchanged.
                let rule = &crate::ruleset::Rule {
                    comment: None,
                    ..rule.clone()
                };
                let _ = write!(text, "{:?} {rule:?}", o.direction);
                for m in &rule.matches {
                    if let Match::Addr { set, .. }
                    | Match::Port {
                        port: PortMatch::Set(set),
                        ..
                    } = m
                    {
                        let _ = write!(text, "{:?}", r.set(set));
                    }
                }
            }
            _ => {
                let _ = write!(
                    text,
                    "{:?} {:?} {:?} {:?} {rule:?}",
                    o.kind, o.host_endpoint, o.stage, o.direction
                );
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::load::Loaded;
    use crate::config::model::{CheckTarget, HostEndpoint, Pos};
    use crate::nft::{DataplaneError, Fake};
    use crate::pipeline;
    use std::collections::VecDeque;
    use std::time::{Duration, UNIX_EPOCH};

    /// Answers each round from a script: one Vec<bool> per round (one entry per check), then all pass.
    #[derive(Default)]
    pub(crate) struct Script {
        pub rounds: VecDeque<Vec<bool>>,
        pub ran: usize,
    }

    impl Prober for Script {
        fn run(&mut self, checks: &[ConnectivityCheck]) -> Vec<CheckResult> {
            self.ran += 1;
            let round = self.rounds.pop_front().unwrap_or_default();
            checks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let passed = round.get(i).copied().unwrap_or(true);
                    CheckResult {
                        name: c.name.clone(),
                        target: crate::host::probe::target_text(&c.target),
                        passed,
                        detail: if passed {
                            "ok".into()
                        } else {
                            "no answer".into()
                        },
                    }
                })
                .collect()
        }
    }

    pub(crate) fn check(name: &str, node: Option<&str>) -> ConnectivityCheck {
        ConnectivityCheck {
            name: name.into(),
            pos: Pos::default(),
            node: node.map(str::to_string),
            target: CheckTarget::Tcp {
                host: "192.0.2.10".parse().unwrap(),
                port: 22,
            },
            timeout: Duration::from_secs(1),
            accept_refused: false,
        }
    }

    /// A valid configuration: one HEP on `iface` (so that different interfaces give different rulesets).
    pub(crate) fn compiled(iface: &str, checks: Vec<ConnectivityCheck>) -> Compiled {
        let config = Config {
            host_endpoints: vec![HostEndpoint {
                name: format!("hep-{iface}"),
                pos: Pos::default(),
                labels: Default::default(),
                node: "node1".into(),
                interface_name: Some(iface.into()),
                expected_ips: vec![],
                profiles: vec![],
                ports: vec![],
            }],
            checks,
            ..Config::default()
        };
        pipeline::build(
            Loaded {
                config,
                diagnostics: vec![],
            },
            "node1",
            &[],
            "hostpolicy",
            false,
        )
        .unwrap_or_else(|e| panic!("{:?}", e.diagnostics))
    }

    fn invalid() -> Invalid {
        let pos = Pos {
            file: "bad.yaml".into(),
            line: 3,
            column: 7,
        };
        Invalid {
            diagnostics: vec![Diagnostic::error(pos, "expected a mapping")],
        }
    }

    fn engine() -> Engine<Fake, Script> {
        Engine::new(Fake::new(), Script::default(), "node1", "hostpolicy")
    }

    fn hash(c: &Compiled) -> String {
        content_hash(&c.ruleset)
    }

    const T0: SystemTime = UNIX_EPOCH;

    /// Issue 20 item 8: the summary (what `status` shows, with or without a daemon) names the
    /// HostEndpoints of this node that govern no interface, and why.
    #[test]
    fn the_summary_names_inactive_host_endpoints() {
        let mut a = compiled("eth0", vec![]);
        a.config.host_endpoints.push(HostEndpoint {
            name: "uplink".into(),
            pos: Pos::default(),
            labels: Default::default(),
            node: "node1".into(),
            interface_name: None,
            expected_ips: vec!["203.0.113.254".parse().unwrap()],
            profiles: vec![],
            ports: vec![],
        });
        a.view = crate::resolve::resolve(&a.config, "node1", &[]);
        let mut e = engine();
        e.reconcile(Ok(&a), T0);
        assert_eq!(e.summary().endpoints.len(), 1);
        assert_eq!(
            e.summary().inactive_endpoints,
            [InactiveEndpointSummary {
                name: "uplink".into(),
                reason: "none of its expectedIPs (203.0.113.254) is an address of an interface of this node".into(),
            }]
        );
    }

    #[test]
    fn first_apply_then_unchanged_writes_nothing() {
        let mut e = engine();
        let a = compiled("eth0", vec![check("gw", None)]);
        let out = e.reconcile(Ok(&a), T0);
        assert_eq!(out.kind(), "applied", "{out:?}");
        assert_eq!(e.dp.calls, [format!("apply {}", short(&hash(&a)))]);
        assert_eq!(e.prober.ran, 2, "baseline and after");
        assert_eq!(e.summary().generation, 1);
        assert_eq!(e.summary().endpoints[0].name, "hep-eth0");
        assert_eq!(e.summary().checks, ["gw"]);

        let out = e.reconcile(Ok(&a), T0);
        assert_eq!(
            out,
            Outcome::Unchanged {
                generation: 1,
                hash: hash(&a)
            }
        );
        assert_eq!(
            e.dp.calls.len(),
            1,
            "no second kernel write: {:?}",
            e.dp.calls
        );
        assert_eq!(e.prober.ran, 2, "no probes when nothing changes");
    }

    #[test]
    fn the_last_good_file_is_written_when_it_changed_and_repaired_when_someone_touched_it() {
        let dir = crate::engine::state::tests::temp_dir("engine-save");
        let store = crate::engine::state::Store::new(&dir);
        let file = dir.join(crate::engine::state::LAST_GOOD_FILE);
        let mut e = engine();
        let a = compiled("eth0", vec![]);
        e.reconcile(Ok(&a), T0);
        e.save_state(&store, T0).unwrap();
        let saved = |store: &crate::engine::state::Store| store.load_last_good().unwrap().unwrap();
        assert_eq!(saved(&store).hash, hash(&a));
        // Unchanged: the file is left as it is (its time of saving too).
        let later = T0 + Duration::from_secs(60);
        e.reconcile(Ok(&a), later);
        e.save_state(&store, later).unwrap();
        assert_eq!(saved(&store).saved_at, rfc3339(T0));
        // Damaged or removed behind our back: written again.
        std::fs::write(&file, "{").unwrap();
        e.save_state(&store, later).unwrap();
        assert_eq!(saved(&store).hash, hash(&a));
        std::fs::remove_file(&file).unwrap();
        e.save_state(&store, later).unwrap();
        assert_eq!(saved(&store).hash, hash(&a));
        // A new ruleset: written.
        let b = compiled("eth1", vec![]);
        e.reconcile(Ok(&b), later);
        e.save_state(&store, later).unwrap();
        assert_eq!(saved(&store).hash, hash(&b));
        // A restarted engine reads the file back once, and finds it current.
        let mut e = engine();
        e.restore(Some(saved(&store).ruleset), store.load_summary().unwrap());
        let before = std::fs::metadata(&file).unwrap().modified().unwrap();
        e.save_state(&store, later + Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            before
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 18: the state file's text made while the kernel commits is the text of the ruleset that
    /// was committed, and a swap the kernel refused leaves nothing of its text behind.
    #[test]
    fn the_state_file_begun_during_the_commit_is_the_committed_ruleset() {
        let dir = crate::engine::state::tests::temp_dir("engine-encoded");
        let store = crate::engine::state::Store::new(&dir);
        let mut e = engine();
        e.stage_state_during_commit(Some(store.clone()));
        let a = compiled("eth0", vec![]);
        assert_eq!(e.reconcile(Ok(&a), T0).kind(), "applied");
        e.save_state(&store, T0).unwrap();
        let saved = store.load_last_good().unwrap().unwrap();
        assert_eq!((saved.hash, saved.generation), (hash(&a), 1));
        assert_eq!(saved.ruleset, *a.ruleset);
        // Refused by the kernel: what is written is still `a`, the last good.
        e.dp.fail_next(DataplaneError::os("kernel said no", 22));
        let b = compiled("eth1", vec![]);
        assert_eq!(e.reconcile(Ok(&b), T0).kind(), "failed");
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(),
            ["last-good.json", "status.json"],
            "nothing staged is left"
        );
        std::fs::remove_file(dir.join(crate::engine::state::LAST_GOOD_FILE)).unwrap();
        e.save_state(&store, T0).unwrap();
        let saved = store.load_last_good().unwrap().unwrap();
        assert_eq!(saved.ruleset, *a.ruleset);
        assert_eq!(e.reconcile(Ok(&b), T0).kind(), "applied");
        e.save_state(&store, T0).unwrap();
        let saved = store.load_last_good().unwrap().unwrap();
        assert_eq!((saved.hash, saved.generation), (hash(&b), 2));
        assert_eq!(saved.ruleset, *b.ruleset);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn judged_by_the_kernel_not_by_memory() {
        let mut e = engine();
        let a = compiled("eth0", vec![]);
        e.reconcile(Ok(&a), T0);
        // Someone deleted our table: the same configuration is applied again.
        assert!(e.dp.kernel().remove_table("hostpolicy"));
        let out = e.reconcile(Ok(&a), T0);
        assert_eq!(out.kind(), "applied");
        assert_eq!(e.dp.calls.len(), 2);
        assert_eq!(e.summary().generation, 2);
    }

    #[test]
    fn regression_rolls_back_to_the_previous_ruleset_and_is_not_retried() {
        let mut e = engine();
        let a = compiled("eth0", vec![check("gw", None), check("dns", None)]);
        e.reconcile(Ok(&a), T0);
        let b = compiled(
            "eth1",
            vec![
                check("gw", None),
                check("dns", None),
                check("other-node", Some("node2")),
            ],
        );
        // Baseline: both pass; after: gw fails.
        e.prober.rounds = VecDeque::from([vec![true, true], vec![false, true]]);
        let out = e.reconcile(Ok(&b), T0);
        match &out {
            Outcome::RolledBack {
                hash: h,
                failed,
                restored,
                ..
            } => {
                assert_eq!(h, &hash(&b));
                assert_eq!(
                    failed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                    ["gw"]
                );
                assert_eq!(
                    restored,
                    &Restored::Previous {
                        generation: 1,
                        hash: hash(&a)
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out.exit_code(), exit::APPLY_FAILED);
        assert!(
            out.message("hostpolicy").contains("gw"),
            "{}",
            out.message("hostpolicy")
        );
        let (ha, hb) = (hash(&a), hash(&b));
        assert_eq!(
            e.dp.calls,
            [
                format!("apply {}", short(&ha)),
                format!("update {}", short(&hb)),
                format!("apply {}", short(&ha))
            ]
        );
        assert!(e.dp.holds(&a.ruleset), "the previous ruleset is back");
        assert_eq!(e.last_good(), Some(&*a.ruleset));
        assert_eq!(e.summary().generation, 1);
        assert_eq!(e.summary().hash.as_deref(), Some(ha.as_str()));
        let rb = e.summary().last_rollback.clone().unwrap();
        assert_eq!(rb.failed_checks[0].name, "gw");
        assert_eq!(rb.rejected_hash, hb);

        // The same contents again (a SIGHUP, an unrelated file event): no probe, no kernel write.
        let ran = e.prober.ran;
        let out = e.reconcile(Ok(&b), T0);
        assert_eq!(
            out,
            Outcome::NotRetried {
                hash: hb.clone(),
                failed: vec!["gw".into()]
            }
        );
        assert_eq!(e.dp.calls.len(), 3);
        assert_eq!(e.prober.ran, ran);

        // Changed contents are tried again.
        let c = compiled("eth2", vec![check("gw", None)]);
        assert_eq!(e.reconcile(Ok(&c), T0).kind(), "applied");
    }

    #[test]
    fn first_start_rollback_flushes_our_table() {
        let mut e = engine();
        let a = compiled("eth0", vec![check("gw", None)]);
        e.prober.rounds = VecDeque::from([vec![true], vec![false]]);
        let out = e.reconcile(Ok(&a), T0);
        assert!(
            matches!(
                &out,
                Outcome::RolledBack {
                    restored: Restored::Flushed,
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(
            e.dp.calls,
            [format!("apply {}", short(&hash(&a))), "flush".to_string()]
        );
        assert!(e.dp.no_table("hostpolicy"));
        assert_eq!(e.last_good(), None);
        assert_eq!(e.summary().generation, 0);
    }

    #[test]
    fn a_check_failing_before_the_swap_does_not_roll_back() {
        let mut e = engine();
        let a = compiled("eth0", vec![check("down-anyway", None)]);
        e.prober.rounds = VecDeque::from([vec![false], vec![false]]);
        match e.reconcile(Ok(&a), T0) {
            Outcome::Applied { checks, .. } => {
                assert!(checks.regressions().is_empty());
                assert_eq!(checks.failing_before().len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn checks_of_other_nodes_do_not_run() {
        let mut e = engine();
        let a = compiled("eth0", vec![check("elsewhere", Some("node2"))]);
        assert_eq!(e.reconcile(Ok(&a), T0).kind(), "applied");
        assert_eq!(e.prober.ran, 0);
    }

    #[test]
    fn invalid_configuration_changes_nothing() {
        let mut e = engine();
        let a = compiled("eth0", vec![]);
        e.reconcile(Ok(&a), T0);
        let calls = e.dp.calls.clone();
        let out = e.reconcile(Err(&invalid()), T0 + Duration::from_secs(60));
        assert_eq!(out.kind(), "invalid");
        assert_eq!(out.exit_code(), exit::INVALID);
        assert_eq!(e.dp.calls, calls, "no kernel write");
        assert!(e.dp.holds(&a.ruleset));
        assert_eq!(e.last_good(), Some(&*a.ruleset));
        let err = e.summary().last_error.clone().unwrap();
        assert_eq!(err.kind, "invalid");
        assert_eq!(err.at, "1970-01-01T00:01:00Z");
        assert_eq!(err.diagnostics, ["bad.yaml:3:7: error: expected a mapping"]);
    }

    #[test]
    fn apply_error_leaves_the_previous_ruleset() {
        let mut e = engine();
        let a = compiled("eth0", vec![]);
        e.reconcile(Ok(&a), T0);
        e.dp.fail_next(DataplaneError::os("kernel said no", 22));
        let b = compiled("eth1", vec![]);
        let out = e.reconcile(Ok(&b), T0);
        assert_eq!(out.kind(), "failed");
        assert_eq!(out.exit_code(), exit::APPLY_FAILED);
        assert!(out.message("t").contains("kernel said no"));
        assert_eq!(e.last_good(), Some(&*a.ruleset));
        assert_eq!(
            e.summary().last_error.as_ref().unwrap().kind,
            "apply_failed"
        );
        // Not remembered as rejected: an apply error is retried on the next reload.
        assert_eq!(e.reconcile(Ok(&b), T0).kind(), "applied");
    }

    /// Issue 17 item 8: "the previous ruleset is still in force" was said when there was none.
    #[test]
    fn a_failed_first_apply_says_that_nothing_is_in_force() {
        let mut e = engine();
        e.dp.fail_next(DataplaneError::os("kernel said no", 22));
        let out = e.reconcile(Ok(&compiled("eth0", vec![])), T0);
        assert_eq!(out.kind(), "failed");
        assert!(
            matches!(
                out,
                Outcome::Failed {
                    previous_in_force: false,
                    ..
                }
            ),
            "{out:?}"
        );
        let said = out.message("hostpolicy");
        assert!(
            said.starts_with("apply failed, and no ruleset of hostpolicyd is in force (there was none before): kernel said no"),
            "{said}"
        );
        assert!(
            !said.contains("previous ruleset is still in force"),
            "{said}"
        );
        assert_eq!(e.summary().kernel, "none");
    }

    /// Issue 17 item 7: a stale "last error" (of an earlier reload, or an earlier boot's state file) was
    /// still shown after a successful apply.
    #[test]
    fn a_successful_reload_clears_the_last_error() {
        let mut e = engine();
        e.reconcile(Err(&invalid()), T0);
        assert!(e.summary().last_error.is_some());
        e.reconcile(Ok(&compiled("eth0", vec![])), T0);
        assert_eq!(e.summary().last_error, None);
        // Read back from a previous boot's summary: cleared by the first success too (here unchanged).
        let stale = Summary {
            last_error: Some(ErrorSummary {
                kind: "invalid".into(),
                ..ErrorSummary::default()
            }),
            ..e.summary().clone()
        };
        let last_good = e.last_good().cloned();
        let mut e2 = Engine::new(
            std::mem::take(&mut e.dp),
            Script::default(),
            "node1",
            "hostpolicy",
        );
        e2.restore(last_good, Some(stale));
        assert!(e2.summary().last_error.is_some());
        assert_eq!(
            e2.reconcile(Ok(&compiled("eth0", vec![])), T0).kind(),
            "unchanged"
        );
        assert_eq!(e2.summary().last_error, None);
    }

    /// Issue 17 item 2: an interface or address change re-compiles the last valid configuration; that is
    /// no reload of the files, so after an invalid configuration `status` must still say `invalid` (it
    /// said `unchanged` whenever an IPv6 address settled after a reload: the flaky systemd test).
    #[test]
    fn an_interface_update_keeps_the_result_of_the_last_reload() {
        let mut e = engine();
        let a = compiled("eth0", vec![]);
        e.reconcile(Ok(&a), T0);
        e.reconcile(Err(&invalid()), T0 + Duration::from_secs(1));
        let before = e.summary().clone();
        let out = e.reconcile_interfaces(&a, T0 + Duration::from_secs(2));
        assert_eq!(out.kind(), "unchanged");
        assert_eq!(e.summary(), &before, "nothing of the summary changes");
        assert_eq!(e.summary().last_result.as_deref(), Some("invalid"));

        // A new ruleset for the new addresses: applied and counted, still not a reload of the files.
        let b = compiled("eth1", vec![]);
        let out = e.reconcile_interfaces(&b, T0 + Duration::from_secs(3));
        assert_eq!(out.kind(), "applied");
        let s = e.summary();
        assert_eq!(s.generation, before.generation + 1);
        assert_eq!(s.last_result.as_deref(), Some("invalid"));
        assert_eq!(s.last_result_at, before.last_result_at);
        assert_eq!(s.last_error, before.last_error);

        // A failure is recorded as the last error, and the reload's result stays.
        e.dp.fail_next(DataplaneError::os("kernel said no", 22));
        let out = e.reconcile_interfaces(&a, T0 + Duration::from_secs(4));
        assert_eq!(out.kind(), "failed");
        assert_eq!(
            e.summary().last_error.as_ref().unwrap().kind,
            "apply_failed"
        );
        assert_eq!(e.summary().last_result.as_deref(), Some("invalid"));
    }

    #[test]
    fn restart_adopts_the_table_and_rolls_back_to_the_stored_ruleset() {
        // A previous run applied `a` and saved it; the new process starts with the kernel holding it.
        let a = compiled("eth0", vec![check("gw", None)]);
        let mut e = engine();
        e.dp.load(&a.ruleset);
        let stored = Summary {
            generation: 4,
            hash: Some(hash(&a)),
            table: "hostpolicy".into(),
            ..Summary::default()
        };
        e.restore(Some((*a.ruleset).clone()), Some(stored));
        assert_eq!(
            e.reconcile(Ok(&a), T0),
            Outcome::Unchanged {
                generation: 4,
                hash: hash(&a)
            }
        );
        assert!(e.dp.calls.is_empty());

        let b = compiled("eth1", vec![check("gw", None)]);
        e.prober.rounds = VecDeque::from([vec![true], vec![false]]);
        let out = e.reconcile(Ok(&b), T0);
        assert!(
            matches!(
                &out,
                Outcome::RolledBack {
                    restored: Restored::Previous { generation: 4, .. },
                    ..
                }
            ),
            "{out:?}"
        );
        assert!(e.dp.holds(&a.ruleset));
    }

    #[test]
    fn the_last_good_is_reapplied_as_it_is() {
        let mut e = engine();
        assert!(e.reapply_last_good().is_err(), "nothing to re-apply yet");
        let a = compiled("eth0", vec![check("gw", None)]);
        e.reconcile(Ok(&a), T0);
        assert!(e.dp.kernel().remove_table("hostpolicy")); // someone deleted our table
        e.reapply_last_good().unwrap();
        assert!(e.dp.holds(&a.ruleset));
        assert_eq!(e.summary().kernel, "ours");
        assert_eq!(e.prober.ran, 2, "no checks for a repair");
        assert_eq!(
            (e.summary().generation, e.summary().applies),
            (1, 1),
            "a repair is not a new ruleset"
        );
        e.set_degraded(Some("x".into()));
        e.reconcile(Ok(&a), T0);
        assert_eq!(
            e.summary().degraded,
            None,
            "the configuration's ruleset is in force"
        );
    }

    #[test]
    fn kernel_holding_the_compiled_ruleset_is_adopted_without_a_write() {
        let a = compiled("eth0", vec![]);
        let mut e = engine();
        e.dp.load(&a.ruleset);
        assert_eq!(
            e.reconcile(Ok(&a), T0),
            Outcome::Unchanged {
                generation: 1,
                hash: hash(&a)
            }
        );
        assert!(e.dp.calls.is_empty());
        assert_eq!(e.last_good(), Some(&*a.ruleset));
    }

    fn ruleset_of(yaml: &str) -> Ruleset {
        let loaded = crate::config::load::load_sources(&[("t.yaml".to_string(), yaml.to_string())]);
        pipeline::build(loaded, "node1", &[], "hostpolicy", false)
            .unwrap_or_else(|e| panic!("{:?}", e.diagnostics))
            .ruleset
            .as_ref()
            .clone()
    }

    /// The culprits of a rollback: new and changed policies, and policies that are gone; not a policy
    /// that only moved in its file, nor one that did not change.
    #[test]
    fn changed_policies_are_found_by_origin() {
        let hep = "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: h, labels: {r: w}}, spec: {node: node1, interfaceName: eth0}}\n";
        let policy = |name: &str, port: u16| {
            format!("- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: {name}}}, spec: {{selector: r == 'w', ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [{port}]}}}}]}}}}\n")
        };
        // An empty policy allows nothing, yet selecting the HostEndpoint changes what it drops.
        let empty = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: empty}, spec: {selector: r == 'w', types: [Ingress]}}\n";
        let before = ruleset_of(&format!(
            "{hep}{}{}{}",
            policy("same", 22),
            policy("edited", 80),
            policy("removed", 443)
        ));
        let after = ruleset_of(&format!(
            "# moved down\n{hep}{}{}{empty}",
            policy("same", 22),
            policy("edited", 8080)
        ));
        assert_eq!(
            changed_policies(Some(&before), &after),
            ["edited", "empty", "removed"]
        );
        assert_eq!(changed_policies(Some(&after), &after), Vec::<String>::new());
        assert_eq!(
            changed_policies(None, &before),
            ["edited", "removed", "same"]
        );
        // Tiers spec §2: a policy of another tier is named with it; so is the tier.
        let tier = |spec: &str| {
            format!("- {{apiVersion: projectcalico.org/v3, kind: Tier, metadata: {{name: platform}}, spec: {{{spec}}}}}\n")
        };
        let tiered = policy("guard", 22).replace("spec: {", "spec: {tier: platform, ");
        let with_tier = |spec: &str| {
            ruleset_of(&format!(
                "{hep}{}{tiered}{}",
                tier(spec),
                policy("same", 22)
            ))
        };
        let first = with_tier("order: 100");
        assert_eq!(
            changed_policies(Some(&after), &first),
            ["edited", "empty", "platform/guard", "tier platform"]
        );
        assert_eq!(changed_policies(Some(&first), &first), Vec::<String>::new());
        // A Tier's defaultAction or order alone: the tier is named, its policies are not.
        assert_eq!(
            changed_policies(Some(&first), &with_tier("order: 100, defaultAction: Pass")),
            ["tier platform"]
        );
        assert_eq!(
            changed_policies(Some(&first), &with_tier("order: 2000000")),
            ["tier platform"]
        );
    }

    /// A `last-good.json` written before rules had origins still loads (its hash is still right) and
    /// is re-applied as it is; one written now keeps the origins.
    #[test]
    fn a_last_good_file_without_origins_still_loads() {
        let rs = compiled("eth0", vec![]).ruleset;
        assert!(!rs.origins.is_empty());
        let dir = crate::engine::state::tests::temp_dir("origins");
        let store = crate::engine::state::Store::new(&dir);
        store.save_last_good(3, &rs, UNIX_EPOCH).unwrap();
        assert_eq!(store.load_last_good().unwrap().unwrap().ruleset, *rs);
        let path = dir.join(crate::engine::state::LAST_GOOD_FILE);
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        doc["ruleset"]
            .as_object_mut()
            .unwrap()
            .remove("origins")
            .unwrap();
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        let old = store.load_last_good().unwrap().unwrap();
        assert!(old.ruleset.origins.is_empty());
        assert_eq!(old.ruleset.chains, rs.chains);
        assert_eq!(content_hash(&old.ruleset), content_hash(&rs));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
