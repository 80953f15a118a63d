//! Self-test of the kernel-test harness (tests/common): runs without `hostpolicyd`.
//!
//! - With no ruleset every probe kind passes (TCP, TCP+data, UDP, ICMP, ICMPv6, forwarded, NodePort DNAT to
//!   the pod, cluster peer) — so the topology, routes and servers are right.
//! - A hand-written nft drop rule in the node makes exactly the matching probe report DROP, within the
//!   DROP timeout; the other probes still pass.
//! - Namespaces are deleted after a test, also when it panics.
//!
//! Addresses: the standard plan (eth0 192.0.2.0/24, node .1; eth1 198.51.100.0/24, node .45) plus IPv6
//! 2001:db8::/64 on eth0 (node ::1, client ::2), a pod 203.0.113.200 behind eth2 (node side 203.0.113.129),
//! and a peer 192.0.2.5 on the eth0 segment.

mod common;

use common::netns::{require_root, NetNs};
use common::probe::{Report, Servers, ALLOW, DROP};
use common::topology::{fresh_ns, kube_proxy_nodeport, nft_load, Plan, Topology};

#[test]
fn harness_probes_pass_without_rules_and_see_a_handwritten_drop() {
    if !require_root("harness_probes_pass_without_rules_and_see_a_handwritten_drop") {
        return;
    }
    let mut plan = Plan::standard();
    plan.eth0.push("2001:db8::1/64");
    plan.lan0.push("2001:db8::2/64");
    plan.pod = Some(("203.0.113.129", "203.0.113.200"));
    plan.peer = vec!["192.0.2.5/24"];
    let t = Topology::build(plan);
    let _node = Servers::start(&t.node, &[22, 80, 8080], &["192.0.2.1:5353"]);
    let _lan0 = Servers::start(&t.lan0, &[443], &["192.0.2.53:53"]);
    let _lan1 = Servers::start(&t.lan1, &[22], &[]);
    let _pod = Servers::start(t.pod(), &[8080], &["203.0.113.200:8080"]);
    let _peer = Servers::start(t.peer(), &[10250], &[]);
    kube_proxy_nodeport(&t.node, "192.0.2.1", 31852, "203.0.113.200", 8080);

    let why = "harness: no ruleset";
    let mut r = Report::new("harness, no ruleset", &[&t.node]);
    r.tcp("H1", ALLOW, why, &t.lan0, "192.0.2.2", "192.0.2.1:8080");
    r.tcp_echo("H2", ALLOW, why, &t.lan0, "203.0.113.7", "192.0.2.1:80");
    r.udp("H3", ALLOW, why, &t.lan0, "192.0.2.100", "192.0.2.1:5353");
    r.udp("H4", ALLOW, why, &t.node, "192.0.2.1", "192.0.2.53:53");
    r.ping("H5", ALLOW, why, &t.lan0, "192.0.2.2", "192.0.2.1");
    r.ping("H6", ALLOW, why, &t.lan0, "2001:db8::2", "2001:db8::1");
    r.tcp("H7", ALLOW, why, &t.lan0, "2001:db8::2", "[2001:db8::1]:22");
    r.tcp(
        "H8",
        ALLOW,
        "forwarded eth0 -> eth1",
        &t.lan0,
        "192.0.2.50",
        "198.51.100.99:22",
    );
    r.tcp_echo(
        "H9",
        ALLOW,
        "NodePort DNAT to the pod",
        &t.lan0,
        "203.0.113.7",
        "192.0.2.1:31852",
    );
    r.udp(
        "H10",
        ALLOW,
        "NodePort DNAT to the pod (UDP)",
        &t.lan0,
        "203.0.113.7",
        "192.0.2.1:31852",
    );
    r.tcp(
        "H11",
        ALLOW,
        "cluster peer -> node",
        t.peer(),
        "192.0.2.5",
        "192.0.2.1:22",
    );
    r.tcp(
        "H12",
        ALLOW,
        "external client -> cluster peer",
        &t.lan0,
        "203.0.113.7",
        "192.0.2.5:10250",
    );
    r.tcp(
        "H13",
        ALLOW,
        "node -> external",
        &t.node,
        "192.0.2.1",
        "192.0.2.2:443",
    );
    r.finish();

    nft_load(
        &t.node,
        "table inet harness-selftest {
  chain input { type filter hook input priority filter; policy accept;
    tcp dport 8080 drop
    udp dport 5353 drop
    icmp type echo-request drop
    icmpv6 type echo-request drop
  }
  chain forward { type filter hook forward priority filter; policy accept;
    tcp dport 22 drop
  }
}
",
    );
    let why = "harness: hand-written nft drop";
    let mut r = Report::new("harness, hand-written drops", &[&t.node]);
    r.tcp("D1", DROP, why, &t.lan0, "192.0.2.2", "192.0.2.1:8080");
    r.tcp(
        "D2",
        ALLOW,
        "not matched by the drop rules",
        &t.lan0,
        "192.0.2.2",
        "192.0.2.1:80",
    );
    r.udp("D3", DROP, why, &t.lan0, "192.0.2.100", "192.0.2.1:5353");
    r.ping("D4", DROP, why, &t.lan0, "192.0.2.2", "192.0.2.1");
    r.ping("D5", DROP, why, &t.lan0, "2001:db8::2", "2001:db8::1");
    r.tcp("D6", DROP, why, &t.lan0, "192.0.2.50", "198.51.100.99:22");
    r.tcp(
        "D7",
        ALLOW,
        "not matched by the drop rules",
        &t.lan0,
        "2001:db8::2",
        "[2001:db8::1]:22",
    );
    r.tcp_echo(
        "D8",
        ALLOW,
        "not matched by the drop rules",
        &t.lan0,
        "203.0.113.7",
        "192.0.2.1:31852",
    );
    r.finish();
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

#[test]
fn harness_namespaces_are_deleted_even_on_panic() {
    if !require_root("harness_namespaces_are_deleted_even_on_panic") {
        return;
    }
    let name = {
        let ns = fresh_ns("cleanup");
        assert!(netns_exists(ns.name()));
        ns.name().to_string()
    };
    assert!(!netns_exists(&name), "{name} left behind after drop");

    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t = Topology::standard();
        names.lock().unwrap().extend([
            t.node.name().to_string(),
            t.lan0.name().to_string(),
            t.lan1.name().to_string(),
        ]);
        let _s = Servers::start(&t.node, &[8080], &[]);
        // a panic inside a namespace thread too
        t.node
            .run(|| panic!("deliberate panic inside the namespace"));
    }));
    assert!(result.is_err(), "the closure should have panicked");
    for n in names.lock().unwrap().iter() {
        assert!(!netns_exists(n), "{n} left behind after a panic");
    }
    // NetNs::new itself still works afterwards
    let ns = NetNs::new("after");
    assert!(netns_exists(ns.name()));
}
