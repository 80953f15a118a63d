//! Files from the outside world: opened once, checked on the descriptor, read with a bound.
//!
//! The configuration directory and the state directory are where hostpolicyd meets files that someone
//! else may have put there. Everything that reads them goes through here, with one rule: **open once,
//! check what was opened, read with a bound**.
//!
//! - **Open once.** A path is resolved by [`walk`], one component at a time from `/`, each with
//!   `openat(parent, name, O_PATH | O_NOFOLLOW)` relative to the directory opened before it; a
//!   symbolic link is read (`readlinkat`) and its target walked the same way (at most 40 of them). A
//!   file is opened `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`: a FIFO put in its place does not block the
//!   open (nor the daemon's only writer thread), a link is never followed by the kernel behind our back.
//! - **Check what was opened.** Every directory on the way and the file itself are judged by `fstat`
//!   of the descriptor that is then used, never by a second lookup of the path: a user who controls a
//!   directory on the way cannot show a root-owned file to the check and their own to the read.
//! - **Trusted** ([`Strict::Yes`], sshd's `StrictModes` and sudo's rule): every directory of the real
//!   path is owned by root (or by the user running hostpolicyd) and not writable by group or others,
//!   except that a directory on the way (not the last one) may be world-writable when it is sticky and
//!   root-owned, as `/tmp` is; the file is owned by root (or that user) and not group- or
//!   world-writable. A user who can rename entries of a directory on the way could replace what comes
//!   after it (`mv conf conf.old && ln -s /srv conf`); with these checks no such directory exists.
//! - **Only regular files** are read; a FIFO, socket, device or directory is [`Problem::NotRegular`].
//! - **Read with a bound**: [`read_bounded`] reads at most the limit given, whatever `st_size` said
//!   (a file may grow, `/dev/zero` has size 0).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, CWD};

/// Symbolic links followed on one walk at most (the kernel's own limit, `ELOOP`).
const MAX_LINKS: usize = 40;

/// Whether ownership and modes are judged (`--strict-modes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strict {
    Yes,
    No,
}

static STRICT_MODES: AtomicBool = AtomicBool::new(true);

/// Turns the ownership and mode checks on (the default) or off for the whole process
/// (`--strict-modes`): the configuration directory's and the state directory's.
pub fn set_strict_modes(on: bool) {
    STRICT_MODES.store(on, Ordering::Relaxed);
}

/// What `--strict-modes` says.
pub fn strict_modes() -> Strict {
    if STRICT_MODES.load(Ordering::Relaxed) {
        Strict::Yes
    } else {
        Strict::No
    }
}

/// Why a file or directory was not read.
#[derive(Debug)]
pub enum Problem {
    /// The system said no (missing, permission denied, too many links...).
    Io(io::Error),
    /// A directory on the way, the directory or the file is not trusted: which and why.
    Untrusted { path: PathBuf, why: Distrust },
    /// Not a regular file: what it is (`a FIFO`, `a directory`...).
    NotRegular(&'static str),
    /// Longer than the bound it was read with.
    TooBig { limit: u64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Io(e) => write!(f, "{e}"),
            Problem::Untrusted { path, why } => write!(f, "{}: {}", path.display(), why.why),
            Problem::NotRegular(what) => write!(f, "it is {what}, not a regular file"),
            Problem::TooBig { limit } => write!(f, "it holds more than {limit} bytes"),
        }
    }
}

impl From<io::Error> for Problem {
    fn from(e: io::Error) -> Self {
        Problem::Io(e)
    }
}

impl From<rustix::io::Errno> for Problem {
    fn from(e: rustix::io::Errno) -> Self {
        Problem::Io(e.into())
    }
}

/// A directory opened by [`open_dir`]: its descriptor (for listing and `openat`), its real path, the
/// symbolic links the walk went through (where each one is, not where it points), and what the walk
/// saw of every directory on the way ([`Way`]).
#[derive(Debug)]
pub struct OpenDir {
    pub fd: OwnedFd,
    pub real: PathBuf,
    pub links: Vec<PathBuf>,
    pub way: Way,
}

