//! Authentication and access control, end to end through the gateway with a real upstream:
//! `builtin:key-auth`, `builtin:basic-auth`, `builtin:acl`, `builtin:ip-restrict`, `builtin:cors`.

use airlock_tests::{Gateway, HttpClient, Reply, Upstream};

/// The 401 body says what to fix, never why a secret did not match, and never echoes it.
fn assert_clean_401(r: &Reply, challenge: &str, secret: &str) {
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate").as_deref(), Some(challenge));
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_gateway_error(r, 401, "unauthorized");
    if !secret.is_empty() {
        assert!(!r.text().contains(secret), "the body echoes the secret: {}", r.text());
    }
}

/// A plugin's refusal in the gateway's own error shape (as its 502s and rate-limit's 429s):
/// `status`, `error`, `message` and the `request_id` the response header carries, nothing else.
fn assert_gateway_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!((body["status"].as_u64(), body["error"].as_str()), (Some(u64::from(status)), Some(code)), "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(body["request_id"].as_str(), r.header("x-request-id").as_deref(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 4, "nothing else in the body: {body}");
}

const KEY_AUTH: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[consumers]]
id = "alice"
groups = ["admin", "beta"]
credentials = { keys = ["alice-secret-key"] }

[[consumers]]
id = "bob"
# sha256("bob-secret-key")
credentials = { keys = ["sha256:f4a9f8b2e0f1ea7bd4c9bd9b1e1d1b05a6a1bcd0bd75b5dcf24b8f5a6ebf2d0c"] }

[[consumers]]
id = "guest"
groups = ["public"]

[[routes]]
id = "default"
path = "/default"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"

[[routes]]
id = "query"
path = "/query"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = { header_names = ["x-api-key", "x-other-key"], query_param = "apikey", realm = "shop" }

[[routes]]
id = "keep"
path = "/keep"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = { query_param = "apikey", hide_credentials = false, upstream_headers = false }

[[routes]]
id = "anon"
path = "/anon"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = { anonymous = "guest" }
"#;

fn sha256_hex(text: &str) -> String {
    airlock_tests::sha256_hex(text.as_bytes())
}

fn key_auth_config() -> String {
    KEY_AUTH.replace(
        "sha256:f4a9f8b2e0f1ea7bd4c9bd9b1e1d1b05a6a1bcd0bd75b5dcf24b8f5a6ebf2d0c",
        &format!("sha256:{}", sha256_hex("bob-secret-key")),
    )
}

#[tokio::test]
async fn key_auth_header_query_and_stripping() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&key_auth_config(), Some(&upstream)).await;
    let client = HttpClient::http1();

    // Default header; the key is stripped, the consumer named upstream.
    let r = client.request("GET", &gw.url("/default"), &[("x-api-key", "alice-secret-key")], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-api-key").is_empty(), "the key never reaches the upstream");
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["alice"]);
    assert_eq!(r.upstream_header("x-consumer-groups"), vec!["admin,beta"]);

    // A key stored as a sha256 digest; a consumer without groups gets no groups header.
    let r = client.request("GET", &gw.url("/default"), &[("x-api-key", "bob-secret-key")], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["bob"]);
    assert!(r.upstream_header("x-consumer-groups").is_empty());

    // Clients cannot forge the consumer headers.
    let r = client
        .request(
            "GET",
            &gw.url("/default"),
            &[
                ("x-api-key", "bob-secret-key"),
                ("x-consumer-id", "alice"),
                ("x-consumer-groups", "admin"),
                ("x-anonymous-consumer", "true"),
            ],
            b"",
        )
        .await;
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["bob"]);
    assert!(r.upstream_header("x-consumer-groups").is_empty());
    assert!(r.upstream_header("x-anonymous-consumer").is_empty());

    // The query parameter is only read where configured; stripped, other parameters kept.
    let r = client.get(&gw.url("/default?apikey=alice-secret-key")).await;
    assert_clean_401(&r, "Key realm=\"airlock\"", "alice-secret-key");
    let r = client.get(&gw.url("/query?a=1&apikey=alice-secret-key&b=2")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["query"], "a=1&b=2");
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["alice"]);
    let r = client.get(&gw.url("/query?apikey=bob-secret-key")).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["query"].is_null(), "an emptied query is removed: {}", r.json()["query"]);
    // A second configured header name.
    let r = client.request("GET", &gw.url("/query"), &[("x-other-key", "bob-secret-key")], b"").await;
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["bob"]);
    assert!(r.upstream_header("x-other-key").is_empty());

    // hide_credentials = false, upstream_headers = false: the key goes on, no consumer headers.
    let r = client.get(&gw.url("/keep?apikey=alice-secret-key")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["query"], "apikey=alice-secret-key");
    assert!(r.upstream_header("x-consumer-id").is_empty());
    let forged = [("x-api-key", "alice-secret-key"), ("x-consumer-id", "bob"), ("x-consumer-groups", "admin"), ("x-anonymous-consumer", "true")];
    let r = client.request("GET", &gw.url("/keep"), &forged, b"").await;
    assert_eq!(r.upstream_header("x-api-key"), vec!["alice-secret-key"]);
    for name in ["x-consumer-id", "x-consumer-groups", "x-anonymous-consumer"] {
        assert!(r.upstream_header(name).is_empty(), "a forged {name} is removed without upstream_headers too");
    }

    // Two different keys: only one could be checked, and without hide_credentials the other
    // would reach the upstream beside the consumer the first named. A 400, wherever they are.
    let two_lines = [("x-api-key", "alice-secret-key"), ("x-api-key", "revoked-key")];
    let header_and_query = [("x-api-key", "bob-secret-key")];
    for (path, headers) in [
        ("/keep", &two_lines[..]),
        ("/keep?apikey=alice-secret-key&apikey=revoked-key", &[][..]),
        ("/keep?apikey=alice-secret-key", &header_and_query[..]),
        ("/query", &[("x-api-key", "alice-secret-key"), ("x-other-key", "bob-secret-key")][..]),
    ] {
        let before = upstream.hits();
        let r = client.request("GET", &gw.url(path), headers, b"").await;
        assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (400, Some("bad_request")), "{path} {headers:?}: {}", r.text());
        assert_eq!(upstream.hits(), before, "{path}: nothing reached the upstream");
    }
    // The same key twice is one key.
    let r = client.request("GET", &gw.url("/keep?apikey=alice-secret-key"), &[("x-api-key", "alice-secret-key")], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    gw.stop().await;
}

/// `x_consumer_id` is `x-consumer-id` to a CGI-style upstream (PHP, Rack, WSGI all read both as
/// `HTTP_X_CONSUMER_ID`): a client's underscore spelling of a header an auth plugin vouches for
/// must not reach it. Dropped by default (as nginx does), a 400 with `reject`, kept with `allow`.
#[tokio::test]
async fn underscore_spellings_of_identity_headers_do_not_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let forged = [("x-api-key", "bob-secret-key"), ("x_consumer_id", "alice"), ("x-consumer_groups", "admin"), ("x_anonymous_consumer", "true")];
    let gw = Gateway::start(&key_auth_config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/default"), &forged, b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["bob"]);
    for name in ["x_consumer_id", "x-consumer_groups", "x_anonymous_consumer"] {
        assert!(r.upstream_header(name).is_empty(), "{name} was dropped");
    }
    gw.stop().await;

    let reject = format!("[limits]\nheaders_with_underscores = \"reject\"\n{}", key_auth_config());
    let gw = Gateway::start(&reject, Some(&upstream)).await;
    let r = client.request("GET", &gw.url("/default"), &forged, b"").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("underscore"), "{}", r.text());
    let r = client.request("GET", &gw.url("/default"), &forged[..1], b"").await;
    assert_eq!(r.status, 200, "a request without one is served");
    gw.stop().await;

    let allow = format!("[limits]\nheaders_with_underscores = \"allow\"\n{}", key_auth_config());
    let gw = Gateway::start(&allow, Some(&upstream)).await;
    let r = client.request("GET", &gw.url("/default"), &forged, b"").await;
    assert_eq!(r.upstream_header("x_consumer_id"), vec!["alice"], "the operator chose to keep them");
    gw.stop().await;
}

