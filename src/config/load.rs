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

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::cache::{load_sources_sequential, merged, parse_files, Parsed};
use crate::config::diag::{self, Diagnostic, Severity};
use crate::config::model::Pos;
use crate::trust::{self, FileKey, OpenDir, OpenFile, Problem, Strict};

/// The most configuration files read from one directory (or given to `check`).
pub const MAX_FILES: usize = 10_000;
/// The most bytes of configuration read in all, over every file (64 MiB).
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;
/// The most entries of any kind listed in the configuration directory.
const MAX_ENTRIES: usize = 1_000_000;

pub use crate::config::cache::Loaded;

/// The `(display name, text)` pairs of the files a [`Reader::load`] read, in file order. The texts are
/// the reader's own, shared: the daemon keeps them (to parse again when interfaces change, and for
/// `applied-config.json`) without a copy of each file.
pub type Sources = Vec<(String, Arc<str>)>;

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
    if let Some(d) = pins.and_then(|p| pinned(dir, &opened, p)) {
        return (Vec::new(), vec![d]);
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
    let (files, odd) = config_entries(dir, names);
    let mut problems: Vec<Diagnostic> = odd.into_values().collect();
    if files.len() > MAX_FILES {
        problems.push(dir_error(too_many_files(dir, files.len())));
        return (Vec::new(), problems);
    }
    // Many files: the second half is read on another core meanwhile (10,000 files: ~25 ms of
    // opening and reading on one). Each half counts its own bytes; when the two together went past
    // the input budget, the directory is read again in order for the exact error.
    let two = files.len() >= READ_ON_TWO_THREADS_FROM
        && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && !read_on_one_thread();
    if two {
        let (first, second) = files.split_at(files.len() / 2);
        let read_part = |part: &[(String, std::ffi::OsString)], after: usize| {
            let mut budget = InputBudget::default();
            let mut sources = Vec::with_capacity(part.len());
            let mut problems = Vec::new();
            for (i, (text, name)) in part.iter().enumerate() {
                let display = dir.join(text).display().to_string();
                let opened_file = trust::open_in(&opened, name, strict);
                match read_file(
                    opened_file,
                    &display,
                    &mut budget,
                    after + part.len() - i - 1,
                ) {
                    Read::Text(t) => sources.push((display, t)),
                    Read::Skipped(d) | Read::Failed(d) => problems.push(d),
                    Read::Spent(_) => return None,
                }
            }
            Some((sources, problems, budget.spent))
        };
        let (a, b) = std::thread::scope(|s| {
            let later = s.spawn(|| read_part(second, 0));
            let a = read_part(first, second.len());
            (
                a,
                later
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            )
        });
        if let (Some((mut sources, pa, spent_a)), Some((sb, pb, spent_b))) = (a, b) {
            if spent_a + spent_b <= MAX_INPUT_BYTES {
                sources.extend(sb);
                problems.extend(pa);
                problems.extend(pb);
                return (sources, problems);
            }
        }
    }
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

/// From this many files a full read uses two threads.
const READ_ON_TWO_THREADS_FROM: usize = 256;

#[cfg(not(test))]
fn read_on_one_thread() -> bool {
    false
}

#[cfg(test)]
thread_local! {
    /// Tests: the reading in order that the two-thread read must equal.
    static ONE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn read_on_one_thread() -> bool {
    ONE_THREAD.with(|c| c.get())
}

/// The daemon's reader of the configuration directory: a reload reads only the files that changed.
///
/// It keeps, for every configuration entry of the directory, what the last read found: the text of a
/// regular file with its [`FileKey`] (from `fstat` of the descriptor it was read from) and its parsed
/// parts ([`Parsed`]), or the diagnostic of an entry that was not read. A [`Reader::load`] then does
/// one of two things:
///
/// - **Event-driven** (the usual reload): only the names the directory's watch reported since the last
///   read ([`Reader::changed`]) are opened and read again, through the same path as a full read
///   (`O_NOFOLLOW | O_NONBLOCK`, `fstat` of the descriptor, regular files only, trust checks, bounded
///   reads); a reported name that is no longer there is dropped. Every other file is taken as it was,
///   without a system call. Entries that were not read (a FIFO, an untrusted file, anything not
///   UTF-8), files reached through a symbolic link (whose target's directory is not watched) and files
///   with more than one hard link (`fstat`'s link count: written through another name, the change is
///   reported under that name only) are opened again at every load, as before. When a read file has
///   more than one link, the other names of the directory that hold the same file (read when it had
///   one, before `ln a.yaml b.yaml`) are read too.
/// - **Full sweep**: the directory is listed, every entry is `fstatat`-ed, and those whose key differs
///   from the one they were read with (or that are new) are read, and so is every name the watch
///   reported since the last load whatever its key (a same-size rewrite within one tick of the coarse
///   clock may keep the key). At the first load, after
///   [`Reader::rescan`] (SIGHUP, `hostpolicyd reload`, a watch that lost events or saw the directory
///   replaced), after any failed load, and whenever the walk to the directory ([`trust::Way`], redone
///   at every load: O(depth)) differs from the last one: a directory on the way replaced, re-pointed
///   or chmod'ed.
///
/// **Why a file taken as it was is what a read would give.** inotify on the directory reports every
/// create, write, close after writing, rename into or out of it, delete and metadata change (mode,
/// owner, times, link count: IN_ATTRIB) of its entries, in order and before the change is visible to
/// anyone who looks afterwards; the names reported since the last read are read again, so a name not
/// reported still holds the file, contents, owner and mode it was read with. When events may have been
/// lost (the kernel's queue overflowed), or the directory itself was replaced, the next load is a full
/// sweep, and a sweep trusts a [`FileKey`] only when device, inode, size, mtime, ctime, type, mode,
/// owner and group are all equal: ctime is set by the kernel at every change of contents or attributes
/// and cannot be set back by anyone.
///
/// **The one limit.** inotify reports events of a directory's entries as seen through that directory
/// (a new link of a file is an event of the new name's directory only): a write to the same file
/// through a hard link made in another directory after the file was read (or a bind mount over an
/// entry) is not an event of this one, so the file is read again only at the next full sweep (whose
/// key check sees it: the ctime changed). With `--strict-modes` (the default) the files are owned by
/// root and not writable by others, so only root can do that; `systemctl reload hostpolicyd` reads
/// everything. (A file that already had other links when it was read is read at every load.)
///
/// **Accepted differences from [`load_dir`].** An event-driven load does not list the directory, so
/// the limit of `MAX_ENTRIES` names of any kind (non-configuration names included) is checked only at
/// full sweeps. A directory removed and recreated under the same name that happens to get the same
/// inode (so the same walk) is caught by the watch's DirReplaced rescan, which makes the next load a
/// full sweep, not by the walk's comparison.
///
/// Whatever the path, the input limits bound the whole directory ([`MAX_FILES`], [`MAX_INPUT_BYTES`],
/// the YAML budgets) and the diagnostics are those of [`load_dir`]: each read stops at what the other
/// files leave of [`MAX_INPUT_BYTES`], before anything is parsed, and a load that goes past a limit is
/// done again by the plain sequential read, for its exact error.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    /// The walk of the last load that read the directory; None: the next load is a full sweep.
    way: Option<trust::Way>,
    /// Every configuration entry as last read, by display name (so in file order).
    files: BTreeMap<String, Entry>,
    /// Names in the directory not UTF-8 but otherwise configuration names: a warning each.
    odd: BTreeMap<OsString, Diagnostic>,
    /// Names the watch reported since the last load.
    changed: BTreeSet<OsString>,
    last: ReadUse,
    /// Bytes read by this reader's own reads, all loads together (not the plain read's after a limit).
    #[cfg_attr(not(test), allow(dead_code))]
    bytes_read: u64,
}

/// What a [`Reader::load`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadUse {
    /// A full sweep (listing and `fstatat` of every entry) rather than the reported names only.
    pub full: bool,
    /// Entries opened (and read, when regular files).
    pub read: usize,
    /// Files parsed and validated.
    pub parsed: usize,
    /// Files whose parsed parts were used as they were.
    pub reused: usize,
}

