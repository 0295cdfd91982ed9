//! Session affinity (`hash_on`) over real backends: a key's requests stay on one target, across
//! gateway instances too; requests without the key are balanced round-robin; a key whose target
//! is down moves, and only that key's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
