//! HTTP semantics an intermediary owes both sides (RFC 9110, 9112, 9113), each found by probing
//! the gateway with hand-written requests and misbehaving upstreams: a response framed both
//! ways, a status outside 100-599, `Cookie` split by an HTTP/2 client, and the host a request
//! names (absolute form, duplicated or malformed `Host`).

use std::net::SocketAddr;
use std::time::Duration;

use airlock_tests::{Gateway, HttpClient, Upstream};

/// Every path to the test echo upstream, which answers with what it received.
const ECHO: &str = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n";

/// Every path to the raw upstream at `upstream`.
fn one_route(upstream: SocketAddr) -> String {
    format!("[upstreams.raw]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"raw\"\n")
}

#[tokio::test]
async fn a_response_framed_both_ways_is_read_by_its_chunks_and_loses_its_length() {
    // RFC 9112 6.3: Transfer-Encoding wins, and a forwarder drops the Content-Length. Kept, it
    // cut the client's body to 3 bytes (or padded it with a wait for 10) on a kept connection.
    let (addr, _task) = airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").await;
    let gw = Gateway::start(&one_route(addr), None).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        let reply = client.get(&gw.url("/both")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "hello", "{:?}", reply.version);
        assert_ne!(reply.header("content-length").as_deref(), Some("3"));
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_content_length_repeated_by_the_upstream_goes_on_once() {
    // RFC 9110 8.6: `2, 2` (or two `2` lines) is the number 2. Sent on as it came, an HTTP/2
    // client refused the whole answer (a malformed field) and an HTTP/1.1 one got a list.
    for answer in [&b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi"[..], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi"] {
        let (addr, _task) = airlock_tests::raw_upstream(answer).await;
        let gw = Gateway::start(&one_route(addr), None).await;
        for client in [HttpClient::http1(), HttpClient::http2()] {
            let request = http::Request::get(gw.url("/twice")).body(Default::default()).expect("request");
            let reply = client.try_send(request).await.unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(answer)));
            assert_eq!(reply.status, 200);
            assert_eq!(reply.text(), "hi", "{:?}", reply.version);
            assert_eq!(reply.header_all("content-length"), ["2"], "{:?}", reply.version);
        }
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_response_body_the_upstream_stops_sending_is_cut_off_after_body_idle_ms() {
    // 3 of 10 bytes, then silence with the connection open: the client was held until the
    // upstream closed (here 60 s), however long that took.
    let (addr, _task) = airlock_tests::raw_upstream_holding(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", Duration::from_secs(60)).await;
    let toml = format!("{}\n[timeouts]\nbody_idle_ms = 300\n", one_route(addr));
    let gw = Gateway::start(&toml, None).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        let request = http::Request::get(gw.url("/stalls")).body(Default::default()).expect("request");
        let outcome = tokio::time::timeout(Duration::from_secs(20), client.try_send(request)).await;
        let Ok(result) = outcome else { panic!("the client was still held after 20 s") };
        assert!(result.is_err(), "a cut-off body is not a complete answer: {result:?}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_status_outside_100_to_599_is_a_502() {
    let (addr, _task) = airlock_tests::raw_upstream(b"HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\nok").await;
    let gw = Gateway::start(&one_route(addr), None).await;
    let reply = HttpClient::http1().get(&gw.url("/weird")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    // Which status it was is in the gateway's warning line; the client gets nginx's generic 502.
    assert_eq!(reply.json()["error"], "upstream_unavailable", "{}", reply.text());
    assert!(!reply.text().contains("999"), "the upstream's misbehaviour is not told to clients: {}", reply.text());
    gw.stop().await;
}

#[tokio::test]
async fn cookies_split_by_an_http2_client_reach_an_http1_upstream_as_one_field() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ECHO, Some(&upstream)).await;
    let reply = HttpClient::http2().request("GET", &gw.url("/echo"), &[("cookie", "a=1"), ("cookie", "b=2")], b"").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("cookie"), vec!["a=1; b=2".to_owned()], "RFC 9113 8.2.3");
    gw.stop().await;
}

#[tokio::test]
async fn a_get_with_a_chunked_body_reaches_the_upstream_with_it() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ECHO, Some(&upstream)).await;
    let answer = exchange(&gw, b"GET /search HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nBODY\r\n0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""body":"BODY""#), "the body went upstream: {answer}");
    // A GET without a body still goes without one (no empty chunked body).
    let reply = HttpClient::http1().get(&gw.url("/plain")).await;
    assert!(reply.upstream_header("transfer-encoding").is_empty(), "{}", reply.text());
    gw.stop().await;
}

