//! WebSocket through the gateway (`host/src/proxy/upgrade.rs`): a real tokio-tungstenite server
//! behind it and a real client in front. The handshake runs the route's request phases like any
//! request (so `key-auth` guards it); once the upstream switches protocols, messages flow both
//! ways until either side closes, and the gateway keeps serving.

use airlock_tests::websocket::{EchoServer, Http2EchoServer};
use airlock_tests::{Gateway, HttpClient};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

fn config(ws: &EchoServer, plain: &airlock_tests::Upstream) -> String {
    config_for(&ws.addr.to_string(), plain)
}

/// The test gateway's config with its WebSocket route's upstream at `ws`.
fn config_for(ws: &str, plain: &airlock_tests::Upstream) -> String {
    format!(
        r#"
[upstreams.ws]
targets = ["{ws}"]

[upstreams.plain]
targets = ["{plain}"]

[[consumers]]
id = "alice"
credentials = {{ keys = ["alice-key"] }}

[[routes]]
id = "chat"
path = "/chat"
upstream = "ws"
[[routes.plugins]]
plugin = "builtin:key-auth"
[[routes.plugins]]
plugin = "builtin:headers"
config = {{ request = {{ set = {{ "x-chat-route" = "${{route}}" }} }}, response = {{ set = {{ "x-via-gateway" = "yes" }} }} }}

[[routes]]
id = "plain"
path_prefix = "/"
upstream = "plain"
"#,
        plain = plain.addr,
    )
}

/// Waits (up to 5 s) for the gateway's `metric` to read `n`: a tunnel's gauge moves once its
/// two sides are joined, just after the response that opened it.
async fn metric_reaches(gw: &Gateway, metric: &str, n: f64) {
    let mut seen = f64::NAN;
    for _ in 0..100 {
        seen = airlock_tests::metric_value(gw, metric, &[]).await;
        if seen == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{metric} stayed at {seen}, not {n}");
}

#[tokio::test]
async fn websocket_messages_flow_through_the_gateway_after_the_chain_admits_the_handshake() {
    let ws = EchoServer::start().await;
    let plain = airlock_tests::Upstream::start().await;
    let gw = Gateway::start(&config(&ws, &plain), None).await;
    let url = format!("ws://{}/chat", gw.addr());

    // key-auth guards the handshake like any request: refused, the upstream never sees it.
    let refused = tokio_tungstenite::connect_async(&url).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected a 401 handshake, got {other:?}"),
    }
    assert!(ws.handshakes.lock().unwrap().is_empty(), "a refused handshake reached the upstream");

    // Admitted: the upstream gets the plugins' changes, the client the 101 and its headers.
    // The client also accepts trailers: the `Connection: te` the gateway then sends must not
    // take the place of the handshake's `Connection: upgrade`.
    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert("x-api-key", "alice-key".parse().unwrap());
    request.headers_mut().insert("te", "trailers".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.expect("handshake through the gateway");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers().get("x-via-gateway").map(|v| v.to_str().unwrap()), Some("yes"));
    assert!(response.headers().get("sec-websocket-accept").is_some(), "the upstream's accept key reaches the client");
    {
        let seen = ws.handshakes.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].get("x-chat-route").map(|v| v.to_str().unwrap()), Some("chat"));
        assert_eq!(seen[0].get("x-consumer-id").map(|v| v.to_str().unwrap()), Some("alice"));
        assert!(seen[0].get("x-api-key").is_none(), "key-auth hides the key from the upstream");
    }

    // Messages both ways, several, then a close from the client.
    for i in 0..5 {
        socket.send(Message::text(format!("hello {i}"))).await.expect("send");
        let reply = socket.next().await.expect("a reply").expect("a message");
        assert_eq!(reply, Message::text(format!("echo: hello {i}")));
    }
    // A message larger than a socket read, split across reads, arrives whole.
    let big = "x".repeat(200_000);
    socket.send(Message::text(big.clone())).await.expect("send big");
    let reply = socket.next().await.expect("a reply").expect("a message");
    assert_eq!(reply.into_text().expect("text").len(), big.len() + "echo: ".len());
    socket.close(None).await.expect("close");

    // An upstream that does not switch (a plain HTTP server answering 200): the client's
    // handshake fails with that answer, not a hang, and the upstream did get the upgrade asked.
    match tokio_tungstenite::connect_async(format!("ws://{}/plain", gw.addr())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 200);
            let echo: serde_json::Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("echo JSON");
            assert_eq!(echo["headers"]["upgrade"], serde_json::json!(["websocket"]), "{echo}");
        }
        other => panic!("expected the upstream's 200, got {other:?}"),
    }

    // The gateway keeps serving plain requests, on new connections and with a second socket open.
    let (mut second, _) = {
        let mut request = url.as_str().into_client_request().expect("request");
        request.headers_mut().insert("x-api-key", "alice-key".parse().unwrap());
        tokio_tungstenite::connect_async(request).await.expect("second handshake")
    };
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/plain")).await;
    assert_eq!(r.status, 200);
    second.send(Message::text("still here")).await.expect("send");
    assert_eq!(second.next().await.expect("reply").expect("message"), Message::text("echo: still here"));
    gw.stop().await;
}

