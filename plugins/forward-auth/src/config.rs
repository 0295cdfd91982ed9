//! The plugin's config, checked once at configure and turned into the [`Settings`] every
//! request reads.

use airlock_sdk::header_rules::{header_name, settable_header_name};
use serde::Deserialize;

use crate::forwarded::ALWAYS_SENT;

/// Most `request_headers` or `response_headers`: each is read or written on every request.
const MAX_HEADERS: usize = 32;

/// Longest `timeout_ms`: the most a grant's own `timeout_ms` can be, which bounds every call anyway.
const MAX_TIMEOUT_MS: u32 = 60_000;

/// Methods the auth call may use (Traefik always sends `GET`; a body goes better with `POST`).
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Headers the gateway drops from every outbound call (`host` is set from the URL, the rest are
/// the connection's and the message's framing): listing them would send nothing.
const NOT_SENDABLE: &[&str] =
    &["host", "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"];

/// The chain entry's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The auth service's endpoint: an absolute `http://` or `https://` URL whose origin the
    /// plugin's `http_client.allow` grant lists.
    pub url: String,
    /// Method of the auth call.
    #[serde(default = "default_method")]
    pub method: String,
    /// Timeout of the auth call in milliseconds; none: the grant's `timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Client headers sent to the auth service (all their values).
    #[serde(default = "default_request_headers")]
    pub request_headers: Vec<String>,
    /// Headers of an allowing answer copied onto the upstream request (the client's own copies
    /// are always removed first).
    #[serde(default)]
    pub response_headers: Vec<String>,
    /// Cookies an allowing answer sets (`Set-Cookie`, by cookie name; `"*"`: every one) that are
    /// passed on to the client's response: a session the auth service refreshes (oauth2-proxy).
    #[serde(default)]
    pub response_cookies: Vec<String>,
    /// A header of an allowing answer whose value names the consumer.
    #[serde(default)]
    pub consumer_header: Option<String>,
    /// A header of an allowing answer listing the consumer's groups (comma-separated, or one per
    /// field), for `builtin:acl`'s `group:` rules. Needs `consumer_header`.
    #[serde(default)]
    pub groups_header: Option<String>,
    /// With a consumer named: `X-Consumer-Id` to the upstream, as the other auth plugins send it.
    #[serde(default = "yes")]
    pub upstream_headers: bool,
    /// Send the client's body to the auth service.
    #[serde(default)]
    pub pass_body: bool,
    /// What an auth service that cannot answer (down, timing out, 5xx) means.
    #[serde(default)]
    pub failure: Failure,
}

fn default_method() -> String {
    "GET".into()
}

fn default_request_headers() -> Vec<String> {
    vec!["authorization".into(), "cookie".into()]
}

fn yes() -> bool {
    true
}

/// What happens to a request when the auth service gives no usable answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// Refuse the request: 503 in the gateway's error format.
    #[default]
    Closed,
    /// Let the request through unauthenticated (without any header of `response_headers`).
    Open,
}

/// What the request phase reads: the config, checked, names lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The auth service's URL, as written.
    pub url: String,
    /// Method of the auth call, upper-case.
    pub method: String,
    /// Timeout asked for the call (0: the grant's).
    pub timeout_ms: u32,
    /// Client headers sent to the auth service, lower-case, each once.
    pub request_headers: Vec<String>,
    /// Headers copied from an allowing answer, lower-case, each once.
    pub response_headers: Vec<String>,
    /// Cookie names whose `Set-Cookie` of an allowing answer reaches the client (`*`: all).
    pub response_cookies: Vec<String>,
    /// The answer's header naming the consumer, lower-case.
    pub consumer_header: Option<String>,
    /// The answer's header listing the consumer's groups, lower-case.
    pub groups_header: Option<String>,
    /// `X-Consumer-Id` to the upstream when a consumer is named.
    pub upstream_headers: bool,
    /// The client's body goes to the auth service.
    pub pass_body: bool,
    /// Closed or open on failure.
    pub failure: Failure,
}

