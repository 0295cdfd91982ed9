//! The gateway's Prometheus metrics: one registry per gateway, and handles resolved once per
//! route and per chain entry when the config is built, so recording on the request path takes no
//! lock and allocates nothing (except the first request of a label set, and requests with a
//! consumer, whose label is looked up).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::histogram::LatencyHistogram;
use super::otlp::ExportCounters;
use super::warn_throttle::WarnThrottle;
use crate::state::StateStore;

/// Consumer label of requests no auth plugin identified.
pub const NO_CONSUMER: &str = "none";
/// Consumer label of consumers past the `metrics.consumer_labels` bound.
pub const OTHER_CONSUMER: &str = "other";
/// Route label of requests that matched no route.
pub const NO_ROUTE: &str = "none";

/// Methods with their own label; any other is `OTHER`.
const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"];
/// Status class labels, by hundreds digit minus one.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Labels of `airlock_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route id (`none` when no route matched).
    pub route: Arc<str>,
    /// Request method (`OTHER` beyond the common ones).
    pub method: &'static str,
    /// `1xx` .. `5xx`.
    pub status: &'static str,
    /// Consumer id set by an auth plugin, `none`, or `other` past the bound.
    pub consumer: Arc<str>,
}

/// Status codes with a counter slot of their own in every route's metrics: the codes gateways
/// and APIs answer most. Any other code is counted all the same, through the family's map.
const COMMON_CODES: [u16; 28] =
    [200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 431, 499, 500, 501, 502, 503, 504];

/// [`COMMON_CODES`]'s slot of `code`.
fn common_code_slot(code: u16) -> Option<usize> {
    COMMON_CODES.binary_search(&code).ok()
}

/// Labels of `airlock_responses_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResponseLabels {
    /// Route id (`none` when no route matched).
    pub route: Arc<str>,
    /// The status code answered, e.g. `429`.
    pub code: u16,
}

/// Labels of per-route histograms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route id.
    pub route: Arc<str>,
}

/// Labels of per-plugin-phase histograms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Plugin name (definition name or source).
    pub plugin: Arc<str>,
    /// `on-request` or `on-response`.
    pub phase: &'static str,
}

/// Labels of plugin failures.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailureLabels {
    /// Plugin name.
    pub plugin: Arc<str>,
    /// `trap`, `deadline` or `out_of_memory`.
    pub kind: &'static str,
}

/// Labels of plugin decisions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Plugin name.
    pub plugin: Arc<str>,
    /// One of [`DECISIONS`].
    pub decision: &'static str,
}

/// What a request phase decided, as counted in `airlock_plugin_decisions_total`: `continue`,
/// `respond` (answered, e.g. a rate limit's 429), `delay`, `slot` (a concurrency slot granted),
/// `slot_refused` (queue full or waited too long).
pub const DECISIONS: [&str; 5] = ["continue", "respond", "delay", "slot", "slot_refused"];

/// Labels of upstream errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// Upstream name.
    pub upstream: Arc<str>,
    /// `unavailable` (refused, reset, broken) or `timeout`.
    pub kind: &'static str,
}

/// Labels of `airlock_tls_certificate_expiry_timestamp_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CertificateLabels {
    /// The listener's address, as configured.
    pub listener: Arc<str>,
    /// The certificate file, as configured.
    pub cert: Arc<str>,
}

/// A certificate a listener serves, and when it expires (seconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCertificate {
    /// The listener's address, as configured.
    pub listener: Arc<str>,
    /// The certificate file, as configured.
    pub cert: Arc<str>,
    /// The leaf's `notAfter`.
    pub expires: i64,
}

/// Labels of `airlock_mirror_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MirrorLabels {
    /// Route id.
    pub route: Arc<str>,
    /// The mirror upstream's name.
    pub upstream: Arc<str>,
    /// One of [`MIRROR_OUTCOMES`].
    pub outcome: &'static str,
}

/// What became of a request chosen to be mirrored ([`crate::proxy::mirror`]), as counted in
/// `airlock_mirror_requests_total`: `sent` (the mirror answered, whatever the status, and its
/// body was read), `failed` (refused, broken off, or no whole answer within its upstream's
/// request timeout), `dropped` (not sent: the route's mirror requests in flight at their cap, or
/// the mirror upstream at its `max_requests`).
pub const MIRROR_OUTCOMES: [&str; 3] = ["sent", "failed", "dropped"];

/// Labels of anomaly flags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AnomalyLabels {
    /// One of [`super::anomaly::ANOMALY_KINDS`].
    pub kind: &'static str,
}

/// Failure kinds counted per plugin, as [`crate::runtime::failure::Failure::kind`] names them.
pub const FAILURE_KINDS: [&str; 6] = ["trap", "deadline", "out_of_memory", "busy", "invalid_status", "too_large"];

