//! The Calico selector language (spec §2): parser, AST, evaluator and canonical printer.
//!
//! A selector such as `role == 'db' && !has(legacy)` picks objects by their labels. This module
//! turns selector text into an [`Expr`] tree, evaluates it against a label map, and prints it
//! back in one canonical form so that other stages can use the text as a key.
//!
//! The accepted language is exactly Calico's (libcalico-go `selector/tokenizer` + `parser`):
//!
//! - whitespace is only space and TAB; a line break anywhere is an error;
//! - labels are 1..=512 characters of `[A-Za-z0-9_./-]`;
//! - string literals are single- or double-quoted, without escapes;
//! - `has(`, `all(` and `global(` must be written without a space before `(`;
//! - word operators (`in`, `not in`/`notin`, `contains`, `starts with`/`startswith`,
//!   `ends with`/`endswith`) are only recognised right after a label, so a label may itself be
//!   called `in`, `all` or `has`;
//! - precedence, tightest first: match operators, `( … )`, `!`, `&&`, `||`;
//! - an empty or blank selector is `all()`.
//!
//! Errors carry a 0-based offset in *characters* into the selector text, pointing at the token
//! that is wrong, and a message that says what would be right. Operators copy selectors from
//! documentation, so the messages recognise the usual mistakes (`key: value`, `key = value`,
//! unquoted values, typographic quotes, `has (x)`) and spell out the corrected text.
//!
//! The canonical form follows Calico's own `String()` output: values in double quotes (single
//! quotes if the value contains `"`), `&&`/`||` groups in parentheses, sets sorted and
//! deduplicated, `not in` / `starts with` / `ends with` spelled out. One deliberate difference:
//! double negation is removed everywhere (Calico only collapses consecutive `!` tokens), so that
//! printing and re-parsing always gives back the same tree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Longest label name the tokenizer accepts (Calico's `[a-zA-Z0-9_./-]{1,512}`).
pub const MAX_LABEL_LEN: usize = 512;

/// Deepest parenthesis nesting we accept. Calico has no limit, but a 1024-character selector
/// (the API limit) cannot nest deeper than 512, and the cap keeps the recursive parser from
/// overflowing the stack on hostile input.
pub const MAX_NESTING: usize = 512;

const NEGATION_HINT: &str = "to negate a test write `!` instead of `not`, e.g. `!has(label)`";

const LINE_BREAK_MESSAGE: &str = "selectors cannot contain a line break; in YAML use a plain or \
                                  quoted scalar, not `|`";

/// Comparison of a label's value with one string literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CmpOp {
    /// `==`: the label is present and equal.
    Eq,
    /// `!=`: the label is absent or different.
    Ne,
    /// `contains`: the label is present and contains the string.
    Contains,
    /// `starts with`: the label is present and starts with the string.
    StartsWith,
    /// `ends with`: the label is present and ends with the string.
    EndsWith,
}

impl CmpOp {
    /// The operator as written in canonical text.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Contains => "contains",
            CmpOp::StartsWith => "starts with",
            CmpOp::EndsWith => "ends with",
        }
    }

    fn holds(self, actual: Option<&String>, value: &str) -> bool {
        match (self, actual) {
            // `!=` is the only comparison that is true for an absent label.
            (CmpOp::Ne, None) => true,
            (_, None) => false,
            (CmpOp::Eq, Some(v)) => v == value,
            (CmpOp::Ne, Some(v)) => v != value,
            (CmpOp::Contains, Some(v)) => v.contains(value),
            (CmpOp::StartsWith, Some(v)) => v.starts_with(value),
            (CmpOp::EndsWith, Some(v)) => v.ends_with(value),
        }
    }
}

/// Membership of a label's value in a set literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetOp {
    /// `in`: the label is present and its value is in the set.
    In,
    /// `not in`: the label is absent or its value is not in the set.
    NotIn,
}

impl SetOp {
    /// The operator as written in canonical text.
    pub fn as_str(self) -> &'static str {
        match self {
            SetOp::In => "in",
            SetOp::NotIn => "not in",
        }
    }
}

/// A parsed selector expression.
///
/// The parser never produces `Not(Not(_))`, nor `And`/`Or` with fewer than two operands;
/// parentheses leave no node behind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `all()` (also the empty selector).
    All,
    /// `global()`: true as a label test; its scope meaning is the caller's business (spec §2.4).
    Global,
    /// `has(label)`.
    Has(String),
    /// `label OP "value"`.
    Cmp {
        label: String,
        op: CmpOp,
        value: String,
    },
    /// `label in {…}` / `label not in {…}`; the set is sorted and deduplicated.
    Set {
        label: String,
        op: SetOp,
        values: BTreeSet<String>,
    },
    /// `!expr`.
    Not(Box<Expr>),
    /// `a && b && …` (two or more operands).
    And(Vec<Expr>),
    /// `a || b || …` (two or more operands).
    Or(Vec<Expr>),
}

impl Expr {
    /// Evaluates the expression against a label map (spec §2.3).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has(label) => labels.contains_key(label),
            Expr::Cmp { label, op, value } => op.holds(labels.get(label), value),
            Expr::Set { label, op, values } => match (op, labels.get(label)) {
                (SetOp::In, Some(v)) => values.contains(v),
                (SetOp::In, None) => false,
                (SetOp::NotIn, Some(v)) => !values.contains(v),
                (SetOp::NotIn, None) => true,
            },
            Expr::Not(inner) => !inner.matches(labels),
            Expr::And(terms) => terms.iter().all(|t| t.matches(labels)),
            Expr::Or(terms) => terms.iter().any(|t| t.matches(labels)),
        }
    }

    /// Whether `global()` appears anywhere in the expression.
    pub fn contains_global(&self) -> bool {
        match self {
            Expr::Global => true,
            Expr::Not(inner) => inner.contains_global(),
            Expr::And(terms) | Expr::Or(terms) => terms.iter().any(Expr::contains_global),
            _ => false,
        }
    }

    /// `!self`, removing a double negation instead of stacking it.
    pub fn negate(self) -> Expr {
        match self {
            Expr::Not(inner) => *inner,
            other => Expr::Not(Box::new(other)),
        }
    }

    fn write_canonical(&self, out: &mut String) {
        match self {
            Expr::All => out.push_str("all()"),
            Expr::Global => out.push_str("global()"),
            Expr::Has(label) => {
                out.push_str("has(");
                out.push_str(label);
                out.push(')');
            }
            Expr::Cmp { label, op, value } => {
                out.push_str(label);
                out.push(' ');
                out.push_str(op.as_str());
                out.push(' ');
                push_quoted(out, value);
            }
            Expr::Set { label, op, values } => {
                out.push_str(label);
                out.push(' ');
                out.push_str(op.as_str());
                out.push_str(" {");
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    push_quoted(out, value);
                }
                out.push('}');
            }
            Expr::Not(inner) => {
                out.push('!');
                inner.write_canonical(out);
            }
            Expr::And(terms) => write_group(out, terms, " && "),
            Expr::Or(terms) => write_group(out, terms, " || "),
        }
    }
}

/// Calico prints every `&&`/`||` group in parentheses, which keeps the printer trivially correct
/// whatever the nesting.
fn write_group(out: &mut String, terms: &[Expr], joiner: &str) {
    out.push('(');
    for (i, term) in terms.iter().enumerate() {
        if i > 0 {
            out.push_str(joiner);
        }
        term.write_canonical(out);
    }
    out.push(')');
}

/// Double quotes unless the value holds one (a value cannot hold both kinds: there are no escapes).
fn push_quoted(out: &mut String, value: &str) {
    let quote = if value.contains('"') { '\'' } else { '"' };
    out.push(quote);
    out.push_str(value);
    out.push(quote);
}

/// A parsed selector: its expression tree and the text it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    expr: Expr,
    source: String,
}

impl Selector {
    /// The `all()` selector.
    pub fn all() -> Selector {
        Selector {
            expr: Expr::All,
            source: "all()".to_string(),
        }
    }

    /// Whether the labels satisfy the selector (spec §2.3).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.expr.matches(labels)
    }

    /// Empty or blank text, or `all()` on its own (parentheses around it do not matter).
    pub fn is_all(&self) -> bool {
        self.expr == Expr::All
    }

    /// Whether `global()` appears anywhere in the expression.
    ///
    /// This is a test on the parsed tree. Calico's CEL rule for top-level selectors is a
    /// substring test on the raw text; use `source().contains("global(")` for that.
    pub fn contains_global(&self) -> bool {
        self.expr.contains_global()
    }

    /// The whole selector is `global()` (parentheses and double negation around it do not
    /// matter).
    pub fn is_global(&self) -> bool {
        self.expr == Expr::Global
    }

    /// Canonical text; parsing it gives back the same tree.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.expr.write_canonical(&mut out);
        out
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The expression tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// A syntax error in a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    /// 0-based index in CHARACTERS (not bytes) into the selector text where the problem is.
    pub offset: usize,
    /// What is wrong and, where a user likely copied a known mistake, what to write instead.
    pub message: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SelectorError {}

/// Parses selector text. An empty or blank selector is `all()`.
pub fn parse(input: &str) -> Result<Selector, SelectorError> {
    let expr = Parser::new(input).parse_selector()?;
    Ok(Selector {
        expr,
        source: input.to_string(),
    })
}

