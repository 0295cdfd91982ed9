//! The `files` and `http-client` capabilities end to end, and what `builtin:jwt` does with them:
//! keys and secrets from granted files, JWKS documents from a file or from a real HTTP server,
//! rotation, and the limits of each grant.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_tests::{Gateway, HttpClient, Reply, Upstream};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

const P256_PRIVATE: &str = include_str!("../fixtures/jwt/p256-private.pem");
const P256_PUBLIC: &str = include_str!("../fixtures/jwt/p256-public.pem");
const ED_PRIVATE: &str = include_str!("../fixtures/jwt/ed-private.pem");
const ED_PUBLIC: &str = include_str!("../fixtures/jwt/ed-public.pem");
const HS_SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER inside a PEM block.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

/// The P-256 fixture key as a JWK: the SPKI ends with the 65-byte point `04 || x || y`.
fn p256_jwk(kid: &str) -> serde_json::Value {
    let der = der(P256_PUBLIC);
    let point = &der[der.len() - 65..];
    serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
        "x": b64url(&point[1..33]), "y": b64url(&point[33..])})
}

/// The Ed25519 fixture key as a JWK (no `alg`: EdDSA follows from `OKP`/`Ed25519`).
fn ed_jwk(kid: &str) -> serde_json::Value {
    let der = der(ED_PUBLIC);
    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64url(&der[der.len() - 32..])})
}

fn jwks(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn token(alg: Algorithm, kid: &str) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
        _ => EncodingKey::from_secret(HS_SECRET.as_bytes()),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    encode(&header, &serde_json::json!({"sub": "alice", "exp": now() + 600}), &key).unwrap()
}

async fn call(client: &HttpClient, gw: &Gateway, token: &str) -> Reply {
    client.request("GET", &gw.url("/api"), &[("authorization", &format!("Bearer {token}"))], b"").await
}