#[derive(Debug)]
struct Entry {
    name: OsString,
    got: Got,
}

#[derive(Debug)]
enum Got {
    /// Read: its text, and its parts once parsed. `key`: None when reached through a symbolic link
    /// (read again at every load). `previous`: until it is parsed, the parts of the text it replaced,
    /// whose unchanged resources the new parts take instead of their own copies
    /// ([`Parsed::share_unchanged`]).
    Text {
        key: Option<FileKey>,
        text: Arc<str>,
        parsed: Option<Parsed>,
        previous: Option<Parsed>,
    },
    /// Not read (skipped: a warning; failed: an error), and the bytes spent on it (a file that is not
    /// UTF-8 was read): opened again at every load.
    Problem { diagnostic: Diagnostic, spent: u64 },
}

impl Entry {
    fn spent(&self) -> u64 {
        match &self.got {
            Got::Text { text, .. } => text.len() as u64,
            Got::Problem { spent, .. } => *spent,
        }
    }

    /// Taken as it was, unless reported: a file of the directory itself.
    fn stable(&self) -> bool {
        matches!(self.got, Got::Text { key: Some(_), .. })
    }
}

/// A read that went past [`MAX_INPUT_BYTES`] (the plain read is done again for its exact error).
struct Over;

impl Reader {
    /// A reader of `dir`; its first load is a full sweep.
    pub fn new(dir: &Path) -> Reader {
        Reader {
            dir: dir.to_path_buf(),
            way: None,
            files: BTreeMap::new(),
            odd: BTreeMap::new(),
            changed: BTreeSet::new(),
            last: ReadUse::default(),
            bytes_read: 0,
        }
    }

    /// The watch reported a change of the entry `name` of the directory: the next load reads it.
    pub fn changed(&mut self, name: &OsStr) {
        self.changed.insert(name.to_os_string());
    }

    /// The next load is a full sweep.
    pub fn rescan(&mut self) {
        self.way = None;
    }

    /// What the last load did.
    pub fn last_use(&self) -> ReadUse {
        self.last
    }

    fn display(&self, text: &str) -> String {
        self.dir.join(text).display().to_string()
    }

