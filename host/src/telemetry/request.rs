//! What the gateway learns about one request as it passes through the phases, and what is done
//! with it at the end: metrics recorded, trace header returned, access log line handed over when
//! the response body has been sent.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tracing::Span;
use tracing::field::Empty;

use super::Telemetry;
use super::access_log::AccessEntry;
use super::analytics::Sample;
use super::metrics::RouteMetrics;
use super::observed_body::{ObservedBody, PendingLine, PendingSample};
use super::otlp::RequestSpan;
use super::trace_context::TraceContext;
use crate::proxy::ConnectionInfo;
use crate::proxy::body::{ProxyBody, UploadProgress};

/// Longest `User-Agent` kept for the access log.
const MAX_USER_AGENT: usize = 256;

/// One request's telemetry, filled in by the proxy phases. Dropped without
/// [`RequestRecord::finish`] (the client went away, or a forced shutdown cut the request), it
/// still counts and logs the request, with status 499 (nginx's "client closed request").
pub struct RequestRecord<'a> {
    telemetry: &'a Telemetry,
    /// Set by `finish`: nothing is left for `drop` to record.
    finished: bool,
    /// The answer is the gateway's own or a plugin's, not the upstream's ([`Self::answered_locally`]).
    local_reply: bool,
    started: Instant,
    /// The request's trace context (continued from the client or new).
    pub trace: TraceContext,
    span: Span,
    method: Method,
    route: Option<&'a RouteMetrics>,
    route_id: Option<Arc<str>>,
    upstream: Option<Duration>,
    /// The upstream target that served or last failed, once the request was sent to one
    /// (borrowed from the upstream: shared only if an access log line takes it).
    upstream_addr: Option<&'a Arc<str>>,
    /// When the upstream call began, once the request was sent: the call's time so far when
    /// the client abandons the request during it.
    upstream_started: Option<Instant>,
    /// The upstream (its name) the request is being sent to, with `upstream_started`.
    upstream_name: Option<&'a Arc<str>>,
    /// The status of the upstream's answer once its head came (its body may still be read).
    upstream_status: Option<u16>,
    plugins: Duration,
    /// When the plugin phases under way began, until they return (`plugins_took`): a request
    /// abandoned meanwhile counts their time so far.
    plugins_since: Option<Instant>,
    /// Request body bytes read from the client: buffered ones, and those a streamed body
    /// counts in `body_read` as it is read.
    bytes_in: u64,
    body_read: Option<Arc<UploadProgress>>,
    consumer: Option<String>,
    request_id: Arc<str>,
    client_ip: std::net::IpAddr,
    /// Collected only when the access log is on.
    access: Option<AccessStart>,
    /// The path, kept only for a sampled request when spans are exported.
    span_path: Option<String>,
    /// Child spans (plugin phases, upstream call), collected only when `span_path` is kept.
    children: Option<super::spans::Collector>,
}

/// Access log fields known at arrival.
struct AccessStart {
    time: SystemTime,
    conn: ConnectionInfo,
    host: Option<String>,
    protocol: &'static str,
    path: String,
    user_agent: Option<String>,
    /// The targets the request was sent to before the one in `upstream_addr`, each failed.
    upstream_failed: Vec<Arc<str>>,
}

/// Longest `host` the access log records.
const MAX_LOGGED_HOST: usize = 256;

/// Longest path the access log and a request's span record: a request line may be tens of KB
/// (`limits.max_header_bytes`), which every request would then write whole to the log and send
/// to the collector (many refuse attributes that long). Browsers keep URLs far shorter.
const MAX_LOGGED_PATH: usize = 4096;

