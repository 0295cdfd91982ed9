//! A client connection between requests. HTTP/1.1 keep-alive connections, cleartext or TLS, are
//! served by hyper while requests flow and parked without hyper while idle ([`serve`]); HTTP/2
//! connections cannot drop hyper's state between requests, and are closed (GOAWAY) once idle
//! for `timeouts.idle_ms` ([`serve_until_idle`]). Either way an idle client connection holds
//! no more than `timeouts.idle_ms` allows.
//!
//! Why: hyper holds an 8 KiB read buffer and an 8 KiB write buffer for an HTTP/1 connection's
//! whole life, idle or not, so 10,000 idle keep-alive clients cost ~150 MiB (~40 MiB parked);
//! over TLS, ~300 MiB.
//! After [`PARK_AFTER`] without traffic, the connection's hyper state is closed gracefully (it
//! is idle, so nothing is cut short) and the socket is kept, waiting for readability with no
//! buffer at all. The client's next bytes start a fresh hyper connection on the same socket;
//! bytes hyper had already read are handed to it first. The client sees one ordinary
//! keep-alive connection.
//!
//! Safety of the hand-over: hyper is only asked to stop between exchanges: once it has answered
//! a request, when no request is being answered (no service call pending, no response body
//! still being sent: [`Activity::answering`] lasts as long as the body), no request body is
//! being read or was left unfinished ([`RequestBody`]), no write waits for the client, the last
//! exchange did not end the connection ([`Activity::last_exchange`]), and nothing was read or
//! written for [`PARK_AFTER`]. Asked mid-exchange, hyper would finish it
//! and return the socket just as it does when it means to close it (a client's `Connection:
//! close`, an ambiguously framed request's close, a body delimited by the close), and the bytes
//! after it would be served as the next request. A TLS session is kept as it is: it wakes the
//! connection when its socket is readable, and data it had already decrypted is served at once.
//!
//! Limits ride on the same watch, for clients that would otherwise hold a connection (and the
//! upstream exchange behind it) without end: an HTTP/1.1 client that takes no byte of its
//! response for `timeouts.send_ms` has its connection closed (nginx's `send_timeout`), as has an
//! HTTP/2 client that makes no room for the next piece of a response for as long
//! ([`SendWaits`]); an HTTP/2 client that resets most of its streams before their response is
//! ready gets a GOAWAY ([`too_many_early_resets`]; the other half of the "rapid reset" attack,
//! CVE-2023-44487, whose first half, resets before a stream is even accepted, h2 itself bounds).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use crate::connections::ConnectionBuilders;
use crate::proxy::upgrade::UpstreamUpgrade;
use crate::telemetry::metrics::ConnectionGauges;

/// How long a keep-alive connection must be quiet (checked every this often, so it is parked
/// within two of these) before hyper's buffers are given back. Short, as nginx frees a
/// keep-alive connection's buffers as soon as it is idle: a burst of clients that then sit idle
/// never holds all their buffers at once (which the allocator would keep resident), and a
/// client back after a pause pays only for a new hyper connection (two 8 KiB buffers). The
/// check costs one timer wake-up per connection per period, so at most one per request on a
/// connection busier than ten requests a second.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// Requests an HTTP/2 connection must have begun before its early resets are judged
/// ([`too_many_early_resets`]): Envoy's rule, so a client that cancels a few requests (a user
/// leaving a page) is never cut off.
pub const EARLY_RESET_MIN_REQUESTS: u64 = 100;

/// How long an HTTP/2 connection closed for its early resets gets, after its GOAWAY, for the
/// streams already begun; then it is dropped, and at once if its client resets another stream
/// meanwhile. Short: its client has shown it does not want them, and until it acknowledges the
/// GOAWAY's ping it may still open streams.
const EARLY_RESET_GRACE: Duration = Duration::from_secs(1);

/// How many checks `timeouts.send_ms` is split into on an HTTP/2 connection: a response that
/// has waited for room that long is found at most a third of it later ([`SendWaits`]).
const SEND_CHECKS: u32 = 3;

