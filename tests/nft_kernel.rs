//! The netlink dataplane against a real kernel, each test in its own network namespaces.
//!
//! - `render()` loaded with `nft -f` lists exactly like our apply (JSON, handles ignored), and nft's own
//!   bytecode for that text is ours, expression by expression;
//! - a batch the kernel rejects names the object and leaves the previous table byte-identical;
//! - foreign tables survive apply, re-apply and flush; `table_comment` round-trips; flush is idempotent;
//! - a 100,000-element interval set applies.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Instant;

use common::netns::{require_root, NetNs};
use hostpolicyd::nft::netlink::debug_expressions;
use hostpolicyd::nft::{render, Dataplane, Netlink};
use hostpolicyd::ruleset::{
    Action, BaseHook, Chain, CtStates, Direction, Family, Hook, IfDir, Match, PortMatch, Rule,
    Ruleset, Set, SetElement, SetType, Verdict, VerdictMap,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

// ---------------------------------------------------------------------------------------------------
// Helpers

fn v4(s: &str) -> SetElement {
    SetElement::V4(s.parse::<Ipv4Net>().unwrap())
}
fn v6(s: &str) -> SetElement {
    SetElement::V6(s.parse::<Ipv6Net>().unwrap())
}

/// `count` disjoint, non-adjacent /64s in 2001:db8::/32.
fn many_v6(count: u32) -> Vec<SetElement> {
    (0..count)
        .map(|i| {
            let n = 2 * i;
            let addr = format!("2001:db8:{:x}:{:x}::/64", n >> 16, n & 0xffff);
            v6(&addr)
        })
        .collect()
}

fn set(name: &str, set_type: SetType, elements: Vec<SetElement>) -> Set {
    Set {
        name: name.into(),
        set_type,
        elements,
    }
}

fn base(name: &str, hook: Hook, priority: i32, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.into(),
        base: Some(BaseHook { hook, priority }),
        rules,
    }
}

fn regular(name: &str, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.into(),
        base: None,
        rules,
    }
}

fn rule(matches: Vec<Match>, verdict: Option<Verdict>) -> Rule {
    Rule {
        matches,
        verdict,
        ..Rule::default()
    }
}

fn port(dir: Direction, proto: u8, p: u16, negate: bool) -> Match {
    Match::Port {
        dir,
        proto,
        port: PortMatch::Single(p),
        negate,
    }
}

fn port_set(dir: Direction, proto: u8, s: &str, negate: bool) -> Match {
    Match::Port {
        dir,
        proto,
        port: PortMatch::Set(s.into()),
        negate,
    }
}

fn addr(dir: Direction, family: Family, s: &str, negate: bool) -> Match {
    Match::Addr {
        dir,
        family,
        set: s.into(),
        negate,
    }
}

fn states(established: bool, related: bool, new: bool, invalid: bool) -> CtStates {
    CtStates {
        invalid,
        established,
        related,
        new,
    }
}

const ACCEPT: u32 = 0x10000;
const PASS: u32 = 0x20000;

