//! Diagnostics for people: `FILE:LINE:COL: error: MESSAGE`, one per line, all of them in one run.
//!
//! Every message is made safe here, once, whoever wrote it ([`clean`]): a diagnostic repeats what the
//! files say, and the files may say anything. Control characters (and Unicode's bidirectional
//! overrides) are escaped, so a policy name such as `"\e[2J…\n"` cannot clear a terminal or forge a
//! line of `check`'s output, a `status` reply or the journal; a quoted value longer than
//! [`MAX_QUOTED`] characters is cut with an ellipsis and its length (a 200 MiB scalar is not repeated
//! whole on stderr, in `status.json` and in the log), and a whole message longer than [`MAX_MESSAGE`]
//! characters too. What `status`, the log and `reload`'s reply keep of a long list of diagnostics is
//! [`kept`]: the first [`MAX_KEPT`] and a count of the rest.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use crate::config::model::Pos;

/// The longest quoted value (between backquotes, double or single quotes) a message repeats whole.
pub const MAX_QUOTED: usize = 80;
/// The longest message (after quoted values are cut).
pub const MAX_MESSAGE: usize = 2_000;
/// How many diagnostics `status`, `status.json`, the log and `reload`'s reply keep ([`kept`]).
pub const MAX_KEPT: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `None` for problems that belong to no file position (an unreadable directory, say).
    pub pos: Option<Pos>,
    /// Made safe by the constructors ([`clean`]); [`Display`](fmt::Display) cleans it again, so a
    /// message set directly is safe to print too.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic with its message made safe ([`clean`]).
    pub fn new(severity: Severity, pos: Option<Pos>, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match clean(&message) {
            Cow::Borrowed(_) => message,
            Cow::Owned(cleaned) => cleaned,
        };
        Diagnostic {
            severity,
            pos,
            message,
        }
    }
    pub fn error(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Error, Some(pos), message)
    }
    pub fn warning(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Warning, Some(pos), message)
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let message = clean(&self.message);
        match &self.pos {
            Some(pos) => {
                let pos = pos.to_string();
                write!(f, "{}: {sev}: {message}", escape(&pos))
            }
            None => write!(f, "hostpolicyd: {sev}: {message}"),
        }
    }
}

/// Sort diagnostics into file order (file name, line, column), errors and warnings interleaved.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| a.pos.cmp(&b.pos));
}

/// What `status`, `status.json`, the log and `reload`'s reply keep of `diags`: the first [`MAX_KEPT`]
/// as text, then one line counting the rest (`hostpolicyd check` prints them all).
pub fn kept<'a>(diags: impl IntoIterator<Item = &'a Diagnostic>) -> Vec<String> {
    let mut out = Vec::new();
    let mut more = 0usize;
    for d in diags {
        if out.len() < MAX_KEPT {
            out.push(d.to_string());
        } else {
            more += 1;
        }
    }
    if more > 0 {
        out.push(more_line(more));
    }
    out
}

/// The line that stands for `more` diagnostics left out.
pub fn more_line(more: usize) -> String {
    format!(
        "hostpolicyd: note: {more} more diagnostic{} not shown; `hostpolicyd check` lists them all",
        if more == 1 { "" } else { "s" }
    )
}

