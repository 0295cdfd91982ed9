//! `builtin:proxy-cache` end to end: a real upstream that counts its calls and numbers its
//! answers, a gateway in this process, and (last test) two gateways sharing a real Redis.
//! What is stored and served, for how long, under which key, and what never is.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airlock_tests::redis::Redis;
use airlock_tests::{Gateway, HttpClient, Reply, Upstream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

/// An upstream whose answers say how many requests it has served (`n=<count>`), the request's
/// path and query, and the `accept-language`, `x-consumer-id` and `x-user-id` it got; some paths answer with
/// caching headers:
/// - `/cc/<value>`: `Cache-Control: <value>` (`_` for spaces, `~` for `,`);
/// - `/expires/in/<secs>`: `Expires` that far ahead (with its `Date`), `/expires/raw/<value>`:
///   `Expires: <value>` (`_` for spaces);
/// - `/cookie`: a `Set-Cookie`;
/// - `/vary/<value>`: `Vary: <value>`;
/// - `/status/<code>`: that status;
/// - `/big/<bytes>`: a body of that many bytes;
/// - `/etag/<tag>`: an origin with validators (`ETag: "<tag>"`, a fixed `Last-Modified`,
///   `max-age=60`, or `no-store` with the query `nostore`) that answers its own conditions with
///   a `304`, as a real one does, and says which it got.
async fn numbered_upstream() -> Upstream {
    let count = Arc::new(AtomicUsize::new(0));
    Upstream::with_handler(move |req: Request<Incoming>| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let path = req.uri().path().to_owned();
            let header = |name: &str| req.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
            if let Some(size) = path.strip_prefix("/big/").and_then(|s| s.parse::<usize>().ok()) {
                return Response::new(Full::new(Bytes::from(vec![b'x'; size])));
            }
            if let Some(tag) = path.strip_prefix("/etag/") {
                let etag = format!("\"{tag}\"");
                let (inm, ims) = (header("if-none-match"), header("if-modified-since"));
                let modified = httpdate::parse_http_date(ETAG_LAST_MODIFIED).expect("date");
                let not_modified = if inm.is_empty() {
                    httpdate::parse_http_date(&ims).is_ok_and(|since| modified <= since)
                } else {
                    inm.split(',').any(|t| t.trim().trim_start_matches("W/") == etag)
                };
                let body = if not_modified {
                    String::new()
                } else if req.uri().query() == Some("big") {
                    "x".repeat(100_000)
                } else {
                    format!("n={n} inm={inm} ims={ims} if-match={}", header("if-match"))
                };
                let mut r = Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = if not_modified { http::StatusCode::NOT_MODIFIED } else { http::StatusCode::OK };
                let cc = if req.uri().query() == Some("nostore") { "no-store" } else { "max-age=60" };
                for (name, value) in [("etag", etag.as_str()), ("last-modified", ETAG_LAST_MODIFIED), ("cache-control", cc), ("content-type", "text/plain")] {
                    r.headers_mut().insert(name, value.parse().expect("value"));
                }
                return r;
            }
            let body = format!(
                "n={n} path={path} query={} lang={} consumer={} user={}",
                req.uri().query().unwrap_or(""),
                header("accept-language"),
                header("x-consumer-id"),
                header("x-user-id")
            );
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert("content-type", "text/plain".parse().expect("static"));
            if let Some(cc) = path.strip_prefix("/cc/") {
                r.headers_mut().insert("cache-control", cc.replace('_', " ").replace('~', ",").parse().expect("value"));
            }
            if let Some(secs) = path.strip_prefix("/expires/in/").and_then(|s| s.parse::<u64>().ok()) {
                let now = std::time::SystemTime::now();
                r.headers_mut().insert("date", httpdate::fmt_http_date(now).parse().expect("date"));
                let at = now + Duration::from_secs(secs);
                r.headers_mut().insert("expires", httpdate::fmt_http_date(at).parse().expect("date"));
            }
            if let Some(raw) = path.strip_prefix("/expires/raw/") {
                r.headers_mut().insert("expires", raw.replace('_', " ").parse().expect("value"));
            }
            if let Some(vary) = path.strip_prefix("/vary/") {
                r.headers_mut().insert("vary", vary.parse().expect("value"));
            }
            if path == "/cookie" {
                r.headers_mut().insert("set-cookie", "session=secret; HttpOnly".parse().expect("static"));
            }
            if let Some(code) = path.strip_prefix("/status/").and_then(|s| s.parse::<u16>().ok()) {
                *r.status_mut() = http::StatusCode::from_u16(code).expect("status");
            }
            r
        }
    })
    .await
}

/// The `Last-Modified` of the `/etag/` answers.
const ETAG_LAST_MODIFIED: &str = "Tue, 01 Dec 2026 10:00:00 GMT";

/// One route through `builtin:proxy-cache` with this config (inline table body).
fn config(cache: &str) -> String {
    format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[[routes]]
id = "cached"
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:proxy-cache"
config = {{ {cache} }}
"#
    )
}

async fn start(cache: &str) -> (Upstream, Gateway) {
    let upstream = numbered_upstream().await;
    let gw = Gateway::start(&config(cache), Some(&upstream)).await;
    (upstream, gw)
}

fn cache_status(r: &Reply) -> String {
    r.header("x-cache-status").unwrap_or_else(|| "(none)".into())
}

async fn get(client: &HttpClient, gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    client.request("GET", &gw.url(path), headers, b"").await
}

/// GETs `path` twice; returns both replies.
async fn twice(client: &HttpClient, gw: &Gateway, path: &str) -> (Reply, Reply) {
    (get(client, gw, path, &[]).await, get(client, gw, path, &[]).await)
}

