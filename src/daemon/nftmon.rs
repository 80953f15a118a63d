//! Reading nf_tables back from the kernel for drift detection, on netfilter netlink sockets of our own
//! (`src/nft` is the writer and stays the only one):
//!
//! - [`Monitor`]: a subscription to `NFNLGRP_NFTABLES`, the multicast group `nft monitor` listens to.
//!   Every committed transaction arrives as one message per object it created or deleted (table, chain,
//!   rule, set, element, object...), then one `NEWGEN` naming the generation and the process.
//! - [`fingerprint`]: one consistent look at a table (its chains, rules, sets and set elements, all read
//!   in the same generation), digested per object, so that two looks can be compared and the difference
//!   named.
//!
//! **Own writes.** The kernel stamps every notification with the netlink port id of the socket that sent
//! the transaction (`nlmsg_pid`). `src/nft` opens an autobound socket per call, and the kernel autobinds
//! a process's netfilter socket to the process id when that port id is free. The sockets opened here are
//! therefore bound to port ids above the pid range ([`PRIVATE_PORTS`]), which keeps the pid free: a
//! notification with `nlmsg_pid == getpid()` comes from our own writer. Callers must not trust this
//! alone (another socket of ours could hold the pid for a moment and the writer would get a random port
//! id): a change attributed to someone else is still compared with the kernel before anything is done.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::time::Duration;

use crate::netlink::{
    self as nl, attr_str, be32, group_mask, messages, Conn, Delivery, Msg, Port, Protocol,
    Subscription,
};
use crate::netlink::{
    NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFTA_CHAIN_COUNTERS, NFTA_CHAIN_HANDLE, NFTA_CHAIN_ID,
    NFTA_CHAIN_NAME, NFTA_CHAIN_PAD, NFTA_CHAIN_USE, NFTA_EXPR_NAME, NFTA_GEN_PROC_NAME,
    NFTA_GEN_PROC_PID, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_HANDLE, NFTA_RULE_PAD,
    NFTA_RULE_POSITION, NFTA_SET_COUNT, NFTA_SET_ELEM_EXPIRATION, NFTA_SET_ELEM_EXPR,
    NFTA_SET_ELEM_EXPRESSIONS, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_FLAGS,
    NFTA_SET_HANDLE, NFTA_SET_ID, NFTA_SET_NAME, NFTA_SET_PAD, NFT_MSG_DELCHAIN,
    NFT_MSG_DELFLOWTABLE, NFT_MSG_DELOBJ, NFT_MSG_DELRULE, NFT_MSG_DELSET, NFT_MSG_DELSETELEM,
    NFT_MSG_DELTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM,
    NFT_MSG_GETTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWFLOWTABLE, NFT_MSG_NEWGEN, NFT_MSG_NEWOBJ,
    NFT_MSG_NEWRULE, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM, NFT_MSG_NEWTABLE, NFT_SET_ANONYMOUS,
    NLM_F_ACK, NLM_F_DUMP,
};

/// The nf_tables multicast group (`linux/netfilter/nfnetlink.h`: NFNLGRP_NFTABLES).
pub use crate::netlink::NFNLGRP_NFTABLES;
/// Port ids used by our sockets (see [`crate::netlink::Port::Private`]).
pub use crate::netlink::PRIVATE_PORTS;

/// In every object message the table's name is attribute 1 (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE,
/// NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE).
const ATTR_TABLE: u16 = 1;

/// Expressions whose dump carries state that changes with traffic or time (packet counts, consumed
/// quota, last-seen time): only their name counts in a digest.
const STATEFUL_EXPRS: [&str; 3] = ["counter", "quota", "last"];

/// A table read in more than one generation (someone wrote while we read) is read again, this often.
const CONSISTENT_TRIES: usize = 5;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Table,
    Chain,
    Rule,
    Set,
    Element,
    Object,
    Flowtable,
}

/// One notification, reduced to what drift detection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// An object of table `table` (family `family`) was created (or changed) or deleted, by the socket
    /// with port id `port`.
    Object {
        what: What,
        deleted: bool,
        family: u8,
        table: String,
        port: u32,
    },
    /// The end of a transaction committed through port `port` by process `pid` (`comm`).
    Gen { port: u32, pid: u32, comm: String },
}

