//! `builtin:rate-limit` and the `state` capability, end to end: exact admission under
//! concurrency (memory backend), the token bucket's formula, header formats, the capability
//! grant, `builtin:throttle`'s delays, and two gateways sharing a real Redis that is killed and
//! restarted mid-test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airlock_tests::redis::Redis;
use airlock_tests::{Gateway, HttpClient, Reply, Upstream, metric_value};

/// A route limited by a fixed window of `limit` per minute, keyed by client IP.
fn window_config(limit: u64, headers: &str) -> String {
    format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[[routes]]
id = "limited"
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = {{ by = ["ip"], headers = "{headers}", limits = [{{ name = "minute", limit = {limit}, window = "minute" }}] }}
"#
    )
}

/// Sends `total` GETs from `clients` concurrent tasks; returns every reply.
async fn hammer(urls: &[String], clients: usize, total: usize) -> Vec<Reply> {
    let next = Arc::new(AtomicUsize::new(0));
    let urls = Arc::new(urls.to_vec());
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, urls) = (next.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let client = HttpClient::http1();
            let mut replies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                replies.push(client.get(&urls[i % urls.len()]).await);
            }
            replies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

/// `airlock_plugin_decisions_total` of `plugin` for `decision`, from /metrics.
async fn decisions(gw: &Gateway, plugin: &str, decision: &str) -> f64 {
    metric_value(gw, "airlock_plugin_decisions_total", &[("plugin", plugin), ("decision", decision)]).await
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies.iter().filter(|r| r.status.as_u16() == status).count()
}

/// `Retry-After` is a whole number of seconds, at least 1, and the body is the gateway's error
/// format (as every refusal is), with the request's id.
fn assert_retry_after(r: &Reply) {
    let v = r.header("retry-after").expect("429 carries Retry-After");
    let secs: u64 = v.parse().unwrap_or_else(|_| panic!("Retry-After `{v}` is not an integer"));
    assert!(secs >= 1, "Retry-After is never 0");
    let body = r.json();
    assert_eq!(body["status"], r.status.as_u16(), "{body}");
    assert!(
        ["rate_limited", "quota_exceeded", "too_busy", "state_unavailable"].contains(&body["error"].as_str().unwrap_or_default()),
        "{body}"
    );
    assert_eq!(body["request_id"].as_str(), r.header("x-request-id").as_deref(), "{body}");
}

/// Checks a draft-10 `RateLimit` / `RateLimit-Policy` pair for one policy and returns (r, t) and (q, w).
fn draft(r: &Reply) -> ((u64, u64), (u64, u64)) {
    let policy = r.header("ratelimit-policy").expect("RateLimit-Policy");
    let current = r.header("ratelimit").expect("RateLimit");
    let params = |item: &str, a: &str, b: &str| -> (u64, u64) {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("");
        assert!(name.starts_with('"') && name.ends_with('"') && name.len() > 2, "`{item}`: the name is an sf-string");
        let mut x = None;
        let mut y = None;
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("`{item}`: parameter without value"));
            let v: u64 = v.parse().unwrap_or_else(|_| panic!("`{item}`: `{k}` is not a non-negative integer"));
            if k == a {
                x = Some(v);
            } else if k == b {
                y = Some(v);
            }
        }
        (x.unwrap_or_else(|| panic!("`{item}` lacks `{a}`")), y.unwrap_or_else(|| panic!("`{item}` lacks `{b}`")))
    };
    (params(&current, "r", "t"), params(&policy, "q", "w"))
}

