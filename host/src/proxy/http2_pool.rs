//! HTTP/2 upstream connections (h2c, h2), made and shared by one request worker.
//!
//! One connection per target carries every request of the worker to that target at once, each
//! on a stream of its own, as hyper-util's general-purpose client did, up to the streams its
//! server allows at once: a request finding every connection to its target full opens another
//! rather than waiting in hyper's queue for a stream to end ([`super::http2_streams`]). That
//! client took a request's `:authority` from the URI it connected to, which names the target: a
//! `Host` the gateway meant to send (the client's, with `host_header = "preserve"`, or one a
//! plugin set) went out beside it as a `host` header that differed, which makes the request
//! malformed (RFC 9113 8.3.1: a strict server refuses it) and shows a server routing by name the
//! target's address. This pool connects to the target itself, so the request can name its host
//! as the `:authority`, with no `host` header beside it.
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
//! it came ([`Http2Error::Connect`]: nothing was sent) for the upstream to try another target; and
//! a request the upstream did not process (its stream refused with `REFUSED_STREAM`, or above the
//! last stream a graceful `GOAWAY` names: RFC 9113 8.7, "can be safely retried", whatever the
//! method) is sent again, on a new connection if that one closed, up to [`MAX_RESENDS`] times (a
//! server rotating its connections after a few streams each refuses the requests piled past its
//! budget at each rotation), [`MAX_REFUSED_ON_OPEN`] of them after a stream refused by the
//! connection that refused the try before (a server shedding load gets each request at most
//! five times). A body that is empty or whole is copied; a streamed one is kept as it goes, up
//! to 64 KiB ([`super::replay`]). The copy is made only once any of the upstream's pools has seen it close connections (a `GOAWAY`, a
//! kept connection found closed, a refused stream), for [`ARMED_AFTER_CLOSING`] from then
//! ([`ResendArming`]): a server rotating its connections (nginx's `keepalive_requests`, a
//! graceful restart) keeps it armed, and a request not processed and not armed (or whose
//! refused stream had taken more of its body than is kept) is answered 502 without counting against the target
//! ([`Http2Error::NotProcessed`]).
//!
//! A WebSocket (an RFC 8441 extended CONNECT) to a connection whose server's SETTINGS did not
//! enable extended CONNECT is not sent ([`Http2Error::NotProcessed`], saying why).
//!
//! Flow control: a response body the client reads slowly holds the connection's window until it
//! is read. The stream window ([`STREAM_WINDOW`]) is a 32nd of the connection's
//! ([`CONNECTION_WINDOW`]), so it takes 32 stalled responses on one connection, not hyper's 2.5
//! (2 MiB of 5 MiB), before the other requests on it wait. A response head is at most
//! [`MAX_RESPONSE_HEAD`] bytes (announced to the server), and at most the gateway's
//! `max_response_headers` lines, as over HTTP/1.1.

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
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::body::ProxyBody;
use super::http1_pool::{PoolError, spawn_sweeper};
use super::http2_streams::{OpenStream, StreamCount, WatchedPreface};
use super::replay::{Replay, ReplayBody};
use super::resend::{self, ResendArming};

/// Each request stream's flow-control window: what one response not yet read can hold.
pub const STREAM_WINDOW: u32 = 512 * 1024;

/// Each connection's flow-control window, shared by its streams: 32 stream windows.
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// How many times a request the upstream did not take or process is sent again in all (each on
/// the connection made after the last closed), within the route's timeout. A server rotating its
/// connections after a few streams each (nginx's `keepalive_requests`, Envoy's
/// `max_requests_per_connection`) refuses, at each rotation, the requests piled on the
/// connection past its budget, and under load a request can lose several rounds before its turn
/// (three were not enough: 502s at nginx's default).
const MAX_RESENDS: usize = 16;

/// How many of those may follow a stream refused (`REFUSED_STREAM`) by the connection that
/// refused the try before: a server shedding load that way is not rotating, and gets each
/// request at most five times.
const MAX_REFUSED_ON_OPEN: usize = 3;

