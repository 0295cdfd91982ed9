//! `builtin:forward-auth` end to end: a real auth service (a hyper server in this test that
//! records what it is asked and answers by the bearer token it is shown), a real upstream that
//! echoes what reaches it, and the gateway in this process. What is allowed, refused, redirected,
//! what a client can and cannot forge, and what an unreachable, slow or failing auth service does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_tests::{Gateway, HttpClient, Reply, Upstream};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// One call the auth service received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    /// Every value of a header, as text.
    fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
    }
}

/// The auth service. It answers by the `Authorization` it is sent:
/// - `Bearer alice`: 200 with `x-user-id: alice`, two `x-user-roles` lines and an `x-internal`;
/// - `Bearer bob`: 200 with `x-user-id: bob`;
/// - `Bearer nobody`: 200 with no header at all;
/// - `Bearer twins`: 200 naming two users, `x-user-id: alice` and `x-user-id: bob`;
/// - `Bearer redirect`: 302 to a login page, with a `Set-Cookie`;
/// - `Bearer forbidden`: 403 with a text body;
/// - `Bearer error`: 500 with a body that must not reach clients;
/// - `Bearer slow`: 200 after 3 s;
/// - anything else: 401 with `WWW-Authenticate`, a JSON body and an `x-secret` header.
struct AuthService {
    server: Upstream,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl AuthService {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let server = Upstream::with_handler(move |req: Request<Incoming>| {
            let record = record.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                let token = parts.headers.get("authorization").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                record.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                    headers: parts.headers,
                    body,
                });
                answer(token.as_deref()).await
            }
        })
        .await;
        Self { server, seen }
    }

    /// `http://127.0.0.1:<port>`.
    fn origin(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The calls received so far.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last call received.
    fn last(&self) -> Seen {
        self.seen().pop().expect("the auth service was called")
    }
}

async fn answer(token: Option<&str>) -> Response<Full<Bytes>> {
    let build = |status: u16, headers: &[(&str, &str)], body: &str| {
        let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut().append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        r
    };
    match token {
        Some("Bearer alice") => build(
            200,
            &[("x-user-id", "alice"), ("x-user-roles", "admin"), ("x-user-roles", "ops"), ("x-internal", "not for the upstream")],
            "ok",
        ),
        Some("Bearer bob") => build(200, &[("x-user-id", "bob")], ""),
        Some("Bearer carol") => build(200, &[("x-user-id", "carol"), ("x-user-groups", "staff, admins")], ""),
        Some("Bearer nobody") => build(200, &[], ""),
        Some("Bearer twins") => build(200, &[("x-user-id", "alice"), ("x-user-id", "bob")], ""),
        Some("Bearer refresh") => build(
            200,
            &[("x-user-id", "alice"), ("set-cookie", "_oauth2_proxy=renewed; Path=/; HttpOnly"), ("set-cookie", "tracker=1")],
            "",
        ),
        Some("Bearer redirect") => build(
            302,
            &[("location", "https://login.example.com/?rd=%2Fapi"), ("set-cookie", "csrf=abc; HttpOnly"), ("x-secret", "internal")],
            "",
        ),
        Some("Bearer forbidden") => build(403, &[("content-type", "text/plain")], "not yours\n"),
        Some("Bearer error") => build(500, &[("content-type", "text/plain")], "stack trace: db password hunter2"),
        Some("Bearer slow") => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            build(200, &[("x-user-id", "slow")], "")
        }
        _ => build(
            401,
            &[("www-authenticate", "Bearer realm=\"auth\""), ("content-type", "application/json"), ("x-secret", "internal")],
            r#"{"error":"login required"}"#,
        ),
    }
}

/// Where nothing listens: granted, so calls there fail to connect.
const DOWN: &str = "http://127.0.0.1:1";

/// A gateway config: the upstream, the access log, a `[plugins.auth]` granted the auth service's
/// origin and [`DOWN`], then `routes`.
fn config(auth: &AuthService, routes: &str) -> String {
    format!(
        r#"
[access_log]
enabled = true
path = "access.log"

[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.auth]
source = "builtin:forward-auth"
capabilities = ["http-client"]
http_client = {{ allow = ["{origin}", "{DOWN}"], timeout_ms = 2000 }}
{routes}"#,
        origin = auth.origin()
    )
}

