//! The compiled ruleset (IR): pure data between `compile` and `nft`.
//!
//! One `inet` table holding both families. `nft::render` turns it into nft text and `nft::netlink` into one
//! netlink batch; both must give the same kernel ruleset (`nft -j list table` equal). Every object is named,
//! so the IR is also what `status`, `explain` and the logs talk about; every rule has a typed [`Origin`]
//! ([`Ruleset::origins`], see [`origin`]).

pub mod origin;

use std::fmt;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use origin::{rule_name, Dir, Kind, Origin, OriginId, Origins, RuleAction, SourcePos, Stage};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ruleset {
    /// Table name; the family is always `inet`.
    pub table: String,
    /// Stored as the table's comment (userdata): lets the daemon recognise the table it applied
    /// (e.g. `hostpolicyd sha256:...`).
    pub comment: String,
    pub sets: Vec<Set>,
    pub maps: Vec<VerdictMap>,
    /// In an order the kernel accepts: a chain is declared before any rule jumps to it is not required
    /// (the encoder adds all chains first, then all rules). Shared (`Arc`): the daemon's next compile
    /// takes back the chains of the policies that did not change (`compile::cache`), so that two
    /// rulesets share them and a comparison of two chains can start with `Arc::ptr_eq`.
    pub chains: Vec<Arc<Chain>>,
    /// Where every rule comes from. Not sent to the kernel, not in the content hash (`compile::hash`);
    /// empty in a ruleset stored by a version without origins.
    #[serde(default)]
    pub origins: Origins,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    Ipv4,
    Ipv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SetType {
    /// `type ipv4_addr; flags interval`
    Ipv4Addr,
    /// `type ipv6_addr; flags interval`
    Ipv6Addr,
    /// `type inet_service; flags interval`
    InetService,
    /// `type ipv4_addr` without flags: a hash set of single addresses (every element a /32). Adding or
    /// deleting an element costs the kernel O(1), where an interval set (an rbtree) costs ~33 ms per
    /// transaction at 100,000 elements on kernel 6.18 (issue 7).
    Ipv4Hosts,
    /// `type ipv6_addr` without flags: a hash set of /128s.
    Ipv6Hosts,
}

impl SetType {
    /// Whether the set is created with `flags interval` (else it is a hash set of single keys).
    pub fn is_interval(self) -> bool {
        !matches!(self, SetType::Ipv4Hosts | SetType::Ipv6Hosts)
    }
}

/// A named set. Elements are already sorted, merged and non-overlapping (the compiler aggregates them),
/// so the kernel accepts them as they are; in a hash set (`Ipv4Hosts`, `Ipv6Hosts`) each is one host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Set {
    pub name: String,
    pub set_type: SetType,
    pub elements: Vec<SetElement>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SetElement {
    V4(Ipv4Net),
    V6(Ipv6Net),
    /// Inclusive port range; a single port is `Ports(p, p)`.
    Ports(u16, u16),
}

/// What `#[derive(Debug)]` prints (a literal set's name is made from the digest of its elements'
/// `Debug` text, `compile::names::literal_set`, so the text must not change), with IPv4 networks
/// written without the formatting machinery: for a 100,000-element set that was most of the content
/// hash's 12 ms when the hash was made of the `Debug` text.
impl fmt::Debug for SetElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetElement::V4(n)
                if !f.alternate() && f.width().is_none() && f.precision().is_none() =>
            {
                let mut buf = [0u8; 24];
                let text = v4_debug(n, &mut buf);
                f.write_str(text)
            }
            SetElement::V4(n) => f.debug_tuple("V4").field(n).finish(),
            SetElement::V6(n) => f.debug_tuple("V6").field(n).finish(),
            SetElement::Ports(a, b) => f.debug_tuple("Ports").field(a).field(b).finish(),
        }
    }
}

