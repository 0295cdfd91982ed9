//! `airlock plugin test`: one request through one plugin, outside a gateway, so a plugin author
//! can see what their component decides without writing a config or starting an upstream.
//!
//! The request comes from a `.http` file (a request line, headers, a blank line, a body); the
//! plugin runs in the same sandbox, with the same limits and the same host interfaces as in the
//! gateway (its `state` is an in-memory store of its own). Its request phase runs; unless it
//! answered, a response (from a second `.http` file, or `200` with an empty body) goes through
//! its response phase. The [`TrialOutcome`] says what it decided and what the request and
//! response looked like afterwards.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Serialize;

use crate::config::{Isolation, RuntimeConfig};
use crate::exchange::{Context, RequestState, ResponseState};
use crate::runtime::cache::CompileCache;
use crate::runtime::pool::PhaseAction;
use crate::runtime::{InstancePool, InstanceSettings, LoadedPlugin, SandboxEngine};
use crate::state::{ScopedState, StateStore};

/// Why a trial could not run or the plugin failed in it.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    /// The `.http` file is not a request or response.
    #[error("{file}: line {line}: {reason}")]
    Http {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The plugin could not be loaded or configured.
    #[error("{0}")]
    Plugin(#[from] crate::runtime::PluginError),
    /// The sandbox could not be built.
    #[error("cannot build the sandbox: {0}")]
    Sandbox(String),
    /// A granted directory or origin given on the command line is not one.
    #[error("{0}")]
    Grant(String),
    /// A phase trapped, ran past its deadline or out of memory.
    #[error("the plugin failed in {phase}: {reason}")]
    Failed {
        /// `on-request` or `on-response`.
        phase: &'static str,
        /// The failure.
        reason: String,
    },
}

/// What to run: the plugin, its config and the request.
#[derive(Debug)]
pub struct Trial {
    /// `builtin:<name>` or a path to a `.wasm` component.
    pub plugin: String,
    /// The chain entry's config, as JSON (`{}` for none).
    pub config_json: String,
    /// Route params the request carries (`param` in the WIT).
    pub params: Vec<(String, String)>,
    /// Context entries set before the plugin runs (e.g. `consumer`).
    pub context: Vec<(String, String)>,
    /// The directory granted as `files`, if any.
    pub files_dir: Option<std::path::PathBuf>,
    /// The origins granted as `http-client` (none: not granted).
    pub allow_origins: Vec<String>,
}

/// A message as the trial shows it: a request or a response.
#[derive(Debug, Serialize, PartialEq)]
pub struct Message {
    /// Request method (requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path and query (requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Status (responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Headers in order, values as text (lossy for non-UTF-8).
    pub headers: Vec<(String, String)>,
    /// Body as text (lossy for non-UTF-8); `null` only when there is none.
    pub body: Option<String>,
    /// Trailers in order, values as text (responses: those the plugin set or kept).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<(String, String)>,
}

/// What the plugin decided and what the messages looked like afterwards.
#[derive(Debug, Serialize)]
pub struct TrialOutcome {
    /// `continue`, `respond`, `delay` or `acquire-slot` (the request phase's action), or
    /// `skipped` when the plugin has no request phase.
    pub decision: &'static str,
    /// For `delay`: the wait asked for, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u128>,
    /// The request as the upstream would get it.
    pub request: Message,
    /// The response as the client would get it (after the response phase, if the plugin has one).
    pub response: Message,
    /// The request context after the plugin ran.
    pub context: Vec<(String, String)>,
}

/// Parses a `.http` request: `METHOD /path?query [HTTP/1.1]`, header lines, a blank line, a body.
/// Lines starting with `#` before the request line are comments.
pub fn parse_request(file: &str, text: &str) -> Result<RequestState, TrialError> {
    let (first, line, headers, body) = split_message(file, text)?;
    let err = |reason: String| TrialError::Http { file: file.to_owned(), line, reason };
    let mut parts = first.split_whitespace();
    let method = parts.next().ok_or_else(|| err("expected `METHOD /path`".into()))?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| err(format!("`{method}` is not a method")))?;
    let target = parts.next().ok_or_else(|| err("expected a path after the method".into()))?;
    if !target.starts_with('/') {
        return Err(err(format!("the path `{target}` must start with `/`")));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    Ok(RequestState {
        method,
        path,
        query,
        headers,
        params: Vec::new(),
        route_id: "trial".into(),
        client_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        scheme: "http",
        request_id: "trial-request".into(),
        client_body: !body.is_empty(),
        body: Some(body),
        context: Context::default(),
        response_edits: Default::default(),
        // The gateway's default `[limits]`, so a trial refuses what a default gateway would.
        header_limits: crate::config::LimitsConfig::default().header_limits(),
        body_limit: crate::config::LimitsConfig::default().max_body_bytes,
        host_from_plugin: false,
    })
}

/// Parses a `.http` response: `[HTTP/1.1] STATUS [reason]`, header lines, a blank line, a body.
pub fn parse_response(file: &str, text: &str) -> Result<ResponseState, TrialError> {
    let (first, line, headers, body) = split_message(file, text)?;
    let code = first.split_whitespace().find(|w| !w.starts_with("HTTP/")).unwrap_or_default();
    let status = code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()).ok_or_else(|| TrialError::Http {
        file: file.to_owned(),
        line,
        reason: format!("expected a status code, found `{first}`"),
    })?;
    Ok(ResponseState { status, headers, body: Some(body), trailers: None })
}

