//! Drift: someone else deleted, flushed or changed our table (`nft flush ruleset` from nftables.service, a
//! restarted Docker, an admin's `nft delete table`). The daemon puts the last good ruleset back.
//!
//! How it works, from the kernel to the writer loop:
//!
//! 1. The drift thread ([`spawn`]) listens to nf_tables notifications ([`nftmon::Monitor`]) and keeps
//!    only those about our table (family inet, our name), plus the deletion of other tables in the same
//!    transaction (`flush ruleset`) and the `NEWGEN` that names the process of each transaction. A
//!    foreign table's changes are not even looked at.
//! 2. A burst is collected ([`Collector`]) until the notifications stop for [`QUIET`] (capped at
//!    [`CAP`]) and handed to the writer loop as one [`Burst`]: how many notifications came from our own
//!    sockets and how many from others (by netlink port id, see `nftmon`), who the others were, whether
//!    the kernel dropped notifications.
//! 3. The writer loop (the only writer) compares the kernel with what it applied: first the content hash
//!    ([`crate::nft::Dataplane::table_comment`]), then, unless the burst was only our own writes, a
//!    fingerprint of the table ([`nftmon::fingerprint`]) against the [`Expectation`] recorded right after
//!    its own last write ([`diff`]). Only a difference is drift: a write attributed to someone else that
//!    left the table as we wrote it changes nothing, so a wrong attribution can never start a repair loop.
//! 4. A repair re-applies the last good ruleset through the dataplane (the same atomic swap as any
//!    apply), then reads the table back: what still differs from the expectation (an object the
//!    dataplane does not manage, say) makes the repair a failure, retried later. The expectation is not
//!    re-read from the kernel after a repair, so such a leftover is never taken for our own. Repairs run
//!    at once for the first [`Limiter::FREE`] of a streak, then with an exponential backoff up to
//!    [`Limiter::MAX`] against a persistent adversary; the streak is forgotten after [`Limiter::RESET`]
//!    without a repair.
//!
//! Compared: the table's content hash, its chains (hook, priority, policy, the rules in order), its sets
//! and maps (definition, elements); not handles (a table re-created with the same content is the same),
//! counters, or stateful objects and flowtables (hostpolicyd writes none, filters with none, and its
//! apply would not remove one someone else added).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::nftmon::{self, Note, Received, SetPrint, TablePrint, What};
use super::watch::Debouncer;
use super::Event;
use crate::ruleset::Ruleset;

/// Quiet period after the last notification about our table before the burst is examined.
pub const QUIET: Duration = Duration::from_millis(100);
/// Longest wait after the first notification of a burst (a table changed without pause is still repaired).
pub const CAP: Duration = Duration::from_millis(500);
/// At most this many writers are named per drift (a persistent adversary runs a new process each time).
pub const MAX_WRITERS: usize = 8;

/// Adds writers to `set`, up to [`MAX_WRITERS`].
pub fn add_writers(set: &mut BTreeSet<String>, more: impl IntoIterator<Item = String>) {
    for w in more {
        if set.len() >= MAX_WRITERS {
            return;
        }
        set.insert(w);
    }
}

/// The notifications about our table since the last burst, reduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// When the first notification of the burst arrived (repair latency is measured from here).
    pub since: Instant,
    /// Notifications about our table from our own sockets.
    pub own: usize,
    /// Notifications about our table from other sockets.
    pub foreign: usize,
    /// The processes of the foreign transactions that touched our table: `nft (pid 1234)`.
    pub writers: BTreeSet<String>,
    /// Other tables deleted by those transactions (`nft flush ruleset` deletes every table).
    pub other_tables_deleted: usize,
    /// The kernel dropped notifications, or the subscription was renewed: anything may have changed.
    pub lost: bool,
}

impl Burst {
    fn new(since: Instant) -> Burst {
        Burst {
            since,
            own: 0,
            foreign: 0,
            writers: BTreeSet::new(),
            other_tables_deleted: 0,
            lost: false,
        }
    }

    /// Nothing known: the table must be compared (a look to retry, a renewed subscription).
    pub fn unknown(now: Instant) -> Burst {
        Burst {
            lost: true,
            ..Burst::new(now)
        }
    }

    /// Only notifications of our own writes: the kernel's content hash is enough to confirm.
    pub fn only_own(&self) -> bool {
        self.foreign == 0 && !self.lost
    }

