//! Incremental set updates (issue 7): when two rulesets differ only in the elements of some sets (and in
//! the table comment), the kernel is brought from one to the other by deleting and adding elements in ONE
//! transaction instead of replacing the whole table.
//!
//! # What is sent, and why it matches a full rebuild
//!
//! A hash set (`SetType::Ipv4Hosts`, `Ipv6Hosts`) holds one key per host: an added host is one element
//! added, a removed one one element deleted, exactly what `nft add/delete element` send for it (key only,
//! no flags). The rest of this section is about interval sets.
//!
//! An interval set holds, per range `[lo, hi]` of the IR, a start element `lo`
//! and an end element `hi + 1` flagged INTERVAL_END (none when the range reaches the top of the space;
//! `lo` then carries nft's open-interval userdata), plus one leading end element at 0 when the first range
//! does not start at 0 (`batch::interval_elems`, measured against nft). The diff is made per **range**, as
//! nft makes it (`nft delete element ... { 10.0.0.0/8 }` sends the start and the end element of that
//! range, with the same flags and userdata as when it was added):
//!
//! - a range of `previous` that is not in `next` (same first and last value) is deleted: its start and
//!   its end element; a range of `next` that is not in `previous` is added the same way. A range whose
//!   end changed is one deletion plus one addition, so its start element is deleted and re-added within
//!   the batch (which the kernel allows: the deleted element is inactive for the rest of the
//!   transaction), and its open-interval userdata is always right.
//! - adjacent ranges (`[a, b]`, `[b + 1, c]`) keep distinct elements: the end of the first and the start
//!   of the second share the key `b + 1` but not the INTERVAL_END flag, so deleting one range never
//!   touches its neighbour's elements.
//! - the leading end element at 0 is added when the set gains a first range that does not start at 0
//!   (from empty, or replacing a range that started at 0) and deleted when the set becomes empty or its
//!   first range now starts at 0. nft's own `add`/`delete element` leave it in place; we remove it, so
//!   that the kernel holds exactly the elements a full rebuild gives (`nft --debug=netlink list set`
//!   equal, not only `nft list`).
//!
//! Order inside the batch: all deletions of a set, then its additions in ascending order (start before
//! end, ranges from low to high). At every step the set the kernel checks an addition against is a set of
//! whole, non-overlapping ranges, which its overlap detection (nft_set_rbtree, `__nft_rbtree_insert`)
//! accepts; a range ending where a kept range starts is accepted (end and start elements of one key
//! coexist). Additions are sent with NLM_F_EXCL: an element that is already there means the kernel does
//! not hold `previous`, and the whole batch fails (then the caller replaces the table).

use super::elems::{diff_ranges, ir_ranges, Elem};
use crate::ruleset::{Ruleset, Set};

/// The element changes that turn the sets of one ruleset into those of another whose tables, chains and
/// maps are identical. Built by [`set_delta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDelta {
    pub(crate) sets: Vec<SetChange>,
}

/// The changes to one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetChange {
    /// Index of the set, the same in both rulesets.
    pub(crate) set: usize,
    /// Kernel elements to delete, in nft's encoding; `ir` indexes the set of the previous ruleset.
    pub(crate) remove: Vec<Elem>,
    /// Kernel elements to add, in the order they are sent; `ir` indexes the set of the next ruleset.
    pub(crate) add: Vec<Elem>,
    /// Ranges deleted and added (IR elements).
    pub(crate) removed: usize,
    pub(crate) added: usize,
}

impl SetDelta {
    /// True when no set element changes (only the comment may differ).
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Names of the sets that change, given the ruleset the delta was made for.
    pub fn set_names<'r>(&self, ruleset: &'r Ruleset) -> Vec<&'r str> {
        self.sets
            .iter()
            .map(|c| ruleset.sets[c.set].name.as_str())
            .collect()
    }

    /// Ranges (IR elements) added, over all sets.
    pub fn added(&self) -> usize {
        self.sets.iter().map(|c| c.added).sum()
    }

    /// Ranges (IR elements) deleted, over all sets.
    pub fn removed(&self) -> usize {
        self.sets.iter().map(|c| c.removed).sum()
    }

    /// Kernel elements (start and end elements) deleted and added, over all sets.
    pub fn kernel_elements(&self) -> (usize, usize) {
        let del = self.sets.iter().map(|c| c.remove.len()).sum();
        let add = self.sets.iter().map(|c| c.add.len()).sum();
        (del, add)
    }
}

/// The element-only difference from `previous` to `next`, or `None` when anything else differs: the
/// table name, a chain or rule, a verdict map, or the sets themselves (their number, names, types or
/// order). A set's kind (hash or interval) is part of its type, which the kernel cannot change in place;
/// the compiler also puts it in the name, so a kind change is a new set and rules that use it. The table comment may differ (it is the content hash, which changes with the elements).
///
/// The IR's ranges are sorted and non-overlapping (the compiler merges them); the diff does not depend
/// on their order.
pub fn set_delta(previous: &Ruleset, next: &Ruleset) -> Option<SetDelta> {
    if previous.table != next.table
        || previous.sets.len() != next.sets.len()
        || previous.maps != next.maps
        || previous.chains != next.chains
    {
        return None;
    }
    let mut sets = Vec::new();
    for (i, (a, b)) in previous.sets.iter().zip(&next.sets).enumerate() {
        if a.name != b.name || a.set_type != b.set_type {
            return None;
        }
        if a.elements != b.elements {
            sets.push(set_change(i, a, b));
        }
    }
    Some(SetDelta { sets })
}

