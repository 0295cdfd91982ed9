//! Plugin chains, end to end: order both ways, short-circuits, the built-in `headers` and
//! `respond` plugins, body access, the delay action, isolation modes and the third-party example.

use std::time::{Duration, Instant};

use airlock_tests::metrics;
use prometheus_parse::Value;
use airlock_tests::{Gateway, HttpClient, Upstream};

const ORDER: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[global.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "global" }

[[routes]]
id = "ordered"
path = "/ordered"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "a", expose = ["user"] }
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "b" }

[[routes]]
id = "short"
path = "/short"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "before" }
[[routes.plugins]]
plugin = "builtin:respond"
config = { status = 202, body = "answered by a plugin", headers = { "x-mock" = "yes" } }
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "after" }

[[routes]]
id = "no-global"
path = "/no-global"
upstream = "backend"
global_plugins = false
"#;

#[tokio::test]
async fn chain_runs_in_order_and_responses_in_reverse() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ORDER, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/ordered"), &[("x-set-context", "user=alice")], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-chain"), vec!["global", "a", "b"], "request phases in chain order");
    assert_eq!(r.header_all("x-chain-resp"), vec!["b", "a", "global"], "response phases in reverse");
    assert_eq!(r.header("x-context-user").as_deref(), Some("alice"), "context shared along the chain");

    let r = client.get(&gw.url("/no-global")).await;
    assert!(r.upstream_header("x-chain").is_empty());

    // `/admin/routes` says which entries the global chain put there.
    let routes = client.get(&gw.admin_url("/admin/routes")).await.json();
    let globals = |id: &str| -> Vec<bool> {
        let route = routes["routes"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("{id}: {routes}"));
        route["chain"].as_array().unwrap().iter().map(|e| e["global"].as_bool().expect("global")).collect()
    };
    assert_eq!(globals("ordered"), [true, false, false]);
    assert_eq!(globals("short"), [true, false, false, false]);
    assert!(globals("no-global").is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn short_circuit_skips_later_plugins_and_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ORDER, Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/short")).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.text(), "answered by a plugin");
    assert_eq!(r.header("x-mock").as_deref(), Some("yes"));
    assert_eq!(r.header("content-length").as_deref(), Some("20"));
    assert_eq!(upstream.hits(), 0, "the upstream was never called");
    // Response phases of the plugins that ran before the responder still see the response;
    // the plugin after it never ran.
    assert_eq!(r.header_all("x-chain-resp"), vec!["before", "global"]);
    gw.stop().await;
}

const HEADERS: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

# Request rules that only write.
[[routes]]
id = "write-only"
path = "/written/{id}"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.request]
remove = ["x-secret", "x-replaced"]
set = { "x-item" = "${param.id}" }
append = { "x-multi" = "second", "x-replaced" = "new" }
[routes.plugins.config.response]
set = { "x-served-by" = "airlock" }
append = { "x-route" = "${route}" }
"#;

/// A route of `builtin:headers` rules of every kind, as route `ROUTE` (also its path's first
/// segment), with `EXTRA` in its request `set`.
const EDITING_ROUTE: &str = r#"
[[routes]]
id = "ROUTE"
path = "/ROUTE/{id}"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.request]
remove = ["x-secret"]
rename = { "x-old" = "x-new" }
set = { "x-item" = "${param.id}", "x-agent" = "${header.user-agent}", "x-q" = "${query.q}"EXTRA }
add = { "x-default" = "d", "x-present" = "not-used" }
append = { "x-multi" = "second" }
[routes.plugins.config.response]
set = { "x-served-by" = "airlock", "x-route" = "${route}" }
remove = ["x-upstream-end"]
"#;

