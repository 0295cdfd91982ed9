//! HTTP/1.1 upstream connections, kept alive and reused by one request worker.
//!
//! A request worker ([`crate::workers`]) serves a connection from start to finish on its own
//! thread, so its upstream connections need no sharing: each worker has one `Http1Pool` per
//! upstream, and a request takes a ready connection to its target from it, sends on it with
//! hyper's HTTP/1 client connection, and puts it back once the response headers are in (the
//! connection turns ready again when the body has been read). hyper-util's general-purpose
//! client did the same through a pool keyed by scheme and host, a lazy connect raced against
//! checkout, boxed futures and a task spawned per request to wait for the connection to turn
//! idle: 1.5-2 us more gateway CPU per proxied request, 5-7%, on the 2-core benchmark machine
//! (bench/README.md, seventeenth session).
//!
//! What it keeps of that client's behaviour: connections are made by the upstream's counted
//! connector (so its connect timeout, TLS and connection gauge apply), at most `max_idle` are
//! kept (over all the upstream's targets), one idle for `idle_timeout` is closed, the request is
//! sent in origin form with a `Host` header, and a request that a reused connection closed
//! before it was written is sent again on a new connection (the upstream closing a keep-alive
//! connection just as it is reused).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper::rt::{Read, Write};
use tower_service::Service;

use super::body::ProxyBody;

/// Why a request could not be sent: connecting failed, or hyper's connection did.
pub type PoolError = Box<dyn std::error::Error + Send + Sync>;

/// One worker's kept-alive HTTP/1.1 connections to the targets of one upstream.
pub struct Http1Pool<C> {
    connector: C,
    scheme: Scheme,
    builder: Builder,
    max_idle: usize,
    idle_timeout: Duration,
    /// Connections handed back, oldest first. One may still be reading its last response body
    /// (not ready yet) or closed by the upstream since; checkout skips and drops those. The
    /// oldest is the likeliest to be ready, so checkout looks from the front and usually takes
    /// the first.
    idle: Mutex<VecDeque<Kept>>,
    /// Whether this pool's sweeper task runs (started by the first connection made).
    sweeping: AtomicBool,
}

/// A connection handed back to the pool.
struct Kept {
    target: Authority,
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

impl<C> Http1Pool<C>
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<PoolError>,
    C::Future: Send,
{
    /// A pool making its connections with `connector` (`https` scheme for a TLS connector).
    pub fn new(connector: C, scheme: Scheme, max_response_headers: usize, max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        let mut builder = Builder::new();
        builder.max_headers(max_response_headers);
        Arc::new(Self {
            connector,
            scheme,
            builder,
            max_idle,
            idle_timeout,
            idle: Mutex::new(VecDeque::new()),
            sweeping: AtomicBool::new(false),
        })
    }

    /// Sends `request`, whose URI names the target (`scheme://host:port/path`), and returns the
    /// response once its headers are in.
    pub async fn send(self: &Arc<Self>, mut request: Request<ProxyBody>) -> Result<Response<Incoming>, PoolError> {
        let Some(target) = request.uri().authority().cloned() else {
            return Err("the upstream request names no target".into());
        };
        to_origin_form(&mut request, &target, &self.scheme);
        let mut sender = self.checkout(&target);
        loop {
            let reused = sender.is_some();
            let mut conn = match sender.take() {
                Some(conn) => conn,
                None => self.connect(&target).await?,
            };
            match conn.try_send_request(request).await {
                Ok(response) => {
                    // A connection that switched protocols is the tunnel's, not the pool's.
                    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                        self.checkin(target, conn);
                    }
                    return Ok(response);
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: the kept connection had been closed. Once more, on a new one.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(failed.into_error().into()),
                },
            }
        }
    }