/// Opens an HTTP/2 connection (prior knowledge) to `addr`, as a browser does over TLS.
async fn http2_connection(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    sender
}

/// An extended CONNECT (RFC 8441) for `protocol` on `path`, with `headers`.
fn extended_connect(addr: std::net::SocketAddr, path: &str, protocol: &'static str, headers: &[(&str, &str)]) -> http::Request<Empty<Bytes>> {
    let mut builder = http::Request::builder().method(http::Method::CONNECT).uri(format!("http://{addr}{path}")).version(http::Version::HTTP_2);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(Empty::new()).expect("request");
    request.extensions_mut().insert(hyper::ext::Protocol::from_static(protocol));
    request
}

/// A plain `GET /plain` on an HTTP/2 connection to the gateway, answered 200.
async fn plain_over_http2(h2: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>, gw: &Gateway) {
    let response = h2.send_request(http::Request::get(format!("http://{}/plain", gw.addr())).body(Empty::new()).unwrap()).await.expect("GET");
    assert_eq!(response.status(), 200);
}

/// A WebSocket to `path` over a new HTTP/2 connection (an extended CONNECT as alice), open.
async fn websocket_over_http2(gw: &Gateway, path: &str) -> WebSocketStream<TokioIo<hyper::upgrade::Upgraded>> {
    let mut h2 = http2_connection(gw.addr()).await;
    // A plain request first: the gateway's SETTINGS (extended CONNECT enabled) are then in.
    plain_over_http2(&mut h2, gw).await;
    let headers = [("sec-websocket-version", "13"), ("x-api-key", "alice-key")];
    let mut opened = h2.send_request(extended_connect(gw.addr(), path, "websocket", &headers)).await.expect("CONNECT");
    assert_eq!(opened.status(), 200);
    let stream = hyper::upgrade::on(&mut opened).await.expect("the stream opens");
    WebSocketStream::from_raw_socket(TokioIo::new(stream), Role::Client, None).await
}