#[tokio::test]
async fn key_auth_rejects_without_leaking() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&key_auth_config(), Some(&upstream)).await;
    let client = HttpClient::http1();

    let missing = client.get(&gw.url("/default")).await;
    assert_clean_401(&missing, "Key realm=\"airlock\"", "");
    let wrong = client.request("GET", &gw.url("/default"), &[("x-api-key", "alice-secret-kez")], b"").await;
    assert_clean_401(&wrong, "Key realm=\"airlock\"", "alice-secret-kez");
    // A prefix, a digest given as the key, an empty key: all just "invalid" or "missing".
    for bad in ["alice", "alice-secret-key ", &sha256_hex("bob-secret-key"), "sha256:"] {
        let r = client.request("GET", &gw.url("/default"), &[("x-api-key", bad)], b"").await;
        if bad == "alice-secret-key " {
            assert_eq!(r.status, 200, "surrounding whitespace is not part of the key");
            continue;
        }
        assert_clean_401(&r, "Key realm=\"airlock\"", "");
        assert_eq!(r.json()["message"], wrong.json()["message"], "every wrong key gets the same answer");
    }
    let r = client.request("GET", &gw.url("/default"), &[("x-api-key", "")], b"").await;
    assert_eq!(r.json()["message"], missing.json()["message"], "an empty key is no key");
    // Configured realm; a wrong key in the query.
    let r = client.get(&gw.url("/query?apikey=nope")).await;
    assert_clean_401(&r, "Key realm=\"shop\"", "nope");
    assert_eq!(upstream.hits(), 1, "no rejected request reached the upstream");
    gw.stop().await;
}

#[tokio::test]
async fn key_auth_anonymous_fallback() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&key_auth_config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/anon")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["guest"]);
    assert_eq!(r.upstream_header("x-consumer-groups"), vec!["public"]);
    assert_eq!(r.upstream_header("x-anonymous-consumer"), vec!["true"]);
    let r = client.request("GET", &gw.url("/anon"), &[("x-api-key", "wrong")], b"").await;
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["guest"], "a wrong key falls back too");
    assert!(r.upstream_header("x-api-key").is_empty(), "and is hidden from the upstream like a right one");
    let r = client
        .request("GET", &gw.url("/anon"), &[("x-api-key", "alice-secret-key"), ("x-anonymous-consumer", "true")], b"")
        .await;
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["alice"]);
    assert!(r.upstream_header("x-anonymous-consumer").is_empty(), "a forged anonymous flag is removed");
    gw.stop().await;
}

#[tokio::test]
async fn key_auth_config_errors_are_reported() {
    let bad = "[upstreams.b]\ntargets = [\"127.0.0.1:9\"]\n\n[[consumers]]\nid = \"a\"\ncredentials = { keys = [\"sha256:12\"] }\n\n[[routes]]\nid = \"r\"\npath = \"/\"\nupstream = \"b\"\n[[routes.plugins]]\nplugin = \"builtin:key-auth\"\nconfig = { anonymous = \"nobody\" }\n";
    let err = Gateway::try_start(bad, None).await.err().expect("rejected").to_string();
    assert!(err.contains("consumers[0].credentials.keys[0]"), "{err}");
    assert!(!err.contains("\"sha256:12\""), "{err}");
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn basic_auth_config() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let bcrypt = bcrypt::hash("correct horse", 4).expect("bcrypt");
    let params = argon2::Params::new(256, 1, 1, None).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password("battery staple".as_bytes(), &SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").expect("salt"))
        .expect("argon2")
        .to_string();
    format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[[consumers]]
id = "alice"
groups = ["admin"]
credentials = {{ basic = {{ username = "alice", password = 'bcrypt:{bcrypt}' }} }}

[[consumers]]
id = "bob"
credentials = {{ basic = [{{ username = "bob", password = 'argon2:{argon}' }}, {{ username = "bob2", password = "sha256:{sha}" }}] }}

[[consumers]]
id = "guest"

[[routes]]
id = "basic"
path = "/basic"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:basic-auth"
config = {{ realm = "staff" }}

[[routes]]
id = "anon"
path = "/anon"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:basic-auth"
config = {{ anonymous = "guest", hide_credentials = false }}
"#,
        sha = sha256_hex("p\u{e4}ssw\u{f6}rd")
    )
}

#[tokio::test]
async fn basic_auth_with_bcrypt_argon2_and_sha256() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&basic_auth_config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let challenge = "Basic realm=\"staff\", charset=\"UTF-8\"";

    for (user, password, consumer) in
        [("alice", "correct horse", "alice"), ("bob", "battery staple", "bob"), ("bob2", "p\u{e4}ssw\u{f6}rd", "bob")]
    {
        for _ in 0..2 {
            let r = client.request("GET", &gw.url("/basic"), &[("authorization", &basic(user, password))], b"").await;
            assert_eq!(r.status, 200, "{user}: {}", r.text());
            assert_eq!(r.upstream_header("x-consumer-id"), vec![consumer]);
            assert!(r.upstream_header("authorization").is_empty(), "credentials stripped");
        }
    }
    let r = client.request("GET", &gw.url("/basic"), &[("authorization", &basic("alice", "correct horse"))], b"").await;
    assert_eq!(r.upstream_header("x-consumer-groups"), vec!["admin"]);
    // The scheme is case-insensitive.
    let lower = basic("alice", "correct horse").replace("Basic", "bAsIc");
    let r = client.request("GET", &gw.url("/basic"), &[("authorization", &lower)], b"").await;
    assert_eq!(r.status, 200);

    // Wrong password and unknown user get the same answer.
    let wrong =
        client.request("GET", &gw.url("/basic"), &[("authorization", &basic("alice", "correct horsE"))], b"").await;
    assert_clean_401(&wrong, challenge, "correct horsE");
    let unknown =
        client.request("GET", &gw.url("/basic"), &[("authorization", &basic("eve", "correct horse"))], b"").await;
    assert_clean_401(&unknown, challenge, "correct horse");
    assert_eq!(wrong.json()["message"], unknown.json()["message"]);
    let missing = client.get(&gw.url("/basic")).await;
    assert_clean_401(&missing, challenge, "");
    assert_eq!(upstream.hits(), 8, "only the 8 authenticated requests reached the upstream");
    gw.stop().await;
}

#[tokio::test]
async fn basic_auth_malformed_headers_are_clean_401s() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&basic_auth_config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let challenge = "Basic realm=\"staff\", charset=\"UTF-8\"";
    let long = format!("Basic {}", "A".repeat(6000));
    let not_utf8 = format!("Basic {}", base64(b"alice:\xff\xfe"));
    let no_colon = format!("Basic {}", base64(b"alicecorrect horse"));
    let empty_password = format!("Basic {}", base64(b"alice:"));
    let malformed = [
        "Basic",
        "Basic ",
        "Basic !!!!",
        "Basic YWxpY2U6Y29ycmVjdCBob3JzZQ===",
        "Basic YWxp Y2U6",
        "Bearer abc.def.ghi",
        "Basicc YWxpY2U6Y29ycmVjdCBob3JzZQ==",
        "YWxpY2U6Y29ycmVjdCBob3JzZQ==",
        &long,
        &not_utf8,
        &no_colon,
        &empty_password,
    ];
    for value in malformed {
        let r = client.request("GET", &gw.url("/basic"), &[("authorization", value)], b"").await;
        assert_clean_401(&r, challenge, "");
    }
    assert_eq!(upstream.hits(), 0);

    // Anonymous fallback, and hide_credentials = false keeps the header for the upstream: a
    // valid one's; refused credentials are removed all the same.
    for refused in ["Basic !!!!".to_owned(), basic("alice", "wrong")] {
        let r = client.request("GET", &gw.url("/anon"), &[("authorization", &refused)], b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream_header("x-consumer-id"), vec!["guest"]);
        assert_eq!(r.upstream_header("x-anonymous-consumer"), vec!["true"]);
        assert!(r.upstream_header("authorization").is_empty(), "{refused}: {:?}", r.upstream_header("authorization"));
    }
    // Two `Authorization` lines: one would go upstream unchecked.
    let two = [("authorization", basic("bob", "battery staple")), ("authorization", basic("alice", "wrong"))];
    for path in ["/basic", "/anon"] {
        let r = client.request("GET", &gw.url(path), &[(two[0].0, &two[0].1), (two[1].0, &two[1].1)], b"").await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.json()["message"], "more than one Authorization header");
    }
    let auth = basic("bob", "battery staple");
    let r = client.request("GET", &gw.url("/anon"), &[("authorization", &auth)], b"").await;
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["bob"]);
    assert_eq!(r.upstream_header("authorization"), vec![auth]);
    gw.stop().await;
}

const ACL: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[consumers]]
id = "alice"
groups = ["admin", "staff"]
credentials = { keys = ["alice-key"] }

[[consumers]]
id = "bob"
groups = ["staff"]
credentials = { keys = ["bob-key"] }

[[consumers]]
id = "carol"
credentials = { keys = ["carol-key"] }

[[routes]]
id = "admin"
path = "/admin"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
[[routes.plugins]]
plugin = "builtin:acl"
config = { allow = ["group:admin", "carol"] }

[[routes]]
id = "staff-but-bob"
path = "/staff"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
[[routes.plugins]]
plugin = "builtin:acl"
config = { allow = ["group:staff"], deny = ["bob"] }

