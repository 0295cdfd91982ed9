//! TLS listeners with real clients: rustls clients (the tests' own) and `curl`. Certificates
//! chosen by SNI, ALPN `h2` and `http/1.1`, TLS 1.2 and 1.3, and mTLS: clients without a valid
//! certificate refused, a verified client's subject and SANs handed to plugins. Certificates come
//! from a test CA made by rcgen.

use std::path::Path;
use std::sync::Arc;

use airlock_tests::{Gateway, Upstream, metric_value, plugins};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA for servers, one for clients, their certificates, written as PEM files into a directory.
struct Pki {
    dir: tempfile::TempDir,
    server_ca: CertificateDer<'static>,
    client_cert: CertificateDer<'static>,
    client_key: PrivateKeyDer<'static>,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("key")).expect("CA")
}

/// Writes `<name>.pem` and `<name>.key` into `dir`: a certificate for `<name>.example.test`
/// issued by `ca`.
fn server_certificate(dir: &Path, name: &str, ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![format!("{name}.example.test")])
        .expect("params")
        .signed_by(&key, &**ca)
        .expect("sign");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write PEM");
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write PEM");
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write PEM");
    let server_ca = ca("Airlock test server CA");
    write("server-ca.pem", &server_ca.pem());
    for name in ["api", "admin"] {
        server_certificate(dir.path(), name, &server_ca);
    }
    let client_ca = ca("Airlock test client CA");
    write("client-ca.pem", &client_ca.pem());
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["billing.internal".to_owned()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "billing");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example");
    let client = params.signed_by(&key, &*client_ca).expect("sign");
    write("client.pem", &client.pem());
    write("client.key", &key.serialize_pem());
    Pki {
        server_ca: server_ca.der().clone(),
        client_cert: client.der().clone(),
        client_key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        dir,
    }
}

fn config(dir: &Path, mtls: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[[listeners]]
address = "127.0.0.1:0"
[listeners.tls]
certificates = [{{ cert = "{d}/api.pem", key = "{d}/api.key" }}, {{ cert = "{d}/admin.pem", key = "{d}/admin.key" }}]
{mtls}

[upstreams.backend]
targets = ["{{upstream}}"]

[[routes]]
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "{echo}"
config = {{ expose = ["tls.client.subject", "tls.client.sans"] }}
"#,
        echo = plugins::ECHO_CONTEXT
    )
}

/// A rustls client config trusting the server CA, offering `alpn`, limited to `versions`.
fn client_config(
    pki: &Pki,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
    client_cert: bool,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.server_ca.clone()).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = if client_cert {
        builder.with_client_auth_cert(vec![pki.client_cert.clone()], pki.client_key.clone_key()).expect("client cert")
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What one HTTPS request saw: the negotiated protocol, the server certificate's names, the
/// TLS version, and the response status with its headers.
struct Seen {
    alpn: Option<Vec<u8>>,
    server_cert: CertificateDer<'static>,
    version: Option<rustls::ProtocolVersion>,
    status: u16,
    headers: http::HeaderMap,
}

async fn https_get(gw: &Gateway, sni: &str, config: Arc<rustls::ClientConfig>) -> Result<Seen, String> {
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let tls = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let server_cert = session.peer_certificates().and_then(|c| c.first()).expect("server certificate").clone().into_owned();
    let version = session.protocol_version();
    let request = http::Request::get(format!("https://{sni}/hello")).body(Empty::<Bytes>::new()).expect("request");
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(request).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(request).await.map_err(|e| format!("request: {e}"))?
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let _ = response.into_body().collect().await;
    Ok(Seen { alpn, server_cert, version, status, headers })
}

fn cert_names(cert: &CertificateDer<'_>) -> String {
    String::from_utf8_lossy(cert.as_ref()).into_owned()
}

/// A key that is not the certificate's is named as such, at the listener, not as rustls's
/// `InconsistentKeys(KeyMismatch)`.
#[tokio::test]
async fn a_key_that_is_not_the_certificates_is_named() {
    let pki = pki();
    let d = pki.dir.path().display();
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{d}/api.pem\", key = \"{d}/admin.key\" }}]\n\n[[routes]]\npath = \"/\"\nplugins = [{{ plugin = \"builtin:respond\" }}]\n"
    );
    let err = Gateway::try_start(&config, None).await.err().expect("refused").to_string();
    assert!(err.contains("listeners[0].tls"), "{err}");
    assert!(err.contains("admin.key` is not the key of the certificate"), "{err}");
}