/// A ruleset with every IR variant: both families, interval sets with /1, port 65535 and 12,000
/// elements, vmaps with jump and goto, negated lookups, notrack in raw prerouting, log, ct state and
/// status, marks, comments, nft's dependency elimination and payload merging.
fn full_ruleset(table: &str) -> Ruleset {
    use Direction::{Destination as Dst, Source as Src};
    use Family::{Ipv4, Ipv6};
    let sets = vec![
        set(
            "doc4",
            SetType::Ipv4Addr,
            vec![
                v4("192.0.2.0/24"),
                v4("198.51.100.0/25"),
                v4("203.0.113.5/32"),
            ],
        ),
        set("top4", SetType::Ipv4Addr, vec![v4("128.0.0.0/1")]),
        set("all4", SetType::Ipv4Addr, vec![v4("0.0.0.0/0")]),
        set(
            "adjacent4",
            SetType::Ipv4Addr,
            vec![v4("192.0.2.0/25"), v4("192.0.2.128/25")],
        ),
        set(
            "doc6",
            SetType::Ipv6Addr,
            vec![v6("2001:db8::/48"), v6("2001:db8:1::1/128"), v6("8000::/1")],
        ),
        set("big6", SetType::Ipv6Addr, many_v6(12_000)),
        set("empty4", SetType::Ipv4Addr, vec![]),
        // hash sets (no `flags interval`): single hosts
        set(
            "hosts4",
            SetType::Ipv4Hosts,
            vec![v4("192.0.2.1/32"), v4("192.0.2.3/32"), v4("203.0.113.9/32")],
        ),
        set(
            "hosts6",
            SetType::Ipv6Hosts,
            vec![v6("2001:db8::1/128"), v6("2001:db8::2/128")],
        ),
        set("nohosts6", SetType::Ipv6Hosts, vec![]),
        set(
            "ports",
            SetType::InetService,
            vec![
                SetElement::Ports(22, 22),
                SetElement::Ports(80, 89),
                SetElement::Ports(443, 443),
                SetElement::Ports(65535, 65535),
            ],
        ),
        set(
            "high-ports",
            SetType::InetService,
            vec![SetElement::Ports(0, 0), SetElement::Ports(1024, 65535)],
        ),
    ];
    let maps = vec![
        VerdictMap {
            name: "filter-in-dispatch".into(),
            elements: vec![
                ("eth0".into(), Verdict::Goto("filter-fh-eth0".into())),
                ("eth1".into(), Verdict::Jump("filter-fh-eth0".into())),
                ("veth-x.100".into(), Verdict::Goto("filter-fh-other".into())),
            ],
        },
        VerdictMap {
            name: "filter-out-dispatch".into(),
            elements: vec![("eth0".into(), Verdict::Jump("filter-th-eth0".into()))],
        },
        VerdictMap {
            name: "empty-dispatch".into(),
            elements: vec![],
        },
    ];
    let clear_marks = Rule {
        actions: vec![Action::MarkAnd(!(ACCEPT | PASS))],
        ..Rule::default()
    };
    let accepted = rule(
        vec![Match::Mark {
            mask: ACCEPT,
            value: ACCEPT,
        }],
        Some(Verdict::Accept),
    );
    let chains = vec![
        base(
            "raw-prerouting",
            Hook::Prerouting,
            -300,
            vec![
                clear_marks.clone(),
                Rule {
                    matches: vec![
                        Match::IfName {
                            dir: Src,
                            name: "eth0".into(),
                        },
                        addr(Src, Ipv4, "doc4", false),
                        port(Dst, 17, 53, false),
                    ],
                    actions: vec![Action::MarkOr(ACCEPT), Action::Notrack],
                    verdict: Some(Verdict::Accept),
                    comment: Some("policy untracked rule 0 (dnt.yaml:12)".into()),
                    ..Rule::default()
                },
                rule(vec![], Some(Verdict::Jump("raw-untracked".into()))),
            ],
        ),
        regular(
            "raw-untracked",
            vec![Rule {
                matches: vec![
                    addr(Src, Ipv6, "doc6", false),
                    port_set(Dst, 6, "ports", false),
                ],
                counter: true,
                actions: vec![Action::Notrack],
                verdict: Some(Verdict::Accept),
                ..Rule::default()
            }],
        ),
        base("raw-output", Hook::Output, -300, vec![clear_marks.clone()]),
        // Flow records (issue 14): a rate-limited NFLOG tail, a marked and logged allow.
        regular(
            "dl-00000000000000ff",
            vec![
                Rule {
                    matches: vec![Match::Limit {
                        rate: 20,
                        burst: 50,
                    }],
                    actions: vec![Action::NfLog {
                        group: 1024,
                        prefix: "hpd1 00000000000000ff".into(),
                    }],
                    ..Rule::default()
                },
                rule(vec![], Some(Verdict::Drop)),
            ],
        ),
        regular(
            "pi-flows",
            vec![
                Rule {
                    matches: vec![port(Dst, 6, 22, false)],
                    counter: true,
                    actions: vec![
                        Action::NfLog {
                            group: 65535,
                            prefix: "hpd1 0123456789abcdef".into(),
                        },
                        Action::MarkOr(ACCEPT),
                    ],
                    verdict: Some(Verdict::Return),
                    comment: Some("flows ingress[0] Allow".into()),
                },
                Rule {
                    counter: true,
                    verdict: Some(Verdict::Goto("dl-00000000000000ff".into())),
                    ..Rule::default()
                },
            ],
        ),
        base(
            "mangle-prerouting",
            Hook::Prerouting,
            -150,
            vec![
                rule(
                    vec![Match::CtState(states(true, true, false, false))],
                    Some(Verdict::Accept),
                ),
                accepted.clone(),
                rule(
                    vec![Match::IfNamePrefix {
                        dir: Src,
                        prefix: "cali".into(),
                    }],
                    Some(Verdict::Return),
                ),
                rule(
                    vec![],
                    Some(Verdict::Vmap {
                        key: IfDir::In,
                        map: "empty-dispatch".into(),
                    }),
                ),
            ],
        ),
        base(
            "filter-input",
            Hook::Input,
            0,
            vec![
                accepted.clone(),
                clear_marks.clone(),
                rule(
                    vec![],
                    Some(Verdict::Vmap {
                        key: IfDir::In,
                        map: "filter-in-dispatch".into(),
                    }),
                ),
                accepted.clone(),
                // nftablesFilterDenyAction: Reject (filter hooks only).
                rule(vec![port(Dst, 6, 8443, false)], Some(Verdict::Reject)),
            ],
        ),
        base(
            "filter-output",
            Hook::Output,
            0,
            vec![
                rule(
                    vec![Match::CtStatusDnat { negate: false }],
                    Some(Verdict::Return),
                ),
                rule(
                    vec![],
                    Some(Verdict::Vmap {
                        key: IfDir::Out,
                        map: "filter-out-dispatch".into(),
                    }),
                ),
            ],
        ),
        base(
            "filter-forward",
            Hook::Forward,
            0,
            vec![
                Rule {
                    actions: vec![Action::MarkAnd(!PASS)],
                    ..Rule::default()
                },
                rule(
                    vec![
                        Match::Mark {
                            mask: ACCEPT,
                            value: 0,
                        },
                        Match::IfName {
                            dir: Src,
                            name: "eth0".into(),
                        },
                    ],
                    Some(Verdict::Jump("filter-fh-other".into())),
                ),
                Rule {
                    actions: vec![Action::MarkOr(ACCEPT)],
                    ..Rule::default()
                },
            ],
        ),
        base(
            "mangle-postrouting",
            Hook::Postrouting,
            -150,
            vec![
                rule(
                    vec![Match::Mark {
                        mask: ACCEPT,
                        value: ACCEPT,
                    }],
                    Some(Verdict::Return),
                ),
                rule(
                    vec![
                        Match::CtStatusDnat { negate: false },
                        Match::IfName {
                            dir: Dst,
                            name: "eth0".into(),
                        },
                    ],
                    Some(Verdict::Jump("filter-th-eth0".into())),
                ),
                rule(
                    vec![Match::CtStatusDnat { negate: true }],
                    Some(Verdict::Return),
                ),
            ],
        ),
        regular(
            "filter-fh-eth0",
            vec![
                rule(
                    vec![Match::CtState(states(true, true, false, false))],
                    Some(Verdict::Accept),
                ),
                rule(
                    vec![Match::CtState(states(false, false, false, true))],
                    Some(Verdict::Drop),
                ),
                rule(
                    vec![Match::CtState(states(false, false, true, false))],
                    None,
                ),
                rule(vec![], Some(Verdict::Jump("filter-failsafe-in".into()))),
                rule(
                    vec![Match::Mark {
                        mask: PASS,
                        value: 0,
                    }],
                    Some(Verdict::Jump("filter-pi-allow".into())),
                ),
                rule(
                    vec![Match::Mark {
                        mask: ACCEPT,
                        value: ACCEPT,
                    }],
                    Some(Verdict::Return),
                ),
                Rule {
                    matches: vec![Match::Mark {
                        mask: PASS,
                        value: 0,
                    }],
                    verdict: Some(Verdict::Drop),
                    comment: Some("end of tier default".into()),
                    ..Rule::default()
                },
                Rule {
                    verdict: Some(Verdict::Drop),
                    comment: Some("no profile matched \"quoted\" $x".into()),
                    ..Rule::default()
                },
            ],
        ),
        regular(
            "filter-failsafe-in",
            vec![
                rule(
                    vec![port_set(Dst, 6, "ports", false)],
                    Some(Verdict::Accept),
                ),
                rule(vec![port(Dst, 17, 68, false)], Some(Verdict::Accept)),
                rule(vec![port(Src, 132, 9, false)], Some(Verdict::Accept)),
            ],
        ),
        regular(
            "filter-pi-allow",
            vec![
                // addresses, both families and directions, plain and negated
                Rule {
                    matches: vec![
                        addr(Src, Ipv4, "doc4", false),
                        addr(Dst, Ipv4, "top4", true),
                    ],
                    actions: vec![Action::MarkOr(ACCEPT)],
                    verdict: Some(Verdict::Return),
                    comment: Some("policy allow rule 0 (allow.yaml:10)".into()),
                    ..Rule::default()
                },
                Rule {
                    matches: vec![
                        addr(Src, Ipv6, "big6", true),
                        addr(Dst, Ipv6, "doc6", false),
                    ],
                    actions: vec![Action::MarkOr(ACCEPT)],
                    verdict: Some(Verdict::Return),
                    ..Rule::default()
                },
                rule(
                    vec![
                        addr(Src, Ipv4, "all4", false),
                        addr(Dst, Ipv4, "adjacent4", false),
                    ],
                    None,
                ),
                rule(vec![addr(Src, Ipv4, "empty4", true)], None),
                // ports: single, sets, negated, every protocol, merged pairs, the negated pair
                rule(
                    vec![port(Src, 6, 1024, false), port(Dst, 6, 22, false)],
                    Some(Verdict::Accept),
                ),
                rule(
                    vec![port(Dst, 17, 53, false), port(Src, 17, 53, false)],
                    Some(Verdict::Accept),
                ),
                rule(
                    vec![port(Src, 6, 22, true), port(Dst, 6, 80, true)],
                    Some(Verdict::Drop),
                ),
                rule(
                    vec![port(Src, 6, 22, false), port(Dst, 6, 80, true)],
                    Some(Verdict::Drop),
                ),
                rule(
                    vec![
                        port_set(Src, 17, "high-ports", true),
                        port(Dst, 17, 5060, false),
                    ],
                    None,
                ),
                rule(vec![port(Src, 132, 5060, false)], Some(Verdict::Accept)),
                rule(vec![port_set(Dst, 6, "ports", true)], Some(Verdict::Drop)),
                // explicit protocol matches before the implied ones
                rule(
                    vec![
                        Match::L4Proto {
                            proto: 6,
                            negate: false,
                        },
                        port(Dst, 6, 443, false),
                    ],
                    Some(Verdict::Accept),
                ),
                rule(
                    vec![Match::L4Proto {
                        proto: 17,
                        negate: true,
                    }],
                    Some(Verdict::Drop),
                ),
                rule(
                    vec![
                        Match::NfProto(Ipv4),
                        addr(Src, Ipv4, "doc4", false),
                        Match::NfProto(Ipv6),
                    ],
                    Some(Verdict::Drop),
                ),
                rule(
                    vec![
                        Match::L4Proto {
                            proto: 1,
                            negate: false,
                        },
                        Match::IcmpType {
                            family: Ipv4,
                            icmp_type: 8,
                            negate: false,
                        },
                    ],
                    Some(Verdict::Accept),
                ),
                // icmp: types and codes, both families, merged and negated
                rule(
                    vec![
                        Match::IcmpType {
                            family: Ipv4,
                            icmp_type: 8,
                            negate: false,
                        },
                        Match::IcmpCode {
                            family: Ipv4,
                            code: 0,
                            negate: false,
                        },
                    ],
                    Some(Verdict::Accept),
                ),
                rule(
                    vec![
                        Match::IcmpType {
                            family: Ipv6,
                            icmp_type: 128,
                            negate: true,
                        },
                        Match::IcmpCode {
                            family: Ipv6,
                            code: 0,
                            negate: true,
                        },
                    ],
                    Some(Verdict::Drop),
                ),
                rule(
                    vec![Match::IcmpType {
                        family: Ipv6,
                        icmp_type: 135,
                        negate: false,
                    }],
                    Some(Verdict::Accept),
                ),
                rule(
                    vec![
                        addr(Src, Ipv6, "doc6", false),
                        Match::IcmpCode {
                            family: Ipv6,
                            code: 4,
                            negate: false,
                        },
                    ],
                    Some(Verdict::Accept),
                ),
                // interfaces, ct, marks, log, counter, goto
                rule(
                    vec![
                        Match::IfName {
                            dir: Src,
                            name: "eth0".into(),
                        },
                        Match::IfName {
                            dir: Dst,
                            name: "odd*".into(),
                        },
                        Match::IfNamePrefix {
                            dir: Dst,
                            prefix: "cali".into(),
                        },
                        Match::IfNamePrefix {
                            dir: Src,
                            prefix: String::new(),
                        },
                    ],
                    Some(Verdict::Goto("filter-fh-other".into())),
                ),
                Rule {
                    matches: vec![
                        Match::CtState(states(false, false, true, false)),
                        Match::Mark {
                            mask: u32::MAX,
                            value: 5,
                        },
                        Match::CtStatusDnat { negate: true },
                    ],
                    counter: true,
                    actions: vec![
                        Action::Log {
                            prefix: "hostpolicy drop: ".into(),
                        },
                        Action::Log {
                            prefix: String::new(),
                        },
                    ],
                    verdict: Some(Verdict::Drop),
                    comment: Some("policy deny rule 3 (deny.yaml:40)".into()),
                },
            ],
        ),
        regular("filter-fh-other", vec![rule(vec![], Some(Verdict::Return))]),
        regular("direct-matches", direct_match_rules()),
        regular(
            "host-sets",
            vec![
                rule(
                    vec![addr(Src, Ipv4, "hosts4", false)],
                    Some(Verdict::Accept),
                ),
                rule(vec![addr(Dst, Ipv4, "hosts4", true)], Some(Verdict::Drop)),
                rule(
                    vec![addr(Src, Ipv6, "hosts6", false), port(Dst, 6, 22, false)],
                    None,
                ),
                rule(vec![addr(Dst, Ipv6, "nohosts6", true)], None),
            ],
        ),
        regular(
            "filter-th-eth0",
            vec![Rule {
                matches: vec![addr(Dst, Ipv4, "doc4", false), port(Dst, 6, 31852, false)],
                counter: true,
                actions: vec![Action::MarkOr(ACCEPT)],
                verdict: Some(Verdict::Return),
                comment: Some("é ünïcode comment".into()),
            }],
        ),
    ];
    Ruleset {
        table: table.into(),
        comment: "hostpolicyd sha256:0123456789abcdef".into(),
        sets,
        maps,
        chains: chains.into_iter().map(std::sync::Arc::new).collect(),
        origins: Default::default(),
    }
}

