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

    /// The `Location` for a request, `Ok(None)` when the request is already there, or why none
    /// can be made (no host to keep, a location too long to send).
    pub fn for_request(&self, here: &RequestUrl<'_>, source: &impl Source) -> Result<Option<String>, Refusal> {
        let host = std::str::from_utf8(here.host).unwrap_or("");
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
                if new_host.is_none() && old_host.is_empty() {
                    return Err(Refusal::NoHost);
                }
                // Names are case-insensitive: sent as nginx's `$host` is, in lower case.
                let old_host = old_host.to_ascii_lowercase();
                let old_host = old_host.as_str();
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
                    // The configured scheme and host are checked at configure: always there.
                    let Some((scheme, authority, _)) = split_url(&out) else { return Ok(None) };
                    out = format!("{scheme}://{authority}");
                    tail(&mut out);
                }
                out
            }
        };
        if location.len() > MAX_LOCATION_BYTES {
            return Err(Refusal::TooLong(location.len()));
        }
        let mut here_url = format!("{}://{host}", here.scheme);
        tail(&mut here_url);
        Ok((!same_place(&location, &here_url)).then_some(location))
    }
}

/// The longest `Location` sent: proxies and browsers in front commonly take 8 KiB of headers;
/// a location built longer from the request's values is refused rather than sent to fail there.
pub const MAX_LOCATION_BYTES: usize = 8192;

/// Why a request gets no redirect but a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request names no host (an empty `Host`), and the location keeps the request's.
    NoHost,
    /// The location made for it would be this long.
    TooLong(usize),
}

impl Refusal {
    /// The status and message of the refusal.
    pub fn answer(&self) -> (u16, String) {
        match self {
            Refusal::NoHost => (400, "the request names no host to redirect to".to_owned()),
            Refusal::TooLong(len) => {
                (414, format!("the redirect location would be {len} bytes, more than {MAX_LOCATION_BYTES}: the request's values are too long"))
            }
        }
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
    let Some((_, authority, rest)) = split_url(location) else {
        return Err(format!("`{location}` is not an absolute `http://` or `https://` URL"));
    };
    if authority.contains("${") || authority.contains('@') || authority.contains('\\') {
        return Err(format!(
            "`{location}`: the host must be written out (no variables, no user info), so a request cannot choose where it is sent"
        ));
    }
    if !authority.is_ascii() {
        return Err(format!("`{location}`: write an internationalized host name in its ASCII form (`xn--...`)"));
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], &authority[i + 1..]),
        _ => (authority, ""),
    };
    if !port.is_empty() && !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err(format!("`{location}`: the port `{port}` is not 1-65535"));
    }
    check_host(host).map_err(|e| format!("`{location}`: {e}"))?;
    if let Some(c) = location.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{location}` holds {c:?}: write spaces and control characters percent-encoded"));
    }
    // Literal text only (a variable's value is encoded when it is put in): `%` starts an escape.
    let literal = rest.replace("$${", "");
    let mut at = 0;
    while let Some(i) = literal[at..].find('%') {
        let start = at + i;
        let hex = literal.get(start + 1..start + 3).unwrap_or("");
        if hex.len() != 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{location}`: `%` starts a percent-escape (two hex digits); write a literal `%` as `%25`"));
        }
        at = start + 3;
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

/// A `Host` value's host and port (`[::1]:8080` gives `[::1]` and 8080; `host:`, an empty
/// port, is the default one: RFC 3986 3.2.3).
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    let port_at = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return (authority, None),
    };
    match &authority[port_at + 1..] {
        "" => (&authority[..port_at], None),
        port => match port.parse() {
            Ok(port) => (&authority[..port_at], Some(port)),
            Err(_) => (authority, None),
        },
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 }
}

/// Whether two absolute URLs name the resource the gateway would serve for either: the same
/// scheme, host (any case) and port (a default one written or not), path once normalized as the
/// gateway normalizes a request's ([`normalized_path`]), and query. The fragment is not
/// compared: a client never sends one, so a location with one would otherwise never be "here".
fn same_place(a: &str, b: &str) -> bool {
    let (Some((scheme_a, auth_a, rest_a)), Some((scheme_b, auth_b, rest_b))) = (split_url(a), split_url(b)) else {
        return false;
    };
    let (host_a, port_a) = split_host_port(auth_a);
    let (host_b, port_b) = split_host_port(auth_b);
    let (path_a, query_a) = path_and_query(rest_a);
    let (path_b, query_b) = path_and_query(rest_b);
    scheme_a.eq_ignore_ascii_case(scheme_b)
        && host_a.eq_ignore_ascii_case(host_b)
        && port_a.unwrap_or(default_port(scheme_a)) == port_b.unwrap_or(default_port(scheme_b))
        && query_a == query_b
        && normalized_path(path_a) == normalized_path(path_b)
}

/// The path and query of what follows a URL's authority, its fragment dropped.
fn path_and_query(rest: &str) -> (&str, Option<&str>) {
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    }
}

