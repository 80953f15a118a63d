//! What the kernel holds in one of our tables, normalised for comparing two ways of getting there: an
//! incremental update against a full apply (`tests/incremental.rs`), a staged swap against `nft -f` of
//! `render()` in an empty namespace (`tests/staged_swap.rs`).
//!
//! Chain order aside: a swap keeps the chains the kernel holds where they are and creates new ones
//! after them (`src/nft/plan.rs`), so chains (and their rules) are compared in name order.
//!
//! Set names aside: a swap that changes a set's elements together with rules copies the set under a
//! version of its name (`NAME.N`, `src/nft/plan.rs`), created after the sets it kept. So versions are
//! named as their sets (`@NAME.N` -> `@NAME`, `set NAME.N` -> `set NAME`) and the sets are compared in
//! name order, not in the kernel's order.

use hostpolicyd::nft::{Dataplane, Netlink, HASH_CHAIN};

use super::netns::NetNs;

/// Everything that must be equal between the two.
#[derive(Debug, PartialEq)]
pub struct Listing {
    /// `nft -j list table`: handles and the metainfo header out, counters zeroed.
    pub json: serde_json::Value,
    /// `nft list table`: counter values and blank lines out.
    pub text: String,
    /// The raw element dumps of `nft --debug=netlink list table`, set by set (see [`element_dumps`]).
    pub elements: String,
    /// What `table_comment` reports (the content hash).
    pub comment: Option<String>,
}

/// Whether the content-hash chain (and the table comment) take part in `json` and `text`; the hash
/// itself is always compared through `comment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashChain {
    Listed,
    LeftOut,
}

/// `nft ARGS` in `ns`; panics on failure.
pub fn nft(ns: &NetNs, args: &[&str]) -> String {
    ns.exec_ok("nft", args)
}

/// Table `inet TABLE` of `ns`.
pub fn listing(ns: &NetNs, table: &str, hash: HashChain) -> Listing {
    let raw = nft(ns, &["-j", "list", "table", "inet", table]);
    let mut json: serde_json::Value = serde_json::from_str(&raw).expect("nft -j output");
    strip(&mut json, hash);
    sort_sets(&mut json);
    let text = nft(ns, &["list", "table", "inet", table]);
    let debug = nft(ns, &["--debug=netlink", "list", "table", "inet", table]);
    let comment = ns
        .run(|| Netlink::new().unwrap().table_comment(table))
        .unwrap();
    Listing {
        json,
        text: sort_set_blocks(&normalise_text(&text, hash)),
        elements: element_dumps(&debug, table),
        comment,
    }
}

/// `name` without a version suffix (`.N`) when it is a set's versioned name.
pub fn unversioned(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((base, n))
            if !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && base.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') =>
        {
            base
        }
        _ => name,
    }
}

/// A line with set names unversioned: `@NAME.N` anywhere, and the name after `set `.
fn unversion_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut after_set = false;
    for (i, word) in line.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let w = if let Some(name) = word.strip_prefix('@') {
            let (name, tail) = match name.find([',', '}']) {
                Some(k) => name.split_at(k),
                None => (name, ""),
            };
            format!("@{}{tail}", unversioned(name))
        } else if after_set {
            unversioned(word).to_string()
        } else {
            word.to_string()
        };
        after_set = word == "set" || word.ends_with("\tset");
        out.push_str(&w);
    }
    out
}

/// The `set` and `chain` blocks of `nft list table`'s text in name order (and versions unversioned).
fn sort_set_blocks(text: &str) -> String {
    let lines: Vec<String> = text.lines().map(|l| unversion_line(l.trim_end())).collect();
    let mut out = Vec::new();
    let mut blocks: Vec<Vec<String>> = Vec::new();
    let mut i = 0;
    let flush = |blocks: &mut Vec<Vec<String>>, out: &mut Vec<String>| {
        blocks.sort();
        for b in blocks.drain(..) {
            out.extend(b);
        }
    };
    while i < lines.len() {
        if lines[i].starts_with("\tset ") || lines[i].starts_with("\tchain ") {
            let mut b = vec![lines[i].clone()];
            i += 1;
            while i < lines.len() && lines[i - 1] != "\t}" {
                b.push(lines[i].clone());
                i += 1;
            }
            blocks.push(b);
        } else {
            flush(&mut blocks, &mut out);
            out.push(lines[i].clone());
            i += 1;
        }
    }
    flush(&mut blocks, &mut out);
    out.iter().map(|l| format!("{l}\n")).collect()
}

