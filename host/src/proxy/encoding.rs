//! `Content-Encoding` of bodies buffered for plugins. A plugin that declared body access gets the
//! body decoded (gzip, deflate, br): the host decodes it after buffering, drops
//! `Content-Encoding`, and sends the body on identity-encoded (with an exact `Content-Length`, and
//! a strong `ETag` weakened, since the bytes are no longer the upstream's). Streamed bodies are
//! never touched.
//!
//! Decoding is bounded: the decoded body may not exceed the same limit as the buffered one (a
//! small gzip bomb is refused like a large body). It runs on the worker serving the request, not
//! in tokio's blocking pool: the workers bound how many bodies inflate at once, and so the memory
//! a burst of small bombs makes the gateway hold (each up to the body limit: the blocking pool's
//! 512 threads would let 5 GB inflate from 10 MB of requests). A 10 MiB body inflates in ~20 ms
//! of a test build. A coding the host cannot decode is refused:
//! 415 from a client, 502 from an upstream. So that upstreams do not pick one, the
//! `Accept-Encoding` sent upstream on routes whose plugins read the response body keeps only the
//! codings listed here.

use std::io::Read;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};

/// The codings the host decodes, as they are named in `Accept-Encoding`.
pub const DECODABLE: &str = "gzip, deflate, br";

/// Buffer size of the brotli decoder.
const BROTLI_BUFFER: usize = 4096;

/// Most gzip members (RFC 1952 2.2: a gzip body may be several, one after another) one layer may
/// hold. Starting a member costs far more than its bytes: 450,000 empty members, 9 MB that a
/// gzip layer above shrinks to 22 KB, took 7 s of CPU (debug build) where 9 MB in one member
/// took 0.08 s. Real bodies are one member.
pub const MAX_GZIP_MEMBERS: usize = 1024;

/// Most codings one body may be stacked in (curl's cap, since CVE-2022-32206). Each layer may
/// decode up to the body limit on the thread serving the request, and uncapped the layers
/// multiply: 300 of them, each a gzip of the next padded to 9 MB, fit in a 188 KB body.
pub const MAX_CODINGS: usize = 5;

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A coding the host does not decode.
    #[error("content-encoding `{0}` is not supported (the gateway decodes {DECODABLE})")]
    Unsupported(String),
    /// The decoded body is larger than the limit.
    #[error("decoded body exceeds {0} bytes")]
    TooLarge(u64),
    /// More codings than [`MAX_CODINGS`] are stacked on the body.
    #[error("content-encoding stacks more than {MAX_CODINGS} codings")]
    TooManyCodings,
    /// A gzip layer of more than [`MAX_GZIP_MEMBERS`] members.
    #[error("gzip body of more than {MAX_GZIP_MEMBERS} members")]
    TooManyMembers,
    /// The bytes are not valid for their coding.
    #[error("body is not valid {coding}: {reason}")]
    Corrupt {
        /// The coding.
        coding: &'static str,
        /// The decoder's message.
        reason: String,
    },
}

/// One content coding the host decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
}

impl Coding {
    fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            "deflate" => Some(Coding::Deflate),
            "br" => Some(Coding::Brotli),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }
}

/// The codings in `headers`' `Content-Encoding`, in the order they were applied (`identity`
/// skipped). Empty if the body is not encoded. More than [`MAX_CODINGS`] are refused before
/// any is decoded.
fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, DecodeError> {
    let mut found = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| DecodeError::Unsupported(String::from_utf8_lossy(value.as_bytes()).into_owned()))?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case("identity")) {
            if found.len() == MAX_CODINGS {
                return Err(DecodeError::TooManyCodings);
            }
            found.push(Coding::parse(name).ok_or_else(|| DecodeError::Unsupported(name.to_owned()))?);
        }
    }
    Ok(found)
}

/// Whether a message's content is encoded (a `Content-Encoding` other than `identity`).
pub fn is_encoded(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::CONTENT_ENCODING).iter().any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"))
}

/// Whether a response is an event stream (`text/event-stream`, any case, with or without
/// parameters): server-sent events, a body that ends only when the server stops sending.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|value| {
        let essence = value.as_bytes().split(|&b| b == b';').next().unwrap_or_default();
        essence.trim_ascii().eq_ignore_ascii_case(b"text/event-stream")
    })
}

