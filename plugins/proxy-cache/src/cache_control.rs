//! `Cache-Control` (RFC 9111 5.2) and `Vary` (RFC 9110 12.5.5): what a request asks of the
//! cache, and whether and for how long a response may be stored.

/// The `Cache-Control` directives this cache acts on, gathered from every line of the header.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`: must not be stored (request: nor answered from a stored response, here).
    pub no_store: bool,
    /// `no-cache`, with or without field names: must not be served without revalidation, which
    /// this cache does not do, so it is not stored (request: the lookup is bypassed).
    pub no_cache: bool,
    /// `private`, with or without field names: for one user's cache only, never a shared one.
    pub private: bool,
    /// `max-age` in seconds: the smallest given; an unreadable value counts as 0 (stale).
    pub max_age: Option<u64>,
    /// `s-maxage` in seconds, for shared caches: wins over `max-age`. Read as `max-age` is.
    pub s_maxage: Option<u64>,
}

/// Most seconds a `max-age` is read as (~68 years): larger values are capped, not refused
/// (RFC 9111 1.2.2 asks caches to treat an overflowing delta as the largest they hold).
const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

impl Directives {
    /// Reads the directives from the header's lines (a directive may be on any line). Names are
    /// case-insensitive; unknown directives are ignored.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut d = Directives::default();
        for line in lines {
            for item in line.split(|&b| b == b',') {
                let (name, value) = match item.iter().position(|&b| b == b'=') {
                    Some(eq) => (trim(&item[..eq]), Some(unquote(trim(&item[eq + 1..])))),
                    None => (trim(item), None),
                };
                if name.eq_ignore_ascii_case(b"no-store") {
                    d.no_store = true;
                } else if name.eq_ignore_ascii_case(b"no-cache") {
                    d.no_cache = true;
                } else if name.eq_ignore_ascii_case(b"private") {
                    d.private = true;
                } else if name.eq_ignore_ascii_case(b"max-age") {
                    d.max_age = Some(smallest(d.max_age, delta_seconds(value)));
                } else if name.eq_ignore_ascii_case(b"s-maxage") {
                    d.s_maxage = Some(smallest(d.s_maxage, delta_seconds(value)));
                }
            }
        }
        d
    }

    /// A request's directives: whether it skips the cache (Kong's `cache_control = true`): a
    /// client asking for `no-cache` or `no-store` is neither answered from nor stored in it.
    pub fn bypasses_cache(&self) -> bool {
        self.no_cache || self.no_store
    }

    /// A response's directives: how long it may be stored, in milliseconds, given the cache's
    /// default TTL, the response's `Age` in seconds and its `Expires` lifetime
    /// ([`expires_lifetime`]); or why it may not be stored. `s-maxage`, else `max-age`, else
    /// `Expires` gives the lifetime (RFC 9111 4.2.1), less the age the response already has;
    /// without any of them the default TTL applies.
    pub fn ttl_ms(&self, default_ttl_ms: u64, age_secs: u64, expires_secs: Option<u64>) -> Result<u64, &'static str> {
        if self.no_store {
            return Err("Cache-Control: no-store");
        }
        if self.private {
            return Err("Cache-Control: private");
        }
        if self.no_cache {
            return Err("Cache-Control: no-cache");
        }
        let (lifetime, stale) = match (self.s_maxage.or(self.max_age), expires_secs) {
            (Some(lifetime), _) => (lifetime, "already stale (max-age reached)"),
            (None, Some(lifetime)) => (lifetime, "already stale (Expires reached, or not a date)"),
            (None, None) => return Ok(default_ttl_ms),
        };
        match lifetime.saturating_sub(age_secs) {
            0 => Err(stale),
            left => Ok(left.saturating_mul(1000)),
        }
    }
}