pub const FAMILY_INET: u8 = NFPROTO_INET;

/// Decodes the nf_tables notifications of one datagram (other messages are skipped).
pub fn parse_notes(buf: &[u8]) -> Vec<Note> {
    let mut notes = Vec::new();
    for m in messages(buf) {
        if m.subsys() != NFNL_SUBSYS_NFTABLES {
            continue;
        }
        let (what, deleted) = match m.ty & 0xff {
            NFT_MSG_NEWGEN => {
                let mut pid = 0;
                let mut comm = String::new();
                for a in m.attrs() {
                    match a.ty {
                        NFTA_GEN_PROC_PID => pid = be32(a.payload).unwrap_or(0),
                        NFTA_GEN_PROC_NAME => comm = attr_str(a.payload),
                        _ => {}
                    }
                }
                notes.push(Note::Gen {
                    port: m.port,
                    pid,
                    comm,
                });
                continue;
            }
            NFT_MSG_NEWTABLE => (What::Table, false),
            NFT_MSG_DELTABLE => (What::Table, true),
            NFT_MSG_NEWCHAIN => (What::Chain, false),
            NFT_MSG_DELCHAIN => (What::Chain, true),
            NFT_MSG_NEWRULE => (What::Rule, false),
            NFT_MSG_DELRULE => (What::Rule, true),
            NFT_MSG_NEWSET => (What::Set, false),
            NFT_MSG_DELSET => (What::Set, true),
            NFT_MSG_NEWSETELEM => (What::Element, false),
            NFT_MSG_DELSETELEM => (What::Element, true),
            NFT_MSG_NEWOBJ => (What::Object, false),
            NFT_MSG_DELOBJ => (What::Object, true),
            NFT_MSG_NEWFLOWTABLE => (What::Flowtable, false),
            NFT_MSG_DELFLOWTABLE => (What::Flowtable, true),
            _ => continue,
        };
        let table = m.attr_str(ATTR_TABLE).unwrap_or_default();
        notes.push(Note::Object {
            what,
            deleted,
            family: m.family(),
            table,
            port: m.port,
        });
    }
    notes
}

/// What one wait on the [`Monitor`] gave.
#[derive(Debug)]
pub enum Received {
    Notes(Vec<Note>),
    /// The kernel dropped notifications (the receive buffer overflowed): something changed, unknown what.
    Lost,
    /// Nothing within the timeout.
    Nothing,
}

/// A subscription to nf_tables changes in this thread's network namespace.
pub struct Monitor {
    sub: Subscription,
}

impl Monitor {
    pub fn subscribe() -> io::Result<Monitor> {
        // Our own applies send one notification per object: make room for big ones. Overflow is not
        // fatal (it is reported as `Lost` and the table is compared), only slower.
        let sub = Subscription::open(
            Protocol::Netfilter,
            Port::Private,
            group_mask(NFNLGRP_NFTABLES),
            8 << 20,
        )?;
        Ok(Monitor { sub })
    }

    /// Waits up to `timeout` (None: until something arrives) for one datagram of notifications.
    pub fn recv(&mut self, timeout: Option<Duration>) -> io::Result<Received> {
        Ok(match self.sub.recv(timeout)? {
            Delivery::Data(buf) => Received::Notes(parse_notes(buf)),
            Delivery::Lost => Received::Lost,
            Delivery::Nothing => Received::Nothing,
        })
    }
}

/// The process's own port id: the one `src/nft`'s autobound sockets get (see the module documentation).
pub fn own_port() -> u32 {
    std::process::id()
}

// ---------------------------------------------------------------------------------------------------
// Fingerprints

/// A chain as the kernel holds it: a digest of its definition (hook, priority, policy, type, flags,
/// comment) and one digest per rule (expressions without their counters, comment), in order. Handles
/// are left out: content is what counts, so a table re-created with the same content by someone else
/// (another `hostpolicyd apply` of the same files) is not drift, while a rule replaced in place is.
#[derive(Debug, Clone, Default, Eq)]
pub struct ChainPrint {
    pub def: u64,
    pub rules: Vec<u64>,
    /// The kernel handle of each rule, in the same order (not compared: see above). What the
    /// dataplane needs to edit the chain rule by rule ([`crate::nft::Dataplane::learn_handles`]).
    pub handles: Vec<u64>,
}

