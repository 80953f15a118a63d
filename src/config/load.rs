//! Reading the configuration: which files, their documents, and the validated [`Config`](crate::config::model::Config).
//!
//! [`load_sources`] is the pure core (text in, config and diagnostics out); [`load_dir`] and
//! [`load_files`] only read files around it. Problems never stop the load: every file and every
//! document is read, and all diagnostics come back in file order.
//!
//! Files are read through [`crate::trust`]: the directory is opened by walking its real path, each
//! file is opened once (`O_NOFOLLOW | O_NONBLOCK`), judged by `fstat` of that descriptor and read from
//! it with a bound. Anything that is not a regular file (a FIFO, a socket, a device, a directory named
//! `*.yaml`) is skipped with a warning naming it, and so is a name that is not UTF-8; a symbolic link
//! is followed by walking its target.
//!
//! Trusted files (as sshd's `StrictModes`): [`load_dir`] refuses the configuration directory unless it
//! and every directory of its real path are owned by root (or by the user running hostpolicyd) and not
//! writable by group or others (a directory on the way may be world-writable when it is sticky and
//! root-owned, as `/tmp`), and refuses each configuration file unless it is owned by root (or that
//! user) and not group- or world-writable; a symlinked file is judged with every directory on its
//! target's way. A refused file is an error like any invalid file, so nothing is applied.
//! [`load_files`] (`hostpolicyd check FILE...`, Ansible's `validate:` on a temporary file whose final
//! owner and mode are set only after validation) never checks ownership. `--strict-modes=no` turns the
//! check off ([`set_strict_modes`]).
//!
//! Input limits (hostpolicy.d(5), "Limits"): at most [`MAX_FILES`] configuration files and
//! [`MAX_INPUT_BYTES`] bytes in all are read; beyond, the load is an error naming the biggest files.
//! The YAML parser's budgets ([`yaml::Budget`]) cover the whole directory too.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::diag::{self, Diagnostic, Severity};
use crate::config::model::Pos;
use crate::trust::{self, OpenFile, Problem, Strict};

/// The most configuration files read from one directory (or given to `check`).
pub const MAX_FILES: usize = 10_000;
/// The most bytes of configuration read in all, over every file (64 MiB).
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;
/// The most entries of any kind listed in the configuration directory.
const MAX_ENTRIES: usize = 1_000_000;

pub use crate::config::cache::Loaded;

/// The configuration files of `dir`, sorted by name: every `*.yaml` and `*.yml` entry of any kind,
/// skipping hidden files and editor / package-manager leftovers. The loader opens each and skips
/// (with a warning) what is not a regular file.
pub fn config_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(OsStr::to_str)
            .is_some_and(is_config_name)
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `*.yaml` / `*.yml`, not hidden, not a backup, swap or package-manager file.
pub fn is_config_name(name: &str) -> bool {
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

/// Turns the ownership and mode check of [`load_dir`] (and of the state directory) on (the default)
/// or off, for the whole process (`--strict-modes`).
pub fn set_strict_modes(on: bool) {
    trust::set_strict_modes(on);
}

fn strict_modes() -> Strict {
    trust::strict_modes()
}

/// The symbolic links on the way to the configuration directory when the daemon started. A link the
/// daemon started with may be re-pointed (`ln -sfn releases/v2 current`, a deployment); a link that
/// was not there (`mv conf conf.old && ln -s /srv conf`) makes the directory refused with a loud error
/// until hostpolicyd is restarted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirPins {
    links: BTreeSet<PathBuf>,
}

impl DirPins {
    /// The links on the way to `dir` now (none when it cannot be opened).
    pub fn at_start(dir: &Path) -> DirPins {
        DirPins {
            links: trust::open_dir(dir, Strict::No)
                .map(|d| d.links.into_iter().collect())
                .unwrap_or_default(),
        }
    }
}

/// Load every configuration file of `dir`. An unreadable directory or file is a diagnostic, and so is
/// an untrusted one (see the module documentation) unless the check is off.
pub fn load_dir(dir: &Path) -> Loaded {
    load_dir_with(dir, strict_modes() == Strict::Yes)
}

