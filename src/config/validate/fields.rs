//! Strict decoding of YAML nodes into values, with messages for people.
//!
//! Every helper reports its own error (naming the field and what was expected) and returns `None`;
//! callers just skip what did not decode. A node the YAML loader already reported ([`Value::Invalid`])
//! is skipped without a second message, but still counts as an error of the resource.

use std::sync::Arc;

use crate::config::diag::Diagnostic;
use crate::config::model::{At, Pos};
use crate::config::yaml::{yaml_quote, Key, Node, Value};

/// The decoding context of one file: where diagnostics go, and how many errors the current resource has.
pub(crate) struct Cx<'a> {
    pub file: Arc<str>,
    pub src: &'a str,
    pub diags: &'a mut Vec<Diagnostic>,
    /// Errors reported so far (a resource is kept only if this did not grow while decoding it).
    pub errors: usize,
}

impl Cx<'_> {
    pub fn pos(&self, node: &Node) -> Pos {
        node.pos(&self.file)
    }
    pub fn key_pos(&self, key: &Key) -> Pos {
        key.pos(&self.file)
    }
    pub fn error_at(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors += 1;
        self.diags.push(Diagnostic::error(pos, message));
    }
    pub fn warn_at(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic::warning(pos, message));
    }
    pub fn error(&mut self, node: &Node, message: impl Into<String>) {
        let pos = self.pos(node);
        self.error_at(pos, message);
    }
    pub fn warn(&mut self, node: &Node, message: impl Into<String>) {
        let pos = self.pos(node);
        self.warn_at(pos, message);
    }
    /// An error the YAML loader already reported.
    pub fn already_reported(&mut self) {
        self.errors += 1;
    }
    /// The scalar as written in the file (for hints such as "write `foo: \"true\"`").
    pub fn raw(&self, node: &Node) -> String {
        match node.raw(self.src) {
            Some(raw) if !raw.contains('\n') => raw.to_owned(),
            _ => display(node),
        }
    }
    pub fn at<T>(&self, node: &Node, value: T) -> At<T> {
        At {
            value,
            pos: self.pos(node),
        }
    }
}

/// A short rendering of a scalar for messages.
pub(crate) fn display(node: &Node) -> String {
    match &node.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => s.clone(),
        Value::Seq(_) => "[...]".into(),
        Value::Map(_) => "{...}".into(),
        Value::Invalid => "?".into(),
    }
}

/// The hint for a structural slip (issue 20 item 6): a rule (a mapping with `action`), or a list of
/// them, where another key's value was expected, as when the line `ingress:` is lost and the rules
/// below it land in the key above (`types`, say). Empty when the value does not look like rules.
pub(crate) fn rules_hint(node: &Node) -> &'static str {
    let is_rule = |n: &Node| match &n.value {
        Value::Map(entries) => entries.iter().any(|(k, _)| k.text == "action"),
        _ => false,
    };
    match &node.value {
        _ if is_rule(node) => {
            " (it looks like a rule: an `ingress:` or `egress:` key is probably missing above it)"
        }
        Value::Seq(items) if !items.is_empty() && items.iter().any(is_rule) => {
            " (it looks like a list of rules: an `ingress:` or `egress:` key is probably missing above it)"
        }
        _ => "",
    }
}

/// The fields of a YAML mapping that decodes into a struct: unknown fields were reported.
pub(crate) struct Obj<'n> {
    pub node: &'n Node,
    entries: Vec<(&'n Key, &'n Node)>,
}

impl<'n> Obj<'n> {
    /// The field's value; `None` if absent or null (Go's decoding treats null as "not set").
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entry(name)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v.value, Value::Null))
    }
    /// The field's key and value, null included.
    pub fn entry(&self, name: &str) -> Option<(&'n Key, &'n Node)> {
        self.entries.iter().find(|(k, _)| k.text == name).copied()
    }
    pub fn has(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }
    /// Fields in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&'n Key, &'n Node)> + '_ {
        self.entries.iter().copied()
    }
}