#[tokio::test]
async fn websocket_over_http2_reaches_an_http1_upstream() {
    let ws = EchoServer::start().await;
    let plain = airlock_tests::Upstream::start().await;
    let gw = Gateway::start(&config(&ws, &plain), None).await;
    let mut h2 = http2_connection(gw.addr()).await;
    // A plain request first: the gateway's SETTINGS (extended CONNECT enabled) are then in.
    plain_over_http2(&mut h2, &gw).await;

    // key-auth guards it like any handshake: refused, the upstream never sees it.
    let refused = h2.send_request(extended_connect(gw.addr(), "/chat", "websocket", &[("sec-websocket-version", "13")])).await.expect("CONNECT");
    assert_eq!(refused.status(), 401);
    assert!(ws.handshakes.lock().unwrap().is_empty(), "a refused handshake reached the upstream");

    // Admitted: the stream opens with a 200 carrying the plugins' response headers, and the
    // upstream got an HTTP/1.1 handshake with the plugins' request changes.
    let headers = [("sec-websocket-version", "13"), ("x-api-key", "alice-key")];
    let mut opened = h2.send_request(extended_connect(gw.addr(), "/chat", "websocket", &headers)).await.expect("CONNECT");
    assert_eq!(opened.status(), 200);
    assert_eq!(opened.headers().get("x-via-gateway").map(|v| v.to_str().unwrap()), Some("yes"));
    assert!(opened.headers().get("sec-websocket-accept").is_none(), "the HTTP/1.1 handshake's answer stays on its hop");
    {
        let seen = ws.handshakes.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].get("upgrade").map(|v| v.to_str().unwrap()), Some("websocket"));
        assert!(seen[0].get("sec-websocket-key").is_some(), "the gateway makes the HTTP/1.1 handshake's key");
        assert_eq!(seen[0].get("x-consumer-id").map(|v| v.to_str().unwrap()), Some("alice"));
    }
    let stream = hyper::upgrade::on(&mut opened).await.expect("the stream opens");
    let mut socket = WebSocketStream::from_raw_socket(TokioIo::new(stream), Role::Client, None).await;
    metric_reaches(&gw, "airlock_switched_connections", 1.0).await;
    for i in 0..3 {
        socket.send(Message::text(format!("over h2 {i}"))).await.expect("send");
        assert_eq!(socket.next().await.expect("reply").expect("message"), Message::text(format!("echo: over h2 {i}")));
    }
    let big = "y".repeat(100_000);
    socket.send(Message::text(big.clone())).await.expect("send big");
    assert_eq!(socket.next().await.expect("reply").expect("message").into_text().expect("text").len(), big.len() + 6);

    // The same connection serves other requests meanwhile.
    plain_over_http2(&mut h2, &gw).await;

    // An upstream that does not switch: no stream opens to nothing; the client gets a 502.
    let not_switched = h2.send_request(extended_connect(gw.addr(), "/plain", "websocket", &[("sec-websocket-version", "13")])).await.expect("CONNECT");
    assert_eq!(not_switched.status(), 502);
    // Another protocol than websocket: refused.
    let other = h2.send_request(extended_connect(gw.addr(), "/plain", "connect-udp", &[])).await.expect("CONNECT");
    assert_eq!(other.status(), 501);

    socket.send(Message::text("still open")).await.expect("send");
    assert_eq!(socket.next().await.expect("reply").expect("message"), Message::text("echo: still open"));
    socket.close(None).await.expect("close");
    drop(socket);
    metric_reaches(&gw, "airlock_switched_connections", 0.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn websocket_reaches_an_http2_upstream_as_an_extended_connect() {
    let ws = Http2EchoServer::start().await;
    // An h2c server that does not allow extended CONNECT (hyper's default).
    let plain = airlock_tests::Upstream::start().await;
    let config = format!("[timeouts]\nidle_ms = 300\n{}", config_for(&ws.addr.to_string(), &plain))
        .replace("[upstreams.ws]\n", "[upstreams.ws]\nprotocol = \"h2c\"\n")
        .replace("[upstreams.plain]\n", "[upstreams.plain]\nprotocol = \"h2c\"\n");
    let gw = Gateway::start(&config, None).await;
    let url = format!("ws://{}/chat", gw.addr());

    // An HTTP/1.1 client's handshake: the upstream gets an extended CONNECT carrying the
    // plugins' changes and no HTTP/1.1 key; the client gets a 101 whose accept key matches its
    // own key (tungstenite checks it) and the response phases' headers.
    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert("x-api-key", "alice-key".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.expect("handshake through the gateway");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers().get("x-via-gateway").map(|v| v.to_str().unwrap()), Some("yes"));
    {
        let seen = ws.requests.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (method, protocol, headers) = &seen[0];
        assert_eq!((method, protocol.as_deref()), (&http::Method::CONNECT, Some("websocket")));
        assert_eq!(headers.get("sec-websocket-version").map(|v| v.to_str().unwrap()), Some("13"));
        assert!(headers.get("sec-websocket-key").is_none(), "RFC 8441 has no key: {headers:?}");
        assert_eq!(headers.get("x-consumer-id").map(|v| v.to_str().unwrap()), Some("alice"));
        assert_eq!(headers.get("x-chat-route").map(|v| v.to_str().unwrap()), Some("chat"));
    }
    for i in 0..3 {
        socket.send(Message::text(format!("to h2 {i}"))).await.expect("send");
        assert_eq!(socket.next().await.expect("reply").expect("message"), Message::text(format!("echo: to h2 {i}")));
    }
    let big = "z".repeat(150_000);
    socket.send(Message::text(big.clone())).await.expect("send big");
    assert_eq!(socket.next().await.expect("reply").expect("message").into_text().expect("text").len(), big.len() + 6);
    metric_reaches(&gw, "airlock_switched_connections", 1.0).await;
    // The tunnel outlives the upstream pool's idle time (`idle_ms`, 300 ms here): an open
    // stream keeps its shared HTTP/2 connection.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        echoes(&mut socket, "still streaming").await;
    }

    // An HTTP/2 client's extended CONNECT goes on as one, and its stream opens with a 200.
    let mut h2 = http2_connection(gw.addr()).await;
    plain_over_http2(&mut h2, &gw).await;
    let headers = [("sec-websocket-version", "13"), ("x-api-key", "alice-key")];
    let mut opened = h2.send_request(extended_connect(gw.addr(), "/chat", "websocket", &headers)).await.expect("CONNECT");
    assert_eq!(opened.status(), 200);
    assert!(opened.headers().get("sec-websocket-accept").is_none());
    let stream = hyper::upgrade::on(&mut opened).await.expect("the stream opens");
    let mut over_h2 = WebSocketStream::from_raw_socket(TokioIo::new(stream), Role::Client, None).await;
    over_h2.send(Message::text("h2 both ways")).await.expect("send");
    assert_eq!(over_h2.next().await.expect("reply").expect("message"), Message::text("echo: h2 both ways"));
    metric_reaches(&gw, "airlock_switched_connections", 2.0).await;

    // The upstream refuses the CONNECT: the client's handshake gets that answer.
    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert("x-api-key", "alice-key".parse().unwrap());
    request.headers_mut().insert("x-refuse", "yes".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected the upstream's 403, got {other:?}"),
    }
    // An HTTP/2 upstream that does not allow extended CONNECT: a 502, not a hang.
    match tokio_tungstenite::connect_async(format!("ws://{}/plain", gw.addr())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 502);
            let error: serde_json::Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("JSON");
            assert_eq!(error["error"], "upstream_unavailable");
            // Why (no extended CONNECT) is in the gateway's warning line, not told to the client.
            assert_eq!(error["message"], "the upstream is unavailable", "{error}");
        }
        other => panic!("expected a 502, got {other:?}"),
    }

    // Both sockets still work; the gateway serves plain requests over h2c meanwhile.
    socket.send(Message::text("still here")).await.expect("send");
    assert_eq!(socket.next().await.expect("reply").expect("message"), Message::text("echo: still here"));
    let r = HttpClient::http1().get(&gw.url("/plain")).await;
    assert_eq!(r.status, 200);
    socket.close(None).await.expect("close");
    over_h2.close(None).await.expect("close");
    drop((socket, over_h2));
    metric_reaches(&gw, "airlock_switched_connections", 0.0).await;
    gw.stop().await;
}

