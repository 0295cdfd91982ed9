//! The request path the gateway routes on is the path it forwards, and no upstream can read it as
//! another one.
//!
//! Without this, `/public/../admin` matches a `/public/` route (no authentication) and reaches an
//! upstream that resolves it to `/admin`; `//admin` misses an `/admin` route and lands on a
//! catch-all; `/public/%2e%2e/admin` does the same with the dots percent-encoded. So, before
//! routing (as nginx does before matching its locations, and Envoy with `normalize_path` and
//! `merge_slashes`):
//!
//! - dot segments are removed (RFC 3986 section 5.2.4), `%2e` counted as a dot (section 6.2.2.2);
//! - empty segments are merged (`//` is `/`);
//! - a path that climbs above the root (`/../etc/passwd`) is refused, like nginx does;
//! - so is a segment that hides a dot segment behind an encoded slash (`..%2f`, `%2e%2e%5c`) or a
//!   path parameter (`..;`): an upstream that decodes `%2f` or drops `;` parameters (Tomcat)
//!   would resolve it where the gateway did not route it;
//! - and a raw `\` anywhere: it is no URI character, and WHATWG URL parsers (Node, Deno, Bun)
//!   and IIS read it as `/`, so `/admin\users` would reach `/admin/users` past an `/admin` route;
//! - percent-encoded unreserved characters are decoded (section 6.2.2.2): `/%61dmin` is `/admin`
//!   (not in a segment with a stray `%`, where decoding could make a new `%XX`);
//! - an encoded NUL (`%00`) is refused, as nginx does: C-based servers end the path there.
//!
//! Everything else is kept byte for byte: other percent-encodings, the query, the case. The
//! upstream, the plugins (`path`) and the route all see the normalized path; the access log keeps
//! the client's own.
//!
//! An encoded slash or backslash inside a segment (`/reports%2F7`) is data by default, but every
//! WSGI server decodes it (`PATH_INFO` is `/reports/7`), so it would reach a protected route's
//! handler through a catch-all route: `[limits] encoded_slashes` ([`EncodedSlashes`]) refuses
//! such paths, or decodes them to `/` before the steps above, so the route is chosen on the
//! segments the upstream will see (and `/a%2F..%2Fadmin` is `/admin`, routed as such).

use http::Uri;
use http::uri::PathAndQuery;

use crate::config::EncodedSlashes;

/// Why a request's path was refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `..` segment with nothing left to remove.
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
    /// A segment holding a dot segment behind `%2f`, `%5c`, `\` or `;`.
    #[error("the path hides a `.` or `..` segment behind an encoded slash, a backslash or a `;`")]
    HiddenDotSegment,
    /// A raw `\`: not a URI character (RFC 3986), and read as `/` by WHATWG URL parsers (Node,
    /// Deno, Bun) and IIS, so `/admin\users` would reach `/admin/users` past an `/admin` route.
    #[error("the path holds a raw `\\` (percent-encode it as %5C)")]
    Backslash,
    /// `%2F` or `%5C` with `[limits] encoded_slashes = "reject"`: WSGI servers (and Tomcat or
    /// Spring when told to) decode them, so the upstream would split the segment the route was
    /// chosen on.
    #[error("the path holds an encoded slash or backslash (%2F or %5C), which the upstream could read as a path separator")]
    EncodedSlash,
    /// `%00`: a NUL byte once decoded, where C-based servers and file APIs end the path
    /// (`/files/report.pdf%00.jpg` read as `/files/report.pdf` past a check on the extension);
    /// nginx refuses it too.
    #[error("the path holds an encoded NUL (%00), which many servers read as the end of the path")]
    EncodedNul,
    /// The normalized path did not make a valid URI again (not expected: it only drops bytes).
    #[error("the normalized path is not a valid request target")]
    Invalid,
}