/// How long, after an HTTP/2 upstream last showed it closes connections, its requests keep a copy
/// to send again: longer than HTTP/1.1's ([`super::http1_pool::ARMED_AFTER_CLOSING`]), because
/// HTTP/2 says exactly which requests were not processed, and a server rotating by count
/// (nginx's 1000 streams a connection) shows a sign only every 1000 requests: at a modest rate,
/// less often than every 5 s, and each rotation would lose the requests then in flight.
pub const ARMED_AFTER_CLOSING: Duration = Duration::from_secs(60);

/// The largest response head (HPACK-decoded, as RFC 9113 counts it) taken from an upstream,
/// about what hyper's HTTP/1.1 client reads (hyper's HTTP/2 default is 16 KiB).
pub const MAX_RESPONSE_HEAD: u32 = 400 * 1024;

/// Why a TLS connection to an `h2` upstream is not used: the server did not agree on HTTP/2.
/// Spoken anyway, HTTP/2's preface would get an HTTP/1.1 error back.
pub const NO_H2_ALPN: &str = "the TLS handshake did not agree on HTTP/2 (ALPN `h2`): the target may speak HTTP/1.1 only (`protocol = \"http1\"`)";

/// Why a WebSocket is not sent to an HTTP/2 upstream: its server's SETTINGS did not allow it.
const NO_EXTENDED_CONNECT: &str = "the upstream does not take WebSockets over HTTP/2: its SETTINGS do not enable extended CONNECT (RFC 8441 `SETTINGS_ENABLE_CONNECT_PROTOCOL`)";

/// Why [`Http2Pool::send`] failed.
pub enum Http2Error {
    /// No connection to the target could be made: nothing was sent, and the request is handed
    /// back as it came (its URI naming the target, its `Host` header in place) to be sent
    /// elsewhere (boxed: a failure is rare, and the result of every send stays small).
    Connect(PoolError, Box<Request<ProxyBody>>),
    /// The exchange failed on a connection (the request may have been sent).
    Exchange(PoolError),
    /// The upstream did not process the request (its stream refused, or above a graceful
    /// `GOAWAY`'s last stream) and no copy was kept to send again, or it refused an extended
    /// CONNECT (a WebSocket) at the stream, as a server without RFC 8441 does: not the target
    /// failing (else any client could take a target out of rotation by asking for WebSockets).
    NotProcessed(PoolError),
}

/// One worker's HTTP/2 connections to the targets of one upstream: one to each, and more while
/// every one is carrying all the streams its server allows.
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
    /// Most response header lines (`limits.max_response_headers`).
    max_headers: usize,
    /// When requests keep a copy to send again if the upstream does not process them
    /// (`ARMED_AFTER_CLOSING`), shared with the upstream's other pools.
    arming: Arc<ResendArming>,
}

/// The connections to one target, and the right to make one.
struct TargetConnection {
    target: Authority,
    /// The connections requests go on (the first with a stream to spare takes the request).
    open: Mutex<Vec<OpenConnection>>,
    /// Held while a connection to the target is made: the requests that find none wait for it.
    connecting: tokio::sync::Mutex<()>,
    /// Connection attempts made so far: a request that sees it move while it waits knows the
    /// attempt it waited for is over.
    attempts: AtomicU64,
    /// Why the last attempt failed (its I/O error kind, for a timeout to stay one, and the
    /// reason); `None` once one succeeds.
    failed: Mutex<Option<(io::ErrorKind, Arc<str>)>>,
}

/// One kept connection to a target.
struct OpenConnection {
    sender: SendRequest<ProxyBody>,
    /// When a request last started on it.
    used: Instant,
    /// Its streams open now, and the most its server allows.
    streams: Arc<StreamCount>,
}

