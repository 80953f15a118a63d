//! Kernel vs explain: every row of spec §7 T1–T8 (and their variants) goes through `hostpolicyd explain`
//! (run in the node's namespace, so it sees the live interfaces) and through the kernel (the configuration
//! applied in a namespace topology, real packets), and both verdicts must equal the spec's.
//!
//! `explain` evaluates the model (spec §3) and knows nothing of the nftables encoding, so a row where the
//! kernel and explain disagree is a bug in the compiler or in the evaluator; a failing test lists every
//! such row with both verdicts and explain's deciding step.
//!
//! A row may be several packets (a request and its reply, a SYN and its SYN-ACK): explain evaluates each
//! (`--established` for packets of a connection conntrack already accepted) and the row is ALLOW when all
//! are; the kernel probe runs the whole exchange.
//!
//! Addresses as in tests/e2e_scenarios.rs (documentation ranges): eth0 192.0.2.0/24 (node .1), eth1
//! 198.51.100.0/24 (node .45), T4's 172.16.0.5 → 203.0.113.5, T5 node1 198.51.100.4, node2 .5, pod
//! 198.51.100.200 behind eth2, T8's server 192.0.2.1, client .200, other .201.

mod common;

use std::time::{Duration, Instant};

use common::netns::{require_root, NetNs};
use common::probe::{
    conntrack_flush, ping, sa, tcp_connect, tcp_echo, udp_echo, Outcome, Servers, Verdict, ALLOW,
    DROP,
};
use common::scenarios as sc;
use common::t5::t5_plan;
use common::topology::{kube_proxy_nodeport, output_text, Hpd, Plan, Topology};
use common::yaml::{docs, hep};
use serde_json::Value;

/// The rows of one scenario: spec, explain and kernel verdicts side by side; mismatches reported at the end.
struct Agreement<'a> {
    scenario: String,
    flush: Vec<&'a NetNs>,
    lines: Vec<String>,
    failures: Vec<String>,
}

impl<'a> Agreement<'a> {
    fn new(scenario: &str, flush: &[&'a NetNs]) -> Agreement<'a> {
        Agreement {
            scenario: scenario.into(),
            flush: flush.to_vec(),
            lines: vec![],
            failures: vec![],
        }
    }

    /// Explain's verdict for the packets (`explain` argument lines) and the decisive step of the first
    /// dropped packet (or of the first packet).
    fn explain(hpd: &Hpd, ns: &NetNs, packets: &[&str]) -> Result<(Verdict, String), String> {
        let mut why = None;
        for p in packets {
            let mut args = vec!["explain", "--json"];
            args.extend(p.split_whitespace());
            let out = hpd.run(ns, &args);
            if out.status.code() != Some(0) {
                return Err(format!(
                    "explain {p}: exit {:?}\n{}",
                    out.status.code(),
                    output_text(&out)
                ));
            }
            let v: Value =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("explain {p}: {e}"))?;
            let d = &v["decided_by"];
            let step = format!(
                "[{}] {}{}",
                d["stage"].as_str().unwrap_or("?"),
                d["text"].as_str().unwrap_or("?"),
                d["at"]
                    .as_str()
                    .map(|a| format!(" ({})", a.rsplit('/').next().unwrap_or(a)))
                    .unwrap_or_default()
            );
            if v["verdict"] == "DROP" {
                return Ok((DROP, step));
            }
            why.get_or_insert(step);
        }
        Ok((ALLOW, why.unwrap_or_default()))
    }

    /// One row: `packets` through explain (in `ns`, with `hpd`'s configuration), `probe` through the kernel.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        row: &str,
        spec: Verdict,
        why: &str,
        hpd: &Hpd,
        ns: &NetNs,
        packets: &[&str],
        probe: impl FnOnce(Duration) -> Outcome,
    ) {
        let explained = Self::explain(hpd, ns, packets);
        for n in &self.flush {
            conntrack_flush(n);
        }
        let start = Instant::now();
        let outcome = probe(spec.timeout());
        let ms = start.elapsed().as_millis();
        let kernel = match &outcome {
            Outcome::Ok => Some(ALLOW),
            Outcome::Timeout => Some(DROP),
            _ => None,
        };
        let (explain_v, step) = match &explained {
            Ok((v, s)) => (Some(*v), s.clone()),
            Err(e) => (None, e.clone()),
        };
        let show = |v: Option<Verdict>| v.map(|v| v.to_string()).unwrap_or_else(|| "ERROR".into());
        let line = format!(
            "{row}: spec {spec}, explain {} by {step}, kernel {} ({outcome:?}, {ms} ms) — spec: {why}",
            show(explain_v),
            show(kernel)
        );
        if explain_v != Some(spec) || kernel != Some(spec) {
            self.failures.push(line.clone());
        }
        self.lines.push(line);
    }

    /// A row that is not a packet (a refused configuration): both answers must be as the spec says.
    fn agree(&mut self, row: &str, ok: bool, what: &str) {
        let line = format!("{row}: {what}: {}", if ok { "agree" } else { "DISAGREE" });
        if !ok {
            self.failures.push(line.clone());
        }
        self.lines.push(line);
    }

    fn finish(self) {
        eprintln!("== {} ==", self.scenario);
        for l in &self.lines {
            eprintln!("  {l}");
        }
        if !self.failures.is_empty() {
            panic!(
                "{}: {} row(s) where spec, explain and kernel do not all agree:\n  {}",
                self.scenario,
                self.failures.len(),
                self.failures.join("\n  ")
            );
        }
    }
}

fn tcp<'n>(from: &'n NetNs, src: &str, dst: &str) -> impl FnOnce(Duration) -> Outcome + 'n {
    let (src, dst) = (sock(src), sa(dst));
    move |t| tcp_connect(from, src, dst, t)
}

fn tcp_data<'n>(from: &'n NetNs, src: &str, dst: &str) -> impl FnOnce(Duration) -> Outcome + 'n {
    let (src, dst) = (sock(src), sa(dst));
    move |t| tcp_echo(from, src, dst, t)
}

fn udp<'n>(from: &'n NetNs, src: &str, dst: &str) -> impl FnOnce(Duration) -> Outcome + 'n {
    let (src, dst) = (sock(src), sa(dst));
    move |t| udp_echo(from, src, dst, t)
}

fn icmp<'n>(from: &'n NetNs, src: &str, dst: &str) -> impl FnOnce(Duration) -> Outcome + 'n {
    let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
    move |t| ping(from, src, dst, t)
}

/// "ip" (ephemeral port) or "ip:port".
fn sock(s: &str) -> std::net::SocketAddr {
    s.parse()
        .unwrap_or_else(|_| std::net::SocketAddr::new(s.parse().unwrap(), 0))
}

