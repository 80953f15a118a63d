//! The staged swap of `Netlink::apply` (src/nft/exec.rs, plan.rs) against a real kernel, each test in
//! its own network namespaces:
//!
//! - after every apply of a random walk over rulesets (sets added, removed, re-typed, re-ordered, their
//!   elements changed, which copies them under a versioned name; chains and base chains added, removed,
//!   re-hooked; verdict maps renamed, taking names of old sets), the table is exactly what `nft -f`
//!   makes of `render()` in an empty namespace, set names and set order aside: `nft -j list table`
//!   (handles and counters aside), `nft list table`, the raw set elements (`nft --debug=netlink list
//!   table`), and `table_comment` gives the content hash;
//! - meanwhile `nft monitor` shows that no transaction creates an interval set and adds a rule that looks
//!   it up (the kernel race the staged swap avoids), and that the old and new rules never coexist: every
//!   transaction that adds rules to a chain that had rules flushes it first;
//! - a switch the kernel rejects leaves the table byte-identical (handles included, the content-hash
//!   chain's aside) and names the rule;
//! - a table left half-swapped or not ours (foreign objects, an older hostpolicyd's comment) is brought
//!   to exactly the new ruleset.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::listing::{
    assert_same as same_listing, listing as table_listing, nft, HashChain, Listing,
};
use common::netns::{require_root, NetNs};
use hostpolicyd::nft::{render, Dataplane, Netlink, HASH_CHAIN};
use hostpolicyd::ruleset::{
    BaseHook, Chain, Direction, Family, Hook, Match, PortMatch, Rule, Ruleset, Set, SetElement,
    SetType, Verdict, VerdictMap,
};

const TABLE: &str = "hostpolicy";

// ---------------------------------------------------------------------------------------------------
// Listings

/// Everything that must be equal between our apply and `nft -f` of `render()`, the content-hash chain
/// included.
fn listing(ns: &NetNs) -> Listing {
    table_listing(ns, TABLE, HashChain::Listed)
}

/// What `nft -f` makes of `render(rs)` in an empty namespace.
fn rendered(rs: &Ruleset) -> Listing {
    let ns = NetNs::new("render");
    let text = render(rs);
    let mut child = ns
        .command("nft", ["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f of render failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    listing(&ns)
}

fn assert_same(what: &str, applied: &Listing, rendered: &Listing) {
    same_listing(
        what,
        applied,
        rendered,
        ("applied", "render() loaded with nft -f"),
    );
}

fn apply(ns: &NetNs, rs: &Ruleset) -> Result<(), hostpolicyd::nft::DataplaneError> {
    ns.run(|| Netlink::new()?.apply(rs))
}

// ---------------------------------------------------------------------------------------------------
// What each transaction did, from nf_tables notifications (`nft monitor` 1.0.6 cannot be used: its set
// cache gives up on element notifications of sets created in the same batch, and it stops printing).

/// A subscription to nf_tables notifications (NFNLGRP_NFTABLES) in a namespace, read at the end.
struct Monitor {
    fd: std::os::fd::OwnedFd,
}

impl Monitor {
    fn start(ns: &NetNs) -> Monitor {
        use std::os::fd::FromRawFd;
        let fd = ns.run(|| {
            // SAFETY: plain socket/setsockopt calls on a descriptor we own; values are live c_ints.
            unsafe {
                let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 12);
                assert!(
                    fd >= 0,
                    "netlink socket: {}",
                    std::io::Error::last_os_error()
                );
                let mut addr: libc::sockaddr_nl = std::mem::zeroed();
                addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
                let rc = libc::bind(
                    fd,
                    &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                );
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
                let group: libc::c_int = 7; // NFNLGRP_NFTABLES
                let rc = libc::setsockopt(
                    fd,
                    270, // SOL_NETLINK
                    1,   // NETLINK_ADD_MEMBERSHIP
                    &group as *const libc::c_int as *const libc::c_void,
                    4,
                );
                assert_eq!(rc, 0, "membership: {}", std::io::Error::last_os_error());
                let size: libc::c_int = 64 << 20;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &size as *const libc::c_int as *const libc::c_void,
                    4,
                );
                fd
            }
        });
        // SAFETY: a fresh descriptor nothing else owns.
        Monitor {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        }
    }

    /// Everything received so far, as transactions (the events of each generation).
    fn stop(self) -> Vec<Vec<Event>> {
        use std::os::fd::AsRawFd;
        let mut txs = vec![Vec::new()];
        let mut buf = vec![0u8; 1 << 20];
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "notifications lost: {e}"
                );
                break;
            }
            for (ty, attrs) in messages(&buf[..n as usize]) {
                if ty == 15 {
                    txs.push(Vec::new()); // NEWGEN ends a transaction
                } else if let Some(e) = event(ty, attrs) {
                    txs.last_mut().unwrap().push(e);
                }
            }
        }
        txs.retain(|t| !t.is_empty());
        txs
    }
}

