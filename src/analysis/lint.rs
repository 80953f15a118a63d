//! Lints: warnings about configurations that are valid but almost certainly not what was meant. They
//! reach `check` (and the daemon's log) through `pipeline::build`; `check --strict` makes them errors.
//!
//! One more lives in `resolve`, where the facts are computed: a policy that selects no HostEndpoint.
//!
//! Every lint here only fires on what it can prove, so that `--strict` stays usable:
//! - **Shadowed rule**: an earlier rule of the same policy and direction with a final action (Allow,
//!   Deny, Pass) whose match provably contains the later rule's match (criterion by criterion; any
//!   criterion it cannot compare makes it give up).
//! - **HostEndpoint without policy in one direction**: no policy of any stage (untracked, preDNAT,
//!   normal) selects it for that direction and it has no `projectcalico-default-allow` profile, so local
//!   traffic that way is denied except failsafe ports and replies. A preDNAT or untracked policy counts:
//!   it can allow traffic (the shipped example allows SSH in with a preDNAT policy).
//! - **HostEndpoint with only doNotTrack or preDNAT policy in one direction**: no normal policy selects
//!   it for that direction, so what those policies do not allow is denied by the normal stage's default
//!   (Calico's semantics), one warning per direction; not when one of them ends with a Deny of every
//!   packet (the shipped example's node-port policy): then the author wrote that denial.
//! - **Tier without policy** (tiers spec §3.1): a declared tier none of whose policies selects a
//!   HostEndpoint of any node never takes part in any evaluation.
//! - **Tier placed after `default` by its name** (tiers spec §1.1): a declared tier whose order is
//!   1,000,000 (written or omitted) ties with the `default` tier, and its name sorts after `default`:
//!   it runs after the application policy only because of its name (Calico's docs say an omitted
//!   order runs last; Felix runs it at 1,000,000, so a tier named `aaa` would run first).
//! - **Pass that never reaches another tier** (tiers spec §3.2, §3.3): a Pass rule in a tier that is
//!   followed by other tiers, where no later tier has a policy of the same stage and direction for any
//!   HostEndpoint the policy selects: the packet goes to the profiles (normal stage) or leaves the
//!   stage without a verdict, never to the tier the author had in mind. A Pass in the last tier (the
//!   pre-tier meaning: on to the profiles) is not flagged.
//! - **No HostEndpoint for this node**: no HostEndpoint names the node (`--node-name`, default the host
//!   name), so the daemon would enforce nothing here: the examples copied unedited, a host name that is
//!   not the one the HostEndpoints use.
//! - **Rule selector that matches HostEndpoints without expectedIPs** (hostpolicy.d(5) "Entity rules"):
//!   a rule selector matches a host only through its expectedIPs, so the rule does nothing for such a
//!   HostEndpoint. The warning names the consequence: for an Allow rule about the HostEndpoint's own
//!   traffic (ingress to it, egress from it, in a policy that selects it) on this node, what `explain`
//!   does to the packet the rule was written for (the view at hand: no node is resolved again).
//! - **Named port that matches nothing**: a rule's port name that no HostEndpoint (picked by the same
//!   side's selector, when there is one) declares in `spec.ports` with the rule's protocol, or only
//!   HostEndpoints without expectedIPs do: the port criterion matches nothing (in `notPorts`, it
//!   excludes nothing).
//! - **doNotTrack policy without its reverse direction** (spec §3.7): a doNotTrack policy allows traffic
//!   in one direction of a HostEndpoint, and no doNotTrack policy allows anything in the other direction
//!   of that HostEndpoint, so the replies meet conntrack as new or invalid packets. Deny-only doNotTrack
//!   policies (deny lists) are one-way by nature and not flagged.

use std::collections::{BTreeSet, HashMap};

use ipnet::IpNet;

use crate::analysis::explain::{explain, Packet, Path, Verdict};
use crate::config::diag::Diagnostic;
use crate::config::model::{
    proto, Action, Config, EntityRule, GlobalNetworkPolicy, HostEndpoint, NamespaceScope, Port,
    Rule, Tier, DEFAULT_TIER, DEFAULT_TIER_ORDER,
};
use crate::resolve::{policy_scope_ok, policy_selects, Dir, NodeView};
use crate::ruleset::rule_name;
use crate::selector::Selector;

/// All lints of this module, in no particular order (`pipeline::build` sorts them).
pub fn lint(config: &Config, view: &NodeView) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for policy in &config.policies {
        shadowed_rules(policy, &mut out);
    }
    directions_without_policy(config, &mut out);
    one_way_untracked(config, &mut out);
    tiers_without_policy(config, &mut out);
    tier_order_ties_with_default(config, &mut out);
    passes_that_reach_no_tier(config, &mut out);
    no_host_endpoint_for_node(config, &view.node, &mut out);
    rule_selectors_missing_hosts(config, view, &mut out);
    named_ports_nobody_declares(config, &mut out);
    out
}

// ---- shadowed rules ---------------------------------------------------------------------------------

fn shadowed_rules(policy: &GlobalNetworkPolicy, out: &mut Vec<Diagnostic>) {
    for (dir, on, rules) in [
        ("ingress", policy.ingress_type, &policy.ingress),
        ("egress", policy.egress_type, &policy.egress),
    ] {
        if !on {
            continue;
        }
        for (j, later) in rules.iter().enumerate() {
            let earlier = rules[..j]
                .iter()
                .enumerate()
                .find(|(_, r)| r.action != Action::Log && covers(r, later));
            if let Some((i, r)) = earlier {
                out.push(Diagnostic::warning(
                    later.pos.clone(),
                    format!(
                        "GlobalNetworkPolicy '{}' {} ({:?}) is never reached: {} ({:?}, {}) matches every packet it matches and ends the policy",
                        policy.name, rule_name(dir, j), later.action, rule_name(dir, i), r.action, r.pos
                    ),
                ));
            }
        }
    }
}

/// Whether every packet rule `b` matches is matched by rule `a` (a proof, not a guess: `false` when
/// unsure).
fn covers(a: &Rule, b: &Rule) -> bool {
    if b.source.service_accounts
        || b.destination.service_accounts
        || a.source.service_accounts
        || a.destination.service_accounts
    {
        return false;
    }
    let protocol_ok = match a.protocol {
        None => true,
        Some(p) => b.protocol == Some(p),
    };
    let not_protocol_ok = match a.not_protocol {
        None => true,
        Some(p) => b.not_protocol == Some(p) || b.protocol.is_some_and(|q| q != p),
    };
    let version_ok = match a.ip_version {
        None => true,
        Some(v) => family_of_rule(b) == Some(v),
    };
    let icmp_ok = match a.icmp {
        None => true,
        Some(ai) => b.icmp.is_some_and(|bi| {
            bi.icmp_type == ai.icmp_type && (ai.code.is_none() || ai.code == bi.code)
        }),
    };
    let not_icmp_ok = a.not_icmp.is_none() || a.not_icmp == b.not_icmp;
    protocol_ok
        && not_protocol_ok
        && version_ok
        && icmp_ok
        && not_icmp_ok
        && entity_covers(&a.source, &b.source)
        && entity_covers(&a.destination, &b.destination)
}

