//! `builtin:transform`, end to end: a real gateway between a real client and real upstreams,
//! rules on paths, queries, headers and JSON bodies both ways; non-JSON and invalid bodies; body
//! limits; gzip/deflate/br bodies decoded for the plugin; streaming left alone without body rules.

use std::io::Write;

use airlock_tests::{Gateway, HttpClient, Upstream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};

/// Request rules on every part of the request; the echo upstream shows what it received.
const REQUEST_RULES: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
id = "users"
path = "/users/{id}"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:transform"
[routes.plugins.config.request]
path = "/v2/accounts/${param.id}/profile"
query = { remove = ["debug"], rename = { "q" = "search" }, set = { "api-version" = "2" } }
headers = { set = { "x-account" = "${param.id}" }, remove = ["x-internal"] }
[routes.plugins.config.request.body]
remove = ["password", "**.ssn", "/cards/0/cvv"]
rename = { "user.mail" = "email" }
move = { "user.nick" = "profile.nickname" }
copy = { "items.0.id" = "first_item" }
set = { "meta.account" = "${param.id}", "meta.via" = "${header.x-client}", "meta.tags" = ["a", "${query.q}"] }
add = { "user.role" = "member" }
"#;

/// A config with one catch-all route to `{upstream}` (with `route_keys` added) whose chain is
/// `builtin:transform` with the inline table `config`.
fn catch_all(route_keys: &str, config: &str) -> String {
    format!(
        "[upstreams.backend]\ntargets = [\"{{upstream}}\"]\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n{route_keys}\n\
         [[routes.plugins]]\nplugin = \"builtin:transform\"\nconfig = {config}\n"
    )
}

fn echoed_body(reply: &airlock_tests::Reply) -> Value {
    let echo = reply.json();
    let text = echo["body"].as_str().expect("echo has the body");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("upstream got no JSON ({e}): {text}"))
}

#[tokio::test]
async fn request_rules_rewrite_path_query_headers_and_a_nested_body() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(REQUEST_RULES, Some(&upstream)).await;
    let body = json!({
        "password": "hunter2",
        "user": {"mail": "a@example.com", "nick": "al", "ssn": "123", "role": "admin"},
        "cards": [{"number": "4111", "cvv": "999"}, {"number": "5500", "cvv": "111"}],
        "items": [{"id": 7, "ssn": "nested"}, {"id": 8}]
    });
    let r = HttpClient::http1()
        .request(
            "POST",
            &gw.url("/users/42?q=find+me&debug=1&keep=%7E"),
            &[("content-type", "application/json"), ("x-client", "cli/1"), ("x-internal", "secret")],
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["path"], "/v2/accounts/42/profile");
    assert_eq!(echo["query"], "search=find+me&keep=%7E&api-version=2");
    assert_eq!(r.upstream_header("x-account"), ["42"]);
    assert!(r.upstream_header("x-internal").is_empty());
    let sent = echoed_body(&r);
    assert_eq!(
        sent,
        json!({
            "user": {"email": "a@example.com", "role": "admin"},
            "cards": [{"number": "4111"}, {"number": "5500", "cvv": "111"}],
            "items": [{"id": 7}, {"id": 8}],
            "profile": {"nickname": "al"},
            "first_item": 7,
            "meta": {"account": "42", "via": "cli/1", "tags": ["a", "find me"]}
        })
    );
    let sent_text = echo["body"].as_str().unwrap();
    assert_eq!(r.upstream_header("content-length"), [sent_text.len().to_string()], "Content-Length fixed up");
    gw.stop().await;
}

