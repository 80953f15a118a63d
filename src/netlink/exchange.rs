//! Talking to the kernel: a batch in one `sendmsg` with its answers mapped to sequence numbers
//! ([`send_batch`]), a request or dump and its answer ([`Conn::exchange`]), and a multicast
//! subscription with a receive that can time out ([`Subscription`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::consts::*;
use super::error::{parse_replies, Error, ErrorKind, Reply};
use super::msg::{messages, Msg};
use super::socket::{Port, Protocol, Recv, Socket};

/// How long a request waits for its answer. The kernel answers inside the `sendmsg` of a batch or a
/// request, so its answers are normally queued already; this only bounds pathological cases.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a batch did not (certainly) commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The socket could not be opened, sized or written to: nothing reached the kernel.
    Socket(Error),
    /// The kernel refused the batch, so nothing of it was committed (a batch is all or nothing).
    /// `first`: the answer to the first rejected message (the others usually fail because of it);
    /// `more`: how many other messages were rejected; `lost`: some answers did not fit the buffer.
    Rejected {
        first: Reply,
        more: usize,
        lost: bool,
    },
    /// The batch reached the kernel but its answers were lost or did not come: it may or may not have
    /// been committed.
    Unknown(Error),
}

/// The kernel's time for the batches of this process: nanoseconds from each batch's `sendmsg` until its
/// answer was read, and how many batches (see [`batch_time`]).
static BATCH_NANOS: AtomicU64 = AtomicU64::new(0);
static BATCHES: AtomicU64 = AtomicU64::new(0);

/// How many batches this process has sent with [`send_batch`] and the kernel's time for them: from the
/// `sendmsg` (in which the kernel checks and commits the whole transaction) until its answer was read.
/// Socket set-up and close are not counted. The benchmark's floor and the daemon's `applied` event read
/// it (the difference of two readings is the time of the batches in between).
pub fn batch_time() -> (u64, Duration) {
    (
        BATCHES.load(Ordering::Relaxed),
        Duration::from_nanos(BATCH_NANOS.load(Ordering::Relaxed)),
    )
}

/// Sends one nfnetlink batch (BATCH_BEGIN, messages numbered from 0, BATCH_END) in ONE `sendmsg` on
/// its own socket, and waits for the answer to message `last_seq` (the only one that asks for an ACK;
/// errors are always answered). `messages`: how many messages the batch holds (to size the receive
/// buffer for one error per message).
pub fn send_batch(bytes: &[u8], messages: usize, last_seq: u32) -> Result<(), BatchError> {
    send_batch_on(&batch_socket()?, bytes, messages, last_seq)
}

/// A socket for [`send_batch_on`]: netfilter, extended ACKs on, in this thread's network namespace.
pub fn batch_socket() -> Result<Socket, BatchError> {
    Socket::open(Protocol::Netfilter, Port::Kernel, 0)
        .and_then(|s| s.ext_ack().map(|()| s))
        .map_err(|e| BatchError::Socket(Error::io("opening the netfilter netlink socket", &e)))
}

