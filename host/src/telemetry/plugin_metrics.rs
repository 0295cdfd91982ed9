//! Metrics plugins define through the `metrics` capability, exported on `/metrics` as
//! `airlock_custom_<plugin>_<name>` (counters get the usual `_total`): a namespace of their own,
//! apart from the gateway's `airlock_plugin_*` families, which a plugin must not be able to add
//! series to. Each plugin's series live
//! in its own [`PluginMetricSet`], which only that plugin's instances can reach; names and labels
//! are validated, and a plugin has at most [`MAX_SERIES_PER_PLUGIN`] distinct series (name and
//! label values), so a buggy or hostile plugin cannot grow the scrape without end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Distinct series one plugin may have: enough for a few metrics with a few label values each.
pub const MAX_SERIES_PER_PLUGIN: usize = 256;
/// Longest metric or label name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Most labels on one series.
pub const MAX_LABELS: usize = 4;
/// Longest label value, in bytes (longer values are refused rather than cut, so series stay distinct).
pub const MAX_LABEL_VALUE_BYTES: usize = 128;
/// Histogram bucket upper bounds: Prometheus's defaults (seconds for latencies, or any unit).
pub const HISTOGRAM_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Why a plugin's metrics call was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginMetricError {
    /// A metric or label name, or a label value, is not acceptable.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The plugin already has [`MAX_SERIES_PER_PLUGIN`] series.
    #[error("the plugin already has {MAX_SERIES_PER_PLUGIN} series")]
    TooManySeries,
    /// The name is already used by a metric of another type.
    #[error("`{0}` is already a metric of another type")]
    TypeMismatch(String),
}

/// A series' labels, sorted by name.
type Labels = Vec<(String, String)>;

/// One histogram series.
#[derive(Debug, Clone, Default)]
struct HistogramValues {
    /// Per bucket of [`HISTOGRAM_BUCKETS`], plus `+Inf`.
    buckets: [u64; HISTOGRAM_BUCKETS.len() + 1],
    sum: f64,
}

/// One metric's series.
#[derive(Debug)]
enum Family {
    Counter(BTreeMap<Labels, u64>),
    Gauge(BTreeMap<Labels, f64>),
    Histogram(BTreeMap<Labels, HistogramValues>),
}

impl Family {
    fn len(&self) -> usize {
        match self {
            Family::Counter(m) => m.len(),
            Family::Gauge(m) => m.len(),
            Family::Histogram(m) => m.len(),
        }
    }
}

/// The series of one plugin.
#[derive(Debug)]
pub struct PluginMetricSet {
    plugin: String,
    /// `custom_<plugin>_`: the exported name's middle part (the registry adds `airlock_`).
    prefix: String,
    families: Mutex<BTreeMap<String, Family>>,
}

