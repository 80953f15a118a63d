//! `hostpolicyd run`: the long-running service (DESIGN.md "Daemon life cycle").
//!
//! One writer: the main thread owns the engine and is the only code that writes to the kernel or the state
//! directory. Every other thread only turns something into an [`Event`] on one channel:
//!
//! - `notify`'s thread: configuration file events, already filtered ([`watch`]);
//! - the signal thread: SIGHUP (reload), SIGTERM/SIGINT (stop, leaving the table in place) ([`signals`]);
//! - the interface thread: rtnetlink link/address changes ([`crate::iface::Monitor`]);
//! - the control socket: `reload` requests, each with a reply channel ([`control`]).
//!
//! The loop drains everything pending before acting, so a burst coalesces: file events wait for a quiet
//! period ([`watch::QUIET`], capped at [`watch::CAP`]) and then the whole directory is rescanned; SIGHUP
//! and control-socket reloads run at once and answer every waiting client with the same result. An
//! interface change re-resolves the last valid configuration (IP-matched HostEndpoints follow their
//! addresses) and applies only when the compiled result changed.

pub mod control;
pub mod log;
pub mod notify;
pub mod signals;
pub mod watch;

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{error, info, warn};

use crate::cli::Settings;
use crate::engine::{short, Engine, Outcome};
use crate::load::{self, Loaded};
use crate::model::Config;
use crate::nft::{Dataplane, Netlink};
use crate::pipeline;
use crate::probe::{NetProber, Prober};
use crate::state::{rfc3339, Store};

use control::{DaemonInfo, Reply, Status};
use notify::Notifier;
use watch::{Debouncer, Watch};

/// Exit statuses of `run`.
pub const EXIT_OK: u8 = 0;
pub const EXIT_INTERNAL: u8 = 70;

/// Debounce of interface events (an address brings several messages: link, address, DAD...).
const IFACE_QUIET: Duration = Duration::from_millis(100);
const IFACE_CAP: Duration = Duration::from_secs(1);

/// Everything the writer loop reacts to.
pub enum Event {
    /// A configuration file changed, appeared or disappeared.
    Files,
    /// The configuration directory itself was created, removed or replaced.
    DirReplaced,
    WatchError(String),
    Signal(i32),
    /// Links or addresses changed.
    Interfaces,
    /// `hostpolicyd reload`: reload now and answer on the channel.
    Reload(Sender<Reply>),
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
        return EXIT_INTERNAL;
    }
    let listener = match control::bind(&settings.runtime_dir) {
        Ok(l) => l,
        Err(e) => {
            error!(
                event = "startup_failed",
                "cannot open the control socket in {}: {e}",
                settings.runtime_dir.display()
            );
            return EXIT_INTERNAL;
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
            return EXIT_INTERNAL;
        }
    };
    let code = Daemon::new(settings, dp, NetProber, log, tx.clone()).and_then(|mut d| {
        control::spawn(listener, d.status.clone(), tx.clone())
            .map_err(|e| format!("control socket: {e}"))?;
        spawn_interface_monitor(tx);
        Ok(d.run(rx))
    });
    let _ = std::fs::remove_file(control::socket_path(&settings.runtime_dir));
    code.unwrap_or_else(|e| {
        error!(event = "startup_failed", "{e}");
        EXIT_INTERNAL
    })
}