    /// Loads the directory as [`load_dir`] does (with `pins` as [`read_dir_pinned`]), reading only what
    /// may have changed (see [`Reader`]); returns the load (its diagnostics sorted, those of the files
    /// that could not be read included) and the `(display name, text)` pairs of the files read.
    pub fn load(&mut self, pins: Option<&DirPins>) -> (Loaded, Sources) {
        let strict = strict_modes();
        let changed = std::mem::take(&mut self.changed);
        let way = self.way.take();
        let opened = match trust::open_dir(&self.dir, strict) {
            Ok(d) => d,
            Err(p) => return self.refused(vec![dir_problem(&self.dir, p)]),
        };
        if let Some(d) = pins.and_then(|p| pinned(&self.dir, &opened, p)) {
            return self.refused(vec![d]);
        }
        let full = way.as_ref() != Some(&opened.way);
        self.last = ReadUse {
            full,
            ..ReadUse::default()
        };
        let read = if full {
            self.sweep(&opened, strict, &changed)
        } else {
            self.update(&opened, strict, changed)
        };
        match read {
            Ok(Ok(())) => {}
            Ok(Err(problems)) => return self.refused(problems),
            Err(Over) => return self.plain(pins),
        }
        if self.files.len() > MAX_FILES {
            let mut problems: Vec<Diagnostic> = self.odd.values().cloned().collect();
            problems.push(dir_error(too_many_files(&self.dir, self.files.len())));
            return self.refused(problems);
        }
        let spent: u64 = self.files.values().map(Entry::spent).sum();
        if spent > MAX_INPUT_BYTES {
            return self.plain(pins);
        }
        let Some(mut loaded) = self.parse() else {
            return self.plain(pins);
        };
        loaded.diagnostics.extend(self.odd.values().cloned());
        for e in self.files.values() {
            if let Got::Problem { diagnostic, .. } = &e.got {
                loaded.diagnostics.push(diagnostic.clone());
            }
        }
        diag::sort(&mut loaded.diagnostics);
        self.way = Some(opened.way);
        (loaded, self.sources())
    }

    /// Lists the directory and reads every entry whose key is not the one it was read with, and every
    /// name the watch reported (a same-size rewrite within one tick of the clock keeps the key).
    fn sweep(
        &mut self,
        opened: &OpenDir,
        strict: Strict,
        changed: &BTreeSet<OsString>,
    ) -> Result<Result<(), Vec<Diagnostic>>, Over> {
        let names = match trust::names(opened, MAX_ENTRIES) {
            Ok(n) => n,
            Err(e) => {
                let message = format!(
                    "cannot read the configuration directory {}: {e}",
                    self.dir.display()
                );
                return Ok(Err(vec![dir_error(message)]));
            }
        };
        let (files, odd) = config_entries(&self.dir, names);
        self.odd = odd;
        if files.len() > MAX_FILES {
            // Nothing read: the count alone refuses it.
            self.files.clear();
            let mut problems: Vec<Diagnostic> = self.odd.values().cloned().collect();
            problems.push(dir_error(too_many_files(&self.dir, files.len())));
            return Ok(Err(problems));
        }
        let mut old = std::mem::take(&mut self.files);
        // The bytes of the entries kept or read so far: the input limit covers the whole directory.
        let mut spent = 0;
        for (text, name) in files {
            let display = self.display(&text);
            let before = old.remove(&display);
            let kept = match &before {
                Some(Entry {
                    got: Got::Text { key: Some(k), .. },
                    ..
                }) if !changed.contains(&name) => {
                    trust::key_in(opened, &name).is_ok_and(|now| now == *k)
                }
                _ => false,
            };
            let entry = match before {
                Some(e) if kept => e,
                before => {
                    let before = before.and_then(|e| match e.got {
                        Got::Text { text, parsed, .. } => Some((text, parsed)),
                        Got::Problem { .. } => None,
                    });
                    self.read(opened, name, &display, strict, before, spent)?.0
                }
            };
            spent += entry.spent();
            self.files.insert(display, entry);
        }
        Ok(Ok(()))
    }

