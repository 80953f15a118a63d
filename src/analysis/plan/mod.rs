//! `hostpolicyd plan`: the exact set of packets whose verdict a change of configuration alters, for one
//! node, as regions of packet space (issue 15).
//!
//! # What is computed
//!
//! For every path through the node (in on an interface to a local process, out of an interface from a
//! local process, forwarded from one interface to another) and both address families: the packets of a
//! new connection (no DNAT, conntrack state new) whose verdict under the old configuration differs from
//! their verdict under the new one, as a list of [`Region`]s, each a product of a protocol, source
//! networks, destination networks and destination port ranges (and source ports or ICMP types when the
//! configurations tell them apart), with both verdicts and what decided each.
//!
//! The verdicts are [`crate::analysis::explain`]'s: `plan` evaluates one packet per piece of packet
//! space on which both configurations are constant, with the same evaluator as `explain` (stages,
//! failsafes, profiles and defaults included), so the two never disagree. Exact means:
//!
//! - every packet whose verdict differs lies in some region, and no region holds a packet whose verdict
//!   is the same;
//! - packets delivered to a local process are those to one of the node's addresses (the expectedIPs of
//!   its HostEndpoints, the addresses of its interfaces when they are known, loopback), and packets sent
//!   by one are those from such an address: a family with no known address of the node is taken whole.
//!
//! # How, without enumerating the whole space
//!
//! Each path is a few first-match lists ([`program`]); the old and new lists are aligned element by
//! element ([`diff`]), and only the match regions of the elements that differ (the symmetric difference
//! when one rule changed in one dimension, e.g. a port or a set of networks) can hold packets whose
//! verdict changes: that zone alone is cut into uniform pieces ([`solve`]) and evaluated. Pieces with the
//! same verdicts and deciders are then merged back into products ([`merge`]). A change that touches
//! every packet of a path (a new HostEndpoint, new failsafe ports) makes the zone the whole path.

pub mod diff;
pub mod merge;
pub mod program;
pub mod resources;
pub mod rulesets;
pub mod solve;
pub mod space;
pub mod text;

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::analysis::explain::{self, Packet, Path, Step, Verdict};
use crate::config::model::Config;
use crate::resolve::{Interface, NodeView};
use crate::ruleset::{Dir, Kind, Origin};
use program::{ElemId, Side, Way};
use space::{
    addr_value, port_kind, Fam, PortKind, Product, Rect, Set, DPORT, DST, PROTO, SPORT, SRC,
};

/// One configuration resolved for the node being planned.
#[derive(Clone, Copy)]
pub struct Config2<'a> {
    pub config: &'a Config,
    pub view: &'a NodeView,
}

/// What decided a packet's verdict, as `plan --json` writes it: the typed origin of the deciding rule
/// or default ([`Origin`], from `explain`'s deciding step), with the contract's keys: `kind`, `tier`,
/// `policy`, `rule`, `file`, `line` (a rule's place; null for defaults), and the stage, the rule's list
/// and the HostEndpoint whose chain decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DecidedBy {
    /// `policy`, `end-of-tier`, `no-policy`, `failsafe`, `profile`, `dispatch` (no HostEndpoint, or a
    /// workload interface), `conntrack`.
    pub kind: Kind,
    /// `untracked`, `preDNAT`, `normal` or `forward`.
    pub stage: &'static str,
    pub tier: Option<String>,
    pub policy: Option<String>,
    /// `ingress` or `egress`: the policy's rule list the rule is in.
    pub direction: Option<&'static str>,
    /// Index of the rule in that list.
    pub rule: Option<u32>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The HostEndpoint whose chain decided.
    pub host_endpoint: Option<String>,
}

