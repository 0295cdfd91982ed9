//! What one HTTP/2 client connection costs in file descriptors, and what happens when the
//! gateway runs out of them: the real binary under a low open-file limit (`ulimit -n`), a real
//! HTTP/2 client, real upstreams.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airlock_tests::process::GatewayProcess;
use airlock_tests::{Gateway, HttpClient, Upstream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

/// Streams one HTTP/2 client sends at once: more upstream connections than 64 descriptors allow.
const STREAMS: usize = 100;

/// Out of descriptors, upstream connects fail with `EMFILE`. That is the gateway's own shortage:
/// answered 503 `gateway_overloaded` with `Retry-After`, counted, warned about once (not per
/// request), and never held against the targets, which stay in rotation. Before, each was a 502
/// `upstream_unavailable` and a failure of its target: 60 of 100 streams here, and `max_fails`
/// marked a healthy target down for `fail_timeout` after the shortage had passed.
#[tokio::test]
async fn running_out_of_descriptors_is_the_gateways_overload_not_the_targets_failure() {
    let (first, second) = (Upstream::start().await, Upstream::start().await);
    let config = format!(
        "[upstreams.app]\ntargets = [\"{{upstream}}\", \"{}\"]\nmax_idle_connections = 0\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        second.addr
    );
    // No idle upstream connection kept: the descriptors come back once the burst is over, for
    // the admin listener's scrapes below (idle ones would hold them for their idle timeout).
    let gw = GatewayProcess::start_logging_with_open_files(&config, &first, 64).await;
    let client = HttpClient::http2();
    // Every stream in flight at once on the one connection, each waiting upstream long enough
    // for the others to need connections of their own.
    let url = gw.url("/slow/500");
    let replies: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.send(Request::get(url).body(Full::default()).expect("request")).await })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut refused = 0;
    for reply in replies {
        let reply = reply.await.expect("join");
        statuses.push(reply.status.as_u16());
        if reply.status != 200 {
            refused += 1;
            let body: serde_json::Value = serde_json::from_str(&reply.text()).expect("JSON error body");
            assert_eq!((reply.status.as_u16(), body["error"].as_str()), (503, Some("gateway_overloaded")), "{}", reply.text());
            assert_eq!(reply.header("retry-after").as_deref(), Some("1"));
        }
    }
    assert!(refused > 0, "64 descriptors did not run out: the test shows nothing ({statuses:?})");
    assert!(refused < STREAMS, "none served: {statuses:?}");
    let admin = HttpClient::http1();
    assert_eq!(gw.metric(&admin, "airlock_upstream_connect_shortages_total", &[]).await, refused as f64);
    for target in [first.addr, second.addr] {
        let target = target.to_string();
        let labels = [("upstream", "app"), ("target", target.as_str())];
        assert_eq!(gw.metric(&admin, "airlock_upstream_target_failures_total", &labels).await, 0.0, "{target} blamed");
        assert_eq!(gw.metric(&admin, "airlock_upstream_target_up", &labels).await, 1.0, "{target} marked down");
    }
    assert_eq!(gw.metric(&admin, "airlock_upstream_errors_total", &[("upstream", "app"), ("kind", "unavailable")]).await, 0.0);
    let log = gw.log();
    assert_eq!(log.matches("raise the open-file limit").count(), 1, "one warning, not one per request:\n{log}");
    assert!(!log.contains("marked down"), "{log}");
    // The shortage over, both targets serve at once: neither was left out for `fail_timeout`.
    let (before_first, before_second) = (first.hits(), second.hits());
    for _ in 0..4 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    assert_eq!((first.hits() - before_first, second.hits() - before_second), (2, 2), "round-robin over both");
}

/// An HTTP/2 client connection may have `limits.max_concurrent_streams` requests open at once
/// (default 100, announced in its SETTINGS), not hyper's 200: each may hold an upstream
/// connection. The client queues the rest, so they are served later, not refused.
#[tokio::test]
async fn one_http2_connection_holds_at_most_max_concurrent_streams_requests_upstream() {
    for (limits, cap) in [("", 100), ("[limits]\nmax_concurrent_streams = 8\n", 8)] {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        let upstream = Upstream::with_handler(move |_req: Request<hyper::body::Incoming>| {
            let (now, most) = (n.clone(), m.clone());
            async move {
                let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(in_flight, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Response::new(Full::new(Bytes::from_static(b"ok")))
            }
        })
        .await;
        let config = format!("{limits}[upstreams.app]\ntargets = [\"{{upstream}}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n");
        let gw = Gateway::start(&config, Some(&upstream)).await;
        let client = HttpClient::http2();
        // One request first, so the client has the gateway's SETTINGS (its stream limit) before
        // the burst: streams opened past the limit before they arrive are refused
        // (`REFUSED_STREAM`, RFC 9113 5.1.2), which this client does not retry.
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
        let sends: Vec<_> = (0..150)
            .map(|_| {
                let (client, url) = (client.clone(), gw.url("/"));
                tokio::spawn(async move { client.get(&url).await.status })
            })
            .collect();
        for send in sends {
            assert_eq!(send.await.expect("join"), 200);
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=cap).contains(&most), "{limits:?}: {most} requests upstream at once from one client connection, over {cap}");
        gw.stop().await;
    }
}

/// Health checks made while the gateway is out of descriptors cannot connect either (`EMFILE`):
/// that is no verdict on the target, which stays in rotation. Before, each counted as a failed
/// probe, and `unhealthy_threshold` of them took a healthy target out until it passed
/// `healthy_threshold` probes again.
#[tokio::test]
async fn health_checks_the_gateway_cannot_make_for_want_of_descriptors_leave_the_target_in_rotation() {
    let upstream = Upstream::start().await;
    let config = "[upstreams.app]\ntargets = [\"{upstream}\"]\nmax_idle_connections = 0\n\
                  [upstreams.app.health_check]\npath = \"/healthz\"\ninterval_ms = 50\ntimeout_ms = 50\nunhealthy_threshold = 2\n\n\
                  [[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n";
    let gw = GatewayProcess::start_logging_with_open_files(config, &upstream, 64).await;
    let client = HttpClient::http2();
    // The descriptors stay used up for 1.5 s (the streams that got a connection wait upstream),
    // through some 30 probes.
    let url = gw.url("/slow/1500");
    let replies: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.send(Request::get(url).body(Full::default()).expect("request")).await.status })
        })
        .collect();
    let mut refused = 0;
    for reply in replies {
        if reply.await.expect("join") != 200 {
            refused += 1;
        }
    }
    assert!(refused > 0, "64 descriptors did not run out: the test shows nothing");
    let log = gw.log();
    assert!(!log.contains("out of rotation"), "{log}");
    let admin = HttpClient::http1();
    let target = upstream.addr.to_string();
    let labels = [("upstream", "app"), ("target", target.as_str())];
    assert_eq!(gw.metric(&admin, "airlock_upstream_target_up", &labels).await, 1.0, "{log}");
}
