//! `hostpolicyd explain`: the verdict a packet gets, and the path it took, evaluated on the model.
//!
//! This evaluator follows spec §3.3–§3.6 directly on the validated configuration and the node view, with
//! no knowledge of the nftables encoding. It is therefore also a check on the compiler: the same packets
//! must get the same verdicts here and in the kernel.
//!
//! It describes the first packet of a new connection (conntrack state NEW); replies of an allowed
//! connection are always allowed (spec §3.7).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::compile::DEFAULT_ALLOW_PROFILE;
use crate::model::{proto, Action, Config, EntityRule, GlobalNetworkPolicy, Port, ProtoPort, Rule};
use crate::resolve::{ActiveEndpoint, Dir, NodeView, SelectorKey, Stage};

/// Which way a packet crosses the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Path {
    /// Arrives on `iface` for a local process.
    Inbound { iface: String },
    /// Sent by a local process out of `iface`.
    Outbound { iface: String },
    /// Arrives on `in_iface` and is routed out of `out_iface`.
    Forwarded { in_iface: String, out_iface: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub path: Path,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// Destination after DNAT (kube-proxy), if any: the stages after mangle prerouting see it.
    pub dnat: Option<(IpAddr, Option<u16>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Allow,
    Drop,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "ALLOW",
            Verdict::Drop => "DROP",
        })
    }
}

