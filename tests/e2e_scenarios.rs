//! End to end: spec/calico-semantics.md §7, scenarios T1–T8 (IPv4, every row) and IPv6, on a real kernel.
//!
//! Each test builds its own namespaces (tests/common/topology.rs), writes the scenario's YAML into a
//! temporary config directory, runs `hostpolicyd apply` in the node namespace (must exit 0), then sends
//! real packets and checks every row's verdict (conntrack flushed in the node before each row unless the row
//! continues a flow). A failing test lists every failing row with the spec's reason.
//!
//! Address mapping (spec → test; documentation ranges only):
//! - eth0 10.0.0.0/24 → 192.0.2.0/24: node 10.0.0.1 → 192.0.2.1; clients 10.0.0.x → 192.0.2.x
//!   (.2 .50 .53 .100; T3's 10.0.0.0/28 → 192.0.2.0/28)
//! - eth1 192.168.0.0/24 → 198.51.100.0/24: node 192.168.0.45 → 198.51.100.45; clients .9 .99
//! - T4: 172.16.0.5 → 203.0.113.5 (on the eth0 side, outside the Pass net 192.0.2.0/24)
//! - T6: external client 203.0.113.7 (unchanged, on the eth0 side)
//! - T5: see the comment above the T5 tests
//! - T8: 10.128.0.162 (memcached server = node1 eth0) → 192.0.2.1, client 10.128.0.200 → 192.0.2.200,
//!   other 10.128.0.201 → 192.0.2.201
//! - IPv6: eth0 2001:db8::/64, node ::1, clients ::2 (inside 2001:db8::/120) and ::200 (outside it)

mod common;

use common::netns::require_root;
use common::probe::{
    conntrack_list, retrans_failure, sa, tcp_connect, tcp_open, Outcome, Report, Servers, ALLOW,
    ALLOW_TIMEOUT, DROP, DROP_TIMEOUT,
};
use common::scenarios as sc;
use common::t5::t5_plan;
use common::topology::{
    kube_proxy_nodeport, nft_json_exact, nft_list, output_text, Plan, Topology,
};
use common::yaml::hep;

/// Listeners for the standard topology: every port any row probes.
fn standard_servers(t: &Topology) -> Vec<Servers> {
    vec![
        Servers::start(&t.node, &[22, 80, 81, 8080, 12211, 31852], &[]),
        Servers::start(&t.lan0, &[22, 80, 443], &["192.0.2.53:53"]),
        Servers::start(&t.lan1, &[22, 80, 8080], &[]),
    ]
}

// =============================================================================================================
// T1 HEP with no policy: default deny, failsafe, unpoliced interface
// =============================================================================================================

#[test]
fn t1_hep_without_policy() {
    if !require_root("t1_hep_without_policy") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t1().files());

    let mut r = Report::new("T1", &[&t.node]);
    r.tcp(
        "T1 #1",
        DROP,
        "no normal ingress policy ⇒ profiles ⇒ none ⇒ deny",
        &t.lan0,
        "192.0.2.2:40000",
        "192.0.2.1:8080",
    );
    r.tcp(
        "T1 #2",
        ALLOW,
        "failsafe-in tcp/22",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:22",
    );
    r.tcp(
        "T1 #3",
        DROP,
        "no egress policy",
        &t.node,
        "192.0.2.1",
        "192.0.2.2:443",
    );
    r.udp(
        "T1 #4",
        ALLOW,
        "failsafe-out udp/53; ct established (request and its reply)",
        &t.node,
        "192.0.2.1",
        "192.0.2.53:53",
    );
    r.ping(
        "T1 #5",
        DROP,
        "ICMP is not failsafe",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1",
    );
    r.tcp(
        "T1 #6",
        ALLOW,
        "eth1 has no HEP and there is no `*` HEP",
        &t.lan1,
        "198.51.100.9",
        "198.51.100.45:8080",
    );
    r.finish();
}

#[test]
fn t1_variant_default_allow_profile() {
    if !require_root("t1_variant_default_allow_profile") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t1_default_allow().files());

    let why =
        "T1 variant: profiles [projectcalico-default-allow] ⇒ packets 1, 3 and 5 become ALLOW";
    let mut r = Report::new("T1 variant", &[&t.node]);
    r.tcp(
        "T1v #1",
        ALLOW,
        why,
        &t.lan0,
        "192.0.2.2:40000",
        "192.0.2.1:8080",
    );
    r.tcp(
        "T1v #2",
        ALLOW,
        "failsafe-in tcp/22",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:22",
    );
    r.tcp("T1v #3", ALLOW, why, &t.node, "192.0.2.1", "192.0.2.2:443");
    r.udp(
        "T1v #4",
        ALLOW,
        "failsafe-out udp/53; ct established",
        &t.node,
        "192.0.2.1",
        "192.0.2.53:53",
    );
    r.ping("T1v #5", ALLOW, why, &t.lan0, "192.0.2.2", "192.0.2.1");
    r.tcp(
        "T1v #6",
        ALLOW,
        "eth1 has no HEP",
        &t.lan1,
        "198.51.100.9",
        "198.51.100.45:8080",
    );
    r.finish();
}

