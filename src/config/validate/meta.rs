//! `metadata`: names, labels and annotations (spec §1.2).

use crate::config::model::{At, Labels};
use crate::config::yaml::Node;

use super::fields::{object, string, string_map, Cx};

/// Which name rule applies (spec §1.2).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// DNS-1123 subdomain (HostEndpoint, GlobalNetworkSet, FelixConfiguration, ConnectivityCheck).
    Subdomain,
    /// DNS labels with at most one dot (GlobalNetworkPolicy).
    Policy,
    /// One DNS label, at most 63 characters: no dot (Tier, tiers spec §1).
    Tier,
}

pub(crate) struct Meta {
    pub name: At<String>,
    pub labels: Labels,
}

const METADATA_FIELDS: &[&str] = &[
    "name",
    "labels",
    "annotations",
    "namespace",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
];

/// Decode `metadata`; `None` when the name is missing or invalid (the resource cannot be kept).
pub(crate) fn metadata(
    cx: &mut Cx,
    resource: &Node,
    node: Option<&Node>,
    kind: &str,
    rule: NameRule,
) -> Option<Meta> {
    let Some(node) = node else {
        cx.error(
            resource,
            format!("{kind} has no `metadata`: add metadata: {{name: ...}}"),
        );
        return None;
    };
    let obj = object(cx, node, "metadata", METADATA_FIELDS)?;
    if let Some((key, _)) = obj.entry("namespace") {
        let pos = cx.key_pos(key);
        cx.error_at(
            pos,
            format!("{kind} is cluster-wide and has no namespace: remove `namespace`"),
        );
    }
    let labels = match obj.get("labels") {
        Some(labels) => decode_labels(cx, labels),
        None => Labels::new(),
    };
    if let Some(annotations) = obj.get("annotations") {
        check_annotations(cx, annotations);
    }
    let name = match obj.get("name") {
        Some(name_node) => {
            let name = string(cx, name_node, "name")?;
            check_name(cx, name_node, name, kind, rule).then(|| cx.at(name_node, name.to_owned()))
        }
        None => {
            cx.error(node, format!("{kind} has no `metadata.name`"));
            None
        }
    }?;
    Some(Meta { name, labels })
}

/// Check a resource name; reports and returns false when invalid.
pub(crate) fn check_name(cx: &mut Cx, node: &Node, name: &str, kind: &str, rule: NameRule) -> bool {
    let ok = match rule {
        NameRule::Subdomain => is_dns_subdomain(name),
        NameRule::Policy => is_policy_name(name),
        NameRule::Tier => is_tier_name(name),
    };
    if ok {
        return true;
    }
    let what = match rule {
        NameRule::Subdomain => "lowercase DNS names: `a-z`, `0-9`, `-` and `.`, starting and ending alphanumeric, at most 253 characters",
        NameRule::Policy => "lowercase DNS labels (`a-z`, `0-9`, `-`) with at most one `.`, at most 253 characters",
        NameRule::Tier => "one lowercase DNS label: `a-z`, `0-9` and `-`, starting and ending alphanumeric, no `.`, at most 63 characters",
    };
    let mut message = if name.is_empty() {
        format!("{kind} name is empty")
    } else {
        format!("{kind} name `{name}` is not valid: names are {what}")
    };
    let fixed = suggested_name(name);
    let fixed = match rule {
        NameRule::Tier => fixed.replace('.', "-"),
        _ => fixed,
    };
    let fixed_ok = match rule {
        NameRule::Subdomain => is_dns_subdomain(&fixed),
        NameRule::Policy => is_policy_name(&fixed),
        NameRule::Tier => is_tier_name(&fixed),
    };
    if fixed_ok && fixed != name {
        message.push_str(&format!("; e.g. `{fixed}`"));
    }
    cx.error(node, message);
    false
}

/// `Allow_SSH` → `allow-ssh`: what the user most likely meant.
fn suggested_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect();
    mapped.trim_matches(|c| c == '-' || c == '.').to_owned()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// DNS-1123 subdomain, ≤253 characters.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// GlobalNetworkPolicy names: DNS labels with at most one dot, ≤253 characters.
