//! `plan`'s text output: resources, ruleset changes, then the verdict changes grouped per node and
//! interface, one line per region.

use std::fmt::Write as _;

use super::space::{cidrs, net_range, Fam, Set};
use super::{DecidedBy, Plan, Region};
use crate::ruleset::Kind;

/// Longest list written out in full on a line; longer ones end with `(+N more)` (`--json` has all).
const LIST_MAX: usize = 6;
/// Most ruleset changes listed per kind.
const CHANGES_MAX: usize = 20;

fn list(v: &[String]) -> String {
    if v.len() <= LIST_MAX {
        return v.join(",");
    }
    format!("{} (+{} more)", v[..LIST_MAX].join(","), v.len() - LIST_MAX)
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Addresses for reading: `any`, `any IPv4 except A,B`, or the list, per family.
fn addrs(v: &[String]) -> String {
    let mut parts = Vec::new();
    for (fam, name) in [(Fam::V4, "IPv4"), (Fam::V6, "IPv6")] {
        let nets: Vec<ipnet::IpNet> = v
            .iter()
            .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
            .filter(|n| Fam::of_net(n) == fam)
            .collect();
        if nets.is_empty() {
            continue;
        }
        let set = Set::from_ranges(nets.iter().map(net_range).collect());
        let mut rest = Vec::new();
        for &(lo, hi) in set.complement(fam.addr_max()).ranges() {
            cidrs(fam, lo, hi, &mut rest);
        }
        parts.push(if rest.is_empty() {
            format!("any {name}")
        } else if rest.len() < nets.len() {
            let rest: Vec<String> = rest.iter().map(|n| n.to_string()).collect();
            format!("any {name} except {}", list(&rest))
        } else {
            list(&nets.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        });
    }
    if parts == ["any IPv4", "any IPv6"] {
        return "any".into();
    }
    parts.join(" and ")
}

/// Ports (or ICMP types) for reading: the list, or `any except ...` when that is shorter.
fn ports(v: &[String]) -> String {
    let ranges: Vec<(u128, u128)> = v
        .iter()
        .filter_map(|e| match e.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => e.parse().ok().map(|n| (n, n)),
        })
        .collect();
    if ranges.len() != v.len() || v.len() <= 2 {
        return list(v);
    }
    let set = Set::from_ranges(ranges);
    let rest: Vec<String> = set
        .complement(65535)
        .ranges()
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if rest.len() < v.len() {
        format!("any except {}", list(&rest))
    } else {
        list(v)
    }
}

/// What decided, in a few words.
pub fn decided(d: &DecidedBy) -> String {
    let stage = if d.stage == "normal" {
        String::new()
    } else {
        format!("{} ", d.stage)
    };
    match d.kind {
        Kind::Policy => {
            // Rules are named counting from 1 for people (the JSON keeps the 0-based index).
            let rule = match (d.direction, d.rule) {
                (Some(dir), Some(i)) => crate::ruleset::rule_name(dir, i as usize),
                _ => "rule ?".to_string(),
            };
            let mut s = format!(
                "{stage}policy {} {rule}",
                d.policy.as_deref().unwrap_or("?")
            );
            if let (Some(f), Some(l)) = (&d.file, d.line) {
                let _ = write!(s, " ({f}:{l})");
            }
            s
        }
        Kind::EndOfTier => format!(
            "{stage}end of tier {}",
            d.tier.as_deref().unwrap_or("default")
        ),
        Kind::NoPolicy if d.stage == "forward" => {
            "no applyOnForward policy decided (forwarding allowed)".into()
        }
        Kind::NoPolicy => "no policy or profile allowed (default deny)".into(),
        Kind::Failsafe => "failsafe port".into(),
        Kind::Profile => "profile projectcalico-default-allow".into(),
        Kind::Dispatch => "not policed".into(),
        Kind::Conntrack => "conntrack".into(),
        Kind::Tier | Kind::Structure => "?".into(),
    }
}

fn iface(name: &Option<String>, hep: &Option<String>) -> String {
    let name = match name {
        Some(n) if n == "*" => "every other interface".to_string(),
        Some(n) => n.clone(),
        None => "interfaces with its expectedIPs".to_string(),
    };
    match hep {
        Some(h) => format!("{name} (HostEndpoint {h})"),
        None => format!("{name} (no HostEndpoint)"),
    }
}

/// One region on one line (without its node and interface; forwarded: `outs` says where to).
pub fn region_line(r: &Region, outs: &[String]) -> String {
    let mut s = String::from(r.direction);
    if r.direction == "forward" {
        let _ = write!(s, " out {}", outs.join(", "));
    }
    let _ = write!(s, " {}", r.proto);
    if !r.not_proto.is_empty() {
        let _ = write!(s, " except {}", list(&r.not_proto));
    }
    let _ = write!(s, " from {} to {}", addrs(&r.src), addrs(&r.dst));
    if let Some(p) = &r.sport {
        let _ = write!(s, " sport {}", ports(p));
    }
    if let Some(p) = &r.dport {
        let _ = write!(s, " dport {}", ports(p));
    }
    if let Some(t) = &r.icmp {
        let _ = write!(s, " type {}", list(t));
    }
    let _ = write!(
        s,
        ": {} -> {} by {} (was {})",
        r.before.to_uppercase(),
        r.after.to_uppercase(),
        decided(&r.after_decided_by),
        decided(&r.before_decided_by)
    );
    s
}

pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan for {} {}, compared with {}",
        if plan.nodes.len() == 1 {
            "node"
        } else {
            "nodes"
        },
        plan.nodes.join(", "),
        plan.compared_with
    );
    let res = &plan.resources;
    if res.is_empty() {
        let _ = writeln!(out, "resources: no changes");
    } else {
        let _ = writeln!(out, "resources:");
        for (what, v) in [
            ("added", &res.added),
            ("changed", &res.changed),
            ("removed", &res.removed),
        ] {
            for r in v {
                let _ = writeln!(
                    out,
                    "  {what:<8} {} {} ({}:{})",
                    r.kind, r.name, r.file, r.line
                );
            }
        }
    }
    for rs in &plan.ruleset_changes {
        if rs.is_empty() {
            let _ = writeln!(out, "ruleset of {}: no changes", rs.node);
            continue;
        }
        let _ = writeln!(
            out,
            "ruleset of {}: chains +{} -{}, rules +{} -{}, sets +{} -{}, set elements +{} -{}",
            rs.node,
            rs.chains_added.len(),
            rs.chains_removed.len(),
            rs.rules_added.len(),
            rs.rules_removed.len(),
            rs.sets_added.len(),
            rs.sets_removed.len(),
            rs.elements_added.len(),
            rs.elements_removed.len()
        );
        let mut lines: Vec<String> = Vec::new();
        lines.extend(rs.chains_added.iter().map(|c| format!("+ chain {c}")));
        lines.extend(rs.chains_removed.iter().map(|c| format!("- chain {c}")));
        lines.extend(
            rs.rules_added
                .iter()
                .map(|r| format!("+ rule in {}: {}", r.chain, r.rule)),
        );
        lines.extend(
            rs.rules_removed
                .iter()
                .map(|r| format!("- rule in {}: {}", r.chain, r.rule)),
        );
        lines.extend(rs.sets_added.iter().map(|c| format!("+ set {c}")));
        lines.extend(rs.sets_removed.iter().map(|c| format!("- set {c}")));
        lines.extend(
            rs.elements_added
                .iter()
                .map(|e| format!("+ element {} in set {}", e.element, e.set)),
        );
        lines.extend(
            rs.elements_removed
                .iter()
                .map(|e| format!("- element {} in set {}", e.element, e.set)),
        );
        lines.extend(rs.maps_changed.iter().map(|m| format!("~ map {m}")));
        let n = lines.len();
        for l in lines.iter().take(CHANGES_MAX) {
            let _ = writeln!(out, "  {l}");
        }
        if n > CHANGES_MAX {
            let _ = writeln!(
                out,
                "  ... {} more (--json lists them all)",
                n - CHANGES_MAX
            );
        }
    }
    for l in &plan.lockout {
        let _ = writeln!(out, "{l}");
    }
    if plan.verdict_changes.is_empty() {
        let _ = writeln!(out, "no verdict changes");
        return out;
    }
    let _ = writeln!(
        out,
        "verdict changes: {}",
        plural(plan.verdict_changes.len(), "region")
    );
    // Per node and interface; forwarded regions that differ only in where they go out are one line.
    type Group<'a> = (&'a String, &'a Option<String>, &'a Option<String>);
    let mut lines: Vec<(Group, Region, Vec<String>)> = Vec::new();
    for r in &plan.verdict_changes {
        let g = (&r.node, &r.interface, &r.host_endpoint);
        let mut same = r.clone();
        same.out_interface = None;
        same.out_host_endpoint = None;
        let to = iface(&r.out_interface, &r.out_host_endpoint);
        match lines.iter_mut().find(|(lg, l, _)| *lg == g && *l == same) {
            Some((_, _, outs)) => outs.push(to),
            None => lines.push((g, same, vec![to])),
        }
    }
    let mut group = None;
    for (g, r, outs) in &lines {
        if group != Some(g) {
            let _ = writeln!(
                out,
                "  {} {}:",
                r.node,
                iface(&r.interface, &r.host_endpoint)
            );
            group = Some(g);
        }
        let _ = writeln!(out, "    {}", region_line(r, outs));
    }
    out
}
