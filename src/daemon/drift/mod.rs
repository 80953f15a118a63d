//! Drift: someone else deleted, flushed or changed our table (`nft flush ruleset` from nftables.service, a
//! restarted Docker, an admin's `nft delete table`). The daemon puts the last good ruleset back.
//!
//! How it works, from the kernel to the writer loop:
//!
//! 1. The drift thread ([`spawn`]) listens to nf_tables notifications ([`nftmon::Monitor`]) and keeps
//!    only those about our table (family inet, our name), plus the deletion of other tables in the same
//!    transaction (`flush ruleset`) and the `NEWGEN` that names the process of each transaction. A
//!    foreign table's changes are not even looked at.
//! 2. A burst is collected ([`Collector`]) until the notifications stop for [`QUIET`] (capped at
//!    [`CAP`]) and handed to the writer loop as one [`Burst`]: how many notifications came from our own
//!    sockets and how many from others (by netlink port id, see `nftmon`), who the others were, whether
//!    the kernel dropped notifications.
//! 3. The writer loop (the only writer) hands it to the [`Guard`], the state machine of this module, which
//!    compares the kernel with what it applied: first the content hash
//!    ([`crate::nft::Dataplane::table_comment`]), then, unless the burst was only our own writes, a
//!    fingerprint of the table ([`nftmon::fingerprint`]) against the [`Expectation`] recorded right after
//!    its own last write ([`diff`]). Only a difference is drift: a write attributed to someone else that
//!    left the table as we wrote it changes nothing, so a wrong attribution can never start a repair loop.
//! 4. A repair re-applies the last good ruleset through the dataplane (the same atomic swap as any
//!    apply), then reads the table back: what still differs from the expectation (an object the
//!    dataplane does not manage, say) makes the repair a failure, retried later. The expectation is not
//!    re-read from the kernel after a repair, so such a leftover is never taken for our own. Repairs run
//!    at once for the first [`Limiter::FREE`] of a streak, then with an exponential backoff up to
//!    [`Limiter::MAX`] against a persistent adversary; the streak is forgotten after [`Limiter::RESET`]
//!    without a repair.
//!
//! Compared: the table's content hash, its chains (hook, priority, policy, the rules in order), its sets
//! and maps (definition, elements); not handles (a table re-created with the same content is the same),
//! counters, or stateful objects and flowtables (hostpolicyd writes none, filters with none, and its
//! apply would not remove one someone else added).
//!
//! The files: [`listen`] (the thread), [`burst`] (notifications → bursts), [`expect`] (what the kernel
//! should hold, and the differences), [`limiter`] (the repair rate limit), and here the [`Guard`]. All of
//! it but the thread is pure or takes the kernel through the engine and the time from a [`Clock`].

pub mod burst;
pub mod expect;
pub mod limiter;
pub mod listen;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::daemon::clock::Clock;
use crate::daemon::nftmon::{self, Known, TablePrint};
use crate::engine::state::{rfc3339, DriftSummary};
use crate::engine::{short, Engine, Kernel};
use crate::host::probe::Prober;
use crate::nft::Dataplane;

pub use burst::{add_writers, Burst, Collector, CAP, MAX_WRITERS, QUIET};
pub use expect::{chain_digests, diff, set_digests, summarize, Expectation, Layout};
pub use limiter::Limiter;
pub use listen::spawn;

/// When the kernel could not be read after a drift, look again this much later.
pub const RECHECK: Duration = Duration::from_secs(1);
/// The change a drift summary names when a chain we wrote did not hold what we wrote when the guard
/// armed (see [`Guard::arm`]).
pub const WRITTEN_CHANGED: &str =
    "a chain written by us changed by someone else before the guard armed";
/// How many changes a drift log line names.
const CHANGES_LOGGED: usize = 8;

/// Reads table `inet NAME` back, taking the elements of the given sets and the rules of the given
/// chains as known (see [`nftmon::fingerprint_known`]).
pub type Fingerprinter = Box<dyn FnMut(&str, &Known) -> std::io::Result<Option<TablePrint>> + Send>;

/// Reads the rules of some chains of table `inet NAME` back ([`nftmon::read_chains`]).
pub type ChainReader =
    Box<dyn FnMut(&str, &[String]) -> std::io::Result<Option<TablePrint>> + Send>;