/// Normalizes the request's path in place (its URI is rebuilt only when the path changes), with
/// `[limits] encoded_slashes` applied first ([`normalize_with`]).
pub fn normalize_uri(uri: &mut Uri, slashes: EncodedSlashes) -> Result<(), PathError> {
    let Some(path) = normalize_with(uri.path(), slashes)? else {
        return Ok(());
    };
    let mut parts = std::mem::take(uri).into_parts();
    let target = match parts.path_and_query.as_ref().and_then(PathAndQuery::query) {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    parts.path_and_query = Some(PathAndQuery::try_from(target).map_err(|_| PathError::Invalid)?);
    *uri = Uri::from_parts(parts).map_err(|_| PathError::Invalid)?;
    Ok(())
}

/// The normalized form of `path`, or `None` when it is already normal (the common case, found
/// with one pass over its bytes and no allocation). Paths not starting with `/` (`*`) are left.
/// Encoded slashes are kept (`EncodedSlashes::Keep`): for paths a plugin or the config writes.
pub fn normalize(path: &str) -> Result<Option<String>, PathError> {
    normalize_with(path, EncodedSlashes::Keep)
}

/// [`normalize`] for a client's path, with `[limits] encoded_slashes` applied before the dot
/// segments are resolved: a path holding `%2F` or `%5C` refused, or those decoded to `/`. The
/// check runs only past [`is_normal`], which a path without `%` passes as before.
pub fn normalize_with(path: &str, slashes: EncodedSlashes) -> Result<Option<String>, PathError> {
    if !path.starts_with('/') || is_normal(path.as_bytes()) {
        return Ok(None);
    }
    if path.as_bytes().windows(3).any(|w| w == b"%00") {
        return Err(PathError::EncodedNul);
    }
    match decode_slashes(path, slashes)? {
        Some(decoded) => Ok(Some(resolve(&decoded)?.unwrap_or(decoded))),
        None => resolve(path),
    }
}

/// `path` with its encoded slashes and backslashes (`%2F`, `%5C`, either case) decoded to `/`
/// under `EncodedSlashes::Decode`, refused under `Reject`; `None` when there is nothing to
/// change (`Keep`, or none in the path).
fn decode_slashes(path: &str, slashes: EncodedSlashes) -> Result<Option<String>, PathError> {
    let encoded_at = |i: usize| matches!(path.as_bytes().get(i..i + 3), Some([b'%', b'2', b'f' | b'F'] | [b'%', b'5', b'c' | b'C']));
    if slashes == EncodedSlashes::Keep || !(0..path.len()).any(encoded_at) {
        return Ok(None);
    }
    if slashes == EncodedSlashes::Reject {
        return Err(PathError::EncodedSlash);
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = 0;
    let mut i = 0;
    while i < path.len() {
        if encoded_at(i) {
            // `%` is ASCII: `i` and `i + 3` are char boundaries.
            out.push_str(&path[rest..i]);
            out.push('/');
            i += 3;
            rest = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&path[rest..]);
    Ok(Some(out))
}

/// Why a route's `path` or `path_prefix` could never match under `[limits] encoded_slashes`:
/// one holding `%2F` or `%5C` is refused as every such request is (`reject`), or never seen
/// (`decode`: requests are routed with them decoded). `None` otherwise.
pub fn encoded_slash_problem(pattern: &str, slashes: EncodedSlashes) -> Option<String> {
    match decode_slashes(pattern, slashes) {
        Ok(None) => None,
        Err(_) => Some(format!(
            "`{pattern}` never matches: it holds an encoded slash or backslash, and `[limits] encoded_slashes = \"reject\"` answers such a request 400"
        )),
        Ok(Some(decoded)) => {
            let decoded = resolve(&decoded).ok().flatten().unwrap_or(decoded);
            Some(format!(
                "`{pattern}` never matches: `[limits] encoded_slashes = \"decode\"` routes requests with `%2F` and `%5C` decoded, where it reads `{decoded}`; write that"
            ))
        }
    }
}

/// The dot segments, empty segments and encoded unreserved characters of `path` (one that
/// starts with `/`) resolved, as [`normalize`] describes; `None` when nothing changes.
fn resolve(path: &str) -> Result<Option<String>, PathError> {
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    let mut kept: Vec<std::borrow::Cow<'_, str>> = Vec::new();
    let mut segments = path[1..].split('/').peekable();
    // Whether the output ends with `/`: after a trailing empty, `.` or `..` segment.
    let mut trailing_slash = false;
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match dots(segment) {
            Some(Dots::One) => trailing_slash = last,
            Some(Dots::Two) => {
                kept.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = last;
            }
            None if segment.is_empty() => trailing_slash = last,
            None => {
                if hides_dot_segment(segment) {
                    return Err(PathError::HiddenDotSegment);
                }
                kept.push(decode_unreserved(segment));
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Ok(if out == path { None } else { Some(out) })
}

/// True when nothing in the path can need normalizing: no `//`, no `/.`, no `;.`, no `%`, no `\`.
fn is_normal(path: &[u8]) -> bool {
    let mut previous = 0u8;
    for &byte in path {
        match byte {
            b'%' | b'\\' => return false,
            b'/' | b'.' if previous == b'/' => return false,
            // `a;..` hides `..` behind a `;` as `..;` does: read by `hides_dot_segment`.
            b'.' if previous == b';' => return false,
            _ => {}
        }
        previous = byte;
    }
    true
}

/// The segment with percent-encoded unreserved characters (letters, digits, `-`, `.`, `_`, `~`)
/// decoded (RFC 3986 6.2.2.2): `/%61dmin` is `/admin`, and must match the `/admin` route.
/// Other encodings (`%2F`, `%20`, ...) are data and stay as sent. A segment with a stray `%`
/// (one not starting `%XX`) is left whole: decoding beside it could make a new encoding
/// (`%%361dmin` would read `%61dmin`), which the upstream would decode once more (to `admin`)
/// where the route saw something else.
fn decode_unreserved(segment: &str) -> std::borrow::Cow<'_, str> {
    let unreserved_at = |i: usize| -> Option<u8> {
        let hex = segment.get(i + 1..i + 3)?;
        let byte = u8::from_str_radix(hex, 16).ok()?;
        (byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)).then_some(byte)
    };
    let bytes = segment.as_bytes();
    let stray = |i: usize| !matches!(bytes.get(i + 1..i + 3), Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit());
    if !bytes.iter().enumerate().any(|(i, &b)| b == b'%' && unreserved_at(i).is_some())
        || bytes.iter().enumerate().any(|(i, &b)| b == b'%' && stray(i))
    {
        return std::borrow::Cow::Borrowed(segment);
    }
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < segment.len() {
        match unreserved_at(i).filter(|_| segment.as_bytes()[i] == b'%') {
            Some(byte) => {
                out.push(char::from(byte));
                i += 3;
            }
            None => {
                // Char boundaries: `%` and the bytes around it are ASCII; anything else is
                // copied whole, one char at a time.
                let Some(c) = segment[i..].chars().next() else { break };
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

enum Dots {
    One,
    Two,
}

/// Whether a segment is `.` or `..`, with `%2e` read as a dot.
fn dots(segment: &str) -> Option<Dots> {
    let mut count = 0;
    let mut rest = segment.as_bytes();
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return None,
        };
        count += 1;
    }
    match count {
        1 => Some(Dots::One),
        2 => Some(Dots::Two),
        _ => None,
    }
}

/// Whether splitting the segment again at `%2f`, `%5c`, `\` and `;` gives a `.` or `..` piece.
fn hides_dot_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let mut pieces = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        let width = match &bytes[i..] {
            [b'\\' | b';', ..] => 1,
            [b'%', b'2', b'f' | b'F', ..] | [b'%', b'5', b'c' | b'C', ..] => 3,
            _ => 0,
        };
        if width == 0 {
            i += 1;
        } else {
            pieces.push(&segment[start..i]);
            i += width;
            start = i;
        }
    }
    if pieces.is_empty() {
        return false;
    }
    pieces.push(&segment[start..]);
    pieces.into_iter().any(|piece| dots(piece).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalize(path).map(|n| n.unwrap_or_else(|| path.to_owned()))
    }

    #[test]
    fn normal_paths_are_left_as_they_are() {
        for path in ["/", "/users/42", "/a.b/c.d", "/a/b/", "/v1/x..y", "*", "/a-./.b", "/m;v=1/n"] {
            assert_eq!(normalize(path), Ok(None), "{path}");
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(norm("/public/../admin"), Ok("/admin".into()));
        assert_eq!(norm("/a/./b/./c"), Ok("/a/b/c".into()));
        assert_eq!(norm("/a/b/.."), Ok("/a/".into()));
        assert_eq!(norm("/a/b/."), Ok("/a/b/".into()));
        assert_eq!(norm("/a/.."), Ok("/".into()));
        assert_eq!(norm("/."), Ok("/".into()));
        assert_eq!(norm("/a/b/../../c/"), Ok("/c/".into()));
    }

    #[test]
    fn percent_encoded_dots_count_as_dots() {
        assert_eq!(norm("/public/%2e%2e/admin"), Ok("/admin".into()));
        assert_eq!(norm("/public/%2E./admin"), Ok("/admin".into()));
        assert_eq!(norm("/public/.%2e/admin"), Ok("/admin".into()));
        assert_eq!(norm("/a/%2e/b"), Ok("/a/b".into()));
        // Not a dot segment: kept, its dots decoded as any unreserved character is.
        assert_eq!(norm("/a%2eb/%2e%2e%2e"), Ok("/a.b/...".into()));
        assert_eq!(normalize("/caf%C3%A9/x%20y"), Ok(None));
    }

    #[test]
    fn empty_segments_are_merged() {
        assert_eq!(norm("//admin"), Ok("/admin".into()));
        assert_eq!(norm("/a//b///c"), Ok("/a/b/c".into()));
        assert_eq!(norm("/a//"), Ok("/a/".into()));
        assert_eq!(norm("//"), Ok("/".into()));
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded_and_other_encodings_kept() {
        assert_eq!(norm("/%61dmin"), Ok("/admin".to_owned()));
        assert_eq!(norm("/adm%69n/x"), Ok("/admin/x".to_owned()));
        assert_eq!(norm("/a%2D%5F%7E%2e%41"), Ok("/a-_~.A".to_owned()));
        assert_eq!(norm("/files/a%2Fb%20c%25"), Ok("/files/a%2Fb%20c%25".to_owned()));
        assert_eq!(norm("/caf%C3%A9/%6"), Ok("/caf%C3%A9/%6".to_owned()));
        assert_eq!(norm("/é%41"), Ok("/éA".to_owned()));
    }

    #[test]
    fn decoding_never_makes_a_new_percent_encoding_out_of_a_stray_percent() {
        // `%%361dmin` decoded as any other segment read `%61dmin`: routed as that (a catch-all),
        // then decoded by the upstream to `admin`. A segment with a `%` that starts no `%XX`
        // is kept as sent: the upstream decodes it once, to `%61dmin`, as the route saw it.
        for path in ["/%%361dmin", "/%6%31dmin", "/%%36%31dmin", "/reports%%32F7", "/reports%2%467", "/reports%5%433"] {
            for slashes in [EncodedSlashes::Keep, EncodedSlashes::Reject, EncodedSlashes::Decode] {
                assert_eq!(normalize_with(path, slashes), Ok(None), "{path} {slashes:?}");
            }
        }
        assert_eq!(norm("/%%361dmin/%61"), Ok("/%%361dmin/a".to_owned()), "other segments are decoded as before");
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        assert_eq!(normalize("/../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/%2e%2e/x"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
    }

    #[test]
    fn dot_segments_behind_encoded_or_back_slashes_are_refused() {
        for path in ["/public/..%2fadmin", "/public/..%2Fadmin", "/p/%2e%2e%5cadmin", "/p/a%2f..", "/p/x%2F.%2Fy", "/public/..;/admin", "/p/.;x=1/y", "/p/a;../b", "/p/a;."] {
            assert_eq!(normalize(path), Err(PathError::HiddenDotSegment), "{path}");
        }
        // An encoded slash alone is data (a file name, a key): kept.
        assert_eq!(normalize("/files/a%2Fb"), Ok(None));
        assert_eq!(normalize("/files/..a%2F..b"), Ok(None));
    }

    #[test]
    fn a_raw_backslash_is_refused() {
        for path in ["/admin\\users", "/p/..\\admin", "/a\\", "/\\admin"] {
            assert_eq!(normalize(path), Err(PathError::Backslash), "{path}");
        }
        // Encoded, it is data.
        assert_eq!(normalize("/files/a%5Cb"), Ok(None));
    }

    #[test]
    fn an_encoded_nul_is_refused() {
        for path in ["/files/report.pdf%00.jpg", "/%00", "/a/%00/b"] {
            assert_eq!(normalize(path), Err(PathError::EncodedNul), "{path}");
        }
        assert_eq!(normalize("/a%2000"), Ok(None), "`%20` then `00` is no NUL");
    }

    #[test]
    fn encoded_slashes_are_kept_refused_or_decoded_as_configured() {
        use EncodedSlashes::{Decode, Keep, Reject};
        let with = |path: &str, slashes| normalize_with(path, slashes).map(|n| n.unwrap_or_else(|| path.to_owned()));
        for path in ["/reports%2F7", "/reports%2f7", "/reports%5C7", "/reports%5c7"] {
            assert_eq!(with(path, Keep), Ok(path.to_owned()), "{path}: data, as before");
            assert_eq!(with(path, Reject), Err(PathError::EncodedSlash), "{path}");
            assert_eq!(with(path, Decode), Ok("/reports/7".to_owned()), "{path}");
        }
        // Decoded, they are separators like any other: dot segments resolved on the result (the
        // route sees what a decoding upstream will), empty ones merged, the root kept.
        assert_eq!(with("/a%2F..%2Fadmin", Decode), Ok("/admin".to_owned()));
        assert_eq!(with("/public/..%2Fadmin", Decode), Ok("/admin".to_owned()));
        assert_eq!(with("/a%2F%2Fb%2F", Decode), Ok("/a/b/".to_owned()));
        assert_eq!(with("/%61%2F%62", Decode), Ok("/a/b".to_owned()));
        assert_eq!(with("/x%2F..%2F..%2Fetc", Decode), Err(PathError::AboveRoot));
        assert_eq!(with("/a%2F..%2Fadmin", Reject), Err(PathError::EncodedSlash));
        // `%252F` is an encoded `%` before `2F`: no slash, in any mode; other encodings stay.
        for slashes in [Keep, Reject, Decode] {
            assert_eq!(with("/a%252Fb%20c", slashes), Ok("/a%252Fb%20c".to_owned()));
            assert_eq!(normalize_with("/reports/7", slashes), Ok(None), "a path without `%` is left alone");
        }
        // Unchanged under `keep`: a dot segment hidden behind one is still refused.
        assert_eq!(with("/public/..%2Fadmin", Keep), Err(PathError::HiddenDotSegment));
    }

    #[test]
    fn a_route_path_with_an_encoded_slash_never_matches_unless_they_are_kept() {
        use EncodedSlashes::{Decode, Keep, Reject};
        assert_eq!(encoded_slash_problem("/files/a%2Fb", Keep), None);
        assert_eq!(encoded_slash_problem("/files/{name}", Reject), None);
        let reject = encoded_slash_problem("/files/a%2Fb", Reject).unwrap_or_default();
        assert!(reject.contains("never matches") && reject.contains("\"reject\""), "{reject}");
        let decode = encoded_slash_problem("/files/a%5cb/..%2Fc", Decode).unwrap_or_default();
        assert!(decode.contains("never matches") && decode.contains("reads `/files/a/c`"), "{decode}");
    }

    #[test]
    fn the_uri_keeps_its_query_and_authority() {
        let mut uri: Uri = "http://example.com/a/../b?x=/../y".parse().unwrap();
        normalize_uri(&mut uri, EncodedSlashes::Keep).unwrap();
        assert_eq!(uri.to_string(), "http://example.com/b?x=/../y");
        let mut uri: Uri = "/a//b".parse().unwrap();
        normalize_uri(&mut uri, EncodedSlashes::Keep).unwrap();
        assert_eq!(uri.to_string(), "/a/b");
        let mut uri: Uri = "/../x?q".parse().unwrap();
        assert_eq!(normalize_uri(&mut uri, EncodedSlashes::Keep), Err(PathError::AboveRoot));
        let mut uri: Uri = "/reports%2F7?q=%2F".parse().unwrap();
        normalize_uri(&mut uri, EncodedSlashes::Decode).unwrap();
        assert_eq!(uri.to_string(), "/reports/7?q=%2F", "the query is not the path");
    }
}
