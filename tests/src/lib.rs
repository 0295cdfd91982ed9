//! Shared harness for the end-to-end tests: a real upstream server, the real gateway (in-process
//! or the `airlock` binary), real HTTP/1.1 and HTTP/2 clients, and the guest plugins built for
//! wasm32-wasip2 by this crate's build script.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airlock::config::ConfigSource;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Paths of the guest plugins built for the tests.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/guest_plugins.rs"));
}

/// A `[plugins.<name>]` definition of the hostile test plugin (`tests/plugins/hostile`). It
/// imports `http-client` for its outbound modes, so that capability is granted, toward an
/// address where nothing answers.
pub fn hostile_plugin(name: &str) -> String {
    format!("\n[plugins.{name}]\nsource = \"{{plugin:hostile}}\"\ncapabilities = [\"http-client\"]\nhttp_client = {{ allow = [\"http://127.0.0.1:1\"] }}\n")
}

/// A real HTTP upstream on a free loopback port. Behaviour by path:
/// - `/slow/<ms>`: waits, then echoes;
/// - `/status/<code>`: answers that status;
/// - `/hop`: answers with hop-by-hop headers that must not reach the client;
/// - `/big/<bytes>`: answers a body of that many `x` bytes;
/// - anything else: a JSON echo of method, path, query, version, the HTTP/2 `:authority`,
///   headers (each name to a list of values) and body.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts the upstream.
    pub async fn start() -> Self {
        Self::with_handler(upstream_answer).await
    }

    /// Starts an upstream that answers every request with `handler` (HTTP/1.1 and h2c), for
    /// tests that need answers the echo does not give (encoded bodies, other protocols).
    pub async fn with_handler<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let counter = counter.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let answer = handler(req);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, hits, task }
    }

    /// How many requests reached it.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upstream_answer(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/slow/").and_then(|s| s.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = path.strip_prefix("/status/").and_then(|s| s.parse::<u16>().ok()) {
        let mut r = Response::new(Full::new(Bytes::from(format!("status {code}"))));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
        return r;
    }
    if let Some(n) = path.strip_prefix("/headers/").and_then(|s| s.parse::<usize>().ok()) {
        let mut r = Response::new(Full::new(Bytes::from(format!("{n} headers"))));
        for i in 0..n {
            r.headers_mut().append(format!("x-h-{i}").parse::<http::HeaderName>().expect("valid"), "1".parse().expect("static"));
        }
        return r;
    }
    if let Some(n) = path.strip_prefix("/header-bytes/").and_then(|s| s.parse::<usize>().ok()) {
        let mut r = Response::new(Full::new(Bytes::from(format!("{n} bytes of x-large"))));
        r.headers_mut().insert("x-large", "x".repeat(n).parse().expect("valid"));
        return r;
    }
    if let Some(n) = path.strip_prefix("/big/").and_then(|s| s.parse::<usize>().ok()) {
        return Response::new(Full::new(Bytes::from(vec![b'x'; n])));
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.entry(k.as_str().to_owned()).or_default().push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        // An HTTP/2 request's `:authority` (HTTP/1.1 sends origin form: none).
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut r = Response::new(Full::new(Bytes::from(echo.to_string())));
    r.headers_mut().insert("content-type", "application/json".parse().expect("static"));
    if path == "/hop" {
        let h = r.headers_mut();
        h.insert("connection", "x-upstream-hop".parse().expect("static"));
        h.insert("x-upstream-hop", "secret".parse().expect("static"));
        h.insert("keep-alive", "timeout=5".parse().expect("static"));
        h.insert("x-upstream-end", "kept".parse().expect("static"));
    }
    r
}

/// A gateway running in this process on a free port, with its config in a temporary directory
/// (so relative plugin paths resolve there).
pub struct Gateway {
    running: Option<airlock::RunningGateway>,
    /// The config directory (kept alive with the gateway).
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway from `toml`. `{upstream}` is replaced by `upstream`'s address, and a
    /// listener on `127.0.0.1:0` (and an admin listener on `127.0.0.1:0`) is added when the config
    /// names none.
    pub async fn start(toml: &str, upstream: Option<&Upstream>) -> Self {
        Self::try_start(toml, upstream).await.unwrap_or_else(|e| panic!("gateway failed to start:\n{e}"))
    }

