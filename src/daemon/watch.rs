//! Watching the configuration directory (inotify through `notify`), and the debounce that turns a burst
//! of file events into one reload.
//!
//! Two watches: the directory itself (its files), and its parent (so that a directory that is created,
//! removed, renamed over or re-pointed through a symlink is noticed; the directory watch is then
//! re-established). Events are filtered by name the way the loader filters names (`load::is_config_name`):
//! a file the loader would not read (a dotted temporary file, `*~`, `*.swp`...) never triggers a reload.
//! Access events (our own reads) are ignored, except a close after writing, which says that a file is
//! complete. The names reported are what the daemon's reader (`config::load::Reader`) reads again; the
//! others it takes as they were, which is why nothing that changes a configuration file may be dropped
//! here, and why a lost event or a replaced directory makes the next reload a full sweep.
//!
//! How long to wait depends on what the events say about the files ([`Change`], [`Settle`]): when every
//! file event of the burst shows a complete file (closed after writing, renamed into place, only its mode
//! or times changed, deleted), the reload follows after [`SETTLE`], a few milliseconds that coalesce the
//! rest of an editor's save or a loop of `mv`s; when a file may be half-written (created or written to and
//! not closed yet) or was renamed away (perhaps about to be replaced), the quiet period is [`QUIET`]. The short period also needs the directory to have been quiet for [`QUIET`] before the
//! burst began: writes that go on after a reload (a storm of writes, a playbook dropping file after file)
//! wait for the long quiet period, so that they give one more reload rather than one per pause of the
//! writer. Either way a burst is cut at [`CAP`] after its first event. What notify 8's inotify backend
//! reports for the usual ways of saving a file (the names in brackets are the loader's, others are ignored):
//!
//! - Ansible (`copy`, `template`): a dotted temporary file is written, then renamed over the name:
//!   IN_MOVED_TO \[name\] (`Name(To)`; notify's `Name(Both)` after it repeats it): complete.
//! - `cp` over a file, `>` redirection, an editor writing in place: IN_MODIFY \[name\] for the truncation
//!   and each write (`Data`), then IN_CLOSE_WRITE \[name\] (`Access(Close(Write))`): writing, then complete.
//! - vim (`backupcopy=auto`): a `4913` probe file created and deleted, IN_MOVED_FROM \[name\] to `name~`
//!   (gone), IN_CREATE, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE \[name\] (writing, then complete), IN_DELETE of
//!   `name~`: complete at the close.
//! - `rm`, Ansible's `state: absent`: IN_DELETE \[name\] (`Remove`): removed, complete.
//! - GNU `install`, `cp --remove-destination`: IN_DELETE, IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE, IN_ATTRIB
//!   \[name\] within microseconds: the create comes long before the settle period is over, so the burst
//!   waits for the close (writing), then is complete.
//! - `mv` away: IN_MOVED_FROM \[name\] (`Name(From)`): gone, perhaps about to be replaced (vim and
//!   emacs rename the original away before writing the new file).
//!
//! [`Debouncer`] and [`Settle`] are pure: they are given the time of each event and asked whether the
//! quiet period is over, so their logic is tested without sleeping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::Event;

/// Quiet period after the last relevant event before reloading, when a file may be half-written or is
/// gone: long enough for a writer that pauses between writes, or a delete followed by the new file.
pub const QUIET: Duration = Duration::from_millis(300);
/// Quiet period after the last relevant event when every file of the burst is complete: the events of one
/// save that follow the close (an editor's chmod, the deletion of its backup) or the next `mv` of a loop.
pub const SETTLE: Duration = Duration::from_millis(10);
/// Longest wait after the first event of a burst: a directory written to without pause still reloads.
pub const CAP: Duration = Duration::from_secs(2);

/// Debounce: due once `quiet` has passed since the last event, or `cap` since the first one.
#[derive(Debug, Clone)]
pub struct Debouncer {
    quiet: Duration,
    cap: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debouncer {
    pub fn new(quiet: Duration, cap: Duration) -> Debouncer {
        Debouncer {
            quiet,
            cap,
            first: None,
            last: None,
        }
    }

    /// Records an event seen at `now`.
    pub fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    pub fn pending(&self) -> bool {
        self.first.is_some()
    }

    /// When the pending burst becomes due; None when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline_after(self.quiet)
    }

