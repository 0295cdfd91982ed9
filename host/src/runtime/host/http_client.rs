//! `airlock:plugin/http-client`: outbound HTTP calls to the origins a plugin was granted
//! (capability `http-client`).
//!
//! The grant (`[plugins.<name>.http_client]`) fixes where a plugin may connect: every call's URL
//! must have one of the granted `scheme://host:port` origins. The connection goes to that origin
//! and `Host` is set from it, so no header a plugin (or a client, through a plugin) writes can
//! steer a call elsewhere; redirects are returned, never followed. Calls wait asynchronously, and
//! the wait is kept out of the plugin's CPU deadline; the grant's timeout and response size bound
//! them instead.
//!
//! A grant names a host by an IP address or by a name. The address a name resolves to is the
//! name owner's choice, not the operator's: a vendor whose telemetry host is granted could point
//! it at `169.254.169.254` (a cloud's metadata service) or `127.0.0.1` (the gateway's own admin
//! listener). So a call by name never connects to a loopback, link-local or unspecified address
//! ([`refused_by_name`]), unless the name is `localhost`, which means loopback; a grant of an IP
//! address connects to it, whatever it is, and private ranges stay reachable (internal services
//! are what gateways call).
//!
//! A failed call is logged by the gateway too (`outbound call failed`, with its `kind`), but at
//! most once per [`FAILURE_LOG_INTERVAL`] per grant at `warn`, counting the calls that failed
//! since: while a granted origin is down every request through the plugin fails its call, and any
//! client can send requests. The others are `debug` lines.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioExecutor;

use super::HostState;
use crate::exchange::RequestState;
use crate::telemetry::spans::{ChildKind, ChildSpan};
use crate::telemetry::trace_context::{SpanId, TRACEPARENT, TRACESTATE, new_span_id, parse_traceparent, traceparent};
use super::airlock::plugin::http_client::{Host, HttpError, IncomingResponse, OutgoingRequest};

/// Default bound of one call, request sent to response read (`http_client.timeout_ms`).
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default largest response body a plugin receives (`http_client.max_response_bytes`): a JWKS
/// document or an authorization answer is a few KiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// Longest a grant's failed calls go without a `warn` line (when calls fail): the rest are logged
/// at `debug`, and the next warning says how many failed in between.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Headers a plugin cannot set on an outbound call: the gateway sets `host` and the framing.
const DROPPED_HEADERS: &[&str] =
    &["host", "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"];

/// The HTTP(S) client shared by every plugin granted `http-client`: pooled connections, system
/// root certificates, HTTP/1.1 and HTTP/2 by ALPN, names resolved by [`GrantResolver`].
#[derive(Clone)]
pub struct OutboundClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<GrantResolver>>, Full<Bytes>>,
}

impl OutboundClient {
    /// Builds the client. Reads the system's root certificates: call it off the async workers.
    pub fn new() -> Result<Self, String> {
        let mut http = HttpConnector::new_with_resolver(GrantResolver::default());
        // The TLS connector above it checks the scheme (as `HttpsConnectorBuilder::build` sets).
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self { client: Client::builder(TokioExecutor::new()).build(https) })
    }
}

/// hyper-util's resolver (`getaddrinfo` on the blocking pool), keeping only the addresses a
/// grant by name may reach ([`reachable_by_name`]). The connector calls it for names alone: a
/// URL whose host is an IP address connects to that address, and only a grant of that address
/// lets such a URL through.
#[derive(Clone)]
struct GrantResolver {
    gai: GaiResolver,
}

impl Default for GrantResolver {
    fn default() -> Self {
        Self { gai: GaiResolver::new() }
    }
}

impl tower_service::Service<Name> for GrantResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ResolveError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let lookup = self.gai.call(name.clone());
        Box::pin(async move {
            let addrs = lookup.await.map_err(ResolveError::Lookup)?;
            reachable_by_name(name.as_str(), addrs).map(Vec::into_iter)
        })
    }
}

