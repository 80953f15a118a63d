//! What an operator tripped over in a real install (issue 17), on the command line: each test runs the
//! binary (or `scripts/demo`) as an operator would and asserts what they read. Only the demo and the
//! test of how a test that needs root is skipped need root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::netns::{require_root, SKIPPED_FILE_ENV};
use common::topology::output_text;

const BIN: &str = env!("CARGO_BIN_EXE_hostpolicyd");

fn src(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn hostpolicyd(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("HOSTPOLICYD_NODE_NAME")
        .env_remove("HOSTPOLICYD_CONFIG_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("hostpolicyd")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Item 6: with the examples copied unedited on a host whose name matches no HostEndpoint, `check --strict`
/// said `valid (0 warnings)` and the daemon would have enforced nothing.
#[test]
fn check_names_the_node_it_checked_and_warns_when_no_host_endpoint_is_for_it() {
    let dir = src("etc/hostpolicy.d");
    let dir = dir.to_str().unwrap();
    let node1 = hostpolicyd(&[
        "--config-dir",
        dir,
        "--node-name",
        "node1",
        "check",
        "--strict",
    ]);
    assert_eq!(node1.status.code(), Some(0), "{}", output_text(&node1));
    assert_eq!(
        stdout(&node1),
        "valid for node node1: 1 host endpoint, 5 policies and 1 staged (0 warnings)\n"
    );
    assert_eq!(stderr(&node1), "");

    let elsewhere = hostpolicyd(&["--config-dir", dir, "--node-name", "web-7", "check"]);
    assert_eq!(
        elsewhere.status.code(),
        Some(0),
        "{}",
        output_text(&elsewhere)
    );
    assert_eq!(
        stdout(&elsewhere),
        "valid for node web-7: 0 host endpoints, 5 policies and 1 staged (1 warning)\n"
    );
    let warning = stderr(&elsewhere);
    assert!(
        warning.starts_with(&format!("{dir}/10-hostendpoints.yaml:11:3: warning: no HostEndpoint is for node 'web-7' (the HostEndpoints are for node 'node1', 'node2'): hostpolicyd enforces nothing on node 'web-7'")),
        "{warning}"
    );

    let strict = hostpolicyd(&[
        "--config-dir",
        dir,
        "--node-name",
        "web-7",
        "check",
        "--strict",
    ]);
    assert_eq!(strict.status.code(), Some(1), "{}", output_text(&strict));
    assert!(
        stderr(&strict).contains("no HostEndpoint is for node 'web-7'"),
        "{}",
        output_text(&strict)
    );

    // Files on their own are fragments of a directory: no node is checked, and none is named.
    let file = src("etc/hostpolicy.d/20-baseline.yaml");
    let fragment = hostpolicyd(&[
        "--node-name",
        "web-7",
        "check",
        "--strict",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        fragment.status.code(),
        Some(0),
        "{}",
        output_text(&fragment)
    );
    assert_eq!(stdout(&fragment), "valid (0 warnings)\n");
}

/// The options of a `--help` text, per heading: `("Options", ["--strict", "--help"])`.
fn help_sections(help: &str) -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in help.lines() {
        if let Some(heading) = line.strip_suffix(':').filter(|l| !l.starts_with(' ')) {
            sections.push((heading.to_string(), Vec::new()));
        } else if let Some((_, flags)) = sections.last_mut() {
            let words = line.split_whitespace().map(|w| w.trim_end_matches(','));
            for w in words.take_while(|w| w.starts_with('-')) {
                if w.starts_with("--") {
                    flags.push(w.to_string());
                }
            }
        }
    }
    sections
}

/// Item 17: each command's `--help` mixed the global options into its own.
#[test]
fn each_commands_help_shows_the_global_options_apart_from_its_own() {
    let global = [
        "--config-dir",
        "--node-name",
        "--table",
        "--state-dir",
        "--runtime-dir",
        "--strict-modes",
    ];
    let top = stdout(&hostpolicyd(&["--help"]));
    let commands: Vec<String> = top
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands: section")
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    assert!(commands.len() >= 8, "{commands:?}");
    let heading = hostpolicyd::cli::GLOBAL_OPTIONS;
    for command in std::iter::once(None).chain(commands.iter().map(Some)) {
        let help = match command {
            Some(c) => stdout(&hostpolicyd(&[c, "--help"])),
            None => top.clone(),
        };
        let sections = help_sections(&help);
        let flags_of = |name: &str| {
            sections
                .iter()
                .find(|(h, _)| h == name)
                .map(|(_, f)| f.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            flags_of(heading),
            global,
            "{command:?}: the global options under their own heading:\n{help}"
        );
        let own = flags_of("Options");
        assert!(
            own.contains(&"--help".to_string())
                && !own.iter().any(|f| global.contains(&f.as_str())),
            "{command:?}: Options lists the command's own options only: {own:?}\n{help}"
        );
    }
    let check = stdout(&hostpolicyd(&["check", "--help"]));
    let own = help_sections(&check);
    assert!(
        own.iter()
            .any(|(h, f)| h == "Options" && f == &["--strict", "--help"]),
        "{check}"
    );
}

/// Item 16: `explain` said "rule 1" for the second rule, while the kernel's comments said `ingress[0]`
/// for the first. Every output counts from 1 now (hostpolicyd(8) RULE NAMES); JSON keeps the 0-based
/// index. The second rule of 30-nodeport.yaml's `allow-cluster-internal-ingress-only` is its Deny
/// (line 25).
#[test]
fn every_output_counts_the_rules_of_a_policy_from_1() {
    let dir = src("etc/hostpolicy.d");
    let dir = dir.to_str().unwrap();
    let packet = [
        "--config-dir",
        dir,
        "--node-name",
        "node1",
        "explain",
        "--in",
        "eth0",
        "--src",
        "192.0.2.7",
        "--dst",
        "198.51.100.4",
        "--dport",
        "8080",
    ];
    let text = stdout(&hostpolicyd(&packet));
    let decided = format!(
        "decided by: [preDNAT] policy allow-cluster-internal-ingress-only (tier default) ingress rule 2: Deny ({dir}/30-nodeport.yaml:25:9)"
    );
    assert!(text.contains(&decided), "{text}");
    let mut json_args = packet.to_vec();
    json_args.push("--json");
    let json: serde_json::Value = serde_json::from_slice(&hostpolicyd(&json_args).stdout).unwrap();
    assert_eq!(json["decided_by"]["rule"], 1, "JSON: the index, from 0");
    assert_eq!(
        json["decided_by"]["text"],
        "policy allow-cluster-internal-ingress-only (tier default) ingress rule 2: Deny"
    );
    let yaml = std::fs::read_to_string(src("etc/hostpolicy.d/30-nodeport.yaml")).unwrap();
    assert_eq!(
        yaml.lines().nth(24).map(str::trim),
        Some("- action: Deny"),
        "line 25 is the second rule"
    );

    let rendered = stdout(&hostpolicyd(&[
        "--config-dir",
        dir,
        "--node-name",
        "node1",
        "render",
    ]));
    // With the short file name and the line (issue 20 item 7).
    for comment in [
        "comment \"allow-cluster-internal-ingress-only ingress rule 1 Allow (30-nodeport.yaml:22)\"",
        "comment \"allow-cluster-internal-ingress-only ingress rule 2 Deny (30-nodeport.yaml:25)\"",
    ] {
        assert!(rendered.contains(comment), "{comment} in:\n{rendered}");
    }
    assert!(
        !rendered.contains("ingress[") && !rendered.contains("egress["),
        "no 0-based names left:\n{rendered}"
    );

    let man = std::fs::read_to_string(src("man/hostpolicyd.8")).unwrap();
    let names = man
        .split(".SH RULE NAMES")
        .nth(1)
        .and_then(|s| s.split(".SH ").next())
        .expect("a RULE NAMES section in hostpolicyd(8)");
    assert!(names.contains("lists from 1:") && names.contains("counted from 0"));
}

/// The commands `scripts/demo`'s header offers for a second terminal (`#   sudo ...`, `#   target/...`).
fn demo_commands() -> Vec<String> {
    std::fs::read_to_string(src("scripts/demo"))
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("#   "))
        .filter(|l| l.starts_with("sudo ") || l.starts_with("target/"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Item 15: the README must list the commands the demo's header offers (`status`, `explain`, ...).
#[test]
fn the_readme_lists_the_commands_the_demo_offers() {
    let commands = demo_commands();
    assert!(commands.len() >= 4, "{commands:?}");
    assert!(commands.iter().any(|c| c.contains(" status")));
    assert!(commands.iter().any(|c| c.contains(" explain ")));
    let readme = std::fs::read_to_string(src("README.md")).unwrap();
    for c in &commands {
        assert!(readme.contains(c.as_str()), "README.md lacks `{c}`");
    }
}

/// Item 15: the demo printed `WARN check gateway-ssh (tcp 198.51.100.1:22) fails already before the swap`
/// on every start (its network had no 198.51.100.1) and showed no dropped packet. Now its gateway
/// answers, and it sends one packet the example allows and one it drops, and explains both.
#[test]
fn the_demo_has_a_gateway_that_answers_and_shows_an_allowed_and_a_dropped_packet() {
    if !require_root(
        "the_demo_has_a_gateway_that_answers_and_shows_an_allowed_and_a_dropped_packet",
    ) {
        return;
    }
    let out = Command::new(src("scripts/demo"))
        .arg("--once")
        .env("HOSTPOLICYD_BIN", BIN)
        .env("HPDEMO", format!("hpd{}", std::process::id()))
        .stdin(Stdio::null())
        .output()
        .expect("scripts/demo");
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        !text.contains("fails already before the swap"),
        "the gateway answers the ConnectivityCheck:\n{text}"
    );
    for line in [
        "TCP 198.51.100.20 -> 198.51.100.4:8080: ALLOWED (expected ALLOWED)",
        "TCP 192.0.2.7 -> 198.51.100.4:8080: DROPPED (expected DROPPED)",
        "verdict: ALLOW",
        "verdict: DROP",
        "ingress rule 2: Deny",
        "kernel table: ours",
    ] {
        assert!(
            text.contains(line),
            "`{line}` in the demo's output:\n{text}"
        );
    }
}

/// Item 3: the README said that root-only tests print "skipped, needs root" for a normal user, but cargo
/// hides a passing test's output: they showed `ok` and did nothing, unseen. This runs one of them (the
/// demo's, from this very test binary) without root, in a user namespace of its own (where geteuid() is
/// not 0 and the build's files stay readable): it passes, says on the terminal that it was skipped, and
/// is listed for the count `scripts/test` prints at the end; with `CI` set it fails instead.
#[test]
fn a_test_that_needs_root_says_it_was_skipped_and_fails_in_ci() {
    if !require_root("a_test_that_needs_root_says_it_was_skipped_and_fails_in_ci") {
        return;
    }
    let root_test = "the_demo_has_a_gateway_that_answers_and_shows_an_allowed_and_a_dropped_packet";
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("skip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("skipped.txt");
    let without_root = |ci: bool| {
        let mut cmd = Command::new("unshare");
        cmd.arg("--user")
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", root_test, "--test-threads=1"])
            .env(SKIPPED_FILE_ENV, &list)
            .env_remove("CI")
            .env_remove("RUST_TEST_NOCAPTURE")
            .stdin(Stdio::null());
        if ci {
            cmd.env("CI", "1");
        }
        cmd.output().expect("unshare --user (util-linux)")
    };

    let skipped = without_root(false);
    assert_eq!(skipped.status.code(), Some(0), "{}", output_text(&skipped));
    assert!(
        stdout(&skipped).contains("test result: ok. 1 passed"),
        "{}",
        output_text(&skipped)
    );
    assert!(
        stderr(&skipped).contains(&format!(
            "{root_test}: skipped, needs root (`sudo -E scripts/test` runs it)"
        )),
        "the skip shows on the terminal although the test passed:\n{}",
        output_text(&skipped)
    );
    assert_eq!(
        std::fs::read_to_string(&list).unwrap_or_default(),
        format!("{root_test}\n"),
        "listed for scripts/test's count"
    );

    std::fs::remove_file(&list).unwrap();
    let in_ci = without_root(true);
    assert_eq!(in_ci.status.code(), Some(101), "{}", output_text(&in_ci));
    assert!(
        output_text(&in_ci).contains(&format!(
            "{root_test}: needs root, and CI must run privileged tests"
        )),
        "{}",
        output_text(&in_ci)
    );
    assert!(!list.exists(), "a failure in CI is not counted as a skip");
    std::fs::remove_dir_all(&dir).unwrap();
}
