//! The daemon's state and what it does on each kind of event: reload the directory, follow the
//! interfaces, guard the table ([`drift::Guard`]), answer `status` and `reload`. The event loop
//! ([`super::event_loop`]) decides when; this decides what. It reads the time only from its [`Clock`].

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{error, info, warn};

use super::clock::Clock;
use super::control::{DaemonInfo, Reply, Status};
use super::drift::{self, Burst, Done, Guard};
use super::flows::Flows;
use super::log;
use super::metrics::Metrics;
use super::nftmon::TablePrint;
use super::systemd::Notifier;
use crate::config::load::{self, Loaded};
use crate::engine::state::{rfc3339, Store};
use crate::engine::{short, Engine, Outcome, Restored};
use crate::exit;
use crate::host::mem::give_back_free_memory;
use crate::host::probe::Prober;
use crate::nft::Dataplane;
use crate::pipeline;
use crate::settings::Settings;

/// The directory read and compiled.
pub(super) type Built = Result<pipeline::Compiled, pipeline::Invalid>;

/// The configuration files' `(name, text)` pairs a [`Built`] was made from (the texts shared with the
/// reader).
pub(super) type Sources = load::Sources;

/// What triggered a reload, for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    Start,
    Files,
    Sighup,
    Control,
}

impl Trigger {
    pub(super) fn name(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Files => "file change",
            Trigger::Sighup => "SIGHUP",
            Trigger::Control => "hostpolicyd reload",
        }
    }
}

/// Lists the node's interfaces (rtnetlink; replaceable in tests).
pub type InterfaceLister =
    Box<dyn FnMut() -> std::io::Result<Vec<crate::resolve::Interface>> + Send>;

pub struct Daemon<D: Dataplane, P: Prober> {
    pub(super) settings: Settings,
    pub(super) engine: Engine<D, P>,
    pub(super) store: Store,
    pub(super) status: Arc<Mutex<Status>>,
    pub(super) notifier: Notifier,
    /// The texts of the last configuration that validated: parsed and resolved again when interfaces
    /// change. The texts rather than the model: a tenth of the memory (10,000 policies: 3 MiB of YAML,
    /// ~30 MiB of model), and the daemon's peak is a reload, when the old and the new one coexist.
    sources: Option<Arc<Sources>>,
    /// The content hash whose configuration the state directory records (`applied-config.json`).
    applied_saved: Option<String>,
    pub(super) info: DaemonInfo,
    /// Our table, guarded against changes by others.
    pub(super) guard: Guard,
    pub(super) clock: Box<dyn Clock>,
    interfaces: InterfaceLister,
    /// The symbolic links on the way to the configuration directory at start ([`load::DirPins`]).
    pins: load::DirPins,
    /// Flow records: told of every generation that comes in force.
    pub(super) flows: Flows,
    /// The metrics file: told of every reload.
    metrics: Metrics,
    /// When the last [`Daemon::build`] started (the reading of the directory).
    build_started: Option<Instant>,
    /// The configuration directory as last read, each file's parsed and validated resources with it: a
    /// reload reads and parses only what changed. The event loop tells it which files did.
    pub(super) reader: load::Reader,
    /// Writes `last-good.json` and `applied-config.json` off the reload's path (None: it could not be
    /// started, and they are written on the spot).
    writer: Option<crate::engine::state::Writer>,
    /// The last compile's policy chains: a reload builds only those of the policies that changed.
    compiled: crate::compile::Cache,
}

