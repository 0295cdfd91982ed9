//! `builtin:proxy-cache`: answers repeated `GET` and `HEAD` requests from stored upstream
//! responses (Kong's proxy-cache, nginx's `proxy_cache`), kept in the gateway's `state` backend:
//! this gateway's memory, or Redis, where every gateway sharing it serves every entry.
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:proxy-cache"
//! [routes.plugins.config]               # every key is optional
//! methods = ["GET", "HEAD"]             # GET is required; a HEAD is answered from the GET's entry
//! statuses = [200, 301, 404]            # statuses stored (206 and 304 never are)
//! ttl_ms = 30000                        # lifetime without s-maxage / max-age / Expires
//! respect_cache_control = true          # follow Cache-Control and Vary (see below)
//! vary_headers = ["accept-language"]    # request headers whose values are part of the key
//! vary_consumer = true                  # the consumer (or credential) an auth plugin named is part of the key
//! max_body_bytes = 65536                # larger bodies are not stored (at most 65536)
//! ```
//!
//! Per request (see [`ProxyCache::on_request`]): a hit costs one state `get` and answers from it
//! without calling the upstream (`X-Cache-Status: Hit`, `Age`); a miss costs the `get` and, if
//! the response may be stored, one `set` in the response phase (`X-Cache-Status: Miss`); a
//! request the cache may not answer costs nothing (`X-Cache-Status: Bypass`): another method,
//! a `GET` or `HEAD` with a body (the body is not part of the key; `Request::has_body` tells,
//! without buffering it), a client's `no-cache`, `If-Match`. If the backend
//! fails, the request goes on uncached (`Bypass`), logged. A client that holds the answer
//! (`If-None-Match`, `If-Modified-Since`) gets a `304` from a hit, and from a miss, whose
//! upstream request goes without those conditions so that a whole answer can be stored
//! ([`conditional`]).
//!
//! The phases: answering in the request phase skips the later plugins and the upstream, while
//! the response phases of this plugin and the ones before it still run (so a hit goes through
//! them; this plugin's own does nothing for a hit). A miss hands the key to the response phase
//! through the request context ([`CONTEXT_KEY`]): the response phase stores what reaches it,
//! which is the upstream's answer as the plugins after this one in the chain left it. Put the
//! cache after authentication, rate limiting and CORS, which must run on hits too.
//!
//! The response body is read only because storing needs it, and only what may be stored: a miss
//! narrows the plugin's need to `max_body_bytes` (`Request::limit_response_body`), every other
//! request to nothing, so a longer answer, and any answer the cache will not store, streams
//! through unbuffered (a download on a cached route is not held to the route's `max_body_bytes`).
//! The modules: [`config`] (checked once at configure), [`key`],
//! [`cache_control`], [`entry`] (the stored format, versioned); backend failures are warned at most
//! every 10 s per instance (`airlock_sdk::log::Throttled`).

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod cache_control;
pub mod conditional;
pub mod config;
pub mod entry;
pub mod key;

use airlock_sdk::state::{self, StateError};
use airlock_sdk::{Action, Descriptor, Plugin, Request, Response, ResponseBodies, ResponseEdit, ResponseInit, consumer, export_plugin, log};

