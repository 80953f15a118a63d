//! GlobalNetworkPolicy `spec` (spec §1.3) and its rules (§1.4–§1.6).

use ipnet::IpNet;

use crate::config::model::{
    proto, Action, At, EntityRule, GlobalNetworkPolicy, IcmpMatch, Labels, NamespaceScope, Port,
    Pos, Rule, StagedAction, DEFAULT_TIER,
};
use crate::config::yaml::{Node, Value};
use crate::selector::Selector;

use super::fields::{boolean, bounded_list, integer, list, number, object, string, Cx};
use super::meta::{check_annotations, Meta};
use super::net::rule_net;
use super::sel::selector;

const SPEC_FIELDS: &[&str] = &[
    "order",
    "selector",
    "namespaceSelector",
    "serviceAccountSelector",
    "types",
    "ingress",
    "egress",
    "doNotTrack",
    "preDNAT",
    "applyOnForward",
    "performanceHints",
    "tier",
];

/// Calico's CRD limits.
const MAX_RULES: usize = 1024;
const MAX_NETS: usize = 256;
const MAX_PORTS: usize = 50;

pub(crate) fn policy(
    cx: &mut Cx,
    resource: &Node,
    meta: Meta,
    spec: Option<&Node>,
) -> GlobalNetworkPolicy {
    let pos = cx.pos(resource);
    let empty = Node {
        value: Value::Null,
        line: resource.line,
        column: resource.column,
        span: None,
    };
    let spec = object(
        cx,
        spec.unwrap_or(&empty),
        "a GlobalNetworkPolicy spec",
        SPEC_FIELDS,
    );
    let Some(spec) = spec else {
        return empty_policy(meta, pos);
    };
    policy_spec(cx, meta, pos, &spec)
}

/// A StagedGlobalNetworkPolicy (Calico 3.30+, `libcalico-go` validator): the GlobalNetworkPolicy spec
/// and `stagedAction`, `Set` (the default) or `Delete`. With `Set` the spec is validated as a
/// GlobalNetworkPolicy's; with `Delete` every field but `tier` must be empty.
pub(crate) fn staged_policy(
    cx: &mut Cx,
    resource: &Node,
    meta: Meta,
    spec: Option<&Node>,
) -> GlobalNetworkPolicy {
    let pos = cx.pos(resource);
    let empty = Node {
        value: Value::Null,
        line: resource.line,
        column: resource.column,
        span: None,
    };
    let mut fields = SPEC_FIELDS.to_vec();
    fields.push("stagedAction");
    let Some(spec) = object(
        cx,
        spec.unwrap_or(&empty),
        "a StagedGlobalNetworkPolicy spec",
        &fields,
    ) else {
        let mut p = empty_policy(meta, pos);
        p.staged = Some(StagedAction::Set);
        return p;
    };
    let action = match spec.get("stagedAction") {
        None => StagedAction::Set,
        Some(node) => match string(cx, node, "stagedAction") {
            Some("Set") | Some("") | None => StagedAction::Set,
            Some("Delete") => StagedAction::Delete,
            Some(other) => {
                let hint = match other.to_ascii_lowercase().as_str() {
                    "set" => ": write `Set`",
                    "delete" => ": write `Delete`",
                    _ => "",
                };
                cx.error(
                    node,
                    format!("`stagedAction` is `Set` or `Delete`, not `{other}`{hint}"),
                );
                StagedAction::Set
            }
        },
    };
    if action == StagedAction::Delete {
        for (key, value) in spec.entries() {
            let name = key.as_str();
            if name == "tier" || name == "stagedAction" || is_zero(value) {
                continue;
            }
            let at = cx.key_pos(key);
            cx.error_at(
                at,
                format!("a StagedGlobalNetworkPolicy with `stagedAction: Delete` stages the removal of the GlobalNetworkPolicy of its name and takes no `{name}`: remove it (every field but `tier` must be empty, as Calico requires)"),
            );
        }
        let tier = spec.get("tier").map(|node| At {
            value: super::tier::policy_tier(cx, node).unwrap_or_else(|| DEFAULT_TIER.to_owned()),
            pos: cx.pos(node),
        });
        let mut p = empty_policy(meta, pos);
        if let Some(t) = tier {
            p.tier = t;
        }
        p.staged = Some(StagedAction::Delete);
        return p;
    }
    let mut p = policy_spec(cx, meta, pos, &spec);
    p.staged = Some(StagedAction::Set);
    p
}