[[routes]]
id = "deny-group"
path = "/deny-group"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
[[routes.plugins]]
plugin = "builtin:acl"
config = { deny = ["group:admin"] }

[[routes]]
id = "no-auth"
path = "/no-auth"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:acl"
config = { allow = ["alice"] }

[[routes]]
id = "no-auth-401"
path = "/no-auth-401"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:acl"
config = { allow = ["alice"], no_consumer_status = 401, www_authenticate = 'Key realm="airlock"' }
"#;

#[tokio::test]
async fn acl_after_key_auth_by_id_and_group() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ACL, Some(&upstream)).await;
    let client = HttpClient::http1();
    let call = |path: &'static str, key: &'static str| {
        let client = client.clone();
        let url = gw.url(path);
        async move { client.request("GET", &url, &[("x-api-key", key)], b"").await.status.as_u16() }
    };
    assert_eq!(call("/admin", "alice-key").await, 200, "allowed by group");
    assert_eq!(call("/admin", "carol-key").await, 200, "allowed by id");
    assert_eq!(call("/admin", "bob-key").await, 403);
    assert_eq!(call("/admin", "wrong").await, 401, "authentication runs first");
    assert_eq!(call("/staff", "alice-key").await, 200);
    assert_eq!(call("/staff", "bob-key").await, 403, "deny by id beats allow by group");
    assert_eq!(call("/staff", "carol-key").await, 403, "in no allowed group");
    assert_eq!(call("/deny-group", "alice-key").await, 403);
    assert_eq!(call("/deny-group", "bob-key").await, 200);
    assert_eq!(call("/deny-group", "carol-key").await, 200);

    let r = client.request("GET", &gw.url("/admin"), &[("x-api-key", "bob-key")], b"").await;
    assert_gateway_error(&r, 403, "forbidden");
    assert_eq!(r.json()["message"], "access denied");
    // Without an authentication plugin there is no consumer: 403, or 401 where configured.
    // A client cannot claim to be a consumer with headers.
    let r = client.request("GET", &gw.url("/no-auth"), &[("x-consumer-id", "alice")], b"").await;
    assert_eq!(r.status, 403);
    let r = client.get(&gw.url("/no-auth-401")).await;
    assert_gateway_error(&r, 401, "unauthorized");
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Key realm=\"airlock\""), "a 401 carries its challenge");
    gw.stop().await;
}

const IP: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
id = "local-only"
path = "/local"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:ip-restrict"
config = { allow = ["127.0.0.1/32"] }
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { set = { "x-decided-ip" = "${context.client.ip}" } } }

[[routes]]
id = "loopback-denied"
path = "/denied"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:ip-restrict"
config = { deny = ["127.0.0.0/8"], status = 404 }

[[routes]]
id = "ignores-xff"
path = "/untrusted"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:ip-restrict"
config = { allow = ["203.0.113.5/32"] }

[[routes]]
id = "behind-proxy"
path = "/proxied"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:ip-restrict"
config = { allow = ["203.0.113.5/32", "2001:db8::/32"], deny = ["2001:db8:bad::/48"], trusted_proxies = ["127.0.0.1", "10.0.0.0/8"] }
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { set = { "x-decided-ip" = "${context.client.ip}" } } }

[[routes]]
id = "v4-only"
path = "/v4-only"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:ip-restrict"
config = { deny = ["::/0"], trusted_proxies = ["127.0.0.0/8"] }

[[routes]]
id = "everyone-v4"
path = "/everyone-v4"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:ip-restrict"
config = { allow = ["0.0.0.0/0"], trusted_proxies = ["127.0.0.0/8"] }
"#;

#[tokio::test]
async fn ip_restrict_cidr_edges_and_trusted_proxies() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(IP, Some(&upstream)).await;
    let client = HttpClient::http1();
    let call = |path: &'static str, xff: Option<&'static str>| {
        let client = client.clone();
        let url = gw.url(path);
        async move {
            let headers: Vec<(&str, &str)> = xff.map(|x| ("x-forwarded-for", x)).into_iter().collect();
            client.request("GET", &url, &headers, b"").await.status.as_u16()
        }
    };
    assert_eq!(call("/local", None).await, 200, "/32 matches the peer");
    assert_eq!(call("/local", Some("198.51.100.1")).await, 200, "XFF is not read without trusted proxies");
    assert_eq!(call("/denied", None).await, 404, "configured status");
    // A 404 chosen to hide the route reads as the gateway's own answer for no route.
    let hidden = client.get(&gw.url("/denied")).await;
    assert_eq!(hidden.json()["error"], "no_route", "{}", hidden.text());
    assert_eq!(hidden.json()["message"], "no route matches GET /denied");
    let unrouted = client.get(&gw.url("/nowhere")).await;
    let names = |r: &Reply| {
        let mut names: Vec<String> = r.headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(names(&hidden), names(&unrouted), "the same headers as a real no_route (no `Via`)");
    assert_eq!(call("/untrusted", Some("203.0.113.5")).await, 403, "an untrusted peer cannot claim an address");
    assert_gateway_error(&client.get(&gw.url("/untrusted")).await, 403, "forbidden");

    // The peer (127.0.0.1) is trusted: the rightmost untrusted XFF entry is the client.
    assert_eq!(call("/proxied", Some("203.0.113.5")).await, 200);
    assert_eq!(call("/proxied", Some("203.0.113.6")).await, 403, "/32 is one address");
    assert_eq!(call("/proxied", Some("203.0.113.5, 10.1.2.3")).await, 200, "trusted hops are skipped");
    assert_eq!(call("/proxied", Some("203.0.113.5, 198.51.100.1")).await, 403, "a spoofed left entry is ignored");
    assert_eq!(call("/proxied", Some("198.51.100.1, 203.0.113.5")).await, 200);
    assert_eq!(call("/proxied", Some("2001:db8::1")).await, 200, "IPv6 allow");
    assert_eq!(call("/proxied", Some("[2001:db8:1::1]:443")).await, 200, "bracketed with a port");
    assert_eq!(call("/proxied", Some("2001:db8:bad::1")).await, 403, "IPv6 deny beats allow");
    assert_eq!(call("/proxied", Some("::ffff:203.0.113.5")).await, 200, "IPv4-mapped IPv6 is IPv4");
    assert_eq!(call("/proxied", Some("not-an-ip")).await, 403, "unknown address fails closed");
    assert_eq!(call("/proxied", None).await, 403, "the trusted proxy itself is not allowed");
    // Lines are one list (RFC 9110 5.3): a proxy in front that adds a line of its own puts the
    // client it saw in the last one, which must not be dropped for the client's own first line.
    let lines = |first: &'static str, second: &'static str| {
        let (client, url) = (client.clone(), gw.url("/proxied"));
        async move { client.request("GET", &url, &[("x-forwarded-for", first), ("x-forwarded-for", second)], b"").await.status.as_u16() }
    };
    assert_eq!(lines("203.0.113.5", "198.51.100.1").await, 403, "a spoofed first line is not the client");
    assert_eq!(lines("198.51.100.1", "203.0.113.5").await, 200, "the last line's address is the client");

    // The address decided on is in the context as `client.ip`, written as the gateway writes
    // addresses: the peer's as the gateway gave it, an IPv4-mapped one as IPv4, a bracketed one
    // with a port as the bare address.
    let decided = |path: &'static str, xff: Option<&'static str>| {
        let (client, url) = (client.clone(), gw.url(path));
        async move {
            let headers: Vec<(&str, &str)> = xff.map(|x| ("x-forwarded-for", x)).into_iter().collect();
            client.request("GET", &url, &headers, b"").await.upstream_header("x-decided-ip")
        }
    };
    assert_eq!(decided("/local", None).await, vec!["127.0.0.1"]);
    assert_eq!(decided("/proxied", Some("::ffff:203.0.113.5")).await, vec!["203.0.113.5"]);
    assert_eq!(decided("/proxied", Some("[2001:DB8:1:0::1]:443")).await, vec!["2001:db8:1::1"]);

    assert_eq!(call("/v4-only", Some("2001:db8::1")).await, 403, "::/0 denies every IPv6 address");
    assert_eq!(call("/v4-only", Some("203.0.113.9")).await, 200, "::/0 does not cover IPv4");
    assert_eq!(call("/everyone-v4", Some("255.255.255.255")).await, 200, "0.0.0.0/0 covers IPv4");
    assert_eq!(call("/everyone-v4", Some("::1")).await, 403, "0.0.0.0/0 does not cover IPv6");
    gw.stop().await;
}

const CORS: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[consumers]]
id = "alice"
credentials = { keys = ["alice-key"] }

