//! Reading our table's rules back from the kernel, for their counters and comments: one
//! `NFT_MSG_GETRULE` dump (family inet, filtered by table name) over the netfilter netlink socket, parsed
//! here. rustables can list rules but cannot tell an `inet` table from an `ip` one of the same name (see
//! `../shared/notes/nftables-netlink.md`), so the request and the parsing are ours, on `wire.rs`.
//!
//! Only what `status --counters` needs is decoded: the chain, the handle, the comment (userdata) and the
//! `counter` expression. Listing a big table this way is cheap (no text formatting, no sets).

use crate::netlink::{self as nl, be64, udata_comment_of as udata_comment, Conn, Port, Protocol};
use crate::netlink::{
    NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_TABLE,
    NFTA_RULE_USERDATA, NFT_MSG_GETRULE, NFT_MSG_NEWRULE, NLM_F_DUMP,
};

use super::DataplaneError;

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
    let what = format!("the rules of table inet {table}");
    let mut conn = Conn::open(Protocol::Netfilter, Port::Kernel)?;
    let seq = conn.next_seq();
    let name = super::inventory::strz(table);
    let req = nl::request(
        nl::nft_type(NFT_MSG_GETRULE),
        NLM_F_DUMP,
        seq,
        nl::NFPROTO_INET,
        &[(NFTA_RULE_TABLE, &name)],
    );
    let mut out = Vec::new();
    let answer = conn.exchange(&req, seq, &what, |msg| {
        if msg.ty == nl::nft_type(NFT_MSG_NEWRULE) {
            out.extend(parse_rule(&msg, table));
        }
    })?;
    match answer.errno {
        0 => Ok(out),
        libc::ENOENT => Ok(Vec::new()),
        e => Err(nl::Error::rejected(format!("reading {what}"), e).into()),
    }
}

/// One NEWRULE message of `table` (others are skipped: the filter is the kernel's, this is a check).
fn parse_rule(msg: &nl::Msg<'_>, table: &str) -> Option<DumpedRule> {
    let mut rule = DumpedRule {
        chain: String::new(),
        handle: 0,
        comment: None,
        counter: None,
    };
    let mut in_table = false;
    for a in nl::msg_attrs(msg) {
        match a.ty {
            NFTA_RULE_TABLE => in_table = nl::attr_str(a.payload) == table,
            NFTA_RULE_CHAIN => rule.chain = nl::attr_str(a.payload),
            NFTA_RULE_HANDLE => rule.handle = be64(a.payload).unwrap_or(0),
            NFTA_RULE_USERDATA => rule.comment = udata_comment(a.payload),
            nl::NFTA_RULE_EXPRESSIONS => rule.counter = counter(a.payload),
            _ => {}
        }
    }
    in_table.then_some(rule)
}

/// The `counter` expression among a rule's expressions: `(packets, bytes)`.
fn counter(exprs: &[u8]) -> Option<(u64, u64)> {
    for elem in nl::attrs(exprs, 0).filter(|a| a.ty == nl::NFTA_LIST_ELEM) {
        let mut name = String::new();
        let mut data: &[u8] = &[];
        for a in nl::attrs(elem.payload, 0) {
            match a.ty {
                nl::NFTA_EXPR_NAME => name = nl::attr_str(a.payload),
                nl::NFTA_EXPR_DATA => data = a.payload,
                _ => {}
            }
        }
        if name == "counter" {
            let (mut packets, mut bytes) = (0, 0);
            for a in nl::attrs(data, 0) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A NEWRULE message as the kernel sends it, parsed back.
    #[test]
    fn parses_a_rule_message() {
        let mut buf = Vec::new();
        let mut w = nl::Writer { buf: &mut buf };
        let m = w.begin_msg(nl::nft_type(NFT_MSG_NEWRULE), 0, 1, nl::NFPROTO_INET, 0);
        w.strz(NFTA_RULE_TABLE, "hostpolicy");
        w.strz(NFTA_RULE_CHAIN, "pi-allow-http");
        w.attr(NFTA_RULE_HANDLE, &7u64.to_be_bytes());
        let exprs = w.begin_nest(nl::NFTA_RULE_EXPRESSIONS);
        for (name, data) in [("meta", None), ("counter", Some((3u64, 180u64)))] {
            let e = w.begin_nest(nl::NFTA_LIST_ELEM);
            w.strz(nl::NFTA_EXPR_NAME, name);
            let d = w.begin_nest(nl::NFTA_EXPR_DATA);
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
            &nl::udata_comment("allow-http ingress[0] Allow"),
        );
        w.end_msg(m);
        let msg = nl::messages(&buf).next().unwrap();
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
