//! `hostpolicyd run`: the long-running service (DESIGN.md "Daemon life cycle").
//!
//! One writer: the main thread owns the engine and is the only code that writes to the kernel or the state
//! directory. Every other thread only turns something into an [`Event`] on one channel:
//!
//! - `notify`'s thread: configuration file events, already filtered ([`watch`]);
//! - the signal thread: SIGHUP (reload), SIGTERM/SIGINT (stop, leaving the table in place) ([`signals`]);
//! - the interface thread: rtnetlink link/address changes ([`crate::host::iface::Monitor`]);
//! - the control socket: `reload` requests, each with a reply channel ([`control`]);
//! - the drift thread: bursts of nftables changes to our table ([`drift`]), which the loop compares with
//!   what it applied and repairs by re-applying the last good ruleset (rate-limited).
//!
//! The loop drains everything pending before acting, so a burst coalesces: file events wait for a quiet
//! period (a few milliseconds, [`watch::SETTLE`], when every event shows a complete file; otherwise
//! [`watch::QUIET`]; capped at [`watch::CAP`]: see [`watch::Settle`]) and then the whole directory is
//! rescanned (during the short quiet period already, kept only if no event comes before it ends); SIGHUP
//! and control-socket reloads run at once and answer every waiting client with the same result. An
//! interface change re-resolves the last valid configuration (IP-matched HostEndpoints follow their
//! addresses) and applies only when the compiled result changed.
//!
//! Boot safety: when the first load finds the configuration invalid or unreadable, the daemon keeps or
//! re-applies the last good ruleset of the state directory (the kernel may have lost our table in a
//! reboot), reports itself degraded (`status`, STATUS=, a warning in the journal) until a valid
//! configuration is applied, and becomes ready in any case so that boot goes on.

pub mod control;
pub mod drift;
pub mod log;
pub mod nftmon;
pub mod signals;
pub mod systemd;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, error, info, warn};

use crate::config::load::{self, Loaded};
use crate::engine::state::{rfc3339, DriftSummary, Store};
use crate::engine::{short, Engine, Kernel, Outcome, Restored};
use crate::exit;
use crate::host::probe::{NetProber, Prober};
use crate::nft::{Dataplane, Netlink};
use crate::pipeline;
use crate::settings::Settings;

use control::{DaemonInfo, Reply, Status};
use drift::{Burst, Expectation, Limiter};
use nftmon::{SetPrint, TablePrint};
use systemd::Notifier;
use watch::{Debouncer, Settle, Watch};

/// Debounce of interface events (an address brings several messages: link, address, DAD...).
const IFACE_QUIET: Duration = Duration::from_millis(100);
const IFACE_CAP: Duration = Duration::from_secs(1);
/// When the kernel could not be read after a drift, look again this much later.
const DRIFT_RECHECK: Duration = Duration::from_secs(1);
/// How many changes a drift log line names.
const DRIFT_CHANGES_LOGGED: usize = 8;

/// Everything the writer loop reacts to.
pub enum Event {
    /// Configuration files changed, appeared or disappeared, and how.
    Files(Vec<(std::path::PathBuf, watch::Change)>),
    /// The configuration directory itself was created, removed or replaced.
    DirReplaced,
    WatchError(String),
    Signal(i32),
    /// Links or addresses changed.
    Interfaces,
    /// `hostpolicyd reload`: reload now and answer on the channel.
    Reload(Sender<Reply>),
    /// nftables changes to our table (a burst, see [`drift`]).
    Drift(Burst),
    /// The drift thread subscribed to nftables changes (Ok), or cannot (why).
    DriftWatch(Result<(), String>),
}

/// Runs the daemon until SIGTERM/SIGINT. Returns the process exit status.
pub fn run(settings: &Settings) -> u8 {
    let log = log::init();
    let (tx, rx) = mpsc::channel();
    if let Err(e) = signals::spawn(tx.clone()) {
        error!(
            event = "startup_failed",
            "cannot install signal handlers: {e}"
        );
        return exit::INTERNAL;
    }
    let listener = match control::bind(&settings.runtime_dir) {
        Ok(l) => l,
        Err(e) => {
            error!(
                event = "startup_failed",
                "cannot open the control socket in {}: {e}",
                settings.runtime_dir.display()
            );
            return exit::INTERNAL;
        }
    };
    let dp = match Netlink::new() {
        Ok(dp) => dp,
        Err(e) => {
            error!(
                event = "startup_failed",
                "cannot open the nftables netlink socket: {e}"
            );
            let _ = std::fs::remove_file(control::socket_path(&settings.runtime_dir));
            return exit::INTERNAL;
        }
    };
    let code = Daemon::new(settings, dp, NetProber, log, tx.clone()).and_then(|mut d| {
        control::spawn(listener, d.status.clone(), tx.clone())
            .map_err(|e| format!("control socket: {e}"))?;
        if let Err(e) = drift::spawn(settings.table.clone(), tx.clone()) {
            warn!(
                event = "drift_unwatched",
                "cannot start the nftables monitor: {e}; our table is not guarded against changes by others"
            );
            d.info.drift_watch = format!("unavailable: {e}");
        }
        spawn_interface_monitor(tx);
        Ok(d.run(rx))
    });
    let _ = std::fs::remove_file(control::socket_path(&settings.runtime_dir));
    code.unwrap_or_else(|e| {
        error!(event = "startup_failed", "{e}");
        exit::INTERNAL
    })
}

