//! Active health checks (`[upstreams.<name>.health_check]`) against real backends: a target
//! failing its probes (a bad status, a refused connection, no answer) leaves rotation with no
//! client request having to find it, comes back once it passes again, and the
//! `airlock_upstream_target_up` gauge says which is which. A reload that drops the check stops
//! the probing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_tests::metrics::{sample, scrape};
use airlock_tests::{Gateway, HttpClient};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A backend whose `/healthz` answers the status it is set to, and every other path its name.
/// It counts probes (by their `User-Agent`) apart from traffic, and keeps the last probe's head.
struct Backend {
    addr: SocketAddr,
    health: Arc<AtomicU16>,
    probes: Arc<AtomicUsize>,
    traffic: Arc<AtomicUsize>,
    last_probe: Arc<Mutex<Option<(String, String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(name: &'static str, health: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the backend");
        let addr = listener.local_addr().expect("addr");
        let health = Arc::new(AtomicU16::new(health));
        let (probes, traffic) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let last_probe = Arc::new(Mutex::new(None));
        let (h, p, t, l) = (health.clone(), probes.clone(), traffic.clone(), last_probe.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (h, p, t, l) = (h.clone(), p.clone(), t.clone(), l.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let header = |name: &str| req.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                        let agent = header("user-agent").unwrap_or_default();
                        let reply = if agent == "airlock-health-check" {
                            p.fetch_add(1, Ordering::SeqCst);
                            let head = (req.uri().to_string(), header("host").unwrap_or_default(), header("connection").unwrap_or_default());
                            *l.lock().unwrap() = Some(head);
                            let mut r = Response::new(Full::new(Bytes::from_static(b"health")));
                            *r.status_mut() = StatusCode::from_u16(h.load(Ordering::SeqCst)).unwrap();
                            r
                        } else {
                            t.fetch_add(1, Ordering::SeqCst);
                            Response::new(Full::new(Bytes::from(name)))
                        };
                        async move { Ok::<_, Infallible>(reply) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, health, probes, traffic, last_probe, task }
    }

    fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    fn traffic(&self) -> usize {
        self.traffic.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `airlock_upstream_target_up` of `target` in upstream `api`, once it is `want` (panics after ~10 s).
async fn wait_for_target(gw: &Gateway, target: SocketAddr, want: f64) {
    let client = HttpClient::http1();
    let target = target.to_string();
    for _ in 0..500 {
        let m = scrape(&client, gw, None).await;
        if sample(&m, "airlock_upstream_target_up", &[("upstream", "api"), ("target", &target)]) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{target} never had airlock_upstream_target_up = {want}");
}

/// Sends `n` requests and returns the bodies (each backend answers its name).
async fn names(gw: &Gateway, n: usize) -> Vec<String> {
    let client = HttpClient::http1();
    let mut out = Vec::new();
    for _ in 0..n {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        out.push(r.text());
    }
    out
}

/// The two backends' addresses, as `targets` entries.
fn addrs(a: &Backend, b: &Backend) -> [String; 2] {
    [a.addr.to_string(), b.addr.to_string()]
}

/// Upstream `api` of `targets`, with `check` (its keys, then its `health_check` table) after them.
fn config(targets: &[String], check: &str) -> String {
    let targets = targets.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[upstreams.api]
targets = [{targets}]
{check}

[[routes]]
id = "api"
path_prefix = "/"
upstream = "api"
"#
    )
}

const CHECK: &str = r#"[upstreams.api.health_check]
path = "/healthz?deep=1"
interval_ms = 50
timeout_ms = 50
unhealthy_threshold = 2
healthy_threshold = 2
"#;

#[tokio::test]
async fn a_target_failing_its_checks_leaves_rotation_until_it_passes_again() {
    let (a, b) = (Backend::start("a", 503).await, Backend::start("b", 200).await);
    let gw = Gateway::start(&config(&addrs(&a, &b), CHECK), None).await;

    // Taken out by its probes, with no client request having been sent to it.
    wait_for_target(&gw, a.addr, 0.0).await;
    wait_for_target(&gw, b.addr, 1.0).await;
    assert_eq!(a.traffic(), 0);
    assert!(a.probes() >= 2, "out after two failed probes, not before: {}", a.probes());
    // `/admin/routes` says so too, beside the weights.
    let routes = HttpClient::http1().get(&gw.admin_url("/admin/routes")).await.json();
    let upstream = &routes["routes"][0]["upstream"];
    assert_eq!((&upstream["in_rotation"], &upstream["weights"]), (&serde_json::json!([false, true]), &serde_json::json!([1, 1])));
    // The probe: the configured path and query, the target as Host, a new connection each time.
    let (uri, host, connection) = a.last_probe.lock().unwrap().clone().expect("a probe");
    assert_eq!((uri.as_str(), host, connection.as_str()), ("/healthz?deep=1", a.addr.to_string(), "close"));

    // Every request goes to the healthy target, though `a` would answer them.
    assert!(names(&gw, 10).await.iter().all(|n| n == "b"));
    assert_eq!(a.traffic(), 0);

    // Back in rotation once it passes again: requests reach it.
    a.set_health(200);
    wait_for_target(&gw, a.addr, 1.0).await;
    let answered = names(&gw, 10).await;
    assert_eq!(answered.iter().filter(|n| *n == "a").count(), 5, "{answered:?}");
    gw.stop().await;
}

#[tokio::test]
async fn statuses_say_what_passes() {
    // A backend whose health endpoint answers 204 is healthy by default (any 2xx or 3xx); with
    // `statuses = [200]` it is not.
    let (a, b) = (Backend::start("a", 204).await, Backend::start("b", 200).await);
    let check = format!("{CHECK}statuses = [200]\n");
    let gw = Gateway::start(&config(&addrs(&a, &b), &check), None).await;
    wait_for_target(&gw, a.addr, 0.0).await;
    assert!(names(&gw, 6).await.iter().all(|n| n == "b"));
    gw.stop().await;

    let gw = Gateway::start(&config(&addrs(&a, &b), CHECK), None).await;
    let before = a.probes();
    while a.probes() < before + 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_target(&gw, a.addr, 1.0).await;
    assert_eq!(names(&gw, 6).await.iter().filter(|n| *n == "a").count(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn targets_that_refuse_or_hang_are_taken_out_without_traffic() {
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // Accepts connections and never answers.
    let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hanging.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            kept.push(stream);
        }
    });
    let b = Backend::start("b", 200).await;
    let targets = [refused.to_string(), hang_addr.to_string(), b.addr.to_string()];
    let gw = Gateway::start(&config(&targets, CHECK), None).await;
    wait_for_target(&gw, refused, 0.0).await;
    wait_for_target(&gw, hang_addr, 0.0).await;
    wait_for_target(&gw, b.addr, 1.0).await;
    // No request pays for finding them down: each one is answered by `b` at once.
    assert!(names(&gw, 9).await.iter().all(|n| n == "b"));
    gw.stop().await;
    held.abort();
}

#[tokio::test]
async fn a_reload_without_the_check_stops_the_probing() {
    let (a, b) = (Backend::start("a", 200).await, Backend::start("b", 200).await);
    let targets = [a.addr.to_string(), b.addr.to_string()];
    let gw = Gateway::start(&config(&targets, CHECK), None).await;
    while a.probes() < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A reload that changes only a route keeps the upstream and its one probing task: the
    // probes go on at the same pace, not twice as fast.
    let renamed = config(&targets, CHECK).replace("id = \"api\"", "id = \"api2\"");
    gw.reload(&renamed, None).await.expect("reloaded");
    let before = a.probes();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probed = a.probes() - before;
    assert!((3..=11).contains(&probed), "{probed} probes in 500 ms at one per 50 ms");

    gw.reload(&config(&targets, ""), None).await.expect("reloaded");
    // A round under way when the reload landed may still end; none starts after it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = a.probes();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.probes(), stopped, "probes after the check was removed");
    assert_eq!(names(&gw, 4).await.len(), 4);
    gw.stop().await;
}

#[tokio::test]
async fn an_h2c_upstream_is_probed_over_http2() {
    let (a, b) = (Backend::start("a", 503).await, Backend::start("b", 200).await);
    let check = format!("protocol = \"h2c\"\n{CHECK}");
    let gw = Gateway::start(&config(&addrs(&a, &b), &check), None).await;
    wait_for_target(&gw, a.addr, 0.0).await;
    assert!(names(&gw, 6).await.iter().all(|n| n == "b"));
    // Over HTTP/2 (the server sees the `:scheme` and `:authority` in the URI), with no
    // `Connection` header, which would make it malformed there.
    let (uri, _, connection) = a.last_probe.lock().unwrap().clone().expect("a probe");
    assert_eq!((uri, connection.as_str()), (format!("http://{}/healthz?deep=1", a.addr), ""));
    a.set_health(200);
    wait_for_target(&gw, a.addr, 1.0).await;
    gw.stop().await;
}

/// Over HTTP/2 a configured `host` is the probe's `:authority` (a backend routing by name sees
/// it), with no `host` header beside it, which would make the request malformed if it differed
/// (RFC 9113 8.3.1); the probe still goes to the target.
#[tokio::test]
async fn an_http2_probe_names_its_host_as_the_authority() {
    let (a, b) = (Backend::start("a", 200).await, Backend::start("b", 200).await);
    let check = format!("protocol = \"h2c\"\n{CHECK}host = \"api.internal:8080\"\n");
    let gw = Gateway::start(&config(&addrs(&a, &b), &check), None).await;
    let before = a.probes();
    while a.probes() < before + 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (uri, host, _) = a.last_probe.lock().unwrap().clone().expect("a probe");
    assert_eq!((uri.as_str(), host.as_str()), ("http://api.internal:8080/healthz?deep=1", ""), "the authority, and no host header");
    wait_for_target(&gw, a.addr, 1.0).await;
    a.set_health(503);
    wait_for_target(&gw, a.addr, 0.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_target_out_of_rotation_shares_its_turns_among_the_others() {
    // Three targets, the middle one out: the other two share its turns evenly, rather than the
    // one after it taking them all (twice its share, and the next to fall under the load).
    let (a, b, c) = (Backend::start("a", 200).await, Backend::start("b", 503).await, Backend::start("c", 200).await);
    let gw = Gateway::start(&config(&[a.addr.to_string(), b.addr.to_string(), c.addr.to_string()], CHECK), None).await;
    wait_for_target(&gw, b.addr, 0.0).await;
    let answered = names(&gw, 12).await;
    assert_eq!(
        (answered.iter().filter(|n| *n == "a").count(), answered.iter().filter(|n| *n == "c").count()),
        (6, 6),
        "{answered:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_target_whose_probes_hang_does_not_slow_the_others_checks() {
    let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hanging.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            kept.push(stream);
        }
    });
    let b = Backend::start("b", 200).await;
    let check = "[upstreams.api.health_check]\npath = \"/healthz\"\ninterval_ms = 100\ntimeout_ms = 100\n";
    let gw = Gateway::start(&config(&[hang_addr.to_string(), b.addr.to_string()], check), None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = b.probes();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Its own schedule, one probe per 100 ms: ~10, where waiting for the hung one's timeout
    // in between would give ~5.
    let probed = b.probes() - before;
    assert!(probed >= 7, "{probed} probes of the healthy target in 1 s");
    gw.stop().await;
    held.abort();
}

#[tokio::test]
async fn a_reload_that_changes_the_upstream_keeps_a_down_target_out() {
    let (a, b) = (Backend::start("a", 200).await, Backend::start("b", 503).await);
    let targets = [a.addr.to_string(), b.addr.to_string()];
    let slow_check = CHECK.replace("interval_ms = 50", "interval_ms = 400").replace("timeout_ms = 50", "timeout_ms = 200");
    let gw = Gateway::start(&config(&targets, &slow_check), None).await;
    wait_for_target(&gw, b.addr, 0.0).await;
    // A weight changed: a new upstream, which must not put `b` back until it passes its probes.
    let weighted = [format!("{{ address = \"{}\", weight = 2 }}", a.addr), format!("\"{}\"", b.addr)];
    let text = format!(
        "[upstreams.api]\ntargets = [{}]\n{slow_check}\n[[routes]]\nid = \"api\"\npath_prefix = \"/\"\nupstream = \"api\"\n",
        weighted.join(", ")
    );
    gw.reload(&text, None).await.expect("reloaded");
    wait_for_target(&gw, b.addr, 0.0).await;
    assert!(names(&gw, 10).await.iter().all(|n| n == "a"));
    assert_eq!(b.traffic(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn with_every_target_out_a_refused_connect_still_fails_over() {
    // Both live targets fail only their (deep) probe; the third refuses connections. All three
    // are out, so requests go round-robin to all: the refused one's fail over to the others.
    let (a, b) = (Backend::start("a", 503).await, Backend::start("b", 503).await);
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let targets = [a.addr.to_string(), refused.to_string(), b.addr.to_string()];
    let gw = Gateway::start(&config(&targets, &format!("max_fails = 0\n{CHECK}")), None).await;
    for target in [a.addr, refused, b.addr] {
        wait_for_target(&gw, target, 0.0).await;
    }
    let answered = names(&gw, 12).await;
    assert!(answered.iter().all(|n| n == "a" || n == "b"), "{answered:?}");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// gRPC health checks (`grpc_service`)

/// A tonic gRPC server on h2c serving the standard health service (tonic-health), whose
/// statuses the test sets; or, `health = false`, a gRPC server without one.
struct GrpcBackend {
    addr: SocketAddr,
    reporter: tonic_health::server::HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcBackend {
    async fn start(health: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the gRPC backend");
        let addr = listener.local_addr().expect("addr");
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("demo.v1.Users", tonic_health::ServingStatus::Serving).await;
        let routes = if health { tonic::service::Routes::new(service) } else { tonic::service::Routes::default() };
        let service = hyper_util::service::TowerToHyperService::new(routes);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, reporter, task }
    }

    async fn set(&self, service: &str, status: tonic_health::ServingStatus) {
        self.reporter.set_service_status(service, status).await;
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Upstream `api` over h2c of `targets`, probed with the gRPC health check of `service`.
fn grpc_config(targets: &[SocketAddr], service: &str) -> String {
    let check = format!(
        "protocol = \"h2c\"\n[upstreams.api.health_check]\ngrpc_service = \"{service}\"\ninterval_ms = 100\ntimeout_ms = 100\nunhealthy_threshold = 2\nhealthy_threshold = 2\n"
    );
    config(&targets.iter().map(ToString::to_string).collect::<Vec<_>>(), &check)
}

#[tokio::test]
async fn a_grpc_target_is_in_rotation_while_its_health_service_says_serving() {
    let (a, b) = (GrpcBackend::start(true).await, GrpcBackend::start(true).await);
    let gw = Gateway::start(&grpc_config(&[a.addr, b.addr], ""), None).await;
    // Both in rotation, and they stay there (probes pass, not merely not yet failed).
    wait_for_target(&gw, a.addr, 1.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for_target(&gw, a.addr, 1.0).await;
    wait_for_target(&gw, b.addr, 1.0).await;

    // The server as a whole (`""`) goes NOT_SERVING (as a draining tonic server reports): out.
    a.set("", tonic_health::ServingStatus::NotServing).await;
    wait_for_target(&gw, a.addr, 0.0).await;
    wait_for_target(&gw, b.addr, 1.0).await;
    // SERVING again: back.
    a.set("", tonic_health::ServingStatus::Serving).await;
    wait_for_target(&gw, a.addr, 1.0).await;
    gw.stop().await;

    // One service, by name: its status counts, not the server's.
    let gw = Gateway::start(&grpc_config(&[a.addr, b.addr], "demo.v1.Users"), None).await;
    wait_for_target(&gw, a.addr, 1.0).await;
    a.set("demo.v1.Users", tonic_health::ServingStatus::NotServing).await;
    wait_for_target(&gw, a.addr, 0.0).await;
    wait_for_target(&gw, b.addr, 1.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_grpc_server_without_the_service_asked_about_is_out_though_it_answers_a_get() {
    // A gRPC server without a health service answers a GET probe with HTTP 200 (its
    // UNIMPLEMENTED is in grpc-status): the path check is blind to it.
    let bare = GrpcBackend::start(false).await;
    let healthy = GrpcBackend::start(true).await;
    let targets = [bare.addr.to_string(), healthy.addr.to_string()];
    let get_check = "protocol = \"h2c\"\n[upstreams.api.health_check]\npath = \"/\"\ninterval_ms = 100\ntimeout_ms = 100\nunhealthy_threshold = 2\n";
    let gw = Gateway::start(&config(&targets, get_check), None).await;
    let client = HttpClient::http1();
    let probed = |m: &prometheus_parse::Scrape| sample(m, "airlock_upstream_target_up", &[("upstream", "api"), ("target", &targets[0])]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(probed(&scrape(&client, &gw, None).await), 1.0, "a GET passes a gRPC server whatever it serves");
    gw.stop().await;

    // The gRPC health check: UNIMPLEMENTED (no health service) takes it out.
    let gw = Gateway::start(&grpc_config(&[bare.addr, healthy.addr], ""), None).await;
    wait_for_target(&gw, bare.addr, 0.0).await;
    wait_for_target(&gw, healthy.addr, 1.0).await;
    gw.stop().await;

    // A service the health service does not know (NOT_FOUND) takes out every target.
    let gw = Gateway::start(&grpc_config(&[healthy.addr], "demo.v1.Unknown"), None).await;
    wait_for_target(&gw, healthy.addr, 0.0).await;
    gw.stop().await;

    // And an HTTP/2 server that is not gRPC (answers 200 with no grpc-status): out too.
    let plain = Backend::start("plain", 200).await;
    let gw = Gateway::start(&grpc_config(&[plain.addr], ""), None).await;
    wait_for_target(&gw, plain.addr, 0.0).await;
    assert!(plain.probes() >= 2, "{}", plain.probes());
    gw.stop().await;
}

#[tokio::test]
async fn a_grpc_health_check_is_refused_at_its_line_where_it_cannot_work() {
    let up = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.api]\ntargets = [\"127.0.0.1:1\"]\n";
    for (body, line, key, says) in [
        ("[upstreams.api.health_check]\ngrpc_service = \"\"\n", 6, "health_check.grpc_service", "needs an HTTP/2 upstream"),
        ("protocol = \"h2c\"\n[upstreams.api.health_check]\npath = \"/\"\ngrpc_service = \"\"\n", 8, "health_check.grpc_service", "exclusive"),
        ("protocol = \"h2c\"\n[upstreams.api.health_check]\ngrpc_service = \"\"\nstatuses = [200]\n", 8, "health_check.statuses", "SERVING only"),
        ("[upstreams.api.health_check]\ninterval_ms = 1000\n", 5, "upstreams.api.health_check", "needs `path`"),
    ] {
        let config = format!("{up}{body}");
        let err = Gateway::try_start(&config, None).await.err().expect("refused").to_string();
        assert!(err.contains(&format!("airlock.toml:{line}")) && err.contains(key) && err.contains(says), "{config}\n{err}");
    }
}
