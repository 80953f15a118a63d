//! Issue 12 against a real kernel, with real packets, each test in its own network namespaces:
//!
//! - the mixed window: a reload that changes a GlobalNetworkSet's `nets` AND a policy rule in the same
//!   save, swapped back and forth under a flood of new ICMP flows; not one packet may get a verdict that
//!   neither configuration gives. Counted in the kernel, by counters of the test's own table at input
//!   priority +10 (after every filter) and prerouting -400 (before them): no timed assertion. Both
//!   directions (a source both configurations drop; one both allow), with a state directory, without
//!   one, and with 3,000 filler policies;
//! - kills: `hostpolicyd apply` killed (SIGKILL, by `strace -e inject=sendmsg:signal=SIGKILL:when=K`)
//!   before each netlink message it sends, then either configuration applied again: the table equals a
//!   clean apply of it into a fresh namespace (set names aside), and the mark of the half-finished
//!   swap is gone.
//!
//! Addresses: node eth1 198.51.100.45/24, clients on its segment 198.51.100.20 and .21 (lan1).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::listing::{assert_same, listing, HashChain};
use common::netns::{require_root, NetNs};
use common::probe::socket_in;
use common::topology::{fresh_ns, nft_list, nft_load, output_text, Hpd, Plan, Topology};
use common::yaml::{docs, hep};
use rustix::net::{ipproto, AddressFamily, SendFlags, SocketType};

const NODE: &str = "198.51.100.45";
const LISTED_OLD: &str = "198.51.100.21";
const LISTED_NEW: &str = "198.51.100.20";

fn plan() -> Plan {
    Plan {
        eth0: vec!["192.0.2.1/24"],
        lan0: vec!["192.0.2.2/24"],
        eth1: vec!["198.51.100.45/24"],
        lan1: vec!["198.51.100.20/24", "198.51.100.21/24"],
        pod: None,
        peer: vec![],
    }
}

/// The configuration: HostEndpoint `node1-eth0` (label `host: "yes"`, on the node's eth1
/// here), empty failsafe lists, GlobalNetworkSet `listed` with `listed`, and policy `p`: from
/// `role == 'listed'` `first`, then (when `allow_rest`) Allow from the whole segment. `fillers`
/// policies more, each allowing one TCP port from 203.0.113.0/24 (never matched here).
fn config(listed: &str, first: &str, allow_rest: bool, fillers: usize) -> Vec<(String, String)> {
    let hep = hep(
        "node1-eth0",
        "node1",
        Some("eth1"),
        &[],
        &[("host", "yes")],
        &[],
    );
    let felix =
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n\
                 spec:\n  failsafeInboundHostPorts: []\n  failsafeOutboundHostPorts: []\n";
    let gns = format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: listed\n  labels: \
         {{role: listed}}\nspec:\n  nets: [{listed}/32]\n"
    );
    let rest = if allow_rest {
        "\n    - {action: Allow, source: {nets: [198.51.100.0/24]}}"
    } else {
        ""
    };
    let policy = format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec:\n  \
         order: 10\n  selector: \"host == 'yes'\"\n  ingress:\n    - {{action: {first}, source: \
         {{selector: \"role == 'listed'\"}}}}{rest}\n"
    );
    let mut files = vec![
        ("hep.yaml".to_string(), hep),
        ("felix.yaml".to_string(), felix.to_string()),
        ("gns.yaml".to_string(), gns),
        ("policy.yaml".to_string(), policy),
    ];
    if fillers > 0 {
        let parts: Vec<String> = (0..fillers)
            .map(|i| {
                format!(
                    "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: filler-{i}}}\n\
                     spec:\n  order: {}\n  selector: \"host == 'yes'\"\n  ingress:\n    - {{action: Allow, \
                     protocol: TCP, source: {{nets: [203.0.113.0/24]}}, destination: {{ports: [{}]}}}}\n",
                    100 + i,
                    10_000 + i
                )
            })
            .collect();
        files.push(("fillers.yaml".to_string(), docs(&parts)));
    }
    files
}

