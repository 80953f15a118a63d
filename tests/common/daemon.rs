//! `hostpolicyd run` under test: spawned inside a namespace with its own directories (an [`Hpd`]), its
//! stderr log captured to a file; helpers to wait for log lines and status conditions with a bounded
//! deadline, to write files the way Ansible does, and to stop it. The daemon is killed on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::netns::NetNs;
use super::topology::{output_text, Hpd};

/// How long a condition may take before a test fails (generous: 2 CPUs shared with other builds).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` every 20 ms until it returns Some, or `timeout` passes (None).
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `name` in `dir` as Ansible's `copy`/`template` do: a dotted temporary file, then a rename.
pub fn write_ansible(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".ansible_tmp{}{name}", std::process::id()));
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    std::fs::rename(&tmp, dir.join(name)).unwrap_or_else(|e| panic!("rename to {name}: {e}"));
}

pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    pub ns_name: String,
}

impl Daemon {
    /// Starts `hostpolicyd <global options of hpd> run` in `ns` with extra environment variables.
    pub fn start(ns: &NetNs, hpd: &Hpd, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(ns, hpd, None, env)
    }

    /// As [`Daemon::start`], with another `--config-dir` (e.g. a symlink).
    pub fn start_with(
        ns: &NetNs,
        hpd: &Hpd,
        config_dir: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = hpd
            .config_dir()
            .with_file_name(format!("daemon-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut args = hpd.global_args();
        if let Some(dir) = config_dir {
            let i = args
                .iter()
                .position(|a| a == "--config-dir")
                .expect("--config-dir");
            args[i + 1] = dir.to_string_lossy().into_owned();
        }
        args.push("run".into());
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_hostpolicyd"), &args);
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        cmd.env(
            "HOSTPOLICYD_LOG",
            format!(
                "{},hostpolicyd=debug",
                hostpolicyd::daemon::log::DEFAULT_FILTER
            ),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn hostpolicyd run");
        Daemon {
            child: Some(child),
            log,
            ns_name: ns.name().to_string(),
        }
    }

    /// `ip netns exec` execs in place: this is the daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log that contain every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }

    /// Waits until a log line contains every one of `needles`; panics with the log otherwise.
    pub fn wait_log(&self, needles: &[&str]) -> String {
        wait_for(DEADLINE, || self.log_lines(needles).pop()).unwrap_or_else(|| {
            panic!(
                "no log line with {needles:?} within {DEADLINE:?}; log:\n{}",
                self.log()
            )
        })
    }

    /// `hostpolicyd status --json`, parsed (None while the daemon does not answer yet). Exit 0, or 4 when
    /// the daemon answers but is degraded (invalid configuration, rollback, flushed: `problems`).
    pub fn status(&self, ns: &NetNs, hpd: &Hpd) -> Option<serde_json::Value> {
        let out = hpd.run(ns, &["status", "--json"]);
        if !matches!(out.status.code(), Some(0 | 4)) {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits until `pred(status)` holds; panics with the log otherwise. Returns that status.
    pub fn wait_status(
        &self,
        ns: &NetNs,
        hpd: &Hpd,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(DEADLINE, || self.status(ns, hpd).filter(|s| pred(s))).unwrap_or_else(|| {
            panic!(
                "status never showed {what} within {DEADLINE:?}; last status: {:?}\nlog:\n{}",
                self.status(ns, hpd),
                self.log()
            )
        })
    }

    /// Waits for the first decision (the daemon answers and is not busy) and returns the status.
    pub fn wait_ready(&self, ns: &NetNs, hpd: &Hpd) -> serde_json::Value {
        self.wait_status(ns, hpd, "a first decision", |s| {
            s["last_result"].is_string() && s["daemon"]["busy"] == false
        })
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} {}", self.pid());
    }

    /// Waits (bounded) for the daemon to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let st = wait_for(DEADLINE, || child.try_wait().ok().flatten());
        match st {
            Some(st) => {
                self.child = None;
                st
            }
            None => panic!(
                "daemon did not exit within {DEADLINE:?}; log:\n{}",
                self.log()
            ),
        }
    }

    /// Runs `hostpolicyd reload` and returns (exit code, stdout + stderr, how long it took).
    pub fn reload(ns: &NetNs, hpd: &Hpd) -> (Option<i32>, String, Duration) {
        let start = Instant::now();
        let out = hpd.run(ns, &["reload"]);
        (out.status.code(), output_text(&out), start.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ({})\n{}", self.log.display(), self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `nft list table inet hostpolicy` in `ns` (None: no table).
/// Our table as `nft -s` lists it: stateless, so counter values (which any stray packet changes) do not
/// make two listings of the same ruleset differ.
pub fn table(ns: &NetNs) -> Option<String> {
    let out = ns.exec("nft", ["-s", "list", "table", "inet", "hostpolicy"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

// ------------------------------------------------------------------------------------------------------------
// Policy documents the daemon tests write (documentation addresses only)
// ------------------------------------------------------------------------------------------------------------

/// The node's web HEP on eth0 (192.0.2.1), label role=web.
pub fn hep_eth0() -> String {
    super::yaml::hep(
        "hep-eth0",
        "node1",
        Some("eth0"),
        &["192.0.2.1"],
        &[("role", "web")],
        &[],
    )
}

/// Allows TCP `port` in to role=web.
pub fn allow_port(name: &str, port: u16) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: {name}
spec:
  order: 10
  selector: \"role == 'web'\"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      ports: [{port}]
"
    )
}

/// Allows everything out of role=web (HEPs deny egress by default).
pub fn allow_egress() -> String {
    "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-egress
spec:
  order: 100
  selector: \"role == 'web'\"
  types: [Egress]
  egress:
  - action: Allow
"
    .to_string()
}

/// Denies TCP to `host:port` out of role=web, before allow-egress.
pub fn deny_egress(name: &str, host: &str, port: u16) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: {name}
spec:
  order: 5
  selector: \"role == 'web'\"
  types: [Egress]
  egress:
  - action: Deny
    protocol: TCP
    destination:
      nets: [{host}/32]
      ports: [{port}]
"
    )
}

/// A TCP ConnectivityCheck with a 1 s timeout.
pub fn tcp_check(name: &str, host: &str, port: u16) -> String {
    format!(
        "apiVersion: hostpolicy/v1
kind: ConnectivityCheck
metadata:
  name: {name}
spec:
  tcp: {{host: {host}, port: {port}}}
  timeoutSeconds: 1
"
    )
}

/// The standard topology's node (eth0) and client (lan0) addresses.
pub const NODE: &str = "192.0.2.1";
pub const CLIENT: &str = "192.0.2.2";

/// One TCP handshake from the client (lan0, 192.0.2.2) to the node's `port`: true when it completes.
pub fn open(t: &super::topology::Topology, port: u16) -> bool {
    use super::probe::{tcp_connect, Outcome};
    let dst = std::net::SocketAddr::new(NODE.parse().unwrap(), port);
    match tcp_connect(
        &t.lan0,
        std::net::SocketAddr::new(CLIENT.parse().unwrap(), 0),
        dst,
        Duration::from_millis(500),
    ) {
        Outcome::Ok => true,
        Outcome::Timeout => false,
        other => panic!("probe to {dst}: {other:?} (a harness problem, not a verdict)"),
    }
}

/// Waits until `port` is open (`want`) or blocked; panics with the table and the daemon log otherwise.
pub fn wait_port(t: &super::topology::Topology, d: &Daemon, port: u16, want: bool) {
    if wait_for(DEADLINE, || (open(t, port) == want).then_some(())).is_none() {
        panic!(
            "port {port} never became {} within {DEADLINE:?}\ntable:\n{}\nlog:\n{}",
            if want { "open" } else { "blocked" },
            table(&t.node).unwrap_or_default(),
            d.log()
        );
    }
}

/// Asserts that `port` is open (`want`) or blocked now.
pub fn assert_port(t: &super::topology::Topology, d: &Daemon, port: u16, want: bool, why: &str) {
    assert_eq!(open(t, port), want, "port {port}: {why}\nlog:\n{}", d.log());
}
