//! The kernel's answers (NLMSG_ERROR: an ACK or an error, with the extended-ACK message and offset) and
//! the transport's typed errors. Describing which object of a batch a rejected message was is the
//! caller's business (it knows what it sent); [`describe_errno`] says what the number means.

use std::fmt;
use std::io;

use super::consts::*;
use super::msg::{align4, attr_str, attrs, messages, Msg};

/// One answer of the kernel to a message of ours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub seq: u32,
    /// 0 for an ACK, else the (positive) errno.
    pub errno: i32,
    /// The extended ACK's message, if the kernel gave one.
    pub msg: Option<String>,
    /// The extended ACK's offset of the offending attribute in our message.
    pub offset: Option<u32>,
}

impl Reply {
    /// The NLMSG_ERROR message `m` as a reply, or None when it is not one (or is too short).
    pub fn parse(m: &Msg<'_>) -> Option<Reply> {
        if m.ty != NLMSG_ERROR {
            return None;
        }
        let b = m.bytes;
        if b.len() < NLMSG_HDRLEN + 4 + NLMSG_HDRLEN {
            // An ACK of a dump may carry only the error code.
            let err = i32::from_ne_bytes(b.get(16..20)?.try_into().ok()?);
            return Some(Reply {
                seq: m.seq,
                errno: -err,
                ..Reply::default()
            });
        }
        let err = i32::from_ne_bytes(b[16..20].try_into().ok()?);
        let orig = &b[20..36];
        let orig_len = u32::from_ne_bytes(orig[0..4].try_into().ok()?) as usize;
        let seq = u32::from_ne_bytes(orig[8..12].try_into().ok()?);
        let mut r = Reply {
            seq,
            errno: -err,
            ..Reply::default()
        };
        if m.flags & NLM_F_ACK_TLVS != 0 {
            let tlv_start = if m.flags & NLM_F_CAPPED != 0 || err == 0 {
                36
            } else {
                20 + align4(orig_len)
            };
            if tlv_start <= b.len() {
                for a in attrs(&b[tlv_start..], 0) {
                    match a.ty {
                        NLMSGERR_ATTR_MSG => r.msg = Some(attr_str(a.payload)),
                        NLMSGERR_ATTR_OFFS if a.payload.len() >= 4 => {
                            r.offset = Some(u32::from_ne_bytes(a.payload[..4].try_into().ok()?))
                        }
                        _ => {}
                    }
                }
            }
        }
        Some(r)
    }
}

/// The replies among the messages of one datagram, in order; the other messages go to `other`
/// (NLMSG_DONE is neither).
pub fn parse_replies<'b>(buf: &'b [u8], replies: &mut Vec<Reply>, mut other: impl FnMut(Msg<'b>)) {
    for m in messages(buf) {
        match m.ty {
            NLMSG_ERROR => replies.extend(Reply::parse(&m)),
            NLMSG_DONE => {}
            _ => other(m),
        }
    }
}

/// What an errno means, as `strerror` says it (`Invalid argument (os error 22)`).
pub fn describe_errno(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

/// What went wrong in an exchange with the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Opening, configuring or using the socket failed (nothing reached the kernel, or the answer could
    /// not be read).
    Socket,
    /// The kernel answered with an error.
    Rejected,
    /// A batch reached the kernel but its answer was lost (receive buffer full) or never came: it may or
    /// may not have been committed.
    OutcomeUnknown,
    /// No answer to a request or dump in time.
    Timeout,
    /// A dump kept being interrupted by changes (`NLM_F_DUMP_INTR` every time).
    Interrupted,
}

/// An error of the transport: its kind, the errno (the kernel's or the socket's) when there is one, and
/// what was being done (`reading the chains of table inet x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub errno: Option<i32>,
    pub context: String,
}

impl Error {
    pub fn io(context: impl Into<String>, e: &io::Error) -> Error {
        Error {
            kind: ErrorKind::Socket,
            errno: e.raw_os_error(),
            context: format!("{}: {e}", context.into()),
        }
    }

    pub fn rejected(context: impl Into<String>, errno: i32) -> Error {
        Error {
            kind: ErrorKind::Rejected,
            errno: Some(errno),
            context: format!("{}: {}", context.into(), describe_errno(errno)),
        }
    }

    pub fn timeout(context: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Timeout,
            errno: Some(libc::ETIMEDOUT),
            context: format!("{}: no answer from the kernel", context.into()),
        }
    }

    pub fn interrupted(context: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Interrupted,
            errno: Some(libc::EINTR),
            context: format!(
                "{}: the ruleset kept changing while it was read",
                context.into()
            ),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.kind {
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            _ => e
                .errno
                .map(|n| io::Error::from_raw_os_error(n).kind())
                .unwrap_or(io::ErrorKind::Other),
        };
        io::Error::new(kind, e.context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::msg::Writer;

    #[test]
    fn replies_with_extended_ack() {
        // An NLMSG_ERROR (capped, with TLVs) for seq 9: ENOENT, message "x", offset 44.
        let mut buf = Vec::new();
        let mut w = Writer { buf: &mut buf };
        let start = w.buf.len();
        w.buf.extend_from_slice(&0u32.to_ne_bytes());
        w.buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        w.buf
            .extend_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        w.buf.extend_from_slice(&9u32.to_ne_bytes());
        w.buf.extend_from_slice(&0u32.to_ne_bytes());
        w.buf.extend_from_slice(&(-2i32).to_ne_bytes());
        w.buf
            .extend_from_slice(&[20, 0, 0, 0, 6, 10, 5, 4, 9, 0, 0, 0, 0, 0, 0, 0]);
        w.strz(NLMSGERR_ATTR_MSG, "x");
        w.attr(NLMSGERR_ATTR_OFFS, &44u32.to_ne_bytes());
        w.end_msg(start);
        let mut replies = Vec::new();
        parse_replies(&buf, &mut replies, |_| panic!("no other message"));
        assert_eq!(
            replies,
            vec![Reply {
                seq: 9,
                errno: 2,
                msg: Some("x".into()),
                offset: Some(44)
            }]
        );
    }

    #[test]
    fn errors_keep_their_kind_and_number() {
        let e = Error::rejected("deleting table inet x", libc::EBUSY);
        assert_eq!(e.kind, ErrorKind::Rejected);
        assert_eq!(e.errno, Some(libc::EBUSY));
        assert!(e.to_string().starts_with("deleting table inet x: "), "{e}");
        let io: io::Error = Error::timeout("reading").into();
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
    }
}
