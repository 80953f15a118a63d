//! Loading many configuration texts fast (issue 18): files parsed and validated in parallel, and a
//! per-file cache that lets a reload parse and validate only the files that changed.
//!
//! The unit of work is a file, or a [`yaml::Piece`] of a big one (consecutive documents, about
//! [`PIECE_BYTES`]): each is parsed and validated on its own ([`Part`]) by up to
//! [`std::thread::available_parallelism`] threads (`std::thread::scope`), and the parts are put together
//! in file order by [`merge`], which runs the checks across resources (a name defined twice, a policy's
//! tier) exactly as one validator fed every document in order would. [`load_sources`] is therefore
//! [`load_sources_sequential`]'s result, computed faster; the tests hold them equal.
//!
//! The YAML budgets of hostpolicy.d(5) ([`yaml::Budget`]) bound the whole load, not each file: each unit
//! is parsed with a budget of its own and what they spent is added up in file order. While the sum stays
//! within the limits, that is what one shared budget would have seen; when it does not (a
//! configuration the load refuses anyway), the units stop being parsed as soon as the sum of those done
//! passes the limits (so the memory stays bounded), and the whole load is done again the sequential way,
//! for its exact error.
//!
//! The daemon keeps each file's [`Parsed`] parts with the text they came from (`config::load::Reader`,
//! which knows from the directory's watch and the files' `fstat` keys which files changed): a reload
//! parses and validates only the changed files ([`parse_files`]) and [`merged`] runs over every file's
//! parts again, so what depends on other files (duplicates, tiers) is always judged on the whole
//! directory. Policies and network sets are shared (`Arc`) between the cached parts and each load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::diag::{Diagnostic, Severity};
use crate::config::model::Config;
use crate::config::validate::{merge, Part, Validator};
use crate::config::yaml::{self, Node, Value};

/// The result of a load (re-exported as `load::Loaded`). `config` holds the resources that decoded
/// cleanly; do not use it when
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

/// A file bigger than this is parsed in pieces of about this size, in parallel.
pub const PIECE_BYTES: usize = 256 * 1024;

/// Below this many bytes in all, everything is parsed on the calling thread (threads cost more).
const PARALLEL_BYTES: usize = 64 * 1024;

/// The most threads a load uses.
const MAX_THREADS: usize = 8;

/// How many threads a load uses: the CPUs this process may run on, at most [`MAX_THREADS`].
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
}

/// One file's validated parts, in document order, and the YAML budget they spent.
#[derive(Debug)]
struct FileParts {
    parts: Vec<Part>,
    /// (nodes, alias nodes), as [`yaml::Budget::spent_total`].
    spent: (usize, usize),
    /// Its own budget ran out (the load is refused).
    over: bool,
}

/// Parses and validates one unit (a file, or a piece of one) with a budget of its own.
fn unit(name: &str, text: &str, piece: Option<&yaml::Piece>) -> FileParts {
    let file: Arc<str> = Arc::from(name);
    let mut budget = yaml::Budget::new();
    let parsed = match piece {
        Some(p) => yaml::parse_piece(&file, text, p, &mut budget),
        None => yaml::parse_budgeted(&file, text, &mut budget),
    };
    FileParts {
        parts: vec![validate(&file, text, parsed)],
        spent: budget.spent_total(),
        over: budget.exhausted(),
    }
}

fn validate(file: &Arc<str>, text: &str, parsed: yaml::Parsed) -> Part {
    let mut validator = Validator::new();
    validator.extend_diagnostics(parsed.diagnostics);
    validate_documents(&mut validator, file, text, parsed.documents);
    validator.into_part()
}

/// Feeds `documents` to `validator`, each freed once validated: the YAML tree of a file shrinks while
/// its model grows, so that the two never both hold the whole file (a file of one document listing
/// 10,000 policies: a tree of ~18 MiB beside a model of ~14 MiB). A list of resources is fed one
/// item at a time, each as a list of one, which the validator reads exactly as the item in the list.
fn validate_documents(
    validator: &mut Validator,
    file: &Arc<str>,
    text: &str,
    documents: Vec<Node>,
) {
    for doc in documents {
        match doc.value {
            Value::Seq(items) => {
                for item in items {
                    let one = Node {
                        value: Value::Seq(vec![item]),
                        ..doc
                    };
                    validator.document(file, text, &one);
                }
            }
            _ => validator.document(file, text, &doc),
        }
    }
}

