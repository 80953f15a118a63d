//! hostpolicyd: Calico-style host endpoint policy from files, enforced with one nftables table.
//!
//! The pipeline flows one way (DESIGN.md): `load` → `validate` → `resolve` → `compile` → `nft`.
//! Everything above `nft`'s netlink sender is pure and testable without root.

pub mod diag;
pub mod model;
pub mod ruleset;
pub mod selector;
pub mod compile;
pub mod resolve;
pub mod iface;
pub mod explain;
pub mod explain_cmd;
pub mod lockout;
pub mod lint;
pub mod counters;
pub mod load;
pub mod pipeline;
pub mod validate;
pub mod yaml;
pub mod cli;
pub mod nft;
pub mod engine;
pub mod probe;
pub mod state;
pub mod daemon;