/// Calico's zero value: absent, null, `false`, `""`, `[]`, `{}`.
fn is_zero(node: &Node) -> bool {
    match &node.value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Str(s) => s.is_empty(),
        Value::Seq(s) => s.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Invalid => false,
    }
}

/// The spec of a GlobalNetworkPolicy (or of a staged one), its fields already checked.
fn policy_spec(
    cx: &mut Cx,
    meta: Meta,
    pos: Pos,
    spec: &super::fields::Obj,
) -> GlobalNetworkPolicy {
    // Tiers spec §2: omitted or empty is `default`; whether the tier exists is checked once every
    // file is read (`tier::check_policy_tiers`).
    let tier = match spec.get("tier") {
        Some(node) => At {
            value: super::tier::policy_tier(cx, node).unwrap_or_else(|| DEFAULT_TIER.to_owned()),
            pos: cx.pos(node),
        },
        None => At {
            value: DEFAULT_TIER.to_owned(),
            pos: pos.clone(),
        },
    };
    if let Some(hints) = spec.get("performanceHints") {
        performance_hints(cx, hints);
    }
    let order = spec.get("order").and_then(|n| number(cx, n, "order"));
    let selector_at = match spec.get("selector") {
        Some(node) => selector(cx, node, "selector", false).ok().flatten(),
        None => None,
    }
    .unwrap_or_else(|| At {
        value: Selector::all(),
        pos: pos.clone(),
    });
    let namespace_selector = workload_selector(cx, spec, "namespaceSelector");
    let service_account_selector = workload_selector(cx, spec, "serviceAccountSelector");
    let ingress = spec
        .get("ingress")
        .map(|n| rules(cx, n, "ingress"))
        .unwrap_or_default();
    let egress = spec
        .get("egress")
        .map(|n| rules(cx, n, "egress"))
        .unwrap_or_default();
    let types = spec.get("types").and_then(|n| types(cx, n));
    let flag = |cx: &mut Cx, name: &str| {
        spec.get(name)
            .and_then(|n| boolean(cx, n, name))
            .unwrap_or(false)
    };
    let do_not_track = flag(cx, "doNotTrack");
    let pre_dnat = flag(cx, "preDNAT");
    let apply_on_forward = flag(cx, "applyOnForward");

    // Types inference (spec §1.3): egress rules present ⇒ Egress, plus Ingress if there are ingress
    // rules too; otherwise Ingress (a policy with no rules at all included).
    let (ingress_type, egress_type) =
        types.unwrap_or((!ingress.is_empty() || egress.is_empty(), !egress.is_empty()));

    let policy = GlobalNetworkPolicy {
        name: meta.name.value,
        pos,
        tier,
        order,
        selector: selector_at,
        namespace_selector,
        service_account_selector,
        ingress_type,
        egress_type,
        ingress,
        egress,
        do_not_track,
        pre_dnat,
        apply_on_forward,
        staged: None,
    };
    cross_checks(cx, spec, &policy);
    policy
}

fn empty_policy(meta: Meta, pos: Pos) -> GlobalNetworkPolicy {
    GlobalNetworkPolicy {
        name: meta.name.value,
        pos: pos.clone(),
        tier: At {
            value: DEFAULT_TIER.to_owned(),
            pos: pos.clone(),
        },
        order: None,
        selector: At {
            value: Selector::all(),
            pos,
        },
        namespace_selector: None,
        service_account_selector: None,
        ingress_type: true,
        egress_type: false,
        ingress: Vec::new(),
        egress: Vec::new(),
        do_not_track: false,
        pre_dnat: false,
        apply_on_forward: false,
        staged: None,
    }
}