impl<D: Dataplane, P: Prober> Daemon<D, P> {
    /// The daemon of `settings`, with the state directory's last good ruleset and summary restored. It
    /// starts one thread, the writer of the big state files, and reads the time from `clock` only.
    pub fn new(settings: &Settings, dp: D, prober: P, log: &str, clock: Box<dyn Clock>) -> Self {
        let store = Store::new(&settings.state_dir);
        let mut engine = Engine::new(dp, prober, &settings.node, &settings.table);
        // Rule handles are learned from a read right after our write, before the checks (drift).
        let guard = Guard::new(&settings.table);
        engine.after_swap(Some(guard.after_swap()));
        let stamp = store.last_good_stamp();
        let last_good = match store.load_last_good() {
            Ok(l) => l,
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
        let restored = last_good.is_some();
        engine.restore_from(last_good, summary);
        if restored {
            engine.restored_from_file(stamp);
        }
        let info = DaemonInfo {
            pid: std::process::id(),
            started_at: rfc3339(clock.wall()),
            config_dir: settings.config_dir.display().to_string(),
            state_dir: settings.state_dir.display().to_string(),
            log: log.to_string(),
            ..DaemonInfo::default()
        };
        let status = Arc::new(Mutex::new(Status {
            daemon: Some(info.clone()),
            summary: engine.summary().clone(),
            problems: Vec::new(),
        }));
        let flows = Flows::new(&settings.flows);
        if let Some(rs) = engine.last_good() {
            // What the kernel most likely holds until the first reload says otherwise.
            flows.publish(rs, engine.summary().generation, std::time::UNIX_EPOCH);
        }
        Daemon {
            settings: settings.clone(),
            engine,
            store,
            status,
            notifier: Notifier::from_env(),
            sources: None,
            applied_saved: None,
            info,
            guard,
            clock,
            interfaces: Box::new(crate::host::iface::current),
            pins: load::DirPins::at_start(&settings.config_dir),
            flows,
            metrics: Metrics::off(),
            build_started: None,
            reader: load::Reader::new(&settings.config_dir),
            writer: None,
            compiled: crate::compile::Cache::new(),
        }
        .with_state_writer()
    }

    /// Starts the thread that writes the big state files.
    fn with_state_writer(mut self) -> Self {
        let dir = self.store.dir().display().to_string();
        let writer = crate::engine::state::Writer::spawn(
            self.store.clone(),
            self.engine.saved_last_good(),
            move |file, e| {
                warn!(
                    event = "state_unwritable",
                    "cannot write {file} in the state directory {dir}: {e}"
                )
            },
        );
        match writer {
            Ok(w) => self.writer = Some(w),
            Err(e) => warn!(
                event = "state_unwritable",
                "cannot start the state writer thread: {e}; writing the state files on the spot"
            ),
        }
        self
    }

    /// Waits until the state files of everything done so far are written.
    pub(super) fn flush_state(&self) {
        if let Some(w) = &self.writer {
            w.flush();
        }
    }

    /// Writes the metrics file through `m` from now on.
    pub fn set_metrics(&mut self, m: Metrics) {
        m.reloaded(self.engine.last_good());
        self.metrics = m;
    }

    /// The flow records, shared with the flows thread and the control socket.
    pub fn flows(&self) -> Flows {
        self.flows.clone()
    }

    /// What `status` shows, shared with the control socket's thread.
    pub fn status(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    /// Notes how the nftables monitor is doing (for `status`).
    pub fn set_drift_watch(&mut self, state: String) {
        self.info.drift_watch = state;
        self.publish();
    }

    /// Sends the systemd notifications elsewhere (tests: a socket of their own).
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Replaces how our table is read back from the kernel (tests without a kernel).
    pub fn with_fingerprinter(
        mut self,
        f: impl FnMut(&str) -> std::io::Result<Option<TablePrint>> + Send + 'static,
    ) -> Self {
        self.guard = self.guard.with_fingerprinter(f);
        self
    }

    /// Replaces how the node's interfaces are listed (tests).
    pub fn with_interfaces(
        mut self,
        f: impl FnMut() -> std::io::Result<Vec<crate::resolve::Interface>> + Send + 'static,
    ) -> Self {
        self.interfaces = Box::new(f);
        self
    }

    /// The first reload, at start: degraded when the configuration is invalid; returns the line the
    /// daemon reports as ready. Err when nothing of ours is in force and the kernel refused what we sent
    /// or could not even be read (no CAP_NET_ADMIN, say): the daemon must not become ready, so that
    /// systemd shows the service failed instead of active and enforcing nothing (issue 17 item 8);
    /// Restart=on-failure tries again.
    pub(super) fn start(&mut self) -> Result<String, ()> {
        let first = self.reload(Trigger::Start);
        let mut refused = match &first {
            Outcome::Failed { .. } => Some(first.message(&self.settings.table)),
            _ => None,
        };
        if matches!(first, Outcome::Invalid { .. }) {
            refused = self.start_degraded().err();
            // Ready (or failed) with the state files saying so.
            self.flush_state();
        }
        if let Some(why) = refused.filter(|_| self.engine.summary().kernel != "ours") {
            error!(
                event = "startup_failed",
                table = self.settings.table,
                "{why}; no ruleset of hostpolicyd is in force: exiting (status {})",
                exit::APPLY_FAILED
            );
            self.notifier.status(&format!("failed: {why}"));
            return Err(());
        }
        let ready = self.status_line();
        if !matches!(first, Outcome::Applied { .. } | Outcome::Unchanged { .. })
            && self.engine.summary().degraded.is_none()
        {
            return Ok(format!(
                "{ready} (first configuration not applied: running with what the kernel holds)"
            ));
        }
        Ok(ready)
    }

    /// Whether `hostpolicyd flush` stopped enforcing (until the next reload).
    pub(super) fn flushed(&self) -> bool {
        self.engine.summary().flushed_at.is_some()
    }

    /// `hostpolicyd flush` with a daemon (issue 17 item 9): deletes our table and stops guarding it, so
    /// that drift repair does not put it back; the loop applies no file or interface change until the
    /// next reload (`systemctl reload`, SIGHUP, `hostpolicyd reload`) or a restart. Answers every client.
    pub(super) fn flush(&mut self, clients: Vec<std::sync::mpsc::Sender<Reply>>) {
        let table = self.settings.table.clone();
        let now = self.clock.wall();
        let (result, exit_code, message) = match self.engine.flush(now) {
            Ok(()) => {
                self.guard.disarm();
                self.info.changes_while_flushed = 0;
                let message = format!(
                    "flushed: table inet {table} deleted (other tables untouched); the daemon stays up \
                     and enforces nothing until `systemctl reload hostpolicyd` or a restart"
                );
                warn!(event = "flushed", table, "{message}");
                ("flushed", exit::OK, message)
            }
            Err(e) => {
                let message = format!("flush failed: {e}");
                error!(event = "flush_failed", table, "{message}");
                ("failed", exit::APPLY_FAILED, message)
            }
        };
        self.save_state();
        self.publish();
        // The state files say what the answer says.
        self.flush_state();
        self.notifier.status(&self.status_line());
        let s = self.engine.summary();
        let reply = Reply {
            result: result.into(),
            exit_code,
            message,
            diagnostics: vec![],
            generation: s.generation,
            hash: s.hash.clone(),
        };
        for c in clients {
            let _ = c.send(reply.clone());
        }
    }

    /// A burst of file changes came while flushed: not applied (the next reload does).
    pub(super) fn changed_while_flushed(&mut self) {
        self.info.changes_while_flushed += 1;
        self.publish();
        info!(
            event = "not_enforcing",
            "configuration files changed; not applied while flushed (`systemctl reload hostpolicyd` \
             applies them)"
        );
    }

    /// Loads and validates the whole directory, compiles for the current interfaces, reconciles.
    pub(super) fn reload(&mut self, trigger: Trigger) -> Outcome {
        self.reader.rescan();
        let now = self.clock.now();
        self.reload_with(trigger, None, now)
    }

    /// [`Daemon::reload`], with the directory already read and compiled ([`Daemon::build`]) when nothing
    /// happened since. `since`: when what asked for it happened (the burst's first file event, the
    /// signal or request), for the `applied` event's `latency_ms`.
    pub(super) fn reload_with(
        &mut self,
        trigger: Trigger,
        prepared: Option<(Built, Sources)>,
        since: Instant,
    ) -> Outcome {
        if trigger != Trigger::Files {
            // Asked for by someone: everything is looked at again (load::Reader).
            self.reader.rescan();
        }
        self.info.reloads += 1;
        self.info.changes_while_flushed = 0;
        self.set_busy(true);
        let kernel_before = crate::netlink::batch_time().1;
        let (built, sources) = prepared.unwrap_or_else(|| self.build());
        let built = self.no_endpoints_left(built);
        let started = self.build_started.unwrap_or(since);
        if let Ok(c) = &built {
            log::warnings(&c.warnings);
        }
        let timing = log::Timing {
            started,
            since: since.min(started),
            kernel_before,
        };
        if built.is_ok() {
            // A valid configuration replaces the last one whatever the apply's outcome; the old texts
            // are freed before the apply, not after (3 MiB of the reload's peak at 10,000 policies).
            self.sources = Some(Arc::new(sources));
        }
        let outcome = self.reconcile_timed(built.as_ref(), trigger.name(), Some(timing));
        *self
            .info
            .reload_results
            .entry(outcome.kind().to_string())
            .or_default() += 1;
        self.publish();
        self.metrics.reloaded(self.engine.last_good());
        if let Ok(c) = &built {
            self.save_applied_config(&outcome, c);
        }
        // The model and the previous configuration's texts are freed off the reload's path, and the
        // heap given back once they are (`drop_later` trims after freeing).
        crate::host::mem::drop_later(Some(built));
        if trigger != Trigger::Files {
            // Asked for by someone who waits for the answer (`hostpolicyd reload`, SIGHUP from
            // `systemctl reload`) or the start: the state files say what the answer says.
            self.flush_state();
        }
        outcome
    }

    /// A directory that suddenly holds no HostEndpoint for this node where the last good configuration
    /// had some is suspicious (someone may have swapped the directory for an empty one, and a node
    /// with no HostEndpoint is not filtered at all): it is applied only when the directory passes the
    /// trust checks, even with `--strict-modes=no`, and with a warning in any case.
    fn no_endpoints_left(&self, built: Built) -> Built {
        let Ok(c) = &built else { return built };
        let before = self.engine.summary().endpoints.len();
        let node = &self.settings.node;
        if before == 0 || c.config.host_endpoints.iter().any(|h| &h.node == node) {
            return built;
        }
        let dir = self.settings.config_dir.display();
        let problems = load::trust_problems(&self.settings.config_dir);
        if problems.is_empty() {
            warn!(
                event = "host_endpoints_gone",
                node,
                before,
                "the configuration directory {dir} no longer holds any HostEndpoint for node {node}, where \
                 the last good configuration had {before}: applying it (the directory passes the trust \
                 checks), so hostpolicyd no longer filters this node's interfaces"
            );
            return built;
        }
        let mut diagnostics = vec![crate::config::diag::Diagnostic::new(
            crate::config::diag::Severity::Error,
            None,
            format!(
                "refusing the configuration directory {dir}: it no longer holds any HostEndpoint for node \
                 {node} (the last good configuration had {before}) and it is not trusted"
            ),
        )];
        diagnostics.extend(problems);
        Err(pipeline::Invalid { diagnostics })
    }

    /// Reads and validates the whole directory and compiles it for the current interfaces.
    pub(super) fn build(&mut self) -> (Built, Sources) {
        self.build_started = Some(self.clock.now());
        // As load::read_dir_pinned and load::parse_sources, reading and parsing only what changed.
        let (loaded, sources) = self.reader.load(Some(&self.pins));
        let used = self.reader.last_use();
        tracing::debug!(
            event = "read",
            "{} configuration files: {} read, {} parsed, {} unchanged{}",
            sources.len(),
            used.read,
            used.parsed,
            used.reused,
            if used.full { " (full sweep)" } else { "" }
        );
        let built = self.compile(loaded);
        (built, sources)
    }

    fn compile(&mut self, loaded: Loaded) -> Built {
        let interfaces = self.interfaces();
        pipeline::build_cached(
            loaded,
            &self.settings.node,
            &interfaces,
            &self.settings.table,
            &self.settings.flows,
            &mut self.compiled,
        )
    }

    /// Re-resolves the last valid configuration for the interfaces as they are now.
    pub(super) fn interfaces_changed(&mut self) -> Option<Outcome> {
        let sources = self.sources.as_ref()?;
        // Valid when it was loaded: only the interfaces' addresses can change the result.
        let loaded = self.reader.load_texts(sources);
        self.info.interface_updates += 1;
        self.set_busy(true);
        let built = self.compile(loaded);
        let outcome = self.reconcile(built.as_ref(), "interfaces");
        if let Ok(c) = &built {
            self.save_applied_config(&outcome, c);
        }
        drop(built);
        give_back_free_memory();
        Some(outcome)
    }

    fn reconcile(
        &mut self,
        built: Result<&pipeline::Compiled, &pipeline::Invalid>,
        trigger: &str,
    ) -> Outcome {
        self.reconcile_timed(built, trigger, None)
    }

    fn reconcile_timed(
        &mut self,
        built: Result<&pipeline::Compiled, &pipeline::Invalid>,
        trigger: &str,
        timing: Option<log::Timing>,
    ) -> Outcome {
        let now = self.clock.wall();
        let outcome = match built {
            // Not a reload of the files: the summary keeps the last reload's result (issue 17 item 2).
            Ok(compiled) if trigger == "interfaces" => {
                self.engine.reconcile_interfaces(compiled, now)
            }
            _ => self.engine.reconcile(built, now),
        };
        let timed = timing.map(|t| t.done(self.clock.now()));
        log::outcome(&outcome, trigger, &self.settings.table, timed.as_ref());
        if matches!(
            outcome,
            Outcome::Applied { .. }
                | Outcome::Unchanged { .. }
                | Outcome::RolledBack {
                    restored: Restored::Previous { .. },
                    ..
                }
        ) {
            if let Some(rs) = self.engine.last_good() {
                self.flows
                    .publish(rs, self.engine.summary().generation, self.clock.wall());
            }
        }
        if matches!(outcome, Outcome::Invalid { .. }) {
            // Nothing applied: say what the kernel holds (a read, never a write).
            self.engine.inspect_kernel();
        }
        match &outcome {
            Outcome::Applied { .. }
            | Outcome::RolledBack {
                restored: Restored::Previous { .. },
                ..
            } => self.guard.arm(&mut self.engine, &*self.clock),
            Outcome::Unchanged { hash, .. } => {
                if !self.guard.expects(hash) {
                    self.guard.arm(&mut self.engine, &*self.clock);
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
            } => self.guard.disarm(),
            Outcome::Invalid { .. } | Outcome::NotRetried { .. } | Outcome::Failed { .. } => {}
        }
        self.save_state();
        self.set_busy(false);
        outcome
    }

    /// When `compiled` is now in force (applied, or found in the kernel), records its files, node and
    /// interfaces in the state directory: what `hostpolicyd plan` compares with.
    fn save_applied_config(&mut self, outcome: &Outcome, compiled: &pipeline::Compiled) {
        let hash = match outcome {
            Outcome::Applied { hash, .. } | Outcome::Unchanged { hash, .. } => hash,
            _ => return,
        };
        if let Some(w) = &self.writer {
            // A write the writer could not do is given again (an error is logged there).
            if let Some(failed) = w.take_applied_failure() {
                if self.applied_saved.as_ref() == Some(&failed) {
                    self.applied_saved = None;
                }
            }
        }
        if self.applied_saved.as_ref() == Some(hash) {
            return;
        }
        let Some(sources) = &self.sources else { return };
        if let Some(w) = &self.writer {
            // Written on the writer's thread; an error is logged there.
            w.applied_config(crate::engine::state::AppliedJob {
                hash: hash.clone(),
                node: self.settings.node.clone(),
                interfaces: compiled.interfaces.clone(),
                sources: Arc::clone(sources),
                now: self.clock.wall(),
            });
            self.applied_saved = Some(hash.clone());
            return;
        }
        match self.store.save_applied_config(
            hash,
            &self.settings.node,
            &compiled.interfaces,
            sources,
            self.clock.wall(),
        ) {
            Ok(()) => self.applied_saved = Some(hash.clone()),
            Err(e) => warn!(
                event = "state_unwritable",
                "cannot record the applied configuration in {}: {e}",
                self.store.dir().display()
            ),
        }
    }

    fn save_state(&mut self) {
        let now = self.clock.wall();
        if let Some(w) = &self.writer {
            // The big file on the writer's thread (written only if it changed), and the summary.
            if let Some(job) = self.engine.last_good_job(now) {
                w.last_good(job);
            }
            // status.json from the summary published for `status`, made current first: the writer
            // reads it when it writes (the latest then; the endpoints are not copied for it).
            self.publish();
            let status = Arc::clone(&self.status);
            w.summary(Box::new(move || {
                let s = status.lock().unwrap_or_else(|p| p.into_inner());
                crate::engine::state::summary_json(&s.summary)
            }));
            return;
        }
        if let Err(e) = self.engine.save_state(&self.store, now) {
            warn!(
                event = "state_unwritable",
                "cannot write the state directory {}: {e}",
                self.store.dir().display()
            );
        }
    }

    /// The first load found the configuration invalid or unreadable. Keeps or restores the last good
    /// ruleset and says that the daemon is degraded (see the module documentation of `daemon`). Err
    /// (why) when the kernel refused: the last good ruleset could not be applied, or nftables could not
    /// even be read.
    fn start_degraded(&mut self) -> Result<(), String> {
        let table = self.settings.table.clone();
        let state = self.store.dir().display().to_string();
        let s = self.engine.summary();
        let last_good = match (&s.hash, self.engine.last_good()) {
            (Some(h), Some(_)) => {
                Some(format!("generation {} (sha256:{})", s.generation, short(h)))
            }
            _ => None,
        };
        let kernel = s.kernel.clone();
        // `refused`: the kernel refused what we sent, or could not even be read (no CAP_NET_ADMIN).
        let (reason, applied, refused) = match (kernel.as_str(), last_good) {
            ("none", Some(lg)) => match self.engine.reapply_last_good() {
                Ok(()) => (
                    format!(
                        "configuration invalid at start: applied the last good ruleset, {lg}, from {state}; \
                         fix the configuration to leave this state"
                    ),
                    true,
                    false,
                ),
                Err(e) => (
                    format!(
                        "configuration invalid at start and the last good ruleset ({lg}) could not be \
                         applied: {e}; no hostpolicyd table in force"
                    ),
                    false,
                    true,
                ),
            },
            ("none", None) => (
                format!(
                    "configuration invalid at start and there is no last good ruleset in {state}: \
                     nothing applied, no hostpolicyd table in force"
                ),
                false,
                false,
            ),
            (k, Some(lg)) if k.starts_with("half-finished swap") => {
                match self.engine.reapply_last_good() {
                    Ok(()) => (
                        format!(
                            "configuration invalid at start and table inet {table} held a {k}: applied \
                             the last good ruleset, {lg}, from {state}; fix the configuration to leave \
                             this state"
                        ),
                        true,
                        false,
                    ),
                    Err(e) => (
                        format!(
                            "configuration invalid at start, table inet {table} holds a {k}, and the last \
                             good ruleset ({lg}) could not be applied: {e}"
                        ),
                        false,
                        true,
                    ),
                }
            }
            ("ours", Some(lg)) => (
                format!(
                    "configuration invalid at start: the last good ruleset, {lg}, stays in force; \
                     fix the configuration to leave this state"
                ),
                true,
                false,
            ),
            (kernel, _) => (
                format!(
                    "configuration invalid at start; table inet {table} holds {kernel}: left as it is"
                ),
                false,
                kernel.starts_with("unknown"),
            ),
        };
        if applied {
            self.guard.arm(&mut self.engine, &*self.clock);
        }
        warn!(event = "degraded", table, "{reason}");
        self.engine.set_degraded(Some(reason.clone()));
        self.save_state();
        self.publish();
        if refused {
            Err(reason)
        } else {
            Ok(())
        }
    }

    /// A burst of nftables changes to our table (see [`drift`]).
    pub(super) fn drift(&mut self, burst: Burst) {
        self.info.drift_checks += 1;
        let done = self.guard.burst(burst, &mut self.engine, &*self.clock);
        self.drift_done(done);
    }

    /// What the drift guard has due at the clock's time: a repair the rate limit delayed, or a look
    /// again at a kernel that could not be read.
    pub(super) fn drift_due(&mut self) {
        if let Some(done) = self.guard.repair_due(&mut self.engine, &*self.clock) {
            self.drift_done(done);
        }
        if let Some(burst) = self.guard.recheck_due(&*self.clock) {
            self.drift(burst);
        }
    }

    fn drift_done(&mut self, done: Done) {
        if done == Done::Repaired {
            self.save_state();
            self.notifier.status(&self.status_line());
        }
        self.publish();
    }

    fn interfaces(&mut self) -> Vec<crate::resolve::Interface> {
        (self.interfaces)().unwrap_or_else(|e| {
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

    pub(super) fn publish(&self) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.daemon = Some(DaemonInfo {
            notify_dropped: self.notifier.dropped(),
            ..self.info.clone()
        });
        let now = self.engine.summary();
        if s.summary.endpoints == now.endpoints {
            // Published several times per reload, mostly with the same endpoints (10,000 policies:
            // ~30,000 names to copy and free again each time, on the way to the commit): those are
            // kept, the rest copied.
            let endpoints = std::mem::take(&mut s.summary.endpoints);
            s.summary = now.clone_without_endpoints();
            s.summary.endpoints = endpoints;
        } else {
            s.summary = now.clone();
        }
    }

    pub(super) fn reply(&self, outcome: &Outcome) -> Reply {
        let diagnostics = match outcome {
            Outcome::Invalid { diagnostics } => crate::config::diag::kept(diagnostics),
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

    /// The answer to clients still waiting when the daemon stops.
    pub(super) fn stopping_reply(&self) -> Reply {
        Reply {
            result: "failed".into(),
            exit_code: exit::APPLY_FAILED,
            message: "the daemon is stopping".into(),
            diagnostics: vec![],
            generation: self.engine.summary().generation,
            hash: self.engine.summary().hash.clone(),
        }
    }

    /// STATUS=: what is in force, and the last result.
    pub(super) fn status_line(&self) -> String {
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
                drift::kernel_text(&s.kernel)
            ),
        };
        let last = match (&s.last_result, &s.last_error) {
            (Some(r), Some(e)) if r == "invalid" || r == "failed" => {
                format!("; last reload {r}: {}", e.message)
            }
            (Some(r), _) => format!("; last reload {r}"),
            (None, _) => String::new(),
        };
        let degraded = match (&s.flushed_at, &s.degraded) {
            (Some(at), _) => format!(
                "not enforcing (flushed at {at}; `systemctl reload hostpolicyd` enforces again); "
            ),
            (None, Some(reason)) => format!("DEGRADED: {reason}; "),
            (None, None) => String::new(),
        };
        let repairs = match s.drift_repairs {
            0 => String::new(),
            n => format!("; {n} drift repair{}", if n == 1 { "" } else { "s" }),
        };
        format!("{degraded}{in_force}{last}{repairs}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::daemon::clock::ManualClock;
    use crate::daemon::drift::Limiter;
    use crate::daemon::event_loop;
    use crate::daemon::event_loop::tests::{daemon, settings, Shared, Sim};
    use crate::daemon::Event;

    fn foreign_burst(clock: &ManualClock) -> Burst {
        let mut b = Burst::unknown(clock.now());
        b.lost = false;
        b.foreign = 3;
        b.writers.insert("nft (pid 7)".into());
        b
    }

    /// Moves the clock to the guard's next due time and runs what is due.
    fn when_due(d: &mut Daemon<Shared, crate::engine::tests::Script>, clock: &ManualClock) {
        clock.advance_to(d.guard.deadline().expect("something is due"));
        d.drift_due();
    }

    #[test]
    fn drift_is_repaired_own_writes_are_not_and_a_persistent_adversary_is_rate_limited() {
        let (settings, _root) = settings("drift");
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let mut d = daemon(&settings, &kernel, &clock);
        assert_eq!(d.reload(Trigger::Start).kind(), "applied");
        let good = d.engine.last_good().cloned().unwrap();
        assert!(kernel.holds(&good));
        assert_eq!(kernel.writes(), 1);

        // Our own write, table as applied: nothing to do, not even a fingerprint.
        let mut own = Burst::unknown(clock.now());
        own.lost = false;
        own.own = 40;
        d.drift(own);
        assert_eq!(kernel.writes(), 1);

        // Someone deleted the table.
        kernel.delete_table();
        clock.advance(Duration::from_millis(7));
        d.drift(foreign_burst(&clock));
        assert!(kernel.holds(&good));
        assert_eq!(kernel.writes(), 2);
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
        d.drift(foreign_burst(&clock));
        assert_eq!(kernel.writes(), 2);

        // Replaced by a table of another content.
        let mut other = good.clone();
        other.comment = "hostpolicyd sha256:0000".into();
        kernel.load(&other);
        d.drift(foreign_burst(&clock));
        assert!(kernel.holds(&good));
        assert_eq!(
            d.engine.summary().last_drift.as_ref().unwrap().changes,
            ["table replaced (content sha256:0000)"]
        );

        // A persistent adversary: after the free repairs, the next one waits.
        for _ in 2..Limiter::FREE {
            kernel.delete_table();
            d.drift(foreign_burst(&clock));
        }
        assert_eq!(d.engine.summary().drift_repairs, u64::from(Limiter::FREE));
        let before = kernel.writes();
        kernel.delete_table();
        d.drift(foreign_burst(&clock));
        assert_eq!(kernel.writes(), before, "no repair yet: backing off");
        assert_eq!(
            d.guard.deadline(),
            Some(clock.now() + Limiter::FIRST_DELAY),
            "a repair is scheduled when the limiter allows"
        );
        // More changes meanwhile do not add repairs; the scheduled one runs when it is due.
        d.drift(foreign_burst(&clock));
        assert_eq!(kernel.writes(), before);
        clock.advance(Limiter::FIRST_DELAY - Duration::from_millis(1));
        d.drift_due();
        assert_eq!(kernel.writes(), before, "not yet due");
        when_due(&mut d, &clock);
        assert_eq!(kernel.writes(), before + 1);
        assert!(kernel.holds(&good));
        assert!(!d.guard.repair_waiting());
        assert_eq!(
            d.engine.summary().last_drift.as_ref().unwrap().latency_ms,
            Limiter::FIRST_DELAY.as_millis() as u64,
            "measured from the first notice, on the daemon's clock"
        );
    }

    /// What the guard reads right after our write (the chain reader) and later (the fingerprinter):
    /// rule 0xa at handle 10 in chain `ep`, or, once someone replaced it in place, 0xf there.
    fn ep_print(rule: u64) -> TablePrint {
        let mut p = TablePrint {
            table: 3,
            ..TablePrint::default()
        };
        p.chains.insert(
            "ep".into(),
            crate::daemon::nftmon::ChainPrint {
                def: 0,
                rules: vec![rule],
                handles: vec![10],
            },
        );
        p
    }

    #[test]
    fn a_rule_replaced_in_place_during_the_checks_is_drift_repaired_not_learned() {
        // handlesfix item 1: the read after the checks is not our write's. A rule replaced in place
        // then (same handle, same count) is found by comparing with the read right after the write,
        // repaired by applying the whole ruleset again, and reported.
        let (settings, _root) = settings("replaced");
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let looks = Arc::new(Mutex::new(0usize));
        let l = looks.clone();
        let mut d = daemon(&settings, &kernel, &clock).with_fingerprinter(move |_| {
            let mut n = l.lock().unwrap();
            *n += 1;
            // The first look (when arming) sees the foreign rule; after the repair, ours.
            Ok(Some(ep_print(if *n == 1 { 0xf } else { 0xa })))
        });
        d.guard = std::mem::replace(&mut d.guard, Guard::new("unused"))
            .with_chain_reader(|_, _| Ok(Some(ep_print(0xa))));
        let writes = kernel.writes();
        assert_eq!(d.reload(Trigger::Start).kind(), "applied");
        assert_eq!(
            kernel.writes(),
            writes + 2,
            "applied, then applied again whole"
        );
        let s = d.engine.summary().clone();
        let last = s.last_drift.expect("drift reported");
        assert_eq!(last.changes, [crate::daemon::drift::WRITTEN_CHANGED]);
        assert!(last.repaired, "{last:?}");
        assert_eq!(s.drift_repairs, 1);
        assert!(!d.guard.repair_waiting());
    }

    #[test]
    fn a_failed_repair_at_arm_learns_nothing_and_waits_to_repair() {
        // handlesfix item 2: the whole ruleset cannot be applied again: the drifted table is not
        // taken for ours; a repair waits, and runs even though a look by layout finds nothing.
        let (settings, _root) = settings("armfail");
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let mut d =
            daemon(&settings, &kernel, &clock).with_fingerprinter(|_| Ok(Some(ep_print(0xf))));
        d.guard = std::mem::replace(&mut d.guard, Guard::new("unused"))
            .with_chain_reader(|_, _| Ok(Some(ep_print(0xa))));
        assert_eq!(d.reload(Trigger::Start).kind(), "applied");
        // As right after a write: the chain reader's print is what we wrote (0xa), the table holds
        // 0xf, and the kernel refuses the repair.
        let rs = d.engine.last_good().unwrap().clone();
        (d.guard.after_swap())(&rs, &["ep".to_string()]);
        kernel
            .0
            .lock()
            .unwrap()
            .fail_next(crate::nft::DataplaneError::invalid("refused"));
        d.guard.arm(&mut d.engine, &clock);
        let writes = kernel.writes();
        let last = d.engine.summary().last_drift.clone().expect("reported");
        assert!(!last.repaired, "{last:?}");
        assert!(d.guard.repair_waiting(), "a repair waits");
        when_due(&mut d, &clock);
        assert!(
            kernel.writes() > writes,
            "the waiting repair writes even though a look by layout finds nothing"
        );
    }

    #[test]
    fn a_change_the_repair_cannot_undo_is_a_failed_repair_not_a_new_baseline() {
        let (settings, _root) = settings("undo");
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let print = Arc::new(Mutex::new(TablePrint::default()));
        let p = print.clone();
        let mut d = daemon(&settings, &kernel, &clock)
            .with_fingerprinter(move |_| Ok(Some(p.lock().unwrap().clone())));
        assert_eq!(d.reload(Trigger::Start).kind(), "applied");
        // Someone adds a chain that re-applying does not remove.
        print
            .lock()
            .unwrap()
            .chains
            .insert("intruder".into(), Default::default());
        d.drift(foreign_burst(&clock));
        let s = d.engine.summary().clone();
        let last = s.last_drift.unwrap();
        assert_eq!(last.changes, ["chain intruder added"]);
        assert!(!last.repaired);
        assert!(
            last.error.as_deref().unwrap().contains("still differs"),
            "{last:?}"
        );
        assert_eq!(s.drift_repairs, 0);
        assert!(d.guard.repair_waiting(), "tried again later");
        // The intruder is not taken for ours: once gone, nothing is left to repair.
        print.lock().unwrap().chains.remove("intruder");
        let writes = kernel.writes();
        when_due(&mut d, &clock);
        assert_eq!(kernel.writes(), writes, "in sync: no write");
        assert!(!d.guard.repair_waiting());
    }

    /// A look at a kernel that cannot be read is tried again a second later, by the loop.
    #[test]
    fn an_unreadable_kernel_is_looked_at_again() {
        let (settings, _root) = settings("recheck");
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let mut d = daemon(&settings, &kernel, &clock);
        let status = d.status();
        let checks = move || status.lock().unwrap().daemon.as_ref().unwrap().drift_checks;
        let c = clock.clone();
        let mut sim = Sim::new(&clock);
        // Someone changed a rule (the hash is the same): the fingerprint cannot be read.
        sim.at(Duration::from_millis(10), move || {
            Event::Drift(foreign_burst(&c))
        });
        let (c1, c2) = (checks.clone(), checks.clone());
        sim.check(
            Duration::from_millis(10) + drift::RECHECK - Duration::from_millis(1),
            move || assert_eq!(c1(), 1),
        );
        sim.check(
            Duration::from_millis(10) + drift::RECHECK + Duration::from_millis(1),
            move || assert_eq!(c2(), 2, "looked again"),
        );
        sim.at(Duration::from_secs(3), || {
            Event::Signal(signal_hook::consts::SIGTERM)
        });
        assert_eq!(event_loop::run(&mut d, &mut sim, None), exit::OK);
        assert_eq!(
            checks(),
            3,
            "and again a second later, as long as it cannot be read"
        );
        assert_eq!(
            kernel.writes(),
            1,
            "no repair of what could not be compared"
        );
    }

    #[test]
    fn invalid_configuration_at_start_applies_the_last_good_and_is_degraded() {
        let (settings, _root) = settings("boot");
        let clock = ManualClock::new();
        // A previous run applied a ruleset and saved it.
        {
            let kernel = Shared::default();
            let mut d = daemon(&settings, &kernel, &clock);
            assert_eq!(d.reload(Trigger::Start).kind(), "applied");
        }
        // Reboot: an empty kernel, and a broken configuration.
        std::fs::write(settings.config_dir.join("bad.yaml"), "kind: [\n").unwrap();
        let kernel = Shared::default();
        let mut d = daemon(&settings, &kernel, &clock);
        assert!(d.start().is_ok(), "degraded, but ready: boot goes on");
        let last_good = d.engine.last_good().cloned().expect("a last good");
        assert!(kernel.holds(&last_good), "the last good is back");
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
        assert!(d.guard.armed(), "the restored table is guarded");
        let stored = d.store.load_summary().unwrap().unwrap();
        assert_eq!(stored.degraded, s.degraded);

        // Fixed: applied (here: unchanged, the same empty configuration), no longer degraded.
        std::fs::remove_file(settings.config_dir.join("bad.yaml")).unwrap();
        assert_eq!(d.reload(Trigger::Files).kind(), "unchanged");
        assert_eq!(d.engine.summary().degraded, None);

        // No last good either: nothing applied, said so, still a clean start.
        d.flush_state(); // the state writer is done with the directory
        std::fs::remove_dir_all(&settings.state_dir).unwrap();
        std::fs::write(settings.config_dir.join("bad.yaml"), "kind: [\n").unwrap();
        let kernel = Shared::default();
        let mut d = daemon(&settings, &kernel, &clock);
        assert!(
            d.start().is_ok(),
            "nothing refused: ready, waiting for a fix"
        );
        assert_eq!(kernel.writes(), 0, "nothing applied");
        let reason = d.engine.summary().degraded.clone().expect("degraded");
        assert!(reason.contains("no last good ruleset"), "{reason}");
        assert!(!d.guard.armed());
    }

    /// A socket that plays systemd's notification socket.
    fn supervisor(dir: &std::path::Path) -> (std::os::unix::net::UnixDatagram, Notifier) {
        let path = dir.join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        (sock, Notifier::to_socket(&path).unwrap())
    }

    fn notifications(sock: &std::os::unix::net::UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    fn hep_eth9() -> &'static str {
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\n\
         spec: {node: node1, interfaceName: eth9}\n"
    }

    /// Issue 17 item 8: without CAP_NET_ADMIN (here: a kernel that refuses the first apply) the service
    /// became `active`, said "the previous ruleset is still in force" and enforced nothing.
    #[test]
    fn a_first_start_whose_apply_the_kernel_refuses_fails_without_ready() {
        let (settings, root) = settings("refused");
        let (sock, notifier) = supervisor(&root.0);
        let clock = ManualClock::new();
        let kernel = Shared::default();
        kernel
            .0
            .lock()
            .unwrap()
            .fail_next(crate::nft::DataplaneError::os("kernel said no", 1));
        let mut d = daemon(&settings, &kernel, &clock).with_notifier(notifier);
        // No event at all: a loop that went on would find the script closed (exit 70).
        let mut sim = Sim::new(&clock);
        assert_eq!(
            event_loop::run(&mut d, &mut sim, None),
            exit::APPLY_FAILED,
            "the daemon exits at once"
        );
        assert!(!kernel.has_table());
        let sent = notifications(&sock);
        assert!(
            !sent.iter().any(|n| n.lines().any(|l| l == "READY=1")),
            "no READY=1: {sent:?}"
        );
        assert!(
            sent.iter().any(|n| n.contains(
                "STATUS=failed: apply failed, and no ruleset of hostpolicyd is in force"
            )),
            "{sent:?}"
        );

        // With our previous ruleset in force (a restart), a refused apply keeps the service up.
        let kernel = Shared::default();
        let mut d = daemon(&settings, &kernel, &clock);
        assert_eq!(d.reload(Trigger::Start).kind(), "applied");
        std::fs::write(settings.config_dir.join("hep.yaml"), hep_eth9()).unwrap();
        kernel
            .0
            .lock()
            .unwrap()
            .fail_next(crate::nft::DataplaneError::os("kernel said no", 1));
        let mut d = daemon(&settings, &kernel, &clock);
        let ready = d.start().expect("ready: the previous ruleset is in force");
        assert!(ready.contains("last reload failed"), "{ready}");
        assert_eq!(d.engine.summary().kernel, "ours");
    }

    /// Issue 17 item 14: notifications were sent with a blocking sendmsg, so a supervisor that stopped
    /// reading stopped the event loop, and file changes were no longer applied.
    #[test]
    fn a_stalled_supervisor_does_not_stop_the_event_loop() {
        let (settings, root) = settings("stalled");
        let (_sock, notifier) = supervisor(&root.0);
        let (tx, rx) = std::sync::mpsc::channel();
        let d = Daemon::new(
            &settings,
            Shared::default(),
            crate::engine::tests::Script::default(),
            "stderr",
            Box::new(crate::daemon::clock::SystemClock),
        )
        .with_interfaces(|| Ok(Vec::new()))
        .with_fingerprinter(|_| Err(std::io::Error::other("no kernel here")))
        .with_notifier(notifier);
        let status = d.status();
        let writer = std::thread::spawn(move || {
            let mut d = d;
            let clock = crate::daemon::clock::SystemClock;
            let mut events = event_loop::Channel { rx, clock: &clock };
            event_loop::run(&mut d, &mut events, None)
        });
        // Each reload sends RELOADING=1 and READY=1: the queue (10 datagrams) is full after a few.
        for i in 0..30 {
            let (rtx, rrx) = std::sync::mpsc::channel();
            tx.send(Event::Reload(rtx)).unwrap();
            let reply = rrx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("reload {i} was not answered: the loop is stuck"));
            assert_eq!(reply.exit_code, exit::OK, "{reply:?}");
        }
        tx.send(Event::Signal(signal_hook::consts::SIGTERM))
            .unwrap();
        assert_eq!(writer.join().unwrap(), exit::OK);
        let dropped = status
            .lock()
            .unwrap()
            .daemon
            .as_ref()
            .unwrap()
            .notify_dropped;
        assert!(dropped > 0, "the dropped notifications are counted");
    }

    /// Issue 17 item 9: `flush` with a daemon running printed "flushed", and drift repair put the table
    /// back within 0.1 s. Now the daemon itself deletes its table and enforces nothing (no repair, no
    /// file change applied) until a reload.
    #[test]
    fn a_flush_stops_enforcing_until_the_next_reload() {
        let (settings, _root) = settings("flush");
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let mut d = daemon(&settings, &kernel, &clock);
        let status = d.status();
        let ms = Duration::from_millis;
        let (ftx, frx) = std::sync::mpsc::channel();
        let (rtx, rrx) = std::sync::mpsc::channel();
        let mut sim = Sim::new(&clock);
        sim.at(ms(100), move || Event::Flush(ftx));
        let (k, c) = (kernel.clone(), clock.clone());
        sim.at(ms(200), move || {
            // Someone else writes to the (deleted) table: nothing of ours to guard.
            k.0.lock().unwrap().calls.push("foreign write".into());
            Event::Drift(foreign_burst(&c))
        });
        let file = settings.config_dir.join("hep.yaml");
        sim.at(ms(300), move || {
            std::fs::write(&file, hep_eth9()).unwrap();
            Event::Files(vec![(file, crate::daemon::watch::Change::Written)])
        });
        let (s, k) = (status.clone(), kernel.clone());
        sim.check(ms(300) + crate::daemon::watch::QUIET + ms(1), move || {
            let st = s.lock().unwrap().clone();
            assert!(!k.has_table(), "still flushed");
            assert_eq!(st.daemon.as_ref().unwrap().changes_while_flushed, 1);
            assert_eq!(st.summary.applies, 1, "the start only");
            assert_eq!(st.summary.drift_repairs, 0);
            assert!(st.summary.problems()[0].starts_with("not enforcing (flushed)"));
        });
        sim.at(ms(2000), move || Event::Reload(rtx));
        sim.at(ms(3000), || Event::Signal(signal_hook::consts::SIGTERM));
        assert_eq!(event_loop::run(&mut d, &mut sim, None), exit::OK);
        let flushed = frx.try_recv().unwrap();
        assert_eq!(
            (flushed.result.as_str(), flushed.exit_code),
            ("flushed", 0),
            "{flushed:?}"
        );
        assert!(
            flushed.message.contains("enforces nothing until"),
            "{flushed:?}"
        );
        let reloaded = rrx.try_recv().unwrap();
        assert_eq!(reloaded.result, "applied", "{reloaded:?}");
        let s = status.lock().unwrap().clone();
        assert_eq!(s.summary.flushed_at, None);
        assert_eq!(s.summary.kernel, "ours");
        assert_eq!(s.daemon.unwrap().changes_while_flushed, 0);
        let calls = kernel.0.lock().unwrap().calls.clone();
        assert_eq!(calls.len(), 4, "apply, flush, (foreign), apply: {calls:?}");
        assert_eq!(calls[1], "flush");
        assert!(
            kernel.has_table(),
            "enforcing again: the new file's ruleset"
        );
    }
}
