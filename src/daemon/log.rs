//! Logging with `tracing`: to journald (tracing-journald) when `/run/systemd/journal/socket` exists,
//! to stderr (tracing-subscriber's fmt) otherwise; never a reason not to start.
//!
//! Every event carries `event=` (applied, unchanged, rejected, rolled_back, check_failed, not_retried,
//! apply_failed, warning, started, stopped, ...) and the fields that matter for it: `generation`, `hash`,
//! `file`, `line`, `policy`, `check`, `check_target`, `trigger`. In journald they become the fields `EVENT`,
//! `GENERATION`, ... (no prefix); the human text is `MESSAGE`, and for configuration problems it is the
//! diagnostic as `hostpolicyd check` prints it: `FILE:LINE:COL: error: MESSAGE`. No field of ours may be
//! named like one of tracing-journald's own (`TARGET`: the module, `CODE_FILE`, `CODE_LINE`, `PRIORITY`,
//! `MESSAGE`...): journald would keep both values and `journalctl -o json` show the field as an array.
//!
//! The filter is `HOSTPOLICYD_LOG` (tracing's env-filter syntax), default [`DEFAULT_FILTER`].

use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::diag::{self, Diagnostic, MAX_KEPT};
use crate::engine::{short, Outcome};

pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// What is logged unless `HOSTPOLICYD_LOG` says otherwise.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber; returns where logs go (`journald` or `stderr`).
pub fn init() -> &'static str {
    let filter = || {
        EnvFilter::try_from_env("HOSTPOLICYD_LOG")
            .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
    };
    if Path::new(JOURNAL_SOCKET).exists() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier("hostpolicyd".into());
            if tracing_subscriber::registry()
                .with(filter())
                .with(layer)
                .try_init()
                .is_ok()
            {
                return "journald";
            }
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(fmt)
        .try_init();
    "stderr"
}

fn pos_fields(d: &Diagnostic) -> (String, u32, u32) {
    match &d.pos {
        Some(p) => (p.file.to_string(), p.line, p.column),
        None => (String::new(), 0, 0),
    }
}

/// Validation warnings of an applied configuration.
pub fn warnings(diags: &[Diagnostic]) {
    let warnings = || diags.iter().filter(|d| !d.is_error());
    for d in warnings().take(MAX_KEPT) {
        let (file, line, column) = pos_fields(d);
        warn!(event = "warning", file, line, column, "{d}");
    }
    let more = warnings().count().saturating_sub(MAX_KEPT);
    if more > 0 {
        warn!(event = "warning", more, "{}", diag::more_line(more));
    }
}

/// When a reload began, for the timing fields of its `applied` and `unchanged` events.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The reading of the directory began (during the quiet period when the daemon reads early).
    pub started: Instant,
    /// What asked for the reload happened: the first file event of the burst, the signal, the request.
    pub since: Instant,
    /// [`crate::netlink::batch_time`] before the reload.
    pub kernel_before: Duration,
}

/// The timing fields of an `applied` or `unchanged` event, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    /// `duration_ms`: reading, validating, compiling and applying (the kernel's answer to the commit,
    /// and the connectivity checks after it when the configuration has any).
    pub duration_ms: f64,
    /// `latency_ms`: from the first file event (or the signal or request) to the same point: what an
    /// operator waits for after saving a file.
    pub latency_ms: f64,
    /// `kernel_ms`: the kernel's own time for the transactions (each batch's `sendmsg` until its answer).
    pub kernel_ms: f64,
}

impl Timing {
    /// The fields, the reload having ended at `now`.
    pub fn done(&self, now: Instant) -> Timed {
        let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        Timed {
            duration_ms: ms(now.saturating_duration_since(self.started)),
            latency_ms: ms(now.saturating_duration_since(self.since)),
            kernel_ms: ms(crate::netlink::batch_time()
                .1
                .saturating_sub(self.kernel_before)),
        }
    }
}

/// Logs one reconcile outcome. `trigger` says why it ran (start, file change, SIGHUP, control socket,
/// interfaces); `timed`: how long a reload took (not for interface updates). Unchanged results of
/// interface updates are logged at debug level only.
pub fn outcome(o: &Outcome, trigger: &str, table: &str, timed: Option<&Timed>) {
    let message = o.message(table);
    let (duration_ms, latency_ms, kernel_ms) = timed
        .map(|t| (t.duration_ms, t.latency_ms, t.kernel_ms))
        .unwrap_or_default();
    match o {
        Outcome::Applied {
            generation,
            hash,
            checks,
        } => {
            for c in checks.failing_before() {
                warn!(
                    event = "check_failed",
                    check = c.name,
                    check_target = c.target,
                    phase = "baseline",
                    "check {} ({}) fails already before the swap, so it cannot judge this change: {}",
                    c.name,
                    c.target,
                    c.detail
                );
            }
            if timed.is_some() {
                info!(
                    event = "applied",
                    generation, hash, trigger, duration_ms, latency_ms, kernel_ms, "{message}"
                );
            } else {
                info!(event = "applied", generation, hash, trigger, "{message}");
            }
        }
        Outcome::Unchanged { generation, hash } if trigger == "interfaces" => {
            debug!(event = "unchanged", generation, hash, trigger, "{message}");
        }
        Outcome::Unchanged { generation, hash } if timed.is_some() => {
            info!(
                event = "unchanged",
                generation, hash, trigger, duration_ms, latency_ms, "{message}"
            )
        }
        Outcome::Unchanged { generation, hash } => {
            info!(event = "unchanged", generation, hash, trigger, "{message}")
        }
        Outcome::Invalid { diagnostics } => {
            // The first few and a count: a file can hold a million errors (`check` prints them all).
            let more = diagnostics.len().saturating_sub(MAX_KEPT);
            for d in diagnostics.iter().take(MAX_KEPT) {
                let (file, line, column) = pos_fields(d);
                if d.is_error() {
                    error!(event = "rejected", file, line, column, trigger, "{d}");
                } else {
                    warn!(event = "warning", file, line, column, trigger, "{d}");
                }
            }
            if more > 0 {
                error!(
                    event = "rejected",
                    more,
                    trigger,
                    "{}",
                    diag::more_line(more)
                );
            }
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            error!(event = "rejected", errors, trigger, "{message}");
        }
        Outcome::RolledBack {
            hash,
            failed,
            restored,
            policies,
            ..
        } => {
            for c in &failed[..] {
                error!(
                    event = "check_failed",
                    check = c.name,
                    check_target = c.target,
                    phase = "after",
                    hash,
                    "check {} ({}) passed before the swap and fails after it: {}",
                    c.name,
                    c.target,
                    c.detail
                );
            }
            let generation = match restored {
                crate::engine::Restored::Previous { generation, .. } => *generation,
                crate::engine::Restored::Flushed => 0,
            };
            let check = failed
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let policy = policies.join(",");
            error!(
                event = "rolled_back",
                generation, hash, check, policy, trigger, "{message}"
            );
        }
        Outcome::NotRetried { hash, failed } => {
            let check = failed.join(",");
            warn!(event = "not_retried", hash, check, trigger, "{message}");
        }
        Outcome::Failed {
            hash, new_in_force, ..
        } => {
            let hash = hash.as_deref().map(short).unwrap_or("");
            error!(
                event = "apply_failed",
                hash, new_in_force, trigger, "{message}"
            );
        }
    }
}
