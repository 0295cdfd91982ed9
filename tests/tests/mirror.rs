//! Request mirroring (a route's `mirror`): a copy of a sampled share of the route's upstream
//! requests goes to another upstream, as the route's upstream gets it, and its answer is
//! discarded. Real upstreams (an echo, a recording mirror, one that accepts and never answers,
//! a port nothing listens on) and real clients.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_tests::metrics::eventually;
use airlock_tests::{Gateway, HttpClient, Reply, Upstream, access_log_line, metric_value, raw_exchange};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the mirror received it.
#[derive(Debug, Clone)]
struct Copy {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Copy {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// What a recording mirror received, in arrival order.
#[derive(Clone, Default)]
struct Copies(Arc<Mutex<Vec<Copy>>>);

impl Copies {
    fn all(&self) -> Vec<Copy> {
        self.0.lock().unwrap().clone()
    }

    /// The copy of the request with this `X-Request-Id`, once the mirror has it.
    async fn of(&self, request_id: &str) -> Copy {
        eventually(&format!("the mirror's copy of {request_id}"), || {
            self.all().into_iter().find(|c| c.header("x-request-id").as_deref() == Some(request_id))
        })
        .await
    }
}

/// A mirror upstream that records every request whole and answers `from the mirror`.
async fn recording_mirror() -> (Upstream, Copies) {
    let copies = Copies::default();
    let log = copies.clone();
    let upstream = Upstream::with_handler(move |request: Request<Incoming>| {
        let log = log.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            log.0.lock().unwrap().push(Copy {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().map(str::to_owned),
                headers: parts.headers,
                body,
            });
            Response::new(Full::new(Bytes::from_static(b"from the mirror")))
        }
    })
    .await;
    (upstream, copies)
}

/// A mirror that accepts connections and never answers (nor closes them): its address, and how
/// many connections it accepted.
async fn hanging_mirror() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (addr, accepted, task)
}

/// An address nothing listens on: connections to it are refused.
async fn refusing_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

/// A config with upstream `main` (the echo at `main`) and `shadow` (at `mirror`, with this
/// request timeout), then `routes` (`{plugin:...}` placeholders are the harness's).
fn config(main: SocketAddr, mirror: SocketAddr, mirror_timeout_ms: u64, routes: &str) -> String {
    format!(
        "[access_log]\nenabled = true\npath = \"access.log\"\n\n[upstreams.main]\ntargets = [\"{main}\"]\n\n[upstreams.shadow]\ntargets = [\"{mirror}\"]\nrequest_timeout_ms = {mirror_timeout_ms}\n{routes}"
    )
}

/// `airlock_mirror_requests_total` of `route` with `outcome`.
async fn mirrored(gw: &Gateway, route: &str, outcome: &str) -> f64 {
    metric_value(gw, "airlock_mirror_requests_total", &[("route", route), ("upstream", "shadow"), ("outcome", outcome)]).await
}

/// The route's mirror as `/admin/routes` shows it.
async fn admin_mirror(gw: &Gateway, route: &str) -> serde_json::Value {
    let routes = HttpClient::http1().get(&gw.admin_url("/admin/routes")).await.json();
    let found = routes["routes"].as_array().unwrap().iter().find(|r| r["id"] == route).cloned();
    found.unwrap_or_else(|| panic!("no route {route}: {routes}"))["mirror"].clone()
}

/// Waits (at most 10 s) until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for {what}");
}

/// Sends `request`, failing the test if no answer comes within `within`.
async fn answered_within(client: &HttpClient, within: Duration, request: Request<Full<Bytes>>) -> Reply {
    let uri = request.uri().to_string();
    match tokio::time::timeout(within, client.try_send(request)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => panic!("{uri}: {e}"),
        Err(_) => panic!("{uri}: no answer within {within:?}: the mirror delayed the client's answer"),
    }
}

fn get(url: &str, request_id: &str) -> Request<Full<Bytes>> {
    Request::get(url).header("x-request-id", request_id).body(Full::default()).unwrap()
}

const SHAPED_ROUTES: &str = r#"
[[routes]]
id = "api"
path_prefix = "/api"
strip_prefix = "/api"
upstream = "main"
mirror = { upstream = "shadow" }
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.request]
remove = ["x-secret"]
set = { "x-added" = "by-plugin" }

