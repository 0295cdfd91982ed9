//! The per-request step: a chain entry's pool of warm, configured plugin instances, and the calls
//! into them.
//!
//! `isolation = "pool"` (the default) keeps up to `pool_size` idle instances, each configured once
//! and then used by one call at a time; an instance is retired after a failure and after
//! `max_uses` calls. `isolation = "request"` makes a fresh instance for every phase call, so no
//! instance ever sees two requests. Every call runs under the entry's CPU deadline and memory cap.
//! Every new instance first takes a place in the sandbox's [`InstanceBudget`] (which may reclaim
//! other pools' idle instances for it, or wait for a busy one); idle instances are given up to it
//! while calls wait for a place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::Resource;
use wasmtime::{Store, UpdateDeadline};

use super::budget::{PluginShare, IdleInstances, InstanceBudget, InstancePermit};
use super::call_clock::{CallClock, within_wall_limit};
use super::engine::SandboxEngine;
use super::failure::{DeadlineExceeded, Failure, classify};
use super::host::airlock::plugin::types::{Action as WitAction, ResponseInit};
use super::host::fixed_edits::FixedEdits;
use super::response_bodies::ResponseBodies;
use super::host::log::{LogBudget, plugin_warn};
use super::host::{BodyAccess, HostState, MAX_IDLE_TABLE_ENTRIES, Plugin, log, wasi};
use super::plugin::{Descriptor, LoadedPlugin, PluginError};
use crate::config::Isolation;
use crate::exchange::{HeaderBound, HeaderTally, RefusalLog, RequestState, ResponseState};

/// Default number of idle warm instances kept per chain entry.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Default number of calls after which a warm instance is replaced (bounds slow leaks in a guest).
pub const DEFAULT_MAX_USES: u64 = 10_000;

/// The per-entry sandbox settings.
#[derive(Debug, Clone)]
pub struct InstanceSettings {
    /// Memory cap of one instance, in bytes.
    pub memory_bytes: usize,
    /// CPU deadline of one call.
    pub cpu_deadline: Duration,
    /// Instance sharing mode.
    pub isolation: Isolation,
    /// Most idle instances kept.
    pub pool_size: usize,
    /// Calls after which an instance is retired.
    pub max_uses: u64,
    /// The entry's scope of the state store (capability `state`).
    pub state: Option<crate::state::ScopedState>,
    /// The directory granted read-only (capability `files`), as an absolute host path.
    pub files: Option<std::path::PathBuf>,
    /// The origins granted for outbound calls (capability `http-client`).
    pub http: Option<Arc<crate::runtime::host::http_client::HttpClientGrant>>,
    /// The plugin's own metric set (capability `metrics`).
    pub metrics: Option<Arc<crate::telemetry::plugin_metrics::PluginMetricSet>>,
    /// The plugin's share of the sandbox's instance places, held by every chain entry of the
    /// same plugin (by name); `None`: a share of the pool's own.
    pub share: Option<Arc<PluginShare>>,
}

impl InstanceSettings {
    /// The longest one phase call may hold a request: its CPU deadline plus the longest single
    /// wait its capabilities allow (an outbound call's timeout, a state backend's). Waiting on
    /// the host is kept out of the CPU deadline, so without this a plugin could hold a request
    /// indefinitely by waiting again and again. The turns a long call yields to other requests
    /// on its worker are added to it as they happen (`call_clock::within_wall_limit`).
    pub fn wall_limit(&self) -> Duration {
        let http = self.http.as_ref().map_or(Duration::ZERO, |g| g.timeout);
        let state = self.state.as_ref().map_or(Duration::ZERO, |s| s.max_wait());
        self.cpu_deadline + http.max(state)
    }

    /// The wall-clock limit of instantiation and `configure`: the CPU deadline plus one wait of
    /// each kind the plugin may make there, and a second on `state` (what a plugin loading
    /// what it caches does: `builtin:jwt` reads its JWKS from `state`, fetches it, writes it
    /// back), so a config that loads with its services slow but within their timeouts is not
    /// refused.
    pub fn configure_wall_limit(&self) -> Duration {
        let http = self.http.as_ref().map_or(Duration::ZERO, |g| g.timeout);
        let state = self.state.as_ref().map_or(Duration::ZERO, |s| s.max_wait());
        self.cpu_deadline + http + state * 2
    }
}