/// What the engine's hook ([`Guard::after_swap`]) read right after our own write, before the
/// connectivity checks: the chains the write made or changed, with their rule handles. Rule handles
/// are learned only from here ([`Guard::arm`]), never from a read that is not our write's (during or
/// after the checks, or at start): someone's in-place change of a rule then would be taken for ours and
/// kept by every later edit by handle.
#[derive(Default)]
struct Capture {
    read: Option<ChainReader>,
    /// The content hash comment of the ruleset written, and what was read.
    got: Option<(String, TablePrint)>,
}

/// A drift repair delayed by the rate limit.
#[derive(Debug, Clone)]
struct PendingRepair {
    at: Instant,
    /// When the drift was first noticed.
    since: Instant,
    writers: BTreeSet<String>,
}

/// What a look at the kernel found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Look {
    /// The kernel holds what we applied.
    InSync,
    /// Someone else changed it: what changed.
    Drifted(Vec<String>),
    /// The kernel could not be read.
    Unknown(String),
}

/// The drift state machine: what the kernel must hold while we guard our table, the repair waiting for
/// the rate limit, the look again after the kernel could not be read.
///
/// Disarmed (nothing of ours to guard: nothing applied yet, a first-start rollback removed our table, a
/// foreign table of our name) it ignores bursts. [`Guard::arm`] right after each of our own writes
/// records the expectation. A burst ([`Guard::burst`]) is compared and, when someone else changed the
/// table, repaired now or at the time the [`Limiter`] allows ([`Guard::deadline`], [`Guard::due`]).
pub struct Guard {
    table: String,
    expectation: Option<Expectation>,
    limiter: Limiter,
    pending: Option<PendingRepair>,
    /// The kernel could not be read after a drift: look again then.
    recheck_at: Option<Instant>,
    /// Reads our table back from the kernel ([`nftmon::fingerprint_known`]; replaceable in tests).
    fingerprint: Fingerprinter,
    /// Shared with the engine's hook ([`Guard::after_swap`]).
    capture: std::sync::Arc<std::sync::Mutex<Capture>>,
    /// The waiting repair must write even if a look finds the table as expected: after our write, an
    /// edited chain held someone else's change and applying the ruleset again failed (the
    /// expectation then has no baseline, so a look cannot see that change).
    force_repair: bool,
}

/// What handling a burst or a due repair did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Nothing was written: the table is as we applied it, or a repair waits.
    Looked,
    /// A repair was tried (and recorded in the engine's summary, done or failed).
    Repaired,
}

impl Guard {
    pub fn new(table: &str) -> Guard {
        Guard {
            table: table.to_string(),
            expectation: None,
            limiter: Limiter::default(),
            pending: None,
            recheck_at: None,
            fingerprint: Box::new(nftmon::fingerprint_known),
            capture: std::sync::Arc::new(std::sync::Mutex::new(Capture {
                read: Some(Box::new(nftmon::read_chains)),
                got: None,
            })),
            force_repair: false,
        }
    }

    /// The engine's hook ([`Engine::after_swap`]): reads back the chains our write made or changed,
    /// right after the kernel took it, for [`Guard::arm`].
    pub fn after_swap(&self) -> crate::engine::AfterSwap {
        let capture = std::sync::Arc::clone(&self.capture);
        let table = self.table.clone();
        Box::new(move |ruleset, wrote| {
            let mut c = capture.lock().unwrap_or_else(|e| e.into_inner());
            c.got = None;
            if let Some(read) = c.read.as_mut() {
                if let Ok(Some(print)) = read(&table, wrote) {
                    c.got = Some((ruleset.comment.clone(), print));
                }
            }
        })
    }

    /// Replaces how our table is read back from the kernel (tests without a kernel).
    pub fn with_fingerprinter(
        mut self,
        f: impl FnMut(&str) -> std::io::Result<Option<TablePrint>> + Send + 'static,
    ) -> Self {
        let mut f = f;
        self.fingerprint = Box::new(move |table, _| f(table));
        // No kernel: nothing is read back after a write, and no handle learned.
        self.capture.lock().unwrap_or_else(|e| e.into_inner()).read = None;
        self
    }