[[routes]]
id = "user"
path = "/v1/users/{id}"
rewrite = "/users/${param.id}"
upstream = "main"
mirror = { upstream = "shadow", percent = 100 }

[[routes]]
id = "loud"
path_prefix = "/loud"
upstream = "main"
mirror = { upstream = "shadow" }
[[routes.plugins]]
plugin = "{plugin:body-upper}"

[[routes]]
id = "small"
path_prefix = "/small"
upstream = "main"
max_body_bytes = 16
mirror = { upstream = "shadow" }
"#;

/// The mirror gets the request as the route's upstream does: method, path after `strip_prefix`
/// or `rewrite`, query, headers after a plugin's changes (the forwarding headers and the same
/// request id included), and the body, streamed (with a length, or chunked) or buffered and
/// changed by a plugin. The client gets the route's upstream's answer, and its access log line
/// names that upstream.
#[tokio::test]
async fn the_mirror_gets_the_request_as_the_upstream_does_and_the_client_the_upstreams_answer() {
    let main = Upstream::start().await;
    let (mirror, copies) = recording_mirror().await;
    let gw = Gateway::start(&config(main.addr, mirror.addr, 5000, SHAPED_ROUTES), None).await;
    let client = HttpClient::http1();

    // Path, query and headers.
    let request = Request::get(gw.url("/api/items?color=red&size=2"))
        .header("x-request-id", "mirror-get")
        .header("x-secret", "for the gateway only")
        .header("x-kept", "as sent")
        .body(Full::default())
        .unwrap();
    let r = client.send(request).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!((echo["path"].as_str(), echo["query"].as_str()), (Some("/items"), Some("color=red&size=2")), "{echo}");
    let copy = copies.of("mirror-get").await;
    assert_eq!((copy.method.as_str(), copy.path.as_str(), copy.query.as_deref()), ("GET", "/items", Some("color=red&size=2")));
    assert_eq!(copy.header("x-added").as_deref(), Some("by-plugin"), "the plugin's change");
    assert_eq!(copy.header("x-secret"), None, "the header the plugin removed");
    assert_eq!(copy.header("x-kept").as_deref(), Some("as sent"));
    for name in ["x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via", "x-added", "x-kept"] {
        assert_eq!(copy.header(name).map(|v| vec![v]).unwrap_or_default(), r.upstream_header(name), "{name} as the upstream got it");
    }
    // `host_header = "upstream"` (the default): each gets its own target's name.
    assert_eq!(copy.header("host"), Some(mirror.addr.to_string()));
    assert_eq!(r.upstream_header("host"), [main.addr.to_string()]);

    // `rewrite`.
    let r = client.send(get(&gw.url("/v1/users/42?full=1"), "mirror-rewrite")).await;
    assert_eq!(r.json()["path"], "/users/42");
    let copy = copies.of("mirror-rewrite").await;
    assert_eq!((copy.path.as_str(), copy.query.as_deref()), ("/users/42", Some("full=1")));

    // A streamed body with a length: both get it whole.
    let body = "a body the mirror gets too";
    let r = client.request("POST", &gw.url("/api/orders"), &[("x-request-id", "mirror-post")], body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], body);
    assert_eq!(r.upstream_header("content-length"), [body.len().to_string()]);
    let copy = copies.of("mirror-post").await;
    assert_eq!((copy.method.as_str(), copy.path.as_str()), ("POST", "/orders"));
    assert_eq!(copy.body, body.as_bytes());
    assert_eq!(copy.header("content-length"), Some(body.len().to_string()));

    // A chunked one (no length): read whole for both.
    let chunked = "POST /api/chunked HTTP/1.1\r\nhost: gw\r\nx-request-id: mirror-chunked\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n7\r\n, there\r\n0\r\n\r\n";
    let answer = raw_exchange(gw.addr(), chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""body":"hello, there""#), "the upstream got it whole: {answer}");
    assert_eq!(copies.of("mirror-chunked").await.body, "hello, there");

    // A body a plugin buffered and changed: the mirror gets the plugin's.
    let r = client.request("POST", &gw.url("/loud/shout"), &[("x-request-id", "mirror-loud")], b"make me loud").await;
    let text = r.text();
    let echo: serde_json::Value = serde_json::from_str(text.trim_end_matches('!')).unwrap();
    assert_eq!(echo["body"], "MAKE ME LOUD");
    assert_eq!(copies.of("mirror-loud").await.body, "MAKE ME LOUD");

    // A mirrored upload past the route's `max_body_bytes` is a 413, as when a plugin reads it:
    // neither upstream gets any of it.
    let (main_hits, mirror_hits) = (main.hits(), mirror.hits());
    let too_long = "POST /small HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n20\r\n0123456789abcdef0123456789abcdef\r\n0\r\n\r\n";
    let answer = raw_exchange(gw.addr(), too_long.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!((main.hits(), mirror.hits()), (main_hits, mirror_hits));

    // Each copy was answered and counted: 3 on `api`, 1 on `user`, 1 on `loud`.
    assert_eq!(copies.all().len(), 5);
    until("the copies counted", || async {
        [mirrored(&gw, "api", "sent").await, mirrored(&gw, "user", "sent").await, mirrored(&gw, "loud", "sent").await] == [3.0, 1.0, 1.0]
    })
    .await;
    assert_eq!(mirrored(&gw, "api", "failed").await + mirrored(&gw, "api", "dropped").await, 0.0);
    // The access log line is the client's request's, naming the route's upstream.
    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "mirror-post").await;
    assert_eq!(line["upstream_addr"], main.addr.to_string(), "{line}");
    assert_eq!((line["status"].as_u64(), line["bytes_in"].as_u64()), (Some(200), Some(body.len() as u64)), "{line}");
    // `/admin/routes` shows each route's mirror.
    let shown = admin_mirror(&gw, "api").await;
    assert_eq!((shown["upstream"].as_str(), shown["percent"].as_f64()), (Some("shadow"), Some(100.0)), "{shown}");
    assert_eq!(shown["max_in_flight"], 64);
    gw.stop().await;
}

