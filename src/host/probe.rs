//! Connectivity checks (DESIGN.md "Resources of our own"): a TCP handshake or an ICMP/ICMPv6 echo from the
//! node itself, each bounded by its own timeout, all the checks of one round at once (one thread per
//! check), so that N checks take about one timeout.
//!
//! A TCP check passes when the handshake completes; a refused connection (RST) counts only with
//! `acceptRefused: true`. An ICMP check passes when an echo reply from the target arrives. The echo uses a
//! datagram ICMP socket when `net.ipv4.ping_group_range` allows it and a raw socket otherwise (root has
//! CAP_NET_RAW, also inside a network namespace where the ping group range is empty by default).
//!
//! The [`Prober`] trait is what the engine sees; unit tests replace it with a scripted fake.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::config::model::{CheckTarget, ConnectivityCheck};

/// The result of one check in one round.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckResult {
    pub name: String,
    /// `tcp 192.0.2.10:22` or `icmp 2001:db8::10`.
    pub target: String,
    pub passed: bool,
    /// What happened, for logs: `connected in 3 ms`, `no answer within 2s`, `connection refused`...
    pub detail: String,
}

/// Runs one round of checks. Every check of the slice runs; the results come back in the same order.
pub trait Prober {
    fn run(&mut self, checks: &[ConnectivityCheck]) -> Vec<CheckResult>;
}

/// The real prober: sockets of the current network namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetProber;

impl Prober for NetProber {
    fn run(&mut self, checks: &[ConnectivityCheck]) -> Vec<CheckResult> {
        run_all(checks)
    }
}

/// Runs every check concurrently (one scoped thread each) and waits for all of them.
pub fn run_all(checks: &[ConnectivityCheck]) -> Vec<CheckResult> {
    std::thread::scope(|s| {
        let handles: Vec<_> = checks
            .iter()
            .map(|c| s.spawn(move || run_check(c)))
            .collect();
        handles
            .into_iter()
            .zip(checks)
            .map(|(h, c)| {
                h.join().unwrap_or_else(|_| CheckResult {
                    name: c.name.clone(),
                    target: target_text(&c.target),
                    passed: false,
                    detail: "probe thread panicked".into(),
                })
            })
            .collect()
    })
}

pub fn target_text(t: &CheckTarget) -> String {
    match t {
        CheckTarget::Tcp { host, port } => format!("tcp {}", SocketAddr::new(*host, *port)),
        CheckTarget::Icmp { host } => format!("icmp {host}"),
    }
}

