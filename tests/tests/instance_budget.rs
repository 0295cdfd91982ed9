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

/// Four places, one worker, the spin plugin (long CPU deadline) on two routes under two names:
/// two warm pools, told apart in the metrics.
const FOUR_PLACES: &str = r#"
[runtime]
worker_threads = 1
max_instances = 4

[upstreams.backend]
targets = ["{upstream}"]

[plugins.spin]
source = "{plugin:spin}"
cpu_ms = 3000

[plugins.other]
source = "{plugin:spin}"
cpu_ms = 3000

[[routes]]
path = "/a"
upstream = "backend"
[[routes.plugins]]
plugin = "spin"

[[routes]]
path = "/b"
upstream = "backend"
[[routes.plugins]]
plugin = "other"
"#;

/// Running time of one call of a burst: long enough that the calls of a burst are all in flight
/// together even on a loaded machine.
const CALL: Duration = Duration::from_millis(60);

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
    let gw = Gateway::start(FOUR_PLACES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let iterations = iterations_for(&client, &gw.url("/a"), CALL).await;
    assert_eq!(sandbox_metric(&gw, "airlock_plugin_instance_limit").await, 4.0);

    // Twice as many calls in flight as the 4 places: some wait for one.
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
    let gw = Gateway::start(FOUR_PLACES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let iterations = iterations_for(&client, &gw.url("/a"), CALL).await;

    // A burst on /a leaves every place of the sandbox held by /a's idle warm instances (/b's
    // first instance among those given up for them).
    burst(&gw, "/a", 8, iterations).await;
    let idle = || async {
        let m = scrape(&HttpClient::http1(), &gw, None).await;
        let idle = |plugin| sample(&m, "airlock_plugin_pool_idle_instances", &[("plugin", plugin)]);
        (idle("spin"), idle("other"))
    };
    assert_eq!(idle().await, (4.0, 0.0), "the burst did not fill the sandbox: the test proves nothing");
    let reclaimed_before = sandbox_metric(&gw, "airlock_plugin_instances_reclaimed_total").await;

    // /b needs an instance of its own: one of /a's idle ones is given up for it, at once.
    let started = Instant::now();
    let (status, body, _) = spin(&client, &gw.url("/b"), 0).await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "served only after {:?}", started.elapsed());
    assert!(sandbox_metric(&gw, "airlock_plugin_instances_reclaimed_total").await > reclaimed_before);
    assert_eq!(idle().await, (3.0, 1.0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_finds_no_place_in_time_is_answered_503_busy_and_the_gateway_serves_on() {
    let upstream = Upstream::start().await;
    // One place. `holder` may run for seconds; `quick` and `optional` wait at most their own
    // 30 ms CPU deadline for a place; `optional` fails open.
    let gw = Gateway::start(
        r#"
[runtime]
worker_threads = 1
max_instances = 1

[upstreams.backend]
targets = ["{upstream}"]

[plugins.holder]
source = "{plugin:spin}"
cpu_ms = 5000

[plugins.quick]
source = "{plugin:spin}"
cpu_ms = 30

[plugins.optional]
source = "{plugin:spin}"
cpu_ms = 30
failure = "open"

[[routes]]
path = "/hold"
upstream = "backend"
[[routes.plugins]]
plugin = "holder"

[[routes]]
path = "/quick"
upstream = "backend"
[[routes.plugins]]
plugin = "quick"

[[routes]]
path = "/optional"
upstream = "backend"
[[routes.plugins]]
plugin = "optional"
"#,
        Some(&upstream),
    )
    .await;
    let client = HttpClient::http1();
    let iterations = iterations_for(&client, &gw.url("/hold"), Duration::from_millis(800)).await;

    // The holder's call takes the one place for ~800 ms.
    let holder = {
        let url = gw.url("/hold");
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