// =============================================================================================================
// T2 Types inference and per-direction defaults
// =============================================================================================================

#[test]
fn t2_types_inferred_ingress() {
    if !require_root("t2_types_inferred_ingress") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t2().files());

    let mut r = Report::new("T2", &[&t.node]);
    r.tcp_echo(
        "T2 #1",
        ALLOW,
        "rule match; ct established (SYN in, SYN-ACK out, data both ways)",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.tcp(
        "T2 #2",
        DROP,
        "end-of-tier deny",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:81",
    );
    r.tcp(
        "T2 #3",
        DROP,
        "types inferred [Ingress]: egress not governed by any policy ⇒ default deny",
        &t.node,
        "192.0.2.1",
        "192.0.2.2:443",
    );
    r.finish();
}

#[test]
fn t2_variant_a_types_ingress_egress_without_egress_rules() {
    if !require_root("t2_variant_a_types_ingress_egress_without_egress_rules") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t2_types_ingress_egress().files());

    let mut r = Report::new("T2 variant a", &[&t.node]);
    r.tcp_echo(
        "T2a #1",
        ALLOW,
        "rule match; ct established",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.tcp(
        "T2a #2",
        DROP,
        "end-of-tier deny",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:81",
    );
    r.tcp(
        "T2a #3",
        DROP,
        "types [Ingress, Egress] with no egress rules: still DROP, now by end-of-tier",
        &t.node,
        "192.0.2.1",
        "192.0.2.2:443",
    );
    r.finish();
}

#[test]
fn t2_variant_b_egress_rules_infer_both_types() {
    if !require_root("t2_variant_b_egress_rules_infer_both_types") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t2_egress_rule().files());

    let mut r = Report::new("T2 variant b", &[&t.node]);
    r.tcp_echo(
        "T2b #1",
        ALLOW,
        "rule match; ct established",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.tcp(
        "T2b #2",
        DROP,
        "end-of-tier deny",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:81",
    );
    r.tcp(
        "T2b #3",
        ALLOW,
        "egress rules present, no types ⇒ inferred [Ingress, Egress] ⇒ egress Allow",
        &t.node,
        "192.0.2.1",
        "192.0.2.2:443",
    );
    r.finish();
}

// =============================================================================================================
// T3 Order, ties and missing order
// =============================================================================================================

#[test]
fn t3_order() {
    if !require_root("t3_order") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t3().files());

    let mut r = Report::new("T3 rows 1-2", &[&t.node]);
    r.tcp(
        "T3 #1",
        DROP,
        "a-deny (order 10) matches first",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.tcp(
        "T3 #2",
        ALLOW,
        "b-allow (order 20) comes before m-deny (+∞)",
        &t.lan0,
        "192.0.2.100",
        "192.0.2.1:80",
    );
    r.finish();
}

#[test]
fn t3_missing_order_tie_broken_by_name() {
    if !require_root("t3_missing_order_tie_broken_by_name") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t3_without_order().files());

    let mut r = Report::new("T3 row 3", &[&t.node]);
    r.tcp(
        "T3 #3",
        ALLOW,
        "tie at +∞ broken by name: `b-allow` < `m-deny`",
        &t.lan0,
        "192.0.2.100",
        "192.0.2.1:80",
    );
    r.tcp(
        "T3 #3 (row 1 still)",
        DROP,
        "a-deny (order 10) matches first",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.finish();
}

#[test]
fn t3_missing_order_sorts_last_then_name() {
    if !require_root("t3_missing_order_sorts_last_then_name") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t3_z_allow().files());

    let mut r = Report::new("T3 row 4", &[&t.node]);
    r.tcp(
        "T3 #4",
        DROP,
        "`m-deny` < `z-allow` (both at +∞)",
        &t.lan0,
        "192.0.2.100",
        "192.0.2.1:80",
    );
    r.finish();
}

// =============================================================================================================
// T4 Pass, Log, profiles
// =============================================================================================================

/// The kernel log of a non-initial namespace is only written when the host's `nf_log_all_netns` is 1, which
/// a test must not change: so the Log rows check that the loaded ruleset logs with the spec's prefix
/// (§3.4: `log prefix "calico-packet: "`), not the log itself.
fn check_log_rule(r: &mut Report, t: &Topology, row: &str) {
    let listing = nft_list(&t.node, "inet", "hostpolicy").unwrap_or_default();
    r.assert(
        row,
        listing.contains("log prefix \"calico-packet"),
        "the table holds a `log prefix \"calico-packet: \"` rule for p1's Log action (spec §3.4)",
    );
}

#[test]
fn t4_pass_log_no_profile() {
    if !require_root("t4_pass_log_no_profile") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t4().files());

    let mut r = Report::new("T4", &[&t.node]);
    r.tcp(
        "T4 #1",
        DROP,
        "Log continues; Pass skips p2; no profiles ⇒ deny",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.tcp(
        "T4 #2",
        ALLOW,
        "no Pass match ⇒ p2 allows (logged)",
        &t.lan0,
        "203.0.113.5",
        "192.0.2.1:80",
    );
    check_log_rule(&mut r, &t, "T4 #1/#2 log");
    r.finish();
}