/// Decodes `body` as its headers say, at most `limit` bytes out, and fixes the headers: no
/// `Content-Encoding`, no stale `Content-Length`, a strong `ETag` made weak. A body without
/// `Content-Encoding` (or an empty one, as in a HEAD response) is returned as it is.
pub fn decode_body(headers: &mut HeaderMap, body: Bytes, limit: u64) -> Result<Bytes, DecodeError> {
    let codings = codings(headers)?;
    if codings.is_empty() || body.is_empty() {
        return Ok(body);
    }
    let mut decoded = body;
    for coding in codings.into_iter().rev() {
        decoded = decode_one(coding, &decoded, limit)?;
    }
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    super::headers::content_changed(headers);
    Ok(decoded)
}

fn decode_one(coding: Coding, input: &[u8], limit: u64) -> Result<Bytes, DecodeError> {
    let reader: Box<dyn Read + '_> = match coding {
        Coding::Gzip => return decode_gzip(input, limit),
        Coding::Deflate if is_zlib(input) => Box::new(flate2::read::ZlibDecoder::new(input)),
        // Some servers send raw deflate (RFC 1951) under `deflate`; accept it too.
        Coding::Deflate => Box::new(flate2::read::DeflateDecoder::new(input)),
        Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(input, BROTLI_BUFFER)),
    };
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(usize::try_from(limit).unwrap_or(usize::MAX)));
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt { coding: coding.name(), reason: e.to_string() })?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// Decodes a gzip layer member by member, at most [`MAX_GZIP_MEMBERS`] of them and `limit`
/// bytes out.
fn decode_gzip(input: &[u8], limit: u64) -> Result<Bytes, DecodeError> {
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(usize::try_from(limit).unwrap_or(usize::MAX)));
    let mut rest = input;
    for _ in 0..MAX_GZIP_MEMBERS {
        // Reading from the slice itself, the decoder consumes the member and no byte past it.
        let mut member = flate2::bufread::GzDecoder::new(rest);
        let room = limit.saturating_add(1).saturating_sub(out.len() as u64);
        (&mut member)
            .take(room)
            .read_to_end(&mut out)
            .map_err(|e| DecodeError::Corrupt { coding: Coding::Gzip.name(), reason: e.to_string() })?;
        if out.len() as u64 > limit {
            return Err(DecodeError::TooLarge(limit));
        }
        rest = member.into_inner();
        if rest.is_empty() {
            return Ok(Bytes::from(out));
        }
    }
    Err(DecodeError::TooManyMembers)
}

