//! Mutual TLS towards upstreams (`[upstreams.<name>.tls] cert` and `key`): a real TLS upstream
//! (tokio-rustls and hyper) that requires a client certificate signed by its CA and answers with
//! the name and the SHA-256 of the certificate it was shown, so each test proves the gateway
//! presented exactly the configured certificate. HTTP/1.1 and h2, a configured CA and the system's
//! roots, refused handshakes, reloads of rotated files, and the config errors of broken ones.
//! Certificates come from a test CA made by rcgen.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_tests::{Gateway, HttpClient, airlock_binary, render};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

type Ca = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

/// A test CA, in a directory holding its `ca.pem` and the client certificates it issued.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    /// Every client certificate issued, by its DER: its CN (what the upstream answers with).
    issued: Arc<Mutex<HashMap<Vec<u8>, String>>>,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Airlock upstream mTLS test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("key")).expect("CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        Self { dir, ca, issued: Arc::default() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a client certificate with subject `CN=<cn>`, written as `<stem>.pem` and
    /// `<stem>.key` (PKCS#8); returns the SHA-256 of its DER, as the upstream reports it.
    fn issue_client(&self, stem: &str, cn: &str) -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &*self.ca).expect("sign");
        std::fs::write(self.path(&format!("{stem}.pem")), cert.pem()).expect("write certificate");
        std::fs::write(self.path(&format!("{stem}.key")), key.serialize_pem()).expect("write key");
        self.issued.lock().expect("lock").insert(cert.der().to_vec(), cn.to_owned());
        sha256_hex(cert.der())
    }

    /// A server config for `upstream.test` that requires a client certificate this CA signed,
    /// agreeing on `h2` or `http/1.1` by ALPN.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_alpn(&[b"h2", b"http/1.1"])
    }

    /// [`Pki::server_config`] agreeing on the ALPN protocols `alpn` only.
    fn server_config_alpn(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["upstream.test".to_owned()]).expect("params").signed_by(&key, &*self.ca).expect("sign");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA root");
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().expect("verifier");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One request the upstream served.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    /// The CN of the client certificate of its connection.
    cn: String,
    version: http::Version,
}

