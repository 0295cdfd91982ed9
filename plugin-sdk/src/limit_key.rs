//! What a limiting plugin counts a request against: the `by` list of `builtin:rate-limit` and
//! `builtin:throttle` (`consumer`, `ip`, `route`, `header:<name>`, `param:<name>`), parsed once
//! ([`parse`]) and written into one state key per request ([`write`]).
//!
//! Every part's value is escaped, so two requests share a key only when every part is the same:
//! a client cannot pick a header value (`a|h=b`) that lands its requests in another client's
//! bucket, and header bytes that are not UTF-8 are kept apart rather than all read as U+FFFD.
//!
//! ```
//! use airlock_sdk::limit_key;
//! use airlock_sdk::template::MapSource;
//!
//! let by = limit_key::parse(&["route".into(), "header:X-Key".into()]).unwrap();
//! let req = MapSource::default().route("orders").header("x-key", "a|h=b");
//! assert_eq!(limit_key::write(&by, &req), "r=orders|h=a%7Ch=b");
//! ```

use crate::template::Source;

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
                Some(("header", h)) if !h.is_empty() => KeyPart::Header(h.to_ascii_lowercase()),
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

/// The key of `req`: each part as `tag=value`, `|`-separated (`c=alice|r=orders`), each value
/// escaped ([`escape_into`]).
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
            KeyPart::Header(h) => push(&mut key, "h=", &req.header(h).unwrap_or_default()),
            KeyPart::Param(p) => push(&mut key, "p=", req.param(p).unwrap_or_default().as_bytes()),
        }
    }
    key
}

fn push(key: &mut String, tag: &str, value: &[u8]) {
    key.push_str(tag);
    escape_into(key, value);
}

/// Appends `value` with `%`, `|`, control bytes and every byte outside ASCII as `%XX`: the
/// separator cannot occur inside a part, and distinct values stay distinct.
pub fn escape_into(out: &mut String, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
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
        assert_eq!(parse(&["header:".into()]).unwrap_err(), "`by`: unknown key part `header:` (use consumer, ip, route, header:<name>, param:<name>)");
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
        // Unescaped, both were `h=1|h=2|h=`: the second client counted in the first one's bucket.
        let parts = by(&["header:x-a", "header:x-b"]);
        let first = write(&parts, &MapSource::default().header("x-a", "1|h=2").header("x-b", ""));
        let second = write(&parts, &MapSource::default().header("x-a", "1").header("x-b", "2|h="));
        assert_ne!(first, second);
        assert_eq!(first, "h=1%7Ch=2|h=");
        assert_eq!(second, "h=1|h=2%7Ch=");
        // An escape in the value is escaped in turn.
        assert_ne!(write(&parts, &MapSource::default().header("x-a", "%7C")), write(&parts, &MapSource::default().header("x-a", "|")));
    }

    #[test]
    fn bytes_outside_ascii_stay_distinct() {
        let parts = by(&["header:x-key"]);
        let a = write(&parts, &MapSource::default().header("x-key", [0xff]));
        let b = write(&parts, &MapSource::default().header("x-key", [0xfe]));
        assert_eq!((a.as_str(), b.as_str()), ("h=%FF", "h=%FE"));
        assert_eq!(write(&parts, &MapSource::default().header("x-key", "é\t")), "h=%C3%A9%09");
        assert_eq!(write(&parts, &MapSource::default()), "h=");
    }
}
