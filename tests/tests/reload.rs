//! Hot reload and shutdown: a reload swaps routes and chains atomically or not at all, requests
//! in flight finish on the chain they started with, old plugin instances go when their last
//! request ends; and, with the real binary under load from `wrk`, 20 reloads (SIGHUP,
//! `POST /admin/reload`, `--watch`; valid and invalid mixed) fail or reset no request. SIGTERM
//! drains; a second signal exits at once.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use airlock::reload::ReloadError;
use airlock_tests::metrics::{eventually, sample, scrape};
use airlock_tests::{Gateway, GatewayProcess as Airlock, HttpClient, Upstream, render};
use bytes::Bytes;
use http_body_util::Full;

/// One route through a `headers` plugin named `name`, which labels responses `x-chain: name`,
/// and a route `/only-<name>` that exists only in this config.
fn chain(name: &str) -> String {
    r#"
[plugins.NAME]
source = "builtin:headers"

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/only-NAME"
upstream = "backend"

[[routes]]
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "NAME"
[routes.plugins.config.response.set]
"x-chain" = "NAME"
"#
    .replace("NAME", name)
}

async fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&scrape(&HttpClient::http1(), gw, None).await, name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_chain_and_in_flight_requests_finish_on_theirs() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&chain("first"), Some(&upstream)).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/")).await.header("x-chain").as_deref(), Some("first"));
    assert_eq!(metric(&gw, "airlock_config_generation", &[]).await, 1.0);

    let url = gw.url("/slow/1500");
    let in_flight = tokio::spawn(async move { HttpClient::http1().get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.reload(&chain("second"), Some(&upstream)).await.expect("reload"), 2);

    let r = client.get(&gw.url("/")).await;
    assert_eq!(r.header("x-chain").as_deref(), Some("second"), "new requests get the new chain");
    assert_eq!(client.get(&gw.url("/only-second")).await.status, 200, "a route added by the reload answers");
    let gone = client.get(&gw.url("/only-first")).await;
    assert_eq!(gone.header("x-chain").as_deref(), Some("second"), "a removed route falls to the catch-all");
    // The old generation lives while its request is in flight: its plugin's pool is still there.
    assert!(metric(&gw, "airlock_plugin_pool_capacity", &[("plugin", "first")]).await >= 1.0);

    let slow = in_flight.await.expect("in-flight request");
    assert_eq!(slow.status, 200);
    assert_eq!(slow.header("x-chain").as_deref(), Some("first"), "the in-flight request finished on its chain");
    // Its last request ended: the old generation, its instances and pools are gone.
    let client2 = HttpClient::http1();
    let mut gone = false;
    for _ in 0..100 {
        let m = scrape(&client2, &gw, None).await;
        if sample(&m, "airlock_plugin_pool_capacity", &[("plugin", "first")]) == 0.0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the old generation's plugin pool was torn down after its last request");
    let m = scrape(&client2, &gw, None).await;
    assert!(sample(&m, "airlock_plugin_pool_capacity", &[("plugin", "second")]) >= 1.0);
    assert_eq!(sample(&m, "airlock_config_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(sample(&m, "airlock_config_generation", &[]), 2.0);
    assert_eq!(sample(&m, "airlock_config_last_reload_successful", &[]), 1.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_keeps_the_running_config_and_says_where() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&chain("first"), Some(&upstream)).await;
    let client = HttpClient::http1();
    let issues = |e: ReloadError| match e {
        ReloadError::Config(c) => c.issues().iter().map(|i| (i.key.clone(), i.line, i.message.clone())).collect::<Vec<_>>(),
        other => panic!("unexpected reload error: {other}"),
    };

    let syntax = gw.reload("[[routes]\npath = \"/\"\n", Some(&upstream)).await.expect_err("a syntax error");
    // Line 4: the harness puts a three-line `[[listeners]]` in front.
    assert_eq!(issues(syntax)[0].1, Some(4));

    let unknown = chain("first").replace("plugin = \"first\"", "plugin = \"nope\"");
    let found = issues(gw.reload(&unknown, Some(&upstream)).await.expect_err("an unknown plugin"));
    assert_eq!(found[0].0, "routes[1].plugins[0].plugin", "{found:?}");
    assert!(found[0].2.contains("no plugin named `nope`"), "{found:?}");

    let restart = format!("{}\n[state]\nmax_keys = 10\n", chain("first"));
    let found = issues(gw.reload(&restart, Some(&upstream)).await.expect_err("a restart-only section"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "state");
    assert!(found[0].1.is_some() && found[0].2.contains("only on restart"), "{found:?}");

    // A refused reload leaves no series behind for what only it had: a plugin, a route and an
    // upstream no served config had would sit on /metrics at 0 until the next restart.
    let phantom = chain("phantom")
        .replace("path = \"/only-phantom\"", "id = \"only-phantom\"\npath = \"/only-phantom\"")
        .replace("upstream = \"backend\"\n[[routes.plugins]]", "upstream = \"spare\"\n[[routes.plugins]]")
        .replace("[upstreams.backend]", "[upstreams.spare]\ntargets = [\"{upstream}\"]\n\n[upstreams.backend]");
    let phantom = format!("{phantom}\n[state]\nmax_keys = 10\n");
    gw.reload(&phantom, Some(&upstream)).await.expect_err("a restart-only section");
    let m = scrape(&client, &gw, None).await;
    let has = |label: &str, value: &str| m.samples.iter().any(|s| s.labels.get(label) == Some(value));
    for (label, value) in [("plugin", "phantom"), ("route", "only-phantom"), ("upstream", "spare")] {
        assert!(!has(label, value), "a refused reload's series stayed: {label}={value}");
    }
    assert!(has("plugin", "first"), "the running config's plugin series stay");

    // The same through the admin API: 422 with the issues, located.
    std::fs::write(gw.dir.path().join("airlock.toml"), render(&unknown, Some(&upstream))).expect("write");
    let r = client.request("POST", &gw.admin_url("/admin/reload"), &[], b"").await;
    assert_eq!(r.status, 422, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "reload_failed");
    assert_eq!(body["generation"], 1);
    assert_eq!(body["issues"][0]["key"], "routes[1].plugins[0].plugin");
    assert_eq!(body["issues"][0]["file"], "airlock.toml");
    assert!(body["issues"][0]["line"].as_u64().is_some());
    let wrong_method = client.get(&gw.admin_url("/admin/reload")).await;
    assert_eq!(wrong_method.status, 405, "reload is a POST");
    assert_eq!(wrong_method.header("allow").as_deref(), Some("POST"), "a 405 names the method to use");

    // Still serving the first config, and the failures are counted.
    assert_eq!(client.get(&gw.url("/")).await.header("x-chain").as_deref(), Some("first"));
    assert_eq!(client.get(&gw.url("/only-first")).await.status, 200);
    assert_eq!(metric(&gw, "airlock_config_reloads_total", &[("result", "error")]).await, 5.0);
    assert_eq!(metric(&gw, "airlock_config_last_reload_successful", &[]).await, 0.0);
    assert_eq!(metric(&gw, "airlock_config_generation", &[]).await, 1.0);

    // A valid file through the admin API.
    std::fs::write(gw.dir.path().join("airlock.toml"), render(&chain("second"), Some(&upstream))).expect("write");
    let r = client.request("POST", &gw.admin_url("/admin/reload"), &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["generation"], 2);
    assert_eq!(client.get(&gw.url("/")).await.header("x-chain").as_deref(), Some("second"));
    assert_eq!(metric(&gw, "airlock_config_last_reload_successful", &[]).await, 1.0);
    gw.stop().await;
}

/// Config version `v`: `/steady` answers with `x-version: v` (set by a plugin), and `/v<v>` is a
/// route only this version has.
fn version(v: usize) -> String {
    r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/vV"
upstream = "backend"

[[routes]]
path = "/steady"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.response.set]
"x-version" = "V"
"#
    .replace('V', &v.to_string())
}

/// Invalid configs, each wrong in another way.
fn broken(i: usize) -> String {
    match i % 4 {
        0 => "[[routes]\npath = \"/steady\"\n".to_owned(),
        1 => version(99).replace("upstream = \"backend\"", "upstream = \"nowhere\""),
        2 => format!("{}\n[state]\nmax_keys = 7\n", version(99)),
        _ => version(99).replace("builtin:headers", "missing-plugin.wasm"),
    }
}

/// Clients that GET `url` in a loop on keep-alive connections until stopped, keeping every
/// failure: a transport error, or any status but 200.
struct SteadyClients {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl SteadyClients {
    fn start(url: String, clients: usize) -> Self {
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, sent, url) = (stop.clone(), sent.clone(), url.clone());
                tokio::spawn(async move {
                    let client = HttpClient::http1();
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let request = http::Request::get(&url).body(Full::<Bytes>::default()).expect("request");
                        match client.try_send(request).await {
                            Ok(r) if r.status == 200 => {}
                            Ok(r) => failures.push(format!("{}: {}", r.status, r.text())),
                            Err(e) => failures.push(e),
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    failures
                })
            })
            .collect();
        Self { stop, sent, tasks }
    }

    /// Stops them; returns (requests sent, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(task.await.expect("client task"));
        }
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

/// What `wrk` reported.
struct WrkReport {
    requests: u64,
    output: String,
}

/// Stops a running `wrk` with SIGINT (it then prints its summary) and reads the summary.
fn stop_wrk(wrk: Child) -> WrkReport {
    let pid = wrk.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let out = wrk.wait_with_output().expect("wrk output");
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests = output
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{output}"));
    WrkReport { requests, output }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request_and_apply_new_routes() {
    let upstream = Upstream::start().await;
    let airlock = Airlock::start(&version(1), &upstream, &[]).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&airlock.url("/steady")).await.header("x-version").as_deref(), Some("1"));

    // The load: wrk on 16 keep-alive connections, and the test's own clients checking each answer.
    let wrk = Command::new("wrk")
        .args(["-t1", "-c16", "-d300s", "--timeout", "20s", &airlock.url("/steady")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run wrk (installed by tests/run.sh)");
    let steady = SteadyClients::start(airlock.url("/steady"), 4);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (mut current, mut ok, mut errors) = (1, 0.0, 0.0);
    for i in 0..20 {
        let valid = i % 3 != 2;
        let next = current + 1;
        if valid {
            airlock.write(&version(next), &upstream);
        } else {
            airlock.write(&broken(i), &upstream);
        }
        if i % 2 == 0 {
            airlock.signal("HUP");
        } else {
            let r = client.request("POST", &airlock.admin_url("/admin/reload"), &[], b"").await;
            assert_eq!(r.status, if valid { 200 } else { 422 }, "reload {i}: {}", r.text());
        }
        if valid {
            ok += 1.0;
            airlock.metric_reaches(&client, "airlock_config_reloads_total", &[("result", "ok")], ok).await;
            current = next;
            let r = client.get(&airlock.url(&format!("/v{current}"))).await;
            assert_eq!(r.status, 200, "reload {i}: the new route answers");
            let r = client.get(&airlock.url(&format!("/v{}", current - 1))).await;
            assert_eq!(r.status, 404, "reload {i}: the removed route is gone");
        } else {
            errors += 1.0;
            airlock.metric_reaches(&client, "airlock_config_reloads_total", &[("result", "error")], errors).await;
        }
        let r = client.get(&airlock.url("/steady")).await;
        assert_eq!(r.header("x-version"), Some(current.to_string()), "reload {i}: /steady runs the current chain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(airlock.metric(&client, "airlock_config_generation", &[]).await, current as f64);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = stop_wrk(wrk);
    let (sent, failures) = steady.finish().await;
    assert!(failures.is_empty(), "{} of {sent} requests failed during reloads: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(sent > 100 && report.requests > 1000, "the load ran: {sent} client requests, wrk:\n{}", report.output);
    assert!(!report.output.contains("Socket errors"), "wrk saw connection errors or resets:\n{}", report.output);
    assert!(!report.output.contains("Non-2xx"), "wrk saw failed requests:\n{}", report.output);
    assert_eq!((current, errors), (15, 6.0), "14 valid reloads and 6 invalid ones");
    eprintln!("{sent} requests from the test's clients, all 200; wrk:\n{}", report.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_a_changed_file_and_tries_a_broken_one_once() {
    let upstream = Upstream::start().await;
    let airlock = Airlock::start(&version(1), &upstream, &["--watch", "--watch-interval-ms", "50"]).await;
    let client = HttpClient::http1();
    airlock.write(&version(2), &upstream);
    airlock.metric_reaches(&client, "airlock_config_generation", &[], 2.0).await;
    assert_eq!(client.get(&airlock.url("/v2")).await.status, 200);

    airlock.write(&broken(1), &upstream);
    airlock.metric_reaches(&client, "airlock_config_reloads_total", &[("result", "error")], 1.0).await;
    // Many checks later, the same broken content has not been tried again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(airlock.metric(&client, "airlock_config_reloads_total", &[("result", "error")]).await, 1.0);
    assert_eq!(client.get(&airlock.url("/steady")).await.header("x-version").as_deref(), Some("2"));
    assert_eq!(airlock.metric(&client, "airlock_config_last_reload_successful", &[]).await, 0.0);

    // The operator reverts the broken edit: the file is the running config again, so the
    // failure is over (an alert on the gauge clears) without a reload.
    airlock.write(&version(2), &upstream);
    airlock.metric_reaches(&client, "airlock_config_last_reload_successful", &[], 1.0).await;
    assert_eq!(airlock.metric(&client, "airlock_config_generation", &[]).await, 2.0, "nothing reloaded");
    assert_eq!(airlock.metric(&client, "airlock_config_reloads_total", &[("result", "error")]).await, 1.0);

    airlock.write(&version(3), &upstream);
    airlock.metric_reaches(&client, "airlock_config_generation", &[], 3.0).await;
    assert_eq!(client.get(&airlock.url("/steady")).await.header("x-version").as_deref(), Some("3"));
}

/// A file written in place (`envsubst > airlock.toml`, an editor saving over it) is read by the
/// watch while it is being written: an empty file, or a prefix that parses (fewer routes), was
/// reloaded and served (routes answering 404) until the next look. Reloaded once it reads the
/// same after a pause, only the whole file is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_waits_for_a_file_written_in_place_to_be_whole() {
    use std::io::Write;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&version(1), Some(&upstream)).await;
    airlock::reload::reload_on_change(gw.live().clone(), Duration::from_millis(20)).expect("watch");
    let whole = render(&version(2), Some(&upstream));
    let path = gw.dir.path().join("airlock.toml");
    // Truncated, then empty for a while, then a prefix that is a config of its own (the `/v2`
    // route, without `/steady`), then the rest: each step longer than the watch's interval.
    let cut = whole.find("[[routes]]\npath = \"/steady\"").expect("the /steady route");
    // (Each step 60 ms: above the watch's 20 ms, well below the 200 ms a file must hold still.)
    let mut file = std::fs::File::create(&path).expect("truncate");
    tokio::time::sleep(Duration::from_millis(60)).await;
    file.write_all(&whole.as_bytes()[..cut]).expect("prefix");
    tokio::time::sleep(Duration::from_millis(60)).await;
    file.write_all(&whole.as_bytes()[cut..]).expect("rest");
    drop(file);
    let client = HttpClient::http1();
    for _ in 0..400 {
        if gw.live().current().number == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gw.live().current().number, 2, "the whole file was reloaded");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metric(&gw, "airlock_config_reloads_total", &[("result", "ok")]).await, 1.0, "one reload: the whole file's");
    assert_eq!(metric(&gw, "airlock_config_reloads_total", &[("result", "error")]).await, 0.0, "the empty file was not tried");
    assert_eq!(client.get(&gw.url("/steady")).await.header("x-version").as_deref(), Some("2"));
    gw.stop().await;
}

/// A config file that goes away (deleted, not mid-save) is said, once, by the watch and by a
/// reload's answer (which names the file), and the running config keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_that_goes_away_is_reported_and_the_running_config_kept() {
    let upstream = Upstream::start().await;
    let airlock = Airlock::start_logging(&version(1), &upstream, &["--watch", "--watch-interval-ms", "50"]).await;
    let client = HttpClient::http1();
    airlock.remove_config();
    eventually("the watch's warning", || airlock.log().contains("config watch: cannot read the config file").then_some(())).await;
    assert_eq!(airlock.log().matches("config watch: cannot read the config file").count(), 1, "said once");
    let r = client.request("POST", &airlock.admin_url("/admin/reload"), &[], b"").await;
    assert_eq!(r.status, 422, "{}", r.text());
    let issue = &r.json()["issues"][0];
    assert!(issue["file"].as_str().unwrap_or_default().ends_with("airlock.toml"), "{issue}");
    assert!(issue["message"].as_str().unwrap_or_default().starts_with("cannot read config"), "{issue}");
    assert_eq!(client.get(&airlock.url("/steady")).await.header("x-version").as_deref(), Some("1"));
    airlock.write(&version(2), &upstream);
    // Back: the watch reloads it.
    airlock.metric_reaches(&client, "airlock_config_generation", &[], 2.0).await;
}

const DRAINING: &str = r#"
[timeouts]
drain_ms = 60000

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/"
upstream = "backend"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_a_second_signal_exits_at_once() {
    let upstream = Upstream::start().await;

    // One signal: no new connections, the in-flight request completes, then a clean exit.
    let mut airlock = Airlock::start(DRAINING, &upstream, &[]).await;
    let url = airlock.url("/slow/1500");
    let in_flight = tokio::spawn(async move { HttpClient::http1().get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    airlock.signal("TERM");
    let port = airlock.port();
    let refused = eventually("the listener to close", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err().then_some(())
    });
    refused.await;
    let r = in_flight.await.expect("in-flight request");
    assert_eq!(r.status, 200, "the in-flight request completed during the drain");
    assert!(airlock.exit_within(Duration::from_secs(10)).await.success());

    // Two signals: the drain (60 s) is cut short, the process exits now.
    let mut airlock = Airlock::start(DRAINING, &upstream, &[]).await;
    let url = airlock.url("/slow/30000");
    let in_flight = tokio::spawn(async move {
        let request = http::Request::get(&url).body(Full::<Bytes>::default()).expect("request");
        HttpClient::http1().try_send(request).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    airlock.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!airlock.has_exited(), "still draining after one signal");
    airlock.signal("TERM");
    let status = airlock.exit_within(Duration::from_secs(3)).await;
    assert!(!status.success(), "a forced stop that abandoned a request is not a clean exit: {status}");
    assert!(in_flight.await.expect("task").is_err(), "the cut request saw its connection close");
}

/// With `timeouts.shutdown_delay_ms`, a SIGTERM first fails `/ready` while new connections are
/// still accepted and served (the time a balancer or Kubernetes takes to stop sending), then the
/// listeners close and requests drain; the admin listener answers throughout. A drain cut short
/// at `drain_ms` exits with status 1, a clean one 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_delay_fails_readiness_and_keeps_serving_and_a_cut_drain_is_not_clean() {
    let upstream = Upstream::start().await;
    let client = HttpClient::http1();
    let config = DRAINING.replace("drain_ms = 60000", "drain_ms = 60000\nshutdown_delay_ms = 2000");
    let mut airlock = Airlock::start(&config, &upstream, &[]).await;
    assert_eq!(client.get(&airlock.admin_url("/ready")).await.status, 200);
    airlock.signal("TERM");
    let signalled = std::time::Instant::now();
    while client.get(&airlock.admin_url("/ready")).await.status != 503 {
        assert!(signalled.elapsed() < Duration::from_secs(1), "/ready still passing after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Within the delay: a new connection is still served, and the admin listener answers.
    let fresh = HttpClient::http1();
    let r = fresh.get(&airlock.url("/still-served")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ready = client.get(&airlock.admin_url("/ready")).await;
    assert_eq!((ready.status.as_u16(), ready.json()["draining"].clone()), (503, true.into()));
    assert!(airlock.exit_within(Duration::from_secs(10)).await.success(), "a clean drain exits 0");

    // A request still running when drain_ms ends is cut: not a clean stop.
    let cut = DRAINING.replace("drain_ms = 60000", "drain_ms = 300");
    let mut airlock = Airlock::start(&cut, &upstream, &[]).await;
    let url = airlock.url("/slow/5000");
    let in_flight = tokio::spawn(async move {
        let request = http::Request::get(&url).body(Full::<Bytes>::default()).expect("request");
        HttpClient::http1().try_send(request).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    airlock.signal("TERM");
    let status = airlock.exit_within(Duration::from_secs(5)).await;
    assert!(!status.success(), "requests cut at drain_ms: {status}");
    assert!(in_flight.await.expect("task").is_err(), "the cut request saw its connection close");
}

/// A keep-alive HTTP/1.1 client sending requests back to back on one connection until an
/// answer says `Connection: close` or the connection ends: (answers, whether the last said
/// close, whether the connection ended with a request unanswered).
async fn back_to_back(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> (usize, bool, bool) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut answers = 0;
    while !stop.load(Ordering::Relaxed) {
        if write.write_all(b"GET /ka HTTP/1.1\r\nhost: x\r\n\r\n").await.is_err() {
            return (answers, false, true);
        }
        let (mut length, mut close, mut line) = (0usize, false, String::new());
        loop {
            line.clear();
            match read.read_line(&mut line).await {
                Ok(0) | Err(_) => return (answers, false, true),
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().expect("length");
                    }
                    close |= lower.starts_with("connection:") && lower.contains("close");
                }
            }
        }
        let mut body = vec![0; length];
        if read.read_exact(&mut body).await.is_err() {
            return (answers, false, true);
        }
        answers += 1;
        if close {
            return (answers, true, false);
        }
    }
    (answers, false, false)
}

/// During `timeouts.shutdown_delay_ms` every HTTP/1.1 answer says `Connection: close`, so
/// keep-alive clients sending back to back leave their connections after an answer, none with
/// a request sent and never answered (which the drain's close would otherwise cut: a POST's
/// client could not know whether it was served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_are_moved_off_during_the_shutdown_delay_without_a_lost_request() {
    let upstream = Upstream::start().await;
    let config = DRAINING.replace("drain_ms = 60000", "drain_ms = 60000\nshutdown_delay_ms = 1500");
    let mut airlock = Airlock::start(&config, &upstream, &[]).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", airlock.port()).parse().expect("address");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16).map(|_| tokio::spawn(back_to_back(addr, stop.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    airlock.signal("TERM");
    // Every client leaves within the delay, after an answer that said so.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut ended = Vec::new();
        for client in clients {
            ended.push(client.await.expect("client task"));
        }
        ended
    });
    let ended = ended.await.expect("every client saw its connection close");
    stop.store(true, Ordering::Relaxed);
    for (answers, closed, cut) in &ended {
        assert!(*answers > 0 && *closed && !*cut, "{answers} answers, close said: {closed}, request cut: {cut}");
    }
    assert!(airlock.exit_within(Duration::from_secs(10)).await.success(), "a clean drain exits 0");
}

/// `runtime.worker_threads` starts that many request workers (named threads of the process),
/// every one of them accepts and serves, and changing it is refused by a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_worker_threads_serve_and_changing_them_needs_a_restart() {
    let upstream = Upstream::start().await;
    let config = |workers: usize| format!("[runtime]\nworker_threads = {workers}\n{}", chain("first"));
    let airlock = Airlock::start(&config(3), &upstream, &[]).await;
    let workers = || {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", airlock.pid())).expect("tasks");
        let names: Vec<String> = tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).collect();
        let mut workers: Vec<String> = names.into_iter().map(|n| n.trim().to_owned()).filter(|n| n.starts_with("airlock-w")).collect();
        workers.sort();
        workers
    };
    // A thread names itself as it starts, which may be just after the listener is up.
    for _ in 0..100 {
        if workers().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(workers(), ["airlock-w0", "airlock-w1", "airlock-w2"]);

    // Many connections at once, all served.
    let url = airlock.url("/");
    let clients: Vec<_> = (0..24)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = HttpClient::http1();
                let mut chains = Vec::new();
                for _ in 0..5 {
                    chains.push(client.get(&url).await.header("x-chain"));
                }
                chains
            })
        })
        .collect();
    for c in clients {
        assert!(c.await.expect("client").iter().all(|chain| chain.as_deref() == Some("first")));
    }
    assert_eq!(upstream.hits(), 24 * 5);

    airlock.write(&config(1), &upstream);
    let client = HttpClient::http1();
    let r = client.request("POST", &airlock.admin_url("/admin/reload"), &[], b"").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["issues"][0]["key"], "runtime.worker_threads");
    assert_eq!(workers().len(), 3, "still three workers");
    assert_eq!(client.get(&url).await.status, 200);
}