#[test]
fn t4_pass_to_default_allow_profile() {
    if !require_root("t4_pass_to_default_allow_profile") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t4_default_allow().files());

    let mut r = Report::new("T4 row 3", &[&t.node]);
    r.tcp(
        "T4 #3",
        ALLOW,
        "Pass ⇒ the profile (projectcalico-default-allow) allows",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.tcp(
        "T4 #3 (row 2 still)",
        ALLOW,
        "no Pass match ⇒ p2 allows",
        &t.lan0,
        "203.0.113.5",
        "192.0.2.1:80",
    );
    check_log_rule(&mut r, &t, "T4 #3 log");
    r.finish();
}

// =============================================================================================================
// T5 The full node-port how-to
//
// Address mapping:
// - node1 eth0 1.2.3.4 → 198.51.100.4/25; peer node2 eth0 1.2.3.5 → 198.51.100.5/25 (namespace `peer`, same
//   segment)
// - cluster net 1.2.0.0/16 → 198.51.100.0/25; pod CIDR 100.100.0.0/16 → 198.51.100.128/25
// - the pod behind node1's eth2: 198.51.100.200 (node1 side 198.51.100.129); kube-proxy DNAT (table
//   `ip kubeproxy-test`, dstnat -100) of 198.51.100.4:31852 (TCP and UDP) → 198.51.100.200:8080
// - row 7's source 100.100.7.7 → 198.51.100.177 (a pod-net address arriving on eth0)
// - external client 203.0.113.7 (unchanged); row 8's 93.184.216.34:443 → 203.0.113.34:443
// =============================================================================================================

/// Topology, servers and the DNAT table for T5.
fn t5_setup() -> (Topology, Vec<Servers>) {
    let t = Topology::build(t5_plan());
    let s = vec![
        Servers::start(&t.node, &[22, 9100, 10250, 31853], &[]),
        Servers::start(&t.lan0, &[443], &[]),
        Servers::start(t.pod(), &[8080], &["198.51.100.200:8080"]),
        Servers::start(t.peer(), &[22, 31852], &[]),
    ];
    kube_proxy_nodeport(&t.node, "198.51.100.4", 31852, "198.51.100.200", 8080);
    (t, s)
}

const T5_ROW1: &str = "preDNAT allow-nodeport (order 10): TCP, dst ∈ {node1, node2}, port 31852; the forward path to the pod is allowed by default (no AoF normal policy)";

#[test]
fn t5_nodeport_howto() {
    if !require_root("t5_nodeport_howto") {
        return;
    }
    let (t, _s) = t5_setup();
    t.apply(&sc::t5().files());

    let mut r = Report::new("T5", &[&t.node]);
    let mut conn = None;
    r.check(
        "T5 #1",
        ALLOW,
        T5_ROW1,
        "TCP 203.0.113.7 -> 198.51.100.4:31852 SYN (DNAT to the pod)",
        |to| match tcp_open(&t.lan0, sa("203.0.113.7:0"), sa("198.51.100.4:31852"), to) {
            Ok(c) => {
                let o = retrans_failure(&c).unwrap_or(Outcome::Ok);
                conn = Some(c);
                o
            }
            Err(o) => o,
        },
    );
    r.same_flow().check(
        "T5 #2",
        ALLOW,
        "`ct state established` at mangle prerouting",
        "next packets of the same flow (ACK, data both ways)",
        |to| match conn.as_mut() {
            Some(c) => c.echo(b"same flow", to),
            None => Outcome::Failed("no connection (row 1 failed)".into()),
        },
    );
    drop(conn);
    r.tcp(
        "T5 #3",
        DROP,
        "allow-cluster-internal-ingress-only, explicit Deny",
        &t.lan0,
        "203.0.113.7",
        "198.51.100.4:31853",
    );
    r.udp(
        "T5 #4",
        DROP,
        "allow-nodeport needs TCP ⇒ the order-20 Deny",
        &t.lan0,
        "203.0.113.7",
        "198.51.100.4:31852",
    );
    r.tcp(
        "T5 #5",
        ALLOW,
        "failsafe-in runs before the preDNAT policies",
        &t.lan0,
        "203.0.113.7",
        "198.51.100.4:22",
    );
    r.tcp(
        "T5 #6",
        ALLOW,
        "source in the cluster net ⇒ preDNAT Allow ⇒ normal ingress skipped",
        t.peer(),
        "198.51.100.5",
        "198.51.100.4:10250",
    );
    r.tcp(
        "T5 #7",
        ALLOW,
        "source in the pod net",
        &t.lan0,
        "198.51.100.177",
        "198.51.100.4:9100",
    );
    r.tcp_echo(
        "T5 #8",
        ALLOW,
        "normal egress allow-outbound-external; the reply by ct established",
        &t.node,
        "198.51.100.4",
        "203.0.113.34:443",
    );
    r.finish();
}

