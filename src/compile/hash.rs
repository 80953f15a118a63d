//! The content hash: what "the same ruleset" means for the daemon, and how it is written into the kernel.
//!
//! The hash covers what the kernel holds (table name, sets, maps, chains and their rules, with their
//! comments) and nothing else: not the table comment that carries it, and not the rules' origins (a
//! `last-good.json` written before origins existed still has the hash it was stored with). A rule's
//! comment ends with its file and line (`names::comment`), so a policy that moved to another line of
//! its file changes the hash and the comments of its chain, nothing else.

use sha2::{Digest as _, Sha256};

use crate::ruleset::{Chain, Ruleset};

/// What the table comment starts with; the hash follows.
const COMMENT_PREFIX: &str = "hostpolicyd sha256:";
/// What every comment of ours starts with.
const OURS: &str = "hostpolicyd ";

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// SHA-256 (hex) of the ruleset's kernel contents.
///
/// Made of one digest per set and per chain (issue 18: the daemon keeps the digests of the chains
/// it takes back from the previous compile, `compile::cache`, so a reload in which one policy changed
/// hashes that policy's chain, not every chain): the SHA-256 of a version tag, the digest of the
/// `Debug` text of the table name and the maps, the number of sets and each set's digest, the number
/// of chains and each chain's digest ([`chain_digest`]), every digest that of the item's derived
/// `Debug` text. Every producer (compile, `render`, the daemon, `apply`, the state files) uses this
/// function, so hashes compare across processes of one version; a table written by an earlier
/// version (whose hash was the SHA-256 of the whole ruleset's `Debug` text) is applied again once.
pub fn content_hash(ruleset: &Ruleset) -> String {
    content_hash_with(ruleset, &[])
}

/// [`content_hash`], with the digests of some chains already known: `known[i]`, when given, is
/// [`chain_digest`] of `ruleset.chains[i]`.
pub(crate) fn content_hash_with(ruleset: &Ruleset, known: &[Option<Digest>]) -> String {
    let mut sha = Sha256::new();
    sha.update(b"hostpolicyd content hash 2\n");
    sha.update(debug_digest(&(&ruleset.table, &ruleset.maps)));
    sha.update((ruleset.sets.len() as u64).to_le_bytes());
    for set in &ruleset.sets {
        sha.update(debug_digest(set));
    }
    sha.update((ruleset.chains.len() as u64).to_le_bytes());
    for (i, chain) in ruleset.chains.iter().enumerate() {
        match known.get(i).copied().flatten() {
            Some(d) => sha.update(d),
            None => sha.update(chain_digest(chain)),
        }
    }
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of one chain in [`content_hash`]: SHA-256 of its derived `Debug` text.
pub(crate) fn chain_digest(chain: &Chain) -> Digest {
    debug_digest(chain).into()
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
            }]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
            origins: Origins::default(),
        }
    }

    /// The hash covers the kernel's contents only: neither the table comment that carries it nor the
    /// origins change it (a stored hash stays valid), a rule's comment does; digests known for some
    /// chains give the same hash as computing them all.
    #[test]
    fn neither_the_comment_nor_the_origins_are_hashed() {
        let rs = ruleset();
        let expected = content_hash(&rs);
        assert_eq!(expected.len(), 64);
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
        assert_eq!(
            content_hash_with(&rs, &[Some(chain_digest(&rs.chains[0]))]),
            expected
        );
        let mut commented = rs.clone();
        commented.chain_mut(0).rules[0].comment = Some("y".into());
        assert_ne!(content_hash(&commented), expected);
        // A chain moved from one place to another is another ruleset.
        let mut two = rs.clone();
        two.chains.push(
            Chain {
                name: "d".into(),
                base: None,
                rules: Vec::new(),
            }
            .into(),
        );
        let mut swapped = two.clone();
        swapped.chains.swap(0, 1);
        assert_ne!(content_hash(&two), content_hash(&swapped));
    }
}
