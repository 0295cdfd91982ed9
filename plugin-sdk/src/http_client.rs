//! Outbound HTTP calls to the origins the operator granted (capability `http-client`).
//!
//! A plugin that calls anything here imports `airlock:plugin/http-client`, and the gateway loads
//! it only with a grant naming the origins it may reach:
//!
//! ```toml
//! [plugins.my-plugin]
//! source = "./my_plugin.wasm"
//! capabilities = ["http-client"]
//! http_client = { allow = ["https://idp.example.com"], timeout_ms = 2000 }
//! ```
//!
//! Calls block the plugin (not the gateway: it waits asynchronously) until the whole response is
//! read, so keep them off the common path: cache what you fetch, e.g. in [`crate::state`].
//!
//! ```no_run
//! let response = airlock_sdk::http_client::get("https://idp.example.com/.well-known/jwks.json");
//! match response {
//!     Ok(r) if r.status == 200 => { let _jwks = r.body; }
//!     Ok(r) => { /* the IdP answered r.status */ }
//!     Err(e) => { /* denied, timeout, connection refused... */ let _ = e; }
//! }
//! ```

use crate::bindings::airlock::plugin::http_client as raw;

pub use raw::{HttpError, IncomingResponse as Response};

/// A request the plugin sends ([`send`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method, e.g. `"GET"`.
    pub method: String,
    /// Absolute `http://` or `https://` URL. Its scheme, host and port must be one of the
    /// origins the grant allows.
    pub url: String,
    /// Request headers. `host` is set by the gateway from the URL, and hop-by-hop headers
    /// (`connection`, `transfer-encoding`, ...) are dropped.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Request body (`None` for an empty one).
    pub body: Option<Vec<u8>>,
    /// Timeout for the whole exchange in milliseconds; 0, or more than the grant's
    /// `timeout_ms`, means the grant's.
    pub timeout_ms: u32,
}

impl Response {
    /// The first value of header `name`, if present. The name is matched case-insensitively,
    /// as every other `header` of the SDK matches it: `header("Content-Type")` finds the
    /// `content-type` the gateway hands over (names arrive lower-case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first_header(&self.headers, name)
    }
}

/// The first value of `name` among `headers`, the name matched case-insensitively.
fn first_header<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
}

/// Sends `request` and waits for the whole response.
pub fn send(request: &Request) -> Result<Response, HttpError> {
    // Lent to the gateway as it is: no copy of the headers or body.
    let headers: Vec<(&str, &[u8])> = request.headers.iter().map(|(name, value)| (name.as_str(), value.as_slice())).collect();
    raw::send(raw::OutgoingRequest {
        method: &request.method,
        url: &request.url,
        headers: &headers,
        body: request.body.as_deref(),
        timeout_ms: request.timeout_ms,
    })
}

/// Whether a call to `url` would be let through (its origin granted), without sending anything:
/// for checking, at configure, the URLs a config names (`Err(HttpError::Denied(..))` when the
/// grant does not cover it).
pub fn allows(url: &str) -> Result<(), HttpError> {
    raw::allows(url)
}

/// `GET url` with no extra headers and the grant's timeout.
pub fn get(url: &str) -> Result<Response, HttpError> {
    send(&Request { method: "GET".into(), url: url.into(), headers: Vec::new(), body: None, timeout_ms: 0 })
}

/// Checks that `url`, a URL a plugin's config names for it to call, is an absolute `http://` or
/// `https://` URL with a host (and a valid port, if any), no user info (credentials in a URL end
/// up in logs: they belong in the plugin's config) and no fragment (never sent). Whether its
/// origin is granted is another question: [`check_granted`]. The message names the URL; prefix
/// it with your config key.
pub fn check_url(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| format!("`{url}` is not an absolute http:// or https:// URL"))?;
    if url.bytes().any(|b| b <= b' ' || b == 0x7f || !b.is_ascii()) {
        return Err(format!("`{url}` holds spaces, control or non-ASCII characters (percent-encode them)"));
    }
    if url.contains('#') {
        return Err(format!("`{url}` has a fragment (`#...`), which is never sent"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!("`{url}` has user info (`user@`): credentials in a URL end up in logs; give them in the plugin's config"));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h).unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    if let Some(port) = authority.rsplit_once(']').map_or(authority.split_once(':').map(|(_, p)| p), |(_, p)| p.strip_prefix(':'))
        && port.parse::<u16>().is_err()
    {
        return Err(format!("`{url}` has an invalid port `{port}`"));
    }
    Ok(())
}

