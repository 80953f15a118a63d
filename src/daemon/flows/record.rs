//! A flow record as `hostpolicyd flows` shows it: one JSON object per line (`--json`, the keys of
//! issue 14) or one line of text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One flow aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub first_seen: String,
    pub last_seen: String,
    /// `allow` or `deny`.
    pub action: String,
    /// `untracked`, `preDNAT`, `normal` or `forward`.
    pub stage: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub interface: Option<String>,
    pub host_endpoint: Option<String>,
    pub proto: Proto,
    pub src: String,
    pub dst: String,
    /// `null` for protocols without ports (ICMP...).
    pub dport: Option<u16>,
    /// Denied flows: the packets the daemon was told of (rate-limited per rule: the rule counters of
    /// `status --counters` have every packet). Allowed connections: both directions, from conntrack.
    pub packets: u64,
    pub bytes: u64,
    pub decided_by: Decider,
    /// The verdict if every staged policy were enforced.
    pub pending_action: String,
    /// What decided in the staged evaluation (empty where no staged policy is evaluated).
    pub pending: Vec<Pending>,
    /// The generation whose rule decided the last packet.
    pub generation: u64,
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, ... or the protocol's number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Proto {
    Name(String),
    Number(u8),
}

impl Proto {
    pub fn of(p: u8) -> Proto {
        match p {
            1 => Proto::Name("icmp".into()),
            6 => Proto::Name("tcp".into()),
            17 => Proto::Name("udp".into()),
            58 => Proto::Name("icmpv6".into()),
            132 => Proto::Name("sctp".into()),
            136 => Proto::Name("udplite".into()),
            n => Proto::Number(n),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Name(n) => f.write_str(n),
            Proto::Number(n) => write!(f, "proto {n}"),
        }
    }
}

/// The rule (or default) that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decider {
    /// `policy`, `end-of-tier`, `no-policy`, `failsafe` or `profile`.
    pub kind: String,
    pub tier: Option<String>,
    pub policy: Option<String>,
    /// The index of the rule in the policy's `ingress` or `egress` list, from 0.
    pub rule: Option<u32>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The rule (or default) that decided in the staged evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub kind: String,
    pub tier: Option<String>,
    pub policy: Option<String>,
    /// A StagedGlobalNetworkPolicy (false: an enforced policy that kept its place in the staged set).
    pub staged: bool,
    /// `allow` or `deny`.
    pub action: String,
    pub rule: Option<u32>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// `policy web ingress rule 1`, `end of tier default`, `no policy`, ... and ` (FILE:LINE)`.
fn who(f: &mut fmt::Formatter<'_>, p: &Pending, direction: &str) -> fmt::Result {
    let tier_prefix = match p.tier.as_deref() {
        Some(t) if t != "default" => format!("{t}/"),
        _ => String::new(),
    };
    match (p.kind.as_str(), p.policy.as_deref()) {
        ("policy", Some(name)) => {
            let what = if p.staged { "staged policy" } else { "policy" };
            write!(f, "{what} {tier_prefix}{name}")?;
            if let Some(r) = p.rule {
                // Rules are named counted from 1 (`ruleset::rule_name`); the JSON keeps the index.
                write!(f, " {}", crate::ruleset::rule_name(direction, r as usize))?;
            }
        }
        ("end-of-tier", _) => write!(f, "end of tier {}", p.tier.as_deref().unwrap_or("default"))?,
        ("no-policy", _) => f.write_str("no policy or profile")?,
        (k, _) => f.write_str(k)?,
    }
    if let (Some(file), Some(line)) = (&p.file, p.line) {
        write!(f, " ({file}:{line})")?;
    }
    Ok(())
}

impl fmt::Display for FlowRecord {
    /// `2026-12-07T16:00:01Z deny tcp 192.0.2.200 -> 192.0.2.1:9100 eth0 normal ingress 3 packets
    /// 180 bytes: policy deny-metrics ingress rule 1 (/etc/hostpolicy.d/30-metrics.yaml:12)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:<5} {} {} -> {}",
            self.last_seen, self.action, self.proto, self.src, self.dst
        )?;
        if let Some(p) = self.dport {
            write!(f, ":{p}")?;
        }
        write!(
            f,
            " {} {} {} {} packets {} bytes: ",
            self.interface.as_deref().unwrap_or("-"),
            self.stage,
            self.direction,
            self.packets,
            self.bytes
        )?;
        let d = &self.decided_by;
        let decider = Pending {
            kind: d.kind.clone(),
            tier: d.tier.clone(),
            policy: d.policy.clone(),
            staged: false,
            action: self.action.clone(),
            rule: d.rule,
            file: d.file.clone(),
            line: d.line,
        };
        who(f, &decider, &self.direction)?;
        if let Some(p) = self.pending.first() {
            write!(f, "; staged: {} by ", p.action)?;
            who(f, p, &self.direction)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_of_text_per_record() {
        let r = FlowRecord {
            first_seen: "2026-12-07T16:00:01Z".into(),
            last_seen: "2026-12-07T16:00:03Z".into(),
            action: "deny".into(),
            stage: "normal".into(),
            direction: "ingress".into(),
            interface: Some("eth0".into()),
            host_endpoint: Some("node1-eth0".into()),
            proto: Proto::of(6),
            src: "192.0.2.200".into(),
            dst: "192.0.2.1".into(),
            dport: Some(9100),
            packets: 3,
            bytes: 180,
            decided_by: Decider {
                kind: "policy".into(),
                tier: Some("default".into()),
                policy: Some("deny-metrics".into()),
                rule: Some(0),
                file: Some("/etc/hostpolicy.d/30-metrics.yaml".into()),
                line: Some(12),
            },
            pending_action: "deny".into(),
            pending: Vec::new(),
            generation: 4,
        };
        assert_eq!(
            r.to_string(),
            "2026-12-07T16:00:03Z deny  tcp 192.0.2.200 -> 192.0.2.1:9100 eth0 normal ingress 3 packets 180 bytes: policy deny-metrics ingress rule 1 (/etc/hostpolicy.d/30-metrics.yaml:12)"
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""proto":"tcp""#), "{json}");
        let back: FlowRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            serde_json::to_string(&Proto::of(47)).unwrap(),
            "47",
            "a protocol without a name is its number"
        );
    }
}
