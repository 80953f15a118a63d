//! Packet space as `plan` sees it: five dimensions of integers, sets of intervals in each, and boxes.
//!
//! A packet of one address family is a point `(protocol, source address, destination address, source
//! port, destination port)`; for ICMP and ICMPv6 the last dimension holds `type * 256 + code` instead
//! of a port (and the source port is not used), for other protocols without ports neither is used.
//! Addresses are the integers of their family (IPv4: 32 bits, IPv6: 128 bits): each family is planned on
//! its own, since no packet mixes them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::model::proto;

pub const PROTO: usize = 0;
pub const SRC: usize = 1;
pub const DST: usize = 2;
pub const SPORT: usize = 3;
/// The destination port, or the ICMP type and code (`type * 256 + code`).
pub const DPORT: usize = 4;
pub const DIMS: usize = 5;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fam {
    V4,
    V6,
}

impl Fam {
    pub const BOTH: [Fam; 2] = [Fam::V4, Fam::V6];

    pub fn of(ip: IpAddr) -> Fam {
        if ip.is_ipv4() {
            Fam::V4
        } else {
            Fam::V6
        }
    }

    pub fn of_net(net: &IpNet) -> Fam {
        Fam::of(net.addr())
    }

    pub fn addr_max(self) -> u128 {
        match self {
            Fam::V4 => u128::from(u32::MAX),
            Fam::V6 => u128::MAX,
        }
    }

    /// The largest value of dimension `dim`.
    pub fn max(self, dim: usize) -> u128 {
        match dim {
            PROTO => 255,
            SRC | DST => self.addr_max(),
            _ => 65535,
        }
    }

    pub fn addr(self, v: u128) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
            Fam::V6 => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }
}

pub fn addr_value(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// What the last two dimensions mean for a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortKind {
    /// TCP, UDP, SCTP, UDP-Lite: source and destination ports.
    Ports,
    /// ICMP, ICMPv6: type and code in the last dimension.
    Icmp,
    /// Anything else: neither is used.
    None,
}

pub fn port_kind(p: u8) -> PortKind {
    match p {
        proto::TCP | proto::UDP | proto::SCTP | proto::UDPLITE => PortKind::Ports,
        proto::ICMP | proto::ICMPV6 => PortKind::Icmp,
        _ => PortKind::None,
    }
}

/// A sorted list of disjoint, non-adjacent inclusive intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Set(Vec<(u128, u128)>);

impl Set {
    pub fn empty() -> Set {
        Set(Vec::new())
    }

    pub fn full(max: u128) -> Set {
        Set(vec![(0, max)])
    }

    pub fn range(lo: u128, hi: u128) -> Set {
        if lo <= hi {
            Set(vec![(lo, hi)])
        } else {
            Set::empty()
        }
    }

    pub fn point(v: u128) -> Set {
        Set(vec![(v, v)])
    }

    /// From intervals in any order, overlapping or adjacent.
    pub fn from_ranges(mut v: Vec<(u128, u128)>) -> Set {
        v.retain(|(lo, hi)| lo <= hi);
        if !v.is_sorted() {
            v.sort_unstable();
        }
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Set(out)
    }

