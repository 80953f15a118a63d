//! Prometheus metrics through node_exporter's textfile collector (issue 14): no listening socket.
//!
//! With `--metrics-file PATH` the metrics thread writes PATH after every reload and every
//! `--metrics-interval` seconds: a temporary file in the same directory whose name does not end in
//! `.prom` (node_exporter reads only `*.prom`), written, flushed to disk, mode 0644, then renamed over
//! PATH, so that the collector reads the old file or the new one, never half of one.
//!
//! The text follows what `promtool check metrics` and node_exporter accept ([`render`]): every family
//! has `# HELP` and `# TYPE`, counters end in `_total`, `_info` is a gauge of 1, no timestamps (the
//! textfile collector skips a whole file that has one), label values escaped (`\\`, `\"`, `\n`),
//! families and series sorted, a final newline. No per-address label: the flows are counted by action.
//!
//! Policy counters come from the kernel's rule counters (a dump of our table), summed per (tier,
//! policy, direction, action) over the policy's rules; a staged policy's rules carry `staged="true"`.
//! They go on across reloads: an unchanged policy keeps its kernel rules (and counters), and where the
//! kernel's sum falls (a changed policy's rules are new, a repaired table is new) the last value is
//! carried over, so the series never goes down.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use super::control::Status;
use super::flows::Flows;
use crate::ruleset::{Kind, Ruleset};

/// One policy series: (tier, policy, direction, action, staged).
pub type PolicyKey = (String, String, String, String, bool);

/// What the metrics say, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub version: String,
    pub generation: u64,
    /// Seconds since the epoch of the last apply, if any.
    pub last_apply: Option<u64>,
    /// Reloads by result (every result listed, 0 included).
    pub reloads: BTreeMap<String, u64>,
    pub drift_repairs: u64,
    pub degraded: bool,
    /// (packets, bytes) per policy series.
    pub policies: BTreeMap<PolicyKey, (u64, u64)>,
    pub flows_allowed: u64,
    pub flows_denied: u64,
    pub flow_records_dropped: u64,
}

/// The results `hostpolicyd_reloads_total` counts (a reload that is not retried counts as rejected).
pub const RESULTS: [&str; 5] = ["applied", "unchanged", "rejected", "rolled_back", "failed"];

/// The result label of an outcome's kind (`engine::Outcome::kind`).
pub fn result_of(kind: &str) -> &'static str {
    match kind {
        "applied" => "applied",
        "unchanged" => "unchanged",
        "rolled_back" => "rolled_back",
        "failed" => "failed",
        _ => "rejected",
    }
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The textfile of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, ty: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {ty}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let plain = |v: u64| vec![(String::new(), v.to_string())];
    let policy = |f: &dyn Fn(&(u64, u64)) -> u64| -> Vec<(String, String)> {
        s.policies
            .iter()
            .map(|((tier, policy, direction, action, staged), v)| {
                let staged = if *staged { ",staged=\"true\"" } else { "" };
                (
                    format!(
                        "{{tier=\"{}\",policy=\"{}\",direction=\"{}\",action=\"{}\"{staged}}}",
                        escape(tier),
                        escape(policy),
                        escape(direction),
                        escape(action)
                    ),
                    f(v).to_string(),
                )
            })
            .collect()
    };
    // Families in name order.
    family(
        "hostpolicyd_build_info",
        "gauge",
        "hostpolicyd's version (the value is always 1).",
        &[(
            format!("{{version=\"{}\"}}", escape(&s.version)),
            "1".into(),
        )],
    );
    family(
        "hostpolicyd_degraded",
        "gauge",
        "1 while the configuration is invalid and the daemon enforces the last good ruleset, else 0.",
        &plain(u64::from(s.degraded)),
    );
    family(
        "hostpolicyd_drift_repairs_total",
        "counter",
        "Times the daemon put its table back after someone else changed it, since it started.",
        &plain(s.drift_repairs),
    );
    family(
        "hostpolicyd_flow_records_dropped_total",
        "counter",
        "Flow records that may have been lost: evicted to keep the table's size, NFLOG messages the kernel dropped, conntrack event overruns.",
        &plain(s.flow_records_dropped),
    );
    family(
        "hostpolicyd_flows_total",
        "counter",
        "Flow aggregates started (per action, source, destination, destination port, interface, stage and direction), by action.",
        &[
            ("{action=\"allow\"}".into(), s.flows_allowed.to_string()),
            ("{action=\"deny\"}".into(), s.flows_denied.to_string()),
        ],
    );
    family(
        "hostpolicyd_generation",
        "gauge",
        "The generation of the ruleset in force (counts the applies since the state directory began).",
        &plain(s.generation),
    );
    family(
        "hostpolicyd_last_apply_timestamp_seconds",
        "gauge",
        "When the ruleset in force was applied, in seconds since the epoch (0: never).",
        &plain(s.last_apply.unwrap_or(0)),
    );
    family(
        "hostpolicyd_policy_bytes_total",
        "counter",
        "Bytes of the packets each policy's rules matched (new connections and untracked packets), by tier, policy, direction and rule action; staged policies with staged=\"true\".",
        &policy(&|v| v.1),
    );
    family(
        "hostpolicyd_policy_packets_total",
        "counter",
        "Packets each policy's rules matched (new connections and untracked packets), by tier, policy, direction and rule action; staged policies with staged=\"true\".",
        &policy(&|v| v.0),
    );
    let reloads: Vec<(String, String)> = RESULTS
        .iter()
        .map(|r| {
            (
                format!("{{result=\"{r}\"}}"),
                s.reloads.get(*r).copied().unwrap_or(0).to_string(),
            )
        })
        .collect();
    family(
        "hostpolicyd_reloads_total",
        "counter",
        "Reloads of the configuration since the daemon started, by result.",
        &reloads,
    );
    out
}