impl<C> Http2Pool<C>
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Connection + Unpin + Send + 'static,
    C::Error: Into<PoolError>,
    C::Future: Send,
{
    /// A pool for `targets`, making its connections with `connector` (`https` scheme for a TLS
    /// connector); `limits`: `max_idle` (0 keeps none) and `max_response_headers`; `arming`: the
    /// upstream's, shared by its pools.
    pub fn new(connector: C, scheme: Scheme, targets: &[Authority], limits: (usize, usize), idle_timeout: Duration, arming: Arc<ResendArming>) -> Arc<Self> {
        let (max_idle, max_headers) = limits;
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_RESPONSE_HEAD);
        let targets = targets
            .iter()
            .map(|target| TargetConnection {
                target: target.clone(),
                open: Mutex::new(Vec::new()),
                connecting: tokio::sync::Mutex::new(()),
                attempts: AtomicU64::new(0),
                failed: Mutex::new(None),
            })
            .collect();
        Arc::new(Self {
            connector,
            scheme,
            builder,
            keep: max_idle > 0,
            idle_timeout,
            targets,
            sweeping: AtomicBool::new(false),
            max_headers,
            arming,
        })
    }

    /// Sends `request`, whose URI names the target (`scheme://host:port/path`) and whose `Host`
    /// header, if any, the host to name (it becomes the `:authority`), and returns the response
    /// once its headers are in, with its stream on a kept connection: counted until dropped, so
    /// it is to be held until the response is done.
    pub async fn send(self: &Arc<Self>, mut request: Request<ProxyBody>) -> Result<(Response<Incoming>, Option<OpenStream>), Http2Error> {
        let Some(target) = request.uri().authority().cloned() else {
            return Err(Http2Error::Exchange("the upstream request names no target".into()));
        };
        let Some(slot) = self.targets.iter().find(|t| t.target == target) else {
            return Err(Http2Error::Exchange(format!("{target} is not a target of this upstream").into()));
        };
        let (mut sender, mut stream) = match self.kept(slot) {
            Some((sender, stream)) => (sender, Some(stream)),
            // Boxed: connecting (a TLS and HTTP/2 handshake, ~6.5 KB of future) is the slow path,
            // and inline it would make every request's future that much larger, and copied.
            None => match Box::pin(self.connect_once(slot)).await {
                Ok(made) => made,
                Err(e) => return Err(Http2Error::Connect(e, Box::new(request))),
            },
        };
        // A WebSocket's handshake, which a server without RFC 8441 refuses: one extension lookup.
        let extended_connect = request.extensions().get::<hyper::ext::Protocol>().is_some();
        if extended_connect && stream.as_ref().is_some_and(OpenStream::refuses_extended_connect) {
            return Err(Http2Error::NotProcessed(NO_EXTENDED_CONNECT.into()));
        }
        let host = name_host(&mut request);
        // Armed only once the upstream shows it closes connections (see the module's doc).
        let mut again = if self.arming.armed() { Again::prepare(&mut request) } else { None };
        let (mut resends, mut refused_on_open) = (0, 0);
        let mut last_refusing: Option<usize> = None;
        loop {
            let failed = match std::pin::pin!(sender.try_send_request(request)).await {
                Ok(response) if response.headers().len() > self.max_headers => {
                    let lines = response.headers().len();
                    return Err(Http2Error::Exchange(
                        format!("its response has {lines} header lines, over limits.max_response_headers ({})", self.max_headers).into(),
                    ));
                }
                Ok(response) => return Ok((response, stream)),
                Err(failed) => failed,
            };
            let mut failed = failed;
            let unsent = failed.take_message();
            let error = failed.into_error();
            // Neither taken nor processed: the upstream is closing or rotating its connections.
            let untouched = unsent.is_some() || not_processed(&error);
            if untouched {
                self.upstream_closing();
            }
            // A graceful `GOAWAY`, or a connection closed before taking it: the server is
            // rotating or closing its connections (a connection going away takes no new stream,
            // so a resend goes to the next). Refused again by the connection that refused the
            // last try (or by one not kept, which cannot be told apart): it is shedding load.
            let connection = stream.as_ref().map(OpenStream::connection);
            let on_open = unsent.is_none()
                && !h2_error(&error).is_some_and(h2::Error::is_go_away)
                && (connection.is_none() || connection == last_refusing);
            last_refusing = connection;
            let may_resend = resends < MAX_RESENDS && !(on_open && refused_on_open >= MAX_REFUSED_ON_OPEN);
            request = match unsent {
                // Never taken: the connection had closed. Again, on a new one.
                Some(unsent) if may_resend => unsent,
                None if untouched && may_resend => match again.take().and_then(Again::request) {
                    // With the next copy, should that connection refuse it too.
                    Some((copy, next)) => {
                        tracing::debug!(target = %target, error = %error, "the upstream did not process the request; sending it again on a new connection");
                        again = next;
                        copy
                    }
                    None => return Err(Http2Error::NotProcessed(error.into())),
                },
                _ if untouched || (extended_connect && stream_only(&error)) => return Err(Http2Error::NotProcessed(error.into())),
                _ => return Err(Http2Error::Exchange(error.into())),
            };
            resends += 1;
            refused_on_open += usize::from(on_open);
            self.forget(slot);
            (sender, stream) = match Box::pin(self.connect_once(slot)).await {
                Ok(made) => made,
                Err(e) => {
                    unname_host(&mut request, &target, host);
                    return Err(Http2Error::Connect(e, Box::new(request)));
                }
            };
        }
    }

    /// The upstream showed it closes connections: arm the upstream's requests.
    fn upstream_closing(&self) {
        self.arming.upstream_closing_for(ARMED_AFTER_CLOSING);
    }

    /// A stream on a kept connection to `slot`'s target with one to spare, if any (dropping
    /// those that have closed), the connection marked used.
    fn kept(&self, slot: &TargetConnection) -> Option<(SendRequest<ProxyBody>, OpenStream)> {
        let mut open = slot.open.lock().unwrap_or_else(PoisonError::into_inner);
        let before = open.len();
        open.retain(|connection| !connection.sender.is_closed());
        if open.len() < before {
            // Closed by the upstream (a `GOAWAY`, a restart): it may be rotating connections.
            self.upstream_closing();
        }
        open.iter_mut().find_map(|connection| {
            let stream = connection.streams.open()?;
            connection.used = Instant::now();
            Some((connection.sender.clone(), stream))
        })
    }

    /// A connection to `slot`'s target and a stream on it (none if not kept): one with a stream
    /// to spare another request made meanwhile, once made (its error, if it failed), or a new
    /// one, kept for later requests.
    async fn connect_once(self: &Arc<Self>, slot: &TargetConnection) -> Result<(SendRequest<ProxyBody>, Option<OpenStream>), PoolError> {
        if !self.keep {
            let (sender, _) = self.connect(&slot.target).await?;
            return Ok((sender, None));
        }
        let attempts_before = slot.attempts.load(Ordering::Acquire);
        let _connecting = slot.connecting.lock().await;
        if let Some((sender, stream)) = self.kept(slot) {
            return Ok((sender, Some(stream)));
        }
        if slot.attempts.load(Ordering::Acquire) != attempts_before
            && let Some((kind, reason)) = slot.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
        {
            return Err(io::Error::new(kind, format!("{reason} (the connection attempt this request waited for)")).into());
        }
        let made = self.connect(&slot.target).await;
        *slot.failed.lock().unwrap_or_else(PoisonError::into_inner) = made.as_ref().err().map(|e| (io_kind(&**e), crate::error::chain(&**e).into()));
        slot.attempts.fetch_add(1, Ordering::Release);
        let (sender, streams) = made?;
        // The request it was made for goes on it, whatever the server's cap turns out to be.
        let stream = streams.open_anyway();
        slot.open.lock().unwrap_or_else(PoisonError::into_inner).push(OpenConnection { sender: sender.clone(), used: Instant::now(), streams });
        self.start_sweeper();
        Ok((sender, Some(stream)))
    }

    /// Lets go of `slot`'s connections that have closed.
    fn forget(&self, slot: &TargetConnection) {
        slot.open.lock().unwrap_or_else(PoisonError::into_inner).retain(|connection| !connection.sender.is_closed());
    }

    /// A new connection to `target`, its hyper connection task spawned on this worker, and its
    /// stream count (the server's cap read from its first frame).
    async fn connect(&self, target: &Authority) -> Result<(SendRequest<ProxyBody>, Arc<StreamCount>), PoolError> {
        let uri = Uri::builder().scheme(self.scheme.clone()).authority(target.clone()).path_and_query("/").build()?;
        let io = self.connector.clone().call(uri).await.map_err(Into::into)?;
        if self.scheme == Scheme::HTTPS && !io.connected().is_negotiated_h2() {
            return Err(NO_H2_ALPN.into());
        }
        let streams = Arc::new(StreamCount::default());
        let (sender, connection) = self.builder.handshake(WatchedPreface::new(io, streams.clone())).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection closed with an error");
            }
        });
        Ok((sender, streams))
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
            open.retain(|connection| !connection.sender.is_closed() && now.duration_since(connection.used) < self.idle_timeout);
        }
    }
}

