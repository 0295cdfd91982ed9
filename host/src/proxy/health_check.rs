//! Active health checks (`[upstreams.<name>.health_check]`): every target of an upstream is sent
//! a `GET <path>` every `interval`, traffic or not, as Envoy's, Kong's and NGINX Plus's active
//! checks do, or for a gRPC server a call to the standard health service ([`Probe::Grpc`], as
//! Envoy's `grpc_health_check`). A target that fails `unhealthy_threshold` probes in a row (no
//! connection, no response head within `timeout`, a status not in `statuses`, a gRPC answer other
//! than SERVING) is taken out of rotation
//! ([`TargetHealth::set_checked_down`]); it is put back after `healthy_threshold` passes in a
//! row. Requests never bring it back: only its probes do. A target starts in rotation.
//!
//! The probes run on tasks of their own, one per target (a hung target does not slow the others'
//! schedule), started once the gateway serves ([`start`]); they hold the upstream weakly and end,
//! abandoning a probe in flight, when a reload drops it. Each probe is a new
//! connection (closed after the head), so a probe sees what a new request would: the listener,
//! the TLS handshake and the application. That includes the name lookup: a probe resolves a
//! target's name with the upstream's own resolver, so while the DNS server fails and requests
//! connect to the target's last good addresses ([`super::dns`]), so do the probes, and the
//! target stays in rotation for as long as it answers there. Nothing of it is on the request
//! path, which only reads the verdict.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prost::Message;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::dns::LastGoodResolver;
use super::target_health::TargetHealth;
use super::tls::{self, Alpn, TlsError, TlsSettings};
use super::upstream::Upstream;
use crate::config::UpstreamProtocol;

/// The `User-Agent` of a probe, so a backend's logs can tell probes from traffic.
const USER_AGENT: &str = "airlock-health-check";

/// How an upstream's targets are probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a probe asks, and what passes.
    pub probe: Probe,
    /// The probe's `Host`; `None`: the target's `host:port`.
    pub host: Option<HeaderValue>,
    /// Time between two probes of a target.
    pub interval: Duration,
    /// Time a probe may take, connecting included.
    pub timeout: Duration,
    /// Failed probes in a row that take a target out of rotation.
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that put it back.
    pub healthy_threshold: u32,
}

/// What a probe asks, and what passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET path`: passes with one of `statuses` (`None`: any 2xx or 3xx). The body is not read.
    Http {
        /// The path (and query) probed.
        path: PathAndQuery,
        /// Statuses that pass; `None`: any 2xx or 3xx.
        statuses: Option<Vec<u16>>,
    },
    /// The gRPC health checking protocol's `grpc.health.v1.Health/Check` for `service` (`""`:
    /// the server as a whole): passes when the call succeeds and says SERVING. A gRPC server
    /// answers anything, a `GET` included, with HTTP 200, so only its own answer tells.
    Grpc {
        /// The service asked about.
        service: String,
    },
}

