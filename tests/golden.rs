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
