//! A route's plugin chain and its two phases, in the order DESIGN.md section 1 gives:
//!
//! - [`PluginChain::run_request_phases`]: for each entry, in chain order, the changes it declared
//!   it makes to every request (`fixed-edits`, made by the host without a call), then its
//!   `on-request`, until one responds (short-circuit) or all continue;
//! - [`PluginChain::run_response_phases`]: for the entries whose request phase ran, in reverse
//!   order, its fixed response edits and those it asked for from `on-request`
//!   (`request.edit-response`), made by the host without a call, then its `on-response`.
//!
//! A failed call follows the entry's failure policy: fail closed (the request ends in a 500 with
//! its request id) or fail open (the entry is skipped as if it had continued).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::failure::Failure;
use super::host::fixed_edits::FixedEdits;
use super::plugin::Descriptor;
use super::pool::{InstancePool, PhaseAction, SlotRequest};
use super::slots::{SlotGuard, SlotTable};
use crate::admin::inventory::PluginFacts;
use crate::config::FailurePolicy;
use crate::telemetry::metrics::{Decision, PluginMetrics};
use crate::error::GatewayError;
use crate::exchange::{HeaderTally, RequestState, ResponseState};

/// A phase call under way. Its duration goes to the plugin's histogram when it returns; if the
/// request's future is dropped first (its client left, during a slow call), it is recorded
/// then, and exported as a span with outcome `abandoned`: a plugin slow enough for clients to
/// give up on shows in the histogram and the trace, not only the calls that finished.
struct PhaseCall<'e> {
    entry: &'e ChainEntry,
    /// The response phase's call (else the request phase's).
    response: bool,
    started: Instant,
    /// The request's child spans, if it is exported: taken when the call begins, for the
    /// request's future is dropped outside the scope that names them.
    spans: Option<crate::telemetry::spans::Collector>,
    /// Set when the call returned: dropped then, the guard records nothing more.
    returned: bool,
}

impl<'e> PhaseCall<'e> {
    /// A call of `entry`'s phase (`response`: the response phase's) beginning at `started`.
    fn begin(entry: &'e ChainEntry, response: bool, started: Instant) -> Self {
        Self { entry, response, started, spans: crate::telemetry::spans::current(), returned: false }
    }

    /// The call returned at `now`: its duration recorded, and the span `span` makes if the
    /// request is exported (with the collector taken at the start: no second look-up).
    fn returned(mut self, now: Instant, span: impl FnOnce() -> crate::telemetry::spans::ChildSpan) {
        self.entry.metrics.record_call(self.response, now.duration_since(self.started));
        if let Some(spans) = self.spans.take() {
            crate::telemetry::spans::push(&spans, span());
        }
        self.returned = true;
    }
}

impl Drop for PhaseCall<'_> {
    fn drop(&mut self) {
        if self.returned {
            return;
        }
        let now = Instant::now();
        self.entry.metrics.record_call(self.response, now.duration_since(self.started));
        if let Some(spans) = self.spans.take() {
            let phase = if self.response { "on-response" } else { "on-request" };
            crate::telemetry::spans::push(&spans, crate::telemetry::spans::ChildSpan::abandoned_phase(self.entry.name(), phase, self.started, now));
        }
    }
}

/// One entry of a chain: a plugin instance pool with its failure policy.
pub struct ChainEntry {
    /// The pool of the plugin with this entry's config.
    pub pool: InstancePool,
    /// What a failure does.
    pub failure: FailurePolicy,
    /// The plugin's phases and body needs.
    pub descriptor: Descriptor,
    /// Call latency and failure counters.
    pub metrics: PluginMetrics,
    /// What the entry was built with, for the admin API.
    pub facts: PluginFacts,
    /// Concurrency slots its `acquire-slot` actions compete for.
    pub slots: Arc<SlotTable>,
    /// Names the entry across reloads (what its route matches, its state namespace, occurrence
    /// and config): the entry that takes its place in a reloaded config, configured alike, gets
    /// the same [`ChainEntry::slots`], so the requests still in flight on the old config keep
    /// counting against `concurrency`.
    pub slot_scope: Box<str>,
}

impl ChainEntry {
    /// The entry's plugin name.
    pub fn name(&self) -> &str {
        self.pool.name()
    }
}

impl crate::telemetry::pools::PoolStats for ChainEntry {
    fn plugin_name(&self) -> &str {
        self.name()
    }

