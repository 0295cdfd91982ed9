//! Real WebSocket servers (tokio-tungstenite) for the protocol-upgrade tests: over HTTP/1.1
//! ([`EchoServer`]) and over HTTP/2 with RFC 8441's extended CONNECT ([`Http2EchoServer`]).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::Role;

/// A WebSocket echo server: each text message comes back prefixed with `echo: `. Keeps the
/// headers of every handshake it accepted.
pub struct EchoServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// The headers of every handshake it accepted, in order.
    pub handshakes: Arc<Mutex<Vec<http::HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Starts it on a free loopback port.
    // tungstenite's handshake callback returns its (large) error response type.
    #[allow(clippy::result_large_err)]
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let keep = |request: &Request, response: Response| {
                        seen.lock().unwrap().push(request.headers().clone());
                        Ok(response)
                    };
                    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, keep).await else { return };
                    echo(ws).await;
                });
            }
        });
        Self { addr, handshakes, task }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers each text message with itself prefixed by `echo: `, until the socket closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Text(text) => Message::text(format!("echo: {text}")),
            Message::Close(_) => return,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

/// A request's method, `:protocol` (if any) and headers.
pub type SeenRequest = (http::Method, Option<String>, http::HeaderMap);

/// A WebSocket echo server over HTTP/2 with prior knowledge (h2c), as RFC 8441 has it: it
/// allows extended CONNECT, opens a stream for `:protocol = websocket` with a `200` and echoes
/// as [`EchoServer`] does on it. A request with an `x-refuse` header is answered `403`. Keeps the method,
/// protocol and headers of every request it got.
pub struct Http2EchoServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Every request it got, in order.
    pub requests: Arc<Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Http2EchoServer {
    /// Starts it on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                        let protocol = request.extensions().get::<hyper::ext::Protocol>().map(|p| p.as_str().to_owned());
                        seen.lock().unwrap().push((request.method().clone(), protocol.clone(), request.headers().clone()));
                        let mut response = http::Response::new(Empty::<Bytes>::new());
                        if request.headers().contains_key("x-refuse") {
                            *response.status_mut() = http::StatusCode::FORBIDDEN;
                        } else if request.method() == http::Method::CONNECT && protocol.as_deref() == Some("websocket") {
                            let upgrade = hyper::upgrade::on(&mut request);
                            tokio::spawn(async move {
                                if let Ok(stream) = upgrade.await {
                                    echo(WebSocketStream::from_raw_socket(TokioIo::new(stream), Role::Server, None).await).await;
                                }
                            });
                        } else {
                            *response.status_mut() = http::StatusCode::BAD_REQUEST;
                        }
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    builder.enable_connect_protocol();
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, requests, task }
    }
}

impl Drop for Http2EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
