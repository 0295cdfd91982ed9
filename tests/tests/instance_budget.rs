//! `runtime.max_instances` bounds the plugin instances alive at once. Reaching it must not fail
//! requests as if a plugin had trapped: a call waits for a place (idle warm instances of other
//! pools are given up for it), and only when none comes free within the call's own limit is the
//! answer 503 `plugin_busy` (or the entry skipped, if it fails open), after which the gateway
//! serves on.
//!
//! Its own test binary: it loads one worker thread with CPU-heavy calls on purpose.

use std::time::{Duration, Instant};

use airlock_tests::metrics::{sample, scrape};
use airlock_tests::spin::{iterations_for, spin};
use airlock_tests::{Gateway, HttpClient, Upstream, metric_value};

/// The sandbox-wide counter or gauge `name` (no labels).
async fn sandbox_metric(gw: &Gateway, name: &str) -> f64 {
    metric_value(gw, name, &[]).await
}

/// One worker, `places` instance places, and per `(path, plugin, settings)` a route whose one
/// entry is the spin plugin defined under that name with those `[plugins.<name>]` lines: one
/// warm pool per route, told apart in the metrics.
fn spin_routes(places: u32, routes: &[(&str, &str, &str)]) -> String {
    let mut toml = format!("[runtime]\nworker_threads = 1\nmax_instances = {places}\n\n[upstreams.backend]\ntargets = [\"{{upstream}}\"]\n");
    for (path, plugin, settings) in routes {
        toml += &format!(
            "\n[plugins.{plugin}]\nsource = \"{{plugin:spin}}\"\n{settings}\n\n\
             [[routes]]\npath = \"{path}\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"{plugin}\"\n"
        );
    }
    toml
}

/// Four places; the spin plugin (long CPU deadline) under three names on /a, /b and /c.
fn four_places() -> String {
    spin_routes(4, &[("/a", "spin", "cpu_ms = 3000"), ("/b", "other", "cpu_ms = 3000"), ("/c", "third", "cpu_ms = 3000")])
}

/// Running time of one call of a burst: long enough that the calls of a burst are all in flight
/// together even on a loaded machine.
const CALL: Duration = Duration::from_millis(100);

