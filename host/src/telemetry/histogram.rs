//! A latency histogram that records without locks: fixed buckets of atomic counters, a copy per
//! request worker so the cores do not contend for them. It is
//! encoded as a Prometheus histogram, and the admin API reads percentiles from the same buckets.
//! (prometheus-client's own histogram takes a mutex on every observation.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Bucket upper bounds in seconds: 10 µs (a warm plugin call) to 60 s, past the default request
/// timeout (30 s), so requests that wait on a slow upstream until it are told apart from those
/// cut at 10 s rather than all landing in `+Inf`.
pub const LATENCY_BUCKETS: [f64; 21] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Copies of a histogram's counters: each request worker ([`crate::workers`]) adds to its own
/// (workers past this many share one), so two cores recording at once do not pass the same cache
/// lines back and forth on every observation; readers add the copies up.
const SHARDS: usize = 4;

/// The counters behind a [`LatencyHistogram`], one worker's copy (on cache lines of its own).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Cells {
    /// One counter per bucket of [`LATENCY_BUCKETS`], plus the `+Inf` overflow.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observations in nanoseconds.
    sum_nanos: AtomicU64,
}

/// A lock-free latency histogram; clones share the same counters.
#[derive(Debug, Default, Clone)]
pub struct LatencyHistogram {
    cells: Arc<[Cells; SHARDS]>,
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(LATENCY_BUCKETS.len());
        let cells = &self.cells[crate::workers::current() % SHARDS];
        cells.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.bucket_counts().iter().sum()
    }

    /// Observations per bucket of [`LATENCY_BUCKETS`] (then `+Inf`), over every worker's copy.
    fn bucket_counts(&self) -> [u64; LATENCY_BUCKETS.len() + 1] {
        let mut counts = [0; LATENCY_BUCKETS.len() + 1];
        for cells in self.cells.iter() {
            for (count, cell) in counts.iter_mut().zip(&cells.buckets) {
                *count += cell.load(Ordering::Relaxed);
            }
        }
        counts
    }

    /// Sum of observations in seconds.
    fn sum_seconds(&self) -> f64 {
        self.cells.iter().map(|c| c.sum_nanos.load(Ordering::Relaxed)).fold(0u64, u64::saturating_add) as f64 / 1e9
    }

    /// The upper bound (seconds) of the bucket holding the `quantile` (0..=1) observation, or
    /// `None` with no observations; `f64::INFINITY` if it lies past the last bucket.
    pub fn quantile_upper_bound(&self, quantile: f64) -> Option<f64> {
        let counts = self.bucket_counts();
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
            .bucket_counts()
            .into_iter()
            .enumerate()
            .map(|(i, count)| (LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), count))
            .collect();
        let count = per_bucket.iter().map(|(_, c)| c).sum();
        let sum = self.sum_seconds();
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
        h.observe(Duration::from_secs(61));
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_upper_bound(0.5), Some(0.000_05));
        assert_eq!(h.quantile_upper_bound(0.99), Some(0.005));
        assert_eq!(h.quantile_upper_bound(1.0), Some(f64::INFINITY));
        // A request that waited out the default 30 s timeout has a bucket of its own.
        let slow = LatencyHistogram::default();
        slow.observe(Duration::from_secs(29));
        assert_eq!(slow.quantile_upper_bound(1.0), Some(30.0));
    }

    #[tokio::test]
    async fn every_workers_observations_are_counted() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(40));
        let workers = crate::workers::Workers::start(3).unwrap();
        for i in 0..3 {
            let h = h.clone();
            workers.spawn(i, async move { h.observe(Duration::from_millis(3)) }).await.unwrap();
        }
        assert_eq!(h.count(), 4);
        assert_eq!(h.quantile_upper_bound(0.25), Some(0.000_05));
        assert_eq!(h.quantile_upper_bound(0.5), Some(0.005));
        assert!((h.sum_seconds() - 0.009_04).abs() < 1e-9, "{}", h.sum_seconds());
    }
}