/// A set (or map) as the kernel holds it: a digest of its definition, its element count (an interval
/// is two kernel elements) and an order-independent digest of the elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetPrint {
    pub anonymous: bool,
    pub def: u64,
    pub elements: usize,
    pub content: u64,
}

/// One consistent look at a table.
#[derive(Debug, Clone, Default, Eq)]
pub struct TablePrint {
    /// The table's kernel handle (a table made again has another; rule handles belong to it).
    pub table: u64,
    pub chains: BTreeMap<String, ChainPrint>,
    pub sets: BTreeMap<String, SetPrint>,
}

/// Content only: handles are where the kernel keeps it, not what it holds.
impl PartialEq for ChainPrint {
    fn eq(&self, other: &ChainPrint) -> bool {
        self.def == other.def && self.rules == other.rules
    }
}

/// Content only (see [`ChainPrint`]'s).
impl PartialEq for TablePrint {
    fn eq(&self, other: &TablePrint) -> bool {
        self.chains == other.chains && self.sets == other.sets
    }
}

/// Reads table `inet TABLE`: None when it does not exist. All parts are read in one generation (the
/// kernel's ruleset generation is in every answer); a table that keeps changing while it is read is
/// an error after a few tries.
pub fn fingerprint(table: &str) -> io::Result<Option<TablePrint>> {
    fingerprint_reusing(table, &BTreeMap::new())
}

/// [`fingerprint`], taking the elements of the sets in `known` from there instead of the kernel when
/// the kernel's set has the same definition: the caller knows they did not change (after our own
/// write, the sets whose contents the write left as they were). Reading a big set back is quadratic in
/// the kernel: 0.2–1.4 s for 100,000 elements, after every reload of a configuration that has one.
pub fn fingerprint_reusing(
    table: &str,
    known: &BTreeMap<String, SetPrint>,
) -> io::Result<Option<TablePrint>> {
    fingerprint_known(
        table,
        &Known {
            sets: known.clone(),
            chains: BTreeMap::new(),
        },
    )
}

/// What the caller knows the kernel holds (after our own write: what the write left as it was), and
/// need not be read back: see [`fingerprint_known`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Sets whose elements are known (see [`fingerprint_reusing`]).
    pub sets: BTreeMap<String, SetPrint>,
    /// Chains whose rules are known: taken as they are when the kernel's chain has the same
    /// definition digest.
    pub chains: BTreeMap<String, ChainPrint>,
}

/// At most this many chains are read one by one (one rule dump each); more, and the rules of the whole
/// table are dumped at once.
pub const CHAINS_READ_ALONE: usize = 64;

/// [`fingerprint`], taking what `known` says instead of reading it: the elements of its sets (see
/// [`fingerprint_reusing`]), and the rules of its chains, when the kernel's chain has the same
/// definition. The chains (names and definitions) and the sets are always read; the rules only of the
/// other chains, each with a dump of its own when they are few ([`CHAINS_READ_ALONE`]; nf_tables
/// dumps one chain's rules when the request names table and chain). After a reload that refilled one
/// chain of 10,000, this reads two chains' rules (that one and the content hash's) instead of 30,000
/// rules: ~250 ms of the daemon's CPU per reload at 10,000 policies.
pub fn fingerprint_known(table: &str, known: &Known) -> io::Result<Option<TablePrint>> {
    let mut req = Requester::open()?;
    for _ in 0..CONSISTENT_TRIES {
        if let Some(result) = req.read_table(table, known)? {
            return Ok(result);
        }
    }
    Err(io::Error::other(format!(
        "table inet {table} kept changing while it was read"
    )))
}