/// Why a granted name gave no address to connect to.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    /// The name did not resolve (as `getaddrinfo` says).
    #[error(transparent)]
    Lookup(std::io::Error),
    /// Every address it resolves to is one a grant by name does not reach ([`refused_by_name`]).
    #[error(
        "`{0}` resolves only to loopback/link-local addresses, which a grant by name does not reach \
         (to call this host, grant its address, or `localhost`)"
    )]
    OnlyRefused(String),
}

/// AWS's instance metadata service over IPv6 (Nitro instances): a unique local address, which
/// [`refused_by_name`] otherwise lets through as a private one.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Alibaba Cloud's instance metadata service: an address in the shared (carrier-grade NAT)
/// range `100.64.0.0/10`, which [`refused_by_name`] otherwise lets through.
const ALIBABA_METADATA_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);

/// The addresses `name` resolved to that a call may connect to: all of them for `localhost`
/// (and names under it, which RFC 6761 6.3 reserves for loopback), else those
/// [`refused_by_name`] leaves. A name resolving to some refused addresses and some others
/// connects to the others; one resolving to refused addresses only is an error saying so.
fn reachable_by_name(name: &str, addrs: impl Iterator<Item = SocketAddr>) -> Result<Vec<SocketAddr>, ResolveError> {
    let addrs: Vec<SocketAddr> = addrs.collect();
    if names_loopback(name) {
        return Ok(addrs);
    }
    let resolved = addrs.len();
    let kept: Vec<SocketAddr> = addrs.into_iter().filter(|a| !refused_by_name(a.ip())).collect();
    if kept.is_empty() && resolved > 0 {
        return Err(ResolveError::OnlyRefused(name.to_owned()));
    }
    Ok(kept)
}

/// Whether `name` is `localhost` or a name under it (a trailing dot, any case): granted by the
/// operator to call the gateway's own host, so its loopback addresses are what it means.
fn names_loopback(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).as_bytes();
    const SUFFIX: &[u8] = b".localhost";
    name.eq_ignore_ascii_case(b"localhost")
        || name.len() > SUFFIX.len() && name[name.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX)
}

/// Whether a grant by name must not connect to `ip`: the gateway's own host (loopback, and the
/// unspecified `0.0.0.0/8` and `::`, which connect to it), link-local addresses
/// (`169.254.0.0/16`, `fe80::/10`: where clouds serve instance metadata and credentials, at
/// `169.254.169.254`), the IPv4-mapped IPv6 forms of those (`::ffff:127.0.0.1`) and their NAT64
/// forms (RFC 6052's well-known prefix, `64:ff9b::a9fe:a9fe`: a NAT64 gateway that does not
/// filter them would carry the call to the IPv4 address), AWS's IPv6 metadata address
/// `fd00:ec2::254` and Alibaba Cloud's `100.100.100.200`. Private ranges (`10.0.0.0/8`, `192.168.0.0/16`,
/// `fc00::/7`) are not refused: the internal services a gateway calls live there.
fn refused_by_name(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.octets()[0] == 0 || v4 == ALIBABA_METADATA_V4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| nat64_embedded(v6)) {
            Some(v4) => refused_by_name(IpAddr::V4(v4)),
            None => v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == AWS_METADATA_V6,
        },
    }
}

/// The IPv4 address a NAT64 address under the well-known prefix `64:ff9b::/96` (RFC 6052 2.1)
/// stands for.
fn nat64_embedded(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let [a, b, c, d, e, f, g, h] = v6.segments();
    ([a, b, c, d, e, f] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| std::net::Ipv4Addr::from((u32::from(g) << 16) | u32::from(h)))
}

