//! IP-matched HostEndpoints follow addresses (issue 4, spec §3.1): a HEP without `interfaceName`, with
//! `expectedIPs` only, governs the interfaces that carry one of those addresses. The daemon follows
//! rtnetlink address changes: adding the expected address to eth0 starts enforcement there, removing it
//! stops it.
//!
//! Topology: the standard plan (node eth0 192.0.2.1/24, client 192.0.2.2); the HEP expects 203.0.113.1.

mod common;

use common::daemon::{allow_egress, allow_port, Daemon};
use common::daemon::{open, wait_port};
use common::netns::require_root;
use common::probe::Servers;
use common::topology::Topology;
use common::yaml::hep;

#[test]
fn ip_matched_hep_follows_its_address() {
    if !require_root("ip_matched_hep_follows_its_address") {
        return;
    }
    let t = Topology::standard();
    let _servers = Servers::start(&t.node, &[8080, 8081], &[]);
    let dir = t.hpd.config_dir();
    std::fs::write(
        dir.join("hep.yaml"),
        hep(
            "hep-ip",
            "node1",
            None,
            &["203.0.113.1"],
            &[("role", "web")],
            &[],
        ),
    )
    .unwrap();
    std::fs::write(dir.join("allow-egress.yaml"), allow_egress()).unwrap();
    std::fs::write(dir.join("allow-8080.yaml"), allow_port("allow-8080", 8080)).unwrap();
    let d = Daemon::start(&t.node, &t.hpd, &[]);
    let s = d.wait_ready(&t.node, &t.hpd);
    assert_eq!(s["last_result"], "applied", "{s:#}");
    assert!(
        open(&t, 8081),
        "no interface carries 203.0.113.1: eth0 is not a host endpoint"
    );

    t.node
        .exec_ok("ip", ["addr", "add", "203.0.113.1/32", "dev", "eth0"]);
    wait_port(&t, &d, 8081, false);
    assert!(open(&t, 8080), "allow-8080 applies to the HEP now on eth0");
    let s = d.wait_status(&t.node, &t.hpd, "hep-ip on eth0", |s| {
        s["endpoints"][0]["interfaces"] == serde_json::json!(["eth0"])
    });
    assert!(
        s["daemon"]["interface_updates"].as_u64().unwrap() >= 1,
        "{s:#}"
    );

    t.node
        .exec_ok("ip", ["addr", "del", "203.0.113.1/32", "dev", "eth0"]);
    wait_port(&t, &d, 8081, true);
    let s = d.wait_status(&t.node, &t.hpd, "hep-ip without interfaces", |s| {
        s["endpoints"]
            .as_array()
            .is_some_and(|e| e.is_empty() || e[0]["interfaces"] == serde_json::json!([]))
    });
    eprintln!("after removal: endpoints {}", s["endpoints"]);
}
