//! The flows table: records aggregated per (action, stage, direction, interface, protocol, source,
//! destination, destination port), bounded (the least recently updated record goes first, and counts
//! as dropped), mapped back to the configuration through the generation that decided each packet.
//!
//! Pure: it is fed what the kernel said ([`Logged`], [`Connection`]) with the time and the interface
//! names already known, and answers with [`FlowRecord`]s.
//!
//! - A **denied** packet (or an untracked allowed one, sampled) adds one packet and its length.
//! - The first packet of an **allowed** connection adds one packet and its length and opens the
//!   connection; its end (conntrack's DESTROY) or a dump of our connections replaces that with the
//!   connection's counters, both directions. A connection older than the daemon is not known.
//! - A **would-be verdict** of the staged evaluation (a shadow rule's message, which comes before the
//!   enforced rule's for the same packet) is kept per flow without the action and shows as `pending`
//!   in the records of that flow.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::gen::{FlowOrigin, Generations};
use super::record::{Decider, FlowRecord, Pending, Proto};
use crate::netlink::conntrack::{Connection, Event};
use crate::netlink::nflog::{has_ports, Tuple};
use crate::netlink::{NF_INET_FORWARD, NF_INET_PRE_ROUTING};
use crate::ruleset::{Dir, Kind, Stage};

/// A packet the kernel logged, with its interfaces named.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The flow id of the rule that logged it.
    pub id: u64,
    pub hook: u8,
    pub time: SystemTime,
    pub indev: Option<Arc<str>>,
    pub outdev: Option<Arc<str>>,
    pub tuple: Tuple,
    pub len: u32,
    pub seq: Option<u32>,
}

/// What identifies a flow record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub allow: bool,
    pub stage: Stage,
    pub direction: Dir,
    pub interface: Option<Arc<str>>,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: Option<u16>,
}

/// The same without the action: what the staged evaluation's verdict is kept by.
type FlowOf = (
    Stage,
    Dir,
    Option<Arc<str>>,
    u8,
    IpAddr,
    IpAddr,
    Option<u16>,
);

impl Key {
    fn flow(&self) -> FlowOf {
        (
            self.stage,
            self.direction,
            self.interface.clone(),
            self.proto,
            self.src,
            self.dst,
            self.dport,
        )
    }
}

#[derive(Debug, Clone)]
struct Record {
    first_seen: SystemTime,
    last_seen: SystemTime,
    packets: u64,
    bytes: u64,
    decided_by: Arc<FlowOrigin>,
    generation: u64,
    host_endpoint: Option<Arc<str>>,
    /// Packets since the last journal line.
    unlogged: u64,
}

#[derive(Debug, Clone)]
struct Open {
    keys: Vec<Key>,
    packets: u64,
    bytes: u64,
}

/// A map that keeps at most `cap` entries, dropping the least recently touched. The order is an
/// append-only queue of (tick, key): a touch appends, and an entry whose tick is no longer its key's is
/// stale, skipped when evicting and swept out when the queue grows past twice the map (amortised O(1)
/// per touch, no tree to rebalance on the hot path).
#[derive(Debug)]
struct Lru<K, V> {
    map: HashMap<K, (V, u64)>,
    order: VecDeque<(u64, K)>,
    next: u64,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    fn new(cap: usize) -> Self {
        Lru {
            map: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            cap: cap.max(1),
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(v, _)| v)
    }

    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(v, _)| v)
    }

    fn current(&self, tick: u64, k: &K) -> bool {
        self.map.get(k).is_some_and(|(_, t)| *t == tick)
    }

    /// The entry of `k`, made with `make` if missing, touched; and how many entries that dropped.
    fn touch(&mut self, k: &K, make: impl FnOnce() -> V) -> (&mut V, u64) {
        self.next += 1;
        let tick = self.next;
        let mut dropped = 0;
        match self.map.get_mut(k) {
            Some((_, t)) => *t = tick,
            None => {
                while self.map.len() >= self.cap {
                    let Some((t, oldest)) = self.order.pop_front() else {
                        break;
                    };
                    if self.current(t, &oldest) {
                        self.map.remove(&oldest);
                        dropped += 1;
                    }
                }
                self.map.insert(k.clone(), (make(), tick));
            }
        }
        self.order.push_back((tick, k.clone()));
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(t, k)| map.get(k).is_some_and(|(_, tt)| tt == t));
        }
        (&mut self.map.get_mut(k).expect("just touched").0, dropped)
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k).map(|(v, _)| v)
    }

    /// Entries from the least to the most recently touched.
    fn in_order(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.order
            .iter()
            .filter(move |(t, k)| self.current(*t, k))
            .map(move |(_, k)| (k, &self.map.get(k).expect("current").0))
    }
}

