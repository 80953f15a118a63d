//! `hostpolicyd plan` against a real kernel (issue 15): apply configuration A, plan configuration B on
//! the node (against what it enforces: the kernel's table and the state directory's record), apply B,
//! and send real packets: those inside a region must have changed verdict (as the region says), those
//! outside must not have.

mod common;

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use common::netns::{require_root, NetNs};
use hostpolicyd::analysis::explain::{explain, Packet, Path};
use hostpolicyd::config::load::load_sources;
use hostpolicyd::resolve::resolve;

use common::probe::{conntrack_flush, tcp_connect, Outcome, Servers, Verdict, ALLOW, DROP};
use common::topology::{output_text, Topology};
use common::yaml::{docs, hep};

/// A: eth0 (192.0.2.1) allows TCP 80 from 192.0.2.0/25; eth1 (198.51.100.45) lets forwarded TCP
/// 8080 out from the eth0 side.
fn config(web_net: &str, extra_port: Option<&str>, forward_from: &str) -> String {
    let mut ingress = format!(
        "      - {{action: Allow, protocol: TCP, source: {{nets: [{web_net}]}}, destination: {{ports: [80]}}}}\n"
    );
    if let Some(p) = extra_port {
        ingress += &format!(
            "      - {{action: Allow, protocol: TCP, source: {{nets: [203.0.113.0/24]}}, destination: {{ports: [{p}]}}}}\n"
        );
    }
    docs(&[
        hep(
            "node1-eth0",
            "node1",
            Some("eth0"),
            &["192.0.2.1"],
            &[("role", "web")],
            &[],
        ),
        hep(
            "node1-eth1",
            "node1",
            Some("eth1"),
            &["198.51.100.45"],
            &[("role", "inside")],
            &[],
        ),
        format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: web}}\nspec:\n  order: 10\n  selector: role == 'web'\n  ingress:\n{ingress}"
        ),
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: out}\nspec:\n  order: 20\n  selector: all()\n  egress: [{action: Allow}]\n".to_string(),
        format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: to-inside}}\nspec:\n  order: 30\n  selector: role == 'inside'\n  applyOnForward: true\n  types: [Egress]\n  egress: [{{action: Allow, protocol: TCP, source: {{nets: [{forward_from}]}}, destination: {{ports: [8080]}}}}]\n"
        ),
    ])
}

/// A TCP connection attempt from the eth0 side.
#[derive(Debug, Clone)]
struct Probe {
    src: IpAddr,
    dst: SocketAddr,
    /// Forwarded out of eth1 (to a host on the eth1 side) rather than delivered to the node.
    forwarded: bool,
}

fn probe(src: &str, dst: &str, forwarded: bool) -> Probe {
    Probe {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        forwarded,
    }
}

fn nets_contain(v: &Value, a: IpAddr) -> bool {
    v.as_array().unwrap().iter().any(|n| {
        n.as_str()
            .unwrap()
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&a)
    })
}

fn ports_contain(v: &Value, p: u16) -> bool {
    match v.as_array() {
        None => true,
        Some(list) => list.iter().any(|e| {
            let e = e.as_str().unwrap();
            let (a, b) = e.split_once('-').unwrap_or((e, e));
            a.parse::<u16>().unwrap() <= p && p <= b.parse::<u16>().unwrap()
        }),
    }
}

/// The region holding the probe's first packet (SYN), if any.
fn region_of<'a>(regions: &'a [Value], p: &Probe) -> Option<&'a Value> {
    regions.iter().find(|r| {
        let path = if p.forwarded {
            r["direction"] == "forward" && r["out_interface"] == "eth1"
        } else {
            r["direction"] == "ingress"
        };
        path && r["interface"] == "eth0"
            && (r["proto"] == "tcp"
                || (r["proto"] == "any"
                    && !r["not_proto"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x == "tcp")))
            && nets_contain(&r["src"], p.src)
            && nets_contain(&r["dst"], p.dst.ip())
            && ports_contain(&r["dport"], p.dst.port())
    })
}

/// What `explain` says of the probe's first packet under `yaml`: only to choose how long to wait (a
/// drop must last [`DROP_TIMEOUT`], an allow may take up to [`ALLOW_TIMEOUT`] on a busy machine).
fn predicted(yaml: &str, p: &Probe) -> Verdict {
    let loaded = load_sources(&[("c.yaml".to_string(), yaml.to_string())]);
    let view = resolve(&loaded.config, "node1", &[]);
    let path = if p.forwarded {
        Path::Forwarded {
            in_iface: "eth0".into(),
            out_iface: "eth1".into(),
        }
    } else {
        Path::Inbound {
            iface: "eth0".into(),
        }
    };
    let mut packet = Packet::new(path, p.src, p.dst.ip(), 6);
    packet.sport = Some(40000);
    packet.dport = Some(p.dst.port());
    match explain(&loaded.config, &view, &packet).verdict {
        hostpolicyd::analysis::explain::Verdict::Allow => ALLOW,
        hostpolicyd::analysis::explain::Verdict::Drop => DROP,
    }
}