/// Every metric family of one gateway, and its registry.
pub struct Metrics {
    registry: Registry,
    /// The standard `process_*` metrics, outside the `airlock_` prefix ([`super::process`]).
    process: Registry,
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    request_duration: Family<RouteLabels, LatencyHistogram>,
    upstream_duration: Family<RouteLabels, LatencyHistogram>,
    plugin_duration: Family<PhaseLabels, LatencyHistogram>,
    plugin_failures: Family<FailureLabels, Counter>,
    plugin_decisions: Family<DecisionLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    active_connections: Gauge,
    parked_connections: Gauge,
    switched_connections: Gauge,
    tunnels_closed: Family<TunnelEndLabels, Counter>,
    tunnel_bytes: Family<TunnelBytesLabels, Counter>,
    anomalies: Family<AnomalyLabels, Counter>,
    connection_limit: Gauge,
    connection_limit_waits: Counter,
    accept_failures: Counter,
    upstream_connect_shortages: Counter,
    connections_cut: Family<ConnectionCutLabels, Counter>,
    requests_rejected: Family<RejectionLabels, Counter>,
    mirror_requests: Family<MirrorLabels, Counter>,
    /// Plugin instance pools, read at scrape time.
    pub pools: Arc<super::pools::PoolRegistry>,
    /// Metrics plugins define (capability `metrics`).
    pub plugin_metrics: Arc<super::plugin_metrics::PluginMetricStore>,
    /// Access log lines dropped because the queue was full.
    pub access_log_dropped: Counter,
    /// OTLP span export counters.
    pub otlp: ExportCounters,
    /// Config reloads.
    pub reloads: ReloadMetrics,
    /// When each listener certificate served expires: an alert on it fires before clients
    /// refuse the certificate.
    certificate_expiry: Family<CertificateLabels, Gauge>,
    consumers: Arc<ConsumerLabels>,
    /// The names config builds made series for, so a refused reload's can be taken back.
    built: Mutex<SeriesNames>,
}

/// The route, upstream, mirror and plugin names config builds have made series for: what
/// [`Metrics::forget_series_since`] compares with, so series only a refused reload made (a
/// plugin or route the running config does not have, at 0) do not stay on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct SeriesNames {
    routes: HashSet<Arc<str>>,
    upstreams: HashSet<Arc<str>>,
    mirrors: HashSet<(Arc<str>, Arc<str>)>,
    plugins: HashSet<Arc<str>>,
}