/// Counts for `status` and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Records in the table now.
    pub records: u64,
    /// NFLOG messages read.
    pub messages: u64,
    /// Flow records started (a flow seen again after its record was dropped starts another).
    pub allowed: u64,
    pub denied: u64,
    /// Records dropped to make room.
    pub evicted: u64,
    /// Messages the kernel dropped before the daemon read them (NFLOG sequence gaps).
    pub nflog_lost: u64,
    /// Times conntrack events were dropped before the daemon read them (ENOBUFS: how many events
    /// is not known).
    pub conntrack_lost: u64,
    /// NFLOG messages whose prefix is not ours or whose id no generation knows.
    pub unknown: u64,
    /// Flow aggregates logged to the journal (`EVENT=flow_denied`, `flow_allowed`).
    pub logged: u64,
}

impl Counts {
    /// Everything that may have cost a record: `hostpolicyd_flow_records_dropped_total`.
    pub fn dropped(&self) -> u64 {
        self.evicted + self.nflog_lost + self.conntrack_lost
    }
}

/// The flows table.
#[derive(Debug)]
pub struct Table {
    records: Lru<Key, Record>,
    pending: Lru<FlowOf, (Arc<FlowOrigin>, u64)>,
    open: Lru<Tuple, Open>,
    last_seq: Option<u32>,
    /// The kernel said it dropped NFLOG messages (ENOBUFS) and no message since told how many: one
    /// at least (those at the end of a flood are never followed by a message that shows the gap).
    overrun: bool,
    counts: Counts,
    /// Keys updated since [`Table::take_updates`] (only while somebody follows).
    updated: Vec<Key>,
    following: bool,
}

/// The stage a logged packet's rule ran in.
fn stage_of(o: &FlowOrigin, hook: u8) -> Stage {
    if let Some(s) = o.stage {
        return s;
    }
    match (o.kind, hook) {
        (_, NF_INET_FORWARD) => Stage::Forward,
        // The failsafe chain of the preDNAT stage (mangle prerouting) is the normal stage's.
        (_, NF_INET_PRE_ROUTING) => Stage::PreDnat,
        _ => Stage::Normal,
    }
}

impl Table {
    pub fn new(max_records: usize) -> Table {
        Table {
            records: Lru::new(max_records),
            pending: Lru::new(max_records),
            open: Lru::new(max_records),
            last_seq: None,
            overrun: false,
            counts: Counts::default(),
            updated: Vec::new(),
            following: false,
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            records: self.records.len() as u64,
            nflog_lost: self.counts.nflog_lost + u64::from(self.overrun),
            ..self.counts
        }
    }

    /// Bytes the records take, about (for `status` and the bench).
    pub fn approx_bytes(&self) -> usize {
        let per = std::mem::size_of::<Key>() * 2 + std::mem::size_of::<Record>() + 48;
        self.records.len() * per
            + self.pending.len() * (std::mem::size_of::<FlowOf>() * 2 + 64)
            + self.open.len() * (std::mem::size_of::<Tuple>() * 2 + std::mem::size_of::<Key>() + 64)
    }

    /// Someone follows the records (`flows --follow`): keep the updated keys.
    pub fn set_following(&mut self, on: bool) {
        self.following = on;
        if !on {
            self.updated.clear();
        }
    }

    /// NFLOG dropped messages (ENOBUFS): the next message's sequence number says how many; until
    /// then, one at least.
    pub fn nflog_overrun(&mut self) {
        self.overrun = true;
    }

    /// Conntrack events were dropped (ENOBUFS).
    pub fn conntrack_overrun(&mut self) {
        self.counts.conntrack_lost += 1;
    }

    /// A message whose prefix is not one of ours.
    pub fn foreign(&mut self) {
        self.counts.messages += 1;
        self.counts.unknown += 1;
    }