/// A response's freshness lifetime from `Expires`, in seconds: `Expires` less `Date` (the
/// response's own clock; `now` without a readable one), RFC 9111 4.2.1. `None` without
/// `Expires`; 0 (already expired) when it is not one valid HTTP-date, as the RFC has a cache read
/// `Expires: 0` (5.3), or is not after `Date`.
pub fn expires_lifetime(expires: &[Vec<u8>], date: Option<&[u8]>, now: std::time::SystemTime) -> Option<u64> {
    let [expires] = expires else {
        return (!expires.is_empty()).then_some(0);
    };
    let read = |value: &[u8]| std::str::from_utf8(value).ok().and_then(|v| httpdate::parse_http_date(v.trim()).ok());
    let Some(expires) = read(expires) else { return Some(0) };
    let date = date.and_then(read).unwrap_or(now);
    Some(expires.duration_since(date).map_or(0, |d| d.as_secs()))
}

/// Whether a response's `Vary` lines allow storing it under a key that varies on `vary_headers`
/// (lower-case): every header it names must be one of them, or `accept-encoding` (the body is
/// stored decoded: the gateway decodes bodies it buffers for plugins). `*` never does.
pub fn vary_allows<'a>(lines: impl IntoIterator<Item = &'a [u8]>, vary_headers: &[String]) -> Result<(), &'static str> {
    for line in lines {
        for item in line.split(|&b| b == b',') {
            let name = trim(item);
            if name.is_empty() || name.eq_ignore_ascii_case(b"accept-encoding") {
                continue;
            }
            if name == b"*" {
                return Err("Vary: *");
            }
            if !vary_headers.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes())) {
                return Err("Vary names a request header that is not in `vary_headers`");
            }
        }
    }
    Ok(())
}

/// A response's `Age` in seconds (RFC 9111 5.1): 0 when absent or unreadable.
pub fn age_seconds(value: Option<&[u8]>) -> u64 {
    value.and_then(|v| parse_u64(trim(v))).unwrap_or(0).min(MAX_DELTA_SECONDS)
}

/// `delta-seconds`, capped; an absent or unreadable value is 0 (treated as stale).
fn delta_seconds(value: Option<&[u8]>) -> u64 {
    value.and_then(parse_u64).unwrap_or(0).min(MAX_DELTA_SECONDS)
}

fn smallest(before: Option<u64>, new: u64) -> u64 {
    before.map_or(new, |b| b.min(new))
}

/// Digits only; saturates instead of overflowing.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &bytes[start..end]
}