#[test]
fn t5_row9_hep_without_expected_ips() {
    if !require_root("t5_row9_hep_without_expected_ips") {
        return;
    }
    let (t, _s) = t5_setup();
    t.apply(&sc::t5_without_expected_ips().files());

    let mut r = Report::new("T5 row 9", &[&t.node]);
    r.tcp(
        "T5 #9",
        DROP,
        "the dst selector set is {node2} only, so no match ⇒ Deny (projectcalico/calico#4171)",
        &t.lan0,
        "203.0.113.7",
        "198.51.100.4:31852",
    );
    r.tcp(
        "T5 #9 (row 6 still)",
        ALLOW,
        "source in the cluster net ⇒ preDNAT Allow",
        t.peer(),
        "198.51.100.5",
        "198.51.100.4:10250",
    );
    r.finish();
}

#[test]
fn t5_row10_hep_without_kubernetes_host_label() {
    if !require_root("t5_row10_hep_without_kubernetes_host_label") {
        return;
    }
    let (t, _s) = t5_setup();
    t.apply(&sc::t5_without_label().files());

    let mut r = Report::new("T5 row 10", &[&t.node]);
    r.tcp_echo("T5 #10", ALLOW, "no policy selects the HEP ⇒ no preDNAT; after DNAT the packet is forwarded and the forward default allows", &t.lan0, "203.0.113.7", "198.51.100.4:31852");
    r.tcp(
        "T5 #10 (#6)",
        DROP,
        "the HEP still exists, so local traffic becomes DROP (no normal ingress policy)",
        t.peer(),
        "198.51.100.5",
        "198.51.100.4:10250",
    );
    r.tcp(
        "T5 #10 (#8)",
        DROP,
        "the HEP still exists, so local traffic becomes DROP (no normal egress policy)",
        &t.node,
        "198.51.100.4",
        "203.0.113.34:443",
    );
    r.tcp(
        "T5 #10 (#5)",
        ALLOW,
        "failsafe-in tcp/22",
        &t.lan0,
        "203.0.113.7",
        "198.51.100.4:22",
    );
    r.finish();
}

#[test]
fn t5_node_selective_variant() {
    if !require_root("t5_node_selective_variant") {
        return;
    }
    let (t, _s) = t5_setup();
    let selective = sc::t5_node_selective("nodeport-external-ingress == 'true'");
    let files = selective.files();
    t.apply(&files);
    // the same files on node2 (the peer), as the design intends
    t.hpd_peer.set_config(&files);
    t.hpd_peer.must_apply(t.peer());

    let mut r = Report::new("T5 node-selective variant", &[&t.node, t.peer()]);
    r.tcp_echo(
        "T5 sel node1",
        ALLOW,
        "node1-eth0 carries nodeport-external-ingress: \"true\" ⇒ allow-nodeport applies",
        &t.lan0,
        "203.0.113.7",
        "198.51.100.4:31852",
    );
    r.tcp(
        "T5 sel node2",
        DROP,
        "node2-eth0 lacks the label ⇒ only allow-cluster-internal-ingress-only ⇒ Deny",
        &t.lan0,
        "203.0.113.7",
        "198.51.100.5:31852",
    );
    r.tcp(
        "T5 sel node2 control",
        ALLOW,
        "node2's 31852 listener is reachable from the cluster net (preDNAT Allow)",
        &t.node,
        "198.51.100.4",
        "198.51.100.5:31852",
    );
    r.tcp(
        "T5 sel node2 failsafe",
        ALLOW,
        "failsafe-in tcp/22 on node2",
        &t.lan0,
        "203.0.113.7",
        "198.51.100.5:22",
    );
    r.finish();
}

#[test]
fn t5_invalid_node_selector_rejected_and_previous_table_kept() {
    if !require_root("t5_invalid_node_selector_rejected_and_previous_table_kept") {
        return;
    }
    let (t, _s) = t5_setup();
    t.apply(&sc::t5_node_selective("nodeport-external-ingress == 'true'").files());
    let before = nft_json_exact(&t.node, "inet", "hostpolicy");

    // spec §6.1: the how-to's `nodeport-external-ingress: true` is not a valid selector
    t.hpd
        .set_config(&sc::t5_node_selective("nodeport-external-ingress: true").files());
    let out = t.hpd.apply(&t.node);
    let after = nft_json_exact(&t.node, "inet", "hostpolicy");

    let mut r = Report::new("T5 invalid selector", &[&t.node]);
    r.assert(
        "T5 sel invalid",
        out.status.code() == Some(1),
        &format!(
            "apply exits 1 (invalid configuration, nothing changed); got {:?}\n{}",
            out.status.code(),
            output_text(&out)
        ),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    r.assert(
        "T5 sel invalid diag",
        text.contains("error:"),
        "a `FILE:LINE:COL: error: MESSAGE` diagnostic is printed",
    );
    r.assert(
        "T5 sel invalid table",
        before.is_some() && before == after,
        "the previous table is left unchanged (same handles)",
    );
    r.tcp(
        "T5 sel invalid still",
        ALLOW,
        "the previous ruleset stays in force",
        &t.lan0,
        "203.0.113.7",
        "198.51.100.4:31852",
    );
    r.finish();
}

// =============================================================================================================
// T6 preDNAT has no default drop; preDNAT validation
// =============================================================================================================

#[test]
fn t6_prednat_has_no_default_drop() {
    if !require_root("t6_prednat_has_no_default_drop") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t6().files());

    let mut r = Report::new("T6", &[&t.node]);
    r.tcp(
        "T6 #1",
        DROP,
        "preDNAT no match ⇒ normal ingress has no policy ⇒ deny",
        &t.lan0,
        "203.0.113.7",
        "192.0.2.1:8080",
    );
    r.tcp(
        "T6 #2",
        ALLOW,
        "preDNAT allow skips normal ingress",
        &t.lan0,
        "203.0.113.7",
        "192.0.2.1:31852",
    );
    r.tcp("T6 #3", ALLOW, "preDNAT no match; forward-ingress(eth0) has no AoF policy ⇒ allow (routed out eth1, no HEP)", &t.lan0, "203.0.113.7", "198.51.100.99:8080");
    r.finish();
}

