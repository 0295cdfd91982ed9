//! The request lifecycle, as a list of named phases (after Pingora's `ProxyHttp`):
//!
//! 1. [`path::normalize_uri`]: dot segments and `//` resolved (400 if the path climbs above the
//!    root or hides a dot segment; `%2F` and `%5C` refused or decoded first as
//!    `limits.encoded_slashes` says), so the route, the plugins and the upstream see one path;
//!    [`Gateway::check_limits`]: ambiguous framing and the host rules (400), header size and
//!    count (431), declared body size (413), CONNECT and TRACE refused (501);
//! 2. [`Gateway::route`]: pick the route on that path, method and headers (404 if none);
//! 3. [`Gateway::read_request`]: build the [`RequestState`] plugins see, buffering the body only if
//!    a plugin in the chain declared it needs it;
//! 4. the chain's request phases ([`crate::runtime::PluginChain::run_request_phases`]);
//! 5. [`Gateway::call_upstream`]: unless a plugin answered (or the gateway answers an OPTIONS
//!    with `Max-Forwards: 0` itself, [`headers::options_answer`]), send the request upstream (502/504),
//!    to the target [`upstream::Upstream::choose`] (or `pick_by`, with `hash_on`) chooses, failing
//!    over and retrying there; on a route with `mirror`, a sampled share of those requests is
//!    also copied to the mirror upstream, in a task nothing awaits ([`mirror`]);
//! 6. the chain's response phases, in reverse order;
//! 7. [`write_response`]: the response as the client gets it, gzipped for a client that accepts
//!    it where `[compression]` applies ([`compress`]); after a `101 Switching Protocols` the
//!    connection is the client's and the upstream's, joined ([`upgrade`]).
//!
//! Any phase can end the request with a [`GatewayError`], answered as JSON with the request id
//! (to a gRPC client, as gRPC: [`grpc::answer_for_client`]).

pub mod affinity;
pub mod body;
pub mod client_ip;
pub mod compress;
pub mod counted;
pub mod dns;
pub mod encoding;
pub mod grpc;
pub mod headers;
pub mod health_check;
pub mod http1_pool;
pub mod http2_pool;
pub mod http2_streams;
pub mod mirror;
pub mod path;
pub mod replay;
pub mod resend;
pub mod target_health;
pub mod tls;
pub mod upgrade;
pub mod upstream_config;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use hyper::body::{Body as _, Incoming};
use tracing::Instrument;

use self::body::ProxyBody;
use crate::error::GatewayError;
use crate::exchange::{RequestState, ResponseState, RouteParams};
use crate::gateway::{Gateway, Route, push_query};
use crate::runtime::{PluginChain, RequestOutcome, ResponseBodyNeed};
use crate::telemetry::observed_body::ObservedBody;
use crate::telemetry::request::RequestRecord;

/// Request context key holding a verified mTLS client certificate's subject DN.
pub const CLIENT_SUBJECT: &str = "tls.client.subject";
/// Request context key holding its DNS/email/URI SANs, comma-separated (a `,` or `\` in one
/// escaped by a `\`).
pub const CLIENT_SANS: &str = "tls.client.sans";

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo {
    /// The connection's peer: the TCP peer's address, or on a listener with `proxy_protocol` the
    /// client its PROXY header announced ([`crate::proxy_protocol`]).
    pub peer: SocketAddr,
    /// The client's IP: the peer's, or behind the listener's trusted proxies the one
    /// `X-Forwarded-For` names ([`client_ip`]); resolved per request by [`Gateway::handle`].
    pub client: std::net::IpAddr,
    /// Which `[[listeners]]` entry accepted the connection (its index in the config).
    pub listener: usize,
    /// "http" or "https": the listener's, or behind its trusted proxies the one their
    /// `X-Forwarded-Proto` names ([`client_ip`]); resolved per request by [`Gateway::handle`].
    pub scheme: &'static str,
    /// Whether the peer is one of the listener's trusted proxies, whose forwarding headers
    /// (`X-Forwarded-*`, `X-Forwarded-Client-Cert`) are believed; resolved per request by
    /// [`Gateway::handle`].
    pub via_trusted_proxy: bool,
}

/// The request body on its way upstream: streamed from the client, or (when `state.body` holds
/// the buffered bytes) the trailers that followed them.
struct UpstreamBody {
    stream: Option<ProxyBody>,
    trailers: Option<http::HeaderMap>,
}

/// A response on its way to the client: its head, and its body either buffered (in the state) or
/// still streaming from the upstream.
struct PendingResponse {
    state: ResponseState,
    stream: Option<ProxyBody>,
    version: Version,
    /// The upstream's side of a `101 Switching Protocols` ([`upgrade`]).
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Where a streamed body comes from (`stream` from an upstream), told if it breaks off.
    origin: Option<upstream::ResponseOrigin>,
}

impl Gateway {
    /// Handles one client request end to end. Never fails: errors become JSON error responses
    /// (for a gRPC client, trailers-only gRPC answers: [`grpc::answer_for_client`]).
    /// Its telemetry (span, trace context, metrics, access log line) is kept in a
    /// [`RequestRecord`] the phases fill in.
    pub async fn handle(&self, request: Request<Incoming>, mut conn: ConnectionInfo) -> Response<ObservedBody> {
        if let Some(trusted) = self.trusted_proxies.get(conn.listener)
            && trusted.admits(conn.peer.ip())
        {
            conn.via_trusted_proxy = true;
            conn.client = trusted.client(conn.peer.ip(), request.headers());
            if let Some(scheme) = trusted.forwarded_proto(conn.peer.ip(), request.headers()) {
                conn.scheme = scheme;
            }
        }
        // A client's own id and trace, where `[tracing] trust_incoming` lets it choose them.
        let trusted = self.telemetry.trusts_incoming(conn.via_trusted_proxy);
        let request_id = if trusted { headers::request_id(request.headers()) } else { headers::new_request_id() };
        let grpc_client = grpc::client_content_type(request.headers());
        let mut record = RequestRecord::begin(&self.telemetry, &request, (conn, trusted), request_id.clone());
        let span = record.span().clone();
        // Not boxed again here: the server boxes the whole request future once
        // (`server::gateway_service`), so an idle keep-alive connection holds a pointer, not it.
        // Each branch awaits the answer where it is made, so the request's state holds it once,
        // and pinned there (`pin!`): awaited by value, the ~9 KB future would be copied into the
        // await's own slot. So are the other large futures a request awaits on its way.
        let response = match record.child_spans() {
            // An exported request collects its phases' child spans (a task-local scope).
            Some(children) => {
                let answer = std::pin::pin!(self.answer(request, conn, &request_id, &mut record));
                crate::telemetry::spans::collect(children, answer.instrument(span)).await
            }
            None => std::pin::pin!(self.answer(request, conn, &request_id, &mut record)).instrument(span).await,
        };
        // Counted and logged with the status the gateway decided: a refused gRPC call goes to its
        // client as a 200 carrying `grpc-status`, but it is an error all the same.
        let decided = response.status();
        let response = match grpc_client {
            Some(content_type) if record.is_local_reply() => grpc::answer_for_client(response, content_type),
            _ => response,
        };
        record.finish(response, decided)
    }