/// The rules (digests and handles) of the chains `chains` of table `inet TABLE`, and the table's handle:
/// what the daemon reads right after its own write, before the connectivity checks (the drift guard
/// learns rule handles only from such a read, see `drift::Guard::arm`). Chain definitions are not read
/// (`def` is 0). None when the table does not exist. Each chain is dumped alone, or the whole table's
/// rules at once when they are more than [`CHAINS_READ_ALONE`].
pub fn read_chains(table: &str, chains: &[String]) -> io::Result<Option<TablePrint>> {
    let mut req = Requester::open()?;
    let name = strz(table);
    let (a, handle) = req.table_handle(&name)?;
    if a.errno == libc::ENOENT {
        return Ok(None);
    }
    check(&a, "reading the table")?;
    let mut print = TablePrint {
        table: handle,
        ..TablePrint::default()
    };
    let each = |m: Msg<'_>, print: &mut TablePrint| {
        if m.ty & 0xff != NFT_MSG_NEWRULE || !is_of_table(&m, table) {
            return;
        }
        let chain = m.attr_str(NFTA_RULE_CHAIN).unwrap_or_default();
        let Some(c) = print.chains.get_mut(&chain) else {
            return;
        };
        c.handles.push(
            m.attrs()
                .find(|a| a.ty == NFTA_RULE_HANDLE)
                .and_then(|a| nl::be64(a.payload))
                .unwrap_or(0),
        );
        c.rules.push(rule_digest(&m));
    };
    for chain in chains {
        print.chains.insert(chain.clone(), ChainPrint::default());
    }
    if chains.len() > CHAINS_READ_ALONE {
        let a = req.request(NFT_MSG_GETRULE, true, &[(ATTR_TABLE, &name)], |m| {
            each(m, &mut print)
        })?;
        check(&a, "reading the rules")?;
    } else {
        for chain in chains {
            let chain_attr = strz(chain);
            let a = req.request(
                NFT_MSG_GETRULE,
                true,
                &[(ATTR_TABLE, &name), (NFTA_RULE_CHAIN, &chain_attr)],
                |m| each(m, &mut print),
            )?;
            if a.errno == libc::ENOENT {
                print.chains.remove(chain);
                continue;
            }
            check(&a, "reading the rules of a chain")?;
        }
    }
    Ok(Some(print))
}

struct Requester {
    conn: Conn,
}

/// The answer to one request: the kernel's error number (0: none), the generations its messages were
/// read in, and whether a dump was interrupted by a change.
struct Answer {
    errno: i32,
    gens: Vec<u16>,
    interrupted: bool,
}

impl Requester {
    fn open() -> io::Result<Requester> {
        Ok(Requester {
            conn: Conn::open(Protocol::Netfilter, Port::Private)?,
        })
    }

    /// GETTABLE of the table named `name` (NUL-terminated): the kernel's answer and the table's
    /// handle (0 when it sent none: the table does not exist, see the answer's errno).
    fn table_handle(&mut self, name: &[u8]) -> io::Result<(Answer, u64)> {
        let mut handle = 0;
        let a = self.request(NFT_MSG_GETTABLE, false, &[(ATTR_TABLE, name)], |m| {
            if m.ty & 0xff == NFT_MSG_NEWTABLE {
                handle = m
                    .attrs()
                    .find(|a| a.ty == nl::NFTA_TABLE_HANDLE)
                    .and_then(|a| nl::be64(a.payload))
                    .unwrap_or(0);
            }
        })?;
        Ok((a, handle))
    }

