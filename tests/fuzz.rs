//! A structure-aware fuzz target for the loader, the validator, the compiler, `render` and `explain`
//! (issue 19 item 9), on stable Rust with proptest.
//!
//! The seed corpus is the example configuration (`etc/hostpolicy.d/`), the golden test inputs
//! (`tests/golden/*/`) and `tests/fuzz/seeds/`. A case takes one seed configuration (a set of files),
//! parses each file into YAML nodes, applies a few structural mutations (replace a scalar by an
//! interesting value, delete, duplicate or swap entries, rename a key, turn a scalar into a collection,
//! nest deeply, change a kind), writes the tree back as YAML (block or flow style), sometimes mutates
//! the text itself (YAML punctuation, anchors, aliases, a BOM, a NUL, a cut), and runs the pipeline on
//! it. What must hold for every input:
//!
//! - nothing panics (load, validate, resolve, lint, lockout, compile, render, explain);
//! - every diagnostic prints as `FILE:LINE:COL: error|warning: ...` (or `hostpolicyd: ...`) on one
//!   line, without control characters, and bounded in length;
//! - a configuration that compiles compiles to the same content hash twice;
//! - the YAML parser's fast paths give exactly the parser's documents and diagnostics (issue 18).
//!
//! CI runs a short pass (`HOSTPOLICYD_FUZZ_CASES`, default 200: a few seconds). A longer run:
//!
//! ```text
//! HOSTPOLICYD_FUZZ_CASES=200000 cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! A failure is shrunk to a small input, printed, and saved under `tests/fuzz.proptest-regressions`
//! so that every later run tries it first.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};

use hostpolicyd::analysis::explain::{explain, Packet, Path as PacketPath};
use hostpolicyd::config::diag::MAX_MESSAGE;
use hostpolicyd::config::load::load_sources;
use hostpolicyd::config::yaml::{self, Key, Node, Value};
use hostpolicyd::nft::render;
use hostpolicyd::pipeline;
use hostpolicyd::resolve::{resolve, Interface};

/// One seed: a configuration as (file name, text) pairs.
type Seed = Vec<(String, String)>;

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    files.sort();
    files
}

fn read_seed(files: &[PathBuf]) -> Seed {
    files
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(p).unwrap())
        })
        .collect()
}

/// The seed corpus: the example directory, each golden input directory, the fuzz seeds together and
/// each fuzz seed with the example's HostEndpoints.
fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = read_seed(&yaml_files(&root.join("etc/hostpolicy.d")));
        let mut out = vec![example.clone()];
        let mut golden: Vec<PathBuf> = fs::read_dir(root.join("tests/golden"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        golden.sort();
        for dir in golden {
            out.push(read_seed(&yaml_files(&dir)));
        }
        let fuzz = yaml_files(&root.join("tests/fuzz/seeds"));
        out.push(read_seed(&fuzz));
        let heps: Seed = example
            .iter()
            .filter(|(n, _)| n.contains("hostendpoints"))
            .cloned()
            .collect();
        for f in &fuzz {
            let mut s = read_seed(std::slice::from_ref(f));
            s.extend(heps.iter().cloned());
            out.push(s);
        }
        out.retain(|s| !s.is_empty());
        assert!(out.len() >= 8, "seed corpus: {} configurations", out.len());
        out
    })
}

