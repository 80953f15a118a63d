//! The ruleset as nft text: what `hostpolicyd render` prints, what golden tests compare, and what
//! `nft -f` loads into the same kernel ruleset as [`super::Netlink`]'s apply (same bytecode: the
//! statements are written so that nft's own dependencies and merges give exactly what
//! `lower.rs` encodes). No `flush`/`delete` lines: loading it into a namespace that already has the
//! table adds to it.

use std::fmt::Write as _;

use ipnet::IpNet;

use crate::ruleset::{
    Action, Chain, CtStates, Direction, Family, Hook, IfDir, Match, PortMatch, Rule, Ruleset, Set,
    SetElement, Verdict, VerdictMap,
};

use super::lower::{ct_state_bits, neq_as_range};
use super::{clean_comment, clean_log_prefix, HASH_CHAIN, TABLE_COMMENT};

/// Elements per line in a set or map.
const PER_LINE: usize = 8;

/// The whole table as nft text: `table inet NAME { comment; sets; maps; chains; hash chain }`, as
/// [`super::Netlink`]'s apply leaves it: the table's comment is the static [`TABLE_COMMENT`], the content
/// hash (`Ruleset::comment`) is the comment of the [`HASH_CHAIN`] chain, the last one.
pub fn render(rs: &Ruleset) -> String {
    let mut out = String::with_capacity(256 + rs.rule_count() * 96);
    let _ = writeln!(out, "table inet {} {{", rs.table);
    let _ = writeln!(out, "\tcomment \"{TABLE_COMMENT}\"");
    for set in &rs.sets {
        out.push('\n');
        render_set(&mut out, set);
    }
    for map in &rs.maps {
        out.push('\n');
        render_map(&mut out, map);
    }
    for chain in &rs.chains {
        out.push('\n');
        render_chain(&mut out, chain);
    }
    let _ = writeln!(out, "\n\tchain {HASH_CHAIN} {{");
    let comment = clean_comment(&rs.comment);
    if !comment.is_empty() {
        let _ = writeln!(out, "\t\tcomment \"{comment}\"");
    }
    out.push_str("\t}\n}\n");
    out
}

fn elements(out: &mut String, items: impl ExactSizeIterator<Item = String>) {
    if items.len() == 0 {
        return;
    }
    out.push_str("\t\telements = { ");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(if i % PER_LINE == 0 {
                ",\n\t\t\t     "
            } else {
                ", "
            });
        }
        out.push_str(&item);
    }
    out.push_str(" }\n");
}

fn render_set(out: &mut String, set: &Set) {
    let ty = super::netlink::set_type_name(set.set_type);
    let _ = writeln!(out, "\tset {} {{\n\t\ttype {ty}", set.name);
    if set.set_type.is_interval() {
        out.push_str("\t\tflags interval\n");
    }
    elements(out, set.elements.iter().map(element));
    out.push_str("\t}\n");
}

/// A set element as nft writes it: a plain address for a host prefix, else the (truncated) prefix.
fn element(e: &SetElement) -> String {
    match e {
        SetElement::V4(n) if n.prefix_len() == 32 => n.addr().to_string(),
        SetElement::V4(n) => n.trunc().to_string(),
        SetElement::V6(n) if n.prefix_len() == 128 => n.addr().to_string(),
        SetElement::V6(n) => n.trunc().to_string(),
        SetElement::Ports(a, b) if a == b => a.to_string(),
        SetElement::Ports(a, b) => format!("{a}-{b}"),
    }
}

/// A network as nft writes it: a plain address for a host prefix, else the prefix.
fn net_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.trunc().to_string()
    }
}

fn render_map(out: &mut String, map: &VerdictMap) {
    let _ = writeln!(out, "\tmap {} {{\n\t\ttype ifname : verdict", map.name);
    elements(
        out,
        map.elements
            .iter()
            .map(|(ifname, v)| format!("\"{ifname}\" : {}", verdict(v))),
    );
    out.push_str("\t}\n");
}