    /// One try. `Ok(None)`: the generation changed while reading (try again).
    fn read_table(&mut self, table: &str, known: &Known) -> io::Result<Option<Option<TablePrint>>> {
        let mut gens = Vec::new();
        let mut consistent = true;
        let mut track = |a: &Answer, gens: &mut Vec<u16>| {
            gens.extend(&a.gens);
            if a.interrupted {
                consistent = false;
            }
        };
        let name = strz(table);

        let (a, handle) = self.table_handle(&name)?;
        if a.errno == libc::ENOENT {
            return Ok(Some(None));
        }
        check(&a, "reading the table")?;
        track(&a, &mut gens);

        let mut print = TablePrint {
            table: handle,
            ..TablePrint::default()
        };
        let a = self.request(NFT_MSG_GETCHAIN, true, &[], |m| {
            if m.ty & 0xff != NFT_MSG_NEWCHAIN || !is_of_table(&m, table) {
                return;
            }
            let name = m.attr_str(NFTA_CHAIN_NAME).unwrap_or_default();
            let def = digest_attrs(&m, |ty| {
                !matches!(
                    ty,
                    ATTR_TABLE
                        | NFTA_CHAIN_HANDLE
                        | NFTA_CHAIN_USE
                        | NFTA_CHAIN_COUNTERS
                        | NFTA_CHAIN_PAD
                        | NFTA_CHAIN_ID
                )
            });
            print.chains.entry(name).or_default().def = def;
        })?;
        check(&a, "reading the chains")?;
        track(&a, &mut gens);

        // The chains whose rules are known (same definition as known), and the others.
        let mut unknown: Vec<String> = Vec::new();
        for (chain, c) in print.chains.iter_mut() {
            match known.chains.get(chain) {
                Some(k) if k.def == c.def => {
                    c.rules.clone_from(&k.rules);
                    c.handles.clone_from(&k.handles);
                }
                _ => unknown.push(chain.clone()),
            }
        }
        let mut rules: Vec<(String, u64, u64)> = Vec::new();
        let mut each = |m: Msg<'_>| {
            if m.ty & 0xff != NFT_MSG_NEWRULE || !is_of_table(&m, table) {
                return;
            }
            let chain = m.attr_str(NFTA_RULE_CHAIN).unwrap_or_default();
            let handle = m
                .attrs()
                .find(|a| a.ty == NFTA_RULE_HANDLE)
                .and_then(|a| nl::be64(a.payload))
                .unwrap_or(0);
            rules.push((chain, rule_digest(&m), handle));
        };
        if unknown.len() > CHAINS_READ_ALONE || known.chains.is_empty() {
            let a = self.request(NFT_MSG_GETRULE, true, &[(ATTR_TABLE, &name)], &mut each)?;
            check(&a, "reading the rules")?;
            track(&a, &mut gens);
            if !known.chains.is_empty() {
                // The known chains' rules are taken as they are.
                rules.retain(|(chain, _, _)| unknown.binary_search(chain).is_ok());
            }
        } else {
            for chain in &unknown {
                let chain_attr = strz(chain);
                let a = self.request(
                    NFT_MSG_GETRULE,
                    true,
                    &[(ATTR_TABLE, &name), (NFTA_RULE_CHAIN, &chain_attr)],
                    &mut each,
                )?;
                if a.errno == libc::ENOENT {
                    // The chain went away while we read: the generation moved.
                    return Ok(None);
                }
                check(&a, "reading the rules of a chain")?;
                track(&a, &mut gens);
            }
            // Only the chains asked for (a kernel that ignored the chain filter sent them all).
            rules.retain(|(chain, _, _)| unknown.binary_search(chain).is_ok());
        }
        for (chain, d, h) in rules {
            let c = print.chains.entry(chain).or_default();
            c.rules.push(d);
            c.handles.push(h);
        }

        let a = self.request(NFT_MSG_GETSET, true, &[(ATTR_TABLE, &name)], |m| {
            if m.ty & 0xff != NFT_MSG_NEWSET || !is_of_table(&m, table) {
                return;
            }
            let set = m.attr_str(NFTA_SET_NAME).unwrap_or_default();
            let flags = m
                .attrs()
                .find(|a| a.ty == NFTA_SET_FLAGS)
                .and_then(|a| be32(a.payload))
                .unwrap_or(0);
            let def = digest_attrs(&m, |ty| {
                !matches!(
                    ty,
                    ATTR_TABLE | NFTA_SET_ID | NFTA_SET_PAD | NFTA_SET_HANDLE | NFTA_SET_COUNT
                )
            });
            print.sets.insert(
                set,
                SetPrint {
                    anonymous: flags & NFT_SET_ANONYMOUS != 0,
                    def,
                    ..SetPrint::default()
                },
            );
        })?;
        check(&a, "reading the sets")?;
        track(&a, &mut gens);

