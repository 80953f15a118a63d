//! Per-policy counters: what the kernel counted for every policy rule and every default of our table,
//! mapped back to the configuration (`hostpolicyd status --counters`).
//!
//! The compiler puts a `counter` on every policy rule and every default drop or allow of a HostEndpoint
//! chain (end of tier, no profile matched, a profile's allow). [`read`] dumps the table's rules over
//! netlink ([`crate::nft::dump`]); [`report`] finds each counted rule's typed origin in the rulesets
//! that describe the table (the configuration compiled now, and the last good ruleset the daemon
//! stored): the rule at the same place in the same chain, with the same comment. It sums the counters
//! per origin (a policy rule may be several nftables rules: one per family, one per port alternative,
//! and its chain is shared by every HostEndpoint and stage that uses the policy) and names the policy,
//! the rule and their `FILE:LINE:COL`, or the HostEndpoint, stage and default.
//!
//! Counters count packets that reach the rule: the first packet of every tracked connection (later
//! packets are accepted by `ct state established` before any policy) and every untracked packet.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;

use crate::compile::names;
use crate::config::model::{Config, DEFAULT_TIER};
use crate::exit;
use crate::nft::{clean_comment, netlink::Netlink, Dataplane, DataplaneError};
use crate::ruleset::{rule_name, Dir, Kind, Origin, Ruleset, Stage};
use crate::settings::Settings;

/// One kernel rule with a counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCounter {
    pub chain: String,
    /// The rule's place in its chain, from 0 (as in `Chain::rules`).
    #[serde(skip)]
    pub position: usize,
    pub comment: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// The counters of every rule of table `inet TABLE` that has one. Errors when the table does not exist.
pub fn read(table: &str) -> Result<Vec<RuleCounter>, DataplaneError> {
    if Netlink::new()?.table_comment(table)?.is_none() {
        return Err(DataplaneError::os(
            format!("there is no table inet {table}: nothing is applied"),
            libc::ENOENT,
        ));
    }
    let mut positions: HashMap<String, usize> = HashMap::new();
    Ok(crate::nft::dump::rules(table)?
        .into_iter()
        .filter_map(|r| {
            let next = positions.entry(r.chain.clone()).or_default();
            let position = *next;
            *next += 1;
            let (packets, bytes) = r.counter?;
            Some(RuleCounter {
                chain: r.chain,
                position,
                comment: r.comment,
                packets,
                bytes,
            })
        })
        .collect())
}

/// Finds the origins of kernel rules in rulesets that may describe the table, best first.
struct Origins<'r> {
    rulesets: Vec<(&'r Ruleset, HashMap<&'r str, usize>)>,
}

impl<'r> Origins<'r> {
    fn new(rulesets: &[&'r Ruleset]) -> Self {
        let rulesets = rulesets
            .iter()
            .map(|rs| {
                let chains = rs
                    .chains
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name.as_str(), i))
                    .collect();
                (*rs, chains)
            })
            .collect();
        Origins { rulesets }
    }

    /// The origin of the first ruleset's rule at the same place with the same comment as `c`.
    fn of(&self, c: &RuleCounter) -> Option<&'r Origin> {
        self.rulesets.iter().find_map(|(rs, chains)| {
            let chain = *chains.get(c.chain.as_str())?;
            let rule = rs.chains[chain].rules.get(c.position)?;
            let comment = rule.comment.as_deref().map(clean_comment);
            if comment.as_deref() != c.comment.as_deref() {
                return None;
            }
            rs.origins.of(chain, c.position)
        })
    }
}