/// `V4(a.b.c.d/len)` into `buf`.
fn v4_debug<'b>(n: &Ipv4Net, buf: &'b mut [u8; 24]) -> &'b str {
    fn decimal(out: &mut [u8], at: &mut usize, v: u8) {
        if v >= 100 {
            out[*at] = b'0' + v / 100;
            *at += 1;
        }
        if v >= 10 {
            out[*at] = b'0' + (v / 10) % 10;
            *at += 1;
        }
        out[*at] = b'0' + v % 10;
        *at += 1;
    }
    buf[..3].copy_from_slice(b"V4(");
    let mut at = 3;
    for (i, octet) in n.addr().octets().into_iter().enumerate() {
        if i > 0 {
            buf[at] = b'.';
            at += 1;
        }
        decimal(buf, &mut at, octet);
    }
    buf[at] = b'/';
    at += 1;
    decimal(buf, &mut at, n.prefix_len());
    buf[at] = b')';
    at += 1;
    std::str::from_utf8(&buf[..at]).expect("ASCII digits and punctuation")
}

/// A named verdict map keyed by interface name: `map NAME { type ifname : verdict; elements = { "eth0" : goto X } }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VerdictMap {
    pub name: String,
    /// (interface name, verdict); the verdict is `Jump` or `Goto`.
    pub elements: Vec<(String, Verdict)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

/// A base chain: `type filter hook H priority P; policy accept;`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BaseHook {
    pub hook: Hook,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    /// `Some` for a base chain (policy accept), `None` for a regular chain.
    pub base: Option<BaseHook>,
    pub rules: Vec<Rule>,
}

/// One nftables rule: all `matches` ANDed, then `counter` (if set), then `actions`, then `verdict`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub counter: bool,
    pub actions: Vec<Action>,
    pub verdict: Option<Verdict>,
    /// Origin, stored as the rule's comment (userdata), at most 128 bytes.
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Source address / port; input interface.
    Source,
    /// Destination address / port; output interface.
    Destination,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PortMatch {
    Single(u16),
    /// An inclusive range `lo-hi` with `lo < hi` (a single port is `Single`): `tcp dport 1000-2000`.
    Range(u16, u16),
    /// A named set of type `InetService`.
    Set(String),
}

