//! The canonical text of a selector (Calico's `String()`; see the module documentation of
//! [`crate::selector`]): what other stages use as a key.

use super::{Expr, Selector};

impl Selector {
    /// Canonical text; parsing it gives back the same tree.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.expr.write_canonical(&mut out);
        out
    }
}

impl Expr {
    pub(super) fn write_canonical(&self, out: &mut String) {
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