fn spawn_interface_monitor(tx: Sender<Event>) {
    let spawned = std::thread::Builder::new()
        .name("interfaces".into())
        .spawn(move || loop {
            let mut monitor = match crate::host::iface::Monitor::new() {
                Ok(m) => m,
                Err(e) => {
                    warn!(
                        event = "interfaces_unwatched",
                        "cannot subscribe to interface changes: {e}; retrying in 5 s"
                    );
                    std::thread::sleep(Duration::from_secs(5));
                    continue;
                }
            };
            loop {
                match monitor.wait() {
                    Ok(false) => {}
                    Ok(true) => {
                        if tx.send(Event::Interfaces).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(
                            event = "interfaces_unwatched",
                            "interface monitor: {e}; resubscribing"
                        );
                        // Something may have changed while we could not listen.
                        let _ = tx.send(Event::Interfaces);
                        std::thread::sleep(Duration::from_secs(1));
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!(
            event = "interfaces_unwatched",
            "cannot start the interface monitor: {e}"
        );
    }
}

/// The directory read and compiled.
type Built = Result<pipeline::Compiled, pipeline::Invalid>;

/// The configuration files' `(name, text)` pairs a [`Built`] was made from.
type Sources = Vec<(String, String)>;

/// What triggered a reload, for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Start,
    Files,
    Sighup,
    Control,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Files => "file change",
            Trigger::Sighup => "SIGHUP",
            Trigger::Control => "hostpolicyd reload",
        }
    }
}

pub struct Daemon<D: Dataplane, P: Prober> {
    settings: Settings,
    engine: Engine<D, P>,
    store: Store,
    status: Arc<Mutex<Status>>,
    notifier: Notifier,
    watch: Option<Watch>,
    /// The texts of the last configuration that validated: parsed and resolved again when interfaces
    /// change. The texts rather than the model: a tenth of the memory (10,000 policies: 3 MiB of YAML,
    /// ~30 MiB of model), and the daemon's peak is a reload, when the old and the new one coexist.
    sources: Option<Sources>,
    info: DaemonInfo,
    /// What the kernel must hold while we guard our table; None when there is nothing of ours to guard
    /// (nothing applied yet, a first-start rollback removed our table, a foreign table of our name).
    guard: Option<Expectation>,
    limiter: Limiter,
    /// A repair waiting for the rate limit.
    pending_repair: Option<PendingRepair>,
    /// The kernel could not be read after a drift: look again then.
    recheck_at: Option<Instant>,
    /// Reads our table back from the kernel ([`nftmon::fingerprint_reusing`]; replaceable in tests).
    fingerprint: Fingerprinter,
}

/// Reads table `inet NAME` back, taking the elements of the given sets as known (see
/// [`nftmon::fingerprint_reusing`]).
type Fingerprinter =
    Box<dyn FnMut(&str, &BTreeMap<String, SetPrint>) -> std::io::Result<Option<TablePrint>> + Send>;

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

/// Returns the heap a reload freed to the kernel. A reload of a large configuration allocates tens of
/// MiB for a moment (the model, the new ruleset, the netlink transaction); glibc keeps freed memory
/// for reuse, so without this the resident size of an idle daemon stays at its last peak and grows
/// with fragmentation from one reload to the next (measured with 10,000 policies: 76 → 93 → 104 MiB
/// over three reloads).
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it has no
    // preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl<D: Dataplane, P: Prober> Daemon<D, P> {
    pub fn new(
        settings: &Settings,
        dp: D,
        prober: P,
        log: &str,
        tx: Sender<Event>,
    ) -> Result<Self, String> {
        let store = Store::new(&settings.state_dir);
        let mut engine = Engine::new(dp, prober, &settings.node, &settings.table);
        let last_good = match store.load_last_good() {
            Ok(l) => l.map(|l| l.ruleset),
            Err(e) => {
                warn!(
                    event = "state_unreadable",
                    "ignoring the last good ruleset: {e}"
                );
                None
            }
        };
        let summary = store.load_summary().unwrap_or_else(|e| {
            warn!(
                event = "state_unreadable",
                "ignoring the stored summary: {e}"
            );
            None
        });
        engine.restore(last_good, summary);
        let watch = match Watch::start(&settings.config_dir, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                error!(
                    event = "watch_failed",
                    "cannot watch {}: {e}; only SIGHUP and `hostpolicyd reload` will reload",
                    settings.config_dir.display()
                );
                None
            }
        };
        let info = DaemonInfo {
            pid: std::process::id(),
            started_at: rfc3339(SystemTime::now()),
            config_dir: settings.config_dir.display().to_string(),
            state_dir: settings.state_dir.display().to_string(),
            log: log.to_string(),
            ..DaemonInfo::default()
        };
        let status = Arc::new(Mutex::new(Status {
            daemon: Some(info.clone()),
            summary: engine.summary().clone(),
        }));
        Ok(Daemon {
            settings: settings.clone(),
            engine,
            store,
            status,
            notifier: Notifier::from_env(),
            watch,
            sources: None,
            info,
            guard: None,
            limiter: Limiter::default(),
            pending_repair: None,
            recheck_at: None,
            fingerprint: Box::new(nftmon::fingerprint_reusing),
        })
    }

    /// Replaces how our table is read back from the kernel (tests without a kernel).
    pub fn with_fingerprinter(
        mut self,
        f: impl FnMut(&str) -> std::io::Result<Option<TablePrint>> + Send + 'static,
    ) -> Self {
        let mut f = f;
        self.fingerprint = Box::new(move |table, _| f(table));
        self
    }

    /// The writer loop.
    pub fn run(&mut self, rx: Receiver<Event>) -> u8 {
        info!(
            event = "started",
            node = self.settings.node,
            table = self.settings.table,
            config_dir = %self.settings.config_dir.display(),
            "hostpolicyd started: node {}, table inet {}, watching {}",
            self.settings.node,
            self.settings.table,
            self.settings.config_dir.display()
        );
        let first = self.reload(Trigger::Start);
        if matches!(first, Outcome::Invalid { .. }) {
            self.start_degraded();
        }
        let mut ready = self.status_line();
        if !matches!(first, Outcome::Applied { .. } | Outcome::Unchanged { .. })
            && self.engine.summary().degraded.is_none()
        {
            ready = format!(
                "{ready} (first configuration not applied: running with what the kernel holds)"
            );
        }
        self.notifier.ready(&ready);

        let mut files = Settle::default();
        let mut ifaces = Debouncer::new(IFACE_QUIET, IFACE_CAP);
        // The directory read and compiled while the short quiet period of complete files runs
        // ([`watch::SETTLE`]): used by the reload when no file or interface event came since it started,
        // so that the quiet period costs no time of its own. Any such event throws it away.
        let mut early: Option<(Built, Sources)> = None;
        let watchdog = self.notifier.watchdog_interval();
        let mut next_ping = watchdog.map(|w| Instant::now() + w);
        if watchdog.is_some() {
            self.notifier.watchdog();
        }
        loop {
            let now = Instant::now();
            let wake = [
                files.deadline(),
                ifaces.deadline(),
                next_ping,
                self.pending_repair.as_ref().map(|p| p.at),
                self.recheck_at,
            ]
            .into_iter()
            .flatten()
            .min();
            let first = match wake {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(now)) {
                    Ok(ev) => Some(ev),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return exit::INTERNAL,
                },
                None => match rx.recv() {
                    Ok(ev) => Some(ev),
                    Err(_) => return exit::INTERNAL,
                },
            };
            // Drain: everything already queued is part of the same burst.
            let mut waiters: Vec<Sender<Reply>> = Vec::new();
            let mut now_trigger: Option<Trigger> = None;
            let mut stop: Option<i32> = None;
            let mut drifted: Option<Burst> = None;
            for ev in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                let at = Instant::now();
                if matches!(
                    ev,
                    Event::Files(_) | Event::DirReplaced | Event::WatchError(_) | Event::Interfaces
                ) {
                    early = None;
                }
                match ev {
                    Event::Files(changes) => {
                        for (path, change) in changes {
                            files.touch(at, &path, change);
                        }
                    }
                    Event::DirReplaced => {
                        if let Some(w) = self.watch.as_mut() {
                            if let Err(e) = w.rewatch() {
                                warn!(
                                    event = "watch_failed",
                                    "configuration directory {} is gone or unwatchable: {e}",
                                    self.settings.config_dir.display()
                                );
                            }
                        }
                        files.touch_unsure(at);
                    }
                    Event::WatchError(e) => {
                        warn!(event = "watch_failed", "file watch: {e}; rescanning");
                        files.touch_unsure(at);
                    }
                    Event::Interfaces => ifaces.touch(at),
                    Event::Signal(sig) if sig == signal_hook::consts::SIGHUP => {
                        now_trigger.get_or_insert(Trigger::Sighup);
                    }
                    Event::Signal(sig) => stop = Some(sig),
                    Event::Reload(reply) => {
                        waiters.push(reply);
                        now_trigger = Some(Trigger::Control);
                    }
                    Event::Drift(b) => {
                        drifted = Some(match drifted.take() {
                            Some(a) => a.merge(b),
                            None => b,
                        })
                    }
                    Event::DriftWatch(r) => {
                        self.info.drift_watch = match r {
                            Ok(()) => "active".into(),
                            Err(e) => format!("unavailable: {e}"),
                        };
                        self.publish();
                    }
                }
            }
            if let Some(sig) = stop {
                let line = format!(
                    "stopping on {}; table inet {} left in place",
                    signals::name(sig),
                    self.settings.table
                );
                info!(event = "stopped", signal = signals::name(sig), "{line}");
                self.notifier.stopping(&line);
                for w in waiters {
                    let _ = w.send(Reply {
                        result: "failed".into(),
                        exit_code: exit::APPLY_FAILED,
                        message: "the daemon is stopping".into(),
                        diagnostics: vec![],
                        generation: self.engine.summary().generation,
                        hash: self.engine.summary().hash.clone(),
                    });
                }
                return exit::OK;
            }
            let now = Instant::now();
            if let Some(next) = next_ping {
                if now >= next {
                    self.notifier.watchdog();
                    next_ping = watchdog.map(|w| now + w);
                }
            }
            let trigger = now_trigger.or_else(|| files.due(now).then_some(Trigger::Files));
            if let Some(trigger) = trigger {
                // A full rescan covers pending file and interface events too.
                files.clear();
                ifaces.clear();
                self.notifier
                    .reloading(&format!("reloading ({})", trigger.name()));
                let prepared = early.take().filter(|_| trigger == Trigger::Files);
                let outcome = self.reload_with(trigger, prepared);
                let reply = self.reply(&outcome);
                for w in waiters {
                    let _ = w.send(reply.clone());
                }
                self.notifier.ready(&self.status_line());
            } else if ifaces.due(now) {
                ifaces.clear();
                if let Some(outcome) = self.interfaces_changed() {
                    if !matches!(outcome, Outcome::Unchanged { .. }) {
                        self.notifier.status(&self.status_line());
                    }
                }
            }
            // After any reload of this round: a reload that rewrote the table settles the drift too.
            if let Some(burst) = drifted {
                self.drift(burst);
            }
            let now = Instant::now();
            if self.pending_repair.as_ref().is_some_and(|p| now >= p.at) {
                self.repair_pending();
            }
            if self.recheck_at.is_some_and(|at| now >= at) {
                self.recheck_at = None;
                self.drift(Burst::unknown(now));
            }
            if early.is_none() && files.pending() && files.quiet() < watch::QUIET {
                early = Some(self.build());
            }
        }
    }

    /// Loads and validates the whole directory, compiles for the current interfaces, reconciles.
    fn reload(&mut self, trigger: Trigger) -> Outcome {
        self.reload_with(trigger, None)
    }

    /// [`Daemon::reload`], with the directory already read and compiled ([`Daemon::build`]) when nothing
    /// happened since.
    fn reload_with(&mut self, trigger: Trigger, prepared: Option<(Built, Sources)>) -> Outcome {
        self.info.reloads += 1;
        self.set_busy(true);
        let (built, sources) = prepared.unwrap_or_else(|| self.build());
        if let Ok(c) = &built {
            log::warnings(&c.warnings);
        }
        let outcome = self.reconcile(built.as_ref(), trigger.name());
        if built.is_ok() {
            // A valid configuration replaces the last one whatever the apply's outcome.
            self.sources = Some(sources);
        }
        drop(built);
        give_back_free_memory();
        outcome
    }

    /// Reads and validates the whole directory and compiles it for the current interfaces.
    fn build(&self) -> (Built, Sources) {
        let (sources, problems) = load::read_dir(&self.settings.config_dir);
        let built = self.compile(load::parse_sources(&sources, problems));
        (built, sources)
    }

    fn compile(&self, loaded: Loaded) -> Built {
        pipeline::build(
            loaded,
            &self.settings.node,
            &self.interfaces(),
            &self.settings.table,
            false,
        )
    }

    /// Re-resolves the last valid configuration for the interfaces as they are now.
    fn interfaces_changed(&mut self) -> Option<Outcome> {
        let sources = self.sources.as_ref()?;
        // Valid when it was loaded: only the interfaces' addresses can change the result.
        let loaded = load::load_sources(sources);
        self.info.interface_updates += 1;
        self.set_busy(true);
        let built = self.compile(loaded);
        let outcome = self.reconcile(built.as_ref(), "interfaces");
        drop(built);
        give_back_free_memory();
        Some(outcome)
    }

    fn reconcile(
        &mut self,
        built: Result<&pipeline::Compiled, &pipeline::Invalid>,
        trigger: &str,
    ) -> Outcome {
        let now = SystemTime::now();
        let outcome = self.engine.reconcile(built, now);
        log::outcome(&outcome, trigger, &self.settings.table);
        if matches!(outcome, Outcome::Invalid { .. }) {
            // Nothing applied: say what the kernel holds (a read, never a write).
            self.engine.inspect_kernel();
        }
        match &outcome {
            Outcome::Applied { .. }
            | Outcome::RolledBack {
                restored: Restored::Previous { .. },
                ..
            } => self.arm(),
            Outcome::Unchanged { hash, .. } => {
                if self.guard.as_ref().map(|g| &g.hash) != Some(hash) {
                    self.arm();
                }
            }
            // Our table is gone on purpose, or the kernel holds a ruleset we cannot put back: not ours
            // to guard until the next apply.
            Outcome::RolledBack {
                restored: Restored::Flushed,
                ..
            }
            | Outcome::Failed {
                new_in_force: true, ..
            } => self.guard = None,
            Outcome::Invalid { .. } | Outcome::NotRetried { .. } | Outcome::Failed { .. } => {}
        }
        self.save_state(now);
        self.set_busy(false);
        outcome
    }

    fn save_state(&mut self, now: SystemTime) {
        if let Err(e) = self.engine.save_state(&self.store, now) {
            warn!(
                event = "state_unwritable",
                "cannot write the state directory {}: {e}",
                self.store.dir().display()
            );
        }
    }

    /// The first load found the configuration invalid or unreadable. Keeps or restores the last good
    /// ruleset and says that the daemon is degraded (see the module documentation).
    fn start_degraded(&mut self) {
        let table = self.settings.table.clone();
        let state = self.store.dir().display().to_string();
        let s = self.engine.summary();
        let last_good = match (&s.hash, self.engine.last_good()) {
            (Some(h), Some(_)) => {
                Some(format!("generation {} (sha256:{})", s.generation, short(h)))
            }
            _ => None,
        };
        let (reason, applied) = match (s.kernel.as_str(), last_good) {
            ("none", Some(lg)) => match self.engine.reapply_last_good() {
                Ok(()) => (
                    format!(
                        "configuration invalid at start: applied the last good ruleset, {lg}, from {state}; \
                         fix the configuration to leave this state"
                    ),
                    true,
                ),
                Err(e) => (
                    format!(
                        "configuration invalid at start and the last good ruleset ({lg}) could not be \
                         applied: {e}; no hostpolicyd table in force"
                    ),
                    false,
                ),
            },
            ("none", None) => (
                format!(
                    "configuration invalid at start and there is no last good ruleset in {state}: \
                     nothing applied, no hostpolicyd table in force"
                ),
                false,
            ),
            ("ours", Some(lg)) => (
                format!(
                    "configuration invalid at start: the last good ruleset, {lg}, stays in force; \
                     fix the configuration to leave this state"
                ),
                true,
            ),
            (kernel, _) => (
                format!(
                    "configuration invalid at start; table inet {table} holds {kernel}: left as it is"
                ),
                false,
            ),
        };
        if applied {
            self.arm();
        }
        warn!(event = "degraded", table, "{reason}");
        self.engine.set_degraded(Some(reason));
        self.save_state(SystemTime::now());
        self.publish();
    }

    /// Starts guarding our table as the kernel holds it now (right after our own write): the
    /// expectation that drift is judged against.
    fn arm(&mut self) {
        let Some(ruleset) = self.engine.last_good() else {
            self.guard = None;
            return;
        };
        if self.engine.summary().hash.is_none() {
            self.guard = None;
            return;
        }
        // The sets this write left as they were are not read back (see `fingerprint_reusing`).
        let sets = drift::set_digests(ruleset);
        let known = self
            .guard
            .as_ref()
            .map(|g| g.unchanged_sets(&sets))
            .unwrap_or_default();
        let kernel = match (self.fingerprint)(&self.settings.table, &known) {
            Ok(p) => p,
            Err(e) => {
                debug!(
                    event = "drift_baseline_unreadable",
                    "cannot read table inet {} back: {e}; judging drift by its layout only",
                    self.settings.table
                );
                None
            }
        };
        let (Some(ruleset), Some(hash)) = (self.engine.last_good(), &self.engine.summary().hash)
        else {
            self.guard = None;
            return;
        };
        let (expectation, fits) = Expectation::with_sets(hash, ruleset, kernel, sets);
        if !fits {
            warn!(
                event = "drift_layout",
                "right after our own write, table inet {} does not hold the compiled chains, rule counts \
                 and sets; drift is judged against what the kernel held then",
                self.settings.table
            );
        }
        self.guard = Some(expectation);
    }

    /// A burst of nftables changes to our table: compare, and repair when someone else changed it.
    fn drift(&mut self, burst: Burst) {
        self.info.drift_checks += 1;
        if self.guard.is_none() {
            debug!(
                event = "drift_unguarded",
                own = burst.own,
                foreign = burst.foreign,
                "nftables changes to table inet {}, which holds nothing of ours to guard",
                self.settings.table
            );
            self.publish();
            return;
        }
        if let Some(p) = self.pending_repair.as_mut() {
            // A repair is already waiting: it looks at the kernel again when it runs.
            drift::add_writers(&mut p.writers, burst.writers);
            self.publish();
            return;
        }
        match self.look(Some(&burst)) {
            Look::InSync if burst.foreign > 0 => {
                let by = burst.writers.iter().cloned().collect::<Vec<_>>().join(", ");
                info!(
                    event = "drift_none",
                    own = burst.own,
                    foreign = burst.foreign,
                    by,
                    "table inet {} was written to by {} but still holds what we applied (stateful \
                     objects and flowtables are not compared)",
                    self.settings.table,
                    if by.is_empty() {
                        "another process"
                    } else {
                        by.as_str()
                    }
                )
            }
            Look::InSync => debug!(
                event = "drift_none",
                own = burst.own,
                foreign = burst.foreign,
                lost = burst.lost,
                "table inet {} holds what we applied",
                self.settings.table
            ),
            Look::Unknown(e) => {
                warn!(
                    event = "drift_unknown",
                    "nftables changed and table inet {} cannot be read: {e}; looking again in {DRIFT_RECHECK:?}",
                    self.settings.table
                );
                self.recheck_at = Some(Instant::now() + DRIFT_RECHECK);
            }
            Look::Drifted(changes) => self.repair(changes, burst.writers, burst.since),
        }
        self.publish();
    }

    /// Compares the kernel with the guard (see [`drift`]). `burst`: the changes that prompted the look.
    fn look(&mut self, burst: Option<&Burst>) -> Look {
        let Some(guard) = self.guard.as_ref() else {
            return Look::InSync;
        };
        let table = &self.settings.table;
        let deleted = || match burst.map_or(0, |b| b.other_tables_deleted) {
            0 => "table deleted".to_string(),
            n => format!(
                "table deleted, with {n} other table{} (ruleset flushed)",
                if n == 1 { "" } else { "s" }
            ),
        };
        match self.engine.inspect_kernel() {
            Kernel::None => Look::Drifted(vec![deleted()]),
            Kernel::Unknown(e) => Look::Unknown(e),
            Kernel::Table(h) if h != guard.hash => Look::Drifted(vec![if h.is_empty() {
                "table replaced by one hostpolicyd did not write".to_string()
            } else {
                format!("table replaced (content sha256:{})", short(&h))
            }]),
            Kernel::Table(_) if burst.is_some_and(Burst::only_own) => Look::InSync,
            Kernel::Table(_) => match (self.fingerprint)(table, &BTreeMap::new()) {
                Ok(None) => Look::Drifted(vec![deleted()]),
                Ok(Some(print)) => {
                    let changes = drift::diff(guard, &print);
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
    fn repair(&mut self, changes: Vec<String>, writers: BTreeSet<String>, since: Instant) {
        let table = self.settings.table.clone();
        let change = drift::summarize(&changes, DRIFT_CHANGES_LOGGED);
        let by = writers.iter().cloned().collect::<Vec<_>>().join(", ");
        let by_text = if by.is_empty() {
            String::new()
        } else {
            format!(" by {by}")
        };
        let now = Instant::now();
        let at = self.limiter.next_allowed(now);
        if at > now {
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
            self.pending_repair = Some(PendingRepair { at, since, writers });
            return;
        }
        self.repair_now(changes, writers, since);
    }

    /// Re-applies the last good ruleset (the rate limit was consulted), checks the result, records and
    /// logs the repair.
    fn repair_now(&mut self, changes: Vec<String>, writers: BTreeSet<String>, since: Instant) {
        let table = self.settings.table.clone();
        let change = drift::summarize(&changes, DRIFT_CHANGES_LOGGED);
        let by = writers.iter().cloned().collect::<Vec<_>>().join(", ");
        let by_text = if by.is_empty() {
            String::new()
        } else {
            format!(" by {by}")
        };
        let now = Instant::now();
        self.limiter.record(now);
        let result = self.engine.reapply_last_good();
        let latency_ms = since.elapsed().as_millis() as u64;
        // Whatever the re-apply could not undo (e.g. an object the dataplane does not manage).
        let result = result.map_err(|e| e.to_string()).and_then(|()| {
            let remaining = self.verify_repair();
            if remaining.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "the table still differs after re-applying the last good ruleset: {}",
                    drift::summarize(&remaining, DRIFT_CHANGES_LOGGED)
                ))
            }
        });
        let wall = SystemTime::now();
        self.engine.record_drift(DriftSummary {
            at: rfc3339(wall),
            changes,
            by: writers.iter().cloned().collect(),
            repaired: result.is_ok(),
            error: result.as_ref().err().cloned(),
            latency_ms,
        });
        let s = self.engine.summary();
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
                self.pending_repair = Some(PendingRepair {
                    at: self
                        .limiter
                        .next_allowed(now)
                        .max(Instant::now() + DRIFT_RECHECK),
                    since,
                    writers,
                });
            }
        }
        self.save_state(wall);
        self.notifier.status(&self.status_line());
    }

    /// After a repair: what still differs from the guard (nothing, normally). The guard is kept as it
    /// was, not re-read from the kernel, so that a change the repair could not undo is not taken for
    /// what we applied.
    fn verify_repair(&mut self) -> Vec<String> {
        if self.engine.summary().kernel != "ours" {
            return vec![format!(
                "the kernel's table is {}",
                kernel_text(&self.engine.summary().kernel)
            )];
        }
        let Some(guard) = self.guard.as_mut() else {
            return Vec::new();
        };
        match (self.fingerprint)(&self.settings.table, &BTreeMap::new()) {
            Ok(Some(print)) => {
                let remaining = drift::diff(guard, &print);
                if remaining.is_empty() && guard.baseline.is_none() {
                    guard.baseline = Some(print);
                }
                remaining
            }
            Ok(None) => vec!["table deleted".to_string()],
            // Cannot tell: the next change looks again.
            Err(_) => Vec::new(),
        }
    }

    /// The waiting repair is due (the rate limit set its time): look again, repair if still needed.
    fn repair_pending(&mut self) {
        let Some(p) = self.pending_repair.take() else {
            return;
        };
        match self.look(None) {
            Look::InSync => info!(
                event = "drift_resolved",
                "table inet {} holds what we applied again; no repair needed", self.settings.table
            ),
            Look::Unknown(e) => {
                warn!(
                    event = "drift_unknown",
                    "table inet {} cannot be read: {e}; looking again in {DRIFT_RECHECK:?}",
                    self.settings.table
                );
                self.pending_repair = Some(PendingRepair {
                    at: Instant::now() + DRIFT_RECHECK,
                    ..p
                });
            }
            Look::Drifted(changes) => self.repair_now(changes, p.writers, p.since),
        }
        self.publish();
    }

    fn interfaces(&self) -> Vec<crate::resolve::Interface> {
        crate::host::iface::current().unwrap_or_else(|e| {
            warn!(
                event = "interfaces_unknown",
                "cannot list interfaces ({e}); IP-matched HostEndpoints match nothing"
            );
            Vec::new()
        })
    }

    /// Publishes the summary for `status`.
    fn set_busy(&mut self, busy: bool) {
        self.info.busy = busy;
        self.publish();
    }

    fn publish(&self) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.daemon = Some(self.info.clone());
        s.summary = self.engine.summary().clone();
    }

    fn reply(&self, outcome: &Outcome) -> Reply {
        let diagnostics = match outcome {
            Outcome::Invalid { diagnostics } => diagnostics.iter().map(|d| d.to_string()).collect(),
            _ => Vec::new(),
        };
        let s = self.engine.summary();
        Reply {
            result: outcome.kind().to_string(),
            exit_code: outcome.exit_code(),
            message: outcome.message(&self.settings.table),
            diagnostics,
            generation: s.generation,
            hash: s.hash.clone(),
        }
    }

    /// STATUS=: what is in force, and the last result.
    fn status_line(&self) -> String {
        let s = self.engine.summary();
        let in_force = match &s.hash {
            Some(h) if s.kernel == "ours" => {
                let policies: std::collections::BTreeSet<&str> = s
                    .endpoints
                    .iter()
                    .flat_map(|e| {
                        e.policies
                            .iter()
                            .flat_map(|p| p.policies.iter().map(String::as_str))
                    })
                    .collect();
                format!(
                    "generation {} (sha256:{}): {} host endpoint{}, {} polic{}",
                    s.generation,
                    short(h),
                    s.endpoints.len(),
                    if s.endpoints.len() == 1 { "" } else { "s" },
                    policies.len(),
                    if policies.len() == 1 { "y" } else { "ies" }
                )
            }
            _ => format!(
                "no ruleset of ours in force (kernel table: {})",
                kernel_text(&s.kernel)
            ),
        };
        let last = match (&s.last_result, &s.last_error) {
            (Some(r), Some(e)) if r == "invalid" || r == "failed" => {
                format!("; last reload {r}: {}", e.message)
            }
            (Some(r), _) => format!("; last reload {r}"),
            (None, _) => String::new(),
        };
        let degraded = match &s.degraded {
            Some(reason) => format!("DEGRADED: {reason}; "),
            None => String::new(),
        };
        let repairs = match s.drift_repairs {
            0 => String::new(),
            n => format!("; {n} drift repair{}", if n == 1 { "" } else { "s" }),
        };
        format!("{degraded}{in_force}{last}{repairs}")
    }
}

