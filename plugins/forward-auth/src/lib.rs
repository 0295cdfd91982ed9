//! `builtin:forward-auth`: external authorization (nginx `auth_request`, Traefik ForwardAuth,
//! Envoy `ext_authz` in HTTP mode). For every request the plugin asks an auth service over the
//! `http-client` capability, and lets the request through only if the service answers 2xx.
//!
//! ```toml
//! [plugins.auth]
//! source = "builtin:forward-auth"
//! capabilities = ["http-client"]
//! http_client = { allow = ["http://auth.internal:9000"], timeout_ms = 1000 }
//!
//! [[routes.plugins]]
//! plugin = "auth"
//! [routes.plugins.config]
//! url = "http://auth.internal:9000/verify"    # required; its origin must be in `http_client.allow`
//! method = "GET"                               # GET (default), HEAD, POST, PUT, PATCH, DELETE, OPTIONS
//! timeout_ms = 500                             # default: the grant's `timeout_ms`, which also bounds it
//! request_headers = ["authorization", "cookie"]  # client headers sent to the auth service (default)
//! response_headers = ["x-user-id", "x-user-roles"] # copied from a 2xx onto the upstream request
//! consumer_header = "x-user-id"                # the answer's header naming the consumer
//! groups_header = "x-user-groups"              # and its groups (comma-separated), for acl
//! upstream_headers = true                      # X-Consumer-Id upstream when a consumer is named
//! pass_body = false                            # send the client's body too (buffered)
//! failure = "closed"                           # auth service down, timing out or 5xx: 503 ("open": let through)
//! ```
//!
//! Per request (see [`ForwardAuth::on_request`]): one call to `url`, carrying the
//! `request_headers` the client sent and, always, `X-Forwarded-Method`, `X-Forwarded-Uri` (path
//! and query), `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Forwarded-For` (the client IP as the
//! gateway determined it: one address, never a chain the client wrote) and `X-Request-Id`
//! ([`forwarded`]). Before the answer is looked at, every header named in `response_headers`,
//! `consumer_header` or `groups_header` is removed from the client's request, whatever the
//! outcome, and so are `X-Consumer-Id`, `X-Consumer-Groups` and `X-Anonymous-Consumer` (unless
//! an earlier plugin named a consumer): only the auth service's values reach the upstream. Then ([`verdict`]):
//! - 2xx: the request goes on with the answer's `response_headers` (every value), and the
//!   client's response gets its `Set-Cookie`s for `response_cookies`; with
//!   `consumer_header`, the context's `consumer` is that header's value (and `consumer.groups`
//!   `groups_header`'s, else empty), as `builtin:key-auth` and `builtin:jwt` set them, so `acl`, `rate-limit`, `quota`,
//!   analytics and the access log see it;
//! - 3xx or 4xx: the answer goes to the client with its status, body and `WWW-Authenticate`,
//!   `Location`, `Set-Cookie` and `Content-Type`; the upstream is not called;
//! - no answer (refused, timeout, too large), a 5xx, or a 2xx naming the consumer ambiguously
//!   (two `consumer_header` fields): with `failure = "closed"`, a 503 `auth_unavailable` in the
//!   gateway's error format that names nothing of the service, with `Retry-After: 5`
//!   ([`RETRY_AFTER_SECS`]; the reason is logged, a warning at most every 10 s per instance:
//!   `log::Throttled`); with `"open"`, the request goes on unauthenticated.
//!
//! The URL's origin is checked against the plugin's grant at configure (`http_client::check_granted`), so a URL the
//! gateway would refuse rejects the config at load. Decisions are not cached: every request is
//! one auth call. Modules: [`config`], [`forwarded`], [`verdict`].

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod config;
pub mod forwarded;
pub mod verdict;

use airlock_sdk::{Action, Descriptor, Plugin, Request, ResponseEdit, ResponseInit, export_plugin, http_client, log};

use config::{Config, Failure, Settings};
use forwarded::Origin;
use verdict::Verdict;

