//! Reading the configuration: which files, their documents, and the validated [`Config`].
//!
//! [`load_sources`] is the pure core (text in, config and diagnostics out); [`load_dir`] and
//! [`load_files`] only read files around it. Problems never stop the load: every file and every
//! document is read, and all diagnostics come back in file order.
//!
//! Trusted files (as sshd's `StrictModes`): [`load_dir`] refuses the configuration directory and each
//! configuration file in it unless it is owned by root (or by the user running hostpolicyd) and not
//! writable by group or others; a refused file is an error like any invalid file, so nothing is
//! applied. Only the directory itself and its files are checked, not its parents, and a symlinked file
//! is judged by its target. [`load_files`] (`hostpolicyd check FILE...`, Ansible's `validate:` on a
//! temporary file whose final owner and mode are set only after validation) never checks.
//! `--strict-modes=no` turns the check off ([`set_strict_modes`]).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::diag::{self, Diagnostic, Severity};
use crate::config::model::{Config, Pos};
use crate::config::validate::Validator;
use crate::config::yaml;

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

static STRICT_MODES: AtomicBool = AtomicBool::new(true);

/// Turns the ownership and mode check of [`load_dir`] on (the default) or off, for the whole process
/// (`--strict-modes`).
pub fn set_strict_modes(on: bool) {
    STRICT_MODES.store(on, Ordering::Relaxed);
}

/// Load every configuration file of `dir`. An unreadable directory or file is a diagnostic, and so is
/// an untrusted one (see the module documentation) unless the check is off.
pub fn load_dir(dir: &Path) -> Loaded {
    load_dir_with(dir, STRICT_MODES.load(Ordering::Relaxed))
}

/// [`load_dir`] with the ownership and mode check on or off.
pub fn load_dir_with(dir: &Path, strict_modes: bool) -> Loaded {
    let (sources, problems) = read_dir_with(dir, strict_modes);
    parse_sources(&sources, problems)
}

/// The configuration files of `dir` as `(display name, text)` pairs, as [`load_dir`] reads them, and
/// the diagnostics of the files and directory that could not be read or are not trusted. Parsing them
/// with [`load_sources`] (plus these diagnostics) is [`load_dir`]; the daemon keeps the texts of the last
/// valid configuration, a tenth of the size of its model, to parse them again when interfaces change.
pub fn read_dir(dir: &Path) -> (Vec<(String, String)>, Vec<Diagnostic>) {
    read_dir_with(dir, STRICT_MODES.load(Ordering::Relaxed))
}

fn read_dir_with(dir: &Path, strict_modes: bool) -> (Vec<(String, String)>, Vec<Diagnostic>) {
    match config_files(dir) {
        Ok(files) if strict_modes => {
            let mut refused: Vec<Diagnostic> = untrusted(dir, true).into_iter().collect();
            let trusted: Vec<PathBuf> = files
                .into_iter()
                .filter(|f| match untrusted(f, false) {
                    Some(d) => {
                        refused.push(d);
                        false
                    }
                    None => true,
                })
                .collect();
            let (sources, mut problems) = read_files(&trusted);
            problems.extend(refused);
            (sources, problems)
        }
        Ok(files) => read_files(&files),
        Err(err) => (
            Vec::new(),
            vec![Diagnostic {
                severity: Severity::Error,
                pos: None,
                message: format!(
                    "cannot read the configuration directory {}: {err}",
                    dir.display()
                ),
            }],
        ),
    }
}

/// Load the given files, whatever their names (`hostpolicyd check FILE...`, Ansible's temporary file).
pub fn load_files(paths: &[PathBuf]) -> Loaded {
    let (sources, unreadable) = read_files(paths);
    parse_sources(&sources, unreadable)
}

/// [`load_sources`], with the diagnostics of files that could not be read, in file order.
pub fn parse_sources(sources: &[(String, String)], problems: Vec<Diagnostic>) -> Loaded {
    let mut loaded = load_sources(sources);
    loaded.diagnostics.extend(problems);
    diag::sort(&mut loaded.diagnostics);
    loaded
}

/// The texts of `paths`, and a diagnostic for each file that cannot be read as UTF-8 text.
fn read_files(paths: &[PathBuf]) -> (Vec<(String, String)>, Vec<Diagnostic>) {
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
    (sources, unreadable)
}

/// Why `path` (the directory when `is_dir`) is not trusted, if it is not: not owned by root or by the
/// user running hostpolicyd, or writable by group or others. A path that cannot be examined is left to
/// the reader (a dangling symlink is reported as unreadable).
fn untrusted(path: &Path, is_dir: bool) -> Option<Diagnostic> {
    let meta = fs::metadata(path).ok()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let name = path.display().to_string();
    let mode = meta.mode() & 0o7777;
    let problem = if meta.uid() != 0 && meta.uid() != me {
        format!(
            "owned by uid {}, not by root; run chown root {name}",
            meta.uid()
        )
    } else {
        let writable = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group- and world-writable",
            (true, false) => "group-writable",
            (false, true) => "world-writable",
            (false, false) => return None,
        };
        format!("mode {mode:04o} is {writable}; run chmod go-w {name}")
    };
    let hint = "(or run with --strict-modes=no)";
    Some(if is_dir {
        Diagnostic {
            severity: Severity::Error,
            pos: None,
            message: format!("refusing the configuration directory {name}: {problem} {hint}"),
        }
    } else {
        file_error(&name, &format!("is not trusted: {problem} {hint}"))
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn untrusted_files_and_directories_are_refused() {
        let dir = std::env::temp_dir().join(format!("hostpolicyd-modes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        chmod(&dir, 0o755);
        let policy = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\nspec: {selector: all()}\n";
        let a = dir.join("a.yaml");
        fs::write(&a, policy).unwrap();
        chmod(&a, 0o644);
        assert!(!load_dir_with(&dir, true).has_errors());

        chmod(&a, 0o664);
        let loaded = load_dir_with(&dir, true);
        let msgs: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        let name = a.display();
        assert_eq!(
            msgs,
            [format!(
                "{name}:1:1: error: {name} is not trusted: mode 0664 is group-writable; run chmod go-w \
                 {name} (or run with --strict-modes=no)"
            )]
        );
        assert!(
            loaded.config.policies.is_empty(),
            "an untrusted file is not read"
        );
        chmod(&a, 0o646);
        assert!(load_dir_with(&dir, true).diagnostics[0]
            .message
            .contains("mode 0646 is world-writable"));
        // Off: accepted; explicit files are never checked.
        assert!(!load_dir_with(&dir, false).has_errors());
        assert!(!load_files(std::slice::from_ref(&a)).has_errors());

        chmod(&a, 0o644);
        chmod(&dir, 0o777);
        let loaded = load_dir_with(&dir, true);
        assert_eq!(loaded.diagnostics.len(), 1);
        assert_eq!(
            loaded.diagnostics[0].to_string(),
            format!(
                "hostpolicyd: error: refusing the configuration directory {}: mode 0777 is group- and \
                 world-writable; run chmod go-w {} (or run with --strict-modes=no)",
                dir.display(),
                dir.display()
            )
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