        let mut names: Vec<String> = Vec::new();
        for (name, s) in print.sets.iter_mut() {
            match known.sets.get(name) {
                Some(k) if k.def == s.def && k.anonymous == s.anonymous => {
                    s.elements = k.elements;
                    s.content = k.content;
                }
                _ => names.push(name.clone()),
            }
        }
        for set in names {
            let mut count = 0usize;
            let mut content = 0u64;
            let mut seen = HashSet::new();
            let mut repeated = false;
            let set_attr = strz(&set);
            let a = self.request(
                NFT_MSG_GETSETELEM,
                true,
                &[(ATTR_TABLE, &name), (NFTA_SET_ELEM_LIST_SET, &set_attr)],
                |m| {
                    if m.ty & 0xff != NFT_MSG_NEWSETELEM {
                        return;
                    }
                    if m.attr_str(NFTA_SET_ELEM_LIST_SET).as_deref() != Some(set.as_str()) {
                        return;
                    }
                    for list in m.attrs().filter(|a| a.ty == NFTA_SET_ELEM_LIST_ELEMENTS) {
                        for elem in nl::attrs(list.payload, 0) {
                            let d = element_digest(elem.payload);
                            repeated |= !seen.insert(d);
                            count += 1;
                            content = content.wrapping_add(d);
                        }
                    }
                },
            )?;
            if a.errno == libc::ENOENT {
                // The set went away while we read: the generation moved.
                return Ok(None);
            }
            check(&a, "reading the elements of a set")?;
            track(&a, &mut gens);
            if repeated {
                // A hash set dumped while the kernel resized it: some elements twice, as many
                // missed (see `nft::elems::kernel_hosts`). Not a consistent look: read again.
                return Ok(None);
            }
            if let Some(s) = print.sets.get_mut(&set) {
                s.elements = count;
                s.content = content;
            }
        }
        gens.dedup();
        if !consistent || gens.windows(2).any(|w| w[0] != w[1]) {
            return Ok(None);
        }
        Ok(Some(Some(print)))
    }

    /// Sends one request (a dump when `dump`) and feeds every nf_tables message of the answer to `each`.
    fn request(
        &mut self,
        msg: u16,
        dump: bool,
        attrs: &[(u16, &[u8])],
        mut each: impl FnMut(Msg<'_>),
    ) -> io::Result<Answer> {
        let seq = self.conn.next_seq();
        let flags = if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let req = nl::request(nl::nft_type(msg), flags, seq, NFPROTO_INET, attrs);
        let mut gens = Vec::new();
        let a = self.conn.exchange(&req, seq, "table inet", |m| {
            if m.subsys() == NFNL_SUBSYS_NFTABLES {
                gens.push(m.res_id());
                each(m);
            }
        })?;
        Ok(Answer {
            errno: a.errno,
            gens,
            interrupted: a.interrupted,
        })
    }
}

