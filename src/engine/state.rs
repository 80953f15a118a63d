//! What survives a restart, in `--state-dir` (default `/var/lib/hostpolicyd`):
//!
//! - `last-good.json`: the last good [`Ruleset`] itself, wrapped with its content hash and generation, so
//!   that it can be re-applied without the configuration files (a boot with a broken configuration, a
//!   repair after someone deleted our table). Its hash is checked when it is read back.
//! - `status.json`: the [`Summary`] that `hostpolicyd status` shows: generation, content hash, applied
//!   time, the host endpoints with their policies per stage and direction, the last error and the last
//!   rollback.
//!
//! - `applied-config.json`: the configuration behind the last good ruleset ([`AppliedConfig`]): the texts
//!   of its files, the node and the interfaces it was compiled for, and the content hash it compiled to.
//!   `hostpolicyd plan` compares the configuration directory with it when the kernel holds that hash.
//!
//! All are written atomically: a temporary file in the same directory (created `O_EXCL | O_NOFOLLOW`,
//! so that no link planted there is followed), fsync, rename over the old one, fsync of the directory.
//! A reader sees the old file or the new one, never half of one.
//!
//! All are read as configuration files are ([`crate::trust`]): the state directory is opened by
//! walking its real path, each file opened once without following a link and without blocking on a
//! FIFO, judged by `fstat` (a regular file owned by root or our user, not group- or world-writable,
//! in a directory of the same kind unless `--strict-modes=no`) and read with a bound
//! ([`MAX_LAST_GOOD_BYTES`], [`MAX_SUMMARY_BYTES`], [`MAX_APPLIED_CONFIG_BYTES`]). Anything else is
//! unreadable state: an error the daemon logs as `state_unreadable` and goes on without.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Mode, OFlags};

use serde::{Deserialize, Serialize};

use crate::compile::content_hash;
use crate::host::probe::CheckResult;
use crate::ruleset::Ruleset;
use crate::trust;

pub const LAST_GOOD_FILE: &str = "last-good.json";
pub const SUMMARY_FILE: &str = "status.json";
pub const APPLIED_CONFIG_FILE: &str = "applied-config.json";

/// The configuration whose ruleset was applied and kept: what this node enforces while the kernel holds
/// `hash` (`hostpolicyd plan` compares with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedConfig {
    /// Format version of this file.
    pub version: u32,
    /// Content hash of the ruleset these files compiled to (the one the kernel's table carries).
    pub hash: String,
    pub node: String,
    pub saved_at: String,
    /// The interfaces and addresses it was compiled for (IP-matched HostEndpoints depend on them).
    pub interfaces: Vec<SavedInterface>,
    /// The files as they were read: display name and text.
    pub files: Vec<SavedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedInterface {
    pub name: String,
    pub addrs: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFile {
    pub name: String,
    pub text: String,
}

impl AppliedConfig {
    pub fn interfaces(&self) -> Vec<crate::resolve::Interface> {
        self.interfaces
            .iter()
            .map(|i| crate::resolve::Interface {
                name: i.name.clone(),
                addrs: i.addrs.clone(),
            })
            .collect()
    }

    /// `(display name, text)` pairs, as `config::load::load_sources` takes them.
    pub fn sources(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .map(|f| (f.name.clone(), f.text.clone()))
            .collect()
    }
}

/// The largest `last-good.json` read back (512 MiB): the ruleset of the benchmark's largest workload
/// (10,000 policies and a 100,000-net set) is 19 MiB of JSON, and the input limits of
/// hostpolicy.d(5) keep any valid configuration's well below this.
pub const MAX_LAST_GOOD_BYTES: u64 = 512 << 20;
/// The largest `applied-config.json` read back (512 MiB): the texts of a configuration directory
/// (at most [`crate::config::load::MAX_INPUT_BYTES`]) escaped as JSON strings, and its interfaces.
pub const MAX_APPLIED_CONFIG_BYTES: u64 = 512 << 20;
/// The largest `status.json` read back (16 MiB): diagnostics are capped ([`crate::config::diag::kept`]).
pub const MAX_SUMMARY_BYTES: u64 = 16 << 20;

/// The last good ruleset as stored: re-appliable as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastGood {
    /// Format version of this file.
    pub version: u32,
    pub generation: u64,
    /// Content hash of `ruleset` (checked on read).
    pub hash: String,
    pub saved_at: String,
    pub ruleset: Ruleset,
}

/// A state file written to a temporary file of the state directory and synced
/// ([`Store::stage_last_good`], [`Store::stage_applied_config`]), not yet in place:
/// [`Staged::finish`] renames it over its name; dropped unfinished, it is removed.
#[derive(Debug)]
pub struct Staged {
    dir: trust::OpenDir,
    tmp: String,
    name: &'static str,
    /// False once finished.
    pending: bool,
    hash: String,
    generation: u64,
}

impl Staged {
    /// Whether it holds the ruleset of content hash `hash` as generation `generation`.
    pub fn holds(&self, hash: &str, generation: u64) -> bool {
        self.hash == hash && self.generation == generation
    }

