//! Text on the wire: form encoding (RFC 6749 appendix B), the client's HTTP Basic credentials
//! (RFC 6749 2.3.1), scope tokens (RFC 6749 3.3), and where a request carries its bearer token
//! (RFC 6750 2.1 and 2.3). Plain functions, unit-tested natively.

use base64::Engine as _;

/// Longest token looked up, in bytes: opaque tokens are a few dozen bytes, JWT access tokens a
/// few KiB. A longer one is refused without a call.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// `application/x-www-form-urlencoded` encoding of `text` (UTF-8): ASCII letters, digits and
/// `*-._` as they are, a space as `+`, every other byte as `%XX`.
pub fn form_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
    }
    out
}

/// Decodes one name or value of a form-encoded query: `+` is a space, `%XX` a byte (a `%` not
/// followed by two hex digits stays as it is), bytes that are not UTF-8 become U+FFFD.
pub fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b))) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of a hex digit.
fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The `Authorization` value of the introspection call: HTTP Basic with the client id and secret
/// each form-encoded first, as RFC 6749 2.3.1 says (so a `:` in the id cannot move the split).
pub fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    let pair = format!("{}:{}", form_encode(client_id), form_encode(client_secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

/// The introspection call's form body: `token=...` and, unless empty, `token_type_hint=...`.
pub fn introspection_body(token: &str, token_type_hint: &str) -> String {
    let mut body = format!("token={}", form_encode(token));
    if !token_type_hint.is_empty() {
        body.push_str("&token_type_hint=");
        body.push_str(&form_encode(token_type_hint));
    }
    body
}

/// Whether `scope` is an RFC 6749 3.3 scope token: printable ASCII but space, `"` and `\`. Such a
/// scope can be quoted in a `WWW-Authenticate` challenge as it is.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty() && scope.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Whether a token found in a request may be looked up: 1 to [`MAX_TOKEN_BYTES`] bytes of
/// printable ASCII without spaces (RFC 6750's `b64token` and every opaque token format fit).
pub fn is_token_syntax(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN_BYTES && token.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The token of an `Authorization: Bearer <token>` value (scheme in any case), if it is one.
/// The scheme ends at a space: RFC 6750 2.1 has `"Bearer" 1*SP b64token`, so `Bearer<TAB>token`
/// is no bearer token (the request has none). Read exactly as `builtin:jwt` reads it (the value
/// trimmed, split at its first space, the rest trimmed), so either plugin finds the same token.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Where a request carries its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nowhere.
    Missing,
    /// Once: the token, and whether it was in the header (else in the query).
    One {
        /// The token as sent.
        token: String,
        /// Found in the token header; else in the query parameter.
        in_header: bool,
    },
    /// More than once (two header values, the header and the query, the parameter twice): which
    /// one the upstream would read cannot be known, so the request is refused (RFC 6750 2:
    /// a client uses one method per request).
    Several,
}

/// Finds the token in the token header's values (`Bearer <token>` when `bearer_scheme`, else the
/// whole trimmed value) and in the query parameter `token_query` (every occurrence).
pub fn find(header_values: &[Vec<u8>], bearer_scheme: bool, query: Option<&str>, token_query: Option<&str>) -> Found {
    let mut found: Vec<(String, bool)> = Vec::new();
    for value in header_values {
        let value = String::from_utf8_lossy(value);
        let token = if bearer_scheme { bearer(&value) } else { Some(value.trim()).filter(|t| !t.is_empty()) };
        if let Some(token) = token {
            found.push((token.to_owned(), true));
        }
    }
    if let (Some(query), Some(name)) = (query, token_query) {
        found.extend(query_values(query, name).into_iter().filter(|v| !v.is_empty()).map(|v| (v, false)));
    }
    match found.len() {
        0 => Found::Missing,
        1 => {
            let (token, in_header) = found.swap_remove(0);
            Found::One { token, in_header }
        }
        _ => Found::Several,
    }
}

/// Every value of the query parameter `name` (names compared decoded), decoded.
pub fn query_values(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k) == name).then(|| form_decode(v))
        })
        .collect()
}