/// [`send_batch`] on a socket the caller keeps: the transactions of one swap share it. Closing a
/// netfilter socket right after a commit waits for the kernel's clean-up of that commit (~10 ms measured
/// on 6.18, whatever the batch's size), so a socket per transaction paid that wait between the staging
/// transaction and the switch. A socket whose batch failed must not be used again (an answer may still
/// come on it).
pub fn send_batch_on(
    sock: &Socket,
    bytes: &[u8],
    messages: usize,
    last_seq: u32,
) -> Result<(), BatchError> {
    // Answers: one ACK on success; on failure one error per rejected message (often many: every rule of
    // a rejected chain fails too). Memory is only used when answers arrive.
    let recv = (messages * 1024).clamp(1 << 20, 64 << 20);
    sock.set_buffers(bytes.len() + (64 << 10), recv)
        .map_err(|e| BatchError::Socket(Error::io("sizing the netlink socket buffers", &e)))?;
    let started = Instant::now();
    let answered = || {
        BATCHES.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        BATCH_NANOS.fetch_add(nanos, Ordering::Relaxed);
    };
    sock.send(bytes).map_err(|e| {
        BatchError::Socket(Error::io(
            format!(
                "sending the batch ({messages} messages, {} bytes)",
                bytes.len()
            ),
            &e,
        ))
    })?;

    let mut replies: Vec<Reply> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut lost = false;
    let done = |replies: &[Reply]| {
        replies
            .iter()
            .any(|r| r.seq == last_seq || (r.seq == 0 && r.errno != 0))
    };
    let mut wait = None;
    loop {
        match sock.recv(&mut buf, wait) {
            Ok(Recv::Data(n)) => parse_replies(&buf[..n], &mut replies, |_| {}),
            Ok(Recv::Truncated(_)) | Ok(Recv::Lost) => lost = true,
            Ok(Recv::Nothing) if wait.is_none() && !done(&replies) && !lost => {
                wait = Some(ANSWER_TIMEOUT)
            }
            Ok(Recv::Nothing) => break,
            Err(e) => {
                return Err(BatchError::Unknown(Error {
                    kind: ErrorKind::OutcomeUnknown,
                    ..Error::io("receiving the kernel's answer; the outcome is unknown", &e)
                }))
            }
        }
        if done(&replies) && wait.is_some() {
            wait = None; // drain what is already queued, without waiting
        }
    }
    answered();
    let mut errors: Vec<Reply> = replies.iter().filter(|r| r.errno != 0).cloned().collect();
    errors.sort_by_key(|r| r.seq);
    if !errors.is_empty() {
        let more = errors.len() - 1;
        return Err(BatchError::Rejected {
            first: errors.swap_remove(0),
            more,
            lost,
        });
    }
    if lost {
        return Err(BatchError::Unknown(Error {
            kind: ErrorKind::OutcomeUnknown,
            errno: Some(libc::ENOBUFS),
            context: "the kernel's answers were lost (receive buffer full); the outcome is unknown"
                .into(),
        }));
    }
    if !replies.iter().any(|r| r.seq == last_seq) {
        return Err(BatchError::Unknown(Error {
            kind: ErrorKind::OutcomeUnknown,
            errno: Some(libc::ETIMEDOUT),
            context: "no acknowledgement from the kernel for the batch; the outcome is unknown"
                .into(),
        }));
    }
    Ok(())
}

/// The end of the answer to one request or dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// 0, or the kernel's (positive) errno.
    pub errno: i32,
    /// A dump message carried `NLM_F_DUMP_INTR`: the objects changed while they were listed.
    pub interrupted: bool,
}

/// A socket for requests and dumps, with its receive buffer and sequence numbers.
#[derive(Debug)]
pub struct Conn {
    sock: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl Conn {
    pub fn open(protocol: Protocol, port: Port) -> Result<Conn, Error> {
        let sock = Socket::open(protocol, port, 0)
            .map_err(|e| Error::io("opening a netlink socket", &e))?;
        Ok(Conn {
            sock,
            buf: vec![0u8; 256 << 10],
            seq: 0,
        })
    }

    /// The sequence number for the next request.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends `req` (one message of sequence number `seq`) and feeds every answer message of that
    /// sequence number to `each` until the answer ends (NLMSG_DONE, or NLMSG_ERROR: an ACK or an error).
    /// `what` names the request in errors.
    pub fn exchange(
        &mut self,
        req: &[u8],
        seq: u32,
        what: &str,
        mut each: impl FnMut(Msg<'_>),
    ) -> Result<Answer, Error> {
        self.sock
            .send(req)
            .map_err(|e| Error::io(format!("asking for {what}"), &e))?;
        let mut answer = Answer {
            errno: 0,
            interrupted: false,
        };
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = match self.sock.recv(&mut self.buf, Some(left)) {
                Ok(Recv::Data(n)) => n,
                Ok(Recv::Nothing) if left.is_zero() => return Err(Error::timeout(what)),
                Ok(Recv::Nothing) => continue,
                Ok(Recv::Lost) => {
                    return Err(Error::io(
                        format!("reading {what}"),
                        &std::io::Error::from_raw_os_error(libc::ENOBUFS),
                    ))
                }
                Ok(Recv::Truncated(n)) => {
                    return Err(Error {
                        kind: ErrorKind::Socket,
                        errno: Some(libc::EMSGSIZE),
                        context: format!(
                        "reading {what}: an answer of {n} bytes does not fit the {} byte buffer",
                        self.buf.len()
                    ),
                    })
                }
                Err(e) => return Err(Error::io(format!("reading {what}"), &e)),
            };
            for m in messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                answer.interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                match m.ty {
                    NLMSG_ERROR | NLMSG_DONE => {
                        answer.errno = m
                            .bytes
                            .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                            .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        return Ok(answer);
                    }
                    _ => each(m),
                }
            }
        }
    }
}

