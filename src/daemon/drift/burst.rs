//! Bursts of nf_tables notifications about our table, reduced to what the writer loop needs to know
//! (see the [module documentation](super)).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::daemon::nftmon::{self, Note, What};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