#[tokio::test]
async fn a_miss_is_stored_and_the_next_request_is_a_hit_without_the_upstream() {
    let (upstream, gw) = start("").await;
    let client = HttpClient::http1();
    let first = get(&client, &gw, "/a", &[]).await;
    assert_eq!((first.status.as_u16(), cache_status(&first).as_str()), (200, "Miss"));
    assert!(first.header("age").is_none());
    let second = get(&client, &gw, "/a", &[]).await;
    assert_eq!((second.status.as_u16(), cache_status(&second).as_str()), (200, "Hit"));
    assert_eq!(second.text(), first.text(), "the stored body");
    assert_eq!(second.header("content-type").as_deref(), Some("text/plain"), "the stored headers");
    assert_eq!(second.header("content-length").as_deref(), Some(first.body.len().to_string().as_str()));
    let age: u64 = second.header("age").expect("a hit has an Age").parse().expect("Age is seconds");
    assert!(age <= 1, "{age}");
    assert!(second.header("x-request-id").is_some() && second.header("x-request-id") != first.header("x-request-id"));
    assert_eq!(upstream.hits(), 1, "the hit did not reach the upstream");
    // Another path is another entry.
    assert_eq!(cache_status(&get(&client, &gw, "/b", &[]).await), "Miss");
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn entries_expire_after_ttl_ms() {
    let (upstream, gw) = start("ttl_ms = 300").await;
    let client = HttpClient::http1();
    let (a, b) = twice(&client, &gw, "/t").await;
    assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Hit"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let c = get(&client, &gw, "/t", &[]).await;
    assert_eq!(cache_status(&c), "Miss", "expired");
    assert!(c.text().starts_with("n=2 "), "{}", c.text());
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn the_upstreams_cache_control_sets_the_lifetime_or_forbids_storing() {
    let (upstream, gw) = start("ttl_ms = 600000").await;
    let client = HttpClient::http1();
    // max-age=1 wins over the 10-minute default.
    let (a, b) = twice(&client, &gw, "/cc/public~_max-age=1").await;
    assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Hit"));
    // s-maxage wins over max-age.
    let (a, b) = twice(&client, &gw, "/cc/max-age=1~_s-maxage=600").await;
    assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Hit"));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(cache_status(&get(&client, &gw, "/cc/public~_max-age=1", &[]).await), "Miss", "max-age=1 expired");
    assert_eq!(cache_status(&get(&client, &gw, "/cc/max-age=1~_s-maxage=600", &[]).await), "Hit", "s-maxage=600 holds");
    let before = upstream.hits();
    for path in ["/cc/no-store", "/cc/private~_max-age=60", "/cc/no-cache", "/cc/max-age=0", "/vary/*", "/vary/origin"] {
        let (a, b) = twice(&client, &gw, path).await;
        assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Miss"), "{path}");
    }
    assert_eq!(upstream.hits(), before + 12, "nothing of those was stored");
    // A Vary the key covers is fine.
    let gw2 = Gateway::start(&config(r#"vary_headers = ["Origin"]"#), Some(&upstream)).await;
    let (a, b) = twice(&client, &gw2, "/vary/Origin").await;
    assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Hit"));
    gw.stop().await;
    gw2.stop().await;
}

#[tokio::test]
async fn respect_cache_control_false_stores_for_ttl_ms_whatever_the_upstream_says() {
    let (upstream, gw) = start("respect_cache_control = false").await;
    let client = HttpClient::http1();
    let (a, b) = twice(&client, &gw, "/cc/no-store").await;
    assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Hit"));
    let hit = get(&client, &gw, "/cc/no-store", &[("cache-control", "no-cache")]).await;
    assert_eq!(cache_status(&hit), "Hit", "nor the client's");
    // A cookie is never stored, whatever the policy.
    let (a, b) = twice(&client, &gw, "/cookie").await;
    assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Miss"));
    assert_eq!(upstream.hits(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn a_clients_no_cache_or_no_store_bypasses_the_cache() {
    let (upstream, gw) = start("").await;
    let client = HttpClient::http1();
    assert_eq!(cache_status(&get(&client, &gw, "/r", &[]).await), "Miss");
    for cc in ["no-cache", "No-Store", "max-age=5, no-cache"] {
        let r = get(&client, &gw, "/r", &[("cache-control", cc)]).await;
        assert_eq!(cache_status(&r), "Bypass", "{cc}");
    }
    assert_eq!(upstream.hits(), 4);
    // Bypassed answers were not stored over the entry: still the first one.
    let r = get(&client, &gw, "/r", &[]).await;
    assert_eq!(cache_status(&r), "Hit");
    assert!(r.text().starts_with("n=1 "), "{}", r.text());
    // max-age=0 (a browser's reload) is not a bypass.
    assert_eq!(cache_status(&get(&client, &gw, "/r", &[("cache-control", "max-age=0")]).await), "Hit");
    gw.stop().await;
}

#[tokio::test]
async fn responses_that_set_cookies_are_not_stored() {
    let (upstream, gw) = start("").await;
    let client = HttpClient::http1();
    let (a, b) = twice(&client, &gw, "/cookie").await;
    assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Miss"));
    assert_eq!(b.header("set-cookie").as_deref(), Some("session=secret; HttpOnly"));
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn query_parameters_in_another_order_share_an_entry() {
    let (upstream, gw) = start("").await;
    let client = HttpClient::http1();
    assert_eq!(cache_status(&get(&client, &gw, "/q?b=2&a=1", &[]).await), "Miss");
    let r = get(&client, &gw, "/q?a=1&b=2", &[]).await;
    assert_eq!(cache_status(&r), "Hit");
    assert!(r.text().contains("query=b=2&a=1"), "the first request's answer: {}", r.text());
    for other in ["/q?a=1", "/q?a=1&b=3", "/q?a=1&b=2&a=0", "/q"] {
        assert_eq!(cache_status(&get(&client, &gw, other, &[]).await), "Miss", "{other}");
    }
    assert_eq!(upstream.hits(), 5);
    gw.stop().await;
}

#[tokio::test]
async fn vary_headers_keep_separate_entries() {
    let (upstream, gw) = start(r#"vary_headers = ["Accept-Language"]"#).await;
    let client = HttpClient::http1();
    let en = [("accept-language", "en")];
    let de = [("accept-language", "de")];
    assert_eq!(cache_status(&get(&client, &gw, "/v", &en).await), "Miss");
    assert_eq!(cache_status(&get(&client, &gw, "/v", &de).await), "Miss");
    assert_eq!(cache_status(&get(&client, &gw, "/v", &[]).await), "Miss");
    let r = get(&client, &gw, "/v", &en).await;
    assert_eq!(cache_status(&r), "Hit");
    assert!(r.text().contains("lang=en"), "{}", r.text());
    let r = get(&client, &gw, "/v", &de).await;
    assert_eq!(cache_status(&r), "Hit");
    assert!(r.text().contains("lang=de"), "{}", r.text());
    assert_eq!(upstream.hits(), 3);
    gw.stop().await;
}

/// key-auth in front of the cache: one consumer's answer is never served to another.
fn key_auth_config(cache: &str) -> String {
    format!(
        r#"
[[consumers]]
id = "alice"
credentials = {{ keys = ["alice-key"] }}

[[consumers]]
id = "bob"
credentials = {{ keys = ["bob-key"] }}

[upstreams.backend]
targets = ["{{upstream}}"]

[[routes]]
id = "private"
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
[[routes.plugins]]
plugin = "builtin:proxy-cache"
config = {{ {cache} }}
"#
    )
}

#[tokio::test]
async fn consumers_never_share_entries() {
    let upstream = numbered_upstream().await;
    let gw = Gateway::start(&key_auth_config(""), Some(&upstream)).await;
    let client = HttpClient::http1();
    let alice = [("x-api-key", "alice-key")];
    let bob = [("x-api-key", "bob-key")];
    assert_eq!(cache_status(&get(&client, &gw, "/me", &alice).await), "Miss");
    let r = get(&client, &gw, "/me", &bob).await;
    assert_eq!(cache_status(&r), "Miss", "bob does not get alice's answer");
    assert!(r.text().contains("consumer=bob"), "{}", r.text());
    let r = get(&client, &gw, "/me", &alice).await;
    assert_eq!(cache_status(&r), "Hit");
    assert!(r.text().contains("consumer=alice"), "{}", r.text());
    let r = get(&client, &gw, "/me", &bob).await;
    assert!(cache_status(&r) == "Hit" && r.text().contains("consumer=bob"), "{}", r.text());
    // Without a key, key-auth answers before the cache is reached.
    assert_eq!(get(&client, &gw, "/me", &[]).await.status.as_u16(), 401);
    assert_eq!(upstream.hits(), 2);
    // An `Authorization` beside the consumer's key (an end user's token the upstream checks)
    // is part of the key: one user of alice's app never gets another's answer.
    let user = |token: &'static str| [("x-api-key", "alice-key"), ("authorization", token)];
    assert_eq!(cache_status(&get(&client, &gw, "/profile", &user("Bearer carol")).await), "Miss");
    let r = get(&client, &gw, "/profile", &user("Bearer dave")).await;
    assert_eq!(cache_status(&r), "Miss", "dave does not get carol's answer: {}", r.text());
    assert_eq!(cache_status(&get(&client, &gw, "/profile", &user("Bearer carol")).await), "Hit");
    assert_eq!(cache_status(&get(&client, &gw, "/profile", &alice).await), "Miss", "nor does the app itself");
    assert_eq!(upstream.hits(), 5);

    // vary_consumer = false: one entry for everyone (the operator's choice).
    let shared = Gateway::start(&key_auth_config("vary_consumer = false"), Some(&upstream)).await;
    assert_eq!(cache_status(&get(&client, &shared, "/all", &alice).await), "Miss");
    let r = get(&client, &shared, "/all", &bob).await;
    assert!(cache_status(&r) == "Hit" && r.text().contains("consumer=alice"), "{}", r.text());
    gw.stop().await;
    shared.stop().await;
}

/// An auth service for `forward-auth`: a request with the cookie `sess=<name>` is allowed as
/// `x-user-id: <name>`, anything else refused.
async fn session_service() -> Upstream {
    Upstream::with_handler(|req: Request<Incoming>| async move {
        let cookie = req.headers().get("cookie").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
        let mut r = Response::new(Full::new(Bytes::new()));
        match cookie.strip_prefix("sess=") {
            Some(user) => {
                r.headers_mut().insert("x-user-id", user.parse().expect("value"));
            }
            None => *r.status_mut() = http::StatusCode::UNAUTHORIZED,
        }
        r
    })
    .await
}

/// Authentication plugins that let a request through on a credential naming no consumer (`jwt`
/// with a route-level key, `forward-auth` accepting a session cookie) record the credential:
/// with `vary_consumer` each caller has entries of its own, where they all shared one entry and
/// the second caller got the first's answer.
#[tokio::test]
async fn callers_authenticated_without_a_consumer_never_share_entries() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef-idp";
    let upstream = numbered_upstream().await;
    let sessions = session_service().await;
    let config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.sessions]
source = "builtin:forward-auth"
capabilities = ["http-client"]
http_client = {{ allow = ["http://{sessions}"] }}

[[routes]]
id = "idp"
path_prefix = "/idp"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:jwt"
config = {{ keys = [{{ kid = "idp", alg = "HS256", secret = "{SECRET}" }}], claims_to_headers = {{ sub = "x-user-id" }} }}
[[routes.plugins]]
plugin = "builtin:proxy-cache"

[[routes]]
id = "session"
path_prefix = "/session"
upstream = "backend"
[[routes.plugins]]
plugin = "sessions"
config = {{ url = "http://{sessions}/verify", response_headers = ["x-user-id"] }}
[[routes.plugins]]
plugin = "builtin:proxy-cache"
"#,
        sessions = sessions.addr
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let token = |sub: &str| {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 600;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("idp".into());
        let claims = serde_json::json!({ "sub": sub, "exp": exp });
        format!("Bearer {}", jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())).expect("token"))
    };
    let (alice, bob) = (token("alice"), token("bob"));
    for (path, alice, bob) in [
        ("/idp/me", ("authorization", alice.as_str()), ("authorization", bob.as_str())),
        ("/session/me", ("cookie", "sess=alice"), ("cookie", "sess=bob")),
    ] {
        let r = get(&client, &gw, path, &[alice]).await;
        assert!(cache_status(&r) == "Miss" && r.text().contains("user=alice"), "{path}: {} {}", cache_status(&r), r.text());
        let r = get(&client, &gw, path, &[bob]).await;
        assert_eq!(cache_status(&r), "Miss", "{path}: bob does not get alice's answer: {}", r.text());
        assert!(r.text().contains("user=bob"), "{path}: {}", r.text());
        for (who, header) in [("alice", alice), ("bob", bob)] {
            let r = get(&client, &gw, path, &[header]).await;
            assert!(cache_status(&r) == "Hit" && r.text().contains(&format!("user={who}")), "{path}: {who} gets their own entry: {}", r.text());
        }
    }
    assert_eq!(upstream.hits(), 4, "two callers, two routes, each stored once");
    gw.stop().await;
}

#[tokio::test]
async fn requests_with_authorization_bypass_unless_the_key_tells_credentials_apart() {
    let (upstream, gw) = start("").await;
    let client = HttpClient::http1();
    let auth = [("authorization", "Bearer one")];
    assert_eq!(cache_status(&get(&client, &gw, "/auth", &auth).await), "Bypass");
    assert_eq!(cache_status(&get(&client, &gw, "/auth", &auth).await), "Bypass");
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;

    let (upstream, gw) = start(r#"vary_headers = ["authorization"]"#).await;
    assert_eq!(cache_status(&get(&client, &gw, "/auth", &auth).await), "Miss");
    assert_eq!(cache_status(&get(&client, &gw, "/auth", &[("authorization", "Bearer two")]).await), "Miss");
    assert_eq!(cache_status(&get(&client, &gw, "/auth", &auth).await), "Hit");
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

/// Two caches in one chain (a global one and a route's, say): the second stands aside for the
/// first's miss, in its response phase too. It used to answer the client's conditions there
/// (a 304) before the first could store the answer, so a conditional miss never filled the cache.
#[tokio::test]
async fn a_second_cache_in_the_chain_stands_aside_both_ways() {
    let upstream = numbered_upstream().await;
    let toml = config("").replace("config = {  }\n", "config = {  }\n[[routes.plugins]]\nplugin = \"builtin:proxy-cache\"\n");
    assert_eq!(toml.matches("builtin:proxy-cache").count(), 2, "{toml}");
    let gw = Gateway::start(&toml, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = get(&client, &gw, "/etag/v1", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((r.status.as_u16(), cache_status(&r)), (304, "Miss".to_owned()), "{}", r.text());
    let r = get(&client, &gw, "/etag/v1", &[]).await;
    assert_eq!((r.status.as_u16(), cache_status(&r)), (200, "Hit".to_owned()), "stored by the first cache: {}", r.text());
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_head_is_answered_from_the_gets_entry_and_is_never_stored_itself() {
    let (upstream, gw) = start("").await;
    let client = HttpClient::http1();
    let got = get(&client, &gw, "/h", &[]).await;
    assert_eq!(cache_status(&got), "Miss");
    let head = client.request("HEAD", &gw.url("/h"), &[], b"").await;
    assert_eq!((head.status.as_u16(), cache_status(&head).as_str()), (200, "Hit"));
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length").as_deref(), Some(got.body.len().to_string().as_str()), "the GET's length");
    assert_eq!(upstream.hits(), 1);
    // A HEAD miss goes upstream (as a HEAD) and stores nothing a GET could be served.
    let head = client.request("HEAD", &gw.url("/h2"), &[], b"").await;
    assert_eq!(cache_status(&head), "Miss");
    let got = get(&client, &gw, "/h2", &[]).await;
    assert_eq!(cache_status(&got), "Miss");
    assert!(got.text().starts_with("n=3 "), "{}", got.text());
    gw.stop().await;

    // methods = ["GET"]: a HEAD bypasses.
    let (_upstream, gw) = start(r#"methods = ["GET"]"#).await;
    assert_eq!(cache_status(&get(&client, &gw, "/h", &[]).await), "Miss");
    assert_eq!(cache_status(&client.request("HEAD", &gw.url("/h"), &[], b"").await), "Bypass");
    gw.stop().await;
}

#[tokio::test]
async fn only_the_configured_statuses_are_stored() {
    let (upstream, gw) = start("").await;
    let client = HttpClient::http1();
    let (a, b) = twice(&client, &gw, "/status/500").await;
    assert_eq!((a.status.as_u16(), cache_status(&a).as_str(), cache_status(&b).as_str()), (500, "Miss", "Miss"));
    let (a, b) = twice(&client, &gw, "/status/404").await;
    assert_eq!((b.status.as_u16(), cache_status(&a).as_str(), cache_status(&b).as_str()), (404, "Miss", "Hit"));
    let (_, b) = twice(&client, &gw, "/status/201").await;
    assert_eq!(cache_status(&b), "Miss");
    assert_eq!(upstream.hits(), 5);
    gw.stop().await;

    let (_upstream, gw) = start("statuses = [500]").await;
    let (_, b) = twice(&client, &gw, "/status/500").await;
    assert_eq!((b.status.as_u16(), cache_status(&b).as_str()), (500, "Hit"));
    let (_, b) = twice(&client, &gw, "/ok").await;
    assert_eq!(cache_status(&b), "Miss", "200 is not listed");
    gw.stop().await;
}

#[tokio::test]
async fn bodies_over_max_body_bytes_are_not_stored() {
    let (upstream, gw) = start("max_body_bytes = 1000").await;
    let client = HttpClient::http1();
    let (a, b) = twice(&client, &gw, "/big/1001").await;
    assert_eq!((a.body.len(), cache_status(&a).as_str(), cache_status(&b).as_str()), (1001, "Miss", "Miss"));
    let (a, b) = twice(&client, &gw, "/big/1000").await;
    assert_eq!((b.body.len(), cache_status(&a).as_str(), cache_status(&b).as_str()), (1000, "Miss", "Hit"));
    assert_eq!(upstream.hits(), 3);
    gw.stop().await;

    // The default (64 KiB) is what one state value holds: a body that fills it leaves no room
    // for the headers, so it is served but not stored; a slightly smaller one is.
    let (_upstream, gw) = start("").await;
    let (_, b) = twice(&client, &gw, "/big/65536").await;
    assert_eq!((b.body.len(), cache_status(&b).as_str()), (65536, "Miss"));
    let (_, b) = twice(&client, &gw, "/big/60000").await;
    assert_eq!((b.body.len(), cache_status(&b).as_str()), (60000, "Hit"));
    gw.stop().await;
}

#[tokio::test]
async fn other_methods_are_never_cached() {
    let (upstream, gw) = start("").await;
    let client = HttpClient::http1();
    for method in ["POST", "PUT", "DELETE", "POST"] {
        let r = client.request(method, &gw.url("/p"), &[], b"{}").await;
        assert_eq!((r.status.as_u16(), cache_status(&r).as_str()), (200, "Bypass"), "{method}");
    }
    assert_eq!(upstream.hits(), 4);
    // A POST to a cached path is not answered from the GET's entry either.
    assert_eq!(cache_status(&get(&client, &gw, "/p", &[]).await), "Miss");
    assert_eq!(cache_status(&client.request("POST", &gw.url("/p"), &[], b"{}").await), "Bypass");
    assert_eq!(upstream.hits(), 6);
    gw.stop().await;
}

#[tokio::test]
async fn bad_configs_are_refused_at_load_naming_the_key() {
    let upstream = numbered_upstream().await;
    for (cache, expected) in [
        ("max_body_bytes = 100000", "`max_body_bytes` is 100000, more than the state backend stores in one value"),
        (r#"methods = ["GET", "POST"]"#, "`methods`: `POST` responses are not cached"),
        ("statuses = [206]", "`statuses`: 206 cannot be stored"),
        ("ttl_ms = 0", "`ttl_ms` must be at least 1"),
    ] {
        let err = Gateway::try_start(&config(cache), Some(&upstream)).await.err().expect("refused").to_string();
        assert!(err.contains(expected) && err.contains("builtin:proxy-cache"), "{cache}: {err}");
    }
}

/// `airlock inspect` shows what the built-in imports: `state`, and nothing else outside the sandbox.
#[test]
fn inspect_shows_the_state_capability() {
    let out = std::process::Command::new(airlock_tests::airlock_binary())
        .args(["inspect", "builtin:proxy-cache", "--json"])
        .env("RUST_LOG", "off")
        .output()
        .expect("run airlock");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["capabilities"], serde_json::json!(["state"]));
    assert_eq!((json["phases"]["on_request"].as_bool(), json["phases"]["on_response"].as_bool()), (Some(true), Some(true)));
}

fn redis_config(port: u16) -> String {
    format!(
        r#"
[state]
backend = "redis"
redis_url = "redis://127.0.0.1:{port}"
timeout_ms = 200
connect_timeout_ms = 200
{}"#,
        config("")
    )
}

#[tokio::test]
async fn two_gateways_sharing_redis_serve_each_others_entries_and_fail_open_without_it() {
    let mut redis = Redis::start(None);
    let upstream = numbered_upstream().await;
    let a = Gateway::start(&redis_config(redis.port), Some(&upstream)).await;
    let b = Gateway::start(&redis_config(redis.port), Some(&upstream)).await;
    let client = HttpClient::http1();
    // The `Host` is part of the key: clients of both reach them by one name (behind a load
    // balancer), not by each gateway's own port.
    let host = [("host", "api.example.com")];
    let first = get(&client, &a, "/shared?x=1", &host).await;
    assert_eq!(cache_status(&first), "Miss");
    let second = get(&client, &b, "/shared?x=1", &host).await;
    assert_eq!(cache_status(&second), "Hit", "the other gateway's entry");
    assert_eq!(second.text(), first.text());
    assert_eq!(upstream.hits(), 1);
    // The entry is in Redis, under a bounded key, with its TTL.
    let keys = redis.cmd(&["KEYS", "*"]);
    let key = keys.lines().find(|k| k.contains(":k2:")).unwrap_or_else(|| panic!("no cache key in {keys}"));
    assert!(key.len() < 200, "{key}");
    let ttl: i64 = redis.cmd(&["PTTL", key]).trim_start_matches(':').parse().expect("PTTL");
    assert!(ttl > 0 && ttl <= 30_000, "{ttl}");

    // A purge from one gateway's admin API empties the entries both serve.
    let purge = client.request("POST", &a.admin_url("/admin/state/clear?route=cached"), &[], b"").await;
    assert_eq!(purge.status.as_u16(), 200, "{}", purge.text());
    assert_eq!(purge.json()["keys"], 1);
    assert_eq!(redis.cmd(&["EXISTS", key]).trim_start_matches(':'), "0");
    assert_eq!(cache_status(&get(&client, &b, "/shared?x=1", &host).await), "Miss");
    assert_eq!(upstream.hits(), 2);

    // Redis goes away: requests go on uncached, answered by the upstream; a purge says it failed.
    redis.stop();
    let purge = client.request("POST", &a.admin_url("/admin/state/clear?route=cached"), &[], b"").await;
    assert_eq!((purge.status.as_u16(), purge.json()["error"].as_str()), (503, Some("state_unavailable")));
    assert!(!purge.text().contains("127.0.0.1"), "the backend's own error stays in the log: {}", purge.text());
    for gw in [&a, &b, &a] {
        let r = get(&client, gw, "/shared?x=1", &host).await;
        assert_eq!((r.status.as_u16(), cache_status(&r).as_str()), (200, "Bypass"));
    }
    assert_eq!(upstream.hits(), 5);
    a.stop().await;
    b.stop().await;
}

/// Byte `i` of a patterned body: a shifted or repeated chunk shows in the comparison.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// An upstream (HTTP/1.1) of patterned bodies that counts its calls:
/// - `/big/<bytes>`: with `Content-Length`;
/// - `/chunked/<bytes>`: chunked, in 300-byte frames;
/// - `/gated`: 1,200 bytes, then the last 10 only once `gate` is opened.
async fn body_upstream(gate: Arc<tokio::sync::Notify>) -> (std::net::SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    type Frames = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Send>>;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (gate, counter) = (gate.clone(), counter.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let gate = gate.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let size = |prefix: &str| path.strip_prefix(prefix).and_then(|s| s.parse::<usize>().ok());
                        let body = if let Some(n) = size("/big/") {
                            Full::new(Bytes::from(pattern(n))).map_err(|never| match never {}).boxed_unsync()
                        } else if let Some(n) = size("/chunked/") {
                            let frames: Vec<_> = pattern(n).chunks(300).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
                            let frames: Frames = Box::pin(futures_util::stream::iter(frames));
                            StreamBody::new(frames).boxed_unsync()
                        } else {
                            let all = pattern(1210);
                            let (head, tail) = (Bytes::copy_from_slice(&all[..1200]), Bytes::copy_from_slice(&all[1200..]));
                            let frames: Frames = Box::pin(futures_util::stream::unfold(0, move |step| {
                                let (gate, head, tail) = (gate.clone(), head.clone(), tail.clone());
                                async move {
                                    match step {
                                        0 => Some((Ok(Frame::data(head)), 1)),
                                        1 => {
                                            gate.notified().await;
                                            Some((Ok(Frame::data(tail)), 2))
                                        }
                                        _ => None,
                                    }
                                }
                            }));
                            StreamBody::new(frames).boxed_unsync()
                        };
                        let mut r = Response::new(body);
                        r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/octet-stream"));
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, hits, server)
}

#[tokio::test]
async fn answers_the_cache_will_not_store_stream_through_whatever_their_size() {
    // The route takes bodies up to 4,000 bytes, the cache stores up to 1,000: an answer longer
    // than either streams to the client whole (a body-reading plugin's route answered 502
    // past 4,000 before `limit-response-body`), and only a short miss is stored.
    let gate = Arc::new(tokio::sync::Notify::new());
    let (addr, hits, server) = body_upstream(gate.clone()).await;
    let config = format!(
        r#"
[upstreams.files]
targets = ["{addr}"]

[[routes]]
id = "cached"
path_prefix = "/"
upstream = "files"
max_body_bytes = 4000
[[routes.plugins]]
plugin = "builtin:proxy-cache"
config = {{ max_body_bytes = 1000 }}
"#
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    for (path, len) in [("/big/50000", 50_000), ("/chunked/50000", 50_000), ("/chunked/1001", 1001), ("/big/1001", 1001)] {
        let (a, b) = twice(&client, &gw, path).await;
        for r in [&a, &b] {
            assert_eq!((r.status.as_u16(), cache_status(r).as_str()), (200, "Miss"), "{path}");
            assert!(r.body == pattern(len), "{path}: {} bytes, not the upstream's", r.body.len());
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 8, "none of those was stored");
    // Short ones are read and stored, chunked (three frames) or not.
    for (path, len) in [("/chunked/900", 900), ("/big/1000", 1000)] {
        let (a, b) = twice(&client, &gw, path).await;
        assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Hit"), "{path}");
        assert!(a.body == pattern(len) && b.body == pattern(len), "{path}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 10);
    // A HEAD that misses goes through unbuffered: the upstream's length is kept.
    let r = client.request("HEAD", &gw.url("/big/500"), &[], b"").await;
    assert_eq!((cache_status(&r).as_str(), r.header("content-length").as_deref()), ("Miss", Some("500")));
    // A request the cache bypasses is not buffered at all.
    let r = client.request("POST", &gw.url("/big/50000"), &[], b"").await;
    assert_eq!((r.status.as_u16(), cache_status(&r).as_str()), (200, "Bypass"));
    assert!(r.body == pattern(50_000));

    // Past the cache's limit the answer streams as it comes: the first 1,200 bytes reach the
    // client while the upstream still holds back the rest.
    let raw: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let response = raw.request(Request::get(gw.url("/gated")).body(Full::default()).unwrap()).await.unwrap();
    assert_eq!((response.status().as_u16(), response.headers()["x-cache-status"].to_str().unwrap()), (200, "Miss"));
    let mut body = response.into_body();
    let mut received = Vec::new();
    while received.len() < 1200 {
        use http_body_util::BodyExt;
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("the first bytes, streamed").unwrap().unwrap();
        received.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..]));
    }
    gate.notify_one();
    use http_body_util::BodyExt;
    received.extend_from_slice(&body.collect().await.unwrap().to_bytes());
    assert!(received == pattern(1210), "{} bytes", received.len());
    gw.stop().await;
    server.abort();
}

#[tokio::test]
async fn a_plugin_reading_every_body_still_has_it_buffered_whole() {
    // A plugin reading every body (`body-upper` appends `!` to each): beside the cache, an
    // answer past the route's limit is still refused rather than passed on unread.
    let gate = Arc::new(tokio::sync::Notify::new());
    let (addr, _hits, server) = body_upstream(gate).await;
    let config = format!(
        r#"
[upstreams.files]
targets = ["{addr}"]

[[routes]]
path_prefix = "/"
upstream = "files"
max_body_bytes = 4000
[[routes.plugins]]
plugin = "{{plugin:body-upper}}"
[[routes.plugins]]
plugin = "builtin:proxy-cache"
"#
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    let r = get(&client, &gw, "/chunked/50000", &[]).await;
    assert_eq!(r.status.as_u16(), 502, "{}", r.text());
    let r = get(&client, &gw, "/chunked/3000", &[]).await;
    assert_eq!((r.status.as_u16(), cache_status(&r).as_str()), (200, "Miss"), "{}", r.text());
    assert!(r.body == [pattern(3000), b"!".to_vec()].concat());
    gw.stop().await;
    server.abort();
}

/// `GET /_search` with `body`.
async fn search(client: &HttpClient, gw: &Gateway, body: &str) -> Reply {
    client.request("GET", &gw.url("/_search"), &[], body.as_bytes()).await
}

/// A search answered by its body (Elasticsearch's `GET /_search`): the echo upstream answers
/// with the body it got.
#[tokio::test]
async fn a_get_or_head_with_a_body_bypasses_the_cache() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(""), Some(&upstream)).await;
    let client = HttpClient::http1();

    // Neither looked up nor stored: the same search twice reaches the upstream twice.
    for _ in 0..2 {
        let r = search(&client, &gw, r#"{"q":"secret"}"#).await;
        assert_eq!((r.status.as_u16(), cache_status(&r).as_str()), (200, "Bypass"));
        assert_eq!(r.json()["body"], r#"{"q":"secret"}"#);
    }
    assert_eq!(upstream.hits(), 2);
    // So a GET without a body finds no entry of it, and stores its own.
    let r = get(&client, &gw, "/_search", &[]).await;
    assert_eq!((cache_status(&r).as_str(), r.json()["body"].as_str()), ("Miss", Some("")));
    let r = get(&client, &gw, "/_search", &[]).await;
    assert_eq!((cache_status(&r).as_str(), r.json()["body"].as_str()), ("Hit", Some("")));
    // And a search is never answered from that entry, nor stores over it.
    let r = search(&client, &gw, r#"{"q":"other"}"#).await;
    assert_eq!((cache_status(&r).as_str(), r.json()["body"].as_str()), ("Bypass", Some(r#"{"q":"other"}"#)));
    let r = client.request("HEAD", &gw.url("/_search"), &[], b"{}").await;
    assert_eq!(cache_status(&r), "Bypass", "a HEAD with a body");
    assert_eq!(upstream.hits(), 5);
    let r = get(&client, &gw, "/_search", &[]).await;
    assert_eq!((cache_status(&r).as_str(), r.json()["body"].as_str()), ("Hit", Some("")));
    // `Content-Length: 0` is no body.
    let r = get(&client, &gw, "/_search", &[("content-length", "0")]).await;
    assert_eq!(cache_status(&r), "Hit");
    assert_eq!(upstream.hits(), 5);
    gw.stop().await;
}

/// A chunked GET body reaches plugins with neither `Transfer-Encoding` (hop-by-hop, taken off
/// by the gateway) nor `Content-Length`, and an HTTP/2 one sent without a length likewise: the
/// cache tells them by the body itself.
#[tokio::test]
async fn a_chunked_or_unsized_get_body_bypasses_the_cache() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(""), Some(&upstream)).await;
    let client = HttpClient::http1();
    let chunked = |path: &'static str| {
        let addr = gw.addr();
        async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!(
                "GET {path} HTTP/1.1\r\nhost: search.example\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n7\r\n{{\"q\":1}}\r\n0\r\n\r\n"
            );
            tcp.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer)).await;
            answer
        }
    };
    let plain = [("host", "search.example")];

    // An entry for the path, then a chunked search: not answered from it.
    assert_eq!(cache_status(&get(&client, &gw, "/_search", &plain).await), "Miss");
    assert_eq!(cache_status(&get(&client, &gw, "/_search", &plain).await), "Hit");
    let answer = chunked("/_search").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("\r\nx-cache-status: bypass\r\n"), "{answer}");
    assert!(answer.contains(r#""body":"{\"q\":1}""#), "the upstream answered the search: {answer}");
    assert_eq!(upstream.hits(), 2);
    // Nor stored: a chunked search first, then a plain GET of its path misses.
    let answer = chunked("/_search/fresh").await;
    assert!(answer.to_ascii_lowercase().contains("\r\nx-cache-status: bypass\r\n"), "{answer}");
    let r = get(&client, &gw, "/_search/fresh", &plain).await;
    assert_eq!((cache_status(&r).as_str(), r.json()["body"].as_str()), ("Miss", Some("")));

    // HTTP/2, DATA frames without `content-length` (a stream's length is not known ahead).
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let frames = vec![Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"{\"q\":2}")))];
    let request = http::Request::get("http://search.example/_search").body(StreamBody::new(futures_util::stream::iter(frames))).unwrap();
    let response = sender.send_request(request).await.expect("answered");
    assert_eq!(response.headers().get("x-cache-status").map(|v| v.as_bytes()), Some(&b"Bypass"[..]));
    let echo: serde_json::Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["body"], r#"{"q":2}"#);
    let r = get(&client, &gw, "/_search", &plain).await;
    assert_eq!((cache_status(&r).as_str(), r.json()["body"].as_str()), ("Hit", Some("")), "the entry is the plain GET's still");
    gw.stop().await;
}

#[tokio::test]
async fn expires_sets_the_lifetime_when_cache_control_gives_none() {
    // RFC 9111 4.2.1 and 5.3: a response already expired (a past date, `0`, no date at all) was
    // stored for the default ttl_ms and served as fresh.
    let (upstream, gw) = start("ttl_ms = 60000").await;
    let client = HttpClient::http1();
    for path in ["/expires/raw/0", "/expires/raw/Thu,_01_Jan_1970_00:00:00_GMT", "/expires/raw/soon", "/expires/in/0"] {
        let (a, b) = twice(&client, &gw, path).await;
        assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Miss"), "{path}");
    }
    assert_eq!(upstream.hits(), 8);
    // Ahead: stored, for as long as it says.
    let (_, b) = twice(&client, &gw, "/expires/in/2").await;
    assert_eq!(cache_status(&b), "Hit");
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert_eq!(cache_status(&get(&client, &gw, "/expires/in/2", &[]).await), "Miss", "expired with the date, not after ttl_ms");
    gw.stop().await;
}

#[tokio::test]
async fn a_misbehaving_upstream_on_a_cached_route_is_answered_and_nothing_is_stored() {
    // The narrowed read (`limit-response-body`) meets what the upstream gets wrong: a gzip body
    // that does not decode goes on as sent (the gateway transforms nothing, so it does not
    // refuse it) and is not stored; a body cut off while read is a 502, and the gateway serves on.
    let (corrupt, _corrupt_task) =
        // It closes each connection after its answer, and says so: without `connection: close`
        // the second request could go out on the first's closing connection (a 502 by race).
        airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-encoding: gzip\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot gzip!").await;
    let (cut, _cut_task) = airlock_tests::raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 500\r\n\r\nonly this").await;
    let upstream = numbered_upstream().await;
    let route = |name: &str, addr: std::net::SocketAddr| {
        format!("[upstreams.{name}]\ntargets = [\"{addr}\"]\n\n[[routes]]\npath_prefix = \"/{name}\"\nupstream = \"{name}\"\n[[routes.plugins]]\nplugin = \"builtin:proxy-cache\"\n\n")
    };
    let config = format!("{}{}{}", route("corrupt", corrupt), route("cut", cut), config(""));
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let (a, b) = twice(&client, &gw, "/corrupt/x").await;
    for r in [&a, &b] {
        assert_eq!((r.status.as_u16(), cache_status(r).as_str()), (200, "Miss"));
        assert_eq!((r.header("content-encoding").as_deref(), &r.body[..]), (Some("gzip"), &b"not gzip!"[..]), "as the upstream sent it");
    }
    let r = get(&client, &gw, "/cut/x", &[]).await;
    assert_eq!(r.status.as_u16(), 502, "{}", r.text());
    // Still serving, and still caching.
    let (a, b) = twice(&client, &gw, "/other").await;
    assert_eq!((a.status.as_u16(), cache_status(&a).as_str(), cache_status(&b).as_str()), (200, "Miss", "Hit"));
    gw.stop().await;
}

/// An encoded answer marked `Cache-Control: no-transform` (RFC 9110 7.7: a proxy must not change
/// its content) goes to the client as the upstream sent it, its coding, strong `ETag` and digest
/// kept, and is not stored (the cache would store it decoded). Without `no-transform` it is
/// stored, decoded.
#[tokio::test]
async fn an_encoded_answer_marked_no_transform_goes_on_as_sent() {
    use std::io::Write;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&b"cached text ".repeat(100)).unwrap();
    let gzipped = Bytes::from(gzip.finish().unwrap());
    let body = gzipped.clone();
    let upstream = Upstream::with_handler(move |req: Request<Incoming>| {
        let body = body.clone();
        async move {
            let mut r = Response::new(Full::new(body));
            let h = r.headers_mut();
            h.insert("content-type", "text/plain".parse().unwrap());
            h.insert("content-encoding", "gzip".parse().unwrap());
            h.insert("etag", "\"v1\"".parse().unwrap());
            h.insert("content-md5", "AAAA".parse().unwrap());
            let cache_control = if req.uri().path() == "/fixed" { "max-age=60, no-transform" } else { "max-age=60" };
            h.insert("cache-control", cache_control.parse().unwrap());
            r
        }
    })
    .await;
    let gw = Gateway::start(&config(""), Some(&upstream)).await;
    let client = HttpClient::http1();
    let (a, b) = twice(&client, &gw, "/fixed").await;
    for r in [&a, &b] {
        assert_eq!((r.status.as_u16(), cache_status(r).as_str()), (200, "Miss"), "not stored");
        assert_eq!((r.header("content-encoding").as_deref(), r.header("etag").as_deref()), (Some("gzip"), Some("\"v1\"")));
        assert_eq!((r.header("content-md5").as_deref(), r.body == gzipped), (Some("AAAA"), true), "the upstream's bytes");
    }
    let (a, b) = twice(&client, &gw, "/plain").await;
    assert_eq!((cache_status(&a).as_str(), cache_status(&b).as_str()), ("Miss", "Hit"));
    assert_eq!((b.header("content-encoding"), b.body.len()), (None, 1200), "stored decoded");
    gw.stop().await;
}

/// A 304, as the gateway sent it: no body, the validators, nothing describing a body.
fn assert_not_modified(r: &Reply, cache: &str) {
    assert_eq!((r.status.as_u16(), cache_status(r).as_str()), (304, cache), "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag").as_deref(), Some("\"v1\""));
    assert_eq!(r.header("last-modified").as_deref(), Some(ETAG_LAST_MODIFIED));
    assert_eq!(r.header("cache-control").as_deref(), Some("max-age=60"));
    assert_eq!(r.header("content-type"), None);
}

#[tokio::test]
async fn a_client_that_holds_the_answer_gets_a_304_from_a_hit_or_a_miss() {
    let (upstream, gw) = start("").await;
    let client = HttpClient::http1();
    // A browser revalidating against an empty cache: the upstream is asked for the whole
    // answer (a 304 could not be stored), the client still gets its 304.
    let first = get(&client, &gw, "/etag/v1", &[("if-none-match", "\"v1\"")]).await;
    assert_not_modified(&first, "Miss");
    let full = get(&client, &gw, "/etag/v1", &[]).await;
    assert_eq!((full.status.as_u16(), cache_status(&full).as_str()), (200, "Hit"));
    assert_eq!(full.text(), "n=1 inm= ims= if-match=", "stored from the one upstream call, which saw no condition");
    assert_eq!(full.header("content-type").as_deref(), Some("text/plain"));
    // From the entry: weak comparison, lists, `*`, If-Modified-Since; HEAD alike.
    for inm in ["W/\"v1\"", "\"v0\", \"v1\"", "*"] {
        assert_not_modified(&get(&client, &gw, "/etag/v1", &[("if-none-match", inm)]).await, "Hit");
    }
    assert_not_modified(&get(&client, &gw, "/etag/v1", &[("if-modified-since", ETAG_LAST_MODIFIED)]).await, "Hit");
    assert_not_modified(&get(&client, &gw, "/etag/v1", &[("if-modified-since", "Wed, 02 Dec 2026 08:00:00 GMT")]).await, "Hit");
    let head = client.request("HEAD", &gw.url("/etag/v1"), &[("if-none-match", "\"v1\"")], b"").await;
    assert_not_modified(&head, "Hit");
    // The client holds something else: the stored answer, whole.
    for (name, value) in [("if-none-match", "\"v0\""), ("if-modified-since", "Mon, 30 Nov 2026 10:00:00 GMT"), ("if-none-match", "v1")] {
        let r = get(&client, &gw, "/etag/v1", &[(name, value)]).await;
        assert_eq!((r.status.as_u16(), cache_status(&r).as_str(), r.text().as_str()), (200, "Hit", "n=1 inm= ims= if-match="), "{name}: {value}");
    }
    // If-None-Match decides when both are sent (RFC 9110 13.2.2).
    let both = get(&client, &gw, "/etag/v1", &[("if-none-match", "\"v0\""), ("if-modified-since", ETAG_LAST_MODIFIED)]).await;
    assert_eq!((both.status.as_u16(), cache_status(&both).as_str()), (200, "Hit"));
    assert_eq!(upstream.hits(), 1);
    // If-Match guards a change: the upstream evaluates it.
    let guarded = get(&client, &gw, "/etag/v1", &[("if-match", "\"v1\"")]).await;
    assert_eq!((guarded.status.as_u16(), cache_status(&guarded).as_str()), (200, "Bypass"));
    assert_eq!(guarded.text(), "n=2 inm= ims= if-match=\"v1\"");
    gw.stop().await;
}

#[tokio::test]
async fn an_answer_that_is_not_stored_is_still_a_304_for_a_client_that_holds_it() {
    let (upstream, gw) = start("").await;
    let client = HttpClient::http1();
    let r = get(&client, &gw, "/etag/v1?nostore", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((r.status.as_u16(), cache_status(&r).as_str()), (304, "Miss"));
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), None);
    let r = get(&client, &gw, "/etag/v1?nostore", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!((r.status.as_u16(), cache_status(&r).as_str(), r.text().as_str()), (200, "Miss", "n=2 inm= ims= if-match="));
    assert_eq!(upstream.hits(), 2, "nothing was stored");
    // Larger than `max_body_bytes`: not stored, streamed, and still a 304 for a client holding it.
    let r = get(&client, &gw, "/etag/v1?big", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((r.status.as_u16(), cache_status(&r).as_str()), (304, "Miss"));
    assert!(r.body.is_empty());
    let r = get(&client, &gw, "/etag/v1?big", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 100_000));
    assert_eq!(upstream.hits(), 4);
    // Bypassing requests keep their conditions: the upstream answers them.
    let r = get(&client, &gw, "/etag/v1", &[("if-none-match", "\"v1\""), ("cache-control", "no-cache")]).await;
    assert_eq!((r.status.as_u16(), cache_status(&r).as_str()), (304, "Bypass"));
    assert_eq!(upstream.hits(), 5);
    gw.stop().await;
}

#[tokio::test]
async fn the_admin_api_purges_a_routes_cache_and_only_it() {
    let upstream = numbered_upstream().await;
    let two_routes = config("").replace("path_prefix = \"/\"", "path_prefix = \"/a\"")
        + "\n[[routes]]\nid = \"other\"\npath_prefix = \"/b\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"builtin:proxy-cache\"\n";
    let gw = Gateway::start(&two_routes, Some(&upstream)).await;
    let client = HttpClient::http1();
    for path in ["/a/1", "/a/2", "/b/1"] {
        assert_eq!(cache_status(&get(&client, &gw, path, &[]).await), "Miss");
        assert_eq!(cache_status(&get(&client, &gw, path, &[]).await), "Hit");
    }
    let purge = client.request("POST", &gw.admin_url("/admin/state/clear?route=cached&plugin=builtin:proxy-cache"), &[], b"").await;
    assert_eq!(purge.status.as_u16(), 200, "{}", purge.text());
    assert_eq!(purge.json()["keys"], 2);
    let cleared = serde_json::json!([{ "plugin": "builtin:proxy-cache", "global": false, "keys": 2, "routes": ["cached"] }]);
    assert_eq!(purge.json()["cleared"], cleared);
    assert_eq!(cache_status(&get(&client, &gw, "/a/1", &[]).await), "Miss", "purged");
    assert_eq!(cache_status(&get(&client, &gw, "/b/1", &[]).await), "Hit", "another route's entries stay");

    // What it refuses, and how.
    let post = |path: &'static str| {
        let (client, url) = (client.clone(), gw.admin_url(path));
        async move { client.request("POST", &url, &[], b"").await }
    };
    let r = post("/admin/state/clear").await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (400, Some("bad_request")));
    let r = post("/admin/state/clear?route=nope").await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (404, Some("no_route")));
    let r = post("/admin/state/clear?route=cached&plugin=builtin:headers").await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (404, Some("no_state")));
    assert_eq!(r.json()["entries_with_state"], serde_json::json!(["builtin:proxy-cache"]));
    let r = client.get(&gw.admin_url("/admin/state/clear?route=cached")).await;
    assert_eq!((r.status.as_u16(), r.header("allow").as_deref()), (405, Some("POST")), "clearing is never a GET");
    // A parameter that is empty, given twice, misspelt or unknown is a 400 naming it, never
    // read as "every entry" or "the first one". None of these clears anything.
    assert_eq!(cache_status(&get(&client, &gw, "/a/1", &[]).await), "Hit");
    for (query, named) in [
        ("route=", "`route`"),
        ("route=cached&plugin=", "`plugin`"),
        ("route=cached&plugin", "`plugin`"),
        ("route=cached&route=other", "`route`"),
        ("route=other&plugin=builtin:proxy-cache&plugin=builtin:headers", "`plugin`"),
        ("rout=cached", "`rout`"),
        ("route=cached&plugn=builtin:headers", "`plugn`"),
        ("route=cached&global=yes", "`global`"),
        ("route=cached&global=", "`global`"),
        ("route=cached&global=true&global=false", "`global`"),
    ] {
        let r = client.request("POST", &gw.admin_url(&format!("/admin/state/clear?{query}")), &[], b"").await;
        assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (400, Some("bad_request")), "{query}: {}", r.text());
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(named), "{query}: {message}");
    }
    assert_eq!(cache_status(&get(&client, &gw, "/a/1", &[]).await), "Hit", "nothing was cleared");
    assert_eq!(cache_status(&get(&client, &gw, "/b/1", &[]).await), "Hit", "nothing was cleared");
    // `global` picks the global chain's entries or the route's own: this route has no global ones.
    let r = post("/admin/state/clear?route=cached&global=true").await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (404, Some("no_state")), "{}", r.text());
    let r = post("/admin/state/clear?route=cached&plugin=builtin%3Aproxy-cache&global=false").await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["cleared"][0]["global"], false);
    assert_eq!(cache_status(&get(&client, &gw, "/a/1", &[]).await), "Miss", "purged");
    gw.stop().await;
}

