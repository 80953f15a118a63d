//! Reading the configuration: which files, their documents, and the validated [`Config`].
//!
//! [`load_sources`] is the pure core (text in, config and diagnostics out); [`load_dir`] and
//! [`load_files`] only read files around it. Problems never stop the load: every file and every
//! document is read, and all diagnostics come back in file order.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::{self, Diagnostic, Severity};
use crate::model::{Config, Pos};
use crate::validate::Validator;
use crate::yaml;

/// The result of a load. `config` holds the resources that decoded cleanly; do not use it when
/// [`Loaded::has_errors`].
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: Config,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Whether the load must be refused: any error, or with `strict` any warning too (`check --strict`).
    pub fn errors(&self, strict: bool) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.is_error() || (strict && d.severity == Severity::Warning))
    }
}

/// The configuration files of `dir`, sorted by name: `*.yaml` and `*.yml` regular files (or symlinks to
/// them, dangling ones included so that they are reported), skipping hidden files and editor /
/// package-manager leftovers.
pub fn config_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(OsStr::to_str) else {
            continue;
        };
        if !is_config_name(name) {
            continue;
        }
        // A regular file, or a symlink to one. A dangling symlink is listed too, so that loading
        // reports it instead of a policy silently disappearing; directories and devices are not.
        let regular = fs::metadata(&path).is_ok_and(|m| m.is_file());
        let dangling = !regular
            && fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink())
            && fs::metadata(&path).is_err();
        if regular || dangling {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `*.yaml` / `*.yml`, not hidden, not a backup, swap or package-manager file.
fn is_config_name(name: &str) -> bool {
    if name.starts_with('.') || name.ends_with('~') {
        return false;
    }
    // `x.yaml.dpkg-new`, `x.yaml.rpmnew`, `x.yaml.swp`... never end in .yaml, but `x.dpkg-old.yaml`
    // style names should not slip through either.
    let leftover = name
        .split('.')
        .skip(1)
        .any(|part| part.starts_with("dpkg-") || part.starts_with("rpm") || part == "swp");
    !leftover && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Load every configuration file of `dir`. An unreadable directory or file is a diagnostic.
pub fn load_dir(dir: &Path) -> Loaded {
    match config_files(dir) {
        Ok(files) => load_files(&files),
        Err(err) => Loaded {
            config: Config::default(),
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                pos: None,
                message: format!(
                    "cannot read the configuration directory {}: {err}",
                    dir.display()
                ),
            }],
        },
    }
}

/// Load the given files, whatever their names (`hostpolicyd check FILE...`, Ansible's temporary file).
pub fn load_files(paths: &[PathBuf]) -> Loaded {
    let mut sources = Vec::with_capacity(paths.len());
    let mut unreadable = Vec::new();
    for path in paths {
        let name = path.display().to_string();
        match fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push((name, text)),
                Err(err) => unreadable.push(file_error(
                    &name,
                    &format!("is not UTF-8 text ({})", err.utf8_error()),
                )),
            },
            Err(err) => unreadable.push(file_error(&name, &format!("cannot be read: {err}"))),
        }
    }
    let mut loaded = load_sources(&sources);
    loaded.diagnostics.extend(unreadable);
    diag::sort(&mut loaded.diagnostics);
    loaded
}

fn file_error(name: &str, what: &str) -> Diagnostic {
    let pos = Pos {
        file: Arc::from(name),
        line: 1,
        column: 1,
    };
    Diagnostic::error(pos, format!("{name} {what}"))
}

/// Load configuration texts: `(display name, text)` pairs. Pure: no file system.
pub fn load_sources(sources: &[(String, String)]) -> Loaded {
    let mut validator = Validator::new();
    for (name, text) in sources {
        let file: Arc<str> = Arc::from(name.as_str());
        let parsed = yaml::parse(&file, text);
        validator.extend_diagnostics(parsed.diagnostics);
        for doc in &parsed.documents {
            validator.document(&file, text, doc);
        }
    }
    let (config, diagnostics) = validator.finish();
    Loaded {
        config,
        diagnostics,
    }
}
