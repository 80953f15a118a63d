//! `hostpolicyd-bench`: how fast hostpolicyd compiles, applies and reloads, and what its table costs per
//! packet, measured in network namespaces it creates and removes (issue 7). Run it as root, in release
//! mode, on a machine that is otherwise as quiet as possible:
//!
//! ```sh
//! cargo bench --bench hostpolicyd-bench                     # everything, 5 runs per figure (~7 minutes)
//! cargo bench --bench hostpolicyd-bench -- --runs 3 --only compile,apply
//! ```
//!
//! Sections (`--only` takes a comma-separated list of them):
//!
//! - `compile`: load + validate + resolve + compile from generated YAML files on disk, in this process
//!   (wall and CPU time), for 10, 1,000 and 10,000 policies and a GlobalNetworkSet of 100,000 nets.
//! - `apply`: the same configurations into a fresh namespace each run. Ours is a child process of this
//!   binary that loads, compiles and applies (it reports the time of the `Dataplane::apply` call alone:
//!   what it reads back from the kernel, the encoding, its transactions and the kernel's answers); nft's
//!   is `nft -f` of the rendered text. Both wall times and both peak RSS (`wait4`'s `ru_maxrss`, through
//!   a small spawner process: see [`spawner`]). Anything slower than 20 s is run twice only.
//! - `incremental`: one net of the 100,000 changed, in this process: `Dataplane::update` (element
//!   changes only) against `apply` (full replace) of the same ruleset, and the same with the compile.
//! - `reload`: `hostpolicyd run` (this binary's `daemon` mode: the library's own `cli::run`, so always the
//!   code being measured) in a namespace; a changed file is written under a dot name and renamed into the
//!   watched directory, and the time from the rename to the daemon's commit is measured: the arrival of
//!   the NFT_MSG_NEWGEN notification of a transaction of the daemon's process after which the kernel
//!   holds the new content hash ([`wait_for_commit`]; polling the hash instead measured the polls). The daemon's peak RSS is taken
//!   when it exits. After a rename into the directory (a complete file, after a quiet second) the daemon
//!   reloads once the short quiet period `daemon::watch::SETTLE` is over, and reads and compiles the
//!   directory during it already; the figures include it.
//! - `packet`: TCP connections per second (each: connect, read one byte, close with RST so that no
//!   TIME_WAIT piles up) from a client namespace through a forwarding node namespace to a server
//!   namespace, for a bounded time per run, with no table, our table for 10 policies, and our table for
//!   10,000 policies plus a 100,000-net deny list (a GlobalNetworkSet referenced by a preDNAT deny rule,
//!   looked up for the first packet of every connection in mangle prerouting). Each of our tables twice:
//!   flow records off (`--flow-records off`) and on (the default: the table reports every forwarded
//!   connection, twice since both host endpoints' forward chains decide it, and a flows thread of this
//!   process listens in the node's namespace, as the daemon's does, with conntrack accounting on). Beside
//!   the rate, this process's CPU per connection (client, server, flows reader, and the kernel's
//!   forwarding path in the sender's softirq) and the flows reader's share: less sensitive than the rate
//!   to what else a shared machine runs. Flow records on against off are paired by round.
//! - `flows` (issue 14): a denied-packet flood, from several sender threads as fast as they can, against a
//!   real daemon (`hostpolicyd run` in the node namespace): the daemon's CPU over the flood (its
//!   `/proc/PID/stat`) with the default rate limit and with every packet reported; and the flows table
//!   at 100,000 distinct flows (this process's resident memory before and after, and the table's own
//!   estimate).
//! - `plan` (issue 15): `plan` in this process between the 10,000-policy configuration and the same with
//!   one port range widened by one port, and between the 100,000-net configuration and the same with one
//!   net replaced: loading both directories, then resolve, compile, ruleset and resource changes, the
//!   lockout guard and the verdict changes (the regions are counted, and checked for the first case).
//!
//! Addresses: documentation ranges only (192.0.2.0/24 client side, 198.51.100.0/24 server side,
//! 203.0.113.0/24 and 2001:db8::/32 for other HostEndpoints and rule nets). The 100,000 deny-list nets
//! are IPv4 /32s in 10.0.0.0/8 (every other address from 10.0.0.0): they are only ever set elements, no
//! packet is sent to or from them, and they make the IPv4 lookup of every test connection go through a
//! 100,000-element set.
//!
//! Every figure is the median of `--runs` runs (default 5); the load average before and after each section
//! is printed, since the machine may be shared. At the end a Markdown summary is printed for the README.
//!
//! Knobs for investigating (environment): `HPBENCH_APPLY_CASES=p10,nets` (apply only the configurations
//! whose directory names are listed: p10, p1000, p10000, p10000sel, nets), `HPBENCH_SKIP_RELOAD=1,2`
//! (skip reload cases by index), `HPBENCH_BREAKDOWN=N` (N more element updates in `incremental`, each
//! timed in parts: diff, hash query, element batch).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostpolicyd::config::load;
use hostpolicyd::daemon::nftmon::{Monitor, Note, Received};
use hostpolicyd::nft::{render, Dataplane, Netlink, UpdatePath};
use hostpolicyd::pipeline;
use hostpolicyd::ruleset::Ruleset;

const TABLE: &str = "hostpolicy";
const NODE: &str = "node1";
/// The TCP port of the packet test's server (not a failsafe port).
const SERVER_PORT: u16 = 8080;
const SECTIONS: [&str; 7] = [
    "compile",
    "apply",
    "incremental",
    "reload",
    "packet",
    "flows",
    "plan",
];
/// A measurement slower than this (ms) is repeated at most [`SLOW_RUNS`] times.
const SLOW_MS: f64 = 20_000.0;
const SLOW_RUNS: usize = 2;

// =====================================================================================================
// Command line

struct Options {
    runs: usize,
    only: Vec<String>,
    /// Seconds per packet-path run.
    packet_secs: f64,
    workdir: PathBuf,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: hostpolicyd-bench [--runs N] [--only SECTION,...] [--packet-secs S] [--workdir DIR]\n\
         sections: {}",
        SECTIONS.join(", ")
    );
    ExitCode::from(64)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Internal modes, run as child processes of the benchmark.
    match args.first().map(String::as_str) {
        Some("child-apply") => return child_apply(&args[1..]),
        Some("spawn") => return spawner(&args[1..]),
        Some("daemon") => return daemon(&args[1..]),
        _ => {}
    }
    let mut o = Options {
        runs: 5,
        only: SECTIONS.iter().map(|s| s.to_string()).collect(),
        packet_secs: 3.0,
        workdir: std::env::temp_dir().join(format!("hostpolicyd-bench-{}", std::process::id())),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next();
        match a.as_str() {
            // What `cargo bench` adds for libtest harnesses; this one has its own.
            "--bench" => {}
            "--runs" => match value().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => o.runs = n,
                _ => return usage(),
            },
            "--only" => match value() {
                Some(v) => o.only = v.split(',').map(str::to_string).collect(),
                None => return usage(),
            },
            "--packet-secs" => match value().and_then(|v| v.parse().ok()) {
                Some(s) if s > 0.0 => o.packet_secs = s,
                _ => return usage(),
            },
            "--workdir" => match value() {
                Some(v) => o.workdir = PathBuf::from(v),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    if let Some(bad) = o.only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        eprintln!("unknown section {bad}");
        return usage();
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("hostpolicyd-bench needs root (network namespaces, nftables)");
        return ExitCode::from(1);
    }
    let result = run(&o);
    let _ = fs::remove_dir_all(&o.workdir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostpolicyd-bench: {e}");
            ExitCode::from(1)
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn run(o: &Options) -> Result<()> {
    let cases = Cases::generate(&o.workdir)?;
    let mut summary = Summary::default();
    println!("hostpolicyd-bench: {} runs per figure, medians", o.runs);
    println!("machine: {}", machine());
    let on = |s: &str| o.only.iter().any(|x| x == s);
    if on("compile") {
        section("compile", || bench_compile(o, &cases, &mut summary))?;
    }
    if on("apply") {
        section("apply", || bench_apply(o, &cases, &mut summary))?;
    }
    if on("incremental") {
        section("incremental", || bench_incremental(o, &cases, &mut summary))?;
    }
    if on("reload") {
        section("reload", || bench_reload(o, &cases, &mut summary))?;
    }
    if on("packet") {
        section("packet", || bench_packet(o, &cases, &mut summary))?;
    }
    if on("flows") {
        section("flows", || bench_flows(o, &cases, &mut summary))?;
    }
    if on("plan") {
        section("plan", || bench_plan(o, &cases, &mut summary))?;
    }
    println!("\n===== Markdown summary =====\n");
    print!("{}", summary.markdown(o));
    Ok(())
}

fn section(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("\n== {name} (load average before: {})", loadavg());
    let r = f();
    println!("   (load average after: {})", loadavg());
    r
}

// =====================================================================================================
// Measuring

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU seconds of this process (every thread) so far.
fn own_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nft = Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |k| k / 1024 / 1024);
    format!(
        "{cpus} CPUs ({cpu}), {mem} GiB, kernel {}, {nft}",
        kernel.trim()
    )
}

/// Peak RSS (KiB) and exit status of a child, from `wait4`.
fn wait_child(child: &std::process::Child) -> Result<(i32, u64)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child, with valid pointers.
        let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(format!("wait4: {e}"));
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((code, ru.ru_maxrss as u64))
}