    fn idle(&self) -> usize {
        self.pool.idle_len()
    }

    fn capacity(&self) -> usize {
        self.pool.capacity()
    }
}

/// The ordered entries a route runs (global entries first).
#[derive(Default, Clone)]
pub struct PluginChain {
    entries: Vec<Arc<ChainEntry>>,
    request_body: bool,
    response_body: bool,
    /// An entry reading response bodies narrowed which ones (`declare-response-bodies`): the
    /// need is then settled on each response's head.
    response_bodies_narrowed: bool,
    /// The index of the first entry with fixed response edits (the number of entries if none):
    /// a request whose phases ran no further than it has no response edit to make but its own.
    first_fixed_response: usize,
    /// The first entry whose fixed response edits build a value from a request header
    /// (`entries.len()` if none).
    first_header_reading_response: usize,
}

/// How a request's upstream response body is read before the response phases
/// ([`PluginChain::response_body_need`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBodyNeed {
    /// No entry reads it: it streams to the client.
    Stream,
    /// An entry reads every body: buffered whole, up to the route's `max_body_bytes` (a 502
    /// beyond it).
    Whole,
    /// Buffered if it is at most this long (and within the route's `max_body_bytes`); a longer
    /// one streams, unseen by the plugins.
    UpTo(u64),
}

/// How the request phases ended.
#[derive(Debug)]
// Moved once per request; boxing the response would add an allocation to every short-circuit.
#[allow(clippy::large_enum_variant)]
pub enum RequestOutcome {
    /// Every entry continued: go to the upstream.
    Upstream,
    /// An entry answered: skip the rest and the upstream.
    Respond(ResponseState),
    /// An entry failed closed (or found the sandbox full): the gateway answers with this error,
    /// with the response edits of the entries before it (CORS headers, for a browser to read
    /// the error at all).
    Failed(GatewayError),
}

impl PluginChain {
    /// A chain of these entries, in order.
    pub fn new(entries: Vec<Arc<ChainEntry>>) -> Self {
        let request_body = entries.iter().any(|e| e.descriptor.request_body);
        let response_body = entries.iter().any(|e| e.descriptor.response_body);
        let response_bodies_narrowed = entries.iter().any(|e| e.descriptor.response_body && e.pool.response_bodies().is_some());
        let first_fixed_response =
            entries.iter().position(|e| e.pool.fixed_edits().is_some_and(|f| f.edits_response())).unwrap_or(entries.len());
        let first_header_reading_response =
            entries.iter().position(|e| e.pool.fixed_edits().is_some_and(|f| f.response_reads_request_headers())).unwrap_or(entries.len());
        Self { entries, request_body, response_body, response_bodies_narrowed, first_fixed_response, first_header_reading_response }
    }

    /// The entries in order.
    pub fn entries(&self) -> &[Arc<ChainEntry>] {
        &self.entries
    }

    /// Whether the request body must be buffered before the request phases.
    pub fn needs_request_body(&self) -> bool {
        self.request_body
    }

    /// Whether any of the first `ran` entries has an `on-response` to call: it reads the request,
    /// which must then be kept intact when sent upstream (else its headers are moved, not copied).
    pub fn calls_on_response(&self, ran: usize) -> bool {
        self.entries[..ran.min(self.entries.len())].iter().any(|e| e.descriptor.on_response)
    }

    /// Whether the request's headers must outlast the upstream call: a response phase of the
    /// first `ran` entries reads them, by its `on-response` or a fixed edit's value built from
    /// a request header (made on the response as that phase would have read it).
    pub fn keeps_request_headers(&self, ran: usize) -> bool {
        ran > self.first_header_reading_response || self.calls_on_response(ran)
    }

    /// The response phases of the first `ran` entries when none of them has an `on-response`
    /// ([`PluginChain::calls_on_response`] false): only their response edits, in the same
    /// reverse order, made in place. Chains whose response work is all edits (`headers`,
    /// `rate-limit`'s `RateLimit` headers, `cors`) so skip boxing a call's future per request.
    pub fn apply_response_edits(&self, ran: usize, request: &mut RequestState, response: &mut ResponseState) {
        self.apply_response_edits_to(ran, request, &mut response.headers);
    }

