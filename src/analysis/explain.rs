//! `hostpolicyd explain`: the verdict a packet gets, and the path it took, evaluated on the model.
//!
//! This evaluator follows spec §3.3–§3.6 directly on the validated configuration and the node view, with
//! no knowledge of the nftables encoding. It is therefore also a check on the compiler: the same packets
//! must get the same verdicts here and in the kernel (`tests/explain_agreement.rs`).
//!
//! It describes the first packet of a new connection (conntrack state NEW); replies and later packets of
//! an allowed, tracked connection are always allowed (spec §3.7). Untracked (doNotTrack) flows have no
//! such state: their replies are new packets here too, which is exactly how the kernel sees them.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::compile::{names, proto_name, DEFAULT_ALLOW_PROFILE};
use crate::config::model::Pos;
use crate::config::model::{
    fmt_order, proto, Action, Config, EntityRule, NamespaceScope, Port, ProtoPort, Rule,
    DEFAULT_TIER,
};
use crate::resolve::{
    tier_groups, ActiveEndpoint, AddressSet, Dir, NodeView, SelectorKey, Stage, TierGroup,
};
use crate::ruleset::{Kind, Origin, RuleAction, SourcePos};

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
    /// Destination after DNAT (kube-proxy), if any: the stages after mangle prerouting (inbound) or
    /// after nat output (local traffic) see it.
    pub dnat: Option<(IpAddr, Option<u16>)>,
    /// The packet belongs to a connection conntrack has already accepted (a reply, or a later packet):
    /// `ct state established,related` accepts it before any tracked policy; only untracked (raw)
    /// policy still sees it.
    pub established: bool,
}

impl Packet {
    /// A packet with only the addresses and the protocol set; ports, ICMP fields and DNAT are `None`.
    pub fn new(path: Path, src: IpAddr, dst: IpAddr, protocol: u8) -> Packet {
        Packet {
            path,
            src,
            dst,
            protocol,
            sport: None,
            dport: None,
            icmp_type: None,
            icmp_code: None,
            dnat: None,
            established: false,
        }
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

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = |ip: IpAddr, port: Option<u16>| match (ip, port) {
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        };
        write!(
            f,
            "{} {} -> {}",
            proto_name(self.protocol).to_uppercase(),
            end(self.src, self.sport),
            end(self.dst, self.dport)
        )?;
        if let Some(t) = self.icmp_type {
            write!(f, " type {t}")?;
            if let Some(c) = self.icmp_code {
                write!(f, " code {c}")?;
            }
        }
        match &self.path {
            Path::Inbound { iface } => write!(f, ", in {iface} to a local process")?,
            Path::Outbound { iface } => write!(f, ", from a local process out {iface}")?,
            Path::Forwarded {
                in_iface,
                out_iface,
            } => write!(f, ", in {in_iface}, forwarded out {out_iface}")?,
        }
        if let Some((addr, port)) = self.dnat {
            write!(f, ", DNAT to {}", end(addr, port))?;
        }
        if self.established {
            write!(f, ", of an established connection")?;
        }
        Ok(())
    }
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
    /// `untracked`, `preDNAT`, `normal` or `forward`.
    pub stage: &'static str,
    pub host_endpoint: Option<String>,
    /// The tier of the policy, or the tier entered or ended (tiers spec §3.2).
    pub tier: Option<String>,
    pub policy: Option<String>,
    /// `ingress` or `egress` when a policy rule is involved.
    pub direction: Option<&'static str>,
    /// Index of the rule in the policy's `ingress` / `egress` list.
    pub rule: Option<usize>,
    /// `FILE:LINE:COL` of the deciding rule, policy or HostEndpoint.
    pub at: Option<String>,
    pub text: String,
    /// What a deciding step is, typed: the same [`Origin`] as the compiled rule's (the rule, or the
    /// default: end of tier, no policy, failsafe, profile, dispatch), with the stage and HostEndpoint
    /// where it decided. None for the steps that decide nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub packet: Packet,
    pub verdict: Verdict,
    /// The step that decided: the rule that allowed or denied, or the default that applied.
    pub decided_by: Step,
    /// Every step, in evaluation order.
    pub steps: Vec<Step>,
    /// With staged policies (issue 14): the verdict if every staged policy were enforced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staged: Option<Box<StagedVerdict>>,
}

