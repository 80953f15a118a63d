//! The shipped Ansible role (`packaging/ansible`), run for real with `ansible-playbook` against a
//! throwaway systemd machine (issue 15, item 5):
//!
//! 1. `--check --diff` on a fresh node (no package yet): succeeds, reports the install, validates the
//!    templates and plans them against an empty directory (the verdict changes are the diff); nothing
//!    on the node changes.
//! 2. The real run: installs, writes the files, starts the daemon.
//! 3. `--check --diff` on the converged node: nothing changes, and the plan says so.
//! 4. `--check --diff` with one more node port: the plan task is "changed" and its diff is the new
//!    verdicts; nothing is written.
//! 5. `--check` with a template the real run would refuse (a port out of range, which `validate:`
//!    refuses): the check run fails.
//!
//! The machine is `tests/packaging/sandbox.sh systemd` (systemd as PID 1 in its own namespaces; /usr,
//! /etc and /var are overlays, so the host is never changed); Ansible reaches it through a connection
//! plugin of this test (`tests/ansible/hp_nsenter.py`: nsenter instead of SSH). ansible-core comes from
//! PyPI into a virtual environment under the target directory, kept between runs. The package is made
//! from this build's binary and the packaging files with dpkg-deb (cargo-deb's own test is in
//! `tests/packaging.rs`).

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::daemon::wait_for;
use common::netns::require_root;
use common::topology::output_text;

const BIN: &str = env!("CARGO_BIN_EXE_hostpolicyd");

fn src(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}",
        out.status,
        output_text(&out)
    );
    out
}

/// ansible-core in a virtual environment under the target directory (made once, then reused).
/// Without python3 and its venv module the test cannot run: it fails in CI, and is skipped elsewhere.
fn ansible_venv() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ansible-venv");
    let playbook = venv.join("bin/ansible-playbook");
    if playbook.exists()
        && Command::new(&playbook)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Some(venv);
    }
    let python = "/usr/bin/python3";
    let usable = Command::new(python)
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        let why = format!("{python} with its venv module is needed (Debian: apt-get install python3 python3-venv)");
        if std::env::var_os("CI").is_some() {
            panic!("the Ansible test cannot run: {why}");
        }
        eprintln!("ansible test: skipped, {why}");
        return None;
    }
    let _ = fs::remove_dir_all(&venv);
    let t = Instant::now();
    ok(Command::new(python).args(["-m", "venv"]).arg(&venv));
    ok(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "ansible-core>=2.16,<2.20",
    ]));
    eprintln!(
        "made {} with ansible-core in {:.0} s",
        venv.display(),
        t.elapsed().as_secs_f64()
    );
    Some(venv)
}

/// A package like the release one (`cargo deb`): this build's binary, the unit, the defaults file and
/// the maintainer scripts.
fn build_deb(work: &Path) -> PathBuf {
    let root = work.join("deb-root");
    let _ = fs::remove_dir_all(&root);
    for d in ["DEBIAN", "usr/sbin", "lib/systemd/system", "etc/default"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(BIN, root.join("usr/sbin/hostpolicyd")).unwrap();
    fs::copy(
        src("packaging/hostpolicyd.service"),
        root.join("lib/systemd/system/hostpolicyd.service"),
    )
    .unwrap();
    fs::copy(
        src("packaging/default/hostpolicyd"),
        root.join("etc/default/hostpolicyd"),
    )
    .unwrap();
    for s in ["postinst", "prerm", "postrm"] {
        let to = root.join("DEBIAN").join(s);
        fs::copy(src("packaging/debian").join(s), &to).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let arch =
        String::from_utf8(ok(Command::new("dpkg").arg("--print-architecture")).stdout).unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: hostpolicyd\nVersion: {}-1\nArchitecture: {}\nMaintainer: hostpolicyd maintainers <hostpolicyd@example.org>\nSection: net\nPriority: optional\nDescription: host firewall daemon (test build)\n",
            env!("CARGO_PKG_VERSION"),
            arch.trim()
        ),
    )
    .unwrap();
    fs::write(root.join("DEBIAN/conffiles"), "/etc/default/hostpolicyd\n").unwrap();
    let deb = work.join("hostpolicyd_test.deb");
    ok(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "-z1", "--build"])
        .arg(&root)
        .arg(&deb));
    deb
}

/// `tests/packaging/sandbox.sh systemd WORK`, kept running; dropping it kills it and removes WORK.
struct Machine {
    child: Child,
    work: PathBuf,
    /// systemd (PID 1 of the sandbox).
    pid: u32,
}

