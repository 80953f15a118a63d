//! One nf_tables transaction as bytes: rustables' messages for the table and chains, ours for rules
//! (written as rustables writes them, straight into the transaction), sets, elements and verdict
//! maps, interleaved in nft's order and numbered so that every answer of the kernel maps back to the
//! IR object it concerns.

use std::collections::HashMap;

#[cfg(test)]
use rustables::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, ConntrackKey, Counter, Immediate, Lookup, Meta, MetaType,
    Payload, RawExpression, Register, Reject, RejectType, VerdictKind,
};
use rustables::sys as rs_sys;
#[cfg(test)]
use rustables::Rule as RsRule;
use rustables::{
    Batch, Chain as RsChain, ChainPolicy, ChainType, Hook as RsHook, HookClass, MsgType,
};
use rustables::{ProtocolFamily, Table as RsTable};

use super::delta::SetDelta;
use super::elems::{kernel_elems, Elem};
use super::lower::{self, Base, CtKey, Imm, MetaKey, Op, LOG_LEVEL_INFO};
use super::{clean_comment, DataplaneError, HASH_CHAIN, TABLE_COMMENT};
use crate::netlink::{self as nl, Writer};
use crate::ruleset::{Chain, Hook, Ruleset, Set, SetType, Verdict, VerdictMap};

/// What each message of a batch is, by sequence number (= index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Obj {
    BatchBegin,
    TableEnsure,
    TableDelete,
    TableCreate,
    Chain(usize),
    Set(usize),
    /// Elements of set `set`, starting with encoded element `first` (see [`kernel_elems`]).
    SetElems {
        set: usize,
        first: usize,
    },
    Map(usize),
    MapElems {
        map: usize,
        first: usize,
    },
    Rule {
        chain: usize,
        rule: usize,
    },
    /// Incremental update: elements deleted from / added to the set of change `change` of the
    /// [`SetDelta`], starting with element `first` of that change's list.
    DelElems {
        change: usize,
        first: usize,
    },
    AddElems {
        change: usize,
        first: usize,
    },
    /// Incremental update: the chain that carries the content hash ([`super::HASH_CHAIN`]).
    HashChain,
    BatchEnd,
}

pub(crate) struct EncodedBatch {
    pub(crate) bytes: Vec<u8>,
    /// Indexed by sequence number.
    pub(crate) objs: Vec<Obj>,
    /// Byte offset of each message in `bytes`, indexed by sequence number.
    pub(crate) offsets: Vec<usize>,
}

impl EncodedBatch {
    pub(crate) fn last_seq(&self) -> u32 {
        (self.objs.len() - 2) as u32 // the message before BATCH_END
    }
    pub(crate) fn message(&self, seq: u32) -> Option<nl::Msg<'_>> {
        let off = *self.offsets.get(seq as usize)?;
        nl::messages(&self.bytes[off..]).next()
    }
}

/// Where a rule inserted into a kept chain goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Right before the (kept) rule of this handle: NEWRULE with `NFTA_RULE_POSITION`, without
    /// `NLM_F_APPEND`.
    Before(u64),
    /// At the chain's end: NEWRULE with `NLM_F_APPEND` and no position.
    End,
}

#[cfg(test)] // the rustables encoding, the oracle of the direct one
/// The name given to a placeholder expression in a rustables rule, replaced by our own bytes.
const PLACEHOLDER: &str = "\u{1}hostpolicyd-raw";
/// Largest payload of one NEWSETELEM element list; an attribute length is 16 bits.
const ELEM_LIST_MAX: usize = 60_000;

pub(super) struct Assembler {
    pub(super) out: Vec<u8>,
    pub(super) objs: Vec<Obj>,
    offsets: Vec<usize>,
}

impl Assembler {
    pub(super) fn new(capacity: usize) -> Assembler {
        let mut a = Assembler {
            out: Vec::with_capacity(capacity),
            objs: Vec::new(),
            offsets: Vec::new(),
        };
        a.delimiter(nl::NFNL_MSG_BATCH_BEGIN, Obj::BatchBegin);
        a
    }

    fn seq(&self) -> u32 {
        self.objs.len() as u32
    }

    fn delimiter(&mut self, ty: u16, obj: Obj) {
        let seq = self.seq();
        self.offsets.push(self.out.len());
        self.objs.push(obj);
        let mut w = Writer { buf: &mut self.out };
        let m = w.begin_msg(ty, 0, seq, 0, nl::NFNL_SUBSYS_NFTABLES);
        w.end_msg(m);
    }

    /// Starts one of our own messages; returns the writer start for `end_msg`.
    fn begin(&mut self, msg: u16, obj: Obj) -> usize {
        self.begin_with(msg, nl::NLM_F_CREATE, obj)
    }

    /// Like [`Assembler::begin`], with the given netlink flags (besides NLM_F_REQUEST).
    pub(super) fn begin_with(&mut self, msg: u16, flags: u16, obj: Obj) -> usize {
        let seq = self.seq();
        self.offsets.push(self.out.len());
        self.objs.push(obj);
        Writer { buf: &mut self.out }.begin_msg(nl::nft_type(msg), flags, seq, nl::NFPROTO_INET, 0)
    }

    /// Copies a message built by rustables, with our sequence number and without its ACK request.
    pub(super) fn copy(&mut self, msg: &nl::Msg<'_>, obj: Obj) {
        let start = self.out.len();
        let seq = self.seq();
        self.offsets.push(start);
        self.objs.push(obj);
        self.out.extend_from_slice(msg.bytes);
        self.out.resize(nl::align4(self.out.len()), 0);
        self.patch_header(start, seq);
    }

    fn patch_header(&mut self, start: usize, seq: u32) {
        let flags = u16::from_ne_bytes([self.out[start + 6], self.out[start + 7]]) & !nl::NLM_F_ACK;
        self.out[start + 6..start + 8].copy_from_slice(&flags.to_ne_bytes());
        self.out[start + 8..start + 12].copy_from_slice(&seq.to_ne_bytes());
    }

    #[cfg(test)] // the rustables encoding, the oracle of the direct one
    /// Copies a rustables rule message, replacing each placeholder expression with the next of `raw`.
    fn copy_spliced(&mut self, msg: &nl::Msg<'_>, obj: Obj, raw: &mut RawExprs) {
        let start = self.out.len();
        let seq = self.seq();
        self.offsets.push(start);
        self.objs.push(obj);
        let head = nl::NLMSG_HDRLEN + nl::NFGENMSG_LEN;
        self.out.extend_from_slice(&msg.bytes[..head]);
        for a in nl::msg_attrs(msg) {
            let bytes = &msg.bytes[a.offset..a.offset + a.len];
            if a.ty != nl::NFTA_RULE_EXPRESSIONS {
                self.out.extend_from_slice(bytes);
                self.out.resize(nl::align4(self.out.len()), 0);
                continue;
            }
            let mut w = Writer { buf: &mut self.out };
            let nest = w.begin_nest(nl::NFTA_RULE_EXPRESSIONS);
            for e in nl::attrs(a.payload, 0) {
                let is_placeholder = nl::attrs(e.payload, 0)
                    .any(|x| x.ty == nl::NFTA_EXPR_NAME && x.payload == PLACEHOLDER.as_bytes());
                if is_placeholder {
                    w.buf.extend_from_slice(raw.next());
                } else {
                    w.buf
                        .extend_from_slice(&a.payload[e.offset..e.offset + e.len]);
                    w.buf.resize(nl::align4(w.buf.len()), 0);
                }
            }
            w.end_nest(nest);
        }
        let len = (self.out.len() - start) as u32;
        self.out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        self.patch_header(start, seq);
    }