/// `count` calls of `iterations` at once on `path`, each yielding every millisecond on the one
/// worker, so they are all in flight together; every one must succeed.
async fn burst(gw: &Gateway, path: &str, count: usize, iterations: u64) {
    let calls: Vec<_> = (0..count)
        .map(|_| {
            let url = gw.url(path);
            tokio::spawn(async move { spin(&HttpClient::http1(), &url, iterations).await })
        })
        .collect();
    for call in calls {
        let (status, body, _) = call.await.expect("request task");
        assert_eq!(status, 200, "a call failed for want of an instance: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_max_instances_wait_for_a_place_instead_of_failing() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&four_places(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let iterations = iterations_for(&client, &gw.url("/a"), CALL).await;
    assert_eq!(sandbox_metric(&gw, "airlock_plugin_instance_limit").await, 4.0);

    // Far more calls in flight than /a's 3 places (its share of 4): some wait for one.
    burst(&gw, "/a", 8, iterations).await;
    assert!(sandbox_metric(&gw, "airlock_plugin_instance_waits_total").await > 0.0, "no call waited: the test proves nothing");
    assert!(sandbox_metric(&gw, "airlock_plugin_instances").await <= 4.0);
    let busy = metric_value(&gw, "airlock_plugin_failures_total", &[("plugin", "spin"), ("kind", "busy")]).await;
    assert_eq!(busy, 0.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_of_one_route_make_room_for_another() {
    let upstream = Upstream::start().await;
    // Loaded: each route's pool holds one configured instance; one place is left.
    let gw = Gateway::start(&four_places(), Some(&upstream)).await;
    let client = HttpClient::http1();
    // Three calls of ~300 ms at once: on the one worker they all run together.
    let iterations = iterations_for(&client, &gw.url("/a"), Duration::from_millis(300)).await;
    let idle = || async {
        let m = scrape(&HttpClient::http1(), &gw, None).await;
        let idle = |plugin| sample(&m, "airlock_plugin_pool_idle_instances", &[("plugin", plugin)]);
        (idle("spin"), idle("other"), idle("third"))
    };
    assert_eq!(idle().await, (1.0, 1.0, 1.0));

    // They take /a's share, 3 places: its own instance, the free place and one given up by /b
    // or /c; then they stay idle in /a's pool.
    burst(&gw, "/a", 3, iterations).await;
    let after_burst = idle().await;
    assert_eq!(after_burst.0, 3.0, "the burst did not take /a's share: the test proves nothing");
    assert_eq!(after_burst.1 + after_burst.2, 1.0, "{after_burst:?}");
    assert!(sandbox_metric(&gw, "airlock_plugin_instances_reclaimed_total").await >= 1.0);
    assert_eq!(sandbox_metric(&gw, "airlock_plugin_instances").await, 4.0);

    // The route that gave up its instance is served at once, by taking one of the others'.
    for path in ["/b", "/c"] {
        let started = Instant::now();
        let (status, body, _) = spin(&client, &gw.url(path), 0).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(started.elapsed() < Duration::from_secs(1), "{path} served only after {:?}", started.elapsed());
    }
    assert!(sandbox_metric(&gw, "airlock_plugin_instances_reclaimed_total").await >= 2.0);
    assert!(sandbox_metric(&gw, "airlock_plugin_instances").await <= 4.0);
    gw.stop().await;
}

/// `places` places and three routes: `/slow` (plugin `slow`, calls may run for seconds),
/// `/quick` and `/optional` (plugins that wait at most their own 30 ms CPU deadline for a place;
/// `optional` fails open).
fn slow_and_quick(places: u32) -> String {
    spin_routes(
        places,
        &[("/slow", "slow", "cpu_ms = 5000"), ("/quick", "quick", "cpu_ms = 30"), ("/optional", "optional", "cpu_ms = 30\nfailure = \"open\"")],
    )
}

/// Makes the slow calls on `paths` at once (about 200 ms each), then asks `/quick`, which waits
/// at most its 30 ms deadline for a place: it must be served while they run, and every slow call
/// beyond the slow plugin's share served in turn.
async fn slow_calls_leave_quick_a_place(gw: &Gateway, paths: [&str; 4]) {
    let client = HttpClient::http1();
    let iterations = iterations_for(&client, &gw.url("/slow"), Duration::from_millis(200)).await;
    let slow: Vec<_> = paths
        .into_iter()
        .map(|path| {
            let url = gw.url(path);
            tokio::spawn(async move {
                let (status, body, _) = spin(&HttpClient::http1(), &url, iterations).await;
                (status, body, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body, _) = spin(&client, &gw.url("/quick"), 0).await;
    let quick_answered = Instant::now();
    assert_eq!(status, 200, "the slow plugin took every place: {body}");
    let mut last_slow = quick_answered;
    for call in slow {
        let (status, body, done) = call.await.expect("slow call");
        assert_eq!(status, 200, "a slow call beyond the share was not served in turn: {body}");
        last_slow = last_slow.max(done);
    }
    assert!(last_slow > quick_answered, "the slow calls were over before /quick: the test proves nothing");
}

/// A plugin whose calls are all slow (here: long-running; in production, waiting on a slow
/// origin) takes at most three quarters of the places: the others' calls are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_plugin_with_slow_calls_cannot_take_every_place() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&slow_and_quick(4), Some(&upstream)).await;
    // Four slow calls at once: three take /slow's share, the fourth waits for one of them.
    slow_calls_leave_quick_a_place(&gw, ["/slow"; 4]).await;
    gw.stop().await;
}

/// The share is the plugin's, not each chain entry's: the same slow plugin on two routes takes
/// at most three quarters of the places between them (with a share per entry, two routes'
/// slow calls took every place and the quick route answered 503 `plugin_busy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_plugin_on_two_routes_cannot_take_every_place() {
    let upstream = Upstream::start().await;
    let mut config = slow_and_quick(4);
    config += "\n[[routes]]\npath = \"/slow-too\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"slow\"\n";
    let gw = Gateway::start(&config, Some(&upstream)).await;
    // Two slow calls on each route: three take the plugin's share, the fourth waits.
    slow_calls_leave_quick_a_place(&gw, ["/slow", "/slow", "/slow-too", "/slow-too"]).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_finds_no_place_in_time_is_answered_503_busy_and_the_gateway_serves_on() {
    let upstream = Upstream::start().await;
    // One place.
    let gw = Gateway::start(&slow_and_quick(1), Some(&upstream)).await;
    let client = HttpClient::http1();
    let iterations = iterations_for(&client, &gw.url("/slow"), Duration::from_millis(800)).await;

    // A slow call takes the one place for ~800 ms.
    let holder = {
        let url = gw.url("/slow");
        tokio::spawn(async move {
            let (status, body, _) = spin(&HttpClient::http1(), &url, iterations).await;
            (status, body, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let r = client.request("GET", &gw.url("/quick"), &[("x-spin", "0")], b"").await;
    let busy_answered = Instant::now();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "plugin_busy", "{}", r.text());
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));

    // Failing open, the entry is skipped and the request goes on without it.
    let r = client.request("GET", &gw.url("/optional"), &[("x-spin", "0")], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-spun").is_empty(), "the plugin ran although no place was free");

    let (status, body, holder_done) = holder.await.expect("holder task");
    assert_eq!(status, 200, "{body}");
    assert!(holder_done > busy_answered, "the holder was done before the busy answer: the test proves nothing");

    // With the place free again, both serve.
    for path in ["/quick", "/optional"] {
        let (status, body, _) = spin(&client, &gw.url(path), 0).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    for plugin in ["quick", "optional"] {
        let busy = metric_value(&gw, "airlock_plugin_failures_total", &[("plugin", plugin), ("kind", "busy")]).await;
        assert_eq!(busy, 1.0, "{plugin}");
    }
    gw.stop().await;
}
