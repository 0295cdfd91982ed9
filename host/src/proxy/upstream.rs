//! Upstreams: named groups of targets, balanced round-robin (or by the requests in flight to
//! each, `balance = "least_requests"`: [`Upstream::choose`]), each with keep-alive connections
//! per request worker speaking the upstream's protocol: HTTP/1.1 (cleartext or TLS, in
//! [`Http1Pool`]), HTTP/2 with prior knowledge (h2c), or HTTP/2 over TLS negotiated by ALPN (h2).
//! HTTP/2 connections are shared: requests to one target are multiplexed on one connection per
//! worker, more only while each carries all the streams its server allows ([`Http2Pool`]), which
//! names the request's host as its `:authority`. A target given by name is looked up for each
//! new connection (never for a request on a pooled one) by one [`LastGoodResolver`] per
//! upstream, whose last good answer for the name stands in for a failed lookup ([`super::dns`]).
//!
//! Failover: a target that cannot be connected to (refused, connect timeout, TLS handshake
//! failed: nothing was sent) is left for the next one, each target tried at most once per
//! request and all of it within the request's deadline; and a target failing `max_fails` times
//! in a row is skipped for `fail_timeout` ([`super::target_health`]). A failure is what nginx
//! counts for `max_fails`: a failed connect, an exchange the target broke off or answered with
//! something not HTTP, or no response head within the route's timeout (a target that accepts
//! and then hangs); not a client's own body failing, and not an answer, whatever its status,
//! unless the upstream lists it in `retry_on` (then an idempotent request with a whole body goes
//! to the next target, as after a connect failure; so does one whose connection the target
//! closed or reset before any response head, with `retry_on_reset`). Both pools hand back,
//! untouched, a request they could not connect for, so it goes to the next target whatever its
//! body.
//!
//! Not a failure either: a connect the gateway itself could not make, out of file descriptors
//! (`EMFILE`, `ENFILE`: one HTTP/2 client connection's streams can each need an upstream
//! connection, past what `crate::connections::connection_limit` budgets) or of socket buffers
//! or memory (`ENOBUFS`, `ENOMEM`). Counting it marked healthy targets down for `fail_timeout`,
//! an outage outlasting the shortage; it is answered 503 `gateway_overloaded` instead, no other
//! target tried (each would fail alike), and warned about at most every 10 s
//! ([`SendError::LocalResources`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;

use super::affinity::{self, HashCookie, HashOn};
use super::body::ProxyBody;
use super::counted::{CountingConnector, OpenConnections};
use super::dns::LastGoodResolver;
use super::health_check::{Checks, HealthCheck};
use super::http1_pool::{Http1Error, Http1Pool};
use super::http2_pool::{Http2Error, Http2Pool};
use super::http2_streams::OpenStream;
use super::resend::{self, ResendArming};
use super::target_health::{HealthPolicy, Marked, TargetHealth};
use super::tls::{self, Alpn, TlsError, TlsSettings};
use crate::config::{Balance, HostHeader, UpstreamProtocol};
use crate::error::GatewayError;

/// Default most idle keep-alive connections kept per target.
pub const DEFAULT_MAX_IDLE: usize = 256;

/// One upstream.
pub struct Upstream {
    /// Its name in the config.
    pub name: Arc<str>,
    /// Its targets, `host:port`.
    pub targets: Vec<Authority>,
    /// `Host` policy.
    pub host_header: HostHeader,
    /// Time allowed from sending the request to the response headers.
    pub request_timeout: Duration,
    /// The protocol spoken to every target.
    pub protocol: UpstreamProtocol,
    /// True if connections are TLS (`https://` targets, or protocol `h2`).
    pub tls: bool,
    /// Connections to its targets open now (pooled idle ones included).
    pub open_connections: OpenConnections,
    next: AtomicUsize,
    /// The turn of requests that found every target out of rotation (all marked down, or
    /// failing their health checks): they still go round-robin over them, as Envoy's panic mode
    /// and nginx spread such requests, not one target taking them all (each such request moved
    /// `next` on by one per target looked at, so its own first turn named the same target every
    /// time). Moved on by one per such request, touched only then.
    out_turn: AtomicUsize,
    /// One round of targets by weight (indices into `targets`, interleaved): `pick` takes the
    /// next entry. `0..n` when every weight is the same.
    round: Box<[u32]>,
    /// Per target (in `targets` order): its address as logged, `Host` value and health.
    slots: Box<[TargetSlot]>,
    /// One set of connections per request worker ([`crate::workers`]), so a request's upstream
    /// connection is driven on the thread serving it.
    clients: Box<[Transport]>,
    /// What it was built with, so a reload can tell whether it may be kept ([`Self::built_as`]).
    settings: UpstreamSettings,
    /// Its active health check, when it has one ([`super::health_check`]).
    checks: Option<Checks>,
    /// Places for requests in flight, with `max_requests` ([`Upstream::admit`]).
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
    /// Requests in flight per target (in `targets` order), with `balance = "least_requests"`
    /// only ([`Upstream::choose`]): a round-robin upstream has none and touches none.
    loads: Option<Arc<[AtomicU32]>>,
    /// Requests refused for want of a place, warned at most every 10 s.
    overloads: crate::telemetry::warn_throttle::WarnThrottle,
    /// Connects the gateway could not make for want of its own resources ([`SendError::LocalResources`]),
    /// warned at most every 10 s.
    shortages: crate::telemetry::warn_throttle::WarnThrottle,
    /// Resolves target names for every new connection, the health check's included, keeping
    /// each name's last good answer for when a lookup fails ([`super::dns`]).
    resolver: LastGoodResolver,
}

/// The targets [`Upstream::send`] sent a request to.
#[derive(Debug)]
pub struct Tried {
    /// The target that answered, or that was tried last.
    pub last: usize,
    /// The targets tried before `last`, each failed (refused, reset, a `retry_on` status, no
    /// answer within `try_timeout`), in the order tried; empty unless the request failed over.
    pub failed_before: Vec<usize>,
}

/// Marks an answer [`Upstream::send`] returns although it counted it as its target's failure
/// (a `retry_on` status it could not retry): however its body ends, it is no success.
#[derive(Debug, Clone, Copy)]
pub struct CountedAsFailure;

/// An upstream's answer whose body is still to come, and where it comes from: settles the
/// exchange for the target's health once the body's fate is known. Dropped unsettled (the body
/// came whole, was buffered, or its client went away), a success; [`ResponseOrigin::failed`]
/// before the head goes on (the gateway answers 502), or [`ResponseOrigin::broke_off`] after it,
/// when the client's response can only be cut short, a failure towards `max_fails`. Without it a
/// body breaking off passed for a success everywhere (a 2xx in the metrics and the access log,
/// no warning, the target's failures reset by its head), though the target broke the exchange
/// off as surely as one refusing the connection.
pub struct ResponseOrigin {
    via: Arc<RouteUpstream>,
    target: usize,
    request_id: Arc<str>,
    settled: bool,
}

/// A route's upstream, with what names a failure of its answers in the route's terms: made once
/// per route, so that each response ([`ResponseOrigin`]) holds one pointer shared by both cores
/// rather than three, each counted up and down on a cache line the cores pass back and forth.
pub struct RouteUpstream {
    /// The route's upstream.
    pub upstream: Arc<Upstream>,
    /// The route's id.
    route: Arc<str>,
    /// The route's `airlock_upstream_errors_total{kind="unavailable"}`.
    errors: Option<prometheus_client::metrics::counter::Counter>,
}

impl RouteUpstream {
    /// `upstream` as route `route` calls it; `errors` is counted when an answer's body breaks off.
    pub fn new(upstream: Arc<Upstream>, route: Arc<str>, errors: Option<prometheus_client::metrics::counter::Counter>) -> Self {
        Self { upstream, route, errors }
    }
}

