//! Usage analytics: per route and per consumer, over sliding windows of one minute and one hour,
//! requests, 5xx and 4xx shares, latency percentiles (HDR histograms) and bytes in and out; top
//! endpoints and consumers; and the [`anomaly`](super::anomaly) flags raised from the same traffic.
//!
//! Every answered request becomes one [`Sample`], recorded when its response body is done (so
//! bytes out are known). Recording is cheap and takes no global lock: a sample is pushed to one of
//! [`SHARDS`] buffers, picked per thread, whose mutex no other thread normally holds. A buffer is
//! folded into the shared aggregate when it holds [`FLUSH_SAMPLES`] samples or its oldest is
//! [`FLUSH_AFTER`] old, and whenever the figures are read, so a reader always sees every request
//! answered before it asked. `bench/analytics.rs` measures the cost.
//!
//! Windows are rings of slots ([`MINUTE`]: 6 slots of 10 s; [`HOUR`]: 12 slots of 5 min): a window
//! covers its running slot and the slots before it, so "1 m" spans 50 to 60 s. Memory is bounded:
//! routes come from the config, consumers past `max_consumers` share `other`, and each slot's
//! histogram is made on first use and reused when the ring comes round.

use std::collections::HashMap;

/// Maps keyed by route id or consumer name (from the config, bounded by `max_consumers`):
/// hashed with foldhash, as every answered request looks them up several times (recording a
/// sample 16% cheaper than with SipHash, `bench/analytics.rs`); client IPs, which clients
/// choose, keep SipHash.
pub(crate) type NameMap<V> = HashMap<Arc<str>, V, foldhash::fast::RandomState>;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use super::anomaly::{ANOMALY_KINDS, AnomalySettings, Detector, Observation};
use super::metrics::{NO_ROUTE, OTHER_CONSUMER};
use crate::config::{AnalyticsConfig, ConfigIssue, ConfigSource};

/// Buffers samples are spread over (per thread): more than the worker threads of a large machine.
pub const SHARDS: usize = 16;
/// Samples a buffer holds before it is folded into the aggregate.
pub const FLUSH_SAMPLES: usize = 256;
/// Age of a buffer's oldest sample at which it is folded in (keeps anomaly flags timely).
pub const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// Longest latency told apart; longer ones count as this (µs).
const MAX_LATENCY_MICROS: u64 = 60_000_000;
/// Significant digits of the latency histograms: 1% precision.
const LATENCY_DIGITS: u8 = 2;

/// Shape of a sliding window: how many slots, and how long each is.
#[derive(Debug, Clone, Copy)]
pub struct WindowShape {
    /// Name in JSON.
    pub name: &'static str,
    /// Slots in the ring.
    pub slots: usize,
    /// Length of one slot.
    pub slot: Duration,
}

/// The one-minute window.
pub const MINUTE: WindowShape = WindowShape { name: "1m", slots: 6, slot: Duration::from_secs(10) };
/// The one-hour window.
pub const HOUR: WindowShape = WindowShape { name: "1h", slots: 12, slot: Duration::from_secs(300) };
const WINDOWS: [WindowShape; 2] = [MINUTE, HOUR];

/// One answered request, as analytics sees it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the response head was ready.
    pub at: Instant,
    /// Matched route (`None`: no route matched).
    pub route: Option<Arc<str>>,
    /// Consumer an auth plugin identified.
    pub consumer: Option<String>,
    /// The client's IP.
    pub client_ip: IpAddr,
    /// Status answered.
    pub status: u16,
    /// Time from arrival to the response head.
    pub latency: Duration,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
}

/// The checked `[analytics]` settings.
#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    /// Entries in the top lists.
    pub top: usize,
    /// Consumers tracked with their own figures.
    pub max_consumers: usize,
    /// The anomaly detectors' tuning.
    pub anomaly: AnomalySettings,
}

