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
//! Safety of the hand-over: hyper is only asked to stop once it has answered a request, when no
//! request is being answered (no service call pending) and nothing was read or written for
//! [`PARK_AFTER`]. A response whose head is already sent finishes first, unchanged; hyper then
//! returns the socket. A TLS session is kept as it is: it wakes the connection when its socket
//! is readable, and data it had already decrypted is served at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

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

/// What happened on one connection since it was last looked at: its socket's reads and writes,
/// and the requests being answered. Shared by the loop here and by hyper's side of the
/// connection (its socket and its service).
#[derive(Debug, Default)]
pub struct Activity {
    /// Reads and writes that moved bytes.
    io: AtomicU64,
    /// Requests whose response (head) is not yet produced.
    answering: AtomicU64,
    /// Requests begun, ever.
    requests: AtomicU64,
    /// The upstream side of a connection the last response switched to another protocol
    /// (`crate::proxy::upgrade`), for this task to join once hyper has sent the 101.
    switched: std::sync::Mutex<Option<UpstreamUpgrade>>,
}

impl Activity {
    /// Marks a request as being answered until the returned guard is dropped.
    pub fn answering(self: &Arc<Self>) -> Answering {
        self.answering.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Answering(self.clone())
    }

    fn io_ops(&self) -> u64 {
        self.io.load(Ordering::Relaxed)
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

/// A request being answered ([`Activity::answering`]); dropped with the request's service future.
#[derive(Debug)]
pub struct Answering(Arc<Activity>);

impl Answering {
    /// Hands the connection's task the upstream side of a switched connection: the response
    /// being answered is a `101 Switching Protocols`.
    pub fn switch_to(&self, upstream: UpstreamUpgrade) {
        *self.0.switched.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(upstream);
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
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
/// out, or `shutdown` turns true (after the request in progress, if any). `service` must mark
/// each request it answers with `activity` ([`Activity::answering`]); `gauges` count the
/// connection while it is parked or switched.
pub async fn serve<T, S>(
    builders: &ConnectionBuilders,
    stream: T,
    mut service: S,
    activity: Arc<Activity>,
    gauges: ConnectionGauges,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
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
        let check = tokio::time::sleep(PARK_AFTER);
        tokio::pin!(check);
        loop {
            tokio::select! {
                done = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                    done?;
                    break;
                }
                () = &mut check, if !parking && !stopping => {
                    let now = activity.io_ops();
                    let answered = activity.requests() > requests_before && !activity.is_answering();
                    if now == seen && answered {
                        parking = true;
                        Pin::new(&mut *conn).graceful_shutdown();
                    } else {
                        seen = now;
                        check.as_mut().reset(tokio::time::Instant::now() + PARK_AFTER);
                    }
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
            crate::proxy::upgrade::tunnel(io, parts.read_buf, upstream.side, upstream.idle, &gauges.tunnels, shutdown).await;
            return Ok(());
        }
        (io, service) = (parts.io, parts.service);
        if !parking || stopping {
            // A close the client asked for, or the drain: done. Errors closing are moot.
            let _ = io.io.inner_mut().shutdown().await;
            return Ok(());
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
            ready = io.io.inner().readable() => if ready.is_err() { return Ok(()) },
            () = tokio::time::sleep(wait) => return Ok(()),
            () = crate::server::stopped(&mut shutdown) => return Ok(()),
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
/// `service` must mark each request it answers with `activity` ([`Activity::answering`]).
pub async fn serve_until_idle<C>(connection: C, activity: Arc<Activity>, idle: Duration, mut shutdown: watch::Receiver<bool>) -> Result<(), C::Error>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    tokio::pin!(connection);
    // At least a millisecond, so `idle_ms = 0` closes an idle connection rather than spinning.
    let period = (idle / IDLE_CHECKS).max(Duration::from_millis(1));
    let mut last = activity.busy_mark();
    let mut quiet = 0;
    let mut closing = false;
    loop {
        tokio::select! {
            done = connection.as_mut() => return done,
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
        if polled.is_ready() {
            this.moved();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            this.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