/// `builtin:headers`' rules make the same request and response whether the gateway makes them
/// (fixed edits, every rule of them: a request `add` and `rename` look at the request where the
/// entry is) or the plugin's own phases do (a rule set past what a gateway takes as fixed edits).
#[tokio::test]
async fn headers_plugin_edits_both_directions() {
    let upstream = Upstream::start().await;
    // The same rules twice: as they are, and with a value of more pieces than a gateway builds,
    // which leaves them to the plugin's phases.
    let past_fixed_edits = format!(r#", "x-big" = "{}""#, "${request_id}-".repeat(65));
    let config = [
        HEADERS.to_owned(),
        EDITING_ROUTE.replace("ROUTE", "fixed").replace("EXTRA", ""),
        EDITING_ROUTE.replace("ROUTE", "called").replace("EXTRA", &past_fixed_edits),
    ];
    let gw = Gateway::start(&config.concat(), Some(&upstream)).await;
    let inner = gw.inner();
    let phases = |id: &str| {
        let route = inner.routes.routes().iter().find(|r| &*r.id == id).expect("the route");
        (route.chain.entries()[0].descriptor.on_request, route.chain.entries()[0].descriptor.on_response)
    };
    assert_eq!((phases("fixed"), phases("called")), ((false, false), (true, false)), "fixed edits, then the plugin's phases");
    for route in ["fixed", "called"] {
        let path = format!("/{route}/5?q=search+me");
        let r = HttpClient::http1()
            .request(
                "GET",
                &gw.url(&path),
                &[
                    ("x-secret", "s3cret"),
                    ("x-old", "moved"),
                    ("x-new", "replaced"),
                    ("user-agent", "test-agent/1"),
                    ("x-present", "kept"),
                    ("x-multi", "first"),
                ],
                b"",
            )
            .await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.upstream_header("x-secret").is_empty());
        assert!(r.upstream_header("x-old").is_empty());
        assert_eq!(r.upstream_header("x-new"), vec!["moved"], "{path}: renamed over what was there");
        assert_eq!(r.upstream_header("x-item"), vec!["5"]);
        assert_eq!(r.upstream_header("x-agent"), vec!["test-agent/1"]);
        assert_eq!(r.upstream_header("x-q"), vec!["search me"]);
        assert_eq!(r.upstream_header("x-default"), vec!["d"], "{path}");
        assert_eq!(r.upstream_header("x-present"), vec!["kept"], "{path}: add does not overwrite");
        assert_eq!(r.upstream_header("x-multi"), vec!["first", "second"]);
        assert_eq!(r.header("x-served-by").as_deref(), Some("airlock"));
        assert_eq!(r.header("x-route").as_deref(), Some(route));
    }
    // Without the headers an `add` or `rename` looks for.
    let r = HttpClient::http1().request("GET", &gw.url("/fixed/6"), &[("x-new", "untouched")], b"").await;
    assert_eq!(r.upstream_header("x-new"), vec!["untouched"], "nothing to rename: the new name keeps its value");
    assert_eq!(r.upstream_header("x-present"), vec!["not-used"], "absent: added");

    // Write-only request rules, in the order the rules apply: `x-replaced` is removed before
    // its new value is appended.
    let r = HttpClient::http1()
        .request("GET", &gw.url("/written/7"), &[("x-secret", "s3cret"), ("x-replaced", "old"), ("x-multi", "first")], b"")
        .await;
    assert_eq!(r.status, 200);
    assert!(r.upstream_header("x-secret").is_empty());
    assert_eq!(r.upstream_header("x-replaced"), vec!["new"]);
    assert_eq!(r.upstream_header("x-item"), vec!["7"]);
    assert_eq!(r.upstream_header("x-multi"), vec!["first", "second"]);
    assert_eq!(r.header("x-served-by").as_deref(), Some("airlock"));
    assert_eq!(r.header_all("x-route"), vec!["write-only"]);
    gw.stop().await;
}