impl AnalyticsSettings {
    /// Checks `[analytics]`, adding problems (file, line, key) to `issues`.
    pub fn from_config(source: &ConfigSource, config: &AnalyticsConfig, issues: &mut Vec<ConfigIssue>) -> Self {
        let mut at_least = |value: u64, span: std::ops::Range<usize>, key: &str, min: u64| {
            if value < min {
                issues.push(source.issue(Some(span), &format!("analytics.{key}"), format!("must be at least {min}")));
            }
        };
        at_least(*config.top.get_ref() as u64, config.top.span(), "top", 1);
        at_least(*config.max_consumers.get_ref() as u64, config.max_consumers.span(), "max_consumers", 1);
        at_least(*config.max_clients.get_ref() as u64, config.max_clients.span(), "max_clients", 1);
        at_least(*config.rate_interval_ms.get_ref(), config.rate_interval_ms.span(), "rate_interval_ms", 100);
        at_least(*config.auth_failure_window_ms.get_ref(), config.auth_failure_window_ms.span(), "auth_failure_window_ms", 1);
        at_least(*config.auth_failure_threshold.get_ref() as u64, config.auth_failure_threshold.span(), "auth_failure_threshold", 1);
        at_least(*config.max_anomalies.get_ref() as u64, config.max_anomalies.span(), "max_anomalies", 1);
        let mut fraction = |value: &toml::Spanned<f64>, key: &str, rule: &str, ok: bool| {
            if !ok {
                issues.push(source.issue(Some(value.span()), &format!("analytics.{key}"), rule.to_owned()));
            }
        };
        let alpha = *config.rate_alpha.get_ref();
        fraction(&config.rate_alpha, "rate_alpha", "must be above 0.0 and at most 1.0", alpha > 0.0 && alpha <= 1.0);
        let threshold = *config.rate_threshold.get_ref();
        fraction(&config.rate_threshold, "rate_threshold", "must be above 0.0", threshold > 0.0 && threshold.is_finite());
        let rise = *config.error_rate_rise.get_ref();
        fraction(&config.error_rate_rise, "error_rate_rise", "must be above 0.0 and at most 1.0", rise > 0.0 && rise <= 1.0);
        Self {
            top: *config.top.get_ref(),
            max_consumers: *config.max_consumers.get_ref(),
            anomaly: AnomalySettings {
                rate_interval: Duration::from_millis((*config.rate_interval_ms.get_ref()).max(1)),
                rate_alpha: alpha,
                rate_threshold: threshold,
                rate_warmup_intervals: config.rate_warmup_intervals,
                rate_min_delta: config.rate_min_delta,
                auth_failure_window: Duration::from_millis(*config.auth_failure_window_ms.get_ref()),
                auth_failure_threshold: (*config.auth_failure_threshold.get_ref()).max(1),
                error_min_requests: config.error_min_requests,
                error_rate_rise: rise,
                max_clients: *config.max_clients.get_ref(),
                max_anomalies: *config.max_anomalies.get_ref(),
            },
        }
    }
}

/// One slot's figures.
#[derive(Default)]
struct Slot {
    /// Which slot (since the origin) these figures are of.
    epoch: u64,
    figures: Totals,
}

impl Slot {
    fn add(&mut self, sample: &Sample) {
        let f = &mut self.figures;
        f.requests += 1;
        f.errors_5xx += u64::from(sample.status >= 500);
        f.errors_4xx += u64::from((400..500).contains(&sample.status));
        f.bytes_in += sample.bytes_in;
        f.bytes_out += sample.bytes_out;
        if f.latency.is_none() {
            f.latency = new_histogram();
        }
        if let Some(h) = &mut f.latency {
            let micros = u64::try_from(sample.latency.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_MICROS);
            h.saturating_record(micros);
        }
    }

    fn reset(&mut self, epoch: u64) {
        self.epoch = epoch;
        let latency = self.figures.latency.take().map(|mut h| {
            h.reset();
            h
        });
        self.figures = Totals { latency, ..Default::default() };
    }
}

