//! Watching the configuration directory (inotify through `notify`), and the debounce that turns a burst
//! of file events into one reload.
//!
//! Two watches: the directory itself (its files), and its parent (so that a directory that is created,
//! removed, renamed over or re-pointed through a symlink is noticed; the directory watch is then
//! re-established). Events are filtered the way the loader filters names (`load::config_files`): a file
//! the loader would not read (a dotted temporary file, `*~`, `*.swp`...) never triggers a reload, except
//! that a file the loader *did* read and that disappears does. Access events (our own reads) are ignored.
//!
//! [`Debouncer`] is pure: it is given the time of each event and asked whether the quiet period is over,
//! so its logic is tested without sleeping.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::Event;

/// Quiet period after the last relevant event before reloading.
pub const QUIET: Duration = Duration::from_millis(300);
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
        Some((self.last? + self.quiet).min(self.first? + self.cap))
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

/// What a file system event means for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relevance {
    Ignore,
    /// A configuration file changed, appeared or disappeared.
    Files,
    /// The directory itself was created, removed or replaced: re-watch it, then rescan.
    Dir,
}

/// The files of the directory the loader reads, as last seen (so that a deleted one is recognised).
pub struct Names {
    dir: PathBuf,
    known: BTreeSet<PathBuf>,
}

impl Names {
    pub fn new(dir: &Path) -> Names {
        let mut n = Names {
            dir: dir.to_path_buf(),
            known: BTreeSet::new(),
        };
        n.known = n.listing();
        n
    }

    fn listing(&self) -> BTreeSet<PathBuf> {
        crate::load::config_files(&self.dir)
            .map(|v| v.into_iter().collect())
            .unwrap_or_default()
    }

    /// Whether `path` (inside the directory) is, or was until now, a file the loader reads.
    pub fn relevant(&mut self, path: &Path) -> bool {
        let was = self.known.contains(path);
        self.known = self.listing();
        was || self.known.contains(path)
    }

    pub fn refresh(&mut self) {
        self.known = self.listing();
    }
}

/// Classifies one event for the configuration directory `dir` (as given on the command line).
pub fn classify(event: &notify::Event, dir: &Path, names: &mut Names) -> Relevance {
    if matches!(event.kind, EventKind::Access(_)) {
        return Relevance::Ignore;
    }
    if event.need_rescan() {
        // The kernel queue overflowed: something may have been missed.
        return Relevance::Dir;
    }
    let mut relevance = Relevance::Ignore;
    for path in &event.paths {
        if path == dir {
            return Relevance::Dir;
        }
        if path.parent() == Some(dir) && names.relevant(path) {
            relevance = Relevance::Files;
        }
    }
    relevance
}

/// The two watches and their event handler (which runs on notify's thread and sends [`Event`]s).
pub struct Watch {
    watcher: RecommendedWatcher,
    dir: PathBuf,
}

impl Watch {
    pub fn start(dir: &Path, tx: Sender<Event>) -> notify::Result<Watch> {
        let dir = absolute(dir);
        let mut names = Names::new(&dir);
        let handler_dir = dir.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let ev = match res {
                Ok(ev) => match classify(&ev, &handler_dir, &mut names) {
                    Relevance::Ignore => return,
                    Relevance::Files => Event::Files,
                    Relevance::Dir => {
                        names.refresh();
                        Event::DirReplaced
                    }
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
    use notify::event::{AccessKind, CreateKind, ModifyKind, RemoveKind, RenameMode};

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
        let mut names = Names::new(&dir);
        let modify = EventKind::Modify(ModifyKind::Any);
        // Ansible: a dotted temporary file is written (ignored), then renamed to its name (relevant).
        let tmp = dir.join(".ansible_tmp123a.yaml");
        std::fs::write(&tmp, "").unwrap();
        assert_eq!(
            classify(
                &event(EventKind::Create(CreateKind::File), &[&tmp]),
                &dir,
                &mut names
            ),
            Relevance::Ignore
        );
        assert_eq!(
            classify(&event(modify, &[&tmp]), &dir, &mut names),
            Relevance::Ignore
        );
        std::fs::rename(&tmp, dir.join("b.yaml")).unwrap();
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert_eq!(
            classify(
                &event(rename, &[&tmp, &dir.join("b.yaml")]),
                &dir,
                &mut names
            ),
            Relevance::Files
        );
        // Editor leftovers and other names are ignored.
        for junk in ["a.yaml~", ".a.yaml.swp", "notes.txt", "a.yaml.dpkg-new"] {
            assert_eq!(
                classify(&event(modify, &[&dir.join(junk)]), &dir, &mut names),
                Relevance::Ignore,
                "{junk}"
            );
        }
        // Our own reads (open, close without write) are ignored.
        let open = EventKind::Access(AccessKind::Any);
        assert_eq!(
            classify(&event(open, &[&dir.join("a.yaml")]), &dir, &mut names),
            Relevance::Ignore
        );
        // A deleted configuration file is relevant although the loader no longer lists it.
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        let remove = EventKind::Remove(RemoveKind::File);
        assert_eq!(
            classify(&event(remove, &[&dir.join("a.yaml")]), &dir, &mut names),
            Relevance::Files
        );
        // The directory itself (seen through the parent watch), but not its siblings.
        assert_eq!(
            classify(
                &event(EventKind::Create(CreateKind::Folder), &[&dir]),
                &dir,
                &mut names
            ),
            Relevance::Dir
        );
        assert_eq!(
            classify(
                &event(modify, &[&root.join("other.conf")]),
                &dir,
                &mut names
            ),
            Relevance::Ignore
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