impl Settings {
    /// Checks the config. Errors start with the key, as the gateway shows them beside the route.
    pub fn from_config(c: Config) -> Result<Self, String> {
        airlock_sdk::http_client::check_url(&c.url).map_err(|e| format!("`url`: {e}"))?;
        let method = c.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(format!("`method`: `{}` is not one of {}", c.method, METHODS.join(", ")));
        }
        let timeout_ms = match c.timeout_ms {
            None => 0,
            Some(0) => return Err("`timeout_ms` must be at least 1 (leave it out to use the grant's `timeout_ms`)".into()),
            Some(ms) if ms > MAX_TIMEOUT_MS => {
                return Err(format!("`timeout_ms`: at most {MAX_TIMEOUT_MS} (the grant's `timeout_ms` bounds the call anyway)"));
            }
            Some(ms) => ms,
        };
        let request_headers = names("request_headers", &c.request_headers, request_header)?;
        let response_headers = names("response_headers", &c.response_headers, response_header)?;
        let response_cookies = names("response_cookies", &c.response_cookies, cookie_name)?;
        let consumer_header = c
            .consumer_header
            .as_deref()
            .map(identity_header)
            .transpose()
            .map_err(|e| format!("`consumer_header`: {e}"))?;
        let groups_header =
            c.groups_header.as_deref().map(identity_header).transpose().map_err(|e| format!("`groups_header`: {e}"))?;
        if groups_header.is_some() && consumer_header.is_none() {
            return Err("`groups_header` needs `consumer_header`: groups belong to a named consumer".into());
        }
        Ok(Self {
            url: c.url,
            method,
            timeout_ms,
            request_headers,
            response_headers,
            response_cookies,
            consumer_header,
            groups_header,
            upstream_headers: c.upstream_headers,
            pass_body: c.pass_body,
            failure: c.failure,
        })
    }
}