/// Writes `text` to `path` atomically: a temporary file beside it (not ending in `.prom`), flushed,
/// mode 0644, renamed over `path`.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            // The umask may have taken bits off.
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            f.sync_all()?;
            // Closed before the rename: nothing about the file happens under its final name.
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Which kernel rule counts for which policy series: chain → per rule position, its series and its
/// comment (a rule is taken for the series only if the kernel's comment is the same).
#[derive(Debug, Clone, Default)]
pub struct CounterMap {
    chains: HashMap<String, Vec<Option<Counted>>>,
}

/// A counted rule's series and comment.
type Counted = (Arc<PolicyKey>, Option<String>);

impl CounterMap {
    pub fn of(rs: &Ruleset) -> CounterMap {
        let mut chains = HashMap::new();
        let mut keys: HashMap<PolicyKey, Arc<PolicyKey>> = HashMap::new();
        for (c, chain) in rs.chains.iter().enumerate() {
            let mut rules = Vec::with_capacity(chain.rules.len());
            let mut any = false;
            for (r, rule) in chain.rules.iter().enumerate() {
                let key = rs
                    .origins
                    .of(c, r)
                    .filter(|o| rule.counter && o.kind == Kind::Policy && (!o.shadow || o.staged));
                let entry = key.and_then(|o| {
                    let k: PolicyKey = (
                        o.tier.as_deref().unwrap_or("default").to_string(),
                        o.policy.as_deref()?.to_string(),
                        o.direction?.as_str().to_string(),
                        o.action?.to_string().to_lowercase(),
                        o.staged,
                    );
                    let k = keys.entry(k.clone()).or_insert_with(|| Arc::new(k)).clone();
                    Some((
                        k,
                        rule.comment
                            .as_deref()
                            .map(|c| crate::nft::clean_comment(c).into_owned()),
                    ))
                });
                any |= entry.is_some();
                rules.push(entry);
            }
            if any {
                chains.insert(chain.name.clone(), rules);
            }
        }
        CounterMap { chains }
    }

    /// Sums the kernel's rule counters per series; every series of the map is there (0 when the
    /// kernel does not have its rules).
    pub fn sums(&self, dumped: &[crate::nft::dump::DumpedRule]) -> BTreeMap<PolicyKey, (u64, u64)> {
        let mut out: BTreeMap<PolicyKey, (u64, u64)> = BTreeMap::new();
        for rules in self.chains.values() {
            for (k, _) in rules.iter().flatten() {
                out.entry((**k).clone()).or_default();
            }
        }
        let mut position: HashMap<&str, usize> = HashMap::new();
        for d in dumped {
            let p = position.entry(d.chain.as_str()).or_default();
            let at = *p;
            *p += 1;
            let (Some((packets, bytes)), Some(rules)) = (d.counter, self.chains.get(&d.chain))
            else {
                continue;
            };
            if let Some(Some((k, comment))) = rules.get(at) {
                if comment.as_deref() == d.comment.as_deref() {
                    let e = out.entry((**k).clone()).or_default();
                    e.0 += packets;
                    e.1 += bytes;
                }
            }
        }
        out
    }
}