/// Checks, at configure, that the gateway lets this plugin call `url` ([`allows`], which sends
/// nothing), so that a URL outside the plugin's `http_client.allow` grant rejects the config at
/// load rather than failing every request. `key` is the config key naming the URL, for the
/// message (which tells the operator what grant to write).
pub fn check_granted(key: &str, url: &str) -> Result<(), String> {
    judge_grant(key, url, allows(url))
}

/// What the gateway's answer to [`allows`] says about the grant.
fn judge_grant(key: &str, url: &str, outcome: Result<(), HttpError>) -> Result<(), String> {
    match outcome {
        Ok(()) => Ok(()),
        Err(HttpError::Denied(reason)) => Err(format!(
            "`{key}`: the gateway refuses calls to `{url}`: {reason}. The plugin needs a `[plugins.<name>]` \
             definition with `capabilities = [\"http-client\"]` and the URL's origin in its `http_client.allow`"
        )),
        Err(HttpError::Invalid(reason)) => Err(format!("`{key}`: {reason}")),
        // Not answers `allows` gives; were they, the calls still fail as the plugin handles them.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_to_call_are_absolute_http_with_a_host_and_nothing_that_is_not_sent() {
        for url in ["http://127.0.0.1:8081/check?x=1", "https://idp.example.com", "http://[::1]:9000/i", "HTTPS://IdP/"] {
            assert_eq!(check_url(url), Ok(()), "{url}");
        }
        for (url, says) in [
            ("ftp://x/", "not an absolute http"),
            ("/relative", "not an absolute http"),
            ("http://a b/", "spaces"),
            ("http://idp/#frag", "fragment"),
            ("http://user:pw@idp/", "user info"),
            ("http:///x", "no host"),
            ("http://[::1]:x/", "invalid port"),
            ("http://idp:70000/", "invalid port"),
        ] {
            let err = check_url(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn response_headers_are_found_whatever_the_case_of_the_name_asked() {
        let headers = vec![
            ("content-type".to_owned(), b"application/json".to_vec()),
            ("x-trace".to_owned(), b"first".to_vec()),
            ("x-trace".to_owned(), b"second".to_vec()),
        ];
        let response = Response { status: 200, headers: headers.clone(), body: Vec::new() };
        assert_eq!(response.header("content-type"), Some(&b"application/json"[..]));
        assert_eq!(response.header("Content-Type"), Some(&b"application/json"[..]));
        assert_eq!(response.header("X-TRACE"), Some(&b"first"[..]), "the first value");
        assert_eq!(response.header("x-missing"), None);
        // A name as another peer could send it, mixed case: found all the same.
        assert_eq!(first_header(&[("ETag".to_owned(), b"\"v1\"".to_vec())], "etag"), Some(&b"\"v1\""[..]));
    }

    #[test]
    fn a_refused_origin_or_a_bad_url_is_an_error_naming_the_key() {
        let err = judge_grant("url", "http://a:1/x", Err(HttpError::Denied("http://a:1 is not in this plugin's `http_client.allow`".into()))).unwrap_err();
        assert!(err.starts_with("`url`: the gateway refuses calls to `http://a:1/x`: http://a:1 is not in"), "{err}");
        assert_eq!(judge_grant("url", "http://a", Ok(())), Ok(()));
        assert_eq!(judge_grant("endpoint", "http://a", Err(HttpError::Invalid("`x` is not a URL".into()))), Err("`endpoint`: `x` is not a URL".into()));
    }
}
