//! HostEndpoint `spec` (spec §1.7).

use crate::config::model::{proto, EndpointPort, HostEndpoint};
use crate::config::yaml::{Node, Value};

use super::fields::{integer, list, object, string, Cx};
use super::meta::{is_dns_subdomain, Meta};
use super::net::plain_ip;

const SPEC_FIELDS: &[&str] = &["node", "interfaceName", "expectedIPs", "profiles", "ports"];

/// The only profile hostpolicyd knows (spec §1.9): allow everything when no policy decides.
pub(crate) const DEFAULT_ALLOW: &str = "projectcalico-default-allow";

pub(crate) fn host_endpoint(
    cx: &mut Cx,
    resource: &Node,
    meta: Meta,
    spec: Option<&Node>,
) -> Option<HostEndpoint> {
    let Some(spec_node) = spec else {
        cx.error(resource, "a HostEndpoint needs a `spec` with at least `node` and `interfaceName` or `expectedIPs`");
        return None;
    };
    let spec = object(cx, spec_node, "a HostEndpoint spec", SPEC_FIELDS)?;
    let node = match spec.get("node") {
        Some(n) => node_name(cx, n, "node"),
        None => {
            cx.error(
                spec_node,
                "a HostEndpoint needs `node`: the name of the node that owns it",
            );
            None
        }
    };
    let errors_before = cx.errors;
    let interface_name = spec
        .get("interfaceName")
        .and_then(|n| interface_name(cx, n));
    let expected_ips = match spec
        .get("expectedIPs")
        .and_then(|n| list(cx, n, "expectedIPs"))
    {
        Some(items) => items
            .iter()
            .filter_map(|item| plain_ip(cx, item, "expectedIPs"))
            .collect(),
        None => Vec::new(),
    };
    let profiles = spec
        .get("profiles")
        .map(|n| profiles(cx, n))
        .unwrap_or_default();
    let ports = spec.get("ports").map(|n| ports(cx, n)).unwrap_or_default();
    if interface_name.is_none() && expected_ips.is_empty() && cx.errors == errors_before {
        cx.error(
            spec_node,
            "a HostEndpoint needs `interfaceName` (an interface, or \"*\" for all) or `expectedIPs` (to find the interface by address)",
        );
    }
    Some(HostEndpoint {
        name: meta.name.value,
        pos: cx.pos(resource),
        labels: meta.labels,
        node: node?,
        interface_name,
        expected_ips,
        profiles,
        ports,
    })
}

/// A node name: non-empty DNS subdomain.
pub(crate) fn node_name(cx: &mut Cx, node: &Node, field: &str) -> Option<String> {
    let name = string(cx, node, field)?;
    if !is_dns_subdomain(name) {
        cx.error(
            node,
            format!("`{field}` `{name}` is not a valid node name: lowercase `a-z 0-9 - .`, starting and ending alphanumeric, at most 253 characters"),
        );
        return None;
    }
    Some(name.to_owned())
}

/// `*`, or one interface name of 1-15 characters `[a-zA-Z0-9_.-]` (no patterns such as `eth+`).
fn interface_name(cx: &mut Cx, node: &Node) -> Option<String> {
    let name = string(cx, node, "interfaceName")?;
    if name.is_empty() {
        return None;
    }
    let plain = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    if name == "*" || (name.len() <= 15 && plain(name)) {
        return Some(name.to_owned());
    }
    let message = if name.ends_with(['+', '*']) && plain(&name[..name.len() - 1]) {
        format!("`interfaceName: {name}`: patterns are not supported; write \"*\" for every interface, or one HostEndpoint per interface")
    } else if name.len() > 15 {
        format!("`interfaceName` `{name}` is longer than 15 characters (Linux interface names are at most 15)")
    } else {
        format!("`interfaceName` `{name}` is not valid: one interface name (`A-Z a-z 0-9 _ . -`), or \"*\"")
    };
    cx.error(node, message);
    None
}

