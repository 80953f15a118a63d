//! Shared helpers for the integration tests.
//!
//! - `netns`: RAII network namespaces (`NetNs`), veth pairs, `require_root`.
//! - `topology`: scenario topologies (node, clients on each side, cluster peer, backend pod), `hostpolicyd`
//!   with its own temporary directories (`Hpd`), nft helpers, a kube-proxy-like NodePort DNAT table.
//! - `probe`: TCP/UDP/ICMP/ICMPv6 probes with a chosen source address, echo servers, scenario tables
//!   (`Report`).
//! - `listing`: a table as the kernel holds it, normalised for comparing two ways of getting there.
//! - `scenarios`: spec §7 T1–T8, read from `tests/golden/tN/`, and their variants.
//! - `t5`: spec §7 T5's topology plan.
//! - `yaml`: builders for the HostEndpoint documents scenarios write.

#![allow(dead_code)]

pub mod daemon;
pub mod listing;
pub mod netns;
pub mod probe;
pub mod scenarios;
pub mod t5;
pub mod topology;
pub mod yaml;
