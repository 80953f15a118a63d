//! The control socket: `control.sock` in `--runtime-dir` (default `/run/hostpolicyd`), mode 0600, and a
//! peer-credential check on every connection (root or the daemon's own user only).
//!
//! Protocol: the client sends one line, `status`, `reload` or `flush`; the daemon answers with one JSON
//! document and closes. `status` is answered from the published summary at once (also during a reload);
//! `reload` is handed to the writer loop and answered when that reload is done, with its result, so that
//! `ExecReload=hostpolicyd reload` reports failures instead of racing a signal. `flush` too: the writer
//! deletes the table and stops enforcing until the next reload (`hostpolicyd flush` with a daemon).
//!
//! The socket doubles as the single-instance lock: a daemon refuses to start while another one answers on it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Event;
use crate::engine::state::Summary;

pub const SOCKET_NAME: &str = "control.sock";

/// How long a client waits for a reload (checks are bounded by their own timeouts, twice per reload).
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(300);
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(SOCKET_NAME)
}

/// The running daemon, beside the summary of what is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub started_at: String,
    pub config_dir: String,
    pub state_dir: String,
    /// Reloads done since start (file changes, SIGHUP, `hostpolicyd reload`; not interface changes).
    pub reloads: u64,
    /// Re-resolutions after interface or address changes.
    pub interface_updates: u64,
    /// True while a reload runs.
    pub busy: bool,
    /// `journald` or `stderr`.
    pub log: String,
    /// Whether nftables changes are watched for drift: `active`, or why not.
    #[serde(default)]
    pub drift_watch: String,
    /// Bursts of nftables changes to our table examined (our own writes included).
    #[serde(default)]
    pub drift_checks: u64,
    /// Notifications to systemd (READY=1, STATUS=, WATCHDOG=1...) dropped because its queue was full.
    #[serde(default)]
    pub notify_dropped: u64,
    /// Bursts of configuration file changes not applied because the table is flushed (`hostpolicyd
    /// flush`) since the flush; the next reload applies them.
    #[serde(default)]
    pub changes_while_flushed: u64,
}

/// What `hostpolicyd status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// None when read from the state directory because no daemon answered.
    pub daemon: Option<DaemonInfo>,
    #[serde(flatten)]
    pub summary: Summary,
    /// Why the node is not enforcing its configuration as it stands (`Summary::problems`, filled by
    /// `hostpolicyd status`, which exits 4 when there are any); empty when all is well.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// The answer to `reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// `applied`, `unchanged`, `invalid`, `rolled_back`, `not_retried`, `failed`; `flushed` for `flush`.
    pub result: String,
    /// What `hostpolicyd reload` exits with: 0 applied or unchanged, 1 invalid, 2 rolled back or failed.
    pub exit_code: u8,
    pub message: String,
    /// `FILE:LINE:COL: error: MESSAGE` (and warnings), one per entry.
    pub diagnostics: Vec<String>,
    pub generation: u64,
    pub hash: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrorReply {
    error: String,
}

/// Creates the runtime directory and binds the socket; fails when another daemon answers on it.
pub fn bind(runtime_dir: &Path) -> io::Result<UnixListener> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(runtime_dir)?;
    let path = socket_path(runtime_dir);
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another hostpolicyd answers on {}", path.display()),
            ));
        }
        // Left behind by a daemon that died.
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the socket on its own thread, one short-lived thread per connection.
pub fn spawn(
    listener: UnixListener,
    status: Arc<Mutex<Status>>,
    tx: Sender<Event>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                let (status, tx) = (status.clone(), tx.clone());
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        if let Err(e) = handle(stream, &status, &tx) {
                            tracing::debug!(event = "control_error", "control connection: {e}");
                        }
                    });
            }
        })?;
    Ok(())
}

fn handle(mut stream: UnixStream, status: &Mutex<Status>, tx: &Sender<Event>) -> io::Result<()> {
    let uid = peer_uid(&stream)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if uid != 0 && uid != me {
        return write_json(
            &mut stream,
            &ErrorReply {
                error: format!("permission denied for uid {uid}"),
            },
        );
    }
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(1024)).read_line(&mut line)?;
    match line.trim() {
        "status" => {
            let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
            write_json(&mut stream, &s)
        }
        request @ ("reload" | "flush") => {
            let (rtx, rrx) = mpsc::channel();
            let event = if request == "reload" {
                Event::Reload(rtx)
            } else {
                Event::Flush(rtx)
            };
            if tx.send(event).is_err() {
                return write_json(
                    &mut stream,
                    &ErrorReply {
                        error: "the daemon is stopping".into(),
                    },
                );
            }
            match rrx.recv() {
                Ok(reply) => write_json(&mut stream, &reply),
                Err(_) => write_json(
                    &mut stream,
                    &ErrorReply {
                        error: "the daemon stopped before replying".into(),
                    },
                ),
            }
        }
        other => write_json(
            &mut stream,
            &ErrorReply {
                error: format!("unknown request {other:?}"),
            },
        ),
    }
}

