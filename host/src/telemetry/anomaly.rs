//! Anomaly flags raised from the same samples the usage analytics aggregate:
//!
//! - `consumer_rate`: a consumer whose requests in one interval depart from its own baseline (an
//!   exponentially weighted moving average of earlier intervals, with an exponentially weighted
//!   variance) by more than `rate_threshold` standard deviations, and by at least `rate_min_delta`
//!   requests. Spikes are flagged as soon as the running interval crosses the line; drops when the
//!   interval closes.
//! - `auth_failures`: `auth_failure_threshold` answers 401/403 to one client IP within
//!   `auth_failure_window_ms` (credential stuffing, key guessing).
//! - `route_5xx`: a route whose 5xx share over the last one or two intervals (at least
//!   `error_min_requests` requests) rose by `error_rate_rise` over its own baseline.
//!
//! Each flag is raised once per episode: it is logged (`tracing` warn), counted in
//! `airlock_anomalies_total{kind}` and kept, with its evidence, for `/admin/analytics`. A subject
//! is flagged again only after it went back to normal. Every map is bounded.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use serde_json::{Value, json};

use super::analytics::NameMap;

/// The kinds of flag, as labelled in metrics and JSON.
pub const ANOMALY_KINDS: [&str; 3] = ["consumer_rate", "auth_failures", "route_5xx"];

/// Intervals of silence after which a baseline is started again rather than decayed step by step.
const MAX_CATCH_UP_INTERVALS: u64 = 64;

/// What the detectors are tuned with (the `[analytics]` keys of the same names, checked).
#[derive(Debug, Clone)]
pub struct AnomalySettings {
    /// Length of one baseline interval.
    pub rate_interval: Duration,
    /// EWMA weight of the newest interval.
    pub rate_alpha: f64,
    /// Standard deviations that make a departure.
    pub rate_threshold: f64,
    /// Intervals seen before a consumer can be flagged.
    pub rate_warmup_intervals: u32,
    /// Smallest departure, in requests per interval.
    pub rate_min_delta: u64,
    /// Window for counting 401/403 per client IP.
    pub auth_failure_window: Duration,
    /// Failures within the window that flag a client IP.
    pub auth_failure_threshold: usize,
    /// Requests a route needs before its 5xx share is judged.
    pub error_min_requests: u64,
    /// Rise of the 5xx share over the baseline that flags a route.
    pub error_rate_rise: f64,
    /// Distinct client IPs tracked.
    pub max_clients: usize,
    /// Flags kept for the admin API.
    pub max_anomalies: usize,
}

/// One flag, with its evidence.
#[derive(Debug, Clone)]
pub struct Anomaly {
    /// One of [`ANOMALY_KINDS`].
    pub kind: &'static str,
    /// The consumer, client IP or route flagged.
    pub subject: String,
    /// When it was raised.
    pub at: SystemTime,
    /// The figures that made it.
    pub evidence: Value,
}

impl Anomaly {
    /// The JSON form listed by `/admin/analytics`.
    pub fn to_json(&self) -> Value {
        let unix_ms = self.at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        json!({
            "kind": self.kind,
            "subject": self.subject,
            "at_unix_ms": unix_ms,
            "at": humantime::format_rfc3339_millis(self.at).to_string(),
            "evidence": self.evidence,
        })
    }
}

/// A consumer's request-rate baseline.
#[derive(Debug, Default)]
struct RateBaseline {
    /// Index of the running interval.
    interval: u64,
    /// Requests in the running interval.
    count: u64,
    /// EWMA of requests per interval.
    mean: f64,
    /// EWMA variance.
    variance: f64,
    /// Closed intervals folded into the baseline.
    seen: u32,
    flagged: bool,
}

/// 401/403 answers to one client IP.
#[derive(Debug, Default)]
struct AuthFailures {
    /// Times of the latest failures (at most the threshold).
    times: VecDeque<Instant>,
    flagged: bool,
}

/// A route's 5xx baseline.
#[derive(Debug, Default)]
struct ErrorBaseline {
    interval: u64,
    requests: u64,
    errors: u64,
    previous_requests: u64,
    previous_errors: u64,
    /// EWMA of the 5xx share of closed intervals.
    baseline: f64,
    seen: u32,
    flagged: bool,
}

/// What the detectors are told about one answered request.
pub struct Observation<'a> {
    /// When it was answered.
    pub at: Instant,
    /// Its consumer label (bounded by the caller), if an auth plugin named one.
    pub consumer: Option<&'a Arc<str>>,
    /// Its route label.
    pub route: &'a Arc<str>,
    /// The client's IP.
    pub client_ip: IpAddr,
    /// Status answered.
    pub status: u16,
}

