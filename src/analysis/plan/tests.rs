//! `plan` against brute force: for random small configurations and random changes, a grid of packets is
//! evaluated with `explain` under both, and the packets whose verdict differs must be exactly the ones
//! that lie in a region (in one region each, with that region's deciders).

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::analysis::explain::explain;
use crate::config::load::load_sources;
use crate::config::model::proto;
use crate::resolve::resolve;

const NODE: &str = "node1";

fn load(yaml: &str) -> Config {
    let loaded = load_sources(&[("t.yaml".to_string(), yaml.to_string())]);
    assert!(
        !loaded.has_errors(),
        "{:?}\n{yaml}",
        loaded
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
    );
    loaded.config
}

fn plan(before: &str, after: &str) -> (Config, Config, Vec<Region>) {
    let (cb, ca) = (load(before), load(after));
    let (vb, va) = (resolve(&cb, NODE, &[]), resolve(&ca, NODE, &[]));
    let regions = node_changes(
        NODE,
        Config2 {
            config: &cb,
            view: &vb,
        },
        Config2 {
            config: &ca,
            view: &va,
        },
        &[],
    );
    (cb, ca, regions)
}

// ------------------------------------------------------------------------------------------------
// Membership of a packet in a region, read from what the region says (its strings).

fn proto_matches(r: &Region, p: u8) -> bool {
    let name = crate::compile::proto_name(p);
    if r.proto == "any" {
        !r.not_proto.contains(&name)
    } else {
        r.proto == name
    }
}

fn ports_contain(list: &[String], v: u16) -> bool {
    list.iter().any(|e| match e.split_once('-') {
        Some((a, b)) => a.parse::<u16>().unwrap() <= v && v <= b.parse::<u16>().unwrap(),
        None => e.parse::<u16>().unwrap() == v,
    })
}

fn icmp_contains(list: &[String], t: u8, c: u8) -> bool {
    let v = u32::from(t) * 256 + u32::from(c);
    list.iter().any(|e| {
        let (lo, hi) = match e.split_once('/') {
            None => {
                let (a, b) = e.split_once('-').unwrap_or((e, e));
                (
                    a.parse::<u32>().unwrap() * 256,
                    b.parse::<u32>().unwrap() * 256 + 255,
                )
            }
            Some((ty, codes)) => {
                let ty: u32 = ty.parse().unwrap();
                let (a, b) = codes.split_once('-').unwrap_or((codes, codes));
                (
                    ty * 256 + a.parse::<u32>().unwrap(),
                    ty * 256 + b.parse::<u32>().unwrap(),
                )
            }
        };
        lo <= v && v <= hi
    })
}

fn nets_contain(list: &[String], a: IpAddr) -> bool {
    list.iter()
        .any(|n| n.parse::<ipnet::IpNet>().unwrap().contains(&a))
}

/// What a region calls the interface `name`.
fn class_of(name: &str, named: &[String]) -> Option<String> {
    if named.iter().any(|n| n == name) || name == "lo" {
        Some(name.to_string())
    } else if name.starts_with("cali") {
        Some("cali*".into())
    } else {
        Some("*".into())
    }
}

fn contains(r: &Region, p: &Packet, named: &[String]) -> bool {
    let (dir, i, o) = match &p.path {
        Path::Inbound { iface } => ("ingress", iface.as_str(), None),
        Path::Outbound { iface } => ("egress", iface.as_str(), None),
        Path::Forwarded {
            in_iface,
            out_iface,
        } => ("forward", in_iface.as_str(), Some(out_iface.as_str())),
    };
    if r.direction != dir || r.interface != class_of(i, named) {
        return false;
    }
    if let Some(o) = o {
        if r.out_interface != class_of(o, named) {
            return false;
        }
    }
    if !proto_matches(r, p.protocol) || !nets_contain(&r.src, p.src) || !nets_contain(&r.dst, p.dst)
    {
        return false;
    }
    if let (Some(list), Some(v)) = (&r.sport, p.sport) {
        if !ports_contain(list, v) {
            return false;
        }
    }
    if let (Some(list), Some(v)) = (&r.dport, p.dport) {
        if !ports_contain(list, v) {
            return false;
        }
    }
    if let (Some(list), Some(t)) = (&r.icmp, p.icmp_type) {
        if !icmp_contains(list, t, p.icmp_code.unwrap_or(0)) {
            return false;
        }
    }
    true
}