    /// [`PluginChain::apply_response_edits`] on a response's headers alone: also how the
    /// gateway's own answer to a request whose phases ran (a 502 when the upstream is down) gets
    /// the headers those phases asked for (CORS, `RateLimit`), as Envoy's local replies do.
    pub fn apply_response_edits_to(&self, ran: usize, request: &mut RequestState, headers: &mut http::HeaderMap) {
        if ran <= self.first_fixed_response && !request.response_edits.any_before(ran) {
            return;
        }
        // Nothing else writes the headers between the entries' edits: one count for all.
        let mut tally = HeaderTally::default();
        for (index, entry) in self.entries[..ran.min(self.entries.len())].iter().enumerate().rev() {
            make_response_edits(entry.pool.fixed_edits(), index, entry.name(), request, headers, &mut tally);
        }
    }

    /// Whether an entry of the chain reads response bodies: the upstream is then asked only for
    /// codings the host decodes.
    pub fn needs_response_body(&self) -> bool {
        self.response_body
    }

    /// How this request's upstream response body is read for the response phases: streamed
    /// when no entry reads it, buffered whole when one reads every body, or buffered if it fits
    /// when every entry that reads it narrowed its need (`request.limit-response-body`).
    pub fn response_body_need(&self, request: &RequestState) -> ResponseBodyNeed {
        if !self.response_body {
            return ResponseBodyNeed::Stream;
        }
        self.body_need_of(request, |_| true)
    }

    /// [`PluginChain::response_body_need`] settled on the response's head (`status`,
    /// `headers`): the entries that declared which responses they read the body of
    /// (`declare-response-bodies`) and do not read this one's are left out, and with none left
    /// it streams. `need` is what was found before the head; unchanged where no entry narrowed.
    pub fn response_body_need_for(&self, request: &RequestState, need: ResponseBodyNeed, status: u16, headers: &http::HeaderMap) -> ResponseBodyNeed {
        if need == ResponseBodyNeed::Stream || !self.response_bodies_narrowed {
            return need;
        }
        self.body_need_of(request, |entry| entry.pool.response_bodies().is_none_or(|bodies| bodies.reads(status, headers)))
    }

    /// The need of the entries reading response bodies for which `reads` holds: whole if one
    /// of them did not narrow it by size, else the longest size asked for; none reading: stream.
    fn body_need_of(&self, request: &RequestState, reads: impl Fn(&ChainEntry) -> bool) -> ResponseBodyNeed {
        let mut longest: Option<u64> = None;
        for (index, _) in self.entries.iter().enumerate().filter(|(_, e)| e.descriptor.response_body && reads(e)) {
            match request.response_edits.body_limit(index) {
                Some(max) => longest = Some(longest.map_or(max, |l| l.max(max))),
                None => return ResponseBodyNeed::Whole,
            }
        }
        longest.map_or(ResponseBodyNeed::Stream, ResponseBodyNeed::UpTo)
    }

