//! Incremental compiling (issue 18): what a compile made for each policy's chain, kept by whoever
//! compiles again and again (the daemon) so that the next compile takes back the chains of the
//! policies that did not change instead of building them again.
//!
//! A policy's chain (with its helper chains: the exclusion chains of named `notPorts`, the flow
//! records' tail chains) depends on the policy itself, on a few settings (the ACCEPT and PASS marks,
//! `nftablesFilterDenyAction`, the log prefix, flow records) and on the names of the selector sets
//! its rules use (a selector set's name carries its type, which its members decide). Everything else
//! it does to the compile is recorded while it is built: the rules' origins, the literal sets it
//! uses, its flow ids and tail chains. Taking it back ([`Compiler::replay`]) does exactly what
//! building it did, at the same point of the compile, so the ruleset is the same as a compile from
//! scratch, byte for byte (the property test `incremental_compile_equals_from_scratch`). A policy whose
//! rules use named ports (they depend on every HostEndpoint's ports and labels) is never kept, nor is a
//! chain whose flow id had to be salted (it depends on the other origins).
//!
//! Each kept chain carries its digest for the content hash (`hash`), so that the hash of a ruleset
//! in which one policy changed hashes one chain's text, not 10,000.

use std::collections::HashMap;
use std::sync::Arc;

use super::hash::{chain_digest, Digest};
use super::{names, Compiler};
use crate::config::model::{DenyAction, GlobalNetworkPolicy, HostEndpoint, Port, Tier};
use crate::resolve::{tier_groups, ActiveEndpoint, Dir, SelectorKey, Stage};
use crate::ruleset::{Chain, Family, Origin, OriginId, Set};

/// The compile cache: the chains of the last compile's policies. Owned by whoever calls the compile
/// (no global state); [`super::compile_cached`] reads and renews it.
#[derive(Default)]
pub struct Cache {
    globals: Option<Globals>,
    fragments: Fragments,
    last: Use,
    /// The last ruleset's numbers of chains, origins and flow ids: the next compile's lists start
    /// that big.
    pub(super) sizes: (usize, usize, usize),
}

/// The fragments of one compile, by the index of their policy in that compile's configuration, and
/// its HostEndpoint chains.
#[derive(Default)]
pub(super) struct Fragments {
    by_index: Vec<[Option<Fragment>; 2]>,
    /// Policy name → index, made when first needed (a policy added or removed moved the others).
    names: Option<HashMap<String, usize>>,
    /// The HostEndpoint chains, by HostEndpoint name, stage and direction.
    endpoints: HashMap<(String, Stage, Dir), EndpointFragment>,
}

fn slot(dir: Dir) -> usize {
    match dir {
        Dir::Ingress => 0,
        Dir::Egress => 1,
    }
}

impl Fragments {
    pub(super) fn with_policies(n: usize) -> Fragments {
        Fragments {
            by_index: std::iter::repeat_with(|| [None, None]).take(n).collect(),
            names: None,
            endpoints: HashMap::new(),
        }
    }

    /// The fragment of the policy named `name` in direction `dir`; `p` is where it probably is (its
    /// index now).
    pub(super) fn take(&mut self, p: usize, name: &str, dir: Dir) -> Option<Fragment> {
        let at = |by_index: &Vec<[Option<Fragment>; 2]>, i: usize| {
            by_index
                .get(i)
                .and_then(|s| s.iter().flatten().next())
                .is_some_and(|f| f.policy.name == name)
        };
        let i = if at(&self.by_index, p) {
            p
        } else {
            let by_index = &self.by_index;
            let names = self.names.get_or_insert_with(|| {
                by_index
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| Some((s.iter().flatten().next()?.policy.name.clone(), i)))
                    .collect()
            });
            *names.get(name)?
        };
        self.by_index[i][slot(dir)].take()
    }

    /// Takes in the fragments of `other` (made for the same configuration, on another thread).
    pub(super) fn absorb(&mut self, other: Fragments) {
        for (mine, theirs) in self.by_index.iter_mut().zip(other.by_index) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                if t.is_some() {
                    *m = t;
                }
            }
        }
        self.endpoints.extend(other.endpoints);
    }

    fn put(&mut self, p: usize, dir: Dir, f: Fragment) {
        if let Some(s) = self.by_index.get_mut(p) {
            s[slot(dir)] = Some(f);
        }
    }
}