    /// Gives the rule messages from sequence number `from` on their places in their chains (one per
    /// message, in order): `Place::Before(H)` adds `NFTA_RULE_POSITION` H and clears `NLM_F_APPEND`
    /// (the new rule goes right before rule H), `Place::End` leaves the message as rustables wrote it
    /// (`NLM_F_APPEND`, no position: at the chain's end). Only the last messages can be rewritten.
    fn place_rules(&mut self, from: usize, places: &[Place]) {
        debug_assert_eq!(self.objs.len(), from + places.len());
        let start = self.offsets[from];
        let tail = self.out.split_off(start);
        for (k, place) in places.iter().enumerate() {
            let off = self.offsets[from + k] - start;
            let len = u32::from_ne_bytes(tail[off..off + 4].try_into().expect("4 bytes")) as usize;
            let at = self.out.len();
            self.offsets[from + k] = at;
            self.out.extend_from_slice(&tail[off..off + len]);
            self.out.resize(nl::align4(self.out.len()), 0);
            if let Place::Before(handle) = place {
                let flags =
                    u16::from_ne_bytes([self.out[at + 6], self.out[at + 7]]) & !nl::NLM_F_APPEND;
                self.out[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
                let mut w = Writer { buf: &mut self.out };
                w.attr(nl::NFTA_RULE_POSITION, &handle.to_be_bytes());
                w.end_msg(at);
            }
        }
    }

    pub(super) fn finish(mut self) -> EncodedBatch {
        // Only the last real message asks for an ACK: its answer (ACK or error) ends the exchange.
        let last = *self.offsets.last().expect("a batch has messages");
        let flags = u16::from_ne_bytes([self.out[last + 6], self.out[last + 7]]) | nl::NLM_F_ACK;
        self.out[last + 6..last + 8].copy_from_slice(&flags.to_ne_bytes());
        self.delimiter(nl::NFNL_MSG_BATCH_END, Obj::BatchEnd);
        EncodedBatch {
            bytes: self.out,
            objs: self.objs,
            offsets: self.offsets,
        }
    }
}

#[cfg(test)] // the rustables encoding, the oracle of the direct one
/// The expressions rustables cannot build, in rule order, as complete `NFTA_LIST_ELEM` attributes.
#[derive(Default)]
struct RawExprs {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    next: usize,
}

#[cfg(test)] // the rustables encoding, the oracle of the direct one
impl RawExprs {
    fn push(&mut self, op: &Op<'_>, set_ids: &HashMap<&str, u32>) {
        let mut w = Writer {
            buf: &mut self.bytes,
        };
        write_raw(&mut w, op, set_ids);
        self.ends.push(self.bytes.len());
    }

    fn next(&mut self) -> &[u8] {
        let start = if self.next == 0 {
            0
        } else {
            self.ends[self.next - 1]
        };
        let end = self.ends[self.next];
        self.next += 1;
        &self.bytes[start..end]
    }
}

/// One of the expressions rustables cannot build, as a complete `NFTA_LIST_ELEM` attribute.
fn write_raw(w: &mut Writer<'_>, op: &Op<'_>, set_ids: &HashMap<&str, u32>) {
    let elem = w.begin_nest(nl::NFTA_LIST_ELEM);
    match op {
        Op::Lookup { set, inv, vmap } => {
            debug_assert!(*inv && !*vmap);
            w.strz(nl::NFTA_EXPR_NAME, "lookup");
            let d = w.begin_nest(nl::NFTA_EXPR_DATA);
            w.u32_be(nl::NFTA_LOOKUP_SREG, nl::NFT_REG_1);
            w.strz(nl::NFTA_LOOKUP_SET, set);
            if let Some(id) = set_ids.get(set) {
                w.u32_be(nl::NFTA_LOOKUP_SET_ID, *id);
            }
            w.u32_be(nl::NFTA_LOOKUP_FLAGS, nl::NFT_LOOKUP_F_INV);
            w.end_nest(d);
        }
        Op::Ct(CtKey::Status) => {
            w.strz(nl::NFTA_EXPR_NAME, "ct");
            let d = w.begin_nest(nl::NFTA_EXPR_DATA);
            w.u32_be(nl::NFTA_CT_KEY, nl::NFT_CT_STATUS);
            w.u32_be(nl::NFTA_CT_DREG, nl::NFT_REG_1);
            w.end_nest(d);
        }
        Op::NfLog { group, prefix } => {
            w.strz(nl::NFTA_EXPR_NAME, "log");
            let d = w.begin_nest(nl::NFTA_EXPR_DATA);
            w.strz(nl::NFTA_LOG_PREFIX, prefix);
            w.attr(nl::NFTA_LOG_GROUP, &group.to_be_bytes());
            w.end_nest(d);
        }
        Op::Limit { rate, burst } => {
            w.strz(nl::NFTA_EXPR_NAME, "limit");
            let d = w.begin_nest(nl::NFTA_EXPR_DATA);
            w.attr(nl::NFTA_LIMIT_RATE, &u64::from(*rate).to_be_bytes());
            w.attr(nl::NFTA_LIMIT_UNIT, &1u64.to_be_bytes());
            w.u32_be(nl::NFTA_LIMIT_BURST, *burst);
            w.u32_be(nl::NFTA_LIMIT_TYPE, nl::NFT_LIMIT_PKTS);
            w.u32_be(nl::NFTA_LIMIT_FLAGS, 0);
            w.end_nest(d);
        }
        Op::Log { prefix } => {
            w.strz(nl::NFTA_EXPR_NAME, "log");
            let d = w.begin_nest(nl::NFTA_EXPR_DATA);
            if !prefix.is_empty() {
                w.strz(nl::NFTA_LOG_PREFIX, prefix);
            }
            w.u32_be(nl::NFTA_LOG_LEVEL, LOG_LEVEL_INFO);
            w.end_nest(d);
        }
        Op::Range { neq, from, to } => {
            w.strz(nl::NFTA_EXPR_NAME, "range");
            let d = w.begin_nest(nl::NFTA_EXPR_DATA);
            w.u32_be(nl::NFTA_RANGE_SREG, nl::NFT_REG_1);
            w.u32_be(
                nl::NFTA_RANGE_OP,
                if *neq {
                    nl::NFT_RANGE_NEQ
                } else {
                    nl::NFT_RANGE_EQ
                },
            );
            w.data_value(nl::NFTA_RANGE_FROM_DATA, from.as_slice());
            w.data_value(nl::NFTA_RANGE_TO_DATA, to.as_slice());
            w.end_nest(d);
        }
        _ => unreachable!("not a raw expression: {op:?}"),
    }
    w.end_nest(elem);
}

fn is_raw(op: &Op<'_>) -> bool {
    matches!(
        op,
        Op::Lookup { inv: true, .. }
            | Op::Ct(CtKey::Status)
            | Op::Log { .. }
            | Op::NfLog { .. }
            | Op::Limit { .. }
            | Op::Range { .. }
    )
}

#[cfg(test)] // the rustables encoding, the oracle of the direct one
/// One op as a rustables expression (raw ones become placeholders).
fn rs_expr(op: &Op<'_>, set_ids: &HashMap<&str, u32>) -> RawExpression {
    match op {
        Op::Meta(k) => Meta::new(meta_type(*k)).into(),
        Op::MetaSetMark => Meta::default()
            .with_key(MetaType::Mark)
            .with_sreg(Register::Reg1)
            .into(),
        Op::Cmp { neq, data } => Cmp::new(
            if *neq { CmpOp::Neq } else { CmpOp::Eq },
            data.as_slice().to_vec(),
        )
        .into(),
        Op::Gte(data) | Op::Lte(data) => Cmp::new(
            if matches!(op, Op::Gte(_)) {
                CmpOp::Gte
            } else {
                CmpOp::Lte
            },
            data.as_slice().to_vec(),
        )
        .into(),
        Op::Mask(mask) => Bitwise::new(mask.as_slice(), vec![0u8; mask.as_slice().len()])
            .expect("mask and xor have the same length")
            .into(),
        Op::Bitwise { mask, xor } => {
            Bitwise::new(mask.to_ne_bytes().to_vec(), xor.to_ne_bytes().to_vec())
                .expect("mask and xor have the same length")
                .into()
        }
        Op::Payload { base, offset, len } => Payload::default()
            .with_dreg(Register::Reg1)
            .with_base(match base {
                Base::Network => 1u32,
                Base::Transport => 2u32,
            })
            .with_offset(*offset as u32)
            .with_len(*len as u32)
            .into(),
        Op::Lookup {
            set,
            inv: false,
            vmap,
        } => {
            let mut l = Lookup::default().with_set(*set).with_sreg(Register::Reg1);
            if *vmap {
                l.set_dreg(Register::Verdict);
            }
            if let Some(id) = set_ids.get(set) {
                l.set_set_id(*id);
            }
            l.into()
        }
        Op::Ct(CtKey::State) => Conntrack::new(ConntrackKey::State).into(),
        Op::Counter => Counter::default().into(),
        Op::Notrack => RawExpression::default().with_name("notrack"),
        // nft's `reject` in an inet table: icmpx port unreachable (TCP too, as Felix's REJECT).
        Op::Reject => Reject::default()
            .with_type(RejectType::IcmpxUnreach)
            .with_icmp_code(rustables::expr::IcmpCode::PortUnreach)
            .into(),
        Op::Imm(v) => Immediate::new_verdict(match v {
            Imm::Accept => VerdictKind::Accept,
            Imm::Drop => VerdictKind::Drop,
            Imm::Return => VerdictKind::Return,
            Imm::Jump(c) => VerdictKind::Jump {
                chain: c.to_string(),
            },
            Imm::Goto(c) => VerdictKind::Goto {
                chain: c.to_string(),
            },
        })
        .into(),
        _ => RawExpression::default().with_name(PLACEHOLDER),
    }
}

#[cfg(test)] // the rustables encoding, the oracle of the direct one
fn meta_type(k: MetaKey) -> MetaType {
    match k {
        MetaKey::NfProto => MetaType::NfProto,
        MetaKey::L4Proto => MetaType::L4Proto,
        MetaKey::IifName => MetaType::IifName,
        MetaKey::OifName => MetaType::OifName,
        MetaKey::Mark => MetaType::Mark,
    }
}

fn hook_class(h: Hook) -> HookClass {
    match h {
        Hook::Prerouting => HookClass::PreRouting,
        Hook::Input => HookClass::In,
        Hook::Forward => HookClass::Forward,
        Hook::Output => HookClass::Out,
        Hook::Postrouting => HookClass::PostRouting,
    }
}

fn rs_table(name: &str) -> RsTable {
    RsTable::new(ProtocolFamily::Inet).with_name(name)
}

fn rs_chain(table: &RsTable, chain: &Chain) -> RsChain {
    let mut c = RsChain::new(table).with_name(chain.name.as_str());
    if let Some(base) = chain.base {
        c = c
            .with_hook(RsHook::new(hook_class(base.hook), base.priority))
            .with_policy(ChainPolicy::Accept)
            .with_type(ChainType::Filter);
    }
    c
}

/// The whole table in ONE transaction: add table, delete table, create it again (with the static comment
/// [`TABLE_COMMENT`]), its chains, sets and elements, maps and elements, rules, and last the
/// [`HASH_CHAIN`] chain carrying `rs.comment`. Used to take over a table that is not ours (see
/// `plan.rs`), where it replaces the table atomically.
pub(crate) fn encode_apply(rs: &Ruleset) -> Result<EncodedBatch, DataplaneError> {
    let set_ids = set_ids(
        rs.sets
            .iter()
            .map(|s| &s.name)
            .chain(rs.maps.iter().map(|m| &m.name)),
    );

    let mut rb = Batch::new();
    let table = rs_table(&rs.table);
    rb.add(&table, MsgType::Add);
    rb.add(&table, MsgType::Del);
    let mut created = rs_table(&rs.table).with_flags(0u32);
    created.set_userdata(nl::udata_comment(TABLE_COMMENT));
    rb.add(&created, MsgType::Add);
    let rbytes = rb.finalize();

    // nft's order: table, chains, sets, maps, rules.
    let mut asm = Assembler::new(rbytes.len() + estimate_sets(rs) + rs.rule_count() * 160);
    let mut msgs = nl::messages(&rbytes).skip(1); // rustables' BATCH_BEGIN
    let mut next = || msgs.next().expect("rustables wrote every message");
    asm.copy(&next(), Obj::TableEnsure);
    asm.copy(&next(), Obj::TableDelete);
    asm.copy(&next(), Obj::TableCreate);
    let all: Vec<usize> = (0..rs.chains.len()).collect();
    add_chains(&mut asm, rs, &all);
    for (i, set) in rs.sets.iter().enumerate() {
        encode_set(&mut asm, &rs.table, i, set, set_ids[set.name.as_str()]);
    }
    for (i, map) in rs.maps.iter().enumerate() {
        encode_map(&mut asm, &rs.table, i, map, set_ids[map.name.as_str()]);
    }
    add_rules(&mut asm, rs, &all, &set_ids)?;
    add_hash_chain(&mut asm, &rs.table, &rs.comment);
    Ok(asm.finish())
}

/// NFTA_SET_ID numbers (from 1) for sets and maps created in one batch, by name.
pub(super) fn set_ids<'a>(names: impl Iterator<Item = &'a String>) -> HashMap<&'a str, u32> {
    names
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32 + 1))
        .collect()
}

