//! The production [`Dataplane`]. An apply is a staged swap of at most two nf_tables transactions (new
//! sets first, then the switch of every chain and rule in ONE transaction; see `exec.rs` for why and
//! how, `plan.rs` for the planning, `inventory.rs` for what is read back); each transaction is one
//! batch sent in one `sendmsg` (`crate::netlink`).
//!
//! # Design decisions (see also `../shared/notes/nftables-netlink.md`)
//!
//! - **rustables 0.9 builds the table, chain and rule messages** and the expressions it supports (meta,
//!   cmp, bitwise, payload, lookup without flags, ct state, counter, immediate verdicts, and `notrack`,
//!   which is a bare expression name). Its bytecode is the same as nft's.
//! - **Our own encoding (`wire.rs`, `batch.rs`) for what rustables cannot express**: interval sets and
//!   their elements (`NFTA_SET_ELEM_FLAGS` / INTERVAL_END, nft's userdata), verdict maps, and the
//!   expressions `lookup` with `NFT_LOOKUP_F_INV` (`!= @set`), `ct status`, `log ... level info` and
//!   `range`. Its closed expression enum cannot carry foreign bytes, so such an expression goes into the
//!   rustables rule as a placeholder (an expression with only a reserved name) and is replaced by our
//!   bytes when the batch is assembled.
//! - **Our own batch and sender** (`batch.rs`, `sock.rs`): rustables' `Batch::finalize()` output is split
//!   into its messages and interleaved with ours in nft's order (table, chains, sets + elements, maps +
//!   elements, rules), renumbered, and sent in ONE `sendmsg` on a socket whose buffers are sized for the
//!   batch. Only the last message asks for an ACK (errors are always reported), so a 100,000-message
//!   batch does not need 100,000 ACKs. `Batch::send()` is not used: it fails falsely (ENOBUFS) from ~255
//!   messages and cannot send more than ~208 KB.
//! - Sets are split into NEWSETELEM messages below 64 KiB (the 16-bit attribute length) inside the same
//!   batch. `netlink-packet-netfilter` was not needed: the few raw attributes are simple to write by hand.
//! - What the kernel holds in our table (chains, sets, the elements of the sets we keep) is read back with
//!   our own dumps (`inventory.rs`): rustables cannot tell an `ip` table from an `inet` one.
//! - A socket is opened per call, so it lives in the calling thread's network namespace at that moment.

use std::fmt::{self, Write as _};

use super::batch::{encode_delta, encode_flush, EncodedBatch, Obj};
use super::delta::{set_delta, SetDelta};
use super::describe::list_index;
pub(crate) use super::describe::{element_text, set_type_name};
use super::kernel::{send_batch, Kernel, NetlinkKernel};
use super::lower;
use super::plan::Handles;
use super::{
    clean_comment, is_nft_name, Dataplane, DataplaneError, FullReason, UpdatePath, HASH_CHAIN,
    IFNAME_MAX, NAME_MAX,
};
use crate::netlink::{self as nl, Port, Protocol, Reply};
use ipnet::IpNet;

use crate::ruleset::{Family, Match, PortMatch, Ruleset, SetElement, SetType, Verdict};

/// The production [`Dataplane`]: [`Nft`] over the kernel through netlink. Every call opens its own
/// socket, in the network namespace of the thread making the call (so one `Netlink` can serve threads
/// that entered other namespaces).
pub type Netlink = Nft<NetlinkKernel>;

/// The [`Dataplane`] over a [`Kernel`]: validation, the element-only path, the staged swap (`exec.rs`),
/// flush and the comment. [`Netlink`] runs it over the real kernel, `fake.rs` over the fake one.
#[derive(Debug)]
pub struct Nft<K> {
    kernel: K,
    last_update: Option<UpdatePath>,
    /// The content hash comment (cleaned) of our last write that the kernel took; None before the
    /// first and after a failed one.
    written: Option<String>,
    /// Kernel handles of the rules of some chains of the table holding the ruleset of this content
    /// hash comment: after our write, those of the chains it left alone, and those read back since
    /// ([`Dataplane::learn_handles`]).
    handles: Option<(String, Handles)>,
    /// What that write edited by handle (see [`Dataplane::take_edited`]).
    edited: Vec<(String, Vec<Option<u64>>)>,
    /// The chains whose rules that write made or changed (see [`Dataplane::wrote`]).
    wrote: Vec<String>,
}