/// Whether a connection's client reset its streams abusively: more than half of at least
/// [`EARLY_RESET_MIN_REQUESTS`] requests reset before their response head was ready (Envoy's
/// premature-reset rule). Each such request made the gateway start, and then abandon, work
/// upstream at no cost to the client; under this rule a client gets at most one abandoned
/// request per completed one (and 100 to start with).
pub fn too_many_early_resets(resets: u64, requests: u64) -> bool {
    requests >= EARLY_RESET_MIN_REQUESTS && resets > requests / 2
}

/// Whether a message of `version` with `headers` asks to close its HTTP/1 connection after its
/// exchange, as hyper reads it: HTTP/1.1 when a `Connection` option is `close`, HTTP/1.0 unless
/// one is `keep-alive` (and none `close`).
pub fn asks_to_close(version: http::Version, headers: &http::HeaderMap) -> bool {
    let (mut close, mut keep_alive) = (false, false);
    // A value hyper cannot read as text (obs-text) it ignores: so does this.
    for value in headers.get_all(http::header::CONNECTION).iter().filter(|v| v.to_str().is_ok()) {
        for option in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            close |= option.eq_ignore_ascii_case(b"close");
            keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    close || version == http::Version::HTTP_10 && !keep_alive
}

/// How a client connection ended, when hyper did not end it with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed it, or it was idle, or the gateway drained: nothing to report.
    Closed,
    /// The gateway closed it: a write to the client took no byte for this long, or over
    /// HTTP/2 a response waited this long for the client to make room (`timeouts.send_ms`).
    SendTimedOut(Duration),
    /// The gateway closed it (GOAWAY): the client had reset `resets` of its `requests` before
    /// their response was ready ([`too_many_early_resets`]).
    EarlyResets {
        /// Requests whose stream the client reset before their response head was ready.
        resets: u64,
        /// Requests begun on the connection.
        requests: u64,
    },
}

/// What happened on one connection since it was last looked at: its socket's reads and writes,
/// and the requests being answered. Shared by the loop here and by hyper's side of the
/// connection (its socket and its service).
#[derive(Debug, Default)]
pub struct Activity {
    /// Reads that moved bytes.
    io: AtomicU64,
    /// Writes that moved bytes (apart from reads: a client that sends but does not read still
    /// takes nothing).
    writes: AtomicU64,
    /// While a write or flush waits for the client to take bytes: `writes` when it began
    /// waiting, plus one; 0 when none waits. Stale (not `writes + 1`) once a write moves bytes.
    blocked: AtomicU64,
    /// Requests being answered: over HTTP/1, until their response body is done; over HTTP/2,
    /// until their response head is produced.
    answering: AtomicU64,
    /// HTTP/1 request bodies being read ([`RequestBody`]): hyper is mid-request while one is.
    reading: AtomicU64,
    /// The last request (by [`Activity::requests`] number) whose body was dropped before its end
    /// was read: hyper drains it or closes the connection, and until the next request begins it
    /// is not known which, so the connection is not parked.
    unfinished_body: AtomicU64,
    /// Requests begun, ever.
    requests: AtomicU64,
    /// Requests dropped before their response head was ready: on HTTP/2, a stream the client reset.
    resets: AtomicU64,
    /// Woken when `resets` become abusive ([`too_many_early_resets`]).
    abusive: Notify,
    /// The upstream side of a connection the last response switched to another protocol
    /// (`crate::proxy::upgrade`), for this task to join once hyper has sent the 101.
    switched: std::sync::Mutex<Option<UpstreamUpgrade>>,
    /// HTTP/2 response bodies waiting for their client to make room.
    sends: SendWaits,
    /// An HTTP/1 exchange that ends the connection has begun ([`Activity::last_exchange`]).
    last: std::sync::atomic::AtomicBool,
}

/// HTTP/2 response bodies waiting for their client to make room for what they yielded, counted
/// by the check period in which each began to wait ([`SEND_CHECKS`] + 1 periods in a ring).
///
/// Why: hyper takes a frame from a response body, then waits for the client's flow-control
/// window (or a full send buffer) before it polls the body again, and no timer of its own runs
/// meanwhile. A client that opens streams with a window of 0 and never raises it, answering the
/// keep-alive pings, holds each stream and the upstream exchange behind it for good: the idle
/// close only sends a GOAWAY, which waits for open streams. A body cannot tell it is not being
/// polled, so each counts itself here while it waits, and the connection's watch closes the
/// connection once a count is `timeouts.send_ms` old. Atomics only: a frame costs two adds.
#[derive(Debug, Default)]
pub struct SendWaits {
    /// The check period now: a waiting body counts in `waiting[period % len]`.
    period: AtomicU64,
    waiting: [AtomicU64; SEND_CHECKS as usize + 1],
}

