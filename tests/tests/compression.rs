//! `[compression]`: responses gzipped for clients that accept it, over a real upstream and real
//! clients (HTTP/1.1 and HTTP/2): whole and streamed bodies, what is left alone, and a stream
//! that reaches the client as it comes (each frame flushed).

use std::io::{Read, Write};
use std::time::Duration;

use airlock_tests::{Gateway, HttpClient, Upstream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// 4 KiB of JSON, the same each time.
fn document() -> String {
    let items: Vec<String> = (0..100).map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\"}}")).collect();
    format!("[{}]", items.join(","))
}

/// An upstream answering `/json` with [`document`], `/small` with a few bytes of JSON, `/png`
/// with an image's bytes, each with the strong ETag `"v7"`, and a 304 (no media type, as
/// upstreams send) to a conditional GET naming it.
async fn upstream() -> Upstream {
    Upstream::with_handler(|req: Request<Incoming>| async move {
        let (content_type, body) = match req.uri().path() {
            "/small" => ("application/json", "{\"ok\":true}".to_owned()),
            "/png" => ("image/png", "x".repeat(4096)),
            _ => ("application/json; charset=utf-8", document()),
        };
        // A conditional GET naming the current tag, weakly compared (RFC 9110 13.1.2).
        let current = req.headers().get("if-none-match").is_some_and(|v| v.as_bytes().strip_prefix(b"W/").unwrap_or(v.as_bytes()) == b"\"v7\"");
        if current {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = http::StatusCode::NOT_MODIFIED;
            r.headers_mut().insert("etag", "\"v7\"".parse().unwrap());
            return r;
        }
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert("content-type", content_type.parse().unwrap());
        r.headers_mut().insert("etag", "\"v7\"".parse().unwrap());
        r
    })
    .await
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut out).expect("valid gzip");
    out
}

const CONFIG: &str = r#"
[compression]
enabled = true

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/"
upstream = "backend"

[[routes]]
path_prefix = "/plain"
strip_prefix = "/plain"
upstream = "backend"
compress = false

[[routes]]
path_prefix = "/transformed"
strip_prefix = "/transformed"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:transform"
config = { response = { body = { wrap = "items" } } }
"#;

#[tokio::test]
async fn json_is_gzipped_for_clients_that_accept_it_over_both_protocols() {
    let up = upstream().await;
    let gw = Gateway::start(CONFIG, Some(&up)).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        let r = client.request("GET", &gw.url("/json"), &[("accept-encoding", "br, gzip")], b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
        assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
        assert_eq!(r.header("etag").as_deref(), Some("W/\"v7\""), "the bytes are no longer the upstream's");
        assert!(r.body.len() < document().len() / 3, "{} bytes", r.body.len());
        assert_eq!(gunzip(&r.body), document());

        // Without gzip in Accept-Encoding: as it came, still saying it varies.
        let r = client.request("GET", &gw.url("/json"), &[("accept-encoding", "gzip;q=0, br")], b"").await;
        assert_eq!((r.header("content-encoding"), r.header("vary").as_deref()), (None, Some("Accept-Encoding")));
        assert_eq!(r.text(), document());
    }
    gw.stop().await;
}

