//! Failover across an upstream's targets, passive health, the resend of a request a reused
//! keep-alive connection lost, the per-upstream idle timeout, and what the logs say about the
//! target: all over real sockets (a port with nothing listening, upstreams that close
//! connections on purpose).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airlock_tests::metrics::eventually;
use airlock_tests::{Gateway, HttpClient, Upstream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback address nothing listens on (bound, then released): connecting is refused.
fn refused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

/// A backend on a given address (HTTP/1.1 and h2c) that answers every request with a JSON echo
/// of its name, the `Host` it got (over HTTP/2, the `:authority`) and the body, and counts connections opened and ended.
struct Backend {
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn on(addr: SocketAddr, name: &'static str) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind the backend");
        let (hits, connections, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (h, c, e) = (hits.clone(), connections.clone(), ended.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (h, e) = (h.clone(), e.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        async move {
                            // Over HTTP/2 the host is the `:authority`.
                            let host = req.headers().get("host").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                            let host = host.or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let echo = serde_json::json!({ "name": name, "host": host, "body": String::from_utf8_lossy(&body) });
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(echo.to_string()))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    e.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self { hits, connections, ended, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1.1 upstream that answers the first request on each connection (keep-alive) and, on
/// the next one, reads it whole and closes the connection without a word: a backend closing a
/// keep-alive connection just as the gateway reuses it, made deterministic. Counts requests
/// read and connections accepted.
struct Closer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Closer {
    async fn start() -> Self {
        Self::serve(false).await
    }

    /// The same, but its very first answer says `Connection: close` and closes (a backend
    /// starting to shut down).
    async fn start_closing_first() -> Self {
        Self::serve(true).await
    }

    async fn serve(close_first: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (requests, connections) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, c) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                let first_connection = c.fetch_add(1, Ordering::SeqCst) == 0;
                let r = r.clone();
                tokio::spawn(async move {
                    for nth in 0.. {
                        let Some(head) = read_request(&mut stream).await else { return };
                        r.fetch_add(1, Ordering::SeqCst);
                        if nth > 0 {
                            return; // closed with the request unanswered
                        }
                        if close_first && first_connection {
                            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok").await;
                            return;
                        }
                        let answer: &[u8] = if head { b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n" } else { b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" };
                        let _ = stream.write_all(answer).await;
                    }
                });
            }
        });
        Self { addr, requests, connections, task }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head, and a `Content-Length` or chunked body) from `stream`: whether it is
/// a HEAD, or `None` at EOF.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<bool> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &data[head_end..];
        let done = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => true,
        };
        if done {
            return Some(head.starts_with("head "));
        }
        let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
        data.extend_from_slice(&buf[..n]);
    }
}

/// A "backend" that answers every request with bytes that are not HTTP.
async fn garbage_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                if read_request(&mut stream).await.is_some() {
                    let _ = stream.write_all(b"THIS IS NOT HTTP\r\n\r\n").await;
                }
            });
        }
    });
    (addr, task)
}

/// A "backend" that accepts connections and reads requests but never answers (a hung process
/// whose socket is still open): counts the requests it read.
async fn hung_upstream() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    unanswering_upstream(false).await
}

/// A "backend" that crashes under every request: reads it whole, then resets the connection
/// without answering (as a process killed mid-request). Counts the requests it read.
async fn crashing_upstream() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    unanswering_upstream(true).await
}

/// A loopback upstream that hands each connection it accepts to `serve`, in a task of its own,
/// with a counter shared by all of them (what the misbehaving upstreams below count): its
/// address, the counter and the accepting task.
async fn counting_upstream<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream, Arc<AtomicUsize>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(serve(stream, counted.clone()));
        }
    });
    (addr, count, task)
}

/// Reads requests and answers none, counting them; with `reset`, resets each connection after
/// its first request.
async fn unanswering_upstream(reset: bool) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    counting_upstream(move |mut stream, counted| async move {
        while read_request(&mut stream).await.is_some() {
            counted.fetch_add(1, Ordering::SeqCst);
            if reset {
                // A reset, not a FIN: the kernel sends RST when it closes with linger 0.
                let _ = stream.set_zero_linger();
                return;
            }
        }
    })
    .await
}

/// A target given by name (`localhost`) is looked up through the upstream's resolver
/// (`airlock::proxy::dns`), for its requests and its health check alike: proxied to with the
/// target's `Host`, kept in rotation by its probes, and no lookup fell back on a remembered
/// answer (the fallback itself is unit-tested there: DNS cannot be broken here).
#[tokio::test]
async fn a_target_given_by_name_is_looked_up_proxied_and_probed() {
    let up = Upstream::start().await;
    let target = format!("localhost:{}", up.addr.port());
    let config = format!(
        "[upstreams.named]\ntargets = [\"{target}\"]\n[upstreams.named.health_check]\npath = \"/healthz\"\ninterval_ms = 200\n\
         timeout_ms = 200\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"named\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    for i in 0..3 {
        let r = client.get(&gw.url(&format!("/by-name/{i}"))).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.json()["path"], format!("/by-name/{i}"));
        assert_eq!(r.upstream_header("host"), vec![target.clone()], "the target's Host, by name");
    }
    // Three requests, then three probes, each on a new connection to the target by name (a
    // probe that could not connect is no hit).
    eventually("health-check probes", || (up.hits() >= 6).then_some(())).await;
    let m = airlock_tests::metrics::scrape(&client, &gw, None).await;
    let up_now = airlock_tests::metrics::sample(&m, "airlock_upstream_target_up", &[("upstream", "named"), ("target", &target)]);
    assert_eq!(up_now, 1.0, "the probes reach the target by name");
    let fallbacks = m.samples.iter().find(|s| s.metric == "airlock_upstream_dns_fallbacks_total" && s.labels.get("upstream") == Some("named"));
    let fallbacks = fallbacks.map(|s| match s.value {
        prometheus_parse::Value::Counter(v) => v,
        ref other => panic!("not a counter: {other:?}"),
    });
    assert_eq!(fallbacks, Some(0.0), "reported, and no lookup failed");
    gw.stop().await;
}