fn profiles(cx: &mut Cx, node: &Node) -> Vec<crate::config::model::At<String>> {
    let Some(items) = list(cx, node, "profiles") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(name) = string(cx, item, "profiles") else {
            continue;
        };
        if name == DEFAULT_ALLOW {
            out.push(cx.at(item, name.to_owned()));
        } else if !is_dns_subdomain(name) {
            // Calico validates profile names as resource names (`validate:"dive,name"`).
            cx.error(
                item,
                format!("profile name `{name}` is not valid: names are lowercase DNS names (`a-z`, `0-9`, `-` and `.`, starting and ending alphanumeric, at most 253 characters)"),
            );
        } else {
            // Felix gives an endpoint's profile that does not exist no rules: it neither allows nor
            // denies, and evaluation goes on with the next profile (then the default drop).
            cx.warn(
                item,
                format!("profile `{name}` is not defined (hostpolicyd has only the built-in `{DEFAULT_ALLOW}`; Profile resources are not supported): as in Felix, it contributes no rules"),
            );
            out.push(cx.at(item, name.to_owned()));
        }
    }
    out
}

fn ports(cx: &mut Cx, node: &Node) -> Vec<EndpointPort> {
    let Some(items) = list(cx, node, "ports") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(obj) = object(
            cx,
            item,
            "a HostEndpoint port",
            &["name", "protocol", "port"],
        ) else {
            continue;
        };
        let name = match obj.get("name") {
            Some(n) => string(cx, n, "name").and_then(|name| {
                if is_port_name(name) {
                    Some(name.to_owned())
                } else {
                    cx.error(
                        n,
                        format!("port name `{name}` is not valid: 1-15 characters of `a-z 0-9 -`, at least one letter, no `-` at either end or twice in a row"),
                    );
                    None
                }
            }),
            None => {
                cx.error(item, "a HostEndpoint port needs a `name`");
                None
            }
        };
        let protocol = match obj.get("protocol") {
            Some(n) => endpoint_protocol(cx, n),
            None => {
                cx.error(
                    item,
                    "a HostEndpoint port needs a `protocol`: TCP, UDP or SCTP",
                );
                None
            }
        };
        let port = match obj.get("port") {
            Some(n) => integer(cx, n, "port", 1, 65535).and_then(|p| u16::try_from(p).ok()),
            None => {
                cx.error(item, "a HostEndpoint port needs a `port` (1-65535)");
                None
            }
        };
        if let (Some(name), Some(protocol), Some(port)) = (name, protocol, port) {
            out.push(EndpointPort {
                name,
                protocol,
                port,
            });
        }
    }
    out
}

/// `TCP`, `UDP`, `SCTP` or their numbers.
fn endpoint_protocol(cx: &mut Cx, node: &Node) -> Option<u8> {
    let named = [
        ("TCP", proto::TCP),
        ("UDP", proto::UDP),
        ("SCTP", proto::SCTP),
    ];
    let found = match &node.value {
        Value::UInt(n) => named
            .iter()
            .find(|(_, p)| u64::from(*p) == *n)
            .map(|(_, p)| *p),
        Value::Str(s) => named
            .iter()
            .find(|(name, p)| name == s || p.to_string() == *s)
            .map(|(_, p)| *p),
        _ => {
            string(cx, node, "protocol");
            return None;
        }
    };
    if found.is_none() {
        let raw = cx.raw(node);
        let hint = match named
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&raw))
        {
            Some((name, _)) => format!(" (names are case-sensitive: write `{name}`)"),
            None => String::new(),
        };
        cx.error(
            node,
            format!("port protocol `{raw}` is not valid{hint}: use TCP, UDP or SCTP"),
        );
    }
    found
}

/// Kubernetes `IsValidPortName`: 1-15 characters of `[a-z0-9-]`, at least one letter, no `-` at either
/// end, no `--`.
pub(crate) fn is_port_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !name.contains("--")
}
