//! Flow records (issue 14): which rule decided each connection, just now.
//!
//! The kernel table reports (see `compile::flows`): denied packets and samples of untracked allowed
//! ones to an NFLOG group, rate-limited per rule; the first packet of every allowed connection to the
//! same group. The flows thread (this module) binds the group
//! and subscribes to conntrack's end-of-connection events; it maps each message's flow id back to its
//! rule through the generation in force when the packet was logged ([`gen`]), keeps the records in a
//! bounded table ([`table`]), logs each denied aggregate once per interval (`EVENT=flow_denied`), and
//! hands updates to whoever follows (`hostpolicyd flows --follow`). It never writes to the kernel's
//! tables and never blocks the writer loop: the loop only hands it each generation it applies.
//!
//! Losses are counted, not hidden: NFLOG sequence gaps (messages the kernel dropped because the daemon
//! was behind), conntrack overruns, and records dropped to keep the table's size
//! (`hostpolicyd_flow_records_dropped_total`).

pub mod gen;
pub mod record;
pub mod table;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use tracing::{info, warn};

use crate::compile::names;
use crate::netlink::conntrack::{self, Connection};
use crate::netlink::nflog::{self, ip_tuple, BindError, Nflog};
use crate::netlink::{messages, Delivery, Subscription};
use crate::ruleset::Ruleset;
use crate::settings::Flows as Settings;

pub use gen::{Generation, Generations};
pub use record::FlowRecord;
pub use table::{Counts, Table};

/// How many records a follower may have queued before it is dropped as too slow.
pub const FOLLOW_QUEUE: usize = 256;
/// Journal lines per interval at most; the rest are counted in one line.
pub const JOURNAL_LINES: usize = 200;
/// How long the thread waits before trying to bind a group that another program holds again.
pub const REBIND: Duration = Duration::from_secs(10);

/// The flows of the daemon, shared between the writer loop (generations), the flows thread (records)
/// and the control socket (`flows` requests).
#[derive(Clone)]
pub struct Flows {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    generations: Mutex<Generations>,
    table: Mutex<Table>,
    followers: Mutex<Vec<Follower>>,
    /// `active`, `off`, or why not.
    state: Mutex<String>,
}

struct Follower {
    tx: SyncSender<FlowRecord>,
    lagged: Arc<AtomicBool>,
}

