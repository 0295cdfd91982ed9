//! What a limiting plugin counts a request against: the `by` list of `builtin:rate-limit` and
//! `builtin:throttle` (`consumer`, `ip`, `route`, `header:<name>`, `param:<name>`), parsed once
//! ([`parse`]) and written into one state key per request ([`write()`]).
//!
//! Every part's value is escaped, so two requests share a key only when every part is the same:
//! a client cannot pick a value (`a|p=b`) that lands its requests in another client's bucket. A
//! header's value is kept as its digest (the first 16 bytes of its SHA-256, in hex): headers a
//! limit keys on are often credentials (`authorization`, `x-api-key`), which must not sit in
//! Redis, or in the gateway's memory, in plain text; and bytes that are not UTF-8 stay apart. A
//! request without the header has the part empty: all such requests share one bucket.
//!
//! ```
//! use airlock_sdk::limit_key;
//! use airlock_sdk::template::MapSource;
//!
//! let by = limit_key::parse(&["route".into(), "param:id".into(), "header:X-Key".into()]).unwrap();
//! let req = MapSource::default().route("orders").param("id", "a|p=b").header("x-key", "secret");
//! assert_eq!(limit_key::write(&by, &req), "r=orders|p=a%7Cp=b|h=2bb80d537b1da3e38bd30361aa855686");
//! ```

use crate::template::Source;

/// The longest window or refill period a limiter takes, in ms: a year. Longer ones are mistakes
/// (a `window_ms` of 9.2e18 made every Redis step fail "out of range" and fall back to memory).
pub const MAX_PERIOD_MS: u64 = 366 * 86_400_000;

/// One part of a limit key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The consumer an authentication plugin named; the client IP when there is none.
    Consumer,
    /// The client IP.
    Ip,
    /// The route id.
    Route,
    /// A request header's first value (name lower-cased); empty when absent.
    Header(String),
    /// A route parameter; empty when absent.
    Param(String),
}

/// Parses a `by` list; the error names the part and the ones there are (`by`: ...).
pub fn parse(by: &[String]) -> Result<Vec<KeyPart>, String> {
    let mut parts = Vec::with_capacity(by.len());
    for part in by {
        parts.push(match part.as_str() {
            "consumer" => KeyPart::Consumer,
            "ip" => KeyPart::Ip,
            "route" => KeyPart::Route,
            p => match p.split_once(':') {
                // A name no request can carry would put every request in one bucket.
                Some(("header", h)) => KeyPart::Header(crate::header_rules::header_name(h).map_err(|e| format!("`by`: `{p}`: {e}"))?),
                Some(("param", n)) if !n.is_empty() => KeyPart::Param(n.to_owned()),
                _ => return Err(format!("`by`: unknown key part `{p}` (use consumer, ip, route, header:<name>, param:<name>)")),
            },
        });
    }
    if parts.is_empty() {
        return Err("`by`: give at least one key part".into());
    }
    Ok(parts)
}

/// [`write()`], or why the request has no one key: a keyed header given in several lines that
/// differ. Keyed on one line, a request whose first line was made up and whose second named an
/// over-limit tenant went on past that tenant's limit with both lines; keyed on them all, any
/// tenant with a made-up line beside it would. Which line the upstream reads is its own choice,
/// so the request is refused (a limiter answers 400).
pub fn key(by: &[KeyPart], req: &impl Source) -> Result<String, String> {
    for part in by {
        if let KeyPart::Header(h) = part {
            let lines = req.header_lines(h);
            if lines.windows(2).any(|pair| pair[0] != pair[1]) {
                return Err(format!("header `{h}` is given in {} lines that differ, and the limit is kept per value of it: send one", lines.len()));
            }
        }
    }
    Ok(write(by, req))
}

/// The key of `req`: each part as `tag=value`, `|`-separated (`c=alice|r=orders`), each value
/// escaped ([`escape_into`]); a header part by its first line ([`key`] refuses several).
pub fn write(by: &[KeyPart], req: &impl Source) -> String {
    let mut key = String::with_capacity(64);
    for (i, part) in by.iter().enumerate() {
        if i > 0 {
            key.push('|');
        }
        // Pushed piece by piece: `format!` machinery showed in the guest's profile.
        match part {
            KeyPart::Consumer => match req.context("consumer") {
                Some(c) => push(&mut key, "c=", c.as_bytes()),
                None => push(&mut key, "ip=", req.client_ip().as_bytes()),
            },
            KeyPart::Ip => push(&mut key, "ip=", req.client_ip().as_bytes()),
            KeyPart::Route => push(&mut key, "r=", req.route().as_bytes()),
            KeyPart::Header(h) => {
                key.push_str("h=");
                if let Some(value) = req.header(h) {
                    push_digest(&mut key, &value);
                }
            }
            KeyPart::Param(p) => push(&mut key, "p=", req.param(p).unwrap_or_default().as_bytes()),
        }
    }
    key
}

fn push(key: &mut String, tag: &str, value: &[u8]) {
    key.push_str(tag);
    escape_into(key, value);
}

/// Appends the first 16 bytes of `value`'s SHA-256 in lower-case hex.
fn push_digest(key: &mut String, value: &[u8]) {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in &Sha256::digest(value)[..16] {
        key.push(HEX[usize::from(b >> 4)] as char);
        key.push(HEX[usize::from(b & 0xf)] as char);
    }
}

