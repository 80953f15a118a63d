//! Every command's output on a full disk and into a closed pipe (issue 19 item 5).
//!
//! `render >/dev/full`, `check >/dev/full`, `render | head -1`, `status --json | head -c 10` used to
//! panic (exit 101). A closed pipe ends quietly with 141 (128 + SIGPIPE, what a shell reports for
//! `ls | head`); any other write error is one line on standard error and exit 70; never a panic.

mod common;

use std::fs;
use std::os::fd::OwnedFd;
use std::process::{Command, Output, Stdio};

use common::daemon::{allow_port, hep_eth0};
use common::topology::{output_text, Hpd};

/// An installation with a valid configuration and a recorded status (for `status` without a daemon).
fn hpd() -> Hpd {
    let hpd = Hpd::new("node1");
    fs::write(hpd.config_dir().join("hep.yaml"), hep_eth0()).unwrap();
    fs::write(
        hpd.config_dir().join("allow.yaml"),
        allow_port("allow-8080", 8080),
    )
    .unwrap();
    let state = hpd.config_dir().with_file_name("state");
    let summary = hostpolicyd::engine::state::Summary {
        node: "node1".into(),
        table: "hostpolicy".into(),
        generation: 3,
        ..Default::default()
    };
    hostpolicyd::engine::state::Store::new(&state)
        .save_summary(&summary)
        .unwrap();
    hpd
}

/// The commands that print something on standard output.
const COMMANDS: &[&[&str]] = &[
    &["render"],
    &["check"],
    &["status", "--json"],
    &["status"],
    &[
        "explain",
        "--in",
        "eth0",
        "--src",
        "192.0.2.9",
        "--dst",
        "192.0.2.1",
        "--proto",
        "tcp",
        "--dport",
        "8080",
    ],
    &[
        "explain",
        "--json",
        "--in",
        "eth0",
        "--src",
        "192.0.2.9",
        "--dst",
        "192.0.2.1",
        "--proto",
        "tcp",
        "--dport",
        "22",
    ],
    &["--help"],
    &["--version"],
];

fn run(hpd: &Hpd, cmd: &[&str], stdout: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostpolicyd"))
        .args(hpd.global_args())
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run hostpolicyd")
}

/// The exit status each command has when its output goes through.
fn normal_status(cmd: &[&str]) -> i32 {
    match cmd[0] {
        "status" => 3, // no daemon: the recorded state is shown, exit 3
        _ => 0,
    }
}

#[test]
fn output_to_a_full_disk_is_one_line_and_exit_70() {
    let hpd = hpd();
    for cmd in COMMANDS {
        // The same command to a pipe that is read: its usual status, so the 70 below is the write's.
        let ok = run(&hpd, cmd, Stdio::piped());
        assert_eq!(
            ok.status.code(),
            Some(normal_status(cmd)),
            "{cmd:?}: {}",
            output_text(&ok)
        );
        assert!(!ok.stdout.is_empty(), "{cmd:?} prints something");

        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = run(&hpd, cmd, Stdio::from(full));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(70),
            "{cmd:?}: {}",
            output_text(&out)
        );
        assert!(!stderr.contains("panicked"), "{cmd:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert_eq!(
            last, "hostpolicyd: error: cannot write to standard output: No space left on device (os error 28)",
            "{cmd:?}: {stderr}"
        );
        assert_eq!(
            stderr.matches("cannot write to standard output").count(),
            1,
            "one line: {stderr}"
        );
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_141() {
    let hpd = hpd();
    for cmd in COMMANDS {
        // The reading end is closed before the command starts: its first write gets EPIPE. CLOEXEC:
        // a child another test spawns meanwhile must not inherit (and keep open) the reading end.
        let (reader, writer): (OwnedFd, OwnedFd) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        drop(reader);
        let out = run(&hpd, cmd, Stdio::from(writer));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{cmd:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{cmd:?}: {stderr}");
        assert!(
            !stderr.contains("cannot write"),
            "a closed pipe is not an error to report: {stderr}"
        );
    }
}

#[test]
fn a_closed_standard_error_is_not_a_panic_either() {
    let hpd = hpd();
    fs::write(hpd.config_dir().join("bad.yaml"), "kind: [\n").unwrap();
    let (reader, writer): (OwnedFd, OwnedFd) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_hostpolicyd"))
        .args(hpd.global_args())
        .arg("check")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(writer))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141));
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hostpolicyd"))
        .args(hpd.global_args())
        .arg("check")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(full))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(70),
        "the diagnostics could not be written"
    );
}