    /// Renames it over its name (`last-good.json`, ...) and syncs the directory.
    pub fn finish(mut self) -> io::Result<()> {
        self.pending = false;
        let result = rustix::fs::renameat(&self.dir.fd, self.tmp.as_str(), &self.dir.fd, self.name)
            .and_then(|()| rustix::fs::fsync(&self.dir.fd));
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.dir.fd, self.tmp.as_str(), AtFlags::empty());
        }
        result.map_err(io::Error::from)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.pending {
            let _ = rustix::fs::unlinkat(&self.dir.fd, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

/// A host endpoint of this node and the policies that apply to it, in evaluation order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSummary {
    pub name: String,
    /// The interfaces it governs; empty for the wildcard HEP (`interfaceName: "*"`).
    pub interfaces: Vec<String>,
    pub wildcard: bool,
    pub profiles: Vec<String>,
    /// Only the stage/direction pairs that have policies.
    pub policies: Vec<StagePolicies>,
}

/// A host endpoint of this node left out of the ruleset: it governs no interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InactiveEndpointSummary {
    pub name: String,
    /// Why: `none of its expectedIPs (192.0.2.9) is an address of an interface of this node`, ...
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagePolicies {
    /// `untracked`, `preDNAT`, `normal` or `forward`.
    pub stage: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub policies: Vec<String>,
    /// The tier of each policy, in the same order (tiers spec §3.2); empty when every policy is in the
    /// `default` tier, so that a configuration without tiers reads as it did before tiers existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
}

impl StagePolicies {
    /// `a, b` or, with tiers, `tier platform: a; tier default: b, c`.
    pub fn text(&self) -> String {
        if self.tiers.len() != self.policies.len() {
            return self.policies.join(", ");
        }
        let mut out = String::new();
        let mut current: Option<&str> = None;
        for (policy, tier) in self.policies.iter().zip(&self.tiers) {
            if current != Some(tier.as_str()) {
                if current.is_some() {
                    out.push_str("; ");
                }
                out.push_str(&format!("tier {tier}: "));
                current = Some(tier);
            } else {
                out.push_str(", ");
            }
            out.push_str(policy);
        }
        out
    }
}

/// Why the last reload did not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorSummary {
    pub at: String,
    /// `invalid` (configuration errors) or `apply_failed` (the kernel refused the batch).
    pub kind: String,
    pub message: String,
    /// `FILE:LINE:COL: error: MESSAGE`, one per entry.
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackSummary {
    pub at: String,
    /// Content hash of the rejected ruleset (not retried until the files change).
    pub rejected_hash: String,
    /// What is in force after the rollback: `generation N (sha256:...)` or `no table`.
    pub restored: String,
    /// The checks that passed before the swap and failed after it.
    pub failed_checks: Vec<CheckResult>,
    /// Policies new or changed in the rejected ruleset (best effort: the likely culprits).
    pub policies: Vec<String>,
}

/// What is applied and what happened last: `status.json`, and the body of `hostpolicyd status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub node: String,
    pub table: String,
    /// Counts the rulesets applied and kept, across restarts (0: nothing applied yet).
    pub generation: u64,
    /// Content hash of the last good ruleset.
    pub hash: Option<String>,
    /// When the last good ruleset was applied (RFC 3339, UTC).
    pub applied_at: Option<String>,
    pub endpoints: Vec<EndpointSummary>,
    /// HostEndpoints of this node that govern no interface, and why (`inactive_endpoints` in
    /// `status --json`).
    #[serde(default)]
    pub inactive_endpoints: Vec<InactiveEndpointSummary>,
    /// This node's connectivity checks in the last good configuration.
    pub checks: Vec<String>,
    /// What the kernel held at the last look: `ours`, `none` (no table), `foreign sha256:...`
    /// (a table of that name this daemon did not apply), `unknown` (could not ask).
    pub kernel: String,
    /// The last reload's result (`applied`, `unchanged`, `invalid`, `rolled_back`, `not_retried`, `failed`).
    pub last_result: Option<String>,
    pub last_result_at: Option<String>,
    pub last_error: Option<ErrorSummary>,
    pub last_rollback: Option<RollbackSummary>,
    /// Counters since this process started: new rulesets sent to the kernel (kept or rolled back),
    /// rollbacks.
    pub applies: u64,
    pub rollbacks: u64,
    /// Repairs since this process started: our table was deleted or changed by someone else and the
    /// last good ruleset was put back.
    #[serde(default)]
    pub drift_repairs: u64,
    /// The last time our table was found deleted or changed by someone else.
    #[serde(default)]
    pub last_drift: Option<DriftSummary>,
    /// Set when the ruleset in force is not the configuration's, because the configuration was invalid
    /// or unreadable when the daemon started: why, and what is in force instead.
    #[serde(default)]
    pub degraded: Option<String>,
    /// Set while the daemon enforces nothing because `hostpolicyd flush` asked it to delete its table:
    /// when (RFC 3339). The next reload of the configuration (or a restart) enforces again.
    #[serde(default)]
    pub flushed_at: Option<String>,
}

impl Summary {
    /// A copy with no endpoints (for a caller that keeps an equal list of them already).
    pub fn clone_without_endpoints(&self) -> Summary {
        // Every field by name: a field added later must be copied here too.
        let Summary {
            node,
            table,
            generation,
            hash,
            applied_at,
            endpoints: _,
            inactive_endpoints,
            checks,
            kernel,
            last_result,
            last_result_at,
            last_error,
            last_rollback,
            applies,
            rollbacks,
            drift_repairs,
            last_drift,
            degraded,
            flushed_at,
        } = self;
        Summary {
            node: node.clone(),
            table: table.clone(),
            generation: *generation,
            hash: hash.clone(),
            applied_at: applied_at.clone(),
            endpoints: Vec::new(),
            inactive_endpoints: inactive_endpoints.clone(),
            checks: checks.clone(),
            kernel: kernel.clone(),
            last_result: last_result.clone(),
            last_result_at: last_result_at.clone(),
            last_error: last_error.clone(),
            last_rollback: last_rollback.clone(),
            applies: *applies,
            rollbacks: *rollbacks,
            drift_repairs: *drift_repairs,
            last_drift: last_drift.clone(),
            degraded: degraded.clone(),
            flushed_at: flushed_at.clone(),
        }
    }