/// `scheme://host:port`, normalised: what a grant allows and what a call's URL is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses an origin as an operator writes it in a grant (`https://idp.example.com`,
    /// `http://127.0.0.1:8081`); a path other than `/`, a query or user info are errors.
    pub fn parse_grant(text: &str) -> Result<Self, String> {
        let uri: Uri = text.parse().map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("`{text}`: give only `scheme://host[:port]`, without a path or query"));
        }
        Self::of(&uri).map_err(|e| format!("`{text}`: {e}"))
    }

    /// The origin a request URL connects to.
    fn of(uri: &Uri) -> Result<Self, String> {
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => "http",
            Some(s) if s.eq_ignore_ascii_case("https") => "https",
            Some(other) => return Err(format!("scheme `{other}` is not http or https")),
            None => return Err("not an absolute URL".into()),
        };
        let authority = uri.authority().ok_or("no host")?;
        if authority.as_str().contains('@') {
            return Err("user info in a URL is not allowed".into());
        }
        let host = host_of(authority.host())?;
        let port = authority.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Self { scheme, host, port })
    }

    /// The scheme, host and port, for a span naming the origin called.
    fn into_parts(self) -> (&'static str, String, u16) {
        (self.scheme, self.host, self.port)
    }
}

/// A URL's host, lower-case, without the brackets of an IPv6 address. Brackets around anything
/// else (`[localhost]`, `[127.0.0.1]`) are refused: such a URL would pass for the origin of what
/// is inside them, and go out with `Host: [localhost]`.
fn host_of(host: &str) -> Result<String, String> {
    let host = match host.strip_prefix('[') {
        Some(inner) => match inner.strip_suffix(']') {
            Some(inner) if inner.parse::<Ipv6Addr>().is_ok() => inner,
            _ => return Err(format!("`{host}`: brackets are for an IPv6 address")),
        },
        None if host.contains(']') => return Err(format!("`{host}`: brackets are for an IPv6 address")),
        None => host,
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok(host.to_ascii_lowercase())
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// One plugin's `http-client` grant: where it may call, how long, how much it may read.
pub struct HttpClientGrant {
    /// Origins calls may go to.
    pub allow: Vec<Origin>,
    /// Longest a call may take.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// The shared client.
    pub client: OutboundClient,
    /// When the grant's failed calls were last logged at `warn`, and how many failed since.
    failures: crate::telemetry::warn_throttle::WarnThrottle,
}

impl std::fmt::Debug for HttpClientGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientGrant")
            .field("allow", &self.allow)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl HttpClientGrant {
    /// A grant of calls to `allow`, sharing `client` with every other grant of the gateway.
    pub fn new(allow: Vec<Origin>, timeout_ms: u64, max_response_bytes: u64, client: &OutboundClient) -> Self {
        Self {
            allow,
            timeout: Duration::from_millis(timeout_ms),
            max_response_bytes: usize::try_from(max_response_bytes).unwrap_or(usize::MAX),
            client: client.clone(),
            failures: crate::telemetry::warn_throttle::WarnThrottle::new(FAILURE_LOG_INTERVAL),
        }
    }

    /// Parses `url` and checks its origin against the grant.
    fn check(&self, url: &str) -> Result<Uri, HttpError> {
        let uri: Uri = url.parse().map_err(|e| HttpError::Invalid(format!("`{url}` is not a URL: {e}")))?;
        let origin = Origin::of(&uri).map_err(|e| HttpError::Invalid(format!("`{url}`: {e}")))?;
        if !self.allow.contains(&origin) {
            return Err(HttpError::Denied(format!("{origin} is not in this plugin's `http_client.allow`")));
        }
        Ok(uri)
    }

    /// Checks `req` against the grant and turns it into the request to send.
    fn prepare(&self, req: OutgoingRequest) -> Result<(Request<Full<Bytes>>, Duration), HttpError> {
        let uri = self.check(&req.url)?;
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| HttpError::Invalid(format!("`{}` is not an HTTP method", req.method)))?;
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in req.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::Invalid(format!("`{name}` is not a header name")))?;
            if DROPPED_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("proxy-") {
                continue;
            }
            let value = HeaderValue::from_bytes(&value)
                .map_err(|_| HttpError::Invalid(format!("the value of `{name}` is not a valid header value")))?;
            builder = builder.header(name, value);
        }
        let body = Full::new(req.body.map(Bytes::from).unwrap_or_default());
        let request = builder.body(body).map_err(|e| HttpError::Invalid(e.to_string()))?;
        let asked = Duration::from_millis(u64::from(req.timeout_ms));
        let timeout = if asked.is_zero() { self.timeout } else { asked.min(self.timeout) };
        Ok((request, timeout))
    }

    /// Sends a prepared request and reads the response whole.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<IncomingResponse, CallFailure> {
        let response = self.client.client.request(request).await.map_err(|e| CallFailure::of_request(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, self.max_response_bytes).collect().await.map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                CallFailure::from(HttpError::TooLarge)
            } else {
                // Connected, and the head read: the body broke off or was malformed.
                CallFailure::response(format!("the response body broke off: {}", crate::error::chain(&*e)))
            }
        })?;
        Ok(IncomingResponse {
            status: parts.status.as_u16(),
            headers: parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
            body: body.to_bytes().to_vec(),
        })
    }

    /// Logs a failed call: at `warn` when [`FAILURE_LOG_INTERVAL`] has passed since the grant's
    /// last warning (with how many calls failed since), else at `debug`. Outside the per-call log
    /// budget when a warning: the interval bounds those, and a warning dropped for a spent budget
    /// would lose the count.
    fn log_failure(&self, log: &super::log::LogBudget, url: &str, failure: &CallFailure) {
        let plugin = log.plugin();
        // The URL and the error (which may quote the plugin's URL or header name) are the
        // plugin's text: on one line, and cut (a line break in them would start a line that
        // reads as the gateway's own).
        let url = super::log::one_line(super::log::shown(url));
        let described = failure.describe();
        let error = super::log::one_line(super::log::truncate(&described, 1024));
        match self.failures.record() {
            Some(failed) => tracing::warn!(
                plugin,
                request_id = log.request_id().as_deref(),
                %url,
                kind = failure.kind,
                failed_since_last_warning = failed,
                "outbound call failed: {error} ({failed} failed call(s) of this plugin since the last such warning; \
                 logged at most every {}s, the others at debug)",
                FAILURE_LOG_INTERVAL.as_secs()
            ),
            None if tracing::enabled!(tracing::Level::DEBUG) && log.take() => {
                tracing::debug!(plugin, request_id = log.request_id().as_deref(), %url, kind = failure.kind, "outbound call failed: {error}");
            }
            None => {}
        }
    }
}

