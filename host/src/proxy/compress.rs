//! gzip for responses on their way to clients that accept it (`[compression]`, a route's
//! `compress`): nginx's `gzip`, Envoy's compressor filter. Off unless enabled.
//!
//! A response is compressed when the client's `Accept-Encoding` takes gzip, the response has a
//! body and no `Content-Encoding` of its own, its media type is listed, its `Content-Length` (if
//! said) is at least `min_bytes`, and it does not say `Cache-Control: no-transform`; not a HEAD's,
//! a 204, 206 or 304 (a 304 revalidating a weak tag gets the `Vary` and weak `ETag` of the 200
//! it stands for). It then says `Content-Encoding: gzip` and `Vary: Accept-Encoding`, its
//! strong `ETag` becomes weak (the bytes are no longer the upstream's) and `Accept-Ranges` goes
//! (ranges would be of the uncompressed bytes). A whole body (buffered for a plugin, or a
//! plugin's) is compressed at once and keeps an exact `Content-Length`; a streamed one is
//! compressed frame by frame, each flushed, so a stream (server-sent events, a long download)
//! reaches the client as it comes, with its trailers after it.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::body::{BoxError, ProxyBody};
use crate::config::CompressionConfig;

/// What `[compression]` compresses, and how hard.
#[derive(Debug, Clone)]
pub struct Compression {
    level: flate2::Compression,
    min_bytes: u64,
    /// Media types, lower-case; `text/*` is kept as `text/`, a prefix.
    types: Box<[String]>,
}

impl Compression {
    /// The policy `[compression]` describes.
    pub fn new(config: &CompressionConfig) -> Self {
        let types = config
            .types
            .iter()
            .map(|t| {
                let t = t.trim().to_ascii_lowercase();
                t.strip_suffix('*').map(str::to_owned).unwrap_or(t)
            })
            .collect();
        Self { level: flate2::Compression::new(config.level), min_bytes: config.min_bytes, types }
    }

    /// Compresses `response` if it is one to compress (see the module's doc) and the client
    /// accepts gzip (`client_accepts`, [`accepts_gzip`]). One that would have been compressed
    /// for another client says `Vary: Accept-Encoding` all the same, so a shared cache does not
    /// hand it to a client that accepts gzip, or the reverse. The answer to a `head` request
    /// gets the headers the GET's would (RFC 9110 9.3.2), its length left out as unknown.
    pub fn apply(&self, response: &mut Response<ProxyBody>, client: ClientCoding, head: bool) {
        let client_accepts = client.accepts_gzip;
        if response.status() == StatusCode::NOT_MODIFIED {
            if client.revalidates_weak {
                self.not_modified(response.headers_mut(), client_accepts);
            }
            return;
        }
        if !self.applies(response.status(), response.headers(), (!head).then(|| response.body())) {
            return;
        }
        let headers = response.headers_mut();
        add_vary(headers);
        if !client_accepts {
            return;
        }
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.remove(header::ACCEPT_RANGES);
        super::headers::content_changed(headers);
        if head {
            headers.remove(header::CONTENT_LENGTH);
            return;
        }
        let body = std::mem::replace(response.body_mut(), ProxyBody::empty());
        let body = match body {
            ProxyBody::Full { data, trailers } => match self.whole(data.as_deref().unwrap_or_default()) {
                Ok(compressed) => {
                    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(compressed.len()));
                    ProxyBody::with_trailers(compressed, trailers)
                }
                // Writing to memory does not fail; were it to, the bytes go as they came.
                Err(_) => {
                    response.headers_mut().remove(header::CONTENT_ENCODING);
                    ProxyBody::Full { data, trailers }
                }
            },
            streamed => {
                response.headers_mut().remove(header::CONTENT_LENGTH);
                ProxyBody::Gzip { body: Box::pin(GzipStream::new(streamed, self.level)) }
            }
        };
        *response.body_mut() = body;
    }

    /// A 304 says what the 200 it stands for would have (RFC 9110 15.4.5): `Vary` and, to a
    /// client taking gzip, the weak `ETag` (a cache updating its compressed copy from a strong
    /// one could then pair it with a range of the uncompressed bytes). It has no body or,
    /// mostly, media type to judge by: [`Compression::apply`] asks only for a revalidation with
    /// a weak tag (the copy came through the compression, or its tag was weak already), so an
    /// image's strong tag stays strong (`If-Range`, `If-Match` compare strongly); and headers of
    /// its own showing the 200 was not compressed (another encoding, `no-transform`, a type not
    /// listed) leave it as it is.
    fn not_modified(&self, headers: &mut HeaderMap, client_accepts: bool) {
        if has_own_coding(headers)
            || no_transform(headers)
            || headers.get(header::CONTENT_TYPE).is_some_and(|t| !self.compresses(t))
        {
            return;
        }
        add_vary(headers);
        if client_accepts {
            super::headers::weaken_etag(headers);
        }
    }

    /// Whether a response of `status` with `headers` and `body` (none for a HEAD's, which has
    /// the GET's headers but no body) is one to compress.
    fn applies(&self, status: StatusCode, headers: &HeaderMap, body: Option<&ProxyBody>) -> bool {
        if status.as_u16() < 200 || matches!(status.as_u16(), 204 | 206 | 304) || body.is_some_and(|b| b.is_end_stream()) {
            return false;
        }
        if has_own_coding(headers) {
            return false;
        }
        let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if length.is_some_and(|l| l < self.min_bytes) || body.and_then(|b| b.size_hint().exact()).is_some_and(|l| l < self.min_bytes) {
            return false;
        }
        !no_transform(headers) && headers.get(header::CONTENT_TYPE).is_some_and(|t| self.compresses(t))
    }

    /// Whether media type `content_type` (its parameters ignored) is listed.
    fn compresses(&self, content_type: &HeaderValue) -> bool {
        let Ok(text) = content_type.to_str() else { return false };
        let media = text.split(';').next().unwrap_or("").trim();
        self.types.iter().any(|t| if t.ends_with('/') { starts_with_ignore_case(media, t) } else { media.eq_ignore_ascii_case(t) })
    }

    /// `data` gzipped whole.
    fn whole(&self, data: &[u8]) -> std::io::Result<Bytes> {
        let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 4 + 64), self.level);
        encoder.write_all(data)?;
        encoder.finish().map(Bytes::from)
    }
}

