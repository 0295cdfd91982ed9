//! The one body type the proxy sends both ways: streamed from the peer untouched, or whole bytes
//! (buffered for a plugin, produced by a plugin, or an error). An enum, not a boxed trait object,
//! so passing a body through costs no allocation.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::runtime::slots::SlotGuard;

/// Errors a body can yield while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

// Variant fields are described on the variants (pin-project-lite takes no field attributes).
#[allow(missing_docs)]
mod projected {
    use super::*;

    pin_project! {
        /// A request or response body on its way through the gateway.
        #[project = ProxyBodyProj]
        pub enum ProxyBody {
            /// Streamed from the peer as it arrives; a client's request body counts the data bytes
            /// read in `read` (`None` for a response body).
            Streaming { #[pin] body: Incoming, read: Option<std::sync::Arc<UploadProgress>> },
            /// Streamed, but cut off with an error past a size limit (chunked bodies of unknown
            /// length); the data bytes read are counted as `Streaming`'s are.
            Limited { #[pin] body: Limited<Incoming>, read: Option<std::sync::Arc<UploadProgress>> },
            /// Whole bytes, sent as one frame, then the trailers if there are any.
            Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
            /// The first bytes of a peer's body, read to see whether it fitted a limit, then the
            /// rest as it arrives ([`buffer_up_to`]).
            Resumed { head: Option<Bytes>, #[pin] rest: Incoming },
            /// Another body, with the concurrency slots its request holds until it is done, and
            /// its hold on its upstream (its place among `max_requests`, its count on a
            /// `least_requests` target).
            Holding { body: Pin<Box<ProxyBody>>, slots: Vec<SlotGuard>, in_flight: Option<crate::proxy::upstream::InFlight> },
            /// A streamed body cut off when its peer stalls (boxed: most bodies end at once).
            Watched { body: Pin<Box<IdleWatch>> },
            /// A response body gzipped on its way to the client ([`crate::proxy::compress`]).
            Gzip { body: Pin<Box<crate::proxy::compress::GzipStream>> },
            /// A request body on its way upstream that tells `Upstream::send` how it goes: each
            /// frame taken, and when it has been sent whole (or dropped).
            Telling { body: Pin<Box<ProxyBody>>, progress: std::sync::Arc<UploadProgress>, sent: Option<tokio::sync::oneshot::Sender<()>> },
            /// A streamed request body to an HTTP/2 upstream, kept to be sent again if its stream
            /// is refused unprocessed ([`crate::proxy::replay`]).
            Replaying { body: crate::proxy::replay::ReplayBody },
        }
    }

    pin_project! {
        /// A streamed body that fails once it has waited `limit` for its next frame. The timer
        /// is armed only while the peer is awaited: a client slow to read is not timed. `peer`
        /// says whose body it is in the warning (`an upstream's response body`); for an
        /// upstream's response body, `origin` is whom to tell when it breaks off or stalls, and
        /// `response` that its trailers go to a client.
        pub struct IdleWatch {
            #[pin]
            pub(super) body: ProxyBody,
            #[pin]
            pub(super) timer: tokio::time::Sleep,
            pub(super) limit: std::time::Duration,
            pub(super) armed: bool,
            pub(super) peer: &'static str,
            pub(super) origin: Option<crate::proxy::upstream::ResponseOrigin>,
            pub(super) response: bool,
        }
    }
}
pub use projected::IdleWatch;
pub use projected::ProxyBody;
use projected::ProxyBodyProj;

impl ProxyBody {
    /// A body of these bytes.
    pub fn full(data: Bytes) -> Self {
        ProxyBody::Full { data: (!data.is_empty()).then_some(data), trailers: None }
    }

    /// A body of these bytes followed by these trailers (none when the map is empty).
    pub fn with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        ProxyBody::Full { data: (!data.is_empty()).then_some(data), trailers: trailers.filter(|t| !t.is_empty()) }
    }

    /// The bytes of a whole body made in the gateway (an error, a plugin's answer), if this is
    /// one: read without polling, to restate it in another form.
    pub fn whole(&self) -> Option<&Bytes> {
        match self {
            ProxyBody::Full { data, .. } => data.as_ref(),
            ProxyBody::Holding { body, .. } => body.whole(),
            _ => None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody::Full { data: None, trailers: None }
    }

    /// A streamed body.
    pub fn streaming(body: Incoming) -> Self {
        ProxyBody::Streaming { body, read: None }
    }

    /// This streamed client body, adding the data bytes read from it to `read.bytes` (the
    /// access log's `bytes_in`). Other bodies are left as they are.
    pub fn counted(self, read: std::sync::Arc<UploadProgress>) -> Self {
        match self {
            ProxyBody::Streaming { body, .. } => ProxyBody::Streaming { body, read: Some(read) },
            ProxyBody::Limited { body, .. } => ProxyBody::Limited { body, read: Some(read) },
            other => other,
        }
    }

    /// The progress this body's upload is counted in: the one its client bytes are counted in
    /// ([`ProxyBody::counted`]) when it has one, so an upload watch shares it; else a new one.
    pub fn upload_progress(&self) -> std::sync::Arc<UploadProgress> {
        self.counter().cloned().unwrap_or_default()
    }

    fn counter(&self) -> Option<&std::sync::Arc<UploadProgress>> {
        match self {
            ProxyBody::Streaming { read, .. } | ProxyBody::Limited { read, .. } => read.as_ref(),
            ProxyBody::Full { .. } | ProxyBody::Resumed { .. } => None,
            ProxyBody::Holding { body, .. } => body.counter(),
            ProxyBody::Watched { body } => body.body.counter(),
            ProxyBody::Gzip { .. } | ProxyBody::Replaying { .. } => None,
            ProxyBody::Telling { progress, .. } => Some(progress),
        }
    }

    /// This body, keeping `slots` and `in_flight` until it has been sent or dropped.
    pub fn holding(self, slots: Vec<SlotGuard>, in_flight: Option<crate::proxy::upstream::InFlight>) -> Self {
        ProxyBody::Holding { body: Box::pin(self), slots, in_flight }
    }

    /// This body, cut off with [`BodyStalled`] once it has waited `limit` for its next frame
    /// (`timeouts.body_idle_ms`). A body that has already ended is left as it is. `peer` says
    /// whose body it is in the warning (`an upstream's response body`).
    pub fn watched(self, limit: std::time::Duration, peer: &'static str) -> Self {
        self.watch(limit, peer, None, false)
    }

    /// An upstream's streamed response body, [`ProxyBody::watched`], reported to `origin` if it
    /// breaks off or stalls ([`crate::proxy::upstream::ResponseOrigin::broke_off`]), its
    /// trailers cut to those a client may get ([`crate::proxy::headers::strip_response_trailers`]).
    pub fn watched_from(self, limit: std::time::Duration, origin: Option<crate::proxy::upstream::ResponseOrigin>) -> Self {
        self.watch(limit, "an upstream's response body", origin, true)
    }

    fn watch(self, limit: std::time::Duration, peer: &'static str, origin: Option<crate::proxy::upstream::ResponseOrigin>, response: bool) -> Self {
        if self.is_end_stream() {
            return self;
        }
        // Set to a real deadline when the body first waits: most end without ever waiting.
        let timer = tokio::time::sleep_until(unarmed());
        ProxyBody::Watched { body: Box::pin(IdleWatch { body: self, timer, limit, armed: false, peer, origin, response }) }
    }

    /// This body, counting the frames taken from it in `progress` and telling `sent` when it
    /// has yielded its last one (or is dropped unfinished).
    pub fn telling(self, progress: std::sync::Arc<UploadProgress>, sent: tokio::sync::oneshot::Sender<()>) -> Self {
        ProxyBody::Telling { body: Box::pin(self), progress, sent: Some(sent) }
    }

    /// A streamed body that fails once more than `limit` bytes have passed.
    pub fn limited(body: Incoming, limit: u64) -> Self {
        ProxyBody::Limited { body: Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)), read: None }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Streaming { mut body, read } => {
                let polled = count(body.as_mut().poll_frame(cx).map_err(Into::into), read.as_deref());
                note_end(&polled, body.is_end_stream(), read.as_deref());
                polled
            }
            ProxyBodyProj::Limited { mut body, read } => {
                let polled = count(body.as_mut().poll_frame(cx), read.as_deref());
                note_end(&polled, body.is_end_stream(), read.as_deref());
                polled
            }
            ProxyBodyProj::Full { data, trailers } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            ProxyBodyProj::Resumed { head, rest } => match head.take() {
                Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                None => rest.poll_frame(cx).map_err(Into::into),
            },
            ProxyBodyProj::Holding { body, .. } => body.as_mut().poll_frame(cx),
            ProxyBodyProj::Watched { body } => body.as_mut().poll_frame(cx),
            ProxyBodyProj::Gzip { body } => body.as_mut().poll_frame(cx),
            ProxyBodyProj::Telling { body, progress, sent } => {
                let polled = body.as_mut().poll_frame(cx);
                if matches!(polled, Poll::Ready(Some(Ok(_)))) {
                    progress.frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if (matches!(polled, Poll::Ready(None)) || body.is_end_stream())
                    && let Some(sent) = sent.take()
                {
                    let _ = sent.send(());
                }
                polled
            }
            ProxyBodyProj::Replaying { body } => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Streaming { body, .. } => body.is_end_stream(),
            ProxyBody::Limited { body, .. } => body.is_end_stream(),
            ProxyBody::Full { data, trailers } => data.is_none() && trailers.is_none(),
            ProxyBody::Resumed { head, rest } => head.is_none() && rest.is_end_stream(),
            ProxyBody::Holding { body, .. } => body.is_end_stream(),
            ProxyBody::Watched { body } => body.body.is_end_stream(),
            ProxyBody::Gzip { body } => body.is_end_stream(),
            ProxyBody::Telling { body, .. } => body.is_end_stream(),
            ProxyBody::Replaying { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Streaming { body, .. } => body.size_hint(),
            ProxyBody::Limited { body, .. } => body.size_hint(),
            ProxyBody::Full { data, .. } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            ProxyBody::Resumed { head, rest } => {
                let read = head.as_ref().map_or(0, |d| d.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(read));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read));
                }
                hint
            }
            ProxyBody::Holding { body, .. } => body.size_hint(),
            ProxyBody::Watched { body } => body.body.size_hint(),
            ProxyBody::Gzip { body } => body.size_hint(),
            ProxyBody::Telling { body, .. } => body.size_hint(),
            ProxyBody::Replaying { body } => body.size_hint(),
        }
    }
}