    /// Replaces how the chains a write made or changed are read back right after it (tests).
    pub fn with_chain_reader(
        self,
        f: impl FnMut(&str, &[String]) -> std::io::Result<Option<TablePrint>> + Send + 'static,
    ) -> Self {
        self.capture.lock().unwrap_or_else(|e| e.into_inner()).read = Some(Box::new(f));
        self
    }

    /// Whether there is something of ours to guard.
    pub fn armed(&self) -> bool {
        self.expectation.is_some()
    }

    /// Whether the guard expects the ruleset of content hash `hash`.
    pub fn expects(&self, hash: &str) -> bool {
        self.expectation.as_ref().is_some_and(|e| e.hash == hash)
    }

    /// Stops guarding: our table is gone on purpose, or holds something we cannot put back. A repair
    /// or a look that was waiting is dropped with it.
    pub fn disarm(&mut self) {
        self.expectation = None;
        self.pending = None;
        self.force_repair = false;
        self.recheck_at = None;
    }

    /// The next time [`Guard::due`] has work: a waiting repair, or a look again.
    pub fn deadline(&self) -> Option<Instant> {
        [self.pending.as_ref().map(|p| p.at), self.recheck_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Starts guarding our table as the kernel holds it now (right after our own write and its
    /// checks): the expectation that drift is judged against.
    ///
    /// It hands the dataplane the kernel handles of the chains the write made or changed
    /// ([`Dataplane::learn_handles`]) as read right after the write ([`Guard::after_swap`]), only when
    /// the table still holds them now, and checks the chains the write edited by handle. A chain that
    /// changed since the write (someone replaced a rule during the checks), or whose kept rules are not
    /// the ones of the previous baseline at their handles (someone changed it before our edit, and the
    /// edit kept their change), is put right at once by applying the whole ruleset again, never taken
    /// into the expectation. If that fails, nothing is learned, the expectation has no baseline, and a
    /// repair waits ([`Guard::deadline`]).
    pub fn arm<D: Dataplane, P: Prober>(&mut self, engine: &mut Engine<D, P>, clock: &dyn Clock) {
        self.force_repair = false;
        if self.arm_once(engine) {
            return;
        }
        warn!(
            event = "drift_edited_chain",
            "a chain of table inet {} written by us does not hold what we wrote (changed by someone \
             else before or after our write); applying the whole ruleset again",
            self.table
        );
        let changes = vec![WRITTEN_CHANGED.to_string()];
        let error = match engine.reapply_last_good() {
            Ok(()) if self.arm_once(engine) => {
                engine.record_drift(DriftSummary {
                    at: rfc3339(clock.wall()),
                    changes,
                    by: Vec::new(),
                    repaired: true,
                    error: None,
                    latency_ms: 0,
                });
                return;
            }
            Ok(()) => "the table still differs after applying it again".to_string(),
            Err(e) => e.to_string(),
        };
        warn!(
            event = "drift_edited_chain",
            "applying the whole ruleset of table inet {} again failed: {error}; trying again in \
             {RECHECK:?}",
            self.table
        );
        engine.dataplane().forget_handles();
        if let (Some(ruleset), Some(hash)) = (engine.last_good(), engine.summary().hash.clone()) {
            let (expectation, _) = Expectation::with_digests(
                &hash,
                ruleset,
                None,
                set_digests(ruleset),
                chain_digests(ruleset),
            );
            self.expectation = Some(expectation);
        }
        engine.record_drift(DriftSummary {
            at: rfc3339(clock.wall()),
            changes,
            by: Vec::new(),
            repaired: false,
            error: Some(error),
            latency_ms: 0,
        });
        let now = clock.now();
        self.force_repair = true;
        self.pending = Some(PendingRepair {
            at: now + RECHECK,
            since: now,
            writers: BTreeSet::new(),
        });
    }

    /// One [`Guard::arm`]: false when a chain the write made or changed does not hold what the write
    /// put there (the expectation is then the one from before, untouched, and nothing is learned).
    fn arm_once<D: Dataplane, P: Prober>(&mut self, engine: &mut Engine<D, P>) -> bool {
        let edited = engine.dataplane().take_edited();
        let captured = self
            .capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .got
            .take();
        let (Some(ruleset), Some(hash)) = (engine.last_good(), engine.summary().hash.clone())
        else {
            self.expectation = None;
            return true;
        };
        let captured = captured
            .filter(|(comment, _)| *comment == ruleset.comment)
            .map(|(_, print)| print);
        let hash = &hash;
        // The sets and chains this write left as they were are not read back (see
        // `fingerprint_known`): after a one-file reload, two chains' rules instead of the whole table.
        let sets = set_digests(ruleset);
        let chains = chain_digests(ruleset);
        let known = self
            .expectation
            .as_ref()
            .map(|g| g.known_after(ruleset, &sets, &chains))
            .unwrap_or_default();
        let kernel = match (self.fingerprint)(&self.table, &known) {
            Ok(p) => p,
            Err(e) => {
                debug!(
                    event = "drift_baseline_unreadable",
                    "cannot read table inet {} back: {e}; judging drift by its layout only",
                    self.table
                );
                None
            }
        };
        if let Some(print) = &kernel {
            if let Some(written) = &captured {
                if !still_as_written(written, print, &known) {
                    return false;
                }
            }
            let previous = self.expectation.as_ref().and_then(|e| e.baseline.as_ref());
            if !edits_hold(&edited, previous, print) {
                return false;
            }
        }
        // The handles of the chains read right after the write (not those taken from the previous
        // baseline: the dataplane keeps those of the chains it left alone), where the chain has as
        // many rules as the ruleset's.
        let learned = match (&kernel, &captured) {
            (Some(_), Some(written)) => Some(crate::nft::Handles {
                table: written.table,
                chains: ruleset
                    .chains
                    .iter()
                    .filter(|c| !known.chains.contains_key(&c.name))
                    .filter_map(|c| {
                        let k = written.chains.get(&c.name)?;
                        (k.handles.len() == c.rules.len() && k.rules.len() == c.rules.len())
                            .then(|| (c.name.clone(), k.handles.clone()))
                    })
                    .collect(),
            }),
            _ => None,
        };
        let comment = ruleset.comment.clone();
        let (expectation, fits) = Expectation::with_digests(hash, ruleset, kernel, sets, chains);
        match learned.filter(|_| fits) {
            Some(learned) => engine.dataplane().learn_handles(&comment, learned),
            // Not read back (or not as written): no handle is trusted, the next write refills.
            None => engine.dataplane().forget_handles(),
        }
        if !fits {
            warn!(
                event = "drift_layout",
                "right after our own write, table inet {} does not hold the compiled chains, rule counts \
                 and sets; drift is judged against what the kernel held then",
                self.table
            );
        }
        self.expectation = Some(expectation);
        true
    }

    /// A burst of nftables changes to our table: compare, and repair when someone else changed it.
    pub fn burst<D: Dataplane, P: Prober>(
        &mut self,
        burst: Burst,
        engine: &mut Engine<D, P>,
        clock: &dyn Clock,
    ) -> Done {
        if self.expectation.is_none() {
            debug!(
                event = "drift_unguarded",
                own = burst.own,
                foreign = burst.foreign,
                "nftables changes to table inet {}, which holds nothing of ours to guard",
                self.table
            );
            return Done::Looked;
        }
        if let Some(p) = self.pending.as_mut() {
            // A repair is already waiting: it looks at the kernel again when it runs.
            add_writers(&mut p.writers, burst.writers);
            return Done::Looked;
        }
        match self.look(engine, Some(&burst)) {
            Look::InSync if burst.foreign > 0 => {
                let by = burst.writers.iter().cloned().collect::<Vec<_>>().join(", ");
                info!(
                    event = "drift_none",
                    own = burst.own,
                    foreign = burst.foreign,
                    by,
                    "table inet {} was written to by {} but still holds what we applied (stateful \
                     objects and flowtables are not compared)",
                    self.table,
                    if by.is_empty() {
                        "another process"
                    } else {
                        by.as_str()
                    }
                );
                Done::Looked
            }
            Look::InSync => {
                debug!(
                    event = "drift_none",
                    own = burst.own,
                    foreign = burst.foreign,
                    lost = burst.lost,
                    "table inet {} holds what we applied",
                    self.table
                );
                Done::Looked
            }
            Look::Unknown(e) => {
                warn!(
                    event = "drift_unknown",
                    "nftables changed and table inet {} cannot be read: {e}; looking again in {RECHECK:?}",
                    self.table
                );
                self.recheck_at = Some(clock.now() + RECHECK);
                Done::Looked
            }
            Look::Drifted(changes) => {
                self.repair(changes, burst.writers, burst.since, engine, clock)
            }
        }
    }

    /// Runs the waiting repair if it is due at the clock's time (looking at the kernel again first).
    pub fn repair_due<D: Dataplane, P: Prober>(
        &mut self,
        engine: &mut Engine<D, P>,
        clock: &dyn Clock,
    ) -> Option<Done> {
        if self.pending.as_ref().is_some_and(|p| clock.now() >= p.at) {
            Some(self.repair_pending(engine, clock))
        } else {
            None
        }
    }

    /// The look again after the kernel could not be read, if it is due: a burst of unknown changes for
    /// [`Guard::burst`].
    pub fn recheck_due(&mut self, clock: &dyn Clock) -> Option<Burst> {
        let now = clock.now();
        if self.recheck_at.is_some_and(|at| now >= at) {
            self.recheck_at = None;
            Some(Burst::unknown(now))
        } else {
            None
        }
    }

    /// Whether a repair waits for the rate limit.
    pub fn repair_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Compares the kernel with the expectation (see [`diff`]). `burst`: the changes that prompted the
    /// look.
    fn look<D: Dataplane, P: Prober>(
        &mut self,
        engine: &mut Engine<D, P>,
        burst: Option<&Burst>,
    ) -> Look {
        let Some(expectation) = self.expectation.as_ref() else {
            return Look::InSync;
        };
        let deleted = || match burst.map_or(0, |b| b.other_tables_deleted) {
            0 => "table deleted".to_string(),
            n => format!(
                "table deleted, with {n} other table{} (ruleset flushed)",
                if n == 1 { "" } else { "s" }
            ),
        };
        match engine.inspect_kernel() {
            Kernel::None => Look::Drifted(vec![deleted()]),
            Kernel::Pending(h) => Look::Drifted(vec![format!(
                "half-finished swap to sha256:{} found (a run was interrupted between its transactions)",
                short(&h)
            )]),
            Kernel::Unknown(e) => Look::Unknown(e),
            Kernel::Table(h) if h != expectation.hash => Look::Drifted(vec![if h.is_empty() {
                "table replaced by one hostpolicyd did not write".to_string()
            } else {
                format!("table replaced (content sha256:{})", short(&h))
            }]),
            Kernel::Table(_) if burst.is_some_and(Burst::only_own) => Look::InSync,
            Kernel::Table(_) => match (self.fingerprint)(&self.table, &Known::default()) {
                Ok(None) => Look::Drifted(vec![deleted()]),
                Ok(Some(print)) => {
                    let changes = diff(expectation, &print);
                    if changes.is_empty() {
                        Look::InSync
                    } else {
                        Look::Drifted(changes)
                    }
                }
                Err(e) => Look::Unknown(e.to_string()),
            },
        }
    }

    /// Puts the last good ruleset back, now or when the rate limit allows.
    fn repair<D: Dataplane, P: Prober>(
        &mut self,
        changes: Vec<String>,
        writers: BTreeSet<String>,
        since: Instant,
        engine: &mut Engine<D, P>,
        clock: &dyn Clock,
    ) -> Done {
        let now = clock.now();
        let at = self.limiter.next_allowed(now);
        if at > now {
            let table = &self.table;
            let change = summarize(&changes, CHANGES_LOGGED);
            let by = writers.iter().cloned().collect::<Vec<_>>().join(", ");
            let by_text = by_text(&by);
            let delay_ms = at.duration_since(now).as_millis() as u64;
            let streak = self.limiter.streak(now);
            warn!(
                event = "drift_backoff",
                table,
                change,
                by,
                delay_ms,
                streak,
                "table inet {table} changed again ({change}){by_text}: {streak} repairs within a minute, \
                 next repair in {delay_ms} ms"
            );
            self.pending = Some(PendingRepair { at, since, writers });
            return Done::Looked;
        }
        self.repair_now(changes, writers, since, engine, clock)
    }

    /// Re-applies the last good ruleset (the rate limit was consulted), checks the result, records the
    /// repair in the engine's summary and logs it.
    fn repair_now<D: Dataplane, P: Prober>(
        &mut self,
        changes: Vec<String>,
        writers: BTreeSet<String>,
        since: Instant,
        engine: &mut Engine<D, P>,
        clock: &dyn Clock,
    ) -> Done {
        let table = self.table.clone();
        let change = summarize(&changes, CHANGES_LOGGED);
        let by = writers.iter().cloned().collect::<Vec<_>>().join(", ");
        let by_text = by_text(&by);
        let now = clock.now();
        self.limiter.record(now);
        let result = engine.reapply_last_good();
        let latency_ms = clock.now().saturating_duration_since(since).as_millis() as u64;
        // Whatever the re-apply could not undo (e.g. an object the dataplane does not manage).
        let result = result.map_err(|e| e.to_string()).and_then(|()| {
            let remaining = self.verify_repair(engine);
            if remaining.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "the table still differs after re-applying the last good ruleset: {}",
                    summarize(&remaining, CHANGES_LOGGED)
                ))
            }
        });
        engine.record_drift(DriftSummary {
            at: rfc3339(clock.wall()),
            changes,
            by: writers.iter().cloned().collect(),
            repaired: result.is_ok(),
            error: result.as_ref().err().cloned(),
            latency_ms,
        });
        let s = engine.summary();
        let (generation, hash, repairs) = (
            s.generation,
            s.hash.clone().unwrap_or_default(),
            s.drift_repairs,
        );
        match result {
            Ok(()) => warn!(
                event = "drift_repaired",
                table,
                change,
                by,
                latency_ms,
                repairs,
                generation,
                hash,
                "drift repaired: {change}{by_text}; table inet {table} is back to generation \
                 {generation} (sha256:{}) after {latency_ms} ms",
                short(&hash)
            ),
            Err(e) => {
                error!(
                    event = "drift_repair_failed",
                    table,
                    change,
                    by,
                    "table inet {table} changed ({change}){by_text} and the repair failed: {e}; \
                     trying again later"
                );
                self.pending = Some(PendingRepair {
                    at: self.limiter.next_allowed(now).max(clock.now() + RECHECK),
                    since,
                    writers,
                });
            }
        }
        Done::Repaired
    }