impl ResponseOrigin {
    /// `response`, answered to `request_id` by target `target` of the route's upstream (`via`).
    pub fn new<B>(response: &Response<B>, (via, target): (Arc<RouteUpstream>, usize), request_id: Arc<str>) -> Self {
        let settled = response.extensions().get::<CountedAsFailure>().is_some();
        Self { via, target, request_id, settled }
    }

    /// The answer was refused before its head went on (the gateway's 502 says why, and counts
    /// it): a failure of the target towards `max_fails`.
    pub fn failed(mut self, reason: &dyn std::fmt::Display) {
        self.settled = true;
        self.via.upstream.answered(self.target, Err(reason));
    }

    /// The body broke off (or stalled) for `reason` after its head went on: a warning under the
    /// request's id, an upstream error counted, and a failure of the target towards `max_fails`.
    pub fn broke_off(mut self, reason: &dyn std::fmt::Display) {
        self.settled = true;
        let upstream = &self.via.upstream;
        tracing::warn!(
            request_id = &*self.request_id,
            route = &*self.via.route,
            upstream = &*upstream.name,
            upstream_addr = &**upstream.addr(self.target),
            "the upstream's response body broke off after its head was passed on, so the client's response is cut short (or, if nothing of it had been written yet, the client gets none: its connection or stream is closed): {reason}"
        );
        if let Some(errors) = &self.via.errors {
            errors.inc();
        }
        upstream.answered(self.target, Err(reason));
    }
}

impl Drop for ResponseOrigin {
    fn drop(&mut self) {
        if !self.settled {
            self.via.upstream.answered(self.target, Ok(()));
        }
    }
}

/// What a request holds of its upstream while in flight: its place among `max_requests`, and
/// with `balance = "least_requests"` its count on the target it was sent to (moved to the next
/// target on a failover). Given back when the response has been sent (the response body holds
/// it, [`ProxyBody::holding`]) or dropped; a round-robin upstream without `max_requests` makes none.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Its place among `max_requests` ([`Upstream::admit`]), held to be given back when dropped.
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Its count on its target ([`Upstream::choose`]).
    load: Option<TargetLoad>,
    /// Its stream on an HTTP/2 connection, counted against the server's cap
    /// ([`super::http2_streams`]).
    stream: Option<OpenStream>,
}

impl InFlight {
    /// Counts the request on target `i` instead of the one it was counted on (a failover).
    fn moved_to(&mut self, i: usize) {
        if let Some(load) = &mut self.load {
            load.moved_to(i);
        }
    }
}

/// One request counted in flight on one target of a `least_requests` upstream, until dropped.
#[derive(Debug)]
struct TargetLoad {
    /// The upstream's counts, one per target (shared: the request may outlive a reload).
    loads: Arc<[AtomicU32]>,
    /// The target it is counted on.
    target: usize,
}

impl TargetLoad {
    /// Counts one more request on `target`.
    fn new(loads: Arc<[AtomicU32]>, target: usize) -> Self {
        if let Some(count) = loads.get(target) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        Self { loads, target }
    }

    /// Moves the count to `target`.
    fn moved_to(&mut self, target: usize) {
        if target == self.target {
            return;
        }
        if let Some(count) = self.loads.get(target) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(count) = self.loads.get(self.target) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
        self.target = target;
    }
}

