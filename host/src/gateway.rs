//! A [`Gateway`] is everything one config turns into: routes, their plugin chains, upstreams and
//! limits. Building one validates the whole config (references, routes, and every plugin loaded
//! and configured), so a config either builds completely or is rejected with every problem found,
//! each located at its file, line and key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use crate::admin::inventory::PluginFacts;
use crate::config::chain_order::{self, ACCESS_CONTROL_BUILTINS};
use crate::config::{
    ChainEntryConfig, Config, ConfigError, ConfigIssue, ConfigSource, FailurePolicy, HostHeader, LimitsConfig,
    PluginConfig, RouteConfig, TimeoutsConfig, route_rules,
};
use crate::proxy::client_ip::TrustedProxies;
use crate::proxy::upstream::Upstream;
use crate::router::{HeaderMatch, PathMatch, RouteSpec, RouteTable};
use crate::runtime::cache::{CompileCache, ComponentBytes};
use crate::runtime::engine::MAX_PLUGIN_MEMORY;
use crate::runtime::pool::{DEFAULT_MAX_USES, DEFAULT_POOL_SIZE};
use crate::runtime::{ChainEntry, InstancePool, InstanceSettings, LoadedPlugin, PluginChain, PluginError, SandboxEngine};
use crate::signing::{self, PublicKey};
use crate::state::{ScopedState, StateStore};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::RouteMetrics;

/// One route, ready to serve.
pub struct Route {
    /// Route id (config `id`, or `route-<index>`).
    pub id: Arc<str>,
    /// Where requests go, unless a plugin answers ([`Route::upstream`]), with what the route's
    /// answers from it hold of the route ([`crate::proxy::upstream::ResponseOrigin`]).
    pub answered_by: Option<Arc<crate::proxy::upstream::RouteUpstream>>,
    /// The plugin chain (global entries first).
    pub chain: PluginChain,
    /// Removed from the front of the path before it goes upstream.
    pub strip_prefix: Option<String>,
    /// Replaces the upstream path, with `${param.x}` substituted.
    pub rewrite: Option<String>,
    /// Swaps the matched `path_prefix` for another, the rest of the path kept.
    pub prefix_rewrite: Option<PrefixRewrite>,
    /// `Host` policy.
    pub host_header: HostHeader,
    /// Body limit.
    pub max_body_bytes: u64,
    /// Upstream response timeout (also caps plugin delays).
    pub timeout: Duration,
    /// How long this route's switched connections (WebSockets) may pass nothing: its
    /// `tunnel_idle_ms`, else `timeouts.tunnel_idle_ms`.
    pub tunnel_idle: Duration,
    /// This route's metric handles.
    pub metrics: RouteMetrics,
    /// What requests it matches (hosts, methods, path), for the admin API.
    pub matches: RouteSpec,
    /// How its responses are gzipped for clients that accept it; `None`: they are not.
    pub compression: Option<Arc<crate::proxy::compress::Compression>>,
    /// Where copies of a share of its upstream requests go too (`mirror`); `None` for most.
    pub mirror: Option<Arc<crate::proxy::mirror::Mirror>>,
}

impl Route {
    /// Where requests go, unless a plugin answers; `None` for a route its plugins answer.
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        self.answered_by.as_ref().map(|by| &by.upstream)
    }

    /// Whether the route sends upstream another path than the client's (`rewrite`,
    /// `prefix_rewrite`, `strip_prefix`).
    pub fn changes_path(&self) -> bool {
        self.rewrite.is_some() || self.prefix_rewrite.is_some() || self.strip_prefix.is_some()
    }

    /// The path sent upstream for a client path, after `rewrite`, `prefix_rewrite` or
    /// `strip_prefix` (the config allows one of them): a `rewrite` may end with a query of its
    /// own, which [`push_query`] joins the client's to.
    pub fn upstream_path(&self, path: &str, params: &[(String, String)]) -> String {
        if let Some(template) = &self.rewrite {
            return rewrite_path(template, params);
        }
        if let Some(swap) = &self.prefix_rewrite
            && let Some(swapped) = swap.apply(path)
        {
            return swapped;
        }
        if let Some(prefix) = &self.strip_prefix
            && let Some(rest) = path.strip_prefix(prefix.as_str())
        {
            if rest.is_empty() {
                return "/".to_owned();
            }
            if rest.starts_with('/') {
                return rest.to_owned();
            }
        }
        path.to_owned()
    }
}

/// A route's `prefix_rewrite`: the prefix its `path_prefix` matched, swapped for another.
pub struct PrefixRewrite {
    /// The route's `path_prefix` without a trailing `/`, as the router matches it (`/` is
    /// empty): a path the route matched is this, then its end or a `/`.
    pub matched: String,
    /// What replaces it, as written (a normalized path, checked at load).
    pub replacement: String,
}

impl PrefixRewrite {
    /// `path` with its matched prefix swapped, joined with one `/` whatever either ends with
    /// (`/v1/items` to `/v2/items` with `/v2` or `/v2/`, to `/items` with `/`), and the path
    /// that is the prefix alone (`/v1`) sent as the replacement is written. `None` for a path
    /// the prefix does not start on a segment boundary (not one the route matched).
    pub fn apply(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(self.matched.as_str())?;
        if rest.is_empty() {
            return Some(self.replacement.clone());
        }
        if !rest.starts_with('/') {
            return None;
        }
        let base = self.replacement.strip_suffix('/').unwrap_or(&self.replacement);
        let mut swapped = String::with_capacity(base.len() + rest.len());
        swapped.push_str(base);
        swapped.push_str(rest);
        Some(swapped)
    }
}

/// Appends the client's query (`query`, without its `?`) to the upstream path: after a `?`, or
/// after a `&` when the route's `rewrite` gave the path a query of its own, as nginx joins them
/// (a second `?` would have made the client's first parameter part of the rewrite's last value).
pub fn push_query(path: &mut String, query: &str) {
    if path.contains('?') {
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
    } else {
        path.push('?');
        path.push_str(query);
    }
}

/// A route's `rewrite` template with each `${param.NAME}` replaced by that param, encoded as one
/// path segment: a value cannot add segments (`/`), start a query (`?`), or climb out of its
/// place (`.` and `..` are sent as `%2E` and `%2E%2E`, so the upstream does not resolve them).
/// In the template's query (after its `?`) a value cannot add parameters either (`&`, `=` and
/// `+` are encoded too): `?user=${param.id}` stays one parameter whatever the client sent.
pub fn rewrite_path(template: &str, params: &[(String, String)]) -> String {
    match template.split_once('?') {
        Some((path, query)) => {
            let mut out = fill_params(path, params, PATH_SEGMENT);
            out.push('?');
            out.push_str(&fill_params(query, params, QUERY_VALUE));
            out
        }
        None => fill_params(template, params, PATH_SEGMENT),
    }
}

/// `template` with each `${param.NAME}` replaced by that param, `escaped` (and `.`, `..` as
/// `%2E`, `%2E%2E`).
fn fill_params(template: &str, params: &[(String, String)], escaped: &'static percent_encoding::AsciiSet) -> String {
    let mut out = template.to_owned();
    for (name, value) in params {
        let encoded = match value.as_str() {
            "." => "%2E".to_owned(),
            ".." => "%2E%2E".to_owned(),
            _ => percent_encoding::utf8_percent_encode(value, escaped).to_string(),
        };
        out = out.replace(&format!("${{param.{name}}}"), &encoded);
    }
    out
}

/// Characters escaped when a param value is put back into a path segment: besides what cannot
/// stand in one (RFC 3986 `pchar`), `;` and `\`, so a param cannot end up as Tomcat's `..;` (a
/// path parameter stripped before normalization, climbing out like `..`) nor a backslash some
/// servers read as `/`, though the client sent them escaped (`..%3B`, `%5C`) past the gateway's
/// own checks. `builtin:transform`'s path templates escape the same.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b';')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Characters escaped when a param value is put into a `rewrite`'s query: a path segment's, and
/// those that would end its parameter or start another (`+` reads as a space in forms).
const QUERY_VALUE: &percent_encoding::AsciiSet = &PATH_SEGMENT.add(b'&').add(b'=').add(b'+');

/// Everything one config turns into.
pub struct Gateway {
    /// The routes.
    pub routes: RouteTable<Route>,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Timeouts.
    pub timeouts: TimeoutsConfig,
    /// The sandbox the plugins run in.
    pub sandbox: SandboxEngine,
    /// The backend of the plugins' `state` capability (`[state]`).
    pub state: Arc<StateStore>,
    /// Metrics, trace settings and the access log.
    pub telemetry: Arc<Telemetry>,
    /// Each listener's trusted proxies, in config order: who a request's client is.
    pub trusted_proxies: Vec<TrustedProxies>,
    /// Each listener's `proxy_protocol_from`, in config order: the peers allowed to send a
    /// PROXY protocol header (empty: any).
    pub proxy_protocol_peers: Vec<TrustedProxies>,
    /// The upstreams by name, for the next reload to keep those it leaves unchanged.
    pub upstreams: HashMap<String, Arc<Upstream>>,
}