    /// After a repair: what still differs from the expectation (nothing, normally). The expectation is
    /// kept as it was, not re-read from the kernel, so that a change the repair could not undo is not
    /// taken for what we applied.
    fn verify_repair<D: Dataplane, P: Prober>(&mut self, engine: &Engine<D, P>) -> Vec<String> {
        let kernel = &engine.summary().kernel;
        if kernel != "ours" {
            return vec![format!("the kernel's table is {}", kernel_text(kernel))];
        }
        let Some(expectation) = self.expectation.as_mut() else {
            return Vec::new();
        };
        match (self.fingerprint)(&self.table, &Known::default()) {
            Ok(Some(print)) => {
                let remaining = diff(expectation, &print);
                if remaining.is_empty() && expectation.baseline.is_none() {
                    expectation.baseline = Some(print);
                }
                remaining
            }
            Ok(None) => vec!["table deleted".to_string()],
            // Cannot tell: the next change looks again.
            Err(_) => Vec::new(),
        }
    }

    /// The waiting repair is due (the rate limit set its time): look again, repair if still needed.
    fn repair_pending<D: Dataplane, P: Prober>(
        &mut self,
        engine: &mut Engine<D, P>,
        clock: &dyn Clock,
    ) -> Done {
        let Some(p) = self.pending.take() else {
            return Done::Looked;
        };
        if self.force_repair {
            let changes = vec![WRITTEN_CHANGED.to_string()];
            let done = self.repair_now(changes, p.writers, p.since, engine, clock);
            self.force_repair = self.pending.is_some();
            return done;
        }
        match self.look(engine, None) {
            Look::InSync => {
                info!(
                    event = "drift_resolved",
                    "table inet {} holds what we applied again; no repair needed", self.table
                );
                Done::Looked
            }
            Look::Unknown(e) => {
                warn!(
                    event = "drift_unknown",
                    "table inet {} cannot be read: {e}; looking again in {RECHECK:?}", self.table
                );
                self.pending = Some(PendingRepair {
                    at: clock.now() + RECHECK,
                    ..p
                });
                Done::Looked
            }
            Look::Drifted(changes) => self.repair_now(changes, p.writers, p.since, engine, clock),
        }
    }
}

