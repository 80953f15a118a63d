//! YAML text → a tree of nodes that remember where they were written.
//!
//! The tree is built straight from the events of granit-parser (the YAML parser under serde-saphyr,
//! which re-exports it): going through serde's `deserialize_any` cost more than twice the parse
//! itself, and the events also tell what serde hides (tags, quoting, where a tag was written).
//! On top of the YAML data model this module adds what a configuration loader needs:
//!
//! - A stream is split at its `---` / `...` markers first, and each document is parsed on its own, so a
//!   syntax error in one document does not hide the others (positions stay file-relative).
//! - Duplicate keys are reported with both lines, without losing the document.
//! - An unquoted value starting with `!` is a YAML *tag*: `selector: !has(a)` would silently be
//!   null. Application tags are reported with the quoting that was meant.
//! - Scalars are resolved with the YAML 1.2 core schema (`true`/`false` only: `yes`, `on`, `n`
//!   stay text), merge keys (`<<`) and aliases are expanded, the latter within a node budget.
//!
//! A node the loader has already reported is turned into [`Value::Invalid`], so that later stages skip it
//! without reporting it a second time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde_saphyr::granit_parser::{
    Event, Marker, Options as ParserOptions, Parser, ScalarStyle, ScanError, Span, Tag,
};

use crate::config::diag::Diagnostic;
use crate::config::model::Pos;

mod lines;

/// One YAML node with its position (1-based line and column, counted in characters) and, when known,
/// its byte span in the file text.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: u32,
    pub column: u32,
    /// Byte offset and byte length of the node's text in the file (for scalars: the scalar as written,
    /// quotes included).
    pub span: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
    /// Already reported by the loader (a YAML tag, a duplicate key): skip it silently.
    Invalid,
}

/// A mapping key: always text, as written (`y`, `on`, `80` included).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The field names of the resources are not copied for every key ([`key_text`]).
    pub text: Cow<'static, str>,
    pub line: u32,
    pub column: u32,
}

/// The field names of the kinds hostpolicyd reads, sorted by length then text: [`key_text`] finds each
/// of them without allocating (its table is written out by length and first letter).
#[cfg(test)]
const FIELD_NAMES: &[&str] = &[
    "tcp",
    "uid",
    "code",
    "host",
    "http",
    "icmp",
    "kind",
    "name",
    "nets",
    "node",
    "port",
    "spec",
    "tier",
    "type",
    "items",
    "names",
    "order",
    "ports",
    "types",
    "action",
    "egress",
    "labels",
    "source",
    "ingress",
    "notICMP",
    "notNets",
    "preDNAT",
    "sources",
    "metadata",
    "notPorts",
    "profiles",
    "protocol",
    "selector",
    "services",
    "ipVersion",
    "namespace",
    "apiVersion",
    "doNotTrack",
    "generation",
    "annotations",
    "destination",
    "expectedIPs",
    "notProtocol",
    "notSelector",
    "stagedAction",
    "acceptRefused",
    "defaultAction",
    "interfaceName",
    "applyOnForward",
    "timeoutSeconds",
    "resourceVersion",
    "serviceAccounts",
    "performanceHints",
    "creationTimestamp",
    "namespaceSelector",
];

/// A key's text: the field name of a kind hostpolicyd reads is not allocated (a policy has a dozen
/// keys).
fn key_text(text: &str) -> Cow<'static, str> {
    // The names of one length and first letter: one or two (`field_names_are_found` holds the table
    // to the list).
    let candidates: &[&'static str] =
        match (text.len(), text.as_bytes().first().copied().unwrap_or(0)) {
            (3, b't') => &["tcp"],
            (3, b'u') => &["uid"],
            (4, b'c') => &["code"],
            (4, b'h') => &["host", "http"],
            (4, b'i') => &["icmp"],
            (4, b'k') => &["kind"],
            (4, b'n') => &["name", "nets", "node"],
            (4, b'p') => &["port"],
            (4, b's') => &["spec"],
            (4, b't') => &["tier", "type"],
            (5, b'i') => &["items"],
            (5, b'n') => &["names"],
            (5, b'o') => &["order"],
            (5, b'p') => &["ports"],
            (5, b't') => &["types"],
            (6, b'a') => &["action"],
            (6, b'e') => &["egress"],
            (6, b'l') => &["labels"],
            (6, b's') => &["source"],
            (7, b'i') => &["ingress"],
            (7, b'n') => &["notICMP", "notNets"],
            (7, b'p') => &["preDNAT"],
            (7, b's') => &["sources"],
            (8, b'm') => &["metadata"],
            (8, b'n') => &["notPorts"],
            (8, b'p') => &["profiles", "protocol"],
            (8, b's') => &["selector", "services"],
            (9, b'i') => &["ipVersion"],
            (9, b'n') => &["namespace"],
            (10, b'a') => &["apiVersion"],
            (10, b'd') => &["doNotTrack"],
            (10, b'g') => &["generation"],
            (11, b'a') => &["annotations"],
            (11, b'd') => &["destination"],
            (11, b'e') => &["expectedIPs"],
            (11, b'n') => &["notProtocol", "notSelector"],
            (12, b's') => &["stagedAction"],
            (13, b'a') => &["acceptRefused"],
            (13, b'd') => &["defaultAction"],
            (13, b'i') => &["interfaceName"],
            (14, b'a') => &["applyOnForward"],
            (14, b't') => &["timeoutSeconds"],
            (15, b'r') => &["resourceVersion"],
            (15, b's') => &["serviceAccounts"],
            (16, b'p') => &["performanceHints"],
            (17, b'c') => &["creationTimestamp"],
            (17, b'n') => &["namespaceSelector"],
            _ => &[],
        };
    match candidates.iter().find(|name| **name == text) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(text.to_owned()),
    }
}

impl Key {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn pos(&self, file: &Arc<str>) -> Pos {
        Pos {
            file: file.clone(),
            line: self.line,
            column: self.column,
        }
    }
}

impl Node {
    pub fn pos(&self, file: &Arc<str>) -> Pos {
        Pos {
            file: file.clone(),
            line: self.line,
            column: self.column,
        }
    }

    /// The node's text as written in `src` (quotes included), when its span is known.
    pub fn raw<'s>(&self, src: &'s str) -> Option<&'s str> {
        let (start, len) = self.span?;
        src.get(start..start.checked_add(len)?)
    }

    /// The position of the character at `offset` (counted in chars) inside a string scalar's value.
    ///
    /// Exact when the scalar is written on one line without escapes (plain, or quoted with no `\`/`''`);
    /// otherwise the best we can say is where the scalar starts.
    pub fn char_pos(&self, file: &Arc<str>, src: &str, offset: usize) -> Pos {
        let mut pos = self.pos(file);
        let (Value::Str(text), Some(raw)) = (&self.value, self.raw(src)) else {
            return pos;
        };
        let quoted = matches!(raw.as_bytes().first(), Some(b'"' | b'\''));
        let (inner, quote) = match raw.get(1..raw.len().saturating_sub(1)) {
            Some(inner) if quoted => (inner, 1),
            _ => (raw, 0),
        };
        if inner == text && !text.contains('\n') {
            let offset = u32::try_from(offset.min(text.chars().count())).unwrap_or(0);
            pos.column = pos.column.saturating_add(quote).saturating_add(offset);
        }
        pos
    }

    /// "a string", "an integer"... for messages such as "`order` must be a number, not a string".
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "empty (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Invalid => "invalid",
        }
    }
}

