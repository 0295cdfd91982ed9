//! Where a request is sent: the configured location, checked once at configure, made for each
//! request, and compared with where the request already is (so a redirect never loops).

use airlock_sdk::template::{Source, Template};
use percent_encoding::{AsciiSet, CONTROLS, percent_encode};

use crate::Config;

/// Bytes of a template value escaped in the location: whatever would end the part it is put
/// in (`?`, `#`), add a query parameter (`&`, `=`, `+`), or not be a URL character at all.
/// `/` stays, so a value may name a path.
const VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The configured location.
#[derive(Debug)]
pub enum Location {
    /// The request's own URL with some parts replaced.
    Parts {
        /// The scheme, or the request's.
        scheme: Option<&'static str>,
        /// The host (no port), or the request's.
        host: Option<String>,
        /// The port, or: the request's when scheme and host stay, else none (the default).
        port: Option<u16>,
    },
    /// A location of its own; its scheme and host are literal (no open redirect).
    Fixed {
        /// The URL, with variables.
        template: Template,
        /// The request's path and query instead of the template's.
        keep_path: bool,
    },
}

/// Where the request is: its scheme, `Host`, path and query.
#[derive(Debug, Clone, Copy)]
pub struct RequestUrl<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The `Host` value (a port included when the client gave one).
    pub host: &'a [u8],
    /// The path, as received.
    pub path: &'a str,
    /// The query, as received.
    pub query: Option<&'a str>,
}

impl Location {
    /// The location a config describes; the error names the key.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let scheme = match config.scheme.as_deref() {
            None => None,
            Some("http") => Some("http"),
            Some("https") => Some("https"),
            Some(other) => return Err(format!("`scheme`: `{other}` is not `http` or `https`")),
        };
        if let Some(host) = &config.host {
            check_host(host).map_err(|e| format!("`host`: {e}"))?;
        }
        if config.port == Some(0) {
            return Err("`port`: 0 is no port: give 1-65535, or leave it out".into());
        }
        match &config.location {
            Some(_) if scheme.is_some() || config.host.is_some() || config.port.is_some() => {
                Err("`location` and `scheme`/`host`/`port` are exclusive: give a whole location, or the parts to change".into())
            }
            Some(location) => {
                check_location(location).map_err(|e| format!("`location`: {e}"))?;
                let template = Template::parse(location).map_err(|e| format!("`location`: {e}"))?;
                Ok(Location::Fixed { template, keep_path: config.keep_path })
            }
            None if config.keep_path => Err("`keep_path` goes with `location` (the other forms keep the path anyway)".into()),
            None if scheme.is_none() && config.host.is_none() && config.port.is_none() => {
                Err("nothing to redirect to: give `scheme`, `host` and/or `port`, or a `location`".into())
            }
            None => Ok(Location::Parts { scheme, host: config.host.as_ref().map(|h| h.to_ascii_lowercase()), port: config.port }),
        }
    }

    /// The `Location` for a request, or `None` when the request is already there.
    pub fn for_request(&self, here: &RequestUrl<'_>, source: &impl Source) -> Option<String> {
        let host = std::str::from_utf8(here.host).ok()?;
        let tail = |out: &mut String| {
            out.push_str(here.path);
            if let Some(query) = here.query {
                out.push('?');
                out.push_str(query);
            }
        };
        let location = match self {
            Location::Parts { scheme, host: new_host, port } => {
                let (old_host, old_port) = split_host_port(host);
                let scheme = scheme.unwrap_or(here.scheme);
                let moved = scheme != here.scheme || new_host.as_deref().is_some_and(|h| !h.eq_ignore_ascii_case(old_host));
                let port = port.or(if moved { None } else { old_port });
                let mut out = format!("{scheme}://{}", new_host.as_deref().unwrap_or(old_host));
                if let Some(port) = port.filter(|&p| p != default_port(scheme)) {
                    out.push(':');
                    out.push_str(&port.to_string());
                }
                tail(&mut out);
                out
            }
            Location::Fixed { template, keep_path } => {
                let bytes = template.expand_with(source, |value, out| out.extend(percent_encode(value, VALUE).flat_map(str::bytes)));
                let mut out = String::from_utf8_lossy(&bytes).into_owned();
                if *keep_path {
                    let (scheme, authority, _) = split_url(&out)?;
                    out = format!("{scheme}://{authority}");
                    tail(&mut out);
                }
                out
            }
        };
        let mut here_url = format!("{}://{host}", here.scheme);
        tail(&mut here_url);
        (!same_place(&location, &here_url)).then_some(location)
    }
}