/// A mirror that hangs (accepts, never answers) or refuses connections: every client request is
/// answered by the route's upstream, while the copies hang, well within the mirror's request
/// timeout; refused copies are counted as failed, hanging ones stay in flight. Stopping the
/// gateway does not wait for copies in flight.
#[tokio::test]
async fn a_mirror_that_hangs_or_refuses_never_delays_or_changes_the_answer() {
    let main = Upstream::start().await;
    let (hanging, accepted, _hold) = hanging_mirror().await;
    let refusing = refusing_addr().await;
    let routes = "\n[upstreams.refusing]\ntargets = [\"REFUSING\"]\n\n[timeouts]\ndrain_ms = 60000\n\n[[routes]]\nid = \"hangs\"\npath_prefix = \"/hangs\"\nupstream = \"main\"\nmirror = { upstream = \"shadow\" }\n\n[[routes]]\nid = \"refused\"\npath_prefix = \"/refused\"\nupstream = \"main\"\nmirror = { upstream = \"refusing\" }\n";
    // The hanging mirror's timeout is a minute: far beyond the 5 s each answer is given.
    let gw = Gateway::start(&config(main.addr, hanging, 60_000, &routes.replace("REFUSING", &refusing.to_string())), None).await;
    let client = HttpClient::http1();
    for i in 0..10 {
        for route in ["hangs", "refused"] {
            let r = answered_within(&client, Duration::from_secs(5), get(&gw.url(&format!("/{route}/{i}")), &format!("{route}-{i}"))).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["path"], format!("/{route}/{i}"), "the route's upstream's answer");
        }
    }
    // The copies did reach the hanging mirror, and are still waiting there.
    eventually("10 copies at the hanging mirror", || (accepted.load(Ordering::SeqCst) == 10).then_some(())).await;
    assert_eq!(admin_mirror(&gw, "hangs").await["in_flight"], 10);
    assert_eq!(mirrored(&gw, "hangs", "failed").await, 0.0, "not before their timeout");
    // The refused ones failed, each counted.
    let refused = [("route", "refused"), ("upstream", "refusing"), ("outcome", "failed")];
    until("10 refused copies counted", || async { metric_value(&gw, "airlock_mirror_requests_total", &refused).await == 10.0 }).await;
    assert_eq!(main.hits(), 20);
    // Ten copies hang for another minute, and the drain allows one: stopping is not held up.
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), gw.stop()).await.expect("the gateway stopped without waiting for its mirror requests");
}