/// An HTTP/2 upstream without RFC 8441 refuses a WebSocket's extended CONNECT: a 502 for that
/// request, and not a failure of the target, or any client could take a target out of rotation
/// (`max_fails`) by asking for WebSockets.
#[tokio::test]
async fn a_websocket_an_http2_upstream_refuses_does_not_mark_its_target_down() {
    let (a, b) = (airlock_tests::Upstream::start().await, airlock_tests::Upstream::start().await);
    let config = format!(
        "[upstreams.backend]\ntargets = [\"{}\", \"{}\"]\nprotocol = \"h2c\"\nmax_fails = 1\nfail_timeout_ms = 60000\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n",
        a.addr, b.addr
    );
    let gw = Gateway::start(&config, None).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/socket", gw.addr())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 502),
        other => panic!("expected a 502, got {other:?}"),
    }
    // Round robin goes on over both targets: neither was marked down by the refusal.
    let before = (a.hits(), b.hits());
    for i in 0..6 {
        let r = HttpClient::http1().get(&gw.url(&format!("/plain/{i}"))).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let (to_a, to_b) = (a.hits() - before.0, b.hits() - before.1);
    assert!(to_a > 0 && to_b > 0, "both targets serve: {to_a} and {to_b} of 6");
    gw.stop().await;
}