    /// Reads the reported names and the entries that are read at every load; takes the rest as it was.
    fn update(
        &mut self,
        opened: &OpenDir,
        strict: Strict,
        changed: BTreeSet<OsString>,
    ) -> Result<Result<(), Vec<Diagnostic>>, Over> {
        let volatile: Vec<(String, OsString)> = self
            .files
            .iter()
            .filter(|(_, e)| !e.stable())
            .map(|(d, e)| (d.clone(), e.name.clone()))
            .collect();
        let reported = changed.into_iter().filter_map(|name| match name.to_str() {
            Some(text) if is_config_name(text) => Some((self.display(text), name)),
            Some(_) => None,
            None => {
                // Not UTF-8: never read, a warning while it is there.
                let lossy = name.to_string_lossy();
                if is_config_name(&lossy) {
                    let warning = odd_warning(&self.dir, &lossy);
                    match trust::key_in(opened, &name) {
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            self.odd.remove(&name);
                        }
                        _ => {
                            self.odd.insert(name, warning);
                        }
                    }
                }
                None
            }
        });
        let reported: Vec<(String, OsString)> = reported.collect();
        // The bytes of every entry: a read stops at what the others leave of the input limit.
        let mut spent: u64 = self.files.values().map(Entry::spent).sum();
        let mut shared = BTreeSet::new();
        let mut done = BTreeSet::new();
        let mut queue: Vec<(String, OsString)> = reported.into_iter().chain(volatile).collect();
        while !queue.is_empty() {
            for (display, name) in std::mem::take(&mut queue) {
                // What the file held before: its text is dropped once the new one is read (kept if
                // the same), its parts once the new ones took the resources that did not change
                // (the compile cache holds those until the compile is done: a second model of a big
                // file would be the daemon's peak memory).
                let before = match self.files.remove(&display) {
                    Some(e) => {
                        spent -= e.spent();
                        match e.got {
                            Got::Text { text, parsed, .. } => Some((text, parsed)),
                            Got::Problem { .. } => None,
                        }
                    }
                    None => None,
                };
                if let Err(e) = trust::key_in(opened, &name) {
                    if e.kind() == io::ErrorKind::NotFound {
                        continue;
                    }
                }
                let (entry, id) = self.read(opened, name, &display, strict, before, spent)?;
                spent += entry.spent();
                shared.extend(id);
                done.insert(display.clone());
                self.files.insert(display, entry);
            }
            // A file with hard links, written through one name: its other names in the directory
            // (taken as they were, read when it had one link) hold the same file; read them too.
            queue = self
                .files
                .iter()
                .filter(|(d, e)| match &e.got {
                    Got::Text { key: Some(k), .. } => {
                        !done.contains(*d) && shared.contains(&k.file_id())
                    }
                    _ => false,
                })
                .map(|(d, e)| (d.clone(), e.name.clone()))
                .collect();
        }
        Ok(Ok(()))
    }

    /// [`read_entry`], counted in [`ReadUse::read`] and [`Reader::bytes_read`].
    fn read(
        &mut self,
        opened: &OpenDir,
        name: OsString,
        display: &str,
        strict: Strict,
        before: Option<(Arc<str>, Option<Parsed>)>,
        spent: u64,
    ) -> Result<(Entry, Option<(u64, u64)>), Over> {
        self.last.read += 1;
        match read_entry(opened, name, display, strict, before, spent) {
            Ok((entry, id)) => {
                self.bytes_read += entry.spent();
                Ok((entry, id))
            }
            Err(Over) => {
                // read_bounded read one byte past what was left.
                self.bytes_read += MAX_INPUT_BYTES.saturating_sub(spent) + 1;
                Err(Over)
            }
        }
    }

    /// Parses the files read since they were last parsed, and merges every file's parts. None: over
    /// the YAML budgets.
    fn parse(&mut self) -> Option<Loaded> {
        let fresh: Vec<(&str, &str)> = self
            .files
            .iter()
            .filter_map(|(d, e)| match &e.got {
                Got::Text {
                    text, parsed: None, ..
                } => Some((d.as_str(), &**text)),
                _ => None,
            })
            .collect();
        let fresh_count = fresh.len();
        let parsed = parse_files(&fresh);
        let n = parsed.as_ref().map_or(0, Vec::len);
        let mut parsed = parsed.into_iter().flatten();
        for e in self.files.values_mut() {
            if let Got::Text {
                parsed: p @ None,
                previous,
                ..
            } = &mut e.got
            {
                *p = parsed.next();
                if let (Some(new), Some(old)) = (p.as_mut(), previous.take()) {
                    new.share_unchanged(&old);
                }
            }
        }
        if n != fresh_count {
            // Over the YAML budgets: nothing was parsed.
            return None;
        }
        let texts = self
            .files
            .values()
            .filter(|e| matches!(e.got, Got::Text { .. }));
        self.last.parsed = n;
        self.last.reused = texts.clone().count() - n;
        merged(texts.filter_map(|e| match &e.got {
            Got::Text { parsed, .. } => parsed.as_ref(),
            Got::Problem { .. } => None,
        }))
    }

    /// The `(display name, text)` pairs of the files read, in file order: the texts shared, not copied.
    fn sources(&self) -> Sources {
        self.files
            .iter()
            .filter_map(|(d, e)| match &e.got {
                Got::Text { text, .. } => Some((d.clone(), Arc::clone(text))),
                Got::Problem { .. } => None,
            })
            .collect()
    }

    /// A load refused before the files were read: the next one is a full sweep.
    fn refused(&mut self, problems: Vec<Diagnostic>) -> (Loaded, Sources) {
        self.way = None;
        (parse_sources(&[], problems), Vec::new())
    }

    /// A load past a limit: the plain sequential read, for its exact error; the next load is a full
    /// sweep.
    fn plain(&mut self, pins: Option<&DirPins>) -> (Loaded, Sources) {
        self.way = None;
        let (sources, problems) = read_dir_with(&self.dir, strict_modes(), pins);
        let loaded = parse_sources(&sources, problems);
        let sources = sources
            .into_iter()
            .map(|(n, t)| (n, Arc::from(t)))
            .collect();
        (loaded, sources)
    }

    /// Loads `sources` (the `(display name, text)` pairs of an earlier [`Reader::load`]) without reading
    /// anything, taking the parsed parts of the files that still hold the same text; the files read
    /// are left as they are.
    pub fn load_texts(&self, sources: &[(String, Arc<str>)]) -> Loaded {
        let cached = |name: &String, text: &Arc<str>| match self.files.get(name).map(|e| &e.got) {
            Some(Got::Text {
                text: t,
                parsed: Some(p),
                ..
            }) if Arc::ptr_eq(t, text) || t == text => Some(p.clone()),
            _ => None,
        };
        let fresh: Vec<(&str, &str)> = sources
            .iter()
            .filter(|(n, t)| cached(n, t).is_none())
            .map(|(n, t)| (n.as_str(), &**t))
            .collect();
        let Some(parsed) = parse_files(&fresh) else {
            return load_sources_sequential(sources);
        };
        let mut parsed = parsed.into_iter();
        let all: Vec<Parsed> = sources
            .iter()
            .filter_map(|(n, t)| cached(n, t).or_else(|| parsed.next()))
            .collect();
        merged(all.iter()).unwrap_or_else(|| load_sources_sequential(sources))
    }
}

