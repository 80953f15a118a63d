//! systemd's notification protocol (`Type=notify`) through the `sd-notify` crate: READY=1 after the first
//! apply decision, RELOADING=1 (with MONOTONIC_USEC) and READY=1 around each reload, STATUS= with a one-line
//! summary, WATCHDOG=1 every WATCHDOG_USEC/2 when the watchdog is on, STOPPING=1 on the way out. Without
//! NOTIFY_SOCKET every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let env = |k: &str| std::env::var(k).ok();
        let watchdog = if enabled {
            watchdog_interval(
                env("WATCHDOG_USEC"),
                env("WATCHDOG_PID"),
                std::process::id(),
            )
        } else {
            None
        };
        Notifier { enabled, watchdog }
    }

    /// How often to send WATCHDOG=1 (half of WATCHDOG_USEC), when the watchdog is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, states: &[NotifyState]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(false, states) {
                tracing::debug!(event = "notify_failed", "sd_notify: {e}");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
    }

    pub fn reloading(&self, status: &str) {
        let status = one_line(status);
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now, NotifyState::Status(&status)]),
            Err(_) => self.send(&[NotifyState::Reloading, NotifyState::Status(&status)]),
        }
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(&one_line(status))]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status(&one_line(status)),
        ]);
    }
}

/// Half of WATCHDOG_USEC, as sd_watchdog_enabled(3) decides it: the watchdog is on when WATCHDOG_USEC is
/// a positive number and WATCHDOG_PID is unset or names this process. (`sd_notify::watchdog_enabled`
/// requires WATCHDOG_PID, which systemd sets but other supervisors may not.)
fn watchdog_interval(usec: Option<String>, pid: Option<String>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// STATUS= is one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_follows_sd_watchdog_enabled() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            watchdog_interval(s("2000000"), None, 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(s("2000000"), s("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(s("2000000"), s("8"), 7),
            None,
            "another process's watchdog"
        );
        assert_eq!(watchdog_interval(s("0"), None, 7), None);
        assert_eq!(watchdog_interval(s("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, s("7"), 7), None);
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\n\n  b \n"), "a; b");
    }
}