/// Whether the response says a `Content-Encoding` of its own (an upstream's gzip or br).
fn has_own_coding(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_ENCODING).is_some_and(|c| !c.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// Whether `Cache-Control` says `no-transform`.
pub(super) fn no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len() && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// What a compressing route reads of the client's request: whether it takes gzip, and whether
/// it revalidates with a weak tag (`If-None-Match: W/"..."`), the one a copy that came through
/// the compression holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCoding {
    /// [`accepts_gzip`].
    pub accepts_gzip: bool,
    /// `If-None-Match` holds a weak tag.
    pub revalidates_weak: bool,
}

impl ClientCoding {
    /// What `headers`, a request's, say.
    pub fn of(headers: &HeaderMap) -> Self {
        let revalidates_weak = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|tag| tag.trim_ascii().starts_with(b"W/"));
        Self { accepts_gzip: accepts_gzip(headers), revalidates_weak }
    }
}

/// Whether the client's `Accept-Encoding` takes gzip (`gzip`, `x-gzip` or `*`, with a q above 0;
/// an explicit `gzip;q=0` refuses it whatever `*` says).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    for item in headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')) {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let wanted = parts
            .find_map(|p| {
                let p = p.trim();
                p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))
            })
            .is_none_or(|q| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(wanted);
        } else if coding == "*" {
            any = Some(wanted);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Adds `Accept-Encoding` to `Vary`, unless it is there already or `Vary` is `*`.
fn add_vary(headers: &mut HeaderMap) {
    let listed = headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|name| name.trim_ascii() == b"*" || name.trim_ascii().eq_ignore_ascii_case(b"accept-encoding"));
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A streamed body gzipped as it passes: each data frame is compressed and flushed, the gzip
/// trailer follows the last one, and the body's trailers come after that.
pub struct GzipStream<B = ProxyBody> {
    inner: Pin<Box<B>>,
    /// `None` once the compressed stream is finished.
    encoder: Option<GzEncoder<Vec<u8>>>,
    /// The body's trailers, sent after the compressed data.
    trailers: Option<HeaderMap>,
}

impl<B> GzipStream<B> {
    /// `inner`, to be gzipped at `level`.
    fn new(inner: B, level: flate2::Compression) -> Self {
        Self { inner: Box::pin(inner), encoder: Some(GzEncoder::new(Vec::new(), level)), trailers: None }
    }
}

impl<B: Body<Data = Bytes, Error = BoxError>> Body for GzipStream<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        encoder.write_all(&data)?;
                        // A sync flush: what came so far reaches the client now.
                        encoder.flush()?;
                        let out = std::mem::take(encoder.get_mut());
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Err(frame) => this.trailers = frame.into_trailers().ok(),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    let Some(encoder) = this.encoder.take() else { continue };
                    return Poll::Ready(Some(encoder.finish().map(|tail| Frame::data(Bytes::from(tail))).map_err(Into::into)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http_body_util::BodyExt;

    use super::*;

    fn policy() -> Compression {
        Compression::new(&CompressionConfig { enabled: true, min_bytes: 10, ..CompressionConfig::default() })
    }

    /// A client that takes gzip or not, revalidating (for a 304) a copy with a weak tag.
    fn client(accepts_gzip: bool) -> ClientCoding {
        ClientCoding { accepts_gzip, revalidates_weak: true }
    }

    fn accepts(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, value.parse().unwrap());
        accepts_gzip(&headers)
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes).read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        assert!(accepts("gzip") && accepts("br, GZIP;q=0.5") && accepts("*") && accepts("x-gzip"));
        assert!(!accepts("br") && !accepts("gzip;q=0") && !accepts("gzip; q=0.000, *") && !accepts("identity"));
        assert!(!accepts("*;q=0") && accepts("*;q=0, gzip"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    fn response(content_type: &str, body: ProxyBody) -> Response<ProxyBody> {
        let mut r = Response::new(body);
        r.headers_mut().insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        r
    }

    #[test]
    fn a_whole_body_is_compressed_with_its_length_and_headers() {
        let text = "{\"hello\": \"world\"} ".repeat(50);
        let mut r = response("application/json; charset=utf-8", ProxyBody::full(Bytes::from(text.clone())));
        r.headers_mut().insert(header::ETAG, "\"v1\"".parse().unwrap());
        r.headers_mut().insert(header::ACCEPT_RANGES, "bytes".parse().unwrap());
        r.headers_mut().insert(header::VARY, "Origin".parse().unwrap());
        policy().apply(&mut r, client(true), false);
        let h = r.headers();
        assert_eq!((h["content-encoding"].as_bytes(), h["etag"].as_bytes()), (&b"gzip"[..], &b"W/\"v1\""[..]));
        assert!(h.get("accept-ranges").is_none());
        let vary: Vec<&[u8]> = h.get_all("vary").iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(vary, [&b"Origin"[..], b"Accept-Encoding"]);
        let ProxyBody::Full { data: Some(data), .. } = r.body() else { panic!("a whole body stays whole") };
        assert_eq!(h["content-length"].to_str().unwrap(), data.len().to_string());
        assert!(data.len() < text.len() / 5);
        assert_eq!(gunzip(data), text);
    }

    #[test]
    fn what_is_left_as_it_is() {
        let big = || ProxyBody::full(Bytes::from("x".repeat(100)));
        type Change = Box<dyn Fn(&mut Response<ProxyBody>)>;
        let cases: [(&str, Change); 7] = [
            ("image/png", Box::new(|_| {})),
            ("text/plain", Box::new(|r| drop(r.headers_mut().insert(header::CONTENT_ENCODING, "br".parse().unwrap())))),
            ("text/plain", Box::new(|r| drop(r.headers_mut().insert(header::CACHE_CONTROL, "public, no-transform".parse().unwrap())))),
            ("text/plain", Box::new(|r| *r.status_mut() = StatusCode::PARTIAL_CONTENT)),
            ("text/plain", Box::new(|r| *r.status_mut() = StatusCode::NO_CONTENT)),
            ("text/plain", Box::new(|r| *r.body_mut() = ProxyBody::full(Bytes::from_static(b"short")))),
            ("text/plain", Box::new(|r| *r.body_mut() = ProxyBody::empty())),
        ];
        for (i, (content_type, change)) in cases.iter().enumerate() {
            let mut r = response(content_type, big());
            change(&mut r);
            let encoding = r.headers().get(header::CONTENT_ENCODING).cloned();
            policy().apply(&mut r, client(true), false);
            assert_eq!(r.headers().get(header::CONTENT_ENCODING).cloned(), encoding, "case {i}");
        }
        // `text/*` covers every text type, case-insensitively.
        let mut r = response("Text/CSV", big());
        policy().apply(&mut r, client(true), false);
        assert_eq!(r.headers()["content-encoding"], "gzip");
        // A client without gzip: the same answer, as it came, but varying on Accept-Encoding.
        let mut r = response("text/plain", big());
        policy().apply(&mut r, client(false), false);
        assert_eq!((r.headers().get(header::CONTENT_ENCODING), r.headers().get(header::VARY)), (None, Some(&HeaderValue::from_static("Accept-Encoding"))));
        assert_eq!(r.body().size_hint().exact(), Some(100));
    }

    #[test]
    fn a_not_modified_answer_says_what_the_compressed_200_would() {
        let not_modified = |extra: &[(header::HeaderName, &'static str)]| {
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"v1\""));
            for (name, value) in extra {
                r.headers_mut().insert(name, HeaderValue::from_static(value));
            }
            r
        };
        let seen = |r: &Response<ProxyBody>| (r.headers()[header::ETAG].to_str().unwrap().to_owned(), r.headers().get(header::VARY).cloned());
        let vary = Some(HeaderValue::from_static("Accept-Encoding"));
        let mut r = not_modified(&[]);
        policy().apply(&mut r, client(true), false);
        assert_eq!(seen(&r), ("W/\"v1\"".into(), vary.clone()), "the 200 was compressed with a weak tag");
        assert_eq!(r.headers().get(header::CONTENT_ENCODING), None, "a 304 has no body to encode");
        let mut r = not_modified(&[]);
        policy().apply(&mut r, client(false), false);
        assert_eq!(seen(&r), ("\"v1\"".into(), vary), "sent as it came, varying");
        // A revalidation with a strong tag (an image's, say, never compressed): as it came.
        let mut r = not_modified(&[]);
        policy().apply(&mut r, ClientCoding { accepts_gzip: true, revalidates_weak: false }, false);
        assert_eq!(seen(&r), ("\"v1\"".into(), None), "a strong tag stays strong");
        // Its own headers show the 200 was not compressed: as it came.
        for extra in [(header::CONTENT_TYPE, "image/png"), (header::CONTENT_ENCODING, "br"), (header::CACHE_CONTROL, "no-transform")] {
            let mut r = not_modified(std::slice::from_ref(&extra));
            policy().apply(&mut r, client(true), false);
            assert_eq!(seen(&r), ("\"v1\"".into(), None), "{extra:?}");
        }
    }

    #[test]
    fn a_head_answer_gets_the_headers_the_get_would() {
        // The upstream's HEAD: the GET's length and validator, no body.
        let head = |length: &'static str| {
            let mut r = response("text/html", ProxyBody::empty());
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static(length));
            r.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"abc\""));
            r
        };
        let mut r = head("5000");
        policy().apply(&mut r, client(true), true);
        let h = r.headers();
        assert_eq!((h.get("content-encoding"), h.get("etag"), h.get("vary")), (Some(&HeaderValue::from_static("gzip")), Some(&HeaderValue::from_static("W/\"abc\"")), Some(&HeaderValue::from_static("Accept-Encoding"))));
        assert_eq!(h.get(header::CONTENT_LENGTH), None, "the gzipped length is not known");
        assert!(r.body().is_end_stream());
        let mut r = head("5000");
        policy().apply(&mut r, client(false), true);
        assert_eq!((r.headers().get("content-encoding"), r.headers()["content-length"].as_bytes()), (None, &b"5000"[..]));
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        // Under min_bytes the GET is not compressed: neither is its HEAD's answer.
        let mut r = head("5");
        policy().apply(&mut r, client(true), true);
        assert_eq!((r.headers().get("content-encoding"), r.headers().get("vary")), (None, None));
    }

    #[tokio::test]
    async fn a_streamed_body_is_compressed_frame_by_frame_with_its_trailers_after() {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from("data: one\n\n".repeat(10)))),
            Ok(Frame::data(Bytes::from("data: two\n\n".repeat(10)))),
            Ok(Frame::trailers(HeaderMap::from_iter([(http::HeaderName::from_static("x-sum"), HeaderValue::from_static("2"))]))),
        ];
        let stream = GzipStream::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)), flate2::Compression::fast());
        let mut body = std::pin::pin!(stream);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        // The first frame alone decodes to the first part: it was flushed, not held back.
        let mut partial = flate2::write::GzDecoder::new(Vec::new());
        partial.write_all(&first).unwrap();
        partial.flush().unwrap();
        assert_eq!(String::from_utf8(partial.get_ref().clone()).unwrap(), "data: one\n\n".repeat(10));
        let mut all = first.to_vec();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            match frame.unwrap().into_data() {
                Ok(data) => all.extend_from_slice(&data),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        assert_eq!(gunzip(&all), "data: one\n\n".repeat(10) + &"data: two\n\n".repeat(10));
        assert_eq!(trailers.unwrap()["x-sum"], "2");
    }
}
