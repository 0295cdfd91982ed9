//! Proxy core, end to end: routing, proxy header semantics, limits, timeouts and upstream errors,
//! HTTP/2 clients, graceful shutdown. A real upstream, the real gateway, real clients.

use std::time::Duration;

use airlock_tests::{Gateway, HttpClient, Reply, Upstream, metric_value};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
id = "prefix"
path_prefix = "/api"
upstream = "backend"

[[routes]]
id = "user"
path = "/api/users/{id}"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.request.set]
"x-route" = "${route}"
"x-user" = "${param.id}"

[[routes]]
id = "me"
path = "/api/users/me"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.request.set]
"x-route" = "${route}"

[[routes]]
id = "post-only"
path = "/api/items"
methods = ["POST"]
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.request.set]
"x-route" = "${route}"

[[routes]]
id = "host-specific"
hosts = ["special.example"]
path_prefix = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.request.set]
"x-route" = "${route}"

[[routes]]
id = "stripped"
path_prefix = "/strip"
strip_prefix = "/strip"
upstream = "backend"

[[routes]]
id = "rewritten"
path = "/old/{id}"
rewrite = "/new/items/${param.id}"
upstream = "backend"

# nginx's `location /v1/ { proxy_pass http://up/v2/; }`.
[[routes]]
id = "swapped"
path_prefix = "/v1"
prefix_rewrite = "/v2"
upstream = "backend"

[[routes]]
id = "swapped-to-root"
path_prefix = "/outer/v1"
prefix_rewrite = "/"
upstream = "backend"

[[routes]]
id = "swapped-with-slashes"
path_prefix = "/slashed/"
prefix_rewrite = "/v2/"
upstream = "backend"

[[routes]]
id = "rewritten-with-query"
path = "/q/{id}"
rewrite = "/v2/items/${param.id}?from=gw"
upstream = "backend"

[[routes]]
id = "param-in-query"
path = "/who/{id}"
rewrite = "/v2/users?user=${param.id}"
upstream = "backend"
"#;

#[tokio::test]
async fn routing_priority_params_and_path_rewrites() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();

    let r = client.get(&gw.url("/api/users/42")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-route"), vec!["user"]);
    assert_eq!(r.upstream_header("x-user"), vec!["42"]);

    let r = client.get(&gw.url("/api/users/me")).await;
    assert_eq!(r.upstream_header("x-route"), vec!["me"], "static segment beats param");

    let r = client.get(&gw.url("/api/users/42/orders")).await;
    assert!(r.upstream_header("x-route").is_empty(), "the prefix route has no plugins");
    assert_eq!(r.json()["path"], "/api/users/42/orders");

    let r = client.request("POST", &gw.url("/api/items"), &[], b"").await;
    assert_eq!(r.upstream_header("x-route"), vec!["post-only"]);
    let r = client.get(&gw.url("/api/items")).await;
    assert!(r.upstream_header("x-route").is_empty(), "GET falls back to the prefix route");

    let r = client.request("GET", &gw.url("/api/users/42"), &[("host", "special.example")], b"").await;
    assert_eq!(r.upstream_header("x-route"), vec!["host-specific"], "host beats path");

    let r = client.get(&gw.url("/strip/a/b?q=1")).await;
    assert_eq!(r.json()["path"], "/a/b");
    assert_eq!(r.json()["query"], "q=1");
    let r = client.get(&gw.url("/strip")).await;
    assert_eq!(r.json()["path"], "/");

    let r = client.get(&gw.url("/old/7")).await;
    assert_eq!(r.json()["path"], "/new/items/7");
    // A param's bytes go on as they came: UTF-8 re-encoded, and bytes that are no text once
    // decoded refused (made text, `%FF` and `%FE` both reached the upstream as `%EF%BF%BD`).
    let r = client.get(&gw.url("/old/caf%C3%A9")).await;
    assert_eq!(r.json()["path"], "/new/items/caf%C3%A9");
    let hits = upstream.hits();
    let r = client.get(&gw.url("/old/%FF")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (400, Some("bad_request")), "{}", r.text());
    assert_eq!(upstream.hits(), hits, "not sent upstream");

    let r = client.get(&gw.url("/nothing-here")).await;
    assert_eq!(r.status, 404);
    let body = r.json();
    assert_eq!(body["error"], "no_route");
    assert_eq!(body["request_id"].as_str(), r.header("x-request-id").as_deref());
    gw.stop().await;
}

/// `prefix_rewrite` swaps the prefix the route matched and keeps the rest of the path and the
/// query (nginx's `proxy_pass http://up/v2/` under `location /v1/`), joined with one `/`; a
/// `rewrite` with a query of its own gets the client's after a `&`, as nginx joins them.
#[tokio::test]
async fn prefix_rewrite_swaps_the_prefix_and_a_rewrite_query_takes_the_clients_after_it() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let sent = |r: &Reply| (r.json()["path"].as_str().map(str::to_owned), r.json()["query"].as_str().map(str::to_owned));
    let path = |p: &str| (Some(p.to_owned()), None);
    let with = |p: &str, q: &str| (Some(p.to_owned()), Some(q.to_owned()));

    for (asked, expected) in [
        ("/v1/items/3?x=1", with("/v2/items/3", "x=1")),
        ("/v1", path("/v2")),
        ("/v1/", path("/v2/")),
        ("/v1?x=1&y=2", with("/v2", "x=1&y=2")),
        // Swapped on the normalized path the route matched.
        ("/%76%31/a/../items", path("/v2/items")),
        ("/outer/v1/items?x=1", with("/items", "x=1")),
        ("/outer/v1", path("/")),
        ("/outer/v1/", path("/")),
        ("/slashed/items", path("/v2/items")),
        ("/slashed", path("/v2/")),
        ("/q/42?x=1", with("/v2/items/42", "from=gw&x=1")),
        ("/q/42", with("/v2/items/42", "from=gw")),
        // A param in a rewrite's query stays one parameter.
        ("/who/a%26admin%3D1?x=1", with("/v2/users", "user=a%26admin%3D1&x=1")),
    ] {
        let r = client.get(&gw.url(asked)).await;
        assert_eq!(r.status, 200, "{asked}: {}", r.text());
        assert_eq!(sent(&r), expected, "{asked}");
    }
    // Prefixes match on segment boundaries: `/v1x` is not under `/v1`.
    assert_eq!(client.get(&gw.url("/v1x/items")).await.status, 404);
    gw.stop().await;
}