/// The CEL rules between fields (spec §1.3), plus lints for rules that can never take effect.
fn cross_checks(cx: &mut Cx, spec: &super::fields::Obj, p: &GlobalNetworkPolicy) {
    let at = |cx: &Cx, name: &str| {
        spec.entry(name)
            .map(|(k, _)| cx.key_pos(k))
            .unwrap_or_else(|| p.pos.clone())
    };
    if p.pre_dnat && p.do_not_track {
        let pos = at(cx, "preDNAT");
        cx.error_at(pos, "`preDNAT` and `doNotTrack` cannot both be true");
    }
    if p.pre_dnat
        && spec
            .get("egress")
            .is_some_and(|e| !matches!(&e.value, Value::Seq(s) if s.is_empty()))
    {
        let pos = at(cx, "egress");
        cx.error_at(
            pos,
            "a preDNAT policy cannot have egress rules: preDNAT applies to ingress only",
        );
    }
    if p.pre_dnat && p.egress_type && spec.has("types") {
        let pos = at(cx, "types");
        cx.error_at(
            pos,
            "a preDNAT policy cannot have `Egress` in `types`: preDNAT applies to ingress only",
        );
    }
    for (flag, on) in [("preDNAT", p.pre_dnat), ("doNotTrack", p.do_not_track)] {
        if on && !p.apply_on_forward {
            let pos = at(cx, flag);
            cx.error_at(
                pos,
                format!("a `{flag}: true` policy also needs `applyOnForward: true`"),
            );
        }
    }
    for (field, present, typed, name) in [
        ("ingress", !p.ingress.is_empty(), p.ingress_type, "Ingress"),
        ("egress", !p.egress.is_empty(), p.egress_type, "Egress"),
    ] {
        if present && !typed && !(field == "egress" && p.pre_dnat) {
            let pos = at(cx, field);
            cx.warn_at(
                pos,
                format!("the {field} rules are ignored: `types` does not contain `{name}`"),
            );
        }
    }
}

/// `namespaceSelector` / `serviceAccountSelector` at the policy level: tests on labels host endpoints
/// never have, so anything but a purely negative selector keeps the policy off every host endpoint.
fn workload_selector(cx: &mut Cx, spec: &super::fields::Obj, field: &str) -> Option<At<Selector>> {
    let node = spec.get(field)?;
    let sel = selector(cx, node, field, false).ok().flatten()?;
    let hits_nothing =
        (field == "namespaceSelector" && sel.value.is_all()) || !sel.value.matches(&Labels::new());
    if hits_nothing {
        cx.warn(
            node,
            format!("`{field}` never matches a host endpoint (host endpoints have no namespace or service account): this policy applies to no host endpoint"),
        );
    }
    Some(sel)
}

/// `types`: `Ingress` and/or `Egress`, no duplicates. `None`: empty or absent, so inferred.
fn types(cx: &mut Cx, node: &Node) -> Option<(bool, bool)> {
    let items = list(cx, node, "types")?;
    let (mut ingress, mut egress) = (false, false);
    for item in items {
        let Some(t) = string(cx, item, "types") else {
            continue;
        };
        let slot = match t {
            "Ingress" => &mut ingress,
            "Egress" => &mut egress,
            _ => {
                let hint = match t.to_ascii_lowercase().as_str() {
                    "ingress" => ": write `Ingress`",
                    "egress" => ": write `Egress`",
                    _ => "",
                };
                cx.error(
                    item,
                    format!("unknown type `{t}`: `types` takes `Ingress` and `Egress`{hint}"),
                );
                continue;
            }
        };
        if *slot {
            cx.error(item, format!("`{t}` is listed twice in `types`"));
        }
        *slot = true;
    }
    (ingress || egress).then_some((ingress, egress))
}