/// H2: with one target refusing connections, every request is served by the other (nothing was
/// sent to the refusing one, so any method goes, a streamed body too), with the serving
/// target's `Host`.
#[tokio::test]
async fn a_refused_target_is_passed_over_for_the_next() {
    let up = Upstream::start().await;
    let down = refused_addr();
    let config = format!(
        "[upstreams.mix]\ntargets = [\"{down}\", \"{}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"mix\"\n",
        up.addr
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    for i in 0..10 {
        let r = client.get(&gw.url(&format!("/get/{i}"))).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.upstream_header("host"), vec![up.addr.to_string()], "the Host of the target that served it");
    }
    for i in 0..4 {
        let body = format!("streamed body {i}");
        let r = client.request("POST", &gw.url("/post"), &[], body.as_bytes()).await;
        assert_eq!(r.status, 200, "POST {i}: {}", r.text());
        assert_eq!(r.json()["body"], body.as_str(), "the body went whole to the other target");
    }
    assert_eq!(up.hits(), 14);
    // No client saw the failing target, the metrics do: each refused attempt until `max_fails`
    // (3) marked it down, per target; the requests themselves did not fail.
    let m = airlock_tests::metrics::scrape(&client, &gw, None).await;
    let failures = |target: String| {
        airlock_tests::metrics::sample(&m, "airlock_upstream_target_failures_total", &[("upstream", "mix"), ("target", &target)])
    };
    assert_eq!((failures(down.to_string()), failures(up.addr.to_string())), (3.0, 0.0));
    let errors = airlock_tests::metrics::sample(&m, "airlock_upstream_errors_total", &[("upstream", "mix"), ("kind", "unavailable")]);
    assert_eq!(errors, 0.0, "no request failed");
    gw.stop().await;
}

/// H2 over HTTP/2 (h2c): the same failover.
#[tokio::test]
async fn an_h2c_upstream_fails_over_too() {
    let down = refused_addr();
    let live = refused_addr();
    let backend = Backend::on(live, "live").await;
    let config = format!(
        "[upstreams.grpcish]\ntargets = [\"{down}\", \"{live}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"grpcish\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    for i in 0..6 {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.json()["host"], live.to_string());
    }
    assert_eq!(backend.hits(), 6);
    gw.stop().await;
}

/// H2, passive health: after `max_fails` connect failures in a row a target is skipped (a
/// backend started on its port meanwhile gets nothing) until `fail_timeout_ms` has passed; then
/// it is tried again and, answering, serves its share.
#[tokio::test]
async fn a_target_that_fails_to_connect_is_skipped_then_tried_again() {
    let up = Upstream::start().await;
    let flaky = refused_addr();
    let config = format!(
        "[upstreams.mix]\ntargets = [\"{flaky}\", \"{}\"]\nmax_fails = 2\nfail_timeout_ms = 3000\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"mix\"\n",
        up.addr
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    // Round-robin sends every other request to `flaky` first: two failures mark it down.
    for i in 0..4 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200, "request {i}");
    }
    let marked = tokio::time::Instant::now();
    let backend = Backend::on(flaky, "flaky").await;
    for i in 0..6 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200, "request {i}");
    }
    assert!(marked.elapsed() < Duration::from_millis(2500), "the machine is too slow for this test's timing");
    assert_eq!(backend.connections.load(Ordering::SeqCst), 0, "a target marked down is skipped");
    // Past fail_timeout_ms it is tried again, and serves.
    tokio::time::sleep(Duration::from_millis(3300).saturating_sub(marked.elapsed())).await;
    for i in 0..6 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200, "request {i}");
    }
    assert!(backend.hits() >= 2, "the target serves again: {} hits", backend.hits());
    gw.stop().await;
}

/// H2: when every target is marked down, requests are still sent (a 502 from the refusal, not a
/// refusal without trying), so the upstream is used again the moment a target is back.
#[tokio::test]
async fn every_target_marked_down_is_still_tried() {
    let (a, b) = (refused_addr(), refused_addr());
    let config = format!(
        "[upstreams.pair]\ntargets = [\"{a}\", \"{b}\"]\nmax_fails = 1\nfail_timeout_ms = 60000\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"pair\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    for i in 0..3 {
        let r = client.get(&gw.url("/")).await;
        assert_eq!(r.status, 502, "request {i}: {}", r.text());
        assert_eq!(r.json()["error"], "upstream_unavailable");
    }
    let (_a, _b) = (Backend::on(a, "a").await, Backend::on(b, "b").await);
    let r = client.get(&gw.url("/")).await;
    assert_eq!(r.status, 200, "tried although marked down: {}", r.text());
    gw.stop().await;
}

/// H2, passive health beyond connects: a target that accepts connections and then hangs (no
/// response head within the timeout: a 504 each) or answers with something not HTTP (a 502
/// each) counts as failing, as nginx counts `timeout` and `error`: after `max_fails` of them in
/// a row it gets no more requests for `fail_timeout_ms`, and the other target serves them all.
#[tokio::test]
async fn a_target_that_hangs_or_answers_garbage_is_marked_down() {
    let up = Upstream::start().await;
    let (hung, hung_reads, _hung_task) = hung_upstream().await;
    let (garbage, _garbage_task) = garbage_upstream().await;
    let config = format!(
        r#"
[upstreams.hangs]
targets = ["{hung}", "{ok}"]
request_timeout_ms = 300
max_fails = 2
fail_timeout_ms = 60000
[upstreams.garbles]
targets = ["{garbage}", "{ok}"]
max_fails = 2
fail_timeout_ms = 60000

[[routes]]
path_prefix = "/hangs"
upstream = "hangs"
[[routes]]
path_prefix = "/garbles"
upstream = "garbles"
"#,
        ok = up.addr
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    for (prefix, failure) in [("/hangs", 504), ("/garbles", 502)] {
        // Round-robin: every other request goes to the failing target, until the second failure.
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(client.get(&gw.url(&format!("{prefix}/x"))).await.status);
        }
        assert_eq!(statuses.iter().filter(|&&s| s == failure).count(), 2, "{prefix}: {statuses:?}");
        assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 2, "{prefix}: {statuses:?}");
        // Marked down: the rest all go to the target that answers.
        for i in 0..6 {
            let r = client.get(&gw.url(&format!("{prefix}/y"))).await;
            assert_eq!(r.status, 200, "{prefix}, request {i} after the marking: {}", r.text());
        }
    }
    assert_eq!(hung_reads.load(Ordering::SeqCst), 2, "the hung target got nothing after its second timeout");
    gw.stop().await;
}