fn standard_servers(t: &Topology) -> Vec<Servers> {
    vec![
        Servers::start(&t.node, &[22, 80, 81, 8080, 12211, 31852], &[]),
        Servers::start(&t.lan0, &[22, 80, 443], &["192.0.2.53:53"]),
        Servers::start(&t.lan1, &[22, 80, 8080], &[]),
    ]
}

fn apply(t: &Topology, files: &[(&str, String)]) {
    let f: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    t.apply(&f);
}

// ---- T1 -----------------------------------------------------------------------------------------------

#[test]
fn t1_agreement() {
    if !require_root("t1_agreement") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);
    for (variant, scenario, profile) in [
        ("T1", sc::t1(), false),
        ("T1 variant", sc::t1_default_allow(), true),
    ] {
        t.apply(&scenario.files());
        let v = |deny| if profile { ALLOW } else { deny };
        let mut a = Agreement::new(variant, &[n]);
        a.row(
            "#1",
            v(DROP),
            "no ingress policy ⇒ deny (variant: profile)",
            h,
            n,
            &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 8080"],
            tcp(&t.lan0, "192.0.2.2:40000", "192.0.2.1:8080"),
        );
        a.row(
            "#2",
            ALLOW,
            "failsafe-in tcp/22",
            h,
            n,
            &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 22"],
            tcp(&t.lan0, "192.0.2.2", "192.0.2.1:22"),
        );
        a.row(
            "#3",
            v(DROP),
            "no egress policy (variant: profile)",
            h,
            n,
            &["--out eth0 --src 192.0.2.1 --sport 40000 --dst 192.0.2.2 --dport 443"],
            tcp(n, "192.0.2.1", "192.0.2.2:443"),
        );
        a.row("#4", ALLOW, "failsafe-out udp/53; the reply by ct established", h, n,
            &["--out eth0 --proto udp --src 192.0.2.1 --sport 40000 --dst 192.0.2.53 --dport 53",
              "--in eth0 --proto udp --established --src 192.0.2.53 --sport 53 --dst 192.0.2.1 --dport 40000"],
            udp(n, "192.0.2.1", "192.0.2.53:53"));
        a.row(
            "#5",
            v(DROP),
            "ICMP is not failsafe (variant: profile)",
            h,
            n,
            &["--in eth0 --proto icmp --src 192.0.2.2 --dst 192.0.2.1"],
            icmp(&t.lan0, "192.0.2.2", "192.0.2.1"),
        );
        a.row(
            "#6",
            ALLOW,
            "eth1 has no HEP",
            h,
            n,
            &["--in eth1 --src 198.51.100.9 --sport 40000 --dst 198.51.100.45 --dport 8080"],
            tcp(&t.lan1, "198.51.100.9", "198.51.100.45:8080"),
        );
        a.finish();
    }
}

// ---- T2 -----------------------------------------------------------------------------------------------

#[test]
fn t2_agreement() {
    if !require_root("t2_agreement") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);
    for (variant, scenario, egress) in [
        ("T2", sc::t2(), DROP),
        ("T2 variant a", sc::t2_types_ingress_egress(), DROP),
        ("T2 variant b", sc::t2_egress_rule(), ALLOW),
    ] {
        t.apply(&scenario.files());
        let mut a = Agreement::new(variant, &[n]);
        a.row(
            "#1",
            ALLOW,
            "rule match; the SYN-ACK by ct established",
            h,
            n,
            &[
                "--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 80",
                "--out eth0 --established --src 192.0.2.1 --sport 80 --dst 192.0.2.2 --dport 40000",
            ],
            tcp_data(&t.lan0, "192.0.2.2:40000", "192.0.2.1:80"),
        );
        a.row(
            "#2",
            DROP,
            "end-of-tier deny",
            h,
            n,
            &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 81"],
            tcp(&t.lan0, "192.0.2.2", "192.0.2.1:81"),
        );
        a.row(
            "#3",
            egress,
            "egress: default deny / end of tier / variant b allows",
            h,
            n,
            &["--out eth0 --src 192.0.2.1 --sport 40000 --dst 192.0.2.2 --dport 443"],
            tcp(n, "192.0.2.1", "192.0.2.2:443"),
        );
        a.finish();
    }
}

// ---- T3 -----------------------------------------------------------------------------------------------

#[test]
fn t3_agreement() {
    if !require_root("t3_agreement") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);
    let row1 = ["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 80"];
    let row2 = ["--in eth0 --src 192.0.2.100 --sport 40000 --dst 192.0.2.1 --dport 80"];
    let mut a = Agreement::new("T3", &[n]);
    t.apply(&sc::t3().files());
    a.row(
        "#1",
        DROP,
        "a-deny (order 10) first",
        h,
        n,
        &row1,
        tcp(&t.lan0, "192.0.2.2", "192.0.2.1:80"),
    );
    a.row(
        "#2",
        ALLOW,
        "b-allow (20) before m-deny (+∞)",
        h,
        n,
        &row2,
        tcp(&t.lan0, "192.0.2.100", "192.0.2.1:80"),
    );
    t.apply(&sc::t3_without_order().files());
    a.row(
        "#3",
        ALLOW,
        "tie at +∞: b-allow < m-deny",
        h,
        n,
        &row2,
        tcp(&t.lan0, "192.0.2.100", "192.0.2.1:80"),
    );
    t.apply(&sc::t3_z_allow().files());
    a.row(
        "#4",
        DROP,
        "m-deny < z-allow",
        h,
        n,
        &row2,
        tcp(&t.lan0, "192.0.2.100", "192.0.2.1:80"),
    );
    a.finish();
}

// ---- T4 -----------------------------------------------------------------------------------------------

#[test]
fn t4_agreement() {
    if !require_root("t4_agreement") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);
    let row1 = ["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 80"];
    let row2 = ["--in eth0 --src 203.0.113.5 --sport 40000 --dst 192.0.2.1 --dport 80"];
    let mut a = Agreement::new("T4", &[n]);
    t.apply(&sc::t4().files());
    a.row(
        "#1",
        DROP,
        "Log continues; Pass skips p2; no profile ⇒ deny",
        h,
        n,
        &row1,
        tcp(&t.lan0, "192.0.2.2", "192.0.2.1:80"),
    );
    a.row(
        "#2",
        ALLOW,
        "no Pass match ⇒ p2 allows",
        h,
        n,
        &row2,
        tcp(&t.lan0, "203.0.113.5", "192.0.2.1:80"),
    );
    t.apply(&sc::t4_default_allow().files());
    a.row(
        "#3",
        ALLOW,
        "Pass ⇒ the profile allows",
        h,
        n,
        &row1,
        tcp(&t.lan0, "192.0.2.2", "192.0.2.1:80"),
    );
    a.finish();
}