/// Load configuration texts, `(display name, text)` pairs, one document after the other on this
/// thread with one budget: the reference that [`load_sources`] equals.
pub fn load_sources_sequential<T: AsRef<str>>(sources: &[(String, T)]) -> Loaded {
    let mut validator = Validator::new();
    // One budget for every file: the whole configuration is bounded, not each file.
    let mut budget = yaml::Budget::new();
    for (name, text) in sources {
        let text = text.as_ref();
        let file: Arc<str> = Arc::from(name.as_str());
        let parsed = yaml::parse_budgeted(&file, text, &mut budget);
        validator.extend_diagnostics(parsed.diagnostics);
        validate_documents(&mut validator, &file, text, parsed.documents);
    }
    let (config, diagnostics) = validator.finish();
    Loaded {
        config,
        diagnostics,
    }
}

/// Load configuration texts: `(display name, text)` pairs, parsed and validated in parallel. Pure: no
/// file system.
pub fn load_sources<T: AsRef<str>>(sources: &[(String, T)]) -> Loaded {
    let texts: Vec<(&str, &str)> = sources
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_ref()))
        .collect();
    match parse_all(&texts, threads()) {
        Some(files) => loaded(files.iter().map(|f| f.as_ref()))
            .unwrap_or_else(|| load_sources_sequential(sources)),
        None => load_sources_sequential(sources),
    }
}

/// The merged result of files' parts, in file order; None when the YAML budgets of the whole load are
/// spent (the load must then be done sequentially, for its exact error).
fn loaded<'f>(files: impl Iterator<Item = &'f FileParts> + Clone) -> Option<Loaded> {
    let mut total = (0usize, 0usize);
    for f in files.clone() {
        total = (total.0 + f.spent.0, total.1 + f.spent.1);
        if f.over || !yaml::Budget::within(total) {
            return None;
        }
    }
    // Collected first, so that merge knows how many parts there are (its name table sized once).
    let parts: Vec<&Part> = files.flat_map(|f| f.parts.iter()).collect();
    let (config, diagnostics) = merge(parts);
    Some(Loaded {
        config,
        diagnostics,
    })
}

/// One unit of work: a file, or one piece of a big file.
struct Job<'s> {
    file: usize,
    name: &'s str,
    text: &'s str,
    piece: Option<yaml::Piece>,
}

