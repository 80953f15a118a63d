//! `hostpolicyd plan`: the command line around [`crate::analysis::plan`].
//!
//! Compares the configuration directory (the new configuration) with what this node enforces now (the
//! configuration recorded in the state directory for the ruleset the kernel holds), or with `--against
//! OLD_DIR` (no root, no kernel), for this node or every node (`--all-nodes`). Prints the resources
//! added, removed and changed, the ruleset changes, the ManagementAccess flows the change would block,
//! and the verdict changes, exactly.
//!
//! Exit status: 0 planned; 1 invalid configuration (either one) or a lockout; 4 with `--exit-code` when
//! any verdict changes; 64 bad flags; 70 internal error (or the output could not be written); 141 the
//! output went into a closed pipe.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::analysis::plan::{self, Config2, Plan};
use crate::compile::{compile_with, hash_from_comment};
use crate::config::diag::Diagnostic;
use crate::config::load::{self, Loaded};
use crate::config::model::Config;
use crate::engine::short;
use crate::engine::state::Store;
use crate::exit;
use crate::nft::{netlink::Netlink, Dataplane};
use crate::resolve::{resolve, Interface};
use crate::settings::{Flows, Settings};

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Machine-readable output: one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Compare with the configuration in this directory instead of what this node enforces (no
    /// root, no kernel: for CI in the repository of the policy files).
    #[arg(long, value_name = "OLD_DIR")]
    pub against: Option<PathBuf>,
    /// Plan every node named by a HostEndpoint in either configuration (each region names its node).
    #[arg(long)]
    pub all_nodes: bool,
    /// Exit 4 when any verdict changes.
    #[arg(long)]
    pub exit_code: bool,
}

/// Exit status of `plan --exit-code` when a verdict changes (DESIGN.md; `status` uses 4 for degraded).
pub const CHANGES: u8 = exit::PLAN_CHANGES;

/// One side of the comparison.
pub struct Baseline {
    pub config: Config,
    /// The interfaces it was compiled for (None: the same as the new configuration's).
    pub interfaces: Option<Vec<Interface>>,
    /// What it is, for people.
    pub description: String,
    /// Things the reader must know (the kernel holds something else, ...).
    pub notes: Vec<String>,
}

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        errln!("{d}");
    }
}

/// A configuration that must be valid to be planned: its diagnostics are printed when it is not.
fn valid(loaded: Loaded, what: &str) -> Result<Config, u8> {
    if loaded.has_errors() {
        print_diagnostics(&loaded.diagnostics);
        errln!("hostpolicyd: {what} is invalid: nothing to plan");
        return Err(exit::INVALID);
    }
    Ok(loaded.config)
}

