//! The kernel side: the compiled [`Ruleset`] as nft text ([`render()`]) and as netlink transactions
//! ([`netlink::Netlink`]: the planner `plan.rs`, the encoders `batch.rs` and `txn.rs`, the executor
//! `exec.rs`, over the [`kernel`] seam), behind the [`Dataplane`] trait. The same dataplane runs over
//! the fake kernel of `fake.rs` ([`Fake`]) in tests without root.
//!
//! Both paths must give the same kernel ruleset (`nft -j list table inet NAME` equal); the rules that
//! make that true (how a match becomes bytecode, which text nft turns into the same bytecode, how names,
//! comments and log prefixes are cleaned) live in `lower.rs` and are shared by both.

mod batch;
pub mod delta;
mod describe;
pub mod dump;
mod elems;
mod exec;
pub mod fake;
mod inventory;
pub(crate) mod kernel;
mod lower;
pub mod netlink;
pub mod plan;
pub mod render;
mod txn;

use std::borrow::Cow;

pub use batch::encode_on_two_threads;
pub use delta::{set_delta, SetDelta};
pub use exec::when_encoded;
pub use fake::{Fake, FakeKernel};
pub use netlink::{validate, Netlink};
pub use plan::Handles;
pub use render::render;

use crate::ruleset::Ruleset;

/// The kernel (or a fake of it) as seen by the daemon: one table, replaced as a whole.
pub trait Dataplane {
    /// Replace the contents of table `ruleset.table` (family inet) with `ruleset`, creating it if absent,
    /// so that no packet sees a mix of the old and new rules: [`Netlink`] does it in at most two
    /// transactions, the switch itself being ONE of them (see `exec.rs`). Afterwards the table equals
    /// what `nft -f` makes of [`render()`], set names aside (a set may live under a versioned name,
    /// `plan.rs`). [`Dataplane::update`] with rule handles learned ([`Dataplane::learn_handles`]: the
    /// daemon) may leave the chains in another order (kept where they are, new ones after them). On error the previous ruleset is in force.
    fn apply(&mut self, ruleset: &Ruleset) -> Result<(), DataplaneError>;
    /// Bring the kernel from `previous` (what the caller applied last) to `next`, with the same result as
    /// `apply(next)`. An implementation may send less than the whole table when the kernel holds
    /// `previous` and only set elements differ (see [`Netlink`]: the element additions and removals and
    /// the new content hash, in ONE batch); otherwise, or if that batch is rejected, it replaces the table
    /// as `apply` does. On error nothing changed. The default is `apply(next)`.
    fn update(&mut self, previous: &Ruleset, next: &Ruleset) -> Result<(), DataplaneError> {
        let _ = previous;
        self.apply(next)
    }
    /// What the last write edited rule by rule (by kernel handle) instead of flushing and refilling,
    /// once (a second call returns nothing until the next write): per chain, the kernel handle of each
    /// of its rules afterwards when the rule was kept, None when it was inserted. Empty when it edited
    /// nothing (and for dataplanes that never do).
    fn take_edited(&mut self) -> Vec<(String, Vec<Option<u64>>)> {
        Vec::new()
    }
    /// The kernel handles of the rules of some chains of our table, in rule order, read back right
    /// after the last write (of the ruleset of content hash comment `comment`; ignored when that was
    /// not the last write). The caller vouches that each chain's rules are that ruleset's, one to one;
    /// the next [`Dataplane::update`] from it may then edit those chains by handle.
    fn learn_handles(&mut self, comment: &str, handles: Handles) {
        let _ = (comment, handles);
    }
    /// Forget every rule handle learned or kept (a read-back after the write failed, or found the
    /// table not as written): the next [`Dataplane::update`] flushes and refills what it changes.
    fn forget_handles(&mut self) {}
    /// The chains whose rules the last write made or changed (filled, refilled or edited by handle),
    /// by name; empty after an element-only update, a failed write, and for dataplanes that do not say.
    /// What the daemon reads back right after the write to learn their rule handles.
    fn wrote(&self) -> Vec<String> {
        Vec::new()
    }
    /// Delete table `table` (family inet) if present (batch: add table + delete table). Never touches other tables.
    fn flush(&mut self, table: &str) -> Result<(), DataplaneError>;
    /// The comment (userdata) of our table, or None when the table does not exist. Used to recognise
    /// the table we applied (the compiler puts the content hash there). A table without a comment gives
    /// `Some("")`. After an incremental [`Dataplane::update`] the table's own comment is still the one it
    /// was created with (the kernel cannot change it); the current one is then the comment of the
    /// [`HASH_CHAIN`] chain, which this returns when that chain exists.
    fn table_comment(&mut self, table: &str) -> Result<Option<String>, DataplaneError>;
}

