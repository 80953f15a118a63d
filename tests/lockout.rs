//! The lockout guard (`hostpolicy/v1` ManagementAccess): a configuration that would block a declared
//! management flow is refused by every path (`check`, `render`, `apply`, the daemon through
//! `pipeline::build`) with an error naming the ManagementAccess, the HostEndpoint and the blocking policy
//! rule with its file:line:col; it is accepted once a policy (or a failsafe rule) allows the flow.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::netns::require_root;
use common::topology::{fresh_ns, nft_json_exact, output_text, Hpd};

/// SSH from the admin network 198.51.100.0/24 to node1's eth0 (192.0.2.1). Failsafe lists emptied, so
/// only policies decide.
const BASE: &str = "- apiVersion: projectcalico.org/v3
  kind: FelixConfiguration
  metadata: {name: default}
  spec: {failsafeInboundHostPorts: [], failsafeOutboundHostPorts: []}
- apiVersion: projectcalico.org/v3
  kind: HostEndpoint
  metadata: {name: hep-eth0, labels: {role: web}}
  spec: {node: node1, interfaceName: eth0, expectedIPs: [192.0.2.1]}
- apiVersion: hostpolicy/v1
  kind: ManagementAccess
  metadata: {name: admin-ssh}
  spec:
    sources: [198.51.100.0/24]
    ports: [{protocol: TCP, port: 22}]
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: egress}
  spec: {selector: all(), egress: [{action: Allow}]}
";

/// Web only, from anywhere, and a deny for the rest: SSH is blocked by the explicit Deny (line 6).
const WEB_ONLY: &str = "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: web-only}
  spec:
    selector: \"role == 'web'\"
    ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}, {action: Deny}]
";

/// Lets the admin network in (order 1: before web-only).
const ADMIN: &str = "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: admin}
  spec:
    order: 1
    selector: all()
    ingress: [{action: Allow, protocol: TCP, source: {nets: [198.51.100.0/24]}, destination: {ports: [22]}}]
";

struct Conf(PathBuf);

impl Conf {
    fn new(files: &[(&str, &str)]) -> Conf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "lockout-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Conf(dir)
    }

    fn run(&self, cmd: &[&str]) -> Output {
        let state = self.0.join(".state");
        Command::new(env!("CARGO_BIN_EXE_hostpolicyd"))
            .current_dir(&self.0)
            .args([
                "--config-dir",
                ".",
                "--node-name",
                "node1",
                "--table",
                "hp-lockout-test",
            ])
            .arg("--state-dir")
            .arg(&state)
            .arg("--runtime-dir")
            .arg(&state)
            .args(cmd)
            .output()
            .expect("run hostpolicyd")
    }
}

impl Drop for Conf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn check_refuses_a_blocked_management_flow_and_names_the_rule() {
    let c = Conf::new(&[("base.yaml", BASE), ("web.yaml", WEB_ONLY)]);
    for cmd in [&["check"][..], &["render"], &["check", "--strict"]] {
        let out = c.run(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{cmd:?} must refuse\n{}",
            output_text(&out)
        );
        let line = err
            .lines()
            .find(|l| l.contains("ManagementAccess 'admin-ssh'"))
            .unwrap_or_else(|| panic!("{err}"));
        // The error sits at the ManagementAccess and names the HEP and the rule that blocks the flow.
        assert!(line.starts_with("./base.yaml:9:3: error: ManagementAccess 'admin-ssh': TCP port 22 from 198.51.100.0/24 is not allowed in on HostEndpoint 'hep-eth0' (interface eth0)"), "{line}");
        assert!(line.contains("by GlobalNetworkPolicy 'web-only', policy web-only ingress rule 2: Deny at ./web.yaml:6:75"), "{line}");
    }
    let c = Conf::new(&[
        ("base.yaml", BASE),
        ("web.yaml", WEB_ONLY),
        ("admin.yaml", ADMIN),
    ]);
    let out = c.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
}

