//! Protocol upgrades (RFC 9110 section 7.8), for WebSocket: an HTTP/1.1 request asking to switch
//! protocols is routed and runs its chain's request phases like any other (authentication, rate
//! limits, header changes), then goes to an HTTP/1.1 upstream with its `Upgrade` kept. If the
//! upstream answers `101 Switching Protocols`, the response phases see that head, the client gets
//! it, and from then on the two connections are joined byte for byte ([`tunnel`]) until either
//! side closes or the gateway drains.
//!
//! `Upgrade` and `Connection: upgrade` are hop-by-hop: they are removed as always and put back
//! only on this path. An upstream's 101 to a request that asked for no upgrade is refused (502).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
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
/// client sent after its request, already read) goes first. Ends when either side closes, or
/// when `shutdown` turns true.
pub async fn tunnel<C>(mut client: C, early: Bytes, upstream: OnUpgrade, mut shutdown: watch::Receiver<bool>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = match upstream.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!("the upstream connection did not switch protocols: {e}");
            let _ = client.shutdown().await;
            return;
        }
    };
    let mut upstream = TokioIo::new(upstream);
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        let _ = client.shutdown().await;
        return;
    }
    tokio::select! {
        joined = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = joined {
                tracing::debug!("switched connection ended with an error: {e}");
            }
        }
        () = crate::server::stopped(&mut shutdown) => {
            let _ = client.shutdown().await;
            let _ = upstream.shutdown().await;
        }
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
