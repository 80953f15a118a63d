//! Command-line flags (parsed) and the commands they run (DESIGN.md "Command line").
//!
//! Exit status: 0 success; 1 invalid configuration or a lockout (nothing changed); 2 apply failed or
//! rolled back (previous ruleset in force); 3 `status`/`reload` found no running daemon; 4 `status`:
//! degraded, `plan --exit-code`: some verdict changes; 64 usage; 70 internal error.

#[macro_use]
pub mod output;

pub mod counters;
pub mod explain;
pub mod flows;
pub mod plan;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Parser, Subcommand};

use crate::compile::DEFAULT_TABLE;
use crate::config::diag::Diagnostic;
use crate::daemon::control::{self, ClientError, Status};
use crate::engine::state::Store;
use crate::engine::{Engine, Kernel, Outcome};
use crate::exit;
use crate::host::probe::NetProber;
use crate::nft::{netlink::Netlink, render::render, Dataplane};
use crate::pipeline::{self, Input};
pub use crate::settings::{hostname, Settings};

/// The heading of the options every command takes, in `--help` and `COMMAND --help`.
pub const GLOBAL_OPTIONS: &str = "Global options (any command)";
/// The heading of the flow records' and metrics' options (any command too: flow records shape the table
/// that `render`, `check` and `apply` compile).
pub const FLOW_OPTIONS: &str = "Flow records and metrics (any command)";