[[routes]]
id = "app"
path = "/app"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:cors"
[routes.plugins.config]
origins = ["https://app.example.com", "https://*.example.org", 'regex:https://pr-[0-9]+\.preview\.example\.net']
methods = ["GET", "POST", "PATCH"]
headers = ["content-type", "x-api-key"]
expose_headers = ["x-request-id", "x-total"]
credentials = true
max_age = 600
[[routes.plugins]]
plugin = "builtin:key-auth"

[[routes]]
id = "public"
path = "/public"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:cors"
config = { origins = ["*"] }
"#;

/// The Fetch standard's CORS check: would a browser hand this response to the script?
fn cors_check(r: &Reply, origin: &str, credentials: bool) -> bool {
    let allow_origin = r.header_all("access-control-allow-origin");
    if allow_origin.len() != 1 {
        return false;
    }
    if credentials {
        allow_origin[0] == origin && r.header("access-control-allow-credentials").as_deref() == Some("true")
    } else {
        allow_origin[0] == "*" || allow_origin[0] == origin
    }
}

/// The Fetch standard's preflight checks for `method` and `headers`.
fn preflight_passes(r: &Reply, origin: &str, credentials: bool, method: &str, headers: &[&str]) -> bool {
    let list = |name: &str| -> Vec<String> {
        r.header_all(name).iter().flat_map(|v| v.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>()).collect()
    };
    let methods = list("access-control-allow-methods");
    let allowed_headers: Vec<String> =
        list("access-control-allow-headers").iter().map(|h| h.to_ascii_lowercase()).collect();
    let wildcard = |l: &[String]| !credentials && l.iter().any(|v| v == "*");
    r.status.is_success()
        && cors_check(r, origin, credentials)
        && (["GET", "HEAD", "POST"].contains(&method) || methods.iter().any(|m| m == method) || wildcard(&methods))
        && headers.iter().all(|h| {
            allowed_headers.contains(&h.to_ascii_lowercase())
                || (wildcard(&allowed_headers) && !h.eq_ignore_ascii_case("authorization"))
        })
}

fn vary_has_origin(r: &Reply) -> bool {
    r.header_all("vary").iter().any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("origin")))
}

#[tokio::test]
async fn cors_preflight_is_answered_at_the_gateway() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(CORS, Some(&upstream)).await;
    let client = HttpClient::http1();
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        let client = client.clone();
        let url = gw.url("/app");
        async move {
            let mut h = vec![("origin", origin), ("access-control-request-method", method)];
            if !headers.is_empty() {
                h.push(("access-control-request-headers", headers));
            }
            client.request("OPTIONS", &url, &h, b"").await
        }
    };

    for origin in ["https://app.example.com", "https://a.b.example.org", "https://pr-42.preview.example.net"] {
        let r = preflight(origin, "PATCH", "content-type,x-api-key").await;
        assert_eq!(r.status, 204, "{origin}: {}", r.text());
        assert!(
            preflight_passes(&r, origin, true, "PATCH", &["content-type", "x-api-key"]),
            "{origin}: {:?}",
            r.headers
        );
        assert_eq!(r.header("access-control-max-age").as_deref(), Some("600"));
        assert!(vary_has_origin(&r));
        assert!(r.body.is_empty());
    }
    // A preflight needs no API key: browsers never send credentials with it.
    let r = preflight("https://app.example.com", "GET", "").await;
    assert_eq!(r.status, 204);
    assert_eq!(upstream.hits(), 0, "preflights never reach the upstream");

    // Refused: unknown origins (including look-alikes), methods and headers; no CORS headers at all.
    for (origin, method, headers) in [
        ("https://evil.example.com", "GET", ""),
        ("https://app.example.com.evil.net", "GET", ""),
        ("https://example.org", "GET", ""),
        ("http://app.example.com", "GET", ""),
        ("https://pr-42.preview.example.net.evil.net", "GET", ""),
        ("null", "GET", ""),
        ("https://app.example.com", "DELETE", ""),
        ("https://app.example.com", "PATCH", "content-type, x-secret"),
    ] {
        let r = preflight(origin, method, headers).await;
        assert_eq!(r.status, 403, "{origin} {method} {headers}");
        assert_gateway_error(&r, 403, "forbidden");
        assert!(r.header("access-control-allow-origin").is_none());
        assert!(!preflight_passes(&r, origin, true, method, &[]));
    }
    // OPTIONS without Access-Control-Request-Method is not a preflight: it goes upstream.
    let r = client.request("OPTIONS", &gw.url("/public"), &[("origin", "https://x.test")], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn cors_actual_requests_get_headers_on_the_response() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(CORS, Some(&upstream)).await;
    let client = HttpClient::http1();
    let origin = "https://pr-7.preview.example.net";
    let r = client.request("GET", &gw.url("/app"), &[("origin", origin), ("x-api-key", "alice-key")], b"").await;
    assert_eq!(r.status, 200);
    assert!(cors_check(&r, origin, true), "{:?}", r.headers);
    assert_eq!(r.header("access-control-expose-headers").as_deref(), Some("x-request-id, x-total"));
    assert!(vary_has_origin(&r));
    assert!(r.header("access-control-allow-methods").is_none(), "preflight-only headers stay off");

    // The 401 of key-auth (later in the chain) is readable by the allowed script.
    let r = client.request("GET", &gw.url("/app"), &[("origin", origin)], b"").await;
    assert_eq!(r.status, 401);
    assert!(cors_check(&r, origin, true));

    // A disallowed origin or no origin: no CORS headers, but still `Vary: Origin` for caches.
    let r = client
        .request("GET", &gw.url("/app"), &[("origin", "https://evil.test"), ("x-api-key", "alice-key")], b"")
        .await;
    assert_eq!(r.status, 200, "CORS does not block the request, the browser hides the response");
    assert!(
        r.header("access-control-allow-origin").is_none() && r.header("access-control-allow-credentials").is_none()
    );
    assert!(!cors_check(&r, "https://evil.test", false));
    assert!(vary_has_origin(&r));
    let r = client.request("GET", &gw.url("/app"), &[("x-api-key", "alice-key")], b"").await;
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(vary_has_origin(&r));

    // `*` without credentials: any origin, `*` answered, nothing varies.
    let r = client.request("GET", &gw.url("/public"), &[("origin", "https://anyone.test")], b"").await;
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("*"));
    assert!(cors_check(&r, "https://anyone.test", false));
    assert!(!cors_check(&r, "https://anyone.test", true), "a credentialed request is refused by the browser");
    assert!(r.header("access-control-allow-credentials").is_none());
    assert!(!vary_has_origin(&r));
    let r = client
        .request(
            "OPTIONS",
            &gw.url("/public"),
            &[
                ("origin", "https://anyone.test"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-custom"),
            ],
            b"",
        )
        .await;
    assert!(preflight_passes(&r, "https://anyone.test", false, "PUT", &["x-custom"]), "{:?}", r.headers);
    gw.stop().await;
}