#[tokio::test]
async fn memory_window_admits_exactly_the_limit_under_concurrency() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&window_config(50, "draft"), Some(&upstream)).await;
    let replies = hammer(&[gw.url("/x")], 16, 300).await;
    assert_eq!(count(&replies, 200), 50, "exactly the limit is admitted");
    assert_eq!(count(&replies, 429), 250);
    assert_eq!(upstream.hits(), 50, "refused requests never reach the upstream");
    // Each decision is counted on /metrics.
    let rate_limit = |d| decisions(&gw, "builtin:rate-limit", d);
    assert_eq!((rate_limit("continue").await, rate_limit("respond").await), (50.0, 250.0));
    for r in &replies {
        let ((remaining, reset), (quota, window)) = draft(r);
        assert_eq!((quota, window), (50, 60));
        assert!(remaining <= 49 && (1..=60).contains(&reset), "r={remaining} t={reset}");
        if r.status == 429 {
            assert_retry_after(r);
            assert_eq!(remaining, 0);
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn token_bucket_admits_burst_plus_rate_times_elapsed() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/b"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { by = ["route"], limits = [{ name = "burst", rate = 20, per = "second", burst = 10 }] }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let url = gw.url("/b");
    let started = Instant::now();
    let mut admitted = 0u64;
    let mut refused = Vec::new();
    while started.elapsed() < Duration::from_millis(1500) {
        let replies = hammer(std::slice::from_ref(&url), 4, 20).await;
        admitted += count(&replies, 200) as u64;
        refused.extend(replies.into_iter().filter(|r| r.status == 429));
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    // burst + rate x elapsed (one unit every 50 ms), plus one for the unit being refilled.
    let max = 10 + elapsed_ms / 50 + 1;
    let min = 10 + 1000 / 50;
    assert!((min..=max).contains(&admitted), "admitted {admitted}, expected {min}..={max} in {elapsed_ms} ms");
    assert!(!refused.is_empty());
    for r in &refused {
        assert_retry_after(r);
        let ((_, t), (q, w)) = draft(r);
        assert_eq!((q, w), (10, 1), "q = burst, w = time to refill the burst");
        // The draft: with Retry-After beside it, the refusing limit's reset names the same moment.
        assert_eq!(Some(t.to_string()), r.header("retry-after"), "t of a refused request is Retry-After");
    }
    gw.stop().await;
}

#[tokio::test]
async fn header_modes_and_keys() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

# Built-ins are handed `consumers`; the limiters accept and ignore it.
[[consumers]]
id = "alice"

[[routes]]
path = "/legacy"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { by = ["ip"], headers = "legacy", limits = [{ limit = 3, window = "second" }, { limit = 2, window = "hour" }] }

[[routes]]
path = "/off"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { by = ["ip"], headers = "off", limits = [{ limit = 1, window = "minute" }] }

[[routes]]
path = "/users/{id}"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "auth" }
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { by = ["consumer", "param:id"], limits = [{ name = "per-user", limit = 1, window = "minute" }] }

[[routes]]
path = "/tokens"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { by = ["header:authorization"], limits = [{ limit = 2, window = "minute" }] }

[[routes]]
path = "/pair"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { by = ["header:x-a", "header:x-b"], limits = [{ limit = 1, window = "minute" }] }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();

    let r = client.get(&gw.url("/legacy")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-limit").as_deref(), Some("2"), "the tightest limit: fewest remaining");
    assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("1"));
    assert_eq!(r.header("x-ratelimit-limit-second").as_deref(), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining-second").as_deref(), Some("2"));
    assert_eq!(r.header("x-ratelimit-limit-hour").as_deref(), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining-hour").as_deref(), Some("1"));
    let reset: u64 = r.header("ratelimit-reset").expect("reset").parse().expect("integer");
    assert!((3599..=3600).contains(&reset));
    assert!(r.header("ratelimit").is_none());
    client.get(&gw.url("/legacy")).await;
    let r = client.get(&gw.url("/legacy")).await;
    assert_eq!(r.status, 429);
    assert_retry_after(&r);
    assert_eq!(r.header("x-ratelimit-remaining-hour").as_deref(), Some("0"));

    assert_eq!(client.get(&gw.url("/off")).await.header("ratelimit"), None);
    let r = client.get(&gw.url("/off")).await;
    assert_eq!((r.status.as_u16(), r.header("ratelimit-policy")), (429, None));
    assert_retry_after(&r);

    // Keyed by consumer (set in the context by an earlier plugin) and a path param.
    let as_user = |who: &'static str, path: &'static str| {
        let (client, url) = (client.clone(), gw.url(path));
        async move { client.request("GET", &url, &[("x-set-context", &format!("consumer={who}"))], b"").await.status.as_u16() }
    };
    assert_eq!(as_user("alice", "/users/1").await, 200);
    assert_eq!(as_user("alice", "/users/1").await, 429);
    assert_eq!(as_user("bob", "/users/1").await, 200, "another consumer has its own limit");
    assert_eq!(as_user("alice", "/users/2").await, 200, "another param value has its own limit");

    // Keyed by a value longer than the state backend keeps whole (a real RS256 JWT is 700+
    // bytes): still limited, each value on its own, not failed open for whoever pads a header.
    let with_token = |token: String| {
        let (client, url) = (client.clone(), gw.url("/tokens"));
        async move { client.request("GET", &url, &[("authorization", &format!("Bearer {token}"))], b"").await.status.as_u16() }
    };
    let long = |end: &str| format!("{}{end}", "eyJ".repeat(260));
    let statuses = [with_token(long("A")).await, with_token(long("A")).await, with_token(long("A")).await];
    assert_eq!(statuses, [200, 200, 429], "a long key is limited like a short one");
    assert_eq!(with_token(long("B")).await, 200, "a long key sharing another's start has its own limit");

    // A value holding the separator cannot land in another client's bucket: unescaped, both
    // keys were `h=1|h=2|h=` and the second client was refused on the first one's count.
    let pair = |headers: &'static [(&'static str, &'static str)]| {
        let (client, url) = (client.clone(), gw.url("/pair"));
        async move { client.request("GET", &url, headers, b"").await.status.as_u16() }
    };
    assert_eq!(pair(&[("x-a", "1|h=2")]).await, 200);
    assert_eq!(pair(&[("x-a", "1|h=2")]).await, 429, "the same pair shares its bucket");
    assert_eq!(pair(&[("x-a", "1"), ("x-b", "2|h=")]).await, 200, "another pair has its own bucket");
    gw.stop().await;
}

#[tokio::test]
async fn a_plugin_importing_state_without_the_grant_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = dir.path().join("limiter.wasm");
    std::fs::write(&wasm, airlock::runtime::builtin::bytes("rate-limit").expect("built-in")).expect("write");
    let config = |grant: &str| {
        format!(
            r#"
[plugins.limiter]
source = "{}"
{grant}

[[routes]]
path = "/"
[[routes.plugins]]
plugin = "limiter"
config = {{ limits = [{{ limit = 1, window = "second" }}] }}
[[routes.plugins]]
plugin = "builtin:respond"
"#,
            wasm.display()
        )
    };
    let err = match Gateway::try_start(&config(""), None).await {
        Ok(_) => panic!("a plugin importing state without the grant was loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("plugin `limiter`"), "names the plugin: {err}");
    assert!(err.contains("airlock:plugin/state") && err.contains("capability `state`"), "names the capability: {err}");
    assert!(err.contains("capabilities = [\"state\"]"), "says how to grant it: {err}");

    let gw = Gateway::start(&config(r#"capabilities = ["state"]"#), None).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/")).await.status, 200);
    assert_eq!(client.get(&gw.url("/")).await.status, 429);
    gw.stop().await;
}


fn redis_config(port: u16, limit: u64) -> String {
    format!(
        r#"
[state]
backend = "redis"
redis_url = "redis://127.0.0.1:{port}"
timeout_ms = 200
connect_timeout_ms = 200

[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.limiter]
source = "builtin:rate-limit"

[[routes]]
path = "/shared"
upstream = "backend"
[[routes.plugins]]
plugin = "limiter"
config = {{ by = ["route"], limits = [{{ name = "shared", limit = {limit}, window = "minute" }}] }}

[[routes]]
path = "/open"
upstream = "backend"
[[routes.plugins]]
plugin = "limiter"
config = {{ by = ["route"], on_state_error = "fail-open", limits = [{{ limit = 1, window = "minute" }}] }}

[[routes]]
path = "/closed"
upstream = "backend"
[[routes.plugins]]
plugin = "limiter"
config = {{ by = ["route"], on_state_error = "fail-closed", limits = [{{ limit = 1, window = "minute" }}] }}

[[routes]]
path = "/keyed"
upstream = "backend"
[[routes.plugins]]
plugin = "limiter"
config = {{ by = ["header:x-api-key"], limits = [{{ limit = 1, window = "minute" }}] }}
"#
    )
}

#[tokio::test]
async fn two_gateways_share_redis_and_survive_it_going_away() {
    let mut redis = Redis::start(None);
    let upstream = Upstream::start().await;
    let a = Gateway::start(&redis_config(redis.port, 100), Some(&upstream)).await;
    let b = Gateway::start(&redis_config(redis.port, 100), Some(&upstream)).await;

    // Load split between the two gateways: the limit holds in total, exactly.
    let replies = hammer(&[a.url("/shared"), b.url("/shared")], 16, 400).await;
    assert_eq!(count(&replies, 200), 100, "two gateways sharing Redis admit the limit in total");
    assert_eq!(count(&replies, 429), 300);
    for r in replies.iter().filter(|r| r.status == 429) {
        assert_retry_after(r);
    }
    let client = HttpClient::http1();
    for path in ["/open", "/closed"] {
        assert_eq!(client.get(&a.url(path)).await.status, 200);
        assert_eq!(client.get(&b.url(path)).await.status, 429, "{path}: the other gateway sees the count");
    }
    // Keyed by a credential: counted in Redis under its digest, never the key itself.
    let key = [("x-api-key", "sk_live_S3CRET")];
    let (first, second) = (client.request("GET", &a.url("/keyed"), &key, b"").await, client.request("GET", &b.url("/keyed"), &key, b"").await);
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (200, 429));
    let keys = redis.cmd(&["KEYS", "*"]);
    assert!(keys.contains("h=") && !keys.contains("S3CRET"), "{keys}");

    // Redis goes away: each limiter follows its policy, and nothing waits past the timeout
    // (200 ms here, above the plugins' 100 ms CPU deadline: waiting on Redis is not plugin CPU).
    // Fail-open falls back to each gateway's own memory: 1 per minute per gateway.
    let port = redis.port;
    redis.stop();
    for round in 0..5 {
        let open = if round == 0 { 200 } else { 429 };
        for (gw, path, expected) in [(&a, "/open", open), (&b, "/open", open), (&a, "/closed", 503), (&b, "/closed", 503)] {
            let started = Instant::now();
            let r = client.get(&gw.url(path)).await;
            let took = started.elapsed();
            assert_eq!(r.status.as_u16(), expected, "{path} with Redis down, round {round}");
            assert!(took < Duration::from_millis(1000), "{path} took {took:?} with Redis down");
            if expected == 503 {
                assert_retry_after(&r);
            }
        }
    }
    assert!(a.inner().state.stats().unavailable.load(Ordering::Relaxed) > 0, "the outage is counted");

    // Redis comes back (empty): limits are enforced again once the gateways reconnect.
    let _redis = Redis::start(Some(port));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let first = client.get(&a.url("/closed")).await.status.as_u16();
        if first == 200 || first == 429 {
            break;
        }
        assert!(Instant::now() < deadline, "gateway A did not recover after Redis restarted (last status {first})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.get(&b.url("/closed")).await.status.as_u16();
        if status == 429 {
            break;
        }
        assert!(Instant::now() < deadline, "gateway B did not enforce the limit after Redis restarted (last status {status})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn throttle_delays_in_arrival_order_up_to_the_max_wait() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/slow"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:throttle"
config = { rate = 10, per = "second", burst = 1, max_wait_ms = 1000 }

[[routes]]
path = "/warm"
plugins = [{ plugin = "builtin:respond", config = { status = 204 } }]
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    // Each client's connection is made first: arrivals 10 ms apart then reach the throttle in
    // the order they were sent, not in the order a loaded machine completes their handshakes.
    let mut clients = Vec::new();
    for _ in 0..15 {
        let client = HttpClient::http1();
        assert_eq!(client.get(&gw.url("/warm")).await.status, 204);
        clients.push(client);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, client) in (0..15u64).zip(clients) {
        let url = gw.url("/slow");
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 10)).await;
            let sent = started.elapsed();
            let r = client.get(&url).await;
            (i, r, sent, started.elapsed())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("client task"));
    }
    let admitted: Vec<_> = results.iter().filter(|(_, r, _, _)| r.status == 200).collect();
    let refused: Vec<_> = results.iter().filter(|(_, r, _, _)| r.status == 503).collect();
    assert_eq!(admitted.len() + refused.len(), 15, "only 200 or 503");
    // burst 1 + 10 queued (1000 ms / 100 ms), plus what refilled while the 140 ms of arrivals went on.
    assert!((11..=13).contains(&admitted.len()), "admitted {}", admitted.len());
    for (i, _, sent, done) in &admitted {
        let waited = done.saturating_sub(*sent);
        assert!(waited <= Duration::from_millis(1000 + 300), "request {i} waited {waited:?}, past the max wait");
    }
    // Admitted requests finish in arrival order, one slot (100 ms) apart.
    for pair in admitted.windows(2) {
        let ((a, _, _, done_a), (b, _, _, done_b)) = (pair[0], pair[1]);
        assert!(*done_a <= *done_b + Duration::from_millis(20), "request {a} finished after {b}");
    }
    let last = admitted.last().expect("some admitted").3;
    assert!(last >= Duration::from_millis(900), "the queue spreads requests over the max wait, last at {last:?}");
    for (i, r, sent, done) in &refused {
        assert_retry_after(r);
        assert!(done.saturating_sub(*sent) < Duration::from_millis(300), "request {i} was refused at once");
    }
    gw.stop().await;
}

/// A request refused by one quota takes nothing from the others: a consumer whose month is
/// spent keeps its day's quota through refused retries (they spent it, 5 after 2 served), and
/// each refusal's `RateLimit` names every quota.
#[tokio::test]
async fn a_refused_request_takes_nothing_from_any_quota() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/q"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "auth" }
[[routes.plugins]]
plugin = "builtin:quota"
config = { quotas = { daily = { limit = 5, period = "day" }, monthly = { limit = 2, period = "month" } } }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let url = gw.url("/q");
    let call = || client.request("GET", &url, &[("x-set-context", "consumer=bob")], b"");
    assert_eq!(call().await.header("ratelimit").as_deref(), Some("\"daily\";r=4;t=86400, \"monthly\";r=1;t=2592000"));
    assert_eq!(call().await.status, 200);
    for retry in 0..4 {
        let r = call().await;
        assert_eq!(r.status, 429, "retry {retry}");
        let current = r.header("ratelimit").unwrap_or_default();
        assert!(current.starts_with("\"daily\";r=3;") && current.contains("\"monthly\";r=0;"), "retry {retry}: {current}");
        let secs: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("integer");
        assert!(secs > 86_400, "until the month's period ends, not the day's: {secs}");
    }
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn quota_per_consumer_with_plans() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/q"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "auth" }
[[routes.plugins]]
plugin = "builtin:quota"
config = { quotas = { daily = { limit = 2, period = "day" }, monthly = { limit = 10, period = "month" } }, plans = { gold = { daily = 4 } } }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let url = gw.url("/q");
    let call = |ctx: &'static [&'static str]| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let headers: Vec<(&str, &str)> = ctx.iter().map(|c| ("x-set-context", *c)).collect();
            client.request("GET", &url, &headers, b"").await
        }
    };
    let r = call(&[]).await;
    assert_eq!(r.status, 403, "no consumer, anonymous = reject: a 403, as no challenge is configured");
    assert_eq!(r.json()["error"], "consumer_required");

    let r = call(&["consumer=alice"]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-policy").as_deref(), Some("\"daily\";q=2;w=86400, \"monthly\";q=10;w=2592000"));
    assert_eq!(r.header("ratelimit").as_deref(), Some("\"daily\";r=1;t=86400, \"monthly\";r=9;t=2592000"));
    assert_eq!(call(&["consumer=alice"]).await.status, 200);
    let r = call(&["consumer=alice"]).await;
    assert_eq!(r.status, 429);
    assert_retry_after(&r);
    let secs: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("integer");
    assert!((86_399..=86_400).contains(&secs), "until the day's period ends: {secs}");
    // Refused by the first quota, the refusal names the others too, as they stand.
    assert_eq!(r.header("ratelimit-policy").as_deref(), Some("\"daily\";q=2;w=86400, \"monthly\";q=10;w=2592000"));
    let current = r.header("ratelimit").unwrap_or_default();
    assert!(current.starts_with("\"daily\";r=0;") && current.contains("\"monthly\";r=8;"), "{current}");

    // A gold consumer gets the plan's daily quota.
    for _ in 0..4 {
        assert_eq!(call(&["consumer=carol", "consumer.groups=staff,gold"]).await.status, 200);
    }
    assert_eq!(call(&["consumer=carol", "consumer.groups=staff,gold"]).await.status, 429);
    assert_eq!(upstream.hits(), 6);

    // A limit changed in config keeps the period's count: raised from 2 to 3, alice has one
    // request left today, not a fresh three (nor, lowered, would she get a fresh quota).
    gw.reload(&config.replace("limit = 2, period", "limit = 3, period"), Some(&upstream)).await.expect("reload");
    let r = call(&["consumer=alice"]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("ratelimit").is_some_and(|v| v.starts_with("\"daily\";r=0;")), "{:?}", r.header("ratelimit"));
    assert_eq!(call(&["consumer=alice"]).await.status, 429);
    gw.stop().await;

    // With `www_authenticate`, a 401 that carries it (RFC 9110 15.5.2: every 401 does).
    let challenged = config.replace("plans = { gold = { daily = 4 } } }", "www_authenticate = 'Key realm=\"api\"' }");
    let gw = Gateway::start(&challenged, Some(&upstream)).await;
    let r = client.request("GET", &gw.url("/q"), &[], b"").await;
    assert_eq!((r.status.as_u16(), r.header("www-authenticate").as_deref()), (401, Some("Key realm=\"api\"")));
    gw.stop().await;
    let err = Gateway::try_start(&challenged.replace("www_authenticate", "anonymous = \"ip\", www_authenticate"), Some(&upstream)).await.err().expect("refused").to_string();
    assert!(err.contains("`www_authenticate` goes with `anonymous = \"reject\"`"), "{err}");
}