impl Drop for TargetLoad {
    fn drop(&mut self) {
        if let Some(count) = self.loads.get(self.target) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What an upstream keeps per target, made once and shared by every request.
struct TargetSlot {
    /// `host:port`, as the access log, warnings and spans name the target.
    addr: Arc<str>,
    /// Its `Host` header value (`host_header = "upstream"`).
    host_value: Option<HeaderValue>,
    /// Connect failures in a row, and whether it is skipped.
    health: TargetHealth,
    /// Its weight (1 unless given; 0: out of rotation, [`TargetSlot::in_rotation`]).
    weight: u32,
    /// Its address's hash, for `hash_on` ([`affinity::hash_key`]).
    hash: u64,
}

impl TargetSlot {
    /// False for a target of weight 0: never sent a request, not even on failover.
    fn in_rotation(&self) -> bool {
        self.weight > 0
    }
}

/// One worker's connections: plain TCP, or TLS on top of it; all counted.
enum Transport {
    /// HTTP/1.1, over TCP.
    Http1Plain(Arc<Http1Pool<CountingConnector<HttpConnector<LastGoodResolver>>>>),
    /// HTTP/1.1, over TLS.
    Http1Tls(Arc<Http1Pool<CountingConnector<tls::UpstreamTls>>>),
    /// HTTP/2 with prior knowledge (h2c).
    H2Plain(Arc<Http2Pool<CountingConnector<HttpConnector<LastGoodResolver>>>>),
    /// HTTP/2 over TLS (h2).
    H2Tls(Arc<Http2Pool<CountingConnector<tls::UpstreamTls>>>),
}

/// Settings an upstream is built with.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Idle keep-alive timeout of pooled connections.
    pub idle_timeout: Duration,
    /// Most idle connections per target, over all workers.
    pub max_idle: usize,
    /// Request workers: each gets its own pool.
    pub workers: usize,
    /// `Host` policy.
    pub host_header: HostHeader,
    /// HTTP/1.1, h2c or h2.
    pub protocol: UpstreamProtocol,
    /// TLS settings; `Some` makes every connection TLS.
    pub tls: Option<TlsSettings>,
    /// Most header lines an HTTP/1.1 response may carry (`limits.max_response_headers`; 502 past it).
    pub max_response_headers: usize,
    /// Most bytes of header lines a response may carry (`limits.max_response_header_bytes`;
    /// 502 past it): what a client is sent is bounded as what a plugin may add is.
    pub max_response_header_bytes: usize,
    /// When a target is marked down (`max_fails`, `fail_timeout_ms`).
    pub health: HealthPolicy,
    /// How targets are probed (`health_check`), if they are.
    pub health_check: Option<HealthCheck>,
    /// Each target's weight, in `targets` order (0: out of rotation); empty: 1 each.
    pub weights: Vec<u32>,
    /// Statuses on which an idempotent request with a whole body goes to the next target.
    pub retry_on: Vec<u16>,
    /// Whether such a request also goes to the next target when its connection was closed or
    /// reset before any response head (`retry_on_reset`).
    pub retry_on_reset: bool,
    /// How long one target has to send such a request's response head before the request goes
    /// to the next target (`try_timeout_ms`), if limited: a hung target is left for the next
    /// rather than holding the request until the route's timeout.
    pub try_timeout: Option<Duration>,
    /// What a request's target is chosen by, when not round-robin ([`super::affinity`]).
    pub hash_on: Option<HashOn>,
    /// The `hash_on` cookie made for a client that came without it (`hash_cookie`), if any.
    pub hash_cookie: Option<HashCookie>,
    /// Most requests in flight at once (`max_requests`), if limited.
    pub max_requests: Option<u32>,
    /// How a request's target is chosen when not by `hash_on` (`balance`).
    pub balance: Balance,
}

/// One attempt at one target.
enum Attempt {
    /// The response head came in; over HTTP/2, with its stream on a kept connection.
    Answered(Response<Incoming>, Option<OpenStream>),
    /// Connecting failed: nothing was sent. The request, if it can be sent elsewhere.
    ConnectFailed(SendError, Option<Box<Request<ProxyBody>>>),
    /// The exchange failed after connecting; `true` when the connection was closed or reset
    /// before any response head came in (the request may or may not have been processed).
    Failed(SendError, bool),
    /// The target did not process the request (HTTP/2: a refused stream, a graceful `GOAWAY`, an
    /// extended CONNECT refused) and it could not be sent again: a failure of the request, not
    /// of the target.
    NotProcessed(SendError),
    /// No response head within `try_timeout` (a request that can be sent again only).
    TimedOut(Duration),
}

impl Upstream {
    /// Builds an upstream; `targets` must be non-empty. With TLS this reads certificate files:
    /// call it off the async workers.
    pub fn new(name: &str, targets: Vec<Authority>, settings: UpstreamSettings) -> Result<Self, TlsError> {
        let open_connections = OpenConnections::default();
        // One for all the workers' pools: a sign one sees arms them all.
        let arming = Arc::new(ResendArming::default());
        let workers = settings.workers.max(1);
        // An HTTP/1.1 pool keeps one list for every target of its worker: its bound is the
        // per-target one times the targets.
        let max_idle = settings.max_idle.div_ceil(workers);
        // One for every worker's connections and the health check: what one lookup learnt
        // serves them all.
        let resolver = LastGoodResolver::new(name);
        let clients = (0..workers)
            .map(|_| Self::client(&settings, &targets, max_idle, (&open_connections, &arming), &resolver))
            .collect::<Result<Box<[_]>, _>>()?;
        let checks = match &settings.health_check {
            Some(check) => {
                let (protocol, tls) = (settings.protocol, settings.tls.as_ref());
                Some(Checks::new(check.clone(), protocol, tls, settings.connect_timeout, resolver.clone())?)
            }
            None => None,
        };
        let slots = targets
            .iter()
            .enumerate()
            .map(|(i, t)| TargetSlot {
                addr: t.as_str().into(),
                host_value: HeaderValue::from_str(t.as_str()).ok(),
                health: TargetHealth::default(),
                weight: settings.weights.get(i).copied().unwrap_or(1),
                hash: affinity::hash_key(t.as_str().as_bytes()),
            })
            .collect();
        let round = weighted_round(&settings.weights, targets.len());
        let loads = (settings.balance == Balance::LeastRequests).then(|| targets.iter().map(|_| AtomicU32::new(0)).collect());
        Ok(Self {
            name: name.into(),
            slots,
            targets,
            host_header: settings.host_header,
            request_timeout: settings.request_timeout,
            protocol: settings.protocol,
            tls: settings.tls.is_some(),
            open_connections,
            next: AtomicUsize::new(0),
            out_turn: AtomicUsize::new(0),
            round,
            clients,
            in_flight: settings.max_requests.map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize))),
            loads,
            overloads: crate::telemetry::warn_throttle::WarnThrottle::new(Duration::from_secs(10)),
            shortages: crate::telemetry::warn_throttle::WarnThrottle::new(Duration::from_secs(10)),
            settings,
            checks,
            resolver,
        })
    }

    /// A place for one more request in flight: `Ok(None)` without `max_requests`; an error when
    /// every place is taken (the request is not sent: Envoy's circuit breaker, nginx's
    /// `max_conns` for a whole upstream). Warned at most every 10 s, with the count refused.
    pub fn admit(&self) -> Result<Option<InFlight>, SendError> {
        self.admit_quietly().inspect_err(|_| {
            if let Some(refused) = self.overloads.record() {
                tracing::warn!(
                    upstream = &*self.name,
                    max_requests = self.settings.max_requests.unwrap_or_default(),
                    refused_since_last_warning = refused,
                    "upstream at max_requests: requests answered 503 upstream_overloaded (at most one such warning every 10 s)"
                );
            }
        })
    }

    /// [`Upstream::admit`] without its warning: for a request that is simply not sent when every
    /// place is taken (a mirror's copy, [`super::mirror`], counted there).
    pub fn admit_quietly(&self) -> Result<Option<InFlight>, SendError> {
        let Some(places) = &self.in_flight else { return Ok(None) };
        match places.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(InFlight { _place: Some(permit), load: None, stream: None })),
            Err(_) => Err(SendError::Overloaded(self.settings.max_requests.unwrap_or_default())),
        }
    }

    /// Whether this upstream is what `targets` and `settings` would build, so that a reload may
    /// keep it, with its pooled connections and its targets' health, instead of building a new
    /// one that connects again (a TLS handshake per connection for `https://` targets). Not with
    /// a `tls.ca_file` or a client certificate (`tls.cert`, `tls.key`): the files may have changed
    /// at the same paths (a rotated CA or certificate), and a reload must read them again.
    pub fn built_as(&self, targets: &[Authority], settings: &UpstreamSettings) -> bool {
        let reads_files = settings.tls.as_ref().is_some_and(|tls| tls.ca_file.is_some() || tls.client_cert.is_some());
        !reads_files && self.targets == targets && self.settings == *settings
    }

    /// One worker's connections to `targets`, counted in `open`: over HTTP/1.1 at most
    /// `max_idle` idle per target (kept in one list for all of them); over HTTP/2 one per target,
    /// kept unless `max_idle` is 0.
    fn client(
        settings: &UpstreamSettings,
        targets: &[Authority],
        max_idle: usize,
        (open, arming): (&OpenConnections, &Arc<ResendArming>),
        resolver: &LastGoodResolver,
    ) -> Result<Transport, TlsError> {
        let http2 = settings.protocol != UpstreamProtocol::Http1;
        let kept = max_idle.saturating_mul(targets.len());
        Ok(match &settings.tls {
            None => {
                let mut connector = HttpConnector::new_with_resolver(resolver.clone());
                connector.set_connect_timeout(Some(settings.connect_timeout));
                connector.set_nodelay(true);
                connector.enforce_http(true);
                let connector = CountingConnector::new(connector, open.clone());
                if http2 {
                    Transport::H2Plain(Http2Pool::new(connector, Scheme::HTTP, targets, (max_idle, settings.max_response_headers), settings.idle_timeout, arming.clone()))
                } else {
                    Transport::Http1Plain(Http1Pool::new(connector, Scheme::HTTP, settings.max_response_headers, kept, settings.idle_timeout, arming.clone()))
                }
            }
            Some(tls_settings) => {
                let alpn = if http2 { Alpn::H2 } else { Alpn::Http1 };
                let connector = CountingConnector::new(tls::connector(tls_settings, alpn, settings.connect_timeout, resolver.clone())?, open.clone());
                if http2 {
                    Transport::H2Tls(Http2Pool::new(connector, Scheme::HTTPS, targets, (max_idle, settings.max_response_headers), settings.idle_timeout, arming.clone()))
                } else {
                    Transport::Http1Tls(Http1Pool::new(connector, Scheme::HTTPS, settings.max_response_headers, kept, settings.idle_timeout, arming.clone()))
                }
            }
        })
    }

    /// The URI scheme requests to this upstream carry: `https` over TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// The HTTP version requests to this upstream are sent with.
    pub fn version(&self) -> Version {
        match self.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => Version::HTTP_2,
        }
    }

    /// The next target's index, round-robin by weight. A turn that falls on a target marked down
    /// is passed on to the next turn (not to the next target, which would get the down one's
    /// whole share on top of its own), so the others share its requests by their weights. When
    /// every target is marked down, the first turn's all the same (a request is never refused
    /// for it).
    pub fn pick(&self) -> usize {
        if self.slots.len() == 1 {
            return 0;
        }
        let len = self.round.len().max(1);
        let turn = |t: usize| self.round.get(t % len).map_or(0, |&i| i as usize);
        let first = turn(self.next.fetch_add(1, Ordering::Relaxed));
        if self.usable(first) {
            return first;
        }
        for _ in 1..len {
            let i = turn(self.next.fetch_add(1, Ordering::Relaxed));
            if self.usable(i) {
                return i;
            }
        }
        turn(self.out_turn.fetch_add(1, Ordering::Relaxed))
    }

    /// The target for a request not placed by `hash_on`: the next in the weighted round
    /// ([`Upstream::pick`]), or with `balance = "least_requests"` the least loaded
    /// (`pick_least`, below), which `in_flight` then counts until the response is done.
    /// A round-robin upstream touches neither `in_flight` nor any count.
    pub fn choose(&self, in_flight: &mut Option<InFlight>) -> usize {
        let Some(loads) = &self.loads else { return self.pick() };
        let i = self.pick_least(loads);
        in_flight.get_or_insert_default().load = Some(TargetLoad::new(loads.clone(), i));
        i
    }

    /// `least_requests`: the target with the fewest requests in flight for its weight among
    /// those in rotation (weight 0 never, marked down skipped), compared as nginx's `least_conn`
    /// compares them ([`least_loaded`]).
    ///
    /// Ties go by the weighted round: the scan starts at the target whose turn it is
    /// ([`weighted_round`]) and the first of the least loaded from there wins. So with nothing
    /// in flight (sequential requests, light traffic) requests go exactly as round-robin sends
    /// them, by weight (nginx's `least_conn` falls back to weighted round-robin among ties too),
    /// and equal targets share them evenly instead of the first listed taking every tie. A full
    /// scan rather than Envoy's power of two random choices: an upstream has a few targets (one
    /// relaxed load each), a scan always finds the least loaded (two random choices may compare
    /// two busy targets while a third is idle) and is deterministic; P2C pays off with hundreds
    /// of hosts. Choosing and counting are not one atomic step: two requests choosing at the
    /// same instant may take the same target, which the next choices even out.
    fn pick_least(&self, loads: &[AtomicU32]) -> usize {
        let n = self.slots.len();
        if n == 1 {
            return 0;
        }
        // The turn's target, or as round-robin passes a target out of rotation by, the next turn
        // whose target is in it: its ties then go to the following turns' targets by weight, not
        // all to the target listed after it.
        let len = self.round.len().max(1);
        let turn = |t: usize| self.round.get(t % len).map_or(0, |&i| i as usize);
        let up = |i: usize| self.slots[i].in_rotation() && !self.slots[i].health.is_down();
        let mut start = turn(self.next.fetch_add(1, Ordering::Relaxed));
        for _ in 1..len {
            if up(start) {
                break;
            }
            start = turn(self.next.fetch_add(1, Ordering::Relaxed));
        }
        if !up(start) {
            // Every target out: a turn of their own, so they still share such requests.
            start = turn(self.out_turn.fetch_add(1, Ordering::Relaxed));
        }
        let load = |i: usize| loads.get(i).map_or(0, |count| count.load(Ordering::Relaxed));
        // Marked down: skipped, read without a side effect (`usable` then claims the one request
        // that tries a target again once its `fail_timeout` has run out).
        let up = least_loaded(start, n, |i| (!self.slots[i].health.is_down()).then(|| (load(i), self.slots[i].weight)));
        match up {
            Some(i) if self.usable(i) => i,
            // Another request took the one try of a target whose `fail_timeout` ran out.
            Some(_) => self.pick(),
            // Every target marked down: the least loaded all the same (never refused for it).
            None => least_loaded(start, n, |i| Some((load(i), self.slots[i].weight))).unwrap_or(start),
        }
    }

    /// How its targets are chosen when not by `hash_on` (`balance`).
    pub fn balance(&self) -> Balance {
        self.settings.balance
    }

    /// Requests in flight to each target now, in `targets` order: counted with
    /// `balance = "least_requests"` only (`None` otherwise).
    pub fn target_loads(&self) -> Option<Vec<u32>> {
        self.loads.as_ref().map(|loads| loads.iter().map(|count| count.load(Ordering::Relaxed)).collect())
    }

    /// What a request's target is chosen by (`hash_on`), when not round-robin.
    pub fn hash_on(&self) -> Option<&HashOn> {
        self.settings.hash_on.as_ref()
    }

    /// The `hash_on` cookie it makes for a client that came without one (`hash_cookie`), if any.
    pub fn hash_cookie(&self) -> Option<&HashCookie> {
        self.settings.hash_cookie.as_ref()
    }

    /// The target for a request whose `hash_on` key hashes to `key_hash`: the one that scores the key
    /// highest among those in rotation ([`affinity::score`]); when it is marked down, the next
    /// best, so only a down target's keys move. When every target is marked down, the key's
    /// own target all the same (a request is never refused for it).
    pub fn pick_by(&self, key_hash: u64) -> usize {
        let n = self.slots.len();
        if n == 1 {
            return 0;
        }
        let rank = |i: usize| self.rank(key_hash, i);
        let mut below: Option<(f64, usize)> = None;
        let mut best = None;
        for _ in 0..n {
            let next = (0..n)
                .filter(|&i| self.slots[i].in_rotation())
                .map(rank)
                .filter(|r| below.is_none_or(|b| rank_order(r, &b).is_lt()))
                .max_by(rank_order);
            let Some((score, i)) = next else { break };
            best.get_or_insert(i);
            if self.slots[i].health.available(&self.settings.health) {
                return i;
            }
            below = Some((score, i));
        }
        best.unwrap_or(0)
    }

    /// Target `i`'s rank for the `hash_on` key hashing to `key_hash`: its score, and its index
    /// to break ties ([`rank_order`]).
    fn rank(&self, key_hash: u64, i: usize) -> (f64, usize) {
        (affinity::score(key_hash, self.slots[i].hash, self.slots[i].weight), i)
    }

    /// Whether an answer with `status` is one to try the next target on (`retry_on`).
    fn retries_on(&self, status: http::StatusCode) -> bool {
        status.as_u16() >= 400 && self.settings.retry_on.contains(&status.as_u16())
    }

    /// Whether target `i` may be sent a request now: weighted in, and not marked down.
    fn usable(&self, i: usize) -> bool {
        let slot = &self.slots[i];
        slot.in_rotation() && slot.health.available(&self.settings.health)
    }

    /// Target `i`'s authority (`host:port`).
    pub fn target(&self, i: usize) -> &Authority {
        &self.targets[i % self.targets.len()]
    }

    /// Target `i`'s `Host` header value.
    pub fn host_value(&self, i: usize) -> Option<&HeaderValue> {
        self.slot(i).host_value.as_ref()
    }

    /// Target `i`'s address as logs and spans name it (shared, not copied).
    pub fn addr(&self, i: usize) -> &Arc<str> {
        &self.slot(i).addr
    }

    fn slot(&self, i: usize) -> &TargetSlot {
        &self.slots[i % self.slots.len()]
    }

    /// Target `i`'s health, as its health check records it.
    pub(super) fn target_health(&self, i: usize) -> &TargetHealth {
        &self.slot(i).health
    }

    /// Its health check, if it has one.
    pub(super) fn checks(&self) -> Option<&Checks> {
        self.checks.as_ref()
    }

    /// Takes over what `previous` (the upstream of this name a reload replaces) knew of the
    /// targets both have: a change of weights, of a setting, or of the other targets (or a
    /// `tls.ca_file` read again) does not put a target known to be down back in rotation.
    pub fn inherit_health(&self, previous: &Upstream) {
        for (slot, target) in self.slots.iter().zip(&self.targets) {
            if let Some(j) = previous.targets.iter().position(|t| t == target) {
                slot.health.inherit(&previous.slots[j].health, self.checks.is_some());
            }
        }
        // And the last good answer for each target name, so a reload while DNS is failing does
        // not leave the rebuilt upstream without one.
        self.resolver.inherit(&previous.resolver);
    }

    /// Failed lookups of target names answered with the name's last good addresses, for
    /// `airlock_upstream_dns_fallbacks_total` ([`super::dns`]).
    pub fn dns_fallbacks(&self) -> u64 {
        self.resolver.fallbacks()
    }

    /// Target `i`'s weight (1 unless given; 0 drains it).
    pub fn weight(&self, i: usize) -> u32 {
        self.slot(i).weight
    }

    /// Whether target `i` is out of rotation now: weight 0, or marked down (passively or by its
    /// health check).
    pub fn target_down(&self, i: usize) -> bool {
        let slot = self.slot(i);
        !slot.in_rotation() || slot.health.is_down()
    }

    /// Failures counted against target `i` so far, for `airlock_upstream_target_failures_total`.
    pub fn target_failures(&self, i: usize) -> u64 {
        self.slot(i).health.failures_total()
    }

    /// Sends `request` (whose URI already names target `first`, chosen for the `hash_on` key
    /// hashing to `key_hash` if there is one) and waits for the response headers; returns them,
    /// or the error, with the targets it was sent to ([`Tried`]). An answer with a body counts for
    /// the target's health once the caller knows how its body ended ([`ResponseOrigin`],
    /// [`Upstream::answered`]): its head alone is no success.
    ///
    /// A target that cannot be connected to, or (for an idempotent request with a whole body)
    /// whose answer's status is in `retry_on`, that reset the request before answering
    /// (`retry_on_reset`), or that sent no response head within `try_timeout`, is left for the
    /// next one not marked down (the
    /// key's next best, with `hash_on`: where its requests go once the target is marked down),
    /// each target at most once, all within the deadline below. `rewrite_host`: the `Host` header is
    /// the target's (`host_header = "upstream"`), so it changes with the target. `in_flight`: the
    /// request's hold on the upstream ([`Upstream::choose`]); its count moves with the target.
    ///
    /// The wait for the response head (`timeout`) starts once the request body has been sent,
    /// as Envoy's route timeout does: a large upload on a slow link is not the upstream being
    /// slow. Meanwhile the upload must go on: an upstream that takes none of it for
    /// `body_idle` is a timeout too (a client that stops sending is cut off by its body's idle
    /// watch instead).
    pub async fn send(
        &self,
        mut request: Request<ProxyBody>,
        (first, key_hash): (usize, Option<u64>),
        in_flight: &mut Option<InFlight>,
        rewrite_host: bool,
        timeout: Duration,
        body_idle: Duration,
    ) -> (Tried, Result<Response<Incoming>, SendError>) {
        let client = &self.clients[crate::workers::current() % self.clients.len()];
        let upload = if http_body::Body::is_end_stream(request.body()) {
            None
        } else {
            let (sent, told) = tokio::sync::oneshot::channel();
            // The counter the body's client bytes go into, when it has one: one allocation.
            let progress = request.body().upload_progress();
            let body = std::mem::replace(request.body_mut(), ProxyBody::empty());
            *request.body_mut() = body.telling(progress.clone(), sent);
            Some((told, progress))
        };
        // Both pinned where they are made (`select!` below would move them, ~3.8 KB, into a
        // tuple of its own).
        let mut deadline = std::pin::pin!(async {
            if let Some((mut told, progress)) = upload {
                let mut seen = 0;
                loop {
                    tokio::select! {
                        // Sent, or dropped by hyper (an error): the body is no longer awaited.
                        _ = &mut told => break,
                        () = tokio::time::sleep(body_idle) => {
                            let now = progress.frames.load(std::sync::atomic::Ordering::Relaxed);
                            if now == seen {
                                return format!("the upstream took none of the request body for {} ms", body_idle.as_millis());
                            }
                            seen = now;
                        }
                    }
                }
            }
            tokio::time::sleep(timeout).await;
            format!("no response within {} ms", timeout.as_millis())
        });
        // The target tried last, read once the call ends (answered, failed or out of time). An
        // atomic because the request's future is `Send`; written only on a failover, as are the
        // targets that failed before it (locked only then, and once more at the end).
        let last = AtomicUsize::new(first);
        let failed_before = std::sync::Mutex::new(Vec::new());
        let failing_over = |from: usize, to: usize| {
            failed_before.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(from);
            last.store(to, Ordering::Relaxed);
        };
        let settings = &self.settings;
        let may_retry = (!settings.retry_on.is_empty() || settings.retry_on_reset || settings.try_timeout.is_some()) && self.slots.len() > 1;
        let mut call = std::pin::pin!(async {
            let mut target = first;
            let mut step = 0;
            loop {
                // A copy only where an answer, a reset or a hung try may be retried (`retry_on`,
                // `retry_on_reset`, `try_timeout_ms`): never by default.
                let again = if may_retry { resend::copy_idempotent(&request) } else { None };
                // Pinned where it is made: awaited by value, the ~2.7 KB future would be copied
                // again into the await's own slot on every request.
                let mut attempt = std::pin::pin!(async {
                    match client {
                        Transport::Http1Plain(pool) => via_pool(pool, request).await,
                        Transport::Http1Tls(pool) => via_pool(pool, request).await,
                        Transport::H2Plain(pool) => via_h2_pool(pool, request).await,
                        Transport::H2Tls(pool) => via_h2_pool(pool, request).await,
                    }
                });
                // Each try is timed only where a request could go on to another target.
                let attempt = match settings.try_timeout {
                    Some(limit) if again.is_some() => tokio::time::timeout(limit, attempt).await.unwrap_or(Attempt::TimedOut(limit)),
                    _ => attempt.as_mut().await,
                };
                // A head over the byte limit is the target's failure, as one over the line limit.
                let attempt = match attempt {
                    Attempt::Answered(response, stream) => {
                        let (bytes, limit) = (crate::exchange::header_lines_bytes(response.headers()), settings.max_response_header_bytes);
                        if bytes > limit {
                            let why = format!("its response head has {bytes} bytes of header lines, over limits.max_response_header_bytes ({limit})");
                            Attempt::Failed(SendError::Unavailable(why), false)
                        } else {
                            Attempt::Answered(response, stream)
                        }
                    }
                    attempt => attempt,
                };
                let (error, back) = match attempt {
                    Attempt::Answered(response, stream) if self.retries_on(response.status()) => {
                        // A status the upstream is retried on counts as a failure, as nginx
                        // counts one listed in `proxy_next_upstream` towards `max_fails`.
                        let error = SendError::Unavailable(format!("it answered {}", response.status().as_u16()));
                        self.target_failed(target, &error);
                        let (Some(mut again), Some(next)) = (again, self.failover(first, key_hash, &mut step)) else {
                            hold_stream(in_flight, stream);
                            // Counted already: its body ending whole is no success to count.
                            let mut response = response;
                            response.extensions_mut().insert(CountedAsFailure);
                            return Ok(response);
                        };
                        drop((response, stream));
                        tracing::debug!(upstream = &*self.name, target = &*self.slot(target).addr, next = &*self.slot(next).addr, "{error}; trying the next target");
                        self.retarget(&mut again, next, rewrite_host)?;
                        if let Some(held) = in_flight.as_mut() {
                            held.moved_to(next);
                        }
                        failing_over(target, next);
                        target = next;
                        request = again;
                        continue;
                    }
                    Attempt::Answered(response, stream) => {
                        // An answer with a body is a success once its body has come whole:
                        // the caller settles it ([`ResponseOrigin`], [`Upstream::answered`]).
                        if http_body::Body::is_end_stream(response.body()) {
                            self.slot(target).health.succeeded();
                        }
                        hold_stream(in_flight, stream);
                        return Ok(response);
                    }
                    // Closed or reset before an answer, with a copy to send (`retry_on_reset`):
                    // on to the next target, the failure counted below as a connect failure's.
                    Attempt::Failed(error, true) if self.settings.retry_on_reset && again.is_some() && error.is_targets_fault() => {
                        (error, again.map(Box::new))
                    }
                    Attempt::Failed(error, _) => {
                        if error.is_targets_fault() {
                            self.target_failed(target, &error);
                        } else if let SendError::LocalResources(_) = &error {
                            self.short_of_resources(&error);
                        } else {
                            self.slot(target).health.succeeded();
                        }
                        return Err(error);
                    }
                    Attempt::NotProcessed(error) => return Err(error),
                    // The gateway's own shortage (out of descriptors): not the target's failure,
                    // and the next target would fail alike.
                    Attempt::ConnectFailed(error @ SendError::LocalResources(_), _) => {
                        self.short_of_resources(&error);
                        return Err(error);
                    }
                    Attempt::ConnectFailed(error, back) => (error, back),
                    // A hung target: a failure, as the route's timeout makes one (nginx's
                    // `proxy_next_upstream timeout`, Envoy's `per_try_timeout`).
                    Attempt::TimedOut(limit) => (
                        SendError::Timeout(format!("no response within try_timeout_ms ({} ms)", limit.as_millis())),
                        again.map(Box::new),
                    ),
                };
                self.target_failed(target, &error);
                let (Some(mut back), Some(next)) = (back, self.failover(first, key_hash, &mut step)) else {
                    return Err(error);
                };
                tracing::debug!(upstream = &*self.name, target = &*self.slot(target).addr, next = &*self.slot(next).addr, "{error}; trying the next target");
                self.retarget(&mut back, next, rewrite_host)?;
                if let Some(held) = in_flight.as_mut() {
                    held.moved_to(next);
                }
                failing_over(target, next);
                target = next;
                request = *back;
            }
        });
        // The call polled first: the deadline is looked at only while the call waits.
        let result = tokio::select! {
            biased;
            result = call.as_mut() => result,
            reason = deadline.as_mut() => {
                // The target being tried took too long: a hung target counts as a failed one.
                let error = SendError::Timeout(reason);
                self.target_failed(last.load(Ordering::Relaxed), &error);
                Err(error)
            }
        };
        // Read through the call's own borrows: the pinned futures live to the end of this body.
        let last = last.load(Ordering::Relaxed);
        let failed_before = if last == first {
            Vec::new()
        } else {
            std::mem::take(&mut *failed_before.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
        };
        (Tried { last, failed_before }, result)
    }

    /// The next target to try after a connect failure: the first after `first` not yet tried
    /// (`step` counts them) and not marked down, in round order, or in the key's ranking with
    /// `hash_on` (so a key fails over to the target it moves to once `first` is marked down,
    /// not to whichever is listed next); `None` past the last.
    fn failover(&self, first: usize, key_hash: Option<u64>, step: &mut usize) -> Option<usize> {
        let n = self.slots.len();
        // Every target marked down (say, deep health checks failing on a shared dependency):
        // the request was sent to one anyway, and may go on to the others, as Envoy's panic
        // mode does, rather than be answered 502 while some would answer.
        let panic = (0..n).all(|i| !self.slots[i].in_rotation() || self.slots[i].health.is_down());
        // Ranked once per failing request (a failover is rare): best first, `first` left out.
        let ranked = key_hash.map(|hash| {
            let mut others: Vec<(f64, usize)> = (0..n).filter(|&i| i != first).map(|i| self.rank(hash, i)).collect();
            others.sort_by(|a, b| rank_order(b, a));
            others
        });
        while *step + 1 < n {
            *step += 1;
            let i = match &ranked {
                Some(ranked) => ranked.get(*step - 1).map_or(first, |&(_, i)| i),
                None => (first + *step) % n,
            };
            if self.usable(i) || (panic && self.slots[i].in_rotation()) {
                return Some(i);
            }
        }
        None
    }

    /// Settles an exchange with target `i` whose answer had a body ([`Upstream::send`]): its body
    /// came whole (or the client stopped reading it), a success; or it broke off, a failure
    /// towards `max_fails`.
    pub fn answered(&self, i: usize, body: Result<(), &dyn std::fmt::Display>) {
        match body {
            Ok(()) => self.slot(i).health.succeeded(),
            Err(reason) => self.target_failed(i, reason),
        }
    }

    /// Notes a failure of target `i`, with a warning when it marks the target down.
    fn target_failed(&self, i: usize, error: &dyn std::fmt::Display) {
        let slot = self.slot(i);
        if slot.health.failed(&self.settings.health) == Marked::Down {
            tracing::warn!(
                upstream = &*self.name,
                upstream_addr = &*slot.addr,
                "target marked down for {} ms after {} failures in a row: {}",
                self.settings.health.fail_timeout.as_millis(),
                self.settings.health.max_fails,
                error
            );
        }
    }

    /// Warns, at most every 10 s with the count since, that a connection could not be made for
    /// want of the gateway's own resources: no target is blamed, the operator is told what to raise.
    fn short_of_resources(&self, error: &SendError) {
        if let Some(failed) = self.shortages.record() {
            tracing::warn!(
                upstream = &*self.name,
                failures_since_last_warning = failed,
                "the gateway ran short of its own resources connecting to the upstream ({error}): requests answered 503 \
                 gateway_overloaded, no target counted as failed; raise the open-file limit (`ulimit -n`, systemd \
                 `LimitNOFILE=`), or lower limits.max_connections or limits.max_concurrent_streams (at most one such \
                 warning every 10 s)"
            );
        }
    }

    /// Points `request` (absolute URI) at target `i`, its `Host` too when `rewrite_host`.
    fn retarget(&self, request: &mut Request<ProxyBody>, i: usize, rewrite_host: bool) -> Result<(), SendError> {
        let path = request.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = http::Uri::builder()
            .scheme(self.scheme())
            .authority(self.target(i).clone())
            .path_and_query(path)
            .build()
            .map_err(|e| SendError::Unavailable(format!("cannot build the upstream URI: {e}")))?;
        *request.uri_mut() = uri;
        if rewrite_host && let Some(host) = self.host_value(i) {
            request.headers_mut().insert(http::header::HOST, host.clone());
        }
        Ok(())
    }

    /// Turns a send error into the gateway error answered to the client.
    pub fn error(&self, e: SendError) -> GatewayError {
        match e {
            SendError::Timeout(reason) => GatewayError::UpstreamTimeout { upstream: self.name.to_string(), reason },
            SendError::Unavailable(reason) => GatewayError::UpstreamUnavailable { upstream: self.name.to_string(), reason },
            SendError::BodyTooLarge => GatewayError::BodyTooLarge { limit: 0 },
            SendError::ClientBody(reason) => GatewayError::BadRequest(reason),
            SendError::ClientAborted(reason) => GatewayError::ClientAborted(reason),
            SendError::ClientStalled(reason) => GatewayError::ClientTimeout(reason),
            SendError::Overloaded(limit) => GatewayError::UpstreamOverloaded { upstream: self.name.to_string(), limit },
            SendError::LocalResources(reason) => GatewayError::GatewayOverloaded { upstream: self.name.to_string(), reason },
        }
    }
}

