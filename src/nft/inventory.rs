//! What the kernel holds in our table, read back for the swap (`plan.rs`, `exec.rs`): the table itself
//! (its comment and flags), its chains (name, hook, priority, type, policy, flags, comment) and its named
//! sets and maps (name, flags, key, data type, userdata), each list in the kernel's order, which is the
//! order `nft list` shows; and, on request, the elements of one set.
//!
//! Netlink dumps of family inet (`NFT_MSG_GETCHAIN`, `NFT_MSG_GETSET`, `NFT_MSG_GETSETELEM`) on our own
//! socket, filtered by table name here (rustables cannot tell an `inet` table from an `ip` one). A dump
//! the kernel marks as interrupted (`NLM_F_DUMP_INTR`: the ruleset changed while it was read) is read
//! again. Parsing is separate from the socket so that it can be tested on hand-made messages.

use crate::netlink::{self as nl, be32, udata_comment_of as udata_comment, Conn, Port, Protocol};
use crate::netlink::{
    NFTA_CHAIN_FLAGS, NFTA_CHAIN_HOOK, NFTA_CHAIN_NAME, NFTA_CHAIN_POLICY, NFTA_CHAIN_TABLE,
    NFTA_CHAIN_TYPE, NFTA_CHAIN_USERDATA, NFTA_HOOK_DEV, NFTA_HOOK_DEVS, NFTA_HOOK_HOOKNUM,
    NFTA_HOOK_PRIORITY, NFTA_TABLE_FLAGS, NFT_MSG_GETCHAIN, NFT_MSG_GETSET, NFT_MSG_GETSETELEM,
    NFT_MSG_NEWCHAIN, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM, NLM_F_ACK, NLM_F_DUMP,
};

use super::DataplaneError;

pub(crate) use crate::netlink::NFT_SET_ANONYMOUS;

/// How often a dump that the kernel marks as interrupted is read again.
const DUMP_TRIES: usize = 5;

/// Table inet NAME as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inventory {
    /// The table's comment (userdata comment TLV), if it has one.
    pub(crate) comment: Option<String>,
    /// `NFTA_TABLE_FLAGS` (dormant, owner, ...).
    pub(crate) flags: u32,
    /// `NFTA_TABLE_HANDLE`: a table deleted and made again has another (the kernel numbers tables
    /// once per boot), and its rules are numbered afresh: rule handles are only meaningful with it.
    pub(crate) handle: u64,
    /// In the kernel's order.
    pub(crate) chains: Vec<KChain>,
    /// Named sets and maps (anonymous sets left out), in the kernel's order.
    pub(crate) sets: Vec<KSet>,
}

/// A chain as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KChain {
    pub(crate) name: String,
    /// `Some` for a base chain.
    pub(crate) hook: Option<KHook>,
    /// `NFTA_CHAIN_FLAGS` (`NFT_CHAIN_BASE` for a base chain, offload, binding).
    pub(crate) flags: u32,
    /// `NFTA_CHAIN_USERDATA` (the comment), raw.
    pub(crate) userdata: Option<Vec<u8>>,
}

/// The hook of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KHook {
    /// `NF_INET_*`.
    pub(crate) num: u32,
    pub(crate) priority: i32,
    /// `filter`, `nat`, `route`.
    pub(crate) chain_type: String,
    /// `NF_ACCEPT` (1) or `NF_DROP` (0).
    pub(crate) policy: Option<u32>,
    /// The hook is bound to devices (netdev-style hooks): never one of ours.
    pub(crate) devices: bool,
}

/// A named set or map as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KSet {
    pub(crate) name: String,
    /// `NFT_SET_*` (interval, map, timeout, ...).
    pub(crate) flags: u32,
    pub(crate) key_type: u32,
    pub(crate) key_len: u32,
    /// `Some` for a map.
    pub(crate) data_type: Option<u32>,
    /// `NFTA_SET_USERDATA` (nft's byte orders, comment), raw.
    pub(crate) userdata: Option<Vec<u8>>,
}

/// One element of a set as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KElem {
    pub(crate) key: Vec<u8>,
    /// `NFTA_SET_ELEM_FLAGS` (`NFT_SET_ELEM_INTERVAL_END`), 0 when absent.
    pub(crate) flags: u32,
    /// `NFTA_SET_ELEM_USERDATA` (nft's open-interval flag, comments), raw.
    pub(crate) userdata: Option<Vec<u8>>,
    /// Anything else the element carries (data of a map element, timeouts, expressions).
    pub(crate) other: bool,
}