    /// Two bursts as one (queued while the writer loop was busy).
    pub fn merge(mut self, other: Burst) -> Burst {
        self.since = self.since.min(other.since);
        self.own += other.own;
        self.foreign += other.foreign;
        add_writers(&mut self.writers, other.writers);
        self.other_tables_deleted += other.other_tables_deleted;
        self.lost |= other.lost;
        self
    }
}

/// Turns notifications into bursts. Pure: the caller passes the time.
#[derive(Debug)]
pub struct Collector {
    table: String,
    own_port: u32,
    burst: Option<Burst>,
    /// Foreign ports whose current transaction touched our table (until its NEWGEN).
    touching: BTreeSet<u32>,
    /// Other tables deleted per foreign port in its current transaction.
    deleted_elsewhere: BTreeMap<u32, usize>,
}

impl Collector {
    pub fn new(table: &str, own_port: u32) -> Collector {
        Collector {
            table: table.to_string(),
            own_port,
            burst: None,
            touching: BTreeSet::new(),
            deleted_elsewhere: BTreeMap::new(),
        }
    }

    /// Records one notification; true when it belongs to a burst (the quiet period starts again).
    pub fn note(&mut self, note: &Note, now: Instant) -> bool {
        match note {
            Note::Object {
                what,
                deleted,
                family,
                table,
                port,
            } => {
                let ours = *family == nftmon::FAMILY_INET && *table == self.table;
                if !ours {
                    if *what == What::Table && *deleted && *port != self.own_port {
                        *self.deleted_elsewhere.entry(*port).or_default() += 1;
                    }
                    return false;
                }
                let burst = self.burst.get_or_insert_with(|| Burst::new(now));
                if *port == self.own_port {
                    burst.own += 1;
                } else {
                    burst.foreign += 1;
                    self.touching.insert(*port);
                }
                true
            }
            Note::Gen { port, pid, comm } => {
                let elsewhere = self.deleted_elsewhere.remove(port).unwrap_or(0);
                if !self.touching.remove(port) {
                    return false;
                }
                let burst = self.burst.get_or_insert_with(|| Burst::new(now));
                let writer = if comm.is_empty() {
                    format!("pid {pid}")
                } else {
                    format!("{comm} (pid {pid})")
                };
                add_writers(&mut burst.writers, [writer]);
                burst.other_tables_deleted += elsewhere;
                true
            }
        }
    }

    /// The kernel dropped notifications: whatever happened must be checked.
    pub fn lost(&mut self, now: Instant) {
        self.burst.get_or_insert_with(|| Burst::new(now)).lost = true;
    }

    pub fn take(&mut self) -> Option<Burst> {
        self.burst.take()
    }
}

/// Starts the drift thread for `table`. It runs as long as the writer loop listens.
pub fn spawn(table: String, tx: Sender<Event>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("drift".into())
        .spawn(move || watch(&table, &tx))?;
    Ok(())
}

