//! Per-policy counters read back from the kernel (`hostpolicyd status --counters`, `counters::read`):
//! a probe connection allowed by one policy rule increases that rule's counter, and no other policy
//! rule's.

mod common;

use std::collections::BTreeMap;

use common::netns::require_root;
use common::probe::{Report, Servers, ALLOW, DROP};
use common::topology::{output_text, Topology};
use common::yaml::hep;
use serde_json::Value;

/// Three ingress policies on node1's eth0 (192.0.2.1): port 80, port 8080, and a deny for one source.
const POLICIES: &str = "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: deny-bad}
  spec: {order: 1, selector: \"role == 'web'\", ingress: [{action: Deny, source: {nets: [192.0.2.200/32]}}]}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: allow-http}
  spec: {order: 10, selector: \"role == 'web'\", ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: allow-alt}
  spec: {order: 20, selector: \"role == 'web'\", ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]}
";

/// `status --counters --json` in the node: policy rule ("policy ingress rule N") → (packets, at).
fn policy_counters(t: &Topology) -> BTreeMap<String, (u64, String)> {
    let out = t.hpd.run(&t.node, &["status", "--counters", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "status --counters\n{}",
        output_text(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", output_text(&out)));
    let mut m = BTreeMap::new();
    for p in v["policies"].as_array().unwrap() {
        for r in p["rules"].as_array().unwrap() {
            // JSON's `index` counts from 0; people's names of rules from 1 (`ingress rule 1`).
            let key = format!(
                "{} {} rule {}",
                p["name"].as_str().unwrap(),
                r["direction"].as_str().unwrap(),
                r["index"].as_u64().unwrap() + 1
            );
            m.insert(
                key,
                (
                    r["packets"].as_u64().unwrap(),
                    r["at"].as_str().unwrap_or("?").to_string(),
                ),
            );
        }
    }
    m
}

#[test]
fn counters_follow_the_policy_that_allowed() {
    if !require_root("counters_follow_the_policy_that_allowed") {
        return;
    }
    let t = Topology::standard();
    let _s = Servers::start(&t.node, &[80, 8080], &[]);
    t.apply(&[
        (
            "hep.yaml",
            &hep(
                "hep-eth0",
                "node1",
                Some("eth0"),
                &["192.0.2.1"],
                &[("role", "web")],
                &[],
            ),
        ),
        ("policies.yaml", POLICIES),
    ]);

    let before = policy_counters(&t);
    let keys: Vec<&str> = before.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "allow-alt ingress rule 1",
            "allow-http ingress rule 1",
            "deny-bad ingress rule 1"
        ]
    );
    assert!(
        before.values().all(|(p, _)| *p == 0),
        "fresh table, no packets yet: {before:?}"
    );
    assert!(
        before["allow-http ingress rule 1"]
            .1
            .ends_with("policies.yaml:8:58"),
        "{before:?}"
    );

    // One connection to port 80: its first packet goes through the policies; the rest is established.
    let mut r = Report::new("counters", &[&t.node]);
    r.tcp_echo(
        "probe",
        ALLOW,
        "allow-http",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.finish();
    let after = policy_counters(&t);
    let delta: BTreeMap<&str, u64> = after
        .iter()
        .map(|(k, (p, _))| (k.as_str(), p - before[k].0))
        .collect();
    assert!(
        delta["allow-http ingress rule 1"] >= 1,
        "the allowing rule counted the connection: {delta:?}"
    );
    for (rule, d) in &delta {
        if *rule != "allow-http ingress rule 1" {
            assert_eq!(*d, 0, "{rule} counted packets it did not decide: {delta:?}");
        }
    }

    // A denied connection counts on the deny rule, and only there.
    let mut r = Report::new("counters deny", &[&t.node]);
    r.tcp(
        "probe",
        DROP,
        "deny-bad",
        &t.lan0,
        "192.0.2.200",
        "192.0.2.1:8080",
    );
    r.finish();
    let last = policy_counters(&t);
    assert!(last["deny-bad ingress rule 1"].0 >= 1, "{last:?}");
    assert_eq!(last["allow-alt ingress rule 1"].0, 0, "{last:?}");
    assert_eq!(
        last["allow-http ingress rule 1"].0, after["allow-http ingress rule 1"].0,
        "{last:?}"
    );

    // The library reads the same counters (netlink, in the node's namespace), and the text form names
    // the rules with their positions.
    let counters = t
        .node
        .run(|| hostpolicyd::cli::counters::read("hostpolicy"))
        .expect("counters::read");
    let http: u64 = counters
        .iter()
        .filter(|c| {
            // The comment ends with the rule's short file name and line (issue 20 item 7).
            c.comment.as_deref().is_some_and(|t| {
                t.starts_with("allow-http ingress rule 1 Allow (") && t.ends_with(')')
            })
        })
        .map(|c| c.packets)
        .sum();
    assert_eq!(http, last["allow-http ingress rule 1"].0);
    let out = t.hpd.run(&t.node, &["status", "--counters"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("GlobalNetworkPolicy allow-http (") && text.contains("ingress rule 1 Allow"),
        "{text}"
    );
    assert!(text.contains("HostEndpoint hep-eth0 ("), "{text}");
    assert!(text.contains("normal egress: no profile matched"), "{text}");
}

/// Without our table there is nothing to count: exit 3, like `status` without a daemon.
#[test]
fn no_table_no_counters() {
    if !require_root("no_table_no_counters") {
        return;
    }
    let ns = common::topology::fresh_ns("counters");
    let hpd = common::topology::Hpd::new("node1");
    let out = hpd.run(&ns, &["status", "--counters"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("there is no table inet hostpolicy"),
        "{}",
        output_text(&out)
    );
}

/// Tiers spec §3.2: `status --counters` names each policy's tier, and counts the Pass that left a tier
/// and the end of each tier apart.
#[test]
fn counters_name_tiers() {
    if !require_root("counters_name_tiers") {
        return;
    }
    let t = Topology::standard();
    let _s = Servers::start(&t.node, &[80, 8080], &[]);
    let tiered = "- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {order: 100}}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: guard}
  spec: {tier: platform, selector: \"role == 'web'\", ingress: [{action: Deny, source: {nets: [192.0.2.200/32]}}, {action: Pass, protocol: TCP, destination: {ports: [80]}}]}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: allow-http}
  spec: {order: 10, selector: \"role == 'web'\", ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]}
";
    t.apply(&[
        (
            "hep.yaml",
            &hep(
                "hep-eth0",
                "node1",
                Some("eth0"),
                &["192.0.2.1"],
                &[("role", "web")],
                &[],
            ),
        ),
        ("policies.yaml", tiered),
    ]);
    let mut r = Report::new("counters with tiers", &[&t.node]);
    r.tcp_echo(
        "pass then allow",
        ALLOW,
        "guard passes, allow-http allows",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.tcp(
        "end of tier",
        DROP,
        "nothing in platform matches :8080",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:8080",
    );
    r.finish();
    let out = t.hpd.run(&t.node, &["status", "--counters", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tiers: Vec<(&str, &str)> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["tier"].as_str().unwrap()))
        .collect();
    assert_eq!(
        tiers,
        [("guard", "platform"), ("allow-http", "default")],
        "{v}"
    );
    let pass = &v["policies"][0]["rules"][1];
    assert_eq!(pass["action"], "Pass", "{v}");
    assert!(pass["packets"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["policies"][1]["rules"][0]["packets"].as_u64().unwrap() >= 1,
        "{v}"
    );
    let ends: Vec<(&str, u64)> = v["host_endpoints"][0]["defaults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["stage"] == "normal ingress" && d["tier"].is_string())
        .map(|d| (d["tier"].as_str().unwrap(), d["packets"].as_u64().unwrap()))
        .collect();
    assert_eq!(ends.len(), 2, "{v}");
    assert_eq!(ends[0].0, "platform", "{v}");
    assert!(
        ends[0].1 >= 1,
        "the end of tier platform dropped :8080: {v}"
    );
    assert_eq!(ends[1], ("default", 0), "{v}");
    let text =
        String::from_utf8_lossy(&t.hpd.run(&t.node, &["status", "--counters"]).stdout).into_owned();
    assert!(
        text.contains("GlobalNetworkPolicy guard in tier platform ("),
        "{text}"
    );
    assert!(
        text.contains("normal ingress: end of tier platform default deny"),
        "{text}"
    );
}
