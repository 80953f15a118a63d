//! The fast path for the YAML that configurations are written in (issue 18): one pass over the lines
//! of a document, building the same tree as [`super::Builder`] does from the parser's events, about
//! ten times faster.
//!
//! It reads block mappings and block sequences (`key: value`, `- item`, indentless sequences under a
//! key, a mapping on an item's line), single-line plain scalars, single- and double-quoted scalars on
//! one line (escapes included), flow sequences of such scalars on one line (`[Ingress]`,
//! `[192.0.2.0/24, "a b"]`), comments, blank lines and the `---` / `...` markers. Everything else —
//! anchors, aliases, tags, block scalars, multi-line scalars, flow mappings, complex keys, merge keys,
//! duplicate keys, tabs, control characters, a BOM, odd indentation, a syntax error — makes it give up
//! on the whole document ([`Fail`]), which the parser then reads: what it accepts, the parser reads
//! without a diagnostic, and every message about a document it does not accept stays the parser's.
//!
//! The tree is the parser's to the last mark: node kinds, values (plain scalars resolved by
//! [`resolve_plain`], quoted ones text), line and column (in characters) and byte span of every node.
//! The parser's marks, for what this reads: a scalar spans its text as written (quotes included); a
//! flow sequence spans its `[`; a block mapping is an empty span at its first key; a block sequence an
//! empty span at its first `-`, except an indentless one (a mapping's value at the key's own
//! indentation), which starts at its first item's content; a key with nothing after it has an empty
//! null at its `:`. Each node, keys included, costs one of the YAML node budget ([`super::Left`]);
//! a document that would spend more than is left is given to the parser, which reports where.

use std::borrow::Cow;
use std::collections::HashSet;

use super::{key_text, resolve_plain, Chunk, Key, Left, Node, Parsed, Value};

/// The document is not (certainly) one this module reads like the parser: the parser reads it.
#[derive(Debug)]
pub(super) struct Fail;

type R<T> = Result<T, Fail>;

/// Most nested collections read here (the parser's own limit is 255).
const MAX_DEPTH: usize = 64;

/// Longest key read here (the parser looks at most 1,024 characters ahead for a key's `:`).
const MAX_KEY: usize = 512;

/// Maps of this many entries or more check for a duplicate key with a hash set, smaller ones by a scan.
const SCAN_KEYS: usize = 16;

/// Reads the document of `chunk` (the chunks of [`super::split_documents`] hold at most one) and
/// appends it to `out`, spending `left`; false, with nothing changed, when the parser must read it.
pub(super) fn parse_chunk(src: &str, chunk: &Chunk, left: &mut Left, out: &mut Parsed) -> bool {
    let mut reader = Reader {
        src,
        bytes: src.as_bytes(),
        chunk_start: chunk.start,
        end: chunk.end,
        next: chunk.start,
        next_no: chunk.line_offset,
        peeked: None,
        nodes: 0,
        budget: left.nodes,
        depth: 0,
        entries: Vec::new(),
        items: Vec::new(),
    };
    match reader.document() {
        Ok(doc) => {
            left.nodes -= reader.nodes;
            out.documents.extend(doc);
            true
        }
        Err(Fail) => false,
    }
}

/// A line with content (not blank, not a comment, not a document marker).
#[derive(Debug, Clone, Copy)]
struct Line {
    /// Byte offsets in the file: the line's start, its first non-space, its end (before the `\n`).
    start: usize,
    first: usize,
    end: usize,
    /// 1-based line number in the file.
    no: u32,
    /// Whether the line is ASCII (columns are then byte offsets).
    ascii: bool,
}

impl Line {
    fn indent(&self) -> usize {
        self.first - self.start
    }
}

/// How a plain scalar in block context ended.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// At the end of the line or at a comment.
    Line,
    /// At a `:` followed by a space or the end of the line (at this offset): it is a key.
    Colon(usize),
}

struct Reader<'s> {
    src: &'s str,
    bytes: &'s [u8],
    chunk_start: usize,
    end: usize,
    /// The start of the next line not read yet, and the number of the line before it.
    next: usize,
    next_no: u32,
    /// The next content line, read ahead.
    peeked: Option<Line>,
    /// Nodes made so far, and the most that may be.
    nodes: usize,
    budget: usize,
    /// Collections open.
    depth: usize,
    /// The entries and items of the collections open, innermost last: each collection is then made
    /// with one allocation of its exact size (the tree of 10,000 policies has ~100,000 collections).
    entries: Vec<(Key, Node)>,
    items: Vec<Node>,
}

impl<'s> Reader<'s> {
    /// The next content line, without consuming it.
    fn peek(&mut self) -> R<Option<Line>> {
        if self.peeked.is_none() {
            self.peeked = self.read_line()?;
        }
        Ok(self.peeked)
    }

    fn consume(&mut self) {
        self.peeked = None;
    }