fn render_chain(out: &mut String, chain: &Chain) {
    let _ = writeln!(out, "\tchain {} {{", chain.name);
    if let Some(base) = chain.base {
        let hook = match base.hook {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        };
        let _ = writeln!(
            out,
            "\t\ttype filter hook {hook} priority {}; policy accept;",
            base.priority
        );
    }
    for rule in &chain.rules {
        out.push_str("\t\t");
        render_rule(out, rule);
        out.push('\n');
    }
    out.push_str("\t}\n");
}

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Reject => "reject".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        Verdict::Vmap {
            key: IfDir::In,
            map,
        } => format!("iifname vmap @{map}"),
        Verdict::Vmap {
            key: IfDir::Out,
            map,
        } => format!("oifname vmap @{map}"),
    }
}

fn neg(negate: bool) -> &'static str {
    if negate {
        "!= "
    } else {
        ""
    }
}

fn l4_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        p => p.to_string(),
    }
}

fn ct_states(s: &CtStates) -> String {
    let names = [
        (s.invalid, "invalid"),
        (s.established, "established"),
        (s.related, "related"),
        (s.new, "new"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        format!("0x{:x}", ct_state_bits(s))
    } else {
        v.join(",")
    }
}

/// One rule on one line, statements separated by spaces.
pub(crate) fn render_rule(out: &mut String, rule: &Rule) {
    let ranges = neq_as_range(rule);
    let mut parts: Vec<String> = Vec::with_capacity(rule.matches.len() + rule.actions.len() + 3);
    for (i, m) in rule.matches.iter().enumerate() {
        let as_range = ranges.contains(&i);
        let value = |v: String| if as_range { format!("{v}-{v}") } else { v };
        parts.push(match m {
            Match::IfName { dir, name } => {
                // a trailing '*' would make it a prefix match: escape it
                let name = match name.strip_suffix('*') {
                    Some(stem) => format!("{stem}\\*"),
                    None => name.clone(),
                };
                format!("{} \"{name}\"", ifname_key(*dir))
            }
            Match::IfNamePrefix { prefix, .. } if prefix.is_empty() => continue,
            Match::IfNamePrefix { dir, prefix } => format!("{} \"{prefix}*\"", ifname_key(*dir)),
            Match::NfProto(Family::Ipv4) => "meta nfproto ipv4".into(),
            Match::NfProto(Family::Ipv6) => "meta nfproto ipv6".into(),
            Match::L4Proto { proto, negate } => {
                format!("meta l4proto {}{}", neg(*negate), l4_name(*proto))
            }
            Match::Addr {
                dir,
                family,
                set,
                negate,
            } => {
                let fam = match family {
                    Family::Ipv4 => "ip",
                    Family::Ipv6 => "ip6",
                };
                format!("{fam} {} {}@{set}", addr_key(*dir), neg(*negate))
            }
            Match::Net {
                dir,
                family,
                net,
                negate,
            } => {
                let fam = match family {
                    Family::Ipv4 => "ip",
                    Family::Ipv6 => "ip6",
                };
                format!("{fam} {} {}{}", addr_key(*dir), neg(*negate), net_text(net))
            }
            Match::Port {
                dir,
                proto,
                port,
                negate,
            } => {
                let p = match proto {
                    6 => "tcp",
                    17 => "udp",
                    132 => "sctp",
                    _ => "th",
                };
                let key = match dir {
                    Direction::Source => "sport",
                    Direction::Destination => "dport",
                };
                let v = match port {
                    PortMatch::Single(n) => value(n.to_string()),
                    PortMatch::Range(lo, hi) => format!("{lo}-{hi}"),
                    PortMatch::Set(s) => format!("@{s}"),
                };
                format!("{p} {key} {}{v}", neg(*negate))
            }
            Match::IcmpType {
                family,
                icmp_type,
                negate,
            } => {
                format!(
                    "{} type {}{}",
                    icmp_name(*family),
                    neg(*negate),
                    value(icmp_type.to_string())
                )
            }
            Match::IcmpCode {
                family,
                code,
                negate,
            } => {
                format!(
                    "{} code {}{}",
                    icmp_name(*family),
                    neg(*negate),
                    value(code.to_string())
                )
            }
            Match::CtState(s) => format!("ct state {}", ct_states(s)),
            Match::CtStatusDnat { negate: false } => "ct status dnat".into(),
            Match::CtStatusDnat { negate: true } => "ct status & dnat == 0".into(),
            Match::Mark {
                mask: u32::MAX,
                value,
            } => format!("meta mark 0x{value:08x}"),
            Match::Mark { mask, value } => format!("meta mark & 0x{mask:08x} == 0x{value:08x}"),
            Match::Limit { rate, burst } => {
                format!("limit rate {rate}/second burst {burst} packets")
            }
        });
    }
    if rule.counter {
        parts.push("counter".into());
    }
    for a in &rule.actions {
        parts.push(match a {
            Action::MarkOr(bits) => format!("meta mark set meta mark | 0x{bits:08x}"),
            Action::MarkAnd(mask) => format!("meta mark set meta mark & 0x{mask:08x}"),
            Action::Log { prefix } => {
                let prefix = clean_log_prefix(prefix);
                if prefix.is_empty() {
                    "log level info".into()
                } else {
                    format!("log prefix \"{prefix}\" level info")
                }
            }
            Action::Notrack => "notrack".into(),
            Action::NfLog { group, prefix } => {
                format!("log prefix \"{}\" group {group}", clean_log_prefix(prefix))
            }
        });
    }
    if let Some(v) = &rule.verdict {
        parts.push(verdict(v));
    }
    if let Some(c) = &rule.comment {
        parts.push(format!("comment \"{}\"", clean_comment(c)));
    }
    out.push_str(&parts.join(" "));
}

fn ifname_key(dir: Direction) -> &'static str {
    match dir {
        Direction::Source => "iifname",
        Direction::Destination => "oifname",
    }
}

