//! The response body as sent to the client, counted: when it has been sent (or the client went
//! away), the request's access log line is completed with the bytes sent and the total time, and
//! handed to the access log.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::access_log::{AccessEntry, AccessLog};
use crate::proxy::body::{BoxError, ProxyBody};

/// A line waiting for its body to finish: the log, the entry, and when the request arrived.
pub type PendingLine = (Arc<AccessLog>, Box<AccessEntry>, Instant);

/// A response body that completes its access log line when it is done.
pub struct ObservedBody {
    inner: ProxyBody,
    sent: u64,
    pending: Option<PendingLine>,
}

impl ObservedBody {
    /// Wraps `inner`; `pending` is `None` when the access log is off.
    pub fn new(inner: ProxyBody, pending: Option<PendingLine>) -> Self {
        Self { inner, sent: 0, pending }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len() as u64;
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
            entry.bytes_out = self.sent;
            entry.total = started.elapsed();
            log.submit(entry);
        }
    }
}