/// What a request phase asked the host to do.
#[derive(Debug)]
pub enum PhaseAction {
    /// Go on.
    Continue,
    /// Answer now with this response.
    Respond(ResponseState),
    /// Wait, then go on.
    Delay(Duration),
    /// Wait for a concurrency slot, then go on holding it.
    AcquireSlot(SlotRequest),
}

/// A plugin's request for a concurrency slot ([`super::slots::SlotTable`]).
#[derive(Debug)]
pub struct SlotRequest {
    /// Which slots the request competes for, within its chain entry.
    pub key: String,
    /// Slots for the key (at least 1).
    pub limit: u32,
    /// Most requests waiting.
    pub queue: u32,
    /// Longest wait for a slot.
    pub max_wait: Duration,
    /// Wait before queueing.
    pub delay: Duration,
    /// The answer when refused.
    pub refuse: ResponseState,
}

/// One live instance with its store.
struct Instance {
    store: Store<HostState>,
    bindings: Plugin,
    uses: u64,
    /// The store's call clock, held here too so a call can be metered while it borrows the store.
    clock: Arc<CallClock>,
    /// Its place in the sandbox's budget; `None` for an instance made while loading the config,
    /// which is never kept. Declared after `store`, so it is given back after the slot is freed.
    permit: Option<InstancePermit>,
    /// Its place among the instances the pool keeps warm; `None` until it is first kept.
    kept: Option<KeptPlace>,
    /// Resources it held once configured (its preopened directory, keys from its config):
    /// what it may hold past that between calls is bounded ([`MAX_IDLE_TABLE_ENTRIES`]).
    held_configured: usize,
}

/// Stacks of idle instances a pool keeps, one per request worker (workers past this many share).
const IDLE_STACKS: usize = 16;

/// A pool's idle warm instances, which the sandbox's budget may reclaim: a stack per request
/// worker ([`crate::workers`]). A worker takes back the instance it released last, whose memory,
/// stack and store are still in its core's caches; from one shared first-in-first-out queue it
/// took the instance released longest ago, often by the other core, and the call began by
/// moving that instance's memory between caches. A worker with none takes one from another's.
///
/// A warm call touches only its worker's stack, which has a cache line of its own. The bound
/// (`capacity`) counts the instances the pool keeps, idle or lent out, so it changes only when
/// an instance is made or dropped: an idle count, changed by every pop and push, was a line
/// both cores wrote twice per plugin call.
struct IdleStacks<T> {
    stacks: [WorkerStack<T>; IDLE_STACKS],
    kept: Arc<KeptCount>,
    capacity: usize,
}

/// One worker's idle instances, alone on its cache lines (128 bytes: x86 fetches lines in pairs).
#[repr(align(128))]
struct WorkerStack<T> {
    items: Mutex<Vec<T>>,
    /// `items.len()`, for a worker looking for a stack to take from without locking each.
    len: AtomicUsize,
}

/// The number of instances a pool keeps, idle or lent out; on cache lines of its own.
#[repr(align(128))]
struct KeptCount(AtomicUsize);

/// An instance's place among the `capacity` its pool keeps; given back when the instance is
/// dropped, whatever drops it (a trap, a timeout, retirement, the budget reclaiming it).
struct KeptPlace(Arc<KeptCount>);

impl Drop for KeptPlace {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> IdleStacks<T> {
    fn new(capacity: usize) -> Self {
        Self {
            stacks: std::array::from_fn(|_| WorkerStack { items: Mutex::new(Vec::new()), len: AtomicUsize::new(0) }),
            kept: Arc::new(KeptCount(AtomicUsize::new(0))),
            capacity,
        }
    }

