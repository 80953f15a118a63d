//! Evaluating a selector against a label map (spec §2.3).

use std::collections::BTreeMap;

use super::{CmpOp, Expr, SetOp};

impl CmpOp {
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
}