impl Machine {
    fn start() -> Machine {
        let work =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ansible-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).unwrap();
        let log = fs::File::create(work.join("sandbox.log")).unwrap();
        let mut child = Command::new("sh")
            .arg(src("tests/packaging/sandbox.sh"))
            .arg("systemd")
            .arg(&work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn tests/packaging/sandbox.sh");
        // `ready` once the mounts are in place; end of file when the script failed.
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let mut m = Machine {
            pid: 0,
            child,
            work,
        };
        if line.trim() != "ready" {
            panic!("the sandbox did not come up:\n{}", m.log("sandbox.log"));
        }
        let children = format!("/proc/{0}/task/{0}/children", m.child.id());
        m.pid = wait_for(Duration::from_secs(10), || {
            fs::read_to_string(&children)
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no systemd process:\n{}", m.log("sandbox.log")));
        let booted = wait_for(Duration::from_secs(60), || {
            let out = m.exec(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            matches!(state.as_str(), "running" | "degraded").then_some(())
        });
        if booted.is_none() {
            panic!(
                "systemd did not boot:\n{}\n{}",
                m.log("sandbox.log"),
                m.log("systemd.log")
            );
        }
        m
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.work.join(name)).unwrap_or_default()
    }

    fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-p", "-n", "-u", "--"])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter {args:?}: {e}"))
    }

    fn exists(&self, path: &str) -> bool {
        self.exec(&["test", "-e", path]).status.success()
    }

    fn read(&self, path: &str) -> String {
        String::from_utf8_lossy(&self.exec(&["cat", path]).stdout).into_owned()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // Killing PID 1 of the PID namespace kills every process in it; the mounts go with them.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(cg) = fs::read_to_string(self.work.join("cgroup")) {
            let cg = PathBuf::from(cg.trim());
            let _ = wait_for(Duration::from_secs(5), || {
                // Children first, then the sandbox's own cgroup.
                let mut dirs = vec![cg.clone()];
                let mut i = 0;
                while i < dirs.len() {
                    if let Ok(rd) = fs::read_dir(&dirs[i]) {
                        dirs.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
                    }
                    i += 1;
                }
                for d in dirs.iter().rev() {
                    let _ = fs::remove_dir(d);
                }
                (!cg.exists()).then_some(())
            });
        }
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// One `ansible-playbook` run of `packaging/ansible/site.yml` on node1 (the machine); node2 is in the
/// inventory (its HostEndpoint is in the files) but not played.
struct Play<'a> {
    venv: &'a Path,
    machine: &'a Machine,
    deb: PathBuf,
}

impl Play<'_> {
    fn run(&self, extra: &[&str]) -> (bool, String) {
        let w = &self.machine.work;
        let inventory = w.join("inventory");
        fs::write(
            &inventory,
            "[firewall_nodes]\n\
             node1 ansible_host=198.51.100.4 hostpolicyd_interface=eth0 hostpolicyd_nodeport_external=true\n\
             node2 ansible_host=198.51.100.5 hostpolicyd_interface=eth0\n\
             [firewall_nodes:vars]\n\
             ansible_connection=hp_nsenter\n\
             ansible_python_interpreter=/usr/bin/python3\n\
             ansible_become=false\n",
        )
        .unwrap();
        let out = Command::new("timeout")
            .arg("300")
            .arg(self.venv.join("bin/ansible-playbook"))
            .arg("-i")
            .arg(&inventory)
            .args(["--limit", "node1", "-e"])
            .arg(format!("hostpolicyd_deb={}", self.deb.display()))
            .args(extra)
            .arg(src("packaging/ansible/site.yml"))
            .env("HP_NSENTER_PID", self.machine.pid.to_string())
            .env("ANSIBLE_CONNECTION_PLUGINS", src("tests/ansible"))
            .env("ANSIBLE_REMOTE_TEMP", "/tmp/.ansible-remote")
            .env("ANSIBLE_LOCAL_TEMP", w.join("ansible-local"))
            .env("ANSIBLE_HOME", w.join("ansible-home"))
            .env("ANSIBLE_PIPELINING", "True")
            // The role needs no facts.
            .env("ANSIBLE_GATHERING", "explicit")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
            .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
            .env_remove("ANSIBLE_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run ansible-playbook");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// `changed=N` and `failed=N` of node1 in the play recap.
fn recap(text: &str) -> (u32, u32) {
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("node1") && l.contains("changed="))
        .unwrap_or_else(|| panic!("no play recap:\n{text}"));
    let field = |k: &str| -> u32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {line}"))
    };
    (field("changed="), field("failed="))
}