fn performance_hints(cx: &mut Cx, node: &Node) {
    let Some(items) = list(cx, node, "performanceHints") else {
        return;
    };
    let mut seen = false;
    for item in items {
        match string(cx, item, "performanceHints") {
            Some("AssumeNeededOnEveryNode") if seen => {
                cx.error(item, "`AssumeNeededOnEveryNode` is listed twice")
            }
            Some("AssumeNeededOnEveryNode") => seen = true,
            Some(other) => cx.error(
                item,
                format!(
                    "unknown performance hint `{other}`: the only one is `AssumeNeededOnEveryNode`"
                ),
            ),
            None => {}
        }
    }
}

fn rules(cx: &mut Cx, node: &Node, field: &str) -> Vec<Rule> {
    let Some(items) = bounded_list(cx, node, field, MAX_RULES) else {
        return Vec::new();
    };
    // A rule is ~700 bytes and most policies have one or two: the list is made at its size (a
    // collected Vec starts at 4, then shrinking it copies it), spare capacity only after an error.
    let mut rules: Vec<Rule> = Vec::with_capacity(items.len());
    rules.extend(items.iter().filter_map(|item| rule(cx, item)));
    rules.shrink_to_fit();
    rules
}

const RULE_FIELDS: &[&str] = &[
    "action",
    "protocol",
    "notProtocol",
    "icmp",
    "notICMP",
    "ipVersion",
    "source",
    "destination",
    "http",
    "metadata",
];

