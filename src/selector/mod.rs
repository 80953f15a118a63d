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
//!
//! The module is the language's three parts: [`parse`] (text → [`Expr`], with the errors and hints),
//! [`eval`] (an [`Expr`] against labels) and [`print`] (the canonical text).

mod eval;
mod parse;
mod print;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

pub use parse::{is_label_char, parse};

/// Longest label name the tokenizer accepts (Calico's `[a-zA-Z0-9_./-]{1,512}`).
pub const MAX_LABEL_LEN: usize = 512;

/// Deepest parenthesis nesting we accept. Calico has no limit, but a 1024-character selector
/// (the API limit) cannot nest deeper than 512, and the cap keeps the recursive parser from
/// overflowing the stack on hostile input.
pub const MAX_NESTING: usize = 512;

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
    /// `!self`, removing a double negation instead of stacking it.
    pub fn negate(self) -> Expr {
        match self {
            Expr::Not(inner) => *inner,
            other => Expr::Not(Box::new(other)),
        }
    }
}

/// A parsed selector: its expression tree and the text it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    pub(super) expr: Expr,
    pub(super) source: String,
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
