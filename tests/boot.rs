//! Boot safety and trusted files (issue 8).
//!
//! - A daemon applies a valid configuration and stops; the table is deleted (a simulated reboot); the
//!   configuration is broken; a new daemon applies the last good ruleset from the state directory, says
//!   it is degraded (`status`, STATUS=, a warning in the log) and applies the fixed configuration as soon
//!   as the files are repaired.
//! - Without a last good ruleset either, it applies nothing, says so, and is still ready (READY=1).
//! - A group-writable policy file is refused with its mode in the message, and the previous ruleset stays;
//!   `check FILE` (Ansible's validate) does not judge modes, `--strict-modes=no` turns the check off.
//!
//! Topology: tests/common/topology.rs's standard plan: node eth0 192.0.2.1/24, a client 192.0.2.2 in lan0.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::{
    allow_egress, allow_port, hep_eth0, table, wait_for, write_ansible, Daemon, DEADLINE,
};
use common::daemon::{open, wait_port};
use common::netns::require_root;
use common::probe::Servers;
use common::topology::{fresh_ns, nft_json, output_text, Hpd, Topology};

/// systemd's side of NOTIFY_SOCKET: collects every datagram.
struct Listener {
    messages: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    fn start(path: &std::path::Path) -> Listener {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path).expect("bind NOTIFY_SOCKET");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        // Stops when the test drops the Arc.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while Arc::strong_count(&m) > 1 {
                if let Ok(n) = sock.recv(&mut buf) {
                    m.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        Listener { messages }
    }

    /// Waits for a message with the line `READY=1`; returns its STATUS= value.
    fn ready_status(&self) -> String {
        let msg = wait_for(DEADLINE, || {
            self.messages
                .lock()
                .unwrap()
                .iter()
                .find(|m| m.lines().any(|l| l == "READY=1"))
                .cloned()
        })
        .unwrap_or_else(|| panic!("no READY=1; got {:#?}", self.messages.lock().unwrap()));
        msg.lines()
            .find_map(|l| l.strip_prefix("STATUS="))
            .unwrap_or_else(|| panic!("READY=1 without STATUS=: {msg:?}"))
            .to_string()
    }
}

const BROKEN: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: allow-8080\nspec: [order: 10\n";

#[test]
fn boot_with_a_broken_configuration_applies_the_last_good_and_recovers() {
    if !require_root("boot_with_a_broken_configuration_applies_the_last_good_and_recovers") {
        return;
    }
    let t = Topology::standard();
    let _servers = Servers::start(&t.node, &[8080, 8081, 8082], &[]);
    let dir = t.hpd.config_dir();
    std::fs::write(dir.join("hep.yaml"), hep_eth0()).unwrap();
    std::fs::write(dir.join("allow-egress.yaml"), allow_egress()).unwrap();
    std::fs::write(dir.join("allow-8080.yaml"), allow_port("allow-8080", 8080)).unwrap();

    // 1. A daemon applies the valid configuration and stops (the table stays).
    let good = {
        let mut d = Daemon::start(&t.node, &t.hpd, &[]);
        let s = d.wait_ready(&t.node, &t.hpd);
        assert_eq!(s["last_result"], "applied", "{s:#}");
        let good = nft_json(&t.node, "inet", "hostpolicy").expect("our table");
        d.signal("TERM");
        assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log());
        good
    };

    // 2. A reboot: the kernel forgets the table. 3. The configuration breaks meanwhile.
    t.node
        .exec_ok("nft", ["delete", "table", "inet", "hostpolicy"]);
    assert!(open(&t, 8081), "no table: nothing filtered");
    std::fs::write(dir.join("allow-8080.yaml"), BROKEN).unwrap();

    // 4. The next start applies the last good ruleset and says it is degraded.
    let sock = dir.with_file_name("notify.sock");
    let listener = Listener::start(&sock);
    let sock = sock.to_string_lossy().into_owned();
    let d = Daemon::start(&t.node, &t.hpd, &[("NOTIFY_SOCKET", sock.as_str())]);
    let status = listener.ready_status();
    assert!(
        status
            .starts_with("DEGRADED: configuration invalid at start: applied the last good ruleset"),
        "STATUS={status}\n{}",
        d.log()
    );
    let s = d.wait_ready(&t.node, &t.hpd);
    assert_eq!(s["last_result"], "invalid", "{s:#}");
    assert!(
        s["degraded"]
            .as_str()
            .is_some_and(|r| r.contains("applied the last good ruleset, generation 1")),
        "{s:#}"
    );
    assert_eq!(s["kernel"], "ours", "{s:#}");
    assert_eq!(
        nft_json(&t.node, "inet", "hostpolicy").as_ref(),
        Some(&good),
        "the last good ruleset, as it was"
    );
    assert!(open(&t, 8080), "the last good allows 8080");
    assert!(!open(&t, 8081), "and denies 8081");
    let warning = d.wait_log(&["event=\"degraded\""]);
    assert!(warning.contains("WARN"), "{warning}");
    d.wait_log(&["allow-8080.yaml:", "error:"]);
    let text = output_text(&t.hpd.run(&t.node, &["status"]));
    assert!(
        text.contains("DEGRADED: configuration invalid at start"),
        "{text}"
    );

    // 5. The files are repaired (now allowing 8082 instead of 8080): applied at once, no longer degraded.
    write_ansible(&dir, "allow-8080.yaml", &allow_port("allow-8082", 8082));
    wait_port(&t, &d, 8082, true);
    let s = d.wait_status(&t.node, &t.hpd, "the fixed configuration applied", |s| {
        s["last_result"] == "applied" && s["daemon"]["busy"] == false
    });
    assert!(s["degraded"].is_null(), "{s:#}");
    assert!(!open(&t, 8080), "no longer allowed");
    let lines = wait_for(DEADLINE, || {
        let all = listener.messages.lock().unwrap().clone();
        let readies: Vec<String> = all
            .into_iter()
            .filter(|m| m.lines().any(|l| l == "READY=1"))
            .collect();
        (readies.len() >= 2).then_some(readies)
    })
    .expect("READY=1 after the reload");
    assert!(
        !lines.last().unwrap().contains("DEGRADED"),
        "STATUS= is no longer degraded: {lines:#?}"
    );
}

