//! Connectivity checks and rollback in the kernel (issue 4): a ConnectivityCheck to a TCP service in
//! another namespace, then a policy that blocks it ⇒ the daemon rolls back, the service stays reachable,
//! the rollback is logged, and the same contents are not retried. `hostpolicyd apply` does the same in one
//! shot (first start: our table is removed again) and exits 2.
//!
//! Topology: the standard plan; the service listens in lan0 on 192.0.2.2:9000, the node is 192.0.2.1.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::daemon::{
    allow_egress, deny_egress, hep_eth0, table, tcp_check, write_ansible, Daemon,
};
use common::netns::require_root;
use common::probe::{tcp_connect, Outcome, Servers};
use common::topology::{output_text, Topology};

const SERVICE: &str = "192.0.2.2";
const PORT: u16 = 9000;

/// The node reaches the service (a TCP handshake from 192.0.2.1 to 192.0.2.2:9000).
fn service_reachable(t: &Topology) -> bool {
    let dst = SocketAddr::new(SERVICE.parse().unwrap(), PORT);
    match tcp_connect(
        &t.node,
        "192.0.2.1:0".parse().unwrap(),
        dst,
        Duration::from_millis(1500),
    ) {
        Outcome::Ok => true,
        Outcome::Timeout => false,
        other => panic!("probe to the service: {other:?}"),
    }
}

fn config(t: &Topology) {
    let dir = t.hpd.config_dir();
    std::fs::write(dir.join("hep.yaml"), hep_eth0()).unwrap();
    std::fs::write(dir.join("allow-egress.yaml"), allow_egress()).unwrap();
    std::fs::write(dir.join("check.yaml"), tcp_check("svc", SERVICE, PORT)).unwrap();
}

#[test]
fn a_policy_that_breaks_a_check_is_rolled_back_and_not_retried() {
    if !require_root("a_policy_that_breaks_a_check_is_rolled_back_and_not_retried") {
        return;
    }
    let t = Topology::standard();
    let _service = Servers::start(&t.lan0, &[PORT], &[]);
    config(&t);
    let dir = t.hpd.config_dir();
    let d = Daemon::start(&t.node, &t.hpd, &[]);
    let s = d.wait_ready(&t.node, &t.hpd);
    assert_eq!(s["last_result"], "applied", "{s:#}");
    assert_eq!(s["checks"], serde_json::json!(["svc"]));
    let good = s["hash"].clone();
    let generation = s["generation"].clone();
    assert!(service_reachable(&t));

    // The breaking policy, dropped Ansible-style.
    write_ansible(&dir, "block.yaml", &deny_egress("block-svc", SERVICE, PORT));
    let s = d.wait_status(&t.node, &t.hpd, "the rollback", |s| {
        s["last_result"] == "rolled_back"
    });
    assert_eq!(
        s["hash"], good,
        "the previous ruleset is in force again: {s:#}"
    );
    assert_eq!(s["generation"], generation);
    assert_eq!(
        s["last_rollback"]["failed_checks"][0]["name"], "svc",
        "{s:#}"
    );
    assert_eq!(
        s["last_rollback"]["policies"],
        serde_json::json!(["block-svc"]),
        "{s:#}"
    );
    assert_eq!(s["applies"], 2, "one good apply, one rejected: {s:#}");
    assert!(service_reachable(&t), "the service stays reachable");
    assert!(
        table(&t.node).unwrap().contains(good.as_str().unwrap()),
        "the kernel holds the good table"
    );
    let line = d.wait_log(&["rolled_back", "svc"]);
    eprintln!("logged: {line}");
    assert!(line.contains("block-svc"), "{line}");
    d.wait_log(&["check_failed", "svc"]);

    // The same contents are not retried: a SIGHUP, `hostpolicyd reload`, the file rewritten as it is.
    d.signal("HUP");
    d.wait_log(&["not_retried", "SIGHUP"]);
    let (code, text, _) = Daemon::reload(&t.node, &t.hpd);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("not retried"), "{text}");
    let r0 = d.wait_status(&t.node, &t.hpd, "idle", |s| s["daemon"]["busy"] == false)["daemon"]
        ["reloads"]
        .as_u64()
        .unwrap();
    write_ansible(&dir, "block.yaml", &deny_egress("block-svc", SERVICE, PORT));
    let s = d.wait_status(&t.node, &t.hpd, "the rewrite's reload", |s| {
        s["daemon"]["reloads"].as_u64() == Some(r0 + 1) && s["daemon"]["busy"] == false
    });
    assert_eq!(s["last_result"], "not_retried", "{s:#}");
    assert_eq!(
        s["applies"],
        2,
        "no second apply attempt: {s:#}\nlog:\n{}",
        d.log()
    );
    assert!(service_reachable(&t));

    // Changed contents are tried again (and this one is harmless).
    write_ansible(
        &dir,
        "block.yaml",
        &deny_egress("block-other", SERVICE, PORT + 1),
    );
    let s = d.wait_status(&t.node, &t.hpd, "the harmless change", |s| {
        s["last_result"] == "applied" && s["hash"] != good
    });
    assert_eq!(s["applies"], 3, "{s:#}");
    assert!(service_reachable(&t));
}

#[test]
fn apply_one_shot_rolls_back_to_no_table_and_exits_2() {
    if !require_root("apply_one_shot_rolls_back_to_no_table_and_exits_2") {
        return;
    }
    let t = Topology::standard();
    let _service = Servers::start(&t.lan0, &[PORT], &[]);
    config(&t);
    std::fs::write(
        t.hpd.config_dir().join("block.yaml"),
        deny_egress("block-svc", SERVICE, PORT),
    )
    .unwrap();
    assert!(table(&t.node).is_none());
    let out = t.hpd.apply(&t.node);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("svc") && text.contains("rolled back"),
        "{text}"
    );
    assert!(
        table(&t.node).is_none(),
        "first start: our table is removed again\n{text}"
    );
    assert!(service_reachable(&t));

    // Without the breaking policy the same command applies and exits 0; the state records it.
    std::fs::remove_file(t.hpd.config_dir().join("block.yaml")).unwrap();
    let out = t.hpd.apply(&t.node);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(table(&t.node).is_some());
    let status = t.hpd.run(&t.node, &["status", "--json"]);
    assert_eq!(status.status.code(), Some(3), "no daemon: exit 3");
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["generation"], 1, "{s:#}");
    assert_eq!(
        s["last_rollback"]["failed_checks"][0]["name"], "svc",
        "{s:#}"
    );
}