    /// One packet the kernel logged.
    pub fn logged(&mut self, gens: &Generations, p: &Logged) {
        self.counts.messages += 1;
        if let Some(s) = p.seq {
            if let Some(last) = self.last_seq {
                let gap = s.wrapping_sub(last).wrapping_sub(1);
                if gap > 0 && gap < 1 << 31 {
                    self.counts.nflog_lost += u64::from(gap);
                    // The messages still queued when the kernel said ENOBUFS come first, without
                    // a gap; the first one after the loss shows it.
                    self.overrun = false;
                }
            }
            self.last_seq = Some(s);
        }
        let Some((generation, origin)) = gens.resolve(p.id, p.time) else {
            self.counts.unknown += 1;
            return;
        };
        let stage = stage_of(origin, p.hook);
        let direction = origin.direction.unwrap_or(Dir::Ingress);
        let interface = match direction {
            Dir::Ingress => p.indev.clone(),
            Dir::Egress => p.outdev.clone(),
        };
        let t = &p.tuple;
        let key = Key {
            allow: origin.allows,
            stage,
            direction,
            interface,
            proto: t.proto,
            src: t.src,
            dst: t.dst,
            dport: has_ports(t.proto).then_some(t.dport),
        };
        if origin.shadow {
            let (entry, _) = self
                .pending
                .touch(&key.flow(), || (origin.clone(), generation.number));
            *entry = (origin.clone(), generation.number);
            for allow in [true, false] {
                let k = Key {
                    allow,
                    ..key.clone()
                };
                if self.records.get(&k).is_some() && self.following {
                    self.updated.push(k);
                }
            }
            return;
        }
        let host_endpoint = origin.host_endpoint.clone().or_else(|| {
            key.interface
                .as_deref()
                .and_then(|i| generation.host_endpoint(i))
        });
        let (counts, evicted) = (&mut self.counts, &mut 0);
        let (r, dropped) = self.records.touch(&key, || {
            if origin.allows {
                counts.allowed += 1;
            } else {
                counts.denied += 1;
            }
            Record {
                first_seen: p.time,
                last_seen: p.time,
                packets: 0,
                bytes: 0,
                decided_by: origin.clone(),
                generation: generation.number,
                host_endpoint: None,
                unlogged: 0,
            }
        });
        *evicted += dropped;
        r.first_seen = r.first_seen.min(p.time);
        r.last_seen = r.last_seen.max(p.time);
        r.packets += 1;
        r.bytes += u64::from(p.len);
        r.unlogged += 1;
        r.decided_by = origin.clone();
        r.generation = generation.number;
        r.host_endpoint = host_endpoint;
        self.counts.evicted += *evicted;
        // A tracked allow is the first packet of a connection: its end gives the counts.
        if origin.allows && stage != Stage::Untracked {
            let (open, _) = self.open.touch(t, || Open {
                keys: Vec::new(),
                packets: 0,
                bytes: 0,
            });
            if !open.keys.contains(&key) {
                open.keys.push(key.clone());
            }
            open.packets += 1;
            open.bytes += u64::from(p.len);
        }
        if self.following {
            self.updated.push(key);
        }
    }

    /// A connection's end (DESTROY), or its counts so far (a dump). `now` for last seen. The connection
    /// is found by its original tuple (what was logged of its first packet), or by the reverse of its
    /// reply tuple (a DNATed connection as the stages after the DNAT saw it).
    pub fn connection(&mut self, c: &Connection, now: SystemTime) {
        let reversed = c.reply.map(|r| Tuple {
            proto: r.proto,
            src: r.dst,
            dst: r.src,
            sport: r.dport,
            dport: r.sport,
        });
        let key = if self.open.get(&c.orig).is_some() {
            c.orig
        } else {
            match reversed.filter(|r| self.open.get(r).is_some()) {
                Some(r) => r,
                None => return,
            }
        };
        let Some(open) = self.open.get(&key) else {
            return;
        };
        let (dp, db) = (
            c.packets.saturating_sub(open.packets),
            c.bytes.saturating_sub(open.bytes),
        );
        let keys = open.keys.clone();
        for k in &keys {
            if let Some(r) = self.records.get_mut(k) {
                r.packets += dp;
                r.bytes += db;
                r.last_seen = r.last_seen.max(now);
                if self.following && (dp > 0 || db > 0) {
                    self.updated.push(k.clone());
                }
            }
        }
        if c.event == Event::Destroy {
            self.open.remove(&key);
        } else if let Some(open) = self.open.get_mut(&key) {
            open.packets = open.packets.max(c.packets);
            open.bytes = open.bytes.max(c.bytes);
        }
    }