/// The result of parsing one file.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Non-empty documents, in file order.
    pub documents: Vec<Node>,
    /// Syntax errors, duplicate keys, misread tags.
    pub diagnostics: Vec<Diagnostic>,
}

/// The most YAML nodes the configuration's files may make in all, aliases' copies included
/// (hostpolicy.d(5), "Limits"): what bounds the loader's memory whatever the files hold. The
/// benchmark's largest workloads stay far below it (10,000 policies: ~0.3 million nodes; a
/// 100,000-net GlobalNetworkSet: ~0.1 million).
pub const MAX_NODES: usize = 5_000_000;

/// The most nodes aliases may add in all, over every file: `*a` copies the anchored node, so nested
/// aliases grow exponentially ("billion laughs"), and 60 files of 950 aliases of a 960-net rule each
/// made `check` take 31 s and 1.26 GB while the budget was per file. Real configurations stay far
/// below this.
pub const MAX_ALIAS_NODES: usize = 1_000_000;

/// What one load may still spend, shared by every file of the directory ([`parse_budgeted`]).
#[derive(Debug)]
pub struct Budget {
    limits: Left,
    left: Left,
    /// What each file parsed so far spent: (file, nodes, nodes added by aliases).
    spent: Vec<(Arc<str>, usize, usize)>,
    /// Set once a budget is spent: the files after are not parsed.
    exhausted: bool,
}

#[derive(Debug, Clone, Copy)]
struct Left {
    nodes: usize,
    alias: usize,
}

/// Which budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Nodes,
    Aliases,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

impl Budget {
    /// The budgets of hostpolicy.d(5): [`MAX_NODES`], [`MAX_ALIAS_NODES`].
    pub fn new() -> Budget {
        Budget::with_limits(MAX_NODES, MAX_ALIAS_NODES)
    }

    fn with_limits(nodes: usize, alias: usize) -> Budget {
        Budget {
            limits: Left { nodes, alias },
            left: Left { nodes, alias },
            spent: Vec::new(),
            exhausted: false,
        }
    }

    /// Whether a budget ran out (the load is an error then).
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// What was spent so far: (nodes, nodes added by aliases). Parsing files apart, each with a budget of
    /// its own, spends what parsing them one after the other with one budget would, as long as the sum
    /// stays within the limits ([`Budget::within`]).
    pub fn spent_total(&self) -> (usize, usize) {
        (
            self.limits.nodes - self.left.nodes,
            self.limits.alias - self.left.alias,
        )
    }

    /// Whether a load that spent `(nodes, alias)` in all stays within the budgets of hostpolicy.d(5).
    pub fn within(spent: (usize, usize)) -> bool {
        spent.0 <= MAX_NODES && spent.1 <= MAX_ALIAS_NODES
    }

    /// The error of a spent budget, at the position where it ran out: the limit and the files that
    /// spent it, the biggest first.
    fn spent_message(&self, over: Over) -> String {
        let (limit, what) = match over {
            Over::Nodes => (
                self.limits.nodes,
                "the configuration is too big: its files make more than",
            ),
            Over::Aliases => (
                self.limits.alias,
                "aliases expand to too many nodes: aliases may add at most",
            ),
        };
        let amount = |e: &(Arc<str>, usize, usize)| match over {
            Over::Nodes => e.1,
            Over::Aliases => e.2,
        };
        let mut by: Vec<&(Arc<str>, usize, usize)> =
            self.spent.iter().filter(|e| amount(e) > 0).collect();
        by.sort_by(|a, b| amount(b).cmp(&amount(a)).then_with(|| a.0.cmp(&b.0)));
        let shown: Vec<String> = by
            .iter()
            .take(5)
            .map(|e| format!("{} ({})", e.0, thousands(amount(e))))
            .collect();
        let others = match by.len().saturating_sub(shown.len()) {
            0 => String::new(),
            n => format!(" and {n} other file{}", if n == 1 { "" } else { "s" }),
        };
        let unit = match over {
            Over::Nodes => "YAML nodes in all (aliases' copies included)",
            Over::Aliases => "nodes in the whole configuration",
        };
        format!(
            "invalid YAML: {what} {} {unit}, the most hostpolicyd reads (hostpolicy.d(5), \"Limits\"): \
             spent by {}{others}; the rest of this file and the files after it are not read",
            thousands(limit),
            shown.join(", ")
        )
    }
}

/// `1,000,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parse a file's text (a stream of YAML documents) with a budget of its own.
pub fn parse(file: &Arc<str>, text: &str) -> Parsed {
    parse_budgeted(file, text, &mut Budget::new())
}

/// [`parse`], spending `budget`, which the other files of the same load share: a load reads every
/// file with one [`Budget`]. Once it is spent nothing more is parsed (an error says where and by whom).
pub fn parse_budgeted(file: &Arc<str>, text: &str, budget: &mut Budget) -> Parsed {
    parse_with(file, text, true, budget)
}

/// [`parse`] without the fast paths ([`lines`], [`parse_with_runs`]): every document read by the
/// parser. The reference that [`parse`] equals, for the tests (the fuzz target included).
#[doc(hidden)]
pub fn parse_reference(file: &Arc<str>, text: &str) -> Parsed {
    parse_with(file, text, false, &mut Budget::new())
}

/// [`parse_budgeted`], with or without the fast paths for long lists of scalars ([`parse_with_runs`]).
fn parse_with(file: &Arc<str>, text: &str, fast: bool, budget: &mut Budget) -> Parsed {
    parse_chunks(file, text, split_documents(text), fast, budget)
}

/// Some consecutive documents of a file, to be parsed apart from the others ([`parse_piece`]).
#[derive(Debug, Clone)]
pub struct Piece {
    chunks: Vec<Chunk>,
    bytes: usize,
}

impl Piece {
    /// How many bytes of the file it covers.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The documents of `text` in groups of consecutive documents of about `target` bytes each (a document
/// bigger than that is a group of its own), to be parsed in parallel: parsing the groups in order is
/// parsing the file, since each document is parsed on its own ([`split_documents`]); only the budget
/// is shared between documents (see [`Budget::spent_total`]).
pub fn pieces(text: &str, target: usize) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    for chunk in split_documents(text) {
        let len = chunk.end - chunk.start;
        match pieces.last_mut() {
            Some(p) if p.bytes + len <= target.max(1) => {
                p.bytes += len;
                p.chunks.push(chunk);
            }
            _ => pieces.push(Piece {
                chunks: vec![chunk],
                bytes: len,
            }),
        }
    }
    pieces
}

/// [`parse_budgeted`] of one [`Piece`] of `text`.
pub fn parse_piece(file: &Arc<str>, text: &str, piece: &Piece, budget: &mut Budget) -> Parsed {
    parse_chunks(file, text, piece.chunks.iter().cloned(), true, budget)
}

