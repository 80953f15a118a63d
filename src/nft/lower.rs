//! IR rule → the expression list the kernel runs, exactly as nft 1.0.6 builds it from our rendered text.
//!
//! What nft does to a rule besides translating each statement, measured with `nft --debug=netlink`, and
//! mirrored here so that `apply` and `nft -f $(render)` give the same bytecode:
//! - implicit dependencies: `ip saddr`/`ip6 daddr` in an inet table first match `meta nfproto`; `tcp dport`
//!   first matches `meta l4proto tcp`; `icmp type` first matches `meta nfproto ipv4` and `meta l4proto icmp`.
//!   A dependency is left out when an earlier match (explicit or implicit) already established it, and an
//!   explicit `meta l4proto icmp` satisfies `icmp type` completely (no `meta nfproto` then).
//! - payload merging: equality matches on adjacent header fields (`tcp sport 1 tcp dport 2`, `icmp type 8
//!   icmp code 0`) become one wider load and compare, placed where the lower field's match was.
//! - nft 1.0.6 also merges two *negated* adjacent matches (`tcp sport != 1 tcp dport != 2` into
//!   `(sport, dport) != (1, 2)`), which would turn our AND into an OR. We keep the IR's meaning: the
//!   higher field of such a pair is written (and rendered) as a one-value range (`tcp dport != 2-2`), which
//!   nft does not merge.
//! - address matches are never merged (`ip saddr 192.0.2.1 ip daddr 192.0.2.2` stays two loads, negated
//!   or not: nft 1.0.6 only merges loads of up to 4 bytes), nor are ranges (`tcp sport 1-2 tcp dport 3`).
//! - a network prefix (`ip saddr 10.0.0.0/24`) whose length is a whole number of bytes (and neither 0 nor
//!   the full address) loads only those bytes and compares them; any other prefix loads the whole address,
//!   masks it (`bitwise`) and compares it with the network; a full-length one is a plain compare.
//! - a port range is `cmp gte` + `cmp lte`, its negation one `range neq`.

use std::borrow::Cow;
use std::fmt::Write as _;

use ipnet::IpNet;

use crate::ruleset::{CtStates, Direction, Family, IfDir, Match, PortMatch, Rule, Verdict};

use super::clean_log_prefix;