// ------------------------------------------------------------------------------------------------
// Random configurations.

const NETS4: &[&str] = &[
    "192.0.2.0/25",
    "192.0.2.1/32",
    "203.0.113.0/24",
    "198.51.100.0/24",
    "203.0.113.128/25",
    "0.0.0.0/1",
];
const NETS6: &[&str] = &["2001:db8::/64", "2001:db8::1/128", "2001:db8:1::/48"];
const POLICY_SELECTORS: &[&str] = &["role == 'a'", "role == 'b'", "all()", "has(x)"];
const RULE_SELECTORS: &[&str] = &["role == 'a'", "role == 'peer'", "has(gns)", "all()"];
const PORTS: &[&str] = &["22", "80", "'1000:1010'", "web", "8443"];

#[derive(Debug, Clone)]
struct GRule {
    action: u8,
    proto: u8,
    v6: bool,
    src_net: Option<u8>,
    not_net: Option<u8>,
    src_sel: Option<u8>,
    not_sel: Option<u8>,
    dst_sel: Option<u8>,
    port: Option<u8>,
    not_port: Option<u8>,
    sport: Option<u8>,
    icmp: Option<u8>,
    ip_version: bool,
}

#[derive(Debug, Clone)]
struct GPolicy {
    name: u8,
    /// In the `platform` tier (when the configuration has it).
    platform: bool,
    order: Option<u8>,
    selector: u8,
    stage: u8,
    egress: bool,
    ingress: Vec<GRule>,
    egress_rules: Vec<GRule>,
}

#[derive(Debug, Clone)]
struct GConfig {
    policies: Vec<GPolicy>,
    a_x: bool,
    b_role: u8,
    wildcard: bool,
    profile: bool,
    a_port: bool,
    gns: Vec<u8>,
    failsafe: u8,
    /// 0: only the default tier; 1: a `platform` tier before it, defaultAction Deny; 2: Pass.
    tiers: u8,
}

fn g_rule() -> impl Strategy<Value = GRule> {
    (
        (0u8..4, 0u8..5, any::<bool>(), proptest::option::of(0u8..6)),
        (
            proptest::option::weighted(0.2, 0u8..6),
            proptest::option::weighted(0.3, 0u8..4),
            proptest::option::weighted(0.15, 0u8..4),
            proptest::option::weighted(0.2, 0u8..4),
        ),
        (
            proptest::option::weighted(0.6, 0u8..5),
            proptest::option::weighted(0.15, 0u8..5),
            proptest::option::weighted(0.1, 0u8..5),
            proptest::option::weighted(0.5, 0u8..3),
            proptest::bool::weighted(0.2),
        ),
    )
        .prop_map(
            |(
                (action, proto, v6, src_net),
                (not_net, src_sel, not_sel, dst_sel),
                (port, not_port, sport, icmp, ip_version),
            )| GRule {
                action,
                proto,
                v6,
                src_net,
                not_net,
                src_sel,
                not_sel,
                dst_sel,
                port,
                not_port,
                sport,
                icmp,
                ip_version,
            },
        )
}

