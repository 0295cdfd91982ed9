//! `airlock plugin test`: requests through one plugin, outside a gateway, so a plugin author
//! can see what their component decides without writing a config or starting an upstream.
//!
//! A request comes from a `.http` file (a request line, headers, a blank line, a body); the
//! plugin runs in the same sandbox, with the same limits and the same host interfaces as in the
//! gateway (its `state` is an in-memory store of its own). Its request phase runs; unless it
//! answered, a response (from a second `.http` file, or `200` with an empty body) goes through
//! its response phase. The [`TrialOutcome`] says what it decided and what the request and
//! response looked like afterwards.
//!
//! [`run_sequence`] runs several requests, in order and repeated, through one [`TrialSession`]:
//! one instance pool and one `state` store, so what a stateful plugin (a rate limit, a quota, a
//! cache) keeps from one request to the next is seen by the next.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// A phase failed in one request of a run of several: the run stopped there.
    #[error("request {index} of {total} ({file}): the plugin failed in {phase}: {reason}")]
    FailedIn {
        /// 1-based position of the request in the run.
        index: usize,
        /// How many requests the run was to make.
        total: usize,
        /// The `.http` file the request came from.
        file: String,
        /// `on-request` or `on-response`.
        phase: &'static str,
        /// The failure.
        reason: String,
    },
    /// The sequence is to run no times, or more than [`MAX_REPEAT`] times.
    #[error("--repeat {0}: the requests run 1 to {MAX_REPEAT} times")]
    Repeat(String),
    /// `--repeat` is not a whole number (`abc`, `-1`, `1.5`).
    #[error("--repeat `{0}`: not a whole number; the requests run 1 to {MAX_REPEAT} times")]
    RepeatNotNumber(String),
    /// A run was asked for without a request.
    #[error("no request to run")]
    NoRequests,
}

impl TrialError {
    /// This error as `--json` reports it ([`FailureReport`]). `first`: in a run printed as an
    /// array, its first request, which a failure of a run of one request (`--repeat 1`) is
    /// numbered by; a run of several names its request in the error itself.
    pub fn report<'a>(&'a self, first: Option<&'a RequestFile>) -> FailureReport<'a> {
        let (index, file, phase, error) = match self {
            TrialError::FailedIn { index, file, phase, reason, .. } => (Some(*index), Some(file.as_str()), Some(*phase), reason.clone()),
            TrialError::Failed { phase, reason } => (first.map(|_| 1), first.map(|f| f.file.as_str()), Some(*phase), reason.clone()),
            other => (None, None, None, other.to_string()),
        };
        FailureReport { index, file, decision: "failed", phase, error }
    }
}

/// `--json`'s report of a trial that stopped on a plugin failure (or a plugin that did not load
/// or refused its config), printed where the outcome would have been, so a script always reads
/// JSON: `"decision": "failed"`, the `phase` it failed in (`null` when no phase ran) and the
/// `error`; in an array, led by the request's `index` and `file` as the outcomes are.
#[derive(Debug, Serialize)]
pub struct FailureReport<'a> {
    /// 1-based position of the request in the run (in an array only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The `.http` file the request came from (in an array only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<&'a str>,
    /// Always `failed`.
    pub decision: &'static str,
    /// `on-request` or `on-response`; `None` when no phase ran.
    pub phase: Option<&'static str>,
    /// What failed: the trap, deadline or memory failure, or why the plugin was not loaded.
    pub error: String,
}

/// The most times [`run_sequence`] repeats its requests (`--repeat`).
pub const MAX_REPEAT: u32 = 10_000;

/// `n` as a repeat count: 1 to [`MAX_REPEAT`].
pub fn repeat_count(n: u64) -> Result<u32, TrialError> {
    u32::try_from(n).ok().filter(|n| (1..=MAX_REPEAT).contains(n)).ok_or_else(|| TrialError::Repeat(n.to_string()))
}

