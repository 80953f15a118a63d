//! Set elements as the kernel holds them, and the ONE element differ.
//!
//! An interval set holds, per range `[lo, hi]` of the IR, a start element `lo` and an end element
//! `hi + 1` flagged INTERVAL_END (none when the range reaches the top of the space; `lo` then carries
//! nft's open-interval userdata), plus one leading end element at 0 when the first range does not start
//! at 0. A hash set holds one key per host. [`kernel_elems`] writes a set that way (measured against
//! nft); [`kernel_ranges`] and [`kernel_hosts`] read the kernel's elements back as ranges, refusing what
//! nft would not have written; [`diff_ranges`] turns one list of ranges into another per range, as
//! `nft add/delete element` do (see `delta.rs` for why that is exactly what a full rebuild gives).

use crate::netlink as nl;
use crate::ruleset::{Set, SetElement, SetType};

use super::inventory::KElem;

/// One element as sent to the kernel: interval sets hold the start of each range and, as a separate
/// element flagged INTERVAL_END, the first value after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elem {
    pub(crate) key: [u8; 16],
    pub(crate) len: u8,
    pub(crate) end: bool,
    /// The range reaches the top of the space (no end element follows): nft marks the start element
    /// with `NFTNL_SET_ELEM_F_INTERVAL_OPEN` in its userdata.
    pub(crate) open: bool,
    /// Index of the IR element this comes from (the leading end element at 0 belongs to the first one).
    pub(crate) ir: usize,
}

fn elem(v: u128, len: u8, end: bool, open: bool, ir: usize) -> Elem {
    let mut key = [0u8; 16];
    let be = v.to_be_bytes();
    key[..len as usize].copy_from_slice(&be[16 - len as usize..]);
    Elem {
        key,
        len,
        end,
        open,
        ir,
    }
}

/// Bytes of a key of a set of type `t`.
pub(crate) fn key_len(t: SetType) -> u8 {
    match t {
        SetType::Ipv4Addr | SetType::Ipv4Hosts => 4,
        SetType::Ipv6Addr | SetType::Ipv6Hosts => 16,
        SetType::InetService => 2,
    }
}

/// The highest key of `len` bytes.
pub(crate) fn key_max(len: u8) -> u128 {
    if len == 16 {
        u128::MAX
    } else {
        (1u128 << (8 * len as u32)) - 1
    }
}

/// The first and last value an IR element covers.
pub(crate) fn bounds(e: &SetElement) -> (u128, u128) {
    match e {
        SetElement::V4(n) => (
            u32::from(n.network()) as u128,
            u32::from(n.broadcast()) as u128,
        ),
        SetElement::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
        SetElement::Ports(a, b) => (*a as u128, *b as u128),
    }
}

/// The leading end element at 0 that nft puts before a first range that does not start at 0.
pub(crate) fn leading_end(len: u8) -> Elem {
    elem(0, len, true, false, 0)
}

/// Whether a set of type `t` whose lowest range starts at `first` holds the [`leading_end`] element:
/// an interval set that is not empty and does not start at 0 (a hash set never does).
pub(crate) fn has_leading_end(t: SetType, first: Option<u128>) -> bool {
    t.is_interval() && first.is_some_and(|lo| lo != 0)
}

/// The elements of one range [lo, hi] (IR element `ir`) of a set of type `t`. In an interval set: the
/// start `lo`, then `hi + 1` flagged INTERVAL_END, or nothing more if `hi` is the top of the space (then
/// `lo` carries the open-interval userdata). In a hash set (`lo == hi`): the key alone, as nft sends it.
pub(crate) fn range_elems(t: SetType, lo: u128, hi: u128, ir: usize) -> impl Iterator<Item = Elem> {
    let len = key_len(t);
    let open = t.is_interval() && hi >= key_max(len);
    let end = (t.is_interval() && !open).then(|| elem(hi + 1, len, true, false, ir));
    std::iter::once(elem(lo, len, false, open, ir)).chain(end)
}