    fn record(&self, k: &Key, r: &Record) -> FlowRecord {
        let pending = self.pending.get(&k.flow()).map(|(o, _)| Pending::of(o));
        FlowRecord {
            first_seen: crate::engine::state::rfc3339(r.first_seen),
            last_seen: crate::engine::state::rfc3339(r.last_seen),
            action: action(k.allow).into(),
            stage: k.stage.as_str().into(),
            direction: k.direction.as_str().into(),
            interface: k.interface.as_deref().map(str::to_string),
            host_endpoint: r.host_endpoint.as_deref().map(str::to_string),
            proto: Proto::of(k.proto),
            src: k.src.to_string(),
            dst: k.dst.to_string(),
            dport: k.dport,
            packets: r.packets,
            bytes: r.bytes,
            decided_by: Decider::of(&r.decided_by),
            pending_action: pending
                .as_ref()
                .map_or_else(|| action(k.allow).into(), |p| p.action.clone()),
            pending: pending.into_iter().collect(),
            generation: r.generation,
        }
    }

    /// The records, least recently updated first; only denied ones with `denied`; the last `limit`.
    pub fn records(&self, denied: bool, limit: Option<usize>) -> Vec<FlowRecord> {
        let mut out: Vec<FlowRecord> = self
            .records
            .in_order()
            .rev()
            .filter(|(k, _)| !denied || !k.allow)
            .take(limit.unwrap_or(usize::MAX))
            .map(|(k, r)| self.record(k, r))
            .collect();
        out.reverse();
        out
    }

    /// The records updated since the last call (while following), each once, in update order.
    pub fn take_updates(&mut self) -> Vec<FlowRecord> {
        let keys = std::mem::take(&mut self.updated);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for k in keys.iter().rev() {
            if seen.insert(k) {
                if let Some(r) = self.records.get(k) {
                    out.push(self.record(k, r));
                }
            }
        }
        out.reverse();
        out
    }

    /// The records with packets since the last call (denied ones; allowed ones too with
    /// `allowed`), with those packets, for the journal: each flow aggregate once per interval.
    pub fn to_log(&mut self, allowed: bool) -> Vec<(FlowRecord, u64)> {
        let mut out = Vec::new();
        let keys: Vec<Key> = self
            .records
            .in_order()
            .filter(|(k, r)| r.unlogged > 0 && (allowed || !k.allow))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let r = self.records.get_mut(&k).expect("listed");
            let n = std::mem::take(&mut r.unlogged);
            let r = r.clone();
            out.push((self.record(&k, &r), n));
        }
        self.counts.logged += out.len() as u64;
        out
    }

    /// Tuples of the open connections (for a dump's answers to be matched).
    pub fn open_connections(&self) -> usize {
        self.open.len()
    }
}

fn action(allow: bool) -> &'static str {
    if allow {
        "allow"
    } else {
        "deny"
    }
}

impl Decider {
    fn of(o: &FlowOrigin) -> Decider {
        Decider {
            kind: o.kind.as_str().into(),
            tier: o.tier.as_deref().map(str::to_string),
            policy: o.policy.as_deref().map(str::to_string),
            rule: if o.kind == Kind::Policy { o.rule } else { None },
            file: o.file.as_deref().map(str::to_string),
            line: o.line,
        }
    }
}

