//! What the kernel holds in our table, read back for the staged swap (`staged.rs`): the table itself
//! (its comment and flags), its chains (name, hook, priority, type, policy, flags, comment) and its named
//! sets and maps (name, flags, key, data type, userdata), each list in the kernel's order, which is the
//! order `nft list` shows; and, on request, the elements of one set.
//!
//! Netlink dumps of family inet (`NFT_MSG_GETCHAIN`, `NFT_MSG_GETSET`, `NFT_MSG_GETSETELEM`) on our own
//! socket, filtered by table name here (rustables cannot tell an `inet` table from an `ip` one). A dump
//! the kernel marks as interrupted (`NLM_F_DUMP_INTR`: the ruleset changed while it was read) is read
//! again. Parsing is separate from the socket so that it can be tested on hand-made messages.

use std::io;
use std::time::Duration;

use super::netlink::udata_comment_of as udata_comment;
use super::sock::NlSocket;
use super::wire::{self, Writer};
use super::DataplaneError;

const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;

const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_CHAIN_FLAGS: u16 = 10;
const NFTA_CHAIN_USERDATA: u16 = 12;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_HOOK_DEV: u16 = 3;
const NFTA_HOOK_DEVS: u16 = 4;

/// `NFT_SET_ANONYMOUS`: a set bound to one rule (`{ 80, 443 }` written inline); not ours to manage.
pub(crate) const NFT_SET_ANONYMOUS: u32 = 0x1;
/// `NFT_CHAIN_BASE`, reported in a base chain's flags.
pub(crate) const NFT_CHAIN_BASE: u32 = 0x1;

const SEQ: u32 = 1;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a dump that the kernel marks as interrupted is read again.
const DUMP_TRIES: usize = 5;

/// Table inet NAME as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inventory {
    /// The table's comment (userdata comment TLV), if it has one.
    pub(crate) comment: Option<String>,
    /// `NFTA_TABLE_FLAGS` (dormant, owner, ...).
    pub(crate) flags: u32,
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

fn io_err(what: &str, e: io::Error) -> DataplaneError {
    DataplaneError {
        message: format!("{what}: {e}"),
        errno: e.raw_os_error(),
    }
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Table inet `table`: None when it does not exist.
pub(crate) fn read(table: &str) -> Result<Option<Inventory>, DataplaneError> {
    for _ in 0..DUMP_TRIES {
        let Some((comment, flags)) = read_table(table)? else {
            return Ok(None);
        };
        let (chains, intr_c) = dump(
            NFT_MSG_GETCHAIN,
            &format!("the chains of table inet {table}"),
            |w| w.strz(NFTA_CHAIN_TABLE, table),
        )?;
        let (sets, intr_s) = dump(
            NFT_MSG_GETSET,
            &format!("the sets of table inet {table}"),
            |w| w.strz(wire::NFTA_SET_TABLE, table),
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
            chains,
            sets,
        }));
    }
    Err(DataplaneError::os(
        format!("reading table inet {table}: the ruleset kept changing while it was read"),
        libc::EINTR,
    ))
}

/// The elements of set `set` of table inet `table`.
pub(crate) fn elements(table: &str, set: &str) -> Result<Vec<KElem>, DataplaneError> {
    for _ in 0..DUMP_TRIES {
        let what = format!("the elements of set {set} of table inet {table}");
        let (msgs, intr) = dump(NFT_MSG_GETSETELEM, &what, |w| {
            w.strz(wire::NFTA_SET_ELEM_LIST_TABLE, table);
            w.strz(wire::NFTA_SET_ELEM_LIST_SET, set);
        })?;
        if intr {
            continue;
        }
        let mut out = Vec::new();
        for m in &msgs {
            parse_elements(&wire_msg(m), table, set, &mut out);
        }
        return Ok(out);
    }
    Err(DataplaneError::os(
        format!(
            "reading set {set} of table inet {table}: the ruleset kept changing while it was read"
        ),
        libc::EINTR,
    ))
}

/// (comment, flags) of table inet `table`, None when it does not exist.
fn read_table(table: &str) -> Result<Option<(Option<String>, u32)>, DataplaneError> {
    let what = format!("table inet {table}");
    let sock = NlSocket::open().map_err(|e| io_err("opening the netfilter netlink socket", e))?;
    let mut req = Vec::with_capacity(64);
    let mut w = Writer { buf: &mut req };
    let m = w.begin_msg(
        wire::nft_type(wire::NFT_MSG_GETTABLE),
        wire::NLM_F_ACK,
        SEQ,
        wire::NFPROTO_INET,
        0,
    );
    w.strz(wire::NFTA_TABLE_NAME, table);
    w.end_msg(m);
    sock.send(&req)
        .map_err(|e| io_err(&format!("querying {what}"), e))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut found: Option<(Option<String>, u32)> = None;
    loop {
        let n = match sock.recv(&mut buf, Some(ANSWER_TIMEOUT)) {
            Ok(Some(n)) => n,
            Ok(None) => {
                return Err(DataplaneError::os(
                    format!("no answer from the kernel about {what}"),
                    libc::ETIMEDOUT,
                ))
            }
            Err(e) => return Err(io_err(&format!("querying {what}"), e)),
        };
        for m in wire::messages(&buf[..n]) {
            if m.seq != SEQ {
                continue;
            }
            if m.ty == wire::nft_type(wire::NFT_MSG_NEWTABLE) {
                found = Some(parse_table(&m));
            } else if m.ty == wire::NLMSG_ERROR {
                let errno = error_of(&m);
                return match errno {
                    0 => Ok(found),
                    libc::ENOENT => Ok(None),
                    e => Err(DataplaneError::os(
                        format!("querying {what}: {}", io::Error::from_raw_os_error(e)),
                        e,
                    )),
                };
            }
        }
    }
}

