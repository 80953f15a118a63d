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
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

/// The nf_tables multicast group (`linux/netfilter/nfnetlink.h`: NFNLGRP_NFTABLES).
pub const NFNLGRP_NFTABLES: u32 = 7;
/// Port ids used by our sockets: above `PID_MAX_LIMIT` (2^22) and below the kernel's negative autobind
/// range, so never a process id.
pub const PRIVATE_PORTS: std::ops::Range<u32> = 0x4000_0000..0x7fff_0000;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_INET: u8 = 1;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_DELOBJ: u16 = 20;
const NFT_MSG_NEWFLOWTABLE: u16 = 22;
const NFT_MSG_DELFLOWTABLE: u16 = 24;

/// In every object message the table's name is attribute 1 (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE,
/// NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE).
const ATTR_TABLE: u16 = 1;
const NFTA_CHAIN_HANDLE: u16 = 2;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_USE: u16 = 6;
const NFTA_CHAIN_COUNTERS: u16 = 8;
const NFTA_CHAIN_PAD: u16 = 9;
const NFTA_CHAIN_ID: u16 = 11;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
/// The handle of the rule before it (dumps carry it): a handle too.
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_RULE_PAD: u16 = 8;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_PAD: u16 = 14;
const NFTA_SET_HANDLE: u16 = 16;
/// The number of elements (recent kernels report it): compared through the elements themselves.
const NFTA_SET_COUNT: u16 = 20;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_SET_ELEM_EXPR: u16 = 7;
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 10;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;

/// Expressions whose dump carries state that changes with traffic or time (packet counts, consumed
/// quota, last-seen time): only their name counts in a digest.
const STATEFUL_EXPRS: [&str; 3] = ["counter", "quota", "last"];

