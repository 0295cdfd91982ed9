//! `builtin:rate-limit`: token buckets (GCRA: a steady rate with a burst, AWS API Gateway
//! semantics) and fixed windows (per second, minute, hour or day, Kong semantics), several at
//! once, on counters kept by the gateway's `state` capability (memory, or Redis shared by every
//! gateway), so limits hold across a cluster.
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:rate-limit"
//! [routes.plugins.config]
//! by = ["consumer"]                # key parts: "consumer" (falls back to the client IP),
//!                                  # "ip", "route", "header:<name>", "param:<name>"; default ["consumer"].
//!                                  # A header's value is counted under its digest (never stored
//!                                  # as sent: it is often a credential); requests without it
//!                                  # share one bucket, and one giving it in lines that differ
//!                                  # is a 400 (which line the upstream reads is its own choice)
//! cost = 1                         # units one request takes (default 1)
//! headers = "draft"                # "draft" (RateLimit-Policy / RateLimit), "legacy", or "off"
//! on_state_error = "fail-open"     # if the shared state backend (Redis) is unreachable or slow:
//!                                  # "fail-open" applies the same limits in this gateway's own
//!                                  # memory until it is back, "fail-closed" answers 503
//! limits = [
//!   { name = "burst", rate = 10, per = "second", burst = 20 },   # token bucket
//!   { name = "daily", limit = 1000, window = "day" },            # fixed window
//!   { name = "minute", limit = 100, window = "minute", window_type = "sliding" },
//! ]
//! # Usage plans (AWS API Gateway's, quota's `plans`): a consumer in group `gold` gets these
//! # limits instead of `limits`; the first plan in config order one of its groups names wins.
//! plans = { gold = [{ name = "burst", rate = 100, per = "second", burst = 200 }] }
//! ```
//!
//! A plan's limits replace the defaults whole (a limit left out of a plan does not apply to its
//! consumers), and are counted apart from them and from other plans': a consumer moved to
//! another plan starts with full buckets. A consumer with no plan's group, or none at all (an
//! unauthenticated request counted by IP), gets `limits`.
//!
//! A bucket holds `burst` units (default: `rate`) and refills at `rate` per `per` (`second`,
//! `minute`, `hour`, `day`) or per `period_ms`. A window allows `limit` units per `window`
//! (same names) or `window_ms`, starting at its first request; with `window_type = "sliding"`
//! (Kong's sliding windows) windows are aligned to the backend's clock and a request counts the
//! current window plus the previous one weighted by how much of it the last `window` still
//! covers (an estimate that takes the previous window's requests as spread evenly: traffic
//! bunched at a window's end can pass up to about `2 x limit - 1` within one window's length,
//! against the fixed window's `2 x limit`; for a strict bound use a bucket). The check and the update of each
//! limit are one atomic step in the backend, and a refused request takes nothing from the limit
//! that refused it. With several limits, they are taken in order and the first refusal stops:
//! the limits before it have been charged (as in Kong); put the tightest limit first.
//!
//! Refused requests get 429 with `Retry-After` (whole seconds, at least 1). Headers, on refused
//! and allowed responses alike:
//! - `draft` (draft-ietf-httpapi-ratelimit-headers-10): `RateLimit-Policy: "burst";q=20;w=2,
//!   "daily";q=1000;w=86400` and `RateLimit: "burst";r=19;t=1, "daily";r=999;t=86400`
//!   (`q` quota, `w` window or full-refill seconds, `r` remaining, `t` seconds until reset).
//! - `legacy`: `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset` of the tightest
//!   limit (fewest remaining), plus `X-RateLimit-Limit-<Period>` /
//!   `X-RateLimit-Remaining-<Period>` for each limit with a named period (`Second` ... `Day`).

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::borrow::Cow;

use airlock_sdk::limit_key::{self, KeyPart};
use airlock_sdk::state::{self, Decision, StateError};
use airlock_sdk::{Action, Descriptor, Plugin, Request, RequestEdit, ResponseEdit, ResponseInit, export_plugin};
use serde::Deserialize;

/// Most limits one entry may have (each is one state call per request).
const MAX_LIMITS: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_by")]
    by: Vec<String>,
    #[serde(default = "one")]
    cost: u64,
    #[serde(default)]
    headers: HeaderMode,
    #[serde(default)]
    on_state_error: OnError,
    limits: Vec<LimitConfig>,
    /// Group -> limits, in config order (serde_json keeps it).
    #[serde(default)]
    plans: serde_json::Map<String, serde_json::Value>,
    /// Filled in by the gateway from `[[consumers]]` for built-ins; not used here.
    #[serde(default)]
    #[allow(dead_code)]
    consumers: Option<serde::de::IgnoredAny>,
}