// ---- T5 -----------------------------------------------------------------------------------------------

/// Packet 1: to node1's node port, DNATed by kube-proxy to the pod behind eth2.
const T5_ROW1: &str =
    "--in eth0 --out eth2 --src 203.0.113.7 --sport 40000 --dst 198.51.100.4 --dport 31852 --dnat-dst 198.51.100.200:8080";
const T5_ROW6: &str = "--in eth0 --src 198.51.100.5 --sport 40000 --dst 198.51.100.4 --dport 10250";
const T5_ROW8: &str = "--out eth0 --src 198.51.100.4 --sport 40000 --dst 203.0.113.34 --dport 443";
const T5_ROW8_REPLY: &str =
    "--in eth0 --established --src 203.0.113.34 --sport 443 --dst 198.51.100.4 --dport 40000";
const T5_ROW5: &str = "--in eth0 --src 203.0.113.7 --sport 40000 --dst 198.51.100.4 --dport 22";

#[test]
fn t5_agreement() {
    if !require_root("t5_agreement") {
        return;
    }
    let t = Topology::build(t5_plan());
    let _s = [
        Servers::start(&t.node, &[22, 9100, 10250, 31853], &[]),
        Servers::start(&t.lan0, &[443], &[]),
        Servers::start(t.pod(), &[8080], &["198.51.100.200:8080"]),
        Servers::start(t.peer(), &[22, 31852], &[]),
    ];
    kube_proxy_nodeport(&t.node, "198.51.100.4", 31852, "198.51.100.200", 8080);
    let (h, n) = (&t.hpd, &t.node);
    t.apply(&sc::t5().files());
    let mut a = Agreement::new("T5", &[n]);
    a.row("#1+#2", ALLOW, "preDNAT allow-nodeport; forward to the pod allowed by default; the rest of the flow by ct established", h, n,
        &[T5_ROW1, &format!("{T5_ROW1} --established")],
        tcp_data(&t.lan0, "203.0.113.7", "198.51.100.4:31852"));
    a.row(
        "#3",
        DROP,
        "allow-cluster-internal-ingress-only, explicit Deny",
        h,
        n,
        &["--in eth0 --src 203.0.113.7 --sport 40000 --dst 198.51.100.4 --dport 31853"],
        tcp(&t.lan0, "203.0.113.7", "198.51.100.4:31853"),
    );
    a.row(
        "#4",
        DROP,
        "allow-nodeport needs TCP ⇒ the order-20 Deny",
        h,
        n,
        &[&T5_ROW1.replace("--in", "--proto udp --in")],
        udp(&t.lan0, "203.0.113.7", "198.51.100.4:31852"),
    );
    a.row(
        "#5",
        ALLOW,
        "failsafe-in before the preDNAT policies",
        h,
        n,
        &[T5_ROW5],
        tcp(&t.lan0, "203.0.113.7", "198.51.100.4:22"),
    );
    a.row(
        "#6",
        ALLOW,
        "cluster net ⇒ preDNAT Allow ⇒ normal ingress skipped",
        h,
        n,
        &[T5_ROW6],
        tcp(t.peer(), "198.51.100.5", "198.51.100.4:10250"),
    );
    a.row(
        "#7",
        ALLOW,
        "pod net",
        h,
        n,
        &["--in eth0 --src 198.51.100.177 --sport 40000 --dst 198.51.100.4 --dport 9100"],
        tcp(&t.lan0, "198.51.100.177", "198.51.100.4:9100"),
    );
    a.row(
        "#8",
        ALLOW,
        "normal egress allow-outbound-external; the reply by ct established",
        h,
        n,
        &[T5_ROW8, T5_ROW8_REPLY],
        tcp_data(n, "198.51.100.4", "203.0.113.34:443"),
    );
    a.finish();

    t.apply(&sc::t5_without_expected_ips().files());
    let mut a = Agreement::new("T5 row 9", &[n]);
    a.row(
        "#9",
        DROP,
        "dst selector set is {node2} only ⇒ the Deny",
        h,
        n,
        &[T5_ROW1],
        tcp(&t.lan0, "203.0.113.7", "198.51.100.4:31852"),
    );
    a.finish();

    t.apply(&sc::t5_without_label().files());
    let mut a = Agreement::new("T5 row 10", &[n]);
    a.row(
        "#10",
        ALLOW,
        "no policy selects the HEP ⇒ forward default allows",
        h,
        n,
        &[T5_ROW1],
        tcp_data(&t.lan0, "203.0.113.7", "198.51.100.4:31852"),
    );
    a.row(
        "#10 (#6)",
        DROP,
        "the HEP still exists: local ingress denied",
        h,
        n,
        &[T5_ROW6],
        tcp(t.peer(), "198.51.100.5", "198.51.100.4:10250"),
    );
    a.row(
        "#10 (#8)",
        DROP,
        "the HEP still exists: local egress denied",
        h,
        n,
        &[T5_ROW8],
        tcp(n, "198.51.100.4", "203.0.113.34:443"),
    );
    a.row(
        "#10 (#5)",
        ALLOW,
        "failsafe",
        h,
        n,
        &[T5_ROW5],
        tcp(&t.lan0, "203.0.113.7", "198.51.100.4:22"),
    );
    a.finish();

    // Node-selective variant: the same files on node1 and node2 (the peer runs its own hostpolicyd).
    let selective = sc::t5_node_selective("nodeport-external-ingress == 'true'");
    t.apply(&selective.files());
    t.hpd_peer.set_config(&selective.files());
    t.hpd_peer.must_apply(t.peer());
    let mut a = Agreement::new("T5 node-selective", &[n, t.peer()]);
    a.row(
        "node1",
        ALLOW,
        "node1 carries the label ⇒ allow-nodeport",
        h,
        n,
        &[T5_ROW1],
        tcp_data(&t.lan0, "203.0.113.7", "198.51.100.4:31852"),
    );
    a.row(
        "node2",
        DROP,
        "node2 lacks the label ⇒ the Deny",
        &t.hpd_peer,
        t.peer(),
        &["--in eth0 --src 203.0.113.7 --sport 40000 --dst 198.51.100.5 --dport 31852"],
        tcp(&t.lan0, "203.0.113.7", "198.51.100.5:31852"),
    );
    // The how-to's selector as written: both apply and explain refuse the configuration (exit 1).
    h.set_config(&sc::t5_node_selective("nodeport-external-ingress: true").files());
    let applied = h.apply(n);
    let explained = h.run(
        n,
        &[
            "explain",
            "--json",
            "--in",
            "eth0",
            "--src",
            "203.0.113.7",
            "--dst",
            "198.51.100.4",
            "--dport",
            "31852",
        ],
    );
    a.agree(
        "invalid selector",
        applied.status.code() == Some(1) && explained.status.code() == Some(1),
        &format!(
            "apply and explain both exit 1 (got {:?} and {:?})",
            applied.status.code(),
            explained.status.code()
        ),
    );
    a.finish();
}