    /// The instance worker `home` released last; else one another worker released.
    fn pop(&self, home: usize) -> Option<T> {
        let own = home % IDLE_STACKS;
        self.take(own).or_else(|| {
            (1..IDLE_STACKS)
                .map(|step| (own + step) % IDLE_STACKS)
                .filter(|&other| self.stacks[other].len.load(Ordering::Relaxed) > 0)
                .find_map(|other| self.take(other))
        })
    }

    fn take(&self, index: usize) -> Option<T> {
        let stack = &self.stacks[index];
        let mut items = stack.items.lock().unwrap_or_else(PoisonError::into_inner);
        let instance = items.pop();
        stack.len.store(items.len(), Ordering::Relaxed);
        instance
    }

    /// A place for one more kept instance; `None` when the pool keeps `capacity` already.
    fn admit(&self) -> Option<KeptPlace> {
        if self.kept.0.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.kept.0.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(KeptPlace(self.kept.clone()))
    }

    /// Keeps an instance that holds a place ([`Self::admit`]) on worker `home`'s stack.
    fn push(&self, home: usize, instance: T) {
        let stack = &self.stacks[home % IDLE_STACKS];
        let mut items = stack.items.lock().unwrap_or_else(PoisonError::into_inner);
        items.push(instance);
        stack.len.store(items.len(), Ordering::Relaxed);
    }

    /// Idle instances now, over all workers.
    fn len(&self) -> usize {
        self.stacks.iter().map(|stack| stack.len.load(Ordering::Relaxed)).sum()
    }
}

impl IdleInstances for IdleStacks<Box<Instance>> {
    fn reclaim_one(&self) -> bool {
        self.pop(0).is_some()
    }
}

/// The pool of one chain entry: a plugin, its config, and its warm instances.
pub struct InstancePool {
    plugin: Arc<LoadedPlugin>,
    name: Arc<str>,
    config_json: String,
    settings: InstanceSettings,
    /// Boxed: taken and kept on every warm call, an instance moves as a pointer.
    idle: Arc<IdleStacks<Box<Instance>>>,
    /// Its plugin's share of the sandbox's places (shared with every entry running it).
    share: Arc<PluginShare>,
    descriptor: Descriptor,
    /// The changes the entry makes to every request, declared by its first `configure`.
    fixed_edits: Option<FixedEdits>,
    /// The responses the entry reads the body of, if its first `configure` narrowed them.
    response_bodies: Option<ResponseBodies>,
}

/// What an instance's `configure` declared through `fixed-edits`: its fixed changes and the
/// responses it reads the body of.
type Declared = (Option<FixedEdits>, Option<ResponseBodies>);

/// Makes a store interruptible: each epoch tick past the deadline either yields to the async
/// runtime (so a long call cannot starve other requests on its thread) or, once the call has run
/// for its CPU deadline, interrupts it. Running time is the call clock's: turns given to other
/// requests and waits on the host are not in it (see `call_clock`).
pub(crate) fn arm_store(store: &mut Store<HostState>, sandbox: &SandboxEngine) {
    store.limiter(|s| &mut s.limiter);
    let ticker = sandbox.ticker().clone();
    store.epoch_deadline_callback(move |mut cx| {
        // Still running: keeps the epoch ticker awake, ticking finely, under a long call.
        ticker.caught_running();
        let state = cx.data_mut();
        if state.clock.running(Instant::now()) >= state.cpu_deadline {
            state.deadline_hit = true;
            return Err(DeadlineExceeded.into());
        }
        state.clock.yielding();
        // tokio's yield, not wasmtime's plain one (which wakes the task at once): the task is
        // woken only after the worker has polled its I/O driver, so the other requests on the
        // worker see their sockets' events between two slices of a long call, not once every
        // ~60 slices (tokio's event interval), i.e. every ~60 ms.
        Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
    });
    store.set_epoch_deadline(1);
}

/// Starts a call into the store's instance (instantiation, configure, describe or a phase): its
/// clock and per-call state ([`HostState::begin_call`]), a fresh epoch deadline, and the epoch
/// ticker told a call runs (it sleeps while none does). Every entry into Wasm goes through here.
pub(crate) fn start_call(store: &mut Store<HostState>, sandbox: &SandboxEngine, body_access: BodyAccess, request_read_only: bool, now: Instant) {
    store.data_mut().begin_call(body_access, request_read_only, now);
    store.set_epoch_deadline(1);
    sandbox.plugin_running();
}

impl InstancePool {
    /// Builds the pool and configures a first instance, so a bad config is rejected at load.
    pub async fn new(
        plugin: Arc<LoadedPlugin>,
        name: Arc<str>,
        config_json: String,
        settings: InstanceSettings,
    ) -> Result<Self, PluginError> {
        let mut pool = Self {
            idle: Arc::new(IdleStacks::new(settings.pool_size.max(1))),
            share: settings.share.clone().unwrap_or_else(|| Arc::new(plugin.sandbox.budget.plugin_share())),
            descriptor: plugin.descriptor,
            fixed_edits: None,
            response_bodies: None,
            plugin,
            name,
            config_json,
            settings,
        };
        // The first instance checks the config. It is kept warm only if the budget has a place
        // for it now; else it used one of the slots reserved for loading and is dropped.
        let permit = pool.plugin.sandbox.budget.try_acquire(&pool.share);
        let (first, configured, (fixed_edits, response_bodies)) = pool.instantiate(permit).await.map_err(|e| match e {
            InstantiateError::Configure(msg) => PluginError::Configure(msg),
            InstantiateError::Failed(f) => PluginError::Failed(f),
        })?;
        // The configured entry may only narrow what the component declared.
        let declared = pool.plugin.descriptor;
        pool.descriptor = Descriptor {
            on_request: declared.on_request && configured.on_request,
            on_response: declared.on_response && configured.on_response,
            request_body: declared.request_body && configured.request_body,
            response_body: declared.response_body && configured.response_body,
        };
        pool.fixed_edits = fixed_edits;
        pool.response_bodies = response_bodies;
        if pool.settings.isolation == Isolation::Pool {
            let idle: Arc<dyn IdleInstances> = pool.idle.clone();
            pool.budget().register(Arc::downgrade(&idle));
            if first.permit.is_some() {
                pool.keep(first);
            }
        }
        Ok(pool)
    }