/// Parses and validates `files` (name, text) with up to `threads` threads; the results in file order.
/// None when the YAML budgets were spent before all were parsed (see the module documentation).
fn parse_all(files: &[(&str, &str)], threads: usize) -> Option<Vec<Arc<FileParts>>> {
    let total: usize = files.iter().map(|(_, t)| t.len()).sum();
    if threads <= 1 || total < PARALLEL_BYTES {
        let mut spent = (0usize, 0usize);
        let mut out = Vec::with_capacity(files.len());
        for (n, t) in files {
            let f = unit(n, t, None);
            spent = (spent.0 + f.spent.0, spent.1 + f.spent.1);
            if f.over || !yaml::Budget::within(spent) {
                return None;
            }
            out.push(Arc::new(f));
        }
        return Some(out);
    }
    let mut jobs: Vec<Job> = Vec::new();
    for (i, (name, text)) in files.iter().enumerate() {
        if text.len() > PIECE_BYTES {
            // Pieces of about an equal share of the threads, at most PIECE_BYTES each.
            let target = (text.len() / threads).clamp(PIECE_BYTES / 4, PIECE_BYTES);
            for piece in yaml::pieces(text, target) {
                jobs.push(Job {
                    file: i,
                    name,
                    text,
                    piece: Some(piece),
                });
            }
        } else {
            jobs.push(Job {
                file: i,
                name,
                text,
                piece: None,
            });
        }
    }
    // The biggest first, so that no thread is left with a big one at the end.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&j| {
        std::cmp::Reverse(
            jobs[j]
                .piece
                .as_ref()
                .map_or(jobs[j].text.len(), |p| p.bytes()),
        )
    });
    let next = AtomicUsize::new(0);
    // What the units done so far spent; past the limits, no more are parsed.
    let (nodes, alias) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let spent_all = AtomicBool::new(false);
    let results: Mutex<Vec<Option<FileParts>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()) {
            s.spawn(|| {
                let mut done = Vec::new();
                while !spent_all.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&j) = order.get(k) else { break };
                    let job = &jobs[j];
                    let f = unit(job.name, job.text, job.piece.as_ref());
                    let total = (
                        nodes.fetch_add(f.spent.0, Ordering::Relaxed) + f.spent.0,
                        alias.fetch_add(f.spent.1, Ordering::Relaxed) + f.spent.1,
                    );
                    if f.over || !yaml::Budget::within(total) {
                        spent_all.store(true, Ordering::Relaxed);
                    }
                    done.push((j, f));
                }
                let mut results = results.lock().unwrap_or_else(|p| p.into_inner());
                for (j, r) in done {
                    results[j] = Some(r);
                }
            });
        }
    });
    if spent_all.load(Ordering::Relaxed) {
        return None;
    }
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<FileParts> = files
        .iter()
        .map(|_| FileParts {
            parts: Vec::new(),
            spent: (0, 0),
            over: false,
        })
        .collect();
    for (job, r) in jobs.iter().zip(results) {
        let r = r?;
        let f = &mut out[job.file];
        if f.parts.is_empty() {
            // A file parsed whole (or a big one's first piece): its parts as they are, not copied into
            // a vector with room for more (kept for every file: 10,000 files, ~7 MiB of spare room).
            f.parts = r.parts;
        } else {
            f.parts.extend(r.parts);
        }
        f.spent = (f.spent.0 + r.spent.0, f.spent.1 + r.spent.1);
        f.over |= r.over;
    }
    Some(
        out.into_iter()
            .map(|mut f| {
                f.parts.shrink_to_fit();
                Arc::new(f)
            })
            .collect(),
    )
}

/// One file's parsed and validated parts, shared: what [`parse_files`] gives and [`merged`] puts
/// together. The daemon's reader (`config::load::Reader`) keeps one per file, so that a reload parses
/// only the files that changed.
#[derive(Debug, Clone)]
pub struct Parsed(Arc<FileParts>);

impl Parsed {
    /// Takes `old`'s policies, staged policies and network sets (an earlier parse of the same file)
    /// instead of this parse's wherever they are equal (same name, same value): the new copies are
    /// freed at once, so that a file of 10,000 policies in which one changed holds one new policy, not
    /// a second model beside the one the compile cache still holds until the compile is done (~14 MiB
    /// at 10,000 policies); and the compile finds them the same by pointer.
    pub fn share_unchanged(&mut self, old: &Parsed) {
        use std::collections::HashMap;
        fn share<T: PartialEq>(
            new: &mut [Arc<T>],
            old: &HashMap<&str, &Arc<T>>,
            name: impl Fn(&T) -> &str,
        ) {
            for r in new {
                if let Some(o) = old.get(name(r)) {
                    if !Arc::ptr_eq(o, r) && ***o == **r {
                        *r = Arc::clone(o);
                    }
                }
            }
        }
        let Some(new) = Arc::get_mut(&mut self.0) else {
            return;
        };
        let configs = || old.0.parts.iter().map(|p| p.config());
        let policies = configs()
            .flat_map(|c| &c.policies)
            .map(|p| (p.name.as_str(), p))
            .collect();
        let staged = configs()
            .flat_map(|c| &c.staged)
            .map(|p| (p.name.as_str(), p))
            .collect();
        let sets = configs()
            .flat_map(|c| &c.network_sets)
            .map(|s| (s.name.as_str(), s))
            .collect();
        for part in &mut new.parts {
            let c = part.config_mut();
            share(&mut c.policies, &policies, |p| &p.name);
            share(&mut c.staged, &staged, |p| &p.name);
            share(&mut c.network_sets, &sets, |s| &s.name);
        }
    }
}