/// Why a call failed: what the plugin gets (the contract's `http-error`) and what the log calls it
/// (`kind`). The contract has no case for an origin that was reached but broke the exchange off or
/// answered something that is not HTTP: the plugin gets those as `connect` (no response, the
/// origin unavailable: what it can do about it is the same), with a text that says what happened,
/// and the log names them `response`, not `connect`. A granted name that resolves only to
/// addresses a grant by name does not reach ([`refused_by_name`]) is `connect` for the plugin
/// too (no connection could be made; the contract's `denied` is for an origin outside the grant,
/// which `allows` answers, while a name's addresses may change from one call to the next), and
/// `denied` in the log: the gateway refused it, which the operator should tell from an outage.
#[derive(Debug)]
struct CallFailure {
    /// `denied`, `invalid`, `connect`, `response`, `timeout` or `too_large`.
    kind: &'static str,
    /// What the plugin gets.
    error: HttpError,
}

impl From<HttpError> for CallFailure {
    fn from(error: HttpError) -> Self {
        let kind = match &error {
            HttpError::Denied(_) => "denied",
            HttpError::Invalid(_) => "invalid",
            HttpError::Connect(_) => "connect",
            HttpError::Timeout => "timeout",
            HttpError::TooLarge => "too_large",
        };
        Self { kind, error }
    }
}