/// A path template's values cannot move the request elsewhere: `.`, `..` (plain, or hidden
/// behind `/`, `\` or `;`) and an empty value in the middle are refused with a 400, never sent
/// as a resolved path nor as the client's own. Values that fit one segment go through encoded.
#[tokio::test]
async fn path_template_values_cannot_climb_out_of_their_segment() {
    let upstream = Upstream::start().await;
    let config = catch_all("", r#"{ request = { path = "/tenants/${header.x-tenant}/files/${query.version}" } }"#);
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let ok = client.request("GET", &gw.url("/x?version=v%201"), &[("x-tenant", "acme/eu")], b"").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["path"], "/tenants/acme%2Feu/files/v%201");
    // What would read otherwise upstream (a path parameter, `/`) or cannot stand in a path goes
    // escaped, as the client sent it.
    for (sent, expected) in [("a%3Bb", "a%3Bb"), ("a%5Cb", "a%5Cb"), ("a%7Cb%5E", "a%7Cb%5E"), ("a%5Bb%5D", "a%5Bb%5D")] {
        let r = client.request("GET", &gw.url(&format!("/x?version={sent}")), &[("x-tenant", "acme")], b"").await;
        assert_eq!(r.status, 200, "{sent}: {}", r.text());
        assert_eq!(r.json()["path"], format!("/tenants/acme/files/{expected}"), "{sent}");
    }
    // Escaped, `;` starts no path parameter: `a%3B..` is a segment of its own name.
    let r = client.request("GET", &gw.url("/x?version=x"), &[("x-tenant", "a;..")], b"").await;
    assert_eq!((r.status.as_u16(), r.json()["path"].as_str()), (200, Some("/tenants/a%3B../files/x")), "{}", r.text());
    let hits = upstream.hits();
    for (tenant, version) in [
        ("..", "admin"),
        ("acme", ".."),
        (".", "admin"),
        ("acme", "a%2F..%2Fadmin"),
        ("a\\..", "x"),
        ("", "admin"),
    ] {
        let r = client.request("GET", &gw.url(&format!("/x?version={version}")), &[("x-tenant", tenant)], b"").await;
        assert_eq!(r.status, 400, "tenant {tenant:?}, version {version:?}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_request", "{}", r.text());
    }
    assert_eq!(upstream.hits(), hits, "no refused request reached the upstream");
    gw.stop().await;
}

#[tokio::test]
async fn a_body_no_rule_matches_is_sent_byte_for_byte() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(REQUEST_RULES, Some(&upstream)).await;
    // Missing paths everywhere: nothing to remove, rename, move or copy; `set`/`add` still add.
    let original = r#"{ "other" : [1, 2.50, {"deep": null}] }"#;
    let r = HttpClient::http1()
        .request("POST", &gw.url("/users/1"), &[("content-type", "application/json")], original.as_bytes())
        .await;
    assert_eq!(r.status, 200);
    let sent = echoed_body(&r);
    assert_eq!(sent["other"], json!([1, 2.5, {"deep": null}]));
    assert_eq!(sent["meta"], json!({"account": "1", "via": "", "tags": ["a", ""]}));
    assert_eq!(sent["user"], json!({"role": "member"}), "add creates missing parents");
    assert!(sent.get("first_item").is_none() && sent.get("profile").is_none());

    let only_removals = catch_all("", r#"{ request = { body = { remove = ["**.password", "a.b.c"] } } }"#);
    let gw2 = Gateway::start(&only_removals, Some(&upstream)).await;
    let r = HttpClient::http1().request("POST", &gw2.url("/r"), &[], original.as_bytes()).await;
    assert_eq!(r.json()["body"], original, "nothing matched: the exact bytes go upstream");
    gw.stop().await;
    gw2.stop().await;
}

/// An upstream answering every request with [`BIG_NUMBERS`].
async fn big_numbers(_req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(BIG_NUMBERS.as_bytes())));
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response
}

/// Numbers serde_json's `Value` would round: beyond 64 bits (both signs), more significant
/// digits than an f64 holds, and one a rule moves.
const BIG_NUMBERS: &str = r#"{"secret": "x", "big": 123456789012345678901234567890,
    "negative": -123456789012345678901234567890, "long": 3.14159265358979323846264338327950288,
    "price": 0.1000000000000000055511151231257827, "list": [18446744073709551616, 2.50, 1E+2]}"#;

/// What the rules below make of [`BIG_NUMBERS`]: every digit as it was.
const BIG_NUMBERS_OUT: &str = concat!(
    r#"{"big":123456789012345678901234567890,"negative":-123456789012345678901234567890,"#,
    r#""long":3.14159265358979323846264338327950288,"list":[18446744073709551616,2.50,1E+2],"#,
    r#""amounts":{"price":0.1000000000000000055511151231257827},"n":1}"#
);