    /// The chain entry's plugin name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The entry's scope of the state store, if it was granted `state`.
    pub fn state(&self) -> Option<&crate::state::ScopedState> {
        self.settings.state.as_ref()
    }

    /// The loaded plugin behind this pool.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// The phases and bodies this entry uses (the component's, narrowed by its configure answer).
    pub fn descriptor(&self) -> Descriptor {
        self.descriptor
    }

    /// The changes the entry makes to every request without a call (`fixed-edits.declare`).
    pub fn fixed_edits(&self) -> Option<&FixedEdits> {
        self.fixed_edits.as_ref()
    }

    /// The responses the entry reads the body of (`fixed-edits.declare-response-bodies`), if it
    /// narrowed them; `None`: every one its descriptor's `response-body` asks for.
    pub fn response_bodies(&self) -> Option<&ResponseBodies> {
        self.response_bodies.as_ref()
    }

    /// Number of idle warm instances right now.
    pub fn idle_len(&self) -> usize {
        self.idle.len()
    }

    /// Most idle warm instances kept (0 with `isolation = "request"`).
    pub fn capacity(&self) -> usize {
        if self.settings.isolation == Isolation::Pool { self.idle.capacity } else { 0 }
    }

    fn budget(&self) -> &InstanceBudget {
        &self.plugin.sandbox.budget
    }