// ---- T6 -----------------------------------------------------------------------------------------------

#[test]
fn t6_agreement() {
    if !require_root("t6_agreement") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);
    t.apply(&sc::t6().files());
    let mut a = Agreement::new("T6", &[n]);
    a.row(
        "#1",
        DROP,
        "preDNAT no match ⇒ normal ingress has no policy",
        h,
        n,
        &["--in eth0 --src 203.0.113.7 --sport 40000 --dst 192.0.2.1 --dport 8080"],
        tcp(&t.lan0, "203.0.113.7", "192.0.2.1:8080"),
    );
    a.row(
        "#2",
        ALLOW,
        "preDNAT allow skips normal ingress",
        h,
        n,
        &["--in eth0 --src 203.0.113.7 --sport 40000 --dst 192.0.2.1 --dport 31852"],
        tcp(&t.lan0, "203.0.113.7", "192.0.2.1:31852"),
    );
    a.row(
        "#3",
        ALLOW,
        "forward-ingress(eth0) has no AoF policy; eth1 has no HEP",
        h,
        n,
        &["--in eth0 --out eth1 --src 203.0.113.7 --sport 40000 --dst 198.51.100.99 --dport 8080"],
        tcp(&t.lan0, "203.0.113.7", "198.51.100.99:8080"),
    );
    for (what, scenario) in [
        ("without applyOnForward", sc::t6_apply_on_forward("")),
        (
            "with egress rules",
            sc::t6_with("egress: [{action: Allow}]"),
        ),
        (
            "with types [Ingress, Egress]",
            sc::t6_with("types: [Ingress, Egress]"),
        ),
        ("with doNotTrack as well", sc::t6_with("doNotTrack: true")),
    ] {
        h.set_config(&scenario.files());
        let applied = h.apply(n);
        let explained = h.run(
            n,
            &[
                "explain",
                "--in",
                "eth0",
                "--src",
                "203.0.113.7",
                "--dst",
                "192.0.2.1",
                "--dport",
                "31852",
            ],
        );
        a.agree(
            &format!("reject {what}"),
            applied.status.code() == Some(1) && explained.status.code() == Some(1),
            &format!(
                "apply and explain both exit 1 (got {:?} and {:?})",
                applied.status.code(),
                explained.status.code()
            ),
        );
    }
    a.finish();
}

// ---- T7 -----------------------------------------------------------------------------------------------

#[test]
fn t7_agreement() {
    if !require_root("t7_agreement") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);
    for (variant, scenario, aof) in [
        ("T7", sc::t7(), true),
        ("T7 variant", sc::t7_without_apply_on_forward(), false),
    ] {
        t.apply(&scenario.files());
        let fwd = |deny| if aof { deny } else { ALLOW };
        let mut a = Agreement::new(variant, &[n]);
        a.row("#1", ALLOW, "eth1 forward-egress allows 22 (variant: forward default)", h, n,
            &["--in eth0 --out eth1 --src 192.0.2.50 --sport 40000 --dst 198.51.100.99 --dport 22"],
            tcp(&t.lan0, "192.0.2.50", "198.51.100.99:22"));
        a.row("#2", fwd(DROP), "AoF egress policy on eth1 ⇒ end of tier (variant: forward default)", h, n,
            &["--in eth0 --out eth1 --src 192.0.2.50 --sport 40000 --dst 198.51.100.99 --dport 80"],
            tcp(&t.lan0, "192.0.2.50", "198.51.100.99:80"));
        a.row("#3", ALLOW, "eth1 has no AoF ingress policy; eth0 unpoliced", h, n,
            &["--in eth1 --out eth0 --src 198.51.100.99 --sport 40000 --dst 192.0.2.50 --dport 80"],
            tcp(&t.lan1, "198.51.100.99", "192.0.2.50:80"));
        a.row(
            "#4",
            ALLOW,
            "the policy applies to local egress",
            h,
            n,
            &["--out eth1 --src 198.51.100.45 --sport 40000 --dst 198.51.100.99 --dport 22"],
            tcp(n, "198.51.100.45", "198.51.100.99:22"),
        );
        a.row(
            "#5",
            DROP,
            "local egress to 80: end of tier",
            h,
            n,
            &["--out eth1 --src 198.51.100.45 --sport 40000 --dst 198.51.100.99 --dport 80"],
            tcp(n, "198.51.100.45", "198.51.100.99:80"),
        );
        a.row(
            "#6",
            DROP,
            "no normal ingress policy",
            h,
            n,
            &["--in eth1 --src 198.51.100.99 --sport 40000 --dst 198.51.100.45 --dport 8080"],
            tcp(&t.lan1, "198.51.100.99", "198.51.100.45:8080"),
        );
        a.finish();
    }
}

// ---- T8 -----------------------------------------------------------------------------------------------

const T8_SYN: &str = "--in eth0 --src 192.0.2.200 --sport 40000 --dst 192.0.2.1 --dport 12211";
const T8_SYNACK: &str = "--out eth0 --src 192.0.2.1 --sport 12211 --dst 192.0.2.200 --dport 40000";