/// Where in a rule the cross-field checks point.
struct RuleParts<'n> {
    /// Every net of the rule (both entity rules, nets and notNets) with its node.
    nets: Vec<(&'n Node, IpNet)>,
    /// Port entries (ports and notPorts of both sides) with their node.
    ports: Vec<(&'n Node, Port)>,
}

fn rule(cx: &mut Cx, node: &Node) -> Option<Rule> {
    let obj = object(cx, node, "a rule", RULE_FIELDS)?;
    let action = match obj.get("action") {
        Some(a) => action(cx, a),
        None => {
            cx.error(node, "a rule needs an `action`: Allow, Deny, Log or Pass");
            None
        }
    };
    let protocol = obj
        .get("protocol")
        .and_then(|n| decode_protocol(cx, n, "protocol"));
    let not_protocol = obj
        .get("notProtocol")
        .and_then(|n| decode_protocol(cx, n, "notProtocol"));
    let icmp = obj.get("icmp").and_then(|n| decode_icmp(cx, n, "icmp"));
    let not_icmp = obj
        .get("notICMP")
        .and_then(|n| decode_icmp(cx, n, "notICMP"));
    let ip_version = obj.get("ipVersion").and_then(|n| ip_version(cx, n));
    if let Some((key, _)) = obj.entry("http") {
        let pos = cx.key_pos(key);
        cx.error_at(
            pos,
            "`http` matches have no meaning for host endpoints (Felix enforces them only for workloads, through a sidecar): remove `http`",
        );
    }
    if let Some(meta) = obj.get("metadata") {
        if let Some(m) = object(cx, meta, "rule metadata", &["annotations"]) {
            if let Some(a) = m.get("annotations") {
                check_annotations(cx, a);
            }
        }
    }
    let mut parts = RuleParts {
        nets: Vec::new(),
        ports: Vec::new(),
    };
    let source = obj
        .get("source")
        .map(|n| entity(cx, n, "source", &mut parts))
        .unwrap_or_default();
    let destination = obj
        .get("destination")
        .map(|n| entity(cx, n, "destination", &mut parts))
        .unwrap_or_default();

    // Each cross-field check runs unless a field it depends on failed (and was reported already).
    let facts = RuleFacts {
        pos: cx.pos(node),
        protocol,
        not_protocol,
        ip_version,
        protocol_ok: obj.get("protocol").is_none() || protocol.is_some(),
    };
    rule_checks(cx, &obj, &facts, &parts);
    Some(Rule {
        pos: facts.pos,
        action: action?,
        protocol,
        not_protocol,
        icmp,
        not_icmp,
        ip_version,
        source,
        destination,
    })
}

/// What the cross-field checks need to know about a rule.
struct RuleFacts {
    pos: Pos,
    protocol: Option<u8>,
    not_protocol: Option<u8>,
    ip_version: Option<u8>,
    /// `protocol` is absent or decoded (not: written but invalid).
    protocol_ok: bool,
}

fn action(cx: &mut Cx, node: &Node) -> Option<Action> {
    let text = string(cx, node, "action")?;
    let action = match text {
        "Allow" => Action::Allow,
        "Deny" => Action::Deny,
        "Log" => Action::Log,
        "Pass" => Action::Pass,
        _ => {
            let known = ["Allow", "Deny", "Log", "Pass"];
            let hint = match known.iter().find(|k| k.eq_ignore_ascii_case(text)) {
                Some(k) => format!(" (actions are case-sensitive: write `{k}`)"),
                None => String::new(),
            };
            cx.error(
                node,
                format!("unknown action `{text}`{hint}; use Allow, Deny, Log or Pass"),
            );
            return None;
        }
    };
    Some(action)
}

const PROTOCOL_NAMES: &[(&str, u8)] = &[
    ("TCP", proto::TCP),
    ("UDP", proto::UDP),
    ("ICMP", proto::ICMP),
    ("ICMPv6", proto::ICMPV6),
    ("SCTP", proto::SCTP),
    ("UDPLite", proto::UDPLITE),
];

/// The protocol's name for messages (`TCP`, or the number).
pub(crate) fn protocol_name(p: u8) -> String {
    PROTOCOL_NAMES
        .iter()
        .find(|(_, n)| *n == p)
        .map_or_else(|| p.to_string(), |(name, _)| (*name).to_owned())
}

/// A rule protocol: a case-sensitive name or 1-255 (spec §1.4, §1.6).
fn decode_protocol(cx: &mut Cx, node: &Node, field: &str) -> Option<u8> {
    let out_of_range = |cx: &mut Cx, v: &str| {
        cx.error(node, format!("`{field}` must be 1-255 or a name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite), not {v}"));
        None
    };
    match &node.value {
        Value::Int(_) | Value::UInt(_) => {
            let v = integer(cx, node, field, i128::MIN, i128::MAX)?;
            match u8::try_from(v) {
                Ok(p) if p > 0 => Some(p),
                _ => out_of_range(cx, &v.to_string()),
            }
        }
        Value::Str(s) => {
            if let Ok(p) = s.parse::<u8>() {
                return if p > 0 { Some(p) } else { out_of_range(cx, s) };
            }
            if let Some((_, p)) = PROTOCOL_NAMES.iter().find(|(name, _)| name == s) {
                return Some(*p);
            }
            match PROTOCOL_NAMES.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)) {
                Some((name, _)) => {
                    cx.error(node, format!("protocol names are case-sensitive: write `{field}: {name}`, not `{s}`"))
                }
                None => cx.error(
                    node,
                    format!("unknown protocol `{s}`: use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255"),
                ),
            }
            None
        }
        _ => {
            string(cx, node, field);
            None
        }
    }
}

fn decode_icmp(cx: &mut Cx, node: &Node, field: &str) -> Option<IcmpMatch> {
    let obj = object(cx, node, &format!("`{field}`"), &["type", "code"])?;
    let icmp_type = obj.get("type").and_then(|n| integer(cx, n, "type", 0, 254));
    let code = obj.get("code").and_then(|n| integer(cx, n, "code", 0, 255));
    if let (None, Some((key, _))) = (obj.get("type"), obj.entry("code")) {
        let pos = cx.key_pos(key);
        cx.error_at(pos, format!("`{field}.code` needs a `type` as well"));
        return None;
    }
    let icmp_type = u8::try_from(icmp_type?).ok()?;
    Some(IcmpMatch {
        icmp_type,
        code: code.and_then(|c| u8::try_from(c).ok()),
    })
}

