//! Request mirroring (shadow traffic): a route's `mirror` sends a copy of a sampled share of the
//! requests it sends upstream to another upstream as well, at the same time, and discards the
//! answer (Envoy's `request_mirror_policies`, nginx's `mirror`, Traefik's mirroring service).
//!
//! The copy is the request as the route's upstream gets it: method, path and query after the
//! plugins and the route's path settings, headers after the plugins (the forwarding headers and
//! the same `X-Request-Id` included), sent to the mirror upstream's own targets with its
//! balancing, TLS, request timeout and `host_header` policy. It runs in a task of its own that
//! nothing awaits: its failures, slowness or hangs never delay or change the client's answer,
//! which is always the route's upstream's. A streamed request body cannot be read twice, so a
//! sampled request's is read whole first ([`read_body`], up to the route's `max_body_bytes`, as
//! for a plugin that reads bodies; one shorter than its `Content-Length` is refused, never
//! copied); requests not drawn stream as before. Requests a plugin answers never reach
//! [`Mirror::admit`], and protocol switches (WebSockets) are not mirrored.
//!
//! The copy is made before the request leaves ([`Ticket::prepare`]) but sent only once the
//! route's upstream call has ended, answered or failed ([`Ticket::send`]): a request the client
//! abandons (an HTTP/2 stream it resets, even with `NO_ERROR`, which ends a body early without
//! an error) has its future dropped on the way, and no copy goes.
//!
//! Bounded: at most [`MAX_IN_FLIGHT`] copies of one route's requests are in flight at once (from
//! the moment the request is drawn), per process: a reload hands the route's count on to its
//! next config ([`Mirror::new`]'s `previous`). They take places among the mirror upstream's
//! `max_requests` like any request; a request past either is simply not mirrored, counted
//! `dropped`. Each copy, its answer's body included, ends within the mirror upstream's request
//! timeout once sent; a drain does not wait for copies (they are not client connections): those
//! still running when it ends are dropped with the workers.
//!
//! A route without `mirror` pays one `Option` check ([`crate::gateway::Route::mirror`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, StatusCode, Uri, Version};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::affinity::MadeCookie;
use super::body::{self, BodyStalled, Buffered, ProxyBody};
use super::upstream::{InFlight, Upstream};
use super::{grpc, resend};
use crate::config::HostHeader;
use crate::error::GatewayError;
use crate::exchange::RequestState;
use crate::telemetry::metrics::MIRROR_OUTCOMES;
use crate::telemetry::warn_throttle::WarnThrottle;

/// Most copies of one route's requests in flight at once. A mirror that hangs holds each copy
/// (a connection, a task, the request's head and body) until its request timeout: at this bound
/// a route holds at most 64 of them (64 connections, and 64 times `max_body_bytes` at the very
/// worst), while a route whose upstream and mirror each answer in 10 ms still mirrors ~3,200
/// requests a second (a copy holds its place from its draw, through its request's upstream call,
/// to its own end).
pub const MAX_IN_FLIGHT: usize = 64;

/// The least time between two warnings of one kind (failures, drops) for one route's mirror.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Indices into the counters, in [`MIRROR_OUTCOMES`] order.
const SENT: usize = 0;
const FAILED: usize = 1;
const DROPPED: usize = 2;

/// One route's mirror: where copies go, which share of requests, and what bounds and counts them.
pub struct Mirror {
    /// The route's id, in logs.
    route: Arc<str>,
    /// The upstream copies are sent to.
    upstream: Arc<Upstream>,
    /// The share of requests mirrored, in percent (more than 0, at most 100).
    percent: f64,
    /// Places for copies in flight: [`MAX_IN_FLIGHT`], shared with the route's mirror in the
    /// configs before and after a reload.
    places: Arc<Semaphore>,
    /// `airlock_mirror_requests_total` of this route, by [`MIRROR_OUTCOMES`].
    counters: [Counter; MIRROR_OUTCOMES.len()],
    /// Failed copies, warned at most every [`WARN_INTERVAL`].
    failures: WarnThrottle,
    /// Copies not sent for want of a place, warned at most every [`WARN_INTERVAL`].
    drops: WarnThrottle,
}

