//! `Content-Digest` (RFC 9530): a Dictionary of algorithm to byte sequence, checked against the
//! body the plugin was handed.

use sfv::{BareItem, Dictionary, ListEntry, Parser};
use sha2::Digest as _;

/// Whether the `Content-Digest` field (`values`, every instance) matches `body`: every
/// `sha-256` and `sha-512` member must be that digest of the body, and at least one must be
/// there. Other algorithms (RFC 9530's deprecated `md5`, `sha`, `crc32c`... or unknown ones) are
/// ignored, as section 4 lets a recipient do.
pub(crate) fn check(values: &[Vec<u8>], body: &[u8]) -> Result<(), String> {
    let joined: Vec<&str> = values
        .iter()
        .map(|v| std::str::from_utf8(v).map(str::trim))
        .collect::<Result<_, _>>()
        .map_err(|_| "`Content-Digest` is not a structured field")?;
    let dict: Dictionary =
        Parser::new(&joined.join(", ")).parse().map_err(|e| format!("`Content-Digest` is not a dictionary ({e})"))?;
    let mut checked = 0;
    for (alg, entry) in &dict {
        let expected: Vec<u8> = match alg.as_str() {
            "sha-256" => sha2::Sha256::digest(body).to_vec(),
            "sha-512" => sha2::Sha512::digest(body).to_vec(),
            _ => continue,
        };
        let ListEntry::Item(item) = entry else {
            return Err(format!("`Content-Digest`: `{}` is not a byte sequence", alg.as_str()));
        };
        let BareItem::ByteSequence(given) = &item.bare_item else {
            return Err(format!("`Content-Digest`: `{}` is not a byte sequence", alg.as_str()));
        };
        if *given != expected {
            return Err(format!("`Content-Digest`: the body does not match its `{}` digest", alg.as_str()));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err("`Content-Digest` has no `sha-256` or `sha-512` digest".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    /// RFC 9530 appendix B.1 / RFC 9421 B.2: the digests of `{"hello": "world"}`.
    const BODY: &[u8] = br#"{"hello": "world"}"#;
    const SHA256: &str = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
    const SHA512: &str =
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";

    #[test]
    fn rfc_digests_match_their_body() {
        assert_eq!(check(&[SHA256.into()], BODY), Ok(()));
        assert_eq!(check(&[SHA512.into()], BODY), Ok(()));
        assert_eq!(check(&[format!("{SHA256}, {SHA512}").into_bytes()], BODY), Ok(()));
        // Two field lines are one field.
        assert_eq!(check(&[SHA256.into(), SHA512.into()], BODY), Ok(()));
        // An algorithm this plugin does not know is ignored beside a known one.
        assert_eq!(check(&[format!("md5=:AAAA:, {SHA256}").into_bytes()], BODY), Ok(()));
    }

    #[test]
    fn mismatches_and_malformed_fields_fail() {
        assert!(check(&[SHA256.into()], b"{\"hello\": \"world!\"}").unwrap_err().contains("does not match"));
        // One matching digest does not excuse another that does not.
        let wrong = "sha-512=:AAAA:";
        assert!(check(&[format!("{SHA256}, {wrong}").into_bytes()], BODY).is_err());
        assert!(check(&[b"md5=:AAAA:".to_vec()], BODY).unwrap_err().contains("no `sha-256`"));
        assert!(check(&[b"sha-256=X48E9q".to_vec()], BODY).is_err());
        assert!(check(&[b"sha-256=\"X48E9q\"".to_vec()], BODY).is_err());
        assert!(check(&[b"sha-256=(:AAAA:)".to_vec()], BODY).is_err());
        assert!(check(&[vec![0xff]], BODY).is_err());
        assert!(check(&[], BODY).is_err());
    }
}