fn net(dir: Direction, n: &str, negate: bool) -> Match {
    let net: IpNet = n.parse().unwrap();
    let family = match net {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
    };
    Match::Net {
        dir,
        family,
        net,
        negate,
    }
}

fn port_range(dir: Direction, proto: u8, lo: u16, hi: u16, negate: bool) -> Match {
    Match::Port {
        dir,
        proto,
        port: PortMatch::Range(lo, hi),
        negate,
    }
}

/// Networks and port ranges matched without a set (issue 7): byte-aligned and other prefixes of both
/// families, hosts, /0, negations, and the adjacent combinations nft could merge (saddr + daddr,
/// sport + dport, negated or not, singles next to ranges).
fn direct_match_rules() -> Vec<Rule> {
    use Direction::{Destination as Dst, Source as Src};
    let nets = [
        "10.0.0.0/8",
        "10.1.0.0/16",
        "192.0.2.0/24",
        "10.0.0.0/20",
        "192.0.2.128/25",
        "192.0.2.6/31",
        "192.0.2.1/32",
        "0.0.0.0/0",
        "128.0.0.0/1",
        "2001:db8::/32",
        "2001:db8::/64",
        "2001:db8::/61",
        "2001:db8::1/128",
        "2001:db8:0:1::/127",
        "::/0",
        "8000::/1",
    ];
    let mut rules = Vec::new();
    for (i, n) in nets.iter().enumerate() {
        let dir = if i % 2 == 0 { Src } else { Dst };
        rules.push(rule(vec![net(dir, n, false)], Some(Verdict::Accept)));
        rules.push(rule(vec![net(dir, n, true)], Some(Verdict::Drop)));
    }
    let adjacent = |a: &str, b: &str, na: bool, nb: bool| {
        rule(
            vec![net(Src, a, na), net(Dst, b, nb)],
            Some(Verdict::Return),
        )
    };
    for (na, nb) in [(false, false), (true, true), (false, true), (true, false)] {
        rules.push(adjacent("192.0.2.1/32", "192.0.2.2/32", na, nb));
        rules.push(adjacent("192.0.2.1/32", "10.0.0.0/8", na, nb));
        rules.push(adjacent("10.0.0.0/24", "192.0.2.2/32", na, nb));
        rules.push(adjacent("2001:db8::1/128", "2001:db8::2/128", na, nb));
        rules.push(adjacent("2001:db8::/48", "2001:db8:1::/64", na, nb));
    }
    // daddr before saddr, and a network next to a port
    rules.push(rule(
        vec![
            net(Dst, "192.0.2.2/32", false),
            net(Src, "192.0.2.1/32", false),
        ],
        None,
    ));
    rules.push(Rule {
        matches: vec![
            net(Src, "198.51.100.0/24", false),
            port_range(Dst, 6, 1000, 2000, false),
            net(Dst, "203.0.113.0/28", true),
        ],
        counter: true,
        ..Rule::default()
    });
    for proto in [6, 17, 132] {
        rules.push(rule(
            vec![port_range(Dst, proto, 1000, 1003, false)],
            Some(Verdict::Accept),
        ));
        rules.push(rule(
            vec![port_range(Src, proto, 0, 1023, true)],
            Some(Verdict::Drop),
        ));
        rules.push(rule(vec![port_range(Dst, proto, 1024, 65535, false)], None));
        rules.push(rule(vec![port_range(Dst, proto, 0, 65535, true)], None));
    }
    for (na, nb) in [(false, false), (true, true), (false, true), (true, false)] {
        rules.push(rule(vec![port(Src, 6, 53, na), port(Dst, 6, 80, nb)], None));
        rules.push(rule(
            vec![port(Src, 17, 53, na), port_range(Dst, 17, 1000, 2000, nb)],
            None,
        ));
        rules.push(rule(
            vec![port_range(Src, 6, 1000, 2000, na), port(Dst, 6, 80, nb)],
            None,
        ));
        rules.push(rule(
            vec![port_range(Src, 6, 1, 2, na), port_range(Dst, 6, 3, 4, nb)],
            None,
        ));
    }
    rules
}