/// Values that have broken parsers before, or sit on a boundary of the validator.
const INTERESTING: &[&str] = &[
    "",
    " ",
    "0",
    "-1",
    "1.5",
    "65535",
    "65536",
    "4294967296",
    "18446744073709551616",
    "1e309",
    "-0",
    "nan",
    ".inf",
    "null",
    "~",
    "true",
    "yes",
    "on",
    "TCP",
    "tcp",
    "UDP",
    "ICMP",
    "ICMPv6",
    "SCTP",
    "UDPLite",
    "58",
    "255",
    "256",
    "Allow",
    "Deny",
    "Pass",
    "Log",
    "allow",
    "Ingress",
    "Egress",
    "all()",
    "global()",
    "has(",
    "!has(a)",
    "a == 'b' &&",
    "a in {'x'",
    "((((((((a))))))))",
    "a == \"b\"",
    "x starts with ''",
    "kubernetes-host == 'ingress'",
    "role == 'node'",
    "192.0.2.1",
    "192.0.2.0/24",
    "192.0.2.1/33",
    "1.2.3.4/16",
    "0.0.0.0/0",
    "::/0",
    "2001:db8::/32",
    "2001:db8::1/129",
    "fe80::1%eth0",
    "10.0.0.256",
    "1:65535",
    "80:79",
    "0:0",
    "30000:32767",
    "named-port",
    "*",
    "eth0",
    "lo",
    "eth0.100",
    "a-very-long-interface-name",
    "node1",
    "node2",
    "default",
    "projectcalico-default-allow",
    "\u{1b}[2J\n",
    "a\u{0}b",
    "\u{202e}gnp",
    "é",
    "日本",
    "hostpolicy/v1",
    "projectcalico.org/v3",
    "GlobalNetworkPolicy",
    "HostEndpoint",
    "GlobalNetworkSet",
    "FelixConfiguration",
    "ConnectivityCheck",
    "ManagementAccess",
    "Tier",
    "NetworkPolicy",
    "List",
];

/// Keys worth renaming to (real fields, typos, case changes).
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "name",
    "labels",
    "annotations",
    "namespace",
    "selector",
    "order",
    "types",
    "ingress",
    "egress",
    "action",
    "protocol",
    "notProtocol",
    "source",
    "destination",
    "nets",
    "notNets",
    "ports",
    "notPorts",
    "notSelector",
    "icmp",
    "notICMP",
    "ipVersion",
    "preDNAT",
    "doNotTrack",
    "applyOnForward",
    "node",
    "interfaceName",
    "expectedIPs",
    "profiles",
    "items",
    "tcp",
    "host",
    "port",
    "timeoutSeconds",
    "sources",
    "<<",
    "Selector",
    "ingres",
    "spec ",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the `at`-th scalar (in document order) with `INTERESTING[value]`, or a long string.
    Scalar { at: u32, value: u32, long: bool },
    /// Delete the `at`-th entry of a collection.
    Delete { at: u32 },
    /// Duplicate the `at`-th entry of a collection (duplicate keys, repeated rules).
    Duplicate { at: u32 },
    /// Swap two nodes' values.
    Swap { a: u32, b: u32 },
    /// Rename the `at`-th mapping key.
    RenameKey { at: u32, key: u32 },
    /// Turn the `at`-th node into an empty or one-entry collection of the other kind, or null.
    Retype { at: u32, to: u8 },
    /// Wrap the `at`-th node in `depth` sequences.
    Nest { at: u32, depth: u16 },
    /// Repeat the `at`-th collection's entries until it has `n`.
    Grow { at: u32, n: u16 },
}

/// A text mutation after the tree is written back.
#[derive(Debug, Clone)]
enum TextMutation {
    Insert { at: u32, what: u8 },
    Cut { at: u32 },
    DuplicateLine { at: u32 },
}

const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a\n",
    "!!",
    "!tag ",
    "---\n",
    "...\n",
    "\t",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "#",
    ": ",
    "- ",
    "\u{0}",
    "\u{feff}",
    "%YAML 1.1\n",
    "? ",
    "|",
    ">",
    "\r",
    "\\",
    "@",
    "`",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<u32>(), any::<u32>(), prop::bool::weighted(0.05))
            .prop_map(|(at, value, long)| Mutation::Scalar { at, value, long }),
        2 => any::<u32>().prop_map(|at| Mutation::Delete { at }),
        2 => any::<u32>().prop_map(|at| Mutation::Duplicate { at }),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Mutation::Swap { a, b }),
        2 => (any::<u32>(), any::<u32>()).prop_map(|(at, key)| Mutation::RenameKey { at, key }),
        1 => (any::<u32>(), 0u8..4).prop_map(|(at, to)| Mutation::Retype { at, to }),
        1 => (any::<u32>(), 1u16..300).prop_map(|(at, depth)| Mutation::Nest { at, depth }),
        1 => (any::<u32>(), 2u16..600).prop_map(|(at, n)| Mutation::Grow { at, n }),
    ]
}