/// A request drawn to be mirrored, with the places its copy holds until it ends.
pub struct Ticket {
    mirror: Arc<Mirror>,
    /// Its place among the route's [`MAX_IN_FLIGHT`].
    _place: OwnedSemaphorePermit,
    /// Its place among the mirror upstream's `max_requests`, and its `least_requests` count.
    in_flight: Option<InFlight>,
    /// Its `hash_on` key's hash for the mirror upstream, when that one has `hash_on`.
    key_hash: Option<u64>,
    /// The request's `Host` before the route's upstream's policy applied (for `preserve`).
    host: Option<HeaderValue>,
    /// Its request id, in logs.
    request_id: Arc<str>,
    /// The copy, once made ([`Ticket::prepare`]).
    copy: Option<Prepared>,
}

/// A copy made from its request as it left, waiting to be sent ([`Ticket::send`]).
struct Prepared {
    /// The request, its URI still the route's upstream's, its head not yet the mirror's.
    request: Request<ProxyBody>,
    /// A plugin set the `Host`: it goes as set.
    host_from_plugin: bool,
    /// How long the mirror may take none of the body.
    body_idle: Duration,
}

impl Mirror {
    /// The mirror of route `route`: copies of `percent` % of its upstream requests to `upstream`,
    /// counted in `counters` ([`crate::telemetry::metrics::Metrics::mirror`]). `previous`: the
    /// mirror of the route of this id in the config a reload replaces, if it had one: its places
    /// are taken over, so the copies still in flight from it count towards [`MAX_IN_FLIGHT`]
    /// (whatever upstream they went to: the bound is on this route's background work).
    pub fn new(
        route: Arc<str>,
        upstream: Arc<Upstream>,
        percent: f64,
        counters: [Counter; MIRROR_OUTCOMES.len()],
        previous: Option<&Mirror>,
    ) -> Self {
        Self {
            route,
            upstream,
            percent,
            places: previous.map_or_else(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)), |previous| previous.places.clone()),
            counters,
            failures: WarnThrottle::new(WARN_INTERVAL),
            drops: WarnThrottle::new(WARN_INTERVAL),
        }
    }

    /// The upstream copies go to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The share of requests mirrored, in percent.
    pub fn percent(&self) -> f64 {
        self.percent
    }

    /// Copies of this route's requests in flight now (those sent from the config a reload
    /// replaced included).
    pub fn in_flight(&self) -> usize {
        MAX_IN_FLIGHT.saturating_sub(self.places.available_permits())
    }

    /// Whether a copy of this request (about to be sent to the route's upstream) goes to the
    /// mirror: drawn by `percent`, not a protocol switch, and with a place free both among the
    /// route's copies in flight and the mirror upstream's `max_requests` (else not mirrored,
    /// counted `dropped`). Called before the request's body is sent: a drawn request's streamed
    /// body is then read whole ([`read_body`]). Boxed: the request's future keeps a pointer.
    /// `made`: the `hash_cookie` the route's upstream made for a request without it, which a
    /// mirror upstream hashing on the same cookie places the copy by, as it will the client's
    /// next copies.
    pub fn admit(self: &Arc<Self>, state: &RequestState, made: Option<&MadeCookie<'_>>) -> Option<Box<Ticket>> {
        if self.percent < 100.0 && fastrand::f64() * 100.0 >= self.percent {
            return None;
        }
        // A WebSocket handshake: its connection becomes a tunnel, which cannot be copied.
        if state.headers.contains_key(header::UPGRADE) {
            return None;
        }
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            self.dropped(&state.request_id, || format!("the route has {MAX_IN_FLIGHT} mirror requests in flight, its most"));
            return None;
        };
        let in_flight = match self.upstream.admit_quietly() {
            Ok(in_flight) => in_flight,
            Err(e) => {
                self.dropped(&state.request_id, || format!("the mirror upstream is at its max_requests: {e}"));
                return None;
            }
        };
        Some(Box::new(Ticket {
            mirror: self.clone(),
            _place: place,
            in_flight,
            key_hash: self.upstream.hash_on().and_then(|on| on.key_hash(state).or_else(|| made?.key_hash_for(on))),
            host: state.headers.get(header::HOST).cloned(),
            request_id: state.request_id.clone(),
            copy: None,
        }))
    }

    /// Counts a copy not sent (`why`, made only when logged).
    fn dropped(&self, request_id: &str, why: impl FnOnce() -> String) {
        self.counters[DROPPED].inc();
        let (route, upstream) = (&*self.route, &*self.upstream.name);
        match self.drops.record() {
            Some(dropped) => tracing::warn!(
                route,
                upstream,
                request_id,
                dropped_since_last_warning = dropped,
                "request not mirrored: {} (at most one such warning every 10 s per route)",
                why()
            ),
            None => tracing::debug!(route, upstream, request_id, "request not mirrored: {}", why()),
        }
    }

    /// Counts a copy that ended: answered with `status`, or failed for a reason.
    fn ended(&self, result: Result<StatusCode, String>, upstream_addr: &str, request_id: &str, took: Duration) {
        let (route, upstream) = (&*self.route, &*self.upstream.name);
        let took_ms = took.as_millis() as u64;
        match result {
            Ok(status) => {
                self.counters[SENT].inc();
                tracing::debug!(route, upstream, upstream_addr, request_id, status = status.as_u16(), took_ms, "mirror request answered (answer discarded)");
            }
            Err(reason) => {
                self.counters[FAILED].inc();
                match self.failures.record() {
                    Some(failed) => tracing::warn!(
                        route,
                        upstream,
                        upstream_addr,
                        request_id,
                        failed_since_last_warning = failed,
                        "mirror request failed (the client's answer is not affected): {reason} (at most one such warning every 10 s per route)"
                    ),
                    None => tracing::debug!(route, upstream, upstream_addr, request_id, took_ms, "mirror request failed: {reason}"),
                }
            }
        }
    }
}