fn new_histogram() -> Option<Histogram<u32>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, LATENCY_DIGITS).ok()
}

/// A ring of slots.
struct Window {
    shape: WindowShape,
    slots: Vec<Slot>,
}

impl Window {
    fn new(shape: WindowShape) -> Self {
        Self { shape, slots: (0..shape.slots).map(|_| Slot { epoch: u64::MAX, ..Default::default() }).collect() }
    }

    fn add(&mut self, epoch: u64, sample: &Sample) {
        let slot = &mut self.slots[(epoch % self.shape.slots as u64) as usize];
        if slot.epoch != epoch {
            if slot.epoch != u64::MAX && slot.epoch > epoch {
                // A sample older than the ring keeps: too late to count.
                return;
            }
            slot.reset(epoch);
        }
        slot.add(sample);
    }

    /// The window's figures as of slot `now_epoch`.
    fn totals(&self, now_epoch: u64) -> Totals {
        let oldest = now_epoch.saturating_sub(self.shape.slots as u64 - 1);
        let mut totals = Totals::default();
        for slot in self.slots.iter().filter(|s| s.epoch != u64::MAX && s.epoch >= oldest && s.epoch <= now_epoch) {
            totals.merge(&slot.figures);
        }
        totals
    }
}

/// A window's slot length in milliseconds, at least one.
const fn slot_millis(shape: WindowShape) -> u64 {
    let millis = shape.slot.as_millis() as u64;
    if millis == 0 { 1 } else { millis }
}

/// Figures of a slot, or of a window merged over its slots.
#[derive(Default)]
struct Totals {
    requests: u64,
    errors_5xx: u64,
    errors_4xx: u64,
    bytes_in: u64,
    bytes_out: u64,
    latency: Option<Histogram<u32>>,
}

impl Totals {
    fn merge(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.errors_5xx += other.errors_5xx;
        self.errors_4xx += other.errors_4xx;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        if let Some(h) = &other.latency {
            if self.latency.is_none() {
                self.latency = new_histogram();
            }
            if let Some(t) = &mut self.latency {
                // Same bounds: adding cannot fail.
                let _ = t.add(h);
            }
        }
    }

    fn to_json(&self, name: &str, seconds: f64) -> Value {
        let share = |n: u64| if self.requests == 0 { 0.0 } else { n as f64 / self.requests as f64 };
        let quantile = |q: f64| {
            self.latency.as_ref().filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        json!({
            "name": name,
            "requests": self.requests,
            "requests_per_s": if seconds > 0.0 { self.requests as f64 / seconds } else { 0.0 },
            "error_rate": share(self.errors_5xx),
            "client_error_rate": share(self.errors_4xx),
            "errors_5xx": self.errors_5xx,
            "errors_4xx": self.errors_4xx,
            "latency_ms": { "p50": quantile(0.5), "p95": quantile(0.95), "p99": quantile(0.99) },
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        })
    }
}

/// One subject's (route, consumer, or everything) windows.
struct Series {
    windows: [Window; WINDOWS.len()],
}

impl Series {
    fn new() -> Self {
        Self { windows: WINDOWS.map(Window::new) }
    }
}

/// The shared figures, behind one lock taken only when a buffer is folded in or read.
struct Aggregate {
    origin: Instant,
    /// Every sample is in exactly one route's series (no route: [`NO_ROUTE`]'s), so the
    /// gateway's totals are these merged when read: a sample updates one series, not two.
    routes: NameMap<Series>,
    consumers: NameMap<Series>,
    requests: u64,
    detector: Detector,
}

impl Aggregate {
    /// Milliseconds from the aggregate's origin to `at`, in `u64`: the `u128` divisions of
    /// `Duration::as_millis` cost more than the rest of a window's bookkeeping, per sample.
    fn millis_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn epoch(&self, at: Instant, shape: WindowShape) -> u64 {
        self.millis_at(at) / slot_millis(shape)
    }