/// What [`open_dir`]'s walk saw: the real path, the links it went through, and the identity, owner
/// and mode of every directory it opened, in order (`/` first, the directory itself last). Two walks
/// with the same `Way` went through the same directories, each with the same owner and mode: nothing
/// on the way was replaced, re-pointed or chmod'ed in between (the directories' times are left out:
/// they change whenever an entry is added or removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Way {
    pub real: PathBuf,
    pub links: Vec<PathBuf>,
    dirs: Vec<DirId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirId {
    dev: u64,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl DirId {
    fn of(meta: &Metadata) -> DirId {
        DirId {
            dev: meta.dev(),
            ino: meta.ino(),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }
}

/// What `fstat` says of a file that decides what reading it gives: which file it is (device, inode),
/// its size, its modification and change times to the nanosecond, its type and mode, its owner and
/// group. The change time (ctime) is set by the kernel alone, to the current time, whenever the
/// file's contents or any of these attributes change (a write, a truncation, `chmod`, `chown`, a new
/// hard link): no one can set it back. So a file whose key is the one it had when it was read still
/// holds what was read, and would pass or fail the trust checks as it did (`config::load::Reader`).
/// (Since Linux 6.13 a ctime that was looked at is advanced at the next change even within one tick of
/// the coarse clock: "multigrain timestamps"; before that, two changes within one tick could leave the
/// same key, which is why the daemon's reader does not rely on keys alone but on inotify's events.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
}

impl FileKey {
    /// The key of what `meta` (an `fstat`) describes.
    pub fn of(meta: &Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }

    fn of_stat(st: &rustix::fs::Stat) -> FileKey {
        // The kernel's types differ by architecture; every value fits these.
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        FileKey {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
        }
    }

    /// Which file it is: (device, inode).
    pub fn file_id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// Whether it is a regular file (not a link, FIFO, directory...).
    pub fn is_file(&self) -> bool {
        rustix::fs::FileType::from_raw_mode(self.mode as _) == rustix::fs::FileType::RegularFile
    }
}

/// The [`FileKey`] of the entry `name` of `dir` itself (`fstatat` without following a link): one
/// system call, nothing opened.
pub fn key_in(dir: &OpenDir, name: &OsStr) -> io::Result<FileKey> {
    let st = rustix::fs::statat(&dir.fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(FileKey::of_stat(&st))
}

/// A regular file opened and checked, ready for [`read_bounded`]. `linked`: reached through a
/// symbolic link (its target may change without the link's directory seeing it).
#[derive(Debug)]
pub struct OpenFile {
    pub file: File,
    pub meta: Metadata,
    pub linked: bool,
}

/// What a descriptor is, for messages: `a FIFO`, `a directory`...
pub fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Why something is not trusted, and the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distrust {
    /// `owned by uid 1000, not by root`, `mode 0777 is group- and world-writable`.
    pub why: String,
    /// `chown root`, `chmod go-w`.
    pub fix: &'static str,
}

fn owner_problem(meta: &Metadata) -> Option<Distrust> {
    let uid = meta.uid();
    (uid != 0 && uid != me()).then(|| Distrust {
        why: format!("owned by uid {uid}, not by root"),
        fix: "chown root",
    })
}

/// Why a directory is not trusted, if it is not. `on_the_way`: a directory the walk goes through to
/// reach another one (may be world-writable when sticky and root-owned, as `/tmp`).
pub fn directory_problem(meta: &Metadata, on_the_way: bool) -> Option<Distrust> {
    if let Some(p) = owner_problem(meta) {
        return Some(p);
    }
    let mode = meta.mode() & 0o7777;
    let sticky_root = mode & 0o1000 != 0 && meta.uid() == 0;
    if on_the_way && sticky_root {
        return None;
    }
    writable(mode)
}

/// Why a file is not trusted, if it is not.
pub fn file_problem(meta: &Metadata) -> Option<Distrust> {
    owner_problem(meta).or_else(|| writable(meta.mode() & 0o7777))
}

fn writable(mode: u32) -> Option<Distrust> {
    let what = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group- and world-writable",
        (true, false) => "group-writable",
        (false, true) => "world-writable",
        (false, false) => return None,
    };
    Some(Distrust {
        why: format!("mode {mode:04o} is {what}"),
        fix: "chmod go-w",
    })
}

fn open_path(dir: impl rustix::fd::AsFd, name: &OsStr) -> Result<OwnedFd, Problem> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `name` in `dir` for reading without following a link and without blocking on a FIFO.
/// `Err(ELOOP)` for a symbolic link.
fn open_read(dir: impl rustix::fd::AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn metadata(fd: OwnedFd) -> io::Result<(File, Metadata)> {
    let file = File::from(fd);
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// What the walk ends on.
enum Want {
    Dir,
    File,
}

/// Where a walk ended.
enum Walked {
    Dir(OpenDir),
    File(OpenFile),
}

/// The components still to walk, from a path (`.` and `/` dropped: the walk starts at `/`).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Resolves `path` from `/` one component at a time (see the module documentation).
fn walk(path: &Path, want: Want, strict: Strict) -> Result<Walked, Problem> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let root = rustix::fs::openat(
        CWD,
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut todo = components(&absolute);
    let (root_file, root_meta) = metadata(root)?;
    let mut dirs = vec![DirId::of(&root_meta)];
    if strict == Strict::Yes {
        if let Some(why) = directory_problem(&root_meta, !todo.is_empty()) {
            return Err(Problem::Untrusted {
                path: "/".into(),
                why,
            });
        }
    }
    // The directories opened so far, `/` first: `..` goes back one.
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(root_file.into(), PathBuf::from("/"))];
    let mut links = Vec::new();
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let last = todo.is_empty();
        let (parent, parent_path) = stack.last().expect("the root stays");
        let here = parent_path.join(&name);
        let fd = if last && matches!(want, Want::File) {
            match open_read(parent, &name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                    open_path(parent, &name)?
                }
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                    // A socket cannot be opened: what is there says so.
                    return Err(Problem::NotRegular("a socket"));
                }
                Err(e) => return Err(with_path(e, &here)),
            }
        } else {
            open_path(parent, &name).map_err(|p| match p {
                Problem::Io(e) => with_path(e, &here),
                p => p,
            })?
        };
        let (file, meta) = metadata(fd)?;
        let t = meta.file_type();
        if t.is_symlink() {
            if links.len() >= MAX_LINKS {
                return Err(Problem::Io(io::Error::other(format!(
                    "{}: too many levels of symbolic links",
                    here.display()
                ))));
            }
            let target = rustix::fs::readlinkat(&file, "", Vec::new())?;
            let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
            if target.is_absolute() {
                stack.truncate(1);
            }
            for c in components(&target).into_iter().rev() {
                todo.push_front(c);
            }
            links.push(here);
            continue;
        }
        if t.is_dir() {
            let last_dir = todo.is_empty();
            if last_dir && matches!(want, Want::File) {
                return Err(Problem::NotRegular("a directory"));
            }
            if strict == Strict::Yes {
                if let Some(why) = directory_problem(&meta, !last_dir) {
                    return Err(Problem::Untrusted { path: here, why });
                }
            }
            dirs.push(DirId::of(&meta));
            stack.push((file.into(), here));
            continue;
        }
        if !last || matches!(want, Want::Dir) {
            return Err(with_path(
                io::Error::from_raw_os_error(rustix::io::Errno::NOTDIR.raw_os_error()),
                &here,
            ));
        }
        return Ok(Walked::File(checked_file(
            file,
            meta,
            &here,
            strict,
            !links.is_empty(),
        )?));
    }
    match want {
        Want::File => Err(Problem::NotRegular("a directory")),
        Want::Dir => {
            let (fd, real) = stack.pop().expect("the root stays");
            // The O_PATH descriptor cannot be listed: the directory itself, opened through it.
            let fd = rustix::fs::openat(
                &fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let way = Way {
                real: real.clone(),
                links: links.clone(),
                dirs,
            };
            Ok(Walked::Dir(OpenDir {
                fd,
                real,
                links,
                way,
            }))
        }
    }
}