/// Spawner mode: `spawn NETNS-PATH PROGRAM ARGS...` runs PROGRAM in the namespace and prints, as the last
/// line of its stderr, `spawn-result EXIT MAXRSS-KiB WALL-ms`.
///
/// Why a separate process: a child's `ru_maxrss` counts the memory of the process it was forked from
/// (the kernel keeps the high-water mark across `execve`), and this benchmark holds big rulesets. The
/// spawner is a fresh, small process (a few MiB, see `spawn /bin/true` in the output), so what the
/// program itself used is what shows.
fn spawner(args: &[String]) -> ExitCode {
    let [ns, program, rest @ ..] = args else {
        return ExitCode::from(64);
    };
    let file = match File::open(ns) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{ns}: {e}");
            return ExitCode::from(1);
        }
    };
    let fd = file.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(rest);
    // SAFETY: setns is async-signal-safe; `file` outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t0 = Instant::now();
    let result = cmd
        .spawn()
        .map_err(|e| format!("{program}: {e}"))
        .and_then(|child| wait_child(&child));
    let wall = ms(t0.elapsed());
    match result {
        Ok((code, rss)) => {
            eprintln!("spawn-result {code} {rss} {wall:.3}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// What a spawned program did.
struct Spawned {
    stdout: String,
    stderr: String,
    code: i32,
    rss_kib: u64,
    wall_ms: f64,
}

/// Runs `program args` in `ns` through the spawner (see [`spawner`]).
fn spawn_measured(ns: &NetNs, program: &Path, args: &[&std::ffi::OsStr]) -> Result<Spawned> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .arg("spawn")
        .arg(ns.path())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stderr.lines().last().unwrap_or_default();
    let f: Vec<&str> = last.split_whitespace().collect();
    match f[..] {
        ["spawn-result", code, rss, wall] => Ok(Spawned {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: stderr[..stderr.len() - last.len()].to_string(),
            code: code.parse().unwrap_or(-1),
            rss_kib: rss.parse().unwrap_or(0),
            wall_ms: wall.parse().unwrap_or(f64::NAN),
        }),
        _ => Err(format!("spawner: {stderr}")),
    }
}

/// The peak resident set size of a running process (`VmHWM`, KiB): its own, since the exec.
fn vm_hwm(pid: libc::pid_t) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// =====================================================================================================
// Network namespaces

static NS_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace (`ip netns add`), with `lo` up, deleted on drop (its processes killed).
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(role: &str) -> Result<NetNs> {
        let n = NS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("hpbench-{}-{n}-{role}", std::process::id());
        sh("ip", &["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace; its stdout, or an error with its stderr.
    fn exec(&self, argv: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(argv);
        sh("ip", &full)
    }

    /// A command whose process enters the namespace before it starts (`setns` between fork and exec).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<(Command, File)> {
        let file = File::open(self.path()).map_err(|e| format!("{}: {e}", self.path()))?;
        let fd = file.as_raw_fd();
        let mut cmd = Command::new(program);
        // SAFETY: setns is async-signal-safe; `fd` stays open (owned by the returned File) until spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok((cmd, file))
    }

    /// Runs `f` on a thread that entered the namespace.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        let file = File::open(self.path()).map_err(|e| format!("{}: {e}", self.path()))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                enter(&file)?;
                Ok(f())
            })
            .join()
            .map_err(|_| "a namespace thread panicked".to_string())?
        })
    }
}

fn enter(file: &File) -> Result<()> {
    // SAFETY: setns on a valid namespace descriptor; changes only this thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", io::Error::last_os_error()));
    }
    Ok(())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<libc::pid_t>() {
                    // SAFETY: plain kill(2) of a process inside our own namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// =====================================================================================================
// Configurations

/// One generated configuration directory.
struct Case {
    label: &'static str,
    dir: PathBuf,
}

struct Cases {
    p10: Case,
    p1000: Case,
    p10000: Case,
    /// 10,000 policies with selector rules only (few sets).
    p10000sel: Case,
    nets: Case,
    /// Issue 18: 10,000 one-rule policies for one HostEndpoint, in one file.
    one_file: Case,
    /// The same as 10,000 files of one policy each.
    files: Case,
    /// 10,000 policies and the 100,000-net deny list (packet path).
    big: Case,
    workdir: PathBuf,
}

impl Cases {
    fn generate(workdir: &Path) -> Result<Cases> {
        let _ = fs::remove_dir_all(workdir);
        let mk = |label: &'static str, name: &str, files: Vec<(&str, String)>| -> Result<Case> {
            let dir = workdir.join(name);
            write_files(&dir, files.iter().map(|(f, t)| (f.to_string(), t.clone())))?;
            Ok(Case { label, dir })
        };
        let files_dir = workdir.join("p10000files");
        write_files(&files_dir, one_rule_files(10_000))?;
        Ok(Cases {
            p10: mk(
                "10 policies",
                "p10",
                vec![
                    ("10-heps.yaml", heps()),
                    ("20-policies.yaml", policies(10, 0)),
                ],
            )?,
            p1000: mk(
                "1,000 policies",
                "p1000",
                vec![
                    ("10-heps.yaml", heps()),
                    ("20-policies.yaml", policies(1000, 0)),
                ],
            )?,
            p10000: mk(
                "10,000 policies",
                "p10000",
                vec![
                    ("10-heps.yaml", heps()),
                    ("20-policies.yaml", policies(10_000, 0)),
                ],
            )?,
            p10000sel: mk(
                "10,000 policies, selector rules",
                "p10000sel",
                vec![
                    ("10-heps.yaml", heps()),
                    ("20-policies.yaml", selector_policies(10_000)),
                ],
            )?,
            nets: mk(
                "100,000 nets",
                "nets",
                vec![
                    ("10-heps.yaml", heps()),
                    ("30-deny-list.yaml", deny_list(100_000, None)),
                    ("31-deny.yaml", deny_policy()),
                ],
            )?,
            one_file: mk(
                "10,000 one-rule policies, one file",
                "p10000one",
                vec![
                    ("10-hep.yaml", one_hep()),
                    ("20-policies.yaml", one_rule_policies(10_000)),
                ],
            )?,
            files: Case {
                label: "10,000 one-rule policies, 10,000 files",
                dir: files_dir,
            },
            big: mk(
                "10,000 policies + 100,000 nets",
                "big",
                vec![
                    ("10-heps.yaml", heps()),
                    ("20-policies.yaml", policies(10_000, 0)),
                    ("30-deny-list.yaml", deny_list(100_000, None)),
                    ("31-deny.yaml", deny_policy()),
                ],
            )?,
            workdir: workdir.to_path_buf(),
        })
    }
}

/// Writes `files` (name, text) into `dir`, creating it.
fn write_files(dir: &Path, files: impl IntoIterator<Item = (String, String)>) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (f, text) in files {
        fs::write(dir.join(&f), text).map_err(|e| format!("{f}: {e}"))?;
    }
    Ok(())
}

/// The node's one HostEndpoint of issue 18's workloads (label `one: "yes"`).
fn one_hep() -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: node1-c\n  labels:\n    one: \"yes\"\nspec:\n  node: {NODE}\n  interfaceName: eth-c\n  expectedIPs: [192.0.2.1]\n"
    )
}

/// Issue 18's policy `i`: a GlobalNetworkPolicy of one rule for the one HostEndpoint, allowing TCP from
/// one /24 (one of the three IPv4 documentation ranges) to port 1024 + i (+ `variant`).
fn one_rule_policy(i: usize, variant: u16) -> String {
    let net = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"][i % 3];
    let port = 1024 + (i % 60_000) as u16 + variant;
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: one-{i:05}\nspec:\n  order: {i}\n  selector: one == 'yes'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source:\n      nets: [{net}]\n    destination:\n      ports: [{port}]\n"
    )
}

/// `n` of [`one_rule_policy`] in one stream.
fn one_rule_policies(n: usize) -> String {
    (0..n)
        .map(|i| one_rule_policy(i, 0))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The name of the file of policy `i` in the one-policy-per-file workload.
fn one_rule_file(i: usize) -> String {
    format!("20-policy-{i:05}.yaml")
}

/// `n` files of one [`one_rule_policy`] each (what configuration management drops), the first with
/// [`one_hep`] too (10,000 files are the most hostpolicyd reads: hostpolicy.d(5), "Limits").
fn one_rule_files(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let policy = one_rule_policy(i, 0);
            let text = if i == 0 {
                format!("{}---\n{policy}", one_hep())
            } else {
                policy
            };
            (one_rule_file(i), text)
        })
        .collect()
}

/// The node's two HostEndpoints (the packet test's interfaces, label role=node) and 100 HostEndpoints
/// of other nodes (expectedIPs in 203.0.113.0/24 and 2001:db8:1::/48, label app=a0..a9) for rule
/// selectors.
fn heps() -> String {
    let hep = |name: &str, node: &str, iface: &str, ips: &[String], labels: &[(&str, String)]| {
        let mut s = format!(
            "- apiVersion: projectcalico.org/v3\n  kind: HostEndpoint\n  metadata:\n    name: {name}\n    labels:\n"
        );
        for (k, v) in labels {
            let _ = writeln!(s, "      {k}: \"{v}\"");
        }
        let _ = writeln!(
            s,
            "  spec:\n    node: {node}\n    interfaceName: {iface}\n    expectedIPs: [{}]",
            ips.join(", ")
        );
        s
    };
    let mut s = String::new();
    s += &hep(
        "node1-c",
        NODE,
        "eth-c",
        &["192.0.2.1".into()],
        &[("role", "node".into())],
    );
    s += &hep(
        "node1-s",
        NODE,
        "eth-s",
        &["198.51.100.1".into()],
        &[("role", "node".into())],
    );
    for k in 1..=100 {
        s += &hep(
            &format!("peer{k:03}-eth0"),
            &format!("peer{k:03}"),
            "eth0",
            &[format!("203.0.113.{k}"), format!("\"2001:db8:1::{k:x}\"")],
            &[("role", "peer".into()), ("app", format!("a{}", k % 10))],
        );
    }
    s
}

/// `n` ingress policies for the node's HostEndpoints, in order. Policy `i` allows TCP to port
/// 1024 + i (+ a range) from a /32 of 198.51.100.0/24 (even i) or a /64 of 2001:db8:2::/48 (odd i);
/// every 10th instead allows from the HostEndpoints selected by `app == 'aK'`; every 7th also denies a
/// UDP port range. `variant` changes policy 0's port (for reloads).
fn policies(n: usize, variant: u16) -> String {
    let mut s = String::with_capacity(n * 300);
    for i in 0..n {
        let port = 1024 + (i % 60_000) as u16 + if i == 0 { variant } else { 0 };
        let _ = write!(
            s,
            "- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata:\n    name: bench-{i:05}\n  spec:\n    order: {i}\n    selector: role == 'node'\n    types: [Ingress]\n    ingress:\n"
        );
        if i % 10 == 0 {
            let _ = write!(
                s,
                "    - action: Allow\n      protocol: TCP\n      source:\n        selector: app == 'a{}'\n      destination:\n        ports: [{port}]\n",
                (i / 10) % 10
            );
        } else {
            let net = if i % 2 == 0 {
                format!("198.51.100.{}/32", i % 256)
            } else {
                format!("\"2001:db8:2:{i:x}::/64\"")
            };
            let _ = write!(
                s,
                "    - action: Allow\n      protocol: TCP\n      source:\n        nets: [{net}]\n      destination:\n        ports: [{port}, \"{}:{}\"]\n",
                port + 1,
                port + 3
            );
        }
        if i % 7 == 0 {
            s += "    - action: Deny\n      protocol: UDP\n      destination:\n        ports: [\"6000:6100\"]\n";
        }
    }
    s
}

