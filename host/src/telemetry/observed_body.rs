//! The response body as sent to the client, counted: when it has been sent (or the client went
//! away, or the body failed: the line then says `aborted`, and why), the request's access log line is
//! completed with the bytes sent and the total time, and handed to the access log; its analytics
//! sample gets the bytes sent and is recorded.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::access_log::{AccessEntry, AccessLog};
use super::analytics::{Analytics, Sample};
use crate::keepalive::{Answering, SendWatch};
use crate::proxy::body::{BoxError, ProxyBody};

/// A line waiting for its body to finish: the log, the entry, and when the request arrived.
pub type PendingLine = (Arc<AccessLog>, Box<AccessEntry>, Instant);

/// A sample waiting for its body to finish, and where it goes.
pub type PendingSample = (Arc<Analytics>, Box<Sample>);

/// A response body that completes its access log line and analytics sample when it is done.
pub struct ObservedBody {
    inner: ProxyBody,
    sent: u64,
    pending: Option<PendingLine>,
    sample: Option<PendingSample>,
    /// A gRPC answer whose line is pending: its trailers' `grpc-status` goes into the line.
    grpc: bool,
    /// On an HTTP/2 connection: counted as waiting for the client from each frame it yields
    /// until polled again (`timeouts.send_ms`, [`crate::keepalive::SendWaits`]).
    sends: Option<SendWatch>,
    /// Its request counted as being answered until the body is dropped (sent, or cut).
    answering: Option<Answering>,
    /// The body yielded its end (or failed): dropped without it, it was cut short.
    ended: bool,
}

impl ObservedBody {
    /// Wraps `inner`; `pending` is `None` when the access log is off, `sample` when analytics are.
    pub fn new(inner: ProxyBody, pending: Option<PendingLine>, sample: Option<PendingSample>) -> Self {
        Self { inner, sent: 0, pending, sample, grpc: false, sends: None, answering: None, ended: false }
    }

    /// Keeps its request counted as being answered ([`crate::keepalive::Activity::answering`])
    /// until this body is done: a connection is parked only between exchanges.
    pub fn answering_until_done(&mut self, answering: Answering) {
        self.answering = Some(answering);
    }

    /// Counts this body, sent over HTTP/2, as waiting for its client after each frame it yields.
    pub fn watching_sends(&mut self, watch: SendWatch) {
        self.sends = Some(watch);
    }

    /// With `whole`, the body counts as sent whatever is read of it (a HEAD's answer, which the
    /// server never sends): dropped, it is not logged as cut short.
    pub fn sent_whole_if(mut self, whole: bool) -> Self {
        self.ended |= whole;
        self
    }

    /// With `grpc`, the `grpc-status` of the trailers the body ends with is logged.
    pub fn reading_grpc_status(mut self, grpc: bool) -> Self {
        self.grpc = grpc;
        self
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(sends) = &mut self.sends {
            sends.polled();
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(sends) = &mut self.sends {
                    sends.yielded();
                }
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                } else {
                    // Trailers end a body: the server sends them and drops it, unpolled again.
                    self.ended = true;
                }
                if self.grpc
                    && let Some(trailers) = frame.trailers_ref()
                    && let Some(status) = crate::proxy::grpc::status(trailers)
                    && let Some((_, entry, _)) = &mut self.pending
                {
                    entry.grpc_status = Some(status);
                }
            }
            // The body failed after the head was passed on: the client's response is cut short
            // (the cause is logged where it arose, e.g. `ResponseOrigin::broke_off`).
            Poll::Ready(Some(Err(_))) => {
                self.ended = true;
                if let Some((_, entry, _)) = &mut self.pending {
                    entry.aborted = Some("response_body");
                }
            }
            Poll::Ready(None) => self.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some((log, mut entry, started)) = self.pending.take() {
            // Dropped before its end: the client left, or the connection was cut (a shutdown's
            // drain running out), and the client has a response cut short. Its end is the last
            // frame polled, the body saying it has no more, or (a length the server frames by,
            // whose end-of-stream may come in a frame of its own, unpolled) nothing left of it.
            if !self.ended && !self.inner.is_end_stream() && self.inner.size_hint().upper() != Some(0) {
                entry.aborted = Some("connection_closed");
            }
            entry.bytes_out = self.sent;
            entry.total = started.elapsed();
            log.submit(entry);
        }
        if let Some((analytics, mut sample)) = self.sample.take() {
            sample.bytes_out = self.sent;
            analytics.record(*sample);
        }
    }
}