/// Whether `c` is printed escaped: control characters, and the format characters that reorder or
/// hide text (bidirectional overrides and isolates, zero-width marks).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if unsafe_char(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// `text` with control characters escaped (`\n`, `\t`, `\u{1b}`...), nothing cut: for names and
/// other short values printed outside a diagnostic.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// A message made safe to print: control characters escaped, quoted values longer than
/// [`MAX_QUOTED`] characters cut (`` `aaaa…` (209715200 characters) ``), the whole cut at
/// [`MAX_MESSAGE`] characters. Idempotent; borrows when nothing needs to change. Linear in the
/// message's length, and what it builds is bounded whatever that length.
pub fn clean(message: &str) -> Cow<'_, str> {
    if !needs_cleaning(message) {
        return Cow::Borrowed(message);
    }
    let mut out = Out::default();
    // Per quote character: no closing quote at or after this byte (so that no opener scans again).
    let mut no_close_from = [usize::MAX; 3];
    let mut prev: Option<char> = None;
    let mut i = 0;
    while i < message.len() && !out.full() {
        let c = message[i..].chars().next().unwrap_or_default();
        let q = match c {
            '`' => Some(0),
            '"' => Some(1),
            '\'' if !prev.is_some_and(char::is_alphanumeric) => Some(2),
            _ => None,
        };
        if let Some(q) = q.filter(|&q| i < no_close_from[q]) {
            match closing(message, i, c as u8) {
                Some(end) => {
                    let inner = &message[i + 1..end];
                    out.push(c);
                    if inner.chars().nth(MAX_QUOTED).is_some() {
                        // The ellipsis is one of the MAX_QUOTED: cleaning again changes nothing.
                        for ch in inner.chars().take(MAX_QUOTED - 1) {
                            out.push_escaped(ch);
                        }
                        out.push('…');
                        out.push(c);
                        out.push_str(&format!(" ({} characters)", inner.chars().count()));
                    } else {
                        for ch in inner.chars() {
                            out.push_escaped(ch);
                        }
                        out.push(c);
                    }
                    prev = Some(c);
                    i = end + 1;
                    continue;
                }
                None => no_close_from[q] = i,
            }
        }
        out.push_escaped(c);
        prev = Some(c);
        i += c.len_utf8();
    }
    let text = if out.full() || out.chars > MAX_MESSAGE {
        // Room for the note, so that the result is at most MAX_MESSAGE long (cleaning it again
        // changes nothing).
        let cut: String = out.text.chars().take(MAX_MESSAGE - 50).collect();
        format!(
            "{cut}… (message of {} characters cut)",
            message.chars().count()
        )
    } else {
        out.text
    };
    if text == message {
        Cow::Borrowed(message)
    } else {
        Cow::Owned(text)
    }
}

/// Whether [`clean`] may change `message`: an unsafe character, a message too long, or a quoted
/// value that may be (a quote and more than [`MAX_QUOTED`] characters).
fn needs_cleaning(message: &str) -> bool {
    message.len() > MAX_MESSAGE
        || message.chars().any(unsafe_char)
        || (message.len() > MAX_QUOTED && message.contains(['`', '"', '\'']))
}

/// [`clean`]'s output, counted as it grows and never longer than a little over [`MAX_MESSAGE`].
#[derive(Default)]
struct Out {
    text: String,
    chars: usize,
}

impl Out {
    fn full(&self) -> bool {
        self.chars > MAX_MESSAGE
    }
    fn push(&mut self, c: char) {
        self.text.push(c);
        self.chars += 1;
    }
    fn push_str(&mut self, s: &str) {
        self.text.push_str(s);
        self.chars += s.chars().count();
    }
    fn push_escaped(&mut self, c: char) {
        let before = self.text.len();
        push_escaped(&mut self.text, c);
        // Escapes are ASCII: one character per byte.
        self.chars += if unsafe_char(c) {
            self.text.len() - before
        } else {
            1
        };
    }
}

