//! Upstream connections counted while they are open. The connections an upstream keeps (HTTP/1.1
//! in `Http1Pool`, HTTP/2 in `Http2Pool`) are not listed anywhere, so the connector that
//! makes them is wrapped: every connection it makes carries a
//! guard that adds one to its upstream's gauge and takes it away when the connection's IO is
//! dropped (closed by either side, or evicted from the pool when idle). The cost is per
//! connection, never per request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

/// Upstream connections open now (shared by an upstream's connector and its metrics).
#[derive(Debug, Default, Clone)]
pub struct OpenConnections(Arc<AtomicI64>);

impl OpenConnections {
    /// Connections open now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// A weak handle, for a registry that must not keep the count alive.
    pub fn downgrade(&self) -> std::sync::Weak<AtomicI64> {
        Arc::downgrade(&self.0)
    }

    fn opened(&self) -> Guard {
        self.0.fetch_add(1, Ordering::Relaxed);
        Guard(self.clone())
    }
}

/// Counts one connection until dropped.
#[derive(Debug)]
struct Guard(OpenConnections);

impl Drop for Guard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connector whose connections are counted in `open`.
#[derive(Debug, Clone)]
pub struct CountingConnector<C> {
    inner: C,
    open: OpenConnections,
}

impl<C> CountingConnector<C> {
    /// Wraps `inner`, counting its connections in `open`.
    pub fn new(inner: C, open: OpenConnections) -> Self {
        Self { inner, open }
    }
}

impl<C> tower_service::Service<Uri> for CountingConnector<C>
where
    C: tower_service::Service<Uri> + Send,
    C::Future: Send + 'static,
{
    type Response = Counted<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let open = self.open.clone();
        Box::pin(async move {
            let io = connecting.await?;
            Ok(Counted { io, _guard: open.opened() })
        })
    }
}

pin_project_lite::pin_project! {
    /// A connection's IO, counted while it exists.
    #[derive(Debug)]
    pub struct Counted<T> {
        #[pin]
        io: T,
        _guard: Guard,
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: Read> Read for Counted<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<T: Write> Write for Counted<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}
