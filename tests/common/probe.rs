//! Probes (TCP connect, TCP echo, UDP request/reply, ICMP and ICMPv6 echo) and servers for kernel tests.
//!
//! Every socket is *created* inside a namespace (on a short-lived thread that entered it through
//! [`NetNs::run`]) and then used from the calling thread: a socket belongs to the namespace it was created
//! in, whatever thread uses it later. So a probe costs no process spawn, and the source address is chosen
//! by binding before connecting.
//!
//! Verdicts: a probe reports [`Outcome::Ok`] (handshake done, echo or reply received), [`Outcome::Timeout`]
//! (nothing came back in time: the firewall dropped something), or a setup problem ([`Outcome::Refused`],
//! [`Outcome::Failed`]). A refusal means the packet reached a stack where nothing listens: every scenario
//! starts listeners for every port it probes, so a refusal is reported as a harness error, never as a verdict.
//!
//! [`Report`] runs the rows of a scenario table: conntrack flushed in the node(s) before each row (unless
//! the row continues the previous flow), a short timeout when DROP is expected (the drop must last at least
//! that long), a long one when ALLOW is expected (returns as soon as the reply comes), every mismatch
//! collected and reported at the end with its row number and the spec's reason.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    ipproto, AddressFamily, Protocol, RecvFlags, SendFlags, SocketFlags, SocketType,
};

use super::netns::NetNs;

/// How long a probe waits when the row expects DROP: the packet must stay unanswered for this long.
pub const DROP_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a probe may wait when the row expects ALLOW (it returns as soon as the answer comes; local
/// veth round trips take well under a millisecond, this only absorbs scheduling delays on a busy machine).
pub const ALLOW_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handshake completed / reply received.
    Ok,
    /// Nothing came back within the timeout.
    Timeout,
    /// TCP RST or ICMP port unreachable: the packet got through, but nothing listens (harness error).
    Refused,
    /// Anything else (no route, bind failure, wrong reply...).
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Drop,
}

pub const ALLOW: Verdict = Verdict::Allow;
pub const DROP: Verdict = Verdict::Drop;

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "ALLOW",
            Verdict::Drop => "DROP",
        })
    }
}

