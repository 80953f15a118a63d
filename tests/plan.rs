//! `hostpolicyd plan` and `explain --against` as users call them: the binary on two directories, no
//! root, no kernel (issue 15). Golden text output in `tests/golden/plan/CASE/expected.txt` (old and new
//! configurations in `old/` and `new/`); `UPDATE_GOLDEN=1 cargo test --test plan` rewrites them after a
//! deliberate change (review the diff). The JSON contract and the exit statuses are checked field by
//! field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/plan")
        .join(case)
}

/// `hostpolicyd --config-dir new ARGS...` run in the case's directory (so that file names in the
/// output are `new/...` and `old/...`).
fn run(case: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostpolicyd"))
        .current_dir(case_dir(case))
        .args([
            "--strict-modes",
            "no",
            "--config-dir",
            "new",
            "--node-name",
            "node1",
        ])
        .args(args)
        .env_remove("HOSTPOLICYD_NODE_NAME")
        .output()
        .expect("run hostpolicyd")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn golden(case: &str, args: &[&str]) {
    let o = run(case, args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{case}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = stdout(&o);
    let path = case_dir(case).join("expected.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        text, expected,
        "{case}: the text output differs from expected.txt"
    );
}

#[test]
fn golden_a_new_allow() {
    golden("metrics", &["plan", "--against", "old"]);
}

#[test]
fn golden_rename_and_move_change_no_verdict() {
    golden("rename", &["plan", "--against", "old"]);
    assert!(
        stdout(&run("rename", &["plan", "--against", "old"])).contains("\nno verdict changes\n")
    );
}

#[test]
fn golden_a_node_port_moved_between_nodes() {
    golden("nodeport", &["plan", "--against", "old", "--all-nodes"]);
}

fn plan_json(case: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["plan", "--json", "--against", "old"];
    args.extend_from_slice(extra);
    let o = run(case, &args);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{case}: not JSON ({e}): {}\n{}",
            stdout(&o),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code(), v)
}

/// The contract: one object, `nodes`, `resources`, `verdict_changes` with every field.
#[test]
fn json_contract() {
    let (code, v) = plan_json("metrics", &[]);
    assert_eq!(code, Some(0));
    assert_eq!(v["nodes"], json!(["node1"]));
    assert_eq!(v["resources"]["removed"], json!([]));
    assert_eq!(v["resources"]["changed"], json!([]));
    assert_eq!(
        v["resources"]["added"],
        json!([{"kind": "GlobalNetworkPolicy", "name": "open-metrics", "file": "new/30-metrics.yaml", "line": 2}])
    );
    let changes = v["verdict_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{v:#}");
    let r = &changes[0];
    for (k, want) in [
        ("node", json!("node1")),
        ("interface", json!("eth0")),
        ("host_endpoint", json!("node1-eth0")),
        ("direction", json!("ingress")),
        ("proto", json!("tcp")),
        ("src", json!(["203.0.113.0/24"])),
        ("dst", json!(["192.0.2.1/32"])),
        ("dport", json!(["9100"])),
        ("before", json!("deny")),
        ("after", json!("allow")),
    ] {
        assert_eq!(r[k], want, "{k} in {r:#}");
    }
    let by = &r["before_decided_by"];
    for (k, want) in [
        ("kind", json!("end-of-tier")),
        ("tier", json!("default")),
        ("policy", Value::Null),
        ("rule", Value::Null),
        ("file", Value::Null),
        ("line", Value::Null),
    ] {
        assert_eq!(by[k], want, "before_decided_by.{k} in {by:#}");
    }
    let by = &r["after_decided_by"];
    for (k, want) in [
        ("kind", json!("policy")),
        ("tier", json!("default")),
        ("policy", json!("open-metrics")),
        ("rule", json!(0)),
        ("file", json!("new/30-metrics.yaml")),
        ("line", json!(9)),
    ] {
        assert_eq!(by[k], want, "after_decided_by.{k} in {by:#}");
    }
}

#[test]
fn exit_code_4_only_when_a_verdict_changes() {
    assert_eq!(plan_json("metrics", &["--exit-code"]).0, Some(4));
    assert_eq!(plan_json("metrics", &[]).0, Some(0));
    // Resources changed, no verdict: 0.
    let (code, v) = plan_json("rename", &["--exit-code"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["verdict_changes"], json!([]));
    assert_eq!(v["resources"]["added"][0]["name"], json!("metrics"));
}

#[test]
fn all_nodes_name_their_node() {
    let (code, v) = plan_json("nodeport", &["--all-nodes", "--exit-code"]);
    assert_eq!(code, Some(4));
    assert_eq!(v["nodes"], json!(["node1", "node2"]));
    let ingress: Vec<(&str, &str, &str, &Value)> = v["verdict_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["direction"] == "ingress")
        .map(|r| {
            (
                r["node"].as_str().unwrap(),
                r["before"].as_str().unwrap(),
                r["after"].as_str().unwrap(),
                &r["dst"],
            )
        })
        .collect();
    assert_eq!(
        ingress,
        [
            ("node1", "allow", "deny", &json!(["198.51.100.4/32"])),
            ("node2", "deny", "allow", &json!(["198.51.100.5/32"])),
        ]
    );
}

/// A temporary copy of a case, to be edited.
fn scratch(case: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hostpolicyd-plan-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for side in ["old", "new"] {
        std::fs::create_dir_all(dir.join(side)).unwrap();
        for f in std::fs::read_dir(case_dir(case).join(side)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dir.join(side).join(f.file_name())).unwrap();
        }
    }
    dir
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostpolicyd"))
        .current_dir(dir)
        .args([
            "--strict-modes",
            "no",
            "--config-dir",
            "new",
            "--node-name",
            "node1",
        ])
        .args(args)
        .output()
        .expect("run hostpolicyd")
}

#[test]
fn an_invalid_configuration_is_exit_1_on_either_side() {
    let dir = scratch("metrics", "invalid");
    std::fs::write(dir.join("new/40-bad.yaml"), "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: bad}\nspec: {selector: all(), ingress: [{action: Maybe}]}\n").unwrap();
    let o = run_in(&dir, &["plan", "--against", "old"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("new/40-bad.yaml:4:"), "{err}");
    assert!(o.stdout.is_empty());
    std::fs::rename(dir.join("new/40-bad.yaml"), dir.join("old/40-bad.yaml")).unwrap();
    let o = run_in(&dir, &["plan", "--against", "old"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the old configuration in old is invalid"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// ManagementAccess flows the change would block come first, and make the exit 1 (as `check`).
#[test]
fn a_lockout_is_reported_first_and_exits_1() {
    let dir = scratch("metrics", "lockout");
    let mgmt = "apiVersion: hostpolicy/v1\nkind: ManagementAccess\nmetadata: {name: admin-ssh}\nspec: {sources: [198.51.100.0/24], ports: [{protocol: TCP, port: 2222}]}\n";
    std::fs::write(dir.join("old/60-mgmt.yaml"), mgmt).unwrap();
    std::fs::write(dir.join("new/60-mgmt.yaml"), mgmt).unwrap();
    let ssh = std::fs::read_to_string(dir.join("new/10-node.yaml")).unwrap();
    std::fs::write(
        dir.join("new/10-node.yaml"),
        ssh.replace("ports: [2222]", "ports: [2223]"),
    )
    .unwrap();
    let o = run_in(&dir, &["plan", "--against", "old"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lock = out
        .find("error: ManagementAccess 'admin-ssh'")
        .unwrap_or_else(|| panic!("{out}"));
    let changes = out.find("verdict changes:").unwrap();
    assert!(lock < changes, "{out}");
    assert!(out.contains("from 198.51.100.0/24"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explain_against_shows_both_verdicts() {
    let args = [
        "explain",
        "--against",
        "old",
        "--in",
        "eth0",
        "--src",
        "203.0.113.7",
        "--dst",
        "192.0.2.1",
        "--dport",
        "9100",
    ];
    let o = run("metrics", &args);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    let before = text.find("before (old):").unwrap();
    let after = text.find("after (new):").unwrap();
    assert!(before < after, "{text}");
    assert!(text[before..after].contains("verdict: DROP"), "{text}");
    assert!(text[after..].contains("verdict: ALLOW"), "{text}");
    assert!(
        text.ends_with("verdict: DROP -> ALLOW (changed)\n"),
        "{text}"
    );
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v: Value = serde_json::from_slice(&run("metrics", &json_args).stdout).unwrap();
    assert_eq!(
        (
            &v["before"]["verdict"],
            &v["after"]["verdict"],
            &v["changed"]
        ),
        (&json!("DROP"), &json!("ALLOW"), &json!(true))
    );
    assert_eq!(v["after"]["decided_by"]["policy"], json!("open-metrics"));
}