/// An entry's response rules read the request and run where its response phase would, whether
/// the gateway makes them (fixed edits) or the entry's own phases do: a value built from a request
/// header on a route where nothing else reads the request after the upstream call (its headers
/// were moved into the upstream request, and the value came out empty), and a gateway's 500 for
/// an `on-response` failing closed after the entry's response phase ran (its edits were made again
/// on the answer).
#[tokio::test]
async fn response_rules_read_the_request_and_run_once_made_either_way() {
    let upstream = Upstream::start().await;
    let past_fixed_edits = format!(r#", request = {{ set = {{ "x-big" = "{}" }} }}"#, "${request_id}-".repeat(65));
    let mut config = format!("[upstreams.backend]\ntargets = [\"{{upstream}}\"]\n{}", airlock_tests::hostile_plugin("failing"));
    for (route, extra) in [("fixed", ""), ("called", past_fixed_edits.as_str())] {
        config += &format!(
            r#"
[[routes]]
path = "/reads/{route}"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = {{ response = {{ set = {{ "x-c" = "${{header.x-in}}", "x-q" = "${{query.q}}" }} }}{extra} }}

[[routes]]
path = "/after-failure/{route}"
upstream = "backend"
[[routes.plugins]]
plugin = "failing"
config = {{ mode = "response-then-panic" }}
[[routes.plugins]]
plugin = "builtin:headers"
config = {{ response = {{ set = {{ "x-h" = "1" }} }}{extra} }}
"#
        );
    }
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let called: Vec<bool> = gw.inner().routes.routes().iter().map(|r| r.chain.entries().iter().any(|e| e.descriptor.on_request)).collect();
    assert_eq!(called, [false, false, true, true], "no request phase is called on the fixed routes");
    let client = HttpClient::http1();
    for route in ["fixed", "called"] {
        let r = client.request("GET", &gw.url(&format!("/reads/{route}?q=v")), &[("x-in", "seen")], b"").await;
        assert_eq!(r.status, 200);
        assert_eq!((r.header("x-c").as_deref(), r.header("x-q").as_deref()), (Some("seen"), Some("v")), "{route}");
        let r = client.get(&gw.url(&format!("/after-failure/{route}"))).await;
        assert_eq!(r.status, 500, "{route}: {}", r.text());
        assert_eq!(r.header("x-h"), None, "{route}: made on the upstream's answer, which the 500 replaced");
    }
    gw.stop().await;
}

/// A client header renamed to `host` by a fixed edit (`builtin:headers`' request `rename`): a
/// well-formed value becomes the upstream's `Host`; one that is not `host[:port]` is not
/// written (as `request.append-header` would not write it) and the request is still served,
/// with the `Host` the gateway sends when no plugin set one.
#[tokio::test]
async fn a_fixed_rename_to_host_takes_only_a_well_formed_value() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/r"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { rename = { "x-target" = "host" } } }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/r"), &[("x-target", "api.internal:8443")], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("host"), ["api.internal:8443"]);
    assert!(r.upstream_header("x-target").is_empty());
    for bad in ["a@b", "a,b", "x:99999"] {
        let r = client.request("GET", &gw.url("/r"), &[("x-target", bad)], b"").await;
        assert_eq!(r.status, 200, "{bad}: served");
        assert_eq!(r.upstream_header("host"), [upstream.addr.to_string()], "{bad}: not sent as the host");
        assert!(r.upstream_header("x-target").is_empty(), "{bad}: moved, not left behind");
    }
    gw.stop().await;
}

/// One route through the body-upper plugin (uppercases the request body, appends `!` to the
/// response's); `{limit}` is where a route setting goes.
const BODY_UPPER: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]
[[routes]]
path_prefix = "/"
upstream = "backend"
{limit}
[[routes.plugins]]
plugin = "{plugin:body-upper}"
"#;

#[tokio::test]
async fn body_plugins_get_buffered_bodies_with_fixed_lengths() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&BODY_UPPER.replace("{limit}", ""), Some(&upstream)).await;
    let r = HttpClient::http1().request("POST", &gw.url("/echo"), &[], b"make me loud").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.ends_with('!'), "response body changed by the plugin: {text}");
    let echo: serde_json::Value = serde_json::from_str(&text[..text.len() - 1]).unwrap();
    assert_eq!(echo["body"], "MAKE ME LOUD");
    assert_eq!(echo["headers"]["content-length"][0], "12");
    assert_eq!(r.header("content-length"), Some(text.len().to_string()));
    gw.stop().await;
}

/// A request buffered for a plugin goes upstream framed as it came: a GET (or DELETE, HEAD)
/// without a body gets no `Content-Length: 0` (RFC 9110 8.6; some servers refuse a GET with
/// one), while an empty POST keeps it, and a DELETE that came with a body keeps its length.
#[tokio::test]
async fn a_bodiless_request_buffered_for_a_plugin_gets_no_content_length() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&BODY_UPPER.replace("{limit}", ""), Some(&upstream)).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        for method in ["GET", "DELETE", "OPTIONS"] {
            let r = client.request(method, &gw.url("/echo"), &[], b"").await;
            let text = r.text();
            let echo: serde_json::Value = serde_json::from_str(&text[..text.len() - 1]).expect("json");
            assert_eq!(echo["headers"]["content-length"], serde_json::Value::Null, "{method}: {text}");
            assert_eq!(echo["headers"]["transfer-encoding"], serde_json::Value::Null, "{method}: {text}");
        }
        let r = client.request("POST", &gw.url("/echo"), &[], b"").await;
        let text = r.text();
        let echo: serde_json::Value = serde_json::from_str(&text[..text.len() - 1]).expect("json");
        assert_eq!(echo["headers"]["content-length"][0], "0", "an empty POST says so: {text}");
        let r = client.request("DELETE", &gw.url("/echo"), &[], b"gone").await;
        let text = r.text();
        let echo: serde_json::Value = serde_json::from_str(&text[..text.len() - 1]).expect("json");
        assert_eq!((echo["headers"]["content-length"][0].as_str(), echo["body"].as_str()), (Some("4"), Some("GONE")), "{text}");
    }
    gw.stop().await;
}

