//! Settings resolved from the command line (flags → settings, as ripgrep splits them): what the commands
//! and the daemon work with. `cli` parses the flags and makes these; everything below it only reads them.

use std::path::PathBuf;

/// Settings resolved from the flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_dir: PathBuf,
    pub node: String,
    pub table: String,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

/// The kernel's host name (what Calico uses as the default node name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