/// The would-be evaluation of a packet: the configuration with every StagedGlobalNetworkPolicy
/// enforced (`Config::would_be`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StagedVerdict {
    pub verdict: Verdict,
    pub decided_by: Step,
    /// Whether the deciding rule is a staged policy's.
    pub by_staged_policy: bool,
    pub steps: Vec<Step>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "packet: {}", self.packet)?;
        writeln!(f, "verdict: {}", self.verdict)?;
        write!(
            f,
            "decided by: [{}] {}",
            self.decided_by.stage, self.decided_by.text
        )?;
        if let Some(at) = &self.decided_by.at {
            write!(f, " ({at})")?;
        }
        writeln!(f)?;
        writeln!(f, "path:")?;
        for s in &self.steps {
            write!(f, "  [{}]", s.stage)?;
            if let Some(h) = &s.host_endpoint {
                write!(f, " HostEndpoint {h}:")?;
            }
            write!(f, " {}", s.text)?;
            if let Some(at) = &s.at {
                write!(f, " ({at})")?;
            }
            writeln!(f)?;
        }
        if let Some(s) = &self.staged {
            write!(
                f,
                "staged: {} if the staged policies were enforced, decided by: [{}] {}{}",
                s.verdict,
                s.decided_by.stage,
                if s.by_staged_policy { "staged " } else { "" },
                s.decided_by.text
            )?;
            if let Some(at) = &s.decided_by.at {
                write!(f, " ({at})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// What one tier of policies (or the failsafe check) did to the packet.
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
    /// Keep every step (`explain`); off, only the deciding one is made (`verdict`, for `plan`).
    trace: bool,
}

/// Evaluates `packet` on this node's view of `config`.
pub fn explain(config: &Config, view: &NodeView, packet: &Packet) -> Explanation {
    let mut explanation = explain_set(config, view, packet);
    if let Some((would, would_view)) = view.staged() {
        let s = explain_set(would, would_view, packet);
        let by_staged_policy = s.decided_by.policy.as_deref().is_some_and(|p| {
            would
                .policies
                .iter()
                .any(|q| q.name == p && q.staged.is_some())
        });
        explanation.staged = Some(Box::new(StagedVerdict {
            verdict: s.verdict,
            decided_by: s.decided_by,
            by_staged_policy,
            steps: s.steps,
        }));
    }
    explanation
}

/// The evaluation of one set of policies (the enforced one, or the would-be one).
fn explain_set(config: &Config, view: &NodeView, packet: &Packet) -> Explanation {
    let mut e = Eval {
        config,
        view,
        steps: Vec::new(),
        trace: true,
    };
    let (verdict, decided_by) = e.run(packet);
    Explanation {
        packet: packet.clone(),
        verdict,
        decided_by,
        steps: e.steps,
        staged: None,
    }
}

/// [`explain`] without the path: the verdict and the step that decided it, for callers that evaluate
/// many packets (`plan`). The same evaluation; only the steps that decide nothing are not made.
pub fn verdict(config: &Config, view: &NodeView, packet: &Packet) -> (Verdict, Step) {
    Eval {
        config,
        view,
        steps: Vec::new(),
        trace: false,
    }
    .run(packet)
}

fn step(stage: &'static str, hep: Option<&ActiveEndpoint>, text: impl Into<String>) -> Step {
    Step {
        stage,
        host_endpoint: hep.map(|h| h.name.clone()),
        tier: None,
        policy: None,
        direction: None,
        rule: None,
        at: None,
        text: text.into(),
        origin: None,
    }
}

fn decision(
    origin: Origin,
    stage: &'static str,
    hep: Option<&ActiveEndpoint>,
    text: impl Into<String>,
) -> Step {
    Step {
        origin: Some(origin),
        ..step(stage, hep, text)
    }
}

fn source_pos(pos: &Pos) -> SourcePos {
    SourcePos {
        file: pos.file.clone(),
        line: pos.line,
        column: pos.column,
    }
}

fn established_step() -> Step {
    decision(
        Origin::new(Kind::Conntrack),
        "conntrack",
        None,
        "ct state established,related: accepted before any tracked policy (see HOW POLICY APPLIES in hostpolicy.d(5))",
    )
}

impl<'a> Eval<'a> {
    fn run(&mut self, packet: &Packet) -> (Verdict, Step) {
        match &packet.path {
            Path::Inbound { iface } => self.inbound(packet, iface, None),
            Path::Forwarded {
                in_iface,
                out_iface,
            } => self.inbound(packet, in_iface, Some(out_iface)),
            Path::Outbound { iface } => self.outbound(packet, iface),
        }
    }

    fn is_workload(&self, iface: &str) -> bool {
        self.view
            .settings
            .workload_prefixes
            .iter()
            .any(|p| !p.is_empty() && iface.starts_with(p.as_str()))
    }

    /// The HEP that governs `iface` in a stage: a named or IP-matched one, else (when the stage admits
    /// it) the wildcard.
    fn hep_for(&self, iface: &str, wildcard_ok: bool) -> Option<&'a ActiveEndpoint> {
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

    fn hep_pos(&self, hep: &ActiveEndpoint) -> String {
        self.config.host_endpoints[hep.hep].pos.to_string()
    }

    fn record(&mut self, s: Step) -> Step {
        if self.trace {
            self.steps.push(s.clone());
        }
        s
    }

    /// Records a step that decides nothing; `make` runs only when the path is kept.
    fn note(&mut self, make: impl FnOnce() -> Step) {
        if self.trace {
            self.steps.push(make());
        }
    }

    /// The step of a default of `hep`'s chain (`kind` at `stage` and `dir`), written where the
    /// HostEndpoint is, with its origin (as the compiler makes it).
    fn endpoint_default(
        &self,
        kind: Kind,
        hep: &ActiveEndpoint,
        stage: Stage,
        dir: Dir,
        text: impl Into<String>,
    ) -> Step {
        let pos = &self.config.host_endpoints[hep.hep].pos;
        let mut o = Origin::new(kind);
        o.host_endpoint = Some(hep.name.as_str().into());
        o.stage = Some(stage);
        o.direction = Some(dir);
        o.at = Some(source_pos(pos));
        let mut s = decision(o, stage.as_str(), Some(hep), text);
        s.at = Some(pos.to_string());
        s
    }

    /// Raw prerouting / raw output: the untracked chain of the interface's HEP when it has untracked
    /// policy in this direction (never the wildcard HEP). Failsafe entries, and replies of the other
    /// direction's failsafe connections, accept in raw only: no verdict for the later stages (spec §4.3).
    fn untracked(&mut self, p: &Packet, iface: &str, dir: Dir) -> Outcome {
        let view: &'a NodeView = self.view;
        let Some(hep) = self
            .hep_for(iface, false)
            .filter(|h| !h.policies.get(Stage::Untracked, dir).is_empty())
        else {
            return Outcome::Continue;
        };
        let s = &view.settings;
        let (own, other, remote, other_name, skipped) = match dir {
            Dir::Ingress => (
                &s.failsafe_inbound,
                &s.failsafe_outbound,
                p.src,
                "outbound",
                "preDNAT, normal and forward-ingress policy skipped",
            ),
            Dir::Egress => (
                &s.failsafe_outbound,
                &s.failsafe_inbound,
                p.dst,
                "inbound",
                "normal egress policy skipped",
            ),
        };
        let failsafe = failsafe_match(p, own, remote, p.dport).or_else(|| {
            failsafe_match(p, other, remote, p.sport).map(|t| format!("reply to {other_name} {t}"))
        });
        if let Some(text) = failsafe {
            self.note(|| {
                step(
                    "untracked",
                    Some(hep),
                    format!("raw failsafe: {text}; accepted in raw only, untracked policy skipped"),
                )
            });
            return Outcome::Continue;
        }
        let outcome = self.tiers(p, hep, Stage::Untracked, dir);
        match &outcome {
            Outcome::Allow(_) => {
                self.note(|| {
                    step(
                        "untracked",
                        Some(hep),
                        format!("allowed without conntrack: {skipped}"),
                    )
                });
            }
            Outcome::Deny(_) => {}
            Outcome::Continue => {
                self.note(|| step("untracked", Some(hep), "no untracked policy decided"));
            }
        }
        outcome
    }

    /// Raw prerouting, mangle prerouting, then local delivery or forwarding (spec §3.3 "Inbound").
    fn inbound(&mut self, p: &Packet, iif: &str, forwarded_to: Option<&String>) -> (Verdict, Step) {
        // The step of an untracked or preDNAT Allow: it skips normal and forward-ingress policy.
        let mut early: Option<Step> = None;
        // raw prerouting: untracked ingress (never the wildcard HEP, never a workload interface).
        match self.untracked(p, iif, Dir::Ingress) {
            Outcome::Allow(s) => early = Some(s),
            Outcome::Deny(s) => return (Verdict::Drop, s),
            Outcome::Continue => {}
        }
        // mangle prerouting: replies and later packets of accepted connections first, then preDNAT (the
        // wildcard HEP takes part, workload interfaces included).
        if early.is_none() && p.established {
            return (Verdict::Allow, self.record(established_step()));
        }
        if early.is_none() {
            if let Some(hep) = self
                .hep_for(iif, true)
                .filter(|h| !h.policies.pre_dnat_ingress.is_empty())
            {
                if let Some(text) =
                    failsafe_match(p, &self.view.settings.failsafe_inbound, p.src, p.dport)
                {
                    self.note(|| {
                        step(
                            "preDNAT",
                            Some(hep),
                            format!(
                                "failsafe: {text}; accepted at this stage only, preDNAT policy skipped"
                            ),
                        )
                    });
                } else {
                    match self.tiers(p, hep, Stage::PreDnat, Dir::Ingress) {
                        Outcome::Allow(s) => {
                            self.note(|| {
                                step(
                                    "preDNAT",
                                    Some(hep),
                                    "allowed: normal and forward-ingress policy skipped",
                                )
                            });
                            early = Some(s);
                        }
                        Outcome::Deny(s) => return (Verdict::Drop, s),
                        Outcome::Continue => {
                            self.note(|| {
                                step(
                                    "preDNAT",
                                    Some(hep),
                                    "no preDNAT policy decided (preDNAT has no default drop)",
                                )
                            });
                        }
                    }
                }
            }
        }
        let after = p.after_dnat();
        match forwarded_to {
            None => self.local_ingress(&after, iif, early),
            Some(oif) => self.forward(&after, iif, oif, early),
        }
    }

    /// filter input (spec §3.3 step 5).
    fn local_ingress(&mut self, p: &Packet, iif: &str, early: Option<Step>) -> (Verdict, Step) {
        if self.is_workload(iif) {
            let s = self.record(decision(
                Origin::new(Kind::Dispatch),
                "normal",
                None,
                format!("{iif} is a workload interface: not a host endpoint"),
            ));
            return (Verdict::Allow, s);
        }
        if let Some(s) = early {
            self.note(|| {
                step(
                    "normal",
                    None,
                    "normal ingress policy skipped: already accepted",
                )
            });
            return (Verdict::Allow, s);
        }
        let Some(hep) = self.hep_for(iif, true) else {
            let s = self.record(decision(
                Origin::new(Kind::Dispatch),
                "normal",
                None,
                format!("interface {iif} has no HostEndpoint: not policed"),
            ));
            return (Verdict::Allow, s);
        };
        self.normal_chain(p, hep, Dir::Ingress)
    }

    /// A normal-class endpoint chain: failsafe, the tier with its end-of-tier deny, profiles, default
    /// deny (spec §3.4).
    fn normal_chain(&mut self, p: &Packet, hep: &ActiveEndpoint, dir: Dir) -> (Verdict, Step) {
        let failsafe = match dir {
            Dir::Ingress => failsafe_match(p, &self.view.settings.failsafe_inbound, p.src, p.dport),
            Dir::Egress => failsafe_match(p, &self.view.settings.failsafe_outbound, p.dst, p.dport),
        };
        if let Some(text) = failsafe {
            let mut o = Origin::new(Kind::Failsafe);
            o.direction = Some(dir);
            o.stage = Some(Stage::Normal);
            o.host_endpoint = Some(hep.name.as_str().into());
            let s = self.record(decision(
                o,
                "normal",
                Some(hep),
                format!("{}: {text}", names::failsafe_chain(false, dir)),
            ));
            return (Verdict::Allow, s);
        }
        match self.tiers(p, hep, Stage::Normal, dir) {
            Outcome::Allow(s) => return (Verdict::Allow, s),
            Outcome::Deny(s) => return (Verdict::Drop, s),
            Outcome::Continue => {}
        }
        if hep.profiles.iter().any(|p| p == DEFAULT_ALLOW_PROFILE) {
            let mut s = self.endpoint_default(
                Kind::Profile,
                hep,
                Stage::Normal,
                dir,
                format!("profile {DEFAULT_ALLOW_PROFILE} allows"),
            );
            if let Some(o) = &mut s.origin {
                o.profile = Some(DEFAULT_ALLOW_PROFILE.into());
            }
            return (Verdict::Allow, self.record(s));
        }
        let none = if hep.policies.get(Stage::Normal, dir).is_empty() {
            format!("no policy applies to {} here; ", dir.as_str())
        } else {
            String::new()
        };
        let s = self.endpoint_default(
            Kind::NoPolicy,
            hep,
            Stage::Normal,
            dir,
            format!("{none}no profile allows: default deny"),
        );
        (Verdict::Drop, self.record(s))
    }

    /// filter forward (spec §3.3 step 6): forward ingress of `iif`'s HEP unless already accepted, then
    /// forward egress of `oif`'s HEP, unconditionally; allowed at the end unless something dropped.
    fn forward(
        &mut self,
        p: &Packet,
        iif: &str,
        oif: &str,
        early: Option<Step>,
    ) -> (Verdict, Step) {
        let mut decided = early.clone();
        let policed = self.hep_for(iif, true).is_some() || self.hep_for(oif, true).is_some();
        if early.is_some() {
            self.note(|| {
                step(
                    "forward",
                    None,
                    "forward ingress policy skipped: already accepted",
                )
            });
        } else if let Some(hep) = self.hep_for(iif, true) {
            match self.forward_chain(p, hep, Dir::Ingress) {
                Some((Verdict::Drop, s)) => return (Verdict::Drop, s),
                Some((_, s)) => decided = Some(s),
                None => {}
            }
        } else {
            self.note(|| {
                step(
                    "forward",
                    None,
                    format!("interface {iif} has no HostEndpoint: forward ingress not policed"),
                )
            });
        }
        if let Some(hep) = self.hep_for(oif, true) {
            match self.forward_chain(p, hep, Dir::Egress) {
                Some((Verdict::Drop, s)) => return (Verdict::Drop, s),
                // A rule that allowed is more telling than an earlier default.
                Some((_, s)) if s.policy.is_some() || decided.is_none() => decided = Some(s),
                _ => {}
            }
        } else {
            self.note(|| {
                step(
                    "forward",
                    None,
                    format!("interface {oif} has no HostEndpoint: forward egress not policed"),
                )
            });
        }
        let s = match decided {
            Some(s) => s,
            None => self.record(decision(
                if policed {
                    let mut o = Origin::new(Kind::NoPolicy);
                    o.stage = Some(Stage::Forward);
                    o
                } else {
                    Origin::new(Kind::Dispatch)
                },
                "forward",
                None,
                "no forward policy decided: allowed at the end of FORWARD",
            )),
        };
        (Verdict::Allow, s)
    }

    /// Forward chains have no failsafe; with no AoF policy at all the HEP allows forwarding by default
    /// (spec §3.4 step 5). `None`: no verdict in this chain.
    fn forward_chain(
        &mut self,
        p: &Packet,
        hep: &ActiveEndpoint,
        dir: Dir,
    ) -> Option<(Verdict, Step)> {
        if !hep.policies.has_forward_policy() {
            let s = self.endpoint_default(
                Kind::NoPolicy,
                hep,
                Stage::Forward,
                dir,
                "no applyOnForward policy selects this HostEndpoint: forwarding allowed",
            );
            return Some((Verdict::Allow, self.record(s)));
        }
        match self.tiers(p, hep, Stage::Forward, dir) {
            Outcome::Allow(s) => Some((Verdict::Allow, s)),
            Outcome::Deny(s) => Some((Verdict::Drop, s)),
            Outcome::Continue => {
                self.note(|| {
                    step(
                        "forward",
                        Some(hep),
                        format!("no applyOnForward policy decided for {}", dir.as_str()),
                    )
                });
                None
            }
        }
    }

    /// raw output, filter output (or mangle postrouting when DNATed) (spec §3.3 "Outbound").
    fn outbound(&mut self, p: &Packet, oif: &str) -> (Verdict, Step) {
        // raw output: untracked egress.
        match self.untracked(p, oif, Dir::Egress) {
            Outcome::Allow(s) => return (Verdict::Allow, s),
            Outcome::Deny(s) => return (Verdict::Drop, s),
            Outcome::Continue => {}
        }
        if p.established {
            return (Verdict::Allow, self.record(established_step()));
        }
        if self.is_workload(oif) {
            let s = self.record(decision(
                Origin::new(Kind::Dispatch),
                "normal",
                None,
                format!("{oif} is a workload interface: host to workload is always allowed"),
            ));
            return (Verdict::Allow, s);
        }
        let Some(hep) = self.hep_for(oif, true) else {
            let s = self.record(decision(
                Origin::new(Kind::Dispatch),
                "normal",
                None,
                format!("interface {oif} has no HostEndpoint: not policed"),
            ));
            return (Verdict::Allow, s);
        };
        // A DNATed local packet is checked in mangle postrouting instead of filter output, with the same
        // chain, on its translated destination.
        let p = p.after_dnat();
        self.normal_chain(&p, hep, Dir::Egress)
    }

    /// The policies of one stage and direction, tier by tier (spec §3.4 step 4, policy chains; tiers
    /// spec §3.2): inside a tier, policies in order until one allows, denies or passes; a Pass (or a
    /// tier's defaultAction Pass) goes on with the next tier; a tier where nothing matched ends with its
    /// defaultAction, which drops only in the normal and forward stages.
    ///
    /// When the only tier is `default`, the path reads as it did before tiers existed; otherwise every
    /// tier entered is a step, and policies are named with their tier.
    fn tiers(&mut self, p: &Packet, hep: &ActiveEndpoint, stage: Stage, dir: Dir) -> Outcome {
        let config: &'a Config = self.config;
        let groups = tier_groups(config, hep.policies.get(stage, dir));
        let show = groups.len() > 1 || groups.iter().any(|g| g.name != DEFAULT_TIER);
        let sname = stage.as_str();
        let dname = dir.as_str();
        for (i, group) in groups.iter().enumerate() {
            let last = i + 1 == groups.len();
            // Where a Pass out of this tier, or its defaultAction Pass, leads.
            let onwards = if !last {
                format!("next tier {}", groups[i + 1].name)
            } else {
                match stage {
                    Stage::Normal => "no tier left: on to the profiles".to_owned(),
                    Stage::Forward => "no tier left: no verdict in this chain".to_owned(),
                    Stage::Untracked | Stage::PreDnat => {
                        "no tier left: no verdict at this stage".to_owned()
                    }
                }
            };
            if show {
                self.note(|| {
                    let mut s = step(
                        sname,
                        Some(hep),
                        match group.tier {
                            Some(t) => format!(
                                "tier {} (order {}, defaultAction {})",
                                group.name,
                                fmt_order(t.order),
                                t.default_action
                            ),
                            None => format!(
                                "tier {} (not defined: last, defaultAction Deny)",
                                group.name
                            ),
                        },
                    );
                    s.tier = Some(group.name.to_owned());
                    s.at = group
                        .tier
                        .and_then(|t| t.pos.as_ref())
                        .map(|p| p.to_string());
                    s
                });
            }
            match self.tier_policies(p, hep, stage, dir, group, show, &onwards) {
                Some(Outcome::Continue) => continue,
                Some(decided) => return decided,
                None => {}
            }
            let ends_with_drop = group.ends_with_drop(stage);
            let noted = show && self.trace;
            if !ends_with_drop && !noted {
                continue;
            }
            let mut s = if ends_with_drop {
                let mut s = self.endpoint_default(Kind::EndOfTier, hep, stage, dir, String::new());
                if let Some(o) = &mut s.origin {
                    o.tier = Some(group.name.into());
                }
                s
            } else {
                step(sname, Some(hep), String::new())
            };
            s.tier = Some(group.name.to_owned());
            s.at = Some(self.hep_pos(hep));
            if ends_with_drop && !show {
                s.text = format!("end of tier: no policy allowed {dname}, default deny");
                return Outcome::Deny(self.record(s));
            }
            if ends_with_drop {
                s.text = format!(
                    "end of tier {}: no policy allowed, denied or passed {dname}: defaultAction Deny drops it",
                    group.name
                );
                s.at = Some(
                    group
                        .tier
                        .and_then(|t| t.pos.as_ref())
                        .map_or_else(|| self.hep_pos(hep), |p| p.to_string()),
                );
                return Outcome::Deny(self.record(s));
            }
            if show {
                s.text = if matches!(stage, Stage::Normal | Stage::Forward) {
                    format!(
                        "end of tier {}: no policy decided {dname}: defaultAction Pass, {onwards}",
                        group.name
                    )
                } else {
                    format!(
                        "end of tier {}: no policy decided {dname}: {sname} tiers never drop at their end, {onwards}",
                        group.name
                    )
                };
                s.at = group
                    .tier
                    .and_then(|t| t.pos.as_ref())
                    .map(|p| p.to_string());
                self.record(s);
            }
        }
        Outcome::Continue
    }

    /// The policies of one tier: `Some(Continue)` when one passed, `None` when none matched.
    #[allow(clippy::too_many_arguments)]
    fn tier_policies(
        &mut self,
        p: &Packet,
        hep: &ActiveEndpoint,
        stage: Stage,
        dir: Dir,
        group: &TierGroup,
        show: bool,
        onwards: &str,
    ) -> Option<Outcome> {
        let sname = stage.as_str();
        let dname = dir.as_str();
        for &idx in group.policies {
            let policy = &self.config.policies[idx];
            let named = if show {
                format!("policy {} (tier {})", policy.name, group.name)
            } else {
                format!("policy {}", policy.name)
            };
            let rules = match dir {
                Dir::Ingress => &policy.ingress,
                Dir::Egress => &policy.egress,
            };
            for (i, rule) in rules.iter().enumerate() {
                if !self.rule_matches(p, rule) {
                    continue;
                }
                if rule.action == Action::Log && !self.trace {
                    continue;
                }
                let mut s = step(sname, Some(hep), String::new());
                s.tier = Some(group.name.to_owned());
                s.policy = Some(policy.name.clone());
                s.direction = Some(dname);
                s.rule = Some(i);
                s.at = Some(rule.pos.to_string());
                let what = format!("{named} {}", crate::ruleset::rule_name(dname, i));
                let origin = || {
                    let mut o = Origin::new(Kind::Policy);
                    o.tier = Some(group.name.into());
                    o.policy = Some(policy.name.as_str().into());
                    o.direction = Some(dir);
                    o.rule = u32::try_from(i).ok();
                    o.action = Some(match rule.action {
                        Action::Allow => RuleAction::Allow,
                        Action::Deny => RuleAction::Deny,
                        Action::Pass => RuleAction::Pass,
                        Action::Log => RuleAction::Log,
                    });
                    o.stage = Some(stage);
                    o.host_endpoint = Some(hep.name.as_str().into());
                    o.at = Some(source_pos(&rule.pos));
                    o
                };
                match rule.action {
                    Action::Log => {
                        s.text = format!("{what}: Log, continue");
                        self.record(s);
                    }
                    Action::Allow => {
                        s.text = format!("{what}: Allow");
                        s.origin = Some(origin());
                        return Some(Outcome::Allow(self.record(s)));
                    }
                    Action::Deny => {
                        s.text = format!("{what}: Deny");
                        s.origin = Some(origin());
                        return Some(Outcome::Deny(self.record(s)));
                    }
                    Action::Pass if show => {
                        s.text = format!(
                            "{what}: Pass, the rest of tier {} is skipped: {onwards}",
                            group.name
                        );
                        self.record(s);
                        return Some(Outcome::Continue);
                    }
                    Action::Pass => {
                        s.text = format!("{what}: Pass, the rest of the tier is skipped");
                        self.record(s);
                        return Some(Outcome::Continue);
                    }
                }
            }
            self.note(|| {
                let mut s = step(
                    sname,
                    Some(hep),
                    format!("{named}: no {dname} rule matched"),
                );
                s.tier = Some(group.name.to_owned());
                s.policy = Some(policy.name.clone());
                s.direction = Some(dname);
                s.at = Some(policy.pos.to_string());
                s
            });
        }
        None
    }

    /// Whether a rule matches: every criterion present must hold (spec §1.4–§1.6, §1.10, §3.8).
    fn rule_matches(&self, p: &Packet, r: &Rule) -> bool {
        let v6 = p.src.is_ipv6();
        if r.ip_version.is_some_and(|v| (v == 6) != v6) {
            return false;
        }
        if r.protocol.is_some_and(|pr| pr != p.protocol) || r.not_protocol == Some(p.protocol) {
            return false;
        }
        // An ICMP type match exists only in the family of its protocol (ICMP: IPv4, ICMPv6: IPv6).
        let icmp_family_ok = match r.protocol {
            Some(proto::ICMP) => !v6,
            Some(proto::ICMPV6) => v6,
            _ => true,
        };
        if let Some(icmp) = r.icmp {
            if !icmp_family_ok || p.icmp_type != Some(icmp.icmp_type) {
                return false;
            }
            if icmp.code.is_some() && p.icmp_code != icmp.code {
                return false;
            }
        }
        if let Some(not) = r.not_icmp {
            if !icmp_family_ok {
                return false;
            }
            let same_type = p.icmp_type == Some(not.icmp_type);
            let same_code = not.code.is_none() || p.icmp_code == not.code;
            if same_type && same_code {
                return false;
            }
        }
        self.entity_matches(p, r, &r.source, p.src, p.sport)
            && self.entity_matches(p, r, &r.destination, p.dst, p.dport)
    }

    fn entity_matches(
        &self,
        p: &Packet,
        r: &Rule,
        e: &EntityRule,
        addr: IpAddr,
        port: Option<u16>,
    ) -> bool {
        if e.service_accounts {
            return false;
        }
        // Spec §1.10: a positive net list with no net of the packet's family never matches it.
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
        self.view
            .selector_sets
            .get(key)
            .is_some_and(|set| set_contains(set, addr))
    }

    /// Numeric ports need the rule's protocol to carry ports (validated); named ports match the
    /// (IP, protocol, port) triples of the HEPs the side's selector picks (spec §1.6).
    fn port_in(
        &self,
        p: &Packet,
        r: &Rule,
        e: &EntityRule,
        ports: &[Port],
        addr: IpAddr,
        port: Option<u16>,
    ) -> bool {
        let Some(port) = port else { return false };
        let numeric = ports
            .iter()
            .any(|x| matches!(x, Port::Range(lo, hi) if *lo <= port && port <= *hi));
        if numeric && r.protocol == Some(p.protocol) {
            return true;
        }
        let names: Vec<&str> = ports
            .iter()
            .filter_map(|x| match x {
                Port::Named(n) => Some(n.as_str()),
                Port::Range(..) => None,
            })
            .collect();
        !names.is_empty()
            && e.namespace_scope != NamespaceScope::Namespaced
            && self.config.host_endpoints.iter().any(|hep| {
                e.selector
                    .as_ref()
                    .is_none_or(|s| s.value.matches(&hep.labels))
                    && hep.expected_ips.contains(&addr)
                    && hep.ports.iter().any(|hp| {
                        names.contains(&hp.name.as_str())
                            && hp.port == port
                            && hp.protocol == p.protocol
                            && r.protocol.is_none_or(|pr| pr == hp.protocol)
                    })
            })
    }
}

/// Membership in a resolved address set: its CIDRs are sorted and disjoint (`resolve::address_set`), so
/// a binary search finds the only candidate.
pub fn set_contains(set: &AddressSet, addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let i = set.v4.partition_point(|n| n.network() <= a);
            i > 0 && set.v4[i - 1].contains(&a)
        }
        IpAddr::V6(a) => {
            let i = set.v6.partition_point(|n| n.network() <= a);
            i > 0 && set.v6[i - 1].contains(&a)
        }
    }
}

