//! Per-policy counters: what the kernel counted for every policy rule and every default of our table,
//! mapped back to the configuration (`hostpolicyd status --counters`).
//!
//! The compiler puts a `counter` on every policy rule and every default drop or allow, with a comment
//! naming its origin: `POLICY ingress[N] Action` for policy rules, `HEP: end of tier default deny`,
//! `HEP: no profile matched`, `HEP: profile projectcalico-default-allow` for the defaults of a HostEndpoint
//! chain. [`read`] dumps the table's rules over netlink ([`crate::nft::dump`]); [`report`] sums the
//! counters per comment (a policy rule may be several nftables rules: one per family, one per port
//! alternative, and its chain is shared by every HostEndpoint and stage that uses the policy) and finds
//! the policy, the rule and their file:line:col in the configuration. The stage of a default comes from
//! its chain (`fh-` normal ingress, `pre-fh-` preDNAT, `thfw-` forward egress...).
//!
//! Counters count packets that reach the rule: the first packet of every tracked connection (later
//! packets are accepted by `ct state established` before any policy) and every untracked packet.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::config::model::Config;
use crate::exit;
use crate::nft::{netlink::Netlink, Dataplane, DataplaneError};
use crate::settings::Settings;

/// One kernel rule with a counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCounter {
    pub chain: String,
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
    Ok(crate::nft::dump::rules(table)?
        .into_iter()
        .filter_map(|r| {
            let (packets, bytes) = r.counter?;
            Some(RuleCounter {
                chain: r.chain,
                comment: r.comment,
                packets,
                bytes,
            })
        })
        .collect())
}

/// Counters mapped back to the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub table: String,
    /// In evaluation order (order, then name); policies of the configuration that the table does not
    /// hold (they select no HostEndpoint of this node) are left out.
    pub policies: Vec<PolicyCounters>,
    pub host_endpoints: Vec<EndpointCounters>,
    /// Counted rules whose comment is not ours (or cut short).
    pub other: Vec<RuleCounter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyCounters {
    pub name: String,
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
    /// e.g. `end of tier default deny`, `no profile matched`.
    pub what: String,
    pub packets: u64,
    pub bytes: u64,
}

/// What a counter comment says.
enum Origin {
    Rule {
        policy: String,
        direction: String,
        index: usize,
        action: String,
    },
    Default {
        hep: String,
        what: String,
    },
}

fn origin(comment: &str) -> Option<Origin> {
    if let Some((hep, what)) = comment.split_once(": ") {
        if !hep.contains(' ') {
            return Some(Origin::Default {
                hep: hep.to_string(),
                what: what.to_string(),
            });
        }
    }
    let parts: Vec<&str> = comment.split(' ').collect();
    let [policy, rule, action] = parts[..] else {
        return None;
    };
    let (direction, index) = rule.strip_suffix(']')?.split_once('[')?;
    if !matches!(direction, "ingress" | "egress") {
        return None;
    }
    Some(Origin::Rule {
        policy: policy.to_string(),
        direction: direction.to_string(),
        index: index.parse().ok()?,
        action: action.to_string(),
    })
}

/// The stage and direction of a HostEndpoint chain, from its name (`compile::endpoint_chain_prefix`).
fn chain_stage(chain: &str) -> (usize, &'static str) {
    const PREFIXES: &[(&str, &str)] = &[
        ("raw-fh-", "untracked ingress"),
        ("raw-th-", "untracked egress"),
        ("pre-fh-", "preDNAT ingress"),
        ("fhfw-", "forward ingress"),
        ("thfw-", "forward egress"),
        ("fh-", "normal ingress"),
        ("th-", "normal egress"),
    ];
    PREFIXES
        .iter()
        .enumerate()
        .find(|(_, (p, _))| chain.starts_with(p))
        .map(|(i, (_, s))| (i, *s))
        .unwrap_or((PREFIXES.len(), "other"))
}

