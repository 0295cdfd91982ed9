//! OTLP span export (OTLP/HTTP with protobuf bodies) to `[otlp] endpoint`, off the request path:
//! a finished, sampled request hands its span to a bounded queue without waiting; one task
//! batches spans (up to `batch_spans`, or every `flush_ms`) and POSTs them. When the queue is full
//! or the collector is down, spans are dropped and counted (`airlock_otlp_spans_dropped_total`);
//! requests never wait for the collector.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::spans::{ChildKind, ChildSpan};
use super::trace_context::TraceContext;
use crate::config::OtlpConfig;

/// One finished request, as exported: a server span.
#[derive(Debug)]
pub struct RequestSpan {
    /// Trace id, span id, parent and `tracestate`.
    pub trace: TraceContext,
    /// When the request arrived.
    pub start: SystemTime,
    /// When the response head was ready.
    pub end: SystemTime,
    /// Request method.
    pub method: Method,
    /// Request path (without the query).
    pub path: String,
    /// Matched route id.
    pub route: Option<Arc<str>>,
    /// Status answered.
    pub status: u16,
    /// The request id.
    pub request_id: Arc<str>,
    /// The consumer an auth plugin identified.
    pub consumer: Option<String>,
    /// When the request arrived, on the monotonic clock the children's times are on.
    pub started: Instant,
    /// Plugin phase and upstream calls, exported as child spans of this one.
    pub children: Vec<ChildSpan>,
}

impl RequestSpan {
    /// The spans this request is exported as: its server span and one per child.
    fn span_count(&self) -> u64 {
        1 + self.children.len() as u64
    }
}

/// What the export task is handed: a request's spans, or a request to send what it holds now.
// The queue held `RequestSpan`s by value before `Flush` (once per process) was added: boxing
// them would add an allocation per exported request for nothing.
#[allow(clippy::large_enum_variant)]
enum Export {
    /// A finished request's spans.
    Span(RequestSpan),
    /// Send the spans queued before this at once (a shutdown), then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The request-side handle of the exporter.
pub struct SpanExporter {
    sender: mpsc::Sender<Export>,
    /// Spans queued and not yet taken by the export task, held to `queue_spans` (the channel
    /// counts requests, each one span or more).
    queued: Arc<AtomicU64>,
    /// `otlp.queue_spans`.
    queue_limit: u64,
    dropped: Counter,
    /// How long a flush may take: the collector's timeout, and some.
    flush_limit: Duration,
}

/// Counters the exporter keeps.
#[derive(Clone, Default)]
pub struct ExportCounters {
    /// Spans the collector accepted (a request's server span and each child span).
    pub exported: Counter,
    /// Spans dropped: queue full, collector unreachable or refusing.
    pub dropped: Counter,
}

impl SpanExporter {
    /// Starts the export task on the current tokio runtime. `endpoint` must be an `http://` URI.
    pub fn start(config: &OtlpConfig, endpoint: Uri, counters: ExportCounters) -> Self {
        let queue_limit = config.queue_spans.get_ref().max(&1).to_owned();
        let (sender, receiver) = mpsc::channel(queue_limit);
        let queued = Arc::new(AtomicU64::new(0));
        let batcher = Batcher {
            queued: queued.clone(),
            shown_endpoint: crate::admin::redact::redacted_url(&endpoint.to_string()),
            endpoint,
            client: Client::builder(TokioExecutor::new()).build_http(),
            batch: config.batch_spans.max(1) as u64,
            flush: Duration::from_millis(config.flush_ms.max(1)),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            service_name: config.service_name.clone(),
            counters: counters.clone(),
        };
        let flush_limit = batcher.timeout + Duration::from_secs(1);
        tokio::spawn(batcher.run(receiver));
        Self { sender, queued, queue_limit: queue_limit as u64, dropped: counters.dropped, flush_limit }
    }

    /// Queues a request's spans; never waits. A full queue (`queue_spans` spans) drops them
    /// and counts them; an empty one takes a request's spans however many (a long chain's may
    /// pass a small `queue_spans`).
    pub fn submit(&self, span: RequestSpan) {
        let count = span.span_count();
        let limit = self.queue_limit;
        let room = |queued: u64| (queued == 0 || queued.saturating_add(count) <= limit).then(|| queued.saturating_add(count));
        if self.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, room).is_err() {
            self.dropped.inc_by(count);
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Closed(_)) = self.sender.try_send(Export::Span(span)) {
            self.queued.fetch_sub(count, Ordering::Relaxed);
            self.dropped.inc_by(count);
        }
    }

