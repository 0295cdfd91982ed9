//! Limits at the edge that keep one client from holding the gateway's resources without end, each
//! found by a black-box probe: an HTTP/1.1 client that stops reading its response
//! (`timeouts.send_ms`), an HTTP/2 client that makes no room for its response (the same limit),
//! more connections than the gateway can serve (`limits.max_connections`), and an HTTP/2 client
//! that resets its streams once the gateway has started on them (the other half of "rapid
//! reset", CVE-2023-44487).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use airlock_tests::{Gateway, HttpClient, Upstream, metric_value};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// An HTTP/1.1 upstream that answers every request with a chunked body that never ends, and
/// reports on `ended` when it can write no more (the gateway closed its connection).
async fn endless_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ended, reports) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { continue };
            let ended = ended.clone();
            tokio::spawn(async move {
                if airlock_tests::read_request_head(&mut tcp).await.is_none() {
                    return;
                }
                let mut chunk = b"4000\r\n".to_vec();
                chunk.extend_from_slice(&[b'x'; 0x4000]);
                chunk.extend_from_slice(b"\r\n");
                if tcp.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await.is_ok() {
                    while tcp.write_all(&chunk).await.is_ok() {}
                }
                let _ = ended.send(Instant::now());
            });
        }
    });
    (addr, reports)
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `stream`; returns its head and body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no content-length in {head}"));
            if data.len() >= end + 4 + length {
                return String::from_utf8_lossy(&data[..end + 4 + length]).into_owned();
            }
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before a whole response: {}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
    }
}

/// `/endless` to the endless upstream at `endless`, everything else to the echo upstream, with
/// `timeouts.send_ms` at `send_ms`.
fn endless_and_echo_routes(endless: impl std::fmt::Display, send_ms: u64) -> String {
    format!(
        "[upstreams.endless]\ntargets = [\"{endless}\"]\n\n[upstreams.echo]\ntargets = [\"{{upstream}}\"]\n\n\
         [[routes]]\npath_prefix = \"/endless\"\nupstream = \"endless\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"echo\"\n\n\
         [timeouts]\nsend_ms = {send_ms}\n"
    )
}

#[tokio::test]
async fn an_http1_client_that_stops_reading_is_closed_after_send_ms_and_its_upstream_exchange_with_it() {
    const SEND_MS: u64 = 1000;
    let (endless, mut ended) = endless_upstream().await;
    let echo = Upstream::start().await;
    let toml = endless_and_echo_routes(endless, SEND_MS);
    let gw = Gateway::start(&toml, Some(&echo)).await;

    // No false alarm: a keep-alive connection idle for twice send_ms (no write waiting) is kept,
    // and a large body read at once is not cut.
    let mut kept = TcpStream::connect(gw.addr()).await.expect("connect");
    kept.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    assert!(read_response(&mut kept).await.starts_with("HTTP/1.1 200"));
    let big = HttpClient::http1().get(&gw.url("/big/4000000")).await;
    assert_eq!((big.status.as_u16(), big.body.len()), (200, 4_000_000));
    tokio::time::sleep(Duration::from_millis(2 * SEND_MS + 500)).await;
    kept.write_all(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write on the kept connection");
    assert!(read_response(&mut kept).await.starts_with("HTTP/1.1 200"), "the idle connection was closed");

    // A client with a small receive window that asks for an endless body and never reads it.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stalled = socket.connect(gw.addr()).await.expect("connect");
    let asked = Instant::now();
    stalled.write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");

    // The gateway gives the connection up once its writes take nothing for send_ms, and drops
    // the upstream exchange with it: the upstream's writes fail. Without the limit both were
    // held for as long as the client liked (the probe watched 80 s).
    let upstream_ended = tokio::time::timeout(Duration::from_secs(10), ended.recv())
        .await
        .expect("the upstream exchange of a client that stopped reading was still open after 10 s")
        .expect("report");
    let after = upstream_ended.duration_since(asked);
    assert!(after >= Duration::from_millis(SEND_MS - 50), "cut after {after:?}, before send_ms");

    // The client's connection is closed: what was already sent drains, then EOF (or a reset).
    let mut drained = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut drained)).await;
    assert!(read.is_ok(), "the client connection was still open 10 s after the cut ({} bytes read)", drained.len());

    // Counted; the kept connection is the only one left open.
    let cut = metric_value(&gw, "airlock_connections_cut_total", &[("reason", "send_timeout")]).await;
    assert_eq!(cut, 1.0);
    drop(kept);
    for _ in 0..100 {
        if metric_value(&gw, "airlock_active_connections", &[]).await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric_value(&gw, "airlock_active_connections", &[]).await, 0.0);
    gw.stop().await;
}