/// Once an HTTP/2 upstream's SETTINGS have said it takes no extended CONNECT (RFC 8441), a
/// WebSocket to it is answered 502 without being sent: the server gets no stream to refuse.
#[tokio::test]
async fn a_websocket_is_not_sent_to_an_http2_upstream_whose_settings_refuse_it() {
    use std::sync::{Arc, Mutex};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Every byte the gateway sends the server, to count its HEADERS frames (requests) after.
    let received: Arc<Mutex<Vec<u8>>> = Arc::default();
    let seen = received.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // An h2 server as most are: extended CONNECT not enabled.
                let Ok(mut connection) = h2::server::handshake(Recorded { inner: stream, seen }).await else { return };
                while let Some(Ok((_, mut respond))) = connection.accept().await {
                    if let Ok(mut send) = respond.send_response(http::Response::new(()), false) {
                        let _ = send.send_data(Bytes::from_static(b"plain"), true);
                    }
                }
            });
        }
    });
    // One worker: the WebSocket goes on the connection the GET made.
    let config = format!("[runtime]\nworker_threads = 1\n\n[upstreams.backend]\ntargets = [\"{addr}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n");
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    // The connection made and the server's SETTINGS read with the answer.
    assert_eq!(client.get(&gw.url("/plain")).await.text(), "plain");
    match tokio_tungstenite::connect_async(format!("ws://{}/socket", gw.addr())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 502),
        other => panic!("expected a 502, got {other:?}"),
    }
    // And the connection still serves.
    assert_eq!(client.get(&gw.url("/plain")).await.text(), "plain");
    let bytes = received.lock().unwrap().clone();
    assert_eq!(headers_frames(&bytes), 2, "the two GETs reached the server, the WebSocket did not");
    server.abort();
    gw.stop().await;
}

/// The HEADERS frames in what an HTTP/2 client sent (its preface, then frames).
fn headers_frames(bytes: &[u8]) -> usize {
    const PREFACE: usize = 24;
    let mut at = PREFACE;
    let mut count = 0;
    while at + 9 <= bytes.len() {
        let length = usize::from(bytes[at]) << 16 | usize::from(bytes[at + 1]) << 8 | usize::from(bytes[at + 2]);
        count += usize::from(bytes[at + 3] == 0x1);
        at += 9 + length;
    }
    count
}

/// A server's connection recording every byte read from its client.
struct Recorded {
    inner: tokio::net::TcpStream,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for Recorded {
    fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled()[before..].to_vec();
        self.seen.lock().unwrap().extend_from_slice(&read);
        polled
    }
}

impl tokio::io::AsyncWrite for Recorded {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn the_drain_closes_open_websockets_over_http1_and_http2() {
    let ws = EchoServer::start().await;
    let plain = airlock_tests::Upstream::start().await;
    // A drain long enough that waiting it out would show.
    let gw = Gateway::start(&format!("[timeouts]\ndrain_ms = 60000\n{}", config(&ws, &plain)), None).await;
    let mut request = format!("ws://{}/chat", gw.addr()).into_client_request().expect("request");
    request.headers_mut().insert("x-api-key", "alice-key".parse().unwrap());
    let (mut over_h1, _) = tokio_tungstenite::connect_async(request).await.expect("handshake over HTTP/1.1");
    let mut over_h2 = websocket_over_http2(&gw, "/chat").await;
    echoes(&mut over_h1, "before").await;
    echoes(&mut over_h2, "before").await;
    metric_reaches(&gw, "airlock_switched_connections", 2.0).await;

