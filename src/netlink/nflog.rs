//! NFLOG (nfnetlink_log, `NFNL_SUBSYS_ULOG`): binding a group and reading what the kernel's `log group
//! N` rules send to it.
//!
//! A group has one listener per network namespace: the socket that bound it (`NFULNL_CFG_CMD_BIND`);
//! another socket's bind gets EPERM ([`BindError::InUse`]). The binding goes away with the socket, so a
//! crashed daemon leaves nothing behind. Messages are unicast to the socket in batches (up to the
//! instance's queue threshold, or after its flush timeout); when the socket's receive buffer is full the
//! kernel drops a whole batch and the next receive says ENOBUFS once. With `NFULNL_CFG_F_SEQ` every
//! message carries the instance's sequence number, so the gaps count exactly what was dropped.
//!
//! [`packet`] reads one message ([`Logged`]); [`ip_tuple`] reads the addresses, protocol and ports from
//! its payload (the packet from its network header, as much as the copy range allows).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, SystemTime};

use super::consts::*;
use super::exchange::{Delivery, Subscription};
use super::msg::{Msg, Writer};
use super::socket::{Port, Protocol};

/// How an NFLOG instance is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub group: u16,
    /// Bytes of each packet copied, from its network header (addresses, protocol, ports: 128 is
    /// enough for IPv4 with options and TCP, or IPv6 and TCP).
    pub copy_range: u32,
    /// Messages per batch at most.
    pub qthresh: u32,
    /// The longest a message waits in a batch, in 1/100 s.
    pub timeout_cs: u32,
    /// The batch's buffer in the kernel, in bytes.
    pub nlbufsiz: u32,
    /// The socket's receive buffer, in bytes.
    pub rcvbuf: usize,
}

impl Config {
    pub fn new(group: u16) -> Config {
        Config {
            group,
            copy_range: 128,
            qthresh: 32,
            timeout_cs: 10,
            nlbufsiz: 65536,
            rcvbuf: 4 << 20,
        }
    }
}

/// Why a group could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// Another socket of this network namespace listens on the group (ulogd, Felix uses 1-3, ...).
    InUse(u16),
    Io(io::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::InUse(g) => write!(
                f,
                "NFLOG group {g} is used by another program (ulogd, Felix uses groups 1 to 3, suricata, ...)"
            ),
            BindError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A bound NFLOG group.
#[derive(Debug)]
pub struct Nflog {
    sub: Subscription,
    group: u16,
}

fn config_msg(group: u16, seq: u32, attr: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(40);
    let mut w = Writer { buf: &mut buf };
    let m = w.begin_msg(
        (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
        NLM_F_ACK,
        seq,
        NFPROTO_UNSPEC,
        group,
    );
    attr(&mut w);
    w.end_msg(m);
    buf
}

impl Nflog {
    /// Binds `config.group` in the calling thread's network namespace: copy mode packet, sequence
    /// numbers on, the batch settings of `config`.
    pub fn bind(config: &Config) -> Result<Nflog, BindError> {
        let mut sub = Subscription::open(Protocol::Netfilter, Port::Private, 0, config.rcvbuf)
            .map_err(BindError::Io)?;
        let g = config.group;
        type Step<'c> = Box<dyn FnOnce(&mut Writer<'_>) + 'c>;
        let steps: [Step<'_>; 5] = [
            Box::new(|w| w.attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND])),
            Box::new(|w| {
                let mut mode = config.copy_range.to_be_bytes().to_vec();
                mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
                w.attr(NFULA_CFG_MODE, &mode)
            }),
            Box::new(|w| w.attr(NFULA_CFG_FLAGS, &NFULNL_CFG_F_SEQ.to_be_bytes())),
            Box::new(|w| {
                w.u32_be(NFULA_CFG_QTHRESH, config.qthresh);
                w.u32_be(NFULA_CFG_TIMEOUT, config.timeout_cs);
            }),
            Box::new(|w| w.u32_be(NFULA_CFG_NLBUFSIZ, config.nlbufsiz)),
        ];
        for (i, step) in steps.into_iter().enumerate() {
            let seq = i as u32 + 1;
            match sub.ack(&config_msg(g, seq, step), seq) {
                Ok(()) => {}
                Err(e) if i == 0 && e.raw_os_error() == Some(libc::EPERM) => {
                    return Err(BindError::InUse(g))
                }
                Err(e) => return Err(BindError::Io(e)),
            }
        }
        Ok(Nflog { sub, group: g })
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// Waits up to `timeout` (None: without limit) for one datagram of messages.
    pub fn recv(&mut self, timeout: Option<Duration>) -> io::Result<Delivery<'_>> {
        self.sub.recv(timeout)
    }
}

