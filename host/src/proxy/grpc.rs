//! What the proxy does for gRPC requests (`content-type: application/grpc...`), whoever made
//! them (a gRPC client, or a plugin such as `builtin:grpc-transcode`): the route's timeout is
//! passed on as `grpc-timeout`, so the server stops working on a call the gateway gave up on.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `grpc-timeout`: the deadline of a gRPC call, e.g. `30000m`.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Most digits a `grpc-timeout` value may have (the gRPC HTTP/2 protocol spec).
const MAX_DIGITS_VALUE: u128 = 99_999_999;

/// True if the request is a gRPC call.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
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