fn with_path(e: io::Error, path: &Path) -> Problem {
    Problem::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// A file opened for reading: a regular file, trusted when `strict`.
fn checked_file(
    file: File,
    meta: Metadata,
    path: &Path,
    strict: Strict,
    linked: bool,
) -> Result<OpenFile, Problem> {
    if !meta.file_type().is_file() {
        return Err(Problem::NotRegular(kind(&meta)));
    }
    if strict == Strict::Yes {
        if let Some(why) = file_problem(&meta) {
            return Err(Problem::Untrusted {
                path: path.to_path_buf(),
                why,
            });
        }
    }
    Ok(OpenFile { file, meta, linked })
}

/// Opens the directory `path` by walking its real path; with [`Strict::Yes`] every directory on it
/// must be trusted.
pub fn open_dir(path: &Path, strict: Strict) -> Result<OpenDir, Problem> {
    match walk(path, Want::Dir, strict)? {
        Walked::Dir(d) => Ok(d),
        Walked::File(_) => Err(Problem::NotRegular("a file")),
    }
}

/// Opens the regular file `path` by walking its real path (links followed as [`walk`] does).
pub fn open_file(path: &Path, strict: Strict) -> Result<OpenFile, Problem> {
    match walk(path, Want::File, strict)? {
        Walked::File(f) => Ok(f),
        Walked::Dir(_) => Err(Problem::NotRegular("a directory")),
    }
}

/// Opens the entry `name` of `dir` (a directory from [`open_dir`]): a regular file, never blocking on
/// a FIFO; a symbolic link is followed by walking its target ([`open_file`]), so every directory on
/// its way is judged too.
pub fn open_in(dir: &OpenDir, name: &OsStr, strict: Strict) -> Result<OpenFile, Problem> {
    let here = dir.real.join(name);
    match open_read(&dir.fd, name) {
        Ok(fd) => {
            let (file, meta) = metadata(fd)?;
            checked_file(file, meta, &here, strict, false)
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            let target = rustix::fs::readlinkat(&dir.fd, name, Vec::new())?;
            let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
            let mut f = open_file(&dir.real.join(target), strict).map_err(|p| match p {
                Problem::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                    Problem::Io(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("it is a symbolic link to a missing file ({e})"),
                    ))
                }
                p => p,
            })?;
            f.linked = true;
            Ok(f)
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
            Err(Problem::NotRegular("a socket"))
        }
        Err(e) => Err(Problem::Io(e)),
    }
}

