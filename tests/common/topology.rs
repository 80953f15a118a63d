//! Scenario topologies built from network namespaces, and the tools a kernel test runs against them
//! (`hostpolicyd` with its own temporary directories, `nft` helpers, a kube-proxy-like DNAT table).
//!
//! ```text
//!                    lan0 (br0: external/internal clients,            lan1 (br0: clients on the eth1 side)
//!                    several addresses each)                                   |
//!                      |             \                                          |
//!   node: eth0 --------+              +---- peer (node2): eth0         node: eth1
//!   node: eth2 -------- pod: eth0   (optional backend "pod" for NodePort DNAT)
//! ```
//!
//! - `node` is the host under test (`--node-name node1`), ip_forward on.
//! - `lan0` / `lan1` hold a bridge `br0`; the node's `eth0` / `eth1` and the optional cluster `peer` plug into
//!   it, so several namespaces share one L2 segment. Client addresses live on `br0`; a probe picks its source
//!   address among them.
//! - Every member of a segment gets a host route (/32, /128) to every address of every other member, so
//!   addresses need not share a subnet (e.g. an "external" 203.0.113.7 on the eth0 segment). Clients route
//!   everything else via the node (`onlink`), so forwarded traffic crosses it.
//! - Namespaces are deleted when the `Topology` is dropped (also on panic): see `netns.rs`.

#![allow(dead_code)]

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::netns::NetNs;

/// Addresses of a topology. Node addresses carry a prefix (`"192.0.2.1/24"`); client addresses may carry
/// one (then the client also gets that connected route) or not (a host address, /32 or /128).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The node's `eth0` addresses.
    pub eth0: Vec<&'static str>,
    /// Client addresses on the eth0 segment (namespace `lan0`).
    pub lan0: Vec<&'static str>,
    /// The node's `eth1` addresses.
    pub eth1: Vec<&'static str>,
    /// Client addresses on the eth1 segment (namespace `lan1`).
    pub lan1: Vec<&'static str>,
    /// `(node eth2 address, pod address)`: a backend pod behind the node's `eth2`.
    pub pod: Option<(&'static str, &'static str)>,
    /// Addresses of a cluster peer (node2) on the eth0 segment; empty: no peer.
    pub peer: Vec<&'static str>,
}

impl Plan {
    /// Spec §7 conventions remapped to documentation ranges:
    /// - eth0 10.0.0.0/24 → 192.0.2.0/24: node 192.0.2.1; clients .2 .50 .53 .100 .200 .201 (same host part)
    /// - eth1 192.168.0.0/24 → 198.51.100.0/24: node 198.51.100.45; clients .9 .99 (same host part)
    /// - external clients on the eth0 side: 203.0.113.7 (T6) and 203.0.113.5 (T4's 172.16.0.5)
    pub fn standard() -> Plan {
        Plan {
            eth0: vec!["192.0.2.1/24"],
            lan0: vec![
                "192.0.2.2/24",
                "192.0.2.50/24",
                "192.0.2.53/24",
                "192.0.2.100/24",
                "192.0.2.200/24",
                "192.0.2.201/24",
                "203.0.113.5",
                "203.0.113.7",
            ],
            eth1: vec!["198.51.100.45/24"],
            lan1: vec!["198.51.100.9/24", "198.51.100.99/24"],
            pod: None,
            peer: vec![],
        }
    }
}

/// Splits "a/len" (or "a") into the address and the prefix length (host length when absent).
pub fn split_cidr(s: &str) -> (IpAddr, u8) {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = a.parse().unwrap_or_else(|e| panic!("address {s:?}: {e}"));
    let host = if ip.is_ipv4() { 32 } else { 128 };
    let len = len
        .map(|l| l.parse().unwrap_or_else(|e| panic!("prefix {s:?}: {e}")))
        .unwrap_or(host);
    (ip, len)
}