    fn apply(&mut self, sample: &Sample, max_consumers: usize) {
        self.requests += 1;
        // One clock difference per sample, divided for each window.
        let millis = self.millis_at(sample.at);
        let epochs = WINDOWS.map(|w| millis / slot_millis(w));
        let add = |series: &mut Series| {
            for (window, epoch) in series.windows.iter_mut().zip(epochs) {
                window.add(epoch, sample);
            }
        };
        let no_route: Arc<str>;
        let route = match &sample.route {
            Some(r) => r,
            None => {
                no_route = NO_ROUTE.into();
                &no_route
            }
        };
        // A route's series is made once: looked up by reference after that, not by a clone of
        // its name.
        match self.routes.get_mut(route) {
            Some(series) => add(series),
            None => add(self.routes.entry(route.clone()).or_insert_with(Series::new)),
        }
        let consumer = sample.consumer.as_deref().map(|c| {
            match self.consumers.get_key_value(c) {
                Some((key, _)) => key.clone(),
                None if self.consumers.len() < max_consumers => Arc::from(c),
                None => Arc::from(OTHER_CONSUMER),
            }
        });
        if let Some(consumer) = &consumer {
            add(self.consumers.entry(consumer.clone()).or_insert_with(Series::new));
        }
        self.detector.observe(&Observation {
            at: sample.at,
            consumer: consumer.as_ref(),
            route,
            client_ip: sample.client_ip,
            status: sample.status,
        });
    }
}

/// A per-thread buffer of samples not yet folded in, alone on its cache lines (128 bytes: x86
/// fetches lines in pairs). Packed, two workers' shards shared a line that both wrote on every
/// request (the lock and the push), passing it back and forth between the cores.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    samples: Vec<Sample>,
    oldest: Option<Instant>,
}

/// One gateway's usage analytics and anomaly detectors.
pub struct Analytics {
    settings: AnalyticsSettings,
    shards: Box<[Mutex<Shard>]>,
    aggregate: Mutex<Aggregate>,
}

