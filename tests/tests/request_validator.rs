//! `builtin:request-validator` end to end: a real upstream that receives valid requests as
//! they were sent and never sees refused ones, JSON bodies against JSON Schemas (inline, JSON
//! text, granted file), query, header and path parameters converted and validated, content
//! types, encoded and hostile bodies, and config errors at their line.

use std::io::Write as _;

use airlock_tests::{Gateway, HttpClient, Reply, Upstream};
use serde_json::{Value, json};

const ROUTES: &str = r##"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
id = "users"
path = "/users"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:request-validator"
[routes.plugins.config]
body_schema = { type = "object", required = ["name", "age"], additionalProperties = false, properties = { name = { type = "string", minLength = 1 }, age = { type = "integer", minimum = 0 }, tags = { type = "array", items = { type = "string" } }, address = { type = "object", properties = { zip = { type = "string", pattern = "^[0-9]{5}$" } } } } }

[[routes]]
id = "quiet"
path = "/quiet"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:request-validator"
[routes.plugins.config]
verbose = false
body_schema = { type = "object", required = ["name"] }
parameters = [{ name = "limit", in = "query", schema = { type = "integer", maximum = 10 } }]

[[routes]]
id = "patch"
path = "/patch"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:request-validator"
[routes.plugins.config]
body_required = false
content_types = ["application/json", "application/*+json"]
body_schema = '''{"type": ["object", "null"], "properties": {"note": {"type": ["string", "null"]}}}'''

[[routes]]
id = "items"
path = "/items/{id}"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:request-validator"
[[routes.plugins.config.parameters]]
name = "id"
in = "path"
schema = { type = "integer", minimum = 1 }
[[routes.plugins.config.parameters]]
name = "limit"
in = "query"
required = true
schema = { type = "integer", maximum = 100 }
[[routes.plugins.config.parameters]]
name = "tag"
in = "query"
schema = { type = "array", items = { type = "integer" }, maxItems = 3 }
[[routes.plugins.config.parameters]]
name = "debug"
in = "query"
schema = { type = "boolean" }
[[routes.plugins.config.parameters]]
name = "q"
in = "query"
schema = { type = "string", maxLength = 5 }
[[routes.plugins.config.parameters]]
name = "X-Api-Version"
in = "header"
required = true
schema = { enum = ["1", "2"] }
[[routes.plugins.config.parameters]]
name = "x-flags"
in = "header"
schema = { type = "array", items = { enum = ["a", "b"] } }

[[routes]]
id = "tree"
path = "/tree"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:request-validator"
config = { body_schema = { "$ref" = "#/$defs/node", "$defs" = { node = { type = ["array", "integer"], items = { "$ref" = "#/$defs/node" } } } } }

[[routes]]
id = "money"
path = "/money"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:request-validator"
[routes.plugins.config]
body_required = false
body_schema = { type = "object", properties = { price = { type = "number", multipleOf = 0.01 }, role = { enum = ["user"] }, login = { type = "string", pattern = '^\S+$' }, loop = { "$ref" = "#/properties/loop" }, items = { type = "array" } } }
parameters = [{ name = "tag", in = "query", schema = { type = "array", items = { type = "string", maxLength = 3 } } }]

[[routes]]
id = "uncaptured"
path = "/things"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:request-validator"
config = { parameters = [{ name = "id", in = "path" }] }
"##;

const JSON: (&str, &str) = ("content-type", "application/json");

/// A POST of `body` with `headers` to `path`.
async fn post(client: &HttpClient, gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    client.request("POST", &gw.url(path), headers, body).await
}

/// One of a 400's `errors`: (in, name, pointer, message).
type Listed = (String, Option<String>, String, String);

