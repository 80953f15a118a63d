//! The lockout guard: before any apply (and in `check`), prove with the evaluator ([`crate::analysis::explain`])
//! that every declared management flow ([`ManagementAccess`]) is allowed inbound on every HostEndpoint
//! of this node, through every stage (untracked, preDNAT, normal); otherwise refuse the configuration.
//!
//! # What "proves" means
//!
//! A management flow is a set of packets: any source address in a `sources` CIDR, any ephemeral
//! source port (32768-65535, what clients pick), to one of the node's addresses on the HostEndpoint, with
//! the declared protocol and port. The guard checks all of them, exactly, with finitely many
//! evaluations: every criterion that depends on the source address (rule `nets`/`notNets`, selector
//! address sets, named-port addresses, failsafe `net`s) is a union of CIDRs, so it is constant between
//! two consecutive CIDR boundaries. The guard cuts each source CIDR at every boundary that falls inside
//! it and evaluates one address per piece; likewise for the source port, cut at every port-range
//! boundary of the rules and the failsafe lists. Each piece behaves like its representative, so when
//! every representative is allowed, every packet of the flow is. Checking only the first and last
//! address, or only "no rule that could match denies it", would not be exact: a flow can also be
//! dropped by an end-of-tier or no-profile default, or by a rule that covers only the middle of the CIDR.
//!
//! - Destinations: the HostEndpoint's `expectedIPs` and the current addresses of the interfaces it
//!   governs (loopback and link-local addresses left out), in the family of the source. A HostEndpoint
//!   with no address of that family cannot be reached in it and is skipped; one with no address at all
//!   gets a warning (the flow cannot be checked there).
//! - The wildcard (`*`) HostEndpoint is checked once, as any interface it governs: the verdict does not
//!   depend on which unclaimed interface a packet uses.
//! - Failsafe rules count as allowing (they run before any policy, spec §4.3).
//! - A flow allowed only by an untracked (doNotTrack) policy has no conntrack entry, so its replies are
//!   checked too: they must be allowed by an untracked egress policy (spec §3.7), otherwise they reach
//!   conntrack as invalid packets and are dropped.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::analysis::explain::{explain, Explanation, Packet, Path, Verdict};
use crate::config::diag::Diagnostic;
use crate::config::model::{proto, Config, ManagementAccess, Port, Rule};
use crate::resolve::{ActiveEndpoint, Interface, NodeView, SelectorKey};

/// Source ports the guard covers: the ephemeral ports clients pick (Linux: 32768-60999; IANA, Windows,
/// macOS: 49152-65535). Lower source ports are not covered on purpose: with doNotTrack policy, a source
/// port in the outbound failsafe list (e.g. 2379) makes the raw failsafe accept the packet without the
/// untracked verdict (spec §4.3), which a client never meets with an ephemeral port.
const CLIENT_PORTS: (u16, u16) = (32768, 65535);
/// The pseudo interface the wildcard HostEndpoint is checked on: no named HostEndpoint can claim it.
const ANY_UNCLAIMED: &str = "*";