/// The byte index of the quote that closes the one at `open`: the next `q` (a double quote not
/// escaped with `\`, a single quote not followed by a letter or digit, as in "the node's").
fn closing(message: &str, open: usize, q: u8) -> Option<usize> {
    let bytes = message.as_bytes();
    let mut j = open + 1;
    while j < bytes.len() {
        if bytes[j] == q {
            let ok = match q {
                b'"' => bytes[j - 1] != b'\\',
                b'\'' => message[j + 1..]
                    .chars()
                    .next()
                    .is_none_or(|n| !n.is_alphanumeric()),
                _ => true,
            };
            if ok {
                return Some(j);
            }
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pos() -> Pos {
        Pos {
            file: Arc::from("a.yaml"),
            line: 3,
            column: 7,
        }
    }

    #[test]
    fn ordinary_messages_are_left_alone() {
        for m in [
            "GlobalNetworkPolicy name `Bad` is not valid: names are lowercase DNS labels",
            "the node's address 'x' isn't \"quoted\" here",
            "",
        ] {
            assert!(matches!(clean(m), Cow::Borrowed(_)), "{m}");
        }
    }

    #[test]
    fn a_huge_quoted_value_is_cut_with_an_ellipsis_and_its_length() {
        let value = "a".repeat(5_000_000);
        let d = Diagnostic::error(
            pos(),
            format!("selector `{value}` is not valid: expected `==`"),
        );
        let text = d.to_string();
        assert_eq!(
            text,
            format!(
                "a.yaml:3:7: error: selector `{}…` (5000000 characters) is not valid: expected `==`",
                "a".repeat(79)
            )
        );
        assert_eq!(d.message.len(), text.len() - "a.yaml:3:7: error: ".len());
        // Double and single quotes as well; a value of exactly MAX_QUOTED characters is kept.
        let long = "b".repeat(81);
        let exact = "c".repeat(80);
        let m = clean(&format!("x \"{long}\" y '{long}' z `{exact}`")).into_owned();
        assert_eq!(
            m,
            format!(
                "x \"{}…\" (81 characters) y '{}…' (81 characters) z `{exact}`",
                "b".repeat(79),
                "b".repeat(79)
            )
        );
        assert_eq!(clean(&m), m, "idempotent");
    }

    #[test]
    fn control_characters_cannot_forge_a_line_or_clear_the_terminal() {
        let d = Diagnostic::error(
            pos(),
            "GlobalNetworkPolicy name `\u{1b}[2J\nb.yaml:1:1: error: forged` is not valid\t\u{202e}x",
        );
        let text = d.to_string();
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        assert_eq!(
            text,
            "a.yaml:3:7: error: GlobalNetworkPolicy name `\\u{1b}[2J\\nb.yaml:1:1: error: forged` is not \
             valid\\t\\u{202e}x"
        );
        // Set directly (not through a constructor): printed safely all the same; the file name too.
        let raw = Diagnostic {
            severity: Severity::Warning,
            pos: Some(Pos {
                file: Arc::from("x\u{1b}[31m.yaml"),
                line: 1,
                column: 1,
            }),
            message: "a\rb".into(),
        };
        assert_eq!(raw.to_string(), "x\\u{1b}[31m.yaml:1:1: warning: a\\rb");
    }

    #[test]
    fn a_long_message_is_cut() {
        let m = "word ".repeat(1_000);
        let c = clean(&m);
        let tail = "… (message of 5000 characters cut)";
        assert!(c.ends_with(tail), "{c}");
        assert_eq!(c.chars().count(), MAX_MESSAGE - 50 + tail.chars().count());
        assert_eq!(clean(&c), c, "idempotent");
        // A long message of ordinary text with quotes and apostrophes is not changed.
        let m = format!("{} `a` 'b' \"c\" the node's", "word ".repeat(30));
        assert!(matches!(clean(&m), Cow::Borrowed(_)));
    }

    #[test]
    fn cleaning_is_linear_with_many_unclosed_quotes() {
        // Every `'` and `"` opens and none closes: without the memo this is quadratic.
        let m = "'x \"".repeat(200_000);
        let c = clean(&m);
        assert!(c.len() <= MAX_MESSAGE * 2 + 64);
    }

    #[test]
    fn kept_keeps_the_first_and_counts_the_rest() {
        let diags: Vec<Diagnostic> = (0..MAX_KEPT + 7)
            .map(|i| Diagnostic::error(pos(), format!("problem {i}")))
            .collect();
        let k = kept(&diags);
        assert_eq!(k.len(), MAX_KEPT + 1);
        assert_eq!(k[0], "a.yaml:3:7: error: problem 0");
        assert_eq!(
            k[MAX_KEPT],
            "hostpolicyd: note: 7 more diagnostics not shown; `hostpolicyd check` lists them all"
        );
        assert_eq!(kept(&diags[..3]).len(), 3);
    }
}
