//! `builtin:quota`: request quotas per consumer over long periods (hour, day, week, month), for
//! usage plans: every consumer gets the default quotas, or those of the first plan (in config
//! order) named by one of its groups. Place it after the auth plugin, which sets `consumer`
//! (and `consumer.groups`, comma-separated) in the request context.
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:quota"
//! [routes.plugins.config]
//! quotas = { daily = { limit = 1000, period = "day" }, monthly = { limit = 20000, period = "month" } }
//! plans = { gold = { daily = 10000, monthly = 200000 } }   # group -> quota name -> limit
//! anonymous = "reject"             # no consumer: "reject" (403) or "ip" (quota per client IP)
//! # www_authenticate = 'Key realm="api"'  # with "reject": a 401 with this challenge instead, as the route's auth plugin sends it
//! headers = "draft"                # "draft" (RateLimit-Policy / RateLimit) or "off"
//! on_state_error = "fail-open"     # shared backend down: "fail-open" counts in this gateway's
//!                                  # memory meanwhile, "fail-closed" answers 503
//! ```
//!
//! A period starts at the consumer's first request in it and lasts `hour`, `day`, `week` or
//! `month` (30 days). A count is the consumer's on its plan: moving to another plan starts a
//! fresh one; changing a quota's limit in config (and reloading) keeps it. Counting is one atomic step per quota in the gateway's `state` (Redis when
//! configured, so a quota holds across gateways); a refused request takes nothing from any quota
//! (those after the first are looked at before any is counted, so retries refused by a spent
//! monthly quota do not spend the daily one; only requests racing for a quota's last unit can
//! find the quotas before it counted). Over quota: 429 with `Retry-After` (whole seconds, at least 1, until the
//! period ends). Remaining quota is sent on every response in the draft-ietf-httpapi-ratelimit-
//! headers-10 fields: `RateLimit-Policy: "daily";q=1000;w=86400` and `RateLimit: "daily";r=998;t=86020`.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use airlock_sdk::state::{self, Decision, StateError};
use airlock_sdk::{Action, Descriptor, Plugin, Request, ResponseEdit, ResponseInit, export_plugin};
use serde::Deserialize;

