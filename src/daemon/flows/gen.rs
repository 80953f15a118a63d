//! What the flow ids of one applied ruleset (a generation) stand for, and which generation was in force
//! when.
//!
//! A record is mapped back through the generation in force when its packet was logged (the NFLOG
//! timestamp, else the time it was received): a packet denied before a reload keeps the file and line
//! of the rule that denied it, even if the reload moved that rule. Ids do not change with the files'
//! lines ([`crate::compile::names::flow_id`]), so an id is also found in the neighbouring generations
//! when a packet was logged a moment before or after the commit we recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::ruleset::{Dir, Kind, Origin, RuleAction, Ruleset, Stage, Verdict};

/// One decision-making rule of a generation, as flow records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowOrigin {
    pub kind: Kind,
    pub tier: Option<Arc<str>>,
    pub policy: Option<Arc<str>>,
    pub staged: bool,
    /// A rule of the staged evaluation (reports a would-be verdict, decides nothing).
    pub shadow: bool,
    pub direction: Option<Dir>,
    pub rule: Option<u32>,
    /// What the rule does: `allow` or `deny` (a would-be verdict for a shadow rule).
    pub allows: bool,
    /// The stage of a HostEndpoint's default; for a policy rule, the stage its policy runs in when
    /// that is one stage only (untracked, preDNAT); `None`: normal or forward, by the hook.
    pub stage: Option<Stage>,
    pub host_endpoint: Option<Arc<str>>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
}

impl FlowOrigin {
    fn of(o: &Origin, policy_stage: Option<Stage>, allows: bool) -> FlowOrigin {
        FlowOrigin {
            kind: o.kind,
            tier: o.tier.clone(),
            policy: o.policy.clone(),
            staged: o.staged,
            shadow: o.shadow,
            direction: o.direction,
            rule: o.rule,
            allows,
            stage: o.stage.or(policy_stage),
            host_endpoint: o.host_endpoint.clone(),
            file: o.at.as_ref().map(|a| a.file.clone()),
            line: o.at.as_ref().map(|a| a.line),
        }
    }
}

/// One generation: its flow ids and its interfaces.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    pub number: u64,
    /// When it was committed (as the daemon saw it: just after the kernel's commit).
    pub since: Option<SystemTime>,
    pub ids: HashMap<u64, Arc<FlowOrigin>>,
    /// Interface name → its HostEndpoint.
    pub interfaces: HashMap<String, Arc<str>>,
    /// The wildcard HostEndpoint (`interfaceName: "*"`), which takes every other interface.
    pub wildcard: Option<Arc<str>>,
}

impl Generation {
    /// The generation `number` of `rs`, committed at `since`.
    pub fn of(rs: &Ruleset, number: u64, since: SystemTime) -> Generation {
        Generation::after(None, rs, number, since)
    }

    /// [`Generation::of`], sharing with `previous` (the generation before) what its ids stand for
    /// where that did not change: a reload in which one policy changed allocates one or two, not
    /// 10,000, and telling it from the previous one compares pointers.
    pub fn after(
        previous: Option<&Generation>,
        rs: &Ruleset,
        number: u64,
        since: SystemTime,
    ) -> Generation {
        // The stage of each policy that runs in one early stage only (the HostEndpoint chains' jumps
        // into policy chains carry the stage in their origin).
        let mut stages: HashMap<(&str, bool), Stage> = HashMap::new();
        for o in &rs.origins.list {
            if let (Kind::Tier, Some(p), Some(s @ (Stage::Untracked | Stage::PreDnat))) =
                (o.kind, o.policy.as_deref(), o.stage)
            {
                stages.insert((p, o.shadow), s);
            }
        }
        let mut ids = HashMap::with_capacity(rs.origins.flow_ids.len());
        for (id, oid) in &rs.origins.flow_ids {
            let Some(o) = rs.origins.get(*oid) else {
                continue;
            };
            let policy_stage = o
                .policy
                .as_deref()
                .filter(|_| o.kind == Kind::Policy)
                .and_then(|p| stages.get(&(p, o.shadow)).copied());
            let allows = match o.kind {
                Kind::Policy => o.action == Some(RuleAction::Allow),
                Kind::EndOfTier => false,
                Kind::NoPolicy => o.stage == Some(Stage::Forward),
                _ => true,
            };
            let origin = FlowOrigin::of(o, policy_stage, allows);
            let origin = match previous.and_then(|g| g.ids.get(id)) {
                Some(same) if **same == origin => Arc::clone(same),
                _ => Arc::new(origin),
            };
            ids.insert(*id, origin);
        }
        let mut interfaces = HashMap::new();
        let mut wildcard = None;
        let hep_of_chain = |name: &str| -> Option<Arc<str>> {
            let c = rs.chain_index(name)?;
            rs.chains[c]
                .rules
                .iter()
                .enumerate()
                .find_map(|(r, _)| rs.origins.of(c, r)?.host_endpoint.clone())
        };
        for m in &rs.maps {
            for (iface, v) in &m.elements {
                if let Verdict::Goto(c) | Verdict::Jump(c) = v {
                    if let Some(h) = hep_of_chain(c) {
                        interfaces.entry(iface.clone()).or_insert(h);
                    }
                }
            }
        }
        for (_, _, o) in rs.rules_with_origins() {
            if let Some(o) = o {
                if o.kind == Kind::Dispatch && o.host_endpoint.is_some() {
                    wildcard = o.host_endpoint.clone();
                }
            }
        }
        Generation {
            number,
            since: Some(since),
            ids,
            interfaces,
            wildcard,
        }
    }