/// `percent` draws that share of requests: 50 % of 200 lands within a wide band, 100 % is all
/// of them, and a request a plugin answers (or a WebSocket handshake) is never mirrored.
#[tokio::test]
async fn percent_mirrors_that_share_and_answered_requests_are_not_mirrored() {
    let main = Upstream::start().await;
    let (mirror, copies) = recording_mirror().await;
    let routes = r#"
[[consumers]]
id = "alice"
credentials = { keys = ["alice-key"] }

[[routes]]
id = "half"
path_prefix = "/half"
upstream = "main"
mirror = { upstream = "shadow", percent = 50 }

[[routes]]
id = "all"
path_prefix = "/all"
upstream = "main"
mirror = { upstream = "shadow", percent = 100 }

[[routes]]
id = "keyed"
path_prefix = "/keyed"
upstream = "main"
mirror = { upstream = "shadow" }
[[routes.plugins]]
plugin = "builtin:key-auth"

[[routes]]
id = "stub"
path_prefix = "/stub"
upstream = "main"
mirror = { upstream = "shadow" }
[[routes.plugins]]
plugin = "builtin:respond"
config = { status = 200, body = "from the stub" }
"#;
    let gw = Gateway::start(&config(main.addr, mirror.addr, 5000, routes), None).await;
    let client = HttpClient::http1();
    for i in 0..200 {
        assert_eq!(client.get(&gw.url(&format!("/half/{i}"))).await.status, 200);
        assert_eq!(client.get(&gw.url(&format!("/all/{i}"))).await.status, 200);
    }
    // Once no copy is in flight, the mirror has every one (it records a copy before answering).
    until("no copy in flight", || async {
        admin_mirror(&gw, "half").await["in_flight"] == 0 && admin_mirror(&gw, "all").await["in_flight"] == 0
    })
    .await;
    let count = |prefix: &str| copies.all().iter().filter(|c| c.path.starts_with(prefix)).count();
    let half = count("/half/");
    assert!((60..=140).contains(&half), "{half} of 200 mirrored at 50 %");
    assert_eq!(count("/all/"), 200);
    until("the copies counted", || async {
        mirrored(&gw, "half", "sent").await == half as f64 && mirrored(&gw, "all", "sent").await == 200.0
    })
    .await;

    // Refused by key-auth, answered by builtin:respond: not mirrored. Let through: mirrored.
    let before = copies.all().len();
    let r = client.get(&gw.url("/keyed/no-key")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = client.get(&gw.url("/stub/x")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "from the stub"));
    // A WebSocket handshake (the echo answers it 200, not 101): sent upstream, not mirrored.
    let ws = [("connection", "upgrade"), ("upgrade", "websocket"), ("sec-websocket-version", "13"), ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")];
    let r = client.request("GET", &gw.url("/all/ws"), &ws, b"").await;
    assert_eq!(r.json()["path"], "/all/ws", "the handshake reached the upstream");
    let r = client.send(Request::get(gw.url("/keyed/in")).header("x-api-key", "alice-key").header("x-request-id", "keyed-in").body(Full::default()).unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    copies.of("keyed-in").await;
    let after: Vec<String> = copies.all()[before..].iter().map(|c| c.path.clone()).collect();
    assert_eq!(after, ["/keyed/in"], "only the request that went upstream was mirrored");
    assert_eq!(mirrored(&gw, "stub", "sent").await + mirrored(&gw, "stub", "dropped").await, 0.0);
    gw.stop().await;
}

/// More copies than the route's cap (64 in flight) to a mirror that hangs: the ones past it are
/// not sent, counted `dropped`; the gateway keeps answering; the copies in flight end, counted
/// `failed`, at the mirror's request timeout, and then requests are mirrored again.
#[tokio::test]
async fn copies_past_the_cap_are_dropped_and_those_in_flight_end_at_the_mirrors_timeout() {
    let main = Upstream::start().await;
    let (hanging, accepted, _hold) = hanging_mirror().await;
    let routes = "\n[[routes]]\nid = \"capped\"\npath_prefix = \"/\"\nupstream = \"main\"\nmirror = { upstream = \"shadow\" }\n";
    let gw = Gateway::start(&config(main.addr, hanging, 4000, routes), None).await;
    let client = HttpClient::http1();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (client, url) = (client.clone(), gw.url(&format!("/burst/{i}")));
        requests.spawn(async move { answered_within(&client, Duration::from_secs(3), get(&url, &format!("burst-{i}"))).await });
    }
    while let Some(reply) = requests.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.json()["path"].as_str().unwrap().starts_with("/burst/"));
    }
    assert_eq!(main.hits(), 100);
    assert_eq!(mirrored(&gw, "capped", "dropped").await, 36.0, "100 requests, 64 places");
    assert_eq!(admin_mirror(&gw, "capped").await["in_flight"], 64);
    eventually("64 copies at the hanging mirror", || (accepted.load(Ordering::SeqCst) == 64).then_some(())).await;
    assert_eq!(mirrored(&gw, "capped", "failed").await, 0.0, "hanging, not yet timed out");

    // At the mirror's 4 s request timeout they end, failed, and their places are free again.
    until("the copies in flight ended at the mirror's timeout", || async { mirrored(&gw, "capped", "failed").await == 64.0 }).await;
    assert_eq!(admin_mirror(&gw, "capped").await["in_flight"], 0);
    assert_eq!(mirrored(&gw, "capped", "sent").await, 0.0);
    let r = client.get(&gw.url("/after")).await;
    assert_eq!(r.status, 200);
    eventually("a copy sent again", || (accepted.load(Ordering::SeqCst) == 65).then_some(())).await;
    assert_eq!(mirrored(&gw, "capped", "dropped").await, 36.0);
    gw.stop().await;
}