/// The (positive) errno of an NLMSG_ERROR message; 0 for an ACK.
fn error_of(m: &wire::Msg<'_>) -> i32 {
    m.bytes
        .get(16..20)
        .map(|b| -i32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .unwrap_or(libc::EPROTO)
}

/// An owned message, parsed again when needed.
fn wire_msg(bytes: &[u8]) -> wire::Msg<'_> {
    wire::messages(bytes)
        .next()
        .expect("dump() keeps whole messages")
}

/// One dump request (family inet) with the attributes `attrs` writes; returns the answer messages (owned)
/// and whether the kernel marked the dump as interrupted.
fn dump(
    msg: u16,
    what: &str,
    attrs: impl FnOnce(&mut Writer<'_>),
) -> Result<(Vec<Vec<u8>>, bool), DataplaneError> {
    let sock = NlSocket::open().map_err(|e| io_err("opening the netfilter netlink socket", e))?;
    let mut req = Vec::with_capacity(128);
    let mut w = Writer { buf: &mut req };
    let m = w.begin_msg(wire::nft_type(msg), NLM_F_DUMP, SEQ, wire::NFPROTO_INET, 0);
    attrs(&mut w);
    w.end_msg(m);
    sock.send(&req)
        .map_err(|e| io_err(&format!("asking for {what}"), e))?;
    let mut out = Vec::new();
    let mut intr = false;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match sock.recv(&mut buf, Some(ANSWER_TIMEOUT)) {
            Ok(Some(n)) => n,
            Ok(None) => {
                return Err(DataplaneError::os(
                    format!("reading {what}: no answer from the kernel"),
                    libc::ETIMEDOUT,
                ))
            }
            Err(e) => return Err(io_err(&format!("reading {what}"), e)),
        };
        for m in wire::messages(&buf[..n]) {
            if m.seq != SEQ {
                continue;
            }
            intr |= m.flags & NLM_F_DUMP_INTR != 0;
            match m.ty {
                wire::NLMSG_DONE => return Ok((out, intr)),
                wire::NLMSG_ERROR => {
                    let errno = error_of(&m);
                    if errno == 0 {
                        return Ok((out, intr));
                    }
                    if errno == libc::ENOENT {
                        // the table or set went away: nothing to list
                        return Ok((Vec::new(), intr));
                    }
                    return Err(DataplaneError::os(
                        format!("reading {what}: {}", io::Error::from_raw_os_error(errno)),
                        errno,
                    ));
                }
                _ => out.push(m.bytes.to_vec()),
            }
        }
    }
}

fn parse_table(m: &wire::Msg<'_>) -> (Option<String>, u32) {
    let (mut comment, mut flags) = (None, 0);
    for a in wire::msg_attrs(m) {
        match a.ty {
            wire::NFTA_TABLE_USERDATA => comment = udata_comment(a.payload),
            NFTA_TABLE_FLAGS => flags = be32(a.payload).unwrap_or(0),
            _ => {}
        }
    }
    (comment, flags)
}