#[test]
fn t8_agreement() {
    if !require_root("t8_agreement") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);
    t.apply(&sc::t8().files());
    let mut a = Agreement::new("T8", &[n]);
    a.row(
        "#1+#2",
        ALLOW,
        "untracked ingress allow; the SYN-ACK by untracked egress allow",
        h,
        n,
        &[T8_SYN, T8_SYNACK],
        tcp_data(&t.lan0, "192.0.2.200:40000", "192.0.2.1:12211"),
    );
    a.row(
        "#3",
        DROP,
        "no untracked match ⇒ tracked path ⇒ no normal policy",
        h,
        n,
        &["--in eth0 --src 192.0.2.201 --sport 40000 --dst 192.0.2.1 --dport 12211"],
        tcp(&t.lan0, "192.0.2.201", "192.0.2.1:12211"),
    );
    a.row(
        "#5",
        ALLOW,
        "failsafe before untracked policy",
        h,
        n,
        &["--in eth0 --src 192.0.2.201 --sport 40000 --dst 192.0.2.1 --dport 22"],
        tcp(&t.lan0, "192.0.2.201", "192.0.2.1:22"),
    );
    a.finish();

    t.apply(&sc::t8_without_egress().files());
    let mut a = Agreement::new("T8 row 4", &[n]);
    a.row(
        "#4",
        DROP,
        "the SYN-ACK reaches tracked egress with no policy",
        h,
        n,
        &[T8_SYN, T8_SYNACK],
        tcp(&t.lan0, "192.0.2.200:40000", "192.0.2.1:12211"),
    );
    a.finish();

    t.apply(&sc::t8_wildcard().files());
    let mut a = Agreement::new("T8 row 6", &[n]);
    a.row(
        "#6",
        DROP,
        "untracked policy ignored on `*` HEPs; no normal policy",
        h,
        n,
        &[T8_SYN],
        tcp(&t.lan0, "192.0.2.200:40000", "192.0.2.1:12211"),
    );
    a.row(
        "#6 (failsafe)",
        ALLOW,
        "failsafe-in on the `*` HEP",
        h,
        n,
        &["--in eth0 --src 192.0.2.201 --sport 40000 --dst 192.0.2.1 --dport 22"],
        tcp(&t.lan0, "192.0.2.201", "192.0.2.1:22"),
    );
    a.finish();
}

// ---- Beyond the spec's rows ------------------------------------------------------------------------------
// Paths the T1–T8 rows do not cross: a preDNAT Allow followed by another HostEndpoint's forward-egress
// policy, named ports and notPorts, ICMP types, the wildcard HostEndpoint, locally originated DNAT
// (checked in mangle postrouting), IPv6 with ICMPv6 types.

