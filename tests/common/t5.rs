//! Spec §7 T5's topology (Calico's node-port how-to) remapped onto documentation addresses, shared by
//! the end-to-end scenarios and the kernel-vs-explain agreement test (the configuration is
//! tests/golden/t5/, see `scenarios`):
//! node1 eth0 1.2.3.4 → 198.51.100.4/25, node2 1.2.3.5 → 198.51.100.5/25 (the `peer` namespace),
//! cluster net 1.2.0.0/16 → 198.51.100.0/25, pod CIDR 100.100.0.0/16 → 198.51.100.128/25 (pod
//! 198.51.100.200 behind eth2), external clients 203.0.113.7 and 203.0.113.34, pod-net source
//! 198.51.100.177.

use super::topology::Plan;

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
