//! NodeView → Ruleset (the nftables layout of DESIGN.md, the chain sequence of spec §3.3–§3.4).
//!
//! Pure and deterministic: the same configuration and interfaces give the same ruleset, byte for byte,
//! so the daemon can compare content hashes instead of reading the kernel back.
//!
//! Layout, one `inet` table for both families:
//! - base chains `raw-prerouting`/`raw-output` (-300, untracked policy), `mangle-prerouting` (-150,
//!   preDNAT), `filter-input`/`filter-forward`/`filter-output` (0, normal and forward policy) and
//!   `mangle-postrouting` (-150, normal egress of DNATed local traffic);
//! - dispatch to per-HEP chains through verdict maps on the interface name, with the wildcard HEP as the
//!   fall-through `goto`;
//! - one chain per policy and direction (`pi-NAME`, `po-NAME`), shared by every stage that uses it: its
//!   verdicts (set ACCEPT and return, set PASS and return, drop, log) mean the same at every hook;
//! - an address list that normalises to one network, and a port list that normalises to one port or one
//!   range, is matched directly (`ip saddr 192.0.2.0/24`, `tcp dport 1000-2000`); longer lists are named
//!   interval sets, one per distinct content (`lit-*`), shared by every rule that uses the same list.
//!   Each set costs the kernel a name lookup in a linked list per set, element and rule message that
//!   refers to one, so 10,000 policies with a set each took a minute to load (issue 7).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::config::model::{
    proto, Action as RuleAction, Config, DenyAction, GlobalNetworkPolicy, NamespaceScope, Port,
    Rule as PolicyRule,
};
use crate::resolve::{
    selector_addresses, ActiveEndpoint, AddressSet, Dir, NodeView, SelectorKey, Stage,
};
use crate::ruleset::{
    Action, BaseHook, Chain, CtStates, Direction, Family, Hook, IfDir, Match, PortMatch, Rule,
    Ruleset, Set, SetElement, SetType, Verdict, VerdictMap,
};

pub const DEFAULT_TABLE: &str = "hostpolicy";
pub const DEFAULT_ALLOW_PROFILE: &str = "projectcalico-default-allow";
/// nftables limits names to 256 bytes (NFT_NAME_MAXLEN); longer ones are shortened with a hash.
const MAX_NAME: usize = 200;
/// nftables keeps at most 128 bytes of a rule comment and 127 of a log prefix.
const MAX_COMMENT: usize = 128;
const MAX_LOG_PREFIX: usize = 127;

pub const PRIO_RAW: i32 = -300;
pub const PRIO_MANGLE: i32 = -150;
pub const PRIO_FILTER: i32 = 0;

/// Compiles the node view into one table named `table`.
pub fn compile(config: &Config, view: &NodeView, table: &str) -> Ruleset {
    let mut c = Compiler::new(config, view);
    c.failsafe_chains();
    let endpoints: Vec<&ActiveEndpoint> = view.endpoints.iter().collect();
    for ep in endpoints.iter().copied().chain(view.wildcard.iter()) {
        c.endpoint_chains(ep);
    }
    c.dispatch_and_base_chains();
    let mut ruleset = Ruleset {
        table: table.to_string(),
        comment: String::new(),
        sets: c.sets.into_values().collect(),
        maps: c.maps,
        chains: c.chains,
    };
    compact(&mut ruleset.chains);
    ruleset.comment = format!("hostpolicyd sha256:{}", content_hash(&ruleset));
    ruleset
}

/// Drops the spare capacity of the rule lists: the daemon keeps the ruleset it applied last for as
/// long as it runs, and vectors filled by `push` carry up to half again their length (10,000
/// policies: ~60,000 rules, a few MiB).
fn compact(chains: &mut [Chain]) {
    for chain in chains {
        chain.rules.shrink_to_fit();
        for rule in &mut chain.rules {
            rule.matches.shrink_to_fit();
            rule.actions.shrink_to_fit();
        }
    }
}

/// Hash of everything but the comment: what "the same ruleset" means for the daemon.
///
/// SHA-256 of the ruleset's `Debug` text with an empty comment. The text is streamed into the hasher
/// (no copy of the ruleset, no string of its whole text: for 10,000 policies that took as long as the
/// rest of `compile`); the digest is the same as hashing `format!("{copy:?}")`.
pub fn content_hash(ruleset: &Ruleset) -> String {
    /// `Ruleset`'s derived `Debug`, with `comment: ""`.
    struct WithoutComment<'a>(&'a Ruleset);
    impl std::fmt::Debug for WithoutComment<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let r = self.0;
            f.debug_struct("Ruleset")
                .field("table", &r.table)
                .field("comment", &"")
                .field("sets", &r.sets)
                .field("maps", &r.maps)
                .field("chains", &r.chains)
                .finish()
        }
    }
    debug_digest(&WithoutComment(ruleset))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of `value`'s `Debug` text, written straight into the hasher.
fn debug_digest(value: &impl std::fmt::Debug) -> sha2::digest::Output<Sha256> {
    struct Hasher(Sha256);
    impl std::fmt::Write for Hasher {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.update(s.as_bytes());
            Ok(())
        }
    }
    let mut h = Hasher(Sha256::new());
    std::fmt::write(&mut h, format_args!("{value:?}")).expect("hashing does not fail");
    h.0.finalize()
}

/// The hash recorded in a table comment written by `compile`, if the comment is one of ours.
pub fn hash_from_comment(comment: &str) -> Option<&str> {
    comment.strip_prefix("hostpolicyd sha256:")
}

struct Compiler<'a> {
    config: &'a Config,
    view: &'a NodeView,
    accept: u32,
    pass: u32,
    sets: BTreeMap<String, Set>,
    maps: Vec<VerdictMap>,
    chains: Vec<Chain>,
    policy_chains: BTreeSet<String>,
    /// Selector set name by (selector hash, family): its type (and so its name) depends on the members,
    /// which are looked up once.
    selector_set_names: BTreeMap<(String, Family), String>,
}

/// Which per-HEP chain: stage plus direction, with its name prefix.
fn endpoint_chain_prefix(stage: Stage, dir: Dir) -> &'static str {
    match (stage, dir) {
        (Stage::Untracked, Dir::Ingress) => "raw-fh-",
        (Stage::Untracked, Dir::Egress) => "raw-th-",
        (Stage::PreDnat, _) => "pre-fh-",
        (Stage::Normal, Dir::Ingress) => "fh-",
        (Stage::Normal, Dir::Egress) => "th-",
        (Stage::Forward, Dir::Ingress) => "fhfw-",
        (Stage::Forward, Dir::Egress) => "thfw-",
    }
}