    let stopped = tokio::time::timeout(Duration::from_secs(20), gw.stop()).await;
    assert!(stopped.is_ok(), "the drain waited on the open tunnels instead of closing them");
    closed(&mut over_h1).await;
    closed(&mut over_h2).await;
}

/// Sends `text` and checks the echo server's answer comes back.
async fn echoes<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(socket: &mut WebSocketStream<S>, text: &str) {
    socket.send(Message::text(text)).await.expect("send");
    assert_eq!(socket.next().await.expect("reply").expect("message"), Message::text(format!("echo: {text}")));
}

/// Checks the socket is closed (or closes within 5 s).
async fn closed<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(socket: &mut WebSocketStream<S>) {
    let end = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("the tunnel is closed");
    assert!(matches!(end, None | Some(Err(_))), "expected the connection closed, got {end:?}");
}

#[tokio::test]
async fn a_websocket_with_nothing_passing_is_closed_after_tunnel_idle_ms() {
    let ws = EchoServer::start().await;
    let plain = airlock_tests::Upstream::start().await;
    let idle = Duration::from_millis(1500);
    let toml = format!("[timeouts]\ntunnel_idle_ms = {}\n{}", idle.as_millis(), config(&ws, &plain));
    let gw = Gateway::start(&toml, None).await;
    let connect = || async {
        let mut request = format!("ws://{}/chat", gw.addr()).into_client_request().expect("request");
        request.headers_mut().insert("x-api-key", "alice-key".parse().unwrap());
        tokio_tungstenite::connect_async(request).await.expect("handshake through the gateway").0
    };
    let mut socket = connect().await;
    metric_reaches(&gw, "airlock_switched_connections", 1.0).await;

    // Traffic keeps it open: a message every 200 ms for over twice the idle time.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < idle * 3 {
        socket.send(Message::text(format!("ping {sent}"))).await.expect("an active tunnel stays open");
        let reply = socket.next().await.expect("a reply").expect("an active tunnel stays open");
        assert_eq!(reply, Message::text(format!("echo: ping {sent}")));
        sent += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing passing: the gateway closes both sides, no sooner than the idle time.
    let quiet = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(30), socket.next()).await.expect("the gateway closes an idle tunnel");
    assert!(matches!(end, None | Some(Err(_))), "expected the connection closed, got {end:?}");
    assert!(quiet.elapsed() >= idle * 2 / 3, "closed after {:?}, before the idle time", quiet.elapsed());
    metric_reaches(&gw, "airlock_switched_connections", 0.0).await;
    // Counted as an idle end, with the bytes each way: at least the messages' payloads (framing
    // and the client's masks come on top).
    assert_eq!(airlock_tests::metric_value(&gw, "airlock_tunnels_closed_total", &[("reason", "idle")]).await, 1.0);
    let payload: usize = (0..sent).map(|i| format!("ping {i}").len()).sum();
    let up = airlock_tests::metric_value(&gw, "airlock_tunnel_bytes_total", &[("direction", "client_to_upstream")]).await;
    let down = airlock_tests::metric_value(&gw, "airlock_tunnel_bytes_total", &[("direction", "upstream_to_client")]).await;
    assert!(up >= payload as f64 && up <= (payload + 14 * sent) as f64, "{up} bytes up for {payload} of payload in {sent} frames");
    let echoed = payload + "echo: ".len() * sent;
    assert!(down >= echoed as f64 && down <= (echoed + 10 * sent) as f64, "{down} bytes down for {echoed} of payload in {sent} frames");