/// `ip_conntrack_status` bit of a DNATed connection (`IPS_DST_NAT`).
pub(crate) const CT_STATUS_DNAT: u32 = 0x20;
/// `log level info`.
pub(crate) const LOG_LEVEL_INFO: u32 = 6;
pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_IPV6: u8 = 10;
pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaKey {
    NfProto,
    L4Proto,
    IifName,
    OifName,
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Base {
    Network,
    Transport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtKey {
    State,
    Status,
}

/// A constant of at most 16 bytes (a register), stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Data {
    len: u8,
    bytes: [u8; 16],
}

impl Data {
    pub(crate) fn new(b: &[u8]) -> Data {
        let mut bytes = [0u8; 16];
        bytes[..b.len()].copy_from_slice(b);
        Data {
            len: b.len() as u8,
            bytes,
        }
    }
    /// An interface name as nft compares it: the name padded with NULs to IFNAMSIZ (16) bytes.
    fn ifname(name: &str) -> Data {
        let mut d = Data::new(&[]);
        let n = name.len().min(16);
        d.bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        d.len = 16;
        d
    }
    fn u32_host(v: u32) -> Data {
        Data::new(&v.to_ne_bytes())
    }
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    fn join(&self, other: &Data) -> Data {
        let mut d = *self;
        let (a, b) = (self.len as usize, other.len as usize);
        d.bytes[a..a + b].copy_from_slice(other.as_slice());
        d.len = (a + b) as u8;
        d
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x?}", self.as_slice())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Imm<'a> {
    Accept,
    Drop,
    Return,
    Jump(&'a str),
    Goto(&'a str),
}

/// One kernel expression (all loads go to register 1, as nft does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Meta(MetaKey),
    MetaSetMark,
    Cmp {
        neq: bool,
        data: Data,
    },
    /// `reg1 >= data` / `reg1 <= data` (a port range).
    Gte(Data),
    Lte(Data),
    Range {
        neq: bool,
        from: Data,
        to: Data,
    },
    /// `reg1 = (reg1 & mask) ^ xor` on 4 bytes (host order values).
    Bitwise {
        mask: u32,
        xor: u32,
    },
    /// `reg1 &= mask` on `mask.len` bytes (network order, as loaded): a network prefix.
    Mask(Data),
    Payload {
        base: Base,
        offset: u8,
        len: u8,
    },
    /// `vmap`: the lookup writes the verdict register.
    Lookup {
        set: &'a str,
        inv: bool,
        vmap: bool,
    },
    Ct(CtKey),
    Counter,
    Notrack,
    /// `reject` (icmpx port unreachable): ends the rule like a verdict.
    Reject,
    Log {
        prefix: Cow<'a, str>,
    },
    /// `log prefix ... group N` (NFLOG).
    NfLog {
        group: u16,
        prefix: Cow<'a, str>,
    },
    /// `limit rate R/second burst B packets`.
    Limit {
        rate: u32,
        burst: u32,
    },
    Imm(Imm<'a>),
}

/// A constant compared with a payload field: the candidates of nft's payload merging.
#[derive(Debug, Clone, Copy)]
struct Cand {
    base: Base,
    /// Byte offset and length in the header.
    offset: u8,
    len: u8,
    neq: bool,
    value: Data,
}

fn cand(m: &Match) -> Option<Cand> {
    match m {
        Match::Port {
            dir,
            port: PortMatch::Single(p),
            negate,
            ..
        } => Some(Cand {
            base: Base::Transport,
            offset: port_offset(*dir),
            len: 2,
            neq: *negate,
            value: Data::new(&p.to_be_bytes()),
        }),
        Match::IcmpType {
            icmp_type, negate, ..
        } => Some(Cand {
            base: Base::Transport,
            offset: 0,
            len: 1,
            neq: *negate,
            value: Data::new(&[*icmp_type]),
        }),
        Match::IcmpCode { code, negate, .. } => Some(Cand {
            base: Base::Transport,
            offset: 1,
            len: 1,
            neq: *negate,
            value: Data::new(&[*code]),
        }),
        _ => None,
    }
}

pub(crate) fn port_offset(dir: Direction) -> u8 {
    match dir {
        Direction::Source => 0,
        Direction::Destination => 2,
    }
}

/// Indices of the negated single-value matches that are written as one-value ranges, because nft 1.0.6
/// would otherwise merge them with an adjacent negated match (see the module comment). Shared with render.
pub(crate) fn neq_as_range(rule: &Rule) -> Vec<usize> {
    let mut neq: Vec<(usize, Cand)> = rule
        .matches
        .iter()
        .enumerate()
        .filter_map(|(i, m)| cand(m).map(|c| (i, c)))
        .filter(|(_, c)| c.neq)
        .collect();
    if neq.len() < 2 {
        return Vec::new();
    }
    neq.sort_by_key(|(_, c)| (c.base, c.offset));
    let mut out = Vec::new();
    let mut last = neq[0].1;
    for &(i, c) in &neq[1..] {
        if c.base == last.base && last.offset + last.len == c.offset {
            out.push(i); // `last` stays: the next one is compared with it again, like nft's merged run
        } else {
            last = c;
        }
    }
    out
}

/// What the payload-merge pass decided for one match.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Merge {
    /// Emitted as it is.
    Keep,
    /// Emitted as the merged load + compare of a run starting with this match.
    Head { len: u8, value: Data },
    /// Merged into another match's statement: only its dependencies are emitted.
    Absorbed,
}

fn merges(rule: &Rule, ranges: &[usize]) -> Option<Vec<Merge>> {
    let mut cands: Vec<(usize, Cand)> = rule
        .matches
        .iter()
        .enumerate()
        .filter(|(i, _)| !ranges.contains(i))
        .filter_map(|(i, m)| cand(m).map(|c| (i, c)))
        .collect();
    if cands.len() < 2 {
        return None;
    }
    cands.sort_by_key(|(_, c)| (c.base, c.offset));
    let mut plan = vec![Merge::Keep; rule.matches.len()];
    let mut any = false;
    let (mut head, mut run) = (cands[0].0, cands[0].1);
    for &(i, c) in &cands[1..] {
        if c.base == run.base && run.offset + run.len == c.offset && run.neq == c.neq {
            run.len += c.len;
            run.value = run.value.join(&c.value);
            plan[head] = Merge::Head {
                len: run.len,
                value: run.value,
            };
            plan[i] = Merge::Absorbed;
            any = true;
        } else {
            head = i;
            run = c;
        }
    }
    any.then_some(plan)
}

/// The protocol context nft keeps while it adds implicit dependencies.
#[derive(Default)]
struct Ctx {
    nf: Option<u8>,
    l4: Option<u8>,
}

fn nfproto(f: Family) -> u8 {
    match f {
        Family::Ipv4 => NFPROTO_IPV4,
        Family::Ipv6 => NFPROTO_IPV6,
    }
}

pub(crate) fn icmp_proto(f: Family) -> u8 {
    match f {
        Family::Ipv4 => IPPROTO_ICMP,
        Family::Ipv6 => IPPROTO_ICMPV6,
    }
}

impl Ctx {
    fn need_nf<'a>(&mut self, f: u8, out: &mut Vec<Op<'a>>) {
        if self.nf != Some(f) {
            out.push(Op::Meta(MetaKey::NfProto));
            out.push(Op::Cmp {
                neq: false,
                data: Data::new(&[f]),
            });
            self.nf = Some(f);
        }
    }
    fn need_l4<'a>(&mut self, p: u8, out: &mut Vec<Op<'a>>) {
        if self.l4 != Some(p) {
            out.push(Op::Meta(MetaKey::L4Proto));
            out.push(Op::Cmp {
                neq: false,
                data: Data::new(&[p]),
            });
            self.l4 = Some(p);
        }
    }
    fn need_icmp<'a>(&mut self, f: Family, out: &mut Vec<Op<'a>>) {
        let p = icmp_proto(f);
        if self.l4 != Some(p) {
            self.need_nf(nfproto(f), out);
            self.need_l4(p, out);
        }
    }
}