    /// [`Debouncer::deadline`] with another quiet period for this burst (the cap stays).
    fn deadline_after(&self, quiet: Duration) -> Option<Instant> {
        Some((self.last? + quiet).min(self.first? + self.cap))
    }

    pub fn due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// Forgets the pending burst (a reload is starting: it reads everything anyway).
    pub fn clear(&mut self) {
        self.first = None;
        self.last = None;
    }
}

/// What one file event says about a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created, truncated or written to, and not closed yet: maybe half-written.
    Writing,
    /// Closed after writing, or renamed into place: complete.
    Written,
    /// Mode, owner or times changed: the contents are as they were.
    Metadata,
    /// Deleted (unlinked: `rm`, Ansible's `state: absent`): gone for good. A file that takes the name
    /// (`install`, `cp --remove-destination`) is created right after, within microseconds, and that
    /// event makes the burst wait for it to be written.
    Removed,
    /// Renamed away: perhaps about to be replaced (vim and emacs rename the original away before
    /// writing the new one).
    Gone,
}

impl Change {
    /// Whether the file may not be as it will stay: wait for the long quiet period.
    fn unsettled(self) -> bool {
        matches!(self, Change::Writing | Change::Gone)
    }
}

/// The debounce of configuration file events: a [`Debouncer`] whose quiet period is [`SETTLE`] while
/// every file of the burst is complete and [`QUIET`] otherwise (see the module documentation).
#[derive(Debug, Clone)]
pub struct Settle {
    burst: Debouncer,
    /// The latest change of each file seen in this burst.
    files: BTreeMap<PathBuf, Change>,
    /// Something happened that says nothing about single files (directory replaced, events lost).
    unsure: bool,
    /// Whether the directory had been quiet for the long quiet period when this burst began. When it had
    /// not, the writes go on across reloads (a storm of writes, a playbook dropping file after file):
    /// waiting for the long quiet period gives one reload at the end instead of one per pause.
    calm: bool,
    /// The last event, of this burst or an earlier one.
    last: Option<Instant>,
}

impl Default for Settle {
    fn default() -> Self {
        Settle::new(QUIET, CAP)
    }
}

impl Settle {
    /// `quiet`: the long quiet period (files maybe half-written); `cap` as for [`Debouncer`].
    pub fn new(quiet: Duration, cap: Duration) -> Settle {
        Settle {
            burst: Debouncer::new(quiet, cap),
            files: BTreeMap::new(),
            unsure: false,
            calm: true,
            last: None,
        }
    }

    /// Records that something happened at `now`.
    fn event(&mut self, now: Instant) {
        if !self.burst.pending() {
            self.calm = self
                .last
                .is_none_or(|l| now.saturating_duration_since(l) >= self.burst.quiet);
        }
        self.last = Some(now);
        self.burst.touch(now);
    }

    /// Records a change of `path` seen at `now`.
    pub fn touch(&mut self, now: Instant, path: &Path, change: Change) {
        self.event(now);
        match self.files.get_mut(path) {
            // A chmod does not finish a write in progress, nor bring back a deleted file.
            Some(_) if change == Change::Metadata => {}
            Some(c) => *c = change,
            None => {
                self.files.insert(path.to_path_buf(), change);
            }
        }
    }

    /// Records an event about the directory as a whole (replaced, events lost, a watch error): the long
    /// quiet period applies to the rest of the burst.
    pub fn touch_unsure(&mut self, now: Instant) {
        self.event(now);
        self.unsure = true;
    }

    pub fn pending(&self) -> bool {
        self.burst.pending()
    }

    /// The quiet period of the pending burst.
    pub fn quiet(&self) -> Duration {
        if !self.calm || self.unsure || self.files.values().any(|c| c.unsettled()) {
            self.burst.quiet
        } else {
            SETTLE.min(self.burst.quiet)
        }
    }