fn write_json<T: Serialize>(stream: &mut UnixStream, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    // SAFETY: ucred is plain data; all-zero is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred/len are valid for writing; the fd is a connected Unix socket.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no hostpolicyd daemon is running (nothing answers on {path}: {source})")]
    NotRunning { path: PathBuf, source: io::Error },
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the daemon refused: {0}")]
    Refused(String),
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// Sends one request and returns the daemon's JSON answer.
fn request(runtime_dir: &Path, what: &str, timeout: Duration) -> Result<String, ClientError> {
    let path = socket_path(runtime_dir);
    let mut stream = UnixStream::connect(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            path: path.clone(),
            source,
        },
        _ => ClientError::Io {
            path: path.clone(),
            source,
        },
    })?;
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(format!("{what}\n").as_bytes())
        .map_err(io)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(io)?;
    if let Ok(e) = serde_json::from_str::<ErrorReply>(&answer) {
        return Err(ClientError::Refused(e.error));
    }
    Ok(answer)
}

pub fn status(runtime_dir: &Path) -> Result<Status, ClientError> {
    let answer = request(runtime_dir, "status", STATUS_TIMEOUT)?;
    serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(format!("{e}: {answer}")))
}

pub fn reload(runtime_dir: &Path) -> Result<Reply, ClientError> {
    let answer = request(runtime_dir, "reload", RELOAD_TIMEOUT)?;
    serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(format!("{e}: {answer}")))
}

/// Asks the daemon to delete its table and enforce nothing until the next reload.
pub fn flush(runtime_dir: &Path) -> Result<Reply, ClientError> {
    let answer = request(runtime_dir, "flush", RELOAD_TIMEOUT)?;
    serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(format!("{e}: {answer}")))
}