/// One round of `n` targets by `weights` (empty: 1 each): each index as many times as its weight
/// (divided by the weights' greatest common divisor), interleaved as nginx's smooth weighted
/// round-robin interleaves them (weights 5, 1, 1 give `0 0 1 0 2 0 0`, not five 0s in a row).
/// Made once per upstream, so a pick is an index into it.
fn weighted_round(weights: &[u32], n: usize) -> Box<[u32]> {
    let weights: Vec<u64> = (0..n).map(|i| u64::from(weights.get(i).copied().unwrap_or(1))).collect();
    let divisor = weights.iter().copied().filter(|w| *w > 0).reduce(gcd).unwrap_or(1);
    let weights: Vec<i64> = weights.iter().map(|w| (w / divisor) as i64).collect();
    let total: i64 = weights.iter().sum();
    if total <= 0 {
        return (0..n as u32).collect();
    }
    let mut current = vec![0i64; n];
    let mut round = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let best = (0..n).max_by_key(|&i| (current[i], std::cmp::Reverse(i))).unwrap_or(0);
        current[best] -= total;
        round.push(best as u32);
    }
    round.into_boxed_slice()
}

/// `least_requests`' choice among `n` targets: the one with the fewest requests in flight for
/// its weight (`in_flight / weight`, compared exactly as `a.in_flight * b.weight <
/// b.in_flight * a.weight`, as nginx's `least_conn` does), scanning from `start`, so that of
/// equally loaded ones the first found from there wins. `load(i)`: target `i`'s requests in
/// flight and weight, or `None` when it may not be chosen; weight 0 is never chosen. `None` when
/// none may be.
fn least_loaded(start: usize, n: usize, load: impl Fn(usize) -> Option<(u32, u32)>) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        let Some((count, weight)) = load(i).filter(|&(_, weight)| weight > 0) else { continue };
        let (count, weight) = (u64::from(count), u64::from(weight));
        if best.is_none_or(|(_, best_count, best_weight)| count * best_weight < best_count * weight) {
            best = Some((i, count, weight));
        }
    }
    best.map(|(i, _, _)| i)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Holds an answered request's HTTP/2 stream, if any, with the rest of its hold on the upstream