/// Errors (and warnings) for every management flow of this node that the configuration would block.
pub fn check(config: &Config, view: &NodeView, interfaces: &[Interface]) -> Vec<Diagnostic> {
    let mine: Vec<&ManagementAccess> = config
        .management
        .iter()
        .filter(|m| m.node.as_deref().is_none_or(|n| n == view.node))
        .collect();
    if mine.is_empty() {
        return Vec::new();
    }
    let cuts = Cuts::collect(config, view);
    let mut out = Vec::new();
    let heps: Vec<(&ActiveEndpoint, Vec<String>)> = view
        .endpoints
        .iter()
        .map(|ep| (ep, ep.interfaces.clone()))
        .chain(
            view.wildcard
                .iter()
                .map(|w| (w, vec![ANY_UNCLAIMED.to_string()])),
        )
        .collect();
    for m in mine {
        for (ep, ifaces) in &heps {
            let dsts = destinations(config, view, ep, interfaces);
            if dsts.is_empty() {
                out.push(Diagnostic::warning(
                    m.pos.clone(),
                    format!(
                        "ManagementAccess '{}' cannot be checked on HostEndpoint '{}': it has no known address (no expectedIPs, and its interface has none here)",
                        m.name, ep.name
                    ),
                ));
                continue;
            }
            for src in &m.sources {
                let family: Vec<IpAddr> = dsts
                    .iter()
                    .copied()
                    .filter(|d| d.is_ipv4() == src.value.addr().is_ipv4())
                    .collect();
                if family.is_empty() {
                    continue;
                }
                for port in &m.ports {
                    let (protocol, dport) = port.value;
                    for iface in ifaces {
                        if let Some(why) = first_blocked(
                            config, view, &cuts, iface, src.value, &family, protocol, dport,
                        ) {
                            out.push(Diagnostic::error(
                                m.pos.clone(),
                                format!(
                                    "ManagementAccess '{}': {} port {dport} from {} is not allowed in on HostEndpoint '{}' ({}): {why}; the configuration is refused so that it cannot lock out management access (allow the flow, e.g. in a preDNAT or normal ingress policy, or correct the ManagementAccess)",
                                    m.name,
                                    crate::compile::proto_name(protocol).to_uppercase(),
                                    src.value,
                                    ep.name,
                                    if iface == ANY_UNCLAIMED { "every interface it governs".to_string() } else { format!("interface {iface}") },
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The node's addresses behind a HostEndpoint: its expectedIPs and the live addresses of the interfaces
/// it governs (for the wildcard: every unclaimed, non-workload interface but `lo`).
fn destinations(
    config: &Config,
    view: &NodeView,
    ep: &ActiveEndpoint,
    interfaces: &[Interface],
) -> Vec<IpAddr> {
    let wildcard = view
        .wildcard
        .as_ref()
        .is_some_and(|w| w.hep == ep.hep && ep.interfaces.is_empty());
    let claimed: BTreeSet<&str> = view
        .endpoints
        .iter()
        .flat_map(|e| e.interfaces.iter().map(String::as_str))
        .collect();
    let workload = |n: &str| {
        view.settings
            .workload_prefixes
            .iter()
            .any(|p| !p.is_empty() && n.starts_with(p.as_str()))
    };
    let mut out: BTreeSet<IpAddr> = config.host_endpoints[ep.hep]
        .expected_ips
        .iter()
        .copied()
        .collect();
    for i in interfaces {
        let governed = if wildcard {
            i.name != "lo" && !claimed.contains(i.name.as_str()) && !workload(&i.name)
        } else {
            ep.interfaces.contains(&i.name)
        };
        if governed {
            out.extend(i.addrs.iter().copied());
        }
    }
    out.into_iter()
        .filter(|a| !is_loopback_or_link_local(*a))
        .collect()
}

fn is_loopback_or_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local(),
        IpAddr::V6(a) => a.is_loopback() || (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Where the rules' source-side criteria (and the replies' destination-side ones) change value: address
/// boundaries per family and source-port boundaries.
struct Cuts {
    nets: Vec<IpNet>,
    ports: BTreeSet<u32>,
}

impl Cuts {
    fn collect(config: &Config, view: &NodeView) -> Cuts {
        let mut nets: Vec<IpNet> = Vec::new();
        let mut ports: BTreeSet<u32> = BTreeSet::new();
        let hep_ips: Vec<IpNet> = config
            .host_endpoints
            .iter()
            .flat_map(|h| h.expected_ips.iter().map(|ip| IpNet::from(*ip)))
            .collect();
        let hep_ports: Vec<u16> = config
            .host_endpoints
            .iter()
            .flat_map(|h| h.ports.iter().map(|p| p.port))
            .collect();
        let mut side = |e: &crate::config::model::EntityRule| {
            nets.extend(e.nets.iter().chain(e.not_nets.iter()).copied());
            for sel in [&e.selector, &e.not_selector].into_iter().flatten() {
                if let Some(set) = view
                    .selector_sets
                    .get(&SelectorKey::new(&sel.value, &e.namespace_scope))
                {
                    nets.extend(set.v4.iter().map(|n| IpNet::V4(*n)));
                    nets.extend(set.v6.iter().map(|n| IpNet::V6(*n)));
                }
            }
            for p in e.ports.iter().chain(e.not_ports.iter()) {
                match p {
                    Port::Range(lo, hi) => {
                        ports.insert(u32::from(*lo));
                        ports.insert(u32::from(*hi) + 1);
                    }
                    Port::Named(_) => {
                        nets.extend(hep_ips.iter().copied());
                        for p in &hep_ports {
                            ports.insert(u32::from(*p));
                            ports.insert(u32::from(*p) + 1);
                        }
                    }
                }
            }
        };
        for policy in &config.policies {
            // Inbound packets: the source side of ingress rules; their replies: the destination side
            // of egress rules.
            policy.ingress.iter().for_each(|r: &Rule| side(&r.source));
            policy
                .egress
                .iter()
                .for_each(|r: &Rule| side(&r.destination));
        }
        let s = &view.settings;
        for e in s.failsafe_inbound.iter().chain(s.failsafe_outbound.iter()) {
            nets.extend(e.net);
            ports.insert(u32::from(e.port));
            ports.insert(u32::from(e.port) + 1);
        }
        Cuts { nets, ports }
    }

    /// One address per piece of `src` between boundaries.
    fn addresses(&self, src: IpNet) -> Vec<IpAddr> {
        let (lo, hi) = (to_u128(src.network()), to_u128(src.broadcast()));
        let mut reps: BTreeSet<u128> = BTreeSet::from([lo]);
        for n in self
            .nets
            .iter()
            .filter(|n| n.addr().is_ipv4() == src.addr().is_ipv4())
        {
            let start = to_u128(n.network());
            let after = to_u128(n.broadcast()).checked_add(1);
            for b in [Some(start), after].into_iter().flatten() {
                if lo < b && b <= hi {
                    reps.insert(b);
                }
            }
        }
        reps.into_iter()
            .map(|v| from_u128(v, src.addr().is_ipv4()))
            .collect()
    }

    /// One source port per piece of the client port range between boundaries.
    fn source_ports(&self) -> Vec<u16> {
        let (lo, hi) = (u32::from(CLIENT_PORTS.0), u32::from(CLIENT_PORTS.1));
        let mut reps = vec![CLIENT_PORTS.0];
        reps.extend(self.ports.range(lo + 1..=hi).map(|&p| p as u16));
        reps
    }
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// The first packet of the flow that is not allowed, described; `None` when the whole flow is allowed.
#[allow(clippy::too_many_arguments)]
fn first_blocked(
    config: &Config,
    view: &NodeView,
    cuts: &Cuts,
    iface: &str,
    src: IpNet,
    dsts: &[IpAddr],
    protocol: u8,
    dport: u16,
) -> Option<String> {
    let has_ports = matches!(protocol, proto::TCP | proto::UDP | proto::SCTP);
    let sports = if has_ports {
        cuts.source_ports()
    } else {
        vec![0]
    };
    for a in cuts.addresses(src) {
        for &sport in &sports {
            for &dst in dsts {
                let mut p = Packet::new(
                    Path::Inbound {
                        iface: iface.to_string(),
                    },
                    a,
                    dst,
                    protocol,
                );
                p.sport = Some(sport).filter(|_| has_ports);
                p.dport = Some(dport);
                let e = explain(config, view, &p);
                if e.verdict == Verdict::Drop {
                    return Some(format!("e.g. {} is dropped {}", p_text(&p), blocker(&e)));
                }
                if e.decided_by.stage == "untracked" {
                    let mut reply = Packet::new(
                        Path::Outbound {
                            iface: iface.to_string(),
                        },
                        dst,
                        a,
                        protocol,
                    );
                    reply.sport = Some(dport);
                    reply.dport = p.sport;
                    let r = explain(config, view, &reply);
                    if r.verdict == Verdict::Drop || r.decided_by.stage != "untracked" {
                        return Some(format!(
                            "e.g. {} is allowed by the untracked (doNotTrack) {}, but no untracked egress policy allows its reply ({}), which conntrack then sees as an invalid packet and drops (see HOW POLICY APPLIES in hostpolicy.d(5))",
                            p_text(&p),
                            rule_text(&e.decided_by),
                            p_text(&reply)
                        ));
                    }
                }
            }
        }
    }
    None
}

fn p_text(p: &Packet) -> String {
    let end = |ip: IpAddr, port: Option<u16>| match (ip, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    };
    format!("{} -> {}", end(p.src, p.sport), end(p.dst, p.dport))
}

fn rule_text(s: &crate::analysis::explain::Step) -> String {
    let mut t = s.text.clone();
    if let Some(at) = &s.at {
        t.push_str(&format!(" at {at}"));
    }
    t
}

/// What dropped the packet: the rule (with its position), or the default and the policies consulted.
fn blocker(e: &Explanation) -> String {
    let d = &e.decided_by;
    // Tiers spec §3.2: a policy of another tier than `default` is named with its tier.
    let tier = |s: &crate::analysis::explain::Step| match s.tier.as_deref() {
        Some(t) if t != crate::config::model::DEFAULT_TIER => format!(" in tier {t}"),
        _ => String::new(),
    };
    if d.policy.is_some() {
        return format!(
            "in the {} stage by GlobalNetworkPolicy '{}'{}, {}",
            d.stage,
            d.policy.as_deref().unwrap_or(""),
            tier(d),
            rule_text(d)
        );
    }
    let consulted: Vec<String> = e
        .steps
        .iter()
        .filter(|s| s.stage == d.stage && s.policy.is_some())
        .map(|s| {
            format!(
                "'{}'{} ({})",
                s.policy.as_deref().unwrap_or(""),
                tier(s),
                s.at.as_deref().unwrap_or("?")
            )
        })
        .collect();
    let consulted = if consulted.is_empty() {
        String::new()
    } else {
        format!("; policies consulted: {}", consulted.join(", "))
    };
    format!(
        "in the {} stage by the default: {}{consulted}",
        d.stage,
        rule_text(d)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::load_sources;
    use crate::resolve::resolve;

    fn run(yaml: &str) -> Vec<Diagnostic> {
        let loaded = load_sources(&[("t.yaml".to_string(), yaml.to_string())]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let ifaces = vec![
            Interface {
                name: "eth0".into(),
                addrs: vec!["192.0.2.1".parse().unwrap(), "fe80::1".parse().unwrap()],
            },
            Interface {
                name: "lo".into(),
                addrs: vec!["127.0.0.1".parse().unwrap()],
            },
        ];
        let view = resolve(&loaded.config, "node1", &ifaces);
        check(&loaded.config, &view, &ifaces)
    }

    const BASE: &str = "- {apiVersion: projectcalico.org/v3, kind: FelixConfiguration, metadata: {name: default}, spec: {failsafeInboundHostPorts: []}}
- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: hep-eth0, labels: {role: web}}, spec: {node: node1, interfaceName: eth0, expectedIPs: [192.0.2.1]}}
- {apiVersion: hostpolicy/v1, kind: ManagementAccess, metadata: {name: admin-ssh}, spec: {sources: [198.51.100.0/24], ports: [{protocol: TCP, port: 22}]}}
";

    #[test]
    fn pieces_follow_the_boundaries() {
        let cuts = Cuts {
            nets: vec![
                "198.51.100.64/26".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            ports: BTreeSet::from([22, 23, 40000, 70000]),
        };
        let reps: Vec<String> = cuts
            .addresses("198.51.100.0/24".parse().unwrap())
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(reps, ["198.51.100.0", "198.51.100.64", "198.51.100.128"]);
        assert_eq!(cuts.source_ports(), [32768, 40000]);
    }

    #[test]
    fn blocked_by_default_deny_and_accepted_once_allowed() {
        let d = run(BASE);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].is_error());
        assert!(d[0].message.contains("ManagementAccess 'admin-ssh': TCP port 22 from 198.51.100.0/24 is not allowed in on HostEndpoint 'hep-eth0' (interface eth0)"), "{}", d[0]);
        assert!(
            d[0].message.contains("no policy applies to ingress here"),
            "{}",
            d[0]
        );
        let allow = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: ssh}, spec: {selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]}}\n";
        assert_eq!(run(&format!("{BASE}{allow}")), vec![]);
    }

    /// A deny covering only part of the source CIDR is found, whatever the order of the rules.
    #[test]
    fn partial_deny_inside_the_cidr_is_found() {
        let policies = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: a-block}, spec: {order: 1, selector: all(), ingress: [{action: Deny, source: {nets: [198.51.100.77/32]}}]}}
- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: b-ssh}, spec: {order: 2, selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]}}
";
        let d = run(&format!("{BASE}{policies}"));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("e.g. 198.51.100.77:32768 -> 192.0.2.1:22 is dropped in the normal stage by GlobalNetworkPolicy 'a-block', policy a-block ingress rule 1: Deny at t.yaml:4:"), "{}", d[0]);
    }

    #[test]
    fn failsafe_counts_as_allowing() {
        let with_failsafe = BASE.replace(
            "failsafeInboundHostPorts: []",
            "failsafeInboundHostPorts: [{protocol: TCP, port: 22}]",
        );
        let deny = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: deny}, spec: {preDNAT: true, applyOnForward: true, selector: all(), ingress: [{action: Deny}]}}\n";
        assert_eq!(run(&format!("{with_failsafe}{deny}")), vec![]);
        // The failsafe restricted to another net does not cover the flow.
        let narrow = BASE.replace(
            "failsafeInboundHostPorts: []",
            "failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 198.51.100.0/25}]",
        );
        let d = run(&format!("{narrow}{deny}"));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("198.51.100.128:32768"), "{}", d[0]);
        assert!(
            d[0].message
                .contains("preDNAT stage by GlobalNetworkPolicy 'deny'"),
            "{}",
            d[0]
        );
    }

    #[test]
    fn untracked_allow_needs_its_reply() {
        let one_way = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: raw-ssh}, spec: {doNotTrack: true, applyOnForward: true, selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]}}\n";
        let d = run(&format!("{BASE}{one_way}"));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].message
                .contains("no untracked egress policy allows its reply"),
            "{}",
            d[0]
        );
        let both = one_way.replace(
            "ports: [22]}}]",
            "ports: [22]}}], egress: [{action: Allow, protocol: TCP, source: {ports: [22]}}]",
        );
        assert_eq!(run(&format!("{BASE}{both}")), vec![]);
    }

    /// Tiers spec §3.2: a Deny in an earlier tier, or the end-of-tier drop of a tier that does not
    /// pass the flow on, blocks management access even though a later tier allows it.
    #[test]
    fn tiers_deny_and_end_of_tier_are_found() {
        let allow = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: ssh}, spec: {selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]}}\n";
        let tier = "- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {order: 100}}\n";
        let guard = |rules: &str| {
            format!("- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: guard}}, spec: {{tier: platform, selector: all(), ingress: [{rules}]}}}}\n")
        };
        // The guard rail passes everything: the flow reaches the default tier's allow.
        assert_eq!(
            run(&format!("{BASE}{allow}{tier}{}", guard("{action: Pass}"))),
            vec![]
        );
        // A Deny of part of the admin network in the earlier tier.
        let d = run(&format!(
            "{BASE}{allow}{tier}{}",
            guard("{action: Deny, source: {nets: [198.51.100.128/25]}}, {action: Pass}")
        ));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("e.g. 198.51.100.128:32768 -> 192.0.2.1:22 is dropped in the normal stage by GlobalNetworkPolicy 'guard' in tier platform, policy guard (tier platform) ingress rule 1: Deny"), "{}", d[0]);
        // The guard rail passes only TCP 80: the end of tier platform drops SSH.
        let d = run(&format!(
            "{BASE}{allow}{tier}{}",
            guard("{action: Pass, protocol: TCP, destination: {ports: [80]}}")
        ));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("is dropped in the normal stage by the default: end of tier platform: no policy allowed, denied or passed ingress: defaultAction Deny drops it at t.yaml:5:3; policies consulted: 'guard' in tier platform (t.yaml:6:3)"), "{}", d[0]);
    }

    #[test]
    fn other_nodes_wildcard_and_families() {
        // Only this node's ManagementAccess; IPv6 sources need an IPv6 address on the HEP.
        let other = BASE.replace("spec: {sources", "spec: {node: node2, sources");
        assert_eq!(run(&other), vec![]);
        let v6 = BASE.replace("198.51.100.0/24", "\"2001:db8::/64\"");
        assert_eq!(
            run(&v6),
            vec![],
            "no global IPv6 address on eth0: nothing to check"
        );
        // The wildcard HEP is checked as "every interface it governs".
        let star = BASE.replace(
            "interfaceName: eth0, expectedIPs: [192.0.2.1]",
            "interfaceName: \"*\"",
        );
        let d = run(&star);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].message.contains("(every interface it governs)"),
            "{}",
            d[0]
        );
        assert!(d[0].message.contains("-> 192.0.2.1:22"), "{}", d[0]);
    }
}