/// Whether `c` may appear in a label name.
pub fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Quote characters that word processors and web pages substitute for ASCII quotes.
fn is_fancy_quote(c: char) -> bool {
    matches!(
        c,
        '\u{2018}'
            | '\u{2019}'
            | '\u{201A}'
            | '\u{201B}'
            | '\u{201C}'
            | '\u{201D}'
            | '\u{201E}'
            | '\u{201F}'
            | '\u{2032}'
            | '\u{2033}'
            | '\u{00AB}'
            | '\u{00BB}'
            | '\u{00B4}'
            | '`'
    )
}

/// What came before the test being parsed; used only to word "expected a test" errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Start,
    AfterAnd,
    AfterOr,
    AfterNot,
    AfterParen,
}

impl Ctx {
    fn after(self) -> &'static str {
        match self {
            Ctx::Start => "",
            Ctx::AfterAnd => " after `&&`",
            Ctx::AfterOr => " after `||`",
            Ctx::AfterNot => " after `!`",
            Ctx::AfterParen => " after `(`",
        }
    }
}

type PResult<T> = Result<T, SelectorError>;

fn err<T>(offset: usize, message: impl Into<String>) -> PResult<T> {
    Err(SelectorError {
        offset,
        message: message.into(),
    })
}

/// A recursive-descent parser working on characters, so that every position is a character
/// offset and no slicing can split a UTF-8 sequence.
///
/// Calico tokenizes first and parses afterwards; the only context its tokenizer uses is
/// "the previous token was a label", which here is simply the point right after a label in
/// [`Parser::parse_label_test`]. Lexing while parsing lets errors name what was expected at
/// that point, which a token stream alone cannot.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// Open parentheses around the current position.
    depth: usize,
}

impl Parser {
    fn new(input: &str) -> Parser {
        Parser {
            chars: input.chars().collect(),
            pos: 0,
            depth: 0,
        }
    }

