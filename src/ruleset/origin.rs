//! Where every rule of a [`Ruleset`](super::Ruleset) comes from: its typed [`Origin`].
//!
//! The compiler records, next to the rules it makes, the configuration object each one stands for: the
//! policy rule (tier, policy, direction, index, action, `FILE:LINE:COL`), the default of a HostEndpoint
//! (end of tier, no policy, a profile), a failsafe port, connection tracking or the plumbing of the
//! table (dispatch, marks). Everything that maps a kernel rule back to the configuration uses it:
//! `status --counters`, the engine's list of changed policies, and flow records (issue 14) that carry an
//! [`OriginId`] in a log prefix or a conntrack mark. Nothing parses comments or chain names for this;
//! the comments in the kernel are for people (they are made from the origin, in `compile::names`).
//!
//! Origins are not part of the table in the kernel: they are neither in the content hash nor compared
//! when the nftables layer decides which chains changed. A rule whose policy merely moved to another
//! line of its file is the same kernel rule, with a new origin.

use std::fmt;
use std::sync::Arc;

/// How every output names a rule of a policy: `ingress rule 1` is the first rule of the policy's
/// `ingress` list, counted from 1 as people count, in `explain`, `status --counters`, the logs, the
/// lints and the comments of the rules in the kernel (issue 17 item 16: "rule 1" named the second rule
/// in one place and the first in another). The IR ([`Origin::rule`]) and the JSON outputs keep the
/// 0-based index into the list.
pub fn rule_name(direction: impl fmt::Display, index: usize) -> String {
    format!("{direction} rule {}", index + 1)
}

use serde::{Deserialize, Serialize};

/// The stage a policy runs in on a host endpoint (spec §3.2): untracked (raw, doNotTrack), preDNAT
/// (mangle prerouting), normal (filter), forward (applyOnForward policy on forwarded traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    #[serde(rename = "untracked")]
    Untracked,
    #[serde(rename = "preDNAT")]
    PreDnat,
    #[serde(rename = "normal")]
    Normal,
    #[serde(rename = "forward")]
    Forward,
}

impl Stage {
    /// Every stage, in the order a packet meets them.
    pub const ALL: [Stage; 4] = [
        Stage::Untracked,
        Stage::PreDnat,
        Stage::Normal,
        Stage::Forward,
    ];

    /// `untracked`, `preDNAT`, `normal` or `forward`: how status, explain and the logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Untracked => "untracked",
            Stage::PreDnat => "preDNAT",
            Stage::Normal => "normal",
            Stage::Forward => "forward",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy's direction: its `ingress` or `egress` rules; a host endpoint's inbound or outbound side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    pub const BOTH: [Dir; 2] = [Dir::Ingress, Dir::Egress];

    /// `ingress` or `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy rule's action, as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuleAction {
    Allow,
    Deny,
    Pass,
    Log,
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What kind of configuration object a rule stands for. The first five are what can decide a packet's
/// fate (flow records' `decided_by.kind`); the others are the structure around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A rule of a policy (`policy`, `direction`, `rule`, `action`): its nftables rules (one per family,
    /// one per port alternative) and the helper chain of a rule with named `notPorts`.
    Policy,
    /// The default at the end of a tier whose policies applied to the host endpoint and none decided:
    /// deny (`tier`, `stage`, `direction`, `host_endpoint`).
    EndOfTier,
    /// Nothing decided at the end of a host endpoint's chain: no policy (or only Pass) and no profile
    /// allowed. Local traffic is denied, forwarded traffic without applyOnForward policy allowed.
    NoPolicy,
    /// A failsafe port (FelixConfiguration `failsafeInboundHostPorts` / `failsafeOutboundHostPorts`,
    /// `direction` ingress for inbound): accepted before any policy; the jump to the failsafe chain too.
    Failsafe,
    /// A profile's allow (`profile`): `projectcalico-default-allow`.
    Profile,
    /// A host endpoint's walk through a tier: the jump into one policy's chain and the return on its
    /// Allow (`policy`, `tier`, `stage`, `direction`, `host_endpoint`).
    Tier,
    /// Connection tracking: established and related packets accepted, invalid ones dropped.
    Conntrack,
    /// Which host endpoint's chain a packet goes to: the interface verdict maps, the wildcard
    /// HostEndpoint, workload interfaces left alone.
    Dispatch,
    /// The base chains' plumbing: marks cleared and set, accepted packets accepted, DNATed traffic left
    /// to mangle postrouting.
    Structure,
}

impl Kind {
    /// The name flow records and JSON use (`policy`, `end-of-tier`, `no-policy`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Policy => "policy",
            Kind::EndOfTier => "end-of-tier",
            Kind::NoPolicy => "no-policy",
            Kind::Failsafe => "failsafe",
            Kind::Profile => "profile",
            Kind::Tier => "tier",
            Kind::Conntrack => "conntrack",
            Kind::Dispatch => "dispatch",
            Kind::Structure => "structure",
        }
    }
}