    /// Like [`Gateway::start`], returning the error instead of panicking.
    pub async fn try_start(toml: &str, upstream: Option<&Upstream>) -> Result<Self, airlock::StartError> {
        Self::try_start_with_files(toml, upstream, &[]).await
    }

    /// Like [`Gateway::try_start`], with `files` (paths relative to the config's directory, and
    /// their contents) written beside the config first, for configs that name files the gateway
    /// reads at load (a plugin's `files` grant). They go when the gateway is dropped.
    pub async fn try_start_with_files(
        toml: &str,
        upstream: Option<&Upstream>,
        files: &[(&str, &[u8])],
    ) -> Result<Self, airlock::StartError> {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, contents) in files {
            let path = dir.path().join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create the file's directory");
            }
            std::fs::write(&path, contents).expect("write a config-side file");
        }
        let text = render(toml, upstream);
        std::fs::write(dir.path().join("airlock.toml"), &text).expect("write config");
        let mut source = ConfigSource::inline("airlock.toml", &text, dir.path().to_path_buf());
        // Read again from there on reload (the name stays `airlock.toml` in error messages).
        source.path = Some(dir.path().join("airlock.toml"));
        let running = airlock::start(&source).await?;
        Ok(Self { running: Some(running), dir })
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.running.as_ref().expect("running").addr()
    }

    /// The admin listener's address (the harness puts it on a free loopback port); `None` when
    /// the config disables it.
    pub fn admin_listener(&self) -> Option<SocketAddr> {
        self.running.as_ref().expect("running").admin_addr()
    }

    /// The admin listener's address (panics when the config disables it).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener().expect("the admin listener is enabled")
    }

    /// `http://admin-addr` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }

    /// The gateway being served (routes, chains, limits), for checks that need its insides.
    pub fn inner(&self) -> std::sync::Arc<airlock::gateway::Gateway> {
        self.running.as_ref().expect("running").gateway()
    }

    /// Writes `toml` (with the [`Gateway::start`] substitutions) over the config file and
    /// reloads it; returns the new generation, or why the running one was kept.
    pub async fn reload(&self, toml: &str, upstream: Option<&Upstream>) -> Result<u64, airlock::reload::ReloadError> {
        std::fs::write(self.dir.path().join("airlock.toml"), render(toml, upstream)).expect("write config");
        self.live().reload().await
    }

    /// The served generation and the way to reload it.
    pub fn live(&self) -> &std::sync::Arc<airlock::reload::LiveGateway> {
        self.running.as_ref().expect("running").live()
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Shuts the gateway down, draining.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Applies the harness substitutions to a config text.
pub fn render(toml: &str, upstream: Option<&Upstream>) -> String {
    let mut text = toml.to_owned();
    if let Some(u) = upstream {
        text = text.replace("{upstream}", &u.addr.to_string());
    }
    for (name, path) in guest_plugin_paths() {
        text = text.replace(&format!("{{plugin:{name}}}"), &path);
    }
    if !text.contains("[[listeners]]") {
        text = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n\n{text}");
    }
    // Never the default 127.0.0.1:9901: tests run in parallel. Appended, so the line numbers
    // tests expect in config errors stay as they are.
    if !text.contains("[admin]") {
        text.push_str("\n[admin]\naddress = \"127.0.0.1:0\"\n");
    }
    text
}

/// `{plugin:<name>}` placeholders and the `.wasm` paths they stand for.
pub fn guest_plugin_paths() -> Vec<(&'static str, String)> {
    vec![
        ("panic", plugins::PANIC.to_owned()),
        ("loop", plugins::LOOP.to_owned()),
        ("alloc", plugins::ALLOC.to_owned()),
        ("echo-context", plugins::ECHO_CONTEXT.to_owned()),
        ("body-upper", plugins::BODY_UPPER.to_owned()),
        ("delay", plugins::DELAY.to_owned()),
        ("memory-probe", plugins::MEMORY_PROBE.to_owned()),
        ("fail-configure", plugins::FAIL_CONFIGURE.to_owned()),
        ("from-the-future", plugins::FROM_THE_FUTURE.to_owned()),
        ("contract-0-2-0", plugins::CONTRACT_0_2_0.to_owned()),
        ("contract-0-2-7", plugins::CONTRACT_0_2_7.to_owned()),
        ("reads-file", plugins::READS_FILE.to_owned()),
        ("sockets", plugins::SOCKETS.to_owned()),
        ("spin", plugins::SPIN.to_owned()),
        ("state-flood", plugins::STATE_FLOOD.to_owned()),
        ("hostile", plugins::HOSTILE.to_owned()),
        ("trailers", plugins::TRAILERS.to_owned()),
        ("hello", plugins::HELLO_PLUGIN.to_owned()),
    ]
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
    /// HTTP version the response came in.
    pub version: http::Version,
}

impl Reply {
    /// The body as JSON (panics with the body text if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Every value of a header, as text.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
    }

    /// Values the upstream echo says it received for `name`.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }
}

