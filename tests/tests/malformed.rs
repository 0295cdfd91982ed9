//! Malformed and ambiguous HTTP/1.1 sent over raw sockets: each is answered with a 4xx (or the
//! connection is closed) and nothing of it reaches the upstream, so no request is ever forwarded
//! with a framing the upstream could read differently (request smuggling).

use std::time::Duration;

use airlock_tests::{Gateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/"
upstream = "backend"
"#;

/// The whole answer the gateway wrote to raw bytes ("" if it closed without answering).
async fn send_raw_full(gw: &Gateway, bytes: &[u8]) -> String {
    airlock_tests::raw_exchange(gw.addr(), bytes).await
}

/// What the gateway answered to raw bytes: the status line, or "" if it closed without answering.
async fn send_raw(gw: &Gateway, bytes: &[u8]) -> String {
    send_raw_full(gw, bytes).await.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn ambiguous_and_malformed_requests_are_refused_and_never_forwarded() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(CONFIG, Some(&upstream)).await;
    let cases: [(&str, &[u8]); 7] = [
        ("two different Content-Lengths", b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcde"),
        ("a Content-Length list", b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3, 5\r\n\r\nabcde"),
        ("a non-numeric Content-Length", b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +3\r\n\r\nabc"),
        ("obs-fold continuation line", b"GET / HTTP/1.1\r\nhost: x\r\nx-folded: a\r\n b\r\n\r\n"),
        ("a transfer coding other than chunked last", b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("a space before the header colon", b"GET / HTTP/1.1\r\nhost: x\r\nx-bad : v\r\n\r\n"),
        ("a NUL in a header value", b"GET / HTTP/1.1\r\nhost: x\r\nx-bad: a\0b\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        let status = send_raw(&gw, bytes).await;
        let refused = status.is_empty() || status.starts_with("HTTP/1.1 4");
        assert!(refused, "{what}: answered `{status}`");
        assert_eq!(upstream.hits(), 0, "{what}: reached the upstream");
    }
    // And a well-formed request still goes through on a fresh connection.
    let ok = send_raw(&gw, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(upstream.hits(), 1);

    // Content-Length and Transfer-Encoding together: Transfer-Encoding frames it (RFC 9112 6.3),
    // the upstream gets the body that framing says without the Content-Length, and the
    // connection is closed after the answer (asked to stay open), so nothing behind the request
    // can be read as another one.
    let started = std::time::Instant::now();
    let text = send_raw_full(
        &gw,
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 40\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3), "the connection stayed open: {:?}", started.elapsed());
    let echo: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n").map_or("", |(_, b)| b)).expect("echo JSON");
    assert_eq!(echo["headers"].get("content-length"), None, "{echo}");
    assert_eq!(echo["body"], "abc", "the body is what the chunked framing says");
    gw.stop().await;
}

/// An upstream whose answers pause mid-body (600 ms after their first bytes), each the request
/// line it answers: `/nolen` with no length (the body ends with the connection), `/early` at
/// once and whole, without reading the request's body, anything else with `Content-Length`. Returns its address and the request lines it was sent.
async fn pausing_upstream() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lines = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { continue };
            let lines = lines.clone();
            tokio::spawn(async move {
                let Some(head) = airlock_tests::read_request_head(&mut tcp).await else { return };
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
                lines.lock().expect("lines").push(line.clone());
                let body = format!("answer to {line}");
                if line.contains(" /early ") {
                    // Answered before the request's body is read, which is left unread while
                    // the connection stays open (the gateway goes on sending it meanwhile), then
                    // closed (the gateway drops the rest of the body).
                    let _ = tcp.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(350)).await;
                    return;
                }
                let (first, rest) = body.split_at(4);
                let framing = if line.contains(" /nolen ") { String::new() } else { format!("content-length: {}\r\n", body.len()) };
                let _ = tcp.write_all(format!("HTTP/1.1 200 OK\r\n{framing}\r\n{first}").as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(600)).await;
                let _ = tcp.write_all(rest.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// An exchange that ends its connection ends it, even when its answer pauses long enough for
/// the idle connection's parking to look at it: what the client sent after it (here pipelined
/// right behind it) is never read as another request, nor sent upstream. Parking once stopped
/// hyper mid-answer and served the bytes after a `Content-Length` + `Transfer-Encoding` request
/// (a smuggling defence bypassed) or a `Connection: close` one; an HTTP/1.0 keep-alive client
/// got a body with no length on a connection kept open (the next answer glued to it).
#[tokio::test]
async fn a_last_exchange_ends_its_connection_even_when_its_answer_pauses() {
    let (addr, seen) = pausing_upstream().await;
    let config = CONFIG.replace("{upstream}", &addr.to_string());
    let gw = Gateway::start(&config, None).await;
    let pipelined = "GET /SMUGGLED HTTP/1.1\r\nhost: x\r\n\r\n";
    let cases = [
        ("Content-Length and Transfer-Encoding", format!("POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{pipelined}"), "HTTP/1.1 200"),
        ("Connection: close", format!("GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n{pipelined}"), "HTTP/1.1 200"),
        ("HTTP/1.0 without keep-alive", format!("GET /slow HTTP/1.0\r\nhost: x\r\n\r\n{pipelined}"), "HTTP/1.0 200"),
        ("HTTP/1.0 keep-alive, a body of no length", format!("GET /nolen HTTP/1.0\r\nhost: x\r\nconnection: keep-alive\r\n\r\n{pipelined}"), "HTTP/1.0 200"),
    ];
    for (what, request, status) in cases {
        seen.lock().expect("lines").clear();
        let started = std::time::Instant::now();
        let text = send_raw_full(&gw, request.as_bytes()).await;
        assert!(text.starts_with(status), "{what}: {text}");
        assert_eq!(text.matches(" 200 OK\r\n").count(), 1, "{what}: one answer only: {text}");
        assert!(!text.contains("SMUGGLED"), "{what}: {text}");
        assert!(started.elapsed() < Duration::from_secs(4), "{what}: the connection stayed open: {:?}", started.elapsed());
        let sent = seen.lock().expect("lines").clone();
        assert_eq!(sent.len(), 1, "{what}: only the request itself went upstream: {sent:?}");
        if what.contains("no length") {
            let head = text.split_once("\r\n\r\n").map_or("", |(h, _)| h).to_ascii_lowercase();
            assert!(!head.contains("keep-alive") && !head.contains("content-length"), "{what}: its end is the close, and it says so: {head}");
            assert!(text.ends_with("answer to GET /nolen HTTP/1.1"), "{what}: the whole body: {text}");
        }
    }
    // A request whose answer ends before its body does (the upstream answered without reading
    // it), the client pausing mid-body: the connection is not handed over mid-request, so the
    // rest of the body is never read as a request. Chunked with a Content-Length, and a plain
    // Content-Length body.
    let halves = [
        ("POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n", pipelined.to_owned()),
        ("POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 64\r\n\r\nhello", format!("{pipelined:<59}")),
    ];
    for (first, rest) in halves {
        seen.lock().expect("lines").clear();
        let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
        tcp.write_all(first.as_bytes()).await.expect("write");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = tcp.write_all(rest.as_bytes()).await;
        let mut text = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut text)).await;
        let text = String::from_utf8_lossy(&text);
        let answers = text.match_indices("HTTP/1.1 ").filter(|(at, _)| text[at + 9..].starts_with(|c: char| c.is_ascii_digit())).count();
        assert_eq!(answers, 1, "{first:?}: one answer only: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = seen.lock().expect("lines").clone();
        assert_eq!(sent, ["POST /early HTTP/1.1"], "{first:?}: nothing from the body went upstream as a request");
    }

    // A keep-alive connection is still parked and served between its exchanges.
    let text = send_raw_full(&gw, b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\nGET /second HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(text.contains("answer to GET /second"), "{text}");
    gw.stop().await;
}

/// Sends `bytes`, then closes the writing half, and reads the whole answer.
async fn send_then_half_close(gw: &Gateway, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn malformed_chunked_body_is_a_client_error_not_an_upstream_one() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(CONFIG, Some(&upstream)).await;
    let upstream_errors = || async {
        let mut total = 0.0;
        for kind in ["unavailable", "timeout"] {
            total += airlock_tests::metric_value(&gw, "airlock_upstream_errors_total", &[("upstream", "backend"), ("kind", kind)]).await;
        }
        total
    };

    // An invalid chunk size line: the body is streamed upstream, and fails while being sent.
    let text =
        send_raw_full(&gw, b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n").await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 400"), "a malformed body is the client's fault: {text}");
    assert!(head.to_ascii_lowercase().contains("\r\nconnection: close"), "the connection is closed after it: {head}");
    let error: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(error["status"], 400, "{error}");
    assert_eq!(error["error"], "bad_request", "{error}");
    assert!(error["message"].as_str().unwrap_or_default().contains("chunk"), "{error}");
    assert!(error["request_id"].is_string(), "{error}");
    assert_eq!(upstream_errors().await, 0.0, "not counted against the upstream");
    let client_errors = airlock_tests::metric_value(&gw, "airlock_requests_total", &[("route", "route-0"), ("status", "4xx")]).await;
    assert_eq!(client_errors, 1.0, "counted as a client error");
    let server_errors = airlock_tests::metric_value(&gw, "airlock_requests_total", &[("route", "route-0"), ("status", "5xx")]).await;
    assert_eq!(server_errors, 0.0);

    // A client that stops mid-body (declared length, or chunked) and closes: never a 502 blamed on
    // the upstream.
    let cases: [(&str, &[u8]); 2] = [
        ("content-length", b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc"),
        ("chunked", b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"),
    ];
    for (what, bytes) in cases {
        let answer = send_then_half_close(&gw, bytes).await;
        let status = answer.lines().next().unwrap_or_default();
        assert!(status.is_empty() || status.starts_with("HTTP/1.1 4"), "{what}: answered `{status}`");
        assert_eq!(upstream_errors().await, 0.0, "{what}: counted against the upstream");
    }
    let server_errors = airlock_tests::metric_value(&gw, "airlock_requests_total", &[("route", "route-0"), ("status", "5xx")]).await;
    assert_eq!(server_errors, 0.0, "no 5xx recorded for client aborts");

    // And the gateway keeps serving.
    let ok = send_raw(&gw, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    gw.stop().await;
}

const PATHS_CONFIG: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

# Stands for a protected prefix: whatever reaches this route is refused.
[[routes]]
id = "admin"
path_prefix = "/admin"
[[routes.plugins]]
plugin = "builtin:respond"
config = { status = 403, body = "admin only" }

[[routes]]
id = "users"
path = "/users/{id}"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { set = { "x-user-id" = "${param.id}" } } }

[[routes]]
id = "open"
path_prefix = "/"
upstream = "backend"
"#;

/// Status line and body of a raw `GET target` (one request, connection closed after it).
async fn get_raw(gw: &Gateway, target: &str) -> (String, String) {
    let text = send_raw_full(gw, format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[tokio::test]
async fn the_path_routed_on_is_the_path_forwarded() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(PATHS_CONFIG, Some(&upstream)).await;

    // Dot segments (plain or percent-encoded) and doubled slashes reach the route they resolve
    // to, never a looser one that an upstream would then resolve to the protected path.
    // So do encoded unreserved characters (`%61` is `a`, RFC 3986 6.2.2.2).
    for target in [
        "/public/../admin/secret",
        "/public/%2e%2e/admin/secret",
        "/public/%2E./admin",
        "//admin/secret",
        "/public/./x/../../admin",
        "/%61dmin/secret",
        "/adm%69n",
    ] {
        let (status, body) = get_raw(&gw, target).await;
        assert!(status.starts_with("HTTP/1.1 403"), "{target}: {status}");
        assert_eq!(body, "admin only", "{target}");
    }
    assert_eq!(upstream.hits(), 0, "none of them was forwarded");

    // A path climbing above the root, hiding a dot segment from the gateway behind an encoded
    // slash or a `;` parameter, or holding a raw backslash, is refused rather than guessed at.
    for (target, reason) in [
        ("/../etc/passwd", "above the root"),
        ("/public/%2e%2e/%2e%2e/etc/passwd", "above the root"),
        ("/public/..%2Fadmin/secret", "hides"),
        ("/public/..%5cadmin/secret", "hides"),
        ("/public/..;/admin/secret", "hides"),
        ("/public/a;../admin/secret", "hides"),
        // WHATWG URL parsers (Node, Deno, Bun) and IIS read `\` as `/`.
        ("/admin\\secret", "raw `\\`"),
        ("/public/..\\admin/secret", "raw `\\`"),
        // C-based servers and file APIs end the path at a NUL (nginx refuses it too).
        ("/public/report.pdf%00.jpg", "encoded NUL"),
    ] {
        let (status, body) = get_raw(&gw, target).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{target}: {status}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error body");
        assert_eq!(error["error"], "bad_request", "{target}: {error}");
        assert!(error["message"].as_str().unwrap_or_default().contains(reason), "{target}: {error}");
    }
    assert_eq!(upstream.hits(), 0, "none of them was forwarded");

    // What is forwarded is the normalized path; the query is the client's, byte for byte.
    let (status, body) = get_raw(&gw, "/public/./a//b/../c?q=/../x&r=%2e%2e").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echo["path"], "/public/a/c");
    assert_eq!(echo["query"], "q=/../x&r=%2e%2e");

    // Route params and the plugins see the same path as the upstream.
    let (status, body) = get_raw(&gw, "/elsewhere/../users/42").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echo["path"], "/users/42");
    assert_eq!(echo["headers"]["x-user-id"], serde_json::json!(["42"]));

    // Anything else is left as the client sent it: other encodings, an encoded slash that is
    // data, dots inside a segment (encoded ones decoded, as every unreserved character is).
    for (target, forwarded) in [
        ("/files/a%2Fb/caf%C3%A9", "/files/a%2Fb/caf%C3%A9"),
        ("/v1/x..y/%2e%2e%2e", "/v1/x..y/..."),
        ("/a.b/.hidden", "/a.b/.hidden"),
        // A segment with a stray `%` is not decoded: `%%361dmin` would read `%61dmin`, which the
        // upstream decodes once more, to the `admin` the route never saw.
        ("/%%361dmin/secret", "/%%361dmin/secret"),
    ] {
        let (status, body) = get_raw(&gw, target).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{target}: {status}");
        let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
        assert_eq!(echo["path"], forwarded);
    }

    // HTTP/2 requests take the same way.
    let client = airlock_tests::HttpClient::http2();
    let r = client.get(&gw.url("/public/../admin/secret")).await;
    assert_eq!(r.status, 403);
    let r = client.get(&gw.url("/public/%2e%2e/%2e%2e/x")).await;
    assert_eq!(r.status, 400);
    assert_eq!(upstream.hits(), 6, "only the six normal requests were forwarded");
    gw.stop().await;
}

/// The pentest's config under `[limits] encoded_slashes = "<mode>"`: a catch-all route to the
/// app, and a route behind key-auth.
fn reports_with_slashes(mode: &str) -> String {
    format!(
        r#"
[limits]
encoded_slashes = "{mode}"

[upstreams.app]
targets = ["{{upstream}}"]

[[consumers]]
id = "alice"
credentials = {{ keys = ["secret-key"] }}

[[routes]]
id = "public"
path_prefix = "/"
upstream = "app"

[[routes]]
id = "reports"
path = "/reports/{{id}}"
methods = ["GET"]
upstream = "app"
[[routes.plugins]]
plugin = "builtin:key-auth"
"#
    )
}

/// Status line and body of a raw `GET target` with the key-auth key.
async fn get_raw_with_key(gw: &Gateway, target: &str) -> (String, String) {
    let request = format!("GET {target} HTTP/1.1\r\nhost: x\r\nx-api-key: secret-key\r\nconnection: close\r\n\r\n");
    let text = send_raw_full(gw, request.as_bytes()).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// The encoded slashes and backslashes (both cases) the setting is about.
const SLASHED: [&str; 4] = ["/reports%2F7", "/reports%2f7", "/reports%5C7", "/reports%5c7"];

#[tokio::test]
async fn encoded_slashes_are_kept_by_default_as_data_in_one_segment() {
    // As before: `/reports%2F7` is one segment, so route `public` takes it and forwards it as it
    // came (an upstream that keeps it whole, as this one does, serves no report for it; a WSGI
    // one decodes it to `/reports/7`: hence the other modes).
    let upstream = Upstream::start().await;
    for config in [reports_with_slashes("keep"), reports_with_slashes("keep").replace("encoded_slashes = \"keep\"", "")] {
        let gw = Gateway::start(&config, Some(&upstream)).await;
        for target in SLASHED {
            let (status, body) = get_raw(&gw, target).await;
            assert!(status.starts_with("HTTP/1.1 200"), "{target}: {status}");
            let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
            assert_eq!(echo["path"], target, "forwarded as sent");
        }
        gw.stop().await;
    }
}

#[tokio::test]
async fn encoded_slashes_are_refused_with_reject_and_never_forwarded() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&reports_with_slashes("reject"), Some(&upstream)).await;
    for target in SLASHED.into_iter().chain(["/files/a%2Fb", "/public/..%2Fadmin"]) {
        let (status, body) = get_raw_with_key(&gw, target).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{target}: {status}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error body");
        assert_eq!((error["status"].as_u64(), error["error"].as_str()), (Some(400), Some("bad_request")), "{target}: {error}");
        assert!(error["message"].as_str().unwrap_or_default().contains("encoded slash"), "{target}: {error}");
        assert!(error["request_id"].is_string(), "{error}");
    }
    let r = airlock_tests::HttpClient::http2().get(&gw.url("/reports%2F7")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (400, Some("bad_request")));
    assert_eq!(upstream.hits(), 0, "none of them was forwarded");
    // Other paths go on as before, other encodings included.
    let (status, _) = get_raw_with_key(&gw, "/reports/7").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let (status, body) = get_raw(&gw, "/files/a%20b%252F").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).expect("echo JSON")["path"], "/files/a%20b%252F");
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn encoded_slashes_are_routed_as_separators_with_decode() {
    // Decoded before routing, as the upstream will: the protected route is the one matched.
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&reports_with_slashes("decode"), Some(&upstream)).await;
    for target in SLASHED.into_iter().chain(["/public%2F..%2Freports%2F7", "/x/..%2Freports/7"]) {
        let (status, _) = get_raw(&gw, target).await;
        assert!(status.starts_with("HTTP/1.1 401"), "{target}: {status}");
        let (status, body) = get_raw_with_key(&gw, target).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{target}: {status}");
        let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
        assert_eq!(echo["path"], "/reports/7", "{target}: forwarded as routed");
    }
    assert_eq!(upstream.hits(), SLASHED.len() + 2, "only the requests with the key");
    // Dot segments are resolved after decoding: one that climbs above the root is still refused.
    let (status, body) = get_raw(&gw, "/a%2F..%2F..%2Fetc%2Fpasswd").await;
    assert!(status.starts_with("HTTP/1.1 400") && body.contains("above the root"), "{status} {body}");
    let r = airlock_tests::HttpClient::http2().get(&gw.url("/reports%2F7")).await;
    assert_eq!(r.status, 401);
    assert_eq!(upstream.hits(), SLASHED.len() + 2);
    gw.stop().await;
}
