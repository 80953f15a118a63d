//! The resources a change adds, removes and changes (kind and name; where they are written). Content is
//! compared without positions: a resource moved to another line or file is not changed.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::config::model::{
    At, Config, ConnectivityCheck, EntityRule, FelixConfiguration, GlobalNetworkPolicy,
    HostEndpoint, ManagementAccess, Pos, Rule,
};
use crate::selector::Selector;

/// A resource, where it is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ResourceRef {
    pub kind: &'static str,
    pub name: String,
    pub file: String,
    pub line: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResourceChanges {
    pub added: Vec<ResourceRef>,
    pub removed: Vec<ResourceRef>,
    /// Where the changed resource is written now.
    pub changed: Vec<ResourceRef>,
}

impl ResourceChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

fn same_sel(a: &Option<At<Selector>>, b: &Option<At<Selector>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => x.value == y.value || x.value.canonical() == y.value.canonical(),
        _ => false,
    }
}

fn same_entity(a: &EntityRule, b: &EntityRule) -> bool {
    a.nets == b.nets
        && a.not_nets == b.not_nets
        && same_sel(&a.selector, &b.selector)
        && same_sel(&a.not_selector, &b.not_selector)
        && a.namespace_scope == b.namespace_scope
        && a.ports == b.ports
        && a.not_ports == b.not_ports
        && a.service_accounts == b.service_accounts
}

fn same_rule(a: &Rule, b: &Rule) -> bool {
    a.action == b.action
        && a.protocol == b.protocol
        && a.not_protocol == b.not_protocol
        && a.icmp == b.icmp
        && a.not_icmp == b.not_icmp
        && a.ip_version == b.ip_version
        && same_entity(&a.source, &b.source)
        && same_entity(&a.destination, &b.destination)
}

fn same_rules(a: &[Rule], b: &[Rule]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_rule(x, y))
}

fn same_policy(a: &GlobalNetworkPolicy, b: &GlobalNetworkPolicy) -> bool {
    a.order == b.order
        && a.tier.value == b.tier.value
        && a.selector.value.canonical() == b.selector.value.canonical()
        && same_sel(&a.namespace_selector, &b.namespace_selector)
        && same_sel(&a.service_account_selector, &b.service_account_selector)
        && (a.ingress_type, a.egress_type) == (b.ingress_type, b.egress_type)
        && (a.do_not_track, a.pre_dnat, a.apply_on_forward)
            == (b.do_not_track, b.pre_dnat, b.apply_on_forward)
        && same_rules(&a.ingress, &b.ingress)
        && same_rules(&a.egress, &b.egress)
}

fn same_hep(a: &HostEndpoint, b: &HostEndpoint) -> bool {
    let profiles = |h: &HostEndpoint| {
        h.profiles
            .iter()
            .map(|p| p.value.clone())
            .collect::<Vec<_>>()
    };
    a.labels == b.labels
        && a.node == b.node
        && a.interface_name == b.interface_name
        && a.expected_ips == b.expected_ips
        && profiles(a) == profiles(b)
        && a.ports == b.ports
}

fn same_felix(a: &FelixConfiguration, b: &FelixConfiguration) -> bool {
    let unpos = |f: &FelixConfiguration| FelixConfiguration {
        pos: Pos::default(),
        ..f.clone()
    };
    unpos(a) == unpos(b)
}

fn same_check(a: &ConnectivityCheck, b: &ConnectivityCheck) -> bool {
    (&a.node, &a.target, a.timeout, a.accept_refused)
        == (&b.node, &b.target, b.timeout, b.accept_refused)
}

fn same_management(a: &ManagementAccess, b: &ManagementAccess) -> bool {
    let sources = |m: &ManagementAccess| m.sources.iter().map(|s| s.value).collect::<Vec<_>>();
    let ports = |m: &ManagementAccess| m.ports.iter().map(|p| p.value).collect::<Vec<_>>();
    a.node == b.node && sources(a) == sources(b) && ports(a) == ports(b)
}

/// Added, removed and changed resources of one kind, by name.
fn diff_kind<T>(
    kind: &'static str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &str,
    pos: impl Fn(&T) -> Pos,
    same: impl Fn(&T, &T) -> bool,
    out: &mut ResourceChanges,
) {
    let index: HashMap<&str, &T> = old.iter().map(|r| (name(r), r)).collect();
    let names: HashSet<&str> = new.iter().map(&name).collect();
    for r in new {
        match index.get(name(r)) {
            None => out.added.push(at(kind, name(r), &pos(r))),
            Some(o) if !same(o, r) => out.changed.push(at(kind, name(r), &pos(r))),
            Some(_) => {}
        }
    }
    for r in old {
        if !names.contains(name(r)) {
            out.removed.push(at(kind, name(r), &pos(r)));
        }
    }
}

fn at(kind: &'static str, name: &str, pos: &Pos) -> ResourceRef {
    ResourceRef {
        kind,
        name: name.to_string(),
        file: pos.file.to_string(),
        line: pos.line,
    }
}

pub fn changes(before: &Config, after: &Config) -> ResourceChanges {
    let mut out = ResourceChanges::default();
    diff_kind(
        "GlobalNetworkPolicy",
        &before.policies,
        &after.policies,
        |r| &r.name,
        |r| r.pos.clone(),
        |a, b| same_policy(a, b),
        &mut out,
    );
    // Staged policies never enforce (no verdict of `plan` depends on them), but they are resources
    // of the change all the same.
    diff_kind(
        "StagedGlobalNetworkPolicy",
        &before.staged,
        &after.staged,
        |r| &r.name,
        |r| r.pos.clone(),
        |a, b| a.staged == b.staged && same_policy(a, b),
        &mut out,
    );
    diff_kind(
        "Tier",
        &before.tiers,
        &after.tiers,
        |r| &r.name,
        |r| r.pos.clone().unwrap_or_default(),
        |a, b| a.order == b.order && a.default_action == b.default_action,
        &mut out,
    );
    diff_kind(
        "HostEndpoint",
        &before.host_endpoints,
        &after.host_endpoints,
        |r| &r.name,
        |r| r.pos.clone(),
        same_hep,
        &mut out,
    );
    diff_kind(
        "GlobalNetworkSet",
        &before.network_sets,
        &after.network_sets,
        |r| &r.name,
        |r| r.pos.clone(),
        |a, b| a.labels == b.labels && a.nets == b.nets,
        &mut out,
    );
    diff_kind(
        "FelixConfiguration",
        &before.felix,
        &after.felix,
        |r| &r.name,
        |r| r.pos.clone(),
        same_felix,
        &mut out,
    );
    diff_kind(
        "ConnectivityCheck",
        &before.checks,
        &after.checks,
        |r| &r.name,
        |r| r.pos.clone(),
        same_check,
        &mut out,
    );
    diff_kind(
        "ManagementAccess",
        &before.management,
        &after.management,
        |r| &r.name,
        |r| r.pos.clone(),
        same_management,
        &mut out,
    );
    for v in [&mut out.added, &mut out.removed, &mut out.changed] {
        v.sort();
    }
    out
}