#[test]
fn boot_without_a_last_good_applies_nothing_and_is_still_ready() {
    if !require_root("boot_without_a_last_good_applies_nothing_and_is_still_ready") {
        return;
    }
    let ns = fresh_ns("node");
    let hpd = Hpd::new("node1");
    std::fs::write(hpd.config_dir().join("broken.yaml"), BROKEN).unwrap();
    let sock = hpd.config_dir().with_file_name("notify.sock");
    let listener = Listener::start(&sock);
    let sock = sock.to_string_lossy().into_owned();
    let d = Daemon::start(&ns, &hpd, &[("NOTIFY_SOCKET", sock.as_str())]);
    let status = listener.ready_status();
    assert!(
        status
            .contains("DEGRADED: configuration invalid at start and there is no last good ruleset"),
        "STATUS={status}"
    );
    assert!(status.contains("nothing applied"), "STATUS={status}");
    let s = d.wait_ready(&ns, &hpd);
    assert_eq!(s["kernel"], "none", "{s:#}");
    assert!(table(&ns).is_none(), "nothing applied");
    d.wait_log(&["event=\"degraded\"", "no last good ruleset"]);
}

#[test]
fn a_group_writable_file_is_refused_and_the_previous_ruleset_stays() {
    if !require_root("a_group_writable_file_is_refused_and_the_previous_ruleset_stays") {
        return;
    }
    let ns = fresh_ns("node");
    let hpd = Hpd::new("node1");
    let dir = hpd.config_dir();
    std::fs::write(dir.join("hep.yaml"), hep_eth0()).unwrap();
    std::fs::write(dir.join("allow-8080.yaml"), allow_port("allow-8080", 8080)).unwrap();
    let d = Daemon::start(&ns, &hpd, &[]);
    let s = d.wait_ready(&ns, &hpd);
    assert_eq!(s["last_result"], "applied", "{s:#}");
    let before = nft_json(&ns, "inet", "hostpolicy").expect("our table");

    // A new policy file, group-writable. Made under a hidden name and renamed into place with its mode
    // set: written in place and then chmodded, the watcher could apply it in between while 0644.
    let file = dir.join("allow-8081.yaml");
    let tmp = dir.join(".allow-8081.yaml.tmp");
    std::fs::write(&tmp, allow_port("allow-8081", 8081)).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o664)).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let (code, text, _) = Daemon::reload(&ns, &hpd);
    assert_eq!(code, Some(1), "{text}");
    let expected = format!(
        "{0}:1:1: error: {0} is not trusted: mode 0664 is group-writable; run chmod go-w {0}",
        file.display()
    );
    assert!(text.contains(&expected), "{text}");
    let s = d.status(&ns, &hpd).unwrap();
    assert_eq!(s["last_result"], "invalid", "{s:#}");
    assert!(
        s["last_error"]["diagnostics"][0]
            .as_str()
            .unwrap()
            .contains("mode 0664 is group-writable"),
        "{s:#}"
    );
    assert_eq!(
        nft_json(&ns, "inet", "hostpolicy").as_ref(),
        Some(&before),
        "the previous ruleset stays"
    );

    // `check` of the directory refuses it too; `check FILE` (Ansible's validate on its temporary file)
    // does not judge modes; the option and its variable turn the check off.
    let out = hpd.run(&ns, &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(output_text(&out).contains("mode 0664 is group-writable"));
    let out = hpd.run(&ns, &["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let out = hpd.run(&ns, &["--strict-modes=no", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hostpolicyd"))
        .args(hpd.global_args())
        .arg("check")
        .env("HOSTPOLICYD_STRICT_MODES", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    // Fixed: applied.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, text, _) = Daemon::reload(&ns, &hpd);
    assert_eq!(code, Some(0), "{text}");
    assert_ne!(nft_json(&ns, "inet", "hostpolicy").as_ref(), Some(&before));
}