/// `--repeat` as given on the command line, as a repeat count ([`repeat_count`]). Read here
/// rather than by the argument parser, whose errors exit with status 2, which `plugin test`
/// keeps for a plugin that failed: a bad `--repeat` is bad input (status 1) like a bad file.
pub fn parse_repeat(text: &str) -> Result<u32, TrialError> {
    match text.parse::<u64>() {
        Ok(n) => repeat_count(n),
        // Digits beyond `u64`: a whole number, out of range.
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err(TrialError::Repeat(text.to_owned())),
        Err(_) => Err(TrialError::RepeatNotNumber(text.to_owned())),
    }
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
    /// The plugin was not called at all: only its fixed edits were made (`continue`). Said in
    /// the text output, where an author checks that the plugin costs no call; the JSON object
    /// keeps its keys.
    #[serde(skip)]
    pub fixed_edits_only: bool,
    /// The request as the upstream would get it.
    pub request: Message,
    /// The response as the client would get it (after the response phase, if the plugin has one).
    pub response: Message,
    /// The request context after the plugin ran.
    pub context: Vec<(String, String)>,
}

/// Parses a `.http` request: `METHOD /path?query [HTTP/1.1]`, header lines, a blank line, a body.
/// Lines starting with `#` before the request line are comments.
pub fn parse_request(file: &str, message: &[u8]) -> Result<RequestState, TrialError> {
    let (first, line, headers, body) = split_message(file, message)?;
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
        request_id_header: Some(HeaderValue::from_static("trial-request")),
        client_body: !body.is_empty(),
        header_tally: Default::default(),
        past_limits: false,
        removed_headers: Default::default(),
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
pub fn parse_response(file: &str, message: &[u8]) -> Result<ResponseState, TrialError> {
    let (first, line, headers, body) = split_message(file, message)?;
    let code = first.split_whitespace().find(|w| !w.starts_with("HTTP/")).unwrap_or_default();
    let status = code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()).ok_or_else(|| TrialError::Http {
        file: file.to_owned(),
        line,
        reason: format!("expected a status code, found `{first}`"),
    })?;
    Ok(ResponseState { status, headers, body: Some(body), trailers: None })
}

/// The first line (and its number), the headers and the body of a `.http` message. Read as
/// bytes: a header value may hold any byte but control characters, and a body is anything
/// (protobuf, an image, gzip), as on the wire; only the first line must be text.
fn split_message(file: &str, message: &[u8]) -> Result<(String, usize, HeaderMap, Bytes), TrialError> {
    let mut lines = message.split_inclusive(|&b| b == b'\n').enumerate().peekable();
    while lines.peek().is_some_and(|(_, l)| l.trim_ascii().is_empty() || l.starts_with(b"#")) {
        lines.next();
    }
    let (index, first) = lines.next().ok_or_else(|| TrialError::Http { file: file.into(), line: 1, reason: "empty file".into() })?;
    let first = std::str::from_utf8(first)
        .map_err(|_| TrialError::Http { file: file.into(), line: index + 1, reason: "the first line is not UTF-8 text".into() })?;
    let mut headers = HeaderMap::new();
    let mut body = Vec::new();
    let mut in_body = false;
    for (i, raw) in lines {
        if in_body {
            body.extend_from_slice(raw);
            continue;
        }
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            in_body = true;
            continue;
        }
        let err = |reason: String| TrialError::Http { file: file.to_owned(), line: i + 1, reason };
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(err(format!("expected `name: value`, found `{}`", String::from_utf8_lossy(line))));
        };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        let name = HeaderName::from_bytes(name).map_err(|_| err(format!("`{}` is not a header name", String::from_utf8_lossy(name))))?;
        let value = HeaderValue::from_bytes(value).map_err(|_| err(format!("invalid value for `{name}`")))?;
        headers.append(name, value);
    }
    Ok((first.trim().to_owned(), index + 1, headers, Bytes::from(body)))
}

/// A request `.http` file, parsed: what each run of it starts from.
#[derive(Debug)]
pub struct RequestFile {
    /// The file, as named on the command line (for messages).
    pub file: String,
    request: RequestState,
}

impl RequestFile {
    /// Parses `text`, the contents of `file` ([`parse_request`]).
    pub fn parse(file: &str, message: &[u8]) -> Result<Self, TrialError> {
        Ok(Self { file: file.to_owned(), request: parse_request(file, message)? })
    }

