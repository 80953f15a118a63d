//! What a user reads (issue 20): the messages of `check`, `render` and `status` for configurations of
//! the shapes found in Calico's host-protection documentation, each written here as a small example
//! of the same shape. Each test runs the binary as a user would and asserts what they read.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_hostpolicyd");

/// A directory of policy files, removed at the end of the test.
struct Dir(PathBuf);

impl Dir {
    fn new(files: &[(&str, &str)]) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "hostpolicyd-messages-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        for (name, text) in files {
            std::fs::write(path.join(name), text).unwrap();
        }
        Dir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// `hostpolicyd --config-dir DIR --node-name node1 ARGS...`, modes not judged (the test user owns
    /// the files).
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config-dir")
            .arg(&self.0)
            .args(["--node-name", "node1", "--strict-modes", "no"])
            .args(args)
            .env_remove("HOSTPOLICYD_NODE_NAME")
            .env_remove("HOSTPOLICYD_CONFIG_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("hostpolicyd")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const HEP: &str = "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: node1-eth0
  labels: {role: edge}
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: [198.51.100.4]
";

/// Item 2: under `--strict` a warning is printed as the error it has become, marked `[--strict]`, and
/// the summary says that warnings were counted (it said `2 errors` under two `warning:` lines).
#[test]
fn strict_prints_warnings_as_errors_and_says_so() {
    let felix = "apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  bpfEnabled: false
";
    let policy = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-all}
spec:
  selector: all()
  types: [Ingress, Egress]
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
";
    let dir = Dir::new(&[
        ("10-felix.yaml", felix),
        ("20-hep.yaml", HEP),
        ("30-policy.yaml", policy),
    ]);
    let plain = dir.run(&["check"]);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let warning = format!(
        "{}: warning: `bpfEnabled` has no effect in hostpolicyd\n",
        dir.path().join("10-felix.yaml:5:3").display()
    );
    assert_eq!(stderr(&plain), warning);

    let strict = dir.run(&["check", "--strict"]);
    assert_eq!(strict.status.code(), Some(1));
    assert_eq!(
        stderr(&strict),
        format!(
            "{}: error: `bpfEnabled` has no effect in hostpolicyd [--strict]\n\
             hostpolicyd: 1 error (a warning, which --strict counts as an error): configuration is invalid\n",
            dir.path().join("10-felix.yaml:5:3").display()
        )
    );
    assert_eq!(stdout(&strict), "");

    // A real error beside it: the summary tells them apart.
    let broken = policy.replace("action: Allow}]\n  egress", "action: allow}]\n  egress");
    std::fs::write(dir.path().join("30-policy.yaml"), broken).unwrap();
    let strict = dir.run(&["check", "--strict"]);
    let err = stderr(&strict);
    assert!(
        err.contains(
            "10-felix.yaml:5:3: error: `bpfEnabled` has no effect in hostpolicyd [--strict]\n"
        ),
        "{err}"
    );
    assert!(
        err.ends_with("hostpolicyd: 2 errors (1 of them a warning, which --strict counts as an error): configuration is invalid\n"),
        "{err}"
    );
    assert!(!err.contains("warning:"), "{err}");
}