/// An upstream whose response body is malformed at its first chunk (right after the head, in
/// the same segment) or after some data: what the HTTP/1.1 client gets is at most the head and
/// the data before the failure (at the first chunk, over HTTP/1.1, nothing: the gateway's HTTP
/// server had not written the head out yet), never a whole response; and the access log line,
/// whose `status` is the head's, says the body was aborted (`"aborted": "response_body"`) with
/// the bytes passed on before it. A whole answer's line has no `aborted`.
#[tokio::test]
async fn an_upstream_body_malformed_after_the_head_is_logged_as_aborted() {
    let (first, _first_task) = airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nnot a chunk").await;
    let (later, _later_task) =
        airlock_tests::raw_upstream_holding(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", Duration::from_millis(300)).await;
    let (whole, _whole_task) = airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nwhole").await;
    let config = format!(
        r#"
[access_log]
enabled = true
path = "access.log"

[upstreams.first]
targets = ["{first}"]
[upstreams.later]
targets = ["{later}"]
[upstreams.whole]
targets = ["{whole}"]

[[routes]]
path = "/first"
upstream = "first"
[[routes]]
path = "/later"
upstream = "later"
[[routes]]
path = "/whole"
upstream = "whole"
"#
    );
    let gw = Gateway::start(&config, None).await;
    let log = gw.dir.path().join("access.log");
    let get = |path: &str, id: &str| format!("GET {path} HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n");

    let got = airlock_tests::raw_exchange(gw.addr(), get("/first", "bad-first-chunk").as_bytes()).await;
    assert!(!got.contains("\r\n0\r\n\r\n"), "a whole response for a malformed body: {got:?}");
    let line = airlock_tests::access_log_line(&log, "bad-first-chunk").await;
    assert_eq!(line["aborted"], "response_body", "{line} (the client got {got:?})");
    assert_eq!((line["status"].as_u64(), line["bytes_out"].as_u64()), (Some(200), Some(0)), "{line}");

    // The upstream sends a chunk, then (300 ms later) closes in the middle of the body.
    let got = airlock_tests::raw_exchange(gw.addr(), get("/later", "bad-later-chunk").as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.contains("hello") && !got.contains("\r\n0\r\n\r\n"), "{got:?}");
    let line = airlock_tests::access_log_line(&log, "bad-later-chunk").await;
    assert_eq!(line["aborted"], "response_body", "{line}");
    assert_eq!((line["status"].as_u64(), line["bytes_out"].as_u64()), (Some(200), Some(5)), "{line}");

    let got = airlock_tests::raw_exchange(gw.addr(), get("/whole", "whole-body").as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("whole"), "{got:?}");
    let line = airlock_tests::access_log_line(&log, "whole-body").await;
    assert!(line.get("aborted").is_none(), "{line}");
    assert_eq!(line["bytes_out"].as_u64(), Some(5), "{line}");
    gw.stop().await;
}

/// A client that goes away in the middle of a download: the line says so
/// (`"aborted": "connection_closed"`, as a shutdown's drain cutting it would), with the bytes
/// sent before, so a response cut short never reads as a whole 200.
#[tokio::test]
async fn a_download_the_client_leaves_is_logged_as_aborted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let config = "[access_log]\nenabled = true\npath = \"access.log\"\n\n[upstreams.backend]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n";
    let gw = Gateway::start(config, Some(&upstream)).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    stream.write_all(b"GET /big/50000000 HTTP/1.1\r\nHost: gw\r\nX-Request-Id: left-early\r\n\r\n").await.expect("send");
    let mut got = vec![0; 64 * 1024];
    let read = stream.read(&mut got).await.expect("the head and some body");
    assert!(got[..read].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..read]));
    drop(stream);
    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "left-early").await;
    assert_eq!(line["aborted"], "connection_closed", "{line}");
    let sent = line["bytes_out"].as_u64().expect("bytes_out");
    assert!((1..50_000_000).contains(&sent), "{line}");
    // A whole download's line has none, nor a HEAD's (never sent a body), nor a chunked answer
    // ending in trailers (the server drops the body after them, unpolled again).
    let r = airlock_tests::HttpClient::http1().request("GET", &gw.url("/big/100000"), &[("x-request-id", "whole-download")], b"").await;
    assert_eq!(r.body.len(), 100_000);
    let r = airlock_tests::HttpClient::http1().request("HEAD", &gw.url("/big/100000"), &[("x-request-id", "whole-head")], b"").await;
    assert_eq!(r.status, 200);
    for id in ["whole-download", "whole-head"] {
        let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), id).await;
        assert!(line.get("aborted").is_none(), "{line}");
    }
    gw.stop().await;
    let (trailing, _task) =
        airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: 1\r\n\r\n").await;
    let config = format!("[access_log]\nenabled = true\npath = \"access.log\"\n\n[upstreams.backend]\ntargets = [\"{trailing}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n");
    let gw = Gateway::start(&config, None).await;
    let got = airlock_tests::raw_exchange(gw.addr(), b"GET / HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\nX-Request-Id: with-trailers\r\nConnection: close\r\n\r\n").await;
    assert!(got.contains("hello") && got.ends_with("0\r\n\r\n"), "{got:?}");
    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "with-trailers").await;
    assert!(line.get("aborted").is_none(), "{line}");
    gw.stop().await;
}

