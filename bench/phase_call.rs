//! One plugin phase call, measured: the built-in `headers` plugin reading one request header and
//! writing one (`x-out = "${header.x-in}"`), on a warm pooled instance and with
//! `isolation = "request"` (a fresh instance per call). Run: `cargo bench -p airlock --bench phase_call`.
//! Targets (DESIGN.md section 3, issue 2): warm <= 3 us median; strict isolation <= 8 us.
//! Also the two other plugins of the load benchmark's typical chain on warm instances, each with
//! the request that chain gives it: `key-auth` (a valid key in `x-api-key`) and `rate-limit`
//! (one limit high enough to admit every call, memory state, its draft `RateLimit` headers).

use std::sync::Arc;

use airlock::config::Isolation;
use airlock::exchange::RequestState;
use airlock::runtime::InstancePool;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Method;
use tokio::runtime::Runtime;

#[path = "support.rs"]
mod support;

fn request() -> RequestState {
    support::request(Method::GET, &[("x-in", "value-to-copy"), ("user-agent", "bench/1")], None)
}

/// Measures `pool`'s `on-request` call on a fresh request from `request` each time.
fn bench_on_request(c: &mut Criterion, rt: &Runtime, id: &str, pool: &Arc<InstancePool>, request: impl Fn() -> RequestState + Copy) {
    c.bench_function(id, |b| {
        b.to_async(rt).iter_batched(
            || Box::new(request()),
            |req| {
                let pool = pool.clone();
                async move { pool.on_request(req, false, std::time::Instant::now()).await }
            },
            BatchSize::SmallInput,
        )
    });
}

fn phase_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    for (label, isolation) in [("warm_pool", Isolation::Pool), ("isolation_request", Isolation::Request)] {
        let pool = support::pool(&rt, "headers", r#"{"request":{"set":{"x-out":"${header.x-in}"}}}"#, isolation);
        // Check the call does what is measured.
        let (req, result) = rt.block_on(pool.on_request(Box::new(request()), false, std::time::Instant::now()));
        assert!(result.is_ok());
        assert_eq!(req.headers["x-out"], "value-to-copy");
        bench_on_request(c, &rt, &format!("on_request/header_read_write/{label}"), &pool, request);
    }
}

/// `key-auth` and `rate-limit` as the load benchmark's typical chain configures them.
fn typical_chain_plugins(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let key_auth = support::pool(
        &rt,
        "key-auth",
        r#"{"consumers":[{"id":"bench","credentials":{"keys":["bench-key"]}}]}"#,
        Isolation::Pool,
    );
    let rate_limit = support::pool_with_grants(
        &rt,
        "rate-limit",
        &["state"],
        r#"{"limits":[{"name":"bench","rate":100000000,"per":"second","burst":100000000}]}"#,
        Isolation::Pool,
    );
    let keyed = || support::request(Method::GET, &[("x-api-key", "bench-key"), ("user-agent", "bench/1")], None);
    // Check the calls do what is measured: the key is taken (and hidden), the limit admits.
    let (req, result) = rt.block_on(key_auth.on_request(Box::new(keyed()), false, std::time::Instant::now()));
    assert!(matches!(result, Ok(airlock::runtime::PhaseAction::Continue)), "{result:?}");
    assert!(!req.headers.contains_key("x-api-key"));
    let (req, result) = rt.block_on(rate_limit.on_request(Box::new(keyed()), false, std::time::Instant::now()));
    assert!(matches!(result, Ok(airlock::runtime::PhaseAction::Continue)), "{result:?}");
    assert!(req.response_edits.any_before(1));
    for (label, pool) in [("key_auth", &key_auth), ("rate_limit", &rate_limit)] {
        bench_on_request(c, &rt, &format!("on_request/{label}/warm_pool"), pool, keyed);
    }
}

criterion_group!(benches, phase_call, typical_chain_plugins);
criterion_main!(benches);