impl SendWaits {
    /// Counts a body as waiting from now; returns where, for [`SendWaits::taken`].
    fn wait(&self) -> usize {
        let slot = usize::try_from(self.period.load(Ordering::Relaxed)).unwrap_or(0) % self.waiting.len();
        self.waiting[slot].fetch_add(1, Ordering::Relaxed);
        slot
    }

    /// A body counted at `slot` is waiting no more (polled again, or dropped).
    fn taken(&self, slot: usize) {
        if let Some(waiting) = self.waiting.get(slot) {
            waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Starts the next period, unless a body still waits that began to wait in the slot it is
    /// to reuse, [`SEND_CHECKS`] whole periods ago: then `true`, the client made no room for it
    /// in all that time.
    fn next_period(&self) -> bool {
        let next = self.period.load(Ordering::Relaxed).wrapping_add(1);
        let slot = usize::try_from(next).unwrap_or(0) % self.waiting.len();
        if self.waiting[slot].load(Ordering::Relaxed) > 0 {
            return true;
        }
        self.period.store(next, Ordering::Relaxed);
        false
    }
}

/// An HTTP/2 response body's place in its connection's [`SendWaits`]: counted there from each
/// frame it yields until it is polled again or dropped.
#[derive(Debug)]
pub struct SendWatch {
    activity: Arc<Activity>,
    waiting: Option<usize>,
}

impl SendWatch {
    /// The body is being polled: whatever it yielded before was taken.
    pub fn polled(&mut self) {
        if let Some(slot) = self.waiting.take() {
            self.activity.sends.taken(slot);
        }
    }

    /// The body yielded a frame: it waits until it is polled again.
    pub fn yielded(&mut self) {
        self.polled();
        self.waiting = Some(self.activity.sends.wait());
    }
}

impl Drop for SendWatch {
    fn drop(&mut self) {
        self.polled();
    }
}

impl Activity {
    /// A watch for an HTTP/2 response body on this connection ([`SendWaits`]).
    pub fn send_watch(self: &Arc<Self>) -> SendWatch {
        SendWatch { activity: self.clone(), waiting: None }
    }

    /// Marks the exchange being answered as the connection's last: its request or response
    /// asks to close it (`Connection: close`, an HTTP/1.0 request without keep-alive, a body
    /// only its close can end). After it the connection is closed, never parked: what the
    /// client sent after it is not another request.
    pub fn last_exchange(&self) {
        self.last.store(true, Ordering::Relaxed);
    }

    fn ends_after_this(&self) -> bool {
        self.last.load(Ordering::Relaxed)
    }

    /// Whether hyper is past every request body: none is being read, and none was left
    /// unfinished since the last request began (one drained by hyper is known to be once the
    /// next request has begun).
    fn request_bodies_done(&self) -> bool {
        self.reading.load(Ordering::Relaxed) == 0 && self.requests() > self.unfinished_body.load(Ordering::Relaxed)
    }

    /// Marks a request as being answered until the returned guard is dropped: with its
    /// response's body ([`crate::telemetry::observed_body::ObservedBody::answering_until_done`]),
    /// so a connection is never parked while a response is being sent.
    pub fn answering(self: &Arc<Self>) -> Answering {
        self.answering.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Answering { activity: self.clone(), answered: false }
    }

    fn io_ops(&self) -> u64 {
        self.io.load(Ordering::Relaxed).wrapping_add(self.writes.load(Ordering::Relaxed))
    }

    /// The write now waiting for the client to take bytes, if one is and none moved bytes since
    /// it began waiting: one number per such wait, so a watcher that sees the same number twice
    /// knows nothing was taken in between.
    fn write_blocked(&self) -> Option<u64> {
        let blocked = self.blocked.load(Ordering::Relaxed);
        (blocked != 0 && blocked - 1 == self.writes.load(Ordering::Relaxed)).then_some(blocked)
    }

    /// Counts a request dropped before its response head was ready; says so once they are abusive.
    fn reset_early(&self) {
        let resets = self.resets.fetch_add(1, Ordering::Relaxed) + 1;
        if too_many_early_resets(resets, self.requests()) {
            self.abusive.notify_one();
        }
    }

    fn early_resets(&self) -> Ended {
        Ended::EarlyResets { resets: self.resets.load(Ordering::Relaxed), requests: self.requests() }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests begun so far and whether one is being answered now, in one word: it changes
    /// whenever the connection is not idle.
    fn busy_mark(&self) -> (u64, bool) {
        (self.requests(), self.is_answering())
    }

    fn is_answering(&self) -> bool {
        self.answering.load(Ordering::Relaxed) > 0
    }
}

/// A request being answered ([`Activity::answering`]); dropped with the request's service
/// future, or over HTTP/1 with its response body. Dropped before [`Answering::answered`], it
/// counts as reset early.
#[derive(Debug)]
pub struct Answering {
    activity: Arc<Activity>,
    answered: bool,
}

impl Answering {
    /// Marks the request's response (head) as produced: from now on its drop is the normal end.
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// Marks this exchange as its connection's last ([`Activity::last_exchange`]).
    pub fn last_exchange(&self) {
        self.activity.last_exchange();
    }

    /// Counts this request's body (HTTP/1, a request that has one) as being read until whoever
    /// reads it says it has ended ([`RequestBody::ended`]); dropped before that, the body was
    /// left unfinished.
    pub fn request_body(&self) -> Arc<RequestBody> {
        self.activity.reading.fetch_add(1, Ordering::Relaxed);
        Arc::new(RequestBody { activity: self.activity.clone(), request: self.activity.requests(), ended: std::sync::atomic::AtomicBool::new(false) })
    }

    /// Hands the connection's task the upstream side of a switched connection: the response
    /// being answered is a `101 Switching Protocols`.
    pub fn switch_to(&self, upstream: UpstreamUpgrade) {
        *self.activity.switched.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(upstream);
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.activity.answering.fetch_sub(1, Ordering::Relaxed);
        if !self.answered {
            self.activity.reset_early();
        }
    }
}

/// An HTTP/1 request's body as its connection sees it ([`Answering::request_body`]): while it is
/// being read, hyper is mid-request, and a connection asked to park then would be handed back
/// with the rest of the body still to come, read as the next request (a request hidden in a
/// body). Carried with the body's progress ([`crate::proxy::body::UploadProgress`]).
#[derive(Debug)]
pub struct RequestBody {
    activity: Arc<Activity>,
    /// The request's number on its connection ([`Activity::requests`]).
    request: u64,
    ended: std::sync::atomic::AtomicBool,
}

impl RequestBody {
    /// Its end was read: hyper is past it.
    pub fn ended(&self) {
        if !self.ended.swap(true, Ordering::Relaxed) {
            self.activity.reading.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if !*self.ended.get_mut() {
            self.activity.reading.fetch_sub(1, Ordering::Relaxed);
            self.activity.unfinished_body.fetch_max(self.request, Ordering::Relaxed);
        }
    }
}

/// A client connection's stream that can wait, parked, for the client's next bytes.
pub trait Parkable: AsyncRead + AsyncWrite + Unpin {
    /// Ready when the client has sent something (or closed): the underlying socket is readable.
    fn readable(&self) -> impl Future<Output = io::Result<()>>;

    /// Whether input the stream already holds (decrypted, not yet read) can be served now.
    fn has_buffered_input(&mut self) -> bool;
}

impl Parkable for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        TcpStream::readable(self)
    }

    fn has_buffered_input(&mut self) -> bool {
        false
    }
}

/// Boxed: the session is ~1.2 KB, and each async fn it passes through on its way here would
/// otherwise keep a slot of that size in the connection's task for the connection's life.
impl Parkable for Box<TlsStream<TcpStream>> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        self.get_ref().0.readable()
    }