/// A chain of a GETCHAIN answer, if it belongs to table `table`.
fn parse_chain(m: &wire::Msg<'_>, table: &str) -> Option<KChain> {
    if m.ty != wire::nft_type(NFT_MSG_NEWCHAIN) {
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
    for a in wire::msg_attrs(m) {
        match a.ty {
            NFTA_CHAIN_TABLE => t = Some(wire::attr_str(a.payload)),
            NFTA_CHAIN_NAME => c.name = wire::attr_str(a.payload),
            NFTA_CHAIN_FLAGS => c.flags = be32(a.payload).unwrap_or(0),
            NFTA_CHAIN_USERDATA => c.userdata = Some(a.payload.to_vec()),
            NFTA_CHAIN_POLICY => policy = be32(a.payload),
            NFTA_CHAIN_TYPE => chain_type = wire::attr_str(a.payload),
            NFTA_CHAIN_HOOK => {
                let (mut num, mut prio, mut devices) = (None, 0i32, false);
                for h in wire::attrs(a.payload, 0) {
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
fn parse_set(m: &wire::Msg<'_>, table: &str) -> Option<KSet> {
    if m.ty != wire::nft_type(NFT_MSG_NEWSET) {
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
    for a in wire::msg_attrs(m) {
        match a.ty {
            wire::NFTA_SET_TABLE => t = Some(wire::attr_str(a.payload)),
            wire::NFTA_SET_NAME => s.name = wire::attr_str(a.payload),
            wire::NFTA_SET_FLAGS => s.flags = be32(a.payload).unwrap_or(0),
            wire::NFTA_SET_KEY_TYPE => s.key_type = be32(a.payload).unwrap_or(0),
            wire::NFTA_SET_KEY_LEN => s.key_len = be32(a.payload).unwrap_or(0),
            wire::NFTA_SET_DATA_TYPE => s.data_type = be32(a.payload),
            wire::NFTA_SET_USERDATA => s.userdata = Some(a.payload.to_vec()),
            _ => {}
        }
    }
    (t.as_deref() == Some(table) && !s.name.is_empty()).then_some(s)
}

/// Appends the elements of a GETSETELEM answer for set `set` of table `table` to `out`.
fn parse_elements(m: &wire::Msg<'_>, table: &str, set: &str, out: &mut Vec<KElem>) {
    if m.ty != wire::nft_type(NFT_MSG_NEWSETELEM) {
        return;
    }
    let (mut t, mut s, mut list) = (None, None, None);
    for a in wire::msg_attrs(m) {
        match a.ty {
            wire::NFTA_SET_ELEM_LIST_TABLE => t = Some(wire::attr_str(a.payload)),
            wire::NFTA_SET_ELEM_LIST_SET => s = Some(wire::attr_str(a.payload)),
            wire::NFTA_SET_ELEM_LIST_ELEMENTS => list = Some(a.payload),
            _ => {}
        }
    }
    if t.as_deref() != Some(table) || s.as_deref() != Some(set) {
        return;
    }
    for e in wire::attrs(list.unwrap_or_default(), 0) {
        if e.ty != wire::NFTA_LIST_ELEM {
            continue;
        }
        let mut k = KElem {
            key: Vec::new(),
            flags: 0,
            userdata: None,
            other: false,
        };
        for a in wire::attrs(e.payload, 0) {
            match a.ty {
                wire::NFTA_SET_ELEM_KEY => {
                    if let Some(v) =
                        wire::attrs(a.payload, 0).find(|v| v.ty == wire::NFTA_DATA_VALUE)
                    {
                        k.key = v.payload.to_vec();
                    }
                }
                wire::NFTA_SET_ELEM_FLAGS => k.flags = be32(a.payload).unwrap_or(0),
                wire::NFTA_SET_ELEM_USERDATA => k.userdata = Some(a.payload.to_vec()),
                _ => k.other = true,
            }
        }
        out.push(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, f: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = Writer { buf: &mut buf };
        let m = w.begin_msg(wire::nft_type(ty), 0, SEQ, wire::NFPROTO_INET, 0);
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
                &wire::udata_comment("hostpolicyd sha256:ab"),
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
            w.strz(wire::NFTA_SET_TABLE, "hp");
            w.strz(wire::NFTA_SET_NAME, "a4");
            w.u32_be(wire::NFTA_SET_FLAGS, wire::NFT_SET_INTERVAL);
            w.u32_be(wire::NFTA_SET_KEY_TYPE, 7);
            w.u32_be(wire::NFTA_SET_KEY_LEN, 4);
            w.attr(wire::NFTA_SET_USERDATA, b"\x00\x04\x02\x00\x00\x00");
        });
        let s = parse_set(&wire_msg(&set), "hp").unwrap();
        assert_eq!(
            s,
            KSet {
                name: "a4".into(),
                flags: wire::NFT_SET_INTERVAL,
                key_type: 7,
                key_len: 4,
                data_type: None,
                userdata: Some(b"\x00\x04\x02\x00\x00\x00".to_vec()),
            }
        );
        let elems = msg(NFT_MSG_NEWSETELEM, |w| {
            w.strz(wire::NFTA_SET_ELEM_LIST_TABLE, "hp");
            w.strz(wire::NFTA_SET_ELEM_LIST_SET, "a4");
            let l = w.begin_nest(wire::NFTA_SET_ELEM_LIST_ELEMENTS);
            let e = w.begin_nest(wire::NFTA_LIST_ELEM);
            w.data_value(wire::NFTA_SET_ELEM_KEY, &[11, 0, 0, 0]);
            w.u32_be(wire::NFTA_SET_ELEM_FLAGS, wire::NFT_SET_ELEM_INTERVAL_END);
            w.end_nest(e);
            let e = w.begin_nest(wire::NFTA_LIST_ELEM);
            w.data_value(wire::NFTA_SET_ELEM_KEY, &[128, 0, 0, 0]);
            w.attr(wire::NFTA_SET_ELEM_USERDATA, b"\x01\x04\x01\x00\x00\x00");
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
                    flags: wire::NFT_SET_ELEM_INTERVAL_END,
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
        let t = msg(wire::NFT_MSG_NEWTABLE, |w| {
            w.strz(wire::NFTA_TABLE_NAME, "hp");
            w.u32_be(NFTA_TABLE_FLAGS, 0);
            w.attr(
                wire::NFTA_TABLE_USERDATA,
                &wire::udata_comment("hostpolicyd"),
            );
        });
        assert_eq!(parse_table(&wire_msg(&t)), (Some("hostpolicyd".into()), 0));
    }
}