/// `n` ingress policies like [`policies`] but every rule selects its sources by label (`app == 'aK'`,
/// K = i mod 10) and allows one port: no literal address or port list, so the ruleset has only the 20
/// selector sets (10 selectors, 2 families) however many policies there are.
fn selector_policies(n: usize) -> String {
    let mut s = String::with_capacity(n * 250);
    for i in 0..n {
        let _ = write!(
            s,
            "- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata:\n    name: sel-{i:05}\n  spec:\n    order: {i}\n    selector: role == 'node'\n    types: [Ingress]\n    ingress:\n    - action: Allow\n      protocol: TCP\n      source:\n        selector: app == 'a{}'\n      destination:\n        ports: [{}]\n",
            i % 10,
            1024 + i % 60_000
        );
    }
    s
}

/// A GlobalNetworkSet of `n` IPv4 /32s: 10.0.0.0, 10.0.0.2, 10.0.0.4, ... (never adjacent, so they stay
/// `n` elements). These addresses are outside the documentation ranges: they are only set elements, and
/// no packet is ever sent to or from them. `swap` replaces net number `k` with 10.200.0.0 + `v`.
fn deny_list(n: u32, swap: Option<(u32, u32)>) -> String {
    let mut s = String::from(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: deny-list\n  labels:\n    role: deny-list\nspec:\n  nets:\n",
    );
    for i in 0..n {
        let a = match swap {
            Some((k, v)) if k == i => Ipv4Addr::from(0x0ac8_0000 + v),
            _ => Ipv4Addr::from(0x0a00_0000 + 2 * i),
        };
        let _ = writeln!(s, "  - {a}/32");
    }
    s
}

/// A preDNAT policy denying sources in the deny list, on the node's HostEndpoints.
fn deny_policy() -> String {
    "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: deny-listed-sources\nspec:\n  order: 1\n  preDNAT: true\n  applyOnForward: true\n  selector: role == 'node'\n  ingress:\n  - action: Deny\n    source:\n      selector: role == 'deny-list'\n"
        .to_string()
}

// =====================================================================================================
// plan

/// `plan` between two configurations that differ in one place: the 10,000 policies with one port
/// range of policy 1 widened by one port (`1026:1028` → `1026:1029`: one more port open from one
/// network, on both HostEndpoints of the node), and the 100,000-net deny list with one net replaced (the
/// reload benchmark's change). Load is the reading and validation of both directories; plan is what
/// `hostpolicyd plan` does then: resolve and compile both for the node, the ruleset and resource
/// changes, the lockout guard, and the verdict changes.
fn bench_plan(o: &Options, cases: &Cases, sum: &mut Summary) -> Result<()> {
    let write = |name: &str, files: Vec<(&str, String)>| -> Result<PathBuf> {
        let dir = cases.workdir.join(name);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (f, text) in files {
            fs::write(dir.join(f), text).map_err(|e| format!("{f}: {e}"))?;
        }
        Ok(dir)
    };
    let widened = policies(10_000, 0).replace(
        "ports: [1025, \"1026:1028\"]",
        "ports: [1025, \"1026:1029\"]",
    );
    let p_after = write(
        "p10000-widened",
        vec![("10-heps.yaml", heps()), ("20-policies.yaml", widened)],
    )?;
    let n_after = write(
        "nets-swapped",
        vec![
            ("10-heps.yaml", heps()),
            ("30-deny-list.yaml", deny_list(100_000, Some((5, 1)))),
            ("31-deny.yaml", deny_policy()),
        ],
    )?;
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "change", "load ms", "plan ms", "total ms", "CPU ms", "regions"
    );
    for (label, before, after, want) in [
        (
            "10,000 policies, one port range widened",
            &cases.p10000.dir,
            &p_after,
            2,
        ),
        (
            "100,000 nets, one net replaced",
            &cases.nets.dir,
            &n_after,
            0,
        ),
    ] {
        let (mut load_t, mut plan_t, mut total, mut cpu) = (vec![], vec![], vec![], vec![]);
        let mut regions = 0;
        for _ in 0..o.runs {
            let c0 = own_cpu();
            let t0 = Instant::now();
            let (b, a) = hostpolicyd::cli::plan::load_pair(before, after);
            if b.has_errors() || a.has_errors() {
                return Err(format!("{label}: invalid configuration"));
            }
            let t1 = Instant::now();
            let plan = hostpolicyd::cli::plan::make_plan(
                &b.config,
                &a.config,
                &[NODE.to_string()],
                TABLE,
                &hostpolicyd::settings::Flows::default(),
                "bench".into(),
                &|_| hostpolicyd::cli::plan::NodeInterfaces {
                    before: Vec::new(),
                    after: Vec::new(),
                    live: Vec::new(),
                },
            );
            let t2 = Instant::now();
            cpu.push((own_cpu() - c0) * 1e3);
            load_t.push(ms(t1 - t0));
            plan_t.push(ms(t2 - t1));
            total.push(ms(t2 - t0));
            regions = plan.verdict_changes.len();
            if want > 0 && regions != want {
                return Err(format!(
                    "{label}: {regions} regions, expected {want}: {:#?}",
                    plan.verdict_changes
                ));
            }
        }
        let row = PlanRow {
            label: label.to_string(),
            load: median(&mut load_t),
            plan: median(&mut plan_t),
            total: median(&mut total),
            cpu: median(&mut cpu),
            regions,
        };
        println!(
            "{:<40} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8}",
            row.label, row.load, row.plan, row.total, row.cpu, row.regions
        );
        sum.plan.push(row);
    }
    Ok(())
}

fn compile_dir(dir: &Path) -> Result<pipeline::Compiled> {
    compile_dir_with(dir, &hostpolicyd::settings::Flows::default())
}

fn compile_dir_with(
    dir: &Path,
    flows: &hostpolicyd::settings::Flows,
) -> Result<pipeline::Compiled> {
    let loaded = load::load_dir(dir);
    pipeline::build_with(loaded, NODE, &[], TABLE, false, flows).map_err(|e| {
        let first: Vec<String> = e
            .diagnostics
            .iter()
            .take(3)
            .map(|d| d.to_string())
            .collect();
        format!(
            "{}: invalid configuration: {}",
            dir.display(),
            first.join("; ")
        )
    })
}

fn elements(rs: &Ruleset) -> usize {
    rs.sets.iter().map(|s| s.elements.len()).sum()
}

// =====================================================================================================
// compile

#[derive(Default)]
struct Summary {
    compile: Vec<(String, f64, f64, f64, usize, usize, usize)>,
    apply: Vec<ApplyRow>,
    incremental: Option<IncrementalRow>,
    reload: Vec<ReloadRow>,
    packet: Vec<(String, f64, f64)>,
    /// (label, CPU µs per connection, no table's CPU per connection / this one's).
    packet_cpu: Vec<(String, f64, f64)>,
    daemon_rss: Vec<(String, u64)>,
    /// (label, packets sent per second, daemon CPU % of one core, messages read, records dropped).
    flood: Vec<(String, f64, f64, u64, u64)>,
    /// (records, RSS growth KiB, the table's estimate KiB, µs per record).
    table: Option<(usize, u64, u64, f64)>,
    /// µs of the reader per allowed connection (report + end).
    reader_per_connection: Option<f64>,
    plan: Vec<PlanRow>,
}

struct PlanRow {
    label: String,
    load: f64,
    plan: f64,
    total: f64,
    /// CPU time of every thread of the process over load and plan.
    cpu: f64,
    regions: usize,
}

struct ApplyRow {
    label: String,
    ours_apply: f64,
    ours_process: f64,
    /// The kernel's time for our transactions (each batch's `sendmsg` until its answer).
    kernel: f64,
    /// Our whole process less the kernel's time, medians of the differences.
    userspace: f64,
    /// `hostpolicyd apply` (the command, state directory included), exec to exit.
    command: f64,
    nft: f64,
    ours_rss: u64,
    /// Peak RSS of our child before its apply call (YAML, Config, IR).
    ours_rss_compiled: u64,
    nft_rss: u64,
}

struct IncrementalRow {
    update: f64,
    full: f64,
    compile_update: f64,
    compile_full: f64,
    path: String,
}

struct ReloadRow {
    label: String,
    change: String,
    total: f64,
    min: f64,
    max: f64,
}