pub(crate) fn ct_state_bits(s: &CtStates) -> u32 {
    (s.invalid as u32) | (s.established as u32) << 1 | (s.related as u32) << 2 | (s.new as u32) << 3
}

fn addr_payload(dir: Direction, family: Family) -> Op<'static> {
    let (offset, len) = match (family, dir) {
        (Family::Ipv4, Direction::Source) => (12, 4),
        (Family::Ipv4, Direction::Destination) => (16, 4),
        (Family::Ipv6, Direction::Source) => (8, 16),
        (Family::Ipv6, Direction::Destination) => (24, 16),
    };
    Op::Payload {
        base: Base::Network,
        offset,
        len,
    }
}

/// `net` on the address field `addr` (its full-length load), as nft 1.0.6 writes the comparison (see the
/// module comment): pushes the load, the mask if any, and the compare.
fn net_ops<'a>(addr: Op<'static>, net: &IpNet, negate: bool, out: &mut Vec<Op<'a>>) {
    let Op::Payload { base, offset, len } = addr else {
        unreachable!("an address field is a payload load")
    };
    let (bytes, mask) = match net {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    let prefix = net.prefix_len();
    let full = prefix == net.max_prefix_len();
    let whole_bytes = prefix % 8 == 0 && prefix > 0;
    if !full && whole_bytes {
        let n = prefix / 8;
        out.push(Op::Payload {
            base,
            offset,
            len: n,
        });
        out.push(Op::Cmp {
            neq: negate,
            data: Data::new(&bytes[..n as usize]),
        });
        return;
    }
    out.push(Op::Payload { base, offset, len });
    if !full {
        out.push(Op::Mask(Data::new(&mask)));
    }
    out.push(Op::Cmp {
        neq: negate,
        data: Data::new(&bytes),
    });
}

fn if_key(dir: Direction) -> MetaKey {
    match dir {
        Direction::Source => MetaKey::IifName,
        Direction::Destination => MetaKey::OifName,
    }
}

