//! The plugin's config, checked and turned once, at configure, into the [`Settings`] every
//! request reads.

use serde::Deserialize;

/// Largest value the gateway's `state` backends store (`MAX_VALUE_BYTES` in
/// `host/src/state/mod.rs`, memory and Redis alike): one entry, headers and body, is one value.
pub const MAX_STATE_VALUE_BYTES: usize = 64 * 1024;

/// Most `vary_headers`: each is a header read on every request.
const MAX_VARY_HEADERS: usize = 16;

/// The chain entry's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Methods whose responses are cached: `GET` and `HEAD` (a `HEAD` is answered from the `GET`'s entry).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Statuses that are stored.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
    /// Lifetime of an entry when the response's `Cache-Control` gives none, in milliseconds.
    #[serde(default = "default_ttl_ms")]
    pub ttl_ms: u64,
    /// Follow `Cache-Control` (and `Vary`) of requests and responses.
    #[serde(default = "yes")]
    pub respect_cache_control: bool,
    /// Request headers whose values are part of the key.
    #[serde(default)]
    pub vary_headers: Vec<String>,
    /// The consumer an auth plugin named, and the credential one let the request on with when it
    /// named none (`airlock_sdk::consumer::CREDENTIAL`), are part of the key.
    #[serde(default = "yes")]
    pub vary_consumer: bool,
    /// Largest body stored, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}

fn default_statuses() -> Vec<u16> {
    vec![200, 301, 404]
}

fn default_ttl_ms() -> u64 {
    30_000
}

fn default_max_body_bytes() -> usize {
    MAX_STATE_VALUE_BYTES
}

fn yes() -> bool {
    true
}

/// What the phases read: the config, checked, with names lower-cased and flags precomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `GET` responses are looked up and stored.
    pub get: bool,
    /// `HEAD` requests are answered from `GET` entries.
    pub head: bool,
    /// Statuses stored, sorted.
    pub statuses: Vec<u16>,
    /// Default lifetime in milliseconds (at least 1).
    pub ttl_ms: u64,
    /// Follow `Cache-Control` and `Vary`.
    pub respect_cache_control: bool,
    /// Varied request headers, lower-case, each once, in the order written.
    pub vary_headers: Vec<String>,
    /// `authorization` is among `vary_headers`: every credential has its own entries.
    pub vary_authorization: bool,
    /// The consumer is part of the key.
    pub vary_consumer: bool,
    /// Largest body stored.
    pub max_body_bytes: usize,
}

/// Which of the configured methods a request's method is, for the key: `HEAD` shares `GET`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodClass {
    /// A `GET`: looked up, and stored on a miss.
    Get,
    /// A `HEAD`: looked up in `GET` entries; a miss is not stored (it has no body).
    Head,
}

impl Settings {
    /// Checks the config. Errors name the key, as the gateway shows them beside the route.
    pub fn from_config(c: Config) -> Result<Self, String> {
        let (mut get, mut head) = (false, false);
        for m in &c.methods {
            match m.to_ascii_uppercase().as_str() {
                "GET" => get = true,
                "HEAD" => head = true,
                _ => {
                    return Err(format!(
                        "`methods`: `{m}` responses are not cached: only GET and HEAD are (another method's answer depends on its body, or changes something)"
                    ));
                }
            }
        }
        if !get {
            return Err("`methods`: list `GET` (a `HEAD` is answered from the entry a `GET` stored)".into());
        }
        if c.statuses.is_empty() {
            return Err("`statuses`: give at least one status to store".into());
        }
        let mut statuses = c.statuses;
        for &s in &statuses {
            match s {
                206 => return Err("`statuses`: 206 cannot be stored: a partial answer fits only the `Range` that asked for it".into()),
                304 => return Err("`statuses`: 304 cannot be stored: it answers one client's conditional request".into()),
                200..=599 => {}
                _ => return Err(format!("`statuses`: {s} is not a final status (200-599)")),
            }
        }
        statuses.sort_unstable();
        statuses.dedup();
        if c.ttl_ms == 0 {
            return Err("`ttl_ms` must be at least 1".into());
        }
        if c.max_body_bytes > MAX_STATE_VALUE_BYTES {
            return Err(format!(
                "`max_body_bytes` is {}, more than the state backend stores in one value ({MAX_STATE_VALUE_BYTES} bytes, headers and body together): use at most {MAX_STATE_VALUE_BYTES}",
                c.max_body_bytes
            ));
        }
        if c.vary_headers.len() > MAX_VARY_HEADERS {
            return Err(format!("`vary_headers`: at most {MAX_VARY_HEADERS}"));
        }
        let mut vary_headers: Vec<String> = Vec::with_capacity(c.vary_headers.len());
        for (i, h) in c.vary_headers.iter().enumerate() {
            let h = airlock_sdk::header_rules::header_name(h).map_err(|e| format!("`vary_headers[{i}]`: {e}"))?;
            if !vary_headers.contains(&h) {
                vary_headers.push(h);
            }
        }
        let vary_authorization = vary_headers.iter().any(|h| h == "authorization");
        Ok(Settings {
            get,
            head,
            statuses,
            ttl_ms: c.ttl_ms,
            respect_cache_control: c.respect_cache_control,
            vary_headers,
            vary_authorization,
            vary_consumer: c.vary_consumer,
            max_body_bytes: c.max_body_bytes,
        })
    }