/// How long a request waits for the kernel's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
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
        if m.ty >> 8 != NFNL_SUBSYS_NFTABLES {
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
        let table = m
            .attrs()
            .find(|a| a.ty == ATTR_TABLE)
            .map(|a| attr_str(a.payload))
            .unwrap_or_default();
        notes.push(Note::Object {
            what,
            deleted,
            family: m.family,
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
    sock: Socket,
    buf: Vec<u8>,
}

impl Monitor {
    pub fn subscribe() -> io::Result<Monitor> {
        let sock = open_private()?;
        sock.add_membership(NFNLGRP_NFTABLES)?;
        // Our own applies send one notification per object: make room for big ones. Overflow is not
        // fatal (it is reported as `Lost` and the table is compared), only slower.
        force_rcvbuf(&sock, 8 << 20);
        Ok(Monitor {
            sock,
            buf: vec![0; 256 << 10],
        })
    }

    /// Waits up to `timeout` (None: until something arrives) for one datagram of notifications.
    pub fn recv(&mut self, timeout: Option<Duration>) -> io::Result<Received> {
        if !wait_readable(&self.sock, timeout)? {
            return Ok(Received::Nothing);
        }
        match self
            .sock
            .recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT | libc::MSG_TRUNC)
        {
            Ok(n) if n > self.buf.len() => Ok(Received::Lost),
            Ok(n) => Ok(Received::Notes(parse_notes(&self.buf[..n]))),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Received::Lost),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Received::Nothing),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Received::Nothing),
            Err(e) => Err(e),
        }
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainPrint {
    pub def: u64,
    pub rules: Vec<u64>,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablePrint {
    pub chains: BTreeMap<String, ChainPrint>,
    pub sets: BTreeMap<String, SetPrint>,
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

struct Requester {
    sock: Socket,
    buf: Vec<u8>,
    seq: u32,
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
        let sock = open_private()?;
        Ok(Requester {
            sock,
            buf: vec![0; 256 << 10],
            seq: 0,
        })
    }

    /// One try. `Ok(None)`: the generation changed while reading (try again).
    fn read_table(
        &mut self,
        table: &str,
        known: &BTreeMap<String, SetPrint>,
    ) -> io::Result<Option<Option<TablePrint>>> {
        let mut gens = Vec::new();
        let mut consistent = true;
        let mut track = |a: &Answer, gens: &mut Vec<u16>| {
            gens.extend(&a.gens);
            if a.interrupted {
                consistent = false;
            }
        };
        let name = strz(table);

        let a = self.request(NFT_MSG_GETTABLE, false, &[(ATTR_TABLE, &name)], |_| {})?;
        if a.errno == libc::ENOENT {
            return Ok(Some(None));
        }
        check(&a, "reading the table")?;
        track(&a, &mut gens);

        let mut print = TablePrint::default();
        let a = self.request(NFT_MSG_GETCHAIN, true, &[], |m| {
            if m.ty & 0xff != NFT_MSG_NEWCHAIN || !m.is_of_table(table) {
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

        let mut rules: Vec<(String, u64)> = Vec::new();
        let a = self.request(NFT_MSG_GETRULE, true, &[(ATTR_TABLE, &name)], |m| {
            if m.ty & 0xff != NFT_MSG_NEWRULE || !m.is_of_table(table) {
                return;
            }
            let chain = m.attr_str(NFTA_RULE_CHAIN).unwrap_or_default();
            rules.push((chain, rule_digest(&m)));
        })?;
        check(&a, "reading the rules")?;
        track(&a, &mut gens);
        for (chain, d) in rules {
            print.chains.entry(chain).or_default().rules.push(d);
        }

        let a = self.request(NFT_MSG_GETSET, true, &[(ATTR_TABLE, &name)], |m| {
            if m.ty & 0xff != NFT_MSG_NEWSET || !m.is_of_table(table) {
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
            match known.get(name) {
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
                        for elem in attrs(list.payload) {
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
                // missed (see `staged::kernel_hosts`). Not a consistent look: read again.
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
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let req = encode_request((NFNL_SUBSYS_NFTABLES << 8) | msg, flags, seq, attrs);
        self.sock.send(&req, 0)?;
        let mut answer = Answer {
            errno: 0,
            gens: Vec::new(),
            interrupted: false,
        };
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait_readable(&self.sock, Some(left))? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer from the kernel",
                ));
            }
            let n = match self
                .sock
                .recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT | libc::MSG_TRUNC)
            {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            if n > self.buf.len() {
                return Err(io::Error::other(format!(
                    "a netlink answer of {n} bytes does not fit the {} byte buffer",
                    self.buf.len()
                )));
            }
            for m in messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = m
                            .bytes
                            .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        answer.errno = -code;
                        if m.flags & NLM_F_DUMP_INTR != 0 {
                            answer.interrupted = true;
                        }
                        return Ok(answer);
                    }
                    _ if m.ty >> 8 == NFNL_SUBSYS_NFTABLES => {
                        answer.gens.push(m.gen);
                        if m.flags & NLM_F_DUMP_INTR != 0 {
                            answer.interrupted = true;
                        }
                        each(m);
                    }
                    _ => {}
                }
            }
        }
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
                for e in attrs(a.payload) {
                    let name = attrs(e.payload)
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
    for a in attrs(elem) {
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

// ---------------------------------------------------------------------------------------------------
// Sockets (netlink-sys) and framing

/// A netfilter netlink socket bound to a port id of [`PRIVATE_PORTS`] (see the module documentation).
fn open_private() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    let span = PRIVATE_PORTS.end - PRIVATE_PORTS.start;
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    );
    let mut last = None;
    for i in 0..64u32 {
        let port = PRIVATE_PORTS.start + seed.wrapping_add(i.wrapping_mul(7919)) % span;
        match sock.bind(&SocketAddr::new(port, 0)) {
            Ok(()) => return Ok(sock),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free netlink port id")))
}

/// SO_RCVBUFFORCE (CAP_NET_ADMIN, which nftables needs anyway), else SO_RCVBUF; best effort.
fn force_rcvbuf(sock: &Socket, bytes: usize) {
    let value = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `value` is a live c_int and the length passed is its size; the fd is a valid socket.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Waits until the socket is readable, up to `timeout` (None: no limit). False on timeout or EINTR.
fn wait_readable(sock: &Socket, timeout: Option<Duration>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = match timeout {
        // Round up: a deadline 0.4 ms away must not become a zero-timeout spin.
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
        None => -1,
    };
    // SAFETY: one valid pollfd, count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(rc > 0)
}

fn encode_request(ty: u16, flags: u16, seq: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]); // nfgenmsg: family, version 0, res_id 0
    for (ty, data) in attrs {
        buf.extend_from_slice(&((NLA_HDRLEN + data.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(data);
        buf.resize(align4(buf.len()), 0);
    }
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

fn strz(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[derive(Debug, Clone, Copy)]
struct Msg<'b> {
    ty: u16,
    flags: u16,
    seq: u32,
    port: u32,
    family: u8,
    /// The ruleset generation the message was written in (nfgenmsg res_id).
    gen: u16,
    bytes: &'b [u8],
}

impl<'b> Msg<'b> {
    fn attrs(&self) -> impl Iterator<Item = Attr<'b>> {
        attrs(self.bytes.get(NLMSG_HDRLEN + NFGENMSG_LEN..).unwrap_or(&[]))
    }
    fn attr_str(&self, ty: u16) -> Option<String> {
        self.attrs()
            .find(|a| a.ty == ty)
            .map(|a| attr_str(a.payload))
    }
    fn is_of_table(&self, table: &str) -> bool {
        self.family == NFPROTO_INET && self.attr_str(ATTR_TABLE).as_deref() == Some(table)
    }
}

/// Splits a datagram into netlink messages; stops at the first malformed header.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let bytes = &buf[..len];
        let nfgen = bytes.get(NLMSG_HDRLEN..NLMSG_HDRLEN + NFGENMSG_LEN);
        let msg = Msg {
            ty: u16::from_ne_bytes([bytes[4], bytes[5]]),
            flags: u16::from_ne_bytes([bytes[6], bytes[7]]),
            seq: u32::from_ne_bytes(bytes[8..12].try_into().ok()?),
            port: u32::from_ne_bytes(bytes[12..16].try_into().ok()?),
            family: nfgen.map(|g| g[0]).unwrap_or(0),
            gen: nfgen.map(|g| u16::from_be_bytes([g[2], g[3]])).unwrap_or(0),
            bytes,
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(msg)
    })
}

#[derive(Debug, Clone, Copy)]
struct Attr<'b> {
    ty: u16,
    payload: &'b [u8],
}

fn attrs(buf: &[u8]) -> impl Iterator<Item = Attr<'_>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if buf.len() < pos + NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([buf[pos], buf[pos + 1]]) as usize;
        let ty = u16::from_ne_bytes([buf[pos + 2], buf[pos + 3]]) & 0x3fff;
        if len < NLA_HDRLEN || pos + len > buf.len() {
            return None;
        }
        let a = Attr {
            ty,
            payload: &buf[pos + NLA_HDRLEN..pos + len],
        };
        pos += align4(len);
        Some(a)
    })
}

fn attr_str(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

fn be32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A notification as the kernel writes it: header, nfgenmsg, attributes.
    pub(crate) fn notification(msg: u16, port: u32, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = encode_request((NFNL_SUBSYS_NFTABLES << 8) | msg, 0, 0, attrs);
        m[12..16].copy_from_slice(&port.to_ne_bytes());
        m[16] = family;
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

    /// `PRIVATE_PORTS` is never a process id (at most `PID_MAX_LIMIT`, 2^22) and never the kernel's
    /// autobind range (negative port ids).
    const _: () = assert!(PRIVATE_PORTS.start > 1 << 22 && PRIVATE_PORTS.end < 0x8000_0000);
}