fn kernel_text(k: &str) -> &str {
    if k.is_empty() {
        "not inspected"
    } else {
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{Kernel1, Script};

    fn settings(tag: &str) -> (Settings, std::path::PathBuf) {
        let root =
            std::env::temp_dir().join(format!("hostpolicyd-loop-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("config")).unwrap();
        let s = Settings {
            config_dir: root.join("config"),
            node: "node1".into(),
            table: "hostpolicy".into(),
            state_dir: root.join("state"),
            runtime_dir: root.join("run"),
        };
        (s, root)
    }

    #[test]
    fn a_change_during_the_early_build_is_what_gets_applied() {
        let (settings, root) = settings("early");
        let file = settings.config_dir.join("a.yaml");
        let hep = |iface: &str| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: h}}\n\
                 spec: {{node: node1, interfaceName: {iface}}}\n"
            )
        };
        let hash = |dir: &std::path::Path| {
            let c = pipeline::build_dir(dir, "node1", &[], "hostpolicy").unwrap();
            crate::compile::content_hash(&c.ruleset)
        };
        std::fs::write(&file, hep("eth0")).unwrap();
        let (tx, rx) = mpsc::channel();
        let d = Daemon::new(
            &settings,
            Kernel1::default(),
            Script::default(),
            "stderr",
            tx.clone(),
        )
        .unwrap();
        let status = d.status.clone();
        let mut d = d;
        let writer = std::thread::spawn(move || d.run(rx));
        let generation = || status.lock().unwrap().summary.generation;
        let deadline = Instant::now() + Duration::from_secs(20);
        while generation() < 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A save, then another before the short quiet period is over: the loop has started reading the
        // directory early (or not yet); either way the second contents are applied.
        let changed = |iface: &str| {
            std::fs::write(&file, hep(iface)).unwrap();
            let ev = vec![(file.clone(), watch::Change::Written)];
            tx.send(Event::Files(ev)).unwrap();
        };
        changed("eth1");
        std::thread::sleep(Duration::from_millis(3));
        changed("eth2");
        let want = hash(&settings.config_dir);
        let applied = || status.lock().unwrap().summary.hash.clone();
        while applied().as_ref() != Some(&want) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Nothing more happens once the last contents are in force.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(applied(), Some(want));
        tx.send(Event::Signal(signal_hook::consts::SIGTERM))
            .unwrap();
        assert_eq!(writer.join().unwrap(), exit::OK);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_burst_of_requests_coalesces_into_one_reload_and_every_client_gets_its_result() {
        let (settings, root) = settings("burst");
        let (tx, rx) = mpsc::channel();
        let mut d = Daemon::new(
            &settings,
            Kernel1::default(),
            Script::default(),
            "stderr",
            tx.clone(),
        )
        .unwrap();
        let status = d.status.clone();
        // Queued before the loop starts: it drains them together after the first (start) reload.
        let mut replies = Vec::new();
        for i in 0..3 {
            let (rtx, rrx) = mpsc::channel();
            tx.send(Event::Reload(rtx)).unwrap();
            replies.push(rrx);
            tx.send(if i == 1 {
                Event::Signal(signal_hook::consts::SIGHUP)
            } else {
                Event::Files(vec![(
                    settings.config_dir.join("a.yaml"),
                    watch::Change::Written,
                )])
            })
            .unwrap();
        }
        let writer = std::thread::spawn(move || d.run(rx));
        let answers: Vec<Reply> = replies
            .iter()
            .map(|r| r.recv_timeout(Duration::from_secs(20)).unwrap())
            .collect();
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
        assert_eq!(answers[0].exit_code, 0, "{answers:?}");
        assert_eq!(
            answers[0].result, "unchanged",
            "the start reload applied it already: {answers:?}"
        );
        tx.send(Event::Signal(signal_hook::consts::SIGTERM))
            .unwrap();
        assert_eq!(writer.join().unwrap(), exit::OK);
        let s = status.lock().unwrap().clone();
        assert_eq!(
            s.daemon.unwrap().reloads,
            2,
            "start + one coalesced reload (files already covered by it)"
        );
        assert_eq!(s.summary.applies, 1);
        assert!(
            root.join("state")
                .join(crate::engine::state::LAST_GOOD_FILE)
                .exists(),
            "last good saved"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn foreign_burst() -> Burst {
        let mut b = Burst::unknown(Instant::now());
        b.lost = false;
        b.foreign = 3;
        b.writers.insert("nft (pid 7)".into());
        b
    }

    #[test]
    fn drift_is_repaired_own_writes_are_not_and_a_persistent_adversary_is_rate_limited() {
        let (settings, root) = settings("drift");
        let (tx, _rx) = mpsc::channel();
        let mut d = Daemon::new(
            &settings,
            Kernel1::default(),
            Script::default(),
            "stderr",
            tx,
        )
        .unwrap()
        .with_fingerprinter(|_| Err(std::io::Error::other("no kernel here")));
        assert_eq!(d.reload(Trigger::Start).kind(), "applied");
        let good = d.engine.dataplane().table.clone().unwrap();
        let writes = |d: &mut Daemon<Kernel1, Script>| d.engine.dataplane().calls.len();
        assert_eq!(writes(&mut d), 1);

        // Our own write, table as applied: nothing to do, not even a fingerprint.
        let mut own = Burst::unknown(Instant::now());
        own.lost = false;
        own.own = 40;
        d.drift(own);
        assert_eq!(writes(&mut d), 1);

        // Someone deleted the table.
        d.engine.dataplane().table = None;
        d.drift(foreign_burst());
        assert_eq!(d.engine.dataplane().table.as_ref(), Some(&good));
        assert_eq!(writes(&mut d), 2);
        let s = d.engine.summary().clone();
        assert_eq!(s.drift_repairs, 1);
        assert_eq!(s.kernel, "ours");
        let last = s.last_drift.unwrap();
        assert_eq!(last.changes, ["table deleted"]);
        assert_eq!(last.by, ["nft (pid 7)"]);
        assert!(last.repaired);
        assert_eq!(
            (s.generation, s.applies),
            (1, 1),
            "a repair is no new ruleset"
        );
        assert!(
            d.status_line().ends_with("; 1 drift repair"),
            "{}",
            d.status_line()
        );

        // A foreign write that left the table as we wrote it: no repair (a wrong attribution cannot
        // start a loop).
        d.drift(foreign_burst());
        assert_eq!(writes(&mut d), 2);

        // Replaced by a table of another content.
        let mut other = good.clone();
        other.comment = "hostpolicyd sha256:0000".into();
        d.engine.dataplane().table = Some(other);
        d.drift(foreign_burst());
        assert_eq!(d.engine.dataplane().table.as_ref(), Some(&good));
        assert_eq!(
            d.engine.summary().last_drift.as_ref().unwrap().changes,
            ["table replaced (content sha256:0000)"]
        );

        // A persistent adversary: after the free repairs, the next one waits.
        for _ in 2..Limiter::FREE {
            d.engine.dataplane().table = None;
            d.drift(foreign_burst());
        }
        assert_eq!(d.engine.summary().drift_repairs, u64::from(Limiter::FREE));
        let before = writes(&mut d);
        d.engine.dataplane().table = None;
        d.drift(foreign_burst());
        assert_eq!(writes(&mut d), before, "no repair yet: backing off");
        let pending = d.pending_repair.clone().expect("a repair is scheduled");
        assert!(pending.at > Instant::now() + Duration::from_millis(500));
        // More changes meanwhile do not add repairs; the scheduled one runs when it is due.
        d.drift(foreign_burst());
        assert_eq!(writes(&mut d), before);
        d.pending_repair.as_mut().unwrap().at = Instant::now();
        d.repair_pending();
        assert_eq!(writes(&mut d), before + 1);
        assert_eq!(d.engine.dataplane().table.as_ref(), Some(&good));
        assert!(d.pending_repair.is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_change_the_repair_cannot_undo_is_a_failed_repair_not_a_new_baseline() {
        let (settings, root) = settings("undo");
        let (tx, _rx) = mpsc::channel();
        let kernel = Arc::new(Mutex::new(TablePrint::default()));
        let k = kernel.clone();
        let mut d = Daemon::new(
            &settings,
            Kernel1::default(),
            Script::default(),
            "stderr",
            tx,
        )
        .unwrap()
        .with_fingerprinter(move |_| Ok(Some(k.lock().unwrap().clone())));
        assert_eq!(d.reload(Trigger::Start).kind(), "applied");
        // Someone adds a chain that re-applying does not remove.
        kernel
            .lock()
            .unwrap()
            .chains
            .insert("intruder".into(), Default::default());
        d.drift(foreign_burst());
        let s = d.engine.summary().clone();
        let last = s.last_drift.unwrap();
        assert_eq!(last.changes, ["chain intruder added"]);
        assert!(!last.repaired);
        assert!(
            last.error.as_deref().unwrap().contains("still differs"),
            "{last:?}"
        );
        assert_eq!(s.drift_repairs, 0);
        assert!(d.pending_repair.is_some(), "tried again later");
        // The intruder is not taken for ours: once gone, nothing is left to repair.
        kernel.lock().unwrap().chains.remove("intruder");
        d.pending_repair.as_mut().unwrap().at = Instant::now();
        let writes = d.engine.dataplane().calls.len();
        d.repair_pending();
        assert_eq!(
            d.engine.dataplane().calls.len(),
            writes,
            "in sync: no write"
        );
        assert!(d.pending_repair.is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn invalid_configuration_at_start_applies_the_last_good_and_is_degraded() {
        let (settings, root) = settings("boot");
        // A previous run applied a ruleset and saved it.
        {
            let (tx, _rx) = mpsc::channel();
            let mut d = Daemon::new(
                &settings,
                Kernel1::default(),
                Script::default(),
                "stderr",
                tx,
            )
            .unwrap();
            assert_eq!(d.reload(Trigger::Start).kind(), "applied");
        }
        // Reboot: an empty kernel, and a broken configuration.
        std::fs::write(settings.config_dir.join("bad.yaml"), "kind: [\n").unwrap();
        let (tx, rx) = mpsc::channel();
        let mut d = Daemon::new(
            &settings,
            Kernel1::default(),
            Script::default(),
            "stderr",
            tx.clone(),
        )
        .unwrap()
        .with_fingerprinter(|_| Err(std::io::Error::other("no kernel here")));
        tx.send(Event::Signal(signal_hook::consts::SIGTERM))
            .unwrap();
        assert_eq!(d.run(rx), exit::OK);
        assert!(
            d.engine.dataplane().table.is_some(),
            "the last good is back"
        );
        let s = d.engine.summary().clone();
        assert_eq!(s.last_result.as_deref(), Some("invalid"));
        assert_eq!(s.kernel, "ours");
        let reason = s.degraded.clone().expect("degraded");
        assert!(
            reason.contains("applied the last good ruleset, generation 1"),
            "{reason}"
        );
        assert!(
            d.status_line().starts_with("DEGRADED: "),
            "{}",
            d.status_line()
        );
        assert!(d.guard.is_some(), "the restored table is guarded");
        let stored = d.store.load_summary().unwrap().unwrap();
        assert_eq!(stored.degraded, s.degraded);

        // Fixed: applied (here: unchanged, the same empty configuration), no longer degraded.
        std::fs::remove_file(settings.config_dir.join("bad.yaml")).unwrap();
        assert_eq!(d.reload(Trigger::Files).kind(), "unchanged");
        assert_eq!(d.engine.summary().degraded, None);

        // No last good either: nothing applied, said so, still a clean start.
        std::fs::remove_dir_all(&settings.state_dir).unwrap();
        std::fs::write(settings.config_dir.join("bad.yaml"), "kind: [\n").unwrap();
        let (tx, rx) = mpsc::channel();
        let mut d = Daemon::new(
            &settings,
            Kernel1::default(),
            Script::default(),
            "stderr",
            tx.clone(),
        )
        .unwrap();
        tx.send(Event::Signal(signal_hook::consts::SIGTERM))
            .unwrap();
        assert_eq!(d.run(rx), exit::OK);
        assert!(d.engine.dataplane().calls.is_empty(), "nothing applied");
        let reason = d.engine.summary().degraded.clone().expect("degraded");
        assert!(reason.contains("no last good ruleset"), "{reason}");
        assert!(d.guard.is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn stopping_answers_waiting_clients() {
        let (settings, root) = settings("stop");
        let (tx, rx) = mpsc::channel();
        let mut d = Daemon::new(
            &settings,
            Kernel1::default(),
            Script::default(),
            "stderr",
            tx.clone(),
        )
        .unwrap();
        let (rtx, rrx) = mpsc::channel();
        tx.send(Event::Reload(rtx)).unwrap();
        tx.send(Event::Signal(signal_hook::consts::SIGTERM))
            .unwrap();
        assert_eq!(d.run(rx), exit::OK);
        let reply = rrx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            (reply.result.as_str(), reply.exit_code),
            ("failed", 2),
            "{reply:?}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
