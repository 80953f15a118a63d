//! From uniform rectangles with their verdicts to the regions `plan` prints: rectangles with the same
//! verdicts and deciders are merged into products (two products that agree in every dimension but one
//! are one product, whose set in that dimension is the union), then written as CIDRs, port ranges and
//! protocol names, and an IPv4 and an IPv6 product of the same kind become one region (a region holds
//! only packets whose source and destination are of one family).

use std::collections::HashMap;

use super::space::{
    cidrs, port_kind, Fam, PortKind, Rect, Set, DIMS, DPORT, DST, PROTO, SPORT, SRC,
};
use super::{CellKey, Region};
use crate::compile::proto_name;

type Prod = [Set; DIMS];

fn from_rect(r: &Rect) -> Prod {
    std::array::from_fn(|d| Set::range(r.lo[d], r.hi[d]))
}

/// Merges products along `dim`: those equal in every other dimension become one. Across protocols
/// only when the port dimensions hold everything (they mean ports for some protocols, ICMP types for
/// others).
fn merge_dim(v: Vec<Prod>, dim: usize, fam: Fam) -> Vec<Prod> {
    let mut index: HashMap<Vec<Set>, usize> = HashMap::new();
    let mut out: Vec<Prod> = Vec::with_capacity(v.len());
    for p in v {
        let ports_full = p[SPORT].is_full(fam.max(SPORT)) && p[DPORT].is_full(fam.max(DPORT));
        let key: Vec<Set> = (0..DIMS)
            .filter(|&d| d != dim || (dim == PROTO && !ports_full))
            .map(|d| p[d].clone())
            .collect();
        match index.get(&key) {
            Some(&i) => out[i][dim] = out[i][dim].union(&p[dim]),
            None => {
                index.insert(key, out.len());
                out.push(p);
            }
        }
    }
    out
}

fn merge_products(mut v: Vec<Prod>, fam: Fam) -> Vec<Prod> {
    loop {
        let n = v.len();
        for d in [DPORT, SPORT, DST, SRC, PROTO] {
            v = merge_dim(v, d, fam);
        }
        if v.len() == n {
            return v;
        }
    }
}

fn port_text(set: &Set) -> Vec<String> {
    set.ranges()
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect()
}

/// ICMP `type * 256 + code` ranges as `TYPE`, `TYPE-TYPE`, `TYPE/CODE` or `TYPE/CODE-CODE`.
fn icmp_text(set: &Set) -> Vec<String> {
    let mut out = Vec::new();
    for &(lo, hi) in set.ranges() {
        let mut cur = lo;
        while cur <= hi {
            let t = cur >> 8;
            if cur & 0xff == 0 && hi >= (cur | 0xff) {
                // Whole types from here.
                let last_type = if hi & 0xff == 0xff {
                    hi >> 8
                } else {
                    (hi >> 8) - 1
                };
                out.push(if last_type == t {
                    t.to_string()
                } else {
                    format!("{t}-{last_type}")
                });
                cur = (last_type + 1) << 8;
            } else {
                let end = hi.min(cur | 0xff);
                let (c1, c2) = (cur & 0xff, end & 0xff);
                out.push(if c1 == c2 {
                    format!("{t}/{c1}")
                } else {
                    format!("{t}/{c1}-{c2}")
                });
                cur = end + 1;
            }
        }
    }
    out
}

fn addr_text(fam: Fam, set: &Set) -> Vec<String> {
    let mut nets = Vec::new();
    for &(lo, hi) in set.ranges() {
        cidrs(fam, lo, hi, &mut nets);
    }
    nets.iter().map(|n| n.to_string()).collect()
}

/// One region's protocol part as printed: (proto, not_proto, sport, dport, icmp).
type ProtoPart = (
    String,
    Vec<String>,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<String>>,
);

fn proto_parts(p: &Prod, fam: Fam) -> Vec<ProtoPart> {
    let protos = &p[PROTO];
    let count = protos.count();
    let ports_full = p[SPORT].is_full(fam.max(SPORT)) && p[DPORT].is_full(fam.max(DPORT));
    if count == 256 {
        return vec![("any".into(), Vec::new(), None, None, None)];
    }
    if ports_full && count > 128 {
        let not: Vec<String> = protos
            .complement(255)
            .ranges()
            .iter()
            .flat_map(|&(lo, hi)| lo..=hi)
            .map(|n| proto_name(n as u8))
            .collect();
        return vec![("any".into(), not, None, None, None)];
    }
    let mut out = Vec::new();
    for &(lo, hi) in protos.ranges() {
        for n in lo..=hi {
            let n = n as u8;
            let (sport, dport, icmp) = match port_kind(n) {
                PortKind::Ports => (
                    (!p[SPORT].is_full(65535)).then(|| port_text(&p[SPORT])),
                    Some(port_text(&p[DPORT])),
                    None,
                ),
                PortKind::Icmp => (
                    None,
                    None,
                    (!p[DPORT].is_full(65535)).then(|| icmp_text(&p[DPORT])),
                ),
                PortKind::None => (None, None, None),
            };
            out.push((proto_name(n), Vec::new(), sport, dport, icmp));
        }
    }
    out
}