/// A target whose response body breaks off after its head (a `Content-Length` it does not
/// keep, a chunk that is not one) counts as failing too: the head went to the client, whose
/// response can only be cut short, but the exchange is logged under the request id, counted in
/// `airlock_upstream_errors_total`, and towards `max_fails` (it used to pass for a success:
/// the head reset the target's failures). So does a status outside 100-599 (a 502), and a body
/// that is not in its `Content-Encoding`, read for a plugin (a 502 too).
#[tokio::test]
async fn a_target_whose_response_body_breaks_off_is_reported_and_marked_down() {
    let up = Upstream::start().await;
    let (cut, _cut_task) = airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this").await;
    let (bad_chunk, _bad_task) =
        airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nnot a chunk").await;
    let (weird, _weird_task) = airlock_tests::raw_upstream(b"HTTP/1.1 600 Weird\r\nContent-Length: 2\r\n\r\nok").await;
    let (corrupt, _corrupt_task) =
        airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 9\r\n\r\nnot gzip!").await;
    let config = format!(
        r#"
[upstreams.cuts]
targets = ["{cut}", "{{upstream}}"]
max_fails = 2
fail_timeout_ms = 60000
[upstreams.garbles]
targets = ["{bad_chunk}", "{{upstream}}"]
max_fails = 2
fail_timeout_ms = 60000
[upstreams.weird]
targets = ["{weird}", "{{upstream}}"]
max_fails = 2
fail_timeout_ms = 60000
[upstreams.corrupt]
targets = ["{corrupt}", "{{upstream}}"]
max_fails = 2
fail_timeout_ms = 60000

[[routes]]
id = "cuts"
path_prefix = "/cuts"
upstream = "cuts"
[[routes]]
id = "garbles"
path_prefix = "/garbles"
upstream = "garbles"
[[routes]]
id = "weird"
path_prefix = "/weird"
upstream = "weird"
[[routes]]
id = "corrupt"
path_prefix = "/corrupt"
upstream = "corrupt"
[[routes.plugins]]
plugin = "{{plugin:body-upper}}"
"#
    );
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &up, &[]).await;
    let client = HttpClient::http2();
    for upstream in ["cuts", "garbles", "weird", "corrupt"] {
        // Round-robin: every other request goes to the breaking target, until its second failure.
        let mut broken = Vec::new();
        for i in 0..4 {
            let request = Request::get(gw.url(&format!("/{upstream}/{i}"))).body(Full::default()).expect("request");
            match client.try_send(request).await {
                Err(e) => broken.push(e),
                Ok(r) if r.status == 502 => broken.push(r.text()),
                Ok(r) => assert_eq!(r.status, 200, "{upstream}: {}", r.text()),
            }
        }
        assert_eq!(broken.len(), 2, "{upstream}: {broken:?}");
        // Marked down: the rest all go to the target that answers whole.
        for i in 0..6 {
            let r = client.get(&gw.url(&format!("/{upstream}/after-{i}"))).await;
            assert_eq!(r.status, 200, "{upstream}, request {i} after the marking: {}", r.text());
        }
        // (A body not in its `Content-Encoding`, read for a plugin, is a 502 `upstream_bad_encoding`,
        // not counted as the upstream unavailable.)
        // The admin listener speaks HTTP/1.1 (as Prometheus does).
        let errors = gw.metric(&HttpClient::http1(), "airlock_upstream_errors_total", &[("upstream", upstream), ("kind", "unavailable")]).await;
        assert_eq!(errors, if upstream == "corrupt" { 0.0 } else { 2.0 }, "{upstream}");
    }
    let log = gw.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("response body broke off after its head")).collect();
    assert_eq!(warnings.len(), 4, "{log}");
    for line in &warnings {
        assert!(line.contains("request_id=") && line.contains("upstream_addr="), "{line}");
    }
    assert!(log.contains(&format!("upstream_addr=\"{cut}\"")) && log.contains(&format!("upstream_addr=\"{bad_chunk}\"")), "{log}");
    assert_eq!(log.matches("target marked down").count(), 4, "{log}");
}

/// M1: a reused keep-alive connection that the backend closes as a GET (or another idempotent
/// request) is written to it: sent again, once, on a new connection; the client gets the answer.
#[tokio::test]
async fn a_reused_connection_closed_under_an_idempotent_request_is_sent_again() {
    let closer = Closer::start().await;
    let config = format!("[upstreams.c]\ntargets = [\"{}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"c\"\n", closer.addr);
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/first")).await.status, 200);
    for (i, method) in ["GET", "HEAD", "DELETE", "OPTIONS"].into_iter().enumerate() {
        // Idle long enough to be a connection its backend may be closing.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let r = client.request(method, &gw.url("/again"), &[], b"").await;
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        // The reused connection took it and closed; a new one answered it (and is kept).
        assert_eq!((closer.requests(), closer.connections()), (2 * i + 3, i + 2), "{method}");
    }
    gw.stop().await;
}

/// M1, under load: a connection reused at once (idle under 10 ms, so not armed on its own) that
/// the backend closes under a GET is a loss, and a sign the backend is closing its connections
/// (as in a graceful restart): from then on requests on reused connections are armed, and the
/// next ones lost that way are sent again. A `Connection: close` answer is such a sign too,
/// before any loss.
#[tokio::test]
async fn once_the_upstream_is_seen_closing_requests_on_reused_connections_are_sent_again() {
    // Back to back: the Closer answers the first request on each connection and closes under
    // the second.
    let closer = Closer::start().await;
    let config = format!("[upstreams.c]\ntargets = [\"{}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"c\"\n", closer.addr);
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(client.get(&gw.url("/x")).await.status.as_u16());
    }
    // Unarmed, every second request would be lost (200, 502, 200, 502, ...); armed by the first
    // loss, none after it is. (A connection not yet ready again is not reused: no loss then.)
    let lost = statuses.iter().filter(|&&s| s == 502).count();
    assert!(lost <= 1 && statuses.iter().all(|&s| s == 200 || s == 502), "only a loss before any sign is a 502: {statuses:?}");
    assert!(closer.requests() > closer.connections(), "connections were reused: {statuses:?}");
    gw.stop().await;

    // A `Connection: close` answer arms before any loss.
    let closer = Closer::start_closing_first().await;
    let config = format!("[upstreams.c]\ntargets = [\"{}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"c\"\n", closer.addr);
    let gw = Gateway::start(&config, None).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(client.get(&gw.url("/x")).await.status.as_u16());
    }
    assert_eq!(statuses, [200; 6]);
    assert!(closer.requests() > closer.connections(), "connections were reused and lost under requests");
    gw.stop().await;
}