/// until its response is done.
fn hold_stream(in_flight: &mut Option<InFlight>, stream: Option<OpenStream>) {
    if stream.is_some() {
        in_flight.get_or_insert_default().stream = stream;
    }
}

/// One request through a worker's HTTP/1.1 pool.
async fn via_pool<C>(pool: &Arc<Http1Pool<C>>, request: Request<ProxyBody>) -> Attempt
where
    C: tower_service::Service<http::Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Error: Into<super::http1_pool::PoolError>,
    C::Future: Send,
{
    match std::pin::pin!(pool.send(request)).await {
        Ok(response) => Attempt::Answered(response, None),
        Err(Http1Error::Connect(e, request)) => Attempt::ConnectFailed(classify(&*e), Some(request)),
        Err(Http1Error::Exchange(e)) => Attempt::Failed(classify(&*e), closed_before_answer(&*e)),
    }
}

/// One request through a worker's HTTP/2 connections.
async fn via_h2_pool<C>(pool: &Arc<Http2Pool<C>>, request: Request<ProxyBody>) -> Attempt
where
    C: tower_service::Service<http::Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + hyper_util::client::legacy::connect::Connection + Unpin + Send + 'static,
    C::Error: Into<super::http1_pool::PoolError>,
    C::Future: Send,
{
    match std::pin::pin!(pool.send(request)).await {
        Ok((response, stream)) => Attempt::Answered(response, stream),
        Err(Http2Error::Connect(e, request)) => Attempt::ConnectFailed(classify(&*e), Some(request)),
        Err(Http2Error::Exchange(e)) => Attempt::Failed(classify(&*e), closed_before_answer(&*e)),
        Err(Http2Error::NotProcessed(e)) => Attempt::NotProcessed(classify(&*e)),
    }
}