fn watch(table: &str, tx: &Sender<Event>) {
    let mut first = true;
    loop {
        let mut monitor = match nftmon::Monitor::subscribe() {
            Ok(m) => m,
            Err(e) => {
                let msg = format!("cannot subscribe to nftables changes: {e}");
                warn!(event = "drift_unwatched", "{msg}; retrying in 5 s");
                if tx.send(Event::DriftWatch(Err(msg))).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        if tx.send(Event::DriftWatch(Ok(()))).is_err() {
            return;
        }
        let mut collector = Collector::new(table, nftmon::own_port());
        let mut debounce = Debouncer::new(QUIET, CAP);
        if !first {
            // Changes made while nobody listened are unknown: compare the table once.
            collector.lost(Instant::now());
            debounce.touch(Instant::now());
        }
        first = false;
        loop {
            let timeout = debounce
                .deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let received = monitor.recv(timeout);
            let now = Instant::now();
            match received {
                Ok(Received::Notes(notes)) => {
                    for n in &notes {
                        if collector.note(n, now) {
                            debounce.touch(now);
                        }
                    }
                }
                Ok(Received::Lost) => {
                    debug!(
                        event = "drift_notifications_lost",
                        "nftables notifications were dropped; the table will be compared"
                    );
                    collector.lost(now);
                    debounce.touch(now);
                }
                Ok(Received::Nothing) => {}
                Err(e) => {
                    warn!(
                        event = "drift_unwatched",
                        "nftables monitor: {e}; subscribing again"
                    );
                    if let Some(b) = collector.take() {
                        let _ = tx.send(Event::Drift(b));
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    break;
                }
            }
            if debounce.due(Instant::now()) {
                debounce.clear();
                if let Some(b) = collector.take() {
                    if tx.send(Event::Drift(b)).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// What the kernel should hold, and how it differs

/// The names of the chains (with their rule counts) and of the named sets and maps of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub chains: BTreeMap<String, usize>,
    pub sets: BTreeSet<String>,
}

impl Layout {
    pub fn of_ruleset(r: &Ruleset) -> Layout {
        Layout {
            chains: r
                .chains
                .iter()
                .map(|c| (c.name.clone(), c.rules.len()))
                .collect(),
            sets: r
                .sets
                .iter()
                .map(|s| s.name.clone())
                .chain(r.maps.iter().map(|m| m.name.clone()))
                .collect(),
        }
    }

    pub fn of_print(p: &TablePrint) -> Layout {
        Layout {
            chains: p
                .chains
                .iter()
                .map(|(n, c)| (n.clone(), c.rules.len()))
                .collect(),
            sets: p
                .sets
                .iter()
                .filter(|(_, s)| !s.anonymous)
                .map(|(n, _)| n.clone())
                .collect(),
        }
    }
}

/// What the kernel must hold while we guard our table: the content hash, the layout, and the fingerprint
/// read right after our own last write (None when it could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub hash: String,
    pub layout: Layout,
    pub baseline: Option<TablePrint>,
    /// A digest of each set of the ruleset, as compiled: which sets the next write leaves unchanged.
    pub sets: BTreeMap<String, u64>,
}

impl Expectation {
    /// The layout is the ruleset's chains (with their rule counts) and sets and maps, plus whatever else
    /// the kernel held right after our own write (a marker the dataplane adds, such as an empty chain
    /// carrying the content hash). Without a fingerprint it is the ruleset's alone. When the kernel right
    /// after our own write does not hold the ruleset's chains, rule counts and sets, either the dataplane
    /// lays the table out differently or someone raced our write; the kernel's own layout is expected
    /// then (never a repair loop against ourselves), and the second value is false so that the caller
    /// can say so.
    pub fn new(hash: &str, ruleset: &Ruleset, kernel: Option<TablePrint>) -> (Expectation, bool) {
        Expectation::with_sets(hash, ruleset, kernel, set_digests(ruleset))
    }

    /// [`Expectation::new`], with the ruleset's [`set_digests`] already made.
    pub fn with_sets(
        hash: &str,
        ruleset: &Ruleset,
        kernel: Option<TablePrint>,
        sets: BTreeMap<String, u64>,
    ) -> (Expectation, bool) {
        let ir = Layout::of_ruleset(ruleset);
        let (layout, fits) = match &kernel {
            None => (ir, true),
            Some(p) => {
                let k = Layout::of_print(p);
                let fits = ir.chains.iter().all(|(c, n)| k.chains.get(c) == Some(n))
                    && ir.sets.iter().all(|s| k.sets.contains(s));
                if fits {
                    let mut layout = k;
                    // Counts and names as the ruleset says; extras as the kernel had them.
                    layout.chains.extend(ir.chains);
                    (layout, true)
                } else {
                    (k, false)
                }
            }
        };
        (
            Expectation {
                hash: hash.to_string(),
                layout,
                baseline: kernel,
                sets,
            },
            fits,
        )
    }

    /// What this expectation's baseline says about the sets the next ruleset (its [`set_digests`]) has
    /// unchanged (same name, same type and elements): their kernel elements need not be read again
    /// after writing it.
    pub fn unchanged_sets(&self, next: &BTreeMap<String, u64>) -> BTreeMap<String, SetPrint> {
        let Some(base) = &self.baseline else {
            return BTreeMap::new();
        };
        next.iter()
            .filter(|(name, d)| self.sets.get(*name) == Some(*d))
            .filter_map(|(name, _)| base.sets.get(name).map(|p| (name.clone(), p.clone())))
            .collect()
    }
}

/// A digest of each set of `r` (name, type and elements), by name.
pub fn set_digests(r: &Ruleset) -> BTreeMap<String, u64> {
    use std::hash::{Hash, Hasher};
    r.sets
        .iter()
        .map(|s| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            s.hash(&mut h);
            (s.name.clone(), h.finish())
        })
        .collect()
}

/// How the kernel's table differs from the expectation, for people; empty when it does not.
pub fn diff(exp: &Expectation, now: &TablePrint) -> Vec<String> {
    let mut out = Vec::new();
    let base = exp.baseline.as_ref();
    for (name, &want) in &exp.layout.chains {
        let Some(c) = now.chains.get(name) else {
            out.push(format!("chain {name} deleted"));
            continue;
        };
        let have = c.rules.len();
        if have > want {
            out.push(format!(
                "{} rule{} added to chain {name}",
                have - want,
                plural(have - want)
            ));
        } else if have < want {
            out.push(format!(
                "{} rule{} removed from chain {name}",
                want - have,
                plural(want - have)
            ));
        } else if let Some(b) = base.and_then(|b| b.chains.get(name)) {
            if b.rules != c.rules {
                out.push(format!("rules changed in chain {name}"));
            }
            if b.def != c.def {
                out.push(format!("chain {name} redefined (hook, priority or policy)"));
            }
        }
    }
    for name in now.chains.keys() {
        if !exp.layout.chains.contains_key(name) {
            out.push(format!("chain {name} added"));
        }
    }
    for name in &exp.layout.sets {
        let Some(s) = now.sets.get(name) else {
            out.push(format!("set {name} deleted"));
            continue;
        };
        if let Some(b) = base.and_then(|b| b.sets.get(name)) {
            if b.def != s.def {
                out.push(format!("set {name} redefined"));
            } else if (b.elements, b.content) != (s.elements, s.content) {
                out.push(format!("elements changed in set {name}"));
            }
        }
    }
    for (name, s) in &now.sets {
        if !s.anonymous && !exp.layout.sets.contains(name) {
            out.push(format!("set {name} added"));
        }
    }
    if let Some(b) = base {
        let anon = |p: &TablePrint| -> Vec<(String, SetSummary)> {
            p.sets
                .iter()
                .filter(|(_, s)| s.anonymous)
                .map(|(n, s)| (n.clone(), (s.def, s.elements, s.content)))
                .collect()
        };
        if anon(b) != anon(now) && out.is_empty() {
            out.push("anonymous sets changed".to_string());
        }
    }
    out
}

type SetSummary = (u64, usize, u64);

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// At most `max` items, then "and N more".
pub fn summarize(changes: &[String], max: usize) -> String {
    if changes.len() <= max {
        return changes.join("; ");
    }
    format!(
        "{}; and {} more",
        changes[..max].join("; "),
        changes.len() - max
    )
}

// ---------------------------------------------------------------------------------------------------
// Rate limit

/// When repairs may run: the first [`Limiter::FREE`] of a streak at once, then after 1 s, 2 s, 4 s ...
/// up to [`Limiter::MAX`] since the previous one. A streak ends after [`Limiter::RESET`] without a
/// repair. Pure: the caller passes the time.
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    streak: u32,
    last: Option<Instant>,
}

impl Limiter {
    pub const FREE: u32 = 5;
    pub const FIRST_DELAY: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(30);
    pub const RESET: Duration = Duration::from_secs(60);

    fn streak_at(&self, now: Instant) -> u32 {
        match self.last {
            Some(l) if now.saturating_duration_since(l) < Self::RESET => self.streak,
            _ => 0,
        }
    }

    /// The earliest time the next repair may run (`now` when it may run at once).
    pub fn next_allowed(&self, now: Instant) -> Instant {
        let streak = self.streak_at(now);
        match self.last {
            Some(last) if streak >= Self::FREE => {
                let exp = (streak - Self::FREE).min(16);
                let delay = (Self::FIRST_DELAY * 2u32.pow(exp)).min(Self::MAX);
                (last + delay).max(now)
            }
            _ => now,
        }
    }

    /// A repair ran (or was tried) at `at`.
    pub fn record(&mut self, at: Instant) {
        self.streak = self.streak_at(at) + 1;
        self.last = Some(at);
    }

    /// Repairs in the current streak.
    pub fn streak(&self, now: Instant) -> u32 {
        self.streak_at(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::nftmon::{ChainPrint, SetPrint};

    fn obj(what: What, deleted: bool, table: &str, port: u32) -> Note {
        Note::Object {
            what,
            deleted,
            family: nftmon::FAMILY_INET,
            table: table.into(),
            port,
        }
    }

    fn gen(port: u32, comm: &str) -> Note {
        Note::Gen {
            port,
            pid: port,
            comm: comm.into(),
        }
    }

    #[test]
    fn own_writes_foreign_writes_and_other_tables() {
        let t0 = Instant::now();
        let mut c = Collector::new("hostpolicy", 100);
        // Our own apply.
        assert!(c.note(&obj(What::Table, true, "hostpolicy", 100), t0));
        assert!(c.note(&obj(What::Rule, false, "hostpolicy", 100), t0));
        assert!(
            !c.note(&gen(100, "hostpolicyd"), t0),
            "our own NEWGEN adds nothing"
        );
        let b = c.take().unwrap();
        assert_eq!((b.own, b.foreign), (2, 0));
        assert!(b.only_own());
        assert!(c.take().is_none());

        // A foreign table: nothing at all.
        assert!(!c.note(&obj(What::Table, false, "docker", 7), t0));
        assert!(!c.note(&obj(What::Chain, false, "docker", 7), t0));
        assert!(!c.note(&gen(7, "nft"), t0));
        assert!(c.take().is_none(), "a foreign table is left alone");
        // Same name, other family: not ours either.
        assert!(!c.note(
            &Note::Object {
                what: What::Table,
                deleted: true,
                family: 2,
                table: "hostpolicy".into(),
                port: 7
            },
            t0
        ));
        assert!(c.take().is_none());

        // `nft flush ruleset`: other tables and ours deleted in one transaction.
        assert!(!c.note(&obj(What::Table, true, "docker", 9), t0));
        assert!(c.note(&obj(What::Rule, true, "hostpolicy", 9), t0));
        assert!(c.note(&obj(What::Table, true, "hostpolicy", 9), t0));
        assert!(!c.note(&obj(What::Table, true, "libvirt", 9), t0));
        assert!(c.note(&gen(9, "nft"), t0));
        let b = c.take().unwrap();
        assert_eq!(b.foreign, 2);
        assert_eq!(b.other_tables_deleted, 2);
        assert_eq!(b.writers.iter().collect::<Vec<_>>(), ["nft (pid 9)"]);
        assert!(!b.only_own());

        c.lost(t0);
        assert!(c.take().unwrap().lost);
    }

    fn print(chains: &[(&str, &[u64])], sets: &[(&str, u64)]) -> TablePrint {
        TablePrint {
            chains: chains
                .iter()
                .map(|(n, r)| {
                    (
                        n.to_string(),
                        ChainPrint {
                            def: 1,
                            rules: r.to_vec(),
                        },
                    )
                })
                .collect(),
            sets: sets
                .iter()
                .map(|(n, c)| {
                    (
                        n.to_string(),
                        SetPrint {
                            anonymous: n.starts_with("__"),
                            def: 1,
                            elements: 2,
                            content: *c,
                        },
                    )
                })
                .collect(),
        }
    }

    fn ruleset() -> Ruleset {
        use crate::ruleset::{Chain, Rule, Set, SetType, Verdict};
        let rule = Rule {
            verdict: Some(Verdict::Accept),
            ..Rule::default()
        };
        Ruleset {
            table: "hostpolicy".into(),
            comment: String::new(),
            sets: vec![Set {
                name: "s".into(),
                set_type: SetType::InetService,
                elements: vec![],
            }],
            maps: vec![],
            chains: vec![
                Chain {
                    name: "in".into(),
                    base: None,
                    rules: vec![rule.clone(), rule],
                },
                Chain {
                    name: "x".into(),
                    base: None,
                    rules: vec![],
                },
            ],
            origins: Default::default(),
        }
    }

    #[test]
    fn only_sets_the_next_ruleset_leaves_as_they_were_are_known() {
        use crate::ruleset::{Set, SetElement, SetType};
        let mut r1 = ruleset();
        r1.sets.push(Set {
            name: "t".into(),
            set_type: SetType::InetService,
            elements: vec![SetElement::Ports(22, 22)],
        });
        let kernel = print(
            &[("in", &[1, 2]), ("x", &[]), ("hostpolicyd-hash", &[])],
            &[("s", 5), ("t", 6)],
        );
        let (exp, _) = Expectation::new("h", &r1, Some(kernel.clone()));
        // Nothing changed: both sets are known, as the kernel held them.
        assert_eq!(exp.unchanged_sets(&set_digests(&r1)), kernel.sets);
        // `t` gets another element and `u` is new: only `s` is known.
        let mut r2 = r1.clone();
        r2.sets[1].elements.push(SetElement::Ports(80, 80));
        r2.sets.push(Set {
            name: "u".into(),
            set_type: SetType::InetService,
            elements: vec![],
        });
        let known = exp.unchanged_sets(&set_digests(&r2));
        assert_eq!(known.keys().collect::<Vec<_>>(), ["s"]);
        assert_eq!(known["s"], kernel.sets["s"]);
        // Without a baseline read from the kernel there is nothing to reuse.
        let (blind, _) = Expectation::new("h", &r1, None);
        assert!(blind.unchanged_sets(&set_digests(&r1)).is_empty());
    }

    #[test]
    fn differences_are_named() {
        let kernel = print(
            &[("in", &[1, 2]), ("x", &[]), ("hostpolicyd-hash", &[])],
            &[("s", 5)],
        );
        let (exp, fits) = Expectation::new("h", &ruleset(), Some(kernel.clone()));
        assert!(fits);
        assert!(
            exp.layout.chains.contains_key("hostpolicyd-hash"),
            "an extra object present right after our write is part of the layout"
        );
        assert_eq!(diff(&exp, &kernel), Vec::<String>::new());

        let mut k = kernel.clone();
        k.chains.get_mut("in").unwrap().rules.insert(0, 9);
        assert_eq!(diff(&exp, &k), ["1 rule added to chain in"]);
        let mut k = kernel.clone();
        k.chains.get_mut("in").unwrap().rules[1] = 9;
        assert_eq!(diff(&exp, &k), ["rules changed in chain in"]);
        let mut k = kernel.clone();
        k.chains.remove("x");
        k.chains.insert("intruder".into(), ChainPrint::default());
        assert_eq!(diff(&exp, &k), ["chain x deleted", "chain intruder added"]);
        let mut k = kernel.clone();
        k.sets.get_mut("s").unwrap().content = 6;
        assert_eq!(diff(&exp, &k), ["elements changed in set s"]);
        let mut k = kernel.clone();
        k.sets.clear();
        assert_eq!(diff(&exp, &k), ["set s deleted"]);
        let mut k = kernel.clone();
        k.chains.get_mut("in").unwrap().rules.clear();
        assert_eq!(diff(&exp, &k), ["2 rules removed from chain in"]);
    }

    #[test]
    fn a_kernel_that_does_not_fit_the_ruleset_is_its_own_layout() {
        // Right after our own write the kernel already held an extra rule (someone raced us, or the
        // dataplane lays the table out differently): the kernel's layout is expected, not the ruleset's.
        let kernel = print(&[("in", &[1, 2, 3]), ("x", &[])], &[("s", 5)]);
        let (exp, fits) = Expectation::new("h", &ruleset(), Some(kernel.clone()));
        assert!(!fits);
        assert_eq!(diff(&exp, &kernel), Vec::<String>::new());
        // Without a fingerprint, the ruleset alone.
        let (exp, fits) = Expectation::new("h", &ruleset(), None);
        assert!(fits);
        assert_eq!(
            diff(&exp, &print(&[("in", &[1, 2, 3]), ("x", &[])], &[("s", 5)])),
            ["1 rule added to chain in"]
        );
    }

    #[test]
    fn summaries_are_capped() {
        let c: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
        assert_eq!(summarize(&c, 5), "c0; c1; c2; c3; c4");
        assert_eq!(summarize(&c, 2), "c0; c1; and 3 more");
    }

    #[test]
    fn repairs_back_off_against_a_persistent_adversary() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        let mut t = t0;
        for _ in 0..Limiter::FREE {
            assert_eq!(l.next_allowed(t), t, "the first repairs run at once");
            l.record(t);
            t += Duration::from_millis(50);
        }
        let mut delays = Vec::new();
        for _ in 0..8 {
            let at = l.next_allowed(t);
            delays.push(at.duration_since(t).as_millis().div_ceil(1000) as u64);
            l.record(at);
            t = at + Duration::from_millis(10);
        }
        // 1 s after the last repair, then doubling up to 30 s (the 50 ms steps round up).
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        // Quiet for a minute: the streak is over.
        let later = t + Limiter::RESET;
        assert_eq!(l.next_allowed(later), later);
        assert_eq!(l.streak(later), 0);
        l.record(later);
        assert_eq!(l.streak(later), 1);
    }
}