/// Keeps counters going up: where the kernel's sum falls below the last one, the last one is
/// carried over.
#[derive(Debug, Default)]
pub struct Continuity {
    last: BTreeMap<PolicyKey, (u64, u64)>,
    carried: BTreeMap<PolicyKey, (u64, u64)>,
}

impl Continuity {
    pub fn apply(
        &mut self,
        now: BTreeMap<PolicyKey, (u64, u64)>,
    ) -> BTreeMap<PolicyKey, (u64, u64)> {
        let mut out = BTreeMap::new();
        for (k, (p, b)) in now {
            let carried = self.carried.entry(k.clone()).or_default();
            if let Some((lp, lb)) = self.last.get(&k) {
                if p < *lp || b < *lb {
                    carried.0 += lp;
                    carried.1 += lb;
                }
            }
            self.last.insert(k.clone(), (p, b));
            out.insert(k, (carried.0 + p, carried.1 + b));
        }
        out
    }
}

/// The handle the writer loop uses: a new generation's counter map, and "write now".
#[derive(Clone)]
pub struct Metrics {
    map: Arc<Mutex<Option<Arc<CounterMap>>>>,
    wake: Option<Sender<()>>,
}

impl Metrics {
    /// No metrics file: nothing happens.
    pub fn off() -> Metrics {
        Metrics {
            map: Arc::new(Mutex::new(None)),
            wake: None,
        }
    }