/// The elements of a set in nft's encoding: for an interval set a leading end element at 0 unless the
/// first range starts at 0, then [`range_elems`] of every range; for a hash set its keys.
pub(crate) fn kernel_elems(set: &Set) -> impl Iterator<Item = Elem> + '_ {
    let t = set.set_type;
    set.elements.iter().enumerate().flat_map(move |(i, e)| {
        let (lo, hi) = bounds(e);
        let lead = (i == 0 && has_leading_end(t, Some(lo))).then(|| leading_end(key_len(t)));
        lead.into_iter().chain(range_elems(t, lo, hi, i))
    })
}

/// nft's userdata of a start element whose range reaches the top of the space.
pub(crate) fn open_udata() -> Vec<u8> {
    let mut u = Vec::with_capacity(6);
    nl::udata_tlv(
        &mut u,
        nl::NFTNL_UDATA_SET_ELEM_FLAGS,
        &nl::NFTNL_SET_ELEM_F_INTERVAL_OPEN.to_ne_bytes(),
    );
    u
}

pub(crate) fn key_value(key: &[u8]) -> u128 {
    key.iter().fold(0u128, |v, b| (v << 8) | *b as u128)
}

/// The kernel's elements of an interval set as (leading end element at 0 present, ranges), or None when
/// they are not exactly what nft (and `batch::interval_elems`) writes: starts and ends alternating, an
/// end element only at the first value after a range, the open-interval userdata on (only) a last range
/// that reaches the top, nothing else.
pub(crate) fn kernel_ranges(elems: &[KElem], len: u8) -> Option<(bool, Vec<(u128, u128)>)> {
    let open = open_udata();
    let mut leading = false;
    // (value, is start, open)
    let mut v: Vec<(u128, bool, bool)> = Vec::with_capacity(elems.len());
    for e in elems {
        if e.other || e.key.len() != len as usize || e.flags & !nl::NFT_SET_ELEM_INTERVAL_END != 0 {
            return None;
        }
        let value = key_value(&e.key);
        if e.flags & nl::NFT_SET_ELEM_INTERVAL_END != 0 {
            if e.userdata.is_some() {
                return None;
            }
            if value == 0 {
                if leading {
                    return None;
                }
                leading = true;
            } else {
                v.push((value, false, false));
            }
        } else {
            let is_open = match e.userdata.as_deref() {
                None => false,
                Some(u) if u == open.as_slice() => true,
                Some(_) => return None,
            };
            v.push((value, true, is_open));
        }
    }
    // At one value, the end of a range sorts before the start of the next.
    v.sort_unstable_by_key(|&(value, start, _)| (value, start));
    let mut ranges = Vec::with_capacity(v.len() / 2 + 1);
    let mut it = v.into_iter().peekable();
    while let Some((lo, start, is_open)) = it.next() {
        if !start {
            return None;
        }
        match it.peek() {
            Some(&(end, false, _)) => {
                if is_open || end <= lo {
                    return None;
                }
                it.next();
                ranges.push((lo, end - 1));
            }
            Some(_) => return None, // two starts in a row
            None if is_open => ranges.push((lo, key_max(len))),
            None => return None,
        }
    }
    Some((leading, ranges))
}

/// The kernel's elements of a hash set as one-value ranges, sorted, or None when they are not exactly
/// what nft writes (keys of the set's length, no flags, no userdata) or when the dump cannot be
/// trusted: an element seen twice. A hash set is dumped in hash-table order, resumed by position for
/// every answer; when the kernel grows the table in between (it does so in the background for a few
/// seconds after a big set is loaded) the order changes, and the dump repeats some elements and misses
/// as many others. Diffing such a dump deleted elements twice (measured: the transaction was rejected);
/// None makes the swap re-create the set instead.
pub(crate) fn kernel_hosts(elems: &[KElem], len: u8) -> Option<Vec<(u128, u128)>> {
    let mut hosts = Vec::with_capacity(elems.len());
    for e in elems {
        if e.other || e.key.len() != len as usize || e.flags != 0 || e.userdata.is_some() {
            return None;
        }
        let v = key_value(&e.key);
        hosts.push((v, v));
    }
    hosts.sort_unstable();
    if hosts.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    Some(hosts)
}

