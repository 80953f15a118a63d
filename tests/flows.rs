//! Flow records against a real kernel (issue 14): the daemon runs in the node's namespace of a
//! standard topology; clients send real packets; `hostpolicyd flows --json` must show each flow within
//! 2 s with the rule that decided it (policy rule with its file and line, end of tier, no policy,
//! failsafe), allowed connections with conntrack's counts, records of before a reload with the line of
//! then, and a flood must leave the daemon answering with bounded memory and the losses counted.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::daemon::{hep_eth0, wait_for, Daemon, DEADLINE};
use common::netns::require_root;
use common::probe::{ping, sa, tcp_connect, tcp_echo, Outcome, Servers};
use common::topology::{output_text, Topology};

/// How long a test waits for a flow record to appear. The issue promises 2 s, but that is a latency
/// (measured, not asserted: CI runs four root tests at once, some of them floods); a test waits the
/// common deadline, so only a record that never comes fails it.
const FLOW_DEADLINE: Duration = common::daemon::DEADLINE;

/// `hostpolicyd flows --json EXTRA...` in the node: the records.
fn flows(t: &Topology, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["flows", "--json"];
    args.extend_from_slice(extra);
    let out = t.hpd.run(&t.node, &args);
    assert_eq!(out.status.code(), Some(0), "flows: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The first record that satisfies `pred` within `within` (polling), or a panic with what there was.
fn wait_record(
    t: &Topology,
    d: &Daemon,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(within, || flows(t, &[]).into_iter().find(|r| pred(r))).unwrap_or_else(|| {
        panic!(
            "no flow record with {what} within {within:?}; records:\n{:#?}\nlog:\n{}",
            flows(t, &[]),
            d.log()
        )
    })
}

fn policy(name: &str, order: u32, rules: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: {name}
spec:
  order: {order}
  selector: \"role == 'web'\"
  types: [Ingress]
  ingress:
{rules}"
    )
}

/// The daemon on `files`, ready.
fn start(t: &Topology, files: &[(&str, &str)], env: &[(&str, &str)]) -> Daemon {
    t.hpd.set_config(files);
    let d = Daemon::start(&t.node, &t.hpd, env);
    d.wait_ready(&t.node, &t.hpd);
    d.wait_status(&t.node, &t.hpd, "flow records active", |s| {
        s["daemon"]["flows"]["state"] == "active"
    });
    d
}

fn line_of(text: &str, needle: &str) -> u64 {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {text}")) as u64
        + 1
}

/// `flows` asks the running daemon; when none runs it exits 3 and says so in one line (no root: the
/// runtime directory is an empty one of the test's own).
#[test]
fn flows_without_a_daemon_exits_3() {
    let dir = std::env::temp_dir().join(format!("hpd-flows-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for args in [
        &["flows"][..],
        &["flows", "--json", "--denied", "--limit", "3"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hostpolicyd"))
            .args(args)
            .arg("--runtime-dir")
            .arg(&dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("hostpolicyd: no hostpolicyd daemon is running"),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const DENY_METRICS: &str = "  - action: Deny
    protocol: TCP
    destination:
      ports: [9100]
  - action: Allow
    protocol: TCP
    destination:
      ports: [8080]
";

#[test]
fn a_denied_tcp_connection_names_the_policy_rule_file_and_line() {
    if !require_root("a_denied_tcp_connection_names_the_policy_rule_file_and_line") {
        return;
    }
    let t = Topology::standard();
    let text = policy("deny-metrics", 10, DENY_METRICS);
    let d = start(
        &t,
        &[("10-hep.yaml", &hep_eth0()), ("30-metrics.yaml", &text)],
        &[],
    );
    let sent = Instant::now();
    assert_eq!(
        tcp_connect(
            &t.lan0,
            sa("192.0.2.200:0"),
            sa("192.0.2.1:9100"),
            Duration::from_millis(300)
        ),
        Outcome::Timeout
    );
    let r = wait_record(
        &t,
        &d,
        FLOW_DEADLINE
            .saturating_sub(sent.elapsed())
            .max(Duration::from_millis(300)),
        "a denied TCP flow to 9100",
        |r| r["action"] == "deny" && r["dport"] == 9100,
    );
    assert_eq!(r["stage"], "normal");
    assert_eq!(r["direction"], "ingress");
    assert_eq!(r["interface"], "eth0");
    assert_eq!(r["host_endpoint"], "hep-eth0");
    assert_eq!(r["proto"], "tcp");
    assert_eq!(r["src"], "192.0.2.200");
    assert_eq!(r["dst"], "192.0.2.1");
    assert!(r["packets"].as_u64().unwrap() >= 1, "{r}");
    let by = &r["decided_by"];
    assert_eq!(by["kind"], "policy");
    assert_eq!(by["tier"], "default");
    assert_eq!(by["policy"], "deny-metrics");
    assert_eq!(by["rule"], 0);
    let file = t.hpd.config_dir().join("30-metrics.yaml");
    assert_eq!(by["file"], file.to_string_lossy().as_ref());
    assert_eq!(by["line"], line_of(&text, "action: Deny"));
    // Without a journal (this test's daemon logs to stderr) the same fields, as key=value.
    let logged = d.wait_log(&["event=\"flow_denied\"", "dport=\"9100\""]);
    for field in [
        "src=\"192.0.2.200\"",
        "dst=\"192.0.2.1\"",
        "proto=\"tcp\"",
        "iface=\"eth0\"",
        "host_endpoint=\"hep-eth0\"",
        "stage=\"normal\"",
        "policy=\"deny-metrics\"",
        "tier=\"default\"",
        "rule=\"1\"",
        "file=",
        "line=",
        "packets=",
    ] {
        assert!(logged.contains(field), "{field} in {logged}");
    }
    assert_eq!(r["pending_action"], "deny");
    assert_eq!(r["pending"], serde_json::json!([]));
    // --denied keeps it; the text form names the rule and its place.
    assert!(flows(&t, &["--denied"])
        .iter()
        .all(|r| r["action"] == "deny"));
    assert_eq!(flows(&t, &["--limit", "1"]).len(), 1);
    let out = t.hpd.run(&t.node, &["flows", "--denied"]);
    let text_out = String::from_utf8_lossy(&out.stdout);
    let line = text_out
        .lines()
        .find(|l| l.contains(":9100 "))
        .unwrap_or_else(|| panic!("{text_out}"));
    assert!(
        line.contains("deny  tcp 192.0.2.200 -> 192.0.2.1:9100 eth0 normal ingress")
            && line.ends_with(&format!(
                "policy deny-metrics ingress rule 1 ({}:{})",
                file.display(),
                line_of(&text, "action: Deny")
            )),
        "{line}"
    );
}

#[test]
fn a_denied_ping_names_the_end_of_tier_or_no_policy() {
    if !require_root("a_denied_ping_names_the_end_of_tier_or_no_policy") {
        return;
    }
    let t = Topology::standard();
    let hep = hep_eth0();
    let text = policy("deny-metrics", 10, DENY_METRICS);
    let d = start(
        &t,
        &[("10-hep.yaml", &hep), ("30-metrics.yaml", &text)],
        &[],
    );
    let (src, dst) = ("192.0.2.200".parse().unwrap(), "192.0.2.1".parse().unwrap());
    assert_eq!(
        ping(&t.lan0, src, dst, Duration::from_millis(300)),
        Outcome::Timeout
    );
    let r = wait_record(&t, &d, FLOW_DEADLINE, "a denied ICMP echo", |r| {
        r["action"] == "deny" && r["proto"] == "icmp"
    });
    assert_eq!(r["dport"], Value::Null);
    assert_eq!(r["decided_by"]["kind"], "end-of-tier");
    assert_eq!(r["decided_by"]["tier"], "default");
    assert_eq!(r["decided_by"]["policy"], Value::Null);
    assert_eq!(r["decided_by"]["rule"], Value::Null);
    let hep_file = t.hpd.config_dir().join("10-hep.yaml");
    assert_eq!(r["decided_by"]["file"], hep_file.to_string_lossy().as_ref());
    drop(d);

    // Without any policy: no policy and no profile decided.
    let t = Topology::standard();
    let d = start(&t, &[("10-hep.yaml", &hep)], &[]);
    assert_eq!(
        ping(&t.lan0, src, dst, Duration::from_millis(300)),
        Outcome::Timeout
    );
    let r = wait_record(&t, &d, FLOW_DEADLINE, "a denied ICMP echo", |r| {
        r["action"] == "deny" && r["proto"] == "icmp"
    });
    assert_eq!(r["decided_by"]["kind"], "no-policy");
    assert_eq!(r["stage"], "normal");
}

#[test]
fn an_allowed_connection_has_its_rule_and_conntrack_s_counts() {
    if !require_root("an_allowed_connection_has_its_rule_and_conntrack_s_counts") {
        return;
    }
    let t = Topology::standard();
    let _servers = Servers::start(&t.node, &[8080, 22], &[]);
    let text = policy("deny-metrics", 10, DENY_METRICS);
    let d = start(
        &t,
        &[("10-hep.yaml", &hep_eth0()), ("30-metrics.yaml", &text)],
        &[],
    );
    let src: SocketAddr = sa("192.0.2.200:41000");
    assert_eq!(
        tcp_echo(&t.lan0, src, sa("192.0.2.1:8080"), Duration::from_secs(3)),
        Outcome::Ok
    );
    let r = wait_record(&t, &d, FLOW_DEADLINE, "an allowed flow to 8080", |r| {
        r["action"] == "allow" && r["dport"] == 8080
    });
    assert_eq!(r["decided_by"]["policy"], "deny-metrics");
    assert_eq!(r["decided_by"]["rule"], 1);
    assert_eq!(r["decided_by"]["line"], line_of(&text, "action: Allow"));
    assert_eq!(r["stage"], "normal");
    assert_eq!(
        r["packets"], 1,
        "the first packet, until conntrack says more"
    );
    // The connection ends (deleted: its DESTROY event carries both directions' counters).
    let del = t
        .node
        .exec("conntrack", ["-D", "-p", "tcp", "--dport", "8080"]);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    let r = wait_record(&t, &d, DEADLINE, "conntrack's counts", |r| {
        r["action"] == "allow" && r["dport"] == 8080 && r["packets"].as_u64().unwrap() > 1
    });
    assert!(r["bytes"].as_u64().unwrap() > 100, "{r}");

    // A failsafe port (SSH) is allowed before any policy: kind failsafe.
    assert_eq!(
        tcp_connect(
            &t.lan0,
            sa("192.0.2.200:0"),
            sa("192.0.2.1:22"),
            Duration::from_secs(3)
        ),
        Outcome::Ok
    );
    let r = wait_record(&t, &d, FLOW_DEADLINE, "an allowed flow to 22", |r| {
        r["action"] == "allow" && r["dport"] == 22
    });
    assert_eq!(r["decided_by"]["kind"], "failsafe");
    assert_eq!(r["decided_by"]["policy"], Value::Null);
}

/// Records survive a reload, and name the generation that decided them: a packet denied before a
/// reload that moved the deny rule two lines down keeps the line of then; the next packet names the
/// new line.
#[test]
fn records_survive_a_reload_with_the_line_of_their_generation() {
    if !require_root("records_survive_a_reload_with_the_line_of_their_generation") {
        return;
    }
    let t = Topology::standard();
    let before = policy("deny-metrics", 10, DENY_METRICS);
    let d = start(
        &t,
        &[("10-hep.yaml", &hep_eth0()), ("30-metrics.yaml", &before)],
        &[],
    );
    let deny = |t: &Topology| {
        assert_eq!(
            tcp_connect(
                &t.lan0,
                sa("192.0.2.200:0"),
                sa("192.0.2.1:9100"),
                Duration::from_millis(300)
            ),
            Outcome::Timeout
        )
    };
    deny(&t);
    let old_line = line_of(&before, "action: Deny");
    let r = wait_record(&t, &d, FLOW_DEADLINE, "the denied flow", |r| {
        r["dport"] == 9100
    });
    assert_eq!(r["decided_by"]["line"], old_line);
    let generation = r["generation"].clone();
    // The same policy, two lines further down: the same kernel table.
    let after = format!("# moved\n# down\n{before}");
    common::daemon::write_ansible(&t.hpd.config_dir(), "30-metrics.yaml", &after);
    let (code, out, _) = Daemon::reload(&t.node, &t.hpd);
    assert_eq!(code, Some(0), "{out}");
    let r = flows(&t, &[])
        .into_iter()
        .find(|r| r["dport"] == 9100)
        .expect("the record survived the reload");
    assert_eq!(r["decided_by"]["line"], old_line, "the generation of then");
    assert_eq!(r["generation"], generation);
    deny(&t);
    let r = wait_record(&t, &d, FLOW_DEADLINE, "the new line", |r| {
        r["dport"] == 9100 && r["decided_by"]["line"] == old_line + 2
    });
    assert!(r["packets"].as_u64().unwrap() >= 2, "one aggregate: {r}");
}

/// Another program holds the NFLOG group: the daemon says so and enforces as usual; when the group is
/// free again, flow records come back.
#[test]
fn a_group_in_use_leaves_the_firewall_enforcing() {
    if !require_root("a_group_in_use_leaves_the_firewall_enforcing") {
        return;
    }
    let t = Topology::standard();
    let _servers = Servers::start(&t.node, &[8080], &[]);
    let holder = t.node.run(|| {
        hostpolicyd::netlink::nflog::Nflog::bind(&hostpolicyd::netlink::nflog::Config::new(1024))
            .expect("the test binds group 1024 first")
    });
    t.hpd.set_config(&[
        ("10-hep.yaml", &hep_eth0()),
        ("30-metrics.yaml", &policy("deny-metrics", 10, DENY_METRICS)),
    ]);
    let d = Daemon::start(&t.node, &t.hpd, &[]);
    d.wait_ready(&t.node, &t.hpd);
    d.wait_log(&[
        "NFLOG group 1024 is used by another program",
        "flows_unavailable",
    ]);
    let s = d.wait_status(&t.node, &t.hpd, "flows unavailable", |s| {
        s["daemon"]["flows"]["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("unavailable"))
    });
    assert_eq!(s["kernel"], "ours", "{s}");
    // Enforcing: the deny drops, the allow passes.
    assert_eq!(
        tcp_connect(
            &t.lan0,
            sa("192.0.2.200:0"),
            sa("192.0.2.1:9100"),
            Duration::from_millis(300)
        ),
        Outcome::Timeout
    );
    assert_eq!(
        tcp_connect(
            &t.lan0,
            sa("192.0.2.200:0"),
            sa("192.0.2.1:8080"),
            Duration::from_secs(3)
        ),
        Outcome::Ok
    );
    drop(holder);
    d.wait_status(&t.node, &t.hpd, "flows active again", |s| {
        s["daemon"]["flows"]["state"] == "active"
    });
    assert_eq!(
        tcp_connect(
            &t.lan0,
            sa("192.0.2.200:0"),
            sa("192.0.2.1:9100"),
            Duration::from_millis(300)
        ),
        Outcome::Timeout
    );
    wait_record(
        &t,
        &d,
        FLOW_DEADLINE,
        "a record once the group is ours",
        |r| r["dport"] == 9100,
    );
}

/// The daemon's resident memory (VmRSS, KiB).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The packets counted by the kernel rules whose comment contains `needle`.
fn rule_packets(t: &Topology, needle: &str) -> u64 {
    let out = t.node.exec("nft", ["list", "table", "inet", "hostpolicy"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "packets")?;
            w.get(i + 1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Sends `count` UDP datagrams from `src` to `dst`, each to another destination port (1..=count
/// wrapping at 65535): distinct flows.
fn udp_flood(t: &Topology, src: &str, dst: &str, count: u32) {
    let (src, dst): (std::net::IpAddr, std::net::IpAddr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    t.lan0.run(move || {
        let sock = std::net::UdpSocket::bind(SocketAddr::new(src, 40000)).unwrap();
        for i in 0..count {
            let port = (i % 65535 + 1) as u16;
            // A full socket buffer (ENOBUFS/EAGAIN) only loses that datagram.
            let _ = sock.send_to(b"flood", SocketAddr::new(dst, port));
        }
    });
}

const FLOOD_RULES: &str = "  - action: Deny
    protocol: UDP
    source:
      nets: [192.0.2.201/32]
  - action: Allow
    protocol: TCP
    destination:
      ports: [8080]
";

/// 100,000 denied packets: the daemon keeps answering, its memory stays bounded, and every packet the
/// deny rule counted is either a message the daemon read or one it counts as lost.
#[test]
fn a_flood_of_denied_packets_is_counted_not_a_danger() {
    if !require_root("a_flood_of_denied_packets_is_counted_not_a_danger") {
        return;
    }
    // Every packet logged (no rate limit to speak of) into a table of 1,000 records: the table sheds.
    let t = Topology::standard();
    let d = start(
        &t,
        &[
            ("10-hep.yaml", &hep_eth0()),
            ("30-flood.yaml", &policy("flood", 10, FLOOD_RULES)),
        ],
        &[
            ("HOSTPOLICYD_FLOWS_LOG_RATE", "1000000"),
            ("HOSTPOLICYD_FLOWS_MAX_RECORDS", "1000"),
        ],
    );
    let rss_before = rss_kib(d.pid());
    {
        std::thread::scope(|s| {
            let sender = s.spawn(|| udp_flood(&t, "192.0.2.201", "192.0.2.1", 100_000));
            // Responsive during the flood.
            while !sender.is_finished() {
                let start = Instant::now();
                let out = t.hpd.run(&t.node, &["status", "--json"]);
                assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
                assert!(start.elapsed() < DEADLINE);
            }
            sender.join().unwrap()
        });
    }
    let counted = rule_packets(&t, "flood ingress rule 1 Deny");
    assert!(
        counted > 50_000,
        "the flood reached the deny rule: {counted}"
    );
    // Every counted packet is accounted for: a message the daemon read, or one it counts as lost
    // (sequence gaps; an overrun not followed by any message counts one at least).
    let s = d.wait_status(&t.node, &t.hpd, "the messages read", |s| {
        s["daemon"]["flows"]["messages"].as_u64().unwrap_or(0) > 0
    });
    let quiet = |s: &Value| s["daemon"]["flows"]["messages"].clone();
    let mut last = quiet(&s);
    let s = wait_for(DEADLINE, || {
        // Drained: two looks a moment apart read the same number of messages.
        std::thread::sleep(Duration::from_millis(300));
        let s = d.status(&t.node, &t.hpd)?;
        let now = quiet(&s);
        let same = now == last;
        last = now;
        same.then_some(s)
    })
    .expect("the daemon drains the flood");
    let f = &s["daemon"]["flows"];
    let (read, lost) = (
        f["messages"].as_u64().unwrap(),
        f["nflog_lost"].as_u64().unwrap(),
    );
    // The group's sequence numbers count every packet logged to it: the namespace's own few packets
    // (IPv6 neighbour discovery, MLD) logged by other rules during the flood are read or lost too. They
    // are the messages that are not the flood's denied ones; as many again may be among the lost.
    let others = read - f["denied"].as_u64().unwrap();
    assert!(
        read + lost <= counted + 2 * others + 2,
        "no more than the kernel counted: {f} vs {counted}"
    );
    if read < counted {
        assert!(
            lost > 0,
            "messages were shed, and counted: {f} vs {counted}"
        );
    }
    assert!(f["records"].as_u64().unwrap() <= 1000, "{f}");
    assert!(f["dropped"].as_u64().unwrap() > 0, "records were shed: {f}");
    assert!(
        f["evicted"].as_u64().unwrap() >= f["denied"].as_u64().unwrap() - 1000,
        "{f}"
    );
    let rss_after = rss_kib(d.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory bounded: {rss_before} KiB before, {rss_after} KiB after"
    );
    let metrics_like = flows(&t, &["--denied", "--limit", "5"]);
    assert_eq!(metrics_like.len(), 5);
    drop(d);

    // As configured by default (20 per second per rule): the daemon is told of a few, nothing is shed.
    let t = Topology::standard();
    let d = start(
        &t,
        &[
            ("10-hep.yaml", &hep_eth0()),
            ("30-flood.yaml", &policy("flood", 10, FLOOD_RULES)),
        ],
        &[],
    );
    udp_flood(&t, "192.0.2.201", "192.0.2.1", 100_000);
    let counted = rule_packets(&t, "flood ingress rule 1 Deny");
    assert!(counted > 50_000, "{counted}");
    let s = d.wait_status(&t.node, &t.hpd, "some messages", |s| {
        s["daemon"]["flows"]["messages"].as_u64().unwrap_or(0) > 0
    });
    let f = &s["daemon"]["flows"];
    assert!(
        f["messages"].as_u64().unwrap() < 1000,
        "the limit held the messages down: {f}"
    );
    assert_eq!(f["dropped"], 0, "{f}");
}

/// Regression: the first version marked allowed connections with `ct mark set ct mark | BIT` in the
/// allow rule; loading a packet's conntrack mark ends the rule when the packet has no conntrack entry
/// (IPv6 neighbour discovery, anything `notrack`ed), so allow rules stopped matching those packets and
/// IPv6 hosts could no longer resolve each other. The allow rules with flow records must match every
/// packet they matched without.
#[test]
fn allow_rules_still_match_packets_without_conntrack() {
    if !require_root("allow_rules_still_match_packets_without_conntrack") {
        return;
    }
    let t = Topology::build(common::topology::Plan {
        eth0: vec!["2001:db8::1/64"],
        lan0: vec!["2001:db8::200/64"],
        ..common::topology::Plan::default()
    });
    let icmp = |name: &str, types: &str| {
        format!(
            "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: {name}
spec:
  selector: \"role == 'web'\"
  types: [{types}]
  {}:
  - action: Allow
    protocol: ICMPv6
",
            types.to_lowercase()
        )
    };
    let hep = common::yaml::hep(
        "hep-eth0",
        "node1",
        Some("eth0"),
        &["2001:db8::1"],
        &[("role", "web")],
        &[],
    );
    let d = start(
        &t,
        &[
            ("10-hep.yaml", &hep),
            ("20-in.yaml", &icmp("icmp-in", "Ingress")),
            ("20-out.yaml", &icmp("icmp-out", "Egress")),
        ],
        &[],
    );
    let (src, dst) = (
        "2001:db8::200".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    );
    assert_eq!(
        ping(&t.lan0, src, dst, Duration::from_secs(3)),
        Outcome::Ok,
        "neighbour discovery and the echo pass the allow rules"
    );
    let r = wait_record(&t, &d, FLOW_DEADLINE, "the allowed echo", |r| {
        r["action"] == "allow" && r["proto"] == "icmpv6" && r["direction"] == "ingress"
    });
    assert_eq!(r["decided_by"]["policy"], "icmp-in");
}

const STAGED_BLOCK: &str = "apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata:
  name: block-web
spec:
  order: 5
  selector: \"role == 'web'\"
  ingress:
  - action: Deny
    protocol: TCP
    destination:
      ports: [8080]
";

/// A staged Deny on an allowed flow: the connection goes through (a staged policy never changes a
/// verdict), its record says `allow` with `pending_action: deny` and names the staged rule, and
/// `status --counters` shows the staged rule's hit apart from the enforced policies.
#[test]
fn a_staged_deny_on_an_allowed_flow_is_pending_and_drops_nothing() {
    if !require_root("a_staged_deny_on_an_allowed_flow_is_pending_and_drops_nothing") {
        return;
    }
    let t = Topology::standard();
    let _servers = Servers::start(&t.node, &[8080], &[]);
    let d = start(
        &t,
        &[
            ("10-hep.yaml", &hep_eth0()),
            ("30-metrics.yaml", &policy("deny-metrics", 10, DENY_METRICS)),
            ("40-staged.yaml", STAGED_BLOCK),
        ],
        &[],
    );
    assert_eq!(
        tcp_echo(
            &t.lan0,
            sa("192.0.2.200:0"),
            sa("192.0.2.1:8080"),
            Duration::from_secs(3)
        ),
        Outcome::Ok,
        "the staged Deny drops nothing: the echo came back"
    );
    let r = wait_record(
        &t,
        &d,
        FLOW_DEADLINE,
        "the allowed flow with its pending verdict",
        |r| {
            r["action"] == "allow"
                && r["dport"] == 8080
                && r["pending"].as_array().is_some_and(|p| !p.is_empty())
        },
    );
    assert_eq!(r["pending_action"], "deny");
    let p = &r["pending"][0];
    assert_eq!(p["staged"], true);
    assert_eq!(p["policy"], "block-web");
    assert_eq!(p["action"], "deny");
    assert_eq!(p["rule"], 0);
    let file = t.hpd.config_dir().join("40-staged.yaml");
    assert_eq!(p["file"], file.to_string_lossy().as_ref());
    assert_eq!(p["line"], line_of(STAGED_BLOCK, "action: Deny"));
    assert_eq!(r["decided_by"]["policy"], "deny-metrics");
    // A denied flow of the enforced policy: the staged set denies it too (the end of its tier).
    assert_eq!(
        tcp_connect(
            &t.lan0,
            sa("192.0.2.200:0"),
            sa("192.0.2.1:9100"),
            Duration::from_millis(300)
        ),
        Outcome::Timeout
    );
    let r = wait_record(
        &t,
        &d,
        FLOW_DEADLINE,
        "the denied flow's pending verdict",
        |r| {
            r["action"] == "deny"
                && r["dport"] == 9100
                && r["pending"].as_array().is_some_and(|p| !p.is_empty())
        },
    );
    assert_eq!(r["pending_action"], "deny");
    assert_eq!(r["pending"][0]["staged"], false, "{r}");
    // The counters: the staged rule's hit apart, the enforced policy unchanged.
    let out = t.hpd.run(&t.node, &["status", "--counters", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    let staged = &c["staged_policies"];
    assert_eq!(staged[0]["name"], "block-web", "{c:#}");
    assert!(
        staged[0]["rules"][0]["packets"].as_u64().unwrap() >= 1,
        "{c:#}"
    );
    assert!(
        c["policies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "block-web"),
        "{c:#}"
    );
    let text =
        String::from_utf8_lossy(&t.hpd.run(&t.node, &["status", "--counters"]).stdout).into_owned();
    assert!(
        text.contains("StagedGlobalNetworkPolicy block-web"),
        "{text}"
    );
}

/// `flows --follow` streams new and updated records as they come, until interrupted.
#[test]
fn follow_streams_new_records() {
    if !require_root("follow_streams_new_records") {
        return;
    }
    use std::io::BufRead;
    let t = Topology::standard();
    let d = start(
        &t,
        &[
            ("10-hep.yaml", &hep_eth0()),
            ("30-metrics.yaml", &policy("deny-metrics", 10, DENY_METRICS)),
        ],
        &[],
    );
    let mut args = t.hpd.global_args();
    args.extend(["flows", "--follow", "--json", "--denied"].map(String::from));
    let mut child = t
        .node
        .command(env!("CARGO_BIN_EXE_hostpolicyd"), &args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |want: u16| {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).ok()?;
            let r: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(r["action"], "deny", "--denied: {r}");
            if r["dport"] == want {
                return Some(r);
            }
        }
    };
    // A first flow: in the snapshot or streamed, whichever came first.
    assert_eq!(
        tcp_connect(
            &t.lan0,
            sa("192.0.2.200:0"),
            sa("192.0.2.1:9100"),
            Duration::from_millis(300)
        ),
        Outcome::Timeout
    );
    let first = next(9100);
    // Once a line came, the snapshot is behind: this one can only come streamed.
    assert_eq!(
        tcp_connect(
            &t.lan0,
            sa("192.0.2.200:0"),
            sa("192.0.2.1:9101"),
            Duration::from_millis(300)
        ),
        Outcome::Timeout
    );
    let second = next(9101);
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let first = first.unwrap_or_else(|| panic!("no record for 9100\nlog:\n{}", d.log()));
    assert_eq!(first["decided_by"]["policy"], "deny-metrics");
    let r = second.unwrap_or_else(|| panic!("no streamed record for 9101\nlog:\n{}", d.log()));
    assert_eq!(r["decided_by"]["kind"], "end-of-tier");
}

/// An untracked (doNotTrack) allow has no conntrack entry: its packets are sampled through the same
/// rate-limited reports, and the record says stage untracked.
#[test]
fn untracked_allows_are_sampled() {
    if !require_root("untracked_allows_are_sampled") {
        return;
    }
    let t = Topology::standard();
    let _servers = Servers::start(&t.node, &[], &["192.0.2.1:5353"]);
    let dnt = |name: &str, dir: &str, side: &str| {
        format!(
            "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: {name}
spec:
  selector: \"role == 'web'\"
  doNotTrack: true
  applyOnForward: true
  {dir}:
  - action: Allow
    protocol: UDP
    {side}:
      ports: [5353]
"
        )
    };
    let d = start(
        &t,
        &[
            ("10-hep.yaml", &hep_eth0()),
            ("20-in.yaml", &dnt("dns-in", "ingress", "destination")),
            ("20-out.yaml", &dnt("dns-out", "egress", "source")),
        ],
        &[],
    );
    assert_eq!(
        common::probe::udp_echo(
            &t.lan0,
            sa("192.0.2.200:0"),
            sa("192.0.2.1:5353"),
            Duration::from_secs(3)
        ),
        Outcome::Ok
    );
    let r = wait_record(&t, &d, FLOW_DEADLINE, "the sampled untracked flow", |r| {
        r["action"] == "allow" && r["dport"] == 5353 && r["direction"] == "ingress"
    });
    assert_eq!(r["stage"], "untracked");
    assert_eq!(r["decided_by"]["policy"], "dns-in");
    assert_eq!(r["proto"], "udp");
}