/// The plugin's CORS headers replace the upstream's entirely: an upstream's
/// `Access-Control-Allow-Credentials: true` beside the plugin's `Allow-Origin` would grant a
/// credentialed read the operator did not (`credentials` off), and a refused origin gets none.
#[tokio::test]
async fn cors_headers_replace_the_upstreams_own() {
    let (addr, _task) = airlock_tests::raw_upstream(
        b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nAccess-Control-Allow-Credentials: true\r\n\
          Access-Control-Expose-Headers: x-secret\r\nAccess-Control-Allow-Methods: DELETE\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let config = format!(
        "[upstreams.raw]\ntargets = [\"{addr}\"]\n[[routes]]\npath = \"/x\"\nupstream = \"raw\"\n[[routes.plugins]]\nplugin = \"builtin:cors\"\nconfig = {{ origins = [\"https://app.example.com\"] }}\n"
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    let cors = |r: &Reply| {
        let mut names: Vec<String> = r.headers.keys().map(|n| n.as_str().to_owned()).filter(|n| n.starts_with("access-control-")).collect();
        names.sort();
        names
    };
    let r = client.request("GET", &gw.url("/x"), &[("origin", "https://app.example.com")], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(cors(&r), ["access-control-allow-origin"], "{:?}", r.headers);
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    let r = client.request("GET", &gw.url("/x"), &[("origin", "https://evil.test")], b"").await;
    assert_eq!(cors(&r), Vec::<String>::new(), "{:?}", r.headers);
    gw.stop().await;
}

#[tokio::test]
async fn cors_refuses_wildcard_with_credentials() {
    let config = "[upstreams.b]\ntargets = [\"127.0.0.1:9\"]\n\n[[routes]]\nid = \"r\"\npath = \"/\"\nupstream = \"b\"\n[[routes.plugins]]\nplugin = \"builtin:cors\"\nconfig = { origins = [\"*\"], credentials = true }\n";
    let err = Gateway::try_start(config, None).await.err().expect("rejected").to_string();
    assert!(err.contains("`credentials`: cannot be true"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// builtin:jwt. Tokens are minted by the native `jsonwebtoken` crate (ring), an implementation
// independent of the RustCrypto crates the plugin verifies with.

mod jwt {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    const RSA_PRIVATE: &str = include_str!("../fixtures/jwt/rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("../fixtures/jwt/rsa-public.pem");
    const P256_PRIVATE: &str = include_str!("../fixtures/jwt/p256-private.pem");
    const P256_PUBLIC: &str = include_str!("../fixtures/jwt/p256-public.pem");
    const P384_PRIVATE: &str = include_str!("../fixtures/jwt/p384-private.pem");
    const P384_PUBLIC: &str = include_str!("../fixtures/jwt/p384-public.pem");
    const ED_PRIVATE: &str = include_str!("../fixtures/jwt/ed-private.pem");
    const ED_PUBLIC: &str = include_str!("../fixtures/jwt/ed-public.pem");
    const HS256: &str = "hs256-secret-of-at-least-32-bytes!";
    const HS384: &str = "hs384-secret-of-at-least-48-bytes!!!!!!!!!!!!!!!";
    const HS512: &str = "hs512-secret-of-at-least-64-bytes!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!";
    const BOB: &str = "bob-own-secret-of-at-least-32-bytes!";

    fn config() -> String {
        let key =
            |kid: &str, alg: &str, pem: &str| format!("  {{ kid = \"{kid}\", alg = \"{alg}\", pem = '''{pem}''' }},\n");
        let mut keys = String::new();
        for (kid, alg, secret) in [("hs256", "HS256", HS256), ("hs384", "HS384", HS384), ("hs512", "HS512", HS512)] {
            keys.push_str(&format!("  {{ kid = \"{kid}\", alg = \"{alg}\", secret = \"{secret}\" }},\n"));
        }
        for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
            keys.push_str(&key(&alg.to_lowercase(), alg, RSA_PUBLIC));
        }
        keys.push_str(&key("es256", "ES256", P256_PUBLIC));
        keys.push_str(&key("es384", "ES384", P384_PUBLIC));
        keys.push_str(&key("eddsa", "EdDSA", ED_PUBLIC));
        format!(
            r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[[consumers]]
id = "alice"
groups = ["admin"]

[[consumers]]
id = "bob"
credentials = {{ jwt = [{{ jwk = {{ kty = "oct", kid = "bob-key", alg = "HS256", k = "{bob_k}" }} }}] }}

[[routes]]
id = "api"
path = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:jwt"
[routes.plugins.config]
issuers = ["https://idp.example.com/"]
audiences = ["orders"]
consumer_claim = "sub"
cookie = "session"
claims_to_headers = {{ sub = "x-user-id", scope = "x-scope" }}
keys = [
{keys}]
"#,
            bob_k = b64url(BOB.as_bytes()),
        )
    }

    /// [`config`] with a consumer `guest` that requests without a valid token go on as.
    fn anonymous_guest_config() -> String {
        config()
            .replace("[[consumers]]\nid = \"alice\"", "[[consumers]]\nid = \"guest\"\n\n[[consumers]]\nid = \"alice\"")
            .replace("cookie = \"session\"", "cookie = \"session\"\nanonymous = \"guest\"")
    }

    fn b64url(bytes: &[u8]) -> String {
        base64(bytes).trim_end_matches('=').replace('+', "-").replace('/', "_")
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "sub": "alice", "iss": "https://idp.example.com/", "aud": ["other", "orders"],
            "exp": now() + 600, "iat": now(), "scope": "read write"
        })
    }

    fn mint(alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let key = match alg {
            Algorithm::HS256 => EncodingKey::from_secret(HS256.as_bytes()),
            Algorithm::HS384 => EncodingKey::from_secret(HS384.as_bytes()),
            Algorithm::HS512 => EncodingKey::from_secret(HS512.as_bytes()),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()).unwrap(),
            Algorithm::ES384 => EncodingKey::from_ec_pem(P384_PRIVATE.as_bytes()).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &key).unwrap()
    }

    const ALL: [(Algorithm, &str); 12] = [
        (Algorithm::HS256, "hs256"),
        (Algorithm::HS384, "hs384"),
        (Algorithm::HS512, "hs512"),
        (Algorithm::RS256, "rs256"),
        (Algorithm::RS384, "rs384"),
        (Algorithm::RS512, "rs512"),
        (Algorithm::PS256, "ps256"),
        (Algorithm::PS384, "ps384"),
        (Algorithm::PS512, "ps512"),
        (Algorithm::ES256, "es256"),
        (Algorithm::ES384, "es384"),
        (Algorithm::EdDSA, "eddsa"),
    ];

    const CHALLENGE: &str = "Bearer realm=\"airlock\", error=\"invalid_token\"";

    async fn call(client: &HttpClient, gw: &Gateway, auth: &str) -> Reply {
        client.request("GET", &gw.url("/api"), &[("authorization", auth)], b"").await
    }

    #[tokio::test]
    async fn every_algorithm_verifies() {
        let upstream = Upstream::start().await;
        let gw = Gateway::start(&config(), Some(&upstream)).await;
        let client = HttpClient::http1();
        for (alg, kid) in ALL {
            for kid in [Some(kid), None] {
                let token = mint(alg, kid, &claims());
                let r = call(&client, &gw, &format!("Bearer {token}")).await;
                assert_eq!(r.status, 200, "{alg:?} kid {kid:?}: {}", r.text());
                assert_eq!(r.upstream_header("x-consumer-id"), vec!["alice"], "{alg:?}");
                assert_eq!(r.upstream_header("x-consumer-groups"), vec!["admin"]);
                assert_eq!(r.upstream_header("x-user-id"), vec!["alice"]);
                assert_eq!(r.upstream_header("x-scope"), vec!["read write"]);
                assert!(r.upstream_header("authorization").is_empty(), "the token is stripped");
            }
        }
        // From the cookie; scheme case-insensitive; a consumer-bound JWK key names its consumer.
        let token = mint(Algorithm::ES256, Some("es256"), &claims());
        let r =
            client.request("GET", &gw.url("/api"), &[("cookie", &format!("theme=dark; session={token}"))], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = call(&client, &gw, &format!("bearer {token}")).await;
        assert_eq!(r.status, 200);
        gw.stop().await;
    }

    /// A token signed with bob's own key (a consumer's `credentials.jwt`, no `issuer`).
    fn bobs_token(claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("bob-key".into());
        encode(&header, claims, &EncodingKey::from_secret(BOB.as_bytes())).unwrap()
    }

    /// A consumer's key names its consumer, and speaks for it only: signed with it, a token
    /// claiming the identity provider's `iss` (to pass a route that trusts that issuer, with any
    /// `sub` and claims it likes) is refused (RFC 8725 3.8). Its own tokens (no `iss`, or its id)
    /// pass where no issuer is required, their claims its own.
    #[tokio::test]
    async fn a_consumers_key_cannot_sign_as_the_identity_provider() {
        let upstream = Upstream::start().await;
        let partners = "\n[[routes]]\nid = \"partners\"\npath = \"/partners\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"builtin:jwt\"\nconfig = { claims_to_headers = { sub = \"x-user-id\" } }\n";
        let gw = Gateway::start(&(config() + partners), Some(&upstream)).await;
        let client = HttpClient::http1();
        let get = |path: &'static str, token: String| {
            let client = &client;
            let url = gw.url(path);
            async move { client.request("GET", &url, &[("authorization", &format!("Bearer {token}"))], b"").await }
        };
        let as_idp = claims();
        assert_eq!(get("/api", bobs_token(&as_idp)).await.status, 401, "bob signing as the identity provider");
        assert_eq!(get("/partners", bobs_token(&as_idp)).await.status, 401);
        let mut own = claims();
        own.as_object_mut().unwrap().remove("iss");
        for iss in [None, Some("bob")] {
            if let Some(iss) = iss {
                own["iss"] = iss.into();
            }
            let r = get("/partners", bobs_token(&own)).await;
            assert_eq!(r.status, 200, "iss {iss:?}: {}", r.text());
            assert_eq!(r.upstream_header("x-consumer-id"), vec!["bob"]);
            assert_eq!(r.upstream_header("x-user-id"), vec!["alice"], "bob's own claim, under bob's consumer id");
        }
        assert_eq!(get("/api", bobs_token(&own)).await.status, 401, "/api requires the identity provider's `iss`");
        gw.stop().await;
    }

    /// What a verified token hands on, all made in the one change jwt asks of the gateway: the
    /// token hidden, the consumer named (or, a route-level key naming none, the credential),
    /// `jwt.sub`, `jwt.iss` and `claims_to_context` in the context, and `claims_to_headers`
    /// upstream. A later plugin reads the context (`builtin:headers`, `${context.KEY}`).
    #[tokio::test]
    async fn a_verified_tokens_claims_reach_the_context_and_the_upstream() {
        let upstream = Upstream::start().await;
        let route = |id: &str, consumer_claim: &str| {
            format!(
                r#"
[[routes]]
id = "{id}"
path = "/{id}"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:jwt"
[routes.plugins.config]
issuers = ["https://idp.example.com/"]
{consumer_claim}
claims_to_headers = {{ tenant = "x-tenant-header" }}
claims_to_context = {{ tenant = "tenant", scope = "scopes" }}
keys = [{{ kid = "hs256", alg = "HS256", secret = "{HS256}" }}]
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.request]
set = {{ "x-tenant" = "${{context.tenant}}", "x-scopes" = "${{context.scopes}}", "x-sub" = "${{context.jwt.sub}}", "x-iss" = "${{context.jwt.iss}}", "x-consumer" = "${{context.consumer}}", "x-credential" = "${{context.credential}}" }}
"#
            )
        };
        let config = config() + &route("named", "consumer_claim = \"sub\"") + &route("unnamed", "");
        let gw = Gateway::start(&config, Some(&upstream)).await;
        let client = HttpClient::http1();
        let mut with_tenant = claims();
        with_tenant["tenant"] = "acme".into();
        let token = mint(Algorithm::HS256, Some("hs256"), &with_tenant);
        let bearer = format!("Bearer {token}");
        let headers = [("authorization", bearer.as_str()), ("x-tenant-header", "forged"), ("x-consumer-id", "forged")];

        let r = client.request("GET", &gw.url("/named"), &headers, b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        for (name, value) in [
            ("x-tenant", "acme"),
            ("x-tenant-header", "acme"),
            ("x-scopes", "read write"),
            ("x-sub", "alice"),
            ("x-iss", "https://idp.example.com/"),
            ("x-consumer", "alice"),
            ("x-consumer-id", "alice"),
            ("x-consumer-groups", "admin"),
            ("x-credential", ""),
        ] {
            assert_eq!(r.upstream_header(name), vec![value], "{name}");
        }
        assert!(r.upstream_header("authorization").is_empty(), "the token is hidden");

        let r = client.request("GET", &gw.url("/unnamed"), &headers, b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let credential = r.upstream_header("x-credential");
        assert!(credential.len() == 1 && credential[0].starts_with("jwt:"), "{credential:?}");
        assert_eq!(r.upstream_header("x-consumer"), vec![""], "no consumer named");
        assert!(r.upstream_header("x-consumer-id").is_empty(), "the client's own is removed");
        assert_eq!(r.upstream_header("x-sub"), vec!["alice"]);
        assert_eq!(r.upstream_header("x-tenant-header"), vec!["acme"]);
        assert!(r.upstream_header("authorization").is_empty());
        gw.stop().await;
    }

    /// The headers `claims_to_headers` fills are the token's verified claims, or absent: a
    /// client's own copies are removed on every path, the anonymous one included.
    #[tokio::test]
    async fn claim_headers_are_never_the_clients_own() {
        let upstream = Upstream::start().await;
        let gw = Gateway::start(&anonymous_guest_config(), Some(&upstream)).await;
        let client = HttpClient::http1();
        let forged = [("x-user-id", "alice"), ("x-scope", "admin")];
        let mut no_scope = claims();
        no_scope.as_object_mut().unwrap().remove("scope");
        for token in [None, Some("a.b.c".to_owned()), Some(mint(Algorithm::HS256, Some("hs256"), &no_scope))] {
            let mut headers = forged.to_vec();
            let bearer = token.as_ref().map(|t| format!("Bearer {t}"));
            if let Some(bearer) = &bearer {
                headers.push(("authorization", bearer));
            }
            let r = client.request("GET", &gw.url("/api"), &headers, b"").await;
            assert_eq!(r.status, 200, "{token:?}: {}", r.text());
            assert!(r.upstream_header("x-scope").is_empty(), "{token:?}: the client's x-scope passed: {}", r.text());
            let user = r.upstream_header("x-user-id");
            assert!(user.is_empty() || token.as_deref().is_some_and(|t| t.len() > 10), "{token:?}: {}", r.text());
        }
        gw.stop().await;
    }

    /// A token in `Authorization` and another in the cookie (or two cookies of that name) is a
    /// 400, as two `Authorization` lines are: one would be verified and the other would reach an
    /// upstream reading its session cookie unverified (before: the header's was verified and a
    /// forged cookie beside it went on). The same token in both goes on, hidden from both.
    #[tokio::test]
    async fn a_second_token_in_the_cookie_is_refused_not_passed_on() {
        let upstream = Upstream::start().await;
        let gw = Gateway::start(&config(), Some(&upstream)).await;
        let client = HttpClient::http1();
        let valid = mint(Algorithm::HS256, Some("hs256"), &claims());
        let forged = format!("{}.{}.AAAA", b64url(br#"{"alg":"HS256","kid":"hs256"}"#), b64url(br#"{"sub":"admin"}"#));
        let hits = upstream.hits();
        let both = [("authorization", format!("Bearer {valid}")), ("cookie", format!("theme=dark; session={forged}"))];
        let both: Vec<(&str, &str)> = both.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = client.request("GET", &gw.url("/api"), &both, b"").await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["message"], "one bearer token in Authorization and another in the `session` cookie");
        let two_cookies = format!("session={valid}; session={forged}");
        let r = client.request("GET", &gw.url("/api"), &[("cookie", two_cookies.as_str())], b"").await;
        assert_eq!((r.status.as_u16(), r.json()["message"].as_str()), (400, Some("more than one `session` cookie")));
        assert_eq!(upstream.hits(), hits, "neither reached the upstream");

        let same = [("authorization", format!("Bearer {valid}")), ("cookie", format!("theme=dark; session={valid}"))];
        let same: Vec<(&str, &str)> = same.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = client.request("GET", &gw.url("/api"), &same, b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.upstream_header("authorization").is_empty());
        assert_eq!(r.upstream_header("cookie"), vec!["theme=dark"], "the token is hidden from the cookie too");
        gw.stop().await;
    }

    /// With `anonymous`, a refused token goes on as the anonymous consumer, and is stripped as a
    /// valid one is: the upstream never gets a token it could take for checked.
    #[tokio::test]
    async fn a_refused_token_let_through_as_anonymous_is_hidden() {
        let upstream = Upstream::start().await;
        let gw = Gateway::start(&anonymous_guest_config(), Some(&upstream)).await;
        let client = HttpClient::http1();
        let mut expired = claims();
        expired["exp"] = serde_json::json!(now() - 3600);
        let token = mint(Algorithm::HS256, Some("hs256"), &expired);
        let r = call(&client, &gw, &format!("Bearer {token}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.upstream_header("x-consumer-id"), vec!["guest"]);
        assert!(r.upstream_header("authorization").is_empty(), "the refused token is stripped");
        let r = client.request("GET", &gw.url("/api"), &[("cookie", &format!("theme=dark; session={token}"))], b"").await;
        assert_eq!(r.upstream_header("cookie"), vec!["theme=dark"], "from the cookie too, the other cookies kept");
        gw.stop().await;

        // Without `hide_credentials` too: that upstream reads the tokens it is given, and must
        // never be given one the gateway refused. A valid one still reaches it.
        let kept = anonymous_guest_config().replace("anonymous = \"guest\"", "anonymous = \"guest\"\nhide_credentials = false");
        let gw = Gateway::start(&kept, Some(&upstream)).await;
        let r = call(&client, &gw, &format!("Bearer {token}")).await;
        assert_eq!((r.status.as_u16(), r.upstream_header("x-consumer-id")), (200, vec!["guest".to_owned()]));
        assert!(r.upstream_header("authorization").is_empty(), "the refused token is stripped: {:?}", r.upstream_header("authorization"));
        let valid = mint(Algorithm::HS256, Some("hs256"), &claims());
        let r = call(&client, &gw, &format!("Bearer {valid}")).await;
        assert_eq!(r.upstream_header("authorization"), vec![format!("Bearer {valid}")]);
        gw.stop().await;
    }

    /// Either credential (key-auth, then jwt, both with `anonymous`): a bearer token beside a
    /// valid API key is never checked, so it does not reach the upstream, which could take it
    /// (`{"sub": "admin"}`, any signature) for one the gateway vouched for.
    #[tokio::test]
    async fn an_unchecked_token_beside_another_credential_does_not_go_on() {
        let upstream = Upstream::start().await;
        let config = format!(
            "[upstreams.backend]\ntargets = [\"{{upstream}}\"]\n[[consumers]]\nid = \"guest\"\n[[consumers]]\nid = \"alice\"\ncredentials = {{ keys = [\"alice-key\"] }}\n\
             [[routes]]\npath = \"/api\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"builtin:key-auth\"\nconfig = {{ anonymous = \"guest\" }}\n\
             [[routes.plugins]]\nplugin = \"builtin:jwt\"\nconfig = {{ anonymous = \"guest\", keys = [{{ kid = \"hs256\", alg = \"HS256\", secret = \"{HS256}\" }}] }}\n"
        );
        let gw = Gateway::start(&config, Some(&upstream)).await;
        let client = HttpClient::http1();
        let forged = format!("Bearer {}.{}.AAAA", b64url(br#"{"alg":"HS256"}"#), b64url(br#"{"sub":"admin"}"#));
        let r = client.request("GET", &gw.url("/api"), &[("x-api-key", "alice-key"), ("authorization", &forged)], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.upstream_header("x-consumer-id"), vec!["alice"]);
        assert!(r.upstream_header("authorization").is_empty(), "{:?}", r.upstream_header("authorization"));
        gw.stop().await;
    }

    /// RFC 6750 3.1: a request with two `Authorization` lines is a 400 `invalid_request`: only
    /// one could be verified, and the other would reach the upstream unverified.
    #[tokio::test]
    async fn two_authorization_lines_are_a_400() {
        let upstream = Upstream::start().await;
        let gw = Gateway::start(&config(), Some(&upstream)).await;
        let client = HttpClient::http1();
        let valid = mint(Algorithm::HS256, Some("hs256"), &claims());
        let forged = format!("{}x", &valid[..valid.len() - 1]);
        for lines in [[format!("Bearer {valid}"), format!("Bearer {forged}")], ["Basic eDp5".to_owned(), format!("Bearer {valid}")]] {
            let r = client.request("GET", &gw.url("/api"), &[("authorization", &lines[0]), ("authorization", &lines[1])], b"").await;
            assert_eq!(r.status, 400, "{}", r.text());
            assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer realm=\"airlock\", error=\"invalid_request\""));
            assert_eq!(r.json()["message"], "more than one Authorization header");
        }
        assert_eq!(upstream.hits(), 0);
        gw.stop().await;
    }

    #[tokio::test]
    async fn invalid_tokens_are_refused_without_detail() {
        let upstream = Upstream::start().await;
        let gw = Gateway::start(&config(), Some(&upstream)).await;
        let client = HttpClient::http1();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims();
            f(&mut c);
            c
        };
        let mut refused: Vec<(&str, String)> = vec![
            ("expired", mint(Algorithm::RS256, Some("rs256"), &with(&|c| c["exp"] = (now() - 120).into()))),
            ("not yet valid", mint(Algorithm::ES256, Some("es256"), &with(&|c| c["nbf"] = (now() + 300).into()))),
            ("issued in the future", mint(Algorithm::ES384, None, &with(&|c| c["iat"] = (now() + 300).into()))),
            ("wrong issuer", mint(Algorithm::EdDSA, None, &with(&|c| c["iss"] = "https://evil.example/".into()))),
            ("no issuer", mint(Algorithm::HS256, None, &with(&|c| drop(c.as_object_mut().unwrap().remove("iss"))))),
            ("wrong audience", mint(Algorithm::PS256, None, &with(&|c| c["aud"] = "billing".into()))),
            ("no exp", mint(Algorithm::HS512, None, &with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))))),
            ("unknown consumer", mint(Algorithm::HS384, None, &with(&|c| c["sub"] = "mallory".into()))),
            ("unknown kid", mint(Algorithm::RS256, Some("rs999"), &claims())),
            ("kid of another algorithm", mint(Algorithm::RS256, Some("ps256"), &claims())),
        ];
        // Bad signatures: a changed payload, a different key, a signature cut short.
        let good = mint(Algorithm::RS256, Some("rs256"), &claims());
        let parts: Vec<&str> = good.split('.').collect();
        let forged_payload = b64url(with(&|c| c["sub"] = "bob".into()).to_string().as_bytes());
        refused.push(("changed payload", format!("{}.{forged_payload}.{}", parts[0], parts[2])));
        refused.push(("truncated signature", format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20])));
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("hs256".into());
        let other =
            encode(&header, &claims(), &EncodingKey::from_secret(b"some-other-secret-of-32-bytes!!!!")).unwrap();
        refused.push(("other secret", other));
        // alg: none, with and without a signature.
        let none_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64url(claims().to_string().as_bytes());
        refused.push(("alg none", format!("{none_header}.{payload}.")));
        refused.push(("alg none signed", format!("{none_header}.{payload}.{}", parts[2])));
        let none_lower = b64url(br#"{"alg":"None","kid":"hs256"}"#);
        refused.push(("alg None", format!("{none_lower}.{payload}.")));
        // HMAC with the RSA public key as the secret (the classic algorithm confusion).
        for kid in [Some("rs256"), None] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid.map(str::to_owned);
            let confused = encode(&header, &claims(), &EncodingKey::from_secret(RSA_PUBLIC.as_bytes())).unwrap();
            refused.push(("HS256 signed with the public key", confused));
        }
        for (what, token) in &refused {
            let r = call(&client, &gw, &format!("Bearer {token}")).await;
            assert_clean_401(&r, CHALLENGE, "");
            assert_eq!(r.json()["message"], "invalid token", "{what}: the reason is not told");
        }
        assert_eq!(upstream.hits(), 0);
        gw.stop().await;
    }

    #[tokio::test]
    async fn malformed_headers_and_tokens_are_clean_401s() {
        let upstream = Upstream::start().await;
        let gw = Gateway::start(&config(), Some(&upstream)).await;
        let client = HttpClient::http1();
        let long = format!("Bearer {}.{}.{}", "a".repeat(3000), "b".repeat(3000), "c".repeat(100));
        let bad_json = format!("Bearer {}.{}.sig", b64url(b"{not json"), b64url(b"{}"));
        let array_header = format!("Bearer {}.{}.sig", b64url(b"[1,2]"), b64url(b"{}"));
        let numeric_kid = format!("Bearer {}.{}.sig", b64url(br#"{"alg":"HS256","kid":5}"#), b64url(b"{}"));
        let payload_not_object = {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("hs256".into());
            format!(
                "Bearer {}",
                encode(&header, &serde_json::json!([1, 2]), &EncodingKey::from_secret(HS256.as_bytes())).unwrap()
            )
        };
        let cases = [
            "Bearer a",
            "Bearer a.b",
            "Bearer a.b.c",
            "Bearer a.b.c.d",
            "Bearer ...",
            "Bearer e30.e30.",
            "Bearer !!!.@@@.###",
            &long,
            &bad_json,
            &array_header,
            &numeric_kid,
            &payload_not_object,
        ];
        for auth in cases {
            let r = call(&client, &gw, auth).await;
            assert_clean_401(&r, CHALLENGE, "");
        }
        // No token at all (or another scheme): a plain challenge, without `error=`.
        for auth in ["Bearer", "Bearer   ", "Basic YTpi", "Token abc"] {
            let r = call(&client, &gw, auth).await;
            assert_clean_401(&r, "Bearer realm=\"airlock\"", "");
        }
        let r = client.get(&gw.url("/api")).await;
        assert_clean_401(&r, "Bearer realm=\"airlock\"", "");
        assert_eq!(upstream.hits(), 0);
        gw.stop().await;
    }
}

/// bcrypt at cost 10 takes longer than the default 100 ms CPU deadline inside the sandbox; the
/// documented remedy is a plugin definition with a larger `cpu_ms`. The second request is served
/// from the instance's cache of verified credentials.
#[tokio::test]
async fn basic_auth_bcrypt_cost_10_with_a_larger_cpu_budget() {
    let upstream = Upstream::start().await;
    let hash = bcrypt::hash("pw", 10).unwrap();
    let config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.slow-basic]
source = "builtin:basic-auth"
cpu_ms = 3000
pool_size = 1

[[consumers]]
id = "a"
credentials = {{ basic = {{ username = "a", password = 'bcrypt:{hash}' }} }}

[[routes]]
id = "r"
path = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "slow-basic"
"#
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    for _ in 0..2 {
        let r = client.request("GET", &gw.url("/"), &[("authorization", &basic("a", "pw"))], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.upstream_header("x-consumer-id"), vec!["a"]);
    }
    let r = client.request("GET", &gw.url("/"), &[("authorization", &basic("a", "pW"))], b"").await;
    assert_eq!(r.status, 401);
    gw.stop().await;
}

/// An authentication plugin that fails open (here basic-auth past its CPU deadline, which a
/// client can cause with any wrong password for a user whose hash is costly) is skipped, and its
/// half-made changes undone; that must not bring back a client's forged identity headers, which
/// the plugin removes: with no consumer established, the upstream gets none. A consumer an
/// earlier plugin did establish keeps its headers.
#[tokio::test]
async fn failing_open_past_an_auth_plugin_vouches_for_no_forged_identity() {
    let upstream = Upstream::start().await;
    // Cost 10 takes ~100 ms in the sandbox: far past a 25 ms deadline, which loading fits.
    let hash = bcrypt::hash("pw", 10).unwrap();
    let config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.basic-open]
source = "builtin:basic-auth"
failure = "open"
cpu_ms = 25

[[consumers]]
id = "slow"
credentials = {{ basic = {{ username = "slow", password = 'bcrypt:{hash}' }} }}

[[consumers]]
id = "bob"
groups = ["staff"]
credentials = {{ keys = ["bob-key"] }}

[[routes]]
path = "/basic"
upstream = "backend"
[[routes.plugins]]
plugin = "basic-open"

[[routes]]
path = "/key-then-basic"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
[[routes.plugins]]
plugin = "basic-open"
"#
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let forged = [("x-consumer-id", "alice"), ("x-consumer-groups", "admin"), ("x-anonymous-consumer", "false")];
    let mut headers = vec![("authorization", basic("slow", "wrong"))];
    headers.extend(forged.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = client.request("GET", &gw.url("/basic"), &headers, b"").await;
    assert_eq!(r.status, 200, "failed open: {}", r.text());
    for (name, _) in forged {
        assert!(r.upstream_header(name).is_empty(), "{name} reached the upstream: {}", r.text());
    }

    let mut with_key = headers.clone();
    with_key.push(("x-api-key", "bob-key"));
    let r = client.request("GET", &gw.url("/key-then-basic"), &with_key, b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["bob"], "key-auth's consumer stays");
    assert_eq!(r.upstream_header("x-consumer-groups"), vec!["staff"]);
    gw.stop().await;
}

/// key-auth reads a key as sent (only the field's own SP/HTAB trimmed: `key` + NBSP is not the
/// key, nor a fresh spelling of it for a limiter keyed on the header), and hides every key it
/// could have read, not just the one it used. Two auth plugins with `anonymous` mean either
/// credential: the second keeps the consumer the first named.
#[tokio::test]
async fn key_auth_reads_keys_exactly_hides_them_all_and_either_credential_passes() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[consumers]]
id = "guest"

[[consumers]]
id = "alice"
credentials = { keys = ["alice-key"] }

[[consumers]]
id = "bob"
credentials = { keys = ["bob-key"], basic = { username = "bob", password = "sha256:df53c27a66157885ba143e34f25d6380e12168b0f7da4f0c46efa54cd9a083b7" } }

[[routes]]
path = "/key"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = { header_names = ["x-api-key", "apikey"], query_param = "apikey" }

[[routes]]
path = "/either"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = { anonymous = "guest" }
[[routes.plugins]]
plugin = "builtin:basic-auth"
config = { anonymous = "guest" }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    for spelled in ["alice-key\u{a0}", "\u{3000}alice-key", "alice-key\u{2000}"] {
        let r = client.request("GET", &gw.url("/key"), &[("x-api-key", spelled)], b"").await;
        assert_eq!(r.status, 401, "{spelled:?} is not alice's key");
    }
    let r = client.request("GET", &gw.url("/key?apikey=alice-key&page=2"), &[("x-api-key", "alice-key"), ("apikey", "alice-key")], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["alice"]);
    assert!(r.upstream_header("apikey").is_empty() && r.upstream_header("x-api-key").is_empty(), "{}", r.text());
    assert_eq!(r.json()["query"], "page=2", "the key in the query is hidden too");
    // Bob's key beside alice's: which one is the caller? Neither is taken.
    let r = client.request("GET", &gw.url("/key?apikey=bob-key&page=2"), &[("x-api-key", "alice-key")], b"").await;
    assert_eq!(r.status, 400, "{}", r.text());

    let r = client.request("GET", &gw.url("/either"), &[("x-api-key", "alice-key")], b"").await;
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["alice"], "basic-auth's anonymous does not replace alice: {}", r.text());
    assert!(r.upstream_header("x-anonymous-consumer").is_empty());
    // Basic credentials beside alice's key are never checked: they do not go on either.
    let r = client.request("GET", &gw.url("/either"), &[("x-api-key", "alice-key"), ("authorization", &basic("admin", "anything"))], b"").await;
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["alice"]);
    assert!(r.upstream_header("authorization").is_empty(), "{:?}", r.upstream_header("authorization"));
    let r = client.request("GET", &gw.url("/either"), &[("authorization", &basic("bob", "bob-password"))], b"").await;
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["bob"], "{}", r.text());
    assert!(r.upstream_header("x-anonymous-consumer").is_empty());
    let r = client.get(&gw.url("/either")).await;
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["guest"]);
    assert_eq!(r.upstream_header("x-anonymous-consumer"), vec!["true"]);
    gw.stop().await;
}

