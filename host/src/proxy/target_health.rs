//! Health of an upstream's targets. Passive (nginx's `max_fails` / `fail_timeout`, Envoy's
//! consecutive gateway failures): a target that failed `max_fails` times in a row (what counts
//! as a failure: [`super::upstream`]) is skipped for `fail_timeout`, then one request is let
//! through to try it again (a failure marks it down again at once, a success clears it).
//! Active ([`super::health_check`]): a target failing its probes is out of rotation until it
//! passes them again, whatever requests to it do. A target is available when neither marks it.
//!
//! Each target's state is three atomics: the request path reads two (`checked_down`, and
//! `down_until`, 0 while the target is up) to pick a target and writes nothing while connections
//! succeed. No lock, no allocation, and the clock is read only while a target is marked down.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default `max_fails`: consecutive failures that mark a target down.
pub const DEFAULT_MAX_FAILS: u32 = 3;

/// Default `fail_timeout_ms`: how long a target marked down is skipped.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// When a target is marked down and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures that mark a target down; 0 never marks one.
    pub max_fails: u32,
    /// How long a target marked down is skipped before it is tried again.
    pub fail_timeout: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self { max_fails: DEFAULT_MAX_FAILS, fail_timeout: DEFAULT_FAIL_TIMEOUT }
    }
}

/// What a failure did to a target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// Not (yet) marked down.
    Up,
    /// This failure marked the target down (logged once per marking).
    Down,
}

/// One target's passive health.
#[derive(Debug, Default)]
pub struct TargetHealth {
    /// Connect failures in a row since the last success.
    fails: AtomicU32,
    /// Milliseconds since [`epoch`] until which the target is skipped; 0 while it is up.
    down_until: AtomicU64,
    /// Out of rotation by its health check (written by the checker only).
    checked_down: AtomicBool,
    /// Every failure counted since the target was first configured (reloads carry it over):
    /// `airlock_upstream_target_failures_total`, which shows a target failing while failover
    /// hides it from clients. Written only on a failure.
    failures: AtomicU64,
}

impl TargetHealth {
    /// Whether a request may be sent to this target now. While the target is marked down: false,
    /// except for the one caller that finds its time run out, which re-arms the mark (so the
    /// others keep skipping it) and tries the target.
    pub fn available(&self, policy: &HealthPolicy) -> bool {
        if self.checked_down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.down_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = now_ms();
        if now < until {
            return false;
        }
        let next = now.saturating_add(millis(policy.fail_timeout)).max(1);
        self.down_until.compare_exchange(until, next, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Whether the target is marked down now: by its health check, or passively with its time
    /// not yet run out.
    pub fn is_down(&self) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        self.is_checked_down() || (until != 0 && now_ms() < until)
    }

    /// Whether its health check has taken the target out of rotation.
    pub fn is_checked_down(&self) -> bool {
        self.checked_down.load(Ordering::Relaxed)
    }

    /// Takes over what `previous` (the same target in the upstream a reload replaced) knew: its
    /// failures in a row and passive mark, and, if `checked` (the new upstream probes it too),
    /// its health check's verdict, so a target known to be down stays out until it passes.
    pub fn inherit(&self, previous: &TargetHealth, checked: bool) {
        self.fails.store(previous.fails.load(Ordering::Relaxed), Ordering::Relaxed);
        self.failures.store(previous.failures_total(), Ordering::Relaxed);
        self.down_until.store(previous.down_until.load(Ordering::Relaxed), Ordering::Relaxed);
        if checked {
            self.checked_down.store(previous.is_checked_down(), Ordering::Relaxed);
        }
    }

    /// Failures counted against the target so far (each one [`TargetHealth::failed`] saw).
    pub fn failures_total(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The health check's verdict: out of rotation (`true`) or back in.
    pub fn set_checked_down(&self, down: bool) {
        self.checked_down.store(down, Ordering::Relaxed);
    }

    /// A connection to the target was made or used: it is up. Writes only if it was not.
    pub fn succeeded(&self) {
        if self.fails.load(Ordering::Relaxed) != 0 || self.down_until.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
            self.down_until.store(0, Ordering::Relaxed);
        }
    }

    /// Connecting to the target failed; marks it down at `policy.max_fails` failures in a row
    /// (and again at each failure after that: the one request let through to try it).
    pub fn failed(&self, policy: &HealthPolicy) -> Marked {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let fails = self.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if policy.max_fails == 0 || fails < policy.max_fails {
            return Marked::Up;
        }
        let until = now_ms().saturating_add(millis(policy.fail_timeout)).max(1);
        let before = self.down_until.swap(until, Ordering::Relaxed);
        if before == 0 { Marked::Down } else { Marked::Up }
    }
}

/// The instant times are counted from (the first use).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`], at least 1 (0 means "up").
fn now_ms() -> u64 {
    millis(epoch().elapsed()).max(1)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_skipped_after_max_fails_then_tried_by_one_request() {
        let policy = HealthPolicy { max_fails: 2, fail_timeout: Duration::from_millis(40) };
        let health = TargetHealth::default();
        assert!(health.available(&policy));
        assert_eq!(health.failed(&policy), Marked::Up);
        assert!(health.available(&policy), "one failure is not enough");
        assert_eq!(health.failed(&policy), Marked::Down);
        assert!(!health.available(&policy) && health.is_down());
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.available(&policy), "tried again once the time ran out");
        assert!(!health.available(&policy), "by one request: the others still skip it");
        // That request failed: down again at once, without a new marking to log.
        assert_eq!(health.failed(&policy), Marked::Up);
        assert!(health.is_down());
        health.succeeded();
        assert!(health.available(&policy) && !health.is_down());
        assert_eq!(health.failed(&policy), Marked::Up, "the count starts over after a success");
    }

    #[test]
    fn a_target_its_check_took_out_stays_out_whatever_requests_do() {
        let policy = HealthPolicy::default();
        let health = TargetHealth::default();
        health.set_checked_down(true);
        assert!(!health.available(&policy) && health.is_down());
        health.succeeded();
        assert!(!health.available(&policy), "a request's success does not overrule the check");
        health.set_checked_down(false);
        assert!(health.available(&policy) && !health.is_down());
    }

    #[test]
    fn max_fails_zero_never_marks_a_target() {
        let policy = HealthPolicy { max_fails: 0, fail_timeout: Duration::from_secs(10) };
        let health = TargetHealth::default();
        for _ in 0..10 {
            assert_eq!(health.failed(&policy), Marked::Up);
        }
        assert!(health.available(&policy));
    }
}
