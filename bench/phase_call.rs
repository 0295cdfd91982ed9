//! One plugin phase call, measured: the built-in `headers` plugin reading one request header and
//! writing one (`x-out = "${header.x-in}"`), on a warm pooled instance and with
//! `isolation = "request"` (a fresh instance per call). Run: `cargo bench -p airlock --bench phase_call`.
//! Targets (DESIGN.md section 3, issue 2): warm <= 3 us median; strict isolation <= 8 us.

use airlock::config::Isolation;
use airlock::exchange::RequestState;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Method;

#[path = "support.rs"]
mod support;

fn request() -> RequestState {
    support::request(Method::GET, &[("x-in", "value-to-copy"), ("user-agent", "bench/1")], None)
}

fn phase_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    for (label, isolation) in [("warm_pool", Isolation::Pool), ("isolation_request", Isolation::Request)] {
        let pool = support::pool(&rt, "headers", r#"{"request":{"set":{"x-out":"${header.x-in}"}}}"#, isolation);
        // Check the call does what is measured.
        let (req, result) = rt.block_on(pool.on_request(request(), false));
        assert!(result.is_ok());
        assert_eq!(req.headers["x-out"], "value-to-copy");
        c.bench_function(&format!("on_request/header_read_write/{label}"), |b| {
            b.to_async(&rt).iter_batched(
                request,
                |req| {
                    let pool = pool.clone();
                    async move { pool.on_request(req, false).await }
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, phase_call);
criterion_main!(benches);
