//! `builtin:throttle`: shapes traffic by making requests wait instead of refusing them, by rate,
//! by concurrency, or both.
//!
//! - **Rate**: requests over the rate wait (the gateway's `delay` action: asynchronously, holding
//!   no thread) for their turn, in arrival order, up to `max_wait_ms`.
//! - **Concurrency**: at most `concurrency` requests in flight at once (from the end of this phase
//!   until the response has been sent, or the client went away); up to `queue` more wait for a
//!   slot, in arrival order, up to `max_wait_ms`. A queued request whose client disconnects leaves
//!   the queue. Slots are counted per gateway process.
//!
//! Requests that would wait longer than `max_wait_ms` (both waits together), or find the queue
//! full, are answered at once with `status` (503 by default, or 429) and `Retry-After` (the
//! bucket's time until a turn frees up for the rate; 1 s for concurrency, which has no schedule).
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:throttle"
//! [routes.plugins.config]
//! rate = 10                        # requests ...
//! per = "second"                   # ... per second, minute, hour or day (or `period_ms = 250`)
//! burst = 1                        # sent on without waiting when the route has been quiet (default 1)
//! concurrency = 4                  # at most 4 in flight at once (optional; give `rate`, this, or both)
//! queue = 16                       # at most 16 waiting for a slot (default: `concurrency`)
//! max_wait_ms = 2000               # the longest any request waits (default 1000)
//! by = ["route"]                   # who shares a queue: consumer, ip, route, header:<name>
//!                                  # (under its value's digest), param:<name>; default ["route"]
//! status = 503                     # answer beyond the wait: 503 (default) or 429
//! on_state_error = "fail-open"     # "fail-open" sends requests on undelayed, "fail-closed" answers 503
//! ```
//!
//! How: the rate is a GCRA token bucket of capacity `burst + max_wait / (period / rate)` on the
//! gateway's `state` (shared through Redis when configured, so the rate holds across gateways).
//! Taking a unit reserves the request's turn; the time past `burst`'s worth is its wait. A request
//! refused takes nothing. Concurrency is the gateway's `acquire-slot` action. Waits are capped by
//! the route's timeout.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use airlock_sdk::limit_key::{self, KeyPart};
use airlock_sdk::state::{self, StateError};
use airlock_sdk::{Action, Descriptor, Plugin, Request, ResponseInit, SlotRequest, export_plugin};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rate: Option<u64>,
    per: Option<Period>,
    period_ms: Option<u64>,
    #[serde(default = "one")]
    burst: u64,
    #[serde(default = "default_wait")]
    max_wait_ms: u64,
    #[serde(default = "default_by")]
    by: Vec<String>,
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    on_state_error: OnError,
    concurrency: Option<u32>,
    queue: Option<u32>,
    /// Filled in by the gateway from `[[consumers]]` for built-ins; not used here.
    #[serde(default)]
    #[allow(dead_code)]
    consumers: Option<serde::de::IgnoredAny>,
}

fn one() -> u64 {
    1
}

fn default_wait() -> u64 {
    1000
}

fn default_by() -> Vec<String> {
    vec!["route".into()]
}

fn default_status() -> u16 {
    503
}

/// Longest wait a config may ask for: the gateway caps one delay at 60 s.
const MAX_WAIT_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Period {
    Second,
    Minute,
    Hour,
    Day,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum OnError {
    #[default]
    FailOpen,
    FailClosed,
}

/// The rate half: a GCRA bucket whose overflow is waited out.
#[derive(Debug, PartialEq)]
struct Rate {
    rate: u64,
    period_ms: u64,
    /// Bucket capacity: the burst plus the units that fit in the max wait.
    capacity: u64,
    /// `burst` units' worth of time, in ms: what a reservation may use without waiting.
    free_ms: u64,
}

/// The concurrency half: slots and a bounded queue.
#[derive(Debug, PartialEq)]
struct Concurrency {
    limit: u32,
    queue: u32,
}

/// The configured plugin.
#[derive(Debug)]
struct Throttle {
    rate: Option<Rate>,
    concurrency: Option<Concurrency>,
    max_wait_ms: u64,
    by: Vec<KeyPart>,
    status: u16,
    on_error: OnError,
}

impl Plugin for Throttle {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if c.max_wait_ms > MAX_WAIT_MS {
            return Err(format!("`max_wait_ms` is at most {MAX_WAIT_MS}"));
        }
        if c.status != 503 && c.status != 429 {
            return Err("`status` is 503 or 429".into());
        }
        let rate = match c.rate {
            Some(rate) => Some(Rate::new(rate, c.per, c.period_ms, c.burst, c.max_wait_ms)?),
            None if c.per.is_some() || c.period_ms.is_some() => return Err("`per`/`period_ms` need a `rate`".into()),
            None => None,
        };
        let concurrency = match (c.concurrency, c.queue) {
            (Some(0), _) => return Err("`concurrency` must be at least 1".into()),
            (Some(limit), queue) => Some(Concurrency { limit, queue: queue.unwrap_or(limit) }),
            (None, Some(_)) => return Err("`queue` needs a `concurrency`".into()),
            (None, None) => None,
        };
        if rate.is_none() && concurrency.is_none() {
            return Err("give a `rate` (with `per` or `period_ms`), a `concurrency`, or both".into());
        }
        let by = limit_key::parse(&c.by)?;
        Ok(Self { rate, concurrency, max_wait_ms: c.max_wait_ms, by, status: c.status, on_error: c.on_state_error })
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        let key = match limit_key::key(&self.by, req) {
            Ok(key) => key,
            Err(why) => return Action::error(400, "bad_request", &why, &req.request_id()),
        };
        let request_id = req.request_id();
        let delay_ms = match &self.rate {
            None => 0,
            Some(rate) => match state::acquire(&key, rate.rate, rate.period_ms, rate.capacity, 1) {
                Ok(d) if d.allowed => d.reset_after_ms.saturating_sub(rate.free_ms),
                Ok(d) => return Action::Respond(self.refusal(d.retry_after_ms, &request_id)),
                Err(e) => match self.state_failed(&e, &request_id) {
                    Some(refusal) => return refusal,
                    None => 0,
                },
            },
        };
        let delay_ms = delay_ms.min(self.max_wait_ms);
        match &self.concurrency {
            Some(c) => {
                // A slot has no schedule to compute a retry time from: a second is the hint.
                Action::AcquireSlot(
                    SlotRequest::new(key, c.limit, self.refusal(1000, &request_id))
                        .queue(c.queue)
                        .delay_ms(as_u32(delay_ms))
                        .max_wait_ms(as_u32(self.max_wait_ms - delay_ms)),
                )
            }
            None if delay_ms == 0 => Action::Continue,
            None => Action::Delay(as_u32(delay_ms)),
        }
    }
}