/// `n` requests to `/{tag}/<i>` at once, each answered 200 by the route's upstream within 3 s.
async fn burst(gw: &Gateway, client: &HttpClient, tag: &str, n: usize) {
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..n {
        let (client, url, id) = (client.clone(), gw.url(&format!("/{tag}/{i}")), format!("{tag}-{i}"));
        requests.spawn(async move { answered_within(&client, Duration::from_secs(3), get(&url, &id)).await });
    }
    while let Some(reply) = requests.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

/// The cap is the route's, whatever reloads happen: with 64 copies hanging at its mirror, a
/// reload (which also points the route's mirror at another upstream that hangs) does not give
/// the route 64 more. `/admin/routes` shows the 64 still in flight, the next 64 requests are not
/// mirrored (counted `dropped`), and once the old copies end at their timeout their places are
/// the new config's again.
#[tokio::test]
async fn the_cap_on_copies_in_flight_holds_across_a_reload() {
    let main = Upstream::start().await;
    let (hanging, accepted, _hold) = hanging_mirror().await;
    let (other, other_accepted, _hold_other) = hanging_mirror().await;
    let routes = |mirror: &str| {
        format!("\n[upstreams.other]\ntargets = [\"{other}\"]\nrequest_timeout_ms = 60000\n\n[[routes]]\nid = \"capped\"\npath_prefix = \"/\"\nupstream = \"main\"\nmirror = {{ upstream = \"{mirror}\" }}\n")
    };
    // The copies to `shadow` hang until its 6 s request timeout: long past the reload below.
    let gw = Gateway::start(&config(main.addr, hanging, 6000, &routes("shadow")), None).await;
    let client = HttpClient::http1();
    burst(&gw, &client, "before", 64).await;
    eventually("64 copies at the hanging mirror", || (accepted.load(Ordering::SeqCst) == 64).then_some(())).await;
    assert_eq!(admin_mirror(&gw, "capped").await["in_flight"], 64);

    gw.reload(&config(main.addr, hanging, 6000, &routes("other")), None).await.expect("reloaded");
    let shown = admin_mirror(&gw, "capped").await;
    assert_eq!((shown["upstream"].as_str(), shown["in_flight"].as_u64()), (Some("other"), Some(64)), "the copies sent before the reload: {shown}");
    burst(&gw, &client, "after", 64).await;
    let other_dropped = [("route", "capped"), ("upstream", "other"), ("outcome", "dropped")];
    assert_eq!(metric_value(&gw, "airlock_mirror_requests_total", &other_dropped).await, 64.0, "no place left for the route");
    assert_eq!(admin_mirror(&gw, "capped").await["in_flight"], 64);
    assert_eq!((accepted.load(Ordering::SeqCst), other_accepted.load(Ordering::SeqCst)), (64, 0), "no copy of the 64 after the reload");
    assert_eq!(main.hits(), 128);

    // The old copies end at `shadow`'s timeout, and give their places back to the route.
    until("the old copies ended at their timeout", || async { mirrored(&gw, "capped", "failed").await == 64.0 }).await;
    assert_eq!(admin_mirror(&gw, "capped").await["in_flight"], 0);
    assert_eq!(client.get(&gw.url("/later")).await.status, 200);
    eventually("a copy at the new mirror", || (other_accepted.load(Ordering::SeqCst) == 1).then_some(())).await;
    assert_eq!(admin_mirror(&gw, "capped").await["in_flight"], 1);
    gw.stop().await;
}

/// A hand-made HTTP/2 (prior knowledge) client connection, for frames hyper's client never sends
/// as asked (a stream reset with `NO_ERROR` mid-body). What the gateway sends is read and
/// discarded, after its SETTINGS are acknowledged.
struct RawH2 {
    writer: tokio::net::tcp::OwnedWriteHalf,
    _reader: tokio::task::JoinHandle<()>,
}

impl RawH2 {
    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;

    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut reader, mut writer) = stream.into_split();
        writer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
        writer.write_all(&frame(Self::SETTINGS, 0, 0, &[])).await.expect("settings");
        // The server's SETTINGS come first: acknowledged before anything else is sent.
        loop {
            let (kind, flags, _) = read_frame(&mut reader).await.expect("the gateway's SETTINGS");
            if kind == Self::SETTINGS && flags & Self::ACK == 0 {
                break;
            }
        }
        writer.write_all(&frame(Self::SETTINGS, Self::ACK, 0, &[])).await.expect("settings ack");
        let reader = tokio::spawn(async move { while read_frame(&mut reader).await.is_some() {} });
        Self { writer, _reader: reader }
    }

    /// A `POST path` on `stream` with `fields`, its body to follow.
    async fn post(&mut self, stream: u32, path: &str, fields: &[(&str, &str)]) {
        let mut block = Vec::new();
        for (name, value) in [(":method", "POST"), (":scheme", "http"), (":authority", "gw"), (":path", path)].iter().chain(fields) {
            // HPACK literal without indexing, new name, no Huffman (RFC 7541 6.2.2).
            block.push(0x00);
            for s in [name, value] {
                block.push(u8::try_from(s.len()).ok().filter(|&n| n < 127).expect("short"));
                block.extend_from_slice(s.as_bytes());
            }
        }
        self.writer.write_all(&frame(Self::HEADERS, Self::END_HEADERS, stream, &block)).await.expect("headers");
    }

    async fn data(&mut self, stream: u32, data: &[u8], end: bool) {
        self.writer.write_all(&frame(Self::DATA, if end { Self::END_STREAM } else { 0 }, stream, data)).await.expect("data");
    }

    /// RST_STREAM with error code NO_ERROR (0).
    async fn reset_no_error(&mut self, stream: u32) {
        self.writer.write_all(&frame(Self::RST_STREAM, 0, stream, &0u32.to_be_bytes())).await.expect("reset");
    }
}

