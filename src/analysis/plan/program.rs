//! The evaluation of one path through the node, as lists of guarded actions ("programs"), so that two
//! configurations can be compared rule by rule.
//!
//! [`crate::analysis::explain`] walks, for a packet on a path, at most four endpoint chains (untracked,
//! preDNAT, normal or forward ingress, forward egress), each a first-match list: failsafe entries, the
//! rules of the stage's policies in order (a tier is first-match across its policies: Allow and Deny end
//! it, Pass jumps past its end, Log does nothing to the verdict), the end-of-tier deny, the profile, the
//! default. A program is that list, with each element's match region (a [`Shape`]) and a fingerprint of
//! what it does. Two programs that differ only in some elements give every packet that matches none of
//! those elements the same verdict (deleting an element a packet does not match does not change the
//! packet's walk); so the packets whose verdict can change lie in the match regions of the elements that
//! the alignment of the two programs ([`super::diff`]) leaves unmatched. That is the zone `plan` then
//! evaluates exactly, with `explain`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::space::{addr_value, Fam, Product, Rect, Set, DIMS, DPORT, DST, PROTO, SPORT, SRC};
use crate::compile::DEFAULT_ALLOW_PROFILE;
use crate::config::model::{
    proto, Action, Config, EntityRule, IcmpMatch, NamespaceScope, Port, ProtoPort, Rule,
};
use crate::resolve::{tier_groups, ActiveEndpoint, AddressSet, Dir, NodeView, SelectorKey, Stage};

/// What an element does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Act {
    Allow,
    Deny,
    /// Skip the rest of the tier.
    Pass,
    /// Leave this chain with no verdict (a failsafe entry in raw or mangle).
    Exit,
    /// The end of a tier that does not drop: what reaches it goes on with the next tier; a Pass in
    /// the tier jumps just past it.
    Next,
}

/// Where an element matches, in one family: an over-approximation as a product of one set per dimension
/// (exact when `exact`), and the further values where its match may change (`extra`: the named ports'
/// addresses, ports and protocols, whose combinations a product cannot say exactly).
#[derive(Debug, Clone)]
pub struct Shape {
    pub prod: Product,
    pub exact: bool,
    pub extra: Vec<(usize, Arc<Set>)>,
}

impl Shape {
    pub fn all(fam: Fam) -> Shape {
        Shape {
            prod: Product::full(fam),
            exact: true,
            extra: Vec::new(),
        }
    }

    pub fn never(fam: Fam) -> Shape {
        let mut s = Shape::all(fam);
        s.prod.0[PROTO] = Arc::new(Set::empty());
        s
    }

    pub fn is_never(&self) -> bool {
        self.prod.is_empty()
    }

    /// The values in `b`'s range of `dim` (excluding its first) where this element's match may change.
    pub fn cuts_in(&self, b: &Rect, dim: usize, out: &mut Vec<u128>) {
        self.prod.0[dim].cuts_in(b.lo[dim], b.hi[dim], out);
        for (d, set) in &self.extra {
            if *d == dim {
                set.cuts_in(b.lo[dim], b.hi[dim], out);
            }
        }
    }
}

/// One element of a program.
#[derive(Debug, Clone)]
pub struct Elem {
    pub act: Act,
    /// What the element does, for the alignment: equal fingerprints mean the same action on the same
    /// packets (positions, names and files do not count).
    pub fp: [u8; 16],
    pub shapes: [Shape; 2],
}

impl Elem {
    pub fn shape(&self, fam: Fam) -> &Shape {
        match fam {
            Fam::V4 => &self.shapes[0],
            Fam::V6 => &self.shapes[1],
        }
    }
}

pub type ElemId = usize;

/// One configuration as `plan` compares it: the model, this node's view, and the elements made so
/// far (shared by every program that holds them).
pub struct Side<'a> {
    pub config: &'a Config,
    pub view: &'a NodeView,
    pub elems: Vec<Elem>,
    rules: HashMap<(usize, Dir, usize), ElemId>,
    fixed: HashMap<String, ElemId>,
    sets: HashMap<(SelectorKey, Fam), (Arc<Set>, [u8; 16])>,
}