    // The gateway serves on: a new socket works.
    let mut again = connect().await;
    again.send(Message::text("after")).await.expect("send");
    assert_eq!(again.next().await.expect("reply").expect("message"), Message::text("echo: after"));
    metric_reaches(&gw, "airlock_switched_connections", 1.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_route_sets_its_own_tunnel_idle_time_over_http1_and_http2() {
    let ws = EchoServer::start().await;
    let plain = airlock_tests::Upstream::start().await;
    let idle = Duration::from_millis(800);
    // The global idle time is long; `/chat` sets a short one, `/lobby` keeps the global one.
    let toml = format!("[timeouts]\ntunnel_idle_ms = 60000\n{}", config(&ws, &plain)).replace(
        "path = \"/chat\"\nupstream = \"ws\"\n",
        &format!("path = \"/chat\"\nupstream = \"ws\"\ntunnel_idle_ms = {}\n", idle.as_millis()),
    ) + "\n[[routes]]\nid = \"lobby\"\npath = \"/lobby\"\nupstream = \"ws\"\n";
    let gw = Gateway::start(&toml, None).await;
    let mut request = format!("ws://{}/chat", gw.addr()).into_client_request().expect("request");
    request.headers_mut().insert("x-api-key", "alice-key".parse().unwrap());
    let (mut short_h1, _) = tokio_tungstenite::connect_async(request).await.expect("handshake");
    let (mut lobby, _) = tokio_tungstenite::connect_async(format!("ws://{}/lobby", gw.addr())).await.expect("handshake");
    let mut short_h2 = websocket_over_http2(&gw, "/chat").await;
    echoes(&mut short_h1, "h1").await;
    echoes(&mut short_h2, "h2").await;
    echoes(&mut lobby, "lobby").await;
    metric_reaches(&gw, "airlock_switched_connections", 3.0).await;

    // Quiet: both `/chat` sockets close after the route's time, not the global minute.
    let quiet = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), short_h1.next()).await.expect("the route's idle time closes it");
    assert!(matches!(end, None | Some(Err(_))), "expected the connection closed, got {end:?}");
    let end = tokio::time::timeout(Duration::from_secs(10), short_h2.next()).await.expect("the route's idle time closes it");
    assert!(matches!(end, None | Some(Err(_))), "expected the stream closed, got {end:?}");
    assert!(quiet.elapsed() >= idle * 2 / 3, "closed after {:?}, before the route's idle time", quiet.elapsed());
    metric_reaches(&gw, "airlock_switched_connections", 1.0).await;
    assert_eq!(airlock_tests::metric_value(&gw, "airlock_tunnels_closed_total", &[("reason", "idle")]).await, 2.0);
    // `/lobby`, as quiet all along, is still open under the global time.
    echoes(&mut lobby, "still here").await;
    gw.stop().await;
}

/// A response phase that changes the upstream's 101 calls the switch off: the client gets that
/// status, no tunnel opens, and the upstream's switched connection is dropped.
#[tokio::test]
async fn a_response_phase_that_changes_the_101_calls_the_switch_off() {
    let ws = EchoServer::start().await;
    let plain = airlock_tests::Upstream::start().await;
    let toml = config(&ws, &plain)
        + &airlock_tests::hostile_plugin("unswitch")
        + "\n[[routes]]\nid = \"off\"\npath = \"/off\"\nupstream = \"ws\"\n[[routes.plugins]]\nplugin = \"unswitch\"\n"
        + "config = { mode = \"response-status\", count = 403 }\n";
    let gw = Gateway::start(&toml, None).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/off", gw.addr())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            assert!(response.headers().get("upgrade").is_none(), "{:?}", response.headers());
        }
        other => panic!("expected the plugin's 403, got {other:?}"),
    }
    let mut h2 = http2_connection(gw.addr()).await;
    plain_over_http2(&mut h2, &gw).await;
    let refused = h2.send_request(extended_connect(gw.addr(), "/off", "websocket", &[("sec-websocket-version", "13")])).await.expect("CONNECT");
    assert_eq!(refused.status(), 403);
    // Both handshakes reached the upstream and switched there; neither became a tunnel.
    assert_eq!(ws.handshakes.lock().unwrap().len(), 2);
    assert_eq!(airlock_tests::metric_value(&gw, "airlock_switched_connections", &[]).await, 0.0);
    // The gateway serves on, WebSockets on other routes included.
    plain_over_http2(&mut h2, &gw).await;
    let mut socket = websocket_over_http2(&gw, "/chat").await;
    echoes(&mut socket, "after").await;
    gw.stop().await;
}