#[test]
fn t6_load_time_rejects() {
    if !require_root("t6_load_time_rejects") {
        return;
    }
    let t = Topology::standard();
    t.apply(&sc::t6().files());
    let before = nft_json_exact(&t.node, "inet", "hostpolicy");
    assert!(before.is_some(), "apply left no table inet hostpolicy");

    let cases = [
        (
            "without applyOnForward",
            sc::t6_apply_on_forward(""),
            "preDNAT needs applyOnForward (spec §1.3 rule 3)",
        ),
        (
            "with egress rules",
            sc::t6_with("egress: [{action: Allow}]"),
            "preDNAT: egress must be empty (rule 2)",
        ),
        (
            "with types [Ingress, Egress]",
            sc::t6_with("types: [Ingress, Egress]"),
            "preDNAT: types must not contain Egress (rule 2)",
        ),
        (
            "with doNotTrack as well",
            sc::t6_with("doNotTrack: true"),
            "preDNAT and doNotTrack cannot both be true (rule 1)",
        ),
    ];
    let mut r = Report::new("T6 load-time rejects", &[&t.node]);
    for (what, scenario, why) in &cases {
        t.hpd.set_config(&scenario.files());
        let out = t.hpd.apply(&t.node);
        r.assert(
            &format!("T6 reject {what}"),
            out.status.code() == Some(1),
            &format!(
                "apply exits 1 — {why}; got {:?}\n{}",
                out.status.code(),
                output_text(&out)
            ),
        );
        r.assert(
            &format!("T6 reject {what} keeps table"),
            nft_json_exact(&t.node, "inet", "hostpolicy") == before,
            "nothing changed: the previous table is still loaded, same handles",
        );
    }
    r.finish();
}

// =============================================================================================================
// T7 applyOnForward on a router
// =============================================================================================================

#[test]
fn t7_apply_on_forward_router() {
    if !require_root("t7_apply_on_forward_router") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t7().files());

    let mut r = Report::new("T7", &[&t.node]);
    r.tcp(
        "T7 #1",
        ALLOW,
        "eth1 forward-egress allows port 22",
        &t.lan0,
        "192.0.2.50",
        "198.51.100.99:22",
    );
    r.tcp(
        "T7 #2",
        DROP,
        "an AoF egress policy exists for eth1 ⇒ end-of-tier",
        &t.lan0,
        "192.0.2.50",
        "198.51.100.99:80",
    );
    r.tcp(
        "T7 #3",
        ALLOW,
        "eth1 has no AoF ingress policy (no verdict ⇒ FORWARD default); eth0 is unpoliced",
        &t.lan1,
        "198.51.100.99",
        "192.0.2.50:80",
    );
    r.tcp(
        "T7 #4",
        ALLOW,
        "AoF policies also apply to local traffic",
        &t.node,
        "198.51.100.45",
        "198.51.100.99:22",
    );
    r.tcp(
        "T7 #5",
        DROP,
        "local egress to port 80: end-of-tier",
        &t.node,
        "198.51.100.45",
        "198.51.100.99:80",
    );
    r.tcp(
        "T7 #6",
        DROP,
        "no normal ingress policy",
        &t.lan1,
        "198.51.100.99",
        "198.51.100.45:8080",
    );
    r.finish();
}

