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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
// Low-level socket helpers (libc)
// ------------------------------------------------------------------------------------------------------------

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn domain(ip: IpAddr) -> libc::c_int {
    if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// Creates a non-blocking socket that belongs to `ns`.
pub fn socket_in(
    ns: &NetNs,
    domain: libc::c_int,
    ty: libc::c_int,
    proto: libc::c_int,
) -> io::Result<OwnedFd> {
    ns.run(move || {
        // SAFETY: plain socket(2) call; the fd is owned by the returned OwnedFd.
        let fd =
            unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            Err(last_err())
        } else {
            // SAFETY: fd is a fresh descriptor we own.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    })
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: value is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(last_err())
    } else {
        Ok(())
    }
}

fn bind_fd(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(addr);
    // SAFETY: ss/len describe a valid sockaddr.
    let rc = unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) };
    if rc < 0 {
        Err(last_err())
    } else {
        Ok(())
    }
}

/// Starts a connect; Ok(()) when it completed or is in progress.
fn connect_fd(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(addr);
    // SAFETY: ss/len describe a valid sockaddr.
    let rc = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
    if rc < 0 {
        let e = last_err();
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Waits until `fd` has one of `events`, or the deadline. Ok(false) on timeout.
fn wait_fd(fd: RawFd, events: libc::c_short, deadline: Instant) -> io::Result<bool> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = last_err();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc > 0 {
            return Ok(true);
        }
    }
}

fn so_error(fd: RawFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: err/len are valid for writing.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    err
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
fn linger_zero(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: l is valid for the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
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
        linger_zero(self.stream.as_raw_fd());
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
    let fd = socket_in(ns, domain(dst.ip()), libc::SOCK_STREAM, 0)
        .map_err(|e| Outcome::Failed(format!("socket: {e}")))?;
    let raw = fd.as_raw_fd();
    if src.port() != 0 {
        let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    }
    bind_fd(raw, src).map_err(|e| Outcome::Failed(format!("bind {src}: {e}")))?;
    connect_fd(raw, dst).map_err(|e| outcome_of_io(&e, "connect"))?;
    match wait_fd(raw, libc::POLLOUT, start + timeout) {
        Ok(true) => {}
        Ok(false) => {
            linger_zero(raw);
            return Err(Outcome::Timeout);
        }
        Err(e) => return Err(Outcome::Failed(format!("poll: {e}"))),
    }
    match so_error(raw) {
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
    let fd = match socket_in(ns, domain(dst.ip()), libc::SOCK_DGRAM, 0) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Failed(format!("socket: {e}")),
    };
    let raw = fd.as_raw_fd();
    if let Err(e) = bind_fd(raw, src) {
        return Outcome::Failed(format!("bind {src}: {e}"));
    }
    if let Err(e) = connect_fd(raw, dst) {
        return outcome_of_io(&e, "connect");
    }
    let sock = UdpSocket::from(fd);
    let payload = b"hostpolicyd-udp-probe";
    if let Err(e) = sock.send(payload) {
        return outcome_of_io(&e, "send");
    }
    match wait_fd(sock.as_raw_fd(), libc::POLLIN, start + timeout) {
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
        (libc::IPPROTO_ICMP, 8u8, 0u8)
    } else {
        (libc::IPPROTO_ICMPV6, 128u8, 129u8)
    };
    let fd = match socket_in(ns, domain(dst), libc::SOCK_DGRAM, proto) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Failed(format!("ping socket (is ping_group_range set?): {e}")),
    };
    let raw = fd.as_raw_fd();
    if let Err(e) = bind_fd(raw, SocketAddr::new(src, 0)) {
        return Outcome::Failed(format!("bind {src}: {e}"));
    }
    if let Err(e) = connect_fd(raw, SocketAddr::new(dst, 0)) {
        return outcome_of_io(&e, "connect");
    }
    // type, code, checksum (kernel), identifier (kernel), sequence, payload
    let mut pkt = vec![echo_type, 0, 0, 0, 0, 0, 0, 1];
    pkt.extend_from_slice(b"hostpolicyd-ping");
    // SAFETY: pkt is valid for reading pkt.len() bytes.
    let rc = unsafe { libc::send(raw, pkt.as_ptr() as *const libc::c_void, pkt.len(), 0) };
    if rc < 0 {
        return outcome_of_io(&last_err(), "send");
    }
    loop {
        match wait_fd(raw, libc::POLLIN, start + timeout) {
            Ok(true) => {}
            Ok(false) => return Outcome::Timeout,
            Err(e) => return Outcome::Failed(format!("poll: {e}")),
        }
        let mut buf = [0u8; 512];
        // SAFETY: buf is valid for writing buf.len() bytes.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            let e = last_err();
            if e.kind() == io::ErrorKind::WouldBlock {
                continue;
            }
            return outcome_of_io(&e, "recv");
        }
        let n = n as usize;
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
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        for l in &listeners {
            pfds.push(libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for u in &udps {
            pfds.push(libc::pollfd {
                fd: u.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for c in &conns {
            pfds.push(libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: pfds is a valid array of pollfd.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 50) };
        if rc <= 0 {
            continue;
        }
        let nl = listeners.len();
        let nu = udps.len();
        for (i, l) in listeners.iter().enumerate() {
            if pfds[i].revents == 0 {
                continue;
            }
            while let Ok((s, _)) = l.accept() {
                let _ = s.set_nonblocking(true);
                conns.push(s);
            }
        }
        for (i, u) in udps.iter().enumerate() {
            if pfds[nl + i].revents == 0 {
                continue;
            }
            while let Ok((n, from)) = u.recv_from(&mut buf) {
                let _ = u.send_to(&buf[..n], from);
            }
        }
        // connections: echo what they send, drop them on EOF or error
        let mut keep = vec![true; conns.len()];
        for (i, c) in conns.iter_mut().enumerate() {
            if i + nl + nu >= pfds.len() || pfds[nl + nu + i].revents == 0 {
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