    /// Runs the request phases: each entry's fixed edits, then its `on-request`. Returns the (possibly changed) request, how many entries ran (the
    /// response phases run for those), and the outcome. The request comes and goes boxed: each
    /// call takes it and gives it back, a pointer's move each way. The future holds a Wasm
    /// call's state (~3 KB): callers box it once per request rather than carry it inline.
    /// Concurrency slots granted on the way are pushed to `held`: the caller keeps them until
    /// the response has been sent.
    ///
    /// `clock` is a reading taken as the phases begin. Each call is timed from it, and it is
    /// moved to the call's end (and past any wait a plugin asked for), so one reading ends a call
    /// and starts the next, and the caller starts its next phase from it without reading the
    /// clock again.
    pub async fn run_request_phases(
        &self,
        mut request: Box<RequestState>,
        max_delay: Duration,
        held: &mut Vec<SlotGuard>,
        clock: &mut Instant,
    ) -> (Box<RequestState>, usize, RequestOutcome) {
        // Counted afresh at the first header a plugin writes in these phases, whatever changed
        // the headers before them.
        request.header_tally.forget();
        for (index, entry) in self.entries.iter().enumerate() {
            if let Some(fixed) = entry.pool.fixed_edits() {
                fixed.apply_to_request(&mut request, entry.name());
                if request.past_limits {
                    let outcome = past_limits(entry, &request);
                    return (request, index, outcome);
                }
            }
            if !entry.descriptor.on_request {
                continue;
            }
            request.response_edits.begin(index);
            // A call that fails open is skipped: what it changed before failing is undone.
            let snapshot = (entry.failure == FailurePolicy::Open).then(|| request.snapshot());
            let started = *clock;
            let span = tracing::debug_span!("plugin", plugin = entry.name(), phase = "on-request");
            // Pinned where it is made, so the call's ~1 KB future is not copied into the span.
            let call = std::pin::pin!(entry.pool.on_request(request, entry.descriptor.request_body, started));
            let under_way = PhaseCall::begin(entry, false, started);
            let (returned, result) = call.instrument(span).await;
            *clock = Instant::now();
            under_way.returned(*clock, || crate::telemetry::spans::ChildSpan::request_phase(entry.name(), started, *clock, &result));
            request = returned;
            // Its changes made, except one the limits refused: not sent on without it (nor
            // delayed, nor given a slot first). An answer of its own stands.
            if request.past_limits && matches!(result, Ok(PhaseAction::Continue | PhaseAction::Delay(_) | PhaseAction::AcquireSlot(_))) {
                let outcome = past_limits(entry, &request);
                return (request, index + 1, outcome);
            }
            match result {
                Ok(PhaseAction::Continue) => entry.metrics.record_decision(Decision::Continue),
                Ok(PhaseAction::Delay(wait)) => {
                    entry.metrics.record_decision(Decision::Delay);
                    tokio::time::sleep(wait.min(max_delay)).await;
                    *clock = Instant::now();
                }
                Ok(PhaseAction::Respond(response)) => {
                    entry.metrics.record_decision(Decision::Respond);
                    return (request, index + 1, RequestOutcome::Respond(response));
                }
                // Boxed: waiting for a slot is the rare path (~1 KB of future every call would carry).
                Ok(PhaseAction::AcquireSlot(slot)) => match Box::pin(acquire_slot(entry, &request, slot, max_delay)).await {
                    Ok(guard) => {
                        *clock = Instant::now();
                        entry.metrics.record_decision(Decision::Slot);
                        held.push(guard);
                    }
                    Err(refuse) => {
                        *clock = Instant::now();
                        entry.metrics.record_decision(Decision::SlotRefused);
                        return (request, index + 1, RequestOutcome::Respond(refuse));
                    }
                },
                Err(failure) => {
                    if let Err(error) = entry_failed(entry, &request, "on-request", failure) {
                        // The entries before it ran; its own half-made changes are not answered.
                        return (request, index, RequestOutcome::Failed(error));
                    }
                    if let Some(snapshot) = snapshot {
                        request.restore(snapshot);
                    }
                }
            }
        }
        (request, self.entries.len(), RequestOutcome::Upstream)
    }

    /// Runs the response phases of the first `ran` entries, in reverse order: each entry's
    /// response edits, then its `on-response` (boxed by the caller, like the request phases).
    /// `clock` is moved along as in [`PluginChain::run_request_phases`]. When an entry fails
    /// closed, the request comes back with the error and that entry's index: the response edits
    /// of the entries before it, not yet made, are still to be made on the gateway's answer
    /// (those after it, and its own, were made on the response it replaces).
    pub async fn run_response_phases(
        &self,
        ran: usize,
        mut request: Box<RequestState>,
        response: ResponseState,
        clock: &mut Instant,
    ) -> Result<(Box<RequestState>, ResponseState), (Box<RequestState>, GatewayError, usize)> {
        // Boxed for the phases, as the request is: each call takes it and gives it back.
        let mut response = Box::new(response);
        for (index, entry) in self.entries[..ran.min(self.entries.len())].iter().enumerate().rev() {
            let mut tally = HeaderTally::default();
            make_response_edits(entry.pool.fixed_edits(), index, entry.name(), &mut request, &mut response.headers, &mut tally);
            if !entry.descriptor.on_response {
                continue;
            }
            // The response and the context (the one part of the request still writable) as they
            // were, for a call that fails open.
            let snapshot = (entry.failure == FailurePolicy::Open).then(|| ((*response).clone(), request.context.clone()));
            let started = *clock;
            let span = tracing::debug_span!("plugin", plugin = entry.name(), phase = "on-response");
            // A narrowed need sees the body only if it was buffered, fits, and is of a response
            // the entry declared it reads.
            let body_access = entry.descriptor.response_body
                && request.response_edits.body_limit(index).is_none_or(|max| response.body.as_ref().is_some_and(|b| b.len() as u64 <= max))
                && entry.pool.response_bodies().is_none_or(|bodies| bodies.reads(response.status.as_u16(), &response.headers));
            let call = std::pin::pin!(entry.pool.on_response(request, response, body_access, started));
            let under_way = PhaseCall::begin(entry, true, started);
            let (req, resp, result) = call.instrument(span).await;
            *clock = Instant::now();
            under_way.returned(*clock, || crate::telemetry::spans::ChildSpan::response_phase(entry.name(), started, *clock, &result));
            request = req;
            response = resp;
            if let Err(failure) = result {
                if let Err(error) = entry_failed(entry, &request, "on-response", failure) {
                    return Err((request, error, index));
                }
                if let Some((before, context)) = snapshot {
                    (*response, request.context) = (before, context);
                }
            }
        }
        Ok((request, *response))
    }
}

