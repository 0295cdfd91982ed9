//! The admin listener: a separate, loopback-by-default HTTP/1.1 port for operators.
//!
//! | path | what | token |
//! |---|---|---|
//! | `/health` | 200 while the process serves | never |
//! | `/ready` | 200 when config, plugins and state backend are ready, else 503 ([`readiness`]) | never |
//! | `/metrics` | Prometheus text format ([`crate::telemetry::metrics`], and the standard `process_*` metrics: [`crate::telemetry::process`]) | if set |
//! | `/admin/config` | the effective config, secrets redacted ([`redact`]) | if set |
//! | `/admin/routes` | each route and its chain ([`inventory`]) | if set |
//! | `/admin/plugins` | each plugin: source, hash, grants, limits, calls, failures, p99 ([`inventory`]) | if set |
//! | `POST /admin/reload` | reads the config file again and swaps it in, or says why not ([`crate::reload`]) | if set |
//! | `POST /admin/state/clear` | removes a route's chain entries' stored state (all, one plugin's, the global chain's or the route's own): a cache purged, counters reset ([`state_clear`]) | if set |
//! | `/admin/analytics` | usage per route and consumer (1 m, 1 h), top lists, anomaly flags ([`crate::telemetry::analytics`]) | if set |
//! | `/` | the live dashboard ([`dashboard`]): a static page that polls the two above with the token | never |
//!
//! With `admin.token` set, the token-protected paths need `Authorization: Bearer <token>` (401
//! otherwise). Health and readiness stay open so probes need no secret, and so does the dashboard
//! page, which holds no data and asks the browser for the token. Requests a web page could make
//! of the operator's browser (a rebound DNS name, a cross-site `POST`) are refused first
//! ([`browser`]). Then a path not in the table is a 404 whatever the method (behind the token,
//! if set: a 401 without it), and a path in it asked with another method a 405 with `Allow`.
//!
//! The listener holds at most [`MAX_CONNECTIONS`] connections, at most [`MAX_PER_PEER`] from one
//! address, and closes one that has not sent a whole request head within `timeouts.idle_ms`,
//! [`MAX_HEAD_WAIT`] at most (a new connection, or a kept-alive one between requests):
//! connections that send nothing, no token needed to open them, cannot use up the process's file
//! descriptors and take the proxy's listeners down with them, and one client holding its share
//! leaves the rest to probes and scrapers.

pub mod browser;
pub mod dashboard;
pub mod inventory;
pub mod readiness;
pub mod redact;
pub mod state_clear;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::{Config, ConfigError, ConfigIssue, ConfigSource};
use crate::reload::{LiveGateway, ReloadError};
use crate::telemetry::warn_throttle::WarnThrottle;

/// What the admin endpoints answer from.
pub struct AdminState {
    live: Arc<LiveGateway>,
    readiness: readiness::ReadinessLog,
}

impl AdminState {
    /// The admin view of a live gateway. The token is the current config's `admin.token`, read
    /// per request: a reload rotates it (the rest of `[admin]` needs a restart).
    pub fn new(live: Arc<LiveGateway>) -> Self {
        Self { live, readiness: readiness::ReadinessLog::default() }
    }
}

/// Checks `[admin]`: the address must be `ip:port` and the token, if set, one a client can
/// present: not empty, visible ASCII only (a space at either end, another white space or a
/// byte past ASCII could never match what `Authorization: Bearer` carries, and every request,
/// `POST /admin/reload` included, would be refused).
pub fn config_issues(source: &ConfigSource, config: &Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let admin = &config.admin;
    if admin.enabled
        && let Err(e) = admin.address.get_ref().parse::<SocketAddr>()
    {
        issues.push(source.issue(
            Some(admin.address.span()),
            "admin.address",
            format!("`{}` is not `ip:port`: {e}", admin.address.get_ref()),
        ));
    }
    if let Some(token) = &admin.token {
        if token.get_ref().trim().is_empty() {
            issues.push(source.issue(Some(token.span()), "admin.token", "must not be empty (remove it to run without a token)"));
        } else if !token.get_ref().bytes().all(|b| b.is_ascii_graphic()) {
            issues.push(source.issue(
                Some(token.span()),
                "admin.token",
                "may hold only visible ASCII characters: a space, tab or other white space, or a character past ASCII, \
                 could never match the token a client presents in `Authorization: Bearer`",
            ));
        }
    }
    issues
}

