//! The writer loop: waits for events ([`Events`]), drains everything already queued as one burst, and
//! decides what to do and when — reload after files settle ([`watch::Settle`]), re-resolve after
//! interfaces settle, reload at once for SIGHUP and `hostpolicyd reload`, hand drift to the guard, stop
//! — all at times read from the daemon's [`Clock`](super::clock::Clock), never from the system directly.
//! What each action does is [`Daemon`]'s.
//!
//! Its tests give it a scripted event source and a [`ManualClock`](super::clock::ManualClock): waiting
//! for a deadline moves the clock there, so the quiet periods, the rate limit and the watchdog run in
//! simulated time, and "nothing else happened" is known when the script is over, not hoped for after
//! a sleep.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::clock::Clock;
use super::control::Reply;
use super::drift::Burst;
use super::service::{Built, Daemon, Sources, Trigger};
use super::watch::{self, Debouncer, Settle, Watch};
use super::{signals, Event};
use crate::engine::Outcome;
use crate::exit;
use crate::host::probe::Prober;
use crate::nft::Dataplane;

/// Debounce of interface events (an address brings several messages: link, address, DAD...).
pub const IFACE_QUIET: Duration = Duration::from_millis(100);
pub const IFACE_CAP: Duration = Duration::from_secs(1);

/// What waiting for an event gave.
pub enum Wait {
    Event(Event),
    /// The deadline came first.
    Timeout,
    /// No event can come any more.
    Closed,
}

/// Where the loop's events come from.
pub trait Events {
    /// The next event, waiting at most until `deadline` (for ever when `None`).
    fn wait(&mut self, deadline: Option<Instant>) -> Wait;
    /// An event that is already there, without waiting.
    fn ready(&mut self) -> Option<Event>;
}

/// The daemon's channel, waited on with the clock the loop uses.
pub struct Channel<'c> {
    pub rx: Receiver<Event>,
    pub clock: &'c dyn Clock,
}

impl Events for Channel<'_> {
    fn wait(&mut self, deadline: Option<Instant>) -> Wait {
        let received = match deadline {
            Some(at) => self
                .rx
                .recv_timeout(at.saturating_duration_since(self.clock.now())),
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(ev) => Wait::Event(ev),
            Err(RecvTimeoutError::Timeout) => Wait::Timeout,
            Err(RecvTimeoutError::Disconnected) => Wait::Closed,
        }
    }

    fn ready(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

/// What one drain of the queue asked for.
#[derive(Default)]
struct Round {
    waiters: Vec<Sender<Reply>>,
    /// Clients of `hostpolicyd flush`.
    flushers: Vec<Sender<Reply>>,
    /// Whether the flush came after the last reload request of the round: then it runs after the
    /// reload, otherwise before it (the last request wins).
    flush_last: bool,
    trigger: Option<Trigger>,
    stop: Option<i32>,
    drifted: Option<Burst>,
}

/// The loop's own state between rounds.
struct Loop<'w> {
    files: Settle,
    ifaces: Debouncer,
    /// The directory read and compiled while the short quiet period of complete files runs
    /// ([`watch::SETTLE`]): used by the reload when no file or interface event came since it started,
    /// so that the quiet period costs no time of its own. Any such event throws it away.
    early: Option<(Built, Sources)>,
    /// The first file event since the last reload (the time an operator waits from).
    files_since: Option<Instant>,
    watchdog: Option<Duration>,
    next_ping: Option<Instant>,
    /// The configuration directory's watch, re-established when the directory is replaced.
    watch: Option<&'w mut Watch>,
}