/// A real HTTP server standing in for an identity provider's JWKS endpoint: serves whatever
/// document it holds now (a 503 while it holds none), and counts fetches.
struct JwksServer {
    addr: SocketAddr,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(document: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (document.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (doc, count) = (doc.clone(), count.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (doc, count) = (doc.clone(), count.clone());
                        async move {
                            let response = if req.uri().path() == "/jwks" {
                                count.fetch_add(1, Ordering::SeqCst);
                                let body = doc.lock().unwrap().clone();
                                // No document: the identity provider is down.
                                let status = if body.is_empty() { 503 } else { 200 };
                                hyper::Response::builder().status(status).header("content-type", "application/json").body(Full::new(Bytes::from(body)))
                            } else {
                                hyper::Response::builder().status(404).body(Full::new(Bytes::new()))
                            };
                            Ok::<_, Infallible>(response.unwrap())
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Self { addr, document, fetches, task }
    }

    fn set(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwt_url_config(idp: &JwksServer, allow: &str) -> String {
    format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.idp-jwt]
source = "builtin:jwt"
capabilities = ["http-client"]
http_client = {{ allow = ["{allow}"], timeout_ms = 2000 }}
pool_size = 1

[[routes]]
path = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "idp-jwt"
config = {{ jwks_url = "http://{addr}/jwks", jwks_min_refresh_secs = 1 }}
"#,
        addr = idp.addr
    )
}

#[tokio::test]
async fn jwks_url_keys_verify_rotate_and_refetch_at_a_bounded_rate() {
    let upstream = Upstream::start().await;
    let idp = JwksServer::start(jwks(&[p256_jwk("k1")])).await;
    let gw = Gateway::start(&jwt_url_config(&idp, &format!("http://{}", idp.addr)), Some(&upstream)).await;
    let client = HttpClient::http1();

    let r = call(&client, &gw, &token(Algorithm::ES256, "k1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fetched = idp.fetches();
    assert!(fetched >= 1, "the JWKS was fetched from the server");
    for _ in 0..5 {
        assert_eq!(call(&client, &gw, &token(Algorithm::ES256, "k1")).await.status, 200);
    }
    assert_eq!(idp.fetches(), fetched, "known keys are served from memory, not refetched per request");

    // The identity provider rotates to k2. A token signed with k2 names an unknown kid: the
    // plugin refetches and accepts it; k1 is gone from the document, so it is refused afterwards.
    idp.set(jwks(&[ed_jwk("k2")]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = call(&client, &gw, &token(Algorithm::EdDSA, "k2")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), Vec::<String>::new(), "no consumer without consumer_claim");
    assert_eq!(call(&client, &gw, &token(Algorithm::ES256, "k1")).await.status, 401);

    // Made-up kids cannot make the gateway hammer the identity provider: one refetch per second.
    let before = idp.fetches();
    for i in 0..10 {
        let r = call(&client, &gw, &token(Algorithm::EdDSA, &format!("bogus-{i}"))).await;
        assert_eq!(r.status, 401);
    }
    assert!(idp.fetches() - before <= 1, "{} refetches for 10 unknown kids", idp.fetches() - before);
    gw.stop().await;
}

/// While the JWKS has never loaded (the identity provider down or serving no document since
/// the gateway started), a token no key can be had to check is a 503 `auth_unavailable` with
/// `Retry-After`, as forward-auth and oauth2-introspection answer their outages: before, a 401
/// `invalid_token`, which tells a client holding a valid token to drop it. Once loaded, a token
/// no key verifies is a 401 again, and a malformed one is a 401 all along.
#[tokio::test]
async fn a_token_while_the_jwks_has_never_loaded_is_a_503_not_invalid() {
    let upstream = Upstream::start().await;
    let idp = JwksServer::start(String::new()).await;
    let gw = Gateway::start(&jwt_url_config(&idp, &format!("http://{}", idp.addr)), Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = call(&client, &gw, &token(Algorithm::ES256, "k1")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (503, Some("auth_unavailable")), "{}", r.text());
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    assert_eq!(call(&client, &gw, "not.a-token").await.status, 401, "a malformed token is the client's");
    idp.set(jwks(&[p256_jwk("k1")]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&client, &gw, &token(Algorithm::ES256, "k1")).await.status, 200);
    assert_eq!(call(&client, &gw, &token(Algorithm::EdDSA, "other")).await.status, 401, "loaded: a token no key verifies is invalid");
    gw.stop().await;
}

#[tokio::test]
async fn jwks_url_outside_the_grant_is_a_config_error() {
    let idp = JwksServer::start(jwks(&[p256_jwk("k1")])).await;
    // Granted another origin (another port on the same host): refused, and nothing was fetched.
    let err = Gateway::try_start(&jwt_url_config(&idp, "http://127.0.0.1:1"), None).await.err().unwrap().to_string();
    assert!(err.contains("not in this plugin's `http_client.allow`"), "{err}");
    assert!(err.contains("jwks_url"), "{err}");
    // No grant at all: the built-in may import http-client, but reaches nothing.
    let config = format!(
        r#"
[[routes]]
path = "/api"
[[routes.plugins]]
plugin = "builtin:jwt"
config = {{ jwks_url = "http://{}/jwks" }}
"#,
        idp.addr
    );
    let err = Gateway::try_start(&config, None).await.err().unwrap().to_string();
    assert!(err.contains("not granted `http-client`"), "{err}");
    assert_eq!(idp.fetches(), 0);
    // A grant with a path, or the table without the capability, names the key.
    let bad = jwt_url_config(&idp, "http://127.0.0.1:80/keys");
    let err = Gateway::try_start(&bad, None).await.err().unwrap().to_string();
    assert!(err.contains("plugins.idp-jwt.http_client.allow") && err.contains("without a path"), "{err}");
    let bad = jwt_url_config(&idp, "http://127.0.0.1").replace("capabilities = [\"http-client\"]\n", "");
    let err = Gateway::try_start(&bad, None).await.err().unwrap().to_string();
    assert!(err.contains("plugins.idp-jwt.http_client") && err.contains("not granted"), "{err}");
}

fn jwt_files_config(dir: &std::path::Path, plugin_config: &str) -> String {
    format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.file-jwt]
source = "builtin:jwt"
capabilities = ["files"]
files = {{ dir = "{dir}" }}
pool_size = 1

[[routes]]
path = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "file-jwt"
config = {plugin_config}
"#,
        dir = dir.display()
    )
}

#[tokio::test]
async fn jwks_file_and_secret_files_come_from_the_granted_directory() {
    let upstream = Upstream::start().await;
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("jwks.json"), jwks(&[p256_jwk("k1")])).unwrap();
    std::fs::write(granted.path().join("hs.key"), format!("{HS_SECRET}\n")).unwrap();
    let config = jwt_files_config(
        granted.path(),
        r#"{ jwks_file = "jwks.json", jwks_min_refresh_secs = 1, keys = [{ kid = "hs", alg = "HS256", secret_file = "hs.key" }] }"#,
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    assert_eq!(call(&client, &gw, &token(Algorithm::ES256, "k1")).await.status, 200);
    let r = call(&client, &gw, &token(Algorithm::HS256, "hs")).await;
    assert_eq!(r.status, 200, "the secret was read from hs.key (its newline dropped): {}", r.text());

    // Rotation by replacing the file.
    std::fs::write(granted.path().join("jwks.json"), jwks(&[ed_jwk("k2")])).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&client, &gw, &token(Algorithm::EdDSA, "k2")).await.status, 200);
    assert_eq!(call(&client, &gw, &token(Algorithm::ES256, "k1")).await.status, 401);
    gw.stop().await;

    // Outside the granted directory nothing can be read: `..` does not escape it.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("jwks.json"), jwks(&[p256_jwk("k1")])).unwrap();
    let escape = format!("../{}/jwks.json", outside.path().file_name().unwrap().to_string_lossy());
    let config = jwt_files_config(granted.path(), &format!(r#"{{ jwks_file = "{escape}" }}"#));
    let err = Gateway::try_start(&config, None).await.err().unwrap().to_string();
    assert!(err.contains("jwks_file") && err.contains("cannot read"), "{err}");
    // And without a `files` grant the built-in has no directory at all.
    let config = "[[routes]]\npath = \"/api\"\n[[routes.plugins]]\nplugin = \"builtin:jwt\"\nconfig = { jwks_file = \"jwks.json\" }\n";
    let err = Gateway::try_start(config, None).await.err().unwrap().to_string();
    assert!(err.contains("cannot read `jwks.json`"), "{err}");
}

#[tokio::test]
async fn files_grant_is_read_only_and_confined() {
    let upstream = Upstream::start().await;
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("hello.txt"), "hello from the grant\n").unwrap();
    let config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.reader]
source = "{{plugin:reads-file}}"
capabilities = ["files"]
files = {{ dir = "{}" }}

[[routes]]
path = "/read"
upstream = "backend"
plugins = [{{ plugin = "reader" }}]
"#,
        granted.path().display()
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let read = |path: &'static str| {
        let (client, url) = (client.clone(), gw.url("/read"));
        async move { client.request("GET", &url, &[("x-path", path)], b"").await.upstream_header("x-file") }
    };
    assert_eq!(read("/hello.txt").await, vec!["hello from the grant"]);
    assert_eq!(read("hello.txt").await, vec!["hello from the grant"]);
    for outside in ["/etc/passwd", "/../etc/passwd", "../../../../etc/passwd"] {
        let got = read(outside).await;
        assert!(got.len() == 1 && got[0].starts_with("error:"), "{outside}: {got:?}");
    }
    let r = client
        .request("GET", &gw.url("/read"), &[("x-path", "/hello.txt"), ("x-write", "overwritten")], b"")
        .await;
    assert!(r.upstream_header("x-write-result")[0].starts_with("error:"), "{:?}", r.upstream_header("x-write-result"));
    assert_eq!(std::fs::read_to_string(granted.path().join("hello.txt")).unwrap(), "hello from the grant\n");
    gw.stop().await;

    // A `files` capability without its directory, or a directory that is not there, names the key.
    let no_dir = config.replace(&format!("files = {{ dir = \"{}\" }}\n", granted.path().display()), "");
    let err = Gateway::try_start(&no_dir, Some(&upstream)).await.err().unwrap().to_string();
    assert!(err.contains("plugins.reader.files") && err.contains("needs the directory"), "{err}");
    let missing = config.replace(&granted.path().display().to_string(), "/nonexistent/airlock-grant");
    let err = Gateway::try_start(&missing, Some(&upstream)).await.err().unwrap().to_string();
    assert!(err.contains("plugins.reader.files.dir") && err.contains(":"), "{err}");
}

#[tokio::test]
async fn a_token_in_a_cookie_is_stripped_and_other_cookies_stay() {
    let upstream = Upstream::start().await;
    let config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[[routes]]
path = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:jwt"
config = {{ cookie = "session", keys = [{{ kid = "hs", alg = "HS256", secret = "{HS_SECRET}" }}] }}
"#
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let cookie = format!("theme=dark; session={}; lang=en", token(Algorithm::HS256, "hs"));
    let r = client.request("GET", &gw.url("/api"), &[("cookie", &cookie)], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("cookie"), vec!["theme=dark; lang=en"]);
    let only = format!("session={}", token(Algorithm::HS256, "hs"));
    let r = client.request("GET", &gw.url("/api"), &[("cookie", &only)], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.upstream_header("cookie").is_empty(), "{:?}", r.upstream_header("cookie"));
    gw.stop().await;
}

#[tokio::test]
async fn consumer_secrets_can_live_in_granted_files() {
    let upstream = Upstream::start().await;
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("alice.key"), "alice-secret-key\n").unwrap();
    let bcrypt = bcrypt::hash("bob-password", 4).unwrap();
    std::fs::write(granted.path().join("bob.pw"), format!("bcrypt:{bcrypt}\n")).unwrap();
    let config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[[consumers]]
id = "alice"
credentials = {{ keys = ["file:alice.key"] }}

[[consumers]]
id = "bob"
credentials = {{ basic = {{ username = "bob", password = "file:/bob.pw" }} }}

[plugins.keys]
source = "builtin:key-auth"
capabilities = ["files"]
files = {{ dir = "{dir}" }}

[plugins.basic]
source = "builtin:basic-auth"
capabilities = ["files"]
files = {{ dir = "{dir}" }}

[[routes]]
path = "/key"
upstream = "backend"
plugins = [{{ plugin = "keys" }}]

[[routes]]
path = "/basic"
upstream = "backend"
plugins = [{{ plugin = "basic" }}]
"#,
        dir = granted.path().display()
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/key"), &[("x-api-key", "alice-secret-key")], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["alice"]);
    assert_eq!(client.request("GET", &gw.url("/key"), &[("x-api-key", "file:alice.key")], b"").await.status, 401);
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bob:bob-password"));
    let r = client.request("GET", &gw.url("/basic"), &[("authorization", &basic)], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["bob"]);
    gw.stop().await;

    // A secret file that is not there names the consumer's key.
    let missing = config.replace("file:alice.key", "file:nobody.key");
    let err = Gateway::try_start(&missing, Some(&upstream)).await.err().unwrap().to_string();
    assert!(err.contains("consumers[0].credentials.keys[0]") && err.contains("cannot read `nobody.key`"), "{err}");
}

#[tokio::test]
async fn algorithms_narrow_what_jwks_keys_may_verify() {
    let upstream = Upstream::start().await;
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("jwks.json"), jwks(&[p256_jwk("k1"), ed_jwk("k2")])).unwrap();
    let config = jwt_files_config(granted.path(), r#"{ jwks_file = "jwks.json", algorithms = ["ES256"] }"#);
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    assert_eq!(call(&client, &gw, &token(Algorithm::ES256, "k1")).await.status, 200);
    assert_eq!(call(&client, &gw, &token(Algorithm::EdDSA, "k2")).await.status, 401, "EdDSA is not in `algorithms`");
    gw.stop().await;
}

/// A plugin compiled against airlock:plugin@0.2.0 as released (a frozen copy of that WIT, as the
/// 0.2.0 SDK built it) loads on this gateway and runs both phases: the context, a header set on
/// the way up, one set on the way back, and an answer of its own all cross the older contract.
#[tokio::test]
async fn a_plugin_built_against_the_released_0_2_0_contract_still_runs() {
    let upstream = Upstream::start().await;
    let config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"{plugin:contract-0-2-0}\"\n";
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/anything"), &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-contract"), vec!["0.2.0"]);
    assert_eq!(r.header("x-contract-seen"), Some("0.2.0".to_owned()));
    let r = client.request("GET", &gw.url("/teapot"), &[], b"").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (418, "short and stout"));
    assert_eq!(r.header("x-contract"), Some("0.2.0".to_owned()));
    gw.stop().await;
}