/// Binds the admin listener `[admin]` asks for, or `None` when it is disabled. A failure is
/// reported at `admin.address` in the config.
pub async fn bind(source: &ConfigSource, config: &Config) -> Result<Option<TcpListener>, ConfigError> {
    if !config.admin.enabled {
        return Ok(None);
    }
    let address = config.admin.address.get_ref();
    let at = |message: String| ConfigError::Invalid(vec![source.issue(Some(config.admin.address.span()), "admin.address", message)]);
    let addr: SocketAddr = address.parse().map_err(|e| at(format!("`{address}` is not `ip:port`: {e}")))?;
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        let mut message = crate::server::cannot_listen(addr, &e);
        if e.kind() == std::io::ErrorKind::AddrInUse {
            message.push_str(" (`[admin] address`; `enabled = false` runs without it)");
        }
        at(message)
    })?;
    Ok(Some(listener))
}

/// Serves the admin endpoints on `listener` until `shutdown` turns true.
pub async fn serve(state: Arc<AdminState>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = PeerCounts::default();
    let (accept_failures, refusals) = (WarnThrottle::new(WARN_INTERVAL), WarnThrottle::new(WARN_INTERVAL));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if let Some(failures) = accept_failures.record() {
                        tracing::warn!(failures, "admin accept failed: {e} (logged at most every {} s)", WARN_INTERVAL.as_secs());
                    }
                    // EMFILE and friends: back off rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        // At a cap, closed at once: waiting would hold the descriptor all the same.
        let place = places.clone().try_acquire_owned().ok();
        let peer_place = place.as_ref().and_then(|_| PeerPlace::take(&peers, peer.ip()));
        let (Some(place), Some(peer_place)) = (place, peer_place) else {
            if let Some(refused) = refusals.record() {
                tracing::warn!(
                    refused,
                    %peer,
                    "admin connection closed: {MAX_CONNECTIONS} are open, or {MAX_PER_PEER} from its address (logged at most every {} s)",
                    WARN_INTERVAL.as_secs()
                );
            }
            continue;
        };
        // Held to the idle time of the config served now (a reload may change it).
        let idle = std::time::Duration::from_millis(state.live.current().config.timeouts.idle_ms).min(MAX_HEAD_WAIT);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(idle);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, request, loopback).await) }
            });
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!("admin connection ended with an error: {e}");
            }
            drop((place, peer_place));
        });
    }
}

/// Most connections the admin listener holds at once: probes, a Prometheus scraper, a few
/// operators and dashboards. Past it a new connection is closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Most connections the admin listener holds from one address: a client holding them leaves
/// the rest of [`MAX_CONNECTIONS`] to probes and scrapers.
pub const MAX_PER_PEER: usize = 16;

/// Longest an admin connection waits for a request head (new, or between requests), however
/// long `timeouts.idle_ms` is: a connection that sends nothing gives its place back soon.
pub const MAX_HEAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections held per client address.
type PeerCounts = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One of an address's [`MAX_PER_PEER`] places, given back when dropped.
struct PeerPlace {
    peers: PeerCounts,
    ip: std::net::IpAddr,
}

impl PeerPlace {
    /// A place for `ip`, unless it holds [`MAX_PER_PEER`] already.
    fn take(peers: &PeerCounts, ip: std::net::IpAddr) -> Option<Self> {
        let mut held = peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = held.entry(ip).or_insert(0);
        if *count >= MAX_PER_PEER {
            return None;
        }
        *count += 1;
        Some(Self { peers: peers.clone(), ip })
    }
}