fn unquote(bytes: &[u8]) -> &[u8] {
    match bytes {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Directives {
        Directives::parse(lines.iter().map(|l| l.as_bytes()))
    }

    #[test]
    fn expires_gives_the_lifetime_without_max_age() {
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = |t: SystemTime| httpdate::fmt_http_date(t).into_bytes();
        let lines = |t: SystemTime| vec![date(t)];
        assert_eq!(expires_lifetime(&[], None, now), None);
        assert_eq!(expires_lifetime(&lines(now + Duration::from_secs(90)), None, now), Some(90));
        // The response's own Date, not the cache's clock, is where the lifetime starts.
        let sent = now - Duration::from_secs(1000);
        assert_eq!(expires_lifetime(&lines(sent + Duration::from_secs(60)), Some(&date(sent)), now), Some(60));
        // Past, `0`, unreadable, or given twice: already expired.
        assert_eq!(expires_lifetime(&lines(now - Duration::from_secs(1)), None, now), Some(0));
        for bad in ["0", "-1", "tomorrow", ""] {
            assert_eq!(expires_lifetime(&[bad.as_bytes().to_vec()], None, now), Some(0), "{bad}");
        }
        assert_eq!(expires_lifetime(&[date(now + Duration::from_secs(90)), date(now + Duration::from_secs(9))], None, now), Some(0));
        // RFC 850 and asctime dates are HTTP-dates too.
        assert!(expires_lifetime(&[b"Sunday, 06-Nov-94 08:49:37 GMT".to_vec()], Some(b"Sun Nov  6 08:48:37 1994"), now) == Some(60));
        // max-age wins over Expires; without it Expires, less Age, decides.
        assert_eq!(parse(&["max-age=60"]).ttl_ms(30_000, 0, Some(5)), Ok(60_000));
        assert_eq!(parse(&["public"]).ttl_ms(30_000, 10, Some(90)), Ok(80_000));
        assert!(parse(&["public"]).ttl_ms(30_000, 0, Some(0)).is_err());
        assert!(parse(&[]).ttl_ms(30_000, 100, Some(90)).is_err());
    }

    #[test]
    fn directives_are_read_from_every_line_in_any_case() {
        let d = parse(&["public, Max-Age=60", "S-MAXAGE=\"30\""]);
        assert_eq!(d, Directives { max_age: Some(60), s_maxage: Some(30), ..Directives::default() });
        let d = parse(&["no-cache=\"set-cookie\", private=\"x\" ,no-store"]);
        assert!(d.no_cache && d.private && d.no_store);
        assert_eq!(parse(&[]), Directives::default());
        assert_eq!(parse(&["max-stale=5, must-revalidate"]), Directives::default());
    }

    #[test]
    fn lifetimes_prefer_s_maxage_and_subtract_the_age() {
        assert_eq!(parse(&["max-age=60"]).ttl_ms(30_000, 0, None), Ok(60_000));
        assert_eq!(parse(&["max-age=60, s-maxage=5"]).ttl_ms(30_000, 0, None), Ok(5_000));
        assert_eq!(parse(&["max-age=60"]).ttl_ms(30_000, 45, None), Ok(15_000));
        assert_eq!(parse(&["public"]).ttl_ms(30_000, 45, None), Ok(30_000), "the default TTL ignores Age");
        assert!(parse(&["max-age=60"]).ttl_ms(30_000, 60, None).is_err());
        assert!(parse(&["max-age=0"]).ttl_ms(30_000, 0, None).is_err());
    }

    #[test]
    fn unreadable_or_repeated_max_age_is_the_safe_reading() {
        assert!(parse(&["max-age=abc"]).ttl_ms(30_000, 0, None).is_err(), "unreadable: stale");
        assert!(parse(&["max-age"]).ttl_ms(30_000, 0, None).is_err());
        assert!(parse(&["max-age=-5"]).ttl_ms(30_000, 0, None).is_err());
        assert_eq!(parse(&["max-age=600", "max-age=10"]).ttl_ms(30_000, 0, None), Ok(10_000), "the smaller wins");
        assert_eq!(parse(&["max-age=99999999999999999999999"]).max_age, Some(MAX_DELTA_SECONDS));
    }

    #[test]
    fn refusing_directives_win_over_lifetimes() {
        for cc in ["no-store, max-age=60", "private, max-age=60", "no-cache, s-maxage=60"] {
            assert!(parse(&[cc]).ttl_ms(30_000, 0, None).is_err(), "{cc}");
        }
    }

    #[test]
    fn requests_bypass_on_no_cache_or_no_store_only() {
        assert!(parse(&["no-cache"]).bypasses_cache());
        assert!(parse(&["No-Store"]).bypasses_cache());
        assert!(!parse(&["max-age=0"]).bypasses_cache());
        assert!(!parse(&[]).bypasses_cache());
    }

    #[test]
    fn vary_must_be_covered_by_the_key() {
        let vary = vec!["accept-language".to_owned()];
        let lines = |l: &[&'static str]| l.iter().map(|s| s.as_bytes()).collect::<Vec<_>>();
        assert_eq!(vary_allows(lines(&["Accept-Language, accept-encoding"]), &vary), Ok(()));
        assert_eq!(vary_allows(lines(&[]), &vary), Ok(()));
        assert!(vary_allows(lines(&["*"]), &vary).is_err());
        assert!(vary_allows(lines(&["accept-encoding", "Origin"]), &vary).is_err());
    }

    #[test]
    fn age_is_read_leniently() {
        assert_eq!(age_seconds(Some(b" 12 ")), 12);
        assert_eq!(age_seconds(Some(b"x")), 0);
        assert_eq!(age_seconds(None), 0);
    }
}