#[derive(Debug, Parser)]
#[command(
    name = "hostpolicyd",
    version,
    about = "Calico-style host endpoint policy from files, enforced with one nftables table",
    // The options every command takes, listed apart from a command's own in `COMMAND --help`.
    next_help_heading = GLOBAL_OPTIONS
)]
pub struct Cli {
    /// Directory of policy files (*.yaml, *.yml).
    #[arg(
        long,
        global = true,
        env = "HOSTPOLICYD_CONFIG_DIR",
        default_value = "/etc/hostpolicy.d"
    )]
    pub config_dir: PathBuf,
    /// This node's name, matched against HostEndpoint `spec.node` [default: the host name].
    #[arg(long, global = true, env = "HOSTPOLICYD_NODE_NAME")]
    pub node_name: Option<String>,
    /// Name of the nftables table (family inet) the daemon owns.
    #[arg(long, global = true, env = "HOSTPOLICYD_TABLE", default_value = DEFAULT_TABLE)]
    pub table: String,
    /// Where the last good ruleset is kept.
    #[arg(
        long,
        global = true,
        env = "HOSTPOLICYD_STATE_DIR",
        default_value = "/var/lib/hostpolicyd"
    )]
    pub state_dir: PathBuf,
    /// Where the control socket lives.
    #[arg(
        long,
        global = true,
        env = "HOSTPOLICYD_RUNTIME_DIR",
        default_value = "/run/hostpolicyd"
    )]
    pub runtime_dir: PathBuf,
    /// Refuse the config directory and its files unless owned by root and not writable by group or
    /// others, as sshd's StrictModes (`check FILE...` never checks: Ansible validates a temporary file).
    #[arg(
        long,
        global = true,
        env = "HOSTPOLICYD_STRICT_MODES",
        value_name = "yes|no",
        default_value = "yes",
        value_parser = clap::builder::BoolishValueParser::new(),
        hide_possible_values = true,
        action = clap::ArgAction::Set
    )]
    pub strict_modes: bool,
    /// Flow records: the table reports denied packets and allowed connections to the daemon
    /// (`hostpolicyd flows`, journal, metrics).
    #[arg(help_heading = FLOW_OPTIONS,
        long,
        global = true,
        env = "HOSTPOLICYD_FLOW_RECORDS",
        value_name = "on|off",
        default_value = "on",
        value_parser = clap::builder::BoolishValueParser::new(),
        hide_possible_values = true,
        action = clap::ArgAction::Set
    )]
    pub flow_records: bool,
    /// The NFLOG group the table reports to (one listener per network namespace; 0-65535).
    #[arg(help_heading = FLOW_OPTIONS,long, global = true, env = "HOSTPOLICYD_FLOWS_NFLOG_GROUP", value_name = "GROUP",
          default_value_t = crate::settings::Flows::DEFAULT_GROUP)]
    pub flows_nflog_group: u16,
    /// Packets per second each deny rule reports at most (and untracked allows, sampled).
    #[arg(help_heading = FLOW_OPTIONS,long, global = true, env = "HOSTPOLICYD_FLOWS_LOG_RATE", value_name = "PER_SECOND",
          default_value_t = crate::settings::Flows::DEFAULT_RATE,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub flows_log_rate: u32,
    /// The most flow records the daemon keeps (the least recently updated go first).
    #[arg(help_heading = FLOW_OPTIONS,long, global = true, env = "HOSTPOLICYD_FLOWS_MAX_RECORDS", value_name = "N",
          default_value_t = crate::settings::Flows::DEFAULT_MAX_RECORDS,
          value_parser = parse_max_records)]
    pub flows_max_records: usize,
    /// How often each denied flow aggregate is logged to the journal (once per interval).
    #[arg(help_heading = FLOW_OPTIONS,long, global = true, env = "HOSTPOLICYD_FLOWS_INTERVAL", value_name = "SECONDS",
          default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub flows_interval: u64,
    /// Log allowed flow aggregates to the journal too (`EVENT=flow_allowed`).
    #[arg(help_heading = FLOW_OPTIONS,long, global = true, env = "HOSTPOLICYD_LOG_ALLOWED_FLOWS", value_name = "yes|no", hide_possible_values = true,
          value_parser = clap::builder::BoolishValueParser::new(),
          default_missing_value = "true", num_args = 0..=1, default_value = "false")]
    pub log_allowed_flows: bool,
    /// Write Prometheus metrics to this file (node_exporter's textfile collector), atomically, after
    /// every reload and every interval; off by default.
    #[arg(help_heading = FLOW_OPTIONS,
        long,
        global = true,
        env = "HOSTPOLICYD_METRICS_FILE",
        value_name = "PATH"
    )]
    pub metrics_file: Option<PathBuf>,
    /// Seconds between two writes of the metrics file.
    #[arg(help_heading = FLOW_OPTIONS,long, global = true, env = "HOSTPOLICYD_METRICS_INTERVAL", value_name = "SECONDS",
          default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub metrics_interval: u64,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_max_records(s: &str) -> Result<usize, String> {
    let v: usize = s.parse().map_err(|e| format!("{e}"))?;
    if !(1..=10_000_000).contains(&v) {
        return Err("between 1 and 10000000".into());
    }
    Ok(v)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate only: the config directory, or the files given (any names); no root needed.
    Check {
        /// Treat warnings as errors.
        #[arg(long)]
        strict: bool,
        /// Files to validate instead of the config directory (for Ansible's `validate: hostpolicyd check %s`).
        files: Vec<PathBuf>,
    },
    /// Print the nftables ruleset that `apply` would load; no root needed.
    Render,
    /// One shot: validate, compile, run the connectivity checks, apply atomically, check again, roll back
    /// if a check that passed before fails after (exit 2).
    Apply,
    /// Delete our table (and nothing else). With a daemon running, the daemon does it and enforces
    /// nothing until the next reload or restart.
    Flush,
    /// The daemon (what the systemd unit starts): watch the directory, reload, probe, roll back.
    Run,
    /// What is applied: generation, content hash, host endpoints and their policies, last error, last
    /// rollback (asks the running daemon; without one, shows the state directory's record and exits 3).
    /// Exit 4 when the node is not enforcing its configuration as it stands (degraded).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Instead: the kernel's packet counters of every policy rule and default, mapped to the
        /// configuration's names and file:line (needs root; exit 3 when nothing is applied).
        #[arg(long)]
        counters: bool,
    },
    /// Ask the running daemon to reload now and wait for the result: exit 0 applied or unchanged,
    /// 1 invalid, 2 rolled back or apply failed, 3 no daemon running.
    Reload,
    /// Why a packet is allowed or dropped: the verdict and the path it takes through the configuration
    /// (no kernel, no root). Exit 0 whatever the verdict, 1 invalid configuration.
    Explain(crate::cli::explain::ExplainArgs),
    /// Recent flows and the rule that decided each, from the running daemon: one line per flow, newest
    /// last (exit 3 when no daemon runs).
    Flows(crate::cli::flows::FlowsArgs),
    /// The exact packets whose verdict the configuration directory changes, compared with what this
    /// node enforces now (or --against OLD_DIR): exit 0 planned, 1 invalid or a lockout, 4 with
    /// --exit-code when a verdict changes.
    Plan(crate::cli::plan::PlanArgs),
}