/// Parses the documents `chunks` of `text`, spending `budget`.
fn parse_chunks(
    file: &Arc<str>,
    text: &str,
    chunks: impl IntoIterator<Item = Chunk>,
    fast: bool,
    budget: &mut Budget,
) -> Parsed {
    let mut out = Parsed::default();
    if budget.exhausted {
        return out;
    }
    let before = budget.left;
    let mut over = None;
    for chunk in chunks {
        if fast
            && (lines::parse_chunk(text, &chunk, &mut budget.left, &mut out)
                || parse_with_runs(file, text, &chunk, &mut out, &mut budget.left))
        {
            continue;
        }
        let mut builder = Builder::new(file, text, &chunk, &mut out, &mut budget.left, &[]);
        builder.run(&text[chunk.start..chunk.end]);
        if let Some(o) = builder.over {
            over = Some(o);
            break;
        }
    }
    budget.spent.push((
        file.clone(),
        before.nodes - budget.left.nodes,
        before.alias - budget.left.alias,
    ));
    if let Some((o, line, column)) = over {
        budget.exhausted = true;
        let message = budget.spent_message(o);
        let pos = Pos {
            file: file.clone(),
            line,
            column,
        };
        out.diagnostics.push(Diagnostic::error(pos, message));
    }
    out
}

/// The fast path for long lists of plain scalars (a GlobalNetworkSet's 100,000 `nets`): the parser
/// spends most of its time on them, one token at a time. Each run of [`MIN_RUN`] or more lines
/// `INDENT- SCALAR` ([`simple_item`]) is parsed by the parser through its first and last lines only: the
/// lines between are cut out of the text it reads, positions after a cut are shifted back by what was
/// cut ([`Cut`]), and the nodes of the cut entries are built here and put after the first entry's.
///
/// This is only kept when it certainly gives the same tree: the parser must report the first entry as a
/// plain scalar exactly where the run says, inside a sequence (so the lines are that sequence's entries:
/// `- ` at the same indentation starts a new entry, and a scalar of these characters ends at its line),
/// every run must be found so, and nothing may be reported at all. Otherwise (a run inside a block
/// scalar or a quoted string, a syntax error anywhere in the document...) the chunk is parsed again
/// without it, so that every diagnostic stays exactly what the parser says. Returns whether it was kept.
fn parse_with_runs(
    file: &Arc<str>,
    text: &str,
    chunk: &Chunk,
    out: &mut Parsed,
    left: &mut Left,
) -> bool {
    let part = &text[chunk.start..chunk.end];
    let runs = scalar_runs(part);
    if runs.is_empty() {
        return false;
    }
    let (shortened, cuts) = cut_runs(part, &runs);
    let mut attempt = Parsed::default();
    let mut budget = *left;
    let mut builder = Builder::new(file, text, chunk, &mut attempt, &mut budget, &runs);
    builder.cuts = &cuts;
    builder.run(&shortened);
    // A spent budget is reported by the parse without the fast path.
    let kept = builder.runs_found == runs.len()
        && !builder.unmapped
        && builder.over.is_none()
        && attempt.diagnostics.is_empty();
    if kept {
        out.documents.append(&mut attempt.documents);
        *left = budget;
    }
    kept
}

/// Where lines were cut out of the text the parser reads: from `at` (an offset in the shortened text)
/// on, positions are `bytes` bytes and `lines` lines further in the file (counted from the start).
#[derive(Debug, Clone, Copy)]
struct Cut {
    at: usize,
    bytes: usize,
    lines: u32,
}

/// `part` without the lines of each run's [`Run::rest`], and the [`Cut`]s made.
fn cut_runs(part: &str, runs: &[Run]) -> (String, Vec<Cut>) {
    let mut shortened = String::with_capacity(part.len());
    let mut cuts = Vec::with_capacity(runs.len());
    let (mut copied, mut bytes, mut lines) = (0usize, 0usize, 0u32);
    for run in runs {
        let (Some(&(first, _)), Some(&(last, last_len))) = (run.rest.first(), run.rest.last())
        else {
            continue;
        };
        // Whole lines: from the start of the first cut entry's line to the end of the last one's.
        let from = part[..first].rfind('\n').map_or(0, |i| i + 1);
        let to = part[last + last_len..]
            .find('\n')
            .map_or(part.len(), |i| last + last_len + i + 1);
        shortened.push_str(&part[copied..from]);
        bytes += to - from;
        lines += run.rest.len() as u32;
        cuts.push(Cut {
            at: shortened.len(),
            bytes,
            lines,
        });
        copied = to;
    }
    shortened.push_str(&part[copied..]);
    (shortened, cuts)
}

/// Fewest lines in a run for [`parse_with_runs`]: below this, the parser's own pace is fine.
const MIN_RUN: usize = 32;

/// A run of list entries `INDENT- SCALAR` on consecutive lines, all at the same indentation. Offsets are
/// chunk-relative byte offsets of the scalars.
#[derive(Debug)]
struct Run {
    /// The first entry's scalar: (offset, length). The parser reads it.
    first: (usize, usize),
    /// The entries between the first and the last, built by [`Builder`] (the parser reads the last one).
    rest: Vec<(usize, usize)>,
}

/// The runs of at least [`MIN_RUN`] simple list entries in `text`, in order.
fn scalar_runs(text: &str) -> Vec<Run> {
    let mut runs = Vec::new();
    // The current run: its indentation and its scalars.
    let mut indent = usize::MAX;
    let mut items: Vec<(usize, usize)> = Vec::new();
    let mut flush = |items: &mut Vec<(usize, usize)>| {
        if items.len() >= MIN_RUN {
            runs.push(Run {
                first: items[0],
                rest: items[1..items.len() - 1].to_vec(),
            });
        }
        items.clear();
    };
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        match simple_item(line.strip_suffix('\n').unwrap_or(line)) {
            Some((i, start, len)) => {
                if i != indent {
                    flush(&mut items);
                    indent = i;
                }
                items.push((offset + start, len));
            }
            None => {
                flush(&mut items);
                indent = usize::MAX;
            }
        }
        offset += line.len();
    }
    flush(&mut items);
    runs
}

/// `line` as `INDENT- SCALAR`: (indentation, scalar offset in the line, scalar length). The scalar starts
/// with a letter or digit and has only `A-Za-z0-9./:_+-`, not ending in `:` (addresses, networks,
/// ports, names): no indicator, quote, comment, tag, anchor, alias or space, and nothing that could
/// continue on the next line or make it a mapping.
fn simple_item(line: &str) -> Option<(usize, usize, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let scalar = line[indent..].strip_prefix("- ")?;
    let bytes = scalar.as_bytes();
    let ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last() != Some(&b':')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"./:_+-".contains(b));
    ok.then_some((indent, indent + 2, scalar.len()))
}

/// A part of the file holding at most one document marker at its start.
#[derive(Debug, Clone)]
struct Chunk {
    start: usize,
    end: usize,
    /// Lines before `start` (added to the parser's chunk-relative line numbers).
    line_offset: u32,
}