/// The regular chain, without rules and referenced by nothing, whose comment carries the content hash
/// (`Ruleset::comment`): a table's comment (userdata) is fixed when the table is created (the kernel
/// ignores NFTA_TABLE_USERDATA for an existing table) and the table is kept across applies, but an
/// unreferenced chain can be deleted and created again in the transaction that switches to the new
/// ruleset (or changes set elements). Every apply creates it, as the table's last chain; [`render()`]
/// prints it there. No compiled chain has this name ([`netlink::validate`] refuses it). Named in
/// `compile::names`, with every other name.
pub use crate::compile::names::HASH_CHAIN;

/// The comment of the [`HASH_CHAIN`] while a swap of two transactions is under way, and back: made
/// in `compile::hash` with the table comment they stand for.
pub use crate::compile::hash::{pending_comment, pending_target};

/// The comment our table is created with (it cannot change afterwards). A table that has it, or has
/// the [`HASH_CHAIN`] chain, is ours: applied to in stages; any other table of that name is replaced
/// whole (see `plan.rs`).
pub use crate::compile::names::TABLE_COMMENT;

/// How [`Dataplane::update`] brought the kernel to the new ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdatePath {
    /// One batch of element deletions and additions, plus the new content hash ([`HASH_CHAIN`]):
    /// `sets` sets changed, `removed` and `added` ranges (IR elements).
    Elements {
        sets: usize,
        removed: usize,
        added: usize,
    },
    /// The whole table was replaced, as [`Dataplane::apply`] does.
    Full(FullReason),
}

/// Why [`Dataplane::update`] replaced the whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullReason {
    /// The implementation has no incremental path (the trait's default).
    NoIncremental,
    /// Something besides set elements and the comment differs (a rule, a chain, a map, a set's name).
    NotOnlyElements,
    /// The kernel does not hold `previous` (no table, or another content hash).
    KernelDiffers,
    /// The element batch was rejected (nothing changed), e.g. because the set contents in the kernel
    /// were changed behind our back; the message is the kernel's.
    Rejected(String),
}

/// Why an apply, flush or query failed. `message` names the object the kernel rejected, e.g.
/// `kernel rejected rule 3 of chain filter-fh-eth0 (comment "..."): Invalid argument (os error 22)`
/// (rules are numbered from 0, as in `Chain::rules`). `errno` is the kernel's (or the socket's) error
/// number; `None` when the ruleset was refused before anything was sent (it cannot be encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DataplaneError {
    pub message: String,
    pub errno: Option<i32>,
    pub kind: ErrorKind,
}

/// What kind of failure a [`DataplaneError`] is: what the caller can know about the kernel's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Refused before anything was sent (it cannot be encoded): nothing changed.
    Invalid,
    /// The kernel refused a transaction: that transaction changed nothing.
    Rejected,
    /// The socket failed, or an answer did not come in time (a read, or a batch that never reached the
    /// kernel).
    Io,
    /// A transaction reached the kernel but its answer was lost: it may or may not have been committed.
    OutcomeUnknown,
}

impl DataplaneError {
    /// An error found before talking to the kernel (nothing was sent).
    pub fn invalid(message: impl Into<String>) -> DataplaneError {
        DataplaneError {
            message: message.into(),
            errno: None,
            kind: ErrorKind::Invalid,
        }
    }

    /// An error reported by the kernel.
    pub fn os(message: impl Into<String>, errno: i32) -> DataplaneError {
        DataplaneError {
            message: message.into(),
            errno: Some(errno),
            kind: ErrorKind::Rejected,
        }
    }