/// A small ruleset: one base chain, one set.
fn small_ruleset(table: &str, comment: &str, dport: u16) -> Ruleset {
    Ruleset {
        table: table.into(),
        comment: comment.into(),
        sets: vec![set(
            "doc4",
            SetType::Ipv4Addr,
            vec![v4("192.0.2.0/24"), v4("203.0.113.0/24")],
        )],
        maps: vec![],
        chains: vec![
            base(
                "filter-input",
                Hook::Input,
                0,
                vec![
                    rule(
                        vec![
                            addr(Direction::Source, Family::Ipv4, "doc4", false),
                            port(Direction::Destination, 6, dport, false),
                        ],
                        Some(Verdict::Accept),
                    ),
                    rule(vec![], Some(Verdict::Jump("filter-other".into()))),
                ],
            ),
            regular("filter-other", vec![rule(vec![], Some(Verdict::Return))]),
        ]
        .into_iter()
        .map(std::sync::Arc::new)
        .collect(),
        origins: Default::default(),
    }
}

/// Runs `nft ARGS` in `ns` with `input` on stdin; panics unless it succeeds; returns stdout.
fn nft_stdin(ns: &NetNs, args: &[&str], input: &str) -> String {
    let mut child = ns
        .command("nft", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {args:?} failed: {}\n--- input (first 4000 bytes) ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        &input[..input.len().min(4000)]
    );
    // nft writes its debug output to stdout
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn list_json(ns: &NetNs, family: &str, table: &str) -> String {
    ns.exec_ok("nft", ["-j", "list", "table", family, table])
}

fn list_text(ns: &NetNs, family: &str, table: &str) -> String {
    ns.exec_ok("nft", ["list", "table", family, table])
}

/// The JSON listing with every "handle" removed.
fn without_handles(json: &str) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(json).expect("nft -j output is JSON");
    strip(&mut v);
    v
}