fn addr_key(dir: Direction) -> &'static str {
    match dir {
        Direction::Source => "saddr",
        Direction::Destination => "daddr",
    }
}

fn icmp_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "icmp",
        Family::Ipv6 => "icmpv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{BaseHook, Hook, SetType};

    #[test]
    fn golden_small_ruleset() {
        let rs = Ruleset {
            table: "hostpolicy".into(),
            comment: "hostpolicyd sha256:abc".into(),
            sets: vec![
                Set {
                    name: "sel-a-v4".into(),
                    set_type: SetType::Ipv4Addr,
                    elements: vec![
                        SetElement::V4("192.0.2.0/24".parse().unwrap()),
                        SetElement::V4("198.51.100.7/32".parse().unwrap()),
                    ],
                },
                Set {
                    name: "sel-a-v6".into(),
                    set_type: SetType::Ipv6Addr,
                    elements: vec![],
                },
                Set {
                    name: "ports".into(),
                    set_type: SetType::InetService,
                    elements: vec![SetElement::Ports(22, 22), SetElement::Ports(8000, 8080)],
                },
            ],
            maps: vec![VerdictMap {
                name: "filter-in-dispatch".into(),
                elements: vec![
                    ("eth0".into(), Verdict::Goto("filter-fh-eth0".into())),
                    ("eth1".into(), Verdict::Jump("filter-fh-eth0".into())),
                ],
            }],
            chains: vec![
                Chain {
                    name: "filter-input".into(),
                    base: Some(BaseHook {
                        hook: Hook::Input,
                        priority: 0,
                    }),
                    rules: vec![
                        Rule {
                            matches: vec![Match::Mark {
                                mask: 0x10000,
                                value: 0x10000,
                            }],
                            verdict: Some(Verdict::Accept),
                            ..Rule::default()
                        },
                        Rule {
                            actions: vec![Action::MarkAnd(0xfffcffff)],
                            ..Rule::default()
                        },
                        Rule {
                            verdict: Some(Verdict::Vmap {
                                key: IfDir::In,
                                map: "filter-in-dispatch".into(),
                            }),
                            ..Rule::default()
                        },
                    ],
                },
                Chain {
                    name: "filter-fh-eth0".into(),
                    base: None,
                    rules: vec![
                        Rule {
                            matches: vec![Match::CtState(CtStates {
                                invalid: false,
                                established: true,
                                related: true,
                                new: false,
                            })],
                            verdict: Some(Verdict::Accept),
                            ..Rule::default()
                        },
                        Rule {
                            matches: vec![
                                Match::Addr {
                                    dir: Direction::Source,
                                    family: Family::Ipv4,
                                    set: "sel-a-v4".into(),
                                    negate: false,
                                },
                                Match::Port {
                                    dir: Direction::Destination,
                                    proto: 6,
                                    port: PortMatch::Set("ports".into()),
                                    negate: false,
                                },
                            ],
                            counter: true,
                            actions: vec![Action::MarkOr(0x10000)],
                            verdict: Some(Verdict::Return),
                            comment: Some("policy allow-ssh rule 0 (a.yaml:3)".into()),
                        },
                        Rule {
                            matches: vec![
                                Match::Port {
                                    dir: Direction::Source,
                                    proto: 17,
                                    port: PortMatch::Single(53),
                                    negate: true,
                                },
                                Match::Port {
                                    dir: Direction::Destination,
                                    proto: 17,
                                    port: PortMatch::Single(5353),
                                    negate: true,
                                },
                                Match::IfName {
                                    dir: Direction::Source,
                                    name: "odd*".into(),
                                },
                                Match::IfNamePrefix {
                                    dir: Direction::Destination,
                                    prefix: "cali".into(),
                                },
                            ],
                            counter: false,
                            actions: vec![Action::Log {
                                prefix: "hp \"drop\" ".into(),
                            }],
                            verdict: Some(Verdict::Drop),
                            comment: Some("no profile matched".into()),
                        },
                    ],
                },
            ]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
            origins: Default::default(),
        };
        let expected = r#"table inet hostpolicy {
	comment "hostpolicyd"

	set sel-a-v4 {
		type ipv4_addr
		flags interval
		elements = { 192.0.2.0/24, 198.51.100.7 }
	}

	set sel-a-v6 {
		type ipv6_addr
		flags interval
	}

	set ports {
		type inet_service
		flags interval
		elements = { 22, 8000-8080 }
	}

	map filter-in-dispatch {
		type ifname : verdict
		elements = { "eth0" : goto filter-fh-eth0, "eth1" : jump filter-fh-eth0 }
	}

	chain filter-input {
		type filter hook input priority 0; policy accept;
		meta mark & 0x00010000 == 0x00010000 accept
		meta mark set meta mark & 0xfffcffff
		iifname vmap @filter-in-dispatch
	}

	chain filter-fh-eth0 {
		ct state established,related accept
		ip saddr @sel-a-v4 tcp dport @ports counter meta mark set meta mark | 0x00010000 return comment "policy allow-ssh rule 0 (a.yaml:3)"
		udp sport != 53 udp dport != 5353-5353 iifname "odd\*" oifname "cali*" log prefix "hp 'drop' " level info drop comment "no profile matched"
	}

	chain hostpolicyd-hash {
		comment "hostpolicyd sha256:abc"
	}
}
"#;
        assert_eq!(render(&rs), expected);
    }

    #[test]
    fn long_element_lists_wrap() {
        let set = Set {
            name: "p".into(),
            set_type: SetType::InetService,
            elements: (1..=10).map(|p| SetElement::Ports(p, p)).collect(),
        };
        let mut out = String::new();
        render_set(&mut out, &set);
        assert!(
            out.contains("elements = { 1, 2, 3, 4, 5, 6, 7, 8,\n\t\t\t     9, 10 }\n"),
            "{out}"
        );
    }
}