/// How far a request body's upload has gone: the frames the upstream connection has taken.
/// `Upstream::send` reads it to tell an upstream that stopped taking the body from one still
/// taking a slow client's. A streamed client body also counts the bytes read from the client in
/// it ([`ProxyBody::counted`]), for the access log's `bytes_in`.
#[derive(Debug, Default)]
pub struct UploadProgress {
    /// Frames taken so far.
    pub frames: std::sync::atomic::AtomicU64,
    /// Request body data bytes read from the client so far.
    pub bytes: std::sync::atomic::AtomicU64,
    /// Once a plugin chain ran on the request, the names its trailers may not carry ([`count`]).
    pub barred_trailers: std::sync::OnceLock<BarredTrailers>,
    /// An HTTP/1 client body as its connection counts it: told when its end is read ([`count`]).
    pub end: std::sync::OnceLock<std::sync::Arc<crate::keepalive::RequestBody>>,
}

/// The names a client's request trailers may not carry once a plugin chain ran on the request:
/// a trailer could stand beside (or, merged, after) a header a plugin set, or bring back one a
/// plugin removed ([`crate::proxy::headers::strip_trailers_named`]).
#[derive(Debug)]
pub struct BarredTrailers {
    /// The header fields the request went upstream with.
    pub sent: Box<[http::HeaderName]>,
    /// The headers the plugins removed.
    pub removed: crate::proxy::headers::RemovedNames,
}

