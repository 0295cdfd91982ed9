//! The Redis `state` backend against a real `redis-server` that misbehaves: out of memory, a user
//! without the permissions the limiter scripts need, restarts, an outage, and a wrong password or
//! database. (Two gateways sharing one Redis, and the limits themselves: `rate_limit.rs`.)

use std::time::{Duration, Instant};

use airlock_tests::process::GatewayProcess;
use airlock_tests::redis::Redis;
use airlock_tests::{Gateway, HttpClient, Upstream};

/// A gateway on `redis_url` with a fail-open and a fail-closed limiter (limits no test reaches),
/// whose `/ready` fails while Redis does not serve the limiters.
fn config(redis_url: &str, timeout_ms: u64) -> String {
    format!(
        r#"
[state]
backend = "redis"
redis_url = "{redis_url}"
timeout_ms = {timeout_ms}
connect_timeout_ms = 1000
required_for_ready = true

[upstreams.backend]
targets = ["{{upstream}}"]

[plugins.limiter]
source = "builtin:rate-limit"

[[routes]]
path = "/open"
upstream = "backend"
[[routes.plugins]]
plugin = "limiter"
config = {{ by = ["route"], on_state_error = "fail-open", limits = [{{ limit = 100000, window = "minute" }}] }}

[[routes]]
path = "/closed"
upstream = "backend"
[[routes.plugins]]
plugin = "limiter"
config = {{ by = ["route"], on_state_error = "fail-closed", limits = [{{ limit = 100000, window = "minute" }}] }}
"#
    )
}

/// `/ready`: its status and the state backend's error word (empty when none). The word is all
/// the open endpoint says; the error itself is in the log and in the operations' errors.
async fn ready(client: &HttpClient, gw: &Gateway) -> (u16, String) {
    let r = client.get(&gw.admin_url("/ready")).await;
    let error = r.json()["checks"]["state_backend"]["error"].as_str().unwrap_or_default().to_owned();
    (r.status.as_u16(), error)
}

/// Calls of `command` Redis counted since the last `CONFIG RESETSTAT` (0: none).
fn calls(redis: &Redis, command: &str) -> u64 {
    let stats = redis.cmd(&["INFO", "commandstats"]);
    let line = stats.lines().find(|l| l.starts_with(&format!("cmdstat_{command}:"))).unwrap_or_default();
    line.split(['=', ',']).nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn ready_fails_while_redis_refuses_writes_for_lack_of_memory() {
    let redis = Redis::start(None);
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(&format!("redis://127.0.0.1:{}", redis.port), 500), Some(&upstream)).await;
    let client = HttpClient::http1();
    assert_eq!(ready(&client, &gw).await, (200, String::new()));
    assert_eq!(client.get(&gw.url("/closed")).await.status, 200);

    // About 2 MB of data, then a 1 MB cap that evicts nothing: reads still work, writes fail.
    let fill = "for i = 1, 2000 do redis.call('SET', 'fill:' .. i, string.rep('x', 1000)) end return 1";
    assert_eq!(redis.cmd(&["EVAL", fill, "0"]), ":1");
    assert_eq!(redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]), "+OK");
    assert_eq!(redis.cmd(&["CONFIG", "SET", "maxmemory", "1mb"]), "+OK");
    assert_eq!(redis.cmd(&["GET", "airlock:ready-probe"]), "(nil)", "reads still work");
    assert_eq!(client.get(&gw.url("/closed")).await.status, 503, "the limiter's write is refused");

    assert_eq!(ready(&client, &gw).await, (503, "unavailable".to_owned()), "ready while every limiter write fails");
    let e = gw.inner().state.incr("airlock:test:oom", 1, 0).await.unwrap_err();
    assert!(e.to_string().contains("OOM"), "the Redis error is what an operation fails with: {e}");

    // Memory again: ready again, and nothing of the probe's is left behind.
    assert_eq!(redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]), "+OK");
    assert_eq!(ready(&client, &gw).await, (200, String::new()));
    assert_eq!(redis.cmd(&["EXISTS", "airlock:ready-probe"]), ":0");
    assert_eq!(client.get(&gw.url("/closed")).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn ready_fails_for_a_redis_user_that_cannot_run_the_limiter_scripts() {
    let redis = Redis::start(None);
    // Enough to connect and to read, not to run a script.
    assert_eq!(redis.cmd(&["ACL", "SETUSER", "ro", "on", ">ro", "~*", "+get", "+ping", "+time"]), "+OK");
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(&format!("redis://ro:ro@127.0.0.1:{}", redis.port), 500), Some(&upstream)).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/closed")).await.status, 503, "the limiter cannot run its script");
    assert_eq!(ready(&client, &gw).await, (503, "unavailable".to_owned()), "ready while every limiter call is refused");
    let e = gw.inner().state.incr("airlock:test:noperm", 1, 0).await.unwrap_err();
    assert!(e.to_string().contains("no permissions to run the 'evalsha' command"), "the Redis error is what an operation fails with: {e}");

    // Given the permissions, the same user is ready.
    assert_eq!(redis.cmd(&["ACL", "SETUSER", "ro", "+@all"]), "+OK");
    assert_eq!(ready(&client, &gw).await, (200, String::new()));
    assert_eq!(client.get(&gw.url("/closed")).await.status, 200);
    gw.stop().await;
}