use cache_control::Directives;
use conditional::{Conditions, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use config::{Config, MAX_STATE_VALUE_BYTES, MethodClass, Settings};
use entry::Entry;
use key::KeyBuilder;

/// The request context key under which a miss hands its cache key to the response phase.
pub const CONTEXT_KEY: &str = "proxy-cache.key";

/// The request context key counting the later proxy-caches in the chain that stood aside for
/// an earlier one's miss: their response phases, which run first, take one each and do
/// nothing, so only the cache that missed stores and answers the client's conditions.
pub const CONTEXT_ASIDE: &str = "proxy-cache.aside";

/// The request context keys under which a miss hands the client's conditions (taken off the
/// upstream request) to the response phase.
const CONTEXT_IF_NONE_MATCH: &str = "proxy-cache.if-none-match";
/// See [`CONTEXT_IF_NONE_MATCH`].
const CONTEXT_IF_MODIFIED_SINCE: &str = "proxy-cache.if-modified-since";

/// Most status ranges a gateway takes in `declare-response-bodies`.
const MAX_STATUS_RANGES: usize = 64;

/// `statuses` (sorted) as ranges of adjacent ones: `[200, 203, 204, 404]` is `200..=200`,
/// `203..=204`, `404..=404`.
fn status_ranges(statuses: &[u16]) -> Vec<std::ops::RangeInclusive<u16>> {
    let mut ranges: Vec<std::ops::RangeInclusive<u16>> = Vec::new();
    for &status in statuses {
        match ranges.last_mut() {
            Some(last) if *last.end() + 1 >= status => *last = *last.start()..=status.max(*last.end()),
            _ => ranges.push(status..=status),
        }
    }
    ranges
}

/// The header telling the client how the cache handled its request.
const STATUS_HEADER: &str = "x-cache-status";

/// Response headers never stored: the connection's own (hop-by-hop, RFC 9110 7.6.1), the
/// framing the gateway sets for each answer, what this plugin writes per answer, and the
/// forwarding path (`via`, the gateway's own included): a hit is the gateway's answer.
const NOT_STORED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
    "age",
    STATUS_HEADER,
    "x-request-id",
    "via",
];

/// The configured plugin.
#[derive(Debug)]
pub struct ProxyCache {
    settings: Settings,
    /// Backend/auth-service failures, warned at most every 10 s per instance.
    outage: log::Throttled,
}

impl Plugin for ProxyCache {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Self { settings: Settings::from_config(config)?, outage: log::Throttled::new(10_000) })
    }

    /// Both phases; the response body, which is what is stored.
    fn descriptor() -> Descriptor {
        Descriptor::new().with_response_body()
    }

    /// Only the statuses stored: another answer (a 500, a redirect) is never buffered. Runs of
    /// adjacent statuses go as one range; past what a gateway takes (64), every answer is read.
    fn response_bodies(&self) -> Option<ResponseBodies> {
        let statuses = status_ranges(&self.settings.statuses);
        (statuses.len() <= MAX_STATUS_RANGES).then_some(ResponseBodies { statuses, media_types: Vec::new() })
    }

    /// Looks the request up: a hit answers, a miss goes on (marked for the response phase to
    /// store), anything the cache may not answer goes on marked `Bypass`.
    fn on_request(&self, req: &Request) -> Action {
        let Some(class) = self.settings.method_class(&req.method()) else {
            return bypass(req);
        };
        // The body is not part of the key: a GET that sends one (Elasticsearch's `_search`)
        // may be answered by it, and must neither be served another's answer nor store its own.
        if req.has_body() {
            return bypass(req);
        }
        if self.settings.respect_cache_control {
            let lines = req.header_all("cache-control");
            if !lines.is_empty() && Directives::parse(lines.iter().map(Vec::as_slice)).bypasses_cache() {
                return bypass(req);
            }
        }
        // Conditions that guard a change (`If-Match`, `If-Unmodified-Since`) are the upstream's
        // to evaluate: answering them from a stored answer could skip a 412.
        if conditional::NOT_EVALUATED.iter().any(|name| req.header(name).is_some()) {
            return bypass(req);
        }
        // An earlier proxy-cache in this chain handles the request: this one stands aside
        // rather than have both store under one context key.
        if req.context_get(CONTEXT_KEY).is_some() {
            req.limit_response_body(0);
            req.context_set(CONTEXT_ASIDE, &(aside(req) + 1).to_string());
            return Action::Continue;
        }
        // A credential the key does not tell apart (checked upstream, say) must not have its
        // answers served to anyone else (RFC 9111 3.5, Kong's `cache_control` rule). With an
        // auth plugin's consumer in the key, an `Authorization` still there is in it too: it
        // may be another credential than the one that named the consumer (an end user's token
        // the upstream checks, beside the app's API key), whose answers are that user's.
        let authorization = req.header_all("authorization");
        if !authorization.is_empty()
            && !self.settings.vary_authorization
            && !(self.settings.vary_consumer && (req.authenticated_before() || req.context_get(consumer::CREDENTIAL).is_some()))
        {
            return bypass(req);
        }
        let key = self.key(req, &authorization);
        match state::get(&key) {
            Ok(Some(bytes)) => match Entry::decode(&bytes) {
                Ok(entry) => return Action::Respond(hit(entry, now_ms(), client_conditions(req).as_ref())),
                // Another format, or damaged: a miss, overwritten by this request's answer.
                Err(e) => log::debug(format!("cache entry not used: {e}")),
            },
            Ok(None) => {}
            Err(e) => {
                self.state_failed("look up", &e);
                return bypass(req);
            }
        }
        if class == MethodClass::Get {
            req.context_set(CONTEXT_KEY, &key);
            req.limit_response_body(self.settings.max_body_bytes as u64);
            // A 304 from the upstream could not fill the cache: it sends the whole answer, which
            // is checked against the client's conditions on the way back.
            if let Some(conditions) = client_conditions(req) {
                req.remove_header(IF_NONE_MATCH);
                req.remove_header(IF_MODIFIED_SINCE);
                if let Some(v) = &conditions.if_none_match {
                    req.context_set(CONTEXT_IF_NONE_MATCH, v);
                }
                if let Some(v) = &conditions.if_modified_since {
                    req.context_set(CONTEXT_IF_MODIFIED_SINCE, v);
                }
            }
        } else {
            req.limit_response_body(0);
        }
        req.edit_response(ResponseEdit::Set(STATUS_HEADER, b"Miss"));
        Action::Continue
    }

    /// Stores a missed `GET`'s response, if it may be stored, then answers the client's
    /// conditions the upstream did not see: a `200` they match leaves as a `304`. Does nothing
    /// for hits and bypasses.
    fn on_response(&self, req: &Request, resp: &Response) {
        let Some(key) = req.context_get(CONTEXT_KEY) else { return };
        // A later cache that stood aside (its response phase runs before the earlier one's).
        match aside(req) {
            0 => {}
            1 => return req.context_remove(CONTEXT_ASIDE),
            more => return req.context_set(CONTEXT_ASIDE, &(more - 1).to_string()),
        }
        match self.storable(resp) {
            Ok((bytes, ttl_ms)) => {
                if let Err(e) = state::set(&key, &bytes, ttl_ms) {
                    self.state_failed("store", &e);
                }
            }
            Err(why) => log::debug(format!("response not stored: {why}")),
        }
        let conditions = Conditions {
            if_none_match: req.context_get(CONTEXT_IF_NONE_MATCH),
            if_modified_since: req.context_get(CONTEXT_IF_MODIFIED_SINCE),
        };
        if !conditions.is_empty()
            && conditions.not_modified(resp.status(), resp.header("etag").as_deref(), resp.header("last-modified").as_deref())
        {
            resp.set_status(304);
            for name in conditional::NOT_IN_304 {
                resp.remove_header(name);
            }
        }
    }
}