/// An API key key-auth never checks (an earlier plugin of "either credential" named the
/// consumer) does not go on, in a header or the query: an upstream could take it, someone's real
/// key included, for the consumer's (before: passed on, `hide_credentials` notwithstanding). And
/// a wrong key let through as anonymous is removed even with `hide_credentials = false`, as jwt
/// and basic-auth remove a refused credential; a valid one is kept there.
#[tokio::test]
async fn key_auth_passes_on_no_key_it_did_not_check_or_refused() {
    let upstream = Upstream::start().await;
    let config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[[consumers]]
id = "guest"

[[consumers]]
id = "alice"
credentials = {{ keys = ["alice-key"], basic = {{ username = "alice", password = "sha256:{sha}" }} }}

[[routes]]
path = "/either"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:basic-auth"
config = {{ anonymous = "guest" }}
[[routes.plugins]]
plugin = "builtin:key-auth"
config = {{ anonymous = "guest", query_param = "apikey" }}

[[routes]]
path = "/kept"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = {{ anonymous = "guest", query_param = "apikey", hide_credentials = false }}
"#,
        sha = sha256_hex("s3cret")
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/either?apikey=other-key&page=2"), &[("authorization", &basic("alice", "s3cret")), ("x-api-key", "alice-key")], b"").await;
    assert_eq!((r.status.as_u16(), r.upstream_header("x-consumer-id")), (200, vec!["alice".to_owned()]), "{}", r.text());
    assert!(r.upstream_header("x-api-key").is_empty(), "an unchecked key went on: {:?}", r.upstream_header("x-api-key"));
    assert_eq!(r.json()["query"], "page=2", "the unchecked key in the query too");

    let r = client.request("GET", &gw.url("/kept?apikey=forged&page=2"), &[("x-api-key", "forged")], b"").await;
    assert_eq!((r.status.as_u16(), r.upstream_header("x-consumer-id")), (200, vec!["guest".to_owned()]), "{}", r.text());
    assert!(r.upstream_header("x-api-key").is_empty(), "a refused key went on: {:?}", r.upstream_header("x-api-key"));
    assert_eq!(r.json()["query"], "page=2");
    let r = client.request("GET", &gw.url("/kept"), &[("x-api-key", "alice-key")], b"").await;
    assert_eq!((r.upstream_header("x-consumer-id"), r.upstream_header("x-api-key")), (vec!["alice".to_owned()], vec!["alice-key".to_owned()]), "kept as configured");
    gw.stop().await;
}