fn default_by() -> Vec<String> {
    vec!["consumer".into()]
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum HeaderMode {
    #[default]
    Draft,
    Legacy,
    Off,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum OnError {
    #[default]
    FailOpen,
    FailClosed,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Period {
    Second,
    Minute,
    Hour,
    Day,
}

impl Period {
    fn ms(self) -> u64 {
        match self {
            Self::Second => 1_000,
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Second => "Second",
            Self::Minute => "Minute",
            Self::Hour => "Hour",
            Self::Day => "Day",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitConfig {
    name: Option<String>,
    rate: Option<u64>,
    per: Option<Period>,
    period_ms: Option<u64>,
    burst: Option<u64>,
    limit: Option<u64>,
    window: Option<Period>,
    window_ms: Option<u64>,
    #[serde(default)]
    window_type: WindowType,
}

/// How a window counts (Kong's `window_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum WindowType {
    /// `limit` per window, the window starting at its first request.
    #[default]
    Fixed,
    /// The current window plus the previous one, weighted: no double burst at a boundary.
    Sliding,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Bucket { rate: u64, period_ms: u64, burst: u64 },
    Window { limit: u64, window_ms: u64, sliding: bool },
}

#[derive(Debug, Clone, PartialEq)]
struct Limit {
    name: String,
    kind: Kind,
    period: Option<Period>,
}

/// A header line for the response: its name and value, borrowed where they are the same on
/// every answer.
type HeaderLine<'a> = (Cow<'a, str>, Cow<'a, str>);

impl Limit {
    fn quota(&self) -> u64 {
        match self.kind {
            Kind::Bucket { burst, .. } => burst,
            Kind::Window { limit, .. } => limit,
        }
    }

    /// `w` of the draft: the window, or the time a bucket takes to refill from empty, in seconds.
    fn window_secs(&self) -> u64 {
        let ms = match self.kind {
            Kind::Bucket { rate, period_ms, burst } => (burst as u128 * period_ms as u128).div_ceil(rate as u128) as u64,
            Kind::Window { window_ms, .. } => window_ms,
        };
        ms.div_ceil(1000).max(1)
    }
}

/// The configured plugin.
#[derive(Debug)]
struct RateLimit {
    by: Vec<KeyPart>,
    cost: u64,
    headers: HeaderMode,
    on_error: OnError,
    /// `limits`: for consumers no plan names.
    defaults: LimitSet,
    /// `plans`, in config order.
    plans: Vec<LimitSet>,
}

/// Limits applied together: the defaults, or one plan's.
#[derive(Debug)]
struct LimitSet {
    /// The plan's group (part of its state keys); `None` for the defaults.
    plan: Option<String>,
    limits: Vec<Limit>,
    /// The draft `RateLimit-Policy` value: the same on every answer, so made once.
    policy: String,
}

impl LimitSet {
    /// The limits of `list`, at config key `key` (`limits`, or `plans.<group>`).
    fn new(key: &str, plan: Option<String>, list: Vec<LimitConfig>, cost: u64) -> Result<Self, String> {
        if list.is_empty() {
            return Err(format!("`{key}`: give at least one limit"));
        }
        if list.len() > MAX_LIMITS {
            return Err(format!("`{key}`: at most {MAX_LIMITS}"));
        }
        let mut limits = Vec::new();
        for (i, l) in list.into_iter().enumerate() {
            let limit = limit_from(key, i, l, cost)?;
            if limits.iter().any(|x: &Limit| x.name == limit.name) {
                return Err(format!("`{key}[{i}]`: the name `{}` is used twice", limit.name));
            }
            limits.push(limit);
        }
        let policy: Vec<String> = limits.iter().map(|l| format!("\"{}\";q={};w={}", l.name, l.quota(), l.window_secs())).collect();
        Ok(Self { plan, limits, policy: policy.join(", ") })
    }
}

/// Limit `i` of the list at config key `key` (`limits`, or `plans.<group>`).
fn limit_from(key: &str, i: usize, c: LimitConfig, cost: u64) -> Result<Limit, String> {
    let at = format!("`{key}[{i}]`");
    let period = |named: Option<Period>, ms: Option<u64>, what: &str| -> Result<(u64, Option<Period>), String> {
        match (named, ms) {
            (Some(p), None) => Ok((p.ms(), Some(p))),
            (None, Some(0)) => Err(format!("{at}: `{what}_ms` must be at least 1")),
            // Past it, counts and reset times overflow what Redis and the headers hold.
            (None, Some(ms)) if ms > limit_key::MAX_PERIOD_MS => Err(format!("{at}: `{what}_ms` must be at most {} (a year)", limit_key::MAX_PERIOD_MS)),
            (None, Some(ms)) => Ok((ms, None)),
            (Some(_), Some(_)) => Err(format!("{at}: give a named period or milliseconds, not both")),
            (None, None) => Err(format!("{at}: a period is needed")),
        }
    };
    let (kind, named) = match (c.rate, c.limit) {
        (Some(rate), None) => {
            if c.window.is_some() || c.window_ms.is_some() || c.window_type != WindowType::Fixed {
                return Err(format!("{at}: `window` and `window_type` go with `limit`, not with `rate`"));
            }
            let (period_ms, named) = period(c.per, c.period_ms, "period")
                .map_err(|e| e.replace("a period is needed", "a bucket needs `per` (second, minute, hour, day) or `period_ms`"))?;
            let burst = c.burst.unwrap_or(rate);
            if rate == 0 || burst == 0 {
                return Err(format!("{at}: `rate` and `burst` must be at least 1"));
            }
            (Kind::Bucket { rate, period_ms, burst }, named)
        }
        (None, Some(limit)) => {
            if c.per.is_some() || c.period_ms.is_some() || c.burst.is_some() {
                return Err(format!("{at}: `per`, `period_ms` and `burst` go with `rate`, not with `limit`"));
            }
            let (window_ms, named) = period(c.window, c.window_ms, "window")
                .map_err(|e| e.replace("a period is needed", "a window needs `window` (second, minute, hour, day) or `window_ms`"))?;
            if limit == 0 {
                return Err(format!("{at}: `limit` must be at least 1"));
            }
            (Kind::Window { limit, window_ms, sliding: c.window_type == WindowType::Sliding }, named)
        }
        _ => return Err(format!("{at}: give either `rate` (a token bucket) or `limit` (a fixed window)")),
    };
    let name = match c.name {
        Some(n) => n,
        None => match named {
            Some(p) => format!("{p:?}").to_lowercase(),
            None => format!("limit{i}"),
        },
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!("{at}: `name` `{name}` must be letters, digits, `-`, `_` or `.`"));
    }
    let limit = Limit { name, kind, period: named };
    if cost > limit.quota() {
        return Err(format!("{at}: `cost` {cost} is more than the limit's {} units: no request would ever pass", limit.quota()));
    }
    Ok(limit)
}

impl Plugin for RateLimit {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if c.cost == 0 {
            return Err("`cost` must be at least 1".into());
        }
        let by = limit_key::parse(&c.by)?;
        let defaults = LimitSet::new("limits", None, c.limits, c.cost)?;
        let mut plans = Vec::with_capacity(c.plans.len());
        for (group, value) in c.plans {
            let key = format!("plans.{group}");
            // Groups travel as one comma-separated `consumer.groups`, trimmed.
            if !airlock_sdk::consumer::is_group_name(&group) {
                return Err(format!("`{key}`: `{group}` cannot be a group name (no `,`, no control characters, no leading or trailing space)"));
            }
            let list: Vec<LimitConfig> = serde_json::from_value(value).map_err(|e| format!("`{key}`: {e} (a plan is a list of limits, as `limits`)"))?;
            plans.push(LimitSet::new(&key, Some(group), list, c.cost)?);
        }
        Ok(Self { by, cost: c.cost, headers: c.headers, on_error: c.on_state_error, defaults, plans })
    }

    /// Request phase only: the limit headers of an allowed request are response edits the
    /// gateway makes (`Request::edit_response`), so there is no `on-response` to call.
    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        let key = match limit_key::key(&self.by, req) {
            Ok(key) => key,
            Err(why) => return Action::error(400, "bad_request", &why, &req.request_id()),
        };
        let set = self.set_for(req);
        let decisions = match self.check(set, &key, false) {
            Ok(d) => d,
            // Fail-open falls back to this gateway's own limits while the shared backend is away.
            Err(StateError::Unavailable(_)) if self.on_error == OnError::FailOpen => match self.check(set, &key, true) {
                Ok(d) => d,
                Err(e) => return self.state_failed(&e, req),
            },
            Err(e) => return self.state_failed(&e, req),
        };
        let headers = self.header_lines(set, &decisions);
        match decisions.iter().find(|d| !d.allowed) {
            Some(refused) => {
                let retry_after = retry_after_secs(refused.retry_after_ms);
                let message = format!("too many requests: try again in {retry_after} s");
                let mut response = ResponseInit::error(429, "rate_limited", &message, &req.request_id())
                    .header("retry-after", retry_after.to_string());
                for (name, value) in headers {
                    response = response.header(name, value.as_bytes());
                }
                Action::Respond(response)
            }
            None => {
                // Made by the gateway on the response, without an `on-response` call; asked
                // for in one call.
                req.edit(headers.iter().map(|(name, value)| RequestEdit::Response(ResponseEdit::Set(name, value.as_bytes()))));
                Action::Continue
            }
        }
    }
}

/// Appends `n` in decimal, without the `fmt` machinery (on every request's path).
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(d as char);
    }
}