impl Ticket {
    /// Makes the copy of `main` (the request as it leaves for the route's upstream, its body
    /// empty or whole), to be sent by [`Ticket::send`] once `main` has gone. `host_from_plugin`:
    /// a plugin set the `Host`, which goes as set; otherwise the mirror upstream's `host_header`
    /// decides. `body_idle`: how long the mirror may take none of the body. `None` (counted
    /// `failed`) if it cannot be made. The ticket's box holds the copy: no allocation of its own.
    pub fn prepare(mut self: Box<Self>, main: &Request<ProxyBody>, host_from_plugin: bool, body_idle: Duration) -> Option<Box<Self>> {
        // A body that cannot be sent twice: never here (a drawn request's body is read whole).
        let Some(request) = resend::copy(main) else {
            self.mirror.ended(Err("its body was streamed, not read whole".into()), "", &self.request_id, Duration::ZERO);
            return None;
        };
        self.copy = Some(Prepared { request, host_from_plugin, body_idle });
        Some(self)
    }

    /// Sends the copy made by [`Ticket::prepare`] to the mirror (its target chosen now), in a
    /// task of its own that nothing awaits: this returns at once.
    pub fn send(self: Box<Self>) {
        let Ticket { mirror, _place: place, mut in_flight, key_hash, host, request_id, copy } = *self;
        let Some(Prepared { request: mut copy, host_from_plugin, body_idle }) = copy else { return };
        let upstream = &mirror.upstream;
        let first = match key_hash {
            Some(key_hash) => upstream.pick_by(key_hash),
            None => upstream.choose(&mut in_flight),
        };
        let path = copy.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder().scheme(upstream.scheme()).authority(upstream.target(first).clone()).path_and_query(path).build();
        match uri {
            Ok(uri) => *copy.uri_mut() = uri,
            Err(e) => {
                mirror.ended(Err(format!("cannot build its URI: {e}")), upstream.addr(first), &request_id, Duration::ZERO);
                return;
            }
        }
        *copy.version_mut() = upstream.version();
        let rewrite_host = !host_from_plugin && upstream.host_header == HostHeader::Upstream;
        prepare_head(copy.headers_mut(), upstream, first, (!host_from_plugin).then_some(host));
        let timeout = upstream.request_timeout;
        tokio::spawn(async move {
            let started = Instant::now();
            let upstream = &mirror.upstream;
            let (crate::proxy::upstream::Tried { last, .. }, sent) =
                upstream.send(copy, (first, key_hash), &mut in_flight, rewrite_host, timeout, body_idle).await;
            let result = match sent {
                Ok(response) => {
                    let status = response.status();
                    let counted = response.extensions().get::<crate::proxy::upstream::CountedAsFailure>().is_some();
                    // The answer's body shares the request's timeout.
                    let left = timeout.saturating_sub(started.elapsed());
                    let body = match tokio::time::timeout(left, discard(response.into_body())).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(format!("its answer's body broke off: {e}")),
                        Err(_) => Err(format!("its answer's body did not end within {} ms", timeout.as_millis())),
                    };
                    // How the body ended is the target's success or failure (`max_fails`),
                    // unless its status counted as a failure already.
                    if !(counted && body.is_ok()) {
                        upstream.answered(last, body.as_ref().copied().map_err(|e| e as &dyn std::fmt::Display));
                    }
                    body.map(|()| status)
                }
                Err(e) => Err(e.to_string()),
            };
            // The places go back before the count moves, so a test or a scrape that sees the
            // count sees them free.
            drop((in_flight, place));
            mirror.ended(result, upstream.addr(last), &request_id, started.elapsed());
        });
    }
}