fn bench_compile(o: &Options, cases: &Cases, sum: &mut Summary) -> Result<()> {
    println!(
        "{:<32} {:>10} {:>10} {:>10} {:>10} {:>8} {:>7} {:>9}",
        "configuration",
        "load ms",
        "compile ms",
        "total ms",
        "total CPU",
        "rules",
        "sets",
        "elements"
    );
    for case in [
        &cases.p10,
        &cases.p1000,
        &cases.p10000,
        &cases.p10000sel,
        &cases.nets,
        &cases.one_file,
        &cases.files,
    ] {
        let (mut load_t, mut comp_t, mut total, mut cpu) = (vec![], vec![], vec![], vec![]);
        let mut counts = (0, 0, 0);
        for _ in 0..o.runs {
            let c0 = thread_cpu();
            let t0 = Instant::now();
            let loaded = load::load_dir(&case.dir);
            let t1 = Instant::now();
            let built = pipeline::build(loaded, NODE, &[], TABLE, false)
                .map_err(|e| format!("{}: {:?}", case.label, e.diagnostics.first()))?;
            let t2 = Instant::now();
            cpu.push((thread_cpu() - c0) * 1e3);
            load_t.push(ms(t1 - t0));
            comp_t.push(ms(t2 - t1));
            total.push(ms(t2 - t0));
            let rs = &built.ruleset;
            counts = (rs.rule_count(), rs.sets.len(), elements(rs));
        }
        let (l, c, t, u) = (
            median(&mut load_t),
            median(&mut comp_t),
            median(&mut total),
            median(&mut cpu),
        );
        println!(
            "{:<32} {l:>10.1} {c:>10.1} {t:>10.1} {u:>10.1} {:>8} {:>7} {:>9}",
            case.label, counts.0, counts.1, counts.2
        );
        // Where the build's time goes, stage by stage (the same functions `pipeline::build` calls).
        let loaded = load::load_dir(&case.dir);
        let config = loaded.config;
        let (mut res, mut lint, mut comp, mut hash) = (vec![], vec![], vec![], vec![]);
        for _ in 0..o.runs {
            let t0 = Instant::now();
            let view = hostpolicyd::resolve::resolve(&config, NODE, &[]);
            let t1 = Instant::now();
            let l = hostpolicyd::analysis::lint::lint(&config, &view);
            let k = hostpolicyd::analysis::lockout::check(&config, &view, &[]);
            let t2 = Instant::now();
            let rs = hostpolicyd::compile::compile(&config, &view, TABLE);
            let t3 = Instant::now();
            let h = hostpolicyd::compile::content_hash(&rs);
            let t4 = Instant::now();
            std::hint::black_box(&h);
            std::hint::black_box((l, k));
            res.push(ms(t1 - t0));
            lint.push(ms(t2 - t1));
            comp.push(ms(t3 - t2));
            hash.push(ms(t4 - t3));
        }
        // Issue 18: the daemon's compile of a reload in which one policy changed (a port of the first
        // policy, back and forth), its compile cache taking back the other policies' chains.
        let mut changed = config.clone();
        if let Some(p) = changed.policies.first_mut() {
            let mut q = (**p).clone();
            for r in q.ingress.iter_mut().chain(q.egress.iter_mut()) {
                r.destination.ports = vec![hostpolicyd::config::model::Port::Range(7, 7)];
            }
            *p = std::sync::Arc::new(q);
        }
        let mut cache = hostpolicyd::compile::Cache::new();
        let flows = hostpolicyd::settings::Flows::default();
        let view = hostpolicyd::resolve::resolve(&config, NODE, &[]);
        hostpolicyd::compile::compile_cached(&config, &view, TABLE, &flows, Some(&mut cache));
        let (mut inc, mut inc_all) = (vec![], vec![]);
        for run in 0..o.runs.max(3) * 2 {
            let c = if run % 2 == 0 { &changed } else { &config };
            let t0 = Instant::now();
            let view = hostpolicyd::resolve::resolve(c, NODE, &[]);
            let l = hostpolicyd::analysis::lint::lint(c, &view);
            let k = hostpolicyd::analysis::lockout::check(c, &view, &[]);
            let t1 = Instant::now();
            let rs =
                hostpolicyd::compile::compile_cached(c, &view, TABLE, &flows, Some(&mut cache));
            let t2 = Instant::now();
            std::hint::black_box((l, k, rs));
            inc.push(ms(t2 - t1));
            inc_all.push(ms(t2 - t0));
        }
        let used = cache.last_use();
        println!(
            "{:<32}   resolve {:.1}, lint + lockout {:.1}, compile {:.1} (its content hash alone {:.1}) ms;\n{:<32}   one policy changed, with the daemon's compile cache: compile {:.1}, with resolve and lint {:.1} ms ({} policy chains taken back, {} built)",
            "",
            median(&mut res),
            median(&mut lint),
            median(&mut comp),
            median(&mut hash),
            "",
            median(&mut inc),
            median(&mut inc_all),
            used.reused,
            used.built
        );
        sum.compile.push((
            case.label.to_string(),
            l,
            c,
            t,
            counts.0,
            counts.1,
            counts.2,
        ));
    }
    println!(
        "  load = read + parse + validate; compile = resolve + lint + lockout guard + compile (with the\n  \
         content hash); total CPU = this thread's CPU time for both"
    );
    Ok(())
}

// =====================================================================================================
// apply

/// Child mode: load, compile and apply `dir` here (the parent put us in a fresh namespace); prints
/// `compile_ms apply_ms peak_rss_before_apply_KiB kernel_ms batches` (kernel: the kernel's time for the
/// transactions, [`hostpolicyd::netlink::batch_time`]).
fn child_apply(args: &[String]) -> ExitCode {
    let Some(dir) = args.first() else {
        return ExitCode::from(64);
    };
    // Encode as `hostpolicyd apply` does (on two threads from 4,096 rules), so that "whole process"
    // is the command's work and not a slower variant of it.
    hostpolicyd::nft::encode_on_two_threads(true);
    let t0 = Instant::now();
    let built = match compile_dir(Path::new(dir)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let t1 = Instant::now();
    let compiled_hwm = vm_hwm(std::process::id() as libc::pid_t);
    let r = Netlink::new().and_then(|mut nl| nl.apply(&built.ruleset));
    let t2 = Instant::now();
    if let Err(e) = r {
        eprintln!("apply: {e}");
        return ExitCode::from(2);
    }
    let (batches, kernel) = hostpolicyd::netlink::batch_time();
    println!(
        "{:.3} {:.3} {compiled_hwm} {:.3} {batches}",
        ms(t1 - t0),
        ms(t2 - t1),
        ms(kernel)
    );
    ExitCode::SUCCESS
}

fn bench_apply(o: &Options, cases: &Cases, sum: &mut Summary) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    println!(
        "{:<40} {:>10} {:>9} {:>10} {:>9} {:>7} {:>10} {:>9} {:>8} {:>9} {:>8} {:>9} {:>9}",
        "configuration",
        "ours apply",
        "kernel",
        "ours whole",
        "userspace",
        "us/kern",
        "`apply`",
        "nft -f",
        "nft/ours",
        "nft/whole",
        "nft/cmd",
        "RSS ours/compiled",
        "RSS nft"
    );
    let only: Option<String> = std::env::var("HPBENCH_APPLY_CASES").ok();
    let baseline = {
        let ns = NetNs::new("true")?;
        spawn_measured(&ns, Path::new("/bin/true"), &[])?.rss_kib
    };
    for case in [
        &cases.p10,
        &cases.p1000,
        &cases.p10000,
        &cases.p10000sel,
        &cases.nets,
        &cases.one_file,
        &cases.files,
    ] {
        let name = case.dir.file_name().unwrap_or_default().to_string_lossy();
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|c| c == name))
        {
            continue;
        }
        let rs = compile_dir(&case.dir)?.ruleset;
        let text_file = cases.workdir.join(format!(
            "{}.nft",
            case.dir.file_name().unwrap().to_string_lossy()
        ));
        fs::write(&text_file, render(&rs)).map_err(|e| format!("{}: {e}", text_file.display()))?;
        let (mut apply, mut whole, mut nft, mut rss_o, mut rss_n) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut rss_c, mut kernel, mut user, mut command) = (vec![], vec![], vec![], vec![]);
        let mut runs = 0;
        while runs < o.runs {
            runs += 1;
            // Ours: a child that loads, compiles and applies (in a fresh namespace).
            let ns = NetNs::new("apply")?;
            let r = spawn_measured(&ns, &exe, &["child-apply".as_ref(), case.dir.as_os_str()])?;
            if r.code != 0 {
                return Err(format!(
                    "{}: our apply failed ({}): {}",
                    case.label, r.code, r.stderr
                ));
            }
            let apply_ms: f64 = r
                .stdout
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("child output: {:?}", r.stdout))?;
            apply.push(apply_ms);
            let field = |k: usize| -> f64 {
                r.stdout
                    .split_whitespace()
                    .nth(k)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            rss_c.push(field(2));
            kernel.push(field(3));
            user.push(r.wall_ms - field(3));
            whole.push(r.wall_ms);
            rss_o.push(r.rss_kib as f64);
            drop(ns);

            // The command itself: `hostpolicyd apply` with a fresh state directory.
            let ns = NetNs::new("cmd")?;
            let state = cases.workdir.join("apply-state");
            let _ = fs::remove_dir_all(&state);
            let (state_arg, runtime_arg) = (
                state.join("state").into_os_string(),
                state.join("run").into_os_string(),
            );
            let r = spawn_measured(
                &ns,
                &exe,
                &[
                    "daemon".as_ref(),
                    "--config-dir".as_ref(),
                    case.dir.as_os_str(),
                    "--state-dir".as_ref(),
                    &state_arg,
                    "--runtime-dir".as_ref(),
                    &runtime_arg,
                    "--node-name".as_ref(),
                    NODE.as_ref(),
                    "apply".as_ref(),
                ],
            )?;
            if r.code != 0 {
                return Err(format!(
                    "{}: hostpolicyd apply failed ({}): {}",
                    case.label, r.code, r.stderr
                ));
            }
            command.push(r.wall_ms);
            drop(ns);

            // nft -f of the rendered text, in another fresh namespace.
            let ns = NetNs::new("nft")?;
            let r = spawn_measured(
                &ns,
                Path::new("nft"),
                &["-f".as_ref(), text_file.as_os_str()],
            )?;
            if r.code != 0 {
                return Err(format!(
                    "{}: nft -f failed ({}): {}",
                    case.label, r.code, r.stderr
                ));
            }
            nft.push(r.wall_ms);
            rss_n.push(r.rss_kib as f64);
            if r.wall_ms + whole.last().copied().unwrap_or(0.0) > SLOW_MS && runs >= SLOW_RUNS {
                break;
            }
        }
        let row = ApplyRow {
            label: format!(
                "{}{}",
                case.label,
                if runs < o.runs {
                    format!(" ({runs} runs)")
                } else {
                    String::new()
                }
            ),
            ours_apply: median(&mut apply),
            ours_process: median(&mut whole),
            kernel: median(&mut kernel),
            userspace: median(&mut user),
            command: median(&mut command),
            nft: median(&mut nft),
            ours_rss: median(&mut rss_o) as u64,
            ours_rss_compiled: median(&mut rss_c) as u64,
            nft_rss: median(&mut rss_n) as u64,
        };
        println!(
            "{:<40} {:>8.1}ms {:>7.1}ms {:>8.1}ms {:>7.1}ms {:>6.0}% {:>8.1}ms {:>7.1}ms {:>7.2}x {:>8.2}x {:>7.2}x {:>8}/{:>3}MiB {:>6}MiB",
            row.label,
            row.ours_apply,
            row.kernel,
            row.ours_process,
            row.userspace,
            100.0 * row.userspace / row.kernel,
            row.command,
            row.nft,
            row.nft / row.ours_apply,
            row.nft / row.ours_process,
            row.nft / row.command,
            row.ours_rss / 1024,
            row.ours_rss_compiled / 1024,
            row.nft_rss / 1024
        );
        sum.apply.push(row);
    }
    println!(
        "  ours apply = the Dataplane::apply call (reads, encoding, transactions, answers), fresh namespace;\n  \
         kernel = the kernel's time for our transactions: each batch's sendmsg (in which the kernel checks\n  \
         and commits it) until its answer was read;\n  \
         ours whole = the child process from exec to exit: read YAML, validate, compile, apply;\n  \
         userspace = ours whole less kernel; us/kern = userspace / kernel;\n  \
         `apply` = the command `hostpolicyd apply` from exec to exit (interfaces, state directory too);\n  \
         nft -f = the process from exec to exit on the rendered text; RSS = peak resident set size\n  \
         (measured from a small spawner process; /bin/true shows {} KiB that way)",
        baseline
    );
    Ok(())
}

