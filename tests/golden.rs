//! Golden tests: YAML in, nft text out (spec §7 T1–T8), no root needed.
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites `expected.nft` after a deliberate change.

use std::path::Path;

use hostpolicyd::nft::render::render;
use hostpolicyd::pipeline::build_dir;
use hostpolicyd::resolve::Interface;

fn golden(case: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case);
    // Fixed interfaces so that the output does not depend on the machine running the test.
    let ifaces = vec![
        Interface {
            name: "eth0".into(),
            addrs: vec![],
        },
        Interface {
            name: "eth1".into(),
            addrs: vec![],
        },
    ];
    let compiled = build_dir(&dir, "node1", &ifaces, "hostpolicy")
        .unwrap_or_else(|inv| panic!("{case}: invalid: {:?}", inv.diagnostics));
    let text = render(&compiled.ruleset);
    let expected_path = dir.join("expected.nft");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            expected_path.display()
        )
    });
    if text != expected {
        let diff: Vec<String> = text
            .lines()
            .zip(expected.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n  got:      {a}\n  expected: {b}", i + 1))
            .collect();
        panic!(
            "{case}: render differs from expected.nft ({} vs {} lines)\n{}",
            text.lines().count(),
            expected.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn t1_hep_without_policy() {
    golden("t1");
}
#[test]
fn t2_types_inference() {
    golden("t2");
}
#[test]
fn t3_order_and_ties() {
    golden("t3");
}
#[test]
fn t4_pass_log_profiles() {
    golden("t4");
}
#[test]
fn t5_node_port_howto() {
    golden("t5");
}
#[test]
fn t6_prednat_no_default_drop() {
    golden("t6");
}
#[test]
fn t7_apply_on_forward_router() {
    golden("t7");
}
#[test]
fn t8_do_not_track() {
    golden("t8");
}
#[test]
fn tiers_order_pass_and_end_of_tier() {
    golden("tiers");
}
#[test]
fn tiers_in_every_stage() {
    golden("tiers-stages");
}

#[allow(dead_code)]
#[path = "common/scenarios.rs"]
mod scenarios;

/// Every variant of spec §7's scenarios that the kernel, agreement and explain tests run is still a valid
/// configuration for node1 (and the one that must not be, is not): a golden file that changes breaks
/// here, without root, rather than in a kernel test.
#[test]
fn scenario_variants_are_valid_configurations() {
    use scenarios as sc;
    let valid = [
        sc::t1(),
        sc::t1_default_allow(),
        sc::t2(),
        sc::t2_types_ingress_egress(),
        sc::t2_egress_rule(),
        sc::t3(),
        sc::t3_without_order(),
        sc::t3_z_allow(),
        sc::t4(),
        sc::t4_default_allow(),
        sc::t5(),
        sc::t5_without_expected_ips(),
        sc::t5_without_label(),
        sc::t5_node_selective("nodeport-external-ingress == 'true'"),
        sc::t6(),
        sc::t7(),
        sc::t7_without_apply_on_forward(),
        sc::t8(),
        sc::t8_without_egress(),
        sc::t8_wildcard(),
    ];
    let build = |s: &sc::Scenario| {
        let loaded = hostpolicyd::config::load::load_sources(&s.files);
        hostpolicyd::pipeline::build(loaded, "node1", &[], "hostpolicy", false)
    };
    for s in &valid {
        if let Err(inv) = build(s) {
            panic!("{}: {:?}\n{:#?}", s.case, inv.diagnostics, s.files);
        }
    }
    let invalid = [
        sc::t5_node_selective("nodeport-external-ingress: true"),
        sc::t6_apply_on_forward(""),
        sc::t6_with("egress: [{action: Allow}]"),
        sc::t6_with("types: [Ingress, Egress]"),
        sc::t6_with("doNotTrack: true"),
    ];
    for s in &invalid {
        assert!(
            build(s).is_err(),
            "{} should be refused:\n{:#?}",
            s.case,
            s.files
        );
    }
}

/// Issue 20 item 10: failsafe `net` families as Felix renders them (the citation is in the case's
/// config.yaml): no `net` or `net: ""` opens both families, `0.0.0.0/0` IPv4 only, `::/0` IPv6 only.
#[test]
fn failsafe_net_families_follow_felix() {
    golden("failsafe-nets");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/failsafe-nets/expected.nft"),
    )
    .unwrap();
    let chain: Vec<&str> = text
        .split("chain failsafe-in {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let with = |port: &str| -> Vec<&str> {
        chain
            .iter()
            .copied()
            .filter(|l| l.contains(&format!("dport {port} ")))
            .collect()
    };
    // No family match at all: one rule for both families.
    assert!(with("22").iter().all(|l| !l.contains("saddr")), "{chain:?}");
    assert!(with("68").iter().all(|l| !l.contains("saddr")), "{chain:?}");
    assert_eq!(with("2222").len(), 1, "{chain:?}");
    assert!(
        with("2222")[0].starts_with("ip saddr 0.0.0.0/0 "),
        "{chain:?}"
    );
    assert_eq!(with("2223").len(), 1, "{chain:?}");
    assert!(with("2223")[0].starts_with("ip6 saddr ::/0 "), "{chain:?}");
}