    fn has_buffered_input(&mut self) -> bool {
        // Records received but not yet processed are processed now; a broken one is left for
        // hyper to read and report.
        self.get_mut().1.process_new_packets().map_or(true, |state| state.plaintext_bytes_to_read() > 0)
    }
}

/// Serves HTTP/1.1 on `stream` until the client closes it, an error ends it, its idle time runs
/// out, or `shutdown` turns true (after the request in progress, if any); or until a write to
/// the client has taken no byte for `timeouts.send_ms` ([`Ended::SendTimedOut`]: the connection
/// is dropped, and with it the response being sent and its upstream exchange). `service` must
/// mark each request it answers with `activity` ([`Activity::answering`]); `gauges` count the
/// connection while it is parked or switched.
pub async fn serve<T, S>(
    builders: &ConnectionBuilders,
    stream: T,
    mut service: S,
    activity: Arc<Activity>,
    gauges: ConnectionGauges,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Ended, hyper::Error>
where
    T: Parkable,
    S: HttpService<Incoming> + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut io = CountedIo { io: TokioIo::new(stream), unread: Bytes::new(), activity: activity.clone() };
    loop {
        // Only a hyper connection that has answered a request is idle between requests;
        // before its first one (a new socket, or one with half a request), asking it to
        // stop would mark that request's response `connection: close`. Until then hyper's
        // own header read timeout governs.
        let requests_before = activity.requests();
        // Boxed: this task outlives any one hyper connection, and parked it should hold no
        // more than the socket.
        let mut conn = Box::new(builders.http1().serve_connection(io, service));
        let mut stopping = false;
        let mut parking = false;
        let mut seen = activity.io_ops();
        // The write seen waiting for the client, and since when (at most a check late).
        let mut stalled: Option<(u64, Instant)> = None;
        let check = tokio::time::sleep(PARK_AFTER);
        tokio::pin!(check);
        loop {
            tokio::select! {
                done = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                    done?;
                    break;
                }
                // Kept while parking or stopping too: hyper finishes a response it has begun
                // first, and a client that takes none of it must not hold it up for good.
                () = &mut check => {
                    let now = Instant::now();
                    stalled = match (activity.write_blocked(), stalled) {
                        (Some(wait), Some((seen_wait, since))) if wait == seen_wait => {
                            if now.duration_since(since) >= builders.send() {
                                // Dropping hyper's connection closes the socket and drops the
                                // response body, and the upstream exchange with it.
                                return Ok(Ended::SendTimedOut(builders.send()));
                            }
                            Some((seen_wait, since))
                        }
                        (Some(wait), _) => Some((wait, now)),
                        (None, _) => None,
                    };
                    if !parking && !stopping {
                        let ops = activity.io_ops();
                        // Between exchanges: hyper has sent all it was given, and means to read
                        // the next request (see the module's docs).
                        let between = activity.requests() > requests_before
                            && !activity.is_answering()
                            && activity.write_blocked().is_none()
                            && !activity.ends_after_this()
                            && activity.request_bodies_done();
                        if ops == seen && between {
                            parking = true;
                            Pin::new(&mut *conn).graceful_shutdown();
                        }
                        seen = ops;
                    }
                    check.as_mut().reset(now + PARK_AFTER);
                }
                () = crate::server::stopped(&mut shutdown), if !stopping => {
                    stopping = true;
                    Pin::new(&mut *conn).graceful_shutdown();
                }
            }
        }
        // hyper has finished: the client closed, or it stopped on request, with everything
        // it wrote flushed.
        let parts = (*conn).into_parts();
        let switched = activity.switched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(upstream) = switched {
            // hyper stopped after sending a 101: the rest of the connection is the tunnel's.
            let io = parts.io.io.into_inner();
            // The request's holds (`max_requests`, `least_requests`, slots) last as the tunnel does.
            let _held = upstream.held;
            crate::proxy::upgrade::tunnel(io, parts.read_buf, upstream.side, upstream.idle, &gauges.tunnels, shutdown).await;
            return Ok(Ended::Closed);
        }
        (io, service) = (parts.io, parts.service);
        if !parking || stopping || activity.ends_after_this() {
            // A close the client asked for, or the drain: done. Errors closing are moot.
            let _ = io.io.inner_mut().shutdown().await;
            return Ok(Ended::Closed);
        }
        if !parts.read_buf.is_empty() {
            // The start of the next request was already read: serve it at once.
            io.unread = parts.read_buf;
            continue;
        }
        if io.io.inner_mut().has_buffered_input() {
            continue;
        }
        // Even empty, the buffer handle keeps hyper's whole read buffer allocated.
        drop(parts.read_buf);
        // Parked: only the socket and this task remain until the client sends again.
        let _parked = gauges.parked.enter();
        let wait = builders.idle().saturating_sub(PARK_AFTER);
        tokio::select! {
            ready = io.io.inner().readable() => if ready.is_err() { return Ok(Ended::Closed) },
            () = tokio::time::sleep(wait) => return Ok(Ended::Closed),
            () = crate::server::stopped(&mut shutdown) => return Ok(Ended::Closed),
        }
    }
}

