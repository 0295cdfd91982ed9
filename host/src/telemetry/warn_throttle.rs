//! A warning about something that can happen on every request (an outbound call failing while
//! its target is down, an upstream shedding load), logged at most once per interval with the
//! count since the last one, so one outage does not write a line per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a warning was last logged, and how many events it has not told yet. Only events touch
/// it (two atomics, no lock): the path on which nothing goes wrong costs nothing.
#[derive(Debug)]
pub struct WarnThrottle {
    /// The least time between two warnings.
    interval: Duration,
    /// Events since the last warning.
    unlogged: AtomicU64,
    /// When the last warning was logged: milliseconds since `origin`, plus one (0: never).
    logged_at: AtomicU64,
    /// The clock origin of `logged_at`.
    origin: Instant,
}

impl WarnThrottle {
    /// A throttle letting one warning through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, unlogged: AtomicU64::new(0), logged_at: AtomicU64::new(0), origin: Instant::now() }
    }

    /// Counts an event; returns how many to report (this one included) when a warning is due.
    pub fn record(&self) -> Option<u64> {
        self.record_at(self.origin.elapsed())
    }

    /// [`Self::record`], `elapsed` after `origin`.
    fn record_at(&self, elapsed: Duration) -> Option<u64> {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX - 1).saturating_add(1);
        let last = self.logged_at.load(Ordering::Relaxed);
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last) >= interval;
        (due && self.logged_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok())
            .then(|| self.unlogged.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_at_most_once_per_interval_with_the_count_since() {
        let log = WarnThrottle::new(Duration::from_secs(10));
        let at = |ms| Duration::from_millis(ms);
        assert_eq!(log.record_at(at(0)), Some(1), "the first event is told at once");
        for ms in [1, 500, 9_999] {
            assert_eq!(log.record_at(at(ms)), None, "{ms} ms: within the interval");
        }
        assert_eq!(log.record_at(at(10_000)), Some(4), "the next warning counts the three in between and itself");
        assert_eq!(log.record_at(at(10_001)), None);
        assert_eq!(log.record_at(at(60_000)), Some(2));
    }
}