    /// A new instance, configured: with the phases its `configure` answered, and the fixed edits
    /// and response bodies it declared (which only the pool's first instance's count: the rest
    /// declare the same).
    async fn instantiate(&self, permit: Option<InstancePermit>) -> Result<(Box<Instance>, Descriptor, Declared), InstantiateError> {
        let mut state = HostState::new(self.name.clone(), self.settings.memory_bytes, self.settings.cpu_deadline);
        state.limiter.shared = Some(self.plugin.sandbox.memory.clone());
        state.state = self.settings.state.clone();
        state.http = self.settings.http.clone();
        state.metrics = self.settings.metrics.clone();
        if let Some(dir) = &self.settings.files {
            state.wasi = wasi::files_ctx(&state.log, dir).map_err(|e| InstantiateError::Failed(Failure::Trap(e)))?;
        }
        let mut store = Store::new(&self.plugin.sandbox.engine, state);
        arm_store(&mut store, &self.plugin.sandbox);
        start_call(&mut store, &self.plugin.sandbox, BodyAccess::NONE, false, Instant::now());
        let clock = store.data().clock.clone();
        // Held to a wall-clock limit, as `configure` below: a plugin waiting
        // there (a sleep, outbound calls one after another) hung `airlock check`, start-up, a
        // reload and every request that needed a fresh instance, with nothing logged.
        let limit = self.settings.configure_wall_limit();
        let bindings = match within_wall_limit(&clock, limit, self.plugin.pre.instantiate_async(&mut store)).await {
            Ok(b) => b,
            Err(e) => return Err(InstantiateError::Failed(classify(store.data(), e))),
        };
        start_call(&mut store, &self.plugin.sandbox, BodyAccess::NONE, false, Instant::now());
        store.data_mut().configuring = true;
        let configure = bindings.airlock_plugin_handler().call_configure(&mut store, &self.config_json);
        let configured = within_wall_limit(&clock, limit, configure).await;
        store.data_mut().configuring = false;
        let declared = (store.data_mut().fixed_edits.take(), store.data_mut().response_bodies.take());
        match configured {
            Ok(Ok(d)) => Ok((
                Box::new(Instance { held_configured: store.data_mut().held_resources(), store, bindings, uses: 0, clock, permit, kept: None }),
                Descriptor {
                    on_request: d.on_request,
                    on_response: d.on_response,
                    request_body: d.request_body,
                    response_body: d.response_body,
                },
                declared,
            )),
            // The plugin's own text, shown by `check`, start-up, a reload's log and answer:
            // one line, cut as its log lines are, so it cannot forge lines of the gateway's or
            // make each of them megabytes.
            Ok(Err(msg)) => {
                let cut = log::one_line(log::truncate(&msg, log::MAX_MESSAGE_BYTES));
                Err(InstantiateError::Configure(log::truncate(&cut, log::MAX_MESSAGE_BYTES).to_owned()))
            }
            Err(e) => Err(InstantiateError::Failed(classify(store.data(), e))),
        }
    }

    /// An instance for one call, and when the call begins: `now`, the caller's last reading of
    /// the clock, when a warm instance is at hand; a new reading after waiting for a place in
    /// the budget and instantiating, which are not the call's running time.
    async fn acquire(&self, now: Instant) -> Result<(Box<Instance>, Instant), Failure> {
        if self.settings.isolation == Isolation::Pool
            && let Some(instance) = self.idle.pop(crate::workers::current())
        {
            return Ok((instance, now));
        }
        // Boxed: instantiating is a large future (~2 KB) that every phase call would otherwise
        // carry and copy, warm or not; it is the slow path, where one allocation is nothing.
        let instance = Box::pin(self.instantiate_new()).await?;
        Ok((instance, Instant::now()))
    }

    /// A new configured instance, once the budget has given it a place.
    async fn instantiate_new(&self) -> Result<Box<Instance>, Failure> {
        // Waiting for a place is bounded by what the call itself could hold the request for.
        let wait = self.settings.wall_limit();
        let Some(permit) = self.budget().acquire(&self.share, wait).await else {
            return Err(Failure::Busy { limit: self.budget().limit(), waited: wait });
        };
        match self.instantiate(Some(permit)).await {
            Ok((instance, ..)) => Ok(instance),
            Err(InstantiateError::Failed(f)) => Err(f),
            // The config was accepted at load; a refusal now is the plugin misbehaving.
            Err(InstantiateError::Configure(msg)) => Err(Failure::Trap(format!("configure failed at runtime: {msg}"))),
        }
    }