fn g_policy() -> impl Strategy<Value = GPolicy> {
    (
        0u8..6,
        proptest::option::of(0u8..4),
        0u8..4,
        0u8..5,
        any::<bool>(),
        proptest::collection::vec(g_rule(), 0..3),
        proptest::collection::vec(g_rule(), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(name, order, selector, stage, egress, ingress, egress_rules, platform)| GPolicy {
                name,
                platform,
                order,
                selector,
                stage,
                egress,
                ingress,
                egress_rules,
            },
        )
}

fn g_config() -> impl Strategy<Value = GConfig> {
    (
        proptest::collection::vec(g_policy(), 1..4),
        any::<bool>(),
        0u8..2,
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.2),
        any::<bool>(),
        proptest::collection::vec(0u8..9, 0..3),
        0u8..3,
        0u8..3,
    )
        .prop_map(
            |(policies, a_x, b_role, wildcard, profile, a_port, gns, failsafe, tiers)| GConfig {
                tiers,
                policies,
                a_x,
                b_role,
                wildcard,
                profile,
                a_port,
                gns,
                failsafe,
            },
        )
}

fn rule_yaml(r: &GRule) -> String {
    let action = ["Allow", "Deny", "Pass", "Log"][r.action as usize];
    // 0: none, 1: TCP, 2: UDP, 3: ICMP (v4) / ICMPv6 (v6), 4: protocol 47
    let protocol = match r.proto {
        0 => None,
        1 => Some("TCP"),
        2 => Some("UDP"),
        3 => Some(if r.v6 { "ICMPv6" } else { "ICMP" }),
        _ => Some("47"),
    };
    let ports_ok = matches!(r.proto, 1 | 2);
    let net = |i: u8| -> String {
        if r.v6 {
            NETS6[i as usize % NETS6.len()].to_string()
        } else {
            NETS4[i as usize % NETS4.len()].to_string()
        }
    };
    let mut src: Vec<String> = Vec::new();
    let mut dst: Vec<String> = Vec::new();
    if let Some(n) = r.src_net {
        src.push(format!("nets: [\"{}\"]", net(n)));
    }
    if let Some(n) = r.not_net {
        let n = net(n);
        if n != "0.0.0.0/1" {
            src.push(format!("notNets: [\"{n}\"]"));
        }
    }
    if let Some(s) = r.src_sel {
        src.push(format!("selector: \"{}\"", RULE_SELECTORS[s as usize]));
    }
    if let Some(s) = r.not_sel {
        src.push(format!("notSelector: \"{}\"", RULE_SELECTORS[s as usize]));
    }
    if let Some(s) = r.dst_sel {
        dst.push(format!("selector: \"{}\"", RULE_SELECTORS[s as usize]));
    }
    let port_entry = |i: u8| PORTS[i as usize];
    if let Some(p) = r.port {
        let e = port_entry(p);
        if ports_ok || (e == "web" && r.proto == 0) {
            dst.push(format!("ports: [{e}]"));
        }
    }
    if let Some(p) = r.not_port {
        let e = port_entry(p);
        if ports_ok || (e == "web" && r.proto == 0) {
            dst.push(format!("notPorts: [{e}]"));
        }
    }
    if let Some(p) = r.sport {
        let e = port_entry(p);
        if ports_ok {
            src.push(format!("ports: [{e}]"));
        }
    }
    let mut fields = vec![format!("action: {action}")];
    if let Some(p) = protocol {
        fields.push(format!("protocol: {p}"));
    }
    if r.proto == 3 {
        if let Some(i) = r.icmp {
            fields.push(match i {
                0 => "icmp: {type: 8}".to_string(),
                1 => "icmp: {type: 3, code: 1}".to_string(),
                _ => "notICMP: {type: 8, code: 0}".to_string(),
            });
        }
    }
    if r.ip_version && r.proto != 3 {
        fields.push(format!("ipVersion: {}", if r.v6 { 6 } else { 4 }));
    }
    if !src.is_empty() {
        fields.push(format!("source: {{{}}}", src.join(", ")));
    }
    if !dst.is_empty() {
        fields.push(format!("destination: {{{}}}", dst.join(", ")));
    }
    format!("{{{}}}", fields.join(", "))
}