/// Redis restarts while the gateway's connection to it sits idle: the next operation finds the
/// connection dead before sending anything on it, and goes to a new one; non-idempotent
/// operations still count once.
#[tokio::test]
async fn an_idle_connection_to_a_restarted_redis_fails_no_operation() {
    let mut redis = Redis::start(None);
    let port = redis.port;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(&format!("redis://127.0.0.1:{port}"), 1000), Some(&upstream)).await;
    let client = HttpClient::http1();
    let state = gw.inner().state.clone();
    assert_eq!(state.incr("airlock:test:count", 1, 0).await, Ok(1));

    let restart = |redis: &mut Redis| {
        redis.stop();
        let restarted = Redis::start(Some(port));
        // Back for a while before the gateway uses its connection again (blocking this test's
        // runtime, where the connection's driver may run: then only using the connection
        // finds it dead).
        std::thread::sleep(Duration::from_millis(300));
        restarted
    };

    redis = restart(&mut redis);
    assert_eq!(state.incr("airlock:test:count", 1, 0).await, Ok(1), "the first increment after the restart");
    assert_eq!(redis.cmd(&["GET", "airlock:test:count"]), "1", "counted once");

    redis = restart(&mut redis);
    assert_eq!(state.get("airlock:test:count").await, Ok(None), "the first read after the restart");

    redis = restart(&mut redis);
    let r = client.get(&gw.url("/closed")).await;
    assert_eq!(r.status, 200, "a fail-closed route right after the restart: {}", r.text());
    gw.stop().await;
    drop(redis);
}

/// A script Redis refuses (here: an increment of a key that holds text) is an answer, not a
/// connection failure: it is sent once.
#[tokio::test]
async fn a_command_error_is_not_retried() {
    let redis = Redis::start(None);
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(&format!("redis://127.0.0.1:{}", redis.port), 1000), Some(&upstream)).await;
    let state = gw.inner().state.clone();
    // Loads the script (EVALSHA, then SCRIPT LOAD and EVALSHA again).
    assert_eq!(state.incr("airlock:test:warm", 1, 0).await, Ok(1));
    assert_eq!(redis.cmd(&["SET", "airlock:test:text", "abc"]), "+OK");
    assert_eq!(redis.cmd(&["CONFIG", "RESETSTAT"]), "+OK");
    let e = state.incr("airlock:test:text", 1, 0).await.unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");
    assert_eq!(calls(&redis, "evalsha"), 1, "sent once");
    gw.stop().await;
}