    /// When the pending burst becomes due; None when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.burst.deadline_after(self.quiet())
    }

    pub fn due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// Forgets the pending burst (a reload is starting: it reads everything anyway); remembers when the
    /// last event was, to tell a new save from writes that go on.
    pub fn clear(&mut self) {
        self.burst.clear();
        self.files.clear();
        self.unsure = false;
    }
}

/// What a file system event means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relevance {
    Ignore,
    /// Configuration files changed, appeared or disappeared.
    Files(Vec<(PathBuf, Change)>),
    /// The directory itself was created, removed or replaced: re-watch it, then rescan.
    Dir,
}

/// Whether `path` (inside the directory) has a name the loader reads (`load::is_config_name`; a name
/// that is not UTF-8 but otherwise would be is reported too: the loader warns about it). Only the name
/// is looked at: no system call per event, and a deleted file is recognised whatever was known of it
/// (the daemon's reader drops what it had read under that name).
pub fn relevant(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| crate::config::load::is_config_name(&n.to_string_lossy()))
}

/// Classifies one event for the configuration directory `dir` (as given on the command line).
pub fn classify(event: &notify::Event, dir: &Path) -> Relevance {
    if change(&event.kind, None).is_none() {
        // Our own reads (opened, closed without writing), repeated reports.
        return Relevance::Ignore;
    }
    if event.need_rescan() {
        // The kernel queue overflowed: something may have been missed.
        return Relevance::Dir;
    }
    let mut files = Vec::new();
    for path in &event.paths {
        if path == dir {
            return Relevance::Dir;
        }
        if path.parent() == Some(dir) && relevant(path) {
            if let Some(c) = change(&event.kind, Some(path)) {
                files.push((path.clone(), c));
            }
        }
    }
    if files.is_empty() {
        Relevance::Ignore
    } else {
        Relevance::Files(files)
    }
}