/// `prefix` + `id`, shortened with a hash when nftables would refuse the length.
pub fn object_name(prefix: &str, id: &str) -> String {
    let name = format!("{prefix}{id}");
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = Sha256::digest(id.as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let mut cut = MAX_NAME - hash.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &name[..cut])
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
}

fn rule(matches: Vec<Match>, verdict: Option<Verdict>) -> Rule {
    Rule {
        matches,
        counter: false,
        actions: Vec::new(),
        verdict,
        comment: None,
    }
}

fn commented(mut r: Rule, comment: impl AsRef<str>) -> Rule {
    r.comment = Some(truncate(comment.as_ref(), MAX_COMMENT));
    r
}

fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
    }
}

fn family_suffix(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "v4",
        Family::Ipv6 => "v6",
    }
}

fn addr_elements(set: &AddressSet, f: Family) -> Vec<SetElement> {
    match f {
        Family::Ipv4 => set.v4.iter().map(|n| SetElement::V4(*n)).collect(),
        Family::Ipv6 => set.v6.iter().map(|n| SetElement::V6(*n)).collect(),
    }
}

/// A set of single hosts only (or of nothing) is a hash set, anything with a shorter prefix an interval
/// set: adding or deleting an element of a 100,000-element interval set costs the kernel ~33 ms per
/// transaction, of a hash set ~0.1 ms (issue 7).
fn addr_set_type(f: Family, elements: &[SetElement]) -> SetType {
    let hosts = elements.iter().all(|e| match e {
        SetElement::V4(n) => n.prefix_len() == 32,
        SetElement::V6(n) => n.prefix_len() == 128,
        SetElement::Ports(..) => false,
    });
    match (f, hosts) {
        (Family::Ipv4, true) => SetType::Ipv4Hosts,
        (Family::Ipv4, false) => SetType::Ipv4Addr,
        (Family::Ipv6, true) => SetType::Ipv6Hosts,
        (Family::Ipv6, false) => SetType::Ipv6Addr,
    }
}

/// The last part of a set's name: its type. The kind of a set (hash or interval) cannot change in the
/// kernel, so it is part of the name: a selector set whose members gain a /24 becomes a new set (and new
/// rules), never an element update of the old one.
fn set_type_suffix(t: SetType) -> &'static str {
    match t {
        SetType::Ipv4Addr => "v4",
        SetType::Ipv6Addr => "v6",
        SetType::Ipv4Hosts => "v4h",
        SetType::Ipv6Hosts => "v6h",
        SetType::InetService => "port",
    }
}

/// Sorted, merged port ranges (interval sets refuse overlaps).
fn port_elements(ranges: &[(u16, u16)]) -> Vec<SetElement> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
        .into_iter()
        .map(|(lo, hi)| SetElement::Ports(lo, hi))
        .collect()
}

fn numeric_ports(ports: &[Port]) -> Vec<(u16, u16)> {
    ports
        .iter()
        .filter_map(|p| match p {
            Port::Range(lo, hi) => Some((*lo, *hi)),
            Port::Named(_) => None,
        })
        .collect()
}

fn named_ports(ports: &[Port]) -> Vec<&str> {
    ports
        .iter()
        .filter_map(|p| match p {
            Port::Named(n) => Some(n.as_str()),
            Port::Range(..) => None,
        })
        .collect()
}

/// Protocol families a rule appears in (spec §1.10): `ipVersion`, ICMP flavour, and positive net lists
/// that keep at least one net of the family.
fn rule_families(rule: &PolicyRule) -> Vec<Family> {
    let mut out = Vec::new();
    for f in [Family::Ipv4, Family::Ipv6] {
        let version_ok = match rule.ip_version {
            Some(4) => f == Family::Ipv4,
            Some(6) => f == Family::Ipv6,
            _ => true,
        };
        let icmp_family = |p: Option<u8>| match p {
            Some(proto::ICMP) => Some(Family::Ipv4),
            Some(proto::ICMPV6) => Some(Family::Ipv6),
            _ => None,
        };
        let icmp_ok = if rule.icmp.is_some() || rule.not_icmp.is_some() {
            icmp_family(rule.protocol).is_none_or(|fam| fam == f)
        } else {
            true
        };
        let nets_ok = [&rule.source.nets, &rule.destination.nets]
            .iter()
            .all(|nets| nets.is_empty() || nets.iter().any(|n| family_of(n) == f));
        if version_ok && icmp_ok && nets_ok {
            out.push(f);
        }
    }
    out
}

/// Whether a rule needs separate nftables rules per family: it names a family, or matches addresses,
/// ICMP types or named ports (whose address sets are per family).
fn is_family_specific(r: &PolicyRule) -> bool {
    let entity = |e: &crate::config::model::EntityRule| {
        !e.nets.is_empty()
            || !e.not_nets.is_empty()
            || e.selector.is_some()
            || e.not_selector.is_some()
            || !named_ports(&e.ports).is_empty()
            || !named_ports(&e.not_ports).is_empty()
    };
    r.ip_version.is_some()
        || r.icmp.is_some()
        || r.not_icmp.is_some()
        || entity(&r.source)
        || entity(&r.destination)
}

/// Whether a match only ever matches packets of one family (so no `meta nfproto` is needed).
fn implies_family(m: &Match) -> bool {
    matches!(
        m,
        Match::NfProto(_)
            | Match::Addr { .. }
            | Match::Net { .. }
            | Match::IcmpType { .. }
            | Match::IcmpCode { .. }
    )
}

/// An nftables rule's worth of extra matches, one of several ORed alternatives.
type Alternative = Vec<Match>;

impl<'a> Compiler<'a> {
    fn new(config: &'a Config, view: &'a NodeView) -> Self {
        Compiler {
            config,
            view,
            accept: view.settings.mark_accept,
            pass: view.settings.mark_pass,
            sets: BTreeMap::new(),
            maps: Vec::new(),
            chains: Vec::new(),
            policy_chains: BTreeSet::new(),
            selector_set_names: BTreeMap::new(),
        }
    }

    fn mark_is(&self, bit: u32, set: bool) -> Match {
        Match::Mark {
            mask: bit,
            value: if set { bit } else { 0 },
        }
    }

    fn clear_marks(&self) -> Action {
        Action::MarkAnd(!(self.accept | self.pass))
    }

    fn add_set(&mut self, name: String, set_type: SetType, elements: Vec<SetElement>) -> String {
        self.sets.insert(
            name.clone(),
            Set {
                name: name.clone(),
                set_type,
                elements,
            },
        );
        name
    }

