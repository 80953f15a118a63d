//! Settings resolved from the command line (flags → settings, as ripgrep splits them): what the commands
//! and the daemon work with. `cli` parses the flags and makes these; everything below it only reads them.

use std::path::PathBuf;
use std::time::Duration;

/// Settings resolved from the flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_dir: PathBuf,
    pub node: String,
    pub table: String,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
    /// Flow records: what the table logs, and how the daemon keeps the records.
    pub flows: Flows,
    /// The Prometheus textfile.
    pub metrics: Metrics,
}

/// Flow records (issue 14): the kernel table sends denied packets, the first packet of every allowed
/// connection and samples of untracked allowed packets to an NFLOG group and marks the connections it
/// allowed; the daemon listens there and to conntrack's end-of-connection events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flows {
    /// `--flow-records off`: none of it (no NFLOG rule, no conntrack mark, no listener).
    pub enabled: bool,
    /// `--flows-nflog-group`: the NFLOG group (one owner per network namespace).
    pub nflog_group: u16,
    /// `--flows-log-rate`: per rule, packets per second a deny (or a sampled untracked allow, or a
    /// staged policy's would-be verdict) sends to the daemon at most; the burst is [`Flows::burst`].
    pub log_rate: u32,
    /// `--flows-max-records`: the flows table's size; the oldest record goes first.
    pub max_records: usize,
    /// `--flows-interval`: how often denied aggregates are logged (once each per interval).
    pub interval: Duration,
    /// `--log-allowed-flows`: allowed aggregates are logged to the journal too.
    pub log_allowed: bool,
}

impl Flows {
    pub const DEFAULT_GROUP: u16 = 1024;
    pub const DEFAULT_RATE: u32 = 20;
    pub const DEFAULT_MAX_RECORDS: usize = 100_000;
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

    /// The token bucket's depth: a burst of this many packets goes through at once.
    pub fn burst(&self) -> u32 {
        (self.log_rate.saturating_mul(5) / 2).clamp(5, 1 << 20)
    }
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            enabled: true,
            nflog_group: Flows::DEFAULT_GROUP,
            log_rate: Flows::DEFAULT_RATE,
            max_records: Flows::DEFAULT_MAX_RECORDS,
            interval: Flows::DEFAULT_INTERVAL,
            log_allowed: false,
        }
    }
}

/// The Prometheus textfile (node_exporter's textfile collector reads it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// `--metrics-file`: off when `None`.
    pub file: Option<PathBuf>,
    /// `--metrics-interval`.
    pub interval: Duration,
}

impl Metrics {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
}

/// The kernel's host name (what Calico uses as the default node name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