/// `hostpolicyd status` for people.
pub fn format_status(s: &Status) -> String {
    use std::fmt::Write as _;
    let m = &s.summary;
    let mut out = String::new();
    match &s.daemon {
        Some(d) => {
            let _ = writeln!(
                out,
                "hostpolicyd running (pid {}, since {}), node {}, table inet {}{}",
                d.pid,
                d.started_at,
                m.node,
                m.table,
                if d.busy { ", reloading now" } else { "" }
            );
            let _ = writeln!(
                out,
                "config dir {}, state dir {}, logging to {}",
                d.config_dir, d.state_dir, d.log
            );
        }
        None => {
            let _ = writeln!(
                out,
                "hostpolicyd is not running; last recorded state (node {}, table inet {}):",
                m.node, m.table
            );
        }
    }
    match (&m.hash, &m.applied_at) {
        (Some(h), at) => {
            let _ = writeln!(
                out,
                "generation {}, sha256:{h}, applied {}",
                m.generation,
                at.as_deref().unwrap_or("(time unknown)")
            );
        }
        (None, _) => {
            let _ = writeln!(out, "no ruleset applied by hostpolicyd");
        }
    }
    if s.problems.is_empty() && s.daemon.is_some() {
        let _ = writeln!(out, "state: enforcing the configuration");
    }
    for problem in &s.problems {
        let _ = writeln!(out, "DEGRADED: {problem}");
    }
    if !m.kernel.is_empty() {
        let _ = writeln!(out, "kernel table: {}", m.kernel);
    }
    if let Some(r) = &m.last_result {
        let _ = writeln!(
            out,
            "last reload: {r} at {}",
            m.last_result_at.as_deref().unwrap_or("?")
        );
    }
    if m.endpoints.is_empty() {
        let _ = writeln!(out, "host endpoints: none on this node");
    } else {
        let _ = writeln!(out, "host endpoints:");
        for ep in &m.endpoints {
            let ifaces = if ep.wildcard {
                "* (all other interfaces)".to_string()
            } else {
                ep.interfaces.join(", ")
            };
            let ifaces = if ifaces.is_empty() {
                "no interface".to_string()
            } else {
                ifaces
            };
            let _ = writeln!(out, "  {} ({ifaces})", ep.name);
            if ep.policies.is_empty() {
                let _ = writeln!(out, "    no policy: default deny (failsafe ports open)");
            }
            for sp in &ep.policies {
                let _ = writeln!(out, "    {} {}: {}", sp.stage, sp.direction, sp.text());
            }
            if !ep.profiles.is_empty() {
                let _ = writeln!(out, "    profiles: {}", ep.profiles.join(", "));
            }
        }
    }
    if !m.checks.is_empty() {
        let _ = writeln!(out, "connectivity checks: {}", m.checks.join(", "));
    }
    match &m.last_error {
        Some(e) => {
            let _ = writeln!(out, "last error ({}): {} [{}]", e.kind, e.message, e.at);
            for d in &e.diagnostics {
                let _ = writeln!(out, "  {d}");
            }
        }
        None => {
            let _ = writeln!(out, "last error: none");
        }
    }
    match &m.last_rollback {
        Some(r) => {
            let _ = writeln!(
                out,
                "last rollback: {} rejected sha256:{}, in force: {}",
                r.at, r.rejected_hash, r.restored
            );
            for c in &r.failed_checks {
                let _ = writeln!(
                    out,
                    "  check {} ({}) failed: {}",
                    c.name, c.target, c.detail
                );
            }
            if !r.policies.is_empty() {
                let _ = writeln!(out, "  new or changed policies: {}", r.policies.join(", "));
            }
        }
        None => {
            let _ = writeln!(out, "last rollback: none");
        }
    }
    if let Some(d) = &m.last_drift {
        let by = if d.by.is_empty() {
            String::new()
        } else {
            format!(" by {}", d.by.join(", "))
        };
        let result = match (&d.error, d.repaired) {
            (_, true) => format!("repaired in {} ms", d.latency_ms),
            (Some(e), false) => format!("not repaired: {e}"),
            (None, false) => "not repaired".to_string(),
        };
        let _ = writeln!(
            out,
            "last drift: {} {}{by}; {result}",
            d.at,
            d.changes.join("; ")
        );
    }
    if let Some(d) = &s.daemon {
        if !d.drift_watch.is_empty() {
            let _ = writeln!(out, "drift watch: {}", d.drift_watch);
        }
        let _ = writeln!(
            out,
            "since start: {} reloads, {} interface updates, {} applies, {} rollbacks, {} drift repairs",
            d.reloads, d.interface_updates, m.applies, m.rollbacks, m.drift_repairs
        );
        if d.changes_while_flushed > 0 {
            let _ = writeln!(
                out,
                "configuration changes since the flush, not applied: {} (`systemctl reload hostpolicyd` applies them)",
                d.changes_while_flushed
            );
        }
        if d.notify_dropped > 0 {
            let _ = writeln!(
                out,
                "notifications to systemd dropped (its queue was full): {}",
                d.notify_dropped
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_reload_over_the_socket() {
        let dir = std::env::temp_dir().join(format!("hostpolicyd-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let listener = bind(&dir).unwrap();
        let mode = std::fs::metadata(socket_path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second daemon is refused while the first answers.
        assert_eq!(bind(&dir).unwrap_err().kind(), io::ErrorKind::AddrInUse);

        let status = Arc::new(Mutex::new(Status::default()));
        status.lock().unwrap().summary.generation = 42;
        let (tx, rx) = mpsc::channel();
        spawn(listener, status, tx).unwrap();
        // The writer loop: answers one reload.
        let writer = std::thread::spawn(move || match rx.recv().unwrap() {
            Event::Reload(reply) => reply
                .send(Reply {
                    result: "invalid".into(),
                    exit_code: 1,
                    message: "configuration is invalid".into(),
                    diagnostics: vec!["a.yaml:1:1: error: x".into()],
                    generation: 42,
                    hash: None,
                })
                .unwrap(),
            _ => panic!("expected a reload"),
        });
        assert_eq!(self::status(&dir).unwrap().summary.generation, 42);
        let r = reload(&dir).unwrap();
        assert_eq!((r.result.as_str(), r.exit_code), ("invalid", 1));
        assert_eq!(r.diagnostics, ["a.yaml:1:1: error: x"]);
        writer.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // No daemon: a clear error.
        match self::status(&dir) {
            Err(ClientError::NotRunning { .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn human_status_names_endpoints_policies_and_rollback() {
        let mut s = Status::default();
        s.summary.node = "node1".into();
        s.summary.table = "hostpolicy".into();
        s.summary.generation = 3;
        s.summary.hash = Some("ab".repeat(32));
        s.summary.endpoints = vec![crate::engine::state::EndpointSummary {
            name: "hep-eth0".into(),
            interfaces: vec!["eth0".into()],
            policies: vec![
                crate::engine::state::StagePolicies {
                    stage: "normal".into(),
                    direction: "ingress".into(),
                    policies: vec!["allow-ssh".into(), "allow-web".into()],
                    tiers: Vec::new(),
                },
                crate::engine::state::StagePolicies {
                    stage: "preDNAT".into(),
                    direction: "ingress".into(),
                    policies: vec!["guard".into(), "a".into(), "b".into()],
                    tiers: vec!["platform".into(), "default".into(), "default".into()],
                },
            ],
            ..Default::default()
        }];
        s.summary.last_rollback = Some(crate::engine::state::RollbackSummary {
            at: "2024-01-01T00:00:00Z".into(),
            rejected_hash: "cd".into(),
            restored: "generation 3".into(),
            failed_checks: vec![crate::host::probe::CheckResult {
                name: "gw".into(),
                target: "tcp 192.0.2.1:22".into(),
                passed: false,
                detail: "no answer within 1000 ms".into(),
            }],
            policies: vec!["block".into()],
        });
        let text = format_status(&s);
        assert!(text.contains("not running"), "{text}");
        assert!(text.contains("generation 3, sha256:abab"), "{text}");
        assert!(
            text.contains("  hep-eth0 (eth0)\n    normal ingress: allow-ssh, allow-web\n"),
            "{text}"
        );
        // Tiers spec §3.2: with tiers, each policy is listed under its tier.
        assert!(
            text.contains("    preDNAT ingress: tier platform: guard; tier default: a, b\n"),
            "{text}"
        );
        assert!(
            text.contains("check gw (tcp 192.0.2.1:22) failed: no answer"),
            "{text}"
        );
        assert!(text.contains("new or changed policies: block"), "{text}");
    }
}