/// The elements of each message of the update, in the notation of `nft --debug=netlink` (`KEY : FLAGS
/// [end]`, the key as 32-bit words, the open-interval userdata as `userdata = { ... }`), one line per
/// message kind: `delete SET: ELEMENT; ELEMENT; ...` then `add SET: ...`. For comparing with what nft
/// itself sends for the same `delete element` / `add element` (see `tests/incremental.rs`).
pub fn debug_elements(next: &Ruleset, delta: &SetDelta) -> String {
    let mut out = String::new();
    for c in &delta.sets {
        let name = &next.sets[c.set].name;
        for (what, elems) in [("delete", &c.remove), ("add", &c.add)] {
            if elems.is_empty() {
                continue;
            }
            let list: Vec<String> = elems.iter().map(debug_elem).collect();
            out.push_str(&format!("{what} {name}: {}\n", list.join("; ")));
        }
    }
    out
}

/// One element as libnftnl prints it.
pub(crate) fn debug_elem(e: &Elem) -> String {
    let key = &e.key[..e.len as usize];
    let words: Vec<String> = key
        .chunks(4)
        .map(|w| {
            let mut b = [0u8; 4];
            b[..w.len()].copy_from_slice(w);
            format!("{:08x}", u32::from_le_bytes(b))
        })
        .collect();
    let mut s = format!("{} : {} [end]", words.join(" "), u8::from(e.end));
    if e.open {
        // the userdata as the batch writes it: TLV NFTNL_UDATA_SET_ELEM_FLAGS, INTERVAL_OPEN
        let mut udata = Vec::new();
        crate::netlink::udata_tlv(
            &mut udata,
            crate::netlink::NFTNL_UDATA_SET_ELEM_FLAGS,
            &crate::netlink::NFTNL_SET_ELEM_F_INTERVAL_OPEN.to_ne_bytes(),
        );
        let bytes: String = udata.iter().map(|b| format!("\\x{b:02x}")).collect();
        s.push_str(&format!(" userdata = {{ {bytes} }}"));
    }
    s
}

