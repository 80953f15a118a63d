//! The control socket: `control.sock` in `--runtime-dir` (default `/run/hostpolicyd`), mode 0600, and a
//! peer-credential check on every connection (root or the daemon's own user only).
//!
//! Protocol: the client sends one line naming a [`Request`] (`status`, `reload`, `flush`); the daemon
//! answers with one JSON document and closes. `status` is answered from the published summary at once
//! (also during a reload); `reload` is handed to the writer loop and answered when that reload is done,
//! with its result, so that `ExecReload=hostpolicyd reload` reports failures instead of racing a signal.
//! `flush` too: the writer deletes the table and stops enforcing until the next reload (`hostpolicyd
//! flush` with a daemon). A new request is one variant of [`Request`], its word in [`Request::parse`]
//! and its arm in [`answer`].
//!
//! The socket doubles as the single-instance lock: a daemon refuses to start while another one answers on it.
//!
//! Staying up when clients misbehave or descriptors run out (issue 19):
//! - at most [`MAX_CLIENTS`] connections are served at once (a thread each, reads and writes bounded
//!   by [`IO_TIMEOUT`]); one more is answered `busy` and closed, and the client tries again;
//! - [`FD_RESERVE`] descriptors are kept free for the daemon's own work (the netlink sockets of a
//!   reload, the drift guard's reads, state files): a connection accepted on a descriptor that close
//!   to `RLIMIT_NOFILE` is answered `busy` and closed;
//! - when `accept` fails because the process or the system is out of descriptors (`EMFILE`,
//!   `ENFILE`), the waiting client is answered `busy` through a spare descriptor held for that, and
//!   the loop backs off (10 ms, doubling to 1 s) instead of spinning on a socket that stays readable.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::flows::{FlowRecord, Flows};
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
    /// Reloads since start by result (`applied`, `unchanged`, `invalid`, `rolled_back`,
    /// `not_retried`, `failed`): the metrics' `hostpolicyd_reloads_total`.
    #[serde(default)]
    pub reload_results: std::collections::BTreeMap<String, u64>,
    /// Flow records: whether they are collected and what the table holds (read when asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<FlowsInfo>,
}

/// `status`'s view of the flow records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsInfo {
    /// `active`, `off`, or why they are not collected.
    pub state: String,
    /// About how many bytes the table takes.
    pub table_bytes: u64,
    /// Records that may have been lost (`evicted + nflog_lost + conntrack_lost`).
    pub dropped: u64,
    #[serde(flatten)]
    pub counts: crate::daemon::flows::Counts,
}

impl FlowsInfo {
    pub fn of(flows: &Flows) -> FlowsInfo {
        let counts = flows.counts();
        FlowsInfo {
            state: flows.state(),
            table_bytes: flows.table_bytes() as u64,
            dropped: counts.dropped(),
            counts,
        }
    }
}

/// What `flows` asks for (after the word `flows` on the request line, as JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsRequest {
    #[serde(default)]
    pub denied: bool,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub follow: bool,
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

/// The most control clients served at once.
pub const MAX_CLIENTS: usize = 64;
/// Descriptors kept free for the daemon's own work below `RLIMIT_NOFILE`.
pub const FD_RESERVE: u64 = 32;
/// How long a client may take to send its request or to read a reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The first and the longest wait after `accept` found no descriptor left.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The requests the socket answers, one line each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The published [`Status`], at once.
    Status,
    /// Reload now; answered with the reload's [`Reply`].
    Reload,
    /// Delete the table and enforce nothing until the next reload; answered when done.
    Flush,
    /// The flow records as JSON Lines (and with `follow`, every update until the client goes away):
    /// `flows` alone, or followed by a [`FlowsRequest`] in JSON on the same line.
    Flows(FlowsRequest),
}

impl Request {
    /// The request a line names.
    pub fn parse(line: &str) -> Result<Request, String> {
        match line.trim() {
            "status" => Ok(Request::Status),
            "reload" => Ok(Request::Reload),
            "flush" => Ok(Request::Flush),
            "flows" => Ok(Request::Flows(FlowsRequest::default())),
            line if line.starts_with("flows ") => {
                serde_json::from_str(line["flows ".len()..].trim())
                    .map(Request::Flows)
                    .map_err(|e| format!("bad flows request: {e}"))
            }
            other => Err(format!("unknown request {other:?}")),
        }
    }
}