const HOSTS: &str = r#"
[[routes]]
id = "public"
hosts = ["public.example"]
path_prefix = "/"
[[routes.plugins]]
plugin = "builtin:respond"
config = { status = 200, body = "public" }

[[routes]]
id = "internal"
hosts = ["internal.example"]
path_prefix = "/"
[[routes.plugins]]
plugin = "builtin:respond"
config = { status = 200, body = "internal" }
"#;

/// Sends each of `requests` and asserts an answer whose status line starts with one of
/// `statuses` and whose text names one of `why` (the error says why).
async fn each_refused_saying(gw: &Gateway, requests: &[&[u8]], statuses: &[&str], why: &[&str]) {
    for request in requests {
        let answer = exchange(gw, request).await;
        assert!(statuses.iter().any(|s| answer.starts_with(s)), "{}: {answer}", String::from_utf8_lossy(request));
        assert!(why.iter().any(|w| answer.contains(w)), "the error says why: {answer}");
    }
}

/// Sends `request` (which asks to close the connection after it) and reads the whole answer.
/// RFC 9113 8.3.1: an http(s) request carries `:authority` or `Host`. One with neither was
/// routed and proxied (h2 drops the `:scheme` of a request without `:authority`, so it arrived
/// as a bare `GET /`), where HTTP/1.1 without `Host` is a 400.
#[tokio::test]
async fn an_http2_request_naming_no_host_is_a_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ECHO, Some(&upstream)).await;
    // No HTTP/2 client library sends it: the frames by hand. The preface, empty SETTINGS, and
    // HEADERS on stream 1 (END_STREAM | END_HEADERS) of `:method GET`, `:scheme http`, `:path /`
    // from HPACK's static table (indices 2, 6, 4).
    let mut sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    sent.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    sent.extend_from_slice(&[0, 0, 3, 0x1, 0x5, 0, 0, 0, 1, 0x82, 0x86, 0x84]);
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    tcp.write_all(&sent).await.expect("write");
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut head = [0u8; 9];
            tcp.read_exact(&mut head).await.expect("a frame");
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.expect("its payload");
            let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
            if stream == 1 && (head[3] == 0x1 || head[3] == 0x3) {
                return (head[3], payload);
            }
        }
    })
    .await
    .expect("an answer to stream 1");
    // A HEADERS frame whose first field is `:status` from the static table: 0x8c is 400
    // (0x88 would be 200); not a reset stream (type 3).
    assert_eq!((answer.0, answer.1.first().copied()), (0x1, Some(0x8c)), "{answer:?}");
    assert_eq!(upstream.hits(), 0, "not proxied");
    drop(tcp);
    gw.stop().await;
}

async fn exchange(gw: &Gateway, request: &[u8]) -> String {
    airlock_tests::raw_exchange(gw.addr(), request).await
}