/// Sliding windows, on both backends: under concurrency exactly the limit is admitted (the check
/// and the update are one step), refused requests get a usable `Retry-After`. (The weighting of
/// the previous window is checked exactly in the host's unit tests, and the Redis script against
/// the memory backend in `state::redis`'s.) The window is 10 s: a burst of a few hundred
/// milliseconds that happens to cross a window boundary still admits exactly the limit, because
/// the previous window then weighs at least 98%.
#[tokio::test]
async fn sliding_windows_admit_exactly_the_limit_on_both_backends() {
    let redis = Redis::start(None);
    let upstream = Upstream::start().await;
    for state in ["", &format!("[state]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{}\"\n", redis.port)] {
        let config = format!(
            r#"
{state}
[upstreams.backend]
targets = ["{{upstream}}"]

[[routes]]
path = "/sliding"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = {{ by = ["route"], limits = [{{ name = "s", limit = 20, window_ms = 10000, window_type = "sliding" }}] }}
"#
        );
        let gw = Gateway::start(&config, Some(&upstream)).await;
        let replies = hammer(&[gw.url("/sliding")], 8, 60).await;
        assert_eq!(count(&replies, 200), 20, "backend {state:?}");
        assert_eq!(count(&replies, 429), 40, "backend {state:?}");
        for r in replies.iter().filter(|r| r.status == 429) {
            assert_retry_after(r);
        }
        gw.stop().await;
    }
    // `window_type` belongs to windows, not buckets.
    let bad = "[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:rate-limit\"\nconfig = { limits = [{ rate = 1, per = \"second\", window_type = \"sliding\" }] }\n";
    let err = Gateway::try_start(bad, None).await.err().unwrap().to_string();
    assert!(err.contains("`limits[0]`") && err.contains("window_type"), "{err}");
}

