//! The pure pipeline in one call: load → validate → resolve → compile.

use std::path::{Path, PathBuf};

use crate::compile::{compile_cached, Cache};
use crate::config::diag::Diagnostic;
use crate::config::load::{self, Loaded};
use crate::config::model::Config;
use crate::resolve::{resolve, Interface, NodeView};
use crate::ruleset::Ruleset;
use crate::settings::Flows;

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Input {
    Dir(PathBuf),
    Files(Vec<PathBuf>),
}

/// A configuration that validated, resolved for one node and compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub config: Config,
    pub view: NodeView,
    /// Shared, not copied, with the engine that keeps it as the last good ruleset (a copy of 10,000
    /// policies' ruleset costs ~18 ms on a reload).
    pub ruleset: std::sync::Arc<Ruleset>,
    /// The interfaces (and their addresses) it was resolved for.
    pub interfaces: Vec<Interface>,
    /// Validation and resolution warnings, in file order.
    pub warnings: Vec<Diagnostic>,
}

/// Why there is nothing to apply: every diagnostic, errors and warnings, in file order.
#[derive(Debug, Clone)]
pub struct Invalid {
    pub diagnostics: Vec<Diagnostic>,
}

pub fn load(input: &Input) -> Loaded {
    match input {
        Input::Dir(dir) => load::load_dir(dir),
        Input::Files(files) => load::load_files(files),
    }
}

/// Validates and compiles (with flow records as they are by default); `strict` turns warnings into
/// errors.
pub fn build(
    loaded: Loaded,
    node: &str,
    interfaces: &[Interface],
    table: &str,
    strict: bool,
) -> Result<Compiled, Invalid> {
    build_with(loaded, node, interfaces, table, strict, &Flows::default())
}

/// [`build`] with the flow records of `flows` (`--flow-records`, `--flows-*`).
pub fn build_with(
    loaded: Loaded,
    node: &str,
    interfaces: &[Interface],
    table: &str,
    strict: bool,
    flows: &Flows,
) -> Result<Compiled, Invalid> {
    build_inner(loaded, node, interfaces, table, strict, flows, None)
}

/// [`build_with`] (not strict) for a caller that compiles again and again (the daemon): the chains
/// of the policies that did not change since the last compile with `cache` are taken back from it
/// (`compile::cache`); the result is the same.
pub fn build_cached(
    loaded: Loaded,
    node: &str,
    interfaces: &[Interface],
    table: &str,
    flows: &Flows,
    cache: &mut Cache,
) -> Result<Compiled, Invalid> {
    build_inner(loaded, node, interfaces, table, false, flows, Some(cache))
}

fn build_inner(
    loaded: Loaded,
    node: &str,
    interfaces: &[Interface],
    table: &str,
    strict: bool,
    flows: &Flows,
    cache: Option<&mut Cache>,
) -> Result<Compiled, Invalid> {
    let Loaded {
        config,
        mut diagnostics,
    } = loaded;
    if diagnostics.iter().any(|d| d.is_error()) {
        crate::config::diag::sort(&mut diagnostics);
        return Err(Invalid { diagnostics });
    }
    let view = resolve(&config, node, interfaces);
    diagnostics.extend(view.warnings.iter().cloned());
    // The limit first: a configuration over it is not compiled at all.
    let too_many = too_many_rules(&config, &view, MAX_RULES);
    // The other checks only add diagnostics, and the compile does not need them: a compiler that
    // keeps a cache (the daemon, reloading) runs them on a second thread while it compiles (issue
    // 18), and throws the compile away when they refuse the configuration (its cache stays right: it
    // keys on the policies, whatever configuration they came from).
    let (checks, ruleset) = match cache.filter(|_| too_many.is_none()) {
        Some(cache) => std::thread::scope(|s| {
            let checks = s.spawn(|| checks(&config, &view, interfaces));
            let ruleset = compile_cached(&config, &view, table, flows, Some(cache));
            let checks = checks
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (checks, Some(ruleset))
        }),
        None => (checks(&config, &view, interfaces), None),
    };
    diagnostics.extend(too_many);
    diagnostics.extend(checks);
    crate::config::diag::sort(&mut diagnostics);
    diagnostics.dedup();
    if diagnostics.iter().any(|d| d.is_error()) || (strict && !diagnostics.is_empty()) {
        return Err(Invalid { diagnostics });
    }
    let ruleset = ruleset.unwrap_or_else(|| compile_cached(&config, &view, table, flows, None));
    Ok(Compiled {
        config,
        view,
        ruleset: std::sync::Arc::new(ruleset),
        interfaces: interfaces.to_vec(),
        warnings: diagnostics,
    })
}