fn ip_version(cx: &mut Cx, node: &Node) -> Option<u8> {
    match integer(cx, node, "ipVersion", 0, 255)? {
        4 => Some(4),
        6 => Some(6),
        other => {
            cx.error(node, format!("`ipVersion` must be 4 or 6, not {other}"));
            None
        }
    }
}

/// The checks between a rule's fields (spec §1.4).
fn rule_checks(cx: &mut Cx, obj: &super::fields::Obj, rule: &RuleFacts, parts: &RuleParts) {
    let key_pos = |cx: &Cx, name: &str| {
        obj.entry(name)
            .map(|(k, _)| cx.key_pos(k))
            .unwrap_or_else(|| rule.pos.clone())
    };
    let is_icmp = |p: Option<u8>| matches!(p, Some(proto::ICMP) | Some(proto::ICMPV6));
    for field in ["icmp", "notICMP"] {
        if obj.has(field) && rule.protocol_ok && !is_icmp(rule.protocol) {
            let pos = key_pos(cx, field);
            cx.error_at(
                pos,
                format!("`{field}` needs `protocol: ICMP` or `protocol: ICMPv6`"),
            );
        }
    }
    for (field, p) in [
        ("protocol", rule.protocol),
        ("notProtocol", rule.not_protocol),
    ] {
        let clash = match (p, rule.ip_version) {
            (Some(proto::ICMP), Some(6)) => Some(("ICMP", "4")),
            (Some(proto::ICMPV6), Some(4)) => Some(("ICMPv6", "6")),
            _ => None,
        };
        if let Some((name, wanted)) = clash {
            let pos = key_pos(cx, field);
            cx.error_at(
                pos,
                format!("`{field}: {name}` needs `ipVersion: {wanted}` (or no ipVersion)"),
            );
        }
    }
    if rule.protocol_ok {
        port_checks(cx, rule, parts, key_pos(cx, "protocol"));
    }
    net_checks(cx, rule, parts);
}

/// Ports need a protocol that has ports (spec §1.4 "Port/protocol coupling").
fn port_checks(cx: &mut Cx, rule: &RuleFacts, parts: &RuleParts, protocol_pos: Pos) {
    match rule.protocol {
        None => {
            if let Some((node, _)) = parts
                .ports
                .iter()
                .find(|(_, p)| matches!(p, Port::Range(..)))
            {
                let raw = cx.raw(node);
                cx.error(
                    node,
                    format!("numeric port `{raw}` needs a protocol: add `protocol: TCP` (or UDP, SCTP) to the rule; only named ports work without one"),
                );
            }
        }
        Some(proto::TCP | proto::UDP | proto::SCTP) => {}
        Some(p) if !parts.ports.is_empty() => {
            let why = if p == proto::UDPLITE {
                " (Calico does not allow ports with UDPLite)"
            } else {
                ""
            };
            cx.error_at(
                protocol_pos,
                format!(
                    "`protocol: {}` cannot be used with ports{why}: ports need TCP, UDP or SCTP",
                    protocol_name(p)
                ),
            );
        }
        Some(_) => {}
    }
}

/// Address family consistency and catch-all notNets (spec §1.4 "Nets, per rule").
fn net_checks(cx: &mut Cx, rule: &RuleFacts, parts: &RuleParts) {
    if let Some(version) = rule.ip_version {
        for (node, net) in &parts.nets {
            let net_version = if matches!(net, IpNet::V4(_)) { 4 } else { 6 };
            if net_version != version {
                cx.error(
                    node,
                    format!("`{net}` is IPv{net_version}, but the rule has `ipVersion: {version}`"),
                );
                return;
            }
        }
    }
    let first_v4 = parts.nets.iter().find(|(_, n)| matches!(n, IpNet::V4(_)));
    let first_v6 = parts.nets.iter().find(|(_, n)| matches!(n, IpNet::V6(_)));
    if let (Some((n4, net4)), Some((n6, net6))) = (first_v4, first_v6) {
        let later = if (n4.line, n4.column) > (n6.line, n6.column) {
            n4
        } else {
            n6
        };
        cx.error(
            later,
            format!("a rule cannot mix IPv4 and IPv6 networks (`{net4}` and `{net6}`): split it into one rule per family"),
        );
    }
}