/// Whether a failed exchange's error is its connection closing or being reset before any
/// response head ([`resend::closed_before_answer`]), not an answer that is not HTTP.
fn closed_before_answer(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    error.downcast_ref::<hyper::Error>().is_some_and(resend::closed_before_answer)
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connect or response timeout.
    #[error("{0}")]
    Timeout(String),
    /// Refused, reset, or not HTTP.
    #[error("{0}")]
    Unavailable(String),
    /// The streamed request body went over the route's limit.
    #[error("the request body went over the route's limit")]
    BodyTooLarge,
    /// The client's streamed request body is malformed (e.g. an invalid chunk size line).
    #[error("{0}")]
    ClientBody(String),
    /// The client stopped before the end of its streamed request body.
    #[error("{0}")]
    ClientAborted(String),
    /// The client's streamed request body stalled (`timeouts.body_idle_ms`).
    #[error("{0}")]
    ClientStalled(String),
    /// Every place of `max_requests` (this many) was taken: not sent.
    #[error("it has {0} requests in flight (max_requests)")]
    Overloaded(u32),
    /// The gateway itself ran short (out of file descriptors: `EMFILE`, `ENFILE`; of socket
    /// buffers or memory: `ENOBUFS`, `ENOMEM`) opening a connection: nothing was sent, and the
    /// target is not to blame.
    #[error("{0}")]
    LocalResources(String),
}