#[tokio::test]
async fn a_header_condition_sends_canary_requests_to_their_own_upstream() {
    let stable = Upstream::start().await;
    let canary = Upstream::start().await;
    let config = format!(
        r#"
[upstreams.stable]
targets = ["{}"]
[upstreams.canary]
targets = ["{}"]

[[routes]]
id = "users"
path = "/users/{{id}}"
upstream = "stable"

[[routes]]
id = "users-canary"
path = "/users/{{id}}"
headers = {{ x-canary = ["1", "true"] }}
upstream = "canary"

[[routes]]
id = "v2"
path_prefix = "/"
headers = {{ accept-version = "2" }}
upstream = "canary"
"#,
        stable.addr, canary.addr
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/users/1")).await.status, 200);
    assert_eq!((stable.hits(), canary.hits()), (1, 0));
    for value in ["1", "true"] {
        let r = client.request("GET", &gw.url("/users/2"), &[("x-canary", value)], b"").await;
        assert_eq!(r.status, 200);
    }
    assert_eq!((stable.hits(), canary.hits()), (1, 2));
    let r = client.request("GET", &gw.url("/users/3"), &[("x-canary", "0")], b"").await;
    assert_eq!((r.status.as_u16(), stable.hits(), canary.hits()), (200, 2, 2), "values match exactly");
    // A prefix route taken only with its header; without it, nothing else matches.
    let r = client.request("GET", &gw.url("/orders"), &[("accept-version", "2")], b"").await;
    assert_eq!((r.status.as_u16(), canary.hits()), (200, 3));
    assert_eq!(client.get(&gw.url("/orders")).await.status, 404);
    // The routes listing shows the condition.
    let routes = client.get(&gw.admin_url("/admin/routes")).await.json();
    let canary_route = routes["routes"].as_array().unwrap().iter().find(|r| r["id"] == "users-canary").unwrap().clone();
    assert_eq!(canary_route["headers"], serde_json::json!({ "x-canary": ["1", "true"] }));
    gw.stop().await;
}

/// A condition on a name with `_` is taken only where such headers reach the upstream
/// (`headers_with_underscores = "allow"`; refused at load otherwise: `bad-route-header-*`), and
/// there the route is chosen on the header the upstream gets.
#[tokio::test]
async fn an_underscored_header_condition_routes_on_what_the_upstream_gets() {
    let stable = Upstream::start().await;
    let tenant = Upstream::start().await;
    let config = format!(
        r#"
[limits]
headers_with_underscores = "allow"

[upstreams.stable]
targets = ["{}"]
[upstreams.tenant]
targets = ["{}"]

[[routes]]
path_prefix = "/"
upstream = "stable"

[[routes]]
path_prefix = "/"
headers = {{ x_tenant = "acme" }}
upstream = "tenant"
"#,
        stable.addr, tenant.addr
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/orders"), &[("x_tenant", "acme")], b"").await;
    assert_eq!((r.status.as_u16(), stable.hits(), tenant.hits()), (200, 0, 1));
    assert_eq!(r.upstream_header("x_tenant"), ["acme"], "the upstream gets the header the route was chosen on");
    assert_eq!(client.get(&gw.url("/orders")).await.status, 200);
    assert_eq!((stable.hits(), tenant.hits()), (1, 1));
    gw.stop().await;
}

const PLAIN: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/"
upstream = "backend"
"#;

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(PLAIN, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client
        .request(
            "GET",
            &gw.url("/hop"),
            &[
                ("connection", "x-drop-me"),
                ("x-drop-me", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic eDp5"),
                ("upgrade", "websocket"),
                ("x-keep-me", "1"),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, 200);
    for gone in ["x-drop-me", "keep-alive", "proxy-authorization", "upgrade"] {
        assert!(r.upstream_header(gone).is_empty(), "{gone} reached the upstream");
    }
    // `TE: trailers` is the gateway's own on this hop (an HTTP/1.1 server sends trailers only
    // to a request with it), named in `Connection` as a hop-by-hop header must be.
    assert_eq!(r.upstream_header("te"), vec!["trailers"]);
    assert_eq!(r.upstream_header("connection"), vec!["te"]);
    assert_eq!(r.upstream_header("x-keep-me"), vec!["1"]);
    // The upstream's own hop-by-hop headers stay on its hop.
    assert_eq!(r.header("x-upstream-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("x-upstream-end").as_deref(), Some("kept"));
    gw.stop().await;
}

/// Behind a trusted balancer that terminates TLS, the client's scheme is the balancer's
/// `X-Forwarded-Proto`; from anyone else the header is the gateway's own.
#[tokio::test]
async fn a_trusted_proxys_forwarded_proto_is_the_requests_scheme() {
    let upstream = Upstream::start().await;
    let client = HttpClient::http1();
    let behind = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n{PLAIN}");
    let gw = Gateway::start(&behind, Some(&upstream)).await;
    let proto = |sent: &'static [&'static str]| {
        let (client, url) = (client.clone(), gw.url("/x"));
        async move {
            let headers: Vec<(&str, &str)> = sent.iter().map(|v| ("x-forwarded-proto", *v)).collect();
            client.request("GET", &url, &headers, b"").await.upstream_header("x-forwarded-proto")
        }
    };
    assert_eq!(proto(&["https"]).await, ["https"]);
    assert_eq!(proto(&["HTTPS"]).await, ["https"]);
    assert_eq!(proto(&["http"]).await, ["http"]);
    // Unclear: the listener's own scheme.
    assert_eq!(proto(&[]).await, ["http"]);
    assert_eq!(proto(&["https, http"]).await, ["http"]);
    assert_eq!(proto(&["https", "https"]).await, ["http"]);
    assert_eq!(proto(&["ftp"]).await, ["http"]);
    gw.stop().await;

    // Not a trusted peer: a client's claim is replaced.
    let gw = Gateway::start(PLAIN, Some(&upstream)).await;
    let r = client.request("GET", &gw.url("/x"), &[("x-forwarded-proto", "https")], b"").await;
    assert_eq!(r.upstream_header("x-forwarded-proto"), ["http"]);
    gw.stop().await;
}

/// `X-Forwarded-Client-Cert` (Envoy's record of a client certificate) is the word of whoever
/// terminated TLS: from a client it is forged and removed, as Envoy's default `SANITIZE` does;
/// from a trusted proxy in front it is passed on.
#[tokio::test]
async fn a_forwarded_client_cert_reaches_the_upstream_only_from_a_trusted_proxy() {
    let upstream = Upstream::start().await;
    let client = HttpClient::http1();
    let xfcc = "By=spiffe://mesh/billing;Hash=1f;Subject=\"CN=admin\";URI=spiffe://mesh/admin";
    let sent = [("x-forwarded-client-cert", xfcc), ("x-forwarded-client-cert", "URI=spiffe://mesh/ops")];

    let gw = Gateway::start(PLAIN, Some(&upstream)).await;
    let r = client.request("GET", &gw.url("/x"), &sent, b"").await;
    assert_eq!(r.status, 200);
    assert!(r.upstream_header("x-forwarded-client-cert").is_empty(), "a client's XFCC reached the upstream");
    gw.stop().await;

    let behind = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n{PLAIN}");
    let gw = Gateway::start(&behind, Some(&upstream)).await;
    let r = client.request("GET", &gw.url("/x"), &sent, b"").await;
    assert_eq!(r.upstream_header("x-forwarded-client-cert"), [xfcc, "URI=spiffe://mesh/ops"]);
    gw.stop().await;
}

/// The gateway's `Via` and `X-Request-Id` are on the response before its plugins' rules, so a
/// rule may remove or replace them (an operator hiding the proxy), made by the gateway (a fixed
/// edit) or by the plugin's `on-response` (a rule reading a request header).
#[tokio::test]
async fn response_rules_may_remove_or_replace_via_and_the_request_id() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/hidden"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { remove = ["via", "x-request-id"] } }

[[routes]]
path_prefix = "/replaced"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { response = { set = { via = "1.1 edge", "x-request-id" = "${header.x-tenant}" } } }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/hidden")).await;
    assert_eq!((r.status.as_u16(), r.header("via"), r.header("x-request-id")), (200, None, None));
    assert_eq!(r.upstream_header("via"), vec!["1.1 airlock"], "the request's are the upstream's to see");
    let r = client.request("GET", &gw.url("/replaced"), &[("x-tenant", "t-9")], b"").await;
    assert_eq!(r.header_all("via"), ["1.1 edge"]);
    assert_eq!(r.header_all("x-request-id"), ["t-9"]);
    gw.stop().await;
}

#[tokio::test]
async fn forwarded_headers_via_and_request_id() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(PLAIN, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client
        .request(
            "GET",
            &gw.url("/x"),
            &[("x-forwarded-for", "203.0.113.9"), ("host", "shop.example:8443"), ("x-request-id", "trace-me-1")],
            b"",
        )
        .await;
    assert_eq!(r.upstream_header("x-forwarded-for"), vec!["203.0.113.9, 127.0.0.1"]);
    assert_eq!(r.upstream_header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(r.upstream_header("x-forwarded-host"), vec!["shop.example:8443"]);
    assert_eq!(r.upstream_header("via"), vec!["1.1 airlock"]);
    assert_eq!(r.upstream_header("x-request-id"), vec!["trace-me-1"]);
    assert_eq!(r.header("x-request-id").as_deref(), Some("trace-me-1"));
    assert_eq!(r.header("via").as_deref(), Some("1.1 airlock"));
    // Default host policy: the upstream's own authority.
    assert_eq!(r.upstream_header("host"), vec![upstream.addr.to_string()]);

    let r = client.get(&gw.url("/x")).await;
    let generated = r.header("x-request-id").expect("generated request id");
    assert_eq!(generated.len(), 32);
    assert_eq!(r.upstream_header("x-request-id"), vec![generated]);
    gw.stop().await;
}

#[tokio::test]
async fn host_header_can_be_preserved() {
    let upstream = Upstream::start().await;
    let config = PLAIN.replace("upstream = \"backend\"", "upstream = \"backend\"\nhost_header = \"preserve\"");
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let r = HttpClient::http1().request("GET", &gw.url("/"), &[("host", "public.example")], b"").await;
    assert_eq!(r.upstream_header("host"), vec!["public.example"]);
    // An HTTP/1.0 client may send no Host: nothing to preserve, and the HTTP/1.1 request the
    // upstream gets must carry one (RFC 9112 3.2): the target's.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or_default()).expect("JSON echo");
    assert_eq!(body["headers"]["host"], serde_json::json!([upstream.addr.to_string()]), "{body}");
    gw.stop().await;
}

/// A plugin that sets `Host` means it: it goes upstream under either `host_header` policy.
#[tokio::test]
async fn a_plugin_sets_the_host_sent_upstream() {
    let upstream = Upstream::start().await;
    for policy in ["upstream", "preserve"] {
        let config = format!(
            "{PLAIN}host_header = \"{policy}\"\n[[routes.plugins]]\nplugin = \"builtin:headers\"\n\
             [routes.plugins.config.request.set]\n\"host\" = \"tenant-a.internal\"\n"
        );
        let gw = Gateway::start(&config, Some(&upstream)).await;
        let r = HttpClient::http1().request("GET", &gw.url("/"), &[("host", "public.example")], b"").await;
        assert_eq!(r.status, 200, "{policy}");
        assert_eq!(r.upstream_header("host"), vec!["tenant-a.internal"], "{policy}");
        // The client's host is still what the forwarding headers name.
        assert_eq!(r.upstream_header("x-forwarded-host"), vec!["public.example"], "{policy}");
        gw.stop().await;
    }
}

/// `Host` is one value, well formed: a plugin appending it replaces it (two would split the
/// upstream's idea of the target from the gateway's), and a malformed one (here built from what
/// the client sent) is refused and logged, so the route's own policy applies.
#[tokio::test]
async fn a_plugin_host_is_one_valid_value() {
    let upstream = Upstream::start().await;
    let config = format!(
        "{PLAIN}[[routes.plugins]]\nplugin = \"builtin:headers\"\n\
         [routes.plugins.config.request.append]\n\"host\" = \"${{header.x-tenant}}.internal\"\n"
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/"), &[("host", "public.example"), ("x-tenant", "admin")], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("host"), vec!["admin.internal"]);
    for tenant in ["evil@x", "a,b", "a/b", "x:99999"] {
        let r = client.request("GET", &gw.url("/"), &[("host", "public.example"), ("x-tenant", tenant)], b"").await;
        assert_eq!(r.status, 200, "{tenant}");
        assert_eq!(r.upstream_header("host"), vec![upstream.addr.to_string()], "{tenant}: the route's policy, not the plugin's value");
    }
    gw.stop().await;
}

#[tokio::test]
async fn round_robin_over_targets() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let config = format!(
        "[upstreams.pair]\ntargets = [\"{}\", \"{}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"pair\"\n",
        a.addr, b.addr
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    for _ in 0..10 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
    gw.stop().await;
}

/// The gateway's own answer after the request phases ran (the upstream down, here) carries the
/// response headers those phases asked for: CORS (else a browser reads the 502 as a CORS
/// failure), `RateLimit`, a `headers` plugin's. The body stays the gateway's error.
#[tokio::test]
async fn a_gateway_error_after_the_plugins_keeps_the_headers_they_asked_for() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = format!(
        r#"
[upstreams.down]
targets = ["{closed}"]

[[routes]]
path_prefix = "/"
upstream = "down"
[[routes.plugins]]
plugin = "builtin:cors"
config = {{ origins = ["https://app.example.com"] }}
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = {{ by = ["ip"], headers = "draft", limits = [{{ name = "minute", limit = 100, window = "minute" }}] }}
[[routes.plugins]]
plugin = "builtin:headers"
config = {{ response = {{ set = {{ "x-served-by" = "edge-1" }} }} }}
"#
    );
    let gw = Gateway::start(&config, None).await;
    let r = HttpClient::http1().request("GET", &gw.url("/items"), &[("origin", "https://app.example.com")], b"").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unavailable");
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"), "{:?}", r.headers);
    assert!(r.header("ratelimit").is_some(), "{:?}", r.headers);
    assert_eq!(r.header("x-served-by").as_deref(), Some("edge-1"));
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    gw.stop().await;
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let upstream = Upstream::start().await;
    let config = format!(
        r#"
[upstreams.down]
targets = ["{closed}"]
[upstreams.slow]
targets = ["{{upstream}}"]
request_timeout_ms = 300

[[routes]]
path_prefix = "/down"
upstream = "down"
[[routes]]
path_prefix = "/slow"
upstream = "slow"
[[routes]]
path = "/ok"
upstream = "slow"
"#
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/down")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_unavailable");
    assert!(r.json()["request_id"].is_string());
    // The cause (a refused port here) is in the log under the request id, not told to clients.
    assert_eq!(r.json()["message"], "the upstream is unavailable", "{}", r.text());

    let started = std::time::Instant::now();
    let r = client.get(&gw.url("/slow/3000")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_millis(2500), "timed out late: {:?}", started.elapsed());

    assert_eq!(client.get(&gw.url("/ok")).await.status, 200, "the gateway keeps serving");
    gw.stop().await;
}

#[tokio::test]
async fn connect_timeout_is_504() {
    // A loopback listener with a full accept queue drops further SYNs, so connecting hangs until
    // the gateway's connect timeout: a connect timeout without leaving this machine.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    let config = format!(
        "[upstreams.full]\ntargets = [\"{addr}\"]\nconnect_timeout_ms = 200\n[[routes]]\npath_prefix = \"/\"\nupstream = \"full\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    let started = std::time::Instant::now();
    let r = HttpClient::http1().get(&gw.url("/")).await;
    assert_eq!(r.status, 504, "{}", r.text());
    // Which wait ran out is in the log line, not told to the client.
    assert_eq!(r.json()["message"], "the upstream did not answer in time", "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
    gw.stop().await;
}

/// Requests to an HTTP/2 target that wait for the connection another request is making fail
/// with it when it fails, as Envoy fails the requests pending on a connection attempt: against
/// a target that does not answer, each would otherwise wait a connect timeout of its own in turn
/// (eight requests: 3.2 s here, past the bound below; all together: one timeout, 0.4 s).
#[tokio::test]
async fn requests_waiting_for_an_http2_connection_fail_with_it() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    let config = format!(
        "[upstreams.full]\ntargets = [\"{addr}\"]\nprotocol = \"h2c\"\nconnect_timeout_ms = 400\nmax_fails = 0\n[[routes]]\npath_prefix = \"/\"\nupstream = \"full\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    // One HTTP/2 client: one connection, so one worker and its pool serve all eight.
    let client = HttpClient::http2();
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), gw.url("/"));
            tokio::spawn(async move { client.get(&url).await })
        })
        .collect();
    for request in requests {
        let r = request.await.expect("request task");
        assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (504, Some("upstream_timeout")), "{}", r.text());
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "all eight answered after {took:?}: they waited in turn");
    drop(listener);
    gw.stop().await;
}

const LIMITS: &str = r#"
[limits]
max_header_bytes = 2048
max_headers = 20
max_body_bytes = 1000
max_response_headers = 30
max_response_header_bytes = 4096

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/"
upstream = "backend"

[[routes]]
path_prefix = "/buffered"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin:body-upper}"
"#;