/// How the last compile used the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Use {
    /// Policy chains taken back from the previous compile.
    pub reused: usize,
    /// Policy chains built (changed, new, or not kept).
    pub built: usize,
    /// HostEndpoint chains taken back from the previous compile.
    pub endpoints_reused: usize,
    /// HostEndpoint chains built.
    pub endpoints_built: usize,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// How the last compile used the cache.
    pub fn last_use(&self) -> Use {
        self.last
    }

    /// The cache as a compile starts with it: empty when the settings the chains depend on changed.
    pub(super) fn take(&mut self, globals: Globals) -> Fragments {
        let fragments = std::mem::take(&mut self.fragments);
        if self.globals.as_ref() == Some(&globals) {
            fragments
        } else {
            self.globals = Some(globals);
            Fragments::default()
        }
    }

    /// The fragments of the compile that just ended; those of the previous one it did not use are
    /// dropped.
    pub(super) fn put(&mut self, fragments: Fragments, last: Use) {
        self.fragments = fragments;
        self.last = last;
    }
}

/// The settings every policy chain depends on.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Globals {
    pub accept: u32,
    pub pass: u32,
    pub deny_action: DenyAction,
    pub log_prefix: String,
    pub flows: Option<super::flows::FlowRules>,
}

/// What building one policy chain did to the compile.
pub(super) struct Fragment {
    /// The policy it was built from (compared by pointer first, then by value).
    policy: Arc<GlobalNetworkPolicy>,
    /// Boxed: the lists of fragments (two per policy) are made again at every compile, and moved.
    made: Box<Made>,
}

/// What building one HostEndpoint chain (with its tail chains) did to the compile, once the policy
/// chains it jumps to were made.
pub(super) struct EndpointFragment {
    key: EndpointKey,
    made: Made,
}

/// What a HostEndpoint chain for one stage and direction depends on besides the settings of
/// [`Globals`]: the HostEndpoint (its place and profiles), the policies it jumps to in order (their
/// names, tiers and places: what its rules and their origins say of them), their tiers, whether it
/// has forward policy, and the conntrack setting.
struct EndpointKey {
    hep: Option<HostEndpoint>,
    profiles: Vec<String>,
    forward_policy: bool,
    conntrack_invalid_check: bool,
    policies: Vec<Arc<GlobalNetworkPolicy>>,
    tiers: Vec<Option<Tier>>,
}

impl EndpointKey {
    fn of(c: &Compiler<'_>, ep: &ActiveEndpoint, stage: Stage, dir: Dir) -> EndpointKey {
        let list = ep.policies.get(stage, dir);
        EndpointKey {
            hep: c.config.host_endpoints.get(ep.hep).cloned(),
            profiles: ep.profiles.clone(),
            forward_policy: ep.policies.has_forward_policy(),
            conntrack_invalid_check: c.view.settings.conntrack_invalid_check,
            policies: list.iter().map(|&p| c.config.policies[p].clone()).collect(),
            tiers: tier_groups(c.config, list)
                .iter()
                .map(|g| g.tier.cloned())
                .collect(),
        }
    }

    /// Whether the chain of `ep` for `stage` and `dir` in the compile of `c` is the one built for
    /// this key.
    fn fits(&self, c: &Compiler<'_>, ep: &ActiveEndpoint, stage: Stage, dir: Dir) -> bool {
        let list = ep.policies.get(stage, dir);
        let same_policy = |a: &Arc<GlobalNetworkPolicy>, b: &Arc<GlobalNetworkPolicy>| {
            Arc::ptr_eq(a, b)
                || (a.name == b.name && a.tier.value == b.tier.value && a.pos == b.pos)
        };
        self.forward_policy == ep.policies.has_forward_policy()
            && self.conntrack_invalid_check == c.view.settings.conntrack_invalid_check
            && self.profiles == ep.profiles
            && self.hep.as_ref() == c.config.host_endpoints.get(ep.hep)
            && self.policies.len() == list.len()
            && self
                .policies
                .iter()
                .zip(list)
                .all(|(old, &p)| same_policy(old, &c.config.policies[p]))
            && self
                .tiers
                .iter()
                .map(Option::as_ref)
                .eq(tier_groups(c.config, list).iter().map(|g| g.tier))
    }
}

/// What building a chain did to the compile: what [`Compiler::replay`] does again.
pub(super) struct Made {
    /// The chains pushed, in order, with their rules' origins (indexes into `origins`) and digests.
    chains: Vec<(Arc<Chain>, Vec<u32>, Digest)>,
    /// The origins made, in order.
    origins: Vec<Origin>,
    /// The literal sets used.
    sets: Vec<Set>,
    /// The selector sets used, with the name each had.
    selectors: Vec<(SelectorKey, Family, String)>,
    /// The flow ids given, with their origin (index into `origins`).
    flow_ids: Vec<(u64, u32)>,
    /// The tail chains made.
    tails: Vec<String>,
}