    /// `METHOD /path?query`, as the file has it.
    pub fn request_line(&self) -> String {
        let r = &self.request;
        match &r.query {
            Some(q) => format!("{} {}?{q}", r.method, r.path),
            None => format!("{} {}", r.method, r.path),
        }
    }

    /// A request as the file has it, under `request_id`, as if just parsed.
    fn fresh(&self, request_id: &str) -> RequestState {
        let r = &self.request;
        let request_id: Arc<str> = request_id.into();
        RequestState {
            method: r.method.clone(),
            path: r.path.clone(),
            query: r.query.clone(),
            headers: r.headers.clone(),
            params: r.params.clone(),
            route_id: r.route_id.clone(),
            client_addr: r.client_addr,
            client_ip: r.client_ip,
            scheme: r.scheme,
            request_id: request_id.clone(),
            request_id_header: crate::proxy::headers::request_id_header(&request_id),
            body: r.body.clone(),
            context: r.context.clone(),
            response_edits: Default::default(),
            header_limits: r.header_limits,
            body_limit: r.body_limit,
            host_from_plugin: r.host_from_plugin,
            client_body: r.client_body,
            header_tally: Default::default(),
            past_limits: r.past_limits,
            removed_headers: r.removed_headers,
        }
    }
}

/// A plugin loaded for a trial: one instance pool and one in-memory `state` store, shared by
/// every request run through it. Each phase call gets a fresh instance (as with
/// `isolation = "request"`), so only `state` carries from one request to the next, as only it
/// reliably does in a gateway (whose pools hold many instances, replaced after failures and
/// `max_uses` calls).
pub struct TrialSession<'a> {
    trial: &'a Trial,
    pool: InstancePool,
}

impl<'a> TrialSession<'a> {
    /// Loads and configures the plugin (a refused config is an error here) with an empty `state`.
    pub async fn start(trial: &'a Trial, base_dir: &Path) -> Result<Self, TrialError> {
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
        Ok(Self { trial, pool })
    }