/// An increment in flight when its connection is cut may have run: it is not sent again (the
/// limiter applies its policy to this one request), and the next one goes to a new connection.
#[tokio::test]
async fn an_increment_in_flight_when_the_connection_drops_is_not_replayed() {
    let redis = Redis::start(None);
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(&format!("redis://127.0.0.1:{}", redis.port), 2000), Some(&upstream)).await;
    let state = gw.inner().state.clone();
    assert_eq!(state.incr("airlock:test:warm", 1, 0).await, Ok(1));

    // Writes wait while Redis is paused; the gateway's connection is killed with one waiting.
    assert_eq!(redis.cmd(&["CLIENT", "PAUSE", "5000", "WRITE"]), "+OK");
    let pending = tokio::spawn({
        let state = state.clone();
        async move { state.incr("airlock:test:once", 1, 0).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "the increment waits for the pause");
    let killed = redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(killed.starts_with(':') && killed != ":0", "{killed}");
    let result = pending.await.expect("the increment's task");
    assert_eq!(redis.cmd(&["CLIENT", "UNPAUSE"]), "+OK");
    assert!(result.is_err(), "replayed after the connection was cut: {result:?}");
    assert_eq!(redis.cmd(&["GET", "airlock:test:once"]), "(nil)");
    assert_eq!(state.incr("airlock:test:once", 1, 0).await, Ok(1), "the next one reconnects");
    gw.stop().await;
}

/// A failed operation's error says which operation failed and how (never a bare "broken pipe"),
/// for an increment whose connection is cut while it waits and for a read while Redis refuses
/// connections; Redis's address is not in it, as plugins are given the text (the gateway's log
/// lines name it), and the store names it for them.
#[tokio::test]
async fn a_dropped_connection_names_redis_and_the_operation() {
    let mut redis = Redis::start(None);
    let upstream = Upstream::start().await;
    let address = format!("127.0.0.1:{}", redis.port);
    let gw = Gateway::start(&config(&format!("redis://{address}"), 2000), Some(&upstream)).await;
    let state = gw.inner().state.clone();
    assert_eq!(state.incr("airlock:test:warm", 1, 0).await, Ok(1));

    assert_eq!(redis.cmd(&["CLIENT", "PAUSE", "5000", "WRITE"]), "+OK");
    let pending = tokio::spawn({
        let state = state.clone();
        async move { state.incr("airlock:test:cut", 1, 0).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(killed.starts_with(':') && killed != ":0", "{killed}");
    let e = pending.await.expect("the increment's task").unwrap_err().to_string();
    assert_eq!(redis.cmd(&["CLIENT", "UNPAUSE"]), "+OK");
    assert!(e.contains("incr") && e.contains("connection lost") && !e.contains(&address), "{e}");
    assert_eq!(state.address(), address);

    redis.stop();
    let e = state.get("airlock:test:cut").await.unwrap_err().to_string();
    assert!(e.contains("GET") && e.contains("cannot connect") && !e.contains(&address), "{e}");
    gw.stop().await;
}

/// While Redis refuses connections, limited requests do not each wait on reconnection attempts:
/// the fail-open route answers as fast as without Redis, and Redis coming back is noticed soon.
#[tokio::test]
async fn with_redis_down_requests_skip_straight_to_the_policy_and_recover() {
    let mut redis = Redis::start(None);
    let port = redis.port;
    let upstream = Upstream::start().await;
    // A generous timeout: what keeps requests fast must be knowing that Redis is down.
    let gw = Gateway::start(&config(&format!("redis://127.0.0.1:{port}"), 1000), Some(&upstream)).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/open")).await.status, 200);
    redis.stop();

    // Each of these took a round of reconnection attempts (~100 ms: 3 s for 30).
    let started = Instant::now();
    for i in 0..30 {
        let r = client.get(&gw.url("/open")).await;
        assert_eq!(r.status, 200, "request {i}: fail-open with Redis down");
    }
    // A behavioural bound, loose for a loaded CI machine: a round of reconnection attempts per
    // request (the old behaviour) cannot fit in it.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "30 fail-open requests with Redis down took {took:?}");
    assert_eq!(client.get(&gw.url("/closed")).await.status, 503);
    assert_eq!(ready(&client, &gw).await, (503, "unavailable".to_owned()));

    // Back: the fail-closed route serves again within about a second.
    let _redis = Redis::start(Some(port));
    let back = Instant::now();
    loop {
        let status = client.get(&gw.url("/closed")).await.status.as_u16();
        if status == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(3), "not recovered {:?} after Redis came back ({status})", back.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready(&client, &gw).await, (200, String::new()));
    gw.stop().await;
}

/// A Redis that stops answering without closing its connections (its host gone from the
/// network, or the server stalled) opens the breaker like one refusing them: limited requests do
/// not each wait out the operation deadline, and service resumes when it answers again.
#[tokio::test]
async fn a_redis_that_stops_answering_opens_the_breaker() {
    let redis = Redis::start(None);
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(&format!("redis://127.0.0.1:{}", redis.port), 500), Some(&upstream)).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/open")).await.status, 200);
    redis.freeze();

    // Each of these waited out the 500 ms deadline on the silent connection (15 s for 30).
    let started = Instant::now();
    for i in 0..30 {
        let r = client.get(&gw.url("/open")).await;
        assert_eq!(r.status, 200, "request {i}: fail-open with Redis silent");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "30 fail-open requests with Redis silent took {took:?}");
    assert_eq!(ready(&client, &gw).await, (503, "unavailable".to_owned()), "/ready names the failure");

    redis.thaw();
    let back = Instant::now();
    loop {
        let status = client.get(&gw.url("/closed")).await.status.as_u16();
        if status == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(5), "not recovered {:?} after Redis answered again ({status})", back.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop().await;
}

/// A "Redis" that accepts connections and never answers (a stopped server, a black hole
/// behind a load balancer): each retry of the connection runs in the background. Past the first
/// request (which waits for the first connection, up to `connect_timeout_ms`), no fail-open
/// request waits on the state backend: before, the request that started each retry (one every
/// 250 ms of traffic) waited for it, up to `connect_timeout_ms`.
#[tokio::test]
async fn a_redis_that_accepts_and_never_answers_costs_requests_no_wait() {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = hole.local_addr().expect("address").port();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(&format!("redis://127.0.0.1:{port}"), 2000), Some(&upstream)).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/open")).await.status, 200, "fail-open");
    let mut slowest = Duration::ZERO;
    // Over a second and a half: several retry intervals, each starting an attempt.
    for i in 0..30 {
        let started = Instant::now();
        let r = client.get(&gw.url("/open")).await;
        assert_eq!(r.status, 200, "request {i}: fail-open with Redis silent");
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(slowest < Duration::from_millis(500), "a request waited {slowest:?} on a Redis that never answers");
    assert_eq!(ready(&client, &gw).await, (503, "unavailable".to_owned()));
    gw.stop().await;
    holding.abort();
}

/// A wrong password or database is what the first failure says (not a timeout), in the first
/// error of an operation; `/ready` says only `unavailable`.
#[tokio::test]
async fn a_misconfigured_redis_is_named_by_the_first_failure() {
    let redis = Redis::start(None);
    let upstream = Upstream::start().await;
    let client = HttpClient::http1();
    for (url, cause) in [
        (format!("redis://gw:wrong@127.0.0.1:{}", redis.port), "AuthenticationFailed"),
        (format!("redis://127.0.0.1:{}/99", redis.port), "DB index is out of range"),
    ] {
        let gw = Gateway::start(&config(&url, 100), Some(&upstream)).await;
        assert_eq!(ready(&client, &gw).await, (503, "unavailable".to_owned()), "{url}");
        let e = gw.inner().state.window("airlock:test:w", 10, 1000, 1).await.unwrap_err();
        assert!(e.to_string().contains(cause), "{url}: {e}");
        gw.stop().await;
    }
}

/// The same, as operators see it: the first warning the binary logs names the cause.
#[tokio::test]
async fn the_first_warning_names_a_wrong_password() {
    let redis = Redis::start(None);
    let upstream = Upstream::start().await;
    let gw = GatewayProcess::start_logging(&config(&format!("redis://gw:wrong@127.0.0.1:{}", redis.port), 100), &upstream, &[]).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/closed")).await.status, 503);
    let deadline = Instant::now() + Duration::from_secs(5);
    let first = loop {
        let log = gw.log();
        if let Some(line) = log.lines().find(|l| l.contains("state backend unavailable")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no warning logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(first.contains("AuthenticationFailed"), "the first warning: {first}");
    assert!(!first.contains("wrong@"), "the password is logged: {first}");
}

/// `/ready` is open to anyone who reaches the admin listener (balancers need no token): with
/// Redis down it says `unavailable` and nothing of the error, whose text can name internal
/// hosts and addresses. The error goes to the log instead, once while it stays the same, not at
/// every probe.
#[tokio::test]
async fn ready_with_redis_down_shows_no_address_and_logs_the_cause_once() {
    let mut redis = Redis::start(None);
    let port = redis.port;
    let upstream = Upstream::start().await;
    let gw = GatewayProcess::start_logging(&config(&format!("redis://127.0.0.1:{port}"), 500), &upstream, &[]).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.admin_url("/ready")).await.status, 200);
    redis.stop();

    for probe in 0..3 {
        let r = client.get(&gw.admin_url("/ready")).await;
        let text = r.text();
        assert_eq!(r.status, 503, "probe {probe}: {text}");
        assert_eq!(r.json()["checks"]["state_backend"]["error"], "unavailable", "probe {probe}: {text}");
        for secret in ["127.0.0.1", &port.to_string(), "refused", "os error"] {
            assert!(!text.contains(secret), "probe {probe}: the open /ready shows `{secret}`: {text}");
        }
    }
    let said = "readiness: the state backend fails its check";
    let log = airlock_tests::metrics::eventually("the readiness warning", || {
        let log = gw.log();
        log.contains(said).then_some(log)
    })
    .await;
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(said)).collect();
    assert_eq!(lines.len(), 1, "logged once for three probes failing alike:\n{log}");
    assert!(lines[0].contains("Connection refused"), "the log names the cause: {}", lines[0]);
}

/// A test CA, a certificate it issued for 127.0.0.1 and localhost (what a `redis-server` with
/// TLS serves) and one for a client, written into `dir` as `ca.pem`, `redis.pem`, `redis.key`,
/// `client.pem` and `client.key`.
fn redis_pki(dir: &std::path::Path) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Airlock test Redis CA");
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("key")).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params").signed_by(&key, &*ca).expect("sign");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("redis.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("redis.key"), key.serialize_pem()).expect("write");
    // A client certificate of the same CA (for a Redis with `tls-auth-clients yes`).
    let client_key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "airlock-gateway");
    let client = params.signed_by(&client_key, &*ca).expect("sign");
    std::fs::write(dir.join("client.pem"), client.pem()).expect("write");
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).expect("write");
}