#[test]
fn beyond_the_spec_agreement() {
    if !require_root("beyond_the_spec_agreement") {
        return;
    }
    let mut plan = Plan::standard();
    plan.eth0.push("2001:db8::1/64");
    plan.lan0.extend(["2001:db8::2/64", "2001:db8::200/64"]);
    let t = Topology::build(plan);
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);

    // A preDNAT Allow skips forward ingress, not the outgoing HostEndpoint's forward egress (spec §3.3).
    let heps = docs(&[
        hep(
            "hep-eth0",
            "node1",
            Some("eth0"),
            &["192.0.2.1"],
            &[("role", "web")],
            &[],
        ),
        hep(
            "hep-eth1",
            "node1",
            Some("eth1"),
            &["198.51.100.45"],
            &[("network", "maintenance")],
            &[],
        ),
    ]);
    let policies = "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: pd}
  spec: {preDNAT: true, applyOnForward: true, selector: \"role == 'web'\", ingress: [{action: Allow, protocol: TCP, destination: {ports: [22, 80]}}]}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: aof-out}
  spec: {applyOnForward: true, selector: \"network == 'maintenance'\", types: [Egress], egress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]}
";
    apply(
        &t,
        &[("heps.yaml", heps), ("policies.yaml", policies.into())],
    );
    let mut a = Agreement::new("preDNAT then forward egress", &[n]);
    a.row(
        "fwd :80",
        DROP,
        "preDNAT Allow, then eth1's AoF egress: end of tier",
        h,
        n,
        &["--in eth0 --out eth1 --src 192.0.2.50 --sport 40000 --dst 198.51.100.99 --dport 80"],
        tcp(&t.lan0, "192.0.2.50", "198.51.100.99:80"),
    );
    a.row(
        "fwd :22",
        ALLOW,
        "preDNAT Allow, then eth1's AoF egress allows 22",
        h,
        n,
        &["--in eth0 --out eth1 --src 192.0.2.50 --sport 40000 --dst 198.51.100.99 --dport 22"],
        tcp(&t.lan0, "192.0.2.50", "198.51.100.99:22"),
    );
    a.row(
        "local :80",
        ALLOW,
        "preDNAT Allow skips normal ingress",
        h,
        n,
        &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 80"],
        tcp(&t.lan0, "192.0.2.2", "192.0.2.1:80"),
    );
    a.row(
        "fwd back",
        ALLOW,
        "eth1 has only AoF egress; eth0 has no AoF policy",
        h,
        n,
        &["--in eth1 --out eth0 --src 198.51.100.99 --sport 40000 --dst 192.0.2.50 --dport 80"],
        tcp(&t.lan1, "198.51.100.99", "192.0.2.50:80"),
    );
    a.finish();

    // Named ports, notPorts with nets, ICMP types; IPv6 with ICMPv6 types (neighbour discovery allowed).
    let heps = hep(
        "hep-eth0",
        "node1",
        Some("eth0"),
        &["192.0.2.1", "2001:db8::1"],
        &[("role", "web")],
        &[],
    )
    .replace(
        "spec:\n",
        "spec:\n  ports: [{name: web, protocol: TCP, port: 8080}]\n",
    );
    let policies = "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: mixed}
  spec:
    selector: \"role == 'web'\"
    ingress:
      - {action: Allow, protocol: TCP, destination: {ports: [web]}}
      - {action: Allow, protocol: ICMP, icmp: {type: 8}}
      - {action: Allow, protocol: TCP, source: {nets: [192.0.2.0/28]}, destination: {notPorts: [80, 81]}}
      - {action: Allow, protocol: ICMPv6, icmp: {type: 135}}
      - {action: Allow, protocol: ICMPv6, icmp: {type: 136}}
      - {action: Allow, protocol: ICMPv6, icmp: {type: 128}}
      - {action: Allow, protocol: TCP, source: {nets: [\"2001:db8::/120\"]}, destination: {ports: [80]}}
    egress:
      - {action: Allow, protocol: ICMPv6}
";
    apply(
        &t,
        &[("hep.yaml", heps), ("policies.yaml", policies.into())],
    );
    let mut a = Agreement::new("named ports, notPorts, ICMP, IPv6", &[n]);
    a.row(
        "named :8080",
        ALLOW,
        "named port web = TCP 8080 on the HEP's expectedIPs",
        h,
        n,
        &["--in eth0 --src 192.0.2.100 --sport 40000 --dst 192.0.2.1 --dport 8080"],
        tcp(&t.lan0, "192.0.2.100", "192.0.2.1:8080"),
    );
    a.row(
        "notPorts :80",
        DROP,
        "80 excluded by notPorts",
        h,
        n,
        &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 80"],
        tcp(&t.lan0, "192.0.2.2", "192.0.2.1:80"),
    );
    a.row(
        "notPorts :12211",
        ALLOW,
        "source in /28, port not excluded",
        h,
        n,
        &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 12211"],
        tcp(&t.lan0, "192.0.2.2", "192.0.2.1:12211"),
    );
    a.row(
        "notPorts other src",
        DROP,
        "source outside the /28",
        h,
        n,
        &["--in eth0 --src 192.0.2.100 --sport 40000 --dst 192.0.2.1 --dport 12211"],
        tcp(&t.lan0, "192.0.2.100", "192.0.2.1:12211"),
    );
    a.row(
        "ping",
        ALLOW,
        "ICMP type 8",
        h,
        n,
        &["--in eth0 --proto icmp --src 192.0.2.2 --dst 192.0.2.1"],
        icmp(&t.lan0, "192.0.2.2", "192.0.2.1"),
    );
    a.row(
        "ping6",
        ALLOW,
        "ICMPv6 type 128 (NDP by 135/136)",
        h,
        n,
        &["--in eth0 --proto icmpv6 --src 2001:db8::200 --dst 2001:db8::1"],
        icmp(&t.lan0, "2001:db8::200", "2001:db8::1"),
    );
    a.row(
        "v6 :80 inside",
        ALLOW,
        "2001:db8::/120",
        h,
        n,
        &["--in eth0 --src 2001:db8::2 --sport 40000 --dst 2001:db8::1 --dport 80"],
        tcp(&t.lan0, "2001:db8::2", "[2001:db8::1]:80"),
    );
    a.row(
        "v6 :80 outside",
        DROP,
        "outside 2001:db8::/120",
        h,
        n,
        &["--in eth0 --src 2001:db8::200 --sport 40000 --dst 2001:db8::1 --dport 80"],
        tcp(&t.lan0, "2001:db8::200", "[2001:db8::1]:80"),
    );
    a.row(
        "named :8080 v6",
        ALLOW,
        "the named port's addresses are the HEP's expectedIPs, IPv6 included",
        h,
        n,
        &["--in eth0 --src 2001:db8::200 --sport 40000 --dst 2001:db8::1 --dport 8080"],
        tcp(&t.lan0, "2001:db8::200", "[2001:db8::1]:8080"),
    );
    a.finish();

    // The wildcard HostEndpoint: preDNAT covers every interface; normal ingress default-denies.
    let star = hep(
        "all-ifaces",
        "node1",
        Some("*"),
        &[],
        &[("role", "web")],
        &[],
    );
    let policies = "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: pd-80}
  spec: {preDNAT: true, applyOnForward: true, selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]}
";
    apply(
        &t,
        &[("hep.yaml", star), ("policies.yaml", policies.into())],
    );
    let mut a = Agreement::new("wildcard HostEndpoint", &[n]);
    a.row(
        "eth1 :80",
        ALLOW,
        "preDNAT on the `*` HEP",
        h,
        n,
        &["--in eth1 --src 198.51.100.9 --sport 40000 --dst 198.51.100.45 --dport 80"],
        tcp(&t.lan1, "198.51.100.9", "198.51.100.45:80"),
    );
    a.row(
        "eth1 :8080",
        DROP,
        "no normal ingress policy on the `*` HEP",
        h,
        n,
        &["--in eth1 --src 198.51.100.9 --sport 40000 --dst 198.51.100.45 --dport 8080"],
        tcp(&t.lan1, "198.51.100.9", "198.51.100.45:8080"),
    );
    a.row(
        "eth0 :22",
        ALLOW,
        "failsafe",
        h,
        n,
        &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 22"],
        tcp(&t.lan0, "192.0.2.2", "192.0.2.1:22"),
    );
    a.finish();

    // doNotTrack and the raw failsafe: a source port in the outbound failsafe list (2379) makes the raw
    // failsafe accept the SYN without the untracked verdict (spec §4.3), so the tracked stages decide.
    t.apply(&sc::t8().files());
    let mut a = Agreement::new("doNotTrack and the raw failsafe", &[n]);
    a.row(
        "sport 2379",
        DROP,
        "raw failsafe (reply to outbound tcp 2379) skips the untracked Allow; no normal policy",
        h,
        n,
        &["--in eth0 --src 192.0.2.200 --sport 2379 --dst 192.0.2.1 --dport 12211"],
        tcp(&t.lan0, "192.0.2.200:2379", "192.0.2.1:12211"),
    );
    a.row(
        "sport 40001",
        ALLOW,
        "untracked Allow both ways",
        h,
        n,
        &[
            &T8_SYN.replace("40000", "40001"),
            &T8_SYNACK.replace("40000", "40001"),
        ],
        tcp_data(&t.lan0, "192.0.2.200:40001", "192.0.2.1:12211"),
    );
    a.finish();

    // Locally originated DNAT (nat output): normal egress is checked on the translated destination in
    // mangle postrouting (spec §3.3 "Outbound").
    common::topology::nft_load(
        n,
        "table ip hp-test-natout {
  chain out {
    type nat hook output priority -100; policy accept;
    ip daddr 203.0.113.99 tcp dport 80 dnat to 192.0.2.2:80
    ip daddr 203.0.113.98 tcp dport 80 dnat to 192.0.2.2:443
  }
}
",
    );
    n.exec_ok("ip", ["route", "replace", "203.0.113.96/28", "dev", "eth0"]);
    let heps = hep(
        "hep-eth0",
        "node1",
        Some("eth0"),
        &["192.0.2.1"],
        &[("role", "web")],
        &[],
    );
    let policies = "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: out-to-2}
  spec: {selector: all(), egress: [{action: Allow, protocol: TCP, destination: {nets: [192.0.2.2/32], ports: [80]}}]}
";
    apply(
        &t,
        &[("hep.yaml", heps), ("policies.yaml", policies.into())],
    );
    let mut a = Agreement::new("locally originated DNAT", &[n]);
    a.row("DNAT to :80", ALLOW, "the translated destination matches out-to-2", h, n,
        &["--out eth0 --src 192.0.2.1 --sport 40000 --dst 203.0.113.99 --dport 80 --dnat-dst 192.0.2.2:80"],
        tcp(n, "192.0.2.1", "203.0.113.99:80"));
    a.row("DNAT to :443", DROP, "the translated port is not allowed", h, n,
        &["--out eth0 --src 192.0.2.1 --sport 40000 --dst 203.0.113.98 --dport 80 --dnat-dst 192.0.2.2:443"],
        tcp(n, "192.0.2.1", "203.0.113.98:80"));
    a.row(
        "direct :80",
        ALLOW,
        "out-to-2",
        h,
        n,
        &["--out eth0 --src 192.0.2.1 --sport 40000 --dst 192.0.2.2 --dport 80"],
        tcp(n, "192.0.2.1", "192.0.2.2:80"),
    );
    a.finish();
}

// ---- Tiers (../shared/spec/calico-tiers.md) ---------------------------------------------------------------
// Every row cites the tiers spec section it checks; spec, explain and the kernel must agree on each.

fn tier_doc(name: &str, spec: &str) -> String {
    format!("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n")
}

fn gnp_doc(name: &str, spec: &str) -> String {
    format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}")
}

/// Tiers spec §1.1 (order, ties by name, an omitted order = 1000000), §3.1 (a tier that selects nothing
/// is skipped), §3.2 (Pass into the next tier, Deny of an earlier tier, end-of-tier Deny and Pass), in
/// both families.
fn tiered_guard_rails(platform_default: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "hep.yaml",
            hep("hep-eth0", "node1", Some("eth0"), &["192.0.2.1", "2001:db8::1"], &[("role", "web")], &[]),
        ),
        (
            "tiers.yaml",
            docs(&[
                tier_doc("platform", &format!("order: 100, defaultAction: {platform_default}")),
                // Order 50, before platform: but its only policy selects other endpoints (§3.1).
                tier_doc("other", "order: 50"),
                // No order: 1000000, tied with `default`; the name decides (§1.1).
                tier_doc("aaa", ""),
                tier_doc("zzz", ""),
            ]),
        ),
        (
            "policies.yaml",
            docs(&[
                gnp_doc(
                    "platform.guard",
                    "  tier: platform
  order: 1
  selector: \"role == 'web'\"
  types: [Ingress, Egress]
  ingress:
    - {action: Allow, protocol: ICMPv6}
    - {action: Deny, source: {nets: [192.0.2.100/32]}}
    - {action: Deny, source: {nets: [\"2001:db8::200/128\"]}}
    - {action: Pass, protocol: TCP, destination: {ports: [80, 81, 8080]}}
  egress:
    - {action: Allow, protocol: ICMPv6}
",
                ),
                gnp_doc("other.db-only", "  tier: other\n  selector: \"role == 'db'\"\n  ingress: [{action: Allow}]\n"),
                gnp_doc(
                    "aaa.deny-50",
                    "  tier: aaa\n  selector: all()\n  ingress: [{action: Deny, source: {nets: [192.0.2.50/32]}}, {action: Pass}]\n",
                ),
                gnp_doc(
                    "allow-web",
                    "  order: 10\n  selector: \"role == 'web'\"\n  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80, 8080, 12211]}}]\n",
                ),
                gnp_doc(
                    "zzz.allow-81",
                    "  tier: zzz\n  selector: all()\n  ingress: [{action: Allow, protocol: TCP, destination: {ports: [81]}}]\n",
                ),
            ]),
        ),
    ]
}

#[test]
fn tiers_order_pass_and_end_of_tier_agreement() {
    if !require_root("tiers_order_pass_and_end_of_tier_agreement") {
        return;
    }
    let mut plan = Plan::standard();
    plan.eth0.push("2001:db8::1/64");
    plan.lan0.extend(["2001:db8::2/64", "2001:db8::200/64"]);
    let t = Topology::build(plan);
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);
    for (variant, platform_default) in [
        ("tiers §3.2: platform defaultAction Deny", "Deny"),
        ("tiers §3.2: platform defaultAction Pass", "Pass"),
    ] {
        apply(&t, &tiered_guard_rails(platform_default));
        let end_of_platform = if platform_default == "Deny" {
            DROP
        } else {
            ALLOW
        };
        let mut a = Agreement::new(variant, &[n]);
        a.row("§3.2 Pass into the next tier", ALLOW,
            "platform passes :80 (the skipped tier `other` selects no endpoint, §3.1), so does aaa; default allows", h, n,
            &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 80"],
            tcp(&t.lan0, "192.0.2.2", "192.0.2.1:80"));
        a.row(
            "§3.2 Deny of an earlier tier",
            DROP,
            "platform denies .100 before default's Allow",
            h,
            n,
            &["--in eth0 --src 192.0.2.100 --sport 40000 --dst 192.0.2.1 --dport 80"],
            tcp(&t.lan0, "192.0.2.100", "192.0.2.1:80"),
        );
        a.row("§3.2 end of tier", end_of_platform,
            "nothing in platform matches :12211: its defaultAction (Deny: drop, although default allows; Pass: default allows)", h, n,
            &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 12211"],
            tcp(&t.lan0, "192.0.2.2", "192.0.2.1:12211"));
        a.row("§1.1 tie: aaa before default", DROP,
            "aaa (1000000) sorts before default (1000000): its Deny of .50 wins over default's Allow :8080", h, n,
            &["--in eth0 --src 192.0.2.50 --sport 40000 --dst 192.0.2.1 --dport 8080"],
            tcp(&t.lan0, "192.0.2.50", "192.0.2.1:8080"));
        a.row("§1.1 tie: zzz after default", DROP,
            "platform passes :81, default has no match: its end-of-tier Deny drops before zzz's Allow", h, n,
            &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 81"],
            tcp(&t.lan0, "192.0.2.2", "192.0.2.1:81"));
        a.row(
            "§3.2 IPv6 Pass",
            ALLOW,
            "IPv6: platform passes :8080, default allows",
            h,
            n,
            &["--in eth0 --src 2001:db8::2 --sport 40000 --dst 2001:db8::1 --dport 8080"],
            tcp(&t.lan0, "2001:db8::2", "[2001:db8::1]:8080"),
        );
        a.row(
            "§3.2 IPv6 Deny",
            DROP,
            "IPv6: platform denies ::200",
            h,
            n,
            &["--in eth0 --src 2001:db8::200 --sport 40000 --dst 2001:db8::1 --dport 80"],
            tcp(&t.lan0, "2001:db8::200", "[2001:db8::1]:80"),
        );
        a.row(
            "§3.2 IPv6 end of tier",
            end_of_platform,
            "IPv6: nothing in platform matches :12211",
            h,
            n,
            &["--in eth0 --src 2001:db8::2 --sport 40000 --dst 2001:db8::1 --dport 12211"],
            tcp(&t.lan0, "2001:db8::2", "[2001:db8::1]:12211"),
        );
        a.finish();
    }
}

/// Tiers spec §3.3: a Pass out of the last tier (or the last tier's defaultAction Pass) reaches the
/// profiles: `projectcalico-default-allow` allows, no profile (or only an undefined one, issue 16 item 7)
/// drops.
#[test]
fn tiers_pass_out_of_the_last_tier_agreement() {
    if !require_root("tiers_pass_out_of_the_last_tier_agreement") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);
    let guard = |rules: &str, default_action: &str| {
        docs(&[
            tier_doc(
                "platform",
                &format!("order: 100, defaultAction: {default_action}"),
            ),
            gnp_doc(
                "guard",
                &format!("  tier: platform\n  selector: all()\n  ingress: {rules}\n"),
            ),
        ])
    };
    for (variant, policy, profiles, verdict) in [
        (
            "§3.3 Pass rule, default-allow profile",
            guard("[{action: Pass}]", "Deny"),
            &["projectcalico-default-allow"][..],
            ALLOW,
        ),
        (
            "§3.3 Pass rule, no profile",
            guard("[{action: Pass}]", "Deny"),
            &[][..],
            DROP,
        ),
        (
            "§3.3 Pass rule, undefined profile only",
            guard("[{action: Pass}]", "Deny"),
            &["knp.default.x"][..],
            DROP,
        ),
        (
            "§3.3 Pass rule, undefined then default-allow",
            guard("[{action: Pass}]", "Deny"),
            &["knp.default.x", "projectcalico-default-allow"][..],
            ALLOW,
        ),
        (
            "§3.3 defaultAction Pass, default-allow profile",
            guard("[{action: Deny, source: {nets: [192.0.2.100/32]}}]", "Pass"),
            &["projectcalico-default-allow"][..],
            ALLOW,
        ),
        (
            "§3.3 defaultAction Pass, no profile",
            guard("[{action: Deny, source: {nets: [192.0.2.100/32]}}]", "Pass"),
            &[][..],
            DROP,
        ),
    ] {
        // T1's HostEndpoint with the profiles, and the policy.
        let hep = sc::t1_with_profiles(profiles);
        let mut files = hep.files();
        files.push(("policy.yaml", &policy));
        t.apply(&files);
        let mut a = Agreement::new(variant, &[n]);
        a.row(
            "§3.3",
            verdict,
            variant,
            h,
            n,
            &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 80"],
            tcp(&t.lan0, "192.0.2.2", "192.0.2.1:80"),
        );
        a.finish();
    }
}

