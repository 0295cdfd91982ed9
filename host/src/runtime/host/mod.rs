//! What the host gives a plugin instance: the store data every host interface reads, and the
//! one `bindgen!` of the `airlock:plugin` world. Each WIT interface the host implements lives in its
//! own file here, named after it, so each capability is one place to audit:
//!
//! - [`types`]: the `request` and `response` resources (always linked);
//! - [`log`]: writing to the gateway log (always linked);
//! - [`wasi`]: the harmless WASI baseline (io, cli, clocks, random), and nothing else of WASI;
//! - [`crypto`]: public-key signature verification, natively (always linked);
//! - [`fixed_edits`]: the changes a chain entry makes to every request, declared at `configure`
//!   and made natively (always linked);
//! - [`state`]: counters and keyed values with expiry (capability `state`);
//! - [`http_client`]: outbound HTTP to granted origins (capability `http-client`);
//! - [`metrics`]: the plugin's own counters, gauges and histograms (capability `metrics`);
//! - [`wasi`] also links `wasi:filesystem`, read-only over the granted directory (capability `files`).

pub mod crypto;
pub mod fixed_edits;
pub mod http_client;
pub mod log;
pub mod metrics;
pub mod state;
pub mod types;
pub mod wasi;

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtx;

use crate::exchange::{RequestState, ResponseState};
use crate::runtime::call_clock::CallClock;
use crate::runtime::limits::MemoryLimiter;

/// The generated bindings of the `airlock:plugin` world (the WIT is their documentation).
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        with: {
            "airlock:plugin/types.request": super::types::RequestHandle,
            "airlock:plugin/types.response": super::types::ResponseHandle,
            "airlock:plugin/crypto.public-key": super::crypto::PublicKey,
        },
        imports: { "airlock:plugin/state": async, "airlock:plugin/http-client": async },
        exports: { default: async },
    });
}
pub use bindings::*;

/// Most entries a plugin's resource table may hold (WASI streams and pollables, open files, public
/// keys): a plugin that leaks handles in a loop hits this instead of growing host memory.
pub const MAX_TABLE_ENTRIES: usize = 1024;

/// Most resource-table entries an instance may hold between calls, past those it held once
/// configured (its preopened directory, keys its config named), and still be kept warm: a
/// plugin usually opens and closes its files within a call. One holding more
/// (open files it never closes, keys) is dropped after its call, so what it holds is let go:
/// before, 16 warm instances of one plugin granted `files` held ~12,000 open files while idle,
/// and three such plugins used up the process's open-file limit.
pub const MAX_IDLE_TABLE_ENTRIES: usize = 64;

impl HostState {
    /// Entries in the instance's resource table now (open files, streams, keys): one pass over
    /// the table, at most [`MAX_TABLE_ENTRIES`].
    pub fn held_resources(&mut self) -> usize {
        self.table.iter_mut().count()
    }
}

/// The data of one plugin instance's store: everything host interfaces can reach for it.
pub struct HostState {
    /// The chain entry's plugin name, for log lines and errors.
    pub plugin: Arc<str>,
    /// The WASI baseline's context (no env, no args, no preopens, stdio into the log).
    pub wasi: WasiCtx,
    /// The log lines the current call may still cause (shared with stdout and stderr).
    pub log: Arc<log::LogBudget>,
    /// WASI resources (streams, pollables) of this instance.
    pub table: ResourceTable,
    /// The memory cap, and whether the plugin ran into it.
    pub limiter: MemoryLimiter,
    /// The request of the phase call in progress (the `request` resource reads and writes it).
    /// Boxed, as the chain holds it: handing it to each call and back moves a pointer, not the
    /// ~400-byte state.
    pub request: Option<Box<RequestState>>,
    /// The response of the response-phase call in progress (boxed for the same reason).
    pub response: Option<Box<ResponseState>>,
    /// Which bodies the call in progress may read and write (else `body()` is `none`).
    pub body_access: BodyAccess,
    /// True during response phases: request setters are ignored.
    pub request_read_only: bool,
    /// Whether the chain entry reads response bodies (its descriptor's `response-body`), which
    /// `request.limit-response-body` narrows.
    pub reads_response_body: bool,
    /// The current call's running and yielded time, for its CPU deadline and wall-clock limit
    /// (shared with the future that polls the call).
    pub clock: Arc<CallClock>,
    /// The CPU deadline of one call.
    pub cpu_deadline: Duration,
    /// Set when the deadline interrupted the current call.
    pub deadline_hit: bool,
    /// The header names this instance's plugin used last, parsed once.
    pub header_names: types::HeaderNames,
    /// Header changes of the current call refused past the header limits (logged once a call).
    pub header_refusals: crate::exchange::RefusalLog,
    /// Set when a response edit of the current call was refused past the request's cap
    /// (logged once a call).
    pub response_edits_refused: bool,
    /// A body the current call set past the route's `max_body_bytes`: the call's failure once
    /// it returns ([`crate::runtime::failure::Failure::BodyTooLarge`]).
    pub body_too_large: Option<crate::runtime::failure::Failure>,
    /// The chain entry's view of the state store (capability `state`), keys already scoped.
    pub state: Option<crate::state::ScopedState>,
    /// The entry's `http-client` grant, if it has one.
    pub http: Option<Arc<http_client::HttpClientGrant>>,
    /// The plugin's own metrics (capability `metrics`), if granted.
    pub metrics: Option<Arc<crate::telemetry::plugin_metrics::PluginMetricSet>>,
    /// True during `configure`, the one call where `fixed-edits.declare` is heard.
    pub configuring: bool,
    /// What `fixed-edits.declare` declared in this instance's `configure`, until the pool takes it.
    pub fixed_edits: Option<fixed_edits::FixedEdits>,
    /// What `fixed-edits.declare-response-bodies` declared in this instance's `configure`, until
    /// the pool takes it.
    pub response_bodies: Option<crate::runtime::response_bodies::ResponseBodies>,
}