/// [`load_dir`] with the ownership and mode check on or off.
pub fn load_dir_with(dir: &Path, strict_modes: bool) -> Loaded {
    let strict = if strict_modes {
        Strict::Yes
    } else {
        Strict::No
    };
    let (sources, problems) = read_dir_with(dir, strict, None);
    parse_sources(&sources, problems)
}

/// The configuration files of `dir` as `(display name, text)` pairs, as [`load_dir`] reads them, and
/// the diagnostics of the files and directory that could not be read or are not trusted. Parsing them
/// with [`load_sources`] (plus these diagnostics) is [`load_dir`]; the daemon keeps the texts of the last
/// valid configuration, a tenth of the size of its model, to parse them again when interfaces change.
pub fn read_dir(dir: &Path) -> (Vec<(String, String)>, Vec<Diagnostic>) {
    read_dir_with(dir, strict_modes(), None)
}

/// [`read_dir`], refusing the directory when its way goes through a symbolic link that was not there
/// when `pins` were taken ([`DirPins`]).
pub fn read_dir_pinned(dir: &Path, pins: &DirPins) -> (Vec<(String, String)>, Vec<Diagnostic>) {
    read_dir_with(dir, strict_modes(), Some(pins))
}

/// Why `dir` or one of its configuration files is not trusted, whatever `--strict-modes` says: the
/// daemon asks before it applies a directory that suddenly holds no HostEndpoint for its node.
/// Nothing is read.
pub fn trust_problems(dir: &Path) -> Vec<Diagnostic> {
    let opened = match trust::open_dir(dir, Strict::Yes) {
        Ok(d) => d,
        Err(p) => return vec![dir_problem(dir, p)],
    };
    let Ok(names) = trust::names(&opened, MAX_ENTRIES) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names {
        let Some(text) = name.to_str().filter(|n| is_config_name(n)) else {
            continue;
        };
        if let Err(p @ Problem::Untrusted { .. }) = trust::open_in(&opened, &name, Strict::Yes) {
            out.push(file_problem(&dir.join(text).display().to_string(), p));
        }
    }
    out
}

fn dir_error(message: String) -> Diagnostic {
    Diagnostic::new(Severity::Error, None, message)
}

/// The diagnostic of a configuration directory that cannot be opened or is not trusted.
fn dir_problem(dir: &Path, p: Problem) -> Diagnostic {
    let name = dir.display();
    match p {
        Problem::Untrusted { path, why } => {
            let which = if path == dir || fs::canonicalize(dir).is_ok_and(|c| c == path) {
                String::new()
            } else {
                format!("the directory {} on its way is ", path.display())
            };
            let fix = if which.is_empty() {
                name.to_string()
            } else {
                path.display().to_string()
            };
            dir_error(format!(
                "refusing the configuration directory {name}: {which}{}; run {} {fix} (or run with \
                 --strict-modes=no)",
                why.why, why.fix
            ))
        }
        p => dir_error(format!(
            "cannot read the configuration directory {name}: {p}"
        )),
    }
}

/// The diagnostic of a configuration file that was not read (`name` as displayed).
fn file_problem(name: &str, p: Problem) -> Diagnostic {
    match p {
        Problem::Untrusted { path, why } => {
            let which =
                if path == Path::new(name) || fs::canonicalize(name).is_ok_and(|c| c == path) {
                    String::new()
                } else {
                    format!("{} on its way is ", path.display())
                };
            file_error(
                name,
                &format!(
                    "is not trusted: {which}{}; run {} {} (or run with --strict-modes=no)",
                    why.why,
                    why.fix,
                    if which.is_empty() {
                        name.to_string()
                    } else {
                        path.display().to_string()
                    }
                ),
            )
        }
        Problem::NotRegular(what) => file_error(name, &format!("is {what}, not a regular file")),
        Problem::TooBig { limit } => file_error(name, &format!("holds more than {limit} bytes")),
        Problem::Io(e) => file_error(name, &format!("cannot be read: {e}")),
    }
}