/// One network list of each listener (`trusted_proxies` or `proxy_protocol_from`, named `key`,
/// read by `entries`), parsed; a bad entry is an issue at its line.
fn listener_networks(
    source: &ConfigSource,
    config: &Config,
    key: &str,
    entries: fn(&crate::config::ListenerConfig) -> &[Spanned<String>],
    issues: &mut Vec<ConfigIssue>,
) -> Vec<TrustedProxies> {
    let listeners = config.listeners.iter().enumerate();
    let networks = |(i, listener): (usize, &crate::config::ListenerConfig)| {
        entries(listener)
            .iter()
            .enumerate()
            .filter_map(|(j, entry)| {
                let parsed = TrustedProxies::network(entry.get_ref());
                let net = parsed.map_err(|e| issues.push(source.issue(Some(entry.span()), &format!("listeners[{i}].{key}[{j}]"), e))).ok()?;
                // nginx warns of the same ("low address bits are meaningless"): the entry
                // means its network, which may be wider than the address it names.
                if net.trunc() != net {
                    tracing::warn!(
                        config = %source.name,
                        "listeners[{i}].{key}[{j}]: `{}` has host bits set: it means {}, every address of it (write that, or the address alone)",
                        entry.get_ref(),
                        net.trunc()
                    );
                }
                Some(net)
            })
            .collect()
    };
    listeners.map(networks).collect()
}

/// Each listener's `proxy_protocol_from`, parsed; the key without `proxy_protocol = true` is an
/// issue at its line (it would allow a header the listener never reads).
fn proxy_protocol_peers(source: &ConfigSource, config: &Config, issues: &mut Vec<ConfigIssue>) -> Vec<TrustedProxies> {
    for (i, listener) in config.listeners.iter().enumerate() {
        if let Some(first) = listener.proxy_protocol_from.first().filter(|_| !listener.proxy_protocol) {
            let message = "`proxy_protocol_from` names who may send a PROXY protocol header: it needs `proxy_protocol = true`";
            issues.push(source.issue(Some(first.span()), &format!("listeners[{i}].proxy_protocol_from"), message));
        }
        // Allowed (a listener only a balancer can reach), but `check` says what it trusts: any
        // peer's header names the client that ip-restrict, limits and the access log believe.
        if listener.proxy_protocol && listener.proxy_protocol_from.is_empty() {
            tracing::warn!(
                config = %source.name,
                "listeners[{i}]: `proxy_protocol = true` without `proxy_protocol_from` believes a PROXY header from any peer: a client that reaches the listener past the balancer names any address it likes (list the balancers in `proxy_protocol_from`)"
            );
        }
    }
    listener_networks(source, config, "proxy_protocol_from", |l| &l.proxy_protocol_from, issues)
}

/// What a config names as a plugin: a definition, or a source used directly.
struct PluginDef {
    source: String,
    capabilities: Vec<String>,
    settings: InstanceSettings,
    failure: FailurePolicy,
}

impl Gateway {
    /// Starts a serving gateway's background work (not while it is only built, as by `airlock
    /// check` or a reload that fails): probing the targets of every upstream with a health check
    /// (an upstream a reload kept goes on with the probing it had), and sweeping the memory state
    /// store's expired keys (once: the store outlives reloads).
    pub fn start_background_tasks(&self) {
        for upstream in self.upstreams.values() {
            crate::proxy::health_check::start(upstream);
        }
        crate::state::memory::MemoryStore::start_sweeping(&self.state);
    }