/// Opens the entry `name` of `dir` as [`open_in`] does, except that a symbolic link is not followed:
/// it is [`Problem::NotRegular`] (`a symbolic link`). For the state directory, where nothing but our
/// own regular files belongs.
pub fn open_in_nofollow(dir: &OpenDir, name: &OsStr, strict: Strict) -> Result<OpenFile, Problem> {
    match open_read(&dir.fd, name) {
        Ok(fd) => {
            let (file, meta) = metadata(fd)?;
            checked_file(file, meta, &dir.real.join(name), strict, false)
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            Err(Problem::NotRegular("a symbolic link"))
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
            Err(Problem::NotRegular("a socket"))
        }
        Err(e) => Err(Problem::Io(e)),
    }
}

/// The names in `dir` (a directory from [`open_dir`]), `.` and `..` left out, in no order. Stops with
/// an error after `max` names.
pub fn names(dir: &OpenDir, max: usize) -> io::Result<Vec<OsString>> {
    let fd = rustix::fs::openat(
        &dir.fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut listing = rustix::fs::Dir::new(fd)?;
    let mut out = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if out.len() >= max {
            return Err(io::Error::other(format!("more than {max} entries")));
        }
        out.push(OsStr::from_bytes(name).to_os_string());
    }
    Ok(out)
}