/// `Retry-After` of the 503 `auth_unavailable`, in seconds: an outage or an overloaded auth
/// service is rarely over at once, and clients that retry sooner only add to its load.
pub const RETRY_AFTER_SECS: u32 = 5;

/// The configured plugin.
#[derive(Debug)]
pub struct ForwardAuth {
    settings: Settings,
    /// Backend/auth-service failures, warned at most every 10 s per instance.
    outage: log::Throttled,
}

impl Plugin for ForwardAuth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let settings = Settings::from_config(config)?;
        // Natively (unit tests) there is no gateway to ask.
        #[cfg(target_arch = "wasm32")]
        http_client::check_granted("url", &settings.url)?;
        Ok(Self { settings, outage: log::Throttled::new(10_000) })
    }

    /// The request phase only; the request body, for `pass_body` (narrowed at configure).
    fn descriptor() -> Descriptor {
        Descriptor::request_only().with_request_body()
    }

    /// The body is buffered only with `pass_body`.
    fn configured_descriptor(&self) -> Descriptor {
        if self.settings.pass_body { Self::descriptor() } else { Descriptor::request_only() }
    }

    /// Asks the auth service, then continues, answers with its refusal, or handles its failure.
    fn on_request(&self, req: &Request) -> Action {
        let (call, from_client) = self.auth_call(req);
        self.remove_forgeable(req);
        match verdict::judge(&self.settings, http_client::send(&call)) {
            Verdict::Allow { headers, consumer, groups, cookies } => {
                for (name, value) in &headers {
                    req.append_header(name, value);
                }
                // Made where this entry's response phase would run: a cache after it never
                // stores them with the answer.
                for cookie in &cookies {
                    req.edit_response(ResponseEdit::Append("set-cookie", cookie));
                }
                if !self.name_consumer(req, consumer, &groups) {
                    // Allowed on the client's credentials (a session cookie, a token) without a
                    // consumer: what follows (a cache keyed by consumer) must still tell this
                    // caller from another.
                    airlock_sdk::consumer::credential(req, &credential_id(&call.headers[..from_client], &headers));
                }
                Action::Continue
            }
            Verdict::Deny(init) => {
                log::debug(format!("refused by the auth service: {}", init.status));
                Action::Respond(init)
            }
            Verdict::Fail(reason) => self.failed(req, &reason),
        }
    }
}

impl ForwardAuth {
    /// The auth call for `req`, and how many of its first header lines are the client's
    /// `request_headers` (the credentials the service judges).
    fn auth_call(&self, req: &Request) -> (http_client::Request, usize) {
        let s = &self.settings;
        let mut headers = Vec::new();
        for name in &s.request_headers {
            headers.extend(req.header_all(name).into_iter().map(|value| (name.clone(), value)));
        }
        let from_client = headers.len();
        let body = if s.pass_body { req.body().filter(|b| !b.is_empty()) } else { None };
        if body.is_some() && !s.request_headers.iter().any(|h| h == "content-type") {
            headers.extend(req.header_all("content-type").into_iter().map(|value| ("content-type".to_owned(), value)));
        }
        let origin = Origin {
            method: req.method(),
            path: req.path(),
            query: req.query(),
            host: req.header("host"),
            scheme: req.scheme(),
            client_ip: req.client_ip(),
            request_id: req.request_id(),
        };
        headers.extend(origin.headers());
        (http_client::Request { method: s.method.clone(), url: s.url.clone(), headers, body, timeout_ms: s.timeout_ms }, from_client)
    }

    /// Removes the client's copies of every header only the auth service may vouch for: the
    /// `response_headers`, `consumer_header` and `groups_header` (an upstream behind the gateway
    /// may read the service's identity headers, whether or not they are copied), and the
    /// consumer headers, as every authentication plugin does (an upstream shared with `key-auth`
    /// or `jwt` routes trusts `X-Consumer-Id`, with `consumer_header` or without). Done before
    /// the answer is known, so no outcome (allow without them, a failure, `failure = "open"`)
    /// lets a client's copy pass.
    fn remove_forgeable(&self, req: &Request) {
        let s = &self.settings;
        for name in s.response_headers.iter().chain(&s.consumer_header).chain(&s.groups_header) {
            req.remove_header(name);
        }
        airlock_sdk::consumer::remove_forged(req);
    }