/// Table inet `table`: None when it does not exist.
pub(crate) fn read(table: &str) -> Result<Option<Inventory>, DataplaneError> {
    for _ in 0..DUMP_TRIES {
        let Some((comment, flags, handle)) = read_table(table)? else {
            return Ok(None);
        };
        let name = strz(table);
        let (chains, intr_c) = dump(
            NFT_MSG_GETCHAIN,
            &format!("the chains of table inet {table}"),
            &[(NFTA_CHAIN_TABLE, &name)],
        )?;
        let (sets, intr_s) = dump(
            NFT_MSG_GETSET,
            &format!("the sets of table inet {table}"),
            &[(nl::NFTA_SET_TABLE, &name)],
        )?;
        if intr_c || intr_s {
            continue;
        }
        let chains = chains
            .iter()
            .filter_map(|m| parse_chain(&wire_msg(m), table))
            .collect();
        let sets = sets
            .iter()
            .filter_map(|m| parse_set(&wire_msg(m), table))
            .filter(|s| s.flags & NFT_SET_ANONYMOUS == 0)
            .collect();
        return Ok(Some(Inventory {
            comment,
            flags,
            handle,
            chains,
            sets,
        }));
    }
    Err(nl::Error::interrupted(format!("reading table inet {table}")).into())
}

/// The named sets and maps of table inet `table` (none when it does not exist), without its chains.
pub(crate) fn sets(table: &str) -> Result<Vec<KSet>, DataplaneError> {
    for _ in 0..DUMP_TRIES {
        let (sets, intr) = dump(
            NFT_MSG_GETSET,
            &format!("the sets of table inet {table}"),
            &[(nl::NFTA_SET_TABLE, &strz(table))],
        )?;
        if intr {
            continue;
        }
        return Ok(sets
            .iter()
            .filter_map(|m| parse_set(&wire_msg(m), table))
            .filter(|s| s.flags & NFT_SET_ANONYMOUS == 0)
            .collect());
    }
    Err(nl::Error::interrupted(format!("reading the sets of table inet {table}")).into())
}

/// The comment of table inet `table` (`chain` None) or of its chain `chain`: None when it does not exist,
/// `Some("")` when it has no comment.
pub(crate) fn comment(table: &str, chain: Option<&str>) -> Result<Option<String>, DataplaneError> {
    let what = match chain {
        None => format!("table inet {table}"),
        Some(c) => format!("chain {c} of table inet {table}"),
    };
    let mut conn = Conn::open(Protocol::Netfilter, Port::Kernel)?;
    let (get, new, udata_attr) = match chain {
        None => (
            nl::NFT_MSG_GETTABLE,
            nl::NFT_MSG_NEWTABLE,
            nl::NFTA_TABLE_USERDATA,
        ),
        Some(_) => (
            nl::NFT_MSG_GETCHAIN,
            nl::NFT_MSG_NEWCHAIN,
            nl::NFTA_CHAIN_USERDATA,
        ),
    };
    let table_attr = strz(table);
    let chain_attr = chain.map(strz);
    let attrs: Vec<(u16, &[u8])> = match &chain_attr {
        None => vec![(nl::NFTA_TABLE_NAME, &table_attr)],
        Some(c) => vec![
            (nl::NFTA_CHAIN_TABLE, &table_attr),
            (nl::NFTA_CHAIN_NAME, c),
        ],
    };
    let seq = conn.next_seq();
    let req = nl::request(
        nl::nft_type(get),
        nl::NLM_F_ACK,
        seq,
        nl::NFPROTO_INET,
        &attrs,
    );
    let mut comment: Option<String> = None;
    let mut found = false;
    let answer = conn.exchange(&req, seq, &format!("querying {what}"), |m| {
        if m.ty == nl::nft_type(new) {
            found = true;
            for a in m.attrs() {
                if a.ty == udata_attr {
                    comment = nl::udata_comment_of(a.payload);
                }
            }
        }
    })?;
    match answer.errno {
        0 if found => Ok(Some(comment.unwrap_or_default())),
        0 | libc::ENOENT => Ok(None),
        errno => Err(nl::Error::rejected(format!("querying {what}"), errno).into()),
    }
}

/// The elements of set `set` of table inet `table`.
pub(crate) fn elements(table: &str, set: &str) -> Result<Vec<KElem>, DataplaneError> {
    for _ in 0..DUMP_TRIES {
        let what = format!("the elements of set {set} of table inet {table}");
        let (msgs, intr) = dump(
            NFT_MSG_GETSETELEM,
            &what,
            &[
                (nl::NFTA_SET_ELEM_LIST_TABLE, &strz(table)),
                (nl::NFTA_SET_ELEM_LIST_SET, &strz(set)),
            ],
        )?;
        if intr {
            continue;
        }
        let mut out = Vec::new();
        for m in &msgs {
            parse_elements(&wire_msg(m), table, set, &mut out);
        }
        return Ok(out);
    }
    Err(nl::Error::interrupted(format!("reading set {set} of table inet {table}")).into())
}

