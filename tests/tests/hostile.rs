//! Hostile plugins: one that panics, one that loops forever, one that allocates without bound.
//! Each is contained: its route answers 500 with a request id (or passes, when failing open),
//! other routes keep answering 200 during and after, and the pool recovers. Components importing
//! what they are not granted (files) or what is never linked (WASI sockets) are refused at load.

use std::time::{Duration, Instant};

use airlock_tests::{Gateway, HttpClient, Upstream, metric_value};

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

/// A call that fails open is skipped, so what it changed before failing is undone: the request
/// goes upstream as it was (an auth plugin's tentative `x-user` must not leak past its trap), and
/// the response reaches the client as the earlier phases left it.
#[tokio::test]
async fn a_call_failing_open_leaves_no_half_made_changes() {
    let upstream = Upstream::start().await;
    let mut config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n".to_owned();
    config += &airlock_tests::hostile_plugin("half");
    for (path, mode) in [("/half-request", "set-then-panic"), ("/half-response", "response-then-panic")] {
        config += &format!("{}failure = \"open\"\n", hostile_route(path, "half", &format!("{{ mode = \"{mode}\" }}")));
    }
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/half-request")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/half-request", "the path as the client sent it");
    assert!(r.upstream_header("x-set-before-panic").is_empty(), "{}", r.text());
    assert!(r.header("x-edit-before-panic").is_none(), "its response edit dropped");
    let r = client.get(&gw.url("/half-response")).await;
    assert_eq!(r.status, 200, "the upstream's status, not the failed call's 418");
    assert!(r.header("x-set-before-panic").is_none());
    let failed = metric_value(&gw, "airlock_plugin_failures_total", &[("plugin", "half"), ("kind", "trap")]).await;
    assert_eq!(failed, 2.0);
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
    // Sharing a worker with two looping calls, a healthy request waits about one slice (an
    // epoch tick) per I/O event it needs: well over a hundred answers in 1.5 s. Were the
    // loops' yields to skip the worker's I/O driver, each event would wait ~60 slices, and
    // barely ten would be answered. The bound sits between the two, nearer starvation: a CI
    // run sharing its two cores with a compile once gave 36.
    assert!(healthy > 20, "healthy route starved: only {healthy} answers in 1.5 s");
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

/// A plugin granted `files` that opens files and never closes them is not kept warm holding
/// them: past `MAX_IDLE_TABLE_ENTRIES` (64) resources its instance is dropped after the call,
/// closing them. Before, its warm instances held what they opened while idle (16 of them
/// ~12,000 files), and three such plugins used up the process's open-file limit.
#[tokio::test]
async fn files_a_plugin_leaves_open_are_not_held_while_it_idles() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("data.txt"), "line\n").expect("write");
    let config = format!(
        "[upstreams.backend]\ntargets = [\"{{upstream}}\"]\n\n[plugins.leaky]\nsource = \"{{plugin:reads-file}}\"\ncapabilities = [\"files\"]\nfiles = {{ dir = \"{}\" }}\n\n[[routes]]\npath = \"/leak\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"leaky\"\n",
        dir.path().display()
    );
    let gw = airlock_tests::process::GatewayProcess::start(&config, &upstream, &[]).await;
    let open_fds = || std::fs::read_dir(format!("/proc/{}/fd", gw.pid())).map_or(0, Iterator::count);
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/leak"), &[("x-path", "/data.txt")], b"").await;
    assert_eq!((r.status.as_u16(), r.upstream_header("x-file")), (200, vec!["line".to_owned()]), "{}", r.text());
    let before = open_fds();
    for _ in 0..20 {
        let r = client.request("GET", &gw.url("/leak"), &[("x-path", "/data.txt"), ("x-leak", "200")], b"").await;
        assert_eq!((r.status.as_u16(), r.upstream_header("x-leaked")), (200, vec!["200".to_owned()]), "{}", r.text());
    }
    let after = open_fds();
    assert!(after < before + 100, "{before} descriptors open before, {after} after 20 calls leaving 200 files each open");
    drop(gw);
}

/// A granted directory holding a named pipe is refused at load, naming it: a plugin opening the
/// pipe would wait for a writer on one of the gateway's blocking threads long after its call
/// failed, and ~1,000 such calls starved every plugin's file access and every upstream's name
/// lookup (`/ready` still ready). Regular files and subdirectories are fine.
#[tokio::test]
async fn a_granted_directory_holding_a_named_pipe_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::fs::write(dir.path().join("sub/data.txt"), "line\n").expect("write");
    let config = format!(
        "[plugins.reader]\nsource = \"{{plugin:reads-file}}\"\ncapabilities = [\"files\"]\nfiles = {{ dir = \"{}\" }}\n\n[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"reader\"\n",
        dir.path().display()
    );
    let gw = Gateway::try_start(&config, None).await.unwrap_or_else(|e| panic!("regular files are fine: {e}"));
    gw.stop().await;
    let made = std::process::Command::new("mkfifo").arg(dir.path().join("sub/pipe")).status().expect("mkfifo");
    assert!(made.success());
    let err = Gateway::try_start(&config, None).await.err().expect("a named pipe in the grant").to_string();
    assert!(err.contains("plugins.reader.files.dir") && err.contains("holds `sub/pipe`, a named pipe (FIFO)"), "{err}");
}

/// A granted directory too large to check whole (past 10,000 entries) is served, with a
/// warning naming it: a named pipe past what was checked would not be caught.
#[tokio::test]
async fn a_granted_directory_too_large_to_check_whole_is_warned_of() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..10_001 {
        std::fs::write(dir.path().join(format!("f{i}")), "").expect("write");
    }
    let config = format!(
        "[plugins.reader]\nsource = \"{{plugin:reads-file}}\"\ncapabilities = [\"files\"]\nfiles = {{ dir = \"{}\" }}\n\n[upstreams.backend]\ntargets = [\"{{upstream}}\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"reader\"\n",
        dir.path().display()
    );
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &upstream, &[]).await;
    let log = gw.log();
    let warning = log.lines().find(|l| l.contains("holds more than 10000 entries")).unwrap_or_else(|| panic!("no warning in {log}"));
    assert!(warning.contains(&dir.path().display().to_string()), "{warning}");
}