    /// Why the node is not enforcing its configuration as it stands, for `status` (exit status 4,
    /// `exit::DEGRADED`) and people: empty when all is well. Judged from the summary as it is, whose
    /// `kernel` the caller has just asked the kernel for.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let table = &self.table;
        if let Some(at) = &self.flushed_at {
            out.push(format!(
                "not enforcing (flushed): `hostpolicyd flush` deleted table inet {table} at {at}; \
                 `systemctl reload hostpolicyd` (or a restart) enforces the configuration again"
            ));
        } else if self.hash.is_none() {
            // Starting (the first reload runs), or nothing valid was ever applied.
            out.push(match self.kernel.as_str() {
                "" | "none" => {
                    "not enforcing: hostpolicyd has applied no ruleset (yet)".to_string()
                }
                k => format!(
                    "not enforcing: hostpolicyd has applied no ruleset; table inet {table} is {k}"
                ),
            });
        } else {
            match self.kernel.as_str() {
                "ours" | "" => {}
                "none" => out.push(format!(
                    "not enforcing: there is no table inet {table} in the kernel"
                )),
                k if k.starts_with("foreign") => out.push(format!(
                    "not enforcing: table inet {table} in the kernel is {k}, not the ruleset hostpolicyd applied"
                )),
                k => out.push(format!("the kernel's table inet {table} is {k}")),
            }
        }
        if let Some(reason) = &self.degraded {
            // Invalid at start: the reason says what is in force instead.
            out.push(reason.clone());
        }
        match self.last_result.as_deref() {
            Some(r @ ("invalid" | "failed" | "rolled_back" | "not_retried"))
                if self.degraded.is_none() =>
            {
                let what = match (&self.last_error, &self.last_rollback) {
                    (Some(e), _) if r != "rolled_back" && r != "not_retried" => e.message.clone(),
                    (_, Some(rb)) if r == "rolled_back" || r == "not_retried" => format!(
                        "sha256:{} was rolled back, in force: {}",
                        &rb.rejected_hash[..rb.rejected_hash.len().min(12)],
                        rb.restored
                    ),
                    _ => String::new(),
                };
                let at = self.last_result_at.as_deref().unwrap_or("?");
                out.push(if what.is_empty() {
                    format!("the configuration is not in force: last reload {r} at {at}")
                } else {
                    format!("the configuration is not in force: last reload {r} at {at}: {what}")
                });
            }
            _ => {}
        }
        out
    }
}

/// Our table found deleted or changed by someone else (drift), and the repair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftSummary {
    pub at: String,
    /// What changed: `table deleted`, `1 rule added to chain filter-input`, ...
    pub changes: Vec<String>,
    /// The processes that changed it, when the kernel said (`nft (pid 1234)`).
    pub by: Vec<String>,
    /// Whether the last good ruleset was put back.
    pub repaired: bool,
    /// Why not, when it was not.
    pub error: Option<String>,
    /// From the first notification of the change to the repair, in milliseconds.
    pub latency_ms: u64,
}

