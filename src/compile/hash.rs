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
/// hashes that policy's chain and the chains that list policies, not every chain): the SHA-256 of a
/// version tag, the digest of the table name and the maps, the number of sets and each set's digest,
/// the number of chains and each chain's digest ([`chain_digest`]). Each digest is the SHA-256 of what
/// the item's derived `Hash` writes, integers little-endian ([`hash_digest`]): several times faster
/// than the `Debug` text hashed before. Every producer (compile, `render`, the daemon, `apply`, the
/// state files) uses this function, so hashes compare across processes; a table written by an
/// earlier version is applied again once, its unchanged chains kept.
pub fn content_hash(ruleset: &Ruleset) -> String {
    content_hash_with(ruleset, &[])
}

/// [`content_hash`], with the digests of some chains already known: `known[i]`, when given, is
/// [`chain_digest`] of `ruleset.chains[i]`.
pub(crate) fn content_hash_with(ruleset: &Ruleset, known: &[Option<Digest>]) -> String {
    let mut sha = Sha256::new();
    sha.update(b"hostpolicyd content hash 2\n");
    sha.update(hash_digest(&(&ruleset.table, &ruleset.maps)));
    sha.update((ruleset.sets.len() as u64).to_le_bytes());
    for set in &ruleset.sets {
        sha.update(hash_digest(set));
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

/// The digest of one chain in [`content_hash`].
pub(crate) fn chain_digest(chain: &Chain) -> Digest {
    hash_digest(chain)
}

/// SHA-256 of what `value`'s `Hash` writes, buffered (each `update` of the hasher costs more than a
/// small copy), every integer written little-endian and `usize`/`isize` (lengths, enum
/// discriminants) as 64 bits, so that the digest does not depend on the machine.
pub(crate) fn hash_digest<T: std::hash::Hash + ?Sized>(value: &T) -> Digest {
    const BUFFER: usize = 16 * 1024;
    struct Writer {
        sha: Sha256,
        buf: Vec<u8>,
    }
    impl std::hash::Hasher for Writer {
        fn write(&mut self, bytes: &[u8]) {
            if self.buf.len() + bytes.len() > BUFFER {
                self.sha.update(&self.buf);
                self.buf.clear();
            }
            if bytes.len() > BUFFER {
                self.sha.update(bytes);
            } else {
                self.buf.extend_from_slice(bytes);
            }
        }
        fn write_u8(&mut self, i: u8) {
            self.write(&[i]);
        }
        fn write_u16(&mut self, i: u16) {
            self.write(&i.to_le_bytes());
        }
        fn write_u32(&mut self, i: u32) {
            self.write(&i.to_le_bytes());
        }
        fn write_u64(&mut self, i: u64) {
            self.write(&i.to_le_bytes());
        }
        fn write_u128(&mut self, i: u128) {
            self.write(&i.to_le_bytes());
        }
        fn write_usize(&mut self, i: usize) {
            self.write_u64(i as u64);
        }
        fn write_i8(&mut self, i: i8) {
            self.write_u8(i as u8);
        }
        fn write_i16(&mut self, i: i16) {
            self.write_u16(i as u16);
        }
        fn write_i32(&mut self, i: i32) {
            self.write_u32(i as u32);
        }
        fn write_i64(&mut self, i: i64) {
            self.write_u64(i as u64);
        }
        fn write_i128(&mut self, i: i128) {
            self.write_u128(i as u128);
        }
        fn write_isize(&mut self, i: isize) {
            self.write_u64(i as i64 as u64);
        }
        fn finish(&self) -> u64 {
            unreachable!("hash_digest reads the SHA-256, not a u64")
        }
    }
    let mut w = Writer {
        sha: Sha256::new(),
        buf: Vec::with_capacity(BUFFER),
    };
    value.hash(&mut w);
    w.sha.update(&w.buf);
    w.sha.finalize().into()
}

/// The content hash as versions before the per-chain digests made it: the SHA-256 of the `Debug`
/// text of `Ruleset { table, comment: "", sets, maps, chains }`. Only to recognise a state file
/// written by such a version (`engine::state`), whose recorded hash is this one; never written.
pub fn legacy_content_hash(ruleset: &Ruleset) -> String {
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

    /// The hash earlier versions recorded in their state files is still recognised.
    #[test]
    fn the_legacy_hash_is_the_debug_text_hashed() {
        let legacy = "Ruleset { table: \"t\", comment: \"\", sets: [], maps: [], chains: [Chain { \
                      name: \"c\", base: None, rules: [Rule { matches: [], counter: false, actions: [], \
                      verdict: Some(Accept), comment: Some(\"x\") }] }] }";
        let expected: String = Sha256::digest(legacy.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(legacy_content_hash(&ruleset()), expected);
        assert_ne!(content_hash(&ruleset()), expected);
    }
}
