//! Observability end to end: the admin listener (health, readiness, token, redacted config,
//! routes, plugins), Prometheus metrics checked with an independent parser against the exact
//! traffic sent, W3C trace context and `X-Request-Id` as the upstream and client see them, and
//! the JSON access log (lines matched to requests, reopened on SIGUSR1).

use std::collections::HashMap;
use std::time::Duration;

use airlock_tests::metrics::{eventually, sample, scrape};
use airlock_tests::{Gateway, HttpClient, Reply, Upstream};
use prometheus_parse::{Scrape, Value};

const TOKEN: &str = "admin-token-7f3e";

const ADMIN: &str = r#"
[admin]
address = "127.0.0.1:0"
token = "admin-token-7f3e"

[upstreams.backend]
targets = ["{upstream}"]

[[consumers]]
id = "alice"
credentials = { keys = ["alice-key-secret-91"] }

[[routes]]
id = "open"
path_prefix = "/open"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:transform"
config = { request = { query = { set = { "route" = "${route}" } } } }

[[routes]]
id = "auth"
path = "/auth"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
"#;

#[tokio::test]
async fn admin_endpoints_enforce_the_token_and_redact_secrets() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ADMIN, Some(&upstream)).await;
    let client = HttpClient::http1();
    assert!(gw.admin_addr().ip().is_loopback());
    assert_ne!(gw.admin_addr(), gw.addr());

    // Probes need no token.
    let health = client.get(&gw.admin_url("/health")).await;
    assert_eq!(health.status, 200);
    let ready = client.get(&gw.admin_url("/ready")).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let ready = ready.json();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["state_backend"]["backend"], "memory");
    assert_eq!(ready["checks"]["plugins_instantiated"]["chain_entries"], 2);

    // Everything else does.
    let bearer = format!("Bearer {TOKEN}");
    for path in ["/metrics", "/admin/config", "/admin/routes", "/admin/plugins"] {
        let none = client.get(&gw.admin_url(path)).await;
        assert_eq!(none.status, 401, "{path} without a token");
        assert_eq!(none.header("www-authenticate").as_deref(), Some("Bearer"));
        let wrong = client.request("GET", &gw.admin_url(path), &[("authorization", "Bearer admin-token-7f3")], b"").await;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let right = client.request("GET", &gw.admin_url(path), &[("authorization", &bearer)], b"").await;
        assert_eq!(right.status, 200, "{path} with the token: {}", right.text());
    }
    let unknown = client.request("GET", &gw.admin_url("/nope"), &[("authorization", &bearer)], b"").await;
    assert_eq!(unknown.status, 404);

    // The effective config, secrets redacted.
    let config = client.request("GET", &gw.admin_url("/admin/config"), &[("authorization", &bearer)], b"").await;
    let text = config.text();
    assert!(!text.contains("alice-key-secret-91"), "consumer key shown: {text}");
    assert!(!text.contains(TOKEN), "admin token shown: {text}");
    let config = config.json();
    assert_eq!(config["consumers"][0]["id"], "alice");
    assert_eq!(config["consumers"][0]["credentials"]["keys"][0], "[redacted]");
    assert_eq!(config["admin"]["token"], "[redacted]");
    assert_eq!(config["routes"][1]["id"], "auth");

    // Some traffic, then the inventories.
    for _ in 0..3 {
        assert_eq!(client.get(&gw.url("/open/x")).await.status, 200);
    }
    assert_eq!(client.request("GET", &gw.url("/auth"), &[("x-api-key", "alice-key-secret-91")], b"").await.status, 200);
    assert_eq!(client.get(&gw.url("/auth")).await.status, 401);

    let routes = client.request("GET", &gw.admin_url("/admin/routes"), &[("authorization", &bearer)], b"").await.json();
    let routes = routes["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0]["id"], "open");
    // What each route matches.
    assert_eq!(routes[0]["path_prefix"], "/open");
    assert_eq!(routes[0]["path"], serde_json::Value::Null);
    assert_eq!(routes[1]["path"], "/auth");
    assert_eq!(routes[0]["hosts"], serde_json::json!([]));
    assert_eq!(routes[0]["methods"], serde_json::json!([]));
    assert_eq!(routes[0]["upstream"]["name"], "backend");
    assert_eq!(routes[0]["upstream"]["targets"][0], upstream.addr.to_string());
    assert_eq!(routes[0]["tunnel_idle_ms"], 300_000, "the global default, as the route sets none");
    assert_eq!(routes[0]["chain"][0]["plugin"], "builtin:transform");
    assert_eq!(routes[1]["chain"][0]["plugin"], "builtin:key-auth");
    assert_eq!(routes[1]["chain"][0]["failure"], "closed");

    let plugins = client.request("GET", &gw.admin_url("/admin/plugins"), &[("authorization", &bearer)], b"").await.json();
    let plugins = plugins["plugins"].as_array().unwrap();
    let by_name: HashMap<&str, &serde_json::Value> = plugins.iter().map(|p| (p["name"].as_str().unwrap(), p)).collect();
    let transform = by_name["builtin:transform"];
    assert_eq!(transform["source"], "builtin:transform");
    let hash = transform["sha256"].as_str().unwrap();
    let bytes = airlock::runtime::builtin::bytes("transform").unwrap();
    assert_eq!(hash, airlock_tests::sha256_hex(bytes), "the built-in's digest, from the build, is its bytes' digest");
    assert_eq!(transform["routes"], serde_json::json!(["open"]));
    assert_eq!(transform["failures"]["trap"], 0);
    assert!(transform["limits"]["memory_bytes"].as_u64().unwrap() > 0);
    assert!(transform["p99_ms"]["on_request"].as_f64().unwrap() > 0.0);
    let key_auth = by_name["builtin:key-auth"];
    assert!(key_auth["capabilities"].is_array(), "{key_auth}");
    // Calls are counted per phase the entry runs: three requests through `transform`
    // (on-request only), two through `key-auth`.
    let transform_calls = transform["calls"].as_u64().unwrap();
    assert_eq!(transform_calls % 3, 0, "{transform}");
    assert!(transform_calls >= 3);
    assert!(key_auth["calls"].as_u64().unwrap() >= 2);
    gw.stop().await;
}

const TRAFFIC: &str = r#"
[metrics]
consumer_labels = 1

[runtime]
cpu_ms = 50
memory_mb = 16

[upstreams.backend]
targets = ["{upstream}"]
[upstreams.dead]
targets = ["127.0.0.1:1"]

[plugins.panic]
source = "{plugin:panic}"
[plugins.loop]
source = "{plugin:loop}"
[plugins.alloc]
source = "{plugin:alloc}"
# The memory cap stops it, never the CPU deadline, however slow the machine is.
cpu_ms = 5000

[[consumers]]
id = "alice"
credentials = { keys = ["alice-key"] }
[[consumers]]
id = "bob"
credentials = { keys = ["bob-key"] }

[[routes]]
id = "api"
path_prefix = "/api"
strip_prefix = "/api"
upstream = "backend"

[[routes]]
id = "boom"
path = "/boom"
upstream = "backend"
[[routes.plugins]]
plugin = "panic"

[[routes]]
id = "spin"
path = "/spin"
upstream = "backend"
[[routes.plugins]]
plugin = "loop"

[[routes]]
id = "hog"
path = "/hog"
upstream = "backend"
[[routes.plugins]]
plugin = "alloc"

[[routes]]
id = "down"
path = "/down"
upstream = "dead"