/// Split a stream at `---` and `...` lines. A marker at column 0 ends any scalar in YAML, so parsing
/// the pieces one by one gives the same documents as parsing the stream, while a syntax error stays
/// inside its own piece. Directives (`%YAML`) belong to the next document: with any, don't split.
fn split_documents(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let (mut start, mut start_line) = (0usize, 0u32);
    let (mut offset, mut line) = (0usize, 0u32);
    for raw_line in text.split_inclusive('\n') {
        if raw_line.starts_with('%') {
            return vec![Chunk {
                start: 0,
                end: text.len(),
                line_offset: 0,
            }];
        }
        let next = offset + raw_line.len();
        if is_marker(raw_line, "---") && offset > start {
            chunks.push(Chunk {
                start,
                end: offset,
                line_offset: start_line,
            });
            (start, start_line) = (offset, line);
        } else if is_marker(raw_line, "...") {
            chunks.push(Chunk {
                start,
                end: next,
                line_offset: start_line,
            });
            (start, start_line) = (next, line + 1);
        }
        offset = next;
        line += 1;
    }
    if start < text.len() || chunks.is_empty() {
        chunks.push(Chunk {
            start,
            end: text.len(),
            line_offset: start_line,
        });
    }
    chunks
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// A collection being built.
enum Frame {
    Seq {
        head: Node,
        anchor: usize,
        items: Vec<Node>,
    },
    Map(MapFrame),
}

struct MapFrame {
    head: Node,
    anchor: usize,
    entries: Vec<(Key, Node)>,
    /// The key read, waiting for its value.
    key: Option<Key>,
    /// Key text → index in `entries`, once the map is big enough for a scan to cost.
    index: Option<HashMap<String, usize>>,
    /// Values of `<<` entries, merged at the end.
    merges: Vec<Node>,
}

/// Builds nodes from one chunk's events.
struct Builder<'a> {
    file: &'a Arc<str>,
    src: &'a str,
    chunk: &'a Chunk,
    out: &'a mut Parsed,
    stack: Vec<Frame>,
    /// Anchored nodes, with their size in nodes (for the alias budget).
    anchors: HashMap<usize, (Node, usize)>,
    /// What the load may still spend ([`Budget`]).
    left: &'a mut Left,
    /// The budget that ran out, and where: the parse stopped there.
    over: Option<(Over, u32, u32)>,
    /// Runs of list entries cut out of the text ([`parse_with_runs`]), how many were found, the cuts,
    /// and whether a position could not be mapped back through them.
    runs: &'a [Run],
    runs_found: usize,
    cuts: &'a [Cut],
    unmapped: bool,
}

impl<'a> Builder<'a> {
    fn new(
        file: &'a Arc<str>,
        src: &'a str,
        chunk: &'a Chunk,
        out: &'a mut Parsed,
        left: &'a mut Left,
        runs: &'a [Run],
    ) -> Self {
        Builder {
            file,
            src,
            chunk,
            out,
            stack: Vec::new(),
            anchors: HashMap::new(),
            left,
            over: None,
            runs,
            runs_found: 0,
            cuts: &[],
            unmapped: false,
        }
    }

    /// The cut before a position of the parser's text (`offset`): what to add to make it the file's.
    fn cut_before(&mut self, offset: Option<usize>) -> (usize, u32) {
        if self.cuts.is_empty() {
            return (0, 0);
        }
        let Some(offset) = offset else {
            self.unmapped = true;
            return (0, 0);
        };
        let i = self.cuts.partition_point(|c| c.at <= offset);
        i.checked_sub(1)
            .map_or((0, 0), |i| (self.cuts[i].bytes, self.cuts[i].lines))
    }

    fn run(&mut self, text: &str) {
        let mut root: Option<Node> = None;
        // Comments are validated as syntax either way; their text is not needed.
        let mut options = ParserOptions::default();
        options.set_emit_comments(false);
        for event in Parser::new_from_str_with_options(text, options) {
            let (event, span) = match event {
                Ok(event) => event,
                Err(err) => return self.syntax_error(&err),
            };
            let node = match event {
                Event::DocumentEnd => {
                    if let Some(doc) = root.take().filter(|d| d.value != Value::Null) {
                        self.out.documents.push(doc);
                    }
                    self.anchors.clear();
                    continue;
                }
                Event::Scalar(value, style, anchor, tag) => {
                    let run = self.run_at(style, anchor, tag.is_some(), &span);
                    let node = self.scalar(value, style, tag.as_deref(), &span);
                    self.remember(anchor, &node, 1);
                    if let Some(run) = run {
                        if !self.spend(run.rest.len() + 1, &node) {
                            return;
                        }
                        self.add_run(node, run);
                        continue;
                    }
                    node
                }
                Event::SequenceStart(_, anchor, tag) => {
                    let head = self.head(tag.as_deref(), &span);
                    self.stack.push(Frame::Seq {
                        head,
                        anchor,
                        items: Vec::new(),
                    });
                    continue;
                }
                Event::MappingStart(_, anchor, tag) => {
                    let head = self.head(tag.as_deref(), &span);
                    let frame = MapFrame {
                        head,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                        index: None,
                        merges: Vec::new(),
                    };
                    self.stack.push(Frame::Map(frame));
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                    Some(frame) => self.finish(frame),
                    None => continue,
                },
                Event::Alias(id) => match self.alias(id, &span) {
                    Some(node) => node,
                    None => return,
                },
                _ => continue,
            };
            // An alias's copy was paid for by `alias`; every other node costs one.
            if !self.spend(1, &node) {
                return;
            }
            self.add(node, &mut root);
        }
    }

    /// Takes `n` nodes from the budget; false (and the parse stops) when it is spent.
    fn spend(&mut self, n: usize, at: &Node) -> bool {
        if n > self.left.nodes {
            self.over = Some((Over::Nodes, at.line, at.column));
            return false;
        }
        self.left.nodes -= n;
        true
    }

