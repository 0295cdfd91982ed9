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
//!
//! And what it adds: a connect failure hands the request back untouched ([`Http1Error::Connect`],
//! nothing was sent) for the upstream to try another target; and a request that a reused
//! connection took and then closed without a response head is sent once more on a new
//! connection when that is safe ([`resend`]: an idempotent method, a body that is empty or whole
//! bytes). The copy that takes is made only where a loss is likely, since copying every
//! request's head would cost allocations on the hot path: on a connection idle for
//! [`RESEND_AFTER_IDLE`] or more (the upstream's keep-alive timeout may be closing it), and, for
//! [`ARMED_AFTER_CLOSING`], on every reused connection once the upstream shows it is closing its
//! connections (a graceful restart or reload closes them however briefly they were idle): a
//! response with `Connection: close`, a kept connection found closed, or a request lost on a
//! reused one.

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
use super::resend::{self, ResendArming};

/// Why a request could not be sent: connecting failed, or hyper's connection did.
pub type PoolError = Box<dyn std::error::Error + Send + Sync>;

/// A kept connection idle for at least this long is one the upstream may be closing as it is
/// reused (its keep-alive timeout): a request sent on it is armed to be sent again.
pub const RESEND_AFTER_IDLE: Duration = Duration::from_millis(10);

/// After a sign that the upstream is closing its connections, how long every idempotent request
/// sent on a reused connection is armed to be sent again (each new sign starts it over).
pub const ARMED_AFTER_CLOSING: Duration = Duration::from_secs(5);

/// Why [`Http1Pool::send`] failed.
pub enum Http1Error {
    /// No connection to the target could be made: nothing was sent, and the request is handed
    /// back as it came (absolute URI, headers untouched) to be sent elsewhere (boxed: a failure
    /// is rare, and the result of every send stays small).
    Connect(PoolError, Box<Request<ProxyBody>>),
    /// The exchange failed on a connection (the request may have been sent).
    Exchange(PoolError),
}

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
    /// When requests on reused connections are armed to be sent again ([`ARMED_AFTER_CLOSING`]),
    /// shared with the upstream's other pools.
    arming: Arc<ResendArming>,
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
    /// A pool making its connections with `connector` (`https` scheme for a TLS connector),
    /// armed to send requests again by `arming` (the upstream's, shared by its pools).
    pub fn new(connector: C, scheme: Scheme, max_response_headers: usize, max_idle: usize, idle_timeout: Duration, arming: Arc<ResendArming>) -> Arc<Self> {
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
            arming,
        })
    }

    /// Sends `request`, whose URI names the target (`scheme://host:port/path`), and returns the
    /// response once its headers are in.
    pub async fn send(self: &Arc<Self>, mut request: Request<ProxyBody>) -> Result<Response<Incoming>, Http1Error> {
        let Some(target) = request.uri().authority().cloned() else {
            return Err(Http1Error::Exchange("the upstream request names no target".into()));
        };
        let (mut conn, idle_since) = match self.checkout(&target) {
            Some((conn, since)) => (conn, Some(since)),
            // Boxed, as the slow path: inline, connecting (~1.2 KB of future over TLS) would
            // make every request's future larger.
            None => match Box::pin(self.connect(&target)).await {
                Ok(conn) => (conn, None),
                Err(e) => return Err(Http1Error::Connect(e, Box::new(request))),
            },
        };
        let added_host = to_origin_form(&mut request, &target, &self.scheme);
        let mut reused = idle_since.is_some();
        // Armed only where the connection may be closing (see the module's doc).
        let mut again = idle_since.filter(|&since| self.may_be_closing(since)).and_then(|_| resend::copy_idempotent(&request));
        loop {
            match std::pin::pin!(conn.try_send_request(request)).await {
                Ok(response) => {
                    if closes(&response) {
                        self.upstream_closing();
                    }
                    // A connection that switched protocols is the tunnel's, not the pool's.
                    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                        self.checkin(target, conn);
                    }
                    return Ok(response);
                }
                Err(mut failed) => {
                    let unsent = failed.take_message();
                    let error = failed.into_error();
                    request = match (unsent, again.take()) {
                        // Never written: the kept connection had been closed. Once more, on a new one.
                        (Some(unsent), _) if reused => unsent,
                        // Written, and the connection closed with no answer: the upstream closed
                        // it as it was reused. Safe to send again (idempotent, whole body).
                        (None, Some(copy)) if reused && resend::closed_before_answer(&error) => {
                            tracing::debug!(target = %target, error = %error, "a reused upstream connection closed under the request; sending it again on a new one");
                            copy
                        }
                        (None, None) if reused && resend::closed_before_answer(&error) => {
                            // Lost, not armed: the upstream is closing connections; arm the next.
                            self.upstream_closing();
                            return Err(Http1Error::Exchange(error.into()));
                        }
                        _ => return Err(Http1Error::Exchange(error.into())),
                    };
                    reused = false;
                    conn = match Box::pin(self.connect(&target)).await {
                        Ok(conn) => conn,
                        Err(e) => {
                            to_absolute_form(&mut request, &target, &self.scheme, added_host);
                            return Err(Http1Error::Connect(e, Box::new(request)));
                        }
                    };
                }
            }
        }
    }

    /// A kept connection to `target` ready for a request, with when it was kept, dropping closed
    /// ones on the way.
    fn checkout(&self, target: &Authority) -> Option<(SendRequest<ProxyBody>, Instant)> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut i = 0;
        while i < idle.len() {
            let kept = &idle[i];
            if kept.sender.is_closed() {
                // Only the upstream closes a kept connection (the pool drops those it closes).
                self.upstream_closing();
                idle.remove(i);
            } else if kept.sender.is_ready() && kept.target == *target {
                return idle.remove(i).map(|kept| (kept.sender, kept.since));
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
        spawn_sweeper(self, self.idle_timeout, Self::sweep);
    }

    /// Drops the kept connections closed by the upstream, and the ready ones unused since
    /// `idle_timeout` before `now` (which closes them).
    fn sweep(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut closed_by_upstream = false;
        idle.retain(|kept| {
            let closed = kept.sender.is_closed();
            closed_by_upstream |= closed;
            let unused_too_long = kept.sender.is_ready() && now.duration_since(kept.since) >= self.idle_timeout;
            !closed && !unused_too_long
        });
        if closed_by_upstream {
            self.upstream_closing();
        }
    }

    /// Whether a request on a connection kept since `kept_since` is to be armed to be sent again:
    /// the connection was idle long enough to be closing, or the upstream is closing connections.
    fn may_be_closing(&self, kept_since: Instant) -> bool {
        let now = Instant::now();
        now.duration_since(kept_since) >= RESEND_AFTER_IDLE || self.arming.armed_at(now)
    }

    /// The upstream showed it is closing its connections: arm requests on reused connections for
    /// [`ARMED_AFTER_CLOSING`] from now.
    fn upstream_closing(&self) {
        self.arming.upstream_closing();
    }
}

