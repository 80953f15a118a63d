//! hostpolicyd: Calico-style host endpoint policy from files, enforced with one nftables table.
//!
//! The pipeline flows one way (DESIGN.md): `load` → `validate` → `resolve` → `compile` → `nft`.
//! Everything above `nft`'s netlink sender is pure and testable without root.

pub mod cli;
pub mod compile;
pub mod counters;
pub mod daemon;
pub mod diag;
pub mod engine;
pub mod explain;
pub mod explain_cmd;
pub mod iface;
pub mod lint;
pub mod load;
pub mod lockout;
pub mod model;
pub mod nft;
pub mod pipeline;
pub mod probe;
pub mod resolve;
pub mod ruleset;
pub mod selector;
pub mod state;
pub mod validate;
pub mod yaml;