/// An upstream that holds every request until the test opens its gate, and records the order
/// requests arrived in (by `x-seq`) and the most it held at once.
struct GatedUpstream {
    upstream: Upstream,
    gate: Arc<tokio::sync::Semaphore>,
    arrived: Arc<std::sync::Mutex<Vec<String>>>,
    most: Arc<AtomicUsize>,
}

impl GatedUpstream {
    async fn start() -> Self {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let arrived = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (in_flight, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (g, a, f, m) = (gate.clone(), arrived.clone(), in_flight.clone(), most.clone());
        let upstream = Upstream::with_handler(move |req: http::Request<hyper::body::Incoming>| {
            let (gate, arrived, in_flight, most) = (g.clone(), a.clone(), f.clone(), m.clone());
            async move {
                let seq = req.headers().get("x-seq").map(|v| v.to_str().unwrap_or("?").to_owned()).unwrap_or_default();
                arrived.lock().unwrap().push(seq);
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Each request takes one permit and puts it back, so one `add_permits(1)` opens the gate for all.
                if let Ok(permit) = gate.acquire().await {
                    drop(permit);
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"done")))
            }
        })
        .await;
        Self { upstream, gate, arrived, most }
    }

    fn arrived(&self) -> Vec<String> {
        self.arrived.lock().unwrap().clone()
    }

    async fn wait_arrived(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.arrived().len() < n {
            assert!(Instant::now() < deadline, "only {:?} reached the upstream, expected {n}", self.arrived());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Sends a GET with `x-seq: seq` on its own connection, in the background.
fn send_seq(url: &str, seq: usize) -> tokio::task::JoinHandle<Reply> {
    let url = url.to_owned();
    tokio::spawn(async move { HttpClient::http1().request("GET", &url, &[("x-seq", &seq.to_string())], b"").await })
}

/// Opens a raw connection and sends a GET with `x-seq: seq`, without reading the answer.
async fn raw_request(addr: std::net::SocketAddr, seq: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET /busy HTTP/1.1\r\nhost: gw\r\nx-seq: {seq}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write request");
    stream
}

/// `items`, sorted: for requests admitted at the same moment, whose order is not defined.
fn sorted(items: &[String]) -> Vec<String> {
    let mut items = items.to_vec();
    items.sort();
    items
}

#[tokio::test]
async fn throttle_concurrency_queue_bound_order_and_cancelled_clients() {
    let gated = GatedUpstream::start().await;
    // One request worker: slots are granted in queue order on any number of workers, but two
    // requests granted a microsecond apart on two workers race each other to the upstream, and
    // this test reads the grant order from the order they arrive there.
    let config = r#"
[runtime]
worker_threads = 1

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/busy"
upstream = "backend"
timeout_ms = 20000
[[routes.plugins]]
plugin = "builtin:throttle"
config = { concurrency = 2, queue = 2, max_wait_ms = 15000 }
"#;
    let gw = Gateway::start(config, Some(&gated.upstream)).await;
    let url = gw.url("/busy");
    let settle = || tokio::time::sleep(Duration::from_millis(150));

    // Two take the slots and reach the upstream.
    let holders = [send_seq(&url, 0), send_seq(&url, 1)];
    gated.wait_arrived(2).await;
    // Two queue, in arrival order, and do not reach the upstream.
    let mut queued = Vec::new();
    for seq in 2..4 {
        queued.push(send_seq(&url, seq));
        settle().await;
    }
    assert_eq!(gated.arrived().len(), 2, "queued requests wait for a slot");
    // The queue is full: the next is refused at once with Retry-After.
    let started = Instant::now();
    let refused = HttpClient::http1().request("GET", &url, &[("x-seq", "x")], b"").await;
    assert_eq!(refused.status, 503);
    assert_retry_after(&refused);
    assert!(started.elapsed() < Duration::from_secs(2), "a full queue refuses without waiting");

    // Open the gate: everyone admitted finishes, never more than 2 at the upstream, queued ones in order.
    gated.gate.add_permits(1);
    for h in holders.into_iter().chain(queued) {
        assert_eq!(h.await.expect("client task").status, 200);
    }
    assert_eq!(gated.most.load(Ordering::SeqCst), 2, "at most `concurrency` requests in flight");
    // 0 and 1 were admitted at once and race each other to the upstream; 2 and 3 queued in
    // that order and are let in in that order.
    let arrived = gated.arrived();
    assert_eq!(sorted(&arrived[..2]), ["0", "1"], "{arrived:?}");
    assert_eq!(&arrived[2..], ["2", "3"], "the queue is served in arrival order");
    let throttle = |d| decisions(&gw, "builtin:throttle", d);
    assert_eq!((throttle("slot").await, throttle("slot_refused").await), (4.0, 1.0));

    // Cancelled clients: close the gate again, fill the slots (10 on a raw connection), queue
    // two raw clients, and let the first go away.
    gated.gate.forget_permits(1);
    let holder = raw_request(gw.addr(), 10).await;
    let other = send_seq(&url, 11);
    gated.wait_arrived(6).await;
    let gone = raw_request(gw.addr(), 12).await;
    settle().await;
    let stays = raw_request(gw.addr(), 13).await;
    settle().await;
    drop(gone);
    settle().await;
    // The place it left is free: a new request queues instead of being refused.
    let late = send_seq(&url, 14);
    settle().await;
    assert!(!late.is_finished(), "the queue had room again after a queued client went away");
    // The client holding a slot goes away: its slot goes to the head of the queue (13) while
    // the upstream still holds everything else.
    drop(holder);
    gated.wait_arrived(7).await;
    assert_eq!(gated.arrived()[6], "13", "the freed slot went to the queue's head");
    gated.gate.add_permits(1);
    assert_eq!(other.await.expect("client task").status, 200);
    assert_eq!(late.await.expect("client task").status, 200);
    let arrived = gated.arrived();
    // 10 and 11 took the two free slots at once: either may reach the upstream first.
    assert_eq!(sorted(&arrived[4..6]), ["10", "11"], "{arrived:?}");
    assert_eq!(&arrived[6..], ["13", "14"], "the cancelled request never reached the upstream");
    drop(stays);
    gw.stop().await;
}

/// A reload does not free a `concurrency` bound: the requests holding slots on the old config
/// keep counting, on an unchanged config or one with other routes added, before the route (an
/// unnamed route is known by what it matches, not its place) or after (which every reload was:
/// SIGHUP, `POST /admin/reload`, a rotated certificate under `--watch`). A changed
/// `concurrency` applies at once.
#[tokio::test]
async fn a_reload_keeps_the_slots_requests_in_flight_hold() {
    let gated = GatedUpstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/busy"
upstream = "backend"
timeout_ms = 20000
[[routes.plugins]]
plugin = "builtin:throttle"
config = { concurrency = 1, queue = 0, status = 429, by = ["ip"] }
"#;
    // By IP: an unnamed route's own id (`route` in `by`) is its place in the file.
    let gw = Gateway::start(config, Some(&gated.upstream)).await;
    let url = gw.url("/busy");
    let holder = send_seq(&url, 0);
    gated.wait_arrived(1).await;
    let refused = |why: &'static str| {
        let url = url.clone();
        async move {
            let r = HttpClient::http1().request("GET", &url, &[("x-seq", "x")], b"").await;
            assert_eq!(r.status, 429, "{why}: {}", r.text());
        }
    };
    refused("the one slot is held").await;
    gw.reload(config, Some(&gated.upstream)).await.expect("reload");
    refused("after reloading the same config").await;
    let more = format!("{config}\n[[routes]]\npath = \"/other\"\nupstream = \"backend\"\n");
    gw.reload(&more, Some(&gated.upstream)).await.expect("reload");
    refused("after a reload that added a route").await;
    let before = config.replacen("[[routes]]", "[[routes]]\npath = \"/first\"\nupstream = \"backend\"\n\n[[routes]]", 1);
    gw.reload(&before, Some(&gated.upstream)).await.expect("reload");
    refused("after a reload that added a route before it").await;
    // Raised to 2: the new limit applies at once, beside the request still in flight.
    gw.reload(&config.replace("concurrency = 1", "concurrency = 2"), Some(&gated.upstream)).await.expect("reload");
    let second = send_seq(&url, 2);
    gated.wait_arrived(2).await;
    gated.gate.add_permits(1);
    assert_eq!(holder.await.expect("client task").status, 200);
    assert_eq!(second.await.expect("client task").status, 200);
    // Given back: the next request takes it.
    assert_eq!(send_seq(&url, 1).await.expect("client task").status, 200);
    assert_eq!(gated.most.load(Ordering::SeqCst), 2, "never more than `concurrency` in flight");
    gw.stop().await;
}

/// The memory store holds `max_keys`. Past it, a new limiter key takes the place of the one
/// with the least at stake (the smallest count, then the nearest expiry), so clients who invent
/// keys (a header, a query parameter, IPv6 addresses) cannot fill the store and have every later
/// client let through unlimited (fail-open) or refused (fail-closed), as when a full store
/// refused new keys, nor reset another client's count.
#[tokio::test]
async fn a_full_memory_store_keeps_limiting_new_clients() {
    let upstream = Upstream::start().await;
    let config = r#"
[state]
max_keys = 3

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { by = ["header:x-key"], limits = [{ name = "minute", limit = 2, window = "minute" }] }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let send = |key: String| {
        let (client, url) = (client.clone(), gw.url("/x"));
        async move { client.request("GET", &url, &[("x-key", &key)], b"").await.status.as_u16() }
    };
    let mut victim = Vec::new();
    for _ in 0..3 {
        victim.push(send("victim".into()).await);
    }
    assert_eq!(victim, [200, 200, 429]);
    // An attacker's flood of distinct keys, far past the cap.
    for i in 0..20 {
        assert_eq!(send(format!("junk-{i}")).await, 200);
    }
    // The keys counted once each made way for one another: the victim's count stands (by
    // expiry alone, its key, the oldest, went first and its window started over).
    assert_eq!(send("victim".into()).await, 429, "the flood reset another client's count");
    // A client arriving after the flood is limited as before it.
    let mut newcomer = Vec::new();
    for _ in 0..3 {
        newcomer.push(send("newcomer".into()).await);
    }
    assert_eq!(newcomer, [200, 200, 429]);
    assert_eq!(metric_value(&gw, "airlock_state_keys_refused_total", &[]).await, 0.0);
    // 22 keys in a store of 3: 19 made way.
    assert_eq!(metric_value(&gw, "airlock_state_keys_displaced_total", &[]).await, 19.0);
    // What it holds is in sight: the store's 3 keys, and their bytes.
    assert_eq!(metric_value(&gw, "airlock_state_keys", &[]).await, 3.0);
    assert!(metric_value(&gw, "airlock_state_bytes", &[]).await >= 3.0 * "airlock:".len() as f64);
    gw.stop().await;
}

/// A third-party plugin granted `state` that increments counters under long keys without end (a
/// red-team finding: ~450 MB held by the gateway, counted against nothing) fills its share of
/// `max_bytes` and is refused there (`full`); one whose keys expire has its own nearest expiry
/// make way, never refused; and a rate limit by a long header still limits beside them.
#[tokio::test]
async fn long_state_keys_fill_a_plugins_share_of_max_bytes_not_memory() {
    const MAX_BYTES: usize = 8 * 1024 * 1024;
    const KEY_BYTES: usize = 120;
    let upstream = Upstream::start().await;
    let config = format!(
        r#"
[state]
max_bytes = {MAX_BYTES}

[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.flood]
source = "{{plugin:state-flood}}"
capabilities = ["state"]
cpu_ms = 5000

[plugins.expiring]
source = "{{plugin:state-flood}}"
capabilities = ["state"]
cpu_ms = 5000

[[routes]]
path = "/flood"
[[routes.plugins]]
plugin = "flood"
config = {{ key_bytes = {KEY_BYTES} }}

[[routes]]
path = "/expiring"
[[routes.plugins]]
plugin = "expiring"
config = {{ key_bytes = {KEY_BYTES}, ttl_ms = 60000 }}

[[routes]]
path = "/tokens"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = {{ by = ["header:authorization"], limits = [{{ limit = 2, window = "minute" }}] }}
"#
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let flood = |path: &'static str, from: usize| {
        let (client, url) = (client.clone(), gw.url(path));
        async move {
            let r = client.request("GET", &url, &[("x-from", &from.to_string()), ("x-count", "5000")], b"").await;
            assert_eq!(r.status, 200, "{}", r.text());
            let text = r.text();
            let stored: usize = text.split_whitespace().find_map(|w| w.strip_prefix("stored=")).and_then(|n| n.parse().ok()).expect("stored=N");
            (stored, text.trim_end().rsplit("error=").next().unwrap_or_default().to_owned())
        }
    };
    // Keys without a TTL: stored until the plugin's share (about half of max_bytes) is full.
    let (mut stored, mut error) = (0, String::new());
    while error != "full" {
        let (n, e) = flood("/flood", stored).await;
        assert!(e == "none" || e == "full", "{e}");
        (stored, error) = (stored + n, e);
        assert!(stored < 200_000, "never refused: {stored} keys stored");
    }
    // Each key: `airlock:flood:`, the number, `-` and the padding.
    let held = stored * ("airlock:flood:".len() + 6 + KEY_BYTES);
    assert!((MAX_BYTES * 2 / 5..=MAX_BYTES * 7 / 10).contains(&held), "{stored} keys, about {held} bytes, held by one plugin");
    assert!(metric_value(&gw, "airlock_state_keys_refused_total", &[]).await >= 1.0);
    // The gauges show the store near its cap, as an operator would see it.
    let bytes = metric_value(&gw, "airlock_state_bytes", &[]).await as usize;
    assert!((stored * KEY_BYTES..=MAX_BYTES).contains(&bytes), "airlock_state_bytes {bytes}, about {held} held by the flood");
    assert!(metric_value(&gw, "airlock_state_keys", &[]).await >= stored as f64);
    // Keys with a TTL: the plugin's own nearest their expiry make way, nothing is refused.
    for round in 0..12 {
        assert_eq!(flood("/expiring", round * 5000).await, (5000, "none".to_owned()), "round {round}");
    }
    assert!(metric_value(&gw, "airlock_state_keys_displaced_total", &[]).await >= 1.0);
    // A rate limit by a long header (kept as its digest) still limits, each value on its own.
    let with_token = |token: String| {
        let (client, url) = (client.clone(), gw.url("/tokens"));
        async move { client.request("GET", &url, &[("authorization", &format!("Bearer {token}"))], b"").await.status.as_u16() }
    };
    let long = |end: &str| format!("{}{end}", "eyJ".repeat(260));
    let statuses = [with_token(long("A")).await, with_token(long("A")).await, with_token(long("A")).await];
    assert_eq!(statuses, [200, 200, 429], "a long key is limited beside the floods");
    assert_eq!(with_token(long("B")).await, 200, "another long key has its own limit");
    gw.stop().await;
}

/// Behind a load balancer every request's TCP peer is the balancer. A listener that names it in
/// `trusted_proxies` gets each request's client from `X-Forwarded-For`: rate-limit's `ip` key,
/// ip-restrict and the access log see the client, not the balancer, and a client cannot choose
/// its address by writing the header itself. Without `trusted_proxies` the header is ignored.
#[tokio::test]
async fn behind_trusted_proxies_each_client_is_limited_and_logged_as_itself() {
    let upstream = Upstream::start().await;
    let routes = r#"
[access_log]
enabled = true
path = "access.log"

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/limited"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { by = ["ip"], limits = [{ limit = 1, window = "minute" }] }

[[routes]]
path = "/guarded"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:ip-restrict"
config = { deny = ["203.0.113.66"] }
"#;
    // 127.0.0.1 plays the balancer: every test request comes from it.
    let behind = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n{routes}");
    let gw = Gateway::start(&behind, Some(&upstream)).await;
    let client = HttpClient::http1();
    let from = |xff: &'static str, path: &'static str| {
        let (client, url) = (client.clone(), gw.url(path));
        async move { client.request("GET", &url, &[("x-forwarded-for", xff)], b"").await }
    };
    assert_eq!(from("203.0.113.1", "/limited").await.status, 200);
    assert_eq!(from("203.0.113.1", "/limited").await.status, 429, "the same client, limited");
    assert_eq!(from("203.0.113.2", "/limited").await.status, 200, "another client behind the same balancer");
    // Two proxies deep; what the client wrote itself (left of its own address) is not believed.
    assert_eq!(from("198.51.100.9, 203.0.113.3, 10.1.2.3", "/limited").await.status, 200);
    assert_eq!(from("203.0.113.2, 203.0.113.3, 10.9.9.9", "/limited").await.status, 429, "still 203.0.113.3");
    // ip-restrict without proxies of its own decides on the same client IP.
    assert_eq!(from("203.0.113.66", "/guarded").await.status, 403);
    let through = from("203.0.113.66, 203.0.113.7", "/guarded").await;
    assert_eq!(through.status, 200, "a client cannot put the denied address in its place");
    // The upstream still learns the whole chain, the balancer appended.
    assert_eq!(through.upstream_header("x-forwarded-for"), ["203.0.113.66, 203.0.113.7, 127.0.0.1"]);

    let log = gw.dir.path().join("access.log");
    let logged = airlock_tests::metrics::eventually("seven access log lines", || {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (lines.len() >= 7).then_some(lines)
    })
    .await;
    let ips: Vec<&str> = logged.iter().map(|l| l["client_ip"].as_str().unwrap_or("?")).collect();
    assert_eq!(ips, ["203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.3", "203.0.113.66", "203.0.113.7"]);
    gw.stop().await;

    // The same routes on a listener trusting nobody: the header is the client's word only.
    let gw = Gateway::start(routes, Some(&upstream)).await;
    let from = |xff: &'static str| {
        let (client, url) = (client.clone(), gw.url("/limited"));
        async move { client.request("GET", &url, &[("x-forwarded-for", xff)], b"").await.status }
    };
    assert_eq!(from("203.0.113.1").await, 200);
    assert_eq!(from("203.0.113.2").await, 429, "one client (the peer), whatever it claims");
    gw.stop().await;
}

