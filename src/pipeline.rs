//! The pure pipeline in one call: load → validate → resolve → compile.

use std::path::{Path, PathBuf};

use crate::compile::compile;
use crate::config::diag::Diagnostic;
use crate::config::load::{self, Loaded};
use crate::config::model::Config;
use crate::resolve::{resolve, Interface, NodeView};
use crate::ruleset::Ruleset;

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
    pub ruleset: Ruleset,
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

/// Validates and compiles; `strict` turns warnings into errors.
pub fn build(
    loaded: Loaded,
    node: &str,
    interfaces: &[Interface],
    table: &str,
    strict: bool,
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
    diagnostics.extend(crate::analysis::lint::lint(&config, &view));
    // The lockout guard: management flows (ManagementAccess) must stay open; its errors refuse the config.
    diagnostics.extend(crate::analysis::lockout::check(&config, &view, interfaces));
    crate::config::diag::sort(&mut diagnostics);
    diagnostics.dedup();
    if diagnostics.iter().any(|d| d.is_error()) || (strict && !diagnostics.is_empty()) {
        return Err(Invalid { diagnostics });
    }
    let ruleset = compile(&config, &view, table);
    Ok(Compiled {
        config,
        view,
        ruleset,
        warnings: diagnostics,
    })
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