fn check(a: &Answer, what: &str) -> io::Result<()> {
    if a.errno == 0 {
        Ok(())
    } else {
        let e = io::Error::from_raw_os_error(a.errno);
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

fn rule_digest(m: &Msg<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    for a in m.attrs() {
        match a.ty {
            ATTR_TABLE | NFTA_RULE_HANDLE | NFTA_RULE_POSITION | NFTA_RULE_PAD => {}
            NFTA_RULE_EXPRESSIONS => {
                a.ty.hash(&mut h);
                for e in nl::attrs(a.payload, 0) {
                    let name = nl::attrs(e.payload, 0)
                        .find(|x| x.ty == NFTA_EXPR_NAME)
                        .map(|x| attr_str(x.payload))
                        .unwrap_or_default();
                    if STATEFUL_EXPRS.contains(&name.as_str()) {
                        name.hash(&mut h);
                    } else {
                        e.payload.hash(&mut h);
                    }
                }
            }
            _ => {
                a.ty.hash(&mut h);
                a.payload.hash(&mut h);
            }
        }
    }
    h.finish()
}

fn element_digest(elem: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    for a in nl::attrs(elem, 0) {
        if !matches!(
            a.ty,
            NFTA_SET_ELEM_EXPIRATION | NFTA_SET_ELEM_EXPR | NFTA_SET_ELEM_EXPRESSIONS
        ) {
            a.ty.hash(&mut h);
            a.payload.hash(&mut h);
        }
    }
    h.finish()
}

fn digest_attrs(m: &Msg<'_>, keep: impl Fn(u16) -> bool) -> u64 {
    let mut h = DefaultHasher::new();
    for a in m.attrs().filter(|a| keep(a.ty)) {
        a.ty.hash(&mut h);
        a.payload.hash(&mut h);
    }
    h.finish()
}

/// A string attribute's value: the bytes and a NUL.
fn strz(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Whether `m` (a dump answer) belongs to table inet `table`.
fn is_of_table(m: &Msg<'_>, table: &str) -> bool {
    m.family() == NFPROTO_INET && m.attr_str(ATTR_TABLE).as_deref() == Some(table)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::netlink::{align4, NLA_HDRLEN, NLM_F_REQUEST};

    /// A notification as the kernel writes it: header, nfgenmsg, attributes.
    pub(crate) fn notification(msg: u16, port: u32, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = nl::request(nl::nft_type(msg), 0, 0, family, attrs);
        let flags = u16::from_ne_bytes([m[6], m[7]]) & !NLM_F_REQUEST;
        m[6..8].copy_from_slice(&flags.to_ne_bytes());
        m[12..16].copy_from_slice(&port.to_ne_bytes());
        m
    }

    #[test]
    fn notifications_are_decoded() {
        let mut buf = notification(
            NFT_MSG_DELTABLE,
            4242,
            NFPROTO_INET,
            &[(1, b"hostpolicy\0")],
        );
        buf.extend(notification(
            NFT_MSG_NEWRULE,
            4242,
            NFPROTO_INET,
            &[(1, b"hostpolicy\0"), (2, b"filter-input\0")],
        ));
        buf.extend(notification(NFT_MSG_NEWSETELEM, 7, 2, &[(1, b"other\0")]));
        buf.extend(notification(
            NFT_MSG_NEWGEN,
            4242,
            0,
            &[
                (1, &9u32.to_be_bytes()),
                (2, &4242u32.to_be_bytes()),
                (3, b"nft\0"),
            ],
        ));
        let notes = parse_notes(&buf);
        assert_eq!(
            notes,
            vec![
                Note::Object {
                    what: What::Table,
                    deleted: true,
                    family: NFPROTO_INET,
                    table: "hostpolicy".into(),
                    port: 4242
                },
                Note::Object {
                    what: What::Rule,
                    deleted: false,
                    family: NFPROTO_INET,
                    table: "hostpolicy".into(),
                    port: 4242
                },
                Note::Object {
                    what: What::Element,
                    deleted: false,
                    family: 2,
                    table: "other".into(),
                    port: 7
                },
                Note::Gen {
                    port: 4242,
                    pid: 4242,
                    comm: "nft".into()
                },
            ]
        );
    }

    #[test]
    fn rule_digests_ignore_counters_only() {
        let expr = |name: &str, data: &[u8]| {
            let mut e = Vec::new();
            let mut n = strz(name);
            n.resize(align4(n.len()), 0);
            e.extend_from_slice(&((NLA_HDRLEN + name.len() + 1) as u16).to_ne_bytes());
            e.extend_from_slice(&NFTA_EXPR_NAME.to_ne_bytes());
            e.extend_from_slice(&n);
            e.extend_from_slice(&((NLA_HDRLEN + data.len()) as u16).to_ne_bytes());
            e.extend_from_slice(&2u16.to_ne_bytes());
            e.extend_from_slice(data);
            let mut elem = ((NLA_HDRLEN + e.len()) as u16).to_ne_bytes().to_vec();
            elem.extend_from_slice(&1u16.to_ne_bytes());
            elem.extend(e);
            elem
        };
        let rule = |handle: u64, exprs: Vec<Vec<u8>>| {
            let list: Vec<u8> = exprs.concat();
            let buf = notification(
                NFT_MSG_NEWRULE,
                1,
                NFPROTO_INET,
                &[
                    (1, b"t\0"),
                    (2, b"c\0"),
                    (NFTA_RULE_HANDLE, &handle.to_be_bytes()),
                    (NFTA_RULE_EXPRESSIONS, &list),
                ],
            );
            let m = messages(&buf).next().unwrap();
            rule_digest(&m)
        };
        let a = rule(
            4,
            vec![expr("meta", b"abcd"), expr("counter", b"\0\0\0\x05")],
        );
        let b = rule(
            4,
            vec![expr("meta", b"abcd"), expr("counter", b"\0\0\0\x09")],
        );
        let c = rule(
            4,
            vec![expr("meta", b"abce"), expr("counter", b"\0\0\0\x05")],
        );
        let d = rule(
            9,
            vec![expr("meta", b"abcd"), expr("counter", b"\0\0\0\x05")],
        );
        assert_eq!(a, b, "counter values do not count");
        assert_ne!(a, c, "a changed match does");
        assert_eq!(
            a, d,
            "nor does the handle: the same rule written again is the same"
        );
    }
}