/// M1, the limits: a POST (not idempotent) or a request whose streamed body was already sent on
/// the lost connection is not sent again: a 502, and the backend saw it once.
#[tokio::test]
async fn a_post_or_a_streamed_put_lost_on_a_reused_connection_is_not_sent_again() {
    let closer = Closer::start().await;
    let config = format!("[upstreams.c]\ntargets = [\"{}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"c\"\n", closer.addr);
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/first")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let r = client.request("POST", &gw.url("/order"), &[], b"pay once").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!((closer.requests(), closer.connections()), (2, 1), "the POST reached the backend once");
    // A new connection, answered; then a PUT streamed on it when reused.
    assert_eq!(client.get(&gw.url("/first")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let r = client.request("PUT", &gw.url("/doc"), &[], b"streamed, not kept").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!((closer.requests(), closer.connections()), (4, 2), "the streamed PUT reached the backend once");
    gw.stop().await;
}

/// M1: `idle_ms` on an upstream closes its pooled connections after that long idle (below the
/// backend's own keep-alive timeout), whatever `timeouts.idle_ms` says.
#[tokio::test]
async fn an_upstreams_idle_ms_closes_its_pooled_connections() {
    let addr = refused_addr();
    let backend = Backend::on(addr, "b").await;
    let config = format!(
        "[timeouts]\nidle_ms = 60000\n\n[upstreams.b]\ntargets = [\"{addr}\"]\nidle_ms = 150\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"b\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/")).await.status, 200);
    eventually("the gateway closing its idle upstream connection", || (backend.ended.load(Ordering::SeqCst) == 1).then_some(())).await;
    assert_eq!(client.get(&gw.url("/")).await.status, 200);
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2, "a new connection after the idle one was closed");
    gw.stop().await;
}

/// M2: the access log names the target that served or failed (`upstream_addr`), after a
/// failover the one that served, and `upstream_ms` is set whenever the upstream was called: for
/// a refusal, a timeout and a garbage answer too.
#[tokio::test]
async fn the_access_log_names_the_target_and_times_failed_calls() {
    let up = Upstream::start().await;
    let down = refused_addr();
    let (garbage, _garbage_task) = garbage_upstream().await;
    let config = format!(
        r#"
[access_log]
enabled = true
path = "access.log"

[upstreams.ok]
targets = ["{ok}"]
[upstreams.down]
targets = ["{down}"]
[upstreams.slow]
targets = ["{ok}"]
request_timeout_ms = 300
[upstreams.garbage]
targets = ["{garbage}"]
[upstreams.mix]
targets = ["{down}", "{ok}"]

[[routes]]
path_prefix = "/ok"
upstream = "ok"
[[routes]]
path_prefix = "/down"
upstream = "down"
[[routes]]
path_prefix = "/slow"
strip_prefix = "/slow"
upstream = "slow"
[[routes]]
path_prefix = "/garbage"
upstream = "garbage"
[[routes]]
path_prefix = "/mix"
upstream = "mix"
"#,
        ok = up.addr
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    let log = gw.dir.path().join("access.log");
    let cases: [(&str, &str, u16, SocketAddr); 6] = [
        ("/ok", "m2-ok", 200, up.addr),
        ("/down", "m2-down", 502, down),
        ("/slow/slow/3000", "m2-slow", 504, up.addr),
        ("/garbage", "m2-garbage", 502, garbage),
        // After a failover: the target that served.
        ("/mix/a", "m2-mix-a", 200, up.addr),
        ("/mix/b", "m2-mix-b", 200, up.addr),
    ];
    for (path, id, status, target) in cases {
        let r = client.request("GET", &gw.url(path), &[("x-request-id", id)], b"").await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let line = airlock_tests::access_log_line(&log, id).await;
        assert_eq!(line["upstream_addr"], target.to_string(), "{path}: {line}");
        let upstream_ms = line["upstream_ms"].as_f64().unwrap_or_else(|| panic!("{path}: upstream_ms is null: {line}"));
        assert!(upstream_ms <= line["duration_ms"].as_f64().unwrap_or(0.0), "{path}: {line}");
        if id == "m2-slow" {
            assert!(upstream_ms >= 250.0, "the timed-out call lasted the timeout: {line}");
        }
    }
    // A request its client abandons while the upstream works on it (a 499): the target it was
    // sent to and the call's time until then, not "never called".
    let abandoned = Request::get(gw.url("/slow/slow/250")).header("x-request-id", "m2-abandoned").body(Full::default()).expect("request");
    let gave_up = tokio::time::timeout(Duration::from_millis(100), client.try_send(abandoned)).await;
    assert!(gave_up.is_err(), "answered before the client gave up: {gave_up:?}");
    let line = airlock_tests::access_log_line(&log, "m2-abandoned").await;
    assert_eq!((line["status"].as_u64(), &line["upstream_addr"]), (Some(499), &serde_json::json!(up.addr.to_string())), "{line}");
    let upstream_ms = line["upstream_ms"].as_f64().unwrap_or_else(|| panic!("upstream_ms is null: {line}"));
    assert!((50.0..=line["duration_ms"].as_f64().unwrap_or(0.0)).contains(&upstream_ms), "{line}");
    // A request no upstream was called for: both null.
    let r = client.request("GET", &gw.url("/nowhere"), &[("x-request-id", "m2-none")], b"").await;
    assert_eq!(r.status, 404);
    let line = airlock_tests::access_log_line(&log, "m2-none").await;
    assert_eq!((&line["upstream_addr"], &line["upstream_ms"]), (&serde_json::Value::Null, &serde_json::Value::Null), "{line}");
    gw.stop().await;
}

/// The access log line of a request that failed over lists the targets that failed before
/// the one in `upstream_addr`, in the order tried (`upstream_failed`, as nginx's
/// `$upstream_addr` lists every server); a request served by the first target it was sent to
/// has no such field.
#[tokio::test]
async fn the_access_log_lists_the_targets_a_request_failed_over_from() {
    let up = Upstream::start().await;
    let first_down = refused_addr();
    let second_down = std::iter::repeat_with(refused_addr).find(|a| *a != first_down).expect("a second free port");
    let config = format!(
        r#"
[access_log]
enabled = true
path = "access.log"

[upstreams.trail]
targets = ["{first_down}", "{second_down}", "{ok}"]
max_fails = 0

[[routes]]
path_prefix = "/"
upstream = "trail"
"#,
        ok = up.addr
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    let log = gw.dir.path().join("access.log");
    let (both, one, none) = (serde_json::json!([first_down.to_string(), second_down.to_string()]), serde_json::json!([second_down.to_string()]), serde_json::Value::Null);
    let mut seen = Vec::new();
    // Round robin over three targets, none ever marked down: each comes first at least once
    // in six requests on one connection (one worker).
    for n in 0..6 {
        let id = format!("trail-{n}");
        let r = client.request("GET", &gw.url("/a"), &[("x-request-id", &id)], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let line = airlock_tests::access_log_line(&log, &id).await;
        assert_eq!(line["upstream_addr"], up.addr.to_string(), "{line}");
        let failed = line.get("upstream_failed").cloned().unwrap_or(serde_json::Value::Null);
        assert!([&both, &one, &none].contains(&&failed), "{line}");
        seen.push(failed);
    }
    assert!(seen.contains(&both) && seen.contains(&one) && seen.contains(&none), "{seen:?}");
    gw.stop().await;
}

/// M2: the warning for a 502 names the target that failed; marking a target down is warned
/// once, naming it. A route's failures are warned about once per interval, with the count
/// (each is in the access log): any client's request would otherwise be a log line while its
/// upstream is down. Another route's failure has its own warning.
#[tokio::test]
async fn the_warning_for_a_502_names_the_target() {
    let upstream = Upstream::start().await;
    let down = refused_addr();
    let config = format!(
        "[upstreams.dead]\ntargets = [\"{down}\"]\nmax_fails = 2\n\n[[routes]]\nid = \"down\"\npath_prefix = \"/down\"\nupstream = \"dead\"\n\n\
         [[routes]]\nid = \"other\"\npath_prefix = \"/other\"\nupstream = \"dead\"\n"
    );
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &upstream, &[]).await;
    let client = HttpClient::http1();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = client.get(&gw.url(&format!("/down/{}", "a".repeat(2000)))).await;
        assert_eq!(r.status, 502);
        ids.push(r.header("x-request-id").expect("a request id"));
    }
    let other = client.get(&gw.url("/other/x")).await;
    assert_eq!(other.status, 502);
    let other_id = other.header("x-request-id").expect("a request id");
    let log = eventually("the warnings", || {
        let log = gw.log();
        (log.contains(ids[0].as_str()) && log.contains(other_id.as_str())).then_some(log)
    })
    .await;
    let line = log.lines().find(|l| l.contains(ids[0].as_str())).expect("a line naming the request");
    assert!(line.contains("WARN") && line.contains(&down.to_string()), "the target is named: {line}");
    assert!(line.contains("failed_since_last_warning=1") && line.contains("route=\"down\""), "{line}");
    assert!(line.len() < 1200, "the path is cut: {line}");
    for id in &ids[1..] {
        assert!(!log.contains(id.as_str()), "within the interval, not warned about: {log}");
    }
    let line = log.lines().find(|l| l.contains(other_id.as_str())).expect("the other route's warning");
    assert!(line.contains("route=\"other\"") && line.contains("failed_since_last_warning=1"), "{line}");
    let marked: Vec<_> = log.lines().filter(|l| l.contains("marked down")).collect();
    assert_eq!(marked.len(), 1, "{log}");
    assert!(marked[0].contains(&down.to_string()) && marked[0].contains("dead"), "{}", marked[0]);
}

/// The new keys are refused at their file, line and key when 0 would not mean "off".
#[test]
fn a_zero_idle_ms_or_fail_timeout_is_refused_at_its_line() {
    for (text, key) in [
        ("[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\nidle_ms = 0\n", "upstreams.u.idle_ms"),
        ("[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\nmax_fails = 1\nfail_timeout_ms = 0\n", "upstreams.u.fail_timeout_ms"),
    ] {
        let source = airlock::config::ConfigSource::inline("airlock.toml", text, std::path::PathBuf::from("."));
        let err = source.parse().expect_err(text);
        let issue = &err.issues()[0];
        assert_eq!((issue.line, issue.key.as_str(), issue.message.as_str()), (Some(text.lines().count()), key, "must be at least 1, not 0"));
    }
    let source = airlock::config::ConfigSource::inline(
        "airlock.toml",
        "[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\nmax_fails = 0\nidle_ms = 1500\nfail_timeout_ms = 500\n",
        std::path::PathBuf::from("."),
    );
    let config = source.parse().expect("max_fails = 0 turns marking off");
    let u = &config.upstreams["u"];
    assert_eq!((u.max_fails, u.idle_ms, u.fail_timeout_ms), (Some(0), Some(1500), Some(500)));
}

/// Weighted targets: each gets its weight's share of a round, interleaved; a target of weight 0
/// gets nothing, not even when the others fail (draining it); a reload that changes only a
/// weight takes effect.
#[tokio::test]
async fn targets_share_requests_by_weight_and_weight_0_drains_one() {
    let (heavy, light, drained, gone) = (refused_addr(), refused_addr(), refused_addr(), refused_addr());
    let (h, l, d) = (Backend::on(heavy, "heavy").await, Backend::on(light, "light").await, Backend::on(drained, "drained").await);
    let config = |light: SocketAddr, light_weight: u32| {
        format!(
            "[upstreams.w]\ntargets = [{{ address = \"{heavy}\", weight = 3 }}, {{ address = \"{light}\", weight = {light_weight} }}, \
             {{ address = \"{drained}\", weight = 0 }}]\nmax_fails = 0\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"w\"\n"
        )
    };
    let gw = Gateway::start(&config(light, 1), None).await;
    let client = HttpClient::http1();
    let mut order = Vec::new();
    for _ in 0..8 {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        order.push(r.json()["name"].as_str().unwrap_or_default().to_owned());
    }
    // Smooth weighted round-robin: 3:1, and the light target between the heavy one's turns.
    assert_eq!(order, ["heavy", "heavy", "light", "heavy", "heavy", "heavy", "light", "heavy"]);
    assert_eq!((h.hits(), l.hits(), d.hits()), (6, 2, 0));

    // Equal weights after a reload: plain round-robin between heavy and light.
    gw.reload(&config(light, 3), None).await.expect("reloaded");
    let (heavy_before, light_before) = (h.hits(), l.hits());
    for _ in 0..8 {
        assert_eq!(client.get(&gw.url("/x")).await.status, 200);
    }
    assert_eq!((h.hits() - heavy_before, l.hits() - light_before, d.hits()), (4, 4, 0));

    // The light target's place refuses connections: its turns fail over to the next target in
    // rotation, never to the drained one (next in `targets` order).
    gw.reload(&config(gone, 1), None).await.expect("reloaded");
    for _ in 0..8 {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!((r.status.as_u16(), r.json()["name"].as_str()), (200, Some("heavy")));
    }
    assert_eq!(d.hits(), 0);
    // The gauge shows the drained target out of rotation.
    let m = airlock_tests::metrics::scrape(&client, &gw, None).await;
    let up = |target: SocketAddr| airlock_tests::metrics::sample(&m, "airlock_upstream_target_up", &[("upstream", "w"), ("target", &target.to_string())]);
    assert_eq!((up(heavy), up(drained)), (1.0, 0.0));
    gw.stop().await;
}

/// `retry_on`: an idempotent request with a whole body answered with a listed status goes to the
/// next target; a POST, or a request whose streamed body cannot be sent twice, gets the answer.
/// A listed status counts towards `max_fails`, as in nginx's `proxy_next_upstream`.
#[tokio::test]
async fn an_idempotent_request_answered_with_a_retry_on_status_goes_to_the_next_target() {
    let failing = Upstream::with_handler(|_req| async {
        let mut r = Response::new(Full::new(Bytes::from_static(b"busy")));
        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        r
    })
    .await;
    let healthy = Upstream::start().await;
    let config = |max_fails: u32| {
        format!(
            "[upstreams.r]\ntargets = [\"{}\", \"{}\"]\nretry_on = [502, 503]\nmax_fails = {max_fails}\n\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"r\"\n",
            failing.addr, healthy.addr
        )
    };
    let gw = Gateway::start(&config(0), None).await;
    let client = HttpClient::http1();
    for i in 0..6 {
        let r = client.get(&gw.url(&format!("/get/{i}"))).await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
        assert_eq!(r.upstream_header("host"), vec![healthy.addr.to_string()], "the Host of the target that answered");
    }
    // Every other request was first sent to the failing target (round-robin), then to the next.
    assert_eq!((failing.hits(), healthy.hits()), (3, 6));

    // Not idempotent, or a streamed body already sent: the failing target's answer on its turns.
    let mut statuses = Vec::new();
    for method in ["POST", "POST", "PUT", "PUT"] {
        statuses.push(client.request(method, &gw.url("/b"), &[], b"a body").await.status.as_u16());
    }
    assert_eq!(statuses, [503, 200, 503, 200]);

    // With max_fails = 2 (a new upstream, which keeps what the old one knew of its targets: the
    // failing one's 503s in a row so far), its next 503 marks it down: no more requests.
    gw.reload(&config(2), None).await.expect("reloaded");
    let before = failing.hits();
    for _ in 0..8 {
        assert_eq!(client.get(&gw.url("/get")).await.status, 200);
    }
    assert_eq!(failing.hits() - before, 1);
    gw.stop().await;
}

/// `retry_on_reset`: an idempotent request whose target resets the connection before answering
/// (crashed, killed mid-request) goes to the next target, as nginx's `proxy_next_upstream error`
/// does; a POST, which the crashed target may have acted on, is not sent twice. Without it, the
/// reset is a 502. Either way the reset counts towards `max_fails`.
#[tokio::test]
async fn with_retry_on_reset_a_request_reset_before_its_answer_goes_to_the_next_target() {
    let (crashing, read, _task) = crashing_upstream().await;
    retry_on_reset_fails_idempotent_requests_over(crashing, &read, "http1").await;
}

/// Runs `retry_on_reset`'s case against `failing` (a target that resets every request it is sent
/// over `protocol`, counting them in `reset`) and a healthy target: each GET that went to the
/// failing one first is answered by the next, each POST that did is a 502; with the setting
/// off, each GET that did is a 502 too.
async fn retry_on_reset_fails_idempotent_requests_over(failing: SocketAddr, reset: &AtomicUsize, protocol: &str) {
    let healthy = Upstream::start().await;
    let config = |retry: bool| {
        format!(
            "[upstreams.r]\ntargets = [\"{failing}\", \"{}\"]\nprotocol = \"{protocol}\"\nretry_on_reset = {retry}\nmax_fails = 0\n\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"r\"\n",
            healthy.addr
        )
    };
    let gw = Gateway::start(&config(true), None).await;
    let client = HttpClient::http1();
    for i in 0..6 {
        let r = client.get(&gw.url(&format!("/get/{i}"))).await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
    }
    // Every other request went to the failing target first (round-robin), then to the next.
    assert_eq!((reset.load(Ordering::SeqCst), healthy.hits()), (3, 6));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client.request("POST", &gw.url("/order"), &[], b"once").await.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 502, 502], "a POST is never sent to a second target");

    gw.reload(&config(false), None).await.expect("reloaded");
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(client.get(&gw.url(&format!("/off/{i}"))).await.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 502, 502], "without retry_on_reset a reset is the client's 502");
    gw.stop().await;
}