/// What a connection's handler may use.
#[derive(Clone)]
struct Ctx {
    status: Arc<Mutex<Status>>,
    tx: Sender<Event>,
    flows: Flows,
}

/// Serves the socket on its own thread, one short-lived thread per connection.
pub fn spawn(
    listener: UnixListener,
    status: Arc<Mutex<Status>>,
    tx: Sender<Event>,
    flows: Flows,
) -> io::Result<()> {
    spawn_with(listener, status, tx, flows, MAX_CLIENTS)
}

/// [`spawn`] with another cap on clients (tests).
fn spawn_with(
    listener: UnixListener,
    status: Arc<Mutex<Status>>,
    tx: Sender<Event>,
    flows: Flows,
    max_clients: usize,
) -> io::Result<()> {
    let ctx = Ctx { status, tx, flows };
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let active = Arc::new(AtomicUsize::new(0));
            serve(
                || Some(listener.accept().map(|(s, _)| s)),
                std::thread::sleep,
                spare_descriptor,
                |stream| dispatch(stream, &ctx, &active, max_clients),
            )
        })?;
    Ok(())
}

/// A descriptor held so that one client can still be answered when none is left.
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Whether an `accept` error means the process or the system ran out of descriptors (or memory for
/// a socket): retrying at once fails the same way.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The accept loop. `accept` gives the next connection (None: stop, for tests); `sleep` waits;
/// `spare` opens the spare descriptor; `handle` takes each connection. Never spins: an error that
/// repeats at once is followed by a wait that doubles up to [`BACKOFF_MAX`].
fn serve<A, S, F>(
    mut accept: A,
    mut sleep: impl FnMut(Duration),
    mut spare: impl FnMut() -> Option<F>,
    mut handle: S,
) where
    A: FnMut() -> Option<io::Result<UnixStream>>,
    S: FnMut(UnixStream),
{
    let mut held = spare();
    let mut backoff: Option<Duration> = None;
    let mut warned = false;
    while let Some(result) = accept() {
        match result {
            Ok(stream) => {
                backoff = None;
                warned = false;
                handle(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Err(e) => {
                if out_of_descriptors(&e) {
                    if !warned {
                        tracing::warn!(
                            event = "control_busy",
                            "control socket: cannot accept a client ({e}); answering busy and backing off"
                        );
                        warned = true;
                    }
                    // Free the spare, take the waiting client with it and tell it to come back.
                    if held.take().is_some() {
                        if let Some(Ok(stream)) = accept() {
                            busy(stream, "the daemon is out of file descriptors");
                        }
                        held = spare();
                    }
                } else {
                    tracing::debug!(event = "control_error", "control socket accept: {e}");
                }
                let wait = backoff.map_or(BACKOFF_FIRST, |b| (b * 2).min(BACKOFF_MAX));
                backoff = Some(wait);
                sleep(wait);
            }
        }
    }
}

/// Answers `busy` and closes (the client retries).
fn busy(mut stream: UnixStream, why: &str) {
    // What the client already sent is read first, if anything: closing a socket with unread data
    // resets it, and the client could lose the answer.
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).take(1024).read(&mut [0u8; 1024]);
        let _ = stream.set_nonblocking(false);
    }
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = write_json(
        &mut stream,
        &ErrorReply {
            error: format!("{BUSY}: {why}; try again"),
        },
    );
}

/// The first word of a `busy` answer.
const BUSY: &str = "busy";

/// The soft `RLIMIT_NOFILE` (None: unlimited).
fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Hands a connection to a thread of its own, unless that would take a descriptor of the reserve or
/// one client too many.
fn dispatch(stream: UnixStream, ctx: &Ctx, active: &Arc<AtomicUsize>, max_clients: usize) {
    let fd = stream.as_raw_fd() as u64;
    if descriptor_limit().is_some_and(|limit| fd.saturating_add(FD_RESERVE) >= limit) {
        return busy(
            stream,
            "the daemon keeps its last file descriptors for the kernel",
        );
    }
    if active.fetch_add(1, Ordering::SeqCst) >= max_clients {
        active.fetch_sub(1, Ordering::SeqCst);
        return busy(stream, &format!("{max_clients} clients are being served"));
    }
    /// Gives the client's slot back however its thread ends.
    struct Slot(Arc<AtomicUsize>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let slot = Slot(active.clone());
    let ctx = ctx.clone();
    let spawned = std::thread::Builder::new()
        .name("control-conn".into())
        .spawn(move || {
            let _slot = slot;
            if let Err(e) = handle(stream, &ctx) {
                tracing::debug!(event = "control_error", "control connection: {e}");
            }
        });
    if let Err(e) = spawned {
        // The closure (and with it the slot and the stream) is dropped: the client sees EOF.
        tracing::debug!(
            event = "control_error",
            "cannot start a control thread: {e}"
        );
    }
}

fn handle(mut stream: UnixStream, ctx: &Ctx) -> io::Result<()> {
    let uid = rustix::net::sockopt::socket_peercred(&stream)?.uid.as_raw();
    let me = rustix::process::geteuid().as_raw();
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    if uid != 0 && uid != me {
        return write_json(
            &mut stream,
            &ErrorReply {
                error: format!("permission denied for uid {uid}"),
            },
        );
    }
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(1024)).read_line(&mut line)?;
    match Request::parse(&line) {
        Ok(request) => answer(request, &mut stream, ctx),
        Err(error) => write_json(&mut stream, &ErrorReply { error }),
    }
}

/// Answers one request.
fn answer(request: Request, stream: &mut UnixStream, ctx: &Ctx) -> io::Result<()> {
    match request {
        Request::Status => {
            let mut s = ctx.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(d) = s.daemon.as_mut() {
                d.flows = Some(FlowsInfo::of(&ctx.flows));
            }
            write_json(stream, &s)
        }
        Request::Flows(r) => serve_flows(stream, &ctx.flows, &r),
        Request::Reload | Request::Flush => {
            let (rtx, rrx) = mpsc::channel();
            let event = if request == Request::Reload {
                Event::Reload(rtx)
            } else {
                Event::Flush(rtx)
            };
            if ctx.tx.send(event).is_err() {
                return write_json(
                    stream,
                    &ErrorReply {
                        error: "the daemon is stopping".into(),
                    },
                );
            }
            match rrx.recv() {
                Ok(reply) => write_json(stream, &reply),
                Err(_) => write_json(
                    stream,
                    &ErrorReply {
                        error: "the daemon stopped before replying".into(),
                    },
                ),
            }
        }
    }
}

/// How long a `flows --follow` client may take to read one line before it is dropped.
pub const FOLLOW_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `flows`: the records as JSON Lines, newest last; with `follow`, then every update until the
/// client goes away or falls behind (the flows thread never waits for it: a follower whose queue is full
/// is dropped, and told so in a last line).
fn serve_flows(stream: &mut UnixStream, flows: &Flows, r: &FlowsRequest) -> io::Result<()> {
    if !flows.enabled() {
        return write_json(
            stream,
            &ErrorReply {
                error: "flow records are off (--flow-records off)".into(),
            },
        );
    }
    stream.set_write_timeout(Some(FOLLOW_WRITE_TIMEOUT))?;
    // Subscribed before the snapshot is taken, so that nothing falls between the two.
    let following = r.follow.then(|| flows.follow());
    let stream = &*stream;
    let mut out = io::BufWriter::new(stream);
    for record in flows.records(r.denied, r.limit) {
        write_line(&mut out, &record)?;
    }
    out.flush()?;
    let Some(following) = following else {
        return Ok(());
    };
    loop {
        match following.rx.recv_timeout(Duration::from_secs(1)) {
            Ok(record) => {
                if !r.denied || record.action == "deny" {
                    write_line(&mut out, &record)?;
                }
                while let Ok(record) = following.rx.try_recv() {
                    if !r.denied || record.action == "deny" {
                        write_line(&mut out, &record)?;
                    }
                }
                out.flush()?;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Nothing new: find out whether the client is still there.
                out.flush()?;
                let mut probe = [0u8; 1];
                stream.set_nonblocking(true)?;
                let gone = matches!({ stream }.read(&mut probe), Ok(0));
                stream.set_nonblocking(false)?;
                if gone {
                    return Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let error = if following.lagged.load(std::sync::atomic::Ordering::Relaxed) {
                    "this follower fell behind the flow records and was dropped; run `hostpolicyd flows --follow` again"
                } else {
                    "the daemon stopped following the flow records"
                };
                write_line(
                    &mut out,
                    &ErrorReply {
                        error: error.into(),
                    },
                )?;
                return out.flush();
            }
        }
    }
}

fn write_line<T: Serialize>(out: &mut impl Write, value: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

fn write_json<T: Serialize>(stream: &mut UnixStream, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
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

/// The longest answer a client reads (a status of 10,000 policies is a few MiB).
const MAX_ANSWER: usize = 256 << 20;

/// How often, and how far apart, a client asks again after a `busy` answer (5 s in all).
const BUSY_RETRIES: u32 = 50;
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// Sends one request and returns the daemon's JSON answer; asks again while the daemon answers
/// `busy` (see the module documentation), [`BUSY_RETRIES`] times at most.
fn request(runtime_dir: &Path, what: &str, timeout: Duration) -> Result<String, ClientError> {
    retry_busy(|| request_once(runtime_dir, what, timeout))
}

/// Runs `once` again while the daemon answers `busy` (all its client slots taken), [`BUSY_RETRIES`]
/// times at most.
fn retry_busy<T>(mut once: impl FnMut() -> Result<T, ClientError>) -> Result<T, ClientError> {
    let mut tries = 0;
    loop {
        match once() {
            Err(ClientError::Refused(e)) if e.starts_with(BUSY) && tries < BUSY_RETRIES => {
                tries += 1;
                std::thread::sleep(BUSY_PAUSE);
            }
            other => return other,
        }
    }
}

/// Connects to the daemon's socket and sends `line` (read and write timeouts: `timeout`, None for
/// none); returns the stream and the socket's path for errors.
fn connect_and_send(
    runtime_dir: &Path,
    line: &str,
    timeout: Option<Duration>,
) -> Result<(UnixStream, PathBuf), ClientError> {
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
    stream.set_read_timeout(timeout).map_err(io)?;
    stream.set_write_timeout(timeout).map_err(io)?;
    match stream.write_all(line.as_bytes()) {
        // A busy daemon answers and closes without reading: its answer is still there to read.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) => {}
        other => other.map_err(io)?,
    }
    Ok((stream, path))
}

fn request_once(runtime_dir: &Path, what: &str, timeout: Duration) -> Result<String, ClientError> {
    let (mut stream, path) = connect_and_send(runtime_dir, &format!("{what}\n"), Some(timeout))?;
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let mut bytes = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if bytes.len() + n > MAX_ANSWER => {
                return Err(ClientError::Protocol(format!(
                    "an answer of more than {MAX_ANSWER} bytes"
                )))
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A daemon that answered without reading our line resets the connection after its answer.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !bytes.is_empty() => break,
            Err(e) => return Err(io(e)),
        }
    }
    let answer = String::from_utf8(bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if let Ok(e) = serde_json::from_str::<ErrorReply>(&answer) {
        return Err(ClientError::Refused(e.error));
    }
    Ok(answer)
}

pub fn status(runtime_dir: &Path) -> Result<Status, ClientError> {
    let answer = request(runtime_dir, "status", STATUS_TIMEOUT)?;
    serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(format!("{e}: {answer}")))
}

/// `flows`: the daemon's records (and with `follow`, its updates) handed to `each` as they come;
/// `each` returns false to stop. A daemon answering `busy` (all its client slots taken) is asked again,
/// as [`request`] does.
pub fn flows(
    runtime_dir: &Path,
    request: &FlowsRequest,
    mut each: impl FnMut(FlowRecord) -> bool,
) -> Result<(), ClientError> {
    retry_busy(|| flows_once(runtime_dir, request, &mut each))
}

fn flows_once(
    runtime_dir: &Path,
    request: &FlowsRequest,
    each: &mut impl FnMut(FlowRecord) -> bool,
) -> Result<(), ClientError> {
    let line = format!(
        "flows {}\n",
        serde_json::to_string(request).map_err(|e| ClientError::Protocol(e.to_string()))?
    );
    // Following has no end: no read timeout then.
    let timeout = (!request.follow).then_some(STATUS_TIMEOUT);
    let (stream, path) = connect_and_send(runtime_dir, &line, timeout)?;
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    for line in BufReader::new(&stream).lines() {
        let line = line.map_err(io)?;
        if let Ok(e) = serde_json::from_str::<ErrorReply>(&line) {
            return Err(ClientError::Refused(e.error));
        }
        let record: FlowRecord = serde_json::from_str(&line)
            .map_err(|e| ClientError::Protocol(format!("{e}: {line}")))?;
        if !each(record) {
            break;
        }
    }
    Ok(())
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
    // What others may have written (a diagnostic, a kernel's error, a process name) is escaped: no
    // control character reaches the terminal.
    let e = |text: &str| crate::config::diag::escape(text).into_owned();
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
        let _ = writeln!(out, "DEGRADED: {}", e(problem));
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
    if !m.inactive_endpoints.is_empty() {
        let _ = writeln!(out, "inactive host endpoints (they govern no interface):");
        for i in &m.inactive_endpoints {
            let _ = writeln!(out, "  {}: {}", i.name, i.reason);
        }
    }
    if !m.checks.is_empty() {
        let _ = writeln!(out, "connectivity checks: {}", m.checks.join(", "));
    }
    match &m.last_error {
        Some(err) => {
            let _ = writeln!(
                out,
                "last error ({}): {} [{}]",
                e(&err.kind),
                e(&err.message),
                e(&err.at)
            );
            for d in &err.diagnostics {
                let _ = writeln!(out, "  {}", e(d));
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
                    e(&c.name),
                    e(&c.target),
                    e(&c.detail)
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
            (Some(x), false) => format!("not repaired: {}", e(x)),
            (None, false) => "not repaired".to_string(),
        };
        let _ = writeln!(
            out,
            "last drift: {} {}{}; {result}",
            d.at,
            e(&d.changes.join("; ")),
            e(&by)
        );
    }
    if let Some(d) = &s.daemon {
        if !d.drift_watch.is_empty() {
            let _ = writeln!(out, "drift watch: {}", d.drift_watch);
        }
        if let Some(f) = &d.flows {
            let _ = writeln!(
                out,
                "flow records: {}; {} kept ({} allowed, {} denied flows since start), {} dropped (`hostpolicyd flows`)",
                f.state, f.counts.records, f.counts.allowed, f.counts.denied, f.dropped
            );
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
        spawn(
            listener,
            status,
            tx,
            Flows::new(&crate::settings::Flows::default()),
        )
        .unwrap();
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

    /// Issue 19 item 7: with the descriptor limit reached, `accept4` returned EMFILE in a tight loop
    /// (100% of a core). Every such error is followed by a wait that doubles, the waiting client is
    /// answered `busy` through the spare descriptor, and a success starts over.
    #[test]
    fn accept_backs_off_when_descriptors_run_out_instead_of_spinning() {
        let emfile = || Some(Err(io::Error::from_raw_os_error(libc::EMFILE)));
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, _b_peer) = UnixStream::pair().unwrap();
        let mut script: std::collections::VecDeque<Option<io::Result<UnixStream>>> = [
            emfile(),
            Some(Ok(a)), // taken with the spare descriptor: answered busy
            emfile(),
            emfile(), // the spare's accept fails too
            Some(Ok(b)),
            Some(Err(io::Error::from_raw_os_error(libc::ECONNABORTED))),
            emfile(),
            Some(Err(io::Error::from_raw_os_error(libc::ENFILE))),
            None,
        ]
        .into_iter()
        .collect();
        let mut sleeps = Vec::new();
        let mut handled = 0;
        let mut spares = 0;
        serve(
            || script.pop_front().flatten().map(Some).unwrap_or(None),
            |d| sleeps.push(d.as_millis()),
            || {
                spares += 1;
                Some(())
            },
            |_| handled += 1,
        );
        // ECONNABORTED is retried at once; the last ENFILE was the spare's accept.
        assert_eq!(sleeps, [10, 20, 10]);
        assert_eq!(handled, 1);
        assert_eq!(spares, 4, "the spare is opened again after each use");
        let mut answer = String::new();
        a_peer.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with(
                "{\"error\":\"busy: the daemon is out of file descriptors; try again\"}"
            ),
            "{answer}"
        );
    }

    #[test]
    fn clients_beyond_the_cap_are_answered_busy_and_the_client_asks_again() {
        let dir = std::env::temp_dir().join(format!("hostpolicyd-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let listener = bind(&dir).unwrap();
        let status = Arc::new(Mutex::new(Status::default()));
        status.lock().unwrap().summary.generation = 7;
        let (tx, _rx) = mpsc::channel();
        spawn_with(
            listener,
            status,
            tx,
            Flows::new(&crate::settings::Flows::default()),
            2,
        )
        .unwrap();
        // Two clients that say nothing hold both places.
        let idle: Vec<UnixStream> = (0..2)
            .map(|_| UnixStream::connect(socket_path(&dir)).unwrap())
            .collect();
        // Accepted in order, each counted before the next accept.
        let mut third = UnixStream::connect(socket_path(&dir)).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut answer = String::new();
        third.read_to_string(&mut answer).unwrap();
        assert_eq!(
            answer,
            "{\"error\":\"busy: 2 clients are being served; try again\"}\n"
        );
        // The client library asks again; once the idle clients leave, it is served.
        let asker = {
            let dir = dir.clone();
            std::thread::spawn(move || self::status(&dir).map(|s| s.summary.generation))
        };
        std::thread::sleep(Duration::from_millis(150));
        drop(idle);
        assert_eq!(asker.join().unwrap().unwrap(), 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn requests_parse_from_one_line() {
        assert_eq!(Request::parse("status\n"), Ok(Request::Status));
        assert_eq!(Request::parse(" reload "), Ok(Request::Reload));
        assert_eq!(Request::parse("flush\n"), Ok(Request::Flush));
        assert_eq!(
            Request::parse("flows\n"),
            Ok(Request::Flows(FlowsRequest::default()))
        );
        assert_eq!(
            Request::parse("flows {\"denied\":true,\"limit\":5}\n"),
            Ok(Request::Flows(FlowsRequest {
                denied: true,
                limit: Some(5),
                follow: false
            }))
        );
        assert!(Request::parse("flows {\"limit\":-1}")
            .unwrap_err()
            .starts_with("bad flows request: "));
        assert_eq!(
            Request::parse("flowers\n"),
            Err("unknown request \"flowers\"".to_string())
        );
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

    /// Issue 20 item 8: the inactive HostEndpoints of this node and why, in the text and in the JSON
    /// (`inactive_endpoints`, always present).
    #[test]
    fn status_names_inactive_host_endpoints_and_why() {
        let mut s = Status::default();
        s.summary.node = "node1".into();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["inactive_endpoints"], serde_json::json!([]));
        assert!(!format_status(&s).contains("inactive"));
        s.summary.inactive_endpoints = vec![crate::engine::state::InactiveEndpointSummary {
            name: "node1-uplink".into(),
            reason:
                "none of its expectedIPs (203.0.113.254) is an address of an interface of this node"
                    .into(),
        }];
        let text = format_status(&s);
        assert!(
            text.contains("inactive host endpoints (they govern no interface):\n  node1-uplink: none of its expectedIPs (203.0.113.254) is an address of an interface of this node\n"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["inactive_endpoints"],
            serde_json::json!([{"name": "node1-uplink", "reason": "none of its expectedIPs (203.0.113.254) is an address of an interface of this node"}])
        );
        // A record written before the field existed still reads.
        let mut old = serde_json::to_value(&s).unwrap();
        old.as_object_mut().unwrap().remove("inactive_endpoints");
        let back: Status = serde_json::from_value(old).unwrap();
        assert!(back.summary.inactive_endpoints.is_empty());
    }
}