/// `config` with `extra` lines in `[state]`.
fn config_with(redis_url: &str, extra: &str) -> String {
    config(redis_url, 1000).replacen("timeout_ms = 1000\n", &format!("timeout_ms = 1000\n{extra}"), 1)
}

/// A Redis that takes TLS only, with a password, as managed ones do (ElastiCache with in-transit
/// encryption, Azure Cache, Upstash): `rediss://`, the server's private CA in `redis_ca_file` and
/// the password in `redis_password_file` (a mounted secret), none of it in the config.
#[tokio::test]
async fn rediss_with_a_private_ca_and_the_password_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    redis_pki(dir.path());
    std::fs::write(dir.path().join("password"), "s3cret-pw\n").expect("write");
    let redis = Redis::start_tls(&dir.path().join("redis.pem"), &dir.path().join("redis.key"), Some("s3cret-pw"), None);
    let url = format!("rediss://127.0.0.1:{}", redis.tls_port.expect("TLS port"));
    let files = format!(
        "redis_ca_file = \"{}\"\nredis_password_file = \"{}\"\n",
        dir.path().join("ca.pem").display(),
        dir.path().join("password").display()
    );
    let upstream = Upstream::start().await;
    let client = HttpClient::http1();

    let gw = Gateway::start(&config_with(&url, &files), Some(&upstream)).await;
    // The fail-closed limiter answers 200 only when Redis ran its script.
    assert_eq!(client.get(&gw.url("/closed")).await.status, 200);
    assert_eq!(ready(&client, &gw).await, (200, String::new()));
    assert!(calls(&redis, "evalsha") + calls(&redis, "eval") >= 1, "the limiter ran on this Redis");
    // The password is not in what the admin API shows of the config.
    let shown = client.get(&gw.admin_url("/admin/config")).await.text();
    assert!(!shown.contains("s3cret-pw") && shown.contains("redis_password_file"), "{shown}");
    gw.stop().await;

    // Without the CA the certificate does not verify (the built-in roots do not know it): the
    // limiters apply their policy, the gateway serves.
    let password_only = format!("redis_password_file = \"{}\"\n", dir.path().join("password").display());
    let gw = Gateway::start(&config_with(&url, &password_only), Some(&upstream)).await;
    assert_eq!(client.get(&gw.url("/closed")).await.status, 503);
    assert_eq!(client.get(&gw.url("/open")).await.status, 200);
    assert_eq!(ready(&client, &gw).await.0, 503);
    gw.stop().await;

    // With the CA but no password: refused by Redis, the same way.
    let ca_only = format!("redis_ca_file = \"{}\"\n", dir.path().join("ca.pem").display());
    let gw = Gateway::start(&config_with(&url, &ca_only), Some(&upstream)).await;
    assert_eq!(client.get(&gw.url("/closed")).await.status, 503);
    gw.stop().await;
}