    /// A set written literally in the configuration (rule nets and ports, failsafe entries) is named
    /// after its contents only (`lit-<hash>-<type>`), so:
    /// - a changed list is a new set rather than the old one changing under the rules that still use it:
    ///   a ruleset swap then never shows old rules with new contents, and the sets can be created before
    ///   the rules that use them (see `nft::netlink`);
    /// - every rule of every policy that writes the same list uses one set.
    ///
    /// Selector sets (`sel-*`) keep a stable name: their meaning is the selector, and a membership change
    /// alone is applied in place (incremental update).
    fn literal_set(&mut self, set_type: SetType, elements: Vec<SetElement>) -> String {
        let digest = debug_digest(&format_args!("{set_type:?}{elements:?}"));
        let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let name = format!("lit-{hash}-{}", set_type_suffix(set_type));
        if !self.sets.contains_key(&name) {
            self.add_set(name.clone(), set_type, elements);
        }
        name
    }

    // ---- failsafe (spec §4.3) -------------------------------------------------------------------

    fn failsafe_chains(&mut self) {
        let inbound = self.view.settings.failsafe_inbound.clone();
        let outbound = self.view.settings.failsafe_outbound.clone();
        let fin = self.failsafe_rules(
            &inbound,
            Direction::Destination,
            Direction::Source,
            "inbound",
        );
        let fout = self.failsafe_rules(
            &outbound,
            Direction::Destination,
            Direction::Destination,
            "outbound",
        );
        // Raw extras: replies of failsafe connections skip untracked policy (no mark, no notrack).
        let mut raw_in = fin.clone();
        raw_in.extend(self.failsafe_rules(
            &outbound,
            Direction::Source,
            Direction::Source,
            "reply to outbound",
        ));
        let mut raw_out = fout.clone();
        raw_out.extend(self.failsafe_rules(
            &inbound,
            Direction::Source,
            Direction::Destination,
            "reply to inbound",
        ));
        for (name, rules) in [
            ("failsafe-in", fin),
            ("failsafe-out", fout),
            ("raw-failsafe-in", raw_in),
            ("raw-failsafe-out", raw_out),
        ] {
            self.chains.push(Chain {
                name: name.into(),
                base: None,
                rules,
            });
        }
    }

    /// Accept rules for failsafe entries: port on `port_dir`, the entry's net (if any) on `net_dir`.
    /// Entries without a net are grouped per protocol into one port match.
    fn failsafe_rules(
        &mut self,
        entries: &[crate::config::model::ProtoPort],
        port_dir: Direction,
        net_dir: Direction,
        what: &str,
    ) -> Vec<Rule> {
        let mut rules = Vec::new();
        let mut by_proto: BTreeMap<u8, Vec<(u16, u16)>> = BTreeMap::new();
        for e in entries.iter().filter(|e| e.net.is_none()) {
            by_proto
                .entry(e.protocol)
                .or_default()
                .push((e.port, e.port));
        }
        for (p, ports) in by_proto {
            let port = self.port_match(&ports);
            let m = vec![Match::Port {
                dir: port_dir,
                proto: p,
                port,
                negate: false,
            }];
            rules.push(commented(
                rule(m, Some(Verdict::Accept)),
                format!("failsafe {what} {}", proto_name(p)),
            ));
        }
        // Entries with a net, grouped by (protocol, port, family) into one rule whose address set holds
        // every net of the group: the chain (walked by every new connection on every HEP) does not grow
        // with the number of nets.
        let mut by_port: BTreeMap<(u8, u16, Family), Vec<IpNet>> = BTreeMap::new();
        for e in entries {
            let Some(net) = e.net else { continue };
            by_port
                .entry((e.protocol, e.port, family_of(&net)))
                .or_default()
                .push(net);
        }
        for ((p, port, f), nets) in by_port {
            let m = vec![
                self.net_match(net_dir, f, &nets, false),
                Match::Port {
                    dir: port_dir,
                    proto: p,
                    port: PortMatch::Single(port),
                    negate: false,
                },
            ];
            let list: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
            rules.push(commented(
                rule(m, Some(Verdict::Accept)),
                format!(
                    "failsafe {what} {}:{}:{port}",
                    proto_name(p),
                    list.join(",")
                ),
            ));
        }
        rules
    }

    // ---- per-HEP chains (spec §3.4) ----------------------------------------------------------------

    fn endpoint_chains(&mut self, ep: &ActiveEndpoint) {
        for stage in [
            Stage::Untracked,
            Stage::PreDnat,
            Stage::Normal,
            Stage::Forward,
        ] {
            for dir in [Dir::Ingress, Dir::Egress] {
                if self.needs_endpoint_chain(ep, stage, dir) {
                    self.endpoint_chain(ep, stage, dir);
                }
            }
        }
    }

    fn needs_endpoint_chain(&self, ep: &ActiveEndpoint, stage: Stage, dir: Dir) -> bool {
        match stage {
            Stage::Untracked | Stage::PreDnat => !ep.policies.get(stage, dir).is_empty(),
            Stage::Normal | Stage::Forward => true,
        }
    }

    fn endpoint_chain(&mut self, ep: &ActiveEndpoint, stage: Stage, dir: Dir) -> String {
        let name = object_name(endpoint_chain_prefix(stage, dir), &ep.name);
        let (accept, pass) = (self.accept, self.pass);
        let mut rules = Vec::new();
        if stage != Stage::Untracked {
            let est = CtStates {
                invalid: false,
                established: true,
                related: true,
                new: false,
            };
            rules.push(rule(vec![Match::CtState(est)], Some(Verdict::Accept)));
            if self.view.settings.conntrack_invalid_check {
                let inv = CtStates {
                    invalid: true,
                    established: false,
                    related: false,
                    new: false,
                };
                rules.push(rule(vec![Match::CtState(inv)], Some(Verdict::Drop)));
            }
        }
        if stage != Stage::Forward {
            let failsafe = match (stage, dir) {
                (Stage::Untracked, Dir::Ingress) => "raw-failsafe-in",
                (Stage::Untracked, Dir::Egress) => "raw-failsafe-out",
                (_, Dir::Ingress) => "failsafe-in",
                (_, Dir::Egress) => "failsafe-out",
            };
            rules.push(rule(Vec::new(), Some(Verdict::Jump(failsafe.into()))));
        }
        rules.push(Rule {
            actions: vec![self.clear_marks()],
            ..Rule::default()
        });
        let policies = ep.policies.get(stage, dir).to_vec();
        for &p in &policies {
            let chain = self.policy_chain(p, dir);
            rules.push(rule(
                vec![self.mark_is(pass, false)],
                Some(Verdict::Jump(chain)),
            ));
            let actions = if stage == Stage::Untracked {
                vec![Action::Notrack]
            } else {
                Vec::new()
            };
            rules.push(Rule {
                matches: vec![self.mark_is(accept, true)],
                actions,
                verdict: Some(Verdict::Return),
                ..Rule::default()
            });
        }
        if !policies.is_empty() && matches!(stage, Stage::Normal | Stage::Forward) {
            let mut r = commented(
                rule(vec![self.mark_is(pass, false)], Some(self.deny(dir, true))),
                format!("{}: end of tier default deny", ep.name),
            );
            r.counter = true;
            rules.push(r);
        }
        if stage == Stage::Forward && !ep.policies.has_forward_policy() {
            rules.push(commented(
                Rule {
                    actions: vec![Action::MarkOr(accept)],
                    verdict: Some(Verdict::Return),
                    ..Rule::default()
                },
                format!(
                    "{}: no applyOnForward policy, forwarded traffic allowed",
                    ep.name
                ),
            ));
        }
        if stage == Stage::Normal {
            for profile in &ep.profiles {
                if profile == DEFAULT_ALLOW_PROFILE {
                    let mut r = commented(
                        Rule {
                            actions: vec![Action::MarkOr(accept)],
                            verdict: Some(Verdict::Return),
                            ..Rule::default()
                        },
                        format!("{}: profile {DEFAULT_ALLOW_PROFILE}", ep.name),
                    );
                    r.counter = true;
                    rules.push(r);
                }
            }
            let mut r = commented(
                rule(Vec::new(), Some(self.deny(dir, true))),
                format!("{}: no profile matched", ep.name),
            );
            r.counter = true;
            rules.push(r);
        }
        self.chains.push(Chain {
            name: name.clone(),
            base: None,
            rules,
        });
        name
    }