fn text_mutation() -> impl Strategy<Value = TextMutation> {
    prop_oneof![
        3 => (any::<u32>(), any::<u8>()).prop_map(|(at, what)| TextMutation::Insert { at, what }),
        1 => any::<u32>().prop_map(|at| TextMutation::Cut { at }),
        1 => any::<u32>().prop_map(|at| TextMutation::DuplicateLine { at }),
    ]
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop::sample::select(vec![
        "192.0.2.1",
        "192.0.2.9",
        "198.51.100.4",
        "198.51.100.5",
        "203.0.113.7",
        "10.0.0.2",
        "0.0.0.0",
        "255.255.255.255",
        "2001:db8::1",
        "2001:db8:2:1::5",
        "::",
        "fe80::1",
    ])
    .prop_map(|a| a.parse().unwrap())
}

fn packet() -> impl Strategy<Value = Packet> {
    let iface = prop::sample::select(vec!["eth0", "eth1", "lo", "nothere"]);
    (
        0u8..3,
        iface.clone(),
        iface,
        address(),
        address(),
        prop::sample::select(vec![6u8, 17, 1, 58, 132, 136, 0, 47]),
        (any::<u16>(), any::<u16>(), any::<u8>(), any::<bool>()),
    )
        .prop_map(
            |(kind, a, b, src, dst, protocol, (sport, dport, icmp, est))| {
                let path = match kind {
                    0 => PacketPath::Inbound { iface: a.into() },
                    1 => PacketPath::Outbound { iface: a.into() },
                    _ => PacketPath::Forwarded {
                        in_iface: a.into(),
                        out_iface: b.into(),
                    },
                };
                let mut p = Packet::new(path, src, dst, protocol);
                if matches!(protocol, 6 | 17 | 132 | 136) {
                    p.sport = Some(sport);
                    p.dport = Some(dport);
                } else if matches!(protocol, 1 | 58) {
                    p.icmp_type = Some(icmp);
                    p.icmp_code = Some(icmp % 16);
                }
                p.established = est;
                p
            },
        )
}

// ── the tree: walking, mutating, writing back ──────────────────────────────────────────────────

