//! Listeners with `proxy_protocol = true`, as behind an L4 balancer (AWS NLB, HAProxy
//! `send-proxy`): real TCP clients write PROXY protocol v1 and v2 headers (the v2 bytes built by
//! hand from HAProxy's spec, independently of the gateway's parser) before HTTP/1.1, HTTP/2 and
//! TLS, and the announced client must be the connection's peer for everything: the
//! `X-Forwarded-For` the upstream gets, `ip-restrict`, the access log, `trusted_proxies` and
//! `limits.max_connections_per_client`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_tests::{Gateway, HttpClient, Upstream, access_log_line, metric_value};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
[[listeners]]
address = "127.0.0.1:0"
proxy_protocol = true
trusted_proxies = ["10.0.0.0/8"]

[access_log]
enabled = true
path = "access.log"

[timeouts]
idle_ms = 1500

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
id = "restricted"
path = "/restricted"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:ip-restrict"
config = { allow = ["203.0.113.7/32", "2001:db8::7/128", "198.51.100.9/32", "2001:db8:1::9/128", "198.51.100.77/32"] }

[[routes]]
id = "echo"
path_prefix = "/"
upstream = "backend"
"#;

/// A v1 header announcing `client` (to a balancer address on port 443).
fn v1(client: SocketAddr) -> Vec<u8> {
    match client {
        SocketAddr::V4(c) => format!("PROXY TCP4 {} 10.0.0.1 {} 443\r\n", c.ip(), c.port()),
        SocketAddr::V6(c) => format!("PROXY TCP6 {} 2001:db8::1 {} 443\r\n", c.ip(), c.port()),
    }
    .into_bytes()
}

/// A v2 PROXY header announcing `client` over TCP, with a NOOP TLV as balancers add TLVs (spec
/// 2.2: the 12-byte signature, version 2 and command PROXY, family and protocol, the length of
/// the rest, source and destination addresses, source and destination ports).
fn v2(client: SocketAddr) -> Vec<u8> {
    let mut rest = Vec::new();
    let family = match client {
        SocketAddr::V4(c) => {
            rest.extend(c.ip().octets());
            rest.extend([10, 0, 0, 1]);
            0x11
        }
        SocketAddr::V6(c) => {
            rest.extend(c.ip().octets());
            rest.extend("2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
            0x21
        }
    };
    rest.extend(client.port().to_be_bytes());
    rest.extend(443u16.to_be_bytes());
    rest.extend([0x04, 0x00, 0x03, b'a', b'b', b'c']);
    v2_raw(0x21, family, &rest)
}

/// A v2 header with these version-command and family-protocol bytes and `rest` after them.
fn v2_raw(version_command: u8, family: u8, rest: &[u8]) -> Vec<u8> {
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    bytes.extend([version_command, family]);
    bytes.extend(u16::try_from(rest.len()).unwrap().to_be_bytes());
    bytes.extend(rest);
    bytes
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A TCP connection to the gateway that has written `header`.
async fn proxied(gw: &Gateway, header: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
    stream.write_all(header).await.expect("write the PROXY header");
    stream
}

/// GET `path` (with `headers`) over HTTP/1.1 on `stream`: the status and the body.
async fn get_over<S>(stream: S, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Bytes)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut request = Request::get(path).header("host", "api.example.test");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = send.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.expect("response");
    let status = response.status();
    (status, response.into_body().collect().await.expect("body").to_bytes())
}

/// What the upstream echo says it received as `name`.
fn upstream_header(body: &[u8], name: &str) -> String {
    let echo: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    let values: Vec<&str> = echo["headers"][name].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    values.join(", ")
}

/// Reads until the gateway closes `stream`: `Some(what it sent)`, or `None` if it was still open
/// after `wait`.
async fn until_closed(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.is_ok().then_some(got)
}

#[tokio::test]
async fn the_announced_client_is_the_peer_for_forwarding_ip_restrict_and_the_access_log() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(CONFIG, Some(&upstream)).await;
    let log = gw.dir.path().join("access.log");
    let cases = [
        ("v1 TCP4", v1(addr("203.0.113.7:51234")), "203.0.113.7", v1(addr("203.0.113.8:51234"))),
        ("v1 TCP6", v1(addr("[2001:db8::7]:51234")), "2001:db8::7", v1(addr("[2001:db8::8]:51234"))),
        ("v2 INET", v2(addr("198.51.100.9:40000")), "198.51.100.9", v2(addr("198.51.100.10:40000"))),
        ("v2 INET6", v2(addr("[2001:db8:1::9]:40000")), "2001:db8:1::9", v2(addr("[2001:db8:1::10]:40000"))),
    ];
    for (i, (case, header, ip, other)) in cases.iter().enumerate() {
        let id = format!("pp-{i}");
        let (status, body) = get_over(proxied(&gw, header).await, "/echo", &[("x-request-id", &id)]).await;
        assert_eq!(status, 200, "{case}");
        assert_eq!(upstream_header(&body, "x-forwarded-for"), *ip, "{case}: the upstream sees the announced client");
        assert_eq!(access_log_line(&log, &id).await["client_ip"], *ip, "{case}");
        let (status, _) = get_over(proxied(&gw, header).await, "/restricted", &[]).await;
        assert_eq!(status, 200, "{case}: ip-restrict allows the announced client");
        let (status, _) = get_over(proxied(&gw, other).await, "/restricted", &[]).await;
        assert_eq!(status, 403, "{case}: another announced client, from the same TCP peer, is refused");
    }

    // `trusted_proxies` applies to the announced peer: an L7 proxy behind the L4 balancer.
    let header = v1(addr("10.1.2.3:5000"));
    let xff = [("x-forwarded-for", "192.0.2.1, 198.51.100.77"), ("x-request-id", "pp-trusted")];
    let (status, body) = get_over(proxied(&gw, &header).await, "/echo", &xff).await;
    assert_eq!(status, 200);
    assert_eq!(upstream_header(&body, "x-forwarded-for"), "192.0.2.1, 198.51.100.77, 10.1.2.3");
    assert_eq!(access_log_line(&log, "pp-trusted").await["client_ip"], "198.51.100.77");
    let (status, _) = get_over(proxied(&gw, &header).await, "/restricted", &xff[..1]).await;
    assert_eq!(status, 200, "the client named behind the trusted announced proxy is allowed");
    // An announced client that is not a trusted proxy: its X-Forwarded-For is not believed.
    let (status, _) = get_over(proxied(&gw, &v1(addr("203.0.113.8:1"))).await, "/restricted", &xff[..1]).await;
    assert_eq!(status, 403);

    // The effective config shows the key.
    let config = HttpClient::http1().get(&gw.admin_url("/admin/config")).await.json();
    assert_eq!(config["listeners"][0]["proxy_protocol"], true, "{config}");
    gw.stop().await;
}