    /// The HostEndpoint of interface `iface` (`None`: no HostEndpoint governs it).
    pub fn host_endpoint(&self, iface: &str) -> Option<Arc<str>> {
        self.interfaces
            .get(iface)
            .cloned()
            .or_else(|| self.wildcard.clone())
    }
}

/// The last few generations, newest last.
#[derive(Debug, Default)]
pub struct Generations {
    list: Vec<Arc<Generation>>,
}

impl Generations {
    /// How many are kept: records of a packet logged before the last [`Generations::KEPT`] reloads are
    /// mapped with the oldest kept (their ids rarely change).
    pub const KEPT: usize = 8;

    /// A generation applied (or found in force): kept when it differs from the newest one in what its
    /// ids stand for (a policy moved to another line is the same kernel table, and the same engine
    /// generation, but its records must name the new line from now on). The same again (a repair, an
    /// unchanged reload) changes nothing: the time it came in force stays.
    pub fn push(&mut self, g: Generation) {
        if let Some(l) = self.list.last() {
            if l.number == g.number && l.ids == g.ids && l.interfaces == g.interfaces {
                return;
            }
        }
        self.list.push(Arc::new(g));
        if self.list.len() > Self::KEPT {
            self.list.remove(0);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The generation in force at `t` that knows `id` (the generation committed last before `t`;
    /// failing that, the nearest one that has the id, newest first), with what the id stands for.
    pub fn resolve(&self, id: u64, t: SystemTime) -> Option<(&Arc<Generation>, &Arc<FlowOrigin>)> {
        let at = self
            .list
            .iter()
            .rposition(|g| g.since.is_none_or(|s| s <= t))
            .unwrap_or(0);
        let in_force = self.list.get(at).and_then(|g| Some((g, g.ids.get(&id)?)));
        in_force.or_else(|| {
            self.list
                .iter()
                .rev()
                .find_map(|g| Some((g, g.ids.get(&id)?)))
        })
    }

    /// The newest generation.
    pub fn latest(&self) -> Option<&Arc<Generation>> {
        self.list.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::load_sources;
    use std::time::Duration;

    fn compiled(yaml: &str) -> Ruleset {
        let config =
            load_sources(&[("/etc/hostpolicy.d/a.yaml".to_string(), yaml.to_string())]).config;
        let view = crate::resolve::resolve(
            &config,
            "node1",
            &[crate::resolve::Interface {
                name: "eth0".into(),
                addrs: vec![],
            }],
        );
        crate::compile::compile(&config, &view, "hostpolicy")
    }

    const HEP: &str = "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: node1-eth0}, spec: {node: node1, interfaceName: eth0}}\n";

    /// Issue 18: a generation made after another shares what unchanged ids stand for, and is the
    /// generation made from scratch.
    #[test]
    fn a_generation_shares_the_unchanged_ids_of_the_one_before() {
        let policy = || {
            format!(
                "{HEP}- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: a}}, spec: {{selector: all(), ingress: [{{action: Deny, protocol: TCP, destination: {{ports: [22]}}}}]}}}}\n\
                 - {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: b}}, spec: {{selector: all(), ingress: [{{action: Allow, protocol: UDP}}]}}}}\n"
            )
        };
        let first = Generation::of(&compiled(&policy()), 1, SystemTime::UNIX_EPOCH);
        // Policy b moves to another line: its rule's id stays, what it stands for changes; the
        // rest stays where it was.
        let mut moved = policy();
        moved.insert(moved.rfind("- {apiVersion").unwrap(), '\n');
        let rs = compiled(&moved);
        let next = Generation::after(Some(&first), &rs, 2, SystemTime::UNIX_EPOCH);
        let scratch = Generation::of(&rs, 2, SystemTime::UNIX_EPOCH);
        assert_eq!(next.ids, scratch.ids);
        assert_eq!(next.interfaces, scratch.interfaces);
        let (mut shared, mut new) = (0, 0);
        for (id, o) in &next.ids {
            match first.ids.get(id) {
                Some(f) if Arc::ptr_eq(f, o) => shared += 1,
                Some(f) => {
                    assert_ne!(**f, **o);
                    new += 1
                }
                None => new += 1,
            }
        }
        assert!(shared > 0 && new > 0, "{shared} shared, {new} new");
    }

    #[test]
    fn ids_name_rules_and_interfaces_their_host_endpoint() {
        let yaml = format!(
            "{HEP}- {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: deny-metrics}}, spec: {{selector: all(), ingress: [{{action: Deny, protocol: TCP, destination: {{ports: [9100]}}}}, {{action: Allow}}]}}}}\n\
             - {{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {{name: raw}}, spec: {{selector: all(), doNotTrack: true, applyOnForward: true, ingress: [{{action: Allow, protocol: UDP}}]}}}}\n"
        );
        let rs = compiled(&yaml);
        let g = Generation::of(&rs, 3, SystemTime::UNIX_EPOCH);
        let find = |pred: &dyn Fn(&FlowOrigin) -> bool| {
            g.ids
                .values()
                .find(|o| pred(o))
                .cloned()
                .unwrap_or_else(|| panic!("{:#?}", g.ids.values().collect::<Vec<_>>()))
        };
        let deny = find(&|o| o.policy.as_deref() == Some("deny-metrics") && o.rule == Some(0));
        assert!(!deny.allows);
        assert_eq!(deny.file.as_deref(), Some("/etc/hostpolicy.d/a.yaml"));
        assert_eq!(deny.line, Some(2));
        assert_eq!(deny.stage, None, "normal or forward: by the hook");
        let allow = find(&|o| o.policy.as_deref() == Some("deny-metrics") && o.rule == Some(1));
        assert!(allow.allows);
        let raw = find(&|o| o.policy.as_deref() == Some("raw"));
        assert_eq!(raw.stage, Some(Stage::Untracked));
        let eot = find(&|o| o.kind == Kind::EndOfTier);
        assert_eq!(eot.host_endpoint.as_deref(), Some("node1-eth0"));
        assert!(g.ids.values().any(|o| o.kind == Kind::Failsafe && o.allows));
        assert_eq!(g.host_endpoint("eth0").as_deref(), Some("node1-eth0"));
        assert_eq!(g.host_endpoint("eth1"), None);
    }

    #[test]
    fn the_generation_in_force_at_the_packet_s_time() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut gens = Generations::default();
        let origin = |line| {
            Arc::new(FlowOrigin {
                kind: Kind::Policy,
                tier: None,
                policy: Some("p".into()),
                staged: false,
                shadow: false,
                direction: Some(Dir::Ingress),
                rule: Some(0),
                allows: false,
                stage: None,
                host_endpoint: None,
                file: Some("a.yaml".into()),
                line: Some(line),
            })
        };
        for (n, line, at) in [(1, 10, 0), (2, 20, 10)] {
            let mut g = Generation {
                number: n,
                since: Some(t0 + Duration::from_secs(at)),
                ..Generation::default()
            };
            g.ids.insert(7, origin(line));
            if n == 2 {
                g.ids.insert(8, origin(99));
            }
            gens.push(g);
        }
        let line = |gens: &Generations, id, secs| {
            gens.resolve(id, t0 + Duration::from_secs(secs))
                .map(|(g, o)| (g.number, o.line.unwrap()))
        };
        assert_eq!(
            line(&gens, 7, 5),
            Some((1, 10)),
            "before the reload: the old line"
        );
        assert_eq!(line(&gens, 7, 15), Some((2, 20)));
        assert_eq!(
            line(&gens, 8, 5),
            Some((2, 99)),
            "an id of the next generation only"
        );
        assert_eq!(line(&gens, 9, 5), None);
        // The same generation again (an unchanged reload) keeps the time it came in force.
        let mut again = (**gens.latest().unwrap()).clone();
        again.since = Some(t0 + Duration::from_secs(100));
        gens.push(again.clone());
        assert_eq!(line(&gens, 7, 15), Some((2, 20)));
        // The same engine generation with a rule on another line (the table did not change).
        again.ids.insert(7, origin(21));
        gens.push(again);
        assert_eq!(
            line(&gens, 7, 15),
            Some((2, 20)),
            "before it: the line of then"
        );
        assert_eq!(line(&gens, 7, 105), Some((2, 21)));
        for n in 3..20 {
            gens.push(Generation {
                number: n,
                ..Generation::default()
            });
        }
        assert_eq!(gens.list.len(), Generations::KEPT);
    }
}