/// The settings the flags resolve to (ripgrep's flags → settings): what every command and the daemon use.
pub fn settings(cli: &Cli) -> Settings {
    Settings {
        config_dir: cli.config_dir.clone(),
        node: cli
            .node_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(hostname),
        table: cli.table.clone(),
        state_dir: cli.state_dir.clone(),
        runtime_dir: cli.runtime_dir.clone(),
        flows: crate::settings::Flows {
            enabled: cli.flow_records,
            nflog_group: cli.flows_nflog_group,
            log_rate: cli.flows_log_rate,
            max_records: cli.flows_max_records,
            interval: std::time::Duration::from_secs(cli.flows_interval),
            log_allowed: cli.log_allowed_flows,
        },
        metrics: crate::settings::Metrics {
            file: cli
                .metrics_file
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            interval: std::time::Duration::from_secs(cli.metrics_interval),
        },
    }
}

pub fn run(cli: Cli) -> u8 {
    let settings = settings(&cli);
    crate::config::load::set_strict_modes(cli.strict_modes);
    let code = match cli.command {
        Command::Check { strict, files } => check(&settings, strict, files),
        Command::Render => render_cmd(&settings),
        Command::Apply => apply(&settings),
        Command::Flush => flush(&settings),
        Command::Run => crate::daemon::run(&settings),
        Command::Status {
            json,
            counters: true,
        } => crate::cli::counters::status(&settings, json),
        Command::Status { json, .. } => status(&settings, json),
        Command::Reload => reload(&settings),
        Command::Explain(args) => crate::cli::explain::run(&settings, args),
        Command::Flows(args) => crate::cli::flows::run(&settings, &args),
        Command::Plan(args) => crate::cli::plan::run(&settings, args),
    };
    // A closed pipe or a full disk under any of it: the status says so, never a panic.
    output::finish(code)
}

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        errln!("{d}");
    }
}

fn interfaces_or_empty() -> Vec<crate::resolve::Interface> {
    crate::host::iface::current().unwrap_or_else(|e| {
        errln!("hostpolicyd: warning: cannot list interfaces ({e}); IP-matched HostEndpoints match nothing");
        Vec::new()
    })
}

fn check(settings: &Settings, strict: bool, files: Vec<PathBuf>) -> u8 {
    let by_files = !files.is_empty();
    let input = if by_files {
        Input::Files(files)
    } else {
        Input::Dir(settings.config_dir.clone())
    };
    let loaded = pipeline::load(&input);
    // What was checked: fragments, or the directory as `node` would load it.
    let (diags, ok, checked) = if by_files {
        // Files on their own are fragments of a directory: only validation applies, not node-level lints.
        let mut d = loaded.diagnostics.clone();
        crate::config::diag::sort(&mut d);
        let ok = !d.iter().any(|x| x.is_error() || strict);
        (d, ok, String::new())
    } else {
        match pipeline::build_with(
            loaded,
            &settings.node,
            &interfaces_or_empty(),
            &settings.table,
            strict,
            &settings.flows,
        ) {
            Ok(c) => {
                let checked = node_summary(&c.config, &settings.node);
                let warnings = c.warnings.clone();
                exit_without_freeing(c);
                (warnings, true, checked)
            }
            Err(inv) => (inv.diagnostics, false, String::new()),
        }
    };
    let warnings = diags.len() - diags.iter().filter(|d| d.is_error()).count();
    if strict {
        // Issue 20 item 2: what --strict refuses is printed as an error, marked as gcc marks the
        // warnings -Werror turns into errors, and the summary counts it as one.
        print_diagnostics(&diags.iter().map(strict_error).collect::<Vec<_>>());
    } else {
        print_diagnostics(&diags);
    }
    let errors = diags.iter().filter(|d| d.is_error() || strict).count();
    if ok {
        outln!(
            "valid{checked} ({warnings} warning{})",
            if warnings == 1 { "" } else { "s" }
        );
        exit::OK
    } else {
        let of_them = match warnings {
            0 => String::new(),
            1 if errors == 1 => " (a warning, which --strict counts as an error)".to_owned(),
            w if w == errors => " (all warnings, which --strict counts as errors)".to_owned(),
            1 => " (1 of them a warning, which --strict counts as an error)".to_owned(),
            w => format!(" ({w} of them warnings, which --strict counts as errors)"),
        };
        let of_them = if strict { of_them } else { String::new() };
        errln!(
            "hostpolicyd: {errors} error{}{of_them}: configuration is invalid",
            plural_s(errors)
        );
        exit::INVALID
    }
}