/// hostpolicy.d(5) as plain text, section by section: `(title, text)`, titles of `.SH` and `.SS`.
fn man_sections() -> Vec<(String, String)> {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("man/hostpolicy.d.5"))
            .unwrap();
    let unescape = |s: &str| {
        s.replace("\\-", "-")
            .replace("\\(dq", "\"")
            .replace("\\(aq", "'")
            .replace("\\(en", "-")
            .replace("\\e", "\\")
            .replace("\\fB", "")
            .replace("\\fI", "")
            .replace("\\fP", "")
            .replace("\\fR", "")
    };
    // The arguments of a macro line, quotes respected.
    let args = |s: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in s.chars() {
            match c {
                '"' => quoted = !quoted,
                ' ' if !quoted => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    };
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in page.lines() {
        let line = unescape(line);
        let text = if let Some(rest) = line.strip_prefix('.') {
            let (mac, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            match mac {
                "SH" | "SS" => {
                    sections.push((rest.trim_matches('"').to_owned(), String::new()));
                    continue;
                }
                "B" | "I" => args(rest).join(" "),
                "BR" | "RB" | "BI" | "IB" | "IR" | "RI" => args(rest).concat(),
                _ => continue,
            }
        } else if line.starts_with('\'') {
            continue;
        } else {
            line
        };
        if let Some((_, body)) = sections.last_mut() {
            body.push(' ');
            body.push_str(&text);
        }
    }
    sections
        .into_iter()
        .map(|(t, b)| (t, b.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

/// The sections of hostpolicy.d(5) a text cites as `see SECTION in hostpolicy.d(5)`.
fn cited_sections(text: &str) -> Vec<String> {
    text.split("see ")
        .skip(1)
        .filter_map(|rest| {
            rest.split_once(" in hostpolicy.d(5)")
                .map(|(s, _)| s.to_owned())
        })
        .filter(|s| s.len() < 60)
        .collect()
}

/// The text of the section of hostpolicy.d(5) whose title starts with `title`.
fn man_section(title: &str) -> String {
    man_sections()
        .into_iter()
        .find(|(t, _)| t.starts_with(title))
        .unwrap_or_else(|| panic!("hostpolicy.d(5) has no section {title}"))
        .1
}

/// Item 3: no message cites a document users do not have ("(spec §3.8)"): they cite the section of
/// hostpolicy.d(5) that says the thing, and that section exists and says it.
#[test]
fn messages_cite_the_man_page_and_it_says_what_they_cite() {
    // Every message source (validation, resolve, lints, the lockout guard, explain): no section sign
    // outside comments.
    fn scan(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                scan(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    let code = line.trim_start();
                    if code.starts_with("//") {
                        continue;
                    }
                    if code.contains('§')
                        || code.contains("calico-semantics")
                        || code.contains("DESIGN.md")
                    {
                        found.push(format!("{}:{}: {}", path.display(), i + 1, code));
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    scan(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    assert!(
        found.is_empty(),
        "messages citing documents users do not have:\n{}",
        found.join("\n")
    );

    // The messages that cite a section, triggered: a one-way doNotTrack policy on a node whose
    // failsafe list is empty and whose management SSH it lets in (the lockout guard and a lint), a
    // rule selector that matches a HostEndpoint without expectedIPs, and explain of an established
    // connection.
    let felix = "apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  failsafeInboundHostPorts: []
  failsafeOutboundHostPorts: []
";
    let untracked = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ssh-untracked}
spec:
  doNotTrack: true
  applyOnForward: true
  selector: role == 'edge'
  ingress:
    - {action: Allow, protocol: TCP, destination: {ports: [22]}}
";
    let to_bare = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: to-bare}
spec:
  selector: role == 'edge'
  types: [Ingress, Egress]
  egress:
    - {action: Allow, destination: {selector: role == 'bare'}}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: node2-eth0
  labels: {role: bare}
spec: {node: node2, interfaceName: eth0}
";
    let admin = "apiVersion: hostpolicy/v1
kind: ManagementAccess
metadata: {name: admin-ssh}
spec:
  sources: [192.0.2.0/24]
  ports: [{protocol: TCP, port: 22}]
";
    let dir = Dir::new(&[
        ("00-felix.yaml", felix),
        ("10-hep.yaml", HEP),
        ("20-untracked.yaml", untracked),
        ("30-to-bare.yaml", to_bare),
        ("60-admin.yaml", admin),
    ]);
    let check = stderr(&dir.run(&["check"]));
    let explain = stdout(&dir.run(&[
        "explain",
        "--in",
        "eth0",
        "--src",
        "192.0.2.7",
        "--dst",
        "198.51.100.4",
        "--dport",
        "80",
        "--established",
    ]));
    let mut cited = Vec::new();
    for (what, text, needle) in [
        (
            "lockout",
            &check,
            "which conntrack then sees as an invalid packet",
        ),
        (
            "doNotTrack lint",
            &check,
            "but no doNotTrack policy allows egress there",
        ),
        ("selector lint", &check, "without expectedIPs"),
        ("explain", &explain, "ct state established,related"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{what}: no line with {needle:?} in:\n{text}"));
        assert!(!line.contains('§'), "{line}");
        let sections = cited_sections(line);
        assert_eq!(
            sections.len(),
            1,
            "{what} cites one section of hostpolicy.d(5): {line}"
        );
        cited.push((what, sections[0].clone()));
    }
    // Each cited section exists and says what the message refers to it for.
    for (what, section) in cited {
        let body = man_section(&section);
        let says: &[&str] = match what {
            "lockout" | "doNotTrack lint" => &[
                "A packet they allow is not tracked, so its reply is not part of an established connection either",
                "write them symmetrically",
            ],
            "explain" => &["Established and related connections are accepted before any tracked policy"],
            _ => &["A HostEndpoint without expectedIPs contributes nothing"],
        };
        for s in says {
            assert!(
                body.contains(s),
                "{what}: section {section} of hostpolicy.d(5) does not say {s:?}:\n{body}"
            );
        }
    }
}

/// Item 5 ("Done when"): a HostEndpoint whose only policies are doNotTrack ones has no normal-stage
/// policy, so everything they do not allow is denied by the default: `check --strict` fails with a
/// warning naming each direction.
#[test]
fn only_do_not_track_policy_is_a_warning_per_direction() {
    let untracked = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: memcached-untracked}
spec:
  doNotTrack: true
  applyOnForward: true
  selector: role == 'edge'
  order: 10
  ingress:
    - {action: Allow, protocol: UDP, source: {nets: [192.0.2.0/24]}, destination: {ports: [11211]}}
  egress:
    - {action: Allow, protocol: UDP, destination: {nets: [192.0.2.0/24]}, source: {ports: [11211]}}
";
    let dir = Dir::new(&[("10-hep.yaml", HEP), ("20-untracked.yaml", untracked)]);
    let strict = dir.run(&["check", "--strict"]);
    assert_eq!(strict.status.code(), Some(1), "{}", stderr(&strict));
    let err = stderr(&strict);
    for dir_name in ["ingress", "egress"] {
        let line = format!(
            "10-hep.yaml:1:1: error: HostEndpoint 'node1-eth0' (node node1) has only doNotTrack policy for {dir_name} ('memcached-untracked') and no normal policy: the {dir_name} traffic of local processes through it that it does not allow is denied by the default of the normal stage"
        );
        assert!(err.contains(&line), "{line}\nnot in:\n{err}");
    }
    assert!(
        err.ends_with("hostpolicyd: 2 errors (all warnings, which --strict counts as errors): configuration is invalid\n"),
        "{err}"
    );
    // A normal policy for each direction: valid under --strict.
    let normal = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ssh-and-out}
spec:
  selector: role == 'edge'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]
  egress: [{action: Allow}]
";
    std::fs::write(dir.path().join("30-normal.yaml"), normal).unwrap();
    let strict = dir.run(&["check", "--strict"]);
    assert_eq!(strict.status.code(), Some(0), "{}", stderr(&strict));
}

/// Item 4: the node-port shape with a HostEndpoint without expectedIPs. The warning names what
/// happens to the node-port traffic instead, as `explain` says: the catch-all Deny of the other
/// preDNAT policy drops it.
#[test]
fn selector_without_expected_ips_names_the_traffic_dropped() {
    let hep = "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: node1-eth0
  labels: {kubernetes-host: \"\", exposed: \"true\"}
spec: {node: node1, interfaceName: eth0}
";
    let policies = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: internal-only}
spec:
  order: 20
  preDNAT: true
  applyOnForward: true
  selector: has(kubernetes-host)
  ingress:
    - {action: Allow, source: {nets: [198.51.100.0/24]}}
    - action: Deny
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: open-node-port}
spec:
  order: 10
  preDNAT: true
  applyOnForward: true
  selector: exposed == 'true'
  ingress:
    - action: Allow
      protocol: TCP
      destination:
        selector: has(kubernetes-host)
        ports: [30080]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: out}
spec:
  selector: all()
  egress: [{action: Allow}]
";
    let dir = Dir::new(&[("10-hep.yaml", hep), ("30-nodeport.yaml", policies)]);
    let out = dir.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let expected = format!(
        "30-nodeport.yaml:25:19: warning: rule selector `has(kubernetes-host)` matches HostEndpoint 'node1-eth0' without expectedIPs: a rule selector matches a host only through its expectedIPs (see Entity rules in hostpolicy.d(5)), so GlobalNetworkPolicy 'open-node-port' ingress rule 1 (Allow) does not allow traffic to it: e.g. TCP from 203.0.113.1 to port 30080 in eth0 (node node1) is dropped by [preDNAT] policy internal-only ingress rule 2: Deny ({}:11:7), as `hostpolicyd explain` shows\n",
        dir.path().join("30-nodeport.yaml").display()
    );
    assert!(err.contains(&expected), "{expected}\nnot in:\n{err}");
    // What explain itself says of that packet, on an interface with some address.
    let explained = stdout(&dir.run(&[
        "explain",
        "--in",
        "eth0",
        "--src",
        "203.0.113.1",
        "--dst",
        "192.0.2.1",
        "--proto",
        "tcp",
        "--dport",
        "30080",
    ]));
    assert!(
        explained.contains("decided by: [preDNAT] policy internal-only ingress rule 2: Deny"),
        "{explained}"
    );
}

/// Item 8: a HostEndpoint with only expectedIPs that are on no interface of this node is left out:
/// `check` warns, `render` says so in a comment line; a named port no HostEndpoint declares is a
/// warning.
#[test]
fn inactive_host_endpoint_and_unknown_named_port_are_said() {
    let hep = "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: node1-uplink
  labels: {role: edge}
spec:
  node: node1
  expectedIPs: [203.0.113.254]
  ports: [{name: metrics, protocol: TCP, port: 9100}]
";
    let policy = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web}
spec:
  selector: role == 'edge'
  types: [Ingress, Egress]
  ingress:
    - {action: Allow, protocol: TCP, destination: {ports: [https, metrics]}}
  egress: [{action: Allow}]
";
    let dir = Dir::new(&[("10-hep.yaml", hep), ("20-web.yaml", policy)]);
    let check = dir.run(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let err = stderr(&check);
    assert!(
        err.contains("10-hep.yaml:1:1: warning: HostEndpoint 'node1-uplink' (node node1) is inactive: none of its expectedIPs (203.0.113.254) is an address of an interface of this node, so it governs no interface and its policies apply nowhere here"),
        "{err}"
    );
    assert!(
        err.contains("20-web.yaml:8:7: warning: GlobalNetworkPolicy 'web' ingress rule 1: destination ports `https` matches nothing: no HostEndpoint declares a port named `https` with protocol TCP in its `ports`"),
        "{err}"
    );
    assert!(!err.contains("`metrics`"), "declared: {err}");
    let render = dir.run(&["render"]);
    assert_eq!(render.status.code(), Some(0), "{}", stderr(&render));
    assert!(
        stdout(&render).starts_with("# HostEndpoint node1-uplink is inactive on node node1, so no rule here is for it: none of its expectedIPs (203.0.113.254) is an address of an interface of this node\n"),
        "{}",
        stdout(&render)
    );
}