    /// Keeps a used instance warm, or drops it: after `max_uses` calls, with strict isolation,
    /// when it holds no place in the budget, while other calls wait for a place (its slot goes
    /// to them), and, for a plugin granted `files`, when it holds more than
    /// [`MAX_IDLE_TABLE_ENTRIES`] resources past what it held once configured (files left open:
    /// dropped, they are closed).
    fn release(&self, mut instance: Box<Instance>) {
        instance.uses += 1;
        if self.settings.isolation == Isolation::Pool
            && instance.uses < self.settings.max_uses
            && instance.permit.is_some()
            && !self.budget().has_waiters(&self.share)
            && (self.settings.files.is_none() || instance.store.data_mut().held_resources() <= instance.held_configured + MAX_IDLE_TABLE_ENTRIES)
        {
            self.keep(instance);
        }
    }

    /// Keeps `instance` idle on this worker's stack, unless the pool keeps `capacity` others:
    /// then it is dropped, and the pool stays bounded.
    fn keep(&self, mut instance: Box<Instance>) {
        if instance.kept.is_none() {
            instance.kept = self.idle.admit();
        }
        if instance.kept.is_some() {
            self.idle.push(crate::workers::current(), instance);
        }
    }

    /// Runs `on-request`. The request comes back in every case (changed or not), with the
    /// plugin's action or the reason it failed. `now` is a reading of the clock just taken
    /// (the chain's, which ended the call before): a warm call begins at it, a reading fewer.
    pub async fn on_request(
        &self,
        request: Box<RequestState>,
        body_access: bool,
        now: Instant,
    ) -> (Box<RequestState>, Result<PhaseAction, Failure>) {
        let (mut instance, began) = match self.acquire(now).await {
            Ok(acquired) => acquired,
            Err(f) => return (request, Err(f)),
        };
        let state = instance.store.data_mut();
        state.request = Some(request);
        state.reads_response_body = self.descriptor.response_body;
        start_call(&mut instance.store, &self.plugin.sandbox, BodyAccess { request: body_access, response: false }, false, began);
        // A call cancelled on timeout leaves its instance discarded, not reused. Pinned where it
        // is made: the call future is ~1 KB, moved by value it was copied at every layer.
        let result = {
            let call = std::pin::pin!(instance.bindings.airlock_plugin_handler().call_on_request(&mut instance.store, Resource::new_borrow(0)));
            within_wall_limit(&instance.clock, self.settings.wall_limit(), call).await
        };
        let state = instance.store.data_mut();
        let Some(request) = state.request.take() else {
            unreachable_state(&self.name);
            return (placeholder_request(), Err(Failure::Trap("request state lost".into())));
        };
        match result {
            Ok(action) => {
                // An invalid answer is the plugin's failure, but the instance is sound: reused.
                let bounds = AnswerBounds { headers: request.header_limits.response, body: request.body_limit.max(MIN_ANSWER_BODY_BYTES) };
                let action = match state.body_too_large.take() {
                    Some(failure) => Err(failure),
                    None => convert_action(action, &instance.store.data().log, bounds),
                };
                self.release(instance);
                (request, action)
            }
            Err(e) => {
                let failure = classify(instance.store.data(), e);
                (request, Err(failure))
            }
        }
    }

