//! GlobalNetworkSet `spec` (spec §1.8).

use crate::config::model::GlobalNetworkSet;
use crate::config::yaml::Node;

use super::fields::{list, object, Cx};
use super::meta::Meta;
use super::net::set_net;

/// A label only Calico may set: it marks namespaced sets.
const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";

pub(crate) fn network_set(
    cx: &mut Cx,
    resource: &Node,
    meta: Meta,
    labels_node: Option<&Node>,
    spec: Option<&Node>,
) -> GlobalNetworkSet {
    if meta.labels.contains_key(NAMESPACE_LABEL) {
        let at = labels_node.unwrap_or(resource);
        cx.error(
            at,
            format!(
                "the label `{NAMESPACE_LABEL}` is reserved and not allowed on a GlobalNetworkSet"
            ),
        );
    }
    let mut nets = Vec::new();
    if let Some(spec) = spec.and_then(|s| object(cx, s, "a GlobalNetworkSet spec", &["nets"])) {
        if let Some(items) = spec.get("nets").and_then(|n| list(cx, n, "nets")) {
            nets.reserve(items.len());
            nets.extend(items.iter().filter_map(|item| set_net(cx, item)));
        }
    }
    GlobalNetworkSet {
        name: meta.name.value,
        pos: cx.pos(resource),
        labels: meta.labels,
        nets,
    }
}
