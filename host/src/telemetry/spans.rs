//! Child spans of an exported request: one per plugin phase call and one per upstream call,
//! with their plugin or upstream, outcome and timing. They are collected only for a request
//! whose span will be exported (sampled, with `[otlp] endpoint` set): the proxy runs such a
//! request inside [`collect`], and the phases report through [`record`], which does nothing (one
//! task-local lookup) for every other request.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::runtime::pool::PhaseAction;
use crate::runtime::failure::Failure;

/// What a child span was.
#[derive(Debug, Clone)]
pub enum ChildKind {
    /// A plugin phase call.
    Plugin {
        /// The chain entry's plugin name.
        plugin: String,
        /// `on-request` or `on-response`.
        phase: &'static str,
        /// `continue`, `respond`, `delay`, `acquire-slot`, `failed: <kind>`, or `abandoned` (the
        /// request's client left during the call).
        outcome: String,
        /// The status of a plugin's own response (`respond`).
        status: Option<u16>,
    },
    /// The call to the upstream (to the response head).
    Upstream {
        /// The upstream's name.
        upstream: String,
        /// The target (`host:port`) the request was sent to (the last one tried), if it was.
        address: Option<std::sync::Arc<str>>,
        /// The upstream's status, if it answered.
        status: Option<u16>,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// A plugin's outbound call (`http-client`), from its request sent to its response read.
    Outbound {
        /// The chain entry's plugin name.
        plugin: String,
        /// The call's method.
        method: String,
        /// The origin called: `scheme`, `host` and `port` (one a grant allows).
        origin: (&'static str, String, u16),
        /// The status, if it answered.
        status: Option<u16>,
        /// The failure's kind (`connect`, `timeout`, ...), if it failed.
        error: Option<&'static str>,
        /// The span's id: the parent the called service was told of in `traceparent`.
        span_id: u64,
    },
}

/// One child span.
#[derive(Debug, Clone)]
pub struct ChildSpan {
    /// What it was.
    pub kind: ChildKind,
    /// When it started.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
}

impl ChildSpan {
    /// A request phase call from `start` to `end` that returned `result`.
    pub fn request_phase(plugin: &str, start: Instant, end: Instant, result: &Result<PhaseAction, Failure>) -> Self {
        let (outcome, status) = match result {
            Ok(PhaseAction::Continue) => ("continue".to_owned(), None),
            Ok(PhaseAction::Respond(r)) => ("respond".to_owned(), Some(r.status.as_u16())),
            Ok(PhaseAction::Delay(_)) => ("delay".to_owned(), None),
            Ok(PhaseAction::AcquireSlot(_)) => ("acquire-slot".to_owned(), None),
            Err(f) => (format!("failed: {}", f.kind()), None),
        };
        Self::plugin(plugin, "on-request", (start, end), outcome, status)
    }

    /// A response phase call from `start` to `end` that returned `result`.
    pub fn response_phase(plugin: &str, start: Instant, end: Instant, result: &Result<(), Failure>) -> Self {
        let outcome = match result {
            Ok(()) => "continue".to_owned(),
            Err(f) => format!("failed: {}", f.kind()),
        };
        Self::plugin(plugin, "on-response", (start, end), outcome, None)
    }

    /// A phase call from `start` that had not returned at `end`, when its request's future was
    /// dropped (the client left): outcome `abandoned`.
    pub fn abandoned_phase(plugin: &str, phase: &'static str, start: Instant, end: Instant) -> Self {
        Self::plugin(plugin, phase, (start, end), "abandoned".to_owned(), None)
    }

    fn plugin(plugin: &str, phase: &'static str, (start, end): (Instant, Instant), outcome: String, status: Option<u16>) -> Self {
        Self { kind: ChildKind::Plugin { plugin: plugin.to_owned(), phase, outcome, status }, start, end }
    }

    /// An upstream call to target `address` from `start` to `end` that ended with `status` or an
    /// error.
    pub fn upstream(
        upstream: &str,
        address: Option<std::sync::Arc<str>>,
        start: Instant,
        end: Instant,
        result: Result<u16, String>,
    ) -> Self {
        let (status, error) = match result {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        Self { kind: ChildKind::Upstream { upstream: upstream.to_owned(), address, status, error }, start, end }
    }
}

/// Where one request's child spans are collected.
pub type Collector = Arc<Mutex<Vec<ChildSpan>>>;

/// Most child spans kept per request (a long chain, not a runaway).
const MAX_CHILDREN: usize = 64;

tokio::task_local! {
    static CHILDREN: Collector;
}

/// Runs `future` collecting the child spans its phases [`record`] into `collector`. Not an
/// `async fn`: one would keep `future` twice in its state (as its argument and as the future it
/// awaits), and a request's future is ~4 KB, moved and copied with it.
pub fn collect<F: Future>(collector: Collector, future: F) -> impl Future<Output = F::Output> {
    CHILDREN.scope(collector, future)
}

/// Records the span `make` builds, if the running request collects child spans.
pub fn record(make: impl FnOnce() -> ChildSpan) {
    let _ = CHILDREN.try_with(|c| push(c, make()));
}

/// Where the running request collects its child spans, if it does: for a span to be made where
/// the request's task-local scope may no longer be set (a phase call's guard, dropped with the
/// request's future after the scope's future let go of it).
pub fn current() -> Option<Collector> {
    CHILDREN.try_with(Arc::clone).ok()
}

/// Adds `span` to `collector` directly (bounded as [`record`] is), for a span made where the
/// request's task-local scope is not set: its record closing after the request was abandoned,
/// a phase call's guard ([`current`]).
pub fn push(collector: &Collector, span: ChildSpan) {
    let mut spans = collector.lock().unwrap_or_else(PoisonError::into_inner);
    if spans.len() < MAX_CHILDREN {
        spans.push(span);
    }
}

/// Takes the collected spans.
pub fn take(collector: &Collector) -> Vec<ChildSpan> {
    std::mem::take(&mut *collector.lock().unwrap_or_else(PoisonError::into_inner))
}