/// The only IP family a rule can match, when its criteria pin one.
fn family_of_rule(r: &Rule) -> Option<u8> {
    if let Some(v) = r.ip_version {
        return Some(v);
    }
    match r.protocol {
        Some(proto::ICMP) if r.icmp.is_some() || r.not_icmp.is_some() => return Some(4),
        Some(proto::ICMPV6) if r.icmp.is_some() || r.not_icmp.is_some() => return Some(6),
        _ => {}
    }
    let nets: Vec<&IpNet> = r
        .source
        .nets
        .iter()
        .chain(r.destination.nets.iter())
        .collect();
    if nets.is_empty() {
        return None;
    }
    if nets.iter().all(|n| n.addr().is_ipv4()) {
        Some(4)
    } else if nets.iter().all(|n| n.addr().is_ipv6()) {
        Some(6)
    } else {
        None
    }
}

fn entity_covers(a: &EntityRule, b: &EntityRule) -> bool {
    let same_selector =
        |x: &Option<crate::config::model::At<crate::selector::Selector>>,
         y: &Option<crate::config::model::At<crate::selector::Selector>>| match (x, y) {
            (None, _) => true,
            (Some(x), Some(y)) => x.value.canonical() == y.value.canonical(),
            (Some(_), None) => false,
        };
    let uses_scope = a.selector.is_some()
        || a.not_selector.is_some()
        || has_named(&a.ports)
        || has_named(&a.not_ports);
    if uses_scope
        && a.namespace_scope != b.namespace_scope
        && !(is_host_scope(&a.namespace_scope) && is_host_scope(&b.namespace_scope))
    {
        return false;
    }
    // nets: every net of b inside some net of a.
    let nets_ok = a.nets.is_empty()
        || (!b.nets.is_empty() && b.nets.iter().all(|n| a.nets.iter().any(|m| m.contains(n))));
    // notNets: each excluded net of a is excluded by b too, or lies outside all of b's nets.
    let not_nets_ok = a.not_nets.iter().all(|n| {
        b.not_nets.iter().any(|m| m.contains(n))
            || (!b.nets.is_empty() && b.nets.iter().all(|m| !overlaps(m, n)))
    });
    let selector_ok = same_selector(&a.selector, &b.selector);
    let not_selector_ok = match &a.not_selector {
        None => true,
        Some(x) => b
            .not_selector
            .as_ref()
            .is_some_and(|y| y.value.canonical() == x.value.canonical()),
    };
    let ports_ok = a.ports.is_empty()
        || (!b.ports.is_empty()
            && b.ports.iter().all(|p| match p {
                Port::Range(lo, hi) => a
                    .ports
                    .iter()
                    .any(|q| matches!(q, Port::Range(l, h) if l <= lo && hi <= h)),
                // A named port of b: a has the same name, for the same (or any) endpoints.
                Port::Named(n) => {
                    a.ports.contains(&Port::Named(n.clone()))
                        && same_selector(&a.selector, &b.selector)
                }
            }));
    let not_ports_ok = a.not_ports.iter().all(|p| match p {
        Port::Range(lo, hi) => {
            b.not_ports
                .iter()
                .any(|q| matches!(q, Port::Range(l, h) if l <= lo && hi <= h))
                || (!b.ports.is_empty()
                    && b.ports
                        .iter()
                        .all(|q| matches!(q, Port::Range(l, h) if h < lo || l > hi)))
        }
        Port::Named(_) => b.not_ports.contains(p) && same_selector(&a.selector, &b.selector),
    });
    nets_ok && not_nets_ok && selector_ok && not_selector_ok && ports_ok && not_ports_ok
}

fn is_host_scope(s: &NamespaceScope) -> bool {
    matches!(s, NamespaceScope::Any | NamespaceScope::Global)
}

