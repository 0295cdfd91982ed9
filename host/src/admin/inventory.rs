//! What the admin API lists: each route with its chain (`/admin/routes`), and each plugin with
//! its source, hash, grants, limits and call statistics (`/admin/plugins`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{Config, FailurePolicy, Isolation};
use crate::gateway::Gateway;
use crate::runtime::ChainEntry;

/// What a chain entry was built with, kept for the admin API.
#[derive(Debug, Clone)]
pub struct PluginFacts {
    /// `builtin:<name>` or the `.wasm` path as configured.
    pub source: String,
    /// Capabilities granted (beyond the WASI baseline and `log`).
    pub capabilities: Vec<String>,
    /// Memory cap of one instance, in bytes.
    pub memory_bytes: usize,
    /// CPU deadline of one call, in milliseconds.
    pub cpu_ms: u64,
    /// Instance sharing.
    pub isolation: Isolation,
    /// Most idle warm instances.
    pub pool_size: usize,
    /// Calls after which an instance is replaced.
    pub max_uses: u64,
    /// The directory the `files` grant opens to it (read-only), if any.
    pub files_dir: Option<std::path::PathBuf>,
    /// What the `http-client` grant lets it call, if anything.
    pub http: Option<HttpReach>,
}

/// The reach of an `http-client` grant, as `airlock audit` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpReach {
    /// The origins calls may go to, normalised (`https://idp.example.com:443`).
    pub allow: Vec<String>,
    /// Longest one call may take, in milliseconds.
    pub timeout_ms: u64,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
}

/// `/admin/routes`: every route and its chain, in config order. `config` is the one `gateway`
/// was built from: it says which chain entries are the global chain's.
pub fn routes(gateway: &Gateway, config: &Config) -> Value {
    let routes: Vec<Value> = gateway
        .routes
        .routes()
        .iter()
        .map(|route| {
            let (path, path_prefix) = match &route.matches.path {
                crate::router::PathMatch::Exact(p) => (Some(p.as_str()), None),
                crate::router::PathMatch::Prefix(p) => (None, Some(p.as_str())),
            };
            // The global chain's entries come first, the same in every route that runs them.
            let globals = config.global_entries(&route.id);
            let chain: Vec<Value> = route.chain.entries().iter().enumerate().map(|(i, e)| chain_entry(e, i < globals)).collect();
            json!({
                "id": &*route.id,
                "hosts": route.matches.hosts,
                // What it serves: a `GET` route takes `HEAD` too (`router::served_methods`).
                "methods": crate::router::served_methods(&route.matches.methods).iter().map(http::Method::as_str).collect::<Vec<_>>(),
                "path": path,
                "path_prefix": path_prefix,
                "headers": header_conditions(&route.matches.headers),
                "upstream": route.upstream().map(|u| json!({
                    "name": &*u.name,
                    "targets": u.targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    // In `targets` order: each one's weight, and whether it takes requests now.
                    "weights": (0..u.targets.len()).map(|i| u.weight(i)).collect::<Vec<_>>(),
                    "in_rotation": (0..u.targets.len()).map(|i| !u.target_down(i)).collect::<Vec<_>>(),
                    "balance": u.balance(),
                    // Session affinity: the key requests are placed by (as configured), and the
                    // cookie the gateway sets for a client without it; null when not set.
                    "hash_on": u.hash_on().map(ToString::to_string),
                    "hash_cookie": u.hash_cookie().map(|c| json!({
                        "name": c.name(),
                        "path": c.path(),
                        "max_age_s": c.max_age_s(),
                    })),
                    // Requests in flight to each target now, counted with `least_requests` only.
                    "in_flight": u.target_loads(),
                })),
                // Where copies of a share of its upstream requests go too, and how many are
                // in flight now (at most `max_in_flight`).
                "mirror": route.mirror.as_ref().map(|m| json!({
                    "upstream": &*m.upstream().name,
                    "percent": m.percent(),
                    "in_flight": m.in_flight(),
                    "max_in_flight": crate::proxy::mirror::MAX_IN_FLIGHT,
                })),
                "timeout_ms": route.timeout.as_millis() as u64,
                "tunnel_idle_ms": route.tunnel_idle.as_millis() as u64,
                "max_body_bytes": route.max_body_bytes,
                "chain": chain,
            })
        })
        .collect();
    json!({ "routes": routes })
}

/// A route's header conditions, name to accepted values, redacted as `/admin/config` redacts
/// them (a condition on `x-internal-token` or a `Bearer ...` value).
fn header_conditions(conditions: &[crate::router::HeaderMatch]) -> Value {
    let mut map = serde_json::Map::new();
    for condition in conditions {
        let values: Vec<String> = condition.values.iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        map.insert(condition.name.to_string(), json!(values));
    }
    let mut value = Value::Object(map);
    crate::admin::redact::redact_secret_keys(&mut value);
    value
}

/// One entry of a route's chain; `global`: it comes from `[[global.plugins]]`.
fn chain_entry(entry: &ChainEntry, global: bool) -> Value {
    json!({
        "plugin": entry.name(),
        "global": global,
        "source": entry.facts.source,
        "failure": failure_name(entry.failure),
        "on_request": entry.descriptor.on_request,
        "on_response": entry.descriptor.on_response,
        "request_body": entry.descriptor.request_body,
        "response_body": entry.descriptor.response_body,
        // Made by the gateway on every request, with no call (`fixed-edits`): counted, not shown.
        "fixed_edits": entry.pool.fixed_edits().map_or(0, |fixed| fixed.len()),
    })
}

fn failure_name(policy: FailurePolicy) -> &'static str {
    match policy {
        FailurePolicy::Closed => "closed",
        FailurePolicy::Open => "open",
    }
}

/// `/admin/plugins`: every plugin (by name) used by a chain, with the routes using it and its
/// call statistics since start. Percentiles are bucket upper bounds of the latency histogram.
pub fn plugins(gateway: &Gateway) -> Value {
    let mut by_name: BTreeMap<&str, (&Arc<ChainEntry>, Vec<&str>)> = BTreeMap::new();
    for route in gateway.routes.routes() {
        for entry in route.chain.entries() {
            let (_, routes) = by_name.entry(entry.name()).or_insert((entry, Vec::new()));
            if !routes.contains(&&*route.id) {
                routes.push(&route.id);
            }
        }
    }
    let plugins: Vec<Value> = by_name
        .into_iter()
        .map(|(name, (entry, routes))| {
            let facts = &entry.facts;
            let metrics = &entry.metrics;
            let failures: BTreeMap<&str, u64> = metrics.failures().collect();
            json!({
                "name": name,
                "source": facts.source,
                "sha256": entry.pool.plugin().sha256,
                "capabilities": facts.capabilities,
                "limits": {
                    "memory_bytes": facts.memory_bytes,
                    "cpu_ms": facts.cpu_ms,
                    "isolation": match facts.isolation { Isolation::Pool => "pool", Isolation::Request => "request" },
                    "pool_size": facts.pool_size,
                    "max_uses": facts.max_uses,
                },
                "routes": routes,
                "calls": metrics.calls(),
                "failures": failures,
                "p99_ms": {
                    "on_request": metrics.on_request().quantile_upper_bound(0.99).map(seconds_to_ms),
                    "on_response": metrics.on_response().quantile_upper_bound(0.99).map(seconds_to_ms),
                },
            })
        })
        .collect();
    json!({ "plugins": plugins })
}

/// Milliseconds for JSON; `null` for an unbounded bucket.
fn seconds_to_ms(seconds: f64) -> Option<f64> {
    seconds.is_finite().then_some(seconds * 1000.0)
}