/// Reads a request head (through its blank line) from a raw upstream's connection: what it
/// read, or `None` if the gateway closed or broke the connection first.
pub async fn read_request_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// A server-sent events upstream: it takes one HTTP/1.1 connection and answers its request with
/// `content_type` and a body of the events sent on the returned sender, each as it is sent, the
/// body ending when the sender is dropped. For what must stream event by event.
pub async fn event_stream_upstream(content_type: &'static str) -> (SocketAddr, tokio::sync::mpsc::Sender<Bytes>, tokio::task::JoinHandle<()>) {
    let (events, receive) = tokio::sync::mpsc::channel::<Bytes>(4);
    let receive = Arc::new(tokio::sync::Mutex::new(Some(receive)));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else { return };
        let service = service_fn(move |_req: Request<Incoming>| {
            let receive = receive.clone();
            async move {
                let rx = receive.lock().await.take().expect("one stream");
                let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|event| (Ok::<_, Infallible>(hyper::body::Frame::data(event)), rx))
                });
                let mut r = Response::new(http_body_util::StreamBody::new(frames));
                r.headers_mut().insert("content-type", http::HeaderValue::from_static(content_type));
                Ok::<_, Infallible>(r)
            }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
    });
    (addr, events, server)
}

/// An HTTP/1.1 upstream that answers every request with `answer`, byte for byte, then closes:
/// for answers no real server library would send (not HTTP, broken framing, cut off).
pub async fn raw_upstream(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    raw_upstream_holding(answer, Duration::ZERO).await
}

/// [`raw_upstream`], keeping each connection open `hold` after its answer before closing it.
pub async fn raw_upstream_holding(answer: &'static [u8], hold: Duration) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                if read_request_head(&mut tcp).await.is_none() {
                    return;
                }
                let _ = tcp.write_all(answer).await;
                tokio::time::sleep(hold).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// Writes raw bytes to `addr` and returns everything written back until the other side closes
