//! The connectivity-check prober (src/probe.rs) against real sockets in network namespaces: TCP connect
//! (open, refused with and without acceptRefused, silently dropped), ICMP and ICMPv6 echo (through a raw
//! socket here: the namespace's ping_group_range is the kernel default, which allows no datagram ICMP
//! socket), and all checks of a round at once.
//!
//! Addresses: prober 192.0.2.1 / 2001:db8::1, target 192.0.2.2 / 2001:db8::2, 192.0.2.99 is on-link but
//! absent (nothing answers).

mod common;

use std::time::{Duration, Instant};

use hostpolicyd::config::model::{CheckTarget, ConnectivityCheck, Pos};
use hostpolicyd::host::probe::run_all;

use common::netns::{require_root, veth, NetNs};
use common::probe::Servers;

fn check(name: &str, target: CheckTarget, accept_refused: bool) -> ConnectivityCheck {
    ConnectivityCheck {
        name: name.into(),
        pos: Pos::default(),
        node: None,
        target,
        timeout: Duration::from_secs(1),
        accept_refused,
    }
}

fn tcp(host: &str, port: u16) -> CheckTarget {
    CheckTarget::Tcp {
        host: host.parse().unwrap(),
        port,
    }
}

fn icmp(host: &str) -> CheckTarget {
    CheckTarget::Icmp {
        host: host.parse().unwrap(),
    }
}

#[test]
fn tcp_and_icmp_checks_run_at_once() {
    if !require_root("tcp_and_icmp_checks_run_at_once") {
        return;
    }
    let a = NetNs::new("prober");
    let b = NetNs::new("target");
    veth(&a, "eth0", &b, "eth0");
    a.exec_ok("ip", ["addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    a.exec_ok(
        "ip",
        ["addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad"],
    );
    b.exec_ok("ip", ["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    b.exec_ok(
        "ip",
        ["addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad"],
    );
    let _servers = Servers::start(&b, &[9000], &[]);

    let checks = vec![
        check("open", tcp("192.0.2.2", 9000), false),
        check("open6", tcp("2001:db8::2", 9000), false),
        check("refused", tcp("192.0.2.2", 9001), false),
        check("refused-accepted", tcp("192.0.2.2", 9001), true),
        check("dropped", tcp("192.0.2.99", 9000), false),
        check("ping", icmp("192.0.2.2"), false),
        check("ping6", icmp("2001:db8::2"), false),
        check("ping-nobody", icmp("192.0.2.99"), false),
        check("ping6-nobody", icmp("2001:db8::99"), false),
    ];
    let start = Instant::now();
    let results = a.run(|| run_all(&checks));
    let elapsed = start.elapsed();
    for r in &results {
        eprintln!(
            "{:<18} {:<22} {:<5} {}",
            r.name, r.target, r.passed, r.detail
        );
    }
    let passed: Vec<(&str, bool)> = results
        .iter()
        .map(|r| (r.name.as_str(), r.passed))
        .collect();
    assert_eq!(
        passed,
        [
            ("open", true),
            ("open6", true),
            ("refused", false),
            ("refused-accepted", true),
            ("dropped", false),
            ("ping", true),
            ("ping6", true),
            ("ping-nobody", false),
            ("ping6-nobody", false),
        ]
    );
    // Four checks wait for their full 1 s timeout; one after the other they would take at least 4 s.
    eprintln!(
        "{} checks, 4 of them timing out after 1 s each, took {elapsed:?}",
        checks.len()
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "the checks did not run at once: {elapsed:?}"
    );
}