fn config_yaml(c: &GConfig) -> String {
    let mut s = String::new();
    let a_labels = if c.a_x {
        "{role: a, x: \"\"}"
    } else {
        "{role: a}"
    };
    let a_ports = if c.a_port {
        ", ports: [{name: web, protocol: TCP, port: 8443}]"
    } else {
        ""
    };
    let profiles = if c.profile {
        ", profiles: [projectcalico-default-allow]"
    } else {
        ""
    };
    s += &format!("- {{apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {{name: hep-a, labels: {a_labels}}}, spec: {{node: node1, interfaceName: eth0, expectedIPs: [192.0.2.1, \"2001:db8::1\"]{a_ports}{profiles}}}}}\n");
    let b_role = ["b", "a"][c.b_role as usize];
    s += &format!("- {{apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {{name: hep-b, labels: {{role: {b_role}}}}}, spec: {{node: node1, interfaceName: eth1, expectedIPs: [198.51.100.1]}}}}\n");
    s += "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: peer, labels: {role: peer}}, spec: {node: node2, interfaceName: eth0, expectedIPs: [203.0.113.9, \"2001:db8:1::9\"], ports: [{name: web, protocol: TCP, port: 80}]}}\n";
    if c.wildcard {
        s += "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: hep-w, labels: {role: b}}, spec: {node: node1, interfaceName: \"*\"}}\n";
    }
    if !c.gns.is_empty() {
        let nets: Vec<String> = c
            .gns
            .iter()
            .map(|&i| {
                let all: Vec<&str> = NETS4.iter().chain(NETS6).copied().collect();
                format!("\"{}\"", all[i as usize % all.len()])
            })
            .collect();
        s += &format!("- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkSet, metadata: {{name: gns-1, labels: {{gns: one}}}}, spec: {{nets: [{}]}}}}\n", nets.join(", "));
    }
    match c.failsafe {
        1 => s += "- {apiVersion: projectcalico.org/v3, kind: FelixConfiguration, metadata: {name: default}, spec: {failsafeInboundHostPorts: [{protocol: TCP, port: 80, net: 192.0.2.0/25}], failsafeOutboundHostPorts: [{protocol: UDP, port: 53}]}}\n",
        2 => s += "- {apiVersion: projectcalico.org/v3, kind: FelixConfiguration, metadata: {name: default}, spec: {failsafeInboundHostPorts: [], failsafeOutboundHostPorts: []}}\n",
        _ => {}
    }
    match c.tiers {
        1 => s += "- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {order: 100, defaultAction: Deny}}\n",
        2 => s += "- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {order: 100, defaultAction: Pass}}\n",
        _ => {}
    }
    let mut names = std::collections::BTreeSet::new();
    for p in &c.policies {
        if !names.insert(p.name) {
            continue;
        }
        let mut spec = vec![format!(
            "selector: \"{}\"",
            POLICY_SELECTORS[p.selector as usize]
        )];
        if let Some(o) = p.order {
            spec.push(format!("order: {}", o * 10));
        }
        if c.tiers > 0 && p.platform {
            spec.push("tier: platform".into());
        }
        // 0: normal, 1: applyOnForward, 2: preDNAT, 3: doNotTrack, 4: normal.
        let pre_dnat = p.stage == 2;
        match p.stage {
            1 => spec.push("applyOnForward: true".into()),
            2 => spec.push("preDNAT: true, applyOnForward: true".into()),
            3 => spec.push("doNotTrack: true, applyOnForward: true".into()),
            _ => {}
        }
        let ingress: Vec<String> = p.ingress.iter().map(rule_yaml).collect();
        let egress: Vec<String> = if pre_dnat {
            Vec::new()
        } else {
            p.egress_rules.iter().map(rule_yaml).collect()
        };
        let types = if pre_dnat || !p.egress {
            "[Ingress]"
        } else {
            "[Ingress, Egress]"
        };
        spec.push(format!("types: {types}"));
        spec.push(format!("ingress: [{}]", ingress.join(", ")));
        if !pre_dnat && p.egress {
            spec.push(format!("egress: [{}]", egress.join(", ")));
        }
        s += &format!(
            "- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: p{}}}, spec: {{{}}}}}\n",
            p.name,
            spec.join(", ")
        );
    }
    s
}