/// (comment, flags) of table inet `table`, None when it does not exist.
fn read_table(table: &str) -> Result<Option<(Option<String>, u32, u64)>, DataplaneError> {
    let what = format!("table inet {table}");
    let mut conn = Conn::open(Protocol::Netfilter, Port::Kernel)?;
    let seq = conn.next_seq();
    let req = nl::request(
        nl::nft_type(nl::NFT_MSG_GETTABLE),
        NLM_F_ACK,
        seq,
        nl::NFPROTO_INET,
        &[(nl::NFTA_TABLE_NAME, &strz(table))],
    );
    let mut found = None;
    let answer = conn.exchange(&req, seq, &what, |m| {
        if m.ty == nl::nft_type(nl::NFT_MSG_NEWTABLE) {
            found = Some(parse_table(&m));
        }
    })?;
    match answer.errno {
        0 => Ok(found),
        libc::ENOENT => Ok(None),
        e => Err(nl::Error::rejected(format!("querying {what}"), e).into()),
    }
}

/// A string attribute's value: the bytes and a NUL.
pub(crate) fn strz(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

/// An owned message, parsed again when needed.
fn wire_msg(bytes: &[u8]) -> nl::Msg<'_> {
    nl::messages(bytes)
        .next()
        .expect("dump() keeps whole messages")
}

/// One dump request (family inet) with the attributes `attrs`; returns the answer messages (owned)
/// and whether the kernel marked the dump as interrupted.
fn dump(
    msg: u16,
    what: &str,
    attrs: &[(u16, &[u8])],
) -> Result<(Vec<Vec<u8>>, bool), DataplaneError> {
    let mut conn = Conn::open(Protocol::Netfilter, Port::Kernel)?;
    let seq = conn.next_seq();
    let req = nl::request(nl::nft_type(msg), NLM_F_DUMP, seq, nl::NFPROTO_INET, attrs);
    let mut out = Vec::new();
    let answer = conn.exchange(&req, seq, what, |m| out.push(m.bytes.to_vec()))?;
    match answer.errno {
        0 => Ok((out, answer.interrupted)),
        // the table or set went away: nothing to list
        libc::ENOENT => Ok((Vec::new(), answer.interrupted)),
        e => Err(nl::Error::rejected(format!("reading {what}"), e).into()),
    }
}

fn parse_table(m: &nl::Msg<'_>) -> (Option<String>, u32, u64) {
    let (mut comment, mut flags, mut handle) = (None, 0, 0);
    for a in nl::msg_attrs(m) {
        match a.ty {
            nl::NFTA_TABLE_USERDATA => comment = udata_comment(a.payload),
            NFTA_TABLE_FLAGS => flags = be32(a.payload).unwrap_or(0),
            nl::NFTA_TABLE_HANDLE => handle = nl::be64(a.payload).unwrap_or(0),
            _ => {}
        }
    }
    (comment, flags, handle)
}

/// A chain of a GETCHAIN answer, if it belongs to table `table`.
fn parse_chain(m: &nl::Msg<'_>, table: &str) -> Option<KChain> {
    if m.ty != nl::nft_type(NFT_MSG_NEWCHAIN) {
        return None;
    }
    let mut t = None;
    let mut c = KChain {
        name: String::new(),
        hook: None,
        flags: 0,
        userdata: None,
    };
    let (mut hook, mut policy, mut chain_type) = (None, None, String::new());
    for a in nl::msg_attrs(m) {
        match a.ty {
            NFTA_CHAIN_TABLE => t = Some(nl::attr_str(a.payload)),
            NFTA_CHAIN_NAME => c.name = nl::attr_str(a.payload),
            NFTA_CHAIN_FLAGS => c.flags = be32(a.payload).unwrap_or(0),
            NFTA_CHAIN_USERDATA => c.userdata = Some(a.payload.to_vec()),
            NFTA_CHAIN_POLICY => policy = be32(a.payload),
            NFTA_CHAIN_TYPE => chain_type = nl::attr_str(a.payload),
            NFTA_CHAIN_HOOK => {
                let (mut num, mut prio, mut devices) = (None, 0i32, false);
                for h in nl::attrs(a.payload, 0) {
                    match h.ty {
                        NFTA_HOOK_HOOKNUM => num = be32(h.payload),
                        NFTA_HOOK_PRIORITY => prio = be32(h.payload).unwrap_or(0) as i32,
                        NFTA_HOOK_DEV | NFTA_HOOK_DEVS => devices = true,
                        _ => {}
                    }
                }
                hook = num.map(|n| (n, prio, devices));
            }
            _ => {}
        }
    }
    if t.as_deref() != Some(table) || c.name.is_empty() {
        return None;
    }
    c.hook = hook.map(|(num, priority, devices)| KHook {
        num,
        priority,
        chain_type,
        policy,
        devices,
    });
    Some(c)
}

