//! systemd's notification protocol (`Type=notify`): READY=1 after the first apply decision, RELOADING=1
//! (with MONOTONIC_USEC) and READY=1 around each reload, STATUS= with a one-line summary, WATCHDOG=1 every
//! WATCHDOG_USEC/2 when the watchdog is on, STOPPING=1 on the way out. Without NOTIFY_SOCKET every call is
//! a no-op.
//!
//! The messages are formatted by the `sd-notify` crate and sent here, on a non-blocking socket: a
//! supervisor that stops reading (its datagram queue is full: `net.unix.max_dgram_qlen`, 10 by default)
//! must not stop the event loop, which would then apply no file change (issue 17 item 14; the crate's
//! `notify` blocks). A notification that cannot be queued is dropped and counted ([`Notifier::dropped`],
//! in `status`); the next one carries the current state again.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

pub struct Notifier {
    /// Our socket and the supervisor's address; None: notifications are off.
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    dropped: AtomicU64,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier::off();
        };
        let env = |k: &str| std::env::var(k).ok();
        let watchdog = watchdog_interval(
            env("WATCHDOG_USEC"),
            env("WATCHDOG_PID"),
            std::process::id(),
        );
        match Notifier::open(std::path::Path::new(&path)) {
            Ok(socket) => Notifier {
                socket: Some(socket),
                watchdog,
                dropped: AtomicU64::new(0),
            },
            Err(e) => {
                tracing::warn!(
                    event = "notify_failed",
                    "NOTIFY_SOCKET={}: {e}; systemd will not hear from the daemon",
                    path.to_string_lossy()
                );
                Notifier::off()
            }
        }
    }

    /// Notifications to the datagram socket at `path` (`@name`: abstract), without the watchdog.
    pub fn to_socket(path: &std::path::Path) -> io::Result<Notifier> {
        Ok(Notifier {
            socket: Some(Notifier::open(path)?),
            watchdog: None,
            dropped: AtomicU64::new(0),
        })
    }

    fn off() -> Notifier {
        Notifier {
            socket: None,
            watchdog: None,
            dropped: AtomicU64::new(0),
        }
    }

    fn open(path: &std::path::Path) -> io::Result<(UnixDatagram, SocketAddr)> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(path)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok((socket, addr))
    }

    /// How often to send WATCHDOG=1 (half of WATCHDOG_USEC), when the watchdog is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Notifications dropped because the supervisor's queue was full (or it could not be reached).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, states: &[NotifyState]) {
        let Some((socket, addr)) = &self.socket else {
            return;
        };
        let mut msg = String::new();
        for s in states {
            msg.push_str(&s.to_string());
            msg.push('\n');
        }
        // Sent to the address each time (not connected): a re-executed systemd binds its socket anew.
        if let Err(e) = socket.send_to_addr(msg.as_bytes(), addr) {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before == 0 {
                tracing::warn!(
                    event = "notify_dropped",
                    "a notification to systemd was dropped ({e}); dropped ones are counted in `status`"
                );
            } else {
                tracing::debug!(event = "notify_dropped", "sd_notify: {e}");
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

    fn socket_dir(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hostpolicyd-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn notifications_reach_the_supervisor_as_sd_notify_formats_them() {
        let dir = socket_dir("format");
        let supervisor = UnixDatagram::bind(dir.join("notify")).unwrap();
        let n = Notifier::to_socket(&dir.join("notify")).unwrap();
        n.ready("generation 1\napplied");
        n.watchdog();
        let mut buf = [0u8; 256];
        let len = supervisor.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=generation 1; applied\n");
        let len = supervisor.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1\n");
        assert_eq!(n.dropped(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 17 item 14: with a blocking send, a supervisor that stops reading (a full datagram queue)
    /// stopped the event loop. Now the sender never waits: what cannot be queued is dropped and counted.
    #[test]
    fn a_supervisor_that_stops_reading_does_not_block_the_sender() {
        let dir = socket_dir("stalled");
        let supervisor = UnixDatagram::bind(dir.join("notify")).unwrap();
        let n = Notifier::to_socket(&dir.join("notify")).unwrap();
        const SENT: u64 = 200;
        let (done, finished) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            for i in 0..SENT {
                n.status(&format!("reload {i}"));
            }
            let _ = done.send(());
            n
        });
        // Far more than the queue holds (10 datagrams by default): a blocking sender never gets here.
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("the sender was blocked by the supervisor's full queue");
        let n = sender.join().unwrap();
        let mut queued = 0;
        supervisor.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        while supervisor.recv(&mut buf).is_ok() {
            queued += 1;
        }
        assert!(n.dropped() > 0, "some were dropped");
        assert_eq!(
            queued + n.dropped(),
            SENT,
            "each one is either queued or counted"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
