//! The node's interfaces and their addresses, over rtnetlink (the kernel transport, `crate::netlink`).
//!
//! `current()` dumps links and addresses (no privileges needed); `Monitor` subscribes to link and address
//! changes so the daemon can re-resolve IP-matched HostEndpoints (spec §3.1) when addresses come and go.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::netlink::{
    self as nl, Conn, Delivery, Msg, Port, Protocol, Subscription, IFADDRMSG_LEN, IFA_ADDRESS,
    IFA_LOCAL, IFINFOMSG_LEN, IFLA_IFNAME, NLM_F_DUMP, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK, RTM_GETADDR, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK,
};
use crate::resolve::Interface;

/// Every interface of the current network namespace with its addresses, sorted by name.
pub fn current() -> io::Result<Vec<Interface>> {
    let mut conn = Conn::open(Protocol::Route, Port::Kernel)?;
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    dump(&mut conn, RTM_GETLINK, IFINFOMSG_LEN, "the links", |m| {
        if let Some((index, name)) = parse_link(&m) {
            names.insert(index, name);
        }
    })?;
    let mut addrs: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
    dump(
        &mut conn,
        RTM_GETADDR,
        IFADDRMSG_LEN,
        "the addresses",
        |m| {
            if let Some((index, ip)) = parse_addr(&m) {
                addrs.entry(index).or_default().push(ip);
            }
        },
    )?;
    let mut out: Vec<Interface> = names
        .into_iter()
        .map(|(index, name)| {
            let mut a = addrs.remove(&index).unwrap_or_default();
            a.sort();
            a.dedup();
            Interface { name, addrs: a }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The index and name of every link of the current network namespace (flow records name the
/// interfaces NFLOG gives by index).
pub fn links() -> io::Result<BTreeMap<u32, String>> {
    let mut conn = Conn::open(Protocol::Route, Port::Kernel)?;
    let mut names = BTreeMap::new();
    dump(&mut conn, RTM_GETLINK, IFINFOMSG_LEN, "the links", |m| {
        if let Some((index, name)) = parse_link(&m) {
            names.insert(index, name);
        }
    })?;
    Ok(names)
}

/// One rtnetlink dump of `ty` (all families: a zeroed family header of `header` bytes).
fn dump(
    conn: &mut Conn,
    ty: u16,
    header: usize,
    what: &str,
    each: impl FnMut(Msg<'_>),
) -> io::Result<()> {
    let seq = conn.next_seq();
    let mut req = Vec::with_capacity(32);
    let mut w = nl::Writer { buf: &mut req };
    let m = w.begin_header(ty, NLM_F_DUMP, seq);
    w.buf.resize(w.buf.len() + header, 0);
    w.end_msg(m);
    let answer = conn.exchange(&req, seq, what, each)?;
    match answer.errno {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// (index, name) of an RTM_NEWLINK message.
fn parse_link(m: &Msg<'_>) -> Option<(u32, String)> {
    if m.ty != RTM_NEWLINK {
        return None;
    }
    // struct ifinfomsg: family, pad, type (u16), index (i32), flags, change
    let index = u32::from_ne_bytes(m.payload().get(4..8)?.try_into().ok()?);
    let name = m
        .attrs_after(IFINFOMSG_LEN)
        .find(|a| a.ty == IFLA_IFNAME)
        .map(|a| nl::attr_str(a.payload))?;
    Some((index, name))
}

/// (index, address) of an RTM_NEWADDR message: IFA_LOCAL is the interface's own address on
/// point-to-point links, IFA_ADDRESS otherwise.
fn parse_addr(m: &Msg<'_>) -> Option<(u32, IpAddr)> {
    if m.ty != RTM_NEWADDR {
        return None;
    }
    // struct ifaddrmsg: family, prefixlen, flags, scope, index (u32)
    let index = u32::from_ne_bytes(m.payload().get(4..8)?.try_into().ok()?);
    let ip = |payload: &[u8]| -> Option<IpAddr> {
        match payload.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(payload).ok()?,
            ))),
            16 => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(payload).ok()?,
            ))),
            _ => None,
        }
    };
    let (mut local, mut address) = (None, None);
    for a in m.attrs_after(IFADDRMSG_LEN) {
        match a.ty {
            IFA_LOCAL => local = ip(a.payload),
            IFA_ADDRESS => address = ip(a.payload),
            _ => {}
        }
    }
    Some((index, local.or(address)?))
}

/// A subscription to link and address changes.
pub struct Monitor {
    sub: Subscription,
}

impl Monitor {
    pub fn new() -> io::Result<Monitor> {
        let groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
        Ok(Monitor {
            sub: Subscription::open(Protocol::Route, Port::Kernel, groups, 1 << 20)?,
        })
    }

    /// Waits up to about half a second; true when some link or address changed.
    pub fn wait(&mut self) -> io::Result<bool> {
        Ok(match self.sub.recv(Some(Duration::from_millis(500)))? {
            Delivery::Data(buf) => !buf.is_empty(),
            // The kernel dropped notifications: something changed; the caller rescans anyway.
            Delivery::Lost => true,
            Delivery::Nothing => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, header: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = nl::Writer { buf: &mut buf };
        let m = w.begin_header(ty, 0, 1);
        w.buf.extend_from_slice(header);
        for (ty, data) in attrs {
            w.attr(*ty, data);
        }
        w.end_msg(m);
        buf
    }

    #[test]
    fn links_and_addresses_are_parsed() {
        let mut ifinfo = vec![0u8; IFINFOMSG_LEN];
        ifinfo[4..8].copy_from_slice(&7u32.to_ne_bytes());
        let link = message(RTM_NEWLINK, &ifinfo, &[(IFLA_IFNAME, b"eth0\0")]);
        let m = nl::messages(&link).next().unwrap();
        assert_eq!(parse_link(&m), Some((7, "eth0".into())));

        let mut ifaddr = vec![0u8; IFADDRMSG_LEN];
        ifaddr[4..8].copy_from_slice(&7u32.to_ne_bytes());
        // point-to-point: IFA_LOCAL is ours, IFA_ADDRESS the peer
        let addr = message(
            RTM_NEWADDR,
            &ifaddr,
            &[(IFA_ADDRESS, &[192, 0, 2, 9]), (IFA_LOCAL, &[192, 0, 2, 1])],
        );
        let m = nl::messages(&addr).next().unwrap();
        assert_eq!(parse_addr(&m), Some((7, "192.0.2.1".parse().unwrap())));
        let v6: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let addr = message(RTM_NEWADDR, &ifaddr, &[(IFA_ADDRESS, &v6)]);
        let m = nl::messages(&addr).next().unwrap();
        assert_eq!(parse_addr(&m), Some((7, "2001:db8::1".parse().unwrap())));
        assert_eq!(parse_link(&m), None, "not a link");
    }
}