/// A Redis that asks TLS clients for a certificate (`tls-auth-clients yes`): the gateway
/// presents `redis_cert_file` / `redis_key_file`; without them the handshake fails and the
/// limiters apply their policy.
#[tokio::test]
async fn rediss_with_a_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    redis_pki(dir.path());
    let path = |name: &str| dir.path().join(name).display().to_string();
    let redis = Redis::start_tls(&dir.path().join("redis.pem"), &dir.path().join("redis.key"), None, Some(&dir.path().join("ca.pem")));
    let url = format!("rediss://127.0.0.1:{}", redis.tls_port.expect("TLS port"));
    let upstream = Upstream::start().await;
    let client = HttpClient::http1();
    let with_cert = format!(
        "redis_ca_file = \"{}\"\nredis_cert_file = \"{}\"\nredis_key_file = \"{}\"\n",
        path("ca.pem"),
        path("client.pem"),
        path("client.key")
    );
    let gw = Gateway::start(&config_with(&url, &with_cert), Some(&upstream)).await;
    assert_eq!(client.get(&gw.url("/closed")).await.status, 200, "Redis took the client certificate");
    assert_eq!(ready(&client, &gw).await, (200, String::new()));
    gw.stop().await;

    let gw = Gateway::start(&config_with(&url, &format!("redis_ca_file = \"{}\"\n", path("ca.pem"))), Some(&upstream)).await;
    assert_eq!(client.get(&gw.url("/closed")).await.status, 503, "no certificate: Redis refuses the handshake");
    assert_eq!(client.get(&gw.url("/open")).await.status, 200);
    gw.stop().await;
}