/// A limit's reset (`t`, `RateLimit-Reset`) in whole seconds. For the limit that refused, the
/// moment `Retry-After` names (the draft: they SHOULD name the same point in time): a token
/// bucket's or a sliding window's own reset is when it is whole again, later than the retry
/// that would be admitted.
fn reset_secs(d: &Decision) -> u64 {
    if d.allowed { d.reset_after_ms.div_ceil(1000) } else { retry_after_secs(d.retry_after_ms) }
}

/// `Retry-After` in whole seconds, rounded up, never 0.
fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

impl RateLimit {
    /// The limits for this request's consumer: the first plan (in config order) one of its
    /// groups names, else the defaults. Without plans the context is not read.
    fn set_for(&self, req: &Request) -> &LimitSet {
        if self.plans.is_empty() {
            return &self.defaults;
        }
        let groups = req.context_get("consumer.groups").unwrap_or_default();
        let named = groups.split(',').map(str::trim).filter(|g| !g.is_empty());
        self.plans.iter().find(|set| set.plan.as_deref().is_some_and(|plan| named.clone().any(|g| g == plan))).unwrap_or(&self.defaults)
    }

    /// Takes the cost from each limit of `set` in order, stopping at the first refusal.
    /// `local`: in this gateway's memory instead of the configured backend.
    fn check(&self, set: &LimitSet, key: &str, local: bool) -> Result<Vec<Decision>, StateError> {
        let mut decisions = Vec::with_capacity(set.limits.len());
        let mut k = String::with_capacity(key.len() + 24);
        for (i, limit) in set.limits.iter().enumerate() {
            // `<index>:<name>:<key>`, the state key's form since the first release; a plan's
            // limits are `plan=<group>:<index>:<name>:<key>`, counted apart.
            k.clear();
            if let Some(plan) = &set.plan {
                k.push_str("plan=");
                k.push_str(plan);
                k.push(':');
            }
            push_u64(&mut k, i as u64);
            k.push(':');
            k.push_str(&limit.name);
            k.push(':');
            k.push_str(key);
            let d = match (limit.kind.clone(), local) {
                (Kind::Bucket { rate, period_ms, burst }, false) => state::acquire(&k, rate, period_ms, burst, self.cost)?,
                (Kind::Bucket { rate, period_ms, burst }, true) => state::acquire_local(&k, rate, period_ms, burst, self.cost)?,
                (Kind::Window { limit, window_ms, sliding: false }, false) => state::window(&k, limit, window_ms, self.cost)?,
                (Kind::Window { limit, window_ms, sliding: false }, true) => state::window_local(&k, limit, window_ms, self.cost)?,
                (Kind::Window { limit, window_ms, sliding: true }, false) => {
                    state::sliding_window(&k, limit, window_ms, self.cost)?
                }
                (Kind::Window { limit, window_ms, sliding: true }, true) => {
                    state::sliding_window_local(&k, limit, window_ms, self.cost)?
                }
            };
            let refused = !d.allowed;
            decisions.push(d);
            if refused {
                break;
            }
        }
        Ok(decisions)
    }