/// True if `input` starts with a zlib (RFC 1950) header.
fn is_zlib(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Keeps in `Accept-Encoding` only the codings the host decodes (and `identity`), so an upstream
/// answering a body-reading chain picks one the host can hand to plugins decoded.
pub fn restrict_accept_encoding(headers: &mut HeaderMap) {
    let Some(value) = headers.get(header::ACCEPT_ENCODING) else { return };
    let kept: Vec<&str> = value
        .to_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|entry| {
            let name = entry.split(';').next().unwrap_or_default().trim();
            name.eq_ignore_ascii_case("identity") || Coding::parse(name).is_some()
        })
        .collect();
    let kept = if kept.is_empty() { "identity".to_owned() } else { kept.join(", ") };
    if let Ok(value) = HeaderValue::from_str(&kept) {
        headers.insert(header::ACCEPT_ENCODING, value);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn encoded(coding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(coding).unwrap());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        h
    }

    #[test]
    fn gzip_and_both_deflates_decode_and_headers_are_fixed() {
        let mut h = encoded("gzip");
        let out = decode_body(&mut h, Bytes::from(gzip(b"{\"a\":1}")), 100).unwrap();
        assert_eq!(&out[..], b"{\"a\":1}");
        assert!(!h.contains_key(header::CONTENT_ENCODING) && !h.contains_key(header::CONTENT_LENGTH));
        assert_eq!(h[header::ETAG], "W/\"v1\"");

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"zlib").unwrap();
        assert_eq!(&decode_body(&mut encoded("deflate"), Bytes::from(z.finish().unwrap()), 100).unwrap()[..], b"zlib");
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(b"raw").unwrap();
        assert_eq!(&decode_body(&mut encoded("deflate"), Bytes::from(raw.finish().unwrap()), 100).unwrap()[..], b"raw");
    }

    #[test]
    fn stacked_codings_decode_in_reverse_and_identity_is_skipped() {
        let twice = gzip(&gzip(b"deep"));
        assert_eq!(&decode_body(&mut encoded("gzip, identity, x-gzip"), Bytes::from(twice), 100).unwrap()[..], b"deep");
        let mut plain = HeaderMap::new();
        assert_eq!(&decode_body(&mut plain, Bytes::from_static(b"as is"), 1).unwrap()[..], b"as is");
    }

    #[test]
    fn bombs_corrupt_and_unknown_codings_are_refused() {
        let bomb = gzip(&vec![b'0'; 100_000]);
        assert!(bomb.len() < 1000);
        assert!(matches!(decode_body(&mut encoded("gzip"), Bytes::from(bomb), 99_999), Err(DecodeError::TooLarge(99_999))));
        let err = decode_body(&mut encoded("gzip"), Bytes::from_static(b"not gzip"), 100).unwrap_err();
        assert!(err.to_string().starts_with("body is not valid gzip: "), "{err}");
        let err = decode_body(&mut encoded("zstd"), Bytes::from_static(b"x"), 100).unwrap_err();
        assert_eq!(err.to_string(), "content-encoding `zstd` is not supported (the gateway decodes gzip, deflate, br)");
        let mut head = encoded("gzip");
        assert!(decode_body(&mut head, Bytes::new(), 100).unwrap().is_empty(), "an empty (HEAD) body stays empty");
    }

    #[test]
    fn more_stacked_codings_than_the_cap_are_refused_before_any_is_decoded() {
        let mut body = b"deep".to_vec();
        for _ in 0..MAX_CODINGS {
            body = gzip(&body);
        }
        let most = ["gzip"; MAX_CODINGS].join(", ");
        assert_eq!(&decode_body(&mut encoded(&most), Bytes::from(body.clone()), 100).unwrap()[..], b"deep");
        // One more layer, named in a second header line: refused, whatever the bytes.
        let mut one_more = encoded(&most);
        one_more.append(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let err = decode_body(&mut one_more, Bytes::from(gzip(&body)), 100).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyCodings), "{err}");
        assert_eq!(err.to_string(), format!("content-encoding stacks more than {MAX_CODINGS} codings"));
        assert_eq!(one_more.get_all(header::CONTENT_ENCODING).iter().count(), 2, "headers left as they were");
        // `identity` is no layer and does not count.
        let padded = format!("{most}, identity, identity");
        assert!(decode_body(&mut encoded(&padded), Bytes::from(body), 100).is_ok());
        let err = decode_body(&mut encoded(&vec!["gzip"; 1000].join(",")), Bytes::from_static(b"x"), 100).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyCodings), "{err}");
    }

    #[test]
    fn gzip_members_are_decoded_in_turn_up_to_the_cap() {
        let mut two = gzip(b"one, ");
        two.extend(gzip(b"two"));
        assert_eq!(&decode_body(&mut encoded("gzip"), Bytes::from(two.clone()), 100).unwrap()[..], b"one, two");
        let mut garbage = two.clone();
        garbage.extend_from_slice(b"not gzip");
        assert!(matches!(decode_body(&mut encoded("gzip"), Bytes::from(garbage), 100), Err(DecodeError::Corrupt { .. })));
        // Past the limit across members.
        assert!(matches!(decode_body(&mut encoded("gzip"), Bytes::from(two), 7), Err(DecodeError::TooLarge(7))));
        // As many empty members as the cap, then the body: fine; one more: refused.
        let empty = gzip(b"");
        let padded = |members: usize| {
            let mut body = empty.repeat(members - 1);
            body.extend(gzip(b"{}"));
            Bytes::from(body)
        };
        assert_eq!(&decode_body(&mut encoded("gzip"), padded(MAX_GZIP_MEMBERS), 100).unwrap()[..], b"{}");
        let err = decode_body(&mut encoded("gzip"), padded(MAX_GZIP_MEMBERS + 1), 100).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyMembers), "{err}");
    }

    #[test]
    fn accept_encoding_keeps_only_decodable_codings() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd, br;q=0.9, gzip, *;q=0.1"));
        restrict_accept_encoding(&mut h);
        assert_eq!(h[header::ACCEPT_ENCODING], "br;q=0.9, gzip");
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd"));
        restrict_accept_encoding(&mut h);
        assert_eq!(h[header::ACCEPT_ENCODING], "identity");
    }
}