/// The per-rule expression blocks of `nft --debug=netlink` output (userdata and set lines dropped), in
/// the format of `debug_expressions`: a header line, expression lines, an empty line.
fn rule_blocks(debug: &str, table: &str) -> String {
    let head = format!("inet {table} ");
    let mut out = String::new();
    let mut in_rule = false;
    for line in debug.lines() {
        if line.starts_with(&head) {
            if in_rule {
                out.push('\n');
            }
            in_rule = true;
            out.push_str(line);
            out.push('\n');
        } else if in_rule && line.starts_with("  [") {
            out.push_str(line.trim_end());
            out.push('\n');
        } else if in_rule && !line.starts_with("  userdata") {
            in_rule = false;
            out.push('\n');
        }
    }
    if in_rule {
        out.push('\n');
    }
    out
}

fn apply_in(ns: &NetNs, rs: &Ruleset) -> Result<(), hostpolicyd::nft::DataplaneError> {
    ns.run(|| Netlink::new()?.apply(rs))
}

// ---------------------------------------------------------------------------------------------------
// Tests

#[test]
fn render_loaded_with_nft_lists_the_same_as_apply() {
    if !require_root("render_loaded_with_nft_lists_the_same_as_apply") {
        return;
    }
    let rs = full_ruleset("hostpolicy");
    let text = render(&rs);

    let a = NetNs::new("apply");
    apply_in(&a, &rs).expect("apply");
    let ours = list_json(&a, "inet", "hostpolicy");

    let b = NetNs::new("nftf");
    // nft's bytecode for our text, rule by rule, is the bytecode we sent.
    let debug = nft_stdin(&b, &["--debug=netlink", "-c", "-f", "-"], &text);
    let theirs_ops = rule_blocks(&debug, "hostpolicy");
    let ours_ops = debug_expressions(&rs);
    assert_eq!(
        theirs_ops.matches("\ninet hostpolicy ").count() + 1,
        rs.rule_count(),
        "rules in nft's output"
    );
    if theirs_ops != ours_ops {
        let (t, o): (Vec<_>, Vec<_>) = (
            theirs_ops.split("\n\n").collect(),
            ours_ops.split("\n\n").collect(),
        );
        for (x, y) in t.iter().zip(&o) {
            assert_eq!(x, y, "first differing rule: nft (left) vs ours (right)");
        }
        assert_eq!(t.len(), o.len(), "number of rules");
    }
    nft_stdin(&b, &["-f", "-"], &text);
    let theirs = list_json(&b, "inet", "hostpolicy");

    let (o, t) = (without_handles(&ours), without_handles(&theirs));
    if o != t {
        // Show the difference in the readable form too.
        let (ot, tt) = (
            list_text(&a, "inet", "hostpolicy"),
            list_text(&b, "inet", "hostpolicy"),
        );
        for (i, (x, y)) in ot.lines().zip(tt.lines()).enumerate() {
            assert_eq!(
                x, y,
                "line {i} of `nft list table`: apply (left) vs nft -f render (right)"
            );
        }
        panic!("JSON listings differ:\napply:  {o}\nnft -f: {t}");
    }
    // Sanity: the listing has what we think it has.
    let listed = list_text(&a, "inet", "hostpolicy");
    for needle in [
        "comment \"hostpolicyd sha256:0123456789abcdef\"",
        "128.0.0.0/1",
        "65535",
        "notrack",
        "iifname vmap @filter-in-dispatch",
        "\"eth0\" : goto filter-fh-eth0",
        "\"eth1\" : jump filter-fh-eth0",
        "ip6 saddr != @big6",
        "ip daddr 10.0.0.0/20 accept",
        "set hosts4 {\n\t\ttype ipv4_addr\n\t\telements = {",
        "ip saddr @hosts4 accept",
        "ip6 daddr != 2001:db8::/61 drop",
        "tcp dport 1000-1003 accept",
        "log prefix \"hostpolicy drop: \" level info",
        "comment \"no profile matched 'quoted' $x\"",
    ] {
        assert!(
            listed.contains(needle),
            "{needle:?} not in:\n{}",
            &listed[..listed.len().min(20000)]
        );
    }
}

