//! `builtin:redirect` end to end: a real upstream that must not be called when a redirect
//! answers, the gateway's scheme behind a trusted balancer, and config errors at their line.
//! (`tls.rs` shows a scheme redirect letting HTTPS through on a TLS listener.)

use airlock_tests::{Gateway, HttpClient, Upstream};

const ROUTES: &str = r#"
[upstreams.backend]
targets = ["{upstream}"]

[[global.plugins]]
plugin = "builtin:redirect"
config = { scheme = "https" }

[[routes]]
id = "docs"
path = "/docs/{page}"
global_plugins = false
[[routes.plugins]]
plugin = "builtin:redirect"
config = { location = "https://docs.example.com/v2/${param.page}?from=${query.from}", permanent = false }

[[routes]]
id = "moved"
hosts = ["old.example"]
path_prefix = "/"
global_plugins = false
[[routes.plugins]]
plugin = "builtin:redirect"
config = { host = "new.example", status = 308 }

[[routes]]
id = "api"
path_prefix = "/"
upstream = "backend"
"#;

#[tokio::test]
async fn plain_http_is_sent_to_https_with_its_host_path_and_query() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/a/b?x=1&y=%20"), &[("host", "shop.example:8080")], b"").await;
    assert_eq!(r.status.as_u16(), 301);
    assert_eq!(r.header("location").as_deref(), Some("https://shop.example/a/b?x=1&y=%20"));
    assert_eq!(r.header("content-length").as_deref(), Some("0"));
    assert!(r.body.is_empty());
    // Other methods keep their method and body: 308.
    let r = client.request("POST", &gw.url("/orders"), &[("host", "shop.example")], b"{}").await;
    assert_eq!((r.status.as_u16(), r.header("location").as_deref()), (308, Some("https://shop.example/orders")));
    let r = client.request("HEAD", &gw.url("/"), &[("host", "shop.example")], b"").await;
    assert_eq!(r.status.as_u16(), 301);
    assert_eq!(upstream.hits(), 0, "a redirect never reaches the upstream");
    gw.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_balancer_that_terminated_tls_the_request_goes_on() {
    let upstream = Upstream::start().await;
    let behind = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n{ROUTES}");
    let gw = Gateway::start(&behind, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/a"), &[("host", "shop.example"), ("x-forwarded-proto", "https")], b"").await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-forwarded-proto"), ["https"]);
    let r = client.request("GET", &gw.url("/a"), &[("host", "shop.example"), ("x-forwarded-proto", "http")], b"").await;
    assert_eq!((r.status.as_u16(), r.header("location").as_deref()), (301, Some("https://shop.example/a")));
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;

    // The same claim from a client the listener does not trust is not believed.
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let r = client.request("GET", &gw.url("/a"), &[("host", "shop.example"), ("x-forwarded-proto", "https")], b"").await;
    assert_eq!(r.status.as_u16(), 301);
    gw.stop().await;
}

#[tokio::test]
async fn a_location_template_and_a_moved_host() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/docs/getting%20started?from=a%26b"), &[], b"").await;
    assert_eq!(r.status.as_u16(), 302, "permanent = false");
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://docs.example.com/v2/getting%20started?from=a%26b"),
        "values are encoded: a query value cannot add a parameter"
    );
    let r = client.request("PUT", &gw.url("/x/y?z=1"), &[("host", "old.example:8080")], b"body").await;
    assert_eq!((r.status.as_u16(), r.header("location").as_deref()), (308, Some("http://new.example/x/y?z=1")));
    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn bad_configs_are_refused_at_their_line_naming_the_key() {
    for (config, expected) in [
        (r#"{ scheme = "ftp" }"#, "`scheme`: `ftp` is not `http` or `https`"),
        (r#"{ scheme = "https", status = 200 }"#, "`status`: 200 is not a redirect"),
        (r#"{ location = "https://${header.x-to}/" }"#, "the host must be written out"),
        ("{}", "nothing to redirect to"),
    ] {
        let toml = format!("[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:redirect\"\nconfig = {config}\n");
        let err = Gateway::try_start(&toml, None).await.err().expect("refused").to_string();
        assert!(err.contains("airlock.toml:8") && err.contains("`routes[0].plugins[0].config`") && err.contains(expected), "{config}: {err}");
    }
}

#[tokio::test]
async fn locations_the_gateway_would_serve_here_do_not_loop_and_hostless_requests_are_refused() {
    let config = r#"
[[routes]]
id = "landing"
path = "/landing"
[[routes.plugins]]
plugin = "builtin:redirect"
config = { location = "http://f.test/landing#top" }

[[routes]]
id = "home"
path = "/"
[[routes.plugins]]
plugin = "builtin:redirect"
config = { location = "http://f.test" }

[[routes]]
id = "rest"
path_prefix = "/r"
[[routes.plugins]]
plugin = "builtin:redirect"
config = { scheme = "https" }
"#;
    let gw = Gateway::start(config, None).await;
    let client = HttpClient::http1();
    // Already there: the next plugin (none: the route has no upstream, a 502) answers, not a redirect.
    for path in ["/landing", "/"] {
        let r = client.request("GET", &gw.url(path), &[("host", "f.test")], b"").await;
        assert_ne!(r.status.as_u16(), 301, "{path}: {:?}", r.header("location"));
        assert_eq!(r.header("location"), None, "{path}");
    }
    // An HTTP/1.0 request without a Host: nothing to keep, the gateway's error shape.
    let addr = gw.addr();
    let raw = airlock_tests::raw_exchange(addr, b"GET /r HTTP/1.0\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.0 400") || raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("\"error\":\"bad_request\"") && raw.contains("request_id"), "{raw}");
    gw.stop().await;
}