/// Whether `now` (read after the checks) still holds, in each chain read right after our write
/// (`written`; the chains of `known`, taken from the previous baseline, aside), the same rules at the
/// same handles, in the same table.
fn still_as_written(written: &TablePrint, now: &TablePrint, known: &Known) -> bool {
    written.table == now.table
        && written
            .chains
            .iter()
            .filter(|(name, _)| !known.chains.contains_key(*name))
            .all(|(name, w)| {
                now.chains
                    .get(name)
                    .is_some_and(|n| n.rules == w.rules && n.handles == w.handles)
            })
}

/// Whether each chain of `edited` (kernel handle of each rule after the edit, None for an inserted
/// one) holds, in `now` (read right after the edit), the rules the edit kept: at those places the
/// handles of the edit, with the rules `previous` (the baseline before it) had at those handles, and
/// new handles at the inserted places. A change someone made to the chain before our edit shows here,
/// as the previous baseline is what we wrote.
pub fn edits_hold(
    edited: &[(String, Vec<Option<u64>>)],
    previous: Option<&TablePrint>,
    now: &TablePrint,
) -> bool {
    edited.iter().all(|(chain, slots)| {
        let (Some(old), Some(new)) = (
            previous.and_then(|p| p.chains.get(chain)),
            now.chains.get(chain),
        ) else {
            return false;
        };
        if old.handles.len() != old.rules.len()
            || new.handles.len() != slots.len()
            || new.rules.len() != slots.len()
        {
            return false;
        }
        let was: std::collections::HashMap<u64, u64> = old
            .handles
            .iter()
            .copied()
            .zip(old.rules.iter().copied())
            .collect();
        slots.iter().enumerate().all(|(i, slot)| match slot {
            Some(h) => new.handles[i] == *h && was.get(h) == Some(&new.rules[i]),
            None => !was.contains_key(&new.handles[i]),
        })
    })
}