fn plural_s(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A warning as `check --strict` prints it: an error, marked `[--strict]`.
fn strict_error(d: &Diagnostic) -> Diagnostic {
    if d.is_error() {
        return d.clone();
    }
    Diagnostic {
        severity: crate::config::diag::Severity::Error,
        pos: d.pos.clone(),
        message: format!("{} [--strict]", d.message),
    }
}

/// ` for node NODE: N host endpoints, M policies`: what `check` checked the directory for (issue 17: a
/// bare "valid" on a host whose name no HostEndpoint uses hid that the daemon would enforce nothing).
fn node_summary(config: &crate::config::model::Config, node: &str) -> String {
    let heps = config
        .host_endpoints
        .iter()
        .filter(|h| h.node == node)
        .count();
    let policies = config.policies.len();
    let staged = match config.staged.len() {
        0 => String::new(),
        n => format!(" and {n} staged"),
    };
    format!(
        " for node {node}: {heps} host endpoint{}, {policies} polic{}{staged}",
        if heps == 1 { "" } else { "s" },
        if policies == 1 { "y" } else { "ies" }
    )
}

fn render_cmd(settings: &Settings) -> u8 {
    match pipeline::build_dir_with(
        &settings.config_dir,
        &settings.node,
        &interfaces_or_empty(),
        &settings.table,
        &settings.flows,
    ) {
        Ok(c) => {
            print_diagnostics(&c.warnings);
            // What is left out, where the reader of the ruleset looks for it (issue 20 item 8).
            for i in &c.view.inactive {
                outln!(
                    "# HostEndpoint {} is inactive on node {}, so no rule here is for it: {}",
                    i.name,
                    c.view.node,
                    i.reason
                );
            }
            out!("{}", render(&c.ruleset));
            exit_without_freeing(c);
            exit::OK
        }
        Err(inv) => {
            print_diagnostics(&inv.diagnostics);
            exit::INVALID
        }
    }
}

fn apply(settings: &Settings) -> u8 {
    let (sources, problems) = crate::config::load::read_dir(&settings.config_dir);
    let compiled = match pipeline::build_with(
        crate::config::load::parse_sources(&sources, problems),
        &settings.node,
        &interfaces_or_empty(),
        &settings.table,
        false,
        &settings.flows,
    ) {
        Ok(c) => c,
        Err(inv) => {
            print_diagnostics(&inv.diagnostics);
            errln!("hostpolicyd: configuration is invalid: nothing applied");
            return exit::INVALID;
        }
    };
    print_diagnostics(&compiled.warnings);
    let dp = match Netlink::new() {
        Ok(dp) => dp,
        Err(e) => {
            errln!("hostpolicyd: error: cannot open nftables netlink socket: {e}");
            return exit::APPLY_FAILED;
        }
    };
    if control::status(&settings.runtime_dir).is_ok() {
        errln!(
            "hostpolicyd: warning: a daemon is running (it answers on {}); `hostpolicyd reload` asks it to apply instead",
            control::socket_path(&settings.runtime_dir).display()
        );
    }
    // The same protocol as the daemon: the state directory gives the rollback target and keeps the result.
    let store = Store::new(&settings.state_dir);
    let mut engine = Engine::new(dp, NetProber, &settings.node, &settings.table);
    let stamp = store.last_good_stamp();
    let last_good = store.load_last_good().ok().flatten();
    let restored = last_good.is_some();
    engine.restore_from(last_good, store.load_summary().ok().flatten());
    if restored {
        engine.restored_from_file(stamp);
    }
    // The state files are written on the second core while the kernel commits, and the transaction's
    // rules are encoded on two threads before (a one-shot command can spare the memory).
    engine.stage_state_during_commit(Some(store.clone()));
    crate::nft::encode_on_two_threads(true);
    let now = SystemTime::now();
    // The configuration's record for `plan` is written (not yet put in place) meanwhile too.
    let hash = crate::compile::hash_from_comment(&compiled.ruleset.comment).unwrap_or_default();
    let (outcome, staged) = std::thread::scope(|s| {
        // Once the swap's transactions are encoded (or the swap is over).
        let (tx, rx) = std::sync::mpsc::channel();
        crate::nft::when_encoded(Some(tx));
        let (store, interfaces, sources) = (&store, &compiled.interfaces, &sources);
        let staging = s.spawn(move || {
            let _ = rx.recv();
            store.stage_applied_config(hash, &settings.node, interfaces, sources, now)
        });
        let outcome = engine.reconcile(Ok(&compiled), now);
        // No swap (unchanged, say): the staging thread is not kept waiting for one.
        crate::nft::when_encoded(None);
        (outcome, staging.join().ok().and_then(Result::ok))
    });
    let saved = engine
        .save_state(&store, now)
        .and_then(|()| match (&outcome, staged) {
            // What is in force now: recorded for `hostpolicyd plan`.
            (Outcome::Applied { hash, .. } | Outcome::Unchanged { hash, .. }, Some(st))
                if st.holds(hash, 0) =>
            {
                st.finish()
            }
            (Outcome::Applied { hash, .. } | Outcome::Unchanged { hash, .. }, _) => {
                store.save_applied_config(hash, &settings.node, &compiled.interfaces, &sources, now)
            }
            // Anything else: the staged record is removed, unused.
            _ => Ok(()),
        });
    if let Err(e) = saved {
        errln!(
            "hostpolicyd: warning: cannot write the state directory {}: {e}",
            settings.state_dir.display()
        );
    }
    let table = &settings.table;
    match &outcome {
        Outcome::Applied { checks, .. } => {
            for c in checks.failing_before() {
                errln!(
                    "hostpolicyd: warning: check {} ({}) failed before the swap too, so it could not judge it: {}",
                    c.name, c.target, c.detail
                );
            }
            outln!(
                "applied: table inet {table} ({} chains, {} rules, {} sets)",
                compiled.ruleset.chains.len(),
                compiled.ruleset.rule_count(),
                compiled.ruleset.sets.len()
            );
        }
        Outcome::Unchanged { .. } => {
            outln!("unchanged: table inet {table} already holds this ruleset")
        }
        Outcome::RolledBack {
            failed, policies, ..
        } => {
            for c in failed {
                errln!("hostpolicyd: error: check {} ({}) passed before the swap and failed after it: {}", c.name, c.target, c.detail);
            }
            if !policies.is_empty() {
                errln!(
                    "hostpolicyd: new or changed policies: {}",
                    policies.join(", ")
                );
            }
            errln!("hostpolicyd: error: {}", outcome.message(table));
        }
        Outcome::Failed { .. } | Outcome::NotRetried { .. } | Outcome::Invalid { .. } => {
            errln!("hostpolicyd: error: {}", outcome.message(table));
        }
    }
    let code = outcome.exit_code();
    exit_without_freeing((engine, compiled, sources, outcome));
    code
}

/// What a one-shot command built is left to the end of the process: freeing 10,000 policies' model
/// and ruleset, one small allocation at a time, took ~30 ms of `apply`'s run, for memory the kernel
/// takes back at exit anyway. Only for what a command holds until it returns to `main`; the daemon
/// frees everything it is done with (its memory must not grow from one reload to the next).
fn exit_without_freeing<T>(built: T) {
    std::mem::forget(built);
}

fn status(settings: &Settings, json: bool) -> u8 {
    let (mut status, code) = match control::status(&settings.runtime_dir) {
        Ok(s) => (s, exit::OK),
        Err(e @ ClientError::NotRunning { .. }) => {
            errln!("hostpolicyd: {e}");
            match Store::new(&settings.state_dir).load_summary() {
                Ok(Some(mut summary)) => {
                    // The record may be of another boot or another namespace: what the kernel holds
                    // is asked of the kernel, never taken from the file.
                    summary.kernel = kernel_now(&settings.table, summary.hash.as_deref());
                    (
                        Status {
                            daemon: None,
                            summary,
                            problems: Vec::new(),
                        },
                        exit::NOT_RUNNING,
                    )
                }
                Ok(None) => {
                    errln!(
                        "hostpolicyd: nothing recorded in {} either",
                        settings.state_dir.display()
                    );
                    return exit::NOT_RUNNING;
                }
                Err(e) => {
                    errln!("hostpolicyd: error: {e}");
                    return exit::NOT_RUNNING;
                }
            }
        }
        Err(e) => {
            errln!("hostpolicyd: error: {e}");
            return exit::INTERNAL;
        }
    };
    status.problems = status.summary.problems();
    // Running but not enforcing the configuration as it stands: 4 (3, no daemon, says more).
    let code = if code == exit::OK && !status.problems.is_empty() {
        exit::DEGRADED
    } else {
        code
    };
    if json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => outln!("{text}"),
            Err(e) => {
                errln!("hostpolicyd: error: {e}");
                return exit::INTERNAL;
            }
        }
    } else {
        out!("{}", control::format_status(&status));
    }
    code
}