/// A file's identity and last change: [`write_atomic`] gives a new inode, and a write or chmod in place
/// changes the ctime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    ctime: (i64, i64),
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (0700) when it is missing, and opens it for writing into.
    fn ensure_dir(&self) -> io::Result<trust::OpenDir> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        self.open_dir()
    }

    /// The state directory, opened by walking its real path and judged as `--strict-modes` says.
    fn open_dir(&self) -> io::Result<trust::OpenDir> {
        trust::open_dir(&self.dir, trust::strict_modes())
            .map_err(|p| state_error(&self.dir, "the state directory", p))
    }

    /// The bytes of state file `name`, read as the module documentation says; None when it (or the
    /// directory) does not exist.
    fn read(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let path = self.dir.join(name);
        let dir = match trust::open_dir(&self.dir, trust::strict_modes()) {
            Ok(d) => d,
            Err(trust::Problem::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(p) => return Err(state_error(&self.dir, "the state directory", p)),
        };
        let mut file = match trust::open_in_nofollow(&dir, OsStr::new(name), trust::strict_modes())
        {
            Ok(f) => f,
            Err(trust::Problem::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(p) => return Err(state_error(&path, "", p)),
        };
        trust::read_bounded(&mut file, limit)
            .map(Some)
            .map_err(|p| state_error(&path, "", p))
    }

    /// Writes the last good ruleset; returns its content hash.
    pub fn save_last_good(
        &self,
        generation: u64,
        ruleset: &Ruleset,
        now: SystemTime,
    ) -> io::Result<String> {
        let hash = content_hash(ruleset);
        self.save_last_good_as(generation, &hash, ruleset, None, now)?;
        Ok(hash)
    }

    /// Writes the last good ruleset, whose content hash the caller knows (it is in the ruleset's
    /// comment; computing it again costs ~25 ms at 10,000 policies). `staged`: the file written
    /// earlier for the same ruleset and generation ([`Store::stage_last_good`]), put in place here.
    ///
    /// The text is [`LastGood`] as compact JSON: its readers are programs (the daemon's start,
    /// `status`, `status --counters`, `plan`), and pretty-printing 10,000 policies' ruleset took 80 ms
    /// and twice the bytes.
    pub fn save_last_good_as(
        &self,
        generation: u64,
        hash: &str,
        ruleset: &Ruleset,
        staged: Option<Staged>,
        now: SystemTime,
    ) -> io::Result<()> {
        let staged = match staged.filter(|s| s.holds(hash, generation)) {
            Some(s) => s,
            None => self.stage_last_good(ruleset, hash, generation, now)?,
        };
        staged.finish()
    }

    /// Writes `last-good.json` for the ruleset `ruleset` (content hash `hash`) as generation
    /// `generation`, saved at `now`, to a temporary file of the state directory that no reader looks
    /// at, and syncs it. `apply` does it while the kernel commits that ruleset (see
    /// `Engine::stage_state_during_commit`); [`Staged::finish`] puts it in place once the
    /// kernel said yes, and dropping it unfinished removes it: the state directory never names a
    /// ruleset the kernel refused.
    pub fn stage_last_good(
        &self,
        ruleset: &Ruleset,
        hash: &str,
        generation: u64,
        now: SystemTime,
    ) -> io::Result<Staged> {
        let (staged, mut f) = self.stage(LAST_GOOD_FILE, hash, generation)?;
        // [`LastGood`]'s fields, borrowed (no copy of the ruleset just to write it).
        #[derive(Serialize)]
        struct Doc<'a> {
            version: u32,
            generation: u64,
            hash: &'a str,
            saved_at: String,
            ruleset: &'a Ruleset,
        }
        let doc = Doc {
            version: 1,
            generation,
            hash,
            saved_at: rfc3339(now),
            ruleset,
        };
        // Streamed: the JSON text of 10,000 policies' ruleset is ~11 MB.
        let mut w = io::BufWriter::with_capacity(1 << 16, &mut f);
        serde_json::to_writer(&mut w, &doc).map_err(io::Error::other)?;
        w.flush()?;
        drop(w);
        f.sync_all()?;
        Ok(staged)
    }

    /// A temporary file for state file `name`, and what puts it in place.
    fn stage(&self, name: &'static str, hash: &str, generation: u64) -> io::Result<(Staged, File)> {
        let dir = self.ensure_dir()?;
        let tmp = format!(".{name}.tmp.{}", std::process::id());
        let f = create_temp(&dir, &tmp)?;
        Ok((
            Staged {
                dir,
                tmp,
                name,
                pending: true,
                hash: hash.to_string(),
                generation,
            },
            f,
        ))
    }

    /// What tells whether the last good ruleset file changed (None: it cannot be examined).
    pub fn last_good_stamp(&self) -> Option<Stamp> {
        let m = fs::symlink_metadata(self.dir.join(LAST_GOOD_FILE)).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// The last good ruleset, or None when there is none. A file whose hash does not match its ruleset
    /// is an error (it was damaged or edited), not a ruleset to apply.
    pub fn load_last_good(&self) -> io::Result<Option<LastGood>> {
        let path = self.dir.join(LAST_GOOD_FILE);
        let Some(bytes) = self.read(LAST_GOOD_FILE, MAX_LAST_GOOD_BYTES)? else {
            return Ok(None);
        };
        let doc: LastGood = serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        drop(bytes);
        let actual = content_hash(&doc.ruleset);
        // A file written before the content hash was made of per-chain digests records the hash of
        // that version (the one the kernel's table carries then): still the same ruleset.
        if actual != doc.hash && crate::compile::hash::legacy_content_hash(&doc.ruleset) != doc.hash
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: content hash {actual} does not match the recorded {}",
                    path.display(),
                    doc.hash
                ),
            ));
        }
        Ok(Some(doc))
    }

    /// Records the configuration behind the ruleset with content hash `hash` (see [`AppliedConfig`]).
    pub fn save_applied_config(
        &self,
        hash: &str,
        node: &str,
        interfaces: &[crate::resolve::Interface],
        sources: &[(String, impl AsRef<str>)],
        now: SystemTime,
    ) -> io::Result<()> {
        self.stage_applied_config(hash, node, interfaces, sources, now)?
            .finish()
    }

    /// [`Store::save_applied_config`] to a temporary file, synced, that
    /// [`Staged::finish`] puts in place (`apply` writes it while the kernel commits).
    pub fn stage_applied_config(
        &self,
        hash: &str,
        node: &str,
        interfaces: &[crate::resolve::Interface],
        sources: &[(String, impl AsRef<str>)],
        now: SystemTime,
    ) -> io::Result<Staged> {
        let (staged, mut f) = self.stage(APPLIED_CONFIG_FILE, hash, 0)?;
        #[derive(Serialize)]
        struct File<'a> {
            name: &'a str,
            text: &'a str,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            version: u32,
            hash: &'a str,
            node: &'a str,
            saved_at: String,
            interfaces: Vec<SavedInterface>,
            files: Vec<File<'a>>,
        }
        let doc = Doc {
            version: 1,
            hash,
            node,
            saved_at: rfc3339(now),
            interfaces: interfaces
                .iter()
                .map(|i| SavedInterface {
                    name: i.name.clone(),
                    addrs: i.addrs.clone(),
                })
                .collect(),
            files: sources
                .iter()
                .map(|(name, text)| File {
                    name,
                    text: text.as_ref(),
                })
                .collect(),
        };
        let mut w = io::BufWriter::with_capacity(1 << 16, &mut f);
        serde_json::to_writer(&mut w, &doc).map_err(io::Error::other)?;
        w.flush()?;
        drop(w);
        f.sync_all()?;
        Ok(staged)
    }

    /// The configuration recorded by [`Store::save_applied_config`], or None when there is none.
    pub fn load_applied_config(&self) -> io::Result<Option<AppliedConfig>> {
        let path = self.dir.join(APPLIED_CONFIG_FILE);
        let Some(bytes) = self.read(APPLIED_CONFIG_FILE, MAX_APPLIED_CONFIG_BYTES)? else {
            return Ok(None);
        };
        let doc: AppliedConfig = serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        if doc.version != 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: format version {} is not one this hostpolicyd reads (1)",
                    path.display(),
                    doc.version
                ),
            ));
        }
        Ok(Some(doc))
    }

    pub fn save_summary(&self, summary: &Summary) -> io::Result<()> {
        self.save_summary_json(&summary_json(summary)?)
    }

    /// Writes `status.json` as [`summary_json`] made it.
    pub fn save_summary_json(&self, json: &[u8]) -> io::Result<()> {
        let dir = self.ensure_dir()?;
        write_in(&dir, SUMMARY_FILE, |w| w.write_all(json))
    }

    pub fn load_summary(&self) -> io::Result<Option<Summary>> {
        let path = self.dir.join(SUMMARY_FILE);
        let Some(bytes) = self.read(SUMMARY_FILE, MAX_SUMMARY_BYTES)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }
}

/// The text of `status.json`: the summary as pretty JSON.
pub fn summary_json(summary: &Summary) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(summary).map_err(io::Error::other)
}

/// A write of `status.json` for the [`Writer`]: makes its text (called on the writer's thread, from
/// whatever is the latest summary then).
pub type SummaryJob = Box<dyn FnOnce() -> io::Result<Vec<u8>> + Send>;

/// What `last-good.json` holds as far as we know: the content hash last read or written, and the
/// file's stamp then (see [`save_last_good_if_changed`]).
pub type Saved = Option<(String, Option<Stamp>)>;