/// How many checks one idle period is split into: an idle connection is closed between
/// `idle_ms` and 1.25 x `idle_ms` after its last request.
const IDLE_CHECKS: u32 = 4;

/// Serves a connection hyper runs without parking (HTTP/2; also one whose protocol hyper had to
/// detect itself) until it ends, `shutdown` turns true, or no request has begun nor been in
/// answer for `idle`: then it is shut down gracefully (HTTP/2: GOAWAY), so streams still
/// sending their response finish and the client opens a new connection for its next request.
/// Without this, hyper keeps an idle HTTP/2 connection open for as long as the client answers
/// its keep-alive pings, with ~35 KB of buffers and HPACK tables (bench/footprint.py).
/// Once its client has reset too many streams early ([`too_many_early_resets`]) it is shut down
/// the same way at once, and dropped [`EARLY_RESET_GRACE`] later, or at its next early reset
/// ([`Ended::EarlyResets`]). Once a response body has waited `send` for its client to make room
/// ([`SendWaits`]) it is dropped at once ([`Ended::SendTimedOut`]), with every stream on it.
/// `service` must mark each request it answers with `activity` ([`Activity::answering`]), and
/// each HTTP/2 response body must hold an [`Activity::send_watch`].
pub async fn serve_until_idle<C>(
    connection: C,
    activity: Arc<Activity>,
    (idle, send): (Duration, Duration),
    mut shutdown: watch::Receiver<bool>,
) -> Result<Ended, C::Error>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    tokio::pin!(connection);
    // At least a millisecond, so `idle_ms = 0` closes an idle connection rather than spinning.
    let period = (idle / IDLE_CHECKS).max(Duration::from_millis(1));
    let send_period = (send / SEND_CHECKS).max(Duration::from_millis(1));
    let send_check = tokio::time::sleep(send_period);
    tokio::pin!(send_check);
    let mut last = activity.busy_mark();
    let mut quiet = 0;
    let mut closing = false;
    let mut cut = false;
    let grace = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            // The connection first: once cut, it has been polled (its GOAWAY written, if the
            // client reads) before a further reset drops it.
            biased;
            done = connection.as_mut() => return if cut { Ok(activity.early_resets()) } else { done.map(|()| Ended::Closed) },
            () = activity.abusive.notified() => {
                if cut {
                    // Still resetting after the GOAWAY: no more grace.
                    return Ok(activity.early_resets());
                }
                cut = true;
                grace.as_mut().reset(Instant::now() + EARLY_RESET_GRACE);
                if !closing {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = &mut grace, if cut => return Ok(activity.early_resets()),
            // Kept while closing too: a GOAWAY waits for the streams a client holds this way.
            () = &mut send_check => {
                if activity.sends.next_period() {
                    return Ok(Ended::SendTimedOut(send));
                }
                send_check.as_mut().reset(Instant::now() + send_period);
            }
            () = tokio::time::sleep(period), if !closing => {
                let now = activity.busy_mark();
                quiet = if now == last && !now.1 { quiet + 1 } else { 0 };
                last = now;
                if quiet >= IDLE_CHECKS {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = crate::server::stopped(&mut shutdown), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The socket as hyper sees it: bytes an earlier hyper connection read but did not use come
/// first, and every read or write that moves bytes counts as activity.
struct CountedIo<T> {
    io: TokioIo<T>,
    unread: Bytes,
    activity: Arc<Activity>,
}

impl<T> CountedIo<T> {
    fn moved(&self) {
        self.activity.io.fetch_add(1, Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.activity.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a write as waiting for the client (only on `Pending`, off the fast path).
    fn waiting(&self) {
        let writes = self.activity.writes.load(Ordering::Relaxed);
        self.activity.blocked.store(writes.wrapping_add(1).max(1), Ordering::Relaxed);
    }

    /// Marks a flush or shutdown as done: nothing waits for the client any more.
    fn flushed(&self) {
        if self.activity.blocked.load(Ordering::Relaxed) != 0 {
            self.activity.blocked.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a write (or flush, `wrote` false) by what it returned.
    fn written<R>(&self, polled: &Poll<R>, wrote: bool) {
        match (polled.is_ready(), wrote) {
            (true, true) => self.wrote(),
            (true, false) => self.flushed(),
            (false, _) => self.waiting(),
        }
    }
}

impl<T: AsyncRead + Unpin> Read for CountedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if polled.is_ready() {
            this.moved();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> Write for CountedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.written(&polled, true);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.written(&polled, true);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.written(&polled, false);
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.written(&polled, false);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_resets_are_abusive_past_half_of_at_least_a_hundred_requests() {
        assert!(!too_many_early_resets(99, 99), "too few requests to judge");
        assert!(too_many_early_resets(51, 100));
        assert!(!too_many_early_resets(50, 100), "half is not more than half");
        assert!(!too_many_early_resets(90, 190), "answered as many as it reset");
        assert!(too_many_early_resets(u64::MAX, u64::MAX));
    }

    #[tokio::test]
    async fn requests_dropped_before_their_answer_count_and_wake_the_connection_once_abusive() {
        let activity = Arc::new(Activity::default());
        // 60 answered, 39 dropped unanswered: 99 requests, not yet judged.
        for _ in 0..60 {
            activity.answering().answered();
        }
        for _ in 0..39 {
            drop(activity.answering());
        }
        assert_eq!(activity.resets.load(Ordering::Relaxed), 39, "answered requests are not resets");
        let woken = tokio::time::timeout(Duration::from_millis(20), activity.abusive.notified()).await;
        assert!(woken.is_err(), "woken before the rule holds");
        // 100 requests, 40 resets: fine. Then resets until more than half: woken.
        drop(activity.answering());
        assert!(tokio::time::timeout(Duration::from_millis(20), activity.abusive.notified()).await.is_err());
        for _ in 0..21 {
            drop(activity.answering());
        }
        tokio::time::timeout(Duration::from_secs(1), activity.abusive.notified()).await.expect("woken");
        assert_eq!(activity.early_resets(), Ended::EarlyResets { resets: 61, requests: 121 });
        assert!(!activity.is_answering());
    }

    #[test]
    fn a_response_waiting_for_room_is_judged_after_send_checks_whole_periods_and_no_sooner() {
        let activity = Arc::new(Activity::default());
        let mut moving = activity.send_watch();
        let mut stuck = activity.send_watch();
        stuck.yielded();
        // The period it began in, and SEND_CHECKS whole ones after: not yet.
        for _ in 0..SEND_CHECKS {
            // Another body yielding and being taken each period is no false alarm.
            moving.yielded();
            assert!(!activity.sends.next_period(), "judged early");
            moving.polled();
        }
        assert!(activity.sends.next_period(), "a body waiting SEND_CHECKS whole periods was not judged");
        // Polled at last (or dropped): nothing waits any more.
        stuck.polled();
        assert!(!activity.sends.next_period());
        stuck.yielded();
        drop(stuck);
        drop(moving);
        for _ in 0..2 * SEND_CHECKS {
            assert!(!activity.sends.next_period(), "a dropped body still counted");
        }
    }

    #[test]
    fn a_write_waits_until_one_moves_bytes_and_a_flush_clears_it() {
        let activity = Arc::new(Activity::default());
        let io = CountedIo { io: TokioIo::new(tokio::io::empty()), unread: Bytes::new(), activity: activity.clone() };
        assert_eq!(activity.write_blocked(), None);
        io.written(&Poll::<()>::Pending, true);
        let first = activity.write_blocked().expect("waiting");
        io.written(&Poll::<()>::Pending, true);
        assert_eq!(activity.write_blocked(), Some(first), "still the same wait: nothing was taken");
        io.written(&Poll::Ready(()), true);
        assert_eq!(activity.write_blocked(), None, "bytes were taken");
        io.written(&Poll::<()>::Pending, true);
        let second = activity.write_blocked().expect("waiting again");
        assert_ne!(second, first, "a new wait is told apart from the old one");
        io.written(&Poll::<()>::Pending, false);
        io.written(&Poll::Ready(()), false);
        assert_eq!(activity.write_blocked(), None, "a flush that finished leaves nothing waiting");
    }
}