impl Verdict {
    pub fn timeout(self) -> Duration {
        match self {
            Verdict::Allow => ALLOW_TIMEOUT,
            Verdict::Drop => DROP_TIMEOUT,
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// Low-level socket helpers (rustix)
// ------------------------------------------------------------------------------------------------------------

fn domain(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    }
}

/// Creates a non-blocking socket that belongs to `ns`.
pub fn socket_in(
    ns: &NetNs,
    domain: AddressFamily,
    ty: SocketType,
    proto: Option<Protocol>,
) -> io::Result<OwnedFd> {
    ns.run(move || {
        Ok(rustix::net::socket_with(
            domain,
            ty,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            proto,
        )?)
    })
}

/// Starts a connect; Ok(()) when it completed or is in progress.
fn connect_fd(fd: impl AsFd, addr: SocketAddr) -> io::Result<()> {
    match rustix::net::connect(fd, &addr) {
        Ok(()) | Err(Errno::INPROGRESS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Waits until `fd` has one of `events`, or the deadline. Ok(false) on timeout.
fn wait_fd(fd: impl AsFd, events: PollFlags, deadline: Instant) -> io::Result<bool> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let left = Timespec::try_from(deadline - now).expect("a test deadline fits");
        match poll(&mut [PollFd::new(&fd, events)], Some(&left)) {
            Ok(0) | Err(Errno::INTR) => {}
            Ok(_) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The pending error of a socket (SO_ERROR), as an errno (0: none).
fn so_error(fd: impl AsFd) -> i32 {
    match rustix::net::sockopt::socket_error(fd) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) | Err(e) => e.raw_os_error(),
    }
}

fn outcome_of_errno(errno: i32, what: &str) -> Outcome {
    match errno {
        libc::ECONNREFUSED => Outcome::Refused,
        libc::ETIMEDOUT => Outcome::Timeout,
        e => Outcome::Failed(format!("{what}: {}", io::Error::from_raw_os_error(e))),
    }
}

fn outcome_of_io(e: &io::Error, what: &str) -> Outcome {
    match e.raw_os_error() {
        Some(errno) => outcome_of_errno(errno, what),
        None if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            Outcome::Timeout
        }
        None => Outcome::Failed(format!("{what}: {e}")),
    }
}

/// Sets SO_LINGER {on, 0}: close() sends a RST and leaves no TIME_WAIT behind.
fn linger_zero(fd: impl AsFd) {
    let _ = rustix::net::sockopt::set_socket_linger(fd, Some(Duration::ZERO));
}

// ------------------------------------------------------------------------------------------------------------
// Probes
// ------------------------------------------------------------------------------------------------------------

/// An established TCP connection opened by [`tcp_open`].
pub struct TcpConn {
    pub stream: TcpStream,
    /// How long the handshake took.
    pub elapsed: Duration,
}

impl TcpConn {
    /// Segments the kernel had to retransmit on this connection so far (a SYN retransmit means the first
    /// SYN or its SYN-ACK was lost).
    pub fn total_retrans(&self) -> u32 {
        // TCP_INFO has no wrapper in rustix: the one raw call left here.
        // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                self.stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                &mut info as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if rc < 0 {
            return u32::MAX;
        }
        info.tcpi_total_retrans
    }

    /// Sends `payload` and waits for the same bytes back (the servers here echo).
    pub fn echo(&mut self, payload: &[u8], timeout: Duration) -> Outcome {
        if let Err(e) = self
            .stream
            .set_write_timeout(Some(timeout))
            .and_then(|_| self.stream.write_all(payload))
        {
            return outcome_of_io(&e, "send");
        }
        let _ = self.stream.set_read_timeout(Some(timeout));
        let mut buf = vec![0u8; payload.len()];
        match self.stream.read_exact(&mut buf) {
            Ok(()) if buf == payload => Outcome::Ok,
            Ok(()) => Outcome::Failed(format!("echo mismatch: {buf:?}")),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Outcome::Failed("connection closed by peer".into())
            }
            Err(e) => outcome_of_io(&e, "recv"),
        }
    }

    /// Closes with a RST (no TIME_WAIT).
    pub fn abort(self) {
        linger_zero(&self.stream);
    }
}

/// Opens a TCP connection from `src` (port 0 = ephemeral) in `ns` to `dst`, waiting at most `timeout`.
pub fn tcp_open(
    ns: &NetNs,
    src: SocketAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<TcpConn, Outcome> {
    let start = Instant::now();
    let fd = socket_in(ns, domain(dst.ip()), SocketType::STREAM, None)
        .map_err(|e| Outcome::Failed(format!("socket: {e}")))?;
    if src.port() != 0 {
        let _ = rustix::net::sockopt::set_socket_reuseaddr(&fd, true);
    }
    rustix::net::bind(&fd, &src).map_err(|e| Outcome::Failed(format!("bind {src}: {e}")))?;
    connect_fd(&fd, dst).map_err(|e| outcome_of_io(&e, "connect"))?;
    match wait_fd(&fd, PollFlags::OUT, start + timeout) {
        Ok(true) => {}
        Ok(false) => {
            linger_zero(&fd);
            return Err(Outcome::Timeout);
        }
        Err(e) => return Err(Outcome::Failed(format!("poll: {e}"))),
    }
    match so_error(&fd) {
        0 => {}
        e => return Err(outcome_of_errno(e, "connect")),
    }
    let stream = TcpStream::from(fd);
    stream
        .set_nonblocking(false)
        .map_err(|e| Outcome::Failed(format!("set_nonblocking: {e}")))?;
    Ok(TcpConn {
        stream,
        elapsed: start.elapsed(),
    })
}

/// The handshake needed a retransmission: the first SYN or SYN-ACK was dropped somewhere. The topology
/// makes the first packet deterministic (see `Topology::wait_links_up`), so this is a finding, not noise.
pub fn retrans_failure(c: &TcpConn) -> Option<Outcome> {
    match c.total_retrans() {
        0 => None,
        n => Some(Outcome::Failed(format!(
            "handshake completed only after {n} retransmission(s) ({:?}): the first SYN or SYN-ACK was dropped",
            c.elapsed
        ))),
    }
}

/// TCP handshake from `src` to `dst`: Ok when it completes (SYN in, SYN-ACK out, ACK in) without any
/// retransmission.
pub fn tcp_connect(ns: &NetNs, src: SocketAddr, dst: SocketAddr, timeout: Duration) -> Outcome {
    match tcp_open(ns, src, dst, timeout) {
        Ok(c) => {
            let o = retrans_failure(&c).unwrap_or(Outcome::Ok);
            c.abort();
            o
        }
        Err(o) => o,
    }
}

/// TCP handshake and then one data exchange on the same flow (the server echoes).
pub fn tcp_echo(ns: &NetNs, src: SocketAddr, dst: SocketAddr, timeout: Duration) -> Outcome {
    let start = Instant::now();
    match tcp_open(ns, src, dst, timeout) {
        Ok(mut c) => {
            if let Some(o) = retrans_failure(&c) {
                c.abort();
                return o;
            }
            let left = timeout
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(50));
            let o = c.echo(b"hostpolicyd-probe", left);
            c.abort();
            o
        }
        Err(o) => o,
    }
}

/// UDP request from `src` to `dst`; Ok when the echo comes back from `dst` (connected socket).
pub fn udp_echo(ns: &NetNs, src: SocketAddr, dst: SocketAddr, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let fd = match socket_in(ns, domain(dst.ip()), SocketType::DGRAM, None) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Failed(format!("socket: {e}")),
    };
    if let Err(e) = rustix::net::bind(&fd, &src) {
        return Outcome::Failed(format!("bind {src}: {e}"));
    }
    if let Err(e) = connect_fd(&fd, dst) {
        return outcome_of_io(&e, "connect");
    }
    let sock = UdpSocket::from(fd);
    let payload = b"hostpolicyd-udp-probe";
    if let Err(e) = sock.send(payload) {
        return outcome_of_io(&e, "send");
    }
    match wait_fd(&sock, PollFlags::IN, start + timeout) {
        Ok(true) => {}
        Ok(false) => return Outcome::Timeout,
        Err(e) => return Outcome::Failed(format!("poll: {e}")),
    }
    let mut buf = [0u8; 256];
    match sock.recv(&mut buf) {
        Ok(n) if &buf[..n] == payload => Outcome::Ok,
        Ok(n) => Outcome::Failed(format!("unexpected reply {:?}", &buf[..n])),
        Err(e) => outcome_of_io(&e, "recv"),
    }
}