/// An event stream (server-sent events) on a cached route, or through a plugin reading every
/// body whole (`transform` with response body rules), reaches the client event by event: read
/// for the plugin, the first event waited for the stream's end, or the route's timeout (a 504).
#[tokio::test]
async fn an_event_stream_is_not_held_for_a_plugin_reading_bodies() {
    use http_body_util::BodyExt;
    for chain in [
        r#"plugin = "builtin:proxy-cache""#,
        r#"plugin = "builtin:transform"
config = { response = { body = { remove = ["secret"] } } }"#,
    ] {
        let (addr, events, server) = airlock_tests::event_stream_upstream("text/event-stream; charset=utf-8").await;
        let config = format!("[upstreams.sse]\ntargets = [\"{addr}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"sse\"\ntimeout_ms = 20000\n[[routes.plugins]]\n{chain}\n");
        let gw = Gateway::start(&config, None).await;
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        events.send(Bytes::from_static(b"data: first\n\n")).await.unwrap();
        let request = Request::get(gw.url("/events")).body(Full::default()).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), client.request(request)).await.expect("the head, at once").unwrap();
        assert_eq!(response.status(), 200, "{chain}");
        let mut body = response.into_body();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("the first event, before the stream ends").unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"data: first\n\n"), "{chain}");
        events.send(Bytes::from_static(b"data: second\n\n")).await.unwrap();
        drop(events);
        assert_eq!(body.collect().await.unwrap().to_bytes(), Bytes::from_static(b"data: second\n\n"), "{chain}");
        gw.stop().await;
        server.abort();
    }
}