/// A set of a GETSET answer, if it belongs to table `table`.
fn parse_set(m: &nl::Msg<'_>, table: &str) -> Option<KSet> {
    if m.ty != nl::nft_type(NFT_MSG_NEWSET) {
        return None;
    }
    let mut t = None;
    let mut s = KSet {
        name: String::new(),
        flags: 0,
        key_type: 0,
        key_len: 0,
        data_type: None,
        userdata: None,
    };
    for a in nl::msg_attrs(m) {
        match a.ty {
            nl::NFTA_SET_TABLE => t = Some(nl::attr_str(a.payload)),
            nl::NFTA_SET_NAME => s.name = nl::attr_str(a.payload),
            nl::NFTA_SET_FLAGS => s.flags = be32(a.payload).unwrap_or(0),
            nl::NFTA_SET_KEY_TYPE => s.key_type = be32(a.payload).unwrap_or(0),
            nl::NFTA_SET_KEY_LEN => s.key_len = be32(a.payload).unwrap_or(0),
            nl::NFTA_SET_DATA_TYPE => s.data_type = be32(a.payload),
            nl::NFTA_SET_USERDATA => s.userdata = Some(a.payload.to_vec()),
            _ => {}
        }
    }
    (t.as_deref() == Some(table) && !s.name.is_empty()).then_some(s)
}