    /// Builds a gateway from a parsed config, loading and configuring every plugin. All problems
    /// found are returned together.
    pub async fn build(source: &ConfigSource, config: &Config, sandbox: SandboxEngine) -> Result<Self, ConfigError> {
        let mut issues: Vec<ConfigIssue> = Vec::new();
        let state = match StateStore::from_config(&config.state) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                issues.push(source.issue(e.span(&config.state), &e.key(), e.to_string()));
                Arc::new(StateStore::Memory(crate::state::memory::MemoryStore::new(1)))
            }
        };
        let telemetry = Arc::new(Telemetry::new(source, config, state.clone(), &mut issues));
        issues.extend(crate::admin::config_issues(source, config));
        Self::assemble(source, config, sandbox, state, telemetry, (&HashMap::new(), &[]), issues).await
    }

    /// Builds the gateway a reload swaps in for `previous`: the new config's routes, chains and
    /// upstreams, served with `previous`'s sandbox, state store and telemetry, which outlive
    /// reloads (so rate-limit windows and metric counters carry over). The sections those come
    /// from take effect only on restart (see [`crate::reload`]).
    pub async fn rebuild(source: &ConfigSource, config: &Config, previous: &Gateway) -> Result<Self, ConfigError> {
        let (sandbox, state, telemetry) = (previous.sandbox.clone(), previous.state.clone(), previous.telemetry.clone());
        // `[admin]`'s checks as at start-up: a reload rotates the token (a botched secret taken
        // live would lock everyone out of the admin API, and fail the next start).
        let issues = crate::admin::config_issues(source, config);
        Self::assemble(source, config, sandbox, state, telemetry, (&previous.upstreams, previous.routes.routes()), issues).await
    }

    /// Everything that one config builds, given the parts that outlive it (and, on a reload, the
    /// running config's upstreams, kept where unchanged, and routes, whose mirrors' copies in
    /// flight go on counting).
    async fn assemble(
        source: &ConfigSource,
        config: &Config,
        sandbox: SandboxEngine,
        state: Arc<StateStore>,
        telemetry: Arc<Telemetry>,
        (previous_upstreams, previous_routes): (&HashMap<String, Arc<Upstream>>, &[Route]),
        mut issues: Vec<ConfigIssue>,
    ) -> Result<Self, ConfigError> {
        let cache = CompileCache::new(if config.runtime.compile_cache {
            config.runtime.cache_dir.clone().or_else(CompileCache::default_dir)
        } else {
            None
        });

        let upstreams = crate::proxy::upstream_config::build_upstreams(source, config, previous_upstreams, &mut issues).await;
        let trusted_proxies = listener_networks(source, config, "trusted_proxies", |l| &l.trusted_proxies, &mut issues);
        let proxy_protocol_peers = proxy_protocol_peers(source, config, &mut issues);
        let mut consumer_ids = std::collections::HashSet::new();
        for (i, consumer) in config.consumers.iter().enumerate() {
            if let Some(problem) = consumer_id_problem(consumer.id.get_ref()) {
                issues.push(source.issue(Some(consumer.id.span()), &format!("consumers[{i}].id"), problem));
            } else if !consumer_ids.insert(consumer.id.get_ref().as_str()) {
                issues.push(source.issue(
                    Some(consumer.id.span()),
                    &format!("consumers[{i}].id"),
                    format!("consumer id `{}` is used twice", consumer.id.get_ref()),
                ));
            }
            for (j, group) in consumer.groups.iter().enumerate() {
                if let Some(problem) = group_name_problem(group) {
                    let key = format!("consumers[{i}].groups[{j}]");
                    let at = source.key_span(&key).or_else(|| Some(consumer.id.span()));
                    issues.push(source.issue(at, &key, problem));
                }
            }
            if only_builtins(config) {
                for kind in consumer.credentials.keys().filter(|k| !BUILTIN_CREDENTIAL_KINDS.contains(&k.as_str())) {
                    let key = format!("consumers[{i}].credentials.{kind}");
                    let at = source.key_span(&key).or_else(|| Some(consumer.id.span()));
                    issues.push(source.issue(at, &key, unread_credential_kind(kind)));
                }
            }
        }
        let outbound = if crate::grants::needs_outbound_client(config.plugins.values()) {
            // Loading the system's root certificates reads files: off the async workers.
            match tokio::task::spawn_blocking(crate::runtime::host::http_client::OutboundClient::new).await {
                Ok(Ok(client)) => Some(client),
                Ok(Err(e)) => {
                    issues.push(source.issue(None, "plugins", e));
                    None
                }
                Err(e) => {
                    issues.push(source.issue(None, "plugins", e.to_string()));
                    None
                }
            }
        } else {
            None
        };
        // Reading the granted directories' entries: off the async workers too.
        let plugins: Vec<&crate::config::PluginConfig> = config.plugins.values().collect();
        let blocking = tokio::task::spawn_blocking(crate::grants::blocking_files(&source.base_dir, &plugins)).await.unwrap_or_default();
        let defs = plugin_defs(source, config, (outbound.as_ref(), &blocking), &mut issues);
        for upstream in upstreams.values() {
            telemetry.metrics.pools.register_upstream(upstream.name.clone(), &upstream.open_connections);
            telemetry.metrics.pools.register_targets(upstream);
        }
        telemetry.metrics.pools.register_budget(&sandbox.budget);
        let mut loader = Loader {
            sandbox: &sandbox,
            cache: &cache,
            source,
            loaded: HashMap::new(),
            state: state.clone(),
            telemetry: telemetry.clone(),
            trusted: trusted_keys(source, config, &mut issues),
            shares: HashMap::new(),
            previous_slots: previous_routes
                .iter()
                .flat_map(|r| r.chain.entries())
                .map(|e| (e.slot_scope.clone(), e.slots.clone()))
                .collect(),
        };
        for (name, def) in &config.plugins {
            if let Some(d) = defs.get(name.as_str()) {
                let key = format!("plugins.{name}.source");
                if let Err(Some(issue)) = loader.load(name, d, &def.source, &key).await {
                    issues.push(issue);
                }
            }
        }

        let mut global = Vec::new();
        for (i, entry) in config.global.plugins.iter().enumerate() {
            let key = format!("global.plugins[{i}]");
            let place = EntryPlace::new(&key, GLOBAL_CHAIN, GLOBAL_CHAIN, &config.global.plugins[..i], entry);
            match build_entry(&mut loader, config, &defs, entry, place).await {
                Ok(e) => global.push(e),
                Err(issue) => issues.extend(issue),
            }
        }
        let mut specs = Vec::new();
        let mut routes = Vec::new();
        let compression = Arc::new(crate::proxy::compress::Compression::new(&config.compression));
        let mut route_ids = std::collections::HashSet::new();
        // The running config's mirrors by route id: a route's bound on copies in flight is kept.
        let previous_mirrors: HashMap<&str, &crate::proxy::mirror::Mirror> =
            previous_routes.iter().filter_map(|r| Some((&*r.id, r.mirror.as_deref()?))).collect();
        if config.routes.is_empty() {
            // Valid (the admin listener still serves), but rarely meant: an empty or misnamed file.
            tracing::warn!(config = %source.name, "the config has no `[[routes]]`: every request is answered 404 `no_route`");
        }
        for (index, route) in config.routes.iter().enumerate() {
            let id: Arc<str> = route.id_at(index).into();
            let key = format!("routes[{index}]");
            // Rate-limit keys, metrics and the admin API tell routes apart by id.
            if let Some(problem) = route.id.as_ref().and_then(|given| route_id_problem(given.get_ref())) {
                issues.push(source.issue(route.id.as_ref().map(Spanned::span), &format!("{key}.id"), problem));
            } else if &*id == GLOBAL_CHAIN {
                issues.push(source.issue(
                    route.id.as_ref().map(Spanned::span),
                    &format!("{key}.id"),
                    format!("route id `{GLOBAL_CHAIN}` is the global chain's: its entries' state and metrics would be shared"),
                ));
            } else if !route_ids.insert(id.clone()) {
                issues.push(route_id_twice(source, config, index, &id));
            }
            let underscores = config.limits.headers_with_underscores;
            let Some(spec) = route_spec(source, route, &id, &key, underscores, &mut issues) else { continue };
            if let Some(issue) = encoded_slash_route(source, route, &key, config.limits.encoded_slashes) {
                issues.push(issue);
            }
            let upstream = match &route.upstream {
                Some(name) => match upstreams.get(name.get_ref().as_str()) {
                    Some(u) => Some(u.clone()),
                    // Defined, but it has errors of its own (reported at its lines).
                    None if config.upstreams.contains_key(name.get_ref().as_str()) => None,
                    None => {
                        issues.push(source.issue(
                            Some(name.span()),
                            &format!("{key}.upstream"),
                            format!("no upstream named `{}` (defined: {})", name.get_ref(), names(config.upstreams.keys())),
                        ));
                        None
                    }
                },
                None => None,
            };
            let previous_mirror = previous_mirrors.get(&*id).copied();
            let mirror = route_mirror(source, config, route, (&id, &key, previous_mirror), &upstreams, &telemetry, &mut issues);
            let mut entries = if route.global_plugins { global.clone() } else { Vec::new() };
            let scope = route.id.as_ref().map_or_else(|| unnamed_route_scope(route), |id| id.get_ref().clone());
            for (i, entry) in route.plugins.iter().enumerate() {
                let entry_key = format!("{key}.plugins[{i}]");
                let place = EntryPlace::new(&entry_key, &id, &scope, &route.plugins[..i], entry);
                match build_entry(&mut loader, config, &defs, entry, place).await {
                    Ok(e) => entries.push(e),
                    Err(issue) => issues.extend(issue),
                }
            }
            // Not for a route whose plugins were refused: its errors say what is wrong.
            if route.upstream.is_none() && entries.is_empty() && route.plugins.is_empty() {
                tracing::warn!(
                    route = &*id,
                    config = %source.name,
                    "{key} has neither an upstream nor a plugin: every request to it is a 502 no_upstream"
                );
            }
            if !spec.methods.is_empty()
                && !spec.methods.contains(&http::Method::OPTIONS)
                && entries.iter().any(|e| e.facts.source == "builtin:cors")
            {
                // A browser's preflight is an OPTIONS: on this route it finds no route (404).
                tracing::warn!(
                    route = &*id,
                    config = %source.name,
                    "{key}.methods leaves out OPTIONS, so builtin:cors never sees a preflight (they get a 404): add \"OPTIONS\""
                );
            }
            if let Some(issue) = cache_ahead_of_access_control(config, source, route, &key) {
                issues.push(issue);
            }
            if let Some(issue) = grpc_over_http1(config, source, route, &key) {
                issues.push(issue);
            }
            warn_chain_order(config, source, route, (&key, &id));
            for entry in entries.iter().filter(|e| e.failure == FailurePolicy::Open && ACCESS_CONTROL_BUILTINS.contains(&e.facts.source.as_str())) {
                // Failing open is an authentication bypass whenever the plugin fails: a trap, its
                // CPU deadline (a costly password hash an attacker can make it check).
                tracing::warn!(
                    route = &*id,
                    plugin = entry.name(),
                    config = %source.name,
                    "{key}: {} has failure = \"open\": whenever it fails (a trap, its CPU deadline) requests go on unauthenticated; use \"closed\" (the default)",
                    entry.facts.source
                );
            }
            let timeout = route
                .timeout_ms
                .or_else(|| upstream.as_ref().map(|u| u.request_timeout.as_millis() as u64))
                .unwrap_or(config.timeouts.request_ms);
            let metrics = telemetry.metrics.route(id.clone(), upstream.as_ref().map(|u| &*u.name));
            let host_header = route.host_header.or(upstream.as_ref().map(|u| u.host_header)).unwrap_or_default();
            let answered_by =
                upstream.map(|u| Arc::new(crate::proxy::upstream::RouteUpstream::new(u, id.clone(), metrics.upstream_unavailable())));
            routes.push(Route {
                metrics,
                answered_by,
                id,
                host_header,
                chain: PluginChain::new(entries),
                strip_prefix: route.strip_prefix.as_ref().map(|s| s.get_ref().trim_end_matches('/').to_owned()),
                rewrite: route.rewrite.as_ref().map(|s| s.get_ref().clone()),
                prefix_rewrite: route.prefix_rewrite.as_ref().zip(route.path_prefix.as_ref()).map(|(to, from)| PrefixRewrite {
                    matched: from.get_ref().trim_end_matches('/').to_owned(),
                    replacement: to.get_ref().clone(),
                }),
                max_body_bytes: route.max_body_bytes.unwrap_or(config.limits.max_body_bytes),
                timeout: Duration::from_millis(timeout),
                tunnel_idle: Duration::from_millis(route.tunnel_idle_ms.unwrap_or(config.timeouts.tunnel_idle_ms)),
                matches: spec.clone(),
                compression: route.compress.unwrap_or(config.compression.enabled).then(|| compression.clone()),
                mirror,
            });
            specs.push((index, spec));
        }

        let (indices, specs): (Vec<usize>, Vec<RouteSpec>) = specs.into_iter().unzip();
        let table = RouteTable::build(&specs, routes);
        let routes = match table {
            Ok(t) => Some(t),
            Err(e) => {
                let index = indices[e.index];
                let route = &config.routes[index];
                let span = route.path.as_ref().or(route.path_prefix.as_ref()).map(|s| s.span());
                let key = format!("routes[{index}]");
                // A route already reported at its own line (a bad host, say) is not reported
                // twice: the table's own checks repeat some of `route_spec`'s.
                let reported = issues.iter().any(|i| i.key.strip_prefix(key.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('.')));
                if !reported {
                    issues.push(source.issue(span, &key, e.to_string()));
                }
                None
            }
        };
        match routes {
            Some(routes) if issues.is_empty() => {
                let (limits, timeouts) = (config.limits.clone(), config.timeouts.clone());
                Ok(Self { routes, limits, timeouts, sandbox, state, telemetry, trusted_proxies, proxy_protocol_peers, upstreams })
            }
            _ => {
                issues.sort_by_key(|i| i.line.unwrap_or(0));
                Err(ConfigError::Invalid(issues))
            }
        }
    }
}