    /// The blanked run whose first entry this scalar event is, if it is one: a plain scalar without
    /// anchor or tag, exactly at the run's first scalar, directly in a sequence.
    fn run_at(
        &mut self,
        style: ScalarStyle,
        anchor: usize,
        tagged: bool,
        span: &Span,
    ) -> Option<&'a Run> {
        let run = self.runs.get(self.runs_found)?;
        let (start, len) = self.byte_span(span)?;
        let start = start - self.chunk.start;
        let found = style == ScalarStyle::Plain
            && anchor == 0
            && !tagged
            && (start, len) == run.first
            && matches!(self.stack.last(), Some(Frame::Seq { .. }));
        found.then_some(run)
    }

    /// The first entry of a blanked run, then the entries blanked out of the text, as the parser would
    /// have made them: the same column, one line each.
    fn add_run(&mut self, first: Node, run: &Run) {
        self.runs_found += 1;
        let (line, column) = (first.line, first.column);
        let Some(Frame::Seq { items, .. }) = self.stack.last_mut() else {
            return;
        };
        items.push(first);
        items.reserve(run.rest.len() + 1);
        let part = &self.src[self.chunk.start..self.chunk.end];
        items.extend(run.rest.iter().zip(1u32..).map(|(&(start, len), k)| Node {
            value: resolve_entry(&part[start..start + len]),
            line: line.saturating_add(k),
            column,
            span: Some((self.chunk.start + start, len)),
        }));
    }

    /// Put a finished node into its parent (or make it the document).
    fn add(&mut self, node: Node, root: &mut Option<Node>) {
        match self.stack.last_mut() {
            None => *root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map(map)) => match map.key.take() {
                None => {
                    let key = self.key(node);
                    if let Some(Frame::Map(map)) = self.stack.last_mut() {
                        map.key = Some(key);
                    }
                }
                Some(key) => self.entry(key, node),
            },
        }
    }

    /// A mapping key: its text as written. Collections cannot be keys here.
    fn key(&mut self, node: Node) -> Key {
        let text = match node.value {
            Value::Str(text) => Cow::Owned(text),
            Value::Seq(_) | Value::Map(_) => {
                self.error_at(
                    node.line,
                    node.column,
                    "a mapping key must be a plain string".to_owned(),
                );
                Cow::Borrowed("<complex key>")
            }
            _ => Cow::Owned(node.raw(self.src).unwrap_or_default().to_owned()),
        };
        Key {
            text,
            line: node.line,
            column: node.column,
        }
    }

    fn entry(&mut self, key: Key, mut value: Node) {
        let Some(Frame::Map(map)) = self.stack.last_mut() else {
            return;
        };
        if key.text == "<<" && !map.entries.iter().any(|(k, _)| k.text == "<<") {
            map.merges.push(value);
            return;
        }
        // Small maps (every resource's fields) are checked by a scan, big ones (labels) by a hash.
        let first = if map.entries.len() < 16 {
            map.entries.iter().position(|(k, _)| k.text == key.text)
        } else {
            let entries = &map.entries;
            let index = map.index.get_or_insert_with(|| {
                entries
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.text.to_string(), i))
                    .rev()
                    .collect()
            });
            let first = index.get(key.as_str()).copied();
            index.entry(key.text.to_string()).or_insert(entries.len());
            first
        };
        if let Some(first) = first {
            let first_line = map.entries[first].0.line;
            let message = format!(
                "duplicate key `{}`: it is already set at line {first_line}",
                key.text
            );
            value.value = Value::Invalid;
            map.entries.push((key.clone(), value));
            self.error_at(key.line, key.column, message);
            return;
        }
        map.entries.push((key, value));
    }

    /// Close a collection: merge keys, anchors.
    fn finish(&mut self, frame: Frame) -> Node {
        let (node, anchor) = match frame {
            Frame::Seq {
                mut head,
                anchor,
                mut items,
            } => {
                if head.value != Value::Invalid {
                    // Collections are filled by `push`: without this, 10,000 policies' tree kept ~a
                    // third of its size as spare capacity, at the daemon's peak (a reload).
                    items.shrink_to_fit();
                    head.value = Value::Seq(items);
                }
                (head, anchor)
            }
            Frame::Map(map) => {
                let MapFrame {
                    mut head,
                    anchor,
                    mut entries,
                    merges,
                    ..
                } = map;
                merge(&mut entries, merges);
                if head.value != Value::Invalid {
                    entries.shrink_to_fit();
                    head.value = Value::Map(entries);
                }
                (head, anchor)
            }
        };
        if anchor != 0 {
            let size = count_nodes(&node);
            self.remember(anchor, &node, size);
        }
        node
    }

    fn remember(&mut self, anchor: usize, node: &Node, size: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
    }

    /// `*a`: a copy of the anchored node, placed where the alias is written.
    fn alias(&mut self, id: usize, span: &Span) -> Option<Node> {
        let (line, column) = self.line_col(&span.start);
        let Some((node, size)) = self.anchors.get(&id) else {
            self.error_at(
                line,
                column,
                "invalid YAML: alias to an unknown anchor".to_owned(),
            );
            return None;
        };
        if *size > self.left.alias {
            self.over = Some((Over::Aliases, line, column));
            return None;
        }
        if *size > self.left.nodes {
            self.over = Some((Over::Nodes, line, column));
            return None;
        }
        self.left.alias -= size;
        self.left.nodes -= size;
        let mut node = node.clone();
        node.line = line;
        node.column = column;
        node.span = self.byte_span(span);
        Some(node)
    }

    /// An empty node at the position of a collection's start, or `Invalid` with a report if it
    /// carries an application tag.
    fn head(&mut self, tag: Option<&Tag>, span: &Span) -> Node {
        let (line, column) = self.line_col(&span.start);
        let mut node = Node {
            value: Value::Null,
            line,
            column,
            span: self.byte_span(span),
        };
        if tag.is_some_and(|t| t.core_suffix().is_none() && !is_non_specific(t)) {
            self.report_tag(tag, span);
            node.value = Value::Invalid;
        }
        node
    }

    fn scalar(
        &mut self,
        value: Cow<str>,
        style: ScalarStyle,
        tag: Option<&Tag>,
        span: &Span,
    ) -> Node {
        let (line, column) = self.line_col(&span.start);
        let value = match tag {
            None if style == ScalarStyle::Plain => resolve_plain(&value),
            None => Value::Str(value.into_owned()),
            Some(tag) if is_non_specific(tag) => Value::Str(value.into_owned()),
            Some(tag) => match tag.core_suffix() {
                Some("str") => Value::Str(value.into_owned()),
                Some("null") => Value::Null,
                Some("bool" | "int" | "float") => match resolve_plain(&value) {
                    v @ (Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_)) => v,
                    _ => {
                        let message = format!(
                            "invalid YAML: `{value}` does not match its tag `{}`",
                            tag.original()
                        );
                        self.error_at(line, column, message);
                        Value::Invalid
                    }
                },
                _ => {
                    self.report_tag(Some(tag), span);
                    Value::Invalid
                }
            },
        };
        Node {
            value,
            line,
            column,
            span: self.byte_span(span),
        }
    }

    fn line_col(&mut self, marker: &Marker) -> (u32, u32) {
        let (_, cut_lines) = self.cut_before(marker.byte_offset());
        let line = u32::try_from(marker.line())
            .unwrap_or(u32::MAX)
            .saturating_add(self.chunk.line_offset)
            .saturating_add(cut_lines);
        let column = u32::try_from(marker.col())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        (line, column)
    }

    fn byte_span(&mut self, span: &Span) -> Option<(usize, usize)> {
        let start = span.start.byte_offset()?;
        let end = span.end.byte_offset()?;
        let (start_cut, _) = self.cut_before(Some(start));
        let (end_cut, _) = self.cut_before(Some(end));
        let (start, end) = (start + start_cut, end + end_cut);
        Some((start + self.chunk.start, end.saturating_sub(start)))
    }

    /// The key whose value is being read, if any (for the tag hint).
    fn current_key(&self) -> Option<&str> {
        match self.stack.last() {
            Some(Frame::Map(map)) => map.key.as_ref().map(|k| k.as_str()),
            _ => None,
        }
    }

    fn report_tag(&mut self, tag: Option<&Tag>, span: &Span) {
        let tag_name = tag.map_or_else(String::new, Tag::original);
        let marker = span.tag_start.as_ref().unwrap_or(&span.start);
        let (line, column) = self.line_col(marker);
        let start = marker.byte_offset().map(|b| b + self.chunk.start);
        let in_flow = start.and_then(|s| self.src.get(..s)).is_some_and(|before| {
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            before[line_start..].contains(['{', '['])
        });
        let written = start
            .and_then(|s| self.src.get(s..))
            .map_or(tag_name.as_str(), |rest| written_value(rest, in_flow));
        let quoted = yaml_quote(written);
        let message = match self.current_key() {
            Some(key) if key.to_ascii_lowercase().ends_with("selector") => {
                format!(
                    "YAML reads `{tag_name}` as a tag: quote the selector, e.g. {key}: {quoted}"
                )
            }
            Some(key) => {
                format!("YAML reads `{tag_name}` as a tag: quote the value, e.g. {key}: {quoted}")
            }
            None => format!("YAML reads `{tag_name}` as a tag: quote the value, e.g. {quoted}"),
        };
        self.error_at(line, column, message);
    }

    fn syntax_error(&mut self, err: &ScanError) {
        let marker = err.marker();
        let (line, column) = self.line_col(marker);
        let mut message = format!(
            "invalid YAML: {}",
            err.info().lines().next().unwrap_or("syntax error")
        );
        if let Some(hint) = colon_in_value_hint(self.src, line) {
            message.push_str(&hint);
        }
        self.error_at(line, column, message);
    }

    fn error_at(&mut self, line: u32, column: u32, message: String) {
        let pos = Pos {
            file: self.file.clone(),
            line,
            column,
        };
        self.out.diagnostics.push(Diagnostic::error(pos, message));
    }
}