/// A `flows --follow` client's end: records as they are updated, until the daemon drops it.
pub struct Following {
    pub rx: Receiver<FlowRecord>,
    /// Set when the daemon dropped the follower because it did not keep up.
    pub lagged: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Flows {
    /// The flows of `settings`, without a thread yet (tests, `--flow-records off`).
    pub fn new(settings: &Settings) -> Flows {
        let state = if settings.enabled { "starting" } else { "off" };
        Flows {
            shared: Arc::new(Shared {
                settings: settings.clone(),
                generations: Mutex::new(Generations::default()),
                table: Mutex::new(Table::new(settings.max_records)),
                followers: Mutex::new(Vec::new()),
                state: Mutex::new(state.into()),
            }),
        }
    }

    /// Starts the flows thread (when flow records are on).
    pub fn spawn(&self) -> std::io::Result<()> {
        if !self.shared.settings.enabled {
            return Ok(());
        }
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("flows".into())
            .spawn(move || run(&shared))?;
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.shared.settings.enabled
    }

    /// A generation the writer loop applied (or found in force at start).
    pub fn publish(&self, rs: &Ruleset, generation: u64, since: SystemTime) {
        if !self.enabled() {
            return;
        }
        let previous = lock(&self.shared.generations).latest().cloned();
        let g = Generation::after(previous.as_deref(), rs, generation, since);
        lock(&self.shared.generations).push(g);
    }

    /// The records, newest last.
    pub fn records(&self, denied: bool, limit: Option<usize>) -> Vec<FlowRecord> {
        lock(&self.shared.table).records(denied, limit)
    }

    pub fn counts(&self) -> Counts {
        lock(&self.shared.table).counts()
    }

    /// `active`, `off`, or why flow records are not collected.
    pub fn state(&self) -> String {
        lock(&self.shared.state).clone()
    }

    /// About how many bytes the table takes.
    pub fn table_bytes(&self) -> usize {
        lock(&self.shared.table).approx_bytes()
    }

    /// Follows the updates from now on.
    pub fn follow(&self) -> Following {
        let (tx, rx) = sync_channel(FOLLOW_QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut followers = lock(&self.shared.followers);
        followers.push(Follower {
            tx,
            lagged: lagged.clone(),
        });
        lock(&self.shared.table).set_following(true);
        Following { rx, lagged }
    }

    /// Feeds one NFLOG datagram (the thread does; tests too).
    fn datagram(&self, buf: &[u8], names: &mut Names, now: SystemTime) {
        let gens = lock(&self.shared.generations);
        let mut table = lock(&self.shared.table);
        for m in messages(buf) {
            let Some(p) = nflog::packet(&m) else {
                continue;
            };
            let (Some(id), Some((tuple, len))) =
                (names::flow_id_of_prefix(p.prefix), ip_tuple(p.payload))
            else {
                table.foreign();
                continue;
            };
            let logged = table::Logged {
                id,
                hook: p.hook,
                time: p.timestamp.unwrap_or(now),
                indev: p.indev.and_then(|i| names.name(i)),
                outdev: p.outdev.and_then(|i| names.name(i)),
                tuple,
                len,
                seq: p.seq,
            };
            table.logged(&gens, &logged);
        }
    }

    fn conntrack(&self, c: &Connection, now: SystemTime) {
        lock(&self.shared.table).connection(c, now);
    }

    /// Hands the updated records to the followers; drops those that do not keep up.
    fn feed_followers(&self) {
        let mut followers = lock(&self.shared.followers);
        if followers.is_empty() {
            return;
        }
        let updates = lock(&self.shared.table).take_updates();
        followers.retain(|f| {
            for r in &updates {
                match f.tx.try_send(r.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        f.lagged.store(true, Ordering::Relaxed);
                        return false;
                    }
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        });
        if followers.is_empty() {
            lock(&self.shared.table).set_following(false);
        }
    }

    /// Logs the aggregates of the interval to the journal.
    fn journal(&self) {
        let allowed = self.shared.settings.log_allowed;
        let logs = lock(&self.shared.table).to_log(allowed);
        let more = logs.len().saturating_sub(JOURNAL_LINES);
        for (r, packets) in logs.into_iter().take(JOURNAL_LINES) {
            journal_line(&r, packets);
        }
        if more > 0 {
            warn!(
                event = "flows_not_logged",
                count = more,
                "{more} more flow aggregates of the last interval were not logged (see `hostpolicyd flows`)"
            );
        }
    }
}

/// One flow aggregate in the journal: `EVENT=flow_denied` (or `flow_allowed`) with the fields of issue
/// 14; the stderr fallback prints them as `key=value`.
fn journal_line(r: &FlowRecord, packets: u64) {
    let d = &r.decided_by;
    let dport = r.dport.map(|p| p.to_string()).unwrap_or_default();
    // Counted from 1, as every output for people names rules (`ruleset::rule_name`).
    let rule = d.rule.map(|p| (p + 1).to_string()).unwrap_or_default();
    let line = d.line.map(|p| p.to_string()).unwrap_or_default();
    let text = r.to_string();
    let (proto, iface) = (r.proto.to_string(), r.interface.as_deref().unwrap_or(""));
    let hep = r.host_endpoint.as_deref().unwrap_or("");
    let policy = d.policy.as_deref().unwrap_or("");
    let tier = d.tier.as_deref().unwrap_or("");
    let file = d.file.as_deref().unwrap_or("");
    let event = if r.action == "deny" {
        "flow_denied"
    } else {
        "flow_allowed"
    };
    info!(
        event,
        src = r.src,
        dst = r.dst,
        proto,
        dport,
        iface,
        host_endpoint = hep,
        stage = r.stage,
        direction = r.direction,
        policy,
        tier,
        rule,
        file,
        line,
        kind = d.kind,
        packets,
        "{text}"
    );
}

/// Interface names by index, read again (at most once a second) when an index is new.
struct Names {
    by_index: HashMap<u32, std::sync::Arc<str>>,
    read_at: Option<Instant>,
}

impl Names {
    fn name(&mut self, index: u32) -> Option<Arc<str>> {
        if let Some(n) = self.by_index.get(&index) {
            return Some(n.clone());
        }
        if self
            .read_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        self.read_at = Some(Instant::now());
        if let Ok(links) = crate::host::iface::links() {
            self.by_index = links.into_iter().map(|(i, n)| (i, n.into())).collect();
        }
        self.by_index.get(&index).cloned()
    }
}

/// Turns on conntrack's per-connection counters in this network namespace (off by default; the
/// end-of-connection events carry packets and bytes only with them). Never turned off again: other
/// tools may rely on them.
fn conntrack_accounting() {
    const ACCT: &str = "/proc/sys/net/netfilter/nf_conntrack_acct";
    match std::fs::read_to_string(ACCT) {
        Ok(v) if v.trim() == "1" => {}
        _ => match std::fs::write(ACCT, "1") {
            Ok(()) => info!(
                event = "conntrack_accounting",
                "turned on net.netfilter.nf_conntrack_acct: allowed flows get packet and byte counts"
            ),
            Err(e) => warn!(
                event = "conntrack_accounting",
                "cannot turn on net.netfilter.nf_conntrack_acct ({e}): allowed flows count their first packet only"
            ),
        },
    }
}

fn set_state(shared: &Shared, s: String) {
    *lock(&shared.state) = s;
}

/// The flows thread: binds the NFLOG group (again and again while another program holds it), reads
/// it and the conntrack events until the process ends.
fn run(shared: &Arc<Shared>) {
    let flows = Flows {
        shared: shared.clone(),
    };
    let s = shared.settings.clone();
    conntrack_accounting();
    let mut names = Names {
        by_index: HashMap::new(),
        read_at: None,
    };
    let mut ct = match conntrack::subscribe_destroy(8 << 20) {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(
                event = "flows_degraded",
                "cannot subscribe to conntrack events ({e}): allowed flows count their first packet only"
            );
            None
        }
    };
    let mut warned = false;
    loop {
        let nflog = match Nflog::bind(&nflog::Config::new(s.nflog_group)) {
            Ok(n) => n,
            Err(e) => {
                let why = match &e {
                    BindError::InUse(_) => format!(
                        "{e}; set another group with --flows-nflog-group (retrying every {} s)",
                        REBIND.as_secs()
                    ),
                    BindError::Io(_) => format!("cannot bind NFLOG group {}: {e}", s.nflog_group),
                };
                if !warned {
                    warn!(
                        event = "flows_unavailable",
                        group = s.nflog_group,
                        "flow records are off: {why}; the firewall enforces as usual"
                    );
                    warned = true;
                }
                set_state(shared, format!("unavailable: {why}"));
                std::thread::sleep(REBIND);
                continue;
            }
        };
        if warned {
            info!(
                event = "flows_available",
                group = s.nflog_group,
                "NFLOG group {} bound: flow records are on",
                s.nflog_group
            );
        }
        set_state(shared, "active".into());
        serve(&flows, nflog, ct.as_mut(), &mut names);
        warned = false;
    }
}

/// The shortest time between two reads of the sockets while reports keep coming: a busy node's reports
/// are read in batches, one wake-up per batch rather than one per connection (conntrack sends each
/// event on its own), and the kernel queues them meanwhile (the 4 MiB NFLOG and 8 MiB conntrack
/// receive buffers hold far more than this many milliseconds of a flood). A quiet node's first report
/// is read at once.
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// Datagrams read per wake-up at most, from each socket, so that the other one and the ticks get their
/// turn: NFLOG's carry up to 32 reports each; conntrack's one event each (at one wake-up per
/// [`BATCH_WAIT`], 200,000 events per second).
const NFLOG_BUDGET: usize = 512;
const CONNTRACK_BUDGET: usize = 4096;

/// Reads until the NFLOG socket fails.
fn serve(flows: &Flows, mut nflog: Nflog, mut ct: Option<&mut Subscription>, names: &mut Names) {
    let s = &flows.shared.settings;
    let mut next_log = Instant::now() + s.interval;
    loop {
        let now = Instant::now();
        let wait = next_log.saturating_duration_since(now);
        let wait = wait.min(Duration::from_millis(200));
        let (nl_ready, ct_ready) = {
            let nfd = nflog.as_fd();
            let mut fds = vec![PollFd::new(&nfd, PollFlags::IN)];
            let cfd = ct.as_ref().map(|c| c.as_fd());
            if let Some(c) = &cfd {
                fds.push(PollFd::new(c, PollFlags::IN));
            }
            let timeout = Timespec {
                tv_sec: wait.as_secs() as i64,
                tv_nsec: wait.subsec_nanos().into(),
            };
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    warn!(event = "flows_degraded", "poll: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            (
                !fds[0].revents().is_empty(),
                fds.get(1).is_some_and(|f| !f.revents().is_empty()),
            )
        };
        let wall = SystemTime::now();
        if nl_ready {
            // A budget per wake-up, so that the conntrack events and the ticks get their turn.
            for _ in 0..NFLOG_BUDGET {
                match nflog.recv(Some(Duration::ZERO)) {
                    Ok(Delivery::Data(buf)) => flows.datagram(buf, names, wall),
                    Ok(Delivery::Lost) => lock(&flows.shared.table).nflog_overrun(),
                    Ok(Delivery::Nothing) => break,
                    Err(e) => {
                        warn!(
                            event = "flows_degraded",
                            "reading NFLOG group {}: {e}; binding it again",
                            nflog.group()
                        );
                        return;
                    }
                }
            }
        }
        if ct_ready {
            if let Some(sub) = ct.as_deref_mut() {
                for _ in 0..CONNTRACK_BUDGET {
                    match sub.recv(Some(Duration::ZERO)) {
                        Ok(Delivery::Data(buf)) => {
                            for m in messages(buf) {
                                if let Some(c) = conntrack::connection(&m) {
                                    flows.conntrack(&c, wall);
                                }
                            }
                        }
                        Ok(Delivery::Lost) => lock(&flows.shared.table).conntrack_overrun(),
                        Ok(Delivery::Nothing) | Err(_) => break,
                    }
                }
            }
        }
        flows.feed_followers();
        let now = Instant::now();
        if now >= next_log {
            flows.journal();
            next_log = now + s.interval;
        }
        if nl_ready || ct_ready {
            // Let the next reports gather (see BATCH_WAIT).
            std::thread::sleep(BATCH_WAIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_that_does_not_read_is_dropped_not_waited_for() {
        let flows = Flows::new(&Settings::default());
        let slow = flows.follow();
        let fast = flows.follow();
        let mut g = Generation {
            number: 1,
            since: Some(SystemTime::UNIX_EPOCH),
            ..Generation::default()
        };
        g.ids.insert(
            1,
            Arc::new(gen::FlowOrigin {
                kind: crate::ruleset::Kind::NoPolicy,
                tier: None,
                policy: None,
                staged: false,
                shadow: false,
                direction: Some(crate::ruleset::Dir::Ingress),
                rule: None,
                allows: false,
                stage: Some(crate::ruleset::Stage::Normal),
                host_endpoint: Some("h".into()),
                file: None,
                line: None,
            }),
        );
        lock(&flows.shared.generations).push(g);
        let gens = Generations::default();
        drop(gens);
        for i in 0..(FOLLOW_QUEUE as u32 + 10) {
            let p = table::Logged {
                id: 1,
                hook: crate::netlink::NF_INET_LOCAL_IN,
                time: SystemTime::UNIX_EPOCH + Duration::from_secs(5),
                indev: Some("eth0".into()),
                outdev: None,
                tuple: nflog::Tuple {
                    proto: 17,
                    src: std::net::IpAddr::from([192, 0, 2, (i % 250) as u8]),
                    dst: "192.0.2.1".parse().unwrap(),
                    sport: 1,
                    dport: (i / 250) as u16 + 1,
                },
                len: 28,
                seq: Some(i),
            };
            {
                let gens = lock(&flows.shared.generations);
                lock(&flows.shared.table).logged(&gens, &p);
            }
            flows.feed_followers();
            // The fast one reads everything as it comes.
            while fast.rx.try_recv().is_ok() {}
        }
        assert!(
            slow.lagged.load(Ordering::Relaxed),
            "the slow follower was dropped"
        );
        assert!(!fast.lagged.load(Ordering::Relaxed));
        assert_eq!(lock(&flows.shared.followers).len(), 1);
        // What the slow one had queued is still readable, then the channel ends.
        let queued: Vec<FlowRecord> = slow.rx.iter().collect();
        assert_eq!(queued.len(), FOLLOW_QUEUE);
    }
}