/// Tiers spec §3.4: untracked and preDNAT tiers never drop at their end, whatever their defaultAction;
/// forward tiers (applyOnForward) do, and a Pass out of the last forward tier is allowed (§3.3).
#[test]
fn tiers_stages_and_forward_agreement() {
    if !require_root("tiers_stages_and_forward_agreement") {
        return;
    }
    let t = Topology::standard();
    let _s = standard_servers(&t);
    let (h, n) = (&t.hpd, &t.node);
    let files = vec![
        (
            "heps.yaml",
            docs(&[
                hep("hep-eth0", "node1", Some("eth0"), &["192.0.2.1"], &[("role", "web")], &[]),
                hep("hep-eth1", "node1", Some("eth1"), &["198.51.100.45"], &[("role", "lan1")], &[]),
            ]),
        ),
        (
            "policies.yaml",
            docs(&[
                tier_doc("platform", "order: 100, defaultAction: Deny"),
                gnp_doc("platform.raw", "  tier: platform\n  doNotTrack: true\n  applyOnForward: true\n  selector: \"role == 'web'\"\n  ingress: [{action: Deny, source: {nets: [192.0.2.201/32]}}]\n"),
                gnp_doc("platform.pre", "  tier: platform\n  preDNAT: true\n  applyOnForward: true\n  selector: \"role == 'web'\"\n  ingress: [{action: Deny, source: {nets: [192.0.2.100/32]}}]\n"),
                gnp_doc("platform.fw", "  tier: platform\n  applyOnForward: true\n  selector: \"role == 'web'\"\n  ingress:\n    - {action: Deny, protocol: TCP, destination: {ports: [8080]}}\n    - {action: Pass, protocol: TCP, destination: {ports: [80]}}\n"),
                gnp_doc("allow-local", "  selector: \"role == 'web'\"\n  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80, 8080]}}]\n"),
            ]),
        ),
    ];
    apply(&t, &files);
    let mut a = Agreement::new("tiers §3.4 stages", &[n]);
    a.row("§3.4 untracked and preDNAT tiers fall through", ALLOW,
        "no untracked or preDNAT rule matches and neither tier drops at its end; normal: platform passes :80, default allows", h, n,
        &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 80"],
        tcp(&t.lan0, "192.0.2.2", "192.0.2.1:80"));
    a.row(
        "§3.4 untracked Deny",
        DROP,
        "the untracked tier denies .201",
        h,
        n,
        &["--in eth0 --src 192.0.2.201 --sport 40000 --dst 192.0.2.1 --dport 80"],
        tcp(&t.lan0, "192.0.2.201", "192.0.2.1:80"),
    );
    a.row(
        "§3.4 preDNAT Deny",
        DROP,
        "the preDNAT tier denies .100",
        h,
        n,
        &["--in eth0 --src 192.0.2.100 --sport 40000 --dst 192.0.2.1 --dport 80"],
        tcp(&t.lan0, "192.0.2.100", "192.0.2.1:80"),
    );
    a.row(
        "§3.2 normal Deny before default's Allow",
        DROP,
        "platform.fw denies :8080 locally too",
        h,
        n,
        &["--in eth0 --src 192.0.2.2 --sport 40000 --dst 192.0.2.1 --dport 8080"],
        tcp(&t.lan0, "192.0.2.2", "192.0.2.1:8080"),
    );
    a.row(
        "§3.4 forward Deny",
        DROP,
        "forward ingress of eth0: platform.fw denies :8080",
        h,
        n,
        &["--in eth0 --out eth1 --src 192.0.2.50 --sport 40000 --dst 198.51.100.99 --dport 8080"],
        tcp(&t.lan0, "192.0.2.50", "198.51.100.99:8080"),
    );
    a.row("§3.3 forward Pass out of the last tier", ALLOW,
        "platform.fw passes :80; no later forward tier: no verdict, FORWARD allows; eth1 has no AoF policy", h, n,
        &["--in eth0 --out eth1 --src 192.0.2.50 --sport 40000 --dst 198.51.100.99 --dport 80"],
        tcp(&t.lan0, "192.0.2.50", "198.51.100.99:80"));
    a.row(
        "§3.2 forward end of tier",
        DROP,
        "forward ingress: nothing in platform matches :22: end-of-tier Deny",
        h,
        n,
        &["--in eth0 --out eth1 --src 192.0.2.50 --sport 40000 --dst 198.51.100.99 --dport 22"],
        tcp(&t.lan0, "192.0.2.50", "198.51.100.99:22"),
    );
    a.finish();
}
