//! `hostpolicyd explain` on spec §7 T5 (Calico's node-port how-to), every row: the verdict, the stage and
//! the deciding policy, rule and file:line:col, through the real command line (no root, no kernel).
//!
//! Addresses as in tests/golden/README.md: node1 eth0 1.2.3.4 → 198.51.100.4, node2 1.2.3.5 →
//! 198.51.100.5, cluster net 1.2.0.0/16 → 198.51.100.0/25, pod CIDR 100.100.0.0/16 → 198.51.100.128/25,
//! row 7's 100.100.7.7 → 198.51.100.177, row 8's 93.184.216.34 → 203.0.113.34; the pod behind eth2 is
//! 198.51.100.200:8080 (kube-proxy DNAT of node port 31852).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// The how-to's configuration; line numbers below refer to this text (policies.yaml).
fn t5(nodeport_selector: &str, node1_ips: &str, node1_labels: &str) -> String {
    format!(
        "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {{name: allow-cluster-internal-ingress-only}}
  spec:
    order: 20
    preDNAT: true
    applyOnForward: true
    selector: has(kubernetes-host)
    ingress:
      - {{action: Allow, source: {{nets: [198.51.100.0/25, 198.51.100.128/25]}}}}
      - {{action: Deny}}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {{name: allow-outbound-external}}
  spec: {{order: 10, selector: has(kubernetes-host), egress: [{{action: Allow}}]}}
- apiVersion: projectcalico.org/v3
  kind: HostEndpoint
  metadata: {{name: node1-eth0, labels: {{{node1_labels}}}}}
  spec: {{interfaceName: eth0, node: node1, expectedIPs: [{node1_ips}]}}
- apiVersion: projectcalico.org/v3
  kind: HostEndpoint
  metadata: {{name: node2-eth0, labels: {{kubernetes-host: ingress}}}}
  spec: {{interfaceName: eth0, node: node2, expectedIPs: [198.51.100.5]}}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {{name: allow-nodeport}}
  spec:
    order: 10
    preDNAT: true
    applyOnForward: true
    selector: \"{nodeport_selector}\"
    ingress:
      - {{action: Allow, protocol: TCP, destination: {{selector: has(kubernetes-host), ports: [31852]}}}}
"
    )
}

const HOWTO: (&str, &str, &str) = (
    "has(kubernetes-host)",
    "198.51.100.4",
    "kubernetes-host: ingress",
);
/// allow-cluster-internal-ingress-only's rules, allow-outbound-external's rule, allow-nodeport's rule.
const INTERNAL_ALLOW: &str = "policies.yaml:10:9";
const INTERNAL_DENY: &str = "policies.yaml:11:9";
const OUTBOUND: &str = "policies.yaml:15:62";
const NODEPORT: &str = "policies.yaml:33:9";

/// Packet 1: 203.0.113.7 → node1:31852, DNATed to the pod and forwarded out eth2.
const ROW1: &str = "--in eth0 --out eth2 --src 203.0.113.7 --sport 40000 --dst 198.51.100.4 --dport 31852 --dnat-dst 198.51.100.200:8080";

struct Dir(PathBuf);