/// The regions of one path: `template` gives the node, interfaces and direction.
pub(crate) fn regions(template: &Region, cells: Vec<(CellKey, Fam, Rect)>) -> Vec<Region> {
    let mut groups: HashMap<(CellKey, Fam), Vec<Prod>> = HashMap::new();
    for (key, fam, rect) in cells {
        groups.entry((key, fam)).or_default().push(from_rect(&rect));
    }
    let mut groups: Vec<((CellKey, Fam), Vec<Prod>)> = groups.into_iter().collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    // (key, protocol part) -> [IPv4 (src, dst) list, IPv6 list]
    type Addrs = (Vec<String>, Vec<String>);
    type Part = ((CellKey, ProtoPart), [Vec<Addrs>; 2]);
    let mut parts: Vec<Part> = Vec::new();
    let mut at: HashMap<(CellKey, ProtoPart), usize> = HashMap::new();
    for ((key, fam), prods) in groups {
        for p in merge_products(prods, fam) {
            let addrs = (addr_text(fam, &p[SRC]), addr_text(fam, &p[DST]));
            for part in proto_parts(&p, fam) {
                let k = (key.clone(), part);
                let i = *at.entry(k.clone()).or_insert_with(|| {
                    parts.push((k, [Vec::new(), Vec::new()]));
                    parts.len() - 1
                });
                parts[i].1[if fam == Fam::V4 { 0 } else { 1 }].push(addrs.clone());
            }
        }
    }
    let mut out = Vec::new();
    for ((key, (proto, not_proto, sport, dport, icmp)), [v4, v6]) in parts {
        let n = v4.len().max(v6.len());
        for i in 0..n {
            let (mut src, mut dst) = v4.get(i).cloned().unwrap_or_default();
            if let Some((s6, d6)) = v6.get(i) {
                src.extend(s6.iter().cloned());
                dst.extend(d6.iter().cloned());
            }
            out.push(Region {
                proto: proto.clone(),
                not_proto: not_proto.clone(),
                src,
                dst,
                sport: sport.clone(),
                dport: dport.clone(),
                icmp: icmp.clone(),
                before: if key.before { "allow" } else { "deny" },
                after: if key.after { "allow" } else { "deny" },
                before_decided_by: key.before_by.clone(),
                after_decided_by: key.after_by.clone(),
                ..template.clone()
            });
        }
    }
    out
}

fn direction_rank(d: &str) -> u8 {
    match d {
        "ingress" => 0,
        "egress" => 1,
        _ => 2,
    }
}

/// Node, interface, direction, then what changes.
pub fn region_order(a: &Region, b: &Region) -> std::cmp::Ordering {
    (
        &a.node,
        &a.interface,
        direction_rank(a.direction),
        &a.out_interface,
        (a.before, a.after),
        &a.proto,
        &a.dport,
        &a.src,
        &a.dst,
    )
        .cmp(&(
            &b.node,
            &b.interface,
            direction_rank(b.direction),
            &b.out_interface,
            (b.before, b.after),
            &b.proto,
            &b.dport,
            &b.src,
            &b.dst,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_types_and_codes() {
        let s = Set::from_ranges(vec![(8 * 256, 8 * 256 + 255), (3 * 256 + 1, 3 * 256 + 4)]);
        assert_eq!(icmp_text(&s), ["3/1-4", "8"]);
        let s = Set::from_ranges(vec![(3 * 256 + 200, 6 * 256 + 255), (9 * 256, 9 * 256)]);
        assert_eq!(icmp_text(&s), ["3/200-255", "4-6", "9/0"]);
        let s = Set::from_ranges(vec![(0, 65535)]);
        assert_eq!(icmp_text(&s), ["0-255"]);
    }

    #[test]
    fn products_merge_into_one_when_they_agree_elsewhere() {
        let r = |src: (u128, u128), dport: (u128, u128)| {
            let mut p: Prod = std::array::from_fn(|d| Set::full(Fam::V4.max(d)));
            p[PROTO] = Set::point(6);
            p[SRC] = Set::range(src.0, src.1);
            p[DPORT] = Set::range(dport.0, dport.1);
            p
        };
        let v = vec![
            r((0, 9), (80, 80)),
            r((10, 19), (80, 80)),
            r((0, 9), (81, 90)),
            r((10, 19), (81, 90)),
        ];
        let m = merge_products(v, Fam::V4);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0][SRC].ranges(), &[(0, 19)]);
        assert_eq!(m[0][DPORT].ranges(), &[(80, 90)]);
    }
}