fn set_config(hpd: &Hpd, files: &[(String, String)]) {
    let f: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    hpd.set_config(&f);
}

fn state_dir(hpd: &Hpd) -> std::path::PathBuf {
    hpd.config_dir().parent().unwrap().join("state")
}

/// The Internet checksum.
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends ICMP echo requests from `src` to `dst` (in `ns`), each with a new identifier, so each is a new
/// conntrack flow, about one per millisecond, until `stop` or `max`; counts them in `sent`.
fn flood(ns: &NetNs, src: &str, dst: &str, stop: &AtomicBool, sent: &AtomicUsize, max: usize) {
    let fd = socket_in(
        ns,
        AddressFamily::INET,
        SocketType::RAW,
        Some(ipproto::ICMP),
    )
    .expect("raw socket");
    let addr = |a: &str| std::net::SocketAddrV4::new(a.parse().unwrap(), 0);
    rustix::net::bind(&fd, &addr(src)).unwrap_or_else(|e| panic!("bind {src}: {e}"));
    let to = addr(dst);
    let mut id: u16 = 1;
    while !stop.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) < max {
        let mut pkt = vec![8u8, 0, 0, 0];
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&1u16.to_be_bytes());
        pkt.extend_from_slice(b"hostpolicyd-atomic");
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
        let n = rustix::net::sendto(&fd, &pkt, SendFlags::empty(), &to).unwrap_or(0);
        if n > 0 {
            sent.fetch_add(1, Ordering::SeqCst);
        }
        id = id.wrapping_add(1).max(1);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Echo requests from `src` counted before every filter (prerouting -400) and after every filter
/// (input +10).
fn watch(node: &NetNs, src: &str) {
    nft_load(
        node,
        &format!(
            "table inet w12-watch {{
  chain pre {{ type filter hook prerouting priority -400; policy accept; ip saddr {src} icmp type echo-request counter; }}
  chain inp {{ type filter hook input priority 10; policy accept; ip saddr {src} icmp type echo-request counter; }}
}}
"
        ),
    );
}

/// (before every filter, after every filter) counts of the watch table.
fn counts(node: &NetNs) -> (u64, u64) {
    let text = nft_list(node, "inet", "w12-watch").unwrap_or_default();
    let n: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "packets")?;
            w.get(i + 1)?.parse().ok()
        })
        .collect();
    assert_eq!(n.len(), 2, "{text}");
    (n[0], n[1])
}

#[derive(Clone, Copy)]
enum Expect {
    /// Both configurations drop the flood's source: nothing may pass.
    Dropped,
    /// Both allow it: everything must pass.
    Allowed,
}