/// The detectors' state. Not shared: the analytics aggregate owns it under its lock.
pub struct Detector {
    settings: AnomalySettings,
    origin: Instant,
    consumers: NameMap<RateBaseline>,
    clients: HashMap<IpAddr, AuthFailures>,
    routes: NameMap<ErrorBaseline>,
    flags: VecDeque<Anomaly>,
    raised: [u64; ANOMALY_KINDS.len()],
    counters: [Counter; ANOMALY_KINDS.len()],
    untracked_clients: u64,
}

impl Detector {
    /// Detectors tuned by `settings`; intervals count from `origin`; each flag of kind
    /// `ANOMALY_KINDS[i]` increments `counters[i]`.
    pub fn new(settings: AnomalySettings, origin: Instant, counters: [Counter; ANOMALY_KINDS.len()]) -> Self {
        Self {
            settings,
            origin,
            consumers: NameMap::default(),
            clients: HashMap::new(),
            routes: NameMap::default(),
            flags: VecDeque::new(),
            raised: [0; ANOMALY_KINDS.len()],
            counters,
            untracked_clients: 0,
        }
    }

    fn interval_of(&self, at: Instant) -> u64 {
        // In `u64`: the `u128` division `Duration::as_millis` invites costs several times more,
        // once per answered request.
        let interval_ms = u64::try_from(self.settings.rate_interval.as_millis()).unwrap_or(u64::MAX).max(1);
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX) / interval_ms
    }

    /// Feeds one answered request to every detector.
    pub fn observe(&mut self, seen: &Observation<'_>) {
        let interval = self.interval_of(seen.at);
        if let Some(consumer) = seen.consumer {
            self.observe_consumer(consumer, interval);
        }
        if seen.status == 401 || seen.status == 403 {
            self.observe_auth_failure(seen.client_ip, seen.at, seen.route);
        }
        self.observe_route(seen.route, interval, seen.status >= 500);
    }

    /// Closes the intervals that ended by `now` (so a consumer that went quiet is judged too) and
    /// forgets client IPs with no failure left in the window.
    pub fn tick(&mut self, now: Instant) {
        let interval = self.interval_of(now);
        let names: Vec<Arc<str>> = self.consumers.keys().cloned().collect();
        for name in names {
            self.roll_consumer(&name, interval);
        }
        let routes: Vec<Arc<str>> = self.routes.keys().cloned().collect();
        for route in routes {
            if let Some(b) = self.routes.get_mut(&route) {
                roll_route(b, interval, &self.settings);
            }
        }
        let window = self.settings.auth_failure_window;
        self.clients.retain(|_, f| {
            prune(&mut f.times, now, window);
            !f.times.is_empty()
        });
    }

    fn observe_consumer(&mut self, consumer: &Arc<str>, interval: u64) {
        if !self.consumers.contains_key(consumer) {
            self.consumers.insert(consumer.clone(), RateBaseline { interval, ..Default::default() });
        }
        self.roll_consumer(consumer, interval);
        let s = &self.settings;
        let Some(b) = self.consumers.get_mut(consumer) else { return };
        b.count += 1;
        // A spike is flagged while it happens, not when its interval ends (a running count
        // below the baseline is only a part of an interval, judged when it closes).
        if b.seen >= s.rate_warmup_intervals && !b.flagged && b.count as f64 > b.mean {
            let (z, delta) = deviation(b, b.count as f64);
            if z > s.rate_threshold && delta >= s.rate_min_delta as f64 {
                b.flagged = true;
                let evidence = rate_evidence(b, b.count, z, "above", s);
                self.raise(0, consumer.to_string(), evidence);
            }
        }
    }

    /// Closes the consumer's intervals up to (not including) `interval`.
    fn roll_consumer(&mut self, consumer: &Arc<str>, interval: u64) {
        let s = self.settings.clone();
        let mut raised = None;
        {
            let Some(b) = self.consumers.get_mut(consumer) else { return };
            if interval <= b.interval {
                return;
            }
            if interval - b.interval > MAX_CATCH_UP_INTERVALS {
                *b = RateBaseline { interval, ..Default::default() };
                return;
            }
            while b.interval < interval {
                let x = b.count;
                if b.seen >= s.rate_warmup_intervals {
                    let (z, delta) = deviation(b, x as f64);
                    let departs = z > s.rate_threshold && delta >= s.rate_min_delta as f64;
                    if departs && !b.flagged {
                        b.flagged = true;
                        let direction = if (x as f64) < b.mean { "below" } else { "above" };
                        raised = Some(rate_evidence(b, x, z, direction, &s));
                    } else if !departs {
                        b.flagged = false;
                    }
                }
                fold(b, x as f64, s.rate_alpha);
                b.count = 0;
                b.interval += 1;
            }
        }
        if let Some(evidence) = raised {
            self.raise(0, consumer.to_string(), evidence);
        }
    }

    fn observe_auth_failure(&mut self, ip: IpAddr, at: Instant, route: &Arc<str>) {
        let s = &self.settings;
        if !self.clients.contains_key(&ip) {
            if self.clients.len() >= s.max_clients {
                let window = s.auth_failure_window;
                self.clients.retain(|_, f| {
                    prune(&mut f.times, at, window);
                    !f.times.is_empty()
                });
            }
            if self.clients.len() >= s.max_clients {
                self.untracked_clients += 1;
                return;
            }
        }
        let entry = self.clients.entry(ip).or_default();
        prune(&mut entry.times, at, s.auth_failure_window);
        if entry.times.len() < s.auth_failure_threshold / 2 {
            entry.flagged = false;
        }
        entry.times.push_back(at);
        while entry.times.len() > s.auth_failure_threshold {
            entry.times.pop_front();
        }
        if entry.times.len() >= s.auth_failure_threshold && !entry.flagged {
            entry.flagged = true;
            let span = entry.times.front().map(|first| at.saturating_duration_since(*first)).unwrap_or_default();
            let evidence = json!({
                "failures": entry.times.len(),
                "within_ms": span.as_millis() as u64,
                "window_ms": s.auth_failure_window.as_millis() as u64,
                "threshold": s.auth_failure_threshold,
                "last_route": &**route,
            });
            self.raise(1, ip.to_string(), evidence);
        }
    }

    fn observe_route(&mut self, route: &Arc<str>, interval: u64, error: bool) {
        let s = &self.settings;
        // One lookup for a route seen before, every request but its first.
        let b = match self.routes.get_mut(route) {
            Some(b) => b,
            None => self.routes.entry(route.clone()).or_insert(ErrorBaseline { interval, ..Default::default() }),
        };
        roll_route(b, interval, s);
        b.requests += 1;
        b.errors += u64::from(error);
        let requests = b.requests + b.previous_requests;
        let errors = b.errors + b.previous_errors;
        if b.flagged || requests < s.error_min_requests.max(1) {
            return;
        }
        let share = errors as f64 / requests as f64;
        if share - b.baseline >= s.error_rate_rise {
            b.flagged = true;
            let evidence = json!({
                "requests": requests,
                "errors_5xx": errors,
                "error_rate": share,
                "baseline_error_rate": b.baseline,
                "interval_ms": s.rate_interval.as_millis() as u64,
            });
            self.raise(2, route.to_string(), evidence);
        }
    }

    fn raise(&mut self, kind: usize, subject: String, evidence: Value) {
        let kind_name = ANOMALY_KINDS[kind];
        tracing::warn!(anomaly = kind_name, subject = %subject, evidence = %evidence, "anomaly flagged");
        self.counters[kind].inc();
        self.raised[kind] += 1;
        self.flags.push_back(Anomaly { kind: kind_name, subject, at: SystemTime::now(), evidence });
        while self.flags.len() > self.settings.max_anomalies {
            self.flags.pop_front();
        }
    }

    /// The flags kept, newest first.
    pub fn flags(&self) -> impl Iterator<Item = &Anomaly> {
        self.flags.iter().rev()
    }

    /// Flags raised since start, by kind (including those no longer kept).
    pub fn raised(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ANOMALY_KINDS.iter().copied().zip(self.raised.iter().copied())
    }

    /// Client IPs whose failures were not tracked because `max_clients` were.
    pub fn untracked_clients(&self) -> u64 {
        self.untracked_clients
    }
}

