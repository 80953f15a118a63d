//! The encoder of the swap's transactions (`plan.rs` decides, `exec.rs` sends): T1 creates sets and marks
//! the table as in transition, T2 switches every chain and rule and deletes what the new rules do not
//! use, the undo takes T1 back. Each transaction is one [`EncodedBatch`], with a note per message that
//! [`describe_tx`] uses to name what the kernel rejected.

use std::borrow::Cow;

use super::batch::{
    add_chains, add_hash_chain_comment, add_placed_rules, add_rules, encode_flush, encode_map,
    encode_set, set_ids, Assembler, EncodedBatch, Obj,
};
use super::describe::describe;
use super::plan::{set_of, Mode, Plan};
use super::{pending_comment, DataplaneError, HASH_CHAIN, TABLE_COMMENT};
use crate::netlink::{
    self as nl, Reply, Writer, NFTA_RULE_CHAIN, NFTA_RULE_TABLE, NFTA_TABLE_FLAGS, NFT_MSG_DELRULE,
    NFT_MSG_DELSET,
};
use crate::ruleset::{Match, PortMatch, Ruleset, Set};

/// One encoded transaction and, per sequence number, a description when [`Obj`] does not say enough.
pub(crate) struct Tx {
    pub(crate) batch: EncodedBatch,
    pub(crate) notes: Vec<Option<String>>,
}

struct TxBuilder {
    asm: Assembler,
    notes: Vec<Option<String>>,
}

impl TxBuilder {
    fn new(capacity: usize) -> TxBuilder {
        TxBuilder {
            asm: Assembler::new(capacity),
            notes: Vec::new(),
        }
    }

    /// Notes `note` for every message written since `from`.
    fn note_since(&mut self, from: usize, note: String) {
        self.notes.resize(from, None);
        self.notes.resize(self.asm.objs.len(), Some(note));
    }

    /// A message of `msg` with string attributes only.
    fn simple(&mut self, msg: u16, attrs: &[(u16, &str)], what: String) {
        let from = self.asm.objs.len();
        let m = self.asm.begin_with(msg, 0, Obj::TableEnsure);
        let mut w = Writer {
            buf: &mut self.asm.out,
        };
        for (ty, value) in attrs {
            w.strz(*ty, value);
        }
        w.end_msg(m);
        self.note_since(from, what);
    }

    fn flush_chain(&mut self, table: &str, chain: &str) {
        self.simple(
            NFT_MSG_DELRULE,
            &[(NFTA_RULE_TABLE, table), (NFTA_RULE_CHAIN, chain)],
            format!("kernel rejected flushing chain {chain} of table inet {table}"),
        );
    }

    /// One rule of a kept chain, by its kernel handle (ENOENT, and the whole transaction refused, when
    /// the chain no longer holds it).
    fn delete_rule(&mut self, table: &str, chain: &str, handle: u64) {
        let from = self.asm.objs.len();
        let m = self.asm.begin_with(NFT_MSG_DELRULE, 0, Obj::TableEnsure);
        let mut w = Writer {
            buf: &mut self.asm.out,
        };
        w.strz(NFTA_RULE_TABLE, table);
        w.strz(NFTA_RULE_CHAIN, chain);
        w.attr(nl::NFTA_RULE_HANDLE, &handle.to_be_bytes());
        w.end_msg(m);
        self.note_since(
            from,
            format!("kernel rejected deleting rule handle {handle} of chain {chain} of table inet {table}"),
        );
    }

    fn delete_set(&mut self, table: &str, set: &str) {
        self.simple(
            NFT_MSG_DELSET,
            &[(nl::NFTA_SET_TABLE, table), (nl::NFTA_SET_NAME, set)],
            format!("kernel rejected deleting set {set} of table inet {table}"),
        );
    }

    fn delete_chain(&mut self, table: &str, chain: &str) {
        self.simple(
            nl::NFT_MSG_DELCHAIN,
            &[(nl::NFTA_CHAIN_TABLE, table), (nl::NFTA_CHAIN_NAME, chain)],
            format!("kernel rejected deleting chain {chain} of table inet {table}"),
        );
    }