    fn state_failed(&self, e: &StateError, req: &Request) -> Action {
        match self.on_error {
            // Outages were already retried locally; what is left (a memory store full of keys
            // stored without a TTL: limiter keys make way for new ones) lets the request
            // through, said on this route (the gateway logs a warning repeated within 10 s
            // once, with how many it dropped): a limiter letting everything through unseen
            // is the failure an operator must hear of.
            OnError::FailOpen => {
                airlock_sdk::log::warn(format!("rate limit on route `{}` not enforced, failing open: {e}", req.route_id()));
                Action::Continue
            }
            OnError::FailClosed => {
                airlock_sdk::log::debug(format!("rate limit not checked, failing closed: {e}"));
                let message = "the rate limit cannot be checked: its state is unavailable";
                Action::Respond(ResponseInit::error(503, "state_unavailable", message, &req.request_id()).header("retry-after", "1"))
            }
        }
    }

    /// The header lines for these decisions (one per limit of `set` checked, in order).
    fn header_lines<'a>(&self, set: &'a LimitSet, decisions: &[Decision]) -> Vec<HeaderLine<'a>> {
        let pairs: Vec<(&Limit, &Decision)> = set.limits.iter().zip(decisions).collect();
        match self.headers {
            HeaderMode::Off => Vec::new(),
            HeaderMode::Draft => {
                let mut current = String::with_capacity(32 * pairs.len());
                for (i, (l, d)) in pairs.iter().enumerate() {
                    if i > 0 {
                        current.push_str(", ");
                    }
                    current.push('"');
                    current.push_str(&l.name);
                    current.push_str("\";r=");
                    push_u64(&mut current, d.remaining);
                    current.push_str(";t=");
                    push_u64(&mut current, reset_secs(d));
                }
                vec![(Cow::Borrowed("ratelimit-policy"), Cow::Borrowed(set.policy.as_str())), (Cow::Borrowed("ratelimit"), Cow::Owned(current))]
            }
            HeaderMode::Legacy => {
                let mut out: Vec<HeaderLine<'a>> = Vec::new();
                if let Some((l, d)) = pairs.iter().min_by_key(|(_, d)| d.remaining) {
                    out.push(("ratelimit-limit".into(), l.quota().to_string().into()));
                    out.push(("ratelimit-remaining".into(), d.remaining.to_string().into()));
                    out.push(("ratelimit-reset".into(), reset_secs(d).to_string().into()));
                }
                for (l, d) in &pairs {
                    if let Some(p) = l.period {
                        out.push((format!("x-ratelimit-limit-{}", p.title().to_lowercase()).into(), l.quota().to_string().into()));
                        out.push((format!("x-ratelimit-remaining-{}", p.title().to_lowercase()).into(), d.remaining.to_string().into()));
                    }
                }
                out
            }
        }
    }
}