/// An HTTP/2 (h2c) upstream that fails every stream it is sent once it has the request's head,
/// answering none: with `RST_STREAM` (`INTERNAL_ERROR`), as a server failing mid-request does,
/// or, with `go_away`, by closing the whole connection with a `GOAWAY` carrying that error (a
/// server shutting down hard). Counts the streams it failed.
async fn resetting_h2_upstream(go_away: bool) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    counting_upstream(move |stream, counted| async move {
        let Ok(mut connection) = h2::server::handshake(stream).await else { return };
        while let Some(Ok((_request, mut respond))) = connection.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            if go_away {
                connection.abrupt_shutdown(h2::Reason::INTERNAL_ERROR);
            } else {
                respond.send_reset(h2::Reason::INTERNAL_ERROR);
            }
        }
    })
    .await
}

/// `retry_on_reset` over HTTP/2: an idempotent request whose stream the target resets before
/// answering goes to the next target, as over HTTP/1.1 a reset connection does; a POST is not
/// sent twice; without `retry_on_reset` the reset is the client's 502.
#[tokio::test]
async fn with_retry_on_reset_a_request_whose_http2_stream_is_reset_goes_to_the_next_target() {
    let (resetting, reset, _task) = resetting_h2_upstream(false).await;
    retry_on_reset_fails_idempotent_requests_over(resetting, &reset, "h2c").await;
}