/// What a request is sent again from if the upstream does not process it: a copy, when its body
/// is empty or whole bytes; its head and its streamed body's [`Replay`] otherwise.
enum Again {
    Copy(Request<ProxyBody>),
    Streamed(http::request::Parts, Replay),
}

impl Again {
    /// What `request` can be sent again from, its streamed body (if it has one) made to keep
    /// what it yields.
    fn prepare(request: &mut Request<ProxyBody>) -> Option<Self> {
        if let Some(copy) = resend::copy(request) {
            return Some(Again::Copy(copy));
        }
        let streamed = std::mem::replace(request.body_mut(), ProxyBody::empty());
        let (body, replay) = ReplayBody::keeping(streamed);
        *request.body_mut() = body;
        Some(Again::Streamed(resend::copy_head(request), replay))
    }

    /// The request to send again, and what to send it again from after that; `None` when its
    /// body yielded more than the replay keeps.
    fn request(self) -> Option<(Request<ProxyBody>, Option<Self>)> {
        match self {
            Again::Copy(copy) => {
                let next = resend::copy(&copy).map(Again::Copy);
                Some((copy, next))
            }
            Again::Streamed(head, replay) => {
                let (body, replay) = replay.take()?;
                let next = Again::Streamed(head.clone(), replay);
                Some((Request::from_parts(head, body), Some(next)))
            }
        }
    }
}