/// What the kernel holds as our table now, described as the daemon does (`ours`, `none`, ...).
fn kernel_now(table: &str, our_hash: Option<&str>) -> String {
    match Netlink::new() {
        Ok(mut dp) => Kernel::of(&mut dp, table).describe(our_hash),
        Err(e) => Kernel::Unknown(e.to_string()).describe(our_hash),
    }
}

fn reload(settings: &Settings) -> u8 {
    // Run by systemd as ExecReload=, standard error is the journal, where the daemon has logged every
    // diagnostic of this reload already: one summary line, not each error a second time (issue 17 item 12).
    let journal = std::env::var("JOURNAL_STREAM")
        .ok()
        .is_some_and(|stream| is_journal_stream(std::io::stderr().as_fd(), &stream));
    match control::reload(&settings.runtime_dir) {
        Ok(reply) => {
            if reply.exit_code == exit::OK {
                outln!("{}", reply.message);
            } else if journal {
                // `<3>`: journald takes it as the line's priority (err), as sd-daemon(3) describes.
                errln!(
                    "<3>hostpolicyd reload: {}: {} (the daemon logged the details)",
                    reply.result,
                    crate::config::diag::escape(&reply.message)
                );
            } else {
                for d in &reply.diagnostics {
                    errln!("{}", crate::config::diag::escape(d));
                }
                errln!(
                    "hostpolicyd: error: {}",
                    crate::config::diag::escape(&reply.message)
                );
            }
            reply.exit_code
        }
        Err(e @ ClientError::NotRunning { .. }) => {
            errln!(
                "hostpolicyd: {e}; nothing reloaded (start it with `systemctl start hostpolicyd`)"
            );
            exit::NOT_RUNNING
        }
        Err(e) => {
            errln!("hostpolicyd: error: {e}");
            exit::INTERNAL
        }
    }
}