    /// Sends every span queued so far and waits for the collector's answer (at most its
    /// timeout): on shutdown, so the last `flush_ms` of traces are not lost with the process.
    pub async fn flush(&self) {
        let (done, sent) = tokio::sync::oneshot::channel();
        let flushed = async {
            if self.sender.send(Export::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        };
        if tokio::time::timeout(self.flush_limit, flushed).await.is_err() {
            tracing::warn!("OTLP: the last spans were not sent within the collector's timeout");
        }
    }
}

/// The export task's state.
struct Batcher {
    /// Spans queued for this task and not yet taken (`SpanExporter::queued`).
    queued: Arc<AtomicU64>,
    endpoint: Uri,
    /// `endpoint` as warnings show it: a secret in its query redacted, as `/admin/config` shows it.
    shown_endpoint: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// `otlp.batch_spans`: most spans in one export (a request's spans are not split, so one
    /// request with more goes alone).
    batch: u64,
    flush: Duration,
    timeout: Duration,
    service_name: String,
    counters: ExportCounters,
}

impl Batcher {
    /// Collects spans into batches and sends them until every sender is gone.
    async fn run(self, mut receiver: mpsc::Receiver<Export>) {
        let mut failures_logged = false;
        // A request's spans that would have taken the last batch past `batch`: the next one's first.
        let mut carried = None;
        loop {
            let first = match carried.take() {
                Some(span) => span,
                None => match receiver.recv().await {
                    None => return,
                    Some(Export::Flush(done)) => {
                        let _ = done.send(());
                        continue;
                    }
                    Some(Export::Span(span)) => self.taken(span),
                },
            };
            let mut count = first.span_count();
            let mut spans = vec![first];
            let deadline = tokio::time::Instant::now() + self.flush;
            let mut closed = false;
            let mut flushed = None;
            while count < self.batch {
                tokio::select! {
                    next = receiver.recv() => match next {
                        Some(Export::Span(span)) => {
                            let span = self.taken(span);
                            if count + span.span_count() > self.batch {
                                carried = Some(span);
                                break;
                            }
                            count += span.span_count();
                            spans.push(span);
                        }
                        Some(Export::Flush(done)) => { flushed = Some(done); break; }
                        None => { closed = true; break; }
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let result = self.send(spans).await;
            if let Some(done) = flushed {
                let _ = done.send(());
            }
            match result {
                Ok(()) => {
                    self.counters.exported.inc_by(count);
                    failures_logged = false;
                }
                Err(reason) => {
                    self.counters.dropped.inc_by(count);
                    if !failures_logged {
                        failures_logged = true;
                        tracing::warn!(endpoint = %self.shown_endpoint, "OTLP export failed, dropping spans until it recovers: {reason}");
                    }
                }
            }
            if closed {
                return;
            }
        }
    }

    /// A request's spans taken off the queue: no longer counted against `queue_spans`.
    fn taken(&self, span: RequestSpan) -> RequestSpan {
        self.queued.fetch_sub(span.span_count(), Ordering::Relaxed);
        span
    }

    async fn send(&self, spans: Vec<RequestSpan>) -> Result<(), String> {
        let body = self.encode(spans).encode_to_vec();
        let request = Request::post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read the body so the connection can be reused.
        let _ = tokio::time::timeout(self.timeout, response.into_body().collect()).await;
        if status.is_success() { Ok(()) } else { Err(format!("collector answered {status}")) }
    }

    fn encode(&self, spans: Vec<RequestSpan>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![text("service.name", self.service_name.clone())],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "airlock".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: spans.into_iter().flat_map(to_proto).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

/// The OTLP form of a request span, followed by its children.
fn to_proto(mut span: RequestSpan) -> Vec<Span> {
    let children = std::mem::take(&mut span.children);
    let mut out = Vec::with_capacity(children.len() + 1);
    out.push(request_to_proto(&span));
    out.extend(children.iter().map(|c| child_to_proto(&span, c)));
    out
}

/// A child span: same trace, the request span as parent, its own random span id; the upstream
/// call's is the one the upstream was told is its parent (`traceparent`).
fn child_to_proto(parent: &RequestSpan, child: &ChildSpan) -> Span {
    let at = |t: Instant| parent.start + t.saturating_duration_since(parent.started);
    let mut attributes = Vec::new();
    if let Some(route) = &parent.route {
        attributes.push(text("http.route", route.to_string()));
    }
    if let Some(consumer) = &parent.consumer {
        attributes.push(text("airlock.consumer", consumer.clone()));
    }
    let duration_ms = child.end.saturating_duration_since(child.start).as_secs_f64() * 1000.0;
    attributes.push(double("airlock.duration_ms", duration_ms));
    let trace = &parent.trace;
    let mut span_id = None;
    let (name, kind, failed) = match &child.kind {
        ChildKind::Plugin { plugin, phase, outcome, status } => {
            attributes.push(text("airlock.plugin", plugin.clone()));
            attributes.push(text("airlock.phase", (*phase).to_owned()));
            attributes.push(text("airlock.outcome", outcome.clone()));
            if let Some(status) = status {
                attributes.push(int("http.response.status_code", i64::from(*status)));
            }
            (format!("plugin {plugin} {phase}"), span::SpanKind::Internal, outcome.starts_with("failed"))
        }
        ChildKind::Upstream { upstream, address, status, error } => {
            attributes.push(text("airlock.upstream", upstream.clone()));
            if let Some((host, port)) = address.as_deref().and_then(split_address) {
                attributes.push(text("server.address", host.to_owned()));
                attributes.push(int("server.port", i64::from(port)));
            }
            if let Some(status) = status {
                attributes.push(int("http.response.status_code", i64::from(*status)));
            }
            if let Some(error) = error {
                attributes.push(text("error.message", error.clone()));
            }
            // OpenTelemetry's HTTP conventions: a client span fails on a 4xx too (the server
            // span, on a 5xx only); `error.type` is the status, or `_OTHER` for no answer.
            let failed = error.is_some() || status.is_some_and(|s| s >= 400);
            if failed {
                attributes.push(text("error.type", status.map_or_else(|| "_OTHER".to_owned(), |s| s.to_string())));
            }
            span_id = Some(trace.upstream_span_id.0);
            (format!("upstream {upstream}"), span::SpanKind::Client, failed)
        }
        ChildKind::Outbound { plugin, method, origin: (scheme, host, port), status, error, span_id: id } => {
            attributes.push(text("airlock.plugin", plugin.clone()));
            attributes.push(text("http.request.method", method.clone()));
            attributes.push(text("url.scheme", (*scheme).to_owned()));
            attributes.push(text("server.address", host.clone()));
            attributes.push(int("server.port", i64::from(*port)));
            if let Some(status) = status {
                attributes.push(int("http.response.status_code", i64::from(*status)));
            }
            let failed = error.is_some() || status.is_some_and(|s| s >= 400);
            if failed {
                let kind = status.map_or_else(|| error.unwrap_or("_OTHER").to_owned(), |s| s.to_string());
                attributes.push(text("error.type", kind));
            }
            span_id = Some(*id);
            (format!("outbound {method} {host}"), span::SpanKind::Client, failed)
        }
    };
    Span {
        trace_id: trace.trace_id.0.to_be_bytes().to_vec(),
        span_id: span_id.unwrap_or_else(|| fastrand::u64(1..)).to_be_bytes().to_vec(),
        parent_span_id: trace.span_id.0.to_be_bytes().to_vec(),
        flags: u32::from(trace.sampled),
        name,
        kind: kind as i32,
        start_time_unix_nano: unix_nanos(at(child.start)),
        end_time_unix_nano: unix_nanos(at(child.end)),
        attributes,
        status: Some(Status {
            message: String::new(),
            code: if failed { status::StatusCode::Error } else { status::StatusCode::Unset } as i32,
        }),
        ..Default::default()
    }
}

/// A target's `host:port` as OpenTelemetry's `server.address` (an IPv6 address without its
/// brackets) and `server.port`.
fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Some((host, port.parse().ok()?))
}

/// The OTLP form of the request span itself.
fn request_to_proto(span: &RequestSpan) -> Span {
    // A method a client made up is `_OTHER` and names the span `HTTP` (OpenTelemetry's HTTP
    // semantic conventions): span names stay a bounded set, however many methods clients try.
    let known = known_method(&span.method);
    let name = format!("{} {}", known.map_or("HTTP", |_| span.method.as_str()), span.path_label());
    let mut attributes = vec![
        text("http.request.method", known.unwrap_or("_OTHER").to_owned()),
        text("url.path", span.path.clone()),
        int("http.response.status_code", i64::from(span.status)),
        text("airlock.request_id", span.request_id.to_string()),
    ];
    if known.is_none() {
        attributes.push(text("http.request.method_original", span.method.as_str().to_owned()));
    }
    if let Some(route) = &span.route {
        attributes.push(text("http.route", route.to_string()));
    }
    if let Some(consumer) = &span.consumer {
        attributes.push(text("airlock.consumer", consumer.clone()));
    }
    if span.status >= 500 {
        attributes.push(text("error.type", span.status.to_string()));
    }
    let trace = &span.trace;
    Span {
        trace_id: trace.trace_id.0.to_be_bytes().to_vec(),
        span_id: trace.span_id.0.to_be_bytes().to_vec(),
        trace_state: trace.tracestate.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
        parent_span_id: trace.parent_id.map(|p| p.0.to_be_bytes().to_vec()).unwrap_or_default(),
        flags: u32::from(trace.sampled),
        name,
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: unix_nanos(span.start),
        end_time_unix_nano: unix_nanos(span.end),
        attributes,
        status: Some(Status {
            message: String::new(),
            code: if span.status >= 500 { status::StatusCode::Error } else { status::StatusCode::Unset } as i32,
        }),
        ..Default::default()
    }
}

/// `method` if it is one OpenTelemetry's HTTP semantic conventions know (RFC 9110's and
/// `PATCH`), as they spell it.
fn known_method(method: &Method) -> Option<&'static str> {
    const KNOWN: [(Method, &str); 9] = [
        (Method::CONNECT, "CONNECT"),
        (Method::DELETE, "DELETE"),
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PATCH, "PATCH"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN.iter().find(|(m, _)| m == method).map(|(_, name)| *name)
}

impl RequestSpan {
    /// Bounded span names: the route id, not the raw path.
    fn path_label(&self) -> &str {
        self.route.as_deref().unwrap_or("(no route)")
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0)
}

fn text(key: &str, value: String) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }), ..Default::default() }
}

fn double(key: &str, value: f64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::DoubleValue(value)) }), ..Default::default() }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's span with `status`, begun `started`, without children.
    fn request_span(status: u16, started: Instant) -> RequestSpan {
        RequestSpan {
            trace: TraceContext::from_headers(&http::HeaderMap::new(), 1.0),
            start: SystemTime::now(),
            end: SystemTime::now(),
            method: Method::GET,
            path: "/".into(),
            route: None,
            status,
            request_id: "id".into(),
            consumer: None,
            started,
            children: Vec::new(),
        }
    }

    #[test]
    fn an_upstream_span_names_the_target_as_server_address_and_port() {
        assert_eq!(split_address("10.0.0.7:8080"), Some(("10.0.0.7", 8080)));
        assert_eq!(split_address("[::1]:9000"), Some(("::1", 9000)));
        assert_eq!(split_address("backend.internal:443"), Some(("backend.internal", 443)));
        assert_eq!(split_address("no-port"), None);
        let now = Instant::now();
        let parent = request_span(502, now);
        let child = ChildSpan::upstream("api", Some("10.0.0.7:8080".into()), now, now, Err("refused".into()));
        let span = child_to_proto(&parent, &child);
        let value = |key: &str| span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()).and_then(|v| v.value);
        assert_eq!(value("server.address"), Some(any_value::Value::StringValue("10.0.0.7".into())));
        assert_eq!(value("server.port"), Some(any_value::Value::IntValue(8080)));
        assert_eq!(value("error.message"), Some(any_value::Value::StringValue("refused".into())));
        assert_eq!(value("error.type"), Some(any_value::Value::StringValue("_OTHER".into())));
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(status::StatusCode::Error as i32));
    }

    /// OpenTelemetry's HTTP conventions: the upstream call's (client) span is an error from a
    /// 4xx on, with the status as `error.type`; the request's (server) span from a 5xx on.
    #[test]
    fn a_client_span_fails_on_a_4xx_and_the_server_span_on_a_5xx() {
        let now = Instant::now();
        let request = |status| request_span(status, now);
        let code = |span: &Span| span.status.as_ref().map(|s| s.code);
        let error_type = |span: &Span| span.attributes.iter().find(|kv| kv.key == "error.type").and_then(|kv| kv.value.clone()).and_then(|v| v.value);
        for (upstream_status, failed) in [(200, false), (304, false), (404, true), (503, true)] {
            let span = child_to_proto(&request(upstream_status), &ChildSpan::upstream("api", None, now, now, Ok(upstream_status)));
            let expected = if failed { status::StatusCode::Error } else { status::StatusCode::Unset };
            assert_eq!(code(&span), Some(expected as i32), "{upstream_status}");
            assert_eq!(error_type(&span), failed.then(|| any_value::Value::StringValue(upstream_status.to_string())), "{upstream_status}");
            let server = request_to_proto(&request(upstream_status));
            let expected = if upstream_status >= 500 { status::StatusCode::Error } else { status::StatusCode::Unset };
            assert_eq!(code(&server), Some(expected as i32), "{upstream_status}");
            assert_eq!(error_type(&server).is_some(), upstream_status >= 500, "{upstream_status}");
        }
    }
}