[[routes]]
id = "auth"
path = "/auth"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_traffic_sent() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(TRAFFIC, Some(&upstream)).await;
    let client = HttpClient::http1();

    let before = scrape(&client, &gw, None).await;
    assert_eq!(sample(&before, "airlock_requests_total", &[]), 0.0);
    // Both reload series exist from the start, at 0, so the first failed reload is an increase.
    for result in ["ok", "error"] {
        let exists = before.samples.iter().any(|s| s.metric == "airlock_config_reloads_total" && s.labels.get("result") == Some(result));
        assert!(exists, "airlock_config_reloads_total{{result=\"{result}\"}} is missing before any reload");
        assert_eq!(sample(&before, "airlock_config_reloads_total", &[("result", result)]), 0.0);
    }
    assert_eq!(sample(&before, "airlock_state_backend_errors_total", &[]), 0.0);

    for _ in 0..3 {
        assert_eq!(client.get(&gw.url("/api/a")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(client.request("POST", &gw.url("/api/b"), &[], b"hello").await.status, 200);
    }
    assert_eq!(client.get(&gw.url("/api/status/404")).await.status, 404);
    assert_eq!(client.get(&gw.url("/api/status/503")).await.status, 503);
    // A code without a counter slot of its own: counted by code all the same.
    assert_eq!(client.get(&gw.url("/api/status/418")).await.status, 418);
    for _ in 0..2 {
        assert_eq!(client.get(&gw.url("/boom")).await.status, 500);
    }
    assert_eq!(client.get(&gw.url("/spin")).await.status, 500);
    assert_eq!(client.get(&gw.url("/hog")).await.status, 500);
    assert_eq!(client.get(&gw.url("/down")).await.status, 502);
    assert_eq!(client.get(&gw.url("/nowhere")).await.status, 404);
    for _ in 0..2 {
        assert_eq!(client.request("GET", &gw.url("/auth"), &[("x-api-key", "alice-key")], b"").await.status, 200);
    }
    // Past `consumer_labels = 1`, bob is `other`.
    assert_eq!(client.request("GET", &gw.url("/auth"), &[("x-api-key", "bob-key")], b"").await.status, 200);
    assert_eq!(client.get(&gw.url("/auth")).await.status, 401);

    let m = scrape(&client, &gw, None).await;
    let requests = |route, method, status, consumer| {
        sample(&m, "airlock_requests_total", &[("route", route), ("method", method), ("status", status), ("consumer", consumer)])
    };
    assert_eq!(requests("api", "GET", "2xx", "none"), 3.0);
    assert_eq!(requests("api", "POST", "2xx", "none"), 2.0);
    assert_eq!(requests("api", "GET", "4xx", "none"), 2.0);
    assert_eq!(requests("api", "GET", "5xx", "none"), 1.0);
    assert_eq!(requests("boom", "GET", "5xx", "none"), 2.0);
    assert_eq!(requests("down", "GET", "5xx", "none"), 1.0);
    assert_eq!(requests("none", "GET", "4xx", "none"), 1.0);
    assert_eq!(requests("auth", "GET", "2xx", "alice"), 2.0);
    assert_eq!(requests("auth", "GET", "2xx", "other"), 1.0);
    assert_eq!(requests("auth", "GET", "4xx", "none"), 1.0);
    assert_eq!(sample(&m, "airlock_requests_total", &[("consumer", "bob")]), 0.0, "bob is past the label bound");
    let total: f64 = m
        .samples
        .iter()
        .filter(|s| s.metric == "airlock_requests_total")
        .map(|s| match s.value {
            Value::Counter(v) | Value::Untyped(v) => v,
            ref other => panic!("airlock_requests_total is {other:?}"),
        })
        .sum();
    assert_eq!(total, 18.0, "every request counted once");
    // By exact code too, every request once.
    let responses = |route, code| sample(&m, "airlock_responses_total", &[("route", route), ("code", code)]);
    assert_eq!(
        [responses("api", "200"), responses("api", "404"), responses("api", "418"), responses("api", "503")],
        [5.0, 1.0, 1.0, 1.0]
    );
    assert_eq!([responses("boom", "500"), responses("down", "502"), responses("none", "404")], [2.0, 1.0, 1.0]);
    assert_eq!([responses("auth", "200"), responses("auth", "401")], [3.0, 1.0]);
    let by_code: f64 = m.samples.iter().filter(|s| s.metric == "airlock_responses_total").map(|s| sample(&m, &s.metric, &[("route", &s.labels["route"]), ("code", &s.labels["code"])])).sum();
    assert_eq!(by_code, 18.0, "every request counted once by code");

    // Latency histograms: one observation per request; upstream ones only where it answered.
    assert_eq!(sample(&m, "airlock_request_duration_seconds", &[("route", "api")]), 8.0);
    assert_eq!(sample(&m, "airlock_upstream_duration_seconds", &[("route", "api")]), 8.0);
    assert_eq!(sample(&m, "airlock_upstream_duration_seconds", &[("route", "boom")]), 0.0);
    assert_eq!(sample(&m, "airlock_upstream_duration_seconds", &[("route", "down")]), 0.0);
    assert_eq!(sample(&m, "airlock_plugin_phase_duration_seconds", &[("plugin", "panic"), ("phase", "on-request")]), 2.0);
    assert_eq!(sample(&m, "airlock_plugin_phase_duration_seconds", &[("plugin", "builtin:key-auth"), ("phase", "on-request")]), 4.0);

    // Failures by plugin and kind; upstream errors by upstream and kind.
    assert_eq!(sample(&m, "airlock_plugin_failures_total", &[("plugin", "panic"), ("kind", "trap")]), 2.0);
    assert_eq!(sample(&m, "airlock_plugin_failures_total", &[("plugin", "panic"), ("kind", "deadline")]), 0.0);
    assert_eq!(sample(&m, "airlock_plugin_failures_total", &[("plugin", "loop"), ("kind", "deadline")]), 1.0);
    assert_eq!(sample(&m, "airlock_plugin_failures_total", &[("plugin", "loop"), ("kind", "trap")]), 0.0);
    assert_eq!(sample(&m, "airlock_plugin_failures_total", &[("plugin", "alloc"), ("kind", "out_of_memory")]), 1.0);
    assert_eq!(requests("spin", "GET", "5xx", "none"), 1.0);
    assert_eq!(requests("hog", "GET", "5xx", "none"), 1.0);
    assert_eq!(sample(&m, "airlock_upstream_errors_total", &[("upstream", "dead"), ("kind", "unavailable")]), 1.0);
    assert_eq!(sample(&m, "airlock_upstream_errors_total", &[("upstream", "dead"), ("kind", "timeout")]), 0.0);
    for kind in ["unavailable", "timeout"] {
        assert_eq!(sample(&m, "airlock_upstream_errors_total", &[("upstream", "backend"), ("kind", kind)]), 0.0);
    }
    assert_eq!(sample(&m, "airlock_state_backend_errors_total", &[]), 0.0);
    assert_eq!(sample(&m, "airlock_access_log_dropped_total", &[]), 0.0);
    // The scrape itself is on the admin listener; the client's keep-alive connection to the
    // gateway is still open.
    assert!(sample(&m, "airlock_active_connections", &[]) >= 1.0);
    gw.stop().await;
}

const TRACING: &str = r#"
[tracing]
sample_ratio = 0.0
response_header = "x-trace-id"

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/"
upstream = "backend"
"#;

fn traceparent_fields(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "{value}");
    (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

#[tokio::test]
async fn trace_context_and_request_id_reach_the_upstream_and_come_back() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(TRACING, Some(&upstream)).await;
    let client = HttpClient::http1();

    // A client trace is continued: same trace id, a new span id, its flags and tracestate.
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = client
        .request("GET", &gw.url("/a"), &[("traceparent", parent), ("tracestate", "congo=t61rcWkgMzE"), ("x-request-id", "req-abc.123")], b"")
        .await;
    assert_eq!(r.status, 200);
    let sent = r.upstream_header("traceparent");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (trace, span, flags) = traceparent_fields(&sent[0]);
    assert_eq!(trace, "0af7651916cd43dd8448eb211c80319c");
    assert_ne!(span, "b7ad6b7169203331");
    assert_eq!(flags, "01", "the client's sampled flag is kept");
    assert_eq!(r.upstream_header("tracestate"), vec!["congo=t61rcWkgMzE"]);
    assert_eq!(r.header("x-trace-id").as_deref(), Some("0af7651916cd43dd8448eb211c80319c"));
    assert_eq!(r.upstream_header("x-request-id"), vec!["req-abc.123"]);
    assert_eq!(r.header("x-request-id").as_deref(), Some("req-abc.123"));

    // Several tracestate lines are one list, passed on as one line (W3C Trace Context 3.3.1.1).
    let r = client.request("GET", &gw.url("/a"), &[("traceparent", parent), ("tracestate", "a=1"), ("tracestate", "b=2")], b"").await;
    assert_eq!(r.upstream_header("tracestate"), vec!["a=1,b=2"]);

    // Without one (or with an invalid one, or two) a new trace starts, unsampled at ratio 0.
    let other = "00-11111111111111111111111111111111-b7ad6b7169203331-01";
    for headers in [vec![], vec![("traceparent", "00-zz-bad-01"), ("tracestate", "x=y")], vec![("traceparent", parent), ("traceparent", other)]] {
        let r = client.request("GET", &gw.url("/b"), &headers, b"").await;
        let sent = r.upstream_header("traceparent");
        let (trace, span, flags) = traceparent_fields(&sent[0]);
        assert_ne!(trace, "0".repeat(32));
        assert_ne!(span, "0".repeat(16));
        assert_eq!(flags, "00");
        assert_eq!(r.header("x-trace-id"), Some(trace));
        assert!(r.upstream_header("tracestate").is_empty(), "no tracestate without a valid parent");
    }

    // Two requests, two traces.
    let a = client.get(&gw.url("/c")).await.header("x-trace-id");
    let b = client.get(&gw.url("/c")).await.header("x-trace-id");
    assert_ne!(a, b);

    // An unusable X-Request-Id is replaced; the same generated id goes upstream and back.
    let long = "x".repeat(200);
    for bad in ["has space", long.as_str(), "tab\there"] {
        let r = client.request("GET", &gw.url("/d"), &[("x-request-id", bad)], b"").await;
        let id = r.header("x-request-id").expect("request id returned");
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32);
        assert_eq!(r.upstream_header("x-request-id"), vec![id]);
    }
    gw.stop().await;
}

/// `[tracing] trust_incoming`: a client that is not trusted cannot choose its trace (join one,
/// or mark itself sampled past `sample_ratio`), its `tracestate` or its request id; one that
/// came through a listener's `trusted_proxies` can under `"trusted_proxies"`. A `tracestate` of
/// more than W3C's 32 members is not passed on whoever sent it.
#[tokio::test]
async fn untrusted_clients_cannot_choose_their_trace_or_request_id() {
    let upstream = Upstream::start().await;
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let headers = [("traceparent", parent), ("tracestate", "congo=t61rcWkgMzE"), ("x-request-id", "req-abc.123")];
    let client = HttpClient::http1();
    for (trust, proxies, continued) in [
        ("none", "127.0.0.1", false),
        ("trusted_proxies", "10.0.0.0/8", false),
        ("trusted_proxies", "127.0.0.1", true),
        ("all", "10.0.0.0/8", true),
    ] {
        let config = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\"{proxies}\"]\n\n{}",
            TRACING.replace("response_header = \"x-trace-id\"", &format!("response_header = \"x-trace-id\"\ntrust_incoming = \"{trust}\""))
        );
        let gw = Gateway::start(&config, Some(&upstream)).await;
        let r = client.request("GET", &gw.url("/a"), &headers, b"").await;
        assert_eq!(r.status, 200);
        let (trace, _, flags) = traceparent_fields(&r.upstream_header("traceparent")[0]);
        let id = r.header("x-request-id").expect("a request id");
        assert_eq!(r.upstream_header("x-request-id"), vec![id.clone()], "{trust} {proxies}");
        if continued {
            assert_eq!((trace.as_str(), flags.as_str(), id.as_str()), ("0af7651916cd43dd8448eb211c80319c", "01", "req-abc.123"), "{trust} {proxies}");
            assert_eq!(r.upstream_header("tracestate"), vec!["congo=t61rcWkgMzE"]);
        } else {
            assert_ne!(trace, "0af7651916cd43dd8448eb211c80319c", "{trust} {proxies}");
            assert_eq!(flags, "00", "{trust} {proxies}: sampled at the ratio (0), not by the client's flag");
            assert!(id != "req-abc.123" && id.len() == 32, "{trust} {proxies}: {id}");
            assert!(r.upstream_header("tracestate").is_empty(), "{trust} {proxies}");
        }
        gw.stop().await;
    }
    let gw = Gateway::start(TRACING, Some(&upstream)).await;
    let members: Vec<String> = (0..33).map(|i| format!("v{i}=x")).collect();
    let (thirty_two, thirty_three) = (members[..32].join(","), members.join(","));
    let r = client.request("GET", &gw.url("/a"), &[("traceparent", parent), ("tracestate", &thirty_two)], b"").await;
    assert_eq!(r.upstream_header("tracestate"), vec![thirty_two.clone()]);
    let r = client.request("GET", &gw.url("/a"), &[("traceparent", parent), ("tracestate", &thirty_three)], b"").await;
    assert!(r.upstream_header("tracestate").is_empty(), "33 members are not passed on");
    let r = client.request("GET", &gw.url("/a"), &[("traceparent", parent), ("tracestate", &thirty_two), ("tracestate", "v99=y")], b"").await;
    assert!(r.upstream_header("tracestate").is_empty(), "nor across two lines");
    gw.stop().await;
}