#[tokio::test]
async fn header_and_body_limits() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(LIMITS, Some(&upstream)).await;
    let client = HttpClient::http1();

    let big = "v".repeat(3000);
    let r = client.request("GET", &gw.url("/"), &[("x-big", &big)], b"").await;
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "headers_too_large");

    let many: Vec<(String, String)> = (0..30).map(|i| (format!("x-h{i}"), "1".to_owned())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(client.request("GET", &gw.url("/"), &refs, b"").await.status, 431);

    // Declared length over the limit: refused before the upstream is called.
    let hits = upstream.hits();
    let r = client.request("POST", &gw.url("/"), &[], &[b'a'; 1001]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    assert_eq!(upstream.hits(), hits);

    // At the limit: passes, streamed.
    let r = client.request("POST", &gw.url("/"), &[], &[b'a'; 1000]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"].as_str().unwrap().len(), 1000);

    // Buffered for a body plugin: over the limit is 413 too.
    assert_eq!(client.request("POST", &gw.url("/buffered"), &[], &[b'a'; 1001]).await.status, 413);
    assert_eq!(upstream.hits(), hits + 1);

    // An upstream answer with more header lines than `max_response_headers` is a bad answer (502);
    // one within it goes through (25 of its own plus content-length and date).
    let r = client.get(&gw.url("/headers/25")).await;
    assert_eq!((r.status.as_u16(), r.header_all("x-h-24").len()), (200, 1), "{}", r.text());
    let r = client.get(&gw.url("/headers/40")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unavailable");
    assert_eq!(client.get(&gw.url("/headers/1")).await.status, 200, "the gateway keeps serving");
    // So is one with more bytes of header lines than `max_response_header_bytes` (4096).
    let r = client.get(&gw.url("/header-bytes/3000")).await;
    assert_eq!((r.status.as_u16(), r.header("x-large").map(|v| v.len())), (200, Some(3000)), "{}", r.text());
    let r = client.get(&gw.url("/header-bytes/5000")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (502, Some("upstream_unavailable")), "{}", r.text());
    assert_eq!(client.get(&gw.url("/headers/1")).await.status, 200, "the gateway keeps serving");
    gw.stop().await;
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_refused() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(LIMITS, Some(&upstream)).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let chunk = "a".repeat(600);
    let request = format!(
        "POST /buffered HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    gw.stop().await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_rejected_not_forwarded() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(PLAIN, Some(&upstream)).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 5\r\nconnection: close\r\n\r\nabcde")
        .await
        .unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}

/// A `Content-Length` the gateway reads as a number goes upstream as that number alone: `010`
/// (which an upstream parsing a leading zero as octal would read as 8, taking the rest as its
/// next request) and two equal lines go as one `10`, as nginx sends them.
#[tokio::test]
async fn a_content_length_goes_upstream_as_the_number_alone() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(PLAIN, Some(&upstream)).await;
    for head in ["content-length: 010", "content-length: 10\r\ncontent-length: 10", "content-length: 10"] {
        let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        let request = format!("POST / HTTP/1.1\r\nhost: x\r\n{head}\r\nconnection: close\r\n\r\n0123456789");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let echo: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"));
        assert_eq!(echo["headers"]["content-length"], serde_json::json!(["10"]), "{head}");
        assert_eq!(echo["body"], "0123456789");
    }
    gw.stop().await;
}

/// An HTTP/2 upstream gets the host as the `:authority`, whichever it is (the target's, the
/// client's with `host_header = "preserve"`, one a plugin set), with no `host` header beside it:
/// one that differs makes the request malformed (RFC 9113 8.3.1), and a server routing by name
/// reads the `:authority`.
#[tokio::test]
async fn an_http2_upstream_gets_the_host_as_its_authority_and_no_host_header() {
    let upstream = Upstream::start().await;
    let config = r#"
[upstreams.backend]
targets = ["{upstream}"]
protocol = "h2c"

[[routes]]
path_prefix = "/target"
upstream = "backend"

[[routes]]
path_prefix = "/preserve"
upstream = "backend"
host_header = "preserve"

[[routes]]
path_prefix = "/plugin"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = { request = { set = { "host" = "internal.svc:9000" } } }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let seen = |r: &Reply| (r.json()["version"].clone(), r.json()["authority"].clone(), r.upstream_header("host"));
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/target"), &[("host", "public.example")], b"").await;
    assert_eq!(seen(&r), (json!("HTTP/2.0"), json!(upstream.addr.to_string()), vec![]), "{}", r.text());
    let r = client.request("GET", &gw.url("/preserve?q=1"), &[("host", "public.example")], b"").await;
    assert_eq!(seen(&r), (json!("HTTP/2.0"), json!("public.example"), vec![]), "{}", r.text());
    assert_eq!((r.json()["path"].clone(), r.json()["query"].clone()), (json!("/preserve"), json!("q=1")));
    let r = client.request("POST", &gw.url("/plugin"), &[("host", "public.example")], b"body").await;
    assert_eq!(seen(&r), (json!("HTTP/2.0"), json!("internal.svc:9000"), vec![]), "{}", r.text());
    assert_eq!(r.json()["body"], "body");
    // The client's host still reaches the upstream as the forwarded one.
    assert_eq!(r.upstream_header("x-forwarded-host"), vec!["public.example"]);
    // A `Host` that cannot be an authority (`%` is allowed in a reg-name's encoding, not in
    // `:authority`'s parse) still leaves no `host` beside the target's `:authority`.
    let r = client.request("GET", &gw.url("/preserve"), &[("host", "h%41")], b"").await;
    assert_eq!(seen(&r), (json!("HTTP/2.0"), json!(upstream.addr.to_string()), vec![]), "{}", r.text());
    // An HTTP/2 client's `:authority` goes on as it came.
    let url = gw.url("/preserve");
    let r = HttpClient::http2().get(&url).await;
    let authority = url.trim_start_matches("http://").trim_end_matches("/preserve");
    assert_eq!(seen(&r), (json!("HTTP/2.0"), json!(authority), vec![]), "{}", r.text());
    gw.stop().await;
}

/// A request an HTTP/2 target could not be connected for goes to the next with the host it
/// was to name: the pool hands it back as it came.
#[tokio::test]
async fn an_http2_request_failing_over_keeps_its_host() {
    let upstream = Upstream::start().await;
    let down = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let config = format!(
        "[upstreams.backend]\ntargets = [\"{down}\", \"{}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\nhost_header = \"preserve\"\n",
        upstream.addr
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    for _ in 0..4 {
        // A streamed body: it cannot be copied, so only a handed-back request gets through.
        let r = client.request("POST", &gw.url("/x"), &[("host", "public.example"), ("transfer-encoding", "chunked")], b"streamed").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!((r.json()["authority"].clone(), r.upstream_header("host")), (json!("public.example"), vec![]));
        assert_eq!(r.json()["body"], "streamed");
    }
    gw.stop().await;
}

/// An HTTP/2 upstream that closes each connection after one answer (a GOAWAY, as a server
/// draining for a restart sends): every request is answered, on a new connection once the kept
/// one is seen closed.
#[tokio::test]
async fn an_http2_upstream_closing_its_connections_is_connected_to_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (answered, mut told) = tokio::sync::mpsc::channel::<()>(1);
                let service = hyper::service::service_fn(move |_req| {
                    let answered = answered.clone();
                    async move {
                        let _ = answered.try_send(());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from_static(b"ok"))))
                    }
                });
                let connection = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => return,
                    _ = told.recv() => connection.as_mut().graceful_shutdown(),
                }
                let _ = connection.await;
            });
        }
    });
    let config = format!("[upstreams.backend]\ntargets = [\"{addr}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n");
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    for i in 0..10 {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"), "request {i}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (A request may still reach a closing connection before its last GOAWAY.)
    assert!(connections.load(Ordering::SeqCst) >= 5, "connected again: {connections:?}");
    server.abort();
    gw.stop().await;
}

