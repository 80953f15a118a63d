//! Cutting the zone where two configurations may differ into rectangles on which every element of both
//! is constant, so that one packet per rectangle decides it.
//!
//! Two phases, both recursive splits of a rectangle along one dimension at a time (the one with the
//! fewest cut points, so that each piece meets fewer elements):
//!
//! 1. **Zone**: split along the zone's boundaries until each piece lies inside the zone or outside it;
//!    pieces outside are dropped (the verdict is the same there).
//! 2. **Elements**: split a piece along every boundary of the elements that can match in it, until no
//!    element's match changes inside the piece: the piece is uniform, every packet in it meets the same
//!    matches in every program, so it gets the same verdict as its first packet.
//!
//! Splitting at every boundary of a dimension at once leaves none in that dimension inside the pieces,
//! so each phase splits each dimension at most once on a path from the root.

use super::program::Shape;
use super::space::{port_kind, PortKind, Product, Rect, DIMS, DPORT, PROTO, SPORT};

/// The dimensions that mean something for the protocols of `r` (protocol pieces never mix kinds).
fn active(r: &Rect) -> &'static [usize] {
    match port_kind(r.lo[PROTO] as u8) {
        PortKind::Ports => &[0, 1, 2, 3, 4],
        PortKind::Icmp => &[0, 1, 2, 4],
        PortKind::None => &[0, 1, 2],
    }
}

fn intersects(p: &Product, r: &Rect, dims: &[usize]) -> bool {
    dims.iter()
        .all(|&d| p.0[d].intersects_range(r.lo[d], r.hi[d]))
}

fn covers(p: &Product, r: &Rect, dims: &[usize]) -> bool {
    dims.iter().all(|&d| p.0[d].covers_range(r.lo[d], r.hi[d]))
}

/// The dimension with the fewest cut points (at least one), and its cuts sorted.
fn pick(cuts: [Vec<u128>; DIMS]) -> Option<(usize, Vec<u128>)> {
    let mut best: Option<(usize, Vec<u128>)> = None;
    for (d, mut c) in cuts.into_iter().enumerate() {
        if c.is_empty() {
            continue;
        }
        c.sort_unstable();
        c.dedup();
        if best.as_ref().is_none_or(|(_, b)| c.len() < b.len()) {
            best = Some((d, c));
        }
    }
    best
}

/// The uniform rectangles of `start` that lie in the union of `zone`.
pub fn solve(start: Rect, zone: &[&Product], shapes: &[&Shape]) -> Vec<Rect> {
    let mut out = Vec::new();
    zone_phase(start, zone, shapes, &mut out);
    out
}

fn zone_phase(r: Rect, zone: &[&Product], shapes: &[&Shape], out: &mut Vec<Rect>) {
    let dims = active(&r);
    let zs: Vec<&Product> = zone
        .iter()
        .copied()
        .filter(|z| intersects(z, &r, dims))
        .collect();
    if zs.is_empty() {
        return;
    }
    if zs.iter().any(|z| covers(z, &r, dims)) {
        let inside: Vec<&Shape> = shapes
            .iter()
            .copied()
            .filter(|s| intersects(&s.prod, &r, dims))
            .collect();
        element_phase(r, &inside, out);
        return;
    }
    let mut cuts: [Vec<u128>; DIMS] = Default::default();
    for z in &zs {
        for &d in dims {
            z.0[d].cuts_in(r.lo[d], r.hi[d], &mut cuts[d]);
        }
    }
    let (d, cuts) =
        pick(cuts).expect("a zone that meets a rectangle without covering it has a boundary in it");
    for piece in r.split(d, &cuts) {
        zone_phase(piece, &zs, shapes, out);
    }
}

fn element_phase(r: Rect, shapes: &[&Shape], out: &mut Vec<Rect>) {
    let dims = active(&r);
    let mut cuts: [Vec<u128>; DIMS] = Default::default();
    for s in shapes {
        for &d in dims {
            s.cuts_in(&r, d, &mut cuts[d]);
        }
    }
    let Some((d, cuts)) = pick(cuts) else {
        out.push(r);
        return;
    };
    for piece in r.split(d, &cuts) {
        let dims = active(&piece);
        let inside: Vec<&Shape> = shapes
            .iter()
            .copied()
            .filter(|s| intersects(&s.prod, &piece, dims))
            .collect();
        element_phase(piece, &inside, out);
    }
}

const _: () = assert!(SPORT == 3 && DPORT == 4);