/// What this node enforces now: the configuration recorded for the ruleset the kernel holds.
fn enforced(settings: &Settings) -> Result<Baseline, u8> {
    let store = Store::new(&settings.state_dir);
    let table = &settings.table;
    let state = settings.state_dir.display();
    let recorded = match store.load_applied_config() {
        Ok(r) => r,
        Err(e) => {
            errln!("hostpolicyd: warning: cannot read the applied configuration: {e}");
            None
        }
    };
    let kernel = Netlink::new().and_then(|mut nl| nl.table_comment(table));
    let mut notes = Vec::new();
    let empty = |description: String, notes: Vec<String>| Baseline {
        config: Config::default(),
        interfaces: None,
        description,
        notes,
    };
    let from_record = |r: crate::engine::state::AppliedConfig,
                       description: String,
                       mut notes: Vec<String>|
     -> Result<Baseline, u8> {
        let loaded = load::load_sources(&r.sources());
        if loaded.has_errors() {
            print_diagnostics(&loaded.diagnostics);
            errln!(
                "hostpolicyd: the configuration recorded in {state} no longer validates (written by another version of hostpolicyd?): plan with --against DIR"
            );
            return Err(exit::INVALID);
        }
        if r.node != settings.node {
            notes.push(format!(
                "the recorded configuration was applied as node {}, not {}",
                r.node, settings.node
            ));
        }
        Ok(Baseline {
            config: loaded.config,
            interfaces: Some(r.interfaces()),
            description,
            notes,
        })
    };
    match (kernel, recorded) {
        (Ok(None), _) => Ok(empty(
            format!("nothing: the kernel holds no table inet {table}, so nothing is enforced now"),
            notes,
        )),
        (Ok(Some(comment)), Some(r)) if hash_from_comment(&comment) == Some(r.hash.as_str()) => {
            let d = format!(
                "what this node enforces: the configuration applied as sha256:{} (recorded in {state})",
                short(&r.hash)
            );
            from_record(r, d, notes)
        }
        (Ok(Some(comment)), recorded) => {
            let held = match hash_from_comment(&comment) {
                Some(h) => format!("a ruleset with content hash sha256:{}", short(h)),
                None => "a table that hostpolicyd did not write".to_string(),
            };
            match recorded {
                Some(r) => {
                    notes.push(format!(
                        "the kernel holds {held} in table inet {table}, not the configuration recorded in {state} (sha256:{}): the plan compares with the recorded one",
                        short(&r.hash)
                    ));
                    let d = format!(
                        "the configuration hostpolicyd applied last (sha256:{}, recorded in {state}), which is NOT what the kernel holds",
                        short(&r.hash)
                    );
                    from_record(r, d, notes)
                }
                None => {
                    notes.push(format!(
                        "the kernel holds {held} in table inet {table}, and {state} records no configuration for it: the plan compares with an empty configuration (use --against DIR to compare with the files it came from)"
                    ));
                    Ok(empty(
                        "an empty configuration (the kernel's ruleset is not known)".into(),
                        notes,
                    ))
                }
            }
        }
        (Err(e), recorded) => {
            notes.push(format!(
                "cannot ask the kernel what it holds ({e}; root is needed): the plan compares with the configuration recorded in {state}"
            ));
            match recorded {
                Some(r) => {
                    let d = format!(
                        "the configuration hostpolicyd applied last (sha256:{}, recorded in {state})",
                        short(&r.hash)
                    );
                    from_record(r, d, notes)
                }
                None => {
                    notes.push(format!("{state} records no applied configuration"));
                    Ok(empty("an empty configuration".into(), notes))
                }
            }
        }
    }
}

/// The nodes named by a HostEndpoint in either configuration.
pub fn all_nodes(a: &Config, b: &Config) -> Vec<String> {
    let nodes: BTreeSet<String> = a
        .host_endpoints
        .iter()
        .chain(&b.host_endpoints)
        .map(|h| h.node.clone())
        .collect();
    nodes.into_iter().collect()
}

/// Loads two directories at once (one thread each): the old and the new configuration.
pub fn load_pair(old: &std::path::Path, new: &std::path::Path) -> (Loaded, Loaded) {
    std::thread::scope(|s| {
        let o = s.spawn(|| load::load_dir(old));
        let n = load::load_dir(new);
        (o.join().expect("the loading thread panicked"), n)
    })
}

/// Per node: the interfaces to resolve the old and new configuration with, and the node's live
/// addresses (when they are this node's own).
pub struct NodeInterfaces {
    pub before: Vec<Interface>,
    pub after: Vec<Interface>,
    pub live: Vec<IpAddr>,
}