    /// Runs `request` through the plugin's request phase, then `response` (unless it answered)
    /// through its response phase. A `delay` is reported, not waited for.
    pub async fn run(&self, mut request: RequestState, response: ResponseState) -> Result<TrialOutcome, TrialError> {
        let trial = self.trial;
        let pool = &self.pool;
        let descriptor = pool.descriptor();
        request.params = trial.params.clone();
        for (k, v) in &trial.context {
            // A trial's context comes from the command line: past the bounds is dropped, as in a gateway.
            let _ = request.context.set(k.clone(), v.clone());
        }
        // Without declared body access the plugin sees no request body; it streams upstream as is.
        let streamed = if descriptor.request_body { None } else { request.body.take() };
        let (mut decision, mut delay_ms) = ("skipped", None);
        let mut response = response;
        let mut answered = false;
        // The changes it declared it makes to every request, made where the gateway makes them:
        // the request goes on with them, called or not.
        if let Some(fixed) = pool.fixed_edits() {
            fixed.apply_to_request(&mut request, &trial.plugin);
            decision = "continue";
        }
        if descriptor.on_request {
            let (returned, result) = pool.on_request(Box::new(request), descriptor.request_body, Instant::now()).await;
            request = *returned;
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
        // As the chain: a request change past the limits is not sent on without it.
        if request.past_limits && !answered {
            let reason = "a change would take the request past the gateway's header limits ([limits]): the gateway answers it 431 headers_too_large";
            return Err(TrialError::Failed { phase: "on-request", reason: reason.into() });
        }
        request.body = request.body.take().or(streamed);
        // Response edits asked for in `on-request` are made where its `on-response` runs, before it.
        let mut tally = crate::exchange::HeaderTally::default();
        crate::runtime::chain::make_response_edits(pool.fixed_edits(), 0, &trial.plugin, &mut request, &mut response.headers, &mut tally);
        if descriptor.on_response {
            // Without declared body access the plugin sees no upstream body, nor one longer than it
            // narrowed its need to (`limit-response-body`); the client still gets it.
            let fits = request.response_edits.body_limit(0).is_none_or(|max| response.body.as_ref().is_none_or(|b| b.len() as u64 <= max));
            let body_access = descriptor.response_body && fits;
            let hidden = if !answered && !body_access { response.body.take() } else { None };
            let (req, resp, result) = pool.on_response(Box::new(request), Box::new(response), body_access, Instant::now()).await;
            result.map_err(|f| TrialError::Failed { phase: "on-response", reason: f.to_string() })?;
            (request, response) = (*req, *resp);
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
            fixed_edits_only: pool.fixed_edits().is_some() && !descriptor.on_request && !descriptor.on_response,
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
}

/// Where a request stands in a run of several.
#[derive(Debug)]
pub struct Step<'a> {
    /// 1-based position in the run.
    pub index: usize,
    /// How many requests the run makes.
    pub total: usize,
    /// The file the request came from.
    pub request: &'a RequestFile,
}

/// Runs `requests` in order, the whole sequence `repeat` times, through one [`TrialSession`]
/// (one pool, one `state`), each with a copy of `response` as the upstream's answer. `each` is
/// called with every outcome as it comes. The first plugin failure stops the run; with more than
/// one request to make it is a [`TrialError::FailedIn`], naming the request.
pub async fn run_sequence(
    trial: &Trial,
    base_dir: &Path,
    requests: &[RequestFile],
    response: &ResponseState,
    repeat: u32,
    mut each: impl FnMut(&Step<'_>, &TrialOutcome),
) -> Result<Summary, TrialError> {
    let repeat = repeat_count(repeat.into())?;
    if requests.is_empty() {
        return Err(TrialError::NoRequests);
    }
    let total = requests.len().saturating_mul(repeat as usize);
    let session = TrialSession::start(trial, base_dir).await?;
    let mut summary = Summary::default();
    for (i, file) in (0..repeat).flat_map(|_| requests.iter()).enumerate() {
        let index = i + 1;
        // One request keeps the id it always had; several get one each, as in a gateway.
        let request_id = if total == 1 { "trial-request".to_owned() } else { format!("trial-request-{index}") };
        let outcome = session.run(file.fresh(&request_id), response.clone()).await.map_err(|e| match e {
            TrialError::Failed { phase, reason } if total > 1 => TrialError::FailedIn { index, total, file: file.file.clone(), phase, reason },
            other => other,
        })?;
        summary.add(&outcome);
        each(&Step { index, total, request: file }, &outcome);
    }
    Ok(summary)
}

/// How often a run's requests got each decision: `6 requests: 4 continue, 2 respond (429)`.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// Requests run.
    pub requests: usize,
    /// Each decision made, with its count, in the order `continue`, `delay`, `acquire-slot`,
    /// `respond`, `skipped`.
    pub decisions: Vec<DecisionCount>,
}

/// One decision's count in a [`Summary`].
#[derive(Debug, PartialEq)]
pub struct DecisionCount {
    /// `continue`, `respond`, `delay`, `acquire-slot` or `skipped`.
    pub decision: &'static str,
    /// How many requests got it.
    pub count: usize,
    /// For `respond`: each status answered with and how often, by status.
    pub statuses: Vec<(u16, usize)>,
}

/// The order decisions are listed in a summary.
const DECISION_ORDER: [&str; 5] = ["continue", "delay", "acquire-slot", "respond", "skipped"];

impl Summary {
    /// Counts `outcome` in.
    pub fn add(&mut self, outcome: &TrialOutcome) {
        self.requests += 1;
        let rank = |d: &str| DECISION_ORDER.iter().position(|o| *o == d).unwrap_or(DECISION_ORDER.len());
        let at = match self.decisions.iter().position(|c| c.decision == outcome.decision) {
            Some(at) => at,
            None => {
                let at = self.decisions.partition_point(|c| rank(c.decision) <= rank(outcome.decision));
                self.decisions.insert(at, DecisionCount { decision: outcome.decision, count: 0, statuses: Vec::new() });
                at
            }
        };
        let entry = &mut self.decisions[at];
        entry.count += 1;
        if let (true, Some(status)) = (outcome.decision == "respond", outcome.response.status) {
            match entry.statuses.binary_search_by_key(&status, |(s, _)| *s) {
                Ok(i) => entry.statuses[i].1 += 1,
                Err(i) => entry.statuses.insert(i, (status, 1)),
            }
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} request{}:", self.requests, if self.requests == 1 { "" } else { "s" })?;
        for (i, c) in self.decisions.iter().enumerate() {
            write!(f, "{} {} {}", if i == 0 { "" } else { "," }, c.count, c.decision)?;
            match c.statuses.as_slice() {
                [] => {}
                [(status, _)] => write!(f, " ({status})")?,
                several => {
                    let list: Vec<String> = several.iter().map(|(status, n)| format!("{n} x {status}")).collect();
                    write!(f, " ({})", list.join(", "))?;
                }
            }
        }
        Ok(())
    }
}

/// A request's outcome in a run of several: a `request 2/6: GET /x -> respond 429` line, then
/// the messages as [`TrialOutcome`]'s `Display` shows them.
pub struct NumberedOutcome<'a> {
    /// Where the request stands in the run.
    pub step: &'a Step<'a>,
    /// What the plugin made of it.
    pub outcome: &'a TrialOutcome,
}

/// `--json` with several requests: each array element is the outcome's object with, first, the
/// request's 1-based `index` in the run and the `file` it came from (as named on the command
/// line). The outcome's own `request` key is the request as sent upstream, hence `index`.
impl Serialize for NumberedOutcome<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Numbered<'a> {
            index: usize,
            file: &'a str,
            #[serde(flatten)]
            outcome: &'a TrialOutcome,
        }
        Numbered { index: self.step.index, file: &self.step.request.file, outcome: self.outcome }.serialize(serializer)
    }
}

