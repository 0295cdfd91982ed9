//! What the proxy does for gRPC requests (`content-type: application/grpc...`), whoever made
//! them (a gRPC client, or a plugin such as `builtin:grpc-transcode`): the route's timeout is
//! passed on as `grpc-timeout`, so the server stops working on a call the gateway gave up on;
//! and a gRPC client's call that the gateway or a plugin refuses in HTTP's form (a JSON 502, a
//! limiter's 429) is answered in gRPC's ([`answer_for_client`]).

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;

/// `grpc-status`: a call's outcome, in the trailers, or the head of a trailers-only answer.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`: the outcome's text, percent-encoded.
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// `grpc-timeout`: the deadline of a gRPC call, e.g. `30000m`.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Most digits a `grpc-timeout` value may have (the gRPC HTTP/2 protocol spec).
const MAX_DIGITS_VALUE: u128 = 99_999_999;

/// The gRPC content type (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web+proto`, ...) of a request or answer, if it is one.
fn grpc_content_type(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(header::CONTENT_TYPE).filter(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// True if the request (or answer) is gRPC.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    grpc_content_type(headers).is_some()
}

/// The content type of a gRPC client's call, if the request is one: what
/// [`answer_for_client`] answers its errors with.
pub fn client_content_type(headers: &HeaderMap) -> Option<HeaderValue> {
    grpc_content_type(headers).cloned()
}

/// The `grpc-status` in `headers` (a gRPC answer's trailers, or a trailers-only head), if it
/// is a number.
pub fn status(headers: &HeaderMap) -> Option<u32> {
    // 1*DIGIT (gRPC over HTTP/2): `parse` alone would take `+5` as 5.
    let digits = |v: &&str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    headers.get(&GRPC_STATUS).and_then(|v| v.to_str().ok()).map(str::trim).filter(digits).and_then(|v| v.parse().ok())
}

/// `response` as a gRPC client can read it: one the gateway or a plugin made in HTTP's form (a
/// status other than 200 without `grpc-status`, not of a gRPC content type) becomes a
/// trailers-only gRPC answer, 200 with `grpc-status` from the HTTP status as the gRPC spec maps
/// it (Envoy answers its own refusals of gRPC calls so), `grpc-message` from the JSON error's
/// `message` (else the status's reason), and the other headers (`Retry-After`, `X-Request-Id`,
/// rate-limit fields) kept. A gRPC client otherwise gets only what it infers from the HTTP
/// status, without the reason. Anything else is returned as it is.
pub fn answer_for_client(response: Response<ProxyBody>, content_type: HeaderValue) -> Response<ProxyBody> {
    let status = response.status();
    let grpc_already = response.headers().contains_key(&GRPC_STATUS) || is_grpc(response.headers());
    if status == StatusCode::OK || status.is_informational() || grpc_already {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let message = body
        .whole()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(bytes).ok())
        .and_then(|json| json.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")).trim_end().to_owned());
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, content_type);
    parts.headers.insert(GRPC_STATUS, HeaderValue::from(code_for_http_status(status)));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
        parts.headers.insert(GRPC_MESSAGE, value);
    }
    Response::from_parts(parts, ProxyBody::empty())
}