/// One notification about our table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// An interval set was created.
    IntervalSet(String),
    /// A rule was added to chain `.0`; it looks up sets `.1`.
    Rule(String, Vec<String>),
    /// A rule of chain was deleted.
    RuleDeleted(String),
    ChainDeleted(String),
    TableDeleted,
    Other,
}

/// (nf_tables message type, attributes) of each nf_tables message in `buf`.
fn messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if ty >> 8 == 10 && len >= 20 {
            out.push((ty & 0xff, &buf[20..len]));
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff, &buf[4..len]));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or_default()).into_owned()
}

fn attr<'a>(list: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    list.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v)
}

/// The event of an nf_tables notification about table inet TABLE (attribute 1 is the table in all of
/// them), if it is one.
fn event(ty: u16, payload: &[u8]) -> Option<Event> {
    let a = attrs(payload);
    if attr(&a, 1).map(string).as_deref() != Some(TABLE) {
        return None;
    }
    let name = |t| attr(&a, t).map(string).unwrap_or_default();
    Some(match ty {
        2 => Event::TableDeleted,
        5 => Event::ChainDeleted(name(3)),
        6 => {
            let mut sets = Vec::new();
            for (_, e) in attrs(attr(&a, 4).unwrap_or_default()) {
                let e = attrs(e);
                if attr(&e, 1).map(string).as_deref() == Some("lookup") {
                    let data = attrs(attr(&e, 2).unwrap_or_default());
                    sets.push(attr(&data, 1).map(string).unwrap_or_default());
                }
            }
            Event::Rule(name(2), sets)
        }
        8 => Event::RuleDeleted(name(2)),
        9 => {
            let flags = attr(&a, 3).map_or(0, |f| u32::from_be_bytes(f[..4].try_into().unwrap()));
            if flags & 0x4 != 0 && flags & 0x1 == 0 {
                Event::IntervalSet(name(2))
            } else {
                Event::Other
            }
        }
        _ => Event::Other,
    })
}

/// No transaction creates an interval set and adds a rule that looks it up; a transaction that adds
/// rules to a chain that already had rules deletes them in the same transaction (no mix of old and new).
fn check_transactions(txs: &[Vec<Event>], what: &str) {
    use std::collections::HashSet;
    let mut with_rules: HashSet<String> = HashSet::new();
    for (n, tx) in txs.iter().enumerate() {
        let created: HashSet<&String> = tx
            .iter()
            .filter_map(|e| match e {
                Event::IntervalSet(s) => Some(s),
                _ => None,
            })
            .collect();
        let (mut emptied, mut added) = (HashSet::new(), HashSet::new());
        for e in tx {
            match e {
                Event::Rule(chain, sets) => {
                    for s in sets {
                        assert!(
                            !created.contains(s),
                            "{what}: transaction {n} creates interval set {s} and adds a rule of chain {chain} that looks it up"
                        );
                    }
                    added.insert(chain.clone());
                }
                Event::RuleDeleted(c) | Event::ChainDeleted(c) => {
                    emptied.insert(c.clone());
                }
                Event::TableDeleted => emptied.extend(with_rules.iter().cloned()),
                _ => {}
            }
        }
        for c in &added {
            assert!(
                !with_rules.contains(c) || emptied.contains(c),
                "{what}: transaction {n} adds rules to chain {c} without removing its old ones"
            );
        }
        with_rules.retain(|c| !emptied.contains(c));
        with_rules.extend(added);
    }
}