/// The answer to a request a plugin's change could not be made to for `[limits]`
/// ([`RequestState::past_limits`]): the client's headers left too little room for the route's
/// own (a 431, as for a client's request past them). The refused change was warned about with
/// the entry's name as it was refused; this says what came of it, at `debug`: a client padding
/// its requests chooses how often it happens.
fn past_limits(entry: &ChainEntry, request: &RequestState) -> RequestOutcome {
    let request_id = &*request.request_id;
    tracing::debug!(plugin = entry.name(), request_id, "request answered 431: a change the plugin made would take its headers or request line past [limits]");
    RequestOutcome::Failed(GatewayError::HeadersTooLarge("with the headers this route adds, the request passes the gateway's header limits".into()))
}

/// Makes the response edits of chain entry `index` (named `plugin`) on `headers`, as one run of
/// writes counted in `tally`, held to the request's response header limits: its fixed ones
/// (`fixed-edits`) first, then those its `on-request` recorded (`request.edit-response`). Where
/// its response phase runs, before its `on-response`; `airlock plugin test` makes them alike.
pub fn make_response_edits(
    fixed: Option<&FixedEdits>,
    index: usize,
    plugin: &str,
    request: &mut RequestState,
    headers: &mut http::HeaderMap,
    tally: &mut HeaderTally,
) {
    let bound = request.header_limits.response;
    if let Some(fixed) = fixed {
        fixed.apply_to_response(headers, bound, tally, plugin, request);
    }
    request.response_edits.apply_counted(index, headers, bound, plugin, &request.request_id, tally);
}

/// Waits out the slot request's delay, then for a slot; the request's refusal when none is granted.
async fn acquire_slot(
    entry: &ChainEntry,
    request: &RequestState,
    slot: SlotRequest,
    max_delay: Duration,
) -> Result<SlotGuard, ResponseState> {
    if !slot.delay.is_zero() {
        tokio::time::sleep(slot.delay.min(max_delay)).await;
    }
    let max_wait = slot.max_wait.min(max_delay);
    entry.slots.acquire(&slot.key, slot.limit, slot.queue, max_wait).await.map_err(|refused| {
        tracing::debug!(plugin = entry.name(), route = &*request.route_id, "concurrency slot refused: {refused}");
        slot.refuse
    })
}

/// Logs a failed call and applies the entry's failure policy.
fn entry_failed(entry: &ChainEntry, request: &RequestState, phase: &str, failure: Failure) -> Result<(), GatewayError> {
    let plugin = entry.name();
    let request_id = &*request.request_id;
    let route = &*request.route_id;
    entry.metrics.record_failure(failure.kind());
    // A trap's message can quote the plugin (its panic, its functions' names, a `configure`
    // error at runtime): on one line, and cut (logged on every such request, outside any budget).
    let said = failure.to_string();
    let said = crate::runtime::host::log::one_line(crate::runtime::host::log::truncate(&said, 4096));
    match entry.failure {
        // The sandbox was full: the gateway's capacity, not the plugin's fault, answered 503.
        FailurePolicy::Closed if matches!(failure, Failure::Busy { .. }) => {
            tracing::warn!(plugin, phase, route, request_id, kind = failure.kind(), "{said}; answering 503");
            Err(GatewayError::PluginBusy(plugin.to_owned()))
        }
        FailurePolicy::Closed => {
            tracing::error!(plugin, phase, route, request_id, kind = failure.kind(), "plugin failed ({said}); failing closed");
            Err(GatewayError::PluginFailed { plugin: plugin.to_owned(), kind: failure.kind() })
        }
        FailurePolicy::Open => {
            tracing::warn!(plugin, phase, route, request_id, kind = failure.kind(), "plugin failed ({said}); failing open");
            Ok(())
        }
    }
}