    /// Reads lines up to the next content line: blank lines, comments and document markers are
    /// skipped; a character the parser refuses or that this module does not read (a tab, a CR, a
    /// control character, a BOM) is a [`Fail`].
    fn read_line(&mut self) -> R<Option<Line>> {
        let bytes = self.bytes;
        while self.next < self.end {
            let start = self.next;
            let mut i = start;
            let mut ascii = true;
            while i < self.end {
                let b = bytes[i];
                if b == b'\n' {
                    break;
                }
                if b < 0x20 || b == 0x7f {
                    return Err(Fail);
                }
                ascii &= b < 0x80;
                i += 1;
            }
            let end = i;
            self.next = if end < self.end { end + 1 } else { end };
            self.next_no = self.next_no.saturating_add(1);
            if !ascii && !self.src[start..end].chars().all(printable) {
                return Err(Fail);
            }
            let line = &bytes[start..end];
            let indent = line.iter().take_while(|&&b| b == b' ').count();
            if indent == line.len() || line[indent] == b'#' {
                continue;
            }
            if indent == 0 && (line.starts_with(b"---") || line.starts_with(b"...")) {
                // A marker alone on its line: the chunk's first line (`---`) or its last (`...`).
                if !blank_or_comment(&line[3..]) || (line[0] == b'-' && start != self.chunk_start) {
                    return Err(Fail);
                }
                continue;
            }
            return Ok(Some(Line {
                start,
                first: start + indent,
                end,
                no: self.next_no,
                ascii,
            }));
        }
        Ok(None)
    }