    /// A kept connection to `target` ready for a request, dropping closed ones on the way.
    fn checkout(&self, target: &Authority) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut i = 0;
        while i < idle.len() {
            let kept = &idle[i];
            if kept.sender.is_closed() {
                idle.remove(i);
            } else if kept.sender.is_ready() && kept.target == *target {
                return idle.remove(i).map(|kept| kept.sender);
            } else {
                i += 1;
            }
        }
        None
    }

    /// Keeps `sender` for a later request, unless `max_idle` are kept already.
    fn checkin(&self, target: Authority, sender: SendRequest<ProxyBody>) {
        if self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push_back(Kept { target, sender, since: Instant::now() });
        }
    }

    /// A new connection to `target`, its hyper connection task spawned on this worker.
    async fn connect(self: &Arc<Self>, target: &Authority) -> Result<SendRequest<ProxyBody>, PoolError> {
        let uri = Uri::builder().scheme(self.scheme.clone()).authority(target.clone()).path_and_query("/").build()?;
        let io = self.connector.clone().call(uri).await.map_err(Into::into)?;
        let (sender, connection) = self.builder.handshake(io).await?;
        tokio::spawn(async move {
            // With upgrades: a 101 hands the connection to the request that switched it.
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
        });
        self.start_sweeper();
        Ok(sender)
    }

    /// Starts, once, the task closing connections idle past `idle_timeout`. It holds the pool
    /// weakly and ends with it (an upstream replaced by a reload).
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweep(Instant::now());
            }
        });
    }

    /// Drops the kept connections closed by the upstream, and the ready ones unused since
    /// `idle_timeout` before `now` (which closes them).
    fn sweep(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|kept| {
            let unused_too_long = kept.sender.is_ready() && now.duration_since(kept.since) >= self.idle_timeout;
            !kept.sender.is_closed() && !unused_too_long
        });
    }
}

/// Rewrites `request` as an HTTP/1.1 client sends it to an origin server: the path and query
/// alone in the request line (the authority only for `CONNECT`), and a `Host` header if the
/// client sent none (the target, without the scheme's default port).
fn to_origin_form(request: &mut Request<ProxyBody>, target: &Authority, scheme: &Scheme) {
    let uri = if request.method() == Method::CONNECT {
        Uri::from(target.clone())
    } else {
        match request.uri().path_and_query() {
            Some(path) => Uri::from(path.clone()),
            None => Uri::from_static("/"),
        }
    };
    *request.uri_mut() = uri;
    if !request.headers().contains_key(HOST) {
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match target.port_u16() {
            Some(port) if port == default_port => target.host(),
            _ => target.as_str(),
        };
        if let Ok(value) = HeaderValue::from_str(host) {
            request.headers_mut().insert(HOST, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, method: Method) -> Request<ProxyBody> {
        let mut request = Request::new(ProxyBody::empty());
        *request.uri_mut() = uri.parse().expect("uri");
        *request.method_mut() = method;
        request
    }

    #[test]
    fn the_request_line_carries_the_path_and_query_only() {
        let mut r = request("http://10.0.0.1:8080/a/b?c=d", Method::GET);
        to_origin_form(&mut r, &"10.0.0.1:8080".parse().expect("authority"), &Scheme::HTTP);
        assert_eq!(r.uri().to_string(), "/a/b?c=d");
        assert_eq!(r.headers()[HOST], "10.0.0.1:8080", "Host added when the client sent none");
    }

    #[test]
    fn a_host_header_already_set_is_kept_and_default_ports_are_left_out() {
        let mut r = request("http://example.com:80/", Method::GET);
        r.headers_mut().insert(HOST, HeaderValue::from_static("client.example"));
        to_origin_form(&mut r, &"example.com:80".parse().expect("authority"), &Scheme::HTTP);
        assert_eq!(r.headers()[HOST], "client.example");
        let mut r = request("https://example.com:443/x", Method::POST);
        to_origin_form(&mut r, &"example.com:443".parse().expect("authority"), &Scheme::HTTPS);
        assert_eq!((r.uri().to_string().as_str(), r.headers()[HOST].to_str().ok()), ("/x", Some("example.com")));
    }

    #[test]
    fn connect_keeps_the_authority_form() {
        let mut r = request("http://example.com:8443/", Method::CONNECT);
        to_origin_form(&mut r, &"example.com:8443".parse().expect("authority"), &Scheme::HTTP);
        assert_eq!(r.uri().to_string(), "example.com:8443");
    }
}
