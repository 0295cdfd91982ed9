//! Protocol upgrades (RFC 9110 section 7.8), for WebSocket only ([`requested`]): an HTTP/1.1
//! request asking to switch to `websocket` is routed and runs its chain's request phases like
//! any other (authentication, rate limits, header changes), then goes to the upstream with its
//! `Upgrade` kept. If the upstream answers `101 Switching Protocols`, the response
//! phases see that head, the client gets it, and from then on the two connections are joined
//! byte for byte ([`tunnel`]) until either side closes, nothing passes for
//! `timeouts.tunnel_idle_ms`, or the gateway drains.
//!
//! `Upgrade` and `Connection: upgrade` are hop-by-hop: they are removed as always and put back
//! only on this path. An upstream's 101 to a request that asked for no upgrade is refused (502).
//!
//! WebSocket over HTTP/2 (RFC 8441): a client's extended CONNECT with `:protocol = websocket` is
//! read as that same HTTP/1.1 handshake ([`client_side`]), goes the same way, and the upstream's
//! 101 reaches the client as the `200` that opens the stream ([`answer_extended_connect`]). To
//! an HTTP/2 upstream (h2c or h2) the handshake leaves as an extended CONNECT itself
//! ([`to_extended_connect`]), and the `200` that opens the upstream's stream is read as a 101
//! ([`switch_from_extended_connect`]): routes, plugins and the client see one handshake,
//! whichever HTTP version each side speaks.
//!
//! Who joins the two sides: an HTTP/1.1 connection's own task once hyper has sent the 101
//! (`keepalive`); on HTTP/2 streams, and on HTTP/1.1 that hyper's protocol detection serves, a
//! task of the tunnel's own ([`StreamTunnels`]).

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::ext::Protocol;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::telemetry::metrics::TunnelMetrics;

/// The upstream side of a switched connection, carried in the response's extensions from the
/// upstream call to the client connection's task.
#[derive(Clone, Debug)]
pub struct UpstreamUpgrade {
    /// The upstream connection, once it has switched.
    pub side: OnUpgrade,
    /// How long the tunnel may pass nothing (the route's `tunnel_idle_ms`, or the global one).
    pub idle: Duration,
    /// What the request holds while in flight (concurrency slots, its place among the
    /// upstream's `max_requests`, its `least_requests` count): held by the tunnel until it
    /// closes, as a long download's body holds them, so open WebSockets count as load.
    pub held: Option<Arc<TunnelHold>>,
}

/// A request's holds, kept for as long as its tunnel is open (shared only so the extension can
/// be cloned; given back when the last clone goes).
#[derive(Debug)]
pub struct TunnelHold {
    /// Concurrency slots (`acquire-slot`).
    pub slots: Vec<crate::runtime::slots::SlotGuard>,
    /// Its place among `max_requests`, and its count on its target.
    pub in_flight: Option<super::upstream::InFlight>,
}

/// Marks a request read from an HTTP/2 extended CONNECT ([`client_side`]): it asks for a switch
/// though it is HTTP/2, and its answer must be the `200` that opens the stream.
#[derive(Clone, Copy, Debug)]
pub struct ExtendedConnect;

/// The protocol an HTTP/1.1 request (or one read from an HTTP/2 extended CONNECT) asks to switch
/// to (its `Upgrade` value), when its `Connection` names `upgrade` and the protocol is
/// `websocket`. Any other upgrade is dropped with the hop-by-hop headers and the request goes on
/// as a plain one: above all `h2c`, whose tunnel would let the client speak HTTP/2 straight to
/// the upstream, every later request on it past the gateway's routes and plugins ("h2c
/// smuggling").
pub fn requested(headers: &HeaderMap, version: Version, extended_connect: bool) -> Option<HeaderValue> {
    if version != Version::HTTP_11 && !extended_connect {
        return None;
    }
    let upgrade = headers.get(header::UPGRADE)?;
    if !upgrade.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    let named = super::headers::connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade"));
    named.then(|| upgrade.clone())
}

