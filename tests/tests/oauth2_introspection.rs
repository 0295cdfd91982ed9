//! `builtin:oauth2-introspection` end to end: a real authorization server (a hyper server in this
//! test that checks the gateway's client credentials and form body as RFC 7662 and RFC 6749 2.3.1
//! have them, records every call, and answers by the token it is shown), a real upstream that
//! echoes what reaches it, and the gateway in this process. What passes, what is refused and how,
//! what is cached and under which key, and what an endpoint that cannot answer does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_tests::redis::Redis;
use airlock_tests::{Gateway, HttpClient, Reply, Upstream};
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

/// The gateway's client at the authorization server: a space and a `:` in the id, reserved and
/// non-ASCII characters in the secret, so that only credentials form-encoded before base64 (RFC
/// 6749 2.3.1) are understood.
const CLIENT_ID: &str = "airlock gw:1";
const CLIENT_SECRET: &str = "p@ss:w0rd/é+%";

/// Where nothing listens: granted, so calls there fail to connect.
const DOWN: &str = "http://127.0.0.1:1";

/// Every token the tests send, so that none can be looked for in state keys and values.
const TOKENS: &[&str] = &[
    "tok-alice", "tok-bob", "tok-carol", "tok-inactive", "tok-expired", "tok-short", "tok-noscope", "tok-otheraud",
    "tok-otheriss", "tok-500", "tok-garbage", "tok-noactive", "tok-slow", "tok-nosub", "tok-nosub2", "tok-tabscope", "tok-listscope",
    "tok-numscope", "tok-objscope", "tok-mixedscope", "tok-iss2", "tok-groups", "tok-groupstext", "tok-badgroups",
    "tok-manygroups", "tok-numgroups",
];

/// One call the authorization server received.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    content_type: String,
    accept: String,
    /// The form body, decoded: name to value.
    form: BTreeMap<String, String>,
    /// Whether the Basic credentials were the gateway's.
    client_ok: bool,
}

/// The authorization server. Its introspection endpoint (`POST /introspect`) refuses a call
/// without the gateway's Basic credentials (401 `invalid_client`) or without a form body
/// carrying `token` (400), and answers by the token:
/// - `tok-alice`: active, `sub` alice, scopes `orders:read orders:write`, `aud` `[orders-api,
///   billing-api]`, the test issuer, a `roles` list, expiring in an hour;
/// - `tok-bob`: active, `sub` bob, scope `orders:read`, `aud` `orders-api`;
/// - `tok-carol`: like bob, `sub` carol;
/// - `tok-nosub`: active, a `client_id` but no `sub` (a client-credentials token); `tok-nosub2`
///   the same for another client;
/// - `tok-expired`: active, but its `exp` an hour ago (a server trusting its cache);
/// - `tok-short`: active, expiring in one second;
/// - `tok-noscope`, `tok-otheraud`, `tok-otheriss`: active, with only `profile`, another audience,
///   another issuer;
/// - `tok-tabscope`: active, scope `profile<TAB>orders:read` (one scope: RFC 6749 3.3 delimits with
///   spaces only);
/// - `tok-listscope`: active, scope the list `["orders:read", "profile"]` (as some servers send it);
///   `tok-numscope`, `tok-objscope`, `tok-mixedscope`: scope `5`, `{"orders:read": true}`,
///   `["orders:read", 5]`;
/// - `tok-iss2`: like bob, `sub` ken, issued by [`ISSUER2`];
/// - `tok-groups`: like bob, `sub` gina, `groups` the list `["gold", "staff"]`;
///   `tok-groupstext`: `sub` hank, `groups` the string `gold ops`; `tok-badgroups`: `sub` mal,
///   `groups` `["staff", "admin,root"]` (a name `[[consumers]]` would refuse); `tok-manygroups`:
///   `sub` nick, 65 groups; `tok-numgroups`: `sub` olga, `groups` `5`;
/// - `tok-500`: a 500; `tok-garbage`: a 200 that is not JSON; `tok-noactive`: JSON without
///   `active`; `tok-slow`: active after 3 s;
/// - anything else (`tok-inactive`): `{"active": false}`.
struct AuthServer {
    server: Upstream,
    calls: Arc<Mutex<Vec<Call>>>,
}

const ISSUER: &str = "https://idp.test/";

/// A second issuer the same server speaks for (another realm).
const ISSUER2: &str = "https://idp.test/realms/partners";

impl AuthServer {
    async fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = calls.clone();
        let server = Upstream::with_handler(move |req: Request<Incoming>| {
            let record = record.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                let header = |name: &str| parts.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
                let call = Call {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    content_type: header("content-type"),
                    accept: header("accept"),
                    form: form(&String::from_utf8_lossy(&body)),
                    client_ok: client_authenticated(&header("authorization")),
                };
                record.lock().unwrap().push(call.clone());
                answer(&call).await
            }
        })
        .await;
        Self { server, calls }
    }

    /// `http://127.0.0.1:<port>`.
    fn origin(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The calls received so far.
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// How many calls asked about `token`.
    fn calls_for(&self, token: &str) -> usize {
        self.calls().iter().filter(|c| c.form.get("token").map(String::as_str) == Some(token)).count()
    }
}

/// Decodes `application/x-www-form-urlencoded` text (written here, independently of the plugin).
fn form_decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("a %XX escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8")
}