/// Counters mapped back to the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub table: String,
    /// In evaluation order (order, then name); policies of the configuration that the table does not
    /// hold (they select no HostEndpoint of this node) are left out.
    pub policies: Vec<PolicyCounters>,
    /// StagedGlobalNetworkPolicies (issue 14): what their rules would have matched, apart (they
    /// decide nothing). Same order as `policies`.
    pub staged_policies: Vec<PolicyCounters>,
    pub host_endpoints: Vec<EndpointCounters>,
    /// Counted rules whose comment is not ours (or cut short).
    pub other: Vec<RuleCounter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyCounters {
    pub name: String,
    /// The policy's tier (tiers spec §2): `default` unless it says otherwise.
    pub tier: String,
    /// `FILE:LINE:COL` of the policy; `None` when the configuration no longer has it.
    pub at: Option<String>,
    pub rules: Vec<RuleCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    /// `ingress` or `egress`.
    pub direction: String,
    /// Index in the policy's rule list.
    pub index: usize,
    pub action: String,
    /// `FILE:LINE:COL` of the rule.
    pub at: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointCounters {
    pub name: String,
    pub at: Option<String>,
    pub defaults: Vec<DefaultCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultCount {
    /// e.g. `normal ingress`, `forward egress`.
    pub stage: String,
    /// e.g. `end of tier default deny`, `end of tier platform default deny`, `no profile matched`.
    pub what: String,
    /// The tier of an end-of-tier default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// Where `status --counters` lists a stage and direction (the order it always had).
fn stage_rank(stage: Stage, dir: Dir) -> usize {
    match (stage, dir) {
        (Stage::Untracked, Dir::Ingress) => 0,
        (Stage::Untracked, Dir::Egress) => 1,
        (Stage::PreDnat, _) => 2,
        (Stage::Forward, Dir::Ingress) => 3,
        (Stage::Forward, Dir::Egress) => 4,
        (Stage::Normal, Dir::Ingress) => 5,
        (Stage::Normal, Dir::Egress) => 6,
    }
}

/// (HostEndpoint, (stage rank, stage and direction), (tier rank, what), tier): the ends of tiers in
/// evaluation order, then the other defaults.
type DefaultKey = (String, (usize, String), (usize, String), Option<String>);
/// (policy, direction, index) → (tier, action, packets, bytes, `FILE:LINE:COL`).
type RuleSums = BTreeMap<(String, String, usize), (String, String, u64, u64, Option<String>)>;

/// Tiers in evaluation order (tiers spec §1.1): the declared and built-in tiers by (order, name).
fn tier_ranks(config: &Config) -> HashMap<String, usize> {
    let mut tiers: Vec<&crate::config::model::Tier> = config.tiers.iter().collect();
    for b in crate::config::model::builtin_tiers() {
        if !tiers.iter().any(|t| t.name == b.name) {
            tiers.push(b);
        }
    }
    tiers.sort_by(|a, b| {
        a.order
            .total_cmp(&b.order)
            .then_with(|| a.name.cmp(&b.name))
    });
    tiers
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect()
}

/// Sums `counters` per origin and maps them to the policies and HostEndpoints of `config`. The origins
/// come from `rulesets` (best first): a counted rule that none of them has at its place, with its
/// comment, is listed as other.
pub fn report(
    table: &str,
    config: &Config,
    rulesets: &[&Ruleset],
    counters: &[RuleCounter],
) -> Report {
    let origins = Origins::new(rulesets);
    let ranks = tier_ranks(config);
    let mut rules = RuleSums::new();
    let mut staged = RuleSums::new();
    let mut defaults: BTreeMap<DefaultKey, (u64, u64)> = BTreeMap::new();
    let mut other = Vec::new();
    for c in counters {
        let origin = origins.of(c);
        match origin.map(|o| (o, o.kind)) {
            Some((o, Kind::Policy)) => {
                let (Some(policy), Some(dir), Some(index)) = (&o.policy, o.direction, o.rule)
                else {
                    other.push(c.clone());
                    continue;
                };
                let action = o.action.map(|a| a.to_string()).unwrap_or_default();
                let tier = o.tier.as_deref().unwrap_or(DEFAULT_TIER).to_string();
                let sums = match (o.shadow, o.staged) {
                    (false, _) => &mut rules,
                    (true, true) => &mut staged,
                    // The would-be copies of enforced policies are not counted.
                    (true, false) => continue,
                };
                let e = sums
                    .entry((policy.to_string(), dir.to_string(), index as usize))
                    .or_insert((tier, action, 0, 0, o.at.as_ref().map(|a| a.to_string())));
                e.2 += c.packets;
                e.3 += c.bytes;
            }
            Some((o, Kind::EndOfTier | Kind::NoPolicy | Kind::Profile)) if !o.shadow => {
                let (Some(hep), Some(stage), Some(dir), Some(what)) = (
                    &o.host_endpoint,
                    o.stage,
                    o.direction,
                    names::endpoint_default(o),
                ) else {
                    other.push(c.clone());
                    continue;
                };
                let stage_dir = (stage_rank(stage, dir), format!("{stage} {dir}"));
                let tier = (o.kind == Kind::EndOfTier)
                    .then(|| o.tier.as_deref().unwrap_or(DEFAULT_TIER).to_string());
                let rank = match &tier {
                    Some(t) => ranks.get(t).copied().unwrap_or(ranks.len()),
                    None => ranks.len() + 1,
                };
                let e = defaults
                    .entry((hep.to_string(), stage_dir, (rank, what), tier))
                    .or_default();
                e.0 += c.packets;
                e.1 += c.bytes;
            }
            _ => other.push(c.clone()),
        }
    }
    let policies = policy_counters(&config.policies, &ranks, rules);
    let staged_policies = policy_counters(&config.staged, &ranks, staged);
    let mut host_endpoints: Vec<EndpointCounters> = Vec::new();
    for ((name, (_, stage), (_, what), tier), (packets, bytes)) in defaults {
        if host_endpoints.last().is_none_or(|h| h.name != name) {
            let at = config
                .host_endpoints
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.pos.to_string());
            host_endpoints.push(EndpointCounters {
                name: name.clone(),
                at,
                defaults: Vec::new(),
            });
        }
        let entry = host_endpoints.last_mut().expect("pushed above");
        entry.defaults.push(DefaultCount {
            stage,
            what,
            tier,
            packets,
            bytes,
        });
    }
    Report {
        table: table.to_string(),
        policies,
        staged_policies,
        host_endpoints,
        other,
    }
}

/// The rule sums of the policies of `list` (the enforced or the staged ones), in evaluation order.
fn policy_counters(
    list: &[std::sync::Arc<crate::config::model::GlobalNetworkPolicy>],
    ranks: &HashMap<String, usize>,
    rules: RuleSums,
) -> Vec<PolicyCounters> {
    let mut policies: Vec<PolicyCounters> = Vec::new();
    for ((name, direction, index), (tier, action, packets, bytes, at)) in rules {
        let policy = list.iter().find(|p| p.name == name);
        if policies.last().is_none_or(|p| p.name != name) {
            policies.push(PolicyCounters {
                name: name.clone(),
                tier: policy.map_or(tier, |p| p.tier.value.clone()),
                at: policy.map(|p| p.pos.to_string()),
                rules: Vec::new(),
            });
        }
        let entry = policies.last_mut().expect("pushed above");
        entry.rules.push(RuleCount {
            direction,
            index,
            action,
            at,
            packets,
            bytes,
        });
    }
    // Evaluation order (tiers spec §1.1, §2): by tier, then order ascending (unset last), then name as
    // Felix compares it; policies the configuration no longer has last.
    let key = |p: &PolicyCounters| {
        let found = list.iter().find(|q| q.name == p.name);
        (
            found.is_none(),
            ranks.get(&p.tier).copied().unwrap_or(ranks.len()),
            found.map_or(f64::INFINITY, |q| q.order.unwrap_or(f64::INFINITY)),
            format!("{}/", p.name),
        )
    };
    policies.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.cmp(&kb.1))
            .then(ka.2.total_cmp(&kb.2))
            .then(ka.3.cmp(&kb.3))
    });
    policies
}

