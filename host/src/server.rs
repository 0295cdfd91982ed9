//! Where requests enter: listeners accept connections and serve HTTP/1.1 and HTTP/2 (prior
//! knowledge, h2c; or HTTPS with ALPN on a TLS listener, see [`crate::tls`]) on the same port,
//! handing each request to [`Gateway::handle`]. Shutdown stops
//! accepting, lets in-flight requests finish within the drain timeout, then closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use tokio_rustls::TlsAcceptor;

use crate::gateway::Gateway;
use crate::proxy::ConnectionInfo;
use crate::tls;

/// Slack over the configured header limits given to hyper's own parser, so oversized headers
/// reach the gateway's check and get its JSON 431 with a request id (hyper's own is bare).
const PARSER_HEADER_SLACK: usize = 2;

/// Longest a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `gateway` on `listeners` (each with its TLS acceptor, if it serves HTTPS) until
/// `shutdown` turns true, then drains.
pub async fn serve(gateway: Arc<Gateway>, listeners: Vec<(TcpListener, Option<TlsAcceptor>)>, shutdown: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let limits = &gateway.limits;
    let idle = Duration::from_millis(gateway.timeouts.idle_ms);
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(idle)
        .max_headers(limits.max_headers * PARSER_HEADER_SLACK + 16)
        .max_buf_size((limits.max_header_bytes * PARSER_HEADER_SLACK).max(8192) + 8192);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes * PARSER_HEADER_SLACK).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(idle / 2));
    let builder = Arc::new(builder);
    let graceful = Arc::new(GracefulShutdown::new());

    let mut accept_loops = tokio::task::JoinSet::new();
    for (listener, tls) in listeners {
        let gateway = gateway.clone();
        let builder = builder.clone();
        let graceful = graceful.clone();
        let mut shutdown = shutdown.clone();
        accept_loops.spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // EMFILE and friends: back off briefly rather than spin.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                    _ = stopped(&mut shutdown) => break,
                };
                let _ = stream.set_nodelay(true);
                let gateway = gateway.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _open = gateway.telemetry.metrics.connection_opened();
                    let Some(tls) = tls else {
                        let conn = ConnectionInfo { peer, scheme: "http" };
                        let service = service_fn(move |request| {
                            let gateway = gateway.clone();
                            async move { Ok::<_, Infallible>(gateway.handle(request, conn).await) }
                        });
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        if let Err(e) = watcher.watch(connection.into_owned()).await {
                            tracing::debug!(%peer, "connection ended with an error: {e}");
                        }
                        return;
                    };
                    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    // The client certificate, if mTLS verified one, identifies every request on it.
                    let identity = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(tls::client_identity).map(Arc::new);
                    let conn = ConnectionInfo { peer, scheme: "https" };
                    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                        let gateway = gateway.clone();
                        if let Some(id) = &identity {
                            request.extensions_mut().insert(id.clone());
                        }
                        async move { Ok::<_, Infallible>(gateway.handle(request, conn).await) }
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(%peer, "connection ended with an error: {e}");
                    }
                });
            }
        });
    }
    while accept_loops.join_next().await.is_some() {}

    let drain = Duration::from_millis(gateway.timeouts.drain_ms);
    // The accept loops, the only other holders, have ended.
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::error!("internal error: connection tracker still shared; closing without drain");
        return;
    };
    tracing::info!(in_flight_connections = graceful.count(), "draining");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timeout of {} ms passed; closing remaining connections", drain.as_millis());
    }
}

/// Binds every configured listener (port 0 picks a free port).
pub async fn bind(addresses: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for address in addresses {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Resolves once shutdown is requested (or the sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