fn set_change(index: usize, previous: &Set, next: &Set) -> SetChange {
    let (old, new) = (ir_ranges(previous), ir_ranges(next));
    let t = next.set_type;
    let old_leading = super::elems::has_leading_end(t, old.first().map(|f| f.0));
    let d = diff_ranges(t, old_leading, &old, &new);
    SetChange {
        set: index,
        remove: d.remove,
        add: d.add,
        removed: d.removed,
        added: d.added,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::batch::tests::small;
    use crate::nft::elems::leading_end;
    use crate::ruleset::{SetElement, SetType};

    fn v4(s: &str) -> SetElement {
        SetElement::V4(s.parse().unwrap())
    }

    /// (key bytes, end, open) of each element, as `nft --debug=netlink` lists them.
    fn keys(elems: &[Elem]) -> Vec<(Vec<u8>, bool, bool)> {
        elems
            .iter()
            .map(|e| (e.key[..e.len as usize].to_vec(), e.end, e.open))
            .collect()
    }

    fn with(elements: &[&str]) -> Ruleset {
        let mut rs = small();
        rs.sets[0].elements = elements.iter().map(|s| v4(s)).collect();
        rs
    }

    fn change(a: &[&str], b: &[&str]) -> SetChange {
        let d = set_delta(&with(a), &with(b)).expect("only elements differ");
        assert_eq!(d.sets.len(), 1);
        d.sets[0].clone()
    }

    #[test]
    fn only_element_changes_qualify() {
        let a = small();
        assert_eq!(set_delta(&a, &a), Some(SetDelta { sets: vec![] }));
        let mut b = a.clone();
        b.comment = "other".into();
        assert!(
            set_delta(&a, &b).unwrap().is_empty(),
            "a comment change alone"
        );
        let mut b = a.clone();
        b.chain_mut(0).rules[0].comment = None;
        assert_eq!(set_delta(&a, &b), None, "a rule changed");
        let mut b = a.clone();
        b.maps[0].elements.clear();
        assert_eq!(set_delta(&a, &b), None, "a map changed");
        let mut b = a.clone();
        b.sets[0].name = "other".into();
        assert_eq!(set_delta(&a, &b), None, "a set renamed");
        let mut b = a.clone();
        b.sets[0].set_type = SetType::Ipv6Addr;
        b.sets[0].elements.clear();
        assert_eq!(set_delta(&a, &b), None, "a set retyped");
        let mut b = a.clone();
        b.sets.push(b.sets[0].clone());
        b.sets[1].name = "new".into();
        assert_eq!(set_delta(&a, &b), None, "a set added");
        let mut b = a.clone();
        b.table = "other".into();
        assert_eq!(set_delta(&a, &b), None, "another table");
    }

    #[test]
    fn one_range_out_one_in() {
        // 10.0.0.0/8 kept; 12.0.0.0/8 deleted as nft deletes it (start 0c, end 0d); 14.0.0.0/8 added.
        let c = change(&["10.0.0.0/8", "12.0.0.0/8"], &["10.0.0.0/8", "14.0.0.0/8"]);
        assert_eq!(
            keys(&c.remove),
            vec![
                (vec![12, 0, 0, 0], false, false),
                (vec![13, 0, 0, 0], true, false)
            ]
        );
        assert_eq!(
            keys(&c.add),
            vec![
                (vec![14, 0, 0, 0], false, false),
                (vec![15, 0, 0, 0], true, false)
            ]
        );
        assert_eq!((c.removed, c.added), (1, 1));
        assert_eq!(c.remove[0].ir, 1, "index into the previous set");
    }

    #[test]
    fn adjacent_ranges_keep_their_own_elements() {
        // 12/8 and 13/8 are adjacent: 12's end and 13's start share the key 0d.
        let c = change(&["12.0.0.0/8", "13.0.0.0/8"], &["13.0.0.0/8"]);
        assert_eq!(
            keys(&c.remove),
            vec![
                (vec![12, 0, 0, 0], false, false),
                (vec![13, 0, 0, 0], true, false)
            ]
        );
        assert!(c.add.is_empty());
        // and the other way round: 12/8 comes back in front of 13/8
        let c = change(&["13.0.0.0/8"], &["12.0.0.0/8", "13.0.0.0/8"]);
        assert!(c.remove.is_empty());
        assert_eq!(
            keys(&c.add),
            vec![
                (vec![12, 0, 0, 0], false, false),
                (vec![13, 0, 0, 0], true, false)
            ]
        );
    }

    #[test]
    fn a_changed_end_deletes_and_re_adds_the_start() {
        // 128.0.0.0/1 (open: no end element) becomes 128.0.0.0/2.
        let c = change(&["128.0.0.0/1"], &["128.0.0.0/2"]);
        assert_eq!(keys(&c.remove), vec![(vec![128, 0, 0, 0], false, true)]);
        assert_eq!(
            keys(&c.add),
            vec![
                (vec![128, 0, 0, 0], false, false),
                (vec![192, 0, 0, 0], true, false)
            ]
        );
    }

    #[test]
    fn the_leading_end_element_follows_the_first_range() {
        let zero = (vec![0, 0, 0, 0], true, false);
        // filled from empty: the leading end element first
        let c = change(&[], &["10.0.0.0/8"]);
        assert_eq!(c.add[0], leading_end(4));
        assert_eq!(keys(&c.add)[0], zero);
        assert_eq!(c.add.len(), 3);
        // emptied: deleted with the last range
        let c = change(&["10.0.0.0/8"], &[]);
        assert_eq!(
            keys(&c.remove),
            vec![
                zero.clone(),
                (vec![10, 0, 0, 0], false, false),
                (vec![11, 0, 0, 0], true, false)
            ]
        );
        // a first range at 0 replaces it, and the other way round
        let c = change(&["10.0.0.0/8"], &["0.0.0.0/8", "10.0.0.0/8"]);
        assert_eq!(keys(&c.remove), vec![zero.clone()]);
        assert_eq!(
            keys(&c.add),
            vec![
                (vec![0, 0, 0, 0], false, false),
                (vec![1, 0, 0, 0], true, false)
            ]
        );
        let c = change(&["0.0.0.0/0"], &["0.0.0.0/1"]);
        assert_eq!(keys(&c.remove), vec![(vec![0, 0, 0, 0], false, true)]);
        assert_eq!(
            keys(&c.add),
            vec![
                (vec![0, 0, 0, 0], false, false),
                (vec![128, 0, 0, 0], true, false)
            ]
        );
        let c = change(&["0.0.0.0/1"], &["128.0.0.0/1"]);
        assert_eq!(
            keys(&c.remove),
            vec![
                (vec![0, 0, 0, 0], false, false),
                (vec![128, 0, 0, 0], true, false)
            ]
        );
        assert_eq!(keys(&c.add), vec![zero, (vec![128, 0, 0, 0], false, true)]);
    }

    #[test]
    fn counts() {
        let d = set_delta(
            &with(&["10.0.0.0/8", "12.0.0.0/8"]),
            &with(&["10.0.0.0/8", "14.0.0.0/8", "16.0.0.0/8"]),
        )
        .unwrap();
        assert_eq!((d.removed(), d.added()), (1, 2));
        assert_eq!(d.kernel_elements(), (2, 4));
        assert_eq!(d.set_names(&small()), vec!["a4"]);
        assert!(!d.is_empty());
    }
}