/// Every instance's memory together is held to `runtime.plugin_memory_mb` (by default half the
/// machine's): a plugin growing past what is left fails its call (out of memory, the log naming
/// the budget), though within its own 64 MiB cap, and what its instance held is given back, so
/// other plugins go on being served. Before, only each instance was capped, and 512 of them at
/// 64 MiB could take 32 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instances_memory_together_is_held_to_the_budget() {
    let upstream = Upstream::start().await;
    let config = HOSTILE.replace("memory_mb = 16", "memory_mb = 64\nplugin_memory_mb = 24");
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &upstream, &[]).await;
    let client = HttpClient::http1();
    for _ in 0..3 {
        assert_fails_closed(&client, &gw.url("/alloc")).await;
        let r = client.get(&gw.url("/healthy")).await;
        assert_eq!((r.status.as_u16(), r.upstream_header("x-healthy")), (200, vec!["yes".to_owned()]), "{}", r.text());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.log();
    assert!(log.contains("the plugins' memory budget of 24 MiB (runtime.plugin_memory_mb) is used up"), "{log}");
    assert!(!log.contains("memory cap of 64 MiB exceeded"), "the budget, not the instance's cap, stopped it");
}

/// Sends `GET path` on a new connection to `addr` and returns the response head as text.
async fn raw_response_head(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.expect("read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

/// The hostile plugin in `mode`, as a chain entry on route `path`.
fn hostile_route(path: &str, plugin: &str, config: &str) -> String {
    format!("\n[[routes]]\npath = \"{path}\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"{plugin}\"\nconfig = {config}\n")
}

/// Resident memory of this process (the in-process gateway's), in MiB.
fn rss_mib() -> u64 {
    rss_mib_of("self")
}

/// Resident memory of process `pid` (a number, or `self`), in MiB.
fn rss_mib_of(pid: impl std::fmt::Display) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursion_floods_host_waits_and_the_environment_are_contained() {
    // A server that accepts connections and never answers: what a plugin waits on forever.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hole = black_hole.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = black_hole.accept().await {
            open.push(s);
        }
    });
    let upstream = Upstream::start().await;
    let up = upstream.addr;
    let mut config = r#"
