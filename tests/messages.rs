//! What a user reads (issue 20): the messages of `check`, `render` and `status` for configurations of
//! the shapes found in Calico's host-protection documentation, each written here as a small example
//! of the same shape. Each test runs the binary as a user would and asserts what they read.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_hostpolicyd");

/// A directory of policy files, removed at the end of the test.
struct Dir(PathBuf);

impl Dir {
    fn new(files: &[(&str, &str)]) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "hostpolicyd-messages-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        for (name, text) in files {
            std::fs::write(path.join(name), text).unwrap();
        }
        Dir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// `hostpolicyd --config-dir DIR --node-name node1 ARGS...`, modes not judged (the test user owns
    /// the files).
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config-dir")
            .arg(&self.0)
            .args(["--node-name", "node1", "--strict-modes", "no"])
            .args(args)
            .env_remove("HOSTPOLICYD_NODE_NAME")
            .env_remove("HOSTPOLICYD_CONFIG_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("hostpolicyd")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const HEP: &str = "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: node1-eth0
  labels: {role: edge}
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: [198.51.100.4]
";

/// Item 2: under `--strict` a warning is printed as the error it has become, marked `[--strict]`, and
/// the summary says that warnings were counted (it said `2 errors` under two `warning:` lines).
#[test]
fn strict_prints_warnings_as_errors_and_says_so() {
    let felix = "apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  bpfEnabled: false
";
    let policy = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-all}
spec:
  selector: all()
  types: [Ingress, Egress]
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
";
    let dir = Dir::new(&[
        ("10-felix.yaml", felix),
        ("20-hep.yaml", HEP),
        ("30-policy.yaml", policy),
    ]);
    let plain = dir.run(&["check"]);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let warning = format!(
        "{}: warning: `bpfEnabled` has no effect in hostpolicyd\n",
        dir.path().join("10-felix.yaml:5:3").display()
    );
    assert_eq!(stderr(&plain), warning);

    let strict = dir.run(&["check", "--strict"]);
    assert_eq!(strict.status.code(), Some(1));
    assert_eq!(
        stderr(&strict),
        format!(
            "{}: error: `bpfEnabled` has no effect in hostpolicyd [--strict]\n\
             hostpolicyd: 1 error (a warning, which --strict counts as an error): configuration is invalid\n",
            dir.path().join("10-felix.yaml:5:3").display()
        )
    );
    assert_eq!(stdout(&strict), "");

    // A real error beside it: the summary tells them apart.
    let broken = policy.replace("action: Allow}]\n  egress", "action: allow}]\n  egress");
    std::fs::write(dir.path().join("30-policy.yaml"), broken).unwrap();
    let strict = dir.run(&["check", "--strict"]);
    let err = stderr(&strict);
    assert!(
        err.contains(
            "10-felix.yaml:5:3: error: `bpfEnabled` has no effect in hostpolicyd [--strict]\n"
        ),
        "{err}"
    );
    assert!(
        err.ends_with("hostpolicyd: 2 errors (1 of them a warning, which --strict counts as an error): configuration is invalid\n"),
        "{err}"
    );
    assert!(!err.contains("warning:"), "{err}");
}