/// Most quotas one entry may have (each is one state call per request).
const MAX_QUOTAS: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    quotas: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    plans: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    anonymous: Anonymous,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    on_state_error: OnError,
    /// With `anonymous = "reject"`: the challenge of a 401 (else the refusal is a 403).
    #[serde(default)]
    www_authenticate: Option<String>,
    /// Filled in by the gateway from `[[consumers]]` for built-ins; not used here.
    #[serde(default)]
    #[allow(dead_code)]
    consumers: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaConfig {
    limit: u64,
    period: Period,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Period {
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    fn ms(self) -> u64 {
        match self {
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
            Self::Week => 7 * 86_400_000,
            Self::Month => 30 * 86_400_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Anonymous {
    #[default]
    Reject,
    Ip,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Headers {
    #[default]
    Draft,
    Off,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum OnError {
    #[default]
    FailOpen,
    FailClosed,
}

#[derive(Debug, Clone, PartialEq)]
struct Quota {
    name: String,
    limit: u64,
    period_ms: u64,
}

/// The configured plugin.
#[derive(Debug)]
struct QuotaPlugin {
    quotas: Vec<Quota>,
    /// (group, limit per quota, in `quotas` order).
    plans: Vec<(String, Vec<u64>)>,
    anonymous: Anonymous,
    /// The `WWW-Authenticate` challenge a request without a consumer is refused with (a 401);
    /// `None`: a 403, which carries none.
    challenge: Option<String>,
    headers: Headers,
    on_error: OnError,
}

/// The state key of quota `quota` for the consumer or IP `key` on `plan` (`None`: the
/// defaults): `quota:plan:key`, the plan's `%` and `:` escaped so no plan name reads as another
/// plan and a key.
fn count_key(quota: &str, plan: Option<&str>, key: &str) -> String {
    let plan = plan.unwrap_or("");
    let mut k = String::with_capacity(quota.len() + plan.len() + key.len() + 2);
    k.push_str(quota);
    k.push(':');
    for c in plan.chars() {
        match c {
            '%' => k.push_str("%25"),
            ':' => k.push_str("%3A"),
            c => k.push(c),
        }
    }
    k.push(':');
    k.push_str(key);
    k
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Plugin for QuotaPlugin {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if c.quotas.is_empty() || c.quotas.len() > MAX_QUOTAS {
            return Err(format!("`quotas`: give 1 to {MAX_QUOTAS} quotas"));
        }
        let mut quotas = Vec::new();
        for (name, value) in c.quotas {
            if !valid_name(&name) {
                return Err(format!("`quotas.{name}`: names are letters, digits, `-`, `_` or `.`"));
            }
            let q: QuotaConfig = serde_json::from_value(value).map_err(|e| format!("`quotas.{name}`: {e}"))?;
            if q.limit == 0 {
                return Err(format!("`quotas.{name}.limit` must be at least 1"));
            }
            quotas.push(Quota { name, limit: q.limit, period_ms: q.period.ms() });
        }
        let mut plans = Vec::new();
        for (group, value) in c.plans {
            if !airlock_sdk::consumer::is_group_name(&group) {
                return Err(format!("`plans.{group}`: `{group}` cannot be a group name (no `,`, no control characters, no leading or trailing space)"));
            }
            let limits: serde_json::Map<String, serde_json::Value> =
                serde_json::from_value(value).map_err(|e| format!("`plans.{group}`: {e}"))?;
            let mut per_quota: Vec<u64> = quotas.iter().map(|q| q.limit).collect();
            for (name, limit) in limits {
                let i = quotas
                    .iter()
                    .position(|q| q.name == name)
                    .ok_or_else(|| format!("`plans.{group}.{name}`: no quota named `{name}`"))?;
                per_quota[i] = match limit.as_u64() {
                    Some(l) if l > 0 => l,
                    _ => return Err(format!("`plans.{group}.{name}`: a limit is a whole number, at least 1")),
                };
            }
            plans.push((group, per_quota));
        }
        let challenge = match c.www_authenticate {
            None => None,
            Some(_) if c.anonymous == Anonymous::Ip => {
                return Err("`www_authenticate` goes with `anonymous = \"reject\"`: with `\"ip\"` no request is refused for want of a consumer".into());
            }
            Some(challenge) if airlock_sdk::consumer::valid_challenge(&challenge) => Some(challenge),
            Some(_) => return Err("`www_authenticate`: a challenge is one line of printable ASCII, e.g. 'Bearer realm=\"api\"'".into()),
        };
        Ok(Self { quotas, plans, anonymous: c.anonymous, challenge, headers: c.headers, on_error: c.on_state_error })
    }

    /// Request phase only: the limit headers of an allowed request are response edits the
    /// gateway makes (`Request::edit_response`), so there is no `on-response` to call.
    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        let key = match req.context_get("consumer") {
            Some(c) => format!("c={c}"),
            None if self.anonymous == Anonymous::Ip => format!("ip={}", req.client_ip()),
            // RFC 9110 15.5.2: a 401 carries a challenge; without one to give, a 403.
            None => {
                let message = "a consumer is required: authenticate first";
                return match &self.challenge {
                    Some(challenge) => ResponseInit::error(401, "consumer_required", message, &req.request_id()).header("www-authenticate", challenge.as_str()).into(),
                    None => Action::error(403, "consumer_required", message, &req.request_id()),
                };
            }
        };
        let groups = req.context_get("consumer.groups");
        let (plan, limits) = self.limits_for(groups.as_deref());
        let decisions = match self.check(&key, (plan, &limits), false) {
            Ok(d) => d,
            Err(StateError::Unavailable(_)) if self.on_error == OnError::FailOpen => match self.check(&key, (plan, &limits), true) {
                Ok(d) => d,
                Err(_) => return Action::Continue,
            },
            Err(_) if self.on_error == OnError::FailOpen => return Action::Continue,
            Err(e) => {
                airlock_sdk::log::debug(format!("quota not checked, failing closed: {e}"));
                let message = "the quota cannot be checked: its state is unavailable";
                return Action::Respond(ResponseInit::error(503, "state_unavailable", message, &req.request_id()).header("retry-after", "1"));
            }
        };
        let headers = self.header_lines(&limits, &decisions);
        // With several quotas spent, the request fits again once the last of them has room.
        match decisions.iter().filter(|d| !d.allowed).map(|d| d.retry_after_ms).max() {
            Some(retry_after_ms) => {
                let retry_after = retry_after_ms.div_ceil(1000).max(1);
                let message = format!("quota exceeded: try again in {retry_after} s");
                let mut response = ResponseInit::error(429, "quota_exceeded", &message, &req.request_id())
                    .header("retry-after", retry_after.to_string());
                for (name, value) in headers {
                    response = response.header(name, value);
                }
                Action::Respond(response)
            }
            None => {
                // Made by the gateway on the response, without an `on-response` call.
                for (name, value) in &headers {
                    req.edit_response(ResponseEdit::Set(name, value.as_bytes()));
                }
                Action::Continue
            }
        }
    }
}

impl QuotaPlugin {
    /// The consumer's plan (its group, `None` for the defaults) and its limits: the first plan
    /// one of its groups names, else the defaults.
    fn limits_for(&self, groups: Option<&str>) -> (Option<&str>, Vec<u64>) {
        let groups: Vec<&str> = groups.unwrap_or("").split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
        self.plans
            .iter()
            .find(|(plan, _)| groups.contains(&plan.as_str()))
            .map(|(plan, limits)| (Some(plan.as_str()), limits.clone()))
            .unwrap_or_else(|| (None, self.quotas.iter().map(|q| q.limit).collect()))
    }

    /// Counts a request against each quota of `plan`, with `limits`, unless one has nothing
    /// left: those after the first are looked at first (a step that takes nothing), so a
    /// consumer whose month is spent does not spend its day on refused retries (the first
    /// quota's own step takes nothing when it refuses). Then each is counted in order, until one
    /// refuses: only a request racing another for a quota's last unit can find the quotas
    /// before it counted. A refusal's decisions name every quota, for the `RateLimit` field.
    fn check(&self, key: &str, (plan, limits): (Option<&str>, &[u64]), local: bool) -> Result<Vec<Decision>, StateError> {
        // The plan, not its limit, is part of the key: moving to another plan starts a fresh
        // count, and changing a limit in config keeps the period's count (lowered mid-month,
        // a billing quota does not hand everyone a fresh one).
        let step = |q: &Quota, limit: u64, cost: u64| {
            let k = count_key(&q.name, plan, key);
            if local { state::window_local(&k, limit, q.period_ms, cost) } else { state::window(&k, limit, q.period_ms, cost) }
        };
        let quotas = || self.quotas.iter().zip(limits.iter().copied());
        let mut looked = Vec::new();
        for (q, limit) in quotas().skip(1) {
            looked.push(step(q, limit, 0)?);
        }
        if looked.iter().any(|d| d.remaining == 0) {
            let first = self.quotas.first().zip(limits.first()).map(|(q, &limit)| step(q, limit, 0)).transpose()?;
            return Ok(first.into_iter().chain(looked).map(|d| if d.remaining == 0 { spent(d) } else { d }).collect());
        }
        let mut decisions = Vec::with_capacity(self.quotas.len());
        for (i, (q, limit)) in quotas().enumerate() {
            let d = step(q, limit, 1)?;
            let refused = !d.allowed;
            decisions.push(d);
            if refused {
                // The quotas after it, as looked at (nothing taken): named in the refusal too.
                decisions.extend(looked.into_iter().skip(i));
                break;
            }
        }
        Ok(decisions)
    }

    fn header_lines(&self, limits: &[u64], decisions: &[Decision]) -> Vec<(String, String)> {
        if self.headers == Headers::Off {
            return Vec::new();
        }
        let policy: Vec<String> = self
            .quotas
            .iter()
            .zip(limits)
            .take(decisions.len())
            .map(|(q, l)| format!("\"{}\";q={l};w={}", q.name, q.period_ms / 1000))
            .collect();
        let current: Vec<String> = self
            .quotas
            .iter()
            .zip(decisions)
            .map(|(q, d)| format!("\"{}\";r={};t={}", q.name, d.remaining, d.reset_after_ms.div_ceil(1000)))
            .collect();
        vec![("ratelimit-policy".into(), policy.join(", ")), ("ratelimit".into(), current.join(", "))]
    }
}

/// A quota looked at with nothing left, as the refusal its own step would have been: its units
/// come back when its period ends.
fn spent(looked: Decision) -> Decision {
    Decision { allowed: false, retry_after_ms: looked.reset_after_ms.max(1), ..looked }
}

export_plugin!(QuotaPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str) -> QuotaPlugin {
        airlock_sdk::configure::<QuotaPlugin>(json).unwrap()
    }

    fn err(json: &str) -> String {
        airlock_sdk::configure::<QuotaPlugin>(json).unwrap_err()
    }

    #[test]
    fn plans_pick_limits_by_group() {
        let p = ok(r#"{"quotas": {"daily": {"limit": 10, "period": "day"}, "monthly": {"limit": 100, "period": "month"}},
                       "plans": {"gold": {"daily": 50}, "silver": {"monthly": 70}}}"#);
        assert_eq!(p.limits_for(None), (None, vec![10, 100]));
        assert_eq!(p.limits_for(Some("staff, gold")), (Some("gold"), vec![50, 100]));
        assert_eq!(p.limits_for(Some("silver,gold")), (Some("gold"), vec![50, 100]), "the first plan in config order wins");
        assert_eq!(p.limits_for(Some("silver")), (Some("silver"), vec![10, 70]));
        assert_eq!(p.quotas[1].period_ms, 30 * 86_400_000);
    }

    #[test]
    fn a_count_is_keyed_by_plan_not_by_limit() {
        // Changing a limit in config keeps the count; another plan has its own.
        assert_eq!(count_key("daily", None, "c=alice"), "daily::c=alice");
        assert_eq!(count_key("daily", Some("gold"), "c=alice"), "daily:gold:c=alice");
        // A plan's `:` cannot make it read as another plan and a key.
        assert_ne!(count_key("d", Some("a:c=x"), "c=y"), count_key("d", Some("a"), "c=x:c=y"));
        assert_eq!(count_key("d", Some("a:b%"), "ip=1"), "d:a%3Ab%25:ip=1");
    }

    #[test]
    fn config_errors() {
        assert!(err(r#"{"quotas": {}}"#).contains("give 1 to"));
        assert!(err(r#"{"quotas": {"d": {"limit": 1, "period": "year"}}}"#).contains("`quotas.d`: unknown variant"));
        assert!(err(r#"{"quotas": {"d": {"limit": 1, "period": "day"}}, "plans": {"g": {"x": 5}}}"#).contains("no quota named `x`"));
        assert!(err(r#"{"quotas": {"d": {"limit": 0, "period": "day"}}}"#).contains("at least 1"));
        for group in ["a,b", " gold", "gold "] {
            let e = err(&format!(r#"{{"quotas": {{"d": {{"limit": 1, "period": "day"}}}}, "plans": {{"{group}": {{"d": 5}}}}}}"#));
            assert!(e.contains("cannot be a group name"), "{group:?}: {e}");
        }
    }

    #[test]
    fn draft_headers() {
        let p = ok(r#"{"quotas": {"daily": {"limit": 1000, "period": "day"}}}"#);
        let d = Decision { allowed: true, remaining: 998, limit: 1000, reset_after_ms: 86_019_500, retry_after_ms: 0 };
        let h = p.header_lines(&[1000], &[d]);
        assert_eq!(h[0].1, "\"daily\";q=1000;w=86400");
        assert_eq!(h[1].1, "\"daily\";r=998;t=86020");
    }
}