fn form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// RFC 6749 2.3.1, as a server reads it: base64, split at the one `:`, each side form-decoded.
fn client_authenticated(authorization: &str) -> bool {
    let Some(encoded) = authorization.strip_prefix("Basic ") else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else { return false };
    let decoded = String::from_utf8(decoded).unwrap_or_default();
    let Some((id, secret)) = decoded.split_once(':') else { return false };
    form_decode(id) == CLIENT_ID && form_decode(secret) == CLIENT_SECRET
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn json(status: u16, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

async fn answer(call: &Call) -> Response<Full<Bytes>> {
    if !call.client_ok {
        return json(401, serde_json::json!({"error": "invalid_client"}));
    }
    if call.method != "POST" || call.path != "/introspect" || call.content_type != "application/x-www-form-urlencoded" {
        return json(400, serde_json::json!({"error": "invalid_request"}));
    }
    let Some(token) = call.form.get("token") else {
        return json(400, serde_json::json!({"error": "invalid_request"}));
    };
    let hour = now() + 3600;
    let active = |sub: &str, scope: &str, aud: serde_json::Value, iss: &str, exp: i64| {
        serde_json::json!({"active": true, "sub": sub, "client_id": "mobile-app", "scope": scope, "aud": aud, "iss": iss,
                           "exp": exp, "iat": now() - 10, "token_type": "Bearer", "username": format!("{sub}@example.com")})
    };
    let value = match token.as_str() {
        "tok-alice" => {
            let mut v = active("alice", "orders:read orders:write", serde_json::json!(["orders-api", "billing-api"]), ISSUER, hour);
            v["roles"] = serde_json::json!(["admin", "ops"]);
            v
        }
        "tok-bob" => active("bob", "orders:read", serde_json::json!("orders-api"), ISSUER, hour),
        "tok-carol" => active("carol", "orders:read", serde_json::json!("orders-api"), ISSUER, hour),
        "tok-nosub" => serde_json::json!({"active": true, "client_id": "batch-job", "scope": "orders:read", "exp": hour}),
        "tok-nosub2" => serde_json::json!({"active": true, "client_id": "report-job", "scope": "orders:read", "exp": hour}),
        "tok-expired" => active("dave", "orders:read", serde_json::json!("orders-api"), ISSUER, now() - 3600),
        "tok-short" => active("erin", "orders:read", serde_json::json!("orders-api"), ISSUER, now() + 1),
        "tok-noscope" => active("frank", "profile", serde_json::json!("orders-api"), ISSUER, hour),
        "tok-otheraud" => active("grace", "orders:read", serde_json::json!("shipping-api"), ISSUER, hour),
        "tok-otheriss" => active("heidi", "orders:read", serde_json::json!("orders-api"), "https://evil.test/", hour),
        "tok-tabscope" => active("ivy", "profile\torders:read", serde_json::json!("orders-api"), ISSUER, hour),
        "tok-iss2" => active("ken", "orders:read", serde_json::json!("orders-api"), ISSUER2, hour),
        "tok-groups" | "tok-groupstext" | "tok-badgroups" | "tok-manygroups" | "tok-numgroups" => {
            let (sub, groups) = match token.as_str() {
                "tok-groups" => ("gina", serde_json::json!(["gold", "staff"])),
                "tok-groupstext" => ("hank", serde_json::json!("gold ops")),
                "tok-badgroups" => ("mal", serde_json::json!(["staff", "admin,root"])),
                "tok-manygroups" => ("nick", serde_json::json!((0..65).map(|i| format!("g{i}")).collect::<Vec<_>>())),
                _ => ("olga", serde_json::json!(5)),
            };
            let mut v = active(sub, "orders:read", serde_json::json!("orders-api"), ISSUER, hour);
            v["groups"] = groups;
            v
        }
        "tok-listscope" | "tok-numscope" | "tok-objscope" | "tok-mixedscope" => {
            let mut v = active("judy", "", serde_json::json!("orders-api"), ISSUER, hour);
            v["scope"] = match token.as_str() {
                "tok-listscope" => serde_json::json!(["orders:read", "profile"]),
                "tok-numscope" => serde_json::json!(5),
                "tok-objscope" => serde_json::json!({"orders:read": true}),
                _ => serde_json::json!(["orders:read", 5]),
            };
            v
        }
        "tok-500" => return json(500, serde_json::json!({"error": "server_error"})),
        "tok-garbage" => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"<html>maintenance</html>")));
            r.headers_mut().insert("content-type", "text/html".parse().unwrap());
            return r;
        }
        "tok-noactive" => serde_json::json!({"sub": "ivan"}),
        "tok-slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            active("slow", "orders:read", serde_json::json!("orders-api"), ISSUER, hour)
        }
        _ => serde_json::json!({"active": false}),
    };
    json(200, value)
}

/// A gateway config: the upstream, the access log, a `[plugins.introspect]` granted the
/// authorization server's origin and [`DOWN`], then `routes`.
fn config(idp: &AuthServer, routes: &str) -> String {
    format!(
        r#"
[access_log]
enabled = true
path = "access.log"

[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.introspect]
source = "builtin:oauth2-introspection"
capabilities = ["http-client"]
http_client = {{ allow = ["{origin}", "{DOWN}"], timeout_ms = 2000 }}
{routes}"#,
        origin = idp.origin()
    )
}

/// The inline config of a route through `introspect` asking `idp`, plus `extra` keys.
fn plugin_config(idp: &AuthServer, extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(r#"{{ endpoint = "{}/introspect", client_id = "{CLIENT_ID}", client_secret = "{CLIENT_SECRET}"{sep}{extra} }}"#, idp.origin())
}

/// A route `path_prefix` through `introspect` with `extra` config keys.
fn route(idp: &AuthServer, prefix: &str, extra: &str) -> String {
    route_with(prefix, &plugin_config(idp, extra))
}

/// A route `path_prefix` through `introspect` with this inline config table.
fn route_with(prefix: &str, plugin_config: &str) -> String {
    format!("\n[[routes]]\npath_prefix = \"{prefix}\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"introspect\"\nconfig = {plugin_config}\n")
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    HttpClient::http1().request("GET", &gw.url(path), headers, b"").await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A refusal in the gateway's error format, with its challenge, that never echoes the token.
fn assert_refused(r: &Reply, status: u16, error: &str, challenge: &str, token: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("www-authenticate").as_deref(), Some(challenge));
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["message"].is_string() && body["request_id"].is_string(), "{body}");
    if !token.is_empty() {
        assert!(!r.text().contains(token), "the body echoes the token: {}", r.text());
    }
}