impl SendError {
    /// Whether the target is to blame (it timed out, broke the exchange off, or answered with
    /// something not HTTP), not the client's body: what counts towards `max_fails`.
    fn is_targets_fault(&self) -> bool {
        matches!(self, SendError::Timeout(_) | SendError::Unavailable(_))
    }
}

/// What a failed exchange means: the client's body failing, a timeout, or the target being
/// unavailable (with the whole error chain as the reason).
pub(super) fn classify(e: &(dyn std::error::Error + 'static)) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    // Set past hyper's "error from user's Body stream": what follows is the client's body failing.
    let mut in_request_body = false;
    while let Some(err) = source {
        if super::body::is_length_limit(err) {
            return SendError::BodyTooLarge;
        }
        if let Some(hyper_error) = err.downcast_ref::<hyper::Error>() {
            if hyper_error.is_user() {
                in_request_body = true;
            } else if in_request_body {
                return client_body_error(hyper_error);
            } else if hyper_error.is_parse_too_large() {
                // hyper says "message head is too large" for a count of lines as for bytes.
                return SendError::Unavailable(format!(
                    "its response head has more header lines than `limits.max_response_headers` allows, or more \
                     bytes than the gateway reads ({})",
                    crate::error::chain(e)
                ));
            }
        }
        if in_request_body && let Some(stalled) = err.downcast_ref::<super::body::BodyStalled>() {
            return SendError::ClientStalled(format!("the client sent no more of its body for {} ms", stalled.0.as_millis()));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                // A TLS handshake past `connect_ms` says so; a TCP connect's is hyper-util's.
                let handshake = io.get_ref().and_then(|e| e.downcast_ref::<tls::HandshakeTimedOut>());
                return SendError::Timeout(handshake.map_or_else(|| "connect timed out".into(), |h| format!("connect timed out: {h}")));
            }
            if is_local_shortage(io) {
                return SendError::LocalResources(crate::error::chain(e));
            }
        }
        source = err.source();
    }
    SendError::Unavailable(crate::error::chain(e))
}

/// Whether `io` is the gateway's own resource shortage rather than anything the peer did: out of
/// file descriptors, per process (`EMFILE`) or system-wide (`ENFILE`), or of socket buffers or
/// kernel memory (`ENOBUFS`, `ENOMEM`), as `socket(2)` and `connect(2)` report them.
fn is_local_shortage(io: &std::io::Error) -> bool {
    use rustix::io::Errno;
    Errno::from_io_error(io).is_some_and(|errno| [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM].contains(&errno))
}

/// The client's body failed while it was streamed upstream: the client's fault, never the upstream's.
fn client_body_error(e: &hyper::Error) -> SendError {
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    let reason = match io {
        Some(io) => format!("the request body could not be read: {io}"),
        None => format!("the request body could not be read: {e}"),
    };
    if super::body::is_client_abort(e) {
        SendError::ClientAborted(reason)
    } else {
        SendError::ClientBody(reason)
    }
}