[runtime]
cpu_ms = 50
memory_mb = 16

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/healthy"
upstream = "backend"
"#
    .to_owned();
    // The component imports `http-client`, so every definition grants it (only the waiter and the
    // crafter use it); the origins are a black hole and the upstream.
    for (name, origin, timeout) in [("waiter", hole, 300), ("crafter", up, 5000), ("recursion", hole, 300), ("flood", hole, 300), ("calls", hole, 300)] {
        config += &format!(
            "\n[plugins.{name}]\nsource = \"{{plugin:hostile}}\"\ncapabilities = [\"http-client\"]\nhttp_client = {{ allow = [\"http://{origin}\"], timeout_ms = {timeout} }}\n"
        );
    }
    config += &hostile_route("/recursion", "recursion", r#"{ mode = "recursion" }"#);
    config += &hostile_route("/response-headers", "flood", r#"{ mode = "response-headers", count = 1000 }"#);
    config += &hostile_route("/request-headers", "flood", r#"{ mode = "request-headers", count = 1000000 }"#);
    config += &hostile_route("/request-headers-1000", "flood", r#"{ mode = "request-headers", count = 1000 }"#);
    config += &hostile_route("/host-calls", "calls", r#"{ mode = "host-calls" }"#);
    config += &hostile_route("/digest-loop", "calls", r#"{ mode = "digest-loop" }"#);
    config += &hostile_route("/env", "flood", r#"{ mode = "env" }"#);
    config += &hostile_route("/response-edits", "flood", r#"{ mode = "response-edits", count = 1000 }"#);
    config += &hostile_route("/context-flood", "flood", r#"{ mode = "context-flood", count = 1000 }"#);
    config += &hostile_route("/edit-flood", "flood", r#"{ mode = "edit-flood" }"#);
    config += &hostile_route("/edit-flood-1000", "flood", r#"{ mode = "edit-flood", count = 1000 }"#);
    config += &hostile_route("/wait", "waiter", &format!(r#"{{ mode = "wait-on-host", url = "http://{hole}/" }}"#));
    config += &hostile_route("/crafted", "crafter", &format!(r#"{{ mode = "crafted-host", url = "http://{up}/echo", host = "evil.example" }}"#));
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();

    // The environment is empty and there are no arguments: nothing of the gateway's leaks in.
    let env = client.get(&gw.url("/env")).await;
    assert_eq!((env.header("x-env-count").as_deref(), env.header("x-args-count").as_deref()), (Some("0"), Some("0")));
    // A crafted Host header cannot redirect an outbound call: the granted origin is the Host.
    let crafted = client.get(&gw.url("/crafted")).await;
    assert_eq!(crafted.status, 200, "{}", crafted.text());
    assert_eq!(crafted.json()["headers"]["host"], serde_json::json!([up.to_string()]));

    let baseline = rss_mib();
    for round in 0..3 {
        // Stack overflow and a host-call flood: stopped at the trap and at the CPU deadline.
        for path in ["/recursion", "/host-calls"] {
            assert_fails_closed(&client, &gw.url(path)).await;
        }
        // Host work with no epoch check in it (a digest of 8 MiB, again and again): charged to
        // the call, cut at the CPU deadline like guest code.
        let started = Instant::now();
        assert_fails_closed(&client, &gw.url("/digest-loop")).await;
        assert!(started.elapsed() < Duration::from_secs(5), "round {round}: held {:?} by host work", started.elapsed());
        // Waiting on the host again and again: cut at the CPU deadline plus one wait (350 ms).
        let started = Instant::now();
        assert_fails_closed(&client, &gw.url("/wait")).await;
        assert!(started.elapsed() < Duration::from_secs(2), "round {round}: held {:?} by host waits", started.elapsed());
        // Response edits: invalid ones ignored, a flood cut where the response reaches
        // `limits.max_response_headers` (100): the upstream's three lines, the gateway's `via`
        // and `x-request-id` (on the response before its plugins' changes) and 95 edits. The
        // upstream's answer still goes out, with only `connection` past the 100.
        let head = raw_response_head(gw.addr(), "/response-edits").await;
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {}", &head[..head.len().min(200)]);
        let lines: Vec<String> = head.lines().skip(1).map(str::to_ascii_lowercase).collect();
        let edited = lines.iter().filter(|l| l.starts_with("x-edit:")).count();
        let own = lines.iter().filter(|l| ["via:", "x-request-id:", "connection:"].iter().any(|p| l.starts_with(p))).count();
        assert_eq!((edited, lines.len() - own + 2), (95, 100), "round {round}: {lines:?}");
        assert!(!head.contains("x-split") && !head.contains("bad name"));
        // A plugin-made response with 1000 headers: sent with the first 100.
        let head = raw_response_head(gw.addr(), "/response-headers").await;
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {}", &head[..head.len().min(200)]);
        assert_eq!(head.lines().filter(|l| l.starts_with("x-flood-")).count(), 100, "round {round}");
        assert!(head.contains("\r\nx-flood-99: v") && !head.contains("x-flood-100:"));
        // 1000 request headers appended: those past `limits.max_headers` (100 lines) are not
        // made, and the request is not sent on without them: the gateway's 431.
        let r = client.get(&gw.url("/request-headers-1000")).await;
        assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (431, Some("headers_too_large")), "round {round}: {}", r.text());
        // 1,000,000 host calls to do it (100,000 take ~30 ms in a release build, inside the
        // 50 ms deadline): stopped at the CPU deadline, a 5xx, not a broken connection.
        let r = client.get(&gw.url("/request-headers")).await;
        assert!(r.status.is_server_error(), "round {round}: {}", r.status);
        // The request's context lives outside the plugin's memory cap: a 1 MiB value is refused,
        // and 1000 values of 1 KiB stop at 64 KiB (63 of them, with their keys).
        let r = client.get(&gw.url("/context-flood")).await;
        assert_eq!((r.status.as_u16(), r.text().trim()), (200, "big=false kept=63"), "round {round}");
        // 3000 changes in batched `request.edit` calls, a third of them invalid: each held to its
        // own method's rules (context keys kept, header lines up to `limits.max_headers`, as
        // the appends above).
        let r = client.get(&gw.url("/edit-flood-1000")).await;
        assert_eq!((r.status.as_u16(), r.text().trim()), (200, "kept=16 lines=93"), "round {round}");
        // 3,000,000 of them: stopped at the CPU deadline like any host-call flood.
        let r = client.get(&gw.url("/edit-flood")).await;
        assert!(r.status.is_server_error(), "round {round}: {}", r.status);
        assert_eq!(client.get(&gw.url("/healthy")).await.status, 200, "round {round}");
    }
    let failures = |plugin: &'static str, kind: &'static str| {
        let gw = &gw;
        async move { metric_value(gw, "airlock_plugin_failures_total", &[("plugin", plugin), ("kind", kind)]).await }
    };
    assert_eq!(failures("recursion", "trap").await, 3.0);
    assert_eq!(failures("calls", "deadline").await, 6.0, "host calls and digests, three rounds each");
    assert_eq!(failures("waiter", "deadline").await, 3.0);
    // Memory comes back: discarded instances are freed (a loose bound: allocator slack, not leaks).
    let after = rss_mib();
    assert!(after < baseline + 128, "RSS grew from {baseline} MiB to {after} MiB");
    gw.stop().await;
    held.abort();
}

/// A loopback listener that counts the connections it accepts (and holds them open).
struct CountingListener {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingListener {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                open.push(stream);
            }
        });
        Self { addr, accepted, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_importing_wasi_sockets_is_refused_and_never_connects() {
    let target = CountingListener::start().await;
    let upstream = Upstream::start().await;
    // Even granted everything grantable (`files` is also imported: std's networking pulls it in),
    // sockets are never linked.
    let dir = tempfile::tempdir().expect("tempdir");
    let sockets_config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.sockets]
source = "{{plugin:sockets}}"
capabilities = ["files", "http-client", "state", "metrics"]
files = {{ dir = "{dir}" }}
http_client = {{ allow = ["http://{target}"] }}

[[routes]]
path = "/healthy"
upstream = "backend"

[[routes]]
path = "/connect"
upstream = "backend"
[[routes.plugins]]
plugin = "sockets"
config = {{ target = "{target}" }}
"#,
        dir = dir.path().display(),
        target = target.addr,
    );
    let rendered = airlock_tests::render(&sockets_config, Some(&upstream));
    std::fs::write(dir.path().join("airlock.toml"), &rendered).expect("write config");

    // The component really asks for sockets: `airlock inspect` lists the imports as never granted.
    let sockets_wasm = airlock_tests::guest_plugin_paths().into_iter().find(|(name, _)| *name == "sockets").expect("built").1;
    let inspect = std::process::Command::new(airlock_tests::airlock_binary()).args(["inspect", &sockets_wasm]).output().expect("inspect");
    let listing = String::from_utf8_lossy(&inspect.stdout);
    assert!(listing.contains("wasi:sockets/tcp@"), "{listing}");
    assert!(listing.contains("(never: network sockets are never available to plugins)"), "{listing}");
    // And says so up front, where its summary lists what it asks for.
    let refused = listing.lines().find(|l| l.starts_with("refused:")).unwrap_or_default();
    assert!(refused.contains("never grants") && refused.contains("wasi:sockets/tcp@"), "{listing}");

    // `airlock check` refuses the config, naming the plugin and the import.
    let check = std::process::Command::new(airlock_tests::airlock_binary())
        .args(["check", "-c", "airlock.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "off")
        .output()
        .expect("airlock check");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "accepted: {stderr}");
    assert!(stderr.contains("plugins.sockets.source"), "{stderr}");
    assert!(stderr.contains("plugin `sockets`"), "{stderr}");
    assert!(stderr.contains("wasi:sockets/"), "{stderr}");
    assert!(stderr.contains("never grants"), "{stderr}");

    // A running gateway keeps answering, under load, while a gateway with the plugin is refused
    // at start (the same load as `airlock run` does).
    let gw = Gateway::start("[upstreams.backend]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath = \"/healthy\"\nupstream = \"backend\"\n", Some(&upstream)).await;
    let client = HttpClient::http1();
    let url = gw.url("/healthy");
    let load = tokio::spawn({
        let client = client.clone();
        async move {
            let mut ok = 0;
            for _ in 0..50 {
                ok += usize::from(client.get(&url).await.status == 200);
            }
            ok
        }
    });
    for _ in 0..3 {
        let err = Gateway::try_start(&sockets_config, Some(&upstream)).await.err().expect("must be refused").to_string();
        assert!(err.contains("plugin `sockets`"), "{err}");
        assert!(err.contains("wasi:sockets/"), "{err}");
    }
    assert_eq!(load.await.expect("load"), 50, "the running gateway kept answering");
    // Reloading the running gateway onto it is refused the same way; the old config keeps serving.
    let err = gw.reload(&sockets_config, Some(&upstream)).await.expect_err("must be refused").to_string();
    assert!(err.contains("plugin `sockets`") && err.contains("wasi:sockets/"), "{err}");
    assert_eq!(client.get(&gw.url("/healthy")).await.status, 200);

    // Nothing ever connected: not at inspect, check, or start (configure never ran).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(target.accepted(), 0, "a connection reached the listener");
    // The listener is real: a connection from here is counted.
    let _probe = tokio::net::TcpStream::connect(target.addr).await.expect("connect");
    let counted = Instant::now();
    while target.accepted() == 0 && counted.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(target.accepted(), 1);
    gw.stop().await;
}

/// A gateway config whose route `path` runs the hostile plugin's `log-flood` mode, `count`
/// lines of each kind per call.
fn log_flood_config(path: &str, count: u32) -> String {
    format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.logger]
source = "{{plugin:hostile}}"
capabilities = ["http-client"]
http_client = {{ allow = ["http://127.0.0.1:9"] }}

[[routes]]
path = "{path}"
upstream = "backend"
[[routes.plugins]]
plugin = "logger"
config = {{ mode = "log-flood", count = {count} }}
"#
    )
}

/// A plugin that logs in a loop (its own lines, stderr, bad input the host warns about, and an
/// answer full of invalid headers) causes at most `MAX_LOG_LINES_PER_CALL` log lines per call,
/// not one per iteration, and its answer still goes out.
#[tokio::test]
async fn a_plugin_logging_in_a_loop_gets_a_bounded_number_of_lines() {
    let upstream = Upstream::start().await;
    let gw = airlock_tests::process::GatewayProcess::start_logging(&log_flood_config("/flood", 500), &upstream, &[]).await;
    let client = HttpClient::http1();
    let limit = airlock::runtime::host::log::MAX_LOG_LINES_PER_CALL as usize;
    for round in 1..=2 {
        let r = client.get(&gw.url("/flood")).await;
        assert_eq!(r.status, 200, "round {round}: {}\n{}", r.text(), gw.log());
        assert_eq!(r.text(), "", "the plugin's own answer (its 500 invalid headers dropped), not the upstream's");
        // The log is written as the call runs; give the file a moment to settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = gw.log();
        let lines = log.lines().filter(|l| l.contains("\"logger\"")).count();
        assert_eq!(lines, limit * round, "round {round}: each call's lines stop at the limit (the last saying so)\n{log}");
        assert_eq!(log.matches("log line limit").count(), round, "one line per call says the rest are dropped");
        // Every line the call caused (its own, the gateway's warnings about it, the limit's)
        // names the request it served.
        let id = r.header("x-request-id").expect("a request id");
        let named = log.lines().filter(|l| l.contains("\"logger\"") && l.contains(&format!("\"{id}\""))).count();
        assert_eq!(named, limit, "round {round}: each of this call's lines names request {id}\n{log}");
    }
}

/// What a plugin hands the host is the plugin's text: the gateway's warnings about values it
/// refuses show their first 256 bytes, escaped (a value of megabytes made each line megabytes, a
/// plugin granted nothing wrote gigabytes of log in seconds, and a line break in it started a
/// line that read as the gateway's own). One `wasi:random` call is held to 64 KiB (wasmtime's 64
/// MiB were made in one step no deadline checks, outside the memory cap): past it, a trap.
#[tokio::test]
async fn a_plugins_values_are_cut_in_warnings_and_random_calls_are_bounded() {
    let upstream = Upstream::start().await;
    let mut config = log_flood_config("/long", 1).replace("mode = \"log-flood\", count = 1", "mode = \"long-values\", count = 4000000");
    config += &hostile_route("/random-ok", "logger", r#"{ mode = "random-bytes", count = 65536 }"#);
    config += &hostile_route("/random-big", "logger", r#"{ mode = "random-bytes", count = 65537 }"#);
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &upstream, &[]).await;
    let client = HttpClient::http1();
    let before = gw.log().len();
    let r = client.get(&gw.url("/long")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.log();
    let written = &log[before..];
    assert!(written.len() < 64 * 1024, "{} bytes of log for one request", written.len());
    let warned = written.lines().filter(|l| l.contains("\"logger\"")).count();
    assert!(warned >= 5, "each refused value warned about: {written}");
    assert!(written.contains("outbound call failed"), "the call's URL is quoted too: {written}");
    for line in written.lines() {
        assert!(line.len() < 4096, "a line of {} bytes: {}", line.len(), &line[..200]);
        assert!(!line.starts_with("2026-01-01") && !line.trim_start().starts_with("ERROR airlock: FORGED"), "a forged line: {line}");
    }

    let ok = client.get(&gw.url("/random-ok")).await;
    assert_eq!((ok.status.as_u16(), ok.header("x-random-bytes").as_deref()), (200, Some("65536")));
    assert_fails_closed(&client, &gw.url("/random-big")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gw.log().contains("exceeds limit 65536"), "the trap says why");
}

/// Lines a plugin writes while it is configured serve no request: they carry no `request_id`
/// field at all, rather than an empty one an operator would search for.
#[tokio::test]
async fn lines_written_while_configuring_name_no_request() {
    let upstream = Upstream::start().await;
    let config = log_flood_config("/configure", 1).replace("log-flood", "configure-log");
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &upstream, &[]).await;
    let log = gw.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("configure-time")).collect();
    assert!(lines.len() >= 2, "the plugin's warning and its stderr line are logged\n{log}");
    for line in lines {
        assert!(line.contains("\"logger\""), "{line}");
        assert!(!line.contains("request_id"), "no request is being served: {line}");
    }
}

/// A plugin's refusal of its config is its own text, shown by `check`, start-up and a reload's
/// log and answer: on one line (its line breaks, CR and ESC escaped) and cut to 4 KiB, as its
/// log lines are. Before, a refusal could forge whole lines of the gateway's log, colour the
/// operator's terminal, and a 1 MB one made a 1 MB log record and a 2 MB reload answer.
#[tokio::test]
async fn a_plugins_config_refusal_is_one_line_and_bounded() {
    let config = log_flood_config("/configure", 1_000_000).replace("log-flood", "configure-refuse").replace("{upstream}", "127.0.0.1:9");
    let err = match Gateway::try_start(&config, None).await {
        Ok(_) => panic!("a plugin refusing its config was loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(r"refused\n2026-01-01T00:00:00Z ERROR airlock: FORGED\r\n\u{1b}[31mred"), "escaped: {}", &err[..err.len().min(300)]);
    // The gateway's own message goes on with the config line it points at; the plugin's part
    // is all on the first line.
    assert!(!err.contains(['\r', '\u{1b}']), "raw control characters: {}", &err[..err.len().min(300)]);
    assert!(err.lines().next().is_some_and(|first| first.contains("FORGED") && first.ends_with("xxxx")), "{}", &err[..err.len().min(300)]);
    assert!(!err.lines().any(|line| line.starts_with("2026-01-01")), "a forged line");
    assert!(err.len() < 5000, "cut: {} bytes", err.len());
}

/// A plugin that waits while it is configured (a sleep; outbound calls one after another) is held
/// to a wall-clock limit (its CPU deadline plus a wait of each kind it may make, here 100 ms +
/// 5 s of `http-client`): the config is refused, naming the plugin, where start-up (and
/// `airlock check`, and a reload) hung with nothing logged.
#[tokio::test]
async fn a_plugin_waiting_while_it_is_configured_is_refused_in_time() {
    let config = log_flood_config("/configure", 1).replace("log-flood", "configure-sleep").replace("{upstream}", "127.0.0.1:9");
    let started = Instant::now();
    let err = match tokio::time::timeout(Duration::from_secs(30), Gateway::try_start(&config, None)).await {
        Ok(Ok(_)) => panic!("a plugin sleeping an hour in configure was loaded"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("start-up hung on a plugin sleeping in configure"),
    };
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(err.contains("logger") && err.contains("wall-clock"), "{err}");
}

/// A plugin that writes the same warning in every call (as auth plugins do while their service
/// is down) is logged once per `REPEAT_WINDOW`, however many calls and instances write it: a
/// line per request would bury the log. Its other lines (stderr) are not merged.
#[tokio::test]
async fn a_warning_every_call_repeats_is_logged_once_per_window() {
    let upstream = Upstream::start().await;
    let gw = airlock_tests::process::GatewayProcess::start_logging(&log_flood_config("/warn", 1), &upstream, &[]).await;
    let client = HttpClient::http1();
    // Concurrent calls, so several instances write it too.
    let calls = (0..24).map(|_| {
        let (client, url) = (client.clone(), gw.url("/warn"));
        tokio::spawn(async move { client.get(&url).await.status })
    });
    for call in calls {
        assert_eq!(call.await.expect("call"), 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.log();
    assert_eq!(log.matches("flood line 0").count(), 1, "one warning for 24 calls within the window\n{log}");
    // (eprintln! writes "stderr line " and "0" apart: each write is a line of the log.)
    assert_eq!(log.matches("stderr line").count(), 24, "stderr lines are each the call's own\n{log}");
}

/// A plugin answering with a 1xx status: no final answer, so the client gets a 500 over
/// HTTP/1.1 and HTTP/2 (not a 101 with no protocol behind it, nor a reset stream), a WebSocket
/// handshake gets that 500 too, and the gateway serves on.
#[tokio::test]
async fn a_plugin_answering_an_informational_status_gets_the_client_a_500() {
    let upstream = Upstream::start().await;
    let mut config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath = \"/healthy\"\nupstream = \"backend\"\n".to_owned();
    config += &airlock_tests::hostile_plugin("status");
    config += &hostile_route("/101", "status", r#"{ mode = "status", count = 101 }"#);
    config += &hostile_route("/103", "status", r#"{ mode = "status", count = 103 }"#);
    config += &hostile_route("/204", "status", r#"{ mode = "status", count = 204 }"#);
    config += &hostile_route("/1000", "status", r#"{ mode = "status", count = 1000 }"#);
    config += &hostile_route("/999", "status", r#"{ mode = "status", count = 999 }"#);
    // The same plugin failing open: an invalid answer is its failure, so the entry is skipped.
    config += &airlock_tests::hostile_plugin("status-open").replace("[plugins.status-open]", "[plugins.status-open]\nfailure = \"open\"");
    config += &hostile_route("/open-999", "status-open", r#"{ mode = "status", count = 999 }"#);
    let gw = Gateway::start(&config, Some(&upstream)).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        for path in ["/101", "/103", "/999", "/1000"] {
            let r = client.get(&gw.url(path)).await;
            assert_eq!(r.status, 500, "{path}: {}", r.text());
            // The gateway's own answer, as for any plugin failure: not the plugin's headers and
            // body under another status, which would pass for a deliberate answer.
            assert_eq!(r.json()["error"], "plugin_failed", "{path}: {}", r.text());
            assert_eq!(r.json()["request_id"].as_str(), r.header("x-request-id").as_deref(), "{path}");
        }
        assert_eq!(client.get(&gw.url("/204")).await.status, 204, "a final status is kept");
    }
    let handshake = tokio_tungstenite::connect_async(format!("ws://{}/101", gw.addr())).await;
    match handshake {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 500),
        other => panic!("expected a 500 handshake, got {other:?}"),
    }
    assert_eq!(HttpClient::http1().get(&gw.url("/healthy")).await.status, 200);
    // Counted as the plugin's failures (9 answers and the handshake), as the 500 says.
    let failures = metric_value(&gw, "airlock_plugin_failures_total", &[("plugin", "status"), ("kind", "invalid_status")]).await;
    assert_eq!(failures, 9.0);
    let r = HttpClient::http1().get(&gw.url("/open-999")).await;
    assert_eq!(r.status, 200, "failing open, the upstream answers: {}", r.text());
    assert_eq!(metric_value(&gw, "airlock_plugin_failures_total", &[("plugin", "status-open"), ("kind", "invalid_status")]).await, 1.0);
    gw.stop().await;
}

/// A plugin failing closed gets the client the gateway's 500, with the response headers the
/// entries before it asked for (CORS, a `headers` plugin's), as a 502 has them: without CORS a
/// browser reads the 500 as a CORS failure. In the request phase, and in the response phase,
/// where the entries whose response phase had not run yet still make theirs.
#[tokio::test]
async fn a_plugin_failing_closed_keeps_the_headers_earlier_entries_asked_for() {
    let upstream = Upstream::start().await;
    let mut config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n".to_owned();
    config += &airlock_tests::hostile_plugin("failing");
    for (path, mode) in [("/request-phase", r#"{ mode = "status", count = 999 }"#), ("/response-phase", r#"{ mode = "response-then-panic" }"#)] {
        config += &format!(
            r#"
[[routes]]
path = "{path}"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:cors"
config = {{ origins = ["https://app.example.com"] }}
[[routes.plugins]]
plugin = "builtin:headers"
config = {{ response = {{ set = {{ "x-served-by" = "edge-1" }} }} }}
[[routes.plugins]]
plugin = "failing"
config = {mode}
"#
        );
    }
    let gw = Gateway::start(&config, Some(&upstream)).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        for path in ["/request-phase", "/response-phase"] {
            let r = client.request("GET", &gw.url(path), &[("origin", "https://app.example.com")], b"").await;
            assert_eq!(r.status, 500, "{path}: {}", r.text());
            assert_eq!(r.json()["error"], "plugin_failed", "{path}: {}", r.text());
            assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"), "{path}: {:?}", r.headers);
            assert_eq!(r.header("x-served-by").as_deref(), Some("edge-1"), "{path}");
            // Not what the failed call set before it panicked.
            assert_eq!(r.header("x-set-before-panic"), None, "{path}");
        }
    }
    gw.stop().await;
}

/// A plugin cannot set a message's framing or its connection's management (`Content-Length`,
/// `Transfer-Encoding`, `Connection`, `Keep-Alive`, `Upgrade`): before, a request with them
/// hung (the upstream waited for a body the `Content-Length` promised), a `Content-Length`
/// shorter than a response's body split it on the client's kept-alive connection (hyper trusts
/// the header in release builds and asserts in debug ones), and `Upgrade: h2c` reached the
/// upstream. They are ignored and logged; the plugin's other headers apply, and each next
/// request on the same connection gets its own answer. The built-in plugins refuse them in
/// their config.
#[tokio::test]
async fn a_plugin_cannot_set_framing_or_connection_headers() {
    let upstream = Upstream::start().await;
    let mut config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n".to_owned();
    config += &airlock_tests::hostile_plugin("managed");
    config += &hostile_route("/edited", "managed", r#"{ mode = "managed-headers" }"#);
    config += "\n[[routes]]\npath = \"/answered\"\n[[routes.plugins]]\nplugin = \"managed\"\nconfig = { mode = \"managed-headers\", count = 1 }\n";
    let gw = Gateway::start(&config, Some(&upstream)).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        for round in 0..3 {
            let r = client.get(&gw.url("/edited")).await;
            assert_eq!(r.status, 200, "round {round}");
            assert_eq!(r.header("x-kept").as_deref(), Some("resp"), "the plugin's other headers apply");
            for name in ["transfer-encoding", "upgrade", "keep-alive", "proxy-connection"] {
                assert!(r.header(name).is_none(), "{name} reached the client: {:?}", r.headers);
            }
            assert_ne!(r.header("content-length").as_deref(), Some("5"));
            assert_ne!(r.header("connection").as_deref(), Some("upgrade, x-kept"));
            let echo: serde_json::Value = serde_json::from_str(&r.text()).expect("the whole body, as JSON");
            let sent = &echo["headers"];
            assert_eq!(sent["x-kept"], serde_json::json!(["req"]), "{echo}");
            for name in ["content-length", "transfer-encoding", "connection", "upgrade", "keep-alive", "proxy-connection"] {
                assert!(sent.get(name).is_none(), "{name} reached the upstream: {echo}");
            }

            let r = client.get(&gw.url("/answered")).await;
            assert_eq!(r.status, 200, "round {round}");
            assert_eq!(r.text(), "answered by the plugin");
            assert_eq!(r.header("x-kept").as_deref(), Some("respond"));
            assert!(r.header("upgrade").is_none() && r.header("transfer-encoding").is_none());
        }
    }
    gw.stop().await;

    // The built-in plugins refuse them in their config, naming the key.
    let refused = "[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:headers\"\nconfig = { response = { set = { \"Content-Length\" = \"5\" } } }\n";
    let error = Gateway::try_start(refused, None).await.err().expect("refused").to_string();
    assert!(error.contains("`response.set.content-length`: `content-length` is set by the gateway"), "{error}");
}

/// `request.edit` called as a plugin without the SDK can (the SDK sends at most 16 changes a
/// call): one call with every kind of change, a 5 KB name, a value past 64 KiB, an invalid name
/// and 300 context values gets each change made as its own method makes it, and stops at 256
/// changes. The same again on the same instance, and on a second connection.
#[tokio::test]
async fn a_raw_edit_call_makes_each_change_by_its_own_rules() {
    let upstream = Upstream::start().await;
    let mut config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n".to_owned();
    config += &airlock_tests::hostile_plugin("raw");
    config += &hostile_route("/raw", "raw", r#"{ mode = "raw-edit" }"#);
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let long = format!("x-long-{}", "a".repeat(5000));
    for client in [HttpClient::http1(), HttpClient::http1()] {
        for round in 0..3 {
            let r = client.request("GET", &gw.url("/raw"), &[("x-drop", "1"), ("x-two", "0")], b"").await;
            assert_eq!(r.status, 200, "round {round}: {}", r.text());
            assert_eq!(r.upstream_header(&long), ["long"], "a long name is a name");
            assert!(r.upstream_header("x-big").is_empty(), "a value past 64 KiB is refused");
            assert_eq!(r.upstream_header("x-two"), ["0", "1", "2"], "appended in order, either spelling");
            assert!(r.upstream_header("x-drop").is_empty(), "removed");
            // 15 changes before the context values: 241 of the 300 made, the last "240".
            assert_eq!(r.upstream_header("x-context"), ["raw|-|240"], "round {round}");
            assert_eq!(r.header("x-resp").as_deref(), Some("1"));
            assert_eq!(r.header("x-add").as_deref(), Some("a"));
            assert_eq!(r.header("x-app").as_deref(), Some("1"));
            assert!(r.header_all("vary").iter().any(|v| v.contains("x-raw")), "{:?}", r.headers);
            assert_eq!((r.header("content-type"), r.header("x-renamed-type").as_deref()), (None, Some("application/json")));
        }
    }
    gw.stop().await;
}

/// A panic's message reaches the failure report (and so `check`'s error for a panic in
/// `configure`), not only the plugin's separate stderr lines; Rust's `RUST_BACKTRACE` hint,
/// which no one can act on in a plugin, is not logged.
#[tokio::test]
async fn a_panics_message_is_in_the_failure_report() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[plugins.panic]
source = "{plugin:panic}"

[[routes]]
path = "/panic"
upstream = "backend"
[[routes.plugins]]
plugin = "panic"
"#
    .to_owned()
        + &airlock_tests::hostile_plugin("exits")
        + &hostile_route("/exit", "exits", r#"{ mode = "exit", count = 3 }"#);
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &upstream, &[]).await;
    let r = HttpClient::http1().get(&gw.url("/panic")).await;
    assert_eq!(r.status, 500);
    assert!(!r.text().contains("on purpose"), "the client learns nothing of it: {}", r.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.log();
    let report = log.lines().find(|l| l.contains("trapped")).unwrap_or_else(|| panic!("no failure line\n{log}"));
    assert!(report.contains("panics on purpose") && report.contains("panicked at"), "{report}");
    assert!(!log.contains("RUST_BACKTRACE"), "{log}");
    // Said once as the plugin's own stderr and once in its failure line; the request's 5xx line
    // names the kind without repeating it (a failing plugin's output had been logged three times
    // per request).
    assert_eq!(log.matches("panics on purpose").count(), 2, "{log}");
    let answered = log.lines().find(|l| l.contains("status=500")).unwrap_or_else(|| panic!("no 5xx line\n{log}"));
    assert!(answered.contains("plugin `panic` failed (trap;"), "{answered}");
    // `std::process::exit` in a plugin: said as such, not as wasmtime's "Exited with i32 exit
    // status 1" (WASI 0.2 carries only success or failure: the 3 reads as 1).
    assert_eq!(HttpClient::http1().get(&gw.url("/exit")).await.status, 500);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.log();
    let report = log.lines().find(|l| l.contains("plugin=\"exits\"") && l.contains("trapped")).unwrap_or_else(|| panic!("no exit line\n{log}"));
    assert!(report.contains("called `exit` (status 1;") && report.contains("returns from its phase"), "{report}");
}

/// Response edits past the request's cap are refused with one warning in the call, not one
/// per edit: 1000 edits wrote ~100 identical lines, used up the call's log budget and dropped
/// the plugin's own later lines.
#[tokio::test]
async fn response_edits_past_the_cap_are_warned_about_once_a_call() {
    let upstream = Upstream::start().await;
    let mut config = String::from("[upstreams.backend]\ntargets = [\"{upstream}\"]\n");
    config += &airlock_tests::hostile_plugin("flood");
    config += &hostile_route("/response-edits", "flood", r#"{ mode = "response-edits", count = 1000 }"#);
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &upstream, &[]).await;
    // Past hyper's client's 100 header lines: read raw.
    let head = raw_response_head(([127, 0, 0, 1], gw.port()).into(), "/response-edits").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{}", &head[..head.len().min(200)]);
    let id = head.lines().find_map(|l| l.strip_prefix("x-request-id: ")).expect("a request id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = gw.log();
        if log.contains("response edit ignored") || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("response edit ignored: too many for one request")).collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(refused[0].contains(&id) && refused[0].contains("further ones in this call are not logged"), "{}", refused[0]);
    assert!(!log.contains("log line limit"), "{log}");
}

/// A route whose chain is the hostile entry `plugin` with `config`, and whose body limit is
/// `max_body_bytes`.
fn hostile_route_limited(path: &str, plugin: &str, config: &str, max_body_bytes: u64) -> String {
    hostile_route(path, plugin, config).replacen("upstream = \"backend\"\n", &format!("upstream = \"backend\"\nmax_body_bytes = {max_body_bytes}\n"), 1)
}

/// What a plugin hands the host to keep for the rest of its request lives outside the plugin's
/// memory cap, so it is bounded too: a `respond` body longer than the route's `max_body_bytes`,
/// or 1 MiB where that is less, is the plugin's failure (`too_large`; one held for each slow
/// client would have no bound; a route taking no request bodies still answers its 403s), and
/// an `acquire-slot` key is kept as its digest past 256 bytes (requests held with 8 MiB keys held
/// two copies of each, 16 MiB a request), still naming the same slots. (And a body on a 204,
/// dropped, is logged.)
#[tokio::test]
async fn what_a_plugin_leaves_with_the_host_is_bounded() {
    let upstream = Upstream::start().await;
    let mut config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath = \"/healthy\"\nupstream = \"backend\"\n".to_owned();
    config += &airlock_tests::hostile_plugin("big");
    config += &airlock_tests::hostile_plugin("big-open").replace("[plugins.big-open]", "[plugins.big-open]\nfailure = \"open\"");
    config += &airlock_tests::hostile_plugin("slots");
    config += &hostile_route_limited("/fits", "big", r#"{ mode = "big-respond", count = 2097152 }"#, 2097152);
    config += &hostile_route_limited("/too-big", "big", r#"{ mode = "big-respond", count = 2097153 }"#, 2097152);
    config += &hostile_route_limited("/too-big-open", "big-open", r#"{ mode = "big-respond", count = 2097153 }"#, 2097152);
    config += &hostile_route_limited("/no-bodies", "big", r#"{ mode = "big-respond", count = 1048576 }"#, 0);
    config += &hostile_route_limited("/no-bodies-too-big", "big", r#"{ mode = "big-respond", count = 1048577 }"#, 0);
    config += &hostile_route("/no-content", "big", r#"{ mode = "status", count = 204, body = "not sent" }"#);
    config += "\n[[routes]]\npath_prefix = \"/slow\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"slots\"\nconfig = { mode = \"slot-key\", count = 8388608 }\n";
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &upstream, &[]).await;
    let client = HttpClient::http1();

    let fits = client.get(&gw.url("/fits")).await;
    assert_eq!((fits.status.as_u16(), fits.body.len()), (200, 2097152), "a body at the limit is answered");
    let refused = client.get(&gw.url("/too-big")).await;
    assert_eq!((refused.status.as_u16(), refused.body.len().min(200)), (500, refused.body.len()), "the gateway's own 500, not the answer");
    assert_eq!(refused.json()["error"], "plugin_failed", "{}", refused.text());
    // A route that takes no request bodies still answers with a plugin's body, up to 1 MiB.
    let no_bodies = client.get(&gw.url("/no-bodies")).await;
    assert_eq!((no_bodies.status.as_u16(), no_bodies.body.len()), (200, 1048576), "max_body_bytes = 0 is about requests");
    assert_eq!(client.get(&gw.url("/no-bodies-too-big")).await.status, 500);
    assert_eq!(gw.metric(&client, "airlock_plugin_failures_total", &[("plugin", "big"), ("kind", "too_large")]).await, 2.0);
    let open = client.get(&gw.url("/too-big-open")).await;
    assert_eq!(open.status, 200, "failing open, the upstream answers: {}", open.text());
    // A body on an answer that has no content is not sent, and not without a word.
    let no_content = client.get(&gw.url("/no-content")).await;
    assert_eq!((no_content.status.as_u16(), no_content.body.len()), (204, 0));
    let log = gw.log();
    assert!(log.contains("respond body of 2097153 bytes is longer than the 2097152 a plugin's answer may have"), "{log}");
    assert!(log.contains("respond body of 1048577 bytes is longer than the 1048576 a plugin's answer may have"), "{log}");
    assert!(log.contains("answer body not sent: a 204 has no content"), "{log}");

    // Long keys still name slots: one slot per key, no queue.
    let before = upstream.hits();
    let held_a = {
        let (client, url) = (client.clone(), gw.url("/slow/1500"));
        tokio::spawn(async move { client.request("GET", &url, &[("x-key", "a")], b"").await.status })
    };
    airlock_tests::metrics::eventually("the first request upstream", || (upstream.hits() > before).then_some(())).await;
    let same = client.request("GET", &gw.url("/slow/1"), &[("x-key", "a")], b"").await;
    assert_eq!((same.status.as_u16(), same.text()), (503, "no slot".to_owned()), "the same long key shares one slot");
    let other = client.request("GET", &gw.url("/slow/1"), &[("x-key", "b")], b"").await;
    assert_eq!(other.status, 200, "another long key has a slot of its own: {}", other.text());
    assert_eq!(held_a.await.expect("held request"), 200);

    // 24 requests held upstream, each with a key of its own, started one after the other (so a
    // warm instance per worker makes them all): the gateway's memory does not grow with them.
    let baseline = rss_mib_of(gw.pid());
    let mut held = Vec::new();
    for i in 0..24 {
        let (client, url, key) = (client.clone(), gw.url("/slow/4000"), format!("held-{i}"));
        let before = upstream.hits();
        held.push(tokio::spawn(async move { client.request("GET", &url, &[("x-key", &key)], b"").await.status }));
        airlock_tests::metrics::eventually("the held request upstream", || (upstream.hits() > before).then_some(())).await;
    }
    let grown = rss_mib_of(gw.pid()).saturating_sub(baseline);
    assert!(grown < 128, "24 held requests grew the gateway by {grown} MiB (two 8 MiB key copies each would be 384)");
    for request in held {
        assert_eq!(request.await.expect("held request"), 200);
    }
    assert_eq!(client.get(&gw.url("/healthy")).await.status, 200);
}

/// A plugin that declared only the response's body does not read the request's in its
/// `on-response`, though an earlier plugin on the route buffered it (the descriptor is the
/// grant an auditor reads: `response-body` is not the client's password).
#[tokio::test]
async fn a_response_body_reader_does_not_see_the_request_body() {
    let upstream = Upstream::start().await;
    let mut config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n".to_owned();
    config += &airlock_tests::hostile_plugin("reader");
    config += "\n[[routes]]\npath = \"/login\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"{plugin:body-upper}\"\n";
    config += "[[routes.plugins]]\nplugin = \"reader\"\nconfig = { mode = \"read-request-body\" }\n";
    let gw = Gateway::start(&config, Some(&upstream)).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        let r = client.request("POST", &gw.url("/login"), &[], b"password=hunter2").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-request-body").as_deref(), Some("none"));
        // The body was buffered (and changed) by the plugin that declared it.
        assert!(r.text().contains("PASSWORD=HUNTER2"), "{}", r.text());
    }
    gw.stop().await;
}

/// A name on this machine, other than `localhost`, that resolves to loopback addresses only:
/// the host's own name usually does (from /etc/hosts; Debian maps it to 127.0.1.1).
fn a_loopback_name() -> Option<String> {
    use std::net::ToSocketAddrs;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).ok();
    let only_loopback = |name: &String| {
        let addrs: Vec<std::net::SocketAddr> = (name.as_str(), 80).to_socket_addrs().map(Iterator::collect).unwrap_or_default();
        !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
    };
    hostname
        .into_iter()
        .chain(["ip6-localhost", "ip6-loopback"].map(str::to_owned))
        .filter(|name| !name.is_empty() && !name.eq_ignore_ascii_case("localhost") && !name.to_ascii_lowercase().ends_with(".localhost"))
        .find(only_loopback)
}

/// Whoever controls the DNS of a granted name (a vendor's telemetry host) can point it at the
/// gateway's own host (its admin listener) or a cloud's metadata service: a grant by name never
/// connects to a loopback or link-local address, and the plugin is told why; the same upstream
/// granted by its address is called, and so is `localhost`, which means loopback. A host in
/// brackets that is not an IPv6 address (`[localhost]`) is refused, not read as the name inside.
#[tokio::test]
async fn a_granted_name_resolving_to_loopback_is_not_called() {
    let Some(name) = a_loopback_name() else {
        eprintln!("skipped: no name but localhost resolves to loopback addresses only on this machine");
        return;
    };
    let upstream = Upstream::start().await;
    let port = upstream.addr.port();
    let mut config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.caller]
source = "{{plugin:hostile}}"
capabilities = ["http-client"]
http_client = {{ allow = ["http://{name}:{port}", "http://127.0.0.1:{port}", "http://localhost:{port}"], timeout_ms = 5000 }}
"#
    );
    for (path, host) in [("/by-name", name.as_str()), ("/by-address", "127.0.0.1"), ("/localhost", "localhost"), ("/bracketed", "[localhost]")] {
        config += &hostile_route(path, "caller", &format!(r#"{{ mode = "crafted-host", url = "http://{host}:{port}/echo" }}"#));
    }
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();

    let by_address = client.get(&gw.url("/by-address")).await;
    assert_eq!(by_address.status, 200, "{}", by_address.text());
    assert_eq!(by_address.json()["headers"]["host"], serde_json::json!([format!("127.0.0.1:{port}")]));
    let localhost = client.get(&gw.url("/localhost")).await;
    assert_eq!(localhost.status, 200, "`localhost` means loopback: {}", localhost.text());
    let hits = upstream.hits();

    let by_name = client.get(&gw.url("/by-name")).await;
    assert_eq!(by_name.status, 502, "{}", by_name.text());
    let expected = format!("Connect(\"`{name}` resolves only to loopback/link-local addresses, which a grant by name does not reach");
    assert!(by_name.text().contains(&expected), "{}", by_name.text());
    let bracketed = client.get(&gw.url("/bracketed")).await;
    assert_eq!(bracketed.status, 502, "{}", bracketed.text());
    assert!(bracketed.text().contains("Invalid(") && bracketed.text().contains("brackets are for an IPv6 address"), "{}", bracketed.text());
    assert_eq!(upstream.hits(), hits, "neither call reached the upstream");
    gw.stop().await;
}