/// A TLS listener without a certificate is refused at its `certificates` line, not at the
/// listener's `address`.
#[tokio::test]
async fn a_tls_listener_without_certificates_is_refused_at_their_line() {
    let config = "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[listeners.tls]\ncertificates = []\n\n[[routes]]\npath = \"/\"\nplugins = [{ plugin = \"builtin:respond\" }]\n";
    let err = Gateway::try_start(config, None).await.err().expect("refused").to_string();
    assert!(err.contains(":5:16: `listeners[0].tls.certificates`: a TLS listener needs at least one"), "{err}");
}

#[tokio::test]
async fn https_with_sni_alpn_and_tls_versions() {
    let pki = pki();
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(pki.dir.path(), ""), Some(&upstream)).await;
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];

    // SNI picks the certificate; ALPN h2 is preferred, http/1.1 served to clients asking only for it.
    let api = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2", b"http/1.1"], all, false)).await.expect("api");
    assert_eq!((api.status, api.alpn.as_deref()), (200, Some(&b"h2"[..])));
    assert!(cert_names(&api.server_cert).contains("api.example.test"));
    let admin = https_get(&gw, "admin.example.test", client_config(&pki, &[b"http/1.1"], all, false)).await.expect("admin");
    assert_eq!((admin.status, admin.alpn.as_deref()), (200, Some(&b"http/1.1"[..])));
    assert!(cert_names(&admin.server_cert).contains("admin.example.test"));
    // A client offering no ALPN at all is served too (the protocol is then read from its bytes).
    let plain = https_get(&gw, "api.example.test", client_config(&pki, &[], all, false)).await.expect("no alpn");
    assert_eq!((plain.status, plain.alpn), (200, None));
    // A name no certificate covers gets the first one, which the client then refuses.
    let err = https_get(&gw, "other.example.test", client_config(&pki, &[b"h2"], all, false)).await.err().expect("refused");
    assert!(err.contains("handshake"), "{err}");
    // TLS 1.2 and 1.3 both work.
    let v12 = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], &[&rustls::version::TLS12], false)).await.expect("1.2");
    assert_eq!((v12.status, v12.version), (200, Some(rustls::ProtocolVersion::TLSv1_2)));
    assert_eq!(api.version, Some(rustls::ProtocolVersion::TLSv1_3));

    // curl, as an operator checks it.
    let port = gw.addr().port();
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "--cacert"])
        .arg(pki.dir.path().join("server-ca.pem"))
        .args(["--resolve", &format!("api.example.test:{port}:127.0.0.1"), &format!("https://api.example.test:{port}/x")])
        .output()
        .await
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 2", "{}", String::from_utf8_lossy(&out.stderr));
    gw.stop().await;

    // A certificate file that does not exist is a config error naming it.
    let bad = config(pki.dir.path(), "").replace("api.pem", "missing.pem");
    let err = Gateway::try_start(&bad, Some(&upstream)).await.err().expect("refused").to_string();
    assert!(err.contains("listeners[0].tls") && err.contains("missing.pem"), "{err}");
}