#[tokio::test]
async fn an_active_token_reaches_the_upstream_with_its_consumer_and_claims_and_without_the_token() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    // The secret from a file in the `files` grant, as an operator keeps it out of the config.
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("introspect.secret"), format!("{CLIENT_SECRET}\n")).unwrap();
    let routes = format!(
        r#"
[plugins.introspect-file]
source = "builtin:oauth2-introspection"
capabilities = ["http-client", "files"]
http_client = {{ allow = ["{origin}"] }}
files = {{ dir = "{dir}" }}

[[routes]]
id = "orders"
path_prefix = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect-file"
[routes.plugins.config]
endpoint = "{origin}/introspect"
client_id = "{CLIENT_ID}"
client_secret = "file:introspect.secret"
required_scopes = ["orders:read"]
audiences = ["orders-api"]
issuer = "{ISSUER}"
claims_to_headers = {{ sub = "x-user-id", scope = "x-scopes", roles = "x-roles", exp = "x-token-exp", username = "x-username" }}
"#,
        origin = idp.origin(),
        dir = secrets.path().display()
    );
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;

    let forged = [("x-user-id", "mallory"), ("x-roles", "root"), ("x-consumer-id", "mallory"), ("x-consumer-groups", "admin"), ("x-anonymous-consumer", "true")];
    let mut headers = vec![("authorization", "Bearer tok-alice"), ("x-request-id", "oi-alice-1")];
    headers.extend(forged);
    let r = get(&gw, "/api/orders?page=2", &headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
    assert!(r.upstream_header("authorization").is_empty(), "the token is removed before the upstream");
    assert_eq!(r.upstream_header("x-consumer-id"), ["alice"]);
    assert_eq!(r.upstream_header("x-user-id"), ["alice"], "the claim, not the client's copy");
    assert_eq!(r.upstream_header("x-scopes"), ["orders:read orders:write"]);
    assert_eq!(r.upstream_header("x-roles"), ["admin,ops"], "a list, joined");
    assert!(r.upstream_header("x-token-exp")[0].parse::<i64>().unwrap() > now(), "a number, as text");
    assert_eq!(r.upstream_header("x-username"), ["alice@example.com"]);
    assert!(r.upstream_header("x-consumer-groups").is_empty() && r.upstream_header("x-anonymous-consumer").is_empty());
    assert_eq!(r.json()["query"], "page=2");

    // One call, as an authorization server wants it: POST, form-encoded, Basic credentials.
    let calls = idp.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert!(call.client_ok, "the server did not recognize the gateway's Basic credentials");
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", "/introspect"));
    assert_eq!(call.content_type, "application/x-www-form-urlencoded");
    assert_eq!(call.accept, "application/json");
    assert_eq!(call.form, BTreeMap::from([("token".to_owned(), "tok-alice".to_owned()), ("token_type_hint".to_owned(), "access_token".to_owned())]));

    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "oi-alice-1").await;
    assert_eq!(line["consumer"], "alice");
    gw.stop().await;
}