/// The first `max` bytes of `bytes` as text, cut at a character boundary (a cut inside one
/// would log a U+FFFD that the client never sent); other invalid UTF-8 shown as U+FFFD.
fn logged_prefix(bytes: &[u8], max: usize) -> String {
    let cut = bytes.len().min(max);
    // Back over the continuation bytes (at most 3) of a character the cut would split; bytes
    // that are no UTF-8 are cut where they are.
    let mut end = cut;
    while end < bytes.len() && end > cut.saturating_sub(3) && bytes[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    if end < cut && bytes[end] & 0xC0 != 0xC0 {
        end = cut;
    }
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl<'a> RequestRecord<'a> {
    /// Starts the record of a request that just arrived over `conn`; `trusted`: its own trace
    /// context is continued ([`Telemetry::trusts_incoming`]).
    pub fn begin<B>(telemetry: &'a Telemetry, request: &Request<B>, (conn, trusted): (ConnectionInfo, bool), request_id: Arc<str>) -> Self {
        let trace = TraceContext::continuing(request.headers(), telemetry.sample_ratio, trusted);
        // A debug span: at the default `info` level, creating, entering and formatting a span
        // for every request cost ~15% of a proxied request's CPU. Request-path warnings name
        // their request themselves (request id, and plugin or method and path).
        let span = tracing::debug_span!(
            "request",
            request_id = &*request_id,
            trace_id = %trace.trace_id,
            method = %request.method(),
            path = request.uri().path(),
            route = Empty,
            consumer = Empty,
            status = Empty,
        );
        let access = telemetry.access_log().is_some().then(|| AccessStart {
            time: SystemTime::now(),
            conn,
            host: request
                .uri()
                .authority()
                .map(|a| a.as_str().as_bytes())
                .or_else(|| request.headers().get(header::HOST).map(HeaderValue::as_bytes))
                .map(|h| logged_prefix(h, MAX_LOGGED_HOST)),
            protocol: match request.version() {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            },
            path: logged_prefix(request.uri().path().as_bytes(), MAX_LOGGED_PATH),
            user_agent: request.headers().get(header::USER_AGENT).map(|v| logged_prefix(v.as_bytes(), MAX_USER_AGENT)),
            upstream_failed: Vec::new(),
        });
        let span_path = (trace.sampled && telemetry.otlp().is_some()).then(|| logged_prefix(request.uri().path().as_bytes(), MAX_LOGGED_PATH));
        Self {
            telemetry,
            finished: false,
            local_reply: false,
            children: span_path.as_ref().map(|_| Default::default()),
            span_path,
            started: Instant::now(),
            trace,
            span,
            method: request.method().clone(),
            route: None,
            route_id: None,
            upstream: None,
            upstream_addr: None,
            upstream_started: None,
            upstream_name: None,
            upstream_status: None,
            plugins: Duration::ZERO,
            plugins_since: None,
            bytes_in: 0,
            body_read: None,
            consumer: None,
            request_id,
            client_ip: conn.client,
            access,
        }
    }

    /// Where the request's child spans are collected, if it is exported (see [`super::spans`]).
    pub fn child_spans(&self) -> Option<super::spans::Collector> {
        self.children.clone()
    }

    /// The request's `tracing` span; plugin phases and the upstream call are its children.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The id of the route that matched, if one did.
    pub fn route_id(&self) -> Option<&str> {
        self.route_id.as_deref()
    }

    /// Whether this request's failure (error code `code`) is to be warned about, and how many of
    /// its route's failures of that code the warning tells ([`RouteMetrics::failure_warning_due`]; unrouted requests
    /// share one throttle).
    pub fn failure_warning_due(&self, code: &str) -> Option<u64> {
        self.route.unwrap_or(&self.telemetry.unrouted).failure_warning_due(code)
    }

    /// The route that matched.
    pub fn matched(&mut self, route_id: &Arc<str>, metrics: &'a RouteMetrics) {
        self.span.record("route", &**route_id);
        self.route = Some(metrics);
        self.route_id = Some(route_id.clone());
    }

    /// The request is about to go through the chain: adds the trace context to the headers the
    /// plugins and the upstream see.
    pub fn forwarding(&mut self, headers: &mut HeaderMap) {
        self.trace.inject(headers);
    }

    /// `bytes` of the request body were read from the client (buffered whole, or until it
    /// failed): the access log's and analytics' `bytes_in`.
    pub fn body_read(&mut self, bytes: u64) {
        self.bytes_in += bytes;
    }

    /// The request body streams on, its bytes read from the client counted in `read`
    /// ([`ProxyBody::counted`]): `bytes_in` is what it holds when the request is logged.
    pub fn body_streaming(&mut self, read: Arc<UploadProgress>) {
        self.body_read = Some(read);
    }

    /// Request body bytes read from the client so far.
    fn bytes_in(&self) -> u64 {
        self.bytes_in + self.body_read.as_ref().map_or(0, |read| read.bytes())
    }

    /// Adds time spent in plugin phases.
    pub fn plugins_took(&mut self, elapsed: Duration) {
        self.plugins += elapsed;
        self.plugins_since = None;
    }

    /// Plugin phases begin at `started` (ended by [`Self::plugins_took`]).
    pub fn plugins_running(&mut self, started: Instant) {
        self.plugins_since = Some(started);
    }

    /// The upstream answered (response head) after `elapsed`.
    pub fn upstream_took(&mut self, elapsed: Duration) {
        self.upstream = Some(elapsed);
        if let Some(route) = self.route {
            route.record_upstream(elapsed);
        }
    }

    /// The request is being sent to the upstream target `addr` (a failover's next one replaces
    /// it), in a call that began at `started`: the access log's `upstream_addr`, and its
    /// `upstream_ms` so far if the client abandons the request during the call.
    pub fn upstream_calling(&mut self, upstream: &'a Arc<str>, addr: &'a Arc<str>, started: Instant) {
        self.upstream_addr = Some(addr);
        self.upstream_started = Some(started);
        self.upstream_name = Some(upstream);
    }

    /// The upstream's answer head came, with `status`.
    pub fn upstream_answered(&mut self, status: u16) {
        self.upstream_status = Some(status);
    }

    /// The request failed over: it was sent to each of `targets` first, and each failed. The
    /// access log's `upstream_failed`, before the `upstream_addr` it went on to.
    pub fn failed_over<'t>(&mut self, targets: impl Iterator<Item = &'t Arc<str>>) {
        if let Some(access) = &mut self.access {
            access.upstream_failed.extend(targets.cloned());
        }
    }

    /// The upstream call ended, answered or not, after `elapsed`: the access log's
    /// `upstream_ms`, if the request was sent to a target.
    pub fn upstream_called(&mut self, elapsed: Duration) {
        if self.upstream_addr.is_some() {
            self.upstream = Some(elapsed);
        }
    }

    /// The upstream target the request was sent to, if it was.
    pub fn upstream_addr(&self) -> Option<&str> {
        self.upstream_addr.map(|a| &**a)
    }

    /// The upstream call failed; `timeout` tells a timeout from a refused or broken connection.
    pub fn upstream_failed(&mut self, timeout: bool) {
        if let Some(route) = self.route {
            route.record_upstream_error(timeout);
        }
    }

    /// The consumer an auth plugin identified (request context key `consumer`).
    pub fn consumer(&mut self, consumer: Option<&str>) {
        if let Some(c) = consumer
            && self.consumer.as_deref() != Some(c)
        {
            self.span.record("consumer", c);
            self.consumer = Some(c.to_owned());
        }
    }

    /// Notes that the request is answered by the gateway itself (an error) or by a plugin, not
    /// with the upstream's response: a gRPC client gets such an answer in gRPC's form
    /// (`proxy::grpc::answer_for_client`), while an upstream's passes as it came.
    pub fn answered_locally(&mut self) {
        self.local_reply = true;
    }

    /// Whether [`Self::answered_locally`] was noted.
    pub fn is_local_reply(&self) -> bool {
        self.local_reply
    }

    /// Ends the record: counts the request as answered with `status` (the response's, or the
    /// HTTP status of an error a gRPC client gets as a 200 with `grpc-status`), adds the trace
    /// header if configured, and wraps the body so the access log line is written once the body
    /// has been sent.
    pub fn finish(mut self, mut response: Response<ProxyBody>, status: StatusCode) -> Response<ObservedBody> {
        if let Some(name) = &self.telemetry.response_header
            && let Ok(value) = HeaderValue::from_str(&self.trace.trace_id.to_string())
        {
            response.headers_mut().insert(name.clone(), value);
        }
        let (mut pending, sample) = self.close(status);
        // A gRPC answer's status: in its head when trailers-only, else in the trailers the
        // body ends with (read there).
        let grpc = pending.is_some() && crate::proxy::grpc::is_grpc(response.headers());
        if grpc && let Some((_, entry, _)) = &mut pending {
            entry.grpc_status = crate::proxy::grpc::status(response.headers());
        }
        // A HEAD's answer is never read by the server, whatever body it carries.
        let head = self.method == http::Method::HEAD;
        response.map(|body| ObservedBody::new(body, pending, sample).reading_grpc_status(grpc).sent_whole_if(head))
    }

    /// Counts the request as answered with `status` and exports its span; the access log line
    /// and analytics sample are returned, to be completed when the body has been sent.
    fn close(&mut self, status: StatusCode) -> (Option<PendingLine>, Option<PendingSample>) {
        self.finished = true;
        // Abandoned during plugin phases: their time so far is the plugins' too.
        if let Some(since) = self.plugins_since.take() {
            self.plugins += since.elapsed();
        }
        let telemetry = self.telemetry;
        let elapsed = self.started.elapsed();
        if let Some(path) = self.span_path.take()
            && let Some(exporter) = telemetry.otlp()
        {
            // Abandoned while the upstream was being called: its span is exported all the same,
            // for the upstream was told it is its parent (`traceparent`).
            if status == CLIENT_CLOSED
                && self.upstream.is_none()
                && let (Some(children), Some(started), Some(name)) = (&self.children, self.upstream_started, self.upstream_name)
            {
                // Its head may have come, the body being read for the response's plugins.
                let result = self.upstream_status.ok_or_else(|| "the request ended before the upstream answered".to_owned());
                super::spans::push(children, super::spans::ChildSpan::upstream(name, self.upstream_addr.cloned(), started, Instant::now(), result));
            }
            let end = SystemTime::now();
            exporter.submit(RequestSpan {
                trace: self.trace.clone(),
                start: end.checked_sub(elapsed).unwrap_or(end),
                end,
                method: self.method.clone(),
                path,
                route: self.route_id.clone(),
                status: status.as_u16(),
                request_id: self.request_id.clone(),
                consumer: self.consumer.clone(),
                started: self.started,
                children: self.children.as_ref().map(super::spans::take).unwrap_or_default(),
            });
        }
        self.span.record("status", status.as_u16());
        let route = self.route.unwrap_or(&telemetry.unrouted);
        route.record_request(&self.method, status, self.consumer.as_deref(), elapsed);
        let bytes_in = self.bytes_in();
        let sample = telemetry.analytics().map(|analytics| {
            // The consumer is moved into the access log line when there is one.
            let consumer = if self.access.is_some() { self.consumer.clone() } else { self.consumer.take() };
            let sample = Sample {
                at: self.started + elapsed,
                route: self.route_id.clone(),
                consumer,
                client_ip: self.client_ip,
                status: status.as_u16(),
                latency: elapsed,
                bytes_in,
                bytes_out: 0,
            };
            (analytics.clone(), Box::new(sample))
        });
        let pending = match (self.access.take(), telemetry.access_log()) {
            (Some(start), Some(log)) => Some((
                log.clone(),
                Box::new(AccessEntry {
                    time: start.time,
                    client_ip: start.conn.client,
                    method: self.method.clone(),
                    host: start.host,
                    protocol: start.protocol,
                    path: start.path,
                    route: self.route_id.take(),
                    status: status.as_u16(),
                    // A streamed body's bytes are added when the line is submitted, once the
                    // response has been sent: a body still streaming (a duplex call) is counted
                    // to its end.
                    bytes_in: self.bytes_in,
                    body_read: self.body_read.take(),
                    bytes_out: 0,
                    total: elapsed,
                    upstream: self.upstream.or_else(|| self.upstream_started.map(|s| s.elapsed())),
                    upstream_addr: self.upstream_addr.cloned(),
                    upstream_failed: start.upstream_failed,
                    plugins: self.plugins,
                    consumer: self.consumer.take(),
                    trace_id: self.trace.trace_id,
                    request_id: self.request_id.clone(),
                    user_agent: start.user_agent,
                    grpc_status: None,
                    aborted: None,
                }),
                self.started,
            )),
            _ => None,
        };
        (pending, sample)
    }
}

/// Status 499, nginx's "client closed request": a request that ended before the gateway
/// answered it (the client went away, or a forced shutdown cut it).
const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

impl Drop for RequestRecord<'_> {
    /// A request the gateway never answered is counted, logged and sampled all the same.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (pending, sample) = self.close(CLIENT_CLOSED);
        // No body will be sent: the line and the sample are complete now.
        drop(ObservedBody::new(ProxyBody::empty(), pending, sample));
    }
}

#[cfg(test)]
mod tests {
    use super::logged_prefix;

    /// A cut falls on a character boundary: no U+FFFD the client never sent.
    #[test]
    fn a_logged_prefix_never_splits_a_character() {
        let ua = format!("a{}", "é".repeat(200));
        let kept = logged_prefix(ua.as_bytes(), 256);
        assert_eq!(kept, format!("a{}", "é".repeat(127)), "byte 256 is inside the 128th `é`");
        assert_eq!(logged_prefix(b"short", 256), "short");
        assert_eq!(logged_prefix("ééé".as_bytes(), 4), "éé");
        assert_eq!(logged_prefix(b"ab\xffcd", 256), "ab\u{fffd}cd", "invalid bytes as before");
        assert_eq!(logged_prefix("/p".repeat(5000).as_bytes(), 4096).len(), 4096);
        // Not UTF-8 (obs-text): cut where the limit is, not backed over to nothing.
        assert_eq!(logged_prefix(&[0x80; 300], 256), "\u{fffd}".repeat(256));
    }
}