/// Appends the expressions of `rule` to `out` (which is not cleared).
pub(crate) fn lower_rule<'a>(rule: &'a Rule, out: &mut Vec<Op<'a>>) {
    let ranges = neq_as_range(rule);
    let plan = merges(rule, &ranges);
    let mut ctx = Ctx::default();
    for (i, m) in rule.matches.iter().enumerate() {
        let merge = plan.as_ref().map_or(Merge::Keep, |p| p[i]);
        // Dependencies first (also for a match merged into another one: nft adds them before merging).
        match m {
            Match::Addr { family, .. } | Match::Net { family, .. } => {
                ctx.need_nf(nfproto(*family), out)
            }
            Match::Port { proto, .. } => ctx.need_l4(*proto, out),
            Match::IcmpType { family, .. } | Match::IcmpCode { family, .. } => {
                ctx.need_icmp(*family, out)
            }
            _ => {}
        }
        match merge {
            Merge::Absorbed => continue,
            Merge::Head { len, value } => {
                let c = cand(m).expect("merge heads are payload candidates");
                out.push(Op::Payload {
                    base: c.base,
                    offset: c.offset,
                    len,
                });
                out.push(Op::Cmp {
                    neq: c.neq,
                    data: value,
                });
                continue;
            }
            Merge::Keep => {}
        }
        match m {
            Match::IfName { dir, name } => {
                out.push(Op::Meta(if_key(*dir)));
                out.push(Op::Cmp {
                    neq: false,
                    data: Data::ifname(name),
                });
            }
            Match::IfNamePrefix { dir, prefix } => {
                // "starts with the empty string" holds for every name; nft cannot express it ("*")
                if !prefix.is_empty() {
                    out.push(Op::Meta(if_key(*dir)));
                    let n = prefix.len().min(16);
                    out.push(Op::Cmp {
                        neq: false,
                        data: Data::new(&prefix.as_bytes()[..n]),
                    });
                }
            }
            Match::NfProto(f) => {
                out.push(Op::Meta(MetaKey::NfProto));
                out.push(Op::Cmp {
                    neq: false,
                    data: Data::new(&[nfproto(*f)]),
                });
                ctx.nf = Some(nfproto(*f));
            }
            Match::L4Proto { proto, negate } => {
                out.push(Op::Meta(MetaKey::L4Proto));
                out.push(Op::Cmp {
                    neq: *negate,
                    data: Data::new(&[*proto]),
                });
                if !negate {
                    ctx.l4 = Some(*proto);
                }
            }
            Match::Addr {
                dir,
                family,
                set,
                negate,
            } => {
                out.push(addr_payload(*dir, *family));
                out.push(Op::Lookup {
                    set,
                    inv: *negate,
                    vmap: false,
                });
            }
            Match::Net {
                dir,
                family,
                net,
                negate,
            } => net_ops(addr_payload(*dir, *family), net, *negate, out),
            Match::Port {
                dir, port, negate, ..
            } => {
                out.push(Op::Payload {
                    base: Base::Transport,
                    offset: port_offset(*dir),
                    len: 2,
                });
                match port {
                    PortMatch::Single(p) => {
                        let data = Data::new(&p.to_be_bytes());
                        if ranges.contains(&i) {
                            out.push(Op::Range {
                                neq: *negate,
                                from: data,
                                to: data,
                            });
                        } else {
                            out.push(Op::Cmp { neq: *negate, data });
                        }
                    }
                    PortMatch::Range(lo, hi) => {
                        let (from, to) =
                            (Data::new(&lo.to_be_bytes()), Data::new(&hi.to_be_bytes()));
                        if *negate {
                            out.push(Op::Range {
                                neq: true,
                                from,
                                to,
                            });
                        } else {
                            out.push(Op::Gte(from));
                            out.push(Op::Lte(to));
                        }
                    }
                    PortMatch::Set(set) => out.push(Op::Lookup {
                        set,
                        inv: *negate,
                        vmap: false,
                    }),
                }
            }
            Match::IcmpType {
                icmp_type: v,
                negate,
                ..
            }
            | Match::IcmpCode {
                code: v, negate, ..
            } => {
                let offset = if matches!(m, Match::IcmpType { .. }) {
                    0
                } else {
                    1
                };
                out.push(Op::Payload {
                    base: Base::Transport,
                    offset,
                    len: 1,
                });
                let data = Data::new(&[*v]);
                if ranges.contains(&i) {
                    out.push(Op::Range {
                        neq: *negate,
                        from: data,
                        to: data,
                    });
                } else {
                    out.push(Op::Cmp { neq: *negate, data });
                }
            }
            Match::CtState(s) => {
                out.push(Op::Ct(CtKey::State));
                out.push(Op::Bitwise {
                    mask: ct_state_bits(s),
                    xor: 0,
                });
                out.push(Op::Cmp {
                    neq: true,
                    data: Data::u32_host(0),
                });
            }
            Match::CtStatusDnat { negate } => {
                out.push(Op::Ct(CtKey::Status));
                out.push(Op::Bitwise {
                    mask: CT_STATUS_DNAT,
                    xor: 0,
                });
                out.push(Op::Cmp {
                    neq: !negate,
                    data: Data::u32_host(0),
                });
            }
            Match::Limit { rate, burst } => out.push(Op::Limit {
                rate: *rate,
                burst: *burst,
            }),
            Match::Mark { mask, value } => {
                out.push(Op::Meta(MetaKey::Mark));
                if *mask != u32::MAX {
                    out.push(Op::Bitwise {
                        mask: *mask,
                        xor: 0,
                    });
                }
                out.push(Op::Cmp {
                    neq: false,
                    data: Data::u32_host(*value),
                });
            }
        }
    }
    if rule.counter {
        out.push(Op::Counter);
    }
    for a in &rule.actions {
        use crate::ruleset::Action;
        match a {
            Action::MarkOr(bits) => {
                out.push(Op::Meta(MetaKey::Mark));
                out.push(Op::Bitwise {
                    mask: !bits,
                    xor: *bits,
                });
                out.push(Op::MetaSetMark);
            }
            Action::MarkAnd(mask) => {
                out.push(Op::Meta(MetaKey::Mark));
                out.push(Op::Bitwise {
                    mask: *mask,
                    xor: 0,
                });
                out.push(Op::MetaSetMark);
            }
            Action::Log { prefix } => out.push(Op::Log {
                prefix: clean_log_prefix(prefix),
            }),
            Action::Notrack => out.push(Op::Notrack),
            Action::NfLog { group, prefix } => out.push(Op::NfLog {
                group: *group,
                prefix: clean_log_prefix(prefix),
            }),
        }
    }
    match &rule.verdict {
        None => {}
        Some(Verdict::Accept) => out.push(Op::Imm(Imm::Accept)),
        Some(Verdict::Drop) => out.push(Op::Imm(Imm::Drop)),
        Some(Verdict::Reject) => out.push(Op::Reject),
        Some(Verdict::Return) => out.push(Op::Imm(Imm::Return)),
        Some(Verdict::Jump(c)) => out.push(Op::Imm(Imm::Jump(c))),
        Some(Verdict::Goto(c)) => out.push(Op::Imm(Imm::Goto(c))),
        Some(Verdict::Vmap { key, map }) => {
            out.push(Op::Meta(match key {
                IfDir::In => MetaKey::IifName,
                IfDir::Out => MetaKey::OifName,
            }));
            out.push(Op::Lookup {
                set: map,
                inv: false,
                vmap: true,
            });
        }
    }
}

