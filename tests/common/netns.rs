//! An RAII network namespace for privileged tests (aya's `NetNsGuard`, netavark's `test_setup!`).
//!
//! `NetNs::new("node")` creates a named namespace (`ip netns add hp-<pid>-<n>-node`), brings `lo` up, and
//! deletes it when dropped, even when the test panics. Nothing ever touches the host's own namespace.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// True when the tests run as root. Privileged tests call [`require_root`] first.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Where [`require_root`] lists the tests it skipped, one name per line: `scripts/test` empties it before
/// the run and prints the count and the names after it.
pub const SKIPPED_FILE: &str = "needs-root-skipped.txt";

/// Names another list than `target/tmp/`[`SKIPPED_FILE`]: the test of the skipping itself runs a test
/// binary without root and must not add to the list of the run it is part of.
pub const SKIPPED_FILE_ENV: &str = "HOSTPOLICYD_TEST_SKIPPED_LIST";

/// Returns false (the caller returns early) for a non-root developer run; in CI (`CI` set) or as root it
/// never skips: a privileged test that cannot run as root fails loudly instead.
///
/// A skipped test passes without having run, so it says so where a developer sees it: on the terminal
/// (written to stderr directly, which cargo's capture of `eprintln!` does not hold back for a passing
/// test) and in `target/tmp/needs-root-skipped.txt`, which `scripts/test` counts at the end.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root, and CI must run privileged tests (run the suite as root)");
    }
    use std::io::Write;
    let line = format!("{test}: skipped, needs root (`sudo -E scripts/test` runs it)\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    let list = std::env::var_os(SKIPPED_FILE_ENV).map_or_else(
        || std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(SKIPPED_FILE),
        std::path::PathBuf::from,
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
    {
        // One write per line (O_APPEND): tests skipping at the same time do not interleave.
        let _ = f.write_all(format!("{test}\n").as_bytes());
    }
    false
}

pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new(role: &str) -> NetNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("hp-{}-{}-{}", std::process::id(), n, role);
        run_ok("ip", ["netns", "add", &name]);
        let ns = NetNs { name };
        ns.exec_ok("ip", ["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace and returns its output (whatever its exit status).
    pub fn exec<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    /// Runs a command inside the namespace and panics (with its stderr) unless it succeeds.
    pub fn exec_ok<I, S>(&self, program: &str, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.exec(program, &args);
        if !out.status.success() {
            panic!(
                "in {}: {} {:?} failed: {}{}",
                self.name,
                program,
                args,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A `Command` that runs `program` inside the namespace (`ip netns exec NAME program args...`).
    pub fn command<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Runs `f` on a new thread that has entered this namespace (network namespaces are per thread), so
    /// in-process netlink code can be tested without touching the host's namespace.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // SAFETY: setns on a valid namespace fd; it changes only this thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Kill anything still running inside (servers started by the test), then delete the namespace.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_ok<I, S>(program: &str, args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects two namespaces with a veth pair: `a_if` in `a`, `b_if` in `b`, both up, no addresses.
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    let tmp_a = format!("hpv{}a", COUNTER.fetch_add(1, Ordering::SeqCst));
    let tmp_b = format!("hpv{}b", COUNTER.fetch_add(1, Ordering::SeqCst));
    // Create inside `a` so that nothing ever appears in the host's namespace.
    a.exec_ok(
        "ip",
        [
            "link",
            "add",
            &tmp_a,
            "type",
            "veth",
            "peer",
            "name",
            &tmp_b,
            "netns",
            b.name(),
        ],
    );
    a.exec_ok("ip", ["link", "set", &tmp_a, "name", a_if]);
    b.exec_ok("ip", ["link", "set", &tmp_b, "name", b_if]);
    a.exec_ok("ip", ["link", "set", a_if, "up"]);
    b.exec_ok("ip", ["link", "set", b_if, "up"]);
}
