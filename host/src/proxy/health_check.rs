//! Active health checks (`[upstreams.<name>.health_check]`): every target of an upstream is sent
//! a `GET <path>` every `interval`, traffic or not, as Envoy's, Kong's and NGINX Plus's active
//! checks do. A target that fails `unhealthy_threshold` probes in a row (no connection, no
//! response head within `timeout`, or a status not in `statuses`) is taken out of rotation
//! ([`TargetHealth::set_checked_down`]); it is put back after `healthy_threshold` passes in a
//! row. Requests never bring it back: only its probes do. A target starts in rotation.
//!
//! The probes run on tasks of their own, one per target (a hung target does not slow the others'
//! schedule), started once the gateway serves ([`start`]); they hold the upstream weakly and end,
//! abandoning a probe in flight, when a reload drops it. Each probe is a new
//! connection (closed after the head), so a probe sees what a new request would: the listener,
//! the TLS handshake and the application. Nothing of it is on the request path, which only reads
//! the verdict.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, StatusCode, Uri, Version, header};
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::target_health::TargetHealth;
use super::tls::{self, Alpn, TlsError, TlsSettings};
use super::upstream::Upstream;
use crate::config::UpstreamProtocol;

/// The `User-Agent` of a probe, so a backend's logs can tell probes from traffic.
const USER_AGENT: &str = "airlock-health-check";

/// How an upstream's targets are probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path (and query) probed.
    pub path: PathAndQuery,
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
    /// Statuses that pass; `None`: any 2xx or 3xx.
    pub statuses: Option<Vec<u16>>,
}

impl HealthCheck {
    /// Whether a probe answered with `status` passes.
    fn passes(&self, status: StatusCode) -> bool {
        match &self.statuses {
            Some(list) => list.contains(&status.as_u16()),
            None => status.is_success() || status.is_redirection(),
        }
    }

    /// The statuses that pass, as a failed probe's warning says them.
    fn expected(&self) -> String {
        match &self.statuses {
            Some(list) => list.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
            None => "2xx or 3xx".into(),
        }
    }
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

/// A client for probes, over the upstream's transport; it keeps no connection.
#[derive(Clone)]
enum Prober {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

impl Checks {
    /// Probes by `check`, over `protocol` (TLS when `tls` is set, verified as the upstream's own
    /// connections are). Reads the TLS CA file, if any: call it off the async workers.
    pub fn new(check: HealthCheck, protocol: UpstreamProtocol, tls: Option<&TlsSettings>, connect_timeout: Duration) -> Result<Self, TlsError> {
        let http2 = protocol != UpstreamProtocol::Http1;
        let connect_timeout = connect_timeout.min(check.timeout);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_max_idle_per_host(0).timer(TokioTimer::new()).http2_only(http2);
        let prober = match tls {
            None => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(connect_timeout));
                connector.set_nodelay(true);
                Prober::Plain(builder.build(connector))
            }
            Some(settings) => {
                let alpn = if http2 { Alpn::H2 } else { Alpn::Http1 };
                Prober::Tls(builder.build(tls::connector(settings, alpn, connect_timeout)?))
            }
        };
        Ok(Self { check, prober, started: AtomicBool::new(false), stop: tokio::sync::watch::channel(()).0 })
    }

    /// The probe of one target.
    fn request(&self, scheme: &'static str, target: &Authority, version: Version) -> Result<Request<Empty<Bytes>>, String> {
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(target.clone())
            .path_and_query(self.check.path.clone())
            .build()
            .map_err(|e| format!("cannot build the probe's URI: {e}"))?;
        let host = match &self.check.host {
            Some(host) => host.clone(),
            None => HeaderValue::from_str(target.as_str()).map_err(|e| format!("cannot send the target as Host: {e}"))?,
        };
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        let headers = request.headers_mut();
        headers.insert(header::HOST, host);
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if version == Version::HTTP_11 {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(request)
    }
}

impl Prober {
    /// Sends one probe and waits, at most `timeout`, for its response head: its status, or why
    /// there is none. The body is not read.
    async fn probe(self, request: Request<Empty<Bytes>>, timeout: Duration) -> Result<StatusCode, String> {
        let sent = async {
            match &self {
                Prober::Plain(client) => client.request(request).await,
                Prober::Tls(client) => client.request(request).await,
            }
        };
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(format!("no response within {} ms", timeout.as_millis())),
            Ok(Err(e)) => Err(super::upstream::classify(&e).to_string()),
            Ok(Ok(response)) => Ok(response.status()),
        }
    }
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
        let Some((prober, request, timeout)) = upstream.upgrade().and_then(|up| {
            let checks = up.checks()?;
            let request = checks.request(up.scheme(), up.target(i), up.version());
            Some((checks.prober.clone(), request, checks.check.timeout))
        }) else {
            return;
        };
        let probed = async {
            match request {
                Ok(request) => prober.probe(request, timeout).await,
                Err(reason) => Err(reason),
            }
        };
        let status = tokio::select! {
            status = probed => status,
            _ = stopped.changed() => return,
        };
        let Some(up) = upstream.upgrade() else { return };
        let Some(checks) = up.checks() else { return };
        let verdict = status.and_then(|status| {
            if checks.check.passes(status) {
                Ok(())
            } else {
                Err(format!("it answered {}, expected {}", status.as_u16(), checks.check.expected()))
            }
        });
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
            path: PathAndQuery::from_static("/healthz"),
            host: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 3,
            statuses,
        }
    }

    #[test]
    fn statuses_pass_by_the_list_or_by_class() {
        let by_class = check(None);
        assert!(by_class.passes(StatusCode::OK) && by_class.passes(StatusCode::FOUND));
        assert!(!by_class.passes(StatusCode::NOT_FOUND) && !by_class.passes(StatusCode::SERVICE_UNAVAILABLE));
        let listed = check(Some(vec![200, 429]));
        assert!(listed.passes(StatusCode::OK) && listed.passes(StatusCode::TOO_MANY_REQUESTS));
        assert!(!listed.passes(StatusCode::NO_CONTENT));
        assert_eq!(listed.expected(), "200, 429");
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
