//! `builtin:transform` overhead per request: one request phase call on a warm pooled instance
//! with JSON body rules (remove `**.token`, rename, set with a template), for 1 KiB and 64 KiB
//! bodies, against the same call with a header rule only (no body: what a route without body
//! rules pays). Run: `cargo bench -p airlock --bench transform`.

use airlock::config::Isolation;
use airlock::exchange::RequestState;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Method;

#[path = "support.rs"]
mod support;

const BODY_RULES: &str = r#"{"request":{"body":{"remove":["**.token"],"rename":{"*.name":"title"},"set":{"meta.by":"${header.x-in}"}}}}"#;
const HEADER_RULE: &str = r#"{"request":{"headers":{"set":{"x-out":"${header.x-in}"}}}}"#;

/// A JSON document of about `size` bytes: an object holding an array of small items.
fn document(size: usize) -> Bytes {
    let item = r#"{"id":12345,"name":"item","token":"abcdefgh","tags":["a","b"]}"#;
    let count = (size / (item.len() + 1)).max(1);
    Bytes::from(format!("{{\"items\":[{}]}}", vec![item; count].join(",")))
}

fn request(body: Option<Bytes>) -> RequestState {
    support::request(Method::POST, &[("x-in", "bench"), ("content-type", "application/json")], body)
}

fn transform(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let headers_only = support::pool(&rt, "transform", HEADER_RULE, Isolation::Pool);
    let (req, result) = rt.block_on(headers_only.on_request(Box::new(request(None)), false, std::time::Instant::now()));
    assert!(result.is_ok());
    assert_eq!(req.headers["x-out"], "bench");
    c.bench_function("transform/on_request/header_rule_no_body", |b| {
        b.to_async(&rt).iter_batched(
            || Box::new(request(None)),
            |req| {
                let pool = headers_only.clone();
                async move { pool.on_request(req, false, std::time::Instant::now()).await }
            },
            BatchSize::SmallInput,
        )
    });

    let body_rules = support::pool(&rt, "transform", BODY_RULES, Isolation::Pool);
    for (label, size) in [("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let body = document(size);
        // Check the call does what is measured.
        let (req, result) = rt.block_on(body_rules.on_request(Box::new(request(Some(body.clone()))), true, std::time::Instant::now()));
        assert!(result.is_ok());
        let out = req.body.expect("body");
        assert!(out.len() < body.len() && !out.windows(5).any(|w| w == b"token"));
        c.bench_function(&format!("transform/on_request/json_body_rules/{label}"), |b| {
            b.to_async(&rt).iter_batched(
                || Box::new(request(Some(body.clone()))),
                |req| {
                    let pool = body_rules.clone();
                    async move { pool.on_request(req, true, std::time::Instant::now()).await }
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, transform);
criterion_main!(benches);
