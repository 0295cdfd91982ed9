//! gRPC metadata rules a REST client's headers must keep once they are sent on as the call's
//! metadata.

/// Whether `value` can be a `-bin` header's value: gRPC reads it as base64 (padded or not,
/// PROTOCOL-HTTP2.md "Custom-Metadata"), several values joined by commas.
pub fn is_binary_value(value: &[u8]) -> bool {
    value.split(|&b| b == b',').all(|part| is_base64(part.trim_ascii()))
}

/// Standard-alphabet base64, with its `=` padding or without it.
fn is_base64(text: &[u8]) -> bool {
    let data = text.strip_suffix(b"==").or_else(|| text.strip_suffix(b"=")).unwrap_or(text);
    let padded = data.len() != text.len();
    let digits_ok = data.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    // A lone sixth bit is never a whole byte; padding completes a group of four exactly.
    digits_ok && data.len() % 4 != 1 && (!padded || text.len().is_multiple_of(4))
}

#[cfg(test)]
mod tests {
    use super::is_binary_value;

    #[test]
    fn base64_values_padded_or_not_and_lists_of_them_are_binary_metadata() {
        for good in ["", "AQID", "AQI", "AQ==", "AQ", "AQID, BAUG", "a+/Z"] {
            assert!(is_binary_value(good.as_bytes()), "{good}");
        }
        for bad in ["not base64!", "A", "AQ=", "AQID====", "AQ==x", "AQID,*", "é"] {
            assert!(!is_binary_value(bad.as_bytes()), "{bad}");
        }
    }
}