impl Nft<NetlinkKernel> {
    /// Checks that a netfilter netlink socket can be opened here (in this thread's network namespace).
    pub fn new() -> Result<Netlink, DataplaneError> {
        nl::Socket::open(Protocol::Netfilter, Port::Kernel, 0).map_err(|e| {
            DataplaneError::from(nl::Error::io("opening the netfilter netlink socket", &e))
        })?;
        Ok(Nft::over(NetlinkKernel::default()))
    }
}

#[allow(private_bounds)]
impl<K: Kernel> Nft<K> {
    /// The dataplane over `kernel`.
    pub(crate) fn over(kernel: K) -> Nft<K> {
        Nft {
            kernel,
            last_update: None,
            written: None,
            handles: None,
            edited: Vec::new(),
            wrote: Vec::new(),
        }
    }

    /// The kernel below.
    pub(crate) fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// How the last [`Dataplane::update`] went (None before the first), for logs, tests and benchmarks.
    pub fn last_update(&self) -> Option<&UpdatePath> {
        self.last_update.as_ref()
    }

    /// The incremental path of [`Dataplane::update`] alone, without its checks and fallback: sends the
    /// element changes from `previous` to `next` and `next`'s content hash in ONE batch. Refused (errno
    /// None, nothing sent) when more than set elements differ. The kernel must hold `previous`: an element
    /// to delete that is missing, or one to add that is present, fails the whole batch and nothing
    /// changes.
    pub fn update_elements(
        &mut self,
        previous: &Ruleset,
        next: &Ruleset,
    ) -> Result<SetDelta, DataplaneError> {
        validate(next)?;
        let delta = set_delta(previous, next).ok_or_else(|| {
            DataplaneError::invalid(format!(
                "table inet {}: more than set elements differ, the table must be replaced",
                next.table
            ))
        })?;
        send_delta(&mut self.kernel, previous, next, &delta)?;
        Ok(delta)
    }

    /// Runs the staged swap (`exec.rs`) and keeps what it says about rule handles: after a swap that
    /// kept the table, the handles of the chains it left alone (edited chains are read back by the
    /// caller); nothing after any other. With `previous` and handles for it, chains are edited by
    /// handle; a swap whose edit the kernel refuses for a missing handle (ENOENT: someone else deleted
    /// a rule) is tried once more without, which flushes and refills those chains, and every handle is
    /// forgotten (the refused set may be wrong for other chains too).
    fn swap(&mut self, next: &Ruleset, previous: Option<&Ruleset>) -> Result<(), DataplaneError> {
        let mut handles = self
            .handles
            .take()
            .filter(|(c, _)| previous.is_some_and(|p| *c == clean_comment(&p.comment)))
            .map(|(_, h)| h);
        self.written = None;
        self.edited.clear();
        self.wrote.clear();
        let mut had_edits = false;
        let result = match super::exec::apply(
            &mut self.kernel,
            next,
            previous,
            handles.as_ref(),
            &mut had_edits,
        ) {
            Err(first)
                if had_edits
                    && first.kind == super::ErrorKind::Rejected
                    && first.errno == Some(libc::ENOENT) =>
            {
                handles = None;
                super::exec::apply(&mut self.kernel, next, previous, None, &mut had_edits).map_err(
                    |mut second| {
                        second.message.push_str(&format!(
                            "; it was the second try, without edits by rule handle: the first was \
                             refused too: {}",
                            first.message
                        ));
                        second
                    },
                )
            }
            r => r,
        };
        let swapped = result?;
        self.written = Some(clean_comment(&next.comment).into_owned());
        // A set, not the list: 10,000 chains looked up in a list of 10,000 took ~130 ms per reload
        // (found by the daemon's own `latency_ms`, 160-200 ms where the bench saw the commit at 35 ms).
        let untouched: std::collections::HashSet<&str> =
            swapped.untouched.iter().map(String::as_str).collect();
        self.wrote = next
            .chains
            .iter()
            .filter(|c| swapped.table.is_none() || !untouched.contains(c.name.as_str()))
            .map(|c| c.name.clone())
            .collect();
        if let Some(table) = swapped.table {
            let old = handles.filter(|h| h.table == table).map(|h| h.chains);
            let chains = match old {
                Some(mut old) => swapped
                    .untouched
                    .iter()
                    .filter_map(|c| old.remove_entry(c))
                    .collect(),
                None => Default::default(),
            };
            self.handles = Some((
                clean_comment(&next.comment).into_owned(),
                Handles { table, chains },
            ));
        }
        self.edited = swapped.edited;
        Ok(())
    }