/// `builtin:redirect` with `scheme = "https"` lets HTTPS requests through: no loop.
#[tokio::test]
async fn a_scheme_redirect_lets_https_through() {
    let pki = pki();
    let upstream = Upstream::start().await;
    let toml = config(pki.dir.path(), "") + "\n[[global.plugins]]\nplugin = \"builtin:redirect\"\nconfig = { scheme = \"https\" }\n";
    let gw = Gateway::start(&toml, Some(&upstream)).await;
    let seen = https_get(&gw, "api.example.test", client_config(&pki, &[b"http/1.1"], &[&rustls::version::TLS13], false)).await.expect("https");
    assert_eq!(seen.status, 200);
    assert_eq!(seen.headers.get("location"), None);
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn mtls_refuses_unknown_clients_and_names_known_ones_to_plugins() {
    let pki = pki();
    let upstream = Upstream::start().await;
    let mtls = format!("client_ca = \"{}/client-ca.pem\"", pki.dir.path().display());
    let gw = Gateway::start(&config(pki.dir.path(), &mtls), Some(&upstream)).await;
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];

    let known = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, true)).await.expect("client with a certificate");
    assert_eq!(known.status, 200);
    let subject = known.headers.get("x-context-tls.client.subject").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(subject.contains("CN=billing") && subject.contains("O=Example"), "{subject}");
    assert_eq!(known.headers.get("x-context-tls.client.sans").and_then(|v| v.to_str().ok()), Some("billing.internal"));
    // Without a certificate the connection is refused (TLS 1.3 reports it on first use).
    let unknown = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, false)).await;
    assert!(unknown.is_err(), "a client without a certificate got {:?}", unknown.map(|s| s.status));

    // curl with and without the client certificate.
    let port = gw.addr().port();
    let curl = |with_cert: bool| {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(pki.dir.path().join("server-ca.pem"));
        if with_cert {
            cmd.arg("--cert").arg(pki.dir.path().join("client.pem")).arg("--key").arg(pki.dir.path().join("client.key"));
        }
        cmd.args(["--resolve", &format!("api.example.test:{port}:127.0.0.1"), &format!("https://api.example.test:{port}/")]);
        cmd
    };
    assert_eq!(String::from_utf8_lossy(&curl(true).output().await.expect("curl").stdout), "200");
    assert_ne!(String::from_utf8_lossy(&curl(false).output().await.expect("curl").stdout), "200");
    gw.stop().await;
}

#[tokio::test]
async fn certificates_are_read_again_on_reload() {
    let mut pki = pki();
    let upstream = Upstream::start().await;
    let toml = config(pki.dir.path(), "");
    let gw = Gateway::start(&toml, Some(&upstream)).await;
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];
    let before = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, false)).await.expect("first certificate");
    assert_eq!(before.status, 200);

    // The certificate is renewed by another CA; served only once the config is reloaded.
    let old_ca = pki.server_ca.clone();
    let rotated = ca("Airlock test server CA, rotated");
    server_certificate(pki.dir.path(), "api", &rotated);
    let still = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, false)).await.expect("before reload");
    assert_eq!(still.server_cert, before.server_cert, "files are read on reload, not behind the operator's back");
    assert_eq!(gw.reload(&toml, Some(&upstream)).await.expect("reload"), 2);
    pki.server_ca = rotated.der().clone();
    let after = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, false)).await.expect("renewed certificate");
    assert_eq!(after.status, 200);
    assert_ne!(after.server_cert, before.server_cert);
    pki.server_ca = old_ca;
    let err = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, false)).await.err().expect("old CA refused");
    assert!(err.contains("handshake"), "{err}");

    // A broken key file: the reload is refused, naming the listener, and the renewed certificate stays.
    std::fs::write(pki.dir.path().join("api.key"), "not a key").expect("write");
    let err = gw.reload(&toml, Some(&upstream)).await.expect_err("refused").to_string();
    assert!(err.contains("listeners[0].tls"), "{err}");
    pki.server_ca = rotated.der().clone();
    let kept = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, false)).await.expect("kept");
    assert_eq!(kept.server_cert, after.server_cert);
    gw.stop().await;
}

/// `airlock_tls_certificate_expiry_timestamp_seconds` gives each served certificate's `notAfter`
/// by listener and file, for an alert before clients refuse it: updated when a renewed
/// certificate is reloaded, and gone for a certificate the config no longer serves.
#[tokio::test]
async fn each_served_certificate_has_its_expiry_in_metrics() {
    let pki = pki();
    let dir = pki.dir.path();
    let d = dir.display();
    let ca = ca("Airlock test server CA, expiring");
    certificate_valid(dir, "api", &ca, (2024, 1, 1), (2099, 1, 1));
    certificate_valid(dir, "admin", &ca, (2024, 1, 1), (2098, 1, 1));
    let upstream = Upstream::start().await;
    let toml = config(dir, "");
    let gw = Gateway::start(&toml, Some(&upstream)).await;
    let expiry = |file: &'static str| {
        let cert = format!("{d}/{file}");
        let gw = &gw;
        async move {
            let labels = [("listener", "127.0.0.1:0"), ("cert", cert.as_str())];
            metric_value(gw, "airlock_tls_certificate_expiry_timestamp_seconds", &labels).await
        }
    };
    // 2099-01-01 and 2098-01-01, 00:00:00 UTC.
    assert_eq!(expiry("api.pem").await, 4_070_908_800.0);
    assert_eq!(expiry("admin.pem").await, 4_039_372_800.0);

    // Renewed in place: the new date once reloaded.
    certificate_valid(dir, "api", &ca, (2024, 1, 1), (2100, 1, 1));
    assert_eq!(gw.reload(&toml, Some(&upstream)).await.expect("reload"), 2);
    assert_eq!(expiry("api.pem").await, 4_102_444_800.0);

    // No longer served: no series left for it.
    let only_api = toml.replace(&format!(", {{ cert = \"{d}/admin.pem\", key = \"{d}/admin.key\" }}"), "");
    assert_ne!(only_api, toml);
    assert_eq!(gw.reload(&only_api, Some(&upstream)).await.expect("reload"), 3);
    assert_eq!(expiry("admin.pem").await, 0.0, "absent");
    assert_eq!(expiry("api.pem").await, 4_102_444_800.0);
    gw.stop().await;
}