    /// The ruleset in force changed (or a reload happened): write soon.
    pub fn reloaded(&self, rs: Option<&Ruleset>) {
        let Some(wake) = &self.wake else {
            return;
        };
        if let Some(rs) = rs {
            *self.map.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Arc::new(CounterMap::of(rs)));
        }
        let _ = wake.send(());
    }

    /// Starts the metrics thread writing `path` every `interval` and after every reload.
    pub fn spawn(
        path: PathBuf,
        interval: Duration,
        table: String,
        status: Arc<Mutex<Status>>,
        flows: Flows,
    ) -> io::Result<Metrics> {
        let (tx, rx) = mpsc::channel();
        let map: Arc<Mutex<Option<Arc<CounterMap>>>> = Arc::new(Mutex::new(None));
        let m = map.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || run(&path, interval, &table, &status, &flows, &m, &rx))?;
        Ok(Metrics {
            map,
            wake: Some(tx),
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (as `engine::state::rfc3339` writes it) to seconds since the epoch.
pub fn epoch_of(rfc3339: &str) -> Option<u64> {
    let b = rfc3339.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| rfc3339.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from civil (Howard Hinnant's algorithm), the inverse of `civil_from_days`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

fn snapshot(
    table: &str,
    status: &Mutex<Status>,
    flows: &Flows,
    map: &Mutex<Option<Arc<CounterMap>>>,
    continuity: &mut Continuity,
) -> Snapshot {
    let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut reloads: BTreeMap<String, u64> = RESULTS.iter().map(|r| (r.to_string(), 0)).collect();
    if let Some(d) = &s.daemon {
        for (result, n) in &d.reload_results {
            *reloads.entry(result_of(result).to_string()).or_default() += n;
        }
    }
    // the Arc, not the map: the map is as big as the ruleset
    let map = map.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let policies = match (&map, crate::nft::dump::rules(table)) {
        (Some(map), Ok(dumped)) => continuity.apply(map.sums(&dumped)),
        (Some(map), Err(_)) => continuity.apply(map.sums(&[])),
        (None, _) => BTreeMap::new(),
    };
    let counts = flows.counts();
    Snapshot {
        version: env!("CARGO_PKG_VERSION").to_string(),
        generation: s.summary.generation,
        last_apply: s.summary.applied_at.as_deref().and_then(epoch_of),
        reloads,
        drift_repairs: s.summary.drift_repairs,
        degraded: s.summary.degraded.is_some(),
        policies,
        flows_allowed: counts.allowed,
        flows_denied: counts.denied,
        flow_records_dropped: counts.dropped(),
    }
}

fn run(
    path: &Path,
    interval: Duration,
    table: &str,
    status: &Mutex<Status>,
    flows: &Flows,
    map: &Mutex<Option<Arc<CounterMap>>>,
    wake: &Receiver<()>,
) {
    let mut continuity = Continuity::default();
    let mut failing = false;
    loop {
        let text = render(&snapshot(table, status, flows, map, &mut continuity));
        match write_atomic(path, &text) {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                warn!(
                    event = "metrics_unwritable",
                    file = %path.display(),
                    "cannot write the metrics file {}: {e}",
                    path.display()
                );
                failing = true;
            }
            Err(_) => {}
        }
        match wake.recv_timeout(interval) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {
                // A burst of reloads: one write.
                while wake.try_recv().is_ok() {}
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot {
            version: "0.1.0".into(),
            generation: 4,
            last_apply: Some(1_800_000_000),
            drift_repairs: 1,
            flows_allowed: 7,
            flows_denied: 3,
            flow_records_dropped: 2,
            ..Snapshot::default()
        };
        s.reloads.insert("applied".into(), 2);
        s.policies.insert(
            (
                "default".into(),
                "deny-\"x\"".into(),
                "ingress".into(),
                "deny".into(),
                false,
            ),
            (3, 180),
        );
        s.policies.insert(
            (
                "default".into(),
                "s".into(),
                "ingress".into(),
                "deny".into(),
                true,
            ),
            (1, 60),
        );
        s
    }

    #[test]
    fn the_textfile_has_every_family_with_help_and_type() {
        let text = render(&snapshot());
        assert!(text.ends_with('\n'));
        assert!(!text.contains('\r'));
        for family in [
            "hostpolicyd_build_info",
            "hostpolicyd_generation",
            "hostpolicyd_last_apply_timestamp_seconds",
            "hostpolicyd_reloads_total",
            "hostpolicyd_drift_repairs_total",
            "hostpolicyd_degraded",
            "hostpolicyd_policy_packets_total",
            "hostpolicyd_policy_bytes_total",
            "hostpolicyd_flows_total",
            "hostpolicyd_flow_records_dropped_total",
        ] {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family}\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family}\n{text}"
            );
        }
        assert!(text.contains("hostpolicyd_build_info{version=\"0.1.0\"} 1\n"));
        assert!(
            text.contains("hostpolicyd_reloads_total{result=\"failed\"} 0\n"),
            "every result from the start"
        );
        assert!(text.contains("hostpolicyd_reloads_total{result=\"applied\"} 2\n"));
        assert!(text.contains(
            "hostpolicyd_policy_packets_total{tier=\"default\",policy=\"deny-\\\"x\\\"\",direction=\"ingress\",action=\"deny\"} 3\n"
        ), "{text}");
        assert!(text.contains(
            "hostpolicyd_policy_bytes_total{tier=\"default\",policy=\"s\",direction=\"ingress\",action=\"deny\",staged=\"true\"} 60\n"
        ), "{text}");
        assert!(text.contains("hostpolicyd_flows_total{action=\"deny\"} 3\n"));
        assert!(text.contains("hostpolicyd_last_apply_timestamp_seconds 1800000000\n"));
        // Families in name order, each TYPE before its samples.
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn the_file_is_replaced_whole_with_mode_0644() {
        let dir = std::env::temp_dir().join(format!("hostpolicyd-metrics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hostpolicyd.prom");
        write_atomic(&path, "a 1\n").unwrap();
        write_atomic(&path, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn counters_never_go_down_across_a_reset() {
        let k: PolicyKey = (
            "default".into(),
            "p".into(),
            "ingress".into(),
            "allow".into(),
            false,
        );
        let mut c = Continuity::default();
        let at = |p, b| BTreeMap::from([(k.clone(), (p, b))]);
        assert_eq!(c.apply(at(5, 500))[&k], (5, 500));
        assert_eq!(c.apply(at(8, 800))[&k], (8, 800));
        // The policy changed: its rules are new, their counters start again.
        assert_eq!(c.apply(at(1, 100))[&k], (9, 900));
        assert_eq!(c.apply(at(3, 300))[&k], (11, 1100));
    }

    #[test]
    fn timestamps_read_back() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_123);
        let text = crate::engine::state::rfc3339(t);
        assert_eq!(epoch_of(&text), Some(1_800_000_123));
        assert_eq!(epoch_of("2026-12-07T16:00:01Z"), Some(1_796_659_201));
        assert_eq!(epoch_of("yesterday"), None);
    }
}