    /// Runs `on-response`. Request and response come back in every case. `body_access` is the
    /// response body's; the request's is readable only if the plugin declared `request-body`.
    /// `now` is as for [`InstancePool::on_request`].
    pub async fn on_response(
        &self,
        request: Box<RequestState>,
        response: Box<ResponseState>,
        body_access: bool,
        now: Instant,
    ) -> (Box<RequestState>, Box<ResponseState>, Result<(), Failure>) {
        let (mut instance, began) = match self.acquire(now).await {
            Ok(acquired) => acquired,
            Err(f) => return (request, response, Err(f)),
        };
        let state = instance.store.data_mut();
        state.request = Some(request);
        state.response = Some(response);
        // The request's body only if the plugin declared it: `body_access` is the response's.
        let bodies = BodyAccess { request: self.descriptor.request_body, response: body_access };
        start_call(&mut instance.store, &self.plugin.sandbox, bodies, true, began);
        let result = {
            let handler = instance.bindings.airlock_plugin_handler();
            let call = std::pin::pin!(handler.call_on_response(&mut instance.store, Resource::new_borrow(0), Resource::new_borrow(0)));
            within_wall_limit(&instance.clock, self.settings.wall_limit(), call).await
        };
        let state = instance.store.data_mut();
        let (Some(request), Some(response)) = (state.request.take(), state.response.take()) else {
            unreachable_state(&self.name);
            return (placeholder_request(), placeholder_response(), Err(Failure::Trap("request state lost".into())));
        };
        match result {
            Ok(()) => {
                let outcome = state.body_too_large.take().map_or(Ok(()), Err);
                self.release(instance);
                (request, response, outcome)
            }
            Err(e) => {
                let failure = classify(instance.store.data(), e);
                (request, response, Err(failure))
            }
        }
    }
}

enum InstantiateError {
    Configure(String),
    Failed(Failure),
}

/// Longest delay a plugin may ask for in one `delay` action.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// The body a plugin's own answer may always have, whatever the route's `max_body_bytes`: that
/// limit is on what clients send, and a route taking no request bodies (`max_body_bytes = 0`)
/// still answers ip-restrict's 403, a validator's list of errors, or `respond`'s page.
pub const MIN_ANSWER_BODY_BYTES: u64 = 1 << 20;

/// What a plugin-made answer is held to: the request's response header limits, and the route's
/// body limit or [`MIN_ANSWER_BODY_BYTES`], the larger (the answer is kept in host memory until
/// the client has read it, outside the plugin's memory cap).
#[derive(Clone, Copy)]
struct AnswerBounds {
    headers: HeaderBound,
    body: u64,
}

fn convert_action(action: WitAction, log: &LogBudget, bounds: AnswerBounds) -> Result<PhaseAction, Failure> {
    Ok(match action {
        WitAction::Continue => PhaseAction::Continue,
        WitAction::Delay(ms) => PhaseAction::Delay(millis(ms)),
        WitAction::Respond(init) => PhaseAction::Respond(convert_response(init, log, bounds, "respond body")?),
        WitAction::AcquireSlot(slot) => {
            // Held with the request until its response is sent: a long key is kept as its digest.
            let key = crate::runtime::slots::bounded_key(slot.key);
            PhaseAction::AcquireSlot(SlotRequest {
                limit: if slot.limit == 0 {
                    plugin_warn!(log, key, "acquire-slot with limit 0 taken as limit 1 (at least one request must be able to run)");
                    1
                } else {
                    slot.limit
                },
                key,
                queue: slot.queue,
                max_wait: millis(slot.max_wait_ms),
                delay: millis(slot.delay_ms),
                refuse: convert_response(slot.refuse, log, bounds, "acquire-slot refusal body")?,
            })
        }
    })
}

/// A plugin's wait, capped at [`MAX_DELAY`].
fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms)).min(MAX_DELAY)
}

/// A plugin-made response; invalid headers and those past the response header limits are
/// dropped, each logged. An invalid or informational (1xx: no final answer) status is the
/// plugin's failure (its headers and body would pass for a deliberate answer), as is a body (`what`)
/// longer than the route's body limit: counted and handled by the entry's failure policy like a
/// trap.
fn convert_response(init: ResponseInit, log: &LogBudget, bounds: AnswerBounds, what: &'static str) -> Result<ResponseState, Failure> {
    let Some(status) = crate::exchange::final_status(init.status) else {
        return Err(Failure::InvalidStatus(init.status));
    };
    if init.body.len() as u64 > bounds.body {
        return Err(Failure::TooLarge { what, bytes: init.body.len(), limit: bounds.body });
    }
    if matches!(status.as_u16(), 204 | 205 | 304) && !init.body.is_empty() {
        // The answer goes out without it (RFC 9110 15.3.5, 15.3.6, 15.4.5): said, not silent.
        plugin_warn!(log, status = status.as_u16(), bytes = init.body.len(), "answer body not sent: a {} has no content", status.as_u16());
    }
    let bound = bounds.headers;
    let mut headers = http::HeaderMap::with_capacity(init.headers.len().min(bound.count).min(64));
    let mut refusals = RefusalLog::default();
    // Bytes counted once for the answer, not once per header.
    let mut tally = HeaderTally::default();
    for h in init.headers {
        match (http::HeaderName::from_bytes(h.name.as_bytes()), http::HeaderValue::from_bytes(&h.value)) {
            (Ok(name), Ok(_)) if crate::proxy::headers::gateway_managed(&name) => {
                plugin_warn!(log, header = %name, "framing or connection header in plugin response ignored: the gateway sets it");
            }
            (Ok(name), Ok(value)) => {
                if bound.admit(&mut tally, &headers, &name, &value, false) {
                    headers.append(name, value);
                } else {
                    refusals.refused(log.plugin(), log.request_id().as_deref().unwrap_or(""), "response header", bound);
                }
            }
            _ => plugin_warn!(log, header = crate::runtime::host::log::shown(&h.name), "invalid header in plugin response ignored"),
        }
    }
    Ok(ResponseState { status, headers, body: Some(init.body.into()), trailers: None })
}