// ---------------------------------------------------------------------------------------------------
// Random rulesets

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next(100) < percent
    }
}

/// Non-overlapping, non-adjacent prefixes of `bits`-bit addresses (as the compiler merges them), with
/// the first and the last of the space now and then.
fn random_ranges(rng: &mut Rng, bits: u32) -> Vec<(u128, u8)> {
    let mut out: Vec<(u128, u128, u8)> = Vec::new();
    let n = rng.next(6);
    for _ in 0..n {
        let len = match rng.next(6) {
            0 => 1,
            1 => 0,
            _ => 8 + rng.next(bits as u64 - 8) as u8,
        } as u32;
        let len = if len == 0 && rng.chance(80) { 4 } else { len };
        // the prefix covers `span + 1` addresses
        let span: u128 = if bits - len == 128 {
            u128::MAX
        } else {
            (1u128 << (bits - len)) - 1
        };
        let top = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        let start = match rng.next(5) {
            0 => 0,
            1 => top - span,
            _ => (rng.next(u64::MAX) as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15) & top & !span,
        };
        let end = start + span;
        // not overlapping and not adjacent to what we have
        if out
            .iter()
            .all(|&(a, b, _)| end.saturating_add(1) < a || b.saturating_add(1) < start)
        {
            out.push((start, end, len as u8));
        }
    }
    out.sort();
    out.into_iter().map(|(a, _, l)| (a, l)).collect()
}

