//! Session affinity (`hash_on`) over real backends: a key's requests stay on one target, across
//! gateway instances too; requests without the key are balanced round-robin; a key whose target
//! is down moves, and only that key's. With `hash_cookie`, a client without the `hash_on` cookie
//! is given one, and its first request already goes where the cookie sends the next ones (after
//! a failover, and for a mirror hashing on the same cookie, too).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use airlock_tests::{Gateway, HttpClient, Upstream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

/// A backend answering every request with its name.
async fn named(name: &'static str) -> Upstream {
    Upstream::with_handler(move |_req| async move { Response::new(Full::new(Bytes::from_static(name.as_bytes()))) }).await
}

fn config(targets: &[String], hash_on: &str) -> String {
    let targets = targets.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
    format!("[upstreams.s]\ntargets = [{targets}]\nhash_on = \"{hash_on}\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"s\"\n")
}

/// The backend that answered each of `users`' requests (each user sends `times`, by header).
async fn served(gw: &Gateway, users: &[String], times: usize) -> HashMap<String, HashSet<String>> {
    let client = HttpClient::http1();
    let mut by_user: HashMap<String, HashSet<String>> = HashMap::new();
    for _ in 0..times {
        for user in users {
            let r = client.request("GET", &gw.url("/x"), &[("x-user", user)], b"").await;
            assert_eq!(r.status, 200, "{}", r.text());
            by_user.entry(user.clone()).or_default().insert(r.text());
        }
    }
    by_user
}