/// The first line (and its number), the headers and the body of a `.http` message.
fn split_message(file: &str, text: &str) -> Result<(String, usize, HeaderMap, Bytes), TrialError> {
    let mut lines = text.split_inclusive('\n').enumerate().peekable();
    while lines.peek().is_some_and(|(_, l)| l.trim().is_empty() || l.starts_with('#')) {
        lines.next();
    }
    let (index, first) = lines.next().ok_or_else(|| TrialError::Http { file: file.into(), line: 1, reason: "empty file".into() })?;
    let mut headers = HeaderMap::new();
    let mut body = String::new();
    let mut in_body = false;
    for (i, raw) in lines {
        if in_body {
            body.push_str(raw);
            continue;
        }
        let line = raw.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            in_body = true;
            continue;
        }
        let err = |reason: String| TrialError::Http { file: file.to_owned(), line: i + 1, reason };
        let (name, value) = line.split_once(':').ok_or_else(|| err(format!("expected `name: value`, found `{line}`")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| err(format!("`{name}` is not a header name")))?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| err(format!("invalid value for `{name}`")))?;
        headers.append(name, value);
    }
    Ok((first.trim().to_owned(), index + 1, headers, Bytes::from(body)))
}

/// Runs `request` through the plugin's request phase, then `response` (unless it answered)
/// through its response phase.
pub async fn run(trial: &Trial, base_dir: &Path, mut request: RequestState, response: ResponseState) -> Result<TrialOutcome, TrialError> {
    let sandbox = SandboxEngine::new(&RuntimeConfig::default()).map_err(|e| TrialError::Sandbox(e.to_string()))?;
    let cache = CompileCache::new(CompileCache::default_dir());
    // `state` and `metrics` need no parameters; the trial has its own store and metric set.
    // `files` and `http-client` are granted when their parameters are given.
    let mut asked = vec!["state".to_owned(), "metrics".to_owned()];
    let files = match &trial.files_dir {
        Some(dir) if dir.is_dir() => {
            asked.push("files".to_owned());
            Some(std::path::absolute(dir).unwrap_or_else(|_| dir.clone()))
        }
        Some(dir) => return Err(TrialError::Grant(format!("--files-dir `{}` is not a directory", dir.display()))),
        None => None,
    };
    let http = if trial.allow_origins.is_empty() {
        None
    } else {
        use crate::runtime::host::http_client::{DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT_MS, HttpClientGrant, Origin, OutboundClient};
        let allow = trial
            .allow_origins
            .iter()
            .map(|o| Origin::parse_grant(o).map_err(|e| TrialError::Grant(format!("--allow-origin `{o}`: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let client = tokio::task::spawn_blocking(OutboundClient::new)
            .await
            .map_err(|e| TrialError::Grant(e.to_string()))?
            .map_err(|e| TrialError::Grant(format!("cannot build the outbound HTTP client: {e}")))?;
        asked.push("http-client".to_owned());
        Some(Arc::new(HttpClientGrant::new(allow, DEFAULT_TIMEOUT_MS, DEFAULT_MAX_RESPONSE_BYTES, &client)))
    };
    let grants = crate::runtime::capabilities::effective_grants(&trial.plugin, &asked);
    let plugin = LoadedPlugin::load(&sandbox, &cache, &trial.plugin, base_dir, &grants).await.map_err(|e| match e {
        // There is no config to add `capabilities` to here: say how a trial grants them.
        crate::runtime::PluginError::Capability(message) => crate::runtime::PluginError::Capability(format!(
            "{message}. `plugin test` grants `files` with --files-dir DIR and `http-client` with --allow-origin URL"
        )),
        other => other,
    })?;
    let runtime = RuntimeConfig::default();
    let settings = InstanceSettings {
        memory_bytes: (runtime.memory_mb as usize).saturating_mul(1024 * 1024),
        cpu_deadline: Duration::from_millis(runtime.cpu_ms),
        isolation: Isolation::Request,
        pool_size: 1,
        max_uses: 1,
        state: Some(ScopedState::new(Arc::new(StateStore::Memory(crate::state::memory::MemoryStore::new(10_000))), "trial")),
        files,
        http,
        metrics: Some(crate::telemetry::plugin_metrics::PluginMetricStore::default().set_for(&trial.plugin)),
        share: None,
    };
    let pool = InstancePool::new(plugin, trial.plugin.as_str().into(), trial.config_json.clone(), settings).await?;
    let descriptor = pool.descriptor();
    request.params = trial.params.clone();
    for (k, v) in &trial.context {
        request.context.set(k.clone(), v.clone());
    }
    // Without declared body access the plugin sees no request body; it streams upstream as is.
    let streamed = if descriptor.request_body { None } else { request.body.take() };
    let (mut decision, mut delay_ms) = ("skipped", None);
    let mut response = response;
    let mut answered = false;
    if descriptor.on_request {
        let (returned, result) = pool.on_request(request, descriptor.request_body).await;
        request = returned;
        let action = result.map_err(|f| TrialError::Failed { phase: "on-request", reason: f.to_string() })?;
        decision = match action {
            PhaseAction::Continue => "continue",
            PhaseAction::Delay(wait) => {
                delay_ms = Some(wait.as_millis());
                "delay"
            }
            PhaseAction::AcquireSlot(_) => "acquire-slot",
            PhaseAction::Respond(answer) => {
                response = answer;
                answered = true;
                "respond"
            }
        };
    }
    request.body = request.body.take().or(streamed);
    // Response edits asked for in `on-request` are made where its `on-response` runs, before it.
    let bound = request.header_limits.response;
    request.response_edits.apply(0, &mut response.headers, bound, &trial.plugin, &request.request_id);
    if descriptor.on_response {
        // Without declared body access the plugin sees no upstream body, nor one longer than it
        // narrowed its need to (`limit-response-body`); the client still gets it.
        let fits = request.response_edits.body_limit(0).is_none_or(|max| response.body.as_ref().is_none_or(|b| b.len() as u64 <= max));
        let body_access = descriptor.response_body && fits;
        let hidden = if !answered && !body_access { response.body.take() } else { None };
        let (req, resp, result) = pool.on_response(request, response, body_access).await;
        result.map_err(|f| TrialError::Failed { phase: "on-response", reason: f.to_string() })?;
        (request, response) = (req, resp);
        response.body = response.body.or(hidden);
    }
    // What the gateway would send: a 204, 205 or 304 goes without content.
    if crate::proxy::frame_no_content(response.status, &mut response.headers, response.body.is_some()) {
        response.body = None;
    }
    let context = request.context.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let target = match &request.query {
        Some(q) => format!("{}?{q}", request.path),
        None => request.path.clone(),
    };
    Ok(TrialOutcome {
        decision,
        delay_ms,
        request: Message {
            method: Some(request.method.to_string()),
            target: Some(target),
            status: None,
            headers: text_headers(&request.headers),
            body: request.body.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()),
            trailers: Vec::new(),
        },
        response: Message {
            method: None,
            target: None,
            status: Some(response.status.as_u16()),
            headers: text_headers(&response.headers),
            body: response.body.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()),
            trailers: response.trailers.as_ref().map(text_headers).unwrap_or_default(),
        },
        context,
    })
}

fn text_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

impl std::fmt::Display for TrialOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.delay_ms {
            Some(ms) => writeln!(f, "decision: delay {ms} ms")?,
            None => writeln!(f, "decision: {}", self.decision)?,
        }
        if self.decision != "respond" {
            writeln!(f, "\nrequest sent upstream:")?;
            write_message(f, &self.request)?;
        }
        writeln!(f, "\nresponse to the client:")?;
        write_message(f, &self.response)?;
        if !self.context.is_empty() {
            writeln!(f, "\ncontext:")?;
            for (k, v) in &self.context {
                writeln!(f, "  {k} = {v}")?;
            }
        }
        Ok(())
    }
}

