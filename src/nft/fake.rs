//! The ONE fake kernel: a model of nf_tables' objects and transaction semantics, below the same
//! [`Nft`] dataplane (planner, encoder, executor) that runs over netlink in production, so that tests
//! exercise the real swap without root.
//!
//! [`FakeKernel`] decodes the batches the encoder writes (tables, chains, rules with their expressions,
//! sets and maps with their elements, flushes and deletions) and applies each one to a copy of its
//! state: any error (a missing object, a name taken, an element already there or missing, a set or chain
//! still referenced, an element of the wrong kind) rejects the whole batch and leaves the state as it
//! was, as the kernel does. It can reject the Nth transaction ([`FakeKernel::fail_transaction`]), or
//! "crash" after the Kth one ([`FakeKernel::crash_after`]: nothing sent afterwards reaches it, as when
//! the process is killed), and it keeps the state after every transaction ([`FakeKernel::history`]).
//!
//! [`FakeKernel::view`] is what a packet can meet: the base chains and every chain they reach (jumps,
//! gotos, verdict maps), each rule's expressions with every set lookup replaced by the set's contents.
//! Two tables with the same view filter every packet alike, whatever their sets are called.
//!
//! [`Fake`] is the [`Dataplane`] the engine and daemon tests use: [`Nft`] over a [`FakeKernel`], plus
//! a record of the calls and a way to make the next write fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use super::batch::EncodedBatch;
use super::inventory::{Inventory, KChain, KElem, KHook, KSet};
use super::kernel::Kernel;
use super::netlink::Nft;
use super::{Dataplane, DataplaneError, HASH_CHAIN};
use crate::netlink::{self as nl, attr_str, be32, BatchError, Msg, Reply};
use crate::ruleset::Ruleset;

/// An expression: a set lookup (its attributes but the set's name or id, and the set), or any other
/// (raw, as sent).
#[derive(Debug, Clone, PartialEq, Eq)]
enum FExpr {
    Lookup { attrs: Vec<u8>, set: String },
    Raw(Vec<u8>),
}

/// A rule: its expressions, the sets it looks up and the chains it jumps or goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FRule {
    exprs: Vec<FExpr>,
    userdata: Option<Vec<u8>>,
    sets: Vec<String>,
    targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FChain {
    name: String,
    /// (hook number, priority, type, policy) of a base chain.
    hook: Option<(u32, i32, String, u32)>,
    userdata: Option<Vec<u8>>,
    rules: Vec<FRule>,
}

/// An element: its key and whether it is an interval end; its userdata and data (a verdict).
type ElemKey = (Vec<u8>, bool);