/// The copy's head, from the route upstream's: its `Host` by the mirror upstream's policy
/// (`client_host`: the request's own `Host`, if any; `None`: a plugin set it, kept), and the
/// hop-by-hop fields for its protocol (`TE: trailers` named in `Connection` over HTTP/1.1 only;
/// no `Transfer-Encoding`: its body is whole). A gRPC call's `grpc-timeout` is its timeout.
fn prepare_head(headers: &mut http::HeaderMap, upstream: &Upstream, target: usize, client_host: Option<Option<HeaderValue>>) {
    if let Some(client_host) = client_host {
        let host = match upstream.host_header {
            HostHeader::Upstream => upstream.host_value(target).cloned().or(client_host),
            HostHeader::Preserve => client_host,
        };
        match host {
            Some(host) => drop(headers.insert(header::HOST, host)),
            None => drop(headers.remove(header::HOST)),
        }
    }
    headers.remove(header::CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    if headers.contains_key(header::TE) && upstream.version() != Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("te"));
    }
    grpc::set_timeout(headers, upstream.request_timeout);
}

/// Reads an answer's body to its end, discarding it.
async fn discard(mut body: Incoming) -> Result<(), hyper::Error> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}

/// A mirrored request's streamed body, read whole so that both upstreams get all of it: at most
/// `limit` bytes (413 past it, as for a plugin that reads bodies), and cut off as a streamed
/// body is when the client sends nothing for `body_idle` (408). A body that ends short of its
/// `Content-Length` is refused (400 `client_aborted`), as one whose client closes its connection
/// mid-way is: an HTTP/2 client that resets its stream with `NO_ERROR` ends it early without an
/// error (RFC 9113 8.1), and it must not go on, to either upstream, as if whole.
pub async fn read_body(stream: ProxyBody, limit: u64, body_idle: Duration) -> Result<Buffered, GatewayError> {
    // A declared `Content-Length` is the streamed body's exact size before any of it is read.
    let declared = http_body::Body::size_hint(&stream).exact();
    let watched = stream.watched(body_idle, "a client's request body");
    let limited = http_body_util::Limited::new(watched, usize::try_from(limit).unwrap_or(usize::MAX));
    let collected = limited.collect().await.map_err(|e| client_body_error(&*e, limit))?;
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    match declared {
        Some(declared) if (bytes.len() as u64) < declared => Err(GatewayError::ClientAborted(format!(
            "the request body ended after {} of the {declared} bytes its Content-Length declared (the client abandoned it)",
            bytes.len()
        ))),
        Some(declared) if bytes.len() as u64 > declared => Err(GatewayError::BadRequest(format!(
            "the request body is {} bytes long, its Content-Length declared {declared}",
            bytes.len()
        ))),
        _ => Ok(Buffered { bytes, trailers }),
    }
}

/// What a client's body failing while it was read means: too long (413), stalled (408), cut off
/// (the client went away, [`body::is_client_abort`]), or malformed (400).
fn client_body_error(e: &(dyn std::error::Error + 'static), limit: u64) -> GatewayError {
    if body::is_length_limit(e) {
        return GatewayError::BodyTooLarge { limit };
    }
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(stalled) = err.downcast_ref::<BodyStalled>() {
            return GatewayError::ClientTimeout(format!("the client sent no more of its body for {} ms", stalled.0.as_millis()));
        }
        source = err.source();
    }
    if body::is_client_abort(e) {
        return GatewayError::ClientAborted(format!("the request body could not be read: {e}"));
    }
    GatewayError::BadRequest(format!("the request body could not be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_body_failing_is_told_apart() {
        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"0123456789"));
        let too_long = http_body_util::Limited::new(body, 5).collect().await.expect_err("over the limit");
        assert!(matches!(client_body_error(&*too_long, 5), GatewayError::BodyTooLarge { limit: 5 }));
        let stalled: body::BoxError = Box::new(BodyStalled(Duration::from_millis(250)));
        match client_body_error(&*stalled, 5) {
            GatewayError::ClientTimeout(reason) => assert!(reason.contains("250 ms"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let cut: body::BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(matches!(client_body_error(&*cut, 5), GatewayError::ClientAborted(_)));
        let broken: body::BoxError = "invalid chunk size".into();
        assert!(matches!(client_body_error(&*broken, 5), GatewayError::BadRequest(_)));
    }
}