fn line_for<'a>(lines: &'a [serde_json::Value], request_id: &str) -> Option<&'a serde_json::Value> {
    lines.iter().find(|l| l["request_id"] == request_id)
}

const ACCESS_LOG: &str = r#"
[access_log]
enabled = true
path = "access.log"

[tracing]
response_header = "x-trace-id"

[upstreams.backend]
targets = ["{upstream}"]

[[consumers]]
id = "carol"
credentials = { keys = ["carol-key"] }

[[routes]]
id = "files"
path_prefix = "/files"
strip_prefix = "/files"
upstream = "backend"

[[routes]]
id = "member"
path = "/member"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
"#;

async fn send(client: &HttpClient, gw: &Gateway, method: &str, path: &str, id: &str, body: &[u8], extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![("x-request-id", id), ("user-agent", "obs-test/1.0")];
    headers.extend_from_slice(extra);
    client.request(method, &gw.url(path), &headers, body).await
}

#[tokio::test]
async fn access_log_lines_match_requests_and_the_file_reopens_on_sigusr1() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ACCESS_LOG, Some(&upstream)).await;
    let client = HttpClient::http1();
    let log = gw.dir.path().join("access.log");

    let big = send(&client, &gw, "GET", "/files/big/3000", "log-1", b"", &[]).await;
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 3000);
    let posted = send(&client, &gw, "POST", "/files/up", "log-2", b"twelve bytes", &[]).await;
    assert_eq!(posted.status, 200);
    let member = send(&client, &gw, "GET", "/member", "log-3", b"", &[("x-api-key", "carol-key")]).await;
    assert_eq!(member.status, 200);
    let missing = send(&client, &gw, "GET", "/nothing-here", "log-4", b"", &[]).await;
    assert_eq!(missing.status, 404);

    let lines = eventually("four access log lines", || {
        let lines = airlock_tests::access_log_lines(&log);
        (lines.len() >= 4).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 4, "{lines:?}");

    let l1 = line_for(&lines, "log-1").expect("line for log-1");
    assert_eq!(l1["method"], "GET");
    assert_eq!(l1["path"], "/files/big/3000");
    assert_eq!(l1["route"], "files");
    assert_eq!(l1["status"], 200);
    assert_eq!(l1["bytes_out"], 3000);
    assert_eq!(l1["bytes_in"], 0);
    assert_eq!(l1["client_ip"], "127.0.0.1");
    assert_eq!(l1["user_agent"], "obs-test/1.0");
    assert_eq!(l1["protocol"], "HTTP/1.1");
    assert!(l1["host"].as_str().is_some_and(|h| h.starts_with("127.0.0.1:")), "{l1}");
    assert_eq!(l1["consumer"], serde_json::Value::Null);
    assert_eq!(l1["trace_id"].as_str(), big.header("x-trace-id").as_deref());
    assert!(l1["upstream_ms"].as_f64().unwrap() <= l1["duration_ms"].as_f64().unwrap());
    assert!(l1["time"].as_str().unwrap().ends_with('Z'));

    let l2 = line_for(&lines, "log-2").expect("line for log-2");
    assert_eq!(l2["method"], "POST");
    assert_eq!(l2["bytes_in"], 12);
    assert_eq!(l2["bytes_out"], posted.body.len());

    let l3 = line_for(&lines, "log-3").expect("line for log-3");
    assert_eq!(l3["route"], "member");
    assert_eq!(l3["consumer"], "carol");
    assert!(l3["plugins_ms"].as_f64().unwrap() > 0.0);

    let l4 = line_for(&lines, "log-4").expect("line for log-4");
    assert_eq!(l4["status"], 404);
    assert_eq!(l4["route"], serde_json::Value::Null);
    assert_eq!(l4["upstream_ms"], serde_json::Value::Null);
    assert!(l4["host"].is_string(), "a 404 names the host it had no route for: {l4}");
    assert_eq!(l4["bytes_out"], missing.body.len());

    // Rotate: rename, signal, and new lines go to a new file at the configured path.
    let rotated = gw.dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let status = std::process::Command::new("kill").args(["-USR1", &std::process::id().to_string()]).status().unwrap();
    assert!(status.success());
    // The writer creates the file at the configured path when it reopens.
    eventually("the reopened access log", || std::fs::metadata(&log).ok()).await;
    let after = send(&client, &gw, "GET", "/files/after", "after-rotation", b"", &[]).await;
    assert_eq!(after.status, 200);
    let new_lines = eventually("the line after rotation", || {
        let lines = airlock_tests::access_log_lines(&log);
        line_for(&lines, "after-rotation").is_some().then_some(lines)
    })
    .await;
    assert!(line_for(&new_lines, "log-1").is_none());
    let old_lines = airlock_tests::access_log_lines(&rotated);
    assert_eq!(old_lines.len(), 4, "the rotated file keeps its lines and gets no new ones");
    assert!(line_for(&old_lines, "after-rotation").is_none());
    gw.stop().await;
}

/// A request the client gives up on before the answer (here: it closes the connection while
/// the upstream is slow) is still logged and counted, with status 499 ("client closed request"),
/// and as its consumer's when an auth plugin had named one (it was counted as no one's).
#[tokio::test]
async fn a_request_the_client_abandons_is_logged_and_counted_as_499() {
    use tokio::io::AsyncWriteExt;
    let upstream = Upstream::start().await;
    let config = format!(
        "{ACCESS_LOG}\n[[routes]]\nid = \"member-files\"\npath_prefix = \"/member-files\"\nstrip_prefix = \"/member-files\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"builtin:key-auth\"\n"
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let log = gw.dir.path().join("access.log");
    for (id, request) in [
        ("gave-up", "GET /files/slow/3000 HTTP/1.1\r\nhost: a\r\nx-request-id: gave-up\r\n\r\n"),
        ("carol-gave-up", "GET /member-files/slow/3000 HTTP/1.1\r\nhost: a\r\nx-api-key: carol-key\r\nx-request-id: carol-gave-up\r\n\r\n"),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(tcp);
        eventually("the abandoned request's line", || line_for(&airlock_tests::access_log_lines(&log), id).map(|_| ())).await;
    }
    let lines = airlock_tests::access_log_lines(&log);
    let line = line_for(&lines, "gave-up").unwrap();
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["route"], "files");
    assert_eq!(line["bytes_out"], 0);
    let carol = line_for(&lines, "carol-gave-up").unwrap();
    assert_eq!((carol["status"].as_u64(), carol["consumer"].as_str()), (Some(499), Some("carol")), "{carol}");
    let client = HttpClient::http1();
    let m = scrape(&client, &gw, None).await;
    assert_eq!(sample(&m, "airlock_requests_total", &[("route", "files"), ("status", "4xx")]), 1.0);
    assert_eq!(sample(&m, "airlock_requests_total", &[("route", "member-files"), ("status", "4xx"), ("consumer", "carol")]), 1.0);
    gw.stop().await;
}

const UNREACHABLE_STATE: &str = r#"
[state]
backend = "redis"
redis_url = "redis://:state-pass-55@127.0.0.1:1/0"
connect_timeout_ms = 200
timeout_ms = 200

[[routes]]
path = "/"
[[routes.plugins]]
plugin = "builtin:respond"
config = { status = 204 }
"#;

/// `/ready` reports a state backend that does not answer; it fails on it only when
/// `[state] required_for_ready` says so (every replica shares one Redis: failing readiness on it
/// would take them all out of rotation at once, limiters failing open included).
#[tokio::test]
async fn ready_reports_an_unreachable_state_backend_and_counts_its_errors() {
    let client = HttpClient::http1();
    let gw = Gateway::start(UNREACHABLE_STATE, None).await;
    let ready = client.get(&gw.admin_url("/ready")).await;
    assert_eq!(ready.status, 200, "not required by default: {}", ready.text());
    let body = ready.json();
    assert_eq!((body["ready"].clone(), body["checks"]["state_backend"]["ok"].clone()), (true.into(), false.into()), "{body}");
    assert_eq!(body["checks"]["state_backend"]["required"], false);
    assert_eq!(body["checks"]["state_backend"]["error"], "unavailable", "{body}");
    gw.stop().await;

    let required = UNREACHABLE_STATE.replace("\ntimeout_ms = 200\n", "\ntimeout_ms = 200\nrequired_for_ready = true\n");
    let gw = Gateway::start(&required, None).await;
    assert_eq!(client.get(&gw.admin_url("/health")).await.status, 200, "alive even when not ready");
    let ready = client.get(&gw.admin_url("/ready")).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(!ready.text().contains("state-pass-55"), "the open /ready shows the redis password: {}", ready.text());
    let body = ready.json();
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["state_backend"]["ok"], false);
    assert_eq!(body["checks"]["state_backend"]["backend"], "redis");
    assert_eq!(body["checks"]["state_backend"]["error"], "unavailable", "a fixed word, not the error's text: {body}");
    assert!(!ready.text().contains("127.0.0.1"), "the open /ready shows the redis address: {}", ready.text());
    let m = scrape(&client, &gw, None).await;
    assert!(sample(&m, "airlock_state_backend_errors_total", &[]) >= 1.0);
    let config = client.get(&gw.admin_url("/admin/config")).await.text();
    assert!(!config.contains("state-pass-55"), "redis password shown: {config}");
    assert!(config.contains("redis://:[redacted]@127.0.0.1:1/0"), "{config}");
    gw.stop().await;
}

/// `[admin] token_file`: the token comes from a file (a mounted secret), not the config text,
/// and guards the admin API as `token` does; a file that cannot be read stops the config at the
/// key.
#[tokio::test]
async fn the_admin_token_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-token");
    std::fs::write(&file, "token-from-file-31\n").unwrap();
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\n[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\n",
        file.display()
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.admin_url("/metrics")).await.status, 401);
    let r = client.request("GET", &gw.admin_url("/metrics"), &[("authorization", "Bearer token-from-file-31")], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let shown = client.request("GET", &gw.admin_url("/admin/config"), &[("authorization", "Bearer token-from-file-31")], b"").await.text();
    assert!(!shown.contains("token-from-file-31"), "{shown}");
    gw.stop().await;

    let missing = config.replace("admin-token", "no-such-file");
    let err = Gateway::try_start(&missing, None).await.err().expect("refused").to_string();
    assert!(err.contains("`admin.token_file`: cannot read"), "{err}");
    let both = config.replace("token_file", "token = \"t\"\ntoken_file");
    let err = Gateway::try_start(&both, None).await.err().expect("refused").to_string();
    assert!(err.contains("not both"), "{err}");
    // A token no client could present (trimmed, what it sends never matched): refused, from the
    // file or inline, rather than locking every admin request out, `POST /admin/reload` too.
    std::fs::write(&file, "sp-tok \n").unwrap();
    let err = Gateway::try_start(&config, None).await.err().expect("refused").to_string();
    assert!(err.contains("`admin.token`: may hold only visible ASCII"), "{err}");
    assert!(!err.contains("sp-tok"), "the token is not shown: {err}");
    let inline = config.replace(&format!("token_file = \"{}\"", file.display()), "token = \"caf\u{e9}-token\"");
    let err = Gateway::try_start(&inline, None).await.err().expect("refused").to_string();
    assert!(err.contains("`admin.token`: may hold only visible ASCII"), "{err}");
}