impl Dir {
    fn new(config: &str) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "explain-t5-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policies.yaml"), config).unwrap();
        Dir(dir)
    }

    /// `hostpolicyd --config-dir DIR --node-name NODE explain ARGS`: (exit status, stdout, stderr).
    fn explain(&self, node: &str, args: &str, json: bool) -> (i32, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostpolicyd"));
        cmd.current_dir(&self.0)
            .args(["--config-dir", ".", "--node-name", node, "explain"]);
        cmd.args(args.split_whitespace());
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("run hostpolicyd");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr),
        )
    }

    /// The JSON explanation (asserting exit status 0).
    fn json(&self, node: &str, args: &str) -> Value {
        let (code, out, err) = self.explain(node, args, true);
        assert_eq!(code, 0, "explain {args}: exit {code}\n{out}{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("explain {args}: {e}\n{out}"))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One row's expectation: verdict, stage of the deciding step, and policy / rule / position, or a
/// phrase of the default that applied.
struct Expect<'a> {
    verdict: &'a str,
    stage: &'a str,
    policy: Option<&'a str>,
    rule: Option<u64>,
    at: Option<&'a str>,
    text: &'a str,
}

#[track_caller]
fn check(row: &str, e: &Value, x: Expect) {
    let d = &e["decided_by"];
    let ok = e["verdict"] == x.verdict
        && d["stage"] == x.stage
        && d["policy"].as_str() == x.policy
        && d["rule"].as_u64() == x.rule
        && x.at
            .is_none_or(|at| d["at"].as_str().map(|a| a.trim_start_matches("./")) == Some(at))
        && d["text"].as_str().is_some_and(|t| t.contains(x.text));
    assert!(
        ok,
        "{row}: expected {} by [{}] {:?} rule {:?} at {:?} ({:?}), got:\n{}",
        x.verdict,
        x.stage,
        x.policy,
        x.rule,
        x.at,
        x.text,
        serde_json::to_string_pretty(e).unwrap()
    );
}

fn rule<'a>(
    verdict: &'a str,
    stage: &'a str,
    policy: &'a str,
    rule: u64,
    at: &'a str,
    action: &'a str,
) -> Expect<'a> {
    Expect {
        verdict,
        stage,
        policy: Some(policy),
        rule: Some(rule),
        at: Some(at),
        text: action,
    }
}

#[test]
fn t5_every_row() {
    let d = Dir::new(&t5(HOWTO.0, HOWTO.1, HOWTO.2));
    check(
        "#1",
        &d.json("node1", ROW1),
        rule("ALLOW", "preDNAT", "allow-nodeport", 0, NODEPORT, "Allow"),
    );
    let e = d.json("node1", &format!("{ROW1} --established"));
    check(
        "#2",
        &e,
        Expect {
            verdict: "ALLOW",
            stage: "conntrack",
            policy: None,
            rule: None,
            at: None,
            text: "ct state established",
        },
    );
    let row3 = "--in eth0 --src 203.0.113.7 --sport 40000 --dst 198.51.100.4 --dport 31853";
    check(
        "#3",
        &d.json("node1", row3),
        rule(
            "DROP",
            "preDNAT",
            "allow-cluster-internal-ingress-only",
            1,
            INTERNAL_DENY,
            "Deny",
        ),
    );
    let row4 = ROW1.replace("--in", "--proto udp --in");
    check(
        "#4",
        &d.json("node1", &row4),
        rule(
            "DROP",
            "preDNAT",
            "allow-cluster-internal-ingress-only",
            1,
            INTERNAL_DENY,
            "Deny",
        ),
    );
    let row5 = "--in eth0 --src 203.0.113.7 --sport 40000 --dst 198.51.100.4 --dport 22";
    let e = d.json("node1", row5);
    check(
        "#5",
        &e,
        Expect {
            verdict: "ALLOW",
            stage: "normal",
            policy: None,
            rule: None,
            at: None,
            text: "failsafe-in: tcp port 22",
        },
    );
    // Failsafe runs before the preDNAT policies too (which would deny the packet).
    assert!(
        e["steps"][0]["text"]
            .as_str()
            .unwrap()
            .contains("preDNAT policy skipped"),
        "{e}"
    );
    let row6 = "--in eth0 --src 198.51.100.5 --sport 40000 --dst 198.51.100.4 --dport 10250";
    check(
        "#6",
        &d.json("node1", row6),
        rule(
            "ALLOW",
            "preDNAT",
            "allow-cluster-internal-ingress-only",
            0,
            INTERNAL_ALLOW,
            "Allow",
        ),
    );
    let row7 = "--in eth0 --src 198.51.100.177 --sport 40000 --dst 198.51.100.4 --dport 9100";
    check(
        "#7",
        &d.json("node1", row7),
        rule(
            "ALLOW",
            "preDNAT",
            "allow-cluster-internal-ingress-only",
            0,
            INTERNAL_ALLOW,
            "Allow",
        ),
    );
    let row8 = "--out eth0 --src 198.51.100.4 --sport 40000 --dst 203.0.113.34 --dport 443";
    check(
        "#8",
        &d.json("node1", row8),
        rule(
            "ALLOW",
            "normal",
            "allow-outbound-external",
            0,
            OUTBOUND,
            "Allow",
        ),
    );
    let reply =
        "--in eth0 --established --src 203.0.113.34 --sport 443 --dst 198.51.100.4 --dport 40000";
    check(
        "#8 reply",
        &d.json("node1", reply),
        Expect {
            verdict: "ALLOW",
            stage: "conntrack",
            policy: None,
            rule: None,
            at: None,
            text: "established",
        },
    );

    // Row 9: node1-eth0 without expectedIPs: the destination set is {node2} only.
    let d9 = Dir::new(&t5(HOWTO.0, "", HOWTO.2));
    check(
        "#9",
        &d9.json("node1", ROW1),
        rule(
            "DROP",
            "preDNAT",
            "allow-cluster-internal-ingress-only",
            1,
            INTERNAL_DENY,
            "Deny",
        ),
    );

    // Row 10: kubernetes-host removed: no policy selects the HEP; forwarded by default, local traffic denied.
    let d10 = Dir::new(&t5(HOWTO.0, HOWTO.1, ""));
    let e = d10.json("node1", ROW1);
    check(
        "#10",
        &e,
        Expect {
            verdict: "ALLOW",
            stage: "forward",
            policy: None,
            rule: None,
            at: Some("policies.yaml:16:3"),
            text: "no applyOnForward policy selects this HostEndpoint",
        },
    );
    assert_eq!(e["decided_by"]["host_endpoint"], "node1-eth0");
    for (row, args) in [("#10 (#6)", row6), ("#10 (#8)", row8)] {
        check(
            row,
            &d10.json("node1", args),
            Expect {
                verdict: "DROP",
                stage: "normal",
                policy: None,
                rule: None,
                at: Some("policies.yaml:16:3"),
                text: "default deny",
            },
        );
    }

    // Node-selective variant: the same files on node1 (allowed) and node2 (denied).
    let ds = Dir::new(&t5(
        "nodeport-external-ingress == 'true'",
        HOWTO.1,
        "kubernetes-host: ingress, nodeport-external-ingress: \"true\"",
    ));
    check(
        "selective node1",
        &ds.json("node1", ROW1),
        rule("ALLOW", "preDNAT", "allow-nodeport", 0, NODEPORT, "Allow"),
    );
    let on2 = "--in eth0 --src 203.0.113.7 --sport 40000 --dst 198.51.100.5 --dport 31852";
    check(
        "selective node2",
        &ds.json("node2", on2),
        rule(
            "DROP",
            "preDNAT",
            "allow-cluster-internal-ingress-only",
            1,
            INTERNAL_DENY,
            "Deny",
        ),
    );

    // The how-to's selector as written does not parse: explain refuses the configuration (exit 1).
    let bad = Dir::new(&t5("nodeport-external-ingress: true", HOWTO.1, HOWTO.2));
    let (code, _, err) = bad.explain("node1", ROW1, false);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("policies.yaml:31:") && err.contains("error:"),
        "{err}"
    );
}