/// A rotated Redis password: the operator changes it in Redis (existing connections stay
/// authenticated) and in the mounted file, then reloads. The reload re-reads the file, and the
/// next connection (here forced by killing the gateway's) authenticates with the new one.
#[tokio::test]
async fn a_reload_applies_a_rotated_redis_password_to_the_next_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    redis_pki(dir.path());
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "first-pw\n").expect("write");
    let redis = Redis::start_tls(&dir.path().join("redis.pem"), &dir.path().join("redis.key"), Some("first-pw"), None);
    let url = format!("rediss://127.0.0.1:{}", redis.tls_port.expect("TLS port"));
    let files = format!("redis_ca_file = \"{}\"\nredis_password_file = \"{}\"\n", dir.path().join("ca.pem").display(), password_file.display());
    let config = config_with(&url, &files);
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    assert_eq!(client.get(&gw.url("/closed")).await.status, 200);

    // Rotated in Redis (the harness's own connection authenticates with the old one first).
    assert_eq!(redis.cmd(&["CONFIG", "SET", "requirepass", "second-pw"]), "+OK");
    let redis = redis.with_password("second-pw");
    std::fs::write(&password_file, "second-pw\n").expect("write");
    gw.reload(&config, Some(&upstream)).await.expect("the reload succeeds");
    // The gateway's connection is closed: the next operation connects again.
    redis.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    let mut status = 0;
    for _ in 0..50 {
        status = client.get(&gw.url("/closed")).await.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the next connection authenticates with the rotated password");
    gw.stop().await;
}