#[test]
fn t7_variant_without_apply_on_forward() {
    if !require_root("t7_variant_without_apply_on_forward") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t7_without_apply_on_forward().files());

    let why = "no AoF policy ⇒ the forward default allows";
    let mut r = Report::new("T7 variant", &[&t.node]);
    r.tcp(
        "T7v #1",
        ALLOW,
        why,
        &t.lan0,
        "192.0.2.50",
        "198.51.100.99:22",
    );
    r.tcp(
        "T7v #2",
        ALLOW,
        why,
        &t.lan0,
        "192.0.2.50",
        "198.51.100.99:80",
    );
    r.tcp(
        "T7v #3",
        ALLOW,
        why,
        &t.lan1,
        "198.51.100.99",
        "192.0.2.50:80",
    );
    r.tcp(
        "T7v #4",
        ALLOW,
        "normal egress policy allows port 22",
        &t.node,
        "198.51.100.45",
        "198.51.100.99:22",
    );
    r.tcp(
        "T7v #5",
        DROP,
        "stays DROP: end-of-tier of the normal egress policy",
        &t.node,
        "198.51.100.45",
        "198.51.100.99:80",
    );
    r.tcp(
        "T7v #6",
        DROP,
        "stays DROP: no normal ingress policy",
        &t.lan1,
        "198.51.100.99",
        "198.51.100.45:8080",
    );
    r.finish();
}

// =============================================================================================================
// T8 doNotTrack must be symmetric
// =============================================================================================================

#[test]
fn t8_do_not_track_symmetric() {
    if !require_root("t8_do_not_track_symmetric") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t8().files());

    let mut r = Report::new("T8", &[&t.node]);
    let mut conn = None;
    r.check(
        "T8 #1+#2",
        ALLOW,
        "#1 untracked ingress allow: notrack, accepted in raw; #2 SYN-ACK: untracked egress allow",
        "TCP handshake 192.0.2.200:40000 -> 192.0.2.1:12211",
        |to| match tcp_open(&t.lan0, sa("192.0.2.200:40000"), sa("192.0.2.1:12211"), to) {
            Ok(c) => {
                let o = retrans_failure(&c).unwrap_or(Outcome::Ok);
                conn = Some(c);
                o
            }
            Err(o) => o,
        },
    );
    r.same_flow().check(
        "T8 #1+#2 data",
        ALLOW,
        "both directions untracked-allowed",
        "data both ways on the same flow",
        |to| match conn.as_mut() {
            Some(c) => c.echo(b"get key", to),
            None => Outcome::Failed("no connection (handshake failed)".into()),
        },
    );
    let entries = conntrack_list(&t.node, &["-p", "tcp", "--orig-port-dst", "12211"]);
    r.assert(
        "T8 #1 notrack",
        entries.is_empty(),
        &format!(
            "untracked allow ⇒ the flow has no conntrack entry on the node; found {entries:?}"
        ),
    );
    if let Some(c) = conn.take() {
        c.abort();
    }
    r.tcp(
        "T8 #3",
        DROP,
        "no untracked match ⇒ tracked path ⇒ no normal policy",
        &t.lan0,
        "192.0.2.201",
        "192.0.2.1:12211",
    );
    r.tcp(
        "T8 #5",
        ALLOW,
        "failsafe runs before untracked policy (raw) and again in filter",
        &t.lan0,
        "192.0.2.201",
        "192.0.2.1:22",
    );
    // Control for the notrack check above: a failsafe flow is tracked (§4.3: the raw failsafe accepts set
    // no mark and do no notrack), so the same query does find its entry.
    let ssh = tcp_open(
        &t.lan0,
        sa("192.0.2.201:40022"),
        sa("192.0.2.1:22"),
        ALLOW.timeout(),
    );
    let entries = conntrack_list(
        &t.node,
        &[
            "-p",
            "tcp",
            "--orig-port-dst",
            "22",
            "--orig-port-src",
            "40022",
        ],
    );
    r.assert(
        "T8 #5 tracked",
        ssh.is_ok() && entries.len() == 1,
        &format!("a failsafe flow is tracked: one conntrack entry expected, found {entries:?}"),
    );
    if let Ok(c) = ssh {
        c.abort();
    }
    r.finish();
}

#[test]
fn t8_row4_without_egress_rule_reply_dropped() {
    if !require_root("t8_row4_without_egress_rule_reply_dropped") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.apply(&sc::t8_without_egress().files());

    let mut r = Report::new("T8 row 4", &[&t.node]);
    r.tcp("T8 #4", DROP, "the SYN-ACK reaches tracked egress with no policy (projectcalico/calico#10704 expects this)", &t.lan0, "192.0.2.200:40000", "192.0.2.1:12211");
    r.tcp(
        "T8 #4 (row 5 still)",
        ALLOW,
        "failsafe",
        &t.lan0,
        "192.0.2.201",
        "192.0.2.1:22",
    );
    r.finish();
}