/// Whether a failsafe entry matches: protocol and `port`, and `remote` within the entry's `net` if set
/// (the source for inbound lists, the destination for outbound ones). Returns a description.
fn failsafe_match(
    p: &Packet,
    list: &[ProtoPort],
    remote: IpAddr,
    port: Option<u16>,
) -> Option<String> {
    let port = port?;
    list.iter()
        .find(|e| {
            e.protocol == p.protocol
                && e.port == port
                && e.net.is_none_or(|n: IpNet| n.contains(&remote))
        })
        .map(|e| {
            let net = e.net.map(|n| format!(" ({n})")).unwrap_or_default();
            format!("{} port {}{net}", proto_name(e.protocol), e.port)
        })
}

#[cfg(test)]
mod tests {
    //! Spec §7 T1–T8, every row, on the evaluator (addresses remapped as in tests/golden/README.md:
    //! 10.0.0.0/24 → 192.0.2.0/24, 192.168.0.0/24 → 198.51.100.0/24, 172.16.0.5 → 203.0.113.5; T5's
    //! 1.2.0.0/16 → 198.51.100.0/25 (node1 .4, node2 .5), 100.100.0.0/16 → 198.51.100.128/25; T8's
    //! 10.128.0.0/24 → 192.0.2.0/24).
    use super::*;
    use crate::config::load::load_sources;
    use crate::resolve::{resolve, Interface};