impl std::fmt::Display for NumberedOutcome<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (step, outcome) = (self.step, self.outcome);
        write!(f, "request {}/{}: {} -> {}", step.index, step.total, step.request.request_line(), outcome.decision)?;
        match (outcome.delay_ms, outcome.decision, outcome.response.status) {
            (Some(ms), _, _) => writeln!(f, " {ms} ms")?,
            (None, "respond", Some(status)) => writeln!(f, " {status}")?,
            _ if outcome.fixed_edits_only => writeln!(f, " {NOT_CALLED}")?,
            _ => writeln!(f)?,
        }
        outcome.write_messages(f)
    }
}

fn text_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

/// What the text output adds to the decision of a plugin that was not called.
const NOT_CALLED: &str = "(fixed edits only: the plugin was not called)";

impl std::fmt::Display for TrialOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.delay_ms {
            Some(ms) => writeln!(f, "decision: delay {ms} ms")?,
            None if self.fixed_edits_only => writeln!(f, "decision: {} {NOT_CALLED}", self.decision)?,
            None => writeln!(f, "decision: {}", self.decision)?,
        }
        self.write_messages(f)
    }
}

impl TrialOutcome {
    /// Everything `Display` shows after the decision line.
    fn write_messages(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
        let r = parse_request("r.http", b"# a comment\nPOST /users/7?x=1 HTTP/1.1\nx-api-key: k\ncontent-type: text/plain\n\nhello\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_deref()), ("POST", "/users/7", Some("x=1")));
        assert_eq!(r.headers.get("x-api-key").unwrap(), "k");
        assert_eq!(r.body.as_deref(), Some(&b"hello\n"[..]));
        let e = parse_request("r.http", b"GET /\nbroken header\n").unwrap_err().to_string();
        assert_eq!(e, "r.http: line 2: expected `name: value`, found `broken header`");
        assert!(parse_request("r.http", b"GET users").unwrap_err().to_string().contains("must start with `/`"));
        let resp = parse_response("s.http", b"HTTP/1.1 201 Created\nx-a: b\n\n{}").unwrap();
        assert_eq!((resp.status.as_u16(), resp.body.as_deref()), (201, Some(&b"{}"[..])));
        assert!(parse_response("s.http", b"HTTP/1.1 abc").is_err());
    }

    #[test]
    fn http_files_carry_binary_bodies_and_header_bytes() {
        let r = parse_request("r.http", b"POST /upload\r\ncontent-type: application/x-protobuf\r\nx-raw: caf\xe9\r\n\r\n\x00\x01\xff\n\x8b").unwrap();
        assert_eq!(r.body.as_deref(), Some(&b"\x00\x01\xff\n\x8b"[..]));
        assert_eq!(r.headers.get("x-raw").map(HeaderValue::as_bytes), Some(&b"caf\xe9"[..]));
        let resp = parse_response("s.http", b"HTTP/1.1 200 OK\ncontent-encoding: gzip\n\n\x1f\x8b\x08\x00").unwrap();
        assert_eq!(resp.body.as_deref(), Some(&b"\x1f\x8b\x08\x00"[..]));
        let e = parse_request("r.http", b"GET /\xff\n\n").unwrap_err().to_string();
        assert_eq!(e, "r.http: line 1: the first line is not UTF-8 text");
    }

    fn outcome(decision: &'static str, status: u16) -> TrialOutcome {
        let message = |status| Message { method: None, target: None, status, headers: Vec::new(), body: None, trailers: Vec::new() };
        TrialOutcome { decision, delay_ms: None, fixed_edits_only: false, request: message(None), response: message(Some(status)), context: Vec::new() }
    }

    #[test]
    fn a_summary_counts_decisions_in_a_fixed_order_and_answers_by_status() {
        let mut summary = Summary::default();
        for (decision, status) in [("respond", 429), ("continue", 200), ("skipped", 200), ("continue", 200), ("respond", 403), ("respond", 429)] {
            summary.add(&outcome(decision, status));
        }
        assert_eq!(summary.to_string(), "6 requests: 2 continue, 3 respond (1 x 403, 2 x 429), 1 skipped");
        let mut one = Summary::default();
        one.add(&outcome("respond", 429));
        assert_eq!(one.to_string(), "1 request: 1 respond (429)");
    }

    #[test]
    fn repeat_counts_are_1_to_the_maximum() {
        assert_eq!(repeat_count(1).unwrap(), 1);
        assert_eq!(repeat_count(u64::from(MAX_REPEAT)).unwrap(), MAX_REPEAT);
        for bad in [0, u64::from(MAX_REPEAT) + 1, u64::MAX] {
            assert_eq!(repeat_count(bad).unwrap_err().to_string(), format!("--repeat {bad}: the requests run 1 to 10000 times"));
        }
        assert_eq!(parse_repeat("3").unwrap(), 3);
        for bad in ["0", "10001", "18446744073709551616"] {
            assert_eq!(parse_repeat(bad).unwrap_err().to_string(), format!("--repeat {bad}: the requests run 1 to 10000 times"));
        }
        for bad in ["abc", "-1", "1.5", "", " 2", "0x10"] {
            let expected = format!("--repeat `{bad}`: not a whole number; the requests run 1 to 10000 times");
            assert_eq!(parse_repeat(bad).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn a_numbered_outcome_in_json_leads_with_its_index_and_file() {
        let file = RequestFile::parse("dir/b.http", b"GET /b\n\n").unwrap();
        let (step, outcome) = (Step { index: 4, total: 6, request: &file }, outcome("respond", 429));
        let numbered = serde_json::to_value(NumberedOutcome { step: &step, outcome: &outcome }).unwrap();
        let mut expected = serde_json::json!({ "index": 4, "file": "dir/b.http" });
        expected.as_object_mut().unwrap().extend(serde_json::to_value(&outcome).unwrap().as_object().unwrap().clone());
        assert_eq!(numbered, expected);
        let keys: Vec<&str> = numbered.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["index", "file", "decision", "request", "response", "context"]);
    }

    #[test]
    fn a_request_file_runs_afresh_each_time_under_its_own_id() {
        let file = RequestFile::parse("r.http", b"POST /a?b=1\nx-k: v\n\nbody").unwrap();
        assert_eq!(file.request_line(), "POST /a?b=1");
        let (one, two) = (file.fresh("trial-request-1"), file.fresh("trial-request-2"));
        assert_eq!((&*one.request_id, &*two.request_id), ("trial-request-1", "trial-request-2"));
        assert_eq!((two.path.as_str(), two.headers.get("x-k").unwrap().as_bytes(), two.body.as_deref()), ("/a", &b"v"[..], Some(&b"body"[..])));
    }
}