// =====================================================================================================
// incremental

fn bench_incremental(o: &Options, cases: &Cases, sum: &mut Summary) -> Result<()> {
    // Two configurations that differ in one net of the 100,000: net 5 swapped for another address.
    let a_dir = cases.workdir.join("inc-a");
    let b_dir = cases.workdir.join("inc-b");
    for (dir, swap) in [(&a_dir, None), (&b_dir, Some((5, 1)))] {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        fs::write(dir.join("10-heps.yaml"), heps()).map_err(|e| e.to_string())?;
        fs::write(dir.join("30-deny-list.yaml"), deny_list(100_000, swap))
            .map_err(|e| e.to_string())?;
        fs::write(dir.join("31-deny.yaml"), deny_policy()).map_err(|e| e.to_string())?;
    }
    let a = compile_dir(&a_dir)?.ruleset;
    let b = compile_dir(&b_dir)?.ruleset;
    let ns = NetNs::new("inc")?;
    let runs = o.runs;
    let (a_dir2, b_dir2) = (a_dir.clone(), b_dir.clone());
    let r = ns.run(move || -> Result<IncrementalRow> {
        let mut nl = Netlink::new().map_err(|e| e.to_string())?;
        nl.apply(&a).map_err(|e| e.to_string())?;
        let (mut upd, mut full, mut cu, mut cf) = (vec![], vec![], vec![], vec![]);
        let mut path = String::new();
        let mut cur = (&a, &b);
        for i in 0..2 * runs {
            // update: element changes only
            let t0 = Instant::now();
            nl.update(cur.0, cur.1).map_err(|e| e.to_string())?;
            upd.push(ms(t0.elapsed()));
            match nl.last_update() {
                Some(UpdatePath::Elements { sets, removed, added }) => {
                    path = format!("{sets} set, {removed} range out, {added} in");
                }
                other => return Err(format!("update took {other:?}")),
            }
            // full replace of the same table back and forth
            let t0 = Instant::now();
            nl.apply(cur.0).map_err(|e| e.to_string())?;
            nl.apply(cur.1).map_err(|e| e.to_string())?;
            full.push(ms(t0.elapsed()) / 2.0);
            // the same with the compile of the changed directory (what a reload does after its debounce)
            let (from, to_dir) = if i % 2 == 0 { (cur.1, &a_dir2) } else { (cur.1, &b_dir2) };
            let t0 = Instant::now();
            let next = compile_dir(to_dir)?.ruleset;
            nl.update(from, &next).map_err(|e| e.to_string())?;
            cu.push(ms(t0.elapsed()));
            let t0 = Instant::now();
            let back = compile_dir(if i % 2 == 0 { &b_dir2 } else { &a_dir2 })?.ruleset;
            nl.apply(&back).map_err(|e| e.to_string())?;
            cf.push(ms(t0.elapsed()));
            cur = (cur.1, cur.0);
        }
        if let Some(n) = std::env::var_os("HPBENCH_BREAKDOWN") {
            for _ in 0..n.to_string_lossy().parse::<usize>().unwrap_or(3) {
                let t0 = Instant::now();
                let d = hostpolicyd::nft::set_delta(cur.0, cur.1);
                let t1 = Instant::now();
                let _ = nl.table_comment(TABLE);
                let t2 = Instant::now();
                nl.update_elements(cur.0, cur.1).map_err(|e| e.to_string())?;
                let t3 = Instant::now();
                println!("  breakdown: set_delta {:.1} ms, table_comment {:.1} ms, element batch {:.1} ms ({:?})", ms(t1 - t0), ms(t2 - t1), ms(t3 - t2), d.map(|d| d.kernel_elements()));
                cur = (cur.1, cur.0);
            }
        }
        Ok(IncrementalRow {
            update: median(&mut upd),
            full: median(&mut full),
            compile_update: median(&mut cu),
            compile_full: median(&mut cf),
            path,
        })
    })??;
    println!(
        "one net changed in a 100,000-net GlobalNetworkSet ({}):",
        r.path
    );
    println!(
        "  dataplane only:     update (elements) {:>7.1} ms   full replace {:>7.1} ms   {:>5.1}x",
        r.update,
        r.full,
        r.full / r.update
    );
    println!(
        "  compile + dataplane: update           {:>7.1} ms   full replace {:>7.1} ms   {:>5.1}x",
        r.compile_update,
        r.compile_full,
        r.compile_full / r.compile_update
    );
    sum.incremental = Some(r);
    Ok(())
}

// =====================================================================================================
// reload

/// Daemon mode: `hostpolicyd ARGS...` through the library's own command line.
fn daemon(args: &[String]) -> ExitCode {
    use clap::Parser;
    let argv = std::iter::once("hostpolicyd".to_string()).chain(args.iter().cloned());
    match hostpolicyd::cli::Cli::try_parse_from(argv) {
        Ok(cli) => ExitCode::from(hostpolicyd::cli::run(cli)),
        Err(e) => {
            let _ = e.print();
            ExitCode::from(64)
        }
    }
}

/// The content hash in the kernel (None: no table), read in the current thread's namespace.
fn kernel_hash(nl: &mut Netlink) -> Option<String> {
    nl.table_comment(TABLE).ok().flatten()
}