/// An HTTP/2 upstream's response head is held to what an HTTP/1.1 one's is: up to
/// `limits.max_response_headers` lines and `max_response_header_bytes` (502 past them), and
/// heads far above hyper's HTTP/2 default of 16 KiB (a 100 KiB one here) pass.
#[tokio::test]
async fn an_http2_upstream_response_head_is_held_to_the_http1_limits() {
    let upstream = Upstream::with_handler(|req: hyper::Request<hyper::body::Incoming>| async move {
        let mut r = hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from_static(b"ok")));
        if req.uri().path() == "/large" {
            r.headers_mut().insert("x-large", "x".repeat(100 * 1024).parse().expect("value"));
        } else if req.uri().path() == "/larger" {
            r.headers_mut().insert("x-large", "x".repeat(130 * 1024).parse().expect("value"));
        } else {
            for i in 0..40 {
                r.headers_mut().insert(http::HeaderName::from_bytes(format!("x-h-{i}").as_bytes()).expect("name"), http::HeaderValue::from_static("1"));
            }
        }
        r
    })
    .await;
    let config = "[limits]\nmax_response_headers = 30\nmax_response_header_bytes = 131072\n\n[upstreams.backend]\ntargets = [\"{upstream}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n";
    let gw = Gateway::start(config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/large")).await;
    assert_eq!((r.status.as_u16(), r.header("x-large").map(|v| v.len())), (200, Some(100 * 1024)), "{}", r.text());
    let r = client.get(&gw.url("/many")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (502, Some("upstream_unavailable")), "{}", r.text());
    let r = client.get(&gw.url("/larger")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (502, Some("upstream_unavailable")), "{}", r.text());
    assert_eq!(client.get(&gw.url("/large")).await.status, 200, "the connection serves on");
    gw.stop().await;
}

/// Streams an [`h2_upstream`] processed: method, path and the body it read, in the order read.
type Processed = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Streams an [`h2_upstream`] was sent, processed or refused.
type Streams = std::sync::Arc<std::sync::atomic::AtomicUsize>;