/// A place in a configuration file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourcePos {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a rule is in the ruleset. Fields that do not apply to the [`Kind`] are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub kind: Kind,
    /// The Calico tier of the policy or of the end-of-tier default (`default`: the only tier so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Arc<str>>,
    /// The GlobalNetworkPolicy's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Arc<str>>,
    /// A staged policy's rule (evaluated, never enforced: StagedGlobalNetworkPolicy, issue 14).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged: bool,
    /// A rule of the would-be evaluation (the enforced policies with the staged ones in place, issue
    /// 14): it only marks the packet and reports its would-be verdict, it never decides.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Dir>,
    /// 0-based index of the rule in the policy's `ingress` or `egress` list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RuleAction>,
    /// Known for the rules of a host endpoint's chains. A policy's chain is shared by every stage and
    /// host endpoint that uses the policy, so its rules have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_endpoint: Option<Arc<str>>,
    /// The profile of a [`Kind::Profile`] rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Arc<str>>,
    /// Where the rule (or the policy, profile or HostEndpoint) is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<SourcePos>,
}

impl Origin {
    /// An origin of `kind` with nothing else known.
    pub fn new(kind: Kind) -> Origin {
        Origin {
            kind,
            tier: None,
            policy: None,
            staged: false,
            shadow: false,
            direction: None,
            rule: None,
            action: None,
            stage: None,
            host_endpoint: None,
            profile: None,
            at: None,
        }
    }
}

impl fmt::Display for Origin {
    /// For people: `policy allow-http ingress[0] Allow (FILE:LINE:COL)`, `end-of-tier default, HostEndpoint
    /// h, normal ingress`...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        if let Some(t) = &self.tier {
            if self.policy.is_none() {
                write!(f, " {t}")?;
            }
        }
        if let Some(p) = &self.policy {
            match &self.tier {
                Some(t) if &**t != "default" => write!(f, " {t}.{p}")?,
                _ => write!(f, " {p}")?,
            }
            if self.staged {
                f.write_str(" (staged)")?;
            }
            if self.shadow {
                f.write_str(" (would-be)")?;
            }
        }
        match (self.direction, self.rule) {
            (Some(d), Some(i)) => write!(f, " {}", rule_name(d, i as usize))?,
            (Some(d), None) if self.stage.is_none() => write!(f, " {d}")?,
            _ => {}
        }
        if let Some(a) = self.action {
            write!(f, " {a}")?;
        }
        if let Some(p) = &self.profile {
            write!(f, " {p}")?;
        }
        if let Some(h) = &self.host_endpoint {
            write!(f, ", HostEndpoint {h}")?;
        }
        match (self.stage, self.direction) {
            (Some(s), Some(d)) => write!(f, ", {s} {d}")?,
            (Some(s), None) => write!(f, ", {s}")?,
            _ => {}
        }
        if let Some(at) = &self.at {
            write!(f, " ({at})")?;
        }
        Ok(())
    }
}

/// The index of an origin in [`Origins::list`]: a compact id, unique within one ruleset (one
/// generation), for a log prefix or a conntrack mark to carry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct OriginId(pub u32);

/// The origins of a ruleset's rules: each distinct origin once, and for every chain the origin of each
/// of its rules (chains in the order of `Ruleset::chains`, rules in chain order).
///
/// Empty in a ruleset stored by a version without origins (`last-good.json`): a lookup then finds
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origins {
    pub list: Vec<Origin>,
    pub rules: Vec<Vec<OriginId>>,
    /// The flow id (`compile::names::flow_id`) of every origin whose rules report to NFLOG: how the
    /// daemon maps an NFLOG prefix back to the configuration (flow records, issue 14).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flow_ids: Vec<(u64, OriginId)>,
}

impl Origins {
    pub fn get(&self, id: OriginId) -> Option<&Origin> {
        self.list.get(id.0 as usize)
    }

    /// The id of rule `rule` of chain number `chain`.
    pub fn id(&self, chain: usize, rule: usize) -> Option<OriginId> {
        self.rules.get(chain)?.get(rule).copied()
    }

    /// The origin of rule `rule` of chain number `chain`.
    pub fn of(&self, chain: usize, rule: usize) -> Option<&Origin> {
        self.get(self.id(chain, rule)?)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_read_as_what_they_stand_for() {
        let mut rule = Origin::new(Kind::Policy);
        rule.tier = Some("default".into());
        rule.policy = Some("allow-http".into());
        rule.direction = Some(Dir::Ingress);
        rule.rule = Some(0);
        rule.action = Some(RuleAction::Allow);
        rule.at = Some(SourcePos {
            file: "/etc/hostpolicy.d/a.yaml".into(),
            line: 12,
            column: 7,
        });
        assert_eq!(
            rule.to_string(),
            "policy allow-http ingress rule 1 Allow (/etc/hostpolicy.d/a.yaml:12:7)"
        );
        rule.tier = Some("platform".into());
        rule.staged = true;
        assert!(rule
            .to_string()
            .starts_with("policy platform.allow-http (staged) ingress rule 1"));
        let mut eot = Origin::new(Kind::EndOfTier);
        eot.tier = Some("default".into());
        eot.host_endpoint = Some("h".into());
        eot.stage = Some(Stage::Normal);
        eot.direction = Some(Dir::Egress);
        assert_eq!(
            eot.to_string(),
            "end-of-tier default, HostEndpoint h, normal egress"
        );
        // As JSON: kebab-case kinds, Calico's stage names, nothing for what does not apply.
        let json = serde_json::to_value(&eot).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "end-of-tier", "tier": "default", "direction": "egress",
                               "stage": "normal", "host_endpoint": "h"})
        );
        assert_eq!(serde_json::from_value::<Origin>(json).unwrap(), eot);
        assert_eq!(
            serde_json::to_value(Stage::PreDnat).unwrap(),
            serde_json::json!("preDNAT")
        );
    }
}