/// Reads the entry `name` of `opened` into an entry; `before`: the text and parts it had, kept when
/// the text is the same (a chmod, a touch, a file written again with the same contents). `spent`:
/// the bytes of the directory's other entries, so that the read stops at what is left of
/// [`MAX_INPUT_BYTES`]. Also returns the file's (device, inode) when it has more than one hard link.
fn read_entry(
    opened: &OpenDir,
    name: OsString,
    display: &str,
    strict: Strict,
    before: Option<(Arc<str>, Option<Parsed>)>,
    spent: u64,
) -> Result<(Entry, Option<(u64, u64)>), Over> {
    use std::os::unix::fs::MetadataExt;
    let file = trust::open_in(opened, &name, strict);
    let shared = match &file {
        Ok(f) if f.meta.nlink() != 1 => Some((f.meta.dev(), f.meta.ino())),
        _ => None,
    };
    // A symbolic link's target, or a file with other hard links (written through another name, it
    // changes without an event of this one): read again at every load.
    let key = match &file {
        Ok(f) if !f.linked && shared.is_none() => Some(FileKey::of(&f.meta)),
        _ => None,
    };
    let mut budget = InputBudget {
        spent,
        files: Vec::new(),
    };
    let got = match read_file(file, display, &mut budget, 0) {
        Read::Text(text) => {
            // The same text as before (a chmod, a touch, the same contents written again): the text
            // and parts it had are kept, and the new copy dropped.
            let (text, parsed, previous) = match before {
                Some((t, p)) if *t == *text => (t, p, None),
                Some((_, p)) => (Arc::from(text), None, p),
                None => (Arc::from(text), None, None),
            };
            Got::Text {
                key,
                text,
                parsed,
                previous,
            }
        }
        Read::Skipped(diagnostic) | Read::Failed(diagnostic) => Got::Problem {
            diagnostic,
            spent: budget.spent - spent,
        },
        Read::Spent(_) => return Err(Over),
    };
    Ok((Entry { name, got }, shared))
}

/// The configuration names among `names`, as (text, name) sorted, and the warnings of the names that
/// would be configuration names but are not UTF-8.
fn config_entries(
    dir: &Path,
    names: Vec<OsString>,
) -> (Vec<(String, OsString)>, BTreeMap<OsString, Diagnostic>) {
    let mut files = Vec::new();
    let mut odd = BTreeMap::new();
    for name in names {
        match name.to_str() {
            Some(text) if is_config_name(text) => files.push((text.to_owned(), name)),
            Some(_) => {}
            None => {
                let lossy = name.to_string_lossy().into_owned();
                if is_config_name(&lossy) {
                    odd.insert(name, odd_warning(dir, &lossy));
                }
            }
        }
    }
    files.sort();
    (files, odd)
}

fn odd_warning(dir: &Path, lossy: &str) -> Diagnostic {
    Diagnostic::new(
        Severity::Warning,
        None,
        format!(
            "skipping {}: the name is not UTF-8 (rename it to load it)",
            dir.join(lossy).display()
        ),
    )
}

