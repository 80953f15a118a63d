//! The netlink socket: open, bind (a port of our choice, the kernel's, and multicast groups), size the
//! buffers, turn on extended ACKs, send one datagram, receive with a timeout. `rustix` makes the calls;
//! the only `unsafe` is the one `setsockopt` of level SOL_NETLINK that rustix has no wrapper for.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{
    bind, recv, sendmsg_addr, socket_with, sockopt, AddressFamily, RecvFlags, SendAncillaryBuffer,
    SendFlags, SocketFlags, SocketType,
};

use super::consts::{NETLINK_CAP_ACK, NETLINK_EXT_ACK, SOL_NETLINK};

/// Which netlink protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// NETLINK_NETFILTER: nf_tables, and (issue 14) NFLOG and conntrack.
    Netfilter,
    /// NETLINK_ROUTE: links and addresses.
    Route,
}

/// Which port id the socket is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The kernel's choice: the process id when that is free for the protocol, else a negative id. The
    /// nf_tables writer uses it, so that notifications of its own transactions carry the process id.
    Kernel,
    /// A port of [`PRIVATE_PORTS`], never a process id: readers and subscribers of netfilter, so that
    /// the process id stays free for the writer (see `daemon/nftmon.rs`).
    Private,
}

/// Port ids of [`Port::Private`]: above `PID_MAX_LIMIT` (2^22) and below the kernel's negative autobind
/// range, so never a process id.
pub const PRIVATE_PORTS: std::ops::Range<u32> = 0x4000_0000..0x7fff_0000;

/// The bind mask of multicast group `group` (groups 1 to 32; nfnetlink's and rtnetlink's are).
pub const fn group_mask(group: u32) -> u32 {
    1 << (group - 1)
}

/// A bound netlink socket, opened in the calling thread's network namespace.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

/// What one receive gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// A datagram of this many bytes is in the buffer.
    Data(usize),
    /// A datagram larger than the buffer arrived (its start is in the buffer): it was cut.
    Truncated(usize),
    /// The kernel dropped messages for this socket (its receive buffer was full: ENOBUFS).
    Lost,
    /// Nothing within the wait.
    Nothing,
}

impl Socket {
    /// Opens and binds a socket of `protocol` on `port`, joined to the multicast groups of the bind mask
    /// `groups` (see [`group_mask`]; 0 for none).
    pub fn open(protocol: Protocol, port: Port, groups: u32) -> io::Result<Socket> {
        // NETLINK_ROUTE is protocol 0, which rustix spells `None`.
        let proto = match protocol {
            Protocol::Netfilter => Some(netlink::NETFILTER),
            Protocol::Route => None,
        };
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            proto,
        )?;
        match port {
            Port::Kernel => bind(&fd, &SocketAddrNetlink::new(0, groups))?,
            Port::Private => bind_private(&fd, groups)?,
        }
        Ok(Socket { fd })
    }

    /// Extended ACKs on (errors say which attribute, and why) and ACK payloads capped (an error carries
    /// only the failing message's header, which is all the callers use).
    pub fn ext_ack(&self) -> io::Result<()> {
        self.netlink_option(NETLINK_EXT_ACK, 1)?;
        self.netlink_option(NETLINK_CAP_ACK, 1)
    }

    fn netlink_option(&self, name: i32, value: libc::c_int) -> io::Result<()> {
        // SAFETY: `value` is a live c_int, the length passed is its size, and the descriptor is a valid
        // socket owned by `self` for the whole call.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                SOL_NETLINK,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sizes the buffers (the kernel doubles the value): a batch must fit the send buffer whole, and
    /// the answers the receive buffer. The FORCE variants (CAP_NET_ADMIN, which nf_tables needs anyway)
    /// are tried first, then the plain ones (capped by net.core.[wr]mem_max).
    pub fn set_buffers(&self, send: usize, recv: usize) -> io::Result<()> {
        let clamp = |n: usize| n.min(i32::MAX as usize / 2);
        if sockopt::set_socket_send_buffer_size_force(&self.fd, clamp(send)).is_err() {
            sockopt::set_socket_send_buffer_size(&self.fd, clamp(send))?;
        }
        self.set_recv_buffer(recv)
    }

    /// Sizes the receive buffer only (subscriptions: room for bursts of notifications).
    pub fn set_recv_buffer(&self, recv: usize) -> io::Result<()> {
        let recv = recv.min(i32::MAX as usize / 2);
        if sockopt::set_socket_recv_buffer_size_force(&self.fd, recv).is_err() {
            sockopt::set_socket_recv_buffer_size(&self.fd, recv)?;
        }
        Ok(())
    }

    /// Sends `buf` to the kernel in one `sendmsg` (a netlink datagram is taken whole or not at all).
    /// Every message the crate sends goes through this one `sendmsg` call, so that tracing or fault
    /// injection on `sendmsg` (e.g. `strace -e inject=sendmsg:signal=SIGKILL:when=K`) sees each one.
    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        let iov = [std::io::IoSlice::new(buf)];
        loop {
            let sent = sendmsg_addr(
                &self.fd,
                &SocketAddrNetlink::new(0, 0),
                &iov,
                &mut SendAncillaryBuffer::default(),
                SendFlags::empty(),
            );
            match sent {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short netlink send",
                    ))
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one datagram into `buf`. `wait`: None never blocks; `Some(t)` waits up to `t`
    /// (`Duration::MAX`: without limit).
    pub fn recv(&self, buf: &mut [u8], wait: Option<Duration>) -> io::Result<Recv> {
        // No wait at all: the non-blocking receive below says whether there is anything (one system
        // call per datagram, not two).
        if let Some(t) = wait.filter(|t| !t.is_zero()) {
            if !self.readable(t)? {
                return Ok(Recv::Nothing);
            }
        }
        loop {
            match recv(&self.fd, &mut *buf, RecvFlags::DONTWAIT | RecvFlags::TRUNC) {
                Ok((_, n)) if n > buf.len() => return Ok(Recv::Truncated(n)),
                Ok((_, n)) => return Ok(Recv::Data(n)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Ok(Recv::Nothing),
                Err(rustix::io::Errno::NOBUFS) => return Ok(Recv::Lost),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until a datagram can be read, up to `t`; false on timeout or a signal.
    fn readable(&self, t: Duration) -> io::Result<bool> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let timeout = (t != Duration::MAX).then(|| Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: t.subsec_nanos().into(),
        });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Binds to a free port of [`PRIVATE_PORTS`], starting from one derived from the process id and the
/// clock so that concurrent processes rarely try the same.
fn bind_private(fd: &OwnedFd, groups: u32) -> io::Result<()> {
    let span = PRIVATE_PORTS.end - PRIVATE_PORTS.start;
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    );
    for i in 0..64u32 {
        let port = PRIVATE_PORTS.start + seed.wrapping_add(i.wrapping_mul(7919)) % span;
        match bind(fd, &SocketAddrNetlink::new(port, groups)) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::ADDRINUSE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("no free netlink port id"))
}

/// `PRIVATE_PORTS` is never a process id (at most `PID_MAX_LIMIT`, 2^22) and never the kernel's
/// autobind range (negative port ids).
const _: () = assert!(PRIVATE_PORTS.start > 1 << 22 && PRIVATE_PORTS.end < 0x8000_0000);