/// Appends the elements of a GETSETELEM answer for set `set` of table `table` to `out`.
fn parse_elements(m: &nl::Msg<'_>, table: &str, set: &str, out: &mut Vec<KElem>) {
    if m.ty != nl::nft_type(NFT_MSG_NEWSETELEM) {
        return;
    }
    let (mut t, mut s, mut list) = (None, None, None);
    for a in nl::msg_attrs(m) {
        match a.ty {
            nl::NFTA_SET_ELEM_LIST_TABLE => t = Some(nl::attr_str(a.payload)),
            nl::NFTA_SET_ELEM_LIST_SET => s = Some(nl::attr_str(a.payload)),
            nl::NFTA_SET_ELEM_LIST_ELEMENTS => list = Some(a.payload),
            _ => {}
        }
    }
    if t.as_deref() != Some(table) || s.as_deref() != Some(set) {
        return;
    }
    for e in nl::attrs(list.unwrap_or_default(), 0) {
        if e.ty != nl::NFTA_LIST_ELEM {
            continue;
        }
        let mut k = KElem {
            key: Vec::new(),
            flags: 0,
            userdata: None,
            other: false,
        };
        for a in nl::attrs(e.payload, 0) {
            match a.ty {
                nl::NFTA_SET_ELEM_KEY => {
                    if let Some(v) = nl::attrs(a.payload, 0).find(|v| v.ty == nl::NFTA_DATA_VALUE) {
                        k.key = v.payload.to_vec();
                    }
                }
                nl::NFTA_SET_ELEM_FLAGS => k.flags = be32(a.payload).unwrap_or(0),
                nl::NFTA_SET_ELEM_USERDATA => k.userdata = Some(a.payload.to_vec()),
                _ => k.other = true,
            }
        }
        out.push(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{Writer, NFT_CHAIN_BASE};

    fn msg(ty: u16, f: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = Writer { buf: &mut buf };
        let m = w.begin_msg(nl::nft_type(ty), 0, 1, nl::NFPROTO_INET, 0);
        f(&mut w);
        w.end_msg(m);
        buf
    }

    #[test]
    fn parses_chains() {
        let base = msg(NFT_MSG_NEWCHAIN, |w| {
            w.strz(NFTA_CHAIN_TABLE, "hp");
            w.strz(NFTA_CHAIN_NAME, "filter-input");
            let h = w.begin_nest(NFTA_CHAIN_HOOK);
            w.u32_be(NFTA_HOOK_HOOKNUM, 1);
            w.u32_be(NFTA_HOOK_PRIORITY, (-150i32) as u32);
            w.end_nest(h);
            w.u32_be(NFTA_CHAIN_POLICY, 1);
            w.strz(NFTA_CHAIN_TYPE, "filter");
            w.u32_be(NFTA_CHAIN_FLAGS, NFT_CHAIN_BASE);
        });
        let c = parse_chain(&wire_msg(&base), "hp").unwrap();
        assert_eq!(c.name, "filter-input");
        assert_eq!(
            c.hook,
            Some(KHook {
                num: 1,
                priority: -150,
                chain_type: "filter".into(),
                policy: Some(1),
                devices: false
            })
        );
        assert_eq!(c.flags, NFT_CHAIN_BASE);
        assert_eq!(parse_chain(&wire_msg(&base), "other"), None);

        let regular = msg(NFT_MSG_NEWCHAIN, |w| {
            w.strz(NFTA_CHAIN_TABLE, "hp");
            w.strz(NFTA_CHAIN_NAME, "hostpolicyd-hash");
            w.attr(
                NFTA_CHAIN_USERDATA,
                &nl::udata_comment("hostpolicyd sha256:ab"),
            );
        });
        let c = parse_chain(&wire_msg(&regular), "hp").unwrap();
        assert_eq!(c.hook, None);
        assert_eq!(
            udata_comment(c.userdata.as_deref().unwrap()).as_deref(),
            Some("hostpolicyd sha256:ab")
        );
    }

    #[test]
    fn parses_sets_and_elements() {
        let set = msg(NFT_MSG_NEWSET, |w| {
            w.strz(nl::NFTA_SET_TABLE, "hp");
            w.strz(nl::NFTA_SET_NAME, "a4");
            w.u32_be(nl::NFTA_SET_FLAGS, nl::NFT_SET_INTERVAL);
            w.u32_be(nl::NFTA_SET_KEY_TYPE, 7);
            w.u32_be(nl::NFTA_SET_KEY_LEN, 4);
            w.attr(nl::NFTA_SET_USERDATA, b"\x00\x04\x02\x00\x00\x00");
        });
        let s = parse_set(&wire_msg(&set), "hp").unwrap();
        assert_eq!(
            s,
            KSet {
                name: "a4".into(),
                flags: nl::NFT_SET_INTERVAL,
                key_type: 7,
                key_len: 4,
                data_type: None,
                userdata: Some(b"\x00\x04\x02\x00\x00\x00".to_vec()),
            }
        );
        let elems = msg(NFT_MSG_NEWSETELEM, |w| {
            w.strz(nl::NFTA_SET_ELEM_LIST_TABLE, "hp");
            w.strz(nl::NFTA_SET_ELEM_LIST_SET, "a4");
            let l = w.begin_nest(nl::NFTA_SET_ELEM_LIST_ELEMENTS);
            let e = w.begin_nest(nl::NFTA_LIST_ELEM);
            w.data_value(nl::NFTA_SET_ELEM_KEY, &[11, 0, 0, 0]);
            w.u32_be(nl::NFTA_SET_ELEM_FLAGS, nl::NFT_SET_ELEM_INTERVAL_END);
            w.end_nest(e);
            let e = w.begin_nest(nl::NFTA_LIST_ELEM);
            w.data_value(nl::NFTA_SET_ELEM_KEY, &[128, 0, 0, 0]);
            w.attr(nl::NFTA_SET_ELEM_USERDATA, b"\x01\x04\x01\x00\x00\x00");
            w.end_nest(e);
            w.end_nest(l);
        });
        let mut out = Vec::new();
        parse_elements(&wire_msg(&elems), "hp", "a4", &mut out);
        parse_elements(&wire_msg(&elems), "hp", "other", &mut out);
        assert_eq!(
            out,
            vec![
                KElem {
                    key: vec![11, 0, 0, 0],
                    flags: nl::NFT_SET_ELEM_INTERVAL_END,
                    userdata: None,
                    other: false
                },
                KElem {
                    key: vec![128, 0, 0, 0],
                    flags: 0,
                    userdata: Some(b"\x01\x04\x01\x00\x00\x00".to_vec()),
                    other: false
                },
            ]
        );
    }

    #[test]
    fn parses_the_table() {
        let t = msg(nl::NFT_MSG_NEWTABLE, |w| {
            w.strz(nl::NFTA_TABLE_NAME, "hp");
            w.u32_be(NFTA_TABLE_FLAGS, 0);
            w.attr(nl::NFTA_TABLE_USERDATA, &nl::udata_comment("hostpolicyd"));
        });
        assert_eq!(
            parse_table(&wire_msg(&t)),
            (Some("hostpolicyd".into()), 0, 0)
        );
    }
}
