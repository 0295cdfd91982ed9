//! `airlock.toml`: reading it, and errors that point at the file, line and key at fault.

mod bounds;
pub mod locate;
mod model;
pub mod route_rules;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use model::*;

/// The quickstart config compiled into the binary, used by `airlock run --quickstart`.
pub const QUICKSTART: &str = include_str!("../../../examples/quickstart/airlock.toml");

/// A config file's text and where it came from: kept so later errors can quote the right line.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The path as the operator gave it (used verbatim in error messages).
    pub name: String,
    /// The directory relative plugin paths are resolved against.
    pub base_dir: PathBuf,
    /// The file's text.
    pub text: Arc<str>,
    /// The file it was read from, which a reload reads again (`None` for an embedded config).
    pub path: Option<PathBuf>,
}

impl ConfigSource {
    /// Reads a config file from disk.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self { name: path.display().to_string(), base_dir, text: text.into(), path: Some(path.to_path_buf()) })
    }

    /// A config held in memory (the embedded quickstart, tests).
    pub fn inline(name: &str, text: &str, base_dir: PathBuf) -> Self {
        Self { name: name.to_owned(), base_dir, text: text.into(), path: None }
    }

    /// Parses the text into a [`Config`]; syntax, type and unknown-key errors carry line and key.
    pub fn parse(&self) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(&self.text)
            .map_err(|e| self.error_at(e.span(), "", e.message()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            // A `Spanned` field adds toml's private inner field name to the path: not the
            // operator's key.
            let key = e.path().to_string().replace(".$__serde_spanned_private_value", "");
            let key = if key == "." { String::new() } else { key };
            let inner = e.into_inner();
            self.error_at(inner.span(), &key, inner.message())
        })
    }

    /// Where the value at key path `key` is written in this file (see [`locate::key_span`]).
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        locate::key_span(&self.text, key)
    }

    /// Builds an error located at `span` (a byte range of the text) for the key path `key`.
    pub fn error_at(&self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid(vec![self.issue(span, key, message)])
    }

    /// Builds one located issue; see [`ConfigSource::error_at`].
    pub fn issue(&self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) -> ConfigIssue {
        let (line, column, snippet) = match span {
            Some(span) if span.end > 0 || span.start > 0 => {
                let (line, column) = line_col(&self.text, span.start);
                let snippet = self.text.lines().nth(line - 1).map(str::to_owned);
                (Some(line), Some(column), snippet)
            }
            _ => (None, None, None),
        };
        ConfigIssue {
            file: self.name.clone(),
            line,
            column,
            key: key.to_owned(),
            message: message.into().trim_end().to_owned(),
            snippet,
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// One thing wrong with a config file, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The config file's name as given.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The key path, e.g. `routes[1].upstream` (empty for syntax errors).
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
    /// The offending line of the file.
    pub snippet: Option<String>,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)?;
        } else {
            write!(f, ": `{}`: {}", self.key, self.message)?;
        }
        if let (Some(line), Some(snippet)) = (self.line, &self.snippet) {
            write!(f, "\n  {line:>4} | {snippet}")?;
        }
        Ok(())
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The path as given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is wrong in one or more places.
    #[error("{}", join_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The located issues (empty for read errors).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid(issues) => issues,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn join_issues(issues: &[ConfigIssue]) -> String {
    issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> ConfigSource {
        ConfigSource::inline("airlock.toml", text, PathBuf::from("."))
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = src("[[routes]]\npath = \"/\"\nupstrem = \"x\"\n").parse().unwrap_err();
        let issue = &err.issues()[0];
        assert_eq!(issue.line, Some(3));
        assert_eq!(issue.key, "routes[0].upstrem");
        assert!(issue.message.contains("unknown field `upstrem`"), "{}", issue.message);
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let err = src("[limits]\nmax_body_bytes = \"big\"\n").parse().unwrap_err();
        let issue = &err.issues()[0];
        assert_eq!((issue.line, issue.key.as_str()), (Some(2), "limits.max_body_bytes"));
    }

    #[test]
    fn syntax_error_has_position() {
        let err = src("[routes\n").parse().unwrap_err();
        assert_eq!(err.issues()[0].line, Some(1));
    }

    #[test]
    fn zero_worker_threads_is_refused_at_its_line() {
        let err = src("[runtime]\nworker_threads = 0\n").parse().unwrap_err();
        let issue = &err.issues()[0];
        assert_eq!((issue.line, issue.key.as_str()), (Some(2), "runtime.worker_threads"));
        assert!(issue.message.contains("nonzero"), "{}", issue.message);
        assert_eq!(src("[runtime]\nworker_threads = 3\n").parse().unwrap().runtime.worker_count(), 3);
    }

    #[test]
    fn defaults_apply() {
        let config = src("").parse().unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.limits.max_header_bytes, 32 * 1024);
        assert!(config.routes.is_empty());
    }
}
