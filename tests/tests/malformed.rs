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

/// What the gateway answered to raw bytes: the status line, or "" if it closed without answering.
async fn send_raw(gw: &Gateway, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).lines().next().unwrap_or_default().to_owned()
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

    // Content-Length and Transfer-Encoding together: Transfer-Encoding frames it (RFC 9112 6.3)
    // and the upstream never receives both, so it cannot read the body differently.
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 40\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    if text.starts_with("HTTP/1.1 200") {
        let echo: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n").map_or("", |(_, b)| b)).expect("echo JSON");
        let headers = &echo["headers"];
        assert!(headers.get("content-length").is_none() || headers.get("transfer-encoding").is_none(), "both reached the upstream: {headers}");
        assert_eq!(echo["body"], "abc", "the body is what the chunked framing says");
    } else {
        assert!(text.starts_with("HTTP/1.1 400") || text.is_empty(), "{text}");
    }
    gw.stop().await;
}