impl CallFailure {
    /// The origin was reached, but the exchange failed: `connect` for the plugin (see above).
    fn response(text: String) -> Self {
        Self { kind: "response", error: HttpError::Connect(text) }
    }

    /// Classifies the client's error: no connection (refused, not resolved, TLS handshake
    /// failed), a request hyper refused to send, or a failed exchange on a made connection.
    fn of_request(e: &hyper_util::client::legacy::Error) -> Self {
        let chain = crate::error::chain(e);
        if e.is_connect() {
            if let Some(refused) = refused_resolution(e) {
                return Self { kind: "denied", error: HttpError::Connect(refused.to_string()) };
            }
            return HttpError::Connect(chain).into();
        }
        let hyper = std::error::Error::source(e).and_then(|s| s.downcast_ref::<hyper::Error>());
        match hyper {
            Some(h) if h.is_user() => HttpError::Invalid(chain).into(),
            Some(h) if h.is_parse() => Self::response(format!("connected, but the answer is not valid HTTP: {chain}")),
            Some(h) if h.is_incomplete_message() || h.is_closed() || h.is_canceled() => {
                Self::response(format!("connected, but the connection closed before a complete response: {chain}"))
            }
            _ => Self::response(format!("connected, but the exchange failed: {chain}")),
        }
    }

    /// The failure in words, for the log.
    fn describe(&self) -> std::borrow::Cow<'_, str> {
        match &self.error {
            HttpError::Denied(m) | HttpError::Invalid(m) | HttpError::Connect(m) => std::borrow::Cow::Borrowed(m),
            HttpError::Timeout => "no complete response within the timeout".into(),
            HttpError::TooLarge => "the response body is larger than the grant's `max_response_bytes`".into(),
        }
    }
}

/// The [`ResolveError::OnlyRefused`] behind a failed connect, if that is why it failed (the
/// resolver's error is the cause of the connector's, itself the client error's source).
fn refused_resolution<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e ResolveError> {
    let mut source = Some(e);
    while let Some(error) = source {
        if let Some(refused @ ResolveError::OnlyRefused(_)) = error.downcast_ref::<ResolveError>() {
            return Some(refused);
        }
        source = error.source();
    }
    None
}

/// Continues the request's trace on an outbound call: unless the plugin set `traceparent`
/// itself, the call carries the request's trace id and sampled flag with a span of its own as
/// parent (returned, for the call's exported span), and the request's `tracestate`, so the
/// called service (an auth server, a JWKS host) joins the request's trace as its upstream does.
/// Outside a request (a call while configured), or when the request's `traceparent` is not
/// valid (a plugin before this one changed it), none is added.
fn continue_trace(request: Option<&RequestState>, headers: &mut http::HeaderMap) -> Option<SpanId> {
    if headers.contains_key(TRACEPARENT) {
        return None;
    }
    let parent = parse_traceparent(request?.headers.get(TRACEPARENT)?.as_bytes())?;
    let span_id = new_span_id();
    let value = HeaderValue::from_bytes(&traceparent(parent.trace_id, span_id, parent.flags)).ok()?;
    headers.insert(TRACEPARENT, value);
    if !headers.contains_key(TRACESTATE)
        && let Some(state) = request?.headers.get(TRACESTATE)
    {
        headers.insert(TRACESTATE, state.clone());
    }
    Some(span_id)
}

/// What the exported span of an outbound call names, taken before the request is sent: made
/// only when the request's spans are collected ([`crate::telemetry::spans::current`]).
struct OutboundSpan {
    method: String,
    origin: (&'static str, String, u16),
    span_id: u64,
}

impl OutboundSpan {
    /// The span of `request`, whose id is `span_id` when the called service was told it.
    fn of(request: &Request<Full<Bytes>>, span_id: Option<SpanId>) -> Option<Self> {
        crate::telemetry::spans::current()?;
        Some(Self {
            method: request.method().as_str().to_owned(),
            // Checked against the grant already: parsed as the grant check parses it.
            origin: Origin::of(request.uri()).ok()?.into_parts(),
            span_id: span_id.unwrap_or_else(new_span_id).0,
        })
    }