    /// The [`HASH_CHAIN`] with comment userdata `udata` (None: delete it), whether or not it exists:
    /// `add chain`, `delete chain`, `add chain { comment }`.
    fn replace_hash_chain(&mut self, table: &str, udata: Option<&[u8]>) {
        self.simple(
            nl::NFT_MSG_NEWCHAIN,
            &[
                (nl::NFTA_CHAIN_TABLE, table),
                (nl::NFTA_CHAIN_NAME, HASH_CHAIN),
            ],
            format!("kernel rejected adding chain {HASH_CHAIN} of table inet {table}"),
        );
        self.delete_chain(table, HASH_CHAIN);
        if let Some(udata) = udata {
            add_hash_chain_comment(&mut self.asm, table, udata);
        }
    }

    /// None when no message was written.
    fn finish(mut self) -> Option<Tx> {
        if self.asm.objs.len() <= 1 {
            return None;
        }
        let batch = self.asm.finish();
        self.notes.resize(batch.objs.len(), None);
        Some(Tx {
            batch,
            notes: self.notes,
        })
    }
}

fn sets_size(rs: &Ruleset, which: impl Iterator<Item = usize>) -> usize {
    which.map(|i| rs.sets[i].elements.len() * 96 + 256).sum()
}

/// T1, the staging: the table (if new), the sets to create under their kernel names, and the table
/// marked as in transition to `rs` (the [`HASH_CHAIN`] with [`pending_comment`]). None when the swap
/// needs no T1 (see [`Plan::staged`]).
pub(crate) fn encode_t1(rs: &Ruleset, plan: &Plan) -> Option<Tx> {
    if !plan.staged() {
        return None;
    }
    let mut b = TxBuilder::new(1024 + sets_size(rs, plan.create_sets.iter().copied()));
    if plan.mode == Mode::Create {
        let m = b
            .asm
            .begin_with(nl::NFT_MSG_NEWTABLE, nl::NLM_F_CREATE, Obj::TableCreate);
        let mut w = Writer {
            buf: &mut b.asm.out,
        };
        w.strz(nl::NFTA_TABLE_NAME, &rs.table);
        w.u32_be(NFTA_TABLE_FLAGS, 0);
        w.attr(nl::NFTA_TABLE_USERDATA, &nl::udata_comment(TABLE_COMMENT));
        w.end_msg(m);
    }
    let ids = set_ids(plan.create_sets.iter().map(|&i| &plan.names[i]));
    for &i in &plan.create_sets {
        let name = &plan.names[i];
        let from = b.asm.objs.len();
        if *name == rs.sets[i].name {
            encode_set(&mut b.asm, &rs.table, i, &rs.sets[i], ids[name.as_str()]);
        } else {
            let copy = Set {
                name: name.clone(),
                ..rs.sets[i].clone()
            };
            encode_set(&mut b.asm, &rs.table, i, &copy, ids[name.as_str()]);
            b.note_since(from, format!("\u{0}{name}"));
        }
    }
    let pending = nl::udata_comment(&pending_comment(&rs.comment));
    b.replace_hash_chain(&rs.table, Some(&pending));
    b.finish()
}

/// The chains T2 loads: `rs`'s, with sets of a new version looked up under their kernel names (only the
/// table and the chains are filled in).
pub(crate) fn kernel_rules<'r>(rs: &'r Ruleset, plan: &Plan) -> Cow<'r, Ruleset> {
    let renamed = plan.renamed(rs);
    if renamed.is_empty() {
        return Cow::Borrowed(rs);
    }
    // The chains are shared (`Arc`): only those that use a renamed set are copied.
    let mut chains = rs.chains.clone();
    let uses_renamed = |c: &crate::ruleset::Chain| {
        c.rules
            .iter()
            .flat_map(|r| &r.matches)
            .any(|m| set_of(m).is_some_and(|s| renamed.contains_key(s)))
    };
    for m in chains
        .iter_mut()
        .filter(|c| uses_renamed(c))
        .flat_map(|c| std::sync::Arc::make_mut(c).rules.iter_mut())
        .flat_map(|r| r.matches.iter_mut())
    {
        let new = set_of(m)
            .and_then(|s| renamed.get(s))
            .map(|n| n.to_string());
        if let (
            Some(new),
            Match::Addr { set, .. }
            | Match::Port {
                port: PortMatch::Set(set),
                ..
            },
        ) = (new, m)
        {
            *set = new;
        }
    }
    Cow::Owned(Ruleset {
        table: rs.table.clone(),
        comment: rs.comment.clone(),
        sets: Vec::new(),
        maps: Vec::new(),
        chains,
        origins: Default::default(),
    })
}