/// Connection tracking states, as a bit set of the kernel's NF_CT_STATE_* bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CtStates {
    pub invalid: bool,
    pub established: bool,
    pub related: bool,
    pub new: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Match {
    /// `iifname "eth0"` (Source) / `oifname "eth0"` (Destination); exact name.
    IfName { dir: Direction, name: String },
    /// `iifname "cali*"` / `oifname "cali*"`: name starts with `prefix`.
    IfNamePrefix { dir: Direction, prefix: String },
    /// `meta nfproto ipv4|ipv6`.
    NfProto(Family),
    /// `meta l4proto N` / `meta l4proto != N`.
    L4Proto { proto: u8, negate: bool },
    /// `ip saddr @set` / `ip6 daddr != @set` (the set's type matches the family).
    Addr {
        dir: Direction,
        family: Family,
        set: String,
        negate: bool,
    },
    /// `ip saddr 192.0.2.0/24` / `ip6 daddr != 2001:db8::1`: one network, no set. `net` is of `family`
    /// and has no host bits set (the compiler normalises it).
    Net {
        dir: Direction,
        family: Family,
        net: IpNet,
        negate: bool,
    },
    /// `tcp dport 80` / `udp sport != @set`; `proto` is 6, 17 or 132. Implies `meta l4proto proto`.
    Port {
        dir: Direction,
        proto: u8,
        port: PortMatch,
        negate: bool,
    },
    /// `icmp type 8` / `icmpv6 type != 128` (Ipv4 = icmp, Ipv6 = icmpv6). Implies the family and l4proto.
    IcmpType {
        family: Family,
        icmp_type: u8,
        negate: bool,
    },
    /// `icmp code 0` / `icmpv6 code != 0`.
    IcmpCode {
        family: Family,
        code: u8,
        negate: bool,
    },
    /// `ct state established,related` (any of the given states).
    CtState(CtStates),
    /// `ct status dnat` / `ct status != dnat`... rendered as `ct status & dnat == dnat` or `== 0`.
    CtStatusDnat { negate: bool },
    /// `meta mark & mask == value`.
    Mark { mask: u32, value: u32 },
    /// `limit rate RATE/second burst BURST packets`: true while the rule's token bucket has a token
    /// (one bucket per rule, shared by every CPU). Flow records (issue 14) put it before a `log group` so
    /// that a flood cannot swamp the daemon.
    Limit { rate: u32, burst: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// `meta mark set meta mark | bits`
    MarkOr(u32),
    /// `meta mark set meta mark & mask`
    MarkAnd(u32),
    /// `log prefix "..." level info`
    Log { prefix: String },
    /// `notrack`
    Notrack,
    /// `log prefix "..." group N`: the packet to NFLOG group N (flow records; no syslog).
    NfLog { group: u16, prefix: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IfDir {
    In,
    Out,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Verdict {
    Accept,
    Drop,
    /// `reject`: an ICMP(v6) port unreachable (icmpx), so that a TCP connect fails at once
    /// (`nftablesFilterDenyAction: Reject`; filter hooks only, the kernel refuses it elsewhere).
    Reject,
    Return,
    Jump(String),
    Goto(String),
    /// `iifname vmap @map` (In) / `oifname vmap @map` (Out).
    Vmap {
        key: IfDir,
        map: String,
    },
}

impl Ruleset {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name).map(|c| &**c)
    }
    /// Chain number `i`, to change: a chain shared with another ruleset is copied first.
    pub fn chain_mut(&mut self, i: usize) -> &mut Chain {
        Arc::make_mut(&mut self.chains[i])
    }
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }
    pub fn map(&self, name: &str) -> Option<&VerdictMap> {
        self.maps.iter().find(|m| m.name == name)
    }
    /// Number of rules in all chains (for summaries and benchmarks).
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
    /// The position of chain `name` in [`Ruleset::chains`].
    pub fn chain_index(&self, name: &str) -> Option<usize> {
        self.chains.iter().position(|c| c.name == name)
    }
    /// The origin of rule number `rule` (from 0, in chain order) of chain `chain`.
    pub fn origin(&self, chain: &str, rule: usize) -> Option<&Origin> {
        self.origins.of(self.chain_index(chain)?, rule)
    }
    /// Every rule with its chain and its origin (`None` when the ruleset has no origins).
    pub fn rules_with_origins(&self) -> impl Iterator<Item = (&Chain, &Rule, Option<&Origin>)> {
        self.chains.iter().enumerate().flat_map(move |(c, chain)| {
            chain
                .rules
                .iter()
                .enumerate()
                .map(move |(r, rule)| (&**chain, rule, self.origins.of(c, r)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SetElement` as `#[derive(Debug)]` prints it.
    fn derived(e: &SetElement, alternate: bool) -> String {
        let (name, fields): (&str, Vec<&dyn fmt::Debug>) = match e {
            SetElement::V4(n) => ("V4", vec![n]),
            SetElement::V6(n) => ("V6", vec![n]),
            SetElement::Ports(a, b) => ("Ports", vec![a, b]),
        };
        struct Derived<'a>(&'a str, Vec<&'a dyn fmt::Debug>);
        impl fmt::Debug for Derived<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut t = f.debug_tuple(self.0);
                for field in &self.1 {
                    t.field(field);
                }
                t.finish()
            }
        }
        let d = Derived(name, fields);
        if alternate {
            format!("{d:#?}")
        } else {
            format!("{d:?}")
        }
    }

    #[test]
    fn set_elements_debug_exactly_as_derived() {
        let mut elements: Vec<SetElement> = [
            "0.0.0.0/0",
            "9.9.9.9/32",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "192.0.2.255/32",
            "255.255.255.255/32",
            "198.51.100.128/25",
        ]
        .iter()
        .map(|n| SetElement::V4(n.parse().unwrap()))
        .collect();
        elements.push(SetElement::V6("2001:db8::/32".parse().unwrap()));
        elements.push(SetElement::Ports(80, 80));
        elements.push(SetElement::Ports(0, 65535));
        for e in &elements {
            assert_eq!(format!("{e:?}"), derived(e, false));
            assert_eq!(format!("{e:#?}"), derived(e, true));
        }
        // Inside a collection, as the content hash sees it.
        let v: Vec<String> = elements.iter().map(|e| derived(e, false)).collect();
        assert_eq!(format!("{elements:?}"), format!("[{}]", v.join(", ")));
    }
}
