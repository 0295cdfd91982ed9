//! `airlock.toml`: reading it, and errors that point at the file, line and key at fault.

mod bounds;
pub mod chain_order;
pub mod locate;
mod model;
pub mod route_rules;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use model::*;
/// The rules for a name an operator reads in logs and labels (route and consumer ids, upstream
/// names, the OTLP service name).
pub(crate) use bounds::id_text_problem;

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
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let text = String::from_utf8(bytes).map_err(|e| not_utf8(&path.display().to_string(), e.as_bytes(), e.utf8_error()))?;
        Ok(Self::of_file(path, text.into()))
    }

    /// The config file at `path` as `text`, already read (`--watch` reloads what it saw settle).
    pub fn of_file(path: &Path, text: Arc<str>) -> Self {
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self { name: path.display().to_string(), base_dir, text, path: Some(path.to_path_buf()) }
    }

    /// A config held in memory (the embedded quickstart, tests).
    pub fn inline(name: &str, text: &str, base_dir: PathBuf) -> Self {
        Self { name: name.to_owned(), base_dir, text: text.into(), path: None }
    }

    /// Parses the text into a [`Config`]; syntax, type and unknown-key errors carry line and key.
    /// Every problem is reported, not only the first: serde stops at the first, so a config that
    /// does not read whole is read again part by part ([`ConfigSource::part_issues`]).
    pub fn parse(&self) -> Result<Config, ConfigError> {
        let (root, mut syntax) = toml::de::DeTable::parse_recoverable(&self.text);
        // In the file's order, so the first to fix comes first. toml reads on past each: after an
        // unclosed string, array or inline table, what follows reads as a cascade of errors that
        // are not there, so that one is reported alone.
        syntax.sort_by_key(|e| e.span().map_or(usize::MAX, |span| span.start));
        if let Some(first) = syntax.first() {
            let starts = |e: &toml::de::Error, texts: &[&str]| texts.iter().any(|t| e.message().starts_with(t));
            let more = syntax.len() - 1;
            let note = if starts(first, &["invalid basic string", "invalid literal string"]) {
                Some(format!("{more} more syntax errors after it may follow from this one: fix it and check again"))
            } else if syntax.iter().any(|e| starts(e, &["unclosed array", "unclosed inline table"])) {
                Some(format!(
                    "an array or inline table opened before it is never closed: look above for a missing `]` or `}}`; \
                     {more} more syntax errors after it may follow from that"
                ))
            } else {
                None
            };
            if let Some(note) = note.filter(|_| more > 0) {
                let message = format!("{} ({note})", self.syntax_message(first));
                return Err(ConfigError::Invalid(vec![self.issue(first.span(), "", message)]));
            }
            return Err(ConfigError::Invalid(syntax.iter().map(|e| self.issue(e.span(), "", self.syntax_message(e))).collect()));
        }
        match self.read_part::<Config>(root.clone()) {
            Ok(mut config) => {
                let issues: Vec<ConfigIssue> =
                    [self.read_admin_token_file(&mut config), self.read_redis_files(&mut config)].into_iter().filter_map(Result::err).map(|i| *i).collect();
                if !issues.is_empty() {
                    return Err(ConfigError::Invalid(issues));
                }
                Ok(config)
            }
            Err(first) => {
                let mut issues = self.part_issues(root);
                if issues.is_empty() {
                    issues.push(*first);
                }
                Err(ConfigError::Invalid(issues))
            }
        }
    }

    /// `[admin] token_file`, read into `admin.token` (so everything that reads the token, and
    /// warns without one, sees it).
    fn read_admin_token_file(&self, config: &mut Config) -> Result<(), Box<ConfigIssue>> {
        let Some(file) = config.admin.token_file.clone() else { return Ok(()) };
        let refuse = |message: String| Box::new(self.issue(Some(file.span()), "admin.token_file", message));
        if config.admin.token.is_some() {
            return Err(refuse("give `token` or `token_file`, not both".into()));
        }
        let token = self.secret_file(file.get_ref()).map_err(refuse)?;
        config.admin.token = Some(toml::Spanned::new(file.span(), token));
        Ok(())
    }

    /// A secret kept in a file (`path`, relative to the config's directory): its text without
    /// the trailing newline, not empty.
    fn secret_file(&self, path: &str) -> Result<String, String> {
        let path = self.base_dir.join(path);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let secret = text.trim_end_matches(['\r', '\n']);
        if secret.is_empty() {
            return Err(format!("`{}` is empty", path.display()));
        }
        if secret.contains(['\r', '\n']) {
            return Err(format!("`{}` holds several lines: a secret file holds the secret alone (one trailing newline at most)", path.display()));
        }
        Ok(secret.to_owned())
    }

    /// `[state] redis_ca_file`, `redis_cert_file` with `redis_key_file`, and
    /// `redis_password_file`, read into `state.redis_files`.
    fn read_redis_files(&self, config: &mut Config) -> Result<(), Box<ConfigIssue>> {
        let state = &mut config.state;
        let read = |file: &toml::Spanned<String>, field: &str| {
            let path = self.base_dir.join(file.get_ref());
            std::fs::read(&path).map_err(|e| Box::new(self.issue(Some(file.span()), &format!("state.{field}"), format!("cannot read `{}`: {e}", path.display()))))
        };
        if let Some(file) = &state.redis_ca_file {
            state.redis_files.ca_pem = Some(read(file, "redis_ca_file")?);
        }
        match (&state.redis_cert_file, &state.redis_key_file) {
            (Some(cert), Some(key)) => state.redis_files.client = Some((read(cert, "redis_cert_file")?, read(key, "redis_key_file")?)),
            (Some(one), None) | (None, Some(one)) => {
                let (field, other) = if state.redis_cert_file.is_some() { ("redis_cert_file", "redis_key_file") } else { ("redis_key_file", "redis_cert_file") };
                let message = format!("a client certificate needs both `redis_cert_file` and `redis_key_file`: add `{other}`");
                return Err(Box::new(self.issue(Some(one.span()), &format!("state.{field}"), message)));
            }
            (None, None) => {}
        }
        if let Some(file) = &state.redis_password_file {
            let refuse = |message: String| Box::new(self.issue(Some(file.span()), "state.redis_password_file", message));
            state.redis_files.password = Some(self.secret_file(file.get_ref()).map_err(refuse)?);
        }
        Ok(())
    }

    /// toml's message for a syntax error, with the key named where toml only says "duplicate
    /// key" (the line shown is the second one; say which key and table, and where the first is).
    fn syntax_message(&self, e: &toml::de::Error) -> String {
        let message = e.message().trim_end();
        let Some(span) = e.span().filter(|_| message == "duplicate key") else {
            return message.to_owned();
        };
        let Some(name) = self.text.get(span.clone()).map(|k| k.trim().trim_matches(['"', '\'']).to_owned()) else {
            return message.to_owned();
        };
        let line_start = self.text[..span.start].rfind('\n').map_or(0, |nl| nl + 1);
        let before = &self.text[..line_start];
        if self.text[line_start..].trim_start().starts_with('[') {
            let header = self.text[line_start..].lines().next().unwrap_or_default();
            let header = header.split('#').next().unwrap_or(header).trim();
            return format!("duplicate key: the table `{header}` is defined twice (merge the two)");
        }
        // The table the key is in: the last header above it (none: the top level).
        let table = before.lines().rev().map(str::trim).find(|l| l.starts_with('[')).map(|header| {
            let header = header.split('#').next().unwrap_or(header).trim_end();
            format!(" in `{header}`")
        });
        format!("duplicate key `{name}`{}: a key is set once in a table", table.unwrap_or_default())
    }

    /// Reads `table` (spans into this file's text) as a `T`; the first problem, located.
    fn read_part<T: serde::de::DeserializeOwned>(&self, table: toml::Spanned<toml::de::DeTable<'_>>) -> Result<T, Box<ConfigIssue>> {
        serde_path_to_error::deserialize(toml::Deserializer::from(table)).map_err(|e| {
            // A `Spanned` field adds toml's private inner field name to the path: not the
            // operator's key.
            let key = e.path().to_string().replace(".$__serde_spanned_private_value", "");
            let key = if key == "." { String::new() } else { key };
            let inner = e.into_inner();
            Box::new(self.issue(inner.span(), &key, inner.message()))
        })
    }

    /// The first problem of each part of a config that does not read whole: each top-level
    /// section on its own, each element of an array of tables (`[[routes]]`) and each named
    /// plugin or upstream on its own, the rest of the file left out (every section has its
    /// defaults). An element is read as the first of its array, and its key renumbered.
    fn part_issues(&self, root: toml::Spanned<toml::de::DeTable<'_>>) -> Vec<ConfigIssue> {
        use toml::de::{DeArray, DeTable, DeValue};
        let span = root.span();
        let one = |key: &toml::Spanned<std::borrow::Cow<'_, str>>, value: toml::Spanned<DeValue<'_>>| {
            let mut table = DeTable::new();
            table.insert(key.clone(), value);
            self.read_part::<Config>(toml::Spanned::new(span.clone(), table)).err().map(|issue| *issue)
        };
        let mut issues = Vec::new();
        for (key, value) in root.into_inner() {
            let value_span = value.span();
            match value.into_inner() {
                DeValue::Array(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        let alone: DeArray<'_> = std::iter::once(item).collect();
                        if let Some(mut issue) = one(&key, toml::Spanned::new(value_span.clone(), DeValue::Array(alone))) {
                            let first = format!("{}[0]", key.get_ref());
                            if let Some(rest) = issue.key.strip_prefix(&first) {
                                issue.key = format!("{}[{i}]{rest}", key.get_ref());
                            }
                            issues.push(issue);
                        }
                    }
                }
                DeValue::Table(entries) if matches!(key.get_ref().as_ref(), "plugins" | "upstreams") => {
                    for (name, entry) in entries {
                        let mut alone = DeTable::new();
                        alone.insert(name, entry);
                        issues.extend(one(&key, toml::Spanned::new(value_span.clone(), DeValue::Table(alone))));
                    }
                }
                other => issues.extend(one(&key, toml::Spanned::new(value_span, other))),
            }
        }
        issues.sort_by_key(|i| (i.line.unwrap_or(0), i.column.unwrap_or(0)));
        issues.dedup_by(|a, b| a.line == b.line && a.key == b.key && a.message == b.message);
        issues
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
        let message = message.into();
        // serde's error for a key the section does not have: the key may be a misspelt secret's.
        let unknown_key = message.split_once("unknown field `").and_then(|(_, rest)| rest.split_once('`')).map(|(field, _)| field);
        let unknown_key = unknown_key.filter(|field| crate::admin::redact::unknown_field_is_secret(field, &message));
        let (line, column, snippet) = match span {
            Some(span) if span.end > 0 || span.start > 0 => {
                let (line, column) = line_col(&self.text, span.start);
                let shown = |l: &str| match unknown_key {
                    Some(field) => crate::admin::redact::redacted_unknown_key_line(key, field, l),
                    None => crate::admin::redact::redacted_line(key, l),
                };
                let snippet = self.text.lines().nth(line - 1).map(shown);
                (Some(line), Some(column), snippet)
            }
            _ => (None, None, None),
        };
        ConfigIssue {
            file: self.name.clone(),
            line,
            column,
            key: key.to_owned(),
            message: crate::admin::redact::redacted_message(key, message.trim_end()),
            snippet,
        }
    }
}