impl Metrics {
    /// Registers every family. `consumer_labels` bounds the `consumer` label's values.
    pub fn new(consumer_labels: usize, state: Arc<StateStore>) -> Self {
        let mut registry = Registry::with_prefix("airlock");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests answered, by route, method, status class and consumer", requests.clone());
        let responses = Family::<ResponseLabels, Counter>::default();
        registry.register(
            "responses",
            "Requests answered, by route and exact status code (429 apart from 401, 502 from 504)",
            responses.clone(),
        );
        let request_duration = Family::<RouteLabels, LatencyHistogram>::default();
        registry.register(
            "request_duration_seconds",
            "Time from the request's arrival to the response head, by route",
            request_duration.clone(),
        );
        let upstream_duration = Family::<RouteLabels, LatencyHistogram>::default();
        registry.register(
            "upstream_duration_seconds",
            "Time from sending the request upstream to the response head, by route",
            upstream_duration.clone(),
        );
        let plugin_duration = Family::<PhaseLabels, LatencyHistogram>::default();
        registry.register("plugin_phase_duration_seconds", "Time of one plugin phase call", plugin_duration.clone());
        let plugin_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "plugin_failures",
            "Plugin calls that trapped, ran past their CPU deadline or out of memory",
            plugin_failures.clone(),
        );
        let plugin_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "plugin_decisions",
            "What plugins' request phases decided: continue, respond (e.g. a rate limit's 429), delay, slot, slot_refused",
            plugin_decisions.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register("upstream_errors", "Upstream requests that failed to connect, broke or timed out", upstream_errors.clone());
        let active_connections = Gauge::default();
        registry.register("active_connections", "Client connections open now", active_connections.clone());
        let parked_connections = Gauge::default();
        registry.register(
            "parked_connections",
            "Idle HTTP/1.1 keep-alive client connections parked now, holding no HTTP buffers",
            parked_connections.clone(),
        );
        let switched_connections = Gauge::default();
        registry.register(
            "switched_connections",
            "Client connections switched to another protocol (WebSocket) and joined to their upstream now",
            switched_connections.clone(),
        );
        // Every series at 0 from the start, as the other counters are: `rate()` and `absent()`
        // alerts see them before the first WebSocket closes.
        let tunnels_closed = Family::<TunnelEndLabels, Counter>::default();
        for reason in TUNNEL_END_REASONS {
            let _ = tunnels_closed.get_or_create(&TunnelEndLabels { reason });
        }
        registry.register(
            "tunnels_closed",
            "Switched connections (WebSocket) ended, by reason: closed (a side closed), idle (timeouts.tunnel_idle_ms), drain, error, not_switched",
            tunnels_closed.clone(),
        );
        let tunnel_bytes = Family::<TunnelBytesLabels, Counter>::default();
        for direction in ["client_to_upstream", "upstream_to_client"] {
            let _ = tunnel_bytes.get_or_create(&TunnelBytesLabels { direction });
        }
        registry.register(
            "tunnel_bytes",
            "Bytes passed through switched connections once they ended, by direction (client_to_upstream, upstream_to_client)",
            tunnel_bytes.clone(),
        );
        let connection_limit = Gauge::default();
        registry.register(
            "connection_limit",
            "Most client connections served at once (limits.max_connections, or its default derived from the open-file limit)",
            connection_limit.clone(),
        );
        let connection_limit_waits = Counter::default();
        registry.register(
            "connection_limit_waits",
            "Times the listeners stopped accepting (once per worker and listener) because limits.max_connections client connections were open",
            connection_limit_waits.clone(),
        );
        let accept_failures = Counter::default();
        registry.register(
            "accept_failures",
            "Client connections the listeners failed to accept (EMFILE: out of file descriptors, and other errors)",
            accept_failures.clone(),
        );
        let upstream_connect_shortages = Counter::default();
        registry.register(
            "upstream_connect_shortages",
            "Upstream connections the gateway could not open for want of its own resources (EMFILE, ENFILE: out of file descriptors; ENOBUFS, ENOMEM), answered 503 gateway_overloaded and not counted against any target",
            upstream_connect_shortages.clone(),
        );
        let connections_cut = Family::<ConnectionCutLabels, Counter>::default();
        for reason in CONNECTION_CUT_REASONS {
            let _ = connections_cut.get_or_create(&ConnectionCutLabels { reason });
        }
        registry.register(
            "connections_cut",
            "Client connections the gateway closed on a limit, by reason: send_timeout (timeouts.send_ms), early_resets (HTTP/2 streams reset before their response), client_limit (limits.max_connections_per_client), proxy_protocol (no valid PROXY protocol header in time on a proxy_protocol listener), proxy_protocol_peer (a peer not in the listener's proxy_protocol_from)",
            connections_cut.clone(),
        );
        let requests_rejected = Family::<RejectionLabels, Counter>::default();
        for reason in REJECTION_REASONS {
            let _ = requests_rejected.get_or_create(&RejectionLabels { reason });
        }
        registry.register(
            "requests_rejected",
            "Requests hyper's parser refused before the gateway saw them, by reason: malformed (a bare 400), headers_too_large (431), uri_too_long (414), http2_protocol (an HTTP/2 connection closed with a protocol error)",
            requests_rejected.clone(),
        );
        let mirror_requests = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "mirror_requests",
            "Copies of route requests sent to the route's mirror upstream, by route, upstream and outcome: sent (answered), failed (refused, broken, timed out), dropped (not sent: too many in flight)",
            mirror_requests.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the write queue was full",
            access_log_dropped.clone(),
        );
        let otlp = ExportCounters::default();
        registry.register("otlp_spans_exported", "Spans an OTLP collector accepted", otlp.exported.clone());
        registry.register(
            "otlp_spans_dropped",
            "Spans dropped: export queue full, or the collector unreachable or refusing",
            otlp.dropped.clone(),
        );
        let reloads = ReloadMetrics::default();
        // Both series from the start, at 0: an alert on `increase(...{result="error"}[5m])`
        // then sees the first failed reload too (a series born at 1 shows no increase).
        for result in ["ok", "error"] {
            let _ = reloads.results.get_or_create(&ReloadLabels { result });
        }
        registry.register("config_reloads", "Config reloads, by result (ok, error)", reloads.results.clone());
        registry.register("config_generation", "The served config's generation: 1 at start, one more per reload", reloads.generation.clone());
        registry.register(
            "config_last_reload_successful",
            "1 if the last reload succeeded (or none was tried), 0 if the running config was kept",
            reloads.last_successful.clone(),
        );
        // A constant 1 whose labels say what runs (Prometheus's `*_build_info` convention): a
        // dashboard shows the version per instance, and an alert sees a rollout half done.
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION"), wit: crate::runtime::capabilities::WIT_VERSION }).set(1);
        registry.register("build_info", "1, labelled with the gateway's version and the plugin contract (WIT) it speaks", build);
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When each certificate a listener serves expires (its notAfter, seconds since the Unix epoch), by listener and certificate file",
            certificate_expiry.clone(),
        );
        registry.register_collector(Box::new(StateCollector { state }));
        let anomalies = Family::<AnomalyLabels, Counter>::default();
        registry.register("anomalies", "Anomaly flags raised, by kind (see /admin/analytics)", anomalies.clone());
        let pools = Arc::new(super::pools::PoolRegistry::default());
        registry.register_collector(Box::new(super::pools::PoolCollector(pools.clone())));
        let plugin_metrics = Arc::new(super::plugin_metrics::PluginMetricStore::default());
        registry.register_collector(Box::new(super::plugin_metrics::PluginMetricCollector(plugin_metrics.clone())));
        let mut process = Registry::default();
        process.register_collector(Box::new(super::process::ProcessCollector));
        Self {
            registry,
            process,
            requests,
            responses,
            request_duration,
            upstream_duration,
            plugin_duration,
            plugin_failures,
            plugin_decisions,
            upstream_errors,
            active_connections,
            parked_connections,
            switched_connections,
            tunnels_closed,
            tunnel_bytes,
            anomalies,
            connection_limit,
            connection_limit_waits,
            accept_failures,
            upstream_connect_shortages,
            connections_cut,
            requests_rejected,
            mirror_requests,
            pools,
            plugin_metrics,
            access_log_dropped,
            otlp,
            reloads,
            certificate_expiry,
            consumers: Arc::new(ConsumerLabels::new(consumer_labels)),
            built: Mutex::default(),
        }
    }

    /// The names series have been made for so far: taken before a reload builds its config.
    pub fn series_mark(&self) -> SeriesNames {
        self.built_names().clone()
    }

    /// Removes the series made for names since `mark` (by a reload that was then refused): no
    /// generation that served requests had them. Names a served config had stay, counts and all.
    pub fn forget_series_since(&self, mark: SeriesNames) {
        let made = std::mem::replace(&mut *self.built_names(), mark.clone());
        for route in made.routes.difference(&mark.routes) {
            let labels = RouteLabels { route: route.clone() };
            self.request_duration.remove(&labels);
            self.upstream_duration.remove(&labels);
        }
        for upstream in made.upstreams.difference(&mark.upstreams) {
            for kind in ["unavailable", "timeout"] {
                self.upstream_errors.remove(&UpstreamErrorLabels { upstream: upstream.clone(), kind });
            }
        }
        for (route, upstream) in made.mirrors.difference(&mark.mirrors) {
            for outcome in MIRROR_OUTCOMES {
                self.mirror_requests.remove(&MirrorLabels { route: route.clone(), upstream: upstream.clone(), outcome });
            }
        }
        for plugin in made.plugins.difference(&mark.plugins) {
            for phase in ["on-request", "on-response"] {
                self.plugin_duration.remove(&PhaseLabels { plugin: plugin.clone(), phase });
            }
            for kind in FAILURE_KINDS {
                self.plugin_failures.remove(&FailureLabels { plugin: plugin.clone(), kind });
            }
            for decision in DECISIONS {
                self.plugin_decisions.remove(&DecisionLabels { plugin: plugin.clone(), decision });
            }
            self.plugin_metrics.forget(plugin);
        }
    }

    fn built_names(&self) -> std::sync::MutexGuard<'_, SeriesNames> {
        self.built.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The metrics in the Prometheus text format (version 0.0.4), the process's own included.
    /// Reads procfs (the `process_*` metrics): call it off the async workers.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        // Prometheus's own text format, 0.0.4: the content type `/metrics` declares. (The
        // OpenMetrics encoder names a counter's family without `_total`, which a 0.0.4 parser
        // reads as an empty counter beside untyped `_total` samples.)
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        // The 0.0.4 format has no end marker: a second registry's families simply follow.
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.process)?;
        Ok(out)
    }

    /// The listener certificates now served (at start, and on each reload that swaps a config
    /// in): their expiry gauges, and no series left for a certificate no longer served.
    pub fn certificates_served(&self, certificates: &[ServedCertificate]) {
        self.certificate_expiry.clear();
        for served in certificates {
            let labels = CertificateLabels { listener: served.listener.clone(), cert: served.cert.clone() };
            self.certificate_expiry.get_or_create(&labels).set(served.expires);
        }
    }

    /// Handles for one route (`upstream`: the route's upstream name, if it has one).
    pub fn route(&self, route: Arc<str>, upstream: Option<&str>) -> RouteMetrics {
        let labels = RouteLabels { route: route.clone() };
        let upstream_errors = upstream.map(|name| {
            let name: Arc<str> = name.into();
            self.built_names().upstreams.insert(name.clone());
            [
                self.upstream_errors.get_or_create_owned(&UpstreamErrorLabels { upstream: name.clone(), kind: "unavailable" }),
                self.upstream_errors.get_or_create_owned(&UpstreamErrorLabels { upstream: name, kind: "timeout" }),
            ]
        });
        self.built_names().routes.insert(route.clone());
        RouteMetrics {
            duration: self.request_duration.get_or_create_owned(&labels),
            upstream_duration: self.upstream_duration.get_or_create_owned(&labels),
            upstream_errors,
            anonymous: Default::default(),
            named: Default::default(),
            requests: self.requests.clone(),
            common_codes: Default::default(),
            responses: self.responses.clone(),
            consumers: self.consumers.clone(),
            route,
            failure_warnings: std::array::from_fn(|_| WarnThrottle::new(FAILURE_WARN_INTERVAL)),
        }
    }

    /// The counters of route `route`'s mirror requests to `upstream`, in [`MIRROR_OUTCOMES`]
    /// order: made when the route is built, so each series is there at 0 from the start.
    pub fn mirror(&self, route: Arc<str>, upstream: Arc<str>) -> [Counter; MIRROR_OUTCOMES.len()] {
        self.built_names().mirrors.insert((route.clone(), upstream.clone()));
        MIRROR_OUTCOMES.map(|outcome| {
            self.mirror_requests.get_or_create_owned(&MirrorLabels { route: route.clone(), upstream: upstream.clone(), outcome })
        })
    }

    /// The metric set of plugin `plugin` (capability `metrics`), made with its entry before the
    /// plugin is instantiated: a reload refused for that plugin takes it back too.
    pub fn plugin_set(&self, plugin: &str) -> Arc<super::plugin_metrics::PluginMetricSet> {
        self.built_names().plugins.insert(plugin.into());
        self.plugin_metrics.set_for(plugin)
    }

    /// Handles for one chain entry's plugin.
    pub fn plugin(&self, plugin: Arc<str>) -> PluginMetrics {
        self.built_names().plugins.insert(plugin.clone());
        let phase = |phase| self.plugin_duration.get_or_create_owned(&PhaseLabels { plugin: plugin.clone(), phase });
        let failure = |kind| self.plugin_failures.get_or_create_owned(&FailureLabels { plugin: plugin.clone(), kind });
        let decision = |decision| self.plugin_decisions.get_or_create_owned(&DecisionLabels { plugin: plugin.clone(), decision });
        PluginMetrics {
            on_request: phase("on-request"),
            on_response: phase("on-response"),
            failures: FAILURE_KINDS.map(failure),
            decisions: DECISIONS.map(decision),
        }
    }

    /// The counters of each anomaly kind, in [`super::anomaly::ANOMALY_KINDS`] order.
    pub fn anomaly_counters(&self) -> [Counter; super::anomaly::ANOMALY_KINDS.len()] {
        super::anomaly::ANOMALY_KINDS.map(|kind| self.anomalies.get_or_create_owned(&AnomalyLabels { kind }))
    }

    /// Counts a client connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        ConnectionCount { gauge: self.active_connections.clone() }.enter()
    }

    /// Client connections open now.
    pub fn active_connections(&self) -> i64 {
        self.active_connections.get()
    }

    /// Sets the client connection cap in force (`airlock_connection_limit`).
    pub fn connection_limit(&self, limit: usize) {
        self.connection_limit.set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// Counts a listener stopping at the connection cap (`airlock_connection_limit_waits_total`).
    pub fn connection_limit_reached(&self) {
        self.connection_limit_waits.inc();
    }

    /// Counts a failed `accept` (`airlock_accept_failures_total`).
    pub fn accept_failed(&self) {
        self.accept_failures.inc();
    }

    /// Counts an upstream connect the gateway's own shortage failed
    /// (`airlock_upstream_connect_shortages_total`).
    pub fn upstream_connect_shortage(&self) {
        self.upstream_connect_shortages.inc();
    }

    /// Counts a client connection the gateway closed on a limit (`airlock_connections_cut_total`);
    /// `reason` is one of [`CONNECTION_CUT_REASONS`].
    pub fn connection_cut(&self, reason: &'static str) {
        self.connections_cut.get_or_create(&ConnectionCutLabels { reason }).inc();
    }

    /// Counts a request hyper refused before the gateway saw it (`airlock_requests_rejected_total`);
    /// `reason` is one of [`REJECTION_REASONS`].
    pub fn request_rejected(&self, reason: &'static str) {
        self.requests_rejected.get_or_create(&RejectionLabels { reason }).inc();
    }

    /// The gauges a client connection's task moves it in and out of, as its state changes.
    pub fn connection_gauges(&self) -> ConnectionGauges {
        ConnectionGauges {
            parked: ConnectionCount { gauge: self.parked_connections.clone() },
            tunnels: TunnelMetrics {
                open: ConnectionCount { gauge: self.switched_connections.clone() },
                closed: self.tunnels_closed.clone(),
                bytes: self.tunnel_bytes.clone(),
            },
        }
    }
}