fn random_set(rng: &mut Rng, name: &str, set_type: SetType) -> Set {
    let elements = match set_type {
        SetType::Ipv4Addr => random_ranges(rng, 32)
            .into_iter()
            .map(|(a, l)| SetElement::V4(ipnet::Ipv4Net::new((a as u32).into(), l).unwrap()))
            .collect(),
        SetType::Ipv6Addr => random_ranges(rng, 128)
            .into_iter()
            .map(|(a, l)| SetElement::V6(ipnet::Ipv6Net::new(a.into(), l).unwrap()))
            .collect(),
        // hash sets: single hosts (random_ranges's starts, which are distinct)
        SetType::Ipv4Hosts => random_ranges(rng, 32)
            .into_iter()
            .map(|(a, _)| SetElement::V4(ipnet::Ipv4Net::new((a as u32).into(), 32).unwrap()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        SetType::Ipv6Hosts => random_ranges(rng, 128)
            .into_iter()
            .map(|(a, _)| SetElement::V6(ipnet::Ipv6Net::new(a.into(), 128).unwrap()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        SetType::InetService => {
            let mut v = Vec::new();
            let mut lo = if rng.chance(30) {
                0
            } else {
                rng.next(2000) as u32
            };
            while lo <= 65535 && v.len() < 6 {
                let hi = if rng.chance(10) {
                    65535
                } else {
                    (lo + rng.next(50) as u32).min(65535)
                };
                v.push(SetElement::Ports(lo as u16, hi as u16));
                lo = hi + 2 + rng.next(20_000) as u32;
            }
            v
        }
    };
    Set {
        name: name.into(),
        set_type,
        elements,
    }
}

/// A ruleset in the compiler's shapes: sets sorted by name, base chains first, then regular chains whose
/// rules look the sets up, verdict maps dispatching to them.
fn random_ruleset(rng: &mut Rng, step: usize) -> Ruleset {
    // Names the walk moves around: some sets keep their type, "t" changes it (family or kind: interval or
    // hash), "x" is a set or a map.
    let pool: [(&str, SetType); 10] = [
        ("a-v4", SetType::Ipv4Addr),
        ("b-ports", SetType::InetService),
        ("c-v6", SetType::Ipv6Addr),
        ("h-v4h", SetType::Ipv4Hosts),
        ("h-v6h", SetType::Ipv6Hosts),
        ("m-v4", SetType::Ipv4Addr),
        ("sel-1-v4", SetType::Ipv4Addr),
        ("sel-2-v6", SetType::Ipv6Addr),
        ("t", SetType::Ipv4Addr),
        ("x", SetType::InetService),
    ];
    let x_is_map = rng.chance(40);
    let mut sets: Vec<Set> = Vec::new();
    for (n, t) in pool {
        if (x_is_map && n == "x") || !rng.chance(65) {
            continue;
        }
        let t = match (n, rng.next(3)) {
            ("t", 0) => SetType::Ipv6Addr,
            ("t", 1) => SetType::Ipv4Hosts,
            _ => t,
        };
        sets.push(random_set(rng, n, t));
    }
    sets.sort_by(|a, b| a.name.cmp(&b.name));

    let regular: Vec<&str> = ["r1", "r2", "r3"]
        .into_iter()
        .filter(|_| rng.chance(70))
        .collect();
    let regular = if regular.is_empty() {
        vec!["r1"]
    } else {
        regular
    };
    let mut chains: Vec<Chain> = Vec::new();
    for (name, hook, prio) in [
        ("raw-pre", Hook::Prerouting, -300),
        ("in", Hook::Input, 0),
        ("filter-fwd", Hook::Forward, 0),
        ("out", Hook::Output, 0),
    ] {
        if !rng.chance(75) {
            continue;
        }
        let priority = if rng.chance(15) { prio + 5 } else { prio };
        let mut rules = vec![Rule {
            matches: vec![Match::Mark {
                mask: 0x10000,
                value: 0x10000,
            }],
            verdict: Some(Verdict::Accept),
            ..Rule::default()
        }];
        let target = regular[rng.next(regular.len() as u64) as usize];
        rules.push(Rule {
            verdict: Some(Verdict::Jump(target.into())),
            comment: Some(format!("{name} step {step}")),
            ..Rule::default()
        });
        chains.push(Chain {
            name: name.into(),
            base: Some(BaseHook { hook, priority }),
            rules,
        });
    }
    let mut maps = Vec::new();
    let map_names: Vec<&str> = if x_is_map {
        vec!["x", "z-map"]
    } else {
        vec!["z-map"]
    };
    for m in map_names {
        if rng.chance(70) {
            maps.push(VerdictMap {
                name: m.into(),
                elements: vec![
                    ("eth0".into(), Verdict::Goto(regular[0].into())),
                    (
                        format!("eth{}", 1 + rng.next(3)),
                        Verdict::Jump(regular[regular.len() - 1].into()),
                    ),
                ],
            });
        }
    }
    if let (Some(m), Some(c)) = (maps.first(), chains.first_mut()) {
        c.rules.push(Rule {
            verdict: Some(Verdict::Vmap {
                key: hostpolicyd::ruleset::IfDir::In,
                map: m.name.clone(),
            }),
            ..Rule::default()
        });
    }
    for (k, name) in regular.iter().enumerate() {
        let mut rules = Vec::new();
        for s in &sets {
            if (k + s.name.len()) % 2 == 0 || rng.chance(30) {
                let m = match s.set_type {
                    SetType::Ipv4Addr | SetType::Ipv4Hosts => Match::Addr {
                        dir: Direction::Source,
                        family: Family::Ipv4,
                        set: s.name.clone(),
                        negate: rng.chance(20),
                    },
                    SetType::Ipv6Addr | SetType::Ipv6Hosts => Match::Addr {
                        dir: Direction::Destination,
                        family: Family::Ipv6,
                        set: s.name.clone(),
                        negate: false,
                    },
                    SetType::InetService => Match::Port {
                        dir: Direction::Destination,
                        proto: 6,
                        port: PortMatch::Set(s.name.clone()),
                        negate: false,
                    },
                };
                rules.push(Rule {
                    matches: vec![m],
                    counter: true,
                    verdict: Some(Verdict::Accept),
                    comment: Some(format!("{name} uses {}", s.name)),
                    ..Rule::default()
                });
            }
        }
        rules.push(Rule {
            verdict: Some(Verdict::Drop),
            ..Rule::default()
        });
        chains.push(Chain {
            name: (*name).into(),
            base: None,
            rules,
        });
    }
    Ruleset {
        table: TABLE.into(),
        comment: format!("hostpolicyd sha256:{step:04}"),
        sets,
        maps,
        chains: chains.into_iter().map(std::sync::Arc::new).collect(),
        origins: Default::default(),
    }
}

// ---------------------------------------------------------------------------------------------------
// Tests

#[test]
fn a_random_walk_of_applies_always_equals_render() {
    if !require_root("a_random_walk_of_applies_always_equals_render") {
        return;
    }
    let steps: usize = std::env::var("STAGED_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("STAGED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let mut rng = Rng(seed);
    let ns = NetNs::new("walk");
    let mon = Monitor::start(&ns);
    for step in 0..steps {
        let rs = random_ruleset(&mut rng, step);
        apply(&ns, &rs).unwrap_or_else(|e| panic!("step {step}: apply: {e}\n{}", render(&rs)));
        assert_same(
            &format!("step {step} (seed {seed})"),
            &listing(&ns),
            &rendered(&rs),
        );
    }
    let txs = mon.stop();
    assert!(
        txs.len() >= 2 * steps - 1,
        "{} transactions for {steps} applies",
        txs.len()
    );
    eprintln!("{steps} applies, {} transactions", txs.len());
    check_transactions(&txs, &format!("seed {seed}"));
}

/// A base ruleset for the hand-made cases: three sets, one selector-like, a map, two base chains.
fn base_ruleset(sel: &[&str], extra_set: bool) -> Ruleset {
    let v4 = |s: &str| SetElement::V4(s.parse().unwrap());
    let mut sets = vec![
        Set {
            name: "b-net-v4".into(),
            set_type: SetType::Ipv4Addr,
            elements: vec![v4("192.0.2.0/24")],
        },
        Set {
            name: "d-ports".into(),
            set_type: SetType::InetService,
            elements: vec![SetElement::Ports(22, 22), SetElement::Ports(8000, 8100)],
        },
        Set {
            name: "sel-1-v4".into(),
            set_type: SetType::Ipv4Addr,
            elements: sel.iter().map(|s| v4(s)).collect(),
        },
    ];
    if extra_set {
        sets.insert(
            0,
            Set {
                name: "a-net-v4".into(),
                set_type: SetType::Ipv4Addr,
                elements: vec![v4("203.0.113.0/24")],
            },
        );
    }
    let uses = |set: &str| Rule {
        matches: vec![Match::Addr {
            dir: Direction::Source,
            family: Family::Ipv4,
            set: set.into(),
            negate: false,
        }],
        verdict: Some(Verdict::Accept),
        comment: Some(format!("uses {set}")),
        ..Rule::default()
    };
    let mut pol = vec![
        uses("b-net-v4"),
        uses("sel-1-v4"),
        Rule {
            matches: vec![Match::Port {
                dir: Direction::Destination,
                proto: 6,
                port: PortMatch::Set("d-ports".into()),
                negate: false,
            }],
            verdict: Some(Verdict::Accept),
            ..Rule::default()
        },
    ];
    if extra_set {
        pol.push(uses("a-net-v4"));
    }
    pol.push(Rule {
        verdict: Some(Verdict::Drop),
        comment: Some("default deny".into()),
        ..Rule::default()
    });
    Ruleset {
        table: TABLE.into(),
        comment: format!("hostpolicyd sha256:{}-{extra_set}", sel.join(",")),
        sets,
        maps: vec![VerdictMap {
            name: "in-map".into(),
            elements: vec![("eth0".into(), Verdict::Goto("pol".into()))],
        }],
        chains: vec![
            Chain {
                name: "in".into(),
                base: Some(BaseHook {
                    hook: Hook::Input,
                    priority: 0,
                }),
                rules: vec![Rule {
                    verdict: Some(Verdict::Vmap {
                        key: hostpolicyd::ruleset::IfDir::In,
                        map: "in-map".into(),
                    }),
                    ..Rule::default()
                }],
            },
            Chain {
                name: "out".into(),
                base: Some(BaseHook {
                    hook: Hook::Output,
                    priority: 0,
                }),
                rules: vec![],
            },
            Chain {
                name: "pol".into(),
                base: None,
                rules: pol,
            },
        ]
        .into_iter()
        .map(std::sync::Arc::new)
        .collect(),
        origins: Default::default(),
    }
}

#[test]
fn a_rejected_switch_restores_the_table_exactly() {
    if !require_root("a_rejected_switch_restores_the_table_exactly") {
        return;
    }
    let ns = NetNs::new("undo");
    let good = base_ruleset(&["10.0.0.0/8", "198.51.100.7/32"], false);
    apply(&ns, &good).unwrap();
    // Handles included, but the content-hash chain's: the switch's first transaction marks the table
    // as in transition by re-creating that chain, and the undo re-creates it as it was.
    let exact = || {
        let mut json: serde_json::Value =
            serde_json::from_str(&nft(&ns, &["-j", "list", "table", "inet", TABLE])).unwrap();
        for item in json["nftables"].as_array_mut().unwrap() {
            if item.pointer("/chain/name").and_then(|n| n.as_str()) == Some(HASH_CHAIN) {
                item["chain"].as_object_mut().unwrap().remove("handle");
            }
        }
        (
            json,
            nft(&ns, &["--debug=netlink", "list", "table", "inet", TABLE]),
        )
    };
    let before = exact();

    // T1 copies sel-1-v4 (new elements), creates a-net-v4 and marks the table; the switch is rejected
    // (a jump to a missing chain), so all of it must be undone.
    let mut bad = base_ruleset(&["10.0.0.0/9", "198.51.100.8/32", "0.0.0.0/8"], true);
    bad.chain_mut(2).rules.insert(
        1,
        Rule {
            verdict: Some(Verdict::Jump("missing".into())),
            comment: Some("bad jump".into()),
            ..Rule::default()
        },
    );
    let err = apply(&ns, &bad).unwrap_err();
    assert!(
        err.message
            .starts_with("kernel rejected rule 1 of chain pol (comment \"bad jump\")"),
        "{err}"
    );
    assert_eq!(err.errno, Some(libc::ENOENT), "{err}");
    assert!(!err.message.contains("undoing"), "{err}");
    assert_eq!(
        exact(),
        before,
        "the table, handles included, after the undo"
    );

    // Only an element change (a copy), then rejected: undone too.
    let mut bad = base_ruleset(&["10.0.0.0/9"], false);
    bad.chain_mut(1).rules.push(Rule {
        verdict: Some(Verdict::Goto("nowhere".into())),
        ..Rule::default()
    });
    assert!(apply(&ns, &bad).is_err());
    assert_eq!(exact(), before);

    // And the good one still applies afterwards, exactly.
    let next = base_ruleset(&["10.0.0.0/9", "198.51.100.8/32"], true);
    apply(&ns, &next).unwrap();
    assert_same("after the rejected ones", &listing(&ns), &rendered(&next));
}

#[test]
fn a_first_apply_that_is_rejected_leaves_no_table() {
    if !require_root("a_first_apply_that_is_rejected_leaves_no_table") {
        return;
    }
    let ns = NetNs::new("first");
    let mut bad = base_ruleset(&["10.0.0.0/8"], true);
    bad.chain_mut(2).rules.push(Rule {
        verdict: Some(Verdict::Jump("missing".into())),
        ..Rule::default()
    });
    let err = apply(&ns, &bad).unwrap_err();
    assert!(err.message.contains("rule 5 of chain pol"), "{err}");
    assert!(
        ns.exec("nft", ["list", "table", "inet", TABLE])
            .status
            .code()
            != Some(0)
    );
}

#[test]
fn a_half_swapped_table_is_finished_by_the_next_apply() {
    if !require_root("a_half_swapped_table_is_finished_by_the_next_apply") {
        return;
    }
    // What a crash between the switch and the refill leaves: our table (its static comment), no hash
    // chain, rules that look up staging copies, an unused leftover set.
    let ns = NetNs::new("half");
    let leftover = r#"table inet hostpolicy {
	comment "hostpolicyd"
	set hostpolicyd-staged-2 { type ipv4_addr; flags interval; elements = { 10.0.0.0/8 } }
	set b-net-v4 { type ipv4_addr; flags interval; elements = { 192.0.2.0/24 } }
	set old { type inet_service; flags interval; elements = { 1-2 } }
	chain in {
		type filter hook input priority 0; policy accept;
		jump pol
	}
	chain pol {
		ip saddr @hostpolicyd-staged-2 accept
		ip saddr @b-net-v4 accept
		drop
	}
}
"#;
    let mut child = ns
        .command("nft", ["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(leftover.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let comment = ns
        .run(|| Netlink::new().unwrap().table_comment(TABLE))
        .unwrap();
    assert_eq!(
        comment.as_deref(),
        Some("hostpolicyd"),
        "not a content hash: re-applied"
    );

    let rs = base_ruleset(&["10.0.0.0/8"], false);
    apply(&ns, &rs).unwrap();
    assert_same("finished", &listing(&ns), &rendered(&rs));
    let text = nft(&ns, &["list", "table", "inet", TABLE]);
    assert!(
        !text.contains("staged") && !text.contains("set old"),
        "{text}"
    );
}

#[test]
fn tables_that_are_not_ours_are_replaced_whole() {
    if !require_root("tables_that_are_not_ours_are_replaced_whole") {
        return;
    }
    let rs = base_ruleset(&["10.0.0.0/8"], true);
    for (what, foreign) in [
        (
            "someone else's table",
            r#"table inet hostpolicy {
	comment "not hostpolicyd"
	counter c { }
	set b-net-v4 { type ipv4_addr; elements = { 192.0.2.1 } }
	chain in {
		type filter hook input priority 0; policy drop;
		counter name c
	}
	chain nat {
		type nat hook prerouting priority -100; policy accept;
	}
}
"#,
        ),
        (
            "an older hostpolicyd's table (hash in the table comment)",
            r#"table inet hostpolicy {
	comment "hostpolicyd sha256:0123"
	set b-net-v4 { type ipv4_addr; flags interval; elements = { 192.0.2.0/24 } }
	chain in {
		type filter hook input priority 0; policy accept;
		ip saddr @b-net-v4 accept
	}
}
"#,
        ),
    ] {
        let ns = NetNs::new("foreign");
        let mut child = ns
            .command("nft", ["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(foreign.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "{what}");
        let mon = Monitor::start(&ns);
        apply(&ns, &rs).unwrap_or_else(|e| panic!("{what}: {e}"));
        let txs = mon.stop();
        assert_eq!(txs.len(), 1, "{what}: replaced in ONE transaction: {txs:?}");
        // ...which is the one case where rules go live with the interval sets they look up (and the
        // check of the random walk does see it).
        let checked = std::panic::catch_unwind(|| check_transactions(&txs, what));
        assert!(
            checked.is_err(),
            "{what}: the transaction check should flag the takeover"
        );
        assert_same(what, &listing(&ns), &rendered(&rs));
    }
}

#[test]
fn the_hash_chain_is_the_last_chain_and_carries_the_comment() {
    if !require_root("the_hash_chain_is_the_last_chain_and_carries_the_comment") {
        return;
    }
    let ns = NetNs::new("hash");
    let a = base_ruleset(&["10.0.0.0/8"], false);
    let b = base_ruleset(&["10.0.0.0/8"], true);
    for rs in [&a, &b, &a] {
        apply(&ns, rs).unwrap();
        let text = nft(&ns, &["list", "table", "inet", TABLE]);
        let last_chain = text
            .lines()
            .rfind(|l| l.starts_with("\tchain "))
            .unwrap()
            .to_string();
        assert_eq!(last_chain, format!("\tchain {HASH_CHAIN} {{"));
        assert!(
            text.starts_with("table inet hostpolicy {\n\tcomment \"hostpolicyd\"\n"),
            "{text}"
        );
        let comment = ns
            .run(|| Netlink::new().unwrap().table_comment(TABLE))
            .unwrap();
        assert_eq!(comment.as_deref(), Some(rs.comment.as_str()));
    }
}