    /// Spec §7 T1–T8 as tests/golden/tN/ holds them, with their variants: the same configurations the
    /// golden, end-to-end and agreement tests use.
    #[allow(dead_code)]
    mod scenarios {
        include!("../../tests/common/scenarios.rs");
    }
    use scenarios as sc;

    /// What a test evaluates: one YAML text (`t.yaml`) or a scenario's files.
    trait Sources {
        fn sources(&self) -> Vec<(String, String)>;
    }
    impl Sources for String {
        fn sources(&self) -> Vec<(String, String)> {
            vec![("t.yaml".to_string(), self.clone())]
        }
    }
    impl Sources for sc::Scenario {
        fn sources(&self) -> Vec<(String, String)> {
            self.files.clone()
        }
    }

    fn eval(c: &impl Sources, node: &str, ifaces: &[(&str, &str)], packet: &Packet) -> Explanation {
        let loaded = load_sources(&c.sources());
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let interfaces: Vec<Interface> = ifaces
            .iter()
            .map(|(n, a)| Interface {
                name: n.to_string(),
                addrs: vec![a.parse().unwrap()],
            })
            .collect();
        let view = resolve(&loaded.config, node, &interfaces);
        explain(&loaded.config, &view, packet)
    }

    const IFACES: &[(&str, &str)] = &[("eth0", "192.0.2.1"), ("eth1", "198.51.100.45")];