    /// The span of the call `plugin` began at `start`, which got a status or failed.
    fn finish(self, plugin: &str, start: std::time::Instant, answer: Result<u16, &'static str>) -> ChildSpan {
        let (status, error) = match answer {
            Ok(status) => (Some(status), None),
            Err(kind) => (None, Some(kind)),
        };
        let kind = ChildKind::Outbound { plugin: plugin.to_owned(), method: self.method, origin: self.origin, status, error, span_id: self.span_id };
        ChildSpan { kind, start, end: std::time::Instant::now() }
    }
}

impl Host for HostState {
    async fn send(&mut self, request: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
        let Some(grant) = self.http.clone() else {
            return Err(HttpError::Denied("this plugin was not granted `http-client`".into()));
        };
        let url = request.url.clone();
        let outcome = match grant.prepare(request) {
            Ok((mut request, timeout)) => {
                let span_id = continue_trace(self.request.as_deref(), request.headers_mut());
                let traced = OutboundSpan::of(&request, span_id);
                let waited = std::time::Instant::now();
                let call = tokio::time::timeout(timeout, grant.send(request));
                let outcome = call.await.unwrap_or_else(|_| Err(HttpError::Timeout.into()));
                // Seen past its timeout, the call waited on a busy worker: the plugin's wall
                // limit counts the timeout, not the worker's delay.
                self.clock.excuse(waited.elapsed().saturating_sub(timeout));
                if let Some(traced) = traced {
                    let answer = outcome.as_ref().map(|r| r.status).map_err(|f| f.kind);
                    crate::telemetry::spans::record(|| traced.finish(&self.plugin, waited, answer));
                }
                outcome
            }
            Err(e) => Err(e.into()),
        };
        match outcome {
            Ok(r) => {
                tracing::debug!(plugin = %self.plugin, url = %super::log::one_line(super::log::shown(&url)), status = r.status, "outbound call");
                Ok(r)
            }
            Err(failure) => {
                grant.log_failure(&self.log, &url, &failure);
                Err(failure.error)
            }
        }
    }