    /// Takes one node from the budget.
    fn spend(&mut self) -> R<()> {
        self.nodes += 1;
        if self.nodes > self.budget {
            return Err(Fail);
        }
        Ok(())
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Fail);
        }
        Ok(())
    }

    /// 1-based column (in characters) of the byte at `off` on `line`.
    fn column(&self, line: &Line, off: usize) -> u32 {
        let n = if line.ascii {
            off - line.start
        } else {
            self.src[line.start..off].chars().count()
        };
        u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1)
    }

    fn node(&self, line: &Line, off: usize, len: usize, value: Value) -> Node {
        Node {
            value,
            line: line.no,
            column: self.column(line, off),
            span: Some((off, len)),
        }
    }

    fn document(&mut self) -> R<Option<Node>> {
        let Some(line) = self.peek()? else {
            return Ok(None);
        };
        self.consume();
        let root = if self.is_entry(&line, line.first) {
            self.block_seq(line, false)?
        } else {
            self.block_map(line, line.first)?
        };
        if self.peek()?.is_some() {
            return Err(Fail);
        }
        Ok(Some(root))
    }

    /// `-` followed by a space or the end of the line, at `off`.
    fn is_entry(&self, line: &Line, off: usize) -> bool {
        self.bytes[off] == b'-' && (off + 1 == line.end || self.bytes[off + 1] == b' ')
    }

    /// A block mapping whose first key is at `off` on `line` (already consumed); its other keys are
    /// at the same column on the lines after.
    fn block_map(&mut self, first: Line, off: usize) -> R<Node> {
        self.enter()?;
        let indent = off - first.start;
        let head = self.node(&first, off, 0, Value::Null);
        let base = self.entries.len();
        let mut seen: Option<HashSet<String>> = None;
        let (mut line, mut off) = (first, off);
        loop {
            let (key, colon) = self.key(&line, off)?;
            self.spend()?;
            check_key(&key.text, &self.entries[base..], &mut seen)?;
            let value = self.value_after(&line, colon, indent)?;
            self.entries.push((key, value));
            match self.peek()? {
                Some(next) if next.indent() == indent => {
                    self.consume();
                    (line, off) = (next, next.first);
                }
                Some(next) if next.indent() > indent => return Err(Fail),
                _ => break,
            }
        }
        self.spend()?;
        self.depth -= 1;
        let entries = self.entries.drain(base..).collect();
        Ok(Node {
            value: Value::Map(entries),
            ..head
        })
    }

    /// The key at `off` on `line`: its text and position, and the offset of its `:`.
    fn key(&mut self, line: &Line, off: usize) -> R<(Key, usize)> {
        let bytes = self.bytes;
        let (text, colon) = match bytes[off] {
            b'"' | b'\'' => {
                let (text, after) = self.quoted(line, off)?;
                let ok = after < line.end
                    && bytes[after] == b':'
                    && (after + 1 == line.end || bytes[after + 1] == b' ');
                if !ok {
                    return Err(Fail);
                }
                (Cow::Owned(text), after)
            }
            _ => {
                self.plain_start(line, off)?;
                let (end, stop) = self.plain_block(line, off);
                let Stop::Colon(colon) = stop else {
                    return Err(Fail);
                };
                // `key :` and keys the parser might not look far enough for.
                if end != colon || colon - off > MAX_KEY {
                    return Err(Fail);
                }
                (key_text(&self.src[off..end]), colon)
            }
        };
        if colon - off > MAX_KEY {
            return Err(Fail);
        }
        let key = Key {
            text,
            line: line.no,
            column: self.column(line, off),
        };
        Ok((key, colon))
    }

    /// The value of the key whose `:` is at `colon` on `line`, the key being at column `indent`.
    fn value_after(&mut self, line: &Line, colon: usize, indent: usize) -> R<Node> {
        let v = self.skip_spaces(line, colon + 1);
        if v < line.end && self.bytes[v] != b'#' {
            return self.inline_value(line, v);
        }
        // Nothing on the key's line: a collection on the lines after, or null.
        match self.peek()? {
            Some(next) if next.indent() > indent => {
                self.consume();
                if self.is_entry(&next, next.first) {
                    self.block_seq(next, false)
                } else {
                    self.block_map(next, next.first)
                }
            }
            Some(next) if next.indent() == indent && self.is_entry(&next, next.first) => {
                self.consume();
                self.block_seq(next, true)
            }
            _ => {
                self.spend()?;
                Ok(self.node(line, colon, 0, Value::Null))
            }
        }
    }

    /// A block sequence whose first `-` starts `first` (already consumed); `indentless` when it is a
    /// mapping's value at the key's own indentation.
    fn block_seq(&mut self, first: Line, indentless: bool) -> R<Node> {
        self.enter()?;
        let indent = first.indent();
        let base = self.items.len();
        let mut line = first;
        let mut head = None;
        loop {
            // `- ` then the item, on the same line.
            let v = self.skip_spaces(&line, line.first + 1);
            if v == line.first + 1 || v == line.end || self.bytes[v] == b'#' {
                return Err(Fail);
            }
            if head.is_none() {
                let at = if indentless { v } else { line.first };
                head = Some(self.node(&line, at, 0, Value::Null));
            }
            let item = if self.is_entry(&line, v) {
                return Err(Fail);
            } else if self.is_key(&line, v) {
                self.block_map(line, v)?
            } else {
                self.inline_value(&line, v)?
            };
            self.items.push(item);
            match self.peek()? {
                Some(next) if next.indent() == indent && self.is_entry(&next, next.first) => {
                    self.consume();
                    line = next;
                }
                Some(next) if next.indent() > indent => return Err(Fail),
                _ => break,
            }
        }
        self.spend()?;
        self.depth -= 1;
        let items = self.items.drain(base..).collect();
        let head = head.ok_or(Fail)?;
        Ok(Node {
            value: Value::Seq(items),
            ..head
        })
    }

    /// Whether a key (`key:` / `"key":`) starts at `off`.
    fn is_key(&self, line: &Line, off: usize) -> bool {
        let bytes = self.bytes;
        match bytes[off] {
            b'"' | b'\'' => match self.quoted_end(line, off) {
                Some(after) => {
                    after < line.end
                        && bytes[after] == b':'
                        && (after + 1 == line.end || bytes[after + 1] == b' ')
                }
                None => false,
            },
            _ => matches!(self.plain_block(line, off).1, Stop::Colon(_)),
        }
    }

    /// A scalar or a flow sequence at `off`, the rest of `line` (a comment may follow).
    fn inline_value(&mut self, line: &Line, off: usize) -> R<Node> {
        let bytes = self.bytes;
        let (node, after) = match bytes[off] {
            b'"' | b'\'' => {
                let (text, after) = self.quoted(line, off)?;
                self.spend()?;
                (self.node(line, off, after - off, Value::Str(text)), after)
            }
            b'[' => self.flow_seq(line, off)?,
            _ => {
                self.plain_start(line, off)?;
                let (end, stop) = self.plain_block(line, off);
                if stop != Stop::Line {
                    return Err(Fail);
                }
                self.spend()?;
                let value = resolve_plain(&self.src[off..end]);
                (self.node(line, off, end - off, value), end)
            }
        };
        if !blank_or_comment(&bytes[after..line.end]) {
            return Err(Fail);
        }
        Ok(node)
    }

    /// A plain scalar may start at `off`: no indicator (a `-` only before a non-space).
    fn plain_start(&self, line: &Line, off: usize) -> R<()> {
        let b = self.bytes[off];
        let ok = match b {
            b'-' => off + 1 < line.end && self.bytes[off + 1] != b' ',
            b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|'
            | b'>' | b'\'' | b'"' | b'%' | b'@' | b'`' => false,
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(Fail)
        }
    }

    /// A plain scalar in block context from `off` (its start checked): where its text ends (trailing
    /// spaces not included) and what ended it.
    fn plain_block(&self, line: &Line, off: usize) -> (usize, Stop) {
        let bytes = self.bytes;
        let mut i = off;
        let mut end = off;
        let stop = loop {
            if i == line.end {
                break Stop::Line;
            }
            match bytes[i] {
                b':' if i + 1 == line.end || bytes[i + 1] == b' ' => break Stop::Colon(i),
                b'#' if bytes[i - 1] == b' ' => break Stop::Line,
                b' ' => {}
                _ => end = i + 1,
            }
            i += 1;
        };
        (end, stop)
    }

    /// A flow sequence of scalars, all on `line`, from its `[` at `off`: the node and the offset after
    /// its `]`.
    fn flow_seq(&mut self, line: &Line, off: usize) -> R<(Node, usize)> {
        self.enter()?;
        let bytes = self.bytes;
        let head = self.node(line, off, 1, Value::Null);
        let base = self.items.len();
        let mut i = self.skip_spaces(line, off + 1);
        if i < line.end && bytes[i] == b']' {
            i += 1;
        } else {
            loop {
                if i == line.end {
                    return Err(Fail);
                }
                let (item, after) = match bytes[i] {
                    b'"' | b'\'' => {
                        let (text, after) = self.quoted(line, i)?;
                        (self.node(line, i, after - i, Value::Str(text)), after)
                    }
                    _ => {
                        self.plain_start(line, i)?;
                        // `-` starts a plain scalar in a flow only before a "safe" character.
                        if bytes[i] == b'-' {
                            return Err(Fail);
                        }
                        let end = self.plain_flow(line, i)?;
                        let value = resolve_plain(&self.src[i..end]);
                        (self.node(line, i, end - i, value), end)
                    }
                };
                self.spend()?;
                self.items.push(item);
                i = self.skip_spaces(line, after);
                if i == line.end {
                    return Err(Fail);
                }
                match bytes[i] {
                    b',' => {
                        i = self.skip_spaces(line, i + 1);
                        // A trailing comma (`[a, ]`), or nothing after it on this line.
                        if i == line.end || bytes[i] == b']' {
                            return Err(Fail);
                        }
                    }
                    b']' => {
                        i += 1;
                        break;
                    }
                    _ => return Err(Fail),
                }
            }
        }
        self.spend()?;
        self.depth -= 1;
        let items = self.items.drain(base..).collect();
        Ok((
            Node {
                value: Value::Seq(items),
                ..head
            },
            i,
        ))
    }

    /// A plain scalar in a flow sequence from `off` (its start checked): where its text ends. It ends
    /// at `,` or `]`; a `:` that is not followed by a character of the scalar (a flow mapping), a
    /// comment, a flow collection or the end of the line is a [`Fail`].
    fn plain_flow(&self, line: &Line, off: usize) -> R<usize> {
        let bytes = self.bytes;
        let mut i = off;
        let mut end = off;
        while i < line.end {
            match bytes[i] {
                b',' | b']' => return Ok(end),
                b'[' | b'{' | b'}' => return Err(Fail),
                b':' if i + 1 == line.end
                    || matches!(bytes[i + 1], b' ' | b',' | b'[' | b']' | b'{' | b'}') =>
                {
                    return Err(Fail)
                }
                b'#' if bytes[i - 1] == b' ' => return Err(Fail),
                b' ' => {}
                _ => end = i + 1,
            }
            i += 1;
        }
        Err(Fail)
    }

    fn skip_spaces(&self, line: &Line, mut i: usize) -> usize {
        while i < line.end && self.bytes[i] == b' ' {
            i += 1;
        }
        i
    }

    /// Where the quoted scalar at `off` ends (after its closing quote), if it does on this line.
    fn quoted_end(&self, line: &Line, off: usize) -> Option<usize> {
        let bytes = self.bytes;
        let quote = bytes[off];
        let mut i = off + 1;
        while i < line.end {
            match bytes[i] {
                b'\\' if quote == b'"' => i += 2,
                b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') && i + 1 < line.end => {
                    i += 2
                }
                b if b == quote => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    }

    /// The single- or double-quoted scalar at `off`, closed on this line: its value and the offset
    /// after the closing quote.
    fn quoted(&self, line: &Line, off: usize) -> R<(String, usize)> {
        let bytes = self.bytes;
        let quote = bytes[off];
        let mut text = String::new();
        let mut i = off + 1;
        let mut from = i;
        while i < line.end {
            let b = bytes[i];
            if b == quote {
                if quote == b'\'' && i + 1 < line.end && bytes[i + 1] == b'\'' {
                    text.push_str(&self.src[from..=i]);
                    i += 2;
                    from = i;
                    continue;
                }
                text.push_str(&self.src[from..i]);
                return Ok((text, i + 1));
            }
            if b == b'\\' && quote == b'"' {
                text.push_str(&self.src[from..i]);
                let (c, len) = escape(&bytes[i + 1..line.end]).ok_or(Fail)?;
                text.push(c);
                i += 1 + len;
                from = i;
                continue;
            }
            i += 1;
        }
        Err(Fail)
    }
}

