//! The drift thread: listens to nf_tables notifications and sends the writer loop one [`Burst`] per
//! burst of changes to our table (see the [module documentation](super)).

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::burst::{Collector, CAP, QUIET};
use crate::daemon::nftmon::{self, Received};
use crate::daemon::watch::Debouncer;
use crate::daemon::Event;

/// Starts the drift thread for `table`. It runs as long as the writer loop listens.
pub fn spawn(table: String, tx: Sender<Event>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("drift".into())
        .spawn(move || watch(&table, &tx))?;
    Ok(())
}

fn watch(table: &str, tx: &Sender<Event>) {
    let mut first = true;
    loop {
        let mut monitor = match nftmon::Monitor::subscribe() {
            Ok(m) => m,
            Err(e) => {
                let msg = format!("cannot subscribe to nftables changes: {e}");
                warn!(event = "drift_unwatched", "{msg}; retrying in 5 s");
                if tx.send(Event::DriftWatch(Err(msg))).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        if tx.send(Event::DriftWatch(Ok(()))).is_err() {
            return;
        }
        let mut collector = Collector::new(table, nftmon::own_port());
        let mut debounce = Debouncer::new(QUIET, CAP);
        if !first {
            // Changes made while nobody listened are unknown: compare the table once.
            collector.lost(Instant::now());
            debounce.touch(Instant::now());
        }
        first = false;
        loop {
            let timeout = debounce
                .deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let received = monitor.recv(timeout);
            let now = Instant::now();
            match received {
                Ok(Received::Notes(notes)) => {
                    for n in &notes {
                        if collector.note(n, now) {
                            debounce.touch(now);
                        }
                    }
                }
                Ok(Received::Lost) => {
                    debug!(
                        event = "drift_notifications_lost",
                        "nftables notifications were dropped; the table will be compared"
                    );
                    collector.lost(now);
                    debounce.touch(now);
                }
                Ok(Received::Nothing) => {}
                Err(e) => {
                    warn!(
                        event = "drift_unwatched",
                        "nftables monitor: {e}; subscribing again"
                    );
                    if let Some(b) = collector.take() {
                        let _ = tx.send(Event::Drift(b));
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    break;
                }
            }
            if debounce.due(Instant::now()) {
                debounce.clear();
                if let Some(b) = collector.take() {
                    if tx.send(Event::Drift(b)).is_err() {
                        return;
                    }
                }
            }
        }
    }
}