/// The same when the HTTP/2 target closes its connection on the request with a `GOAWAY`
/// carrying an error, answering nothing: the stream ends with the connection, which hyper
/// reports as the connection's I/O error (reset or early EOF) before any answer, so the request
/// goes on as after a reset.
#[tokio::test]
async fn with_retry_on_reset_a_request_whose_http2_connection_goes_away_goes_to_the_next_target() {
    let (closing, closed, _task) = resetting_h2_upstream(true).await;
    retry_on_reset_fails_idempotent_requests_over(closing, &closed, "h2c").await;
}

/// An HTTP/2 (h2c) upstream, spoken in raw frames, that answers each request's `HEADERS` with a
/// `GOAWAY` naming stream 0 as the last it processed, with `INTERNAL_ERROR`, and keeps the
/// connection open: the request's stream ends with that `GOAWAY` alone (not with the
/// connection, and not as the graceful, `NO_ERROR` one, which says the stream was never
/// processed and so may be sent again whatever its method). Counts the streams it failed.
async fn going_away_h2_upstream() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    /// A frame's 9-byte head: payload length, type, flags, stream 0.
    fn head(len: u8, kind: u8, flags: u8) -> [u8; 9] {
        [0, 0, len, kind, flags, 0, 0, 0, 0]
    }
    const SETTINGS: u8 = 4;
    const HEADERS: u8 = 1;
    const GOAWAY: u8 = 7;
    counting_upstream(|mut stream, counted| async move {
        let mut preface = [0u8; 24];
        if stream.read_exact(&mut preface).await.is_err() || stream.write_all(&head(0, SETTINGS, 0)).await.is_err() {
            return;
        }
        loop {
            let mut frame = [0u8; 9];
            if stream.read_exact(&mut frame).await.is_err() {
                return;
            }
            let len = (usize::from(frame[0]) << 16) | (usize::from(frame[1]) << 8) | usize::from(frame[2]);
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            let reply = match (frame[3], frame[4] & 1) {
                (SETTINGS, 0) => head(0, SETTINGS, 1).to_vec(),
                (HEADERS, _) => {
                    counted.fetch_add(1, Ordering::SeqCst);
                    // Last stream 0, error code 2 (INTERNAL_ERROR).
                    [&head(8, GOAWAY, 0)[..], &[0, 0, 0, 0, 0, 0, 0, 2]].concat()
                }
                _ => continue,
            };
            if stream.write_all(&reply).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// The same when the HTTP/2 target answers the request with a `GOAWAY` carrying an error and
/// naming an earlier stream as its last, its connection left open: h2 ends the stream with the
/// `GOAWAY`'s error (a remote go-away, not the connection's I/O error), which counts as closed
/// before an answer too.
#[tokio::test]
async fn with_retry_on_reset_a_request_above_an_http2_goaways_last_stream_goes_to_the_next_target() {
    let (going_away, failed, _task) = going_away_h2_upstream().await;
    retry_on_reset_fails_idempotent_requests_over(going_away, &failed, "h2c").await;
}

/// `try_timeout_ms`: an idempotent request whose target sends no response head within it (a
/// hung target, which reads requests and answers none) goes to the next target, long before the
/// route's timeout, and its access log line names the target it left; the hung target counts
/// as failed. A POST is not sent twice: it waits for its target until the route's timeout.
#[tokio::test]
async fn with_try_timeout_a_request_a_hung_target_holds_goes_to_the_next_target() {
    let (hung, read, _task) = unanswering_upstream(false).await;
    let healthy = Upstream::start().await;
    let config = format!(
        "[access_log]\nenabled = true\npath = \"access.log\"\n\n\
         [upstreams.t]\ntargets = [\"{hung}\", \"{}\"]\ntry_timeout_ms = 200\nrequest_timeout_ms = 1500\nmax_fails = 0\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"t\"\n",
        healthy.addr
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    let log = gw.dir.path().join("access.log");
    let mut left_hung = 0;
    for i in 0..4 {
        let id = format!("try-{i}");
        let started = Instant::now();
        let r = client.request("GET", &gw.url(&format!("/get/{i}")), &[("x-request-id", &id)], b"").await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
        assert!(started.elapsed() < Duration::from_millis(1200), "GET {i} waited {:?}: the route's timeout, not the try's", started.elapsed());
        let line = airlock_tests::access_log_line(&log, &id).await;
        assert_eq!(line["upstream_addr"], healthy.addr.to_string(), "{line}");
        if line.get("upstream_failed") == Some(&serde_json::json!([hung.to_string()])) {
            left_hung += 1;
            assert!(line["upstream_ms"].as_f64().unwrap_or(0.0) >= 180.0, "the hung target had its try: {line}");
        }
    }
    // Every other request went to the hung target first (round-robin), then to the next.
    assert_eq!((read.load(Ordering::SeqCst), healthy.hits(), left_hung), (2, 4, 2));
    let target = hung.to_string();
    let m = airlock_tests::metrics::scrape(&client, &gw, None).await;
    let failures = airlock_tests::metrics::sample(&m, "airlock_upstream_target_failures_total", &[("upstream", "t"), ("target", &target)]);
    assert_eq!(failures, 2.0, "each try the hung target let pass is its failure");
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let status = client.request("POST", &gw.url("/order"), &[], b"once").await.status.as_u16();
        statuses.push((status, started.elapsed() >= Duration::from_millis(1400)));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [(200, false), (504, true)], "a POST waits for its one target until the route's timeout");
    gw.stop().await;
}

/// `retry_on`, `retry_on_reset` or `try_timeout_ms` on an upstream of one target would never act: `airlock check`
/// says so, naming the upstream and the keys; with two targets it says nothing.
#[test]
fn retries_on_an_upstream_of_one_target_are_said_to_be_unable_to_act() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |targets: &str, retries: &str| {
        format!("[upstreams.solo]\ntargets = [{targets}]\n{retries}\n[[routes]]\npath_prefix = \"/\"\nupstream = \"solo\"\n")
    };
    let one = "\"127.0.0.1:9\"";
    let said = airlock_tests::check_warnings(dir.path(), &config(one, "retry_on = [503]\nretry_on_reset = true\n"));
    assert!(said.contains("upstreams.solo: retry_on and retry_on_reset cannot act: the upstream has one target, and a retry needs another"), "{said}");
    let said = airlock_tests::check_warnings(dir.path(), &config(one, "retry_on_reset = true\n"));
    assert!(said.contains("upstreams.solo: retry_on_reset cannot act"), "{said}");
    let said = airlock_tests::check_warnings(dir.path(), &config(one, "retry_on = [503]\nretry_on_reset = true\ntry_timeout_ms = 500\n"));
    assert!(said.contains("upstreams.solo: retry_on, retry_on_reset and try_timeout_ms cannot act"), "{said}");
    let said = airlock_tests::check_warnings(dir.path(), &config("\"127.0.0.1:9\", \"127.0.0.1:10\"", "retry_on_reset = true\n"));
    assert!(!said.contains("cannot act"), "{said}");
    let said = airlock_tests::check_warnings(dir.path(), &config(one, ""));
    assert!(!said.contains("cannot act"), "{said}");
}

#[tokio::test]
async fn max_requests_sheds_what_is_over_it_until_a_response_has_been_sent_in_full() {
    // An upstream whose answers start at once and end when told: a request is in flight until
    // its body is done, not just until its head came.
    let (release, _) = tokio::sync::broadcast::channel::<()>(8);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (counter, releases) = (hits.clone(), release.clone());
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (counter, releases) = (counter.clone(), releases.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let released = releases.subscribe();
                    async move {
                        let frames = futures_util::stream::unfold((0, released), |(step, mut released)| async move {
                            match step {
                                0 => Some((Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"first "))), (1, released))),
                                1 => {
                                    let _ = released.recv().await;
                                    Some((Ok(hyper::body::Frame::data(Bytes::from_static(b"last"))), (2, released)))
                                }
                                _ => None,
                            }
                        });
                        Ok::<_, Infallible>(Response::new(http_body_util::StreamBody::new(frames)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    let config = format!("[upstreams.api]\ntargets = [\"{addr}\"]\nmax_requests = 2\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n");
    let gw = Gateway::start(&config, None).await;
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let get = || client.request(Request::get(gw.url("/x")).body(Full::default()).unwrap());
    // Two answers whose heads came, bodies not yet done: both places taken.
    let (a, b) = (get().await.unwrap(), get().await.unwrap());
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let shed = HttpClient::http1().get(&gw.url("/x")).await;
    assert_eq!((shed.status.as_u16(), shed.json()["error"].as_str()), (503, Some("upstream_overloaded")));
    assert_eq!(shed.header("retry-after").as_deref(), Some("1"));
    assert_eq!(hits.load(Ordering::SeqCst), 2, "the shed request was not sent");
    // The bodies end: their places are free again.
    release.send(()).unwrap();
    for r in [a, b] {
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "first last");
    }
    let later = get().await.unwrap();
    assert_eq!(later.status().as_u16(), 200);
    release.send(()).unwrap();
    assert_eq!(later.into_body().collect().await.unwrap().to_bytes(), "first last");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    gw.stop().await;
    server.abort();
}