const ENTITY_FIELDS: &[&str] = &[
    "nets",
    "notNets",
    "selector",
    "notSelector",
    "namespaceSelector",
    "ports",
    "notPorts",
    "serviceAccounts",
    "services",
];

/// A rule's `source` or `destination` (spec §1.5).
fn entity<'n>(cx: &mut Cx, node: &'n Node, side: &str, parts: &mut RuleParts<'n>) -> EntityRule {
    let mut out = EntityRule::default();
    let what = if side == "source" {
        "`source`"
    } else {
        "`destination`"
    };
    let Some(obj) = object(cx, node, what, ENTITY_FIELDS) else {
        return out;
    };
    out.nets = nets(cx, obj.get("nets"), "nets", parts);
    out.not_nets = nets(cx, obj.get("notNets"), "notNets", parts);
    out.selector = obj
        .get("selector")
        .and_then(|n| selector(cx, n, "selector", false).ok().flatten());
    out.not_selector = obj
        .get("notSelector")
        .and_then(|n| selector(cx, n, "notSelector", false).ok().flatten());
    if let Some(n) = obj.get("namespaceSelector") {
        out.namespace_scope = namespace_scope(cx, n, side);
    }
    out.ports = ports(cx, obj.get("ports"), "ports", parts);
    out.not_ports = ports(cx, obj.get("notPorts"), "notPorts", parts);
    if let Some(n) = obj.get("serviceAccounts") {
        service_accounts(cx, n);
        out.service_accounts = true;
    }
    if let Some((key, _)) = obj.entry("services") {
        let pos = cx.key_pos(key);
        cx.error_at(
            pos,
            "`services` matches Kubernetes Services, which do not exist for hostpolicyd: remove it and match with `nets` or `selector`",
        );
    }
    out
}

fn nets<'n>(
    cx: &mut Cx,
    node: Option<&'n Node>,
    field: &str,
    parts: &mut RuleParts<'n>,
) -> Vec<IpNet> {
    let Some(items) = node.and_then(|n| bounded_list(cx, n, field, MAX_NETS)) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(net) = rule_net(cx, item, field) else {
            continue;
        };
        if field == "notNets" && net.prefix_len() == 0 {
            let (family, version) = if matches!(net, IpNet::V4(_)) {
                ("IPv4", 6)
            } else {
                ("IPv6", 4)
            };
            cx.error(
                item,
                format!("`notNets: [{net}]` excludes every {family} address, so the rule matches only IPv{version} traffic (older Felix crashed on it, calicoctl rejects it): write `ipVersion: {version}` instead"),
            );
            continue;
        }
        parts.nets.push((item, net));
        out.push(net);
    }
    out
}

fn namespace_scope(cx: &mut Cx, node: &Node, side: &str) -> NamespaceScope {
    match selector(cx, node, "namespaceSelector", true) {
        Ok(None) | Err(()) => NamespaceScope::Any,
        Ok(Some(sel)) if sel.value.is_global() => NamespaceScope::Global,
        Ok(Some(sel)) if sel.value.contains_global() => {
            cx.error(node, "`global()` cannot be combined with anything else in `namespaceSelector`: write `namespaceSelector: global()` alone");
            NamespaceScope::Any
        }
        Ok(Some(_)) => {
            cx.warn(
                node,
                format!("a `namespaceSelector` other than `global()` limits the {side} to namespaced workloads and network sets, which do not exist for hostpolicyd: it matches no address"),
            );
            NamespaceScope::Namespaced
        }
    }
}

