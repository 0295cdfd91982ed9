//! Usage analytics and anomaly flags end to end: `/admin/analytics` checked against the exact
//! traffic the test sent (per route and consumer: requests, error shares, bytes, percentiles),
//! traffic that must and must not raise the `route_5xx`, `auth_failures` and `consumer_rate`
//! flags (the detectors' finer cases are fed synthetic traffic in `telemetry::anomaly`'s unit
//! tests), and the dashboard loaded in headless Chromium after traffic.

use std::path::PathBuf;
use std::time::Duration;

use airlock_tests::metrics::{sample, scrape};
use airlock_tests::{Gateway, HttpClient, Upstream, plugins};
use serde_json::Value;

const TOKEN: &str = "analytics-token-5d1";

fn config() -> String {
    format!(
        r#"
[admin]
address = "127.0.0.1:0"
token = "{TOKEN}"

[analytics]
auth_failure_threshold = 10
error_min_requests = 10

[upstreams.backend]
targets = ["{{upstream}}"]

[[consumers]]
id = "alice"
credentials = {{ keys = ["alice-key-3e1"] }}

[[routes]]
id = "api"
path_prefix = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "{echo}"

[[routes]]
id = "fail"
path_prefix = "/status"
upstream = "backend"

[[routes]]
id = "login"
path = "/login"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
"#,
        echo = plugins::ECHO_CONTEXT
    )
}