/// A real HTTP/2 (h2c) upstream whose streams `refuses(n, k)` may refuse with `REFUSED_STREAM`
/// (`n`: the stream's number over all connections, `k` on its connection, both from 0); on each
/// connection, once `budget` streams are processed, it stops taking new ones (a graceful
/// `GOAWAY`, as a server rotating its connections). A processed stream's body is read whole and
/// answered: echoed with `echo`, else its path.
async fn h2_upstream(
    refuses: impl Fn(usize, usize) -> bool + Send + Sync + 'static,
    budget: Option<usize>,
    echo: bool,
) -> (std::net::SocketAddr, Processed, Streams, tokio::task::JoinHandle<()>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let processed: Processed = Arc::default();
    let sent: Streams = Arc::new(AtomicUsize::new(0));
    let (seen, streams, refuses) = (processed.clone(), sent.clone(), Arc::new(refuses));
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (seen, streams, refuses) = (seen.clone(), streams.clone(), refuses.clone());
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(stream).await else { return };
                let (mut on_connection, mut taken) = (0, 0);
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let (n, k) = (streams.fetch_add(1, Ordering::SeqCst), on_connection);
                    on_connection += 1;
                    if refuses(n, k) || budget.is_some_and(|budget| taken >= budget) {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    taken += 1;
                    if budget == Some(taken) {
                        connection.graceful_shutdown();
                    }
                    let seen = seen.clone();
                    // Its own task: the connection is driven by `accept` meanwhile.
                    tokio::spawn(async move {
                        let (method, path) = (request.method().to_string(), request.uri().path().to_owned());
                        let mut body = request.into_body();
                        let mut read = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            read.extend_from_slice(&chunk);
                        }
                        let answer = if echo { read.clone() } else { path.clone().into_bytes() };
                        seen.lock().unwrap().push((method, path, read));
                        if let Ok(mut send) = respond.send_response(http::Response::new(()), false) {
                            let _ = send.send_data(hyper::body::Bytes::from(answer), true);
                        }
                    });
                }
            });
        }
    });
    (addr, processed, sent, server)
}

/// An HTTP/2 upstream that refuses every other stream it is sent (`RST_STREAM` with
/// `REFUSED_STREAM`: not processed, so safe to send again whatever the method, RFC 9113 8.7).
/// The first refusal finds no copy kept (requests are armed only once the upstream shows it
/// closes or refuses streams): a 502 that does not count against the target. From then on each
/// refused request (its body empty or whole: a streamed body cannot be sent twice) goes again and
/// is answered, on either worker (the sign one worker saw arms the other's pool too), and no
/// request is processed twice.
#[tokio::test]
async fn a_request_an_http2_upstream_did_not_process_is_sent_again() {
    let (addr, processed, _, server) = h2_upstream(|n, _| n % 2 == 0, None, false).await;
    let config = format!(
        "[runtime]\nworker_threads = 2\n\n[upstreams.backend]\ntargets = [\"{addr}\"]\nprotocol = \"h2c\"\nmax_fails = 1\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    // Two clients, two connections to the gateway: one on each worker.
    let (client, other) = (HttpClient::http1(), HttpClient::http1());
    let r = client.request("DELETE", &gw.url("/orders/0"), &[], b"").await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (502, Some("upstream_unavailable")), "{}", r.text());
    let target = addr.to_string();
    let up = metric_value(&gw, "airlock_upstream_target_up", &[("upstream", "backend"), ("target", &target)]).await;
    assert_eq!(up, 1.0, "a request the target did not process is not the target failing (max_fails = 1)");
    for i in 1..=6 {
        // Not idempotent: what the upstream did not process is safe to send again all the same.
        let path = format!("/orders/{i}");
        let r = [&client, &other][i % 2].request("DELETE", &gw.url(&path), &[], b"").await;
        assert_eq!((r.status.as_u16(), r.text()), (200, path), "request {i}");
    }
    let processed: Vec<String> = processed.lock().unwrap().iter().map(|(method, path, _)| format!("{method} {path}")).collect();
    assert_eq!(processed, (1..=6).map(|i| format!("DELETE /orders/{i}")).collect::<Vec<_>>(), "each processed once, /orders/0 never");
    server.abort();
    gw.stop().await;
}