fn as_u32(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
}

impl Rate {
    fn new(rate: u64, per: Option<Period>, period_ms: Option<u64>, burst: u64, max_wait_ms: u64) -> Result<Self, String> {
        let period_ms = match (per, period_ms) {
            (Some(Period::Second), None) => 1_000,
            (Some(Period::Minute), None) => 60_000,
            (Some(Period::Hour), None) => 3_600_000,
            (Some(Period::Day), None) => 86_400_000,
            (None, Some(ms)) if ms > limit_key::MAX_PERIOD_MS => {
                return Err(format!("`period_ms` must be at most {} (a year)", limit_key::MAX_PERIOD_MS));
            }
            (None, Some(ms)) if ms > 0 => ms,
            (None, Some(_)) => return Err("`period_ms` must be at least 1".into()),
            (Some(_), Some(_)) => return Err("give `per` or `period_ms`, not both".into()),
            (None, None) => return Err("give `per` (second, minute, hour, day) or `period_ms`".into()),
        };
        if rate == 0 || burst == 0 {
            return Err("`rate` and `burst` must be at least 1".into());
        }
        let emission_ms = period_ms as f64 / rate as f64;
        let queue = (max_wait_ms as f64 / emission_ms).floor() as u64;
        Ok(Self { rate, period_ms, capacity: burst + queue, free_ms: (emission_ms * burst as f64).ceil() as u64 })
    }
}

impl Throttle {
    /// The answer to a request that would wait too long: `status` with `Retry-After`.
    fn refusal(&self, retry_after_ms: u64, request_id: &str) -> ResponseInit {
        let retry_after = retry_after_ms.div_ceil(1000).max(1);
        let message = format!("too busy: try again in {retry_after} s");
        ResponseInit::error(self.status, "too_busy", &message, request_id).header("retry-after", retry_after.to_string())
    }

    /// The refusal when the rate could not be checked and the policy fails closed.
    fn state_failed(&self, e: &StateError, request_id: &str) -> Option<Action> {
        match self.on_error {
            OnError::FailOpen => None,
            OnError::FailClosed => {
                airlock_sdk::log::debug(format!("throttle not checked, failing closed: {e}"));
                let message = "the throttle cannot be checked: its state is unavailable";
                Some(Action::Respond(ResponseInit::error(503, "state_unavailable", message, request_id).header("retry-after", "1")))
            }
        }
    }
}

export_plugin!(Throttle);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_what_fits_in_the_max_wait() {
        let t = airlock_sdk::configure::<Throttle>(r#"{"rate": 10, "per": "second", "max_wait_ms": 1000}"#).unwrap();
        let r = t.rate.unwrap();
        assert_eq!((r.capacity, r.free_ms), (11, 100));
        assert_eq!(t.concurrency, None);
        let t = airlock_sdk::configure::<Throttle>(r#"{"rate": 4, "period_ms": 1000, "burst": 2, "max_wait_ms": 0}"#).unwrap();
        let r = t.rate.unwrap();
        assert_eq!((r.capacity, r.free_ms), (2, 500));
        let t = airlock_sdk::configure::<Throttle>(r#"{"concurrency": 3}"#).unwrap();
        assert_eq!((t.rate, t.concurrency), (None, Some(Concurrency { limit: 3, queue: 3 })));
        let t = airlock_sdk::configure::<Throttle>(r#"{"concurrency": 3, "queue": 0}"#).unwrap();
        assert_eq!(t.concurrency, Some(Concurrency { limit: 3, queue: 0 }));
        let err = |j: &str| airlock_sdk::configure::<Throttle>(j).unwrap_err();
        assert!(err(r#"{"rate": 1}"#).contains("give `per`"));
        assert!(err(r#"{}"#).contains("a `concurrency`, or both"));
        assert!(err(r#"{"concurrency": 0}"#).contains("at least 1"));
        assert!(err(r#"{"queue": 2}"#).contains("needs a `concurrency`"));
        assert!(err(r#"{"rate": 1, "per": "second", "status": 500}"#).contains("503 or 429"));
        assert!(err(r#"{"rate": 1, "per": "second", "max_wait_ms": 100000}"#).contains("at most"));
        assert!(err(r#"{"rate": 1, "per": "second", "by": ["x"]}"#).contains("unknown key part"));
        assert!(err(r#"{"rate": 1, "period_ms": 9200000000000000000}"#).contains("at most"));
    }
}