/// `--watch` reloads when a file the config reads changes, not only the config itself: a
/// certificate renewed in place (certbot, cert-manager) is served without a SIGHUP, and
/// renewed again right after that reload, again; a broken key written over it is tried once,
/// refused, and the renewed certificate stays.
#[tokio::test]
async fn a_watched_config_serves_a_renewed_certificate() {
    let mut pki = pki();
    let upstream = Upstream::start().await;
    let toml = config(pki.dir.path(), "");
    let gw = Gateway::start(&toml, Some(&upstream)).await;
    airlock::reload::reload_on_change(gw.live().clone(), std::time::Duration::from_millis(50)).expect("watch");
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];
    let before = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, false)).await.expect("first certificate");
    // Let the watch see the files as they are first.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let rotated = ca("Airlock test server CA, rotated");
    server_certificate(pki.dir.path(), "api", &rotated);
    for _ in 0..5000 {
        if gw.live().current().number == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(gw.live().current().number, 2, "the renewal is reloaded without a reload by hand");
    // Renewed again the moment that reload is done (a secret updated twice in a row), before
    // the watch's next look: still a change.
    let again = ca("Airlock test server CA, renewed twice");
    server_certificate(pki.dir.path(), "api", &again);
    pki.server_ca = again.der().clone();
    let mut renewed = None;
    for _ in 0..100 {
        if let Ok(reply) = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, false)).await {
            renewed = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let renewed = renewed.expect("the second renewal is served too");
    assert_ne!(renewed.server_cert, before.server_cert);
    assert_eq!(gw.live().current().number, 3);

    std::fs::write(pki.dir.path().join("api.key"), "not a key").expect("write");
    let metrics = &gw.inner().telemetry.metrics.reloads;
    for _ in 0..100 {
        if metrics.last_failed() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(metrics.last_failed(), "the broken key was tried");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(gw.live().current().number, 3, "kept");
    assert!(metrics.last_failed(), "still failed: the unchanged config text does not clear it");
    let m = airlock_tests::metrics::scrape(&airlock_tests::HttpClient::http1(), &gw, None).await;
    let errors = airlock_tests::metrics::sample(&m, "airlock_config_reloads_total", &[("result", "error")]);
    assert_eq!(errors, 1.0, "tried once, not at every look");
    let kept = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, false)).await.expect("kept");
    assert_eq!(kept.server_cert, renewed.server_cert);
    gw.stop().await;
}

