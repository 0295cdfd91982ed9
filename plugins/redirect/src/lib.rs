//! `builtin:redirect`: answers with a redirect instead of going upstream: HTTP to HTTPS, a
//! moved host, or a fixed location (nginx's `return 301 https://$host$request_uri`, Traefik's
//! RedirectScheme, Kong's redirect plugin).
//!
//! ```toml
//! [[global.plugins]]
//! plugin = "builtin:redirect"
//! config = { scheme = "https" }                  # http://h/p?q -> https://h/p?q; https passes
//!
//! # or: the same path and query on another host (and port)
//! config = { host = "www.example.com", scheme = "https" }
//! # or: one location, a template (values percent-encoded), the request's path and query kept
//! # only with `keep_path`
//! config = { location = "https://docs.example.com/v2/${param.page}" }
//! # every form: `status` (301, 302, 303, 307 or 308); without it `permanent` (default true)
//! # gives 301 for GET and HEAD, 308 for other methods (they keep their method and body),
//! # and `permanent = false` 302 and 307.
//! ```
//!
//! A request already at the location passes on to the next plugin, so `scheme = "https"` on a
//! listener serving both schemes redirects only plain HTTP (and never loops). Behind a balancer
//! that terminates TLS, the scheme is the one its `X-Forwarded-Proto` says, when the listener
//! names it among `trusted_proxies`. Only the request phase runs.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod target;

use airlock_sdk::{Action, Descriptor, Plugin, Request, ResponseInit, export_plugin};
use serde::Deserialize;

use target::{Location, RequestUrl};

/// The plugin's config, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `http` or `https`: the scheme to redirect to.
    pub scheme: Option<String>,
    /// The host to redirect to (no port: see `port`).
    pub host: Option<String>,
    /// The port to redirect to; without it the port goes when the scheme or host changes.
    pub port: Option<u16>,
    /// A whole location instead (a template); exclusive with scheme, host and port.
    pub location: Option<String>,
    /// With `location`: its path and query replaced by the request's.
    pub keep_path: bool,
    /// The status, or `None` for the one `permanent` gives.
    pub status: Option<u16>,
    /// 301/308 (true, default) or 302/307, when `status` is not given.
    pub permanent: Option<bool>,
}

/// The configured plugin.
#[derive(Debug)]
pub struct Redirect {
    location: Location,
    status: Status,
}

/// Which status a redirect gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// This one, whatever the method.
    Fixed(u16),
    /// 301 or 302 for GET and HEAD, 308 or 307 for others.
    ByMethod { permanent: bool },
}

impl Status {
    fn for_method(self, method: &str) -> u16 {
        match self {
            Status::Fixed(status) => status,
            Status::ByMethod { permanent } => match (permanent, method == "GET" || method == "HEAD") {
                (true, true) => 301,
                (true, false) => 308,
                (false, true) => 302,
                (false, false) => 307,
            },
        }
    }
}

impl Plugin for Redirect {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let status = match (config.status, config.permanent) {
            (Some(_), Some(_)) => return Err("`status` and `permanent` are exclusive: `status` names the status itself".into()),
            (Some(s @ (301 | 302 | 303 | 307 | 308)), None) => Status::Fixed(s),
            (Some(s), None) => return Err(format!("`status`: {s} is not a redirect: use 301, 302, 303, 307 or 308")),
            (None, permanent) => Status::ByMethod { permanent: permanent.unwrap_or(true) },
        };
        Ok(Self { location: Location::from_config(&config)?, status })
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    /// Answers with the redirect, unless the request is already where it would send it.
    fn on_request(&self, req: &Request) -> Action {
        // An HTTP/1.0 request may come without a `Host`, and an HTTP/1.1 one with an empty one.
        let host = req.header("host").unwrap_or_default();
        let (path, query) = (req.path(), req.query());
        let scheme = req.scheme();
        let here = RequestUrl { scheme: &scheme, host: &host, path: &path, query: query.as_deref() };
        match self.location.for_request(&here, req) {
            Ok(Some(location)) => {
                let status = self.status.for_method(&req.method());
                // No `content-length`: the gateway frames the empty body itself.
                Action::Respond(ResponseInit::new(status).header("location", location))
            }
            Ok(None) => Action::Continue,
            Err(refusal) => {
                // In the gateway's own error shape, with the request id.
                let (status, message) = refusal.answer();
                let body = serde_json::json!({ "error": "bad_request", "message": message, "request_id": req.request_id() });
                Action::Respond(ResponseInit::new(status).header("content-type", "application/json").body(body.to_string().into_bytes()))
            }
        }
    }
}

export_plugin!(Redirect);

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> String {
        airlock_sdk::configure::<Redirect>(json).unwrap_err()
    }

    #[test]
    fn the_status_is_fixed_or_follows_the_method() {
        let by = |json: &str, method: &str| airlock_sdk::configure::<Redirect>(json).unwrap().status.for_method(method);
        assert_eq!(by(r#"{"scheme": "https"}"#, "GET"), 301);
        assert_eq!(by(r#"{"scheme": "https"}"#, "HEAD"), 301);
        assert_eq!(by(r#"{"scheme": "https"}"#, "POST"), 308, "a POST keeps its method and body");
        assert_eq!(by(r#"{"scheme": "https", "permanent": false}"#, "GET"), 302);
        assert_eq!(by(r#"{"scheme": "https", "permanent": false}"#, "DELETE"), 307);
        assert_eq!(by(r#"{"scheme": "https", "status": 303}"#, "POST"), 303);
    }

    #[test]
    fn config_errors_name_the_key() {
        assert_eq!(error(r#"{"scheme": "https", "status": 200}"#), "`status`: 200 is not a redirect: use 301, 302, 303, 307 or 308");
        assert!(error(r#"{"scheme": "https", "status": 301, "permanent": true}"#).starts_with("`status` and `permanent` are exclusive"));
        assert!(error(r#"{"schema": "https"}"#).starts_with("`schema`: unknown field `schema`"));
        assert!(error(r#"{"port": 70000}"#).starts_with("`port`: invalid value"));
    }
}
