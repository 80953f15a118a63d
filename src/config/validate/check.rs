//! `hostpolicy/v1` ConnectivityCheck `spec` (DESIGN.md "Resources of our own").

use std::time::Duration;

use crate::config::model::{CheckTarget, ConnectivityCheck};
use crate::config::yaml::Node;

use super::fields::{boolean, integer, number, object, Cx};
use super::hep::node_name;
use super::meta::Meta;
use super::net::plain_ip;

const SPEC_FIELDS: &[&str] = &["node", "tcp", "icmp", "timeoutSeconds", "acceptRefused"];
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// A probe runs while a new ruleset is on trial; longer than this would hold the rollback for too long.
const MAX_TIMEOUT_SECONDS: f64 = 300.0;

pub(crate) fn connectivity_check(
    cx: &mut Cx,
    resource: &Node,
    meta: Meta,
    spec: Option<&Node>,
) -> Option<ConnectivityCheck> {
    let Some(spec_node) = spec else {
        cx.error(
            resource,
            "a ConnectivityCheck needs a `spec` with `tcp: {host, port}` or `icmp: {host}`",
        );
        return None;
    };
    let spec = object(cx, spec_node, "a ConnectivityCheck spec", SPEC_FIELDS)?;
    let node = spec.get("node").and_then(|n| node_name(cx, n, "node"));
    let timeout = spec
        .get("timeoutSeconds")
        .map(|n| timeout(cx, n))
        .unwrap_or(Some(DEFAULT_TIMEOUT));
    let spec_refused = spec
        .get("acceptRefused")
        .and_then(|n| boolean(cx, n, "acceptRefused"));
    let (tcp, icmp) = (spec.get("tcp"), spec.get("icmp"));
    let (target, tcp_refused) = match (tcp, icmp) {
        (Some(_), Some(icmp)) => {
            cx.error(
                icmp,
                "a ConnectivityCheck has exactly one of `tcp` and `icmp`: split it into two checks",
            );
            return None;
        }
        (None, None) => {
            cx.error(
                spec_node,
                "a ConnectivityCheck needs `tcp: {host: ..., port: ...}` or `icmp: {host: ...}`",
            );
            return None;
        }
        (Some(tcp), None) => tcp_target(cx, tcp)?,
        (None, Some(icmp)) => (icmp_target(cx, icmp)?, None),
    };
    if let (Some(a), Some(b)) = (spec_refused, tcp_refused) {
        if a != b {
            let at = spec.get("acceptRefused").unwrap_or(spec_node);
            cx.error(at, "`acceptRefused` is set twice, in `spec` and in `tcp`, with different values: keep one");
        }
    }
    if let (CheckTarget::Icmp { .. }, Some(_)) = (&target, spec_refused) {
        let at = spec.get("acceptRefused").unwrap_or(spec_node);
        cx.warn(at, "`acceptRefused` has no effect on an icmp check");
    }
    Some(ConnectivityCheck {
        name: meta.name.value,
        pos: cx.pos(resource),
        node,
        target,
        timeout: timeout?,
        accept_refused: tcp_refused.or(spec_refused).unwrap_or(false),
    })
}

fn tcp_target(cx: &mut Cx, node: &Node) -> Option<(CheckTarget, Option<bool>)> {
    let obj = object(cx, node, "`tcp`", &["host", "port", "acceptRefused"])?;
    let host = match obj.get("host") {
        Some(h) => plain_ip(cx, h, "host"),
        None => {
            cx.error(node, "`tcp` needs a `host` (an IP address)");
            None
        }
    };
    let port = match obj.get("port") {
        Some(p) => integer(cx, p, "port", 1, 65535).and_then(|p| u16::try_from(p).ok()),
        None => {
            cx.error(node, "`tcp` needs a `port` (1-65535)");
            None
        }
    };
    let refused = obj
        .get("acceptRefused")
        .and_then(|n| boolean(cx, n, "acceptRefused"));
    Some((
        CheckTarget::Tcp {
            host: host?,
            port: port?,
        },
        refused,
    ))
}

fn icmp_target(cx: &mut Cx, node: &Node) -> Option<CheckTarget> {
    let obj = object(cx, node, "`icmp`", &["host"])?;
    match obj.get("host") {
        Some(h) => Some(CheckTarget::Icmp {
            host: plain_ip(cx, h, "host")?,
        }),
        None => {
            cx.error(node, "`icmp` needs a `host` (an IP address)");
            None
        }
    }
}

fn timeout(cx: &mut Cx, node: &Node) -> Option<Duration> {
    let seconds = number(cx, node, "timeoutSeconds")?;
    if !(seconds > 0.0 && seconds <= MAX_TIMEOUT_SECONDS) {
        cx.error(node, format!("`timeoutSeconds` must be more than 0 and at most {MAX_TIMEOUT_SECONDS}, not {seconds}"));
        return None;
    }
    Some(Duration::from_secs_f64(seconds))
}