impl DecidedBy {
    pub fn of(s: &Step) -> DecidedBy {
        let o = s
            .origin
            .clone()
            .unwrap_or_else(|| Origin::new(Kind::Structure));
        let policy = o.kind == Kind::Policy;
        let at = o.at.as_ref().filter(|_| policy);
        DecidedBy {
            kind: o.kind,
            stage: s.stage,
            tier: o.tier.as_deref().map(str::to_string),
            policy: o.policy.as_deref().map(str::to_string),
            direction: o.direction.filter(|_| policy).map(Dir::as_str),
            rule: o.rule,
            file: at.map(|p| p.file.to_string()),
            line: at.map(|p| p.line),
            host_endpoint: o.host_endpoint.as_deref().map(str::to_string),
        }
    }
}

/// A region of packet space whose packets all change verdict the same way (see the module
/// documentation; the JSON contract of `plan --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Region {
    pub node: String,
    /// The interface the packet arrives on (ingress, forward) or leaves by (egress); `*` for every
    /// interface no HostEndpoint names, `PREFIX*` for workload interfaces, null for the interfaces that
    /// carry an IP-matched HostEndpoint's expectedIPs (offline, where they are not known).
    pub interface: Option<String>,
    pub host_endpoint: Option<String>,
    /// Forwarded packets: the interface they leave by, and its HostEndpoint.
    pub out_interface: Option<String>,
    pub out_host_endpoint: Option<String>,
    /// `ingress` (to a local process), `egress` (from a local process) or `forward`.
    pub direction: &'static str,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `udplite`, a number, or `any`.
    pub proto: String,
    /// With `proto: any`: the protocols that are not part of the region.
    pub not_proto: Vec<String>,
    pub src: Vec<String>,
    pub dst: Vec<String>,
    /// Source ports, when the region does not hold them all (`N` or `N-M`); null otherwise.
    pub sport: Option<Vec<String>>,
    /// Destination ports (`N` or `N-M`); null when the protocol has no ports.
    pub dport: Option<Vec<String>>,
    /// ICMP types and codes (`TYPE`, `TYPE-TYPE`, `TYPE/CODE`, `TYPE/CODE-CODE`), when the region does not
    /// hold them all; null otherwise.
    pub icmp: Option<Vec<String>>,
    /// `allow` or `deny`.
    pub before: &'static str,
    pub after: &'static str,
    pub before_decided_by: DecidedBy,
    pub after_decided_by: DecidedBy,
}

/// Everything `plan` reports (`plan --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub nodes: Vec<String>,
    /// What the configuration directory is compared with.
    pub compared_with: String,
    pub resources: resources::ResourceChanges,
    pub verdict_changes: Vec<Region>,
    /// Per node: chains, rules, sets and set elements added and removed.
    pub ruleset_changes: Vec<rulesets::RulesetChanges>,
    /// ManagementAccess flows the new configuration would block (`FILE:LINE:COL: error: ...`, as
    /// `check` reports them).
    pub lockout: Vec<String>,
}

/// A class of interfaces that every evaluation treats alike.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IfaceClass {
    /// The name given to `explain` (a real name, `*`, `PREFIX*`, or `/HEP` for the pseudo interface
    /// of an IP-matched HostEndpoint).
    pub repr: String,
    /// What regions call it (None for a pseudo interface).
    pub label: Option<String>,
}

/// Prefix of the pseudo interfaces standing for "the interfaces that carry an IP-matched HostEndpoint's
/// expectedIPs" when planning without live interfaces: `/` cannot be in an interface name.
pub const PSEUDO: &str = "/";

/// Interfaces for resolving a node when its own interfaces are not known (another node, or `--against`
/// in CI): one pseudo interface per IP-matched HostEndpoint of the node, carrying its expectedIPs.
pub fn pseudo_interfaces(configs: &[&Config], node: &str) -> Vec<Interface> {
    let mut out: Vec<Interface> = Vec::new();
    for c in configs {
        for h in &c.host_endpoints {
            let ip_matched = h.interface_name.as_deref().is_none_or(str::is_empty);
            if h.node != node || !ip_matched || h.expected_ips.is_empty() {
                continue;
            }
            let name = format!("{PSEUDO}{}", h.name);
            match out.iter_mut().find(|i| i.name == name) {
                Some(i) => {
                    for a in &h.expected_ips {
                        if !i.addrs.contains(a) {
                            i.addrs.push(*a);
                        }
                    }
                }
                None => out.push(Interface {
                    name,
                    addrs: h.expected_ips.clone(),
                }),
            }
        }
    }
    out
}