    /// The networks of one family, as address intervals.
    pub fn of_nets<'a>(fam: Fam, nets: impl IntoIterator<Item = &'a IpNet>) -> Set {
        Set::from_ranges(
            nets.into_iter()
                .filter(|n| Fam::of_net(n) == fam)
                .map(net_range)
                .collect(),
        )
    }

    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_full(&self, max: u128) -> bool {
        self.0 == [(0, max)]
    }

    pub fn first(&self) -> Option<u128> {
        self.0.first().map(|r| r.0)
    }

    /// How many values it holds (saturating).
    pub fn count(&self) -> u128 {
        self.0.iter().fold(0u128, |n, (lo, hi)| {
            n.saturating_add(hi - lo).saturating_add(1)
        })
    }

    pub fn contains(&self, v: u128) -> bool {
        let i = self.0.partition_point(|r| r.1 < v);
        i < self.0.len() && self.0[i].0 <= v
    }

    /// Whether some value of `lo..=hi` is in the set.
    pub fn intersects_range(&self, lo: u128, hi: u128) -> bool {
        let i = self.0.partition_point(|r| r.1 < lo);
        i < self.0.len() && self.0[i].0 <= hi
    }

    /// Whether every value of `lo..=hi` is in the set.
    pub fn covers_range(&self, lo: u128, hi: u128) -> bool {
        let i = self.0.partition_point(|r| r.1 < lo);
        i < self.0.len() && self.0[i].0 <= lo && hi <= self.0[i].1
    }

    /// The values `c` with `lo < c <= hi` at which membership changes between `c - 1` and `c`.
    pub fn cuts_in(&self, lo: u128, hi: u128, out: &mut Vec<u128>) {
        let mut i = self.0.partition_point(|r| r.1 < lo);
        while i < self.0.len() {
            let (a, b) = self.0[i];
            if a > hi {
                break;
            }
            if a > lo {
                out.push(a);
            }
            if let Some(after) = b.checked_add(1) {
                if after > lo && after <= hi {
                    out.push(after);
                }
            }
            i += 1;
        }
    }

    pub fn intersect(&self, other: &Set) -> Set {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = self.0[i];
            let (c, d) = other.0[j];
            let lo = a.max(c);
            let hi = b.min(d);
            if lo <= hi {
                out.push((lo, hi));
            }
            if b < d {
                i += 1;
            } else {
                j += 1;
            }
        }
        Set(out)
    }

    pub fn union(&self, other: &Set) -> Set {
        let mut v = Vec::with_capacity(self.0.len() + other.0.len());
        v.extend_from_slice(&self.0);
        v.extend_from_slice(&other.0);
        Set::from_ranges(v)
    }

    pub fn complement(&self, max: u128) -> Set {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut next = Some(0u128);
        for &(lo, hi) in &self.0 {
            if let Some(n) = next {
                if lo > n {
                    out.push((n, lo - 1));
                }
            }
            next = hi.checked_add(1);
        }
        if let Some(n) = next {
            if n <= max {
                out.push((n, max));
            }
        }
        Set(out)
    }

    pub fn minus(&self, other: &Set, max: u128) -> Set {
        self.intersect(&other.complement(max))
    }

    pub fn sym_diff(&self, other: &Set, max: u128) -> Set {
        self.minus(other, max).union(&other.minus(self, max))
    }
}

pub fn net_range(n: &IpNet) -> (u128, u128) {
    (addr_value(n.network()), addr_value(n.broadcast()))
}

/// The shortest list of CIDRs covering `lo..=hi` exactly.
pub fn cidrs(fam: Fam, lo: u128, hi: u128, out: &mut Vec<IpNet>) {
    let bits: u32 = match fam {
        Fam::V4 => 32,
        Fam::V6 => 128,
    };
    let mut cur = lo;
    loop {
        // The largest block starting at `cur`, aligned, that does not pass `hi`.
        let align = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        let mut size_log = align;
        while size_log > 0 {
            let last = if size_log >= 128 {
                u128::MAX
            } else {
                cur + ((1u128 << size_log) - 1)
            };
            if last <= hi && last >= cur {
                break;
            }
            size_log -= 1;
        }
        let prefix = (bits - size_log) as u8;
        out.push(match fam {
            Fam::V4 => IpNet::V4(Ipv4Net::new(Ipv4Addr::from(cur as u32), prefix).expect("prefix")),
            Fam::V6 => IpNet::V6(Ipv6Net::new(Ipv6Addr::from(cur), prefix).expect("prefix")),
        });
        let last = if size_log >= 128 {
            u128::MAX
        } else {
            cur + ((1u128 << size_log) - 1)
        };
        if last >= hi {
            break;
        }
        cur = last + 1;
    }
}

/// A product of one set per dimension: the packets whose every coordinate is in its set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Product(pub [Arc<Set>; DIMS]);