    // ---- policy chains (spec §3.4 "Policy chain") ---------------------------------------------------

    fn policy_chain(&mut self, p: usize, dir: Dir) -> String {
        let policy = &self.config.policies[p];
        let (prefix, rules) = match dir {
            Dir::Ingress => ("pi-", &policy.ingress),
            Dir::Egress => ("po-", &policy.egress),
        };
        let name = object_name(prefix, &policy.name);
        if !self.policy_chains.insert(name.clone()) {
            return name;
        }
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            self.compile_rule(&name, policy, dir, i, r, &mut out);
        }
        self.chains.push(Chain {
            name: name.clone(),
            base: None,
            rules: out,
        });
        name
    }

    /// How a deny ends: `nftablesFilterDenyAction` (Drop or Reject) for ingress in the filter stages;
    /// drop everywhere else. The kernel accepts `reject` only in input, forward, output and prerouting
    /// hooks, and the egress chains also run in mangle postrouting (DNATed locally originated packets),
    /// so egress denies drop whatever the setting; so do raw (untracked) and mangle (preDNAT) ones.
    fn deny(&self, dir: Dir, filter_stage: bool) -> Verdict {
        match (self.view.settings.deny_action, dir, filter_stage) {
            (DenyAction::Reject, Dir::Ingress, true) => Verdict::Reject,
            _ => Verdict::Drop,
        }
    }

    fn verdict_parts(
        &self,
        policy: &GlobalNetworkPolicy,
        dir: Dir,
        action: RuleAction,
    ) -> (Vec<Action>, Option<Verdict>) {
        match action {
            RuleAction::Allow => (vec![Action::MarkOr(self.accept)], Some(Verdict::Return)),
            RuleAction::Pass => (vec![Action::MarkOr(self.pass)], Some(Verdict::Return)),
            RuleAction::Deny => (
                Vec::new(),
                Some(self.deny(dir, !policy.pre_dnat && !policy.do_not_track)),
            ),
            RuleAction::Log => (
                vec![Action::Log {
                    prefix: self.log_prefix(policy),
                }],
                None,
            ),
        }
    }

    /// Felix's `logPrefix` with its `%t` (tier), `%k` (kind), `%n` (name), `%p` (policy) expanded.
    fn log_prefix(&self, policy: &GlobalNetworkPolicy) -> String {
        let expanded = self
            .view
            .settings
            .log_prefix
            .replace("%t", "default")
            .replace("%k", "gnp")
            .replace("%n", &policy.name)
            .replace("%p", &format!("gnp/{}", policy.name));
        truncate(&format!("{expanded}: "), MAX_LOG_PREFIX)
    }

    fn compile_rule(
        &mut self,
        chain: &str,
        policy: &GlobalNetworkPolicy,
        dir: Dir,
        index: usize,
        r: &PolicyRule,
        out: &mut Vec<Rule>,
    ) {
        let dir_name = match dir {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        };
        let comment = format!("{} {dir_name}[{index}] {:?}", policy.name, r.action);
        if r.source.service_accounts || r.destination.service_accounts {
            // Workload-only criterion: it matches no host address, so the rule can never match.
            return;
        }
        let (actions, verdict) = self.verdict_parts(policy, dir, r.action);
        let rule_id = format!("{chain}-{index}");
        // A rule with nothing family-specific is one nftables rule for both families; otherwise one per
        // family, each restricted to its family (spec §1.10).
        let per_family = is_family_specific(r);
        let families = if per_family {
            rule_families(r)
        } else {
            vec![Family::Ipv4]
        };
        for f in families {
            let mut base = Vec::new();
            if let Some(p) = r.protocol {
                base.push(Match::L4Proto {
                    proto: p,
                    negate: false,
                });
            }
            if let Some(p) = r.not_protocol {
                base.push(Match::L4Proto {
                    proto: p,
                    negate: true,
                });
            }
            if let Some(icmp) = r.icmp {
                base.push(Match::IcmpType {
                    family: f,
                    icmp_type: icmp.icmp_type,
                    negate: false,
                });
                if let Some(code) = icmp.code {
                    base.push(Match::IcmpCode {
                        family: f,
                        code,
                        negate: false,
                    });
                }
            }
            let mut alternatives: Vec<Alternative> = vec![Vec::new()];
            if let Some(not) = r.not_icmp {
                // not (type == t && code == c), written as two disjoint alternatives so Log logs once.
                let mut alts = vec![vec![Match::IcmpType {
                    family: f,
                    icmp_type: not.icmp_type,
                    negate: true,
                }]];
                if let Some(code) = not.code {
                    alts.push(vec![
                        Match::IcmpType {
                            family: f,
                            icmp_type: not.icmp_type,
                            negate: false,
                        },
                        Match::IcmpCode {
                            family: f,
                            code,
                            negate: true,
                        },
                    ]);
                }
                alternatives = product(&alternatives, &alts);
            }
            let mut exclusions: Vec<Alternative> = Vec::new();
            for (side, entity) in [
                (Direction::Source, &r.source),
                (Direction::Destination, &r.destination),
            ] {
                if !entity.nets.is_empty() {
                    let nets: Vec<IpNet> = entity
                        .nets
                        .iter()
                        .copied()
                        .filter(|n| family_of(n) == f)
                        .collect();
                    base.push(self.net_match(side, f, &nets, false));
                }
                let not_nets: Vec<IpNet> = entity
                    .not_nets
                    .iter()
                    .copied()
                    .filter(|n| family_of(n) == f)
                    .collect();
                if !not_nets.is_empty() {
                    base.push(self.net_match(side, f, &not_nets, true));
                }
                if let Some(sel) = &entity.selector {
                    let set = self
                        .selector_set(&SelectorKey::new(&sel.value, &entity.namespace_scope), f);
                    base.push(Match::Addr {
                        dir: side,
                        family: f,
                        set,
                        negate: false,
                    });
                }
                if let Some(sel) = &entity.not_selector {
                    let set = self
                        .selector_set(&SelectorKey::new(&sel.value, &entity.namespace_scope), f);
                    base.push(Match::Addr {
                        dir: side,
                        family: f,
                        set,
                        negate: true,
                    });
                }
                let port_alts = self.port_alternatives(r, entity, side, f, &entity.ports);
                if let Some(alts) = port_alts {
                    alternatives = product(&alternatives, &alts);
                }
                let numeric_not = numeric_ports(&entity.not_ports);
                if !numeric_not.is_empty() {
                    let proto = r.protocol.unwrap_or(proto::TCP);
                    let port = self.port_match(&numeric_not);
                    base.push(Match::Port {
                        dir: side,
                        proto,
                        port,
                        negate: true,
                    });
                }
                if !named_ports(&entity.not_ports).is_empty() {
                    for alt in self.named_port_alternatives(r, entity, side, f, &entity.not_ports) {
                        exclusions.push(alt);
                    }
                }
            }
            for alt in alternatives {
                let mut matches = base.clone();
                matches.extend(alt);
                if per_family && !matches.iter().any(implies_family) {
                    matches.insert(0, Match::NfProto(f));
                }
                if exclusions.is_empty() {
                    out.push(Rule {
                        matches,
                        counter: true,
                        actions: actions.clone(),
                        verdict: verdict.clone(),
                        comment: Some(truncate(&comment, MAX_COMMENT)),
                    });
                } else {
                    self.rule_with_exclusions(
                        &rule_id,
                        f,
                        out.len(),
                        matches,
                        &exclusions,
                        &actions,
                        &verdict,
                        &comment,
                        out,
                    );
                }
            }
        }
    }

    /// A rule with named `notPorts`: the packet must match none of several (address, protocol, port)
    /// groups, which one nftables rule cannot say. The positive part jumps to a helper chain that returns
    /// on an excluded packet and otherwise applies the action; the caller re-checks the marks.
    #[allow(clippy::too_many_arguments)]
    fn rule_with_exclusions(
        &mut self,
        rule_id: &str,
        f: Family,
        n: usize,
        matches: Vec<Match>,
        exclusions: &[Alternative],
        actions: &[Action],
        verdict: &Option<Verdict>,
        comment: &str,
        out: &mut Vec<Rule>,
    ) {
        let name = object_name("", &format!("{rule_id}-{}-x{n}", family_suffix(f)));
        let mut rules: Vec<Rule> = exclusions
            .iter()
            .map(|e| rule(e.clone(), Some(Verdict::Return)))
            .collect();
        rules.push(Rule {
            matches: Vec::new(),
            counter: true,
            actions: actions.to_vec(),
            verdict: verdict.clone(),
            comment: Some(truncate(comment, MAX_COMMENT)),
        });
        self.chains.push(Chain {
            name: name.clone(),
            base: None,
            rules,
        });
        out.push(rule(matches, Some(Verdict::Jump(name))));
        out.push(rule(
            vec![self.mark_is(self.accept, true)],
            Some(Verdict::Return),
        ));
        out.push(rule(
            vec![self.mark_is(self.pass, true)],
            Some(Verdict::Return),
        ));
    }

    /// `nets` (of family `f`) on side `dir`: a direct match when they aggregate into one network, else a
    /// lookup in the literal set of their aggregate.
    fn net_match(&mut self, dir: Direction, f: Family, nets: &[IpNet], negate: bool) -> Match {
        let elements = addr_elements(&crate::resolve::address_set(nets), f);
        match elements.as_slice() {
            [one] => Match::Net {
                dir,
                family: f,
                net: match one {
                    SetElement::V4(n) => IpNet::V4(*n),
                    SetElement::V6(n) => IpNet::V6(*n),
                    SetElement::Ports(..) => unreachable!("address elements"),
                },
                negate,
            },
            _ => Match::Addr {
                dir,
                family: f,
                set: self.literal_set(addr_set_type(f, &elements), elements),
                negate,
            },
        }
    }

    fn selector_set(&mut self, key: &SelectorKey, f: Family) -> String {
        let digest = Sha256::digest(format!("{}|{}", key.canonical, key.namespaced).as_bytes());
        let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        if let Some(name) = self.selector_set_names.get(&(hash.clone(), f)) {
            return name.clone();
        }
        let members = self
            .view
            .selector_sets
            .get(key)
            .map(|set| addr_elements(set, f))
            .unwrap_or_default();
        let set_type = addr_set_type(f, &members);
        let name = format!("sel-{hash}-{}", set_type_suffix(set_type));
        self.add_set(name.clone(), set_type, members);
        self.selector_set_names.insert((hash, f), name.clone());
        name
    }

    /// Numeric ports: one port or one range (after merging) is matched directly, more need a set.
    fn port_match(&mut self, ranges: &[(u16, u16)]) -> PortMatch {
        let elements = port_elements(ranges);
        match elements.as_slice() {
            [SetElement::Ports(lo, hi)] if lo == hi => PortMatch::Single(*lo),
            [SetElement::Ports(lo, hi)] => PortMatch::Range(*lo, *hi),
            _ => PortMatch::Set(self.literal_set(SetType::InetService, elements)),
        }
    }

    /// `ports` means: numeric ports OR any of the named ports (spec §1.6). `None` when the rule has none.
    fn port_alternatives(
        &mut self,
        r: &PolicyRule,
        entity: &crate::config::model::EntityRule,
        side: Direction,
        f: Family,
        ports: &[Port],
    ) -> Option<Vec<Alternative>> {
        if ports.is_empty() {
            return None;
        }
        let mut alts = Vec::new();
        let numeric = numeric_ports(ports);
        if !numeric.is_empty() {
            let proto = r.protocol.unwrap_or(proto::TCP);
            let port = self.port_match(&numeric);
            alts.push(vec![Match::Port {
                dir: side,
                proto,
                port,
                negate: false,
            }]);
        }
        if !named_ports(ports).is_empty() {
            alts.extend(self.named_port_alternatives(r, entity, side, f, ports));
        }
        Some(alts)
    }

    /// Named ports (spec §1.6, §3.8): the (IP, protocol, port) triples of HEPs picked by the same side's
    /// selector (or every HEP) that declare a port of that name, grouped by (protocol, port) into one
    /// alternative each: an address set plus a port match.
    fn named_port_alternatives(
        &mut self,
        r: &PolicyRule,
        entity: &crate::config::model::EntityRule,
        side: Direction,
        f: Family,
        ports: &[Port],
    ) -> Vec<Alternative> {
        let names: BTreeSet<&str> = named_ports(ports).into_iter().collect();
        let mut groups: BTreeMap<(u8, u16), Vec<IpNet>> = BTreeMap::new();
        if entity.namespace_scope != NamespaceScope::Namespaced {
            for hep in &self.config.host_endpoints {
                if let Some(sel) = &entity.selector {
                    if !sel.value.matches(&hep.labels) {
                        continue;
                    }
                }
                for port in hep.ports.iter().filter(|p| names.contains(p.name.as_str())) {
                    if r.protocol.is_some_and(|p| p != port.protocol) {
                        continue;
                    }
                    let ips = hep
                        .expected_ips
                        .iter()
                        .map(|ip| IpNet::from(*ip))
                        .filter(|n| family_of(n) == f);
                    groups
                        .entry((port.protocol, port.port))
                        .or_default()
                        .extend(ips);
                }
            }
        }
        let mut alts = Vec::new();
        for ((p, port), nets) in groups {
            if nets.is_empty() {
                continue;
            }
            alts.push(vec![
                self.net_match(side, f, &nets, false),
                Match::Port {
                    dir: side,
                    proto: p,
                    port: PortMatch::Single(port),
                    negate: false,
                },
            ]);
        }
        alts
    }

    // ---- dispatch and base chains (spec §3.3) --------------------------------------------------------

    /// A dispatch chain: a verdict map from interface name to per-HEP chain (goto), then the wildcard HEP's
    /// chain for everything unclaimed. Returns the chain name, or None when no HEP takes part.
    fn dispatch(
        &mut self,
        name: &str,
        key: IfDir,
        stage: Stage,
        dir: Dir,
        include_wildcard: bool,
        wildcard_skips_workloads: bool,
    ) -> Option<String> {
        let mut elements = Vec::new();
        for ep in &self.view.endpoints {
            if !self.needs_endpoint_chain(ep, stage, dir) {
                continue;
            }
            let chain = object_name(endpoint_chain_prefix(stage, dir), &ep.name);
            for iface in &ep.interfaces {
                elements.push((iface.clone(), Verdict::Goto(chain.clone())));
            }
        }
        elements.sort_by(|a, b| a.0.cmp(&b.0));
        let wildcard = self
            .view
            .wildcard
            .as_ref()
            .filter(|ep| include_wildcard && self.needs_endpoint_chain(ep, stage, dir))
            .map(|ep| object_name(endpoint_chain_prefix(stage, dir), &ep.name));
        if elements.is_empty() && wildcard.is_none() {
            return None;
        }
        let mut rules = Vec::new();
        if !elements.is_empty() {
            let map = format!("{name}-map");
            self.maps.push(VerdictMap {
                name: map.clone(),
                elements,
            });
            rules.push(rule(Vec::new(), Some(Verdict::Vmap { key, map })));
        }
        if let Some(chain) = wildcard {
            if wildcard_skips_workloads {
                let d = if key == IfDir::In {
                    Direction::Source
                } else {
                    Direction::Destination
                };
                for prefix in &self.view.settings.workload_prefixes {
                    rules.push(rule(
                        vec![Match::IfNamePrefix {
                            dir: d,
                            prefix: prefix.clone(),
                        }],
                        Some(Verdict::Return),
                    ));
                }
            }
            rules.push(commented(
                rule(Vec::new(), Some(Verdict::Goto(chain))),
                "wildcard HostEndpoint",
            ));
        }
        self.chains.push(Chain {
            name: name.to_string(),
            base: None,
            rules,
        });
        Some(name.to_string())
    }

    fn dispatch_and_base_chains(&mut self) {
        let (accept, pass) = (self.accept, self.pass);
        let accepted = || Match::Mark {
            mask: accept,
            value: accept,
        };
        let workload_returns = |dir: Direction, prefixes: &[String]| -> Vec<Rule> {
            prefixes
                .iter()
                .map(|p| {
                    commented(
                        rule(
                            vec![Match::IfNamePrefix {
                                dir,
                                prefix: p.clone(),
                            }],
                            Some(Verdict::Return),
                        ),
                        "workload interface: not a host endpoint",
                    )
                })
                .collect()
        };
        let prefixes = self.view.settings.workload_prefixes.clone();

        let raw_from = self.dispatch(
            "raw-from-hep",
            IfDir::In,
            Stage::Untracked,
            Dir::Ingress,
            false,
            false,
        );
        let raw_to = self.dispatch(
            "raw-to-hep",
            IfDir::Out,
            Stage::Untracked,
            Dir::Egress,
            false,
            false,
        );
        let pre_from = self.dispatch(
            "mangle-from-hep",
            IfDir::In,
            Stage::PreDnat,
            Dir::Ingress,
            true,
            false,
        );
        let from = self.dispatch(
            "filter-from-hep",
            IfDir::In,
            Stage::Normal,
            Dir::Ingress,
            true,
            false,
        );
        let to = self.dispatch(
            "filter-to-hep",
            IfDir::Out,
            Stage::Normal,
            Dir::Egress,
            true,
            false,
        );
        let fw_from = self.dispatch(
            "filter-from-hep-fw",
            IfDir::In,
            Stage::Forward,
            Dir::Ingress,
            true,
            false,
        );
        let fw_to = self.dispatch(
            "filter-to-hep-fw",
            IfDir::Out,
            Stage::Forward,
            Dir::Egress,
            true,
            false,
        );
        // The mangle egress copy reuses the normal egress chains (`th-`); the wildcard skips workloads.
        let post_to = self.dispatch(
            "mangle-to-hep",
            IfDir::Out,
            Stage::Normal,
            Dir::Egress,
            true,
            true,
        );

        let mut base = Vec::new();
        for (name, hook, prio, dispatch) in [
            ("raw-prerouting", Hook::Prerouting, PRIO_RAW, raw_from),
            ("raw-output", Hook::Output, PRIO_RAW, raw_to),
        ] {
            let mut rules = vec![Rule {
                actions: vec![self.clear_marks()],
                ..Rule::default()
            }];
            if let Some(d) = dispatch {
                rules.push(rule(Vec::new(), Some(Verdict::Jump(d))));
                rules.push(rule(vec![accepted()], Some(Verdict::Accept)));
            }
            base.push(Chain {
                name: name.into(),
                base: Some(BaseHook {
                    hook,
                    priority: prio,
                }),
                rules,
            });
        }

        let est = CtStates {
            invalid: false,
            established: true,
            related: true,
            new: false,
        };
        let mut rules = vec![
            rule(vec![Match::CtState(est)], Some(Verdict::Accept)),
            rule(vec![accepted()], Some(Verdict::Accept)),
        ];
        if let Some(d) = pre_from {
            rules.push(rule(Vec::new(), Some(Verdict::Jump(d))));
            rules.push(rule(vec![accepted()], Some(Verdict::Accept)));
        }
        base.push(Chain {
            name: "mangle-prerouting".into(),
            base: Some(BaseHook {
                hook: Hook::Prerouting,
                priority: PRIO_MANGLE,
            }),
            rules,
        });

        let mut rules = workload_returns(Direction::Source, &prefixes);
        rules.push(rule(vec![accepted()], Some(Verdict::Accept)));
        rules.push(Rule {
            actions: vec![self.clear_marks()],
            ..Rule::default()
        });
        if let Some(d) = from {
            rules.push(rule(Vec::new(), Some(Verdict::Jump(d))));
            rules.push(rule(vec![accepted()], Some(Verdict::Accept)));
        }
        base.push(Chain {
            name: "filter-input".into(),
            base: Some(BaseHook {
                hook: Hook::Input,
                priority: PRIO_FILTER,
            }),
            rules,
        });

        let mut rules = vec![Rule {
            actions: vec![Action::MarkAnd(!pass)],
            ..Rule::default()
        }];
        if let Some(d) = fw_from {
            rules.push(rule(
                vec![Match::Mark {
                    mask: accept,
                    value: 0,
                }],
                Some(Verdict::Jump(d)),
            ));
        }
        if let Some(d) = fw_to {
            rules.push(rule(Vec::new(), Some(Verdict::Jump(d))));
        }
        rules.push(rule(vec![accepted()], Some(Verdict::Accept)));
        rules.push(commented(
            Rule {
                actions: vec![Action::MarkOr(accept)],
                ..Rule::default()
            },
            "forwarded: mark for mangle postrouting",
        ));
        base.push(Chain {
            name: "filter-forward".into(),
            base: Some(BaseHook {
                hook: Hook::Forward,
                priority: PRIO_FILTER,
            }),
            rules,
        });

        let mut rules = vec![rule(vec![accepted()], Some(Verdict::Accept))];
        rules.extend(workload_returns(Direction::Destination, &prefixes));
        rules.push(Rule {
            actions: vec![self.clear_marks()],
            ..Rule::default()
        });
        rules.push(commented(
            rule(
                vec![Match::CtStatusDnat { negate: false }],
                Some(Verdict::Return),
            ),
            "DNATed: checked in mangle postrouting",
        ));
        if let Some(d) = to {
            rules.push(rule(Vec::new(), Some(Verdict::Jump(d))));
            rules.push(rule(vec![accepted()], Some(Verdict::Accept)));
        }
        base.push(Chain {
            name: "filter-output".into(),
            base: Some(BaseHook {
                hook: Hook::Output,
                priority: PRIO_FILTER,
            }),
            rules,
        });

        let mut rules = vec![rule(vec![accepted()], Some(Verdict::Return))];
        if let Some(d) = post_to {
            rules.push(rule(
                vec![Match::CtStatusDnat { negate: false }],
                Some(Verdict::Jump(d)),
            ));
            rules.push(rule(vec![accepted()], Some(Verdict::Return)));
        }
        base.push(Chain {
            name: "mangle-postrouting".into(),
            base: Some(BaseHook {
                hook: Hook::Postrouting,
                priority: PRIO_MANGLE,
            }),
            rules,
        });
        // Base chains first: the order `render` prints them in.
        base.append(&mut self.chains);
        self.chains = base;
    }
}