/// Why the gateway closed a client connection on a limit (`airlock_connections_cut_total`).
pub const CONNECTION_CUT_REASONS: [&str; 5] = ["send_timeout", "early_resets", "client_limit", "proxy_protocol", "proxy_protocol_peer"];

/// Labels of `airlock_connections_cut_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectionCutLabels {
    /// One of [`CONNECTION_CUT_REASONS`].
    pub reason: &'static str,
}

/// Why hyper refused a request before the gateway's service saw it
/// (`airlock_requests_rejected_total`): `malformed` (request line or header unparsable: hyper's
/// bare 400), `headers_too_large` (past the parser's header size or count: 431), `uri_too_long`
/// (414), `http2_protocol` (an HTTP/2 connection the client broke the protocol on, closed with a
/// GOAWAY naming the error).
pub const REJECTION_REASONS: [&str; 4] = ["malformed", "headers_too_large", "uri_too_long", "http2_protocol"];

/// Labels of `airlock_requests_rejected_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RejectionLabels {
    /// One of [`REJECTION_REASONS`].
    pub reason: &'static str,
}

/// The states an HTTP/1.1 client connection is counted in besides open.
#[derive(Clone)]
pub struct ConnectionGauges {
    /// Idle and parked (`airlock_parked_connections`).
    pub parked: ConnectionCount,
    /// Switched protocols and joined to its upstream.
    pub tunnels: TunnelMetrics,
}