/// A route's `mirror`, with its upstream: an issue at its line when it names no upstream, or the
/// route has none of its own (its requests never go upstream, so there is nothing to copy). A
/// mirror to the route's own upstream is allowed (as Envoy allows it), with a warning: each
/// mirrored request reaches that upstream twice. `previous`: the mirror the route of this id had
/// in the config a reload replaces, whose copies in flight the new one goes on counting.
fn route_mirror(
    source: &ConfigSource,
    config: &Config,
    route: &RouteConfig,
    (id, key, previous): (&Arc<str>, &str, Option<&crate::proxy::mirror::Mirror>),
    upstreams: &HashMap<String, Arc<Upstream>>,
    telemetry: &Telemetry,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Arc<crate::proxy::mirror::Mirror>> {
    let mirror = route.mirror.as_ref()?;
    let name = mirror.upstream.get_ref().as_str();
    let Some(own) = &route.upstream else {
        issues.push(source.issue(
            Some(mirror.upstream.span()),
            &format!("{key}.mirror"),
            "the route has no `upstream`: its requests are answered by its plugins and never sent upstream, so there is nothing to mirror (give it an `upstream`, or remove `mirror`)",
        ));
        return None;
    };
    let upstream = match upstreams.get(name) {
        Some(u) => u.clone(),
        // Defined, but it has errors of its own (reported at its lines).
        None if config.upstreams.contains_key(name) => return None,
        None => {
            issues.push(source.issue(
                Some(mirror.upstream.span()),
                &format!("{key}.mirror.upstream"),
                format!("no upstream named `{name}` (defined: {})", names(config.upstreams.keys())),
            ));
            return None;
        }
    };
    if own.get_ref() == name {
        tracing::warn!(
            route = &**id,
            config = %source.name,
            "{key}.mirror sends copies to the route's own upstream `{name}`: each mirrored request reaches it twice (a POST is acted on twice)"
        );
    }
    let counters = telemetry.metrics.mirror(id.clone(), upstream.name.clone());
    Some(Arc::new(crate::proxy::mirror::Mirror::new(id.clone(), upstream, mirror.percent, counters, previous)))
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = keys.map(String::as_str).collect();
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

fn settings_for(config: &Config, def: Option<&PluginConfig>) -> InstanceSettings {
    let memory_mb = def.and_then(|d| d.memory_mb).unwrap_or(config.runtime.memory_mb);
    InstanceSettings {
        memory_bytes: (memory_mb as usize).saturating_mul(1024 * 1024).min(MAX_PLUGIN_MEMORY),
        cpu_deadline: Duration::from_millis(def.and_then(|d| d.cpu_ms).unwrap_or(config.runtime.cpu_ms)),
        isolation: def.map(|d| d.isolation).unwrap_or_default(),
        pool_size: def.and_then(|d| d.pool_size).unwrap_or(DEFAULT_POOL_SIZE),
        max_uses: def.and_then(|d| d.max_uses).unwrap_or(DEFAULT_MAX_USES).max(1),
        state: None,
        files: None,
        http: None,
        metrics: None,
        share: None,
    }
}

fn plugin_defs<'a>(
    source: &ConfigSource,
    config: &'a Config,
    grants: (Option<&crate::runtime::host::http_client::OutboundClient>, &crate::grants::BlockingFiles),
    issues: &mut Vec<ConfigIssue>,
) -> HashMap<&'a str, PluginDef> {
    let known = crate::runtime::capabilities::known_capabilities();
    let mut defs = HashMap::new();
    for (name, def) in &config.plugins {
        if let Some(problem) = definition_name_problem(name) {
            issues.push(source.issue(Some(def.source.span()), &format!("plugins.{name:?}"), problem));
        }
        for (i, cap) in def.capabilities.iter().enumerate() {
            if !known.contains(&cap.get_ref().as_str()) {
                issues.push(source.issue(
                    Some(cap.span()),
                    &format!("plugins.{name}.capabilities"),
                    format!("unknown capability `{}` (known: {})", cap.get_ref(), known.join(", ")),
                ));
            } else if def.capabilities[..i].iter().any(|c| c.get_ref() == cap.get_ref()) {
                // A grant is a security decision: written twice, it was likely meant as another.
                issues.push(source.issue(
                    Some(cap.span()),
                    &format!("plugins.{name}.capabilities"),
                    format!("capability `{}` is listed twice", cap.get_ref()),
                ));
            }
        }
        let resolved = crate::grants::resolve(source, name, def, grants, issues);
        let mut settings = settings_for(config, Some(def));
        settings.files = resolved.files;
        settings.http = resolved.http;
        if let Some(problem) = metric_names_problem(config, name, def) {
            issues.push(source.issue(Some(def.source.span()), &format!("plugins.{name:?}"), problem));
        }
        defs.insert(
            name.as_str(),
            PluginDef {
                source: def.source.get_ref().clone(),
                capabilities: crate::runtime::capabilities::effective_grants(
                    def.source.get_ref(),
                    &def.capabilities.iter().map(|c| c.get_ref().clone()).collect::<Vec<_>>(),
                ),
                settings,
                failure: def.failure,
            },
        );
    }
    defs
}

/// Why definition `name` cannot have `metrics`: an earlier definition granted it too, whose
/// metric names could fold into the same as this one's (`a` and `a_b`, `A-B` and `a_b`).
fn metric_names_problem(config: &Config, name: &str, def: &crate::config::PluginConfig) -> Option<String> {
    use crate::telemetry::plugin_metrics::{name_part, names_could_collide};
    let has_metrics = |d: &crate::config::PluginConfig| d.capabilities.iter().any(|c| c.get_ref() == "metrics");
    if !has_metrics(def) {
        return None;
    }
    let (other, _) = config.plugins.range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(name))).find(|(other, d)| has_metrics(d) && names_could_collide(other, name))?;
    Some(format!(
        "plugins `{other}` and `{name}` are both granted `metrics`, and their metric names \
         (`airlock_custom_{}_*`, `airlock_custom_{}_*`) could be the same: rename one",
        name_part(other),
        name_part(name)
    ))
}

/// Route `route`'s chain as it runs, global entries first (unless it opts out), each with its key
/// in the file (`global.plugins[0]`, `routes[2].plugins[1]`): what the chain-order checks read.
fn route_chain<'a>(config: &'a Config, route: &'a RouteConfig, key: &str) -> Vec<(String, &'a ChainEntryConfig)> {
    let global = if route.global_plugins { config.global.plugins.as_slice() } else { &[] };
    global
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("global.plugins[{i}]"), e))
        .chain(route.plugins.iter().enumerate().map(|(i, e)| (format!("{key}.plugins[{i}]"), e)))
        .collect()
}

/// The source a chain entry runs: it names a `[plugins.<name>]` definition or a source directly.
fn source_of<'a>(config: &'a Config, e: &'a ChainEntryConfig) -> &'a str {
    config.plugins.get(e.plugin.get_ref()).map_or(e.plugin.get_ref().as_str(), |d| d.source.get_ref().as_str())
}

/// The built-ins that send their route's upstream gRPC, which needs HTTP/2.
const GRPC_BUILTINS: [&str; 2] = ["builtin:grpc-transcode", "builtin:grpc-web"];

/// A route of its own running a built-in that sends gRPC ([`GRPC_BUILTINS`]) to an HTTP/1.1
/// upstream, refused at that entry: every call it translated would fail (gRPC needs HTTP/2's
/// trailers). A global entry is not held to it: it translates only the paths it is given.
fn grpc_over_http1(config: &Config, source: &ConfigSource, route: &RouteConfig, key: &str) -> Option<ConfigIssue> {
    let name = route.upstream.as_ref()?.get_ref();
    let upstream = config.upstreams.get(name.as_str())?;
    if *upstream.protocol.get_ref() != crate::config::UpstreamProtocol::Http1 {
        return None;
    }
    let (index, entry) = route.plugins.iter().enumerate().find(|(_, e)| GRPC_BUILTINS.contains(&source_of(config, e)))?;
    Some(source.issue(
        Some(entry.plugin.span()),
        &format!("{key}.plugins[{index}].plugin"),
        format!(
            "`{}` sends the upstream gRPC, which needs HTTP/2, but upstream `{name}` speaks HTTP/1.1: set its `protocol = \"h2c\"` (or `\"h2\"` over TLS)",
            source_of(config, entry)
        ),
    ))
}

/// A route whose chain (global entries included) runs `builtin:proxy-cache` ahead of an
/// access-control built-in, refused at the cache's entry ([`chain_order`]).
fn cache_ahead_of_access_control(config: &Config, source: &ConfigSource, route: &RouteConfig, key: &str) -> Option<ConfigIssue> {
    let chain = route_chain(config, route, key);
    let (cache, guard) = chain_order::cache_ahead_of(chain.iter().map(|(_, e)| source_of(config, e)), &ACCESS_CONTROL_BUILTINS)?;
    let (cache_key, cache_entry) = &chain[cache];
    let (guard_key, guard_entry) = &chain[guard];
    Some(source.issue(
        Some(cache_entry.plugin.span()),
        &format!("{cache_key}.plugin"),
        format!(
            "`builtin:proxy-cache` runs before `{}` ({guard_key}): a cached answer skips it and reaches any client, whoever stored it; put the cache after authentication and access control",
            source_of(config, guard_entry)
        ),
    ))
}