/// Inputs from this size on have the host's work on them charged to the call
/// ([`HostState::charged`]): a SHA-256 of 64 KiB takes ~50 us, far inside a stretch.
pub const CHARGED_INPUT_BYTES: usize = 64 * 1024;

/// The bodies one call may see, each only if the plugin declared it (`request-body`,
/// `response-body`): a plugin that declared the response's body alone does not read the request's
/// in `on-response`, though the gateway still holds it for another plugin that buffered it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodyAccess {
    /// The request's body (`request.body`, `request.set-body`).
    pub request: bool,
    /// The response's body and trailers (`response.body`, `response.set-body`, trailers).
    pub response: bool,
}

impl BodyAccess {
    /// No body: the calls outside the phases (instantiation, `configure`, `describe`).
    pub const NONE: Self = Self { request: false, response: false };
}

impl HostState {
    /// Fresh state for a new instance of plugin `plugin`.
    pub fn new(plugin: Arc<str>, memory_bytes: usize, cpu_deadline: Duration) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_TABLE_ENTRIES);
        let log = log::LogBudget::new(plugin.clone());
        Self {
            wasi: wasi::baseline_ctx(&log),
            log,
            plugin,
            table,
            limiter: MemoryLimiter::new(memory_bytes),
            request: None,
            response: None,
            body_access: BodyAccess::NONE,
            request_read_only: false,
            reads_response_body: false,
            clock: Arc::new(CallClock::new()),
            cpu_deadline,
            deadline_hit: false,
            header_names: Default::default(),
            header_refusals: Default::default(),
            response_edits_refused: false,
            body_too_large: None,
            state: None,
            http: None,
            metrics: None,
            configuring: false,
            fixed_edits: None,
            response_bodies: None,
        }
    }

    /// Runs `work` on `input_len` bytes for the plugin, charging the time it takes to the call's
    /// CPU deadline ([`CallClock::charge`]) when the input is large ([`CHARGED_INPUT_BYTES`]):
    /// for host functions whose work grows with what the plugin hands them (a digest, a key
    /// parsed), which no epoch check interrupts. A small input's work is a few microseconds, well
    /// inside a stretch; timing it would cost two clock readings on every JWT verified, and
    /// count a stall of the thread under it (descheduled mid-call) against the plugin in full.
    pub fn charged<T>(&self, input_len: usize, work: impl FnOnce() -> T) -> T {
        if input_len < CHARGED_INPUT_BYTES {
            return work();
        }
        let started = Instant::now();
        let out = work();
        self.clock.charge(started.elapsed());
        out
    }

    /// Resets the per-call bookkeeping before a call into the guest, which begins `now`.
    pub fn begin_call(&mut self, body_access: BodyAccess, request_read_only: bool, now: Instant) {
        self.body_access = body_access;
        self.request_read_only = request_read_only;
        self.clock.begin(now);
        self.deadline_hit = false;
        self.limiter.oom_hit = false;
        self.limiter.budget_hit = false;
        self.header_refusals = Default::default();
        self.response_edits_refused = false;
        self.body_too_large = None;
        self.log.reset(self.request.as_ref().map(|r| r.request_id.clone()));
    }
}

impl wasmtime_wasi::WasiView for HostState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