    /// The response to one request, errors included.
    async fn answer<'a>(
        &'a self,
        mut request: Request<Incoming>,
        conn: ConnectionInfo,
        request_id: &Arc<str>,
        record: &mut RequestRecord<'a>,
    ) -> Response<ProxyBody> {
        // Routed on, shown to plugins and forwarded: the same path (the access log keeps the
        // client's own, from `RequestRecord::begin`).
        let normalized =
            path::normalize_uri(request.uri_mut(), self.limits.encoded_slashes).map_err(|e| GatewayError::BadRequest(e.to_string()));
        // The client's path and query, shared, not copied: sent upstream as they are unless a
        // plugin or the route changes them, and named in the warning if the request fails.
        let client_target = request.uri().path_and_query().cloned();
        let extended_connect = request.extensions().get::<upgrade::ExtendedConnect>().is_some();
        let answered = match normalized {
            Ok(()) => std::pin::pin!(self.proxy(request, conn, request_id, record, client_target.as_ref())).await,
            Err(refused) => Err(refused),
        };
        let answered = match answered {
            // An HTTP/2 WebSocket: the upstream's 101 opens the stream with a 200.
            Ok(mut response) if extended_connect => match upgrade::answer_extended_connect(&mut response) {
                Ok(()) => Ok(response),
                Err(status) => Err(GatewayError::NotSwitched(status.as_u16())),
            },
            other => other,
        };
        match answered {
            Ok(response) => response,
            Err(error) => self.error_response(error, request_id, record, client_target.as_ref()),
        }
    }

    /// The gateway's own answer to a request it could not serve, logged: a warning for a server
    /// error (with the request named), a debug line for the client's.
    fn error_response(
        &self,
        error: GatewayError,
        request_id: &Arc<str>,
        record: &mut RequestRecord<'_>,
        client_target: Option<&PathAndQuery>,
    ) -> Response<ProxyBody> {
        record.answered_locally();
        let status = error.status();
        if error.is_operator_concern() {
            // The request's span is a debug one (`RequestRecord::begin`): the request
            // is named here, the first of its route's failures in each interval (each is in
            // the access log and `airlock_responses_total`), its path cut as plugins' values are.
            if let Some(failed) = record.failure_warning_due(error.code()) {
                tracing::warn!(
                    status = status.as_u16(),
                    request_id = &**request_id,
                    method = %record.method(),
                    path = crate::runtime::host::log::shown(client_target.map_or("", PathAndQuery::path)),
                    route = record.route_id().unwrap_or(""),
                    upstream_addr = record.upstream_addr(),
                    failed_since_last_warning = failed,
                    "{error} (at most one such warning per route and error every {} s)",
                    crate::telemetry::metrics::FAILURE_WARN_INTERVAL.as_secs()
                );
            }
        } else {
            tracing::debug!(status = status.as_u16(), "{error}");
        }
        let mut response = error.into_response(request_id);
        if status == http::StatusCode::BAD_REQUEST {
            // After a malformed request the connection's framing cannot be trusted.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if record.method() == Method::HEAD {
            // Over HTTP/2 a body after a HEAD's headers is a protocol error (hyper's HTTP/1.1
            // server drops it itself): its length is said, its bytes are not sent.
            let length = response.body().size_hint().exact().unwrap_or(0);
            response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            *response.body_mut() = ProxyBody::full(Bytes::new());
        }
        response
    }

    async fn proxy<'a>(
        &'a self,
        mut request: Request<Incoming>,
        conn: ConnectionInfo,
        request_id: &Arc<str>,
        record: &mut RequestRecord<'a>,
        client_target: Option<&PathAndQuery>,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        self.check_limits(&request)?;
        let (route, params) = self.route(&request)?;
        record.matched(&route.id, &route.metrics);
        let ends_here = request.method() == Method::OPTIONS && headers::max_forwards_ends_here(request.headers_mut());
        // Read from the client's own request, before plugins or the upstream see it.
        let gzip = route.compression.as_deref().map(|policy| (policy, compress::ClientCoding::of(request.headers())));
        // One header value for the request id, shared by the upstream request and the response.
        let id_header = headers::request_id_header(request_id);
        let (mut state, stream, request_trailers) =
            std::pin::pin!(self.read_request(request, route, params, conn, request_id, id_header.clone(), record)).await?;
        record.forwarding(&mut state.headers);

        let chain = &route.chain;
        // The clock is read once at each boundary between phases: the reading that ends one
        // (a plugin call, the request phases, the upstream call) starts the next.
        let mut clock = Instant::now();
        // Concurrency slots granted to this request, and its place among the upstream's
        // `max_requests`: kept until its response body is done.
        let mut held = Vec::new();
        let mut in_flight = None;
        // The `hash_cookie` made for a client that came without it: set on the answer it gets
        // from the upstream (not on the gateway's own error answers: nothing to stick to).
        let mut made_cookie = None;
        // The phases' futures hold a Wasm call's state (~3 KB): boxed once per request and
        // direction, and not at all on a route without plugins, whose requests' futures stay small.
        let (mut state, ran, outcome) = if chain.entries().is_empty() {
            (state, 0, RequestOutcome::Upstream)
        } else {
            let started = clock;
            record.plugins_running(started);
            let phases = crate::boxed::in_place(|| chain.run_request_phases(state, route.timeout, &mut held, &mut clock)).await;
            record.plugins_took(clock.duration_since(started));
            // Named now: a request its client abandons while the upstream answers is still
            // logged and counted as its consumer's (a 499).
            record.consumer(phases.0.context.get("consumer"));
            phases
        };
        // `Via` is for a message the gateway forwarded (RFC 9110 7.6.3), not for an answer a
        // plugin made: that one looks like the gateway's own (ip-restrict's hiding 404 must).
        let forwarded = matches!(outcome, RequestOutcome::Upstream) && !ends_here;
        if !forwarded {
            record.answered_locally();
        }
        let pending = match outcome {
            RequestOutcome::Respond(response) => {
                PendingResponse { state: response, stream: None, version: Version::HTTP_11, upgrade: None, origin: None }
            }
            // A plugin failed closed: the gateway's own answer, with what the entries before it
            // asked of the response, as for a 502 below.
            RequestOutcome::Failed(error) => return Ok(self.answer_for_chain(error, chain, ran, &mut state, request_id, record, client_target)),
            // The route's plugins let it through: the gateway is its final recipient.
            RequestOutcome::Upstream if ends_here => PendingResponse {
                state: headers::options_answer(&route.matches.methods),
                stream: None,
                version: Version::HTTP_11,
                upgrade: None,
                origin: None,
            },
            RequestOutcome::Upstream => {
                let keep_request = chain.keeps_request_headers(ran);
                let started = clock;
                let span = tracing::debug_span!("upstream", upstream = route.upstream().map(|u| &*u.name));
                let body = UpstreamBody { stream, trailers: request_trailers };
                // The target that served or last failed, once the request was sent to one.
                // The record learns the target as the request is sent to it (`upstream_calling`),
                // so a request its client abandons meanwhile is logged with it too.
                let called = std::pin::pin!(self.call_upstream(
                    route,
                    &mut state,
                    keep_request,
                    body,
                    client_target,
                    (&mut *record, started, &mut in_flight, &mut made_cookie)
                ))
                .instrument(span)
                .await;
                clock = Instant::now();
                crate::telemetry::spans::record(|| {
                    let name = route.upstream().map(|u| &*u.name).unwrap_or("(none)");
                    let result = called.as_ref().map(|p| p.state.status.as_u16()).map_err(ToString::to_string);
                    crate::telemetry::spans::ChildSpan::upstream(name, record.upstream_addr().map(Into::into), started, clock, result)
                });
                // Called, whatever came of it: the access log has how long.
                record.upstream_called(clock.duration_since(started));
                match &called {
                    Ok(_) => record.upstream_took(clock.duration_since(started)),
                    Err(GatewayError::UpstreamUnavailable { .. }) => record.upstream_failed(false),
                    Err(GatewayError::UpstreamTimeout { .. }) => record.upstream_failed(true),
                    Err(GatewayError::GatewayOverloaded { .. }) => self.telemetry.metrics.upstream_connect_shortage(),
                    Err(_) => {}
                }
                match called {
                    Ok(pending) => pending,
                    // The request phases ran: the gateway's own answer gets what they asked for.
                    Err(error) => return Ok(self.answer_for_chain(error, chain, ran, &mut state, request_id, record, client_target)),
                }
            }
        };
        let PendingResponse { state: mut response, stream, version, upgrade, origin } = pending;
        // The gateway's own headers go on before the response phases, as they do on the
        // request before its phases: a plugin may replace or remove them (an operator hiding
        // `Via`, as Kong's response-transformer can).
        if forwarded {
            headers::add_via(&mut response.headers, version);
        }
        if let Some(id) = id_header {
            response.headers.insert(headers::X_REQUEST_ID, id);
        }
        let (request, response) = if chain.calls_on_response(ran) {
            let started = clock;
            record.plugins_running(started);
            let phases = crate::boxed::in_place(|| chain.run_response_phases(ran, state, response, &mut clock)).await;
            record.plugins_took(clock.duration_since(started));
            match phases {
                Ok(phases) => phases,
                // A response phase failed closed: the entries whose phases had not run yet
                // (those before it) still make their edits on the gateway's answer.
                Err((mut state, error, unran)) => return Ok(self.answer_for_chain(error, chain, unran, &mut state, request_id, record, client_target)),
            }
        } else {
            // Response edits at most: made in place, no call and so no future to box.
            chain.apply_response_edits(ran, &mut state, &mut response);
            (state, response)
        };
        record.consumer(request.context.get("consumer"));
        let body_idle = Duration::from_millis(self.timeouts.body_idle_ms);
        // The client's method: a plugin may have sent the upstream another.
        let head = record.method() == Method::HEAD;
        let mut response = write_response(response, (stream, origin), body_idle, head);
        if let Some(made) = &made_cookie {
            made.set_on(response.headers_mut(), request.scheme == "https");
        }
        if let Some(upgrade) = upgrade {
            // A switch's holds go with its tunnel, open until it closes (an open WebSocket
            // counts towards `max_requests`, `least_requests` and concurrency slots).
            let holds = (!held.is_empty() || in_flight.is_some())
                .then(|| Arc::new(upgrade::TunnelHold { slots: std::mem::take(&mut held), in_flight: in_flight.take() }));
            upgrade::keep_switch(&mut response, upgrade, route.tunnel_idle, holds);
        } else if let Some((policy, client)) = gzip {
            policy.apply(&mut response, client, head);
        }
        if !held.is_empty() || in_flight.is_some() {
            response = response.map(|body| body.holding(held, in_flight));
        }
        Ok(response)
    }

    /// The gateway's own answer (`error`) to a request whose first `ran` chain entries ran their
    /// request phases: it gets the response headers those asked for (CORS, `RateLimit`), as
    /// Envoy's local replies do, or a browser reads a 502 or a failed plugin's 500 as a CORS
    /// failure. Their `on-response` is not called: it expects the upstream's answer.
    #[allow(clippy::too_many_arguments)]
    fn answer_for_chain(
        &self,
        error: GatewayError,
        chain: &PluginChain,
        ran: usize,
        state: &mut RequestState,
        request_id: &Arc<str>,
        record: &mut RequestRecord<'_>,
        client_target: Option<&PathAndQuery>,
    ) -> Response<ProxyBody> {
        let mut response = self.error_response(error, request_id, record, client_target);
        chain.apply_response_edits_to(ran, state, response.headers_mut());
        record.consumer(state.context.get("consumer"));
        response
    }

    /// Phase 1: refuses oversized headers and declared bodies before any work is done.
    fn check_limits(&self, request: &Request<Incoming>) -> Result<(), GatewayError> {
        // A request framed both ways (a smuggling pattern, RFC 9112 6.3) never gets here with
        // both: hyper reads it by its Transfer-Encoding, drops the Content-Length, and closes the
        // connection after the answer, so nothing pipelined behind it is read as a request.
        if let Some(coding) = headers::other_transfer_coding(request.headers()) {
            return Err(GatewayError::UnsupportedTransferCoding(coding));
        }
        // An extended CONNECT still carrying its `:protocol` is not a WebSocket's
        // (`upgrade::client_side` takes those).
        if let Some(protocol) = request.extensions().get::<hyper::ext::Protocol>() {
            return Err(GatewayError::UnsupportedProtocol(protocol.as_str().to_owned()));
        }
        if request.method() == Method::CONNECT {
            let target = request.uri().authority().map_or("", |a| a.as_str());
            return Err(GatewayError::ConnectNotServed(target.to_owned()));
        }
        if request.method() == Method::TRACE {
            return Err(GatewayError::TraceNotServed);
        }
        // Methods are case-sensitive (RFC 9110 9.1), but Django and Werkzeug (Flask) upper-case
        // them: `get` would miss a route limited to GET, and its plugins, and be served as GET.
        // nginx refuses such a method too.
        if request.method().as_str().bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(GatewayError::BadRequest("a method with lower-case letters (methods are upper-case and case-sensitive)".into()));
        }
        check_host(request)?;
        let limits = &self.limits;
        if request.headers().len() > limits.max_headers {
            return Err(GatewayError::HeadersTooLarge(format!(
                "{} headers, limit {}",
                request.headers().len(),
                limits.max_headers
            )));
        }
        let size = headers::header_bytes(request.method(), request.uri(), request.headers());
        if size > limits.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge(format!("{size} bytes, limit {}", limits.max_header_bytes)));
        }
        Ok(())
    }

    /// Phase 2: the route for this host, method and path. The host is the request target's
    /// authority when it has one (absolute form, HTTP/2's `:authority`: RFC 9112 3.2.2), else
    /// `Host`.
    fn route(&self, request: &Request<Incoming>) -> Result<(&Route, RouteParams), GatewayError> {
        let host = if self.routes.names_hosts() {
            request.uri().authority().map(|a| a.as_str()).or_else(|| request.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
        } else {
            // No route names a host: it chooses nothing, so it is not looked up.
            None
        };
        match self.routes.find(host, request.method(), request.uri().path(), request.headers()) {
            Some(found) => match found.undecodable {
                None => Ok((found.route, found.params)),
                // Lossy, `%FF` and `%FE` would reach the upstream as the same U+FFFD.
                Some(name) => Err(GatewayError::BadRequest(format!("the path parameter `{name}` is not UTF-8 once percent-decoded"))),
            },
            None => Err(GatewayError::NoRoute {
                method: request.method().to_string(),
                path: request.uri().path().to_owned(),
            }),
        }
    }

    /// Phase 3: the request as plugins see it. The body is buffered only when the chain needs it
    /// (its trailers are then handed back beside it); otherwise it is handed back to stream to the
    /// upstream, trailers included. Either way `record` learns the body bytes read from the
    /// client (a streamed body counts them as it is read). The request state is boxed where it
    /// is made: it is moved out of here, through the request's future, into each plugin call and
    /// back, and each move is then a pointer's, not a copy of its several hundred bytes.
    #[allow(clippy::too_many_arguments)]
    async fn read_request(
        &self,
        request: Request<Incoming>,
        route: &Route,
        params: Vec<(String, String)>,
        conn: ConnectionInfo,
        request_id: &Arc<str>,
        id_header: Option<HeaderValue>,
        record: &mut RequestRecord<'_>,
    ) -> Result<(Box<RequestState>, Option<ProxyBody>, Option<http::HeaderMap>), GatewayError> {
        let limit = route.max_body_bytes;
        let length = content_length(request.headers())?;
        if let Some((length, _)) = length
            && length > limit
        {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        let (mut parts, incoming) = request.into_parts();
        let mut headers = parts.headers;
        // Sent on as the number alone: `010`, or two equal lines (which the gateway reads as one
        // 10), could be read otherwise by the upstream (a leading zero as octal: a desync).
        if let Some((length, false)) = length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        headers::underscored_names(&mut headers, self.limits.headers_with_underscores).map_err(GatewayError::BadRequest)?;
        if parts.version == Version::HTTP_2 {
            headers::h2_values_trimmed(&headers).map_err(GatewayError::BadRequest)?;
        }
        // The host `route` matched on: the target's authority, else `Host`.
        let client_host = match parts.uri.authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => headers.get(header::HOST).cloned(),
        };
        let declared_length = length.is_some();
        // `TE` and `Upgrade` are read only where the request carries them (the scan's one pass
        // over the fields), before they go with the other hop-by-hop fields.
        let hop_by_hop = headers::HopByHop::scan(&headers);
        let te_trailers = hop_by_hop.has_te() && headers::accepts_trailers(&headers);
        let extended_connect = parts.extensions.get::<upgrade::ExtendedConnect>().is_some();
        let switch_to = if hop_by_hop.has_upgrade() { upgrade::requested(&headers, parts.version, extended_connect) } else { None };
        hop_by_hop.strip(&mut headers);
        // Its trailers lose the fields no client may send as trailers (`ProxyBody`'s `count`):
        // `Trailer` stops announcing them.
        headers::announce_kept_trailers(&mut headers);
        if parts.version == Version::HTTP_2 {
            headers::join_cookies(&mut headers);
        }
        if let Some(protocol) = switch_to {
            // Plugins see the handshake as HTTP/1.1's, whatever the upstream speaks (an HTTP/2
            // upstream gets it as an extended CONNECT: `call_upstream`).
            upgrade::restore(&mut headers, protocol);
        }
        if te_trailers {
            // `TE: trailers` is the one TE value kept (`call_upstream` sends it on): it tells
            // the upstream that trailers reach the client (gRPC needs it; hyper's HTTP/1.1
            // server sends none without it).
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        headers::add_forwarded(&mut headers, conn.peer, conn.scheme, client_host.as_ref());
        headers::sanitize_client_cert(&mut headers, conn.via_trusted_proxy);
        headers::add_via(&mut headers, parts.version);
        if let Some(id) = &id_header {
            headers.insert(headers::X_REQUEST_ID, id.clone());
        }
        match client_host {
            Some(host) => {
                headers.insert(header::HOST, host);
            }
            None => {
                headers.remove(header::HOST);
            }
        }

        // Before the body is read: a body of any length, even an empty chunked one.
        let client_body = !incoming.is_end_stream();
        // Its connection counts it until its end is read (`keepalive::RequestBody`).
        let body_end = parts.extensions.remove::<Arc<crate::keepalive::RequestBody>>();
        let progress = || {
            let read = body::UploadProgress::default();
            if let Some(end) = &body_end {
                let _ = read.end.set(end.clone());
            }
            Arc::new(read)
        };
        let (body, stream, trailers) = if route.chain.needs_request_body() {
            let read = progress();
            let buffered = body::buffer(ProxyBody::streaming(incoming).counted(read.clone()), limit).await;
            // Read whole or not (too large, broken off): the bytes read are counted.
            record.body_read(read.bytes());
            let body::Buffered { bytes, trailers } = buffered.map_err(|e| match e {
                body::BufferError::TooLarge(limit) => GatewayError::BodyTooLarge { limit },
                body::BufferError::Read(reason) => GatewayError::BadRequest(reason),
            })?;
            let bytes = encoding::decode_body(&mut headers, bytes, limit).map_err(|e| match e {
                encoding::DecodeError::TooLarge(limit) => GatewayError::BodyTooLarge { limit },
                unsupported @ (encoding::DecodeError::Unsupported(_)
                | encoding::DecodeError::TooManyCodings
                | encoding::DecodeError::TooManyMembers) => {
                    GatewayError::UnsupportedEncoding(unsupported.to_string())
                }
                corrupt @ encoding::DecodeError::Corrupt { .. } => GatewayError::BadRequest(format!("request {corrupt}")),
            })?;
            (Some(bytes), None, trailers)
        } else {
            let stream = if declared_length { ProxyBody::streaming(incoming) } else { ProxyBody::limited(incoming, limit) };
            // Its bytes are counted as they are read (an atomic add a frame); a request without a
            // body gets no counter.
            let stream = if stream.is_end_stream() {
                if let Some(end) = &body_end {
                    end.ended();
                }
                stream
            } else {
                let read = progress();
                record.body_streaming(read.clone());
                stream.counted(read)
            };
            (None, Some(stream), None)
        };

        let mut context = crate::exchange::Context::default();
        if let Some(client) = parts.extensions.get::<Arc<crate::tls::ClientIdentity>>() {
            // Set on an empty context: only a certificate naming more than `Context::MAX_BYTES`
            // would leave a key unset.
            let _ = context.set(CLIENT_SUBJECT.to_owned(), client.subject.clone());
            let _ = context.set(CLIENT_SANS.to_owned(), client.sans.join(","));
        }
        let state = Box::new(RequestState {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers,
            params,
            route_id: route.id.clone(),
            client_addr: conn.peer,
            client_ip: conn.client,
            scheme: conn.scheme,
            request_id: request_id.clone(),
            request_id_header: id_header,
            body,
            context,
            response_edits: Default::default(),
            header_limits: self.limits.header_limits(),
            body_limit: limit,
            host_from_plugin: false,
            client_body,
            header_tally: Default::default(),
            past_limits: false,
            removed_headers: Default::default(),
        });
        Ok((state, stream, trailers))
    }

    /// Phase 5: sends the request upstream and waits for the response head. The response body is
    /// buffered only when a plugin in the chain declared it needs it. The request's headers are
    /// moved, not copied, unless a response phase will still read them (`keep_request`).
    /// `served` is set to the target the request was sent to (the last one tried, after a
    /// failover) once it is sent; `in_flight` to the request's place among the upstream's
    /// `max_requests` (503 `upstream_overloaded`, not sent, when none is free) and, with
    /// `least_requests`, its count on the target it is sent to. On a route with `mirror`, a
    /// request drawn to be mirrored is copied as it leaves, the copy sent to the mirror once the
    /// upstream call has ended ([`mirror`]; its streamed body read whole first). `made_cookie`
    /// is set to the `hash_cookie` made for a request that came without it, the key it is
    /// placed by (and failed over, retried and mirrored by), for the answer to set.
    async fn call_upstream<'a>(
        &'a self,
        route: &'a Route,
        state: &mut RequestState,
        keep_request: bool,
        body: UpstreamBody,
        client_target: Option<&PathAndQuery>,
        (record, started, in_flight, made_cookie): (
            &mut RequestRecord<'a>,
            Instant,
            &mut Option<upstream::InFlight>,
            &mut Option<Box<affinity::MadeCookie<'a>>>,
        ),
    ) -> Result<PendingResponse, GatewayError> {
        let Some(answered_by) = &route.answered_by else {
            return Err(GatewayError::NoUpstream(route.id.to_string()));
        };
        let upstream = &answered_by.upstream;
        *in_flight = upstream.admit().map_err(|e| upstream.error(e))?;
        let (key_hash, made) = affinity::placing_key(upstream.hash_on(), upstream.hash_cookie(), state);
        // Boxed: made for a client's first request only, it adds a pointer, not its 40 bytes,
        // to every request's future.
        *made_cookie = made.map(Box::new);
        // Phase 5a, on a route with `mirror` only: whether a copy of this request goes to the
        // mirror too (drawn by its `percent`, within its bounds).
        let mirrored = match &route.mirror {
            Some(mirror) => mirror.admit(state, made_cookie.as_deref()),
            None => None,
        };
        let first = match key_hash {
            Some(key_hash) => upstream.pick_by(key_hash),
            None => upstream.choose(in_flight),
        };
        let (target, target_host) = (upstream.target(first), upstream.host_value(first));
        let client_path = client_target.map_or("", PathAndQuery::path);
        let path_and_query = match client_target {
            // Nothing changed it: the client's own, shared.
            Some(client) if !route.changes_path() && state.path == client.path() && state.query.as_deref() == client.query() => {
                client.clone()
            }
            _ => {
                let mut path =
                    if state.path == client_path { route.upstream_path(&state.path, &state.params) } else { state.path.clone() };
                if let Some(q) = &state.query {
                    push_query(&mut path, q);
                }
                PathAndQuery::try_from(path).map_err(|e| GatewayError::BadRequest(format!("cannot build the upstream URI: {e}")))?
            }
        };
        let uri = Uri::builder()
            .scheme(upstream.scheme())
            .authority(target.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| GatewayError::BadRequest(format!("cannot build the upstream URI: {e}")))?;

        let mut headers = if keep_request { state.headers.clone() } else { std::mem::take(&mut state.headers) };
        // A plugin's `Host` is what it meant to send; with `preserve`, the client's goes on as it
        // came. Otherwise the target's, which follows the target when the request fails over;
        // so for an HTTP/1.0 client that sent no `Host` on a `preserve` route: nothing to
        // preserve, and an HTTP/1.1 request must carry one (RFC 9112 3.2).
        let preserved = route.host_header == crate::config::HostHeader::Preserve && headers.contains_key(header::HOST);
        let target_host_header = !state.host_from_plugin && !preserved;
        if target_host_header && let Some(host) = target_host {
            headers.insert(header::HOST, host.clone());
        }
        let body_need = route.chain.response_body_need(state);
        if body_need != ResponseBodyNeed::Stream {
            encoding::restrict_accept_encoding(&mut headers);
        }
        grpc::set_timeout(&mut headers, route.timeout);
        // `TE: trailers` alone goes on (HTTP/2 allows no other TE, and a transfer coding a
        // plugin asked for is not one the gateway decodes). TE is hop-by-hop: on HTTP/1.1 its
        // sender names it in `Connection` (RFC 9110 10.1.4); HTTP/2 has no `Connection`.
        match headers.get(header::TE) {
            Some(te) if !te.as_bytes().eq_ignore_ascii_case(b"trailers") => {
                headers.remove(header::TE);
            }
            Some(_) if upstream.version() != Version::HTTP_2 => {
                // Appended: a WebSocket handshake's `Connection: upgrade` stays.
                headers.append(header::CONNECTION, HeaderValue::from_static("te"));
            }
            _ => {}
        }
        let body_idle = Duration::from_millis(self.timeouts.body_idle_ms);
        let body = match (&state.body, body.stream) {
            // Buffered for a plugin and left empty on a request that came without one and whose
            // method expects none: sent as it came, with no `Content-Length: 0` (RFC 9110 8.6:
            // a client should not send one then; some servers and WAFs refuse a GET with it).
            (Some(bytes), _) if bytes.is_empty() && !state.client_body && !expects_content(&state.method) => {
                headers.remove(header::CONTENT_LENGTH);
                ProxyBody::with_trailers(Bytes::new(), body.trailers)
            }
            (Some(bytes), _) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                ProxyBody::with_trailers(bytes.clone(), not_repeating(body.trailers, &headers, state.removed_headers))
            }
            // A mirrored request's streamed body is read whole, so that both upstreams get it
            // (boxed: its state is no part of every request's future).
            (None, Some(stream)) if mirrored.is_some() && !stream.is_end_stream() => {
                let body::Buffered { bytes, trailers } = Box::pin(mirror::read_body(stream, route.max_body_bytes, body_idle)).await?;
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                ProxyBody::with_trailers(bytes, not_repeating(trailers, &headers, state.removed_headers))
            }
            // A client that stops sending its body mid-way is cut off like a stalled upstream
            // body (a 408), rather than holding the upstream connection. Behind plugins, its
            // trailers will repeat none of the header fields it goes with.
            (None, Some(stream)) => {
                if !route.chain.entries().is_empty() && !stream.is_end_stream() {
                    let barred = body::BarredTrailers { sent: headers.keys().cloned().collect(), removed: state.removed_headers };
                    let _ = stream.upload_progress().barred_trailers.set(barred);
                }
                stream.watched(body_idle, "a client's request body")
            }
            (None, None) => ProxyBody::empty(),
        };
        if upstream.version() != Version::HTTP_2
            && (state.method == Method::GET || state.method == Method::HEAD)
            && body.size_hint().exact().is_none()
            && !body.is_end_stream()
        {
            // hyper sends a GET or HEAD body of unknown length only when told to chunk it: a
            // client's chunked (or HTTP/2 unsized) body on one was dropped without a word.
            headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        // A WebSocket handshake (`prepare` put its `Upgrade` back; plugins cannot add one); to an
        // HTTP/2 upstream it leaves as an extended CONNECT.
        let asked_upgrade = upgrade::requested(&headers, Version::HTTP_11, false).is_some();
        let extended_connect = asked_upgrade && upstream.version() == Version::HTTP_2;
        let mut request = Request::new(if extended_connect { ProxyBody::empty() } else { body });
        *request.method_mut() = state.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = upstream.version();
        *request.headers_mut() = headers;
        let websocket_key = extended_connect.then(|| upgrade::to_extended_connect(&mut request));

        // Phase 5b: the copy is made from the request as it leaves (`send` takes it)...
        let mirrored = match mirrored {
            Some(ticket) => ticket.prepare(&request, state.host_from_plugin, body_idle),
            None => None,
        };
        record.upstream_calling(&upstream.name, upstream.addr(first), started);
        let (tried, sent) =
            std::pin::pin!(upstream.send(request, (first, key_hash), in_flight, target_host_header, route.timeout, body_idle)).await;
        if let Some(copy) = mirrored {
            // ...and sent only now that the request has gone (answered or failed: a copy either
            // way), in a task never awaited. Not before: a client that abandons its request
            // (an HTTP/2 stream reset, even with NO_ERROR, which ends a body early as if whole)
            // has this future dropped while `send` waits, so no copy of a request the upstream
            // never got leaves. Nor once the body is written: that point is not seen from
            // here, and a request without a body has none.
            copy.send();
        }
        let last = tried.last;
        if last != first {
            record.failed_over(tried.failed_before.iter().map(|&i| upstream.addr(i)));
            record.upstream_calling(&upstream.name, upstream.addr(last), started);
        }
        let mut response = sent.map_err(|e| match e {
            upstream::SendError::BodyTooLarge => GatewayError::BodyTooLarge { limit: route.max_body_bytes },
            // Most often the upstream does not allow extended CONNECT (it resets the stream).
            upstream::SendError::Unavailable(reason) if websocket_key.is_some() => GatewayError::UpstreamUnavailable {
                upstream: upstream.name.to_string(),
                reason: format!("WebSocket over HTTP/2 (RFC 8441 extended CONNECT) failed; does the upstream allow it? {reason}"),
            },
            other => upstream.error(other),
        })?;
        record.upstream_answered(response.status().as_u16());
        // The answer's body is still to come: the exchange counts for the target's health once
        // its fate is known (dropped unsettled, a success).
        let origin = upstream::ResponseOrigin::new(&response, (answered_by.clone(), last), state.request_id.clone());
        // A refusal of the answer: a 502 the gateway logs (and counts, when not HTTP), and the
        // target's failure.
        let refused = |origin: upstream::ResponseOrigin, reason: String| {
            origin.failed(&reason);
            GatewayError::UpstreamUnavailable { upstream: upstream.name.to_string(), reason }
        };
        let garbled = |origin: upstream::ResponseOrigin, reason: String| {
            origin.failed(&reason);
            GatewayError::UpstreamBadEncoding { upstream: upstream.name.to_string(), reason }
        };
        if response.status().as_u16() > 599 {
            // RFC 9110 15: no such status class; a client treats it as a server error.
            return Err(refused(origin, format!("it answered with status {}, outside 100-599", response.status().as_u16())));
        }
        if let Some(key) = websocket_key {
            upgrade::switch_from_extended_connect(&mut response, key.as_ref());
        }
        if upgrade::switches(response.status()) {
            if !asked_upgrade {
                return Err(refused(origin, "it switched protocols (101) though the request asked for no upgrade".into()));
            }
            // RFC 9110 7.8, 15.2.2: a 101 names the protocol switched to, one the client asked
            // for; the gateway asks for `websocket` alone.
            if let Some(other) = upgrade::not_websocket(response.headers()) {
                return Err(refused(origin, other));
            }
            return Ok(switched(response));
        }
        let (parts, incoming) = response.into_parts();
        let mut headers = parts.headers;
        // `Transfer-Encoding` is read only where the response carries it (most carry a
        // `Content-Length`): the scan's one pass over the fields says so.
        let hop_by_hop = headers::HopByHop::scan(&headers);
        if hop_by_hop.has_transfer_encoding() {
            if let Some(coding) = headers::other_transfer_coding(&headers) {
                return Err(garbled(origin, format!("its Transfer-Encoding `{coding}` is not one the gateway decodes (only `chunked`)")));
            }
            // Framed both ways, the body was read by its Transfer-Encoding: the Content-Length
            // goes (RFC 9112 6.3), or the client would read a body cut or padded to it.
            headers.remove(header::CONTENT_LENGTH);
        } else {
            headers::single_content_length(&mut headers);
        }
        hop_by_hop.strip(&mut headers);
        let streamed = |headers: http::HeaderMap, stream: ProxyBody, origin| PendingResponse {
            state: ResponseState { status: parts.status, headers, body: None, trailers: None },
            stream: Some(stream),
            version: parts.version,
            upgrade: None,
            origin: Some(origin),
        };
        // A body read whole for the plugins is part of the answer they wait for: held to what is
        // left of the route's timeout, as its head was. A server that sends a head and stalls
        // (a gRPC server past the `grpc-timeout` the gateway gave it) would otherwise hold the
        // client until `timeouts.body_idle_ms`, with nothing sent.
        let body_deadline = tokio::time::Instant::from_std(started + route.timeout);
        let stalled = |origin: upstream::ResponseOrigin| {
            let reason = format!("its response body was not whole within the route's timeout of {} ms (read for the plugins)", route.timeout.as_millis());
            origin.failed(&reason);
            GatewayError::UpstreamTimeout { upstream: upstream.name.to_string(), reason }
        };
        // Entries that declared which responses they read the body of may want none of this one.
        let body_need = route.chain.response_body_need_for(state, body_need, parts.status.as_u16(), &headers);
        // An event stream (server-sent events) is never whole: read for a plugin that only may
        // read bodies (a cache), every event would wait for the route's timeout (a 504) or until
        // its limit filled. It streams as if no plugin read bodies (theirs is `none`, as for one
        // too long). A plugin reading every body (a redaction, a check) still gets it whole: an
        // upstream cannot slip a body past it with a header.
        if matches!(body_need, ResponseBodyNeed::UpTo(_)) && encoding::is_event_stream(&headers) {
            return Ok(streamed(headers, ProxyBody::streaming(incoming), origin));
        }
        if let ResponseBodyNeed::UpTo(max) = body_need {
            // Read for the plugins only if it fits what they asked for; else it streams as if
            // none read bodies. A HEAD's answer has none to read.
            if state.method == Method::HEAD {
                return Ok(streamed(headers, ProxyBody::streaming(incoming), origin));
            }
            // `Cache-Control: no-transform` (RFC 9110 7.7): a proxy must not change the content,
            // so an encoded body is not decoded for plugins that only may read it (a cache): it
            // goes on as the upstream sent it, and theirs is `none`.
            if encoding::is_encoded(&headers) && compress::no_transform(&headers) {
                return Ok(streamed(headers, ProxyBody::streaming(incoming), origin));
            }
            let limit = max.min(route.max_body_bytes);
            let read = match tokio::time::timeout_at(body_deadline, body::buffer_up_to(incoming, limit)).await {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => return Err(refused(origin, e.to_string())),
                Err(_) => return Err(stalled(origin)),
            };
            let body::Buffered { bytes, trailers } = match read {
                body::UpTo::Whole(buffered) => buffered,
                body::UpTo::Longer(stream) => return Ok(streamed(headers, stream, origin)),
            };
            // Undecodable or too long decoded: the bytes go on as the upstream sent them.
            return Ok(match encoding::decode_body(&mut headers, bytes.clone(), limit) {
                Ok(decoded) => PendingResponse {
                    state: ResponseState { status: parts.status, headers, body: Some(decoded), trailers },
                    stream: None,
                    version: parts.version,
                    upgrade: None,
                    origin: None,
                },
                Err(e) => {
                    tracing::debug!(upstream = &*upstream.name, "response body not handed to plugins: {e}");
                    streamed(headers, ProxyBody::with_trailers(bytes, trailers), origin)
                }
            });
        }
        if body_need == ResponseBodyNeed::Whole {
            let body::Buffered { bytes, trailers } = match tokio::time::timeout_at(body_deadline, body::buffer(incoming, route.max_body_bytes)).await {
                Ok(Ok(buffered)) => buffered,
                Ok(Err(body::BufferError::TooLarge(limit))) => return Err(GatewayError::UpstreamBodyTooLarge { limit }),
                Ok(Err(body::BufferError::Read(reason))) => return Err(refused(origin, reason)),
                Err(_) => return Err(stalled(origin)),
            };
            let bytes = match encoding::decode_body(&mut headers, bytes, route.max_body_bytes) {
                Ok(bytes) => bytes,
                Err(encoding::DecodeError::TooLarge(limit)) => return Err(GatewayError::UpstreamBodyTooLarge { limit }),
                // A body that is not what its `Content-Encoding` says: the target's bad answer.
                Err(other) => return Err(garbled(origin, other.to_string())),
            };
            if state.method == Method::HEAD {
                // No body to decode or transform: the length and coding a GET would get through
                // this chain are not known here, so none is claimed (RFC 9110 9.3.2 allows it).
                headers.remove(header::CONTENT_LENGTH);
                headers.remove(header::CONTENT_ENCODING);
            }
            Ok(PendingResponse {
                state: ResponseState { status: parts.status, headers, body: Some(bytes), trailers },
                stream: None,
                version: parts.version,
                upgrade: None,
                origin: None,
            })
        } else {
            Ok(streamed(headers, ProxyBody::streaming(incoming), origin))
        }
    }
}