/// `!` alone: "not specific", i.e. a string.
fn is_non_specific(tag: &Tag) -> bool {
    tag.handle().is_empty() && tag.suffix() == "!"
}

/// YAML merge keys: entries of `<<` sources that the mapping does not set itself (earlier sources win).
fn merge(entries: &mut Vec<(Key, Node)>, merges: Vec<Node>) {
    for source in merges {
        let maps = match source.value {
            Value::Seq(items) => items,
            other => vec![Node {
                value: other,
                ..source
            }],
        };
        for map in maps {
            let Value::Map(more) = map.value else {
                continue;
            };
            for (key, value) in more {
                if !entries.iter().any(|(k, _)| k.text == key.text) {
                    entries.push((key, value));
                }
            }
        }
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(_, v)| 1 + count_nodes(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// [`resolve_plain`] for a run's entry: a network or an IPv6 address (`/` or `:`, in no number, boolean
/// or null) is text without the schema's checks.
fn resolve_entry(text: &str) -> Value {
    if text.contains(['/', ':']) {
        Value::Str(text.to_owned())
    } else {
        resolve_plain(text)
    }
}

/// A plain scalar under the YAML 1.2 core schema. `.inf` and `.nan` stay text: no field takes them,
/// and the validator then says what it wanted.
fn resolve_plain(text: &str) -> Value {
    // Names (`Allow`, `TCP`, `projectcalico.org/v3`...): no null, boolean or number starts so.
    if text
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() && !b"nNtTfF".contains(b))
    {
        return Value::Str(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(hex) = text.strip_prefix("0x") {
        if digits(hex, 16) {
            return u64::from_str_radix(hex, 16)
                .map_or_else(|_| Value::Str(text.to_owned()), Value::UInt);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if digits(oct, 8) {
            return u64::from_str_radix(oct, 8)
                .map_or_else(|_| Value::Str(text.to_owned()), Value::UInt);
        }
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits(unsigned, 10) {
        if text.starts_with('-') {
            if let Ok(i) = text.parse::<i64>() {
                return Value::Int(i);
            }
        } else if let Ok(u) = unsigned.parse::<u64>() {
            return Value::UInt(u);
        }
        // Too big for 64 bits: a number all the same.
        return text
            .parse::<f64>()
            .map_or_else(|_| Value::Str(text.to_owned()), Value::Float);
    }
    if is_core_float(unsigned) {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_owned())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` (the sign already removed).
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            all_digits(int) && all_digits(frac) && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && all_digits(mantissa),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && all_digits(e)
        }
    };
    mantissa_ok && exponent_ok
}

/// `selector: nodeport-external-ingress: true` (from Calico's node-port how-to) is a YAML error: a plain
/// value cannot contain `: `. Say how to quote it, and for a selector what it should say instead.
fn colon_in_value_hint(src: &str, line: u32) -> Option<String> {
    let text = src
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let text = text.trim_start();
    let text = text.strip_prefix("- ").unwrap_or(text).trim_start();
    let (key, value) = text.split_once(": ")?;
    let value = written_value(value, false);
    let plain_key = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plain_key || !value.contains(": ") || value.starts_with(['"', '\'', '{', '[', '|', '>']) {
        return None;
    }
    let mut hint = format!(
        " (a value containing `: ` must be quoted: {key}: {})",
        yaml_quote(value)
    );
    if key.to_ascii_lowercase().ends_with("selector") {
        if let Err(err) = crate::selector::parse(value) {
            hint = format!(
                " (a value containing `: ` must be quoted, and `{value}` is not a valid selector either: {})",
                err.message
            );
        }
    }
    Some(hint)
}

/// The value as the user wrote it: from the tag to the end of the line (or of the flow entry), without
/// a trailing comment.
fn written_value(rest: &str, in_flow: bool) -> &str {
    let mut end = rest.find(['\n', '\r']).unwrap_or(rest.len());
    if let Some(i) = rest[..end].find(" #") {
        end = i;
    }
    if in_flow {
        if let Some(i) = rest[..end].find([',', '}', ']']) {
            end = i;
        }
    }
    rest[..end].trim()
}

/// `s` as a YAML double-quoted scalar, or single-quoted when it contains `"` or `\`.
pub fn yaml_quote(s: &str) -> String {
    if s.contains(['"', '\\']) {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        format!("\"{s}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Parsed {
        parse(&Arc::from("t.yaml"), text)
    }

    fn get<'a>(node: &'a Node, key: &str) -> &'a Node {
        match &node.value {
            Value::Map(entries) => &entries.iter().find(|(k, _)| k.text == key).unwrap().1,
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn scalars_and_positions() {
        let p = parse_str("a: true\nb: 123\nc: \"123\"\nd: -4\ne: 1.5\nf:\ny: x\non: yes\n");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let doc = &p.documents[0];
        assert_eq!(get(doc, "a").value, Value::Bool(true));
        assert_eq!(get(doc, "b").value, Value::UInt(123));
        assert_eq!(get(doc, "c").value, Value::Str("123".into()));
        assert_eq!(get(doc, "d").value, Value::Int(-4));
        assert_eq!(get(doc, "f").value, Value::Null);
        assert_eq!((get(doc, "c").line, get(doc, "c").column), (3, 4));
        // `y`, `on`, `yes` would be booleans in YAML 1.1: here they are text.
        assert_eq!(get(doc, "y").value, Value::Str("x".into()));
        assert_eq!(get(doc, "on").value, Value::Str("yes".into()));
    }

    #[test]
    fn streams_keep_file_lines_and_survive_a_bad_document() {
        let p = parse_str("a: 1\n---\nb: [\n---\n# nothing\n---\nc: 3\n...\nd: 4\n");
        assert_eq!(p.documents.len(), 3);
        assert_eq!(p.documents[1].line, 7);
        assert_eq!(p.documents[2].line, 9);
        assert_eq!(p.diagnostics.len(), 1);
        let pos = p.diagnostics[0].pos.as_ref().unwrap();
        assert!(pos.line >= 3 && pos.line <= 4, "{pos}");
    }

    #[test]
    fn duplicate_keys_name_the_first_line() {
        let p = parse_str("a: 1\nb: 2\na: 3\n");
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(
            p.diagnostics[0].to_string(),
            "t.yaml:3:1: error: duplicate key `a`: it is already set at line 1"
        );
        assert_eq!(get(&p.documents[0], "a").value, Value::UInt(1));
    }

    #[test]
    fn tags_are_reported_with_a_quoting_hint() {
        let p = parse_str("spec:\n  selector: !has(a)\n  x: !foo bar\n  y: !!str 5\n");
        let msgs: Vec<String> = p.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "t.yaml:2:13: error: YAML reads `!has(a)` as a tag: quote the selector, e.g. selector: \"!has(a)\"",
                "t.yaml:3:6: error: YAML reads `!foo` as a tag: quote the value, e.g. x: \"!foo bar\"",
            ]
        );
    }

    #[test]
    fn char_pos_maps_into_the_scalar() {
        let src = "a: \"x == y\"\nb: x == y\nc: >-\n  x == y\n";
        let p = parse_str(src);
        let f: Arc<str> = Arc::from("t.yaml");
        let doc = &p.documents[0];
        assert_eq!(get(doc, "a").char_pos(&f, src, 2).column, 7);
        assert_eq!(get(doc, "b").char_pos(&f, src, 2).column, 6);
        // Folded: no exact mapping, the scalar's own position.
        let c = get(doc, "c");
        assert_eq!(c.char_pos(&f, src, 2).column, c.column);
    }

    #[test]
    fn splitting() {
        let c = split_documents("");
        assert_eq!(c.len(), 1);
        let c = split_documents("---\na: 1\n--- \nb: 2\n---x: 3\n");
        assert_eq!(c.iter().map(|c| c.line_offset).collect::<Vec<_>>(), [0, 2]);
        let c = split_documents("%YAML 1.2\n---\na: 1\n---\nb: 1\n");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn core_schema_scalars() {
        let p = parse_str("a: 0x10\nb: 0o17\nc: 1e3\nd: .5\ne: .inf\nf: 1_000\ng: 99999999999999999999\nh: -7\ni: +3\nj: 1.2.3\nk: ~\nl: on\n");
        let doc = &p.documents[0];
        let v = |k: &str| get(doc, k).value.clone();
        assert_eq!(v("a"), Value::UInt(16));
        assert_eq!(v("b"), Value::UInt(15));
        assert_eq!(v("c"), Value::Float(1000.0));
        assert_eq!(v("d"), Value::Float(0.5));
        assert_eq!(v("e"), Value::Str(".inf".into()));
        assert_eq!(v("f"), Value::Str("1_000".into()));
        assert_eq!(v("g"), Value::Float(1e20));
        assert_eq!(v("h"), Value::Int(-7));
        assert_eq!(v("i"), Value::UInt(3));
        assert_eq!(v("j"), Value::Str("1.2.3".into()));
        assert_eq!(v("k"), Value::Null);
        assert_eq!(v("l"), Value::Str("on".into()));
    }

    #[test]
    fn core_tags() {
        let p = parse_str("a: !!str 5\nb: !!int \"7\"\nc: ! x\nd: !!int nope\n");
        let doc = &p.documents[0];
        assert_eq!(get(doc, "a").value, Value::Str("5".into()));
        assert_eq!(get(doc, "b").value, Value::UInt(7));
        assert_eq!(get(doc, "c").value, Value::Str("x".into()));
        assert_eq!(get(doc, "d").value, Value::Invalid);
        assert_eq!(p.diagnostics.len(), 1);
        assert!(p.diagnostics[0].message.contains("does not match its tag"));
    }

    #[test]
    fn tags_on_collections_and_in_lists() {
        let p = parse_str("a: !thing {x: 1}\nb:\n  - !has(b)\nc: {selector: !has(c), x: 1}\n");
        let msgs: Vec<String> = p.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(
            msgs[0].starts_with("t.yaml:1:4: error: YAML reads `!thing` as a tag"),
            "{msgs:?}"
        );
        assert!(msgs[1].starts_with("t.yaml:3:5: error: YAML reads `!has(b)` as a tag: quote the value, e.g. \"!has(b)\""), "{msgs:?}");
        assert_eq!(msgs[2], "t.yaml:4:15: error: YAML reads `!has(c)` as a tag: quote the selector, e.g. selector: \"!has(c)\"");
        assert_eq!(get(&p.documents[0], "a").value, Value::Invalid);
    }

    #[test]
    fn anchors_aliases_and_merges() {
        let src = "base: &b {x: 1, y: 2}\nuse: *b\nmerged:\n  <<: *b\n  y: 3\nlist:\n  <<: [{p: 1}, {p: 2, q: 2}]\n";
        let p = parse_str(src);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let doc = &p.documents[0];
        let used = get(doc, "use");
        assert_eq!((used.line, used.column), (2, 6));
        assert_eq!(get(used, "x").value, Value::UInt(1));
        let merged = get(doc, "merged");
        assert_eq!(get(merged, "y").value, Value::UInt(3));
        assert_eq!(get(merged, "x").value, Value::UInt(1));
        let list = get(doc, "list");
        assert_eq!(get(list, "p").value, Value::UInt(1));
        assert_eq!(get(list, "q").value, Value::UInt(2));
    }

    #[test]
    fn alias_bombs_are_stopped() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = format!("*a{}", i - 1);
            src.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                [prev.as_str(); 10].join(", ")
            ));
        }
        let p = parse_str(&src);
        assert!(
            p.diagnostics
                .iter()
                .any(|d| d.message.contains("aliases expand to too many nodes")),
            "{:?}",
            p.diagnostics
        );
    }

    /// Issue 19 item 6: 60 files, each 950 aliases of a rule with 960 nets, stayed under the alias
    /// budget one by one and took 31 s and 1.26 GB together. The budget is the whole directory's.
    #[test]
    fn the_alias_budget_covers_every_file_of_a_load() {
        let file = |name: &str| Arc::<str>::from(name);
        // 950 × 960: under the budget alone.
        let nets: String = (0..960)
            .map(|i| format!("  - 10.0.{}.{}/32\n", i / 256, i % 256))
            .collect();
        let mut one = format!("net: &n\n{nets}rules:\n");
        for _ in 0..950 {
            one.push_str("- *n\n");
        }
        let p = parse(&file("a.yaml"), &one);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let mut budget = Budget::new();
        let a = parse_budgeted(&file("a.yaml"), &one, &mut budget);
        assert!(a.diagnostics.is_empty());
        let b = parse_budgeted(&file("b.yaml"), &one, &mut budget);
        assert_eq!(b.diagnostics.len(), 1, "{:?}", b.diagnostics);
        let text = b.diagnostics[0].to_string();
        assert!(text.starts_with("b.yaml:"), "{text}");
        assert!(
            text.contains(
                "error: invalid YAML: aliases expand to too many nodes: aliases may add at most 1,000,000 \
                 nodes in the whole configuration, the most hostpolicyd reads (hostpolicy.d(5), \"Limits\"): \
                 spent by a.yaml (912,950), b.yaml ("
            ),
            "{text}"
        );
        assert!(budget.exhausted());
        // Later files are not parsed at all.
        let c = parse_budgeted(&file("c.yaml"), "x: 1\n", &mut budget);
        assert!(c.documents.is_empty() && c.diagnostics.is_empty());
    }

    #[test]
    fn the_node_budget_covers_every_file_of_a_load() {
        let mut budget = Budget::with_limits(1_000, MAX_ALIAS_NODES);
        let list = |n: usize| -> String { (0..n).map(|i| format!("- v{i}\n")).collect() };
        let a = parse_budgeted(&Arc::from("a.yaml"), &list(600), &mut budget);
        assert!(a.diagnostics.is_empty());
        // Long lists take the fast path: counted all the same.
        let b = parse_budgeted(&Arc::from("b.yaml"), &list(600), &mut budget);
        assert_eq!(b.diagnostics.len(), 1, "{:?}", b.diagnostics);
        let text = b.diagnostics[0].to_string();
        assert!(
            text.contains("error: invalid YAML: the configuration is too big: its files make more than 1,000 YAML nodes in all"),
            "{text}"
        );
        assert!(text.contains("spent by a.yaml (601)"), "{text}");
        assert!(b.documents.is_empty());
    }

    #[test]
    fn field_names_are_found() {
        let mut sorted = FIELD_NAMES.to_vec();
        sorted.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        sorted.dedup();
        assert_eq!(sorted, FIELD_NAMES);
        for name in FIELD_NAMES {
            assert!(matches!(key_text(name), Cow::Borrowed(n) if n == *name));
        }
        assert!(matches!(key_text("protocolx"), Cow::Owned(n) if n == "protocolx"));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(5_000_000), "5,000,000");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let p = parse_str(&src);
        assert!(p.documents.is_empty());
        assert_eq!(p.diagnostics.len(), 1);
        let src = (0..2000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect::<String>();
        let p = parse_str(&src);
        assert_eq!(p.diagnostics.len(), 1, "{:?}", p.diagnostics);
    }

    #[test]
    fn block_collections_start_at_their_first_entry() {
        let p = parse_str("# c\nspec:\n  a: 1\nlist:\n  - x\n");
        let doc = &p.documents[0];
        assert_eq!((doc.line, doc.column), (2, 1));
        let spec = get(doc, "spec");
        assert_eq!((spec.line, spec.column), (3, 3));
        let list = get(doc, "list");
        assert_eq!((list.line, list.column), (5, 3));
    }

    /// [`parse`] and the parse without the fast path for long lists give the same documents and
    /// diagnostics; returns whether the fast path was kept for the first document.
    fn same_as_without_runs(text: &str) -> bool {
        let file = Arc::from("t.yaml");
        let fast = parse_with(&file, text, true, &mut Budget::new());
        let slow = parse_with(&file, text, false, &mut Budget::new());
        assert_eq!(fast.documents, slow.documents, "{text}");
        let msgs = |p: &Parsed| {
            p.diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(msgs(&fast), msgs(&slow), "{text}");
        let chunk = &split_documents(text)[0];
        parse_with_runs(
            &file,
            text,
            chunk,
            &mut Parsed::default(),
            &mut Budget::new().left,
        )
    }

    fn entries(indent: &str, n: usize, f: impl Fn(usize) -> String) -> String {
        (0..n).map(|i| format!("{indent}- {}\n", f(i))).collect()
    }

    #[test]
    fn long_lists_of_scalars_parse_as_without_the_fast_path() {
        let nets = |i: usize| format!("10.0.{}.{}/32", i / 256, i % 256);
        let set = format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: a\nspec:\n  nets:\n{}  other: x\n",
            entries("  ", 100, nets)
        );
        assert!(same_as_without_runs(&set));
        let parsed = parse_str(&set);
        let items = match &get(get(&parsed.documents[0], "spec"), "nets").value {
            Value::Seq(items) => items.clone(),
            _ => panic!(),
        };
        assert_eq!(items.len(), 100);
        assert_eq!((items[50].line, items[50].column), (57, 5));
        assert_eq!(items[50].raw(&set), Some("10.0.0.50/32"));
        // Several runs, indentless and nested, numbers, IPv6, in several documents, then more keys.
        let mixed = format!(
            "a:\n{}b:\n  - x\n  -\n{}  - [1, 2]\n---\n{}c: {{d: 1}}\n",
            entries("", 40, |i| format!("{i}")),
            entries("    ", 40, |i| format!("2001:db8::{i:x}/128")),
            entries("", 35, |i| format!("host-{i}.example.org")),
        );
        assert!(same_as_without_runs(&mixed));
        // Scalars of every type of the core schema, resolved as the parser's would be.
        let words = [
            "true",
            "null",
            "Null",
            "FALSE",
            "0x1F",
            "0o17",
            "1e3",
            "1.5",
            "1_000",
            "7",
            "99999999999999999999",
            "a/b",
            "x:y",
            "10.0.0.1",
        ];
        let typed = format!(
            "a:\n{}",
            entries("  ", 56, |i| words[i % words.len()].to_string())
        );
        assert!(same_as_without_runs(&typed));
        // An anchored list copied by an alias (the copies count against the alias budget).
        let aliased = format!("a: &l\n{}b: *l\n", entries("  ", 40, |i| format!("v{i}")));
        assert!(same_as_without_runs(&aliased));
        // The document's root, ending without a newline.
        let root = entries("", 40, |i| format!("p{i}"));
        assert!(same_as_without_runs(root.trim_end()));
    }

    #[test]
    fn what_only_looks_like_a_list_is_left_to_the_parser() {
        let run = entries("  ", 40, |i| format!("10.0.0.{i}"));
        // Inside a block scalar, a quoted string, a flow sequence: text, not entries.
        for text in [
            format!("description: |\n{run}x: 1\n"),
            format!("description: \"a\n{run}\"\n"),
            format!("nets: [\n{run}]\n"),
        ] {
            assert!(!same_as_without_runs(&text), "{text}");
        }
        for text in [
            // Inside a block scalar, a quoted string, a flow sequence: text, not entries.
            format!("description: |\n{run}x: 1\n"),
            format!("description: \"a\n{run}\"\n"),
            format!("nets: [\n{run}]\n"),
            // A syntax error after the list: the diagnostics are the parser's own.
            format!("nets:\n{run} bad: [\n"),
            format!("nets:\n{run}nets: 1\n"),
            // The last entry goes on on the next line.
            format!("nets:\n{run}    more\n"),
            // Under a mapping entry of a list (`- a: 1`), after a tag, with CRLF line ends.
            format!("- a: 1\n{run}"),
            format!("nets: !!seq\n{run}"),
            format!("nets:\r\n{}", run.replace('\n', "\r\n")),
        ] {
            same_as_without_runs(&text);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Random documents made of list entries (long runs of them) and the lines around lists.
        #[test]
        fn random_documents_parse_as_without_the_fast_path(
            parts in proptest::collection::vec((0usize..14, 0usize..3, 1usize..50), 1..8)
        ) {
            let mut text = String::new();
            for (kind, indent, n) in parts {
                let pad = "  ".repeat(indent);
                let line = match kind {
                    0 => format!("{pad}key{n}:\n"),
                    1 => format!("{pad}- k: v\n"),
                    2 => format!("{pad}description: |\n"),
                    3 => format!("{pad}# comment\n"),
                    4 => "\n".to_string(),
                    5 => "---\n".to_string(),
                    6 => format!("{pad}  continued\n"),
                    7 => format!("{pad}- [a, b]\n"),
                    8 => format!("{pad}x: \"open\n"),
                    9 => format!("{pad}- &a anchored\n{pad}- *a\n"),
                    _ => entries(&pad, n * 2, |i| format!("10.{n}.0.{i}/32")),
                };
                text.push_str(&line);
            }
            same_as_without_runs(&text);
        }
    }
}