/// A transformed body keeps every number a rule does not change digit for digit, however large
/// or long (serde_json alone would send `1.2345678901234568e29`), moved ones included, both ways.
#[tokio::test]
async fn numbers_keep_their_exact_digits_both_ways() {
    let rules = r#"{ remove = ["secret"], move = { "price" = "amounts.price" }, set = { "n" = 1 } }"#;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&catch_all("", &format!("{{ request = {{ body = {rules} }} }}")), Some(&upstream)).await;
    let r = HttpClient::http1()
        .request("POST", &gw.url("/orders"), &[("content-type", "application/json")], BIG_NUMBERS.as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], BIG_NUMBERS_OUT, "the upstream got every digit");
    gw.stop().await;

    let upstream = Upstream::with_handler(big_numbers).await;
    let gw = Gateway::start(&catch_all("", &format!("{{ response = {{ body = {rules} }} }}")), Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/orders")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), BIG_NUMBERS_OUT, "the client got every digit");
    assert_eq!(r.header("content-length"), Some(BIG_NUMBERS_OUT.len().to_string()));
    gw.stop().await;
}

const BODY_POLICIES: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path = "/pass"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:transform"
config = { request = { body = { remove = ["password"] } } }

[[routes]]
path = "/strict"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:transform"
config = { request = { body = { remove = ["password"], non_json = "reject" } } }
"#;

#[tokio::test]
async fn non_json_bodies_pass_or_are_refused_and_invalid_json_is_a_clear_400() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(BODY_POLICIES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let form = b"password=x&user=y";
    let form_ct = [("content-type", "application/x-www-form-urlencoded")];

    let r = client.request("POST", &gw.url("/pass"), &form_ct, form).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "password=x&user=y", "passed through untouched");
    assert_eq!(upstream.hits(), 1);

    let r = client.request("POST", &gw.url("/strict"), &form_ct, form).await;
    assert_eq!(r.status, 415);
    let err = r.json();
    assert_eq!(err["error"], "unsupported_media_type");
    assert_eq!(
        err["message"],
        "this route takes a JSON request body (content-type `application/json`), not `application/x-www-form-urlencoded`"
    );
    assert_eq!(err["request_id"], r.header("x-request-id").unwrap().as_str());

    for path in ["/pass", "/strict"] {
        let r = client.request("POST", &gw.url(path), &[("content-type", "application/json")], b"{\"password\": ").await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
        let err = r.json();
        assert_eq!(err["status"], 400);
        assert_eq!(err["error"], "invalid_json");
        assert_eq!(err["message"], "the request body is not valid JSON: EOF while parsing a value at line 1 column 13");
    }
    // A body without content-type is taken for JSON.
    let r = client.request("POST", &gw.url("/pass"), &[], b"not json").await;
    assert_eq!(r.status, 400);
    let r = client.request("POST", &gw.url("/pass"), &[], br#"{"password":"x","a":1}"#).await;
    assert_eq!(r.json()["body"], r#"{"a":1}"#);
    assert_eq!(r.upstream_header("content-type"), ["application/json"]);
    // So is one whose content-type is empty: it cannot slip its fields past the rules.
    let r = client.request("POST", &gw.url("/pass"), &[("content-type", "")], br#"{"password":"x","a":1}"#).await;
    assert_eq!(r.json()["body"], r#"{"a":1}"#);
    assert_eq!(r.upstream_header("content-type"), ["application/json"]);
    // An empty body stays empty.
    let r = client.request("POST", &gw.url("/strict"), &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "");
    assert_eq!(upstream.hits(), 4, "refused requests never reached the upstream");
    gw.stop().await;
}

/// An upstream answering canned bodies by path: `/doc` a nested JSON document, `/text` plain text,
/// `/broken` invalid JSON, `/error` a 503 with a JSON error, `/gzip`, `/deflate`, `/br` the document encoded (with a strong ETag),
/// `/json/<n>` a JSON array of about `n` bytes. Every answer echoes the request's
/// `accept-encoding` in `x-seen-accept-encoding`.
async fn canned(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let seen = req.headers().get("accept-encoding").cloned();
    let path = req.uri().path().to_owned();
    let doc = document().to_string().into_bytes();
    let (body, ct, coding): (Vec<u8>, &str, Option<&str>) = match path.as_str() {
        "/doc" => (doc, "application/json", None),
        "/text" => (b"plain words".to_vec(), "text/plain", None),
        "/broken" => (b"{\"data\": [1, 2".to_vec(), "application/json", None),
        "/error" => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"{\"error\":\"db down\"}")));
            *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            response.headers_mut().insert("content-type", "application/json".parse().unwrap());
            return response;
        }
        "/gzip" => (gzip(&doc), "application/json", Some("gzip")),
        "/deflate" => (zlib(&doc), "application/json", Some("deflate")),
        "/br" => (brotli_encode(&doc), "application/json", Some("br")),
        other => match other.strip_prefix("/json/").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => (json_of_size(n).into_bytes(), "application/json", None),
            None => (b"{}".to_vec(), "application/json", None),
        },
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let h = response.headers_mut();
    h.insert("content-type", ct.parse().unwrap());
    h.insert("etag", "\"v1\"".parse().unwrap());
    if let Some(coding) = coding {
        h.insert("content-encoding", coding.parse().unwrap());
    }
    if let Some(seen) = seen {
        h.insert("x-seen-accept-encoding", seen);
    }
    response
}