/// Appends `value` with `%`, `|`, control bytes and every byte outside ASCII as `%XX`: the
/// separator cannot occur inside a part, and distinct values stay distinct.
pub fn escape_into(out: &mut String, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let plain = |b: &u8| *b != b'%' && *b != b'|' && (0x20..0x7f).contains(b);
    // Most values (a consumer id, an IP, a route) need nothing: copied whole.
    if value.iter().all(plain)
        && let Ok(text) = std::str::from_utf8(value)
    {
        out.push_str(text);
        return;
    }
    for &b in value {
        if b == b'%' || b == b'|' || !(0x20..0x7f).contains(&b) {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push(b as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::MapSource;

    fn by(parts: &[&str]) -> Vec<KeyPart> {
        parse(&parts.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn parts_parse_and_unknown_ones_are_named() {
        assert_eq!(by(&["route", "header:X-Key", "param:id"]), [KeyPart::Route, KeyPart::Header("x-key".into()), KeyPart::Param("id".into())]);
        assert_eq!(parse(&["cookie".into()]).unwrap_err(), "`by`: unknown key part `cookie` (use consumer, ip, route, header:<name>, param:<name>)");
        assert!(parse(&["header:".into()]).unwrap_err().starts_with("`by`: `header:`: "));
        assert!(parse(&["header:bad name".into()]).unwrap_err().starts_with("`by`: `header:bad name`: invalid header name"), "{:?}", parse(&["header:bad name".into()]));
        assert_eq!(parse(&[]).unwrap_err(), "`by`: give at least one key part");
    }

    #[test]
    fn consumer_falls_back_to_the_client_ip() {
        let parts = by(&["consumer"]);
        assert_eq!(write(&parts, &MapSource::default().client_ip("10.0.0.1")), "ip=10.0.0.1");
        assert_eq!(write(&parts, &MapSource::default().client_ip("10.0.0.1").context("consumer", "alice")), "c=alice");
    }

    #[test]
    fn a_value_cannot_forge_the_next_part() {
        // Unescaped, both were `p=1|p=2|p=`: the second client counted in the first one's bucket.
        let parts = by(&["param:a", "param:b"]);
        let first = write(&parts, &MapSource::default().param("a", "1|p=2").param("b", ""));
        let second = write(&parts, &MapSource::default().param("a", "1").param("b", "2|p="));
        assert_ne!(first, second);
        assert_eq!(first, "p=1%7Cp=2|p=");
        assert_eq!(second, "p=1|p=2%7Cp=");
        // An escape in the value is escaped in turn.
        assert_ne!(write(&parts, &MapSource::default().param("a", "%7C")), write(&parts, &MapSource::default().param("a", "|")));
        assert_eq!(write(&parts, &MapSource::default().param("a", "é\t")), "p=%C3%A9%09|p=");
    }

    #[test]
    fn header_values_are_kept_as_their_digest() {
        let parts = by(&["header:authorization"]);
        let key = write(&parts, &MapSource::default().header("authorization", "Basic YWxpY2U6czNjcmV0"));
        assert!(!key.contains("YWxp") && key.len() == 2 + 32, "{key}");
        // Distinct values, bytes outside UTF-8 included, stay distinct; none is not empty.
        let of = |value: &[u8]| write(&parts, &MapSource::default().header("authorization", value));
        assert_ne!(of(&[0xff]), of(&[0xfe]));
        assert_ne!(of(b""), write(&parts, &MapSource::default()));
        assert_eq!(write(&parts, &MapSource::default()), "h=");
        assert_eq!(of(b""), "h=e3b0c44298fc1c149afbf4c8996fb924", "SHA-256 of nothing");
    }

    /// A request whose keyed header has lines that differ has no one key; the same line twice,
    /// or one, keys as `write` does.
    #[test]
    fn a_header_of_lines_that_differ_is_refused() {
        struct Lines(Vec<&'static str>);
        impl Source for Lines {
            fn context(&self, _: &str) -> Option<String> {
                None
            }
            fn param(&self, _: &str) -> Option<String> {
                None
            }
            fn header(&self, _: &str) -> Option<Vec<u8>> {
                self.0.first().map(|l| l.as_bytes().to_vec())
            }
            fn header_lines(&self, _: &str) -> Vec<Vec<u8>> {
                self.0.iter().map(|l| l.as_bytes().to_vec()).collect()
            }
            fn query(&self, _: &str) -> Option<String> {
                None
            }
            fn request_id(&self) -> String {
                String::new()
            }
            fn route(&self) -> String {
                String::new()
            }
        }
        let parts = by(&["header:x-tenant", "route"]);
        let one = MapSource::default().header("x-tenant", "acme");
        assert_eq!(key(&parts, &Lines(vec!["acme"])), Ok(write(&parts, &one)));
        assert_eq!(key(&parts, &Lines(vec!["acme", "acme"])), Ok(write(&parts, &one)), "the same value twice is one");
        let err = key(&parts, &Lines(vec!["r123", "acme"])).unwrap_err();
        assert_eq!(err, "header `x-tenant` is given in 2 lines that differ, and the limit is kept per value of it: send one");
        assert_eq!(key(&by(&["route"]), &Lines(vec!["a", "b"])), Ok(write(&by(&["route"]), &one)), "a header not keyed on is not looked at");
    }
}