#[test]
fn a_rejected_batch_names_the_object_and_changes_nothing() {
    if !require_root("a_rejected_batch_names_the_object_and_changes_nothing") {
        return;
    }
    let ns = NetNs::new("atomic");

    // First apply fails: no table appears.
    let mut bad = small_ruleset("hostpolicy", "gen 0", 22);
    bad.chain_mut(1)
        .rules
        .push(rule(vec![], Some(Verdict::Jump("no-such-chain".into()))));
    let err = apply_in(&ns, &bad).unwrap_err();
    assert!(
        err.message.contains("rule 1 of chain filter-other"),
        "{err}"
    );
    assert_eq!(err.errno, Some(libc::ENOENT), "{err}");
    assert!(
        ns.exec("nft", ["list", "table", "inet", "hostpolicy"])
            .status
            .code()
            != Some(0)
    );

    // A good table, then bad ones: a jump to a missing chain, an overlapping element, a bad set reference.
    let good = full_ruleset("hostpolicy");
    apply_in(&ns, &good).expect("good apply");
    let before = list_json(&ns, "inet", "hostpolicy");
    let before_text = list_text(&ns, "inet", "hostpolicy");

    let mut jump = full_ruleset("hostpolicy");
    jump.comment = "gen 2".into();
    let n = jump.chains[9].rules.len();
    jump.chain_mut(9).rules.push(Rule {
        verdict: Some(Verdict::Jump("missing".into())),
        comment: Some("bad jump".into()),
        ..Rule::default()
    });
    let err = apply_in(&ns, &jump).unwrap_err();
    let want = format!(
        "kernel rejected rule {n} of chain {} (comment \"bad jump\")",
        jump.chains[9].name
    );
    assert!(err.message.starts_with(&want), "{err}");
    assert!(err.message.contains("No such file or directory"), "{err}");

    let mut overlap = full_ruleset("hostpolicy");
    overlap.sets[0].elements = vec![v4("192.0.2.0/24"), v4("192.0.2.128/25")];
    let err = apply_in(&ns, &overlap).unwrap_err();
    assert!(err.message.contains("of set doc4"), "{err}");
    eprintln!("overlapping element: {err}");

    let mut missing_set = full_ruleset("hostpolicy");
    missing_set.chain_mut(0).rules[1].matches[1] =
        addr(Direction::Source, Family::Ipv4, "nope", false);
    let err = apply_in(&ns, &missing_set).unwrap_err();
    assert!(
        err.message.contains("rule 1 of chain raw-prerouting"),
        "{err}"
    );
    eprintln!("missing set: {err}");

    let mut dup = full_ruleset("hostpolicy");
    dup.chains.push(regular("filter-fh-other", vec![]).into());
    let err = apply_in(&ns, &dup).unwrap_err();
    assert!(err.message.contains("chain filter-fh-other"), "{err}");
    assert_eq!(
        err.errno, None,
        "refused before sending: the kernel would merge a duplicate silently"
    );

    assert_eq!(
        list_json(&ns, "inet", "hostpolicy"),
        before,
        "the rejected batches changed the table"
    );
    assert_eq!(list_text(&ns, "inet", "hostpolicy"), before_text);
    assert_eq!(
        ns.run(|| Netlink::new().unwrap().table_comment("hostpolicy"))
            .unwrap()
            .as_deref(),
        Some("hostpolicyd sha256:0123456789abcdef")
    );
}