/// What is recorded while a policy chain is built.
pub(super) struct Recording {
    chains: usize,
    origins: usize,
    literal_sets: Vec<String>,
    selectors: Vec<(SelectorKey, Family, String)>,
    flow_ids: Vec<u64>,
    tails: Vec<String>,
    /// False when the chain depends on more than the policy, the settings and selector set names.
    keep: bool,
}

impl Recording {
    pub(super) fn literal_set(&mut self, name: &str) {
        self.literal_sets.push(name.to_owned());
    }
    pub(super) fn selector_set(&mut self, key: &SelectorKey, f: Family, name: &str) {
        self.selectors.push((key.clone(), f, name.to_owned()));
    }
    /// Flow id `id` given to origin `o`; `fresh`: the id was free (not shared with an equal origin),
    /// `salt`: how many ids were taken before it. A shared or salted id depends on other origins.
    pub(super) fn flow_id(&mut self, id: u64, o: OriginId, fresh: bool, salt: u32) {
        if salt != 0 || !fresh || (o.0 as usize) < self.origins {
            self.keep = false;
        }
        self.flow_ids.push(id);
    }
    pub(super) fn tail(&mut self, name: &str) {
        self.tails.push(name.to_owned());
    }
}

/// Whether a rule of `policy` uses named ports (they depend on the HostEndpoints).
fn uses_named_ports(policy: &GlobalNetworkPolicy) -> bool {
    let named = |ports: &[Port]| ports.iter().any(|p| matches!(p, Port::Named(_)));
    policy.ingress.iter().chain(&policy.egress).any(|r| {
        [&r.source, &r.destination]
            .iter()
            .any(|e| named(&e.ports) || named(&e.not_ports))
    })
}