/// An idle HTTP/1.1 keep-alive connection over TLS is parked like a cleartext one (hyper's
/// buffers given back, the TLS session kept), and the client's next request on it is served
/// with the same session: the mTLS identity still reaches plugins. A drain closes it at once.
#[tokio::test]
async fn an_idle_tls_keep_alive_connection_is_parked_and_serves_on() {
    let pki = pki();
    let upstream = Upstream::start().await;
    let mtls = format!("client_ca = \"{}/client-ca.pem\"", pki.dir.path().display());
    let gw = Gateway::start(&format!("[timeouts]\ndrain_ms = 30000\n{}", config(pki.dir.path(), &mtls)), Some(&upstream)).await;
    let parked = || metric_value(&gw, "airlock_parked_connections", &[]);
    let config = client_config(&pki, &[b"http/1.1"], &[&rustls::version::TLS13, &rustls::version::TLS12], true);

    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    let name = ServerName::try_from("api.example.test").expect("name");
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("handshake");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("http1");
    let client = tokio::spawn(conn);
    let mut get = async |path: &str| {
        let request = http::Request::get(path).header("host", "api.example.test").body(Empty::<Bytes>::new()).expect("request");
        let response = send.send_request(request).await.expect("the same connection serves on");
        let subject = response.headers().get("x-context-tls.client.subject").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.into_body().collect().await.expect("body").to_bytes();
        (subject.unwrap_or_default(), String::from_utf8_lossy(&body).into_owned())
    };

    for round in 0..3 {
        let path = format!("/round-{round}");
        let (subject, body) = get(&path).await;
        assert!(subject.contains("CN=billing"), "round {round}: {subject}");
        assert!(body.contains(&format!(r#""path":"{path}""#)), "round {round}: {body}");
        let mut waited = 0;
        while parked().await != 1.0 {
            waited += 1;
            assert!(waited < 100, "round {round}: the idle TLS connection was not parked");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    // Bytes that are not TLS under a parked session: that connection is closed, others serve on.
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    let name = ServerName::try_from("api.example.test").expect("name");
    let config = client_config(&pki, &[b"http/1.1"], &[&rustls::version::TLS13], true);
    let mut broken = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("handshake");
    broken.write_all(b"GET /before HTTP/1.1\r\nhost: api.example.test\r\n\r\n").await.expect("write");
    let mut answer = vec![0u8; 16384];
    let n = broken.read(&mut answer).await.expect("answer");
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
    let mut waited = 0;
    while parked().await != 2.0 {
        waited += 1;
        assert!(waited < 100, "the second idle TLS connection was not parked");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    broken.get_mut().0.write_all(b"\x17\x03\x03\x00\x05junk!").await.expect("write junk");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), broken.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "a connection with a broken record was left open");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    let (subject, body) = get("/after-junk").await;
    assert!(subject.contains("CN=billing") && body.contains("/after-junk"), "{subject} {body}");

    // A drain does not wait 30 s for a parked connection: it is closed at once.
    let started = std::time::Instant::now();
    gw.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "drain took {:?}", started.elapsed());
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), client).await;
    assert!(closed.is_ok(), "the client's connection was not closed by the drain");
}

/// WebSocket over an HTTPS listener (`wss://`): the switched connection is joined through the
/// client's TLS session, both ways.
#[tokio::test]
async fn websocket_over_a_tls_listener() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    let pki = pki();
    let ws = airlock_tests::websocket::EchoServer::start().await;
    let d = pki.dir.path().display();
    let toml = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{d}/api.pem\", key = \"{d}/api.key\" }}]\n\n\
         [upstreams.ws]\ntargets = [\"{}\"]\n\n[[routes]]\npath = \"/chat\"\nupstream = \"ws\"\n",
        ws.addr
    );
    let gw = Gateway::start(&toml, None).await;
    // With ALPN `http/1.1`, as browsers send for wss://; and with none, as many WebSocket
    // libraries do (the gateway then reads the protocol from the client's bytes).
    let alpns: [&[&[u8]]; 2] = [&[b"http/1.1"], &[]];
    for alpn in alpns {
        let config = client_config(&pki, alpn, &[&rustls::version::TLS13], false);
        let tcp = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
        let name = ServerName::try_from("api.example.test").expect("name");
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("handshake");
        let request = "wss://api.example.test/chat".into_client_request().expect("request");
        let (mut socket, response) = tokio_tungstenite::client_async(request, tls).await.expect("WebSocket handshake over TLS");
        assert_eq!(response.status(), 101, "ALPN {alpn:?}");
        for i in 0..3 {
            socket.send(Message::text(format!("over tls {i}"))).await.expect("send");
            let reply = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await;
            let reply = reply.unwrap_or_else(|_| panic!("no reply through the tunnel, ALPN {alpn:?}"));
            assert_eq!(reply.expect("reply").expect("message"), Message::text(format!("echo: over tls {i}")), "ALPN {alpn:?}");
        }
        socket.close(None).await.expect("close");
    }
    assert_eq!(ws.handshakes.lock().unwrap().len(), 2);
    gw.stop().await;
}