/// Warns of a route whose chain (global entries included) runs its plugins in an order where
/// one cannot do its work, a warning rather than a refusal (the gateway cannot tell a mistake
/// from a choice in every case, but what the plugin does there is rarely what was meant, and
/// nothing else would say so):
/// - a plugin that decides by the consumer (`acl`, `quota`, `rate-limit` by consumer, a header
///   built from `${context.consumer}`) before the
///   authentication plugin that names it ([`chain_order::consumer_read_before_named`]);
/// - `builtin:proxy-cache` before a limit, quota or validator
///   ([`chain_order::cache_ahead_of`]): its hits skip them;
/// - an authentication built-in before `builtin:cors` ([`chain_order::authentication_ahead_of_cors`]):
///   preflights carry no credentials, so they are refused (401, without CORS headers) before
///   cors answers them.
fn warn_chain_order(config: &Config, source: &ConfigSource, route: &RouteConfig, (key, id): (&str, &str)) {
    let chain = route_chain(config, route, key);
    let sources: Vec<&str> = chain.iter().map(|(_, e)| source_of(config, e)).collect();
    let line_of = |at: usize| source.issue(Some(chain[at].1.plugin.span()), &chain[at].0, "").line;
    if let Some((reader, namer, what)) = chain_order::consumer_read_before_named(sources.iter().copied().zip(chain.iter().map(|(_, e)| &e.config))) {
        tracing::warn!(
            route = id,
            config = %source.name,
            line = line_of(reader),
            "{}: {} runs before {} ({}), which names the consumer: there it {what}; put it after authentication",
            chain[reader].0,
            sources[reader],
            sources[namer],
            chain[namer].0,
        );
    }
    if let Some((cache, guard)) = chain_order::cache_ahead_of(sources.iter().copied(), &chain_order::EVERY_REQUEST_BUILTINS) {
        tracing::warn!(
            route = id,
            config = %source.name,
            line = line_of(cache),
            "{}: builtin:proxy-cache runs before {} ({}), which must see every request: a cached answer skips it (not counted, not validated); put the cache after it",
            chain[cache].0,
            sources[guard],
            chain[guard].0,
        );
    }
    if let Some((auth, cors)) = chain_order::authentication_ahead_of_cors(sources.iter().copied()) {
        tracing::warn!(
            route = id,
            config = %source.name,
            line = line_of(cors),
            "{}: builtin:cors runs after {} ({}): a browser's preflight carries no credentials, so it is refused (401, without CORS headers) before cors answers it, and every call from an allowed origin fails in the browser; put cors first",
            chain[cors].0,
            sources[auth],
            chain[auth].0,
        );
    }
}

/// The kinds of `[[consumers]]` credentials the built-in plugins read: `keys` (key-auth),
/// `basic`, `jwt`, `http_signatures`.
const BUILTIN_CREDENTIAL_KINDS: [&str; 4] = ["keys", "basic", "jwt", "http_signatures"];

/// Whether every plugin the config can run is a built-in: then a credential kind none of them
/// reads ([`BUILTIN_CREDENTIAL_KINDS`]) is read by nothing (a typo, `key` for `keys`, that left
/// the consumer unable to log in with no word said). A third-party plugin may read any kind.
fn only_builtins(config: &Config) -> bool {
    let builtin = |name: &str| name.starts_with("builtin:");
    config.plugins.values().all(|d| builtin(d.source.get_ref()))
        && config
            .global
            .plugins
            .iter()
            .chain(config.routes.iter().flat_map(|r| &r.plugins))
            .all(|e| config.plugins.contains_key(e.plugin.get_ref()) || builtin(e.plugin.get_ref()))
}

/// Why a consumer's credential of `kind` is refused when only built-ins run.
fn unread_credential_kind(kind: &str) -> String {
    let near = BUILTIN_CREDENTIAL_KINDS.iter().find(|k| strsim::levenshtein(kind, k) <= 2);
    let hint = near.map_or_else(String::new, |k| format!(": did you mean `{k}`?"));
    format!(
        "no plugin of this config reads credentials of kind `{kind}` (the built-ins read `keys`, `basic`, `jwt` and `http_signatures`; a third-party plugin may read others){hint}"
    )
}

/// What the global chain's entries name as their route (in state namespaces, logs and
/// metrics); no route may take it.
const GLOBAL_CHAIN: &str = "(global)";

/// Longest `[plugins.<name>]` name, in bytes.
const MAX_DEFINITION_NAME_BYTES: usize = 64;

/// Why a consumer's group name cannot be one: plugins pass a consumer's groups on as one
/// comma-separated list (`consumer.groups`, `X-Consumer-Groups`), so a group `eng,admin` would
/// read as two, the second granting what `acl` allows `admin`.
fn group_name_problem(group: &str) -> Option<String> {
    if group.trim().is_empty() {
        Some("a group name cannot be empty".to_owned())
    } else if group.chars().any(char::is_control) {
        Some(format!("{group:?}: a group name cannot hold control characters (it travels in `X-Consumer-Groups` and log lines)"))
    } else if group.contains(',') {
        Some(format!("`{group}`: a group name cannot hold `,` (groups travel as one comma-separated list); list each group on its own"))
    } else if group.trim() != group {
        Some(format!("`{group}`: a group name cannot start or end with white space"))
    } else {
        None
    }
}

/// Why a route's `id` cannot be one: it names the route in log lines, metrics labels, state
/// namespaces and the admin API, so it must be there to read.
fn route_id_problem(id: &str) -> Option<String> {
    if id == crate::telemetry::metrics::NO_ROUTE {
        // Its metrics and analytics would be those of the requests no route matched.
        return Some(format!("route id `{id}` is the metrics label of requests that matched no route: name the route otherwise"));
    }
    crate::config::id_text_problem(id, "a route id", ": name the route, or leave `id` out for `route-<index>`", "it goes into log lines and metrics labels")
}

/// Route `index`'s id `id`, which an earlier route has too: located at the `id` written in the
/// file, which for an id the gateway gave a route without one (`route-<index>`) is the other's.
fn route_id_twice(source: &ConfigSource, config: &Config, index: usize, id: &str) -> ConfigIssue {
    let earlier = config.routes[..index].iter().enumerate().position(|(j, r)| r.id_at(j) == id).unwrap_or_default();
    let why = "ids name a route in rate-limit keys, metrics and the admin API";
    let (named, unnamed) = match (&config.routes[index].id, &config.routes[earlier].id) {
        (Some(_), Some(_)) => return source.issue(config.routes[index].id.as_ref().map(Spanned::span), &format!("routes[{index}].id"), format!("route id `{id}` is used twice ({why})")),
        (Some(_), None) => (index, earlier),
        (None, _) => (earlier, index),
    };
    source.issue(
        config.routes[named].id.as_ref().map(Spanned::span),
        &format!("routes[{named}].id"),
        format!("route id `{id}` is also the id routes[{unnamed}] is given, having none of its own ({why}): choose another, or give routes[{unnamed}] an `id`"),
    )
}

/// Why a consumer id cannot be one: it goes upstream as `X-Consumer-Id`, into the access log,
/// metrics labels and rate-limit keys, so it must be a header value an operator can read.
fn consumer_id_problem(id: &str) -> Option<String> {
    use crate::telemetry::metrics::{NO_CONSUMER, OTHER_CONSUMER};
    if id == NO_CONSUMER || id == OTHER_CONSUMER {
        // Its metrics and analytics would be merged with anonymous requests', or with those of
        // consumers past `metrics.consumer_labels`.
        return Some(format!("consumer id `{id}` is a metrics label of the gateway's own (`{NO_CONSUMER}`: no consumer, `{OTHER_CONSUMER}`: consumers past `metrics.consumer_labels`): name the consumer otherwise"));
    }
    crate::config::id_text_problem(id, "a consumer id", "", "it travels in `X-Consumer-Id` and log lines")
}

/// Why a `[plugins.<name>]` name is refused. A definition's name is its state namespace, and a
/// source written in a chain gets `<route>.<source>[<n>]`: with brackets refused, no definition
/// can take an entry's namespace (and read or reset its counters).
fn definition_name_problem(name: &str) -> Option<String> {
    let valid = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    if name.is_empty() || name.len() > MAX_DEFINITION_NAME_BYTES || !name.bytes().all(valid) {
        let shown = crate::runtime::host::log::truncate(name, MAX_DEFINITION_NAME_BYTES);
        return Some(format!(
            "plugin name `{}` must be 1 to {MAX_DEFINITION_NAME_BYTES} letters, digits, `-`, `_` or `.`",
            shown.escape_debug()
        ));
    }
    None
}

/// A source written directly in a chain entry: `builtin:<name>` or something that looks like a path.
fn is_inline_source(s: &str) -> bool {
    s.starts_with("builtin:") || s.ends_with(".wasm") || s.contains('/')
}

/// Loads each distinct (source, grants) component once per config. A failed load is reported
/// once, where it was first referenced; later references to it add no duplicate error.
struct Loader<'a> {
    sandbox: &'a SandboxEngine,
    cache: &'a CompileCache,
    source: &'a ConfigSource,
    loaded: HashMap<(String, Vec<String>), Option<Arc<LoadedPlugin>>>,
    /// The gateway's state store; each chain entry gets its own scope of it.
    state: Arc<StateStore>,
    /// Where chain entries get their metric handles.
    telemetry: Arc<Telemetry>,
    /// With `[trust] require_signatures`: the keys a third-party component must be signed by.
    trusted: Option<Vec<PublicKey>>,
    /// Each plugin's share of the instance places, by name: every chain entry of a plugin holds
    /// the same one, so the plugin on many routes takes no more than on one.
    shares: HashMap<String, Arc<crate::runtime::budget::PluginShare>>,
    /// The running config's concurrency slots, by [`ChainEntry::slot_scope`]: a reload does
    /// not free a `concurrency` bound while requests that hold its slots are in flight.
    previous_slots: HashMap<Box<str>, Arc<crate::runtime::slots::SlotTable>>,
}