    // ----- character-level helpers -----

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn at(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c))
    }

    /// Skips spaces and tabs; returns whether there were any.
    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn text(&self, from: usize, to: usize) -> String {
        self.chars
            .get(from..to.min(self.chars.len()))
            .map(|cs| cs.iter().collect())
            .unwrap_or_default()
    }

    /// End of the run of label characters starting at `from`.
    fn label_end(&self, from: usize) -> usize {
        let mut end = from;
        while self.chars.get(end).copied().is_some_and(is_label_char) {
            end += 1;
        }
        end
    }

    /// End of an unquoted value a user meant as a literal (`k == true`, `k: prod-1`): everything
    /// up to whitespace or selector punctuation.
    fn bare_value_end(&self, from: usize) -> usize {
        let mut end = from;
        while self
            .chars
            .get(end)
            .is_some_and(|&c| !is_ws(c) && !"()&|,{}'\"!=".contains(c) && !is_fancy_quote(c))
        {
            end += 1;
        }
        end
    }

    /// The closing quote of a literal opened at `open`, if any.
    fn closing_quote(&self, open: usize) -> Option<usize> {
        let quote = *self.chars.get(open)?;
        (open + 1..self.chars.len()).find(|&i| self.chars[i] == quote)
    }

    /// The text between typographic quotes opened at `open`, for the "use ASCII quotes" hint.
    fn fancy_quoted_text(&self, open: usize) -> Option<String> {
        let close = (open + 1..self.chars.len()).find(|&i| is_fancy_quote(self.chars[i]))?;
        Some(self.text(open + 1, close))
    }

    /// A short description of what is at `pos`, for "found …" in messages.
    fn describe(&self, pos: usize) -> String {
        let Some(&c) = self.chars.get(pos) else {
            return "the end of the selector".to_string();
        };
        if is_label_char(c) {
            let word = self.text(pos, self.label_end(pos));
            return format!("`{}`", truncate(&word, 40));
        }
        if c == '\'' || c == '"' {
            return "a quoted string".to_string();
        }
        let two = self.text(pos, pos + 2);
        if matches!(two.as_str(), "==" | "!=" | "&&" | "||") {
            return format!("`{two}`");
        }
        describe_char(c)
    }

    /// Messages for characters that are never valid outside a string literal, whatever was
    /// expected: they are almost always pasted from a document.
    fn stray_char_message(&self, pos: usize) -> Option<String> {
        let c = *self.chars.get(pos)?;
        if is_fancy_quote(c) {
            return Some(format!(
                "{} is not a quote character in selectors; use ASCII quotes ' or \"",
                describe_char(c)
            ));
        }
        if c.is_whitespace() && !is_ws(c) {
            return Some(format!(
                "{} is not allowed; only spaces and tabs may separate tokens",
                describe_char(c)
            ));
        }
        None
    }

    // ----- grammar -----

    fn parse_selector(&mut self) -> PResult<Expr> {
        if let Some(pos) = self.chars.iter().position(|&c| c == '\n' || c == '\r') {
            return err(pos, LINE_BREAK_MESSAGE);
        }
        self.skip_ws();
        if self.peek().is_none() {
            return Ok(Expr::All);
        }
        let expr = self.parse_or(Ctx::Start)?;
        self.skip_ws();
        if self.peek().is_some() {
            return Err(self.leftover_error());
        }
        Ok(expr)
    }

    fn parse_or(&mut self, ctx: Ctx) -> PResult<Expr> {
        let first = self.parse_and(ctx)?;
        let mut rest = Vec::new();
        loop {
            self.skip_ws();
            if !self.at("||") {
                break;
            }
            self.pos += 2;
            rest.push(self.parse_and(Ctx::AfterOr)?);
        }
        Ok(combine(first, rest, Expr::Or))
    }

    fn parse_and(&mut self, ctx: Ctx) -> PResult<Expr> {
        let first = self.parse_unary(ctx)?;
        let mut rest = Vec::new();
        loop {
            self.skip_ws();
            if !self.at("&&") {
                break;
            }
            self.pos += 2;
            rest.push(self.parse_unary(Ctx::AfterAnd)?);
        }
        Ok(combine(first, rest, Expr::And))
    }

    /// Any number of `!`, collapsed by parity, then one primary.
    fn parse_unary(&mut self, mut ctx: Ctx) -> PResult<Expr> {
        let mut negated = false;
        self.skip_ws();
        while self.peek() == Some('!') {
            // `!=` is one token (read greedily), and it needs a label on its left.
            if self.peek_at(1) == Some('=') {
                return err(
                    self.pos,
                    "`!=` needs a label on its left: write `label != 'value'`",
                );
            }
            self.pos += 1;
            negated = !negated;
            ctx = Ctx::AfterNot;
            self.skip_ws();
        }
        let expr = self.parse_primary(ctx)?;
        Ok(if negated { expr.negate() } else { expr })
    }

    fn parse_primary(&mut self, ctx: Ctx) -> PResult<Expr> {
        match self.peek() {
            Some('(') => self.parse_paren(),
            Some(c) if is_label_char(c) => {
                if self.at("has(") {
                    self.parse_has()
                } else if self.at("all(") {
                    self.parse_no_arg_function("all", Expr::All)
                } else if self.at("global(") {
                    self.parse_no_arg_function("global", Expr::Global)
                } else {
                    self.parse_label_test()
                }
            }
            Some('\'' | '"') => Err(self.literal_on_left_error()),
            _ => Err(self.expected_test_error(ctx)),
        }
    }

    fn parse_paren(&mut self) -> PResult<Expr> {
        let open = self.pos;
        if self.depth >= MAX_NESTING {
            return err(
                open,
                format!("parentheses are nested more than {MAX_NESTING} deep"),
            );
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(')') {
            return err(
                open,
                "empty parentheses `()`: put a test inside them or remove them",
            );
        }
        self.depth += 1;
        let expr = self.parse_or(Ctx::AfterParen)?;
        self.skip_ws();
        match self.peek() {
            Some(')') => {
                self.pos += 1;
                self.depth -= 1;
                Ok(expr)
            }
            None => err(open, "this `(` is never closed: add a `)`"),
            Some(_) => Err(self.leftover_error()),
        }
    }

    /// `has(` ws label ws `)`.
    fn parse_has(&mut self) -> PResult<Expr> {
        self.pos += "has(".len();
        self.skip_ws();
        let start = self.pos;
        let end = self.label_end(start);
        if end == start {
            return Err(self.has_without_label_error());
        }
        let label = self.take_label(start, end)?;
        self.pos = end;
        self.skip_ws();
        match self.peek() {
            Some(')') => {
                self.pos += 1;
                Ok(Expr::Has(label))
            }
            None => err(
                self.pos,
                format!("`has(` is never closed: write `has({label})`"),
            ),
            Some(_) => err(
                self.pos,
                format!(
                    "expected `)` after the label in `has({label})`, found {}",
                    self.describe(self.pos)
                ),
            ),
        }
    }

    fn has_without_label_error(&self) -> SelectorError {
        let pos = self.pos;
        let message = match self.peek() {
            Some(')') => "`has()` needs a label name: write `has(label)`".to_string(),
            Some('\'' | '"') => {
                let inner = self
                    .closing_quote(pos)
                    .map(|close| self.text(pos + 1, close))
                    .filter(|s| !s.is_empty() && s.chars().all(is_label_char))
                    .unwrap_or_else(|| "label".to_string());
                format!("the label name in `has(…)` is not quoted: write `has({inner})`")
            }
            None => "`has(` is never closed: write `has(label)`".to_string(),
            Some(_) => self.stray_char_message(pos).unwrap_or_else(|| {
                format!(
                    "expected a label name in `has(…)`, found {}",
                    self.describe(pos)
                )
            }),
        };
        SelectorError {
            offset: pos,
            message,
        }
    }

    /// `all(` ws `)` and `global(` ws `)`.
    fn parse_no_arg_function(&mut self, name: &str, expr: Expr) -> PResult<Expr> {
        self.pos += name.len() + 1;
        self.skip_ws();
        match self.peek() {
            Some(')') => {
                self.pos += 1;
                Ok(expr)
            }
            None => err(
                self.pos,
                format!("`{name}(` is never closed: write `{name}()`"),
            ),
            Some(_) => err(
                self.pos,
                format!(
                    "`{name}()` takes no argument, found {}: write `{name}()`",
                    self.describe(self.pos)
                ),
            ),
        }
    }

    fn take_label(&self, start: usize, end: usize) -> PResult<String> {
        let len = end - start;
        if len > MAX_LABEL_LEN {
            return err(
                start,
                format!("label name is {len} characters long; the maximum is {MAX_LABEL_LEN}"),
            );
        }
        Ok(self.text(start, end))
    }

    /// `label OP 'value'` or `label in {…}`; the cursor is on the label.
    fn parse_label_test(&mut self) -> PResult<Expr> {
        let start = self.pos;
        let end = self.label_end(start);
        let label = self.take_label(start, end)?;
        self.pos = end;
        let ws_start = self.pos;
        let had_ws = self.skip_ws();
        let op_pos = self.pos;
        match self.peek() {
            Some('=') if self.peek_at(1) == Some('=') => {
                self.pos += 2;
                self.parse_cmp_value(label, CmpOp::Eq)
            }
            Some('!') if self.peek_at(1) == Some('=') => {
                self.pos += 2;
                self.parse_cmp_value(label, CmpOp::Ne)
            }
            Some('(') if had_ws && matches!(label.as_str(), "has" | "all" | "global") => {
                Err(self.space_before_paren_error(&label, ws_start))
            }
            Some(c) if is_label_char(c) => self.parse_word_operator(label),
            _ => Err(self.missing_operator_error(&label, op_pos)),
        }
    }

    /// A word operator after a label: `in`, `not in`, `notin`, `contains`, `starts with`,
    /// `startswith`, `ends with`, `endswith`. A word ends where label characters end, which is
    /// Calico's word boundary.
    fn parse_word_operator(&mut self, label: String) -> PResult<Expr> {
        let start = self.pos;
        let end = self.label_end(start);
        let word = self.text(start, end);
        self.pos = end;
        let (first, second) = match word.as_str() {
            "in" => return self.parse_set(label, SetOp::In),
            "notin" => return self.parse_set(label, SetOp::NotIn),
            "contains" => return self.parse_cmp_value(label, CmpOp::Contains),
            "startswith" => return self.parse_cmp_value(label, CmpOp::StartsWith),
            "endswith" => return self.parse_cmp_value(label, CmpOp::EndsWith),
            "not" => ("not", "in"),
            "starts" => ("starts", "with"),
            "ends" => ("ends", "with"),
            _ => return Err(self.unknown_word_operator_error(&label, &word, start)),
        };
        self.skip_ws();
        let second_start = self.pos;
        let second_end = self.label_end(second_start);
        if self.text(second_start, second_end) != second {
            return err(
                second_start,
                format!(
                    "expected `{second}` after `{first}`, found {}: write `{label} {first} {second} …`",
                    self.describe(second_start)
                ),
            );
        }
        self.pos = second_end;
        match first {
            "not" => self.parse_set(label, SetOp::NotIn),
            "starts" => self.parse_cmp_value(label, CmpOp::StartsWith),
            _ => self.parse_cmp_value(label, CmpOp::EndsWith),
        }
    }

    /// The quoted value after a comparison operator.
    fn parse_cmp_value(&mut self, label: String, op: CmpOp) -> PResult<Expr> {
        self.skip_ws();
        match self.peek() {
            Some('\'' | '"') => {
                let value = self.parse_string()?;
                Ok(Expr::Cmp { label, op, value })
            }
            _ => Err(self.bad_cmp_value_error(&label, op)),
        }
    }

    /// A string literal; the cursor is on the opening quote.
    fn parse_string(&mut self) -> PResult<String> {
        let open = self.pos;
        let Some(close) = self.closing_quote(open) else {
            let quote = self.peek().unwrap_or('\'');
            return err(
                open,
                format!(
                    "this string is never closed: add a closing `{quote}` (there are no escapes)"
                ),
            );
        };
        self.pos = close + 1;
        Ok(self.text(open + 1, close))
    }

    /// `{` [string {`,` string} [`,`]] `}` after `in` / `not in`.
    fn parse_set(&mut self, label: String, op: SetOp) -> PResult<Expr> {
        self.skip_ws();
        if self.peek() != Some('{') {
            return Err(self.missing_set_error(&label, op));
        }
        let open = self.pos;
        self.pos += 1;
        let mut values = BTreeSet::new();
        self.skip_ws();
        if self.peek() == Some('}') {
            self.pos += 1;
            return Ok(Expr::Set { label, op, values });
        }
        loop {
            self.skip_ws();
            match self.peek() {
                Some('\'' | '"') => {
                    values.insert(self.parse_string()?);
                }
                _ => return Err(self.bad_set_member_error(open)),
            }
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.pos += 1;
                    self.skip_ws();
                    // A trailing comma before `}` is allowed.
                    if self.peek() == Some('}') {
                        self.pos += 1;
                        break;
                    }
                }
                Some('}') => {
                    self.pos += 1;
                    break;
                }
                None => return err(open, "this `{` is never closed: add a `}`"),
                Some(_) => {
                    return err(
                        self.pos,
                        format!(
                            "expected `,` or `}}` in the set, found {}",
                            self.describe(self.pos)
                        ),
                    )
                }
            }
        }
        Ok(Expr::Set { label, op, values })
    }

    // ----- error construction -----

    /// `has (x)`, `all ()`, `global ()`: Calico reads the word as a label, then chokes on `(`.
    fn space_before_paren_error(&self, name: &str, ws_start: usize) -> SelectorError {
        // Only `has` takes an argument; reuse the user's label when it is a plain one.
        let inner = if name == "has" {
            self.chars
                .iter()
                .skip(self.pos + 1)
                .position(|&c| c == ')')
                .map(|n| self.text(self.pos + 1, self.pos + 1 + n))
                .map(|s| s.trim_matches(is_ws).to_string())
                .filter(|s| !s.is_empty() && s.chars().all(is_label_char))
                .unwrap_or_else(|| "label".to_string())
        } else {
            String::new()
        };
        SelectorError {
            offset: ws_start,
            message: format!("no space is allowed before `(`: write `{name}({inner})`"),
        }
    }

    /// A label followed by something that is not an operator (`:`, `=`, another word, the end…).
    fn missing_operator_error(&self, label: &str, pos: usize) -> SelectorError {
        let found = self.describe(pos);
        let message = match self.peek() {
            Some(':') => {
                let value = self.value_after(pos + 1);
                format!(
                    "expected operator after label `{label}`, found `:`; to match the value \
                     write `{}`, or `has({label})` to match any value",
                    suggest_cmp(label, "==", value.as_deref().unwrap_or("value"))
                )
            }
            Some('=') => {
                let value = self.value_after(pos + 1);
                format!(
                    "`=` is not an operator; use `==`: write `{}`",
                    suggest_cmp(label, "==", value.as_deref().unwrap_or("value"))
                )
            }
            Some('\'' | '"') => {
                let value = self.value_after(pos);
                format!(
                    "expected operator after label `{label}`, found a quoted string: write `{}`",
                    suggest_cmp(label, "==", value.as_deref().unwrap_or("value"))
                )
            }
            Some('(') if label == "not" => NEGATION_HINT.to_string(),
            Some('(') => format!(
                "expected operator after label `{label}`, found `(`; the only functions are \
                 `has(label)`, `all()` and `global()`"
            ),
            Some('{') => format!(
                "expected operator after label `{label}`, found `{{`: write `{label} in {{'value'}}`"
            ),
            Some(c) if is_fancy_quote(c) => {
                let value = self.fancy_quoted_text(pos);
                format!(
                    "expected operator after label `{label}`, found {}: use ASCII quotes and \
                     write `{}`",
                    describe_char(c),
                    suggest_cmp(label, "==", value.as_deref().unwrap_or("value"))
                )
            }
            _ => self.stray_char_message(pos).unwrap_or_else(|| {
                // A bare label where a test ends is most likely meant as "has this label".
                let at_test_end =
                    self.peek().is_none() || self.at("&&") || self.at("||") || self.at(")");
                let hint = if at_test_end {
                    format!("; to test only that the label exists write `has({label})`")
                } else {
                    String::new()
                };
                format!(
                    "expected operator after label `{label}` (`==`, `!=`, `in`, `not in`, \
                     `contains`, `starts with` or `ends with`), found {found}{hint}"
                )
            }),
        };
        SelectorError {
            offset: pos,
            message,
        }
    }

    /// The value the user most likely meant after `:` or `=` (quoted or not), for hints.
    fn value_after(&self, from: usize) -> Option<String> {
        let mut pos = from;
        while self.chars.get(pos).copied().is_some_and(is_ws) {
            pos += 1;
        }
        match self.chars.get(pos).copied() {
            Some('\'' | '"') => {
                let close = self.closing_quote(pos)?;
                Some(self.text(pos + 1, close))
            }
            Some(c) if is_fancy_quote(c) => self.fancy_quoted_text(pos),
            Some(_) => {
                let end = self.bare_value_end(pos);
                (end > pos).then(|| self.text(pos, end))
            }
            None => None,
        }
    }

    fn unknown_word_operator_error(&self, label: &str, word: &str, pos: usize) -> SelectorError {
        const OPERATORS: [&str; 8] = [
            "in",
            "notin",
            "not",
            "contains",
            "starts",
            "startswith",
            "ends",
            "endswith",
        ];
        let lower = word.to_ascii_lowercase();
        let message = if OPERATORS.contains(&lower.as_str()) {
            format!("operators are lowercase: write `{lower}`")
        } else if label == "not" {
            NEGATION_HINT.to_string()
        } else {
            format!(
                "expected operator after label `{label}` (`==`, `!=`, `in`, `not in`, `contains`, \
                 `starts with` or `ends with`), found `{}`",
                truncate(word, 40)
            )
        };
        SelectorError {
            offset: pos,
            message,
        }
    }

    /// The operand of `==`, `!=`, `contains`, … is not a string literal.
    fn bad_cmp_value_error(&self, label: &str, op: CmpOp) -> SelectorError {
        let pos = self.pos;
        let op_text = op.as_str();
        let message = match self.peek() {
            Some(c) if is_fancy_quote(c) => {
                let value = self.fancy_quoted_text(pos);
                format!(
                    "{} is not a quote character in selectors; use ASCII quotes: write `{}`",
                    describe_char(c),
                    suggest_cmp(label, op_text, value.as_deref().unwrap_or("value"))
                )
            }
            Some('{') => format!(
                "`{op_text}` takes one quoted value, not a set; to match any of several values \
                 write `{label} in {{'a', 'b'}}`"
            ),
            Some(_) if self.bare_value_end(pos) > pos => {
                let value = self.text(pos, self.bare_value_end(pos));
                format!(
                    "the value must be a quoted string: write `{}`",
                    suggest_cmp(label, op_text, &value)
                )
            }
            None => format!(
                "expected a quoted value after `{op_text}`: write `{}`",
                suggest_cmp(label, op_text, "value")
            ),
            Some(_) => self.stray_char_message(pos).unwrap_or_else(|| {
                format!(
                    "expected a quoted value after `{op_text}`, found {}: write `{}`",
                    self.describe(pos),
                    suggest_cmp(label, op_text, "value")
                )
            }),
        };
        SelectorError {
            offset: pos,
            message,
        }
    }

    fn missing_set_error(&self, label: &str, op: SetOp) -> SelectorError {
        let pos = self.pos;
        let op_text = op.as_str();
        let example = match self.value_after(pos) {
            Some(value) => format!("{label} {op_text} {{{}}}", quote_for_hint(&value)),
            None => format!("{label} {op_text} {{'a', 'b'}}"),
        };
        let message = match self.peek() {
            Some('(' | '[') => format!(
                "sets are written in braces with quoted members: write `{label} {op_text} {{{}}}`",
                self.members_in_brackets(pos)
                    .unwrap_or_else(|| "'a', 'b'".to_string())
            ),
            Some(c) if is_fancy_quote(c) => format!(
                "{} is not a quote character in selectors; use ASCII quotes: write `{example}`",
                describe_char(c)
            ),
            _ => format!(
                "expected a set in braces after `{op_text}`, found {}: write `{example}`",
                self.describe(pos)
            ),
        };
        SelectorError {
            offset: pos,
            message,
        }
    }

    /// For Kubernetes-style `k in (a, b)`, the members re-quoted: `'a', 'b'`.
    fn members_in_brackets(&self, open: usize) -> Option<String> {
        let close = (open + 1..self.chars.len()).find(|&i| matches!(self.chars[i], ')' | ']'))?;
        let inner = self.text(open + 1, close);
        let members: Vec<String> = inner
            .split(',')
            .map(|m| m.trim_matches(|c: char| is_ws(c) || c == '\'' || c == '"'))
            .filter(|m| !m.is_empty())
            .map(quote_for_hint)
            .collect();
        (!members.is_empty()).then(|| members.join(", "))
    }

    fn bad_set_member_error(&self, open: usize) -> SelectorError {
        let pos = self.pos;
        let message = match self.peek() {
            None => {
                return SelectorError {
                    offset: open,
                    message: "this `{` is never closed: add a `}`".to_string(),
                }
            }
            Some(',') => "empty set member: remove the extra `,`".to_string(),
            Some(c) if is_fancy_quote(c) => format!(
                "{} is not a quote character in selectors; use ASCII quotes ' or \"",
                describe_char(c)
            ),
            Some(_) if self.bare_value_end(pos) > pos => {
                let value = self.text(pos, self.bare_value_end(pos));
                format!(
                    "set members must be quoted strings: write `{}`",
                    quote_for_hint(&value)
                )
            }
            Some(_) => format!(
                "expected a quoted value in the set, found {}",
                self.describe(pos)
            ),
        };
        SelectorError {
            offset: pos,
            message,
        }
    }

    /// A test starting with a string literal: `'v' == k`.
    fn literal_on_left_error(&self) -> SelectorError {
        let pos = self.pos;
        let swapped = self.swapped_comparison(pos);
        let message = match swapped {
            Some(fixed) => format!(
                "the quoted value must be on the right of the operator, the label on the left: \
                 write `{fixed}`"
            ),
            None => "a test cannot start with a quoted string; the quoted value must be on the \
                     right of the operator, the label on the left: write `label == 'value'`"
                .to_string(),
        };
        SelectorError {
            offset: pos,
            message,
        }
    }

    /// For `'v' OP label`, the corrected `label OP 'v'`.
    fn swapped_comparison(&self, open: usize) -> Option<String> {
        let close = self.closing_quote(open)?;
        let value = self.text(open + 1, close);
        let mut pos = close + 1;
        let skip = |mut p: usize| {
            while self.chars.get(p).copied().is_some_and(is_ws) {
                p += 1;
            }
            p
        };
        pos = skip(pos);
        let op = self.text(pos, pos + 2);
        if op != "==" && op != "!=" {
            return None;
        }
        pos = skip(pos + 2);
        let end = self.label_end(pos);
        (end > pos).then(|| suggest_cmp(&self.text(pos, end), &op, &value))
    }

    /// Where a test was expected but something else is.
    fn expected_test_error(&self, ctx: Ctx) -> SelectorError {
        let pos = self.pos;
        let message = match self.peek() {
            None => format!(
                "expected a test{} (such as `has(label)` or `label == 'value'`), found the end \
                 of the selector",
                ctx.after()
            ),
            Some('&') if !self.at("&&") => "a single `&` is not an operator: use `&&`".to_string(),
            Some('|') if !self.at("||") => "a single `|` is not an operator: use `||`".to_string(),
            Some('&' | '|') => format!(
                "expected a test{}, found {}; `&&` and `||` need a test on each side",
                ctx.after(),
                self.describe(pos)
            ),
            Some('=') => "`==` needs a label on its left: write `label == 'value'`".to_string(),
            Some(')') => format!("expected a test{}, found `)`", ctx.after()),
            Some(_) => self.stray_char_message(pos).unwrap_or_else(|| {
                format!(
                    "expected a test{} (such as `has(label)`, `label == 'value'`, `!` or `(`), \
                     found {}",
                    ctx.after(),
                    self.describe(pos)
                )
            }),
        };
        SelectorError {
            offset: pos,
            message,
        }
    }

    /// Something after a complete test that is neither `&&`, `||`, nor (inside parentheses) `)`.
    fn leftover_error(&self) -> SelectorError {
        let pos = self.pos;
        let word = self.text(pos, self.label_end(pos));
        let message = match self.peek() {
            Some('&') if !self.at("&&") => "a single `&` is not an operator: use `&&`".to_string(),
            Some('|') if !self.at("||") => "a single `|` is not an operator: use `||`".to_string(),
            Some(')') if self.depth == 0 => "unmatched `)`".to_string(),
            _ if word.eq_ignore_ascii_case("and") => "to combine tests use `&&`".to_string(),
            _ if word.eq_ignore_ascii_case("or") => "to combine tests use `||`".to_string(),
            Some(',') => "tests are not separated by `,`: to require both use `&&`".to_string(),
            Some(_) => self.stray_char_message(pos).unwrap_or_else(|| {
                let expected = if self.depth > 0 {
                    "`&&`, `||` or `)`"
                } else {
                    "`&&`, `||` or the end of the selector"
                };
                format!(
                    "expected {expected} after a complete test, found {}",
                    self.describe(pos)
                )
            }),
            None => "unexpected end of the selector".to_string(),
        };
        SelectorError {
            offset: pos,
            message,
        }
    }
}

