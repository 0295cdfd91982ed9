//! `builtin:acl`: allows or denies the authenticated consumer by id or group.
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:key-auth"            # or any plugin that sets the `consumer` context
//! [[routes.plugins]]
//! plugin = "builtin:acl"
//! [routes.plugins.config]
//! allow = ["alice", "group:admin"]       # consumer ids, or `group:<name>`
//! deny = ["group:suspended"]             # checked first: a match is refused
//! # no_consumer_status = 403              # 401 or 403 when no consumer is set (default 403)
//! # www_authenticate = 'Key realm="api"'  # with 401: its challenge, as the route's auth plugin sends it
//! ```
//!
//! Reads the request context an authentication plugin earlier in the chain set: `consumer` (the
//! id) and `consumer.groups` (comma-separated). A consumer matching any `deny` entry is refused;
//! then, if `allow` is not empty, a consumer matching no `allow` entry is refused. At least one
//! of the two lists must be given. Refusals are `403` with
//! `{"status":403,"error":"forbidden","message":"access denied","request_id":...}`, which does not say which rule matched.
//!
//! With no consumer in the context (no authentication plugin before this one, or one that let the
//! request through unauthenticated) the answer is `no_consumer_status`: 403 by default, since the
//! route is misconfigured or open rather than asking for credentials; 401 if the operator wants
//! clients told to authenticate, with `www_authenticate` the challenge every 401 must carry (RFC
//! 9110 15.5.2): the one the route's authentication plugin sends (key-auth's
//! `Key realm="airlock"`, jwt's `Bearer realm="airlock"`, basic-auth's `Basic realm="airlock",
//! charset="UTF-8"`). An anonymous consumer (see `key-auth`'s `anonymous`) is an
//! ordinary consumer here: list its id or groups as for any other.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[cfg(target_arch = "wasm32")]
use airlock_sdk::export_plugin;
use airlock_sdk::{Action, Descriptor, Plugin, Request};
use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default = "default_no_consumer_status")]
    no_consumer_status: u16,
    /// The `WWW-Authenticate` challenge of a 401 (required with `no_consumer_status = 401`).
    #[serde(default)]
    www_authenticate: Option<String>,
    /// Filled in by the gateway for built-in plugins; the ACL does not need it.
    #[serde(default)]
    #[allow(dead_code)]
    consumers: serde_json::Value,
}

fn default_no_consumer_status() -> u16 {
    403
}

/// One `allow` or `deny` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Consumer(String),
    Group(String),
}

/// The consumer ids and group names of one list, each sorted: a consumer is looked up by
/// binary search (and each of its groups likewise), so a list of thousands of consumers costs a
/// request a few comparisons.
#[derive(Debug, Default)]
struct RuleSet {
    consumers: Vec<String>,
    groups: Vec<String>,
}

impl RuleSet {
    fn new(rules: Vec<Rule>) -> Self {
        let mut set = Self::default();
        for rule in rules {
            match rule {
                Rule::Consumer(id) => set.consumers.push(id),
                Rule::Group(group) => set.groups.push(group),
            }
        }
        set.consumers.sort_unstable();
        set.groups.sort_unstable();
        set
    }

    fn is_empty(&self) -> bool {
        self.consumers.is_empty() && self.groups.is_empty()
    }

    /// Whether an entry names `consumer` or one of its `groups` (whole names).
    fn matches(&self, consumer: &str, groups: &[&str]) -> bool {
        let has = |list: &[String], name: &str| list.binary_search_by(|entry| entry.as_str().cmp(name)).is_ok();
        has(&self.consumers, consumer) || groups.iter().any(|group| has(&self.groups, group))
    }
}

/// The configured plugin.
struct Acl {
    allow: RuleSet,
    deny: RuleSet,
    /// The challenge when a request without a consumer is answered 401; `None`: 403.
    challenge: Option<String>,
}

impl Plugin for Acl {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.allow.is_empty() && config.deny.is_empty() {
            return Err("give `allow` or `deny` (or both): consumer ids or `group:<name>`".into());
        }
        let challenge = match (config.no_consumer_status, config.www_authenticate) {
            (401, Some(challenge)) if airlock_sdk::consumer::valid_challenge(&challenge) => Some(challenge),
            (401, Some(_)) => return Err("`www_authenticate`: a challenge is one line of printable ASCII, e.g. 'Bearer realm=\"api\"'".into()),
            (401, None) => {
                return Err("`no_consumer_status = 401` needs `www_authenticate`: the challenge a 401 must carry (RFC 9110 15.5.2), the one the route's auth plugin sends, e.g. 'Bearer realm=\"airlock\"'".into());
            }
            (403, None) => None,
            (403, Some(_)) => return Err("`www_authenticate` goes with `no_consumer_status = 401`; a 403 carries no challenge".into()),
            (other, _) => return Err(format!("`no_consumer_status`: {other} is not 401 or 403")),
        };
        Ok(Self { allow: RuleSet::new(rules(&config.allow, "allow")?), deny: RuleSet::new(rules(&config.deny, "deny")?), challenge })
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        let Some(consumer) = req.context_get("consumer").filter(|c| !c.is_empty()) else {
            return match &self.challenge {
                Some(challenge) => airlock_sdk::consumer::unauthorized(req, "www-authenticate", challenge, "authentication required"),
                None => forbidden(req),
            };
        };
        let groups = req.context_get("consumer.groups").unwrap_or_default();
        if self.decide(&consumer, &groups) { Action::Continue } else { forbidden(req) }
    }
}