/// Whether `e` says the upstream did not process the request, so that sending it again is safe
/// whatever its method (RFC 9113 8.7): its stream refused (`REFUSED_STREAM`), or above the last
/// stream named by a graceful `GOAWAY` (`NO_ERROR`, which h2 gives only to those streams).
fn not_processed(e: &hyper::Error) -> bool {
    h2_error(e).is_some_and(|h2| {
        h2.is_remote() && (h2.reason() == Some(h2::Reason::REFUSED_STREAM) || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR)))
    })
}

/// Whether `e` ended the request's stream alone, the connection carrying on: the server reset
/// it, or h2 would not open it (as for an extended CONNECT the server never allowed).
fn stream_only(e: &hyper::Error) -> bool {
    h2_error(e).is_some_and(|h2| !h2.is_io() && !h2.is_go_away())
}

/// The HTTP/2 error in `e`'s chain, if any.
fn h2_error(e: &hyper::Error) -> Option<&h2::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        source = err.source();
    }
    None
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
/// header away: over HTTP/2 the host is the `:authority`, and a `host` beside it that differs
/// makes the request malformed. Returns the header taken, if any. A value that cannot be an
/// authority (empty, or with a `%`, which `Host` may hold) is taken away all the same, the
/// target staying the `:authority`.
fn name_host(request: &mut Request<ProxyBody>) -> Option<http::HeaderValue> {
    let host = request.headers_mut().remove(HOST)?;
    match Authority::try_from(host.as_bytes()) {
        Ok(authority) if request.uri().authority() != Some(&authority) => {
            let mut parts = request.uri().clone().into_parts();
            parts.authority = Some(authority);
            match Uri::from_parts(parts) {
                Ok(uri) => *request.uri_mut() = uri,
                Err(e) => tracing::debug!(error = %e, "the Host cannot be the :authority; the target is"),
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "the Host cannot be the :authority; the target is"),
    }
    Some(host)
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