/// How many later caches in the chain stood aside for this request ([`CONTEXT_ASIDE`]).
fn aside(req: &Request) -> u32 {
    req.context_get(CONTEXT_ASIDE).and_then(|n| n.parse().ok()).unwrap_or(0)
}

impl ProxyCache {
    /// The request's cache key: route, scheme, host, method class (`HEAD` is `GET`), path, query
    /// (parameters in a normalized order), each `vary_headers` header's values, and the consumer
    /// and the credential an auth plugin let the request on with, and the request's
    /// `authorization` lines if it still has any (with `vary_consumer`).
    fn key(&self, req: &Request, authorization: &[Vec<u8>]) -> String {
        let mut k = KeyBuilder::new();
        k.part(req.route_id().as_bytes())
            .part(req.scheme().as_bytes())
            .optional(req.header("host").as_deref())
            .part(b"GET")
            .part(req.path().as_bytes())
            .query(req.query().as_deref());
        for name in &self.settings.vary_headers {
            k.part(name.as_bytes()).values(&req.header_all(name));
        }
        if self.settings.vary_consumer {
            k.optional(req.context_get("consumer").as_deref().map(str::as_bytes));
            k.optional(req.context_get(consumer::CREDENTIAL).as_deref().map(str::as_bytes));
            // Keys of requests without one are as they were.
            if !authorization.is_empty() && !self.settings.vary_authorization {
                k.part(b"authorization").values(authorization);
            }
        }
        k.finish()
    }