/// A key that the parser would take as a merge key or a duplicate (both reported or handled by
/// [`super::Builder`]) is a [`Fail`].
fn check_key(text: &str, entries: &[(Key, Node)], seen: &mut Option<HashSet<String>>) -> R<()> {
    if text == "<<" {
        return Err(Fail);
    }
    if entries.len() < SCAN_KEYS {
        if entries.iter().any(|(k, _)| k.text == text) {
            return Err(Fail);
        }
        return Ok(());
    }
    let set = seen.get_or_insert_with(|| entries.iter().map(|(k, _)| k.text.to_string()).collect());
    if !set.insert(text.to_owned()) {
        return Err(Fail);
    }
    Ok(())
}

/// A double-quoted scalar's escape after its `\`: the character and how many bytes it took. Only
/// what the parser reads the same way; anything else (a line break, a surrogate) is None.
fn escape(rest: &[u8]) -> Option<(char, usize)> {
    let c = match *rest.first()? {
        b'0' => '\0',
        b'a' => '\x07',
        b'b' => '\x08',
        b't' => '\t',
        b'n' => '\n',
        b'v' => '\x0b',
        b'f' => '\x0c',
        b'r' => '\r',
        b'e' => '\x1b',
        b' ' => ' ',
        b'"' => '"',
        b'/' => '/',
        b'\\' => '\\',
        b'N' => '\u{85}',
        b'_' => '\u{a0}',
        b'L' => '\u{2028}',
        b'P' => '\u{2029}',
        b'x' | b'u' | b'U' => {
            let len = match rest[0] {
                b'x' => 2,
                b'u' => 4,
                _ => 8,
            };
            let hex = rest.get(1..=len)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let value = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            return char::from_u32(value).map(|c| (c, 1 + len));
        }
        _ => return None,
    };
    Some((c, 1))
}