impl Product {
    pub fn full(fam: Fam) -> Product {
        Product(std::array::from_fn(|d| Arc::new(Set::full(fam.max(d)))))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().any(|s| s.is_empty())
    }

    pub fn intersects(&self, b: &Rect) -> bool {
        (0..DIMS).all(|d| self.0[d].intersects_range(b.lo[d], b.hi[d]))
    }

    pub fn covers(&self, b: &Rect) -> bool {
        (0..DIMS).all(|d| self.0[d].covers_range(b.lo[d], b.hi[d]))
    }

    pub fn with(&self, dim: usize, set: Set) -> Product {
        let mut p = self.clone();
        p.0[dim] = Arc::new(set);
        p
    }
}

/// A hyper-rectangle: one interval per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    pub lo: [u128; DIMS],
    pub hi: [u128; DIMS],
}

impl Rect {
    pub fn full(fam: Fam) -> Rect {
        Rect {
            lo: [0; DIMS],
            hi: std::array::from_fn(|d| fam.max(d)),
        }
    }

    /// Cuts the rectangle along `dim` at `cuts` (sorted, distinct, each in `lo + 1..=hi`).
    pub fn split(&self, dim: usize, cuts: &[u128]) -> Vec<Rect> {
        let mut out = Vec::with_capacity(cuts.len() + 1);
        let mut lo = self.lo[dim];
        for &c in cuts {
            let mut r = *self;
            r.lo[dim] = lo;
            r.hi[dim] = c - 1;
            out.push(r);
            lo = c;
        }
        let mut r = *self;
        r.lo[dim] = lo;
        out.push(r);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_algebra() {
        let a = Set::from_ranges(vec![(10, 20), (0, 3), (4, 5), (30, 30)]);
        assert_eq!(a.ranges(), &[(0, 5), (10, 20), (30, 30)]);
        let b = Set::from_ranges(vec![(15, 35)]);
        assert_eq!(a.intersect(&b).ranges(), &[(15, 20), (30, 30)]);
        assert_eq!(a.union(&b).ranges(), &[(0, 5), (10, 35)]);
        assert_eq!(a.complement(40).ranges(), &[(6, 9), (21, 29), (31, 40)]);
        assert_eq!(
            a.sym_diff(&b, 40).ranges(),
            &[(0, 5), (10, 14), (21, 29), (31, 35)]
        );
        assert!(a.contains(30) && !a.contains(31) && a.contains(0));
        assert!(a.intersects_range(6, 10) && !a.intersects_range(6, 9));
        assert!(a.covers_range(11, 19) && !a.covers_range(4, 10));
        let mut cuts = Vec::new();
        a.cuts_in(2, 30, &mut cuts);
        assert_eq!(cuts, vec![6, 10, 21, 30]);
        let full = Set::full(u128::MAX);
        assert!(full.complement(u128::MAX).is_empty());
        let mut cuts = Vec::new();
        full.cuts_in(0, u128::MAX, &mut cuts);
        assert!(cuts.is_empty());
    }

    #[test]
    fn ranges_to_cidrs() {
        let mut out = Vec::new();
        let v = |s: &str| addr_value(s.parse().unwrap());
        cidrs(Fam::V4, v("192.0.2.1"), v("192.0.2.9"), &mut out);
        let text: Vec<String> = out.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            text,
            [
                "192.0.2.1/32",
                "192.0.2.2/31",
                "192.0.2.4/30",
                "192.0.2.8/31"
            ]
        );
        out.clear();
        cidrs(Fam::V4, 0, u128::from(u32::MAX), &mut out);
        assert_eq!(out, vec!["0.0.0.0/0".parse::<IpNet>().unwrap()]);
        out.clear();
        cidrs(Fam::V6, 0, u128::MAX, &mut out);
        assert_eq!(out, vec!["::/0".parse::<IpNet>().unwrap()]);
        out.clear();
        cidrs(Fam::V6, 1, u128::MAX, &mut out);
        assert_eq!(out.len(), 128);
    }
}