/// Every node of `doc` in document order, as paths of child indices.
fn paths(doc: &Node, prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    out.push(prefix.clone());
    match &doc.value {
        Value::Seq(items) => {
            for (i, n) in items.iter().enumerate() {
                prefix.push(i);
                paths(n, prefix, out);
                prefix.pop();
            }
        }
        Value::Map(entries) => {
            for (i, (_, n)) in entries.iter().enumerate() {
                prefix.push(i);
                paths(n, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_ref<'a>(doc: &'a Node, path: &[usize]) -> &'a Node {
    let mut n = doc;
    for &i in path {
        n = match &n.value {
            Value::Seq(items) => &items[i],
            Value::Map(entries) => &entries[i].1,
            _ => unreachable!("paths only lead through collections"),
        };
    }
    n
}

fn node_at<'a>(doc: &'a mut Node, path: &[usize]) -> &'a mut Node {
    let mut n = doc;
    for &i in path {
        n = match &mut n.value {
            Value::Seq(items) => &mut items[i],
            Value::Map(entries) => &mut entries[i].1,
            _ => unreachable!("paths only lead through collections"),
        };
    }
    n
}

fn scalar(text: &str) -> Node {
    Node {
        value: Value::Str(text.to_string()),
        line: 1,
        column: 1,
        span: None,
    }
}

fn pick<T: Clone>(items: &[T], at: u32) -> Option<T> {
    (!items.is_empty()).then(|| items[at as usize % items.len()].clone())
}

fn apply(docs: &mut [Node], m: &Mutation) {
    let mut all: Vec<(usize, Vec<usize>)> = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        let mut out = Vec::new();
        paths(doc, &mut Vec::new(), &mut out);
        all.extend(out.into_iter().map(|p| (d, p)));
    }
    let collections: Vec<(usize, Vec<usize>)> = all
        .iter()
        .filter(|(d, p)| {
            let n = node_ref(&docs[*d], p);
            matches!(&n.value, Value::Seq(v) if !v.is_empty())
                || matches!(&n.value, Value::Map(v) if !v.is_empty())
        })
        .cloned()
        .collect();
    match *m {
        Mutation::Scalar { at, value, long } => {
            let scalars: Vec<_> = all
                .iter()
                .filter(|(d, p)| {
                    !matches!(node_ref(&docs[*d], p).value, Value::Seq(_) | Value::Map(_))
                })
                .cloned()
                .collect();
            if let Some((d, p)) = pick(&scalars, at) {
                let text = if long {
                    "a".repeat(100_000)
                } else {
                    INTERESTING[value as usize % INTERESTING.len()].to_string()
                };
                node_at(&mut docs[d], &p).value = match text.parse::<u64>() {
                    Ok(n) if value % 2 == 0 => Value::UInt(n),
                    _ => Value::Str(text),
                };
            }
        }
        Mutation::Delete { at } | Mutation::Duplicate { at } => {
            if let Some((d, p)) = pick(&collections, at) {
                let n = node_at(&mut docs[d], &p);
                let dup = matches!(m, Mutation::Duplicate { .. });
                match &mut n.value {
                    Value::Seq(items) => {
                        let i = at as usize % items.len();
                        if dup {
                            let copy = items[i].clone();
                            items.insert(i, copy);
                        } else {
                            items.remove(i);
                        }
                    }
                    Value::Map(entries) => {
                        let i = at as usize % entries.len();
                        if dup {
                            let copy = entries[i].clone();
                            entries.insert(i, copy);
                        } else {
                            entries.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        Mutation::Swap { a, b } => {
            if let (Some((da, pa)), Some((db, pb))) = (pick(&all, a), pick(&all, b)) {
                // Not a node with one of its own ancestors.
                if da != db || !(pa.starts_with(&pb) || pb.starts_with(&pa)) {
                    let va = node_at(&mut docs[da], &pa).value.clone();
                    let vb = std::mem::replace(&mut node_at(&mut docs[db], &pb).value, va);
                    node_at(&mut docs[da], &pa).value = vb;
                }
            }
        }
        Mutation::RenameKey { at, key } => {
            let maps: Vec<_> = collections
                .iter()
                .filter(|(d, p)| matches!(node_ref(&docs[*d], p).value, Value::Map(_)))
                .cloned()
                .collect();
            if let Some((d, p)) = pick(&maps, at) {
                if let Value::Map(entries) = &mut node_at(&mut docs[d], &p).value {
                    let i = key as usize % entries.len();
                    entries[i].0.text = KEYS[(at ^ key) as usize % KEYS.len()].to_string().into();
                }
            }
        }
        Mutation::Retype { at, to } => {
            if let Some((d, p)) = pick(&all, at) {
                let n = node_at(&mut docs[d], &p);
                let old = std::mem::replace(&mut n.value, Value::Null);
                n.value = match to {
                    0 => Value::Seq(vec![]),
                    1 => Value::Map(vec![]),
                    2 => Value::Seq(vec![Node {
                        value: old,
                        ..scalar("")
                    }]),
                    _ => Value::Null,
                };
            }
        }
        Mutation::Nest { at, depth } => {
            if let Some((d, p)) = pick(&all, at) {
                let n = node_at(&mut docs[d], &p);
                for _ in 0..depth {
                    let inner = std::mem::replace(&mut n.value, Value::Null);
                    n.value = Value::Seq(vec![Node {
                        value: inner,
                        ..scalar("")
                    }]);
                }
            }
        }
        Mutation::Grow { at, n } => {
            if let Some((d, p)) = pick(&collections, at) {
                match &mut node_at(&mut docs[d], &p).value {
                    Value::Seq(items) => {
                        let base = items.clone();
                        while items.len() < n as usize {
                            items.push(base[items.len() % base.len()].clone());
                        }
                    }
                    Value::Map(entries) => {
                        // Distinct keys: `k0`, `k1`... after the real ones.
                        let mut i = 0;
                        while entries.len() < n as usize {
                            let key = Key {
                                text: format!("k{i}").into(),
                                line: 1,
                                column: 1,
                            };
                            entries.push((key, scalar("v")));
                            i += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn quote(text: &str) -> String {
    // A JSON string is a YAML double-quoted scalar.
    serde_json::to_string(text).unwrap()
}

fn flow(n: &Node, out: &mut String) {
    match &n.value {
        Value::Null | Value::Invalid => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::UInt(u) => out.push_str(&u.to_string()),
        Value::Float(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
        Value::Float(_) => out.push_str(".nan"),
        Value::Str(s) => out.push_str(&quote(s)),
        Value::Seq(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow(it, out);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&key_text(&k.text));
                out.push_str(": ");
                flow(v, out);
            }
            out.push('}');
        }
    }
}

fn key_text(k: &str) -> String {
    // `<<` stays a merge key; everything else is quoted unless plainly safe.
    if k == "<<"
        || (!k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        k.to_string()
    } else {
        quote(k)
    }
}

/// Block style, with flow style for empty collections and deep nests.
fn block(n: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match &n.value {
        Value::Seq(items) if !items.is_empty() && indent < 200 => {
            for it in items {
                out.push_str(&pad);
                out.push('-');
                if matches!(&it.value, Value::Seq(v) if !v.is_empty())
                    || matches!(&it.value, Value::Map(v) if !v.is_empty())
                {
                    out.push('\n');
                    block(it, indent + 2, out);
                } else {
                    out.push(' ');
                    flow(it, out);
                    out.push('\n');
                }
            }
        }
        Value::Map(entries) if !entries.is_empty() && indent < 200 => {
            for (k, v) in entries {
                out.push_str(&pad);
                out.push_str(&key_text(&k.text));
                out.push(':');
                if matches!(&v.value, Value::Seq(x) if !x.is_empty())
                    || matches!(&v.value, Value::Map(x) if !x.is_empty())
                {
                    out.push('\n');
                    block(v, indent + 2, out);
                } else {
                    out.push(' ');
                    flow(v, out);
                    out.push('\n');
                }
            }
        }
        _ => {
            out.push_str(&pad);
            flow(n, out);
            out.push('\n');
        }
    }
}

fn write_back(docs: &[Node], flow_style: bool) -> String {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        if flow_style {
            flow(d, &mut out);
            out.push('\n');
        } else {
            block(d, 0, &mut out);
        }
    }
    out
}

fn mutate_text(text: &mut String, m: &TextMutation) {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let at = |k: u32| boundaries[k as usize % boundaries.len()];
    match *m {
        TextMutation::Insert { at: k, what } => {
            let i = at(k);
            text.insert_str(i, TOKENS[what as usize % TOKENS.len()]);
        }
        TextMutation::Cut { at: k } => {
            let i = at(k);
            text.truncate(i);
        }
        TextMutation::DuplicateLine { at: k } => {
            let i = at(k);
            let start = text[..i].rfind('\n').map_or(0, |s| s + 1);
            let end = text[i..].find('\n').map_or(text.len(), |e| i + e + 1);
            let line = text[start..end].to_string();
            text.insert_str(end, &line);
        }
    }
}

// ── the oracles ─────────────────────────────────────────────────────────────────────────────────

fn check_diagnostic_text(text: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !text.chars().any(|c| c.is_control()),
        "control character in a diagnostic: {text:?}"
    );
    prop_assert!(
        text.chars().count() <= MAX_MESSAGE + 400,
        "diagnostic of {} characters",
        text.chars().count()
    );
    let shaped = text.starts_with("hostpolicyd: ")
        || text.contains(": error: ")
        || text.contains(": warning: ");
    prop_assert!(shaped, "not FILE:LINE:COL: error|warning: ...: {text:?}");
    Ok(())
}

fn run_case(files: &[(String, String)], packets: &[Packet]) -> Result<(), TestCaseError> {
    let loaded = load_sources(files);
    for d in &loaded.diagnostics {
        check_diagnostic_text(&d.to_string())?;
    }
    let ifaces = [
        Interface {
            name: "eth0".into(),
            addrs: vec![
                "198.51.100.4".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
            ],
        },
        Interface {
            name: "eth1".into(),
            addrs: vec!["2001:db8::1".parse().unwrap()],
        },
    ];
    let config = loaded.config.clone();
    match pipeline::build(loaded, "node1", &ifaces, "hostpolicy", false) {
        Ok(compiled) => {
            for d in &compiled.warnings {
                check_diagnostic_text(&d.to_string())?;
            }
            let text = render(&compiled.ruleset);
            prop_assert!(text.starts_with("table inet hostpolicy"));
            let again = pipeline::build(load_sources(files), "node1", &ifaces, "hostpolicy", false)
                .map_err(|e| {
                    TestCaseError::fail(format!("second build failed: {:?}", e.diagnostics))
                })?;
            prop_assert_eq!(
                hostpolicyd::compile::content_hash(&compiled.ruleset),
                hostpolicyd::compile::content_hash(&again.ruleset),
                "the same files compiled to two rulesets"
            );
            for p in packets {
                let e = explain(&compiled.config, &compiled.view, p);
                let _ = format!("{e}");
            }
        }
        Err(invalid) => {
            for d in &invalid.diagnostics {
                check_diagnostic_text(&d.to_string())?;
            }
            // `explain` runs on whatever decoded, as `hostpolicyd explain` would not: it must not
            // panic on a half-valid model either.
            let view = resolve(&config, "node1", &ifaces);
            for p in packets {
                let _ = explain(&config, &view, p);
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("HOSTPOLICYD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fuzz_the_pipeline(
        seed in any::<prop::sample::Index>(),
        file in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 0..6),
        flow_style in any::<bool>(),
        text in prop::option::weighted(0.3, prop::collection::vec(text_mutation(), 1..4)),
        packets in prop::collection::vec(packet(), 1..4),
    ) {
        let seed = seed.get(seeds());
        let mut files: Vec<(String, String)> = seed.clone();
        let target = file.index(files.len());
        let name: Arc<str> = Arc::from(files[target].0.as_str());
        let parsed = yaml::parse(&name, &files[target].1);
        if !mutations.is_empty() || text.is_some() {
            let mut docs = parsed.documents;
            for m in &mutations {
                apply(&mut docs, m);
            }
            let mut out = write_back(&docs, flow_style);
            for m in text.iter().flatten() {
                mutate_text(&mut out, m);
            }
            files[target].1 = out;
        }
        // The parser's fast paths (issue 18) read exactly what the parser reads, marks included, and
        // leave everything else to it.
        let text = &files[target].1;
        let (fast, reference) = (yaml::parse(&name, text), yaml::parse_reference(&name, text));
        prop_assert_eq!(&fast.documents, &reference.documents, "{:?}", text);
        let messages = |p: &yaml::Parsed| p.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        prop_assert_eq!(messages(&fast), messages(&reference), "{:?}", text);
        // A report, not an assertion: an input that takes seconds is worth a look (a hang in the
        // making), but the time depends on the machine.
        let started = std::time::Instant::now();
        let result = run_case(&files, &packets);
        if started.elapsed() > std::time::Duration::from_secs(2) {
            eprintln!(
                "slow case ({:?}): {} after {mutations:?}, text {text:?}",
                started.elapsed(),
                files[target].0
            );
        }
        result?;
    }
}

/// Every seed configuration loads as it is (the corpus itself is valid input), and each one survives
/// the pipeline: a fixed smoke test beside the random one.
#[test]
fn every_seed_runs_through_the_pipeline() {
    for seed in seeds() {
        let p = Packet::new(
            PacketPath::Inbound {
                iface: "eth0".into(),
            },
            "203.0.113.7".parse().unwrap(),
            "198.51.100.4".parse().unwrap(),
            6,
        );
        run_case(seed, &[p]).unwrap_or_else(|e| panic!("{e}"));
    }
}