fn wait_for_hash(nl: &mut Netlink, want: &str, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if kernel_hash(nl).as_deref() == Some(want) {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// When the kernel committed the transaction of process `pid` after which it holds `want`: the arrival
/// of that transaction's NFT_MSG_NEWGEN notification (sent at commit), confirmed by reading the hash.
/// Polling the hash instead measures the poll: each query opens and closes netlink sockets, and right
/// after a commit a close can wait for the kernel's deferred clean-up (several ms).
fn wait_for_commit(
    mon: &mut Monitor,
    nl: &mut Netlink,
    pid: u32,
    want: &str,
    timeout: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    // Once notifications were lost (a swap that refills a 20,000-rule chain sends more than the
    // socket holds), the commit's own NEWGEN may be among them: look at the kernel every 2 ms from
    // then on instead of waiting 200 ms for a notification that will not come (that wait made every
    // such reload read as 200 ms).
    let mut patience = Duration::from_millis(200);
    while Instant::now() < deadline {
        let committed = match mon.recv(Some(patience)) {
            Ok(Received::Notes(notes)) => notes
                .iter()
                .any(|n| matches!(n, Note::Gen { pid: p, .. } if *p == pid)),
            // Notifications lost or none for a while: look at the kernel itself.
            Ok(Received::Lost) => {
                patience = Duration::from_millis(2);
                true
            }
            Ok(Received::Nothing) => true,
            Err(_) => return wait_for_hash(nl, want, deadline - Instant::now()),
        };
        let at = Instant::now();
        if committed && kernel_hash(nl).as_deref() == Some(want) {
            return Some(at);
        }
    }
    None
}

/// One reload configuration: the directory's base files, the file that changes and its two versions
/// (None: the file is not there; it is removed).
struct ReloadCase {
    label: String,
    change: &'static str,
    base: Vec<(String, String)>,
    file: String,
    versions: [Option<String>; 2],
    /// The changes to version 1 and back to version 0 are different changes (a file added, a file
    /// removed): twice the runs, and a row for each (`change` is the one to version 1).
    both_ways: Option<&'static str>,
}

impl ReloadCase {
    fn new(label: &str, change: &'static str, base: Vec<(&str, String)>, file: &str) -> Self {
        ReloadCase {
            label: label.into(),
            change,
            base: base.into_iter().map(|(f, t)| (f.to_string(), t)).collect(),
            file: file.into(),
            versions: [None, None],
            both_ways: None,
        }
    }

    fn versions(mut self, a: String, b: String) -> Self {
        self.versions = [Some(a), Some(b)];
        self
    }
}

fn bench_reload(o: &Options, cases: &Cases, sum: &mut Summary) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // Issue 18: 10,000 files of one policy each; one of them changed, one added and removed.
    let files_base = |skip: usize| -> Vec<(String, String)> {
        let mut v = one_rule_files(10_000);
        v.remove(skip);
        v
    };
    let reload_cases = [
        ReloadCase::new(
            "10 policies",
            "a port of one policy",
            vec![("10-heps.yaml", heps())],
            "20-policies.yaml",
        )
        .versions(policies(10, 0), policies(10, 7)),
        ReloadCase::new(
            "10,000 policies",
            "a port of one policy",
            vec![("10-heps.yaml", heps())],
            "20-policies.yaml",
        )
        .versions(policies(10_000, 0), policies(10_000, 7)),
        ReloadCase::new(
            "100,000 nets",
            "one net of the GlobalNetworkSet",
            vec![("10-heps.yaml", heps()), ("31-deny.yaml", deny_policy())],
            "30-deny-list.yaml",
        )
        .versions(deny_list(100_000, None), deny_list(100_000, Some((5, 1)))),
        // Issue 12: the changed set is copied (never edited under the old rules) and the rule
        // switched in the next transaction.
        ReloadCase::new(
            "100,000 nets",
            "one net AND one policy rule (one file)",
            vec![("10-heps.yaml", heps())],
            "30-deny.yaml",
        )
        .versions(
            format!("{}---\n{}", deny_list(100_000, None), deny_policy()),
            format!(
                "{}---\n{}",
                deny_list(100_000, Some((5, 1))),
                deny_policy().replace(
                    "  - action: Deny\n",
                    "  - action: Deny\n    protocol: TCP\n"
                ),
            ),
        ),
        ReloadCase {
            label: "10,000 policy files".into(),
            change: "a port of one policy (one file)",
            base: files_base(5_000),
            file: one_rule_file(5_000),
            versions: [
                Some(one_rule_policy(5_000, 0)),
                Some(one_rule_policy(5_000, 7)),
            ],
            both_ways: None,
        },
        ReloadCase {
            label: "10,000 policy files".into(),
            change: "one policy file added",
            base: files_base(5_000),
            file: one_rule_file(5_000),
            versions: [None, Some(one_rule_policy(5_000, 0))],
            both_ways: Some("one policy file removed"),
        },
    ];
    // A rename into the directory after a quiet second: the daemon's short quiet period.
    let quiet = hostpolicyd::daemon::watch::SETTLE;
    println!(
        "{:<20} {:<52} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "configuration", "change", "median", "min", "max", "quiet", "RSS"
    );
    let skip: Vec<String> = std::env::var("HPBENCH_SKIP_RELOAD")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    for (k, rc) in reload_cases.iter().enumerate() {
        if skip.contains(&k.to_string()) {
            continue;
        }
        let dir = cases.workdir.join(format!("reload-{k}"));
        let (conf, state, runtime) = (dir.join("conf"), dir.join("state"), dir.join("run"));
        for d in [&conf, &state, &runtime] {
            fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let version = |v: usize| rc.versions[v].iter().map(|t| (rc.file.clone(), t.clone()));
        write_files(&conf, rc.base.iter().cloned().chain(version(0)))?;
        let hashes: Vec<String> = (0..2)
            .map(|v| {
                let d = dir.join(format!("v{v}"));
                write_files(&d, rc.base.iter().cloned().chain(version(v)))?;
                let rs = compile_dir(&d)?.ruleset;
                Ok(hostpolicyd::compile::hash_from_comment(&rs.comment)
                    .unwrap_or_default()
                    .to_string())
            })
            .collect::<Result<_>>()?;
        let comment = |h: &str| format!("hostpolicyd sha256:{h}");

        let ns = NetNs::new("reload")?;
        let log = dir.join("daemon.log");
        let log_file = File::create(&log).map_err(|e| e.to_string())?;
        let (mut cmd, _fd) = ns.command(&exe)?;
        cmd.arg("daemon")
            .arg("--config-dir")
            .arg(&conf)
            .arg("--state-dir")
            .arg(&state)
            .arg("--runtime-dir")
            .arg(&runtime)
            .arg("--node-name")
            .arg(NODE)
            .arg("run")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file);
        let child = cmd.spawn().map_err(|e| format!("spawn the daemon: {e}"))?;
        let pid = child.id() as libc::pid_t;
        let runs = if rc.both_ways.is_some() {
            2 * o.runs
        } else {
            o.runs
        };
        let conf2 = conf.clone();
        let file = rc.file.clone();
        let versions = rc.versions.clone();
        let result = ns.run(move || -> Result<Vec<(usize, f64)>> {
            let mut nl = Netlink::new().map_err(|e| e.to_string())?;
            wait_for_hash(&mut nl, &comment(&hashes[0]), Duration::from_secs(900))
                .ok_or("the daemon did not apply the first configuration in 900 s")?;
            std::thread::sleep(Duration::from_millis(1500));
            let mut mon = Monitor::subscribe().map_err(|e| format!("nftables monitor: {e}"))?;
            let mut lat = Vec::new();
            for i in 0..runs {
                let v = (i + 1) % 2;
                let tmp = conf2.join(".bench-change.tmp");
                if let Some(text) = &versions[v] {
                    fs::write(&tmp, text).map_err(|e| e.to_string())?;
                }
                // Whatever the daemon did before this change is not its commit.
                while let Ok(Received::Notes(_) | Received::Lost) = mon.recv(Some(Duration::ZERO)) {
                }
                let t0 = Instant::now();
                match &versions[v] {
                    Some(_) => fs::rename(&tmp, conf2.join(&file)),
                    None => fs::remove_file(conf2.join(&file)),
                }
                .map_err(|e| e.to_string())?;
                let t1 = wait_for_commit(
                    &mut mon,
                    &mut nl,
                    pid as u32,
                    &comment(&hashes[v]),
                    Duration::from_secs(900),
                )
                .ok_or("the daemon did not apply the change in 900 s")?;
                lat.push((v, ms(t1 - t0)));
                if lat.last().unwrap().1 > SLOW_MS && lat.len() >= SLOW_RUNS {
                    break;
                }
                // Let it finish (state file, drift check) before the next change.
                std::thread::sleep(Duration::from_millis(1500));
            }
            Ok(lat)
        });
        let rss = vm_hwm(pid);
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = wait_child(&child)?;
        let all = match result {
            Ok(Ok(l)) => l,
            Ok(Err(e)) | Err(e) => {
                let tail = fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(15).collect();
                return Err(format!(
                    "reload {}: {e}\ndaemon log (last lines, newest first):\n{}",
                    rc.label,
                    tail.join("\n")
                ));
            }
        };
        let rows: Vec<(&str, Vec<f64>)> = match rc.both_ways {
            None => vec![(rc.change, all.iter().map(|l| l.1).collect())],
            Some(back) => vec![
                (
                    rc.change,
                    all.iter().filter(|l| l.0 == 1).map(|l| l.1).collect(),
                ),
                (back, all.iter().filter(|l| l.0 == 0).map(|l| l.1).collect()),
            ],
        };
        for (change, mut lat) in rows {
            let (min, max) = (
                lat.iter().cloned().fold(f64::INFINITY, f64::min),
                lat.iter().cloned().fold(0.0, f64::max),
            );
            let med = median(&mut lat);
            println!(
                "{:<20} {:<52} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>6}MiB",
                rc.label,
                change,
                med,
                min,
                max,
                ms(quiet),
                rss / 1024
            );
            let n = lat.len();
            let want = if rc.both_ways.is_some() {
                runs / 2
            } else {
                runs
            };
            sum.reload.push(ReloadRow {
                label: if n < want {
                    format!("{} ({n} runs)", rc.label)
                } else {
                    rc.label.clone()
                },
                change: change.to_string(),
                total: med,
                min,
                max,
            });
            sum.daemon_rss.push((rc.label.clone(), rss));
        }
    }
    println!(
        "  from the rename into the watched directory to the new content hash in the kernel;\n  \
         the daemon reloads {} ms after a rename into the directory (`quiet`), and reads and compiles\n  \
         the directory during that time already;\n  \
         RSS = the daemon's peak resident set size (VmHWM) over the whole run",
        quiet.as_millis()
    );
    Ok(())
}

// =====================================================================================================
// packet path

struct Topology {
    client: NetNs,
    node: NetNs,
    server: NetNs,
}

impl Topology {
    fn new() -> Result<Topology> {
        let t = Topology {
            client: NetNs::new("client")?,
            node: NetNs::new("node")?,
            server: NetNs::new("server")?,
        };
        veth(&t.client, "c0", &t.node, "eth-c")?;
        veth(&t.server, "s0", &t.node, "eth-s")?;
        t.client
            .exec(&["ip", "addr", "add", "192.0.2.2/24", "dev", "c0"])?;
        t.client
            .exec(&["ip", "route", "add", "default", "via", "192.0.2.1"])?;
        t.node
            .exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "eth-c"])?;
        t.node
            .exec(&["ip", "addr", "add", "198.51.100.1/24", "dev", "eth-s"])?;
        t.node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        t.server
            .exec(&["ip", "addr", "add", "198.51.100.2/24", "dev", "s0"])?;
        t.server
            .exec(&["ip", "route", "add", "default", "via", "198.51.100.1"])?;
        Ok(t)
    }
}

fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> Result<()> {
    let n = NS_COUNTER.fetch_add(1, Ordering::SeqCst);
    let (ta, tb) = (format!("hpbv{n}a"), format!("hpbv{n}b"));
    a.exec(&[
        "ip", "link", "add", &ta, "type", "veth", "peer", "name", &tb, "netns", &b.name,
    ])?;
    a.exec(&["ip", "link", "set", &ta, "name", a_if])?;
    b.exec(&["ip", "link", "set", &tb, "name", b_if])?;
    a.exec(&["ip", "link", "set", a_if, "up"])?;
    b.exec(&["ip", "link", "set", b_if, "up"])?;
    Ok(())
}

/// Accepts connections until `stop`, writing one byte to each.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) {
    let fd = listener.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
            continue;
        }
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"x");
        }
    }
}

/// Connections completed (connect, one byte read, RST close) in `secs` seconds, and failures.
fn connect_loop(to: SocketAddr, secs: f64) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (mut ok, mut failed) = (0, 0);
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut b = [0u8; 1];
                let good = matches!(s.read(&mut b), Ok(1));
                // SAFETY: valid socket and linger struct of the right size.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &linger as *const libc::linger as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
                if good {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    (ok, failed)
}