/// ICMP (IPv4) or ICMPv6 echo from `src` to `dst` through a ping socket (`SOCK_DGRAM`, the kernel fills the
/// identifier and checksum and delivers only our replies). Needs `net.ipv4.ping_group_range` to include
/// gid 0 in `ns` (the topology sets it).
pub fn ping(ns: &NetNs, src: IpAddr, dst: IpAddr, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let (proto, echo_type, reply_type) = if dst.is_ipv4() {
        (ipproto::ICMP, 8u8, 0u8)
    } else {
        (ipproto::ICMPV6, 128u8, 129u8)
    };
    let fd = match socket_in(ns, domain(dst), SocketType::DGRAM, Some(proto)) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Failed(format!("ping socket (is ping_group_range set?): {e}")),
    };
    if let Err(e) = rustix::net::bind(&fd, &SocketAddr::new(src, 0)) {
        return Outcome::Failed(format!("bind {src}: {e}"));
    }
    if let Err(e) = connect_fd(&fd, SocketAddr::new(dst, 0)) {
        return outcome_of_io(&e, "connect");
    }
    // type, code, checksum (kernel), identifier (kernel), sequence, payload
    let mut pkt = vec![echo_type, 0, 0, 0, 0, 0, 0, 1];
    pkt.extend_from_slice(b"hostpolicyd-ping");
    if let Err(e) = rustix::net::send(&fd, &pkt, SendFlags::empty()) {
        return outcome_of_io(&e.into(), "send");
    }
    loop {
        match wait_fd(&fd, PollFlags::IN, start + timeout) {
            Ok(true) => {}
            Ok(false) => return Outcome::Timeout,
            Err(e) => return Outcome::Failed(format!("poll: {e}")),
        }
        let mut buf = [0u8; 512];
        let n = match rustix::net::recv(&fd, &mut buf, RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(Errno::AGAIN) => continue,
            Err(e) => return outcome_of_io(&e.into(), "recv"),
        };
        if n >= 8 && buf[0] == reply_type && buf[8..n] == pkt[8..] {
            return Outcome::Ok;
        }
        // anything else (another reply): keep waiting until the deadline
    }
}

// ------------------------------------------------------------------------------------------------------------
// Servers
// ------------------------------------------------------------------------------------------------------------

/// TCP echo listeners (dual-stack, on every address of the namespace) and UDP echo sockets (bound to one
/// address each, so that the reply leaves from the address the request was sent to), served by one thread.
/// Stops when dropped (and at the latest after [`Servers::MAX_LIFETIME`]); the sockets die with it.
pub struct Servers {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Servers {
    pub const MAX_LIFETIME: Duration = Duration::from_secs(300);