async fn analytics(client: &HttpClient, gw: &Gateway) -> Value {
    let bearer = format!("Bearer {TOKEN}");
    let r = client.request("GET", &gw.admin_url("/admin/analytics"), &[("authorization", &bearer)], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Reads `/admin/analytics` until it has counted `requests` (a sample is recorded when its
/// response body is done, which can be a moment after the client has it).
async fn analytics_after(client: &HttpClient, gw: &Gateway, requests: u64) -> Value {
    for _ in 0..250 {
        let a = analytics(client, gw).await;
        if a["requests_total"] == requests {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("analytics never counted {requests} requests");
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array().and_then(|l| l.iter().find(|x| x["name"] == name)).unwrap_or_else(|| panic!("no `{name}` in {list}"))
}

fn anomalies(a: &Value) -> Vec<(String, String)> {
    a["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .map(|x| (x["kind"].as_str().unwrap_or_default().to_owned(), x["subject"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[tokio::test]
async fn analytics_match_the_traffic_sent_and_flag_only_real_anomalies() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.admin_url("/admin/analytics")).await.status, 401, "the token is needed");

    // Consumers named by the echo-context plugin; bytes in and out counted.
    let mut api_bytes_out = 0;
    for _ in 0..7 {
        let r = client.request("POST", &gw.url("/api/x"), &[("x-set-context", "consumer=alice")], &[b'a'; 100]).await;
        assert_eq!(r.status, 200);
        api_bytes_out += r.body.len();
    }
    for _ in 0..3 {
        let r = client.request("GET", &gw.url("/api/y"), &[("x-set-context", "consumer=bob")], b"").await;
        api_bytes_out += r.body.len();
    }
    // Client errors and a few failed logins: no flag yet.
    for _ in 0..4 {
        assert_eq!(client.get(&gw.url("/status/404")).await.status, 404);
    }
    for _ in 0..5 {
        assert_eq!(client.get(&gw.url("/login")).await.status, 401);
    }
    let a = analytics_after(&client, &gw, 19).await;
    assert!(anomalies(&a).is_empty(), "nothing anomalous yet: {:?}", anomalies(&a));

    // The upstream breaks, then a burst of bad credentials, then one good login.
    for _ in 0..12 {
        assert_eq!(client.get(&gw.url("/status/500")).await.status, 500);
    }
    for _ in 0..6 {
        assert_eq!(client.request("GET", &gw.url("/login"), &[("x-api-key", "guess")], b"").await.status, 401);
    }
    assert_eq!(client.request("GET", &gw.url("/login"), &[("x-api-key", "alice-key-3e1")], b"").await.status, 200);
    let a = analytics_after(&client, &gw, 38).await;

    for window in ["1m", "1h"] {
        let w = &a["windows"][window];
        assert_eq!(w["total"]["requests"], 38, "{window}");
        let api = by_name(&w["routes"], "api");
        assert_eq!(api["requests"], 10);
        assert_eq!(api["bytes_in"], 700);
        assert_eq!(api["bytes_out"], api_bytes_out);
        assert_eq!(api["error_rate"], 0.0);
        let fail = by_name(&w["routes"], "fail");
        assert_eq!((fail["requests"].as_u64(), fail["errors_5xx"].as_u64(), fail["errors_4xx"].as_u64()), (Some(16), Some(12), Some(4)));
        assert_eq!(fail["error_rate"], 0.75);
        assert_eq!(fail["client_error_rate"], 0.25);
        let login = by_name(&w["routes"], "login");
        assert_eq!((login["requests"].as_u64(), login["errors_4xx"].as_u64()), (Some(12), Some(11)));
        // Top endpoints and consumers, busiest first.
        let top: Vec<&str> = w["top_endpoints"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
        assert_eq!(top, ["fail", "login", "api"]);
        let consumers: Vec<(&str, u64)> = w["top_consumers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["requests"].as_u64().unwrap()))
            .collect();
        assert_eq!(consumers, [("alice", 8), ("bob", 3)]);
        let latency = &w["total"]["latency_ms"];
        let (p50, p95, p99) = (latency["p50"].as_f64().unwrap(), latency["p95"].as_f64().unwrap(), latency["p99"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 < 10_000.0, "{latency}");
    }

    // Exactly the two real anomalies, each with its evidence, each counted once.
    let flags = anomalies(&a);
    assert_eq!(flags.len(), 2, "{flags:?}");
    assert!(flags.contains(&("route_5xx".to_owned(), "fail".to_owned())), "{flags:?}");
    assert!(flags.contains(&("auth_failures".to_owned(), "127.0.0.1".to_owned())), "{flags:?}");
    let list = a["anomalies"].as_array().unwrap();
    let route = list.iter().find(|x| x["kind"] == "route_5xx").unwrap();
    assert!(route["evidence"]["error_rate"].as_f64().unwrap() >= 0.5, "{route}");
    assert_eq!(route["evidence"]["baseline_error_rate"], 0.0);
    let auth = list.iter().find(|x| x["kind"] == "auth_failures").unwrap();
    assert_eq!(auth["evidence"]["failures"], 10);
    assert_eq!(auth["evidence"]["last_route"], "login");
    assert_eq!(a["anomalies_raised"]["consumer_rate"], 0);

    let m = scrape(&client, &gw, Some(TOKEN)).await;
    assert_eq!(sample(&m, "airlock_anomalies_total", &[("kind", "route_5xx")]), 1.0);
    assert_eq!(sample(&m, "airlock_anomalies_total", &[("kind", "auth_failures")]), 1.0);
    assert_eq!(sample(&m, "airlock_anomalies_total", &[("kind", "consumer_rate")]), 0.0);
    gw.stop().await;
}

/// Where test artifacts go: `<target>/test-artifacts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_leaving_its_own_rate_is_flagged_and_a_steady_one_is_not() {
    let upstream = Upstream::start().await;
    // Short intervals so a baseline forms in a second or two; a departure must be 25 requests
    // per interval and 4 deviations, far above what scheduling jitter makes of 3 per interval.
    let toml = config().replace(
        "[analytics]\n",
        "[analytics]\nrate_interval_ms = 250\nrate_warmup_intervals = 4\nrate_min_delta = 25\nrate_threshold = 4.0\n",
    );
    let gw = Gateway::start(&toml, Some(&upstream)).await;
    let client = HttpClient::http1();
    let send = |consumer: &'static str| {
        let (client, url) = (client.clone(), gw.url("/api/rate"));
        async move {
            let header = format!("consumer={consumer}");
            let r = client.request("GET", &url, &[("x-set-context", &header)], b"").await;
            assert_eq!(r.status, 200);
        }
    };
    for _ in 0..7 {
        for _ in 0..3 {
            send("steady").await;
            send("spiky").await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let a = analytics(&client, &gw).await;
    assert!(anomalies(&a).is_empty(), "a steady baseline raised nothing: {}", a["anomalies"]);

    // 100 requests at once from one consumer; the other keeps its pace.
    let burst: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn({
                let one = send("spiky");
                let more: Vec<_> = (0..9).map(|_| send("spiky")).collect();
                async move {
                    one.await;
                    for request in more {
                        request.await;
                    }
                }
            })
        })
        .collect();
    for task in burst {
        task.await.expect("burst");
    }
    for _ in 0..3 {
        send("steady").await;
    }
    let a = analytics(&client, &gw).await;
    let flagged = anomalies(&a);
    assert_eq!(flagged, [("consumer_rate".to_owned(), "spiky".to_owned())], "{}", a["anomalies"]);
    let evidence = &a["anomalies"][0]["evidence"];
    assert_eq!(evidence["direction"], "above", "{evidence}");
    assert!(evidence["requests_in_interval"].as_u64().unwrap_or(0) >= 25, "{evidence}");
    let m = scrape(&client, &gw, Some(TOKEN)).await;
    assert_eq!(sample(&m, "airlock_anomalies_total", &[("kind", "consumer_rate")]), 1.0);
    gw.stop().await;
}

fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create the artifact directory");
    dir
}

/// Runs headless Chromium on `url` with `args`, for at most a minute; returns its stdout.
async fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    let mut command = tokio::process::Command::new("chromium");
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=8000", "--window-size=1280,1700"])
        .args(args)
        .arg(url)
        .kill_on_drop(true);
    let output = match tokio::time::timeout(Duration::from_secs(60), command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("cannot run `chromium` ({e}): install Debian's chromium package (tests/run.sh does)"),
        Err(_) => panic!("chromium did not finish within a minute"),
    };
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the element with `id` in a dumped DOM.
fn text_of(dom: &str, id: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let open_end = start + dom[start..].find('>')? + 1;
    let close = open_end + dom[open_end..].find('<')?;
    Some(dom[open_end..close].to_owned())
}

#[tokio::test]
async fn the_dashboard_shows_live_figures_in_headless_chromium() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();

    // The page is served from the binary, without the token (it holds no data).
    let page = client.get(&gw.admin_url("/")).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap_or_default().starts_with("text/html"));
    assert!(!page.text().contains("http://") && !page.text().contains("https://"), "nothing loaded from elsewhere");

    for _ in 0..6 {
        client.request("GET", &gw.url("/api/a"), &[("x-set-context", "consumer=dash-alice")], b"").await;
    }
    for _ in 0..2 {
        client.request("GET", &gw.url("/api/b"), &[("x-set-context", "consumer=dash-bob")], b"").await;
    }
    for _ in 0..12 {
        client.get(&gw.url("/status/503")).await;
    }
    let a = analytics_after(&client, &gw, 20).await;
    assert_eq!(anomalies(&a), [("route_5xx".to_owned(), "fail".to_owned())]);

    // The token travels in the fragment, which the browser never sends to the server.
    let url = format!("{}#token={TOKEN}", gw.admin_url("/"));
    let mut dom = String::new();
    for _ in 0..3 {
        dom = chromium(&url, &["--dump-dom"]).await;
        if dom.contains("data-state=\"live\"") {
            break;
        }
    }
    assert!(dom.contains("data-state=\"live\""), "the page never rendered live data: {dom}");
    // Figures rendered from /admin/analytics: no more proxied traffic is sent, so they are stable.
    assert_eq!(text_of(&dom, "requests-total").as_deref(), Some("20"), "{dom}");
    assert_eq!(text_of(&dom, "requests-1m").as_deref(), Some("20"));
    assert_eq!(text_of(&dom, "error-rate").as_deref(), Some("60.0%"));
    assert_eq!(text_of(&dom, "anomaly-count").as_deref(), Some("1"));
    let p99: f64 = text_of(&dom, "p99").and_then(|t| t.parse().ok()).expect("a p99 figure");
    assert!(p99 > 0.0);
    assert!(
        dom.contains(r#"<tr data-name="dash-alice"><td class="name">dash-alice</td><td class="num requests">6</td>"#),
        "top consumers: {dom}"
    );
    assert!(dom.contains(r#"<td class="name">dash-bob</td><td class="num requests">2</td>"#));
    assert!(dom.contains(r#"<td class="name">fail</td><td class="num requests">12</td>"#), "top endpoints");
    assert!(dom.contains(r#"<td class="kind">route_5xx</td><td class="subject">fail</td>"#), "anomalies");
    assert!(dom.contains(&format!(r#"data-plugin="{}""#, plugins::ECHO_CONTEXT)), "plugin failures table");
    assert!(dom.contains("<polyline"), "charts drawn");

    let shot = artifact_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&url, &[&format!("--screenshot={}", shot.display())]).await;
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    println!("dashboard screenshot: {}", shot.display());
    gw.stop().await;
}