/// Why a switched connection ended (`airlock_tunnels_closed_total`).
pub const TUNNEL_END_REASONS: [&str; 5] = ["closed", "idle", "drain", "error", "not_switched"];

/// Labels of `airlock_tunnels_closed_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TunnelEndLabels {
    /// Why it ended: `closed`, `idle`, `drain`, `error` or `not_switched`.
    pub reason: &'static str,
}

/// Labels of `airlock_tunnel_bytes_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TunnelBytesLabels {
    /// `client_to_upstream` or `upstream_to_client`.
    pub direction: &'static str,
}

/// What switched connections (WebSocket tunnels) are counted in: the request metrics see only
/// their handshake.
#[derive(Clone)]
pub struct TunnelMetrics {
    /// Open now (`airlock_switched_connections`).
    pub open: ConnectionCount,
    closed: Family<TunnelEndLabels, Counter>,
    bytes: Family<TunnelBytesLabels, Counter>,
}

impl TunnelMetrics {
    /// Counts a tunnel that ended for `reason`, after `to_upstream` and `to_client` bytes.
    pub fn ended(&self, reason: &'static str, to_upstream: u64, to_client: u64) {
        self.closed.get_or_create(&TunnelEndLabels { reason }).inc();
        self.bytes.get_or_create(&TunnelBytesLabels { direction: "client_to_upstream" }).inc_by(to_upstream);
        self.bytes.get_or_create(&TunnelBytesLabels { direction: "upstream_to_client" }).inc_by(to_client);
    }
}