/// Starts a server thread in `ns` (198.51.100.2:SERVER_PORT) that runs until `stop`.
fn start_server(ns: &NetNs, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
    let file = File::open(ns.path()).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = enter(&file).and_then(|()| {
            TcpListener::bind(("198.51.100.2", SERVER_PORT)).map_err(|e| format!("bind: {e}"))
        });
        match r {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                serve(l, stop);
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    Ok(h)
}

fn bench_packet(o: &Options, cases: &Cases, sum: &mut Summary) -> Result<()> {
    let off = hostpolicyd::settings::Flows {
        enabled: false,
        ..Default::default()
    };
    let small_off = compile_dir_with(&cases.p10.dir, &off)?.ruleset;
    let big_off = compile_dir_with(&cases.big.dir, &off)?.ruleset;
    let small = compile_dir(&cases.p10.dir)?.ruleset;
    let big = compile_dir(&cases.big.dir)?.ruleset;
    // What conntrack alone costs: a table whose only rule makes the kernel track connections (as every
    // stateful firewall does), loaded with nft.
    let ct_only = "table inet ctonly {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n  ct state established,related accept\n }\n}\n";
    let variants: [(&str, Option<&Ruleset>); 6] = [
        ("no table", None),
        ("conntrack only (one `ct state` rule, nft)", None),
        ("10 policies, flow records off", Some(&small_off)),
        ("10 policies, flow records on", Some(&small)),
        (
            "10,000 policies + deny list, flow records off",
            Some(&big_off),
        ),
        ("10,000 policies + deny list, flow records on", Some(&big)),
    ];
    // The flows threads (one per topology with flow records on), as the daemon runs them.
    let mut listeners = Vec::new();
    // One client/node/server topology per variant, its table applied once; the runs are interleaved.
    let stop = Arc::new(AtomicBool::new(false));
    let mut topos = Vec::new();
    let mut servers = Vec::new();
    for (k, (label, rs)) in variants.iter().enumerate() {
        let t = Topology::new()?;
        if label.starts_with("conntrack only") {
            let f = cases.workdir.join("ct-only.nft");
            fs::write(&f, ct_only).map_err(|e| e.to_string())?;
            t.node.exec(&["nft", "-f", &f.to_string_lossy()])?;
        }
        if let Some(rs) = rs {
            let t0 = Instant::now();
            t.node
                .run(|| Netlink::new().and_then(|mut nl| nl.apply(rs)))?
                .map_err(|e| e.to_string())?;
            println!(
                "  ({label}: table applied in {:.1} s)",
                t0.elapsed().as_secs_f64()
            );
            if label.ends_with("flow records on") {
                let flows = hostpolicyd::daemon::flows::Flows::new(&Default::default());
                flows.publish(rs, 1, std::time::SystemTime::now());
                t.node
                    .run(|| flows.spawn())?
                    .map_err(|e| format!("flows thread: {e}"))?;
                listeners.push((k, flows));
            }
        }
        servers.push(start_server(&t.server, stop.clone())?);
        topos.push(t);
    }
    let to: SocketAddr = ([198, 51, 100, 2], SERVER_PORT).into();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    // CPU of this process (client, server and flows threads, and the kernel's forwarding path, which
    // runs in the sending thread's softirq) per connection, µs: what a run costs whatever else the
    // machine is doing, where the rate depends on the CPU time other processes leave.
    let mut cpu_per_conn: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    // Of it, the flows threads' (the daemon's reader), µs per connection.
    let mut reader_per_conn: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut failures = vec![0usize; variants.len()];
    let result = (|| -> Result<()> {
        for run in 0..=o.runs {
            // The variants in a rotating order, so that none is always measured first or last.
            for j in 0..topos.len() {
                let k = (j + run) % topos.len();
                let t = &topos[k];
                // Run 0 is a short warm-up (neighbours, routes) and checks that connections go through.
                let secs = if run == 0 { 0.3 } else { o.packet_secs };
                let (cpu0, reader0) = (process_cpu(std::process::id()), threads_cpu("flows"));
                let (ok, failed) = t.client.run(|| connect_loop(to, secs))?;
                let cpu = process_cpu(std::process::id()) - cpu0;
                let reader = threads_cpu("flows") - reader0;
                if run == 0 {
                    if ok == 0 {
                        return Err(format!("{}: no connection went through", variants[k].0));
                    }
                    continue;
                }
                rates[k].push(ok as f64 / secs);
                cpu_per_conn[k].push(cpu * 1e6 / ok.max(1) as f64);
                reader_per_conn[k].push(reader * 1e6 / ok.max(1) as f64);
                failures[k] += failed;
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        let _ = s.join();
    }
    result?;
    let rates_by_run = rates.clone();
    let cpu_by_run = cpu_per_conn.clone();

    for (k, flows) in &listeners {
        let c = flows.counts();
        println!(
            "  ({}: the flows thread read {} messages, {} records, {} dropped; state {})",
            variants[*k].0,
            c.messages,
            c.records,
            c.dropped(),
            flows.state()
        );
    }
    println!(
        "{:<50} {:>12} {:>10} {:>9}",
        "node namespace holds", "conn/s", "vs none", "failed"
    );
    let cpu_base = median(&mut cpu_per_conn[0].clone());
    let base = median(&mut rates[0].clone());
    for (k, (label, _)) in variants.iter().enumerate() {
        let lo = rates[k].iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = rates[k].iter().cloned().fold(0.0, f64::max);
        let r = median(&mut rates[k]);
        let c = median(&mut cpu_per_conn[k]);
        let reader = median(&mut reader_per_conn[k]);
        println!(
            "{label:<50} {r:>12.0} {:>9.1}% {:>9}   (runs {lo:.0}-{hi:.0}); CPU {c:.1} µs/conn, of which the flows reader {reader:.1} ({:.0}% of no table's rate at equal CPU)",
            100.0 * r / base,
            failures[k],
            100.0 * cpu_base / c
        );
        sum.packet.push((label.to_string(), r, r / base));
        sum.packet_cpu.push((label.to_string(), c, cpu_base / c));
    }
    // Flow records on against off, paired by round (the runs of one round are close in time).
    for (off_k, on_k) in [(2, 3), (4, 5)] {
        let mut ratios: Vec<f64> = rates_by_run[on_k]
            .iter()
            .zip(&rates_by_run[off_k])
            .map(|(on, off)| on / off)
            .collect();
        let lo = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().cloned().fold(0.0, f64::max);
        let m = median(&mut ratios);
        // The same by CPU per connection: the rate each variant would reach on a CPU of its own.
        let mut cpu_ratios: Vec<f64> = cpu_by_run[off_k]
            .iter()
            .zip(&cpu_by_run[on_k])
            .map(|(off, on)| off / on)
            .collect();
        let clo = cpu_ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        let chi = cpu_ratios.iter().cloned().fold(0.0, f64::max);
        let cm = median(&mut cpu_ratios);
        println!(
            "flow records on / off by CPU per connection, {}: {:.1}% (median of the rounds' ratios; {:.0}-{:.0}%)",
            if off_k == 2 { "10 policies" } else { "10,000 policies" },
            100.0 * cm,
            100.0 * clo,
            100.0 * chi
        );
        sum.packet_cpu.push((
            format!(
                "flow records on / off ({}), per round",
                if off_k == 2 {
                    "10 policies"
                } else {
                    "10,000 policies"
                }
            ),
            f64::NAN,
            cm,
        ));
        println!(
            "flow records on / off, {}: {:.1}% (median of the rounds' ratios; {:.0}-{:.0}%)",
            if off_k == 2 {
                "10 policies"
            } else {
                "10,000 policies"
            },
            100.0 * m,
            100.0 * lo,
            100.0 * hi
        );
        sum.packet.push((
            format!(
                "flow records on / off ({}), per round",
                if off_k == 2 {
                    "10 policies"
                } else {
                    "10,000 policies"
                }
            ),
            f64::NAN,
            m,
        ));
    }
    println!(
        "  {} s per run, runs interleaved across the variants (one topology each: client, forwarding\n  \
         node, server namespaces; one TCP connection at a time from a thread of this process)",
        o.packet_secs
    );
    Ok(())
}

// =====================================================================================================
// flows: a denied flood against the daemon, the table at 100,000 flows

/// User + system CPU seconds of process `pid` (`/proc/PID/stat`).
fn process_cpu(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// User + system CPU seconds of this process's threads named `name` (`/proc/self/task/*/stat`).
fn threads_cpu(name: &str) -> f64 {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| {
            stat.split_once(" (")
                .is_some_and(|(_, r)| r.starts_with(&format!("{name})")))
        })
        .map(|stat| {
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (ticks(11) + ticks(12)) / hz
        })
        .sum()
}

/// Resident memory of this process, KiB.
fn self_rss() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn bench_flows(o: &Options, cases: &Cases, sum: &mut Summary) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let secs = o.packet_secs.max(2.0);
    for (label, rate) in [
        ("default rate limit (20/s per deny rule)", None),
        (
            "every packet reported (--flows-log-rate 1000000)",
            Some("1000000"),
        ),
    ] {
        let t = Topology::new()?;
        let dir = cases.workdir.join(format!("flood-{}", sum.flood.len()));
        for d in ["config", "state", "run"] {
            fs::create_dir_all(dir.join(d)).map_err(|e| e.to_string())?;
        }
        fs::write(dir.join("config/10-heps.yaml"), heps()).map_err(|e| e.to_string())?;
        fs::write(
            dir.join("config/20-deny.yaml"),
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny-udp}\nspec:\n  selector: role == 'node'\n  ingress:\n  - action: Deny\n    protocol: UDP\n",
        )
        .map_err(|e| e.to_string())?;
        let p = |d: &str| dir.join(d).to_string_lossy().into_owned();
        let mut args = vec![
            "daemon".to_string(),
            "--config-dir".into(),
            p("config"),
            "--node-name".into(),
            NODE.into(),
            "--state-dir".into(),
            p("state"),
            "--runtime-dir".into(),
            p("run"),
            "--strict-modes".into(),
            "no".into(),
        ];
        if let Some(r) = rate {
            args.extend(["--flows-log-rate".into(), r.into()]);
        }
        args.push("run".into());
        let (mut cmd, _ns) = t.node.command(&exe)?;
        let mut child = cmd
            .args(&args)
            .env("HOSTPOLICYD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn the daemon: {e}"))?;
        let pid = child.id();
        let run_dir = dir.join("run");
        let status = || hostpolicyd::daemon::control::status(&run_dir).ok();
        let deadline = Instant::now() + Duration::from_secs(30);
        let active = || {
            status()
                .and_then(|s| s.daemon)
                .and_then(|d| d.flows)
                .is_some_and(|f| f.state == "active")
        };
        while !active() {
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("{label}: the daemon did not start"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The flood: as many UDP datagrams as four threads can send, each to another port.
        let sent = AtomicUsize::new(0);
        let cpu0 = process_cpu(pid);
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            for i in 0..4u16 {
                let (sent, client) = (&sent, &t.client);
                scope.spawn(move || {
                    let _ = client.run(|| {
                        let sock = std::net::UdpSocket::bind(("192.0.2.2", 20_000 + i)).ok()?;
                        let end = Instant::now() + Duration::from_secs_f64(secs);
                        let mut n = 0usize;
                        let mut port = 1u16;
                        while Instant::now() < end {
                            for _ in 0..256 {
                                if sock.send_to(b"flood", ("192.0.2.1", port)).is_ok() {
                                    n += 1;
                                }
                                port = port.wrapping_add(1).max(1);
                            }
                        }
                        sent.fetch_add(n, Ordering::Relaxed);
                        Some(())
                    });
                });
            }
        });
        let wall = t0.elapsed().as_secs_f64();
        // What the daemon still had queued is part of the flood's cost.
        std::thread::sleep(Duration::from_millis(500));
        let cpu = process_cpu(pid) - cpu0;
        let flows = status().and_then(|s| s.daemon).and_then(|d| d.flows);
        let _ = child.kill();
        let _ = child.wait();
        let (messages, dropped) = flows.map_or((0, 0), |f| (f.counts.messages, f.dropped));
        let rate_sent = sent.load(Ordering::Relaxed) as f64 / wall;
        let pct = 100.0 * cpu / (wall + 0.5);
        println!(
            "{label}: {rate_sent:.0} packets/s for {wall:.1} s; daemon CPU {pct:.1}% of one core; {messages} messages read, {dropped} records dropped"
        );
        sum.flood
            .push((label.to_string(), rate_sent, pct, messages, dropped));
    }

    // The flows table at 100,000 distinct flows, in this process.
    use hostpolicyd::daemon::flows::gen::{FlowOrigin, Generation, Generations};
    use hostpolicyd::daemon::flows::table::{Logged, Table};
    let n = 100_000usize;
    let mut g = Generation {
        number: 1,
        since: Some(std::time::UNIX_EPOCH),
        ..Generation::default()
    };
    g.ids.insert(
        1,
        Arc::new(FlowOrigin {
            kind: hostpolicyd::ruleset::Kind::Policy,
            tier: Some("default".into()),
            policy: Some("deny-udp".into()),
            staged: false,
            shadow: false,
            direction: Some(hostpolicyd::ruleset::Dir::Ingress),
            rule: Some(0),
            allows: false,
            stage: None,
            host_endpoint: None,
            file: Some("/etc/hostpolicy.d/20-deny.yaml".into()),
            line: Some(7),
        }),
    );
    let mut gens = Generations::default();
    gens.push(g);
    let eth: Arc<str> = Arc::from("eth0");
    let rss0 = self_rss();
    let mut table = Table::new(n);
    let t0 = Instant::now();
    for i in 0..n {
        let src = Ipv4Addr::from(0xc000_0200 + (i as u32 % 250));
        let p = Logged {
            id: 1,
            hook: hostpolicyd::netlink::NF_INET_LOCAL_IN,
            time: std::time::SystemTime::now(),
            indev: Some(eth.clone()),
            outdev: None,
            tuple: hostpolicyd::netlink::nflog::Tuple {
                proto: 17,
                src: src.into(),
                dst: Ipv4Addr::new(192, 0, 2, 1).into(),
                sport: 40_000,
                dport: (i / 250) as u16 + 1,
            },
            len: 33,
            seq: Some(i as u32),
        };
        table.logged(&gens, &p);
    }
    let per = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
    let rss = self_rss().saturating_sub(rss0);
    let est = table.approx_bytes() as u64 / 1024;
    assert_eq!(table.counts().records as usize, n);
    println!(
        "flows table: {n} distinct flows: resident memory +{:.1} MiB (the table's estimate {:.1} MiB), {per:.2} µs per record",
        rss as f64 / 1024.0,
        est as f64 / 1024.0
    );
    sum.table = Some((n, rss, est, per));
    drop(table);

    // What the reader does per allowed connection: its first packet's report, then its end.
    let mut g = Generation {
        number: 1,
        since: Some(std::time::UNIX_EPOCH),
        ..Generation::default()
    };
    g.ids.insert(
        2,
        Arc::new(FlowOrigin {
            kind: hostpolicyd::ruleset::Kind::NoPolicy,
            tier: None,
            policy: None,
            staged: false,
            shadow: false,
            direction: Some(hostpolicyd::ruleset::Dir::Ingress),
            rule: None,
            allows: true,
            stage: Some(hostpolicyd::ruleset::Stage::Forward),
            host_endpoint: Some("node1-c".into()),
            file: None,
            line: None,
        }),
    );
    let mut gens = Generations::default();
    gens.push(g);
    let mut table = Table::new(n);
    let m = 200_000u32;
    let t0 = Instant::now();
    for i in 0..m {
        let tuple = hostpolicyd::netlink::nflog::Tuple {
            proto: 6,
            src: Ipv4Addr::new(192, 0, 2, 2).into(),
            dst: Ipv4Addr::new(198, 51, 100, 2).into(),
            sport: 10_000 + (i % 50_000) as u16,
            dport: SERVER_PORT,
        };
        table.logged(
            &gens,
            &Logged {
                id: 2,
                hook: hostpolicyd::netlink::NF_INET_FORWARD,
                time: std::time::SystemTime::now(),
                indev: Some(eth.clone()),
                outdev: None,
                tuple,
                len: 60,
                seq: Some(i),
            },
        );
        table.connection(
            &hostpolicyd::netlink::conntrack::Connection {
                event: hostpolicyd::netlink::conntrack::Event::Destroy,
                id: Some(i),
                orig: tuple,
                reply: None,
                mark: 0,
                packets: 6,
                bytes: 400,
            },
            std::time::SystemTime::now(),
        );
    }
    let per_conn = t0.elapsed().as_secs_f64() * 1e6 / f64::from(m);
    println!("reader, per allowed connection (its report and its end): {per_conn:.2} µs");
    sum.reader_per_connection = Some(per_conn);
    Ok(())
}

// =====================================================================================================
// Markdown summary

impl Summary {
    fn markdown(&self, o: &Options) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Machine: {}. Load average at the end: {}. Medians of {} runs.\n",
            machine(),
            loadavg(),
            o.runs
        );
        if !self.compile.is_empty() {
            s += "| compile (load + validate + resolve + compile) | load | resolve + compile | total | rules | sets | set elements |\n|---|---|---|---|---|---|---|\n";
            for (label, l, c, t, r, n, e) in &self.compile {
                let _ = writeln!(
                    s,
                    "| {label} | {l:.0} ms | {c:.0} ms | **{t:.0} ms** | {r} | {n} | {e} |"
                );
            }
            s.push('\n');
        }
        if !self.apply.is_empty() {
            s += "| apply (fresh namespace) | ours: apply call | kernel: our transactions | ours: whole process (YAML → kernel) | userspace (whole − kernel) | userspace / kernel | `hostpolicyd apply` | `nft -f` (text → kernel) | nft / ours apply | nft / ours whole | nft / `hostpolicyd apply` | peak RSS ours (before the apply call) / nft |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
            for r in &self.apply {
                let _ = writeln!(
                    s,
                    "| {} | {:.1} ms | {:.0} ms | {:.0} ms | {:.0} ms | **{:.0}%** | {:.0} ms | {:.0} ms | {:.1}x | {:.2}x | **{:.2}x** | {} ({}) / {} MiB |",
                    r.label,
                    r.ours_apply,
                    r.kernel,
                    r.ours_process,
                    r.userspace,
                    100.0 * r.userspace / r.kernel,
                    r.command,
                    r.nft,
                    r.nft / r.ours_apply,
                    r.nft / r.ours_process,
                    r.nft / r.command,
                    r.ours_rss / 1024,
                    r.ours_rss_compiled / 1024,
                    r.nft_rss / 1024
                );
            }
            s.push('\n');
        }
        if let Some(r) = &self.incremental {
            let _ = writeln!(
                s,
                "| one net changed in a 100,000-net GlobalNetworkSet | incremental `update` | full replace | speed-up |\n|---|---|---|---|\n| dataplane ({}) | {:.1} ms | {:.0} ms | **{:.0}x** |\n| compile + dataplane | {:.0} ms | {:.0} ms | {:.1}x |\n",
                r.path,
                r.update,
                r.full,
                r.full / r.update,
                r.compile_update,
                r.compile_full,
                r.compile_full / r.compile_update
            );
        }
        if !self.reload.is_empty() {
            s += "| reload: rename into the watched directory → new rule in the kernel | change | median (min–max) | quiet period (overlapped by the reading and compiling) | daemon peak RSS |\n|---|---|---|---|---|\n";
            for (r, (_, rss)) in self.reload.iter().zip(&self.daemon_rss) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} ms ({:.0}–{:.0}) | {} ms | {} MiB |",
                    r.label,
                    r.change,
                    r.total,
                    r.min,
                    r.max,
                    hostpolicyd::daemon::watch::SETTLE.as_millis(),
                    rss / 1024
                );
            }
            s.push('\n');
        }
        if !self.plan.is_empty() {
            s += "| `plan --against` (in this process) | load both (two threads) | plan (resolve, compile, align, evaluate) | total | CPU, all threads | regions (JSON) |\n|---|---|---|---|---|---|\n";
            for r in &self.plan {
                let _ = writeln!(
                    s,
                    "| {} | {:.0} ms | {:.0} ms | **{:.0} ms** | {:.0} ms | {} |",
                    r.label, r.load, r.plan, r.total, r.cpu, r.regions
                );
            }
            s.push('\n');
        }
        if !self.packet.is_empty() {
            let _ = writeln!(s, "| packet path: TCP connections/s through a forwarding node ({} s runs) | conn/s | vs no table |\n|---|---|---|", o.packet_secs);
            for (label, r, ratio) in &self.packet {
                if r.is_nan() {
                    let _ = writeln!(s, "| {label} | | **{:.0}%** |", ratio * 100.0);
                } else {
                    let _ = writeln!(s, "| {label} | {r:.0} | **{:.0}%** |", ratio * 100.0);
                }
            }
            s.push('\n');
        }
        if !self.packet_cpu.is_empty() {
            s += "| packet path by CPU: this process's CPU per connection (client, server, flows reader, the kernel's forwarding in the sender's softirq) | µs/conn | rate at equal CPU vs no table |\n|---|---|---|\n";
            for (label, c, ratio) in &self.packet_cpu {
                if c.is_nan() {
                    let _ = writeln!(s, "| {label} | | **{:.0}%** |", ratio * 100.0);
                } else {
                    let _ = writeln!(s, "| {label} | {c:.1} | **{:.0}%** |", ratio * 100.0);
                }
            }
            s.push('\n');
        }
        if !self.flood.is_empty() {
            s += "| denied-packet flood against `hostpolicyd run` | packets sent/s | daemon CPU (one core) | messages the daemon read | flow records dropped |\n|---|---|---|---|---|\n";
            for (label, rate, cpu, messages, dropped) in &self.flood {
                let _ = writeln!(
                    s,
                    "| {label} | {rate:.0} | **{cpu:.1}%** | {messages} | {dropped} |"
                );
            }
            s.push('\n');
        }
        if let Some(us) = self.reader_per_connection {
            let _ = writeln!(
                s,
                "Flows reader: {us:.2} µs of CPU per allowed connection (its first packet's report and its end).\n"
            );
        }
        if let Some((n, rss, est, us)) = self.table {
            let _ = writeln!(
                s,
                "| flows table | records | resident memory | table's estimate | per record |\n|---|---|---|---|---|\n| {n} distinct denied flows | {n} | **{:.1} MiB** | {:.1} MiB | {us:.2} µs |\n",
                rss as f64 / 1024.0,
                est as f64 / 1024.0
            );
        }
        s
    }
}
