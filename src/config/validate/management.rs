//! `hostpolicy/v1` ManagementAccess `spec`: the flows the lockout guard (`crate::analysis::lockout`) keeps open.
//!
//! ```yaml
//! apiVersion: hostpolicy/v1
//! kind: ManagementAccess
//! metadata: {name: admin-ssh}
//! spec:
//!   node: node1                 # optional: guard only this node (default: every node)
//!   sources: [192.0.2.0/24]     # required, at least one: CIDRs or bare IPs (v4 and v6 may mix)
//!   ports:                      # required, at least one
//!     - {protocol: TCP, port: 22}
//! ```

use crate::config::model::{proto, At, ManagementAccess};
use crate::config::yaml::{Node, Value};

use super::fields::{integer, list, object, string, Cx};
use super::hep::node_name;
use super::meta::Meta;
use super::net::set_net;

const SPEC_FIELDS: &[&str] = &["node", "sources", "ports"];
const PORT_FIELDS: &[&str] = &["protocol", "port"];

pub(crate) fn management_access(
    cx: &mut Cx,
    resource: &Node,
    meta: Meta,
    spec: Option<&Node>,
) -> Option<ManagementAccess> {
    let Some(spec_node) = spec else {
        cx.error(
            resource,
            "a ManagementAccess needs a `spec` with `sources` (CIDRs) and `ports` ({protocol, port})",
        );
        return None;
    };
    let spec = object(cx, spec_node, "a ManagementAccess spec", SPEC_FIELDS)?;
    let node = spec.get("node").and_then(|n| node_name(cx, n, "node"));
    let sources = match spec.get("sources") {
        Some(n) => list(cx, n, "sources")
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| set_net(cx, item).map(|net| cx.at(item, net)))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    };
    if sources.is_empty()
        && spec
            .get("sources")
            .is_none_or(|n| matches!(&n.value, Value::Seq(s) if s.is_empty()))
    {
        cx.error(
            spec.get("sources").unwrap_or(spec_node),
            "a ManagementAccess needs `sources`: the networks the operators connect from, e.g. sources: [192.0.2.0/24]",
        );
    }
    let ports = match spec.get("ports") {
        Some(n) => list(cx, n, "ports")
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| port_entry(cx, item))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    };
    if ports.is_empty()
        && spec
            .get("ports")
            .is_none_or(|n| matches!(&n.value, Value::Seq(s) if s.is_empty()))
    {
        cx.error(
            spec.get("ports").unwrap_or(spec_node),
            "a ManagementAccess needs `ports`, e.g. ports: [{protocol: TCP, port: 22}]",
        );
    }
    Some(ManagementAccess {
        name: meta.name.value,
        pos: cx.pos(resource),
        node,
        sources,
        ports,
    })
}

fn port_entry(cx: &mut Cx, node: &Node) -> Option<At<(u8, u16)>> {
    let obj = object(cx, node, "a ManagementAccess port", PORT_FIELDS)?;
    let protocol = match obj.get("protocol") {
        Some(p) => protocol(cx, p),
        None => {
            cx.error(
                node,
                "a ManagementAccess port needs a `protocol`: TCP, UDP or SCTP",
            );
            None
        }
    };
    let port = match obj.get("port") {
        Some(p) => integer(cx, p, "port", 1, 65535).and_then(|p| u16::try_from(p).ok()),
        None => {
            cx.error(node, "a ManagementAccess port needs a `port` (1-65535)");
            None
        }
    };
    Some(cx.at(node, (protocol?, port?)))
}

/// `TCP`, `UDP` or `SCTP`, uppercase as everywhere in Calico's API.
fn protocol(cx: &mut Cx, node: &Node) -> Option<u8> {
    let text = string(cx, node, "protocol")?;
    let named = [
        ("TCP", proto::TCP),
        ("UDP", proto::UDP),
        ("SCTP", proto::SCTP),
    ];
    if let Some((_, p)) = named.iter().find(|(n, _)| *n == text) {
        return Some(*p);
    }
    let hint = match named.iter().find(|(n, _)| n.eq_ignore_ascii_case(text)) {
        Some((n, _)) => format!(" (names are case-sensitive: write `{n}`)"),
        None => String::new(),
    };
    cx.error(
        node,
        format!("protocol `{text}` is not valid{hint}: use TCP, UDP or SCTP"),
    );
    None
}
