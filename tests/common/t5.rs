//! Spec §7 T5 (Calico's node-port how-to) remapped onto documentation addresses, shared by the
//! end-to-end scenarios and the kernel-vs-explain agreement test:
//! node1 eth0 1.2.3.4 → 198.51.100.4/25, node2 1.2.3.5 → 198.51.100.5/25 (the `peer` namespace),
//! cluster net 1.2.0.0/16 → 198.51.100.0/25, pod CIDR 100.100.0.0/16 → 198.51.100.128/25 (pod
//! 198.51.100.200 behind eth2), external clients 203.0.113.7 and 203.0.113.34, pod-net source
//! 198.51.100.177.

use super::topology::Plan;
use super::yaml::{docs, hep};

pub fn t5_plan() -> Plan {
    Plan {
        eth0: vec!["198.51.100.4/25"],
        lan0: vec!["203.0.113.7", "203.0.113.34", "198.51.100.177"],
        eth1: vec!["192.0.2.45/24"],
        lan1: vec!["192.0.2.9/24"],
        pod: Some(("198.51.100.129", "198.51.100.200")),
        peer: vec!["198.51.100.5/25"],
    }
}
/// The how-to's policies; `nodeport_selector` is allow-nodeport's top-level selector.
pub fn t5_policies(nodeport_selector: &str) -> String {
    format!(
        "- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {{name: allow-cluster-internal-ingress-only}}
  spec:
    order: 20
    preDNAT: true
    applyOnForward: true
    selector: has(kubernetes-host)
    ingress:
      - {{action: Allow, source: {{nets: [198.51.100.0/25, 198.51.100.128/25]}}}}
      - {{action: Deny}}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {{name: allow-outbound-external}}
  spec: {{order: 10, selector: has(kubernetes-host), egress: [{{action: Allow}}]}}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {{name: allow-nodeport}}
  spec:
    order: 10
    preDNAT: true
    applyOnForward: true
    selector: \"{nodeport_selector}\"
    ingress:
      - {{action: Allow, protocol: TCP, destination: {{selector: has(kubernetes-host), ports: [31852]}}}}
"
    )
}
/// node1-eth0 and node2-eth0.
pub fn t5_heps(node1_ips: &[&str], node1_labels: &[(&str, &str)]) -> String {
    docs(&[
        hep(
            "node1-eth0",
            "node1",
            Some("eth0"),
            node1_ips,
            node1_labels,
            &[],
        ),
        hep(
            "node2-eth0",
            "node2",
            Some("eth0"),
            &["198.51.100.5"],
            &[("kubernetes-host", "ingress")],
            &[],
        ),
    ])
}
