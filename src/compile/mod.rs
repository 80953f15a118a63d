//! NodeView → Ruleset (the nftables layout of DESIGN.md, the chain sequence of spec §3.3–§3.4).
//!
//! Pure and deterministic: the same configuration and interfaces give the same ruleset, byte for byte,
//! so the daemon can compare content hashes ([`hash`]) instead of reading the kernel back. Every name
//! and comment comes from [`names`]; every rule gets its typed origin (`Ruleset::origins`).
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

pub mod cache;
mod flows;
pub mod hash;
pub mod names;
mod staged;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::model::{
    proto, Action as RuleAction, Config, DenyAction, GlobalNetworkPolicy, NamespaceScope, Port,
    Pos, Rule as PolicyRule,
};
use crate::resolve::{
    selector_addresses, tier_groups, ActiveEndpoint, AddressSet, Dir, NodeView, SelectorKey, Stage,
};
use crate::ruleset::{
    Action, BaseHook, Chain, CtStates, Direction, Family, Hook, IfDir, Kind, Match, Origin,
    OriginId, Origins, PortMatch, Rule, Ruleset, Set, SetElement, SetType, SourcePos, Verdict,
    VerdictMap,
};
use crate::settings::Flows;

pub use cache::Cache;
pub use hash::{content_hash, hash_from_comment};
pub use names::DEFAULT_TABLE;

pub const DEFAULT_ALLOW_PROFILE: &str = "projectcalico-default-allow";

pub const PRIO_RAW: i32 = -300;
pub const PRIO_MANGLE: i32 = -150;
pub const PRIO_FILTER: i32 = 0;

/// Compiles the node view into one table named `table`, with flow records as they are by default.
pub fn compile(config: &Config, view: &NodeView, table: &str) -> Ruleset {
    compile_with(config, view, table, &Flows::default())
}

/// Compiles the node view into one table named `table`; `flows` says whether and how the table
/// reports to the daemon's flow records (`flows::FlowRules`).
pub fn compile_with(config: &Config, view: &NodeView, table: &str, flows: &Flows) -> Ruleset {
    compile_cached(config, view, table, flows, None)
}

/// [`compile_with`], taking back from `cache` the chains of the policies that did not change since
/// the compile that filled it, and keeping this compile's for the next ([`cache`]). The ruleset is
/// the same as without the cache.
pub fn compile_cached(
    config: &Config,
    view: &NodeView,
    table: &str,
    flows: &Flows,
    cache: Option<&mut Cache>,
) -> Ruleset {
    // Without a cache (one-shot commands), a big configuration's policy chains are built on every
    // core (the daemon's compile takes most of them back from its cache instead).
    let threads = if cache.is_none() && config.policies.len() >= PARALLEL_FROM {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    compile_threads(config, view, table, flows, cache, threads)
}

/// Below this many policies one thread builds their chains.
const PARALLEL_FROM: usize = 64;

/// Policy chains taken back from the several threads' fragments (tests: the path is taken).
#[cfg(test)]
pub(crate) static PREBUILT_TAKEN: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// [`compile_cached`] on up to `threads` threads: without a cache, the policy chains are first built
/// on `threads` threads (each a part of the policy list, as the compile cache's fragments,
/// [`cache`]), then the compile takes them back in its one order, exactly as the daemon's compile
/// takes back the chains of its previous compile; the ruleset is the same whatever the number of
/// threads, byte for byte (the test `compile_does_not_depend_on_the_number_of_threads`).
pub fn compile_threads(
    config: &Config,
    view: &NodeView,
    table: &str,
    flows: &Flows,
    cache: Option<&mut Cache>,
    threads: usize,
) -> Ruleset {
    let wanted = if cache.is_none() && threads > 1 {
        policy_chains_in_order(view)
    } else {
        Vec::new()
    };
    if wanted.is_empty() {
        return compile_on(Compiler::new(config, view), table, flows, cache);
    }
    // The policy chains in `threads` parts of the order the compile asks for them: this thread builds
    // the first part's as it goes, the other threads the later parts', which it takes back when it
    // gets there (waiting for them if need be).
    let parts = split_by_rules(config, &wanted, threads);
    let flow_rules = flows::FlowRules::of(flows);
    std::thread::scope(|s| {
        let mut c = Compiler::new(config, view);
        let mut pre = Prebuilt {
            owner: vec![[0u8; 2]; config.policies.len()],
            incoming: Vec::with_capacity(parts.len()),
            fragments: cache::Fragments::with_policies(config.policies.len()),
        };
        for (k, part) in parts.iter().enumerate().skip(1) {
            for &(p, dir) in *part {
                pre.owner[p][usize::from(dir == Dir::Egress)] = k as u8;
            }
            let (tx, rx) = std::sync::mpsc::channel();
            pre.incoming.push(Some(rx));
            let part: &[(usize, Dir)] = part;
            s.spawn(move || {
                let mut w = Compiler::new(config, view);
                w.flows = flow_rules;
                w.cache_new = Some(cache::Fragments::with_policies(config.policies.len()));
                w.chains.reserve(part.len());
                w.chain_origins.reserve(part.len());
                w.chain_digests.reserve(part.len());
                for &(p, dir) in part {
                    w.policy_chain(p, dir);
                }
                let _ = tx.send(w.cache_new.take().expect("recording"));
            });
        }
        c.chains.reserve(wanted.len() + 64);
        c.chain_origins.reserve(wanted.len() + 64);
        c.chain_digests.reserve(wanted.len() + 64);
        c.prebuilt = Some(pre);
        compile_on(c, table, flows, None)
    })
}

/// Policy chains built on other threads for a compile ([`compile_threads`]).
struct Prebuilt {
    /// Which thread builds policy `p`'s chain per direction: 0 this one, k the part `k`'s.
    owner: Vec<[u8; 2]>,
    /// Part k's fragments (index k - 1), until received.
    incoming: Vec<Option<std::sync::mpsc::Receiver<cache::Fragments>>>,
    fragments: cache::Fragments,
}

/// `wanted` in `threads` contiguous parts with about as many policy rules each.
fn split_by_rules<'w>(
    config: &Config,
    wanted: &'w [(usize, Dir)],
    threads: usize,
) -> Vec<&'w [(usize, Dir)]> {
    let weight = |&(p, dir): &(usize, Dir)| {
        1 + match dir {
            Dir::Ingress => config.policies[p].ingress.len(),
            Dir::Egress => config.policies[p].egress.len(),
        }
    };
    let total: usize = wanted.iter().map(weight).sum();
    let mut parts = Vec::with_capacity(threads);
    let (mut start, mut acc) = (0, 0);
    for (i, w) in wanted.iter().enumerate() {
        acc += weight(w);
        if acc * threads >= total * (parts.len() + 1) && parts.len() + 1 < threads {
            parts.push(&wanted[start..=i]);
            start = i + 1;
        }
    }
    parts.push(&wanted[start..]);
    parts
}