/// One step of the evaluation, for people (`text`) and scripts (the other fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub stage: &'static str,
    pub host_endpoint: Option<String>,
    pub policy: Option<String>,
    pub rule: Option<usize>,
    /// `FILE:LINE:COL` of the deciding rule or policy.
    pub at: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub verdict: Verdict,
    /// The step that decided (the last one that produced a verdict).
    pub decided_by: Step,
    pub steps: Vec<Step>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "verdict: {}", self.verdict)?;
        writeln!(f, "decided by: {}", self.decided_by.text)?;
        for s in &self.steps {
            write!(f, "  [{}]", s.stage)?;
            if let Some(h) = &s.host_endpoint {
                write!(f, " hep {h}:")?;
            }
            write!(f, " {}", s.text)?;
            if let Some(at) = &s.at {
                write!(f, " ({at})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// What one policy tier (or the failsafe check) did to the packet.
enum Outcome {
    Allow(Step),
    Deny(Step),
    /// Passed or nothing matched: evaluation goes on.
    Continue,
}

struct Eval<'a> {
    config: &'a Config,
    view: &'a NodeView,
    steps: Vec<Step>,
}

pub fn explain(config: &Config, view: &NodeView, packet: &Packet) -> Explanation {
    let mut e = Eval { config, view, steps: Vec::new() };
    let (verdict, decided_by) = match &packet.path {
        Path::Inbound { iface } => e.inbound(packet, iface, None),
        Path::Forwarded { in_iface, out_iface } => e.inbound(packet, in_iface, Some(out_iface)),
        Path::Outbound { iface } => e.outbound(packet, iface),
    };
    Explanation { verdict, decided_by, steps: e.steps }
}

fn step(stage: &'static str, hep: Option<&ActiveEndpoint>, text: impl Into<String>) -> Step {
    Step { stage, host_endpoint: hep.map(|h| h.name.clone()), policy: None, rule: None, at: None, text: text.into() }
}

impl<'a> Eval<'a> {
    fn is_workload(&self, iface: &str) -> bool {
        self.view.settings.workload_prefixes.iter().any(|p| !p.is_empty() && iface.starts_with(p.as_str()))
    }

    /// The HEP that governs `iface` in a stage: a named or IP-matched one, else the wildcard.
    fn hep_for(&self, iface: &str, wildcard_ok: bool) -> Option<&'a ActiveEndpoint> {
        let view: &'a NodeView = self.view;
        view.endpoints
            .iter()
            .find(|ep| ep.interfaces.iter().any(|i| i == iface))
            .or(if wildcard_ok { view.wildcard.as_ref() } else { None })
    }

    fn record(&mut self, s: Step) -> Step {
        self.steps.push(s.clone());
        s
    }

    fn inbound(&mut self, p: &Packet, iif: &str, forwarded_to: Option<&String>) -> (Verdict, Step) {
        let mut accepted_early = false;
        // raw prerouting: untracked ingress (never for the wildcard HEP, never for workload interfaces).
        if !self.is_workload(iif) {
            if let Some(hep) = self.hep_for(iif, false) {
                if !hep.policies.untracked_ingress.is_empty() {
                    let fs = raw_failsafe_in(&self.view.settings.failsafe_inbound, &self.view.settings.failsafe_outbound);
                    if let Some(text) = failsafe_match(p, &fs.0, true, p.dst_port_before_dnat()).or_else(|| failsafe_match(p, &fs.1, true, p.sport)) {
                        self.record(step("untracked", Some(hep), format!("raw failsafe: {text}; accepted in raw only, tracked later")));
                    } else {
                        match self.tier(p, hep, Stage::Untracked, Dir::Ingress, false) {
                            Outcome::Allow(s) => {
                                self.record(step("untracked", Some(hep), "allowed without conntrack: preDNAT and normal ingress skipped"));
                                accepted_early = true;
                                let _ = s;
                            }
                            Outcome::Deny(s) => return (Verdict::Drop, s),
                            Outcome::Continue => {
                                self.record(step("untracked", Some(hep), "no untracked policy decided"));
                            }
                        }
                    }
                }
            }
        }
        // mangle prerouting: preDNAT.
        if !accepted_early {
            if let Some(hep) = self.hep_for(iif, true) {
                if !hep.policies.pre_dnat_ingress.is_empty() {
                    if let Some(text) = failsafe_match(p, &self.view.settings.failsafe_inbound, true, p.dst_port_before_dnat()) {
                        self.record(step("preDNAT", Some(hep), format!("failsafe: {text}; accepted at this stage only")));
                    } else {
                        match self.tier(p, hep, Stage::PreDnat, Dir::Ingress, false) {
                            Outcome::Allow(_) => {
                                self.record(step("preDNAT", Some(hep), "allowed: normal ingress and forward ingress skipped"));
                                accepted_early = true;
                            }
                            Outcome::Deny(s) => return (Verdict::Drop, s),
                            Outcome::Continue => {
                                self.record(step("preDNAT", Some(hep), "no preDNAT policy decided (preDNAT has no default drop)"));
                            }
                        }
                    }
                }
            }
        }
        let after = p.after_dnat();
        match forwarded_to {
            None => self.local_ingress(&after, iif, accepted_early),
            Some(oif) => self.forward(&after, iif, oif, accepted_early),
        }
    }

    fn local_ingress(&mut self, p: &Packet, iif: &str, accepted_early: bool) -> (Verdict, Step) {
        if self.is_workload(iif) {
            let s = self.record(step("normal", None, format!("{iif} is a workload interface: not a host endpoint")));
            return (Verdict::Allow, s);
        }
        if accepted_early {
            let s = self.record(step("normal", None, "already accepted by an untracked or preDNAT policy"));
            return (Verdict::Allow, s);
        }
        let Some(hep) = self.hep_for(iif, true) else {
            let s = self.record(step("normal", None, format!("interface {iif} has no HostEndpoint: not policed")));
            return (Verdict::Allow, s);
        };
        self.normal_chain(p, hep, Dir::Ingress)
    }

    /// A normal-class endpoint chain: failsafe, tier with end-of-tier deny, profiles, default deny.
    fn normal_chain(&mut self, p: &Packet, hep: &ActiveEndpoint, dir: Dir) -> (Verdict, Step) {
        let (list, port) = match dir {
            Dir::Ingress => (&self.view.settings.failsafe_inbound, p.dport),
            Dir::Egress => (&self.view.settings.failsafe_outbound, p.dport),
        };
        if let Some(text) = failsafe_match(p, list, dir == Dir::Ingress, port) {
            let s = self.record(step("normal", Some(hep), format!("failsafe: {text}")));
            return (Verdict::Allow, s);
        }
        match self.tier(p, hep, Stage::Normal, dir, true) {
            Outcome::Allow(s) => return (Verdict::Allow, s),
            Outcome::Deny(s) => return (Verdict::Drop, s),
            Outcome::Continue => {}
        }
        for profile in &hep.profiles {
            if profile == DEFAULT_ALLOW_PROFILE {
                let s = self.record(step("normal", Some(hep), format!("profile {DEFAULT_ALLOW_PROFILE} allows")));
                return (Verdict::Allow, s);
            }
        }
        let none = if hep.policies.get(Stage::Normal, dir).is_empty() { "no policy applies in this direction; " } else { "" };
        let s = self.record(step("normal", Some(hep), format!("{none}no profile matched: default deny")));
        (Verdict::Drop, s)
    }

    fn forward(&mut self, p: &Packet, iif: &str, oif: &str, accepted_early: bool) -> (Verdict, Step) {
        let mut last = step("forward", None, "forwarded traffic: allowed at the end of FORWARD");
        if !accepted_early {
            if let Some(hep) = self.hep_for(iif, true) {
                match self.forward_chain(p, hep, Dir::Ingress) {
                    Some((Verdict::Drop, s)) => return (Verdict::Drop, s),
                    Some((_, s)) => last = s,
                    None => {}
                }
            }
        } else {
            self.record(step("forward", None, "forward ingress skipped: already accepted by untracked or preDNAT policy"));
        }
        if let Some(hep) = self.hep_for(oif, true) {
            match self.forward_chain(p, hep, Dir::Egress) {
                Some((Verdict::Drop, s)) => return (Verdict::Drop, s),
                Some((_, s)) => last = s,
                None => {}
            }
        }
        if self.steps.last().map(|s| &s.text) != Some(&last.text) {
            self.record(last.clone());
        }
        (Verdict::Allow, last)
    }

    /// Forward chains have no failsafe; with no AoF policy at all the HEP allows forwarding by default.
    fn forward_chain(&mut self, p: &Packet, hep: &ActiveEndpoint, dir: Dir) -> Option<(Verdict, Step)> {
        if !hep.policies.has_forward_policy() {
            let s = self.record(step("forward", Some(hep), "no applyOnForward policy selects this HostEndpoint: forwarding allowed"));
            return Some((Verdict::Allow, s));
        }
        match self.tier(p, hep, Stage::Forward, dir, true) {
            Outcome::Allow(s) => Some((Verdict::Allow, s)),
            Outcome::Deny(s) => Some((Verdict::Drop, s)),
            Outcome::Continue => {
                self.record(step("forward", Some(hep), "no applyOnForward policy decided in this direction"));
                None
            }
        }
    }

    fn outbound(&mut self, p: &Packet, oif: &str) -> (Verdict, Step) {
        // raw output: untracked egress.
        if !self.is_workload(oif) {
            if let Some(hep) = self.hep_for(oif, false) {
                if !hep.policies.untracked_egress.is_empty() {
                    let s = &self.view.settings;
                    if let Some(text) = failsafe_match(p, &s.failsafe_outbound, false, p.dport)
                        .or_else(|| failsafe_match(p, &s.failsafe_inbound, false, p.sport))
                    {
                        self.record(step("untracked", Some(hep), format!("raw failsafe: {text}; accepted in raw only")));
                    } else {
                        match self.tier(p, hep, Stage::Untracked, Dir::Egress, false) {
                            Outcome::Allow(s) => return (Verdict::Allow, s),
                            Outcome::Deny(s) => return (Verdict::Drop, s),
                            Outcome::Continue => {
                                self.record(step("untracked", Some(hep), "no untracked policy decided"));
                            }
                        }
                    }
                }
            }
        }
        if self.is_workload(oif) {
            let s = self.record(step("normal", None, format!("{oif} is a workload interface: host to workload is always allowed")));
            return (Verdict::Allow, s);
        }
        let Some(hep) = self.hep_for(oif, true) else {
            let s = self.record(step("normal", None, format!("interface {oif} has no HostEndpoint: not policed")));
            return (Verdict::Allow, s);
        };
        // A DNATed local packet is checked in mangle postrouting instead of filter output: same policy.
        let p = p.after_dnat();
        self.normal_chain(&p, hep, Dir::Egress)
    }

    /// The policies of one stage and direction, in order (spec §3.4 step 4).
    fn tier(&mut self, p: &Packet, hep: &ActiveEndpoint, stage: Stage, dir: Dir, end_of_tier_deny: bool) -> Outcome {
        let list = hep.policies.get(stage, dir).to_vec();
        let stage_name = stage_name(stage);
        for idx in &list {
            let policy = &self.config.policies[*idx];
            let rules = match dir {
                Dir::Ingress => &policy.ingress,
                Dir::Egress => &policy.egress,
            };
            for (i, rule) in rules.iter().enumerate() {
                if !self.rule_matches(p, policy, rule, dir) {
                    continue;
                }
                let mut s = step(stage_name, Some(hep), String::new());
                s.policy = Some(policy.name.clone());
                s.rule = Some(i);
                s.at = Some(rule.pos.to_string());
                let dir_name = if dir == Dir::Ingress { "ingress" } else { "egress" };
                match rule.action {
                    Action::Log => {
                        s.text = format!("policy {} {dir_name} rule {i}: Log, continue", policy.name);
                        self.record(s);
                    }
                    Action::Allow => {
                        s.text = format!("policy {} {dir_name} rule {i}: Allow", policy.name);
                        return Outcome::Allow(self.record(s));
                    }
                    Action::Deny => {
                        s.text = format!("policy {} {dir_name} rule {i}: Deny", policy.name);
                        return Outcome::Deny(self.record(s));
                    }
                    Action::Pass => {
                        s.text = format!("policy {} {dir_name} rule {i}: Pass, rest of the tier skipped", policy.name);
                        self.record(s);
                        return Outcome::Continue;
                    }
                }
            }
            let mut s = step(stage_name, Some(hep), format!("policy {}: no rule matched", policy.name));
            s.policy = Some(policy.name.clone());
            s.at = Some(policy.pos.to_string());
            self.record(s);
        }
        if end_of_tier_deny && !list.is_empty() {
            let s = step(stage_name, Some(hep), "end of tier: no policy allowed it, default deny");
            return Outcome::Deny(self.record(s));
        }
        Outcome::Continue
    }

    fn rule_matches(&self, p: &Packet, policy: &GlobalNetworkPolicy, r: &Rule, _dir: Dir) -> bool {
        let _ = policy;
        let v6 = p.src.is_ipv6();
        if let Some(v) = r.ip_version {
            if (v == 6) != v6 {
                return false;
            }
        }
        if let Some(pr) = r.protocol {
            if pr != p.protocol {
                return false;
            }
        }
        if let Some(pr) = r.not_protocol {
            if pr == p.protocol {
                return false;
            }
        }
        let icmp_family_ok = |pr: Option<u8>| match pr {
            Some(proto::ICMP) => !v6,
            Some(proto::ICMPV6) => v6,
            _ => true,
        };
        if let Some(icmp) = r.icmp {
            if !icmp_family_ok(r.protocol) || p.icmp_type != Some(icmp.icmp_type) {
                return false;
            }
            if icmp.code.is_some() && p.icmp_code != icmp.code {
                return false;
            }
        }
        if let Some(not) = r.not_icmp {
            if !icmp_family_ok(r.protocol) {
                return false;
            }
            let same_type = p.icmp_type == Some(not.icmp_type);
            let same_code = not.code.is_none() || p.icmp_code == not.code;
            if same_type && same_code {
                return false;
            }
        }
        // Spec §1.10: a positive net list with no net of the packet's family never matches it.
        self.entity_matches(p, r, &r.source, p.src, p.sport) && self.entity_matches(p, r, &r.destination, p.dst, p.dport)
    }

    fn entity_matches(&self, p: &Packet, r: &Rule, e: &EntityRule, addr: IpAddr, port: Option<u16>) -> bool {
        if e.service_accounts {
            return false;
        }
        if !e.nets.is_empty() && !e.nets.iter().any(|n| n.contains(&addr)) {
            return false;
        }
        if e.not_nets.iter().any(|n| n.contains(&addr)) {
            return false;
        }
        if let Some(sel) = &e.selector {
            if !self.in_selector_set(&SelectorKey::new(&sel.value, &e.namespace_scope), addr) {
                return false;
            }
        }
        if let Some(sel) = &e.not_selector {
            if self.in_selector_set(&SelectorKey::new(&sel.value, &e.namespace_scope), addr) {
                return false;
            }
        }
        if !e.ports.is_empty() && !self.port_in(p, r, e, &e.ports, addr, port) {
            return false;
        }
        if !e.not_ports.is_empty() && self.port_in(p, r, e, &e.not_ports, addr, port) {
            return false;
        }
        true
    }

    fn in_selector_set(&self, key: &SelectorKey, addr: IpAddr) -> bool {
        let Some(set) = self.view.selector_sets.get(key) else { return false };
        match addr {
            IpAddr::V4(a) => set.v4.iter().any(|n| n.contains(&a)),
            IpAddr::V6(a) => set.v6.iter().any(|n| n.contains(&a)),
        }
    }

    /// Numeric ports need the rule's protocol to carry ports (validated); named ports match the
    /// (IP, protocol, port) triples of the HEPs the side's selector picks (spec §1.6).
    fn port_in(&self, p: &Packet, r: &Rule, e: &EntityRule, ports: &[Port], addr: IpAddr, port: Option<u16>) -> bool {
        let Some(port) = port else { return false };
        let names: BTreeSet<&str> = ports
            .iter()
            .filter_map(|x| match x {
                Port::Named(n) => Some(n.as_str()),
                Port::Range(..) => None,
            })
            .collect();
        let numeric = ports.iter().any(|x| matches!(x, Port::Range(lo, hi) if *lo <= port && port <= *hi));
        if numeric && r.protocol.is_some_and(|pr| pr == p.protocol) {
            return true;
        }
        if names.is_empty() || e.namespace_scope == crate::model::NamespaceScope::Namespaced {
            return false;
        }
        self.config.host_endpoints.iter().any(|hep| {
            e.selector.as_ref().is_none_or(|s| s.value.matches(&hep.labels))
                && hep.expected_ips.contains(&addr)
                && hep.ports.iter().any(|hp| {
                    names.contains(hp.name.as_str())
                        && hp.port == port
                        && hp.protocol == p.protocol
                        && r.protocol.is_none_or(|pr| pr == hp.protocol)
                })
        })
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Untracked => "untracked",
        Stage::PreDnat => "preDNAT",
        Stage::Normal => "normal",
        Stage::Forward => "forward",
    }
}

/// The raw layer's failsafe lists: its own direction's list plus the other direction's, matched on the
/// source port (replies of failsafe connections, spec §4.3).
fn raw_failsafe_in(inbound: &[ProtoPort], outbound: &[ProtoPort]) -> (Vec<ProtoPort>, Vec<ProtoPort>) {
    (inbound.to_vec(), outbound.to_vec())
}

/// Whether a failsafe entry matches: protocol and `port`, and the remote side within `net` if set
/// (the source for inbound, the destination for outbound).
fn failsafe_match(p: &Packet, list: &[ProtoPort], inbound: bool, port: Option<u16>) -> Option<String> {
    let port = port?;
    let remote = if inbound { p.src } else { p.dst };
    list.iter()
        .find(|e| {
            e.protocol == p.protocol && e.port == port && e.net.is_none_or(|n: IpNet| n.contains(&remote))
        })
        .map(|e| {
            let net = e.net.map(|n| format!(" from/to {n}")).unwrap_or_default();
            format!("{} port {}{net}", crate::compile::proto_name(e.protocol), e.port)
        })
}

impl Packet {
    fn dst_port_before_dnat(&self) -> Option<u16> {
        self.dport
    }

    /// The packet as later stages see it, after kube-proxy's DNAT.
    fn after_dnat(&self) -> Packet {
        let mut p = self.clone();
        if let Some((addr, port)) = self.dnat {
            p.dst = addr;
            if port.is_some() {
                p.dport = port;
            }
        }
        p
    }
}