/// Labels of `airlock_build_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BuildLabels {
    /// The gateway's version (its package's).
    pub version: &'static str,
    /// The `airlock:plugin` WIT version it speaks.
    pub wit: &'static str,
}

/// Labels of `airlock_config_reloads_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// What config reloads are counted in.
#[derive(Clone, Default)]
pub struct ReloadMetrics {
    results: Family<ReloadLabels, Counter>,
    generation: Gauge,
    last_successful: Gauge,
}

impl ReloadMetrics {
    /// The config the process started with: generation `number`, no reload tried.
    pub fn generation(&self, number: u64) {
        self.generation.set(i64::try_from(number).unwrap_or(i64::MAX));
        self.last_successful.set(1);
    }

    /// A reload swapped in generation `number`.
    pub fn succeeded(&self, number: u64) {
        self.results.get_or_create(&ReloadLabels { result: "ok" }).inc();
        self.generation(number);
    }

    /// A reload failed; the running config was kept.
    pub fn failed(&self) {
        self.results.get_or_create(&ReloadLabels { result: "error" }).inc();
        self.last_successful.set(0);
    }

    /// Whether the last reload failed (and nothing has cleared it since).
    pub fn last_failed(&self) -> bool {
        self.last_successful.get() == 0
    }

    /// The config file holds the running config again (the operator reverted a broken edit):
    /// nothing to reload, and nothing failing any more.
    pub fn file_matches_running(&self) {
        self.last_successful.set(1);
    }
}

/// A gauge of connections in one state, held by the tasks that move connections into it.
#[derive(Clone)]
pub struct ConnectionCount {
    gauge: Gauge<i64, AtomicI64>,
}

impl ConnectionCount {
    /// Counts a connection until the returned guard is dropped.
    pub fn enter(&self) -> ConnectionGuard {
        self.gauge.inc();
        ConnectionGuard { gauge: self.gauge.clone() }
    }
}

/// Keeps a connection counted in a gauge (`airlock_active_connections`, `airlock_parked_connections`,
/// `airlock_switched_connections`).
pub struct ConnectionGuard {
    gauge: Gauge<i64, AtomicI64>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A route's request counters of named consumers, by (consumer label, method index, status
/// class index).
type NamedCounters = HashMap<(Arc<str>, u8, u8), Counter, foldhash::fast::RandomState>;

/// One route's metric handles.
pub struct RouteMetrics {
    route: Arc<str>,
    duration: LatencyHistogram,
    upstream_duration: LatencyHistogram,
    /// `[unavailable, timeout]` of the route's upstream.
    upstream_errors: Option<[Counter; 2]>,
    /// Request counters without a consumer, by method and status class, made on first use.
    anonymous: [[OnceLock<Counter>; STATUS_CLASSES.len()]; METHODS.len()],
    /// Request counters of named consumers, by consumer label, method and status class: the
    /// same counters as in `requests`, found by a foldhash of the consumer label where the family
    /// would SipHash the route, the consumer and the rest. Bounded as the labels are
    /// ([`ConsumerLabels`]).
    named: RwLock<NamedCounters>,
    requests: Family<RequestLabels, Counter>,
    /// Response counters of [`COMMON_CODES`], in its order, made on first use.
    common_codes: [OnceLock<Counter>; COMMON_CODES.len()],
    /// `airlock_responses_total`, for the codes not in [`COMMON_CODES`].
    responses: Family<ResponseLabels, Counter>,
    consumers: Arc<ConsumerLabels>,
    /// The route's warnings about its failed requests (a 5xx the operator must see to), by
    /// error code ([`WARNED_FAILURES`], then one for any other): one per
    /// [`FAILURE_WARN_INTERVAL`] and code with the count since, as the access log and
    /// `airlock_responses_total` count each request; an upstream down would otherwise make any
    /// client's request a log line (up to a request line's size, with its path). By code, so a
    /// cause that starts while another is being warned about is told too.
    failure_warnings: [WarnThrottle; WARNED_FAILURES.len() + 1],
}

/// The least time between two warnings about one route's failed requests of one code.
pub const FAILURE_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The error codes of the failures a route warns about each on its own throttle.
const WARNED_FAILURES: [&str; 8] = [
    "upstream_unavailable",
    "upstream_timeout",
    "plugin_failed",
    "plugin_busy",
    "no_upstream",
    "upstream_body_too_large",
    "upstream_bad_encoding",
    "not_switched",
];

impl RouteMetrics {
    /// Counts a failed request of error code `code` the operator is told about; returns how
    /// many of that code failed since the last such warning (this one included) when one is
    /// due ([`FAILURE_WARN_INTERVAL`]).
    pub fn failure_warning_due(&self, code: &str) -> Option<u64> {
        let i = WARNED_FAILURES.iter().position(|c| *c == code).unwrap_or(WARNED_FAILURES.len());
        self.failure_warnings.get(i).and_then(WarnThrottle::record)
    }