    /// The transaction's outcome is unknown (see [`ErrorKind::OutcomeUnknown`]).
    pub fn outcome_unknown(&self) -> bool {
        self.kind == ErrorKind::OutcomeUnknown
    }
}

impl From<crate::netlink::Error> for DataplaneError {
    fn from(e: crate::netlink::Error) -> DataplaneError {
        use crate::netlink::ErrorKind as K;
        DataplaneError {
            message: e.context,
            errno: e.errno,
            kind: match e.kind {
                K::Rejected => ErrorKind::Rejected,
                K::OutcomeUnknown => ErrorKind::OutcomeUnknown,
                K::Socket | K::Timeout | K::Interrupted => ErrorKind::Io,
            },
        }
    }
}

/// Longest comment nft accepts (`NFTNL_UDATA_COMMENT_MAXLEN`), in bytes, without the NUL.
pub const COMMENT_MAX: usize = 128;
/// Longest log prefix the kernel accepts (`NF_LOG_PREFIXLEN` - 1), in bytes.
pub const LOG_PREFIX_MAX: usize = 127;
/// Longest table, chain, set or map name (`NFT_NAME_MAXLEN` - 1), in bytes.
pub const NAME_MAX: usize = 255;
/// Longest interface name (`IFNAMSIZ` - 1), in bytes.
pub const IFNAME_MAX: usize = 15;

/// A comment as both paths store it: nft's quoted strings cannot hold `"` or line breaks, so `"` becomes
/// `'` and control characters become spaces; cut to [`COMMENT_MAX`] bytes on a character boundary.
pub fn clean_comment(s: &str) -> Cow<'_, str> {
    clean(s, COMMENT_MAX, |c| match c {
        '"' => Some('\''),
        c if c.is_control() => Some(' '),
        _ => None,
    })
}

/// A log prefix as both paths store it: like [`clean_comment`], and `$` (nft expands `$name` inside a log
/// prefix) becomes `_`; cut to [`LOG_PREFIX_MAX`] bytes.
pub fn clean_log_prefix(s: &str) -> Cow<'_, str> {
    clean(s, LOG_PREFIX_MAX, |c| match c {
        '"' => Some('\''),
        '$' => Some('_'),
        c if c.is_control() => Some(' '),
        _ => None,
    })
}

fn clean(s: &str, max: usize, map: impl Fn(char) -> Option<char>) -> Cow<'_, str> {
    if s.len() <= max && !s.chars().any(|c| map(c).is_some()) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = map(c).unwrap_or(c);
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// True when `name` can be written unquoted in nft text (nft 1.0.6 accepts no quoted table, chain, set
/// or map names): a letter or `_`, then letters, digits, `_`, `-`, `.` and `/`; at most [`NAME_MAX`]
/// bytes. A few bare keywords (`ip`, `tcp`, ...) are still refused by nft's parser; the compiler's
/// names (`filter-input`, `sel-...`) never are keywords.
pub fn is_nft_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    name.len() <= NAME_MAX
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_cleaned_the_same_way_for_both_paths() {
        assert_eq!(
            clean_comment("policy a rule 0"),
            Cow::Borrowed("policy a rule 0")
        );
        assert_eq!(clean_comment("say \"hi\"\nnow"), "say 'hi' now");
        let long = "é".repeat(100); // 200 bytes
        let c = clean_comment(&long);
        assert_eq!(c.len(), 128);
        assert!(c.chars().all(|ch| ch == 'é'));
        assert_eq!(clean_log_prefix("drop $x: "), "drop _x: ");
        assert_eq!(clean_log_prefix(&"a".repeat(200)).len(), 127);
    }

    #[test]
    fn nft_names() {
        for ok in ["hostpolicy", "filter-fh-eth0", "sel-has-x.y/z", "_x", "a1"] {
            assert!(is_nft_name(ok), "{ok}");
        }
        for bad in ["", "1abc", "a b", "x\"y", "-a", "a@b", &"a".repeat(256)] {
            assert!(!is_nft_name(bad), "{bad}");
        }
    }
}
