//! IP-matched HostEndpoints follow addresses (issue 4, spec §3.1): a HEP without `interfaceName`, with
//! `expectedIPs` only, governs the interfaces that carry one of those addresses. The daemon follows
//! rtnetlink address changes: adding the expected address to eth0 starts enforcement there, removing it
//! stops it. `status` names the HostEndpoint while it is inactive (issue 20 item 8), with a daemon and
//! without (the record it left).
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
    // Issue 20 item 8: status says which HostEndpoint of this node is inactive, and why.
    let inactive = serde_json::json!([{
        "name": "hep-ip",
        "reason": "none of its expectedIPs (203.0.113.1) is an address of an interface of this node"
    }]);
    assert_eq!(s["inactive_endpoints"], inactive, "{s:#}");
    // The key and its fields are the ones hostpolicyd(8) names.
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/hostpolicyd.8")).unwrap();
    assert!(
        man.contains(".RB ( inactive_endpoints\nin JSON: a list of\n.BR name \" and \" reason ),"),
        "hostpolicyd(8) names the key of status --json"
    );
    let text = String::from_utf8_lossy(&t.hpd.run(&t.node, &["status"]).stdout).into_owned();
    assert!(
        text.contains("inactive host endpoints (they govern no interface):\n  hep-ip: none of its expectedIPs (203.0.113.1) is an address of an interface of this node\n"),
        "{text}"
    );

    t.node
        .exec_ok("ip", ["addr", "add", "203.0.113.1/32", "dev", "eth0"]);
    wait_port(&t, &d, 8081, false);
    assert!(open(&t, 8080), "allow-8080 applies to the HEP now on eth0");
    let s = d.wait_status(&t.node, &t.hpd, "hep-ip on eth0", |s| {
        s["endpoints"][0]["interfaces"] == serde_json::json!(["eth0"])
    });
    assert_eq!(s["inactive_endpoints"], serde_json::json!([]), "{s:#}");
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
    let s = d.wait_status(&t.node, &t.hpd, "hep-ip inactive again", |s| {
        s["inactive_endpoints"] == inactive
    });
    // Without the daemon, status shows the record it left, inactive endpoints included.
    drop(d);
    let o = t.hpd.run(&t.node, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(3), "no daemon");
    let recorded: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        recorded["inactive_endpoints"], inactive,
        "{recorded:#}\nwhile running: {s:#}"
    );
}