fn compile_on(
    mut c: Compiler<'_>,
    table: &str,
    flows: &Flows,
    mut cache: Option<&mut Cache>,
) -> Ruleset {
    let (config, view) = (c.config, c.view);
    c.flows = flows::FlowRules::of(flows);
    if let Some(cache) = cache.as_deref_mut() {
        c.cache_old = cache.take(cache::Globals {
            accept: c.accept,
            pass: c.pass,
            deny_action: view.settings.deny_action,
            log_prefix: view.settings.log_prefix.clone(),
            flows: c.flows,
        });
        c.cache_new = Some(cache::Fragments::with_policies(config.policies.len()));
        // Lists as big as last time's from the start: no copies as they grow.
        let (chains, origins, flow_ids) = cache.sizes;
        c.chains.reserve(chains);
        c.chain_origins.reserve(chains);
        c.chain_digests.reserve(chains);
        c.origins.reserve(origins);
        c.flow_ids.reserve(flow_ids);
        c.flow_id_of.reserve(flow_ids);
    }
    c.failsafe_chains();
    let endpoints: Vec<&ActiveEndpoint> = view.endpoints.iter().collect();
    for ep in endpoints.iter().copied().chain(view.wildcard.iter()) {
        c.endpoint_chains(ep);
    }
    c.dispatch_and_base_chains();
    if let (Some(cache), Some(fragments)) = (cache, c.cache_new.take()) {
        // The previous compile's fragments left unused are dropped here.
        drop(std::mem::take(&mut c.cache_old));
        cache.put(fragments, c.cache_use);
        cache.sizes = (c.chains.len(), c.origins.len(), c.flow_ids.len());
    }
    if let Some(pre) = c.prebuilt.take() {
        #[cfg(test)]
        PREBUILT_TAKEN.fetch_add(c.cache_use.reused, std::sync::atomic::Ordering::Relaxed);
        // The fragments of the other threads (their chains are shared with the ruleset): freed on
        // a thread of their own.
        std::thread::spawn(move || drop(pre));
    }
    let digests = std::mem::take(&mut c.chain_digests);
    let mut flow_ids: Vec<(u64, OriginId)> = c.flow_ids.into_iter().collect();
    flow_ids.sort_unstable_by_key(|(id, _)| *id);
    let mut ruleset = Ruleset {
        table: table.to_string(),
        comment: String::new(),
        sets: c.sets.into_values().collect(),
        maps: c.maps,
        chains: c.chains,
        origins: Origins {
            list: c.origins,
            rules: c.chain_origins,
            flow_ids,
        },
    };
    compact(&mut ruleset);
    ruleset.comment = hash::table_comment(&hash::content_hash_with(&ruleset, &digests));
    ruleset
}

/// Every policy chain the compile of `view` builds (not the staged policies' shadow chains), each
/// once, in the order the compile first asks for it.
fn policy_chains_in_order(view: &NodeView) -> Vec<(usize, Dir)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for ep in view.endpoints.iter().chain(view.wildcard.iter()) {
        for stage in Stage::ALL {
            for dir in Dir::BOTH {
                for &p in ep.policies.get(stage, dir) {
                    if seen.insert((p, dir)) {
                        out.push((p, dir));
                    }
                }
            }
        }
    }
    out
}

/// Drops the spare capacity of the origin lists: the daemon keeps the ruleset it applied last for as
/// long as it runs, and vectors filled by `push` carry up to half again their length (10,000
/// policies: ~60,000 rules, a few MiB). The rules are made compact as their chain is pushed
/// ([`Compiler::push_chain`]).
fn compact(ruleset: &mut Ruleset) {
    ruleset.origins.list.shrink_to_fit();
    for ids in &mut ruleset.origins.rules {
        ids.shrink_to_fit();
    }
}

struct Compiler<'a> {
    config: &'a Config,
    view: &'a NodeView,
    accept: u32,
    pass: u32,
    sets: BTreeMap<String, Set>,
    maps: Vec<VerdictMap>,
    chains: Vec<Arc<Chain>>,
    /// The origin of each rule of `chains`, chain by chain.
    chain_origins: Vec<Vec<OriginId>>,
    /// The origins of the rules (`OriginId` indexes it): one per policy rule, per HostEndpoint chain
    /// and what it does, per dispatch chain.
    origins: Vec<Origin>,
    /// Shared names: one allocation per policy, HostEndpoint and tier however many origins name them.
    policy_names: Vec<Option<Arc<str>>>,
    /// The same for the would-be configuration's policies, swapped with `policy_names` while a shadow
    /// chain is compiled (made once, not per shadow chain).
    staged_policy_names: Vec<Option<Arc<str>>>,
    hep_names: Vec<Option<Arc<str>>>,
    tier_names: HashMap<String, Arc<str>>,
    policy_chains: HashSet<String>,
    /// Whether policy `p`'s chain for ingress (0) and egress (1) was made.
    policy_chain_made: Vec<[bool; 2]>,
    /// Selector set name by (selector hash, family): its type (and so its name) depends on the members,
    /// which are looked up once.
    selector_set_names: BTreeMap<(String, Family), String>,
    /// Flow records: how the rules report to the daemon (`None`: they do not).
    flows: Option<flows::FlowRules>,
    /// Flow id → origin, and back; the tail chains made so far.
    flow_ids: HashMap<u64, OriginId, IdHash>,
    flow_id_of: HashMap<OriginId, u64, IdHash>,
    tails: BTreeSet<String>,
    /// Compiling the would-be set's shadow chains (see [`staged`]): rules mark, never decide.
    shadow: bool,
    /// The would-be configuration and view (staged policies), if any.
    staged_view: Option<(&'a Config, &'a NodeView)>,
    /// Incremental compiling ([`cache`]): the previous compile's policy chains, those of this
    /// compile (`None`: no cache), what is being recorded, and how the cache was used.
    cache_old: cache::Fragments,
    cache_new: Option<cache::Fragments>,
    recording: Option<cache::Recording>,
    cache_use: cache::Use,
    /// The content-hash digest of each chain of `chains`, where already known.
    chain_digests: Vec<Option<hash::Digest>>,
    /// The policy chains other threads build for this compile, if any.
    prebuilt: Option<Prebuilt>,
}