#[tokio::test]
async fn small_bodies_other_types_and_routes_with_compress_false_are_left_alone() {
    let up = upstream().await;
    let gw = Gateway::start(CONFIG, Some(&up)).await;
    let client = HttpClient::http1();
    let gzip = [("accept-encoding", "gzip")];
    for path in ["/small", "/png", "/plain/json"] {
        let r = client.request("GET", &gw.url(path), &gzip, b"").await;
        assert_eq!(r.header("content-encoding"), None, "{path}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_head_says_what_the_get_would() {
    // RFC 9110 9.3.2: a cache validating with HEAD must see the GET's encoding, validator and
    // Vary; the length is the one header only compressing would tell.
    let up = upstream().await;
    let gw = Gateway::start(CONFIG, Some(&up)).await;
    let client = HttpClient::http1();
    let gzip = [("accept-encoding", "gzip")];
    let get = client.request("GET", &gw.url("/json"), &gzip, b"").await;
    let head = client.request("HEAD", &gw.url("/json"), &gzip, b"").await;
    for name in ["content-encoding", "etag", "vary", "content-type"] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    assert_eq!((head.header("content-length"), head.body.len()), (None, 0));
    // A client without gzip: the upstream's length, and the same Vary.
    let head = client.request("HEAD", &gw.url("/json"), &[], b"").await;
    assert_eq!((head.header("content-encoding"), head.header("content-length")), (None, Some(document().len().to_string())));
    assert_eq!(head.header("vary").as_deref(), Some("Accept-Encoding"));
    gw.stop().await;
}

#[tokio::test]
async fn a_not_modified_answer_keeps_the_compressed_answers_validator_and_vary() {
    // A cache revalidating its gzipped copy (tag `W/"v7"`) must not be handed the strong tag
    // back: it would then take its compressed bytes for the upstream's (If-Range, If-Match).
    let up = upstream().await;
    let gw = Gateway::start(CONFIG, Some(&up)).await;
    let client = HttpClient::http1();
    let get = client.request("GET", &gw.url("/json"), &[("accept-encoding", "gzip")], b"").await;
    let tag = get.header("etag").expect("a tag");
    let again = client.request("GET", &gw.url("/json"), &[("accept-encoding", "gzip"), ("if-none-match", &tag)], b"").await;
    assert_eq!(again.status, 304);
    assert_eq!((again.header("etag"), again.header("vary")), (Some(tag), get.header("vary")));
    // A copy revalidated with the strong tag never came through the compression (an image's,
    // a client's without gzip): as the upstream sent it, strong for If-Range and If-Match.
    let plain = client.request("GET", &gw.url("/json"), &[("accept-encoding", "gzip"), ("if-none-match", "\"v7\"")], b"").await;
    assert_eq!((plain.status.as_u16(), plain.header("etag").as_deref()), (304, Some("\"v7\"")), "the upstream's tag");
    gw.stop().await;
}

#[tokio::test]
async fn a_body_a_plugin_changed_is_gzipped_whole_with_its_length() {
    let up = upstream().await;
    let gw = Gateway::start(CONFIG, Some(&up)).await;
    let r = HttpClient::http1().request("GET", &gw.url("/transformed/json"), &[("accept-encoding", "gzip")], b"").await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
    let json: serde_json::Value = serde_json::from_str(&gunzip(&r.body)).unwrap();
    assert_eq!((json["items"][0]["id"].as_u64(), json["items"][99]["name"].as_str()), (Some(0), Some("item 99")));
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_reaches_the_client_as_it_comes() {
    // Server-sent events: the second event is sent only once the client has decoded the first,
    // which it can only do if the gateway flushed it rather than waiting for more.
    let (addr, events, server) = airlock_tests::event_stream_upstream("text/event-stream").await;
    let config = format!("[compression]\nenabled = true\n\n[upstreams.sse]\ntargets = [\"{addr}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"sse\"\n");
    let gw = Gateway::start(&config, None).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::get(gw.url("/events")).header("accept-encoding", "gzip").body(Full::default()).unwrap();
    let first_event = "data: first\n\n".repeat(20);
    events.send(Bytes::from(first_event.clone())).await.unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    while decoder.get_ref().len() < first_event.len() {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("the first event, flushed").unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            decoder.write_all(&data).unwrap();
            decoder.flush().unwrap();
        }
    }
    assert_eq!(String::from_utf8(decoder.get_ref().clone()).unwrap(), first_event);
    events.send(Bytes::from_static(b"data: second\n\n")).await.unwrap();
    drop(events);
    let rest = body.collect().await.unwrap().to_bytes();
    decoder.write_all(&rest).unwrap();
    let all = decoder.finish().unwrap();
    assert_eq!(String::from_utf8(all).unwrap(), format!("{first_event}data: second\n\n"));
    gw.stop().await;
    server.abort();
}