/// A path as the gateway routes it (RFC 3986 6.2.2): empty is `/`, percent-encoded unreserved
/// characters decoded (`%7E` is `~`), other escapes in upper case, repeated `/` merged, `.` and
/// `..` segments resolved.
fn normalized_path(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = match bytes.get(i + 1..i + 3) {
            // Two hex digits: `from_str_radix` would also take a sign (`%+f`).
            Some(hex) if bytes[i] == b'%' && hex.iter().all(u8::is_ascii_hexdigit) => std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()),
            _ => None,
        };
        match escape {
            Some(b) if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => decoded.push(b),
            Some(b) => decoded.extend_from_slice(format!("%{b:02X}").as_bytes()),
            None => {
                decoded.push(bytes[i]);
                i += 1;
                continue;
            }
        }
        i += 3;
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        match segment {
            b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    let mut out = vec![b'/'];
    out.extend_from_slice(&segments.join(&b'/'));
    if trailing && out.len() > 1 {
        out.push(b'/');
    }
    out
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
        loc.for_request(&here, &MapSource::default().param("page", "a b/c?d&e=f")).expect("a location")
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
        assert!(error(r#"{"location": "https://a.test:99999/"}"#).contains("the port `99999` is not 1-65535"));
        assert!(error(r#"{"location": "https://a.test:0/"}"#).contains("the port `0` is not 1-65535"));
        assert!(error(r#"{"location": "https://пример.test/"}"#).contains("its ASCII form"));
        assert!(error(r#"{"location": "https://a_b.test/"}"#).contains("is not a host name"));
        assert!(error(r#"{"location": "https://a.test/%zz"}"#).contains("write a literal `%` as `%25`"));
        assert!(error(r#"{"location": "https://a.test/100%"}"#).contains("percent-escape"));
        assert!(location(r#"{"location": "https://a.test:/%41$${x}"}"#).for_request(
            &RequestUrl { scheme: "http", host: b"x", path: "/", query: None },
            &MapSource::default()
        ).is_ok());
    }

    #[test]
    fn a_location_the_request_already_has_is_not_sent_again() {
        // The fragment is never sent by clients.
        let frag = location(r#"{"location": "http://f.test/landing#top"}"#);
        assert_eq!(at(&frag, "http", "f.test", "/landing", None), None);
        assert_eq!(at(&frag, "http", "f.test", "/other", None).as_deref(), Some("http://f.test/landing#top"));
        // As the gateway normalizes the request's path: empty, `//`, `%7E`, dot segments, case of escapes.
        let bare = location(r#"{"location": "http://bare.test"}"#);
        assert_eq!(at(&bare, "http", "bare.test", "/", None), None);
        assert_eq!(at(&bare, "http", "bare.test", "/x", None).as_deref(), Some("http://bare.test"));
        for (configured, request_path) in [("/a//b", "/a/b"), ("/%7Euser", "/~user"), ("/a/./b/../c", "/a/c"), ("/x%2fy", "/x%2Fy")] {
            let loc = location(&format!(r#"{{"location": "http://n.test{configured}"}}"#));
            assert_eq!(at(&loc, "http", "n.test", request_path, None), None, "{configured}");
        }
        // The query is compared as it is.
        let q = location(r#"{"location": "http://n.test/p?a=1"}"#);
        assert_eq!(at(&q, "http", "n.test", "/p", Some("a=1")), None);
        assert!(at(&q, "http", "n.test", "/p", Some("a=2")).is_some());
    }

    #[test]
    fn odd_hosts_make_a_valid_location_or_a_refusal() {
        let port = location(r#"{"port": 8080}"#);
        assert_eq!(at(&port, "http", "p.test:", "/a", None).as_deref(), Some("http://p.test:8080/a"), "an empty port is none");
        let https = location(r#"{"scheme": "https"}"#);
        assert_eq!(at(&https, "http", "S.Test:", "/a", None).as_deref(), Some("https://s.test/a"), "lower case");
        let here = RequestUrl { scheme: "http", host: b"", path: "/a", query: None };
        assert_eq!(https.for_request(&here, &MapSource::default()), Err(Refusal::NoHost));
        let moved = location(r#"{"host": "new.test"}"#);
        assert_eq!(moved.for_request(&here, &MapSource::default()), Ok(Some("http://new.test/a".into())), "no host needed");
        let long = location(r#"{"location": "https://a.test/${header.x}"}"#);
        let source = MapSource::default().header("x", "%".repeat(3000));
        assert!(matches!(long.for_request(&here, &source), Err(Refusal::TooLong(9015))));
        assert_eq!(Refusal::TooLong(9015).answer().0, 414);
    }

    #[test]
    fn hosts_and_ports_are_split_as_written() {
        assert_eq!(split_host_port("h:"), ("h", None));
        assert_eq!(split_host_port("h:80"), ("h", Some(80)));
        assert_eq!(split_host_port("h"), ("h", None));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
        assert_eq!(split_host_port("[::1]:81"), ("[::1]", Some(81)));
        assert_eq!(split_host_port("h:x"), ("h:x", None));
    }
}