/// A body a plugin sets is held to the route's `max_body_bytes`, as a client's and an
/// upstream's are: past it the body is not set and the call fails (`too_large`), for the
/// response must not go on with the upstream's body beside the call's other changes.
#[tokio::test]
async fn a_body_a_plugin_sets_is_held_to_the_routes_limit() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&BODY_UPPER.replace("{limit}", "max_body_bytes = 10"), Some(&upstream)).await;
    let client = HttpClient::http1();
    // The upstream's 5 bytes and the plugin's `!`: 6, within the limit.
    assert_eq!(client.get(&gw.url("/big/5")).await.text(), "xxxxx!");
    // 10 bytes are allowed; the plugin's 11 are not: its call fails (closed: a 500).
    let r = client.get(&gw.url("/big/10")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (500, Some("plugin_failed")), "{}", r.text());
    gw.stop().await;
}

#[tokio::test]
async fn delay_action_waits_then_continues() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]
[[routes]]
id = "delayed"
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin:delay}"
config = { ms = 300 }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let started = Instant::now();
    let r = HttpClient::http1().get(&gw.url("/")).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(r.upstream_header("x-delayed"), vec!["1"]);
    // The wait is the request's, not the plugin call's nor the upstream's: the request took at
    // least 300 ms, the call and the upstream (which answers at once) each under 250 ms.
    let m = metrics::scrape(&HttpClient::http1(), &gw, None).await;
    // Observations up to `le` seconds in the histogram `metric` with the label `label`.
    let within = |metric: &str, (key, value): (&str, &str), le: f64| {
        let found = m
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get(key) == Some(value))
            .unwrap_or_else(|| panic!("no {metric} with {key}={value}"));
        let Value::Histogram(buckets) = &found.value else { panic!("{metric} is not a histogram") };
        buckets.iter().find(|b| b.less_than == le).map(|b| b.count).unwrap_or_else(|| panic!("{metric} has no bucket {le}"))
    };
    let route = ("route", "delayed");
    assert_eq!(within("airlock_request_duration_seconds", route, 0.25), 0.0, "the request waited");
    assert_eq!(within("airlock_request_duration_seconds", route, 0.5), 1.0);
    let call = ("phase", "on-request");
    assert_eq!(within("airlock_plugin_phase_duration_seconds", call, 0.25), 1.0, "the call itself did not wait");
    let upstream_time = within("airlock_upstream_duration_seconds", route, 0.25);
    assert_eq!(upstream_time, 1.0, "the upstream's time does not hold the wait");
    gw.stop().await;
}

#[tokio::test]
async fn strict_isolation_serves_like_the_pool() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]
[plugins.strict]
source = "{plugin:echo-context}"
isolation = "request"
[[routes]]
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "strict"
config = { tag = "strict", expose = ["k"] }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    for i in 0..5 {
        let r = client.request("GET", &gw.url("/"), &[("x-set-context", &format!("k=v{i}"))], b"").await;
        assert_eq!(r.upstream_header("x-chain"), vec!["strict"]);
        assert_eq!(r.header("x-context-k"), Some(format!("v{i}")));
    }
    gw.stop().await;
}