/// The `[trust]` keys, when signatures are required; a malformed key is an issue at its line.
fn trusted_keys(source: &ConfigSource, config: &Config, issues: &mut Vec<ConfigIssue>) -> Option<Vec<PublicKey>> {
    let trust = &config.trust;
    let mut keys = Vec::new();
    for (i, key) in trust.keys.iter().enumerate() {
        match PublicKey::parse(key.get_ref()) {
            Ok(k) => keys.push(k),
            Err(e) => issues.push(source.issue(Some(key.span()), &format!("trust.keys[{i}]"), e.to_string())),
        }
    }
    if trust.require_signatures && trust.keys.is_empty() {
        issues.push(source.issue(None, "trust.keys", "`require_signatures = true` needs at least one trusted key"));
    }
    trust.require_signatures.then_some(keys)
}

impl Loader<'_> {
    /// `Err(None)`: this component already failed and was reported.
    async fn load(
        &mut self,
        name: &str,
        def: &PluginDef,
        at: &Spanned<String>,
        key: &str,
    ) -> Result<Arc<LoadedPlugin>, Option<ConfigIssue>> {
        let cache_key = (def.source.clone(), def.capabilities.clone());
        if let Some(p) = self.loaded.get(&cache_key) {
            return p.clone().ok_or(None);
        }
        let loaded = match (&self.trusted, def.source.starts_with("builtin:")) {
            // Built-ins are part of the binary and trusted with it.
            (Some(trusted), false) => match self.signed_bytes(&def.source, trusted).await {
                Ok(bytes) => LoadedPlugin::from_bytes(self.sandbox, self.cache, &def.source, ComponentBytes::read(bytes), &def.capabilities).await,
                Err(reason) => Err(PluginError::Untrusted(reason)),
            },
            _ => LoadedPlugin::load(self.sandbox, self.cache, &def.source, &self.source.base_dir, &def.capabilities).await,
        };
        match loaded {
            Ok(p) => {
                self.loaded.insert(cache_key, Some(p.clone()));
                Ok(p)
            }
            Err(e) => {
                self.loaded.insert(cache_key, None);
                Err(Some(self.source.issue(Some(at.span()), key, format!("plugin `{name}`: {e}"))))
            }
        }
    }
}

impl Loader<'_> {
    /// The component's bytes, if its signature file verifies against `trusted`.
    async fn signed_bytes(&self, plugin_source: &str, trusted: &[PublicKey]) -> Result<Vec<u8>, String> {
        let path = self.source.base_dir.join(plugin_source);
        let bytes = tokio::fs::read(&path).await.map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let sig_path = signing::signature_path(&path);
        let sig = signing::signature_text(&sig_path, tokio::fs::read_to_string(&sig_path).await).map_err(|e| e.to_string())?;
        signing::verify(&bytes, &sig, &sig_path.display().to_string(), trusted).map(|_| bytes).map_err(|e| e.to_string())
    }
}

/// A chain entry's TOML config as the JSON its plugin's `configure` reads. A date-time becomes its
/// RFC 3339 text (serde's form for TOML's is a private map); a NaN or infinite float, which JSON
/// cannot hold, is refused with its key path (`.limits[0].rate`) rather than handed over as
/// `null`, which reads as the key left out.
fn plugin_config_json(table: &toml::Table) -> Result<serde_json::Value, (String, String)> {
    fn convert(value: &toml::Value, path: &mut String) -> Result<serde_json::Value, (String, String)> {
        Ok(match value {
            toml::Value::String(s) => serde_json::Value::String(s.clone()),
            toml::Value::Integer(i) => serde_json::Value::from(*i),
            toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number).ok_or_else(|| {
                let written = if f.is_nan() { "nan" } else if *f > 0.0 { "inf" } else { "-inf" };
                (path.clone(), format!("`{written}` cannot reach a plugin: its config travels as JSON, which has no NaN or infinity"))
            })?,
            toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
            toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
            toml::Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    out.push(convert(item, path)?);
                    path.truncate(len);
                }
                serde_json::Value::Array(out)
            }
            toml::Value::Table(table) => table_json(table, path)?,
        })
    }
    fn table_json(table: &toml::Table, path: &mut String) -> Result<serde_json::Value, (String, String)> {
        let mut out = serde_json::Map::with_capacity(table.len());
        for (k, v) in table {
            let len = path.len();
            path.push('.');
            path.push_str(k);
            out.insert(k.clone(), convert(v, path)?);
            path.truncate(len);
        }
        Ok(serde_json::Value::Object(out))
    }
    table_json(table, &mut String::new())
}

/// Where a chain entry stands: for its config errors, its logs and its state namespace.
struct EntryPlace<'a> {
    /// The entry's config key, `routes[3].plugins[1]`.
    key: &'a str,
    /// The route's id (or `route-<index>`), as logs and metrics name it.
    route: &'a str,
    /// What the route's inline entries' state namespaces start with: its `id`, or without one
    /// what it matches ([`unnamed_route_scope`]); never its position in the file.
    scope: &'a str,
    /// How many entries of the same plugin come before this one in its chain.
    occurrence: usize,
}

impl<'a> EntryPlace<'a> {
    fn new(key: &'a str, route: &'a str, scope: &'a str, before: &[ChainEntryConfig], entry: &ChainEntryConfig) -> Self {
        let occurrence = before.iter().filter(|e| e.plugin.get_ref() == entry.plugin.get_ref()).count();
        Self { key, route, scope, occurrence }
    }

    /// The state namespace of an entry whose plugin is a source written in the chain:
    /// `api.builtin:rate-limit[0]`. It survives a reload that adds routes or other entries
    /// (counters carry over, as `[state]` promises) and differs for a second entry of the same
    /// plugin. Brackets and `:` are refused in definition names, so no definition can take it.
    fn inline_namespace(&self, source: &str) -> String {
        format!("{}.{source}[{}]", self.scope, self.occurrence)
    }
}

/// The state scope of a route without an `id`: what it matches, e.g. `route(GET api.example /users/{id})`,
/// so its counters stay its own when routes are added before it.
fn unnamed_route_scope(route: &RouteConfig) -> String {
    let mut parts: Vec<String> = route.methods.iter().map(|m| m.get_ref().to_ascii_uppercase()).collect();
    parts.extend(route.hosts.iter().map(|h| h.get_ref().to_ascii_lowercase()));
    match (&route.path, &route.path_prefix) {
        (Some(path), _) => parts.push(path.get_ref().clone()),
        (None, Some(prefix)) => parts.push(format!("{}*", prefix.get_ref())),
        (None, None) => {}
    }
    format!("route({})", parts.join(" "))
}