fn iface_classes(sides: [&Side; 2]) -> Vec<IfaceClass> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut prefixes: BTreeSet<String> = BTreeSet::new();
    for s in sides {
        for ep in &s.view.endpoints {
            names.extend(ep.interfaces.iter().cloned());
        }
        prefixes.extend(
            s.view
                .settings
                .workload_prefixes
                .iter()
                .filter(|p| !p.is_empty())
                .cloned(),
        );
    }
    // Loopback traffic has addresses of its own (127.0.0.0/8, ::1): a class of its own.
    names.insert("lo".to_string());
    let mut out: Vec<IfaceClass> = names
        .into_iter()
        .map(|n| IfaceClass {
            label: (!n.starts_with(PSEUDO)).then(|| n.clone()),
            repr: n,
        })
        .collect();
    for p in prefixes {
        let repr = format!("{p}*");
        out.push(IfaceClass {
            label: Some(repr.clone()),
            repr,
        });
    }
    out.push(IfaceClass {
        repr: "*".into(),
        label: Some("*".into()),
    });
    out
}

/// The node's own addresses per family (None: none known, every address), for the destination of
/// packets to a local process and the source of packets from one: its HostEndpoints' expectedIPs and
/// the live addresses of its interfaces; with `loopback`, also 127.0.0.0/8 and ::1 (on `lo`).
fn local_addresses(
    sides: [&Side; 2],
    node: &str,
    live: &[IpAddr],
    loopback: bool,
) -> [Option<Set>; 2] {
    let mut known: Vec<IpAddr> = live.to_vec();
    for s in sides {
        for h in s.config.host_endpoints.iter().filter(|h| h.node == node) {
            known.extend(h.expected_ips.iter().copied());
        }
    }
    Fam::BOTH.map(|fam| {
        let mut ranges: Vec<(u128, u128)> = known
            .iter()
            .filter(|a| Fam::of(**a) == fam && !a.is_loopback())
            .map(|a| (addr_value(*a), addr_value(*a)))
            .collect();
        if ranges.is_empty() {
            return None;
        }
        if loopback {
            match fam {
                Fam::V4 => ranges.push((0x7f00_0000, 0x7fff_ffff)),
                Fam::V6 => ranges.push((1, 1)),
            }
        }
        Some(Set::from_ranges(ranges))
    })
}