fn by_text(by: &str) -> String {
    if by.is_empty() {
        String::new()
    } else {
        format!(" by {by}")
    }
}

/// How `status` names what the kernel held at the last look.
pub fn kernel_text(k: &str) -> &str {
    if k.is_empty() {
        "not inspected"
    } else {
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::nftmon::ChainPrint;

    fn print(chain: &str, rules: &[(u64, u64)]) -> TablePrint {
        let mut p = TablePrint {
            table: 1,
            ..TablePrint::default()
        };
        p.chains.insert(
            chain.into(),
            ChainPrint {
                def: 7,
                handles: rules.iter().map(|r| r.0).collect(),
                rules: rules.iter().map(|r| r.1).collect(),
            },
        );
        p
    }

    #[test]
    fn an_edited_chain_holds_the_edit_only_with_the_kept_rules_of_the_baseline() {
        // Before: rules A B C at handles 1 2 3. The edit inserted one rule between A and B.
        let before = print("ep", &[(1, 0xa), (2, 0xb), (3, 0xc)]);
        let edited = vec![("ep".to_string(), vec![Some(1), None, Some(2), Some(3)])];
        let after = print("ep", &[(1, 0xa), (9, 0xd), (2, 0xb), (3, 0xc)]);
        assert!(edits_hold(&edited, Some(&before), &after));
        // Someone replaced B in place before our edit (same handle, other rule): not what we kept.
        let replaced = print("ep", &[(1, 0xa), (9, 0xd), (2, 0xe), (3, 0xc)]);
        assert!(!edits_hold(&edited, Some(&before), &replaced));
        // Someone deleted C: the chain is a rule short.
        let deleted = print("ep", &[(1, 0xa), (9, 0xd), (2, 0xb)]);
        assert!(!edits_hold(&edited, Some(&before), &deleted));
        // Someone added a rule of their own where ours should be alone.
        let foreign = print("ep", &[(1, 0xa), (9, 0xd), (2, 0xb), (10, 0xf), (3, 0xc)]);
        assert!(!edits_hold(&edited, Some(&before), &foreign));
        // The inserted place holds an old rule (moved by someone): not ours.
        let moved = print("ep", &[(1, 0xa), (3, 0xc), (2, 0xb), (3, 0xc)]);
        assert!(!edits_hold(&edited, Some(&before), &moved));
        // Without a baseline there is nothing to vouch for the kept rules.
        assert!(!edits_hold(&edited, None, &after));
        // No edit: nothing to check.
        assert!(edits_hold(&[], None, &after));
    }
}