/// Runs one check, bounded by its timeout.
pub fn run_check(check: &ConnectivityCheck) -> CheckResult {
    let (passed, detail) = match check.target {
        CheckTarget::Tcp { host, port } => tcp(
            SocketAddr::new(host, port),
            check.timeout,
            check.accept_refused,
        ),
        CheckTarget::Icmp { host } => icmp(host, check.timeout),
    };
    CheckResult {
        name: check.name.clone(),
        target: target_text(&check.target),
        passed,
        detail,
    }
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn tcp(addr: SocketAddr, timeout: Duration, accept_refused: bool) -> (bool, String) {
    let start = Instant::now();
    match TcpStream::connect_timeout(&addr, timeout.max(Duration::from_millis(1))) {
        Ok(stream) => {
            drop(stream);
            (true, format!("connected in {}", millis(start.elapsed())))
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            if accept_refused {
                (true, "connection refused (accepted: acceptRefused)".into())
            } else {
                (false, "connection refused".into())
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            (false, format!("no answer within {}", millis(timeout)))
        }
        Err(e) => (false, format!("connect: {e}")),
    }
}

static SEQUENCE: AtomicU16 = AtomicU16::new(1);

fn icmp(host: IpAddr, timeout: Duration) -> (bool, String) {
    let start = Instant::now();
    match echo(host, start + timeout) {
        Ok(true) => (true, format!("echo reply in {}", millis(start.elapsed()))),
        Ok(false) => (false, format!("no echo reply within {}", millis(timeout))),
        Err(e) => (false, e),
    }
}

/// Sends one echo request and waits for its reply until `deadline`. Ok(false) on timeout.
fn echo(host: IpAddr, deadline: Instant) -> Result<bool, String> {
    let v4 = host.is_ipv4();
    let (request_type, reply_type) = if v4 { (8u8, 0u8) } else { (128u8, 129u8) };
    let (fd, raw) = sys::icmp_socket(v4).map_err(|e| format!("icmp socket: {e}"))?;
    sys::connect(&fd, SocketAddr::new(host, 0)).map_err(|e| format!("connect {host}: {e}"))?;

    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    // Raw sockets see every echo reply of the host: the identifier and the payload make ours recognisable.
    // (Datagram sockets get their identifier rewritten by the kernel and see only their own replies.)
    let ident = (std::process::id() as u16) ^ seq.rotate_left(8);
    let nonce = format!("hostpolicyd-{}-{seq}", std::process::id());
    let mut packet = vec![request_type, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(nonce.as_bytes());
    if v4 {
        // The kernel computes ICMPv6 checksums (and those of datagram ICMP sockets), never raw ICMPv4 ones.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    sys::send(&fd, &packet).map_err(|e| format!("send echo request to {host}: {e}"))?;

    let mut buf = [0u8; 1500];
    loop {
        if !sys::wait_readable(&fd, deadline).map_err(|e| format!("poll: {e}"))? {
            return Ok(false);
        }
        let n = match sys::recv(&fd, &mut buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                continue
            }
            // An ICMP error for our request (host unreachable, administratively prohibited...).
            Err(e) => return Err(format!("echo to {host}: {e}")),
        };
        let mut icmp = &buf[..n];
        if raw && v4 {
            // Raw IPv4 sockets deliver the IP header too.
            let ihl = usize::from(icmp.first().copied().unwrap_or(0) & 0x0f) * 4;
            if icmp.len() < ihl {
                continue;
            }
            icmp = &icmp[ihl..];
        }
        if icmp.len() < 8 || icmp[0] != reply_type || icmp[8..] != *nonce.as_bytes() {
            continue;
        }
        if raw && icmp[4..6] != ident.to_be_bytes() {
            continue;
        }
        return Ok(true);
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The socket calls std has no wrapper for (ICMP sockets), through rustix.
mod sys {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::Instant;

    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::net::{ipproto, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

    /// A non-blocking ICMP socket: datagram ("ping socket") when allowed, raw otherwise. The bool is "raw".
    pub fn icmp_socket(v4: bool) -> io::Result<(OwnedFd, bool)> {
        let (domain, proto) = if v4 {
            (AddressFamily::INET, ipproto::ICMP)
        } else {
            (AddressFamily::INET6, ipproto::ICMPV6)
        };
        let open = |ty: SocketType| -> io::Result<OwnedFd> {
            Ok(rustix::net::socket_with(
                domain,
                ty,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                Some(proto),
            )?)
        };
        match open(SocketType::DGRAM) {
            Ok(fd) => Ok((fd, false)),
            Err(dgram) => open(SocketType::RAW).map(|fd| (fd, true)).map_err(|raw| {
                io::Error::new(
                    raw.kind(),
                    format!("datagram: {dgram}; raw: {raw} (needs root or ping_group_range)"),
                )
            }),
        }
    }

    pub fn connect(fd: impl AsFd, addr: SocketAddr) -> io::Result<()> {
        Ok(rustix::net::connect(fd, &addr)?)
    }

    pub fn send(fd: impl AsFd, data: &[u8]) -> io::Result<()> {
        rustix::net::send(fd, data, SendFlags::empty())?;
        Ok(())
    }

    pub fn recv(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
        Ok(rustix::net::recv(fd, buf, RecvFlags::empty())?.0)
    }

    /// Ok(false) when the deadline passes first.
    pub fn wait_readable(fd: impl AsFd, deadline: Instant) -> io::Result<bool> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let left = Timespec::try_from(deadline - now).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            });
            match poll(&mut [PollFd::new(&fd, PollFlags::IN)], Some(&left)) {
                Ok(0) => {}
                Ok(_) => return Ok(true),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Pos;
    use std::net::TcpListener;

    fn check(
        name: &str,
        target: CheckTarget,
        timeout_ms: u64,
        accept_refused: bool,
    ) -> ConnectivityCheck {
        ConnectivityCheck {
            name: name.into(),
            pos: Pos::default(),
            node: None,
            target,
            timeout: Duration::from_millis(timeout_ms),
            accept_refused,
        }
    }

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 §3 example: the one's complement sum of these words is 0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn tcp_connect_passes_and_refused_depends_on_accept_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        // A port that was just free: nothing listens there (the kernel answers with RST).
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let checks = vec![
            check(
                "open",
                CheckTarget::Tcp {
                    host: open.ip(),
                    port: open.port(),
                },
                2000,
                false,
            ),
            check(
                "refused",
                CheckTarget::Tcp {
                    host: closed.ip(),
                    port: closed.port(),
                },
                2000,
                false,
            ),
            check(
                "refused-ok",
                CheckTarget::Tcp {
                    host: closed.ip(),
                    port: closed.port(),
                },
                2000,
                true,
            ),
        ];
        let results = NetProber.run(&checks);
        assert_eq!(
            results.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["open", "refused", "refused-ok"]
        );
        assert!(results[0].passed, "{:?}", results[0]);
        assert!(
            !results[1].passed && results[1].detail.contains("refused"),
            "{:?}",
            results[1]
        );
        assert!(results[2].passed, "{:?}", results[2]);
        assert_eq!(results[0].target, format!("tcp {open}"));
    }
}
