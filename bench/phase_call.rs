//! One plugin phase call, measured: the built-in `headers` plugin reading one request header and
//! writing one (`x-out = "${header.x-in}"`), on a warm pooled instance and with
//! `isolation = "request"` (a fresh instance per call). Run: `cargo bench -p airlock --bench phase_call`.
//! Targets (DESIGN.md section 3, issue 2): warm <= 3 us median; strict isolation <= 8 us.

use std::sync::Arc;
use std::time::Duration;

use airlock::config::{Isolation, RuntimeConfig};
use airlock::exchange::RequestState;
use airlock::runtime::cache::CompileCache;
use airlock::runtime::{InstancePool, InstanceSettings, LoadedPlugin, SandboxEngine};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};

fn request() -> RequestState {
    let mut headers = HeaderMap::new();
    headers.insert("x-in", HeaderValue::from_static("value-to-copy"));
    headers.insert("user-agent", HeaderValue::from_static("bench/1"));
    RequestState {
        method: Method::GET,
        path: "/bench".into(),
        query: None,
        headers,
        params: Vec::new(),
        route_id: "bench".into(),
        client_addr: "127.0.0.1:1".parse().expect("addr"),
        scheme: "http",
        request_id: "bench-request".into(),
        body: None,
        context: Default::default(),
    }
}

fn pool(rt: &tokio::runtime::Runtime, isolation: Isolation) -> Arc<InstancePool> {
    rt.block_on(async {
        let sandbox = SandboxEngine::new(&RuntimeConfig::default()).expect("sandbox");
        let cache = CompileCache::new(CompileCache::default_dir());
        let plugin = LoadedPlugin::load(&sandbox, &cache, "builtin:headers", std::path::Path::new("."), &[])
            .await
            .expect("load headers plugin");
        let settings = InstanceSettings {
            memory_bytes: 64 << 20,
            cpu_deadline: Duration::from_millis(100),
            isolation,
            pool_size: 4,
            max_uses: u64::MAX,
            state: None,
        };
        let config = r#"{"request":{"set":{"x-out":"${header.x-in}"}}}"#.to_owned();
        Arc::new(InstancePool::new(plugin, "headers".into(), config, settings).await.expect("configure"))
    })
}

fn phase_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    for (label, isolation) in [("warm_pool", Isolation::Pool), ("isolation_request", Isolation::Request)] {
        let pool = pool(&rt, isolation);
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