impl Acl {
    /// Whether `consumer` with these comma-separated `groups` may pass.
    fn decide(&self, consumer: &str, groups: &str) -> bool {
        let groups: Vec<&str> = groups.split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
        if self.deny.matches(consumer, &groups) {
            return false;
        }
        self.allow.is_empty() || self.allow.matches(consumer, &groups)
    }
}

/// The 403 for a caller the rules keep out, in the gateway's error shape.
fn forbidden(req: &Request) -> Action {
    Action::error(403, "forbidden", "access denied", &req.request_id())
}

fn rules(entries: &[String], key: &str) -> Result<Vec<Rule>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let rule = match entry.strip_prefix("group:") {
                Some(group) => Rule::Group(group.trim().to_owned()),
                None => Rule::Consumer(entry.trim().to_owned()),
            };
            match &rule {
                Rule::Consumer(s) | Rule::Group(s) if s.is_empty() => {
                    Err(format!("`{key}[{i}]`: empty; use a consumer id or `group:<name>`"))
                }
                Rule::Group(g) if g.contains(',') => Err(format!("`{key}[{i}]`: a group name cannot contain `,`")),
                _ => Ok(rule),
            }
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
export_plugin!(Acl);

#[cfg(test)]
mod tests {
    use super::*;

    fn build(json: &str) -> Result<Acl, String> {
        airlock_sdk::configure::<Acl>(json)
    }

    #[test]
    fn deny_wins_then_allow_decides() {
        let acl = build(r#"{"allow": ["alice", "group:admin"], "deny": ["group:banned", "mallory"]}"#).unwrap();
        assert!(acl.decide("alice", ""));
        assert!(acl.decide("carol", "x, admin"));
        assert!(!acl.decide("carol", "administrators"), "groups match whole names");
        assert!(!acl.decide("alice", "banned"));
        assert!(!acl.decide("mallory", "admin"));
        assert!(!acl.decide("bob", ""));
        let deny_only = build(r#"{"deny": ["group:banned"], "consumers": []}"#).unwrap();
        assert!(deny_only.decide("bob", ""));
        assert!(!deny_only.decide("bob", "banned"));
    }

    /// Lists of thousands of consumers and groups, given in no order: each entry is found.
    #[test]
    fn long_lists_find_every_entry() {
        let allow: Vec<String> = (0..2000).map(|i| (i * 7919) % 2000).map(|n| if n % 4 == 0 { format!("group:g{n}") } else { format!("c{n}") }).collect();
        let deny: Vec<String> = (0..1000).map(|n| format!("c{}", n * 4 + 1)).collect();
        let acl = build(&serde_json::json!({"allow": allow, "deny": deny}).to_string()).unwrap();
        assert!(acl.decide("c2", "") && acl.decide("c1999", "") && acl.decide("c3", "x"));
        assert!(!acl.decide("c1", "") && !acl.decide("c1997", "g0"), "denied consumers, whatever their groups");
        assert!(acl.decide("nobody", "x, g1996") && acl.decide("nobody", "g0"));
        assert!(!acl.decide("nobody", "g1") && !acl.decide("c0", "") && !acl.decide("c2000", ""), "not in the list");
    }

    #[test]
    fn config_errors_name_the_key() {
        assert!(build("{}").err().unwrap().contains("`allow` or `deny`"));
        assert_eq!(
            build(r#"{"allow": ["a", "group:"]}"#).err().unwrap(),
            "`allow[1]`: empty; use a consumer id or `group:<name>`"
        );
        assert_eq!(
            build(r#"{"deny": ["x"], "no_consumer_status": 404}"#).err().unwrap(),
            "`no_consumer_status`: 404 is not 401 or 403"
        );
        assert!(build(r#"{"allow": "a"}"#).err().unwrap().starts_with("`allow`: invalid type"));
        // A 401 carries its challenge (RFC 9110 15.5.2); a 403 none.
        assert!(build(r#"{"deny": ["x"], "no_consumer_status": 401}"#).err().unwrap().contains("needs `www_authenticate`"));
        assert!(build(r#"{"deny": ["x"], "no_consumer_status": 401, "www_authenticate": "Key\nx"}"#).err().unwrap().contains("one line"));
        assert!(build(r#"{"deny": ["x"], "www_authenticate": "Key realm=\"a\""}"#).err().unwrap().contains("goes with"));
        assert!(build(r#"{"deny": ["x"], "no_consumer_status": 401, "www_authenticate": "Key realm=\"a\""}"#).is_ok());
    }
}