/// `isolation = "request"` is a security promise: no request's plugin instance sees memory an
/// earlier request's wrote. The probe plugin writes a marker into zero-initialised memory pages
/// away from its data segment (the pages the sandbox must find dirty and reset) and counts its
/// calls in a global; the pooled route shows the probe notices reuse, the strict one that
/// nothing survives.
#[tokio::test]
async fn strict_isolation_leaves_no_memory_behind() {
    let upstream = Upstream::start().await;
    let config = r#"
[runtime]
worker_threads = 1
[upstreams.backend]
targets = ["{upstream}"]
[plugins.probe-strict]
source = "{plugin:memory-probe}"
isolation = "request"
[plugins.probe-pooled]
source = "{plugin:memory-probe}"
[[routes]]
path_prefix = "/strict"
upstream = "backend"
[[routes.plugins]]
plugin = "probe-strict"
[[routes]]
path_prefix = "/pooled"
upstream = "backend"
[[routes.plugins]]
plugin = "probe-pooled"
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let mut pooled = Vec::new();
    for _ in 0..5 {
        let r = client.get(&gw.url("/pooled")).await;
        pooled.push((r.upstream_header("x-calls"), r.upstream_header("x-leftover")));
    }
    // One worker, requests one at a time: the warm instance is reused and remembers.
    assert_eq!(pooled.last().unwrap(), &(vec!["5".to_owned()], vec!["seen".to_owned()]), "{pooled:?}");
    for i in 0..20 {
        let r = client.get(&gw.url("/strict")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream_header("x-calls"), vec!["1"], "request {i} saw an earlier request's global");
        assert_eq!(r.upstream_header("x-leftover"), vec!["none"], "request {i} saw an earlier request's memory");
    }
    gw.stop().await;
}

#[tokio::test]
async fn third_party_example_plugin_runs_from_its_wasm_file() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]
[[routes]]
path_prefix = "/hello"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin:hello}"
config = { greeting = "hi from a test" }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/hello/world")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-hello"), vec!["hi from a test"]);
    assert_eq!(r.header("x-hello-plugin").as_deref(), Some("seen"));
    let r = client.get(&gw.url("/hello/teapot")).await;
    assert_eq!(r.status, 418);
    gw.stop().await;
}

#[tokio::test]
async fn plugin_config_errors_name_route_and_plugin() {
    let config = r#"
[[routes]]
id = "mock"
path = "/x"
[[routes.plugins]]
plugin = "builtin:respond"
config = { status = 42 }
"#;
    let err = Gateway::try_start(config, None).await.err().expect("config must be rejected").to_string();
    assert!(err.contains("routes[0].plugins[0].config"), "{err}");
    assert!(err.contains("builtin:respond"), "{err}");
    assert!(err.contains("route `mock`"), "{err}");

    let config = "[[routes]]\npath = \"/x\"\n[[routes.plugins]]\nplugin = \"{plugin:fail-configure}\"\n";
    let err = Gateway::try_start(config, None).await.err().expect("config must be rejected").to_string();
    assert!(err.contains("this plugin refuses every config"), "{err}");
    // Line 4 of the text above, after the 3 lines of listener the harness puts first.
    assert!(err.contains("airlock.toml:7:"), "points at the line of the entry: {err}");

    // A rule the gateway refuses as a fixed edit is named by the operator's key, at its line
    // (line 8 of the text, 11 of the file), not as "fixed edit 2".
    let config = "[[routes]]\npath = \"/x\"\n[[routes.plugins]]\nplugin = \"builtin:headers\"\n[routes.plugins.config.request.set]\n\"x-a\" = \"1\"\n# the virtual host\nhost = \"a@b\"\n";
    let err = Gateway::try_start(config, None).await.err().expect("config must be rejected").to_string();
    assert!(err.contains("airlock.toml:11:"), "{err}");
    assert!(err.contains("`request.set.host`: a `host` must be host[:port], not `a@b`") && !err.contains("fixed edit"), "{err}");

    // A quoted key with a space is found at its line too.
    let config = "[[routes]]\npath = \"/x\"\n[[routes.plugins]]\nplugin = \"builtin:headers\"\n[routes.plugins.config.request.set]\n\"x-a\" = \"1\"\n\"bad header\" = \"b\"\n";
    let err = Gateway::try_start(config, None).await.err().expect("config must be rejected").to_string();
    assert!(err.contains("airlock.toml:10:") && err.contains("`request.set.bad header`: invalid header name"), "{err}");
}