/// Writes the last good ruleset (generation `generation`, content hash `hash`) unless the state
/// directory holds it already. `saved` is what we last read or wrote: the file is read back (and
/// checked) only when it is not as we left it, since reading a 100,000-element ruleset costs as much as
/// writing it. `staged`: the file begun for it ([`Store::stage_last_good`]).
pub fn save_last_good_if_changed(
    store: &Store,
    saved: &mut Saved,
    last_good: (u64, &str, &Ruleset),
    staged: Option<Staged>,
    now: SystemTime,
) -> io::Result<()> {
    let (generation, hash, ruleset) = last_good;
    let stamp = store.last_good_stamp();
    let current = match saved {
        Some((h, Some(st))) if stamp.as_ref() == Some(st) => h == hash,
        _ => {
            let stored = store.load_last_good().ok().flatten().map(|l| l.hash);
            *saved = stored.map(|h| (h, stamp));
            saved.as_ref().is_some_and(|(h, _)| h == hash)
        }
    };
    if current {
        return Ok(());
    }
    store.save_last_good_as(generation, hash, ruleset, staged, now)?;
    *saved = Some((hash.to_string(), store.last_good_stamp()));
    Ok(())
}

/// The last good ruleset to write ([`Writer::last_good`]).
pub struct LastGoodJob {
    pub generation: u64,
    pub hash: String,
    pub ruleset: std::sync::Arc<Ruleset>,
    pub now: SystemTime,
}

/// The configuration behind an applied ruleset to record ([`Store::save_applied_config`]).
pub struct AppliedJob {
    pub hash: String,
    pub node: String,
    pub interfaces: Vec<crate::resolve::Interface>,
    /// The files' `(name, text)` pairs, the texts shared with the daemon's reader.
    pub sources: std::sync::Arc<Vec<(String, std::sync::Arc<str>)>>,
    pub now: SystemTime,
}

#[derive(Default)]
struct Queue {
    last_good: Option<LastGoodJob>,
    applied: Option<AppliedJob>,
    summary: Option<SummaryJob>,
    /// The content hash of the last `applied-config.json` that could not be written, until
    /// [`Writer::take_applied_failure`] takes it.
    applied_failed: Option<String>,
    busy: bool,
    stop: bool,
    /// The writer's thread ended by a panic (outside a job): nothing more will be written.
    dead: bool,
}

impl Queue {
    /// Whether a job waits.
    fn pending(&self) -> bool {
        self.last_good.is_some() || self.applied.is_some() || self.summary.is_some()
    }
}

/// While the writer's thread writes: `busy` is reset and [`Writer::flush`] woken when it is done,
/// even when a job panicked (a flush would otherwise wait for ever).
struct BusyGuard<'a>(&'a Shared);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.busy = false;
        q.dead |= std::thread::panicking();
        self.0.changed.notify_all();
    }
}

struct Shared {
    queue: std::sync::Mutex<Queue>,
    changed: std::sync::Condvar,
}