/// One route `/api` (prefix) through `auth` with this inline config table body.
fn api_route(auth: &AuthService, plugin_config: &str) -> String {
    format!(
        r#"
[[routes]]
id = "api"
path_prefix = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check", {plugin_config} }}
"#,
        origin = auth.origin()
    )
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    HttpClient::http1().request("GET", &gw.url(path), headers, b"").await
}

#[tokio::test]
async fn an_allowed_request_reaches_the_upstream_with_the_auth_services_headers() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let routes = api_route(&auth, r#"response_headers = ["x-user-id", "x-user-roles"]"#);
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;

    let r = get(&gw, "/api/orders", &[("authorization", "Bearer alice")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
    assert_eq!(r.upstream_header("x-user-id"), ["alice"]);
    assert_eq!(r.upstream_header("x-user-roles"), ["admin", "ops"], "every value of a copied header");
    assert!(r.upstream_header("x-internal").is_empty(), "only `response_headers` are copied");
    assert_eq!(r.upstream_header("authorization"), ["Bearer alice"], "the credential itself goes on untouched");
    assert_eq!(r.json()["path"], "/api/orders");
    assert_eq!(auth.seen().len(), 1, "one auth call per request");
    gw.stop().await;
}

#[tokio::test]
async fn a_clients_copies_of_the_vouched_headers_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let mut routes = api_route(&auth, r#"response_headers = ["x-user-id", "X-User-Roles"], consumer_header = "x-user-id""#);
    // Without `consumer_header` too: an upstream shared with key-auth routes trusts X-Consumer-Id.
    routes += &api_route(&auth, r#"response_headers = ["x-user-id"]"#).replace("\"api\"", "\"plain\"").replace("\"/api\"", "\"/plain\"");
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;
    let forged = [
        ("x-user-id", "mallory"),
        ("x-user-roles", "root"),
        ("x-consumer-id", "mallory"),
        ("x-consumer-groups", "admin"),
        ("x-anonymous-consumer", "false"),
    ];

    // Allowed, and the answer carries the headers: the service's values replace the client's.
    let mut headers = vec![("authorization", "Bearer alice")];
    headers.extend(forged);
    let r = get(&gw, "/api/a", &headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-user-id"), ["alice"]);
    assert_eq!(r.upstream_header("x-user-roles"), ["admin", "ops"]);
    assert_eq!(r.upstream_header("x-consumer-id"), ["alice"]);
    assert!(r.upstream_header("x-consumer-groups").is_empty());
    assert!(r.upstream_header("x-anonymous-consumer").is_empty());

    // Allowed, but the answer lacks them: the client's copies are removed all the same.
    let mut headers = vec![("authorization", "Bearer nobody")];
    headers.extend(forged);
    let r = get(&gw, "/api/b", &headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (name, _) in forged {
        assert!(r.upstream_header(name).is_empty(), "{name} reached the upstream: {:?}", r.upstream_header(name));
    }
    let mut headers = vec![("authorization", "Bearer alice")];
    headers.extend(forged);
    let r = get(&gw, "/plain/c", &headers).await;
    assert_eq!((r.status.as_u16(), r.upstream_header("x-user-id")), (200, vec!["alice".to_owned()]), "{}", r.text());
    for name in ["x-consumer-id", "x-consumer-groups", "x-anonymous-consumer"] {
        assert!(r.upstream_header(name).is_empty(), "{name} reached the upstream without consumer_header: {:?}", r.upstream_header(name));
    }
    assert_eq!(upstream.hits(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn a_refusal_reaches_the_client_and_the_upstream_is_never_called() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&config(&auth, &api_route(&auth, r#"method = "GET""#)), Some(&upstream)).await;

    let r = get(&gw, "/api/orders", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer realm=\"auth\""));
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(r.text(), r#"{"error":"login required"}"#);
    assert_eq!(r.header("x-secret"), None, "only the selected headers of a refusal are passed");

    let r = get(&gw, "/api/orders", &[("authorization", "Bearer forbidden")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "not yours\n");
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));

    let r = get(&gw, "/api/orders", &[("authorization", "Bearer redirect")]).await;
    assert_eq!(r.status, 302, "a redirect to the login page is passed as it is");
    assert_eq!(r.header("location").as_deref(), Some("https://login.example.com/?rd=%2Fapi"));
    assert_eq!(r.header_all("set-cookie"), ["csrf=abc; HttpOnly"]);
    assert_eq!(r.header("x-secret"), None);

    assert_eq!(upstream.hits(), 0, "a refused request never reaches the upstream");
    assert_eq!(auth.seen().len(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn the_auth_service_sees_the_forwarded_request_and_only_the_chosen_headers() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let routes = api_route(&auth, r#"request_headers = ["authorization", "cookie", "x-tenant"]"#);
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;

    let r = get(
        &gw,
        "/api/items/./7?x=1&y=%20",
        &[
            ("authorization", "Bearer nobody"),
            ("cookie", "session=s1"),
            ("x-tenant", "acme"),
            ("x-not-listed", "private"),
            // A client's own forwarding headers are never what the auth service reads.
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-uri", "/forged"),
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "fa-forwarded-1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = auth.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/check");
    assert_eq!(seen.header_all("x-forwarded-method"), ["GET"]);
    assert_eq!(seen.header_all("x-forwarded-uri"), ["/api/items/7?x=1&y=%20"], "the path as routed, with the query");
    assert_eq!(seen.header_all("x-forwarded-host"), [gw.addr().to_string()]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"], "the client IP the gateway saw, not the client's chain");
    assert_eq!(seen.header_all("x-request-id"), ["fa-forwarded-1"]);
    assert_eq!(seen.header_all("authorization"), ["Bearer nobody"]);
    assert_eq!(seen.header_all("cookie"), ["session=s1"]);
    assert_eq!(seen.header_all("x-tenant"), ["acme"]);
    assert!(seen.header_all("x-not-listed").is_empty());
    assert!(seen.body.is_empty(), "no body without `pass_body`");

    // A POST's method reaches the auth service too.
    let r = HttpClient::http1().request("POST", &gw.url("/api/x"), &[("authorization", "Bearer nobody")], b"{\"a\":1}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(auth.last().header_all("x-forwarded-method"), ["POST"]);
    assert!(auth.last().body.is_empty());
    assert_eq!(r.json()["body"], "{\"a\":1}", "the upstream still gets the body");
    gw.stop().await;
}

#[tokio::test]
async fn pass_body_sends_the_clients_body_and_content_type() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let routes = api_route(&auth, r#"method = "POST", pass_body = true"#);
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;

    let headers = [("authorization", "Bearer nobody"), ("content-type", "application/json")];
    let r = HttpClient::http1().request("PUT", &gw.url("/api/doc"), &headers, b"{\"doc\":42}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = auth.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, "{\"doc\":42}");
    assert_eq!(seen.header_all("content-type"), ["application/json"]);
    assert_eq!(seen.header_all("x-forwarded-method"), ["PUT"]);
    assert_eq!(r.json()["body"], "{\"doc\":42}");
    gw.stop().await;
}

#[tokio::test]
async fn an_auth_service_that_cannot_answer_fails_closed_or_open() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let routes = format!(
        r#"
[[routes]]
path = "/down-closed"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{DOWN}/check", response_headers = ["x-user-id"] }}

[[routes]]
path = "/down-open"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{DOWN}/check", response_headers = ["x-user-id"], failure = "open" }}

[[routes]]
path = "/error-closed"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check" }}

[[routes]]
path = "/error-open"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check", failure = "open", response_headers = ["x-user-id"] }}
"#,
        origin = auth.origin()
    );
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;

    // Unreachable, closed: 503 in the gateway's error format, naming nothing of the service.
    let r = get(&gw, "/down-closed", &[("authorization", "Bearer alice"), ("x-request-id", "fa-down-1")]).await;
    assert_eq!(r.status, 503);
    let body = r.json();
    assert_eq!(body["error"], "auth_unavailable");
    assert_eq!(body["request_id"], "fa-down-1");
    assert!(!r.text().contains("127.0.0.1") && !r.text().contains("refused") && !r.text().contains("check"), "{}", r.text());
    assert_eq!(upstream.hits(), 0);

    // Unreachable, open: the request goes on, but without any forged vouched header.
    let r = get(&gw, "/down-open", &[("authorization", "Bearer alice"), ("x-user-id", "mallory")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-user-id").is_empty());
    assert_eq!(upstream.hits(), 1);

    // A 5xx is a failure too: its body never reaches the client.
    let r = get(&gw, "/error-closed", &[("authorization", "Bearer error")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "auth_unavailable");
    assert!(!r.text().contains("hunter2"), "{}", r.text());
    assert_eq!(upstream.hits(), 1);
    let r = get(&gw, "/error-open", &[("authorization", "Bearer error"), ("x-user-id", "mallory")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-user-id").is_empty());
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_auth_service_times_out() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let routes = format!(
        r#"
[[routes]]
path = "/short"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check", timeout_ms = 300 }}

[[routes]]
path = "/grant-bound"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check", timeout_ms = 60000, failure = "open" }}
"#,
        origin = auth.origin()
    );
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;

    let started = Instant::now();
    let r = get(&gw, "/short", &[("authorization", "Bearer slow")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "auth_unavailable");
    assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}: `timeout_ms` was not applied", started.elapsed());

    // A longer `timeout_ms` than the grant's is held to the grant's (2 s here); open lets it on.
    let started = Instant::now();
    let r = get(&gw, "/grant-bound", &[("authorization", "Bearer slow")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_millis(2900), "took {took:?}: the grant's timeout bounds the call");
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn the_consumer_named_by_the_auth_service_is_seen_by_later_plugins_and_the_access_log() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let routes = format!(
        r#"
[[routes]]
id = "admin"
path = "/admin"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check", consumer_header = "x-user-id", groups_header = "x-user-groups" }}
[[routes.plugins]]
plugin = "builtin:acl"
config = {{ allow = ["alice", "group:admins"] }}
"#,
        origin = auth.origin()
    );
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;

    let r = get(&gw, "/admin", &[("authorization", "Bearer alice"), ("x-request-id", "fa-alice")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), ["alice"]);
    let r = get(&gw, "/admin", &[("authorization", "Bearer bob"), ("x-request-id", "fa-bob")]).await;
    assert_eq!(r.status, 403, "acl refuses the consumer the auth service named: {}", r.text());
    // A consumer in an allowed group, by the groups the auth service listed.
    let r = get(&gw, "/admin", &[("authorization", "Bearer carol"), ("x-consumer-groups", "forged")]).await;
    assert_eq!(r.status, 200, "acl allows group:admins: {}", r.text());
    assert_eq!((r.upstream_header("x-consumer-id"), r.upstream_header("x-consumer-groups")), (vec!["carol".to_owned()], vec!["staff,admins".to_owned()]));
    // Allowed without a consumer: acl sees none (and the client cannot name one itself).
    let r = get(&gw, "/admin", &[("authorization", "Bearer nobody"), ("x-consumer-id", "alice")]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(upstream.hits(), 2);

    let log = gw.dir.path().join("access.log");
    let line = airlock_tests::access_log_line(&log, "fa-alice").await;
    assert_eq!(line["consumer"], "alice");
    let line = airlock_tests::access_log_line(&log, "fa-bob").await;
    assert_eq!(line["consumer"], "bob");
    gw.stop().await;
}

#[tokio::test]
async fn config_errors_are_refused_at_load() {
    let auth = AuthService::start().await;
    let start_err = |routes: String| {
        let text = config(&auth, &routes);
        async move { Gateway::try_start(&text, None).await.err().expect("the config is refused").to_string() }
    };

    let err = start_err(api_route(&auth, r#"method = "GET""#).replace(&format!("{}/check", auth.origin()), "ftp://auth/check")).await;
    assert!(err.contains("`url`: `ftp://auth/check` is not an absolute http:// or https:// URL"), "{err}");

    // An origin the grant does not list: refused at load, and never called.
    let err = start_err(api_route(&auth, r#"method = "GET""#).replace(&auth.origin(), "http://127.0.0.1:2")).await;
    assert!(err.contains("`url`: the gateway refuses calls to `http://127.0.0.1:2/check`"), "{err}");
    assert!(err.contains("not in this plugin's `http_client.allow`"), "{err}");

    // The built-in straight in a chain, without a `[plugins.<name>]` grant.
    let err = start_err(format!(
        "\n[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:forward-auth\"\nconfig = {{ url = \"{}/check\" }}\n",
        auth.origin()
    ))
    .await;
    assert!(err.contains("not granted `http-client`"), "{err}");

    let err = start_err(api_route(&auth, r#"response_headers = ["content-length"]"#)).await;
    assert!(err.contains("`response_headers[0]`"), "{err}");
    let err = start_err(api_route(&auth, r#"failure = "sometimes""#)).await;
    assert!(err.contains("`failure`"), "{err}");
    let err = start_err(api_route(&auth, r#"timeout_ms = 0"#)).await;
    assert!(err.contains("`timeout_ms` must be at least 1"), "{err}");
    let err = start_err(api_route(&auth, r#"response_cookies = ["session id"]"#)).await;
    assert!(err.contains("`response_cookies[0]`: `session id` is not a cookie name"), "{err}");
    assert!(auth.seen().is_empty(), "checking a config calls nothing");
}

#[tokio::test]
async fn a_clients_copies_of_the_consumer_and_groups_headers_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    // `consumer_header` and `groups_header` without `response_headers`: the service's values are
    // not copied, and the client's own must not stand in for them.
    let routes = format!(
        r#"
[[routes]]
path = "/named"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check", consumer_header = "x-user-id", groups_header = "x-user-groups" }}

[[routes]]
path = "/down-open"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{DOWN}/check", consumer_header = "x-user-id", groups_header = "x-groups", failure = "open" }}
"#,
        origin = auth.origin()
    );
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;
    let forged = [("x-user-id", "alice"), ("x-user-groups", "admins")];

    // The service names bob: the upstream sees bob, and nothing of the client's alice.
    let r = get(&gw, "/named", &[("authorization", "Bearer bob"), forged[0], forged[1]]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), ["bob"]);
    assert!(r.upstream_header("x-user-id").is_empty(), "forged consumer header: {:?}", r.upstream_header("x-user-id"));
    assert!(r.upstream_header("x-user-groups").is_empty(), "forged groups header: {:?}", r.upstream_header("x-user-groups"));
    // Allowed naming no one, and refused: the same.
    let r = get(&gw, "/named", &[("authorization", "Bearer nobody"), forged[0], forged[1]]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-user-id").is_empty() && r.upstream_header("x-user-groups").is_empty());
    assert!(r.upstream_header("x-consumer-id").is_empty());

    // The auth service is down and the route fails open: the request goes on, unauthenticated,
    // without the identity a client wrote for itself.
    let r = get(&gw, "/down-open", &[("authorization", "Bearer alice"), ("x-user-id", "admin"), ("x-groups", "admin")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-user-id").is_empty(), "{:?}", r.upstream_header("x-user-id"));
    assert!(r.upstream_header("x-groups").is_empty(), "{:?}", r.upstream_header("x-groups"));
    assert!(r.upstream_header("x-consumer-id").is_empty());
    assert_eq!(upstream.hits(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn a_consumer_named_twice_is_an_auth_failure_and_never_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let routes = format!(
        r#"
[[routes]]
path = "/closed"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check", response_headers = ["x-user-id"], consumer_header = "x-user-id" }}
[[routes.plugins]]
plugin = "builtin:acl"
config = {{ allow = ["alice", "bob"] }}

[[routes]]
path = "/open"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check", response_headers = ["x-user-id"], consumer_header = "x-user-id", failure = "open" }}
"#,
        origin = auth.origin()
    );
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;

    // Closed: the 503 of an auth service that cannot answer, not alice (the first value) let in.
    let r = get(&gw, "/closed", &[("authorization", "Bearer twins"), ("x-request-id", "fa-twins-1")]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "auth_unavailable");
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    assert!(!r.text().contains("alice") && !r.text().contains("bob"), "{}", r.text());
    assert_eq!(upstream.hits(), 0);
    // One value is fine.
    let r = get(&gw, "/closed", &[("authorization", "Bearer bob")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-user-id"), ["bob"]);

    // Open: on, unauthenticated, with neither identity copied and no consumer named.
    let r = get(&gw, "/open", &[("authorization", "Bearer twins"), ("x-request-id", "fa-twins-2")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-user-id").is_empty(), "{:?}", r.upstream_header("x-user-id"));
    assert!(r.upstream_header("x-consumer-id").is_empty(), "{:?}", r.upstream_header("x-consumer-id"));
    assert_eq!(upstream.hits(), 2);
    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "fa-twins-2").await;
    assert!(line["consumer"].is_null(), "{line}");
    gw.stop().await;
}

#[tokio::test]
async fn auth_unavailable_says_when_to_retry() {
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let routes = format!(
        r#"
[[routes]]
path = "/down"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{DOWN}/check" }}

[[routes]]
path = "/error"
upstream = "backend"
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check" }}
"#,
        origin = auth.origin()
    );
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;
    for (path, token) in [("/down", "Bearer alice"), ("/error", "Bearer error")] {
        let r = get(&gw, path, &[("authorization", token)]).await;
        assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (503, Some("auth_unavailable")), "{path}");
        assert_eq!(r.header("retry-after").as_deref(), Some("5"), "{path}");
    }
    // A refusal is the service's answer, as it gave it: no Retry-After is added.
    let r = get(&gw, "/error", &[("authorization", "Bearer forbidden")]).await;
    assert_eq!((r.status.as_u16(), r.header("retry-after")), (403, None));
    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn a_consumer_or_groups_header_the_request_needs_is_refused_at_load() {
    let auth = AuthService::start().await;
    for (plugin_config, expected) in [
        (r#"consumer_header = "host""#, "`consumer_header`: `host` cannot name the consumer"),
        (r#"consumer_header = "x-user-id", groups_header = "Content-Length""#, "`groups_header`: `content-length` is set by the gateway"),
    ] {
        let text = config(&auth, &api_route(&auth, plugin_config));
        let err = Gateway::try_start(&text, None).await.err().expect("the config is refused").to_string();
        assert!(err.contains(expected), "{plugin_config}: {err}");
    }
}

#[tokio::test]
async fn a_consumer_it_names_after_an_anonymous_fallback_is_not_anonymous() {
    // key-auth falls back to `guest`; the auth service then names alice. Left marked anonymous,
    // she was replaced by the `guest` of the key-auth after it ("either credential" chains).
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let routes = format!(
        r#"
[[consumers]]
id = "guest"

[[routes]]
path = "/either"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = {{ anonymous = "guest" }}
[[routes.plugins]]
plugin = "auth"
config = {{ url = "{origin}/check", consumer_header = "x-user-id" }}
[[routes.plugins]]
plugin = "builtin:key-auth"
config = {{ anonymous = "guest", header_names = ["x-other-key"] }}
"#,
        origin = auth.origin()
    );
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;
    let r = get(&gw, "/either", &[("authorization", "Bearer alice")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), ["alice"]);
    assert!(r.upstream_header("x-anonymous-consumer").is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn the_session_cookies_an_allow_sets_reach_the_client_when_listed() {
    // oauth2-proxy behind nginx's auth_request (auth_request_set + add_header Set-Cookie):
    // the auth service renews its session cookie on an allow, and the browser must get it.
    let upstream = Upstream::start().await;
    let auth = AuthService::start().await;
    let routes = format!(
        "{}{}",
        api_route(&auth, r#"consumer_header = "x-user-id", response_cookies = ["_oauth2_proxy"]"#).replace("id = \"api\"\npath_prefix = \"/api\"", "id = \"cookies\"\npath_prefix = \"/api\""),
        api_route(&auth, r#"consumer_header = "x-user-id""#).replace("id = \"api\"\npath_prefix = \"/api\"", "id = \"plain\"\npath_prefix = \"/plain\"")
    );
    let gw = Gateway::start(&config(&auth, &routes), Some(&upstream)).await;
    let r = get(&gw, "/api/x", &[("authorization", "Bearer refresh")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header_all("set-cookie"), ["_oauth2_proxy=renewed; Path=/; HttpOnly"], "only the listed cookie");
    assert!(r.upstream_header("set-cookie").is_empty(), "a response header, never sent upstream");
    assert_eq!(r.upstream_header("x-consumer-id"), ["alice"]);
    // Not listed: none reaches the client.
    let r = get(&gw, "/plain/x", &[("authorization", "Bearer refresh")]).await;
    assert_eq!((r.status.as_u16(), r.header_all("set-cookie").len()), (200, 0));
    gw.stop().await;
}