#[tokio::test]
async fn the_host_is_the_targets_authority_and_one_well_formed_host_field() {
    let gw = Gateway::start(HOSTS, None).await;
    let answer = exchange(&gw, b"GET /x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("public"), "{answer}");

    // A fully qualified name's trailing dot is the same host: it gets the host's route (and its
    // plugins), not a looser one, over HTTP/1.1 as in an absolute-form target.
    for request in [
        &b"GET /x HTTP/1.1\r\nHost: internal.example.\r\nConnection: close\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: INTERNAL.example.:8080\r\nConnection: close\r\n\r\n",
        b"GET http://internal.example./x HTTP/1.1\r\nHost: internal.example.\r\nConnection: close\r\n\r\n",
    ] {
        let answer = exchange(&gw, request).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("internal"), "{}: {answer}", String::from_utf8_lossy(request));
    }

    // A lower-case method would miss a route limited to GET (and its plugins) and be served as
    // GET by upstreams that upper-case it (Django, Flask): refused, as nginx does.
    for request in [&b"get /x HTTP/1.1\r\nHost: internal.example\r\n\r\n"[..], b"Post /x HTTP/1.1\r\nHost: internal.example\r\n\r\n"] {
        let answer = exchange(&gw, request).await;
        assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("lower-case"), "{}: {answer}", String::from_utf8_lossy(request));
    }

    // RFC 9112 3.2.2: an absolute-form target's authority is the host; `Host` is ignored.
    let answer = exchange(&gw, b"GET http://internal.example/x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("internal"), "{answer}");

    // A forward proxy's tunnel is not an API route.
    let answer = exchange(&gw, b"CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 501") && answer.contains("connect_not_served"), "{answer}");

    // RFC 9112 3.2: an HTTP/1.1 request without Host, a second Host, or one that is not
    // host[:port] (an empty one included: an http target has a host, RFC 9110 4.2.1), is a 400. HTTP/1.0 need not name its host (no route here answers none).
    let answer = exchange(&gw, b"GET /x HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 404") || answer.starts_with("HTTP/1.1 404"), "{answer}");
    let bad_hosts = [
        &b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: evil@public.example\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: public.example, internal.example\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: internal.example:abc\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost:\r\n\r\n",
        b"GET /x HTTP/1.0\r\nHost: \r\n\r\n",
    ];
    each_refused_saying(&gw, &bad_hosts, &["HTTP/1.1 400", "HTTP/1.0 400"], &["Host"]).await;
    // The target's authority is held to the same rules: user info (which missed the `hosts`
    // route and reached the upstream as its `Host`) and an empty host are a 400.
    let bad_authorities = [
        &b"GET http://evil.example@internal.example/x HTTP/1.1\r\nHost: internal.example\r\n\r\n"[..],
        b"GET http://user:pw@internal.example/x HTTP/1.1\r\nHost: internal.example\r\n\r\n",
        b"GET http://:80/x HTTP/1.1\r\nHost: internal.example\r\n\r\n",
    ];
    each_refused_saying(&gw, &bad_authorities, &["HTTP/1.1 400"], &["authority"]).await;
    // The bad requests cost nothing but their own answers.
    let answer = exchange(&gw, b"GET /x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("public"), "{answer}");
    gw.stop().await;
}

/// Where no route names a host, routing does not read it, but the host rules still hold: a
/// missing, second or malformed `Host` is a 400 that says why, and a well-formed one reaches
/// the upstream as the client sent it.
#[tokio::test]
async fn without_host_routes_the_host_rules_still_hold() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ECHO, Some(&upstream)).await;
    let bad_hosts = [
        &b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: evil@a.example\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a.example:abc\r\n\r\n",
    ];
    each_refused_saying(&gw, &bad_hosts, &["HTTP/1.1 400"], &["Host"]).await;
    each_refused_saying(&gw, &[b"GET http://user:pw@a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n"], &["HTTP/1.1 400"], &["authority"]).await;
    let answer = exchange(&gw, b"GET /x HTTP/1.1\r\nHost: API.Example.com:8080\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""x-forwarded-host":["API.Example.com:8080"]"#), "{answer}");
    gw.stop().await;
}

/// An HTTP/2 client names the host in `:authority`: held to the same rules as an HTTP/1.1
/// target's authority (user info there missed the `hosts` route), and routed by it.
#[tokio::test]
async fn an_http2_authority_is_held_to_the_host_rules() {
    let gw = Gateway::start(HOSTS, None).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let mut answer = |uri: &'static str| {
        let request = http::Request::get(uri).body(http_body_util::Empty::<bytes::Bytes>::new()).expect("request");
        let sent = sender.send_request(request);
        async move {
            let response = sent.await.expect("an answer");
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = answer("http://internal.example/x").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "internal"));
    for uri in ["http://evil.example@internal.example/x", "http://user:pw@public.example/x"] {
        let (status, body) = answer(uri).await;
        assert_eq!(status, 400, "{uri}: {body}");
        assert!(body.contains("authority"), "the error says why: {body}");
    }
    // The connection still serves.
    let (status, body) = answer("http://public.example/x").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "public"));
    // RFC 9113 8.2.1: a field value with whitespace at either end makes the request malformed
    // (HTTP/1.1 trims it; passed on, a plugin and the upstream would read two values).
    for value in [" padded", "padded\t"] {
        let request = http::Request::get("http://internal.example/x")
            .header("x-signed", value)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("an answer");
        let (status, body) = (response.status(), http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes());
        assert_eq!(status, 400, "{value:?}: {}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("x-signed"), "names the field");
    }
    gw.stop().await;
}