/// A `trusted_proxies` entry that is not an address or a CIDR is a config error at its line.
#[tokio::test]
async fn a_bad_trusted_proxies_entry_is_a_located_config_error() {
    let config = "[[listeners]]\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\n  \"10.0.0.0/8\",\n  \"lb.internal\",\n]\n";
    let err = Gateway::try_start(config, None).await.err().expect("refused").to_string();
    assert!(err.contains("airlock.toml:5") && err.contains("listeners[0].trusted_proxies[1]"), "{err}");
    assert!(err.contains("`lb.internal` is not an address or a CIDR"), "{err}");
}

/// An operator resets a limiter's counters from the admin API (a client wrongly limited, a test
/// run over): `POST /admin/state/clear`, with the admin token. The route also runs a global
/// `rate-limit` (a generous one): each cleared entry says whether it is the global chain's, and
/// `global=true|false` clears only those or only the route's own.
#[tokio::test]
async fn the_admin_api_resets_a_limiters_counters() {
    let upstream = Upstream::start().await;
    let global = "[[global.plugins]]\nplugin = \"builtin:rate-limit\"\n\
                  config = { by = [\"ip\"], limits = [{ name = \"everyone\", limit = 100, window = \"minute\" }] }\n";
    let config = format!("[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"reset-token-1\"\n{global}{}", window_config(2, "draft"));
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let statuses = |n: usize| {
        let (client, url) = (client.clone(), gw.url("/x"));
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(client.get(&url).await.status.as_u16());
            }
            out
        }
    };
    assert_eq!(statuses(3).await, [200, 200, 429]);
    let url = gw.admin_url("/admin/state/clear?route=limited&plugin=builtin%3Arate-limit");
    let refused = client.request("POST", &url, &[], b"").await;
    assert_eq!(refused.status.as_u16(), 401, "the admin token is needed");
    assert_eq!(statuses(1).await, [429], "nothing was reset");
    let clear = |query: &'static str| {
        let (client, url) = (client.clone(), format!("{url}{query}"));
        async move {
            let reply = client.request("POST", &url, &[("authorization", "Bearer reset-token-1")], b"").await;
            assert_eq!(reply.status.as_u16(), 200, "{query}: {}", reply.text());
            let cleared = reply.json()["cleared"].as_array().cloned().unwrap_or_default();
            for entry in &cleared {
                assert_eq!(entry["plugin"], "builtin:rate-limit", "{entry}");
                assert_eq!(entry["routes"], serde_json::json!(["limited"]), "{entry}");
                assert!(entry["keys"].as_u64().is_some_and(|k| k >= 1), "{query}: every entry counted this client: {entry}");
            }
            cleared.iter().map(|e| e["global"].as_bool().expect("global")).collect::<Vec<bool>>()
        }
    };
    // Only the global chain's entry: the route's own counters, which refuse, stay.
    assert_eq!(clear("&global=true").await, [true]);
    assert_eq!(statuses(1).await, [429], "the route's own limiter was not reset");
    // Only the route's own entry.
    assert_eq!(clear("&global=false").await, [false]);
    assert_eq!(statuses(3).await, [200, 200, 429], "a fresh window");
    // Without `global`, both, in chain order (the global entries first).
    assert_eq!(clear("").await, [true, false]);
    assert_eq!(statuses(3).await, [200, 200, 429], "a fresh window");
    gw.stop().await;
}

