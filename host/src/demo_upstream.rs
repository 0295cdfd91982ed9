//! A tiny upstream for the quickstart: answers every request with a JSON echo of what it received
//! (method, path, query, headers), so `curl` through the gateway shows what plugins changed.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Address the quickstart config sends requests to.
pub const DEMO_UPSTREAM_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));

/// Serves the echo upstream on [`DEMO_UPSTREAM_ADDR`], or, when `movable` (the quickstart, whose
/// config follows it: [`quickstart_config`]) and that port is taken (9090 is Prometheus's
/// default too), on a free loopback port. Returns the bound address. A config of the operator's
/// own (`--demo-upstream`) names 9090 itself, so there a taken port is an error saying so.
pub async fn spawn_for(movable: bool) -> std::io::Result<SocketAddr> {
    match spawn(DEMO_UPSTREAM_ADDR).await {
        Err(e) if movable && e.kind() == std::io::ErrorKind::AddrInUse => {
            let addr = spawn(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))).await?;
            tracing::warn!(%addr, taken = %DEMO_UPSTREAM_ADDR, "the demo upstream's port is taken: it listens on a free one, and the quickstart config sends requests there");
            Ok(addr)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(std::io::Error::new(
            e.kind(),
            format!("{e}: another program holds the port (Prometheus listens on 9090 by default); stop it, or run a config whose upstream is elsewhere without --demo-upstream"),
        )),
        other => other,
    }
}

/// The quickstart config `text` with its upstream target at `addr`, where the demo upstream
/// listens (the embedded config names [`DEMO_UPSTREAM_ADDR`]; its lines stay where they were).
pub fn quickstart_config(text: &str, addr: SocketAddr) -> std::borrow::Cow<'_, str> {
    if addr == DEMO_UPSTREAM_ADDR {
        return text.into();
    }
    text.replace(&format!("\"{DEMO_UPSTREAM_ADDR}\""), &format!("\"{addr}\"")).into()
}

/// Binds `addr` and serves the echo upstream in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move { Ok::<_, Infallible>(echo(req).await) });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(bound)
}

async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned().into()))
        .collect();
    let echo = serde_json::json!({
        "upstream": "airlock demo upstream",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut response = Response::new(Full::new(Bytes::from(format!("{echo:#}\n"))));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quickstart_config_follows_the_demo_upstream() {
        let moved: SocketAddr = "127.0.0.1:40123".parse().expect("addr");
        let text = quickstart_config(crate::config::QUICKSTART, moved);
        assert!(text.contains("targets = [\"127.0.0.1:40123\"]"), "{text}");
        assert!(!text.contains("\"127.0.0.1:9090\""), "{text}");
        assert_eq!(text.lines().count(), crate::config::QUICKSTART.lines().count(), "its lines stay where they were");
        assert!(matches!(quickstart_config(crate::config::QUICKSTART, DEMO_UPSTREAM_ADDR), std::borrow::Cow::Borrowed(_)));
    }
}