    /// The kernel's content hash comment for `table`, as [`Dataplane::table_comment`] returns it.
    fn held_comment(&mut self, table: &str) -> Option<String> {
        self.table_comment(table).ok().flatten()
    }
}

#[allow(private_bounds)]
impl<K: Kernel> Dataplane for Nft<K> {
    fn apply(&mut self, ruleset: &Ruleset) -> Result<(), DataplaneError> {
        validate(ruleset)?;
        self.swap(ruleset, None)
    }

    /// Element changes only (ONE batch, see `delta.rs`) when only set elements and the comment differ
    /// and the kernel's content hash is `previous`'s; otherwise, or when that batch is rejected, the
    /// staged swap of [`Dataplane::apply`], which leaves the chains and sets that did not change alone
    /// when the kernel holds `previous`. [`Netlink::last_update`] tells which.
    fn update(&mut self, previous: &Ruleset, next: &Ruleset) -> Result<(), DataplaneError> {
        self.last_update = None;
        validate(next)?;
        let reason = match set_delta(previous, next) {
            None => FullReason::NotOnlyElements,
            Some(_)
                if self.held_comment(&next.table).as_deref()
                    != Some(clean_comment(&previous.comment).as_ref()) =>
            {
                FullReason::KernelDiffers
            }
            Some(delta) => match send_delta(&mut self.kernel, previous, next, &delta) {
                Ok(()) => {
                    // Only elements and the hash chain changed: every rule keeps its handle.
                    self.edited.clear();
                    self.wrote.clear();
                    let next_comment = clean_comment(&next.comment).into_owned();
                    match &mut self.handles {
                        Some((c, _)) if *c == clean_comment(&previous.comment) => {
                            c.clone_from(&next_comment)
                        }
                        _ => self.handles = None,
                    }
                    self.written = Some(next_comment);
                    self.last_update = Some(UpdatePath::Elements {
                        sets: delta.sets.len(),
                        removed: delta.removed(),
                        added: delta.added(),
                    });
                    return Ok(());
                }
                Err(e) => FullReason::Rejected(e.message),
            },
        };
        self.last_update = Some(UpdatePath::Full(reason));
        // The staged swap, told what the kernel should hold: it checks the hash itself and then
        // leaves unchanged chains and sets alone.
        self.swap(next, Some(previous))
    }

    fn take_edited(&mut self) -> Vec<(String, Vec<Option<u64>>)> {
        std::mem::take(&mut self.edited)
    }

    fn learn_handles(&mut self, comment: &str, learned: Handles) {
        let comment = clean_comment(comment);
        // Handles of an older ruleset than our last write's are of no use, nor those read back before
        // this process wrote anything: nothing says the rules at them are ours (someone may have
        // replaced one in place while no daemon ran); the first reload after a start refills.
        if self.written.as_deref() != Some(comment.as_ref()) {
            return;
        }
        match &mut self.handles {
            Some((c, h)) if *c == comment && h.table == learned.table => {
                h.chains.extend(learned.chains)
            }
            _ => self.handles = Some((comment.into_owned(), learned)),
        }
    }