#[tokio::test]
async fn configured_entries_narrow_their_phases() {
    let config = r#"
[[routes]]
path = "/a"
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { set = { "x-a" = "1" } } }
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { "x-b" = "1" } } }
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { "x-c" = "${header.x-in}" } } }
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { add = { "x-d" = "1" }, rename = { "x-e" = "x-f" } } }
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { set = { "x-big" = "PAST_FIXED_EDITS" } } }
[[routes.plugins]]
plugin = "builtin:respond"
"#;
    let gw = Gateway::start(&config.replace("PAST_FIXED_EDITS", &"${route}-".repeat(65)), None).await;
    let inner = gw.inner();
    let route = &inner.routes.routes()[0];
    let phases: Vec<(bool, bool)> =
        route.chain.entries().iter().map(|e| (e.descriptor.on_request, e.descriptor.on_response)).collect();
    // Rules are fixed edits, made by the gateway with no call at all (a value read from a
    // request header is built where on-response would run; a request `add` or `rename` looks
    // at the request where the entry is); a value of more pieces than the gateway builds is
    // the plugin's to make, in on-request.
    assert_eq!(phases, vec![(false, false), (false, false), (false, false), (false, false), (true, false), (true, false)]);
    let r = HttpClient::http1().request("GET", &gw.url("/a"), &[("x-in", "seen")], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-b").as_deref(), Some("1"), "the response edit was made");
    assert_eq!(r.header("x-c").as_deref(), Some("seen"), "the response-only entry still ran");
    gw.stop().await;
}

/// Changes a plugin declares at configure (`fixed-edits`) are made by the gateway on every
/// request, at the entry's place in the chain: after the entries before it, just before its own
/// `on-request`, with no call at all for an entry whose work is all fixed (`builtin:headers`
/// with literal values). A request answered before the entry gets none of them; a fixed change
/// the gateway refuses fails the config, naming the change, the plugin and the route.
#[tokio::test]
async fn fixed_edits_are_made_in_the_entrys_place_without_a_call() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
id = "fixed"
path = "/fixed"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { remove = ["x-secret"], set = { "x-chain" = "h0" } }, response = { set = { "x-served-by" = "airlock" } } }
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "1", fixed_append = { "x-chain" = "f1" } }
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { append = { "x-chain" = "h2" } } }

[[routes]]
id = "refused"
path = "/refused"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { "x-never" = "1" } } }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let phases: Vec<(bool, bool)> =
        gw.inner().routes.routes()[0].chain.entries().iter().map(|e| (e.descriptor.on_request, e.descriptor.on_response)).collect();
    assert_eq!(phases, [(false, false), (true, true), (false, false)], "the headers entries are never called");
    let client = HttpClient::http1();
    for _ in 0..3 {
        let r = client.request("GET", &gw.url("/fixed"), &[("x-secret", "s"), ("x-chain", "client")], b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream_header("x-secret"), Vec::<String>::new(), "removed");
        assert_eq!(r.upstream_header("x-chain"), ["h0", "f1", "1", "h2"], "entry 0, entry 1's fixed append, its on-request, entry 2");
        assert_eq!(r.header_all("x-served-by"), ["airlock"]);
        assert_eq!(r.header_all("x-chain-resp"), ["1"], "the called entry's response phase still ran");
    }
    let r = client.get(&gw.url("/refused")).await;
    assert_eq!(r.status, 401);
    assert!(r.header("x-never").is_none(), "the entry after the one that answered never ran");
    // The inventory says how many changes each entry makes without a call, not what they are.
    let routes = client.get(&gw.admin_url("/admin/routes")).await.json();
    let counts: Vec<u64> = routes["routes"][0]["chain"].as_array().expect("chain").iter().filter_map(|e| e["fixed_edits"].as_u64()).collect();
    assert_eq!(counts, [3, 1, 1], "{routes}");
    gw.stop().await;

    for (fixed, why) in [
        (r#"{ "bad name" = "1" }"#, "fixed edit 1 (`append-header`): `bad name` is not a valid header name"),
        (r#"{ "content-length" = "1" }"#, "fixed edit 1 (`append-header`): `content-length` is set by the gateway"),
        (r#"{ "host" = "a@b" }"#, "fixed edit 1 (`append-header`): a `host` must be host[:port], not `a@b`"),
    ] {
        let config = format!(
            "[[routes]]\nid = \"r\"\npath = \"/x\"\n[[routes.plugins]]\nplugin = \"{{plugin:echo-context}}\"\nconfig = {{ fixed_append = {fixed} }}\n"
        );
        let err = Gateway::try_start(&config, None).await.err().expect("config must be rejected").to_string();
        assert!(err.contains(why) && err.contains("route `r`") && err.contains("echo_context"), "{err}");
    }
}

/// A templated header value is a fixed edit too: the gateway builds it from each request where
/// the change is made, with no call, to what the plugin would have written there: a route
/// parameter, the request id, the client's IP, and a request header, a query parameter and a
/// context value as the entries before it left them (on the way back, as the response phases
/// after it left the context). A value that makes no valid header value (a parameter
/// percent-decoded to a control character) is not written; the request is served all the same.
#[tokio::test]
async fn templated_fixed_edits_are_built_from_each_request_without_a_call() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
id = "users"
path = "/users/{id}"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "e" }
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.request]
set = { "x-user" = "u-${param.id}", "x-rid" = "${request_id}", "x-real-ip" = "${client_ip}", "x-from" = "${header.x-chain}|${query.q}|${context.who}" }
append = { "x-chain" = "literal" }
[routes.plugins.config.response]
set = { "x-route" = "${route}:${param.id}", "x-who" = "${context.who}" }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let phases: Vec<(bool, bool)> =
        gw.inner().routes.routes()[0].chain.entries().iter().map(|e| (e.descriptor.on_request, e.descriptor.on_response)).collect();
    assert_eq!(phases, [(true, true), (false, false)], "the headers entry is never called");
    let client = HttpClient::http1();
    for (id, decoded) in [("42", "42"), ("caf%C3%A9", "café")] {
        let headers = [("x-chain", "client"), ("x-set-context", "who=alice")];
        let r = client.request("GET", &gw.url(&format!("/users/{id}?q=a+b")), &headers, b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream_header("x-user"), [format!("u-{decoded}")], "the parameter as `request.param` gives it");
        let request_id = r.header("x-request-id").expect("a request id");
        assert_eq!(r.upstream_header("x-rid"), [request_id], "this request's id");
        assert_eq!(r.upstream_header("x-real-ip"), ["127.0.0.1"]);
        assert_eq!(r.upstream_header("x-from"), ["client|a b|alice"], "first header value, decoded query, the context the entry before set");
        assert_eq!(r.upstream_header("x-chain"), ["client", "e", "literal"]);
        assert_eq!(r.header_all("x-route"), [format!("users:{decoded}")]);
        assert_eq!(r.header_all("x-who"), ["alice"]);
    }
    // A control character in the parameter makes no header value: not written, and logged.
    // Nor does the client's own value stay in its place: a set leaves none of the old ones.
    let r = client.request("GET", &gw.url("/users/a%0Ab"), &[("x-user", "forged")], b"").await;
    assert_eq!(r.status, 200, "the request is served");
    assert!(r.upstream_header("x-user").is_empty(), "{:?}", r.upstream_header("x-user"));
    assert_eq!(r.upstream_header("x-from"), ["e||"], "the header the entry before added; absent values are nothing");
    assert!(r.header("x-route").is_none());
    let routes = client.get(&gw.admin_url("/admin/routes")).await.json();
    assert_eq!(routes["routes"][0]["chain"][1]["fixed_edits"], 7, "{routes}");
    gw.stop().await;
}