/// The expressions in the format of `nft --debug=netlink` (one `  [ ... ]` line each), so that our
/// bytecode can be compared with nft's for the same rule.
pub(crate) fn debug_ops(ops: &[Op<'_>], out: &mut String) {
    fn words(d: &Data, out: &mut String) {
        let s = d.as_slice();
        for chunk in s.chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            let _ = write!(out, "0x{:08x} ", u32::from_ne_bytes(w));
        }
    }
    for op in ops {
        out.push_str("  [ ");
        match op {
            Op::Meta(k) => {
                let k = match k {
                    MetaKey::NfProto => "nfproto",
                    MetaKey::L4Proto => "l4proto",
                    MetaKey::IifName => "iifname",
                    MetaKey::OifName => "oifname",
                    MetaKey::Mark => "mark",
                };
                let _ = write!(out, "meta load {k} => reg 1 ");
            }
            Op::MetaSetMark => out.push_str("meta set mark with reg 1 "),
            Op::Cmp { neq, data } => {
                let _ = write!(out, "cmp {} reg 1 ", if *neq { "neq" } else { "eq" });
                words(data, out);
            }
            Op::Gte(data) | Op::Lte(data) => {
                let op = if matches!(op, Op::Gte(_)) {
                    "gte"
                } else {
                    "lte"
                };
                let _ = write!(out, "cmp {op} reg 1 ");
                words(data, out);
            }
            Op::Range { neq, from, to } => {
                let _ = write!(out, "range {} reg 1 ", if *neq { "neq" } else { "eq" });
                words(from, out);
                words(to, out);
            }
            Op::Bitwise { mask, xor } => {
                let _ = write!(
                    out,
                    "bitwise reg 1 = ( reg 1 & 0x{mask:08x} ) ^ 0x{xor:08x} "
                );
            }
            Op::Mask(mask) => {
                out.push_str("bitwise reg 1 = ( reg 1 & ");
                words(mask, out);
                out.push_str(") ^ ");
                words(&Data::new(&[0u8; 16][..mask.as_slice().len()]), out);
            }
            Op::Payload { base, offset, len } => {
                let b = match base {
                    Base::Network => "network",
                    Base::Transport => "transport",
                };
                let _ = write!(out, "payload load {len}b @ {b} header + {offset} => reg 1 ");
            }
            Op::Lookup { set, inv, vmap } => {
                let _ = write!(out, "lookup reg 1 set {set} ");
                if *vmap {
                    out.push_str("dreg 0 ");
                }
                if *inv {
                    out.push_str("0x1 ");
                }
            }
            Op::Ct(k) => {
                let k = match k {
                    CtKey::State => "state",
                    CtKey::Status => "status",
                };
                let _ = write!(out, "ct load {k} => reg 1 ");
            }
            Op::Counter => out.push_str("counter pkts 0 bytes 0 "),
            Op::Notrack => out.push_str("notrack "),
            Op::Limit { rate, burst } => {
                let _ = write!(
                    out,
                    "limit rate {rate}/second burst {burst} type packets flags 0x0 "
                );
            }
            Op::NfLog { group, prefix } => {
                let _ = write!(
                    out,
                    "log prefix {prefix} group {group} snaplen 0 qthreshold 0 "
                );
            }
            Op::Reject => out.push_str("reject type 2 code 1 "),
            Op::Log { prefix } => {
                if prefix.is_empty() {
                    let _ = write!(out, "log level {LOG_LEVEL_INFO} ");
                } else {
                    let _ = write!(out, "log prefix {prefix} level {LOG_LEVEL_INFO} ");
                }
            }
            Op::Imm(v) => {
                out.push_str("immediate reg 0 ");
                match v {
                    Imm::Accept => out.push_str("accept "),
                    Imm::Drop => out.push_str("drop "),
                    Imm::Return => out.push_str("return "),
                    Imm::Jump(c) => {
                        let _ = write!(out, "jump -> {c} ");
                    }
                    Imm::Goto(c) => {
                        let _ = write!(out, "goto -> {c} ");
                    }
                }
            }
        }
        out.push_str("]\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::Action;

    fn dbg(rule: &Rule) -> String {
        let mut ops = Vec::new();
        lower_rule(rule, &mut ops);
        let mut s = String::new();
        debug_ops(&ops, &mut s);
        s
    }

    fn port(dir: Direction, proto: u8, p: u16, negate: bool) -> Match {
        Match::Port {
            dir,
            proto,
            port: PortMatch::Single(p),
            negate,
        }
    }

    // Expected strings below are nft 1.0.6's `--debug=netlink` output for the text in the comment.

    #[test]
    fn dependencies_like_nft() {
        // ip saddr != @a4 tcp dport @p counter notrack log prefix "x: " level info ct status dnat drop
        let r = Rule {
            matches: vec![
                Match::Addr {
                    dir: Direction::Source,
                    family: Family::Ipv4,
                    set: "a4".into(),
                    negate: true,
                },
                Match::Port {
                    dir: Direction::Destination,
                    proto: 6,
                    port: PortMatch::Set("p".into()),
                    negate: false,
                },
                Match::CtStatusDnat { negate: false },
            ],
            counter: true,
            actions: vec![
                Action::Notrack,
                Action::Log {
                    prefix: "x: ".into(),
                },
            ],
            verdict: Some(Verdict::Drop),
            comment: Some("r1".into()),
        };
        assert_eq!(
            dbg(&r),
            "  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x00000002 ]
  [ payload load 4b @ network header + 12 => reg 1 ]
  [ lookup reg 1 set a4 0x1 ]
  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000006 ]
  [ payload load 2b @ transport header + 2 => reg 1 ]
  [ lookup reg 1 set p ]
  [ ct load status => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0x00000020 ) ^ 0x00000000 ]
  [ cmp neq reg 1 0x00000000 ]
  [ counter pkts 0 bytes 0 ]
  [ notrack ]
  [ log prefix x:  level 6 ]
  [ immediate reg 0 drop ]
"
        );
    }

    #[test]
    fn explicit_l4proto_satisfies_the_port_dependency() {
        // meta l4proto tcp tcp dport 22 accept
        let r = Rule {
            matches: vec![
                Match::L4Proto {
                    proto: 6,
                    negate: false,
                },
                port(Direction::Destination, 6, 22, false),
            ],
            verdict: Some(Verdict::Accept),
            ..Rule::default()
        };
        assert_eq!(
            dbg(&r),
            "  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000006 ]
  [ payload load 2b @ transport header + 2 => reg 1 ]
  [ cmp eq reg 1 0x00001600 ]
  [ immediate reg 0 accept ]
"
        );
        // meta l4proto icmp icmp type 8: no nfproto at all
        let r = Rule {
            matches: vec![
                Match::L4Proto {
                    proto: 1,
                    negate: false,
                },
                Match::IcmpType {
                    family: Family::Ipv4,
                    icmp_type: 8,
                    negate: false,
                },
            ],
            ..Rule::default()
        };
        assert_eq!(
            dbg(&r),
            "  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000001 ]
  [ payload load 1b @ transport header + 0 => reg 1 ]
  [ cmp eq reg 1 0x00000008 ]
"
        );
    }

    #[test]
    fn adjacent_equalities_merge_like_nft() {
        // tcp dport 2 ct state new tcp sport 1 accept
        let r = Rule {
            matches: vec![
                port(Direction::Destination, 6, 2, false),
                Match::CtState(CtStates {
                    invalid: false,
                    established: false,
                    related: false,
                    new: true,
                }),
                port(Direction::Source, 6, 1, false),
            ],
            verdict: Some(Verdict::Accept),
            ..Rule::default()
        };
        assert_eq!(
            dbg(&r),
            "  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000006 ]
  [ ct load state => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0x00000008 ) ^ 0x00000000 ]
  [ cmp neq reg 1 0x00000000 ]
  [ payload load 4b @ transport header + 0 => reg 1 ]
  [ cmp eq reg 1 0x02000100 ]
  [ immediate reg 0 accept ]
"
        );
        // icmp type 8 icmp code 0
        let r = Rule {
            matches: vec![
                Match::IcmpType {
                    family: Family::Ipv4,
                    icmp_type: 8,
                    negate: false,
                },
                Match::IcmpCode {
                    family: Family::Ipv4,
                    code: 0,
                    negate: false,
                },
            ],
            ..Rule::default()
        };
        assert_eq!(
            dbg(&r),
            "  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x00000002 ]
  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000001 ]
  [ payload load 2b @ transport header + 0 => reg 1 ]
  [ cmp eq reg 1 0x00000008 ]
"
        );
    }

    #[test]
    fn negated_pairs_are_not_merged() {
        // tcp sport != 1 tcp dport != 2-2
        let r = Rule {
            matches: vec![
                port(Direction::Source, 6, 1, true),
                port(Direction::Destination, 6, 2, true),
            ],
            ..Rule::default()
        };
        assert_eq!(neq_as_range(&r), vec![1]);
        assert_eq!(
            dbg(&r),
            "  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000006 ]
  [ payload load 2b @ transport header + 0 => reg 1 ]
  [ cmp neq reg 1 0x00000100 ]
  [ payload load 2b @ transport header + 2 => reg 1 ]
  [ range neq reg 1 0x00000200 0x00000200 ]
"
        );
        // mixed operators are never merged
        let r = Rule {
            matches: vec![
                port(Direction::Source, 6, 1, false),
                port(Direction::Destination, 6, 2, true),
            ],
            ..Rule::default()
        };
        assert!(neq_as_range(&r).is_empty());
        assert!(dbg(&r).contains("cmp neq reg 1 0x00000200"));
    }

    #[test]
    fn marks_ifnames_and_vmap() {
        let r = Rule {
            matches: vec![
                Match::Mark {
                    mask: 0x10000,
                    value: 0x10000,
                },
                Match::Mark {
                    mask: u32::MAX,
                    value: 5,
                },
                Match::IfNamePrefix {
                    dir: Direction::Source,
                    prefix: "cali".into(),
                },
                Match::IfName {
                    dir: Direction::Destination,
                    name: "eth0".into(),
                },
            ],
            actions: vec![Action::MarkOr(0x10000), Action::MarkAnd(0xfffcffff)],
            verdict: Some(Verdict::Vmap {
                key: IfDir::In,
                map: "m".into(),
            }),
            ..Rule::default()
        };
        assert_eq!(
            dbg(&r),
            "  [ meta load mark => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0x00010000 ) ^ 0x00000000 ]
  [ cmp eq reg 1 0x00010000 ]
  [ meta load mark => reg 1 ]
  [ cmp eq reg 1 0x00000005 ]
  [ meta load iifname => reg 1 ]
  [ cmp eq reg 1 0x696c6163 ]
  [ meta load oifname => reg 1 ]
  [ cmp eq reg 1 0x30687465 0x00000000 0x00000000 0x00000000 ]
  [ meta load mark => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0xfffeffff ) ^ 0x00010000 ]
  [ meta set mark with reg 1 ]
  [ meta load mark => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0xfffcffff ) ^ 0x00000000 ]
  [ meta set mark with reg 1 ]
  [ meta load iifname => reg 1 ]
  [ lookup reg 1 set m dreg 0 ]
