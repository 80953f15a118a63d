//! Netlink messages as bytes: one [`Writer`] that builds them (headers, attributes, nests), one iterator
//! over the messages of a datagram ([`messages`]) and one over attributes ([`attrs`], nested attributes
//! by calling it again on a payload). Every reader in the crate (batch answers, dumps, notifications,
//! rtnetlink) goes through these.

use super::consts::*;

pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The type field of an nf_tables message.
pub const fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// A netlink message builder over a byte buffer it appends to. Attributes and nests are written in
/// place; `end_*` patches the lengths.
pub struct Writer<'b> {
    pub buf: &'b mut Vec<u8>,
}

impl Writer<'_> {
    /// Starts an nfnetlink message (nlmsghdr + nfgenmsg); returns its start offset for
    /// [`Writer::end_msg`]. `NLM_F_REQUEST` is always set.
    pub fn begin_msg(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.begin_header(ty, flags, seq);
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Starts a message with only the netlink header (the caller writes its family header, e.g.
    /// rtnetlink's `ifinfomsg`); returns its start offset for [`Writer::end_msg`].
    pub fn begin_header(&mut self, ty: u16, flags: u16, seq: u32) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end_msg
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf
            .extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        start
    }

    pub fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = NLA_HDRLEN + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub fn u32_be(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A NUL-terminated string, as libmnl's `mnl_attr_put_strz`.
    pub fn strz(&mut self, ty: u16, s: &str) {
        let len = NLA_HDRLEN + s.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    pub fn begin_nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Closes a nest; false when it grew beyond an attribute's 16-bit length.
    pub fn end_nest(&mut self, start: usize) -> bool {
        let len = self.buf.len() - start;
        self.buf[start..start + 2]
            .copy_from_slice(&(len.min(u16::MAX as usize) as u16).to_ne_bytes());
        len <= u16::MAX as usize
    }

    /// `NFTA_*_DATA` nest holding `NFTA_DATA_VALUE`.
    pub fn data_value(&mut self, ty: u16, value: &[u8]) {
        let n = self.begin_nest(ty);
        self.attr(NFTA_DATA_VALUE, value);
        self.end_nest(n);
    }

    fn pad(&mut self) {
        let n = align4(self.buf.len()) - self.buf.len();
        self.buf.extend_from_slice(&[0u8; 3][..n]);
    }
}

/// One request of nfnetlink type `ty` (subsystem and message) with string and raw attributes, as bytes.
pub fn request(ty: u16, flags: u16, seq: u32, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    let mut w = Writer { buf: &mut buf };
    let m = w.begin_msg(ty, flags, seq, family, 0);
    for (ty, data) in attrs {
        w.attr(*ty, data);
    }
    w.end_msg(m);
    buf
}

/// libnftnl's userdata encoding: TLVs of a one-byte type, a one-byte length and the value.
pub fn udata_tlv(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    out.push(ty);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// A string TLV as nft writes comments: the bytes and a NUL.
pub fn udata_comment(comment: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(comment.len() + 3);
    v.push(NFTNL_UDATA_COMMENT);
    v.push((comment.len() + 1) as u8);
    v.extend_from_slice(comment.as_bytes());
    v.push(0);
    v
}

/// The comment TLV of a table's, chain's or rule's userdata (libnftnl: type 0, length, string).
pub fn udata_comment_of(udata: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 2 <= udata.len() {
        let (ty, len) = (udata[i], udata[i + 1] as usize);
        let value = udata.get(i + 2..i + 2 + len)?;
        if ty == NFTNL_UDATA_COMMENT {
            return Some(attr_str(value));
        }
        i += 2 + len;
    }
    None
}

/// One netlink message in a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'b> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// The sending socket's port id (the kernel: 0; in a notification: the socket that made the change).
    pub port: u32,
    /// The whole message, header included.
    pub bytes: &'b [u8],
}

impl<'b> Msg<'b> {
    /// The nfnetlink subsystem (`NFNL_SUBSYS_*`) of an nfnetlink message.
    pub fn subsys(&self) -> u16 {
        self.ty >> 8
    }

    /// The nfgenmsg family (`NFPROTO_*`) of an nfnetlink message.
    pub fn family(&self) -> u8 {
        self.bytes.get(NLMSG_HDRLEN).copied().unwrap_or(0)
    }

    /// The nfgenmsg `res_id`: in nf_tables answers, the ruleset generation they were read in.
    pub fn res_id(&self) -> u16 {
        self.bytes
            .get(NLMSG_HDRLEN + 2..NLMSG_HDRLEN + 4)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .unwrap_or(0)
    }

    /// The bytes after the netlink header (a family header, then attributes).
    pub fn payload(&self) -> &'b [u8] {
        self.bytes.get(NLMSG_HDRLEN..).unwrap_or(&[])
    }

    /// The attributes after a family header of `header` bytes; offsets from the message start.
    pub fn attrs_after(&self, header: usize) -> impl Iterator<Item = Attr<'b>> {
        let start = (NLMSG_HDRLEN + header).min(self.bytes.len());
        attrs(&self.bytes[start..], start)
    }

    /// The attributes of an nfnetlink message (after nlmsghdr and nfgenmsg).
    pub fn attrs(&self) -> impl Iterator<Item = Attr<'b>> {
        self.attrs_after(NFGENMSG_LEN)
    }

    /// The first attribute of type `ty` as a string.
    pub fn attr_str(&self, ty: u16) -> Option<String> {
        self.attrs()
            .find(|a| a.ty == ty)
            .map(|a| attr_str(a.payload))
    }
}

