//! `hostpolicyd run`: the long-running service (DESIGN.md "Daemon life cycle").
//!
//! - [`run`] (here) starts the threads and the watcher, and runs the loop with the system's clock;
//! - [`event_loop`]: waits for events and decides when to act, reading the time from a [`clock::Clock`];
//! - [`service`]: the [`Daemon`] and what it does: reload, follow the interfaces, answer clients;
//! - [`drift`]: the drift state machine (guard, compare, repair, rate limit) and its nftables listener;
//! - [`watch`] (files), [`control`] (the socket), [`systemd`] (sd_notify), [`signals`], [`log`].
//!
//! One writer: the main thread owns the engine and is the only code that writes to the kernel or the state
//! directory. Every other thread only turns something into an [`Event`] on one channel:
//!
//! - `notify`'s thread: configuration file events, already filtered ([`watch`]);
//! - the signal thread: SIGHUP (reload), SIGTERM/SIGINT (stop, leaving the table in place) ([`signals`]);
//! - the interface thread: rtnetlink link/address changes ([`crate::host::iface::Monitor`]);
//! - the control socket: `reload` and `flush` requests, each with a reply channel ([`control`]);
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

#[deny(unsafe_code)]
pub mod clock;
#[deny(unsafe_code)]
pub mod control;
#[deny(unsafe_code)]
pub mod drift;
#[deny(unsafe_code)]
pub mod event_loop;
#[deny(unsafe_code)]
pub mod flows;
#[deny(unsafe_code)]
pub mod log;
#[deny(unsafe_code)]
pub mod metrics;
#[deny(unsafe_code)]
pub mod nftmon;
#[deny(unsafe_code)]
pub mod service;
#[deny(unsafe_code)]
pub mod signals;
#[deny(unsafe_code)]
pub mod systemd;
#[deny(unsafe_code)]
pub mod watch;

use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use tracing::{error, warn};

use crate::exit;
use crate::host::probe::NetProber;
use crate::nft::Netlink;
use crate::settings::Settings;

use clock::SystemClock;
use control::Reply;
use drift::Burst;
use watch::Watch;

pub use service::Daemon;

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
    /// `hostpolicyd flush`: delete our table and enforce nothing until the next reload; answer on the
    /// channel.
    Flush(Sender<Reply>),
    /// nftables changes to our table (a burst, see [`drift`]).
    Drift(Burst),
    /// The drift thread subscribed to nftables changes (Ok), or cannot (why).
    DriftWatch(Result<(), String>),
}

/// Runs the daemon until SIGTERM/SIGINT. Returns the process exit status.
pub fn run(settings: &Settings) -> u8 {
    // Before any thread is started: see `one_arena`.
    crate::host::mem::one_arena();
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
    let mut d = Daemon::new(settings, dp, NetProber, log, Box::new(SystemClock));
    let mut watch = match Watch::start(&settings.config_dir, tx.clone()) {
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
    if let Some(path) = &settings.metrics.file {
        let interval = if settings.metrics.interval.is_zero() {
            crate::settings::Metrics::DEFAULT_INTERVAL
        } else {
            settings.metrics.interval
        };
        match metrics::Metrics::spawn(
            path.clone(),
            interval,
            settings.table.clone(),
            d.status(),
            d.flows(),
        ) {
            Ok(m) => d.set_metrics(m),
            Err(e) => warn!(
                event = "metrics_unwritable",
                "cannot start the metrics thread: {e}; no metrics file"
            ),
        }
    }
    if let Err(e) = d.flows().spawn() {
        warn!(
            event = "flows_unavailable",
            "cannot start the flows thread: {e}; flow records are off"
        );
    }
    let code = match control::spawn(listener, d.status(), tx.clone(), d.flows()) {
        Err(e) => {
            error!(event = "startup_failed", "control socket: {e}");
            exit::INTERNAL
        }
        Ok(()) => {
            if let Err(e) = drift::spawn(settings.table.clone(), tx.clone()) {
                warn!(
                    event = "drift_unwatched",
                    "cannot start the nftables monitor: {e}; our table is not guarded against changes by others"
                );
                d.set_drift_watch(format!("unavailable: {e}"));
            }
            spawn_interface_monitor(tx);
            let clock = SystemClock;
            let mut events = event_loop::Channel { rx, clock: &clock };
            event_loop::run(&mut d, &mut events, watch.as_mut())
        }
    };
    let _ = std::fs::remove_file(control::socket_path(&settings.runtime_dir));
    code
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