fn unreachable_state(plugin: &str) {
    tracing::error!(plugin, "internal error: request state missing from the plugin store after a call");
}

fn placeholder_request() -> Box<RequestState> {
    Box::new(RequestState {
        method: http::Method::GET,
        path: "/".into(),
        query: None,
        headers: http::HeaderMap::new(),
        params: Vec::new(),
        route_id: "".into(),
        client_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        client_ip: std::net::IpAddr::from([0, 0, 0, 0]),
        scheme: "http",
        request_id: "".into(),
        request_id_header: None,
        body: None,
        context: Default::default(),
        response_edits: Default::default(),
        header_limits: crate::exchange::HeaderLimits::NONE,
        body_limit: u64::MAX,
        host_from_plugin: false,
        client_body: false,
        header_tally: Default::default(),
        past_limits: false,
        removed_headers: Default::default(),
    })
}

fn placeholder_response() -> Box<ResponseState> {
    Box::new(ResponseState { status: http::StatusCode::INTERNAL_SERVER_ERROR, headers: http::HeaderMap::new(), body: None, trailers: None })
}

#[cfg(test)]
mod tests {
    use super::{IDLE_STACKS, IdleStacks};

    #[test]
    fn a_worker_takes_back_the_instance_it_released_last() {
        let idle = IdleStacks::new(8);
        for (worker, instance) in [(0, "a"), (1, "b"), (0, "c"), (1, "d")] {
            idle.push(worker, instance);
        }
        assert_eq!(idle.len(), 4);
        assert_eq!(idle.pop(0), Some("c"));
        assert_eq!(idle.pop(1), Some("d"));
        assert_eq!(idle.pop(0), Some("a"));
        // Worker 0 has none left: it takes worker 1's rather than make a new instance.
        assert_eq!(idle.pop(0), Some("b"));
        assert_eq!((idle.pop(0), idle.pop(1), idle.len()), (None, None, 0));
        // Workers past the stacks share them; a stack found from the far end is found too.
        idle.push(IDLE_STACKS + 3, "e");
        assert_eq!(idle.pop(3), Some("e"));
        idle.push(IDLE_STACKS - 1, "f");
        assert_eq!(idle.pop(0), Some("f"));
    }

    #[test]
    fn the_pool_keeps_at_most_its_capacity_idle_or_lent_out() {
        let idle: IdleStacks<u32> = IdleStacks::new(2);
        let first = idle.admit().expect("room for two");
        let second = idle.admit().expect("room for two");
        assert!(idle.admit().is_none(), "full: a third instance is not kept");
        // Lent out or idle, a kept instance holds its place until it is dropped.
        idle.push(0, 1);
        assert_eq!(idle.pop(1), Some(1));
        assert!(idle.admit().is_none());
        drop(first);
        let third = idle.admit().expect("a dropped instance gave its place back");
        assert!(idle.admit().is_none());
        drop((second, third));
        assert!(idle.admit().is_some());
    }
}