    async fn allows(&mut self, url: String) -> Result<(), HttpError> {
        match &self.http {
            Some(grant) => grant.check(&url).map(drop),
            None => Err(HttpError::Denied("this plugin was not granted `http-client`".into())),
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalise_default_ports_and_case() {
        let a = Origin::parse_grant("HTTPS://IdP.Example.com").unwrap();
        let b = Origin::of(&"https://idp.example.com:443/keys?x=1".parse().unwrap()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "https://idp.example.com:443");
        let other_port = Origin::of(&"https://idp.example.com:8443/".parse().unwrap()).unwrap();
        assert_ne!(a, other_port);
    }

    #[test]
    fn grants_refuse_paths_user_info_and_other_schemes() {
        assert!(Origin::parse_grant("https://idp.example.com/keys").unwrap_err().contains("without a path"));
        assert!(Origin::parse_grant("ftp://idp.example.com").unwrap_err().contains("not http or https"));
        assert!(Origin::of(&"http://user@evil.example".parse().unwrap()).unwrap_err().contains("user info"));
    }

    /// Brackets hold an IPv6 address, nothing else: `[localhost]` passed for the origin of
    /// `localhost` and went out with `Host: [localhost]`.
    #[test]
    fn brackets_hold_only_an_ipv6_address() {
        let of = |url: &str| Origin::of(&url.parse().unwrap());
        for url in ["http://[localhost]:18202/", "http://[127.0.0.1]/", "http://[LOCALHOST]/x", "http://[::1/"] {
            if let Ok(uri) = url.parse::<Uri>() {
                let e = Origin::of(&uri).unwrap_err();
                assert!(e.contains("brackets are for an IPv6 address"), "{url}: {e}");
            }
        }
        let v6 = of("http://[::1]:8080/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.to_string().as_str()), ("::1", "http://[::1]:8080"));
        assert_eq!(Origin::parse_grant("http://[::FFFF:127.0.0.1]:8080").unwrap(), of("http://[::ffff:127.0.0.1]:8080/").unwrap());
        // A call to the bracketed name is refused as invalid, whatever the grant.
        let grant = grant_to("http://localhost:18202");
        assert!(matches!(grant.check("http://[localhost]:18202/"), Err(HttpError::Invalid(m)) if m.contains("brackets")));
        assert!(grant.check("http://localhost:18202/").is_ok());
    }

    /// What a grant by name does not reach: the gateway's own host, link-local addresses (cloud
    /// metadata), their IPv4-mapped and NAT64 forms and AWS's IPv6 metadata address; private and
    /// public addresses stay reachable.
    #[test]
    fn a_grant_by_name_reaches_neither_loopback_nor_link_local_addresses() {
        for refused in [
            "127.0.0.1", "127.0.1.1", "127.255.255.254", "169.254.169.254", "169.254.0.1", "0.0.0.0", "0.1.2.3", "::1", "::",
            "fe80::1", "febf:ffff::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0", "fd00:ec2::254", "100.100.100.200",
            "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::", "::ffff:100.100.100.200",
        ] {
            assert!(refused_by_name(refused.parse().unwrap()), "{refused} is refused");
        }
        for reached in [
            "10.0.0.1", "192.168.1.1", "172.16.0.1", "100.64.0.1", "93.184.216.34", "169.253.255.255", "169.255.0.1", "128.0.0.1",
            "fc00::1", "fd00:ec2::253", "fec0::1", "2001:db8::1", "::ffff:10.0.0.1", "ff02::1",
            "64:ff9b::5db8:d822", "64:ff9b:1::7f00:1",
        ] {
            assert!(!refused_by_name(reached.parse().unwrap()), "{reached} is reached");
        }
    }

    /// A name resolving to refused and other addresses connects to the others only; one
    /// resolving to refused addresses only is an error naming it; `localhost` (and names under
    /// it) means loopback.
    #[test]
    fn a_name_keeps_the_addresses_it_may_reach() {
        let addrs = |list: &[&str]| list.iter().map(|a| SocketAddr::new(a.parse().unwrap(), 443)).collect::<Vec<_>>();
        let mixed = addrs(&["127.0.0.1", "10.1.2.3", "169.254.169.254", "2001:db8::1"]);
        assert_eq!(reachable_by_name("api.vendor.example", mixed.clone().into_iter()).unwrap(), addrs(&["10.1.2.3", "2001:db8::1"]));
        let e = reachable_by_name("api.vendor.example", addrs(&["127.0.0.1", "::1"]).into_iter()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`api.vendor.example` resolves only to loopback/link-local addresses, which a grant by name does not reach \
             (to call this host, grant its address, or `localhost`)"
        );
        for loopback in ["localhost", "LocalHost", "localhost.", "admin.localhost", "a.b.LOCALHOST."] {
            assert_eq!(reachable_by_name(loopback, mixed.clone().into_iter()).unwrap(), mixed, "{loopback}");
        }
        for not_loopback in ["notlocalhost", "localhost.example.com", "xlocalhost", ".localhost"] {
            assert!(reachable_by_name(not_loopback, addrs(&["127.0.0.1"]).into_iter()).is_err(), "{not_loopback}");
        }
        assert_eq!(reachable_by_name("empty.example", std::iter::empty()).unwrap(), Vec::new(), "nothing resolved: the connector says so");
    }

    /// A grant of calls to `origin`, with a short timeout.
    fn grant_to(origin: &str) -> HttpClientGrant {
        let client = OutboundClient::new().expect("the system's root certificates");
        HttpClientGrant::new(vec![Origin::parse_grant(origin).unwrap()], 2_000, 1024, &client)
    }

    async fn call(grant: &HttpClientGrant, url: &str) -> CallFailure {
        let request = OutgoingRequest { method: "GET".into(), url: url.into(), headers: Vec::new(), body: None, timeout_ms: 0 };
        let (request, _) = grant.prepare(request).unwrap();
        grant.send(request).await.expect_err("the call fails")
    }

    /// A target that accepts a connection, reads a little and writes `answer`, then closes.
    async fn answering(answer: &'static [u8]) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(answer).await;
                let _ = tcp.shutdown().await;
            }
        });
        addr
    }

