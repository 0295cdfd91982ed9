//! Conditional `GET` and `HEAD` (RFC 9110 13): a client that already holds the answer asks with
//! `If-None-Match` or `If-Modified-Since`, and the cache says `304 Not Modified` instead of
//! sending the body again, as nginx's and Varnish's caches do.
//!
//! A hit is checked against the stored answer's validators. A miss that may be stored goes
//! upstream without the client's conditions, so that the upstream sends the whole answer the
//! cache needs (a `304` cannot be stored), and the answer is checked against them on its way
//! back (nginx does the same). Only a `200` becomes a `304`: no other status has a
//! representation the client could hold.

use std::time::SystemTime;

/// The request headers this module answers; on a miss they are taken off the upstream request.
pub const IF_NONE_MATCH: &str = "if-none-match";
/// See [`IF_NONE_MATCH`].
pub const IF_MODIFIED_SINCE: &str = "if-modified-since";

/// Request headers whose conditions the cache does not evaluate (they guard changes, or ask for
/// a part): a request with one bypasses the cache, so the upstream evaluates it.
pub const NOT_EVALUATED: &[&str] = &["if-match", "if-unmodified-since"];

/// Headers a `304` made from a `200` does not carry: they describe the body it does not send
/// (RFC 9110 15.4.5; nginx's not-modified filter clears the same).
pub const NOT_IN_304: &[&str] = &["content-type", "content-length", "content-encoding", "content-range", "accept-ranges", "content-md5"];

/// A client's conditions, as its headers gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Every `If-None-Match` field line, joined with `, ` (a list, RFC 9110 5.3).
    pub if_none_match: Option<String>,
    /// The `If-Modified-Since` value.
    pub if_modified_since: Option<String>,
}

impl Conditions {
    /// The conditions in the request's header lines. `None` when a value is not text (no
    /// valid entity-tag or HTTP-date is): the cache then leaves them to the upstream.
    pub fn from_lines(if_none_match: &[Vec<u8>], if_modified_since: Option<&[u8]>) -> Option<Self> {
        let text = |v: &[u8]| std::str::from_utf8(v).ok().map(str::to_owned);
        let if_none_match = if if_none_match.is_empty() {
            None
        } else {
            let parts = if_none_match.iter().map(|v| text(v)).collect::<Option<Vec<_>>>()?;
            Some(parts.join(", "))
        };
        let if_modified_since = match if_modified_since {
            Some(v) => Some(text(v)?),
            None => None,
        };
        Some(Self { if_none_match, if_modified_since })
    }

    /// Whether there is a condition to evaluate.
    pub fn is_empty(&self) -> bool {
        self.if_none_match.is_none() && self.if_modified_since.is_none()
    }

    /// Whether an answer with this status and these validators is "not modified" for the
    /// client (RFC 9110 13.2.2): `If-None-Match` when sent (weak comparison, `*` matches any),
    /// otherwise `If-Modified-Since` against `Last-Modified` (not later than the date).
    pub fn not_modified(&self, status: u16, etag: Option<&[u8]>, last_modified: Option<&[u8]>) -> bool {
        if status != 200 {
            return false;
        }
        if let Some(list) = &self.if_none_match {
            // `*`: the client holds some current representation, whatever its tag (13.1.2).
            return list.trim() == "*" || etag.is_some_and(|tag| list_matches(list.as_bytes(), tag));
        }
        // A date later than now is no date the client saw the answer at (RFC 7232 3.3; nginx
        // and Apache send the whole answer): ignored, as an unreadable one is.
        let Some(since) = self
            .if_modified_since
            .as_deref()
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
            .filter(|since| *since <= SystemTime::now())
        else {
            return false;
        };
        last_modified
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
            .is_some_and(|modified: SystemTime| modified <= since)
    }
}

/// Whether an `If-None-Match` list names `etag` (weak comparison: `W/"a"` matches `"a"`). A
/// list that does not parse matches nothing, so the full answer is sent.
fn list_matches(list: &[u8], etag: &[u8]) -> bool {
    let Some(wanted) = opaque_tag(etag.trim_ascii()) else { return false };
    let mut found = false;
    let mut rest = list;
    loop {
        rest = rest.trim_ascii_start();
        while let Some(after) = rest.strip_prefix(b",") {
            rest = after.trim_ascii_start();
        }
        if rest.is_empty() {
            return found;
        }
        let Some((tag, after)) = next_tag(rest) else { return false };
        found |= tag == wanted;
        rest = after.trim_ascii_start();
        if !(rest.is_empty() || rest.starts_with(b",")) {
            return false;
        }
    }
}