/// The query without any parameter `name` (names compared decoded); the other parameters keep
/// their bytes and order. `None` when nothing is left.
pub fn strip_query(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && form_decode(pair.split_once('=').map_or(*pair, |(k, _)| k)) != name)
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded_before_base64() {
        // RFC 6749 2.3.1's own example.
        assert_eq!(basic_authorization("s6BhdRkqt3", "gX1fBat3bV"), "Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW");
        // A `:` in the id, and a secret with reserved, space and non-ASCII characters: encoded,
        // so the server splits at the one real `:`.
        let header = basic_authorization("my:client", "p@ss w/rd+é");
        let decoded = base64::engine::general_purpose::STANDARD.decode(header.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "my%3Aclient:p%40ss+w%2Frd%2B%C3%A9");
        assert_eq!(form_decode("my%3Aclient"), "my:client");
        assert_eq!(form_decode("p%40ss+w%2Frd%2B%C3%A9"), "p@ss w/rd+é");
    }

    #[test]
    fn the_body_is_form_encoded() {
        assert_eq!(introspection_body("abc.DEF-123_~x", "access_token"), "token=abc.DEF-123_%7Ex&token_type_hint=access_token");
        assert_eq!(introspection_body("a+b/c=", ""), "token=a%2Bb%2Fc%3D");
        assert_eq!(form_encode("a b&c=d"), "a+b%26c%3Dd");
    }

    #[test]
    fn form_decoding_keeps_broken_escapes() {
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
        assert_eq!(form_decode("%41%42"), "AB");
        assert_eq!(form_decode("%FF"), "\u{fffd}");
    }

    #[test]
    fn scope_tokens() {
        for ok in ["read", "orders:write", "https://api.example.com/read", "!#[]~"] {
            assert!(is_scope_token(ok), "{ok}");
        }
        for bad in ["", "a b", "say\"", "back\\slash", "é", "tab\t"] {
            assert!(!is_scope_token(bad), "{bad}");
        }
    }

    #[test]
    fn token_syntax() {
        assert!(is_token_syntax("ory_at_abc.def-ghi~jkl+/="));
        assert!(!is_token_syntax(""));
        assert!(!is_token_syntax("two words"));
        assert!(!is_token_syntax("caf\u{e9}"));
        assert!(is_token_syntax(&"a".repeat(MAX_TOKEN_BYTES)));
        assert!(!is_token_syntax(&"a".repeat(MAX_TOKEN_BYTES + 1)));
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("  bearer   abc  "), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        // RFC 6750 2.1: `1*SP` after the scheme, as builtin:jwt reads it: a tab is no separator.
        assert_eq!(bearer("Bearer\tabc"), None);
        assert_eq!(bearer("Bearer\t abc"), None);
        // After the space, the rest is trimmed as builtin:jwt trims it.
        assert_eq!(bearer("Bearer \tabc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer   "), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn the_token_is_found_once_or_the_request_is_ambiguous() {
        let h = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        let one = |token: &str, in_header| Found::One { token: token.to_owned(), in_header };
        assert_eq!(find(&h(&["Bearer t1"]), true, None, None), one("t1", true));
        assert_eq!(find(&h(&["Basic x", "Bearer t1"]), true, None, None), one("t1", true));
        assert_eq!(find(&h(&["Basic x"]), true, None, None), Found::Missing);
        assert_eq!(find(&h(&["Bearer\tt1"]), true, None, None), Found::Missing, "a tab does not end the scheme");
        assert_eq!(find(&h(&[]), true, Some("access_token=t1"), None), Found::Missing, "no `token_query`: the query is not read");
        assert_eq!(find(&h(&[]), true, Some("a=1&access_token=t%2B1"), Some("access_token")), one("t+1", false));
        assert_eq!(find(&h(&[]), true, Some("access_token="), Some("access_token")), Found::Missing);
        assert_eq!(find(&h(&["Bearer t1"]), true, Some("access_token=t2"), Some("access_token")), Found::Several);
        // An empty or valueless parameter carries no token: the header's is the one (and the
        // parameter is removed with it, unless `keep_token`).
        assert_eq!(find(&h(&["Bearer t1"]), true, Some("access_token="), Some("access_token")), one("t1", true));
        assert_eq!(find(&h(&["Bearer t1"]), true, Some("a=1&access_token"), Some("access_token")), one("t1", true));
        assert_eq!(find(&h(&["Bearer t1", "Bearer t2"]), true, None, None), Found::Several);
        assert_eq!(find(&h(&[]), true, Some("access_token=a&access%5Ftoken=b"), Some("access_token")), Found::Several);
        assert_eq!(find(&h(&[" raw-token "]), false, None, None), one("raw-token", true));
        assert_eq!(find(&h(&["Bearer x"]), false, None, None), one("Bearer x", true), "another header's value is the token, whole");
    }

    #[test]
    fn stripping_the_token_parameter_keeps_the_others_as_sent() {
        assert_eq!(strip_query("access_token=t&a=1&b=%20", "access_token").as_deref(), Some("a=1&b=%20"));
        assert_eq!(strip_query("a=1&access%5Ftoken=t&access_token&c", "access_token").as_deref(), Some("a=1&c"));
        assert_eq!(strip_query("access_token=t", "access_token"), None);
        assert_eq!(strip_query("a=1&&b=2", "access_token").as_deref(), Some("a=1&b=2"));
        assert_eq!(query_values("x=1&x=2&y=3", "x"), ["1", "2"]);
    }
}