/// (at most 5 s): "" if it closed without answering. For requests no real client would send.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// A real HTTP client: HTTP/1.1 with keep-alive, or HTTP/2 with prior knowledge.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    /// An HTTP/1.1 client.
    pub fn http1() -> Self {
        Self { inner: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// An HTTP/2 prior-knowledge (h2c) client.
    pub fn http2() -> Self {
        Self { inner: Client::builder(TokioExecutor::new()).http2_only(true).build_http() }
    }

    /// Sends a request built by the caller.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        self.try_send(request).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends a request, returning a failure (timeout, connection refused or reset, broken body)
    /// as text instead of panicking: for tests that count failures under load.
    pub async fn try_send(&self, request: Request<Full<Bytes>>) -> Result<Reply, String> {
        let response = tokio::time::timeout(Duration::from_secs(30), self.inner.request(request))
            .await
            .map_err(|_| "request timed out after 30 s".to_owned())?
            .map_err(|e| format!("request failed: {e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| format!("read body: {e:?}"))?.to_bytes();
        Ok(Reply { status: parts.status, headers: parts.headers, body, version: parts.version })
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(Full::default()).expect("request")).await
    }

    /// A request with method, url, headers and body.
    pub async fn request(&self, method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut builder = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        self.send(builder.body(Full::new(Bytes::copy_from_slice(body))).expect("request")).await
    }
}

/// What `airlock check` says of `toml`, written into `dir` as `check.toml`, a config it accepts
/// (warnings only: it asserts check succeeds).
pub fn check_warnings(dir: &Path, toml: &str) -> String {
    std::fs::write(dir.join("check.toml"), toml).expect("write config");
    let check = Command::new(airlock_binary())
        .args(["check", "-c", "check.toml"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run airlock check");
    let stderr = String::from_utf8_lossy(&check.stderr).into_owned();
    assert!(check.status.success(), "still a valid config: {stderr}");
    stderr
}

/// The `airlock` binary built by `cargo build` (the test command builds it before the tests).
pub fn airlock_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps");
    let bin = dir.join("airlock");
    assert!(bin.is_file(), "{} not found: run `cargo build -p airlock` first", bin.display());
    bin
}

/// Path of a fixture file under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// The value of the sample `metric` whose labels include all of `labels` on the gateway's
/// `/metrics` (admin listener, no token), or 0 if there is none.
pub async fn metric_value(gw: &Gateway, metric: &str, labels: &[(&str, &str)]) -> f64 {
    metrics::sample(&metrics::scrape(&HttpClient::http1(), gw, None).await, metric, labels)
}

/// Starts the real `airlock` binary with `args` in `dir`, as the README and the examples run it
/// (listening on the documented 127.0.0.1:8080), and waits until it listens. Tests using it must
/// be the only test of their test binary (test binaries run one after the other).
pub async fn start_documented(args: &[&str], dir: &Path) -> Documented {
    let child = Command::new(airlock_binary())
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start airlock");
    // Killed if the test fails before stopping it, so the documented ports are free again.
    let mut gateway = Documented(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect("127.0.0.1:8080").await.is_err() {
        assert!(Instant::now() < deadline, "airlock did not start listening on 127.0.0.1:8080");
        assert!(gateway.0.try_wait().unwrap().is_none(), "airlock exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway
}

/// A [`start_documented`] gateway: stopped by [`stop_documented`], killed if dropped before.
pub struct Documented(Child);

impl Drop for Documented {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Stops a [`start_documented`] gateway with SIGTERM, checks it exited cleanly and that the port
/// is free again.
pub async fn stop_documented(mut gateway: Documented) {
    let child = &mut gateway.0;
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "airlock exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "airlock did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The ports are free again for the next run.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect("127.0.0.1:8080").await.is_ok() {
        assert!(Instant::now() < deadline, "port 8080 still answers after exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The JSON lines of the access log at `path` (none yet: empty); a line that is not JSON fails
/// the test.
pub fn access_log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// The access log line of the request `request_id` at `path`, once it has been written.
pub async fn access_log_line(path: &Path, request_id: &str) -> serde_json::Value {
    metrics::eventually(&format!("the access log line of {request_id}"), || {
        access_log_lines(path).into_iter().find(|l| l["request_id"] == request_id)
    })
    .await
}

/// The hex SHA-256 of `bytes`, by an implementation independent of the gateway's: for the keys
/// stored as digests and the component digests the gateway reports.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub mod process;
pub use process::GatewayProcess;
pub mod redis;
pub mod spin;
pub mod websocket;

/// Reading `/metrics` with an independent Prometheus text-format parser, and waiting for what
/// the gateway does off the request path.
pub mod metrics {
    use std::time::Duration;

    use prometheus_parse::{Scrape, Value};

    use super::{Gateway, HttpClient};

    /// Bounded wait for something written off the request path (the access log, an export) to appear.
    pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        for _ in 0..500 {
            if let Some(found) = check() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gave up waiting for {what}");
    }

    /// GETs `/metrics` (with the admin token, if given) and parses it.
    pub async fn scrape(client: &HttpClient, gw: &Gateway, token: Option<&str>) -> Scrape {
        let headers: Vec<(&str, String)> = token.map(|t| ("authorization", format!("Bearer {t}"))).into_iter().collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = client.request("GET", &gw.admin_url("/metrics"), &headers, b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.header("content-type").unwrap_or_default().starts_with("text/plain; version=0.0.4"));
        // In that format a counter's TYPE names its `_total` series (OpenMetrics names the family
        // without it, which a 0.0.4 parser reads as untyped samples).
        let text = r.text();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ") && l.ends_with(" counter")) {
            assert!(line.split(' ').nth(2).is_some_and(|name| name.ends_with("_total")), "{line}");
        }
        assert!(!text.contains("# EOF"), "an OpenMetrics end marker in the 0.0.4 format");
        Scrape::parse(r.text().lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text format")
    }

    /// The value of the sample `metric` whose labels include all of `labels` (0 if absent).
    /// Histograms give their observation count.
    pub fn sample(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
                Value::Summary(_) => panic!("no summaries expected"),
            })
            .collect();
        assert!(found.len() <= 1, "{metric} {labels:?} matches {} samples", found.len());
        found.first().copied().unwrap_or(0.0)
    }
}