/// Reads `file` to its end, at most `limit` bytes: [`Problem::TooBig`] beyond, whatever its size
/// said when it was opened.
pub fn read_bounded(f: &mut OpenFile, limit: u64) -> Result<Vec<u8>, Problem> {
    let mut bytes = Vec::with_capacity(usize::try_from(f.meta.len().min(limit)).unwrap_or(0));
    (&mut f.file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Problem::TooBig { limit });
    }
    Ok(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A temporary directory tree, removed on drop.
    pub(crate) struct Tree(pub PathBuf);

    impl Tree {
        pub(crate) fn new(tag: &str) -> Tree {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let root = std::env::temp_dir().join(format!(
                "hostpolicyd-trust-{tag}-{}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            chmod(&root, 0o755);
            Tree(root)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_fifo_is_opened_without_blocking_and_refused() {
        let t = Tree::new("fifo");
        let fifo = t.0.join("a.yaml");
        rustix::fs::mknodat(
            CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let dir = open_dir(&t.0, Strict::Yes).unwrap();
        // Without O_NONBLOCK this open would wait for a writer forever.
        match open_in(&dir, OsStr::new("a.yaml"), Strict::Yes) {
            Err(Problem::NotRegular("a FIFO")) => {}
            other => panic!("{other:?}"),
        }
        match open_file(&fifo, Strict::No) {
            Err(Problem::NotRegular("a FIFO")) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_directory_of_the_real_path_is_judged() {
        let t = Tree::new("walk");
        let open = t.0.join("open");
        fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let conf = open.join("conf");
        fs::create_dir(&conf).unwrap();
        chmod(&conf, 0o755);
        match open_dir(&conf, Strict::Yes) {
            Err(Problem::Untrusted { path, why }) => {
                assert_eq!(path, open);
                assert_eq!(why.why, "mode 0777 is group- and world-writable");
                assert_eq!(why.fix, "chmod go-w");
            }
            other => panic!("{other:?}"),
        }
        assert!(open_dir(&conf, Strict::No).is_ok());
        // Sticky and root-owned (as /tmp): fine on the way, not as the directory itself.
        chmod(&open, 0o1777);
        if me() == 0 {
            assert!(open_dir(&conf, Strict::Yes).is_ok());
            assert!(matches!(
                open_dir(&open, Strict::Yes),
                Err(Problem::Untrusted { .. })
            ));
        }
        chmod(&open, 0o755);
        // Through a link, the target's directories are judged.
        let link = t.0.join("link");
        std::os::unix::fs::symlink("open/conf", &link).unwrap();
        let d = open_dir(&link, Strict::Yes).unwrap();
        assert_eq!(d.real, conf);
        assert_eq!(d.links, std::slice::from_ref(&link));
        chmod(&open, 0o775);
        assert!(matches!(
            open_dir(&link, Strict::Yes),
            Err(Problem::Untrusted { path, .. }) if path == open
        ));
        // `..` after a link goes back from where the link pointed, as the kernel does.
        chmod(&open, 0o755);
        let d = open_dir(&link.join(".."), Strict::Yes).unwrap();
        assert_eq!(d.real, open);
    }

    #[test]
    fn reads_are_bounded_whatever_the_size_said() {
        let t = Tree::new("bound");
        let f = t.0.join("a.yaml");
        fs::write(&f, "x".repeat(100)).unwrap();
        chmod(&f, 0o644);
        let mut o = open_file(&f, Strict::Yes).unwrap();
        assert!(matches!(
            read_bounded(&mut o, 99),
            Err(Problem::TooBig { limit: 99 })
        ));
        let mut o = open_file(&f, Strict::Yes).unwrap();
        assert_eq!(read_bounded(&mut o, 100).unwrap().len(), 100);
        // /dev/zero has size 0 and no end: not a regular file, never read.
        assert!(matches!(
            open_file(Path::new("/dev/zero"), Strict::No),
            Err(Problem::NotRegular("a character device"))
        ));
    }
}
