//! What is wrong with the alert settings: each [`Problem`] with its line and key, and the
//! [`ConfigError`] that lists them all (the server prints it and exits 2, or keeps the old
//! rules on a reload).

use std::fmt;

/// One thing wrong with the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// The key, e.g. `rules.cpu.threshold` or `override[2].agents`.
    pub key: String,
    pub message: String,
}

/// Everything wrong with an alerts file (or with the flags).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file's path, or `flags`.
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "alerts: {}: {n} problem{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  ")?;
            if let Some(line) = p.line {
                write!(f, "line {line}: ")?;
            }
            if p.key.is_empty() {
                write!(f, "{}", p.message)?;
            } else {
                write!(f, "{}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}