impl Compiler<'_> {
    /// Policy `p`'s chain in direction `dir`, taken back from the previous compile when its policy
    /// and what it depends on did not change, else built and kept for the next.
    pub(super) fn cached_policy_chain(&mut self, p: usize, dir: Dir) {
        let policy = self.config.policies[p].clone();
        if let Some(old) = self.cache_old.take(p, &policy.name, dir) {
            if (Arc::ptr_eq(&old.policy, &policy) || *old.policy == *policy)
                && self.replay(&old.made)
            {
                self.cache_use.reused += 1;
                let fragment = Fragment {
                    policy,
                    made: old.made,
                };
                self.cache_new
                    .as_mut()
                    .expect("caching")
                    .put(p, dir, fragment);
                return;
            }
        }
        self.cache_use.built += 1;
        let name = names::policy_chain(dir, &policy.name);
        self.record(!uses_named_ports(&policy));
        self.build_policy_chain(p, dir, &name);
        let rec = self.recording.take().expect("recording");
        if let Some(made) = self.made(rec) {
            self.cache_new.as_mut().expect("caching").put(
                p,
                dir,
                Fragment {
                    policy,
                    made: Box::new(made),
                },
            );
        }
    }

    /// HostEndpoint `ep`'s chain `name` for `stage` and `dir` (and its tail chains), once the policy
    /// chains it jumps to are made: taken back from the previous compile when nothing it depends on
    /// changed ([`EndpointKey`]), else built and kept for the next. 10,000 policies: 20,000 rules and
    /// 10,000 origins not made again, the chain not hashed again, and shared with the ruleset in force
    /// (the swap skips comparing it).
    pub(super) fn cached_endpoint_chain(
        &mut self,
        ep: &ActiveEndpoint,
        stage: Stage,
        dir: Dir,
        name: String,
    ) {
        let key = (ep.name.clone(), stage, dir);
        if let Some(mut old) = self.cache_old.endpoints.remove(&key) {
            if old.key.fits(self, ep, stage, dir) && self.replay(&old.made) {
                self.cache_use.endpoints_reused += 1;
                // The policies of this compile from now on: a changed policy's old version is not
                // kept alive by the key.
                let list = ep.policies.get(stage, dir);
                for (kept, &p) in old.key.policies.iter_mut().zip(list) {
                    if !Arc::ptr_eq(kept, &self.config.policies[p]) {
                        *kept = self.config.policies[p].clone();
                    }
                }
                let new = self.cache_new.as_mut().expect("caching");
                new.endpoints.insert(key, old);
                return;
            }
        }
        self.cache_use.endpoints_built += 1;
        self.record(true);
        self.build_endpoint_chain(ep, stage, dir, name);
        let rec = self.recording.take().expect("recording");
        if let Some(made) = self.made(rec) {
            let fragment = EndpointFragment {
                key: EndpointKey::of(self, ep, stage, dir),
                made,
            };
            let new = self.cache_new.as_mut().expect("caching");
            new.endpoints.insert(key, fragment);
        }
    }

    /// Starts recording what building a chain does (`keep`: false when it may not be kept whatever
    /// it does).
    fn record(&mut self, keep: bool) {
        debug_assert!(self.recording.is_none(), "one chain recorded at a time");
        self.recording = Some(Recording {
            chains: self.chains.len(),
            origins: self.origins.len(),
            literal_sets: Vec::new(),
            selectors: Vec::new(),
            flow_ids: Vec::new(),
            tails: Vec::new(),
            keep,
        });
    }

    /// What `rec` recorded, with the digests of its chains (also noted for the content hash of this
    /// compile); `None` when it may not be kept.
    fn made(&mut self, rec: Recording) -> Option<Made> {
        if !rec.keep {
            return None;
        }
        let base = rec.origins;
        let mut chains = Vec::with_capacity(self.chains.len() - rec.chains);
        for c in rec.chains..self.chains.len() {
            let mut local = Vec::with_capacity(self.chain_origins[c].len());
            for o in &self.chain_origins[c] {
                local.push(u32::try_from((o.0 as usize).checked_sub(base)?).ok()?);
            }
            let digest = chain_digest(&self.chains[c]);
            self.chain_digests[c] = Some(digest);
            chains.push((self.chains[c].clone(), local, digest));
        }
        let mut names = rec.literal_sets;
        names.sort();
        names.dedup();
        let sets = names
            .iter()
            .map(|n| self.sets.get(n).cloned())
            .collect::<Option<Vec<Set>>>()?;
        let flow_ids = rec
            .flow_ids
            .iter()
            .map(|id| {
                let o = self.flow_ids.get(id)?.0 as usize;
                Some((*id, u32::try_from(o.checked_sub(base)?).ok()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Made {
            chains,
            origins: self.origins[base..].to_vec(),
            sets,
            selectors: rec.selectors,
            flow_ids,
            tails: rec.tails,
        })
    }

    /// [`Compiler::replay`] of a policy chain's fragment (built on another thread).
    pub(super) fn replay_fragment(&mut self, f: &Fragment) -> bool {
        self.replay(&f.made)
    }

    /// Does what building `f` did; false (and nothing done) when the compile so far makes it build
    /// differently: a selector set whose name changed, a flow id or tail chain already taken.
    fn replay(&mut self, f: &Made) -> bool {
        if f.tails.iter().any(|t| self.tails.contains(t))
            || f.flow_ids
                .iter()
                .any(|(id, _)| self.flow_ids.contains_key(id))
        {
            return false;
        }
        // Looking a selector set up adds it to the ruleset; building the chain again would add the
        // same set.
        for (key, family, name) in &f.selectors {
            if self.selector_set(key, *family) != *name {
                return false;
            }
        }
        let base = self.origins.len();
        let id = |local: u32| {
            OriginId(u32::try_from(base + local as usize).expect("fewer than 2^32 origins"))
        };
        self.origins.extend(f.origins.iter().cloned());
        for (chain, origins, digest) in &f.chains {
            self.push_shared(
                chain.clone(),
                origins.iter().map(|o| id(*o)).collect(),
                Some(*digest),
            );
        }
        for set in &f.sets {
            if !self.sets.contains_key(&set.name) {
                self.sets.insert(set.name.clone(), set.clone());
            }
        }
        for (flow, o) in &f.flow_ids {
            self.flow_ids.insert(*flow, id(*o));
            self.flow_id_of.insert(id(*o), *flow);
        }
        for t in &f.tails {
            self.tails.insert(t.clone());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Cache;
    use crate::compile::{compile_cached, compile_with, DEFAULT_TABLE};
    use crate::resolve::{resolve, Interface};
    use crate::settings::Flows;

    /// One generated policy: what its rules do and where it applies.
    #[derive(Debug, Clone)]
    struct Policy {
        id: u32,
        tier: Option<u8>,
        order: u8,
        selector: u8,
        stage: u8,
        rules: Vec<(u8, u8, u16, u8)>,
        egress: bool,
    }

    /// A generated configuration: HostEndpoints, tiers, a network set, FelixConfiguration and policies
    /// in several files.
    #[derive(Debug, Clone)]
    struct Model {
        hep_labels: Vec<u8>,
        /// Which HostEndpoints have the default-allow profile.
        hep_allow: Vec<bool>,
        tier_orders: Vec<u16>,
        /// Which tiers pass at their end instead of dropping.
        tier_pass: Vec<bool>,
        set_nets: Vec<u8>,
        failsafe: Vec<u16>,
        deny_reject: bool,
        policies: Vec<Policy>,
        per_file: usize,
    }

    const ROLES: [&str; 3] = ["a", "b", "c"];

    /// The daemon's per-file reuse: a file whose text did not change keeps its parsed parts, so its
    /// policies are the same `Arc`s as in the previous load.
    #[derive(Default)]
    struct Files(std::collections::HashMap<String, (String, crate::config::cache::Parsed)>);

    impl Files {
        fn new() -> Files {
            Files::default()
        }

        fn load(&mut self, sources: &[(String, String)]) -> crate::config::cache::Loaded {
            let mut parts = Vec::new();
            for (name, text) in sources {
                let kept = self.0.get(name).filter(|(t, _)| t == text);
                let parsed = match kept {
                    Some((_, p)) => p.clone(),
                    None => crate::config::cache::parse_files(&[(name, text)])
                        .expect("within the budgets")
                        .remove(0),
                };
                self.0.insert(name.clone(), (text.clone(), parsed.clone()));
                parts.push(parsed);
            }
            crate::config::cache::merged(parts.iter()).expect("within the budgets")
        }
    }

    fn policy_yaml(p: &Policy) -> String {
        let name = match p.tier {
            Some(t) => format!("t{t}.p{}", p.id),
            None => format!("p{}", p.id),
        };
        let mut s = format!(
            "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  order: {}\n",
            p.order
        );
        if let Some(t) = p.tier {
            s.push_str(&format!("  tier: t{t}\n"));
        }
        s.push_str(&match p.selector % 4 {
            0 => "  selector: all()\n".to_string(),
            n => format!("  selector: role == '{}'\n", ROLES[n as usize - 1]),
        });
        match p.stage % 4 {
            1 => s.push_str("  doNotTrack: true\n  applyOnForward: true\n"),
            2 => s.push_str("  preDNAT: true\n  applyOnForward: true\n"),
            3 => s.push_str("  applyOnForward: true\n"),
            _ => {}
        }
        let dir = if p.egress && p.stage % 4 != 2 {
            "egress"
        } else {
            "ingress"
        };
        s.push_str(&format!("  {dir}:\n"));
        for &(action, what, port, net) in &p.rules {
            let action = ["Allow", "Deny", "Pass", "Log"][action as usize % 4];
            let action = if p.stage % 4 != 0 && action == "Log" {
                "Allow"
            } else {
                action
            };
            s.push_str(&format!("  - action: {action}\n"));
            match what % 6 {
                0 => s.push_str(&format!(
                    "    protocol: TCP\n    destination: {{ports: [{port}]}}\n"
                )),
                1 => s.push_str(&format!(
                    "    protocol: UDP\n    destination: {{ports: [{port}, {}]}}\n    source: {{nets: [192.0.2.{net}/32, 198.51.100.0/24]}}\n",
                    port / 2 + 1
                )),
                2 => s.push_str("    source: {selector: set == 'x'}\n"),
                3 => s.push_str(&format!(
                    "    protocol: TCP\n    destination: {{ports: [web]}}\n    source: {{nets: [203.0.113.{net}/32]}}\n"
                )),
                4 => s.push_str(&format!(
                    "    protocol: TCP\n    destination: {{notPorts: [web, {port}]}}\n"
                )),
                _ => s.push_str(&format!("    source: {{nets: [2001:db8::{net:x}/128]}}\n")),
            }
        }
        s
    }

    fn sources(m: &Model) -> Vec<(String, String)> {
        let mut felix = String::from(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec:\n  failsafeInboundHostPorts:\n",
        );
        for port in &m.failsafe {
            felix.push_str(&format!("  - {{protocol: TCP, port: {port}}}\n"));
        }
        if m.failsafe.is_empty() {
            felix = felix.replace(
                "  failsafeInboundHostPorts:\n",
                "  failsafeInboundHostPorts: []\n",
            );
        }
        if m.deny_reject {
            felix.push_str("  nftablesFilterDenyAction: Reject\n");
        }
        let mut base = felix;
        for (i, role) in m.hep_labels.iter().enumerate() {
            base.push_str(&format!(
                "---\napiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: h{i}, labels: {{role: {}}}}}\nspec:\n  node: node1\n  interfaceName: eth{i}\n  expectedIPs: [192.0.2.{}]\n  ports: [{{name: web, port: {}, protocol: TCP}}]\n",
                ROLES[*role as usize % 3],
                10 + i,
                8080 + i
            ));
            if m.hep_allow.get(i).copied().unwrap_or(false) {
                base.push_str("  profiles: [projectcalico-default-allow]\n");
            }
        }
        for (t, order) in m.tier_orders.iter().enumerate() {
            let action = if m.tier_pass.get(t).copied().unwrap_or(false) {
                ", defaultAction: Pass"
            } else {
                ""
            };
            base.push_str(&format!(
                "---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: t{t}}}\nspec: {{order: {order}{action}}}\n"
            ));
        }
        base.push_str("---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s, labels: {set: x}}\nspec:\n  nets:\n");
        for n in &m.set_nets {
            base.push_str(&format!("  - 198.51.100.{n}/32\n"));
        }
        if m.set_nets.is_empty() {
            base = base.replace("  nets:\n", "  nets: []\n");
        }
        let mut out = vec![("00-base.yaml".to_string(), base)];
        for (f, chunk) in m.policies.chunks(m.per_file.max(1)).enumerate() {
            let text: String = chunk.iter().map(policy_yaml).collect();
            out.push((format!("{:02}-policies.yaml", 10 + f), text));
        }
        out
    }

    fn policy() -> impl Strategy<Value = Policy> {
        (
            0u32..40,
            prop::option::of(0u8..2),
            0u8..4,
            0u8..4,
            0u8..4,
            prop::collection::vec((0u8..4, 0u8..6, 1u16..2000, 1u8..250), 1..3),
            any::<bool>(),
        )
            .prop_map(|(id, tier, order, selector, stage, rules, egress)| Policy {
                id,
                tier,
                order,
                selector,
                stage,
                rules,
                egress,
            })
    }

    fn model() -> impl Strategy<Value = Model> {
        (
            prop::collection::vec(0u8..3, 1..3),
            prop::collection::vec(any::<bool>(), 3..=3),
            prop::collection::vec(1u16..5, 2..=2),
            prop::collection::vec(any::<bool>(), 2..=2),
            prop::collection::vec(1u8..250, 0..3),
            prop::collection::vec(1u16..100, 0..3),
            any::<bool>(),
            prop::collection::vec(policy(), 1..10),
            1usize..4,
        )
            .prop_map(
                |(
                    hep_labels,
                    hep_allow,
                    tier_orders,
                    tier_pass,
                    set_nets,
                    failsafe,
                    deny_reject,
                    mut policies,
                    per_file,
                )| {
                    let mut seen = std::collections::BTreeSet::new();
                    policies.retain(|p| seen.insert(p.id));
                    Model {
                        hep_labels,
                        hep_allow,
                        tier_orders,
                        tier_pass,
                        set_nets,
                        failsafe,
                        deny_reject,
                        policies,
                        per_file,
                    }
                },
            )
    }

    /// One edit of the configuration, as an operator (or config management) makes them.
    #[derive(Debug, Clone)]
    enum Edit {
        Port(usize, u16),
        Add(Policy),
        Remove(usize),
        Swap(usize, usize),
        Order(usize, u8),
        SetNets(Vec<u8>),
        HepLabel(usize, u8),
        HepAllow(usize),
        TierOrder(usize, u16),
        TierPass(usize),
        Failsafe(Vec<u16>),
        DenyAction,
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (0usize..10, 1u16..2000).prop_map(|(i, p)| Edit::Port(i, p)),
            policy().prop_map(Edit::Add),
            (0usize..10).prop_map(Edit::Remove),
            (0usize..10, 0usize..10).prop_map(|(a, b)| Edit::Swap(a, b)),
            (0usize..10, 0u8..4).prop_map(|(i, o)| Edit::Order(i, o)),
            prop::collection::vec(1u8..250, 0..4).prop_map(Edit::SetNets),
            (0usize..3, 0u8..3).prop_map(|(i, r)| Edit::HepLabel(i, r)),
            (0usize..3).prop_map(Edit::HepAllow),
            (0usize..2, 1u16..5).prop_map(|(i, o)| Edit::TierOrder(i, o)),
            (0usize..2).prop_map(Edit::TierPass),
            prop::collection::vec(1u16..100, 0..3).prop_map(Edit::Failsafe),
            Just(Edit::DenyAction),
        ]
    }

    /// The interfaces the generated HostEndpoints name (`eth0`..`eth2`), without addresses.
    fn three_interfaces() -> Vec<Interface> {
        (0..3)
            .map(|i| Interface {
                name: format!("eth{i}"),
                addrs: vec![],
            })
            .collect()
    }

    fn apply(m: &mut Model, e: &Edit) {
        let n = m.policies.len();
        match e.clone() {
            Edit::Port(i, port) if n > 0 => {
                if let Some(r) = m.policies[i % n].rules.first_mut() {
                    r.2 = port;
                }
            }
            Edit::Add(mut p) => {
                p.id = m.policies.iter().map(|p| p.id + 1).max().unwrap_or(0);
                m.policies.push(p)
            }
            Edit::Remove(i) if n > 0 => {
                m.policies.remove(i % n);
            }
            Edit::Swap(a, b) if n > 0 => m.policies.swap(a % n, b % n),
            Edit::Order(i, o) if n > 0 => m.policies[i % n].order = o,
            Edit::SetNets(nets) => m.set_nets = nets,
            Edit::HepLabel(i, r) => {
                let k = m.hep_labels.len();
                m.hep_labels[i % k] = r;
            }
            Edit::HepAllow(i) => m.hep_allow[i % 3] = !m.hep_allow[i % 3],
            Edit::TierOrder(i, o) => m.tier_orders[i % 2] = o,
            Edit::TierPass(i) => m.tier_pass[i % 2] = !m.tier_pass[i % 2],
            Edit::Failsafe(ports) => m.failsafe = ports,
            Edit::DenyAction => m.deny_reject = !m.deny_reject,
            _ => {}
        }
    }

    /// Issue 18: a compile that takes back the unchanged policies' chains from the previous compile
    /// gives exactly the ruleset a compile from scratch gives (rules, sets, names, origins, flow ids,
    /// content hash), edit after edit (a policy changed, added, removed, moved; the network set, a
    /// HostEndpoint's labels or profiles, a tier's order or default action, the failsafe ports, the
    /// deny action changed), with and without flow records. The HostEndpoint chains are taken back
    /// too (issue 18).
    #[test]
    fn incremental_compile_equals_from_scratch() {
        use std::cell::Cell;
        let (valid, reused) = (Cell::new(0usize), Cell::new(0usize));
        let endpoints_reused = Cell::new(0usize);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 96,
            ..ProptestConfig::default()
        });
        let cases = (model(), prop::collection::vec(edit(), 1..6), any::<bool>());
        let result = runner.run(&cases, |(m, edits, flows_on)| {
            let flows = Flows {
                enabled: flows_on,
                ..Flows::default()
            };
            let interfaces = three_interfaces();
            let mut files = Files::new();
            let mut cache = Cache::new();
            let mut m = m;
            for step in 0..=edits.len() {
                if step > 0 {
                    apply(&mut m, &edits[step - 1]);
                }
                let src = sources(&m);
                let loaded = files.load(&src);
                if loaded.has_errors() {
                    continue;
                }
                valid.set(valid.get() + 1);
                let view = resolve(&loaded.config, "node1", &interfaces);
                let incremental = compile_cached(
                    &loaded.config,
                    &view,
                    DEFAULT_TABLE,
                    &flows,
                    Some(&mut cache),
                );
                reused.set(reused.get() + cache.last_use().reused);
                endpoints_reused.set(endpoints_reused.get() + cache.last_use().endpoints_reused);
                let fresh = crate::config::load::load_sources(&src);
                let fresh_view = resolve(&fresh.config, "node1", &interfaces);
                let scratch = compile_with(&fresh.config, &fresh_view, DEFAULT_TABLE, &flows);
                prop_assert_eq!(&incremental, &scratch, "step {} of {:?}", step, edits);
                prop_assert_eq!(
                    crate::compile::content_hash(&incremental),
                    crate::compile::hash_from_comment(&incremental.comment).unwrap()
                );
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        // Not vacuous: most generated configurations are valid, and chains were taken back.
        assert!(valid.get() > 96, "valid configurations: {}", valid.get());
        assert!(reused.get() > 96, "chains taken back: {}", reused.get());
        assert!(
            endpoints_reused.get() > 96,
            "HostEndpoint chains taken back: {}",
            endpoints_reused.get()
        );
    }

    /// Issue 18: the policy chains built on several threads and put together give exactly the
    /// ruleset one thread gives (rules, sets, names, origins, flow ids, content hash: what `render`
    /// prints and what the kernel is sent), whatever the number of threads.
    #[test]
    fn compile_does_not_depend_on_the_number_of_threads() {
        use crate::compile::{compile_threads, PREBUILT_TAKEN};
        use std::sync::atomic::Ordering;
        let valid = std::cell::Cell::new(0usize);
        let before = PREBUILT_TAKEN.load(Ordering::Relaxed);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 64,
            ..ProptestConfig::default()
        });
        let cases = (model(), any::<bool>());
        let result = runner.run(&cases, |(m, flows_on)| {
            let flows = Flows {
                enabled: flows_on,
                ..Flows::default()
            };
            let interfaces = three_interfaces();
            let loaded = crate::config::load::load_sources(&sources(&m));
            if loaded.has_errors() {
                return Ok(());
            }
            valid.set(valid.get() + 1);
            let view = resolve(&loaded.config, "node1", &interfaces);
            let one = compile_threads(&loaded.config, &view, DEFAULT_TABLE, &flows, None, 1);
            prop_assert_eq!(
                &one,
                &compile_with(&loaded.config, &view, DEFAULT_TABLE, &flows)
            );
            for threads in [2, 3, 5] {
                let many =
                    compile_threads(&loaded.config, &view, DEFAULT_TABLE, &flows, None, threads);
                prop_assert_eq!(&many, &one, "{} threads", threads);
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        assert!(valid.get() > 32, "valid configurations: {}", valid.get());
        assert!(
            PREBUILT_TAKEN.load(Ordering::Relaxed) - before > 64,
            "chains built on other threads were taken back: {} of {} valid",
            PREBUILT_TAKEN.load(Ordering::Relaxed) - before,
            valid.get()
        );
    }

    /// The cache is used: after one policy's port changed, only its chain is built again.
    #[test]
    fn only_the_changed_policy_is_built_again() {
        let mut m = Model {
            hep_labels: vec![0],
            hep_allow: vec![false],
            tier_orders: vec![],
            tier_pass: vec![],
            set_nets: vec![1],
            failsafe: vec![22],
            deny_reject: false,
            policies: (0..5)
                .map(|id| Policy {
                    id,
                    tier: None,
                    order: 1,
                    selector: 0,
                    stage: 0,
                    rules: vec![(0, 0, 80, 1), (1, 1, 443, 2)],
                    egress: false,
                })
                .collect(),
            per_file: 1,
        };
        let mut files = Files::new();
        let mut cache = Cache::new();
        let compile = |m: &Model, files: &mut Files, cache: &mut Cache| {
            let loaded = files.load(&sources(m));
            assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
            let view = resolve(&loaded.config, "node1", &[]);
            compile_cached(
                &loaded.config,
                &view,
                DEFAULT_TABLE,
                &Flows::default(),
                Some(cache),
            )
        };
        compile(&m, &mut files, &mut cache);
        assert_eq!(cache.last_use().reused, 0);
        assert_eq!(cache.last_use().built, 5);
        assert_eq!(cache.last_use().endpoints_reused, 0);
        let endpoint_chains = cache.last_use().endpoints_built;
        assert!(endpoint_chains > 0);
        m.policies[3].rules[0].2 = 81;
        let rs = compile(&m, &mut files, &mut cache);
        assert_eq!(cache.last_use().reused, 4);
        assert_eq!(cache.last_use().built, 1);
        // The HostEndpoint chains jump to the same chains: taken back, all of them.
        assert_eq!(cache.last_use().endpoints_reused, endpoint_chains);
        assert_eq!(cache.last_use().endpoints_built, 0);
        assert!(rs.chains.iter().any(|c| c.name == "pi-p3"
            && c.rules
                .iter()
                .any(|r| format!("{r:?}").contains("Single(81)"))));
        // All policies in one file: those that moved to another file are built again (their rules'
        // comments name the file), the first stays where it was; then a change in the file gives new
        // policies, the equal ones are taken back.
        m.per_file = 5;
        compile(&m, &mut files, &mut cache);
        assert_eq!(cache.last_use().built, 4);
        // The comments of the jumps to them name the files too: the chain with the jumps (normal
        // ingress) is built again, the others of the HostEndpoint are not.
        assert_eq!(cache.last_use().endpoints_built, 1);
        assert_eq!(cache.last_use().endpoints_reused, endpoint_chains - 1);
        m.policies[1].rules[1].2 = 444;
        compile(&m, &mut files, &mut cache);
        assert_eq!(cache.last_use().reused, 4);
        assert_eq!(cache.last_use().built, 1);
        assert_eq!(cache.last_use().endpoints_reused, endpoint_chains);
    }
}