/// `timeouts.send_ms` over HTTP/2: a client that opens streams with a flow-control window of 0
/// and never raises it (answering the gateway's keep-alive pings all the while) took the
/// response head, and then held the stream, and the upstream exchange behind it, for as long as
/// it liked: the idle close only sends a GOAWAY, which waits for open streams (the probe watched
/// 90 s with `idle_ms = 2000`).
#[tokio::test]
async fn an_http2_client_that_makes_no_room_for_its_response_is_closed_after_send_ms_and_its_upstream_exchange_with_it() {
    const SEND_MS: u64 = 1000;
    let (endless, mut ended) = endless_upstream().await;
    let echo = Upstream::start().await;
    let toml = endless_and_echo_routes(endless, SEND_MS);
    let gw = Gateway::start(&toml, Some(&echo)).await;
    let addr = gw.addr();

    // No false alarm: a large body read at once over HTTP/2 is not cut, nor is the connection
    // kept idle for twice send_ms afterwards.
    let (mut reader, reader_conn) = h2_connection(addr).await;
    let request = Request::get(format!("http://{addr}/big/4000000")).body(Full::default()).expect("request");
    let response = reader.send_request(request).await.expect("answered");
    let body = http_body_util::BodyExt::collect(response.into_body()).await.expect("the whole body").to_bytes();
    assert_eq!(body.len(), 4_000_000);

    // A client whose streams start with a window of 0, raised never: h2 sends no WINDOW_UPDATE
    // for a stream unless its receiver releases capacity, and this one does not. Its connection
    // task answers pings.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (stalled, connection) =
        h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(tcp).await.expect("h2 handshake");
    let stalled_conn = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut stalled = stalled.ready().await.expect("ready");
    let asked = Instant::now();
    let request = http::Request::get(format!("http://{addr}/endless")).body(()).expect("request");
    let (response, _) = stalled.send_request(request, true).expect("stream opened");
    let response = response.await.expect("the response head");
    assert_eq!(response.status(), 200);
    let _held = response.into_body();

    // The gateway gives the connection up once the response has waited send_ms for room, and
    // drops the upstream exchange with it: the upstream's writes fail.
    let upstream_ended = tokio::time::timeout(Duration::from_secs(10), ended.recv())
        .await
        .expect("the upstream exchange of an HTTP/2 client that made no room was still open after 10 s")
        .expect("report");
    let after = upstream_ended.duration_since(asked);
    assert!(after >= Duration::from_millis(SEND_MS - 50), "cut after {after:?}, before send_ms");
    let closed = tokio::time::timeout(Duration::from_secs(10), stalled_conn).await;
    assert!(closed.is_ok(), "the stalled HTTP/2 connection was still open 10 s after the cut");
    assert_eq!(metric_value(&gw, "airlock_connections_cut_total", &[("reason", "send_timeout")]).await, 1.0);

    // The reading client's connection, idle all this time (well within idle_ms), is untouched.
    assert!(!reader_conn.is_finished(), "an idle HTTP/2 connection was cut");
    reader.ready().await.expect("still open");
    let request = Request::get(format!("http://{addr}/again")).body(Full::default()).expect("request");
    assert_eq!(reader.send_request(request).await.expect("still served").status(), 200);
    gw.stop().await;
}

