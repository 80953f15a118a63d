//! Diagnostics for people: `FILE:LINE:COL: error: MESSAGE`, one per line, all of them in one run.

use std::fmt;

use crate::config::model::Pos;

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
    pub message: String,
}

impl Diagnostic {
    pub fn error(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            pos: Some(pos),
            message: message.into(),
        }
    }
    pub fn warning(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            pos: Some(pos),
            message: message.into(),
        }
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
        match &self.pos {
            Some(pos) => write!(f, "{pos}: {sev}: {}", self.message),
            None => write!(f, "hostpolicyd: {sev}: {}", self.message),
        }
    }
}

/// Sort diagnostics into file order (file name, line, column), errors and warnings interleaved.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| a.pos.cmp(&b.pos));
}