/// The gRPC status a client infers from an HTTP status (the gRPC spec's "HTTP to gRPC Status
/// Code Mapping").
fn code_for_http_status(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// `text` as `grpc-message` carries it: bytes outside printable ASCII, and `%`, percent-encoded.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Sets `grpc-timeout` on a gRPC call to the route's `timeout`, unless the client already asked
/// for a shorter one.
pub fn set_timeout(headers: &mut HeaderMap, timeout: Duration) {
    if !is_grpc(headers) {
        return;
    }
    if let Some(asked) = headers.get(&GRPC_TIMEOUT).and_then(|v| v.to_str().ok()).and_then(parse_timeout)
        && asked <= timeout
    {
        return;
    }
    headers.insert(GRPC_TIMEOUT, format_timeout(timeout));
}

/// `timeout` in the `grpc-timeout` syntax: at most 8 digits and a unit.
fn format_timeout(timeout: Duration) -> HeaderValue {
    let millis = timeout.as_millis();
    let text = if millis <= MAX_DIGITS_VALUE {
        format!("{millis}m")
    } else {
        format!("{}S", timeout.as_secs().min(MAX_DIGITS_VALUE as u64))
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("99999999S"))
}

/// Parses a `grpc-timeout` value (`H`, `M`, `S`, `m`, `u`, `n` units).
fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `grpc-status` is 1*DIGIT: a sign or other text is no status.
    #[test]
    fn a_status_is_digits_only() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(&GRPC_STATUS, HeaderValue::from_static(v));
            status(&h)
        };
        assert_eq!((with("5"), with(" 13 "), with("0")), (Some(5), Some(13), Some(0)));
        assert_eq!((with("+5"), with("-1"), with(""), with("5a")), (None, None, None, None));
    }

    #[test]
    fn a_refusal_in_http_form_becomes_a_trailers_only_grpc_answer() {
        let mut refused = Response::new(ProxyBody::full(bytes::Bytes::from_static(br#"{"status":429,"error":"rate_limited","message":"100% used, wait \u00e9"}"#)));
        *refused.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        refused.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        refused.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let answer = answer_for_client(refused, HeaderValue::from_static("application/grpc-web+proto"));
        assert_eq!(answer.status(), StatusCode::OK);
        let h = answer.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc-web+proto");
        assert_eq!((h[GRPC_STATUS].as_bytes(), h[GRPC_MESSAGE].as_bytes()), (&b"14"[..], &b"100%25 used, wait %C3%A9"[..]));
        assert_eq!(h[header::RETRY_AFTER], "3", "the other headers are kept");
        assert!(answer.body().whole().is_none(), "no body");
        // A non-JSON body: the status's reason. A gRPC answer, or a 200: as they are.
        let mut plain = Response::new(ProxyBody::full(bytes::Bytes::from_static(b"<h1>no</h1>")));
        *plain.status_mut() = StatusCode::FORBIDDEN;
        let answer = answer_for_client(plain, HeaderValue::from_static("application/grpc"));
        assert_eq!((answer.headers()[GRPC_STATUS].as_bytes(), answer.headers()[GRPC_MESSAGE].as_bytes()), (&b"7"[..], &b"403 Forbidden"[..]));
        let mut grpc = Response::new(ProxyBody::empty());
        grpc.headers_mut().insert(GRPC_STATUS, HeaderValue::from_static("5"));
        *grpc.status_mut() = StatusCode::NOT_FOUND;
        assert_eq!(answer_for_client(grpc, HeaderValue::from_static("application/grpc")).status(), StatusCode::NOT_FOUND);
    }

    fn grpc(timeout: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        if let Some(t) = timeout {
            headers.insert(GRPC_TIMEOUT, HeaderValue::from_str(t).expect("valid"));
        }
        headers
    }

    #[test]
    fn route_timeout_is_sent_unless_a_shorter_one_was_asked() {
        let mut h = grpc(None);
        set_timeout(&mut h, Duration::from_secs(30));
        assert_eq!(h[&GRPC_TIMEOUT], "30000m");
        let mut h = grpc(Some("2S"));
        set_timeout(&mut h, Duration::from_secs(30));
        assert_eq!(h[&GRPC_TIMEOUT], "2S");
        let mut h = grpc(Some("1H"));
        set_timeout(&mut h, Duration::from_secs(30));
        assert_eq!(h[&GRPC_TIMEOUT], "30000m");
        let mut plain = HeaderMap::new();
        set_timeout(&mut plain, Duration::from_secs(30));
        assert!(plain.is_empty());
        assert_eq!(format_timeout(Duration::from_secs(200_000)), "200000S");
    }
}