async fn build_entry(
    loader: &mut Loader<'_>,
    config: &Config,
    defs: &HashMap<&str, PluginDef>,
    entry: &ChainEntryConfig,
    place: EntryPlace<'_>,
) -> Result<Arc<ChainEntry>, Option<ConfigIssue>> {
    let EntryPlace { key, route, .. } = place;
    let source = loader.source;
    let name = entry.plugin.get_ref();
    let plugin_key = format!("{key}.plugin");
    let inline;
    let def = match defs.get(name.as_str()) {
        Some(d) => d,
        None if is_inline_source(name) => {
            inline = PluginDef {
                source: name.clone(),
                capabilities: crate::runtime::capabilities::effective_grants(name, &[]),
                settings: settings_for(config, None),
                failure: FailurePolicy::default(),
            };
            &inline
        }
        None => {
            return Err(Some(source.issue(
                Some(entry.plugin.span()),
                &plugin_key,
                format!(
                    "no plugin named `{name}` (defined: {}); use a [plugins.{name}] definition, `builtin:<name>` or a path to a .wasm file",
                    names(config.plugins.keys())
                ),
            )));
        }
    };
    let plugin = loader.load(name, def, &entry.plugin, &plugin_key).await?;
    let mut plugin_config = plugin_config_json(&entry.config).map_err(|(path, message)| {
        let path = format!("{key}.config{path}");
        let span = crate::config::locate::key_span(&source.text, &path).or(Some(entry.plugin.span()));
        Some(source.issue(span, &path, message))
    })?;
    if crate::runtime::capabilities::consumers_granted(&def.source, &def.capabilities)
        && let Some(object) = plugin_config.as_object_mut()
    {
        // Refused whether or not [[consumers]] exist yet: a config that works until its first
        // [[consumers]] is added would fail on that reload instead.
        if object.contains_key("consumers") {
            let path = format!("{key}.config.consumers");
            let span = crate::config::locate::key_span(&source.text, &path).or(Some(entry.plugin.span()));
            return Err(Some(source.issue(
                span,
                &path,
                "`consumers` is filled in by the gateway from the config's [[consumers]] (`id`, `credentials`, `groups`); declare them there and remove it here",
            )));
        }
    }
    if crate::runtime::capabilities::consumers_granted(&def.source, &def.capabilities)
        && let Some(object) = plugin_config.as_object_mut()
        && !config.consumers.is_empty()
    {
        let consumers = serde_json::to_value(&config.consumers)
            .map_err(|e| Some(source.issue(None, "consumers", e.to_string())))?;
        object.insert("consumers".to_owned(), consumers);
    }
    let json = plugin_config.to_string();
    // State namespace: the definition's name, or for a source written in the chain, the route
    // and the plugin ([`EntryPlace::inline_namespace`]), so two inline entries never share keys.
    let namespace = if defs.contains_key(name.as_str()) { name.clone() } else { place.inline_namespace(name) };
    // Where the entry stands (what its route matches, not its place in the file: the scope its
    // state namespace is built from) and what it was configured with: a reload that changes
    // neither hands it the running entry's slots; one that changes the config (a new
    // `concurrency`) starts afresh, so the new limit applies at once.
    let slot_scope: Box<str> = {
        use std::hash::{Hash, Hasher};
        let mut config_hash = std::collections::hash_map::DefaultHasher::new();
        json.hash(&mut config_hash);
        format!("{}/{namespace}#{}/{:016x}", place.scope, place.occurrence, config_hash.finish()).into()
    };
    let mut settings = def.settings.clone();
    settings.state = Some(ScopedState::new(loader.state.clone(), &namespace));
    let share = loader.shares.entry(name.clone()).or_insert_with(|| Arc::new(loader.sandbox.budget.plugin_share()));
    settings.share = Some(share.clone());
    if def.capabilities.iter().any(|c| c == "metrics") {
        settings.metrics = Some(loader.telemetry.metrics.plugin_set(name));
    }
    let facts = PluginFacts {
        source: def.source.clone(),
        capabilities: def.capabilities.clone(),
        memory_bytes: settings.memory_bytes,
        cpu_ms: settings.cpu_deadline.as_millis() as u64,
        isolation: settings.isolation,
        pool_size: settings.pool_size,
        max_uses: settings.max_uses,
        files_dir: settings.files.clone(),
        http: settings.http.as_ref().map(|grant| crate::admin::inventory::HttpReach {
            allow: grant.allow.iter().map(ToString::to_string).collect(),
            timeout_ms: grant.timeout.as_millis() as u64,
            max_response_bytes: grant.max_response_bytes,
        }),
    };
    match InstancePool::new(plugin, name.as_str().into(), json, settings).await {
        Ok(pool) => {
            let descriptor = pool.descriptor();
            let metrics = loader.telemetry.metrics.plugin(name.as_str().into());
            let entry = Arc::new(ChainEntry {
                pool,
                failure: entry.failure.unwrap_or(def.failure),
                descriptor,
                metrics,
                facts,
                slots: loader.previous_slots.get(&slot_scope).cloned().unwrap_or_default(),
                slot_scope,
            });
            let weak: std::sync::Weak<dyn crate::telemetry::pools::PoolStats> = Arc::downgrade(&entry) as _;
            loader.telemetry.metrics.pools.register_plugin(weak);
            Ok(entry)
        }
        Err(e) => {
            // A refused config points at the key the plugin names, else at `config`.
            let named = match &e {
                PluginError::Configure(message) => crate::config::locate::leading_key(message),
                _ => None,
            };
            // The value a plugin refuses under a secret's key is not quoted back.
            let refused = named.map_or_else(|| e.to_string(), |k| crate::admin::redact::redacted_message(k, &e.to_string()));
            let message = format!("plugin `{name}` on route `{route}`: {refused}");
            // A consumer's credentials (handed to the plugin under `consumers`, in file order)
            // are in the file's own `[[consumers]]`: pointed at there.
            if let Some(consumer_key) = named.filter(|k| k.starts_with("consumers["))
                && let Some(span) = source.key_span(consumer_key)
            {
                return Err(Some(source.issue(Some(span), consumer_key, message)));
            }
            // A plugin that cannot start within its memory cap or CPU deadline: the setting to
            // raise is pointed at (the definition's, else `[runtime]`'s), not its config.
            let setting = match &e {
                PluginError::Failed(crate::runtime::failure::Failure::OutOfMemory(_)) => Some("memory_mb"),
                PluginError::Failed(crate::runtime::failure::Failure::Deadline(_)) => Some("cpu_ms"),
                _ => None,
            };
            if let Some(setting) = setting {
                let at = [format!("plugins.{name}.{setting}"), format!("runtime.{setting}")]
                    .into_iter()
                    .find_map(|k| source.key_span(&k).map(|span| (k, span)));
                if let Some((setting_key, span)) = at {
                    return Err(Some(source.issue(Some(span), &setting_key, message)));
                }
            }
            let span = named
                .and_then(|k| source.key_span(&format!("{key}.config.{k}")))
                .or_else(|| source.key_span(&format!("{key}.config")))
                .unwrap_or_else(|| entry.plugin.span());
            Err(Some(source.issue(Some(span), &format!("{key}.config"), message)))
        }
    }
}

/// A route whose `path` or `path_prefix` holds `%2F` or `%5C` where `[limits] encoded_slashes`
/// refuses or decodes them: no request could ever match it, so it is refused at its line, as
/// other paths that never match are (`router::check_path`).
fn encoded_slash_route(
    source: &ConfigSource,
    route: &RouteConfig,
    key: &str,
    slashes: crate::config::EncodedSlashes,
) -> Option<ConfigIssue> {
    let (name, pattern) = match (&route.path, &route.path_prefix) {
        (Some(p), _) => ("path", p),
        (None, Some(p)) => ("path_prefix", p),
        (None, None) => return None,
    };
    let problem = crate::proxy::path::encoded_slash_problem(pattern.get_ref(), slashes)?;
    Some(source.issue(Some(pattern.span()), &format!("{key}.{name}"), problem))
}

/// Methods HTTP (RFC 9110, PATCH of RFC 5789), WebDAV (RFC 4918) and caches' `PURGE` define:
/// any other in a route's `methods` is warned about, as a likely typo.
const KNOWN_METHODS: [&str; 18] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK",
    "UNLOCK", "PURGE", "QUERY",
];

fn route_spec(
    source: &ConfigSource,
    route: &RouteConfig,
    id: &str,
    key: &str,
    underscores: crate::config::UnderscoreHeaders,
    issues: &mut Vec<ConfigIssue>,
) -> Option<RouteSpec> {
    let path = match (&route.path, &route.path_prefix) {
        (Some(p), None) => PathMatch::Exact(p.get_ref().clone()),
        (None, Some(p)) => PathMatch::Prefix(p.get_ref().clone()),
        (Some(p), Some(_)) => {
            issues.push(source.issue(Some(p.span()), &format!("{key}.path"), "set either `path` or `path_prefix`, not both"));
            return None;
        }
        (None, None) => {
            // At the route's first spanned key: a table header has no span of its own.
            let span = route.id.as_ref().or(route.upstream.as_ref()).or(route.rewrite.as_ref()).map(Spanned::span);
            issues.push(source.issue(span, key, format!("route `{id}` needs `path` or `path_prefix`")));
            return None;
        }
    };
    for host in &route.hosts {
        if let Some(problem) = route_rules::host_problem(host.get_ref()) {
            issues.push(source.issue(Some(host.span()), &format!("{key}.hosts"), problem));
        }
    }
    let mut methods = Vec::new();
    for m in &route.methods {
        match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
            Ok(method) => match route_rules::method_problem(method.as_str()) {
                Some(problem) => issues.push(source.issue(Some(m.span()), &format!("{key}.methods"), format!("`{method}`: {problem}"))),
                None => {
                    if !KNOWN_METHODS.contains(&method.as_str()) {
                        // An extension method is allowed; a typo (`GETT`) leaves the route
                        // unreachable by the method meant, with no word said.
                        let line = source.issue(Some(m.span()), &format!("{key}.methods"), "").line;
                        tracing::warn!(route = id, config = %source.name, line, "{key}.methods: `{method}` is no method HTTP or WebDAV defines: only requests with exactly it match (a typo?)");
                    }
                    methods.push(method)
                }
            },
            Err(_) => issues.push(source.issue(
                Some(m.span()),
                &format!("{key}.methods"),
                format!("`{}` is not an HTTP method", route_rules::escaped(m.get_ref())),
            )),
        }
    }
    let (pattern, is_prefix_route) = match &path {
        PathMatch::Exact(p) => (p.as_str(), false),
        PathMatch::Prefix(p) => (p.as_str(), true),
    };
    path_setting_issues(source, route, key, pattern, is_prefix_route, issues);
    let headers = header_conditions(source, route, key, underscores, issues);
    Some(RouteSpec { id: id.to_owned(), hosts: route.hosts.iter().map(|h| h.get_ref().clone()).collect(), methods, path, headers })
}