    /// The entry for a response and its lifetime, or why it is not stored.
    fn storable(&self, resp: &Response) -> Result<(Vec<u8>, u64), String> {
        let s = &self.settings;
        let status = resp.status();
        if !s.stores_status(status) {
            return Err(format!("status {status} is not in `statuses`"));
        }
        if resp.header("set-cookie").is_some() {
            return Err("it sets a cookie".into());
        }
        let age_secs = cache_control::age_seconds(resp.header("age").as_deref());
        let ttl_ms = if s.respect_cache_control {
            let vary = resp.header_all("vary");
            cache_control::vary_allows(vary.iter().map(Vec::as_slice), &s.vary_headers)?;
            let lines = resp.header_all("cache-control");
            let expires = cache_control::expires_lifetime(&resp.header_all("expires"), resp.header("date").as_deref(), std::time::SystemTime::now());
            Directives::parse(lines.iter().map(Vec::as_slice)).ttl_ms(s.ttl_ms, age_secs, expires)?
        } else {
            s.ttl_ms
        };
        if !resp.trailer_names().is_empty() {
            return Err("it has trailers".into());
        }
        // A declared length says "too large" without copying the body into the plugin (a
        // decoded or chunked body declares none, and is copied to be measured).
        if let Some(len) = resp.header("content-length").as_deref().and_then(declared_len)
            && len > s.max_body_bytes as u64
        {
            return Err(format!("its body ({len} bytes) is larger than `max_body_bytes` ({})", s.max_body_bytes));
        }
        // Not handed over: longer than the limit this request asked for (or not decodable).
        let body = resp.body().ok_or_else(|| format!("its body is larger than `max_body_bytes` ({})", s.max_body_bytes))?;
        if body.len() > s.max_body_bytes {
            return Err(format!("its body ({} bytes) is larger than `max_body_bytes` ({})", body.len(), s.max_body_bytes));
        }
        let mut headers = Vec::new();
        for name in resp.header_names() {
            if NOT_STORED.contains(&name.as_str()) {
                continue;
            }
            for value in resp.header_all(&name) {
                headers.push((name.clone(), value));
            }
        }
        let entry = Entry { status, stored_at_ms: now_ms(), age_secs: u32::try_from(age_secs).unwrap_or(u32::MAX), headers, body };
        match entry.encode() {
            Some(bytes) if bytes.len() <= MAX_STATE_VALUE_BYTES => Ok((bytes, ttl_ms)),
            _ => Err(format!("headers and body together are larger than one state value ({MAX_STATE_VALUE_BYTES} bytes)")),
        }
    }

    /// Fails open: the request goes on uncached. A warning at most every few seconds per
    /// instance (an outage would otherwise log one per request), debug lines otherwise.
    fn state_failed(&self, what: &str, e: &StateError) {
        let message = format!("cache {what} failed, serving uncached: {e}");
        self.outage.warn(message);
    }
}

/// The answer for a hit: the stored status, headers and body, its `Age`, and `X-Cache-Status:
/// Hit`; a `304` with the stored headers that do not describe the body when the client's
/// conditions say it holds the stored answer.
fn hit(entry: Entry, now_ms: u64, conditions: Option<&Conditions>) -> ResponseInit {
    let age = entry.age_at(now_ms);
    let stored = |name: &str| entry.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice());
    let not_modified = conditions.is_some_and(|c| c.not_modified(entry.status, stored("etag"), stored("last-modified")));
    let mut init = ResponseInit::new(if not_modified { 304 } else { entry.status });
    init.headers = entry.headers;
    if not_modified {
        init.headers.retain(|(name, _)| !conditional::NOT_IN_304.contains(&name.as_str()));
    } else {
        init.body = entry.body;
    }
    init.headers.push(("age".into(), age.to_string().into_bytes()));
    init.headers.push((STATUS_HEADER.into(), b"Hit".to_vec()));
    init
}

/// The client's `If-None-Match` / `If-Modified-Since`, if it sent any as text.
fn client_conditions(req: &Request) -> Option<Conditions> {
    let if_none_match = req.header_all(IF_NONE_MATCH);
    let if_modified_since = req.header(IF_MODIFIED_SINCE);
    if if_none_match.is_empty() && if_modified_since.is_none() {
        return None;
    }
    Conditions::from_lines(&if_none_match, if_modified_since.as_deref())
}