/// Splits a buffer of netlink messages; stops at the first malformed header.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let msg = Msg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            port: u32::from_ne_bytes(buf[12..16].try_into().ok()?),
            bytes: &buf[..len],
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(msg)
    })
}

/// One attribute: its type (flags masked off), payload, and offset of its header in the buffer that was
/// given to [`attrs`] (so extended-ACK offsets can be located).
#[derive(Debug, Clone, Copy)]
pub struct Attr<'b> {
    pub ty: u16,
    pub payload: &'b [u8],
    pub offset: usize,
    pub len: usize,
}

impl<'b> Attr<'b> {
    /// The attributes nested in this one; offsets relative to the same base as this one's.
    pub fn nested(&self) -> impl Iterator<Item = Attr<'b>> {
        attrs(self.payload, self.offset + NLA_HDRLEN)
    }
}

/// Iterates the attributes in `buf`; offsets are relative to `base`.
pub fn attrs(buf: &[u8], base: usize) -> impl Iterator<Item = Attr<'_>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if buf.len() < pos + NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([buf[pos], buf[pos + 1]]) as usize;
        let ty = u16::from_ne_bytes([buf[pos + 2], buf[pos + 3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || pos + len > buf.len() {
            return None;
        }
        let a = Attr {
            ty,
            payload: &buf[pos + NLA_HDRLEN..pos + len],
            offset: base + pos,
            len,
        };
        pos += align4(len);
        Some(a)
    })
}

/// The attributes of an nfnetlink message (after nlmsghdr and nfgenmsg); offsets from the message start.
pub fn msg_attrs<'b>(msg: &Msg<'b>) -> impl Iterator<Item = Attr<'b>> {
    msg.attrs()
}

/// A NUL-terminated (or not) string attribute.
pub fn attr_str(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// A big-endian u32 attribute.
pub fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// A big-endian u64 attribute.
pub fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_pads_and_nests() {
        let mut buf = Vec::new();
        let mut w = Writer { buf: &mut buf };
        let m = w.begin_msg(nft_type(NFT_MSG_NEWSET), NLM_F_CREATE, 7, NFPROTO_INET, 0);
        w.strz(NFTA_SET_TABLE, "t");
        let n = w.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        w.data_value(NFTA_SET_ELEM_KEY, &[10, 0, 0, 0]);
        assert!(w.end_nest(n));
        w.end_msg(m);
        assert_eq!(buf.len() % 4, 0);
        let msgs: Vec<_> = messages(&buf).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 7);
        assert_eq!(msgs[0].ty, 0x0a09);
        assert_eq!(msgs[0].flags, NLM_F_REQUEST | NLM_F_CREATE);
        assert_eq!(msgs[0].family(), NFPROTO_INET);
        let a: Vec<_> = msg_attrs(&msgs[0]).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].ty, NFTA_SET_TABLE);
        assert_eq!(attr_str(a[0].payload), "t");
        assert_eq!(a[0].offset, 20);
        assert_eq!(a[1].ty, NFTA_SET_ELEM_LIST_ELEMENTS);
        assert_eq!(a[1].len, 4 + 4 + 4 + 4);
        // Nested: the key nest inside the list, its value inside the key; offsets from the message.
        let key = a[1].nested().next().unwrap();
        assert_eq!((key.ty, key.offset), (NFTA_SET_ELEM_KEY, a[1].offset + 4));
        let value = key.nested().next().unwrap();
        assert_eq!(value.payload, [10, 0, 0, 0]);
        assert_eq!(udata_comment("r1"), b"\x00\x03r1\x00");
    }

    #[test]
    fn userdata_comments() {
        assert_eq!(udata_comment_of(b"\x00\x06hello\x00"), Some("hello".into()));
        assert_eq!(udata_comment_of(b"\x05\x01x\x00\x02hi"), Some("hi".into()));
        assert_eq!(udata_comment_of(b""), None);
        assert_eq!(udata_comment_of(&udata_comment("x y")), Some("x y".into()));
    }

    #[test]
    fn truncated_input_stops_the_iterators() {
        let buf = request(
            nft_type(NFT_MSG_GETTABLE),
            NLM_F_ACK,
            1,
            NFPROTO_INET,
            &[(1, b"t\0")],
        );
        assert_eq!(messages(&buf[..buf.len() - 1]).count(), 0);
        assert_eq!(messages(&buf).count(), 1);
        assert_eq!(attrs(&buf[20..23], 0).count(), 0);
    }
}
