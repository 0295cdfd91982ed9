//! Protocol upgrades (RFC 9110 section 7.8), for WebSocket: an HTTP/1.1 request asking to switch
//! protocols is routed and runs its chain's request phases like any other (authentication, rate
//! limits, header changes), then goes to an HTTP/1.1 upstream with its `Upgrade` kept. If the
//! upstream answers `101 Switching Protocols`, the response phases see that head, the client gets
//! it, and from then on the two connections are joined byte for byte ([`tunnel`]) until either
//! side closes, nothing passes for `timeouts.tunnel_idle_ms`, or the gateway drains.
//!
//! `Upgrade` and `Connection: upgrade` are hop-by-hop: they are removed as always and put back
//! only on this path. An upstream's 101 to a request that asked for no upgrade is refused (502).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

/// The upstream side of a switched connection, carried in the response's extensions from the
/// upstream call to the client connection's task.
#[derive(Clone)]
pub struct UpstreamUpgrade(pub OnUpgrade);

/// The protocol an HTTP/1.1 request asks to switch to (its `Upgrade` value), when its
/// `Connection` names `upgrade`.
pub fn requested(headers: &HeaderMap, version: Version) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let upgrade = headers.get(header::UPGRADE)?;
    let named = super::headers::connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade"));
    named.then(|| upgrade.clone())
}

/// Puts the hop-by-hop pair of an upgrade back on a request or response head.
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Whether a response switches protocols.
pub fn switches(status: StatusCode) -> bool {
    status == StatusCode::SWITCHING_PROTOCOLS
}

/// Joins the client's connection to the upstream's once both have switched: `early` (bytes the
/// client sent after its request, already read) goes first. Ends when either side closes, when
/// no byte has passed either way for `idle` (checked [`IDLE_CHECKS`] times per period, so within
/// 1.25 x `idle`), or when `shutdown` turns true; the last two close both sides.
pub async fn tunnel<C>(client: C, early: Bytes, upstream: OnUpgrade, idle: Duration, mut shutdown: watch::Receiver<bool>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let traffic = AtomicU64::new(0);
    let mut client = Traffic { io: client, bytes: &traffic };
    let upstream = match upstream.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!("the upstream connection did not switch protocols: {e}");
            let _ = client.shutdown().await;
            return;
        }
    };
    let mut upstream = Traffic { io: TokioIo::new(upstream), bytes: &traffic };
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        let _ = client.shutdown().await;
        return;
    }
    {
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
                    if let Err(e) = joined {
                        tracing::debug!("switched connection ended with an error: {e}");
                    }
                    return;
                }
                _ = checks.tick() => {
                    let now = traffic.load(Ordering::Relaxed);
                    quiet = if now == last { quiet + 1 } else { 0 };
                    last = now;
                    if quiet >= IDLE_CHECKS {
                        tracing::debug!(idle_ms = idle.as_millis(), "closing a switched connection: nothing passed for timeouts.tunnel_idle_ms");
                        break;
                    }
                }
                () = crate::server::stopped(&mut shutdown) => break,
            }
        }
    }
    let _ = client.shutdown().await;
    let _ = upstream.shutdown().await;
}

/// How many checks one idle period of a tunnel is split into.
const IDLE_CHECKS: u32 = 4;

/// One side of a tunnel, adding what it reads to a count both sides share: a count that has not
/// moved since the last check means nothing passed either way.
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
    fn an_upgrade_needs_connection_to_name_it() {
        let asked = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(requested(&asked, Version::HTTP_11), Some(HeaderValue::from_static("websocket")));
        assert_eq!(requested(&asked, Version::HTTP_2), None, "HTTP/2 has no Upgrade");
        assert_eq!(requested(&headers(&[("upgrade", "websocket")]), Version::HTTP_11), None);
        assert_eq!(requested(&headers(&[("connection", "upgrade")]), Version::HTTP_11), None);
    }
}