/// Why an upstream's `101` to a WebSocket handshake is not a switch to `websocket`: it names
/// no protocol, or another (quoted, at most 64 bytes, in the reason the gateway logs); `None`
/// when it is.
pub fn not_websocket(headers: &HeaderMap) -> Option<String> {
    match headers.get(header::UPGRADE) {
        Some(protocol) if protocol.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket") => None,
        Some(protocol) => {
            let shown = String::from_utf8_lossy(&protocol.as_bytes()[..protocol.len().min(64)]).into_owned();
            Some(format!("it switched protocols (101) to `{shown}`, not the `websocket` the request asked for"))
        }
        None => Some("it switched protocols (101) without an Upgrade header naming the protocol".into()),
    }
}

/// Puts the hop-by-hop pair of an upgrade back on a request or response head.
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The client's side of a switch on a connection whose task does not join it itself: taken from
/// the request before it is answered ([`client_side`]), joined by [`StreamTunnels::join`].
pub struct ClientSide(OnUpgrade);

/// Readies a request for a switch on an HTTP/2 stream, or on HTTP/1.1 served by hyper's protocol
/// detection. An extended CONNECT for `websocket` (RFC 8441 section 5) becomes the HTTP/1.1
/// handshake the rest of the gateway knows (routes, plugins and the upstream see a `GET` with
/// `Upgrade: websocket` and a fresh `Sec-WebSocket-Key`); an HTTP/1.1 upgrade request stays as
/// it is. Either way the client's side is taken. Any other request: `None`, untouched.
pub fn client_side(request: &mut Request<Incoming>) -> Option<ClientSide> {
    if request.version() == Version::HTTP_2 {
        if request.method() != Method::CONNECT
            || !request.extensions().get::<Protocol>().is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
        {
            return None;
        }
        request.extensions_mut().remove::<Protocol>();
        request.extensions_mut().insert(ExtendedConnect);
        *request.method_mut() = Method::GET;
        let headers = request.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
    } else {
        requested(request.headers(), request.version(), false)?;
    }
    Some(ClientSide(hyper::upgrade::on(request)))
}

/// A handshake key (RFC 6455 section 4.1: 16 random bytes, base64): a nonce the upstream echoes
/// back digested, not a secret.
fn websocket_key() -> HeaderValue {
    let key = base64::engine::general_purpose::STANDARD.encode(fastrand::u128(..).to_be_bytes());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&key).unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// Readies a WebSocket handshake for an HTTP/2 upstream (RFC 8441 section 4): it leaves as an
/// extended CONNECT with `:protocol = websocket`, without the HTTP/1.1 handshake's hop-by-hop
/// headers, key or body. The client's key comes back, for [`switch_from_extended_connect`].
pub fn to_extended_connect<B>(request: &mut Request<B>) -> Option<HeaderValue> {
    *request.method_mut() = Method::CONNECT;
    request.extensions_mut().insert(Protocol::from_static("websocket"));
    let headers = request.headers_mut();
    headers.remove(header::UPGRADE);
    headers.remove(header::CONNECTION);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::SEC_WEBSOCKET_KEY)
}

/// An HTTP/2 upstream's answer to [`to_extended_connect`]: a `2xx` opened the stream, so the
/// client gets the HTTP/1.1 handshake's `101` with the `Sec-WebSocket-Accept` its `key` asks for
/// (an HTTP/2 client gets its `200` back from [`answer_extended_connect`]). Any other answer
/// (a refusal, a redirect) goes to the client as it is.
pub fn switch_from_extended_connect<B>(response: &mut Response<B>, key: Option<&HeaderValue>) {
    if !response.status().is_success() {
        return;
    }
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    restore(headers, HeaderValue::from_static("websocket"));
    if let Some(key) = key {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, websocket_accept(key));
    }
}