/// Limiter counters carry over a reload (`[state]` is kept) even when the reload adds a route
/// before an id-less one, or another plugin before the limiter in its chain: an inline entry's
/// state belongs to what its route matches and to its plugin, not to positions in the file.
/// Before, either edit gave the route fresh counters, or another route's.
#[tokio::test]
async fn limiter_counters_survive_a_reload_that_adds_routes_and_plugins() {
    let upstream = Upstream::start().await;
    let limited = |limit: u32| {
        format!(
            "[[routes]]\npath = \"/{}\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"builtin:rate-limit\"\n\
             config = {{ by = [\"header:x-k\"], limits = [{{ limit = {limit}, window = \"hour\" }}] }}\n",
            if limit == 2 { "a" } else { "b" }
        )
    };
    let backend = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n";
    let before = format!("{backend}{}{}", limited(2), limited(1000));
    let gw = Gateway::start(&before, Some(&upstream)).await;
    let client = HttpClient::http1();
    let get = |path: &'static str| {
        let (client, url) = (client.clone(), gw.url(path));
        async move { client.request("GET", &url, &[("x-k", "same-client")], b"").await.status.as_u16() }
    };
    assert_eq!([get("/a").await, get("/a").await, get("/a").await], [200, 200, 429]);
    assert_eq!(get("/b").await, 200);

    // A new first route, and a plugin before /a's limiter.
    let new_route = "[[routes]]\npath = \"/new\"\nupstream = \"backend\"\n";
    let with_headers = limited(2).replace(
        "[[routes.plugins]]\nplugin = \"builtin:rate-limit\"",
        "[[routes.plugins]]\nplugin = \"builtin:headers\"\nconfig = { request = { set = { \"x-added\" = \"1\" } } }\n[[routes.plugins]]\nplugin = \"builtin:rate-limit\"",
    );
    let after = format!("{backend}{new_route}{with_headers}{}", limited(1000));
    assert_eq!(gw.reload(&after, Some(&upstream)).await.expect("reloaded"), 2);
    assert_eq!(get("/a").await, 429, "/a's counter carried over");
    let r = client.request("GET", &gw.url("/b"), &[("x-k", "same-client")], b"").await;
    assert_eq!(r.header("ratelimit").as_deref().map(|v| v.contains("r=998")), Some(true), "/b's own counter: {:?}", r.header("ratelimit"));
    gw.stop().await;
}