/// A TLS upstream requiring a client certificate. It answers `x-client-cn` (the CN the test CA
/// issued the presented certificate for, `unknown` if it issued none such) and
/// `x-client-cert-sha256`. HTTP/1.1 connections serve one request each, so every HTTP/1.1
/// request is a handshake of its own.
struct MtlsUpstream {
    addr: SocketAddr,
    /// Handshakes that failed (no client certificate, or one the CA did not sign).
    refused: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MtlsUpstream {
    async fn start(pki: &Pki) -> Self {
        Self::with_tls(pki, pki.server_config()).await
    }

    /// [`MtlsUpstream::start`] with its own server config.
    async fn with_tls(pki: &Pki, tls: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = TlsAcceptor::from(tls);
        let refused = Arc::new(AtomicUsize::new(0));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (counter, log, issued) = (refused.clone(), seen.clone(), pki.issued.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, counter, log, issued) = (acceptor.clone(), counter.clone(), log.clone(), issued.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            counter.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let der = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
                    let cn = issued.lock().expect("lock").get(&der).cloned().unwrap_or_else(|| "unknown".to_owned());
                    let sha = sha256_hex(&der);
                    let service = service_fn(move |req: Request<Incoming>| {
                        log.lock().expect("lock").push(Seen { path: req.uri().path().to_owned(), cn: cn.clone(), version: req.version() });
                        let response = Response::builder()
                            .header("x-client-cn", cn.as_str())
                            .header("x-client-cert-sha256", sha.as_str())
                            .body(Full::new(Bytes::from(cn.clone())))
                            .expect("response");
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().keep_alive(false);
                    let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Self { addr, refused, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for MtlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A config with upstream `secure` (`protocol`, the test CA as `ca_file`) behind route `/`;
/// with `client_cert`, `cert` and `key` name the PKI directory's `client.pem` and `client.key`
/// relative to the config file (the harness writes it into a sibling temporary directory).
fn config(upstream: &MtlsUpstream, pki: &Pki, protocol: &str, client_cert: bool, extra: &str) -> String {
    let pki_dir = pki.dir.path().file_name().expect("dir name").to_string_lossy().into_owned();
    let client = if client_cert { format!("cert = \"../{pki_dir}/client.pem\"\nkey = \"../{pki_dir}/client.key\"\n") } else { String::new() };
    format!(
        "[upstreams.secure]\ntargets = [\"https://{}\"]\nprotocol = \"{protocol}\"\n[upstreams.secure.tls]\nca_file = \"{}\"\nserver_name = \"upstream.test\"\n{client}{extra}\n[[routes]]\npath_prefix = \"/\"\nupstream = \"secure\"\n",
        upstream.addr,
        pki.path("ca.pem").display()
    )
}

/// The 1-based line of the first line of `toml` (as the harness renders it) starting with `start`.
fn line_of(toml: &str, start: &str) -> usize {
    render(toml, None).lines().position(|l| l.starts_with(start)).expect("line in config") + 1
}

#[tokio::test]
async fn the_configured_client_certificate_is_presented_over_http1_and_h2() {
    let pki = Pki::new();
    let fingerprint = pki.issue_client("client", "gateway-a");
    let upstream = MtlsUpstream::start(&pki).await;
    let client = HttpClient::http1();

    // HTTP/1.1: every request is a new connection, each shows the certificate; so do the
    // upstream's health-check probes (or the target would be marked down).
    let probes = "[upstreams.secure.health_check]\npath = \"/healthz\"\ninterval_ms = 200\n";
    let gw = Gateway::start(&config(&upstream, &pki, "http1", true, probes), None).await;
    for _ in 0..3 {
        let reply = client.get(&gw.url("/orders")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-client-cn").as_deref(), Some("gateway-a"));
        assert_eq!(reply.header("x-client-cert-sha256").as_deref(), Some(fingerprint.as_str()), "exactly the configured certificate");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upstream.seen().iter().any(|s| s.path == "/healthz") {
        assert!(Instant::now() < deadline, "no health-check probe got through: {:?}", upstream.seen());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = upstream.seen();
    assert!(seen.iter().all(|s| s.cn == "gateway-a" && s.version == http::Version::HTTP_11), "{seen:?}");
    assert_eq!(upstream.refused.load(Ordering::SeqCst), 0);
    gw.stop().await;

    // h2 (ALPN over the same TLS client config).
    let gw = Gateway::start(&config(&upstream, &pki, "h2", true, ""), None).await;
    let reply = client.get(&gw.url("/h2")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-client-cn").as_deref(), Some("gateway-a"));
    assert_eq!(reply.header("x-client-cert-sha256").as_deref(), Some(fingerprint.as_str()));
    let h2 = upstream.seen().into_iter().find(|s| s.path == "/h2").expect("h2 request seen");
    assert_eq!((h2.cn.as_str(), h2.version), ("gateway-a", http::Version::HTTP_2));
    gw.stop().await;
}

#[tokio::test]
async fn without_a_client_certificate_the_upstream_refuses_the_handshake_and_the_client_gets_502() {
    let pki = Pki::new();
    let upstream = MtlsUpstream::start(&pki).await;
    let client = HttpClient::http1();
    for protocol in ["http1", "h2"] {
        let gw = Gateway::start(&config(&upstream, &pki, protocol, false, ""), None).await;
        let refused_before = upstream.refused.load(Ordering::SeqCst);
        let reply = client.get(&gw.url("/orders")).await;
        assert_eq!(reply.status, 502, "{protocol}: {}", reply.text());
        assert!(upstream.refused.load(Ordering::SeqCst) > refused_before, "{protocol}: the upstream refused no handshake");
        gw.stop().await;
    }
    assert!(upstream.seen().is_empty(), "a request got through without a certificate: {:?}", upstream.seen());
}

/// `protocol = "h2"` to a TLS server that does no ALPN (as an HTTP/1.1-only one may: a server
/// that lists `http/1.1` alone refuses the handshake itself, `NoApplicationProtocol`): a 502
/// whose logged reason says so, where speaking HTTP/2 anyway got back an HTTP/1.1 error, a bare
/// "protocol error"; its health checks fail saying the same; nothing reaches the server.
#[tokio::test]
async fn h2_to_a_server_without_alpn_is_a_502_that_says_why() {
    let pki = Pki::new();
    pki.issue_client("client", "gateway-a");
    let upstream = MtlsUpstream::with_tls(&pki, pki.server_config_alpn(&[])).await;
    let harness = airlock_tests::Upstream::start().await;
    // Its health checks say the same (their client would speak HTTP/2 regardless).
    let probes = "[upstreams.secure.health_check]\npath = \"/healthz\"\ninterval_ms = 100\nunhealthy_threshold = 1\n";
    let toml = config(&upstream, &pki, "h2", true, probes);
    let gw = airlock_tests::process::GatewayProcess::start_logging(&toml, &harness, &[]).await;
    let reply = HttpClient::http1().get(&gw.url("/orders")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let log = gw.log();
    assert!(log.contains("did not agree on HTTP/2 (ALPN `h2`)"), "{log}");
    let probed = "failed health checks in a row: the TLS handshake did not agree on HTTP/2 (ALPN `h2`)";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !gw.log().contains(probed) {
        assert!(std::time::Instant::now() < deadline, "no probe saying why: {}", gw.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

/// A certificate rotated in place (same paths, new contents) is presented once the config is
/// reloaded, not before; a reload that finds the files broken is refused, naming file, line and
/// key, and the gateway keeps presenting the certificate it had.
#[tokio::test]
async fn a_rotated_client_certificate_is_presented_after_a_reload() {
    let pki = Pki::new();
    pki.issue_client("client", "gateway-a");
    let upstream = MtlsUpstream::start(&pki).await;
    let client = HttpClient::http1();
    let toml = config(&upstream, &pki, "http1", true, "");
    let gw = Gateway::start(&toml, None).await;
    let cn = |reply: airlock_tests::Reply| {
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.header("x-client-cn").unwrap_or_default()
    };
    assert_eq!(cn(client.get(&gw.url("/")).await), "gateway-a");

    // Rotated on disk: new connections (one per request here) still show the loaded certificate.
    let rotated = pki.issue_client("client", "gateway-b");
    assert_eq!(cn(client.get(&gw.url("/")).await), "gateway-a", "files are read on reload, not behind the operator's back");
    // The same config reloaded: the files are read again.
    assert_eq!(gw.reload(&toml, None).await.expect("reload"), 2);
    let reply = client.get(&gw.url("/")).await;
    assert_eq!(reply.header("x-client-cert-sha256").as_deref(), Some(rotated.as_str()));
    assert_eq!(cn(reply), "gateway-b");

    // Broken files: each reload is refused at the key's line, and gateway-b is still presented.
    let key_line = line_of(&toml, "key = ");
    let cert_line = line_of(&toml, "cert = ");
    pki.issue_client("other", "gateway-other");
    std::fs::copy(pki.path("other.key"), pki.path("client.key")).expect("copy key");
    let err = gw.reload(&toml, None).await.expect_err("a key of another certificate").to_string();
    assert!(err.contains(&format!("airlock.toml:{key_line}:")) && err.contains("`upstreams.secure.tls.key`"), "{err}");
    assert!(err.contains("client.key` is not the key of the certificate in `") && err.contains("client.pem`"), "{err}");
    std::fs::write(pki.path("client.key"), "not a key").expect("write");
    let err = gw.reload(&toml, None).await.expect_err("no key").to_string();
    assert!(err.contains(&format!("airlock.toml:{key_line}:")) && err.contains("client.key`: no PRIVATE KEY in it"), "{err}");
    std::fs::remove_file(pki.path("client.pem")).expect("remove");
    let err = gw.reload(&toml, None).await.expect_err("no certificate file").to_string();
    assert!(err.contains(&format!("airlock.toml:{cert_line}:")) && err.contains("`upstreams.secure.tls.cert`"), "{err}");
    assert!(err.contains("client certificate file `") && err.contains("No such file"), "{err}");
    assert!(!err.contains("PRIVATE KEY-----"), "{err}");
    assert_eq!(gw.live().current().number, 2, "the running config is kept");
    assert_eq!(cn(client.get(&gw.url("/")).await), "gateway-b");

    // One of the pair without the other: refused at load, naming the key given.
    let lone_cert = toml.replace(&format!("key = \"../{}/client.key\"\n", pki.dir.path().file_name().expect("name").to_string_lossy()), "");
    assert_ne!(lone_cert, toml);
    let err = Gateway::try_start(&lone_cert, None).await.err().expect("cert without key").to_string();
    assert!(err.contains(&format!("airlock.toml:{cert_line}:")) && err.contains("`upstreams.secure.tls.cert`: `cert` without `key`"), "{err}");
    gw.stop().await;
}

/// Kills the gateway process if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Starts the `airlock` binary on `airlock.toml` in `dir` with `SSL_CERT_FILE` (the system's
/// roots, as rustls-native-certs reads them) set to `roots`; its log goes to `airlock.log`.
async fn start_binary(dir: &Path, roots: &Path, port: u16, admin: u16) -> Running {
    let log = std::fs::File::create(dir.join("airlock.log")).expect("log file");
    let child = Command::new(airlock_binary())
        .args(["run", "-c", "airlock.toml"])
        .current_dir(dir)
        .env("SSL_CERT_FILE", roots)
        .env_remove("SSL_CERT_DIR")
        .env("RUST_LOG", "debug")
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("airlock-test-cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start airlock");
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = running.0.try_wait().expect("wait") {
            panic!("airlock exited ({status}): {}", std::fs::read_to_string(dir.join("airlock.log")).unwrap_or_default());
        }
        let main = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok();
        if main && tokio::net::TcpStream::connect(("127.0.0.1", admin)).await.is_ok() {
            return running;
        }
        assert!(Instant::now() < deadline, "airlock did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Without `ca_file` the upstream is verified with the system's roots (here the test CA, through
/// `SSL_CERT_FILE`) and the client certificate is presented all the same. `/admin/config` shows
/// the certificate's path and redacts the key's; neither the key nor its file's contents are
/// ever logged, even at `debug`.
#[tokio::test]
async fn with_the_system_roots_too_and_the_key_is_never_shown() {
    let pki = Pki::new();
    let fingerprint = pki.issue_client("client", "gateway-roots");
    let upstream = MtlsUpstream::start(&pki).await;
    let (port, admin) = (free_port(), free_port());
    // The config beside the files: `cert` and `key` are plain relative paths.
    let toml = format!(
        "[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\n[upstreams.secure]\ntargets = [\"{}\"]\nprotocol = \"h2\"\n[upstreams.secure.tls]\nserver_name = \"upstream.test\"\ncert = \"client.pem\"\nkey = \"client.key\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"secure\"\n",
        upstream.addr
    );
    std::fs::write(pki.path("airlock.toml"), toml).expect("write config");
    let running = start_binary(pki.dir.path(), &pki.path("ca.pem"), port, admin).await;

    let client = HttpClient::http1();
    let reply = client.get(&format!("http://127.0.0.1:{port}/roots")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-client-cn").as_deref(), Some("gateway-roots"));
    assert_eq!(reply.header("x-client-cert-sha256").as_deref(), Some(fingerprint.as_str()));

    let shown = client.get(&format!("http://127.0.0.1:{admin}/admin/config")).await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    let tls = &shown.json()["upstreams"]["secure"]["tls"];
    assert_eq!(tls["cert"], "client.pem", "{tls}");
    assert_eq!(tls["key"], "[redacted]", "{tls}");
    drop(running);

    let key_pem = std::fs::read_to_string(pki.path("client.key")).expect("key");
    let key_body = key_pem.lines().nth(1).expect("a base64 line");
    let log = std::fs::read_to_string(pki.path("airlock.log")).expect("log");
    assert!(log.contains("DEBUG") || log.contains("debug"), "nothing logged at debug: {log}");
    assert!(!log.contains("PRIVATE KEY") && !log.contains(key_body), "key material in the log:\n{log}");
    assert!(!shown.text().contains("PRIVATE KEY") && !shown.text().contains(key_body));
}

/// A target that takes the connection and never finishes the TLS handshake (a hung process
/// whose kernel still accepts, an `https` target on a port that waits for plain HTTP) is a
/// connect timeout at `connect_ms`: the request goes on to the next target, over HTTP/1.1 and
/// h2, rather than waiting out `request_ms` there (or, with a body, `body_idle_ms`).
#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_a_connect_timeout_and_fails_over() {
    let pki = Pki::new();
    pki.issue_client("client", "gateway-a");
    let good = MtlsUpstream::start(&pki).await;
    // Accepts, reads the ClientHello, answers nothing; holds every connection open.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
    let holding = held.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = silent.accept().await {
            holding.lock().expect("lock").push(tcp);
        }
    });
    let client = HttpClient::http1();
    for protocol in ["http1", "h2"] {
        let protocol_line = format!("protocol = \"{protocol}\"\n");
        let toml = config(&good, &pki, protocol, true, "")
            .replacen("targets = [\"https://", &format!("targets = [\"https://{silent_addr}\", \"https://"), 1)
            .replacen(&protocol_line, &format!("{protocol_line}connect_timeout_ms = 300\nmax_fails = 1\n"), 1)
            .replace("[[routes]]", "[timeouts]\nrequest_ms = 20000\nbody_idle_ms = 20000\n\n[[routes]]");
        let gw = Gateway::start(&toml, None).await;
        let connects_before = held.lock().expect("lock").len();
        for (method, body) in [("GET", &b""[..]), ("POST", &b"a body"[..])] {
            let started = Instant::now();
            let reply = client.request(method, &gw.url("/orders"), &[], body).await;
            assert_eq!(reply.status, 200, "{protocol} {method}: {}", reply.text());
            assert!(started.elapsed() < Duration::from_secs(5), "{protocol} {method}: took {:?}", started.elapsed());
        }
        assert!(held.lock().expect("lock").len() > connects_before, "{protocol}: the silent target was never tried");
        gw.stop().await;
    }
    task.abort();
}

/// A self-signed certificate pinned with `ca_file` but made a CA (`CA:TRUE`, what `openssl req
/// -x509` writes by default): refused by the handshake, and the logged reason says what to do
/// about it, not webpki's `CaUsedAsEndEntity`.
#[tokio::test]
async fn a_ca_certificate_served_as_the_upstreams_own_is_a_502_that_says_why() {
    let pki = Pki::new();
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["upstream.test".to_owned()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed");
    std::fs::write(pki.path("self.pem"), cert.pem()).expect("write certificate");
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server certificate");
    let upstream = MtlsUpstream::with_tls(&pki, Arc::new(tls)).await;
    let harness = airlock_tests::Upstream::start().await;
    let toml = config(&upstream, &pki, "http1", false, "").replace("ca.pem", "self.pem");
    let gw = airlock_tests::process::GatewayProcess::start_logging(&toml, &harness, &[]).await;
    let reply = HttpClient::http1().get(&gw.url("/orders")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let log = gw.log();
    assert!(log.contains("is a CA certificate (basicConstraints CA:TRUE) served as its own") && log.contains("reissue it with CA:FALSE"), "{log}");
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}