impl std::os::fd::AsFd for Subscription {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// What one wait on a [`Subscription`] gave.
#[derive(Debug)]
pub enum Delivery<'a> {
    /// One datagram of messages (iterate with [`messages`]).
    Data(&'a [u8]),
    /// The kernel dropped messages (the receive buffer was full, or a datagram did not fit ours):
    /// something happened, it is not known what.
    Lost,
    /// Nothing within the timeout.
    Nothing,
}

/// A subscription to multicast groups: nf_tables changes (`NFNLGRP_NFTABLES`), conntrack events
/// (`NFNLGRP_CONNTRACK_*`), link and address changes (`RTMGRP_*`). For NFLOG, bind a group with a
/// config message on the socket (`NFULNL_CFG_CMD_BIND`, sent with [`Subscription::send`]).
#[derive(Debug)]
pub struct Subscription {
    sock: Socket,
    buf: Vec<u8>,
}

impl Subscription {
    /// Joins the groups of bind mask `groups` (see [`super::socket::group_mask`]) with a receive buffer
    /// of `rcvbuf` bytes (best effort: an overflow is reported as [`Delivery::Lost`]).
    pub fn open(
        protocol: Protocol,
        port: Port,
        groups: u32,
        rcvbuf: usize,
    ) -> std::io::Result<Subscription> {
        let sock = Socket::open(protocol, port, groups)?;
        let _ = sock.set_recv_buffer(rcvbuf);
        Ok(Subscription {
            sock,
            buf: vec![0; 256 << 10],
        })
    }

    /// Sends one message on the subscription's socket (configuration of NFLOG and the like).
    pub fn send(&self, msg: &[u8]) -> std::io::Result<()> {
        self.sock.send(msg)
    }

    /// Sends `msg` (of sequence number `seq`, asking for an ACK) and waits for the kernel's answer to
    /// it; other messages that arrive meanwhile are dropped (nothing is bound or joined yet when this
    /// configures a subscription). The kernel's error as an `io::Error` of its errno.
    pub fn ack(&mut self, msg: &[u8], seq: u32) -> std::io::Result<()> {
        self.sock.send(msg)?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = match self.sock.recv(&mut self.buf, Some(left))? {
                Recv::Data(n) => n,
                Recv::Nothing if left.is_zero() => {
                    return Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT))
                }
                Recv::Nothing | Recv::Lost | Recv::Truncated(_) => continue,
            };
            let mut replies = Vec::new();
            parse_replies(&self.buf[..n], &mut replies, |_| {});
            if let Some(r) = replies.into_iter().find(|r| r.seq == seq) {
                return match r.errno {
                    0 => Ok(()),
                    e => Err(std::io::Error::from_raw_os_error(e)),
                };
            }
        }
    }

    /// Waits up to `timeout` (None: until something arrives) for one datagram.
    pub fn recv(&mut self, timeout: Option<Duration>) -> std::io::Result<Delivery<'_>> {
        match self
            .sock
            .recv(&mut self.buf, Some(timeout.unwrap_or(Duration::MAX)))?
        {
            Recv::Data(n) => Ok(Delivery::Data(&self.buf[..n])),
            Recv::Truncated(_) | Recv::Lost => Ok(Delivery::Lost),
            Recv::Nothing => Ok(Delivery::Nothing),
        }
    }
}