/// (HostEndpoint, (stage rank, stage), what).
type DefaultKey = (String, (usize, &'static str), String);

/// Sums `counters` per origin and maps them to the policies and HostEndpoints of `config`.
pub fn report(table: &str, config: &Config, counters: &[RuleCounter]) -> Report {
    let mut rules: BTreeMap<(String, String, usize), (String, u64, u64)> = BTreeMap::new();
    let mut defaults: BTreeMap<DefaultKey, (u64, u64)> = BTreeMap::new();
    let mut other = Vec::new();
    for c in counters {
        match c.comment.as_deref().and_then(origin) {
            Some(Origin::Rule {
                policy,
                direction,
                index,
                action,
            }) => {
                let e = rules
                    .entry((policy, direction, index))
                    .or_insert((action, 0, 0));
                e.1 += c.packets;
                e.2 += c.bytes;
            }
            Some(Origin::Default { hep, what }) => {
                let e = defaults
                    .entry((hep, chain_stage(&c.chain), what))
                    .or_default();
                e.0 += c.packets;
                e.1 += c.bytes;
            }
            None => other.push(c.clone()),
        }
    }
    let mut policies: Vec<PolicyCounters> = Vec::new();
    for ((name, direction, index), (action, packets, bytes)) in rules {
        let policy = config.policies.iter().find(|p| p.name == name);
        let rule = policy.and_then(|p| {
            if direction == "ingress" {
                p.ingress.get(index)
            } else {
                p.egress.get(index)
            }
        });
        if policies.last().is_none_or(|p| p.name != name) {
            policies.push(PolicyCounters {
                name: name.clone(),
                at: policy.map(|p| p.pos.to_string()),
                rules: Vec::new(),
            });
        }
        let entry = policies.last_mut().expect("pushed above");
        entry.rules.push(RuleCount {
            direction,
            index,
            action,
            at: rule.map(|r| r.pos.to_string()),
            packets,
            bytes,
        });
    }
    // Evaluation order: order ascending (unset last), then name; unknown policies last.
    let key = |p: &PolicyCounters| {
        let order = config
            .policies
            .iter()
            .find(|q| q.name == p.name)
            .map(|q| q.order.unwrap_or(f64::INFINITY));
        (
            order.is_none(),
            order.unwrap_or(f64::INFINITY),
            p.name.clone(),
        )
    };
    policies.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(ka.2.cmp(&kb.2))
    });
    let mut host_endpoints: Vec<EndpointCounters> = Vec::new();
    for ((name, (_, stage), what), (packets, bytes)) in defaults {
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
            stage: stage.to_string(),
            what,
            packets,
            bytes,
        });
    }
    Report {
        table: table.to_string(),
        policies,
        host_endpoints,
        other,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "counters of table inet {} (packets bytes; new connections and untracked packets only)",
            self.table
        )?;
        for p in &self.policies {
            let at =
                p.at.as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_else(|| " (not in the configuration)".into());
            writeln!(f, "GlobalNetworkPolicy {}{at}", p.name)?;
            for r in &p.rules {
                let rule = format!("{}[{}] {}", r.direction, r.index, r.action);
                writeln!(
                    f,
                    "  {rule:<22} {:>12} {:>14}  {}",
                    r.packets,
                    r.bytes,
                    r.at.as_deref().unwrap_or("?")
                )?;
            }
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
            eprintln!("hostpolicyd: error: cannot read the counters: {e}");
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
        eprintln!(
            "hostpolicyd: warning: {} has errors: rules of resources that do not load are shown without a position",
            settings.config_dir.display()
        );
    }
    let r = report(&settings.table, &loaded.config, &counters);
    if json {
        match serde_json::to_string_pretty(&r) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("hostpolicyd: error: {e}");
                return exit::INTERNAL;
            }
        }
    } else {
        print!("{r}");
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::load_sources;

    fn c(chain: &str, comment: &str, packets: u64) -> RuleCounter {
        RuleCounter {
            chain: chain.into(),
            comment: Some(comment.into()),
            packets,
            bytes: packets * 60,
        }
    }

    #[test]
    fn counters_map_to_policies_rules_and_defaults() {
        let yaml = "- {apiVersion: projectcalico.org/v3, kind: HostEndpoint, metadata: {name: h}, spec: {node: node1, interfaceName: eth0}}
- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: z-first}, spec: {order: 1, selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]}}
- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: a-later}, spec: {selector: all(), egress: [{action: Log}, {action: Deny}]}}
";
        let config = load_sources(&[("t.yaml".to_string(), yaml.to_string())]).config;
        let counters = vec![
            c("po-a-later", "a-later egress[1] Deny", 2),
            c("pi-z-first", "z-first ingress[0] Allow", 3),
            c("pi-z-first", "z-first ingress[0] Allow", 4),
            c("fh-h", "h: end of tier default deny", 5),
            c("th-h", "h: end of tier default deny", 6),
            c("fh-h", "h: no profile matched", 7),
            c("pi-gone", "gone ingress[2] Pass", 1),
            c("x", "something else", 1),
        ];
        let r = report("hostpolicy", &config, &counters);
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
        assert_eq!(r.policies[2].at, None);
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
            text.contains("  ingress[0] Allow                  7            420  t.yaml:2:136"),
            "{text}"
        );
    }
}
