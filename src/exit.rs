//! The exit statuses of the command-line contract (DESIGN.md "Command line"), defined once.
//!
//! They live below every stage because the daemon's control replies carry them too (`reload` exits
//! with the status of the reload the daemon ran), not only the commands of `cli`.

/// Success.
pub const OK: u8 = 0;
/// The configuration is invalid, or would lock a management source out: nothing changed.
pub const INVALID: u8 = 1;
/// The apply failed or was rolled back: the previous ruleset is in force.
pub const APPLY_FAILED: u8 = 2;
/// `status`, `reload`, `flows`: no daemon answers on the control socket.
pub const NOT_RUNNING: u8 = 3;
/// `status`: the daemon runs but the node is not enforcing its configuration as it stands: the
/// configuration is invalid or its last apply failed or was rolled back (the last good ruleset is in
/// force), the table was flushed, or the kernel holds no table of ours (`Summary::problems`).
pub const DEGRADED: u8 = 4;
/// `plan --exit-code`: some verdict changes (the same number as [`DEGRADED`], for another command).
pub const PLAN_CHANGES: u8 = 4;
/// Usage error (bad flags).
pub const USAGE: u8 = 64;
/// Internal error (an I/O error we did not expect, the kernel refused to talk).
pub const INTERNAL: u8 = 70;