/// Parses and validates `files` (display name, text) in parallel, each on its own; None when the YAML
/// budgets of the whole load are spent before all were parsed (see the module documentation).
pub fn parse_files(files: &[(&str, &str)]) -> Option<Vec<Parsed>> {
    parse_all(files, threads()).map(|v| v.into_iter().map(Parsed).collect())
}

/// The load of files' parsed parts, in file order: [`merge`] runs the checks across files (names
/// defined twice, tiers) on all of them, as one validator fed every document would. None when the
/// YAML budgets of the whole load are spent: the load must then be done sequentially
/// ([`load_sources_sequential`]), for its exact error.
pub fn merged<'p>(files: impl Iterator<Item = &'p Parsed> + Clone) -> Option<Loaded> {
    loaded(files.map(|p| &*p.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, port: u16) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: {name}\nspec:\n  \
             selector: all()\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      \
             ports: [{port}]\n"
        )
    }

    fn render(l: &Loaded) -> String {
        format!("{:?}\n{:?}", l.config, l.diagnostics)
    }

    /// Files that hold what crosses files: duplicates (within a file, across files, of a resource with
    /// errors), a tier declared in one file and used in another, an undeclared tier, a syntax error, a
    /// list kind, and many documents in one file (cut into pieces).
    fn directory() -> Vec<(String, String)> {
        let big: Vec<String> = (0..3000)
            .map(|i| policy(&format!("big-{i}"), 1000))
            .collect();
        vec![
            (
                "10-tier.yaml".into(),
                "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n"
                    .into(),
            ),
            (
                "20-a.yaml".into(),
                format!("{}---\n{}", policy("dup", 22), policy("dup", 23)),
            ),
            ("21-b.yaml".into(), policy("dup", 24)),
            (
                "22-tiered.yaml".into(),
                "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: security.p}\nspec: {tier: security, selector: all()}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: nowhere.q}\nspec: {tier: nowhere, selector: all()}\n"
                    .into(),
            ),
            (
                "23-bad.yaml".into(),
                format!("{}---\nkind: [\n---\n{}", policy("bad-a", 1), policy("big-7", 2)),
            ),
            (
                "24-list.yaml".into(),
                "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicyList\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata: {name: listed}\n  spec: {selector: all()}\n- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata: {name: dup}\n  spec: {selector: all(), order: x}\n"
                    .into(),
            ),
            ("30-big.yaml".into(), big.join("---\n")),
            ("31-big-dup.yaml".into(), policy("big-2999", 9)),
        ]
        .into_iter()
        .chain(examples())
        .collect()
    }

    /// The example configuration (every kind), twice: the second copy defines every name again.
    fn examples() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/hostpolicy.d");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (format!("5{name}"), std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        let again: Vec<(String, String)> = files
            .iter()
            .map(|(n, t)| (format!("6{n}"), t.clone()))
            .collect();
        files.extend(again);
        files
    }

    /// A list of resources validated one item at a time (each freed once validated) gives what the
    /// validator gives for the whole list: the same resources and the same diagnostics, for items that
    /// are resources, defined twice, invalid, or not resources at all (a scalar, a list, null).
    #[test]
    fn a_list_validated_item_by_item_equals_the_whole_list() {
        let item = |name: &str, port: u16| {
            format!(
                "- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata:\n    name: {name}\n  \
                 spec:\n    selector: all()\n    ingress:\n    - action: Allow\n      protocol: TCP\n      \
                 destination:\n        ports: [{port}]\n"
            )
        };
        let text = format!(
            "{}- 7\n- [a, b]\n- null\n{}{}- apiVersion: projectcalico.org/v3\n  kind: Tier\n  \
             metadata: {{name: t}}\n  spec: {{order: x}}\n---\n{}",
            item("a", 22),
            item("a", 23),
            item("b", 24),
            policy("c", 25)
        );
        let file: Arc<str> = Arc::from("list.yaml");
        let parsed = yaml::parse(&file, &text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let whole = {
            let mut v = Validator::new();
            for doc in &parsed.documents {
                v.document(&file, &text, doc);
            }
            v.finish()
        };
        assert_eq!(whole.0.policies.len(), 3, "{whole:?}");
        assert!(whole.1.len() >= 4, "{:?}", whole.1);
        let mut v = Validator::new();
        validate_documents(&mut v, &file, &text, parsed.documents);
        assert_eq!(format!("{:?}", v.finish()), format!("{whole:?}"));
    }

    /// Parallel parsing (pieces of a big file included) gives what one validator fed every document in
    /// order gives: the same resources, the same diagnostics in the same order.
    #[test]
    fn parallel_load_equals_sequential_load() {
        let dir = directory();
        let sequential = load_sources_sequential(&dir);
        for kind in [
            "Tier",
            "GlobalNetworkPolicy",
            "StagedGlobalNetworkPolicy",
            "HostEndpoint",
            "GlobalNetworkSet",
            "FelixConfiguration",
            "ConnectivityCheck",
            "ManagementAccess",
        ] {
            assert!(
                sequential
                    .diagnostics
                    .iter()
                    .any(|d| d.message.starts_with(&format!("{kind} '"))
                        && d.message.contains("is already defined at")),
                "a {kind} defined twice across files: {:?}",
                sequential.diagnostics
            );
        }
        assert!(
            sequential.diagnostics.len() >= 5,
            "the directory has problems across files: {:?}",
            sequential.diagnostics
        );
        let texts: Vec<(&str, &str)> = dir.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        for threads in [1, 2, 3, 8] {
            let files = parse_all(&texts, threads).expect("within the budgets");
            if threads > 1 {
                assert!(files[6].parts.len() > 1, "the big file was cut into pieces");
            }
            let parallel = loaded(files.iter().map(|f| f.as_ref())).expect("within the budgets");
            assert_eq!(render(&parallel), render(&sequential), "{threads} threads");
        }
        assert_eq!(render(&load_sources(&dir)), render(&sequential));
    }

    /// The YAML budgets bound the whole load, not each unit: files that each stay within the alias
    /// budget but pass it together are refused with the error a sequential load gives, in parallel and
    /// through the cache alike.
    #[test]
    fn the_budgets_cover_the_whole_load_in_parallel_too() {
        let list: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
        let aliases = |k: usize| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: s{k}}}\nspec:\n  \
                 nets: &a [{}]\n  copies: [{}]\n",
                list.join(", "),
                vec!["*a"; 400].join(", ")
            )
        };
        let mut dir = directory();
        for k in 0..3 {
            dir.push((format!("40-aliases-{k}.yaml"), aliases(k)));
        }
        let sequential = load_sources_sequential(&dir);
        assert!(
            sequential
                .diagnostics
                .iter()
                .any(|d| d.message.contains("aliases expand to too many nodes")),
            "{:?}",
            sequential.diagnostics
        );
        let texts: Vec<(&str, &str)> = dir.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        for threads in [1, 2, 4] {
            let parallel =
                parse_all(&texts, threads).and_then(|f| loaded(f.iter().map(|f| f.as_ref())));
            assert!(parallel.is_none(), "{threads} threads: over the budgets");
        }
        assert_eq!(render(&load_sources(&dir)), render(&sequential));
        // Two of them are within the budgets: parsed file by file and merged, accepted; the third one
        // parsed alone is within its own budget, and merged with the others it is not.
        dir.pop();
        let texts: Vec<(&str, &str)> = dir.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        let mut parsed = parse_files(&texts).expect("within the budgets");
        assert_eq!(
            render(&merged(parsed.iter()).expect("within the budgets")),
            render(&load_sources_sequential(&dir))
        );
        let third = aliases(2);
        parsed
            .extend(parse_files(&[("40-aliases-2.yaml", third.as_str())]).expect("alone: within"));
        assert!(
            merged(parsed.iter()).is_none(),
            "together: over the budgets"
        );
    }
}
