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

/// Logs one reconcile outcome. `trigger` says why it ran (start, file change, SIGHUP, control socket,
/// interfaces). Unchanged results of interface updates are logged at debug level only.
pub fn outcome(o: &Outcome, trigger: &str, table: &str) {
    let message = o.message(table);
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
            info!(event = "applied", generation, hash, trigger, "{message}");
        }
        Outcome::Unchanged { generation, hash } if trigger == "interfaces" => {
            debug!(event = "unchanged", generation, hash, trigger, "{message}");
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