impl AsFd for Nflog {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sub.as_fd()
    }
}

/// One packet the kernel logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged<'b> {
    /// `NFPROTO_IPV4` (2) or `NFPROTO_IPV6` (10).
    pub family: u8,
    /// `NF_INET_*`.
    pub hook: u8,
    /// The rule's prefix, without its NUL.
    pub prefix: &'b [u8],
    pub indev: Option<u32>,
    pub outdev: Option<u32>,
    pub mark: u32,
    /// When the packet arrived (only for hooks up to forward).
    pub timestamp: Option<SystemTime>,
    pub seq: Option<u32>,
    pub payload: &'b [u8],
}

/// The packet of an `NFULNL_MSG_PACKET` message; `None` for any other message.
pub fn packet<'b>(m: &Msg<'b>) -> Option<Logged<'b>> {
    if m.ty != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
        return None;
    }
    let mut p = Logged {
        family: m.family(),
        hook: u8::MAX,
        prefix: &[],
        indev: None,
        outdev: None,
        mark: 0,
        timestamp: None,
        seq: None,
        payload: &[],
    };
    for a in m.attrs() {
        let b = a.payload;
        match a.ty {
            NFULA_PACKET_HDR => p.hook = *b.get(2)?,
            NFULA_PREFIX => {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                p.prefix = &b[..end];
            }
            NFULA_IFINDEX_INDEV => p.indev = super::be32(b),
            NFULA_IFINDEX_OUTDEV => p.outdev = super::be32(b),
            NFULA_MARK => p.mark = super::be32(b).unwrap_or(0),
            NFULA_SEQ => p.seq = super::be32(b),
            NFULA_TIMESTAMP => {
                let sec = super::be64(b)?;
                let usec = super::be64(b.get(8..)?)?;
                p.timestamp = SystemTime::UNIX_EPOCH
                    .checked_add(Duration::from_secs(sec) + Duration::from_micros(usec));
            }
            NFULA_PAYLOAD => p.payload = b,
            _ => {}
        }
    }
    (p.hook != u8::MAX).then_some(p)
}

/// A connection's or a packet's addresses, protocol and ports (ICMP: type and code in place of the
/// ports, as conntrack keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// Whether protocol `p` has ports (TCP, UDP, UDP-Lite, SCTP, DCCP).
pub fn has_ports(p: u8) -> bool {
    matches!(p, 6 | 17 | 33 | 132 | 136)
}