/// Usage plans (AWS API Gateway's): consumers authenticated by `key-auth` from `[[consumers]]`
/// get their group's plan, the first in config order; others, and unauthenticated requests
/// counted by IP, the default limits; a plan's counts are its own.
#[tokio::test]
async fn rate_limit_plans_give_each_group_its_own_limits() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[consumers]]
id = "free-user"
credentials = { keys = ["free-key"] }

[[consumers]]
id = "gold-user"
groups = ["staff", "gold"]
credentials = { keys = ["gold-key"] }

[[consumers]]
id = "both"
groups = ["silver", "gold"]
credentials = { keys = ["both-key"] }

[[consumers]]
id = "guest"

[[routes]]
path = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = { anonymous = "guest" }
[[routes.plugins]]
plugin = "builtin:rate-limit"
[routes.plugins.config]
limits = [{ name = "minute", limit = 2, window = "minute" }]
plans = { gold = [{ name = "minute", limit = 5, window = "minute" }], silver = [{ name = "minute", limit = 3, window = "minute" }] }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let url = gw.url("/api");
    let admitted = |key: Option<&'static str>, n: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut statuses = Vec::new();
            for _ in 0..n {
                let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
                statuses.push(client.request("GET", &url, &headers, b"").await);
            }
            statuses
        }
    };
    let count = |replies: &[Reply]| replies.iter().filter(|r| r.status == 200).count();

    let free = admitted(Some("free-key"), 4).await;
    assert_eq!(count(&free), 2, "no group: the default limits");
    assert_eq!(free[0].header("ratelimit-policy").as_deref(), Some("\"minute\";q=2;w=60"));

    let gold = admitted(Some("gold-key"), 7).await;
    assert_eq!(count(&gold), 5, "gold plan");
    assert_eq!(gold[0].header("ratelimit-policy").as_deref(), Some("\"minute\";q=5;w=60"));
    assert_eq!(gold[0].header("ratelimit").as_deref(), Some("\"minute\";r=4;t=60"));
    assert_eq!(gold[6].status, 429);

    // In silver and gold: gold is first in config order. Counted apart from gold-user.
    let both = admitted(Some("both-key"), 6).await;
    assert_eq!(count(&both), 5, "the first plan in config order");

    // The anonymous fallback (no groups) gets the defaults.
    let guest = admitted(None, 3).await;
    assert_eq!(count(&guest), 2);
    gw.stop().await;
}

