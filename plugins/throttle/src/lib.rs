//! `builtin:throttle`: smooths traffic to a steady rate by delaying requests instead of refusing
//! them. Requests over the rate wait (the gateway's `delay` action: asynchronously, holding no
//! thread) for their turn, in arrival order, up to `max_wait_ms`; those that would wait longer are
//! answered at once with `status` (503 by default, or 429) and `Retry-After`.
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:throttle"
//! [routes.plugins.config]
//! rate = 10                        # requests ...
//! per = "second"                   # ... per second, minute, hour or day (or `period_ms = 250`)
//! burst = 1                        # sent on without waiting when the route has been quiet (default 1)
//! max_wait_ms = 2000               # the longest any request waits (default 1000)
//! by = ["route"]                   # who shares a queue: consumer, ip, route, header:<name>,
//!                                  # param:<name>; default ["route"]
//! status = 503                     # answer beyond the wait: 503 (default) or 429
//! on_state_error = "fail-open"     # "fail-open" sends requests on undelayed, "fail-closed" answers 503
//! ```
//!
//! How: a GCRA token bucket of capacity `burst + max_wait / (period / rate)` on the gateway's
//! `state` (shared through Redis when configured, so the rate holds across gateways). Taking a
//! unit reserves the request's turn; the time past `burst`'s worth is its wait. A request refused
//! takes nothing. The wait is capped by the route's timeout.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use airlock_sdk::state::{self, StateError};
use airlock_sdk::{Action, Descriptor, Plugin, Request, ResponseInit, export_plugin};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rate: u64,
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

#[derive(Debug, Clone, PartialEq)]
enum KeyPart {
    Consumer,
    Ip,
    Route,
    Header(String),
    Param(String),
}

/// The configured plugin.
#[derive(Debug)]
struct Throttle {
    rate: u64,
    period_ms: u64,
    /// Bucket capacity: the burst plus the units that fit in the max wait.
    capacity: u64,
    /// `burst` units' worth of time, in ms: what a reservation may use without waiting.
    free_ms: u64,
    by: Vec<KeyPart>,
    status: u16,
    on_error: OnError,
}

impl Plugin for Throttle {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let period_ms = match (c.per, c.period_ms) {
            (Some(Period::Second), None) => 1_000,
            (Some(Period::Minute), None) => 60_000,
            (Some(Period::Hour), None) => 3_600_000,
            (Some(Period::Day), None) => 86_400_000,
            (None, Some(ms)) if ms > 0 => ms,
            (None, Some(_)) => return Err("`period_ms` must be at least 1".into()),
            (Some(_), Some(_)) => return Err("give `per` or `period_ms`, not both".into()),
            (None, None) => return Err("give `per` (second, minute, hour, day) or `period_ms`".into()),
        };
        if c.rate == 0 || c.burst == 0 {
            return Err("`rate` and `burst` must be at least 1".into());
        }
        if c.max_wait_ms > MAX_WAIT_MS {
            return Err(format!("`max_wait_ms` is at most {MAX_WAIT_MS}"));
        }
        if c.status != 503 && c.status != 429 {
            return Err("`status` is 503 or 429".into());
        }
        let emission_ms = period_ms as f64 / c.rate as f64;
        let queue = (c.max_wait_ms as f64 / emission_ms).floor() as u64;
        let mut by = Vec::new();
        for part in &c.by {
            by.push(match part.as_str() {
                "consumer" => KeyPart::Consumer,
                "ip" => KeyPart::Ip,
                "route" => KeyPart::Route,
                p => match p.split_once(':') {
                    Some(("header", h)) if !h.is_empty() => KeyPart::Header(h.to_ascii_lowercase()),
                    Some(("param", n)) if !n.is_empty() => KeyPart::Param(n.to_owned()),
                    _ => return Err(format!("`by`: unknown key part `{p}` (use consumer, ip, route, header:<name>, param:<name>)")),
                },
            });
        }
        Ok(Self {
            rate: c.rate,
            period_ms,
            capacity: c.burst + queue,
            free_ms: (emission_ms * c.burst as f64).ceil() as u64,
            by,
            status: c.status,
            on_error: c.on_state_error,
        })
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        let key = self.key(req);
        match state::acquire(&key, self.rate, self.period_ms, self.capacity, 1) {
            Ok(d) if d.allowed => match d.reset_after_ms.saturating_sub(self.free_ms) {
                0 => Action::Continue,
                wait => Action::Delay(u32::try_from(wait).unwrap_or(u32::MAX)),
            },
            Ok(d) => Action::Respond(
                ResponseInit::new(self.status)
                    .header("retry-after", d.retry_after_ms.div_ceil(1000).max(1).to_string())
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(b"Too busy: try again later\n".to_vec()),
            ),
            Err(e) => self.state_failed(&e),
        }
    }
}

fn client_ip(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.trim_start_matches('[').trim_end_matches(']'),
        _ => addr,
    }
}

impl Throttle {
    fn key(&self, req: &Request) -> String {
        let parts: Vec<String> = self
            .by
            .iter()
            .map(|part| match part {
                KeyPart::Consumer => match req.context_get("consumer") {
                    Some(c) => format!("c={c}"),
                    None => format!("ip={}", client_ip(&req.client_addr())),
                },
                KeyPart::Ip => format!("ip={}", client_ip(&req.client_addr())),
                KeyPart::Route => format!("r={}", req.route_id()),
                KeyPart::Header(h) => {
                    format!("h={}", req.header(h).map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default())
                }
                KeyPart::Param(p) => format!("p={}", req.param(p).unwrap_or_default()),
            })
            .collect();
        parts.join("|")
    }

    fn state_failed(&self, e: &StateError) -> Action {
        match self.on_error {
            OnError::FailOpen => Action::Continue,
            OnError::FailClosed => {
                airlock_sdk::log::debug(format!("throttle not checked, failing closed: {e}"));
                Action::Respond(
                    ResponseInit::new(503)
                        .header("retry-after", "1")
                        .header("content-type", "text/plain; charset=utf-8")
                        .body(b"Service Unavailable: throttle state unavailable\n".to_vec()),
                )
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
        assert_eq!((t.capacity, t.free_ms), (11, 100));
        let t = airlock_sdk::configure::<Throttle>(r#"{"rate": 4, "period_ms": 1000, "burst": 2, "max_wait_ms": 0}"#).unwrap();
        assert_eq!((t.capacity, t.free_ms), (2, 500));
        let err = |j: &str| airlock_sdk::configure::<Throttle>(j).unwrap_err();
        assert!(err(r#"{"rate": 1}"#).contains("give `per`"));
        assert!(err(r#"{"rate": 1, "per": "second", "status": 500}"#).contains("503 or 429"));
        assert!(err(r#"{"rate": 1, "per": "second", "max_wait_ms": 100000}"#).contains("at most"));
        assert!(err(r#"{"rate": 1, "per": "second", "by": ["x"]}"#).contains("unknown key part"));
    }
}