/// Folds one closed interval's value into the EWMA mean and variance.
fn fold(b: &mut RateBaseline, x: f64, alpha: f64) {
    if b.seen == 0 {
        b.mean = x;
        b.variance = 0.0;
    } else {
        let diff = x - b.mean;
        b.mean += alpha * diff;
        b.variance = (1.0 - alpha) * (b.variance + alpha * diff * diff);
    }
    b.seen = b.seen.saturating_add(1);
}

/// How far `x` is from the baseline: in standard deviations (never less than the Poisson noise
/// `sqrt(mean)`, nor than 1), and in requests.
fn deviation(b: &RateBaseline, x: f64) -> (f64, f64) {
    let sd = b.variance.sqrt().max(b.mean.sqrt()).max(1.0);
    let delta = (x - b.mean).abs();
    (delta / sd, delta)
}

fn rate_evidence(b: &RateBaseline, requests: u64, z: f64, direction: &str, s: &AnomalySettings) -> Value {
    json!({
        "requests_in_interval": requests,
        "baseline_per_interval": b.mean,
        "baseline_stddev": b.variance.sqrt(),
        "deviations": z,
        "direction": direction,
        "interval_ms": s.rate_interval.as_millis() as u64,
        "threshold": s.rate_threshold,
    })
}

/// Moves a route's counts into the previous interval (and the baseline) up to `interval`.
fn roll_route(b: &mut ErrorBaseline, interval: u64, s: &AnomalySettings) {
    if interval <= b.interval {
        return;
    }
    let steps = (interval - b.interval).min(MAX_CATCH_UP_INTERVALS);
    for step in 0..steps {
        if b.requests > 0 {
            let share = b.errors as f64 / b.requests as f64;
            b.baseline = if b.seen == 0 { share } else { b.baseline + s.rate_alpha * (share - b.baseline) };
            b.seen = b.seen.saturating_add(1);
            if share - b.baseline < s.error_rate_rise / 2.0 {
                b.flagged = false;
            }
        }
        // Only the interval just before the running one counts as "previous".
        if step + 1 == steps && interval - b.interval == 1 {
            b.previous_requests = b.requests;
            b.previous_errors = b.errors;
        } else {
            b.previous_requests = 0;
            b.previous_errors = 0;
        }
        b.requests = 0;
        b.errors = 0;
    }
    if steps > 1 {
        b.previous_requests = 0;
        b.previous_errors = 0;
    }
    b.interval = interval;
}

