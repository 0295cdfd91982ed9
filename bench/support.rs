//! What the benchmarks share: a configured plugin's instance pool, and the request a phase call
//! is measured on.

// Each bench includes this module and uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use airlock::config::{Isolation, RuntimeConfig, StateConfig};
use airlock::exchange::RequestState;
use airlock::runtime::cache::CompileCache;
use airlock::runtime::{InstancePool, InstanceSettings, LoadedPlugin, SandboxEngine};
use airlock::state::{ScopedState, StateStore};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The instance pool of built-in plugin `name` with `config` (JSON), as a chain entry has it.
pub fn pool(rt: &tokio::runtime::Runtime, name: &str, config: &str, isolation: Isolation) -> Arc<InstancePool> {
    pool_with_grants(rt, name, &[], config, isolation)
}

/// Like [`pool`], with the plugin granted `grants` (as a `[plugins.<name>]` definition would).
pub fn pool_with_grants(
    rt: &tokio::runtime::Runtime,
    name: &str,
    grants: &[&str],
    config: &str,
    isolation: Isolation,
) -> Arc<InstancePool> {
    rt.block_on(async {
        let sandbox = SandboxEngine::new(&RuntimeConfig::default()).expect("sandbox");
        let cache = CompileCache::new(CompileCache::default_dir());
        let source = format!("builtin:{name}");
        let grants: Vec<String> = grants.iter().map(|g| (*g).to_owned()).collect();
        // As the gateway loads a built-in: with the built-ins' default grants added.
        let grants = airlock::runtime::capabilities::effective_grants(&source, &grants);
        // `AIRLOCK_BENCH_PLUGINS=<dir>` measures the built-ins built there instead (e.g. a
        // plugin built another way), without building the benchmark again.
        let source = match std::env::var("AIRLOCK_BENCH_PLUGINS") {
            Ok(dir) => format!("{dir}/airlock_plugin_{}.wasm", name.replace('-', "_")),
            Err(_) => source,
        };
        let plugin = LoadedPlugin::load(&sandbox, &cache, &source, std::path::Path::new("."), &grants)
            .await
            .expect("load the plugin");
        // A `state` grant gets the in-memory store, as the gateway's default backend.
        let state = grants.iter().any(|g| g == "state").then(|| {
            let store = StateStore::from_config(&StateConfig::default()).expect("memory state store");
            ScopedState::new(Arc::new(store), name)
        });
        let settings = InstanceSettings {
            memory_bytes: 64 << 20,
            cpu_deadline: Duration::from_millis(1000),
            isolation,
            pool_size: 4,
            max_uses: u64::MAX,
            state,
            files: None,
            http: None,
            metrics: None,
            share: None,
        };
        Arc::new(InstancePool::new(plugin, name.into(), config.to_owned(), settings).await.expect("configure"))
    })
}

/// A request on route `bench` with these headers and (buffered) body.
pub fn request(method: Method, headers: &[(&'static str, &'static str)], body: Option<Bytes>) -> RequestState {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    request_with_headers(method, map, body)
}

/// A request on route `bench` with this header map and (buffered) body.
pub fn request_with_headers(method: Method, map: HeaderMap, body: Option<Bytes>) -> RequestState {
    RequestState {
        method,
        path: "/bench".into(),
        query: None,
        headers: map,
        params: Vec::new(),
        route_id: "bench".into(),
        client_addr: "127.0.0.1:1".parse().expect("addr"),
        client_ip: [127, 0, 0, 1].into(),
        scheme: "http",
        request_id: "bench-request".into(),
        request_id_header: Some(http::HeaderValue::from_static("bench-request")),
        body,
        context: Default::default(),
        response_edits: Default::default(),
        header_limits: airlock::config::LimitsConfig::default().header_limits(),
        body_limit: u64::MAX,
        host_from_plugin: false,
        client_body: false,
        header_tally: Default::default(),
        past_limits: false,
        removed_headers: Default::default(),
    }
}
