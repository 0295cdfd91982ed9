//! HTTP/2 upstream connections (h2c, h2), made and shared by one request worker.
//!
//! One connection per target carries every request of the worker to that target at once, each
//! on a stream of its own, as hyper-util's general-purpose client did. That client took a
//! request's `:authority` from the URI it connected to, which names the target: a `Host` the
//! gateway meant to send (the client's, with `host_header = "preserve"`, or one a plugin set)
//! went out beside it as a `host` header that differed, which makes the request malformed
//! (RFC 9113 8.3.1: a strict server refuses it) and shows a server routing by name the target's
//! address. This pool connects to the target itself, so the request can name its host as the
//! `:authority`, with no `host` header beside it.
//!
//! What it keeps of that client's behaviour: connections are made by the upstream's counted
//! connector (its connect timeout, TLS with ALPN `h2`, the connection gauge apply); requests that
//! find no connection to their target wait for the one being made rather than each making its
//! own, and fail with it if it fails (as Envoy fails the requests pending on a connection
//! attempt: against a target that does not answer, each would otherwise wait its own connect
//! timeout in turn); a connection no request has started on for `idle_timeout` is let go (it
//! closes once its last stream ends); with `max_idle = 0` none is kept; and a request that a
//! kept connection closed before taking it is sent on a new one.
//!
//! And what it adds, as [`super::http1_pool`] does: a connect failure hands the request back as
//! it came ([`Http2Error::Connect`]: nothing was sent) for the upstream to try another target.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::body::ProxyBody;
use super::http1_pool::{PoolError, spawn_sweeper};

/// Why [`Http2Pool::send`] failed.
pub enum Http2Error {
    /// No connection to the target could be made: nothing was sent, and the request is handed
    /// back as it came (its URI naming the target, its `Host` header in place) to be sent
    /// elsewhere (boxed: a failure is rare, and the result of every send stays small).
    Connect(PoolError, Box<Request<ProxyBody>>),
    /// The exchange failed on a connection (the request may have been sent).
    Exchange(PoolError),
}

/// One worker's HTTP/2 connections to the targets of one upstream: at most one to each.
pub struct Http2Pool<C> {
    connector: C,
    scheme: Scheme,
    builder: Builder<TokioExecutor>,
    /// Whether a connection is kept for the next request (`max_idle` > 0).
    keep: bool,
    idle_timeout: Duration,
    /// One entry per target, in the upstream's order.
    targets: Box<[TargetConnection]>,
    /// Whether this pool's sweeper task runs (started by the first connection kept).
    sweeping: AtomicBool,
}

/// The connection to one target, if one is open, and the right to make one.
struct TargetConnection {
    target: Authority,
    /// The connection requests go on, and when a request last started on it.
    open: Mutex<Option<(SendRequest<ProxyBody>, Instant)>>,
    /// Held while a connection to the target is made: the requests that find none wait for it.
    connecting: tokio::sync::Mutex<()>,
    /// Connection attempts made so far: a request that sees it move while it waits knows the
    /// attempt it waited for is over.
    attempts: AtomicU64,
    /// Why the last attempt failed (its I/O error kind, for a timeout to stay one, and the
    /// reason); `None` once one succeeds.
    failed: Mutex<Option<(io::ErrorKind, Arc<str>)>>,
}