const EDITS: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]
[upstreams.down]
targets = ["127.0.0.1:1"]

[[routes]]
id = "mixed"
path = "/mixed"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { "x-word" = "0" }, append = { "x-chain-resp" = "edit-0" } } }
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "1" }
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { "x-word" = "2" }, append = { "x-chain-resp" = "edit-2 ${route}" } } }
[[routes.plugins]]
plugin = "{plugin:echo-context}"
config = { tag = "3" }

[[routes]]
id = "answered"
path = "/answered"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { append = { "x-chain-resp" = "edit-0" } } }
[[routes.plugins]]
plugin = "builtin:respond"
config = { status = 202, body = "early" }
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { "x-never" = "1" } } }

[[routes]]
id = "edits"
path = "/edits"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { "x-word" = "0" }, append = { "x-chain-resp" = "edit-0" } } }
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { "x-word" = "1" }, append = { "x-chain-resp" = "edit-1 ${route}" } } }

[[routes]]
id = "down"
path = "/down"
upstream = "down"
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { "x-word" = "0" } } }
"#;

/// Response edits asked for in on-request are made where the entry's on-response would run: in
/// reverse chain order among the other entries' response phases, on plugin-made responses and
/// on the gateway's own errors after the request phases too, and not for entries that never ran.
#[tokio::test]
async fn response_edits_are_made_in_the_entrys_place_on_the_way_back() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(EDITS, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/mixed")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("x-chain-resp"), vec!["3", "edit-2 mixed", "1", "edit-0"]);
    assert_eq!(r.header_all("x-word"), vec!["0"], "the first entry is the last on the way back");

    // Edits only, no `on-response` in the chain: the same order, without a call.
    let r = client.get(&gw.url("/edits")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("x-chain-resp"), vec!["edit-1 edits", "edit-0"]);
    assert_eq!(r.header_all("x-word"), vec!["0"], "the first entry is the last on the way back");

    let r = client.get(&gw.url("/answered")).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.text(), "early");
    assert_eq!(r.header_all("x-chain-resp"), vec!["edit-0"], "made on a plugin's response");
    assert!(r.header("x-never").is_none(), "the entry after the responder never ran");

    let r = client.get(&gw.url("/down")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header_all("x-word"), vec!["0"], "the edit is made on the gateway's own error too");
    assert_eq!(r.json()["error"], "upstream_unavailable", "the body stays the gateway's");
    gw.stop().await;
}