/// A body read for a plugin is decoded layer by layer as its `Content-Encoding` says, each layer
/// up to the body limit, on the thread serving the request. Uncapped, a 22 KB body under `gzip`
/// named three times (each layer a gzip of the next, padded with megabytes of empty gzip
/// members) took 17 s of CPU, and 300 layers fit in 188 KB. Past five (curl's cap) the body is
/// refused before any layer is decoded, and a gzip layer of more than 1,024 members as soon as
/// the decoder reaches the next.
#[tokio::test]
async fn a_body_under_more_stacked_codings_or_gzip_members_than_the_caps_is_refused() {
    use std::io::Write as _;
    let echo = Upstream::start().await;
    let toml = "[upstreams.echo]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath = \"/validated\"\nupstream = \"echo\"\n\
                [[routes.plugins]]\nplugin = \"builtin:request-validator\"\n[routes.plugins.config]\nbody_schema = { type = \"object\" }\n";
    let gw = Gateway::start(toml, Some(&echo)).await;
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    };
    let mut body = b"{}".to_vec();
    for layers in 1..=6 {
        body = gzip(&body);
        let coding = vec!["gzip"; layers].join(", ");
        let reply = HttpClient::http1()
            .request("POST", &gw.url("/validated"), &[("content-type", "application/json"), ("content-encoding", &coding)], &body)
            .await;
        let expected = if layers <= 5 { 200 } else { 415 };
        assert_eq!(reply.status.as_u16(), expected, "{layers} layers: {}", reply.text());
        if layers > 5 {
            assert_eq!(reply.json()["error"], "unsupported_encoding", "{}", reply.text());
        }
    }
    assert_eq!(echo.hits(), 5, "the body under six codings reached the upstream");

    // Two layers, the inner one 2,000 empty gzip members before the JSON (starting a member
    // costs far more than its bytes; 450,000 of them, 22 KB under the outer gzip, took 7 s of
    // CPU): refused past 1,024 members, however small the body.
    let mut members = gzip(b"").repeat(1999);
    members.extend(gzip(b"{}"));
    let reply = HttpClient::http1()
        .request("POST", &gw.url("/validated"), &[("content-type", "application/json"), ("content-encoding", "gzip, gzip")], &gzip(&members))
        .await;
    assert_eq!(reply.status.as_u16(), 415, "{}", reply.text());
    assert_eq!(echo.hits(), 5, "the body of 2,000 gzip members reached the upstream");
    gw.stop().await;
}

#[tokio::test]
async fn at_max_connections_a_further_connection_is_served_only_once_one_closes() {
    let echo = Upstream::start().await;
    // Two workers, so two accept loops race for the last place.
    let toml = "[upstreams.echo]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"echo\"\n\n\
                [limits]\nmax_connections = 2\n\n[runtime]\nworker_threads = 2\n";
    let gw = Gateway::start(toml, Some(&echo)).await;

    // Two keep-alive clients, served and kept open.
    let mut first = TcpStream::connect(gw.addr()).await.expect("connect");
    let mut second = TcpStream::connect(gw.addr()).await.expect("connect");
    for client in [&mut first, &mut second] {
        client.write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        assert!(read_response(client).await.starts_with("HTTP/1.1 200"));
    }

    // A third waits, unserved (its handshake done by the kernel, its request buffered)...
    let mut third = TcpStream::connect(gw.addr()).await.expect("the kernel still completes the handshake");
    third.write_all(b"GET /waiting HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(1500), third.peek(&mut byte)).await;
    assert!(early.is_err(), "a connection past limits.max_connections was served");

    // ...while the admin listener, apart from the cap, still answers and says why.
    assert_eq!(metric_value(&gw, "airlock_active_connections", &[]).await, 2.0);
    assert_eq!(metric_value(&gw, "airlock_connection_limit", &[]).await, 2.0);
    assert!(metric_value(&gw, "airlock_connection_limit_waits_total", &[]).await >= 1.0);

    // One closes: the waiting client is served.
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(10), read_response(&mut third)).await;
    let answer = served.expect("the waiting connection was not served 10 s after a place freed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("/waiting"), "{answer}");

    // A reload's new cap is on the gauge at once, not at the next connection accepted.
    gw.reload(&toml.replace("max_connections = 2", "max_connections = 5"), Some(&echo)).await.expect("reload");
    assert_eq!(metric_value(&gw, "airlock_connection_limit", &[]).await, 5.0);
    gw.stop().await;
}

/// `limits.max_connections_per_client`: a client address past its limit has its new connection
/// closed at once (and counted), while another address is served, and a place freed is given
/// back.
#[tokio::test]
async fn a_client_past_its_own_connection_limit_is_closed_and_others_are_served() {
    let echo = Upstream::start().await;
    let toml = "[upstreams.echo]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"echo\"\n\n\
                [limits]\nmax_connections_per_client = 2\n";
    let gw = Gateway::start(toml, Some(&echo)).await;
    let addr = gw.addr();
    let from = move |source: &'static str| async move {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(format!("{source}:0").parse().expect("address")).expect("bind the client's address");
        socket.connect(addr).await.expect("connect")
    };
    let served = |mut client: TcpStream, path: &'static str| async move {
        client.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("write");
        let answer = read_response(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        client
    };
    let first = served(from("127.0.0.1").await, "/one").await;
    let _second = served(from("127.0.0.1").await, "/two").await;

    // The third from the same address: closed without an answer.
    let mut third = from("127.0.0.1").await;
    let _ = third.write_all(b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "a connection over the client's limit got an answer: {read:?}");
    assert_eq!(metric_value(&gw, "airlock_connections_cut_total", &[("reason", "client_limit")]).await, 1.0);

    // Another address is not held to the first one's count.
    let _other = served(from("127.0.0.2").await, "/other").await;
    // A place given back: the first address is served again.
    drop(first);
    let again = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut client = from("127.0.0.1").await;
            let _ = client.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let mut head = [0u8; 12];
            // The server may not have seen the first close yet: try again until it has.
            if client.read_exact(&mut head).await.is_ok() {
                return head;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("served again after a connection closed");
    assert_eq!(&again, b"HTTP/1.1 200");
    gw.stop().await;
}

/// An upstream that answers `/slow...` after 3 s (long after the client resets it) and anything
/// else at once.
async fn slow_upstream() -> Upstream {
    Upstream::with_handler(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path().starts_with("/slow") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Response::new(Full::new(Bytes::from_static(b"ok")))
    })
    .await
}

