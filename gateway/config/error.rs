//! A configuration problem the operator must fix, printed as `FILE:LINE:COL: message`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based line and column in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One problem found in a configuration (or a file it names).
///
/// Displayed as `FILE:LINE:COL: message`, or `FILE: message` when no position applies
/// (an unreadable file, an empty document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pos: Option<Pos>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &Path, pos: Option<Pos>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(pos) => write!(f, "{}:{}: {}", self.file.display(), pos, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for Diagnostic {}

/// Prints every diagnostic on its own line, as `gateway check` does.
pub fn render(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out
}