fn host(s: &str) -> String {
    let (ip, _) = split_cidr(s);
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

fn with_len(s: &str) -> String {
    let (ip, len) = split_cidr(s);
    format!("{ip}/{len}")
}

fn addr_cmd(s: &str, dev: &str) -> String {
    let (ip, _) = split_cidr(s);
    // No duplicate address detection: an IPv6 address must be usable at once.
    let nodad = if ip.is_ipv6() { " nodad" } else { "" };
    format!("addr add {} dev {dev}{nodad}", with_len(s))
}

fn first(addrs: &[&str], v4: bool) -> Option<IpAddr> {
    addrs
        .iter()
        .map(|a| split_cidr(a).0)
        .find(|ip| ip.is_ipv4() == v4)
}

/// Runs `ip -n NS -batch -` with the given commands; panics with the output on failure.
pub fn ip_batch(ns: &NetNs, cmds: &[String]) {
    if cmds.is_empty() {
        return;
    }
    let mut child = Command::new("ip")
        .args(["-n", ns.name(), "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip -batch");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cmds.join("\n").as_bytes())
        .expect("write ip batch");
    let out = child.wait_with_output().expect("ip -batch");
    assert!(
        out.status.success(),
        "ip -n {} -batch failed: {}{}\ncommands:\n{}",
        ns.name(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cmds.join("\n")
    );
}

/// Writes `/proc/sys/...` values inside `ns` (in-process, on a thread that entered it).
pub fn sysctl(ns: &NetNs, settings: &[(&str, &str)]) {
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let name = ns.name().to_string();
    ns.run(move || {
        for (k, v) in &settings {
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            std::fs::write(&path, v).unwrap_or_else(|e| panic!("in {name}: sysctl {k}={v}: {e}"));
        }
    });
}

/// Settings every namespace of a topology gets: no rp_filter (probes use arbitrary source addresses),
/// no IPv6 DAD (addresses usable at once), ping sockets allowed for root (ICMP probes).
fn base_sysctls(ns: &NetNs) {
    sysctl(
        ns,
        &[
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.ping_group_range", "0 2147483647"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.default.router_solicitations", "0"),
        ],
    );
}

/// Serialises namespace creation: the first `ip netns add` on a machine mounts /run/netns, and parallel
/// first calls can race.
static NS_LOCK: Mutex<()> = Mutex::new(());

fn new_ns(role: &str) -> NetNs {
    let ns = {
        let _g = NS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        NetNs::new(role)
    };
    base_sysctls(&ns);
    ns
}

/// A fresh namespace with the base settings (for loading rendered rulesets, self-tests...).
pub fn fresh_ns(role: &str) -> NetNs {
    new_ns(role)
}

pub struct Topology {
    pub plan: Plan,
    /// The host under test: node1.
    pub node: NetNs,
    /// Clients on the eth0 segment (external and internal sources).
    pub lan0: NetNs,
    /// Clients on the eth1 segment.
    pub lan1: NetNs,
    /// Backend pod behind the node's eth2, when `plan.pod` is set.
    pub pod: Option<NetNs>,
    /// Cluster peer node2 on the eth0 segment, when `plan.peer` is not empty.
    pub peer: Option<NetNs>,
    /// `hostpolicyd` for node1 (its own config, state and runtime directories).
    pub hpd: Hpd,
    /// `hostpolicyd` for node2 (run in `peer`).
    pub hpd_peer: Hpd,
}

impl Topology {
    pub fn standard() -> Topology {
        Topology::build(Plan::standard())
    }

    pub fn build(plan: Plan) -> Topology {
        let node = new_ns("node");
        let lan0 = new_ns("lan0");
        let lan1 = new_ns("lan1");
        let pod = plan.pod.map(|_| new_ns("pod"));
        let peer = if plan.peer.is_empty() {
            None
        } else {
            Some(new_ns("peer"))
        };
        sysctl(&node, &[("net.ipv4.ip_forward", "1")]);
        if let Some(p) = &peer {
            sysctl(p, &[("net.ipv4.ip_forward", "1")]);
        }

        // ---- node: links, addresses, host routes to every other member of its segments
        let mut cmds = vec![
            format!(
                "link add eth0 index 10 type veth peer name p0 index 20 netns {}",
                lan0.name()
            ),
            format!(
                "link add eth1 index 11 type veth peer name p0 index 30 netns {}",
                lan1.name()
            ),
        ];
        if let Some(p) = &pod {
            cmds.push(format!(
                "link add eth2 index 12 type veth peer name eth0 index 40 netns {}",
                p.name()
            ));
        }
        cmds.extend(plan.eth0.iter().map(|a| addr_cmd(a, "eth0")));
        cmds.extend(plan.eth1.iter().map(|a| addr_cmd(a, "eth1")));
        cmds.push("link set eth0 up".into());
        cmds.push("link set eth1 up".into());
        for a in plan.lan0.iter().chain(plan.peer.iter()) {
            cmds.push(format!("route replace {} dev eth0", host(a)));
        }
        for a in &plan.lan1 {
            cmds.push(format!("route replace {} dev eth1", host(a)));
        }
        if let Some((node_eth2, pod_addr)) = plan.pod {
            cmds.push(addr_cmd(node_eth2, "eth2"));
            cmds.push("link set eth2 up".into());
            cmds.push(format!("route replace {} dev eth2", host(pod_addr)));
        }
        ip_batch(&node, &cmds);

        // ---- peer (node2): its eth0 plugs into lan0's bridge as p1
        if let Some(p) = &peer {
            let mut cmds = vec![format!(
                "link add eth0 index 50 type veth peer name p1 index 21 netns {}",
                lan0.name()
            )];
            cmds.extend(plan.peer.iter().map(|a| addr_cmd(a, "eth0")));
            cmds.push("link set eth0 up".into());
            for a in plan.lan0.iter().chain(plan.eth0.iter()) {
                cmds.push(format!("route replace {} dev eth0", host(a)));
            }
            ip_batch(p, &cmds);
        }

        // ---- lan0 / lan1: bridge, client addresses, host routes, default routes via the node
        let lan =
            |ns: &NetNs, ports: &[&str], addrs: &[&str], node_addrs: &[&str], others: &[&str]| {
                let mut cmds = vec!["link add br0 type bridge mcast_snooping 0".to_string()];
                for p in ports {
                    cmds.push(format!("link set {p} master br0"));
                    cmds.push(format!("link set {p} up"));
                }
                cmds.push("link set br0 up".into());
                cmds.extend(addrs.iter().map(|a| addr_cmd(a, "br0")));
                for a in node_addrs.iter().chain(others.iter()) {
                    cmds.push(format!("route replace {} dev br0", host(a)));
                }
                if let Some(gw) = first(node_addrs, true) {
                    cmds.push(format!("route replace default via {gw} dev br0 onlink"));
                }
                if let Some(gw) = first(node_addrs, false) {
                    cmds.push(format!("route replace ::/0 via {gw} dev br0 onlink"));
                }
                ip_batch(ns, &cmds);
            };
        let ports0: &[&str] = if peer.is_some() {
            &["p0", "p1"]
        } else {
            &["p0"]
        };
        lan(&lan0, ports0, &plan.lan0, &plan.eth0, &plan.peer);
        lan(&lan1, &["p0"], &plan.lan1, &plan.eth1, &[]);

        // ---- pod: default route via the node's eth2
        if let (Some(p), Some((node_eth2, pod_addr))) = (&pod, plan.pod) {
            let (gw, _) = split_cidr(node_eth2);
            ip_batch(
                p,
                &[
                    addr_cmd(&host(pod_addr), "eth0"),
                    "link set eth0 up".into(),
                    format!("route replace {} dev eth0", host(node_eth2)),
                    format!("route replace default via {gw} dev eth0 onlink"),
                ],
            );
        }

        let t = Topology {
            plan,
            node,
            lan0,
            lan1,
            pod,
            peer,
            hpd: Hpd::new("node1"),
            hpd_peer: Hpd::new("node2"),
        };
        t.wait_links_up();
        t
    }

    /// All namespaces of the topology.
    pub fn namespaces(&self) -> Vec<&NetNs> {
        let mut v = vec![&self.node, &self.lan0, &self.lan1];
        v.extend(self.pod.iter());
        v.extend(self.peer.iter());
        v
    }

    /// Waits (at most 5 s) until every interface but `lo` is operationally up. Until the kernel's link
    /// watcher has processed a carrier change, a veth may still have its no-op qdisc and a bridge port is
    /// not forwarding: the first packets would be lost and a probe would see a 1 s SYN retransmission. The
    /// watcher handles a veth's event at once only when the veth's ifindex differs from its peer's
    /// (otherwise it batches it, up to 1 s later), hence the explicit, distinct `index` of every veth above.
    fn wait_links_up(&self) {
        let start = std::time::Instant::now();
        loop {
            let mut down = Vec::new();
            for ns in self.namespaces() {
                let out = Command::new("ip")
                    .args(["-n", ns.name(), "-o", "link", "show"])
                    .output()
                    .expect("ip link");
                for l in String::from_utf8_lossy(&out.stdout).lines() {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let name = f.get(1).copied().unwrap_or("?");
                    let state = f
                        .iter()
                        .position(|x| *x == "state")
                        .and_then(|i| f.get(i + 1))
                        .copied()
                        .unwrap_or("?");
                    if !name.starts_with("lo:") && state != "UP" {
                        down.push(format!("{}/{name}{state}", ns.name()));
                    }
                }
            }
            if down.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "links not up after 5 s: {down:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn pod(&self) -> &NetNs {
        self.pod.as_ref().expect("topology has no pod")
    }

    pub fn peer(&self) -> &NetNs {
        self.peer.as_ref().expect("topology has no peer")
    }

    /// Writes the configuration for node1 and runs `hostpolicyd apply` in the node; panics unless it exits 0.
    pub fn apply(&self, files: &[(&str, &str)]) {
        self.hpd.set_config(files);
        self.hpd.must_apply(&self.node);
    }
}

// ------------------------------------------------------------------------------------------------------------
// hostpolicyd
// ------------------------------------------------------------------------------------------------------------

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// One `hostpolicyd` "installation": a node name and its own config, state and runtime directories
/// (under cargo's per-target temporary directory, removed on drop).
pub struct Hpd {
    pub node_name: String,
    root: PathBuf,
}

impl Hpd {
    pub fn new(node_name: &str) -> Hpd {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "e2e-{}-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::SeqCst),
            node_name
        ));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["config", "state", "run"] {
            std::fs::create_dir_all(root.join(d))
                .unwrap_or_else(|e| panic!("{}: {e}", root.display()));
        }
        Hpd {
            node_name: node_name.to_string(),
            root,
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }

    /// Replaces the whole configuration directory with `files` (name, content).
    pub fn set_config(&self, files: &[(&str, &str)]) {
        let dir = self.config_dir();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    /// The global options of the command-line contract (DESIGN.md "Command line").
    pub fn global_args(&self) -> Vec<String> {
        let p = |d: &str| self.root.join(d).to_string_lossy().into_owned();
        vec![
            "--config-dir".into(),
            p("config"),
            "--node-name".into(),
            self.node_name.clone(),
            "--state-dir".into(),
            p("state"),
            "--runtime-dir".into(),
            p("run"),
        ]
    }

    /// Runs `hostpolicyd <global options> <cmd...>` inside `ns`.
    pub fn run(&self, ns: &NetNs, cmd: &[&str]) -> Output {
        let mut args = self.global_args();
        args.extend(cmd.iter().map(|s| s.to_string()));
        ns.command(env!("CARGO_BIN_EXE_hostpolicyd"), &args)
            .stdin(Stdio::null())
            .output()
            .expect("run hostpolicyd")
    }

    pub fn apply(&self, ns: &NetNs) -> Output {
        self.run(ns, &["apply"])
    }

    /// `apply`, asserting exit status 0.
    pub fn must_apply(&self, ns: &NetNs) {
        let out = self.apply(ns);
        assert!(
            out.status.code() == Some(0),
            "hostpolicyd apply ({}) exited {:?}, expected 0\n{}\nconfig:\n{}",
            self.node_name,
            out.status.code(),
            output_text(&out),
            self.config_text()
        );
    }

    pub fn render(&self, ns: &NetNs) -> String {
        let out = self.run(ns, &["render"]);
        assert!(
            out.status.code() == Some(0),
            "hostpolicyd render exited {:?}\n{}",
            out.status.code(),
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// All configuration files, for failure messages.
    pub fn config_text(&self) -> String {
        let mut names: Vec<_> = std::fs::read_dir(self.config_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                format!(
                    "--- {}\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Hpd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// stdout and stderr of a finished command, for messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ------------------------------------------------------------------------------------------------------------
// nft helpers
// ------------------------------------------------------------------------------------------------------------

/// Loads nft text with `nft -f -` inside `ns`; panics on failure.
pub fn nft_load(ns: &NetNs, text: &str) {
    let out = nft_try_load(ns, text);
    assert!(
        out.status.success(),
        "nft -f in {} failed:\n{}\n--- input:\n{text}",
        ns.name(),
        output_text(&out)
    );
}

pub fn nft_try_load(ns: &NetNs, text: &str) -> Output {
    let mut child = ns
        .command("nft", ["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .expect("write nft input");
    child.wait_with_output().expect("nft")
}

/// `nft list table FAMILY NAME` text, or None when the table does not exist.
pub fn nft_list(ns: &NetNs, family: &str, table: &str) -> Option<String> {
    let out = ns.exec("nft", ["list", "table", family, table]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `nft -j list table FAMILY NAME` exactly as printed, or None when the table does not exist.
pub fn nft_json_raw(ns: &NetNs, family: &str, table: &str) -> Option<String> {
    let out = ns.exec("nft", ["-j", "list", "table", family, table]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `nft -j list table`, parsed and normalised: no `metainfo`, no handles, counters zeroed. For comparing
/// two loads of the same ruleset (e.g. `render` + `nft -f` against `apply`).
pub fn nft_json(ns: &NetNs, family: &str, table: &str) -> Option<serde_json::Value> {
    nft_json_norm(ns, family, table, false)
}

/// Like [`nft_json`] but keeping handles: equal only when the table was not re-created or changed (for
/// "nothing changed" checks; counters are still zeroed since background packets may hit them).
pub fn nft_json_exact(ns: &NetNs, family: &str, table: &str) -> Option<serde_json::Value> {
    nft_json_norm(ns, family, table, true)
}

fn nft_json_norm(
    ns: &NetNs,
    family: &str,
    table: &str,
    keep_handles: bool,
) -> Option<serde_json::Value> {
    let raw = nft_json_raw(ns, family, table)?;
    let mut v: serde_json::Value =
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("nft -j output: {e}\n{raw}"));
    normalize_nft_json(&mut v, keep_handles);
    Some(v)
}

/// Removes what legitimately differs between two loads of the same ruleset: handles (unless
/// `keep_handles`), counter values, the metainfo header.
pub fn normalize_nft_json(v: &mut serde_json::Value, keep_handles: bool) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            if !keep_handles {
                m.remove("handle");
            }
            if let Some(Value::Object(c)) = m.get_mut("counter") {
                c.insert("packets".into(), 0.into());
                c.insert("bytes".into(), 0.into());
            }
            for (_, x) in m.iter_mut() {
                normalize_nft_json(x, keep_handles);
            }
        }
        Value::Array(a) => {
            a.retain(|x| x.get("metainfo").is_none());
            for x in a.iter_mut() {
                normalize_nft_json(x, keep_handles);
            }
        }
        _ => {}
    }
}

/// Names of all tables in `ns` ("family name" per line of `nft list tables`).
pub fn nft_tables(ns: &NetNs) -> Vec<String> {
    let out = ns.exec("nft", ["list", "tables"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table ").map(str::to_string))
        .collect()
}

/// kube-proxy's NodePort, emulated by a table of the test's own: DNAT `node_ip:port` (TCP and UDP) to
/// `pod_ip:pod_port` at dstnat (-100), after the daemon's preDNAT stage (mangle, -150). No SNAT: the pod
/// routes back through the node.
pub fn kube_proxy_nodeport(ns: &NetNs, node_ip: &str, port: u16, pod_ip: &str, pod_port: u16) {
    nft_load(
        ns,
        &format!(
            "table ip kubeproxy-test {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {node_ip} tcp dport {port} dnat to {pod_ip}:{pod_port}
    ip daddr {node_ip} udp dport {port} dnat to {pod_ip}:{pod_port}
  }}
}}
"
        ),
    );
}