/// T2, the switch, ONE transaction: flush the chains whose rules change (or, for the chains the plan
/// edits, delete their removed rules by handle), delete the sets and maps the new rules do not use and
/// the chains that are not kept, create chains, maps and rules (`rules`: with the sets' kernel names;
/// an edited chain's new rules at their places), and the [`HASH_CHAIN`] with the new content hash.
pub(crate) fn encode_t2(rs: &Ruleset, rules: &Ruleset, plan: &Plan) -> Result<Tx, DataplaneError> {
    let maps: usize = rs.maps.iter().map(|m| m.elements.len() * 96 + 256).sum();
    let mut b = TxBuilder::new(4096 + maps + rs.rule_count() * 192);
    for c in &plan.flush {
        b.flush_chain(&rs.table, c);
    }
    // Before the chains and sets they referred to are deleted.
    for e in &plan.edits {
        for &h in &e.delete {
            b.delete_rule(&rs.table, &rs.chains[e.chain].name, h);
        }
    }
    for s in &plan.delete_sets {
        b.delete_set(&rs.table, s);
    }
    for c in &plan.delete_chains {
        b.delete_chain(&rs.table, c);
    }
    add_chains(&mut b.asm, rs, &plan.create_chains);
    let ids = set_ids(rs.maps.iter().map(|m| &m.name));
    for (i, map) in rs.maps.iter().enumerate() {
        encode_map(&mut b.asm, &rs.table, i, map, ids[map.name.as_str()]);
    }
    add_rules(&mut b.asm, rules, &plan.fill, &ids)?;
    let inserts: Vec<(usize, &[(usize, super::batch::Place)])> = plan
        .edits
        .iter()
        .map(|e| (e.chain, e.insert.as_slice()))
        .collect();
    add_placed_rules(&mut b.asm, rules, &inserts, &ids)?;
    let comment = super::clean_comment(&rs.comment);
    let udata = (!comment.is_empty()).then(|| nl::udata_comment(&comment));
    if plan.staged() || plan.prior_hash.is_some() {
        b.replace_hash_chain(&rs.table, Some(udata.as_deref().unwrap_or_default()));
    } else {
        add_hash_chain_comment(&mut b.asm, &rs.table, udata.as_deref().unwrap_or_default());
    }
    Ok(b.finish().expect("T2 always holds the hash chain"))
}

/// Undoing T1 after T2 was rejected: the table deleted if T1 created it; else the sets T1 created
/// deleted and the [`HASH_CHAIN`] as it was.
pub(crate) fn encode_undo(rs: &Ruleset, plan: &Plan) -> Option<Tx> {
    if plan.mode == Mode::Create {
        let batch = encode_flush(&rs.table);
        let notes = vec![None; batch.objs.len()];
        return Some(Tx { batch, notes });
    }
    let mut b = TxBuilder::new(512 + 64 * plan.create_sets.len());
    for &i in &plan.create_sets {
        b.delete_set(&rs.table, &plan.names[i]);
    }
    b.replace_hash_chain(&rs.table, plan.prior_hash.as_deref());
    b.finish()
}

/// Names the object of a rejected message of a transaction of the swap.
pub(crate) fn describe_tx(rs: &Ruleset, tx: &Tx, seq: u32, reply: &Reply) -> String {
    match tx.notes.get(seq as usize).cloned().flatten() {
        // A set created under a version name: what `describe` says, and that name.
        Some(n) if n.starts_with('\u{0}') => {
            format!(
                "{} (created as {})",
                describe(rs, &tx.batch, seq, reply),
                &n[1..]
            )
        }
        Some(text) => text,
        None => describe(rs, &tx.batch, seq, reply),
    }
}