/// The daemon's writer of the big state files (`last-good.json`, ~11 MB of JSON at 10,000 policies,
/// and `applied-config.json`), on a thread of its own: ~120 ms per reload that are not the reload's
/// (the daemon is ready for the next change at once). It always writes the latest it was given, never
/// an older one after a newer (one thread, and a newer job replaces a waiting one); what waits is
/// written before the writer is dropped (the daemon's exit, SIGTERM included), and [`Writer::flush`]
/// waits for it (a reload asked for by `hostpolicyd reload` or SIGHUP answers once its files are
/// written). `status.json` too (issue 18: 250 KB of pretty JSON at 10,000 policies, and a sync).
pub struct Writer {
    shared: std::sync::Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread. `saved`: what `last-good.json` holds as far as the caller knows
    /// (`Engine::saved_last_good`); `on_error`: told of a file that could not be written (its name).
    pub fn spawn(
        store: Store,
        saved: Saved,
        on_error: impl Fn(&str, &io::Error) + Send + 'static,
    ) -> io::Result<Writer> {
        let shared = std::sync::Arc::new(Shared {
            queue: std::sync::Mutex::new(Queue::default()),
            changed: std::sync::Condvar::new(),
        });
        let theirs = std::sync::Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                let mut saved = saved;
                loop {
                    let (last_good, applied, summary) = {
                        let mut q = theirs.queue.lock().unwrap_or_else(|e| e.into_inner());
                        while !q.pending() && !q.stop {
                            q = theirs.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                        }
                        if !q.pending() {
                            return;
                        }
                        q.busy = true;
                        (q.last_good.take(), q.applied.take(), q.summary.take())
                    };
                    let _busy = BusyGuard(&theirs);
                    // A panic in a job is that job's failure, not the writer's end.
                    let panicked = || io::Error::other("the state writer panicked writing it");
                    if let Some(j) = last_good {
                        let run = std::panic::AssertUnwindSafe(|| {
                            let job = (j.generation, j.hash.as_str(), &*j.ruleset);
                            save_last_good_if_changed(&store, &mut saved, job, None, j.now)
                        });
                        match std::panic::catch_unwind(run) {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => on_error(LAST_GOOD_FILE, &e),
                            Err(_) => {
                                // What the file holds is not known any more: read it back next time.
                                saved = None;
                                on_error(LAST_GOOD_FILE, &panicked());
                            }
                        }
                        // Freed here, not on the daemon's thread.
                        drop(j);
                    }
                    if let Some(j) = applied {
                        let run = std::panic::AssertUnwindSafe(|| {
                            store.save_applied_config(
                                &j.hash,
                                &j.node,
                                &j.interfaces,
                                &j.sources,
                                j.now,
                            )
                        });
                        let result =
                            std::panic::catch_unwind(run).unwrap_or_else(|_| Err(panicked()));
                        if let Err(e) = result {
                            on_error(APPLIED_CONFIG_FILE, &e);
                            let mut q = theirs.queue.lock().unwrap_or_else(|e| e.into_inner());
                            q.applied_failed = Some(j.hash.clone());
                        }
                    }
                    if let Some(j) = summary {
                        let run = std::panic::AssertUnwindSafe(|| {
                            j().and_then(|json| store.save_summary_json(&json))
                        });
                        let result =
                            std::panic::catch_unwind(run).unwrap_or_else(|_| Err(panicked()));
                        if let Err(e) = result {
                            on_error(SUMMARY_FILE, &e);
                        }
                    }
                }
            })?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the last good ruleset (if the file does not hold it already), replacing a waiting one.
    pub fn last_good(&self, job: LastGoodJob) {
        let old = self.queue().last_good.replace(job);
        self.shared.changed.notify_all();
        drop(old);
    }

    /// Writes `status.json`, replacing a waiting write (the job reads the summary when it runs: the
    /// latest then).
    pub fn summary(&self, job: SummaryJob) {
        let old = self.queue().summary.replace(job);
        self.shared.changed.notify_all();
        drop(old);
    }

    /// Records the configuration of an applied ruleset, replacing a waiting one.
    pub fn applied_config(&self, job: AppliedJob) {
        let old = self.queue().applied.replace(job);
        self.shared.changed.notify_all();
        drop(old);
    }

    /// The content hash of the last `applied-config.json` the writer could not write, once: the
    /// caller gives it again at the next chance instead of taking it for written.
    pub fn take_applied_failure(&self) -> Option<String> {
        self.queue().applied_failed.take()
    }

    /// Waits until everything given so far is written (or failed).
    pub fn flush(&self) {
        let mut q = self.queue();
        while !q.dead && (q.busy || q.pending()) {
            q = self
                .shared
                .changed
                .wait(q)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Writer {
    /// Writes what waits, then ends the thread.
    fn drop(&mut self) {
        self.queue().stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An I/O error for a state file or directory that could not be read or is not trusted.
fn state_error(path: &Path, what: &str, p: trust::Problem) -> io::Error {
    let kind = match &p {
        trust::Problem::Io(e) => e.kind(),
        _ => io::ErrorKind::InvalidData,
    };
    let what = if what.is_empty() {
        String::new()
    } else {
        format!("{what} ")
    };
    let text = match p {
        trust::Problem::Untrusted { path: p2, why } if p2 == path => {
            format!("{what}{} is not trusted: {}", path.display(), why.why)
        }
        trust::Problem::Untrusted { path: p2, why } => format!(
            "{what}{} is not trusted: {} on its way is {}",
            path.display(),
            p2.display(),
            why.why
        ),
        trust::Problem::NotRegular(kind) => {
            format!("{what}{} is {kind}, not a regular file", path.display())
        }
        trust::Problem::TooBig { limit } => {
            format!("{what}{} holds more than {limit} bytes", path.display())
        }
        trust::Problem::Io(e) => format!("{what}{}: {e}", path.display()),
    };
    io::Error::new(kind, text)
}

/// Writes file `name` of the directory `dir` atomically: a temporary file created there
/// `O_EXCL | O_NOFOLLOW` (a stale one of ours is removed first, never followed), filled by `fill`
/// through a buffer, fsync, `renameat` over `name`, fsync of the directory.
fn write_in(
    dir: &trust::OpenDir,
    name: &str,
    fill: impl FnOnce(&mut io::BufWriter<&mut File>) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = format!(".{name}.tmp.{}", std::process::id());
    let mut f = create_temp(dir, &tmp)?;
    let result = (|| {
        let mut w = io::BufWriter::with_capacity(1 << 16, &mut f);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        f.sync_all()?;
        rustix::fs::renameat(&dir.fd, tmp.as_str(), &dir.fd, name)?;
        rustix::fs::fsync(&dir.fd)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(&dir.fd, tmp.as_str(), AtFlags::empty());
    }
    result
}

/// Creates the temporary file `tmp` in `dir`, `O_EXCL | O_NOFOLLOW` (a stale one of ours is removed
/// first, never followed).
fn create_temp(dir: &trust::OpenDir, tmp: &str) -> io::Result<File> {
    match rustix::fs::unlinkat(&dir.fd, tmp, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = rustix::fs::openat(
        &dir.fd,
        tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

/// Writes `data` to `path` atomically (see [`write_in`]): its directory is opened by walking its real
/// path, without judging ownership (callers that need that use a [`Store`]).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(OsStr::to_str)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = trust::open_dir(dir, trust::Strict::No)
        .map_err(|p| state_error(dir, "the directory", p))?;
    write_in(&dir, name, |w| w.write_all(data))
}

/// RFC 3339 in UTC with seconds: `2024-05-01T12:34:56Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "hostpolicyd-state-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn ruleset() -> Ruleset {
        let mut r = Ruleset {
            table: "hostpolicy".into(),
            comment: String::new(),
            sets: vec![],
            maps: vec![],
            chains: vec![crate::ruleset::Chain {
                name: "c".into(),
                base: None,
                rules: vec![],
            }]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
            origins: Default::default(),
        };
        r.comment = format!("hostpolicyd sha256:{}", content_hash(&r));
        r
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_714_566_896)),
            "2024-05-01T12:34:56Z"
        );
    }

    #[test]
    fn last_good_round_trips_and_is_reappliable() {
        let dir = temp_dir("rt");
        let store = Store::new(&dir);
        assert_eq!(store.load_last_good().unwrap(), None);
        let r = ruleset();
        store.save_last_good(7, &r, UNIX_EPOCH).unwrap();
        let back = store.load_last_good().unwrap().unwrap();
        assert_eq!(back.ruleset, r);
        assert_eq!(back.generation, 7);
        assert_eq!(back.hash, content_hash(&r));
        // Only the final files remain (no temporary file left behind), and they are private.
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [LAST_GOOD_FILE]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(dir.join(LAST_GOOD_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A last-good.json written by a version whose content hash was the SHA-256 of the ruleset's
    /// `Debug` text is read, not refused: after an upgrade the daemon still has its last good ruleset.
    #[test]
    fn a_last_good_written_with_the_legacy_hash_still_reads() {
        let dir = temp_dir("legacy");
        let store = Store::new(&dir);
        let r = ruleset();
        store.save_last_good(3, &r, UNIX_EPOCH).unwrap();
        let path = dir.join(LAST_GOOD_FILE);
        let legacy = crate::compile::hash::legacy_content_hash(&r);
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace(&content_hash(&r), &legacy);
        assert!(text.contains(&legacy));
        fs::write(&path, text).unwrap();
        let back = store.load_last_good().unwrap().unwrap();
        assert_eq!(back.ruleset.chains, r.chains);
        assert_eq!(back.hash, legacy);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_last_good_is_an_error() {
        let dir = temp_dir("bad");
        let store = Store::new(&dir);
        store.save_last_good(1, &ruleset(), UNIX_EPOCH).unwrap();
        let path = dir.join(LAST_GOOD_FILE);
        let text = fs::read_to_string(&path).unwrap().replace("\"c\"", "\"d\"");
        fs::write(&path, text).unwrap();
        let err = store.load_last_good().unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn applied_config_round_trips() {
        let dir = temp_dir("applied");
        let store = Store::new(&dir);
        assert_eq!(store.load_applied_config().unwrap(), None);
        let ifaces = vec![crate::resolve::Interface {
            name: "eth0".into(),
            addrs: vec!["192.0.2.1".parse().unwrap()],
        }];
        let sources = vec![(
            "/etc/hostpolicy.d/a.yaml".to_string(),
            "x: \"y\"\n".to_string(),
        )];
        store
            .save_applied_config("abc", "node1", &ifaces, &sources, UNIX_EPOCH)
            .unwrap();
        let back = store.load_applied_config().unwrap().unwrap();
        assert_eq!((back.hash.as_str(), back.node.as_str()), ("abc", "node1"));
        assert_eq!(back.interfaces(), ifaces);
        assert_eq!(back.sources(), sources);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn summary_round_trips() {
        let dir = temp_dir("sum");
        let store = Store::new(&dir);
        let s = Summary {
            node: "n".into(),
            generation: 3,
            hash: Some("ab".into()),
            ..Summary::default()
        };
        store.save_summary(&s).unwrap();
        store.save_summary(&s).unwrap();
        assert_eq!(store.load_summary().unwrap(), Some(s));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_summary_written_before_drift_repairs_existed_still_reads() {
        let mut v = serde_json::to_value(Summary {
            generation: 2,
            ..Summary::default()
        })
        .unwrap();
        for k in ["drift_repairs", "last_drift", "degraded"] {
            v.as_object_mut().unwrap().remove(k);
        }
        let s: Summary = serde_json::from_value(v).unwrap();
        assert_eq!((s.generation, s.drift_repairs, s.degraded), (2, 0, None));
    }

    /// Runs `f` on a thread and waits at most 20 s for it: a read that blocks fails the test instead
    /// of hanging it.
    fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("blocked: the state file was not opened O_NONBLOCK")
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    /// Issue 19 item 8: last-good.json as a FIFO blocked the daemon before it started; status.json as
    /// a FIFO hung `status` without a daemon. Both are unreadable state now, at once.
    #[test]
    fn a_fifo_state_file_is_unreadable_state_not_a_hang() {
        let dir = temp_dir("fifo");
        fs::create_dir_all(&dir).unwrap();
        mkfifo(&dir.join(LAST_GOOD_FILE));
        mkfifo(&dir.join(SUMMARY_FILE));
        let d = dir.clone();
        let err = bounded(move || Store::new(&d).load_last_good().unwrap_err());
        assert!(
            err.to_string()
                .ends_with("last-good.json is a FIFO, not a regular file"),
            "{err}"
        );
        let d = dir.clone();
        let err = bounded(move || Store::new(&d).load_summary().unwrap_err());
        assert!(
            err.to_string()
                .ends_with("status.json is a FIFO, not a regular file"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 19 item 8: last-good.json as a symlink to /dev/zero read 2.1 GB.
    #[test]
    fn a_symlinked_state_file_is_not_followed() {
        let dir = temp_dir("link");
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join(LAST_GOOD_FILE)).unwrap();
        let d = dir.clone();
        let err = bounded(move || Store::new(&d).load_last_good().unwrap_err());
        assert!(
            err.to_string()
                .ends_with("last-good.json is a symbolic link, not a regular file"),
            "{err}"
        );
        // A symlink to a good last-good.json is refused too: nothing but our own files belongs here.
        let elsewhere = temp_dir("elsewhere");
        Store::new(&elsewhere)
            .save_last_good(1, &ruleset(), UNIX_EPOCH)
            .unwrap();
        fs::remove_file(dir.join(LAST_GOOD_FILE)).unwrap();
        std::os::unix::fs::symlink(elsewhere.join(LAST_GOOD_FILE), dir.join(LAST_GOOD_FILE))
            .unwrap();
        assert!(Store::new(&dir).load_last_good().is_err());
        // Writing replaces the link, and never writes through one planted as the temporary file.
        let victim = elsewhere.join("victim");
        fs::write(&victim, "keep").unwrap();
        let tmp = dir.join(format!(".{LAST_GOOD_FILE}.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        Store::new(&dir)
            .save_last_good(2, &ruleset(), UNIX_EPOCH)
            .unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            Store::new(&dir)
                .load_last_good()
                .unwrap()
                .unwrap()
                .generation,
            2
        );
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&elsewhere).unwrap();
    }

    #[test]
    fn state_files_are_read_with_a_bound() {
        let dir = temp_dir("big");
        fs::create_dir_all(&dir).unwrap();
        let f = File::create(dir.join(SUMMARY_FILE)).unwrap();
        f.set_len(MAX_SUMMARY_BYTES + 1).unwrap();
        let err = Store::new(&dir).load_summary().unwrap_err();
        assert!(
            err.to_string().contains("holds more than 16777216 bytes"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_untrusted_state_directory_is_not_read_or_written() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("modes");
        let store = Store::new(&dir);
        store.save_last_good(1, &ruleset(), UNIX_EPOCH).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = store.load_last_good().unwrap_err();
        assert!(
            err.to_string()
                .contains("mode 0777 is group- and world-writable"),
            "{err}"
        );
        assert!(store.save_summary(&Summary::default()).is_err());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(store.load_last_good().unwrap().is_some());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 19 item 8: status.json garbage reset the generation to 0 although last-good said 3.
    #[test]
    fn garbage_status_json_keeps_the_last_good_generation() {
        let dir = temp_dir("garbage");
        let store = Store::new(&dir);
        let r = ruleset();
        store.save_last_good(3, &r, UNIX_EPOCH).unwrap();
        fs::write(dir.join(SUMMARY_FILE), "\u{0}garbage").unwrap();
        assert!(store.load_summary().is_err());
        let mut engine = crate::engine::Engine::new(
            crate::nft::Fake::new(),
            crate::engine::tests::Script::default(),
            "n1",
            &r.table,
        );
        engine.restore_from(
            store.load_last_good().unwrap(),
            store.load_summary().ok().flatten(),
        );
        assert_eq!(engine.summary().generation, 3);
        // And the larger of the two when both read.
        store
            .save_summary(&Summary {
                table: r.table.clone(),
                generation: 2,
                ..Summary::default()
            })
            .unwrap();
        engine.restore_from(
            store.load_last_good().unwrap(),
            store.load_summary().unwrap(),
        );
        assert_eq!(engine.summary().generation, 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 18: the daemon's writer writes the latest it was given, and what waits is written before
    /// it is dropped (the daemon's exit); a file already holding the ruleset is not written again.
    #[test]
    fn the_state_writer_writes_the_latest_and_finishes_before_it_goes() {
        let dir = temp_dir("writer");
        let store = Store::new(&dir);
        let a = ruleset();
        let mut b = ruleset();
        b.chain_mut(0).name = "d".into();
        b.comment = format!("hostpolicyd sha256:{}", content_hash(&b));
        let job = |generation: u64, r: &Ruleset| LastGoodJob {
            generation,
            hash: content_hash(r),
            ruleset: std::sync::Arc::new(r.clone()),
            now: UNIX_EPOCH,
        };
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = std::sync::Arc::clone(&errors);
        let w = Writer::spawn(store.clone(), None, move |f, e| {
            seen.lock().unwrap().push(format!("{f}: {e}"))
        })
        .unwrap();
        w.last_good(job(1, &a));
        w.flush();
        let saved = store.load_last_good().unwrap().unwrap();
        assert_eq!((saved.generation, saved.ruleset), (1, a.clone()));
        let stamp = store.last_good_stamp();
        // The same ruleset again (a later save of the summary, say): the file is left as it is.
        w.last_good(job(1, &a));
        w.flush();
        assert_eq!(store.last_good_stamp(), stamp);
        w.last_good(job(2, &b));
        w.applied_config(AppliedJob {
            hash: content_hash(&b),
            node: "node1".into(),
            interfaces: Vec::new(),
            sources: std::sync::Arc::new(vec![("a.yaml".into(), "# b\n".into())]),
            now: UNIX_EPOCH,
        });
        drop(w);
        let saved = store.load_last_good().unwrap().unwrap();
        assert_eq!((saved.generation, saved.ruleset), (2, b.clone()));
        let applied = store.load_applied_config().unwrap().unwrap();
        assert_eq!(applied.hash, content_hash(&b));
        assert_eq!(applied.files[0].text, "# b\n");
        assert!(errors.lock().unwrap().is_empty(), "{errors:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 18: `status.json` is written by the writer too, from the summary its job reads when it
    /// runs (the latest then), with the text the daemon wrote on the spot before; a write that
    /// waits is replaced by a newer one, and done before the writer goes.
    #[test]
    fn the_state_writer_writes_status_json_from_the_latest_summary() {
        let dir = temp_dir("writer-summary");
        let store = Store::new(&dir);
        let current = std::sync::Arc::new(std::sync::Mutex::new(Summary {
            node: "node1".into(),
            generation: 1,
            ..Summary::default()
        }));
        let job = || -> SummaryJob {
            let current = std::sync::Arc::clone(&current);
            Box::new(move || summary_json(&current.lock().unwrap()))
        };
        let w = Writer::spawn(store.clone(), None, |f, e| panic!("{f}: {e}")).unwrap();
        w.summary(job());
        w.flush();
        assert_eq!(store.load_summary().unwrap().unwrap().generation, 1);
        // The job is queued while the summary is locked and changed again before the lock is let
        // go: whenever the writer runs it, it can only see generation 3 (the latest), never 2.
        {
            let mut summary = current.lock().unwrap();
            summary.generation = 2;
            w.summary(job());
            summary.generation = 3;
        }
        drop(w);
        let on_disk = fs::read(dir.join(SUMMARY_FILE)).unwrap();
        let latest = current.lock().unwrap().clone();
        assert_eq!(on_disk, serde_json::to_vec_pretty(&latest).unwrap());
        assert_eq!(store.load_summary().unwrap().unwrap(), latest);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A regular file where the state directory should be (every write fails), and an applied job.
    fn unwritable_store(name: &str) -> (PathBuf, Store, impl Fn() -> AppliedJob) {
        let dir = temp_dir(name);
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-a-dir");
        fs::write(&file, "x").unwrap();
        let job = || AppliedJob {
            hash: "h1".into(),
            node: "node1".into(),
            interfaces: Vec::new(),
            sources: std::sync::Arc::new(vec![("a.yaml".into(), "# a\n".into())]),
            now: UNIX_EPOCH,
        };
        (dir, Store::new(&file), job)
    }

    /// Review of issue 18: an `applied-config.json` the writer could not write is reported, so that
    /// the daemon gives it again at the next reload instead of taking it for written until the
    /// configuration changes.
    #[test]
    fn a_failed_applied_config_write_is_reported_for_a_retry() {
        let (dir, store, job) = unwritable_store("writer-fail");
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = std::sync::Arc::clone(&errors);
        let w = Writer::spawn(store, None, move |f, _| {
            seen.lock().unwrap().push(f.to_string())
        })
        .unwrap();
        assert_eq!(w.take_applied_failure(), None);
        w.applied_config(job());
        w.flush();
        assert_eq!(*errors.lock().unwrap(), [APPLIED_CONFIG_FILE]);
        assert_eq!(w.take_applied_failure().as_deref(), Some("h1"));
        assert_eq!(w.take_applied_failure(), None, "reported once");
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Review of issue 18: a panic on the writer's thread while it is busy (here: its error report
    /// panics) leaves no `busy` behind: `flush` returns, now and later, instead of waiting for ever.
    #[test]
    fn a_panicking_state_writer_does_not_hang_flush() {
        let (dir, store, job) = unwritable_store("writer-panic");
        let w = Writer::spawn(store, None, |_, _| panic!("report")).unwrap();
        w.applied_config(job());
        w.flush();
        w.applied_config(job());
        w.flush();
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }
}