fn fingerprint(text: &str) -> [u8; 16] {
    let d = Sha256::digest(text.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// The chains a packet meets on a path, in order (see [`Side::programs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    /// Arrives on the interface for a local process.
    Ingress,
    /// Sent by a local process out of the interface.
    Egress,
    /// Arrives on the first interface, routed out of the second.
    Forward,
}

impl<'a> Side<'a> {
    pub fn new(config: &'a Config, view: &'a NodeView) -> Side<'a> {
        Side {
            config,
            view,
            elems: Vec::new(),
            rules: HashMap::new(),
            fixed: HashMap::new(),
            sets: HashMap::new(),
        }
    }

    pub fn is_workload(&self, iface: &str) -> bool {
        self.view
            .settings
            .workload_prefixes
            .iter()
            .any(|p| !p.is_empty() && iface.starts_with(p.as_str()))
    }

    /// The HostEndpoint that governs `iface` (as `explain` finds it).
    pub fn hep_for(&self, iface: &str, wildcard_ok: bool) -> Option<&'a ActiveEndpoint> {
        let view: &'a NodeView = self.view;
        view.endpoints
            .iter()
            .find(|ep| ep.interfaces.iter().any(|i| i == iface))
            .or(if wildcard_ok {
                view.wildcard.as_ref()
            } else {
                None
            })
    }

    /// The programs of the chains a packet meets on a path, in the order `explain` walks them, and a
    /// summary of the fixed glue between them (which must be equal on both sides for the programs to
    /// say everything).
    pub fn programs(&mut self, way: Way, iif: &str, oif: &str) -> (Vec<Vec<ElemId>>, String) {
        match way {
            Way::Ingress => {
                let u = self.untracked(iif, Dir::Ingress);
                let p = self.pre_dnat(iif);
                let n = self.normal(iif, Dir::Ingress);
                (vec![u, p, n], format!("w{}", self.is_workload(iif)))
            }
            Way::Egress => {
                let u = self.untracked(oif, Dir::Egress);
                let n = self.normal(oif, Dir::Egress);
                (vec![u, n], format!("w{}", self.is_workload(oif)))
            }
            Way::Forward => {
                let u = self.untracked(iif, Dir::Ingress);
                let p = self.pre_dnat(iif);
                let fi = self.forward(iif, Dir::Ingress);
                let fo = self.forward(oif, Dir::Egress);
                (vec![u, p, fi, fo], String::new())
            }
        }
    }

    fn untracked(&mut self, iface: &str, dir: Dir) -> Vec<ElemId> {
        let Some(hep) = self
            .hep_for(iface, false)
            .filter(|h| !h.policies.get(Stage::Untracked, dir).is_empty())
        else {
            return Vec::new();
        };
        let s = &self.view.settings;
        let (own, other) = match dir {
            Dir::Ingress => (s.failsafe_inbound.clone(), s.failsafe_outbound.clone()),
            Dir::Egress => (s.failsafe_outbound.clone(), s.failsafe_inbound.clone()),
        };
        let mut prog = Vec::new();
        for e in &own {
            prog.push(self.failsafe(e, dir, false, Act::Exit));
        }
        for e in &other {
            prog.push(self.failsafe(e, dir, true, Act::Exit));
        }
        self.tier(&mut prog, hep, Stage::Untracked, dir);
        prog
    }

    fn pre_dnat(&mut self, iface: &str) -> Vec<ElemId> {
        let Some(hep) = self
            .hep_for(iface, true)
            .filter(|h| !h.policies.pre_dnat_ingress.is_empty())
        else {
            return Vec::new();
        };
        let mut prog = Vec::new();
        for e in &self.view.settings.failsafe_inbound.clone() {
            prog.push(self.failsafe(e, Dir::Ingress, false, Act::Exit));
        }
        self.tier(&mut prog, hep, Stage::PreDnat, Dir::Ingress);
        prog
    }

    fn normal(&mut self, iface: &str, dir: Dir) -> Vec<ElemId> {
        if self.is_workload(iface) {
            return vec![self.marker("workload", Act::Allow)];
        }
        let Some(hep) = self.hep_for(iface, true) else {
            return vec![self.marker("not-policed", Act::Allow)];
        };
        let list = match dir {
            Dir::Ingress => self.view.settings.failsafe_inbound.clone(),
            Dir::Egress => self.view.settings.failsafe_outbound.clone(),
        };
        let mut prog = Vec::new();
        for e in &list {
            prog.push(self.failsafe(e, dir, false, Act::Allow));
        }
        self.tier(&mut prog, hep, Stage::Normal, dir);
        if hep.profiles.iter().any(|p| p == DEFAULT_ALLOW_PROFILE) {
            prog.push(self.marker("profile-default-allow", Act::Allow));
        }
        prog.push(self.marker("default-deny", Act::Deny));
        prog
    }

    fn forward(&mut self, iface: &str, dir: Dir) -> Vec<ElemId> {
        let Some(hep) = self.hep_for(iface, true) else {
            return Vec::new();
        };
        if !hep.policies.has_forward_policy() {
            return vec![self.marker("forward-default", Act::Allow)];
        }
        let mut prog = Vec::new();
        self.tier(&mut prog, hep, Stage::Forward, dir);
        prog
    }

    /// The rules of a stage's policies, tier by tier (tiers spec §3.2), each tier closed by its end:
    /// the end-of-tier deny where the tier's end drops, otherwise a boundary that a Pass jumps past.
    fn tier(&mut self, prog: &mut Vec<ElemId>, hep: &ActiveEndpoint, stage: Stage, dir: Dir) {
        let config: &'a Config = self.config;
        for group in tier_groups(config, hep.policies.get(stage, dir)) {
            for &idx in group.policies {
                let policy = &config.policies[idx];
                let rules = match dir {
                    Dir::Ingress => &policy.ingress,
                    Dir::Egress => &policy.egress,
                };
                for (i, rule) in rules.iter().enumerate() {
                    if rule.action == Action::Log {
                        continue;
                    }
                    prog.push(self.rule(idx, dir, i, rule));
                }
            }
            let end = if group.ends_with_drop(stage) {
                self.marker(&format!("end-of-tier {}", group.name), Act::Deny)
            } else {
                self.marker(&format!("tier-end {}", group.name), Act::Next)
            };
            prog.push(end);
        }
    }

    fn marker(&mut self, what: &str, act: Act) -> ElemId {
        let key = format!("marker {what} {act:?}");
        if let Some(&id) = self.fixed.get(&key) {
            return id;
        }
        let id = self.push(Elem {
            act,
            fp: fingerprint(&key),
            shapes: [Shape::all(Fam::V4), Shape::all(Fam::V6)],
        });
        self.fixed.insert(key, id);
        id
    }

    /// A failsafe entry: the packet's protocol and destination port (source port for `reply`, the raw
    /// stage's replies of the other direction's failsafe connections), and the remote address (the
    /// source inbound, the destination outbound) in its net.
    fn failsafe(&mut self, e: &ProtoPort, dir: Dir, reply: bool, act: Act) -> ElemId {
        let key = format!(
            "failsafe {} {} {:?} {dir:?} {reply} {act:?}",
            e.protocol, e.port, e.net
        );
        if let Some(&id) = self.fixed.get(&key) {
            return id;
        }
        let remote = if dir == Dir::Ingress { SRC } else { DST };
        let port_dim = if reply { SPORT } else { DPORT };
        let shapes = Fam::BOTH.map(|fam| {
            let mut prod = Product::full(fam)
                .with(PROTO, Set::point(u128::from(e.protocol)))
                .with(port_dim, Set::point(u128::from(e.port)));
            if let Some(net) = &e.net {
                prod = prod.with(remote, Set::of_nets(fam, [net]));
            }
            Shape {
                prod,
                exact: true,
                extra: Vec::new(),
            }
        });
        let id = self.push(Elem {
            act,
            fp: fingerprint(&key),
            shapes,
        });
        self.fixed.insert(key, id);
        id
    }

    fn push(&mut self, e: Elem) -> ElemId {
        self.elems.push(e);
        self.elems.len() - 1
    }

    /// A selector's address set in one family, and a fingerprint of its whole content.
    fn selector_set(&mut self, key: &SelectorKey, fam: Fam) -> (Arc<Set>, [u8; 16]) {
        if let Some(v) = self.sets.get(&(key.clone(), fam)) {
            return v.clone();
        }
        let empty = AddressSet::default();
        let set = self.view.selector_sets.get(key).unwrap_or(&empty);
        let mut h = Sha256::new();
        let ranges: Vec<(u128, u128)> = match fam {
            Fam::V4 => set
                .v4
                .iter()
                .map(|n| {
                    h.update(u32::from(n.network()).to_be_bytes());
                    h.update([n.prefix_len()]);
                    (
                        u128::from(u32::from(n.network())),
                        u128::from(u32::from(n.broadcast())),
                    )
                })
                .collect(),
            Fam::V6 => set
                .v6
                .iter()
                .map(|n| {
                    h.update(u128::from(n.network()).to_be_bytes());
                    h.update([n.prefix_len()]);
                    (u128::from(n.network()), u128::from(n.broadcast()))
                })
                .collect(),
        };
        let mut fp = [0u8; 16];
        fp.copy_from_slice(&h.finalize()[..16]);
        let v = (Arc::new(Set::from_ranges(ranges)), fp);
        self.sets.insert((key.clone(), fam), v.clone());
        v
    }

    fn rule(&mut self, policy: usize, dir: Dir, index: usize, rule: &Rule) -> ElemId {
        if let Some(&id) = self.rules.get(&(policy, dir, index)) {
            return id;
        }
        let act = match rule.action {
            Action::Allow => Act::Allow,
            Action::Deny => Act::Deny,
            Action::Pass => Act::Pass,
            Action::Log => unreachable!("Log rules are left out of programs"),
        };
        let mut text = format!(
            "rule {act:?} p{:?} np{:?} i{:?} ni{:?} v{:?}",
            rule.protocol, rule.not_protocol, rule.icmp, rule.not_icmp, rule.ip_version
        );
        let mut shapes = Fam::BOTH.map(Shape::all);
        for (fi, fam) in Fam::BOTH.into_iter().enumerate() {
            let mut fam_text = String::new();
            shapes[fi] = self.rule_shape(rule, fam, &mut fam_text);
            text.push_str(&fam_text);
        }
        let id = self.push(Elem {
            act,
            fp: fingerprint(&text),
            shapes,
        });
        self.rules.insert((policy, dir, index), id);
        id
    }

    /// Where `rule` matches in `fam` (as `explain`'s `rule_matches` decides), and the text of what it
    /// depends on (for the fingerprint).
    fn rule_shape(&mut self, r: &Rule, fam: Fam, text: &mut String) -> Shape {
        let v6 = fam == Fam::V6;
        if r.ip_version.is_some_and(|v| (v == 6) != v6) {
            text.push_str(" never");
            return Shape::never(fam);
        }
        let mut prod = Product::full(fam);
        let mut exact = true;
        let mut extra = Vec::new();
        let mut protos = Set::full(255);
        if let Some(p) = r.protocol {
            protos = Set::point(u128::from(p));
        }
        if let Some(p) = r.not_protocol {
            protos = protos.minus(&Set::point(u128::from(p)), 255);
        }
        prod.0[PROTO] = Arc::new(protos);
        let icmp_family_ok = match r.protocol {
            Some(proto::ICMP) => !v6,
            Some(proto::ICMPV6) => v6,
            _ => true,
        };
        let icmp_set = |m: &IcmpMatch| {
            let t = u128::from(m.icmp_type) * 256;
            match m.code {
                Some(c) => Set::point(t + u128::from(c)),
                None => Set::range(t, t + 255),
            }
        };
        let mut last = Set::full(65535);
        if let Some(m) = &r.icmp {
            if !icmp_family_ok {
                text.push_str(" never");
                return Shape::never(fam);
            }
            last = last.intersect(&icmp_set(m));
        }
        if let Some(m) = &r.not_icmp {
            if !icmp_family_ok {
                text.push_str(" never");
                return Shape::never(fam);
            }
            last = last.minus(&icmp_set(m), 65535);
        }
        if r.icmp.is_some() || r.not_icmp.is_some() {
            prod.0[DPORT] = Arc::new(last);
        }
        for (side, addr_dim, port_dim) in [(&r.source, SRC, SPORT), (&r.destination, DST, DPORT)] {
            text.push_str(if addr_dim == SRC { " S:" } else { " D:" });
            if !self.entity_shape(
                r, side, fam, addr_dim, port_dim, &mut prod, &mut exact, &mut extra, text,
            ) {
                text.push_str(" never");
                return Shape::never(fam);
            }
        }
        Shape { prod, exact, extra }
    }

    /// One side of a rule (spec §1.5): narrows `prod` in the side's address and port dimensions.
    /// False when the side can never match in this family.
    #[allow(clippy::too_many_arguments)]
    fn entity_shape(
        &mut self,
        r: &Rule,
        e: &EntityRule,
        fam: Fam,
        addr_dim: usize,
        port_dim: usize,
        prod: &mut Product,
        exact: &mut bool,
        extra: &mut Vec<(usize, Arc<Set>)>,
        text: &mut String,
    ) -> bool {
        if e.service_accounts {
            return false;
        }
        let amax = fam.addr_max();
        let mut addrs: Option<Arc<Set>> = None;
        let narrow = |addrs: &mut Option<Arc<Set>>, s: Arc<Set>| {
            *addrs = Some(match addrs.take() {
                None => s,
                Some(a) => Arc::new(a.intersect(&s)),
            });
        };
        if !e.nets.is_empty() {
            let s = Set::of_nets(fam, &e.nets);
            text.push_str(&format!(" n{:?}", s.ranges()));
            narrow(&mut addrs, Arc::new(s));
        }
        if !e.not_nets.is_empty() {
            let s = Set::of_nets(fam, &e.not_nets);
            text.push_str(&format!(" nn{:?}", s.ranges()));
            narrow(&mut addrs, Arc::new(s.complement(amax)));
        }
        if let Some(sel) = &e.selector {
            let key = SelectorKey::new(&sel.value, &e.namespace_scope);
            let (set, fp) = self.selector_set(&key, fam);
            text.push_str(&format!(" s{fp:?}"));
            narrow(&mut addrs, set);
        }
        if let Some(sel) = &e.not_selector {
            let key = SelectorKey::new(&sel.value, &e.namespace_scope);
            let (set, fp) = self.selector_set(&key, fam);
            text.push_str(&format!(" ns{fp:?}"));
            narrow(&mut addrs, Arc::new(set.complement(amax)));
        }
        if let Some(a) = addrs {
            prod.0[addr_dim] = a;
        }
        let named = |ports: &[Port]| -> Vec<String> {
            ports
                .iter()
                .filter_map(|p| match p {
                    Port::Named(n) => Some(n.clone()),
                    Port::Range(..) => None,
                })
                .collect()
        };
        let numeric = |ports: &[Port]| -> Set {
            Set::from_ranges(
                ports
                    .iter()
                    .filter_map(|p| match p {
                        Port::Range(lo, hi) => Some((u128::from(*lo), u128::from(*hi))),
                        Port::Named(_) => None,
                    })
                    .collect(),
            )
        };
        let names: Vec<String> = named(&e.ports)
            .into_iter()
            .chain(named(&e.not_ports))
            .collect();
        if names.is_empty() {
            if !e.ports.is_empty() {
                // Numeric ports count only with the rule's protocol (always there: validated), which
                // the protocol dimension already says.
                if r.protocol.is_none() {
                    return false;
                }
                let s = numeric(&e.ports);
                text.push_str(&format!(" p{:?}", s.ranges()));
                let cur = prod.0[port_dim].intersect(&s);
                prod.0[port_dim] = Arc::new(cur);
            }
            if !e.not_ports.is_empty() && r.protocol.is_some() {
                let s = numeric(&e.not_ports);
                text.push_str(&format!(" np{:?}", s.ranges()));
                let cur = prod.0[port_dim].minus(&s, 65535);
                prod.0[port_dim] = Arc::new(cur);
            }
            return true;
        }
        // Named ports (spec §1.6): (address, protocol, port) triples of the HostEndpoints the side's
        // selector picks; numeric entries count only with the rule's protocol. Not a product: the
        // fingerprint takes the triples, the shape keeps the other criteria and cuts at every value the
        // triples and numeric entries use.
        *exact = false;
        let mut triples: Vec<(IpAddr, u8, u16)> = Vec::new();
        if e.namespace_scope != NamespaceScope::Namespaced {
            for hep in &self.config.host_endpoints {
                if !e
                    .selector
                    .as_ref()
                    .is_none_or(|s| s.value.matches(&hep.labels))
                {
                    continue;
                }
                for hp in &hep.ports {
                    if !names.contains(&hp.name) || r.protocol.is_some_and(|p| p != hp.protocol) {
                        continue;
                    }
                    for ip in &hep.expected_ips {
                        if Fam::of(*ip) == fam {
                            triples.push((*ip, hp.protocol, hp.port));
                        }
                    }
                }
            }
        }
        triples.sort();
        triples.dedup();
        let num_pos = numeric(&e.ports);
        let num_neg = numeric(&e.not_ports);
        text.push_str(&format!(
            " named{:?} {:?} p{:?} np{:?} pos{} neg{}",
            named(&e.ports),
            triples,
            num_pos.ranges(),
            num_neg.ranges(),
            e.ports.is_empty(),
            e.not_ports.is_empty()
        ));
        let addr_cuts = Set::from_ranges(
            triples
                .iter()
                .map(|t| (addr_value(t.0), addr_value(t.0)))
                .collect(),
        );
        let port_cuts = Set::from_ranges(
            triples
                .iter()
                .map(|t| (u128::from(t.2), u128::from(t.2)))
                .collect(),
        )
        .union(&num_pos)
        .union(&num_neg);
        let proto_cuts = Set::from_ranges(
            triples
                .iter()
                .map(|t| (u128::from(t.1), u128::from(t.1)))
                .chain(r.protocol.map(|p| (u128::from(p), u128::from(p))))
                .collect(),
        );
        extra.push((addr_dim, Arc::new(addr_cuts)));
        extra.push((port_dim, Arc::new(port_cuts)));
        extra.push((PROTO, Arc::new(proto_cuts)));
        if !e.ports.is_empty() && triples.is_empty() && (num_pos.is_empty() || r.protocol.is_none())
        {
            // Positive ports that nothing can satisfy.
            return false;
        }
        true
    }
}

/// Where packets of different protocols can be told apart: the cut points of every element's protocol
/// set (rules, failsafe entries, named ports), and around each protocol with ports or ICMP fields (the
/// last two dimensions mean something else for each kind). Between two cuts, every element treats all
/// protocols alike.
pub fn proto_cuts(sides: &[&Side]) -> Vec<u128> {
    let mut out: Vec<u128> = Vec::new();
    for p in [
        proto::ICMP,
        proto::TCP,
        proto::UDP,
        proto::ICMPV6,
        proto::SCTP,
        proto::UDPLITE,
    ] {
        out.push(u128::from(p));
        out.push(u128::from(p) + 1);
    }
    for side in sides {
        for e in &side.elems {
            for s in &e.shapes {
                s.prod.0[PROTO].cuts_in(0, 255, &mut out);
                for (d, set) in &s.extra {
                    if *d == PROTO {
                        set.cuts_in(0, 255, &mut out);
                    }
                }
            }
        }
    }
    out.retain(|&c| c > 0 && c <= 255);
    out.sort_unstable();
    out.dedup();
    out
}

const _: () = assert!(DIMS == 5);