#[tokio::test]
async fn a_consumer_named_after_an_anonymous_fallback_is_not_anonymous() {
    // "Either credential" with three plugins: the first falls back to `guest`, the second names
    // alice. `consumer.anonymous` stayed set after that, so the third took the request for
    // anonymous, looked for its own key and replaced alice with its own `guest`.
    let upstream = Upstream::start().await;
    let config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[[consumers]]
id = "alice"
credentials = {{ basic = {{ username = "alice", password = "sha256:{sha}" }}, keys = ["alice-key"] }}

[[consumers]]
id = "guest"

[[routes]]
path = "/either"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = {{ anonymous = "guest" }}
[[routes.plugins]]
plugin = "builtin:basic-auth"
config = {{ anonymous = "guest" }}
[[routes.plugins]]
plugin = "builtin:key-auth"
config = {{ anonymous = "guest", header_names = ["x-other-key"] }}
"#,
        sha = sha256_hex("s3cret")
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/either"), &[("authorization", &basic("alice", "s3cret"))], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), ["alice"]);
    assert!(r.upstream_header("x-anonymous-consumer").is_empty());
    // Nobody's credential: guest, and said to be anonymous.
    let r = client.get(&gw.url("/either")).await;
    assert_eq!((r.upstream_header("x-consumer-id"), r.upstream_header("x-anonymous-consumer")), (vec!["guest".to_owned()], vec!["true".to_owned()]));
    gw.stop().await;
}