fn service_accounts(cx: &mut Cx, node: &Node) {
    if let Some(obj) = object(cx, node, "`serviceAccounts`", &["names", "selector"]) {
        if let Some(names) = obj.get("names").and_then(|n| list(cx, n, "names")) {
            for name in names {
                string(cx, name, "names");
            }
        }
        if let Some(sel) = obj.get("selector") {
            let _ = selector(cx, sel, "selector", false);
        }
    }
    cx.warn(node, "`serviceAccounts` only matches Kubernetes workloads, never a host address: this rule matches no host traffic");
}

fn ports<'n>(
    cx: &mut Cx,
    node: Option<&'n Node>,
    field: &str,
    parts: &mut RuleParts<'n>,
) -> Vec<Port> {
    let Some(items) = node.and_then(|n| bounded_list(cx, n, field, MAX_PORTS)) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(port) = port(cx, item) {
            parts.ports.push((item, port.clone()));
            out.push(port);
        }
    }
    out
}

/// One `ports` entry: `80`, `"80"`, `"8000:8080"` or a port name (spec §1.6).
fn port(cx: &mut Cx, node: &Node) -> Option<Port> {
    let text = match &node.value {
        Value::Int(_) | Value::UInt(_) => {
            let p = integer(cx, node, "port", 1, 65535)?;
            let p = u16::try_from(p).ok()?;
            return Some(Port::Range(p, p));
        }
        Value::Str(s) => s.as_str(),
        Value::Invalid => {
            cx.already_reported();
            return None;
        }
        _ => {
            cx.error(
                node,
                format!(
                    "a port must be a number, a range such as \"8000:8080\" or a name, not {}",
                    node.kind()
                ),
            );
            return None;
        }
    };
    if let Some(port) = numeric_port(cx, node, text) {
        return port;
    }
    named_port(cx, node, text)
}

/// `Some(result)` when `text` is written as a number or a range.
fn numeric_port(cx: &mut Cx, node: &Node, text: &str) -> Option<Option<Port>> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parse = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .and_then(|p| u16::try_from(p).ok())
    };
    if digits(text) {
        let Some(p) = parse(text) else {
            cx.error(
                node,
                format!("port `{text}` is out of range: ports are 1-65535"),
            );
            return Some(None);
        };
        return Some(Some(Port::Range(p, p)));
    }
    if let Some((lo, hi)) = text.split_once(':') {
        if digits(lo) && digits(hi) {
            let (Some(lo), Some(hi)) = (parse(lo), parse(hi)) else {
                cx.error(
                    node,
                    format!("port range `{text}` is out of range: ports are 1-65535"),
                );
                return Some(None);
            };
            if lo > hi {
                cx.error(
                    node,
                    format!("port range `{text}` is backwards: write \"{hi}:{lo}\""),
                );
                return Some(None);
            }
            return Some(Some(Port::Range(lo, hi)));
        }
    }
    if let Some((lo, hi)) = text.split_once('-') {
        // Calico would take `80-90` as a port *name*, which no endpoint can have (names need a letter).
        if digits(lo) && digits(hi) {
            cx.error(node, format!("`{text}` is not a port range (it would be read as a port name): write \"{lo}:{hi}\""));
            return Some(None);
        }
    }
    None
}

fn named_port(cx: &mut Cx, node: &Node, name: &str) -> Option<Port> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        cx.error(
            node,
            format!("`{name}` is not a valid port: write a number (80), a range (\"8000:8080\") or a port name (`A-Z a-z 0-9 _ . -`)"),
        );
        return None;
    }
    if !super::hep::is_port_name(name) {
        // Calico's validator checks a rule's port names with Kubernetes' IsValidPortName.
        let lower = name.to_ascii_lowercase().replace('_', "-");
        let hint = if lower != name && super::hep::is_port_name(&lower) {
            format!("; e.g. `{lower}`")
        } else {
            String::new()
        };
        cx.error(
            node,
            format!("named port `{name}` is not valid: port names are 1-15 characters of `a-z 0-9 -` with at least one letter, no `-` at either end or twice in a row (Kubernetes port names, as Calico checks them){hint}"),
        );
        return None;
    }
    Some(Port::Named(name.to_owned()))
}