/// The shard of the calling thread.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent sample by sample, so a panic elsewhere does not poison it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Analytics {
    /// Empty analytics; flags of kind `ANOMALY_KINDS[i]` are counted in `anomaly_counters[i]`.
    pub fn new(
        settings: AnalyticsSettings,
        anomaly_counters: [prometheus_client::metrics::counter::Counter; ANOMALY_KINDS.len()],
    ) -> Self {
        let origin = Instant::now();
        let detector = Detector::new(settings.anomaly.clone(), origin, anomaly_counters);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            aggregate: Mutex::new(Aggregate {
                origin,
                routes: NameMap::default(),
                consumers: NameMap::default(),
                requests: 0,
                detector,
            }),
            settings,
        }
    }

    /// Records one answered request. Takes only the calling thread's buffer lock, except once
    /// per [`FLUSH_SAMPLES`] samples (or [`FLUSH_AFTER`]), when the buffer is folded in.
    pub fn record(&self, sample: Sample) {
        let index = shard_index();
        let full = {
            let mut shard = lock(&self.shards[index]);
            let oldest = *shard.oldest.get_or_insert(sample.at);
            let at = sample.at;
            shard.samples.push(sample);
            shard.samples.len() >= FLUSH_SAMPLES || at.saturating_duration_since(oldest) >= FLUSH_AFTER
        };
        if full {
            self.flush_shard(index);
        }
    }

    /// Applies one sample under the shared lock at once: the unsharded way [`Analytics::record`]
    /// avoids, kept as the baseline `bench/analytics.rs` compares it with.
    pub fn record_direct(&self, sample: Sample) {
        lock(&self.aggregate).apply(&sample, self.settings.max_consumers);
    }

    fn flush_shard(&self, index: usize) {
        let samples = {
            let mut shard = lock(&self.shards[index]);
            shard.oldest = None;
            std::mem::replace(&mut shard.samples, Vec::with_capacity(FLUSH_SAMPLES))
        };
        if samples.is_empty() {
            return;
        }
        let mut aggregate = lock(&self.aggregate);
        for sample in &samples {
            aggregate.apply(sample, self.settings.max_consumers);
        }
    }

    /// Folds in every buffer, then closes the anomaly intervals that ended by `now`.
    pub fn flush(&self, now: Instant) {
        for index in 0..SHARDS {
            self.flush_shard(index);
        }
        lock(&self.aggregate).detector.tick(now);
    }

    /// Everything `/admin/analytics` shows, as of `now` (buffers are folded in first).
    pub fn snapshot(&self, now: Instant) -> Value {
        self.flush(now);
        let aggregate = lock(&self.aggregate);
        let mut windows = Map::new();
        for (i, shape) in WINDOWS.iter().enumerate() {
            let epoch = aggregate.epoch(now, *shape);
            let seconds = covered_seconds(aggregate.origin, now, *shape);
            let json = |all: &[(&Arc<str>, Totals)], limit: usize| {
                all.iter().take(limit).map(|(name, t)| t.to_json(name, seconds)).collect::<Vec<_>>()
            };
            let routes = ranked(&aggregate.routes, i, epoch);
            let mut total = Totals::default();
            for (_, route) in &routes {
                total.merge(route);
            }
            windows.insert(
                shape.name.to_owned(),
                json!({
                    "seconds": seconds,
                    "total": total.to_json("total", seconds),
                    "routes": json(&routes, usize::MAX),
                    "top_endpoints": json(&routes, self.settings.top),
                    "top_consumers": json(&ranked(&aggregate.consumers, i, epoch), self.settings.top),
                }),
            );
        }
        let detector = &aggregate.detector;
        let raised: Map<String, Value> = detector.raised().map(|(k, n)| (k.to_owned(), json!(n))).collect();
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        json!({
            "generated_at_unix_ms": unix_ms,
            "requests_total": aggregate.requests,
            "consumers_tracked": aggregate.consumers.len(),
            "windows": windows,
            "anomalies": detector.flags().map(|a| a.to_json()).collect::<Vec<_>>(),
            "anomalies_raised": raised,
            "untracked_client_ips": detector.untracked_clients(),
        })
    }
}

/// Each subject of `map` with requests in window `window` as of slot `epoch`, and its figures
/// there: the busiest first, ties by name.
fn ranked(map: &NameMap<Series>, window: usize, epoch: u64) -> Vec<(&Arc<str>, Totals)> {
    let mut all: Vec<(&Arc<str>, Totals)> = map
        .iter()
        .map(|(name, series)| (name, series.windows[window].totals(epoch)))
        .filter(|(_, t)| t.requests > 0)
        .collect();
    all.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then_with(|| a.0.cmp(b.0)));
    all
}