impl Drop for PeerPlace {
    fn drop(&mut self) {
        let mut held = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Least time between two warnings of one kind (failed accepts, connections refused at the cap).
const WARN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers one admin request, on a loopback address or not. On loopback without a token the
/// API is open and [`browser`]'s DNS rebinding guard applies.
async fn answer(state: &AdminState, request: Request<Incoming>, loopback: bool) -> Response<Full<Bytes>> {
    // The token of the config now served: a reload may have rotated it.
    let generation = state.live.current();
    let token = generation.config.admin.token.as_ref().map(|t| t.get_ref().as_str());
    // RFC 9112 3.2: an HTTP/1.1 request names its host, in `Host` or an absolute-form target
    // (whose authority is the host, whatever `Host` says).
    let host = request.uri().authority().map(|a| a.as_str().as_bytes()).or_else(|| request.headers().get(http::header::HOST).map(|h| h.as_bytes()));
    if host.is_none() && request.version() == http::Version::HTTP_11 {
        return json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": "bad_request", "message": "an HTTP/1.1 request needs a Host header" }));
    }
    if let Err(refusal) = browser::check(request.method(), host, request.headers(), loopback && token.is_none()) {
        let (error, message) = refusal.answer();
        return json(StatusCode::FORBIDDEN, &serde_json::json!({ "error": error, "message": message }));
    }
    let path = request.uri().path();
    let Some(allow) = methods(path) else {
        // An unknown path is a 404 whatever the method. Behind the token, as a `GET` of one always
        // was: a client without it learns no more about which paths exist than before.
        if !authorized(token, &request) {
            return unauthorized();
        }
        return not_found(path);
    };
    // Behind the token before the method is looked at: a 405 would tell a client without it
    // that the path exists, as a 404 for an unknown one does not.
    let open = matches!(path, "/health" | "/ready" | "/");
    if !open && !authorized(token, &request) {
        return unauthorized();
    }
    let allowed = if allow == POST {
        request.method() == Method::POST
    } else {
        request.method() == Method::GET || request.method() == Method::HEAD
    };
    if !allowed {
        // RFC 9110 15.5.6: a 405 names the methods the resource takes.
        let mut response = json(StatusCode::METHOD_NOT_ALLOWED, &serde_json::json!({ "error": "method_not_allowed" }));
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        return response;
    }
    let gateway = &generation.gateway;
    match path {
        "/health" => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        // Shutting down: not ready, whatever the checks say, so balancers stop sending.
        "/ready" if state.live.is_draining() => {
            json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "ready": false, "draining": true }))
        }
        "/ready" => {
            let (ready, body) = readiness::check(gateway, &state.readiness).await;
            json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body)
        }
        // Encoded on the blocking pool: the process metrics read procfs, and listing
        // `/proc/self/fd` takes time in proportion to the open descriptors (a few ms with tens of
        // thousands of connections), which would hold up the tasks sharing this runtime.
        "/metrics" => match tokio::task::spawn_blocking({
            let telemetry = gateway.telemetry.clone();
            move || telemetry.metrics.encode()
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|encoded| encoded.map_err(|e| e.to_string()))
        {
            Ok(text) => {
                let mut response = Response::new(Full::new(Bytes::from(text)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
                );
                response
            }
            Err(e) => {
                tracing::error!("cannot encode metrics: {e}");
                json(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({ "error": "metrics_encoding" }))
            }
        },
        "/admin/config" => json(StatusCode::OK, &redact::redacted_config(&generation.config)),
        // It takes no parameter: one guessed (`?dry_run=true`, as `nginx -t` is) would be
        // ignored and the reload made for real. `airlock check` is the dry run.
        "/admin/reload" if request.uri().query().is_some_and(|q| !q.is_empty()) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({
                "error": "bad_request",
                "message": "POST /admin/reload takes no parameters (it reloads for real); to check a config without loading it, run `airlock check -c FILE`",
            }),
        ),
        "/admin/reload" => reload(&state.live).await,
        "/admin/state/clear" => {
            let (status, body) = state_clear::clear(gateway, &generation.config, request.uri().query()).await;
            json(status, &body)
        }
        "/admin/routes" => json(StatusCode::OK, &inventory::routes(gateway, &generation.config)),
        "/admin/plugins" => json(StatusCode::OK, &inventory::plugins(gateway)),
        "/admin/analytics" => match gateway.telemetry.analytics() {
            Some(analytics) => json(StatusCode::OK, &analytics.snapshot(std::time::Instant::now())),
            None => json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "analytics_disabled" })),
        },
        "/" => dashboard::page(),
        // Only a path added to `methods` and not here.
        _ => not_found(path),
    }
}

/// `Allow` for a `POST`-only path.
const POST: &str = "POST";