fn combine(first: Expr, mut rest: Vec<Expr>, group: fn(Vec<Expr>) -> Expr) -> Expr {
    if rest.is_empty() {
        first
    } else {
        rest.insert(0, first);
        group(rest)
    }
}

/// `label OP 'value'` for hints, choosing a quote the value does not contain.
fn suggest_cmp(label: &str, op: &str, value: &str) -> String {
    format!("{label} {op} {}", quote_for_hint(value))
}

/// Hints use single quotes (they survive inside YAML double-quoted scalars), unless the value
/// contains one.
fn quote_for_hint(value: &str) -> String {
    if value.contains('\'') {
        format!("\"{value}\"")
    } else {
        format!("'{value}'")
    }
}

fn describe_char(c: char) -> String {
    if c == '`' {
        // Markdown would swallow a backtick between backticks.
        return "a backtick (`)".to_string();
    }
    let name = match c {
        '\u{00A0}' => ", a no-break space",
        '\u{2018}'..='\u{201F}' | '\u{00AB}' | '\u{00BB}' => ", a typographic quote",
        _ => "",
    };
    if name.is_empty() && (c.is_ascii_graphic() || (!c.is_ascii() && c.is_alphanumeric())) {
        format!("`{c}`")
    } else {
        format!("`{}` (U+{:04X}{name})", c.escape_debug(), c as u32)
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let head: String = s.chars().take(max_chars).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ok(input: &str) -> Selector {
        match parse(input) {
            Ok(sel) => sel,
            Err(e) => panic!(
                "{input:?} should parse, got error at {}: {}",
                e.offset, e.message
            ),
        }
    }

    fn bad(input: &str) -> SelectorError {
        match parse(input) {
            Ok(sel) => panic!(
                "{input:?} should be rejected, parsed as {}",
                sel.canonical()
            ),
            Err(e) => e,
        }
    }

    fn canon(input: &str) -> String {
        ok(input).canonical()
    }

    /// Asserts the error is at `offset` and its message contains every one of `parts`.
    fn assert_err(input: &str, offset: usize, parts: &[&str]) {
        let e = bad(input);
        assert_eq!(
            e.offset, offset,
            "offset for {input:?} (message: {})",
            e.message
        );
        for part in parts {
            assert!(
                e.message.contains(part),
                "message for {input:?} should contain {part:?}, got {:?}",
                e.message
            );
        }
    }

    // ----- spec §2.5, one test per row -----

    #[test]
    fn row_colon_true_is_invalid_with_hint() {
        assert_err(
            "nodeport-external-ingress: true",
            25,
            &[
                "expected operator after label",
                "write `nodeport-external-ingress == 'true'`",
                "has(nodeport-external-ingress)",
            ],
        );
    }

    #[test]
    fn row_unquoted_true_is_invalid() {
        assert_err(
            "nodeport-external-ingress == true",
            29,
            &["the value must be a quoted string: write `nodeport-external-ingress == 'true'`"],
        );
    }

    #[test]
    fn row_quoted_true_matches_only_the_string_true() {
        let sel = ok("nodeport-external-ingress == 'true'");
        assert!(sel.matches(&labels(&[("nodeport-external-ingress", "true")])));
        assert!(!sel.matches(&labels(&[("nodeport-external-ingress", "True")])));
        assert!(!sel.matches(&labels(&[("nodeport-external-ingress", "")])));
        assert!(!sel.matches(&labels(&[])));
        assert_eq!(sel.canonical(), "nodeport-external-ingress == \"true\"");
    }

    #[test]
    fn row_has_ignores_the_value() {
        let sel = ok("has(nodeport-external-ingress)");
        assert!(sel.matches(&labels(&[("nodeport-external-ingress", "false")])));
        assert!(sel.matches(&labels(&[("nodeport-external-ingress", "")])));
        assert!(!sel.matches(&labels(&[("other", "true")])));
    }

    #[test]
    fn row_space_before_paren_is_invalid() {
        assert_err(
            "has (kubernetes-host)",
            3,
            &["no space is allowed before `(`: write `has(kubernetes-host)`"],
        );
        assert_err(
            "all ()",
            3,
            &["no space is allowed before `(`: write `all()`"],
        );
        assert_err(
            "global\t()",
            6,
            &["no space is allowed before `(`: write `global()`"],
        );
        assert_err("has (x)", 3, &["write `has(x)`"]);
    }

    #[test]
    fn row_spaces_inside_has_are_fine() {
        let sel = ok("has( kubernetes-host )");
        assert_eq!(sel.canonical(), "has(kubernetes-host)");
        assert_eq!(canon("all(  )"), "all()");
        assert_eq!(canon("global(\t)"), "global()");
    }

    #[test]
    fn row_negated_has_parses() {
        // Quoting for YAML is the loader's business; the selector itself is fine.
        let sel = ok("!has(a)");
        assert!(!sel.matches(&labels(&[("a", "")])));
        assert!(sel.matches(&labels(&[("b", "")])));
        assert_eq!(sel.canonical(), "!has(a)");
    }

    #[test]
    fn row_double_negation_is_has() {
        assert_eq!(ok("!!has(a)").expr(), ok("has(a)").expr());
        assert_eq!(canon("!!has(a)"), "has(a)");
        assert_eq!(canon("! ! !has(a)"), "!has(a)");
    }

    #[test]
    fn row_empty_sets() {
        let in_empty = ok("role in {}");
        let not_in_empty = ok("role not in {}");
        for l in [
            labels(&[]),
            labels(&[("role", "")]),
            labels(&[("role", "x")]),
        ] {
            assert!(!in_empty.matches(&l));
            assert!(not_in_empty.matches(&l));
        }
        assert_eq!(in_empty.canonical(), "role in {}");
        assert_eq!(not_in_empty.canonical(), "role not in {}");
    }

    #[test]
    fn row_trailing_comma_in_set() {
        let sel = ok("a in {'x', }");
        assert_eq!(sel.canonical(), "a in {\"x\"}");
        assert!(sel.matches(&labels(&[("a", "x")])));
    }

    #[test]
    fn row_double_quoted_value_with_apostrophe() {
        let sel = ok("a == \"it's\"");
        assert!(sel.matches(&labels(&[("a", "it's")])));
        assert_eq!(sel.canonical(), "a == \"it's\"");
        let sel = ok("a == 'say \"hi\"'");
        assert!(sel.matches(&labels(&[("a", "say \"hi\"")])));
        assert_eq!(sel.canonical(), "a == 'say \"hi\"'");
    }

    #[test]
    fn row_notin_and_startswith_spellings() {
        assert_eq!(canon("a notin {'x'}"), "a not in {\"x\"}");
        assert_eq!(canon("a startswith 'p'"), "a starts with \"p\"");
        assert_eq!(canon("a endswith 'p'"), "a ends with \"p\"");
    }

    #[test]
    fn row_not_binds_to_one_test() {
        let sel = ok("!a == 'b' || c == 'd'");
        let expected = Expr::Or(vec![
            Expr::Not(Box::new(Expr::Cmp {
                label: "a".into(),
                op: CmpOp::Eq,
                value: "b".into(),
            })),
            Expr::Cmp {
                label: "c".into(),
                op: CmpOp::Eq,
                value: "d".into(),
            },
        ]);
        assert_eq!(sel.expr(), &expected);
        assert_eq!(sel.canonical(), "(!a == \"b\" || c == \"d\")");
        assert_eq!(canon("!a in {'x'}"), "!a in {\"x\"}");
    }

    #[test]
    fn row_docs_example_precedence() {
        let sel =
            ok("! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}");
        assert_eq!(
            sel.canonical(),
            "(!has(my-label) || (my-label starts with \"prod\" && role in {\"business\", \"frontend\"}))"
        );
        assert!(sel.matches(&labels(&[])));
        assert!(sel.matches(&labels(&[("my-label", "prod-1"), ("role", "frontend")])));
        assert!(!sel.matches(&labels(&[("my-label", "prod-1"), ("role", "db")])));
        assert!(!sel.matches(&labels(&[("my-label", "dev"), ("role", "frontend")])));
    }

    #[test]
    fn row_invalid_forms() {
        for input in ["'b1' == b", "b == b", "b", "a b", "()", "(a == \"x\""] {
            bad(input);
        }
        assert_err(
            "'b1' == b",
            0,
            &["must be on the right", "write `b == 'b1'`"],
        );
        assert_err(
            "b == b",
            5,
            &["the value must be a quoted string: write `b == 'b'`"],
        );
        assert_err("b", 1, &["expected operator after label `b`", "has(b)"]);
        assert_err(
            "a b",
            2,
            &["expected operator after label `a`", "found `b`"],
        );
        assert_err("()", 0, &["empty parentheses"]);
        assert_err("(a == \"x\"", 0, &["never closed"]);
    }

    #[test]
    fn row_blank_selectors_are_all() {
        for input in ["", "   ", "\t", " \t "] {
            let sel = ok(input);
            assert!(sel.is_all(), "{input:?}");
            assert_eq!(sel.canonical(), "all()");
            assert_eq!(sel.source(), input);
            assert!(sel.matches(&labels(&[])));
        }
    }

    #[test]
    fn row_line_break_is_invalid() {
        let msg =
            "selectors cannot contain a line break; in YAML use a plain or quoted scalar, not `|`";
        assert_err("has(a)\n", 6, &[msg]);
        assert_err("a == 'x'\r\n", 8, &[msg]);
        assert_err("a ==\n'x'", 4, &[msg]);
        // Even inside a literal: a label value cannot hold a line break anyway.
        assert_err("a == 'x\ny'", 7, &[msg]);
        assert_err("\n", 0, &[msg]);
    }

    #[test]
    fn row_global_at_top_level_parses_but_is_flagged() {
        // The CEL rejection belongs to validation; the parser reports what it saw.
        let sel = ok("global()");
        assert!(sel.is_global());
        assert!(sel.contains_global());
        assert!(!sel.is_all());
        assert!(sel.matches(&labels(&[])));
    }

    // ----- spec §2.3 evaluation table -----

    #[test]
    fn eval_all_and_global_always_true() {
        for input in ["all()", "global()", ""] {
            assert!(ok(input).matches(&labels(&[])));
            assert!(ok(input).matches(&labels(&[("a", "b")])));
        }
    }

    #[test]
    fn eval_has() {
        let sel = ok("has(k)");
        assert!(sel.matches(&labels(&[("k", "")])));
        assert!(sel.matches(&labels(&[("k", "v")])));
        assert!(!sel.matches(&labels(&[("K", "v")])));
    }

    #[test]
    fn eval_eq_and_ne() {
        let eq = ok("k == 'v'");
        let ne = ok("k != 'v'");
        let cases = [
            (labels(&[]), false, true),
            (labels(&[("k", "v")]), true, false),
            (labels(&[("k", "w")]), false, true),
            (labels(&[("k", "")]), false, true),
            (labels(&[("other", "v")]), false, true),
        ];
        for (l, eq_result, ne_result) in cases {
            assert_eq!(eq.matches(&l), eq_result, "== on {l:?}");
            assert_eq!(ne.matches(&l), ne_result, "!= on {l:?}");
        }
    }

    #[test]
    fn eval_in_and_not_in() {
        let is_in = ok("k in {'a', 'b'}");
        let not_in = ok("k not in {'a', 'b'}");
        let cases = [
            (labels(&[]), false, true),
            (labels(&[("k", "a")]), true, false),
            (labels(&[("k", "b")]), true, false),
            (labels(&[("k", "c")]), false, true),
            (labels(&[("k", "")]), false, true),
        ];
        for (l, in_result, not_in_result) in cases {
            assert_eq!(is_in.matches(&l), in_result, "in on {l:?}");
            assert_eq!(not_in.matches(&l), not_in_result, "not in on {l:?}");
        }
        assert!(ok("k in {''}").matches(&labels(&[("k", "")])));
    }

    #[test]
    fn eval_contains_starts_ends() {
        let contains = ok("k contains 'ro'");
        let starts = ok("k starts with 'pro'");
        let ends = ok("k ends with 'od'");
        let absent = labels(&[]);
        assert!(!contains.matches(&absent));
        assert!(!starts.matches(&absent));
        assert!(!ends.matches(&absent));
        let prod = labels(&[("k", "prod")]);
        assert!(contains.matches(&prod));
        assert!(starts.matches(&prod));
        assert!(ends.matches(&prod));
        let dev = labels(&[("k", "dev")]);
        assert!(!contains.matches(&dev));
        assert!(!starts.matches(&dev));
        assert!(!ends.matches(&dev));
        // The empty string is a substring, prefix and suffix of every present value.
        for input in ["k contains ''", "k starts with ''", "k ends with ''"] {
            assert!(ok(input).matches(&labels(&[("k", "")])));
            assert!(!ok(input).matches(&absent));
        }
    }

    #[test]
    fn eval_boolean_logic() {
        let a = labels(&[("a", "1")]);
        let b = labels(&[("b", "1")]);
        let ab = labels(&[("a", "1"), ("b", "1")]);
        let and = ok("has(a) && has(b)");
        let or = ok("has(a) || has(b)");
        let not = ok("!(has(a) && has(b))");
        assert!(!and.matches(&a) && !and.matches(&b) && and.matches(&ab));
        assert!(or.matches(&a) && or.matches(&b) && !or.matches(&labels(&[])));
        assert!(not.matches(&a) && !not.matches(&ab));
        assert!(!ok("!all()").matches(&a));
        assert!(!ok("!global()").matches(&a));
    }

    // ----- lexical rules §2.1 -----

    #[test]
    fn whitespace_is_optional_between_punctuation() {
        let sel = ok("a=='b'&&!has(c)");
        assert_eq!(sel.canonical(), "(a == \"b\" && !has(c))");
        assert_eq!(canon("a!='b'||(c in{'x'})"), "(a != \"b\" || c in {\"x\"})");
        assert_eq!(canon("\ta\t==\t'b'\t"), "a == \"b\"");
        assert_eq!(canon("a contains'x'"), "a contains \"x\"");
        assert_eq!(canon("a in{'x'}"), "a in {\"x\"}");
    }

    #[test]
    fn label_characters_and_length() {
        assert_eq!(canon("a.b/c_d-E9 == 'x'"), "a.b/c_d-E9 == \"x\"");
        assert_eq!(
            canon("has(projectcalico.org/namespace)"),
            "has(projectcalico.org/namespace)"
        );
        let longest = "a".repeat(MAX_LABEL_LEN);
        ok(&format!("has({longest})"));
        ok(&format!("{longest} == 'x'"));
        let too_long = "a".repeat(MAX_LABEL_LEN + 1);
        assert_err(&format!("has({too_long})"), 4, &["maximum is 512"]);
        assert_err(
            &format!("x == 'y' && {too_long} == 'x'"),
            12,
            &["maximum is 512"],
        );
    }

    #[test]
    fn labels_may_be_named_like_keywords() {
        assert_eq!(canon("in in {'x'}"), "in in {\"x\"}");
        assert_eq!(canon("all == 'x'"), "all == \"x\"");
        assert_eq!(canon("has == 'x'"), "has == \"x\"");
        assert_eq!(canon("global != 'x'"), "global != \"x\"");
        assert_eq!(canon("not not in {}"), "not not in {}");
        assert_eq!(canon("contains contains 'x'"), "contains contains \"x\"");
        assert_eq!(canon("has(in)"), "has(in)");
        assert!(ok("all == 'x'").matches(&labels(&[("all", "x")])));
    }

    #[test]
    fn word_operators_need_a_boundary_and_lowercase() {
        assert_err(
            "a inx {'x'}",
            2,
            &["expected operator after label `a`", "`inx`"],
        );
        assert_err("a in-x {'x'}", 2, &["`in-x`"]);
        assert_err("a containsx 'x'", 2, &["`containsx`"]);
        assert_err("a IN {'x'}", 2, &["operators are lowercase: write `in`"]);
        assert_err("a Contains 'x'", 2, &["write `contains`"]);
        assert_err("a not inn {'x'}", 6, &["expected `in` after `not`"]);
        assert_err("a starts 'x'", 9, &["expected `with` after `starts`"]);
        assert_err("a ends wit 'x'", 7, &["expected `with` after `ends`"]);
        // A label and an operator merge into one label without whitespace between them.
        assert_err("ain {'x'}", 4, &["expected operator after label `ain`"]);
    }

    #[test]
    fn word_operator_spellings() {
        assert_eq!(canon("a not\t in {}"), "a not in {}");
        assert_eq!(canon("a starts\twith 'x'"), "a starts with \"x\"");
        assert_eq!(canon("a ends  with 'x'"), "a ends with \"x\"");
        assert_eq!(canon("a not in{'x'}"), "a not in {\"x\"}");
    }

    #[test]
    fn lone_punctuation_is_an_error() {
        assert_err("a = 'b'", 2, &["use `==`", "write `a == 'b'`"]);
        assert_err("a='b'", 1, &["use `==`", "write `a == 'b'`"]);
        assert_err("a = b", 2, &["use `==`", "write `a == 'b'`"]);
        assert_err("has(a) & has(b)", 7, &["use `&&`"]);
        assert_err("has(a) | has(b)", 7, &["use `||`"]);
        assert_err("has(a) && & has(b)", 10, &["use `&&`"]);
        assert_err("has(a) && | has(b)", 10, &["use `||`"]);
    }

    #[test]
    fn not_equal_is_read_greedily() {
        assert_eq!(canon("a!='b'"), "a != \"b\"");
        assert_err("!= 'b'", 0, &["`!=` needs a label on its left"]);
        assert_err("!!='b'", 1, &["`!=` needs a label on its left"]);
        assert_err("a ! = 'b'", 2, &["expected operator after label `a`"]);
    }

    #[test]
    fn string_literals() {
        assert_eq!(canon("a == ''"), "a == \"\"");
        assert_eq!(canon("a == \"\""), "a == \"\"");
        assert_eq!(canon("a == 'x && y || (z)'"), "a == \"x && y || (z)\"");
        assert_eq!(canon("a == 'ü ‘x’'"), "a == \"ü ‘x’\"");
        assert_err("a == 'x", 5, &["never closed", "'"]);
        assert_err("a in {'x", 6, &["never closed"]);
    }

    // ----- grammar §2.2 -----

    #[test]
    fn structural_errors() {
        assert_err(
            "has(a) &&",
            9,
            &["expected a test after `&&`", "end of the selector"],
        );
        assert_err("has(a) ||", 9, &["after `||`"]);
        assert_err("&& has(a)", 0, &["expected a test", "`&&`"]);
        assert_err("!", 1, &["after `!`"]);
        assert_err("( )", 0, &["empty parentheses"]);
        assert_err("has(a))", 6, &["unmatched `)`"]);
        assert_err("(has(a) has(b))", 8, &["`&&`, `||` or `)`"]);
        assert_err("has(a) has(b)", 7, &["`&&`, `||` or the end"]);
        assert_err("a == 'x' b == 'y'", 9, &["found `b`"]);
        assert_err("has(a) and has(b)", 7, &["use `&&`"]);
        assert_err("has(a) OR has(b)", 7, &["use `||`"]);
        assert_err("has()", 4, &["needs a label name"]);
        assert_err("has('a')", 4, &["not quoted: write `has(a)`"]);
        assert_err("has(a", 5, &["never closed"]);
        assert_err("has(a b)", 6, &["expected `)`"]);
        assert_err("all(x)", 4, &["takes no argument"]);
        assert_err("global(", 7, &["never closed"]);
        assert_err("foo(x)", 3, &["the only functions are"]);
        assert_err("a == {'x'}", 5, &["not a set", "a in {'a', 'b'}"]);
        assert_err("a in 'x'", 5, &["braces", "write `a in {'x'}`"]);
        assert_err("a in ('x', 'y')", 5, &["braces"]);
        assert_err("a in", 4, &["expected a set in braces"]);
        assert_err("a in {,}", 6, &["remove the extra `,`"]);
        assert_err("a in {'x',,}", 10, &["remove the extra `,`"]);
        assert_err("a in {'x' 'y'}", 10, &["expected `,` or `}`"]);
        assert_err(
            "a in {x}",
            6,
            &["set members must be quoted strings: write `'x'`"],
        );
        assert_err(
            "env in (prod, 'dev')",
            7,
            &["write `env in {'prod', 'dev'}`"],
        );
        assert_err("env notin [prod]", 10, &["write `env not in {'prod'}`"]);
        assert_err("a == 'x', b == 'y'", 8, &["use `&&`"]);
        assert_err("not has(a)", 4, &["write `!` instead of `not`"]);
        assert_err("not (has(a))", 4, &["write `!` instead of `not`"]);
        ok("not == 'x'");
        assert_err("a > '1'", 2, &["found `>`"]);
        assert_err("a in {'x'", 5, &["never closed"]);
        assert_err("a ==", 4, &["expected a quoted value after `==`"]);
        assert_err("has(a) == 'x'", 7, &["found `==`"]);
        assert_err("a == 'x' == 'y'", 9, &["found `==`"]);
    }

    #[test]
    fn set_literals_sorted_and_deduplicated() {
        assert_eq!(
            canon("a in {'z', \"b\", 'z', 'a', 'b',}"),
            "a in {\"a\", \"b\", \"z\"}"
        );
        assert_eq!(ok("a in {'x','x'}").expr(), ok("a in {'x'}").expr());
        assert_eq!(
            canon("a in {'say \"hi\"', \"it's\"}"),
            "a in {\"it's\", 'say \"hi\"'}"
        );
    }

    #[test]
    fn grouping_and_negation_canonical_forms() {
        assert_eq!(canon("(has(a))"), "has(a)");
        assert_eq!(canon("((has(a)))"), "has(a)");
        assert_eq!(canon("!(!has(a))"), "has(a)");
        assert_eq!(canon("!(has(a) && has(b))"), "!(has(a) && has(b))");
        assert_eq!(
            canon("has(a) && has(b) && has(c)"),
            "(has(a) && has(b) && has(c))"
        );
        assert_eq!(
            canon("(has(a) && has(b)) && has(c)"),
            "((has(a) && has(b)) && has(c))"
        );
        assert_eq!(
            canon("has(a) || has(b) && has(c) || has(d)"),
            "(has(a) || (has(b) && has(c)) || has(d))"
        );
        assert_eq!(
            canon("(has(a) || has(b)) && has(c)"),
            "((has(a) || has(b)) && has(c))"
        );
    }

    #[test]
    fn is_all_is_global_contains_global() {
        assert!(Selector::all().is_all());
        assert!(Selector::default().is_all());
        assert_eq!(Selector::all().canonical(), "all()");
        assert!(ok("all()").is_all());
        assert!(ok(" ( all( ) ) ").is_all());
        assert!(!ok("!all()").is_all());
        assert!(!ok("all() && has(a)").is_all());
        assert!(ok("(global())").is_global());
        assert!(!ok("global() && has(a)").is_global());
        assert!(ok("global() && has(a)").contains_global());
        assert!(ok("has(a) || !(has(b) && global())").contains_global());
        assert!(!ok("has(a)").contains_global());
        assert!(!ok("a == 'global()'").contains_global());
        assert!(!Selector::all().contains_global());
    }

    #[test]
    fn display_source_and_from_str() {
        let sel: Selector = "a=='b'".parse().expect("valid selector");
        assert_eq!(sel.to_string(), "a == \"b\"");
        assert_eq!(sel.source(), "a=='b'");
        let e = bad("a = 'b'");
        assert_eq!(e.to_string(), e.message);
    }

    // ----- operator-facing hints -----

    #[test]
    fn hint_colon_generalises() {
        assert_err(
            "role: db",
            4,
            &[
                "expected operator after label `role`",
                "write `role == 'db'`",
                "`has(role)`",
            ],
        );
        assert_err("role: 'db'", 4, &["write `role == 'db'`"]);
        assert_err("role:", 4, &["write `role == 'value'`"]);
        assert_err("role:\"it's\"", 4, &["write `role == \"it's\"`"]);
    }

    #[test]
    fn hint_unquoted_values() {
        assert_err(
            "k == v",
            5,
            &["the value must be a quoted string: write `k == 'v'`"],
        );
        assert_err(
            "k == true",
            5,
            &["the value must be a quoted string: write `k == 'true'`"],
        );
        assert_err("k != 10.0.0.1", 5, &["write `k != '10.0.0.1'`"]);
        assert_err("k starts with prod", 14, &["write `k starts with 'prod'`"]);
        assert_err("(k == v)", 6, &["write `k == 'v'`"]);
    }

    #[test]
    fn hint_typographic_quotes() {
        assert_err(
            "nodeport-external-ingress == ‘true’",
            29,
            &[
                "ASCII quotes",
                "write `nodeport-external-ingress == 'true'`",
            ],
        );
        assert_err("a == “x”", 5, &["ASCII quotes", "write `a == 'x'`"]);
        assert_err(
            "a == `x`",
            5,
            &["a backtick (`)", "ASCII quotes", "write `a == 'x'`"],
        );
        assert_err("a in {‘x’}", 6, &["ASCII quotes"]);
        assert_err("a ‘x’", 2, &["ASCII quotes", "write `a == 'x'`"]);
        assert_err("‘a’ == 'x'", 0, &["ASCII quotes"]);
        assert_err("has(‘a’)", 4, &["ASCII quotes"]);
        assert_err("a in ‘x’", 5, &["ASCII quotes"]);
    }

    #[test]
    fn hint_literal_on_the_left() {
        assert_err("'v' == k", 0, &["must be on the right", "write `k == 'v'`"]);
        assert_err("has(a) && \"v\" != k", 10, &["write `k != 'v'`"]);
        assert_err("'v'", 0, &["must be on the right", "label == 'value'"]);
    }

    #[test]
    fn hint_odd_whitespace() {
        assert_err(
            "a\u{00A0}== 'x'",
            1,
            &["no-break space", "only spaces and tabs"],
        );
        assert_err("has(a)\u{3000}&& has(b)", 6, &["only spaces and tabs"]);
    }

    // ----- positions are in characters -----

    #[test]
    fn offsets_count_characters_not_bytes() {
        // "ü" is two bytes; the error is at character 13, byte 15.
        assert_err("a == 'üü' && ü", 13, &["expected a test after `&&`"]);
        assert_err("é == 'x'", 0, &["`é`"]);
        assert_err(
            "a == '日本' && b",
            14,
            &["expected operator after label `b`"],
        );
        assert_err("a == '🦀' || 🦀", 12, &["`🦀`"]);
    }

    #[test]
    fn control_characters_are_described_not_printed() {
        let e = bad("a == 'x' \u{0}");
        assert_eq!(e.offset, 9);
        assert!(e.message.contains("U+0000"), "{}", e.message);
    }

    // ----- robustness -----

    #[test]
    fn deep_nesting_up_to_the_limit() {
        let deep = format!(
            "{}has(a){}",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert_eq!(canon(&deep), "has(a)");
        let too_deep = format!(
            "{}has(a){}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert_err(&too_deep, MAX_NESTING, &["nested more than 512"]);
        let nested_and = format!(
            "{}has(a){}",
            "has(a) && (".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert!(ok(&nested_and).matches(&labels(&[("a", "")])));
        let nots = format!("{}has(a)", "!".repeat(100_001));
        assert_eq!(canon(&nots), "!has(a)");
    }

    #[test]
    fn long_and_flat_expressions() {
        let flat = vec!["has(a)"; 5_000].join(" || ");
        assert!(ok(&flat).matches(&labels(&[("a", "")])));
    }

    // ----- property tests -----

    /// Tokens that selectors are made of, plus near misses, so that random joins reach deep into
    /// the grammar.
    const TOKENS: &[&str] = &[
        "a",
        "b",
        "in",
        "has",
        "all",
        "global",
        "not",
        "x.y/z",
        "'x'",
        "\"y\"",
        "''",
        "'it\"s'",
        "\"it's\"",
        "'",
        "\"",
        "==",
        "!=",
        "=",
        "!",
        "&&",
        "||",
        "&",
        "|",
        "(",
        ")",
        "{",
        "}",
        ",",
        "has(",
        "all(",
        "global(",
        "has(a)",
        "all()",
        "global()",
        " in ",
        " not in ",
        " notin ",
        " contains ",
        " starts with ",
        " startswith ",
        " ends with ",
        " endswith ",
        "IN",
        ":",
        "‘",
        "”",
        "ü",
        "\u{00A0}",
        "\n",
    ];

    const KEYS: &[&str] = &["a", "b", "in", "has", "x.y/z", "not"];
    const VALUES: &[&str] = &["", "x", "y", "it\"s", "it's", "xy", "ü"];

    fn token_soup() -> impl Strategy<Value = String> {
        prop::collection::vec(
            (
                prop::sample::select(TOKENS),
                prop::sample::select(&["", " ", "\t"][..]),
            ),
            0..14,
        )
        .prop_map(|parts| {
            parts
                .into_iter()
                .map(|(tok, sep)| format!("{tok}{sep}"))
                .collect()
        })
    }

    fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(
            prop::sample::select(KEYS).prop_map(str::to_string),
            prop::sample::select(VALUES).prop_map(str::to_string),
            0..5,
        )
    }

    fn value() -> impl Strategy<Value = String> {
        prop::sample::select(VALUES).prop_map(str::to_string)
    }

    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(KEYS).prop_map(str::to_string),
            "[A-Za-z0-9_./-]{1,12}",
        ]
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop::sample::select(&["", " ", "\t", "  "][..])
    }

    /// A value in either kind of quote that can hold it.
    fn quoted_value() -> impl Strategy<Value = String> {
        (value(), any::<bool>()).prop_map(|(v, double)| {
            if v.contains('"') || (!double && !v.contains('\'')) {
                format!("'{v}'")
            } else {
                format!("\"{v}\"")
            }
        })
    }

    /// Valid selector text written in the many ways the grammar allows: optional and extra
    /// whitespace, both quote kinds, every operator spelling, redundant `!` and parentheses,
    /// duplicate set members and trailing commas.
    fn styled_selector() -> impl Strategy<Value = String> {
        let cmp = (
            label(),
            ws(),
            prop::sample::select(&["==", "!="][..]),
            ws(),
            quoted_value(),
        )
            .prop_map(|(l, w1, op, w2, v)| format!("{l}{w1}{op}{w2}{v}"));
        let word_cmp = (
            label(),
            prop::sample::select(
                &[
                    " contains ",
                    " starts with ",
                    " startswith",
                    "\tends\t with ",
                    " endswith ",
                ][..],
            ),
            ws(),
            quoted_value(),
        )
            .prop_map(|(l, op, w, v)| format!("{l}{op}{w}{v}"));
        let set = (
            label(),
            prop::sample::select(&[" in", " not in", " notin", "\tnot  in"][..]),
            ws(),
            prop::collection::vec(quoted_value(), 0..4),
            prop::sample::select(&["", ",", " , "][..]),
        )
            .prop_map(|(l, op, w, members, trailing)| {
                let trailing = if members.is_empty() { "" } else { trailing };
                format!("{l}{op}{w}{{{}{trailing}}}", members.join(", "))
            });
        let leaf = prop_oneof![
            ws().prop_map(|w| format!("all({w})")),
            ws().prop_map(|w| format!("global({w})")),
            (ws(), label(), ws()).prop_map(|(a, l, b)| format!("has({a}{l}{b})")),
            cmp,
            word_cmp,
            set,
        ];
        leaf.prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                (
                    prop::sample::select(&["!", "! ", "!!", "!\t!\t!"][..]),
                    inner.clone()
                )
                    .prop_map(|(neg, e)| format!("{neg}{e}")),
                (ws(), inner.clone(), ws()).prop_map(|(a, e, b)| format!("({a}{e}{b})")),
                (
                    inner.clone(),
                    prop::sample::select(&[" && ", "&&", "\t||\t", "||"][..]),
                    inner
                )
                    .prop_map(|(a, op, b)| format!("{a}{op}{b}")),
            ]
        })
    }

    /// Valid text with one character deleted, or one token inserted or substituted: near misses
    /// that exercise the error paths deep inside the grammar.
    fn near_miss() -> impl Strategy<Value = String> {
        (
            styled_selector(),
            any::<prop::sample::Index>(),
            prop::sample::select(TOKENS),
            0..3u8,
        )
            .prop_map(|(text, at, token, kind)| {
                let mut chars: Vec<char> = text.chars().collect();
                let i = at.index(chars.len() + 1);
                match kind {
                    0 if i < chars.len() => {
                        chars.remove(i);
                    }
                    1 if i < chars.len() => {
                        chars.splice(i..=i, token.chars());
                    }
                    _ => {
                        chars.splice(i..i, token.chars());
                    }
                }
                chars.into_iter().collect()
            })
    }

    /// Arbitrary trees, including shapes the parser never builds (`Not(Not(_))`, one-operand
    /// groups), which still have to print as text with the same meaning.
    fn expr() -> impl Strategy<Value = Expr> {
        let cmp_op = prop::sample::select(vec![
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Contains,
            CmpOp::StartsWith,
            CmpOp::EndsWith,
        ]);
        let set_op = prop::sample::select(vec![SetOp::In, SetOp::NotIn]);
        let leaf = prop_oneof![
            Just(Expr::All),
            Just(Expr::Global),
            label().prop_map(Expr::Has),
            (label(), cmp_op, value()).prop_map(|(label, op, value)| Expr::Cmp {
                label,
                op,
                value
            }),
            (label(), set_op, prop::collection::btree_set(value(), 0..4))
                .prop_map(|(label, op, values)| Expr::Set { label, op, values }),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
                prop::collection::vec(inner.clone(), 1..4).prop_map(Expr::And),
                prop::collection::vec(inner, 1..4).prop_map(Expr::Or),
            ]
        })
    }

    /// Parsing the canonical text gives the same tree, the same text and the same verdicts.
    fn check_round_trip(
        sel: &Selector,
        maps: &[BTreeMap<String, String>],
    ) -> Result<(), TestCaseError> {
        let text = sel.canonical();
        let again = parse(&text)
            .map_err(|e| TestCaseError::fail(format!("canonical {text:?} rejected: {e}")))?;
        prop_assert_eq!(again.canonical(), text.clone());
        prop_assert_eq!(again.expr(), sel.expr());
        for map in maps {
            prop_assert_eq!(
                again.matches(map),
                sel.matches(map),
                "{} on {:?}",
                text,
                map
            );
        }
        Ok(())
    }

    fn check_error_offset(input: &str, e: &SelectorError) -> Result<(), TestCaseError> {
        prop_assert!(
            e.offset <= input.chars().count(),
            "offset {} past end of {:?}",
            e.offset,
            input
        );
        prop_assert!(!e.message.is_empty());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(
            input in any::<String>(),
            maps in prop::collection::vec(label_map(), 4),
        ) {
            match parse(&input) {
                Ok(sel) => check_round_trip(&sel, &maps)?,
                Err(e) => check_error_offset(&input, &e)?,
            }
        }

        #[test]
        fn token_soup_never_panics_and_round_trips(
            input in token_soup(),
            maps in prop::collection::vec(label_map(), 4),
        ) {
            match parse(&input) {
                Ok(sel) => check_round_trip(&sel, &maps)?,
                Err(e) => check_error_offset(&input, &e)?,
            }
        }

        #[test]
        fn styled_selectors_parse_and_round_trip(
            input in styled_selector(),
            maps in prop::collection::vec(label_map(), 8),
        ) {
            let sel = parse(&input)
                .map_err(|e| TestCaseError::fail(format!("{input:?} rejected at {}: {e}", e.offset)))?;
            check_round_trip(&sel, &maps)?;
        }

        #[test]
        fn near_misses_never_panic(
            input in near_miss(),
            maps in prop::collection::vec(label_map(), 4),
        ) {
            match parse(&input) {
                Ok(sel) => check_round_trip(&sel, &maps)?,
                Err(e) => check_error_offset(&input, &e)?,
            }
        }

        #[test]
        fn printed_trees_parse_to_the_same_meaning(
            tree in expr(),
            maps in prop::collection::vec(label_map(), 8),
        ) {
            let mut text = String::new();
            tree.write_canonical(&mut text);
            let sel = parse(&text)
                .map_err(|e| TestCaseError::fail(format!("{text:?} rejected: {e}")))?;
            for map in &maps {
                prop_assert_eq!(sel.matches(map), tree.matches(map), "{} on {:?}", text, map);
            }
            check_round_trip(&sel, &maps)?;
        }
    }
}