    /// Names the consumer an allowing answer gave, in the context and (with `upstream_headers`)
    /// to the upstream. Whether one was named.
    fn name_consumer(&self, req: &Request, consumer: Result<Option<String>, String>, groups: &str) -> bool {
        match consumer {
            // Its groups from `groups_header`; never those an earlier plugin gave another.
            Ok(Some(id)) => {
                airlock_sdk::consumer::name(req, &id, groups, false, self.settings.upstream_headers);
                return true;
            }
            Ok(None) if self.settings.consumer_header.is_some() => {
                log::debug("allowed without a consumer: the auth answer has no `consumer_header`");
            }
            Ok(None) => {}
            Err(reason) => log::warn(format!("allowed without a consumer: {reason}")),
        }
        false
    }

    /// The auth service gave no usable answer: logs why, then refuses (503) or lets the request
    /// through, as `failure` says.
    fn failed(&self, req: &Request, reason: &str) -> Action {
        let policy = match self.settings.failure {
            Failure::Closed => "refusing the request (503)",
            Failure::Open => "letting the request through unauthenticated (`failure = \"open\"`)",
        };
        let message = format!("{reason}; {policy}");
        self.outage.warn(message);
        match self.settings.failure {
            Failure::Closed => Action::Respond(
                ResponseInit::error(503, "auth_unavailable", "the request could not be authorized now; try again later", &req.request_id())
                    .header("retry-after", RETRY_AFTER_SECS.to_string()),
            ),
            Failure::Open => Action::Continue,
        }
    }
}

/// How a request allowed without a consumer is recorded as the request's credential
/// (`airlock_sdk::consumer::credential`): `forward-auth:` and the hex SHA-256 digest of the
/// client's header lines the service judged and the `response_headers` lines it answered with,
/// each length-prefixed. Never the credentials themselves, which later plugins could then read;
/// not the `X-Forwarded-*` or `X-Request-Id` lines, which differ per request, not per caller.
fn credential_id(judged: &[(String, Vec<u8>)], answered: &[(String, Vec<u8>)]) -> String {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    for lines in [judged, answered] {
        digest.update((lines.len() as u64).to_be_bytes());
        for (name, value) in lines {
            for part in [name.as_bytes(), value] {
                digest.update((part.len() as u64).to_be_bytes());
                digest.update(part);
            }
        }
    }
    let mut id = String::with_capacity(13 + 64);
    id.push_str("forward-auth:");
    for b in digest.finalize() {
        id.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        id.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    id
}

export_plugin!(ForwardAuth);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configure_checks_the_config() {
        assert!(airlock_sdk::configure::<ForwardAuth>(r#"{"url": "http://127.0.0.1:9000/auth"}"#).is_ok());
        let err = airlock_sdk::configure::<ForwardAuth>("{}").err().unwrap();
        assert!(err.contains("missing field `url`"), "{err}");
        let err = airlock_sdk::configure::<ForwardAuth>(r#"{"url": "http://a", "failure": "maybe"}"#).err().unwrap();
        assert!(err.starts_with("`failure`"), "{err}");
        let err = airlock_sdk::configure::<ForwardAuth>(r#"{"url": "http://a", "ttl": 5}"#).err().unwrap();
        assert!(err.contains("unknown field `ttl`"), "{err}");
    }

    #[test]
    fn the_body_is_asked_for_only_with_pass_body() {
        let plain = airlock_sdk::configure::<ForwardAuth>(r#"{"url": "http://a"}"#).unwrap();
        assert_eq!(plain.configured_descriptor(), Descriptor::request_only());
        let body = airlock_sdk::configure::<ForwardAuth>(r#"{"url": "http://a", "pass_body": true}"#).unwrap();
        assert!(body.configured_descriptor().request_body);
    }
}