/// A `Content-Length` value, if it is one number.
fn declared_len(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Goes on without the cache, saying so; the response body streams.
fn bypass(req: &Request) -> Action {
    req.limit_response_body(0);
    req.edit_response(ResponseEdit::Set(STATUS_HEADER, b"Bypass"));
    Action::Continue
}

/// The wall clock in milliseconds since the Unix epoch (0 if it reads before it).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

export_plugin!(ProxyCache);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_statuses_go_as_one_range() {
        assert_eq!(status_ranges(&[200, 203, 204, 300, 301, 404]), [200..=200, 203..=204, 300..=301, 404..=404]);
        assert_eq!(status_ranges(&[]), Vec::<std::ops::RangeInclusive<u16>>::new());
        let every: Vec<u16> = (100..600).collect();
        assert_eq!(status_ranges(&every), [100..=599]);
        let odd: Vec<u16> = (100..600).step_by(2).collect();
        assert_eq!(status_ranges(&odd).len(), 250, "past what a gateway takes: every answer read");
    }

    #[test]
    fn configure_checks_the_config() {
        assert!(airlock_sdk::configure::<ProxyCache>("{}").is_ok());
        let err = airlock_sdk::configure::<ProxyCache>(r#"{"max_body_bytes": 100000}"#).unwrap_err();
        assert!(err.starts_with("`max_body_bytes`"), "{err}");
        let err = airlock_sdk::configure::<ProxyCache>(r#"{"ttl": 5}"#).unwrap_err();
        assert!(err.contains("unknown field `ttl`"), "{err}");
    }

    #[test]
    fn a_hit_carries_the_entry_its_age_and_status() {
        let entry = Entry {
            status: 404,
            stored_at_ms: 10_000,
            age_secs: 1,
            headers: vec![("content-type".into(), b"text/plain".to_vec())],
            body: b"gone".to_vec(),
        };
        let init = hit(entry, 13_500, None);
        assert_eq!(init.status, 404);
        assert_eq!(init.body, b"gone");
        assert_eq!(
            init.headers,
            [
                ("content-type".to_owned(), b"text/plain".to_vec()),
                ("age".to_owned(), b"4".to_vec()),
                ("x-cache-status".to_owned(), b"Hit".to_vec())
            ]
        );
    }

    #[test]
    fn a_hit_the_client_holds_is_a_304_without_the_body_and_its_description() {
        let entry = Entry {
            status: 200,
            stored_at_ms: 10_000,
            age_secs: 0,
            headers: vec![
                ("content-type".into(), b"text/plain".to_vec()),
                ("etag".into(), b"\"v1\"".to_vec()),
                ("cache-control".into(), b"max-age=60".to_vec()),
            ],
            body: b"hello".to_vec(),
        };
        let held = Conditions { if_none_match: Some("W/\"v1\"".into()), if_modified_since: None };
        let init = hit(entry.clone(), 12_000, Some(&held));
        assert_eq!(init.status, 304);
        assert!(init.body.is_empty());
        assert_eq!(
            init.headers,
            [
                ("etag".to_owned(), b"\"v1\"".to_vec()),
                ("cache-control".to_owned(), b"max-age=60".to_vec()),
                ("age".to_owned(), b"2".to_vec()),
                ("x-cache-status".to_owned(), b"Hit".to_vec())
            ]
        );
        let other = Conditions { if_none_match: Some("\"v0\"".into()), if_modified_since: None };
        let init = hit(entry, 12_000, Some(&other));
        assert_eq!((init.status, init.body.as_slice()), (200, b"hello".as_slice()));
    }

    #[test]
    fn declared_lengths_are_read_strictly() {
        assert_eq!(declared_len(b"1001"), Some(1001));
        assert_eq!(declared_len(b" 7 "), Some(7));
        assert_eq!(declared_len(b"7, 7"), None);
        assert_eq!(declared_len(&[0xff]), None);
    }

    #[test]
    fn framing_and_per_answer_headers_are_not_stored() {
        for h in ["content-length", "transfer-encoding", "connection", "age", "x-cache-status", "x-request-id"] {
            assert!(NOT_STORED.contains(&h), "{h}");
        }
        assert!(!NOT_STORED.contains(&"content-type"));
    }
}