/// The kind of a call, for the type check.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl PluginMetricSet {
    fn new(plugin: &str) -> Self {
        Self { plugin: plugin.to_owned(), prefix: format!("custom_{}_", name_part(plugin)), families: Mutex::new(BTreeMap::new()) }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Family>> {
        self.families.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `delta` to counter `name`.
    pub fn counter_add(&self, name: &str, labels: Vec<(String, String)>, delta: u64) -> Result<(), PluginMetricError> {
        // The gateway appends `_total` (Prometheus's counter suffix): one given here would be
        // exported doubled, `hits_total_total`.
        if name.ends_with("_total") {
            let bare = name.trim_end_matches("_total");
            return Err(PluginMetricError::Invalid(format!("counter name `{name}`: give it without `_total` (`{bare}`), which the gateway appends")));
        }
        self.with_series(name, labels, Kind::Counter, |family, labels| {
            if let Family::Counter(m) = family {
                let v = m.entry(labels).or_default();
                *v = v.saturating_add(delta);
            }
        })
    }

    /// Sets gauge `name` to `value`.
    pub fn gauge_set(&self, name: &str, labels: Vec<(String, String)>, value: f64) -> Result<(), PluginMetricError> {
        if !value.is_finite() {
            return Err(PluginMetricError::Invalid(format!("gauge value {value} is not a finite number")));
        }
        self.with_series(name, labels, Kind::Gauge, |family, labels| {
            if let Family::Gauge(m) = family {
                m.insert(labels, value);
            }
        })
    }

    /// Observes `value` in histogram `name`.
    pub fn histogram_observe(&self, name: &str, labels: Vec<(String, String)>, value: f64) -> Result<(), PluginMetricError> {
        if !value.is_finite() {
            return Err(PluginMetricError::Invalid(format!("observed value {value} is not a finite number")));
        }
        self.with_series(name, labels, Kind::Histogram, |family, labels| {
            if let Family::Histogram(m) = family {
                let h = m.entry(labels).or_default();
                let index = HISTOGRAM_BUCKETS.iter().position(|b| value <= *b).unwrap_or(HISTOGRAM_BUCKETS.len());
                h.buckets[index] += 1;
                h.sum += value;
            }
        })
    }

    /// Validates, finds or makes the series (within the cap), and applies `update` to it.
    fn with_series(
        &self,
        name: &str,
        mut labels: Labels,
        kind: Kind,
        update: impl FnOnce(&mut Family, Labels),
    ) -> Result<(), PluginMetricError> {
        check_name(name, "metric")?;
        if labels.len() > MAX_LABELS {
            return Err(PluginMetricError::Invalid(format!("{} labels, at most {MAX_LABELS}", labels.len())));
        }
        for (label, value) in &labels {
            check_name(label, "label")?;
            if label.starts_with("__") || label == "le" {
                return Err(PluginMetricError::Invalid(format!("label name `{label}` is reserved")));
            }
            if value.len() > MAX_LABEL_VALUE_BYTES {
                return Err(PluginMetricError::Invalid(format!("value of label `{label}` is over {MAX_LABEL_VALUE_BYTES} bytes")));
            }
        }
        labels.sort();
        if labels.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(PluginMetricError::Invalid("a label name is given twice".into()));
        }
        let mut families = self.lock();
        let total: usize = families.values().map(Family::len).sum();
        let family = match families.get_mut(name) {
            Some(f) => f,
            None => {
                if total >= MAX_SERIES_PER_PLUGIN {
                    return Err(PluginMetricError::TooManySeries);
                }
                let new = match kind {
                    Kind::Counter => Family::Counter(BTreeMap::new()),
                    Kind::Gauge => Family::Gauge(BTreeMap::new()),
                    Kind::Histogram => Family::Histogram(BTreeMap::new()),
                };
                families.entry(name.to_owned()).or_insert(new)
            }
        };
        let exists = match (kind, &*family) {
            (Kind::Counter, Family::Counter(m)) => m.contains_key(&labels),
            (Kind::Gauge, Family::Gauge(m)) => m.contains_key(&labels),
            (Kind::Histogram, Family::Histogram(m)) => m.contains_key(&labels),
            _ => return Err(PluginMetricError::TypeMismatch(name.to_owned())),
        };
        if !exists && total >= MAX_SERIES_PER_PLUGIN {
            return Err(PluginMetricError::TooManySeries);
        }
        update(family, labels);
        Ok(())
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let families = self.lock();
        for (name, family) in families.iter() {
            let full = format!("{}{name}", self.prefix);
            let help = format!("Defined by plugin `{}`", self.plugin);
            match family {
                Family::Counter(series) => {
                    let mut e = encoder.encode_descriptor(&full, &help, None, MetricType::Counter)?;
                    for (labels, value) in series {
                        ConstCounter::new(*value).encode(e.encode_family(labels)?)?;
                    }
                }
                Family::Gauge(series) => {
                    let mut e = encoder.encode_descriptor(&full, &help, None, MetricType::Gauge)?;
                    for (labels, value) in series {
                        ConstGauge::new(*value).encode(e.encode_family(labels)?)?;
                    }
                }
                Family::Histogram(series) => {
                    let mut e = encoder.encode_descriptor(&full, &help, None, MetricType::Histogram)?;
                    for (labels, h) in series {
                        let buckets: Vec<(f64, u64)> = h
                            .buckets
                            .iter()
                            .enumerate()
                            .map(|(i, n)| (HISTOGRAM_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), *n))
                            .collect();
                        let count = h.buckets.iter().sum();
                        e.encode_family(labels)?.encode_histogram::<NoLabelSet>(h.sum, count, &buckets, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `[a-z_][a-z0-9_]*`, at most [`MAX_NAME_BYTES`]: safe inside a Prometheus name, one spelling per name.
fn check_name(name: &str, what: &str) -> Result<(), PluginMetricError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok || name.len() > MAX_NAME_BYTES || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(PluginMetricError::Invalid(format!(
            "{what} name `{}` must match [a-z_][a-z0-9_]* and be at most {MAX_NAME_BYTES} bytes",
            name.chars().take(MAX_NAME_BYTES).collect::<String>()
        )));
    }
    Ok(())
}

/// A plugin's name as its metrics carry it: lower-cased, other characters than letters and
/// digits as `_`.
pub fn name_part(plugin: &str) -> String {
    plugin.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// Whether the metrics of plugins `a` and `b` could get the same name: their name parts are
/// equal, or one followed by `_` starts the other (`a` + `b_hits` and `a_b` + `hits`).
pub fn names_could_collide(a: &str, b: &str) -> bool {
    let (a, b) = (name_part(a), name_part(b));
    a == b || b.starts_with(&format!("{a}_")) || a.starts_with(&format!("{b}_"))
}

/// Every plugin's metric set, and their collector.
#[derive(Debug, Default)]
pub struct PluginMetricStore {
    plugins: Mutex<BTreeMap<String, Arc<PluginMetricSet>>>,
}

impl PluginMetricStore {
    /// The set of plugin `plugin` (shared by all its chain entries and instances).
    pub fn set_for(&self, plugin: &str) -> Arc<PluginMetricSet> {
        let mut plugins = self.plugins.lock().unwrap_or_else(PoisonError::into_inner);
        plugins.entry(plugin.to_owned()).or_insert_with(|| Arc::new(PluginMetricSet::new(plugin))).clone()
    }

    /// Drops plugin `plugin`'s series (a refused reload's plugin that no served config had).
    pub fn forget(&self, plugin: &str) {
        self.plugins.lock().unwrap_or_else(PoisonError::into_inner).remove(plugin);
    }
}

/// Encodes every plugin's metrics at scrape time.
#[derive(Debug)]
pub struct PluginMetricCollector(pub Arc<PluginMetricStore>);

impl Collector for PluginMetricCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sets: Vec<Arc<PluginMetricSet>> =
            self.0.plugins.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        for set in sets {
            set.encode(&mut encoder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn names_are_checked_and_types_kept() {
        let set = PluginMetricSet::new("my-plugin");
        assert_eq!(set.prefix, "custom_my_plugin_");
        assert!(names_could_collide("a", "a_b") && names_could_collide("A-B", "a_b") && names_could_collide("a.b", "a"));
        assert!(!names_could_collide("ab", "a") && !names_could_collide("a", "b") && !names_could_collide("abc", "ab_"));
        assert!(set.counter_add("hits", labels(&[("kind", "a")]), 2).is_ok());
        assert!(matches!(set.counter_add("Hits", vec![], 1), Err(PluginMetricError::Invalid(_))));
        assert!(matches!(set.counter_add("a-b", vec![], 1), Err(PluginMetricError::Invalid(_))));
        assert!(matches!(set.counter_add(&"x".repeat(65), vec![], 1), Err(PluginMetricError::Invalid(_))));
        assert!(matches!(set.counter_add("hits", labels(&[("le", "1")]), 1), Err(PluginMetricError::Invalid(_))));
        match set.counter_add("hits_total", vec![], 1) {
            Err(PluginMetricError::Invalid(why)) => assert!(why.contains("without `_total` (`hits`)"), "{why}"),
            other => panic!("a counter named *_total: {other:?}"),
        }
        assert!(matches!(set.gauge_set("hits", vec![], 1.0), Err(PluginMetricError::TypeMismatch(_))));
        assert!(matches!(set.gauge_set("g", vec![], f64::NAN), Err(PluginMetricError::Invalid(_))));
    }

    #[test]
    fn series_are_capped_per_plugin() {
        let set = PluginMetricSet::new("p");
        for i in 0..MAX_SERIES_PER_PLUGIN {
            set.counter_add("c", labels(&[("i", &i.to_string())]), 1).unwrap();
        }
        assert_eq!(set.counter_add("c", labels(&[("i", "new")]), 1), Err(PluginMetricError::TooManySeries));
        assert_eq!(set.gauge_set("other", vec![], 1.0), Err(PluginMetricError::TooManySeries));
        // Existing series still count.
        assert!(set.counter_add("c", labels(&[("i", "0")]), 1).is_ok());
    }
}