/// A few edits of a configuration: what a change usually is.
fn mutate(c: &GConfig, ops: &[(u8, u8, u8)]) -> GConfig {
    let mut c = c.clone();
    for &(op, x, y) in ops {
        let np = c.policies.len();
        let pi = x as usize % np;
        match op % 10 {
            0 => {
                if let Some(r) = c.policies[pi].ingress.get_mut(y as usize % 3) {
                    r.port = Some(y % 5);
                }
            }
            1 if np > 1 => {
                c.policies.remove(pi);
            }
            2 => c.policies[pi].order = Some(y % 4),
            3 => c.gns = vec![x % 9, y % 9],
            4 => {
                if let Some(r) = c.policies[pi].ingress.get_mut(0) {
                    r.action = y % 4;
                }
            }
            5 => c.a_x = !c.a_x,
            6 => c.profile = !c.profile,
            7 => c.failsafe = y % 3,
            8 if y % 3 == 0 => c.tiers = x % 3,
            8 if y % 3 == 1 => c.policies[pi].platform = !c.policies[pi].platform,
            8 => c.policies[pi].name = y % 6,
            _ => {
                let r = c.policies[pi].ingress.first().cloned();
                if let Some(mut r) = r {
                    r.src_net = Some(y % 6);
                    c.policies[pi].ingress.push(r);
                }
            }
        }
    }
    c
}