/// One policy's heading (`kind`, name, tier, where; `note` after it) and a line per rule.
fn write_policy(
    f: &mut fmt::Formatter<'_>,
    p: &PolicyCounters,
    kind: &str,
    note: &str,
) -> fmt::Result {
    let at =
        p.at.as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_else(|| " (not in the configuration)".into());
    let tier = if p.tier == DEFAULT_TIER {
        String::new()
    } else {
        format!(" in tier {}", p.tier)
    };
    writeln!(f, "{kind} {}{tier}{at}{note}", p.name)?;
    for r in &p.rules {
        let rule = format!("{} {}", rule_name(&r.direction, r.index), r.action);
        writeln!(
            f,
            "  {rule:<22} {:>12} {:>14}  {}",
            r.packets,
            r.bytes,
            r.at.as_deref().unwrap_or("?")
        )?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "counters of table inet {} (packets bytes; new connections and untracked packets only)",
            self.table
        )?;
        for p in &self.policies {
            write_policy(f, p, "GlobalNetworkPolicy", "")?;
        }
        for p in &self.staged_policies {
            write_policy(
                f,
                p,
                "StagedGlobalNetworkPolicy",
                ": would have matched, never enforced",
            )?;
        }
        for h in &self.host_endpoints {
            let at =
                h.at.as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_else(|| " (not in the configuration)".into());
            writeln!(f, "HostEndpoint {}{at}", h.name)?;
            for d in &h.defaults {
                let what = format!("{}: {}", d.stage, d.what);
                writeln!(f, "  {what:<50} {:>12} {:>14}", d.packets, d.bytes)?;
            }
        }
        for o in &self.other {
            writeln!(
                f,
                "chain {} rule {:?}: {} {}",
                o.chain,
                o.comment.as_deref().unwrap_or(""),
                o.packets,
                o.bytes
            )?;
        }
        Ok(())
    }
}