/// Swaps `a` and `b` back and forth `swaps` times while flooding from `src`, then checks the counters.
fn swaps_under_flood(
    what: &str,
    a: &[(String, String)],
    b: &[(String, String)],
    src: &str,
    expect: Expect,
    swaps: usize,
    stateless: bool,
) {
    let t = Topology::build(plan());
    set_config(&t.hpd, a);
    t.hpd.must_apply(&t.node);
    watch(&t.node, src);
    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let failures = std::thread::scope(|s| {
        let lan1 = &t.lan1;
        let (stop, sent) = (&stop, &sent);
        let flooder = s.spawn(move || flood(lan1, src, NODE, stop, sent, 400_000));
        let mut failures = Vec::new();
        let started = Instant::now();
        for i in 0..swaps {
            // some packets between two swaps (bounded wait)
            let mark = sent.load(Ordering::SeqCst);
            let waited = Instant::now();
            while sent.load(Ordering::SeqCst) < mark + 20
                && waited.elapsed() < Duration::from_secs(2)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            if stateless {
                let _ = std::fs::remove_dir_all(state_dir(&t.hpd));
            }
            set_config(&t.hpd, if i % 2 == 0 { b } else { a });
            let out = t.hpd.apply(&t.node);
            if out.status.code() != Some(0) {
                failures.push(format!("apply #{i}: {}", output_text(&out)));
            }
            if started.elapsed() > Duration::from_secs(240) {
                failures.push(format!("only {i} swaps in 240 s"));
                break;
            }
        }
        stop.store(true, Ordering::SeqCst);
        flooder.join().unwrap();
        failures
    });
    assert!(failures.is_empty(), "{what}: {failures:?}");
    let (before, after) = counts(&t.node);
    let sent = sent.load(Ordering::SeqCst) as u64;
    eprintln!("{what}: {swaps} swaps, {sent} new flows sent, {before} arrived, {after} passed every filter");
    assert!(
        before >= 20 * swaps as u64 / 2,
        "{what}: too few packets arrived ({before})"
    );
    match expect {
        Expect::Dropped => assert_eq!(
            after, 0,
            "{what}: {after} of {before} new flows from {src} passed, which both configurations drop"
        ),
        Expect::Allowed => assert_eq!(
            after, before,
            "{what}: {} of {before} new flows from {src} were dropped, which both configurations allow",
            before - after
        ),
    }
}

#[test]
fn the_mixed_window_shows_no_packet_a_verdict_neither_configuration_gives() {
    if !require_root("the_mixed_window_shows_no_packet_a_verdict_neither_configuration_gives") {
        return;
    }
    // .20 is dropped by both: not listed and no rule (old), listed and denied (new).
    let old = config(LISTED_OLD, "Allow", false, 0);
    let new = config(LISTED_NEW, "Deny", false, 0);
    swaps_under_flood(
        "dropped by both",
        &old,
        &new,
        LISTED_NEW,
        Expect::Dropped,
        40,
        false,
    );
    swaps_under_flood(
        "dropped by both, no state directory",
        &old,
        &new,
        LISTED_NEW,
        Expect::Dropped,
        20,
        true,
    );
    // .20 is allowed by both: by the rest rule (old), listed and allowed (new); the mixed window (old
    // rules, new set) would deny it.
    let old = config(LISTED_OLD, "Deny", true, 0);
    let new = config(LISTED_NEW, "Allow", true, 0);
    swaps_under_flood(
        "allowed by both",
        &old,
        &new,
        LISTED_NEW,
        Expect::Allowed,
        40,
        false,
    );
}

#[test]
fn the_mixed_window_with_3000_filler_policies() {
    if !require_root("the_mixed_window_with_3000_filler_policies") {
        return;
    }
    let old = config(LISTED_OLD, "Allow", false, 3000);
    let new = config(LISTED_NEW, "Deny", false, 3000);
    swaps_under_flood(
        "3,000 fillers, dropped by both",
        &old,
        &new,
        LISTED_NEW,
        Expect::Dropped,
        10,
        false,
    );
    let old = config(LISTED_OLD, "Deny", true, 3000);
    let new = config(LISTED_NEW, "Allow", true, 3000);
    swaps_under_flood(
        "3,000 fillers, allowed by both, no state directory",
        &old,
        &new,
        LISTED_NEW,
        Expect::Allowed,
        6,
        true,
    );
}