/// Runs the daemon: the first reload (ready, or degraded), then every event until SIGTERM/SIGINT.
/// Returns the process exit status.
pub fn run<D: Dataplane, P: Prober>(
    d: &mut Daemon<D, P>,
    events: &mut impl Events,
    watch: Option<&mut Watch>,
) -> u8 {
    info!(
        event = "started",
        node = d.settings.node,
        table = d.settings.table,
        config_dir = %d.settings.config_dir.display(),
        "hostpolicyd started: node {}, table inet {}, watching {}",
        d.settings.node,
        d.settings.table,
        d.settings.config_dir.display()
    );
    let ready = match d.start() {
        Ok(ready) => ready,
        // Nothing of ours in force and the kernel refused: no READY=1 (issue 17 item 8).
        Err(()) => return exit::APPLY_FAILED,
    };
    d.notifier.ready(&ready);

    let watchdog = d.notifier.watchdog_interval();
    let mut l = Loop {
        files: Settle::default(),
        ifaces: Debouncer::new(IFACE_QUIET, IFACE_CAP),
        early: None,
        files_since: None,
        watchdog,
        next_ping: watchdog.map(|w| d.clock.now() + w),
        watch,
    };
    if watchdog.is_some() {
        d.notifier.watchdog();
    }
    loop {
        let wake = [
            l.files.deadline(),
            l.ifaces.deadline(),
            l.next_ping,
            d.guard.deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let first = match events.wait(wake) {
            Wait::Event(ev) => Some(ev),
            Wait::Timeout => None,
            Wait::Closed => return exit::INTERNAL,
        };
        // Drain: everything already queued is part of the same burst.
        let mut round = Round::default();
        for ev in first
            .into_iter()
            .chain(std::iter::from_fn(|| events.ready()))
        {
            l.take(d, ev, &mut round);
        }
        if let Some(sig) = round.stop {
            round.waiters.append(&mut round.flushers);
            return stop(d, sig, round.waiters);
        }
        l.act(d, round);
    }
}

impl Loop<'_> {
    /// Notes one event of the round.
    fn take<D: Dataplane, P: Prober>(
        &mut self,
        d: &mut Daemon<D, P>,
        ev: Event,
        round: &mut Round,
    ) {
        let at = d.clock.now();
        if matches!(
            ev,
            Event::Files(_) | Event::DirReplaced | Event::WatchError(_) | Event::Interfaces
        ) {
            self.early = None;
        }
        match ev {
            Event::Files(changes) => {
                self.files_since.get_or_insert(at);
                for (path, change) in changes {
                    // The reader reads again exactly the names reported (config::load::Reader).
                    if let Some(name) = path.file_name() {
                        d.reader.changed(name);
                    }
                    self.files.touch(at, &path, change);
                }
            }
            Event::DirReplaced => {
                if let Some(w) = self.watch.as_mut() {
                    if let Err(e) = w.rewatch() {
                        warn!(
                            event = "watch_failed",
                            "configuration directory {} is gone or unwatchable: {e}",
                            d.settings.config_dir.display()
                        );
                    }
                }
                // Whatever happened in the old or new directory meanwhile was not reported.
                d.reader.rescan();
                self.files.touch_unsure(at);
                self.files_since.get_or_insert(at);
            }
            Event::WatchError(e) => {
                warn!(event = "watch_failed", "file watch: {e}; rescanning");
                // Events may have been lost: the next read looks at every file.
                d.reader.rescan();
                self.files.touch_unsure(at);
                self.files_since.get_or_insert(at);
            }
            Event::Interfaces => self.ifaces.touch(at),
            Event::Signal(sig) if sig == signal_hook::consts::SIGHUP => {
                round.trigger.get_or_insert(Trigger::Sighup);
                round.flush_last = false;
            }
            Event::Signal(sig) => round.stop = Some(sig),
            Event::Reload(reply) => {
                round.waiters.push(reply);
                round.trigger = Some(Trigger::Control);
                round.flush_last = false;
            }
            Event::Flush(reply) => {
                round.flushers.push(reply);
                round.flush_last = true;
            }
            Event::Drift(b) => {
                round.drifted = Some(match round.drifted.take() {
                    Some(a) => a.merge(b),
                    None => b,
                })
            }
            Event::DriftWatch(r) => d.set_drift_watch(match r {
                Ok(()) => "active".into(),
                Err(e) => format!("unavailable: {e}"),
            }),
        }
    }

    /// Does what the round and the clock call for.
    fn act<D: Dataplane, P: Prober>(&mut self, d: &mut Daemon<D, P>, mut round: Round) {
        let now = d.clock.now();
        if let Some(next) = self.next_ping {
            if now >= next {
                d.notifier.watchdog();
                self.next_ping = self.watchdog.map(|w| now + w);
            }
        }
        if !round.flush_last && !round.flushers.is_empty() {
            d.flush(std::mem::take(&mut round.flushers));
        }
        if d.flushed() {
            // Not enforcing until a reload is asked for: file and interface changes wait for it.
            if round.trigger.is_none() && self.files.due(now) {
                self.files.clear();
                self.files_since = None;
                self.early = None;
                d.changed_while_flushed();
            }
            if self.ifaces.due(now) {
                self.ifaces.clear();
            }
        }
        let trigger = round
            .trigger
            .or_else(|| self.files.due(now).then_some(Trigger::Files));
        if let Some(trigger) = trigger {
            // A full rescan covers pending file and interface events too.
            self.files.clear();
            self.ifaces.clear();
            d.notifier
                .reloading(&format!("reloading ({})", trigger.name()));
            let prepared = self.early.take().filter(|_| trigger == Trigger::Files);
            let since = match trigger {
                Trigger::Files => self.files_since.unwrap_or(now),
                _ => now,
            };
            self.files_since = None;
            let outcome = d.reload_with(trigger, prepared, since);
            let reply = d.reply(&outcome);
            for w in round.waiters {
                let _ = w.send(reply.clone());
            }
            d.notifier.ready(&d.status_line());
        } else if self.ifaces.due(now) {
            self.ifaces.clear();
            if let Some(outcome) = d.interfaces_changed() {
                if !matches!(outcome, Outcome::Unchanged { .. }) {
                    d.notifier.status(&d.status_line());
                }
            }
        }
        if !round.flushers.is_empty() {
            d.flush(std::mem::take(&mut round.flushers));
        }
        // After any reload of this round: a reload that rewrote the table settles the drift too.
        if let Some(burst) = round.drifted {
            d.drift(burst);
        }
        d.drift_due();
        if self.early.is_none() && self.files.pending() && self.files.quiet() < watch::QUIET {
            self.early = Some(d.build());
        }
    }
}