/// How two targets' ranks for one key compare: by score, then by index (the greater wins).
fn rank_order(a: &(f64, usize), b: &(f64, usize)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose source is an IO error, as hyper-util's `ConnectError` is.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("tcp open error")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_connect_failing_for_the_gateways_own_shortage_is_not_the_targets_fault() {
        use rustix::io::Errno;
        for errno in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM] {
            let io = std::io::Error::from_raw_os_error(errno.raw_os_error());
            // As the connector reports it: its own error ("tcp open error"), the system call's as its source.
            let error = classify(&Wrapped(io));
            assert!(matches!(error, SendError::LocalResources(_)), "{errno:?}: {error:?}");
            assert!(!error.is_targets_fault(), "{errno:?}");
        }
        let refused = std::io::Error::from_raw_os_error(Errno::CONNREFUSED.raw_os_error());
        let error = classify(&refused);
        assert!(matches!(error, SendError::Unavailable(_)) && error.is_targets_fault(), "{error:?}");
    }

    #[test]
    fn a_weighted_round_interleaves_targets_by_weight() {
        assert_eq!(&*weighted_round(&[5, 1, 1], 3), [0, 0, 1, 0, 2, 0, 0], "nginx's smooth weighted round-robin");
        assert_eq!(&*weighted_round(&[], 3), [0, 1, 2], "no weights: plain round-robin");
        assert_eq!(&*weighted_round(&[4, 4, 4], 3), [0, 1, 2], "equal weights: one turn each");
        assert_eq!(&*weighted_round(&[30, 10], 2), [0, 0, 1, 0], "reduced by the common divisor");
        assert_eq!(&*weighted_round(&[2, 0, 1], 3), [0, 2, 0], "weight 0: never in the round");
    }

    /// `least_loaded` over `(in flight, weight)` per target, `None` for one that may not be chosen.
    fn least(start: usize, targets: &[Option<(u32, u32)>]) -> Option<usize> {
        least_loaded(start, targets.len(), |i| targets[i])
    }

    #[test]
    fn the_least_loaded_target_for_its_weight_is_chosen() {
        assert_eq!(least(0, &[Some((3, 1)), Some((1, 1)), Some((2, 1))]), Some(1), "fewest in flight");
        assert_eq!(least(0, &[Some((2, 3)), Some((1, 1))]), Some(0), "2 of weight 3 is less than 1 of weight 1");
        assert_eq!(least(0, &[Some((4, 3)), Some((1, 1))]), Some(1), "4 of weight 3 is more than 1 of weight 1");
        assert_eq!(least(0, &[Some((0, 0)), Some((9, 1))]), Some(1), "weight 0: never, however idle");
        assert_eq!(least(0, &[None, Some((9, 1))]), Some(1), "one that may not be chosen (marked down) is skipped");
        assert_eq!(least(0, &[None, Some((0, 0))]), None, "none may be chosen");
        assert_eq!(least(0, &[Some((u32::MAX, 1000)), Some((u32::MAX - 1, 1))]), Some(0), "no overflow");
    }

    #[test]
    fn ties_go_to_the_first_from_the_start() {
        let idle = [Some((0, 1)), Some((0, 1)), Some((0, 1))];
        assert_eq!((0..3).map(|start| least(start, &idle)).collect::<Vec<_>>(), [Some(0), Some(1), Some(2)], "the start wins a tie");
        assert_eq!(least(2, &[Some((0, 1)), Some((0, 1)), Some((1, 1))]), Some(0), "the first least loaded after the start, wrapping");
        assert_eq!(least(1, &[Some((1, 3)), Some((2, 6))]), Some(1), "1 of 3 and 2 of 6 are equal: compared exactly");
    }

    /// An upstream of `weights.len()` HTTP/1.1 targets (nothing listens: never connected to here).
    fn upstream(weights: &[u32], balance: Balance) -> Upstream {
        let targets = (0..weights.len()).map(|i| format!("127.0.0.1:{}", 9000 + i).parse().expect("authority")).collect();
        let settings = UpstreamSettings {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_idle: 1,
            workers: 1,
            host_header: HostHeader::Upstream,
            protocol: UpstreamProtocol::Http1,
            tls: None,
            max_response_headers: 100,
            max_response_header_bytes: 64 * 1024,
            health: HealthPolicy::default(),
            health_check: None,
            weights: weights.to_vec(),
            retry_on: Vec::new(),
            retry_on_reset: false,
            try_timeout: None,
            hash_on: None,
            hash_cookie: None,
            max_requests: None,
            balance,
        };
        Upstream::new("test", targets, settings).expect("no TLS to set up")
    }

    #[tokio::test]
    async fn least_requests_sends_each_request_to_the_least_loaded_target_and_counts_it() {
        let up = upstream(&[1, 1, 1], Balance::LeastRequests);
        assert_eq!(up.target_loads(), Some(vec![0, 0, 0]));
        // Nothing in flight: every choice is a tie, and the ties rotate.
        let mut held: Vec<Option<InFlight>> = Vec::new();
        let mut chosen = Vec::new();
        for _ in 0..3 {
            let mut in_flight = None;
            chosen.push(up.choose(&mut in_flight));
            held.push(in_flight);
        }
        chosen.sort_unstable();
        assert_eq!(chosen, [0, 1, 2], "one each");
        assert_eq!(up.target_loads(), Some(vec![1, 1, 1]));
        // Target 1's request is done: it is the least loaded, whoever's turn it is.
        held.remove(1);
        assert_eq!(up.target_loads(), Some(vec![1, 0, 1]), "a request's count goes with it");
        for _ in 0..3 {
            let mut in_flight = None;
            assert_eq!(up.choose(&mut in_flight), 1);
        }
        // A failover moves the count: a request first counted on 1, then sent to 2.
        let mut in_flight = None;
        assert_eq!(up.choose(&mut in_flight), 1);
        in_flight.as_mut().expect("counted").moved_to(2);
        assert_eq!(up.target_loads(), Some(vec![1, 0, 2]));
        drop(in_flight);
        drop(held);
        assert_eq!(up.target_loads(), Some(vec![0, 0, 0]), "every count given back");
    }

    #[tokio::test]
    async fn a_target_marked_down_passes_its_ties_on_as_round_robin_does() {
        let up = upstream(&[1, 1, 1], Balance::LeastRequests);
        let policy = HealthPolicy::default();
        for _ in 0..policy.max_fails {
            up.slots[1].health.failed(&policy);
        }
        let mut served = [0; 3];
        for _ in 0..30 {
            served[up.choose(&mut None)] += 1;
        }
        assert_eq!(served, [15, 0, 15], "not the target after it alone");
    }

    #[tokio::test]
    async fn least_requests_splits_sequential_requests_by_weight_and_skips_targets_marked_down() {
        let up = upstream(&[3, 1, 0], Balance::LeastRequests);
        let mut served = [0; 3];
        for _ in 0..40 {
            // Sequential: the previous request is done (its hold dropped) before the next.
            served[up.choose(&mut None)] += 1;
        }
        assert_eq!(served, [30, 10, 0], "ties go by the weighted round; weight 0 never");
        // Under load, by in flight per weight: 3 in flight on the first count as 1 on the second.
        let held: Vec<_> = (0..8)
            .map(|_| {
                let mut in_flight = None;
                up.choose(&mut in_flight);
                in_flight
            })
            .collect();
        assert_eq!(up.target_loads(), Some(vec![6, 2, 0]));
        drop(held);
        // Marked down (max_fails failures in a row): skipped while idle and the other busy.
        let policy = HealthPolicy::default();
        for _ in 0..policy.max_fails {
            up.slots[0].health.failed(&policy);
        }
        let mut busy = None;
        assert_eq!(up.choose(&mut busy), 1);
        let mut busier = None;
        assert_eq!(up.choose(&mut busier), 1, "the idle target is marked down");
        assert_eq!(up.target_loads(), Some(vec![0, 2, 0]));
        // Every target in rotation marked down: the least loaded all the same.
        for _ in 0..policy.max_fails {
            up.slots[1].health.failed(&policy);
        }
        assert_eq!(up.choose(&mut None), 0);
    }

    /// Every target marked down: requests still go round-robin over them (by weight), not all
    /// to one, whichever way the upstream balances.
    #[tokio::test]
    async fn every_target_out_still_spreads_requests_over_them() {
        for balance in [Balance::RoundRobin, Balance::LeastRequests] {
            let up = upstream(&[1, 2, 1], balance);
            let policy = HealthPolicy::default();
            for slot in &up.slots {
                for _ in 0..policy.max_fails {
                    slot.health.failed(&policy);
                }
            }
            let mut served = [0; 3];
            for _ in 0..40 {
                served[up.choose(&mut None)] += 1;
            }
            assert_eq!(served, [10, 20, 10], "{balance:?}: by weight, as when they are up");
        }
    }

    #[tokio::test]
    async fn a_round_robin_upstream_counts_nothing() {
        let up = upstream(&[1, 1], Balance::RoundRobin);
        let mut in_flight = None;
        let chosen: Vec<usize> = (0..4).map(|_| up.choose(&mut in_flight)).collect();
        assert_eq!(chosen, [0, 1, 0, 1]);
        assert!(in_flight.is_none(), "no hold made");
        assert_eq!(up.target_loads(), None);
    }
}
