//! Host-native telemetry (DESIGN.md section 5): Prometheus [`metrics`], W3C [`trace_context`]
//! with a `tracing` span per request, the JSON [`access_log`], [`otlp`] span export, usage
//! [`analytics`] with [`anomaly`] flags, pool sizes ([`pools`]), the metrics plugins define
//! ([`plugin_metrics`]) and the standard process metrics ([`process`]).
//!
//! One [`Telemetry`] belongs to each [`crate::gateway::Gateway`]. The proxy opens a
//! [`request::RequestRecord`] when a request arrives, tells it what happened phase by phase, and
//! finishes it with the response; metric handles are resolved per route and per chain entry when
//! the config is built, so the request path records without lookups.

pub mod access_log;
pub mod analytics;
pub mod anomaly;
pub mod histogram;
pub mod log_filter;
pub mod metrics;
pub mod observed_body;
pub mod otlp;
pub mod plugin_metrics;
pub mod pools;
pub mod process;
pub mod request;
pub mod spans;
pub mod trace_context;
pub mod warn_throttle;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use http::header::HeaderName;
use toml::Spanned;

use self::access_log::{AccessLog, LogTarget};
use self::analytics::{Analytics, AnalyticsSettings};
use self::metrics::{Metrics, NO_ROUTE, RouteMetrics};
use self::otlp::SpanExporter;
use crate::config::{Config, ConfigIssue, ConfigSource};
use crate::state::StateStore;

/// One gateway's telemetry: its metrics, trace settings and access log.
pub struct Telemetry {
    /// The Prometheus metrics.
    pub metrics: Metrics,
    /// Share of new traces sampled.
    sample_ratio: f64,
    /// Whose trace context and request id are continued (`[tracing] trust_incoming`).
    trust_incoming: crate::config::TrustIncoming,
    /// Response header carrying the trace id, if configured.
    response_header: Option<HeaderName>,
    /// Set when the gateway starts serving with `[access_log] enabled = true`.
    access_log: OnceLock<Arc<AccessLog>>,
    /// The collector URL, when `[otlp] endpoint` is set and valid.
    otlp_endpoint: Option<http::Uri>,
    /// Set when the gateway starts serving with an OTLP endpoint.
    otlp: OnceLock<SpanExporter>,
    /// Metrics of requests no route matched.
    unrouted: RouteMetrics,
    /// Usage analytics and anomaly flags, unless `[analytics] enabled = false`.
    analytics: Option<Arc<Analytics>>,
}

impl Telemetry {
    /// Whether a request's own `traceparent`, `tracestate` and `X-Request-Id` are continued:
    /// `via_trusted_proxy` says it came through one of its listener's `trusted_proxies`.
    pub fn trusts_incoming(&self, via_trusted_proxy: bool) -> bool {
        match self.trust_incoming {
            crate::config::TrustIncoming::All => true,
            crate::config::TrustIncoming::TrustedProxies => via_trusted_proxy,
            crate::config::TrustIncoming::None => false,
        }
    }