/// A plain HTTP request sent to a TLS listener (`http://` to the HTTPS port) is answered with a
/// 400 that says to use `https://`, as nginx answers it, not a TLS alert its client shows as
/// garbage (curl: "Received HTTP/0.9 when not allowed"). The listener then serves TLS as usual.
#[tokio::test]
async fn plain_http_to_a_tls_listener_is_told_to_use_https() {
    let pki = pki();
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(pki.dir.path(), ""), Some(&upstream)).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: api.example.test\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut answer)).await.expect("answered").expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer:?}");
    assert!(answer.contains("connection: close") && answer.contains("plain_http_on_https_port") && answer.contains("https://"), "{answer}");
    // With curl, as an operator would try it.
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/hello", gw.addr())])
        .output()
        .await
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400", "{}", String::from_utf8_lossy(&out.stderr));
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];
    let seen = https_get(&gw, "api.example.test", client_config(&pki, &[b"http/1.1"], all, false)).await.expect("https");
    assert_eq!(seen.status, 200);
    assert_eq!(upstream.hits(), 1, "the plain request went nowhere");
    gw.stop().await;
}

/// Writes `<name>.pem` and `<name>.key` into `dir`: a certificate for `<name>.example.test`
/// issued by `ca`, valid from `not_before` to `not_after`.
fn certificate_valid(dir: &Path, name: &str, ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.example.test")]).expect("params");
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params.signed_by(&key, &**ca).expect("sign");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write PEM");
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write PEM");
}

/// A listener certificate that has expired, or is not valid yet, is served (renewal may be on
/// its way) but said at load, by `airlock check` and by `airlock run`, naming the listener, the
/// certificate entry, the file and the date: clients refuse it, and the operator should learn it
/// from the gateway's log rather than from them.
#[tokio::test]
async fn an_expired_or_not_yet_valid_certificate_is_warned_about_at_load() {
    let pki = pki();
    let dir = pki.dir.path();
    let ca = ca("Airlock test server CA, dated");
    certificate_valid(dir, "old", &ca, (2020, 1, 1), (2020, 2, 1));
    certificate_valid(dir, "future", &ca, (2100, 1, 1), (2101, 1, 1));
    let d = dir.display();
    let port = airlock_tests::process::free_port();
    let toml = format!(
        "[[listeners]]\naddress = \"127.0.0.1:{port}\"\n[listeners.tls]\ncertificates = [{{ cert = \"{d}/api.pem\", key = \"{d}/api.key\" }}, {{ cert = \"{d}/old.pem\", key = \"{d}/old.key\" }}, {{ cert = \"{d}/future.pem\", key = \"{d}/future.key\" }}]\n\n[[routes]]\npath = \"/\"\nplugins = [{{ plugin = \"builtin:respond\" }}]\n"
    );
    let expired = format!("listeners[1].tls.certificates[1].cert `{d}/old.pem`: the certificate expired on Feb  1 00:00:00 2020 +00:00");
    let not_yet = format!("listeners[1].tls.certificates[2].cert `{d}/future.pem`: the certificate is not valid until Jan  1 00:00:00 2100 +00:00");
    // As `run` below sees it: after a cleartext listener of its own.
    let stderr = airlock_tests::check_warnings(dir, &format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n{toml}"));
    assert!(stderr.contains(&expired) && stderr.contains(&not_yet), "{stderr}");
    assert!(!stderr.contains("certificates[0]"), "the valid one is not named: {stderr}");

    let upstream = Upstream::start().await;
    let gw = airlock_tests::process::GatewayProcess::start_logging(&toml, &upstream, &[]).await;
    let log = gw.log();
    assert!(log.contains(&expired) && log.contains(&not_yet), "{log}");
    // Served all the same: a client trusting its CA gets it, and finds it expired.
    std::fs::write(dir.join("dated-ca.pem"), ca.pem()).expect("write PEM");
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "old.example.test", "-CAfile"])
        .arg(dir.join("dated-ca.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run openssl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Verify return code: 10 (certificate has expired)"), "{stdout}");
}

/// An Authority Information Access extension naming where the issuer's certificate is
/// (`caIssuers`), as public CAs' certificates carry: DER written out, rcgen has no builder for it.
fn ca_issuers(uri: &str) -> rcgen::CustomExtension {
    let mut description = vec![0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02, 0x86, uri.len() as u8];
    description.extend_from_slice(uri.as_bytes());
    let mut access = vec![0x30, description.len() as u8];
    access.extend(description);
    let mut content = vec![0x30, access.len() as u8];
    content.extend(access);
    rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], content)
}