#[tokio::test]
async fn a_keys_requests_stay_on_one_target_in_every_gateway_instance() {
    let backends = [named("a").await, named("b").await, named("c").await];
    let targets: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let users: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    let gw = Gateway::start(&config(&targets, "header:x-user"), None).await;
    let first = served(&gw, &users, 3).await;
    assert!(first.values().all(|served| served.len() == 1), "one target per user: {first:?}");
    let used: HashSet<&String> = first.values().flatten().collect();
    assert_eq!(used.len(), 3, "30 users spread over the three targets: {first:?}");

    // A second instance of the same config (another replica) agrees on every user.
    let other = Gateway::start(&config(&targets, "header:x-user"), None).await;
    assert_eq!(served(&other, &users, 1).await, first);

    // Without the header: round-robin, one request to each target.
    let client = HttpClient::http1();
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(client.get(&gw.url("/x")).await.text());
    }
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    gw.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn only_the_keys_of_a_target_that_is_down_move() {
    // `b` fails its health check on demand: out of rotation, its users go to their second
    // choice (each to one target), the others stay where they were.
    let b_healthy = Arc::new(AtomicBool::new(true));
    let flag = b_healthy.clone();
    let b = Upstream::with_handler(move |req: Request<Incoming>| {
        let healthy = flag.load(Ordering::SeqCst);
        async move {
            let mut r = Response::new(Full::new(Bytes::from_static(b"b")));
            if req.uri().path() == "/healthz" && !healthy {
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        }
    })
    .await;
    let backends = [named("a").await, b, named("c").await];
    let targets: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let users: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    let check = "\n[upstreams.s.health_check]\npath = \"/healthz\"\ninterval_ms = 50\nunhealthy_threshold = 1\nhealthy_threshold = 1\n";
    let gw = Gateway::start(&format!("{}{check}", config(&targets, "header:x-user")), None).await;
    let before = served(&gw, &users, 1).await;
    assert!(before.values().any(|s| s.contains("b")), "{before:?}");

    b_healthy.store(false, Ordering::SeqCst);
    let down = format!("{}", backends[1].addr);
    airlock_tests::metrics::eventually("b out of rotation", || {
        gw.inner().upstreams["s"].target_down(1).then_some(())
    })
    .await;
    assert_eq!(gw.inner().upstreams["s"].targets[1].to_string(), down);
    let after = served(&gw, &users, 3).await;
    for user in &users {
        let (was, now) = (&before[user], &after[user]);
        assert_eq!(now.len(), 1, "{user} on one target: {now:?}");
        if was.contains("b") {
            assert!(!now.contains("b"), "{user}");
        } else {
            assert_eq!(now, was, "{user} was not on the target that went down");
        }
    }

    // Back in rotation: its users come back to it.
    b_healthy.store(true, Ordering::SeqCst);
    airlock_tests::metrics::eventually("b back", || (!gw.inner().upstreams["s"].target_down(1)).then_some(())).await;
    assert_eq!(served(&gw, &users, 1).await, before);
    gw.stop().await;
}

#[tokio::test]
async fn a_key_whose_target_refuses_fails_over_to_its_next_best_before_the_target_is_marked_down() {
    // With `max_fails = 0` a refusing target is never marked down: each of its keys' requests
    // fails over. It must go where the key goes without that target (its next best), as it
    // will once the target is marked down, not to whichever target is listed after it.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let backends = [named("a").await, named("c").await, named("d").await];
    let live: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let with_dead = vec![live[0].clone(), dead, live[1].clone(), live[2].clone()];
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let failing = Gateway::start(&config(&with_dead, "header:x-user").replace("hash_on", "max_fails = 0
hash_on"), None).await;
    let without = Gateway::start(&config(&live, "header:x-user"), None).await;
    assert_eq!(served(&failing, &users, 2).await, served(&without, &users, 1).await);
    failing.stop().await;
    without.stop().await;
}

#[tokio::test]
async fn the_client_ip_a_cookie_or_a_query_parameter_can_be_the_key() {
    let backends = [named("a").await, named("b").await, named("c").await];
    let targets: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let client = HttpClient::http1();

    let gw = Gateway::start(&config(&targets, "ip"), None).await;
    let mut names = HashSet::new();
    for _ in 0..6 {
        names.insert(client.get(&gw.url("/x")).await.text());
    }
    assert_eq!(names.len(), 1, "every request from 127.0.0.1 on one target: {names:?}");
    gw.stop().await;

    let gw = Gateway::start(&config(&targets, "cookie:sid"), None).await;
    let mut by_session: HashMap<String, HashSet<String>> = HashMap::new();
    for _ in 0..3 {
        for sid in 0..12 {
            let cookie = format!("theme=dark; sid=s{sid}");
            let r = client.request("GET", &gw.url("/x"), &[("cookie", &cookie)], b"").await;
            by_session.entry(sid.to_string()).or_default().insert(r.text());
        }
    }
    assert!(by_session.values().all(|served| served.len() == 1), "{by_session:?}");
    assert!(by_session.values().flatten().collect::<HashSet<_>>().len() > 1, "{by_session:?}");
    gw.stop().await;

    // A query parameter, decoded as plugins read it: one tenant however its value is written.
    let gw = Gateway::start(&config(&targets, "query:tenant"), None).await;
    for tenant in 0..12 {
        let mut served = HashSet::new();
        for query in [format!("tenant=acme%20{tenant}"), format!("x=1&tenant=acme+{tenant}"), format!("tenant=acme%20{tenant}&tenant=other")] {
            served.insert(client.get(&gw.url(&format!("/x?{query}"))).await.text());
        }
        assert_eq!(served.len(), 1, "tenant {tenant}: {served:?}");
    }
    gw.stop().await;
}

/// `[upstreams.s]` hashing on cookie `sticky`, which the gateway sets (`hash_cookie`, its `extra`
/// keys inside) for a client without it.
fn sticky_config(targets: &[String], extra: &str) -> String {
    config(targets, "cookie:sticky").replace("\n\n[[routes]]", &format!("\nhash_cookie = {{ {extra} }}\n\n[[routes]]"))
}

/// The value of the `sticky` cookie a reply sets, checking its attributes: `Path=/` and the
/// rest as `attributes` (what follows the path) says.
fn sticky_cookie(reply: &airlock_tests::Reply, attributes: &str) -> String {
    let set = reply.header_all("set-cookie");
    assert_eq!(set.len(), 1, "one Set-Cookie: {set:?}");
    let (pair, rest) = set[0].split_once(';').unwrap_or_else(|| panic!("attributes: {set:?}"));
    assert_eq!(rest, format!(" Path=/{attributes}"), "{set:?}");
    let value = pair.strip_prefix("sticky=").unwrap_or_else(|| panic!("named sticky: {set:?}"));
    assert!(value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()), "128 bits in hex: {value}");
    value.to_owned()
}

#[tokio::test]
async fn a_client_without_the_cookie_is_given_one_that_keeps_it_on_its_first_target() {
    let backends = [named("a").await, named("b").await, named("c").await];
    let targets: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let gw = Gateway::start(&sticky_config(&targets, "max_age_s = 3600"), None).await;
    let other = Gateway::start(&sticky_config(&targets, "max_age_s = 3600"), None).await;
    let client = HttpClient::http1();
    let mut first_targets = HashSet::new();
    let mut values = HashSet::new();
    for _ in 0..12 {
        let first = client.get(&gw.url("/x")).await;
        assert_eq!(first.status, 200);
        let value = sticky_cookie(&first, "; Max-Age=3600; HttpOnly; SameSite=Lax");
        let target = first.text();
        // The cookie sends every later request to the target the first one reached, in another
        // instance of the gateway too, and is not set again.
        let cookie = format!("theme=dark; sticky={value}");
        for gateway in [&gw, &other, &gw] {
            for _ in 0..4 {
                let again = client.request("GET", &gateway.url("/x"), &[("cookie", &cookie)], b"").await;
                assert_eq!(again.text(), target, "cookie {value}");
                assert!(again.header("set-cookie").is_none(), "{:?}", again.headers);
            }
        }
        first_targets.insert(target);
        values.insert(value);
    }
    assert_eq!(values.len(), 12, "a new cookie for each client");
    assert!(first_targets.len() > 1, "cookieless clients spread over the targets: {first_targets:?}");

    // An empty cookie is none: a new one is made.
    let empty = client.request("GET", &gw.url("/x"), &[("cookie", "sticky=")], b"").await;
    let value = sticky_cookie(&empty, "; Max-Age=3600; HttpOnly; SameSite=Lax");
    let cookie = format!("sticky={value}");
    assert_eq!(client.request("GET", &gw.url("/x"), &[("cookie", &cookie)], b"").await.text(), empty.text());
    gw.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn without_hash_cookie_no_cookie_is_made_and_cookieless_requests_go_round_robin() {
    let backends = [named("a").await, named("b").await, named("c").await];
    let targets: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let gw = Gateway::start(&config(&targets, "cookie:sticky"), None).await;
    let client = HttpClient::http1();
    let mut names = Vec::new();
    for _ in 0..3 {
        let r = client.get(&gw.url("/x")).await;
        assert!(r.header("set-cookie").is_none(), "{:?}", r.headers);
        names.push(r.text());
    }
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    gw.stop().await;
}

#[tokio::test]
async fn the_cookie_says_secure_to_a_client_on_https_and_a_session_cookie_has_no_max_age() {
    let backends = [named("a").await, named("b").await];
    let targets: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    // The client's scheme as the load balancer in front says it (`X-Forwarded-Proto`).
    let listener = "[[listeners]]\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n\n";
    let gw = Gateway::start(&format!("{listener}{}", sticky_config(&targets, "")), None).await;
    let client = HttpClient::http1();
    let https = client.request("GET", &gw.url("/x"), &[("x-forwarded-proto", "https")], b"").await;
    sticky_cookie(&https, "; HttpOnly; SameSite=Lax; Secure");
    let http = client.request("GET", &gw.url("/x"), &[("x-forwarded-proto", "http")], b"").await;
    sticky_cookie(&http, "; HttpOnly; SameSite=Lax");
    gw.stop().await;
}

#[tokio::test]
async fn a_made_cookie_fails_over_where_it_will_send_later_requests_and_errors_set_none() {
    // A target that refuses (never marked down, `max_fails = 0`): a cookieless request whose
    // made key it wins fails over to that key's next best, as the cookie's later requests do.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let backends = [named("a").await, named("c").await];
    let targets = vec![backends[0].addr.to_string(), dead.clone(), backends[1].addr.to_string()];
    let toml = sticky_config(&targets, "").replace("hash_on", "max_fails = 0\nhash_on");
    let gw = Gateway::start(&toml, None).await;
    let client = HttpClient::http1();
    for _ in 0..30 {
        let first = client.get(&gw.url("/x")).await;
        assert_eq!(first.status, 200, "{}", first.text());
        let cookie = format!("sticky={}", sticky_cookie(&first, "; HttpOnly; SameSite=Lax"));
        for _ in 0..3 {
            assert_eq!(client.request("GET", &gw.url("/x"), &[("cookie", &cookie)], b"").await.text(), first.text(), "{cookie}");
        }
    }
    gw.stop().await;

    // The gateway's own answer (no target answered): nothing to stick to, no cookie.
    let gw = Gateway::start(&sticky_config(&[dead], ""), None).await;
    let refused = client.get(&gw.url("/x")).await;
    assert_eq!(refused.status, 502);
    assert!(refused.header("set-cookie").is_none(), "{:?}", refused.headers);
    gw.stop().await;
}

#[tokio::test]
async fn a_mirror_hashing_on_the_same_cookie_places_the_first_copy_where_the_later_ones_go() {
    // Mirror targets that record which of them got each copy (by its `X-Request-Id`).
    let seen: Arc<Mutex<Vec<(&'static str, String)>>> = Arc::default();
    let mut mirrors = Vec::new();
    for name in ["m1", "m2", "m3"] {
        let log = seen.clone();
        mirrors.push(
            Upstream::with_handler(move |req: Request<Incoming>| {
                let id = req.headers().get("x-request-id").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                log.lock().unwrap().push((name, id.unwrap_or_default()));
                async move { Response::new(Full::new(Bytes::from_static(b"mirror"))) }
            })
            .await,
        );
    }
    let backends = [named("a").await, named("b").await];
    let targets: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let mirror_targets = mirrors.iter().map(|m| format!("\"{}\"", m.addr)).collect::<Vec<_>>().join(", ");
    let toml = sticky_config(&targets, "").replace("upstream = \"s\"", "upstream = \"s\"\nmirror = { upstream = \"m\" }")
        + &format!("\n[upstreams.m]\ntargets = [{mirror_targets}]\nhash_on = \"cookie:sticky\"\n");
    let gw = Gateway::start(&toml, None).await;
    let client = HttpClient::http1();
    let mirror_of = |reply: &airlock_tests::Reply| {
        let id = reply.header("x-request-id").expect("a request id");
        let seen = seen.clone();
        async move {
            airlock_tests::metrics::eventually("the mirror's copy", || seen.lock().unwrap().iter().find(|(_, i)| *i == id).map(|(n, _)| *n)).await
        }
    };
    let mut used = HashSet::new();
    for _ in 0..9 {
        let first = client.get(&gw.url("/x")).await;
        let cookie = format!("sticky={}", sticky_cookie(&first, "; HttpOnly; SameSite=Lax"));
        let mirror = mirror_of(&first).await;
        for _ in 0..2 {
            let again = client.request("GET", &gw.url("/x"), &[("cookie", &cookie)], b"").await;
            assert_eq!(mirror_of(&again).await, mirror, "{cookie}");
        }
        used.insert(mirror);
    }
    assert!(used.len() > 1, "copies spread over the mirror's targets: {used:?}");
    gw.stop().await;
}

/// Operators auditing routing see how each upstream places requests: `/admin/routes` shows
/// `hash_on` as written and the cookie `hash_cookie` makes, and null for both without them.
#[tokio::test]
async fn admin_routes_shows_hash_on_and_hash_cookie() {
    let backends = [named("a").await, named("b").await];
    let targets: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let plain = format!(
        "[upstreams.p]\ntargets = [\"{}\"]\n\n[[routes]]\npath_prefix = \"/plain\"\nupstream = \"p\"\n",
        targets[0]
    );
    let toml = format!("{}\n{plain}", sticky_config(&targets, "path = \"/app\", max_age_s = 600"));
    let gw = Gateway::start(&toml, None).await;
    let client = HttpClient::http1();
    let routes = client.get(&gw.admin_url("/admin/routes")).await.json();
    let upstream_of = |prefix: &str| {
        let routes = routes["routes"].as_array().expect("routes");
        let route = routes.iter().find(|r| r["path_prefix"] == prefix).unwrap_or_else(|| panic!("{prefix}: {routes:?}"));
        route["upstream"].clone()
    };
    let sticky = upstream_of("/");
    assert_eq!(sticky["hash_on"], "cookie:sticky", "{sticky}");
    assert_eq!(sticky["hash_cookie"], serde_json::json!({ "name": "sticky", "path": "/app", "max_age_s": 600 }), "{sticky}");
    let plain = upstream_of("/plain");
    assert!(plain["hash_on"].is_null() && plain["hash_cookie"].is_null(), "{plain}");
    gw.stop().await;

    // A session cookie has no `max_age_s`; a header key is shown as written, lower-case.
    let gw = Gateway::start(&sticky_config(&targets, ""), None).await;
    let routes = client.get(&gw.admin_url("/admin/routes")).await.json();
    assert_eq!(routes["routes"][0]["upstream"]["hash_cookie"], serde_json::json!({ "name": "sticky", "path": "/", "max_age_s": null }));
    gw.stop().await;
    let gw = Gateway::start(&config(&targets, "header:X-User"), None).await;
    let routes = client.get(&gw.admin_url("/admin/routes")).await.json();
    assert_eq!(routes["routes"][0]["upstream"]["hash_on"], "header:x-user");
    gw.stop().await;
}