impl UploadProgress {
    /// Request body data bytes read from the client so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A frame polled from a streamed body. A client's request body (one counted in `read`) has its
/// data bytes added there, and its trailers cut to those an upstream may read as its client's
/// ([`crate::proxy::headers::strip_client_trailers`], and none named as a field of the header
/// section it was sent with or the plugins removed: [`UploadProgress::barred_trailers`]).
fn count(
    mut polled: Poll<Option<Result<Frame<Bytes>, BoxError>>>,
    read: Option<&UploadProgress>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if let (Some(read), Poll::Ready(Some(Ok(frame)))) = (read, &mut polled) {
        if let Some(data) = frame.data_ref() {
            read.bytes.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        } else if let Some(trailers) = frame.trailers_mut() {
            crate::proxy::headers::strip_client_trailers(trailers);
            if let Some(barred) = read.barred_trailers.get() {
                crate::proxy::headers::strip_trailers_named(trailers, &barred.sent, barred.removed);
            }
        }
    }
    polled
}

/// Tells a client body's connection that its end was read ([`UploadProgress::end`]): the
/// stream ended, or the frame just read was its last.
fn note_end(polled: &Poll<Option<Result<Frame<Bytes>, BoxError>>>, at_end: bool, read: Option<&UploadProgress>) {
    let end = match polled {
        Poll::Ready(None) => true,
        // Trailers come after the body's last chunk: hyper has read it whole (its clients
        // stop asking for frames after them, so the stream's None may never be seen).
        Poll::Ready(Some(Ok(frame))) => at_end || frame.is_trailers(),
        _ => false,
    };
    if end && let Some(body) = read.and_then(|r| r.end.get()) {
        body.ended();
    }
}

/// The deadline of an idle watch not yet armed: far away, and made once, so a watch costs no
/// clock reading until its body waits.
fn unarmed() -> tokio::time::Instant {
    static FAR: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *FAR.get_or_init(|| tokio::time::Instant::now() + std::time::Duration::from_secs(10 * 365 * 24 * 3600))
}

/// A streamed body's peer sent nothing for `timeouts.body_idle_ms`.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {} ms (timeouts.body_idle_ms)", .0.as_millis())]
pub struct BodyStalled(pub std::time::Duration);

impl Body for IdleWatch {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(mut frame) => {
                *this.armed = false;
                if *this.response
                    && let Some(Ok(frame)) = &mut frame
                    && let Some(trailers) = frame.trailers_mut()
                {
                    crate::proxy::headers::strip_response_trailers(trailers);
                }
                if let Some(Err(e)) = &frame
                    && let Some(origin) = this.origin.take()
                {
                    origin.broke_off(&crate::error::chain(e.as_ref()));
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                if !*this.armed {
                    this.timer.as_mut().reset(tokio::time::Instant::now() + *this.limit);
                    *this.armed = true;
                }
                match this.timer.poll(cx) {
                    Poll::Ready(()) => {
                        let stalled = BodyStalled(*this.limit);
                        match this.origin.take() {
                            Some(origin) => origin.broke_off(&stalled),
                            None => tracing::warn!(idle_ms = this.limit.as_millis() as u64, "{} stalled: cut off", this.peer),
                        }
                        Poll::Ready(Some(Err(Box::new(stalled))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why a body could not be buffered.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The body is longer than the limit.
    #[error("body exceeds {0} bytes")]
    TooLarge(u64),
    /// The peer broke off or sent a malformed body.
    #[error("body could not be read: {0}")]
    Read(String),
}

/// A body read whole: its bytes and the trailers that followed them, if any.
#[derive(Debug, Default)]
pub struct Buffered {
    /// The body bytes.
    pub bytes: Bytes,
    /// The trailer fields sent after the body (HTTP/2, or chunked HTTP/1.1).
    pub trailers: Option<HeaderMap>,
}

/// Reads a whole body into memory, with its trailers, refusing more than `limit` bytes. A
/// client's body made [`ProxyBody::counted`] counts the bytes read, whole or not.
pub async fn buffer<B>(body: B, limit: u64) -> Result<Buffered, BufferError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            Ok(Buffered { bytes: collected.to_bytes(), trailers })
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BufferError::TooLarge(limit)),
        Err(e) => Err(BufferError::Read(e.to_string())),
    }
}

/// A peer's body read as far as a limit: whole, or found longer.
pub enum UpTo {
    /// It ended within the limit.
    Whole(Buffered),
    /// It is longer than the limit: what was read and the rest, to stream on untouched.
    Longer(ProxyBody),
}

/// Reads a peer's body whole if it is at most `limit` bytes long; a longer one is handed back
/// to stream on, with the bytes read so far (none when its declared length already says it is
/// longer). For plugins that read only the bodies that fit (`request.limit-response-body`).
pub async fn buffer_up_to(mut body: Incoming, limit: u64) -> Result<UpTo, BufferError> {
    if body.size_hint().lower() > limit {
        return Ok(UpTo::Longer(ProxyBody::streaming(body)));
    }
    let mut read = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BufferError::Read(e.to_string()))?;
        let frame = match frame.into_data() {
            Ok(data) => {
                read.extend_from_slice(&data);
                if read.len() as u64 > limit {
                    return Ok(UpTo::Longer(ProxyBody::Resumed { head: Some(read.freeze()), rest: body }));
                }
                continue;
            }
            Err(frame) => frame,
        };
        // Trailers come last.
        if let Ok(trailers) = frame.into_trailers() {
            return Ok(UpTo::Whole(Buffered { bytes: read.freeze(), trailers: Some(trailers) }));
        }
    }
    Ok(UpTo::Whole(Buffered { bytes: read.freeze(), trailers: None }))
}

/// True if `error` (or what caused it) says a client went away mid-body: hyper's incomplete
/// message, or an unexpected end of its stream. The client's doing, never the upstream's.
pub fn is_client_abort(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        let aborted = e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message)
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof);
        if aborted {
            return true;
        }
        current = e.source();
    }
    false
}

/// True if `error` (or what caused it) is a body length limit being hit.
pub fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every body the proxy passes is moved through each layer: it stays 128 bytes (its `Full`
    /// variant the largest; bench/README.md), whatever `Holding` holds.
    #[test]
    fn a_proxy_body_stays_128_bytes() {
        assert!(std::mem::size_of::<ProxyBody>() <= 128, "{} bytes", std::mem::size_of::<ProxyBody>());
    }
}