/// The hasher of the compile's maps keyed by flow id or origin id (one entry per policy rule, looked
/// up and filled again at every reload): a multiply, not SipHash. The keys are our own numbers.
type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
}

/// Rules of a chain being built, each with its origin.
#[derive(Clone, Default)]
struct Rules {
    rules: Vec<Rule>,
    origins: Vec<OriginId>,
}

impl Rules {
    fn push(&mut self, rule: Rule, origin: OriginId) {
        self.rules.push(rule);
        self.origins.push(origin);
    }
    fn extend(&mut self, other: Rules) {
        self.rules.extend(other.rules);
        self.origins.extend(other.origins);
    }
    fn len(&self) -> usize {
        self.rules.len()
    }
}

fn source_pos(pos: &Pos) -> SourcePos {
    SourcePos {
        file: pos.file.clone(),
        line: pos.line,
        column: pos.column,
    }
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

fn commented(mut r: Rule, comment: impl Into<String>) -> Rule {
    r.comment = Some(comment.into());
    r
}

fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
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
            chain_origins: Vec::new(),
            origins: Vec::new(),
            policy_names: vec![None; config.policies.len()],
            staged_policy_names: view
                .staged()
                .map_or_else(Vec::new, |(wc, _)| vec![None; wc.policies.len()]),
            hep_names: vec![None; config.host_endpoints.len()],
            tier_names: HashMap::new(),
            policy_chains: HashSet::new(),
            policy_chain_made: vec![[false; 2]; config.policies.len()],
            selector_set_names: BTreeMap::new(),
            flows: None,
            flow_ids: HashMap::default(),
            flow_id_of: HashMap::default(),
            tails: BTreeSet::new(),
            shadow: false,
            staged_view: view.staged(),
            cache_old: cache::Fragments::default(),
            cache_new: None,
            recording: None,
            cache_use: cache::Use::default(),
            chain_digests: Vec::new(),
            prebuilt: None,
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

    /// Adds a chain (made compact: it may be kept as long as the daemon runs).
    fn push_chain(&mut self, name: String, base: Option<BaseHook>, rules: Rules) {
        let Rules {
            rules: mut list,
            origins,
        } = rules;
        list.shrink_to_fit();
        for rule in &mut list {
            rule.matches.shrink_to_fit();
            rule.actions.shrink_to_fit();
        }
        self.push_shared(
            Arc::new(Chain {
                name,
                base,
                rules: list,
            }),
            origins,
            None,
        );
    }

    /// Adds a chain shared with another ruleset (or not yet), with its rules' origins and, when
    /// known, its digest for the content hash.
    fn push_shared(
        &mut self,
        chain: Arc<Chain>,
        origins: Vec<OriginId>,
        digest: Option<hash::Digest>,
    ) {
        self.chains.push(chain);
        self.chain_origins.push(origins);
        self.chain_digests.push(digest);
    }

    // ---- origins -----------------------------------------------------------------------------------

    /// Records `origin` for rules about to be pushed. Each call site makes one origin for all the rules
    /// it stands for (a policy rule's nftables rules, say), so the list holds no two equal origins
    /// that matter; no index of them is kept (compile time at 10,000 policies).
    fn origin(&mut self, origin: Origin) -> OriginId {
        let id = OriginId(u32::try_from(self.origins.len()).expect("fewer than 2^32 origins"));
        self.origins.push(origin);
        id
    }

    fn kind(&mut self, kind: Kind) -> OriginId {
        self.origin(Origin::new(kind))
    }

    fn policy_name(&mut self, p: usize) -> Arc<str> {
        let config = self.config;
        self.policy_names[p]
            .get_or_insert_with(|| Arc::from(config.policies[p].name.as_str()))
            .clone()
    }

    /// The tier of policy `p` (tiers spec §2).
    fn tier_name(&mut self, p: usize) -> Arc<str> {
        let tier = &self.config.policies[p].tier.value;
        if let Some(name) = self.tier_names.get(tier) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(tier.as_str());
        self.tier_names.insert(tier.clone(), name.clone());
        name
    }

    fn hep_name(&mut self, ep: &ActiveEndpoint) -> Arc<str> {
        match self.hep_names.get_mut(ep.hep) {
            Some(name) => name
                .get_or_insert_with(|| Arc::from(ep.name.as_str()))
                .clone(),
            None => Arc::from(ep.name.as_str()),
        }
    }

    /// A rule of an endpoint chain: `kind` at `stage` and `dir` of `ep`, written where the
    /// HostEndpoint is.
    fn endpoint_origin(
        &mut self,
        kind: Kind,
        ep: &ActiveEndpoint,
        stage: Stage,
        dir: Dir,
    ) -> Origin {
        let mut o = Origin::new(kind);
        o.host_endpoint = Some(self.hep_name(ep));
        o.stage = Some(stage);
        o.direction = Some(dir);
        o.at = self
            .config
            .host_endpoints
            .get(ep.hep)
            .map(|h| source_pos(&h.pos));
        o
    }

    /// The rules of policy `p`'s rule `index` in direction `dir`.
    fn rule_origin(&mut self, p: usize, dir: Dir, index: usize) -> Origin {
        let policy = &self.config.policies[p];
        let r = match dir {
            Dir::Ingress => &policy.ingress[index],
            Dir::Egress => &policy.egress[index],
        };
        let mut o = Origin::new(Kind::Policy);
        o.tier = Some(self.tier_name(p));
        o.policy = Some(self.policy_name(p));
        o.direction = Some(dir);
        o.rule = u32::try_from(index).ok();
        o.action = Some(match r.action {
            RuleAction::Allow => crate::ruleset::RuleAction::Allow,
            RuleAction::Deny => crate::ruleset::RuleAction::Deny,
            RuleAction::Pass => crate::ruleset::RuleAction::Pass,
            RuleAction::Log => crate::ruleset::RuleAction::Log,
        });
        o.at = Some(source_pos(&r.pos));
        o.staged = policy.staged.is_some();
        o.shadow = self.shadow;
        o
    }

    // ---- sets --------------------------------------------------------------------------------------

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

    /// A set written literally in the configuration (rule nets and ports, failsafe entries), named after
    /// its contents ([`names::literal_set`]): one set per distinct list.
    fn literal_set(&mut self, set_type: SetType, elements: Vec<SetElement>) -> String {
        let name = names::literal_set(set_type, &elements);
        if let Some(r) = &mut self.recording {
            r.literal_set(&name);
        }
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
            Dir::Ingress,
            "inbound",
        );
        let fout = self.failsafe_rules(
            &outbound,
            Direction::Destination,
            Direction::Destination,
            Dir::Egress,
            "outbound",
        );
        // Raw extras: replies of failsafe connections skip untracked policy (no mark, no notrack).
        let mut raw_in = fin.clone();
        raw_in.extend(self.failsafe_rules(
            &outbound,
            Direction::Source,
            Direction::Source,
            Dir::Egress,
            "reply to outbound",
        ));
        let mut raw_out = fout.clone();
        raw_out.extend(self.failsafe_rules(
            &inbound,
            Direction::Source,
            Direction::Destination,
            Dir::Ingress,
            "reply to inbound",
        ));
        // The filter-stage (and preDNAT) failsafe accepts report the connections they let through; the
        // raw ones only let them skip untracked policy (conntrack still follows them).
        let fin = self.report_accepts(fin);
        let fout = self.report_accepts(fout);
        for (name, rules) in [
            (names::failsafe_chain(false, Dir::Ingress), fin),
            (names::failsafe_chain(false, Dir::Egress), fout),
            (names::failsafe_chain(true, Dir::Ingress), raw_in),
            (names::failsafe_chain(true, Dir::Egress), raw_out),
        ] {
            self.push_chain(name.into(), None, rules);
        }
    }

    /// Accept rules for failsafe entries: port on `port_dir`, the entry's net (if any) on `net_dir`.
    /// Entries without a net are grouped per protocol into one port match. `dir` is the direction of the
    /// connections the entries let through (inbound: ingress).
    fn failsafe_rules(
        &mut self,
        entries: &[crate::config::model::ProtoPort],
        port_dir: Direction,
        net_dir: Direction,
        dir: Dir,
        what: &str,
    ) -> Rules {
        let mut origin = Origin::new(Kind::Failsafe);
        origin.direction = Some(dir);
        let origin = self.origin(origin);
        let mut rules = Rules::default();
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
            rules.push(
                commented(
                    rule(m, Some(Verdict::Accept)),
                    names::failsafe_comment(what, &proto_name(p), None),
                ),
                origin,
            );
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
            rules.push(
                commented(
                    rule(m, Some(Verdict::Accept)),
                    names::failsafe_comment(what, &proto_name(p), Some((&list, port))),
                ),
                origin,
            );
        }
        rules
    }

    // ---- per-HEP chains (spec §3.4) ----------------------------------------------------------------

    fn endpoint_chains(&mut self, ep: &ActiveEndpoint) {
        for stage in Stage::ALL {
            for dir in Dir::BOTH {
                if self.needs_endpoint_chain(ep, stage, dir) {
                    self.endpoint_chain(ep, stage, dir);
                }
            }
        }
    }

    fn needs_endpoint_chain(&self, ep: &ActiveEndpoint, stage: Stage, dir: Dir) -> bool {
        match stage {
            Stage::Untracked | Stage::PreDnat => {
                !ep.policies.get(stage, dir).is_empty()
                    || self
                        .would_be_endpoint(ep)
                        .is_some_and(|(_, _, w)| !w.policies.get(stage, dir).is_empty())
            }
            Stage::Normal | Stage::Forward => true,
        }
    }

    fn endpoint_chain(&mut self, ep: &ActiveEndpoint, stage: Stage, dir: Dir) {
        let name = names::endpoint_chain(stage, dir, &ep.name);
        if self.staged_view.is_none() && !self.tail_between_policies(ep, stage, dir) {
            // The policy chains it jumps to first (in the order it jumps to them), so that its own
            // origins, flow ids and tail chains come together after theirs: a piece the compile
            // cache can keep whole (`cache`). The chains come in the same order either way (only
            // the origins do not); where they would not (staged policies' shadow chains, a tier's
            // tail chain before the next tier's policy chains), it is built as it always was.
            for &p in ep.policies.get(stage, dir) {
                self.make_policy_chain(p, dir);
            }
            if self.cache_new.is_some() {
                self.cached_endpoint_chain(ep, stage, dir, name);
                return;
            }
        }
        self.build_endpoint_chain(ep, stage, dir, name);
    }

    /// Whether building `ep`'s chain for `stage` and `dir` makes a chain of its own before the last
    /// policy chain it jumps to: the flow records' tail of a tier that ends with a drop, when another
    /// tier follows.
    fn tail_between_policies(&self, ep: &ActiveEndpoint, stage: Stage, dir: Dir) -> bool {
        let groups = tier_groups(self.config, ep.policies.get(stage, dir));
        self.flows.is_some() && groups.iter().rev().skip(1).any(|g| g.ends_with_drop(stage))
    }

    /// Builds HostEndpoint `ep`'s chain `name` for `stage` and `dir` (spec §3.4).
    fn build_endpoint_chain(&mut self, ep: &ActiveEndpoint, stage: Stage, dir: Dir, name: String) {
        let (accept, pass) = (self.accept, self.pass);
        let mut rules = Rules::default();
        // Two rules and one origin per policy (10,000 policies: no copies as the lists grow).
        let policies = ep.policies.get(stage, dir).len();
        rules.rules.reserve(2 * policies + 8);
        rules.origins.reserve(2 * policies + 8);
        self.origins.reserve(policies + 8);
        if stage != Stage::Untracked {
            let conntrack = self.endpoint_origin(Kind::Conntrack, ep, stage, dir);
            let conntrack = self.origin(conntrack);
            let est = CtStates {
                invalid: false,
                established: true,
                related: true,
                new: false,
            };
            rules.push(
                rule(vec![Match::CtState(est)], Some(Verdict::Accept)),
                conntrack,
            );
            if self.view.settings.conntrack_invalid_check {
                let inv = CtStates {
                    invalid: true,
                    established: false,
                    related: false,
                    new: false,
                };
                rules.push(
                    rule(vec![Match::CtState(inv)], Some(Verdict::Drop)),
                    conntrack,
                );
            }
        }
        if stage != Stage::Forward {
            let failsafe = names::failsafe_chain(stage == Stage::Untracked, dir);
            let origin = self.endpoint_origin(Kind::Failsafe, ep, stage, dir);
            let origin = self.origin(origin);
            rules.push(
                rule(Vec::new(), Some(Verdict::Jump(failsafe.into()))),
                origin,
            );
        }
        let structure = self.endpoint_origin(Kind::Structure, ep, stage, dir);
        let structure = self.origin(structure);
        rules.push(
            Rule {
                actions: vec![self.clear_marks()],
                ..Rule::default()
            },
            structure,
        );
        // Staged policies: the would-be set, evaluated first (an enforced deny drops the packet).
        self.shadow_section(ep, stage, dir, &mut rules);
        // Tiers spec §3.2: the kept tiers in order; each starts with the PASS mark cleared (the first
        // by the rule above), runs its policies while PASS is clear, and in the normal and forward
        // stages ends with a drop unless a policy passed. A tier costs at most these two rules more.
        let config = self.config;
        let groups = tier_groups(config, ep.policies.get(stage, dir));
        for (i, group) in groups.iter().enumerate() {
            let tier = self.tier_name(group.policies[0]);
            if i > 0 {
                let mut origin = self.endpoint_origin(Kind::Tier, ep, stage, dir);
                origin.tier = Some(tier.clone());
                if let Some(pos) = group.tier.and_then(|t| t.pos.as_ref()) {
                    origin.at = Some(source_pos(pos));
                }
                let r = Rule {
                    actions: vec![Action::MarkAnd(!pass)],
                    comment: names::comment(&origin),
                    ..Rule::default()
                };
                let origin = self.origin(origin);
                rules.push(r, origin);
            }
            for &p in group.policies {
                let chain = self.policy_chain(p, dir);
                let mut origin = self.endpoint_origin(Kind::Tier, ep, stage, dir);
                origin.tier = Some(tier.clone());
                origin.policy = Some(self.policy_name(p));
                origin.at = Some(source_pos(&self.config.policies[p].pos));
                let origin = self.origin(origin);
                rules.push(
                    rule(vec![self.mark_is(pass, false)], Some(Verdict::Jump(chain))),
                    origin,
                );
                let actions = if stage == Stage::Untracked {
                    vec![Action::Notrack]
                } else {
                    Vec::new()
                };
                rules.push(
                    Rule {
                        matches: vec![self.mark_is(accept, true)],
                        actions,
                        verdict: Some(Verdict::Return),
                        ..Rule::default()
                    },
                    origin,
                );
            }
            if group.ends_with_drop(stage) {
                let mut origin = self.endpoint_origin(Kind::EndOfTier, ep, stage, dir);
                origin.tier = Some(tier);
                let comment = names::comment(&origin);
                let origin = self.origin(origin);
                let end = self.deny_end(origin, self.deny(dir, true));
                let mut r = rule(vec![self.mark_is(pass, false)], Some(end));
                r.comment = comment;
                r.counter = true;
                rules.push(r, origin);
            }
        }
        if stage == Stage::Forward && !ep.policies.has_forward_policy() {
            let origin = self.endpoint_origin(Kind::NoPolicy, ep, stage, dir);
            let comment = names::comment(&origin);
            let origin = self.origin(origin);
            let r = Rule {
                actions: self.allow_actions(origin, accept),
                verdict: Some(Verdict::Return),
                comment,
                ..Rule::default()
            };
            rules.push(r, origin);
        }
        if stage == Stage::Normal {
            let profiles = self
                .config
                .host_endpoints
                .get(ep.hep)
                .map(|h| h.profiles.as_slice())
                .unwrap_or_default();
            for profile in &ep.profiles {
                if profile == DEFAULT_ALLOW_PROFILE {
                    let mut origin = self.endpoint_origin(Kind::Profile, ep, stage, dir);
                    origin.profile = Some(Arc::from(profile.as_str()));
                    if let Some(p) = profiles.iter().find(|p| &p.value == profile) {
                        origin.at = Some(source_pos(&p.pos));
                    }
                    let comment = names::comment(&origin);
                    let origin = self.origin(origin);
                    let r = Rule {
                        counter: true,
                        actions: self.allow_actions(origin, accept),
                        verdict: Some(Verdict::Return),
                        comment,
                        ..Rule::default()
                    };
                    rules.push(r, origin);
                }
            }
            let origin = self.endpoint_origin(Kind::NoPolicy, ep, stage, dir);
            let comment = names::comment(&origin);
            let origin = self.origin(origin);
            let end = self.deny_end(origin, self.deny(dir, true));
            let mut r = rule(Vec::new(), Some(end));
            r.comment = comment;
            r.counter = true;
            rules.push(r, origin);
        }
        self.push_chain(name, None, rules);
    }

    // ---- policy chains (spec §3.4 "Policy chain") ---------------------------------------------------

    /// The name of policy `p`'s chain for `dir`, made first if it is not yet.
    fn policy_chain(&mut self, p: usize, dir: Dir) -> String {
        self.make_policy_chain(p, dir);
        names::policy_chain(dir, &self.config.policies[p].name)
    }

    /// Makes policy `p`'s chain for `dir` (once per compile).
    fn make_policy_chain(&mut self, p: usize, dir: Dir) {
        let made = &mut self.policy_chain_made[p][usize::from(dir == Dir::Egress)];
        if std::mem::replace(made, true) {
            return;
        }
        if self.prebuilt.is_some() && !self.shadow {
            self.prebuilt_policy_chain(p, dir);
        } else if self.cache_new.is_some() && !self.shadow {
            self.cached_policy_chain(p, dir);
        } else {
            let name = names::policy_chain(dir, &self.config.policies[p].name);
            self.build_policy_chain(p, dir, &name);
        }
    }

    /// Policy `p`'s chain in direction `dir` as another thread built it ([`compile_threads`]),
    /// waiting for that thread's part if need be; built here when this thread's part has it or when
    /// it could not be taken back (then it is built as if no other thread had).
    fn prebuilt_policy_chain(&mut self, p: usize, dir: Dir) {
        let pre = self.prebuilt.as_mut().expect("prebuilt");
        let k = pre.owner[p][usize::from(dir == Dir::Egress)] as usize;
        if k > 0 {
            if let Some(rx) = pre.incoming[k - 1].take() {
                if let Ok(f) = rx.recv() {
                    pre.fragments.absorb(f);
                }
            }
            let policy = &self.config.policies[p].name;
            if let Some(f) = pre.fragments.take(p, policy, dir) {
                if self.replay_fragment(&f) {
                    self.cache_use.reused += 1;
                    return;
                }
            }
        }
        let name = names::policy_chain(dir, &self.config.policies[p].name);
        self.build_policy_chain(p, dir, &name);
    }

    /// Builds policy `p`'s chain `name` for direction `dir` (and its helper chains).
    fn build_policy_chain(&mut self, p: usize, dir: Dir, name: &str) {
        let config = self.config;
        let policy = &config.policies[p];
        let rules = match dir {
            Dir::Ingress => &policy.ingress,
            Dir::Egress => &policy.egress,
        };
        let mut out = Rules::default();
        for (i, r) in rules.iter().enumerate() {
            self.compile_rule(name, p, dir, i, r, &mut out);
        }
        self.push_chain(name.to_owned(), None, out);
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

    /// What a rule of `policy` with `action` does once it matches (`origin`: the rule's): its actions
    /// and verdict, with flow records' reporting where it decides (see [`flows`]).
    fn verdict_parts(
        &mut self,
        policy: &GlobalNetworkPolicy,
        dir: Dir,
        action: RuleAction,
        origin: OriginId,
    ) -> (Vec<Action>, Option<Verdict>) {
        match action {
            RuleAction::Allow if policy.do_not_track => {
                let accept = self.accept;
                match self.untracked_allow(origin, accept) {
                    Some(goto) => (Vec::new(), Some(goto)),
                    None => (vec![Action::MarkOr(accept)], Some(Verdict::Return)),
                }
            }
            RuleAction::Allow => (
                self.allow_actions(origin, self.accept),
                Some(Verdict::Return),
            ),
            RuleAction::Pass => (vec![Action::MarkOr(self.pass)], Some(Verdict::Return)),
            RuleAction::Deny => {
                let verdict = self.deny(dir, !policy.pre_dnat && !policy.do_not_track);
                (Vec::new(), Some(self.deny_end(origin, verdict)))
            }
            RuleAction::Log => (
                vec![Action::Log {
                    prefix: names::log_prefix(
                        &self.view.settings.log_prefix,
                        &policy.tier.value,
                        &policy.name,
                    ),
                }],
                None,
            ),
        }
    }

    fn compile_rule(
        &mut self,
        chain: &str,
        p: usize,
        dir: Dir,
        index: usize,
        r: &PolicyRule,
        out: &mut Rules,
    ) {
        if r.source.service_accounts || r.destination.service_accounts {
            // Workload-only criterion: it matches no host address, so the rule can never match.
            return;
        }
        if self.shadow && r.action == RuleAction::Log {
            // The would-be evaluation logs nothing to syslog: the enforced Log rule does.
            return;
        }
        let config = self.config;
        let policy = &config.policies[p];
        let origin = self.rule_origin(p, dir, index);
        // Shadow rules count only for staged policies (`status --counters` shows them apart); the
        // enforced policies' copies would count the same packets twice.
        let counted = !self.shadow || policy.staged.is_some();
        let comment = names::comment(&origin);
        let origin = self.origin(origin);
        let (actions, verdict) = if self.shadow {
            self.shadow_verdict_parts(r.action, origin)
        } else {
            self.verdict_parts(policy, dir, r.action, origin)
        };
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
                let action = Rule {
                    matches,
                    counter: counted,
                    actions: actions.clone(),
                    verdict: verdict.clone(),
                    comment: comment.clone(),
                };
                if exclusions.is_empty() {
                    out.push(action, origin);
                } else {
                    let name = names::exclusion_chain(chain, index, f, out.len());
                    self.rule_with_exclusions(name, action, &exclusions, origin, out);
                }
            }
        }
    }

    /// A rule with named `notPorts`: the packet must match none of several (address, protocol, port)
    /// groups, which one nftables rule cannot say. The positive part (`action`'s matches) jumps to a
    /// helper chain `name` that returns on an excluded packet and otherwise applies the action; the
    /// caller re-checks the marks.
    fn rule_with_exclusions(
        &mut self,
        name: String,
        mut action: Rule,
        exclusions: &[Alternative],
        origin: OriginId,
        out: &mut Rules,
    ) {
        let matches = std::mem::take(&mut action.matches);
        let mut rules = Rules::default();
        for e in exclusions {
            rules.push(rule(e.clone(), Some(Verdict::Return)), origin);
        }
        rules.push(action, origin);
        self.push_chain(name.clone(), None, rules);
        out.push(rule(matches, Some(Verdict::Jump(name))), origin);
        out.push(
            rule(vec![self.mark_is(self.accept, true)], Some(Verdict::Return)),
            origin,
        );
        out.push(
            rule(vec![self.mark_is(self.pass, true)], Some(Verdict::Return)),
            origin,
        );
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
        let id = names::selector_set_id(&key.canonical, key.namespaced);
        if let Some(name) = self.selector_set_names.get(&(id.clone(), f)) {
            if let Some(r) = &mut self.recording {
                r.selector_set(key, f, name);
            }
            return name.clone();
        }
        let members = self
            .view
            .selector_sets
            .get(key)
            .map(|set| addr_elements(set, f))
            .unwrap_or_default();
        let set_type = addr_set_type(f, &members);
        let name = names::selector_set(&id, set_type);
        self.add_set(name.clone(), set_type, members);
        self.selector_set_names.insert((id, f), name.clone());
        if let Some(r) = &mut self.recording {
            r.selector_set(key, f, &name);
        }
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
            let chain = names::endpoint_chain(stage, dir, &ep.name);
            for iface in &ep.interfaces {
                elements.push((iface.clone(), Verdict::Goto(chain.clone())));
            }
        }
        elements.sort_by(|a, b| a.0.cmp(&b.0));
        let wildcard = self
            .view
            .wildcard
            .as_ref()
            .filter(|ep| include_wildcard && self.needs_endpoint_chain(ep, stage, dir));
        if elements.is_empty() && wildcard.is_none() {
            return None;
        }
        let mut origin = Origin::new(Kind::Dispatch);
        origin.stage = Some(stage);
        origin.direction = Some(dir);
        let dispatch = self.origin(origin);
        let mut rules = Rules::default();
        if !elements.is_empty() {
            let map = names::verdict_map(name);
            self.maps.push(VerdictMap {
                name: map.clone(),
                elements,
            });
            rules.push(rule(Vec::new(), Some(Verdict::Vmap { key, map })), dispatch);
        }
        if let Some(ep) = wildcard {
            if wildcard_skips_workloads {
                let d = if key == IfDir::In {
                    Direction::Source
                } else {
                    Direction::Destination
                };
                for prefix in &self.view.settings.workload_prefixes {
                    rules.push(
                        rule(
                            vec![Match::IfNamePrefix {
                                dir: d,
                                prefix: prefix.clone(),
                            }],
                            Some(Verdict::Return),
                        ),
                        dispatch,
                    );
                }
            }
            let chain = names::endpoint_chain(stage, dir, &ep.name);
            let origin = self.endpoint_origin(Kind::Dispatch, ep, stage, dir);
            let origin = self.origin(origin);
            rules.push(
                commented(
                    rule(Vec::new(), Some(Verdict::Goto(chain))),
                    names::WILDCARD,
                ),
                origin,
            );
        }
        self.push_chain(name.to_string(), None, rules);
        Some(name.to_string())
    }

    fn dispatch_and_base_chains(&mut self) {
        let (accept, pass) = (self.accept, self.pass);
        let accepted = || Match::Mark {
            mask: accept,
            value: accept,
        };
        let structure = self.kind(Kind::Structure);
        let conntrack = self.kind(Kind::Conntrack);
        let dispatch = self.kind(Kind::Dispatch);
        let workload_returns = |dir: Direction, prefixes: &[String], rules: &mut Rules| {
            for p in prefixes {
                rules.push(
                    commented(
                        rule(
                            vec![Match::IfNamePrefix {
                                dir,
                                prefix: p.clone(),
                            }],
                            Some(Verdict::Return),
                        ),
                        names::WORKLOAD,
                    ),
                    dispatch,
                );
            }
        };
        let prefixes = self.view.settings.workload_prefixes.clone();

        let raw_from = self.dispatch(
            names::RAW_FROM_HEP,
            IfDir::In,
            Stage::Untracked,
            Dir::Ingress,
            false,
            false,
        );
        let raw_to = self.dispatch(
            names::RAW_TO_HEP,
            IfDir::Out,
            Stage::Untracked,
            Dir::Egress,
            false,
            false,
        );
        let pre_from = self.dispatch(
            names::MANGLE_FROM_HEP,
            IfDir::In,
            Stage::PreDnat,
            Dir::Ingress,
            true,
            false,
        );
        let from = self.dispatch(
            names::FILTER_FROM_HEP,
            IfDir::In,
            Stage::Normal,
            Dir::Ingress,
            true,
            false,
        );
        let to = self.dispatch(
            names::FILTER_TO_HEP,
            IfDir::Out,
            Stage::Normal,
            Dir::Egress,
            true,
            false,
        );
        let fw_from = self.dispatch(
            names::FILTER_FROM_HEP_FW,
            IfDir::In,
            Stage::Forward,
            Dir::Ingress,
            true,
            false,
        );
        let fw_to = self.dispatch(
            names::FILTER_TO_HEP_FW,
            IfDir::Out,
            Stage::Forward,
            Dir::Egress,
            true,
            false,
        );
        // The mangle egress copy reuses the normal egress chains (`th-`); the wildcard skips workloads.
        let post_to = self.dispatch(
            names::MANGLE_TO_HEP,
            IfDir::Out,
            Stage::Normal,
            Dir::Egress,
            true,
            true,
        );

        let mut base: Vec<(&str, BaseHook, Rules)> = Vec::new();
        let hook = |hook, priority| BaseHook { hook, priority };
        for (name, h, prio, d) in [
            (names::RAW_PREROUTING, Hook::Prerouting, PRIO_RAW, raw_from),
            (names::RAW_OUTPUT, Hook::Output, PRIO_RAW, raw_to),
        ] {
            let mut rules = Rules::default();
            rules.push(
                Rule {
                    actions: vec![self.clear_marks()],
                    ..Rule::default()
                },
                structure,
            );
            if let Some(d) = d {
                rules.push(rule(Vec::new(), Some(Verdict::Jump(d))), dispatch);
                rules.push(rule(vec![accepted()], Some(Verdict::Accept)), structure);
            }
            base.push((name, hook(h, prio), rules));
        }

        let est = CtStates {
            invalid: false,
            established: true,
            related: true,
            new: false,
        };
        let mut rules = Rules::default();
        rules.push(
            rule(vec![Match::CtState(est)], Some(Verdict::Accept)),
            conntrack,
        );
        rules.push(rule(vec![accepted()], Some(Verdict::Accept)), structure);
        if let Some(d) = pre_from {
            rules.push(rule(Vec::new(), Some(Verdict::Jump(d))), dispatch);
            rules.push(rule(vec![accepted()], Some(Verdict::Accept)), structure);
        }
        base.push((
            names::MANGLE_PREROUTING,
            hook(Hook::Prerouting, PRIO_MANGLE),
            rules,
        ));

        let mut rules = Rules::default();
        workload_returns(Direction::Source, &prefixes, &mut rules);
        rules.push(rule(vec![accepted()], Some(Verdict::Accept)), structure);
        rules.push(
            Rule {
                actions: vec![self.clear_marks()],
                ..Rule::default()
            },
            structure,
        );
        if let Some(d) = from {
            rules.push(rule(Vec::new(), Some(Verdict::Jump(d))), dispatch);
            rules.push(rule(vec![accepted()], Some(Verdict::Accept)), structure);
        }
        base.push((names::FILTER_INPUT, hook(Hook::Input, PRIO_FILTER), rules));

        let mut rules = Rules::default();
        rules.push(
            Rule {
                actions: vec![Action::MarkAnd(!pass)],
                ..Rule::default()
            },
            structure,
        );
        if let Some(d) = fw_from {
            rules.push(
                rule(
                    vec![Match::Mark {
                        mask: accept,
                        value: 0,
                    }],
                    Some(Verdict::Jump(d)),
                ),
                dispatch,
            );
        }
        if let Some(d) = fw_to {
            rules.push(rule(Vec::new(), Some(Verdict::Jump(d))), dispatch);
        }
        rules.push(rule(vec![accepted()], Some(Verdict::Accept)), structure);
        rules.push(
            commented(
                Rule {
                    actions: vec![Action::MarkOr(accept)],
                    ..Rule::default()
                },
                names::FORWARDED_MARK,
            ),
            structure,
        );
        base.push((
            names::FILTER_FORWARD,
            hook(Hook::Forward, PRIO_FILTER),
            rules,
        ));

        let mut rules = Rules::default();
        rules.push(rule(vec![accepted()], Some(Verdict::Accept)), structure);
        workload_returns(Direction::Destination, &prefixes, &mut rules);
        rules.push(
            Rule {
                actions: vec![self.clear_marks()],
                ..Rule::default()
            },
            structure,
        );
        rules.push(
            commented(
                rule(
                    vec![Match::CtStatusDnat { negate: false }],
                    Some(Verdict::Return),
                ),
                names::DNATED,
            ),
            structure,
        );
        if let Some(d) = to {
            rules.push(rule(Vec::new(), Some(Verdict::Jump(d))), dispatch);
            rules.push(rule(vec![accepted()], Some(Verdict::Accept)), structure);
        }
        base.push((names::FILTER_OUTPUT, hook(Hook::Output, PRIO_FILTER), rules));

        let mut rules = Rules::default();
        rules.push(rule(vec![accepted()], Some(Verdict::Return)), structure);
        if let Some(d) = post_to {
            rules.push(
                rule(
                    vec![Match::CtStatusDnat { negate: false }],
                    Some(Verdict::Jump(d)),
                ),
                dispatch,
            );
            rules.push(rule(vec![accepted()], Some(Verdict::Return)), structure);
        }
        base.push((
            names::MANGLE_POSTROUTING,
            hook(Hook::Postrouting, PRIO_MANGLE),
            rules,
        ));
        // Base chains first: the order `render` prints them in.
        let chains = std::mem::take(&mut self.chains);
        let origins = std::mem::take(&mut self.chain_origins);
        let digests = std::mem::take(&mut self.chain_digests);
        for (name, h, rules) in base {
            self.push_chain(name.into(), Some(h), rules);
        }
        self.chains.extend(chains);
        self.chain_origins.extend(origins);
        self.chain_digests.extend(digests);
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

    const HEP_AND_POLICY: &str = "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: h, labels: {r: w}}, spec: {node: node1, interfaceName: eth0}}\n\
             - {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: p}, spec: {selector: r == 'w', ingress: [{action: Allow, protocol: TCP, source: {nets: [192.0.2.0/24]}}, {action: Deny}]}}\n";

    /// Every rule has an origin; a policy that moved down its file compiles to the same kernel table
    /// (same content hash) with origins that point to its new place.
    #[test]
    fn every_rule_has_an_origin_and_positions_are_not_hashed() {
        let rs = compiled(HEP_AND_POLICY);
        assert_eq!(rs.origins.rules.len(), rs.chains.len());
        for (c, chain) in rs.chains.iter().enumerate() {
            assert_eq!(
                rs.origins.rules[c].len(),
                chain.rules.len(),
                "{}",
                chain.name
            );
        }
        assert!(rs.rules_with_origins().all(|(_, _, o)| o.is_some()));
        let rule = |rs: &Ruleset, i: usize| {
            rs.origin(&names::policy_chain(Dir::Ingress, "p"), i)
                .cloned()
                .unwrap()
        };
        let deny = rule(&rs, 1);
        assert_eq!(
            (
                deny.kind,
                deny.policy.as_deref(),
                deny.direction,
                deny.rule,
                deny.action
            ),
            (
                Kind::Policy,
                Some("p"),
                Some(Dir::Ingress),
                Some(1),
                Some(crate::ruleset::RuleAction::Deny)
            )
        );
        assert_eq!(deny.tier.as_deref(), Some("default"));
        assert_eq!(deny.at.as_ref().unwrap().to_string(), "t.yaml:2:187");
        let moved = compiled(&format!("# a comment\n\n{HEP_AND_POLICY}"));
        assert_eq!(rule(&moved, 1).at.unwrap().line, 4);
        // Issue 20 item 7: the comments carry the line, so they (and the content hash) change with
        // it; the rules match and decide as before.
        let without_comments = |r: &Ruleset| -> Vec<Vec<(Vec<Match>, Option<Verdict>)>> {
            r.chains
                .iter()
                .map(|c| {
                    c.rules
                        .iter()
                        .map(|r| (r.matches.clone(), r.verdict.clone()))
                        .collect()
                })
                .collect()
        };
        assert_eq!(without_comments(&moved), without_comments(&rs));
        let comments = |r: &Ruleset| -> Vec<String> {
            r.chains
                .iter()
                .flat_map(|c| c.rules.iter().filter_map(|r| r.comment.clone()))
                .collect()
        };
        assert!(
            comments(&rs).contains(&"p ingress rule 2 Deny (t.yaml:2)".to_owned()),
            "{:?}",
            comments(&rs)
        );
        assert!(
            comments(&moved).contains(&"p ingress rule 2 Deny (t.yaml:4)".to_owned()),
            "{:?}",
            comments(&moved)
        );
        assert_ne!(moved.comment, rs.comment);
        // The defaults of the HostEndpoint's chains name it, their stage and direction.
        let fh = names::endpoint_chain(Stage::Normal, Dir::Ingress, "h");
        let kinds: Vec<Kind> = (0..rs.chain(&fh).unwrap().rules.len())
            .map(|i| rs.origin(&fh, i).unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            [
                Kind::Conntrack,
                Kind::Conntrack,
                Kind::Failsafe,
                Kind::Structure,
                Kind::Tier,
                Kind::Tier,
                Kind::EndOfTier,
                Kind::NoPolicy
            ]
        );
        let eot = rs.origin(&fh, 6).unwrap();
        assert_eq!(
            (eot.host_endpoint.as_deref(), eot.stage, eot.direction),
            (Some("h"), Some(Stage::Normal), Some(Dir::Ingress))
        );
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