#[test]
fn foreign_tables_survive_apply_reapply_and_flush() {
    if !require_root("foreign_tables_survive_apply_reapply_and_flush") {
        return;
    }
    let ns = NetNs::new("foreign");
    let foreign = r#"
table ip nat {
	chain kube-dstnat {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 192.0.2.10 tcp dport 31852 dnat to 198.51.100.20:8080
	}
}
table inet filter {
	set blocked { type ipv4_addr; flags interval; elements = { 203.0.113.0/24 } }
	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr @blocked counter drop
		tcp dport 2222 accept comment "docker-ish"
	}
}
table ip hostpolicy {
	chain c {
		type filter hook input priority 10; policy accept;
		counter
	}
}
"#;
    nft_stdin(&ns, &["-f", "-"], foreign);
    let snapshot = || {
        (
            list_text(&ns, "ip", "nat"),
            list_text(&ns, "inet", "filter"),
            list_text(&ns, "ip", "hostpolicy"),
        )
    };
    let before = snapshot();

    apply_in(&ns, &small_ruleset("hostpolicy", "gen 1", 22)).expect("apply");
    assert_eq!(snapshot(), before, "after apply");
    apply_in(&ns, &full_ruleset("hostpolicy")).expect("re-apply");
    assert_eq!(snapshot(), before, "after re-apply");
    apply_in(&ns, &small_ruleset("hostpolicy", "gen 3", 2022)).expect("re-apply");
    let ours = list_text(&ns, "inet", "hostpolicy");
    assert!(
        ours.contains("tcp dport 2022 accept") && !ours.contains("big6"),
        "{ours}"
    );
    assert_eq!(snapshot(), before, "after second re-apply");
    ns.run(|| Netlink::new().unwrap().flush("hostpolicy"))
        .expect("flush");
    assert_eq!(snapshot(), before, "after flush");
    assert!(
        ns.exec("nft", ["list", "table", "inet", "hostpolicy"])
            .status
            .code()
            != Some(0)
    );
    // The `ip hostpolicy` table (same name, other family) is still there and not ours.
    assert_eq!(
        ns.run(|| Netlink::new().unwrap().table_comment("hostpolicy")),
        Ok(None)
    );
}

