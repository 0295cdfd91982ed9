//! A streamed request body that can be sent again after an HTTP/2 upstream refused its stream
//! unprocessed (`REFUSED_STREAM`, or above a graceful `GOAWAY`'s last stream: RFC 9113 8.7).
//!
//! [`super::resend::copy`] copies only a body that is empty or whole bytes; a streamed one (a
//! POST's, every gRPC call's) is taken by the connection as it arrives. Here the body goes to the
//! connection through a [`ReplayBody`] that keeps what it has yielded, up to
//! [`MAX_REPLAYED_BYTES`], beside the rest not yet read; the [`Replay`] kept by the sender takes
//! both back when the stream is refused: the body sent again is what was yielded, then the rest.
//! (Envoy keeps a request's body for retries the same way, up to its buffer limit.) Used only
//! while the upstream's requests are armed ([`super::resend::ResendArming`]): it has shown it
//! closes connections.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::body::{BoxError, ProxyBody};

/// The most body bytes kept to be sent again: a refused stream that had taken more of its body
/// is not sent again (answered 502, as before bodies could be kept at all).
pub const MAX_REPLAYED_BYTES: usize = 64 * 1024;

/// What a [`ReplayBody`] and its [`Replay`] share.
struct Shared {
    /// Frames to yield before reading `rest`: what an earlier attempt yielded.
    pending: VecDeque<Frame<Bytes>>,
    /// The body not yet read; `None` once taken back by [`Replay::take`].
    rest: Option<Pin<Box<ProxyBody>>>,
    /// Every frame yielded so far (`pending`'s included), while it fits.
    yielded: Vec<Frame<Bytes>>,
    /// The data bytes in `yielded`.
    yielded_bytes: usize,
    /// More than [`MAX_REPLAYED_BYTES`] were yielded: the body cannot be sent again.
    overflowed: bool,
}

/// The body a connection reads: yields what it shares with its [`Replay`].
pub struct ReplayBody(Arc<Mutex<Shared>>);

/// The sender's hold on a [`ReplayBody`]: takes it back, as a new body to send again.
pub struct Replay(Arc<Mutex<Shared>>);

impl ReplayBody {
    /// `body`, keeping what it yields for the [`Replay`] returned beside it.
    pub fn keeping(body: ProxyBody) -> (ProxyBody, Replay) {
        Self::resuming(VecDeque::new(), Box::pin(body))
    }

    fn resuming(pending: VecDeque<Frame<Bytes>>, rest: Pin<Box<ProxyBody>>) -> (ProxyBody, Replay) {
        let yielded_bytes = pending.iter().filter_map(Frame::data_ref).map(Bytes::len).sum();
        let yielded = pending.iter().map(copy_frame).collect();
        let shared = Arc::new(Mutex::new(Shared { pending, rest: Some(rest), yielded, yielded_bytes, overflowed: false }));
        (ProxyBody::Replaying { body: ReplayBody(shared.clone()) }, Replay(shared))
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Replay {
    /// The body again, from its first byte, and a new hold on it; `None` when more than
    /// [`MAX_REPLAYED_BYTES`] had been yielded. The body the refused stream held yields no more.
    pub fn take(self) -> Option<(ProxyBody, Replay)> {
        let mut shared = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.overflowed {
            return None;
        }
        let rest = shared.rest.take()?;
        let again: VecDeque<Frame<Bytes>> = std::mem::take(&mut shared.yielded).into();
        // The refused stream's body yields no more, not even frames it had still to yield.
        shared.pending.clear();
        drop(shared);
        Some(ReplayBody::resuming(again, rest))
    }
}

impl Drop for Replay {
    /// The sender is done with the body (answered, failed, or sending it again from a new
    /// `Replay`): what was kept goes, and nothing more is kept, though the body may stream on
    /// for long (a gRPC stream).
    fn drop(&mut self) {
        let mut shared = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        shared.overflowed = true;
        shared.yielded = Vec::new();
    }
}

/// A copy of a data or trailers frame (`Frame` is not `Clone`; its bytes are shared).
fn copy_frame(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match (frame.data_ref(), frame.trailers_ref()) {
        (Some(data), _) => Frame::data(data.clone()),
        (None, Some(trailers)) => Frame::trailers(trailers.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut shared = self.shared();
        if let Some(frame) = shared.pending.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = shared.rest.as_mut() else { return Poll::Ready(None) };
        let polled = rest.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && !shared.overflowed
        {
            let bytes = frame.data_ref().map_or(0, Bytes::len);
            if shared.yielded_bytes + bytes > MAX_REPLAYED_BYTES {
                shared.overflowed = true;
                shared.yielded = Vec::new();
            } else {
                shared.yielded_bytes += bytes;
                shared.yielded.push(copy_frame(frame));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.shared();
        shared.pending.is_empty() && shared.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.shared();
        let pending: u64 = shared.pending.iter().filter_map(Frame::data_ref).map(|d| d.len() as u64).sum();
        let rest = shared.rest.as_ref().map_or_else(|| SizeHint::with_exact(0), |rest| rest.size_hint());
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(pending));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(pending));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// Everything `body` yields, as a connection reads it.
    async fn read_all(body: ProxyBody) -> Vec<u8> {
        body.collect().await.expect("body").to_bytes().to_vec()
    }

    /// Read in part (its data, not its trailers): sent again as what was read, then the rest.
    #[tokio::test]
    async fn a_body_read_in_part_is_sent_again_from_its_first_byte() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-x", http::HeaderValue::from_static("1"));
        let (mut body, replay) = ReplayBody::keeping(ProxyBody::with_trailers(Bytes::from_static(b"abc"), Some(trailers)));
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"abc"[..]));
        let (again, _) = replay.take().expect("kept");
        let collected = again.collect().await.expect("body");
        assert_eq!(collected.trailers().and_then(|t| t.get("grpc-x")).map(|v| v.as_bytes()), Some(&b"1"[..]), "the rest follows");
        assert_eq!(&collected.to_bytes()[..], b"abc");
    }

    #[tokio::test]
    async fn whole_bytes_yielded_then_taken_back_are_yielded_again() {
        let (mut body, replay) = ReplayBody::keeping(ProxyBody::with_trailers(Bytes::from_static(b"hello"), None));
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"hello"[..]));
        let (again, replay) = replay.take().expect("kept");
        assert!(body.frame().await.is_none(), "the refused stream's body yields no more");
        assert_eq!(again.size_hint().exact(), Some(5));
        assert_eq!(read_all(again).await, b"hello");
        // Taken back a second time: still the whole body.
        let (again, _) = replay.take().expect("kept again");
        assert_eq!(read_all(again).await, b"hello");
    }

    /// Once the sender is done, nothing is kept, though the body streams on.
    #[tokio::test]
    async fn nothing_is_kept_once_the_sender_is_done() {
        let (mut body, replay) = ReplayBody::keeping(ProxyBody::with_trailers(Bytes::from_static(b"abc"), Some(http::HeaderMap::new())));
        assert!(body.frame().await.is_some());
        drop(replay);
        let ProxyBody::Replaying { body: ReplayBody(shared) } = &body else { panic!("a replaying body") };
        let shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(shared.yielded.is_empty() && shared.overflowed);
    }

    #[tokio::test]
    async fn past_the_limit_nothing_is_kept() {
        let big = Bytes::from(vec![b'x'; MAX_REPLAYED_BYTES + 1]);
        let (body, replay) = ReplayBody::keeping(ProxyBody::full(big));
        assert_eq!(read_all(body).await.len(), MAX_REPLAYED_BYTES + 1);
        assert!(replay.take().is_none());
    }
}