/// A route's settings for the path sent upstream (`strip_prefix`, `rewrite`, `prefix_rewrite`),
/// each checked at its line: one the route's paths cannot use, one another of them would leave
/// unused, or a `rewrite` / `prefix_rewrite` that is no path to send as written.
fn path_setting_issues(
    source: &ConfigSource,
    route: &RouteConfig,
    key: &str,
    pattern: &str,
    is_prefix_route: bool,
    issues: &mut Vec<ConfigIssue>,
) {
    if let Some(prefix) = &route.strip_prefix {
        let problem = route_rules::strip_prefix_conflict(route.rewrite.is_some(), route.prefix_rewrite.is_some()).or_else(|| {
            if prefix.get_ref().starts_with('/') {
                route_rules::strip_prefix_problem(prefix.get_ref(), pattern, is_prefix_route)
            } else {
                Some("must start with `/`".to_owned())
            }
        });
        if let Some(problem) = problem {
            issues.push(source.issue(Some(prefix.span()), &format!("{key}.strip_prefix"), problem));
        }
    }
    if let Some(rewrite) = &route.rewrite {
        let problem = route_rules::rewrite_problem(rewrite.get_ref(), (!is_prefix_route).then_some(pattern))
            .or_else(|| route_rules::upstream_path_problem("rewrite", rewrite.get_ref()));
        if let Some(problem) = problem {
            issues.push(source.issue(Some(rewrite.span()), &format!("{key}.rewrite"), problem));
        }
    }
    if let Some(swap) = &route.prefix_rewrite {
        let problem = route_rules::prefix_rewrite_problem(pattern, is_prefix_route, route.rewrite.is_some())
            .or_else(|| route_rules::upstream_path_problem("prefix_rewrite", swap.get_ref()));
        if let Some(problem) = problem {
            issues.push(source.issue(Some(swap.span()), &format!("{key}.prefix_rewrite"), problem));
        }
    }
}

/// A route's `headers`, checked: valid names and values, at least one value each, each header
/// once (names are case-insensitive), and only names and values routing reads as the plugins
/// and the upstream do ([`route_rules::header_name_problem`], [`route_rules::header_value_problem`]).
/// Problems are reported at the header's line and the condition left out (the config fails anyway).
fn header_conditions(
    source: &ConfigSource,
    route: &RouteConfig,
    key: &str,
    underscores: crate::config::UnderscoreHeaders,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<HeaderMatch> {
    let mut conditions: Vec<HeaderMatch> = Vec::new();
    // In file order, so a header named twice is reported at its second line.
    let mut written: Vec<_> = route.headers.iter().collect();
    written.sort_by_key(|(_, values)| values.span().start);
    let mut seen: Vec<(HeaderName, &str)> = Vec::new();
    for (name, values) in written {
        let shown = route_rules::escaped(name);
        let at = format!("{key}.headers.{shown}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            issues.push(source.issue(Some(values.span()), &at, format!("`{shown}` is not a header name")));
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(h, _)| *h == header) {
            issues.push(source.issue(
                Some(values.span()),
                &at,
                format!("`{first}` and `{shown}` are one header (names are case-insensitive): give it once, with the values it may have as a list"),
            ));
            continue;
        }
        seen.push((header.clone(), name));
        if let Some(problem) = route_rules::header_name_problem(&header, underscores) {
            issues.push(source.issue(Some(values.span()), &at, problem));
            continue;
        }
        if values.get_ref().0.is_empty() {
            issues.push(source.issue(Some(values.span()), &at, "no value to match: give one, or a list of them"));
            continue;
        }
        let mut accepted = Vec::new();
        for value in &values.get_ref().0 {
            let parsed = match route_rules::header_value_problem(value) {
                Some(problem) => Err(problem),
                None => HeaderValue::from_str(value)
                    .map_err(|_| format!("`{}` is not a valid header value", route_rules::escaped(value))),
            };
            match parsed {
                Ok(v) => accepted.push(v),
                Err(problem) => issues.push(source.issue(Some(values.span()), &at, problem)),
            }
        }
        conditions.push(HeaderMatch { name: header, values: accepted });
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::{PrefixRewrite, plugin_config_json, push_query, rewrite_path};

    #[test]
    fn plugin_configs_reach_plugins_as_json_without_nan_or_private_maps() {
        let table: toml::Table = toml::from_str("a = 1\nwhen = 1979-05-27T07:32:00Z\nlist = [1.5, { x = true }]\n").unwrap();
        let json = plugin_config_json(&table).unwrap();
        assert_eq!(json, serde_json::json!({ "a": 1, "when": "1979-05-27T07:32:00Z", "list": [1.5, { "x": true }] }));
        for (text, path) in [("rate = nan", ".rate"), ("limits = [{ rate = 1.0 }, { rate = inf }]", ".limits[1].rate"), ("t = { u = -inf }", ".t.u")] {
            let table: toml::Table = toml::from_str(text).unwrap();
            let (at, message) = plugin_config_json(&table).unwrap_err();
            assert_eq!(at, path, "{text}");
            assert!(message.contains("no NaN or infinity"), "{message}");
        }
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn rewrite_param_cannot_climb_out_with_dot_segments() {
        // Found by the `template` fuzz target: `/users/%2e%2e` gives the param `..`, which was put
        // into the upstream path as is (`/v2/users/../profile` is `/v2/profile` upstream).
        let t = "/v2/users/${param.id}/profile";
        assert_eq!(rewrite_path(t, &params(&[("id", "..")])), "/v2/users/%2E%2E/profile");
        assert_eq!(rewrite_path(t, &params(&[("id", ".")])), "/v2/users/%2E/profile");
        assert_eq!(rewrite_path(t, &params(&[("id", "...")])), "/v2/users/.../profile");
        assert_eq!(rewrite_path(t, &params(&[("id", "a/../b?c")])), "/v2/users/a%2F..%2Fb%3Fc/profile");
        // Found by a pentest: `/t/..%3B/admin` gave `..;`, Tomcat's way out (`/v2/users/..;/profile`
        // is `/v2/profile` there), and `%5C` a raw backslash.
        assert_eq!(rewrite_path(t, &params(&[("id", "..;")])), "/v2/users/..%3B/profile");
        assert_eq!(rewrite_path(t, &params(&[("id", "..;\\..;")])), "/v2/users/..%3B%5C..%3B/profile");
    }

    #[test]
    fn a_param_in_a_rewrite_query_stays_one_parameter() {
        let t = "/v2/items/${param.id}?user=${param.id}&from=gw";
        assert_eq!(rewrite_path(t, &params(&[("id", "a&b=c+d")])), "/v2/items/a&b=c+d?user=a%26b%3Dc%2Bd&from=gw");
        assert_eq!(rewrite_path(t, &params(&[("id", "..")])), "/v2/items/%2E%2E?user=%2E%2E&from=gw");
    }

    fn swap(matched: &str, replacement: &str) -> PrefixRewrite {
        PrefixRewrite { matched: matched.to_owned(), replacement: replacement.to_owned() }
    }

    #[test]
    fn prefix_rewrite_swaps_the_matched_prefix_and_keeps_the_rest() {
        let v2 = swap("/v1", "/v2");
        assert_eq!(v2.apply("/v1/items/3").as_deref(), Some("/v2/items/3"));
        assert_eq!(v2.apply("/v1").as_deref(), Some("/v2"));
        assert_eq!(v2.apply("/v1/").as_deref(), Some("/v2/"));
        // Prefixes match on segment boundaries: `/v1x` is none of the route's paths.
        assert_eq!(v2.apply("/v1x/items"), None);
        assert_eq!(v2.apply("/other"), None);
    }

    #[test]
    fn prefix_rewrite_joins_with_one_slash_whatever_either_side_ends_with() {
        let root = swap("/v1", "/");
        assert_eq!(root.apply("/v1/items").as_deref(), Some("/items"));
        assert_eq!(root.apply("/v1").as_deref(), Some("/"));
        assert_eq!(root.apply("/v1/").as_deref(), Some("/"));
        let slashed = swap("/v1", "/v2/");
        assert_eq!(slashed.apply("/v1/items").as_deref(), Some("/v2/items"));
        assert_eq!(slashed.apply("/v1").as_deref(), Some("/v2/"));
        // `path_prefix = "/"` (matched as empty) puts every path under the replacement.
        let under = swap("", "/v2");
        assert_eq!(under.apply("/items").as_deref(), Some("/v2/items"));
        assert_eq!(under.apply("/").as_deref(), Some("/v2/"));
        let deeper = swap("/api/v1", "/internal/v2");
        assert_eq!(deeper.apply("/api/v1/a/b").as_deref(), Some("/internal/v2/a/b"));
    }

    #[test]
    fn a_client_query_joins_a_rewrite_query_with_an_ampersand() {
        let joined = |path: &str, query: &str| {
            let mut path = path.to_owned();
            push_query(&mut path, query);
            path
        };
        assert_eq!(joined("/v2/items/42?from=gw", "x=1"), "/v2/items/42?from=gw&x=1");
        assert_eq!(joined("/v2/items/42", "x=1"), "/v2/items/42?x=1");
        // An empty query (`/x?`) goes on as sent, and adds no stray `&` to a rewrite's.
        assert_eq!(joined("/v2/items/42", ""), "/v2/items/42?");
        assert_eq!(joined("/v2/items/42?from=gw", ""), "/v2/items/42?from=gw");
    }
}