impl Pending {
    fn of(o: &FlowOrigin) -> Pending {
        Pending {
            kind: o.kind.as_str().into(),
            tier: o.tier.as_deref().map(str::to_string),
            policy: o.policy.as_deref().map(str::to_string),
            staged: o.staged,
            action: action(o.allows).into(),
            rule: if o.kind == Kind::Policy { o.rule } else { None },
            file: o.file.as_deref().map(str::to_string),
            line: o.line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gen::Generation;
    use super::*;
    use crate::netlink::NF_INET_LOCAL_IN;
    use std::time::Duration;

    fn origin(allows: bool, line: u32, shadow: bool, staged: bool) -> Arc<FlowOrigin> {
        Arc::new(FlowOrigin {
            kind: Kind::Policy,
            tier: Some("default".into()),
            policy: Some(if staged { "staged" } else { "p" }.into()),
            staged,
            shadow,
            direction: Some(Dir::Ingress),
            rule: Some(0),
            allows,
            stage: None,
            host_endpoint: None,
            file: Some("/etc/hostpolicy.d/30-metrics.yaml".into()),
            line: Some(line),
        })
    }

    fn gens() -> Generations {
        let mut g = Generation {
            number: 1,
            since: Some(SystemTime::UNIX_EPOCH),
            ..Generation::default()
        };
        g.ids.insert(1, origin(false, 12, false, false));
        g.ids.insert(2, origin(true, 20, false, false));
        g.ids.insert(3, origin(false, 7, true, true));
        g.interfaces.insert("eth0".into(), "node1-eth0".into());
        let mut gens = Generations::default();
        gens.push(g);
        gens
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn pkt(id: u64, src: &str, sport: u16, dport: u16, seq: u32, secs: u64) -> Logged {
        Logged {
            id,
            hook: NF_INET_LOCAL_IN,
            time: at(secs),
            indev: Some("eth0".into()),
            outdev: None,
            tuple: Tuple {
                proto: 6,
                src: src.parse().unwrap(),
                dst: "192.0.2.1".parse().unwrap(),
                sport,
                dport,
            },
            len: 60,
            seq: Some(seq),
        }
    }

    /// The queue-based LRU against a plain model: same entries, same order, same evictions, across
    /// many touches (its stale entries swept now and then).
    #[test]
    fn the_lru_keeps_the_most_recently_touched() {
        let mut lru: Lru<u32, u32> = Lru::new(7);
        let mut model: Vec<u32> = Vec::new(); // least recently touched first
        let mut dropped_model = 0u64;
        let mut dropped = 0u64;
        let mut x = 12345u32;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let k = (x >> 16) % 13;
            if x % 11 == 0 {
                assert_eq!(lru.remove(&k).is_some(), model.contains(&k));
                model.retain(|m| *m != k);
                continue;
            }
            let (v, d) = lru.touch(&k, || k * 10);
            assert_eq!(*v, k * 10);
            dropped += d;
            if let Some(i) = model.iter().position(|m| *m == k) {
                model.remove(i);
            } else if model.len() == 7 {
                model.remove(0);
                dropped_model += 1;
            }
            model.push(k);
            let order: Vec<u32> = lru.in_order().map(|(k, _)| *k).collect();
            assert_eq!(order, model);
            assert!(lru.order.len() <= 2 * lru.len() + 65);
        }
        assert_eq!(dropped, dropped_model);
    }

    #[test]
    fn denied_packets_aggregate_per_flow_and_name_their_rule() {
        let gens = gens();
        let mut t = Table::new(100);
        for (i, sport) in [40000, 40001, 40002].into_iter().enumerate() {
            t.logged(
                &gens,
                &pkt(1, "192.0.2.200", sport, 9100, i as u32, i as u64),
            );
        }
        let r = t.records(false, None);
        assert_eq!(r.len(), 1, "{r:?}");
        let r = &r[0];
        assert_eq!((r.action.as_str(), r.stage.as_str()), ("deny", "normal"));
        assert_eq!(r.interface.as_deref(), Some("eth0"));
        assert_eq!(r.host_endpoint.as_deref(), Some("node1-eth0"));
        assert_eq!((r.packets, r.bytes, r.dport), (3, 180, Some(9100)));
        assert_eq!(r.first_seen, "2027-01-15T08:00:00Z");
        assert_eq!(r.last_seen, "2027-01-15T08:00:02Z");
        assert_eq!(r.decided_by.policy.as_deref(), Some("p"));
        assert_eq!(r.decided_by.line, Some(12));
        assert_eq!(r.pending_action, "deny");
        assert!(r.pending.is_empty());
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["proto"], "tcp");
        assert_eq!(json["decided_by"]["rule"], 0);
        assert_eq!(t.counts().denied, 1);
        assert_eq!(t.counts().dropped(), 0);
    }

    #[test]
    fn sequence_gaps_and_evictions_count_as_dropped() {
        let gens = gens();
        let mut t = Table::new(2);
        t.logged(&gens, &pkt(1, "192.0.2.10", 1, 22, 5, 0));
        t.logged(&gens, &pkt(1, "192.0.2.11", 1, 22, 9, 1)); // 6, 7, 8 lost
        t.logged(&gens, &pkt(1, "192.0.2.10", 1, 22, 10, 2)); // .10 is the newest now
        t.logged(&gens, &pkt(1, "192.0.2.12", 1, 22, 11, 3)); // .11 goes
        let c = t.counts();
        assert_eq!((c.nflog_lost, c.evicted, c.records), (3, 1, 2));
        assert_eq!(c.dropped(), 4);
        // An overrun at the end of a flood: one at least, until a message says how many (the ones
        // queued before the loss come first).
        t.nflog_overrun();
        assert_eq!(t.counts().nflog_lost, 4);
        t.logged(&gens, &pkt(1, "192.0.2.12", 1, 22, 12, 3));
        assert_eq!(t.counts().nflog_lost, 4);
        t.logged(&gens, &pkt(1, "192.0.2.12", 1, 22, 20, 3)); // 13..=19 lost
        assert_eq!(t.counts().nflog_lost, 3 + 7);
        t.logged(&gens, &pkt(1, "192.0.2.12", 1, 22, 21, 3));
        let srcs: Vec<String> = t.records(false, None).into_iter().map(|r| r.src).collect();
        assert_eq!(srcs, ["192.0.2.10", "192.0.2.12"], "newest last");
        assert_eq!(t.records(false, Some(1))[0].src, "192.0.2.12");
        // An id nobody knows.
        t.logged(&gens, &pkt(99, "192.0.2.13", 1, 22, 22, 4));
        assert_eq!(t.counts().unknown, 1);
    }

    #[test]
    fn allowed_connections_take_their_counts_from_conntrack() {
        let gens = gens();
        let mut t = Table::new(100);
        let p = pkt(2, "192.0.2.200", 46174, 22, 0, 0);
        t.logged(&gens, &p);
        assert_eq!(t.records(false, None)[0].packets, 1);
        let mut c = Connection {
            event: Event::New,
            id: Some(1),
            orig: p.tuple,
            reply: None,
            mark: 0x8000_0000,
            packets: 5,
            bytes: 300,
        };
        t.connection(&c, at(5));
        let r = &t.records(false, None)[0];
        assert_eq!((r.packets, r.bytes), (5, 300));
        c.event = Event::Destroy;
        c.packets = 7;
        c.bytes = 381;
        t.connection(&c, at(9));
        let r = &t.records(false, None)[0];
        assert_eq!((r.action.as_str(), r.packets, r.bytes), ("allow", 7, 381));
        assert_eq!(r.last_seen, "2027-01-15T08:00:09Z");
        assert_eq!(t.open_connections(), 0);
        // Denied only.
        assert!(t.records(true, None).is_empty());
        // A DNATed connection: the normal stage saw it after the DNAT (to 192.0.2.1:22 here); conntrack's
        // original tuple is before it (to 198.51.100.4:30022), its reply tuple from the real destination.
        let seen = pkt(2, "192.0.2.201", 47000, 22, 1, 10);
        t.logged(&gens, &seen);
        let before_dnat = Tuple {
            dst: "198.51.100.4".parse().unwrap(),
            dport: 30022,
            ..seen.tuple
        };
        let reply = Tuple {
            proto: 6,
            src: seen.tuple.dst,
            dst: seen.tuple.src,
            sport: 22,
            dport: 47000,
        };
        t.connection(
            &Connection {
                event: Event::Destroy,
                id: Some(2),
                orig: before_dnat,
                reply: Some(reply),
                mark: 0,
                packets: 9,
                bytes: 900,
            },
            at(20),
        );
        let r = t
            .records(false, None)
            .into_iter()
            .find(|r| r.src == "192.0.2.201")
            .unwrap();
        assert_eq!(
            (r.packets, r.bytes),
            (9, 900),
            "found by the reverse of its reply tuple"
        );
    }

    #[test]
    fn a_staged_verdict_shows_as_pending() {
        let gens = gens();
        let mut t = Table::new(100);
        t.logged(&gens, &pkt(3, "192.0.2.200", 46174, 22, 0, 0));
        assert!(
            t.records(false, None).is_empty(),
            "a would-be verdict is no record"
        );
        t.logged(&gens, &pkt(2, "192.0.2.200", 46174, 22, 1, 0));
        let r = &t.records(false, None)[0];
        assert_eq!(
            (r.action.as_str(), r.pending_action.as_str()),
            ("allow", "deny")
        );
        assert_eq!(r.pending.len(), 1);
        let p = &r.pending[0];
        assert!(p.staged);
        assert_eq!((p.policy.as_deref(), p.line), (Some("staged"), Some(7)));
        // The journal: denied aggregates once per interval, with the packets since the last time.
        t.logged(&gens, &pkt(1, "192.0.2.9", 1, 9100, 2, 1));
        t.logged(&gens, &pkt(1, "192.0.2.9", 2, 9100, 3, 1));
        let logs = t.to_log(false);
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].1, 2);
        assert!(t.to_log(false).is_empty(), "nothing new");
        assert_eq!(t.to_log(true).len(), 1, "allowed ones on request");
    }
}