/// Checks a list of header names with `check`, lower-cases them and drops repeats.
fn names(key: &str, list: &[String], check: fn(&str) -> Result<String, String>) -> Result<Vec<String>, String> {
    if list.len() > MAX_HEADERS {
        return Err(format!("`{key}`: at most {MAX_HEADERS} headers"));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let name = check(name).map_err(|e| format!("`{key}[{i}]`: {e}"))?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// A client header that may be sent to the auth service.
fn request_header(name: &str) -> Result<String, String> {
    let name = header_name(name)?;
    if ALWAYS_SENT.contains(&name.as_str()) {
        return Err(format!("`{name}` is always sent, with the gateway's own value: the client's is never passed on"));
    }
    if NOT_SENDABLE.contains(&name.as_str()) || name.starts_with("proxy-") {
        return Err(format!("`{name}` is never sent on an outbound call (the gateway sets the host and framing)"));
    }
    Ok(name)
}

/// A header of the auth service's answer that may be set on the upstream request: not `host`,
/// nor a header about the hop the answer came over (`te`, `trailer`, `proxy-*`), which would
/// tell the upstream of trailers that never come or of a proxy's credentials.
fn response_header(name: &str) -> Result<String, String> {
    let name = settable_header_name(name)?;
    if name == "host" {
        return Err("`host` cannot be copied: the auth service does not choose where the request goes".into());
    }
    if name == "te" || name == "trailer" || name.starts_with("proxy-") {
        return Err(format!("`{name}` is about the hop the answer came over, not the request: it cannot be copied upstream"));
    }
    Ok(name)
}

/// A cookie name of `response_cookies`: an RFC 6265 token (compared exactly, as browsers do), or
/// `*` for every cookie.
fn cookie_name(name: &str) -> Result<String, String> {
    if name == "*" || airlock_sdk::header_rules::is_token(name) {
        Ok(name.to_owned())
    } else {
        Err(format!("`{name}` is not a cookie name (letters, digits and `!#$%&'*+-.^_`|~`), or `*` for every cookie"))
    }
}

/// A header of the auth service's answer naming the consumer or its groups. The client's copy is
/// removed from every request, so it cannot be one the request needs: `host` or the framing.
fn identity_header(name: &str) -> Result<String, String> {
    let name = settable_header_name(name)?;
    if name == "host" {
        return Err("`host` cannot name the consumer: the client's copy is removed from every request".into());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Result<Settings, String> {
        let config: Config = airlock_sdk::serde_json::from_str(json).map_err(|e| e.to_string())?;
        Settings::from_config(config)
    }

    #[test]
    fn defaults_are_those_documented() {
        let s = settings(r#"{"url": "http://auth.internal:9000/check"}"#).unwrap();
        assert_eq!(s.method, "GET");
        assert_eq!(s.timeout_ms, 0);
        assert_eq!(s.request_headers, ["authorization", "cookie"]);
        assert!(s.response_headers.is_empty());
        assert_eq!(s.consumer_header, None);
        assert!(s.upstream_headers);
        assert!(!s.pass_body);
        assert_eq!(s.failure, Failure::Closed);
    }

    #[test]
    fn names_are_lower_cased_and_deduplicated() {
        let s = settings(
            r#"{"url": "https://auth", "method": "post", "request_headers": ["Authorization", "authorization", "X-Api-Key"],
                "response_headers": ["X-User-Id", "x-user-roles"], "consumer_header": "X-User-Id", "failure": "open", "timeout_ms": 250}"#,
        )
        .unwrap();
        assert_eq!(s.method, "POST");
        assert_eq!(s.request_headers, ["authorization", "x-api-key"]);
        assert_eq!(s.response_headers, ["x-user-id", "x-user-roles"]);
        assert_eq!(s.consumer_header.as_deref(), Some("x-user-id"));
        assert_eq!(s.failure, Failure::Open);
        assert_eq!(s.timeout_ms, 250);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (r#"{"url": "ftp://auth/check"}"#, "`url`: `ftp://auth/check` is not an absolute"),
            (r#"{"url": "/check"}"#, "`url`: `/check` is not an absolute"),
            (r#"{"url": "http://user:pw@auth/check"}"#, "`url`: `http://user:pw@auth/check` has user info"),
            (r#"{"url": "http:///check"}"#, "`url`: `http:///check` has no host"),
            (r#"{"url": "http://auth:99999/"}"#, "`url`: `http://auth:99999/` has an invalid port"),
            (r#"{"url": "http://auth/a b"}"#, "`url`: `http://auth/a b` holds spaces"),
            (r#"{"url": "http://auth/#x"}"#, "`url`: `http://auth/#x` has a fragment"),
            (r#"{"url": "http://a", "method": "TRACE"}"#, "`method`: `TRACE` is not one of"),
            (r#"{"url": "http://a", "timeout_ms": 0}"#, "`timeout_ms` must be at least 1"),
            (r#"{"url": "http://a", "timeout_ms": 60001}"#, "`timeout_ms`: at most 60000"),
            (r#"{"url": "http://a", "request_headers": ["x-forwarded-for"]}"#, "`request_headers[0]`: `x-forwarded-for` is always sent"),
            (r#"{"url": "http://a", "request_headers": ["ok", "Host"]}"#, "`request_headers[1]`: `host` is never sent"),
            (r#"{"url": "http://a", "request_headers": ["proxy-authorization"]}"#, "`request_headers[0]`: `proxy-authorization` is never sent"),
            (r#"{"url": "http://a", "request_headers": ["bad name"]}"#, "`request_headers[0]`: invalid header name"),
            (r#"{"url": "http://a", "response_headers": ["content-length"]}"#, "`response_headers[0]`: `content-length` is set by the gateway"),
            (r#"{"url": "http://a", "response_headers": ["host"]}"#, "`response_headers[0]`: `host` cannot be copied"),
            (r#"{"url": "http://a", "response_headers": ["x-a", "TE"]}"#, "`response_headers[1]`: `te` is about the hop the answer came over"),
            (r#"{"url": "http://a", "response_headers": ["trailer"]}"#, "`response_headers[0]`: `trailer` is about the hop"),
            (r#"{"url": "http://a", "response_headers": ["proxy-authenticate"]}"#, "`response_headers[0]`: `proxy-authenticate` is about the hop"),
            (r#"{"url": "http://a", "consumer_header": ""}"#, "`consumer_header`: empty header name"),
            (r#"{"url": "http://a", "consumer_header": "Host"}"#, "`consumer_header`: `host` cannot name the consumer"),
            (r#"{"url": "http://a", "consumer_header": "content-length"}"#, "`consumer_header`: `content-length` is set by the gateway"),
            (r#"{"url": "http://a", "consumer_header": "x-u", "groups_header": "transfer-encoding"}"#, "`groups_header`: `transfer-encoding` is set by the gateway"),
        ];
        for (json, expected) in cases {
            let err = settings(json).unwrap_err();
            assert!(err.starts_with(expected), "{json}: {err}");
        }
    }

}
