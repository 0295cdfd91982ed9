//! When an upstream request may be sent a second time, and the copy it is sent again from.
//!
//! Two cases. A connect failure sent nothing: any request may go to another target, if it can be
//! made again (its body empty or whole bytes; a streamed body already taken by the client
//! connection cannot). A reused keep-alive connection the upstream closed as the request was
//! written may have delivered it: only an idempotent request (RFC 9110 9.2.2) is sent again,
//! and only once. Copies are made only where a resend is possible: where a loss is likely (an
//! upstream that showed it closes or rotates its connections, see [`ResendArming`]), never on
//! an upstream that has not. (An HTTP/2 upstream's refused streams are sent again from a copy
//! of a streamed body too: [`super::replay`].)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{Method, Request};

use super::body::ProxyBody;

/// When an upstream's pools keep a copy of a request to send again: for
/// [`super::http1_pool::ARMED_AFTER_CLOSING`] (HTTP/2: [`super::http2_pool::ARMED_AFTER_CLOSING`],
/// so an upstream rotating its connections by count stays armed) after the upstream last showed
/// it closes its connections (a `Connection: close`, a kept connection found closed, an HTTP/2 `GOAWAY` or
/// refused stream). One per upstream, shared by every worker's pools, so a sign one worker sees
/// arms them all: a server rotating its connections loses no request per worker before it.
#[derive(Debug)]
pub struct ResendArming {
    /// The origin of `until`.
    born: Instant,
    /// Milliseconds after `born` until which requests are armed; 0: never armed yet.
    until: AtomicU64,
}

impl Default for ResendArming {
    fn default() -> Self {
        Self { born: Instant::now(), until: AtomicU64::new(0) }
    }
}

impl ResendArming {
    /// Whether requests are armed now. One atomic load while never armed (the clock is read
    /// only once an upstream has shown a sign).
    pub fn armed(&self) -> bool {
        let until = self.until.load(Ordering::Relaxed);
        until != 0 && self.millis(Instant::now()) < until
    }

    /// Whether requests are armed at `now` (for a caller that has read the clock already).
    pub fn armed_at(&self, now: Instant) -> bool {
        let until = self.until.load(Ordering::Relaxed);
        until != 0 && self.millis(now) < until
    }

    /// The upstream showed it closes connections: arms requests for
    /// [`super::http1_pool::ARMED_AFTER_CLOSING`] from now (logged at debug when it was not).
    pub fn upstream_closing(&self) {
        self.upstream_closing_for(super::http1_pool::ARMED_AFTER_CLOSING);
    }

    /// [`ResendArming::upstream_closing`], arming requests for `armed` from now (at least: a
    /// longer arming already set by another of the upstream's pools stands).
    pub fn upstream_closing_for(&self, armed: std::time::Duration) {
        let now = self.millis(Instant::now());
        let until = now.saturating_add(u64::try_from(armed.as_millis()).unwrap_or(u64::MAX));
        let before = self.until.fetch_max(until, Ordering::Relaxed);
        if before <= now {
            tracing::debug!("the upstream is closing its connections: requests are armed to be sent again");
        }
    }

    /// Milliseconds from the making to `at`.
    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.born).as_millis()).unwrap_or(u64::MAX)
    }
}

/// RFC 9110 9.2.2: methods whose intended effect is the same however many times they are sent.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// A body that can be sent again: empty (a streamed one that has ended, as a GET's is from the
/// start), or whole bytes (buffered for a plugin, or a plugin's), looked for through the upload
/// watch wrapped around it. `None` for a streamed body with anything left to send.
fn replayable_body(body: &ProxyBody) -> Option<ProxyBody> {
    match body {
        ProxyBody::Full { data, trailers } => Some(ProxyBody::Full { data: data.clone(), trailers: trailers.clone() }),
        ProxyBody::Telling { body, .. } => replayable_body(body),
        other if http_body::Body::is_end_stream(other) => Some(ProxyBody::empty()),
        _ => None,
    }
}

/// A copy of `request` to send again, or `None` if its body cannot be sent twice.
pub fn copy(request: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
    let body = replayable_body(request.body())?;
    Some(Request::from_parts(copy_head(request), body))
}

/// A copy of `request`'s head: what it is sent with but its body.
pub fn copy_head<B>(request: &Request<B>) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = request.method().clone();
    head.uri = request.uri().clone();
    head.version = request.version();
    head.headers = request.headers().clone();
    // An HTTP/2 extended CONNECT (a WebSocket) carries its `:protocol` as an extension.
    if let Some(protocol) = request.extensions().get::<hyper::ext::Protocol>() {
        head.extensions.insert(protocol.clone());
    }
    head
}

/// A copy of `request` to send again after a reused connection broke under it: idempotent and
/// with a body that can be sent twice, else `None`.
pub fn copy_idempotent(request: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
    if is_idempotent(request.method()) { copy(request) } else { None }
}

/// Whether `error` is the connection going away before a response head came in (closed,
/// reset, or a request cancelled by the connection closing), or over HTTP/2 the upstream
/// resetting the request's stream or its connection (`RST_STREAM`, a `GOAWAY` with an error,
/// the connection breaking), as opposed to an answer that is not HTTP: only the first makes a
/// resend on a new connection worth it. (A stream the upstream refused, `REFUSED_STREAM`, was
/// not processed at all: [`super::http2_pool`] sends it again whatever its method.)
pub fn closed_before_answer(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return true;
    }
    if let Some(h2) = std::error::Error::source(error).and_then(|s| s.downcast_ref::<h2::Error>()) {
        return h2.is_io() || (h2.is_remote() && (h2.is_reset() || h2.is_go_away()));
    }
    let io = std::error::Error::source(error).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        )
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn request(method: Method, body: ProxyBody) -> Request<ProxyBody> {
        let mut r = Request::new(body);
        *r.method_mut() = method;
        *r.uri_mut() = "http://10.0.0.1:8080/a?b=c".parse().expect("uri");
        r.headers_mut().insert("x-a", "1".parse().expect("value"));
        r
    }

    #[test]
    fn idempotent_methods_are_those_of_rfc_9110() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE, Method::TRACE] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[test]
    fn whole_bodies_are_copied_and_only_for_idempotent_methods_after_a_send() {
        let put = request(Method::PUT, ProxyBody::full(Bytes::from_static(b"data")));
        let again = copy_idempotent(&put).expect("a PUT with whole bytes is sent again");
        assert_eq!((again.method(), again.uri(), again.headers()["x-a"].as_bytes()), (&Method::PUT, put.uri(), &b"1"[..]));
        assert!(matches!(again.body(), ProxyBody::Full { data: Some(d), .. } if d == "data"));
        let post = request(Method::POST, ProxyBody::empty());
        assert!(copy_idempotent(&post).is_none(), "a POST may have been acted on");
        assert!(copy(&post).is_some(), "but one never sent can go to another target");
    }
}