    /// Records a request answered with `status` after `elapsed`.
    pub fn record_request(&self, method: &Method, status: StatusCode, consumer: Option<&str>, elapsed: Duration) {
        self.duration.observe(elapsed);
        let method_index = method_index(method);
        let class = usize::from(status.as_u16() / 100).clamp(1, STATUS_CLASSES.len()) - 1;
        match consumer {
            None => self.anonymous[method_index][class]
                .get_or_init(|| self.requests.get_or_create_owned(&self.labels(method_index, class, NO_CONSUMER.into())))
                .inc(),
            Some(consumer) => self.count_named(self.consumers.label(consumer), method_index, class),
        };
        let code = status.as_u16();
        let labels = || ResponseLabels { route: self.route.clone(), code };
        match common_code_slot(code) {
            Some(slot) => self.common_codes[slot].get_or_init(|| self.responses.get_or_create_owned(&labels())).inc(),
            None => self.responses.get_or_create(&labels()).inc(),
        };
    }

    /// Counts a request of consumer label `consumer`: its counter is made (and registered in
    /// `requests`) the first time the route sees it with this method and status class.
    fn count_named(&self, consumer: Arc<str>, method: usize, class: usize) -> u64 {
        // Both indices are below 16 (`METHODS`, `STATUS_CLASSES`).
        let key = (consumer, method as u8, class as u8);
        if let Ok(named) = self.named.read()
            && let Some(counter) = named.get(&key)
        {
            return counter.inc();
        }
        let counter = self.requests.get_or_create_owned(&self.labels(method, class, key.0.clone()));
        if let Ok(mut named) = self.named.write() {
            named.entry(key).or_insert_with(|| counter.clone());
        }
        counter.inc()
    }

    fn labels(&self, method: usize, class: usize, consumer: Arc<str>) -> RequestLabels {
        RequestLabels { route: self.route.clone(), method: METHODS[method], status: STATUS_CLASSES[class], consumer }
    }

    /// Records the time the upstream took to answer.
    pub fn record_upstream(&self, elapsed: Duration) {
        self.upstream_duration.observe(elapsed);
    }

    /// The route's upstream's `unavailable` error counter, for a failure seen after the handler
    /// has returned (a streamed response body breaking off).
    pub fn upstream_unavailable(&self) -> Option<Counter> {
        self.upstream_errors.as_ref().map(|[unavailable, _]| unavailable.clone())
    }

    /// Counts an upstream failure: `timeout` true for connect and response timeouts.
    pub fn record_upstream_error(&self, timeout: bool) {
        if let Some(counters) = &self.upstream_errors {
            counters[usize::from(timeout)].inc();
        }
    }
}

fn method_index(method: &Method) -> usize {
    METHODS.iter().position(|m| *m == method.as_str()).unwrap_or(METHODS.len() - 1)
}

/// One chain entry's plugin metric handles.
pub struct PluginMetrics {
    on_request: LatencyHistogram,
    on_response: LatencyHistogram,
    /// By [`FAILURE_KINDS`] order.
    failures: [Counter; FAILURE_KINDS.len()],
    /// By [`DECISIONS`] order.
    decisions: [Counter; DECISIONS.len()],
}

impl PluginMetrics {
    /// Records one phase call's duration (`response`: the on-response phase).
    pub fn record_call(&self, response: bool, elapsed: Duration) {
        if response { &self.on_response } else { &self.on_request }.observe(elapsed);
    }

    /// Counts a failed call of this `kind` ([`FAILURE_KINDS`]).
    pub fn record_failure(&self, kind: &str) {
        if let Some(i) = FAILURE_KINDS.iter().position(|k| *k == kind) {
            self.failures[i].inc();
        }
    }

    /// Counts a request phase's decision, by its index in [`DECISIONS`].
    pub fn record_decision(&self, decision: Decision) {
        self.decisions[decision as usize].inc();
    }

    /// Phase calls made so far (both phases).
    pub fn calls(&self) -> u64 {
        self.on_request.count() + self.on_response.count()
    }

    /// Failures so far, by kind.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FAILURE_KINDS.iter().zip(&self.failures).map(|(kind, c)| (*kind, c.get()))
    }

    /// The on-request phase's latency histogram.
    pub fn on_request(&self) -> &LatencyHistogram {
        &self.on_request
    }

    /// The on-response phase's latency histogram.
    pub fn on_response(&self) -> &LatencyHistogram {
        &self.on_response
    }
}

/// A request phase's decision, indexing [`DECISIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Went on.
    Continue = 0,
    /// Answered the request.
    Respond = 1,
    /// Delayed it.
    Delay = 2,
    /// Was granted a concurrency slot.
    Slot = 3,
    /// Was refused a concurrency slot.
    SlotRefused = 4,
}

/// Bounds the `consumer` label: the first `limit` distinct consumers seen get their own value,
/// later ones share `other`, so a flood of identities cannot grow the series without end.
#[derive(Debug)]
pub struct ConsumerLabels {
    limit: usize,
    /// Hashed with foldhash, as analytics hashes the same names: at most `limit` of them, so
    /// no flood of names can crowd one map.
    known: RwLock<HashMap<Box<str>, Arc<str>, foldhash::fast::RandomState>>,
    other: Arc<str>,
}

impl ConsumerLabels {
    /// A bound of `limit` distinct consumers.
    pub fn new(limit: usize) -> Self {
        Self { limit, known: RwLock::new(HashMap::default()), other: OTHER_CONSUMER.into() }
    }