/// As above, for requests with streamed bodies (a POST's, every gRPC call's): a refused stream's
/// body is sent again whole, what the refused stream had taken of it and then the rest (before:
/// no copy of a streamed body was kept, and every such request was a 502, at every connection
/// rotation of an nginx or gRPC upstream). Here the refusal comes while a chunked body is still
/// arriving from the client. A stream that had taken more than the 64 KiB the gateway keeps is
/// not sent again.
#[tokio::test]
async fn a_streamed_body_an_http2_upstream_did_not_process_is_sent_again_whole() {
    let (addr, processed, _, server) = h2_upstream(|n, _| n % 2 == 0, None, true).await;
    let config = format!(
        "[upstreams.backend]\ntargets = [\"{addr}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    // The first refusal arms the upstream's requests.
    let r = client.request("POST", &gw.url("/arm"), &[], b"x").await;
    assert_eq!(r.status, 502, "{}", r.text());
    for (i, size) in [3, 1000, 60 * 1024].into_iter().enumerate() {
        let body: Vec<u8> = (0..size).map(|n| b'a' + (n % 26) as u8).collect();
        let path = format!("/orders/{i}");
        let r = client.request("POST", &gw.url(&path), &[], &body).await;
        assert_eq!(r.status, 200, "{size} bytes: {}", r.text());
        assert!(r.body == body, "{size} bytes: the body came back whole ({} bytes)", r.body.len());
    }
    // Chunked, its second chunk sent after the stream was refused.
    let mut raw = tokio::net::TcpStream::connect(gw.addr()).await.expect("connect");
    raw.write_all(b"POST /orders/chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n").await.expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    raw.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = raw.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.ends_with(b"firstsecond") || answer.windows(4).any(|w| w == b"\r\n0\r") {
                break;
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("firstsecond"), "{answer}");
    // A refused stream that had taken more than is kept cannot be sent again: a 502, never sent
    // with a part missing (how much it had taken depends on flow control: either may happen).
    let big = vec![b'z'; 100 * 1024];
    let mut answered = 0;
    for _ in 0..2 {
        let r = client.request("POST", &gw.url("/big"), &[], &big).await;
        match r.status.as_u16() {
            200 => {
                assert!(r.body.len() == big.len(), "answered whole: {} bytes", r.body.len());
                answered += 1;
            }
            status => assert_eq!(status, 502, "{}", r.text()),
        }
    }
    let processed: Vec<(String, usize)> = processed.lock().unwrap().iter().map(|(_, path, body)| (path.clone(), body.len())).collect();
    let (big_ones, others): (Vec<_>, Vec<_>) = processed.into_iter().partition(|(path, _)| path == "/big");
    assert_eq!(
        others,
        [("/orders/0", 3), ("/orders/1", 1000), ("/orders/2", 60 * 1024), ("/orders/chunked", 11)].map(|(p, n)| (p.to_owned(), n)),
        "each processed once, whole"
    );
    assert_eq!(big_ones, vec![("/big".to_owned(), big.len()); answered], "processed whole, once each answered");
    server.abort();
    gw.stop().await;
}

/// An HTTP/2 upstream rotating its connections after two streams each (refusing those past its
/// budget, then a graceful `GOAWAY`, as nginx at `keepalive_requests`): concurrent requests
/// piled on each new connection past its budget are refused, and go again on the next, as many rounds as the pile
/// takes (before: three resends at most, and under load many were 502s, every POST with a body
/// at once). GETs and POSTs with bodies, all answered, each processed once.
#[tokio::test]
async fn requests_refused_by_an_http2_upstream_rotating_its_connections_all_get_through() {
    let (addr, processed, _, server) = h2_upstream(|_, _| false, Some(2), false).await;
    let config = format!(
        "[runtime]\nworker_threads = 1\n\n[upstreams.backend]\ntargets = [\"{addr}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    // One after the other, past a rotation: the upstream's requests are armed (the first one
    // refused, before they were, may be a 502).
    for i in 0..4 {
        client.get(&gw.url(&format!("/warm/{i}"))).await;
    }
    let calls: Vec<_> = (0..24)
        .map(|i| {
            let (client, url) = (client.clone(), gw.url(&format!("/pile/{i}")));
            tokio::spawn(async move {
                let (method, body) = if i % 2 == 0 { ("GET", Vec::new()) } else { ("POST", vec![b'p'; 100 + i]) };
                (i, client.request(method, &url, &[], &body).await)
            })
        })
        .collect();
    for call in calls {
        let (i, r) = call.await.expect("call");
        assert_eq!((r.status.as_u16(), r.text()), (200, format!("/pile/{i}")), "request {i}");
    }
    let processed: Vec<String> = processed.lock().unwrap().iter().map(|(_, path, body)| format!("{path} {}", body.len())).collect();
    for i in 0..24 {
        let expected = format!("/pile/{i} {}", if i % 2 == 0 { 0 } else { 100 + i });
        assert_eq!(processed.iter().filter(|p| **p == expected).count(), 1, "{expected} processed once: {processed:?}");
    }
    server.abort();
    gw.stop().await;
}

/// A server refusing every stream on a connection it keeps open (`REFUSED_STREAM`: shedding
/// load) is not a rotating one: each request is sent at most five times, then a 502, however
/// many resends a rotation may take.
#[tokio::test]
async fn a_server_refusing_every_stream_gets_each_request_a_few_times() {
    let (addr, processed, sent, server) = h2_upstream(|_, _| true, None, false).await;
    let config = format!(
        "[runtime]\nworker_threads = 1\n\n[upstreams.backend]\ntargets = [\"{addr}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    // The first refusal arms the upstream's requests; then each is tried again.
    client.get(&gw.url("/arm")).await;
    let before = sent.load(std::sync::atomic::Ordering::SeqCst);
    let r = client.get(&gw.url("/shed")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let tries = sent.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(tries, 5, "sent {tries} times");
    assert!(processed.lock().unwrap().is_empty());
    server.abort();
    gw.stop().await;
}

/// An HTTP/2 upstream allows so many streams at once on a connection (here 2, in its SETTINGS):
/// a request finding the gateway's connection full goes on another, rather than waiting in
/// hyper's queue behind streams that may never end (here their response bodies end only once
/// it has arrived), and a stream counts until its response body is done, not just its head.
#[tokio::test]
async fn a_request_past_an_http2_upstreams_stream_cap_goes_on_another_connection() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (connections, held) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (release, released) = tokio::sync::watch::channel(false);
    let (counted, holding) = (connections.clone(), held.clone());
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            let (holding, release, released) = (holding.clone(), release.clone(), released.clone());
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::Builder::new().max_concurrent_streams(2).handshake(stream).await else { return };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let body = match request.uri().path() {
                        "/hold" => {
                            holding.fetch_add(1, Ordering::SeqCst);
                            let mut released = released.clone();
                            // The head at once (a stream of messages, say), the body once /free has
                            // arrived (or after 10 s, saying so).
                            let Ok(mut send) = respond.send_response(http::Response::new(()), false) else { continue };
                            tokio::spawn(async move {
                                let waited = tokio::time::timeout(Duration::from_secs(10), released.wait_for(|free| *free)).await;
                                let body = if matches!(waited, Ok(Ok(_))) { "released" } else { "gave up" };
                                let _ = send.send_data(hyper::body::Bytes::from(body), true);
                            });
                            continue;
                        }
                        "/free" => {
                            let _ = release.send(true);
                            "free"
                        }
                        _ => "warm",
                    };
                    let Ok(mut send) = respond.send_response(http::Response::new(()), false) else { continue };
                    let _ = send.send_data(hyper::body::Bytes::from(body), true);
                }
            });
        }
    });
    let config = format!(
        "[runtime]\nworker_threads = 1\n\n[upstreams.backend]\ntargets = [\"{addr}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"backend\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    // The connection made, and the server's SETTINGS read with its answer.
    let r = client.get(&gw.url("/warm")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "warm".to_owned()));
    let holds: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (client.clone(), gw.url("/hold"));
            tokio::spawn(async move { client.get(&url).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while held.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((held.load(Ordering::SeqCst), connections.load(Ordering::SeqCst)), (2, 1), "both held streams on the one connection");
    let r = client.get(&gw.url("/free")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "free".to_owned()));
    for hold in holds {
        let r = hold.await.expect("held request");
        assert_eq!((r.status.as_u16(), r.text()), (200, "released".to_owned()), "answered once /free arrived, not after waiting for it");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2, "/free went on a second connection");
    // Both streams ended: the first connection takes requests again, no third is made.
    for _ in 0..3 {
        assert_eq!(client.get(&gw.url("/warm")).await.status, 200);
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    server.abort();
    gw.stop().await;
}

#[tokio::test]
async fn http2_clients_are_served() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http2();
    let r = client.get(&gw.url("/api/users/9")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.upstream_header("x-user"), vec!["9"]);
    // The upstream hop is HTTP/1.1 with a Host taken from :authority.
    assert_eq!(r.json()["version"], "HTTP/1.1");
    assert_eq!(r.upstream_header("via"), vec!["2 airlock"]);
    let posted = client.request("POST", &gw.url("/api/items"), &[], b"hello h2").await;
    assert_eq!(posted.json()["body"], "hello h2");
    gw.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(PLAIN, Some(&upstream)).await;
    let url = gw.url("/slow/500");
    let in_flight = tokio::spawn(async move { HttpClient::http1().get(&url).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let addr = gw.addr();
    gw.stop().await;
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request completed during the drain");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

/// The gateway tells a cleartext connection's protocol from its first bytes without consuming
/// them (so hyper's buffers stay small): bytes that arrive one at a time, a method sharing the
/// HTTP/2 preface's first letters, and a client that never speaks all have to come out right.
#[tokio::test]
async fn a_connections_protocol_is_told_from_its_first_bytes_however_they_arrive() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&format!("[timeouts]\ndrain_ms = 30000\n{PLAIN}"), Some(&upstream)).await;

    // A POST whose first byte ("P", as in the preface "PRI * HTTP/2.0") comes alone, then the rest.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let request = b"POST /split HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello";
    for chunk in [&request[..1], &request[1..2], &request[2..]] {
        tcp.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut head = vec![0u8; 4096];
    let n = tcp.read(&mut head).await.unwrap();
    let text = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""body":"hello""#) && text.contains(r#""path":"/split""#), "{text}");
    // The connection stays usable for a second request (keep-alive, HTTP/1 from then on).
    tcp.write_all(b"GET /again HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let n = tcp.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).contains(r#""path":"/again""#));

    // HTTP/2 prior knowledge and HTTP/1 on the same port, one after the other.
    let h2 = HttpClient::http2().get(&gw.url("/h2")).await;
    assert_eq!(h2.status, 200);
    assert_eq!(h2.version, http::Version::HTTP_2);
    let h1 = HttpClient::http1().get(&gw.url("/h1")).await;
    assert_eq!(h1.status, 200);
    assert_eq!(h1.version, http::Version::HTTP_11);

    // Something that starts like the preface and is not HTTP at all gets an error, not a hang,
    // and the port keeps serving.
    let mut junk = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    junk.write_all(b"PRI * HTTP/9.9\r\n\r\nXX\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), junk.read_to_end(&mut answer)).await.expect("the connection is answered or closed");
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(HttpClient::http1().get(&gw.url("/after")).await.status, 200);

    // A client that connects and never sends a byte does not hold up shutdown: it is closed
    // at once rather than after the 30 s drain.
    let mut silent = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(15), gw.stop()).await.expect("shutdown waited out the drain for a silent client");
    let mut byte = [0u8; 1];
    assert_eq!(silent.read(&mut byte).await.unwrap_or(0), 0, "closed without an answer");
}

/// Reads one HTTP/1.1 response (head and content-length body) from `tcp`.
async fn read_response(tcp: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().expect("content-length"));
            if got.len() >= end + 4 + length {
                assert_eq!(got.len(), end + 4 + length, "one response at a time");
                return String::from_utf8_lossy(&got).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk)).await.expect("a response").unwrap();
        assert!(n > 0, "connection closed mid-response: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
}

/// `airlock_parked_connections` as the admin listener reports it.
async fn parked_connections(gw: &Gateway) -> f64 {
    metric_value(gw, "airlock_parked_connections", &[]).await
}

/// Waits (up to 5 s) for `airlock_parked_connections` to read `n`.
async fn parked_connections_reach(gw: &Gateway, n: f64) {
    for _ in 0..100 {
        if parked_connections(gw).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(parked_connections(gw).await, n);
}

/// An HTTP/1.1 keep-alive connection quiet for longer than `keepalive::PARK_AFTER` (100 ms) gives
/// hyper's buffers back and is parked; to its client it is one ordinary connection: the next
/// request, a request whose start arrived before parking, a slow answer and pipelined requests
/// all work on it; garbage or a client leaving while parked costs nothing else; and a parked
/// connection does not hold up shutdown.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_parked_and_serves_on_when_the_client_speaks() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&format!("[timeouts]\ndrain_ms = 30000\n{PLAIN}"), Some(&upstream)).await;
    let park = Duration::from_millis(2500);
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();

    tcp.write_all(b"GET /first HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    assert!(read_response(&mut tcp).await.contains(r#""path":"/first""#));
    tokio::time::sleep(park).await;
    assert_eq!(parked_connections(&gw).await, 1.0, "quiet for a while");

    // The next request picks it up.
    tcp.write_all(b"GET /second HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let second = read_response(&mut tcp).await;
    assert!(second.starts_with("HTTP/1.1 200") && second.contains(r#""path":"/second""#), "{second}");
    assert_eq!(parked_connections(&gw).await, 0.0);

    // A request whose first bytes came before the pause: they are kept for the next hyper,
    // and a slow client pausing again mid-request keeps its keep-alive connection.
    tcp.write_all(b"POST /third HTTP/1.1\r\nhost: a\r\ncontent-le").await.unwrap();
    tokio::time::sleep(park).await;
    tcp.write_all(b"ngth: 3\r\n").await.unwrap();
    tokio::time::sleep(park).await;
    tcp.write_all(b"\r\nabc").await.unwrap();
    let third = read_response(&mut tcp).await;
    assert!(third.contains(r#""path":"/third""#) && third.contains(r#""body":"abc""#), "{third}");
    assert!(!third.to_ascii_lowercase().contains("connection: close"), "{third}");
    // Its body read to the end, the connection is between exchanges again: parked.
    tokio::time::sleep(park).await;
    assert_eq!(parked_connections(&gw).await, 1.0, "parked after a request with a body");
    // A chunked body ending in trailers is read to its end too (its stream's end is never
    // asked for after them).
    tcp.write_all(b"POST /trailed HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 1\r\n\r\n").await.unwrap();
    let trailed = read_response(&mut tcp).await;
    assert!(trailed.contains(r#""path":"/trailed""#), "{trailed}");
    tokio::time::sleep(park).await;
    assert_eq!(parked_connections(&gw).await, 1.0, "parked after a body with trailers");

    // An answer slower than the park delay is not cut short and keeps the connection open.
    tcp.write_all(b"GET /slow/2500 HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let slow = read_response(&mut tcp).await;
    assert!(slow.starts_with("HTTP/1.1 200"), "{slow}");
    assert!(!slow.to_ascii_lowercase().contains("connection: close"), "{slow}");

    // Pipelined requests after a park: both answered, in order.
    tokio::time::sleep(park).await;
    tcp.write_all(b"GET /p1 HTTP/1.1\r\nhost: a\r\n\r\nGET /p2 HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut both = String::new();
    let mut buf = [0u8; 16384];
    while both.matches("HTTP/1.1 200").count() < 2 || !both.contains(r#""path":"/p2""#) {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.expect("answers").unwrap();
        assert!(n > 0, "closed: {both}");
        both.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(both.find(r#""path":"/p1""#) < both.find(r#""path":"/p2""#), "{both}");

    // Garbage on a parked connection gets hyper's 400 (or a close); a client that leaves while
    // parked is forgotten; the port keeps serving.
    let mut junk = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    junk.write_all(b"GET /j HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    assert!(read_response(&mut junk).await.contains(r#""path":"/j""#));
    let mut leaving = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    leaving.write_all(b"GET /l HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    assert!(read_response(&mut leaving).await.contains(r#""path":"/l""#));
    tokio::time::sleep(park).await;
    assert_eq!(parked_connections(&gw).await, 3.0, "these two and the first");
    junk.write_all(b"\x16\x03\x01 not http\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), junk.read_to_end(&mut answer)).await.expect("answered or closed").ok();
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    drop(leaving);
    parked_connections_reach(&gw, 1.0).await;
    assert_eq!(HttpClient::http1().get(&gw.url("/still")).await.status, 200);

    // Parked at shutdown: closed at once, not after the 30 s drain.
    tokio::time::sleep(park).await;
    assert_eq!(parked_connections(&gw).await, 1.0);
    tokio::time::timeout(Duration::from_secs(15), gw.stop()).await.expect("shutdown waited out the drain for a parked connection");
    let mut byte = [0u8; 1];
    assert_eq!(tcp.read(&mut byte).await.unwrap_or(0), 0, "closed");
}

/// Parking does not restart hyper's header read timeout: a client that sends half a request
/// and goes quiet is still closed once `idle_ms` has passed.
#[tokio::test]
async fn half_a_request_still_times_out_across_parks() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&format!("[timeouts]\nidle_ms = 3000\n{PLAIN}"), Some(&upstream)).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"GET /first HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    assert!(read_response(&mut tcp).await.contains(r#""path":"/first""#));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tcp.write_all(b"GET /never-finished HTTP/1.1\r\nho").await.unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(12), tcp.read_to_end(&mut rest)).await.expect("closed by the header read timeout").ok();
    assert!(started.elapsed() >= Duration::from_secs(2), "not before the timeout: {:?}", started.elapsed());
    assert!(rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&rest));
}

/// A connection that never sends a byte is idle too: closed after `idle_ms`, not held forever
/// (enough of them would take every file descriptor the gateway has).
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_idle_ms() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&format!("[timeouts]\nidle_ms = 500\n{PLAIN}"), Some(&upstream)).await;
    let mut silent = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut byte)).await.expect("closed by the gateway");
    assert_eq!(read.unwrap_or(0), 0, "closed without an answer");
    assert!(started.elapsed() >= Duration::from_millis(400), "not before idle_ms: {:?}", started.elapsed());
    // The gateway serves on.
    assert_eq!(HttpClient::http1().get(&gw.url("/")).await.status, 200);
    gw.stop().await;
}

/// The wait for the upstream's answer (`request_timeout_ms`) starts once the request body has
/// been sent: a slow upload that keeps coming is not a slow upstream (before, it got a 504 and
/// counted as an upstream timeout). A client that stops sending its body is cut off after
/// `body_idle_ms` with a 408, and the upstream connection is not held.
#[tokio::test]
async fn a_slow_upload_is_not_an_upstream_timeout_and_a_stalled_one_is_a_408() {
    let upstream = Upstream::start().await;
    let config = format!(
        "[timeouts]\nbody_idle_ms = 400\n{}",
        PLAIN.replace("targets = [\"{upstream}\"]", "targets = [\"{upstream}\"]\nrequest_timeout_ms = 300")
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;

    // 8 pieces, 150 ms apart: 1.05 s of upload under a 300 ms response timeout.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 8\r\nconnection: close\r\n\r\n").await.unwrap();
    for piece in b"abcdefgh" {
        tokio::time::sleep(Duration::from_millis(150)).await;
        tcp.write_all(&[*piece]).await.unwrap();
    }
    let answer = read_response(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""body":"abcdefgh""#), "{answer}");

    // Half a body, then nothing.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 8\r\n\r\nabcd").await.unwrap();
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_response(&mut tcp)).await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(350), "not before body_idle_ms: {:?}", started.elapsed());
    gw.stop().await;
}

/// An upstream that stops taking the request body (it accepted the connection and reads no
/// more) does not hold the request forever now that its response timeout waits for the body:
/// after `body_idle_ms` without progress the client gets a 504 that says so.
#[tokio::test]
async fn an_upstream_that_stops_taking_the_body_is_a_504() {
    // A small receive buffer, so the gateway's writes stall after little of the body.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let deaf = socket.listen(8).unwrap();
    let addr = deaf.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((stream, _)) = deaf.accept().await {
            kept.push(stream);
        }
    });
    let config = format!(
        "[timeouts]\nbody_idle_ms = 400\nrequest_ms = 60000\ndrain_ms = 500\n[limits]\nmax_body_bytes = 67108864\n\n[upstreams.deaf]\ntargets = [\"{addr}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"deaf\"\n"
    );
    let gw = Gateway::start(&config, None).await;
    let body = vec![b'x'; 12 << 20];
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), HttpClient::http1().request("POST", &gw.url("/in"), &[], &body))
        .await
        .expect("answered, not held");
    assert_eq!(r.status, 504, "{}", r.text());
    // Why (it took none of the body) is in the log line, not told to the client.
    assert_eq!(r.json()["message"], "the upstream did not answer in time", "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    gw.stop().await;
}

/// One HTTP/2 (prior knowledge) connection to the gateway, as a real client holds it: the
/// request sender, and the moment the connection ended (the gateway closed it).
async fn http2_connection(
    gw: &Gateway,
) -> (hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>, tokio::sync::oneshot::Receiver<std::time::Instant>) {
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    let (ended, ended_at) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = connection.await;
        let _ = ended.send(std::time::Instant::now());
    });
    (sender, ended_at)
}

/// GETs `path` on an HTTP/2 connection; the status and the whole body.
async fn http2_get(sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>, path: &str) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt;
    let request = http::Request::get(format!("http://gateway{path}")).body(http_body_util::Empty::new()).unwrap();
    let response = sender.send_request(request).await.expect("answered");
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.expect("whole body").to_bytes().to_vec())
}

/// `timeouts.idle_ms` holds for HTTP/2 client connections too: a busy one stays open past it,
/// an idle one is closed once it has passed (hyper alone kept it open for as long as the client
/// answered its pings, each holding ~35 KB).
#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_idle_ms_and_a_busy_one_is_not() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&format!("[timeouts]\nidle_ms = 400\n{PLAIN}"), Some(&upstream)).await;
    let (mut sender, mut ended_at) = http2_connection(&gw).await;
    // Busy for three idle periods: a request every 150 ms.
    for i in 0..8 {
        let (status, body) = http2_get(&mut sender, &format!("/busy/{i}")).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(ended_at.try_recv().is_err(), "closed while in use (after request {i})");
    }
    // Then idle: closed after idle_ms, not before.
    let last = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), ended_at).await.expect("an idle HTTP/2 connection was kept open").unwrap();
    let idle_for = ended - last;
    assert!(idle_for >= Duration::from_millis(250), "closed {idle_for:?} after the last request");
    assert!(sender.ready().await.is_err(), "the connection still takes requests");
    assert_eq!(HttpClient::http2().get(&gw.url("/after")).await.status, 200, "a new connection is served");
}

/// Closing an idle HTTP/2 connection is graceful: a response still streaming its body when the
/// connection goes idle (no request begun, none awaiting its head) is sent to the end.
#[tokio::test]
async fn an_http2_idle_close_lets_a_streaming_response_finish() {
    // An upstream that sends its body in 12 chunks over ~1.2 s, three idle periods.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                tcp.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
                for i in 0..12 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    tcp.write_all(format!("6\r\nchunk{:x}\r\n", i).as_bytes()).await.unwrap();
                }
                tcp.write_all(b"0\r\n\r\n").await.unwrap();
            });
        }
    });
    let config = format!("[timeouts]\nidle_ms = 300\n{}", PLAIN.replace("{upstream}", &upstream_addr.to_string()));
    let gw = Gateway::start(&config, None).await;
    let (mut sender, ended_at) = http2_connection(&gw).await;
    let (status, body) = http2_get(&mut sender, "/stream").await;
    let body_done = std::time::Instant::now();
    assert_eq!(status, 200);
    let expected: String = (0..12).map(|i| format!("chunk{i:x}")).collect();
    assert_eq!(String::from_utf8_lossy(&body), expected, "the body was cut short");
    // The connection went idle during the stream (GOAWAY sent): it ends as soon as the stream
    // is done, not an idle period later.
    let ended = tokio::time::timeout(Duration::from_secs(5), ended_at).await.expect("closed after the stream").unwrap();
    assert!(ended - body_done < Duration::from_millis(300), "closed {:?} after the stream: not during it", ended - body_done);
}