    /// Through the real resolver: a granted name that resolves to loopback only (this machine's
    /// own name, from /etc/hosts, when it does) is refused, `denied` in the log and `connect`
    /// for the plugin, while `localhost` reaches the same target.
    #[tokio::test]
    async fn a_granted_name_resolving_to_loopback_is_not_connected_to() {
        use std::net::ToSocketAddrs;
        let addr = answering(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let grant = grant_to(&format!("http://localhost:{}", addr.port()));
        let request = OutgoingRequest { method: "GET".into(), url: format!("http://localhost:{}/", addr.port()), headers: Vec::new(), body: None, timeout_ms: 0 };
        let (request, _) = grant.prepare(request).unwrap();
        assert_eq!(grant.send(request).await.expect("`localhost` is reached").status, 204);

        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
        let resolved: Vec<SocketAddr> = (hostname.as_str(), 80).to_socket_addrs().map(Iterator::collect).unwrap_or_default();
        if hostname.is_empty() || names_loopback(&hostname) || resolved.is_empty() || !resolved.iter().all(|a| a.ip().is_loopback()) {
            eprintln!("skipped: this machine's name `{hostname}` does not resolve to loopback only ({resolved:?})");
            return;
        }
        let origin = format!("http://{hostname}:{}", addr.port());
        let failure = call(&grant_to(&origin), &format!("{origin}/")).await;
        assert_eq!(failure.kind, "denied", "{failure:?}");
        let expected = format!("`{}` resolves only to loopback/link-local addresses", hostname.to_ascii_lowercase());
        assert!(matches!(&failure.error, HttpError::Connect(m) if m.starts_with(&expected)), "{failure:?}");
    }

    #[tokio::test]
    async fn a_failed_exchange_on_a_made_connection_is_not_a_connect_failure() {
        // Nothing listens: a connect failure.
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let failure = call(&grant_to(&format!("http://{refused}")), &format!("http://{refused}/")).await;
        assert_eq!(failure.kind, "connect", "{failure:?}");
        assert!(matches!(failure.error, HttpError::Connect(_)), "{failure:?}");

        // Connected, and answered with something that is not HTTP, or an invalid header.
        for answer in [&b"SSH-2.0-OpenSSH_9.6\r\n"[..], b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"] {
            let addr = answering(answer).await;
            let failure = call(&grant_to(&format!("http://{addr}")), &format!("http://{addr}/")).await;
            assert_eq!(failure.kind, "response", "{failure:?}");
            assert!(failure.describe().contains("not valid HTTP"), "{failure:?}");
        }

        // Connected, and closed before any answer.
        let addr = answering(b"").await;
        let failure = call(&grant_to(&format!("http://{addr}")), &format!("http://{addr}/")).await;
        assert_eq!(failure.kind, "response", "{failure:?}");
        assert!(failure.describe().starts_with("connected, but"), "{failure:?}");

        // A body that breaks off after the head.
        let addr = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort").await;
        let failure = call(&grant_to(&format!("http://{addr}")), &format!("http://{addr}/")).await;
        assert_eq!(failure.kind, "response", "{failure:?}");
        assert!(failure.describe().contains("body broke off"), "{failure:?}");
    }
}