/// Versioned set names unversioned and the `set` objects in name order (in their positions).
fn sort_sets(v: &mut serde_json::Value) {
    use serde_json::Value;
    fn unversion(v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(name) = s.strip_prefix('@') {
                    *s = format!("@{}", unversioned(name));
                }
            }
            Value::Object(m) => {
                if let Some(Value::Object(set)) = m.get_mut("set") {
                    if let Some(Value::String(n)) = set.get_mut("name") {
                        *n = unversioned(n).to_string();
                    }
                }
                if let Some(Value::Object(el)) = m.get_mut("element") {
                    if let Some(Value::String(n)) = el.get_mut("name") {
                        *n = unversioned(n).to_string();
                    }
                }
                m.values_mut().for_each(unversion);
            }
            Value::Array(a) => a.iter_mut().for_each(unversion),
            _ => {}
        }
    }
    unversion(v);
    if let Some(Value::Array(items)) = v.get_mut("nftables") {
        let at: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].get("set").is_some())
            .collect();
        let mut sets: Vec<Value> = at.iter().map(|&i| items[i].take()).collect();
        sets.sort_by_key(|s| {
            s.pointer("/set/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        });
        for (i, s) in at.into_iter().zip(sets) {
            items[i] = s;
        }
        // Chains in name order, and the rules by chain in that order (each chain's in its order).
        for (kind, key) in [("chain", "/chain/name"), ("rule", "/rule/chain")] {
            let at: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].get(kind).is_some())
                .collect();
            let mut objs: Vec<Value> = at.iter().map(|&i| items[i].take()).collect();
            objs.sort_by_key(|s| {
                s.pointer(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            });
            for (i, s) in at.into_iter().zip(objs) {
                items[i] = s;
            }
        }
    }
}

/// Handles and the metainfo header out (and the content-hash chain, if so asked); counters zeroed.
fn strip(v: &mut serde_json::Value, hash: HashChain) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            m.remove("handle");
            if let Some(Value::Object(c)) = m.get_mut("counter") {
                c.insert("packets".into(), 0.into());
                c.insert("bytes".into(), 0.into());
            }
            m.values_mut().for_each(|x| strip(x, hash));
        }
        Value::Array(a) => {
            a.retain(|x| {
                x.get("metainfo").is_none()
                    && (hash == HashChain::Listed
                        || x.pointer("/chain/name").and_then(Value::as_str) != Some(HASH_CHAIN))
            });
            a.iter_mut().for_each(|x| strip(x, hash));
        }
        _ => {}
    }
}

/// Counter values and blank lines out (and the table comment and the content-hash chain, if so asked).
fn normalise_text(text: &str, hash: HashChain) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in text.lines() {
        let leave_out = hash == HashChain::LeftOut;
        if leave_out
            && line
                .trim_start()
                .starts_with(&format!("chain {HASH_CHAIN} "))
        {
            skip = true;
        }
        let table_comment = leave_out && line.starts_with("\tcomment ");
        if !skip && !table_comment && !line.trim().is_empty() {
            // "counter packets N bytes M" -> "counter"
            let mut words: Vec<&str> = line.split(' ').collect();
            while let Some(i) = words.iter().position(|w| *w == "packets") {
                words.drain(i..(i + 4).min(words.len()));
            }
            out.push_str(&words.join(" "));
            out.push('\n');
        }
        if skip && line == "\t}" {
            skip = false;
        }
    }
    out
}

/// The `inet TABLE @set` blocks of `nft --debug=netlink list table`: every element the kernel holds,
/// each block's elements sorted. A hash set (and a verdict map) dumps its elements in hash-table order,
/// which depends on the order they were inserted in and on a random seed; an interval set dumps them in
/// key order, which sorting keeps as meaningful as it was.
pub fn element_dumps(debug: &str, table: &str) -> String {
    let head = format!("inet {table} @");
    let mut blocks: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut inside = false;
    for line in debug.lines() {
        if line.starts_with(&head) {
            inside = true;
            blocks.push((line, Vec::new()));
        } else if !line.starts_with("\telement ") {
            inside = false;
        } else if inside {
            blocks.last_mut().unwrap().1.push(line);
        }
    }
    let mut blocks: Vec<(String, Vec<&str>)> = blocks
        .into_iter()
        .map(|(h, e)| (unversion_line(h), e))
        .collect();
    blocks.sort();
    let mut out = String::new();
    for (head, mut elems) in blocks {
        elems.sort_unstable();
        out.push_str(&head);
        out.push('\n');
        for e in elems {
            out.push_str(e);
            out.push('\n');
        }
    }
    out
}

/// Where two long texts first differ, with a few lines around it (big sets make whole texts
/// unreadable); None when they are equal.
pub fn first_difference(a: &str, b: &str, labels: (&str, &str)) -> Option<String> {
    if a == b {
        return None;
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = la.iter().zip(&lb).take_while(|(x, y)| x == y).count();
    let show = |l: &[&str]| {
        l.iter()
            .skip(i.saturating_sub(3))
            .take(8)
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    };
    Some(format!(
        "first difference at line {} of {}/{}:\n--- {}:\n{}\n--- {}:\n{}",
        i + 1,
        la.len(),
        lb.len(),
        labels.0,
        show(&la),
        labels.1,
        show(&lb)
    ))
}

/// Panics with the first difference when the two listings differ; `labels` name them.
pub fn assert_same(what: &str, got: &Listing, want: &Listing, labels: (&str, &str)) {
    if let Some(d) = first_difference(&got.text, &want.text, labels) {
        panic!("{what}: nft list table differs, {d}");
    }
    if let Some(d) = first_difference(&got.elements, &want.elements, labels) {
        panic!("{what}: raw set elements differ, {d}");
    }
    if got.json != want.json {
        let pretty = |v| serde_json::to_string_pretty(v).unwrap();
        let d = first_difference(&pretty(&got.json), &pretty(&want.json), labels);
        panic!(
            "{what}: nft -j list table differs, {}",
            d.unwrap_or_default()
        );
    }
    assert_eq!(got.comment, want.comment, "{what}: content hash");
}