/// The quoted opaque part of one entity-tag (`W/"x"` or `"x"` give `"x"`), if it is one.
fn opaque_tag(tag: &[u8]) -> Option<&[u8]> {
    match next_tag(tag) {
        Some((opaque, [])) => Some(opaque),
        _ => None,
    }
}

/// The entity-tag at the start of `s` (its quoted opaque part) and what follows it. An
/// entity-tag may hold a comma, so a list is read tag by tag, not split (RFC 9110 8.8.3).
fn next_tag(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = s.strip_prefix(b"W/").unwrap_or(s);
    let inner = s.strip_prefix(b"\"")?;
    let end = inner.iter().position(|&b| b == b'"')?;
    let opaque = &s[..end + 2];
    if !inner[..end].iter().all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
        return None;
    }
    Some((opaque, &s[end + 2..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inm(list: &str) -> Conditions {
        Conditions { if_none_match: Some(list.into()), if_modified_since: None }
    }

    fn ims(date: &str) -> Conditions {
        Conditions { if_none_match: None, if_modified_since: Some(date.into()) }
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(inm("\"a\"").not_modified(200, Some(b"\"a\""), None));
        assert!(inm("W/\"a\"").not_modified(200, Some(b"\"a\""), None));
        assert!(inm("\"a\"").not_modified(200, Some(b"W/\"a\""), None));
        assert!(inm("\"x\", W/\"a\"").not_modified(200, Some(b"\"a\""), None));
        assert!(inm("*").not_modified(200, Some(b"\"a\""), None));
        assert!(!inm("\"b\"").not_modified(200, Some(b"\"a\""), None));
        assert!(!inm("\"a\"").not_modified(200, None, None));
        // Only a 200 has a representation the client holds.
        assert!(!inm("\"a\"").not_modified(404, Some(b"\"a\""), None));
    }

    #[test]
    fn entity_tags_are_read_whole_not_split_at_commas() {
        assert!(inm("\"a,b\"").not_modified(200, Some(b"\"a,b\""), None));
        assert!(!inm("\"a,b\"").not_modified(200, Some(b"\"a\""), None));
        assert!(inm(" , \"x\" ,, \"a,b\" ").not_modified(200, Some(b"\"a,b\""), None));
        // Not a list of entity-tags: the full answer.
        assert!(!inm("a").not_modified(200, Some(b"\"a\""), None));
        assert!(!inm("\"a\" junk").not_modified(200, Some(b"\"a\""), None));
        assert!(!inm("\"a").not_modified(200, Some(b"\"a\""), None));
        // A stored value that is no entity-tag matches no tag; `*` asks for none.
        assert!(!inm("\"a\"").not_modified(200, Some(b"a"), None));
        assert!(inm("*").not_modified(200, None, None));
    }

    #[test]
    fn if_modified_since_is_not_earlier_than_last_modified() {
        let lm = b"Tue, 01 Dec 2026 10:00:00 GMT";
        assert!(ims("Tue, 01 Dec 2026 10:00:00 GMT").not_modified(200, None, Some(lm)));
        assert!(ims("Wed, 02 Dec 2026 10:00:00 GMT").not_modified(200, None, Some(lm)));
        assert!(!ims("Mon, 30 Nov 2026 10:00:00 GMT").not_modified(200, None, Some(lm)));
        assert!(!ims("Wed, 02 Dec 2026 10:00:00 GMT").not_modified(200, None, None));
        assert!(!ims("yesterday").not_modified(200, None, Some(lm)));
        assert!(!ims("Wed, 02 Dec 2026 10:00:00 GMT").not_modified(200, None, Some(b"soon")));
        assert!(!ims("Wed, 21 Oct 2099 07:28:00 GMT").not_modified(200, None, Some(lm)), "a date in the future");
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let both = Conditions { if_none_match: Some("\"b\"".into()), if_modified_since: Some("Wed, 02 Dec 2026 10:00:00 GMT".into()) };
        assert!(!both.not_modified(200, Some(b"\"a\""), Some(b"Tue, 01 Dec 2026 10:00:00 GMT")));
    }

    #[test]
    fn conditions_are_read_from_text_lines_only() {
        let c = Conditions::from_lines(&[b"\"a\"".to_vec(), b"\"b\"".to_vec()], None).unwrap();
        assert_eq!(c.if_none_match.as_deref(), Some("\"a\", \"b\""));
        assert!(Conditions::from_lines(&[], None).unwrap().is_empty());
        assert_eq!(Conditions::from_lines(&[vec![0xff]], None), None);
        assert_eq!(Conditions::from_lines(&[], Some(&[0xff])), None);
    }
}
