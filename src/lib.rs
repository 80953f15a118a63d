//! hostpolicyd: Calico-style host endpoint policy from files, enforced with one nftables table.
//!
//! # Module map: the folders are the pipeline (DESIGN.md)
//!
//! ```text
//! cli/        the commands: flags → Settings, one file per command (explain, counters)      (top)
//! daemon/     `run` wires the threads; event_loop (events + an injected clock decide when),
//!             service (the Daemon: reload, interfaces, replies), drift/ (the drift state machine
//!             and its nftables listener), watch, control, systemd (sd_notify), signals, log, clock
//! engine/     decide / apply / probe / roll back one configuration; the state directory
//! pipeline    load → validate → resolve → lint/lockout → compile, in one pure call
//! host/       the node itself: interfaces (rtnetlink), connectivity probes, the allocator
//! nft/        the kernel layer: the Dataplane trait, render to nft text, the swap (plan, txn, exec)
//!             over a Kernel seam, the fake kernel
//! netlink/    the kernel transport below nft/ and host/: sockets, batches, dumps, subscriptions,
//!             message and attribute iterators, the kernel's answers; every netlink constant
//! analysis/   explain (the offline evaluator), lint, the lockout guard
//! compile/    NodeView → Ruleset IR; names (every chain, set and map name, the kernel layer's
//!             too, comments, log prefixes); hash (the content hash and the table comments)
//! resolve     this node's view: HostEndpoints per interface, ordered policies, address sets
//! config/     files → YAML nodes with positions → validated model; diagnostics
//! selector/   the selector language: parse, eval, canonical print
//! ruleset     the IR: one table, chains, rules, sets, verdict maps; origin (the typed Origin of every
//!             rule: what it stands for, tier, policy, rule, stage, HostEndpoint, FILE:LINE:COL)
//! settings, exit   resolved settings and the exit statuses: read by everything above
//! trust       files from the outside world: opened once, checked on the descriptor, read with a bound
//! ```
//!
//! **The import rule**: a module imports only from modules listed below it, never from one above it or
//! one beside it that imports it back, so the arrows point one way and there is no import cycle
//! (`../shared/tools/layout_check.py` checks it). Everything up to and including `analysis` and
//! `compile` is pure: no files (except `config::load`, which reads them through `trust`), no kernel, no
//! clock. `nft` is the only code that talks to nftables, `host` the only code that probes the network;
//! both sit behind traits (`Dataplane`, `Prober`) so that `engine` and `daemon` are tested without root.
//! Every netlink socket is opened by `netlink` (the only kernel-transport code with `unsafe`), used by
//! `nft`, `host` and `daemon::nftmon`.

#![deny(unsafe_op_in_unsafe_fn)]
// Commands write through `cli::output` (a closed pipe or a full disk is an exit status, never a panic).
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

// `unsafe` lives only where the process talks to the kernel without a safe wrapper: `netlink` (the
// transport's socket) and `host::mem` (the allocator). Everything else refuses it (file walks, peer
// credentials and resource limits go through `rustix`).
#[deny(unsafe_code)]
pub mod analysis;
#[deny(unsafe_code)]
pub mod cli;
#[deny(unsafe_code)]
pub mod compile;
#[deny(unsafe_code)]
pub mod config;
#[deny(unsafe_code)]
pub mod daemon;
#[deny(unsafe_code)]
pub mod engine;
#[deny(unsafe_code)]
pub mod exit;
pub mod host;
pub mod netlink;
#[deny(unsafe_code)]
pub mod nft;
#[deny(unsafe_code)]
pub mod pipeline;
#[deny(unsafe_code)]
pub mod resolve;
#[deny(unsafe_code)]
pub mod ruleset;
#[deny(unsafe_code)]
pub mod selector;
#[deny(unsafe_code)]
pub mod settings;
#[deny(unsafe_code)]
pub mod trust;