/// The admin token rotates without a restart: a `token_file` rewritten (a Kubernetes secret
/// updated) is reloaded by `--watch`, and the old token stops working at once. A token added to
/// a loopback listener that had none closes it; a reload that would remove the token is refused
/// and the token stays required.
#[tokio::test]
async fn the_admin_token_rotates_on_reload_and_no_reload_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-token");
    std::fs::write(&file, "first-token\n").unwrap();
    let routes = "[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\n";
    let open = format!("[admin]\naddress = \"127.0.0.1:0\"\n\n{routes}");
    let guarded = format!("[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\n{routes}", file.display());
    let gw = Gateway::start(&open, None).await;
    let client = HttpClient::http1();
    let status = |token: &'static str| {
        let (client, url) = (client.clone(), gw.admin_url("/metrics"));
        async move {
            let bearer = format!("Bearer {token}");
            let headers: Vec<(&str, &str)> = if token.is_empty() { vec![] } else { vec![("authorization", bearer.as_str())] };
            client.request("GET", &url, &headers, b"").await.status.as_u16()
        }
    };
    assert_eq!(status("").await, 200, "open on loopback without a token");

    // Added by a reload: the listener closes.
    assert_eq!(gw.reload(&guarded, None).await.expect("reload"), 2);
    assert_eq!((status("").await, status("first-token").await), (401, 200));

    // The secret rotated in place: `--watch` reloads it, and only the new token works.
    airlock::reload::reload_on_change(gw.live().clone(), std::time::Duration::from_millis(50)).expect("watch");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    std::fs::write(&file, "second-token\n").unwrap();
    for _ in 0..5000 {
        if gw.live().current().number == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(gw.live().current().number, 3, "the rotated token file is reloaded without a reload by hand");
    assert_eq!((status("first-token").await, status("second-token").await), (401, 200));

    // A token file written empty (a rotation caught half way): that reload fails, counted, and
    // the token in force stays the only one accepted.
    let reloads = &gw.inner().telemetry.metrics.reloads;
    std::fs::write(&file, "").unwrap();
    for _ in 0..5000 {
        if reloads.last_failed() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(reloads.last_failed(), "the empty token file was tried and refused");
    assert_eq!(gw.live().current().number, 3);
    assert_eq!((status("").await, status("second-token").await), (401, 200));
    std::fs::write(&file, "second-token\n").unwrap();

    // A token no client could present (past ASCII, white space, empty) is refused by a reload
    // as at start-up: taken live it locked everyone out, and the file then failed to start.
    for bad in ["t\u{f8}k", "a b", ""] {
        let config = format!("[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{bad}\"\n\n{routes}");
        let err = gw.reload(&config, None).await.expect_err("refused").to_string();
        assert!(err.contains("admin.token"), "{bad:?}: {err}");
        assert_eq!((status("").await, status("second-token").await), (401, 200), "{bad:?}: the token in force stays");
    }

    // Removing the token by reload would open the API: refused, the token still required.
    let err = gw.reload(&open, None).await.expect_err("refused").to_string();
    assert!(err.contains("admin.token") && err.contains("would open the admin API"), "{err}");
    assert_eq!((status("").await, status("second-token").await), (401, 200));
    gw.stop().await;
}

/// A web page in the operator's browser cannot use the default (loopback, no token) admin
/// listener: a DNS name rebound to 127.0.0.1 is refused, and so is a cross-site reload.
#[tokio::test]
async fn the_open_admin_listener_refuses_what_a_web_page_could_send() {
    let config = "[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\n";
    let gw = Gateway::start(config, None).await;
    let admin = gw.admin_addr();
    let ask = |request: String| async move { airlock_tests::raw_exchange(admin, request.as_bytes()).await };
    let rebound = ask("GET /admin/config HTTP/1.1\r\nHost: rebind.attacker.example\r\nConnection: close\r\n\r\n".into()).await;
    assert!(rebound.starts_with("HTTP/1.1 403") && rebound.contains("host_not_allowed"), "{rebound}");
    assert!(!rebound.contains("routes"), "no config in the refusal: {rebound}");
    let local = ask(format!("GET /admin/config HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")).await;
    assert!(local.starts_with("HTTP/1.1 200") && local.contains("routes"), "{local}");
    let named = ask("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into()).await;
    assert!(named.starts_with("HTTP/1.1 200"), "{named}");
    // RFC 9112 3.2: an HTTP/1.1 request without a host is a 400; an absolute-form target's
    // authority is the host, whatever `Host` says (3.2.2).
    let hostless = ask("GET /admin/config HTTP/1.1\r\nConnection: close\r\n\r\n".into()).await;
    assert!(hostless.starts_with("HTTP/1.1 400") && !hostless.contains("routes"), "{hostless}");
    let absolute = ask(format!("GET http://{admin}/admin/config HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n")).await;
    assert!(absolute.starts_with("HTTP/1.1 200") && absolute.contains("routes"), "{absolute}");
    let absolute = ask("GET http://rebind.attacker.example/admin/config HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".into()).await;
    assert!(absolute.starts_with("HTTP/1.1 403") && absolute.contains("host_not_allowed"), "{absolute}");
    let cross_site = ask(format!(
        "POST /admin/reload HTTP/1.1\r\nHost: {admin}\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(cross_site.starts_with("HTTP/1.1 403") && cross_site.contains("cross_site_request"), "{cross_site}");
    assert_eq!(gw.live().current().number, 1, "not reloaded");
    let scripted = ask(format!("POST /admin/reload HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
    assert!(scripted.starts_with("HTTP/1.1 200") && scripted.contains("reloaded"), "{scripted}");
    gw.stop().await;
}

/// An unknown admin path is a 404 whatever the method (a `POST` to a typo, or to a known path
/// with a trailing slash, is not a 405); a known path asked with a method it does not take is a
/// 405 naming the ones it does. With a token, a client without it learns no more about unknown
/// paths than from a `GET`: a 401. Without a token, a web page's cross-site `POST` is refused
/// before the path is looked at.
#[tokio::test]
async fn unknown_admin_paths_are_404_whatever_the_method_and_known_ones_405_with_allow() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ADMIN, Some(&upstream)).await;
    let client = HttpClient::http1();
    let bearer = format!("Bearer {TOKEN}");
    let unknown = [
        ("POST", "/admin/nonexistent"),
        ("POST", "/admin/state/clear/"),
        ("POST", "/admin/reload/"),
        ("PUT", "/nope"),
        ("DELETE", "/admin/routes/"),
        ("GET", "/admin/nonexistent"),
        ("OPTIONS", "/admin"),
    ];
    for (method, path) in unknown {
        let r = client.request(method, &gw.admin_url(path), &[("authorization", &bearer)], b"").await;
        assert_eq!((r.status.as_u16(), r.header("allow")), (404, None), "{method} {path}: {}", r.text());
        assert_eq!(r.json()["error"], "not_found", "{method} {path}");
        let r = client.request(method, &gw.admin_url(path), &[], b"").await;
        assert_eq!(r.status.as_u16(), 401, "{method} {path} without the token: {}", r.text());
    }
    let known = [
        ("GET", "/admin/reload", "POST"),
        ("DELETE", "/admin/state/clear", "POST"),
        ("POST", "/admin/routes", "GET, HEAD"),
        ("PUT", "/admin/config", "GET, HEAD"),
        ("POST", "/health", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
    ];
    for (method, path, allow) in known {
        let r = client.request(method, &gw.admin_url(path), &[("authorization", &bearer)], b"").await;
        assert_eq!((r.status.as_u16(), r.header("allow").as_deref()), (405, Some(allow)), "{method} {path}: {}", r.text());
        // Without the token, a path behind it is a 401 whatever the method, as an unknown one
        // is: no 405 tells that it exists. The open ones say their methods to anyone.
        let r = client.request(method, &gw.admin_url(path), &[], b"").await;
        let open = matches!(path, "/health" | "/");
        assert_eq!(r.status.as_u16(), if open { 405 } else { 401 }, "{method} {path} without the token: {}", r.text());
    }
    // `reload` takes no parameter: a guessed dry run is refused, not made a real reload.
    let r = client.request("POST", &gw.admin_url("/admin/reload?dry_run=true"), &[("authorization", &bearer)], b"").await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text());
    assert!(r.json()["message"].as_str().is_some_and(|m| m.contains("airlock check")), "{}", r.text());
    let metrics = scrape(&client, &gw, Some(TOKEN)).await;
    assert_eq!(sample(&metrics, "airlock_config_generation", &[]), 1.0, "no reload made");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(sample(&metrics, "airlock_build_info", &[("version", version), ("wit", "0.2.9")]), 1.0, "what runs");
    gw.stop().await;

    // The open loopback listener (no token): a 404, unless a web page sent it.
    let gw = Gateway::start("[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\n", None).await;
    let admin = gw.admin_addr();
    let ask = |request: String| async move { airlock_tests::raw_exchange(admin, request.as_bytes()).await };
    let scripted = ask(format!("POST /admin/nonexistent HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
    assert!(scripted.starts_with("HTTP/1.1 404"), "{scripted}");
    let cross_site = ask(format!(
        "POST /admin/nonexistent HTTP/1.1\r\nHost: {admin}\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(cross_site.starts_with("HTTP/1.1 403") && cross_site.contains("cross_site_request"), "{cross_site}");
    let rebound = ask("PUT /nope HTTP/1.1\r\nHost: rebind.attacker.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()).await;
    assert!(rebound.starts_with("HTTP/1.1 403") && rebound.contains("host_not_allowed"), "{rebound}");
    gw.stop().await;
}

/// Connections to the admin listener that send nothing (no token needed to open them) are held
/// to `airlock::admin::MAX_PER_PEER` from one address (of `MAX_CONNECTIONS` in all) and closed
/// after `timeouts.idle_ms`: they could otherwise use up the process's file descriptors, the
/// proxy's listeners with them, or keep probes from another address out. The proxy serves
/// throughout.
#[tokio::test]
async fn idle_admin_connections_are_capped_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = "[admin]\ntoken = \"t0ken\"\n\n[timeouts]\nidle_ms = 1000\n\n[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\n";
    let gw = Gateway::start(config, None).await;
    let mut held = Vec::new();
    for _ in 0..airlock::admin::MAX_PER_PEER {
        held.push(tokio::net::TcpStream::connect(gw.admin_addr()).await.expect("connect"));
    }
    // Let the listener take them all, then one more: closed at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = tokio::net::TcpStream::connect(gw.admin_addr()).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), over.read(&mut byte)).await.expect("closed, not held");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(HttpClient::http1().get(&gw.url("/")).await.status, 200, "the proxy serves while the admin port is full");
    // Another address (127.0.0.2 is loopback too) still gets its probe answered.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
    let mut probe = socket.connect(gw.admin_addr()).await.expect("connect");
    probe.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut answer = String::new();
    probe.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "a probe from another address: {answer}");
    // Past `idle_ms` without a request head, each held connection is closed.
    for (i, stream) in held.iter_mut().enumerate() {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await.expect("closed after idle_ms");
        assert!(matches!(read, Ok(0) | Err(_)), "connection {i}: {read:?}");
    }
    // And a kept-alive one between requests, likewise; a new one is served.
    let mut kept = tokio::net::TcpStream::connect(gw.admin_addr()).await.expect("connect");
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.expect("write");
    let mut answer = vec![0u8; 4096];
    let n = kept.read(&mut answer).await.expect("read");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
    let read = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut byte)).await.expect("closed after idle_ms");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(HttpClient::http1().get(&gw.admin_url("/health")).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn the_admin_listener_can_be_turned_off() {
    let config = "[admin]\nenabled = false\n\n[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\n";
    let gw = Gateway::start(config, None).await;
    assert!(gw.inner().telemetry.access_log().is_none());
    assert_eq!(gw.admin_listener(), None, "no admin listener when disabled");
    assert_eq!(HttpClient::http1().get(&gw.url("/")).await.status, 200);
    gw.stop().await;
}

/// An OTLP/HTTP collector in the test: decodes every export request's protobuf body.
struct Collector {
    addr: std::net::SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
    /// How many spans each export request carried, in arrival order.
    batches: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        use http_body_util::BodyExt;
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let batches = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sink, batch_sink) = (received.clone(), batches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (sink, batch_sink) = (sink.clone(), batch_sink.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (sink, batch_sink) = (sink.clone(), batch_sink.clone());
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).expect("a valid OTLP protobuf body");
                            let count = export.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
                            batch_sink.lock().unwrap().push(count);
                            for resource in export.resource_spans {
                                for scope in resource.scope_spans {
                                    sink.lock().unwrap().extend(scope.spans);
                                }
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, received, batches, task }
    }

    fn span_of_trace(&self, trace_id: &str) -> Option<opentelemetry_proto::tonic::trace::v1::Span> {
        self.received.lock().unwrap().iter().find(|s| hex(&s.trace_id) == trace_id).cloned()
    }

    /// Every span of a trace, once at least `n` have arrived.
    fn spans_of_trace(&self, trace_id: &str, n: usize) -> Option<Vec<opentelemetry_proto::tonic::trace::v1::Span>> {
        let spans: Vec<_> = self.received.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == trace_id).cloned().collect();
        (spans.len() >= n).then_some(spans)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref()).map(|v| match v {
        V::StringValue(s) => s.clone(),
        V::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

#[tokio::test]
async fn sampled_requests_are_exported_as_otlp_spans() {
    let upstream = Upstream::start().await;
    let collector = Collector::start().await;
    let config = format!(
        "[otlp]\nendpoint = \"http://{}/v1/traces\"\nflush_ms = 20\nservice_name = \"edge-test\"\n\n[tracing]\nsample_ratio = 0.0\nresponse_header = \"x-trace-id\"\n{}",
        collector.addr,
        &TRACING[TRACING.find("[upstreams.backend]").unwrap()..]
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();

    // Not sampled (ratio 0, no parent): never exported.
    let unsampled = client.get(&gw.url("/quiet")).await.header("x-trace-id").unwrap();
    // Sampled by the client's flag.
    let parent = "00-11112222333344445555666677778888-aaaabbbbccccdddd-01";
    let r = client.request("GET", &gw.url("/loud"), &[("traceparent", parent), ("x-request-id", "otlp-1")], b"").await;
    assert_eq!(r.status, 200);
    let (_, gateway_span, _) = traceparent_fields(&r.upstream_header("traceparent")[0]);

    let spans = eventually("the exported spans", || collector.spans_of_trace("11112222333344445555666677778888", 2)).await;
    let span = spans.iter().find(|s| hex(&s.parent_span_id) == "aaaabbbbccccdddd").expect("the server span, the client's child").clone();
    // The upstream is told its parent is the gateway's client span for the call, itself a child
    // of the server span (OpenTelemetry's HTTP conventions for a proxy).
    let call = spans.iter().find(|s| hex(&s.span_id) == gateway_span).expect("the span the upstream was told is its parent");
    assert_eq!(call.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32);
    assert_eq!(call.parent_span_id, span.span_id, "the upstream call is a child of the server span");
    assert_ne!(hex(&span.span_id), gateway_span);
    assert_eq!(span.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32);
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano && span.start_time_unix_nano > 0);
    assert_eq!(attribute(&span, "url.path").as_deref(), Some("/loud"));
    assert_eq!(attribute(&span, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(&span, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attribute(&span, "airlock.request_id").as_deref(), Some("otlp-1"));
    assert_eq!(attribute(&span, "http.route").as_deref(), Some("route-0"));
    // Spans are queued in order; the unsampled request came first and is not there.
    assert!(collector.span_of_trace(&unsampled).is_none(), "an unsampled trace was exported");
    assert_eq!(span.name, "GET route-0");

    // A method a client made up does not name spans (OpenTelemetry's HTTP conventions): span
    // names stay a bounded set.
    let parent = "00-99990000999900009999000099990000-aaaabbbbccccdddd-01";
    let r = client.request("M31173", &gw.url("/odd"), &[("traceparent", parent)], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let spans = eventually("the odd method's spans", || collector.spans_of_trace("99990000999900009999000099990000", 2)).await;
    let odd = spans.iter().find(|s| hex(&s.parent_span_id) == "aaaabbbbccccdddd").expect("the server span").clone();
    assert_eq!(odd.name, "HTTP route-0");
    assert_eq!(attribute(&odd, "http.request.method").as_deref(), Some("_OTHER"));
    assert_eq!(attribute(&odd, "http.request.method_original").as_deref(), Some("M31173"));

    // Spans, not requests: each request's server span and its upstream call's.
    let m = eventually_scrape(&client, &gw, |m| sample(m, "airlock_otlp_spans_exported_total", &[]) == 4.0).await;
    assert_eq!(sample(&m, "airlock_otlp_spans_dropped_total", &[]), 0.0);
    assert_eq!(collector.received.lock().unwrap().len(), 4, "the collector got what was counted");
    gw.stop().await;
}

/// `batch_spans` bounds the spans of one export, not the requests (each request here is two
/// spans, the server's and the upstream call's): 3 sends the requests one at a time, each as
/// soon as the next would pass it (`flush_ms` is a minute), where it sent 3 requests, 6 spans.
#[tokio::test]
async fn an_export_holds_at_most_batch_spans_spans() {
    let upstream = Upstream::start().await;
    let collector = Collector::start().await;
    let config = format!(
        "[otlp]\nendpoint = \"http://{}/v1/traces\"\nflush_ms = 60000\nbatch_spans = 3\n\n{}",
        collector.addr,
        &TRACING[TRACING.find("[upstreams.backend]").unwrap()..]
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    for i in 0..4 {
        let parent = format!("00-0000000000000000000000000000ba{i:02}-3333333333333333-01");
        assert_eq!(client.request("GET", &gw.url("/b"), &[("traceparent", &parent)], b"").await.status, 200);
    }
    // The first three requests' spans go out as the next one arrives; the fourth's is held.
    let sent = eventually("three exports", || {
        let batches = collector.batches.lock().unwrap().clone();
        (batches.len() >= 3).then_some(batches)
    })
    .await;
    assert_eq!(sent, [2, 2, 2]);
    gw.stop().await;
    assert_eq!(*collector.batches.lock().unwrap(), [2, 2, 2, 2], "the last sent on shutdown");
}

/// `queue_spans` bounds the spans waiting while an export is under way, not the requests: with
/// the collector holding the first export unanswered, the second request's two spans fill all
/// but one place of 3 and the third's are dropped and counted (the queue held three requests).
#[tokio::test]
async fn the_queue_holds_at_most_queue_spans_spans() {
    // A collector that takes the connection and never answers: the first export waits out
    // `timeout_ms`.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Ok((stream, _)) = hole.accept().await {
            streams.push(stream);
        }
    });
    let upstream = Upstream::start().await;
    let config = format!(
        "[otlp]\nendpoint = \"http://{hole_addr}/v1/traces\"\nflush_ms = 20\nbatch_spans = 2\nqueue_spans = 3\ntimeout_ms = 30000\n\n{}",
        &TRACING[TRACING.find("[upstreams.backend]").unwrap()..]
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    for i in 0..3 {
        let parent = format!("00-0000000000000000000000000000cc{i:02}-3333333333333333-01");
        assert_eq!(client.request("GET", &gw.url("/q"), &[("traceparent", &parent)], b"").await.status, 200);
        // The export task takes the first request's spans and sends them before the next.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = eventually_scrape(&client, &gw, |m| sample(m, "airlock_otlp_spans_dropped_total", &[]) >= 2.0).await;
    assert_eq!(sample(&m, "airlock_otlp_spans_dropped_total", &[]), 2.0, "the third request's two spans");
    held.abort();
}

/// A request its client abandons while the upstream is being called still exports the upstream
/// call's span (the upstream was sent its id as `traceparent`: without it, the upstream's own
/// spans hang from a parent that never arrives), and one abandoned during a slow plugin call
/// exports that call as `abandoned` and counts its time in the plugin's histogram.
#[tokio::test]
async fn an_abandoned_requests_upstream_call_and_plugin_call_are_exported() {
    use tokio::io::AsyncWriteExt;
    let upstream = Upstream::start().await;
    let collector = Collector::start().await;
    let config = format!(
        r#"[otlp]
endpoint = "http://{collector}/v1/traces"
flush_ms = 20

[access_log]
enabled = true
path = "access.log"

[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.auth]
source = "builtin:forward-auth"
capabilities = ["http-client"]
http_client = {{ allow = ["http://{upstream}"], timeout_ms = 5000 }}

[[routes]]
id = "slow"
path_prefix = "/slow"
upstream = "backend"

[[routes]]
id = "guarded"
path_prefix = "/guarded"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "http://{upstream}/slow/3000" }}
"#,
        collector = collector.addr,
        upstream = upstream.addr,
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    for (trace, path) in [("00000000000000000000000000a0a0a0", "/slow/3000"), ("00000000000000000000000000b0b0b0", "/guarded/x")] {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: a\r\nx-request-id: {trace}\r\ntraceparent: 00-{trace}-1111111111111111-01\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(tcp);
    }
    let spans = eventually("the abandoned upstream call's spans", || collector.spans_of_trace("00000000000000000000000000a0a0a0", 2)).await;
    let server = spans.iter().find(|s| s.name == "GET slow").expect("the request span");
    assert_eq!(attribute(server, "http.response.status_code").as_deref(), Some("499"));
    let call = spans.iter().find(|s| s.name == "upstream backend").expect("the upstream call's span");
    assert_eq!(call.parent_span_id, server.span_id);
    assert!(attribute(call, "error.message").is_some_and(|m| m.contains("ended before the upstream answered")), "{call:?}");
    assert!(call.end_time_unix_nano - call.start_time_unix_nano >= 250_000_000, "it ran until the client left");

    let spans = eventually("the abandoned plugin call's spans", || collector.spans_of_trace("00000000000000000000000000b0b0b0", 2)).await;
    let call = spans.iter().find(|s| s.name == "plugin auth on-request").expect("the plugin call's span");
    assert_eq!(attribute(call, "airlock.outcome").as_deref(), Some("abandoned"));
    assert!(call.end_time_unix_nano - call.start_time_unix_nano >= 250_000_000, "it ran until the client left");
    let m = scrape(&HttpClient::http1(), &gw, None).await;
    let counted = sample(&m, "airlock_plugin_phase_duration_seconds_count", &[("plugin", "auth"), ("phase", "on-request")]);
    assert_eq!(counted, 1.0, "the abandoned call's time is in the histogram");
    // And in the access log's `plugins_ms`.
    let log = gw.dir.path().join("access.log");
    let line = eventually("the abandoned request's line", || line_for(&airlock_tests::access_log_lines(&log), "00000000000000000000000000b0b0b0").cloned()).await;
    assert_eq!(line["status"], 499, "{line}");
    assert!(line["plugins_ms"].as_f64().is_some_and(|ms| ms >= 250.0), "{line}");
    gw.stop().await;
}

/// Spans still queued when the gateway stops are sent before it exits, not lost with it (here
/// `flush_ms` is a minute: only the shutdown can send them).
#[tokio::test]
async fn queued_spans_are_sent_on_shutdown() {
    let upstream = Upstream::start().await;
    let collector = Collector::start().await;
    let config = format!(
        "[otlp]\nendpoint = \"http://{}/v1/traces\"\nflush_ms = 60000\n\n{}",
        collector.addr,
        &TRACING[TRACING.find("[upstreams.backend]").unwrap()..]
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let parent = "00-0000000000000000000000000000f1e5-3333333333333333-01";
    let r = HttpClient::http1().request("GET", &gw.url("/last"), &[("traceparent", parent)], b"").await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(collector.span_of_trace("0000000000000000000000000000f1e5").is_none(), "not sent before flush_ms");
    gw.stop().await;
    assert!(collector.spans_of_trace("0000000000000000000000000000f1e5", 2).is_some(), "sent when the gateway stopped");
}

#[tokio::test]
async fn exported_requests_have_child_spans_per_plugin_phase_and_upstream_call() {
    let upstream = Upstream::start().await;
    let collector = Collector::start().await;
    let config = format!(
        r#"[otlp]
endpoint = "http://{}/v1/traces"
flush_ms = 20

[upstreams.backend]
targets = ["{{upstream}}"]

[[routes]]
id = "traced"
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "{echo}"
config = {{ tag = "a", expose = ["consumer"] }}

[[routes]]
id = "teapot"
path_prefix = "/teapot"
upstream = "backend"
[[routes.plugins]]
plugin = "{echo}"
[[routes.plugins]]
plugin = "builtin:respond"
config = {{ status = 418, body = "short-circuit" }}
"#,
        collector.addr,
        echo = airlock_tests::plugins::ECHO_CONTEXT,
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let echo = airlock_tests::plugins::ECHO_CONTEXT;

    // Through both plugins to the upstream.
    let parent = "00-0000000000000000000000000000c0de-1111111111111111-01";
    let r = client
        .request("GET", &gw.url("/ok"), &[("traceparent", parent), ("x-set-context", "consumer=carol")], b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The request span, then echo on-request, the upstream call, echo on-response.
    let spans = eventually("the request's spans", || collector.spans_of_trace("0000000000000000000000000000c0de", 4)).await;
    let server = spans.iter().find(|s| hex(&s.parent_span_id) == "1111111111111111").expect("the request span");
    let children: Vec<_> = spans.iter().filter(|s| s.span_id != server.span_id).collect();
    assert_eq!(children.len(), 3, "{:?}", children.iter().map(|s| &s.name).collect::<Vec<_>>());
    for child in &children {
        assert_eq!(child.parent_span_id, server.span_id, "{} is a child of the request span", child.name);
        assert_ne!(child.span_id, server.span_id);
        assert!(child.start_time_unix_nano >= server.start_time_unix_nano, "{} starts inside its parent", child.name);
        assert!(child.end_time_unix_nano <= server.end_time_unix_nano, "{} ends inside its parent", child.name);
        assert!(child.end_time_unix_nano >= child.start_time_unix_nano);
        assert_eq!(attribute(child, "http.route").as_deref(), Some("traced"));
        assert_eq!(attribute(child, "airlock.consumer").as_deref(), Some("carol"));
        assert!(attribute(child, "airlock.duration_ms").is_some());
    }
    let named = |name: &str| *children.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name}"));
    let upstream_span = named("upstream backend");
    assert_eq!(upstream_span.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32);
    assert_eq!(attribute(upstream_span, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(upstream_span, "airlock.upstream").as_deref(), Some("backend"));
    let first = named(&format!("plugin {echo} on-request"));
    assert_eq!(attribute(first, "airlock.plugin").as_deref(), Some(echo));
    assert_eq!(attribute(first, "airlock.phase").as_deref(), Some("on-request"));
    assert_eq!(attribute(first, "airlock.outcome").as_deref(), Some("continue"));
    let last = named(&format!("plugin {echo} on-response"));
    // The phases are in order: request phases, then the upstream, then the response phase.
    assert!(first.end_time_unix_nano <= upstream_span.start_time_unix_nano);
    assert!(upstream_span.end_time_unix_nano <= last.start_time_unix_nano);

    // A plugin that answers: its span says so, and there is no upstream span.
    let parent = "00-0000000000000000000000000000beef-2222222222222222-01";
    let r = client.request("GET", &gw.url("/teapot"), &[("traceparent", parent)], b"").await;
    assert_eq!(r.status, 418);
    let spans = eventually("the short-circuited request's spans", || collector.spans_of_trace("0000000000000000000000000000beef", 3)).await;
    assert!(spans.iter().all(|s| !s.name.starts_with("upstream")), "no upstream call was made");
    let respond = spans.iter().find(|s| s.name == "plugin builtin:respond on-request").expect("the respond span");
    assert_eq!(attribute(respond, "airlock.outcome").as_deref(), Some("respond"));
    assert_eq!(attribute(respond, "http.response.status_code").as_deref(), Some("418"));
    // The counter counts spans, as the collector received them (not one per request).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = collector.received.lock().unwrap().len() as f64;
    assert!(received >= 7.0, "{received}");
    eventually_scrape(&client, &gw, |m| sample(m, "airlock_otlp_spans_exported_total", &[]) == received).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_down_collector_drops_and_counts_spans_without_slowing_requests() {
    let upstream = Upstream::start().await;
    let config = format!(
        "[otlp]\nendpoint = \"http://127.0.0.1:1/v1/traces\"\nflush_ms = 20\ntimeout_ms = 500\n\n{}",
        &TRACING[TRACING.find("[upstreams.backend]").unwrap()..]
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    for _ in 0..5 {
        assert_eq!(client.get(&gw.url("/x")).await.status, 200);
    }
    // Five requests, each a server span and an upstream call's span.
    let m = eventually_scrape(&client, &gw, |m| sample(m, "airlock_otlp_spans_dropped_total", &[]) == 10.0).await;
    assert_eq!(sample(&m, "airlock_otlp_spans_exported_total", &[]), 0.0);
    gw.stop().await;
}

/// The export failure's warning shows the endpoint as `/admin/config` does: a secret in its
/// query (a collector's API key) redacted, for logs reach more readers than the admin API.
#[tokio::test]
async fn the_export_failure_warning_redacts_the_endpoints_secrets() {
    let upstream = Upstream::start().await;
    let config = format!(
        "[otlp]\nendpoint = \"http://127.0.0.1:1/v1/traces?api_key=Collector5ecret&tenant=acme\"\nflush_ms = 20\ntimeout_ms = 500\n\n{}",
        &TRACING[TRACING.find("[upstreams.backend]").unwrap()..]
    );
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &upstream, &[]).await;
    assert_eq!(HttpClient::http1().get(&gw.url("/x")).await.status, 200);
    let log = eventually("the export failure's warning", || {
        let log = gw.log();
        log.contains("OTLP export failed").then_some(log)
    })
    .await;
    let line = lines_with(&log, "OTLP export failed")[0];
    assert!(line.contains("api_key=[redacted]&tenant=acme"), "{line}");
    assert!(!log.contains("Collector5ecret"), "{log}");
}

/// Scrapes until `done` holds (bounded).
async fn eventually_scrape(client: &HttpClient, gw: &Gateway, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..250 {
        let m = scrape(client, gw, None).await;
        if done(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the metrics never reached the expected state");
}

/// The open upstream connections gauge follows the real pool: N concurrent slow requests need N
/// connections to the upstream; after the idle timeout the pool closes them and the gauge falls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_connection_gauge_follows_the_pool() {
    const CONCURRENT: usize = 4;
    let upstream = Upstream::start().await;
    // A short idle timeout, so the pool closes idle upstream connections within the test.
    let config = format!("[timeouts]\nidle_ms = 400\n\n{}", &TRACING[TRACING.find("[upstreams.backend]").unwrap()..]);
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let admin = HttpClient::http1();
    let open = |m: &Scrape| sample(m, "airlock_upstream_connections", &[("upstream", "backend")]);
    let before = scrape(&admin, &gw, None).await;
    assert!(before.samples.iter().any(|s| s.metric == "airlock_upstream_connections"), "the gauge is exported");
    assert_eq!(open(&before), 0.0);

    // One client per request: each its own connection to the gateway, so the gateway needs one
    // upstream connection per request in flight.
    let url = gw.url("/slow/700");
    let requests: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { HttpClient::http1().get(&url).await.status })
        })
        .collect();
    let during = eventually_scrape(&admin, &gw, |m| open(m) >= CONCURRENT as f64).await;
    assert_eq!(open(&during), CONCURRENT as f64, "one connection per request in flight");
    for request in requests {
        assert_eq!(request.await.expect("request task"), 200);
    }
    assert_eq!(upstream.hits(), CONCURRENT);
    // Idle in the pool, then closed by the pool's idle timeout.
    let after = eventually_scrape(&admin, &gw, |m| open(m) == 0.0).await;
    assert_eq!(open(&after), 0.0);

    // A reused connection is not counted twice: sequential requests share one. Each waits a
    // moment after the one before: hyper puts a finished connection back in its pool from a
    // task of its own, so a request sent at once could find none idle and open another (the
    // client's to the gateway, landing on the other worker, or the gateway's to the upstream).
    for _ in 0..5 {
        assert_eq!(admin.get(&gw.url("/x")).await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open(&scrape(&admin, &gw, None).await), 1.0);
    gw.stop().await;
}

/// Over HTTP/2 one upstream connection carries a worker's requests to a target at once (a
/// stream each), and it is let go once no request has started on it for the idle timeout (as
/// hyper-util's client did: it closes once its last stream ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_http2_upstream_connection_carries_concurrent_requests() {
    const CONCURRENT: usize = 6;
    let upstream = Upstream::start().await;
    let routes = &TRACING[TRACING.find("[upstreams.backend]").unwrap()..];
    let config = format!("[timeouts]\nidle_ms = 400\n\n{}", routes.replace("targets = [\"{upstream}\"]", "targets = [\"{upstream}\"]\nprotocol = \"h2c\""));
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let admin = HttpClient::http1();
    let open = |m: &Scrape| sample(m, "airlock_upstream_connections", &[("upstream", "backend")]);
    // One HTTP/2 client: one connection to the gateway, so one worker serves every request.
    let client = HttpClient::http2();
    let url = gw.url("/slow/700");
    let requests: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(&url).await.json()["version"].clone() })
        })
        .collect();
    let during = eventually_scrape(&admin, &gw, |m| open(m) >= 1.0).await;
    assert_eq!(open(&during), 1.0, "one connection for the requests in flight");
    for request in requests {
        assert_eq!(request.await.expect("request task"), "HTTP/2.0");
    }
    assert_eq!(upstream.hits(), CONCURRENT);
    let after = eventually_scrape(&admin, &gw, |m| open(m) == 0.0).await;
    assert_eq!(open(&after), 0.0, "let go after idle_ms");
    // Made again when needed, and kept: requests one after another share it.
    for _ in 0..5 {
        assert_eq!(client.get(&gw.url("/x")).await.status, 200);
    }
    assert_eq!(open(&scrape(&admin, &gw, None).await), 1.0);
    gw.stop().await;
}

/// The per-request span is a debug one, so a request that fails with a 5xx names itself in its
/// warning: request id, method, path and route, on the default and `warn` levels too.
#[tokio::test]
async fn a_failed_requests_warning_names_the_request() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.dead]
targets = ["127.0.0.1:1"]

[[routes]]
id = "down"
path_prefix = "/down"
upstream = "dead"
"#;
    let gw = airlock_tests::process::GatewayProcess::start_logging(config, &upstream, &[]).await;
    let r = HttpClient::http1().get(&gw.url("/down/here?q=1")).await;
    assert_eq!(r.status, 502);
    let id = r.header("x-request-id").expect("a request id");
    let log = log_naming(&gw, &id, "the warning").await;
    let line = log.lines().find(|l| l.contains(&id)).expect("a line naming the request");
    for part in ["WARN", "GET", "\"/down/here\"", "\"down\"", "status"] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
}

/// SIGUSR1 (a log rotation hook's signal, often sent to every gateway on a host) does not kill a
/// gateway whose access log is off: it says so and serves on.
#[tokio::test]
async fn sigusr1_without_an_access_log_is_harmless() {
    let upstream = Upstream::start().await;
    let config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n";
    let mut gw = airlock_tests::process::GatewayProcess::start_logging_at(config, &upstream, "info").await;
    gw.signal("USR1");
    eventually("the SIGUSR1 line", || gw.log().contains("SIGUSR1: the access log is off").then_some(())).await;
    assert!(!gw.has_exited(), "SIGUSR1 killed the gateway");
    assert_eq!(HttpClient::http1().get(&gw.url("/x")).await.status, 200);
}

/// A `RUST_LOG` the gateway cannot read is bad input like any other: the gateway says so once,
/// names what it logs at instead (`info`), and serves.
#[tokio::test]
async fn an_unreadable_rust_log_is_reported_and_the_gateway_serves() {
    let upstream = Upstream::start().await;
    let config = "[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n[upstreams.backend]\ntargets = [\"{upstream}\"]\n";
    let gw = airlock_tests::process::GatewayProcess::start_logging_at(config, &upstream, "airlock=loud").await;
    assert_eq!(HttpClient::http1().get(&gw.url("/served")).await.status, 200);
    let log = eventually("the warning", || {
        let log = gw.log();
        log.contains("RUST_LOG").then_some(log)
    })
    .await;
    let line = log.lines().find(|l| l.contains("RUST_LOG")).expect("the warning line");
    for part in ["WARN", "`airlock=loud`", "cannot be read", "`info`"] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
    assert!(log.lines().any(|l| l.contains("INFO")), "the fallback level is info: {log}");
}

/// The WebSocket counters exist at 0 before the first tunnel closes, like every other counter:
/// `rate()` and `absent()` alerts see them from the start.
#[tokio::test]
async fn tunnel_counters_are_exported_before_any_tunnel() {
    let gw = Gateway::start("[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\n", None).await;
    let m = scrape(&HttpClient::http1(), &gw, None).await;
    let present = |metric: &str, label: (&str, &str)| m.samples.iter().any(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1));
    for reason in ["closed", "idle", "drain", "error", "not_switched"] {
        assert!(present("airlock_tunnels_closed_total", ("reason", reason)), "tunnels_closed_total{{reason={reason}}} missing");
    }
    for direction in ["client_to_upstream", "upstream_to_client"] {
        assert!(present("airlock_tunnel_bytes_total", ("direction", direction)), "tunnel_bytes_total{{direction={direction}}} missing");
    }
    gw.stop().await;
}

/// The Prometheus client libraries' standard process metrics, under their usual names, with
/// values this process can have: dashboards and alerts written for them work unchanged.
#[tokio::test]
async fn process_metrics_are_exported_with_plausible_values() {
    let gw = Gateway::start("[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\n", None).await;
    let m = scrape(&HttpClient::http1(), &gw, None).await;
    let value = |name: &str| {
        let found = m.samples.iter().find(|s| s.metric == name).unwrap_or_else(|| panic!("{name} is not exported"));
        match found.value {
            Value::Counter(v) | Value::Gauge(v) => v,
            ref other => panic!("{name} is {other:?}"),
        }
    };
    assert!(matches!(m.samples.iter().find(|s| s.metric == "process_cpu_seconds_total").map(|s| &s.value), Some(Value::Counter(_))));
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let rss = value("process_resident_memory_bytes");
    assert!(rss > 0.0, "RSS {rss}");
    assert!(value("process_virtual_memory_bytes") >= rss);
    let open = value("process_open_fds");
    assert!(open > 0.0, "open fds {open}");
    // The soft limit, when there is one (`ulimit -n unlimited` leaves it out).
    if m.samples.iter().any(|s| s.metric == "process_max_fds") {
        assert!(value("process_max_fds") >= open);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(started <= now + 1.0 && started > now - 3600.0, "started at {started}, now {now}");
    gw.stop().await;
}

/// What hyper refuses before the gateway's service sees a request (its bare 400 for a
/// malformed request line, its 431 for a header section past the parser's buffer, an HTTP/2
/// protocol error) is counted by reason, once each, and the gateway serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_refuses_are_counted_by_reason() {
    // 1 KiB of headers: the gateway's own 431 up to twice that, hyper's past its 16 KiB buffer.
    let config = "[limits]\nmax_header_bytes = 1024\n\n[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\n";
    let gw = Gateway::start(config, None).await;
    let client = HttpClient::http1();
    let rejected = |m: &Scrape, reason| sample(m, "airlock_requests_rejected_total", &[("reason", reason)]);
    let reasons = ["malformed", "headers_too_large", "uri_too_long", "http2_protocol"];
    let before = scrape(&client, &gw, None).await;
    for reason in reasons {
        let exists = before.samples.iter().any(|s| s.metric == "airlock_requests_rejected_total" && s.labels.get("reason") == Some(reason));
        assert!(exists, "airlock_requests_rejected_total{{reason=\"{reason}\"}} is missing before any rejection");
        assert_eq!(rejected(&before, reason), 0.0);
    }
    // Each case: the bytes, and what it adds to each reason.
    let counts = |m: &Scrape| reasons.map(|r| rejected(m, r));
    let expect = |m: &Scrape, want: [f64; 4], what: &str| assert_eq!(counts(m), want, "{what}: {reasons:?}");

    let answer = airlock_tests::raw_exchange(gw.addr(), b"GET /a b c HTTP/1.1 nonsense\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "hyper's own 400: {answer}");
    let m = eventually_scrape(&client, &gw, |m| counts(m) != [0.0; 4]).await;
    expect(&m, [1.0, 0.0, 0.0, 0.0], "a malformed request line");

    let mut big = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    big.resize(40 * 1024, b'a');
    let answer = oversized_exchange(gw.addr(), &big).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "hyper's own 431 (or a reset): {answer}");
    let m = eventually_scrape(&client, &gw, |m| counts(m)[1] != 0.0).await;
    expect(&m, [1.0, 1.0, 0.0, 0.0], "an oversized header section");

    // The HTTP/2 preface, then a DATA frame on stream 0: a connection error (RFC 9113 6.1).
    let _ = airlock_tests::raw_exchange(gw.addr(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\0\0\0\0\0\0").await;
    let m = eventually_scrape(&client, &gw, |m| counts(m)[3] != 0.0).await;
    expect(&m, [1.0, 1.0, 0.0, 1.0], "an HTTP/2 protocol error");

    // Headers past the limit but within the parser's slack get the gateway's own 431, counted as
    // a request, not here; and the gateway serves on.
    let within = "a".repeat(1500);
    assert_eq!(client.request("GET", &gw.url("/"), &[("x-big", &within)], b"").await.status, 431);
    assert_eq!(client.get(&gw.url("/")).await.status, 200);
    assert_eq!(HttpClient::http2().get(&gw.url("/")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = scrape(&client, &gw, None).await;
    expect(&m, [1.0, 1.0, 0.0, 1.0], "after well-formed requests");
    assert_eq!(sample(&m, "airlock_requests_total", &[("status", "4xx")]), 1.0);
    gw.stop().await;
}

/// Writes `bytes` (more than the gateway reads before refusing them) and returns what came back
/// until the close: "" when the close reset the connection before the answer could be read.
async fn oversized_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The gateway may close before taking it all: a failed write is part of the refusal.
    let _ = stream.write_all(bytes).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// The lines of `log` holding `text`.
/// The gateway's log once it has a line naming request `id` (`what` says which, if it never comes).
async fn log_naming(gw: &airlock_tests::process::GatewayProcess, id: &str, what: &str) -> String {
    eventually(what, || {
        let log = gw.log();
        log.contains(id).then_some(log)
    })
    .await
}

fn lines_with<'a>(log: &'a str, text: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(text)).collect()
}

/// A plugin's outbound target that is down fails every request's call: the gateway warns once
/// per 10 s per plugin, saying how many calls failed since its last warning, not once per
/// request (which let any client turn an outage into unbounded log volume).
#[tokio::test]
async fn a_down_outbound_target_is_warned_about_once_per_interval_not_per_request() {
    const REQUESTS: usize = 40;
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[plugins.auth]
source = "builtin:forward-auth"
capabilities = ["http-client"]
http_client = { allow = ["http://127.0.0.1:1"], timeout_ms = 1000 }

[[routes]]
path_prefix = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = { url = "http://127.0.0.1:1/check" }
"#;
    let gw = airlock_tests::process::GatewayProcess::start_logging(config, &upstream, &[]).await;
    let client = HttpClient::http1();
    let started = std::time::Instant::now();
    assert_eq!(client.get(&gw.url("/api/x")).await.status, 503);
    // The first warning was logged by now.
    let first_warned = std::time::Instant::now();
    for _ in 1..REQUESTS {
        assert_eq!(client.get(&gw.url("/api/x")).await.status, 503);
    }
    let burst = started.elapsed();
    assert!(burst < Duration::from_secs(8), "the burst took {burst:?}: too slow to test the interval");
    let first = eventually("the first warning", || {
        let log = gw.log();
        let lines = lines_with(&log, "outbound call failed");
        (!lines.is_empty()).then(|| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>())
    })
    .await;
    // A request that fails after them: its line (if any) would follow theirs.
    assert_eq!(client.get(&gw.url("/api/x")).await.status, 503);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = gw.log();
    let warnings = lines_with(&log, "outbound call failed");
    assert_eq!(warnings.len(), 1, "one warning for {} failed calls: {warnings:#?}", REQUESTS + 1);
    let line = warnings[0];
    assert_eq!(first, [line.to_owned()]);
    for part in ["WARN", "auth", "http://127.0.0.1:1/check", "kind=\"connect\"", "failed_since_last_warning=1", "refused"] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
    assert!(!log.contains("HttpError::"), "{log}");

    // Past the interval, the next failure warns again, counting every call since the first.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(first_warned.elapsed()) + Duration::from_millis(100)).await;
    assert_eq!(client.get(&gw.url("/api/x")).await.status, 503);
    let warnings = eventually("the second warning", || {
        let log = gw.log();
        let lines: Vec<String> = lines_with(&log, "outbound call failed").into_iter().map(str::to_owned).collect();
        (lines.len() == 2).then_some(lines)
    })
    .await;
    let expected = format!("failed_since_last_warning={}", REQUESTS + 1);
    assert!(warnings[1].contains(&expected), "{expected} missing from: {}", warnings[1]);
}

/// What a client's request alone earns, however often it is sent (a TRACE, a CONNECT, a transfer
/// coding other than chunked: all answered 501), is not a warning; the upstream's 5xx still is.
#[tokio::test]
async fn refusals_a_client_causes_are_not_logged_as_warnings() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]
[upstreams.dead]
targets = ["127.0.0.1:1"]

[[routes]]
path_prefix = "/down"
upstream = "dead"
[[routes]]
path_prefix = "/"
upstream = "backend"
"#;
    let gw = airlock_tests::process::GatewayProcess::start_logging(config, &upstream, &[]).await;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], gw.port()).into();
    let refused: [&[u8]; 3] = [
        b"TRACE /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    ];
    for _ in 0..10 {
        for request in refused {
            let answer = airlock_tests::raw_exchange(addr, request).await;
            assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
        }
    }
    let r = HttpClient::http2().request("TRACE", &gw.url("/x"), &[], b"").await;
    assert_eq!(r.status, 501);
    assert_eq!(upstream.hits(), 0);
    // A failure that is the operator's concern, after them: still a warning.
    let r = HttpClient::http1().get(&gw.url("/down")).await;
    assert_eq!(r.status, 502);
    let id = r.header("x-request-id").expect("a request id");
    let log = log_naming(&gw, &id, "the 502's warning").await;
    let warnings = lines_with(&log, "WARN");
    assert_eq!(warnings.len(), 1, "only the 502 is a warning: {warnings:#?}");
    assert!(warnings[0].contains(&id), "{}", warnings[0]);
}

/// A 504's body names neither the upstream nor the wait that ran out: both are in the request's
/// warning, under its request id, as for a 502.
#[tokio::test]
async fn a_timeout_names_the_upstream_in_the_log_not_in_the_body() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.one]
targets = ["{upstream}"]
request_timeout_ms = 300

[[routes]]
path_prefix = "/"
upstream = "one"
"#;
    let gw = airlock_tests::process::GatewayProcess::start_logging(config, &upstream, &[]).await;
    let r = HttpClient::http1().get(&gw.url("/slow/3000")).await;
    assert_eq!(r.status, 504);
    let body = r.json();
    assert_eq!(body["error"], "upstream_timeout");
    assert_eq!(body["message"], "the upstream did not answer in time", "{body}");
    assert!(!r.text().contains("`one`") && !r.text().contains("timed out"), "{}", r.text());
    let id = r.header("x-request-id").expect("a request id");
    let log = log_naming(&gw, &id, "the warning").await;
    let line = log.lines().find(|l| l.contains(&id)).expect("a line naming the request");
    for part in ["WARN", "status=504", "upstream `one` timed out"] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
}

/// A plugin's outbound call (here `forward-auth` asking a real auth service) continues the
/// request's trace: the service is sent the request's trace id and flags with the call's own
/// span as parent, and `tracestate`; exported, that span is a client span of the request span.
/// Without `[otlp]` the trace is continued all the same.
#[tokio::test]
async fn a_plugins_outbound_call_continues_the_requests_trace() {
    let upstream = Upstream::start().await;
    let collector = Collector::start().await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Option<String>, Option<String>)>::new()));
    let record = seen.clone();
    let auth = Upstream::with_handler(move |req: hyper::Request<hyper::body::Incoming>| {
        let text = |name: &str| req.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        record.lock().unwrap().push((text("traceparent"), text("tracestate")));
        async { hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new())) }
    })
    .await;
    let routes = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.auth]
