//! The content hash: what "the same ruleset" means for the daemon, and how it is written into the kernel.
//!
//! The hash covers what the kernel holds (table name, sets, maps, chains and their rules, with their
//! comments) and nothing else: not the table comment that carries it, and not the rules' origins (a
//! `last-good.json` written before origins existed still has the hash it was stored with). A rule's
//! comment ends with its file and line (`names::comment`), so a policy that moved to another line of
//! its file changes the hash and the comments of its chain, nothing else.

use sha2::{Digest, Sha256};

use crate::ruleset::Ruleset;

/// What the table comment starts with; the hash follows.
const COMMENT_PREFIX: &str = "hostpolicyd sha256:";
/// What every comment of ours starts with.
const OURS: &str = "hostpolicyd ";

/// SHA-256 (hex) of the ruleset's kernel contents.
///
/// It is the SHA-256 of the `Debug` text of `Ruleset { table, comment: "", sets, maps, chains }` (the
/// derived `Debug` of the IR types, as it always was). The text is streamed into the hasher (no copy of
/// the ruleset, no string of its whole text: for 10,000 policies that took as long as the rest of
/// `compile`).
pub fn content_hash(ruleset: &Ruleset) -> String {
    /// The hashed fields of a `Ruleset`, printed as its derived `Debug` printed them before the
    /// ruleset had origins, with `comment: ""`.
    struct Hashed<'a>(&'a Ruleset);
    impl std::fmt::Debug for Hashed<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let r = self.0;
            f.debug_struct("Ruleset")
                .field("table", &r.table)
                .field("comment", &"")
                .field("sets", &r.sets)
                .field("maps", &r.maps)
                .field("chains", &r.chains)
                .finish()
        }
    }
    debug_digest(&Hashed(ruleset))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of `value`'s `Debug` text, written into the hasher through a small buffer: `Debug` writes
/// a few bytes at a time (field names, punctuation), and each `update` of the hasher costs more than
/// the copy (issue 18: a third less time for the hash of 10,000 policies).
pub(crate) fn debug_digest(value: &impl std::fmt::Debug) -> sha2::digest::Output<Sha256> {
    const BUFFER: usize = 16 * 1024;
    struct Hasher {
        sha: Sha256,
        buf: Vec<u8>,
    }
    impl std::fmt::Write for Hasher {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            if self.buf.len() + s.len() > BUFFER {
                self.sha.update(&self.buf);
                self.buf.clear();
            }
            if s.len() > BUFFER {
                self.sha.update(s.as_bytes());
            } else {
                self.buf.extend_from_slice(s.as_bytes());
            }
            Ok(())
        }
    }
    let mut h = Hasher {
        sha: Sha256::new(),
        buf: Vec::with_capacity(BUFFER),
    };
    std::fmt::write(&mut h, format_args!("{value:?}")).expect("hashing does not fail");
    h.sha.update(&h.buf);
    h.sha.finalize()
}

/// The table comment (`Ruleset::comment`) that carries `hash`.
pub fn table_comment(hash: &str) -> String {
    format!("{COMMENT_PREFIX}{hash}")
}

/// The hash recorded in a table comment written by `compile`, if the comment is one of ours.
pub fn hash_from_comment(comment: &str) -> Option<&str> {
    comment.strip_prefix(COMMENT_PREFIX)
}

/// The comment of the `HASH_CHAIN` (`names::HASH_CHAIN`) while a swap of two transactions is under way (from the first until
/// the second commits): `hostpolicyd pending sha256:NEW`, for a swap to the ruleset whose comment is
/// `hostpolicyd sha256:NEW`. A table marked so holds neither ruleset for sure; see `nft/exec.rs`.
pub fn pending_comment(target: &str) -> String {
    format!(
        "{PENDING_PREFIX}{}",
        target.strip_prefix(OURS).unwrap_or(target)
    )
}

/// The comment of the ruleset a pending swap was going to (`hostpolicyd sha256:NEW`), when `comment`
/// (as `Dataplane::table_comment` returns it) is a pending mark ([`pending_comment`]).
pub fn pending_target(comment: &str) -> Option<String> {
    comment
        .strip_prefix(PENDING_PREFIX)
        .map(|t| format!("{OURS}{t}"))
}

const PENDING_PREFIX: &str = "hostpolicyd pending ";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{Chain, Kind, Origin, OriginId, Origins, Rule, Verdict};

    fn ruleset() -> Ruleset {
        Ruleset {
            table: "t".into(),
            comment: String::new(),
            sets: Vec::new(),
            maps: Vec::new(),
            chains: vec![Chain {
                name: "c".into(),
                base: None,
                rules: vec![Rule {
                    verdict: Some(Verdict::Accept),
                    comment: Some("x".into()),
                    ..Rule::default()
                }],
            }],
            origins: Origins::default(),
        }
    }

    /// The hash is the hash of the `Debug` text the ruleset had before it carried origins, whatever
    /// the comment and the origins: stored hashes stay valid.
    #[test]
    fn neither_the_comment_nor_the_origins_are_hashed() {
        let rs = ruleset();
        let legacy = "Ruleset { table: \"t\", comment: \"\", sets: [], maps: [], chains: [Chain { \
                      name: \"c\", base: None, rules: [Rule { matches: [], counter: false, actions: [], \
                      verdict: Some(Accept), comment: Some(\"x\") }] }] }";
        let expected: String = Sha256::digest(legacy.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(content_hash(&rs), expected);
        let mut other = rs.clone();
        other.comment = table_comment("0000");
        other.origins = Origins {
            list: vec![Origin::new(Kind::Structure)],
            rules: vec![vec![OriginId(0)]],
            flow_ids: vec![(7, OriginId(0))],
        };
        assert_eq!(content_hash(&other), expected);
        assert_eq!(hash_from_comment(&other.comment), Some("0000"));
        assert_eq!(hash_from_comment("someone else's"), None);
    }
}