    /// The label for `consumer`.
    pub fn label(&self, consumer: &str) -> Arc<str> {
        if let Ok(known) = self.known.read() {
            if let Some(label) = known.get(consumer) {
                return label.clone();
            }
            if known.len() >= self.limit {
                return self.other.clone();
            }
        }
        let Ok(mut known) = self.known.write() else { return self.other.clone() };
        if let Some(label) = known.get(consumer) {
            return label.clone();
        }
        if known.len() >= self.limit {
            return self.other.clone();
        }
        let label: Arc<str> = consumer.into();
        known.insert(consumer.into(), label.clone());
        label
    }
}

/// Exposes the state backend's health counters at scrape time.
struct StateCollector {
    state: Arc<StateStore>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").field("backend", &self.state.backend()).finish()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.state.stats();
        let errors = ConstCounter::new(stats.unavailable.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "state_backend_errors",
            "State operations that failed because the backend was unreachable or slow",
            None,
            errors.metric_type(),
        )?;
        errors.encode(metric)?;
        let refused = ConstCounter::new(stats.cap_hits.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "state_keys_refused",
            "Keys or values the memory backend refused at `max_keys` or `max_bytes`",
            None,
            refused.metric_type(),
        )?;
        refused.encode(metric)?;
        let displaced = ConstCounter::new(stats.displaced.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "state_keys_displaced",
            "Live keys nearest their expiry that made way for new keys at `max_keys` or `max_bytes`",
            None,
            displaced.metric_type(),
        )?;
        displaced.encode(metric)?;
        // This gateway's own memory store: the state itself (`memory`), or the local fallback
        // (`redis`). Read at scrape time, two relaxed loads: nothing on the request path.
        let local = self.state.local();
        let keys = ConstGauge::new(i64::try_from(local.len()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "state_keys",
            "Keys held in this gateway's memory state store (expired ones until swept), against `max_keys`",
            None,
            keys.metric_type(),
        )?;
        keys.encode(metric)?;
        let bytes = ConstGauge::new(i64::try_from(local.stored_bytes()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "state_bytes",
            "Bytes of keys and stored values held in this gateway's memory state store, against `max_bytes`",
            None,
            bytes.metric_type(),
        )?;
        bytes.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_labels_are_bounded() {
        let labels = ConsumerLabels::new(2);
        assert_eq!(&*labels.label("alice"), "alice");
        assert_eq!(&*labels.label("bob"), "bob");
        assert_eq!(&*labels.label("carol"), OTHER_CONSUMER);
        assert_eq!(&*labels.label("alice"), "alice");
    }

    /// A route warns about its failures once per interval and error code: a second cause
    /// starting within the interval of the first is told at once; more of one cause are not.
    #[test]
    fn a_routes_failure_warnings_are_throttled_by_error_code() {
        let metrics = Metrics::new(2, Arc::new(StateStore::Memory(crate::state::memory::MemoryStore::new(10))));
        let route = metrics.route("r".into(), None);
        assert_eq!(route.failure_warning_due("upstream_timeout"), Some(1));
        assert_eq!(route.failure_warning_due("upstream_timeout"), None);
        assert_eq!(route.failure_warning_due("plugin_failed"), Some(1), "another cause is its own warning");
        assert_eq!(route.failure_warning_due("upstream_unavailable"), Some(1));
        assert_eq!(route.failure_warning_due("some_new_code"), Some(1), "codes not listed share one throttle");
        assert_eq!(route.failure_warning_due("another_new_code"), None);
        let other = metrics.route("o".into(), None);
        assert_eq!(other.failure_warning_due("upstream_timeout"), Some(1), "another route's own");
    }

    /// A named consumer's requests are counted under its label, method and status class, the
    /// same counter found again on the next request; past the bound they count as `other`.
    #[test]
    fn named_consumers_requests_are_counted_under_their_labels() {
        let metrics = Metrics::new(2, Arc::new(StateStore::Memory(crate::state::memory::MemoryStore::new(10))));
        let route = metrics.route("r".into(), None);
        let ms = Duration::from_millis(1);
        for (method, status, consumer) in [
            (Method::GET, 200, Some("alice")),
            (Method::GET, 204, Some("alice")),
            (Method::POST, 503, Some("alice")),
            (Method::GET, 200, Some("bob")),
            (Method::GET, 200, Some("carol")),
            (Method::GET, 200, Some("dave")),
            (Method::GET, 200, None),
        ] {
            route.record_request(&method, StatusCode::from_u16(status).unwrap(), consumer, ms);
        }
        let text = metrics.encode().unwrap();
        let count = |consumer: &str, method: &str, status: &str| {
            let labels = format!("route=\"r\",method=\"{method}\",status=\"{status}\",consumer=\"{consumer}\"");
            text.lines()
                .find(|l| l.starts_with("airlock_requests_total{") && l.contains(&labels))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        };
        assert_eq!(count("alice", "GET", "2xx"), Some(2), "{text}");
        assert_eq!(count("alice", "POST", "5xx"), Some(1));
        assert_eq!(count("bob", "GET", "2xx"), Some(1));
        assert_eq!(count(OTHER_CONSUMER, "GET", "2xx"), Some(2), "carol and dave past the bound");
        assert_eq!(count(NO_CONSUMER, "GET", "2xx"), Some(1));
    }

    #[test]
    fn common_codes_are_sorted_for_their_lookup() {
        assert!(COMMON_CODES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(common_code_slot(200), Some(0));
        assert_eq!(common_code_slot(504), Some(COMMON_CODES.len() - 1));
        assert_eq!(common_code_slot(418), None);
    }
}