/// `hostpolicyd status --counters [--json]`: reads the kernel's counters (root), maps them through the
/// configuration directory. Exit 0; 3 when the table does not exist; 70 when the kernel cannot be read.
pub fn status(settings: &Settings, json: bool) -> u8 {
    let counters = match read(&settings.table) {
        Ok(c) => c,
        Err(e) => {
            errln!("hostpolicyd: error: cannot read the counters: {e}");
            return if e.errno == Some(libc::ENOENT) {
                exit::NOT_RUNNING
            } else {
                exit::INTERNAL
            };
        }
    };
    // The configuration only names things: an invalid file still leaves its valid resources usable.
    let loaded = crate::pipeline::load(&crate::pipeline::Input::Dir(settings.config_dir.clone()));
    if loaded.has_errors() {
        errln!(
            "hostpolicyd: warning: {} has errors: rules of resources that do not load are named as last applied, or listed apart",
            settings.config_dir.display()
        );
    }
    // Where the rules come from: the configuration as it is now (its positions are current), then the
    // last good ruleset the daemon (or `apply`) stored, which is what it applied.
    let interfaces = crate::host::iface::current().unwrap_or_default();
    let view = crate::resolve::resolve(&loaded.config, &settings.node, &interfaces);
    let now = crate::compile::compile_with(&loaded.config, &view, &settings.table, &settings.flows);
    let last_good = crate::engine::state::Store::new(&settings.state_dir)
        .load_last_good()
        .ok()
        .flatten();
    let mut rulesets = vec![&now];
    rulesets.extend(last_good.as_ref().map(|l| &l.ruleset));
    let r = report(&settings.table, &loaded.config, &rulesets, &counters);
    if json {
        match serde_json::to_string_pretty(&r) {
            Ok(text) => outln!("{text}"),
            Err(e) => {
                errln!("hostpolicyd: error: {e}");
                return exit::INTERNAL;
            }
        }
    } else {
        out!("{r}");
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::load_sources;

    fn compiled(yaml: &str) -> (Config, Ruleset) {
        let config = load_sources(&[("t.yaml".to_string(), yaml.to_string())]).config;
        let view = crate::resolve::resolve(&config, "node1", &[]);
        let rs = crate::compile::compile(&config, &view, "hostpolicy");
        (config, rs)
    }

    /// The counter of the `nth` counted rule of `chain` in `rs`, as the kernel would report it.
    fn c(rs: &Ruleset, chain: &str, nth: usize, packets: u64) -> RuleCounter {
        let (position, rule) = rs
            .chain(chain)
            .unwrap_or_else(|| panic!("no chain {chain}"))
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.counter)
            .nth(nth)
            .unwrap_or_else(|| panic!("{chain} has no counted rule {nth}"));
        RuleCounter {
            chain: chain.into(),
            position,
            comment: rule.comment.clone(),
            packets,
            bytes: packets * 60,
        }
    }

    const HEP: &str = "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: h}, spec: {node: node1, interfaceName: eth0}}\n";
    const Z_FIRST: &str = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: z-first}, spec: {order: 1, selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]}}\n";
    const A_LATER: &str = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: a-later}, spec: {selector: all(), egress: [{action: Log}, {action: Deny}]}}\n";
    const GONE: &str = "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: gone}, spec: {selector: all(), ingress: [{action: Pass}, {action: Pass}, {action: Pass}]}}\n";

    #[test]
    fn counters_map_to_policies_rules_and_defaults() {
        let (config, now) = compiled(&format!("{HEP}{Z_FIRST}{A_LATER}"));
        // What was applied last: it also had the policy `gone` (at the end of the file).
        let (_, applied) = compiled(&format!("{HEP}{Z_FIRST}{A_LATER}{GONE}"));
        let mut foreign = c(&now, "pi-z-first", 0, 1);
        foreign.chain = "x".into();
        foreign.comment = Some("something else".into());
        let counters = vec![
            c(&now, "po-a-later", 1, 2),
            c(&now, "pi-z-first", 0, 3),
            c(&now, "pi-z-first", 0, 4),
            c(&now, "fh-h", 0, 5),
            c(&now, "th-h", 0, 6),
            c(&now, "fh-h", 1, 7),
            c(&applied, "pi-gone", 2, 1),
            foreign,
        ];
        let r = report("hostpolicy", &config, &[&now, &applied], &counters);
        let names: Vec<&str> = r.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["z-first", "a-later", "gone"]);
        assert_eq!(
            r.policies[0].rules,
            [RuleCount {
                direction: "ingress".into(),
                index: 0,
                action: "Allow".into(),
                at: Some("t.yaml:2:136".into()),
                packets: 7,
                bytes: 420
            }]
        );
        assert_eq!(r.policies[1].at.as_deref(), Some("t.yaml:3:3"));
        assert_eq!(r.policies[1].rules[0].action, "Deny");
        assert_eq!(r.policies[1].rules[0].index, 1);
        assert_eq!(r.policies[2].at, None);
        assert_eq!(r.policies[2].rules[0].index, 2);
        assert_eq!(r.policies[2].rules[0].action, "Pass");
        let d: Vec<(&str, &str, u64)> = r.host_endpoints[0]
            .defaults
            .iter()
            .map(|d| (d.stage.as_str(), d.what.as_str(), d.packets))
            .collect();
        assert_eq!(
            d,
            [
                ("normal ingress", "end of tier default deny", 5),
                ("normal ingress", "no profile matched", 7),
                ("normal egress", "end of tier default deny", 6)
            ]
        );
        assert_eq!(r.other.len(), 1);
        let text = r.to_string();
        assert!(
            text.contains("GlobalNetworkPolicy gone (not in the configuration)"),
            "{text}"
        );
        assert!(
            text.contains("  ingress rule 1 Allow              7            420  t.yaml:2:136"),
            "{text}"
        );
    }

    /// Tiers spec §3.2: counters name each policy's tier and each end of tier, in evaluation order.
    #[test]
    fn counters_per_tier_and_policy() {
        let tiers = "- {apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: platform}, spec: {order: 100}}\n\
                     - {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: guard}, spec: {tier: platform, order: 50, selector: all(), ingress: [{action: Deny, protocol: UDP}, {action: Pass}]}}\n";
        let (config, now) = compiled(&format!("{HEP}{Z_FIRST}{tiers}"));
        let counters = vec![
            c(&now, "pi-z-first", 0, 3),
            c(&now, "pi-guard", 0, 2),
            c(&now, "pi-guard", 1, 9),
            c(&now, "fh-h", 0, 4),
            c(&now, "fh-h", 1, 5),
            c(&now, "fh-h", 2, 1),
        ];
        let r = report("hostpolicy", &config, &[&now], &counters);
        let names: Vec<(&str, &str)> = r
            .policies
            .iter()
            .map(|p| (p.name.as_str(), p.tier.as_str()))
            .collect();
        assert_eq!(names, [("guard", "platform"), ("z-first", "default")]);
        let d: Vec<(&str, Option<&str>, u64)> = r.host_endpoints[0]
            .defaults
            .iter()
            .map(|d| (d.what.as_str(), d.tier.as_deref(), d.packets))
            .collect();
        assert_eq!(
            d,
            [
                ("end of tier platform default deny", Some("platform"), 4),
                ("end of tier default deny", Some("default"), 5),
                ("no profile matched", None, 1)
            ]
        );
        let text = r.to_string();
        assert!(
            text.contains("GlobalNetworkPolicy guard in tier platform (t.yaml:4:3)"),
            "{text}"
        );
        assert!(
            text.contains("GlobalNetworkPolicy z-first (t.yaml:2:3)"),
            "{text}"
        );
        assert!(
            text.contains("normal ingress: end of tier platform default deny"),
            "{text}"
        );
    }

    /// A kernel rule whose comment differs from the ruleset's rule at its place is not taken for it
    /// (the configuration changed since it was applied): it is listed apart, not misnamed.
    #[test]
    fn a_rule_with_another_comment_is_not_misnamed() {
        let (config, now) = compiled(&format!("{HEP}{Z_FIRST}"));
        let mut changed = c(&now, "pi-z-first", 0, 3);
        changed.comment = Some("z-first ingress rule 1 Deny".into());
        let r = report("hostpolicy", &config, &[&now], &[changed]);
        assert!(r.policies.is_empty(), "{r:?}");
        assert_eq!(r.other.len(), 1);
    }
}