/// A plugin compiled against airlock:plugin@0.2.7 as released declares its fixed edits with
/// that release's `declare-templated` (0.2.8 added `declare-rules` beside it): the gateway takes
/// them and makes them, the built values from each request, with no call into the plugin.
#[tokio::test]
async fn a_plugin_built_against_the_released_0_2_7_contract_still_declares_its_fixed_edits() {
    let upstream = Upstream::start().await;
    let config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n\n[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"{plugin:contract-0-2-7}\"\n";
    let gw = Gateway::start(config, Some(&upstream)).await;
    let inner = gw.inner();
    let entry = &inner.routes.routes()[0].chain.entries()[0];
    assert!(!entry.descriptor.on_request && !entry.descriptor.on_response, "{:?}", entry.descriptor);
    let client = HttpClient::http1();
    for path in ["/a", "/b"] {
        let r = client.request("GET", &gw.url(path), &[], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.upstream_header("x-contract"), vec!["0.2.7"]);
        assert_eq!(r.upstream_header("x-contract-route"), vec!["route-r"]);
        assert!(r.upstream_header("x-contract-called").is_empty() && r.header("x-contract-called").is_none());
        let id = r.header("x-request-id").expect("the gateway's request id");
        assert_eq!(r.header("x-contract-id"), Some(id), "built from this request");
    }
    gw.stop().await;
}

/// A plugin built with a newer airlock-sdk than the gateway's (a later 0.2.x), calling a method
/// only that release has: the gateway says which side is older, where wasmtime's own message
/// ("function implementation is missing") called the plugin broken.
#[tokio::test]
async fn a_plugin_built_against_a_later_contract_is_refused_saying_so() {
    let config = "[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"{plugin:from-the-future}\"\n";
    let err = Gateway::try_start(config, None).await.err().expect("refused").to_string();
    assert!(err.contains("was built against airlock:plugin@0.2.99"), "{err}");
    assert!(err.contains(&format!("this gateway, which speaks airlock:plugin@{}", airlock::runtime::capabilities::WIT_VERSION)), "{err}");
    assert!(err.contains("`request.from-the-future`") && err.contains("upgrade the gateway"), "{err}");
    assert!(!err.contains("does not implement"), "not blamed on the plugin: {err}");
}

/// An outbound call whose connection was made but whose answer is not HTTP (or has an invalid
/// header) is not reported as a failure to connect: the plugin gets `connect` (the contract's
/// only case for an origin that gave no response) with a text saying what happened, and the
/// gateway's line names it `kind="response"`; a refused connection stays `kind="connect"`.
#[tokio::test]
async fn an_answer_that_is_not_http_is_not_called_a_connect_failure() {
    let upstream = Upstream::start().await;
    let (not_http, _not_http_task) = airlock_tests::raw_upstream(b"SSH-2.0-OpenSSH_9.6\r\n").await;
    let (bad_header, _bad_header_task) = airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\nbad header line\r\ncontent-length: 0\r\n\r\n").await;
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = "[upstreams.backend]\ntargets = [\"{upstream}\"]\n".to_owned();
    for (name, origin) in [("not-http", not_http), ("bad-header", bad_header), ("refused", refused)] {
        config += &format!(
            r#"
[plugins.{name}]
source = "{{plugin:hostile}}"
capabilities = ["http-client"]
http_client = {{ allow = ["http://{origin}"], timeout_ms = 2000 }}

[[routes]]
path = "/{name}"
upstream = "backend"
[[routes.plugins]]
plugin = "{name}"
config = {{ mode = "crafted-host", url = "http://{origin}/" }}
"#
        );
    }
    let gw = airlock_tests::process::GatewayProcess::start_logging(&config, &upstream, &[]).await;
    let client = HttpClient::http1();
    // The hostile plugin answers 502 with the `http-error` it got, as Rust's Debug shows it.
    for (path, got) in [
        ("/not-http", "Connect(\"connected, but the answer is not valid HTTP"),
        ("/bad-header", "Connect(\"connected, but the answer is not valid HTTP"),
        ("/refused", "Connect(\"client error (Connect)"),
    ] {
        let r = client.get(&gw.url(path)).await;
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert!(r.text().contains(got), "{path}: {}", r.text());
    }
    let log = airlock_tests::metrics::eventually("three warnings", || {
        let log = gw.log();
        (log.lines().filter(|l| l.contains("outbound call failed")).count() == 3).then_some(log)
    })
    .await;
    for (plugin, kind) in [("not-http", "response"), ("bad-header", "response"), ("refused", "connect")] {
        let line = log
            .lines()
            .find(|l| l.contains("outbound call failed") && l.contains(&format!("plugin=\"{plugin}\"")))
            .unwrap_or_else(|| panic!("no line for {plugin}: {log}"));
        assert!(line.contains(&format!("kind=\"{kind}\"")), "{plugin}: {line}");
    }
    assert_eq!(upstream.hits(), 0);
}
