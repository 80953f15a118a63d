//! Addresses and networks: rule nets (strict CIDR, masked with a warning), set nets (bare IPs allowed),
//! plain IPs (expectedIPs, check hosts).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::yaml::{Node, Value};

use super::fields::{string, Cx};

/// A CIDR in a rule or a failsafe entry (spec §1.5 "Nets syntax"): a prefix length is required; host bits
/// are masked off with a warning naming the network actually used.
pub(crate) fn rule_net(cx: &mut Cx, node: &Node, field: &str) -> Option<IpNet> {
    let text = net_text(cx, node, field)?;
    let Ok(net) = text.parse::<IpNet>() else {
        match text.parse::<IpAddr>() {
            Ok(ip) => {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                cx.error(
                    node,
                    format!(
                        "`{text}` needs a prefix length: write `{ip}/{len}` for a single address"
                    ),
                );
            }
            Err(_) => not_a_net(cx, node, text),
        }
        return None;
    };
    let masked = net.trunc();
    if masked != net {
        cx.warn(
            node,
            format!("`{text}` has host bits set; hostpolicyd uses `{masked}` (write that; calicoctl rejects this form)"),
        );
    }
    Some(masked)
}

/// A GlobalNetworkSet entry (spec §1.8): a CIDR or a bare IP (/32, /128); stored masked, silently.
pub(crate) fn set_net(cx: &mut Cx, node: &Node) -> Option<IpNet> {
    let text = match &node.value {
        // The fast path: 100,000 entries should not go through the generic helpers' allocations.
        Value::Str(s) => s.as_str(),
        _ => net_text(cx, node, "nets")?,
    };
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    not_a_net(cx, node, text);
    None
}

/// A plain address (HEP `expectedIPs`, check hosts): no prefix length.
pub(crate) fn plain_ip(cx: &mut Cx, node: &Node, field: &str) -> Option<IpAddr> {
    let text = string(cx, node, field).or_else(|| {
        if node.value == Value::Null {
            cx.error(node, format!("`{field}` needs an IP address"));
        }
        None
    })?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    match text.parse::<IpNet>() {
        Ok(net) => cx.error(
            node,
            format!(
                "`{field}` takes a plain IP address, not a network: write `{}`",
                net.addr()
            ),
        ),
        Err(_) => cx.error(
            node,
            format!("`{text}` is not an IP address (e.g. 192.0.2.10 or 2001:db8::10)"),
        ),
    }
    None
}

fn net_text<'n>(cx: &mut Cx, node: &'n Node, field: &str) -> Option<&'n str> {
    let text = string(cx, node, field);
    if text.is_none() && node.value == Value::Null {
        cx.error(
            node,
            format!("empty entry in `{field}`: write a network such as 192.0.2.0/24"),
        );
    }
    text
}

fn not_a_net(cx: &mut Cx, node: &Node, text: &str) {
    cx.error(
        node,
        format!("`{text}` is not a network: write a CIDR such as 192.0.2.0/24 or 2001:db8::/32"),
    );
}