/// NEWCHAIN messages (rustables' encoding) for chains `which` of `rs`, tagged [`Obj::Chain`].
pub(super) fn add_chains(asm: &mut Assembler, rs: &Ruleset, which: &[usize]) {
    if which.is_empty() {
        return;
    }
    let table = rs_table(&rs.table);
    let mut rb = Batch::new();
    for &i in which {
        rb.add(&rs_chain(&table, &rs.chains[i]), MsgType::Add);
    }
    let rbytes = rb.finalize();
    for (m, &i) in nl::messages(&rbytes).skip(1).zip(which) {
        asm.copy(&m, Obj::Chain(i));
    }
}

/// Whether [`add_rules`] may encode on two threads ([`encode_on_two_threads`]).
static TWO_THREADS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets [`add_rules`] encode the second half of a big transaction's rules on a second thread while
/// this one encodes the first (on the core the commit's wait leaves idle otherwise). The second half
/// is held until the first is in the transaction: a copy of half its rules, which a one-shot command
/// can spare and the daemon, whose peak memory counts, does not ask for.
pub fn encode_on_two_threads(on: bool) {
    TWO_THREADS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Below this many rules one thread encodes them all.
const TWO_THREADS_FROM: usize = 4096;

/// NEWRULE messages for every rule of chains `which` of `rs`, in order, tagged [`Obj::Rule`].
/// `set_ids`: the sets and maps created in the same batch (a lookup of one of them carries its id).
pub(super) fn add_rules(
    asm: &mut Assembler,
    rs: &Ruleset,
    which: &[usize],
    set_ids: &HashMap<&str, u32>,
) -> Result<(), DataplaneError> {
    let total = which
        .iter()
        .map(|&c| rs.chains[c].rules.len())
        .sum::<usize>();
    let two = TWO_THREADS.load(std::sync::atomic::Ordering::Relaxed)
        && total >= TWO_THREADS_FROM
        && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    // The rules as (chain, rules) ranges, cut where half the rules are (inside a chain if need be: a
    // HostEndpoint chain may hold most of them).
    let half = if two { total / 2 } else { total };
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut before = 0;
    for &c in which {
        let n = rs.chains[c].rules.len();
        let cut = half.saturating_sub(before).min(n);
        if cut > 0 || n == 0 {
            first.push((c, 0..cut));
        }
        if cut < n {
            second.push((c, cut..n));
        }
        before += n;
    }
    asm.out.reserve(total * 160);
    let seq = asm.seq();
    if second.is_empty() {
        encode_rules_into(asm, rs, &first, set_ids, seq);
        return Ok(());
    }
    let n_first = (total / 2) as u32;
    std::thread::scope(|s| {
        let later = s.spawn(|| {
            let (mut out, mut objs, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
            out.reserve((total - total / 2) * 160);
            encode_rules(
                rs,
                &second,
                set_ids,
                seq + n_first,
                &mut out,
                &mut objs,
                &mut offsets,
            );
            (out, objs, offsets)
        });
        encode_rules_into(asm, rs, &first, set_ids, seq);
        let (out, objs, offsets) = later
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let base = asm.out.len();
        asm.out.extend_from_slice(&out);
        asm.objs.extend(objs);
        asm.offsets.extend(offsets.into_iter().map(|o| o + base));
    });
    Ok(())
}

/// [`encode_rules`] straight into the transaction `asm` (its offsets made relative to the whole
/// transaction), the rules' sequence numbers from `seq`.
fn encode_rules_into(
    asm: &mut Assembler,
    rs: &Ruleset,
    which: &[(usize, std::ops::Range<usize>)],
    set_ids: &HashMap<&str, u32>,
    seq: u32,
) {
    let base = asm.out.len();
    let start = asm.offsets.len();
    encode_rules(
        rs,
        which,
        set_ids,
        seq,
        &mut asm.out,
        &mut asm.objs,
        &mut asm.offsets,
    );
    for o in &mut asm.offsets[start..] {
        *o += base;
    }
}

/// Creates rules of `rs` at given places in kept chains (edits by handle, `plan::ChainEdit`): per
/// chain, its IR index and the (IR rule index, place) of each rule inserted. Tagged [`Obj::Rule`] like
/// every rule, so that a rejection names the IR rule.
pub(super) fn add_placed_rules(
    asm: &mut Assembler,
    rs: &Ruleset,
    inserts: &[(usize, &[(usize, Place)])],
    set_ids: &HashMap<&str, u32>,
) -> Result<(), DataplaneError> {
    let mut ops = Vec::new();
    for &(ci, rules) in inserts {
        if rules.is_empty() {
            continue;
        }
        let chain = &rs.chains[ci];
        let from = asm.objs.len();
        for &(i, _) in rules {
            let rule = &chain.rules[i];
            ops.clear();
            lower::lower_rule(rule, &mut ops);
            let seq = asm.seq();
            asm.offsets.push(asm.out.len());
            asm.objs.push(Obj::Rule { chain: ci, rule: i });
            let comment = rule.comment.as_deref();
            write_rule(
                &mut asm.out,
                seq,
                &rs.table,
                &chain.name,
                &ops,
                comment,
                set_ids,
            );
        }
        let places: Vec<_> = rules.iter().map(|&(_, p)| p).collect();
        asm.place_rules(from, &places);
    }
    Ok(())
}

/// Encodes the rules of chains `which` in order straight into `out` (NEWRULE messages, sequence
/// numbers from `first_seq`), recording each message's object and offset (relative to the start of
/// `out`). The bytes are those rustables would write for the same rule (the test
/// `direct_rule_encoding_is_rustables_encoding` holds the two equal), written without building its
/// expression objects and copying them twice (~45 ms of `hostpolicyd apply` at 30,000 rules).
fn encode_rules(
    rs: &Ruleset,
    which: &[(usize, std::ops::Range<usize>)],
    set_ids: &HashMap<&str, u32>,
    first_seq: u32,
    out: &mut Vec<u8>,
    objs: &mut Vec<Obj>,
    offsets: &mut Vec<usize>,
) {
    let mut ops = Vec::new();
    let base = out.len();
    let mut seq = first_seq;
    for (ci, range) in which {
        let chain = &rs.chains[*ci];
        for i in range.clone() {
            let rule = &chain.rules[i];
            ops.clear();
            lower::lower_rule(rule, &mut ops);
            offsets.push(out.len() - base);
            objs.push(Obj::Rule {
                chain: *ci,
                rule: i,
            });
            write_rule(
                out,
                seq,
                &rs.table,
                &chain.name,
                &ops,
                rule.comment.as_deref(),
                set_ids,
            );
            seq += 1;
        }
    }
}

/// One NEWRULE message (append, no ACK requested) for a rule of `ops` in `chain` of `table`.
fn write_rule(
    out: &mut Vec<u8>,
    seq: u32,
    table: &str,
    chain: &str,
    ops: &[Op<'_>],
    comment: Option<&str>,
    set_ids: &HashMap<&str, u32>,
) {
    let mut w = Writer { buf: out };
    let m = w.begin_msg(
        nl::nft_type(nl::NFT_MSG_NEWRULE),
        nl::NLM_F_CREATE | rs_sys::NLM_F_APPEND as u16,
        seq,
        nl::NFPROTO_INET,
        0,
    );
    w.attr(nl::NFTA_RULE_TABLE, table.as_bytes());
    w.attr(nl::NFTA_RULE_CHAIN, chain.as_bytes());
    if !ops.is_empty() {
        let list = w.begin_nest(nl::NFTA_RULE_EXPRESSIONS);
        for op in ops {
            write_expr(&mut w, op, set_ids);
        }
        w.end_nest(list);
    }
    if let Some(c) = comment {
        let c = clean_comment(c);
        // libnftnl's comment TLV (nl::udata_comment), written in place.
        let n = NLA_HDRLEN + 2 + c.len() + 1;
        w.buf.extend_from_slice(&(n as u16).to_ne_bytes());
        w.buf
            .extend_from_slice(&nl::NFTA_RULE_USERDATA.to_ne_bytes());
        w.buf.push(nl::NFTNL_UDATA_COMMENT);
        w.buf.push((c.len() + 1) as u8);
        w.buf.extend_from_slice(c.as_bytes());
        w.buf.push(0);
        w.buf.resize(nl::align4(w.buf.len()), 0);
    }
    w.end_msg(m);
}

const NLA_HDRLEN: usize = 4;

/// An attribute of rustables' kinds: a u32 in network order.
fn be32(w: &mut Writer<'_>, ty: u16, v: u32) {
    w.u32_be(ty, v);
}

/// One expression as an `NFTA_LIST_ELEM` nest: as rustables writes it, or ours ([`write_raw`]).
fn write_expr(w: &mut Writer<'_>, op: &Op<'_>, set_ids: &HashMap<&str, u32>) {
    if is_raw(op) {
        write_raw(w, op, set_ids);
        return;
    }
    let elem = w.begin_nest(nl::NFTA_LIST_ELEM);
    let named = |w: &mut Writer<'_>, name: &str| {
        w.attr(nl::NFTA_EXPR_NAME, name.as_bytes());
        w.begin_nest(nl::NFTA_EXPR_DATA)
    };
    let reg1 = rs_sys::NFT_REG_1;
    match op {
        Op::Meta(k) => {
            let d = named(w, "meta");
            be32(w, rs_sys::NFTA_META_DREG, reg1);
            be32(w, rs_sys::NFTA_META_KEY, meta_key(*k));
            w.end_nest(d);
        }
        Op::MetaSetMark => {
            let d = named(w, "meta");
            be32(w, rs_sys::NFTA_META_KEY, rs_sys::NFT_META_MARK);
            be32(w, rs_sys::NFTA_META_SREG, reg1);
            w.end_nest(d);
        }
        Op::Cmp { neq, data } => {
            let op = if *neq {
                rs_sys::NFT_CMP_NEQ
            } else {
                rs_sys::NFT_CMP_EQ
            };
            write_cmp(w, op, data.as_slice());
        }
        Op::Gte(data) => write_cmp(w, rs_sys::NFT_CMP_GTE, data.as_slice()),
        Op::Lte(data) => write_cmp(w, rs_sys::NFT_CMP_LTE, data.as_slice()),
        Op::Mask(mask) => {
            let zero = [0u8; 16];
            write_bitwise(w, mask.as_slice(), &zero[..mask.as_slice().len()]);
        }
        Op::Bitwise { mask, xor } => write_bitwise(w, &mask.to_ne_bytes(), &xor.to_ne_bytes()),
        Op::Payload { base, offset, len } => {
            let d = named(w, "payload");
            be32(w, rs_sys::NFTA_PAYLOAD_DREG, reg1);
            be32(
                w,
                rs_sys::NFTA_PAYLOAD_BASE,
                match base {
                    Base::Network => 1,
                    Base::Transport => 2,
                },
            );
            be32(w, rs_sys::NFTA_PAYLOAD_OFFSET, u32::from(*offset));
            be32(w, rs_sys::NFTA_PAYLOAD_LEN, u32::from(*len));
            w.end_nest(d);
        }
        Op::Lookup { set, vmap, .. } => {
            let d = named(w, "lookup");
            w.attr(rs_sys::NFTA_LOOKUP_SET, set.as_bytes());
            be32(w, rs_sys::NFTA_LOOKUP_SREG, reg1);
            if *vmap {
                be32(w, rs_sys::NFTA_LOOKUP_DREG, rs_sys::NFT_REG_VERDICT);
            }
            if let Some(id) = set_ids.get(set) {
                be32(w, rs_sys::NFTA_LOOKUP_SET_ID, *id);
            }
            w.end_nest(d);
        }
        Op::Ct(_) => {
            // CtKey::Status is raw; this is the state.
            let d = named(w, "ct");
            be32(w, rs_sys::NFTA_CT_DREG, reg1);
            be32(w, rs_sys::NFTA_CT_KEY, rs_sys::NFT_CT_STATE);
            w.end_nest(d);
        }
        Op::Counter => {
            let d = named(w, "counter");
            w.end_nest(d);
        }
        Op::Notrack => w.attr(nl::NFTA_EXPR_NAME, b"notrack"),
        Op::Reject => {
            let d = named(w, "reject");
            be32(
                w,
                rs_sys::NFTA_REJECT_TYPE,
                rs_sys::NFT_REJECT_ICMPX_UNREACH,
            );
            w.attr(
                rs_sys::NFTA_REJECT_ICMP_CODE,
                &[rs_sys::NFT_REJECT_ICMPX_PORT_UNREACH as u8],
            );
            w.end_nest(d);
        }
        Op::Imm(v) => {
            let d = named(w, "immediate");
            be32(w, rs_sys::NFTA_IMMEDIATE_DREG, rs_sys::NFT_REG_VERDICT);
            let data = w.begin_nest(nl::NFTA_IMMEDIATE_DATA);
            let verdict = w.begin_nest(nl::NFTA_DATA_VERDICT);
            let (code, chain) = match v {
                Imm::Accept => (nl::NF_ACCEPT as i32, None),
                Imm::Drop => (nl::NF_DROP as i32, None),
                Imm::Return => (nl::NFT_RETURN, None),
                Imm::Jump(c) => (nl::NFT_JUMP, Some(*c)),
                Imm::Goto(c) => (nl::NFT_GOTO, Some(*c)),
            };
            w.attr(nl::NFTA_VERDICT_CODE, &code.to_be_bytes());
            if let Some(c) = chain {
                w.attr(nl::NFTA_VERDICT_CHAIN, c.as_bytes());
            }
            w.end_nest(verdict);
            w.end_nest(data);
            w.end_nest(d);
        }
        _ => unreachable!("a raw expression: {op:?}"),
    }
    w.end_nest(elem);
}

fn write_cmp(w: &mut Writer<'_>, op: u32, data: &[u8]) {
    w.attr(nl::NFTA_EXPR_NAME, b"cmp");
    let d = w.begin_nest(nl::NFTA_EXPR_DATA);
    be32(w, rs_sys::NFTA_CMP_SREG, rs_sys::NFT_REG_1);
    be32(w, rs_sys::NFTA_CMP_OP, op);
    w.data_value(rs_sys::NFTA_CMP_DATA, data);
    w.end_nest(d);
}

fn write_bitwise(w: &mut Writer<'_>, mask: &[u8], xor: &[u8]) {
    w.attr(nl::NFTA_EXPR_NAME, b"bitwise");
    let d = w.begin_nest(nl::NFTA_EXPR_DATA);
    let reg1 = rs_sys::NFT_REG_1;
    be32(w, rs_sys::NFTA_BITWISE_SREG, reg1);
    be32(w, rs_sys::NFTA_BITWISE_DREG, reg1);
    be32(w, rs_sys::NFTA_BITWISE_LEN, mask.len() as u32);
    w.data_value(rs_sys::NFTA_BITWISE_MASK, mask);
    w.data_value(rs_sys::NFTA_BITWISE_XOR, xor);
    w.end_nest(d);
}

fn meta_key(k: MetaKey) -> u32 {
    match k {
        MetaKey::NfProto => rs_sys::NFT_META_NFPROTO,
        MetaKey::L4Proto => rs_sys::NFT_META_L4PROTO,
        MetaKey::IifName => rs_sys::NFT_META_IIFNAME,
        MetaKey::OifName => rs_sys::NFT_META_OIFNAME,
        MetaKey::Mark => rs_sys::NFT_META_MARK,
    }
}

/// Creates the [`HASH_CHAIN`] chain (it must not exist) with `comment` (cleaned) as its comment, tagged
/// [`Obj::HashChain`].
pub(super) fn add_hash_chain(asm: &mut Assembler, table: &str, comment: &str) {
    let comment = clean_comment(comment);
    let udata = if comment.is_empty() {
        Vec::new()
    } else {
        nl::udata_comment(&comment)
    };
    add_hash_chain_comment(asm, table, &udata);
}

/// Creates the [`HASH_CHAIN`] chain with userdata `udata` (none when empty), tagged [`Obj::HashChain`].
pub(super) fn add_hash_chain_comment(asm: &mut Assembler, table: &str, udata: &[u8]) {
    let m = asm.begin_with(nl::NFT_MSG_NEWCHAIN, nl::NLM_F_CREATE, Obj::HashChain);
    let mut w = Writer { buf: &mut asm.out };
    w.strz(nl::NFTA_CHAIN_TABLE, table);
    w.strz(nl::NFTA_CHAIN_NAME, HASH_CHAIN);
    if !udata.is_empty() {
        w.attr(nl::NFTA_CHAIN_USERDATA, udata);
    }
    w.end_msg(m);
}

fn estimate_sets(rs: &Ruleset) -> usize {
    let elems: usize = rs.sets.iter().map(|s| s.elements.len()).sum();
    let maps: usize = rs.maps.iter().map(|m| m.elements.len()).sum();
    elems * 2 * 48 + maps * 96 + (rs.sets.len() + rs.maps.len()) * 256 + 64
}

pub(crate) fn encode_flush(table: &str) -> EncodedBatch {
    let mut rb = Batch::new();
    let t = rs_table(table);
    rb.add(&t, MsgType::Add);
    rb.add(&t, MsgType::Del);
    let rbytes = rb.finalize();
    let mut asm = Assembler::new(rbytes.len() + 64);
    let mut msgs = nl::messages(&rbytes).skip(1);
    asm.copy(&msgs.next().expect("add table"), Obj::TableEnsure);
    asm.copy(&msgs.next().expect("delete table"), Obj::TableDelete);
    asm.finish()
}

/// The incremental update of `delta` (made from some previous ruleset to `next`): per changed set, its
/// element deletions then additions (see `delta.rs`), and the new content hash as the comment of the
/// [`HASH_CHAIN`] chain (a table's comment cannot change, so the chain is ensured, deleted and created
/// again with `next`'s comment: `add chain`, `delete chain`, `add chain { comment }`). ONE transaction.
/// `names`: the kernel name of each set of `next` (a set may live under a version of its name, see
/// `plan.rs`).
pub(crate) fn encode_delta(next: &Ruleset, delta: &SetDelta, names: &[String]) -> EncodedBatch {
    let elems: usize = delta
        .sets
        .iter()
        .map(|c| c.remove.len() + c.add.len())
        .sum();
    let mut asm = Assembler::new(elems * 48 + delta.sets.len() * 256 + 512);
    for (k, c) in delta.sets.iter().enumerate() {
        let name = names
            .get(c.set)
            .map(String::as_str)
            .unwrap_or(next.sets[c.set].name.as_str());
        let del = ElemList {
            table: &next.table,
            set: name,
            set_id: None,
            msg: nl::NFT_MSG_DELSETELEM,
            flags: 0,
        };
        del.write(&mut asm, c.remove.iter().copied(), |first| Obj::DelElems {
            change: k,
            first,
        });
        let add = ElemList {
            table: &next.table,
            set: name,
            set_id: None,
            msg: nl::NFT_MSG_NEWSETELEM,
            flags: nl::NLM_F_CREATE | nl::NLM_F_EXCL,
        };
        add.write(&mut asm, c.add.iter().copied(), |first| Obj::AddElems {
            change: k,
            first,
        });
    }
    let comment = clean_comment(&next.comment);
    for (msg, flags, udata) in [
        (nl::NFT_MSG_NEWCHAIN, nl::NLM_F_CREATE, false),
        (nl::NFT_MSG_DELCHAIN, 0, false),
        (nl::NFT_MSG_NEWCHAIN, nl::NLM_F_CREATE, !comment.is_empty()),
    ] {
        let m = asm.begin_with(msg, flags, Obj::HashChain);
        let mut w = Writer { buf: &mut asm.out };
        w.strz(nl::NFTA_CHAIN_TABLE, &next.table);
        w.strz(nl::NFTA_CHAIN_NAME, HASH_CHAIN);
        if udata {
            w.attr(nl::NFTA_CHAIN_USERDATA, &nl::udata_comment(&comment));
        }
        w.end_msg(m);
    }
    asm.finish()
}

// ---------------------------------------------------------------------------------------------------
// Sets and maps.

fn set_header(w: &mut Writer<'_>, table: &str, name: &str) {
    w.strz(nl::NFTA_SET_TABLE, table);
    w.strz(nl::NFTA_SET_NAME, name);
}

/// (NFTA_SET_KEY_TYPE, NFTA_SET_KEY_LEN) of a set of type `t`, as nft sends them.
pub(super) fn set_key(t: SetType) -> (u32, u32) {
    match t {
        SetType::Ipv4Addr | SetType::Ipv4Hosts => (7, 4),
        SetType::Ipv6Addr | SetType::Ipv6Hosts => (8, 16),
        SetType::InetService => (13, 2),
    }
}

/// NFTA_SET_FLAGS of a set of type `t`, as nft sends it: `interval` or nothing (a hash set).
pub(super) fn set_flags(t: SetType) -> u32 {
    if t.is_interval() {
        nl::NFT_SET_INTERVAL
    } else {
        0
    }
}

/// NFTA_SET_USERDATA of our sets, as nft sends it: the key's byte order (big endian).
pub(super) fn set_udata() -> Vec<u8> {
    let mut udata = Vec::with_capacity(6);
    nl::udata_tlv(
        &mut udata,
        nl::NFTNL_UDATA_SET_KEYBYTEORDER,
        &nl::BYTEORDER_BIG_ENDIAN.to_ne_bytes(),
    );
    udata
}

pub(super) fn encode_set(asm: &mut Assembler, table: &str, index: usize, set: &Set, id: u32) {
    let (key_type, key_len) = set_key(set.set_type);
    let m = asm.begin(nl::NFT_MSG_NEWSET, Obj::Set(index));
    let mut w = Writer { buf: &mut asm.out };
    set_header(&mut w, table, &set.name);
    w.u32_be(nl::NFTA_SET_FLAGS, set_flags(set.set_type));
    w.u32_be(nl::NFTA_SET_KEY_TYPE, key_type);
    w.u32_be(nl::NFTA_SET_KEY_LEN, key_len);
    w.u32_be(nl::NFTA_SET_ID, id);
    w.attr(nl::NFTA_SET_USERDATA, &set_udata());
    w.end_msg(m);

    let list = ElemList {
        table,
        set: &set.name,
        set_id: Some(id),
        msg: nl::NFT_MSG_NEWSETELEM,
        flags: nl::NLM_F_CREATE,
    };
    list.write(asm, kernel_elems(set), |first| Obj::SetElems {
        set: index,
        first,
    });
}

/// Interval-set elements to add or delete, in messages whose element list stays below 64 KiB.
pub(crate) struct ElemList<'a> {
    pub(crate) table: &'a str,
    pub(crate) set: &'a str,
    /// The set's NFTA_SET_ID when it is created in the same batch.
    pub(crate) set_id: Option<u32>,
    /// NFT_MSG_NEWSETELEM or NFT_MSG_DELSETELEM.
    pub(crate) msg: u16,
    pub(crate) flags: u16,
}

impl ElemList<'_> {
    /// Writes `elems` (as nft encodes them, for adding and deleting alike: an end element is its flags
    /// then its key; a start element its key, then the open-interval userdata if the range reaches the
    /// top); `obj(first)` tags the message starting with element `first`.
    pub(super) fn write(
        &self,
        asm: &mut Assembler,
        elems: impl IntoIterator<Item = Elem>,
        obj: impl Fn(usize) -> Obj,
    ) {
        let mut chunk: Option<(usize, usize)> = None; // (message start, list nest start)
        let mut open_udata = Vec::with_capacity(6);
        nl::udata_tlv(
            &mut open_udata,
            nl::NFTNL_UDATA_SET_ELEM_FLAGS,
            &nl::NFTNL_SET_ELEM_F_INTERVAL_OPEN.to_ne_bytes(),
        );
        for (n, e) in elems.into_iter().enumerate() {
            if let Some((m, l)) = chunk {
                if asm.out.len() - l > ELEM_LIST_MAX {
                    let mut w = Writer { buf: &mut asm.out };
                    w.end_nest(l);
                    w.end_msg(m);
                    chunk = None;
                }
            }
            if chunk.is_none() {
                let m = asm.begin_with(self.msg, self.flags, obj(n));
                let mut w = Writer { buf: &mut asm.out };
                w.strz(nl::NFTA_SET_ELEM_LIST_TABLE, self.table);
                w.strz(nl::NFTA_SET_ELEM_LIST_SET, self.set);
                if let Some(id) = self.set_id {
                    w.u32_be(nl::NFTA_SET_ELEM_LIST_SET_ID, id);
                }
                chunk = Some((m, w.begin_nest(nl::NFTA_SET_ELEM_LIST_ELEMENTS)));
            }
            let mut w = Writer { buf: &mut asm.out };
            let el = w.begin_nest(nl::NFTA_LIST_ELEM);
            if e.end {
                w.u32_be(nl::NFTA_SET_ELEM_FLAGS, nl::NFT_SET_ELEM_INTERVAL_END);
            }
            w.data_value(nl::NFTA_SET_ELEM_KEY, &e.key[..e.len as usize]);
            if e.open {
                w.attr(nl::NFTA_SET_ELEM_USERDATA, &open_udata);
            }
            w.end_nest(el);
        }
        if let Some((m, l)) = chunk {
            let mut w = Writer { buf: &mut asm.out };
            w.end_nest(l);
            w.end_msg(m);
        }
    }
}