/// The methods `path` takes, as its 405's `Allow` says them; `None` for a path the listener does
/// not serve (a 404 whatever the method). Every path `answer` serves is listed here.
fn methods(path: &str) -> Option<&'static str> {
    match path {
        "/admin/reload" | "/admin/state/clear" => Some(POST),
        "/health" | "/ready" | "/metrics" | "/admin/config" | "/admin/routes" | "/admin/plugins" | "/admin/analytics" | "/" => {
            Some("GET, HEAD")
        }
        _ => None,
    }
}

fn not_found(path: &str) -> Response<Full<Bytes>> {
    json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "not_found", "path": path }))
}

/// A 401 asking for the token.
fn unauthorized() -> Response<Full<Bytes>> {
    let mut response = json(StatusCode::UNAUTHORIZED, &serde_json::json!({ "error": "unauthorized" }));
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `POST /admin/reload`: 200 with the new generation, or the reasons the running one was kept.
async fn reload(live: &LiveGateway) -> Response<Full<Bytes>> {
    match live.reload().await {
        Ok(generation) => json(StatusCode::OK, &serde_json::json!({ "status": "reloaded", "generation": generation })),
        Err(ReloadError::NoFile) => json(
            StatusCode::CONFLICT,
            &serde_json::json!({ "error": "no_config_file", "message": ReloadError::NoFile.to_string() }),
        ),
        Err(e) => {
            let issues: Vec<serde_json::Value> = match &e {
                // The file itself, unread: the issue names it, with no line to point at.
                ReloadError::Config(ConfigError::Read { path, source }) => vec![issue_json(&ConfigIssue {
                    file: path.clone(),
                    line: None,
                    column: None,
                    key: String::new(),
                    message: format!("cannot read config: {source}"),
                    snippet: None,
                })],
                ReloadError::Config(c) => c.issues().iter().map(issue_json).collect(),
                _ => Vec::new(),
            };
            let body = serde_json::json!({
                "error": "reload_failed",
                "message": e.to_string(),
                "issues": issues,
                "generation": live.current().number,
            });
            json(StatusCode::UNPROCESSABLE_ENTITY, &body)
        }
    }
}

fn issue_json(issue: &ConfigIssue) -> serde_json::Value {
    serde_json::json!({
        "file": issue.file, "line": issue.line, "column": issue.column, "key": issue.key, "message": issue.message,
    })
}

/// Whether the request carries the token (always true without one). Their digests are compared,
/// in constant time: neither the token's bytes nor its length show in the time taken.
fn authorized<B>(token: Option<&str>, request: &Request<B>) -> bool {
    let Some(token) = token else { return true };
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 11.1): `bearer` is `Bearer`.
        .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, token)| token))
    else {
        return false;
    };
    use sha2::Digest as _;
    let (a, b) = (sha2::Sha256::digest(given.trim().as_bytes()), sha2::Sha256::digest(token.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_must_match_exactly() {
        let with = |value: &str| Request::get("/metrics").header("authorization", value).body(()).unwrap();
        assert!(authorized(None, &Request::get("/").body(()).unwrap()));
        assert!(authorized(Some("s3cret"), &with("Bearer s3cret")));
        assert!(!authorized(Some("s3cret"), &with("Bearer s3cre")));
        assert!(!authorized(Some("s3cret"), &with("Bearer s3cret2")));
        assert!(!authorized(Some("s3cret"), &with("Basic s3cret")));
        assert!(authorized(Some("s3cret"), &with("bearer s3cret")), "the scheme is case-insensitive");
        assert!(authorized(Some("s3cret"), &with("BEARER s3cret")));
        assert!(!authorized(Some("s3cret"), &with("Bearers3cret")));
        assert!(!authorized(Some("s3cret"), &Request::get("/").body(()).unwrap()));
    }

    #[test]
    fn only_the_paths_served_have_methods() {
        assert_eq!(methods("/admin/state/clear"), Some("POST"));
        assert_eq!(methods("/admin/routes"), Some("GET, HEAD"));
        for unknown in ["/admin/state/clear/", "/admin/reload/", "/admin/nonexistent", "/admin", "/health/", "//", ""] {
            assert_eq!(methods(unknown), None, "{unknown}");
        }
    }
}