/// The gRPC health checking protocol's method, as a path.
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// Most bytes of a gRPC health answer read: one small message.
const GRPC_ANSWER_LIMIT: usize = 4096;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    /// The service asked about.
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`: `status` is its `ServingStatus` (1 SERVING).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    /// UNKNOWN 0, SERVING 1, NOT_SERVING 2, SERVICE_UNKNOWN 3.
    #[prost(int32, tag = "1")]
    status: i32,
}

impl Probe {
    /// Whether a `GET` probe answered with `status` passes.
    fn passes(statuses: Option<&[u16]>, status: StatusCode) -> bool {
        match statuses {
            Some(list) => list.contains(&status.as_u16()),
            None => status.is_success() || status.is_redirection(),
        }
    }

    /// The statuses that pass, as a failed probe's warning says them.
    fn expected(statuses: Option<&[u16]>) -> String {
        match statuses {
            Some(list) => list.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
            None => "2xx or 3xx".into(),
        }
    }

    /// The path a probe asks for.
    fn path(&self) -> PathAndQuery {
        match self {
            Probe::Http { path, .. } => path.clone(),
            Probe::Grpc { .. } => PathAndQuery::from_static(GRPC_HEALTH_CHECK),
        }
    }

    /// Whether `response` passes; `Err` says why not. A gRPC answer is read whole (at most
    /// [`GRPC_ANSWER_LIMIT`] bytes), its trailers included.
    async fn judge(&self, response: Response<Incoming>) -> Result<(), String> {
        let status = response.status();
        let service = match self {
            Probe::Http { statuses, .. } if Self::passes(statuses.as_deref(), status) => return Ok(()),
            Probe::Http { statuses, .. } => return Err(format!("it answered {}, expected {}", status.as_u16(), Self::expected(statuses.as_deref()))),
            Probe::Grpc { service } => service,
        };
        if status != StatusCode::OK {
            return Err(format!("it answered HTTP {} to the gRPC health check", status.as_u16()));
        }
        let (head, body) = response.into_parts();
        let content_type = head.headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
        if !content_type.starts_with(b"application/grpc") {
            let shown = String::from_utf8_lossy(&content_type[..content_type.len().min(64)]).into_owned();
            return Err(format!("it answered the gRPC health check with content-type {shown:?}: not a gRPC server"));
        }
        let answer = Limited::new(body, GRPC_ANSWER_LIMIT).collect().await.map_err(|e| format!("its gRPC health answer broke off: {e}"))?;
        let grpc_status = answer.trailers().and_then(|t| t.get("grpc-status")).or_else(|| head.headers.get("grpc-status"));
        match grpc_status.map(HeaderValue::as_bytes) {
            Some(b"0") => {}
            // 12 UNIMPLEMENTED: no health service; 5 NOT_FOUND: it does not know the service.
            Some(code) => {
                let code = String::from_utf8_lossy(code);
                return Err(format!("its gRPC health check failed with grpc-status {code} ({})", grpc_code_name(&code)));
            }
            None => return Err("it answered the gRPC health check without a grpc-status: not a gRPC server".into()),
        }
        let body = answer.to_bytes();
        let message = grpc_message(&body).ok_or("its gRPC health answer is not one uncompressed message")?;
        let serving = HealthCheckResponse::decode(message).map_err(|e| format!("its gRPC health answer does not decode: {e}"))?;
        match serving.status {
            1 => Ok(()),
            2 => Err(format!("service {service:?} is NOT_SERVING")),
            3 => Err(format!("service {service:?} is SERVICE_UNKNOWN")),
            other => Err(format!("service {service:?} is in state {other} (UNKNOWN), not SERVING")),
        }
    }

    /// The body a probe sends: nothing, or the gRPC request message, length-prefixed.
    fn body(&self) -> Bytes {
        match self {
            Probe::Http { .. } => Bytes::new(),
            Probe::Grpc { service } => {
                let message = HealthCheckRequest { service: service.clone() }.encode_to_vec();
                let mut framed = Vec::with_capacity(5 + message.len());
                framed.push(0);
                framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
                framed.extend_from_slice(&message);
                Bytes::from(framed)
            }
        }
    }
}

/// The name of a gRPC status code (`12`: `UNIMPLEMENTED`), as logs and gRPC tools say it.
fn grpc_code_name(code: &str) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    code.parse::<usize>().ok().and_then(|n| NAMES.get(n)).copied().unwrap_or("not a gRPC status code")
}

/// The one message of a gRPC answer body: a flag byte (0: uncompressed), a big-endian length
/// and that many bytes, nothing after.
fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let (length, message) = rest.split_first_chunk::<4>()?;
    (flag == 0 && usize::try_from(u32::from_be_bytes(*length)).ok()? == message.len()).then_some(message)
}

/// What an upstream with a health check keeps for it: the settings, a client that makes a new
/// connection per probe, and whether its probing task was started.
pub struct Checks {
    check: HealthCheck,
    prober: Prober,
    started: AtomicBool,
    /// Dropped with the upstream: its probing tasks end, their probes in flight abandoned.
    stop: tokio::sync::watch::Sender<()>,
}

/// A client for probes, over the upstream's transport; it keeps no connection. With its
/// connector, for HTTP/2 probes that name their own `host` ([`Prober::probe`]). Target names
/// are resolved by the upstream's own resolver, so a DNS failure the upstream's connections ride
/// out on the last good answer does not fail the probes either ([`super::dns`]).
#[derive(Clone)]
enum Prober {
    Plain(Client<HttpConnector<LastGoodResolver>, Full<Bytes>>, HttpConnector<LastGoodResolver>),
    Tls(Client<tls::UpstreamTls, Full<Bytes>>, tls::UpstreamTls),
}

impl Checks {
    /// Probes by `check`, over `protocol` (TLS when `tls` is set, verified as the upstream's own
    /// connections are), target names resolved by `resolver` (the upstream's own). Reads the TLS
    /// CA file, if any: call it off the async workers.
    pub fn new(
        check: HealthCheck,
        protocol: UpstreamProtocol,
        tls: Option<&TlsSettings>,
        connect_timeout: Duration,
        resolver: LastGoodResolver,
    ) -> Result<Self, TlsError> {
        let http2 = protocol != UpstreamProtocol::Http1;
        let connect_timeout = connect_timeout.min(check.timeout);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_max_idle_per_host(0).timer(TokioTimer::new()).http2_only(http2);
        let prober = match tls {
            None => {
                let mut connector = HttpConnector::new_with_resolver(resolver);
                connector.set_connect_timeout(Some(connect_timeout));
                connector.set_nodelay(true);
                Prober::Plain(builder.build(connector.clone()), connector)
            }
            Some(settings) => {
                let alpn = if http2 { Alpn::H2 } else { Alpn::Http1 };
                let connector = tls::connector(settings, alpn, connect_timeout, resolver)?;
                Prober::Tls(builder.build(connector.clone()), connector)
            }
        };
        Ok(Self { check, prober, started: AtomicBool::new(false), stop: tokio::sync::watch::channel(()).0 })
    }

    /// The probe of one target.
    fn request(&self, scheme: &'static str, target: &Authority, version: Version) -> Result<Request<Full<Bytes>>, String> {
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(target.clone())
            .path_and_query(self.check.probe.path())
            .build()
            .map_err(|e| format!("cannot build the probe's URI: {e}"))?;
        let host = match &self.check.host {
            Some(host) => host.clone(),
            None => HeaderValue::from_str(target.as_str()).map_err(|e| format!("cannot send the target as Host: {e}"))?,
        };
        let mut request = Request::new(Full::new(self.check.probe.body()));
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        if let Probe::Grpc { .. } = self.check.probe {
            *request.method_mut() = Method::POST;
        }
        // Over HTTP/2 the host is the `:authority` (a `host` header differing from it makes the
        // request malformed, RFC 9113 8.3.1): a configured one goes into the URI, and the probe
        // is sent on a connection made to the target ([`Prober::probe`]). HTTP/1.1 sends `Host`.
        if version == Version::HTTP_2 {
            if self.check.host.is_some() {
                let authority = Authority::try_from(host.as_bytes()).map_err(|e| format!("cannot send the health check's host as :authority: {e}"))?;
                let mut parts = request.uri().clone().into_parts();
                parts.authority = Some(authority);
                *request.uri_mut() = Uri::from_parts(parts).map_err(|e| format!("cannot build the probe's URI: {e}"))?;
            }
        } else {
            request.headers_mut().insert(header::HOST, host);
        }
        let headers = request.headers_mut();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if version == Version::HTTP_11 {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Probe::Grpc { .. } = self.check.probe {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        Ok(request)
    }
}

impl Prober {
    /// Sends one probe and judges its answer by `probe`, all within `timeout`: `Err` says why it
    /// failed. Of a `GET`, only the response head is waited for.
    ///
    /// `target` is where to connect. A request whose URI names another authority (an HTTP/2
    /// probe with its own `host`) is sent on a connection made to `target` with the connector,
    /// since the client would connect to the URI's authority; so is every HTTP/2 probe over TLS,
    /// whose connection must have agreed on `h2` (the client would speak HTTP/2 regardless).
    async fn probe(self, target: Uri, request: Request<Full<Bytes>>, probe: &Probe, timeout: Duration) -> Result<(), ProbeFailure> {
        let exchange = async {
            let own_authority = request.uri().authority() != target.authority();
            let sent = match self {
                Prober::Tls(_, mut connector) if own_authority || request.version() == Version::HTTP_2 => {
                    std::future::poll_fn(|cx| connector.poll_ready(cx)).await.map_err(|e| ProbeFailure::connect(&*e))?;
                    let io = connector.call(target).await.map_err(|e| ProbeFailure::connect(&*e))?;
                    if !io.connected().is_negotiated_h2() {
                        return Err(super::http2_pool::NO_H2_ALPN.to_owned().into());
                    }
                    send_h2(io, request).await?
                }
                Prober::Plain(_, mut connector) if own_authority => {
                    std::future::poll_fn(|cx| connector.poll_ready(cx)).await.map_err(|e| ProbeFailure::connect(&e))?;
                    let io = connector.call(target).await.map_err(|e| ProbeFailure::connect(&e))?;
                    send_h2(io, request).await?
                }
                Prober::Plain(client, _) => client.request(request).await.map_err(|e| ProbeFailure::from(super::upstream::classify(&e)))?,
                Prober::Tls(client, _) => client.request(request).await.map_err(|e| ProbeFailure::from(super::upstream::classify(&e)))?,
            };
            Ok(probe.judge(sent).await?)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis()).into()),
            Ok(verdict) => verdict,
        }
    }
}

/// Why a probe did not pass: the target failed it, or the gateway could not make it.
#[derive(Debug)]
enum ProbeFailure {
    /// The target's failure: counts towards `unhealthy_threshold`.
    Target(String),
    /// The gateway ran short of its own resources (out of file descriptors) making the probe's
    /// connection ([`super::upstream::SendError::LocalResources`]): no verdict on the target.
    Local(String),
}

impl ProbeFailure {
    /// A failed connect, told by its cause.
    fn connect(e: &(dyn std::error::Error + 'static)) -> Self {
        match super::upstream::classify(e) {
            super::upstream::SendError::LocalResources(reason) => ProbeFailure::Local(reason),
            _ => ProbeFailure::Target(format!("cannot connect: {e}")),
        }
    }
}

impl From<String> for ProbeFailure {
    fn from(reason: String) -> Self {
        ProbeFailure::Target(reason)
    }
}

impl From<super::upstream::SendError> for ProbeFailure {
    fn from(error: super::upstream::SendError) -> Self {
        match error {
            super::upstream::SendError::LocalResources(reason) => ProbeFailure::Local(reason),
            other => ProbeFailure::Target(other.to_string()),
        }
    }
}

/// Sends `request` over HTTP/2 on `io`, a connection of its own (closed once the answer and the
/// sender are dropped).
async fn send_h2<T>(io: T, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(|e| format!("the probe failed: {e}"))
}

/// Starts probing `upstream`'s targets, if it has a health check and its probing has not started
/// yet (a reload keeps an unchanged upstream, and its tasks). Call it once the gateway serves,
/// from within the runtime. Each target gets a task of its own, so a target whose probes hang
/// does not slow the others'.
pub fn start(upstream: &Arc<Upstream>) {
    let Some(checks) = upstream.checks() else { return };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::error!(upstream = &*upstream.name, "health checks not started: no async runtime");
        return;
    };
    if checks.started.swap(true, Ordering::Relaxed) {
        return;
    }
    for target in 0..upstream.targets.len() {
        runtime.spawn(probe_target(Arc::downgrade(upstream), target, checks.stop.subscribe()));
    }
}

/// Probes target `i` every `interval` (start to start) until its upstream is dropped: the
/// upstream is held only between probes, never across one, and a probe in flight is abandoned
/// (its connection closed) as soon as the upstream goes (`stopped`).
async fn probe_target(upstream: Weak<Upstream>, i: usize, mut stopped: tokio::sync::watch::Receiver<()>) {
    let Some(interval) = upstream.upgrade().and_then(|up| up.checks().map(|c| c.check.interval)) else { return };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut streak = Streak::default();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => return,
        }
        let Some((prober, target, request, probe, timeout)) = upstream.upgrade().and_then(|up| {
            let checks = up.checks()?;
            let target = Uri::builder().scheme(up.scheme()).authority(up.target(i).clone()).path_and_query("/").build();
            let request = checks.request(up.scheme(), up.target(i), up.version());
            Some((checks.prober.clone(), target, request, checks.check.probe.clone(), checks.check.timeout))
        }) else {
            return;
        };
        let probed = async {
            match (target, request) {
                (Ok(target), Ok(request)) => prober.probe(target, request, &probe, timeout).await,
                (Err(e), _) => Err(format!("cannot build the target's URI: {e}").into()),
                (_, Err(reason)) => Err(reason.into()),
            }
        };
        let verdict = tokio::select! {
            verdict = probed => verdict,
            _ = stopped.changed() => return,
        };
        let Some(up) = upstream.upgrade() else { return };
        let Some(checks) = up.checks() else { return };
        let verdict = match verdict {
            Ok(()) => Ok(()),
            Err(ProbeFailure::Target(reason)) => Err(reason),
            // The gateway's shortage says nothing of the target: its streak stands.
            Err(ProbeFailure::Local(reason)) => {
                tracing::debug!(upstream = &*up.name, upstream_addr = &**up.addr(i), "health check not made: {reason}");
                continue;
            }
        };
        streak.record(verdict, &checks.check, up.target_health(i), &up.name, up.addr(i));
    }
}

/// One target's probes passed or failed in a row.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    passed: u32,
    failed: u32,
}

impl Streak {
    /// Counts one probe's verdict; takes the target out of rotation or puts it back when its
    /// threshold is reached, and says so once.
    fn record(&mut self, verdict: Result<(), String>, check: &HealthCheck, health: &TargetHealth, upstream: &str, target: &str) {
        match verdict {
            Ok(()) => {
                self.failed = 0;
                self.passed = self.passed.saturating_add(1);
                if health.is_checked_down() && self.passed >= check.healthy_threshold {
                    health.set_checked_down(false);
                    tracing::info!(upstream, upstream_addr = target, "target back in rotation: {} health checks passed in a row", self.passed);
                }
            }
            Err(reason) => {
                self.passed = 0;
                self.failed = self.failed.saturating_add(1);
                if !health.is_checked_down() && self.failed >= check.unhealthy_threshold {
                    health.set_checked_down(true);
                    tracing::warn!(
                        upstream,
                        upstream_addr = target,
                        "target out of rotation after {} failed health checks in a row: {reason}",
                        self.failed
                    );
                } else {
                    tracing::debug!(upstream, upstream_addr = target, "health check failed: {reason}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(statuses: Option<Vec<u16>>) -> HealthCheck {
        HealthCheck {
            probe: Probe::Http { path: PathAndQuery::from_static("/healthz"), statuses },
            host: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 3,
        }
    }

    #[test]
    fn statuses_pass_by_the_list_or_by_class() {
        assert!(Probe::passes(None, StatusCode::OK) && Probe::passes(None, StatusCode::FOUND));
        assert!(!Probe::passes(None, StatusCode::NOT_FOUND) && !Probe::passes(None, StatusCode::SERVICE_UNAVAILABLE));
        let listed: &[u16] = &[200, 429];
        assert!(Probe::passes(Some(listed), StatusCode::OK) && Probe::passes(Some(listed), StatusCode::TOO_MANY_REQUESTS));
        assert!(!Probe::passes(Some(listed), StatusCode::NO_CONTENT));
        assert_eq!(Probe::expected(Some(listed)), "200, 429");
    }

    #[test]
    fn the_grpc_probe_is_one_framed_health_check_request() {
        let probe = Probe::Grpc { service: "demo.v1.Users".into() };
        assert_eq!(probe.path().as_str(), "/grpc.health.v1.Health/Check");
        // Field 1 (string), length 13, then the name: as protoc would encode it.
        let mut expected = vec![0, 0, 0, 0, 15, 0x0a, 13];
        expected.extend_from_slice(b"demo.v1.Users");
        assert_eq!(probe.body().as_ref(), &expected[..]);
        assert_eq!(Probe::Grpc { service: String::new() }.body().as_ref(), &[0, 0, 0, 0, 0], "an empty message for the whole server");
    }

    #[test]
    fn grpc_codes_are_named() {
        assert_eq!(grpc_code_name("12"), "UNIMPLEMENTED");
        assert_eq!(grpc_code_name("5"), "NOT_FOUND");
        assert_eq!(grpc_code_name("16"), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name("17"), "not a gRPC status code");
        assert_eq!(grpc_code_name("x"), "not a gRPC status code");
    }

    #[test]
    fn a_grpc_answer_is_one_uncompressed_message() {
        assert_eq!(grpc_message(&[0, 0, 0, 0, 2, 0x08, 0x01]), Some(&[0x08, 0x01][..]));
        assert_eq!(grpc_message(&[0, 0, 0, 0, 0]), Some(&[][..]), "UNKNOWN is encoded as nothing");
        assert_eq!(grpc_message(&[1, 0, 0, 0, 2, 0x08, 0x01]), None, "compressed");
        assert_eq!(grpc_message(&[0, 0, 0, 0, 3, 0x08, 0x01]), None, "short");
        assert_eq!(grpc_message(&[0, 0, 0, 0, 1, 0x08, 0x01]), None, "more after the message");
        assert_eq!(grpc_message(&[0, 0, 0]), None);
    }

    #[test]
    fn thresholds_take_a_target_out_and_put_it_back() {
        let check = check(None);
        let health = TargetHealth::default();
        let mut streak = Streak::default();
        streak.record(Err("down".into()), &check, &health, "u", "t");
        assert!(!health.is_checked_down(), "one failure is below the threshold");
        streak.record(Ok(()), &check, &health, "u", "t");
        streak.record(Err("down".into()), &check, &health, "u", "t");
        assert!(!health.is_checked_down(), "a pass in between starts the count over");
        streak.record(Err("down".into()), &check, &health, "u", "t");
        assert!(health.is_checked_down());
        streak.record(Ok(()), &check, &health, "u", "t");
        streak.record(Ok(()), &check, &health, "u", "t");
        assert!(health.is_checked_down(), "two passes are below the healthy threshold");
        streak.record(Ok(()), &check, &health, "u", "t");
        assert!(!health.is_checked_down());
    }
}