/// A HEAD's answer has no body (RFC 9110 9.3.2). Over HTTP/2 bytes after its headers are a
/// protocol error, so a plugin's answer and the gateway's own errors (no route, a dead
/// upstream) must say their length and send nothing: the HTTP/2 client got a reset before.
#[tokio::test]
async fn a_head_answered_by_a_plugin_or_the_gateway_has_no_body_over_either_protocol() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let config = format!(
        "[[routes]]\npath = \"/answered\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\nconfig = {{ status = 200, body = \"hello\" }}\n\n\
         [upstreams.dead]\ntargets = [\"{dead}\"]\n\n[[routes]]\npath = \"/dead\"\nupstream = \"dead\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    for client in [HttpClient::http2(), HttpClient::http1()] {
        for (path, status, length) in [("/answered", 200, Some("5")), ("/nowhere", 404, None), ("/dead", 502, None)] {
            let request = http::Request::head(gw.url(path)).body(http_body_util::Full::default()).expect("request");
            let reply = client.try_send(request).await.unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
            assert_eq!(reply.status, status, "{path}");
            assert!(reply.body.is_empty(), "{path}: {:?}", reply.body);
            if let Some(length) = length {
                assert_eq!(reply.header("content-length").as_deref(), Some(length), "{path}: the GET's length");
            }
        }
    }
    gw.stop().await;
}