fn verdict_code(v: &Verdict) -> (i32, Option<&str>) {
    match v {
        Verdict::Accept => (libc::NF_ACCEPT, None),
        Verdict::Drop => (libc::NF_DROP, None),
        Verdict::Return => (-5, None), // NFT_RETURN
        Verdict::Jump(c) => (nl::NFT_JUMP, Some(c)),
        Verdict::Goto(c) => (nl::NFT_GOTO, Some(c)),
        Verdict::Vmap { .. } => unreachable!("validated: no vmap inside a map"),
        Verdict::Reject => unreachable!("validated: no reject inside a map"),
    }
}

/// Estimated bytes of one verdict-map element (chain names up to 255 bytes).
fn map_elem_size(chain: Option<&str>) -> usize {
    4 + 24 + 4 + 4 + 8 + chain.map_or(0, |c| nl::align4(c.len() + 1) + 4)
}

pub(super) fn encode_map(
    asm: &mut Assembler,
    table: &str,
    index: usize,
    map: &VerdictMap,
    id: u32,
) {
    let m = asm.begin(nl::NFT_MSG_NEWSET, Obj::Map(index));
    let mut w = Writer { buf: &mut asm.out };
    set_header(&mut w, table, &map.name);
    w.u32_be(nl::NFTA_SET_FLAGS, nl::NFT_SET_MAP);
    w.u32_be(nl::NFTA_SET_KEY_TYPE, 41); // ifname
    w.u32_be(nl::NFTA_SET_KEY_LEN, 16);
    w.u32_be(nl::NFTA_SET_DATA_TYPE, nl::NFT_DATA_VERDICT);
    w.u32_be(nl::NFTA_SET_DATA_LEN, 0);
    w.u32_be(nl::NFTA_SET_ID, id);
    let mut udata = Vec::with_capacity(12);
    nl::udata_tlv(
        &mut udata,
        nl::NFTNL_UDATA_SET_KEYBYTEORDER,
        &nl::BYTEORDER_HOST_ENDIAN.to_ne_bytes(),
    );
    nl::udata_tlv(
        &mut udata,
        nl::NFTNL_UDATA_SET_DATABYTEORDER,
        &0u32.to_ne_bytes(),
    );
    w.attr(nl::NFTA_SET_USERDATA, &udata);
    w.end_msg(m);

    let mut chunk: Option<(usize, usize)> = None;
    for (n, (ifname, verdict)) in map.elements.iter().enumerate() {
        let (code, chain) = verdict_code(verdict);
        if let Some((m, l)) = chunk {
            if asm.out.len() - l + map_elem_size(chain) > ELEM_LIST_MAX {
                let mut w = Writer { buf: &mut asm.out };
                w.end_nest(l);
                w.end_msg(m);
                chunk = None;
            }
        }
        if chunk.is_none() {
            let m = asm.begin(
                nl::NFT_MSG_NEWSETELEM,
                Obj::MapElems {
                    map: index,
                    first: n,
                },
            );
            let mut w = Writer { buf: &mut asm.out };
            w.strz(nl::NFTA_SET_ELEM_LIST_TABLE, table);
            w.strz(nl::NFTA_SET_ELEM_LIST_SET, &map.name);
            w.u32_be(nl::NFTA_SET_ELEM_LIST_SET_ID, id);
            chunk = Some((m, w.begin_nest(nl::NFTA_SET_ELEM_LIST_ELEMENTS)));
        }
        let mut w = Writer { buf: &mut asm.out };
        let el = w.begin_nest(nl::NFTA_LIST_ELEM);
        let mut key = [0u8; 16];
        let k = ifname.len().min(16);
        key[..k].copy_from_slice(&ifname.as_bytes()[..k]);
        w.data_value(nl::NFTA_SET_ELEM_KEY, &key);
        let data = w.begin_nest(nl::NFTA_SET_ELEM_DATA);
        let v = w.begin_nest(nl::NFTA_DATA_VERDICT);
        w.u32_be(nl::NFTA_VERDICT_CODE, code as u32);
        if let Some(c) = chain {
            w.strz(nl::NFTA_VERDICT_CHAIN, c);
        }
        w.end_nest(v);
        w.end_nest(data);
        w.end_nest(el);
    }
    if let Some((m, l)) = chunk {
        let mut w = Writer { buf: &mut asm.out };
        w.end_nest(l);
        w.end_msg(m);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nft::elems::kernel_elems;
    use crate::ruleset::{BaseHook, Direction, Family, IfDir, Match, Rule, SetElement};

    pub(crate) fn small() -> Ruleset {
        Ruleset {
            table: "hp".into(),
            comment: "hostpolicyd sha256:00".into(),
            sets: vec![Set {
                name: "a4".into(),
                set_type: SetType::Ipv4Addr,
                elements: vec![
                    SetElement::V4("10.0.0.0/8".parse().unwrap()),
                    SetElement::V4("128.0.0.0/1".parse().unwrap()),
                ],
            }],
            maps: vec![VerdictMap {
                name: "m".into(),
                elements: vec![("eth0".into(), Verdict::Goto("c".into()))],
            }],
            chains: vec![
                Chain {
                    name: "in".into(),
                    base: Some(BaseHook {
                        hook: Hook::Input,
                        priority: 0,
                    }),
                    rules: vec![Rule {
                        matches: vec![Match::Addr {
                            dir: Direction::Source,
                            family: Family::Ipv4,
                            set: "a4".into(),
                            negate: true,
                        }],
                        verdict: Some(Verdict::Vmap {
                            key: IfDir::In,
                            map: "m".into(),
                        }),
                        comment: Some("r0".into()),
                        ..Rule::default()
                    }],
                },
                Chain {
                    name: "c".into(),
                    base: None,
                    rules: vec![],
                },
            ]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
            origins: Default::default(),
        }
    }

    /// The rustables path the direct rule encoding replaced (issue 18): rustables' rule objects, one
    /// batch per rule, copied into the transaction with our raw expressions spliced in.
    fn rustables_rules(rs: &Ruleset, set_ids: &HashMap<&str, u32>) -> EncodedBatch {
        let mut asm = Assembler::new(0);
        let table = rs_table(&rs.table);
        for (ci, chain) in rs.chains.iter().enumerate() {
            let rchain = rs_chain(&table, chain);
            for (i, rule) in chain.rules.iter().enumerate() {
                let mut ops = Vec::new();
                lower::lower_rule(rule, &mut ops);
                let mut r = RsRule::new(&rchain).unwrap();
                let mut raw = RawExprs::default();
                let mut any_raw = false;
                for op in &ops {
                    if is_raw(op) {
                        raw.push(op, set_ids);
                        any_raw = true;
                    }
                    r.add_expr(rs_expr(op, set_ids));
                }
                if let Some(c) = &rule.comment {
                    r.set_userdata(nl::udata_comment(&clean_comment(c)));
                }
                let mut b = Batch::new();
                b.add(&r, MsgType::Add);
                let bytes = b.finalize();
                let m = nl::messages(&bytes).nth(1).expect("the rule");
                let obj = Obj::Rule { chain: ci, rule: i };
                if any_raw {
                    asm.copy_spliced(&m, obj, &mut raw);
                } else {
                    asm.copy(&m, obj);
                }
            }
        }
        asm.finish()
    }

    /// Issue 18: the rules written straight into the transaction are, byte for byte, what rustables
    /// wrote for them, for every kind of expression (the repository's configurations, the golden
    /// fixtures, with and without flow records).
    #[test]
    fn direct_rule_encoding_is_rustables_encoding() {
        use crate::resolve::Interface;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        // Port ranges (kept, excluded) and a rejecting deny, which no fixture has.
        let extra = std::env::temp_dir().join(format!("hostpolicyd-direct-{}", std::process::id()));
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(
            extra.join("c.yaml"),
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n\
             spec: {nftablesFilterDenyAction: Reject}\n---\napiVersion: projectcalico.org/v3\n\
             kind: HostEndpoint\nmetadata: {name: h, labels: {a: b}}\n\
             spec: {node: node1, interfaceName: eth0, expectedIPs: [192.0.2.1]}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\n\
             spec:\n  selector: a == 'b'\n  ingress:\n  - {action: Allow, protocol: TCP, \
             destination: {ports: ['1000:2000'], notPorts: ['1500:1600']}}\n  - {action: Deny}\n",
        )
        .unwrap();
        let mut dirs = vec![root.join("etc/hostpolicy.d"), extra.clone()];
        for e in std::fs::read_dir(root.join("tests/golden")).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            }
        }
        let ifaces = vec![
            Interface {
                name: "eth0".into(),
                addrs: vec![],
            },
            Interface {
                name: "eth1".into(),
                addrs: vec![],
            },
        ];
        let mut kinds = std::collections::BTreeSet::new();
        let mut compared = 0;
        for dir in &dirs {
            for flows in [true, false] {
                let f = crate::settings::Flows {
                    enabled: flows,
                    ..Default::default()
                };
                let Ok(c) =
                    crate::pipeline::build_dir_with(dir, "node1", &ifaces, "hostpolicy", &f)
                else {
                    continue;
                };
                let rs = &c.ruleset;
                let ids = set_ids(
                    rs.sets
                        .iter()
                        .map(|s| &s.name)
                        .chain(rs.maps.iter().map(|m| &m.name)),
                );
                for chain in &rs.chains {
                    for rule in &chain.rules {
                        let mut ops = Vec::new();
                        lower::lower_rule(rule, &mut ops);
                        for op in &ops {
                            let d = format!("{op:?}");
                            let k = d.split(['(', ' ', '{']).next().unwrap().to_string();
                            kinds.insert(if k == "Ct" { d } else { k });
                        }
                    }
                }
                let expected = rustables_rules(rs, &ids);
                let all: Vec<usize> = (0..rs.chains.len()).collect();
                for threads in [false, true] {
                    encode_on_two_threads(threads);
                    let mut asm = Assembler::new(0);
                    let r = add_rules(&mut asm, rs, &all, &ids);
                    encode_on_two_threads(false);
                    r.unwrap();
                    let got = asm.finish();
                    assert_eq!(got.objs, expected.objs, "{}", dir.display());
                    assert_eq!(got.offsets, expected.offsets, "{}", dir.display());
                    if got.bytes != expected.bytes {
                        let at = got
                            .bytes
                            .iter()
                            .zip(&expected.bytes)
                            .position(|(a, b)| a != b)
                            .unwrap_or(got.bytes.len().min(expected.bytes.len()));
                        let seq = expected.offsets.iter().rposition(|&o| o <= at).unwrap();
                        panic!(
                            "{}: message {seq} ({:?}) differs at byte {}: got {:02x?}, rustables {:02x?}",
                            dir.display(),
                            expected.objs[seq],
                            at - expected.offsets[seq],
                            &got.bytes[expected.offsets[seq]..(at + 16).min(got.bytes.len())],
                            &expected.bytes[expected.offsets[seq]..(at + 16).min(expected.bytes.len())],
                        );
                    }
                }
                compared += 1;
            }
        }
        std::fs::remove_dir_all(&extra).unwrap();
        assert!(compared >= 20, "only {compared} configurations compiled");
        for k in [
            "Meta",
            "MetaSetMark",
            "Cmp",
            "Gte",
            "Lte",
            "Range",
            "Bitwise",
            "Mask",
            "Payload",
            "Lookup",
            "Ct(State)",
            "Ct(Status)",
            "Counter",
            "Notrack",
            "Reject",
            "Log",
            "NfLog",
            "Limit",
            "Imm",
        ] {
            assert!(
                kinds.contains(k),
                "no {k} expression compared (kinds: {kinds:?})"
            );
        }
    }

    /// Issue 18: rules encoded on two threads make the very transaction one thread makes.
    #[test]
    fn rules_encoded_on_two_threads_are_the_same_transaction() {
        let mut rs = small();
        let rule = rs.chains[0].rules[0].clone();
        for c in 0..30 {
            let name = format!("p{c}");
            let rules = (0..200)
                .map(|i| Rule {
                    comment: Some(format!("{name} rule {i}")),
                    verdict: Some(Verdict::Accept),
                    // Every third rule has an expression rustables cannot build (spliced in).
                    matches: if i % 3 == 0 {
                        rule.matches.clone()
                    } else {
                        vec![]
                    },
                    ..Rule::default()
                })
                .collect();
            rs.chains.push(
                Chain {
                    name,
                    base: None,
                    rules,
                }
                .into(),
            );
        }
        assert!(rs.rule_count() >= TWO_THREADS_FROM);
        let one = encode_apply(&rs).unwrap();
        encode_on_two_threads(true);
        let two = encode_apply(&rs);
        encode_on_two_threads(false);
        let two = two.unwrap();
        assert_eq!(two.objs, one.objs);
        assert_eq!(two.offsets, one.offsets);
        assert!(two.bytes == one.bytes, "the same bytes");
    }

    #[test]
    fn interval_encoding_is_nfts() {
        let keys = |set: &Set| {
            let mut v = Vec::new();
            kernel_elems(set)
                .for_each(|e| v.push((e.key[..e.len as usize].to_vec(), e.end, e.open)));
            v
        };
        // nft: element 00000000 : 1 [end]  0000000a : 0  0000000b : 1 [end]  00000080 : 0 (+ open udata)
        assert_eq!(
            keys(&small().sets[0]),
            vec![
                (vec![0, 0, 0, 0], true, false),
                (vec![10, 0, 0, 0], false, false),
                (vec![11, 0, 0, 0], true, false),
                (vec![128, 0, 0, 0], false, true),
            ]
        );
        let ports = Set {
            name: "p".into(),
            set_type: SetType::InetService,
            elements: vec![SetElement::Ports(0, 22), SetElement::Ports(65535, 65535)],
        };
        assert_eq!(
            keys(&ports),
            vec![
                (vec![0, 0], false, false),
                (vec![0, 23], true, false),
                (vec![255, 255], false, true)
            ]
        );
    }

    #[test]
    fn batch_layout_and_splicing() {
        let rs = small();
        let b = encode_apply(&rs).unwrap();
        assert_eq!(
            b.objs,
            vec![
                Obj::BatchBegin,
                Obj::TableEnsure,
                Obj::TableDelete,
                Obj::TableCreate,
                Obj::Chain(0),
                Obj::Chain(1),
                Obj::Set(0),
                Obj::SetElems { set: 0, first: 0 },
                Obj::Map(0),
                Obj::MapElems { map: 0, first: 0 },
                Obj::Rule { chain: 0, rule: 0 },
                Obj::HashChain,
                Obj::BatchEnd,
            ]
        );
        let msgs: Vec<_> = nl::messages(&b.bytes).collect();
        assert_eq!(msgs.len(), b.objs.len());
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.seq, i as u32);
            assert_eq!(
                m.flags & nl::NLM_F_ACK != 0,
                i == msgs.len() - 2,
                "ACK only on the last message"
            );
            assert_eq!(
                b.offsets[i],
                m.bytes.as_ptr() as usize - b.bytes.as_ptr() as usize
            );
        }
        // The rule: nfproto, cmp, payload, our inverted lookup (spliced), meta iifname, lookup (vmap).
        let rule = msgs[10];
        let exprs = nl::msg_attrs(&rule)
            .find(|a| a.ty == nl::NFTA_RULE_EXPRESSIONS)
            .unwrap();
        let names: Vec<String> = nl::attrs(exprs.payload, 0)
            .map(|e| {
                nl::attr_str(
                    nl::attrs(e.payload, 0)
                        .find(|a| a.ty == nl::NFTA_EXPR_NAME)
                        .unwrap()
                        .payload,
                )
            })
            .collect();
        assert_eq!(
            names,
            ["meta", "cmp", "payload", "lookup", "meta", "lookup"]
        );
        let ud = nl::msg_attrs(&rule).find(|a| a.ty == 7).unwrap();
        assert_eq!(ud.payload, b"\x00\x03r0\x00");
        // Lengths are consistent all the way down.
        assert_eq!(
            rule.bytes.len(),
            20 + nl::msg_attrs(&rule)
                .map(|a| nl::align4(a.len))
                .sum::<usize>()
        );
    }

    #[test]
    fn a_rule_placed_at_the_end_is_appended_and_one_placed_before_a_handle_has_its_position() {
        // handlesfix item 5: without NLM_F_APPEND (or with a position) the kernel puts a rule at the
        // chain's head, not its end.
        let rs = small();
        let mut asm = Assembler::new(4096);
        let places = [(0, Place::Before(7)), (0, Place::End)];
        add_placed_rules(&mut asm, &rs, &[(0, &places[..])], &HashMap::new()).unwrap();
        let b = asm.finish();
        let msgs: Vec<_> = nl::messages(&b.bytes).collect();
        let rules: Vec<_> = msgs
            .iter()
            .filter(|m| m.ty & 0xff == nl::NFT_MSG_NEWRULE)
            .collect();
        assert_eq!(rules.len(), 2);
        let position = |m: &nl::Msg<'_>| {
            nl::msg_attrs(m)
                .find(|a| a.ty == nl::NFTA_RULE_POSITION)
                .map(|a| u64::from_be_bytes(a.payload.try_into().unwrap()))
        };
        assert_eq!(
            rules[0].flags & nl::NLM_F_APPEND,
            0,
            "before a handle: no append"
        );
        assert_eq!(position(rules[0]), Some(7));
        assert_ne!(rules[1].flags & nl::NLM_F_APPEND, 0, "at the end: appended");
        assert_eq!(position(rules[1]), None, "at the end: no position");
    }

    #[test]
    fn big_sets_are_split_below_64k() {
        let mut rs = small();
        rs.sets[0].elements = (0..20_000u32)
            .map(|i| SetElement::V4(ipnet::Ipv4Net::new((0x0a00_0000 + i * 4).into(), 31).unwrap()))
            .collect();
        let b = encode_apply(&rs).unwrap();
        let chunks: Vec<_> = b
            .objs
            .iter()
            .filter(|o| matches!(o, Obj::SetElems { .. }))
            .collect();
        assert!(chunks.len() >= 2, "{chunks:?}");
        let mut total = 0;
        for (seq, o) in b.objs.iter().enumerate() {
            if let Obj::SetElems { first, .. } = o {
                assert_eq!(*first, total);
                let m = b.message(seq as u32).unwrap();
                let list = nl::msg_attrs(&m)
                    .find(|a| a.ty == nl::NFTA_SET_ELEM_LIST_ELEMENTS)
                    .unwrap();
                assert!(list.len <= u16::MAX as usize);
                total += nl::attrs(list.payload, 0).count();
            }
        }
        assert_eq!(total, 1 + 2 * 20_000);
    }
}