/// The element changes that turn a set of type `t` holding the ranges `old` (sorted; with the leading
/// end element when `old_leading`) into one holding `new` (sorted): per range, a range of `old` not in
/// `new` is deleted whole (start and end element), one of `new` not in `old` is added whole; the leading
/// end element follows the first range. `ir` of a deleted element is its index in `old` (the third
/// field), of an added one its index in `new`. The only element differ: `delta.rs` (IR against IR) and
/// the staged swap (the kernel's elements against the IR) both use it.
pub(crate) fn diff_ranges(
    t: SetType,
    old_leading: bool,
    old: &[(u128, u128, usize)],
    new: &[(u128, u128, usize)],
) -> RangeDiff {
    let len = key_len(t);
    let want_leading = has_leading_end(t, new.first().map(|f| f.0));
    let mut d = RangeDiff::default();
    match (old_leading, want_leading) {
        (true, false) => d.remove.push(leading_end(len)),
        (false, true) => d.add.push(leading_end(len)),
        _ => {}
    }
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (None, None) => break,
            (Some(a), Some(b)) if (a.0, a.1) == (b.0, b.1) => {
                i += 1;
                j += 1;
            }
            (Some(a), b) if b.is_none_or(|b| (a.0, a.1) < (b.0, b.1)) => {
                d.remove.extend(range_elems(t, a.0, a.1, a.2));
                d.removed += 1;
                i += 1;
            }
            (_, Some(b)) => {
                d.add.extend(range_elems(t, b.0, b.1, b.2));
                d.added += 1;
                j += 1;
            }
            (Some(_), None) => unreachable!("handled by the arm above"),
        }
    }
    d
}

/// What [`diff_ranges`] found: kernel elements to delete, then to add; ranges deleted and added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeDiff {
    pub(crate) remove: Vec<Elem>,
    pub(crate) add: Vec<Elem>,
    pub(crate) removed: usize,
    pub(crate) added: usize,
}

/// Ranges `(first value, last value, index)`, sorted.
pub(crate) type Ranges = Vec<(u128, u128, usize)>;

/// (first value, last value, IR index) of every element of `set`, sorted.
pub(crate) fn ir_ranges(set: &Set) -> Vec<(u128, u128, usize)> {
    let mut v: Vec<(u128, u128, usize)> = set
        .elements
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (lo, hi) = bounds(e);
            (lo, hi, i)
        })
        .collect();
    // The compiler's elements are already in order: checking is O(n), sorting 100,000 is not.
    if !v.is_sorted() {
        v.sort_unstable();
    }
    v
}

/// The kernel's elements of a set of `set`'s type as (leading end element present, ranges), or None
/// when they are not in our encoding (see [`kernel_ranges`], [`kernel_hosts`]).
pub(crate) fn kernel_set_ranges(set: &Set, elems: &[KElem]) -> Option<(bool, Ranges)> {
    let t = set.set_type;
    let len = key_len(t);
    let (leading, ranges) = if t.is_interval() {
        kernel_ranges(elems, len)?
    } else {
        (false, kernel_hosts(elems, len)?)
    };
    Some((
        leading,
        ranges.into_iter().map(|(lo, hi)| (lo, hi, 0)).collect(),
    ))
}

/// True when the kernel's `elems` are exactly what [`kernel_elems`] writes for `set`.
pub(crate) fn kernel_holds(set: &Set, elems: &[KElem]) -> bool {
    let Some((leading, held)) = kernel_set_ranges(set, elems) else {
        return false;
    };
    let want = ir_ranges(set);
    leading == has_leading_end(set.set_type, want.first().map(|f| f.0))
        && held.len() == want.len()
        && held
            .iter()
            .zip(&want)
            .all(|(a, b)| (a.0, a.1) == (b.0, b.1))
}
