//! What a web page in the operator's browser could send the admin listener, refused.
//!
//! A loopback admin listener without a token (the default) is out of reach of other machines,
//! but not of a browser on this one, which any web page can drive:
//! - **DNS rebinding**: a page at `attacker.example` points its own name at 127.0.0.1 and reads
//!   `/admin/config` or `/metrics` as its own origin. So on a loopback listener without a token
//!   only a `Host` that is an IP literal or `localhost` is answered (what a probe, a scraper or
//!   `curl` sends); a DNS name gets a 403 `host_not_allowed`. With a token the page cannot
//!   authenticate, and on another interface no rebinding is needed to reach it.
//! - **Cross-site requests**: a page can `POST /admin/reload` without a preflight (a "simple"
//!   request). A `POST` whose `Origin` is not the listener's own gets a 403 `cross_site_request`.

use std::net::IpAddr;

use http::{HeaderMap, Method, header};

/// Why a request looks like a web page's doing, as the error code answered with a 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A DNS name in `Host` on an open loopback listener.
    HostNotAllowed,
    /// A `POST` from another origin.
    CrossSite,
}

impl Refusal {
    /// The error code and message answered.
    pub fn answer(self) -> (&'static str, &'static str) {
        match self {
            Self::HostNotAllowed => (
                "host_not_allowed",
                "this admin listener has no token and answers only Host: localhost or an IP address (DNS rebinding guard)",
            ),
            Self::CrossSite => ("cross_site_request", "a POST from another origin (a web page) is refused"),
        }
    }
}

/// Checks one admin request whose host is `host` (its absolute-form target's authority, else
/// its `Host`: RFC 9112 3.2.2). `open_loopback`: the listener is on a loopback address and has
/// no token.
pub fn check(method: &Method, host: Option<&[u8]>, headers: &HeaderMap, open_loopback: bool) -> Result<(), Refusal> {
    if open_loopback && host.is_some_and(|h| !is_local_name(h)) {
        return Err(Refusal::HostNotAllowed);
    }
    if method == Method::POST
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        // `http://host:port` against the request's own `Host`; `Origin: null` is no origin.
        let origin_host = origin.as_bytes().split(|&b| b == b'/').nth(2);
        if origin_host.is_none() || origin_host != host {
            return Err(Refusal::CrossSite);
        }
    }
    Ok(())
}

/// `localhost` or an IP literal, with or without a port.
fn is_local_name(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`check`] of a request whose host is its `Host` (an origin-form target).
    fn check_headers(method: &Method, headers: &HeaderMap, open_loopback: bool) -> Result<(), Refusal> {
        check(method, headers.get(header::HOST).map(|h| h.as_bytes()), headers, open_loopback)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn an_open_loopback_listener_answers_only_local_names() {
        for host in ["localhost:9901", "LOCALHOST", "127.0.0.1:9901", "[::1]:9901", "[::1]", "10.1.2.3"] {
            assert_eq!(check_headers(&Method::GET, &headers(&[("host", host)]), true), Ok(()), "{host}");
        }
        for host in ["rebind.attacker.example:9901", "localhost.attacker.example", "127.0.0.1.nip.io"] {
            assert_eq!(check_headers(&Method::GET, &headers(&[("host", host)]), true), Err(Refusal::HostNotAllowed), "{host}");
        }
        // No Host (HTTP/1.0): nothing a browser sends.
        assert_eq!(check_headers(&Method::GET, &HeaderMap::new(), true), Ok(()));
        // An absolute-form target's authority is the host, whatever `Host` says (RFC 9112 3.2.2).
        let host = headers(&[("host", "rebind.attacker.example")]);
        assert_eq!(check(&Method::GET, Some(b"127.0.0.1:9901"), &host, true), Ok(()));
        assert_eq!(check(&Method::GET, Some(b"rebind.attacker.example"), &headers(&[("host", "127.0.0.1")]), true), Err(Refusal::HostNotAllowed));
        // With a token, or on another interface, names are fine.
        assert_eq!(check_headers(&Method::GET, &headers(&[("host", "admin.internal:9901")]), false), Ok(()));
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let post = |origin: &str| check_headers(&Method::POST, &headers(&[("host", "127.0.0.1:9901"), ("origin", origin)]), false);
        assert_eq!(post("http://127.0.0.1:9901"), Ok(()));
        assert_eq!(post("http://evil.example"), Err(Refusal::CrossSite));
        assert_eq!(post("http://127.0.0.1:9902"), Err(Refusal::CrossSite));
        assert_eq!(post("null"), Err(Refusal::CrossSite));
        // curl and scripts send no Origin.
        assert_eq!(check_headers(&Method::POST, &headers(&[("host", "127.0.0.1:9901")]), false), Ok(()));
        // A GET's answer is unreadable cross-origin (no CORS headers): not refused here.
        assert_eq!(check_headers(&Method::GET, &headers(&[("host", "127.0.0.1:9901"), ("origin", "http://evil.example")]), false), Ok(()));
    }
}