/// `airlock_worker_connections` of each of the two workers.
async fn worker_connections(gw: &Gateway) -> [f64; 2] {
    [
        metric_value(gw, "airlock_worker_connections", &[("worker", "0")]).await,
        metric_value(gw, "airlock_worker_connections", &[("worker", "1")]).await,
    ]
}

/// Every worker wakes for a new connection and the first to accept takes it, so one worker
/// could take a whole burst; each connection is instead served by the worker serving fewest.
/// A burst of connections ends up split evenly, whichever worker accepted them, and a
/// connection moved to the other worker serves request after request there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_evenly_over_the_workers() {
    const CONNECTIONS: usize = 16;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&format!("[runtime]\nworker_threads = 2\n{PLAIN}"), Some(&upstream)).await;
    assert_eq!(worker_connections(&gw).await, [0.0, 0.0]);
    let addr = gw.addr();
    let burst = (0..CONNECTIONS).map(|_| tokio::spawn(tokio::net::TcpStream::connect(addr)));
    let mut connections = Vec::new();
    for connecting in burst {
        connections.push(connecting.await.unwrap().unwrap());
    }
    for round in ["first", "again"] {
        for (i, tcp) in connections.iter_mut().enumerate() {
            tcp.write_all(format!("GET /{round}/{i} HTTP/1.1\r\nhost: a\r\n\r\n").as_bytes()).await.unwrap();
            let response = read_response(tcp).await;
            assert!(response.starts_with("HTTP/1.1 200") && response.contains(&format!("/{round}/{i}")), "{response}");
        }
        assert_eq!(worker_connections(&gw).await, [8.0, 8.0], "{CONNECTIONS} connections, half per worker");
    }
    assert_eq!(upstream.hits(), 2 * CONNECTIONS);
    drop(connections);
    for _ in 0..100 {
        if worker_connections(&gw).await == [0.0, 0.0] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(worker_connections(&gw).await, [0.0, 0.0], "closed connections leave their worker");
    gw.stop().await;
}