/// A token whose answer names no consumer (a client-credentials token, no `sub`) is recorded as
/// the request's credential: a cache after the plugin keeps each client's answers apart, where
/// the second client was served the first's.
#[tokio::test]
async fn a_cache_after_a_token_naming_no_consumer_keeps_each_clients_answers() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let mut routes = route(&idp, "/api", r#"claims_to_headers = { client_id = "x-client-id" }"#);
    routes += "[[routes.plugins]]\nplugin = \"builtin:proxy-cache\"\n";
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;
    let gateway = &gw;
    let as_client = |token: &'static str| async move {
        let r = get(gateway, "/api/report", &[("authorization", &bearer(token))]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        (r.header("x-cache-status").unwrap_or_default(), r.upstream_header("x-client-id"))
    };
    assert_eq!(as_client("tok-nosub").await, ("Miss".into(), vec!["batch-job".to_owned()]));
    assert_eq!(as_client("tok-nosub2").await, ("Miss".into(), vec!["report-job".to_owned()]), "not the other client's answer");
    assert_eq!(as_client("tok-nosub").await, ("Hit".into(), vec!["batch-job".to_owned()]));
    assert_eq!(as_client("tok-nosub2").await, ("Hit".into(), vec!["report-job".to_owned()]));
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn an_inactive_expired_or_foreign_token_is_refused_as_invalid() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let routes = route(&idp, "/api", &format!(r#"audiences = ["orders-api"], issuer = "{ISSUER}", realm = "orders""#));
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;
    let challenge = "Bearer realm=\"orders\", error=\"invalid_token\"";

    for token in ["tok-inactive", "tok-unknown", "tok-expired", "tok-otheraud", "tok-otheriss"] {
        let r = get(&gw, "/api/x", &[("authorization", &bearer(token))]).await;
        assert_refused(&r, 401, "unauthorized", challenge, token);
        assert_eq!(r.json()["message"], "invalid token", "{token}: the reason is only logged");
    }
    // A token no server could have issued is refused without a call.
    let calls = idp.calls().len();
    let r = get(&gw, "/api/x", &[("authorization", &format!("Bearer {}", "a".repeat(20_000)))]).await;
    assert_refused(&r, 401, "unauthorized", challenge, "");
    assert_eq!(idp.calls().len(), calls);
    assert_eq!(upstream.hits(), 0, "a refused request never reaches the upstream");
    assert!(idp.calls().iter().all(|c| c.client_ok));
    gw.stop().await;
}

#[tokio::test]
async fn a_request_without_a_token_is_challenged_and_nothing_is_asked() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let routes = format!("{}{}", route(&idp, "/api", ""), route(&idp, "/query", r#"token_query = "access_token""#));
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;

    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6cHc=")], vec![("authorization", "Bearer ")], vec![("x-api-key", "tok-alice")]] {
        let r = get(&gw, "/api/x", &headers).await;
        assert_refused(&r, 401, "unauthorized", "Bearer realm=\"airlock\"", "");
    }
    // The query is only read where `token_query` says so.
    let r = get(&gw, "/api/x?access_token=tok-alice", &[]).await;
    assert_refused(&r, 401, "unauthorized", "Bearer realm=\"airlock\"", "tok-alice");
    // Twice (two methods, or twice the same): which one the upstream would read is unknown.
    for (path, headers) in [
        ("/query/x?access_token=tok-alice", vec![("authorization", "Bearer tok-bob")]),
        ("/query/x?access_token=tok-alice&access_token=tok-bob", vec![]),
    ] {
        let r = get(&gw, path, &headers).await;
        assert_refused(&r, 400, "bad_request", "Bearer realm=\"airlock\", error=\"invalid_request\"", "tok-bob");
    }
    assert!(idp.calls().is_empty(), "no token, no call");
    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn a_token_in_the_query_is_used_and_removed_and_keep_token_keeps_it() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let routes = format!(
        "{}{}{}",
        route(&idp, "/query", r#"token_query = "access_token""#),
        route(&idp, "/keep", r#"keep_token = true, token_query = "access_token""#),
        route(&idp, "/header", r#"token_header = "X-Access-Token""#)
    );
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;

    let r = get(&gw, "/query/x?a=1&access_token=tok-alice&b=%20", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["query"], "a=1&b=%20", "only the token's parameter goes");
    assert_eq!(r.upstream_header("x-consumer-id"), ["alice"]);
    let r = get(&gw, "/query/x?access_token=tok-bob", &[]).await;
    assert_eq!((r.status.as_u16(), r.json()["query"].clone()), (200, serde_json::Value::Null));

    // An empty or valueless parameter beside the header's token carries no token (not sent
    // twice), but is the token's parameter: removed too.
    let empties = [("/query/x?access_token=&a=1", Some("a=1")), ("/query/x?access_token", None), ("/query/x?a=1&access_token=&access_token", Some("a=1"))];
    for (path, rest) in empties {
        let r = get(&gw, path, &[("authorization", "Bearer tok-alice")]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["query"].as_str(), rest, "{path}");
        assert!(r.upstream_header("authorization").is_empty());
    }

    let r = get(&gw, "/keep/x?access_token=tok-alice", &[]).await;
    assert_eq!((r.status.as_u16(), r.json()["query"].as_str()), (200, Some("access_token=tok-alice")));
    let r = get(&gw, "/keep/x?access_token=", &[("authorization", "Bearer tok-alice")]).await;
    assert_eq!((r.status.as_u16(), r.json()["query"].as_str()), (200, Some("access_token=")), "`keep_token` keeps it all");
    let r = get(&gw, "/keep/x", &[("authorization", "Bearer tok-alice")]).await;
    assert_eq!(r.upstream_header("authorization"), ["Bearer tok-alice"]);

    // Another header holds the token alone, and is removed.
    let r = get(&gw, "/header/x", &[("x-access-token", "tok-bob"), ("authorization", "Basic x")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-access-token").is_empty());
    assert_eq!(r.upstream_header("authorization"), ["Basic x"], "not the token's header: untouched");
    assert_eq!(r.upstream_header("x-consumer-id"), ["bob"]);
    gw.stop().await;
}

#[tokio::test]
async fn a_missing_scope_is_a_403_naming_the_scopes_the_route_requires() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let routes = format!(
        "{}{}",
        route(&idp, "/read", r#"required_scopes = ["orders:read"]"#),
        route(&idp, "/write", r#"required_scopes = ["orders:read", "orders:write"]"#)
    );
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;

    let r = get(&gw, "/read/x", &[("authorization", "Bearer tok-bob")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&gw, "/write/x", &[("authorization", "Bearer tok-bob")]).await;
    assert_refused(&r, 403, "forbidden", "Bearer realm=\"airlock\", error=\"insufficient_scope\", scope=\"orders:read orders:write\"", "tok-bob");
    let r = get(&gw, "/write/x", &[("authorization", "Bearer tok-alice")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&gw, "/read/x", &[("authorization", "Bearer tok-noscope")]).await;
    assert_refused(&r, 403, "forbidden", "Bearer realm=\"airlock\", error=\"insufficient_scope\", scope=\"orders:read\"", "tok-noscope");
    assert_eq!(r.json()["message"], "the token does not have the scope this route requires");
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn scopes_are_split_at_spaces_only_and_a_list_of_strings_is_the_same_set() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let routes = format!(
        "{}{}",
        route(&idp, "/read", r#"required_scopes = ["orders:read"], claims_to_headers = { scope = "x-scopes" }"#),
        route(&idp, "/open", r#"claims_to_headers = { scope = "x-scopes" }"#)
    );
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;
    let challenge = "Bearer realm=\"airlock\", error=\"insufficient_scope\", scope=\"orders:read\"";

    // `profile<TAB>orders:read` is one scope (RFC 6749 3.3: `%x20` only), not `orders:read`.
    let r = get(&gw, "/read/x", &[("authorization", "Bearer tok-tabscope")]).await;
    assert_refused(&r, 403, "forbidden", challenge, "tok-tabscope");
    assert_eq!(r.json()["message"], "the token does not have the scope this route requires");

    // A list of strings is the same set of scopes, sent upstream as RFC 7662 writes it.
    let r = get(&gw, "/read/x", &[("authorization", "Bearer tok-listscope")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-scopes"), ["orders:read profile"]);

    // Any other type grants no scope, and the message says the scopes could not be read rather
    // than that one is missing.
    for token in ["tok-numscope", "tok-objscope", "tok-mixedscope"] {
        let r = get(&gw, "/read/x", &[("authorization", &bearer(token))]).await;
        assert_refused(&r, 403, "forbidden", challenge, token);
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains("in a form the gateway does not read"), "{token}: {message}");
    }
    // Where no scope is required, the scope is not checked.
    let r = get(&gw, "/open/x", &[("authorization", "Bearer tok-numscope")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-scopes").is_empty(), "a number is no scope text");
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn answers_are_cached_per_token_and_never_past_their_ttl_or_exp() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let routes = format!(
        "{}{}",
        route(&idp, "/api", r#"negative_cache_ttl_s = 1, required_scopes = ["orders:read"]"#),
        route(&idp, "/uncached", r#"cache_ttl_s = 0, negative_cache_ttl_s = 0"#)
    );
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;

    // The second request with a token is answered from the cache; other tokens are their own.
    for (token, consumer) in [("tok-alice", "alice"), ("tok-alice", "alice"), ("tok-bob", "bob"), ("tok-alice", "alice"), ("tok-bob", "bob")] {
        let r = get(&gw, "/api/x", &[("authorization", &bearer(token))]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.upstream_header("x-consumer-id"), [consumer], "{token}");
    }
    assert_eq!((idp.calls_for("tok-alice"), idp.calls_for("tok-bob")), (1, 1));
    // An inactive answer is cached too, for its (short) TTL only.
    for _ in 0..3 {
        let r = get(&gw, "/api/x", &[("authorization", "Bearer tok-inactive")]).await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(idp.calls_for("tok-inactive"), 1, "an inactive answer is cached too");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = get(&gw, "/api/x", &[("authorization", "Bearer tok-inactive")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(idp.calls_for("tok-inactive"), 2, "asked again once `negative_cache_ttl_s` has passed");

    // An active answer is cached no longer than its `exp` (one second here, not `cache_ttl_s`).
    let r = get(&gw, "/api/x", &[("authorization", "Bearer tok-short")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(&gw, "/api/x", &[("authorization", "Bearer tok-short")]).await;
    assert_eq!(r.status, 200, "within `leeway_s` of the new answer's `exp`: {}", r.text());
    assert_eq!(idp.calls_for("tok-short"), 2, "the cached answer past its `exp` was not used");

    // A route that does not cache uses no entry, even one its definition's other route stored.
    let before = idp.calls_for("tok-alice");
    for _ in 0..2 {
        let r = get(&gw, "/uncached/x", &[("authorization", "Bearer tok-alice")]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(idp.calls_for("tok-alice"), before + 2);

    // Failures are never cached.
    for _ in 0..2 {
        let r = get(&gw, "/api/x", &[("authorization", "Bearer tok-500")]).await;
        assert_eq!(r.status, 503);
    }
    assert_eq!(idp.calls_for("tok-500"), 2);

    // The entry is under a SHA-256 digest of the endpoint, client id, hint and token, in the
    // definition's namespace: never under the token.
    let state = gw.inner().state.clone();
    let key = format!("airlock:introspect:{}", expected_cache_key(&idp, "access_token", "tok-alice"));
    let entry = state.get(&key).await.unwrap().expect("tok-alice's answer is cached under its digest");
    let entry = String::from_utf8(entry).unwrap();
    assert!(entry.contains("\"sub\":\"alice\"") && !entry.contains("tok-alice"), "{entry}");
    for token in ["tok-alice", "tok-bob"] {
        for raw in [format!("airlock:introspect:{token}"), format!("airlock:introspect:t1:{token}")] {
            assert_eq!(state.get(&raw).await.unwrap(), None, "{raw}");
        }
    }
    gw.stop().await;
}

/// The cache key as the plugin documents it: `t1:` and the hex SHA-256 of the endpoint, client
/// id and hint (each preceded by its length, 8 bytes big-endian) and the token.
fn expected_cache_key(idp: &AuthServer, hint: &str, token: &str) -> String {
    let mut digest = Sha256::new();
    for part in [format!("{}/introspect", idp.origin()).as_str(), CLIENT_ID, hint] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    digest.update(token.as_bytes());
    let hex: String = digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("t1:{hex}")
}

#[tokio::test]
async fn with_redis_state_no_key_or_value_holds_a_token() {
    let redis = Redis::start(None);
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let text = format!(
        "\n[state]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{}\"\n{}",
        redis.port,
        config(&idp, &route(&idp, "/api", r#"required_scopes = ["orders:read"]"#))
    );
    let gw = Gateway::start(&text, Some(&upstream)).await;

    for token in ["tok-alice", "tok-bob", "tok-inactive", "tok-nosub", "tok-alice", "tok-inactive"] {
        let r = get(&gw, "/api/x", &[("authorization", &bearer(token))]).await;
        assert!(r.status == 200 || r.status == 401, "{token}: {}", r.text());
    }
    assert_eq!(idp.calls().len(), 4, "the repeats come from Redis");
    let keys: Vec<String> = redis.cmd(&["KEYS", "*"]).lines().map(str::to_owned).collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in &keys {
        assert!(key.starts_with("airlock:introspect:t1:") && key.len() == "airlock:introspect:t1:".len() + 64, "{key}");
        let value = redis.cmd(&["GET", key]);
        let ttl: i64 = redis.cmd(&["PTTL", key]).trim_start_matches(':').parse().unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "{key}: every entry expires, within `cache_ttl_s`: {ttl}");
        for token in TOKENS {
            assert!(!key.contains(token) && !value.contains(token), "{token} in {key} = {value}");
        }
    }
    for token in ["tok-alice", "tok-bob", "tok-inactive", "tok-nosub"] {
        let key = format!("airlock:introspect:{}", expected_cache_key(&idp, "access_token", token));
        assert!(keys.contains(&key), "{token}: {key} not in {keys:?}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_endpoint_that_cannot_answer_fails_closed_and_the_gateway_keeps_serving() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let routes = format!(
        "{}{}{}{}",
        route(&idp, "/api", r#"timeout_ms = 300"#),
        route_with("/down", &plugin_config(&idp, "").replace(&idp.origin(), DOWN)),
        route_with("/wrong-secret", &plugin_config(&idp, "").replace(CLIENT_SECRET, "not-the-secret")),
        route(&idp, "/open", r#"failure = "open", claims_to_headers = { sub = "x-user-id" }"#)
    );
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;

    let mut cases = vec![("/down/x", "tok-alice")];
    cases.extend([("/wrong-secret/x", "tok-alice"), ("/api/x", "tok-500"), ("/api/x", "tok-garbage"), ("/api/x", "tok-noactive"), ("/api/x", "tok-slow")]);
    for (path, token) in cases {
        let r = get(&gw, path, &[("authorization", &bearer(token))]).await;
        assert_eq!(r.status, 503, "{path} {token}: {}", r.text());
        let body = r.json();
        assert_eq!(body["error"], "auth_unavailable", "{body}");
        assert_eq!(r.header("retry-after").as_deref(), Some("5"));
        assert!(!r.text().contains("127.0.0.1") && !r.text().contains(token), "names nothing of the server: {}", r.text());
        assert!(r.header("www-authenticate").is_none());
    }
    assert!(idp.calls().iter().any(|c| !c.client_ok), "the wrong secret reached the server, which refused it");
    assert_eq!(upstream.hits(), 0);

    // The gateway, and the plugin's instances, keep serving.
    let r = get(&gw, "/api/x", &[("authorization", "Bearer tok-alice")]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Open: on, unauthenticated, without the token and without what the client forged.
    let r = get(&gw, "/open/x", &[("authorization", "Bearer tok-500"), ("x-user-id", "admin"), ("x-consumer-id", "admin")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("authorization").is_empty());
    assert!(r.upstream_header("x-user-id").is_empty() && r.upstream_header("x-consumer-id").is_empty());
    // An answer is an answer: open does not let an inactive token through.
    let r = get(&gw, "/open/x", &[("authorization", "Bearer tok-inactive")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn the_consumer_is_seen_by_acl_and_rate_limit_by_consumer() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let routes = format!(
        r#"
[[routes]]
path = "/admin"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect"
config = {introspect}
[[routes.plugins]]
plugin = "builtin:acl"
config = {{ allow = ["alice", "batch-job"] }}

[[routes]]
path = "/limited"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect"
config = {introspect}
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = {{ by = ["consumer"], limits = [{{ limit = 1, window = "minute" }}] }}

[[routes]]
path = "/clients"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect"
config = {by_client}
[[routes.plugins]]
plugin = "builtin:acl"
config = {{ allow = ["batch-job"] }}
"#,
        introspect = plugin_config(&idp, ""),
        by_client = plugin_config(&idp, r#"consumer_claim = "client_id""#),
    );
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;

    let r = get(&gw, "/admin", &[("authorization", "Bearer tok-alice")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&gw, "/admin", &[("authorization", "Bearer tok-bob"), ("x-consumer-id", "alice")]).await;
    assert_eq!(r.status, 403, "acl refuses the consumer the token names: {}", r.text());
    // No `sub`: allowed by the server, but no consumer for acl (and `sub` is not replaced by
    // `client_id` unless the route says so).
    let r = get(&gw, "/admin", &[("authorization", "Bearer tok-nosub")]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = get(&gw, "/clients", &[("authorization", "Bearer tok-nosub")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), ["batch-job"]);

    // One request a minute per consumer: alice's second is limited, bob and carol have their own.
    let r = get(&gw, "/limited", &[("authorization", "Bearer tok-alice")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&gw, "/limited", &[("authorization", "Bearer tok-alice")]).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (429, Some("rate_limited")));
    for token in ["tok-bob", "tok-carol"] {
        let r = get(&gw, "/limited", &[("authorization", &bearer(token))]).await;
        assert_eq!(r.status, 200, "{token}: {}", r.text());
    }
    gw.stop().await;
}

#[tokio::test]
async fn config_errors_are_refused_at_load() {
    let idp = AuthServer::start().await;
    let start_err = |routes: String| {
        let text = config(&idp, &routes);
        async move { Gateway::try_start(&text, None).await.err().expect("the config is refused").to_string() }
    };

    let err = start_err(route(&idp, "/api", "").replace(&format!("{}/introspect", idp.origin()), "ftp://idp/introspect")).await;
    assert!(err.contains("`endpoint`: `ftp://idp/introspect` is not an absolute http:// or https:// URL"), "{err}");

    // An origin the grant does not list: refused at load, and never called.
    let err = start_err(route(&idp, "/api", "").replace(&idp.origin(), "http://127.0.0.1:2")).await;
    assert!(err.contains("`endpoint`: the gateway refuses calls to `http://127.0.0.1:2/introspect`"), "{err}");
    assert!(err.contains("not in this plugin's `http_client.allow`"), "{err}");

    // The built-in straight in a chain, without a `[plugins.<name>]` grant.
    let err = start_err(format!(
        "\n[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:oauth2-introspection\"\nconfig = {}\n",
        plugin_config(&idp, "")
    ))
    .await;
    assert!(err.contains("not granted `http-client`"), "{err}");

    let err = start_err(route(&idp, "/api", r#"required_scopes = ["orders read"]"#)).await;
    assert!(err.contains("`required_scopes[0]`: `orders read` is not a scope"), "{err}");
    let err = start_err(route(&idp, "/api", &format!(r#"issuer = "{ISSUER}", issuers = ["{ISSUER2}"]"#))).await;
    assert!(err.contains("`issuers`: give `issuer` (one) or `issuers` (a list), not both"), "{err}");
    let err = start_err(route(&idp, "/api", r#"issuers = []"#)).await;
    assert!(err.contains("`issuers`: empty"), "{err}");
    let err = start_err(route(&idp, "/api", &format!(r#"issuers = ["{ISSUER}", ""]"#))).await;
    assert!(err.contains("`issuers[1]`: empty"), "{err}");
    let err = start_err(route(&idp, "/api", r#"groups_claim = """#)).await;
    assert!(err.contains("`groups_claim`: empty"), "{err}");
    // `anonymous` names a consumer the plugin is handed: only with the `consumers` grant.
    let err = start_err(format!("\n[[consumers]]\nid = \"guest\"\n{}", route(&idp, "/api", r#"anonymous = "guest""#))).await;
    assert!(err.contains("`anonymous`: no consumer with id `guest` in [[consumers]] (this plugin sees [[consumers]] only when its definition grants them"), "{err}");
    let err = start_err(route(&idp, "/api", r#"cache_ttl_s = 100000"#)).await;
    assert!(err.contains("`cache_ttl_s`: at most 86400"), "{err}");
    let err = start_err(route(&idp, "/api", r#"claims_to_headers = { sub = "content-length" }"#)).await;
    assert!(err.contains("`claims_to_headers.sub`"), "{err}");
    let err = start_err(route(&idp, "/api", "").replace(&format!("client_secret = \"{CLIENT_SECRET}\""), "client_secret = \"file:missing.secret\"")).await;
    assert!(err.contains("`client_secret`: cannot read `missing.secret`"), "{err}");
    assert!(idp.calls().is_empty(), "checking a config calls nothing");
}

#[tokio::test]
async fn issuers_admit_a_token_of_any_listed_issuer_and_issuer_still_takes_one() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let routes = format!(
        "{}{}",
        route(&idp, "/two", &format!(r#"issuers = ["{ISSUER}", "{ISSUER2}"]"#)),
        route(&idp, "/one", &format!(r#"issuer = "{ISSUER2}""#))
    );
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;
    let invalid = "Bearer realm=\"airlock\", error=\"invalid_token\"";

    // Either of two issuers; a third is refused.
    for (token, consumer) in [("tok-alice", "alice"), ("tok-iss2", "ken")] {
        let r = get(&gw, "/two/x", &[("authorization", &bearer(token))]).await;
        assert_eq!(r.status, 200, "{token}: {}", r.text());
        assert_eq!(r.upstream_header("x-consumer-id"), [consumer]);
    }
    let r = get(&gw, "/two/x", &[("authorization", "Bearer tok-otheriss")]).await;
    assert_refused(&r, 401, "unauthorized", invalid, "tok-otheriss");
    // No `iss` at all: refused where issuers are checked.
    let r = get(&gw, "/two/x", &[("authorization", "Bearer tok-nosub")]).await;
    assert_refused(&r, 401, "unauthorized", invalid, "tok-nosub");

    // `issuer`, one string, as before.
    let r = get(&gw, "/one/x", &[("authorization", "Bearer tok-iss2")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&gw, "/one/x", &[("authorization", "Bearer tok-alice")]).await;
    assert_refused(&r, 401, "unauthorized", invalid, "tok-alice");
    assert_eq!(upstream.hits(), 3);
    gw.stop().await;
}

/// RFC 6750 2.1: `"Bearer" 1*SP b64token`, read as `builtin:jwt` reads it: a tab after the
/// scheme is no bearer token (the request has none), spaces are.
#[tokio::test]
async fn the_bearer_scheme_is_followed_by_spaces_not_a_tab() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let gw = Gateway::start(&config(&idp, &route(&idp, "/api", "")), Some(&upstream)).await;

    for value in ["Bearer\ttok-alice", "Bearer\t tok-alice"] {
        let r = get(&gw, "/api/x", &[("authorization", value)]).await;
        assert_refused(&r, 401, "unauthorized", "Bearer realm=\"airlock\"", "tok-alice");
        assert_eq!(r.json()["message"], "no bearer token found in the request", "{value:?}");
    }
    assert!(idp.calls().is_empty(), "no token found, no call");
    for value in ["Bearer tok-alice", "bearer   tok-alice"] {
        let r = get(&gw, "/api/x", &[("authorization", value)]).await;
        assert_eq!(r.status, 200, "{value:?}: {}", r.text());
        assert_eq!(r.upstream_header("x-consumer-id"), ["alice"]);
    }
    gw.stop().await;
}

/// `anonymous`, as `builtin:jwt` has it: a request without a valid token goes on as the
/// anonymous consumer (its groups, `X-Anonymous-Consumer: true`, the refused token removed); one
/// an earlier auth plugin authenticated is left alone; a token sent twice and an endpoint that
/// cannot answer (`failure = "closed"`) are still refused.
#[tokio::test]
async fn anonymous_stands_in_for_a_missing_or_refused_token_as_in_jwt() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let anon = |extra: &str| plugin_config(&idp, &format!(r#"anonymous = "guest"{}{extra}"#, if extra.is_empty() { "" } else { ", " }));
    let routes = format!(
        r#"
[[consumers]]
id = "guest"
groups = ["public"]

[[consumers]]
id = "alice"
credentials = {{ keys = ["alice-key"] }}

[plugins.introspect-anon]
source = "builtin:oauth2-introspection"
capabilities = ["http-client", "consumers"]
http_client = {{ allow = ["{origin}", "{DOWN}"], timeout_ms = 2000 }}

[[routes]]
path_prefix = "/anon"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect-anon"
config = {anon}

[[routes]]
path_prefix = "/open"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect-anon"
config = {open}

[[routes]]
path_prefix = "/closed"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect-anon"
config = {closed}

[[routes]]
path_prefix = "/either"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = {{ anonymous = "guest" }}
[[routes.plugins]]
plugin = "introspect-anon"
config = {either}
[[routes.plugins]]
plugin = "builtin:acl"
config = {{ allow = ["alice", "bob", "group:public"] }}
"#,
        origin = idp.origin(),
        anon = anon(r#"required_scopes = ["orders:read"], token_query = "access_token", claims_to_headers = { sub = "x-user-id" }"#),
        open = anon(r#"failure = "open""#).replace(&idp.origin(), DOWN),
        closed = anon("").replace(&idp.origin(), DOWN),
        either = anon(""),
    );
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;
    let is_guest = |r: &Reply, what: &str| {
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert_eq!(r.upstream_header("x-consumer-id"), ["guest"], "{what}");
        assert_eq!(r.upstream_header("x-consumer-groups"), ["public"], "{what}: the anonymous consumer's groups");
        assert_eq!(r.upstream_header("x-anonymous-consumer"), ["true"], "{what}");
        assert!(r.upstream_header("authorization").is_empty(), "{what}: a refused token is removed too");
        assert!(r.upstream_header("x-user-id").is_empty(), "{what}: no claims from a refused token");
    };

    // No token: the anonymous consumer, whatever the client forged, and no call.
    let forged = [("x-request-id", "oi-anon-1"), ("x-consumer-id", "alice"), ("x-consumer-groups", "admin"), ("x-anonymous-consumer", "false"), ("x-user-id", "alice")];
    let r = get(&gw, "/anon/x", &forged).await;
    is_guest(&r, "no token");
    assert!(idp.calls().is_empty());
    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "oi-anon-1").await;
    assert_eq!(line["consumer"], "guest");
    // A refused token (inactive; a required scope missing; not a token at all): anonymous too,
    // and the token does not reach the upstream.
    for token in ["tok-inactive", "tok-noscope", "tok-expired"] {
        let r = get(&gw, "/anon/x", &[("authorization", &bearer(token))]).await;
        is_guest(&r, token);
    }
    let r = get(&gw, "/anon/x?access_token=tok-inactive&page=2", &[]).await;
    is_guest(&r, "a refused token in the query");
    assert_eq!(r.json()["query"], "page=2");
    let r = get(&gw, "/anon/x", &[("authorization", &format!("Bearer {}", "a".repeat(20_000)))]).await;
    is_guest(&r, "a token no server could have issued");
    // A valid token names its own consumer, not anonymous.
    let r = get(&gw, "/anon/x", &[("authorization", "Bearer tok-bob"), ("x-anonymous-consumer", "true")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), ["bob"]);
    assert_eq!(r.upstream_header("x-user-id"), ["bob"]);
    assert!(r.upstream_header("x-anonymous-consumer").is_empty() && r.upstream_header("x-consumer-groups").is_empty());
    // Still refused: the token sent twice.
    let r = get(&gw, "/anon/x?access_token=tok-alice", &[("authorization", "Bearer tok-bob")]).await;
    assert_refused(&r, 400, "bad_request", "Bearer realm=\"airlock\", error=\"invalid_request\"", "tok-bob");

    // The endpoint cannot answer: `failure = "open"` goes on as the anonymous consumer; closed
    // stays a 503 (a valid token is not quietly made anonymous).
    let r = get(&gw, "/open/x", &[("authorization", "Bearer tok-alice")]).await;
    is_guest(&r, "failure = open");
    let r = get(&gw, "/closed/x", &[("authorization", "Bearer tok-alice")]).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (503, Some("auth_unavailable")), "{}", r.text());
    let r = get(&gw, "/closed/x", &[]).await;
    is_guest(&r, "no token, nothing to ask");

    // Either credential: key-auth's consumer stands (the bearer token is not even looked up);
    // a token names its consumer over key-auth's anonymous fallback; neither is the guest.
    let calls = idp.calls_for("tok-bob");
    let r = get(&gw, "/either/x", &[("x-api-key", "alice-key"), ("authorization", "Bearer tok-bob")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), ["alice"]);
    assert!(r.upstream_header("x-anonymous-consumer").is_empty());
    assert_eq!(idp.calls_for("tok-bob"), calls, "left alone: no call");
    let r = get(&gw, "/either/x", &[("authorization", "Bearer tok-carol")]).await;
    assert_eq!(r.status, 403, "carol, named by her token over key-auth's guest, is not in the acl: {}", r.text());
    let r = get(&gw, "/either/x", &[("authorization", "Bearer tok-bob")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), ["bob"]);
    assert!(r.upstream_header("x-anonymous-consumer").is_empty(), "key-auth's anonymous fallback is overruled");
    for headers in [vec![], vec![("authorization", "Bearer tok-inactive")]] {
        let r = get(&gw, "/either/x", &headers).await;
        is_guest(&r, "either, with no valid credential");
    }
    gw.stop().await;
}

/// `groups_claim`: the answer's groups are the consumer's, for `acl` and `rate-limit` plans, sent
/// upstream as `X-Consumer-Groups`; an unusable list names no consumer at all.
#[tokio::test]
async fn groups_claim_drives_acl_and_rate_limit_plans() {
    let upstream = Upstream::start().await;
    let idp = AuthServer::start().await;
    let groups = plugin_config(&idp, r#"groups_claim = "groups""#);
    let routes = format!(
        r#"
[[routes]]
path = "/staff"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect"
config = {groups}
[[routes.plugins]]
plugin = "builtin:acl"
config = {{ allow = ["group:staff"] }}

[[routes]]
path = "/not-read"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect"
config = {plain}
[[routes.plugins]]
plugin = "builtin:acl"
config = {{ allow = ["group:staff"] }}

[[routes]]
path = "/plan"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect"
config = {groups}
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = {{ by = ["consumer"], limits = [{{ limit = 1, window = "minute" }}], plans = {{ gold = [{{ limit = 3, window = "minute" }}] }} }}

[[routes]]
path = "/open"
upstream = "backend"
[[routes.plugins]]
plugin = "introspect"
config = {groups}
"#,
        plain = plugin_config(&idp, ""),
    );
    let gw = Gateway::start(&config(&idp, &routes), Some(&upstream)).await;

    // A list, and a space-separated string, as `scope` is.
    let r = get(&gw, "/staff", &[("authorization", "Bearer tok-groups"), ("x-consumer-groups", "admin")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), ["gina"]);
    assert_eq!(r.upstream_header("x-consumer-groups"), ["gold,staff"], "the answer's groups, not the client's");
    let r = get(&gw, "/open", &[("authorization", "Bearer tok-groupstext")]).await;
    assert_eq!(r.upstream_header("x-consumer-groups"), ["gold,ops"], "{}", r.text());
    // No group `staff`, or the route does not read groups: acl refuses.
    let r = get(&gw, "/staff", &[("authorization", "Bearer tok-groupstext")]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = get(&gw, "/staff", &[("authorization", "Bearer tok-bob"), ("x-consumer-groups", "staff")]).await;
    assert_eq!(r.status, 403, "a client's own groups count for nothing: {}", r.text());
    let r = get(&gw, "/not-read", &[("authorization", "Bearer tok-groups")]).await;
    assert_eq!(r.status, 403, "without `groups_claim` a token has no groups: {}", r.text());
    let r = get(&gw, "/open", &[("authorization", "Bearer tok-bob"), ("x-consumer-groups", "staff")]).await;
    assert_eq!(r.upstream_header("x-consumer-id"), ["bob"]);
    assert!(r.upstream_header("x-consumer-groups").is_empty(), "no groups: no header, and the client's copy removed");

    // The gold plan (3 a minute) for both gold tokens; bob gets the default (1 a minute).
    for token in ["tok-groups", "tok-groupstext"] {
        for i in 0..3 {
            let r = get(&gw, "/plan", &[("authorization", &bearer(token))]).await;
            assert_eq!(r.status, 200, "{token} #{i}: {}", r.text());
        }
        let r = get(&gw, "/plan", &[("authorization", &bearer(token))]).await;
        assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (429, Some("rate_limited")), "{token}");
    }
    let r = get(&gw, "/plan", &[("authorization", "Bearer tok-bob")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&gw, "/plan", &[("authorization", "Bearer tok-bob")]).await;
    assert_eq!(r.status, 429, "{}", r.text());

    // Groups that cannot be taken whole (a `,` in a name, too many, not strings) name no
    // consumer: never a part of the list, so a group an acl denies cannot be dropped.
    for token in ["tok-badgroups", "tok-manygroups", "tok-numgroups"] {
        let r = get(&gw, "/staff", &[("authorization", &bearer(token))]).await;
        assert_eq!(r.status, 403, "{token}: {}", r.text());
        let r = get(&gw, "/open", &[("authorization", &bearer(token)), ("x-consumer-id", "alice")]).await;
        assert_eq!(r.status, 200, "{token}: {}", r.text());
        assert!(r.upstream_header("x-consumer-id").is_empty() && r.upstream_header("x-consumer-groups").is_empty(), "{token}: {}", r.text());
    }
    gw.stop().await;
}
