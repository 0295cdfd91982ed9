//! Upstreams: named groups of targets, balanced round-robin, each with a pooled keep-alive client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ProxyBody;
use crate::config::HostHeader;
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
    next: AtomicUsize,
    client: Client<HttpConnector, ProxyBody>,
}

/// Settings an upstream is built with.
pub struct UpstreamSettings {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Idle keep-alive timeout of pooled connections.
    pub idle_timeout: Duration,
    /// Most idle connections per target.
    pub max_idle: usize,
    /// `Host` policy.
    pub host_header: HostHeader,
}

impl Upstream {
    /// Builds an upstream; `targets` must be non-empty.
    pub fn new(name: &str, targets: Vec<Authority>, settings: UpstreamSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_max_idle_per_host(settings.max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self {
            name: name.into(),
            targets,
            host_header: settings.host_header,
            request_timeout: settings.request_timeout,
            next: AtomicUsize::new(0),
            client,
        }
    }

    /// The next target, round-robin.
    pub fn pick(&self) -> &Authority {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.targets[i % self.targets.len()]
    }

    /// Sends `request` (whose URI already names the target) and waits for the response headers,
    /// at most `timeout`.
    pub async fn send(&self, request: Request<ProxyBody>, timeout: Duration) -> Result<Response<Incoming>, SendError> {
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(SendError::Timeout(format!("no response within {} ms", timeout.as_millis()))),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }

    /// Turns a send error into the gateway error answered to the client.
    pub fn error(&self, e: SendError) -> GatewayError {
        match e {
            SendError::Timeout(reason) => GatewayError::UpstreamTimeout { upstream: self.name.to_string(), reason },
            SendError::Unavailable(reason) => GatewayError::UpstreamUnavailable { upstream: self.name.to_string(), reason },
            SendError::BodyTooLarge => GatewayError::BodyTooLarge { limit: 0 },
        }
    }
}

/// Why an upstream request failed.
#[derive(Debug)]
pub enum SendError {
    /// Connect or response timeout.
    Timeout(String),
    /// Refused, reset, or not HTTP.
    Unavailable(String),
    /// The streamed request body went over the route's limit.
    BodyTooLarge,
}

fn classify(e: &hyper_util::client::legacy::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if super::body::is_length_limit(err) {
            return SendError::BodyTooLarge;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return SendError::Timeout("connect timed out".into());
        }
        source = err.source();
    }
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        reason.push_str(": ");
        reason.push_str(&err.to_string());
        source = err.source();
    }
    SendError::Unavailable(reason)
}