/// A host name (letters, digits, `-`, `.`) or a bracketed IPv6 address, without a port.
fn check_host(host: &str) -> Result<(), String> {
    let ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') && !host.starts_with(['.', '-'])
    };
    if !ok {
        return Err(format!("`{host}` is not a host name or a bracketed IPv6 address (a port goes in `port`)"));
    }
    Ok(())
}

/// `http://` or `https://`, then a literal host, then anything that is a URL's (no spaces or
/// control characters).
fn check_location(location: &str) -> Result<(), String> {
    let Some((_, authority, _)) = split_url(location) else {
        return Err(format!("`{location}` is not an absolute `http://` or `https://` URL"));
    };
    let (host, _) = split_host_port(authority);
    if authority.contains("${") || authority.contains('@') || check_host(host).is_err() {
        return Err(format!(
            "`{location}`: the host must be written out (no variables, no user info), so a request cannot choose where it is sent"
        ));
    }
    if let Some(c) = location.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{location}` holds {c:?}: write spaces and control characters percent-encoded"));
    }
    Ok(())
}

/// Scheme, authority and the rest (path, query, fragment) of an absolute http(s) URL.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    (!authority.is_empty()).then_some((scheme, authority, tail))
}

/// A `Host` value's host and port (`[::1]:8080` gives `[::1]` and 8080).
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    let port_at = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return (authority, None),
    };
    match authority[port_at + 1..].parse() {
        Ok(port) => (&authority[..port_at], Some(port)),
        Err(_) => (authority, None),
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 }
}

/// Whether two absolute URLs name one place: the same scheme, host (any case) and port (a
/// default one written or not), and the same path, query and fragment.
fn same_place(a: &str, b: &str) -> bool {
    let (Some((scheme_a, auth_a, rest_a)), Some((scheme_b, auth_b, rest_b))) = (split_url(a), split_url(b)) else {
        return false;
    };
    let (host_a, port_a) = split_host_port(auth_a);
    let (host_b, port_b) = split_host_port(auth_b);
    scheme_a.eq_ignore_ascii_case(scheme_b)
        && host_a.eq_ignore_ascii_case(host_b)
        && port_a.unwrap_or(default_port(scheme_a)) == port_b.unwrap_or(default_port(scheme_b))
        && rest_a == rest_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_sdk::template::MapSource;

    fn location(json: &str) -> Location {
        let config: Config = serde_json::from_str(json).unwrap();
        Location::from_config(&config).unwrap()
    }

    fn error(json: &str) -> String {
        let config: Config = serde_json::from_str(json).unwrap();
        Location::from_config(&config).unwrap_err()
    }

    fn at(loc: &Location, scheme: &str, host: &str, path: &str, query: Option<&str>) -> Option<String> {
        let here = RequestUrl { scheme, host: host.as_bytes(), path, query };
        loc.for_request(&here, &MapSource::default().param("page", "a b/c?d&e=f"))
    }

    #[test]
    fn a_scheme_redirect_keeps_host_path_and_query_and_drops_the_port() {
        let https = location(r#"{"scheme": "https"}"#);
        assert_eq!(at(&https, "http", "shop.example", "/a/b", Some("x=1&y")).as_deref(), Some("https://shop.example/a/b?x=1&y"));
        assert_eq!(at(&https, "http", "shop.example:8080", "/", None).as_deref(), Some("https://shop.example/"));
        assert_eq!(at(&https, "http", "[::1]:8080", "/", None).as_deref(), Some("https://[::1]/"));
        assert_eq!(at(&https, "https", "shop.example", "/a", None), None, "already there");
        assert_eq!(at(&https, "https", "shop.example:8443", "/a", None), None, "already there, on another port");
        let with_port = location(r#"{"scheme": "https", "port": 8443}"#);
        assert_eq!(at(&with_port, "http", "shop.example:8080", "/a", None).as_deref(), Some("https://shop.example:8443/a"));
        assert_eq!(at(&with_port, "https", "shop.example:8443", "/a", None), None);
        let default_port = location(r#"{"scheme": "https", "port": 443}"#);
        assert_eq!(at(&default_port, "http", "h", "/", None).as_deref(), Some("https://h/"));
        assert_eq!(at(&default_port, "https", "h", "/", None), None, "443 written or not");
    }

    #[test]
    fn a_host_redirect_moves_to_the_host_and_keeps_the_rest() {
        let moved = location(r#"{"host": "www.Example.com"}"#);
        assert_eq!(at(&moved, "https", "example.com:8443", "/p", Some("q")).as_deref(), Some("https://www.example.com/p?q"));
        assert_eq!(at(&moved, "http", "WWW.example.com", "/p", None), None);
        let port_only = location(r#"{"port": 8080}"#);
        assert_eq!(at(&port_only, "http", "h:9090", "/p", None).as_deref(), Some("http://h:8080/p"));
        assert_eq!(at(&port_only, "http", "h:8080", "/p", None), None);
    }

    #[test]
    fn a_fixed_location_expands_encoded_values_and_keeps_the_path_only_when_asked() {
        let docs = location(r#"{"location": "https://docs.example.com/v2/${param.page}"}"#);
        assert_eq!(
            at(&docs, "http", "api.example", "/old", Some("x=1")).as_deref(),
            Some("https://docs.example.com/v2/a%20b/c%3Fd%26e%3Df")
        );
        let kept = location(r#"{"location": "https://new.example/ignored?z", "keep_path": true}"#);
        assert_eq!(at(&kept, "http", "old.example", "/a/b", Some("x=1")).as_deref(), Some("https://new.example/a/b?x=1"));
        assert_eq!(at(&kept, "https", "NEW.example:443", "/a/b", Some("x=1")), None, "already there");
        let bare = location(r#"{"location": "https://new.example", "keep_path": true}"#);
        assert_eq!(at(&bare, "http", "old.example", "/", None).as_deref(), Some("https://new.example/"));
    }

    #[test]
    fn config_errors_say_what_is_expected() {
        assert_eq!(error(r#"{"scheme": "ftp"}"#), "`scheme`: `ftp` is not `http` or `https`");
        assert!(error(r#"{"host": "example.com:8080"}"#).starts_with("`host`: `example.com:8080` is not a host name"));
        assert!(error(r#"{"host": ""}"#).starts_with("`host`: `` is not a host name"));
        assert!(error(r#"{"port": 0}"#).starts_with("`port`: 0 is no port"));
        assert!(error("{}").starts_with("nothing to redirect to"));
        assert!(error(r#"{"keep_path": true, "scheme": "https"}"#).starts_with("`keep_path` goes with `location`"));
        assert!(error(r#"{"location": "https://a.example/", "host": "b.example"}"#).starts_with("`location` and `scheme`/`host`/`port` are exclusive"));
        assert!(error(r#"{"location": "/relative"}"#).contains("is not an absolute `http://` or `https://` URL"));
        assert!(error(r#"{"location": "ftp://a.example/"}"#).contains("is not an absolute"));
        for open in ["https://${header.x-target}/", "https://evil.example@good.example/", "https://${query.h}.example/"] {
            assert!(error(&format!(r#"{{"location": "{open}"}}"#)).contains("the host must be written out"), "{open}");
        }
        assert!(error(r#"{"location": "https://a.example/a b"}"#).contains("holds ' '"));
        assert!(error(r#"{"location": "https://a.example/${nope}"}"#).starts_with("`location`: unknown variable `${nope}`"));
    }

    #[test]
    fn hosts_and_ports_are_split_as_written() {
        assert_eq!(split_host_port("h:80"), ("h", Some(80)));
        assert_eq!(split_host_port("h"), ("h", None));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
        assert_eq!(split_host_port("[::1]:81"), ("[::1]", Some(81)));
        assert_eq!(split_host_port("h:x"), ("h:x", None));
    }
}