/// Seconds a window covers at `now`: its full slots plus the running one, but never more than
/// has passed since the gateway started.
fn covered_seconds(origin: Instant, now: Instant, shape: WindowShape) -> f64 {
    let since_start = now.saturating_duration_since(origin).as_secs_f64();
    let slot = shape.slot.as_secs_f64();
    let into_slot = since_start % slot;
    ((shape.slots - 1) as f64 * slot + into_slot).min(since_start).max(0.001)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AnalyticsSettings {
        let source = ConfigSource::inline("t.toml", "", ".".into());
        let mut issues = Vec::new();
        let config = AnalyticsConfig {
            max_consumers: toml::Spanned::new(0..0, 2),
            top: toml::Spanned::new(0..0, 2),
            ..Default::default()
        };
        let s = AnalyticsSettings::from_config(&source, &config, &mut issues);
        assert!(issues.is_empty());
        s
    }

    fn sample(at: Instant, route: &str, consumer: Option<&str>, status: u16, ms: u64) -> Sample {
        Sample {
            at,
            route: Some(route.into()),
            consumer: consumer.map(str::to_owned),
            client_ip: [127, 0, 0, 1].into(),
            status,
            latency: Duration::from_millis(ms),
            bytes_in: 10,
            bytes_out: 100,
        }
    }

    #[test]
    fn figures_match_the_samples_and_age_out_of_the_minute() {
        let analytics = Analytics::new(settings(), Default::default());
        let t0 = lock(&analytics.aggregate).origin;
        for i in 0..100 {
            analytics.record(sample(t0 + Duration::from_millis(i), "a", Some("alice"), if i < 10 { 503 } else { 200 }, i + 1));
        }
        for _ in 0..5 {
            analytics.record(sample(t0 + Duration::from_millis(200), "b", Some("bob"), 404, 1));
        }
        analytics.record(sample(t0 + Duration::from_millis(300), "b", Some("carol"), 200, 1));
        let now = t0 + Duration::from_secs(1);
        let s = analytics.snapshot(now);
        let minute = &s["windows"]["1m"];
        assert_eq!(minute["total"]["requests"], 106);
        assert_eq!(minute["total"]["bytes_out"], 10_600);
        let routes = minute["routes"].as_array().unwrap();
        assert_eq!(routes[0]["name"], "a");
        assert_eq!(routes[0]["errors_5xx"], 10);
        assert_eq!(routes[0]["error_rate"], 0.1);
        let p50 = routes[0]["latency_ms"]["p50"].as_f64().unwrap();
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        let p99 = routes[0]["latency_ms"]["p99"].as_f64().unwrap();
        assert!((98.0..=100.5).contains(&p99), "{p99}");
        assert_eq!(routes[1]["client_error_rate"], 5.0 / 6.0);
        // max_consumers = 2: carol is counted as `other`; top = 2.
        let consumers: Vec<&str> = minute["top_consumers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(consumers, ["alice", "bob"]);
        assert_eq!(s["consumers_tracked"], 3);
        assert_eq!(s["requests_total"], 106);
        // The total is every route's samples merged: counts, bytes and latencies.
        assert_eq!(minute["total"]["errors_5xx"], 10);
        assert_eq!(minute["total"]["errors_4xx"], 5);
        assert_eq!(minute["total"]["bytes_in"], 1_060);
        let total_p99 = minute["total"]["latency_ms"]["p99"].as_f64().unwrap();
        assert!((98.5..=99.5).contains(&total_p99), "{total_p99}");
        let total_p50 = minute["total"]["latency_ms"]["p50"].as_f64().unwrap();
        assert!((46.0..=48.0).contains(&total_p50), "{total_p50}");

        // Two minutes later the minute window is empty, the hour still holds everything.
        let later = analytics.snapshot(t0 + Duration::from_secs(121));
        assert_eq!(later["windows"]["1m"]["total"]["requests"], 0);
        assert_eq!(later["windows"]["1h"]["total"]["requests"], 106);

        // A request no route matched counts in the total too, under its own name.
        analytics.record(Sample { route: None, ..sample(t0 + Duration::from_millis(400), "", None, 404, 1) });
        let s = analytics.snapshot(t0 + Duration::from_secs(1));
        assert_eq!(s["windows"]["1m"]["total"]["requests"], 107);
        let names: Vec<&str> = s["windows"]["1m"]["routes"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", NO_ROUTE]);
    }

    #[test]
    fn samples_recorded_on_many_threads_are_all_counted() {
        let analytics = Arc::new(Analytics::new(settings(), Default::default()));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let a = analytics.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        a.record(sample(t0, "a", None, 200, 1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(analytics.snapshot(Instant::now())["windows"]["1m"]["total"]["requests"], 4000);
    }
}