/// The `Sec-WebSocket-Accept` for a handshake `key` (RFC 6455 section 4.2.2): base64 of the
/// SHA-1 of the key and the protocol's GUID.
fn websocket_accept(key: &HeaderValue) -> HeaderValue {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha1.update(key.as_bytes());
    sha1.update(GUID);
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finish());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&accept).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// After the response phases: the upstream's side of a switch goes with the response for the
/// client connection's task to join (`server`, `keepalive`), while the response still switches.
/// A response phase that changed the 101's status has called it off: the upstream connection is
/// dropped, and the upgrade headers with it.
pub fn keep_switch<B>(response: &mut Response<B>, upstream: OnUpgrade, idle: Duration, held: Option<Arc<TunnelHold>>) {
    if switches(response.status()) {
        response.extensions_mut().insert(UpstreamUpgrade { side: upstream, idle, held });
    } else {
        response.headers_mut().remove(header::UPGRADE);
        response.headers_mut().remove(header::CONNECTION);
    }
}

/// The answer to a request read from an extended CONNECT: the upstream's 101 becomes the `200`
/// that opens the stream (without the HTTP/1.1 handshake's headers); any other success would
/// open it too, with no upstream behind it, so it is refused instead (`Err` with its status).
pub fn answer_extended_connect<B>(response: &mut Response<B>) -> Result<(), StatusCode> {
    let status = response.status();
    // A 101 here is the upstream's (plugins cannot make one: `exchange::final_status`).
    if !switches(status) {
        return if status.is_success() { Err(status) } else { Ok(()) };
    }
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    headers.remove(header::UPGRADE);
    headers.remove(header::CONNECTION);
    Ok(())
}

/// What a tunnel on its own task needs from its connection: the metrics it is counted in, and
/// the gateway's shutdown signal.
#[derive(Clone)]
pub struct StreamTunnels {
    /// `airlock_switched_connections` and the tunnels' end counters.
    pub metrics: TunnelMetrics,
    /// Turns true when the gateway drains.
    pub shutdown: watch::Receiver<bool>,
}

impl StreamTunnels {
    /// Joins `client` to `upstream` on a task of its own, once hyper has sent the response;
    /// `busy` (the request's mark on its connection) is held meanwhile, so an HTTP/2 connection
    /// with an open tunnel is not closed as idle.
    pub fn join<G: Send + 'static>(&self, client: ClientSide, upstream: UpstreamUpgrade, busy: G) {
        let (metrics, shutdown) = (self.metrics.clone(), self.shutdown.clone());
        let UpstreamUpgrade { side: upstream, idle, held } = upstream;
        tokio::spawn(async move {
            let (_busy, _held) = (busy, held);
            match client.0.await {
                Ok(client) => tunnel(TokioIo::new(client), Bytes::new(), upstream, idle, &metrics, shutdown).await,
                Err(e) => {
                    tracing::debug!("the client connection did not switch protocols: {e}");
                    metrics.ended("not_switched", 0, 0);
                }
            }
        });
    }
}

/// Whether a response switches protocols.
pub fn switches(status: StatusCode) -> bool {
    status == StatusCode::SWITCHING_PROTOCOLS
}

/// Joins the client's connection to the upstream's once both have switched: `early` (bytes the
/// client sent after its request, already read) goes first. Ends when either side closes, when
/// no byte has passed either way for `idle` (checked [`IDLE_CHECKS`] times per period, so within
/// 1.25 x `idle`), or when `shutdown` turns true; the last two close both sides. Counted in
/// `metrics` while open, and once ended (why, and the bytes each way).
pub async fn tunnel<C>(client: C, early: Bytes, upstream: OnUpgrade, idle: Duration, metrics: &TunnelMetrics, shutdown: watch::Receiver<bool>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let _open = metrics.open.enter();
    let (to_upstream, to_client) = (AtomicU64::new(early.len() as u64), AtomicU64::new(0));
    let reason = join(client, early, upstream, idle, shutdown, &to_upstream, &to_client).await;
    metrics.ended(reason, to_upstream.load(Ordering::Relaxed), to_client.load(Ordering::Relaxed));
}