/// The output of one task (from its `TASK [...]` header to the next one).
fn task<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text
        .find(&format!("TASK [hostpolicyd : {name}]"))
        .unwrap_or_else(|| panic!("no task {name:?} in:\n{text}"));
    let rest = &text[start..];
    let end = rest[1..]
        .find("\nTASK [")
        .map(|i| i + 1)
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn ansible_check_mode_plans_and_the_run_applies() {
    if !require_root("ansible_check_mode_plans_and_the_run_applies") {
        return;
    }
    let started = Instant::now();
    let Some(venv) = ansible_venv() else { return };
    let machine = Machine::start();
    let deb = build_deb(&machine.work);
    let play = Play {
        venv: &venv,
        machine: &machine,
        deb,
    };
    let plan_task = "Plan the packets whose verdict the change alters";

    // 1. A fresh node, check mode. (The machine's /etc and /var are overlays of this host's: whatever
    // of hostpolicyd the host has is removed in the overlay only.)
    machine.exec(&[
        "rm",
        "-rf",
        "/etc/hostpolicy.d",
        "/etc/default/hostpolicyd",
        "/var/lib/hostpolicyd",
    ]);
    assert!(
        !machine.exists("/usr/sbin/hostpolicyd") && !machine.exists("/etc/hostpolicy.d"),
        "the machine is not fresh"
    );
    let (ok1, text) = play.run(&["--check", "--diff"]);
    assert!(ok1, "check mode on a fresh node failed:\n{text}");
    assert!(
        task(
            &text,
            "Install the package from the copied file (check mode, the copy is not made)"
        )
        .contains("would be installed"),
        "{text}"
    );
    // The files as they would be written (no validation in check mode: the plan does it)...
    assert!(
        task(&text, "Write the policy files").contains("+          ports: [31852]"),
        "{text}"
    );
    let plan = task(&text, plan_task);
    assert!(plan.contains("changed: [node1]"), "{plan}");
    assert!(
        plan.contains("compared with") && plan.contains("/empty"),
        "{plan}"
    );
    assert!(plan.contains("added    HostEndpoint node1-eth0"), "{plan}");
    assert!(plan.contains("verdict changes:"), "{plan}");
    assert!(plan.contains("ingress tcp from any IPv4 except"), "{plan}");
    assert!(!machine.exists("/usr/sbin/hostpolicyd") && !machine.exists("/etc/hostpolicy.d"));

    // 2. The real run.
    let (ok2, text) = play.run(&[]);
    assert!(
        ok2,
        "the run failed:\n{text}\n{}",
        machine.log("systemd.log")
    );
    assert_eq!(recap(&text).1, 0, "{text}");
    assert!(machine
        .read("/etc/hostpolicy.d/30-nodeport.yaml")
        .contains("31852"));
    let active = machine.exec(&["systemctl", "is-active", "hostpolicyd"]);
    assert_eq!(
        String::from_utf8_lossy(&active.stdout).trim(),
        "active",
        "{text}"
    );

    // 3. Converged: nothing changes, and the plan says so.
    let (ok3, text) = play.run(&["--check", "--diff"]);
    assert!(ok3, "{text}");
    assert_eq!(recap(&text), (0, 0), "{text}");
    assert!(task(&text, plan_task).contains("ok: [node1]"), "{text}");

    // 4. One more node port, check mode: the plan is the diff; nothing is written.
    let (ok4, text) = play.run(&[
        "--check",
        "--diff",
        "-e",
        "{\"hostpolicyd_nodeports\": [31852, 9100]}",
    ]);
    assert!(ok4, "{text}");
    let plan = task(&text, plan_task);
    assert!(plan.contains("changed: [node1]"), "{plan}");
    assert!(
        plan.contains("changed  GlobalNetworkPolicy allow-nodeport"),
        "{plan}"
    );
    assert!(
        plan.lines().any(|l| l.contains("ingress tcp")
            && l.contains("dport 9100")
            && l.contains("DENY -> ALLOW")),
        "{plan}"
    );
    assert!(!machine
        .read("/etc/hostpolicy.d/30-nodeport.yaml")
        .contains("9100"));

    // 5. A template the real run refuses fails the check run too.
    let (ok5, text) = play.run(&["--check", "-e", "{\"hostpolicyd_nodeports\": [70000]}"]);
    assert!(!ok5, "a port out of range passed check mode:\n{text}");
    assert_eq!(recap(&text).1, 1, "{text}");
    assert!(text.contains("70000"), "{text}");
    eprintln!("ansible test: {:.0} s", started.elapsed().as_secs_f64());
}