/// Spawns the task calling `sweep` on `pool` every half `idle_timeout` (10 ms to 5 s): it holds
/// the pool weakly and ends with it. Both pools' sweepers ([`super::http2_pool`] too).
pub(super) fn spawn_sweeper<P: Send + Sync + 'static>(pool: &Arc<P>, idle_timeout: Duration, sweep: fn(&P, Instant)) {
    let pool: Weak<P> = Arc::downgrade(pool);
    let every = (idle_timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(5));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(pool) = pool.upgrade() else { return };
            sweep(&pool, Instant::now());
        }
    });
}

/// Whether a response says the upstream closes its connection after it (`Connection: close`):
/// a sign it is shutting down or reloading, and closing its other connections too.
fn closes(response: &Response<Incoming>) -> bool {
    response.headers().get(http::header::CONNECTION).is_some_and(|v| {
        v.as_bytes().split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// Undoes [`to_origin_form`] on a request handed back to be sent to another target: the URI
/// names `target` again, and a `Host` it added (`added_host`) is taken away.
fn to_absolute_form(request: &mut Request<ProxyBody>, target: &Authority, scheme: &Scheme, added_host: bool) {
    if added_host {
        request.headers_mut().remove(HOST);
    }
    if request.method() == Method::CONNECT {
        return;
    }
    let path = request.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    if let Ok(uri) = Uri::builder().scheme(scheme.clone()).authority(target.clone()).path_and_query(path).build() {
        *request.uri_mut() = uri;
    }
}

/// Rewrites `request` as an HTTP/1.1 client sends it to an origin server: the path and query
/// alone in the request line (the authority only for `CONNECT`), and a `Host` header if the
/// client sent none (the target, without the scheme's default port). True if it added `Host`.
fn to_origin_form(request: &mut Request<ProxyBody>, target: &Authority, scheme: &Scheme) -> bool {
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
            return true;
        }
    }
    false
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
