//! Netlink framing for the messages rustables cannot build (sets, elements, verdict maps, a few
//! expressions, batch delimiters, queries), and a reader for the kernel's answers. Numbers are from
//! `linux/netlink.h`, `linux/netfilter/nfnetlink.h` and `linux/netfilter/nf_tables.h`.

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NFGENMSG_LEN: usize = 4;
pub(crate) const NLA_HDRLEN: usize = 4;
pub(crate) const NLA_F_NESTED: u16 = 1 << 15;
pub(crate) const NLA_TYPE_MASK: u16 = !(3 << 14);

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_ACK_TLVS: u16 = 0x200;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;
pub(crate) const NLMSGERR_ATTR_OFFS: u16 = 2;

pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 17;
pub(crate) const NFNETLINK_V0: u8 = 0;
pub(crate) const NFPROTO_INET: u8 = 1;

pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_GETTABLE: u16 = 1;
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(crate) const NFT_MSG_GETCHAIN: u16 = 4;
pub(crate) const NFT_MSG_DELCHAIN: u16 = 5;
pub(crate) const NFT_MSG_NEWSET: u16 = 9;
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(crate) const NFT_MSG_DELSETELEM: u16 = 14;

pub(crate) const NFTA_TABLE_NAME: u16 = 1;
pub(crate) const NFTA_TABLE_USERDATA: u16 = 6;
pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;

pub(crate) const NFTA_CHAIN_TABLE: u16 = 1;
pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
pub(crate) const NFTA_CHAIN_USERDATA: u16 = 12;

pub(crate) const NFTA_SET_TABLE: u16 = 1;
pub(crate) const NFTA_SET_NAME: u16 = 2;
pub(crate) const NFTA_SET_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
pub(crate) const NFTA_SET_DATA_TYPE: u16 = 6;
pub(crate) const NFTA_SET_DATA_LEN: u16 = 7;
pub(crate) const NFTA_SET_ID: u16 = 10;
pub(crate) const NFTA_SET_USERDATA: u16 = 13;
pub(crate) const NFT_SET_INTERVAL: u32 = 0x4;
pub(crate) const NFT_SET_MAP: u32 = 0x8;

pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
pub(crate) const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_USERDATA: u16 = 6;
pub(crate) const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

pub(crate) const NFTA_LIST_ELEM: u16 = 1;
pub(crate) const NFTA_DATA_VALUE: u16 = 1;
pub(crate) const NFTA_DATA_VERDICT: u16 = 2;
pub(crate) const NFTA_VERDICT_CODE: u16 = 1;
pub(crate) const NFTA_VERDICT_CHAIN: u16 = 2;
pub(crate) const NFT_JUMP: i32 = -3;
pub(crate) const NFT_GOTO: i32 = -4;
pub(crate) const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

pub(crate) const NFTA_EXPR_NAME: u16 = 1;
pub(crate) const NFTA_EXPR_DATA: u16 = 2;
pub(crate) const NFTA_LOOKUP_SET: u16 = 1;
pub(crate) const NFTA_LOOKUP_SREG: u16 = 2;
pub(crate) const NFTA_LOOKUP_SET_ID: u16 = 4;
pub(crate) const NFTA_LOOKUP_FLAGS: u16 = 5;
pub(crate) const NFT_LOOKUP_F_INV: u32 = 1;
pub(crate) const NFTA_LOG_PREFIX: u16 = 2;
pub(crate) const NFTA_LOG_LEVEL: u16 = 5;
pub(crate) const NFTA_CT_DREG: u16 = 1;
pub(crate) const NFTA_CT_KEY: u16 = 2;
pub(crate) const NFT_CT_STATUS: u32 = 2;
pub(crate) const NFTA_RANGE_SREG: u16 = 1;
pub(crate) const NFTA_RANGE_OP: u16 = 2;
pub(crate) const NFTA_RANGE_FROM_DATA: u16 = 3;
pub(crate) const NFTA_RANGE_TO_DATA: u16 = 4;
pub(crate) const NFT_RANGE_EQ: u32 = 0;
pub(crate) const NFT_RANGE_NEQ: u32 = 1;
pub(crate) const NFT_REG_1: u32 = 1;