#[tokio::test]
async fn an_h2c_upgrade_is_not_passed_on() {
    // h2c smuggling: were `Upgrade: h2c` passed on and switched, the client would speak HTTP/2
    // straight to the upstream, every later request past the routes and plugins. Only
    // `websocket` is passed on; anything else goes as a plain request.
    let ws = EchoServer::start().await;
    let plain = airlock_tests::Upstream::start().await;
    let gw = Gateway::start(&config(&ws, &plain), None).await;
    let headers = [("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c"), ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA")];
    let r = HttpClient::http1().request("GET", &gw.url("/plain"), &headers, b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo: serde_json::Value = serde_json::from_str(&r.text()).expect("echo JSON");
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(echo["headers"].get(name).is_none(), "the upstream got `{name}`: {echo}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_that_switches_unasked_is_refused() {
    // An upstream answering 101 to a plain request: the client gets a 502, not a switched
    // connection it never asked for.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n").await;
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    let toml = format!("[upstreams.odd]\ntargets = [\"{addr}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"odd\"\n");
    let gw = Gateway::start(&toml, None).await;
    let r = HttpClient::http1().get(&gw.url("/x")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unavailable", "{}", r.text());
    gw.stop().await;
    server.abort();
}

/// A 101 to a WebSocket handshake that switches to no protocol, or another, is a 502 (RFC 9110
/// 7.8: a server switches only to a protocol the client listed; 15.2.2: a 101 says which): the
/// client's connection is not joined to an upstream speaking who knows what.
#[tokio::test]
async fn an_upstream_that_switches_to_another_protocol_is_refused() {
    for answer in [
        &b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..],
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
    ] {
        let (addr, _task) = airlock_tests::raw_upstream_holding(answer, Duration::from_secs(5)).await;
        let toml = format!("[upstreams.odd]\ntargets = [\"{addr}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"odd\"\n");
        let gw = Gateway::start(&toml, None).await;
        match tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr())).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 502, "{}", String::from_utf8_lossy(answer));
            }
            other => panic!("expected a 502 for {:?}, got {other:?}", String::from_utf8_lossy(answer)),
        }
        assert_eq!(airlock_tests::metric_value(&gw, "airlock_switched_connections", &[]).await, 0.0);
        gw.stop().await;
    }
}

/// An open WebSocket holds its request's places until it closes, over HTTP/1.1 and HTTP/2:
/// `least_requests` counts it as load on its target, and `max_requests` as a request in flight.
#[tokio::test]
async fn an_open_websocket_counts_as_in_flight_until_it_closes() {
    let ws = EchoServer::start().await;
    let toml = format!(
        "[upstreams.ws]\ntargets = [\"{}\"]\nbalance = \"least_requests\"\nmax_requests = 1\n\n[[routes]]\nid = \"chat\"\npath = \"/chat\"\nupstream = \"ws\"\n\n[[routes]]\npath = \"/plain\"\nplugins = [{{ plugin = \"builtin:respond\" }}]\n",
        ws.addr
    );
    let gw = Gateway::start(&toml, None).await;
    let in_flight = || {
        let (client, url) = (HttpClient::http1(), gw.admin_url("/admin/routes"));
        async move { client.get(&url).await.json()["routes"][0]["upstream"]["in_flight"].clone() }
    };
    let url = format!("ws://{}/chat", gw.addr());
    let (mut socket, response) = tokio_tungstenite::connect_async(url.as_str()).await.expect("handshake");
    assert_eq!(response.status(), 101);
    echoes(&mut socket, "held").await;
    assert_eq!(in_flight().await, serde_json::json!([1]), "the open tunnel is load on its target");
    // Its place among max_requests = 1 is taken: a second one is shed.
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503 upstream_overloaded, got {:?}", other.map(|(_, r)| r.status())),
    }
    socket.close(None).await.expect("close");
    drop(socket);
    let mut released = serde_json::Value::Null;
    for _ in 0..100 {
        released = in_flight().await;
        if released == serde_json::json!([0]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(released, serde_json::json!([0]), "given back when the tunnel closes");
    // Over HTTP/2 (an extended CONNECT): the same.
    let mut socket = websocket_over_http2(&gw, "/chat").await;
    echoes(&mut socket, "held over h2").await;
    assert_eq!(in_flight().await, serde_json::json!([1]));
    socket.close(None).await.expect("close");
    drop(socket);
    for _ in 0..100 {
        released = in_flight().await;
        if released == serde_json::json!([0]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(released, serde_json::json!([0]));
    gw.stop().await;
}
