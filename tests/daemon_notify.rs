//! systemd's notification protocol (issue 4): a Unix datagram listener of the test plays systemd on
//! NOTIFY_SOCKET and receives READY=1 after the first decision, RELOADING=1 (with MONOTONIC_USEC) then
//! READY=1 around a reload, WATCHDOG=1 pings with WATCHDOG_USEC set, STOPPING=1 on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::{hep_eth0, wait_for, Daemon, DEADLINE};
use common::netns::require_root;
use common::topology::fresh_ns;

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
        // Stops when the test drops the Arc (bounded by the test's lifetime).
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

    fn all(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until a message satisfies `pred`; returns its index.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        wait_for(DEADLINE, || self.all().iter().position(|m| pred(m)))
            .unwrap_or_else(|| panic!("no {what} within {DEADLINE:?}; got {:#?}", self.all()))
    }
}

fn has(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

#[test]
fn ready_reloading_watchdog_and_stopping() {
    if !require_root("ready_reloading_watchdog_and_stopping") {
        return;
    }
    let ns = fresh_ns("node");
    let hpd = common::topology::Hpd::new("node1");
    std::fs::write(hpd.config_dir().join("hep.yaml"), hep_eth0()).unwrap();
    let sock_path = hpd.config_dir().with_file_name("notify.sock");
    let listener = Listener::start(&sock_path);
    let sock = sock_path.to_string_lossy().into_owned();
    let mut d = Daemon::start(
        &ns,
        &hpd,
        &[
            ("NOTIFY_SOCKET", sock.as_str()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );

    let ready = listener.wait("READY=1", |m| has(m, "READY=1"));
    let first = &listener.all()[ready];
    assert!(
        first.lines().any(|l| l.starts_with("STATUS=generation 1")),
        "STATUS= with the summary: {first:?}"
    );
    d.wait_ready(&ns, &hpd);

    // Watchdog pings every WATCHDOG_USEC/2 = 100 ms: wait for a few.
    wait_for(DEADLINE, || {
        (listener
            .all()
            .iter()
            .filter(|m| has(m, "WATCHDOG=1"))
            .count()
            >= 3)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "fewer than 3 WATCHDOG=1 within {DEADLINE:?}: {:#?}",
            listener.all()
        )
    });

    // A reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    let (code, text, _) = Daemon::reload(&ns, &hpd);
    assert_eq!(code, Some(0), "{text}");
    let msgs = listener.all();
    let reloading = msgs
        .iter()
        .position(|m| has(m, "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1: {msgs:#?}"));
    let usec = msgs[reloading]
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC");
    assert!(usec.parse::<u64>().unwrap() > 0);
    wait_for(DEADLINE, || {
        listener.all()[reloading + 1..]
            .iter()
            .any(|m| has(m, "READY=1"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no READY=1 after RELOADING=1: {:#?}", listener.all()));

    d.signal("TERM");
    assert_eq!(d.wait_exit().code(), Some(0));
    listener.wait("STOPPING=1", |m| has(m, "STOPPING=1"));
}

#[test]
fn ready_even_when_the_first_configuration_is_invalid() {
    if !require_root("ready_even_when_the_first_configuration_is_invalid") {
        return;
    }
    let ns = fresh_ns("node");
    let hpd = common::topology::Hpd::new("node1");
    std::fs::write(hpd.config_dir().join("bad.yaml"), "kind: [\n").unwrap();
    let sock_path = hpd.config_dir().with_file_name("notify.sock");
    let listener = Listener::start(&sock_path);
    let sock = sock_path.to_string_lossy().into_owned();
    let _d = Daemon::start(&ns, &hpd, &[("NOTIFY_SOCKET", sock.as_str())]);
    let i = listener.wait("READY=1", |m| has(m, "READY=1"));
    let msg = &listener.all()[i];
    assert!(
        msg.contains("no ruleset of ours in force") && msg.contains("invalid"),
        "{msg}"
    );
    assert!(
        !listener.all().iter().any(|m| has(m, "WATCHDOG=1")),
        "no watchdog without WATCHDOG_USEC"
    );
}
