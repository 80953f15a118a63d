//! The Prometheus textfile (issue 14) against a real daemon: written atomically (inotify sees the
//! `*.prom` file only ever renamed into place), mode 0644, accepted by `promtool check metrics`
//! (Debian's `prometheus` package, installed by scripts/deps), with the policy counters of the packets
//! sent, the flows, and reloads by result; the counter of a policy that did not change goes on across
//! a reload that changed another one.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use common::daemon::{hep_eth0, wait_for, Daemon, DEADLINE};
use common::netns::require_root;
use common::probe::{sa, tcp_connect, Outcome};
use common::topology::{output_text, Topology};

fn policy(name: &str, port: u16, action: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: {name}
spec:
  selector: \"role == 'web'\"
  ingress:
  - action: {action}
    protocol: TCP
    destination:
      ports: [{port}]
"
    )
}

/// The value of the first sample of `metrics` whose line starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn promtool(text: &str) -> Option<(Option<i32>, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return None,
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Some((out.status.code(), output_text(&out)))
}

#[test]
fn the_metrics_file_is_atomic_promtool_clean_and_counts_what_happened() {
    if !require_root("the_metrics_file_is_atomic_promtool_clean_and_counts_what_happened") {
        return;
    }
    let t = Topology::standard();
    let dir = t.hpd.config_dir().with_file_name("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hostpolicyd.prom");
    // Every change of the directory, from before the daemon starts.
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if let Ok(e) = e {
            let _ = tx.send(e);
        }
    })
    .unwrap();
    watcher.watch(&dir, RecursiveMode::NonRecursive).unwrap();
    t.hpd.set_config(&[
        ("10-hep.yaml", &hep_eth0()),
        ("20-deny.yaml", &policy("deny-metrics", 9100, "Deny")),
        ("30-other.yaml", &policy("other", 7000, "Deny")),
    ]);
    let file_s = file.to_string_lossy().into_owned();
    let d = Daemon::start(
        &t.node,
        &t.hpd,
        &[
            ("HOSTPOLICYD_METRICS_FILE", &file_s),
            ("HOSTPOLICYD_METRICS_INTERVAL", "1"),
        ],
    );
    d.wait_ready(&t.node, &t.hpd);
    for _ in 0..3 {
        assert_eq!(
            tcp_connect(
                &t.lan0,
                sa("192.0.2.200:0"),
                sa("192.0.2.1:9100"),
                Duration::from_millis(200)
            ),
            Outcome::Timeout
        );
    }
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    let deny = "hostpolicyd_policy_packets_total{tier=\"default\",policy=\"deny-metrics\",direction=\"ingress\",action=\"deny\"}";
    let text = wait_for(DEADLINE, || {
        let text = read();
        (sample(&text, deny)? >= 3
            && sample(&text, "hostpolicyd_flows_total{action=\"deny\"}")? >= 1)
            .then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "metrics never counted the denied packets:\n{}\nlog:\n{}",
            read(),
            d.log()
        )
    });
    for family in [
        "hostpolicyd_build_info{version=\"",
        "hostpolicyd_generation 1",
        "hostpolicyd_last_apply_timestamp_seconds ",
        "hostpolicyd_reloads_total{result=\"applied\"} 1",
        "hostpolicyd_reloads_total{result=\"rolled_back\"} 0",
        "hostpolicyd_drift_repairs_total 0",
        "hostpolicyd_degraded 0",
        "hostpolicyd_policy_bytes_total{tier=\"default\",policy=\"deny-metrics\"",
        "hostpolicyd_flow_records_dropped_total 0",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    assert!(!text.contains("192.0.2"), "no per-address label:\n{text}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    match promtool(&text) {
        Some((code, out)) => assert_eq!(code, Some(0), "promtool check metrics:\n{out}\n{text}"),
        None => assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing (scripts/deps installs the prometheus package)"
        ),
    }
    // A reload that changes another policy: the counter of the unchanged one goes on.
    let before = sample(&read(), deny).unwrap();
    common::daemon::write_ansible(
        &t.hpd.config_dir(),
        "30-other.yaml",
        &policy("other", 7001, "Deny"),
    );
    let (code, out, _) = Daemon::reload(&t.node, &t.hpd);
    assert_eq!(code, Some(0), "{out}");
    let text = wait_for(DEADLINE, || {
        let text = read();
        (sample(&text, "hostpolicyd_generation")? == 2).then_some(text)
    })
    .expect("the metrics follow the reload");
    assert!(sample(&text, deny).unwrap() >= before, "{text}");
    assert!(
        sample(&text, "hostpolicyd_reloads_total{result=\"applied\"}").unwrap() >= 2,
        "{text}"
    );
    // Atomic: the *.prom file only ever appeared by a rename; nothing created, wrote or closed after
    // writing it in place (opening it is the test reading it).
    drop(d);
    drop(watcher);
    let events: Vec<notify::Event> = rx.try_iter().collect();
    let prom = |p: &Path| p.extension().is_some_and(|e| e == "prom");
    let on_prom: Vec<&notify::Event> = events
        .iter()
        .filter(|e| e.paths.iter().any(|p| prom(p)))
        .collect();
    assert!(!on_prom.is_empty(), "{events:?}");
    for e in &on_prom {
        let written = matches!(
            e.kind,
            EventKind::Create(_)
                | EventKind::Modify(notify::event::ModifyKind::Data(_))
                | EventKind::Modify(notify::event::ModifyKind::Metadata(_))
                | EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write
                ))
        );
        let renamed_into_place = matches!(
            e.kind,
            EventKind::Modify(notify::event::ModifyKind::Name(_))
        );
        assert!(
            !written || renamed_into_place,
            "the .prom file is only renamed into place: {e:?}\nall: {events:?}"
        );
    }
    assert!(
        events.iter().any(|e| matches!(
            e.kind,
            EventKind::Create(_) | EventKind::Modify(notify::event::ModifyKind::Data(_))
        ) && e.paths.iter().all(|p| !prom(p))),
        "the temporary file (not *.prom) was written: {events:?}"
    );
}