fn has_named(ports: &[Port]) -> bool {
    ports.iter().any(|p| matches!(p, Port::Named(_)))
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

// ---- HostEndpoints without policy in a direction ------------------------------------------------------

/// Policies grouped by selector text, for the lints that ask which policies select each HostEndpoint:
/// each distinct selector is matched once per HostEndpoint, not each policy (10,000 policies usually
/// share a few selectors, and policies × HostEndpoints was most of the lints' time).
struct BySelector<'c> {
    /// Each distinct selector and its policies (indices into `config.policies`, in file order) whose
    /// namespace and service-account scope passes (see `resolve::policy_selects`).
    groups: Vec<(&'c Selector, Vec<usize>)>,
}

impl<'c> BySelector<'c> {
    /// The policies for which `keep` holds, grouped.
    fn new(config: &'c Config, keep: impl Fn(&GlobalNetworkPolicy) -> bool) -> Self {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut groups: Vec<(&Selector, Vec<usize>)> = Vec::new();
        for (i, p) in config.policies.iter().enumerate() {
            if !keep(p) || !policy_scope_ok(p) {
                continue;
            }
            let sel = &p.selector.value;
            let g = *index.entry(sel.source()).or_insert_with(|| {
                groups.push((sel, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        BySelector { groups }
    }

    /// The groups whose selector selects `hep`.
    fn selecting<'s>(&'s self, hep: &'s HostEndpoint) -> impl Iterator<Item = &'s [usize]> + 's {
        self.groups
            .iter()
            .filter(|(sel, _)| sel.matches(&hep.labels))
            .map(|(_, ps)| ps.as_slice())
    }
}

fn directions_without_policy(config: &Config, out: &mut Vec<Diagnostic>) {
    // Untracked policy is ignored on a wildcard HostEndpoint (as resolve assigns policies).
    let all = BySelector::new(config, |_| true);
    let tracked = BySelector::new(config, |p| !p.do_not_track);
    for hep in &config.host_endpoints {
        if hep
            .profiles
            .iter()
            .any(|p| p.value == crate::compile::DEFAULT_ALLOW_PROFILE)
        {
            continue;
        }
        let groups = if hep.is_wildcard() { &tracked } else { &all };
        let mut selecting: Vec<usize> = groups.selecting(hep).flatten().copied().collect();
        selecting.sort_unstable();
        for (dir, types) in [("ingress", "Ingress"), ("egress", "Egress")] {
            let ingress = dir == "ingress";
            // The policies of this direction, of any stage (preDNAT policies have no egress:
            // validation).
            let policies: Vec<&GlobalNetworkPolicy> = selecting
                .iter()
                .map(|&i| &*config.policies[i])
                .filter(|p| {
                    if ingress {
                        p.ingress_type
                    } else {
                        p.egress_type && !p.pre_dnat
                    }
                })
                .collect();
            if policies.is_empty() {
                out.push(Diagnostic::warning(
                    hep.pos.clone(),
                    format!(
                        "HostEndpoint '{}' (node {}) has no policy for {dir}: all {dir} traffic of local processes through it is denied, except failsafe ports and replies of allowed connections (add a policy that selects it with types [{types}], or the profile {})",
                        hep.name,
                        hep.node,
                        crate::compile::DEFAULT_ALLOW_PROFILE
                    ),
                ));
                continue;
            }
            if policies.iter().any(|p| !p.do_not_track && !p.pre_dnat) {
                continue;
            }
            // Only doNotTrack and preDNAT policies (issue 20 item 5): what they do not allow meets the
            // normal stage, where no policy applies and the default denies it (HOW POLICY APPLIES in
            // hostpolicy.d(5)). Unless one of them already ends with a Deny of everything: then the
            // author said so.
            let rules = |p: &&GlobalNetworkPolicy| -> bool {
                let list = if ingress { &p.ingress } else { &p.egress };
                list.iter()
                    .any(|r| r.action == Action::Deny && matches_every_packet(r))
            };
            if policies.iter().any(rules) {
                continue;
            }
            let kinds = match (
                policies.iter().any(|p| p.do_not_track),
                policies.iter().any(|p| p.pre_dnat),
            ) {
                (true, true) => "doNotTrack and preDNAT policies",
                (true, false) => "doNotTrack policy",
                _ => "preDNAT policy",
            };
            let names = policies
                .iter()
                .map(|p| format!("'{}'", p.name))
                .collect::<Vec<_>>()
                .join(", ");
            out.push(Diagnostic::warning(
                hep.pos.clone(),
                format!(
                    "HostEndpoint '{}' (node {}) has only {kinds} for {dir} ({names}) and no normal policy: the {dir} traffic of local processes through it that {} not allow is denied by the default of the normal stage, except failsafe ports and replies of allowed connections (add a normal policy that selects it with types [{types}], end {} with a rule `action: Deny`, or add the profile {})",
                    hep.name,
                    hep.node,
                    if policies.len() == 1 { "it does" } else { "they do" },
                    if policies.len() == 1 { "it" } else { "one of them" },
                    crate::compile::DEFAULT_ALLOW_PROFILE
                ),
            ));
        }
    }
}

/// A rule without any match criterion: it matches every packet.
fn matches_every_packet(r: &Rule) -> bool {
    r.protocol.is_none()
        && r.not_protocol.is_none()
        && r.icmp.is_none()
        && r.not_icmp.is_none()
        && r.ip_version.is_none()
        && r.source == EntityRule::default()
        && r.destination == EntityRule::default()
}

// ---- rule selectors and HostEndpoints without expectedIPs ---------------------------------------------

/// How many warnings of this lint get an evaluated example; the others say what the rule does not do,
/// without one.
const MAX_EXPLAINED: usize = 16;

/// Where the example packets come from or go to: documentation addresses, the node's own first.
const NODE_V4: &str = "192.0.2.1";
const NODE_V6: &str = "2001:db8::1";
const PEER_V4: &str = "203.0.113.1";
const PEER_V6: &str = "2001:db8:ffff::1";

fn rule_selectors_missing_hosts(config: &Config, view: &NodeView, out: &mut Vec<Diagnostic>) {
    // The HostEndpoints without expectedIPs a selector matches, once per selector text and scope.
    let mut missing: HashMap<(String, bool), Vec<usize>> = HashMap::new();
    let mut explained = 0;
    for policy in &config.policies {
        for (dir, on, rules) in [
            (Dir::Ingress, policy.ingress_type, &policy.ingress),
            (Dir::Egress, policy.egress_type, &policy.egress),
        ] {
            for (index, rule) in rules.iter().enumerate() {
                for (destination, entity) in [(false, &rule.source), (true, &rule.destination)] {
                    for (negated, sel) in [(false, &entity.selector), (true, &entity.not_selector)]
                    {
                        let Some(sel) = sel else { continue };
                        let namespaced = entity.namespace_scope == NamespaceScope::Namespaced;
                        let heps = missing
                            .entry((sel.value.source().to_owned(), namespaced))
                            .or_insert_with(|| {
                                if namespaced {
                                    return Vec::new();
                                }
                                config
                                    .host_endpoints
                                    .iter()
                                    .enumerate()
                                    .filter(|(_, h)| {
                                        h.expected_ips.is_empty() && sel.value.matches(&h.labels)
                                    })
                                    .map(|(i, _)| i)
                                    .collect()
                            });
                        if heps.is_empty() {
                            continue;
                        }
                        let names: Vec<String> = heps
                            .iter()
                            .map(|&i| format!("'{}'", config.host_endpoints[i].name))
                            .collect();
                        let what = format!(
                            "GlobalNetworkPolicy '{}' {} ({:?})",
                            policy.name,
                            rule_name(dir.as_str(), index),
                            rule.action
                        );
                        let (them, to) = (
                            if heps.len() == 1 { "it" } else { "them" },
                            if destination { "to" } else { "from" },
                        );
                        let mut consequence = if negated {
                            format!(
                                "so the notSelector of {what} does not exclude traffic {to} {them}"
                            )
                        } else {
                            match rule.action {
                                Action::Allow => {
                                    format!("so {what} does not allow traffic {to} {them}")
                                }
                                Action::Deny => {
                                    format!("so {what} does not deny traffic {to} {them}")
                                }
                                _ => format!("so {what} never matches traffic {to} {them}"),
                            }
                        };
                        // The HostEndpoint's own traffic, which this rule was written to allow: what
                        // happens to it instead, as explain says.
                        let own = on
                            && !negated
                            && rule.action == Action::Allow
                            && destination == (dir == Dir::Ingress);
                        if own && explained < MAX_EXPLAINED {
                            if let Some(example) = heps
                                .iter()
                                .find_map(|&h| example_instead(config, view, policy, dir, rule, h))
                            {
                                explained += 1;
                                consequence.push_str(&example);
                            }
                        }
                        out.push(Diagnostic::warning(
                            sel.pos.clone(),
                            format!(
                                "rule selector `{}` matches HostEndpoint {} without expectedIPs: a rule selector matches a host only through its expectedIPs (see Entity rules in hostpolicy.d(5)), {consequence}",
                                sel.value.source(),
                                names.join(", "),
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// `: e.g. TCP from 203.0.113.1 to port 31852 in eth0 (node node1) is dropped by [preDNAT] policy deny
/// ingress rule 2: Deny (FILE:LINE:COL), as `hostpolicyd explain` shows` — the packet `rule` was
/// written for, on HostEndpoint `hep`'s interface, evaluated on `view`; `None` when the HostEndpoint
/// is not one of `view`'s (another node's, or inactive), has no interface of its own, or the policy
/// does not apply to it.
fn example_instead(
    config: &Config,
    view: &NodeView,
    policy: &GlobalNetworkPolicy,
    dir: Dir,
    rule: &Rule,
    hep: usize,
) -> Option<String> {
    let h = &config.host_endpoints[hep];
    let iface = h.interface_name.as_deref().filter(|i| *i != "*")?;
    if h.node != view.node
        || !view
            .endpoints
            .iter()
            .any(|ep| ep.hep == hep && ep.interfaces.iter().any(|i| i == iface))
        || !policy_selects(policy, &h.labels)
    {
        return None;
    }
    let nets = rule.source.nets.iter().chain(rule.destination.nets.iter());
    let v6 = match rule.ip_version {
        Some(v) => v == 6,
        None => match rule.protocol {
            Some(proto::ICMPV6) => true,
            Some(proto::ICMP) => false,
            _ => nets
                .clone()
                .next()
                .is_some_and(|n| matches!(n, IpNet::V6(_))),
        },
    };
    let pick = |v4: &str, v6addr: &str| -> std::net::IpAddr {
        (if v6 { v6addr } else { v4 })
            .parse()
            .expect("a literal address")
    };
    let node_addr = pick(NODE_V4, NODE_V6);
    // The other end: the first net the rule names for it, else a documentation address.
    let other_nets = if dir == Dir::Ingress {
        &rule.source.nets
    } else {
        &rule.destination.nets
    };
    let peer = other_nets
        .iter()
        .find(|n| matches!(n, IpNet::V6(_)) == v6)
        .map(|n| match n.hosts().next() {
            Some(a) => a,
            None => n.addr(),
        })
        .unwrap_or_else(|| pick(PEER_V4, PEER_V6));
    let protocol = rule.protocol.unwrap_or(proto::TCP);
    let first = |ports: &[Port]| {
        ports.iter().find_map(|p| match p {
            Port::Range(lo, _) => Some(*lo),
            Port::Named(_) => None,
        })
    };
    let (src, dst, path) = match dir {
        Dir::Ingress => (
            peer,
            node_addr,
            Path::Inbound {
                iface: iface.to_owned(),
            },
        ),
        Dir::Egress => (
            node_addr,
            peer,
            Path::Outbound {
                iface: iface.to_owned(),
            },
        ),
    };
    let mut packet = Packet::new(path, src, dst, protocol);
    if matches!(
        protocol,
        proto::TCP | proto::UDP | proto::SCTP | proto::UDPLITE
    ) {
        packet.sport = first(&rule.source.ports);
        packet.dport = first(&rule.destination.ports);
    }
    if let Some(icmp) = rule.icmp {
        packet.icmp_type = Some(icmp.icmp_type);
        packet.icmp_code = icmp.code;
    }
    let e = explain(config, view, &packet);
    let proto_text = crate::compile::proto_name(protocol).to_uppercase();
    let port = packet
        .dport
        .map(|p| format!(" to port {p}"))
        .unwrap_or_default();
    let example = match dir {
        Dir::Ingress => format!(
            "{proto_text} from {peer}{port} in {iface} (node {})",
            h.node
        ),
        Dir::Egress => format!(
            "{proto_text} to {peer}{port} out of {iface} (node {})",
            h.node
        ),
    };
    let at = e
        .decided_by
        .at
        .as_ref()
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    Some(match e.verdict {
        Verdict::Drop => format!(
            ": e.g. {example} is dropped by [{}] {}{at}, as `hostpolicyd explain` shows",
            e.decided_by.stage, e.decided_by.text
        ),
        Verdict::Allow => format!(
            " (e.g. {example} is allowed by [{}] {}{at} instead, as `hostpolicyd explain` shows)",
            e.decided_by.stage, e.decided_by.text
        ),
    })
}

// ---- named ports -----------------------------------------------------------------------------------------

fn named_ports_nobody_declares(config: &Config, out: &mut Vec<Diagnostic>) {
    for policy in &config.policies {
        for (dir, rules) in [
            (Dir::Ingress, &policy.ingress),
            (Dir::Egress, &policy.egress),
        ] {
            for (index, rule) in rules.iter().enumerate() {
                for (side, entity) in [("source", &rule.source), ("destination", &rule.destination)]
                {
                    for (field, ports) in
                        [("ports", &entity.ports), ("notPorts", &entity.not_ports)]
                    {
                        for name in ports.iter().filter_map(|p| match p {
                            Port::Named(n) => Some(n.as_str()),
                            Port::Range(..) => None,
                        }) {
                            let declaring: Vec<&HostEndpoint> =
                                if entity.namespace_scope == NamespaceScope::Namespaced {
                                    Vec::new()
                                } else {
                                    config
                                        .host_endpoints
                                        .iter()
                                        .filter(|h| {
                                            entity
                                                .selector
                                                .as_ref()
                                                .is_none_or(|s| s.value.matches(&h.labels))
                                        })
                                        .filter(|h| {
                                            h.ports.iter().any(|p| {
                                                p.name == name
                                                    && rule.protocol.is_none_or(|r| r == p.protocol)
                                            })
                                        })
                                        .collect()
                                };
                            if declaring.iter().any(|h| !h.expected_ips.is_empty()) {
                                continue;
                            }
                            let whose = if entity.selector.is_some() {
                                " that its selector matches"
                            } else {
                                ""
                            };
                            let protocol = rule
                                .protocol
                                .map(|p| {
                                    format!(
                                        " with protocol {}",
                                        crate::compile::proto_name(p).to_uppercase()
                                    )
                                })
                                .unwrap_or_default();
                            let fact = if declaring.is_empty() {
                                format!("no HostEndpoint{whose} declares a port named `{name}`{protocol} in its `ports`")
                            } else {
                                format!(
                                    "the HostEndpoints that declare port `{name}` ({}) have no expectedIPs, and a named port matches a host only through them",
                                    declaring
                                        .iter()
                                        .map(|h| format!("'{}'", h.name))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            };
                            let effect = if field == "ports" {
                                "matches nothing"
                            } else {
                                "excludes nothing"
                            };
                            out.push(Diagnostic::warning(
                                rule.pos.clone(),
                                format!(
                                    "GlobalNetworkPolicy '{}' {}: {side} {field} `{name}` {effect}: {fact}",
                                    policy.name,
                                    rule_name(dir.as_str(), index),
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
}

// ---- tiers -----------------------------------------------------------------------------------------------

/// Declared tiers (built-ins excepted: they exist anyway) none of whose policies selects a HostEndpoint.
fn tiers_without_policy(config: &Config, out: &mut Vec<Diagnostic>) {
    let declared: Vec<&Tier> = config.tiers.iter().filter(|t| !t.is_builtin()).collect();
    if declared.is_empty() {
        return;
    }
    let by_selector = BySelector::new(config, |_| true);
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for (sel, policies) in &by_selector.groups {
        if config.host_endpoints.iter().any(|h| sel.matches(&h.labels)) {
            used.extend(
                policies
                    .iter()
                    .map(|&i| config.policies[i].tier.value.as_str()),
            );
        }
    }
    for t in declared {
        if used.contains(t.name.as_str()) {
            continue;
        }
        let Some(pos) = &t.pos else { continue };
        let count = config
            .policies
            .iter()
            .filter(|p| p.tier.value == t.name)
            .count();
        let why = match count {
            0 => "no policy is in it".to_owned(),
            1 => "its one policy selects no HostEndpoint of any node".to_owned(),
            _ => format!("none of its {count} policies selects a HostEndpoint of any node"),
        };
        out.push(Diagnostic::warning(
            pos.clone(),
            format!(
                "Tier '{}' has no effect: {why}, and a tier takes part only for the HostEndpoints its policies select (put policies in it with `spec.tier: {}`, or remove it)",
                t.name, t.name
            ),
        ));
    }
}

/// Declared tiers whose order equals the `default` tier's and whose name puts them after `default`.
fn tier_order_ties_with_default(config: &Config, out: &mut Vec<Diagnostic>) {
    for t in config.tiers.iter().filter(|t| !t.is_builtin()) {
        let Some(pos) = &t.pos else { continue };
        if t.order != DEFAULT_TIER_ORDER {
            continue;
        }
        // A tie placed before `default` by its name is what a guard-rail tier wants; after `default`,
        // the application policy decides first, which is hardly what a tier is declared for.
        if t.name.as_str() < DEFAULT_TIER {
            continue;
        }
        let message = format!(
            "Tier '{}' has order 1000000 (the order of a tier without `order`), the same as the `default` tier, so it runs after `default` only because its name sorts after `default`: the policies of the default tier decide first and this tier sees only what they pass or leave undecided; write `order:` below 1000000 (e.g. `order: 100`) to run before `default`, or above it to run after on purpose",
            t.name
        );
        out.push(Diagnostic::warning(pos.clone(), message));
    }
}

/// The stage class of a policy: 0 untracked, 1 preDNAT, 2 normal (tiers spec §3.1).
fn class(p: &GlobalNetworkPolicy) -> usize {
    if p.do_not_track {
        0
    } else if p.pre_dnat {
        1
    } else {
        2
    }
}

const CLASS_NAMES: [&str; 3] = ["untracked", "preDNAT", "normal"];

/// Pass rules in a tier followed by other tiers, where no later tier ever has a policy of the same
/// stage and direction for the HostEndpoints the policy selects.
fn passes_that_reach_no_tier(config: &Config, out: &mut Vec<Diagnostic>) {
    let has_pass = |p: &GlobalNetworkPolicy| {
        (p.ingress_type && p.ingress.iter().any(|r| r.action == Action::Pass))
            || (p.egress_type && p.egress.iter().any(|r| r.action == Action::Pass))
    };
    if !config.policies.iter().any(|p| has_pass(p)) {
        return;
    }
    // Tier ranks in evaluation order (tiers spec §1.1); a tier that does not exist sorts last.
    let mut names: Vec<&str> = config
        .policies
        .iter()
        .map(|p| p.tier.value.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.sort_by(|a, b| {
        let key = |n: &str| {
            let t = config.tier(n);
            (t.is_none(), t.map_or(f64::INFINITY, |t| t.order))
        };
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then_with(|| a.cmp(b))
    });
    let rank = |p: &GlobalNetworkPolicy| {
        names
            .iter()
            .position(|n| *n == p.tier.value)
            .expect("every policy's tier is listed")
    };
    let last_rank = names.len() - 1;
    // Per HostEndpoint, class and direction: the latest tier rank of a policy that applies there.
    let by_selector = BySelector::new(config, |_| true);
    let mut latest: Vec<[[Option<usize>; 2]; 3]> =
        vec![[[None; 2]; 3]; config.host_endpoints.len()];
    for (h, hep) in config.host_endpoints.iter().enumerate() {
        for &i in by_selector.selecting(hep).flatten() {
            let p = &config.policies[i];
            let r = rank(p);
            for (d, on) in [(0, p.ingress_type), (1, p.egress_type && !p.pre_dnat)] {
                if on {
                    let slot = &mut latest[h][class(p)][d];
                    *slot = Some(slot.map_or(r, |x: usize| x.max(r)));
                }
            }
        }
    }
    for p in config.policies.iter().filter(|p| has_pass(p)) {
        let r = rank(p);
        if r == last_rank || !policy_scope_ok(p) {
            continue;
        }
        let selected: Vec<usize> = (0..config.host_endpoints.len())
            .filter(|&h| p.selector.value.matches(&config.host_endpoints[h].labels))
            .collect();
        if selected.is_empty() {
            continue;
        }
        for (d, dir, on, rules) in [
            (0, "ingress", p.ingress_type, &p.ingress),
            (1, "egress", p.egress_type && !p.pre_dnat, &p.egress),
        ] {
            if !on {
                continue;
            }
            let Some((i, rule)) = rules
                .iter()
                .enumerate()
                .find(|(_, r)| r.action == Action::Pass)
            else {
                continue;
            };
            let reaches = selected
                .iter()
                .any(|&h| latest[h][class(p)][d].is_some_and(|x| x > r));
            if reaches {
                continue;
            }
            let stage = CLASS_NAMES[class(p)];
            let instead = match class(p) {
                2 => "a passed packet goes straight to the HostEndpoint's profiles (and is dropped without `projectcalico-default-allow`)".to_owned(),
                _ => format!("a passed packet leaves the {stage} stage without a verdict (a Pass never reaches the tiers of another stage)"),
            };
            out.push(Diagnostic::warning(
                rule.pos.clone(),
                format!(
                    "GlobalNetworkPolicy '{}' (tier {}) {} (Pass) never reaches another tier: no policy of a later tier applies to {dir} in the {stage} stage of the HostEndpoints it selects, so {instead}",
                    p.name, p.tier.value, rule_name(dir, i)
                ),
            ));
        }
    }
}

// ---- doNotTrack without its reverse direction -------------------------------------------------------------

fn allows(p: &GlobalNetworkPolicy, ingress: bool) -> bool {
    let (on, rules) = if ingress {
        (p.ingress_type, &p.ingress)
    } else {
        (p.egress_type, &p.egress)
    };
    on && rules.iter().any(|r| r.action == Action::Allow)
}

fn one_way_untracked(config: &Config, out: &mut Vec<Diagnostic>) {
    let by_selector = BySelector::new(config, |p| p.do_not_track);
    if by_selector.groups.is_empty() {
        return;
    }
    let mut reported: BTreeSet<(String, bool)> = BTreeSet::new();
    for hep in config.host_endpoints.iter().filter(|h| !h.is_wildcard()) {
        let mut selected: Vec<usize> = by_selector.selecting(hep).flatten().copied().collect();
        selected.sort_unstable();
        let untracked: Vec<&GlobalNetworkPolicy> =
            selected.iter().map(|&i| &*config.policies[i]).collect();
        // Whether some untracked policy allows ingress, egress: once per HostEndpoint.
        let allowed = |ingress: bool| untracked.iter().any(|q| allows(q, ingress));
        let (allows_in, allows_out) = (allowed(true), allowed(false));
        for &p in &untracked {
            for ingress in [true, false] {
                let reverse = if ingress { allows_out } else { allows_in };
                if !allows(p, ingress) || reverse {
                    continue;
                }
                if !reported.insert((p.name.clone(), ingress)) {
                    continue;
                }
                let (dir, rev) = if ingress {
                    ("ingress", "egress")
                } else {
                    ("egress", "ingress")
                };
                out.push(Diagnostic::warning(
                    p.pos.clone(),
                    format!(
                        "doNotTrack GlobalNetworkPolicy '{}' allows {dir} on HostEndpoint '{}', but no doNotTrack policy allows {rev} there: replies of the flows it allows are not tracked, reach the tracked stages as new or invalid packets and are normally dropped (see HOW POLICY APPLIES in hostpolicy.d(5)); add {rev} rules for the replies (e.g. from the same ports)",
                        p.name, hep.name
                    ),
                ));
            }
        }
    }
}

// ---- no HostEndpoint for this node ------------------------------------------------------------------------

/// No HostEndpoint names `node`. Pointed at the first HostEndpoint, with the nodes the configuration
/// names (often the fix is the node name, not the files); without any HostEndpoint, at no position.
fn no_host_endpoint_for_node(config: &Config, node: &str, out: &mut Vec<Diagnostic>) {
    if config.host_endpoints.iter().any(|h| h.node == node) {
        return;
    }
    let consequence = format!(
        "hostpolicyd enforces nothing on node '{node}' (the node name is --node-name or \
         HOSTPOLICYD_NODE_NAME, by default the host name)"
    );
    match config.host_endpoints.first() {
        Some(first) => {
            let nodes: BTreeSet<&str> = config
                .host_endpoints
                .iter()
                .map(|h| h.node.as_str())
                .collect();
            let nodes = nodes
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push(Diagnostic::warning(
                first.pos.clone(),
                format!(
                    "no HostEndpoint is for node '{node}' (the HostEndpoints are for node {nodes}): {consequence}"
                ),
            ));
        }
        None => out.push(Diagnostic {
            severity: crate::config::diag::Severity::Warning,
            pos: None,
            message: format!("the configuration has no HostEndpoint: {consequence}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::load_sources;
    use crate::resolve::resolve;

    fn lints(yaml: &str) -> Vec<String> {
        let loaded = load_sources(&[("t.yaml".to_string(), yaml.to_string())]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let view = resolve(&loaded.config, "node1", &[]);
        lint(&loaded.config, &view)
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    const HEP: &str = "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: h, labels: {role: web}}, spec: {node: node1, interfaceName: eth0, expectedIPs: [192.0.2.1]}}\n";
    const BOTH: &str = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: base}, spec: {selector: all(), types: [Ingress, Egress]}}\n";

    fn policy(rules: &str) -> String {
        format!("{HEP}{BOTH}- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: p}}, spec: {{selector: all(), ingress: [{rules}]}}}}\n")
    }

    #[test]
    fn shadowed_rules_are_proved() {
        let shadowed = [
            "{action: Allow}, {action: Deny, protocol: TCP}",
            "{action: Deny, protocol: TCP}, {action: Allow, protocol: TCP, destination: {ports: [80]}}",
            "{action: Pass, source: {nets: [192.0.2.0/24]}}, {action: Allow, source: {nets: [192.0.2.0/28, 192.0.2.128/25]}}",
            "{action: Allow, protocol: TCP, destination: {ports: ['1:1000']}}, {action: Deny, protocol: TCP, destination: {ports: [22, '80:90']}}",
            "{action: Deny, ipVersion: 4}, {action: Allow, source: {nets: [198.51.100.0/24]}}",
            "{action: Allow, source: {notNets: [10.0.0.0/8]}}, {action: Deny, source: {nets: [192.0.2.0/24]}}",
            "{action: Deny, protocol: ICMP, icmp: {type: 8}}, {action: Allow, protocol: ICMP, icmp: {type: 8, code: 0}}",
            "{action: Allow, source: {selector: \"role == 'db'\"}}, {action: Deny, protocol: UDP, source: {selector: \"role=='db'\"}}",
        ];
        for rules in shadowed {
            let l = lints(&policy(rules));
            assert_eq!(l.len(), 1, "{rules}: {l:?}");
            assert!(
                l[0].contains("warning: GlobalNetworkPolicy 'p' ingress rule 2")
                    && l[0].contains("is never reached: ingress rule 1"),
                "{l:?}"
            );
        }
        let reachable = [
            "{action: Log}, {action: Allow}",
            "{action: Allow, protocol: TCP}, {action: Deny}",
            "{action: Allow, protocol: TCP, destination: {ports: [80]}}, {action: Deny, protocol: TCP}",
            "{action: Allow, source: {nets: [192.0.2.0/28]}}, {action: Deny, source: {nets: [192.0.2.0/24]}}",
            "{action: Allow, source: {selector: \"role == 'db'\"}}, {action: Deny, source: {nets: [192.0.2.0/24]}}",
            "{action: Allow, source: {notNets: [192.0.2.0/24]}}, {action: Deny, source: {nets: [192.0.2.0/16]}}",
            "{action: Deny, ipVersion: 4}, {action: Allow}",
            "{action: Allow, protocol: TCP, destination: {notPorts: [22]}}, {action: Deny, protocol: TCP, destination: {ports: ['20:30']}}",
        ];
        for rules in reachable {
            let l = lints(&policy(rules));
            assert!(l.is_empty(), "{rules}: {l:?}");
        }
    }

    #[test]
    fn directions_without_policy_count_every_stage() {
        let l = lints(HEP);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(
            l[0].starts_with(
                "t.yaml:1:3: warning: HostEndpoint 'h' (node node1) has no policy for ingress"
            ),
            "{l:?}"
        );
        assert!(l[1].contains("has no policy for egress"), "{l:?}");
        let prednat_in = format!("{HEP}- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: pd}}, spec: {{preDNAT: true, applyOnForward: true, selector: all(), ingress: [{{action: Allow}}]}}}}\n");
        let l = lints(&prednat_in);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(
            l[0].contains("has only preDNAT policy for ingress ('pd') and no normal policy"),
            "{l:?}"
        );
        assert!(l[1].contains("no policy for egress"), "{l:?}");
        let profile = HEP.replace(
            "expectedIPs: [192.0.2.1]",
            "expectedIPs: [192.0.2.1], profiles: [projectcalico-default-allow]",
        );
        assert!(lints(&profile).is_empty());
    }

    /// Issue 20 item 5: only doNotTrack (or preDNAT) policy in a direction leaves the rest of that
    /// direction to the normal stage's default deny: one warning per direction, unless a Deny of every
    /// packet already ends them, or a normal policy or the default-allow profile is there.
    #[test]
    fn only_untracked_or_prednat_policy_in_a_direction() {
        let untracked = gnp(
            "mc",
            "doNotTrack: true, applyOnForward: true, selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [11211]}}], egress: [{action: Allow, protocol: TCP, source: {ports: [11211]}}]",
        );
        let l = lints(&format!("{HEP}{untracked}"));
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[0].starts_with("t.yaml:1:3: warning: HostEndpoint 'h' (node node1) has only doNotTrack policy for ingress ('mc') and no normal policy: the ingress traffic of local processes through it that it does not allow is denied"), "{l:?}");
        assert!(
            l[1].contains("has only doNotTrack policy for egress ('mc')"),
            "{l:?}"
        );
        // A normal policy for both directions: nothing to say.
        assert!(lints(&format!("{HEP}{BOTH}{untracked}")).is_empty());
        // A normal policy for egress only: ingress is still left to the default.
        let egress = gnp("out", "selector: all(), egress: [{action: Allow}]");
        let l = lints(&format!("{HEP}{egress}{untracked}"));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(l[0].contains("only doNotTrack policy for ingress"), "{l:?}");
        // Both kinds, and a closing Deny that says it.
        let pd = gnp(
            "pd",
            "preDNAT: true, applyOnForward: true, selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]",
        );
        let l = lints(&format!("{HEP}{egress}{untracked}{pd}"));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].contains("only doNotTrack and preDNAT policies for ingress ('mc', 'pd')"),
            "{l:?}"
        );
        let closed = gnp(
            "pd",
            "preDNAT: true, applyOnForward: true, selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}, {action: Deny}]",
        );
        assert!(lints(&format!("{HEP}{egress}{untracked}{closed}")).is_empty());
        // A Deny with a criterion does not close the direction.
        let partly = gnp(
            "pd",
            "preDNAT: true, applyOnForward: true, selector: all(), ingress: [{action: Deny, protocol: UDP}]",
        );
        assert_eq!(lints(&format!("{HEP}{egress}{partly}")).len(), 1);
    }

    /// Issue 20 item 4: a rule selector that matches a HostEndpoint without expectedIPs: for this
    /// node's endpoint, what explain does to the packet the rule was written for; for another node's,
    /// which traffic the rule does not allow.
    #[test]
    fn selector_without_expected_ips_names_the_consequence() {
        let heps = "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: n1, labels: {host: a}}, spec: {node: node1, interfaceName: eth0}}\n- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: n2, labels: {host: b}}, spec: {node: node2, interfaceName: eth0}}\n";
        let to = |sel: &str| {
            gnp(
                "to-hosts",
                &format!("selector: all(), types: [Ingress, Egress], ingress: [{{action: Allow, protocol: TCP, destination: {{selector: \"{sel}\", ports: [8443]}}}}], egress: [{{action: Allow}}]"),
            )
        };
        let l = lints(&format!("{heps}{}", to("has(host)")));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].contains(
                "rule selector `has(host)` matches HostEndpoint 'n1', 'n2' without expectedIPs"
            ),
            "{l:?}"
        );
        assert!(
            l[0].contains("so GlobalNetworkPolicy 'to-hosts' ingress rule 1 (Allow) does not allow traffic to them: e.g. TCP from 203.0.113.1 to port 8443 in eth0 (node node1) is dropped by [normal] "),
            "{l:?}"
        );
        assert!(l[0].ends_with(", as `hostpolicyd explain` shows"), "{l:?}");
        // Another node's endpoint: no evaluation here, the plain consequence.
        let l = lints(&format!("{heps}{}", to("host == 'b'")));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].ends_with("so GlobalNetworkPolicy 'to-hosts' ingress rule 1 (Allow) does not allow traffic to it"),
            "{l:?}"
        );
    }

    #[test]
    fn one_way_do_not_track() {
        let untracked = |name: &str, rules: &str| {
            format!("- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: {name}}}, spec: {{doNotTrack: true, applyOnForward: true, selector: all(), {rules}}}}}\n")
        };
        let inbound = untracked(
            "mc-in",
            "ingress: [{action: Allow, protocol: TCP, destination: {ports: [11211]}}]",
        );
        let l = lints(&format!("{HEP}{BOTH}{inbound}"));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(l[0].contains("doNotTrack GlobalNetworkPolicy 'mc-in' allows ingress on HostEndpoint 'h', but no doNotTrack policy allows egress there"), "{l:?}");
        // The reverse direction in another doNotTrack policy is fine; so is a deny-only one.
        let outbound = untracked(
            "mc-out",
            "egress: [{action: Allow, protocol: TCP, source: {ports: [11211]}}]",
        );
        assert!(lints(&format!("{HEP}{BOTH}{inbound}{outbound}")).is_empty());
        let deny = untracked(
            "deny-list",
            "ingress: [{action: Deny, source: {nets: [203.0.113.0/24]}}]",
        );
        assert!(lints(&format!("{HEP}{BOTH}{deny}")).is_empty());
    }

    fn tier(name: &str, spec: &str) -> String {
        format!("- {{apiVersion: projectcalico.org/v3, kind: Tier, metadata: {{name: {name}}}, spec: {{{spec}}}}}\n")
    }
    fn gnp(name: &str, spec: &str) -> String {
        format!("- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: {name}}}, spec: {{{spec}}}}}\n")
    }

    /// Tiers spec §3.1: a declared tier whose policies select no HostEndpoint takes part nowhere.
    #[test]
    fn tier_without_policy() {
        let empty = format!("{HEP}{BOTH}{}", tier("platform", "order: 100"));
        let l = lints(&empty);
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].starts_with(
                "t.yaml:3:3: warning: Tier 'platform' has no effect: no policy is in it"
            ),
            "{l:?}"
        );
        let elsewhere = format!(
            "{empty}{}",
            gnp("db", "tier: platform, selector: \"role == 'db'\"")
        );
        let l = lints(&elsewhere);
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].contains("its one policy selects no HostEndpoint of any node"),
            "{l:?}"
        );
        let used = format!(
            "{empty}{}",
            gnp("web", "tier: platform, selector: \"role == 'web'\"")
        );
        assert!(lints(&used).is_empty());
        // Built-in tiers exist anyway: declaring one without policies is not flagged.
        assert!(lints(&format!("{HEP}{BOTH}{}", tier("default", ""))).is_empty());
    }

    /// Tiers spec §1.1: an order of 1000000 (written or omitted) ties with `default`: the name decides.
    #[test]
    fn tier_order_tied_with_default() {
        let used = |t: &str| gnp(&format!("in-{t}"), &format!("tier: {t}, selector: all()"));
        let l = lints(&format!(
            "{HEP}{BOTH}{}{}",
            tier("security", ""),
            used("security")
        ));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(l[0].contains("Tier 'security' has order 1000000 (the order of a tier without `order`), the same as the `default` tier, so it runs after `default` only because its name sorts after `default`"), "{l:?}");
        // Before `default` by its name: what a guard-rail tier wants, not flagged.
        let l = lints(&format!(
            "{HEP}{BOTH}{}{}",
            tier("admin", "order: 1000000"),
            used("admin")
        ));
        assert!(l.is_empty(), "{l:?}");
        for order in ["order: 100", "order: 2000000"] {
            assert!(
                lints(&format!(
                    "{HEP}{BOTH}{}{}",
                    tier("security", order),
                    used("security")
                ))
                .is_empty(),
                "{order}"
            );
        }
    }

    /// Tiers spec §3.2, §3.3: a Pass that no later tier can take over, per stage and direction.
    #[test]
    fn pass_that_never_reaches_another_tier() {
        let platform = tier("platform", "order: 100");
        let guard = |extra: &str| {
            gnp("guard", &format!("tier: platform, selector: all(), {extra}ingress: [{{action: Deny, source: {{nets: [203.0.113.0/24]}}}}, {{action: Pass}}]"))
        };
        // The later tier has an ingress policy for the HostEndpoint: fine.
        let app = gnp(
            "app",
            "selector: \"role == 'web'\", ingress: [{action: Allow, protocol: TCP}]",
        );
        assert!(lints(&format!("{HEP}{BOTH}{platform}{}{app}", guard(""))).is_empty());
        // A preDNAT Pass never reaches the normal-stage tiers.
        let l = lints(&format!(
            "{HEP}{BOTH}{platform}{}{app}",
            guard("preDNAT: true, applyOnForward: true, ")
        ));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(l[0].contains("GlobalNetworkPolicy 'guard' (tier platform) ingress rule 2 (Pass) never reaches another tier: no policy of a later tier applies to ingress in the preDNAT stage"), "{l:?}");
        // The later tier's policy selects other HostEndpoints only.
        let db = gnp(
            "app",
            "selector: \"role == 'db'\", ingress: [{action: Allow}]",
        );
        let hep = HEP.replace(
            "expectedIPs: [192.0.2.1]",
            "expectedIPs: [192.0.2.1], profiles: [projectcalico-default-allow]",
        );
        let l = lints(&format!("{hep}{platform}{}{db}", guard("")));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].contains("a passed packet goes straight to the HostEndpoint's profiles"),
            "{l:?}"
        );
        // A Pass in the last tier keeps its pre-tier meaning (on to the profiles): not flagged.
        assert!(lints(&policy("{action: Pass}")).is_empty());
        assert!(lints(&format!("{HEP}{BOTH}{platform}{}", guard(""))).is_empty());
    }

    /// The two HostEndpoint lints as first written (every policy against every HostEndpoint): the
    /// grouped ones must say exactly the same.
    /// Each warning as (the name it is about, the words that say what).
    fn reference(config: &Config) -> Vec<(String, &'static str)> {
        let selecting = |hep: &HostEndpoint| -> Vec<&GlobalNetworkPolicy> {
            config
                .policies
                .iter()
                .filter(|p| {
                    crate::resolve::policy_selects(p, &hep.labels)
                        && !(hep.is_wildcard() && p.do_not_track)
                })
                .map(|p| &**p)
                .collect()
        };
        let mut out = Vec::new();
        for hep in &config.host_endpoints {
            if hep
                .profiles
                .iter()
                .any(|p| p.value == crate::compile::DEFAULT_ALLOW_PROFILE)
            {
                continue;
            }
            let ps = selecting(hep);
            let ingress = ps.iter().any(|p| p.ingress_type);
            let egress = ps.iter().any(|p| p.egress_type && !p.pre_dnat);
            for (what, has) in [
                ("has no policy for ingress", ingress),
                ("has no policy for egress", egress),
            ] {
                if !has {
                    out.push((hep.name.clone(), what));
                }
            }
        }
        let mut reported = BTreeSet::new();
        for hep in config.host_endpoints.iter().filter(|h| !h.is_wildcard()) {
            let untracked: Vec<_> = selecting(hep)
                .into_iter()
                .filter(|p| p.do_not_track)
                .collect();
            for &p in &untracked {
                for ingress in [true, false] {
                    if !allows(p, ingress) || untracked.iter().any(|q| allows(q, !ingress)) {
                        continue;
                    }
                    if reported.insert((p.name.clone(), ingress)) {
                        let what = if ingress {
                            "allows ingress"
                        } else {
                            "allows egress"
                        };
                        out.push((
                            format!(
                                "{}' allows {} on HostEndpoint '{}",
                                p.name,
                                &what[7..],
                                hep.name
                            ),
                            what,
                        ));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn grouping_policies_by_selector_says_what_every_policy_against_every_hep_says() {
        let mut yaml = String::new();
        for (i, (labels, iface)) in [
            ("{role: web}", "eth0"),
            ("{role: db}", "eth1"),
            ("{role: web, tier: a}", "eth2"),
            ("{role: db}", "'*'"),
            ("{role: lb}", "eth3"),
        ]
        .iter()
        .enumerate()
        {
            yaml += &format!("- {{apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {{name: h{i}, labels: {labels}}}, spec: {{node: node1, interfaceName: {iface}}}}}\n");
        }
        let selectors = [
            "all()",
            "role == 'web'",
            "role == 'db'",
            "has(tier)",
            "role == 'none'",
        ];
        for i in 0..40 {
            let sel = selectors[i % selectors.len()];
            let (types, rules) = match i % 4 {
                0 => ("[Ingress]", "ingress: [{action: Allow}]"),
                1 => ("[Egress]", "egress: [{action: Allow}]"),
                2 => ("[Ingress, Egress]", "ingress: [{action: Deny}]"),
                _ => ("[Egress]", "egress: [{action: Deny}]"),
            };
            let dnt = if i % 3 == 0 && i > 0 {
                "doNotTrack: true, applyOnForward: true, "
            } else {
                ""
            };
            let ns = if i % 11 == 5 {
                "namespaceSelector: all(), "
            } else {
                ""
            };
            yaml += &format!("- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: p{i}}}, spec: {{{dnt}{ns}selector: \"{sel}\", types: {types}, {rules}}}}}\n");
        }
        let mut seen = BTreeSet::new();
        for n in [0, 1, 7, 25, 40] {
            // The first n policies: from none to all of them.
            let cut: String = yaml.lines().take(5 + n).map(|l| format!("{l}\n")).collect();
            let loaded = load_sources(&[("t.yaml".to_string(), cut)]);
            assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
            let config = &loaded.config;
            let mut ours = Vec::new();
            directions_without_policy(config, &mut ours);
            one_way_untracked(config, &mut ours);
            let ours: Vec<String> = ours.iter().map(|d| d.message.clone()).collect();
            let expected = reference(config);
            assert_eq!(
                ours.len(),
                expected.len(),
                "{n}: {ours:#?} vs {expected:#?}"
            );
            seen.extend(expected.iter().map(|(_, what)| *what));
            for (o, (name, what)) in ours.iter().zip(&expected) {
                assert!(
                    o.contains(&format!("'{name}'")) && o.contains(what),
                    "{n}: {o} vs {name} {what}"
                );
            }
        }
        assert_eq!(seen.len(), 4, "every kind of warning is compared: {seen:?}");
    }
}