/// The error of a directory reached through a symbolic link that was not there at start.
fn pinned(dir: &Path, opened: &OpenDir, pins: &DirPins) -> Option<Diagnostic> {
    let link = opened.links.iter().find(|l| !pins.links.contains(*l))?;
    Some(dir_error(format!(
        "refusing the configuration directory {}: {} is a symbolic link that was not there when \
         hostpolicyd started (it now leads to {}); nothing is applied until it is put back or \
         hostpolicyd is restarted",
        dir.display(),
        link.display(),
        opened.real.display()
    )))
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
    let left = MAX_INPUT_BYTES.saturating_sub(budget.spent);
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

    /// Issue 18: a directory of many files, read on two threads, gives what reading it in order
    /// gives: the texts in file order, the skipped and unreadable files' diagnostics, and, when the
    /// two halves together go past the input limit, the exact error of the reading in order.
    #[test]
    fn many_files_read_on_two_threads_as_in_order() {
        let dir = std::env::temp_dir().join(format!("hostpolicyd-two-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        chmod(&dir, 0o755);
        for i in 0..300 {
            let p = dir.join(format!("p{i:03}.yaml"));
            match i {
                17 => fs::write(&p, b"name: \xff\n").unwrap(),
                230 => {
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &p,
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(0o644),
                        0,
                    )
                    .unwrap();
                    continue;
                }
                _ => fs::write(&p, policy(&format!("p{i}"), 1000 + i)).unwrap(),
            }
            chmod(&p, 0o644);
        }
        let in_order = |dir: &Path| {
            ONE_THREAD.with(|c| c.set(true));
            let r = read_dir(dir);
            ONE_THREAD.with(|c| c.set(false));
            r
        };
        let two = read_dir(&dir);
        assert_eq!(two.0.len(), 298);
        assert_eq!(two.1.len(), 2, "{:?}", two.1);
        assert_eq!(two, in_order(&dir));
        // 33 MiB in each half: each under the limit, past it together.
        let big = format!("#{}\n", "x".repeat(33 * 1024 * 1024));
        for i in [40, 260] {
            fs::write(dir.join(format!("p{i:03}.yaml")), &big).unwrap();
        }
        let two = read_dir(&dir);
        assert!(format!("{:?}", two.1).contains("goes past the input limit"));
        assert_eq!(two, in_order(&dir));
        fs::remove_dir_all(&dir).unwrap();
    }

    fn policy(name: &str, port: u32) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: {name}\nspec:\n  \
             selector: all()\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      \
             ports: [{port}]\n"
        )
    }

    /// What a load shows: the model, every diagnostic, the texts read.
    fn render(l: &Loaded, sources: &[(String, impl std::fmt::Debug)]) -> String {
        format!("{:?}\n{:#?}\n{sources:?}", l.config, l.diagnostics)
    }

    /// A full read of the directory, as `hostpolicyd check` and a restarted daemon see it.
    fn cold(dir: &Path) -> String {
        let (sources, problems) = read_dir(dir);
        render(&parse_sources(&sources, problems), &sources)
    }

    /// A temporary directory (removed on drop), trusted as the loader wants it.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let root = std::env::temp_dir()
                .join(format!("hostpolicyd-reader-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("conf")).unwrap();
            fs::create_dir_all(root.join("elsewhere")).unwrap();
            for d in [&root, &root.join("conf"), &root.join("elsewhere")] {
                chmod(d, 0o755);
            }
            Dir(root)
        }
        fn conf(&self) -> PathBuf {
            self.0.join("conf")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A small deterministic random source (xorshift), so that a failure can be replayed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// After any sequence of writes (in place and renamed into place), renames, deletes, chmods,
    /// FIFOs, symbolic links (with their target changed behind the directory's back), invalid and
    /// non-UTF-8 files and names defined twice, a load that reads only the names the watch reported
    /// equals a full read of the directory: the same model, diagnostics and texts.
    #[test]
    fn an_event_driven_load_equals_a_full_load_after_random_changes() {
        let t = Dir::new("random");
        let conf = t.conf();
        let names: Vec<String> = (0..8).map(|i| format!("{i}-file.yaml")).collect();
        let target = t.0.join("elsewhere/target.yaml");
        fs::write(&target, policy("target", 1)).unwrap();
        chmod(&target, 0o644);
        for seed in [1u64, 7, 42, 1234, 99_999] {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            for n in &names {
                let _ = fs::remove_file(conf.join(n));
            }
            let mut reader = Reader::new(&conf);
            let (l, s) = reader.load(None);
            assert_eq!(render(&l, &s), cold(&conf), "seed {seed}: first load");
            assert!(reader.last_use().full);
            let mut version = 0u32;
            for step in 0..120 {
                // 1 to 3 changes, then the load, told the names the watch would report.
                let mut reported: Vec<String> = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    version += 1;
                    let a = names[rng.below(names.len())].clone();
                    let b = names[rng.below(names.len())].clone();
                    let (pa, pb) = (conf.join(&a), conf.join(&b));
                    // Same name in two files now and then: duplicates across files.
                    let text = policy(&format!("p{}", rng.below(6)), version);
                    let what = rng.below(11);
                    match what {
                        0 => {
                            let _ = fs::remove_file(&pa);
                            fs::write(&pa, &text).unwrap();
                            chmod(&pa, 0o644);
                        }
                        1 => {
                            // In place (same inode): truncate and write.
                            if fs::symlink_metadata(&pa).is_ok_and(|m| m.is_file()) {
                                fs::write(&pa, &text).unwrap();
                            }
                        }
                        2 => {
                            let tmp = conf.join(".tmp");
                            fs::write(&tmp, &text).unwrap();
                            chmod(&tmp, 0o644);
                            fs::rename(&tmp, &pa).unwrap();
                        }
                        3 => {
                            let _ = fs::remove_file(&pa);
                        }
                        4 => {
                            let _ = fs::rename(&pa, &pb);
                            reported.push(b.clone());
                        }
                        5 => {
                            if fs::symlink_metadata(&pa).is_ok_and(|m| m.is_file()) {
                                chmod(&pa, [0o644, 0o664, 0o600][rng.below(3)]);
                            }
                        }
                        6 => {
                            let _ = fs::remove_file(&pa);
                            rustix::fs::mknodat(
                                rustix::fs::CWD,
                                &pa,
                                rustix::fs::FileType::Fifo,
                                rustix::fs::Mode::from_raw_mode(0o644),
                                0,
                            )
                            .unwrap();
                        }
                        7 => {
                            let _ = fs::remove_file(&pa);
                            std::os::unix::fs::symlink(&target, &pa).unwrap();
                        }
                        8 => {
                            // The link's target changed: no event in the directory.
                            fs::write(&target, policy("target", version)).unwrap();
                        }
                        9 => {
                            let _ = fs::remove_file(&pa);
                            let bad: &[u8] = if rng.below(2) == 0 {
                                b"kind: [\n"
                            } else {
                                b"\xff\xfe not UTF-8\n"
                            };
                            fs::write(&pa, bad).unwrap();
                            chmod(&pa, 0o644);
                        }
                        _ => {
                            // Only touched (times): a metadata event.
                            if fs::symlink_metadata(&pa).is_ok_and(|m| m.is_file()) {
                                let f = fs::File::options().append(true).open(&pa).unwrap();
                                f.set_modified(std::time::SystemTime::now()).unwrap();
                            }
                        }
                    }
                    if what != 8 {
                        reported.push(a);
                    }
                }
                for r in &reported {
                    reader.changed(OsStr::new(r));
                }
                if step % 40 == 39 {
                    reader.rescan();
                }
                let (l, s) = reader.load(None);
                assert_eq!(
                    render(&l, &s),
                    cold(&conf),
                    "seed {seed}, step {step}: {reported:?}"
                );
                assert_eq!(reader.last_use().full, step % 40 == 39, "step {step}");
            }
        }
    }

    /// Only the reported files are read and parsed again; a full sweep reads the files whose key
    /// changed, and a change on the way to the directory makes the next load a full sweep.
    #[test]
    fn only_reported_files_are_read_and_a_sweep_reads_what_changed() {
        let t = Dir::new("reported");
        let conf = t.conf();
        for i in 0..20 {
            let p = conf.join(format!("{i:02}.yaml"));
            fs::write(&p, policy(&format!("p{i}"), 1000 + i)).unwrap();
            chmod(&p, 0o644);
        }
        let mut reader = Reader::new(&conf);
        let (l, _) = reader.load(None);
        assert_eq!(l.config.policies.len(), 20);
        assert_eq!(
            reader.last_use(),
            ReadUse {
                full: true,
                read: 20,
                parsed: 20,
                reused: 0
            }
        );
        // One file changed and reported: read and parsed alone.
        fs::write(conf.join("05.yaml"), policy("p5", 7)).unwrap();
        reader.changed(OsStr::new("05.yaml"));
        let (l, s) = reader.load(None);
        assert_eq!(
            reader.last_use(),
            ReadUse {
                full: false,
                read: 1,
                parsed: 1,
                reused: 19
            }
        );
        assert_eq!(render(&l, &s), cold(&conf));
        // Written without an event (a hard link elsewhere, the documented limit): not seen by an
        // event-driven load; seen by the next sweep, which reads only that file (its key changed).
        fs::write(conf.join("06.yaml"), policy("p6", 8)).unwrap();
        let (l, _) = reader.load(None);
        assert!(format!("{:?}", l.config).contains("1006"), "not read again");
        assert_eq!(reader.last_use().read, 0);
        reader.rescan();
        let (l, s) = reader.load(None);
        assert_eq!(
            reader.last_use(),
            ReadUse {
                full: true,
                read: 1,
                parsed: 1,
                reused: 19
            }
        );
        assert_eq!(render(&l, &s), cold(&conf));
        // The directory chmod'ed (no event of its own entries): the walk differs, a full sweep.
        chmod(&conf, 0o750);
        fs::write(conf.join("07.yaml"), policy("p7", 9)).unwrap();
        let (l, s) = reader.load(None);
        assert!(reader.last_use().full);
        assert_eq!(render(&l, &s), cold(&conf));
        // Replaced by another directory under the same name: a full sweep of the new one.
        fs::rename(&conf, t.0.join("old")).unwrap();
        fs::create_dir(&conf).unwrap();
        chmod(&conf, 0o755);
        fs::write(conf.join("a.yaml"), policy("a", 1)).unwrap();
        chmod(&conf.join("a.yaml"), 0o644);
        let (l, s) = reader.load(None);
        assert!(reader.last_use().full);
        assert_eq!(l.config.policies.len(), 1);
        assert_eq!(render(&l, &s), cold(&conf));
        // Untrusted: refused; fixed: read again in full.
        chmod(&conf, 0o777);
        let (l, _) = reader.load(None);
        assert!(l.has_errors());
        chmod(&conf, 0o755);
        let (l, s) = reader.load(None);
        assert!(reader.last_use().full && !l.has_errors());
        assert_eq!(render(&l, &s), cold(&conf));
    }

    /// Issue 19's limit covers the whole directory in the reader too: files that fit one by one but
    /// not together are refused with the cold load's message, and a read stops at what the other
    /// files leave (at a full sweep and at an event-driven load alike).
    #[test]
    fn the_input_budget_is_counted_over_the_whole_directory_by_the_reader() {
        const MIB: usize = 1024 * 1024;
        let t = Dir::new("budget");
        let conf = t.conf();
        let write = |name: &str, text: &str| {
            let p = conf.join(name);
            fs::write(&p, text).unwrap();
            chmod(&p, 0o644);
        };
        // 33 MiB + 32 MiB: each under the limit, 65 MiB together.
        let comment = |n: usize| format!("#{}\n", "x".repeat(n - 2));
        write("a.yaml", &comment(33 * MIB));
        write("b.yaml", &comment(32 * MIB));
        let limit = MAX_INPUT_BYTES + 1;
        let mut reader = Reader::new(&conf);
        let (l, s) = reader.load(None);
        assert!(reader.last_use().full);
        assert!(
            reader.bytes_read <= limit,
            "a full sweep read {} bytes",
            reader.bytes_read
        );
        assert!(format!("{:?}", l.diagnostics).contains("goes past the input limit"));
        assert_eq!(render(&l, &s), cold(&conf));
        // Under the limit: read; then b.yaml grown past what a.yaml leaves, and reported.
        write("b.yaml", &policy("b", 1));
        let (l, _) = reader.load(None);
        assert!(!l.has_errors(), "{:?}", l.diagnostics);
        write("b.yaml", &comment(32 * MIB));
        reader.changed(OsStr::new("b.yaml"));
        let before = reader.bytes_read;
        let (l, s) = reader.load(None);
        assert!(!reader.last_use().full);
        let read = reader.bytes_read - before;
        assert!(
            read <= MAX_INPUT_BYTES - 33 * MIB as u64 + 1,
            "an event-driven load read {read} bytes of b.yaml"
        );
        assert_eq!(render(&l, &s), cold(&conf));
    }

    /// A reported name is read again by a full sweep even when its key is the one it was read with
    /// (a same-size rewrite within one tick of the coarse clock, before Linux 6.13's multigrain
    /// timestamps: simulated by giving the kept entry the file's new key).
    #[test]
    fn a_full_sweep_reads_the_reported_names_whatever_their_key() {
        let t = Dir::new("sweepchanged");
        let conf = t.conf();
        let a = conf.join("a.yaml");
        fs::write(&a, policy("a", 1000)).unwrap();
        chmod(&a, 0o644);
        let mut reader = Reader::new(&conf);
        reader.load(None);
        // Rewritten in place, same size; the watch reports it; a rescan comes first.
        fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .and_then(|mut f| io::Write::write_all(&mut f, policy("a", 2000).as_bytes()))
            .unwrap();
        let opened = trust::open_dir(&conf, strict_modes()).unwrap();
        let now = trust::key_in(&opened, OsStr::new("a.yaml")).unwrap();
        for e in reader.files.values_mut() {
            if let Got::Text { key: Some(k), .. } = &mut e.got {
                *k = now;
            }
        }
        reader.changed(OsStr::new("a.yaml"));
        reader.rescan();
        let (l, s) = reader.load(None);
        assert!(reader.last_use().full);
        assert!(
            format!("{:?}", l.config).contains("2000"),
            "a.yaml not read"
        );
        assert_eq!(render(&l, &s), cold(&conf));
    }

    /// A file with two names in the directory (`ln a.yaml b.yaml`) written through one of them: the
    /// other name shows the new text too, as a cold load does.
    #[test]
    fn a_file_hard_linked_in_the_directory_is_read_again_through_every_name() {
        let t = Dir::new("hardlink");
        let conf = t.conf();
        let (a, b) = (conf.join("a.yaml"), conf.join("b.yaml"));
        fs::write(&a, policy("a", 1000)).unwrap();
        chmod(&a, 0o644);
        let mut reader = Reader::new(&conf);
        reader.load(None);
        let rewrite = |port: u32| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&b)
                .unwrap();
            io::Write::write_all(&mut f, policy("a", port).as_bytes()).unwrap();
        };
        // Linked and written in one burst: only b.yaml is reported.
        fs::hard_link(&a, &b).unwrap();
        rewrite(2000);
        reader.changed(OsStr::new("b.yaml"));
        let (l, s) = reader.load(None);
        assert!(!reader.last_use().full);
        assert_eq!(render(&l, &s), cold(&conf));
        // Written again through b.yaml, a later load.
        rewrite(3000);
        reader.changed(OsStr::new("b.yaml"));
        let (l, s) = reader.load(None);
        assert!(!format!("{:?}", l.config).contains("2000"), "a.yaml stale");
        assert_eq!(render(&l, &s), cold(&conf));
        // And through a.yaml, after a load that saw the link alone.
        fs::remove_file(&b).unwrap();
        reader.changed(OsStr::new("b.yaml"));
        reader.load(None);
        fs::hard_link(&a, &b).unwrap();
        reader.changed(OsStr::new("b.yaml"));
        reader.load(None);
        rewrite(4000);
        reader.changed(OsStr::new("b.yaml"));
        let (l, s) = reader.load(None);
        assert!(!format!("{:?}", l.config).contains("3000"), "a.yaml stale");
        assert_eq!(render(&l, &s), cold(&conf));
    }

    /// The texts are shared between the reader and the loads it gave (the daemon keeps the last valid
    /// one's): a file changed in place is quoted by its diagnostics as it is now, an earlier load's
    /// texts stay what they were, and the resources a changed file did not change are shared with the
    /// previous parse (the compile cache finds them by pointer) while the load equals a cold one.
    #[test]
    fn shared_texts_follow_the_files_and_unchanged_resources_are_shared() {
        let t = Dir::new("shared");
        let conf = t.conf();
        let a = conf.join("a.yaml");
        let file = |ports: [&str; 3]| {
            format!(
                "{}---\n{}---\n{}",
                policy("p0", 1).replace("[1]", ports[0]),
                policy("p1", 1).replace("[1]", ports[1]),
                policy("p2", 1).replace("[1]", ports[2])
            )
        };
        fs::write(&a, file(["[10]", "[11]", "[12]"])).unwrap();
        chmod(&a, 0o644);
        let mut reader = Reader::new(&conf);
        let (first, first_sources) = reader.load(None);
        assert!(!first.has_errors(), "{:?}", first.diagnostics);
        // One policy's port out of range.
        fs::write(&a, file(["[10]", "[70000]", "[12]"])).unwrap();
        reader.changed(OsStr::new("a.yaml"));
        let (bad, bad_sources) = reader.load(None);
        let said: Vec<String> = bad.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            said.iter()
                .any(|m| m.contains(&format!("{}:23:15:", a.display())) && m.contains("70000")),
            "the diagnostic quotes the file as it is now: {said:?}"
        );
        assert_eq!(render(&bad, &bad_sources), cold(&conf));
        assert_ne!(first_sources[0].1, bad_sources[0].1);
        assert!(
            first_sources[0].1.contains("[11]"),
            "an earlier load's texts are what that load read"
        );
        // Valid again, one port changed: p0 and p2 are the first load's, p1 is new.
        fs::write(&a, file(["[10]", "[13]", "[12]"])).unwrap();
        reader.changed(OsStr::new("a.yaml"));
        let (good, good_sources) = reader.load(None);
        assert_eq!(render(&good, &good_sources), cold(&conf));
        let same: Vec<bool> = first
            .config
            .policies
            .iter()
            .zip(&good.config.policies)
            .map(|(x, y)| Arc::ptr_eq(x, y))
            .collect();
        assert_eq!(same, [true, false, true]);
        assert_eq!(
            render(&reader.load_texts(&first_sources), &first_sources),
            render(&first, &first_sources)
        );
    }

    /// The texts of an earlier load give that load again, without reading, whatever the directory
    /// holds now (the daemon re-resolves its last valid configuration when interfaces change).
    #[test]
    fn load_texts_gives_the_earlier_load() {
        let t = Dir::new("texts");
        let conf = t.conf();
        let a = conf.join("a.yaml");
        fs::write(&a, policy("a", 1)).unwrap();
        chmod(&a, 0o644);
        let mut reader = Reader::new(&conf);
        let (valid, sources) = reader.load(None);
        fs::write(&a, "kind: [\n").unwrap();
        reader.changed(OsStr::new("a.yaml"));
        let (invalid, _) = reader.load(None);
        assert!(invalid.has_errors() && !valid.has_errors());
        assert_eq!(
            render(&reader.load_texts(&sources), &sources),
            render(&valid, &sources)
        );
    }
}