/// A request to a parameter route: path and query, headers, and the errors its 400 lists.
type Case = (&'static str, Vec<(&'static str, &'static str)>, Vec<Listed>);

/// A 400 from the plugin: its `errors`.
fn errors(r: &Reply) -> Vec<Listed> {
    assert_eq!(r.status.as_u16(), 400, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert_eq!(body["status"], 400);
    assert_eq!(body["request_id"].as_str(), r.header("x-request-id").as_deref(), "{body}");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {body}"))
        .iter()
        .map(|e| (text(&e["in"]), e["name"].as_str().map(str::to_owned), text(&e["pointer"]), text(&e["message"])))
        .collect()
}

fn body_error(pointer: &str, message: &str) -> Listed {
    ("body".to_owned(), None, pointer.to_owned(), message.to_owned())
}

fn param_error(place: &str, name: &str, pointer: &str, message: &str) -> Listed {
    (place.to_owned(), Some(name.to_owned()), pointer.to_owned(), message.to_owned())
}

#[tokio::test]
async fn a_valid_body_reaches_the_upstream_unchanged() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    // Kept byte for byte: spacing, key order, the charset parameter.
    let body = "{ \"age\": 30,\n  \"name\": \"Ada\", \"tags\": [\"x\"] }";
    let r = post(&client, &gw, "/users", &[("content-type", "Application/JSON; charset=utf-8")], body.as_bytes()).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["body"], body);
    assert_eq!(r.upstream_header("content-type"), ["Application/JSON; charset=utf-8"]);
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_invalid_body_is_a_400_listing_pointers_and_messages_and_never_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = post(&client, &gw, "/users", &[JSON], br#"{"name": "", "age": -1, "address": {"zip": "1234"}, "extra": true}"#).await;
    let found = errors(&r);
    for expected in [
        body_error("/name", "length must be >=1, but got 0"),
        body_error("/age", "must be >=0, but got -1"),
        body_error("/address/zip", "'1234' does not match pattern '^[0-9]{5}$'"),
        body_error("", "additionalProperties 'extra' not allowed"),
    ] {
        assert!(found.contains(&expected), "{expected:?} not in {found:?}");
    }
    assert_eq!(found.len(), 4, "{found:?}");
    let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.starts_with("request body") && message.ends_with("(and 3 more)"), "{message}");
    // The root: a missing property, a wrong type.
    let r = post(&client, &gw, "/users", &[JSON], br#"{"name": "Ada"}"#).await;
    assert_eq!(errors(&r), [body_error("", "missing properties 'age'")]);
    assert_eq!(r.json()["message"], "request body: missing properties 'age'");
    let r = post(&client, &gw, "/users", &[JSON], b"[1, 2]").await;
    assert_eq!(errors(&r), [body_error("", "want object, but got array")]);
    // At most 10 listed, the rest counted.
    let many: Vec<u32> = (0..25).collect();
    let r = post(&client, &gw, "/users", &[JSON], json!({"name": "a", "age": 1, "tags": many}).to_string().as_bytes()).await;
    let found = errors(&r);
    assert_eq!(found.len(), 10);
    assert_eq!(found[3], body_error("/tags/3", "want string, but got number"));
    assert_eq!(r.json()["errors_omitted"], 15);
    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn malformed_json_missing_bodies_and_content_types() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = post(&client, &gw, "/users", &[JSON], br#"{"name": "Ada", "age": 3"#).await;
    let found = errors(&r);
    assert_eq!(found.len(), 1);
    assert!(found[0].3.starts_with("the request body is not valid JSON: EOF while parsing"), "{found:?}");
    assert_eq!(r.json()["message"].as_str(), Some(found[0].3.as_str()));
    let r = post(&client, &gw, "/users", &[JSON], br#"{"name": "Ada", "age": 3} trailing"#).await;
    assert!(errors(&r)[0].3.contains("trailing characters"), "{}", r.text());
    // No body, or only whitespace: required by default.
    for blank in [&b""[..], b" \r\n "] {
        let r = post(&client, &gw, "/users", &[JSON], blank).await;
        assert_eq!(errors(&r), [body_error("", "request body is required")]);
        assert_eq!(r.json()["message"], "request body is required");
    }
    let r = client.get(&gw.url("/users")).await;
    assert_eq!(r.json()["message"], "request body is required");
    // A body of another media type, or of none: 415.
    for headers in [&[("content-type", "text/plain")][..], &[("content-type", "application/merge-patch+json")], &[]] {
        let r = post(&client, &gw, "/users", headers, br#"{"name": "Ada", "age": 3}"#).await;
        assert_eq!(r.status.as_u16(), 415, "{headers:?}: {}", r.text());
        let body = r.json();
        assert_eq!(body["error"], "unsupported_media_type");
        assert!(body["message"].as_str().unwrap_or_default().ends_with("(accepted: application/json)"), "{body}");
        assert!(body["request_id"].is_string());
    }
    let r = post(&client, &gw, "/users", &[("content-type", "text/plain")], br#"{"name": "Ada", "age": 3}"#).await;
    assert_eq!(r.json()["message"], "content type `text/plain` is not accepted (accepted: application/json)");
    assert_eq!(upstream.hits(), 0);

    // `body_required = false`: no body passes unvalidated; listed suffix types; a JSON-text schema.
    let r = client.request("DELETE", &gw.url("/patch"), &[], b"").await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let r = post(&client, &gw, "/patch", &[("content-type", "application/merge-patch+json")], br#"{"note": null}"#).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let r = post(&client, &gw, "/patch", &[JSON], b"null").await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let r = post(&client, &gw, "/patch", &[JSON], br#"{"note": 5}"#).await;
    assert_eq!(errors(&r), [body_error("/note", "want null or string, but got number")]);
    let r = post(&client, &gw, "/patch", &[("content-type", "text/json")], b"{}").await;
    assert_eq!(r.status.as_u16(), 415);
    assert_eq!(upstream.hits(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn parameters_are_converted_by_their_type_and_validated() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let v1 = ("x-api-version", "1");
    let get = |path: &str, headers: Vec<(&'static str, &'static str)>| {
        let (client, url) = (client.clone(), gw.url(path));
        async move { client.request("GET", &url, &headers, b"").await }
    };
    // Valid: numbers, booleans, arrays (repeated or comma-separated), form-decoded values.
    for path in ["/items/7?limit=%35", "/items/7?limit=100&tag=1&tag=2&debug=true", "/items/7?limit=1&tag=1,2,3&q=a+b", "/items/7?limit=-3&debug=false"] {
        let r = get(path, vec![v1, ("x-flags", "a, b")]).await;
        assert_eq!(r.status.as_u16(), 200, "{path}: {}", r.text());
    }
    let r = get("/items/7?limit=5&tag=1,2", vec![("X-API-Version", "2"), ("x-flags", "a"), ("x-flags", "b,a")]).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["query"], "limit=5&tag=1,2", "the request goes on as it came");
    let hits = upstream.hits();

    let cases: Vec<Case> = vec![
        ("/items/abc?limit=1", vec![v1], vec![param_error("path", "id", "", "want integer, but got string")]),
        ("/items/0?limit=1", vec![v1], vec![param_error("path", "id", "", "must be >=1, but got 0")]),
        ("/items/7?limit=many", vec![v1], vec![param_error("query", "limit", "", "want integer, but got string")]),
        ("/items/7?limit=1.5", vec![v1], vec![param_error("query", "limit", "", "want integer, but got number")]),
        ("/items/7?limit=101", vec![v1], vec![param_error("query", "limit", "", "must be <=100, but got 101")]),
        ("/items/7", vec![v1], vec![param_error("query", "limit", "", "required parameter is missing")]),
        ("/items/7?limit=1&limit=2", vec![v1], vec![param_error("query", "limit", "", "given 2 times; the schema takes one value")]),
        ("/items/7?limit=1&tag=1,x", vec![v1], vec![param_error("query", "tag", "/1", "want integer, but got string")]),
        ("/items/7?limit=1&tag=1&tag=2&tag=3&tag=4", vec![v1], vec![param_error("query", "tag", "", "maximum 3 items required, but got 4 items")]),
        ("/items/7?limit=1&debug=yes", vec![v1], vec![param_error("query", "debug", "", "want boolean, but got string")]),
        ("/items/7?limit=1&q=a%20long+value", vec![v1], vec![param_error("query", "q", "", "length must be <=5, but got 12")]),
        ("/items/7?limit=1", vec![], vec![param_error("header", "X-Api-Version", "", "required parameter is missing")]),
        ("/items/7?limit=1", vec![("x-api-version", "3")], vec![param_error("header", "X-Api-Version", "", "value must be one of '1', '2'")]),
        ("/items/7?limit=1", vec![v1, ("x-api-version", "2")], vec![param_error("header", "X-Api-Version", "", "given 2 times; the schema takes one value")]),
        ("/items/7?limit=1", vec![v1, ("x-flags", "a"), ("x-flags", "b, c")], vec![param_error("header", "x-flags", "/2", "value must be one of 'a', 'b'")]),
        (
            "/items/x?limit=x",
            vec![],
            vec![
                param_error("path", "id", "", "want integer, but got string"),
                param_error("query", "limit", "", "want integer, but got string"),
                param_error("header", "X-Api-Version", "", "required parameter is missing"),
            ],
        ),
        ("/things", vec![], vec![param_error("path", "id", "", "required parameter is missing")]),
    ];
    for (path, headers, expected) in cases {
        let r = get(path, headers.clone()).await;
        assert_eq!(errors(&r), expected, "{path} {headers:?}");
    }
    let r = get("/items/7", vec![]).await;
    assert_eq!(r.json()["message"], "missing required query parameter `limit` (and 1 more)");
    let r = get("/items/7?limit=1&tag=1,x", vec![v1]).await;
    assert_eq!(r.json()["message"], "query parameter `tag` at `/1`: want integer, but got string");
    assert_eq!(upstream.hits(), hits, "no refused request reached the upstream");
    gw.stop().await;
}

#[tokio::test]
async fn not_verbose_answers_only_a_generic_message() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    for (path, body) in [("/quiet", &br#"{"nom": 1}"#[..]), ("/quiet?limit=11", br#"{"name": 1}"#), ("/quiet", b"{"), ("/quiet", b"")] {
        let r = post(&client, &gw, path, &[JSON], body).await;
        assert_eq!(r.status.as_u16(), 400, "{path}");
        let request_id = r.header("x-request-id").unwrap_or_default();
        assert_eq!(
            r.json(),
            json!({"status": 400, "error": "invalid_request", "message": "request validation failed", "request_id": request_id}),
            "{path} {}",
            String::from_utf8_lossy(body)
        );
    }
    let r = post(&client, &gw, "/quiet?limit=10", &[JSON], br#"{"name": 1}"#).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_gzip_body_is_validated_decoded() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let valid = br#"{"name": "Ada", "age": 36}"#;
    let r = post(&client, &gw, "/users", &[JSON, ("content-encoding", "gzip")], &gzip(valid)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json()["body"], String::from_utf8_lossy(valid).as_ref(), "sent on decoded");
    let r = post(&client, &gw, "/users", &[JSON, ("content-encoding", "gzip")], &gzip(br#"{"name": "Ada", "age": "36"}"#)).await;
    assert_eq!(errors(&r), [body_error("/age", "want integer, but got string")]);
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_deeply_nested_body_is_a_400_and_the_gateway_keeps_serving() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    for hostile in ["[".repeat(10_000), "{\"a\":".repeat(10_000), format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))] {
        let r = post(&client, &gw, "/users", &[JSON], hostile.as_bytes()).await;
        let found = errors(&r);
        assert!(found.len() == 1 && found[0].3.starts_with("the request body is not valid JSON: recursion limit exceeded"), "{found:?}");
    }
    // As deep as the parser takes, against a recursive schema: validated to the bottom.
    let deepest = |leaf: &str| format!("{}{leaf}{}", "[".repeat(127), "]".repeat(127));
    let r = post(&client, &gw, "/tree", &[JSON], deepest("1").as_bytes()).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let r = post(&client, &gw, "/tree", &[JSON], deepest("\"x\"").as_bytes()).await;
    assert_eq!(errors(&r), [body_error(&"/0".repeat(127), "want integer or array, but got string")]);
    let r = post(&client, &gw, "/users", &[JSON], br#"{"name": "Ada", "age": 36}"#).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn decimals_duplicate_keys_unicode_spaces_and_encoded_commas_are_read_as_the_upstream_would() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    // `multipleOf` on decimal values: 19.99 is a multiple of 0.01 (not in f64 division).
    for price in ["19.99", "0.07", "4.35", "100.01", "-0.29"] {
        let r = post(&client, &gw, "/money", &[JSON], format!(r#"{{"price": {price}}}"#).as_bytes()).await;
        assert_eq!(r.status.as_u16(), 200, "{price}: {}", r.text());
    }
    let r = post(&client, &gw, "/money", &[JSON], br#"{"price": 19.999}"#).await;
    assert_eq!(errors(&r), [body_error("/price", "19.999 is not multipleOf 0.01")]);
    let hits = upstream.hits();
    // A key twice in an object: refused, wherever the object is, before the schema runs.
    let r = post(&client, &gw, "/money", &[JSON], br#"{"role": "admin", "role": "user"}"#).await;
    assert_eq!(errors(&r), [body_error("", r#"the key "role" is given more than once in this object"#)]);
    let r = post(&client, &gw, "/money", &[JSON], br#"{"items": [{}, {"a": 1, "b": 2, "a": 3}]}"#).await;
    assert_eq!(errors(&r), [body_error("/items/1", r#"the key "a" is given more than once in this object"#)]);
    // `\S` is ECMA-262's: no Unicode space of any kind.
    for space in [r"\u3000", r"\u2000", r"\u1680", r"\u202f", r"\u2028", r"\t"] {
        let r = post(&client, &gw, "/money", &[JSON], format!(r#"{{"login": "a{space}b"}}"#).as_bytes()).await;
        assert_eq!(r.status.as_u16(), 400, "{space}: {}", r.text());
    }
    let r = post(&client, &gw, "/money", &[JSON], br#"{"login": "a b"}"#).await;
    assert_eq!(errors(&r), [body_error("/login", r"'a b' does not match pattern '^\\S+$'")], "the pattern as written");
    // An encoded comma is part of an item, not a separator.
    let r = client.get(&gw.url("/money?tag=abc%2Cdef")).await;
    assert_eq!(errors(&r), [param_error("query", "tag", "/0", "length must be <=3, but got 7")]);
    assert_eq!(upstream.hits(), hits, "none refused reached the upstream");
    let r = client.get(&gw.url("/money?tag=abc,de%2B")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    // A reference loop no value reached at configure: the client learns nothing of the schema.
    let r = post(&client, &gw, "/money", &[JSON], br#"{"loop": 1}"#).await;
    let found = errors(&r);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].3.contains("configuration error"), "{found:?}");
    assert!(!r.text().contains("request-validator.invalid") && !r.text().contains("$ref"), "{}", r.text());
    gw.stop().await;
}

/// `file:<path>` reads the schema from the directory granted to a `[plugins.<name>]` definition;
/// without a grant it is a config error.
#[tokio::test]
async fn a_schema_can_be_read_from_a_granted_file() {
    let upstream = Upstream::start().await;
    let granted = tempfile::tempdir().unwrap();
    std::fs::create_dir(granted.path().join("schemas")).unwrap();
    let schema = r##"{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "required": ["sku"],
        "properties": {"sku": {"$ref": "#/definitions/sku"}, "note": {"type": ["string", "null"]}},
        "definitions": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}}}"##;
    std::fs::write(granted.path().join("schemas/order.json"), schema).unwrap();
    let config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.orders-validator]
source = "builtin:request-validator"
capabilities = ["files"]
files = {{ dir = "{}" }}

[[routes]]
path = "/orders"
upstream = "backend"
[[routes.plugins]]
plugin = "orders-validator"
config = {{ body_schema = "file:schemas/order.json", parameters = [{{ name = "dry_run", in = "query", schema = "file:/schemas/flag.json" }}] }}
"#,
        granted.path().display()
    );
    std::fs::write(granted.path().join("schemas/flag.json"), r#"{"type": "boolean"}"#).unwrap();
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = post(&client, &gw, "/orders?dry_run=true", &[JSON], br#"{"sku": "ABC-12", "note": null}"#).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let r = post(&client, &gw, "/orders?dry_run=1", &[JSON], br#"{"sku": "abc"}"#).await;
    assert_eq!(
        errors(&r),
        [body_error("/sku", "'abc' does not match pattern '^[A-Z]{3}-[0-9]+$'"), param_error("query", "dry_run", "", "want boolean, but got string")]
    );
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;

    let missing = config.replace("file:schemas/order.json", "file:schemas/nope.json");
    let err = Gateway::try_start(&missing, Some(&upstream)).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("`body_schema`: cannot read `schemas/nope.json`"), "{err}");
    // The built-in written straight in a chain has no grant: it reads nothing.
    let ungranted = format!(
        "[upstreams.backend]\ntargets = [\"{{upstream}}\"]\n[[routes]]\npath = \"/orders\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"builtin:request-validator\"\nconfig = {{ body_schema = \"file:{}\" }}\n",
        granted.path().join("schemas/order.json").display()
    );
    let err = Gateway::try_start(&ungranted, Some(&upstream)).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("airlock.toml:11:") && err.contains("`body_schema`: cannot read"), "{err}");
}

#[tokio::test]
async fn bad_configs_are_refused_at_their_line_naming_the_key() {
    let upstream = Upstream::start().await;
    let route = |config: &str| format!("[[routes]]\npath = \"/\"\nupstream = \"backend\"\n[[routes.plugins]]\nplugin = \"builtin:request-validator\"\n[routes.plugins.config]\n{config}\n[upstreams.backend]\ntargets = [\"{{upstream}}\"]\n");
    // The harness puts 3 lines of listener before the config: its line 7 is airlock.toml:10.
    for (config, line, expected) in [
        ("body_schema = { type = \"object\", properties = { age = { minimum = \"0\" } } }", 10, "`body_schema.properties.age.minimum`: not a valid JSON Schema: want number, but got string"),
        ("[routes.plugins.config.body_schema.properties.name]\npattern = \"(?<!x)y\"", 11, "`body_schema.properties.name.pattern`: not a valid JSON Schema: '(?<!x)y' is not valid regex: look-around"),
        ("body_schema = { \"$ref\" = \"https://schemas.example.com/user.json\" }", 10, "put that schema under `$defs`"),
        ("body_schema = \"{ not json\"", 10, "`body_schema`: the string is not a JSON document"),
        ("verbose = false\nbody_shema = {}", 11, "`body_shema`: unknown field `body_shema`"),
        ("[[routes.plugins.config.parameters]]\nname = \"id\"\nin = \"cookie\"", 12, "`parameters[0].in`: unknown variant `cookie`, expected one of `query`, `header`, `path`"),
        (
            "parameters = [\n  { name = \"X-Id\", in = \"header\" },\n  { name = \"x-id\", in = \"header\" },\n]",
            12,
            "`parameters[1]`: header parameter `x-id` is already `parameters[0]`",
        ),
        ("parameters = [{ name = \"limit\", in = \"query\", schema = { type = \"integer\", maximum = \"ten\" } }]", 10, "`parameters[0].schema.maximum`: not a valid JSON Schema"),
        ("content_types = [\"application/json\"]\nparameters = [{ name = \"q\", in = \"query\" }]", 10, "`content_types` goes with `body_schema`"),
        ("verbose = true", 9, "nothing to validate: give `body_schema` and/or `parameters`"),
        ("body_schema = { \"$ref\" = \"#\" }", 10, "`body_schema`: the schema's references loop without reading the value"),
        (
            r##"body_schema = '''{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}'''"##,
            10,
            "`body_schema`: the schema's references loop without reading the value",
        ),
        ("parameters = [{ name = \"id\", in = \"query\", schema = { \"$ref\" = \"#\" } }]", 10, "`parameters[0].schema`: the schema's references loop"),
        ("body_schema = { properties = { a = { \"$ref\" = \"#/$defs/nope\" } } }", 10, "`body_schema`: at `/properties/a/$ref`: `#/$defs/nope` refers to nothing in the schema"),
        ("body_schema = { properties = { a = { pattern = \"^(a{1000}){1000}$\" } } }", 10, "`body_schema.properties.a.pattern`: `^(a{1000}){1000}$` is not a regex the plugin can run"),
    ] {
        let err = Gateway::try_start(&route(config), Some(&upstream)).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains(&format!("airlock.toml:{line}:")) && err.contains("`routes[0].plugins[0].config`") && err.contains(expected),
            "{config}\n=> {err}"
        );
    }
    assert_eq!(upstream.hits(), 0);
}