#[test]
fn table_comment_round_trips_and_flush_is_idempotent() {
    if !require_root("table_comment_round_trips_and_flush_is_idempotent") {
        return;
    }
    let ns = NetNs::new("comment");
    ns.run(|| {
        let mut nl = Netlink::new().unwrap();
        assert_eq!(nl.table_comment("hostpolicy"), Ok(None));
        assert_eq!(nl.flush("hostpolicy"), Ok(()), "flush of a missing table");
        nl.apply(&small_ruleset(
            "hostpolicy",
            "hostpolicyd sha256:feedface",
            22,
        ))
        .unwrap();
        assert_eq!(
            nl.table_comment("hostpolicy"),
            Ok(Some("hostpolicyd sha256:feedface".into()))
        );
        nl.apply(&small_ruleset("hostpolicy", "", 22)).unwrap();
        assert_eq!(
            nl.table_comment("hostpolicy"),
            Ok(Some(String::new())),
            "a table without comment"
        );
        let long = "x".repeat(200);
        nl.apply(&small_ruleset("hostpolicy", &long, 22)).unwrap();
        assert_eq!(
            nl.table_comment("hostpolicy"),
            Ok(Some("x".repeat(128))),
            "cut like render cuts it"
        );
        nl.apply(&small_ruleset("other-table", "other", 22))
            .unwrap();
        assert_eq!(nl.table_comment("other-table"), Ok(Some("other".into())));
        assert_eq!(nl.flush("hostpolicy"), Ok(()));
        assert_eq!(nl.table_comment("hostpolicy"), Ok(None));
        assert_eq!(nl.flush("hostpolicy"), Ok(()), "second flush");
        assert_eq!(
            nl.table_comment("other-table"),
            Ok(Some("other".into())),
            "other table untouched"
        );
    });
    // The comment as nft shows it.
    assert!(list_text(&ns, "inet", "other-table").contains("comment \"other\""));
}

#[test]
fn a_100000_element_set_applies() {
    if !require_root("a_100000_element_set_applies") {
        return;
    }
    let ns = NetNs::new("bigset");
    let mut rs = small_ruleset("hostpolicy", "big", 22);
    rs.sets
        .push(set("big6", SetType::Ipv6Addr, many_v6(100_000)));
    rs.chain_mut(0).rules.push(rule(
        vec![addr(Direction::Source, Family::Ipv6, "big6", false)],
        Some(Verdict::Drop),
    ));
    let t = Instant::now();
    apply_in(&ns, &rs).expect("apply of a 100,000-element set");
    eprintln!(
        "apply of a 100,000-element interval set: {:?} (informational)",
        t.elapsed()
    );
    // Spot checks without listing 100,000 elements: the first, one in the middle, the last.
    for e in [
        "2001:db8::/64",
        "2001:db8:1:86a0::/64",
        "2001:db8:3:d3e::/64",
    ] {
        ns.exec_ok(
            "nft",
            [
                "get",
                "element",
                "inet",
                "hostpolicy",
                "big6",
                &format!("{{ {e} }}"),
            ],
        );
    }
    let gap = ns.exec(
        "nft",
        [
            "get",
            "element",
            "inet",
            "hostpolicy",
            "big6",
            "{ 2001:db8:0:1::/64 }",
        ],
    );
    assert!(
        !gap.status.success(),
        "a gap between elements is not in the set"
    );
    // Replacing it works too (delete + add of 100,000 elements in one batch).
    rs.comment = "big 2".into();
    apply_in(&ns, &rs).expect("re-apply");
    assert_eq!(
        ns.run(|| Netlink::new().unwrap().table_comment("hostpolicy")),
        Ok(Some("big 2".into()))
    );
}