/// An HTTP/2 (prior knowledge) connection to `addr`: the request sender, and the connection's
/// task, which ends when the connection does.
async fn h2_connection(addr: SocketAddr) -> (hyper::client::conn::http2::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

/// Opens `batches` x `per_batch` streams asking `/slow`, and resets each batch once all its
/// requests have reached `upstream` (so the gateway has accepted every stream and is waiting
/// for its answer: not a reset h2's own guard counts). Returns how many streams were opened;
/// stops early once the connection is closed or takes no more streams.
async fn open_and_reset(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    upstream: &Upstream,
    batches: usize,
    per_batch: usize,
) -> usize {
    let mut opened = 0;
    for _ in 0..batches {
        let expected = upstream.hits() + per_batch;
        let mut batch = Vec::new();
        for _ in 0..per_batch {
            if sender.ready().await.is_err() {
                return opened;
            }
            let request = Request::get(format!("http://{addr}/slow")).body(Full::default()).expect("request");
            batch.push(sender.send_request(request));
            opened += 1;
        }
        // Bounded: a connection that was closed, or refuses new streams after a GOAWAY, never
        // gets them there.
        let deadline = Instant::now() + Duration::from_secs(5);
        while upstream.hits() < expected && !sender.is_closed() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if upstream.hits() < expected {
            return opened;
        }
        // Dropping a response future before its answer resets its stream (RST_STREAM CANCEL).
        drop(batch);
    }
    opened
}

#[tokio::test]
async fn an_http2_client_that_resets_most_streams_before_their_answer_gets_a_goaway() {
    let upstream = slow_upstream().await;
    let toml = "[upstreams.slow]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"slow\"\n";
    let gw = Gateway::start(toml, Some(&upstream)).await;
    let addr = gw.addr();

    // A client that answers most of its requests and cancels some is left alone: 100 answered,
    // then 90 reset (fewer than half of the 190).
    let (mut polite, polite_conn) = h2_connection(addr).await;
    for i in 0..100 {
        polite.ready().await.expect("ready");
        let request = Request::get(format!("http://{addr}/fast/{i}")).body(Full::default()).expect("request");
        let response = polite.send_request(request).await.expect("answered");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(open_and_reset(&mut polite, addr, &upstream, 3, 30).await, 90);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!polite_conn.is_finished(), "a client cancelling fewer than half of its requests was cut off");
    polite.ready().await.expect("still open");
    let request = Request::get(format!("http://{addr}/fast/again")).body(Full::default()).expect("request");
    assert_eq!(polite.send_request(request).await.expect("still served").status(), 200);

    // Up to 200 streams opened and reset once the gateway has sent each upstream, past h2's own
    // guard (which counts only streams reset before the server accepts them).
    let (mut abusive, abusive_conn) = h2_connection(addr).await;
    let opened = open_and_reset(&mut abusive, addr, &upstream, 8, 25).await;
    assert!(opened >= 100, "the connection was refused after {opened} streams, before any judgement");
    // GOAWAY, then the connection is closed (streams begun get at most a second).
    let closed = tokio::time::timeout(Duration::from_secs(8), abusive_conn).await;
    assert!(closed.is_ok(), "an HTTP/2 connection resetting every stream was still open 8 s later ({opened} streams)");
    let request = Request::get(format!("http://{addr}/fast/after")).body(Full::default()).expect("request");
    assert!(abusive.send_request(request).await.is_err(), "a request after the GOAWAY was served");

    assert_eq!(metric_value(&gw, "airlock_connections_cut_total", &[("reason", "early_resets")]).await, 1.0);
    assert!(!polite_conn.is_finished(), "the other client's connection is untouched");
    gw.stop().await;
}