/// Nothing, or spaces, or a comment after at least one space.
fn blank_or_comment(rest: &[u8]) -> bool {
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    spaces == rest.len() || (spaces > 0 && rest[spaces] == b'#')
}

/// A character the parser reads as printable content, outside ASCII; not a BOM, not U+0085.
fn printable(c: char) -> bool {
    matches!(c as u32, 0x20..=0x7e | 0xa0..=0xd7ff | 0xe000..=0xfefe | 0xff00..=0xfffd | 0x10000..=0x10_ffff)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::super::{parse_chunks, parse_with, split_documents, Budget, Parsed};
    use super::*;

    /// `text` parsed with the fast paths and without gives the same documents and diagnostics; returns
    /// how many of its chunks this module read.
    fn same_as_parser(text: &str) -> usize {
        let file: Arc<str> = Arc::from("t.yaml");
        let fast = parse_with(&file, text, true, &mut Budget::new());
        let slow = parse_with(&file, text, false, &mut Budget::new());
        assert_eq!(fast.documents, slow.documents, "{text:?}");
        let msgs = |p: &Parsed| {
            p.diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(msgs(&fast), msgs(&slow), "{text:?}");
        let mut read = 0;
        for chunk in split_documents(text) {
            let mut out = Parsed::default();
            let mut left = Budget::new().left;
            if parse_chunk(text, &chunk, &mut left, &mut out) {
                read += 1;
                // What is read here, the parser reads without a word, to the same tree.
                let alone = parse_chunks(&file, text, [chunk], false, &mut Budget::new());
                assert!(alone.diagnostics.is_empty(), "{text:?}");
                assert_eq!(alone.documents, out.documents, "{text:?}");
            }
        }
        read
    }

    const POLICY: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: one-00000\nspec:\n  order: 0\n  selector: one == 'yes'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source:\n      nets: [192.0.2.0/24]\n    destination:\n      ports: [1024]\n";

    #[test]
    fn the_benchmark_policy_is_read_here() {
        let two = format!("{POLICY}---\n{POLICY}");
        assert_eq!(same_as_parser(&two), 2);
    }

    /// Every YAML file of the repository (the example configuration, the golden tests' inputs, the
    /// fuzz seeds, the packaging) parses the same with and without the fast path.
    #[test]
    fn every_yaml_file_of_the_repository_parses_as_by_the_parser() {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if path.is_dir() {
                    if name != "target" && name != ".git" {
                        walk(&path, out);
                    }
                } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    out.push(path);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["etc", "tests", "packaging", "examples"] {
            walk(&root.join(dir), &mut files);
        }
        assert!(files.len() >= 20, "{files:?}");
        let (mut chunks, mut read) = (0, 0);
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            chunks += split_documents(&text).len();
            read += same_as_parser(&text);
        }
        // The fast path is not only right but used, even on these hand-written files (most of the
        // others have flow mappings: `- {action: Allow, protocol: TCP}`).
        assert!(read * 5 > chunks, "{read} of {chunks}");
    }

    /// Every feature outside the subset makes the fast path give the document to the parser, which
    /// reads it right (or reports it, with its own message).
    #[test]
    fn each_feature_outside_the_subset_takes_the_parser() {
        for text in [
            "a: &x 1\nb: *x\n",
            "a: !!str 5\n",
            "selector: !has(a)\n",
            "a: |\n  text\n",
            "a: >-\n  folded\n",
            "a: plain\n  continued\n",
            "a: \"double\n  quoted\"\n",
            "a: 'single\n  quoted'\n",
            "a: {x: 1}\n",
            "- {action: Allow}\n",
            "? complex\n: key\n",
            "[a, b]: c\n",
            "a:\tb\n",
            "a:\n\t- b\n",
            "%YAML 1.2\n---\na: 1\n",
            "\u{feff}a: 1\n",
            "a: 1\r\nb: 2\r\n",
            "a: [b,\n  c]\n",
            "a: 1\na: 2\n",
            "<<: {x: 1}\n",
            "a:\n  - b\n c: 1\n",
            "a: b: c\n",
            "- - x\n",
            "-\n  a: 1\n",
            "a: [fe80::]\n",
            "a: [x, ]\n",
            "\"a\" : 1\n",
            "a : 1\n",
            "a: \"\\q\"\n",
            "a: \"\\ud800\"\n",
            "a: x\u{85}y\n",
            "just a scalar\n",
            "--- a: 1\n",
        ] {
            let chunk = &split_documents(text)[0];
            let mut left = Budget::new().left;
            assert!(
                !parse_chunk(text, chunk, &mut left, &mut Parsed::default()),
                "{text:?}"
            );
            assert_eq!(same_as_parser(text), 0, "{text:?}");
        }
    }

    /// Inside the subset: scalars of every style (escapes, non-ASCII characters: columns count
    /// characters), nulls, indentless lists, comments and markers.
    #[test]
    fn the_subset_is_read_here_with_the_parsers_marks() {
        for text in [
            "a: é # ü\nb: \"é\" # c\nc: [é, 'ü', \"x, y\"]\nü: x\n",
            "a: \"\\x41\\u00e9\\t\\\"\\\\ \\/\\N\\_\\L\\P\\U0001F600\"\nb: 'it''s'\n",
            "---\n# c\nl:\n- a\n-   b: 1\n    c:\n    d: [1, x-1, 0x1F, 1e3, ~, true]\nm:\n\n  - x # c\n...\n",
            "  a: 1\n  b:\n      c: 2\n",
            "- a\n- b: 1\n  c: [x]\n- 'q': \"v\"\n",
            "k: 2001:db8::/32\nn: [2001:db8::/32, a:b, 'fe80::']\n",
            "a: b#c\nd: e #f\n\"g\": h\n",
            "s: one == 'yes' && !has(b) || x in {'a', \"b\"}\n",
        ] {
            assert_eq!(same_as_parser(text), 1, "{text:?}");
        }
    }

    /// A tiny deterministic generator (xorshift), driven by proptest's seeds.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len())]
        }
    }

    /// Keys as written: mostly plain names, some quoted, some the parser reads otherwise.
    const KEYS: &[&str] = &[
        "a",
        "b",
        "c",
        "name",
        "spec",
        "selector",
        "nets",
        "ports",
        "x y",
        "a:b",
        "-k",
        "true",
        "80",
        "a#b",
        "é",
        "\"q\"",
        "'s'",
        "\"a b\"",
        "'it''s'",
        "\"\\u00e9\"",
        "null",
        "~",
        "k[0]",
        "<<",
        "?k",
        "[k]",
        "&k",
        "*k",
        "!k",
        "k :",
        "\"k\" ",
        "'k'x",
        "a\tb",
        "\u{feff}k",
        "k\r",
    ];

    /// Scalars as written.
    const SCALARS: &[&str] = &[
        "x",
        "Allow",
        "TCP",
        "one == 'yes'",
        "has(a) && !has(b)",
        "all()",
        "192.0.2.0/24",
        "2001:db8::/32",
        "fe80::",
        "80",
        "-5",
        "+3",
        "0x1F",
        "0o17",
        "1e3",
        ".5",
        "1_000",
        "99999999999999999999",
        "true",
        "False",
        "~",
        "null",
        "Null",
        "yes",
        "a b  c",
        "a#b",
        "http://x",
        "\"\"",
        "''",
        "\"a b\"",
        "'a b'",
        "\"x\\ty\\\"z\\\\\"",
        "\"\\x41\\u00e9\\U0001F600\"",
        "'it''s'",
        "\"\\ud800\"",
        "\"\\q\"",
        "\"\\N\\_\\L\\P\\e\\0\\/\"",
        "\"\\ \"",
        "é",
        "日本",
        "a: b",
        "a:",
        ":x",
        "?x",
        "-",
        "- x",
        "#x",
        "&a x",
        "*a",
        "!t x",
        "!!str 5",
        "|",
        ">",
        "{a: 1}",
        "[x]",
        "@x",
        "`x",
        "%x",
        "x\ty",
        "'x",
        "\"x",
        "x'",
        "x\"",
        "a,b",
        "a]",
        "[a",
        "\u{85}x",
        "x\u{feff}",
        "a  # c",
        "'a' # c",
        "\"a\"#c",
        "x ",
        "1.2.3",
        ".inf",
    ];

    /// Scalars for flow sequences, as written.
    const FLOW: &[&str] = &[
        "Ingress",
        "Egress",
        "192.0.2.0/24",
        "2001:db8::/32",
        "fe80::",
        "a:b",
        "80",
        "1:2",
        "\"a, b\"",
        "'x'",
        "a b",
        "-1",
        "a]",
        "{x}",
        "#x",
        "a #x",
        "x:",
        "",
        "é",
        "?x",
        "&a",
        "*a",
        "!t",
        "a\"b",
        "a[b",
    ];

    enum Tree {
        Scalar(&'static str),
        Flow(Vec<&'static str>),
        Map(Vec<(&'static str, Tree)>),
        Seq(Vec<Tree>),
        /// A key with nothing after it (null), or `-` alone.
        Empty,
    }

    fn tree(rng: &mut Rng, depth: usize) -> Tree {
        let leaf = depth >= 4 || rng.chance(35);
        if leaf {
            return match rng.below(10) {
                0 => Tree::Empty,
                1 | 2 => {
                    let n = rng.below(4);
                    Tree::Flow((0..n).map(|_| rng.pick(FLOW)).collect())
                }
                _ => Tree::Scalar(if rng.chance(80) {
                    rng.pick(&SCALARS[..24])
                } else {
                    rng.pick(SCALARS)
                }),
            };
        }
        let most = if rng.chance(10) { 20 } else { 4 };
        let n = 1 + rng.below(most);
        if rng.chance(60) {
            let mut keys: Vec<&'static str> = Vec::new();
            for _ in 0..n {
                let key = if rng.chance(85) {
                    rng.pick(&KEYS[..9])
                } else {
                    rng.pick(KEYS)
                };
                // Mostly distinct keys; a duplicate now and then.
                if keys.contains(&key) && rng.chance(80) {
                    continue;
                }
                keys.push(key);
            }
            Tree::Map(
                keys.into_iter()
                    .map(|k| (k, tree(rng, depth + 1)))
                    .collect(),
            )
        } else {
            Tree::Seq((0..n).map(|_| tree(rng, depth + 1)).collect())
        }
    }

    fn spaces(rng: &mut Rng) -> &'static str {
        ["", " ", " ", " ", "  "][rng.below(5)]
    }

    fn comment(rng: &mut Rng) -> &'static str {
        ["", "", "", "", " # c", "  #c: d", " #", "#x"][rng.below(8)]
    }

    /// Writes `map`'s entries at `indent`, the first one right where the text is (after `- `) when
    /// `inline`.
    fn map(out: &mut String, rng: &mut Rng, entries: &[(&str, Tree)], indent: usize, inline: bool) {
        for (i, (key, value)) in entries.iter().enumerate() {
            if !(inline && i == 0) {
                out.push_str(&" ".repeat(indent));
            }
            out.push_str(key);
            out.push(':');
            match value {
                Tree::Empty => {
                    out.push_str(comment(rng));
                    out.push('\n');
                }
                Tree::Scalar(s) => {
                    out.push(' ');
                    out.push_str(spaces(rng));
                    out.push_str(s);
                    out.push_str(comment(rng));
                    out.push('\n');
                }
                Tree::Flow(items) => {
                    out.push(' ');
                    flow(out, rng, items);
                    out.push_str(comment(rng));
                    out.push('\n');
                }
                Tree::Map(entries) => {
                    out.push_str(comment(rng));
                    out.push('\n');
                    let step = [1, 2, 2, 2, 4][rng.below(5)];
                    map(out, rng, entries, indent + step, false);
                }
                Tree::Seq(items) => {
                    out.push_str(comment(rng));
                    out.push('\n');
                    let step = [0, 0, 2, 2, 4, 1][rng.below(6)];
                    seq(out, rng, items, indent + step);
                }
            }
            noise(out, rng);
        }
    }

    fn seq(out: &mut String, rng: &mut Rng, items: &[Tree], indent: usize) {
        for item in items {
            out.push_str(&" ".repeat(indent));
            out.push('-');
            let pad = [1, 1, 1, 2, 3][rng.below(5)];
            match item {
                Tree::Empty => {
                    out.push_str(comment(rng));
                    out.push('\n');
                }
                Tree::Scalar(s) => {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(s);
                    out.push_str(comment(rng));
                    out.push('\n');
                }
                Tree::Flow(items) => {
                    out.push_str(&" ".repeat(pad));
                    flow(out, rng, items);
                    out.push_str(comment(rng));
                    out.push('\n');
                }
                Tree::Map(entries) => {
                    out.push_str(&" ".repeat(pad));
                    map(out, rng, entries, indent + 1 + pad, true);
                }
                Tree::Seq(items) => {
                    if rng.chance(50) {
                        out.push_str(&" ".repeat(pad));
                        seq(out, rng, items, 0);
                    } else {
                        out.push('\n');
                        seq(out, rng, items, indent + 2);
                    }
                }
            }
            noise(out, rng);
        }
    }

    fn flow(out: &mut String, rng: &mut Rng, items: &[&str]) {
        out.push('[');
        out.push_str(spaces(rng));
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(spaces(rng));
                out.push(',');
                out.push_str(if rng.chance(80) { " " } else { spaces(rng) });
            }
            out.push_str(item);
        }
        if rng.chance(5) {
            out.push(',');
        }
        out.push_str(spaces(rng));
        out.push(']');
    }

    /// Blank lines and comment lines, now and then.
    fn noise(out: &mut String, rng: &mut Rng) {
        if rng.chance(8) {
            let line = ["\n", "   \n", "# c\n", "      # deep\n", " #x: y\n"][rng.below(5)];
            out.push_str(line);
        }
    }

    fn document(rng: &mut Rng) -> String {
        let mut out = String::new();
        if rng.chance(20) {
            out.push_str("# head\n\n");
        }
        let indent = if rng.chance(10) { 2 } else { 0 };
        match tree(rng, 0) {
            Tree::Seq(items) => seq(&mut out, rng, &items, indent),
            Tree::Map(entries) => map(&mut out, rng, &entries, indent, false),
            other => map(&mut out, rng, &[("root", other)], indent, false),
        }
        out
    }

    /// One mutation of the text's lines: the mistakes people make, and what the fast path leaves
    /// to the parser.
    fn mutate(text: &str, rng: &mut Rng) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.is_empty() {
            return text.to_owned();
        }
        let i = rng.below(lines.len());
        match rng.below(7) {
            0 => lines[i].insert(0, ' '),
            1 => {
                if lines[i].starts_with(' ') {
                    lines[i].remove(0);
                }
            }
            2 => {
                let chars: Vec<char> = lines[i].chars().collect();
                let at = rng.below(chars.len() + 1);
                let c = [
                    ':', '#', ' ', '-', '"', '\'', '[', ']', '\t', '&', '*', '!', '\r', 'é',
                    '\u{feff}', ',', '{', '|', '\\', '\u{85}', '?', '%', '\0',
                ][rng.below(23)];
                let mut line: String = chars[..at].iter().collect();
                line.push(c);
                line.extend(&chars[at..]);
                lines[i] = line;
            }
            3 => {
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            4 => {
                lines.remove(i);
            }
            5 => lines[i].push_str(" x"),
            _ => lines.insert(
                i,
                ["---", "...", "--- x", "---#", "%YAML 1.2", "- x", "x"][rng.below(7)].to_owned(),
            ),
        }
        let mut out = lines.join("\n");
        if text.ends_with('\n') && rng.chance(90) {
            out.push('\n');
        }
        out
    }

    proptest::proptest! {
        // A longer run: HOSTPOLICYD_FUZZ_CASES=1000000 cargo test --release --lib generated_documents
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("HOSTPOLICYD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1500)
        ))]
        /// Generated documents (block and flow collections, every scalar style, comments, markers,
        /// what the fast path leaves to the parser), as written and with one or two mistakes, parse
        /// to the same documents and diagnostics, marks included, with the fast path and without.
        #[test]
        fn generated_documents_parse_as_by_the_parser(seed in 1u64.., docs in 1usize..4, mutations in 0usize..3) {
            let mut rng = Rng(seed);
            let mut text = String::new();
            for d in 0..docs {
                if d > 0 || rng.chance(20) {
                    text.push_str(["---\n", "--- # c\n", "...\n---\n", "---  \n"][rng.below(4)]);
                }
                text.push_str(&document(&mut rng));
            }
            for _ in 0..mutations {
                text = mutate(&text, &mut rng);
            }
            same_as_parser(&text);
        }
    }

    /// The same, without mistakes: most of these are read by the fast path (it is not only right but
    /// used).
    #[test]
    fn most_generated_documents_are_read_here() {
        let (mut read, mut all) = (0, 0);
        for seed in 1..400u64 {
            let mut rng = Rng(seed * 7919);
            let text = document(&mut rng);
            all += 1;
            read += same_as_parser(&text);
        }
        assert!(read * 4 > all, "{read} of {all}");
    }
}
