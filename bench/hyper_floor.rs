//! The floor under Airlock's proxy core: a reverse proxy made of nothing but the stack the gateway
//! is built on (a hyper HTTP/1.1 server, hyper's HTTP/1.1 client connections kept alive per
//! worker by Airlock's `Http1Pool`, one single-threaded tokio runtime per core, connections
//! handed to the workers round-robin) and no
//! gateway logic at all: no routing, no limits, no headers added, no telemetry. What it costs
//! per request is what Airlock without plugins cannot go below without replacing hyper; what
//! Airlock costs above it is Airlock's own. `bench/compare.py` and `bench/cpu_per_request.py`
//! run it as the "hyper floor" case.
//!
//! ```sh
//! cargo build --release -p airlock --example hyper_floor
//! target/release/examples/hyper_floor 127.0.0.1:19300 127.0.0.1:19100 2
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock::proxy::body::ProxyBody;
use airlock::proxy::http1_pool::Http1Pool;

use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::mpsc;

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// The gateway's allocator, so the floor is measured on the same footing.
#[global_allocator]
static GLOBAL: airlock::allocator::GatewayAllocator = airlock::allocator::GatewayAllocator;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:19300").parse()?;
    let upstream: Authority = args.next().as_deref().unwrap_or("127.0.0.1:19100").parse()?;
    let workers: usize = args.next().as_deref().unwrap_or("2").parse()?;

    let listener = std::net::TcpListener::bind(listen)?;
    let mut senders = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
        senders.push(tx);
        let upstream = upstream.clone();
        threads.push(std::thread::spawn(move || worker(rx, upstream)));
    }
    // One accepting thread hands connections to the workers in turn, so wrk's 32 connections
    // are spread evenly (as Airlock's connection balancer spreads them).
    for (n, stream) in listener.incoming().enumerate() {
        let stream = stream?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        if senders[n % senders.len()].send(stream).is_err() {
            break;
        }
    }
    drop(senders);
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Upstream connections kept alive by one worker, as Airlock keeps them.
type Pool = Arc<Http1Pool<HttpConnector>>;

/// One core: its own runtime and its own upstream connections, serving the connections it is given.
fn worker(mut connections: mpsc::UnboundedReceiver<std::net::TcpStream>, upstream: Authority) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hyper_floor: no runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Pool = Http1Pool::new(connector, Scheme::HTTP, 100, 128, Duration::from_secs(90), Arc::default());
        while let Some(stream) = connections.recv().await {
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { continue };
            let client = client.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| forward(client.clone(), upstream.clone(), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// Sends the request on to the upstream as it came and answers with what comes back.
async fn forward(client: Pool, upstream: Authority, request: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
    let (mut parts, body) = request.into_parts();
    let mut uri = Uri::builder().scheme(Scheme::HTTP).authority(upstream);
    if let Some(path) = parts.uri.path_and_query() {
        uri = uri.path_and_query(path.clone());
    }
    parts.uri = match uri.build() {
        Ok(uri) => uri,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    match client.send(Request::from_parts(parts, ProxyBody::streaming(body))).await {
        Ok(response) => Ok(response.map(BodyExt::boxed_unsync)),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = code;
    response
}