export_plugin!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        airlock_sdk::configure::<RateLimit>(json).unwrap_err()
    }

    fn ok(json: &str) -> RateLimit {
        airlock_sdk::configure::<RateLimit>(json).unwrap()
    }

    fn d(allowed: bool, remaining: u64, reset: u64) -> Decision {
        Decision { allowed, remaining, limit: 0, reset_after_ms: reset, retry_after_ms: 0 }
    }

    #[test]
    fn config_is_validated() {
        assert!(err(r#"{"limits": []}"#).contains("at least one limit"));
        assert!(err(r#"{"limits": [{"rate": 1}]}"#).contains("needs `per`"));
        assert!(err(r#"{"limits": [{"rate": 1, "limit": 2, "per": "second"}]}"#).contains("either `rate`"));
        assert!(err(r#"{"limits": [{"limit": 2, "per": "second"}]}"#).contains("go with `rate`"));
        assert!(err(r#"{"by": ["cookie"], "limits": [{"limit": 2, "window": "minute"}]}"#).contains("unknown key part"));
        assert!(err(r#"{"cost": 5, "limits": [{"limit": 2, "window": "minute"}]}"#).contains("no request would ever pass"));
        assert!(err(r#"{"limits": [{"limit": 2, "window": "week"}]}"#).contains("unknown variant"));
        assert!(err(r#"{"limits": [{"limit": 2, "window": "minute"}, {"limit": 3, "window": "minute"}]}"#).contains("used twice"));
        assert!(err(r#"{"limits": [{"limit": 2, "window_ms": 9200000000000000000}]}"#).contains("`window_ms` must be at most"));
        assert!(err(r#"{"limits": [{"rate": 2, "period_ms": 9200000000000000000}]}"#).contains("`period_ms` must be at most"));
        assert!(err(r#"{"by": ["header:bad name"], "limits": [{"limit": 2, "window": "minute"}]}"#).contains("invalid header name"));
        let p = ok(r#"{"by": ["route", "header:X-Key", "param:id"], "limits": [{"rate": 5, "per": "second"}]}"#);
        assert_eq!(p.by, [KeyPart::Route, KeyPart::Header("x-key".into()), KeyPart::Param("id".into())]);
        assert_eq!(p.defaults.limits[0], Limit { name: "second".into(), kind: Kind::Bucket { rate: 5, period_ms: 1000, burst: 5 }, period: Some(Period::Second) });
    }

    #[test]
    fn draft_headers() {
        let p = ok(r#"{"limits": [{"name": "burst", "rate": 100, "per": "minute", "burst": 100}, {"name": "daily", "limit": 1000, "window": "day"}]}"#);
        let h = p.header_lines(&p.defaults, &[d(true, 50, 29_001), d(true, 999, 86_400_000)]);
        assert_eq!(h[0], ("ratelimit-policy".into(), "\"burst\";q=100;w=60, \"daily\";q=1000;w=86400".into()));
        assert_eq!(h[1], ("ratelimit".into(), "\"burst\";r=50;t=30, \"daily\";r=999;t=86400".into()));
        // Refused by the bucket: its `t` is the Retry-After (2 s), not when it is whole again.
        let refused = Decision { allowed: false, remaining: 0, limit: 100, reset_after_ms: 298_000, retry_after_ms: 1_200 };
        let h = p.header_lines(&p.defaults, &[refused]);
        assert_eq!(h[1], ("ratelimit".into(), "\"burst\";r=0;t=2".into()));
    }

    #[test]
    fn legacy_headers() {
        let p = ok(r#"{"headers": "legacy", "limits": [{"limit": 10, "window": "second"}, {"limit": 100, "window": "minute"}]}"#);
        let h = p.header_lines(&p.defaults, &[d(true, 9, 1000), d(true, 5, 30_000)]);
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_ref());
        assert_eq!(get("ratelimit-limit"), Some("100"));
        assert_eq!(get("ratelimit-remaining"), Some("5"));
        assert_eq!(get("ratelimit-reset"), Some("30"));
        assert_eq!(get("x-ratelimit-limit-second"), Some("10"));
        assert_eq!(get("x-ratelimit-remaining-minute"), Some("5"));
    }

    #[test]
    fn plans_are_limit_lists_named_by_group_and_checked_like_limits() {
        let p = ok(r#"{"limits": [{"name": "b", "rate": 10, "per": "second"}],
                       "plans": {"gold": [{"name": "b", "rate": 100, "per": "second", "burst": 200}], "silver": [{"limit": 50, "window": "minute"}]}}"#);
        let names: Vec<Option<&str>> = p.plans.iter().map(|s| s.plan.as_deref()).collect();
        assert_eq!(names, [Some("gold"), Some("silver")], "in config order");
        assert_eq!(p.plans[0].limits[0].kind, Kind::Bucket { rate: 100, period_ms: 1000, burst: 200 });
        assert_eq!(p.plans[0].policy, "\"b\";q=200;w=2");
        assert_eq!(p.defaults.policy, "\"b\";q=10;w=1");
        assert!(err(r#"{"limits": [{"rate": 1, "per": "second"}], "plans": {"gold": []}}"#).starts_with("`plans.gold`: give at least one limit"));
        assert!(err(r#"{"limits": [{"rate": 1, "per": "second"}], "plans": {"gold": [{"rate": 1}]}}"#).starts_with("`plans.gold[0]`: a bucket needs `per`"));
        assert!(err(r#"{"limits": [{"rate": 1, "per": "second"}], "plans": {"gold": {"rate": 1}}}"#).starts_with("`plans.gold`: invalid type"));
        assert!(err(r#"{"limits": [{"rate": 1, "per": "second"}], "plans": {"a,b": [{"rate": 1, "per": "second"}]}}"#).contains("cannot be a group name"));
        assert!(err(r#"{"cost": 5, "limits": [{"rate": 9, "per": "second"}], "plans": {"g": [{"rate": 2, "per": "second"}]}}"#).starts_with("`plans.g[0]`: `cost` 5"));
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 1000, 86_400, u64::MAX] {
            let mut out = String::from("x");
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_never_zero() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(1000), 1);
        assert_eq!(retry_after_secs(1001), 2);
    }
}