    fn forget_handles(&mut self) {
        self.handles = None;
    }

    fn wrote(&self) -> Vec<String> {
        self.wrote.clone()
    }

    fn flush(&mut self, table: &str) -> Result<(), DataplaneError> {
        check_table_name(table)?;
        self.written = None;
        self.handles = None;
        self.wrote.clear();
        self.edited.clear();
        let batch = encode_flush(table);
        send_batch(&mut self.kernel, &batch, |seq, _| {
            match batch.objs.get(seq as usize) {
                Some(Obj::TableDelete) => format!("kernel rejected deleting table inet {table}"),
                _ => format!("kernel rejected flushing table inet {table}"),
            }
        })
    }

    fn table_comment(&mut self, table: &str) -> Result<Option<String>, DataplaneError> {
        check_table_name(table)?;
        let Some(comment) = self.kernel.read_comment(table, None)? else {
            return Ok(None);
        };
        Ok(Some(
            self.kernel
                .read_comment(table, Some(HASH_CHAIN))?
                .unwrap_or(comment),
        ))
    }
}

/// Our expressions in the format of `nft --debug=netlink` (`inet TABLE CHAIN` then one `  [ ... ]` line
/// per expression and an empty line, per rule), to compare our bytecode with nft's for `render()`'s text.
pub fn debug_expressions(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    let mut ops = Vec::new();
    for chain in &ruleset.chains {
        for rule in &chain.rules {
            ops.clear();
            lower::lower_rule(rule, &mut ops);
            let _ = writeln!(out, "inet {} {}", ruleset.table, chain.name);
            lower::debug_ops(&ops, &mut out);
            out.push('\n');
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Validation: what cannot be encoded, or could not be rendered as nft text that gives the same result.

fn check_table_name(table: &str) -> Result<(), DataplaneError> {
    if table.is_empty() || table.len() > NAME_MAX || table.contains('\0') {
        return Err(DataplaneError::invalid(format!(
            "invalid table name {table:?}"
        )));
    }
    Ok(())
}

fn check_name(what: impl fmt::Display, name: &str) -> Result<(), DataplaneError> {
    if is_nft_name(name) {
        Ok(())
    } else {
        Err(DataplaneError::invalid(format!(
            "{what}: name {name:?} is not an nft identifier (a letter or '_', then letters, digits, '_', '-', \
             '.', '/'; at most {NAME_MAX} bytes)"
        )))
    }
}

/// An interface name nft can write in quotes: 1..=15 bytes, no `"`, `\` or NUL; `*` only as a prefix
/// match's implicit end (rejected inside names and prefixes, except a trailing one of an exact name,
/// which render escapes as `\*`).
fn check_ifname(what: impl fmt::Display, name: &str, exact: bool) -> Result<(), DataplaneError> {
    let bad_char = name.chars().enumerate().any(|(i, c)| {
        matches!(c, '"' | '\\' | '\0') || (c == '*' && !(exact && i + 1 == name.chars().count()))
    });
    if name.len() > IFNAME_MAX || (exact && name.is_empty()) || bad_char {
        return Err(DataplaneError::invalid(format!(
            "{what}: interface name {name:?} is not valid (1 to {IFNAME_MAX} bytes, no '\"', '\\' or '*')"
        )));
    }
    Ok(())
}

/// `rule I of chain NAME`, in an error of [`validate`].
struct RuleAt<'a>(usize, &'a str);

impl fmt::Display for RuleAt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} of chain {}", self.0, self.1)
    }
}