/// [`tunnel`]'s work: the reason it ended, having added the bytes read from each side to its
/// count.
async fn join<C>(
    client: C,
    early: Bytes,
    upstream: OnUpgrade,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
    to_upstream: &AtomicU64,
    to_client: &AtomicU64,
) -> &'static str
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = Traffic { io: client, bytes: to_upstream };
    let upstream = match upstream.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!("the upstream connection did not switch protocols: {e}");
            let _ = client.shutdown().await;
            return "not_switched";
        }
    };
    let mut upstream = Traffic { io: TokioIo::new(upstream), bytes: to_client };
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        let _ = client.shutdown().await;
        return "error";
    }
    let reason = {
        let joined = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(joined);
        // At least a millisecond, so a tiny `idle` closes rather than spins.
        let period = (idle / IDLE_CHECKS).max(Duration::from_millis(1));
        let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last, mut quiet) = (0, 0);
        loop {
            tokio::select! {
                joined = &mut joined => {
                    return match joined {
                        Ok(_) => "closed",
                        Err(e) => {
                            tracing::debug!("switched connection ended with an error: {e}");
                            "error"
                        }
                    };
                }
                _ = checks.tick() => {
                    let now = to_upstream.load(Ordering::Relaxed) + to_client.load(Ordering::Relaxed);
                    quiet = if now == last { quiet + 1 } else { 0 };
                    last = now;
                    if quiet >= IDLE_CHECKS {
                        tracing::debug!(idle_ms = idle.as_millis(), "closing a switched connection: nothing passed for timeouts.tunnel_idle_ms");
                        break "idle";
                    }
                }
                () = crate::server::stopped(&mut shutdown) => break "drain",
            }
        }
    };
    let _ = client.shutdown().await;
    let _ = upstream.shutdown().await;
    reason
}

/// How many checks one idle period of a tunnel is split into.
const IDLE_CHECKS: u32 = 4;

/// One side of a tunnel, adding what it reads to its direction's count: counts that have not
/// moved since the last check mean nothing passed either way.
struct Traffic<'a, T> {
    io: T,
    bytes: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Traffic<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.bytes.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Traffic<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())).collect()
    }

    #[test]
    fn a_websocket_to_an_http2_upstream_is_an_extended_connect_answered_as_a_switch() {
        let mut request = Request::get("http://up/chat").body(()).unwrap();
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        restore(request.headers_mut(), HeaderValue::from_static("websocket"));
        request.headers_mut().insert(header::SEC_WEBSOCKET_KEY, key.clone());
        request.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        assert_eq!(to_extended_connect(&mut request), Some(key.clone()));
        assert_eq!(request.method(), Method::CONNECT);
        assert_eq!(request.extensions().get::<Protocol>().map(Protocol::as_str), Some("websocket"));
        let left: Vec<_> = request.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["sec-websocket-version"]);

        // RFC 6455 section 1.3's example key and answer.
        let mut opened = Response::new(());
        switch_from_extended_connect(&mut opened, Some(&key));
        assert_eq!(opened.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(opened.headers()[header::SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(requested(opened.headers(), Version::HTTP_11, false), Some(HeaderValue::from_static("websocket")));
        // A refusal stays what it is.
        let mut refused = Response::new(());
        *refused.status_mut() = StatusCode::FORBIDDEN;
        switch_from_extended_connect(&mut refused, Some(&key));
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(refused.headers().is_empty());
    }

    #[test]
    fn an_upgrade_needs_connection_to_name_it() {
        let asked = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(requested(&asked, Version::HTTP_11, false), Some(HeaderValue::from_static("websocket")));
        assert_eq!(requested(&asked, Version::HTTP_2, false), None, "HTTP/2 has no Upgrade");
        assert_eq!(requested(&asked, Version::HTTP_2, true), Some(HeaderValue::from_static("websocket")), "but an extended CONNECT asks");
        assert_eq!(requested(&headers(&[("upgrade", "websocket")]), Version::HTTP_11, false), None);
        assert_eq!(requested(&headers(&[("connection", "upgrade")]), Version::HTTP_11, false), None);
    }

    #[test]
    fn only_websocket_is_switched_to() {
        let asking = |protocol: &str| headers(&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", protocol)]);
        assert_eq!(requested(&asking("WebSocket"), Version::HTTP_11, false), Some(HeaderValue::from_static("WebSocket")));
        for other in ["h2c", "websocket, h2c", "TLS/1.2", "websocketx", ""] {
            assert_eq!(requested(&asking(other), Version::HTTP_11, false), None, "{other}");
        }
    }
}