/// A publicly issued certificate served without its intermediate (`cert.pem` where
/// `fullchain.pem` was meant) is served, but `airlock check` says so, naming the entry, the file
/// and the issuer: curl and most API clients refuse it while browsers accept it. The same
/// certificate with its intermediate, and one issued straight by a private CA, are not named.
#[tokio::test]
async fn a_public_certificate_without_its_intermediate_is_warned_about_at_load() {
    let pki = pki();
    let dir = pki.dir.path();
    let root = ca("Airlock test root");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Airlock test intermediate R1");
    let intermediate = rcgen::CertifiedIssuer::signed_by(params, rcgen::KeyPair::generate().expect("key"), &root).expect("intermediate");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["public.example.test".to_owned()]).expect("params");
    params.custom_extensions.push(ca_issuers("http://r1.ca.example.test/"));
    let leaf = params.signed_by(&key, &*intermediate).expect("sign");
    std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("write PEM");
    std::fs::write(dir.join("fullchain.pem"), format!("{}{}", leaf.pem(), intermediate.pem())).expect("write PEM");
    std::fs::write(dir.join("public.key"), key.serialize_pem()).expect("write PEM");
    let d = dir.display();
    let toml = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{d}/api.pem\", key = \"{d}/api.key\" }}, {{ cert = \"{d}/cert.pem\", key = \"{d}/public.key\" }}, {{ cert = \"{d}/fullchain.pem\", key = \"{d}/public.key\" }}]\n\n[[routes]]\npath = \"/\"\nplugins = [{{ plugin = \"builtin:respond\" }}]\n"
    );
    let stderr = airlock_tests::check_warnings(dir, &toml);
    let warned = format!(
        "listeners[0].tls.certificates[1].cert `{d}/cert.pem`: the file holds the certificate alone, without the intermediate certificate of its issuer `CN=Airlock test intermediate R1`"
    );
    assert!(stderr.contains(&warned), "{stderr}");
    assert!(stderr.contains("`fullchain.pem` rather than `cert.pem`"), "{stderr}");
    assert!(!stderr.contains("certificates[0]") && !stderr.contains("certificates[2]"), "only the lone public one is named: {stderr}");
}

/// A client certificate whose CN holds a comma (`billing, O=Admin`) and whose URI SAN holds one
/// (`spiffe://example.test/a,admin.internal`), as a CA that signs the names clients ask for would
/// issue: plugins read the comma escaped (RFC 4514, as nginx's `$ssl_client_s_dn` writes it), so
/// neither passes for an `O=Admin` attribute or an `admin.internal` SAN of a certificate that
/// has none.
#[tokio::test]
async fn a_comma_in_a_client_certificate_cannot_forge_another_attribute_or_san() {
    let mut pki = pki();
    let client_ca = ca("Airlock test client CA, lax");
    std::fs::write(pki.dir.path().join("client-ca.pem"), client_ca.pem()).expect("write PEM");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["billing.internal".to_owned()]).expect("params");
    params.subject_alt_names.push(rcgen::SanType::URI("spiffe://example.test/a,admin.internal".try_into().expect("URI")));
    params.distinguished_name.push(rcgen::DnType::CommonName, "billing, O=Admin");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example");
    pki.client_cert = params.signed_by(&key, &*client_ca).expect("sign").der().clone();
    pki.client_key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let upstream = Upstream::start().await;
    let mtls = format!("client_ca = \"{}/client-ca.pem\"", pki.dir.path().display());
    let gw = Gateway::start(&config(pki.dir.path(), &mtls), Some(&upstream)).await;
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];
    let seen = https_get(&gw, "api.example.test", client_config(&pki, &[b"h2"], all, true)).await.expect("client with a certificate");
    assert_eq!(seen.status, 200);
    let context = |key: &str| seen.headers.get(format!("x-context-{key}")).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(context("tls.client.subject"), r"CN=billing\, O=Admin, O=Example");
    assert_eq!(context("tls.client.sans"), r"billing.internal,spiffe://example.test/a\,admin.internal");
    gw.stop().await;
}