    fn pkt(
        path: Path,
        src: &str,
        dst: &str,
        protocol: u8,
        sport: Option<u16>,
        dport: Option<u16>,
    ) -> Packet {
        let mut p = Packet::new(path, src.parse().unwrap(), dst.parse().unwrap(), protocol);
        p.sport = sport;
        p.dport = dport;
        if protocol == proto::ICMP {
            p.icmp_type = Some(8);
            p.icmp_code = Some(0);
        }
        p
    }
    fn inb(iface: &str) -> Path {
        Path::Inbound {
            iface: iface.into(),
        }
    }
    fn out(iface: &str) -> Path {
        Path::Outbound {
            iface: iface.into(),
        }
    }
    fn fwd(i: &str, o: &str) -> Path {
        Path::Forwarded {
            in_iface: i.into(),
            out_iface: o.into(),
        }
    }
    fn tcp(path: Path, src: &str, dst: &str, dport: u16) -> Packet {
        pkt(path, src, dst, proto::TCP, Some(40000), Some(dport))
    }

    /// Asserts the verdict and that the deciding step mentions `why` (a policy name or a default).
    #[track_caller]
    fn check(e: &Explanation, verdict: Verdict, why: &str) {
        let d = &e.decided_by;
        let said = format!(
            "{} {} {}",
            d.policy.as_deref().unwrap_or(""),
            d.stage,
            d.text
        );
        assert!(
            e.verdict == verdict && said.contains(why),
            "expected {verdict} by '{why}', got:\n{e}"
        );
    }

    fn hep(name: &str, node: &str, iface: &str, ips: &str, labels: &str, extra: &str) -> String {
        format!(
            "- apiVersion: projectcalico.org/v3\n  kind: HostEndpoint\n  metadata: {{name: {name}, labels: {{{labels}}}}}\n  spec: {{node: {node}, interfaceName: \"{iface}\", expectedIPs: [{ips}]{extra}}}\n"
        )
    }
    fn web(extra: &str) -> String {
        hep("hep-eth0", "node1", "eth0", "192.0.2.1", "role: web", extra)
    }
    const PROFILE: &str = ", profiles: [projectcalico-default-allow]";