/// A client's request trailers without the fields the header section `headers` it goes
/// upstream with names, or the plugins `removed` ([`headers::strip_trailers_named`]: a plugin's
/// header repeated by the client, or one it removed brought back).
fn not_repeating(trailers: Option<http::HeaderMap>, headers: &http::HeaderMap, removed: headers::RemovedNames) -> Option<http::HeaderMap> {
    trailers.map(|mut trailers| {
        let sent: Vec<http::HeaderName> = headers.keys().cloned().collect();
        headers::strip_trailers_named(&mut trailers, &sent, removed);
        trailers
    })
}

/// Whether a request with `method` is expected to carry content, so that an empty one is said
/// with `Content-Length: 0` (RFC 9110 8.6): the methods defined with request content.
fn expects_content(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE | Method::CONNECT)
}

/// An upstream's `101 Switching Protocols` to a request that asked for it: the head the client
/// gets (with its `Upgrade`), and the upstream connection's side to join to the client's.
fn switched(mut response: Response<Incoming>) -> PendingResponse {
    let on_upgrade = hyper::upgrade::on(&mut response);
    let (parts, _) = response.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    let mut headers = parts.headers;
    headers::strip_hop_by_hop(&mut headers);
    if let Some(protocol) = protocol {
        upgrade::restore(&mut headers, protocol);
    }
    PendingResponse {
        state: ResponseState { status: parts.status, headers, body: None, trailers: None },
        stream: None,
        version: parts.version,
        upgrade: Some(on_upgrade),
        origin: None,
    }
}