fn is_policy_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').count() <= 2 && s.split('.').all(is_dns_label)
}

/// Tier names: one DNS label, ≤63 characters (tiers spec §1: Calico's `tierNameRegex` and label length).
pub(crate) fn is_tier_name(s: &str) -> bool {
    s.len() <= 63 && is_dns_label(s)
}

/// `[A-Za-z0-9_.-]`, 1–63 characters, alphanumeric at both ends (label names and values).
fn is_label_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A Kubernetes qualified name: optional DNS-subdomain prefix and `/`, then a label part.
fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty() && is_dns_subdomain(prefix) && is_label_part(name)
        }
        None => is_label_part(s),
    }
}

/// Labels: string keys (qualified names) to string values (spec §1.2).
pub(crate) fn decode_labels(cx: &mut Cx, node: &Node) -> Labels {
    let mut labels = Labels::new();
    for (key, value_node, value) in string_map(cx, node, "label") {
        let mut ok = true;
        if !is_qualified_name(&key.text) {
            let pos = cx.key_pos(key);
            cx.error_at(
                pos,
                format!(
                    "label key `{}` is not valid: keys are an optional DNS prefix and `/`, then 1-63 characters of `A-Z a-z 0-9 _ . -` starting and ending alphanumeric",
                    key.text
                ),
            );
            ok = false;
        }
        if !value.is_empty() && !is_label_part(value) {
            cx.error(
                value_node,
                format!(
                    "label value `{value}` (label `{}`) is not valid: values are empty or 1-63 characters of `A-Z a-z 0-9 _ . -` starting and ending alphanumeric",
                    key.text
                ),
            );
            ok = false;
        }
        if ok {
            labels.insert(key.text.to_string(), value.to_owned());
        }
    }
    labels
}

/// Annotations: qualified-name keys (checked lowercased) and string values, ≤256 KiB in all.
pub(crate) fn check_annotations(cx: &mut Cx, node: &Node) {
    const MAX_TOTAL: usize = 256 * 1024;
    let mut total = 0usize;
    for (key, _, value) in string_map(cx, node, "annotation") {
        total += key.text.len() + value.len();
        if !is_qualified_name(&key.text.to_ascii_lowercase()) {
            let pos = cx.key_pos(key);
            cx.error_at(
                pos,
                format!(
                    "annotation key `{}` is not valid: keys are an optional DNS prefix and `/`, then 1-63 characters of `a-z 0-9 _ . -` starting and ending alphanumeric",
                    key.text
                ),
            );
        }
    }
    if total > MAX_TOTAL {
        cx.error(
            node,
            format!("annotations total {total} bytes; at most {MAX_TOTAL} (256 KiB) are allowed"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_policy_name("allow.ssh"));
        assert!(!is_policy_name("a.b.c"));
        assert!(!is_policy_name("Allow_SSH"));
        assert!(is_dns_subdomain("a.b.c"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain(""));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
        assert_eq!(suggested_name("Allow_SSH"), "allow-ssh");
        // Tiers spec §1: one label, no dot, at most 63 characters.
        assert!(is_tier_name("platform"));
        assert!(is_tier_name(&"a".repeat(63)));
        assert!(!is_tier_name(&"a".repeat(64)));
        assert!(!is_tier_name("ops.edge"));
        assert!(!is_tier_name("Platform"));
        assert!(!is_tier_name("a_b"));
    }

    #[test]
    fn label_keys() {
        assert!(is_qualified_name("kubernetes-host"));
        assert!(is_qualified_name("example.com/role"));
        assert!(is_qualified_name("A_b.c"));
        assert!(!is_qualified_name("/role"));
        assert!(!is_qualified_name("Example.com/role"));
        assert!(!is_qualified_name("-x"));
        assert!(!is_qualified_name(&"a".repeat(64)));
    }
}