    /// Telemetry for `config`, whose `[metrics]` and `[tracing]` sections are checked, problems
    /// added to `issues`.
    pub fn new(source: &ConfigSource, config: &Config, state: Arc<StateStore>, issues: &mut Vec<ConfigIssue>) -> Self {
        let ratio = &config.tracing.sample_ratio;
        if !(0.0..=1.0).contains(ratio.get_ref()) {
            issues.push(source.issue(Some(ratio.span()), "tracing.sample_ratio", "must be between 0.0 and 1.0"));
        }
        let response_header = parse_optional(
            source,
            config.tracing.response_header.as_ref(),
            "tracing.response_header",
            "is not a valid header name",
            |name| HeaderName::from_bytes(name.as_bytes()).ok(),
            issues,
        );
        // Written on every response, replacing what is there: never over a field the response
        // needs (a `content-length` of 32 hex digits broke every answer).
        let response_header = match (response_header, config.tracing.response_header.as_ref()) {
            (Some(name), Some(value)) if crate::proxy::headers::reserved_response_field(&name) => {
                issues.push(source.issue(
                    Some(value.span()),
                    "tracing.response_header",
                    format!(
                        "`{name}` is a field the response needs for itself (framing, hop-by-hop, routing, caching, \
                         content, `via`, `x-request-id`): name one of its own for the trace id, e.g. `x-trace-id`"
                    ),
                ));
                None
            }
            (name, _) => name,
        };
        let otlp_endpoint = match config.otlp.endpoint.as_ref() {
            // User info would never be sent (the export sends no credentials), and the URL is
            // shown in `/admin/config` and in export warnings: refused, without echoing it.
            Some(url) if crate::admin::redact::has_url_user_info(url.get_ref()) => {
                issues.push(source.issue(
                    Some(url.span()),
                    "otlp.endpoint",
                    "carries user info (`user:password@`), which the export never sends: it sends no credentials; \
                     point it at a local OpenTelemetry Collector (agent or sidecar) that forwards with its own",
                ));
                None
            }
            endpoint => parse_optional(
                source,
                endpoint,
                "otlp.endpoint",
                "is not an `http://host:port/path` URL with the collector's traces path (OTLP/HTTP's is \
                 `/v1/traces`: `http://collector:4318/v1/traces`; a bare base URL would post every span to `/`)",
                |url| {
                    // A port past 65535 (the URI parses, its `port()` is `None`) or a fragment
                    // would fail every export.
                    let port_text = |a: &http::uri::Authority| a.as_str().rsplit(']').next().is_some_and(|host_end| host_end.contains(':'));
                    let valid = |u: &http::Uri| u.authority().is_some_and(|a| a.port().is_some() || !port_text(a)) && !url.contains('#');
                    url.parse::<http::Uri>().ok().filter(|u| u.scheme_str() == Some("http") && u.authority().is_some() && u.path() != "/" && valid(u))
                },
                issues,
            ),
        };
        at_least_one(source, &config.access_log.queue_lines, "access_log.queue_lines", issues);
        if config.access_log.enabled
            && let Some(path) = &config.access_log.path
            && let Some(problem) = access_log::folder_problem(&source.base_dir.join(path.get_ref()))
        {
            issues.push(source.issue(Some(path.span()), "access_log.path", problem));
        }
        at_least_one(source, &config.otlp.queue_spans, "otlp.queue_spans", issues);
        let metrics = Metrics::new(config.metrics.consumer_labels, state);
        let unrouted = metrics.route(NO_ROUTE.into(), None);
        let analytics_settings = AnalyticsSettings::from_config(source, &config.analytics, issues);
        let analytics = config
            .analytics
            .enabled
            .then(|| Arc::new(Analytics::new(analytics_settings, metrics.anomaly_counters())));
        Self {
            metrics,
            sample_ratio: *ratio.get_ref(),
            trust_incoming: config.tracing.trust_incoming,
            response_header,
            access_log: OnceLock::new(),
            otlp_endpoint,
            otlp: OnceLock::new(),
            unrouted,
            analytics,
        }
    }

    /// The usage analytics, unless turned off.
    pub fn analytics(&self) -> Option<&Arc<Analytics>> {
        self.analytics.as_ref()
    }

    /// Starts the access log `[access_log]` asks for (relative paths are resolved against
    /// `base_dir`), once. Returns it, or `None` when it is off.
    pub fn start_access_log(&self, config: &Config, base_dir: &Path) -> std::io::Result<Option<Arc<AccessLog>>> {
        if !config.access_log.enabled {
            return Ok(None);
        }
        if let Some(log) = self.access_log.get() {
            return Ok(Some(log.clone()));
        }
        let target = match &config.access_log.path {
            Some(path) => LogTarget::File(base_dir.join(path.get_ref())),
            None => LogTarget::Stdout,
        };
        let log = Arc::new(AccessLog::open(
            target,
            *config.access_log.queue_lines.get_ref(),
            self.metrics.access_log_dropped.clone(),
        )?);
        Ok(Some(self.access_log.get_or_init(|| log).clone()))
    }

    /// Starts OTLP export if `[otlp] endpoint` is set (on the current tokio runtime), once.
    pub fn start_otlp(&self, config: &Config) {
        if let Some(endpoint) = &self.otlp_endpoint {
            self.otlp
                .get_or_init(|| SpanExporter::start(&config.otlp, endpoint.clone(), self.metrics.otlp.clone()));
        }
    }

    /// The running span exporter, if any.
    pub fn otlp(&self) -> Option<&SpanExporter> {
        self.otlp.get()
    }

    /// The running access log, if any.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access_log.get()
    }
}

/// Parses an optional text key, reporting `` `value` <problem> `` at its line when `parse` fails.
fn parse_optional<T>(
    source: &ConfigSource,
    value: Option<&Spanned<String>>,
    key: &str,
    problem: &str,
    parse: impl FnOnce(&str) -> Option<T>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    let value = value?;
    let parsed = parse(value.get_ref());
    if parsed.is_none() {
        issues.push(source.issue(Some(value.span()), key, format!("`{}` {problem}", value.get_ref())));
    }
    parsed
}

/// Reports a count that must be at least 1.
fn at_least_one(source: &ConfigSource, value: &Spanned<usize>, key: &str, issues: &mut Vec<ConfigIssue>) {
    if *value.get_ref() == 0 {
        issues.push(source.issue(Some(value.span()), key, "must be at least 1"));
    }
}
