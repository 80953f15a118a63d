//! The node's interfaces and their addresses, over rtnetlink (netlink-packet-route + netlink-sys).
//!
//! `current()` dumps links and addresses (no privileges needed); `Monitor` subscribes to link and address
//! changes so the daemon can re-resolve IP-matched HostEndpoints (spec §3.1) when addresses come and go.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::resolve::Interface;

/// Every interface of the current network namespace with its addresses, sorted by name.
pub fn current() -> io::Result<Vec<Interface>> {
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    for msg in dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))? {
        if let RouteNetlinkMessage::NewLink(link) = msg {
            for attr in &link.attributes {
                if let LinkAttribute::IfName(name) = attr {
                    names.insert(link.header.index, name.clone());
                }
            }
        }
    }
    let mut addrs: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
    for msg in dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))? {
        if let RouteNetlinkMessage::NewAddress(addr) = msg {
            // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
            let local = addr.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = addr.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                addrs.entry(addr.header.index).or_default().push(ip);
            }
        }
    }
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

fn dump(request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
    packet.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;

    let mut out = Vec::new();
    let mut receive = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&receive[offset..size]).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {e}"))
                })?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(e.to_io());
                }
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// rtnetlink multicast groups (linux/rtnetlink.h): RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR.
const GROUPS: u32 = 0x1 | 0x10 | 0x100;

/// A subscription to link and address changes.
pub struct Monitor {
    socket: Socket,
    buf: Vec<u8>,
}

impl Monitor {
    pub fn new() -> io::Result<Monitor> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, GROUPS))?;
        socket.set_non_blocking(false)?;
        set_recv_timeout(&socket, Duration::from_millis(500))?;
        Ok(Monitor {
            socket,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Waits up to about half a second; true when some link or address changed.
    pub fn wait(&mut self) -> io::Result<bool> {
        match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => Ok(n > 0),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            // The kernel dropped notifications (ENOBUFS): something changed; the caller rescans anyway.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(true),
            Err(e) => Err(e),
        }
    }
}

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt with a properly sized timeval on a valid socket fd.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