/// SIGTERM/SIGINT: leaves the table in place, answers the waiting clients.
fn stop<D: Dataplane, P: Prober>(
    d: &mut Daemon<D, P>,
    sig: i32,
    waiters: Vec<Sender<Reply>>,
) -> u8 {
    let line = format!(
        "stopping on {}; table inet {} left in place",
        signals::name(sig),
        d.settings.table
    );
    info!(event = "stopped", signal = signals::name(sig), "{line}");
    d.notifier.stopping(&line);
    let reply = d.stopping_reply();
    for w in waiters {
        let _ = w.send(reply.clone());
    }
    exit::OK
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::VecDeque;
    use std::path::{Path, PathBuf};
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::daemon::clock::ManualClock;
    use crate::daemon::watch::Change;
    use crate::engine::tests::Script;
    use crate::nft::DataplaneError;
    use crate::nft::Fake;
    use crate::ruleset::Ruleset;
    use crate::settings::Settings;

    /// A scripted event source in simulated time: each step happens at its time after the start; waiting
    /// for a deadline moves the clock to it. Checks run at their time, between the loop's actions.
    pub(crate) struct Sim {
        clock: ManualClock,
        t0: Instant,
        steps: VecDeque<(Instant, Step)>,
    }

    enum Step {
        Event(Box<dyn FnOnce() -> Event>),
        Check(Box<dyn FnOnce()>),
    }

    impl Sim {
        pub(crate) fn new(clock: &ManualClock) -> Sim {
            Sim {
                clock: clock.clone(),
                t0: clock.now(),
                steps: VecDeque::new(),
            }
        }

        fn add(&mut self, after: Duration, step: Step) -> &mut Sim {
            let at = self.t0 + after;
            let i = self.steps.partition_point(|(t, _)| *t <= at);
            self.steps.insert(i, (at, step));
            self
        }

        /// `event()` is made (and may change files) and delivered at `after`.
        pub(crate) fn at(
            &mut self,
            after: Duration,
            event: impl FnOnce() -> Event + 'static,
        ) -> &mut Sim {
            self.add(after, Step::Event(Box::new(event)))
        }

        /// `check()` runs at `after`, when the loop has done everything due before.
        pub(crate) fn check(
            &mut self,
            after: Duration,
            check: impl FnOnce() + 'static,
        ) -> &mut Sim {
            self.add(after, Step::Check(Box::new(check)))
        }
    }

    /// Every step of the script must have happened: a loop that stopped early fails the test.
    impl Drop for Sim {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                assert!(
                    self.steps.is_empty(),
                    "{} steps of the script never happened",
                    self.steps.len()
                );
            }
        }
    }

    impl Events for Sim {
        fn wait(&mut self, deadline: Option<Instant>) -> Wait {
            loop {
                match self.steps.front() {
                    Some((at, _)) if deadline.is_none_or(|d| *at <= d) => {
                        self.clock.advance_to(*at);
                        match self.steps.pop_front().expect("a step").1 {
                            Step::Event(make) => return Wait::Event(make()),
                            Step::Check(check) => check(),
                        }
                    }
                    _ => {
                        return match deadline {
                            Some(d) => {
                                self.clock.advance_to(d);
                                Wait::Timeout
                            }
                            None => Wait::Closed,
                        }
                    }
                }
            }
        }

        fn ready(&mut self) -> Option<Event> {
            match self.steps.front() {
                Some((at, Step::Event(_))) if *at <= self.clock.now() => {
                    match self.steps.pop_front() {
                        Some((_, Step::Event(make))) => Some(make()),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
    }

    /// The fake kernel (`nft::Fake`: the real swap over a model of nf_tables), shared with the test
    /// while the loop owns the daemon.
    #[derive(Clone, Default)]
    pub(crate) struct Shared(pub Arc<Mutex<Fake>>);

    impl Shared {
        /// The kernel holds exactly `rs` (set names aside) and its content hash.
        pub(crate) fn holds(&self, rs: &Ruleset) -> bool {
            self.0.lock().unwrap().holds(rs)
        }
        /// Our table exists.
        pub(crate) fn has_table(&self) -> bool {
            !self.0.lock().unwrap().no_table("hostpolicy")
        }
        /// Someone deletes our table.
        pub(crate) fn delete_table(&self) {
            self.0.lock().unwrap().kernel().remove_table("hostpolicy");
        }
        /// Someone puts `rs` in place of our table.
        pub(crate) fn load(&self, rs: &Ruleset) {
            self.0.lock().unwrap().load(rs);
        }
        /// Writes made by the daemon (apply, update, flush).
        pub(crate) fn writes(&self) -> usize {
            self.0.lock().unwrap().calls.len()
        }
    }

    impl Dataplane for Shared {
        fn apply(&mut self, ruleset: &Ruleset) -> Result<(), DataplaneError> {
            self.0.lock().unwrap().apply(ruleset)
        }
        fn update(&mut self, previous: &Ruleset, next: &Ruleset) -> Result<(), DataplaneError> {
            self.0.lock().unwrap().update(previous, next)
        }
        fn flush(&mut self, table: &str) -> Result<(), DataplaneError> {
            self.0.lock().unwrap().flush(table)
        }
        fn table_comment(&mut self, table: &str) -> Result<Option<String>, DataplaneError> {
            self.0.lock().unwrap().table_comment(table)
        }
    }

    /// Settings in a fresh temporary directory (removed by the returned guard).
    pub(crate) struct TempRoot(pub PathBuf);

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn settings(tag: &str) -> (Settings, TempRoot) {
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
            flows: Default::default(),
            metrics: Default::default(),
        };
        (s, TempRoot(root))
    }

    /// A daemon on the fake kernel and the manual clock, without interfaces, reading nothing back.
    pub(crate) fn daemon(
        settings: &Settings,
        kernel: &Shared,
        clock: &ManualClock,
    ) -> Daemon<Shared, Script> {
        Daemon::new(
            settings,
            kernel.clone(),
            Script::default(),
            "stderr",
            Box::new(clock.clone()),
        )
        .with_interfaces(|| Ok(Vec::new()))
        .with_fingerprinter(|_| Err(std::io::Error::other("no kernel here")))
    }

    fn hep(iface: &str) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: h}}\n\
             spec: {{node: node1, interfaceName: {iface}}}\n"
        )
    }

    fn hash_of(dir: &Path) -> String {
        let c = crate::pipeline::build_dir(dir, "node1", &[], "hostpolicy").unwrap();
        crate::compile::content_hash(&c.ruleset)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sigterm() -> Event {
        Event::Signal(signal_hook::consts::SIGTERM)
    }

    /// A file saved, then saved again before the short quiet period is over: the loop has read the
    /// directory early, throws that away, and applies the second contents, once.
    #[test]
    fn a_change_during_the_early_build_is_what_gets_applied() {
        let (settings, _root) = settings("early");
        let file = settings.config_dir.join("a.yaml");
        std::fs::write(&file, hep("eth0")).unwrap();
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let mut d = daemon(&settings, &kernel, &clock);
        let status = d.status();
        let written = |iface: &'static str, file: PathBuf| {
            move || {
                std::fs::write(&file, hep(iface)).unwrap();
                Event::Files(vec![(file, Change::Written)])
            }
        };
        let mut sim = Sim::new(&clock);
        sim.at(ms(1000), written("eth1", file.clone()))
            .at(ms(1003), written("eth2", file.clone()))
            .at(ms(5000), sigterm);
        // Within the quiet period after the second save: nothing applied yet.
        let s = status.clone();
        sim.check(ms(1003) + watch::SETTLE - ms(1), move || {
            assert_eq!(s.lock().unwrap().summary.applies, 1, "only the start");
        });
        assert_eq!(run(&mut d, &mut sim, None), exit::OK);
        let s = status.lock().unwrap().clone();
        assert_eq!(s.summary.hash, Some(hash_of(&settings.config_dir)));
        assert_eq!(s.summary.applies, 2, "start, then the last contents once");
        assert_eq!(s.daemon.unwrap().reloads, 2);
    }

    /// File events restart the quiet period; the directory is reloaded once, when it is over.
    #[test]
    fn file_events_wait_for_quiet_and_reload_once() {
        let (settings, _root) = settings("quiet");
        let file = settings.config_dir.join("a.yaml");
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let mut d = daemon(&settings, &kernel, &clock);
        let status = d.status();
        let mut sim = Sim::new(&clock);
        for (i, iface) in ["eth0", "eth1", "eth2"].into_iter().enumerate() {
            let file = file.clone();
            sim.at(ms(100 * i as u64), move || {
                std::fs::write(&file, hep(iface)).unwrap();
                // Created and written, not closed: it may be half-written.
                Event::Files(vec![(file, Change::Writing)])
            });
        }
        let reloads = |s: &Arc<Mutex<crate::daemon::control::Status>>| {
            s.lock().unwrap().daemon.as_ref().unwrap().reloads
        };
        let s = status.clone();
        sim.check(ms(200) + watch::QUIET - ms(1), move || {
            assert_eq!(
                reloads(&s),
                1,
                "still quiet after the last event: only the start"
            )
        });
        let s = status.clone();
        sim.check(ms(200) + watch::QUIET + ms(1), move || {
            assert_eq!(reloads(&s), 2, "reloaded when the quiet period ended")
        });
        sim.at(ms(10_000), sigterm);
        assert_eq!(run(&mut d, &mut sim, None), exit::OK);
        assert_eq!(reloads(&status), 2, "one reload for the burst");
        assert_eq!(
            status.lock().unwrap().summary.hash,
            Some(hash_of(&settings.config_dir))
        );
    }

    /// Interface events are debounced too, and re-resolve the last valid configuration.
    #[test]
    fn interface_events_wait_for_quiet_and_re_resolve_once() {
        let (settings, _root) = settings("ifaces");
        std::fs::write(settings.config_dir.join("a.yaml"), hep("eth0")).unwrap();
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let mut d = daemon(&settings, &kernel, &clock);
        let status = d.status();
        let updates = |s: &Arc<Mutex<crate::daemon::control::Status>>| {
            s.lock().unwrap().daemon.as_ref().unwrap().interface_updates
        };
        let mut sim = Sim::new(&clock);
        sim.at(ms(0), || Event::Interfaces)
            .at(ms(50), || Event::Interfaces);
        let s = status.clone();
        sim.check(ms(50) + IFACE_QUIET - ms(1), move || {
            assert_eq!(updates(&s), 0)
        });
        let s = status.clone();
        sim.check(ms(50) + IFACE_QUIET + ms(1), move || {
            assert_eq!(updates(&s), 1)
        });
        sim.at(ms(5000), sigterm);
        assert_eq!(run(&mut d, &mut sim, None), exit::OK);
        let s = status.lock().unwrap().clone();
        assert_eq!(s.daemon.unwrap().interface_updates, 1);
        assert_eq!(
            s.summary.applies, 1,
            "the same interfaces: nothing new to apply"
        );
    }

    #[test]
    fn a_burst_of_requests_coalesces_into_one_reload_and_every_client_gets_its_result() {
        let (settings, root) = settings("burst");
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let mut d = daemon(&settings, &kernel, &clock);
        let status = d.status();
        // Queued together after the first (start) reload: one round.
        let mut replies = Vec::new();
        let mut sim = Sim::new(&clock);
        for i in 0..3 {
            let (rtx, rrx) = mpsc::channel();
            sim.at(ms(10), move || Event::Reload(rtx));
            replies.push(rrx);
            let file = settings.config_dir.join("a.yaml");
            sim.at(ms(10), move || {
                if i == 1 {
                    Event::Signal(signal_hook::consts::SIGHUP)
                } else {
                    Event::Files(vec![(file, Change::Written)])
                }
            });
        }
        sim.at(ms(1000), sigterm);
        assert_eq!(run(&mut d, &mut sim, None), exit::OK);
        let answers: Vec<Reply> = replies.iter().map(|r| r.try_recv().unwrap()).collect();
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
        assert_eq!(answers[0].exit_code, 0, "{answers:?}");
        assert_eq!(
            answers[0].result, "unchanged",
            "the start reload applied it already: {answers:?}"
        );
        let s = status.lock().unwrap().clone();
        assert_eq!(
            s.daemon.unwrap().reloads,
            2,
            "start + one coalesced reload (files already covered by it)"
        );
        assert_eq!(s.summary.applies, 1);
        assert!(
            root.0
                .join("state")
                .join(crate::engine::state::LAST_GOOD_FILE)
                .exists(),
            "last good saved"
        );
    }

    #[test]
    fn stopping_answers_waiting_clients() {
        let (settings, _root) = settings("stop");
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let mut d = daemon(&settings, &kernel, &clock);
        let (rtx, rrx) = mpsc::channel();
        let mut sim = Sim::new(&clock);
        sim.at(ms(0), move || Event::Reload(rtx)).at(ms(0), sigterm);
        assert_eq!(run(&mut d, &mut sim, None), exit::OK);
        let reply = rrx.try_recv().unwrap();
        assert_eq!(
            (reply.result.as_str(), reply.exit_code),
            ("failed", 2),
            "{reply:?}"
        );
    }

    fn foreign_burst(clock: &ManualClock) -> Burst {
        let mut b = Burst::unknown(clock.now());
        b.lost = false;
        b.foreign = 3;
        b.writers.insert("nft (pid 7)".into());
        b
    }

    /// Someone keeps deleting our table: the first repairs run at once, then the loop waits for the rate
    /// limit and repairs when it allows, once for all the changes meanwhile.
    #[test]
    fn a_persistent_adversary_is_repaired_at_the_pace_of_the_rate_limit() {
        use crate::daemon::drift::Limiter;
        let (settings, _root) = settings("adversary");
        let (clock, kernel) = (ManualClock::new(), Shared::default());
        let mut d = daemon(&settings, &kernel, &clock);
        let status = d.status();
        let repairs = |s: &Arc<Mutex<crate::daemon::control::Status>>| {
            s.lock().unwrap().summary.drift_repairs
        };
        let mut sim = Sim::new(&clock);
        let free = u64::from(Limiter::FREE);
        for i in 0..=free + 1 {
            let (k, c) = (kernel.clone(), clock.clone());
            sim.at(ms(10 * (i + 1)), move || {
                k.delete_table();
                Event::Drift(foreign_burst(&c))
            });
        }
        // The free repairs ran at once; the next waits for the limiter's first delay.
        let s = status.clone();
        let k = kernel.clone();
        sim.check(ms(10 * (free + 2)) + ms(1), move || {
            assert_eq!(repairs(&s), free);
            assert!(!k.has_table(), "deleted, the repair waits");
        });
        let s = status.clone();
        sim.check(ms(10 * free) + Limiter::FIRST_DELAY - ms(1), move || {
            assert_eq!(repairs(&s), free)
        });
        let s = status.clone();
        let k = kernel.clone();
        sim.check(ms(10 * free) + Limiter::FIRST_DELAY + ms(1), move || {
            assert_eq!(repairs(&s), free + 1, "one repair for both changes");
            assert!(k.has_table());
        });
        sim.at(ms(60_000), sigterm);
        assert_eq!(run(&mut d, &mut sim, None), exit::OK);
        assert_eq!(repairs(&status), free + 1);
        assert_eq!(kernel.writes(), 1 + free as usize + 1);
    }
}