/// A reload that leaves an upstream as it was keeps it, with its pooled connections (no new
/// connect, for `https://` targets no new handshake, per reload); one that changes the upstream's
/// settings builds it anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_upstreams_connections() {
    use tokio::io::AsyncWriteExt;
    // A keep-alive backend that counts the connections it accepts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    let backend = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while airlock_tests::read_request_head(&mut stream).await.is_some() {
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = |extra_route: &str, timeout_ms: u32| {
        format!(
            "[upstreams.kept]\ntargets = [\"{addr}\"]\nrequest_timeout_ms = {timeout_ms}\n\n\
             [[routes]]\npath = \"/a\"\nupstream = \"kept\"\n{extra_route}"
        )
    };
    let gw = Gateway::start(&config("", 5000), None).await;
    // One client connection: its requests are served by one worker, whose pool is the one reused.
    // Each request waits for the last to settle (the client's and the gateway's pooled
    // connections ready again), so no connection is opened only because one was still busy.
    let client = HttpClient::http1();
    let settle = || tokio::time::sleep(Duration::from_millis(100));
    assert_eq!(client.get(&gw.url("/a")).await.status, 200);
    settle().await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    let with_b = config("[[routes]]\npath = \"/b\"\nupstream = \"kept\"\n", 5000);
    assert_eq!(gw.reload(&with_b, None).await.expect("reload"), 2);
    assert_eq!(client.get(&gw.url("/b")).await.status, 200, "the new route answers");
    settle().await;
    assert_eq!(client.get(&gw.url("/a")).await.status, 200);
    settle().await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the unchanged upstream's pooled connection was reused");

    let slower = config("[[routes]]\npath = \"/b\"\nupstream = \"kept\"\n", 6000);
    assert_eq!(gw.reload(&slower, None).await.expect("reload"), 3);
    assert_eq!(client.get(&gw.url("/a")).await.status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a changed upstream is built anew, with new connections");
    backend.abort();
    gw.stop().await;
}