/// The plan of `after` against `before` for `nodes`, their rulesets compiled with the flow records of
/// `flows` (as `apply` would compile them). Pure but for `interfaces`' answers.
pub fn make_plan(
    before: &Config,
    after: &Config,
    nodes: &[String],
    table: &str,
    flows: &Flows,
    compared_with: String,
    interfaces: &dyn Fn(&str) -> NodeInterfaces,
) -> Plan {
    let mut verdict_changes = Vec::new();
    let mut ruleset_changes = Vec::new();
    let mut lockout = Vec::new();
    for node in nodes {
        let ifs = interfaces(node);
        // The two sides are independent: resolved one thread each; then both compiled (for the ruleset
        // changes) in two threads while this one evaluates the verdicts and the lockout guard.
        let (vb, va) = std::thread::scope(|s| {
            let b = s.spawn(|| resolve(before, node, &ifs.before));
            let a = resolve(after, node, &ifs.after);
            (b.join().expect("the planning thread panicked"), a)
        });
        let (rb, ra) = std::thread::scope(|s| {
            let b = s.spawn(|| compile_with(before, &vb, table, flows));
            let a = s.spawn(|| compile_with(after, &va, table, flows));
            lockout.extend(
                crate::analysis::lockout::check(after, &va, &ifs.after)
                    .into_iter()
                    .filter(|d| d.is_error())
                    .map(|d| d.to_string()),
            );
            verdict_changes.extend(plan::node_changes(
                node,
                Config2 {
                    config: before,
                    view: &vb,
                },
                Config2 {
                    config: after,
                    view: &va,
                },
                &ifs.live,
            ));
            (
                b.join().expect("the planning thread panicked"),
                a.join().expect("the planning thread panicked"),
            )
        });
        ruleset_changes.push(plan::rulesets::changes(node, &rb, &ra, &|r| {
            let mut s = String::new();
            crate::nft::render::render_rule(&mut s, r);
            s.trim().to_string()
        }));
    }
    lockout.sort();
    lockout.dedup();
    Plan {
        nodes: nodes.to_vec(),
        compared_with,
        resources: plan::resources::changes(before, after),
        verdict_changes,
        ruleset_changes,
        lockout,
    }
}

pub fn run(settings: &Settings, args: PlanArgs) -> u8 {
    let (old, new) = match &args.against {
        Some(dir) => {
            let (o, n) = load_pair(dir, &settings.config_dir);
            (Some(o), n)
        }
        None => (None, load::load_dir(&settings.config_dir)),
    };
    let after = match valid(
        new,
        &format!("the configuration in {}", settings.config_dir.display()),
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let baseline = match (&args.against, old) {
        (Some(dir), Some(old)) => {
            match valid(old, &format!("the old configuration in {}", dir.display())) {
                Ok(config) => Baseline {
                    config,
                    interfaces: None,
                    description: format!("{}", dir.display()),
                    notes: Vec::new(),
                },
                Err(code) => return code,
            }
        }
        _ => match enforced(settings) {
            Ok(b) => b,
            Err(code) => return code,
        },
    };
    for n in &baseline.notes {
        errln!("hostpolicyd: note: {n}");
    }
    let nodes = if args.all_nodes {
        all_nodes(&baseline.config, &after)
    } else {
        vec![settings.node.clone()]
    };
    // This node's own interfaces count when it is planned against what it enforces; otherwise (another
    // node, or a comparison of two directories anywhere) IP-matched HostEndpoints get pseudo interfaces.
    let live = if args.against.is_none() {
        match crate::host::iface::current() {
            Ok(l) => Some(l),
            Err(e) => {
                errln!("hostpolicyd: warning: cannot list interfaces ({e}); IP-matched HostEndpoints are planned on their expectedIPs");
                None
            }
        }
    } else {
        None
    };
    let before_config = &baseline.config;
    let interfaces = |node: &str| -> NodeInterfaces {
        match (&live, node == settings.node) {
            (Some(live), true) => NodeInterfaces {
                before: baseline.interfaces.clone().unwrap_or_else(|| live.clone()),
                after: live.clone(),
                live: live.iter().flat_map(|i| i.addrs.iter().copied()).collect(),
            },
            _ => {
                let pseudo = plan::pseudo_interfaces(&[before_config, &after], node);
                NodeInterfaces {
                    before: pseudo.clone(),
                    after: pseudo,
                    live: Vec::new(),
                }
            }
        }
    };
    let plan = make_plan(
        &baseline.config,
        &after,
        &nodes,
        &settings.table,
        &settings.flows,
        baseline.description.clone(),
        &interfaces,
    );
    if args.json {
        match serde_json::to_string_pretty(&plan) {
            Ok(text) => outln!("{text}"),
            Err(e) => {
                errln!("hostpolicyd: error: {e}");
                return exit::INTERNAL;
            }
        }
    } else {
        out!("{}", plan::text::render(&plan));
    }
    if !plan.lockout.is_empty() {
        if args.json {
            for l in &plan.lockout {
                errln!("{l}");
            }
        }
        errln!("hostpolicyd: the new configuration would lock out management access: it would be refused");
        return exit::INVALID;
    }
    if args.exit_code && !plan.verdict_changes.is_empty() {
        return CHANGES;
    }
    exit::OK
}