    /// `tcp`: ports to listen on (`[::]:port`, which also accepts IPv4). `udp`: addresses to echo on.
    pub fn start(ns: &NetNs, tcp: &[u16], udp: &[&str]) -> Servers {
        let tcp: Vec<u16> = tcp.to_vec();
        let udp: Vec<SocketAddr> = udp
            .iter()
            .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
            .collect();
        let (listeners, udps) = ns.run(move || {
            let ls: Vec<TcpListener> = tcp
                .iter()
                .map(|p| {
                    TcpListener::bind(("::", *p)).unwrap_or_else(|e| panic!("listen [::]:{p}: {e}"))
                })
                .collect();
            let us: Vec<UdpSocket> = udp
                .iter()
                .map(|a| UdpSocket::bind(a).unwrap_or_else(|e| panic!("udp bind {a}: {e}")))
                .collect();
            (ls, us)
        });
        for l in &listeners {
            l.set_nonblocking(true).expect("nonblocking listener");
            // A deeper accept queue than std's 128: on a loaded machine the server thread can fall
            // behind a connection loop, and a full queue drops SYNs (ListenDrops), which looks like
            // a firewall drop to the client.
            // SAFETY: listen(2) on a listening socket we own only changes its backlog.
            unsafe { libc::listen(l.as_raw_fd(), 4096) };
        }
        for u in &udps {
            u.set_nonblocking(true).expect("nonblocking udp");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("servers-{}", ns.name()))
            .spawn(move || serve(listeners, udps, stop2))
            .expect("spawn server thread");
        Servers {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listeners: Vec<TcpListener>, udps: Vec<UdpSocket>, stop: Arc<AtomicBool>) {
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) && started.elapsed() < Servers::MAX_LIFETIME {
        let fds: Vec<BorrowedFd<'_>> = listeners
            .iter()
            .map(|l| l.as_fd())
            .chain(udps.iter().map(|u| u.as_fd()))
            .chain(conns.iter().map(|c| c.as_fd()))
            .collect();
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .collect();
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        if !matches!(poll(&mut pfds, Some(&tick)), Ok(n) if n > 0) {
            continue;
        }
        let ready: Vec<bool> = pfds.iter().map(|p| !p.revents().is_empty()).collect();
        drop(pfds);
        drop(fds);
        let nl = listeners.len();
        let nu = udps.len();
        for (i, l) in listeners.iter().enumerate() {
            if !ready[i] {
                continue;
            }
            while let Ok((s, _)) = l.accept() {
                let _ = s.set_nonblocking(true);
                conns.push(s);
            }
        }
        for (i, u) in udps.iter().enumerate() {
            if !ready[nl + i] {
                continue;
            }
            while let Ok((n, from)) = u.recv_from(&mut buf) {
                let _ = u.send_to(&buf[..n], from);
            }
        }
        // connections: echo what they send, drop them on EOF or error
        let mut keep = vec![true; conns.len()];
        for (i, c) in conns.iter_mut().enumerate() {
            if i + nl + nu >= ready.len() || !ready[nl + nu + i] {
                continue;
            }
            match c.read(&mut buf) {
                Ok(0) => keep[i] = false,
                Ok(n) => {
                    if c.write_all(&buf[..n]).is_err() {
                        keep[i] = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => keep[i] = false,
            }
        }
        let mut it = keep.into_iter();
        conns.retain(|_| it.next().unwrap_or(true));
        if conns.len() > 4096 {
            conns.drain(..conns.len() - 4096);
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// Scenario tables
// ------------------------------------------------------------------------------------------------------------

pub fn sa(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("socket address {s:?}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("ip address {s:?}: {e}"))
}

/// A source: "ip" (ephemeral port) or "ip:port" / "[ip6]:port".
fn src_addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| SocketAddr::new(ip(s), 0))
}

/// Flushes the conntrack table of `ns` (`conntrack -F`).
pub fn conntrack_flush(ns: &NetNs) {
    let out = ns.exec("conntrack", ["-F"]);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // An empty table in a namespace where conntrack never ran is fine.
        assert!(
            err.contains("0 flow entries") || err.contains("has been emptied") || err.is_empty(),
            "conntrack -F in {}: {err}",
            ns.name()
        );
    }
}

/// Runs the rows of one scenario table and reports every mismatch at the end.
pub struct Report<'a> {
    scenario: String,
    flush: Vec<&'a NetNs>,
    same_flow: bool,
    lines: Vec<String>,
    failures: Vec<String>,
}

impl<'a> Report<'a> {
    /// `flush`: the namespaces whose conntrack table is flushed before every row (the node(s) under test).
    pub fn new(scenario: &str, flush: &[&'a NetNs]) -> Report<'a> {
        Report {
            scenario: scenario.to_string(),
            flush: flush.to_vec(),
            same_flow: false,
            lines: vec![],
            failures: vec![],
        }
    }

    /// The next row continues the previous flow: do not flush conntrack before it.
    pub fn same_flow(&mut self) -> &mut Self {
        self.same_flow = true;
        self
    }

    fn before_row(&mut self) {
        if !std::mem::take(&mut self.same_flow) {
            for ns in &self.flush {
                conntrack_flush(ns);
            }
        }
    }

    /// Checks one row: `probe` gets the timeout that fits the expectation and returns the outcome.
    pub fn check(
        &mut self,
        row: &str,
        expect: Verdict,
        why: &str,
        what: &str,
        probe: impl FnOnce(Duration) -> Outcome,
    ) {
        self.before_row();
        let start = Instant::now();
        let outcome = probe(expect.timeout());
        let ms = start.elapsed().as_millis();
        let got = match &outcome {
            Outcome::Ok => Some(Verdict::Allow),
            Outcome::Timeout => Some(Verdict::Drop),
            _ => None,
        };
        let line =
            format!("{row}: {what}: expected {expect}, got {outcome:?} ({ms} ms) — spec: {why}");
        self.lines.push(line.clone());
        match got {
            Some(v) if v == expect => {}
            Some(v) => self.failures.push(format!(
                "{row}: {what}: expected {expect}, got {v} — spec: {why}"
            )),
            None => self.failures.push(format!(
                "{row}: {what}: harness error {outcome:?} (expected {expect}) — spec: {why}"
            )),
        }
    }

    /// A row that is not a probe (an exit status, a conntrack entry...): record a failure unless `ok`.
    pub fn assert(&mut self, row: &str, ok: bool, msg: &str) {
        self.lines.push(format!(
            "{row}: {msg}: {}",
            if ok { "ok" } else { "FAILED" }
        ));
        if !ok {
            self.failures.push(format!("{row}: {msg}"));
        }
    }

    /// TCP handshake from `src` (an address of `from`, "ip" or "ip:port") to `dst` ("ip:port" or "[ip6]:port").
    pub fn tcp(
        &mut self,
        row: &str,
        expect: Verdict,
        why: &str,
        from: &NetNs,
        src: &str,
        dst: &str,
    ) {
        let what = format!("TCP {src} -> {dst}");
        self.check(row, expect, why, &what, |t| {
            tcp_connect(from, src_addr(src), sa(dst), t)
        });
    }

    /// TCP handshake plus one data round trip on the same flow.
    pub fn tcp_echo(
        &mut self,
        row: &str,
        expect: Verdict,
        why: &str,
        from: &NetNs,
        src: &str,
        dst: &str,
    ) {
        let what = format!("TCP {src} -> {dst} (handshake + data)");
        self.check(row, expect, why, &what, |t| {
            tcp_echo(from, src_addr(src), sa(dst), t)
        });
    }

    /// UDP request/reply from `src` (port 0 = ephemeral) to `dst`.
    pub fn udp(
        &mut self,
        row: &str,
        expect: Verdict,
        why: &str,
        from: &NetNs,
        src: &str,
        dst: &str,
    ) {
        let what = format!("UDP {src} -> {dst} (request + reply)");
        self.check(row, expect, why, &what, |t| {
            udp_echo(from, src_addr(src), sa(dst), t)
        });
    }

    /// ICMP / ICMPv6 echo request and reply.
    pub fn ping(
        &mut self,
        row: &str,
        expect: Verdict,
        why: &str,
        from: &NetNs,
        src: &str,
        dst: &str,
    ) {
        let what = format!("ICMP echo {src} -> {dst}");
        self.check(row, expect, why, &what, |t| ping(from, ip(src), ip(dst), t));
    }

    /// Prints every row and panics listing all mismatches.
    pub fn finish(self) {
        eprintln!("== {} ==", self.scenario);
        for l in &self.lines {
            eprintln!("  {l}");
        }
        if !self.failures.is_empty() {
            panic!(
                "{}: {} row(s) failed:\n  {}",
                self.scenario,
                self.failures.len(),
                self.failures.join("\n  ")
            );
        }
    }
}

/// `conntrack -L <args>` in `ns`: the flow lines (empty when there is none).
pub fn conntrack_list(ns: &NetNs, args: &[&str]) -> Vec<String> {
    let mut a = vec!["-L"];
    a.extend_from_slice(args);
    let out = ns.exec("conntrack", &a);
    assert!(
        out.status.success(),
        "conntrack {a:?} in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}