/// The lints and the lockout guard: the diagnostics the configuration gets after validation,
/// resolution and [`too_many_rules`].
fn checks(config: &Config, view: &NodeView, interfaces: &[Interface]) -> Vec<Diagnostic> {
    let mut diagnostics = crate::analysis::lint::lint(config, view);
    // The lockout guard: management flows (ManagementAccess) must stay open; its errors refuse the config.
    let lockouts = crate::analysis::lockout::check(config, view, interfaces);
    // Staged policies: their lockouts are warnings (they never enforce), the marks they need errors;
    // a lockout the enforced configuration already has is not theirs.
    diagnostics.extend(crate::analysis::staged::lint(
        config, view, interfaces, &lockouts,
    ));
    diagnostics.extend(lockouts);
    diagnostics
}

/// The most rules a configuration may compile to for one node, estimated before compiling
/// (hostpolicy.d(5), "Limits"): every policy rule, plus one jump per policy in each host endpoint's
/// lists. The benchmark's largest workload (10,000 policies) comes to ~31,000.
pub const MAX_RULES: usize = 2_000_000;

/// An error when the configuration would compile to more than [`MAX_RULES`] rules for this node,
/// naming the files with the most policy rules.
fn too_many_rules(config: &Config, view: &NodeView, limit: usize) -> Option<Diagnostic> {
    // Staged policies compile to shadow rules too.
    let policies = || config.policies.iter().chain(&config.staged);
    let rules: usize = policies().map(|p| p.ingress.len() + p.egress.len()).sum();
    let jumps: usize = view
        .endpoints
        .iter()
        .chain(view.wildcard.iter())
        .map(|e| {
            let p = &e.policies;
            p.untracked_ingress.len()
                + p.untracked_egress.len()
                + p.pre_dnat_ingress.len()
                + p.normal_ingress.len()
                + p.normal_egress.len()
                + p.forward_ingress.len()
                + p.forward_egress.len()
        })
        .sum();
    if rules.saturating_add(jumps) <= limit {
        return None;
    }
    // Over the limit: which files (counted only now, every reload runs this).
    let mut by_file: std::collections::BTreeMap<&str, usize> = Default::default();
    for p in policies() {
        *by_file.entry(&p.pos.file).or_default() += p.ingress.len() + p.egress.len();
    }
    let mut files: Vec<(&str, usize)> = by_file.into_iter().collect();
    files.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let biggest: Vec<String> = files
        .iter()
        .take(5)
        .map(|(f, n)| format!("{f} ({n} rules)"))
        .collect();
    Some(Diagnostic::new(
        crate::config::diag::Severity::Error,
        None,
        format!(
            "the configuration would compile to more than {limit} rules for node {}, the most \
             hostpolicyd applies (hostpolicy.d(5), \"Limits\"): {rules} policy rules and {jumps} jumps from \
             {} host endpoints to their policies; the most rules: {}",
            view.node,
            view.endpoints.len() + usize::from(view.wildcard.is_some()),
            biggest.join(", ")
        ),
    ))
}

/// Reads the directory and compiles it for `node`.
pub fn build_dir(
    dir: &Path,
    node: &str,
    interfaces: &[Interface],
    table: &str,
) -> Result<Compiled, Invalid> {
    build(load::load_dir(dir), node, interfaces, table, false)
}

/// [`build_dir`] with the flow records of `flows`.
pub fn build_dir_with(
    dir: &Path,
    node: &str,
    interfaces: &[Interface],
    table: &str,
    flows: &Flows,
) -> Result<Compiled, Invalid> {
    build_with(load::load_dir(dir), node, interfaces, table, false, flows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19 item 6: the model's size is bounded before compiling, with an error naming the files.
    #[test]
    fn the_rules_a_configuration_compiles_to_are_bounded() {
        let mut text = String::from(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\nspec: {node: n1, interfaceName: eth0}\n",
        );
        for i in 0..10 {
            text.push_str(&format!(
                "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p{i}}}\nspec:\n  ingress:\n  - action: Allow\n  - action: Deny\n"
            ));
        }
        let loaded = load::load_sources(&[("a.yaml".into(), text)]);
        let iface = Interface {
            name: "eth0".into(),
            addrs: vec![],
        };
        let view = resolve(&loaded.config, "n1", std::slice::from_ref(&iface));
        // 20 policy rules, 10 jumps from eth0's HostEndpoint.
        assert!(too_many_rules(&loaded.config, &view, 30).is_none());
        let d = too_many_rules(&loaded.config, &view, 29).expect("over");
        assert_eq!(
            d.to_string(),
            "hostpolicyd: error: the configuration would compile to more than 29 rules for node n1, the \
             most hostpolicyd applies (hostpolicy.d(5), \"Limits\"): 20 policy rules and 10 jumps from 1 \
             host endpoints to their policies; the most rules: a.yaml (20 rules)"
        );
    }
}