/// An upstream that closes each keep-alive connection after one answer (as one whose keep-alive
/// timer fires between requests does) costs the client nothing: the gateway sees the kept
/// connection closed, drops it, and sends the next request on a new one.
#[tokio::test]
async fn an_upstream_closing_its_kept_connections_costs_no_request() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if airlock_tests::read_request_head(&mut stream).await.is_none() {
                    return;
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                // No `connection: close`: the connection looks reusable, then goes away.
                let _ = stream.shutdown().await;
            });
        }
    });
    let config = format!("[[routes]]\npath_prefix = \"/\"\nupstream = \"closing\"\n[upstreams.closing]\ntargets = [\"{addr}\"]\n");
    let gw = Gateway::start(&config, None).await;
    let client = HttpClient::http1();
    for i in 0..6 {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!((i, r.status.as_u16(), r.text()), (i, 200, "ok".to_owned()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 6, "a new upstream connection for each request");
    gw.stop().await;
    server.abort();
}

const BYTES_IN: &str = r#"
[timeouts]
body_idle_ms = 400

[access_log]
enabled = true
path = "access.log"

[upstreams.backend]
targets = ["{upstream}"]

[[routes]]
path_prefix = "/"
upstream = "backend"

[[routes]]
path_prefix = "/buffered"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin:body-upper}"
"#;

/// A chunked HTTP/1.1 request, its body in `chunks`, on a new connection; the whole answer.
async fn send_chunked(gw: &Gateway, path: &str, request_id: &str, chunks: &[&[u8]]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let mut request =
        format!("POST {path} HTTP/1.1\r\nhost: x\r\nx-request-id: {request_id}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
            .into_bytes();
    for chunk in chunks {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    tcp.write_all(&request).await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer)).await;
    answer
}

/// The access log's `bytes_in` is the request body read from the client: a chunked body has no
/// length ahead (it was logged as 0), streamed or buffered for a plugin.
#[tokio::test]
async fn bytes_in_counts_a_chunked_request_body() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(BYTES_IN, Some(&upstream)).await;
    let (a, b, c) = ("a".repeat(300), "b".repeat(200), "c".repeat(7));
    let chunks = [a.as_bytes(), b.as_bytes(), c.as_bytes()];

    let answer = send_chunked(&gw, "/streamed", "chunked-1", &chunks).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&format!("{a}{b}{c}")), "the whole body went upstream: {answer}");
    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "chunked-1").await;
    assert_eq!(line["bytes_in"], 507, "{line}");

    let answer = send_chunked(&gw, "/buffered", "chunked-2", &chunks).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&format!("{a}{b}{c}").to_uppercase()), "{answer}");
    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "chunked-2").await;
    assert_eq!(line["bytes_in"], 507, "{line}");
    gw.stop().await;
}

/// A `Content-Length` body logs its size; one the client stops sending half-way (cut off with a
/// 408) logs the bytes read, not the length it declared.
#[tokio::test]
async fn bytes_in_counts_a_content_length_body_and_one_cut_short() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(BYTES_IN, Some(&upstream)).await;
    let body = vec![b'z'; 1234];
    let r = HttpClient::http1().request("POST", &gw.url("/sized"), &[("x-request-id", "sized-1")], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("content-length"), vec!["1234"]);
    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "sized-1").await;
    assert_eq!(line["bytes_in"], 1234, "{line}");

    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"POST /sized HTTP/1.1\r\nhost: a\r\nx-request-id: sized-2\r\ncontent-length: 8\r\n\r\nabcd").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_response(&mut tcp)).await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "sized-2").await;
    assert_eq!(line["bytes_in"], 4, "{line}");
    gw.stop().await;
}

/// An HTTP/2 request body sent as DATA frames without `content-length` logs its size (it was
/// logged as 0).
#[tokio::test]
async fn bytes_in_counts_an_http2_request_body_without_content_length() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let upstream = Upstream::start().await;
    let gw = Gateway::start(BYTES_IN, Some(&upstream)).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    // Three DATA frames, of no length known ahead: sent without `content-length`.
    let pieces = ["x".repeat(1000), "y".repeat(500), "z".repeat(24)];
    let frames = pieces.iter().map(|p| Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from(p.clone()))));
    let request = http::Request::post("http://gateway/h2")
        .header("x-request-id", "h2-1")
        .body(StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>())))
        .unwrap();
    let response = sender.send_request(request).await.expect("answered");
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = serde_json::from_slice(&response.into_body().collect().await.expect("whole body").to_bytes()).unwrap();
    assert_eq!(echo["body"], pieces.concat());
    assert!(echo["headers"]["content-length"].is_null(), "sent without a length: {echo}");
    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "h2-1").await;
    assert_eq!(line["protocol"], "HTTP/2");
    assert_eq!(line["bytes_in"], 1524, "{line}");
    gw.stop().await;
}