/// Drops failure times older than `window` before `now`.
fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times.front().is_some_and(|t| now.saturating_duration_since(*t) > window) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AnomalySettings {
        AnomalySettings {
            rate_interval: Duration::from_secs(10),
            rate_alpha: 0.3,
            rate_threshold: 4.0,
            rate_warmup_intervals: 6,
            rate_min_delta: 10,
            auth_failure_window: Duration::from_secs(60),
            auth_failure_threshold: 20,
            error_min_requests: 20,
            error_rate_rise: 0.5,
            max_clients: 4,
            max_anomalies: 100,
        }
    }

    fn detector() -> (Detector, Instant) {
        let origin = Instant::now();
        (Detector::new(settings(), origin, Default::default()), origin)
    }

    /// Sends `n` requests spread evenly over interval `interval`.
    fn traffic(d: &mut Detector, origin: Instant, interval: u64, n: u64, consumer: &str, status: u16) {
        let consumer: Arc<str> = consumer.into();
        let route: Arc<str> = "api".into();
        for i in 0..n {
            let at = origin + Duration::from_millis(interval * 10_000 + i * 9_000 / n.max(1));
            let ip: IpAddr = [10, 0, 0, 1].into();
            d.observe(&Observation { at, consumer: Some(&consumer), route: &route, client_ip: ip, status });
        }
    }

    fn kinds(d: &Detector) -> Vec<(&'static str, String)> {
        d.flags().map(|a| (a.kind, a.subject.clone())).collect()
    }

    #[test]
    fn a_steady_consumer_with_noise_is_not_flagged() {
        let (mut d, origin) = detector();
        let pattern = [50, 56, 44, 52, 47, 58, 49, 53, 45, 55, 51, 48, 57, 43, 50, 54];
        for (i, n) in pattern.iter().enumerate() {
            traffic(&mut d, origin, i as u64, *n, "alice", 200);
        }
        d.tick(origin + Duration::from_secs(10 * pattern.len() as u64));
        assert!(kinds(&d).is_empty(), "{:?}", kinds(&d));
    }

    #[test]
    fn a_consumer_spike_is_flagged_once_while_it_happens() {
        let (mut d, origin) = detector();
        for i in 0..8 {
            traffic(&mut d, origin, i, 20, "alice", 200);
        }
        traffic(&mut d, origin, 8, 200, "alice", 200);
        assert_eq!(kinds(&d), vec![("consumer_rate", "alice".to_owned())]);
        let evidence = &d.flags().next().unwrap().evidence;
        assert_eq!(evidence["direction"], "above");
        assert!(evidence["baseline_per_interval"].as_f64().unwrap() > 15.0);
        // Still high in the next interval: the same episode, not a new flag.
        traffic(&mut d, origin, 9, 200, "alice", 200);
        assert_eq!(d.flags().count(), 1);
    }

    #[test]
    fn a_small_absolute_change_is_not_flagged() {
        let (mut d, origin) = detector();
        for i in 0..8 {
            traffic(&mut d, origin, i, 1, "bob", 200);
        }
        // 1 -> 8 requests is many deviations of a tiny baseline, but below rate_min_delta.
        traffic(&mut d, origin, 8, 8, "bob", 200);
        d.tick(origin + Duration::from_secs(100));
        assert!(kinds(&d).iter().all(|(k, _)| *k != "consumer_rate"), "{:?}", kinds(&d));
    }

    #[test]
    fn no_flag_before_the_warmup() {
        let (mut d, origin) = detector();
        traffic(&mut d, origin, 0, 5, "carol", 200);
        traffic(&mut d, origin, 1, 300, "carol", 200);
        assert!(kinds(&d).is_empty());
    }

    #[test]
    fn a_consumer_going_silent_is_flagged_when_the_interval_closes() {
        let (mut d, origin) = detector();
        for i in 0..10 {
            traffic(&mut d, origin, i, 100, "dave", 200);
        }
        d.tick(origin + Duration::from_secs(10 * 11 + 1));
        let flags = kinds(&d);
        assert_eq!(flags, vec![("consumer_rate", "dave".to_owned())]);
        assert_eq!(d.flags().next().unwrap().evidence["direction"], "below");
    }

    fn failures(d: &mut Detector, origin: Instant, ip: [u8; 4], n: u64, every_ms: u64) {
        let route: Arc<str> = "login".into();
        for i in 0..n {
            let at = origin + Duration::from_millis(i * every_ms);
            d.observe(&Observation { at, consumer: None, route: &route, client_ip: ip.into(), status: 401 });
        }
    }

    #[test]
    fn a_burst_of_auth_failures_from_one_ip_is_flagged_once() {
        let (mut d, origin) = detector();
        failures(&mut d, origin, [192, 0, 2, 1], 30, 100);
        assert_eq!(kinds(&d), vec![("auth_failures", "192.0.2.1".to_owned())]);
        assert_eq!(d.flags().next().unwrap().evidence["failures"], 20);
    }

    #[test]
    fn spread_out_or_scattered_auth_failures_are_not_flagged() {
        let (mut d, origin) = detector();
        // 30 failures, one every 5 s: never 20 within a minute.
        failures(&mut d, origin, [192, 0, 2, 2], 30, 5_000);
        // 19 failures each from two IPs: neither reaches the threshold.
        failures(&mut d, origin, [192, 0, 2, 3], 19, 10);
        failures(&mut d, origin, [192, 0, 2, 4], 19, 10);
        assert!(kinds(&d).is_empty(), "{:?}", kinds(&d));
    }

    #[test]
    fn tracked_client_ips_are_bounded() {
        let (mut d, origin) = detector();
        for i in 0..10 {
            failures(&mut d, origin, [198, 51, 100, i], 1, 1);
        }
        assert_eq!(d.clients.len(), 4);
        assert_eq!(d.untracked_clients(), 6);
    }

    #[test]
    fn a_sudden_5xx_rise_on_a_route_is_flagged_and_a_few_errors_are_not() {
        let (mut d, origin) = detector();
        for i in 0..5 {
            traffic(&mut d, origin, i, 50, "erin", 200);
        }
        // 2 errors in 50: no flag.
        traffic(&mut d, origin, 5, 48, "erin", 200);
        traffic(&mut d, origin, 5, 2, "erin", 502);
        assert!(kinds(&d).is_empty(), "{:?}", kinds(&d));
        // Then the upstream breaks.
        traffic(&mut d, origin, 6, 60, "erin", 503);
        assert_eq!(kinds(&d), vec![("route_5xx", "api".to_owned())]);
        let evidence = &d.flags().next().unwrap().evidence;
        assert!(evidence["error_rate"].as_f64().unwrap() >= 0.5, "{evidence}");
        assert!(evidence["baseline_error_rate"].as_f64().unwrap() < 0.1, "{evidence}");
    }

    #[test]
    fn a_route_that_always_failed_is_not_a_sudden_rise() {
        let (mut d, origin) = detector();
        // Too few requests to judge at first, then the baseline has learnt the failure rate.
        for i in 0..12 {
            traffic(&mut d, origin, i, 10, "frank", 500);
        }
        let before = d.flags().count();
        d.flags.clear();
        for i in 12..20 {
            traffic(&mut d, origin, i, 30, "frank", 500);
        }
        assert!(before <= 1);
        // (frank's own rate tripled, which may be flagged; the route's 5xx share did not move.)
        assert!(kinds(&d).iter().all(|(k, _)| *k != "route_5xx"), "{:?}", kinds(&d));
    }
}