/// What the kernel does with the probe now: allowed (handshake completes) or dropped.
fn verdict(lan0: &NetNs, node: &NetNs, p: &Probe, expect: Verdict) -> &'static str {
    conntrack_flush(node);
    match tcp_connect(lan0, SocketAddr::new(p.src, 0), p.dst, expect.timeout()) {
        Outcome::Ok => "allow",
        Outcome::Timeout => "deny",
        o => panic!("{p:?}: harness error {o:?}"),
    }
}

#[test]
fn plan_matches_what_the_kernel_then_does() {
    if !require_root("plan_matches_what_the_kernel_then_does") {
        return;
    }
    let t = Topology::standard();
    let _servers = [
        Servers::start(&t.node, &[80, 81, 8080, 9000], &[]),
        Servers::start(&t.lan1, &[80, 8080], &[]),
    ];
    let a = config("192.0.2.0/25", None, "192.0.2.0/24, 203.0.113.0/24");
    let b = config("192.0.2.0/26", Some("81"), "192.0.2.0/24, 203.0.113.7/32");
    t.apply(&[("a.yaml", &a)]);

    // Plan B on the node, against what it enforces.
    t.hpd.set_config(&[("b.yaml", &b)]);
    let out = t.hpd.run(&t.node, &["plan", "--json", "--exit-code"]);
    assert_eq!(out.status.code(), Some(4), "{}", output_text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let compared = plan["compared_with"].as_str().unwrap();
    assert!(
        compared.starts_with("what this node enforces"),
        "{compared}"
    );
    let regions = plan["verdict_changes"].as_array().unwrap().clone();

    let probes = [
        // In a region: 80 from .100 (in /25, not in /26), 81 from outside, 8080 forwarded from .5.
        probe("192.0.2.100", "192.0.2.1:80", false),
        probe("192.0.2.100", "198.51.100.45:80", false),
        probe("203.0.113.7", "192.0.2.1:81", false),
        probe("203.0.113.5", "192.0.2.1:81", false),
        probe("203.0.113.5", "198.51.100.9:8080", true),
        // Outside every region: the same verdict before and after.
        probe("192.0.2.2", "192.0.2.1:80", false),
        probe("192.0.2.50", "192.0.2.1:80", false),
        probe("192.0.2.200", "192.0.2.1:80", false),
        probe("192.0.2.100", "192.0.2.1:81", false),
        probe("203.0.113.7", "192.0.2.1:80", false),
        probe("203.0.113.7", "192.0.2.1:9000", false),
        probe("203.0.113.7", "198.51.100.9:8080", true),
        probe("192.0.2.2", "198.51.100.9:8080", true),
        probe("192.0.2.2", "198.51.100.9:80", true),
    ];
    let before: Vec<&str> = probes
        .iter()
        .map(|p| verdict(&t.lan0, &t.node, p, predicted(&a, p)))
        .collect();
    t.apply(&[("b.yaml", &b)]);
    let after: Vec<&str> = probes
        .iter()
        .map(|p| verdict(&t.lan0, &t.node, p, predicted(&b, p)))
        .collect();

    let mut failures = Vec::new();
    let (mut inside, mut outside) = (0, 0);
    for (i, p) in probes.iter().enumerate() {
        match region_of(&regions, p) {
            Some(r) => {
                inside += 1;
                if (before[i], after[i])
                    != (r["before"].as_str().unwrap(), r["after"].as_str().unwrap())
                {
                    failures.push(format!(
                        "{p:?}: in a region {} -> {}, but the kernel: {} -> {}",
                        r["before"], r["after"], before[i], after[i]
                    ));
                }
            }
            None => {
                outside += 1;
                if before[i] != after[i] {
                    failures.push(format!(
                        "{p:?}: in no region, but the kernel changed it: {} -> {}",
                        before[i], after[i]
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nregions: {:#}",
        failures.join("\n"),
        Value::Array(regions.clone())
    );
    assert_eq!(
        (inside, outside),
        (5, 9),
        "regions: {:#}",
        Value::Array(regions)
    );
}
