//! Reading our table's rules back from the kernel, for their counters and comments: one
//! `NFT_MSG_GETRULE` dump (family inet, filtered by table name) over the netfilter netlink socket, parsed
//! here. rustables can list rules but cannot tell an `inet` table from an `ip` one of the same name (see
//! `../shared/notes/nftables-netlink.md`), so the request and the parsing are ours, on `wire.rs`.
//!
//! Only what `status --counters` needs is decoded: the chain, the handle, the comment (userdata) and the
//! `counter` expression. Listing a big table this way is cheap (no text formatting, no sets).

use std::io;
use std::time::Duration;

use super::sock::NlSocket;
use super::wire::{self, Writer};
use super::DataplaneError;

const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const SEQ: u32 = 1;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A rule as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRule {
    pub chain: String,
    pub handle: u64,
    /// The rule's comment (userdata TLV), if any.
    pub comment: Option<String>,
    /// `(packets, bytes)` of its `counter` expression, if it has one.
    pub counter: Option<(u64, u64)>,
}

/// Every rule of table `inet TABLE`, chain by chain in the kernel's order. A missing table gives an
/// empty list (ask [`super::Dataplane::table_comment`] to tell it from an empty table).
pub fn rules(table: &str) -> Result<Vec<DumpedRule>, DataplaneError> {
    let err = |what: &str, e: io::Error| DataplaneError {
        message: format!("{what} the rules of table inet {table}: {e}"),
        errno: e.raw_os_error(),
    };
    let sock = NlSocket::open().map_err(|e| err("opening a netlink socket to read", e))?;
    let mut req = Vec::with_capacity(64);
    let mut w = Writer { buf: &mut req };
    let m = w.begin_msg(
        wire::nft_type(NFT_MSG_GETRULE),
        NLM_F_DUMP,
        SEQ,
        wire::NFPROTO_INET,
        0,
    );
    w.strz(NFTA_RULE_TABLE, table);
    w.end_msg(m);
    sock.send(&req).map_err(|e| err("asking for", e))?;

    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match sock.recv(&mut buf, Some(ANSWER_TIMEOUT)) {
            Ok(Some(n)) => n,
            Ok(None) => {
                return Err(err(
                    "reading",
                    io::Error::from_raw_os_error(libc::ETIMEDOUT),
                ))
            }
            Err(e) => return Err(err("reading", e)),
        };
        for msg in wire::messages(&buf[..n]) {
            if msg.seq != SEQ {
                continue;
            }
            match msg.ty {
                wire::NLMSG_DONE => return Ok(out),
                wire::NLMSG_ERROR => {
                    let errno = msg
                        .bytes
                        .get(16..20)
                        .map(|b| -i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                        .unwrap_or(libc::EIO);
                    match errno {
                        0 => return Ok(out),
                        libc::ENOENT => return Ok(Vec::new()),
                        e => return Err(err("reading", io::Error::from_raw_os_error(e))),
                    }
                }
                t if t == wire::nft_type(NFT_MSG_NEWRULE) => {
                    if let Some(rule) = parse_rule(&msg, table) {
                        out.push(rule);
                    }
                }
                _ => {}
            }
        }
    }
}

/// One NEWRULE message of `table` (others are skipped: the filter is the kernel's, this is a check).
fn parse_rule(msg: &wire::Msg<'_>, table: &str) -> Option<DumpedRule> {
    let mut rule = DumpedRule {
        chain: String::new(),
        handle: 0,
        comment: None,
        counter: None,
    };
    let mut in_table = false;
    for a in wire::msg_attrs(msg) {
        match a.ty {
            NFTA_RULE_TABLE => in_table = wire::attr_str(a.payload) == table,
            NFTA_RULE_CHAIN => rule.chain = wire::attr_str(a.payload),
            NFTA_RULE_HANDLE => rule.handle = be64(a.payload).unwrap_or(0),
            NFTA_RULE_USERDATA => rule.comment = udata_comment(a.payload),
            wire::NFTA_RULE_EXPRESSIONS => rule.counter = counter(a.payload),
            _ => {}
        }
    }
    in_table.then_some(rule)
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// The `counter` expression among a rule's expressions: `(packets, bytes)`.
fn counter(exprs: &[u8]) -> Option<(u64, u64)> {
    for elem in wire::attrs(exprs, 0).filter(|a| a.ty == wire::NFTA_LIST_ELEM) {
        let mut name = String::new();
        let mut data: &[u8] = &[];
        for a in wire::attrs(elem.payload, 0) {
            match a.ty {
                wire::NFTA_EXPR_NAME => name = wire::attr_str(a.payload),
                wire::NFTA_EXPR_DATA => data = a.payload,
                _ => {}
            }
        }
        if name == "counter" {
            let (mut packets, mut bytes) = (0, 0);
            for a in wire::attrs(data, 0) {
                match a.ty {
                    NFTA_COUNTER_PACKETS => packets = be64(a.payload).unwrap_or(0),
                    NFTA_COUNTER_BYTES => bytes = be64(a.payload).unwrap_or(0),
                    _ => {}
                }
            }
            return Some((packets, bytes));
        }
    }
    None
}

/// The comment TLV of a rule's userdata (libnftnl: type 0, length, NUL-terminated string).
fn udata_comment(udata: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 2 <= udata.len() {
        let (ty, len) = (udata[i], udata[i + 1] as usize);
        let value = udata.get(i + 2..i + 2 + len)?;
        if ty == wire::NFTNL_UDATA_COMMENT {
            return Some(wire::attr_str(value));
        }
        i += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NEWRULE message as the kernel sends it, parsed back.
    #[test]
    fn parses_a_rule_message() {
        let mut buf = Vec::new();
        let mut w = Writer { buf: &mut buf };
        let m = w.begin_msg(
            wire::nft_type(NFT_MSG_NEWRULE),
            0,
            SEQ,
            wire::NFPROTO_INET,
            0,
        );
        w.strz(NFTA_RULE_TABLE, "hostpolicy");
        w.strz(NFTA_RULE_CHAIN, "pi-allow-http");
        w.attr(NFTA_RULE_HANDLE, &7u64.to_be_bytes());
        let exprs = w.begin_nest(wire::NFTA_RULE_EXPRESSIONS);
        for (name, data) in [("meta", None), ("counter", Some((3u64, 180u64)))] {
            let e = w.begin_nest(wire::NFTA_LIST_ELEM);
            w.strz(wire::NFTA_EXPR_NAME, name);
            let d = w.begin_nest(wire::NFTA_EXPR_DATA);
            if let Some((p, b)) = data {
                w.attr(NFTA_COUNTER_BYTES, &b.to_be_bytes());
                w.attr(NFTA_COUNTER_PACKETS, &p.to_be_bytes());
            }
            w.end_nest(d);
            w.end_nest(e);
        }
        w.end_nest(exprs);
        w.attr(
            NFTA_RULE_USERDATA,
            &wire::udata_comment("allow-http ingress[0] Allow"),
        );
        w.end_msg(m);
        let msg = wire::messages(&buf).next().unwrap();
        let r = parse_rule(&msg, "hostpolicy").unwrap();
        assert_eq!(
            r,
            DumpedRule {
                chain: "pi-allow-http".into(),
                handle: 7,
                comment: Some("allow-http ingress[0] Allow".into()),
                counter: Some((3, 180)),
            }
        );
        assert_eq!(parse_rule(&msg, "other"), None);
    }
}