/// `hostpolicyd apply` under strace, killed when it enters its `k`th `sendmsg`; true when it was
/// killed, false when it finished before that.
fn apply_killed_at(hpd: &Hpd, ns: &NetNs, k: usize) -> bool {
    let mut args = vec![
        "-f".to_string(),
        "-qq".into(),
        // the trace itself goes nowhere (with `trace=none`, nothing is injected either)
        "-o".into(),
        "/dev/null".into(),
        "-e".into(),
        format!("inject=sendmsg:signal=SIGKILL:when={k}"),
        env!("CARGO_BIN_EXE_hostpolicyd").into(),
    ];
    args.extend(hpd.global_args());
    args.push("apply".into());
    let out = ns
        .command("strace", &args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("strace");
    // strace exits with the traced process's status; killed: 128 + 9 or the signal itself
    out.status.signal() == Some(libc::SIGKILL) || out.status.code() == Some(128 + libc::SIGKILL)
}

/// What a clean apply of `files` into a fresh namespace gives.
fn clean(files: &[(String, String)]) -> common::listing::Listing {
    let ns = fresh_ns("clean");
    let hpd = Hpd::new("node1");
    set_config(&hpd, files);
    hpd.must_apply(&ns);
    listing(&ns, "hostpolicy", HashChain::Listed)
}

#[test]
fn apply_killed_before_any_of_its_messages_is_finished_by_the_next_apply() {
    if !require_root("apply_killed_before_any_of_its_messages_is_finished_by_the_next_apply") {
        return;
    }
    let pairs = [
        // the mixed change
        (
            config(LISTED_OLD, "Allow", false, 0),
            config(LISTED_NEW, "Deny", false, 0),
        ),
        // a set kind change: one host (a hash set) -> a /28 (an interval set)
        (
            config(LISTED_OLD, "Allow", false, 0),
            config("198.51.100.16", "Allow", false, 0)
                .into_iter()
                .map(|(n, c)| (n, c.replace("198.51.100.16/32", "198.51.100.16/28")))
                .collect(),
        ),
    ];
    for (old, new) in &pairs {
        let clean_old = clean(old);
        let clean_new = clean(new);
        let mut k = 1;
        loop {
            let t = Topology::build(plan());
            set_config(&t.hpd, old);
            t.hpd.must_apply(&t.node);
            set_config(&t.hpd, new);
            if !apply_killed_at(&t.hpd, &t.node, k) {
                break; // the apply sends fewer messages: every point was covered
            }
            // Either configuration again, as the next `apply` (or the daemon) does.
            let (target, want) = if k % 2 == 0 {
                (old, &clean_old)
            } else {
                (new, &clean_new)
            };
            set_config(&t.hpd, target);
            t.hpd.must_apply(&t.node);
            let got = listing(&t.node, "hostpolicy", HashChain::Listed);
            assert_same(
                &format!("killed at sendmsg #{k}, then re-applied"),
                &got,
                want,
                ("after the kill", "clean apply"),
            );
            k += 1;
            assert!(k < 64, "more than 63 netlink messages for one apply?");
        }
        eprintln!(
            "killed at each of {} netlink messages, then re-applied",
            k - 1
        );
        assert!(k > 4, "the apply was killed at only {} points", k - 1);
    }
}

/// `hostpolicyd run` under strace, killed when it enters its `k`th `sendmsg` (any thread); true when
/// it was killed, false when it got past all of its start (then it is stopped).
fn daemon_killed_at(hpd: &Hpd, ns: &NetNs, k: usize) -> bool {
    let mut args = vec![
        "-f".to_string(),
        "-qq".into(),
        "-o".into(),
        "/dev/null".into(),
        "-e".into(),
        format!("inject=sendmsg:signal=SIGKILL:when={k}"),
        env!("CARGO_BIN_EXE_hostpolicyd").into(),
    ];
    args.extend(hpd.global_args());
    args.push("run".into());
    let mut child = ns
        .command("strace", &args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .spawn()
        .expect("strace");
    let exited =
        common::daemon::wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
    match exited {
        Some(st) => st.signal() == Some(libc::SIGKILL) || st.code() == Some(128 + libc::SIGKILL),
        None => {
            // Past its start: applied, and idle. Stop it (our own child).
            let _ = child.kill();
            let _ = child.wait();
            false
        }
    }
}

#[test]
fn daemon_killed_before_any_of_its_messages_is_finished_by_the_next_start() {
    if !require_root("daemon_killed_before_any_of_its_messages_is_finished_by_the_next_start") {
        return;
    }
    let old = config(LISTED_OLD, "Allow", false, 0);
    let new = config(LISTED_NEW, "Deny", false, 0);
    let (clean_old, clean_new) = (clean(&old), clean(&new));
    let mut k = 1;
    loop {
        let t = Topology::build(plan());
        set_config(&t.hpd, &old);
        t.hpd.must_apply(&t.node);
        set_config(&t.hpd, &new);
        if !daemon_killed_at(&t.hpd, &t.node, k) {
            break;
        }
        let (target, want) = if k % 2 == 0 {
            (&old, &clean_old)
        } else {
            (&new, &clean_new)
        };
        set_config(&t.hpd, target);
        let d = common::daemon::Daemon::start(&t.node, &t.hpd, &[]);
        // The first reload done (before it, status shows the summary restored from the state directory).
        let s = d.wait_status(&t.node, &t.hpd, "the start's reload done", |s| {
            s["daemon"]["reloads"].as_u64() >= Some(1) && s["daemon"]["busy"] == false
        });
        assert_eq!(
            s["kernel"], "ours",
            "killed at sendmsg #{k}, restarted: {s}"
        );
        let got = listing(&t.node, "hostpolicy", HashChain::Listed);
        assert_same(
            &format!("daemon killed at sendmsg #{k}, then started again ({s})"),
            &got,
            want,
            ("after the kill", "clean apply"),
        );
        drop(d);
        k += 1;
        assert!(k < 64, "more than 63 netlink messages for one start?");
    }
    eprintln!(
        "daemon killed at each of {} netlink messages, then started again",
        k - 1
    );
    assert!(k > 4, "the daemon was killed at only {} points", k - 1);
}

/// The two transactions of a swap go on one netfilter socket: closing a socket right after a commit
/// waits for the kernel's clean-up of it (~10 ms measured), and that wait used to fall between the
/// staging transaction and the switch (issue 18: the 10-policy apply call took 21-29 ms where the
/// kernel's transactions took 1 ms). Seen through strace: no close of the batch socket between the
/// two batches.
#[test]
fn the_transactions_of_one_swap_share_one_socket() {
    if !require_root("the_transactions_of_one_swap_share_one_socket") {
        return;
    }
    let t = Topology::build(plan());
    set_config(&t.hpd, &config(LISTED_OLD, "Allow", false, 0));
    t.hpd.must_apply(&t.node);
    // sets and rules change: a staging transaction, then the switch
    set_config(&t.hpd, &config(LISTED_NEW, "Deny", false, 0));
    let trace = t.hpd.config_dir().with_file_name("apply.strace");
    let mut args = vec![
        "-f".to_string(),
        "-qq".into(),
        "-e".into(),
        "trace=sendmsg,close".into(),
        "-o".into(),
        trace.display().to_string(),
        env!("CARGO_BIN_EXE_hostpolicyd").into(),
    ];
    args.extend(t.hpd.global_args());
    args.push("apply".into());
    let out = t
        .node
        .command("strace", &args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("strace");
    assert!(out.status.success(), "{}", output_text(&out));
    let text = std::fs::read_to_string(&trace).expect("the trace");
    // (fd of each batch sent, index of its line); closes by fd with their line index
    let fd_of = |line: &str, call: &str| -> Option<String> {
        let at = line.find(call)? + call.len();
        let fd: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (!fd.is_empty()).then_some(fd)
    };
    let lines: Vec<&str> = text.lines().collect();
    let batches: Vec<(String, usize)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("NFNL_MSG_BATCH_BEGIN"))
        .filter_map(|(i, l)| Some((fd_of(l, "sendmsg(")?, i)))
        .collect();
    assert_eq!(
        batches.len(),
        2,
        "a staging transaction and the switch:\n{text}"
    );
    let (fd, first) = &batches[0];
    let (fd2, second) = &batches[1];
    assert_eq!(fd, fd2, "the switch went on another socket:\n{text}");
    let closed_between = lines[first + 1..*second]
        .iter()
        .any(|l| fd_of(l, "close(").as_deref() == Some(fd.as_str()));
    assert!(
        !closed_between,
        "the batch socket was closed between the two transactions:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------------
// Edits by handle (issue 18): a policy added or removed in the middle changes two rules of the
// endpoint chain; the switch deletes and inserts those by handle instead of refilling the chain.

/// The standard topology's configuration with policies `p-NN` (NN in `names`), each allowing TCP
/// port 9000 + its index, `p-00` allowing 8080, and `extra` (name, port) allowing its port.
fn handle_config(count: usize, extra: Option<(&str, u16)>) -> hostpolicyd::ruleset::Ruleset {
    use common::daemon::{allow_egress, allow_port, hep_eth0};
    let mut files = vec![
        ("hep.yaml".to_string(), hep_eth0()),
        ("allow-egress.yaml".to_string(), allow_egress()),
    ];
    for i in 0..count {
        let port = if i == 0 { 8080 } else { 9000 + i as u16 };
        let name = format!("p-{i:02}");
        files.push((format!("{name}.yaml"), allow_port(&name, port)));
    }
    if let Some((name, port)) = extra {
        files.push((format!("{name}.yaml"), allow_port(name, port)));
    }
    let loaded = hostpolicyd::config::load::load_sources(&files);
    let c = hostpolicyd::pipeline::build(loaded, "node1", &[], "hostpolicy", false)
        .unwrap_or_else(|e| panic!("{:?}", e.diagnostics));
    (*c.ruleset).clone()
}

/// The chain of `rs` with the most jumps to policy chains: the endpoint chain.
fn endpoint_chain(rs: &hostpolicyd::ruleset::Ruleset) -> String {
    use hostpolicyd::ruleset::Verdict;
    rs.chains
        .iter()
        .max_by_key(|c| {
            c.rules
                .iter()
                .filter(|r| matches!(&r.verdict, Some(Verdict::Jump(t)) if t.starts_with("pi-")))
                .count()
        })
        .unwrap()
        .name
        .clone()
}

/// The rules of chain `chain` of our table in `ns`: (handle, the rule as listed without its counter
/// values, its packet count).
fn handled_rules(ns: &NetNs, chain: &str) -> Vec<(u64, String, u64)> {
    let out = ns.exec_ok("nft", ["-a", "list", "chain", "inet", "hostpolicy", chain]);
    out.lines()
        .filter_map(|l| {
            let (rule, handle) = l.trim().rsplit_once(" # handle ")?;
            if rule.starts_with("chain ") {
                return None;
            }
            let packets = rule
                .split_once("counter packets ")
                .and_then(|(_, r)| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let text = match rule.split_once("counter packets ") {
                Some((a, r)) => {
                    let rest = r.splitn(4, ' ').nth(3).unwrap_or("");
                    format!("{a}counter {rest}")
                }
                None => rule.to_string(),
            };
            Some((handle.parse().ok()?, text, packets))
        })
        .collect()
}

/// What the drift guard hands the dataplane after a write: the handles read back.
fn learn(ns: &NetNs, nl: &mut hostpolicyd::nft::Netlink, rs: &hostpolicyd::ruleset::Ruleset) {
    use hostpolicyd::nft::{Dataplane, Handles};
    let print = ns
        .run(|| hostpolicyd::daemon::nftmon::fingerprint("hostpolicy"))
        .unwrap()
        .unwrap();
    let handles = Handles {
        table: print.table,
        chains: print
            .chains
            .iter()
            .map(|(n, c)| (n.clone(), c.handles.clone()))
            .collect(),
    };
    nl.learn_handles(&rs.comment, handles);
}

#[test]
fn a_policy_added_or_removed_in_the_middle_is_an_edit_of_the_endpoint_chain_by_handle() {
    use common::daemon::open;
    use hostpolicyd::nft::{Dataplane, Netlink};
    if !require_root(
        "a_policy_added_or_removed_in_the_middle_is_an_edit_of_the_endpoint_chain_by_handle",
    ) {
        return;
    }
    let t = Topology::standard();
    let _servers = common::probe::Servers::start(&t.node, &[8080, 8081], &[]);
    let a = handle_config(16, None);
    // `p-07b` sorts between p-07 and p-08: its jump and return go in the middle of the chain.
    let b = handle_config(16, Some(("p-07b", 8081)));
    let ep = endpoint_chain(&a);
    assert_eq!(ep, endpoint_chain(&b));
    let mut nl = t.node.run(Netlink::new).unwrap();
    t.node.run(|| nl.apply(&a)).unwrap();
    learn(&t.node, &mut nl, &a);
    assert!(open(&t, 8080), "p-00 allows 8080");
    assert!(
        !open(&t, 8081),
        "nothing allows 8081 yet: the end of the tier drops it"
    );
    let before = handled_rules(&t.node, &ep);
    let dropped = |rules: &[(u64, String, u64)]| {
        rules
            .iter()
            .find(|r| r.1.contains("end of tier"))
            .map(|r| (r.0, r.2))
            .expect("the end-of-tier rule")
    };
    let (drop_handle, drop_count) = dropped(&before);
    assert!(drop_count > 0, "the blocked probe was counted: {before:?}");

    // Added: the two new rules inserted by handle; every other rule keeps its handle and counter.
    t.node.run(|| nl.update(&a, &b)).unwrap();
    assert!(open(&t, 8081), "p-07b allows 8081");
    assert!(open(&t, 8080), "p-00 still allows 8080");
    let added = handled_rules(&t.node, &ep);
    assert_eq!(added.len(), before.len() + 2, "{added:#?}");
    let kept: Vec<&(u64, String, u64)> = added
        .iter()
        .filter(|r| before.iter().any(|b| b.0 == r.0))
        .collect();
    assert_eq!(
        kept.len(),
        before.len(),
        "every rule of before kept: {added:#?}"
    );
    for (k, b) in kept.iter().zip(&before) {
        assert_eq!(
            (k.0, &k.1),
            (b.0, &b.1),
            "same rule at the same handle, in order"
        );
    }
    let new: Vec<&(u64, String, u64)> = added
        .iter()
        .filter(|r| !before.iter().any(|b| b.0 == r.0))
        .collect();
    assert!(
        new[0].1.contains("jump pi-") && new[0].1.contains("p-07b"),
        "{new:?}"
    );
    let (h, n) = dropped(&added);
    assert_eq!(h, drop_handle);
    assert!(
        n >= drop_count,
        "the end-of-tier counter was kept: {n} < {drop_count}"
    );
    // The table is what applying `b` from scratch gives (chain order aside).
    let fresh = fresh_ns("handles-fresh");
    fresh
        .run(|| Netlink::new().and_then(|mut f| f.apply(&b)))
        .unwrap();
    assert_same(
        "added by handle",
        &listing(&t.node, "hostpolicy", HashChain::Listed),
        &listing(&fresh, "hostpolicy", HashChain::Listed),
        ("edited", "fresh"),
    );

    // Removed again: the two rules deleted by handle; the rest as before the addition.
    learn(&t.node, &mut nl, &b);
    t.node.run(|| nl.update(&b, &a)).unwrap();
    assert!(!open(&t, 8081), "p-07b is gone");
    let removed = handled_rules(&t.node, &ep);
    assert_eq!(
        removed.iter().map(|r| (r.0, &r.1)).collect::<Vec<_>>(),
        before.iter().map(|r| (r.0, &r.1)).collect::<Vec<_>>(),
        "the rules of before, at their handles"
    );

    // Someone deletes p-07b's jump by hand between our read and our next edit, which deletes it by
    // handle: the kernel refuses that switch (ENOENT), nothing of it is applied, and the swap is made
    // again by refilling the chain: the table is `a` exactly.
    t.node.run(|| nl.update(&a, &b)).unwrap();
    learn(&t.node, &mut nl, &b);
    let with = handled_rules(&t.node, &ep);
    let jump = with
        .iter()
        .find(|r| r.1.contains("jump pi-") && r.1.contains("p-07b"))
        .expect("p-07b's jump")
        .0;
    t.node.exec_ok(
        "nft",
        [
            "delete",
            "rule",
            "inet",
            "hostpolicy",
            &ep,
            "handle",
            &jump.to_string(),
        ],
    );
    t.node.run(|| nl.update(&b, &a)).unwrap();
    let fresh_a = fresh_ns("handles-fresh-a");
    fresh_a
        .run(|| Netlink::new().and_then(|mut f| f.apply(&a)))
        .unwrap();
    assert_same(
        "after a refused edit",
        &listing(&t.node, "hostpolicy", HashChain::Listed),
        &listing(&fresh_a, "hostpolicy", HashChain::Listed),
        ("refilled", "fresh"),
    );
    let refilled = handled_rules(&t.node, &ep);
    assert!(
        refilled.iter().all(|r| !with.iter().any(|w| w.0 == r.0)),
        "the chain was refilled (every rule has a new handle)"
    );
    assert!(!open(&t, 8081) && open(&t, 8080));
}

/// handlesfix item 5: a rule added at the end of a kept chain of 4+ rules by an edit goes to the
/// chain's end (NEWRULE with NLM_F_APPEND, no position), not its head: the table is then what
/// applying the new ruleset from scratch gives, and every rule kept keeps its handle.
#[test]
fn a_rule_added_at_the_end_of_a_chain_by_an_edit_is_appended_there() {
    use hostpolicyd::nft::{Dataplane, Netlink};
    use hostpolicyd::ruleset::Rule;
    if !require_root("a_rule_added_at_the_end_of_a_chain_by_an_edit_is_appended_there") {
        return;
    }
    let a = handle_config(16, None);
    let ep = endpoint_chain(&a);
    let mut b = a.clone();
    b.comment = format!("hostpolicyd sha256:{:064x}", 0x5eedu32);
    let at = b.chains.iter().position(|c| c.name == ep).unwrap();
    let mut chain = (*b.chains[at]).clone();
    assert!(chain.rules.len() >= 4, "{}", chain.rules.len());
    chain.rules.push(Rule {
        comment: Some("appended at the end".into()),
        counter: true,
        ..Rule::default()
    });
    b.chains[at] = std::sync::Arc::new(chain);

    let ns = fresh_ns("handles-append");
    let mut nl = ns.run(Netlink::new).unwrap();
    ns.run(|| nl.apply(&a)).unwrap();
    learn(&ns, &mut nl, &a);
    let before = handled_rules(&ns, &ep);
    ns.run(|| nl.update(&a, &b)).unwrap();
    let edited = nl.take_edited();
    assert!(
        edited.iter().any(|(c, _)| *c == ep),
        "the endpoint chain was edited by handle: {edited:?}"
    );
    let after = handled_rules(&ns, &ep);
    assert_eq!(after.len(), before.len() + 1, "{after:#?}");
    assert!(
        after.last().unwrap().1.contains("appended at the end"),
        "the new rule is the chain's last: {after:#?}"
    );
    assert_eq!(
        after[..before.len()]
            .iter()
            .map(|r| (r.0, &r.1))
            .collect::<Vec<_>>(),
        before.iter().map(|r| (r.0, &r.1)).collect::<Vec<_>>(),
        "the rules before, at their handles, first"
    );
    let fresh = fresh_ns("handles-append-fresh");
    fresh
        .run(|| Netlink::new().and_then(|mut f| f.apply(&b)))
        .unwrap();
    assert_same(
        "appended by handle",
        &listing(&ns, "hostpolicy", HashChain::Listed),
        &listing(&fresh, "hostpolicy", HashChain::Listed),
        ("edited", "fresh"),
    );
}