#[derive(Debug, Clone, PartialEq, Eq)]
struct FElem {
    userdata: Option<Vec<u8>>,
    /// A map element's verdict: (code, chain).
    verdict: Option<(u32, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FSet {
    name: String,
    flags: u32,
    key_type: u32,
    key_len: u32,
    data_type: Option<u32>,
    userdata: Option<Vec<u8>>,
    elements: BTreeMap<ElemKey, FElem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct FTable {
    flags: u32,
    userdata: Option<Vec<u8>>,
    chains: Vec<FChain>,
    sets: Vec<FSet>,
}

/// A model of nf_tables (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct FakeKernel {
    tables: BTreeMap<String, FTable>,
    /// Transactions committed so far.
    committed: usize,
    /// Transactions sent so far (committed or not).
    sent: usize,
    fail: Option<(usize, i32)>,
    crash_after: Option<usize>,
    history: Vec<BTreeMap<String, FTable>>,
}

impl FakeKernel {
    pub fn new() -> FakeKernel {
        FakeKernel::default()
    }

    /// The `n`th transaction sent from now on (1: the next) is rejected with `errno` at its first
    /// message, changing nothing.
    pub fn fail_transaction(&mut self, n: usize, errno: i32) {
        self.fail = Some((self.sent + n, errno));
    }

    /// After `k` more transactions are committed, the writer "dies": nothing it sends reaches the
    /// kernel any more (its calls fail as if the answer was lost) until [`FakeKernel::revive`].
    pub fn crash_after(&mut self, k: usize) {
        self.crash_after = Some(self.committed + k);
    }

    /// A new process: what it sends reaches the kernel again.
    pub fn revive(&mut self) {
        self.crash_after = None;
    }

    /// How many transactions were committed.
    pub fn committed(&self) -> usize {
        self.committed
    }

    /// The view of table `table` after each transaction committed since [`FakeKernel::clear_history`].
    pub fn history(&self, table: &str) -> Vec<Option<String>> {
        self.history.iter().map(|t| view(t, table)).collect()
    }

    pub fn clear_history(&mut self) {
        self.history.clear();
    }

    /// Whether table `table` exists.
    pub fn has_table(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    /// Deletes table `table` behind the writer's back (`nft delete table`).
    pub fn remove_table(&mut self, table: &str) -> bool {
        self.tables.remove(table).is_some()
    }

    /// The names of the sets and maps of table `table`, in the kernel's order.
    pub fn set_names(&self, table: &str) -> Vec<String> {
        self.tables
            .get(table)
            .map(|t| t.sets.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }

    /// The names of the chains of table `table`, in the kernel's order.
    pub fn chain_names(&self, table: &str) -> Vec<String> {
        self.tables
            .get(table)
            .map(|t| t.chains.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    }

    /// What a packet can meet in table `table` (see the module documentation); None without a table.
    pub fn view(&self, table: &str) -> Option<String> {
        view(&self.tables, table)
    }

    /// The view of `rs` applied to an empty kernel: what [`FakeKernel::view`] must show when the kernel
    /// holds exactly `rs` (set names aside).
    pub fn view_of(rs: &Ruleset) -> String {
        let mut nft = Nft::over(FakeKernel::new());
        nft.apply(rs)
            .unwrap_or_else(|e| panic!("{} does not apply: {e}", rs.comment));
        nft.kernel().view(&rs.table).expect("applied")
    }

    /// Applies one batch: all of it, or nothing and the first error.
    fn transaction(&mut self, bytes: &[u8]) -> Result<(), BatchError> {
        let mut tables = self.tables.clone();
        let mut ids: HashMap<u32, String> = HashMap::new();
        for m in nl::messages(bytes) {
            if m.subsys() != nl::NFNL_SUBSYS_NFTABLES
                || matches!(m.ty, nl::NFNL_MSG_BATCH_BEGIN | nl::NFNL_MSG_BATCH_END)
            {
                continue;
            }
            message(&mut tables, &mut ids, &m).map_err(|errno| BatchError::Rejected {
                first: Reply {
                    seq: m.seq,
                    errno,
                    ..Reply::default()
                },
                more: 0,
                lost: false,
            })?;
        }
        self.tables = tables;
        Ok(())
    }
}

impl Kernel for FakeKernel {
    fn send(&mut self, batch: &EncodedBatch) -> Result<(), BatchError> {
        if self.crash_after.is_some_and(|k| self.committed >= k) {
            return Err(BatchError::Unknown(nl::Error {
                kind: nl::ErrorKind::OutcomeUnknown,
                errno: Some(libc::ETIMEDOUT),
                context: "the writer was killed (fake kernel)".into(),
            }));
        }
        self.sent += 1;
        if let Some((n, errno)) = self.fail {
            if n == self.sent {
                self.fail = None;
                return Err(BatchError::Rejected {
                    first: Reply {
                        seq: 1,
                        errno,
                        ..Reply::default()
                    },
                    more: 0,
                    lost: false,
                });
            }
        }
        self.transaction(&batch.bytes)?;
        self.committed += 1;
        self.history.push(self.tables.clone());
        Ok(())
    }

    fn read_table(&mut self, table: &str) -> Result<Option<Inventory>, DataplaneError> {
        Ok(self.tables.get(table).map(|t| Inventory {
            comment: t.userdata.as_deref().and_then(nl::udata_comment_of),
            flags: t.flags,
            chains: t
                .chains
                .iter()
                .map(|c| KChain {
                    name: c.name.clone(),
                    hook: c.hook.as_ref().map(|(num, priority, ty, policy)| KHook {
                        num: *num,
                        priority: *priority,
                        chain_type: ty.clone(),
                        policy: Some(*policy),
                        devices: false,
                    }),
                    flags: if c.hook.is_some() {
                        nl::NFT_CHAIN_BASE
                    } else {
                        0
                    },
                    userdata: c.userdata.clone(),
                })
                .collect(),
            sets: t.sets.iter().map(kset).collect(),
        }))
    }

    fn read_sets(&mut self, table: &str) -> Result<Vec<KSet>, DataplaneError> {
        Ok(self
            .tables
            .get(table)
            .map(|t| t.sets.iter().map(kset).collect())
            .unwrap_or_default())
    }

    fn read_elements(&mut self, table: &str, set: &str) -> Result<Vec<KElem>, DataplaneError> {
        let Some(s) = self
            .tables
            .get(table)
            .and_then(|t| t.sets.iter().find(|s| s.name == set))
        else {
            return Ok(Vec::new());
        };
        Ok(s.elements
            .iter()
            .map(|((key, end), e)| KElem {
                key: key.clone(),
                flags: if *end {
                    nl::NFT_SET_ELEM_INTERVAL_END
                } else {
                    0
                },
                userdata: e.userdata.clone(),
                other: e.verdict.is_some(),
            })
            .collect())
    }

    fn read_comment(
        &mut self,
        table: &str,
        chain: Option<&str>,
    ) -> Result<Option<String>, DataplaneError> {
        let Some(t) = self.tables.get(table) else {
            return Ok(None);
        };
        let udata = match chain {
            None => t.userdata.as_ref(),
            Some(c) => match t.chains.iter().find(|x| x.name == c) {
                Some(x) => x.userdata.as_ref(),
                None => return Ok(None),
            },
        };
        Ok(Some(
            udata
                .and_then(|u| nl::udata_comment_of(u))
                .unwrap_or_default(),
        ))
    }
}

fn kset(s: &FSet) -> KSet {
    KSet {
        name: s.name.clone(),
        flags: s.flags,
        key_type: s.key_type,
        key_len: s.key_len,
        data_type: s.data_type,
        userdata: s.userdata.clone(),
    }
}

/// The string attribute `ty` of `m`.
fn string(m: &Msg<'_>, ty: u16) -> Option<String> {
    m.attrs().find(|a| a.ty == ty).map(|a| attr_str(a.payload))
}

fn u32_attr(m: &Msg<'_>, ty: u16) -> Option<u32> {
    m.attrs().find(|a| a.ty == ty).and_then(|a| be32(a.payload))
}

fn bytes_attr(m: &Msg<'_>, ty: u16) -> Option<Vec<u8>> {
    m.attrs().find(|a| a.ty == ty).map(|a| a.payload.to_vec())
}

/// Applies one message to `tables`; the errno the kernel would answer on error.
fn message(
    tables: &mut BTreeMap<String, FTable>,
    ids: &mut HashMap<u32, String>,
    m: &Msg<'_>,
) -> Result<(), i32> {
    let excl = m.flags & nl::NLM_F_EXCL != 0;
    let table_name = string(m, 1).ok_or(libc::EINVAL)?;
    match m.ty & 0xff {
        nl::NFT_MSG_NEWTABLE => {
            match tables.entry(table_name) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(FTable {
                        flags: u32_attr(m, nl::NFTA_TABLE_FLAGS).unwrap_or(0),
                        userdata: bytes_attr(m, nl::NFTA_TABLE_USERDATA),
                        ..FTable::default()
                    });
                }
                std::collections::btree_map::Entry::Occupied(_) if excl => {
                    return Err(libc::EEXIST)
                }
                std::collections::btree_map::Entry::Occupied(_) => {}
            }
            return Ok(());
        }
        nl::NFT_MSG_DELTABLE => {
            return tables.remove(&table_name).map(|_| ()).ok_or(libc::ENOENT);
        }
        _ => {}
    }
    let t = tables.get_mut(&table_name).ok_or(libc::ENOENT)?;
    match m.ty & 0xff {
        nl::NFT_MSG_NEWCHAIN => {
            let name = string(m, nl::NFTA_CHAIN_NAME).ok_or(libc::EINVAL)?;
            if t.chains.iter().any(|c| c.name == name) {
                return if excl { Err(libc::EEXIST) } else { Ok(()) };
            }
            let hook = m.attrs().find(|a| a.ty == nl::NFTA_CHAIN_HOOK).map(|h| {
                let mut num = 0;
                let mut prio = 0;
                for a in h.nested() {
                    match a.ty {
                        nl::NFTA_HOOK_HOOKNUM => num = be32(a.payload).unwrap_or(0),
                        nl::NFTA_HOOK_PRIORITY => prio = be32(a.payload).unwrap_or(0) as i32,
                        _ => {}
                    }
                }
                (
                    num,
                    prio,
                    string(m, nl::NFTA_CHAIN_TYPE).unwrap_or_else(|| "filter".into()),
                    u32_attr(m, nl::NFTA_CHAIN_POLICY).unwrap_or(nl::NF_ACCEPT),
                )
            });
            t.chains.push(FChain {
                name,
                hook,
                userdata: bytes_attr(m, nl::NFTA_CHAIN_USERDATA),
                rules: Vec::new(),
            });
        }
        nl::NFT_MSG_DELCHAIN => {
            let name = string(m, nl::NFTA_CHAIN_NAME).ok_or(libc::EINVAL)?;
            let i = t
                .chains
                .iter()
                .position(|c| c.name == name)
                .ok_or(libc::ENOENT)?;
            let referenced = t
                .chains
                .iter()
                .flat_map(|c| &c.rules)
                .any(|r| r.targets.contains(&name))
                || t.sets.iter().flat_map(|s| s.elements.values()).any(|e| {
                    e.verdict
                        .as_ref()
                        .is_some_and(|v| v.1.as_deref() == Some(&name))
                });
            if !t.chains[i].rules.is_empty() || referenced {
                return Err(libc::EBUSY);
            }
            t.chains.remove(i);
        }
        nl::NFT_MSG_DELRULE => {
            let chain = string(m, nl::NFTA_RULE_CHAIN).ok_or(libc::EINVAL)?;
            let c = t
                .chains
                .iter_mut()
                .find(|c| c.name == chain)
                .ok_or(libc::ENOENT)?;
            c.rules.clear(); // our encoder only flushes whole chains
        }
        nl::NFT_MSG_NEWRULE => {
            let chain = string(m, nl::NFTA_RULE_CHAIN).ok_or(libc::EINVAL)?;
            let mut rule = FRule {
                exprs: Vec::new(),
                userdata: bytes_attr(m, nl::NFTA_RULE_USERDATA),
                sets: Vec::new(),
                targets: Vec::new(),
            };
            let list = m
                .attrs()
                .find(|a| a.ty == nl::NFTA_RULE_EXPRESSIONS)
                .ok_or(libc::EINVAL)?;
            for e in list.nested() {
                let name = e
                    .nested()
                    .find(|a| a.ty == nl::NFTA_EXPR_NAME)
                    .map(|a| attr_str(a.payload))
                    .unwrap_or_default();
                let data = e.nested().find(|a| a.ty == nl::NFTA_EXPR_DATA);
                let mut kept = Vec::new();
                match (name.as_str(), data) {
                    ("lookup", Some(d)) => {
                        let mut set = None;
                        for a in d.nested() {
                            match a.ty {
                                nl::NFTA_LOOKUP_SET => set = Some(attr_str(a.payload)),
                                nl::NFTA_LOOKUP_SET_ID => {
                                    if set.is_none() {
                                        set = be32(a.payload).and_then(|id| ids.get(&id).cloned());
                                    }
                                }
                                _ => {
                                    kept.extend_from_slice(&a.ty.to_be_bytes());
                                    kept.extend_from_slice(a.payload);
                                }
                            }
                        }
                        let set = set.ok_or(libc::EINVAL)?;
                        if !t.sets.iter().any(|s| s.name == set) {
                            return Err(libc::ENOENT);
                        }
                        rule.sets.push(set.clone());
                        rule.exprs.push(FExpr::Lookup { attrs: kept, set });
                        continue;
                    }
                    ("immediate", Some(d)) => {
                        if let Some(target) = verdict_of(d.nested()).and_then(|v| v.1) {
                            rule.targets.push(target);
                        }
                    }
                    _ => {}
                }
                rule.exprs.push(FExpr::Raw(e.payload.to_vec()));
            }
            for target in &rule.targets {
                if !t.chains.iter().any(|c| &c.name == target) {
                    return Err(libc::ENOENT);
                }
            }
            let c = t
                .chains
                .iter_mut()
                .find(|c| c.name == chain)
                .ok_or(libc::ENOENT)?;
            c.rules.push(rule);
        }
        nl::NFT_MSG_NEWSET => {
            let name = string(m, nl::NFTA_SET_NAME).ok_or(libc::EINVAL)?;
            let set = FSet {
                name: name.clone(),
                flags: u32_attr(m, nl::NFTA_SET_FLAGS).unwrap_or(0),
                key_type: u32_attr(m, nl::NFTA_SET_KEY_TYPE).unwrap_or(0),
                key_len: u32_attr(m, nl::NFTA_SET_KEY_LEN).unwrap_or(0),
                data_type: u32_attr(m, nl::NFTA_SET_DATA_TYPE),
                userdata: bytes_attr(m, nl::NFTA_SET_USERDATA),
                elements: BTreeMap::new(),
            };
            if let Some(old) = t.sets.iter().find(|s| s.name == name) {
                // The kernel keeps a set of the same kind; it cannot change a set's kind.
                let same = old.flags == set.flags && old.key_len == set.key_len;
                return if excl || !same {
                    Err(libc::EEXIST)
                } else {
                    Ok(())
                };
            }
            if let Some(id) = u32_attr(m, nl::NFTA_SET_ID) {
                ids.insert(id, name);
            }
            t.sets.push(set);
        }
        nl::NFT_MSG_DELSET => {
            let name = string(m, nl::NFTA_SET_NAME).ok_or(libc::EINVAL)?;
            let i = t
                .sets
                .iter()
                .position(|s| s.name == name)
                .ok_or(libc::ENOENT)?;
            if t.chains
                .iter()
                .flat_map(|c| &c.rules)
                .any(|r| r.sets.contains(&name))
            {
                return Err(libc::EBUSY);
            }
            t.sets.remove(i);
        }
        msg @ (nl::NFT_MSG_NEWSETELEM | nl::NFT_MSG_DELSETELEM) => {
            let name = match string(m, nl::NFTA_SET_ELEM_LIST_SET) {
                Some(n) => n,
                None => u32_attr(m, nl::NFTA_SET_ELEM_LIST_SET_ID)
                    .and_then(|id| ids.get(&id).cloned())
                    .ok_or(libc::EINVAL)?,
            };
            let chains: Vec<String> = t.chains.iter().map(|c| c.name.clone()).collect();
            let set = t
                .sets
                .iter_mut()
                .find(|s| s.name == name)
                .ok_or(libc::ENOENT)?;
            let list = m
                .attrs()
                .find(|a| a.ty == nl::NFTA_SET_ELEM_LIST_ELEMENTS)
                .ok_or(libc::EINVAL)?;
            for e in list.nested() {
                let mut key = None;
                let mut end = false;
                let mut elem = FElem {
                    userdata: None,
                    verdict: None,
                };
                for a in e.nested() {
                    match a.ty {
                        nl::NFTA_SET_ELEM_KEY => {
                            key = a
                                .nested()
                                .find(|v| v.ty == nl::NFTA_DATA_VALUE)
                                .map(|v| v.payload.to_vec())
                        }
                        nl::NFTA_SET_ELEM_FLAGS => {
                            end = be32(a.payload).unwrap_or(0) & nl::NFT_SET_ELEM_INTERVAL_END != 0
                        }
                        nl::NFTA_SET_ELEM_USERDATA => elem.userdata = Some(a.payload.to_vec()),
                        nl::NFTA_SET_ELEM_DATA => {
                            elem.verdict = a
                                .nested()
                                .find(|v| v.ty == nl::NFTA_DATA_VERDICT)
                                .and_then(|v| verdict_fields(v.nested()));
                        }
                        _ => {}
                    }
                }
                let key = key.ok_or(libc::EINVAL)?;
                if key.len() != set.key_len as usize
                    || (end && set.flags & nl::NFT_SET_INTERVAL == 0)
                {
                    return Err(libc::EINVAL);
                }
                if let Some(target) = elem.verdict.as_ref().and_then(|v| v.1.as_ref()) {
                    if !chains.contains(target) {
                        return Err(libc::ENOENT);
                    }
                }
                let k = (key, end);
                if msg == nl::NFT_MSG_NEWSETELEM {
                    if set.elements.contains_key(&k) {
                        if excl {
                            return Err(libc::EEXIST);
                        }
                        continue;
                    }
                    set.elements.insert(k, elem);
                } else if set.elements.remove(&k).is_none() {
                    return Err(libc::ENOENT);
                }
            }
        }
        _ => return Err(libc::EOPNOTSUPP),
    }
    Ok(())
}

/// (code, chain) of an NFTA_DATA_VERDICT's attributes.
fn verdict_fields<'a>(attrs: impl Iterator<Item = nl::Attr<'a>>) -> Option<(u32, Option<String>)> {
    let mut code = None;
    let mut chain = None;
    for a in attrs {
        match a.ty {
            nl::NFTA_VERDICT_CODE => code = be32(a.payload),
            nl::NFTA_VERDICT_CHAIN => chain = Some(attr_str(a.payload)),
            _ => {}
        }
    }
    code.map(|c| (c, chain))
}

/// The verdict of an immediate expression's data (NFTA_IMMEDIATE_DATA > NFTA_DATA_VERDICT).
fn verdict_of<'a>(mut attrs: impl Iterator<Item = nl::Attr<'a>>) -> Option<(u32, Option<String>)> {
    let data = attrs.find(|a| a.ty == nl::NFTA_IMMEDIATE_DATA)?;
    let v = data.nested().find(|a| a.ty == nl::NFTA_DATA_VERDICT)?;
    verdict_fields(v.nested())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The view of table `table` in `tables` (see the module documentation).
fn view(tables: &BTreeMap<String, FTable>, table: &str) -> Option<String> {
    let t = tables.get(table)?;
    let mut out = String::new();
    let mut bases: Vec<&FChain> = t.chains.iter().filter(|c| c.hook.is_some()).collect();
    bases.sort_by_key(|c| c.hook.clone());
    let mut todo: Vec<String> = Vec::new();
    for c in &bases {
        let _ = writeln!(out, "base {} {:?}", c.name, c.hook);
        todo.push(c.name.clone());
    }
    let set_text = |name: &str| -> String {
        let Some(s) = t.sets.iter().find(|s| s.name == name) else {
            return format!("<missing set {name}>");
        };
        let elems: Vec<String> = s
            .elements
            .iter()
            .map(|((k, end), e)| {
                format!(
                    "{}{}{}{}",
                    hex(k),
                    if *end { "/end" } else { "" },
                    e.userdata
                        .as_ref()
                        .map(|u| format!("/u{}", hex(u)))
                        .unwrap_or_default(),
                    e.verdict
                        .as_ref()
                        .map(|v| format!("/v{}:{}", v.0 as i32, v.1.as_deref().unwrap_or("")))
                        .unwrap_or_default()
                )
            })
            .collect();
        format!(
            "{{flags {} key {}/{} data {:?}: {}}}",
            s.flags,
            s.key_type,
            s.key_len,
            s.data_type,
            elems.join(",")
        )
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(c) = t.chains.iter().find(|c| c.name == name) else {
            let _ = writeln!(out, "chain {name}: <missing>");
            continue;
        };
        let _ = writeln!(out, "chain {name}");
        for r in &c.rules {
            let mut line = String::from(" ");
            for e in &r.exprs {
                match e {
                    // The set's contents stand in for its name.
                    FExpr::Lookup { attrs, set } => {
                        let _ = write!(line, " lookup[{}] {}", hex(attrs), set_text(set));
                        // a verdict map's chains are reached too
                        if let Some(map) = t.sets.iter().find(|x| &x.name == set) {
                            for el in map.elements.values() {
                                if let Some(target) = el.verdict.as_ref().and_then(|v| v.1.clone())
                                {
                                    todo.push(target);
                                }
                            }
                        }
                    }
                    FExpr::Raw(b) => {
                        let _ = write!(line, " {}", hex(b));
                    }
                }
            }
            if let Some(u) = &r.userdata {
                let _ = write!(line, " comment {}", hex(u));
            }
            let _ = writeln!(out, "{line}");
            todo.extend(r.targets.iter().cloned());
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------------
// The dataplane for engine and daemon tests.

/// [`Nft`] over a [`FakeKernel`], recording each call (`apply HASH`, `update HASH`, `flush`) by the
/// first 12 digits of the ruleset's content hash; the next write can be made to fail.
pub struct Fake {
    nft: Nft<FakeKernel>,
    pub calls: Vec<String>,
    fail_next: Option<DataplaneError>,
}

impl Default for Fake {
    fn default() -> Fake {
        Fake::new()
    }
}

impl Fake {
    pub fn new() -> Fake {
        Fake {
            nft: Nft::over(FakeKernel::new()),
            calls: Vec::new(),
            fail_next: None,
        }
    }

    /// The kernel below.
    pub fn kernel(&mut self) -> &mut FakeKernel {
        self.nft.kernel()
    }

    /// The next apply, update or flush fails with `error` and sends nothing.
    pub fn fail_next(&mut self, error: DataplaneError) {
        self.fail_next = Some(error);
    }

    /// True when the kernel holds exactly `rs` (set names aside) and its content hash.
    pub fn holds(&mut self, rs: &Ruleset) -> bool {
        let comment = self.nft.table_comment(&rs.table).ok().flatten();
        comment.as_deref() == Some(super::clean_comment(&rs.comment).as_ref())
            && self.kernel().view(&rs.table) == Some(FakeKernel::view_of(rs))
    }

    /// True when the kernel has no table `table`.
    pub fn no_table(&mut self, table: &str) -> bool {
        !self.kernel().has_table(table)
    }

    /// Puts `rs` into the kernel behind the caller's back (another process applied it), unrecorded.
    pub fn load(&mut self, rs: &Ruleset) {
        self.nft.apply(rs).expect("a ruleset the kernel takes");
    }

    fn call(&mut self, what: &str, rs: &Ruleset) -> Result<(), DataplaneError> {
        let hash = crate::compile::hash_from_comment(&rs.comment).unwrap_or("?");
        self.calls
            .push(format!("{what} {}", &hash[..hash.len().min(12)]));
        match self.fail_next.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Dataplane for Fake {
    fn apply(&mut self, ruleset: &Ruleset) -> Result<(), DataplaneError> {
        self.call("apply", ruleset)?;
        self.nft.apply(ruleset)
    }
    fn update(&mut self, previous: &Ruleset, next: &Ruleset) -> Result<(), DataplaneError> {
        self.call("update", next)?;
        self.nft.update(previous, next)
    }
    fn flush(&mut self, table: &str) -> Result<(), DataplaneError> {
        self.calls.push("flush".into());
        if let Some(e) = self.fail_next.take() {
            return Err(e);
        }
        self.nft.flush(table)
    }
    fn table_comment(&mut self, table: &str) -> Result<Option<String>, DataplaneError> {
        self.nft.table_comment(table)
    }
}

/// The kernel names of the sets of `table` that hold no set of `rs` nor a map: orphans.
pub fn orphans(k: &FakeKernel, rs: &Ruleset) -> Vec<String> {
    k.set_names(&rs.table)
        .into_iter()
        .filter(|n| {
            !rs.maps.iter().any(|m| &m.name == n)
                && !rs
                    .sets
                    .iter()
                    .any(|s| super::plan::is_version_of(n, &s.name))
        })
        .collect()
}

/// The chain that carries the content hash is there, once.
pub fn hash_chains(k: &FakeKernel, table: &str) -> usize {
    k.chain_names(table)
        .iter()
        .filter(|c| c.as_str() == HASH_CHAIN)
        .count()
}