/// With no policy for ingress at all, the default deny blocks it (the message says so).
#[test]
fn default_deny_blocks_and_an_allow_policy_accepts() {
    let c = Conf::new(&[("base.yaml", BASE)]);
    let out = c.run(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(err.contains("by the default: no policy applies to ingress here; no profile allows: default deny at ./base.yaml:5:3"), "{err}");
    let c = Conf::new(&[("base.yaml", BASE), ("admin.yaml", ADMIN)]);
    assert_eq!(c.run(&["check"]).status.code(), Some(0));
}

/// Tiers spec §3.2: the admin policy in the default tier allows SSH, but an earlier tier decides first: a
/// Deny there, or its end-of-tier drop when it does not pass the flow on, blocks management access, and
/// `check` names the tier.
#[test]
fn an_earlier_tier_that_blocks_is_found() {
    let tier = "- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {order: 100}}\n";
    let guard = |rules: &str| {
        format!("{tier}- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: guard}}, spec: {{tier: platform, selector: all(), ingress: [{rules}]}}}}\n")
    };
    let passes = guard("{action: Pass}");
    let c = Conf::new(&[
        ("base.yaml", BASE),
        ("admin.yaml", ADMIN),
        ("tier.yaml", &passes),
    ]);
    assert_eq!(
        c.run(&["check"]).status.code(),
        Some(0),
        "{}",
        output_text(&c.run(&["check"]))
    );
    for (rules, why) in [
        (
            "{action: Deny, source: {nets: [198.51.100.0/25]}}, {action: Pass}",
            "by GlobalNetworkPolicy 'guard' in tier platform, policy guard (tier platform) ingress rule 1: Deny at ./tier.yaml:2:",
        ),
        (
            "{action: Pass, protocol: TCP, destination: {ports: [80]}}",
            "by the default: end of tier platform: no policy allowed, denied or passed ingress: defaultAction Deny drops it at ./tier.yaml:1:3; policies consulted: 'guard' in tier platform",
        ),
    ] {
        let text = guard(rules);
        let c = Conf::new(&[("base.yaml", BASE), ("admin.yaml", ADMIN), ("tier.yaml", &text)]);
        let out = c.run(&["check"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
        assert!(err.contains("ManagementAccess 'admin-ssh': TCP port 22 from 198.51.100.0/24 is not allowed in"), "{err}");
        assert!(err.contains(why), "{err}");
    }
}

/// Failsafe rules run before any policy: SSH in the failsafe list keeps the flow open, even through a
/// preDNAT Deny of everything.
#[test]
fn failsafe_counts_as_allowing() {
    let deny_all = "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: deny-all}
  spec: {preDNAT: true, applyOnForward: true, selector: all(), ingress: [{action: Deny}]}
";
    let with_failsafe = BASE.replace(
        "failsafeInboundHostPorts: []",
        "failsafeInboundHostPorts: [{protocol: TCP, port: 22}]",
    );
    let c = Conf::new(&[("base.yaml", &with_failsafe), ("deny.yaml", deny_all)]);
    let out = c.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let c = Conf::new(&[("base.yaml", BASE), ("deny.yaml", deny_all)]);
    let out = c.run(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("in the preDNAT stage by GlobalNetworkPolicy 'deny-all'"),
        "{err}"
    );
}

/// The same guard in the library path the daemon and the engine use.
#[test]
fn pipeline_build_refuses() {
    let loaded = hostpolicyd::config::load::load_sources(&[
        ("base.yaml".into(), BASE.into()),
        ("web.yaml".into(), WEB_ONLY.into()),
    ]);
    let built = hostpolicyd::pipeline::build(loaded, "node1", &[], "hostpolicy", false);
    let invalid = built.expect_err("the lockout guard refuses");
    let errors: Vec<String> = invalid
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("'web-only'"), "{errors:?}");
    // Another node: the HostEndpoint is not this node's, nothing to guard.
    let loaded = hostpolicyd::config::load::load_sources(&[
        ("base.yaml".into(), BASE.into()),
        ("web.yaml".into(), WEB_ONLY.into()),
    ]);
    assert!(hostpolicyd::pipeline::build(loaded, "node2", &[], "hostpolicy", false).is_ok());
}

/// `apply` in a namespace: the refused configuration changes nothing in the kernel (exit 1, same table,
/// same handles); the corrected one applies.
#[test]
fn apply_refuses_and_keeps_the_table() {
    if !require_root("apply_refuses_and_keeps_the_table") {
        return;
    }
    let ns = fresh_ns("lockout");
    let hpd = Hpd::new("node1");
    hpd.set_config(&[("base.yaml", BASE), ("admin.yaml", ADMIN)]);
    hpd.must_apply(&ns);
    let before = nft_json_exact(&ns, "inet", "hostpolicy");
    assert!(before.is_some(), "no table after the first apply");
    hpd.set_config(&[("base.yaml", BASE), ("web.yaml", WEB_ONLY)]);
    let out = hpd.apply(&ns);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ManagementAccess 'admin-ssh'"),
        "{}",
        output_text(&out)
    );
    assert_eq!(
        nft_json_exact(&ns, "inet", "hostpolicy"),
        before,
        "the refused configuration changed the table"
    );
    hpd.set_config(&[
        ("base.yaml", BASE),
        ("web.yaml", WEB_ONLY),
        ("admin.yaml", ADMIN),
    ]);
    hpd.must_apply(&ns);
}