/// Decode a mapping whose keys must be among `fields`. `what` names it in messages ("a rule").
/// Null counts as an empty mapping, as in Go.
pub(crate) fn object<'n>(
    cx: &mut Cx,
    node: &'n Node,
    what: &str,
    fields: &[&str],
) -> Option<Obj<'n>> {
    let entries = match &node.value {
        Value::Map(entries) => entries,
        Value::Null => {
            return Some(Obj {
                node,
                entries: Vec::new(),
            })
        }
        Value::Invalid => {
            cx.already_reported();
            return None;
        }
        _ => {
            // A list of rules where a rule was expected is not a lost `ingress:` key.
            let hint = if what == "a rule" {
                ""
            } else {
                rules_hint(node)
            };
            cx.error(
                node,
                format!("{what} must be a mapping, not {}{hint}", node.kind()),
            );
            return None;
        }
    };
    let mut obj = Obj {
        node,
        entries: Vec::with_capacity(entries.len()),
    };
    for (key, value) in entries {
        if matches!(value.value, Value::Invalid) {
            cx.already_reported();
        } else if fields.contains(&key.as_str()) {
            obj.entries.push((key, value));
        } else {
            let pos = cx.key_pos(key);
            cx.error_at(pos, unknown_field(&key.text, what, fields));
        }
    }
    Some(obj)
}

/// "unknown field `protcol` in a rule (did you mean `protocol`?); valid fields: ..."
pub(crate) fn unknown_field(name: &str, what: &str, fields: &[&str]) -> String {
    let mut message = format!("unknown field `{name}` in {what}");
    if let Some(close) = suggest(name, fields.iter().copied()) {
        message.push_str(&format!(" (did you mean `{close}`?)"));
    }
    message.push_str("; valid fields: ");
    message.push_str(&fields.join(", "));
    if name == "action" && !fields.contains(&"action") {
        message.push_str(
            " (`action` belongs to a rule: an `ingress:` or `egress:` list is probably missing)",
        );
    }
    message
}

/// The candidate closest to `word` (case-insensitive edit distance ≤ 2, or same letters in another
/// case), if any.
pub(crate) fn suggest<'c>(
    word: &str,
    candidates: impl Iterator<Item = &'c str>,
) -> Option<&'c str> {
    let word_lc = word.to_ascii_lowercase();
    let limit = if word.len() <= 4 { 1 } else { 2 };
    candidates
        .map(|c| (distance(&word_lc, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (short field names only).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A string field. Booleans and numbers are errors with the hint to quote them.
pub(crate) fn string<'n>(cx: &mut Cx, node: &'n Node, field: &str) -> Option<&'n str> {
    match &node.value {
        Value::Str(s) => Some(s),
        Value::Null => None,
        Value::Invalid => {
            cx.already_reported();
            None
        }
        Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
            let raw = cx.raw(node);
            cx.error(
                node,
                format!("`{field}` must be a string, and YAML reads `{raw}` as {}: quote it, e.g. {field}: {}", node.kind(), yaml_quote(&raw)),
            );
            None
        }
        _ => {
            cx.error(
                node,
                format!(
                    "`{field}` must be a string, not {}{}",
                    node.kind(),
                    rules_hint(node)
                ),
            );
            None
        }
    }
}

/// A `true`/`false` field.
pub(crate) fn boolean(cx: &mut Cx, node: &Node, field: &str) -> Option<bool> {
    match &node.value {
        Value::Bool(b) => Some(*b),
        Value::Null => None,
        Value::Invalid => {
            cx.already_reported();
            None
        }
        // YAML 1.1 spellings, unquoted: calicoctl's YAML reader takes them as booleans.
        Value::Str(s) if node.raw(cx.src) == Some(s.as_str()) && yaml11_bool(s).is_some() => {
            yaml11_bool(s)
        }
        Value::Str(s) if matches!(s.as_str(), "true" | "false") => {
            cx.error(node, format!("`{field}` must be a boolean, not a string: write {field}: {s} (without quotes)"));
            None
        }
        _ => {
            cx.error(
                node,
                format!(
                    "`{field}` must be true or false, not {}{}",
                    node.kind(),
                    rules_hint(node)
                ),
            );
            None
        }
    }
}

