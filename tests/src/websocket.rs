//! A real WebSocket server (tokio-tungstenite) for the protocol-upgrade tests.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

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
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, keep).await else { return };
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