fn grid() -> Vec<Packet> {
    let v4_any: Vec<IpAddr> = [
        "192.0.2.0",
        "192.0.2.1",
        "192.0.2.127",
        "192.0.2.128",
        "203.0.113.9",
        "203.0.113.200",
        "198.51.100.1",
        "10.1.1.1",
        "128.0.0.1",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let v6_any: Vec<IpAddr> = [
        "2001:db8::1",
        "2001:db8::2",
        "2001:db8:1::9",
        "2001:db8:2::1",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let v4_local: Vec<IpAddr> = ["192.0.2.1", "198.51.100.1"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let v6_local: Vec<IpAddr> = ["2001:db8::1"].iter().map(|a| a.parse().unwrap()).collect();
    // (protocol, sport, dport, icmp type/code)
    type L4 = (u8, Option<u16>, Option<u16>, Option<(u8, u8)>);
    let mut l4: Vec<L4> = Vec::new();
    for d in [22, 79, 80, 81, 1000, 1010, 1011, 8443] {
        l4.push((proto::TCP, Some(40000), Some(d), None));
    }
    l4.push((proto::TCP, Some(80), Some(40000), None));
    l4.push((proto::TCP, Some(1005), Some(22), None));
    for d in [53, 68, 80, 1000] {
        l4.push((proto::UDP, Some(40000), Some(d), None));
    }
    l4.push((47, None, None, None));
    let paths: Vec<Path> = {
        let mut v = Vec::new();
        for i in ["eth0", "eth1", "eth9", "cali0", "lo"] {
            v.push(Path::Inbound { iface: i.into() });
            v.push(Path::Outbound { iface: i.into() });
        }
        for (i, o) in [
            ("eth0", "eth1"),
            ("eth1", "eth0"),
            ("eth0", "eth9"),
            ("eth9", "eth0"),
            ("eth0", "eth0"),
            ("cali0", "eth1"),
        ] {
            v.push(Path::Forwarded {
                in_iface: i.into(),
                out_iface: o.into(),
            });
        }
        v
    };
    let mut out = Vec::new();
    for path in &paths {
        for v6 in [false, true] {
            let (any, local) = if v6 {
                (&v6_any, &v6_local)
            } else {
                (&v4_any, &v4_local)
            };
            let mut local = local.clone();
            if matches!(path, Path::Inbound { iface } | Path::Outbound { iface } if iface == "lo") {
                local.push(if v6 { "::1" } else { "127.0.0.1" }.parse().unwrap());
            }
            let local = &local;
            let (srcs, dsts) = match path {
                Path::Inbound { .. } => (any, local),
                Path::Outbound { .. } => (local, any),
                Path::Forwarded { .. } => (any, any),
            };
            let mut l4s = l4.clone();
            if v6 {
                l4s.push((proto::ICMPV6, None, None, Some((128, 0))));
            } else {
                l4s.extend([
                    (proto::ICMP, None, None, Some((8, 0))),
                    (proto::ICMP, None, None, Some((3, 1))),
                    (proto::ICMP, None, None, Some((0, 0))),
                ]);
            }
            for &s in srcs {
                for &d in dsts
                    .iter()
                    .step_by(if matches!(path, Path::Forwarded { .. }) {
                        2
                    } else {
                        1
                    })
                {
                    for &(pr, sp, dp, ic) in &l4s {
                        let mut p = Packet::new(path.clone(), s, d, pr);
                        p.sport = sp;
                        p.dport = dp;
                        if let Some((t, c)) = ic {
                            p.icmp_type = Some(t);
                            p.icmp_code = Some(c);
                        }
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

fn check_against_brute_force(before: &str, after: &str) -> Result<(), TestCaseError> {
    let (cb, ca, regions) = plan(before, after);
    let (vb, va) = (resolve(&cb, NODE, &[]), resolve(&ca, NODE, &[]));
    let named: Vec<String> = ["eth0", "eth1"].map(String::from).to_vec();
    for p in grid() {
        let eb = explain(&cb, &vb, &p);
        let ea = explain(&ca, &va, &p);
        let inside: Vec<&Region> = regions.iter().filter(|r| contains(r, &p, &named)).collect();
        let changed = eb.verdict != ea.verdict;
        prop_assert!(
            changed != inside.is_empty(),
            "packet {p}: {} -> {} ({} -> {}), in {} regions: {:#?}\nbefore:\n{before}\nafter:\n{after}",
            eb.verdict,
            ea.verdict,
            eb.decided_by.text,
            ea.decided_by.text,
            inside.len(),
            inside
        );
        prop_assert!(
            inside.len() <= 1,
            "packet {p} in {} regions: {:#?}",
            inside.len(),
            inside
        );
        if let Some(r) = inside.first() {
            prop_assert_eq!(&r.before_decided_by, &DecidedBy::of(&eb.decided_by));
            prop_assert_eq!(&r.after_decided_by, &DecidedBy::of(&ea.decided_by));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random configurations, a few random edits: regions == packets whose verdict changes.
    #[test]
    fn regions_are_exactly_the_changed_packets(c in g_config(), ops in proptest::collection::vec((0u8..10, any::<u8>(), any::<u8>()), 1..3)) {
        let before = config_yaml(&c);
        let after = config_yaml(&mutate(&c, &ops));
        check_against_brute_force(&before, &after)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Two unrelated configurations (global changes: the whole space is evaluated).
    #[test]
    fn regions_between_unrelated_configurations(a in g_config(), b in g_config()) {
        check_against_brute_force(&config_yaml(&a), &config_yaml(&b))?;
    }
}

const HEP: &str = "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: node1-eth0, labels: {role: node}}, spec: {node: node1, interfaceName: eth0, expectedIPs: [192.0.2.1]}}\n";
const BASE: &str = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: ssh}, spec: {order: 10, selector: \"role == 'node'\", ingress: [{action: Allow, protocol: TCP, destination: {ports: [2222]}}]}}\n";
const METRICS: &str = "- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata: {name: open-metrics}\n  spec:\n    order: 30\n    selector: role == 'node'\n    ingress:\n      - action: Allow\n        protocol: TCP\n        source: {nets: [203.0.113.0/24]}\n        destination: {ports: [9100]}\n";

/// The example: a policy that opens the metrics port to one network is one region, with the
/// deciders of both sides.
#[test]
fn a_new_allow_is_one_region() {
    let (_, _, regions) = plan(&format!("{HEP}{BASE}"), &format!("{HEP}{BASE}{METRICS}"));
    assert_eq!(regions.len(), 1, "{regions:#?}");
    let r = &regions[0];
    assert_eq!(
        (
            r.node.as_str(),
            r.interface.as_deref(),
            r.host_endpoint.as_deref(),
            r.direction,
            r.proto.as_str()
        ),
        ("node1", Some("eth0"), Some("node1-eth0"), "ingress", "tcp")
    );
    assert_eq!(r.src, ["203.0.113.0/24"]);
    assert_eq!(r.dst, ["192.0.2.1/32"]);
    assert_eq!(r.dport.as_deref(), Some(&["9100".to_string()][..]));
    assert_eq!((r.sport.as_ref(), r.icmp.as_ref()), (None, None));
    assert_eq!((r.before, r.after), ("deny", "allow"));
    let json = serde_json::to_value(r).unwrap();
    assert_eq!(
        json["before_decided_by"],
        serde_json::json!({"kind": "end-of-tier", "stage": "normal", "tier": "default", "policy": null,
            "direction": null, "rule": null, "file": null, "line": null, "host_endpoint": "node1-eth0"})
    );
    assert_eq!(
        json["after_decided_by"],
        serde_json::json!({"kind": "policy", "stage": "normal", "tier": "default", "policy": "open-metrics",
            "direction": "ingress", "rule": 0, "file": "t.yaml", "line": 10, "host_endpoint": "node1-eth0"})
    );
}

/// Renaming, reordering documents and moving rules between files changes no verdict.
#[test]
fn reorder_rename_and_move_change_no_verdict() {
    let renamed = METRICS.replace("open-metrics", "metrics-open");
    let (_, _, regions) = plan(
        &format!("{HEP}{BASE}{METRICS}"),
        &format!("{renamed}{BASE}\n{HEP}"),
    );
    assert!(regions.is_empty(), "{regions:#?}");
    // The same rules split over two policies at the same place in the order.
    let split = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: ssh-a}, spec: {order: 10, selector: \"role == 'node'\", ingress: [{action: Allow, protocol: TCP, destination: {ports: [2222]}}]}}\n- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: ssh-b}, spec: {order: 11, selector: \"role == 'node'\", ingress: [{action: Allow, protocol: TCP, source: {nets: [203.0.113.0/24]}, destination: {ports: [9100]}}]}}\n";
    let (_, _, regions) = plan(&format!("{HEP}{BASE}{METRICS}"), &format!("{HEP}{split}"));
    assert!(regions.is_empty(), "{regions:#?}");
}

/// A staged policy never enforces: adding, changing or removing one is a resource change and no
/// verdict change.
#[test]
fn a_staged_policy_is_a_resource_change_not_a_verdict_change() {
    let staged = |port: u16| {
        format!("- {{apiVersion: projectcalico.org/v3, kind: StagedGlobalNetworkPolicy, metadata: {{name: tighter}}, spec: {{order: 5, selector: \"role == 'node'\", ingress: [{{action: Deny, protocol: TCP, destination: {{ports: [{port}]}}}}]}}}}\n")
    };
    let base = format!("{HEP}{BASE}{METRICS}");
    let with = |port| format!("{base}{}", staged(port));
    for (before, after, added, changed, removed) in [
        (base.clone(), with(9100), 1, 0, 0),
        (with(9100), with(22), 0, 1, 0),
        (with(22), base.clone(), 0, 0, 1),
    ] {
        let (cb, ca, regions) = plan(&before, &after);
        assert!(regions.is_empty(), "{regions:#?}");
        let r = resources::changes(&cb, &ca);
        assert_eq!(
            (r.added.len(), r.changed.len(), r.removed.len()),
            (added, changed, removed),
            "{r:#?}"
        );
        let all: Vec<&resources::ResourceRef> =
            r.added.iter().chain(&r.changed).chain(&r.removed).collect();
        assert_eq!(
            all.iter()
                .map(|x| (x.kind, x.name.as_str()))
                .collect::<Vec<_>>(),
            [("StagedGlobalNetworkPolicy", "tighter")]
        );
    }
}

/// One net of a large set changed: only that net's packets are looked at, and only the packets
/// whose verdict changes are reported.
#[test]
fn one_net_of_many() {
    let nets = |swap: bool| -> String {
        let mut v: Vec<String> = (0..2000u32)
            .map(|i| format!("10.0.{}.{}/32", i / 128, (i % 128) * 2))
            .collect();
        if swap {
            v[5] = "10.200.0.1/32".into();
        }
        format!("- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkSet, metadata: {{name: deny-list, labels: {{role: deny-list}}}}, spec: {{nets: [{}]}}}}\n", v.join(", "))
    };
    let deny = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: deny-listed}, spec: {order: 1, selector: \"role == 'node'\", ingress: [{action: Deny, source: {selector: \"role == 'deny-list'\"}}, {action: Allow}]}}\n";
    let (_, _, regions) = plan(
        &format!("{HEP}{}{deny}", nets(false)),
        &format!("{HEP}{}{deny}", nets(true)),
    );
    // Per net: every protocol but the failsafe ports (tcp 22, udp 68, ...: allowed either way).
    let summary: Vec<(&str, &str, &str, &str, Vec<String>)> = regions
        .iter()
        .map(|r| {
            (
                r.before,
                r.after,
                r.proto.as_str(),
                r.direction,
                r.src.clone(),
            )
        })
        .collect();
    let one = |b, a, p, net: &str| (b, a, p, "ingress", vec![net.to_string()]);
    assert_eq!(
        summary,
        vec![
            one("allow", "deny", "any", "10.200.0.1/32"),
            one("allow", "deny", "tcp", "10.200.0.1/32"),
            one("allow", "deny", "udp", "10.200.0.1/32"),
            one("deny", "allow", "any", "10.0.0.10/32"),
            one("deny", "allow", "tcp", "10.0.0.10/32"),
            one("deny", "allow", "udp", "10.0.0.10/32"),
        ],
        "{regions:#?}"
    );
    assert_eq!(regions[0].not_proto, ["tcp", "udp"]);
    let tcp = regions[1].dport.as_ref().unwrap();
    assert_eq!(&tcp[..3], ["0-21", "23-178", "180-2378"]);
    assert_eq!(
        regions[2].dport.as_ref().unwrap()[..2],
        ["0-67", "69-65535"]
    );
}

/// Tiers spec §3.2: a tier's defaultAction changed from Deny to Pass is a change of the tier's end
/// only; what the next tier allows opens. Checked against brute force too.
#[test]
fn a_tier_end_from_deny_to_pass() {
    // The grid's local addresses are the node's.
    let hep = HEP.replace(
        "expectedIPs: [192.0.2.1]",
        "expectedIPs: [192.0.2.1, 198.51.100.1, \"2001:db8::1\"]",
    );
    let config = |action: &str| {
        format!(
            "{hep}- {{apiVersion: projectcalico.org/v3, kind: Tier, metadata: {{name: platform}}, spec: {{order: 100, defaultAction: {action}}}}}
- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: platform-web}}, spec: {{tier: platform, selector: \"role == 'node'\", ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [80]}}}}, {{action: Pass, protocol: TCP, destination: {{ports: [82]}}}}]}}}}
- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: app}}, spec: {{selector: \"role == 'node'\", ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [81, 82]}}}}]}}}}
"
        )
    };
    let (before, after) = (config("Deny"), config("Pass"));
    let (_, _, regions) = plan(&before, &after);
    type Row<'a> = (
        &'a str,
        &'a str,
        Option<&'a Vec<String>>,
        &'a str,
        Option<&'a str>,
    );
    let summary: Vec<Row> = regions
        .iter()
        .map(|r| {
            (
                r.before,
                r.after,
                r.dport.as_ref(),
                r.after_decided_by.policy.as_deref().unwrap_or(""),
                r.before_decided_by.tier.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(
            "deny",
            "allow",
            Some(&vec!["81".to_string()]),
            "app",
            Some("platform")
        )],
        "{regions:#?}"
    );
    check_against_brute_force(&before, &after).unwrap();
}
