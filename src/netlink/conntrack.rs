//! Conntrack over ctnetlink (`NFNL_SUBSYS_CTNETLINK`): the end-of-connection events and a dump of the
//! connections whose mark has given bits.
//!
//! Events are multicast to every socket that joined the group, for every connection of the network
//! namespace (not only ours: filter on the mark). A full receive buffer drops events for that socket
//! (the next receive says ENOBUFS; there is no sequence number, so how many is not known). A DESTROY
//! carries the connection's packet and byte counters when `net.netfilter.nf_conntrack_acct` was on when
//! it was created.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::consts::*;
use super::exchange::Subscription;
use super::msg::{Attr, Msg};
use super::nflog::Tuple;
use super::socket::{group_mask, Port, Protocol};

/// What a conntrack message says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new connection (NEW event), or an entry of a dump.
    New,
    /// The connection ended (DESTROY event).
    Destroy,
}

/// One connection as a ctnetlink message describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub event: Event,
    /// The kernel's id of the entry (stable for its life; ids are hashes and may repeat later).
    pub id: Option<u32>,
    /// The original direction's tuple (ICMP: type and code in place of the ports).
    pub orig: Tuple,
    /// The reply direction's tuple (after NAT: its reverse is what the filter stages saw of a DNATed
    /// connection).
    pub reply: Option<Tuple>,
    pub mark: u32,
    /// Both directions' counters (zero without conntrack accounting).
    pub packets: u64,
    pub bytes: u64,
}

/// Subscribes to the end-of-connection events (DESTROY), with a receive buffer of `rcvbuf` bytes.
pub fn subscribe_destroy(rcvbuf: usize) -> io::Result<Subscription> {
    Subscription::open(
        Protocol::Netfilter,
        Port::Private,
        group_mask(NFNLGRP_CONNTRACK_DESTROY),
        rcvbuf,
    )
}

/// The connection of a ctnetlink event or dump message; `None` for anything else.
pub fn connection(m: &Msg<'_>) -> Option<Connection> {
    if m.subsys() != NFNL_SUBSYS_CTNETLINK {
        return None;
    }
    let event = match m.ty & 0xff {
        IPCTNL_MSG_CT_NEW => Event::New,
        IPCTNL_MSG_CT_DELETE => Event::Destroy,
        _ => return None,
    };
    let mut c = Connection {
        event,
        id: None,
        orig: Tuple {
            proto: 0,
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            sport: 0,
            dport: 0,
        },
        reply: None,
        mark: 0,
        packets: 0,
        bytes: 0,
    };
    let mut have_tuple = false;
    for a in m.attrs() {
        match a.ty {
            CTA_TUPLE_ORIG => {
                c.orig = tuple(&a)?;
                have_tuple = true;
            }
            CTA_TUPLE_REPLY => c.reply = tuple(&a),
            CTA_MARK => c.mark = super::be32(a.payload)?,
            CTA_ID => c.id = super::be32(a.payload),
            CTA_COUNTERS_ORIG | CTA_COUNTERS_REPLY => {
                for n in a.nested() {
                    match n.ty {
                        CTA_COUNTERS_PACKETS => c.packets += super::be64(n.payload).unwrap_or(0),
                        CTA_COUNTERS_BYTES => c.bytes += super::be64(n.payload).unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    have_tuple.then_some(c)
}

fn tuple(a: &Attr<'_>) -> Option<Tuple> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, 0u8, 0u16, 0u16);
    for part in a.nested() {
        match part.ty {
            CTA_TUPLE_IP => {
                for ip in part.nested() {
                    let b = ip.payload;
                    match ip.ty {
                        CTA_IP_V4_SRC => src = Some(IpAddr::V4(v4(b)?)),
                        CTA_IP_V4_DST => dst = Some(IpAddr::V4(v4(b)?)),
                        CTA_IP_V6_SRC => src = Some(IpAddr::V6(v6(b)?)),
                        CTA_IP_V6_DST => dst = Some(IpAddr::V6(v6(b)?)),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for p in part.nested() {
                    let b = p.payload;
                    match p.ty {
                        CTA_PROTO_NUM => proto = *b.first()?,
                        CTA_PROTO_SRC_PORT => {
                            sport = u16::from_be_bytes(b.get(..2)?.try_into().ok()?)
                        }
                        CTA_PROTO_DST_PORT => {
                            dport = u16::from_be_bytes(b.get(..2)?.try_into().ok()?)
                        }
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                            sport = u16::from(*b.first()?)
                        }
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                            dport = u16::from(*b.first()?)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple {
        proto,
        src: src?,
        dst: dst?,
        sport,
        dport,
    })
}

fn v4(b: &[u8]) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

fn v6(b: &[u8]) -> Option<Ipv6Addr> {
    let o: [u8; 16] = b.get(..16)?.try_into().ok()?;
    Some(Ipv6Addr::from(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{messages, Writer};

    /// A DESTROY event of a TCP connection as the kernel writes it.
    pub(crate) fn destroy(src: [u8; 4], sport: u16, dport: u16, mark: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = Writer { buf: &mut buf };
        let m = w.begin_msg(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
            0,
            0,
            2,
            0,
        );
        let t = w.begin_nest(CTA_TUPLE_ORIG);
        let ip = w.begin_nest(CTA_TUPLE_IP);
        w.attr(CTA_IP_V4_SRC, &src);
        w.attr(CTA_IP_V4_DST, &[192, 0, 2, 1]);
        w.end_nest(ip);
        let p = w.begin_nest(CTA_TUPLE_PROTO);
        w.attr(CTA_PROTO_NUM, &[6]);
        w.attr(CTA_PROTO_SRC_PORT, &sport.to_be_bytes());
        w.attr(CTA_PROTO_DST_PORT, &dport.to_be_bytes());
        w.end_nest(p);
        w.end_nest(t);
        w.u32_be(CTA_ID, 77);
        for (ty, packets, bytes) in [
            (CTA_COUNTERS_ORIG, 4u64, 216u64),
            (CTA_COUNTERS_REPLY, 3, 165),
        ] {
            let c = w.begin_nest(ty);
            w.attr(CTA_COUNTERS_PACKETS, &packets.to_be_bytes());
            w.attr(CTA_COUNTERS_BYTES, &bytes.to_be_bytes());
            w.end_nest(c);
        }
        w.u32_be(CTA_MARK, mark);
        w.end_msg(m);
        buf
    }

    #[test]
    fn a_destroy_event_reads_back() {
        let buf = destroy([192, 0, 2, 200], 46174, 22, 0x8000_0000);
        let c = connection(&messages(&buf).next().unwrap()).unwrap();
        assert_eq!(c.event, Event::Destroy);
        assert_eq!(c.id, Some(77));
        assert_eq!(c.mark, 0x8000_0000);
        assert_eq!((c.packets, c.bytes), (7, 381));
        assert_eq!(c.orig.src, "192.0.2.200".parse::<IpAddr>().unwrap());
        assert_eq!((c.orig.proto, c.orig.sport, c.orig.dport), (6, 46174, 22));
    }
}