"
        );
    }

    fn net(dir: Direction, n: &str, negate: bool) -> Match {
        let net: IpNet = n.parse().unwrap();
        Match::Net {
            dir,
            family: match net {
                IpNet::V4(_) => Family::Ipv4,
                IpNet::V6(_) => Family::Ipv6,
            },
            net,
            negate,
        }
    }

    fn only(m: Match) -> Rule {
        Rule {
            matches: vec![m],
            ..Rule::default()
        }
    }

    const NF4: &str = "  [ meta load nfproto => reg 1 ]\n  [ cmp eq reg 1 0x00000002 ]\n";
    const NF6: &str = "  [ meta load nfproto => reg 1 ]\n  [ cmp eq reg 1 0x0000000a ]\n";

    #[test]
    fn networks_like_nft() {
        let src = Direction::Source;
        // ip saddr 10.0.0.0/24: only the 3 bytes of the prefix
        assert_eq!(
            dbg(&only(net(src, "10.0.0.0/24", false))),
            format!("{NF4}  [ payload load 3b @ network header + 12 => reg 1 ]\n  [ cmp eq reg 1 0x0000000a ]\n")
        );
        // ip saddr != 10.0.0.0/20: whole address, masked
        assert_eq!(
            dbg(&only(net(src, "10.0.0.0/20", true))),
            format!(
                "{NF4}  [ payload load 4b @ network header + 12 => reg 1 ]\n  \
                 [ bitwise reg 1 = ( reg 1 & 0x00f0ffff ) ^ 0x00000000 ]\n  [ cmp neq reg 1 0x0000000a ]\n"
            )
        );
        // ip daddr 192.0.2.1
        assert_eq!(
            dbg(&only(net(Direction::Destination, "192.0.2.1/32", false))),
            format!("{NF4}  [ payload load 4b @ network header + 16 => reg 1 ]\n  [ cmp eq reg 1 0x010200c0 ]\n")
        );
        // ip saddr 0.0.0.0/0: a zero mask, not a zero-byte load
        assert_eq!(
            dbg(&only(net(src, "0.0.0.0/0", false))),
            format!(
                "{NF4}  [ payload load 4b @ network header + 12 => reg 1 ]\n  \
                 [ bitwise reg 1 = ( reg 1 & 0x00000000 ) ^ 0x00000000 ]\n  [ cmp eq reg 1 0x00000000 ]\n"
            )
        );
        // ip6 saddr 2001:db8::/64 and 2001:db8::/61
        assert_eq!(
            dbg(&only(net(src, "2001:db8::/64", false))),
            format!("{NF6}  [ payload load 8b @ network header + 8 => reg 1 ]\n  [ cmp eq reg 1 0xb80d0120 0x00000000 ]\n")
        );
        assert_eq!(
            dbg(&only(net(src, "2001:db8::/61", false))),
            format!(
                "{NF6}  [ payload load 16b @ network header + 8 => reg 1 ]\n  \
                 [ bitwise reg 1 = ( reg 1 & 0xffffffff 0xf8ffffff 0x00000000 0x00000000 ) ^ 0x00000000 0x00000000 0x00000000 0x00000000 ]\n  \
                 [ cmp eq reg 1 0xb80d0120 0x00000000 0x00000000 0x00000000 ]\n"
            )
        );
        // ip saddr != 192.0.2.1 ip daddr != 192.0.2.2: never merged, so no range workaround either
        let r = Rule {
            matches: vec![
                net(src, "192.0.2.1/32", true),
                net(Direction::Destination, "192.0.2.2/32", true),
            ],
            ..Rule::default()
        };
        assert!(neq_as_range(&r).is_empty());
        assert_eq!(
            dbg(&r),
            format!(
                "{NF4}  [ payload load 4b @ network header + 12 => reg 1 ]\n  [ cmp neq reg 1 0x010200c0 ]\n  \
                 [ payload load 4b @ network header + 16 => reg 1 ]\n  [ cmp neq reg 1 0x020200c0 ]\n"
            )
        );
    }

    #[test]
    fn port_ranges_like_nft() {
        let range = |dir, lo, hi, negate| Match::Port {
            dir,
            proto: 6,
            port: PortMatch::Range(lo, hi),
            negate,
        };
        const L4: &str = "  [ meta load l4proto => reg 1 ]\n  [ cmp eq reg 1 0x00000006 ]\n";
        // tcp sport 1000-2000 tcp dport 80: a range is not merged with its neighbour
        let r = Rule {
            matches: vec![
                range(Direction::Source, 1000, 2000, false),
                port(Direction::Destination, 6, 80, false),
            ],
            ..Rule::default()
        };
        assert_eq!(
            dbg(&r),
            format!(
                "{L4}  [ payload load 2b @ transport header + 0 => reg 1 ]\n  [ cmp gte reg 1 0x0000e803 ]\n  \
                 [ cmp lte reg 1 0x0000d007 ]\n  [ payload load 2b @ transport header + 2 => reg 1 ]\n  \
                 [ cmp eq reg 1 0x00005000 ]\n"
            )
        );
        // tcp sport != 80 tcp dport != 1000-2000: the range keeps the negated single from merging
        let r = Rule {
            matches: vec![
                port(Direction::Source, 6, 80, true),
                range(Direction::Destination, 1000, 2000, true),
            ],
            ..Rule::default()
        };
        assert!(neq_as_range(&r).is_empty());
        assert_eq!(
            dbg(&r),
            format!(
                "{L4}  [ payload load 2b @ transport header + 0 => reg 1 ]\n  [ cmp neq reg 1 0x00005000 ]\n  \
                 [ payload load 2b @ transport header + 2 => reg 1 ]\n  [ range neq reg 1 0x0000e803 0x0000d007 ]\n"
            )
        );
    }
}