/// An HTTP/2 frame: length (24 bits), type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The next frame's type, flags and payload; `None` once the connection ends.
async fn read_frame(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Option<(u8, u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    reader.read_exact(&mut head).await.ok()?;
    let mut payload = vec![0; u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize];
    reader.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], payload))
}

/// An HTTP/2 client that abandons its upload by resetting its stream with `NO_ERROR`, which ends
/// the body early without an error (RFC 9113 8.1): no copy goes to the mirror. Its
/// `Content-Length` declared, the body is refused short of it (400 `client_aborted`, as a broken
/// upload); none declared, or no body sent yet, the request is dropped before it goes upstream
/// (499) and so is its copy. A whole upload on the same connection is mirrored.
#[tokio::test]
async fn an_upload_the_client_abandons_mid_body_is_never_mirrored() {
    let main = Upstream::start().await;
    let (mirror, copies) = recording_mirror().await;
    let routes = "\n[[routes]]\nid = \"uploads\"\npath_prefix = \"/\"\nupstream = \"main\"\nmirror = { upstream = \"shadow\" }\n";
    let gw = Gateway::start(&config(main.addr, mirror.addr, 5000, routes), None).await;
    let log = gw.dir.path().join("access.log");
    let mut h2 = RawH2::connect(gw.addr()).await;
    let chunk = [b'x'; 1000];
    // (stream, request id, declared length, body sent before the reset, status logged)
    let abandoned = [
        (1, "abandoned-declared", Some("50000"), &chunk[..], 400),
        (3, "abandoned-undeclared", None, &chunk[..], 499),
        (5, "abandoned-before-any", None, &[][..], 499),
    ];
    for (stream, request_id, length, sent, status) in abandoned {
        let mut fields = vec![("x-request-id", request_id)];
        fields.extend(length.map(|length| ("content-length", length)));
        h2.post(stream, &format!("/{request_id}"), &fields).await;
        if !sent.is_empty() {
            h2.data(stream, sent, false).await;
        }
        // The gateway reads the body, waiting for more; then the client gives up.
        tokio::time::sleep(Duration::from_millis(200)).await;
        h2.reset_no_error(stream).await;
        let line = access_log_line(&log, request_id).await;
        assert_eq!(line["status"], status, "{line}");
    }
    h2.post(7, "/whole", &[("x-request-id", "whole-upload"), ("content-length", "5")]).await;
    h2.data(7, b"whole", true).await;
    let copy = copies.of("whole-upload").await;
    assert_eq!((copy.method.as_str(), copy.body.as_ref()), ("POST", &b"whole"[..]));
    assert_eq!(access_log_line(&log, "whole-upload").await["status"], 200);

    // Every request has ended, and with it every copy (a copy holds its place until it ends):
    // the mirror got the whole upload's alone.
    until("no copy in flight", || async { admin_mirror(&gw, "uploads").await["in_flight"] == 0 }).await;
    let got: Vec<String> = copies.all().iter().map(|c| format!("{} {} ({} bytes)", c.method, c.path, c.body.len())).collect();
    assert_eq!(got, ["POST /whole (5 bytes)"]);
    until("the copy counted", || async { mirrored(&gw, "uploads", "sent").await == 1.0 }).await;
    assert_eq!(mirrored(&gw, "uploads", "failed").await + mirrored(&gw, "uploads", "dropped").await, 0.0);
    gw.stop().await;
}

/// A mirror to the route's own upstream is allowed (as Envoy allows it): that upstream gets each
/// request twice, and the client one answer.
#[tokio::test]
async fn a_mirror_to_the_routes_own_upstream_sends_it_each_request_twice() {
    let main = Upstream::start().await;
    let routes = "\n[[routes]]\nid = \"twice\"\npath_prefix = \"/\"\nupstream = \"main\"\nmirror = { upstream = \"main\" }\n";
    let gw = Gateway::start(&config(main.addr, main.addr, 5000, routes), None).await;
    let r = HttpClient::http1().request("PUT", &gw.url("/thing"), &[], b"once").await;
    assert_eq!((r.status.as_u16(), r.json()["body"].as_str()), (200, Some("once")));
    eventually("the copy at the upstream", || (main.hits() == 2).then_some(())).await;
    // Counted `sent` once the upstream has answered the copy, which is after it has seen it.
    let labels = [("route", "twice"), ("upstream", "main"), ("outcome", "sent")];
    until("the copy counted", || async { metric_value(&gw, "airlock_mirror_requests_total", &labels).await == 1.0 }).await;
    assert_eq!(main.hits(), 2, "one copy, not more");
    gw.stop().await;
}