#[tokio::test]
async fn redis_tls_and_password_files_are_refused_at_their_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    redis_pki(dir.path());
    let file = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).expect("write");
        dir.path().join(name).display().to_string()
    };
    let (ca, not_pem, empty, password) = (file("ca2.pem", &std::fs::read_to_string(dir.path().join("ca.pem")).unwrap()), file("not.pem", "hello"), file("empty", "\n"), file("pw", "pw"));
    let two_lines = file("two-lines", "pw\nsecond\n");
    let missing = dir.path().join("missing").display().to_string();
    let (client_cert, client_key) = (dir.path().join("client.pem").display().to_string(), dir.path().join("client.key").display().to_string());
    for (url, extra, key, says) in [
        ("redis://127.0.0.1:6379", format!("redis_ca_file = \"{ca}\""), "state.redis_ca_file", "use a `rediss://` URL"),
        ("rediss://127.0.0.1:6379", format!("redis_ca_file = \"{not_pem}\""), "state.redis_ca_file", "not a PEM CA bundle"),
        ("rediss://127.0.0.1:6379", format!("redis_ca_file = \"{missing}\""), "state.redis_ca_file", "cannot read"),
        ("redis://:inline@127.0.0.1:6379", format!("redis_password_file = \"{password}\""), "state.redis_password_file", "already holds a password"),
        ("redis://127.0.0.1:6379", format!("redis_password_file = \"{empty}\""), "state.redis_password_file", "is empty"),
        ("redis://127.0.0.1:6379", format!("redis_password_file = \"{two_lines}\""), "state.redis_password_file", "several lines"),
        ("rediss://127.0.0.1:6379", format!("redis_cert_file = \"{ca}\""), "state.redis_cert_file", "needs both"),
        ("rediss://127.0.0.1:6379", format!("redis_key_file = \"{ca}\""), "state.redis_key_file", "needs both"),
        ("redis://127.0.0.1:6379", format!("redis_cert_file = \"{client_cert}\"\nredis_key_file = \"{client_key}\""), "state.redis_cert_file", "use a `rediss://` URL"),
        ("rediss://127.0.0.1:6379", format!("redis_cert_file = \"{client_cert}\"\nredis_key_file = \"{not_pem}\""), "state.redis_cert_file", "private key"),
    ] {
        let config = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n[state]\nbackend = \"redis\"\nredis_url = \"{url}\"\n{extra}\n");
        let err = Gateway::try_start(&config, None).await.err().expect("refused").to_string();
        assert!(err.contains("airlock.toml:6") && err.contains(key) && err.contains(says), "{config}\n{err}");
    }
    // Redis settings with the memory backend (the default) would be ignored: each replica would
    // count alone.
    for (line, key) in [("redis_url = \"redis://127.0.0.1:6379\"".to_owned(), "state.redis_url"), (format!("redis_password_file = \"{password}\""), "state.redis_password_file")] {
        let config = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n[state]\n{line}\n");
        let err = Gateway::try_start(&config, None).await.err().expect("refused").to_string();
        assert!(err.contains("airlock.toml:4") && err.contains(key) && err.contains("`backend` is `memory`"), "{config}\n{err}");
    }
}