    /// The class of a request's method, if its responses are cached here.
    pub fn method_class(&self, method: &str) -> Option<MethodClass> {
        match method {
            "GET" if self.get => Some(MethodClass::Get),
            "HEAD" if self.head => Some(MethodClass::Head),
            _ => None,
        }
    }

    /// Whether responses with `status` are stored.
    pub fn stores_status(&self, status: u16) -> bool {
        self.statuses.binary_search(&status).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Result<Settings, String> {
        let config: Config = airlock_sdk::serde_json::from_str(json).map_err(|e| e.to_string())?;
        Settings::from_config(config)
    }

    #[test]
    fn defaults() {
        let s = settings("{}").unwrap();
        assert_eq!(
            s,
            Settings {
                get: true,
                head: true,
                statuses: vec![200, 301, 404],
                ttl_ms: 30_000,
                respect_cache_control: true,
                vary_headers: vec![],
                vary_authorization: false,
                vary_consumer: true,
                max_body_bytes: 65_536,
            }
        );
        assert_eq!(s.method_class("HEAD"), Some(MethodClass::Head));
        assert_eq!(s.method_class("POST"), None);
        assert!(s.stores_status(404) && !s.stores_status(500));
    }

    #[test]
    fn bad_configs_name_their_key() {
        let err = |json: &str| settings(json).unwrap_err();
        assert!(err(r#"{"methods": ["GET", "POST"]}"#).starts_with("`methods`: `POST`"));
        assert!(err(r#"{"methods": ["HEAD"]}"#).contains("list `GET`"));
        assert!(err(r#"{"statuses": []}"#).starts_with("`statuses`"));
        assert!(err(r#"{"statuses": [200, 206]}"#).contains("206"));
        assert!(err(r#"{"statuses": [304]}"#).contains("304"));
        assert!(err(r#"{"statuses": [199]}"#).contains("not a final status"));
        assert!(err(r#"{"ttl_ms": 0}"#).starts_with("`ttl_ms`"));
        assert!(err(r#"{"max_body_bytes": 65537}"#).contains("use at most 65536"), "{}", err(r#"{"max_body_bytes": 65537}"#));
        assert!(err(r#"{"vary_headers": ["x ok"]}"#).starts_with("`vary_headers[0]`"));
        assert!(err(r#"{"vary_headers": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}"#).contains("at most 16"));
    }

    #[test]
    fn names_are_normalized() {
        let s = settings(r#"{"methods": ["get"], "statuses": [404, 200, 200], "vary_headers": ["Accept-Language", "accept-language", "Authorization"]}"#).unwrap();
        assert!(s.get && !s.head);
        assert_eq!(s.statuses, [200, 404]);
        assert_eq!(s.vary_headers, ["accept-language", "authorization"]);
        assert!(s.vary_authorization);
    }

    /// The bound above is the host's: if the host's changes, this fails and says where.
    #[test]
    fn the_value_bound_is_the_hosts() {
        let host = include_str!("../../../host/src/state/mod.rs");
        assert!(
            host.contains("pub const MAX_VALUE_BYTES: usize = 64 * 1024;"),
            "host/src/state/mod.rs changed MAX_VALUE_BYTES: update MAX_STATE_VALUE_BYTES and the docs"
        );
    }
}