#[tokio::test]
async fn a_header_written_slowly_in_pieces_is_read_whole_and_the_request_after_it_is_not_lost() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(CONFIG, Some(&upstream)).await;
    let request = b"GET /restricted HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    for header in [v1(addr("203.0.113.7:51234")), v2(addr("198.51.100.9:40000"))] {
        let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        // The header in four writes, the last with the request in the same segment.
        let cuts = [0, 3, 9, header.len() - 2, header.len()];
        for piece in cuts.windows(2) {
            let mut bytes = header[piece[0]..piece[1]].to_vec();
            if piece[1] == header.len() {
                bytes.extend_from_slice(request);
            }
            stream.write_all(&bytes).await.expect("write");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let answer = until_closed(&mut stream, Duration::from_secs(5)).await.expect("answered and closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn connections_without_a_valid_header_are_closed_unanswered_and_others_still_served() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(CONFIG, Some(&upstream)).await;
    // A header that never completes, kept open meanwhile.
    let mut stuck = TcpStream::connect(gw.addr()).await.expect("connect");
    stuck.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 512").await.expect("write");

    // No header: a client speaking HTTP straight to the listener. Then garbage.
    for bytes in [&b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n"[..], b"\x00\x01garbage\r\n\r\n"] {
        let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        let answer = until_closed(&mut stream, Duration::from_secs(5)).await.expect("closed at once");
        assert!(answer.is_empty(), "answered: {}", String::from_utf8_lossy(&answer));
    }
    // Others are served meanwhile.
    let (status, _) = get_over(proxied(&gw, &v1(addr("203.0.113.7:1"))).await, "/echo", &[]).await;
    assert_eq!(status, 200);
    // The incomplete header is given timeouts.idle_ms (1.5 s here), as a connection's first bytes are.
    let answer = until_closed(&mut stuck, Duration::from_secs(5)).await.expect("closed after timeouts.idle_ms");
    assert!(answer.is_empty());
    assert_eq!(metric_value(&gw, "airlock_connections_cut_total", &[("reason", "proxy_protocol")]).await, 3.0);
    let (status, _) = get_over(proxied(&gw, &v2(addr("198.51.100.9:1"))).await, "/restricted", &[]).await;
    assert_eq!(status, 200, "still served after");
    // A connection closed before any byte (a balancer's TCP health check) is no cut.
    drop(TcpStream::connect(gw.addr()).await.expect("connect"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric_value(&gw, "airlock_connections_cut_total", &[("reason", "proxy_protocol")]).await, 3.0);
    gw.stop().await;
}

/// v2 LOCAL (a balancer's own health check), v1 UNKNOWN, and v2 PROXY over DGRAM (UDP over
/// INET or INET6, `0x12`, `0x22`: no TCP connection of the gateway's can carry one, and spec 2.2
/// has a receiver treat a combination it does not support as UNSPEC): served, with the TCP peer
/// as the client. The DGRAM headers announce a client `ip-restrict` would allow, so a gateway
/// that took it would answer `/restricted` with a 200.
#[tokio::test]
async fn v2_local_dgram_and_v1_unknown_are_served_with_the_tcp_peer_as_the_client() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(CONFIG, Some(&upstream)).await;
    let dgram = |client: &str| {
        let mut header = v2(addr(client));
        // The family byte's low nibble: STREAM (1) to DGRAM (2).
        header[13] = header[13] & 0xf0 | 0x02;
        header
    };
    let cases = [
        ("v2 LOCAL", v2_raw(0x20, 0x00, b"")),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec()),
        ("v2 DGRAM INET", dgram("198.51.100.9:40000")),
        ("v2 DGRAM INET6", dgram("[2001:db8:1::9]:40000")),
    ];
    assert_eq!((cases[2].1[13], cases[3].1[13]), (0x12, 0x22));
    for (case, header) in cases {
        let (status, body) = get_over(proxied(&gw, &header).await, "/echo", &[]).await;
        assert_eq!(status, 200, "{case}");
        assert_eq!(upstream_header(&body, "x-forwarded-for"), "127.0.0.1", "{case}");
        let (status, _) = get_over(proxied(&gw, &header).await, "/restricted", &[]).await;
        assert_eq!(status, 403, "{case}: the TCP peer is not an allowed client");
    }
    gw.stop().await;
}

