//! Tier `spec` (tiers spec §1) and the check that every policy's tier exists (§2.2).

use std::sync::Arc;

use crate::config::model::{
    builtin_tiers, fmt_order, GlobalNetworkPolicy, Tier, TierAction, DEFAULT_TIER,
    DEFAULT_TIER_ORDER,
};
use crate::config::yaml::Node;
use crate::config::{diag::Diagnostic, model::Config};

use super::fields::{number, object, string, suggest, Cx};
use super::meta::{is_tier_name, Meta};

const SPEC_FIELDS: &[&str] = &["order", "defaultAction"];

/// A `Tier` resource. `None` when its spec cannot be read at all.
pub(crate) fn tier(cx: &mut Cx, resource: &Node, meta: Meta, spec: Option<&Node>) -> Option<Tier> {
    let pos = cx.pos(resource);
    let spec = match spec {
        Some(node) => Some(object(cx, node, "a Tier spec", SPEC_FIELDS)?),
        None => None,
    };
    let order_node = spec.as_ref().and_then(|s| s.get("order"));
    let action_node = spec.as_ref().and_then(|s| s.get("defaultAction"));
    let order = match order_node {
        Some(n) => number(cx, n, "order"),
        None => Some(DEFAULT_TIER_ORDER),
    };
    let default_action = match action_node {
        Some(n) => default_action(cx, n),
        None => Some(TierAction::Deny),
    };
    let (order, default_action) = (order?, default_action?);
    // Built-in tiers keep their values (tiers spec §1.2, Calico 3.32+'s CEL rules on the defaulted
    // resource: an omitted order is 1000000, an omitted defaultAction Deny).
    if let Some(builtin) = builtin_tiers().iter().find(|t| t.name == meta.name.value) {
        let name = &builtin.name;
        if order != builtin.order {
            let at = order_node.map_or_else(|| meta.name.pos.clone(), |n| cx.pos(n));
            let written = if order_node.is_some() {
                format!("not {}", fmt_order(order))
            } else {
                format!("and an omitted order is {}", fmt_order(DEFAULT_TIER_ORDER))
            };
            cx.error_at(
                at,
                format!(
                    "the built-in tier `{name}` has order {} and cannot be given another ({written}): write `order: {}`{}",
                    fmt_order(builtin.order),
                    fmt_order(builtin.order),
                    if builtin.order == DEFAULT_TIER_ORDER { " or leave it out" } else { "" },
                ),
            );
        }
        if default_action != builtin.default_action {
            let at = action_node.map_or_else(|| meta.name.pos.clone(), |n| cx.pos(n));
            let written = if action_node.is_some() {
                format!("not {default_action}")
            } else {
                "and an omitted defaultAction is Deny".to_owned()
            };
            cx.error_at(
                at,
                format!(
                    "the built-in tier `{name}` has defaultAction {} and cannot be given another ({written}): write `defaultAction: {}`{}",
                    builtin.default_action,
                    builtin.default_action,
                    if builtin.default_action == TierAction::Deny { " or leave it out" } else { "" },
                ),
            );
        }
    }
    Some(Tier {
        name: meta.name.value,
        pos: Some(pos),
        order,
        default_action,
    })
}

/// `Deny` or `Pass` (tiers spec §1: the CRD enum; `Allow`, `Log` and other cases are refused).
fn default_action(cx: &mut Cx, node: &Node) -> Option<TierAction> {
    let text = string(cx, node, "defaultAction")?;
    match text {
        "Deny" => Some(TierAction::Deny),
        "Pass" => Some(TierAction::Pass),
        _ => {
            let hint = match ["Deny", "Pass"].iter().find(|k| k.eq_ignore_ascii_case(text)) {
                Some(k) => format!(" (actions are case-sensitive: write `{k}`)"),
                None if ["Allow", "Log"].iter().any(|k| k.eq_ignore_ascii_case(text)) => {
                    " (a tier cannot end with Allow or Log: allow in a policy of the tier, or Pass to the next tier)".to_owned()
                }
                None => String::new(),
            };
            cx.error(
                node,
                format!("`defaultAction` must be `Deny` or `Pass`, not `{text}`{hint}"),
            );
            None
        }
    }
}

/// `spec.tier` of a policy: a tier name; omitted or empty means `default` (tiers spec §2).
pub(crate) fn policy_tier(cx: &mut Cx, node: &Node) -> Option<String> {
    let text = string(cx, node, "tier")?;
    if text.is_empty() {
        return Some(DEFAULT_TIER.to_owned());
    }
    if !is_tier_name(text) {
        cx.error(
            node,
            format!("`tier: {text}` is not a valid tier name: tier names are one lowercase DNS label (`a-z`, `0-9`, `-`, no `.`), at most 63 characters"),
        );
        return None;
    }
    Some(text.to_owned())
}

/// Tiers spec §2.2 item 5: a policy whose tier is neither declared in the directory nor built in is
/// refused at its `spec.tier`, naming the tier. Such policies are taken out of `config` (the
/// configuration is not used with errors anyway).
///
/// `declared` are the names of every Tier resource of the directory, those with errors included (they
/// are reported already, and are not in `config`).
pub(crate) fn check_policy_tiers(
    config: &mut Config,
    declared: &[&str],
    diagnostics: &mut Vec<Diagnostic>,
) {
    let policies = std::mem::take(&mut config.policies);
    config.policies = keep_known_tiers(
        config,
        declared,
        policies,
        "GlobalNetworkPolicy",
        diagnostics,
    );
    // A staged policy stages a policy of its tier: the tier must exist (a staged deletion's tier is
    // only a label, as in Calico).
    let staged = std::mem::take(&mut config.staged);
    let (set, delete): (Vec<_>, Vec<_>) = staged
        .into_iter()
        .partition(|p| p.staged != Some(crate::config::model::StagedAction::Delete));
    let mut staged = keep_known_tiers(
        config,
        declared,
        set,
        "StagedGlobalNetworkPolicy",
        diagnostics,
    );
    staged.extend(delete);
    config.staged = staged;
}

/// `policies` without those of a tier that does not exist, each of which is an error.
fn keep_known_tiers(
    config: &Config,
    declared: &[&str],
    policies: Vec<Arc<GlobalNetworkPolicy>>,
    kind: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Arc<GlobalNetworkPolicy>> {
    let missing = |p: &GlobalNetworkPolicy| {
        config.tier(&p.tier.value).is_none() && !declared.contains(&p.tier.value.as_str())
    };
    if !policies.iter().any(|p| missing(p)) {
        return policies;
    }
    let mut known: Vec<String> = declared.iter().map(|t| t.to_string()).collect();
    known.sort();
    for b in builtin_tiers() {
        if !known.contains(&b.name) {
            known.push(b.name.clone());
        }
    }
    let mut kept = Vec::with_capacity(policies.len());
    for p in policies {
        if !missing(&p) {
            kept.push(p);
            continue;
        }
        let tier = &p.tier.value;
        let hint = match suggest(tier, known.iter().map(String::as_str)) {
            Some(close) => format!(" (did you mean `{close}`?)"),
            None => String::new(),
        };
        diagnostics.push(Diagnostic::error(
            p.tier.pos.clone(),
            format!(
                "{kind} '{}' (at {}) is in tier `{tier}`, which does not exist{hint}: declare it (apiVersion: projectcalico.org/v3, kind: Tier, metadata: {{name: {tier}}}) or name an existing tier; the tiers are: {}",
                p.name,
                p.pos,
                known.join(", ")
            ),
        ));
    }
    kept
}