fn write_message(f: &mut std::fmt::Formatter<'_>, m: &Message) -> std::fmt::Result {
    match (&m.method, &m.target, m.status) {
        (Some(method), Some(target), _) => writeln!(f, "  {method} {target}")?,
        (_, _, Some(status)) => writeln!(f, "  {status}")?,
        _ => {}
    }
    for (k, v) in &m.headers {
        writeln!(f, "  {k}: {v}")?;
    }
    if let Some(body) = m.body.as_deref().filter(|b| !b.is_empty()) {
        writeln!(f, "\n  {}", body.trim_end().replace('\n', "\n  "))?;
    }
    if !m.trailers.is_empty() {
        writeln!(f, "\n  trailers:")?;
        for (k, v) in &m.trailers {
            writeln!(f, "  {k}: {v}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_files_parse_and_errors_name_the_line() {
        let r = parse_request("r.http", "# a comment\nPOST /users/7?x=1 HTTP/1.1\nx-api-key: k\ncontent-type: text/plain\n\nhello\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_deref()), ("POST", "/users/7", Some("x=1")));
        assert_eq!(r.headers.get("x-api-key").unwrap(), "k");
        assert_eq!(r.body.as_deref(), Some(&b"hello\n"[..]));
        let e = parse_request("r.http", "GET /\nbroken header\n").unwrap_err().to_string();
        assert_eq!(e, "r.http: line 2: expected `name: value`, found `broken header`");
        assert!(parse_request("r.http", "GET users").unwrap_err().to_string().contains("must start with `/`"));
        let resp = parse_response("s.http", "HTTP/1.1 201 Created\nx-a: b\n\n{}").unwrap();
        assert_eq!((resp.status.as_u16(), resp.body.as_deref()), (201, Some(&b"{}"[..])));
        assert!(parse_response("s.http", "HTTP/1.1 abc").is_err());
    }
}