/// The tuple and the whole packet's length of an IPv4 or IPv6 packet (from its network header).
/// Extension headers of IPv6 are skipped (hop-by-hop, routing, destination options; a fragment
/// other than the first has no ports: they read as 0).
pub fn ip_tuple(packet: &[u8]) -> Option<(Tuple, u32)> {
    let version = packet.first()? >> 4;
    let (mut proto, src, dst, len, mut at, mut first_fragment) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let len = u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]);
            let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (
                *packet.get(9)?,
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
                u32::from(len),
                ihl.max(20),
                frag == 0,
            )
        }
        6 => {
            let payload_len = u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]);
            let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                *packet.get(6)?,
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                u32::from(payload_len) + 40,
                40,
                true,
            )
        }
        _ => return None,
    };
    if version == 6 {
        // Hop-by-hop (0), routing (43), fragment (44), destination options (60).
        for _ in 0..8 {
            match proto {
                0 | 43 | 60 => {
                    let next = *packet.get(at)?;
                    let hlen = (usize::from(*packet.get(at + 1)?) + 1) * 8;
                    proto = next;
                    at += hlen;
                }
                44 => {
                    let next = *packet.get(at)?;
                    let off = u16::from_be_bytes([*packet.get(at + 2)?, *packet.get(at + 3)?]);
                    first_fragment = off >> 3 == 0;
                    proto = next;
                    at += 8;
                }
                _ => break,
            }
        }
    }
    let (mut sport, mut dport) = (0, 0);
    if first_fragment {
        if has_ports(proto) {
            if let (Some(s), Some(d)) = (packet.get(at..at + 2), packet.get(at + 2..at + 4)) {
                sport = u16::from_be_bytes([s[0], s[1]]);
                dport = u16::from_be_bytes([d[0], d[1]]);
            }
        } else if proto == 1 || proto == 58 {
            if let Some(t) = packet.get(at..at + 2) {
                sport = u16::from(t[0]);
                dport = u16::from(t[1]);
            }
        }
    }
    Some((
        Tuple {
            proto,
            src,
            dst,
            sport,
            dport,
        },
        len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::messages;

    /// An NFULNL_MSG_PACKET message as the kernel builds it (attributes in its order).
    fn logged(prefix: &str, hook: u8, payload: &[u8], seq: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = Writer { buf: &mut buf };
        let m = w.begin_msg((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET, 0, 0, 2, 1024);
        w.attr(NFULA_PACKET_HDR, &[0x08, 0x00, hook, 0]);
        w.strz(NFULA_PREFIX, prefix);
        w.u32_be(NFULA_IFINDEX_INDEV, 7);
        w.u32_be(NFULA_MARK, 0x10000);
        let mut ts = 1_700_000_000u64.to_be_bytes().to_vec();
        ts.extend_from_slice(&250_000u64.to_be_bytes());
        w.attr(NFULA_TIMESTAMP, &ts);
        w.u32_be(NFULA_SEQ, seq);
        w.attr(NFULA_PAYLOAD, payload);
        w.end_msg(m);
        buf
    }

    fn syn_v4() -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&[192, 0, 2, 200, 192, 0, 2, 1]);
        p.extend_from_slice(&[0xb4, 0x6e, 0x23, 0x8c]); // 46190 → 9100
        p.extend_from_slice(&[0; 36]);
        p
    }

    #[test]
    fn a_logged_packet_reads_back() {
        let buf = logged("hpd1 00000000000000ff", NF_INET_LOCAL_IN, &syn_v4(), 41);
        let m = messages(&buf).next().unwrap();
        let p = packet(&m).unwrap();
        assert_eq!(p.family, 2);
        assert_eq!(p.hook, NF_INET_LOCAL_IN);
        assert_eq!(p.prefix, b"hpd1 00000000000000ff");
        assert_eq!(
            (p.indev, p.outdev, p.mark, p.seq),
            (Some(7), None, 0x10000, Some(41))
        );
        assert_eq!(
            p.timestamp.unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)
        );
        let (t, len) = ip_tuple(p.payload).unwrap();
        assert_eq!(len, 60);
        assert_eq!(
            t,
            Tuple {
                proto: 6,
                src: "192.0.2.200".parse().unwrap(),
                dst: "192.0.2.1".parse().unwrap(),
                sport: 46190,
                dport: 9100
            }
        );
        // Not a packet message.
        let other = crate::netlink::request(0x0401, 0, 1, 0, &[]);
        assert!(packet(&messages(&other).next().unwrap()).is_none());
    }

    #[test]
    fn ipv6_icmp_and_extension_headers() {
        // IPv6, hop-by-hop header, then ICMPv6 echo request (128/0).
        let mut p = vec![0x60, 0, 0, 0, 0, 16, 0, 64];
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[58, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop: next ICMPv6, 8 bytes
        p.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
        let (t, len) = ip_tuple(&p).unwrap();
        assert_eq!((t.proto, t.sport, t.dport, len), (58, 128, 0, 56));
        assert_eq!(t.dst, "2001:db8::1".parse::<IpAddr>().unwrap());
        // A later IPv4 fragment: no ports.
        let mut f = syn_v4();
        f[6] = 0;
        f[7] = 10;
        assert_eq!(ip_tuple(&f).unwrap().0.dport, 0);
        // Cut short: no tuple rather than garbage.
        assert!(ip_tuple(&syn_v4()[..15]).is_none());
        assert!(ip_tuple(&[0x50]).is_none());
    }
}