/// A transfer coding other than `chunked` is not taken off by the gateway: a request in one is a
/// 501 (RFC 9112 6.1) and an upstream's answer in one a 502, where before the coded bytes went
/// on unlabelled (`Transfer-Encoding` is hop-by-hop).
#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_refused_both_ways() {
    let (addr, _task) = airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").await;
    let gw = Gateway::start(&one_route(addr), None).await;
    let answer = exchange(
        &gw,
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 501") && answer.contains("unsupported_transfer_coding"), "{answer}");
    assert!(answer.contains("`gzip`"), "names the coding: {answer}");
    let answer = exchange(&gw, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 502") && answer.contains("upstream_bad_encoding"), "{answer}");
    assert!(!answer.contains("hello"), "{answer}");
    gw.stop().await;
}

#[tokio::test]
async fn a_204_205_or_304_carries_no_content_whoever_framed_one() {
    // RFC 9110 8.6, 15.3.5: a 204 has no Content-Length. Passed on, a client that trusts it
    // waits for bytes that never come on a kept connection.
    let (addr, _task) = airlock_tests::raw_upstream(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-From: upstream\r\n\r\n").await;
    let gw = Gateway::start(&one_route(addr), None).await;
    let answer = exchange(&gw, b"DELETE /item HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 204") && answer.contains("x-from: upstream"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("content-length"), "{answer}");
    gw.stop().await;

    // A plugin's answer with a body (`builtin:respond` refuses one in its config; a third
    // party's plugin may send it): the body is dropped for 204 and 205 (RFC 9110 15.3.6: a 205
    // has no content; its length is said as 0) and 304.
    let config: String = airlock_tests::hostile_plugin("status")
        + &[204, 205, 304]
            .map(|status| {
                format!("[[routes]]\npath = \"/{status}\"\n[[routes.plugins]]\nplugin = \"status\"\nconfig = {{ mode = \"status\", count = {status}, body = \"not sent\" }}\n")
            })
            .concat();
    let gw = Gateway::start(&config, None).await;
    for (path, length) in [("/204", None), ("/205", Some("content-length: 0")), ("/304", None)] {
        let answer = exchange(&gw, format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await;
        let status = &path[1..];
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "no content after the head: {answer}");
        let lower = answer.to_ascii_lowercase();
        match length {
            Some(line) => assert!(lower.contains(line), "{answer}"),
            None => assert!(!lower.contains("content-length"), "{answer}"),
        }
    }
    // The connection stays in step: the same client's next request gets its own answer.
    let client = HttpClient::http1();
    for _ in 0..2 {
        assert_eq!(client.get(&gw.url("/205")).await.status, 205);
    }
    gw.stop().await;
}

#[tokio::test]
async fn trace_is_refused_so_headers_added_for_the_upstream_are_never_echoed() {
    // The route adds an upstream credential; a TRACE-echoing upstream (the test upstream echoes
    // every request's headers) would hand it to the client. Over both protocols, no request
    // reaches the upstream.
    let upstream = Upstream::start().await;
    let config = format!(
        "{ECHO}[[routes.plugins]]\nplugin = \"builtin:headers\"\nconfig = {{ request = {{ set = {{ authorization = \"Bearer upstream-secret\" }} }} }}\n"
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let answer = exchange(&gw, b"TRACE /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 501") && answer.contains("trace_not_served"), "{answer}");
    assert!(!answer.contains("upstream-secret"), "{answer}");
    let r = HttpClient::http2().request("TRACE", &gw.url("/x"), &[], b"").await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (501, Some("trace_not_served")));
    assert_eq!(upstream.hits(), 0);
    // Other methods go on as before, with the credential the route adds.
    let r = HttpClient::http1().request("OPTIONS", &gw.url("/x"), &[], b"").await;
    assert_eq!((r.status.as_u16(), r.upstream_header("authorization")), (200, vec!["Bearer upstream-secret".to_owned()]));
    gw.stop().await;
}

#[tokio::test]
async fn options_with_max_forwards_0_is_answered_by_the_gateway_and_others_are_decremented() {
    // RFC 9110 7.6.2: the gateway is the last hop an OPTIONS with Max-Forwards: 0 may reach.
    let upstream = Upstream::start().await;
    let config = format!("{ECHO}\n[[routes]]\npath = \"/only-get\"\nmethods = [\"GET\", \"OPTIONS\"]\nupstream = \"backend\"\n");
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("OPTIONS", &gw.url("/x"), &[("max-forwards", "0")], b"").await;
    assert_eq!((r.status.as_u16(), r.header("allow").as_deref()), (200, Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")));
    assert!(r.header("x-request-id").is_some());
    // A GET route takes HEAD too, and says so (as servers answer a GET handler's 405).
    let r = client.request("OPTIONS", &gw.url("/only-get"), &[("max-forwards", "0")], b"").await;
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD, OPTIONS"));
    assert_eq!(upstream.hits(), 0);
    // Above 0: forwarded, one less.
    let r = client.request("OPTIONS", &gw.url("/x"), &[("max-forwards", "3")], b"").await;
    assert_eq!(r.upstream_header("max-forwards"), ["2"]);
    // Only OPTIONS (and TRACE, refused) are held to it.
    let r = client.request("GET", &gw.url("/x"), &[("max-forwards", "0")], b"").await;
    assert_eq!((r.status.as_u16(), r.upstream_header("max-forwards")), (200, vec!["0".to_owned()]));
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn an_options_ending_at_the_gateway_still_goes_through_the_routes_plugins() {
    // Answered before the plugins, `Max-Forwards: 0` showed a route `ip-restrict` hides (its 404
    // is the no-route one) and skipped authentication.
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/internal"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:ip-restrict"
config = { deny = ["127.0.0.1", "::1"], status = 404 }

[[routes]]
path_prefix = "/private"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"

[[routes]]
path_prefix = "/open"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { x-seen = "yes" } } }

[[consumers]]
id = "alice"
credentials = { keys = ["alice-key"] }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let zero = [("max-forwards", "0")];
    let hidden = client.request("OPTIONS", &gw.url("/internal/x"), &zero, b"").await;
    let missing = client.request("OPTIONS", &gw.url("/nowhere"), &zero, b"").await;
    assert_eq!((hidden.status.as_u16(), missing.status.as_u16()), (404, 404));
    assert_eq!((hidden.header("allow"), hidden.json()["error"].clone()), (None, missing.json()["error"].clone()));
    let r = client.request("OPTIONS", &gw.url("/private/x"), &zero, b"").await;
    assert_eq!(r.status.as_u16(), 401);
    let r = client.request("OPTIONS", &gw.url("/private/x"), &[("max-forwards", "0"), ("x-api-key", "alice-key")], b"").await;
    assert_eq!((r.status.as_u16(), r.header("allow").is_some()), (200, true));
    let r = client.request("OPTIONS", &gw.url("/open/x"), &zero, b"").await;
    assert_eq!((r.status.as_u16(), r.header("x-seen").as_deref(), r.header("via")), (200, Some("yes"), None));
    assert_eq!(upstream.hits(), 0, "none went upstream");
    gw.stop().await;
}

/// The pentest's config: a catch-all route to the app, and a GET-only route behind key-auth.
const REPORTS: &str = r#"
[upstreams.app]
targets = ["{upstream}"]

[[consumers]]
id = "alice"
credentials = { keys = ["secret-key"] }

[[routes]]
id = "public"
path_prefix = "/"
upstream = "app"

[[routes]]
id = "reports"
path = "/reports/{id}"
methods = ["GET"]
upstream = "app"
[[routes.plugins]]
plugin = "builtin:key-auth"
"#;

#[tokio::test]
async fn a_head_takes_the_get_routes_plugins_not_the_catch_all() {
    // RFC 9110 9.3.2: HEAD is GET without the content, and Flask, Django, Express, Rails and Go
    // run the GET handler for it. A HEAD passed the GET route by for `public`, unauthenticated:
    // the handler's side effects and every response header leaked.
    let upstream = Upstream::start().await;
    let gw = Gateway::start(REPORTS, Some(&upstream)).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        for method in ["GET", "HEAD"] {
            let r = client.request(method, &gw.url("/reports/7"), &[], b"").await;
            assert_eq!(r.status, 401, "{method} {:?}", r.version);
        }
    }
    assert_eq!(upstream.hits(), 0, "no HEAD reached the GET handler unauthenticated");

    // With the key: the upstream's answer to the HEAD, without a body.
    let client = HttpClient::http1();
    let key = [("x-api-key", "secret-key")];
    let r = client.request("HEAD", &gw.url("/reports/7"), &key, b"").await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 0));
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"), "the upstream's headers");
    assert_eq!(upstream.hits(), 1);

    // Other methods are not GET: they still pass the route by, as before.
    let r = client.request("DELETE", &gw.url("/reports/7"), &[], b"").await;
    assert_eq!((r.status.as_u16(), r.json()["method"].as_str()), (200, Some("DELETE")));

    // The admin view says what the route serves (`Allow`: the Max-Forwards test above).
    let routes = client.get(&gw.admin_url("/admin/routes")).await.json();
    let reports = routes["routes"].as_array().and_then(|r| r.iter().find(|r| r["id"] == "reports")).cloned().unwrap_or_default();
    assert_eq!(reports["methods"], serde_json::json!(["GET", "HEAD"]), "{routes}");
    gw.stop().await;
}

#[tokio::test]
async fn a_route_listing_head_itself_wins_a_head_over_the_get_route() {
    let upstream = Upstream::start().await;
    let config = format!(
        "{REPORTS}
[[routes]]
id = \"reports-head\"
path = \"/reports/{{id}}\"
methods = [\"HEAD\"]
[[routes.plugins]]
plugin = \"builtin:respond\"
config = {{ status = 204, headers = {{ x-route = \"reports-head\" }} }}
"
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("HEAD", &gw.url("/reports/7"), &[], b"").await;
    assert_eq!((r.status.as_u16(), r.header("x-route").as_deref()), (204, Some("reports-head")));
    let r = client.request("GET", &gw.url("/reports/7"), &[], b"").await;
    assert_eq!((r.status.as_u16(), r.header("x-route")), (401, None), "GET keeps its own route");
    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}