impl<C> Http2Pool<C>
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<PoolError>,
    C::Future: Send,
{
    /// A pool for `targets`, making its connections with `connector` (`https` scheme for a TLS
    /// connector); `max_idle` 0 keeps none.
    pub fn new(connector: C, scheme: Scheme, targets: &[Authority], max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        let mut builder = Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        let targets = targets
            .iter()
            .map(|target| TargetConnection {
                target: target.clone(),
                open: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                attempts: AtomicU64::new(0),
                failed: Mutex::new(None),
            })
            .collect();
        Arc::new(Self { connector, scheme, builder, keep: max_idle > 0, idle_timeout, targets, sweeping: AtomicBool::new(false) })
    }

    /// Sends `request`, whose URI names the target (`scheme://host:port/path`) and whose `Host`
    /// header, if any, the host to name (it becomes the `:authority`), and returns the response
    /// once its headers are in.
    pub async fn send(self: &Arc<Self>, mut request: Request<ProxyBody>) -> Result<Response<Incoming>, Http2Error> {
        let Some(target) = request.uri().authority().cloned() else {
            return Err(Http2Error::Exchange("the upstream request names no target".into()));
        };
        let Some(slot) = self.targets.iter().find(|t| t.target == target) else {
            return Err(Http2Error::Exchange(format!("{target} is not a target of this upstream").into()));
        };
        let mut sender = match self.kept(slot) {
            Some(sender) => sender,
            None => match self.connect_once(slot).await {
                Ok(sender) => sender,
                Err(e) => return Err(Http2Error::Connect(e, Box::new(request))),
            },
        };
        let host = name_host(&mut request);
        let mut retried = false;
        loop {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut failed) => {
                    let unsent = failed.take_message();
                    let error = failed.into_error();
                    request = match unsent {
                        // Never taken: the connection had closed. Once more, on a new one.
                        Some(unsent) if !retried => unsent,
                        _ => return Err(Http2Error::Exchange(error.into())),
                    };
                    retried = true;
                    self.forget(slot);
                    sender = match self.connect_once(slot).await {
                        Ok(sender) => sender,
                        Err(e) => {
                            unname_host(&mut request, &target, host);
                            return Err(Http2Error::Connect(e, Box::new(request)));
                        }
                    };
                }
            }
        }
    }

    /// The open connection to `slot`'s target, if any (dropping it if it has closed), marked used.
    fn kept(&self, slot: &TargetConnection) -> Option<SendRequest<ProxyBody>> {
        let mut open = slot.open.lock().unwrap_or_else(PoisonError::into_inner);
        match open.as_mut() {
            Some((sender, _)) if sender.is_closed() => {
                *open = None;
                None
            }
            Some((sender, used)) => {
                *used = Instant::now();
                Some(sender.clone())
            }
            None => None,
        }
    }

    /// A connection to `slot`'s target: the one another request is making, once made (its
    /// error, if it failed), or a new one, kept for later requests.
    async fn connect_once(self: &Arc<Self>, slot: &TargetConnection) -> Result<SendRequest<ProxyBody>, PoolError> {
        if !self.keep {
            return self.connect(&slot.target).await;
        }
        let attempts_before = slot.attempts.load(Ordering::Acquire);
        let _connecting = slot.connecting.lock().await;
        if let Some(sender) = self.kept(slot) {
            return Ok(sender);
        }
        if slot.attempts.load(Ordering::Acquire) != attempts_before
            && let Some((kind, reason)) = slot.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
        {
            return Err(io::Error::new(kind, format!("{reason} (the connection attempt this request waited for)")).into());
        }
        let made = self.connect(&slot.target).await;
        *slot.failed.lock().unwrap_or_else(PoisonError::into_inner) = made.as_ref().err().map(|e| (io_kind(&**e), crate::error::chain(&**e).into()));
        slot.attempts.fetch_add(1, Ordering::Release);
        let sender = made?;
        *slot.open.lock().unwrap_or_else(PoisonError::into_inner) = Some((sender.clone(), Instant::now()));
        self.start_sweeper();
        Ok(sender)
    }

    /// Lets go of `slot`'s connection if it has closed.
    fn forget(&self, slot: &TargetConnection) {
        let mut open = slot.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.as_ref().is_some_and(|(sender, _)| sender.is_closed()) {
            *open = None;
        }
    }

    /// A new connection to `target`, its hyper connection task spawned on this worker.
    async fn connect(&self, target: &Authority) -> Result<SendRequest<ProxyBody>, PoolError> {
        let uri = Uri::builder().scheme(self.scheme.clone()).authority(target.clone()).path_and_query("/").build()?;
        let io = self.connector.clone().call(uri).await.map_err(Into::into)?;
        let (sender, connection) = self.builder.handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection closed with an error");
            }
        });
        Ok(sender)
    }

    /// Starts, once, the task letting go of connections no request has started on for
    /// `idle_timeout`. It holds the pool weakly and ends with it (an upstream replaced by a reload).
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        spawn_sweeper(self, self.idle_timeout, Self::sweep);
    }

    /// Lets go of the connections closed by the upstream and of those unused since
    /// `idle_timeout` before `now` (each closes once the streams still on it end).
    fn sweep(&self, now: Instant) {
        for slot in &self.targets {
            let mut open = slot.open.lock().unwrap_or_else(PoisonError::into_inner);
            if open.as_ref().is_some_and(|(sender, used)| sender.is_closed() || now.duration_since(*used) >= self.idle_timeout) {
                *open = None;
            }
        }
    }
}

/// The kind of the first I/O error in `e`'s chain (`Other` if none): a connect timeout stays one.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> io::ErrorKind {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return io.kind();
        }
        source = err.source();
    }
    io::ErrorKind::Other
}

/// Names the request's `Host` header as its `:authority` (the URI's authority), and takes the
/// header away: over HTTP/2 the host is the `:authority`. Returns the header taken, if any.
/// A value that is no authority (the gateway checks `Host` as `host[:port]`, so none should
/// come) is left as it was.
fn name_host(request: &mut Request<ProxyBody>) -> Option<http::HeaderValue> {
    let authority = Authority::try_from(request.headers().get(HOST)?.as_bytes()).ok()?;
    if request.uri().authority() != Some(&authority) {
        let mut parts = request.uri().clone().into_parts();
        parts.authority = Some(authority);
        *request.uri_mut() = Uri::from_parts(parts).ok()?;
    }
    request.headers_mut().remove(HOST)
}

/// Undoes [`name_host`] on a request handed back to be sent to another target: the URI names
/// `target` again, and the `Host` header taken is back.
fn unname_host(request: &mut Request<ProxyBody>, target: &Authority, host: Option<http::HeaderValue>) {
    let Some(host) = host else { return };
    let mut parts = request.uri().clone().into_parts();
    parts.authority = Some(target.clone());
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request.headers_mut().insert(HOST, host);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: Option<&'static str>) -> Request<ProxyBody> {
        let mut request = Request::new(ProxyBody::empty());
        *request.uri_mut() = uri.parse().expect("uri");
        if let Some(host) = host {
            request.headers_mut().insert(HOST, http::HeaderValue::from_static(host));
        }
        request
    }

    #[test]
    fn the_host_header_becomes_the_authority_and_goes() {
        let mut r = request("http://10.0.0.1:8080/a?b=c", Some("api.example.com"));
        let taken = name_host(&mut r);
        assert_eq!((r.uri().to_string().as_str(), r.headers().get(HOST)), ("http://api.example.com/a?b=c", None));
        unname_host(&mut r, &"10.0.0.1:8080".parse().expect("authority"), taken);
        assert_eq!((r.uri().to_string().as_str(), r.headers()[HOST].to_str().ok()), ("http://10.0.0.1:8080/a?b=c", Some("api.example.com")));
    }

    #[test]
    fn without_a_host_header_the_target_is_the_authority() {
        let mut r = request("https://10.0.0.1:8443/x", None);
        assert_eq!(name_host(&mut r), None);
        assert_eq!(r.uri().to_string(), "https://10.0.0.1:8443/x");
    }
}