fn document() -> Value {
    json!({
        "data": {"items": [
            {"id": 1, "token": "t1", "owner": {"name": "a", "password": "p", "session": {"token": "t2"}}},
            {"id": 2, "tags": ["x"]}
        ]},
        "token": "top"
    })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

/// A JSON array of objects, `n` bytes long give or take one object.
fn json_of_size(n: usize) -> String {
    let item = r#"{"id":12345,"token":"abcdefgh","name":"item"}"#;
    let count = (n.saturating_sub(2) / (item.len() + 1)).max(1);
    format!("[{}]", vec![item; count].join(","))
}

const RESPONSE_RULES: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/"
upstream = "backend"
max_body_bytes = 65536
[[routes.plugins]]
plugin = "builtin:transform"
[routes.plugins.config.response]
headers = { set = { "x-transformed" = "yes" } }
[routes.plugins.config.response.body]
unwrap = "data.items"
remove = ["**.token", "*.owner.password"]
wrap = "items"
non_json = "reject"
"#;

fn expected_items() -> Value {
    json!({"items": [{"id": 1, "owner": {"name": "a", "session": {}}}, {"id": 2, "tags": ["x"]}]})
}

#[tokio::test]
async fn response_rules_unwrap_redact_and_wrap_with_an_exact_length() {
    let upstream = Upstream::with_handler(canned).await;
    let gw = Gateway::start(RESPONSE_RULES, Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/doc")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), expected_items());
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
    assert_eq!(r.header("x-transformed").as_deref(), Some("yes"));
    assert_eq!(r.header("etag"), None, "the upstream's validator does not describe the new body");
    gw.stop().await;
}

/// `statuses` limits the body rules to the answers they were written for: an upstream's error
/// body goes through as it came, where `unwrap` would have made it `{"items":null}`.
#[tokio::test]
async fn response_body_rules_can_be_limited_to_some_statuses() {
    let upstream = Upstream::with_handler(canned).await;
    for (statuses, error_body) in [("", json!({"items": null})), ("statuses = [\"2xx\"]", json!({"error": "db down"}))] {
        let config = RESPONSE_RULES.replace("non_json = \"reject\"", &format!("non_json = \"reject\"\n{statuses}"));
        let gw = Gateway::start(&config, Some(&upstream)).await;
        let client = HttpClient::http1();
        let r = client.get(&gw.url("/error")).await;
        assert_eq!(r.status, 503, "{statuses}: {}", r.text());
        assert_eq!(r.json(), error_body, "{statuses}");
        let r = client.get(&gw.url("/doc")).await;
        assert_eq!(r.json(), expected_items(), "{statuses}");
        gw.stop().await;
    }
}

/// A HEAD through body rules: there is no body to transform, so the answer claims no length
/// (not `Content-Length: 0`, nor the upstream's length of a body the rules would change).
#[tokio::test]
async fn a_head_through_body_rules_claims_no_length() {
    let upstream = Upstream::with_handler(canned).await;
    let gw = Gateway::start(RESPONSE_RULES, Some(&upstream)).await;
    let answer = airlock_tests::raw_exchange(gw.addr(), b"HEAD /doc HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("content-length"), "{answer}");
    let get = HttpClient::http1().get(&gw.url("/doc")).await;
    assert_eq!(get.json(), expected_items(), "the GET is transformed as before");
    gw.stop().await;
}

#[tokio::test]
async fn upstream_bodies_that_are_not_json_become_a_clear_502() {
    let upstream = Upstream::with_handler(canned).await;
    let gw = Gateway::start(RESPONSE_RULES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/broken")).await;
    assert_eq!(r.status, 502);
    let err = r.json();
    assert_eq!(err["error"], "upstream_invalid_json");
    assert_eq!(err["message"], "the upstream's response body is not valid JSON: EOF while parsing a list at line 1 column 14");
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
    let r = client.get(&gw.url("/text")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_not_json");
    gw.stop().await;
}

#[tokio::test]
async fn encoded_upstream_bodies_are_decoded_for_the_plugin_and_sent_identity() {
    let upstream = Upstream::with_handler(canned).await;
    let gw = Gateway::start(RESPONSE_RULES, Some(&upstream)).await;
    let client = HttpClient::http1();
    for coding in ["gzip", "deflate", "br"] {
        let r = client
            .request("GET", &gw.url(&format!("/{coding}")), &[("accept-encoding", "zstd, br, gzip;q=0.5, deflate")], b"")
            .await;
        assert_eq!(r.status, 200, "{coding}: {}", r.text());
        assert_eq!(r.json(), expected_items(), "{coding}");
        assert_eq!(r.header("content-encoding"), None, "{coding}: sent identity-encoded");
        assert_eq!(r.header("content-length"), Some(r.body.len().to_string()), "{coding}");
        assert_eq!(
            r.header("x-seen-accept-encoding").as_deref(),
            Some("br, gzip;q=0.5, deflate"),
            "the upstream is offered only codings the gateway decodes"
        );
    }

    // Decoded but not changed by any rule: the body is the upstream's, its ETag made weak.
    let untouched = catch_all("", r#"{ response = { body = { remove = ["nothing.here"] } } }"#);
    let gw2 = Gateway::start(&untouched, Some(&upstream)).await;
    let r = client.get(&gw2.url("/gzip")).await;
    assert_eq!(r.json(), document());
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("etag").as_deref(), Some("W/\"v1\""));
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
    gw.stop().await;
    gw2.stop().await;
}

#[tokio::test]
async fn gzip_request_bodies_are_decoded_for_the_plugin() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(BODY_POLICIES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let body = gzip(br#"{"password":"x","keep":true}"#);
    let r = client
        .request("POST", &gw.url("/strict"), &[("content-type", "application/json"), ("content-encoding", "gzip")], &body)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], r#"{"keep":true}"#);
    assert!(r.upstream_header("content-encoding").is_empty(), "sent upstream identity-encoded");
    assert_eq!(r.upstream_header("content-length"), ["13"]);

    let r = client
        .request("POST", &gw.url("/strict"), &[("content-type", "application/json"), ("content-encoding", "zstd")], b"x")
        .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"], "unsupported_encoding");
    let r = client
        .request("POST", &gw.url("/strict"), &[("content-type", "application/json"), ("content-encoding", "gzip")], b"nope")
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("request body is not valid gzip"), "{}", r.text());
    gw.stop().await;
}

fn limits() -> String {
    catch_all(
        "max_body_bytes = 65536",
        r#"{ request = { body = { remove = ["**.token"] } }, response = { body = { remove = ["*.token"] } } }"#,
    )
}

#[tokio::test]
async fn large_bodies_near_the_limit_are_transformed_and_over_it_refused() {
    let upstream = Upstream::with_handler(canned).await;
    let gw = Gateway::start(&limits(), Some(&upstream)).await;
    let client = HttpClient::http1();

    // Responses: just under the 64 KiB limit is transformed; over it is a 502.
    let r = client.get(&gw.url("/json/65000")).await;
    assert_eq!(r.status, 200);
    let items = r.json();
    let items = items.as_array().unwrap();
    assert!(items.len() > 1000);
    assert!(items.iter().all(|i| i.get("token").is_none() && i["id"] == 12345));
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
    let r = client.get(&gw.url("/json/70000")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_body_too_large");

    // Requests: under the limit goes through transformed; over it is a 413.
    let echo = Upstream::start().await;
    let gw2 = Gateway::start(&limits(), Some(&echo)).await;
    let under = json_of_size(65000);
    assert!(under.len() <= 65536);
    let r = client.request("POST", &gw2.url("/in"), &[("content-type", "application/json")], under.as_bytes()).await;
    assert_eq!(r.status, 200);
    let sent = r.json()["body"].as_str().unwrap().to_owned();
    assert!(!sent.contains("token") && sent.len() < under.len());
    assert_eq!(r.upstream_header("content-length"), [sent.len().to_string()]);
    let over = json_of_size(70000);
    let r = client.request("POST", &gw2.url("/in"), &[("content-type", "application/json")], over.as_bytes()).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    assert_eq!(echo.hits(), 1);
    gw.stop().await;
    gw2.stop().await;
}

/// A body the rules make longer than the route's `max_body_bytes` is not set, and the call
/// fails (500 `plugin_failed`, `too_large`): the request did go on with the client's own body
/// (and the response with the upstream's) while the call's other changes applied. Under
/// `failure = "open"` the call's changes are all undone instead.
#[tokio::test]
async fn a_body_made_past_the_routes_limit_fails_the_call_rather_than_go_on_with_the_old_one() {
    let padding = "p".repeat(300);
    let upstream = Upstream::start().await;
    let rules = format!(r#"{{ request = {{ headers = {{ set = {{ "x-translated" = "yes" }} }}, body = {{ set = {{ "pad" = "{padding}" }} }} }} }}"#);
    let gw = Gateway::start(&catch_all("max_body_bytes = 200", &rules), Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("POST", &gw.url("/in"), &[("content-type", "application/json")], br#"{"a": 1}"#).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (500, Some("plugin_failed")), "{}", r.text());
    assert_eq!(upstream.hits(), 0, "nothing reached the upstream");
    let m = client.get(&gw.admin_url("/metrics")).await.text();
    assert!(m.lines().any(|l| l.starts_with("airlock_plugin_failures_total{") && l.contains("kind=\"too_large\"") && l.ends_with(" 1")), "{m}");
    gw.stop().await;

    // Fail open: the call's changes undone, the request goes on as the client sent it.
    let open = catch_all("max_body_bytes = 200", &rules).replace("plugin = \"builtin:transform\"\n", "plugin = \"builtin:transform\"\nfailure = \"open\"\n");
    let gw = Gateway::start(&open, Some(&upstream)).await;
    let r = client.request("POST", &gw.url("/in"), &[("content-type", "application/json")], br#"{"a": 1}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.upstream_header("x-translated").is_empty(), "undone with the body");
    assert_eq!(echoed_body(&r), serde_json::json!({"a": 1}));
    gw.stop().await;

    // The response direction: a 500 rather than the upstream's body with the call's headers.
    let canned_upstream = Upstream::with_handler(canned).await;
    let rules = format!(r#"{{ response = {{ headers = {{ set = {{ "x-translated" = "yes" }} }}, body = {{ set = {{ "pad" = "{padding}" }} }} }} }}"#);
    let gw = Gateway::start(&catch_all("max_body_bytes = 200", &rules), Some(&canned_upstream)).await;
    let r = client.get(&gw.url("/doc")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (500, Some("plugin_failed")), "{}", r.text());
    assert_eq!(r.header("x-translated"), None);
    gw.stop().await;
}

/// A response body read whole for a plugin is held to the route's timeout, as its head is: an
/// upstream that sends a head and then stalls is a 504 once the timeout has passed, not a client
/// held until `timeouts.body_idle_ms` (5 minutes) with nothing sent.
#[tokio::test]
async fn a_body_read_for_a_plugin_is_held_to_the_routes_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stalling = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\"").await;
            held.push(stream);
        }
    });
    let config = format!(
        "[upstreams.backend]\ntargets = [\"{addr}\"]\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\ntimeout_ms = 600\n\
         [[routes.plugins]]\nplugin = \"builtin:transform\"\nconfig = {{ response = {{ body = {{ remove = [\"token\"] }} }} }}\n"
    );
    let gw = Gateway::start(&config, None).await;
    let started = std::time::Instant::now();
    let r = HttpClient::http1().get(&gw.url("/x")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (504, Some("upstream_timeout")), "{}", r.text());
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "answered at the route's timeout: {:?}", started.elapsed());
    gw.stop().await;
    stalling.abort();
}

#[tokio::test]
async fn without_body_rules_bodies_stream_untouched() {
    let upstream = Upstream::with_handler(canned).await;
    let config = catch_all(
        "max_body_bytes = 1024",
        r#"{ request = { headers = { set = { "x-a" = "1" } } }, response = { headers = { set = { "x-b" = "2" } }, body = { non_json = "pass" } } }"#,
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let inner = gw.inner();
    let chain = &inner.routes.routes()[0].chain;
    assert!(!chain.needs_request_body() && !chain.needs_response_body(), "no body rule: no buffering");

    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/gzip"), &[("accept-encoding", "zstd, gzip")], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"), "encoded body passed as it came");
    assert_eq!(&r.body[..], &gzip(document().to_string().as_bytes())[..]);
    assert_eq!(r.header("etag").as_deref(), Some("\"v1\""));
    assert_eq!(r.header("x-seen-accept-encoding").as_deref(), Some("zstd, gzip"), "accept-encoding untouched");
    assert_eq!(r.header("x-b").as_deref(), Some("2"));
    // Larger than the route's body limit, but streamed: never buffered, so not refused.
    let r = client.get(&gw.url("/json/5000")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), json_of_size(5000).len());
    gw.stop().await;
}

/// Header rules alone, every value a literal, are the same on every request: the plugin
/// declares them as fixed edits and the gateway makes them with no call into it (phases off).
#[tokio::test]
async fn literal_header_rules_alone_are_made_without_a_call() {
    let upstream = Upstream::start().await;
    let config = catch_all(
        "",
        r#"{ request = { headers = { remove = ["x-secret"], set = { "x-a" = "1" } } }, response = { headers = { append = { "x-b" = "2" } } } }"#,
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let phases: Vec<(bool, bool)> =
        gw.inner().routes.routes()[0].chain.entries().iter().map(|e| (e.descriptor.on_request, e.descriptor.on_response)).collect();
    assert_eq!(phases, [(false, false)], "the entry is never called");
    let client = HttpClient::http1();
    for _ in 0..2 {
        let r = client.request("GET", &gw.url("/x"), &[("x-secret", "s"), ("x-a", "client")], b"").await;
        assert_eq!(r.status, 200);
        assert!(r.upstream_header("x-secret").is_empty(), "removed");
        assert_eq!(r.upstream_header("x-a"), ["1"], "replaced");
        assert_eq!(r.header_all("x-b"), ["2"]);
    }
    let routes = client.get(&gw.admin_url("/admin/routes")).await.json();
    assert_eq!(routes["routes"][0]["chain"][0]["fixed_edits"], 3, "{routes}");
    gw.stop().await;
}

#[tokio::test]
async fn http2_clients_get_the_same_transformations() {
    let upstream = Upstream::with_handler(canned).await;
    let gw = Gateway::start(RESPONSE_RULES, Some(&upstream)).await;
    let r = HttpClient::http2().get(&gw.url("/gzip")).await;
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.json(), expected_items());
    gw.stop().await;
}

#[tokio::test]
async fn config_errors_name_the_route_the_plugin_and_the_key() {
    let config = r#"
[[routes]]
id = "bad"
path = "/x"
[[routes.plugins]]
plugin = "builtin:transform"
config = { response = { body = { set = { "items.*.id" = 1 } } } }
"#;
    let err = Gateway::try_start(config, None).await.err().expect("config must be rejected").to_string();
    assert!(err.contains("builtin:transform"), "{err}");
    assert!(
        err.contains("`response.body.set.items.*.id`: `items.*.id`: wildcards (`*`, `**`) are only allowed in `remove` and `rename`"),
        "{err}"
    );
}

/// Response body rules for 2xx JSON (`statuses`, `non_json = "pass"`) have no other response
/// buffered for them: a download and an error page, each longer than the route's body limit,
/// stream to the client whole (before, both were 502s past `max_body_bytes`), while a JSON
/// answer is still rewritten.
#[tokio::test]
async fn responses_the_body_rules_leave_alone_stream_unbuffered() {
    let upstream = Upstream::with_handler(|req: Request<Incoming>| async move {
        let (status, content_type, body) = match req.uri().path() {
            "/download" => (200, "application/octet-stream", vec![b'x'; 5000]),
            "/missing" => (404, "application/json", vec![b'y'; 5000]),
            _ => (200, "application/json", br#"{"secret":1,"kept":2}"#.to_vec()),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response.headers_mut().insert("content-type", content_type.parse().unwrap());
        response
    })
    .await;
    let config = format!(
        "[limits]\nmax_body_bytes = 1000\n\n{}",
        catch_all("", r#"{ response = { body = { remove = ["secret"], statuses = ["2xx"] } } }"#)
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/download")).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 5000), "{}", r.text());
    let r = client.get(&gw.url("/missing")).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (404, 5000), "{}", r.text());
    let r = client.get(&gw.url("/doc")).await;
    assert_eq!(r.json(), json!({"kept": 2}));
    gw.stop().await;
}

/// A body the gateway changed carries no digest of the body it replaced, either way
/// (`Content-Digest`, `Repr-Digest`, `Digest`, `Content-MD5`): an upstream verifying them (or
/// HTTP message signatures, which bind the body through `Content-Digest`) would refuse it.
/// Other headers go on as they came.
#[tokio::test]
async fn a_changed_body_carries_no_digest_of_the_old_one() {
    let upstream = Upstream::with_handler(|req: Request<Incoming>| async move {
        let digests: Vec<String> = ["content-digest", "repr-digest", "digest", "content-md5"]
            .into_iter()
            .filter(|name| req.headers().contains_key(*name))
            .map(str::to_owned)
            .collect();
        let mut response = Response::new(Full::new(Bytes::from(json!({"secret": 1, "digests_seen": digests}).to_string())));
        let h = response.headers_mut();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("content-digest", "sha-256=:AAAA:".parse().unwrap());
        h.insert("digest", "sha-256=AAAA".parse().unwrap());
        h.insert("content-md5", "AAAA".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        response
    })
    .await;
    let config = catch_all("", r#"{ request = { body = { remove = ["password"] } }, response = { body = { remove = ["secret"] } } }"#);
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let sent = [
        ("content-type", "application/json"),
        ("content-digest", "sha-256=:BBBB:"),
        ("repr-digest", "sha-256=:BBBB:"),
        ("digest", "sha-256=BBBB"),
        ("content-md5", "BBBB"),
        ("x-client", "1"),
    ];
    let r = HttpClient::http1().request("POST", &gw.url("/x"), &sent, br#"{"password":"p","name":"n"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"digests_seen": []}), "none reached the upstream");
    for name in ["content-digest", "repr-digest", "digest", "content-md5"] {
        assert_eq!(r.header(name), None, "{name} of the upstream's body");
    }
    assert_eq!(r.header("x-kept").as_deref(), Some("1"));
    gw.stop().await;
}

/// An event stream is no way past rules that refuse what is not JSON (`non_json = "reject"`):
/// it is read whole as any body and refused, not streamed past them.
#[tokio::test]
async fn an_event_stream_does_not_slip_past_non_json_reject() {
    let upstream = Upstream::with_handler(|_req: Request<Incoming>| async move {
        let mut response = Response::new(Full::new(Bytes::from_static(b"data: {\"password\":\"p\"}\n\n")));
        response.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
        response
    })
    .await;
    let config = catch_all("", r#"{ response = { body = { remove = ["password"], non_json = "reject" } } }"#);
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/events")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(!r.text().contains("password"), "{}", r.text());
    gw.stop().await;
}