#[test]
fn t8_row6_wildcard_hep_ignores_untracked_policy() {
    if !require_root("t8_row6_wildcard_hep_ignores_untracked_policy") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    t.hpd.set_config(&sc::t8_wildcard().files());
    let out = t.hpd.apply(&t.node);
    assert!(
        out.status.code() == Some(0),
        "apply exited {:?}, expected 0 (a warning only)\n{}",
        out.status.code(),
        output_text(&out)
    );

    let mut r = Report::new("T8 row 6", &[&t.node]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    r.assert(
        "T8 #6 warning",
        text.contains("warning"),
        "untracked policy is ignored on `*` HEPs (warning)",
    );
    r.tcp(
        "T8 #6",
        DROP,
        "untracked policy is ignored on `*` HEPs; no normal policy",
        &t.lan0,
        "192.0.2.200:40000",
        "192.0.2.1:12211",
    );
    r.tcp(
        "T8 #6 (failsafe)",
        ALLOW,
        "failsafe-in tcp/22 on the `*` HEP",
        &t.lan0,
        "192.0.2.201",
        "192.0.2.1:22",
    );
    r.finish();
}

// =============================================================================================================
// IPv6: default deny, an allow through an IPv6 CIDR, ICMPv6 echo — the same table as IPv4
// =============================================================================================================

#[test]
fn ipv6_default_deny_cidr_allow_and_icmpv6() {
    if !require_root("ipv6_default_deny_cidr_allow_and_icmpv6") {
        return;
    }
    let mut plan = Plan::standard();
    plan.eth0.push("2001:db8::1/64");
    plan.lan0.extend(["2001:db8::2/64", "2001:db8::200/64"]);
    let t = Topology::build(plan);
    let _s = standard_servers(&t);
    // Spec §6.8: a default-deny HEP also blocks NDP unless a policy allows ICMPv6, hence allow-icmpv6.
    let policies = "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: allow-icmpv6}
  spec:
    order: 10
    selector: \"role == 'web'\"
    ingress: [{action: Allow, protocol: ICMPv6}]
    egress: [{action: Allow, protocol: ICMPv6}]
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: allow-v6-web}
  spec:
    order: 20
    selector: \"role == 'web'\"
    ingress: [{action: Allow, protocol: TCP, source: {nets: [\"2001:db8::/120\"]}, destination: {ports: [80]}}]
";
    let heps = hep(
        "hep-eth0",
        "node1",
        Some("eth0"),
        &["192.0.2.1", "2001:db8::1"],
        &[("role", "web")],
        &[],
    );
    t.apply(&[("hep.yaml", &heps), ("policies.yaml", policies)]);

    let mut r = Report::new("IPv6", &[&t.node]);
    r.tcp_echo(
        "v6 #1",
        ALLOW,
        "source in 2001:db8::/120, port 80 ⇒ allow-v6-web",
        &t.lan0,
        "2001:db8::2",
        "[2001:db8::1]:80",
    );
    r.tcp(
        "v6 #2",
        DROP,
        "source outside the CIDR ⇒ end-of-tier deny",
        &t.lan0,
        "2001:db8::200",
        "[2001:db8::1]:80",
    );
    r.tcp(
        "v6 #3",
        DROP,
        "port 81 not allowed ⇒ end-of-tier deny",
        &t.lan0,
        "2001:db8::2",
        "[2001:db8::1]:81",
    );
    r.ping(
        "v6 #4",
        ALLOW,
        "ICMPv6 allowed in (echo request) and out (reply, also ct established)",
        &t.lan0,
        "2001:db8::200",
        "2001:db8::1",
    );
    r.ping(
        "v6 #5",
        ALLOW,
        "node → client ICMPv6 echo: egress allow-icmpv6",
        &t.node,
        "2001:db8::1",
        "2001:db8::2",
    );
    r.tcp(
        "v6 #6",
        DROP,
        "local egress TCP: allow-icmpv6 makes types [Ingress, Egress] ⇒ end-of-tier",
        &t.node,
        "2001:db8::1",
        "[2001:db8::2]:443",
    );
    r.tcp(
        "v6 #7",
        ALLOW,
        "failsafe-in tcp/22 (entries without net apply to both families)",
        &t.lan0,
        "2001:db8::200",
        "[2001:db8::1]:22",
    );
    r.tcp(
        "v4 #1",
        DROP,
        "IPv4 on the same table: the /120 allow is IPv6 only ⇒ end-of-tier",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.ping(
        "v4 #2",
        DROP,
        "ICMP (v4) is not allowed: the ICMPv6 rule does not match it",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1",
    );
    r.tcp(
        "v4 #3",
        ALLOW,
        "failsafe-in tcp/22",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:22",
    );
    r.finish();
}

// =============================================================================================================
// One net, one port range: matched directly (no set), with the same meaning as a list (issue 7)
// =============================================================================================================

/// One policy whose rules use `nets`, `notNets`, `ports` and `notPorts` (spec §1.5: the IP is in any /
/// none of the CIDRs; §1.6: `"min:max"` is an inclusive range). `lists` adds to every list an entry no
/// probe can hit, so the same meaning is compiled into sets instead of direct matches.
fn single_or_list_policy(lists: bool) -> String {
    let extra = |e: &str| {
        if lists {
            format!(", {e}")
        } else {
            String::new()
        }
    };
    format!(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: single-or-list}}
spec:
  order: 10
  selector: \"role == 'web'\"
  ingress:
  - action: Allow
    protocol: TCP
    source: {{nets: [192.0.2.0/26{n}], notNets: [192.0.2.48/28{nn}]}}
    destination: {{ports: [\"80:81\"{p}]}}
  - action: Allow
    protocol: TCP
    source: {{nets: [192.0.2.100/32{h}]}}
    destination: {{notPorts: [\"1:8079\"{np}]}}
",
        n = extra("203.0.113.0/24"),
        nn = extra("203.0.113.128/25"),
        p = extra("9"),
        h = extra("203.0.113.1/32"),
        np = extra("\"8091:65535\""),
    )
}

#[test]
fn single_net_and_port_range_match_like_lists() {
    if !require_root("single_net_and_port_range_match_like_lists") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    for lists in [false, true] {
        // T1's HostEndpoint, with the policy.
        let (t1, policy) = (sc::t1(), single_or_list_policy(lists));
        let mut files = t1.files();
        files.push(("policy.yaml", &policy));
        t.apply(&files);
        let table = nft_list(&t.node, "inet", "hostpolicy").expect("table listed");
        let direct = [
            "ip saddr 192.0.2.0/26",
            "ip saddr != 192.0.2.48/28",
            "tcp dport 80-81",
            "ip saddr 192.0.2.100",
            "tcp dport != 1-8079",
        ];
        for d in direct {
            // as a direct match exactly when the list has one entry
            assert_eq!(
                table.contains(d),
                !lists,
                "{d:?} (lists: {lists}) in:\n{table}"
            );
        }
        let what = if lists {
            "lists (sets)"
        } else {
            "single entries"
        };
        let mut r = Report::new(&format!("single net/range vs list: {what}"), &[&t.node]);
        let rows = [
            (
                "#1",
                ALLOW,
                "in the net, port 80 = low end of 80:81",
                "192.0.2.2",
                "80",
            ),
            (
                "#2",
                ALLOW,
                "port 81 = high end of 80:81 (inclusive)",
                "192.0.2.2",
                "81",
            ),
            (
                "#3",
                DROP,
                "port 8080 outside 80:81 ⇒ end-of-tier",
                "192.0.2.2",
                "8080",
            ),
            (
                "#4",
                DROP,
                "192.0.2.50 is in notNets 192.0.2.48/28",
                "192.0.2.50",
                "80",
            ),
            (
                "#5",
                DROP,
                "192.0.2.53 is in notNets 192.0.2.48/28",
                "192.0.2.53",
                "81",
            ),
            (
                "#6",
                ALLOW,
                ".100: port 8080 is not in notPorts 1:8079",
                "192.0.2.100",
                "8080",
            ),
            (
                "#7",
                DROP,
                ".100 outside 192.0.2.0/26, port 80 in notPorts",
                "192.0.2.100",
                "80",
            ),
        ];
        for (row, verdict, why, src, port) in rows {
            r.tcp(
                row,
                verdict,
                why,
                &t.lan0,
                src,
                &format!("192.0.2.1:{port}"),
            );
        }
        r.finish();
    }
}

// =============================================================================================================
// FelixConfiguration nftablesFilterDenyAction
// =============================================================================================================

/// Spec §5 (`nftablesFilterDenyAction: Reject`): an ingress deny in the filter stage — a Deny rule and
/// the end-of-tier default deny — answers with an ICMP port unreachable, so a TCP client is refused at
/// once instead of waiting; an allowed port and the failsafe port still work. With the default (Drop)
/// the same packets are silently dropped.
#[test]
fn filter_deny_action_reject_refuses_instead_of_dropping() {
    if !require_root("filter_deny_action_reject_refuses_instead_of_dropping") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    let felix =
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n\
                 spec:\n  nftablesFilterDenyAction: Reject\n";
    let policy = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: web}\n\
                  spec:\n  selector: role == 'web'\n  ingress:\n  - action: Deny\n    protocol: TCP\n    \
                  destination: {ports: [81]}\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [80]}\n";
    let t1 = sc::t1();
    for reject in [true, false] {
        // T1's HostEndpoint, with the policy.
        let mut files = t1.files();
        files.push(("policy.yaml", policy));
        if reject {
            files.push(("felix.yaml", felix));
        }
        t.apply(&files);
        let table = nft_list(&t.node, "inet", "hostpolicy").expect("table listed");
        // The deny ends in its flow-records tail chain: a line of its own.
        let rejects = table
            .lines()
            .any(|l| l.trim() == "reject" || l.contains(" reject"));
        assert_eq!(rejects, reject, "{table}");
        let probe = |port: u16, timeout| {
            tcp_connect(
                &t.lan0,
                "192.0.2.2:0".parse().unwrap(),
                format!("192.0.2.1:{port}").parse().unwrap(),
                timeout,
            )
        };
        assert_eq!(probe(80, ALLOW_TIMEOUT), Outcome::Ok, "allowed port");
        assert_eq!(probe(22, ALLOW_TIMEOUT), Outcome::Ok, "failsafe port");
        let denied = if reject {
            Outcome::Refused
        } else {
            Outcome::Timeout
        };
        assert_eq!(
            probe(81, DROP_TIMEOUT),
            denied,
            "Deny rule (reject: {reject})"
        );
        assert_eq!(
            probe(8080, DROP_TIMEOUT),
            denied,
            "end of tier (reject: {reject})"
        );
    }
}