/// A config file that is not UTF-8 (as TOML must be), located at its first bad byte: a file
/// saved in Latin-1 or UTF-16 is found at the line to fix, not only named.
fn not_utf8(file: &str, bytes: &[u8], e: std::str::Utf8Error) -> ConfigError {
    let valid = &bytes[..e.valid_up_to()];
    let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |nl| nl + 1);
    let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
    // Columns count characters, as for every other error; the text before is valid UTF-8.
    let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
    let line_end = bytes[line_start..].iter().position(|b| *b == b'\n').map_or(bytes.len(), |at| line_start + at);
    let shown = String::from_utf8_lossy(&bytes[line_start..line_end]).trim_end_matches('\r').to_owned();
    let byte = bytes[e.valid_up_to()];
    ConfigError::Invalid(vec![ConfigIssue {
        file: file.to_owned(),
        line: Some(line),
        column: Some(column),
        key: String::new(),
        message: format!("byte 0x{byte:02X} is not UTF-8: a config file is UTF-8 (TOML); save it as UTF-8"),
        snippet: Some(crate::admin::redact::redacted_line("", &shown)),
    }])
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
    fn every_section_element_and_entry_reports_its_first_problem() {
        let text = "\
[limits]
max_headers = \"many\"

[[routes]]
path = \"/ok\"

[[routes]]
path = \"/a\"
upstrem = \"x\"

[upstreams.good]
targets = [\"127.0.0.1:1\"]

[upstreams.bad]
targets = 5

[plugins.p]
source = \"builtin:headers\"
pool_sise = 3

[[consumers]]
id = 7

[tracing]
sample_ratio = \"all\"
";
        let err = src(text).parse().unwrap_err();
        let found: Vec<(Option<usize>, &str)> = err.issues().iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(2), "limits.max_headers"),
                (Some(9), "routes[1].upstrem"),
                (Some(15), "upstreams.bad.targets"),
                (Some(19), "plugins.p.pool_sise"),
                (Some(22), "consumers[0].id"),
                (Some(25), "tracing.sample_ratio"),
            ],
            "{err}"
        );
        // Syntax errors: every one the parser recovers from, nothing read further.
        let err = src("[limits\nmax_headers = 1\n[[routes]]\npath = \"/\"\nx = = 2\n").parse().unwrap_err();
        assert!(err.issues().len() >= 2, "{err}");
        assert!(err.issues().iter().all(|i| i.key.is_empty()), "{err}");
        assert!(err.issues().windows(2).all(|pair| pair[0].line <= pair[1].line), "in the file's order: {err}");
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

    /// An unclosed string makes toml read the rest of the file as a cascade of errors: the
    /// first in the file, the one to fix, is the one reported, with how many followed.
    #[test]
    fn the_first_syntax_error_is_the_one_reported() {
        let err = src("[upstreams.b]\ntargets = [\"127.0.0.1:9090]\n\n[[routes]]\npath = \"/x\"\nupstream = \"b\"\n").parse().unwrap_err();
        let [issue] = err.issues() else { panic!("one issue: {err}") };
        assert_eq!(issue.line, Some(2), "{err}");
        assert!(issue.message.starts_with("invalid basic string") && issue.message.contains("more syntax errors after it may follow from this one"), "{err}");
        // An array left unclosed: the first error, where it reads on into the next table.
        let err = src("[upstreams.b]\ntargets = [\"127.0.0.1:9090\"\n\n[[routes]]\npath = \"/x\"\n").parse().unwrap_err();
        let [issue] = err.issues() else { panic!("one issue: {err}") };
        assert_eq!(issue.line, Some(4), "{err}");
        assert!(issue.message.contains("never closed: look above for a missing `]` or `}`"), "{err}");
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
    fn a_file_that_is_not_utf8_is_located_at_its_first_bad_byte() {
        let dir = std::env::temp_dir().join(format!("airlock-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("airlock.toml");
        std::fs::write(&path, b"[limits]\nmax_headers = 10\n# caf\xe9 \xe9\n").unwrap();
        let err = ConfigSource::read(&path).unwrap_err();
        let issue = &err.issues()[0];
        assert_eq!((issue.line, issue.column), (Some(3), Some(6)), "{err}");
        assert!(issue.message.contains("0xE9 is not UTF-8"), "{err}");
        assert_eq!(issue.snippet.as_deref(), Some("# caf\u{fffd} \u{fffd}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults_apply() {
        let config = src("").parse().unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.limits.max_header_bytes, 32 * 1024);
        assert!(config.routes.is_empty());
    }
}