/// The text form: the verdict, the deciding rule with its position, and every step of the path.
#[test]
fn t5_text_output() {
    let d = Dir::new(&t5(HOWTO.0, HOWTO.1, HOWTO.2));
    let (code, out, err) = d.explain("node1", ROW1, false);
    assert_eq!(code, 0, "{out}{err}");
    let expected = "node: node1
packet: TCP 203.0.113.7:40000 -> 198.51.100.4:31852, in eth0, forwarded out eth2, DNAT to 198.51.100.200:8080
verdict: ALLOW
decided by: [preDNAT] policy allow-nodeport ingress rule 1: Allow (./policies.yaml:33:9)
path:
  [preDNAT] HostEndpoint node1-eth0: policy allow-nodeport ingress rule 1: Allow (./policies.yaml:33:9)
  [preDNAT] HostEndpoint node1-eth0: allowed: normal and forward-ingress policy skipped
  [forward] forward ingress policy skipped: already accepted
  [forward] interface eth2 has no HostEndpoint: forward egress not policed
";
    assert_eq!(out, expected);
    // Bad flags: exit 64, whatever the configuration.
    let (code, _, err) = d.explain(
        "node1",
        "--in eth0 --src 203.0.113.7 --dst 2001:db8::4",
        false,
    );
    assert_eq!(code, 64, "{err}");
}
