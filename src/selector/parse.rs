//! Parsing selector text (Calico's tokenizer and parser in one recursive descent), with errors that
//! say what would be right.

use std::collections::BTreeSet;

use super::{CmpOp, Expr, Selector, SelectorError, SetOp, MAX_LABEL_LEN, MAX_NESTING};

const NEGATION_HINT: &str = "to negate a test write `!` instead of `not`, e.g. `!has(label)`";

const LINE_BREAK_MESSAGE: &str = "selectors cannot contain a line break; in YAML use a plain or \
                                  quoted scalar, not `|`";

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
