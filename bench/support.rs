//! What the criterion benches share: a request as the proxy hands it to a chain, and a warm pool
//! of one loaded, configured plugin.

use std::sync::Arc;
use std::time::Duration;

use airlock::config::{Isolation, RuntimeConfig};
use airlock::exchange::RequestState;
use airlock::runtime::cache::CompileCache;
use airlock::runtime::{InstancePool, InstanceSettings, LoadedPlugin, SandboxEngine};
use http::{HeaderMap, Method};

/// A GET of `/bench` with these headers.
pub fn request(headers: HeaderMap) -> RequestState {
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

/// Loads `source` with `grants` and configures a pool of it with `config` (JSON).
pub fn pool(rt: &tokio::runtime::Runtime, source: &str, grants: &[&str], config: String, isolation: Isolation) -> Arc<InstancePool> {
    rt.block_on(async {
        let sandbox = SandboxEngine::new(&RuntimeConfig::default()).expect("sandbox");
        let cache = CompileCache::new(CompileCache::default_dir());
        let grants: Vec<String> = grants.iter().map(|g| (*g).to_owned()).collect();
        let plugin = LoadedPlugin::load(&sandbox, &cache, source, std::path::Path::new("."), &grants)
            .await
            .expect("load the plugin");
        let settings = InstanceSettings {
            memory_bytes: 64 << 20,
            cpu_deadline: Duration::from_millis(100),
            isolation,
            pool_size: 4,
            max_uses: u64::MAX,
            state: None,
            files: None,
            http: None,
        };
        Arc::new(InstancePool::new(plugin, source.into(), config, settings).await.expect("configure"))
    })
}