/// `yes`, `No`, `ON`, `y`... (YAML 1.1 booleans).
fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// An integer field within `min..=max` (`range` describes it for the message, e.g. "1-65535").
pub(crate) fn integer(cx: &mut Cx, node: &Node, field: &str, min: i128, max: i128) -> Option<i128> {
    let value = match &node.value {
        Value::Int(i) => i128::from(*i),
        Value::UInt(u) => i128::from(*u),
        Value::Null => return None,
        Value::Invalid => {
            cx.already_reported();
            return None;
        }
        Value::Str(s) if s.trim().parse::<i128>().is_ok() => {
            cx.error(
                node,
                format!(
                    "`{field}` must be a number, not a string: write {field}: {} (without quotes)",
                    s.trim()
                ),
            );
            return None;
        }
        _ => {
            cx.error(
                node,
                format!(
                    "`{field}` must be an integer ({min}-{max}), not {}{}",
                    node.kind(),
                    rules_hint(node)
                ),
            );
            return None;
        }
    };
    if value < min || value > max {
        cx.error(
            node,
            format!("`{field}` must be between {min} and {max}, not {value}"),
        );
        return None;
    }
    Some(value)
}

/// A number field (integers or decimals).
pub(crate) fn number(cx: &mut Cx, node: &Node, field: &str) -> Option<f64> {
    match &node.value {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Float(f) if f.is_finite() => Some(*f),
        Value::Null => None,
        Value::Invalid => {
            cx.already_reported();
            None
        }
        Value::Str(s) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
            cx.error(
                node,
                format!(
                    "`{field}` must be a number, not a string: write {field}: {} (without quotes)",
                    s.trim()
                ),
            );
            None
        }
        _ => {
            cx.error(
                node,
                format!(
                    "`{field}` must be a number, not {}{}",
                    node.kind(),
                    rules_hint(node)
                ),
            );
            None
        }
    }
}

/// A list field. A single scalar where a list is expected gets the hint to write `[x]`.
pub(crate) fn list<'n>(cx: &mut Cx, node: &'n Node, field: &str) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        Value::Null => None,
        Value::Invalid => {
            cx.already_reported();
            None
        }
        Value::Map(_) => {
            // A rule written without its `- ` under `ingress:` is not a lost key.
            let hint = if matches!(field, "ingress" | "egress") {
                ""
            } else {
                rules_hint(node)
            };
            cx.error(
                node,
                format!("`{field}` must be a list, not a mapping{hint}"),
            );
            None
        }
        _ => {
            let raw = cx.raw(node);
            cx.error(
                node,
                format!(
                    "`{field}` must be a list, not {}: write {field}: [{raw}]",
                    node.kind()
                ),
            );
            None
        }
    }
}

/// A list with at most `max` entries (Calico's API limits).
pub(crate) fn bounded_list<'n>(
    cx: &mut Cx,
    node: &'n Node,
    field: &str,
    max: usize,
) -> Option<&'n [Node]> {
    let items = list(cx, node, field)?;
    if items.len() > max {
        cx.error(
            node,
            format!(
                "`{field}` has {} entries; at most {max} are allowed",
                items.len()
            ),
        );
    }
    Some(items)
}

/// A mapping of string keys to string values (labels, annotations), in file order.
pub(crate) fn string_map<'n>(
    cx: &mut Cx,
    node: &'n Node,
    field: &str,
) -> Vec<(&'n Key, &'n Node, &'n str)> {
    let entries = match &node.value {
        Value::Map(entries) => entries,
        Value::Null => return Vec::new(),
        Value::Invalid => {
            cx.already_reported();
            return Vec::new();
        }
        _ => {
            cx.error(
                node,
                format!(
                    "`{field}` must be a mapping of strings to strings, not {}{}",
                    node.kind(),
                    rules_hint(node)
                ),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match &value.value {
            Value::Str(s) => out.push((key, value, s.as_str())),
            Value::Invalid => cx.already_reported(),
            Value::Null => cx.error(
                value,
                format!("{field} values must be strings, and `{}` has none: for an empty value write {}: \"\"", key.text, key.text),
            ),
            Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
                let raw = cx.raw(value);
                cx.error(
                    value,
                    format!(
                        "{field} values must be strings, and YAML reads `{raw}` as {}: write {}: {}",
                        value.kind(),
                        key.text,
                        yaml_quote(&raw)
                    ),
                );
            }
            _ => cx.error(value, format!("{field} values must be strings, not {}", value.kind())),
        }
    }
    out
}