/// libnftnl userdata TLV types (`libnftnl/udata.h`).
pub(crate) const NFTNL_UDATA_COMMENT: u8 = 0; // table and rule comments share type 0
pub(crate) const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
pub(crate) const NFTNL_UDATA_SET_DATABYTEORDER: u8 = 1;
pub(crate) const NFTNL_UDATA_SET_ELEM_FLAGS: u8 = 1;
pub(crate) const NFTNL_SET_ELEM_F_INTERVAL_OPEN: u32 = 1;
/// nft's `enum byteorder`.
pub(crate) const BYTEORDER_HOST_ENDIAN: u32 = 1;
pub(crate) const BYTEORDER_BIG_ENDIAN: u32 = 2;

pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The type field of an nf_tables message.
pub(crate) const fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// A netlink message builder over a byte buffer it appends to. Attributes and nests are written in
/// place; `end_*` patches the lengths.
pub(crate) struct Writer<'b> {
    pub(crate) buf: &'b mut Vec<u8>,
}

impl Writer<'_> {
    /// Starts a message (nlmsghdr + nfgenmsg); returns its start offset for [`Writer::end_msg`].
    pub(crate) fn begin_msg(
        &mut self,
        ty: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end_msg
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf
            .extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    pub(crate) fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub(crate) fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = NLA_HDRLEN + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub(crate) fn u32_be(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A NUL-terminated string, as libmnl's `mnl_attr_put_strz`.
    pub(crate) fn strz(&mut self, ty: u16, s: &str) {
        let len = NLA_HDRLEN + s.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    pub(crate) fn begin_nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Closes a nest; false when it grew beyond an attribute's 16-bit length.
    pub(crate) fn end_nest(&mut self, start: usize) -> bool {
        let len = self.buf.len() - start;
        self.buf[start..start + 2]
            .copy_from_slice(&(len.min(u16::MAX as usize) as u16).to_ne_bytes());
        len <= u16::MAX as usize
    }

    /// `NFTA_*_DATA` nest holding `NFTA_DATA_VALUE`.
    pub(crate) fn data_value(&mut self, ty: u16, value: &[u8]) {
        let n = self.begin_nest(ty);
        self.attr(NFTA_DATA_VALUE, value);
        self.end_nest(n);
    }

    fn pad(&mut self) {
        let n = align4(self.buf.len()) - self.buf.len();
        self.buf.extend_from_slice(&[0u8; 3][..n]);
    }
}

/// libnftnl's userdata encoding: TLVs of a one-byte type, a one-byte length and the value.
pub(crate) fn udata_tlv(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    out.push(ty);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// A string TLV as nft writes comments: the bytes and a NUL.
pub(crate) fn udata_comment(comment: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(comment.len() + 3);
    v.push(NFTNL_UDATA_COMMENT);
    v.push((comment.len() + 1) as u8);
    v.extend_from_slice(comment.as_bytes());
    v.push(0);
    v
}

/// One netlink message in a buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg<'b> {
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    /// The whole message, header included.
    pub(crate) bytes: &'b [u8],
}

/// Splits a buffer of netlink messages; stops at the first malformed header.
pub(crate) fn messages(mut buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
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
            bytes: &buf[..len],
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(msg)
    })
}

/// One attribute: its type (flags masked off), payload, and offset of its header in the buffer that was
/// given to [`attrs`] (so extended-ACK offsets can be located).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr<'b> {
    pub(crate) ty: u16,
    pub(crate) payload: &'b [u8],
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// Iterates the attributes in `buf`; offsets are relative to `base`.
pub(crate) fn attrs(buf: &[u8], base: usize) -> impl Iterator<Item = Attr<'_>> {
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
pub(crate) fn msg_attrs<'b>(msg: &Msg<'b>) -> impl Iterator<Item = Attr<'b>> {
    let start = (NLMSG_HDRLEN + NFGENMSG_LEN).min(msg.bytes.len());
    attrs(&msg.bytes[start..], start)
}

/// A NUL-terminated (or not) string attribute.
pub(crate) fn attr_str(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
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
        let a: Vec<_> = msg_attrs(&msgs[0]).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].ty, NFTA_SET_TABLE);
        assert_eq!(attr_str(a[0].payload), "t");
        assert_eq!(a[0].offset, 20);
        assert_eq!(a[1].ty, NFTA_SET_ELEM_LIST_ELEMENTS);
        assert_eq!(a[1].len, 4 + 4 + 4 + 4);
        assert_eq!(udata_comment("r1"), b"\x00\x03r1\x00");
    }
}
