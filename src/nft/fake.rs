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

/// A rule: its handle, its expressions, the sets it looks up and the chains it jumps or goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FRule {
    handle: u64,
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
    /// The table's handle (tables are numbered once per kernel).
    handle: u64,
    /// The last handle given to a chain, set or rule of the table (the kernel's `hgenerator`: each
    /// NEWCHAIN, NEWSET and NEWRULE takes the next; never reused while the table lives).
    hgen: u64,
    flags: u32,
    userdata: Option<Vec<u8>>,
    chains: Vec<FChain>,
    sets: Vec<FSet>,
}

/// A model of nf_tables (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct FakeKernel {
    tables: BTreeMap<String, FTable>,
    /// The last table handle given.
    table_handles: u64,
    /// Transactions committed so far.
    committed: usize,
    /// Transactions sent so far (committed or not).
    sent: usize,
    fail: Vec<(usize, i32)>,
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
        self.fail.push((self.sent + n, errno));
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

    /// The handles of the rules of chain `chain` of table `table`, in order (empty without it).
    pub fn rule_handles(&self, table: &str, chain: &str) -> Vec<u64> {
        self.tables
            .get(table)
            .and_then(|t| t.chains.iter().find(|c| c.name == chain))
            .map(|c| c.rules.iter().map(|r| r.handle).collect())
            .unwrap_or_default()
    }

    /// The handle of table `table` (None without it).
    pub fn table_handle(&self, table: &str) -> Option<u64> {
        self.tables.get(table).map(|t| t.handle)
    }

    /// Deletes rule `index` of chain `chain` behind the writer's back (`nft delete rule ... handle
    /// H`); false when there is no such rule.
    pub fn delete_rule(&mut self, table: &str, chain: &str, index: usize) -> bool {
        let Some(c) = self
            .tables
            .get_mut(table)
            .and_then(|t| t.chains.iter_mut().find(|c| c.name == chain))
        else {
            return false;
        };
        if index >= c.rules.len() {
            return false;
        }
        c.rules.remove(index);
        true
    }

    /// Copies rule `from` of chain `chain` to the end of it behind the writer's back, as a new rule
    /// (next handle); false when there is no such rule.
    pub fn duplicate_rule(&mut self, table: &str, chain: &str, from: usize) -> bool {
        let Some(t) = self.tables.get_mut(table) else {
            return false;
        };
        let Some(c) = t.chains.iter_mut().find(|c| c.name == chain) else {
            return false;
        };
        let Some(mut r) = c.rules.get(from).cloned() else {
            return false;
        };
        t.hgen += 1;
        r.handle = t.hgen;
        c.rules.push(r);
        true
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
        let mut table_handles = self.table_handles;
        let mut ids: HashMap<u32, String> = HashMap::new();
        for m in nl::messages(bytes) {
            if m.subsys() != nl::NFNL_SUBSYS_NFTABLES
                || matches!(m.ty, nl::NFNL_MSG_BATCH_BEGIN | nl::NFNL_MSG_BATCH_END)
            {
                continue;
            }
            message(&mut tables, &mut table_handles, &mut ids, &m).map_err(|errno| {
                BatchError::Rejected {
                    first: Reply {
                        seq: m.seq,
                        errno,
                        ..Reply::default()
                    },
                    more: 0,
                    lost: false,
                }
            })?;
        }
        self.tables = tables;
        self.table_handles = table_handles;
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
        if let Some(i) = self.fail.iter().position(|f| f.0 == self.sent) {
            let (_, errno) = self.fail.remove(i);
            {
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
            handle: t.handle,
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

fn u64_attr(m: &Msg<'_>, ty: u16) -> Option<u64> {
    m.attrs()
        .find(|a| a.ty == ty)
        .and_then(|a| nl::be64(a.payload))
}

fn bytes_attr(m: &Msg<'_>, ty: u16) -> Option<Vec<u8>> {
    m.attrs().find(|a| a.ty == ty).map(|a| a.payload.to_vec())
}

/// Applies one message to `tables`; the errno the kernel would answer on error.
fn message(
    tables: &mut BTreeMap<String, FTable>,
    table_handles: &mut u64,
    ids: &mut HashMap<u32, String>,
    m: &Msg<'_>,
) -> Result<(), i32> {
    let excl = m.flags & nl::NLM_F_EXCL != 0;
    let table_name = string(m, 1).ok_or(libc::EINVAL)?;
    match m.ty & 0xff {
        nl::NFT_MSG_NEWTABLE => {
            match tables.entry(table_name) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    *table_handles += 1;
                    v.insert(FTable {
                        handle: *table_handles,
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
            t.hgen += 1;
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
            match u64_attr(m, nl::NFTA_RULE_HANDLE) {
                // One rule, by handle: a handle this chain does not hold (any more) is ENOENT, a rule
                // deleted earlier in the transaction included (nf_tables_delrule, nft_delrule).
                Some(h) => {
                    let i = c
                        .rules
                        .iter()
                        .position(|r| r.handle == h)
                        .ok_or(libc::ENOENT)?;
                    c.rules.remove(i);
                }
                // The whole chain.
                None => c.rules.clear(),
            }
        }
        nl::NFT_MSG_NEWRULE => {
            let chain = string(m, nl::NFTA_RULE_CHAIN).ok_or(libc::EINVAL)?;
            // nf_tables_newrule: a handle means replacing (NLM_F_REPLACE), which we never send; a new
            // rule needs NLM_F_CREATE.
            if u64_attr(m, nl::NFTA_RULE_HANDLE).is_some() {
                return Err(libc::EOPNOTSUPP);
            }
            if m.flags & nl::NLM_F_CREATE == 0 {
                return Err(libc::EINVAL);
            }
            let mut rule = FRule {
                handle: 0,
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
            t.hgen += 1;
            rule.handle = t.hgen;
            let c = t
                .chains
                .iter_mut()
                .find(|c| c.name == chain)
                .ok_or(libc::ENOENT)?;
            // Where (nf_tables_newrule): with NFTA_RULE_POSITION, after (NLM_F_APPEND) or before that
            // rule, ENOENT when the chain does not hold it; without, at the end (NLM_F_APPEND) or the
            // start.
            let append = m.flags & nl::NLM_F_APPEND != 0;
            let at = match u64_attr(m, nl::NFTA_RULE_POSITION) {
                Some(p) => {
                    let i = c
                        .rules
                        .iter()
                        .position(|r| r.handle == p)
                        .ok_or(libc::ENOENT)?;
                    if append {
                        i + 1
                    } else {
                        i
                    }
                }
                None if append => c.rules.len(),
                None => 0,
            };
            c.rules.insert(at, rule);
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
            t.hgen += 1;
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
    fn take_edited(&mut self) -> Vec<(String, Vec<Option<u64>>)> {
        self.nft.take_edited()
    }
    fn learn_handles(&mut self, comment: &str, handles: super::Handles) {
        self.nft.learn_handles(comment, handles)
    }
    fn forget_handles(&mut self) {
        self.nft.forget_handles()
    }
    fn wrote(&self) -> Vec<String> {
        self.nft.wrote()
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
                    .any(|s| crate::compile::names::is_set_version(n, &s.name))
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

#[cfg(test)]
mod tests {
    //! The swap against the fake kernel: every swap kind, the state after each transaction, kills
    //! between transactions, a rejected switch, and random pairs of rulesets.

    use super::*;
    use crate::compile::content_hash;
    use crate::ruleset::{
        BaseHook, Chain, Direction, Family, Hook, IfDir, Match, Rule, Set, SetElement, SetType,
        Verdict, VerdictMap,
    };
    use proptest::prelude::*;

    const TABLE: &str = "hostpolicy";

    /// A set of `kind` (interval or hosts) named `name`-v4 / -v4h (the kind in the name, as the
    /// compiler does) with `hosts` of 198.51.100.0/24 (as /28s in an interval set).
    fn set(name: &str, hosts: bool, members: &[u8]) -> Set {
        let mut elements: Vec<SetElement> = members
            .iter()
            .map(|m| {
                let net = if hosts {
                    format!("198.51.100.{m}/32")
                } else {
                    format!("198.51.100.{}/28", m & 0xf0)
                };
                SetElement::V4(net.parse().unwrap())
            })
            .collect();
        elements.sort_by_key(super::super::elems::bounds);
        elements.dedup();
        Set {
            name: format!("{name}-{}", if hosts { "v4h" } else { "v4" }),
            set_type: if hosts {
                SetType::Ipv4Hosts
            } else {
                SetType::Ipv4Addr
            },
            elements,
        }
    }

    /// A ruleset: base chain `filter-input` dispatching by verdict map to `pol`, which looks up each set
    /// with the verdict given (`true`: accept), then drops.
    fn ruleset(sets: Vec<(Set, bool)>) -> Ruleset {
        let mut rs = Ruleset {
            table: TABLE.into(),
            comment: String::new(),
            sets: sets.iter().map(|(s, _)| s.clone()).collect(),
            maps: vec![VerdictMap {
                name: "in-map".into(),
                elements: vec![("eth0".into(), Verdict::Goto("pol".into()))],
            }],
            chains: vec![
                Chain {
                    name: "filter-input".into(),
                    base: Some(BaseHook {
                        hook: Hook::Input,
                        priority: 0,
                    }),
                    rules: vec![Rule {
                        verdict: Some(Verdict::Vmap {
                            key: IfDir::In,
                            map: "in-map".into(),
                        }),
                        ..Rule::default()
                    }],
                },
                Chain {
                    name: "pol".into(),
                    base: None,
                    rules: sets
                        .iter()
                        .map(|(s, accept)| Rule {
                            matches: vec![Match::Addr {
                                dir: Direction::Source,
                                family: Family::Ipv4,
                                set: s.name.clone(),
                                negate: false,
                            }],
                            verdict: Some(if *accept {
                                Verdict::Accept
                            } else {
                                Verdict::Drop
                            }),
                            comment: Some(format!("uses {}", s.name)),
                            ..Rule::default()
                        })
                        .chain(std::iter::once(Rule {
                            verdict: Some(Verdict::Drop),
                            ..Rule::default()
                        }))
                        .collect(),
                },
            ]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
            origins: Default::default(),
        };
        rs.comment = format!("hostpolicyd sha256:{}", content_hash(&rs));
        rs
    }

    /// The example: `listed` = {.21}, allowed; then {.20}, denied.
    fn mixed_pair() -> (Ruleset, Ruleset) {
        (
            ruleset(vec![(set("sel-listed", true, &[21]), true)]),
            ruleset(vec![(set("sel-listed", true, &[20]), false)]),
        )
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Path {
        /// `apply(new)`: the caller does not know what the kernel holds (no state directory).
        Apply,
        /// `update(old, new)`: the daemon's and `apply`'s path with a state directory.
        Update,
    }

    /// A kernel holding `old` (None: no table).
    fn kernel_with(old: Option<&Ruleset>) -> Nft<FakeKernel> {
        let mut nft = Nft::over(FakeKernel::new());
        if let Some(old) = old {
            nft.apply(old).unwrap();
        }
        nft.kernel().clear_history();
        nft
    }

    fn swap(nft: &mut Nft<FakeKernel>, old: Option<&Ruleset>, new: &Ruleset, path: Path) {
        let r = match (path, old) {
            (Path::Update, Some(old)) => nft.update(old, new),
            _ => nft.apply(new),
        };
        r.unwrap_or_else(|e| panic!("swap failed: {e}"));
    }

    /// After every transaction of the swap from `old` to `new`, the kernel showed packets exactly the
    /// old or exactly the new ruleset; at the end the new one, with nothing left over. Returns the
    /// number of transactions.
    fn check_swap(old: Option<&Ruleset>, new: &Ruleset, path: Path) -> usize {
        let mut nft = kernel_with(old);
        swap(&mut nft, old, new, path);
        let (vo, vn) = (old.map(FakeKernel::view_of), FakeKernel::view_of(new));
        let k = nft.kernel();
        let history = k.history(TABLE);
        for (i, v) in history.iter().enumerate() {
            let pure = v.as_ref() == Some(&vn)
                || v.as_ref() == vo.as_ref()
                // no table, or a table without chains, as before a first apply: nothing filters
                || (vo.is_none() && v.as_ref().is_none_or(|v| v.is_empty()));
            assert!(
                pure,
                "after transaction {} of {}: neither the old nor the new ruleset:\n{}\n--- old:\n{}\n--- new:\n{vn}",
                i + 1,
                history.len(),
                v.as_deref().unwrap_or("<no table>"),
                vo.as_deref().unwrap_or("<no table>")
            );
        }
        assert_eq!(
            history.last().cloned().flatten(),
            Some(vn),
            "ends with the new ruleset"
        );
        assert_eq!(orphans(k, new), Vec::<String>::new(), "orphans");
        assert_eq!(hash_chains(k, TABLE), 1);
        assert_eq!(nft.table_comment(TABLE), Ok(Some(new.comment.clone())));
        history.len()
    }

    #[test]
    fn every_swap_kind_shows_the_pure_old_or_the_pure_new_ruleset_after_each_transaction() {
        let (old, new) = mixed_pair();
        // fresh: table and sets first, then the rules
        assert_eq!(check_swap(None, &old, Path::Apply), 2);
        // elements + rules (the mixed window): a copy, then the switch
        assert_eq!(check_swap(Some(&old), &new, Path::Update), 2);
        // ... and without a previous ruleset (no state directory)
        assert_eq!(check_swap(Some(&old), &new, Path::Apply), 2);
        // rules only: one transaction
        let flipped = ruleset(vec![(set("sel-listed", true, &[21]), false)]);
        assert_eq!(check_swap(Some(&old), &flipped, Path::Update), 1);
        assert_eq!(check_swap(Some(&old), &flipped, Path::Apply), 1);
        // elements only: one batch of element changes (update), or a copy and a switch (apply)
        let moved = ruleset(vec![(set("sel-listed", true, &[21, 22]), true)]);
        assert_eq!(check_swap(Some(&old), &moved, Path::Update), 1);
        assert_eq!(check_swap(Some(&old), &moved, Path::Apply), 2);
        // a set kind change (hosts -> interval): the new set first, then the switch
        let kind = ruleset(vec![(set("sel-listed", false, &[21]), true)]);
        assert_eq!(check_swap(Some(&old), &kind, Path::Update), 2);
        assert_eq!(check_swap(Some(&kind), &old, Path::Apply), 2);
        // the same name of another kind (a hand-made ruleset): a version of the other kind
        let mut same_name = kind.clone();
        same_name.sets[0].name = old.sets[0].name.clone();
        same_name.chain_mut(1).rules[0].matches = old.chains[1].rules[0].matches.clone();
        same_name.comment = format!("hostpolicyd sha256:{}", content_hash(&same_name));
        assert_eq!(check_swap(Some(&old), &same_name, Path::Update), 2);
        // a set added and one removed with rules
        let more = ruleset(vec![
            (set("sel-a", true, &[1, 2]), true),
            (set("lit-b", false, &[64]), false),
        ]);
        assert_eq!(check_swap(Some(&old), &more, Path::Update), 2);
        let less = ruleset(vec![(set("sel-a", true, &[1, 2]), true)]);
        assert_eq!(
            check_swap(Some(&more), &less, Path::Update),
            1,
            "a set only removed"
        );
    }

    /// What `apply`, the daemon at start or drift repair do next, as the engine decides: nothing when the
    /// kernel's content hash is the target's, else `update(last_good, target)`.
    fn next_apply(nft: &mut Nft<FakeKernel>, last_good: &Ruleset, target: &Ruleset) {
        let comment = nft.table_comment(TABLE).unwrap();
        if comment.as_deref() != Some(target.comment.as_str()) {
            nft.update(last_good, target)
                .unwrap_or_else(|e| panic!("the next apply failed: {e}"));
        }
    }

    fn converged(nft: &mut Nft<FakeKernel>, target: &Ruleset, what: &str) {
        assert_eq!(
            nft.kernel().view(TABLE),
            Some(FakeKernel::view_of(target)),
            "{what}: not the target ruleset"
        );
        assert_eq!(
            orphans(nft.kernel(), target),
            Vec::<String>::new(),
            "{what}: orphans"
        );
        assert_eq!(hash_chains(nft.kernel(), TABLE), 1, "{what}");
        assert_eq!(
            nft.table_comment(TABLE),
            Ok(Some(target.comment.clone())),
            "{what}: the content hash"
        );
    }

    /// Kills the swap from `old` to `new` after each of its transactions; the next apply of either
    /// configuration converges to a clean apply of it, with no orphans.
    fn check_kills(old: &Ruleset, new: &Ruleset, path: Path) {
        let transactions = {
            let mut nft = kernel_with(Some(old));
            let before = nft.kernel().committed();
            swap(&mut nft, Some(old), new, path);
            nft.kernel().committed() - before
        };
        for k in 0..transactions {
            for (target, name) in [(new, "new"), (old, "old")] {
                let mut nft = kernel_with(Some(old));
                let before = nft.kernel().committed();
                nft.kernel().crash_after(k);
                let r = match path {
                    Path::Update => nft.update(old, new),
                    Path::Apply => nft.apply(new),
                };
                assert!(
                    r.is_err(),
                    "killed after transaction {k}: the swap cannot succeed"
                );
                assert_eq!(
                    nft.kernel().committed(),
                    before + k,
                    "transactions that went through"
                );
                let view = nft.kernel().view(TABLE);
                let pure = view == Some(FakeKernel::view_of(old))
                    || view == Some(FakeKernel::view_of(new));
                assert!(pure, "killed after transaction {k}: a mixed table");
                nft.kernel().revive();
                // The previous run never recorded `new`: its last good is `old`.
                next_apply(&mut nft, old, target);
                converged(
                    &mut nft,
                    target,
                    &format!("killed after transaction {k}, then {name} applied"),
                );
            }
        }
    }

    #[test]
    fn a_swap_killed_after_any_transaction_is_finished_or_redone_by_the_next_apply() {
        let (old, new) = mixed_pair();
        check_kills(&old, &new, Path::Update);
        check_kills(&old, &new, Path::Apply);
        let kind = ruleset(vec![(set("sel-listed", false, &[21]), true)]);
        check_kills(&old, &kind, Path::Update);
        let more = ruleset(vec![
            (set("sel-a", true, &[1, 2]), true),
            (set("lit-b", false, &[64]), false),
        ]);
        check_kills(&old, &more, Path::Update);
    }

    #[test]
    fn a_half_finished_swap_is_marked_and_never_taken_for_applied() {
        let (old, new) = mixed_pair();
        let mut nft = kernel_with(Some(&old));
        nft.kernel().crash_after(1);
        assert!(nft.update(&old, &new).is_err());
        let comment = nft.table_comment(TABLE).unwrap().unwrap();
        assert_eq!(
            super::super::pending_target(&comment),
            Some(new.comment.clone())
        );
        assert_ne!(
            comment, old.comment,
            "re-applying the old configuration is not 'unchanged'"
        );
        assert_eq!(
            nft.kernel().set_names(TABLE),
            ["sel-listed-v4h", "in-map", "sel-listed-v4h.1"]
        );
    }

    #[test]
    fn a_rejected_switch_is_undone() {
        let (old, new) = mixed_pair();
        let mut nft = kernel_with(Some(&old));
        nft.kernel().fail_transaction(2, libc::EINVAL);
        let err = nft.update(&old, &new).unwrap_err();
        assert_eq!(err.errno, Some(libc::EINVAL), "{err}");
        assert!(!err.message.contains("undoing"), "{err}");
        converged(&mut nft, &old, "after the undo");
        // The same with the undo rejected too: the mark stays, the next apply cleans up.
        let mut nft = kernel_with(Some(&old));
        nft.kernel().fail_transaction(2, libc::EINVAL);
        nft.kernel().fail_transaction(3, libc::EPERM);
        let err = nft.update(&old, &new).unwrap_err();
        assert!(err.message.contains("undoing"), "{err}");
        assert!(
            super::super::pending_target(&nft.table_comment(TABLE).unwrap().unwrap()).is_some()
        );
        next_apply(&mut nft, &old, &old);
        converged(&mut nft, &old, "after the failed undo, old re-applied");
    }

    #[test]
    fn a_kernel_rejecting_an_element_rejects_the_whole_transaction() {
        let (old, _) = mixed_pair();
        let mut nft = kernel_with(Some(&old));
        let before = nft.kernel().view(TABLE);
        // Deleting an element the kernel does not hold: the one-batch delta fails whole.
        let mut claimed = old.clone();
        claimed.sets[0] = set("sel-listed", true, &[99]);
        claimed.comment = old.comment.clone();
        let moved = ruleset(vec![(set("sel-listed", true, &[98]), true)]);
        let committed = nft.kernel().committed();
        assert!(nft.update_elements(&claimed, &moved).is_err());
        assert_eq!(nft.kernel().view(TABLE), before);
        assert_eq!(nft.kernel().committed(), committed);
    }

    fn arb_ruleset() -> impl Strategy<Value = Ruleset> {
        let one = (
            prop::sample::select(vec!["sel-a", "sel-b", "lit-c"]),
            any::<bool>(),
            prop::collection::vec(0u8..8, 1..4),
            any::<bool>(),
        );
        prop::collection::vec(one, 0..4).prop_map(|sets| {
            let mut seen = BTreeSet::new();
            let sets: Vec<(Set, bool)> = sets
                .into_iter()
                .map(|(name, hosts, members, accept)| (set(name, hosts, &members), accept))
                .filter(|(s, _)| seen.insert(s.name.clone()))
                .collect();
            ruleset(sets)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Random pairs of rulesets: every transaction shows the pure old or new ruleset, and a kill
        /// after any of them is repaired by the next apply of either.
        #[test]
        fn random_pairs_swap_atomically_and_recover_from_kills(old in arb_ruleset(), new in arb_ruleset()) {
            check_swap(Some(&old), &new, Path::Update);
            check_swap(Some(&old), &new, Path::Apply);
            check_kills(&old, &new, Path::Update);
        }
    }
}

#[cfg(test)]
mod handle_tests {
    //! Edits by handle: a kept chain whose rules change a little is edited rule by rule in the switch
    //! (DELRULE by handle, positional NEWRULE) instead of flushed and refilled, with the same result.

    use super::*;
    use crate::nft::Handles;
    use crate::ruleset::{BaseHook, Chain, Hook, Rule, Verdict};
    use proptest::prelude::*;
    use std::sync::Arc;

    const TABLE: &str = "hostpolicy";

    /// Like the compiler's endpoint chain: base chain `filter-input` jumps to `ep`, which holds a head
    /// rule, a jump to `pi-K` and a return per policy K, and a tail rule; `pi-K` holds one rule.
    fn endpoint(policies: &[u32], generation: usize) -> Ruleset {
        endpoint_with(policies, generation, true)
    }

    /// [`endpoint`], with or without its `tail` rule (without: a policy added last is appended at the
    /// chain's end, `Place::End`).
    fn endpoint_with(policies: &[u32], generation: usize, tail: bool) -> Ruleset {
        let mut ep = vec![Rule {
            comment: Some("head".into()),
            counter: true,
            ..Rule::default()
        }];
        for k in policies {
            ep.push(Rule {
                verdict: Some(Verdict::Jump(format!("pi-{k}"))),
                ..Rule::default()
            });
            ep.push(Rule {
                counter: true,
                verdict: Some(Verdict::Return),
                ..Rule::default()
            });
        }
        if tail {
            ep.push(Rule {
                comment: Some("tail".into()),
                counter: true,
                verdict: Some(Verdict::Drop),
                ..Rule::default()
            });
        }
        let mut chains = vec![
            Chain {
                name: "filter-input".into(),
                base: Some(BaseHook {
                    hook: Hook::Input,
                    priority: 0,
                }),
                rules: vec![Rule {
                    verdict: Some(Verdict::Jump("ep".into())),
                    ..Rule::default()
                }],
            },
            Chain {
                name: "ep".into(),
                base: None,
                rules: ep,
            },
        ];
        for k in policies {
            chains.push(Chain {
                name: format!("pi-{k}"),
                base: None,
                rules: vec![Rule {
                    comment: Some(format!("policy {k}")),
                    counter: true,
                    verdict: Some(Verdict::Accept),
                    ..Rule::default()
                }],
            });
        }
        Ruleset {
            table: TABLE.into(),
            comment: format!("hostpolicyd sha256:{generation:064x}"),
            sets: Vec::new(),
            maps: Vec::new(),
            chains: chains.into_iter().map(Arc::new).collect(),
            origins: Default::default(),
        }
    }

    /// What the drift guard does after a write: the handles of every chain read back, handed over.
    fn learn(nft: &mut Nft<FakeKernel>, rs: &Ruleset) {
        let k = nft.kernel();
        let handles = Handles {
            table: k.table_handle(TABLE).unwrap(),
            chains: rs
                .chains
                .iter()
                .map(|c| (c.name.clone(), k.rule_handles(TABLE, &c.name)))
                .collect(),
        };
        nft.learn_handles(&rs.comment, handles);
    }

    fn applied(policies: &[u32]) -> (Nft<FakeKernel>, Ruleset) {
        let mut nft = Nft::over(FakeKernel::new());
        let rs = endpoint(policies, 0);
        nft.apply(&rs).unwrap();
        learn(&mut nft, &rs);
        (nft, rs)
    }

    #[test]
    fn a_policy_added_or_removed_edits_the_endpoint_chain_by_handle() {
        let (mut nft, old) = applied(&[1, 2, 3, 4, 5, 6]);
        let before = nft.kernel().rule_handles(TABLE, "ep");
        // Policy 7 between 3 and 4: its jump and return inserted before 4's jump, nothing else.
        let new = endpoint(&[1, 2, 3, 7, 4, 5, 6], 1);
        nft.update(&old, &new).unwrap();
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&new)));
        let edited = nft.take_edited();
        assert_eq!(edited.len(), 1, "{edited:?}");
        assert_eq!(edited[0].0, "ep");
        let after = nft.kernel().rule_handles(TABLE, "ep");
        assert_eq!(after.len(), before.len() + 2);
        assert_eq!(
            after[..7],
            before[..7],
            "the rules before keep their handles"
        );
        assert_eq!(
            after[9..],
            before[7..],
            "the rules after keep their handles"
        );
        assert!(after[7..9].iter().all(|h| !before.contains(h)));
        let slots: Vec<Option<u64>> = edited[0].1.clone();
        assert_eq!(
            slots.iter().filter(|s| s.is_none()).count(),
            2,
            "two rules inserted"
        );
        learn(&mut nft, &new);
        // Policy 2 removed: its jump and return deleted by handle.
        let newer = endpoint(&[1, 3, 7, 4, 5, 6], 2);
        nft.update(&new, &newer).unwrap();
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&newer)));
        assert_eq!(nft.take_edited().len(), 1);
        let last = nft.kernel().rule_handles(TABLE, "ep");
        assert_eq!(last[..3], after[..3]);
        assert_eq!(last[3..], after[5..]);
        // Without handles learned for the last write: flushed and refilled.
        let mut nft = Nft::over(FakeKernel::new());
        let old = endpoint(&[1, 2, 3, 4, 5, 6], 0);
        nft.apply(&old).unwrap();
        let mut wrong = Handles {
            table: nft.kernel().table_handle(TABLE).unwrap(),
            chains: Default::default(),
        };
        wrong
            .chains
            .insert("ep".into(), nft.kernel().rule_handles(TABLE, "ep"));
        nft.learn_handles("hostpolicyd sha256:another", wrong);
        let new2 = endpoint(&[1, 2, 3, 4, 5], 1);
        nft.update(&old, &new2).unwrap();
        assert!(nft.take_edited().is_empty());
        // Too big a change (more than a quarter of the chain): refilled.
        let (mut nft, old) = applied(&[1, 2, 3, 4, 5, 6]);
        let new3 = endpoint(&[1, 9, 8, 7, 6], 1);
        nft.update(&old, &new3).unwrap();
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&new3)));
        assert!(nft.take_edited().is_empty());
    }

    #[test]
    fn a_stale_handle_makes_the_kernel_refuse_the_edit_and_the_swap_refills_instead() {
        // Someone deleted policy 3's jump behind our back: the edit that deletes it by handle is
        // refused (ENOENT) as a whole, and the swap is made again by flushing and refilling.
        let (mut nft, old) = applied(&[1, 2, 3, 4, 5, 6]);
        assert!(nft.kernel().delete_rule(TABLE, "ep", 5));
        let committed = nft.kernel().committed();
        let new = endpoint(&[1, 2, 4, 5, 6], 1);
        nft.update(&old, &new).unwrap();
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&new)));
        assert_eq!(
            nft.kernel().committed(),
            committed + 1,
            "the refused edit changed nothing"
        );
        assert!(nft.take_edited().is_empty(), "refilled, not edited");
        // A table deleted and made again (same content, other handles): no edits with the old ones.
        let (mut nft, old) = applied(&[1, 2, 3, 4, 5, 6]);
        assert!(nft.kernel().remove_table(TABLE));
        nft.kernel().table_handles += 7; // other tables came and went
        let mut other = Nft::over(std::mem::take(nft.kernel()));
        other.apply(&old).unwrap();
        *nft.kernel() = std::mem::take(other.kernel());
        let new = endpoint(&[1, 2, 3, 4, 5], 1);
        nft.update(&old, &new).unwrap();
        assert!(nft.take_edited().is_empty());
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&new)));
    }

    #[test]
    fn a_refused_edit_is_tried_again_only_for_a_missing_handle_and_forgets_every_handle() {
        // handlesfix item 3. The switch that edits by handle refused for another reason (EINVAL):
        // not tried again, the kernel's first answer is the error.
        let (mut nft, old) = applied(&[1, 2, 3, 4, 5, 6]);
        let committed = nft.kernel().committed();
        nft.kernel().fail_transaction(1, libc::EINVAL);
        let new = endpoint(&[1, 2, 4, 5, 6], 1);
        let e = nft.update(&old, &new).unwrap_err();
        assert_eq!(e.errno, Some(libc::EINVAL), "{e}");
        assert_eq!(nft.kernel().committed(), committed);
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&old)));
        // No handles, so no edit: an ENOENT is the kernel's answer, not tried again.
        let (mut nft, old) = applied(&[1, 2, 3, 4, 5, 6]);
        nft.forget_handles();
        nft.kernel().fail_transaction(1, libc::ENOENT);
        assert_eq!(
            nft.update(&old, &new).unwrap_err().errno,
            Some(libc::ENOENT)
        );
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&old)));
        // An edit refused for a missing handle, and the refill refused too: both answers are told.
        let (mut nft, old) = applied(&[1, 2, 3, 4, 5, 6]);
        nft.kernel().fail_transaction(1, libc::ENOENT);
        nft.kernel().fail_transaction(2, libc::EPERM);
        let e = nft.update(&old, &new).unwrap_err();
        assert_eq!(e.errno, Some(libc::EPERM), "{e}");
        assert!(e.message.contains("the first was refused too"), "{e}");
        // Refused for a missing handle, refilled: no handle of the refused set is kept, for any
        // chain, so the next change refills too.
        let (mut nft, old) = applied(&[1, 2, 3, 4, 5, 6]);
        nft.kernel().fail_transaction(1, libc::ENOENT);
        nft.update(&old, &new).unwrap();
        assert!(nft.take_edited().is_empty(), "refilled");
        let newer = endpoint(&[1, 2, 5, 6], 2);
        nft.update(&new, &newer).unwrap();
        assert!(
            nft.take_edited().is_empty(),
            "no handle kept after the refused edit"
        );
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&newer)));
    }

    #[test]
    fn a_failed_read_back_forgets_the_handles() {
        // handlesfix item 4: the daemon could not read the table back after a write; the handles the
        // dataplane kept are forgotten, and the next change refills instead of editing.
        let (mut nft, old) = applied(&[1, 2, 3, 4, 5, 6]);
        nft.forget_handles();
        let new = endpoint(&[1, 2, 4, 5, 6], 1);
        nft.update(&old, &new).unwrap();
        assert!(nft.take_edited().is_empty());
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&new)));
    }

    #[test]
    fn handles_read_back_before_this_process_wrote_are_not_taken() {
        // The daemon restarted: the kernel holds what the previous process applied, and someone may
        // have replaced a rule in place while no daemon ran. Handles read back before this process
        // wrote anything are not ours to trust: its first reload refills, and the table is then what
        // a fresh apply makes.
        let (mut first, old) = applied(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut nft = Nft::over(std::mem::take(first.kernel()));
        learn(&mut nft, &old);
        let new = endpoint(&[1, 2, 3, 5, 6, 7, 8], 1);
        nft.update(&old, &new).unwrap();
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&new)));
        assert!(nft.take_edited().is_empty(), "refilled, not edited");
        // Handles of a ruleset older than the last write are not taken.
        learn(&mut nft, &new);
        let newer = endpoint(&[1, 2, 3, 6, 7, 8], 2);
        nft.update(&new, &newer).unwrap();
        nft.take_edited();
        let stale = Handles {
            table: nft.kernel().table_handle(TABLE).unwrap(),
            chains: [("ep".to_string(), vec![1, 2, 3])].into_iter().collect(),
        };
        nft.learn_handles(&new.comment, stale);
        let newest = endpoint(&[1, 2, 3, 7, 8], 3);
        nft.update(&newer, &newest).unwrap();
        assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&newest)));
        assert!(
            nft.take_edited().is_empty(),
            "no handles for `newer`: refilled"
        );
    }

    /// One step: insert policy `id` at `at` (modulo the length + 1), or delete the policy at `at`.
    fn arb_steps() -> impl Strategy<Value = Vec<Vec<(bool, usize, u32)>>> {
        let op = (any::<bool>(), 0usize..64, 100u32..10_000);
        prop::collection::vec(prop::collection::vec(op, 1..3), 1..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random insert/delete sequences: after each update the kernel holds exactly the new ruleset;
        /// a single policy added or removed in a chain of at least 8 policies is an edit by handle that
        /// keeps every other rule's handle.
        #[test]
        fn edits_by_handle_give_the_new_chain(start in 0usize..24, steps in arb_steps(), tail in any::<bool>()) {
            // Without the tail rule, changes at the chain's end are edits there too.
            let mut policies: Vec<u32> = (0..start as u32).collect();
            let mut nft = Nft::over(FakeKernel::new());
            let mut prev = endpoint_with(&policies, 0, tail);
            nft.apply(&prev).unwrap();
            learn(&mut nft, &prev);
            for (g, ops) in steps.iter().enumerate() {
                for &(insert, at, id) in ops {
                    if insert || policies.is_empty() {
                        if !policies.contains(&id) {
                            policies.insert(at % (policies.len() + 1), id);
                        }
                    } else {
                        policies.remove(at % policies.len());
                    }
                }
                let next = endpoint_with(&policies, g + 1, tail);
                let before = nft.kernel().rule_handles(TABLE, "ep");
                nft.update(&prev, &next).unwrap();
                prop_assert_eq!(nft.kernel().view(TABLE), Some(FakeKernel::view_of(&next)));
                let edited = nft.take_edited();
                let after = nft.kernel().rule_handles(TABLE, "ep");
                if let Some((_, slots)) = edited.iter().find(|(c, _)| c == "ep") {
                    prop_assert_eq!(slots.len(), after.len());
                    for (s, h) in slots.iter().zip(&after) {
                        match s {
                            Some(kept) => prop_assert_eq!(kept, h),
                            None => prop_assert!(!before.contains(h)),
                        }
                    }
                } else {
                    let single = ops.len() == 1 && prev.chains[1].rules.len().abs_diff(next.chains[1].rules.len()) == 2;
                    prop_assert!(!(single && policies.len() >= 8), "a one-policy change at {} policies was not edited", policies.len());
                }
                learn(&mut nft, &next);
                prev = next;
            }
        }
    }
}