/// `limits.max_header_bytes` holds a chain's header writes together, each plugin's against what
/// the ones before it left: a header one plugin removed makes room for the next write, and the
/// headers earlier plugins wrote count against a later one's (the gateway keeps one count of
/// the request's header bytes through the chain, not one per plugin call). A write past the
/// limit is not made, and the request is not sent on without it: a 431, as for a client's
/// request past the limits (the write could be an identity header a client crowded out).
#[tokio::test]
async fn a_chains_header_writes_share_the_requests_header_bytes() {
    let upstream = Upstream::start().await;
    // About 300 bytes of the gateway's own lines (host, forwarding, trace, request id), the
    // client's 1,509-byte x-big, then two or three plugins' lines of ~1,510 bytes each, in 4,096.
    let set = |name: &str, fill: &str| format!("{{ \"{name}\" = \"{}\" }}", fill.repeat(1500));
    let (first, second, third) = (set("x-first", "f"), set("x-second", "s"), set("x-third", "t"));
    let two = format!(
        "[[routes.plugins]]\nplugin = \"builtin:headers\"\nconfig = {{ request = {{ set = {first} }} }}\n\
         [[routes.plugins]]\nplugin = \"builtin:headers\"\nconfig = {{ request = {{ remove = [\"x-big\"], set = {second} }} }}\n"
    );
    let config = format!(
        r#"
[limits]
max_header_bytes = 4096
[upstreams.backend]
targets = ["{{upstream}}"]
[[routes]]
path_prefix = "/"
upstream = "backend"
{two}
[[routes]]
path_prefix = "/three"
upstream = "backend"
{two}[[routes.plugins]]
plugin = "builtin:headers"
config = {{ request = {{ set = {third} }} }}
"#
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let big = "b".repeat(1500);
    for _ in 0..3 {
        let r = client.request("GET", &gw.url("/echo"), &[("x-big", &big)], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let lengths = |name| r.upstream_header(name).iter().map(String::len).collect::<Vec<_>>();
        assert_eq!(lengths("x-first"), [1500], "within the limit");
        assert!(lengths("x-big").is_empty(), "removed by the second plugin");
        assert_eq!(lengths("x-second"), [1500], "fits in the room x-big left");
        // The third write is past the limit with x-first and x-second.
        let r = client.request("GET", &gw.url("/three/echo"), &[("x-big", &big)], b"").await;
        assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (431, Some("headers_too_large")), "{}", r.text());
    }
    assert_eq!(upstream.hits(), 3, "no request went on without its header");
    gw.stop().await;
}

/// `${client_ip}` in `builtin:headers`: nginx's `proxy_set_header X-Real-IP $remote_addr`, the
/// peer's address, or behind the listener's `trusted_proxies` the client they vouch for.
#[tokio::test]
async fn headers_can_send_the_client_ip_upstream() {
    let upstream = Upstream::start().await;
    let config = r#"
[[listeners]]
address = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
[upstreams.backend]
targets = ["{upstream}"]
[[routes]]
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { set = { "x-real-ip" = "${client_ip}" } }, response = { set = { "x-client" = "${client_ip}" } } }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/echo"), &[("x-forwarded-for", "203.0.113.7")], b"").await;
    assert_eq!(r.upstream_header("x-real-ip"), vec!["203.0.113.7"], "the client the trusted proxy vouches for");
    assert_eq!(r.header("x-client").as_deref(), Some("203.0.113.7"), "settled at the request, made on the response");
    let r = client.get(&gw.url("/echo")).await;
    assert_eq!(r.upstream_header("x-real-ip"), vec!["127.0.0.1"], "the peer itself");
    gw.stop().await;
}
