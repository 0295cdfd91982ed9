//! Hostile plugins: one that panics, one that loops forever, one that allocates without bound.
//! Each is contained: its route answers 500 with a request id (or passes, when failing open),
//! other routes keep answering 200 during and after, and the pool recovers.

use std::time::{Duration, Instant};

use airlock_tests::{Gateway, HttpClient, Upstream};

const HOSTILE: &str = r#"
[runtime]
cpu_ms = 50
memory_mb = 16

[upstreams.backend]
targets = ["{upstream}"]

[plugins.panic]
source = "{plugin:panic}"
[plugins.loop]
source = "{plugin:loop}"
[plugins.alloc]
source = "{plugin:alloc}"
[plugins.loop-open]
source = "{plugin:loop}"
failure = "open"

[[routes]]
path = "/panic"
upstream = "backend"
[[routes.plugins]]
plugin = "panic"

[[routes]]
path = "/loop"
upstream = "backend"
[[routes.plugins]]
plugin = "loop"

[[routes]]
path = "/alloc"
upstream = "backend"
[[routes.plugins]]
plugin = "alloc"

[[routes]]
path = "/loop-open"
upstream = "backend"
[[routes.plugins]]
plugin = "loop-open"

[[routes]]
path = "/panic-open"
upstream = "backend"
[[routes.plugins]]
plugin = "panic"
failure = "open"

[[routes]]
path = "/healthy"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { set = { "x-healthy" = "yes" } } }
"#;

async fn assert_fails_closed(client: &HttpClient, url: &str) {
    let r = client.get(url).await;
    assert_eq!(r.status, 500, "{url}: {}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "plugin_failed");
    assert_eq!(body["request_id"].as_str(), r.header("x-request-id").as_deref());
    assert!(!r.text().contains("unreachable"), "trap details stay in the log: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_loop_and_oom_are_contained_and_the_pool_recovers() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(HOSTILE, Some(&upstream)).await;
    let client = HttpClient::http1();

    for round in 0..3 {
        for path in ["/panic", "/alloc"] {
            assert_fails_closed(&client, &gw.url(path)).await;
        }
        let started = Instant::now();
        assert_fails_closed(&client, &gw.url("/loop")).await;
        assert!(started.elapsed() < Duration::from_secs(2), "round {round}: loop not stopped at its deadline");
        let r = client.get(&gw.url("/healthy")).await;
        assert_eq!(r.status, 200, "round {round}");
        assert_eq!(r.upstream_header("x-healthy"), vec!["yes"]);
    }
    assert_eq!(upstream.hits(), 3, "only the healthy requests reached the upstream");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_entries_are_skipped() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(HOSTILE, Some(&upstream)).await;
    let client = HttpClient::http1();
    for path in ["/loop-open", "/panic-open"] {
        let r = client.get(&gw.url(path)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["path"], path);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_routes_keep_answering_while_plugins_misbehave() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(HOSTILE, Some(&upstream)).await;
    let attackers: Vec<_> = ["/loop", "/panic", "/alloc", "/loop"]
        .into_iter()
        .map(|path| {
            let url = gw.url(path);
            tokio::spawn(async move {
                let client = HttpClient::http1();
                let until = Instant::now() + Duration::from_millis(1500);
                let mut failures = 0;
                while Instant::now() < until {
                    if client.get(&url).await.status == 500 {
                        failures += 1;
                    }
                }
                failures
            })
        })
        .collect();

    let client = HttpClient::http1();
    let until = Instant::now() + Duration::from_millis(1500);
    let mut healthy = 0;
    while Instant::now() < until {
        let r = client.get(&gw.url("/healthy")).await;
        assert_eq!(r.status, 200, "a healthy route failed during the attack: {}", r.text());
        healthy += 1;
    }
    for attacker in attackers {
        assert!(attacker.await.unwrap() > 0, "every hostile request must fail closed");
    }
    assert!(healthy > 10, "healthy route starved: only {healthy} answers in 1.5 s");
    // And after the attack.
    for _ in 0..20 {
        assert_eq!(client.get(&gw.url("/healthy")).await.status, 200);
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_component_importing_an_ungranted_capability_is_refused_at_load() {
    let config = r#"
[plugins.snoop]
source = "{plugin:reads-file}"

[[routes]]
path = "/"
[[routes.plugins]]
plugin = "snoop"
"#;
    let err = Gateway::try_start(config, None).await.err().expect("must be refused").to_string();
    assert!(err.contains("plugins.snoop.source"), "{err}");
    assert!(err.contains("plugin `snoop`"), "{err}");
    assert!(err.contains("wasi:filesystem/"), "{err}");
    assert!(err.contains("capability `files`"), "{err}");
}