source = "builtin:forward-auth"
capabilities = ["http-client"]
http_client = {{ allow = ["http://{auth}"] }}

[[routes]]
id = "checked"
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "http://{auth}/check" }}
"#,
        auth = auth.addr
    );
    let exported = format!("[otlp]\nendpoint = \"http://{}/v1/traces\"\nflush_ms = 20\n{routes}", collector.addr);
    let gw = Gateway::start(&exported, Some(&upstream)).await;
    let client = HttpClient::http1();
    let parent = "00-0000000000000000000000000000a7c1-3333333333333333-01";
    let r = client.request("GET", &gw.url("/in"), &[("traceparent", parent), ("tracestate", "vendor=1")], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (sent, state) = seen.lock().unwrap().pop().expect("the auth service was called");
    let sent = sent.expect("the call carries a traceparent");
    assert!(sent.starts_with("00-0000000000000000000000000000a7c1-") && sent.ends_with("-01"), "{sent}");
    assert_eq!(state.as_deref(), Some("vendor=1"));
    let call_span = &sent[36..52];
    // The upstream was told of another parent: the gateway's span for the upstream call.
    assert_ne!(r.json()["headers"]["traceparent"][0].as_str().map(|t| &t[36..52]), Some(call_span));
    let spans = eventually("the request's spans", || collector.spans_of_trace("0000000000000000000000000000a7c1", 4)).await;
    let server = spans.iter().find(|s| hex(&s.parent_span_id) == "3333333333333333").expect("the request span");
    let outbound = spans.iter().find(|s| hex(&s.span_id) == call_span).expect("a span for the outbound call, the id the service was told");
    assert_eq!(outbound.name, format!("outbound GET {}", auth.addr.ip()));
    assert_eq!(outbound.parent_span_id, server.span_id);
    assert_eq!(outbound.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32);
    assert_eq!(attribute(outbound, "airlock.plugin").as_deref(), Some("auth"));
    assert_eq!(attribute(outbound, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(outbound, "server.port").as_deref(), Some(auth.addr.port().to_string().as_str()));
    let call = spans.iter().find(|s| s.name == "plugin auth on-request").expect("the plugin's span");
    assert!(call.start_time_unix_nano <= outbound.start_time_unix_nano && outbound.end_time_unix_nano <= call.end_time_unix_nano);
    gw.stop().await;

    // Not exported: the service still joins the client's trace.
    let gw = Gateway::start(&routes, Some(&upstream)).await;
    let r = client.request("GET", &gw.url("/in"), &[("traceparent", parent)], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (sent, state) = seen.lock().unwrap().pop().expect("the auth service was called");
    let sent = sent.expect("the call carries a traceparent");
    assert!(sent.starts_with("00-0000000000000000000000000000a7c1-") && !sent.contains("3333333333333333"), "{sent}");
    assert_eq!(state, None);
    gw.stop().await;
}
