//! Counters, gauges and histograms of the plugin's own, exported on the gateway's `/metrics` as
//! `airlock_custom_<plugin>_<name>`: capability `metrics`.
//!
//! A plugin that calls anything in this module imports `airlock:plugin/metrics`, and the gateway
//! loads it only if its `[plugins.<name>]` definition grants it (`capabilities = ["metrics"]`).
//! Plugins that never call it do not import it.
//!
//! Names are `[a-z_][a-z0-9_]*` (at most 64 bytes; a counter's name without `_total`, which the
//! gateway appends: see [`counter_add`]). Each distinct name and set of label values is a
//! series, and a plugin has at most 256: keep label values few (a status class, not a user id). A refused call records nothing and says why;
//! metrics are best effort, so most plugins ignore the error.
//!
//! ```no_run
//! use airlock_sdk::metrics;
//!
//! // airlock_custom_<plugin>_cache_lookups_total{result="hit"}
//! let _ = metrics::counter_add("cache_lookups", &[("result", "hit")], 1);
//! let _ = metrics::gauge_set("cache_entries", &[], 1234.0);
//! let _ = metrics::histogram_observe("lookup_seconds", &[], 0.0021);
//! ```

use crate::bindings::airlock::plugin::metrics as raw;

/// Why a metrics call was refused. Nothing was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsError {
    /// A name, label or value is not acceptable; the text says which and why.
    Invalid(String),
    /// The plugin already has its most distinct series; this call would have made a new one.
    TooManySeries,
    /// The name is already used by a metric of another type.
    TypeMismatch,
}

impl std::fmt::Display for MetricsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(m) => write!(f, "invalid metric: {m}"),
            Self::TooManySeries => f.write_str("too many metric series for this plugin"),
            Self::TypeMismatch => f.write_str("the name is already a metric of another type"),
        }
    }
}

impl std::error::Error for MetricsError {}

impl From<raw::MetricsError> for MetricsError {
    fn from(e: raw::MetricsError) -> Self {
        match e {
            raw::MetricsError::Invalid(m) => Self::Invalid(m),
            raw::MetricsError::TooManySeries => Self::TooManySeries,
            raw::MetricsError::TypeMismatch => Self::TypeMismatch,
        }
    }
}

fn labels<'a>(labels: &[(&'a str, &'a str)]) -> Vec<raw::Label<'a>> {
    labels.iter().map(|&(name, value)| raw::Label { name, value }).collect()
}

/// Adds `delta` to the counter `name` with `labels` (created at 0).
///
/// Give `name` without the `_total` suffix: the gateway exports the counter as
/// `airlock_custom_<plugin>_<name>_total`, as Prometheus counters are named. A name that already
/// ends in `_total` is refused with [`MetricsError::Invalid`] (it would be exported doubled,
/// `..._total_total`).
pub fn counter_add(name: &str, labels_: &[(&str, &str)], delta: u64) -> Result<(), MetricsError> {
    raw::counter_add(name, &labels(labels_), delta).map_err(Into::into)
}

/// Sets the gauge `name` with `labels` to `value` (a finite number).
pub fn gauge_set(name: &str, labels_: &[(&str, &str)], value: f64) -> Result<(), MetricsError> {
    raw::gauge_set(name, &labels(labels_), value).map_err(Into::into)
}

/// Records `value` (seconds for durations) in the histogram `name` with `labels`. Buckets are
/// Prometheus's defaults, 0.005 to 10.
pub fn histogram_observe(name: &str, labels_: &[(&str, &str)], value: f64) -> Result<(), MetricsError> {
    raw::histogram_observe(name, &labels(labels_), value).map_err(Into::into)
}