    #[test]
    fn t1_hep_without_policy() {
        let c = sc::t1();
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 8080),
            ),
            Verdict::Drop,
            "default deny",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 22),
            ),
            Verdict::Allow,
            "failsafe-in: tcp port 22",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(out("eth0"), "192.0.2.1", "192.0.2.2", 443),
            ),
            Verdict::Drop,
            "no policy applies to egress",
        );
        let dns = pkt(
            out("eth0"),
            "192.0.2.1",
            "192.0.2.53",
            proto::UDP,
            Some(40000),
            Some(53),
        );
        check(
            &eval(&c, "node1", IFACES, &dns),
            Verdict::Allow,
            "failsafe-out: udp port 53",
        );
        let ping = pkt(
            inb("eth0"),
            "192.0.2.2",
            "192.0.2.1",
            proto::ICMP,
            None,
            None,
        );
        check(
            &eval(&c, "node1", IFACES, &ping),
            Verdict::Drop,
            "default deny",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth1"), "198.51.100.9", "198.51.100.45", 8080),
            ),
            Verdict::Allow,
            "eth1 has no HostEndpoint",
        );
        // Variant: the default-allow profile turns rows 1, 3 and 5 into ALLOW.
        let c = sc::t1_default_allow();
        for p in [
            tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 8080),
            tcp(out("eth0"), "192.0.2.1", "192.0.2.2", 443),
            ping,
        ] {
            check(
                &eval(&c, "node1", IFACES, &p),
                Verdict::Allow,
                "profile projectcalico-default-allow",
            );
        }
    }

    #[test]
    fn t2_types_inference() {
        let c = sc::t2();
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 80),
        );
        check(&e, Verdict::Allow, "allow-http");
        assert_eq!(
            (e.decided_by.rule, e.decided_by.at.as_deref()),
            (Some(0), Some("config.yaml:9:47"))
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 81),
            ),
            Verdict::Drop,
            "end of tier",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(out("eth0"), "192.0.2.1", "192.0.2.2", 443),
            ),
            Verdict::Drop,
            "no policy applies to egress",
        );
        let c = sc::t2_types_ingress_egress();
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(out("eth0"), "192.0.2.1", "192.0.2.2", 443),
            ),
            Verdict::Drop,
            "end of tier",
        );
        let c = sc::t2_egress_rule();
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(out("eth0"), "192.0.2.1", "192.0.2.2", 443),
            ),
            Verdict::Allow,
            "allow-http",
        );
    }

    #[test]
    fn t3_order() {
        let c = sc::t3();
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 80),
            ),
            Verdict::Drop,
            "a-deny",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "192.0.2.100", "192.0.2.1", 80),
            ),
            Verdict::Allow,
            "b-allow",
        );
        let c = sc::t3_without_order();
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "192.0.2.100", "192.0.2.1", 80),
            ),
            Verdict::Allow,
            "b-allow",
        );
        let c = sc::t3_z_allow();
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "192.0.2.100", "192.0.2.1", 80),
            ),
            Verdict::Drop,
            "m-deny",
        );
    }

    #[test]
    fn t4_pass_log_profiles() {
        let c = sc::t4();
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 80),
        );
        check(&e, Verdict::Drop, "no profile allows");
        let texts: Vec<&str> = e.steps.iter().map(|s| s.text.as_str()).collect();
        assert!(
            texts.contains(&"policy p1 ingress rule 1: Log, continue"),
            "{e}"
        );
        assert!(
            texts.contains(&"policy p1 ingress rule 2: Pass, the rest of the tier is skipped"),
            "{e}"
        );
        assert!(
            !e.steps.iter().any(|s| s.policy.as_deref() == Some("p2")),
            "Pass skips p2:\n{e}"
        );
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(inb("eth0"), "203.0.113.5", "192.0.2.1", 80),
        );
        check(&e, Verdict::Allow, "p2");
        assert_eq!(e.steps[0].text, "policy p1 ingress rule 1: Log, continue");
        let c = sc::t4_default_allow();
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 80),
            ),
            Verdict::Allow,
            "profile projectcalico-default-allow",
        );
    }

    #[test]
    fn t5_nodeport_howto() {
        let ifaces = &[("eth0", "198.51.100.4"), ("eth2", "198.51.100.129")];
        let c = sc::t5();
        let mut row1 = tcp(fwd("eth0", "eth2"), "203.0.113.7", "198.51.100.4", 31852);
        row1.dnat = Some(("198.51.100.200".parse().unwrap(), Some(8080)));
        let e = eval(&c, "node1", ifaces, &row1);
        check(&e, Verdict::Allow, "allow-nodeport");
        assert_eq!(e.decided_by.stage, "preDNAT");
        let row3 = tcp(inb("eth0"), "203.0.113.7", "198.51.100.4", 31853);
        let e = eval(&c, "node1", ifaces, &row3);
        check(&e, Verdict::Drop, "allow-cluster-internal-ingress-only");
        assert_eq!(e.decided_by.rule, Some(1));
        let mut row4 = row1.clone();
        row4.protocol = proto::UDP;
        check(
            &eval(&c, "node1", ifaces, &row4),
            Verdict::Drop,
            "allow-cluster-internal-ingress-only",
        );
        check(
            &eval(
                &c,
                "node1",
                ifaces,
                &tcp(inb("eth0"), "203.0.113.7", "198.51.100.4", 22),
            ),
            Verdict::Allow,
            "failsafe-in",
        );
        let e = eval(
            &c,
            "node1",
            ifaces,
            &tcp(inb("eth0"), "198.51.100.5", "198.51.100.4", 10250),
        );
        check(&e, Verdict::Allow, "allow-cluster-internal-ingress-only");
        assert_eq!(e.decided_by.rule, Some(0));
        check(
            &eval(
                &c,
                "node1",
                ifaces,
                &tcp(inb("eth0"), "198.51.100.177", "198.51.100.4", 9100),
            ),
            Verdict::Allow,
            "allow-cluster-internal-ingress-only",
        );
        check(
            &eval(
                &c,
                "node1",
                ifaces,
                &tcp(out("eth0"), "198.51.100.4", "203.0.113.34", 443),
            ),
            Verdict::Allow,
            "allow-outbound-external",
        );
        // Row 9: node1-eth0 without expectedIPs.
        let c9 = sc::t5_without_expected_ips();
        let e = eval(&c9, "node1", ifaces, &row1);
        check(&e, Verdict::Drop, "allow-cluster-internal-ingress-only");
        assert_eq!(e.decided_by.rule, Some(1));
        // Row 10: no kubernetes-host label: forwarded by default, local traffic denied.
        let c10 = sc::t5_without_label();
        check(
            &eval(&c10, "node1", ifaces, &row1),
            Verdict::Allow,
            "no applyOnForward policy selects this HostEndpoint",
        );
        check(
            &eval(
                &c10,
                "node1",
                ifaces,
                &tcp(inb("eth0"), "198.51.100.5", "198.51.100.4", 10250),
            ),
            Verdict::Drop,
            "default deny",
        );
        check(
            &eval(
                &c10,
                "node1",
                ifaces,
                &tcp(out("eth0"), "198.51.100.4", "203.0.113.34", 443),
            ),
            Verdict::Drop,
            "default deny",
        );
        // Node-selective variant: node1 allows, node2 denies.
        let cs = sc::t5_node_selective("nodeport-external-ingress == 'true'");
        check(
            &eval(&cs, "node1", ifaces, &row1),
            Verdict::Allow,
            "allow-nodeport",
        );
        let on2 = tcp(inb("eth0"), "203.0.113.7", "198.51.100.5", 31852);
        check(
            &eval(&cs, "node2", &[("eth0", "198.51.100.5")], &on2),
            Verdict::Drop,
            "allow-cluster-internal-ingress-only",
        );
    }

    #[test]
    fn t6_prednat_has_no_default_drop() {
        let c = sc::t6();
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(inb("eth0"), "203.0.113.7", "192.0.2.1", 8080),
        );
        check(&e, Verdict::Drop, "no policy applies to ingress");
        assert!(
            e.steps
                .iter()
                .any(|s| s.text.contains("preDNAT has no default drop")),
            "{e}"
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "203.0.113.7", "192.0.2.1", 31852),
            ),
            Verdict::Allow,
            "pd-31852",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(fwd("eth0", "eth1"), "203.0.113.7", "198.51.100.99", 8080),
            ),
            Verdict::Allow,
            "no applyOnForward policy",
        );
    }

    #[test]
    fn t7_apply_on_forward() {
        let c = sc::t7();
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(fwd("eth0", "eth1"), "192.0.2.50", "198.51.100.99", 22),
        );
        check(&e, Verdict::Allow, "allow-ssh-maintenance");
        assert_eq!(e.decided_by.stage, "forward");
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(fwd("eth0", "eth1"), "192.0.2.50", "198.51.100.99", 80),
            ),
            Verdict::Drop,
            "end of tier",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(fwd("eth1", "eth0"), "198.51.100.99", "192.0.2.50", 80),
            ),
            Verdict::Allow,
            "end of FORWARD",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(out("eth1"), "198.51.100.45", "198.51.100.99", 22),
            ),
            Verdict::Allow,
            "allow-ssh-maintenance",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(out("eth1"), "198.51.100.45", "198.51.100.99", 80),
            ),
            Verdict::Drop,
            "end of tier",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth1"), "198.51.100.99", "198.51.100.45", 8080),
            ),
            Verdict::Drop,
            "no policy applies to ingress",
        );
        // Variant without applyOnForward: forwarding is allowed by default, local rows unchanged.
        let c = sc::t7_without_apply_on_forward();
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(fwd("eth0", "eth1"), "192.0.2.50", "198.51.100.99", 22),
            ),
            Verdict::Allow,
            "no applyOnForward policy",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(fwd("eth0", "eth1"), "192.0.2.50", "198.51.100.99", 80),
            ),
            Verdict::Allow,
            "no applyOnForward policy",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(out("eth1"), "198.51.100.45", "198.51.100.99", 80),
            ),
            Verdict::Drop,
            "end of tier",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth1"), "198.51.100.99", "198.51.100.45", 8080),
            ),
            Verdict::Drop,
            "default deny",
        );
    }

    #[test]
    fn t8_do_not_track() {
        let ifaces = &[("eth0", "192.0.2.1")];
        let c = sc::t8();
        let syn = tcp(inb("eth0"), "192.0.2.200", "192.0.2.1", 12211);
        let e = eval(&c, "node1", ifaces, &syn);
        check(&e, Verdict::Allow, "memcached-server");
        assert_eq!(e.decided_by.stage, "untracked");
        let synack = pkt(
            out("eth0"),
            "192.0.2.1",
            "192.0.2.200",
            proto::TCP,
            Some(12211),
            Some(40000),
        );
        let e = eval(&c, "node1", ifaces, &synack);
        check(&e, Verdict::Allow, "memcached-server");
        assert_eq!(
            (e.decided_by.stage, e.decided_by.direction),
            ("untracked", Some("egress"))
        );
        check(
            &eval(
                &c,
                "node1",
                ifaces,
                &tcp(inb("eth0"), "192.0.2.201", "192.0.2.1", 12211),
            ),
            Verdict::Drop,
            "no policy applies to ingress",
        );
        check(
            &eval(&sc::t8_without_egress(), "node1", ifaces, &synack),
            Verdict::Drop,
            "no policy applies to egress",
        );
        let e = eval(
            &c,
            "node1",
            ifaces,
            &tcp(inb("eth0"), "192.0.2.201", "192.0.2.1", 22),
        );
        check(&e, Verdict::Allow, "failsafe-in");
        assert!(
            e.steps[0].text.starts_with("raw failsafe: tcp port 22"),
            "{e}"
        );
        check(
            &eval(&sc::t8_wildcard(), "node1", ifaces, &syn),
            Verdict::Drop,
            "no policy applies to ingress",
        );
    }

    /// Replies and later packets: conntrack accepts them before any tracked policy, but untracked policy
    /// still sees them in raw (spec §3.3, §3.7).
    #[test]
    fn established_packets() {
        let mut reply = pkt(
            inb("eth0"),
            "192.0.2.53",
            "192.0.2.1",
            proto::UDP,
            Some(53),
            Some(40000),
        );
        reply.established = true;
        let e = eval(&web(""), "node1", IFACES, &reply);
        check(&e, Verdict::Allow, "ct state established");
        assert_eq!(e.decided_by.stage, "conntrack");
        let mut out_reply = tcp(out("eth0"), "192.0.2.1", "192.0.2.2", 40000);
        out_reply.established = true;
        check(
            &eval(&web(""), "node1", IFACES, &out_reply),
            Verdict::Allow,
            "ct state established",
        );
        let deny = format!(
            "{}- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: raw-deny}}, spec: {{doNotTrack: true, applyOnForward: true, selector: all(), ingress: [{{action: Deny, source: {{nets: [192.0.2.53/32]}}}}]}}}}\n",
            web("")
        );
        // The reply of an outbound failsafe flow (source port 53) skips untracked policy in raw...
        let e = eval(&deny, "node1", IFACES, &reply);
        check(&e, Verdict::Allow, "ct state established");
        assert!(
            e.steps[0]
                .text
                .starts_with("raw failsafe: reply to outbound udp port 53"),
            "{e}"
        );
        // ... any other packet of the flow meets the untracked Deny.
        reply.sport = Some(5353);
        check(
            &eval(&deny, "node1", IFACES, &reply),
            Verdict::Drop,
            "raw-deny",
        );
    }

    /// Named ports, notPorts, selectors and ICMP matches, each against what compile emits.
    #[test]
    fn rule_criteria() {
        let c = format!(
            "{}{}- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: p}}, spec: {{selector: \"role == 'web'\", ingress: [
  {{action: Deny, protocol: ICMP, icmp: {{type: 8, code: 1}}}},
  {{action: Allow, protocol: ICMP, notICMP: {{type: 8, code: 1}}}},
  {{action: Allow, protocol: TCP, destination: {{ports: [web]}}}},
  {{action: Allow, protocol: UDP, source: {{notSelector: \"role == 'db'\"}}, destination: {{notPorts: [1000]}}}}]}}}}\n",
            web(", ports: [{name: web, protocol: TCP, port: 8443}]"),
            hep("db", "node2", "eth0", "192.0.2.7", "role: db", "")
        );
        let mut ping = pkt(
            inb("eth0"),
            "192.0.2.2",
            "192.0.2.1",
            proto::ICMP,
            None,
            None,
        );
        check(&eval(&c, "node1", IFACES, &ping), Verdict::Allow, "p");
        assert_eq!(eval(&c, "node1", IFACES, &ping).decided_by.rule, Some(1));
        ping.icmp_code = Some(1);
        check(&eval(&c, "node1", IFACES, &ping), Verdict::Drop, "p");
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 8443),
            ),
            Verdict::Allow,
            "p",
        );
        check(
            &eval(
                &c,
                "node1",
                IFACES,
                &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 8444),
            ),
            Verdict::Drop,
            "end of tier",
        );
        let udp = |src: &str, port| {
            pkt(
                inb("eth0"),
                src,
                "192.0.2.1",
                proto::UDP,
                Some(5000),
                Some(port),
            )
        };
        check(
            &eval(&c, "node1", IFACES, &udp("192.0.2.2", 999)),
            Verdict::Allow,
            "p",
        );
        check(
            &eval(&c, "node1", IFACES, &udp("192.0.2.2", 1000)),
            Verdict::Drop,
            "end of tier",
        );
        check(
            &eval(&c, "node1", IFACES, &udp("192.0.2.7", 999)),
            Verdict::Drop,
            "end of tier",
        );
    }

    // ---- tiers (tiers spec §3) -----------------------------------------------------------------

    fn tier(name: &str, spec: &str) -> String {
        format!("- {{apiVersion: projectcalico.org/v3, kind: Tier, metadata: {{name: {name}}}, spec: {{{spec}}}}}\n")
    }
    fn gnp(name: &str, spec: &str) -> String {
        format!("- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: {name}}}, spec: {{{spec}}}}}\n")
    }

    /// The `platform` tier of the example: deny a deny-list, Pass the rest, then the default tier.
    fn guard_rails(default_action: &str) -> String {
        format!(
            "{}{}{}{}",
            web(""),
            tier("platform", &format!("order: 100, defaultAction: {default_action}")),
            gnp("platform.deny-list", "tier: platform, selector: all(), ingress: [{action: Deny, source: {nets: [192.0.2.100/32]}}, {action: Pass, protocol: TCP}]"),
            gnp("allow-http", "selector: \"role == 'web'\", ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]"),
        )
    }

    /// Tiers spec §3.2: Pass goes to the next tier; a Deny of an earlier tier ends evaluation; a tier
    /// where nothing matched ends with its defaultAction.
    #[test]
    fn tiers_pass_deny_and_end_of_tier() {
        let c = guard_rails("Deny");
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 80),
        );
        check(&e, Verdict::Allow, "allow-http");
        assert_eq!(e.decided_by.tier.as_deref(), Some("default"));
        let texts: Vec<&str> = e.steps.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "tier platform (order 100, defaultAction Deny)",
                "policy platform.deny-list (tier platform) ingress rule 2: Pass, the rest of tier platform is skipped: next tier default",
                "tier default (order 1000000, defaultAction Deny)",
                "policy allow-http (tier default) ingress rule 1: Allow",
            ],
            "{e}"
        );
        // The deny-list wins over the later Allow.
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(inb("eth0"), "192.0.2.100", "192.0.2.1", 80),
        );
        check(&e, Verdict::Drop, "platform.deny-list");
        assert_eq!(e.decided_by.tier.as_deref(), Some("platform"));
        // UDP: no rule of the platform tier matches: its end-of-tier Deny drops it, although nothing
        // later would have allowed it anyway; the step names the tier and points at the Tier.
        let udp = pkt(
            inb("eth0"),
            "192.0.2.2",
            "192.0.2.1",
            proto::UDP,
            Some(5000),
            Some(80),
        );
        let e = eval(&c, "node1", IFACES, &udp);
        check(&e, Verdict::Drop, "end of tier platform: no policy allowed, denied or passed ingress: defaultAction Deny drops it");
        assert_eq!(e.decided_by.at.as_deref(), Some("t.yaml:5:3"));
        // defaultAction Pass: the same packet goes on to the default tier, whose end drops it.
        let c = guard_rails("Pass");
        let e = eval(&c, "node1", IFACES, &udp);
        check(
            &e,
            Verdict::Drop,
            "end of tier default: no policy allowed, denied or passed ingress",
        );
        assert!(
            e.steps.iter().any(|s| s.text == "end of tier platform: no policy decided ingress: defaultAction Pass, next tier default"),
            "{e}"
        );
    }

    /// Tiers spec §1.1, §3.1: tiers by order, ties by name (an omitted order is 1000000, `default`'s);
    /// a tier none of whose policies selects the HostEndpoint is skipped with its end-of-tier action.
    #[test]
    fn tier_order_ties_and_skipped_tiers() {
        let deny = |name: &str, t: &str| {
            gnp(
                name,
                &format!("tier: {t}, selector: all(), ingress: [{{action: Deny, protocol: TCP}}]"),
            )
        };
        let allow = |name: &str, t: &str| {
            gnp(
                name,
                &format!("tier: {t}, selector: all(), ingress: [{{action: Allow, protocol: TCP}}]"),
            )
        };
        let packet = tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 80);
        // Order beats the name: b (10) before a (20).
        let c = format!(
            "{}{}{}{}{}",
            web(""),
            tier("a", "order: 20"),
            tier("b", "order: 10"),
            deny("in-a", "a"),
            allow("in-b", "b")
        );
        check(&eval(&c, "node1", IFACES, &packet), Verdict::Allow, "in-b");
        // Equal orders: the name decides (aaa < default < zzz, all at 1000000).
        let c = format!(
            "{}{}{}{}",
            web(""),
            tier("aaa", ""),
            allow("in-aaa", "aaa"),
            deny("in-default", "default")
        );
        check(
            &eval(&c, "node1", IFACES, &packet),
            Verdict::Allow,
            "in-aaa",
        );
        let c = format!(
            "{}{}{}{}",
            web(""),
            tier("zzz", ""),
            allow("in-zzz", "zzz"),
            deny("in-default", "default")
        );
        check(
            &eval(&c, "node1", IFACES, &packet),
            Verdict::Drop,
            "in-default",
        );
        // A tier whose only policy selects other endpoints takes no part, end-of-tier Deny included.
        let c = format!(
            "{}{}{}{}",
            web(""),
            tier("other", "order: 1"),
            gnp(
                "db-only",
                "tier: other, selector: \"role == 'db'\", ingress: [{action: Allow}]"
            ),
            allow("in-default", "default")
        );
        let e = eval(&c, "node1", IFACES, &packet);
        check(&e, Verdict::Allow, "in-default");
        assert!(!e.to_string().contains("other"), "{e}");
        // Inside a tier: order, then the name as Felix 3.32+ compares it ("a-b/" < "a/").
        let c = format!(
            "{}{}{}",
            web(""),
            gnp(
                "a",
                "selector: all(), ingress: [{action: Deny, protocol: TCP}]"
            ),
            gnp(
                "a-b",
                "selector: all(), ingress: [{action: Allow, protocol: TCP}]"
            )
        );
        check(&eval(&c, "node1", IFACES, &packet), Verdict::Allow, "a-b");
    }

    /// Tiers spec §3.3: a Pass out of the last tier goes to the profiles: allowed with
    /// `projectcalico-default-allow`, dropped without.
    #[test]
    fn pass_out_of_the_last_tier_reaches_the_profiles() {
        let yaml = |profiles: &str| {
            format!(
                "{}{}{}",
                web(profiles),
                tier("platform", "order: 100"),
                gnp(
                    "pass-all",
                    "tier: platform, selector: all(), ingress: [{action: Pass}]"
                )
            )
        };
        let packet = tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 80);
        let e = eval(&yaml(PROFILE), "node1", IFACES, &packet);
        check(
            &e,
            Verdict::Allow,
            "profile projectcalico-default-allow allows",
        );
        assert!(
            e.steps
                .iter()
                .any(|s| s.text.ends_with("no tier left: on to the profiles")),
            "{e}"
        );
        check(
            &eval(&yaml(""), "node1", IFACES, &packet),
            Verdict::Drop,
            "no profile allows: default deny",
        );
        // An undefined profile (issue 16 item 7) contributes no rules.
        let e = eval(
            &yaml(", profiles: [knp.default.x]"),
            "node1",
            IFACES,
            &packet,
        );
        check(&e, Verdict::Drop, "no profile allows");
    }

    /// Tiers spec §3.4: preDNAT and untracked tiers never drop at their end, whatever the
    /// defaultAction: the packet goes on to the normal stage, which walks its own tiers.
    #[test]
    fn prednat_and_untracked_tiers_fall_through() {
        let c = format!(
            "{}{}{}{}{}",
            web(""),
            tier("platform", "order: 100, defaultAction: Deny"),
            gnp("pre-guard", "tier: platform, preDNAT: true, applyOnForward: true, selector: all(), ingress: [{action: Deny, source: {nets: [192.0.2.100/32]}}]"),
            gnp("raw-guard", "tier: platform, doNotTrack: true, applyOnForward: true, selector: all(), ingress: [{action: Deny, source: {nets: [192.0.2.100/32]}}]"),
            gnp("allow-http", "selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]"),
        );
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 80),
        );
        check(&e, Verdict::Allow, "allow-http");
        for stage in ["untracked", "preDNAT"] {
            assert!(
                e.steps.iter().any(|s| s.stage == stage
                    && s.text
                        .contains("end of tier platform: no policy decided ingress: ")
                    && s.text.contains("tiers never drop at their end")),
                "{stage}: {e}"
            );
        }
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(inb("eth0"), "192.0.2.100", "192.0.2.1", 80),
        );
        check(&e, Verdict::Drop, "raw-guard");
        assert_eq!(e.decided_by.stage, "untracked");
    }

    /// Tiers spec §3.2, §3.4 step 4: forward tiers drop at their end like normal ones.
    #[test]
    fn forward_tiers_end_with_their_default_action() {
        let c = |default_action: &str| {
            format!(
                "{}{}{}{}",
                web(""),
                tier("platform", &format!("order: 100, defaultAction: {default_action}")),
                gnp("fw-guard", "tier: platform, applyOnForward: true, selector: all(), ingress: [{action: Deny, protocol: UDP}]"),
                gnp("fw-allow", "applyOnForward: true, selector: all(), ingress: [{action: Allow, protocol: TCP}]"),
            )
        };
        let packet = tcp(fwd("eth0", "eth1"), "192.0.2.2", "198.51.100.9", 80);
        check(
            &eval(&c("Deny"), "node1", IFACES, &packet),
            Verdict::Drop,
            "end of tier platform",
        );
        check(
            &eval(&c("Pass"), "node1", IFACES, &packet),
            Verdict::Allow,
            "fw-allow",
        );
    }

    /// The deciding step's origin is the compiled rule's (one typed origin for both): the same kind,
    /// tier, policy, direction, rule, action and place; explain adds where it decided.
    #[test]
    fn deciding_steps_carry_the_compiled_rules_origin() {
        let c = format!(
            "{}- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: p}}, spec: {{selector: \"role == 'web'\", ingress: [{{action: Log}}, {{action: Deny, protocol: TCP, destination: {{ports: [81]}}}}]}}}}\n",
            web("")
        );
        let loaded = load_sources(&[("t.yaml".to_string(), c.clone())]);
        let view = resolve(&loaded.config, "node1", &[]);
        let rs = crate::compile::compile(&loaded.config, &view, "t");
        let compiled = rs
            .rules_with_origins()
            .filter_map(|(_, _, o)| o)
            .find(|o| o.kind == Kind::Policy && o.rule == Some(1))
            .expect("the compiled Deny rule")
            .clone();
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 81),
        );
        let mut o = e
            .decided_by
            .origin
            .clone()
            .expect("a deciding step has an origin");
        assert_eq!(
            (o.stage, o.host_endpoint.as_deref()),
            (Some(Stage::Normal), Some("hep-eth0"))
        );
        o.stage = compiled.stage;
        o.host_endpoint = compiled.host_endpoint.clone();
        assert_eq!(o, compiled);
        let e = eval(
            &c,
            "node1",
            IFACES,
            &tcp(inb("eth0"), "192.0.2.2", "192.0.2.1", 82),
        );
        let o = e.decided_by.origin.unwrap();
        assert_eq!(
            (o.kind, o.tier.as_deref(), o.stage, o.direction),
            (
                Kind::EndOfTier,
                Some("default"),
                Some(Stage::Normal),
                Some(Dir::Ingress)
            )
        );
        assert!(e.steps.iter().filter(|s| s.origin.is_some()).count() == 1);
    }

    #[test]
    fn set_membership_by_binary_search() {
        let set = crate::resolve::address_set(&[
            "192.0.2.0/28".parse().unwrap(),
            "192.0.2.64/26".parse().unwrap(),
            "2001:db8::/64".parse().unwrap(),
        ]);
        for (a, inside) in [
            ("192.0.2.0", true),
            ("192.0.2.15", true),
            ("192.0.2.16", false),
            ("192.0.2.63", false),
            ("192.0.2.64", true),
            ("192.0.2.127", true),
            ("192.0.2.128", false),
            ("192.0.1.255", false),
            ("2001:db8::9", true),
            ("2001:db8:1::", false),
        ] {
            assert_eq!(set_contains(&set, a.parse().unwrap()), inside, "{a}");
        }
    }
}
