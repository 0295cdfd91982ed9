//! `airlock:plugin/metrics`: counters, gauges and histograms a plugin defines (capability
//! `metrics`), kept in the plugin's own set ([`crate::telemetry::plugin_metrics`]), which checks
//! names and caps the number of series, and exported on `/metrics` under the plugin's name.

use super::HostState;
use super::airlock::plugin::metrics::{Host, Label, MetricsError};
use crate::telemetry::plugin_metrics::PluginMetricError;

fn to_wit(e: PluginMetricError) -> MetricsError {
    match e {
        PluginMetricError::Invalid(why) => MetricsError::Invalid(why),
        PluginMetricError::TooManySeries => MetricsError::TooManySeries,
        PluginMetricError::TypeMismatch(_) => MetricsError::TypeMismatch,
    }
}

fn pairs(labels: Vec<Label>) -> Vec<(String, String)> {
    labels.into_iter().map(|l| (l.name, l.value)).collect()
}

/// The instance's metric set, or the error a plugin sees if the host gave it none (a component
/// that imports `metrics` loaded outside a gateway).
macro_rules! set {
    ($self:ident) => {
        match &$self.metrics {
            Some(set) => set,
            None => return Err(MetricsError::Invalid("no metrics are kept for this plugin".into())),
        }
    };
}

impl Host for HostState {
    fn counter_add(&mut self, name: String, labels: Vec<Label>, delta: u64) -> Result<(), MetricsError> {
        set!(self).counter_add(&name, pairs(labels), delta).map_err(to_wit)
    }

    fn gauge_set(&mut self, name: String, labels: Vec<Label>, value: f64) -> Result<(), MetricsError> {
        set!(self).gauge_set(&name, pairs(labels), value).map_err(to_wit)
    }

    fn histogram_observe(&mut self, name: String, labels: Vec<Label>, value: f64) -> Result<(), MetricsError> {
        set!(self).histogram_observe(&name, pairs(labels), value).map_err(to_wit)
    }
}