/// Whether `fd` is the journal stream systemd announced in `JOURNAL_STREAM` (`DEVICE:INODE`, see
/// systemd.exec(5)): the variable is inherited by children whose output goes elsewhere, so the
/// descriptor itself is compared.
fn is_journal_stream(fd: std::os::fd::BorrowedFd<'_>, journal_stream: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    fd.try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// With a daemon, asks it to delete its table and enforce nothing until the next reload (otherwise its
/// drift repair would put the table back within a second); without one, deletes the table itself.
fn flush(settings: &Settings) -> u8 {
    match control::flush(&settings.runtime_dir) {
        Ok(reply) => {
            if reply.exit_code == exit::OK {
                outln!("{}", reply.message);
            } else {
                errln!("hostpolicyd: error: {}", reply.message);
            }
            return reply.exit_code;
        }
        Err(ClientError::NotRunning { .. }) => {}
        Err(e) => {
            errln!(
                "hostpolicyd: error: the running daemon did not flush ({e}); stop it first \
                 (`systemctl stop hostpolicyd`), then run `hostpolicyd flush` again"
            );
            return exit::INTERNAL;
        }
    }
    let result = Netlink::new().and_then(|mut dp| dp.flush(&settings.table));
    match result {
        Ok(()) => {
            outln!(
                "flushed: table inet {} deleted (other tables untouched)",
                settings.table
            );
            exit::OK
        }
        Err(e) => {
            errln!("hostpolicyd: error: flush failed: {e}");
            exit::APPLY_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_journal_stream_is_recognised_by_its_device_and_inode() {
        let dir = std::env::temp_dir().join(format!("hostpolicyd-jstream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = std::fs::File::create(dir.join("a")).unwrap();
        let b = std::fs::File::create(dir.join("b")).unwrap();
        let m = a.metadata().unwrap();
        let stream = format!("{}:{}", m.dev(), m.ino());
        assert!(is_journal_stream(a.as_fd(), &stream));
        assert!(is_journal_stream(a.as_fd(), &format!("{stream}\n")));
        assert!(!is_journal_stream(b.as_fd(), &stream), "another file");
        assert!(!is_journal_stream(a.as_fd(), "garbage"));
        assert!(!is_journal_stream(a.as_fd(), ""));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