fn read_dir_with(
    dir: &Path,
    strict: Strict,
    pins: Option<&DirPins>,
) -> (Vec<(String, String)>, Vec<Diagnostic>) {
    let opened = match trust::open_dir(dir, strict) {
        Ok(d) => d,
        Err(p) => return (Vec::new(), vec![dir_problem(dir, p)]),
    };
    if let Some(pins) = pins {
        if let Some(link) = opened.links.iter().find(|l| !pins.links.contains(*l)) {
            let message = format!(
                "refusing the configuration directory {}: {} is a symbolic link that was not there when \
                 hostpolicyd started (it now leads to {}); nothing is applied until it is put back or \
                 hostpolicyd is restarted",
                dir.display(),
                link.display(),
                opened.real.display()
            );
            return (Vec::new(), vec![dir_error(message)]);
        }
    }
    let names = match trust::names(&opened, MAX_ENTRIES) {
        Ok(n) => n,
        Err(e) => {
            let message = format!(
                "cannot read the configuration directory {}: {e}",
                dir.display()
            );
            return (Vec::new(), vec![dir_error(message)]);
        }
    };
    let mut problems = Vec::new();
    let mut files: Vec<(String, std::ffi::OsString)> = Vec::new();
    for name in names {
        match name.to_str() {
            Some(text) if is_config_name(text) => files.push((text.to_owned(), name)),
            Some(_) => {}
            None => {
                let lossy = name.to_string_lossy();
                if is_config_name(&lossy) {
                    problems.push(Diagnostic::new(
                        Severity::Warning,
                        None,
                        format!(
                            "skipping {}: the name is not UTF-8 (rename it to load it)",
                            dir.join(&*lossy).display()
                        ),
                    ));
                }
            }
        }
    }
    if files.len() > MAX_FILES {
        problems.push(dir_error(too_many_files(dir, files.len())));
        return (Vec::new(), problems);
    }
    files.sort();
    let mut budget = InputBudget::default();
    let mut sources = Vec::with_capacity(files.len());
    for (i, (text, name)) in files.iter().enumerate() {
        let display = dir.join(text).display().to_string();
        let opened_file = trust::open_in(&opened, name, strict);
        match read_file(opened_file, &display, &mut budget, files.len() - i - 1) {
            Read::Text(t) => sources.push((display, t)),
            Read::Skipped(d) => problems.push(d),
            Read::Failed(d) => problems.push(d),
            Read::Spent(d) => {
                // Refused whatever the files say: parsing the 64 MiB read so far would only cost time.
                sources.clear();
                problems.push(d);
                break;
            }
        }
    }
    (sources, problems)
}

fn too_many_files(dir: &Path, n: usize) -> String {
    format!(
        "refusing the configuration directory {}: it holds {n} configuration files, more than the {MAX_FILES} \
         hostpolicyd reads (hostpolicy.d(5), \"Limits\"); none was read",
        dir.display()
    )
}

/// The bytes read so far, and by which files.
#[derive(Default)]
struct InputBudget {
    spent: u64,
    files: Vec<(String, u64)>,
}

/// What became of one file.
enum Read {
    Text(String),
    /// Not a regular file: a warning.
    Skipped(Diagnostic),
    /// Not read (untrusted, unreadable, not UTF-8): an error.
    Failed(Diagnostic),
    /// The input budget is spent: an error, and no file after this one is read.
    Spent(Diagnostic),
}

/// Reads one opened file within what is left of the budget. `after`: how many files were to be read
/// after this one (for the message when the budget is spent).
fn read_file(
    opened: Result<OpenFile, Problem>,
    name: &str,
    budget: &mut InputBudget,
    after: usize,
) -> Read {
    let mut f = match opened {
        Ok(f) => f,
        Err(Problem::NotRegular(what)) => {
            return Read::Skipped(file_warning(
                name,
                &format!("is {what}, not a regular file: skipped"),
            ))
        }
        Err(p) => return Read::Failed(file_problem(name, p)),
    };
    let left = MAX_INPUT_BYTES - budget.spent;
    match trust::read_bounded(&mut f, left) {
        Ok(bytes) => {
            budget.spent += bytes.len() as u64;
            budget.files.push((name.to_owned(), bytes.len() as u64));
            match String::from_utf8(bytes) {
                Ok(text) => Read::Text(text),
                Err(err) => Read::Failed(file_error(
                    name,
                    &format!("is not UTF-8 text ({})", err.utf8_error()),
                )),
            }
        }
        Err(Problem::TooBig { .. }) => {
            let size = f.meta.len().max(left + 1);
            budget.files.push((name.to_owned(), size));
            Read::Spent(Diagnostic::error(
                file_pos(name),
                format!(
                    "{name} goes past the input limit: {}",
                    spent_message(budget, after)
                ),
            ))
        }
        Err(p) => Read::Failed(file_problem(name, p)),
    }
}