/// Refuses what cannot be encoded, or could not be rendered as nft text that loads the same: names that
/// are not nft identifiers, duplicate names, interface names nft cannot quote, elements of the wrong type,
/// ports of other protocols than tcp/udp/sctp, empty ct state matches, rules without any statement.
/// [`Netlink::apply`] runs it before sending anything (the fake kernel below it too, being the same code).
pub fn validate(rs: &Ruleset) -> Result<(), DataplaneError> {
    check_name("table", &rs.table)?;
    // The kernel merges a second NEWCHAIN/NEWSET of the same name into the first without a word (nft
    // too): refuse duplicates. Sets and maps share one namespace.
    let mut seen = std::collections::HashSet::new();
    for (kind, name) in rs
        .sets
        .iter()
        .map(|s| ("set", &s.name))
        .chain(rs.maps.iter().map(|m| ("map", &m.name)))
    {
        if !seen.insert(name.as_str()) {
            return Err(DataplaneError::invalid(format!(
                "{kind} {name}: a set or map of this name already exists"
            )));
        }
    }
    seen.clear();
    for c in &rs.chains {
        if c.name == HASH_CHAIN {
            return Err(DataplaneError::invalid(format!(
                "chain {HASH_CHAIN}: the name is reserved for the content hash of incremental updates"
            )));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(DataplaneError::invalid(format!(
                "chain {}: declared twice",
                c.name
            )));
        }
    }
    for set in &rs.sets {
        let what = format!("set {}", set.name);
        check_name(&what, &set.name)?;
        for e in &set.elements {
            let ok = match (set.set_type, e) {
                (SetType::Ipv4Addr, SetElement::V4(_)) | (SetType::Ipv6Addr, SetElement::V6(_)) => {
                    true
                }
                // a hash set holds single keys
                (SetType::Ipv4Hosts, SetElement::V4(n)) => n.prefix_len() == 32,
                (SetType::Ipv6Hosts, SetElement::V6(n)) => n.prefix_len() == 128,
                (SetType::InetService, SetElement::Ports(a, b)) => a <= b,
                _ => false,
            };
            if !ok {
                return Err(DataplaneError::invalid(format!(
                    "{what}: element {} does not fit a set of type {}",
                    element_text(e),
                    set_type_name(set.set_type)
                )));
            }
        }
    }
    for map in &rs.maps {
        let what = format!("map {}", map.name);
        check_name(&what, &map.name)?;
        for (ifname, v) in &map.elements {
            check_ifname(&what, ifname, false)?;
            if ifname.is_empty() || ifname.contains('*') {
                return Err(DataplaneError::invalid(format!(
                    "{what}: invalid key {ifname:?}"
                )));
            }
            match v {
                Verdict::Jump(c) | Verdict::Goto(c) => check_name(&what, c)?,
                Verdict::Vmap { .. } => {
                    return Err(DataplaneError::invalid(format!(
                        "{what}: a map element cannot be a vmap"
                    )))
                }
                Verdict::Reject => {
                    return Err(DataplaneError::invalid(format!(
                        "{what}: a map element cannot be a reject"
                    )))
                }
                _ => {}
            }
        }
    }
    for chain in &rs.chains {
        check_name(format_args!("chain {}", chain.name), &chain.name)?;
        for (i, rule) in chain.rules.iter().enumerate() {
            // Written out only for an error (30,000 rules at 10,000 policies).
            let what = RuleAt(i, &chain.name);
            let no_match = rule
                .matches
                .iter()
                .all(|m| matches!(m, Match::IfNamePrefix { prefix, .. } if prefix.is_empty()));
            if no_match && !rule.counter && rule.actions.is_empty() && rule.verdict.is_none() {
                return Err(DataplaneError::invalid(format!(
                    "{what}: no statement (nft cannot express an empty rule)"
                )));
            }
            for m in &rule.matches {
                match m {
                    Match::IfName { name, .. } => check_ifname(&what, name, true)?,
                    Match::IfNamePrefix { prefix, .. } => check_ifname(&what, prefix, false)?,
                    Match::Addr { set, .. }
                    | Match::Port {
                        port: PortMatch::Set(set),
                        ..
                    } => check_name(&what, set)?,
                    _ => {}
                }
                if let Match::Port { proto, .. } = m {
                    if !matches!(proto, 6 | 17 | 132) {
                        return Err(DataplaneError::invalid(format!(
                            "{what}: port match on protocol {proto} (only tcp, udp and sctp)"
                        )));
                    }
                }
                if let Match::Net { family, net, .. } = m {
                    let fits = matches!(
                        (family, net),
                        (Family::Ipv4, IpNet::V4(_)) | (Family::Ipv6, IpNet::V6(_))
                    );
                    if !fits {
                        return Err(DataplaneError::invalid(format!(
                            "{what}: network {net} in a match of the other family"
                        )));
                    }
                }
                if let Match::Port {
                    port: PortMatch::Range(lo, hi),
                    ..
                } = m
                {
                    // a one-port range is `Single`: nft would write (and encode) it as one
                    if lo >= hi {
                        return Err(DataplaneError::invalid(format!(
                            "{what}: port range {lo}-{hi} is not a range"
                        )));
                    }
                }
                if let Match::CtState(s) = m {
                    if lower::ct_state_bits(s) == 0 {
                        return Err(DataplaneError::invalid(format!(
                            "{what}: empty ct state match"
                        )));
                    }
                }
            }
            match &rule.verdict {
                Some(Verdict::Jump(c) | Verdict::Goto(c)) => check_name(&what, c)?,
                Some(Verdict::Vmap { map, .. }) => check_name(&what, map)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Sends the element changes of `delta` (from `previous` to `next`) and `next`'s content hash in ONE
/// batch.
///
/// A set may live in the kernel under a version of its name (`NAME.N`, see `plan.rs`): the sets of our
/// table are listed first, and a changed set must have exactly one version there (else the delta is
/// refused and the caller replaces the table).
fn send_delta(
    kernel_io: &mut dyn Kernel,
    previous: &Ruleset,
    next: &Ruleset,
    delta: &SetDelta,
) -> Result<(), DataplaneError> {
    let kernel = kernel_io.read_sets(&next.table)?;
    let mut names: Vec<String> = next.sets.iter().map(|s| s.name.clone()).collect();
    for c in &delta.sets {
        let ir = &next.sets[c.set].name;
        let versions: Vec<&str> = kernel
            .iter()
            .filter(|k| crate::compile::names::is_set_version(&k.name, ir))
            .map(|k| k.name.as_str())
            .collect();
        match versions[..] {
            [one] => names[c.set] = one.to_string(),
            _ => {
                return Err(DataplaneError::invalid(format!(
                    "set {ir}: table inet {} holds {} versions of it, not one",
                    next.table,
                    versions.len()
                )))
            }
        }
    }
    let batch = encode_delta(next, delta, &names);
    // One transaction, but held so that its socket is closed off the reload's path (see
    // `NetlinkKernel`).
    kernel_io.hold();
    let sent = send_batch(kernel_io, &batch, |seq, reply| {
        describe_delta(previous, next, delta, &batch, seq, reply)
    });
    kernel_io.release();
    sent
}

/// Names the object of a rejected message of an incremental update.
fn describe_delta(
    previous: &Ruleset,
    next: &Ruleset,
    delta: &SetDelta,
    batch: &EncodedBatch,
    seq: u32,
    reply: &Reply,
) -> String {
    let Some(obj) = batch.objs.get(seq as usize) else {
        return format!("kernel rejected message {seq}");
    };
    let element = |change: usize, first: usize, del: bool| {
        let c = &delta.sets[change];
        let (what, rs, elems) = if del {
            ("deleting", previous, &c.remove)
        } else {
            ("adding", next, &c.add)
        };
        let set = &rs.sets[c.set];
        let k = batch
            .message(seq)
            .zip(reply.offset)
            .and_then(|(m, off)| list_index(&m, off));
        match k.and_then(|k| elems.get(first + k)) {
            Some(e) if e.end && e.key[..e.len as usize].iter().all(|b| *b == 0) => format!(
                "kernel rejected {what} the leading end element (0) of set {}",
                set.name
            ),
            Some(e) => format!(
                "kernel rejected {what} element {} ({}{}) of set {}",
                e.ir,
                set.elements.get(e.ir).map(element_text).unwrap_or_default(),
                if e.end { ", its end" } else { "" },
                set.name
            ),
            None => format!("kernel rejected {what} elements of set {}", set.name),
        }
    };
    match *obj {
        Obj::DelElems { change, first } => element(change, first, true),
        Obj::AddElems { change, first } => element(change, first, false),
        Obj::HashChain => format!(
            "kernel rejected replacing chain {HASH_CHAIN} of table inet {}",
            next.table
        ),
        _ => format!(
            "kernel rejected the element update of table inet {}",
            next.table
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::batch::encode_apply;
    use crate::nft::batch::tests::small;
    use crate::nft::describe::describe;
    use crate::ruleset::{Direction, Rule, VerdictMap};

    #[test]
    fn error_descriptions_name_the_object() {
        let rs = small();
        let b = encode_apply(&rs).unwrap();
        let reply = Reply {
            seq: 10,
            errno: 2,
            ..Reply::default()
        };
        assert_eq!(
            describe(&rs, &b, 10, &reply),
            "kernel rejected rule 0 of chain in (comment \"r0\")"
        );
        // An extended-ACK offset inside the 4th expression.
        let m = b.message(10).unwrap();
        let exprs = nl::msg_attrs(&m)
            .find(|a| a.ty == nl::NFTA_RULE_EXPRESSIONS)
            .unwrap();
        let fourth = nl::attrs(exprs.payload, exprs.offset + 4).nth(3).unwrap();
        let reply = Reply {
            seq: 10,
            errno: 2,
            offset: Some(fourth.offset as u32 + 8),
            ..Reply::default()
        };
        assert_eq!(
            describe(&rs, &b, 10, &reply),
            "kernel rejected rule 0 of chain in (comment \"r0\"), expression 3 (lookup)"
        );
        // ... and inside the 3rd element of the set (11.0.0.0, the end of 10.0.0.0/8).
        let m = b.message(7).unwrap();
        let list = nl::msg_attrs(&m)
            .find(|a| a.ty == nl::NFTA_SET_ELEM_LIST_ELEMENTS)
            .unwrap();
        let third = nl::attrs(list.payload, list.offset + 4).nth(2).unwrap();
        let reply = Reply {
            seq: 7,
            errno: 17,
            offset: Some(third.offset as u32),
            ..Reply::default()
        };
        assert_eq!(
            describe(&rs, &b, 7, &reply),
            "kernel rejected element 0 (10.0.0.0/8, its end) of set a4"
        );
    }

    #[test]
    fn validation() {
        let mut rs = small();
        rs.chain_mut(1).name = "bad name".into();
        assert!(validate(&rs).unwrap_err().message.contains("\"bad name\""));
        let mut rs = small();
        rs.sets[0].elements.push(SetElement::Ports(1, 2));
        assert!(validate(&rs).unwrap_err().message.contains("does not fit"));
        let mut rs = small();
        rs.chain_mut(0).rules[0].matches.push(Match::IfName {
            dir: Direction::Source,
            name: "x".repeat(16),
        });
        assert!(validate(&rs).is_err());
        let mut rs = small();
        rs.chain_mut(0).rules[0].matches.push(Match::IfName {
            dir: Direction::Source,
            name: "eth*".into(),
        });
        assert!(validate(&rs).is_ok());
        let mut rs = small();
        rs.chain_mut(1).rules.push(Rule {
            matches: vec![Match::IfNamePrefix {
                dir: Direction::Source,
                prefix: String::new(),
            }],
            ..Rule::default()
        });
        assert!(validate(&rs)
            .unwrap_err()
            .message
            .contains("rule 0 of chain c: no statement"));
        let mut rs = small();
        rs.maps.push(VerdictMap {
            name: "a4".into(),
            elements: vec![],
        });
        assert!(validate(&rs)
            .unwrap_err()
            .message
            .contains("already exists"));
        assert!(validate(&small()).is_ok());
    }
}