fn spawn_interface_monitor(tx: Sender<Event>) {
    let spawned = std::thread::Builder::new()
        .name("interfaces".into())
        .spawn(move || loop {
            let mut monitor = match crate::iface::Monitor::new() {
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
    /// The last configuration that validated: re-resolved when interfaces change.
    config: Option<Config>,
    info: DaemonInfo,
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
            config: None,
            info,
        })
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
        let mut ready = self.status_line();
        if !matches!(first, Outcome::Applied { .. } | Outcome::Unchanged { .. }) {
            ready = format!(
                "{ready} (first configuration not applied: running with what the kernel holds)"
            );
        }
        self.notifier.ready(&ready);

        let mut files = Debouncer::new(watch::QUIET, watch::CAP);
        let mut ifaces = Debouncer::new(IFACE_QUIET, IFACE_CAP);
        let watchdog = self.notifier.watchdog_interval();
        let mut next_ping = watchdog.map(|w| Instant::now() + w);
        if watchdog.is_some() {
            self.notifier.watchdog();
        }
        loop {
            let now = Instant::now();
            let wake = [files.deadline(), ifaces.deadline(), next_ping]
                .into_iter()
                .flatten()
                .min();
            let first = match wake {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(now)) {
                    Ok(ev) => Some(ev),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return EXIT_INTERNAL,
                },
                None => match rx.recv() {
                    Ok(ev) => Some(ev),
                    Err(_) => return EXIT_INTERNAL,
                },
            };
            // Drain: everything already queued is part of the same burst.
            let mut waiters: Vec<Sender<Reply>> = Vec::new();
            let mut now_trigger: Option<Trigger> = None;
            let mut stop: Option<i32> = None;
            for ev in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                let at = Instant::now();
                match ev {
                    Event::Files => files.touch(at),
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
                        files.touch(at);
                    }
                    Event::WatchError(e) => {
                        warn!(event = "watch_failed", "file watch: {e}; rescanning");
                        files.touch(at);
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
                        exit_code: crate::engine::EXIT_APPLY_FAILED,
                        message: "the daemon is stopping".into(),
                        diagnostics: vec![],
                        generation: self.engine.summary().generation,
                        hash: self.engine.summary().hash.clone(),
                    });
                }
                return EXIT_OK;
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
                let outcome = self.reload(trigger);
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
        }
    }

    /// Loads and validates the whole directory, compiles for the current interfaces, reconciles.
    fn reload(&mut self, trigger: Trigger) -> Outcome {
        self.info.reloads += 1;
        self.set_busy(true);
        let loaded = load::load_dir(&self.settings.config_dir);
        let built = pipeline::build(
            loaded,
            &self.settings.node,
            &self.interfaces(),
            &self.settings.table,
            false,
        );
        if let Ok(c) = &built {
            self.config = Some(c.config.clone());
            log::warnings(&c.warnings);
        }
        self.reconcile(built.as_ref(), trigger.name())
    }

    /// Re-resolves the last valid configuration for the interfaces as they are now.
    fn interfaces_changed(&mut self) -> Option<Outcome> {
        let config = self.config.clone()?;
        self.info.interface_updates += 1;
        self.set_busy(true);
        let loaded = Loaded {
            config,
            diagnostics: Vec::new(),
        };
        let built = pipeline::build(
            loaded,
            &self.settings.node,
            &self.interfaces(),
            &self.settings.table,
            false,
        );
        Some(self.reconcile(built.as_ref(), "interfaces"))
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
        if let Err(e) = self.engine.save_state(&self.store, now) {
            warn!(
                event = "state_unwritable",
                "cannot write the state directory {}: {e}",
                self.store.dir().display()
            );
        }
        self.set_busy(false);
        outcome
    }

    fn interfaces(&self) -> Vec<crate::resolve::Interface> {
        crate::iface::current().unwrap_or_else(|e| {
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
        format!("{in_force}{last}")
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
                Event::Files
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
        assert_eq!(writer.join().unwrap(), EXIT_OK);
        let s = status.lock().unwrap().clone();
        assert_eq!(
            s.daemon.unwrap().reloads,
            2,
            "start + one coalesced reload (files already covered by it)"
        );
        assert_eq!(s.summary.applies, 1);
        assert!(
            root.join("state")
                .join(crate::state::LAST_GOOD_FILE)
                .exists(),
            "last good saved"
        );
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
        assert_eq!(d.run(rx), EXIT_OK);
        let reply = rrx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            (reply.result.as_str(), reply.exit_code),
            ("failed", 2),
            "{reply:?}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