/// The error of a spent input budget: the limit, and the files that spent it (the biggest first).
fn spent_message(budget: &InputBudget, after: usize) -> String {
    let mut biggest: Vec<&(String, u64)> = budget.files.iter().collect();
    biggest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let shown: Vec<String> = biggest
        .iter()
        .take(5)
        .map(|(n, size)| format!("{n} ({})", bytes_text(*size)))
        .collect();
    let others = biggest.len().saturating_sub(shown.len());
    let others = match others {
        0 => String::new(),
        n => format!(" and {n} other file{}", if n == 1 { "" } else { "s" }),
    };
    let skipped = match after {
        0 => String::new(),
        n => format!(
            "; the {n} file{} after it were not read",
            if n == 1 { "" } else { "s" }
        ),
    };
    let skipped = format!("{skipped}; none was parsed");
    format!(
        "the configuration files hold more than {} in all, the most hostpolicyd reads (hostpolicy.d(5), \
         \"Limits\"): spent by {}{others}{skipped}",
        bytes_text(MAX_INPUT_BYTES),
        shown.join(", ")
    )
}

/// `64 MiB`, `1.5 MiB`, `812 KiB`, `95 bytes`.
fn bytes_text(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= MIB {
        let tenths = (n * 10 + MIB / 2) / MIB;
        if tenths % 10 == 0 {
            format!("{} MiB", tenths / 10)
        } else {
            format!("{}.{} MiB", tenths / 10, tenths % 10)
        }
    } else if n >= 1024 {
        format!("{} KiB", (n + 512) / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// Load the given files, whatever their names (`hostpolicyd check FILE...`, Ansible's temporary file).
/// Ownership is not judged; anything but a regular file is an error, and the input limits apply.
pub fn load_files(paths: &[PathBuf]) -> Loaded {
    let mut problems = Vec::new();
    let mut sources = Vec::with_capacity(paths.len());
    if paths.len() > MAX_FILES {
        problems.push(dir_error(format!(
            "{} files given, more than the {MAX_FILES} hostpolicyd reads (hostpolicy.d(5), \"Limits\"); \
             none was read",
            paths.len()
        )));
        return parse_sources(&sources, problems);
    }
    let mut budget = InputBudget::default();
    for (i, path) in paths.iter().enumerate() {
        let name = path.display().to_string();
        match read_file(
            trust::open_file(path, Strict::No),
            &name,
            &mut budget,
            paths.len() - i - 1,
        ) {
            Read::Text(t) => sources.push((name, t)),
            // Named on the command line: not a regular file is an error here.
            Read::Skipped(mut d) => {
                d.severity = Severity::Error;
                d.message = d.message.replace(": skipped", "");
                problems.push(d);
            }
            Read::Failed(d) => problems.push(d),
            Read::Spent(d) => {
                sources.clear();
                problems.push(d);
                break;
            }
        }
    }
    parse_sources(&sources, problems)
}

/// [`load_sources`], with the diagnostics of files that could not be read, in file order.
pub fn parse_sources(sources: &[(String, String)], problems: Vec<Diagnostic>) -> Loaded {
    let mut loaded = load_sources(sources);
    loaded.diagnostics.extend(problems);
    diag::sort(&mut loaded.diagnostics);
    loaded
}

fn file_pos(name: &str) -> Pos {
    Pos {
        file: Arc::from(name),
        line: 1,
        column: 1,
    }
}

fn file_error(name: &str, what: &str) -> Diagnostic {
    Diagnostic::error(file_pos(name), format!("{name} {what}"))
}

fn file_warning(name: &str, what: &str) -> Diagnostic {
    Diagnostic::warning(file_pos(name), format!("{name} {what}"))
}

/// Load configuration texts: `(display name, text)` pairs, parsed and validated in parallel
/// ([`crate::config::cache`]). Pure: no file system.
pub fn load_sources(sources: &[(String, String)]) -> Loaded {
    crate::config::cache::load_sources(sources)
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