/// A piece of packet space with its verdicts before and after.
#[derive(Debug, Clone)]
struct Cell {
    key: CellKey,
    fam: Fam,
    rect: Rect,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CellKey {
    before: bool,
    after: bool,
    before_by: DecidedBy,
    after_by: DecidedBy,
}

/// The first packet of a rectangle.
fn packet(path: &Path, fam: Fam, r: &Rect) -> Packet {
    let protocol = r.lo[PROTO] as u8;
    let mut p = Packet::new(
        path.clone(),
        fam.addr(r.lo[SRC]),
        fam.addr(r.lo[DST]),
        protocol,
    );
    match port_kind(protocol) {
        PortKind::Ports => {
            p.sport = Some(r.lo[SPORT] as u16);
            p.dport = Some(r.lo[DPORT] as u16);
        }
        PortKind::Icmp => {
            p.icmp_type = Some((r.lo[DPORT] >> 8) as u8);
            p.icmp_code = Some((r.lo[DPORT] & 0xff) as u8);
        }
        PortKind::None => {}
    }
    p
}

/// The zone of one program pair in one family: where the programs' unmatched elements match.
fn zone_of(
    before: &Side,
    after: &Side,
    a: &[ElemId],
    b: &[ElemId],
    fam: Fam,
    out: &mut Vec<Product>,
) {
    let fa: Vec<[u8; 16]> = a.iter().map(|&i| before.elems[i].fp).collect();
    let fb: Vec<[u8; 16]> = b.iter().map(|&i| after.elems[i].fp).collect();
    for h in diff::hunks(&fa, &fb) {
        let xs = &a[h.a.0..h.a.1];
        let ys = &b[h.b.0..h.b.1];
        let whole = |out: &mut Vec<Product>, side: &Side, ids: &[ElemId]| {
            for &i in ids {
                let s = side.elems[i].shape(fam);
                if !s.is_never() {
                    out.push(s.prod.clone());
                }
            }
        };
        if xs.len() != ys.len() {
            whole(out, before, xs);
            whole(out, after, ys);
            continue;
        }
        // Positionally paired: a packet that both elements match, or neither, meets the same thing at
        // this place in both programs when they act alike.
        for (&x, &y) in xs.iter().zip(ys) {
            let (ex, ey) = (&before.elems[x], &after.elems[y]);
            let (sx, sy) = (ex.shape(fam), ey.shape(fam));
            if ex.act != ey.act || !sx.exact || !sy.exact {
                whole(out, before, &[x]);
                whole(out, after, &[y]);
                continue;
            }
            let differing: Vec<usize> = (0..space::DIMS)
                .filter(|&d| sx.prod.0[d] != sy.prod.0[d])
                .collect();
            match differing[..] {
                [] => {}
                [d] => {
                    let delta = sx.prod.0[d].sym_diff(&sy.prod.0[d], fam.max(d));
                    let p = sx.prod.with(d, delta);
                    if !p.is_empty() {
                        out.push(p);
                    }
                }
                _ => {
                    whole(out, before, &[x]);
                    whole(out, after, &[y]);
                }
            }
        }
    }
}

/// The verdict changes of one node between two configurations (module documentation). `live` are the
/// node's interface addresses when planning the node itself (empty otherwise).
pub fn node_changes(node: &str, before: Config2, after: Config2, live: &[IpAddr]) -> Vec<Region> {
    let mut b = Side::new(before.config, before.view);
    let mut a = Side::new(after.config, after.view);
    let classes = iface_classes([&b, &a]);
    let local = local_addresses([&b, &a], node, live, false);
    let local_lo = local_addresses([&b, &a], node, live, true);
    // Every path: (way, in, out, programs before, programs after, glue equal).
    struct PathProg {
        way: Way,
        iif: usize,
        oif: usize,
        progs: [Vec<Vec<ElemId>>; 2],
        same_glue: bool,
    }
    let mut paths: Vec<PathProg> = Vec::new();
    let n = classes.len();
    let mut add = |way: Way, i: usize, o: usize, b: &mut Side, a: &mut Side| {
        let (pb, gb) = b.programs(way, &classes[i].repr, &classes[o].repr);
        let (pa, ga) = a.programs(way, &classes[i].repr, &classes[o].repr);
        paths.push(PathProg {
            way,
            iif: i,
            oif: o,
            progs: [pb, pa],
            same_glue: gb == ga,
        });
    };
    for i in 0..n {
        add(Way::Ingress, i, i, &mut b, &mut a);
        add(Way::Egress, i, i, &mut b, &mut a);
    }
    // Nothing is forwarded from or to `lo` (routed to a local address, it is delivered locally).
    let routable: Vec<usize> = (0..n).filter(|&i| classes[i].repr != "lo").collect();
    for &i in &routable {
        for &o in &routable {
            add(Way::Forward, i, o, &mut b, &mut a);
        }
    }
    let cuts = program::proto_cuts(&[&b, &a]);
    let mut regions = Vec::new();
    for path in &paths {
        let explain_path = match path.way {
            Way::Ingress => Path::Inbound {
                iface: classes[path.iif].repr.clone(),
            },
            Way::Egress => Path::Outbound {
                iface: classes[path.oif].repr.clone(),
            },
            Way::Forward => Path::Forwarded {
                in_iface: classes[path.iif].repr.clone(),
                out_iface: classes[path.oif].repr.clone(),
            },
        };
        let mut cells: Vec<Cell> = Vec::new();
        for fam in Fam::BOTH {
            let mut zone: Vec<Product> = Vec::new();
            if path.same_glue {
                for (pb, pa) in path.progs[0].iter().zip(&path.progs[1]) {
                    zone_of(&b, &a, pb, pa, fam, &mut zone);
                }
            } else {
                zone.push(Product::full(fam));
            }
            // Local delivery and local sending: the node's own addresses only.
            let local_dim = match path.way {
                Way::Ingress => Some(DST),
                Way::Egress => Some(SRC),
                Way::Forward => None,
            };
            let fi = if fam == Fam::V4 { 0 } else { 1 };
            let lo = path.iif == path.oif && classes[path.iif].repr == "lo";
            let local = if lo { &local_lo[fi] } else { &local[fi] };
            if let (Some(d), Some(set)) = (local_dim, local) {
                let set = Arc::new(set.clone());
                for z in &mut zone {
                    z.0[d] = Arc::new(z.0[d].intersect(&set));
                }
            }
            zone.retain(|z| !z.is_empty());
            if zone.is_empty() {
                continue;
            }
            // Every element either side meets on this path.
            let mut seen: HashSet<(usize, ElemId)> = HashSet::new();
            let mut shapes = Vec::new();
            for (si, side) in [&b, &a].into_iter().enumerate() {
                for prog in &path.progs[si] {
                    for &id in prog {
                        if seen.insert((si, id)) {
                            let s = side.elems[id].shape(fam);
                            if !s.is_never() && !is_full(s, fam) {
                                shapes.push(s);
                            }
                        }
                    }
                }
            }
            let zone_refs: Vec<&Product> = zone.iter().collect();
            for start in Rect::full(fam).split(PROTO, &cuts) {
                for rect in solve::solve(start, &zone_refs, &shapes) {
                    let p = packet(&explain_path, fam, &rect);
                    let (vb, sb) = explain::verdict(before.config, before.view, &p);
                    let (va, sa) = explain::verdict(after.config, after.view, &p);
                    if vb == va {
                        continue;
                    }
                    cells.push(Cell {
                        key: CellKey {
                            before: vb == Verdict::Allow,
                            after: va == Verdict::Allow,
                            before_by: DecidedBy::of(&sb),
                            after_by: DecidedBy::of(&sa),
                        },
                        fam,
                        rect,
                    });
                }
            }
        }
        if cells.is_empty() {
            continue;
        }
        let hep_name = |repr: &str, wildcard_ok: bool| {
            a.hep_for(repr, wildcard_ok)
                .or_else(|| b.hep_for(repr, wildcard_ok))
                .map(|h| h.name.clone())
        };
        let (iface, oface) = match path.way {
            Way::Ingress => (&classes[path.iif], None),
            Way::Egress => (&classes[path.oif], None),
            Way::Forward => (&classes[path.iif], Some(&classes[path.oif])),
        };
        let template = Region {
            node: node.to_string(),
            interface: iface.label.clone(),
            host_endpoint: hep_name(&iface.repr, true),
            out_interface: oface.and_then(|o| o.label.clone()),
            out_host_endpoint: oface.and_then(|o| hep_name(&o.repr, true)),
            direction: match path.way {
                Way::Ingress => "ingress",
                Way::Egress => "egress",
                Way::Forward => "forward",
            },
            proto: String::new(),
            not_proto: Vec::new(),
            src: Vec::new(),
            dst: Vec::new(),
            sport: None,
            dport: None,
            icmp: None,
            before: "",
            after: "",
            before_decided_by: cells[0].key.before_by.clone(),
            after_decided_by: cells[0].key.after_by.clone(),
        };
        regions.extend(merge::regions(
            &template,
            cells.into_iter().map(|c| (c.key, c.fam, c.rect)).collect(),
        ));
    }
    regions.sort_by(merge::region_order);
    regions.dedup();
    regions
}

/// A shape that matches everything adds no cut: left out of the solver's lists.
fn is_full(s: &program::Shape, fam: Fam) -> bool {
    s.extra.is_empty() && (0..space::DIMS).all(|d| s.prod.0[d].is_full(fam.max(d)))
}

#[cfg(test)]
mod tests;