/// What an event of `kind` says about its `path` (when known, to look at what is there now). None:
/// nothing (a read, a repeated report). Anything unexpected counts as a write in progress (the long
/// quiet period).
fn change(kind: &EventKind, path: Option<&Path>) -> Option<Change> {
    Some(match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Written,
        EventKind::Access(_) => return None,
        // A symlink is created whole (`ln -s`); a file is created empty and written next.
        EventKind::Create(_) if path.is_some_and(is_symlink) => Change::Written,
        EventKind::Create(_) => Change::Writing,
        EventKind::Modify(ModifyKind::Metadata(_)) => Change::Metadata,
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Change::Gone,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Change::Written,
        // notify's pairing of the two halves of one rename, sent right after the `To` half (and after
        // the `From` half when it saw one): nothing new, and a second event would throw away the
        // daemon's early build of the directory.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return None,
        EventKind::Remove(_) => Change::Removed,
        EventKind::Modify(_) | EventKind::Any | EventKind::Other => Change::Writing,
    })
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The two watches and their event handler (which runs on notify's thread and sends [`Event`]s).
pub struct Watch {
    watcher: RecommendedWatcher,
    dir: PathBuf,
}

impl Watch {
    pub fn start(dir: &Path, tx: Sender<Event>) -> notify::Result<Watch> {
        let dir = absolute(dir);
        let handler_dir = dir.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let ev = match res {
                Ok(ev) => match classify(&ev, &handler_dir) {
                    Relevance::Ignore => return,
                    Relevance::Files(files) => Event::Files(files),
                    Relevance::Dir => Event::DirReplaced,
                },
                Err(e) => Event::WatchError(e.to_string()),
            };
            let _ = tx.send(ev);
        })?;
        let mut w = Watch { watcher, dir };
        if let Some(parent) = w.dir.parent() {
            w.watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
        // A missing directory is not an error: the parent watch notices when it appears.
        let _ = w.watch_dir();
        Ok(w)
    }

    fn watch_dir(&mut self) -> notify::Result<()> {
        self.watcher.watch(&self.dir, RecursiveMode::NonRecursive)
    }

    /// Re-establishes the directory watch after the directory was replaced (the old watch follows the old
    /// inode). Err when the directory does not exist (now).
    pub fn rewatch(&mut self) -> notify::Result<()> {
        let _ = self.watcher.unwatch(&self.dir);
        self.watch_dir()
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_reloads_once_after_the_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(QUIET, CAP);
        assert!(!d.pending() && d.deadline().is_none() && !d.due(t0));
        // Ansible: temp file written, renamed; an editor: several writes a few ms apart.
        for i in 0..10 {
            d.touch(t0 + ms(i * 5));
        }
        assert_eq!(d.deadline(), Some(t0 + ms(45) + QUIET));
        assert!(!d.due(t0 + ms(45) + QUIET - ms(1)));
        assert!(d.due(t0 + ms(45) + QUIET));
        d.clear();
        assert!(!d.pending() && !d.due(t0 + ms(10_000)));
    }

    #[test]
    fn a_never_ending_burst_is_capped() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(QUIET, CAP);
        let mut t = t0;
        let mut reloads = Vec::new();
        // An event every 100 ms for 5 s: the quiet period never comes, the cap fires every 2 s.
        while t < t0 + Duration::from_secs(5) {
            if d.due(t) {
                reloads.push(t - t0);
                d.clear();
            }
            d.touch(t);
            t += ms(100);
        }
        assert_eq!(reloads, [ms(2000), ms(4000)]);
    }

    /// Feeds `changes` (of `a.yaml` unless named) to a [`Settle`] one `gap` apart; returns it and the
    /// time of the last event.
    fn settle(changes: &[(&str, Change)], gap: Duration) -> (Settle, Instant) {
        let t0 = Instant::now();
        let mut s = Settle::default();
        let mut t = t0;
        for (i, (name, c)) in changes.iter().enumerate() {
            t = t0 + gap * i as u32;
            s.touch(t, Path::new(name), *c);
        }
        (s, t)
    }

    #[test]
    fn complete_files_reload_after_the_short_settle_period() {
        use Change::*;
        // Ansible: the temporary file is hidden; the rename into place is all we see.
        // cp over a file: truncation and writes, then the close.
        // vim: the file renamed away to its backup, created, written, closed, chmod'ed.
        // A loop of `mv`s into the directory, a few ms apart.
        for (what, changes) in [
            ("ansible", vec![("a.yaml", Written)]),
            (
                "cp",
                vec![
                    ("a.yaml", Writing),
                    ("a.yaml", Writing),
                    ("a.yaml", Written),
                ],
            ),
            (
                "vim",
                vec![
                    ("a.yaml", Gone),
                    ("a.yaml", Writing),
                    ("a.yaml", Writing),
                    ("a.yaml", Metadata),
                    ("a.yaml", Written),
                    ("a.yaml", Metadata),
                ],
            ),
            (
                "mv loop",
                vec![
                    ("a.yaml", Written),
                    ("b.yaml", Written),
                    ("c.yaml", Written),
                ],
            ),
            ("chmod", vec![("a.yaml", Metadata)]),
            // rm, Ansible's `state: absent`: gone for good.
            ("rm", vec![("a.yaml", Removed)]),
            ("rm, chmod", vec![("a.yaml", Removed), ("a.yaml", Metadata)]),
            // `install` over a file: unlinked, created, written, closed, its mode set.
            (
                "install",
                vec![
                    ("a.yaml", Removed),
                    ("a.yaml", Writing),
                    ("a.yaml", Writing),
                    ("a.yaml", Written),
                    ("a.yaml", Metadata),
                ],
            ),
        ] {
            let (s, last) = settle(&changes, ms(1));
            assert_eq!(s.quiet(), SETTLE, "{what}");
            assert_eq!(s.deadline(), Some(last + SETTLE), "{what}");
            assert!(
                !s.due(last + SETTLE - ms(1)) && s.due(last + SETTLE),
                "{what}"
            );
        }
    }

    #[test]
    fn a_file_that_may_be_half_written_or_gone_waits_for_the_quiet_period() {
        use Change::*;
        for (what, changes) in [
            // A large file written in chunks: not closed yet.
            ("writing", vec![("a.yaml", Writing), ("a.yaml", Writing)]),
            // Created, nothing closed yet (a hard link, or a writer that has not written yet).
            ("created", vec![("a.yaml", Writing)]),
            // Another file complete meanwhile does not hurry the one being written.
            (
                "other complete",
                vec![("a.yaml", Writing), ("b.yaml", Written)],
            ),
            // A chmod of a file being written does not complete it.
            (
                "chmod while writing",
                vec![("a.yaml", Writing), ("a.yaml", Metadata)],
            ),
            // Renamed away: the new file may follow (vim, emacs).
            ("renamed away", vec![("a.yaml", Gone)]),
            (
                "renamed away, another renamed in",
                vec![("a.yaml", Gone), ("b.yaml", Written)],
            ),
            (
                "renamed away, chmod",
                vec![("a.yaml", Gone), ("a.yaml", Metadata)],
            ),
            // Deleted and created again (`install`, `cp --remove-destination`): not written yet.
            (
                "deleted, created",
                vec![("a.yaml", Removed), ("a.yaml", Writing)],
            ),
        ] {
            let (s, last) = settle(&changes, ms(1));
            assert_eq!(s.quiet(), QUIET, "{what}");
            assert_eq!(s.deadline(), Some(last + QUIET), "{what}");
            assert!(!s.due(last + QUIET - ms(1)), "{what}");
        }
        // Once the writer closes the file, the short period applies from that event on.
        let (mut s, last) = settle(&[("a.yaml", Writing), ("b.yaml", Written)], ms(50));
        s.touch(last + ms(50), Path::new("a.yaml"), Written);
        assert_eq!(s.deadline(), Some(last + ms(50) + SETTLE));
        // A deleted file that comes back, complete.
        let (mut s, last) = settle(&[("a.yaml", Gone)], ms(1));
        s.touch(last + ms(5), Path::new("a.yaml"), Written);
        assert_eq!(s.deadline(), Some(last + ms(5) + SETTLE));
    }

    #[test]
    fn writes_that_go_on_after_a_reload_wait_for_the_quiet_period() {
        let t0 = Instant::now();
        let a = Path::new("a.yaml");
        let mut s = Settle::default();
        // A storm: a complete write every 2 ms for a second, with one pause of 20 ms (the writer was not
        // scheduled). The pause ends the first burst; the rest waits for the long quiet period.
        let mut reloads = Vec::new();
        let mut t = t0;
        for i in 0..500 {
            if i == 100 {
                t += ms(20);
            }
            while let Some(d) = s.deadline().filter(|d| *d <= t) {
                reloads.push(d - t0);
                s.clear();
            }
            s.touch(t, a, Change::Written);
            t += ms(2);
        }
        if let Some(d) = s.deadline() {
            reloads.push(d - t0);
        }
        assert_eq!(reloads, [ms(198) + SETTLE, ms(1018) + QUIET]);
        // Calm again after the long quiet period: a save is quick again.
        s.clear();
        s.touch(t0 + ms(1018) + QUIET * 2, a, Change::Written);
        assert_eq!(s.quiet(), SETTLE);
    }

    #[test]
    fn the_directory_replaced_waits_for_the_quiet_period_and_every_burst_is_capped() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        assert!(!s.pending() && s.deadline().is_none());
        s.touch(t0, Path::new("a.yaml"), Change::Written);
        s.touch_unsure(t0 + ms(1));
        assert_eq!(s.deadline(), Some(t0 + ms(1) + QUIET));
        s.clear();
        assert!(!s.pending() && !s.due(t0 + ms(10_000)));
        // After a reload the next burst starts afresh: a complete file is quick again.
        s.touch(t0 + ms(400), Path::new("a.yaml"), Change::Written);
        assert_eq!(s.deadline(), Some(t0 + ms(400) + SETTLE));
        s.clear();
        // A file written without pause for 5 s (each write 100 ms apart): the cap fires every 2 s.
        let mut reloads = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_secs(5) {
            if s.due(t) {
                reloads.push(t - t0);
                s.clear();
            }
            s.touch(t, Path::new("a.yaml"), Change::Writing);
            t += ms(100);
        }
        assert_eq!(reloads, [ms(2000), ms(4000)]);
    }

    #[test]
    fn what_inotify_reports_for_each_way_of_saving_a_file() {
        let root = std::env::temp_dir().join(format!("hostpolicyd-saves-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("hostpolicy.d");
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.yaml");
        std::fs::write(&a, "old\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let _watch = Watch::start(&dir, tx).unwrap();
        // The changes one sequence of file operations brought. No quiet window decides that they are
        // all there: a barrier does. inotify reports events in order, so once a new file written after
        // the operations is seen complete, every event of the operations has been seen too.
        let barriers = std::cell::Cell::new(0);
        let seen = |rx: &std::sync::mpsc::Receiver<Event>| {
            barriers.set(barriers.get() + 1);
            let barrier = format!("zz-barrier-{}.yaml", barriers.get());
            std::fs::write(dir.join(&barrier), "").unwrap();
            let mut changes = Vec::new();
            loop {
                let ev = rx
                    .recv_timeout(Duration::from_secs(20))
                    .expect("the barrier's events arrive");
                let Event::Files(files) = ev else { continue };
                for (p, c) in files {
                    assert_eq!(p.parent(), Some(dir.as_path()));
                    let name = p.file_name().unwrap().to_str().unwrap().to_string();
                    if name == barrier && c == Change::Written {
                        return changes;
                    }
                    if !name.starts_with("zz-barrier-") {
                        changes.push((name, c));
                    }
                }
            }
        };
        let quiet = |changes: &[(String, Change)]| {
            let mut s = Settle::default();
            for (name, c) in changes {
                s.touch(Instant::now(), Path::new(name), *c);
            }
            s.quiet()
        };
        let s = |name: &str, c: Change| (name.to_string(), c);
        use Change::*;

        // Ansible: a hidden temporary file written, then renamed over the name.
        let tmp = dir.join(".ansible_tmp1a.yaml");
        std::fs::write(&tmp, "ansible\n").unwrap();
        std::fs::rename(&tmp, &a).unwrap();
        let ansible = seen(&rx);
        assert_eq!(ansible, [s("a.yaml", Written)]);
        assert_eq!(quiet(&ansible), SETTLE);

        // cp over the file, a large one written in chunks: while it is open, the long quiet period.
        let mut f = std::fs::File::create(&a).unwrap();
        use std::io::Write;
        f.write_all(b"chunk 1\n").unwrap();
        let half = seen(&rx);
        // The truncation and the write (the kernel merges identical events not read yet).
        assert!(
            !half.is_empty() && half.iter().all(|c| *c == s("a.yaml", Writing)),
            "{half:?}"
        );
        assert_eq!(quiet(&half), QUIET);
        f.write_all(b"chunk 2\n").unwrap();
        drop(f);
        let mut cp = half;
        cp.extend(seen(&rx));
        assert_eq!(cp.last(), Some(&s("a.yaml", Written)));
        assert_eq!(quiet(&cp), SETTLE);

        // vim: probe file, rename to the backup, new file written, chmod, backup deleted.
        std::fs::write(dir.join("4913"), "").unwrap();
        std::fs::remove_file(dir.join("4913")).unwrap();
        std::fs::rename(&a, dir.join("a.yaml~")).unwrap();
        std::fs::write(&a, "vim\n").unwrap();
        std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::remove_file(dir.join("a.yaml~")).unwrap();
        let vim = seen(&rx);
        assert_eq!(vim.first(), Some(&s("a.yaml", Gone)), "{vim:?}");
        assert!(vim.contains(&s("a.yaml", Writing)), "{vim:?}");
        assert_eq!(vim.last(), Some(&s("a.yaml", Metadata)), "{vim:?}");
        assert_eq!(quiet(&vim), SETTLE, "{vim:?}");

        // install (GNU coreutils): unlinked, created, written, closed, mode set: complete at the close.
        let src = root.join("src.yaml");
        std::fs::write(&src, "installed\n").unwrap();
        let st = std::process::Command::new("install")
            .args(["-m", "0644"])
            .arg(&src)
            .arg(&a)
            .status()
            .unwrap();
        assert!(st.success());
        let install = seen(&rx);
        assert_eq!(install.first(), Some(&s("a.yaml", Removed)), "{install:?}");
        assert!(install.contains(&s("a.yaml", Writing)), "{install:?}");
        assert!(install.contains(&s("a.yaml", Written)), "{install:?}");
        assert_eq!(quiet(&install), SETTLE, "{install:?}");
        assert_eq!(quiet(&install[..2]), QUIET, "created, not written yet");

        // rm: removed for good, the short settle period.
        std::fs::remove_file(&a).unwrap();
        let rm = seen(&rx);
        assert_eq!(rm, [s("a.yaml", Removed)]);
        assert_eq!(quiet(&rm), SETTLE);
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn event(kind: EventKind, paths: &[&Path]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(p.to_path_buf());
        }
        e
    }

    #[test]
    fn events_are_filtered_like_the_loader() {
        let root = std::env::temp_dir().join(format!("hostpolicyd-watch-{}", std::process::id()));
        let dir = root.join("hostpolicy.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), "").unwrap();
        let modify = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        // Ansible: a dotted temporary file is written (ignored), then renamed to its name (relevant).
        let tmp = dir.join(".ansible_tmp123a.yaml");
        std::fs::write(&tmp, "").unwrap();
        assert_eq!(
            classify(&event(EventKind::Create(CreateKind::File), &[&tmp]), &dir),
            Relevance::Ignore
        );
        assert_eq!(classify(&event(modify, &[&tmp]), &dir), Relevance::Ignore);
        std::fs::rename(&tmp, dir.join("b.yaml")).unwrap();
        let rename = |mode| EventKind::Modify(ModifyKind::Name(mode));
        assert_eq!(
            classify(&event(rename(RenameMode::From), &[&tmp]), &dir),
            Relevance::Ignore
        );
        assert_eq!(
            classify(&event(rename(RenameMode::To), &[&dir.join("b.yaml")]), &dir),
            Relevance::Files(vec![(dir.join("b.yaml"), Change::Written)])
        );
        // notify's pairing of the two halves repeats what they said.
        assert_eq!(
            classify(
                &event(rename(RenameMode::Both), &[&tmp, &dir.join("b.yaml")]),
                &dir
            ),
            Relevance::Ignore
        );
        // Editor leftovers and other names are ignored.
        for junk in ["a.yaml~", ".a.yaml.swp", "notes.txt", "a.yaml.dpkg-new"] {
            assert_eq!(
                classify(&event(modify, &[&dir.join(junk)]), &dir),
                Relevance::Ignore,
                "{junk}"
            );
        }
        // Our own reads (open, close without write) are ignored; a close after writing is not.
        for read in [
            AccessKind::Any,
            AccessKind::Open(AccessMode::Any),
            AccessKind::Close(AccessMode::Read),
        ] {
            let read = EventKind::Access(read);
            assert_eq!(
                classify(&event(read, &[&dir.join("a.yaml")]), &dir),
                Relevance::Ignore
            );
        }
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(
            classify(&event(closed, &[&dir.join("a.yaml")]), &dir),
            Relevance::Files(vec![(dir.join("a.yaml"), Change::Written)])
        );
        // A deleted configuration file is relevant although the loader no longer lists it.
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        let remove = EventKind::Remove(RemoveKind::File);
        assert_eq!(
            classify(&event(remove, &[&dir.join("a.yaml")]), &dir),
            Relevance::Files(vec![(dir.join("a.yaml"), Change::Removed)])
        );
        // Renamed away: perhaps about to be replaced.
        assert_eq!(
            classify(
                &event(rename(RenameMode::From), &[&dir.join("b.yaml")]),
                &dir
            ),
            Relevance::Files(vec![(dir.join("b.yaml"), Change::Gone)])
        );
        // The directory itself (seen through the parent watch), but not its siblings.
        assert_eq!(
            classify(&event(EventKind::Create(CreateKind::Folder), &[&dir]), &dir),
            Relevance::Dir
        );
        assert_eq!(
            classify(&event(modify, &[&root.join("other.conf")]), &dir),
            Relevance::Ignore
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