#[tokio::test]
async fn http2_prior_knowledge_after_the_header() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(CONFIG, Some(&upstream)).await;
    for header in [v1(addr("203.0.113.7:51234")), v2(addr("[2001:db8:1::9]:40000"))] {
        let stream = proxied(&gw, &header).await;
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
        tokio::spawn(conn);
        for path in ["/echo", "/restricted"] {
            let request = Request::get(format!("http://api.example.test{path}")).body(Empty::<Bytes>::new()).unwrap();
            let response = send.send_request(request).await.expect("response");
            assert_eq!(response.version(), http::Version::HTTP_2);
            assert_eq!(response.status(), 200, "{path}");
            let body = response.into_body().collect().await.expect("body").to_bytes();
            if path == "/echo" {
                let ip = if header.starts_with(b"PROXY") { "203.0.113.7" } else { "2001:db8:1::9" };
                assert_eq!(upstream_header(&body, "x-forwarded-for"), ip);
            }
        }
    }
    gw.stop().await;
}

/// A server certificate for `api.example.test` issued by a fresh CA, written into `dir`; the
/// CA's certificate.
fn certificate(dir: &std::path::Path) -> CertificateDer<'static> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["api.example.test".to_owned()]).unwrap().signed_by(&key, &*ca).unwrap();
    std::fs::write(dir.join("api.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("api.key"), key.serialize_pem()).unwrap();
    ca.der().clone()
}

#[tokio::test]
async fn on_a_tls_listener_the_header_comes_before_the_client_hello() {
    let upstream = Upstream::start().await;
    let certs = tempfile::tempdir().unwrap();
    let ca = certificate(certs.path());
    let d = certs.path().display();
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n[listeners.tls]\n\
         certificates = [{{ cert = \"{d}/api.pem\", key = \"{d}/api.key\" }}]\n\n\
         [upstreams.backend]\ntargets = [\"{{upstream}}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n"
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let tls = |alpn: &[u8]| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    let name = ServerName::try_from("api.example.test").unwrap();

    // HTTP/1.1 (ALPN http/1.1) after a v2 header.
    let stream = tls(b"http/1.1").connect(name.clone(), proxied(&gw, &v2(addr("198.51.100.9:40000"))).await).await.expect("TLS handshake");
    let (status, body) = get_over(stream, "/echo", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(upstream_header(&body, "x-forwarded-for"), "198.51.100.9");
    assert_eq!(upstream_header(&body, "x-forwarded-proto"), "https");

    // HTTP/2 (ALPN h2) after a v1 header.
    let stream = tls(b"h2").connect(name.clone(), proxied(&gw, &v1(addr("203.0.113.7:51234"))).await).await.expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(conn);
    let response = send.send_request(Request::get("https://api.example.test/echo").body(Empty::<Bytes>::new()).unwrap()).await.expect("response");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(upstream_header(&body, "x-forwarded-for"), "203.0.113.7");

    // A ClientHello without the header first is closed, the handshake never answered.
    let tcp = TcpStream::connect(gw.addr()).await.expect("connect");
    assert!(tls(b"http/1.1").connect(name, tcp).await.is_err(), "a TLS client without a PROXY header was served");
    gw.stop().await;
}

#[tokio::test]
async fn max_connections_per_client_counts_the_announced_client_not_the_balancer() {
    let upstream = Upstream::start().await;
    let config = format!("{CONFIG}\n[limits]\nmax_connections_per_client = 1\n");
    let gw = Gateway::start(&config, Some(&upstream)).await;
    // Two clients, one TCP peer (127.0.0.1, the balancer): each gets its own connection.
    let open = |client: &'static str| {
        let gw = &gw;
        async move {
            let stream = proxied(gw, &v1(addr(client))).await;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
            tokio::spawn(conn);
            let request = Request::get("/echo").header("host", "x").body(Empty::<Bytes>::new()).unwrap();
            let response = send.send_request(request).await.expect("served");
            assert_eq!(response.status(), 200, "{client}");
            let _ = response.into_body().collect().await;
            send
        }
    };
    let _a = open("203.0.113.7:1000").await;
    let _b = open("198.51.100.9:1000").await;

    // A second connection of the first client is over its limit: closed unanswered.
    let mut again = proxied(&gw, &v1(addr("203.0.113.7:1001"))).await;
    let _ = again.write_all(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let answer = until_closed(&mut again, Duration::from_secs(5)).await.expect("closed at once");
    assert!(answer.is_empty(), "answered: {}", String::from_utf8_lossy(&answer));
    assert_eq!(metric_value(&gw, "airlock_connections_cut_total", &[("reason", "client_limit")]).await, 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn a_misspelt_or_mistyped_key_is_refused_at_its_line() {
    for (line, expected) in [("proxy_protcol = true", "proxy_protcol"), ("proxy_protocol = \"yes\"", "proxy_protocol")] {
        let config = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n{line}\n");
        let err = Gateway::try_start(&config, None).await.err().expect("refused").to_string();
        assert!(err.contains("airlock.toml:3") && err.contains(expected), "{line}: {err}");
    }
}

/// `proxy_protocol_from`: only the balancers it names may send the header. The test's client is
/// 127.0.0.1: a listener that allows only other networks closes its connections before reading
/// them, a valid header or not, counts them apart from malformed headers, and is then still
/// served to allowed peers; one that allows 127.0.0.0/8 serves the same connection.
#[tokio::test]
async fn only_peers_in_proxy_protocol_from_may_announce_a_client() {
    let upstream = Upstream::start().await;
    let config = |from: &str| CONFIG.replace("proxy_protocol = true\n", &format!("proxy_protocol = true\nproxy_protocol_from = [{from}]\n"));
    let gw = Gateway::start(&config("\"10.0.0.0/8\", \"192.0.2.1\""), Some(&upstream)).await;
    for header in [v1(addr("198.51.100.9:1")), v2(addr("203.0.113.7:1"))] {
        let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
        // The gateway may have closed it already: a failed write is what the test expects too.
        let _ = stream.write_all(&header).await;
        let _ = stream.write_all(b"GET /restricted HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let answer = until_closed(&mut stream, Duration::from_secs(5)).await.expect("closed at once");
        assert!(answer.is_empty(), "answered: {}", String::from_utf8_lossy(&answer));
    }
    assert_eq!(metric_value(&gw, "airlock_connections_cut_total", &[("reason", "proxy_protocol_peer")]).await, 2.0);
    assert_eq!(metric_value(&gw, "airlock_connections_cut_total", &[("reason", "proxy_protocol")]).await, 0.0);
    gw.stop().await;

    let gw = Gateway::start(&config("\"192.0.2.1\", \"127.0.0.0/8\""), Some(&upstream)).await;
    let (status, body) = get_over(proxied(&gw, &v1(addr("198.51.100.9:1"))).await, "/restricted", &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(upstream_header(&body, "x-forwarded-for"), "198.51.100.9", "the announced client, from an allowed balancer");
    assert_eq!(metric_value(&gw, "airlock_connections_cut_total", &[("reason", "proxy_protocol_peer")]).await, 0.0);
    gw.stop().await;
}

#[tokio::test]
async fn proxy_protocol_from_is_refused_at_its_line_when_malformed_or_without_proxy_protocol() {
    let bad = "[[listeners]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"10.0.0.300\"]\n";
    let err = Gateway::try_start(bad, None).await.err().expect("refused").to_string();
    assert!(err.contains("airlock.toml:4") && err.contains("listeners[0].proxy_protocol_from[1]") && err.contains("10.0.0.300"), "{err}");
    let alone = "[[listeners]]\naddress = \"127.0.0.1:0\"\nproxy_protocol_from = [\"10.0.0.0/8\"]\n";
    let err = Gateway::try_start(alone, None).await.err().expect("refused").to_string();
    assert!(err.contains("airlock.toml:3") && err.contains("needs `proxy_protocol = true`"), "{err}");
}
