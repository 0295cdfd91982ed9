//! A latency histogram that records without locks: fixed buckets of atomic counters. It is
//! encoded as a Prometheus histogram, and the admin API reads percentiles from the same buckets.
//! (prometheus-client's own histogram takes a mutex on every observation.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Bucket upper bounds in seconds: 10 µs (a warm plugin call) to 10 s (a slow upstream).
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The counters behind a [`LatencyHistogram`].
#[derive(Debug, Default)]
struct Cells {
    /// One counter per bucket of [`LATENCY_BUCKETS`], plus the `+Inf` overflow.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observations in nanoseconds.
    sum_nanos: AtomicU64,
}

/// A lock-free latency histogram; clones share the same counters.
#[derive(Debug, Default, Clone)]
pub struct LatencyHistogram {
    cells: Arc<Cells>,
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(LATENCY_BUCKETS.len());
        self.cells.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.cells.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The upper bound (seconds) of the bucket holding the `quantile` (0..=1) observation, or
    /// `None` with no observations; `f64::INFINITY` if it lies past the last bucket.
    pub fn quantile_upper_bound(&self, quantile: f64) -> Option<f64> {
        let counts: Vec<u64> = self.cells.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder takes per-bucket counts and accumulates them itself.
        let per_bucket: Vec<(f64, u64)> = self
            .cells
            .buckets
            .iter()
            .enumerate()
            .map(|(i, cell)| (LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), cell.load(Ordering::Relaxed)))
            .collect();
        let count = per_bucket.iter().map(|(_, c)| c).sum();
        let sum = self.cells.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &per_bucket, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_bucket_bounds() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile_upper_bound(0.99), None);
        for _ in 0..98 {
            h.observe(Duration::from_micros(40));
        }
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_upper_bound(0.5), Some(0.000_05));
        assert_eq!(h.quantile_upper_bound(0.99), Some(0.005));
        assert_eq!(h.quantile_upper_bound(1.0), Some(f64::INFINITY));
    }
}