/// Phase 7: the response as the client gets it: buffered bodies get an exact `Content-Length`
/// and are followed by their trailers (sent to HTTP/2 clients), streamed ones pass through with
/// theirs; `Via` and `X-Request-Id` are added.
/// RFC 9110 6.4.1, 8.6, 15.3.5-6: a 204, 205 or 304 has no content, and a 204 no
/// Content-Length. For one of those, drops the framing a plugin or the upstream gave it (a 205
/// says `Content-Length: 0`; a 304 keeps a streamed upstream's, the selected representation's,
/// but not one that came with a `held_body`, a plugin's or a buffered one) and returns true:
/// its body is not sent. `plugin test` shows the same.
pub fn frame_no_content(status: http::StatusCode, headers: &mut http::HeaderMap, held_body: bool) -> bool {
    if !matches!(status.as_u16(), 204 | 205 | 304) {
        return false;
    }
    headers.remove(header::TRANSFER_ENCODING);
    match status.as_u16() {
        204 => drop(headers.remove(header::CONTENT_LENGTH)),
        205 => drop(headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"))),
        _ if held_body => drop(headers.remove(header::CONTENT_LENGTH)),
        _ => {}
    }
    true
}

/// Phase 7: the response as it leaves for the client, framed (a buffered body's
/// `Content-Length`, none for no content). `head`: it answers a HEAD, whose buffered body is
/// empty and says nothing of the GET's length. A streamed body is watched for stalls, and told
/// to its `origin` if it breaks off.
fn write_response(
    state: ResponseState,
    (stream, origin): (Option<ProxyBody>, Option<upstream::ResponseOrigin>),
    body_idle: Duration,
    head: bool,
) -> Response<ProxyBody> {
    let ResponseState { status, mut headers, body, trailers } = state;
    let no_content = frame_no_content(status, &mut headers, body.is_some());
    let body = match (body, stream) {
        _ if no_content => ProxyBody::full(Bytes::new()),
        (Some(bytes), _) => {
            headers.remove(header::TRANSFER_ENCODING);
            // A HEAD's buffered answer is empty: `Content-Length: 0` would claim the GET's is.
            if !(head && bytes.is_empty()) {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            }
            // A plugin's answer to a HEAD may carry the GET's body: its length is said, its
            // bytes not sent (over HTTP/2 they would be a protocol error).
            if head {
                ProxyBody::full(Bytes::new())
            } else {
                let trailers = trailers.map(|mut trailers| {
                    headers::strip_response_trailers(&mut trailers);
                    trailers
                });
                ProxyBody::with_trailers(bytes, trailers)
            }
        }
        (None, Some(stream)) => stream.watched_from(body_idle, origin),
        (None, None) => ProxyBody::full(Bytes::new()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Phase 1's host rules (RFC 9112 3.2, RFC 9113 8.3.1): an HTTP/1.1 request names its host,
/// in one well-formed `Host` (HTTP/1.0 need not, and an absolute-form target carries it), and
/// over HTTP/2 a `Host` says what `:authority` says. The gateway routes on one host and the
/// upstream gets it: a missing, second or ambiguous one could be read differently further on.
fn check_host(request: &Request<Incoming>) -> Result<(), GatewayError> {
    // An absolute-form target's or HTTP/2 `:authority`'s host is the request's host (RFC 9112
    // 3.2.2): held to the rules of a `Host` header, and never with user info (RFC 9110 4.2.4),
    // which would otherwise miss a `hosts` route and reach the upstream as its `Host`.
    if let Some(authority) = request.uri().authority()
        && !headers::valid_host(authority.as_str().as_bytes())
    {
        return Err(GatewayError::BadRequest("malformed authority in the request target: expected host[:port], without user info".into()));
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        if request.uri().authority().is_none() {
            match request.version() {
                Version::HTTP_11 => return Err(GatewayError::BadRequest("an HTTP/1.1 request needs a Host header".into())),
                // RFC 9113 8.3.1: an http(s) request names its host (h2 drops the `:scheme` of
                // one that does not, so it arrives as a bare path).
                Version::HTTP_2 => return Err(GatewayError::BadRequest("an HTTP/2 request needs `:authority` or a Host header".into())),
                _ => {}
            }
        }
        return Ok(());
    };
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest("more than one Host header".into()));
    }
    if !headers::valid_host(host.as_bytes()) {
        return Err(GatewayError::BadRequest("malformed Host header: expected host[:port]".into()));
    }
    // An http(s) target has a host (RFC 9110 4.2.1): an empty `Host` names none to route on or
    // to send upstream (nginx refuses it too). Beside an absolute-form target it is ignored.
    if host.is_empty() && request.uri().authority().is_none() {
        return Err(GatewayError::BadRequest("an empty Host header: an http(s) request names its host".into()));
    }
    if request.version() == Version::HTTP_2
        && let Some(authority) = request.uri().authority()
        && !authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes())
    {
        return Err(GatewayError::BadRequest("the Host header differs from :authority".into()));
    }
    Ok(())
}

/// The declared `Content-Length`, if any, and whether it is written as the number alone (one
/// line, decimal digits, no leading zero); a malformed or conflicting one is a 400 (a request
/// smuggling pattern must never be forwarded ambiguously).
fn content_length(headers: &http::HeaderMap) -> Result<Option<(u64, bool)>, GatewayError> {
    let mut found: Option<(u64, bool)> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let parsed = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| GatewayError::BadRequest("malformed Content-Length".into()))?;
        if found.is_some_and(|(f, _)| f != parsed) {
            return Err(GatewayError::BadRequest("conflicting Content-Length headers".into()));
        }
        let bytes = value.as_bytes();
        let plain = found.is_none() && bytes.iter().all(u8::is_ascii_digit) && (bytes.len() == 1 || bytes.first() != Some(&b'0'));
        found = Some((parsed, plain));
    }
    Ok(found)
}