fn product(a: &[Alternative], b: &[Alternative]) -> Vec<Alternative> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let mut v = x.clone();
            v.extend(y.iter().cloned());
            out.push(v);
        }
    }
    out
}

pub fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::SCTP => "sctp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        proto::UDPLITE => "udplite".into(),
        n => n.to_string(),
    }
}

/// Looks up the address set a selector resolves to, computing it when `resolve` did not (used by
/// `explain` and tests).
pub fn addresses_for(
    config: &Config,
    view: &NodeView,
    key: &SelectorKey,
    selector: &crate::selector::Selector,
) -> AddressSet {
    view.selector_sets.get(key).cloned().unwrap_or_else(|| {
        let scope = if key.namespaced {
            NamespaceScope::Namespaced
        } else {
            NamespaceScope::Any
        };
        selector_addresses(config, selector, &scope).0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(yaml: &str) -> Ruleset {
        let loaded = crate::config::load::load_sources(&[("t.yaml".to_string(), yaml.to_string())]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let view = crate::resolve::resolve(&loaded.config, "node1", &[]);
        compile(&loaded.config, &view, DEFAULT_TABLE)
    }

    /// The streamed hash is the hash of the whole `Debug` text with an empty comment, as it always was.
    #[test]
    fn content_hash_is_the_debug_text_hash() {
        let rs = compiled(
            "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: h, labels: {r: w}}, spec: {node: node1, interfaceName: eth0}}\n\
             - {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: p}, spec: {selector: r == 'w', ingress: [{action: Allow, protocol: TCP, source: {nets: [192.0.2.0/24]}, destination: {ports: [22, 80]}}]}}\n",
        );
        let mut copy = rs.clone();
        copy.comment.clear();
        let digest = Sha256::digest(format!("{copy:?}").as_bytes());
        let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(content_hash(&rs), expected);
        assert_eq!(rs.comment, format!("hostpolicyd sha256:{expected}"));
    }

    /// Failsafe entries with a net: one rule per (protocol, port, family), its set holding every net, so
    /// the failsafe chains do not grow with the number of nets.
    #[test]
    fn failsafe_nets_share_one_rule_per_port() {
        let rs = compiled(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec:\n  \
             failsafeInboundHostPorts:\n  - {protocol: TCP, port: 22, net: 192.0.2.0/25}\n  - {protocol: TCP, port: 22, net: 198.51.100.0/24}\n  \
             - {protocol: TCP, port: 22, net: \"2001:db8::/64\"}\n  - {protocol: TCP, port: 443, net: 192.0.2.0/25}\n  - {protocol: UDP, port: 68}\n  \
             failsafeOutboundHostPorts: []\n",
        );
        let chain = rs.chain("failsafe-in").unwrap();
        let sets: Vec<(&Match, Vec<SetElement>)> = chain
            .rules
            .iter()
            .flat_map(|r| r.matches.iter())
            .filter_map(|m| match m {
                Match::Addr { set, .. } => Some((m, rs.set(set).unwrap().elements.clone())),
                _ => None,
            })
            .collect();
        // udp 68 (no net); tcp 22 v4 (two nets: a set), tcp 22 v6 and tcp 443 v4 (one net each: direct)
        assert_eq!(chain.rules.len(), 4, "{:#?}", chain.rules);
        assert_eq!(sets.len(), 1);
        let nets: Vec<&IpNet> = chain
            .rules
            .iter()
            .flat_map(|r| r.matches.iter())
            .filter_map(|m| match m {
                Match::Net { net, .. } => Some(net),
                _ => None,
            })
            .collect();
        assert_eq!(
            nets,
            [
                &"2001:db8::/64".parse::<IpNet>().unwrap(),
                &"192.0.2.0/25".parse().unwrap()
            ]
        );
        assert_eq!(
            sets[0].1,
            vec![
                SetElement::V4("192.0.2.0/25".parse().unwrap()),
                SetElement::V4("198.51.100.0/24".parse().unwrap())
            ]
        );
        assert!(chain.rules[1]
            .comment
            .as_deref()
            .unwrap()
            .contains("tcp:192.0.2.0/25,198.51.100.0/24:22"));
    }

    fn policy_rules(rs: &Ruleset, policy: &str) -> Vec<Vec<Match>> {
        rs.chain(&format!("pi-{policy}"))
            .unwrap()
            .rules
            .iter()
            .map(|r| r.matches.clone())
            .collect()
    }

    /// A list that normalises to one network or one port range is matched directly; a longer one is a
    /// set named by its content, shared by every rule that writes the same list (issue 7).
    #[test]
    fn single_nets_and_ranges_are_direct_and_equal_lists_share_a_set() {
        let policy = |name: &str, order: u32, nets: &str, ports: &str| {
            format!(
                "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\n\
                 spec:\n  order: {order}\n  selector: all()\n  types: [Ingress]\n  ingress:\n  \
                 - action: Allow\n    protocol: TCP\n    source: {{nets: {nets}, notNets: [\"192.0.2.128/25\"]}}\n    \
                 destination: {{ports: {ports}, notPorts: [81]}}\n"
            )
        };
        let yaml = format!(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: h, labels: {{a: b}}}}\n\
             spec: {{node: node1, interfaceName: eth0, expectedIPs: [\"192.0.2.1\"]}}\n{}{}{}",
            // two /25s aggregate into one /24; 80 and 81:90 merge into one range
            policy("one", 1, "[\"198.51.100.0/25\", \"198.51.100.128/25\"]", "[80, \"81:90\"]"),
            policy("two", 2, "[\"198.51.100.0/24\", \"203.0.113.7/32\"]", "[22, 443]"),
            policy("three", 3, "[\"203.0.113.7/32\", \"198.51.100.0/24\"]", "[443, 22]"),
        );
        let rs = compiled(&yaml);
        let one = policy_rules(&rs, "one");
        assert_eq!(one.len(), 1);
        assert_eq!(
            one[0],
            vec![
                Match::L4Proto {
                    proto: 6,
                    negate: false
                },
                Match::Net {
                    dir: Direction::Source,
                    family: Family::Ipv4,
                    net: "198.51.100.0/24".parse().unwrap(),
                    negate: false
                },
                Match::Net {
                    dir: Direction::Source,
                    family: Family::Ipv4,
                    net: "192.0.2.128/25".parse().unwrap(),
                    negate: true
                },
                Match::Port {
                    dir: Direction::Destination,
                    proto: 6,
                    port: PortMatch::Single(81),
                    negate: true
                },
                Match::Port {
                    dir: Direction::Destination,
                    proto: 6,
                    port: PortMatch::Range(80, 90),
                    negate: false
                },
            ]
        );
        // the same lists in another order: the same two sets, named by content only
        let (two, three) = (policy_rules(&rs, "two"), policy_rules(&rs, "three"));
        assert_eq!(two, three);
        let sets: Vec<&str> = two[0]
            .iter()
            .filter_map(|m| match m {
                Match::Addr { set, .. }
                | Match::Port {
                    port: PortMatch::Set(set),
                    ..
                } => Some(set.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(sets.len(), 2, "{two:?}");
        assert!(
            sets[0].starts_with("lit-") && sets[0].ends_with("-v4"),
            "{sets:?}"
        );
        assert!(
            sets[1].starts_with("lit-") && sets[1].ends_with("-port"),
            "{sets:?}"
        );
        // (the failsafe port lists are literal sets too)
        let v4 = rs.sets.iter().filter(|s| s.name.ends_with("-v4")).count();
        assert_eq!(v4, 1, "{:?}", rs.sets);
    }

    /// Only single hosts (or nothing): a hash set, named `-v4h`; a shorter prefix makes it an interval
    /// set, named `-v4`, so a change of kind is a change of name (issue 7).
    #[test]
    fn host_only_sets_are_hash_sets_named_by_kind() {
        let rs = compiled(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h, labels: {a: b}}\n\
             spec: {node: node1, interfaceName: eth0, expectedIPs: [\"192.0.2.1\"]}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\n\
             spec:\n  selector: all()\n  types: [Ingress]\n  ingress:\n  \
             - {action: Allow, source: {nets: [\"192.0.2.1/32\", \"192.0.2.7/32\"]}}\n  \
             - {action: Allow, source: {nets: [\"192.0.2.1/32\", \"198.51.100.0/24\"]}}\n",
        );
        let sets: Vec<(SetType, &str)> = rs
            .sets
            .iter()
            .filter(|s| s.set_type != SetType::InetService)
            .map(|s| (s.set_type, s.name.as_str()))
            .collect();
        let kinds: BTreeSet<String> = sets.iter().map(|(t, _)| format!("{t:?}")).collect();
        assert_eq!(kinds.len(), 2, "one of each kind: {sets:?}");
        for (t, name) in sets {
            match t {
                SetType::Ipv4Hosts => assert!(name.ends_with("-v4h"), "{name}"),
                SetType::Ipv4Addr => assert!(name.ends_with("-v4"), "{name}"),
                _ => panic!("{t:?} {name}"),
            }
        }
        assert_eq!(addr_set_type(Family::Ipv6, &[]), SetType::Ipv6Hosts);
    }
}