/// A limit kept per value of a header: a request giving that header in lines that differ is a
/// 400, never counted under one line while the others go on (before: keyed on the first, so a
/// made-up first line beside an over-limit tenant's got past its limit, both reaching the
/// upstream). The same value twice is one value.
#[tokio::test]
async fn a_keyed_header_in_lines_that_differ_is_refused() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/tenant"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { by = ["header:x-tenant"], limits = [{ limit = 2, window = "minute" }] }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    for expected in [200, 200, 429] {
        assert_eq!(client.request("GET", &gw.url("/tenant"), &[("x-tenant", "acme")], b"").await.status, expected);
    }
    let hits = upstream.hits();
    let r = client.request("GET", &gw.url("/tenant"), &[("x-tenant", "r123"), ("x-tenant", "acme")], b"").await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (400, Some("bad_request")), "{}", r.text());
    assert_eq!(upstream.hits(), hits, "not sent on");
    let r = client.request("GET", &gw.url("/tenant"), &[("x-tenant", "acme"), ("x-tenant", "acme")], b"").await;
    assert_eq!(r.status, 429, "the same value twice is acme's");
    gw.stop().await;
}

/// Two definitions granted `state` storing keys without a TTL fill the memory store between
/// them (each its half); a rate limit's new keys are then refused, and failing open (its
/// default) it lets requests through. That is said now, in a warning naming its route, where
/// before the limiter stopped limiting with only the store's own "full" line to show for it.
#[tokio::test]
async fn a_rate_limit_failing_open_on_a_full_store_says_so_naming_its_route() {
    let upstream = Upstream::start().await;
    let config = r#"
[state]
max_keys = 400

[upstreams.backend]
targets = ["{upstream}"]

[plugins.flood-a]
source = "{plugin:state-flood}"
capabilities = ["state"]

[plugins.flood-b]
source = "{plugin:state-flood}"
capabilities = ["state"]

[[routes]]
path = "/a"
[[routes.plugins]]
plugin = "flood-a"
config = { key_bytes = 8 }

[[routes]]
path = "/b"
[[routes.plugins]]
plugin = "flood-b"
config = { key_bytes = 8 }

[[routes]]
id = "limited"
path = "/limited"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { by = ["header:x-client"], limits = [{ limit = 1, window = "minute" }] }
"#;
    let gw = airlock_tests::process::GatewayProcess::start_logging(config, &upstream, &[]).await;
    let client = HttpClient::http1();
    for path in ["/a", "/b"] {
        for from in [0, 1000] {
            let r = client.request("GET", &gw.url(path), &[("x-from", &from.to_string()), ("x-count", "400")], b"").await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let r = client.request("GET", &gw.url("/limited"), &[("x-client", "new")], b"").await;
    assert_eq!(r.status, 200, "failing open: {}", r.text());
    let mut log = String::new();
    for _ in 0..50 {
        log = gw.log();
        if log.contains("not enforced") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log.contains("rate limit on route `limited` not enforced, failing open: "), "{log}");
}
