//! `balance = "least_requests"` over real sockets: real backends (one slow, one fast; one that
//! holds a response body open until the test lets it end; one failing its health check; one
//! whose port refuses connections until it comes back) behind the real gateway. Each behaviour
//! is set against `round_robin` where the two differ, so the assertions can fail. No assertion
//! is on wall-clock speed: slow backends only make requests overlap.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use airlock_tests::{Gateway, HttpClient};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A loopback address nothing listens on (bound, then released): connecting is refused.
fn refused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

/// A response body: `head` at once, then, if `end` is set, one more frame once it completes.
struct Held {
    head: Option<Bytes>,
    end: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Body for Held {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        let Some(end) = &mut this.end else { return Poll::Ready(None) };
        std::task::ready!(end.as_mut().poll(cx));
        this.end = None;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b" end")))))
    }
}

/// How a backend answers.
#[derive(Clone)]
struct Behaviour {
    /// Held this long before answering (not `/health`, not `/hold`).
    delay: Duration,
    /// `/health` answers 500: its health check fails.
    sick: bool,
    /// `/hold` answers its head at once and ends its body once this turns true.
    release: tokio::sync::watch::Receiver<bool>,
}

/// A real HTTP/1.1 backend answering its name; counts the requests it got (probes left out).
struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(name: &'static str, behaviour: Behaviour) -> Self {
        Self::on("127.0.0.1:0".parse().expect("addr"), name, behaviour).await
    }

    async fn on(addr: SocketAddr, name: &'static str, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind the backend");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (counted, behaviour) = (counted.clone(), behaviour.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (counted, behaviour) = (counted.clone(), behaviour.clone());
                        async move { Ok::<_, Infallible>(answer(name, &req, &counted, behaviour).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, hits, task }
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

async fn answer(name: &'static str, req: &Request<Incoming>, hits: &AtomicUsize, behaviour: Behaviour) -> Response<Held> {
    let whole = |status: StatusCode| {
        let mut response = Response::new(Held { head: Some(Bytes::from(name)), end: None });
        *response.status_mut() = status;
        response
    };
    match req.uri().path() {
        "/health" => whole(if behaviour.sick { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }),
        "/hold" => {
            hits.fetch_add(1, Ordering::SeqCst);
            let mut release = behaviour.release;
            let end = async move {
                let _ = release.wait_for(|go| *go).await;
            };
            Response::new(Held { head: Some(Bytes::from(name)), end: Some(Box::pin(end)) })
        }
        _ => {
            hits.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(behaviour.delay).await;
            whole(StatusCode::OK)
        }
    }
}

/// Behaviours sharing one release of their `/hold` bodies.
fn behaviours() -> (tokio::sync::watch::Sender<bool>, impl Fn(Duration, bool) -> Behaviour) {
    let (release, released) = tokio::sync::watch::channel(false);
    (release, move |delay, sick| Behaviour { delay, sick, release: released.clone() })
}

/// An upstream `pair` of these targets balanced by `balance` (`extra` lines added to it), all
/// paths routed to it.
fn config(targets: &[String], balance: &str, extra: &str) -> String {
    let targets = targets.join(", ");
    format!("[upstreams.pair]\ntargets = [{targets}]\nbalance = \"{balance}\"\n{extra}\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"pair\"\n")
}

fn quoted(addr: SocketAddr) -> String {
    format!("\"{addr}\"")
}

/// `pair`'s upstream as `/admin/routes` describes it.
async fn admin_upstream(gw: &Gateway) -> serde_json::Value {
    let routes = HttpClient::http1().get(&gw.admin_url("/admin/routes")).await.json();
    routes["routes"][0]["upstream"].clone()
}

/// Waits (up to 10 s) until `/admin/routes` shows these requests in flight per target.
async fn in_flight_becomes(gw: &Gateway, expected: serde_json::Value) {
    let mut seen = serde_json::Value::Null;
    for _ in 0..500 {
        seen = admin_upstream(gw).await["in_flight"].clone();
        if seen == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("in flight: {seen}, expected {expected}");
}

/// Waits (up to 10 s) until `backend` has had `n` requests.
async fn hits_reach(backend: &Backend, n: usize) {
    for _ in 0..500 {
        if backend.hits() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the backend had {} requests, not {n}", backend.hits());
}

/// `total` requests from `concurrency` clients at once, each sending its next as soon as the
/// last is answered; every one must succeed.
async fn load(gw: &Gateway, concurrency: usize, total: usize) {
    let sent = Arc::new(AtomicUsize::new(0));
    let client = HttpClient::http1();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (sent, client, url) = (sent.clone(), client.clone(), gw.url("/work"));
            tokio::spawn(async move {
                while sent.fetch_add(1, Ordering::SeqCst) < total {
                    let r = client.get(&url).await;
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
}

/// A target answering in 300 ms and one answering at once, under 8 concurrent clients (64
/// requests): least_requests sends the slow one only what arrives while the fast one is as busy
/// (a handful), round-robin sends it every other request.
#[tokio::test]
async fn a_slow_target_gets_fewer_requests_than_a_fast_one() {
    let (_release, behaviour) = behaviours();
    let slow = Backend::start("slow", behaviour(Duration::from_millis(300), false)).await;
    let fast = Backend::start("fast", behaviour(Duration::ZERO, false)).await;
    let total = 64;
    let targets = [quoted(slow.addr), quoted(fast.addr)];

    let gw = Gateway::start(&config(&targets, "least_requests", ""), None).await;
    load(&gw, 8, total).await;
    let (to_slow, to_fast) = (slow.hits(), fast.hits());
    assert_eq!(to_slow + to_fast, total);
    assert!(to_slow <= total / 4 && to_fast >= 3 * to_slow, "least_requests: slow {to_slow}, fast {to_fast}");
    in_flight_becomes(&gw, serde_json::json!([0, 0])).await;
    gw.stop().await;

    // The same with round-robin: an even split, however slow one of them is.
    let gw = Gateway::start(&config(&targets, "round_robin", ""), None).await;
    load(&gw, 8, total).await;
    let (to_slow, to_fast) = (slow.hits() - to_slow, fast.hits() - to_fast);
    assert!(to_slow.abs_diff(to_fast) <= total / 8, "round_robin: slow {to_slow}, fast {to_fast}");
    assert_eq!(admin_upstream(&gw).await["in_flight"], serde_json::Value::Null, "round-robin counts nothing");
    gw.stop().await;
}

/// A response whose head has reached the client but whose body is still streaming keeps its
/// target busy: with least_requests, every request meanwhile goes to the other target (with
/// round-robin, half of them go to the busy one). Once the body has ended, the count is given
/// back and both targets share requests again.
#[tokio::test]
async fn a_response_body_still_streaming_counts_as_in_flight() {
    for balance in ["least_requests", "round_robin"] {
        let (release, behaviour) = behaviours();
        let a = Backend::start("a", behaviour(Duration::ZERO, false)).await;
        let b = Backend::start("b", behaviour(Duration::ZERO, false)).await;
        let gw = Gateway::start(&config(&[quoted(a.addr), quoted(b.addr)], balance, ""), None).await;
        // Its own client: the response head is awaited, its body left unread for now.
        let raw = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let held = raw.request(Request::get(gw.url("/hold")).body(Full::default()).expect("request")).await.expect("head");
        assert_eq!(held.status(), 200);
        let (busy, other) = if a.hits() == 1 { (&a, &b) } else { (&b, &a) };
        assert_eq!((busy.hits(), other.hits()), (1, 0));
        let client = HttpClient::http1();
        for i in 0..6 {
            assert_eq!(client.get(&gw.url(&format!("/quick/{i}"))).await.status, 200);
        }
        let busy_got = busy.hits() - 1;
        match balance {
            "least_requests" => assert_eq!((busy_got, other.hits()), (0, 6), "{balance}: nothing to the target still streaming"),
            _ => assert_eq!((busy_got, other.hits()), (3, 3), "{balance}: an even split"),
        }
        if balance == "least_requests" {
            // `/admin/routes` shows it too.
            let expected = if busy.addr == a.addr { [1, 0] } else { [0, 1] };
            in_flight_becomes(&gw, serde_json::json!(expected)).await;
        }
        // The body ends: the client reads it whole, and the count goes.
        release.send(true).expect("the backends listen");
        let body = held.into_body().collect().await.expect("the whole body").to_bytes();
        assert!(body.ends_with(b" end"), "{body:?}");
        if balance == "least_requests" {
            in_flight_becomes(&gw, serde_json::json!([0, 0])).await;
        }
        let before = busy.hits();
        for _ in 0..4 {
            assert_eq!(client.get(&gw.url("/again")).await.status, 200);
        }
        assert_eq!(busy.hits() - before, 2, "{balance}: shared again once the body has ended");
        gw.stop().await;
    }
}

/// Weights 3 and 1, both answering alike. Sequential requests find nothing in flight: every
/// choice is a tie, which the weighted round decides, so they split exactly 3:1 (30 and 10 of
/// 40). Under concurrent load each target is kept at in-flight requests in proportion to its
/// weight, so the split stays about 3:1.
#[tokio::test]
async fn weights_set_the_shares() {
    let (_release, behaviour) = behaviours();
    let heavy = Backend::start("heavy", behaviour(Duration::ZERO, false)).await;
    let light = Backend::start("light", behaviour(Duration::ZERO, false)).await;
    let targets = [format!("{{ address = \"{}\", weight = 3 }}", heavy.addr), quoted(light.addr)];
    let gw = Gateway::start(&config(&targets, "least_requests", ""), None).await;
    let client = HttpClient::http1();
    for _ in 0..40 {
        assert_eq!(client.get(&gw.url("/one-at-a-time")).await.status, 200);
    }
    assert_eq!((heavy.hits(), light.hits()), (30, 10), "sequential: the weighted round's 3:1");
    gw.stop().await;

    let heavy = Backend::start("heavy", behaviour(Duration::from_millis(150), false)).await;
    let light = Backend::start("light", behaviour(Duration::from_millis(150), false)).await;
    let targets = [format!("{{ address = \"{}\", weight = 3 }}", heavy.addr), quoted(light.addr)];
    let gw = Gateway::start(&config(&targets, "least_requests", ""), None).await;
    load(&gw, 8, 48).await;
    let (h, l) = (heavy.hits(), light.hits());
    assert!(h >= 2 * l && h <= 5 * l, "concurrent: about 3:1, got {h} and {l}");
    gw.stop().await;
}

/// A target its health check has taken out of rotation gets no request, though it is the least
/// loaded by far (the other holds each request 200 ms).
#[tokio::test]
async fn a_target_out_of_rotation_is_not_chosen() {
    let (_release, behaviour) = behaviours();
    let busy = Backend::start("busy", behaviour(Duration::from_millis(200), false)).await;
    let sick = Backend::start("sick", behaviour(Duration::ZERO, true)).await;
    let check = "[upstreams.pair.health_check]\npath = \"/health\"\ninterval_ms = 50\nunhealthy_threshold = 1";
    let gw = Gateway::start(&config(&[quoted(busy.addr), quoted(sick.addr)], "least_requests", check), None).await;
    for _ in 0..500 {
        if admin_upstream(&gw).await["in_rotation"] == serde_json::json!([true, false]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(admin_upstream(&gw).await["in_rotation"], serde_json::json!([true, false]), "the probes found it sick");
    load(&gw, 6, 12).await;
    assert_eq!((busy.hits(), sick.hits()), (12, 0));
    gw.stop().await;
}

/// A target that refuses connections (never marked down: `max_fails = 0`) is chosen while it
/// is the least loaded, and each request fails over to the other: its count goes with it, so
/// the refusing target is not left counted busy (it would never be chosen again) and the one
/// serving is seen as busy. Once the target is back, it gets its share.
#[tokio::test]
async fn a_failover_moves_the_count_to_the_target_that_serves() {
    let (release, behaviour) = behaviours();
    let down = refused_addr();
    let up = Backend::start("up", behaviour(Duration::ZERO, false)).await;
    let gw = Gateway::start(&config(&[quoted(down), quoted(up.addr)], "least_requests", "max_fails = 0"), None).await;
    let client = HttpClient::http1();
    let mut held = Vec::new();
    for n in 1..=3 {
        let (client, url) = (client.clone(), gw.url("/hold"));
        held.push(tokio::spawn(async move { client.get(&url).await }));
        hits_reach(&up, n).await;
        // The refused target, idle, is chosen each time, and each request moves on to `up`.
        in_flight_becomes(&gw, serde_json::json!([0, n])).await;
    }
    release.send(true).expect("the backend listens");
    for request in held {
        let r = request.await.expect("request");
        assert_eq!((r.status.as_u16(), r.text()), (200, "up end".to_owned()));
    }
    in_flight_becomes(&gw, serde_json::json!([0, 0])).await;
    for _ in 0..6 {
        assert_eq!(client.get(&gw.url("/still-refused")).await.status, 200);
    }
    in_flight_becomes(&gw, serde_json::json!([0, 0])).await;

    let back = Backend::on(down, "back", behaviour(Duration::ZERO, false)).await;
    for _ in 0..10 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    assert!(back.hits() >= 3, "the target back gets its share: {} of 10", back.hits());
    gw.stop().await;
}
