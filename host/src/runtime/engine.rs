//! The once-only part of the sandbox: the wasmtime engine (pooling allocator, epoch interruption),
//! the linker holding exactly the granted host interfaces, the instance budget, and the epoch
//! ticker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::budget::{InstanceBudget, LOAD_RESERVE};
use super::limits::PluginMemoryBudget;
use super::host::{HostState, Plugin, wasi};
use crate::config::RuntimeConfig;

/// How often the epoch advances while a call runs long (one was caught running at the last
/// tick): its deadline is checked this often, and it yields to the async runtime this often, so
/// other requests on its thread keep moving.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How often the epoch advances while calls start but none is caught running at a tick (calls
/// of microseconds, the usual case under load): the longest a call runs before its first
/// deadline check. Each tick wakes the ticker thread on cores the workers keep busy: at
/// [`EPOCH_TICK`] throughout, 0.025 wake-ups and 0.50 us of the ticker's CPU per request at
/// ~35k req/s through one `headers` plugin; at this tick, 0.007 and 0.05-0.15 us
/// (`bench/README.md`, eighteenth session).
pub const QUIET_TICK: Duration = EPOCH_TICK.saturating_mul(4);

/// Largest memory cap any plugin can be given, in bytes: sizes each pooled memory slot.
pub const MAX_PLUGIN_MEMORY: usize = 1024 * 1024 * 1024;

/// Wasm stack per call: deep enough for real plugins, small enough that runaway recursion traps fast.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Host stack of one async call's fiber; must exceed the Wasm stack plus host frames.
const ASYNC_STACK: usize = 2 * 1024 * 1024;

/// Linear memory kept resident in a pooled slot between instances (DESIGN.md section 3: makes
/// fresh instantiation scale on two threads). With `PAGEMAP_SCAN` (Linux 6.7+, see `new`) only the
/// pages the instance dirtied are reset and kept, up to this much; without it the first this-many
/// bytes of the memory are reset whether touched or not, and so all stay resident.
const KEEP_RESIDENT_MEMORY: usize = 2 * 1024 * 1024;

/// Table memory kept resident in a pooled slot between instances.
const KEEP_RESIDENT_TABLE: usize = 64 * 1024;

/// Core instances, memories and tables one plugin component may hold (a Rust wasip2 component
/// has one main module plus a few adapter shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 8;

/// The shared sandbox: one per gateway process.
#[derive(Clone)]
pub struct SandboxEngine {
    /// The wasmtime engine.
    pub engine: Engine,
    /// Every host interface Airlock implements. What a given plugin may import is decided at load
    /// by `runtime::capabilities`, against its grants.
    pub linker: Arc<Linker<HostState>>,
    /// How many instances may serve requests at once (`runtime.max_instances`), shared by every
    /// pool of every config this sandbox serves.
    pub budget: Arc<InstanceBudget>,
    /// The linear memory every instance may hold together (`runtime.plugin_memory_mb`).
    pub memory: Arc<PluginMemoryBudget>,
    ticker: Arc<EpochTicker>,
}

/// The pooling allocator, whose preallocated slots and memory resets the isolation and
/// footprint figures rest on; on-demand only in a build for callgrind (`on-demand-instances`).
fn allocation_strategy(pool: PoolingAllocationConfig) -> InstanceAllocationStrategy {
    if cfg!(feature = "on-demand-instances") { InstanceAllocationStrategy::OnDemand } else { InstanceAllocationStrategy::Pooling(pool) }
}

impl SandboxEngine {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(config: &RuntimeConfig) -> wasmtime::Result<Self> {
        // The serving budget, plus a few slots for the instances a config load makes.
        let serving = config.max_instances.max(1);
        let slots = serving.saturating_add(LOAD_RESERVE);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 4)
            .total_memories(slots * MEMORIES_PER_COMPONENT)
            .total_tables(slots * 4)
            .total_stacks(slots)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_memory_size(MAX_PLUGIN_MEMORY)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            // Reset a freed slot by the pages its instance actually dirtied (a few dozen for a
            // typical plugin) instead of the whole kept-resident prefix (~1 MiB): cheaper
            // recycling and strict isolation, and a freed slot keeps only what was touched.
            // Falls back to the prefix reset on kernels without the ioctl.
            .pagemap_scan(Enabled::Auto);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .max_wasm_stack(MAX_WASM_STACK)
            .async_stack_size(ASYNC_STACK)
            .memory_init_cow(true)
            .allocation_strategy(allocation_strategy(pool));
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        wasi::add_baseline_to_linker(&mut linker)?;
        wasi::add_files_to_linker(&mut linker)?;

        let ticker = EpochTicker::start(engine.clone());
        let budget = Arc::new(InstanceBudget::new(serving as usize));
        let memory = Arc::new(PluginMemoryBudget::new(config.plugin_memory_bytes(crate::server::machine_memory_mib())));
        Ok(Self { engine, linker: Arc::new(linker), budget, memory, ticker })
    }

    /// Stops the epoch ticker (also done when the last clone is dropped).
    pub fn stop(&self) {
        self.ticker.stop();
    }

    /// Tells the epoch ticker a plugin call is running: called as each call starts
    /// (`pool::start_call`) and on every epoch deadline while one runs (`pool::arm_store`), so
    /// the ticker runs while plugins do and sleeps after `IDLE_AFTER` ticks without one.
    #[inline]
    pub fn plugin_running(&self) {
        self.ticker.running();
    }

    /// The ticker, for a store's epoch deadline callback to mark its call running.
    pub(crate) fn ticker(&self) -> &Arc<EpochTicker> {
        &self.ticker
    }
}

/// How long the epoch ticker goes on after the last sign of a running plugin call before it
/// sleeps. An idle gateway's ticker otherwise woke 1,000 times a second (2.5% of a core).
const IDLE_AFTER: Duration = Duration::from_millis(100);

/// Longest sleep of an idle ticker. A safety net: every call announces itself, but a call that
/// ever started unannounced would still be interrupted, at this granularity instead of
/// [`EPOCH_TICK`]'s until its first deadline callback wakes the ticker fully.
const IDLE_TICK: Duration = Duration::from_millis(100);

/// A thread that advances the engine's epoch while plugin calls run (every [`QUIET_TICK`], every
/// [`EPOCH_TICK`] while one runs long), and sleeps after [`IDLE_AFTER`] without a call, until
/// stopped.
pub(crate) struct EpochTicker {
    wake: Arc<TickerWake>,
}

/// What the calls and the ticker thread share.
struct TickerWake {
    stop: AtomicBool,
    /// Set by a running call, cleared by the ticker at each tick.
    active: AtomicBool,
    /// True while the ticker sleeps (or is about to): a starting call then wakes it.
    sleeping: AtomicBool,
    /// Set by a call's deadline callback, so by a call that was running at a tick; cleared by
    /// the ticker, which ticks every [`EPOCH_TICK`] while it finds it set.
    caught: AtomicBool,
    /// Epochs advanced: what the tests observe.
    ticks: AtomicU64,
    thread: OnceLock<Thread>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Arc<Self> {
        let wake = Arc::new(TickerWake {
            stop: AtomicBool::new(false),
            active: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            caught: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            thread: OnceLock::new(),
        });
        let shared = wake.clone();
        let spawned = std::thread::Builder::new().name("airlock-epoch".into()).spawn(move || tick(&engine, &shared));
        match spawned {
            Ok(handle) => {
                let _ = wake.thread.set(handle.thread().clone());
            }
            Err(e) => tracing::error!("cannot start the epoch ticker thread, plugin deadlines are not enforced: {e}"),
        }
        Arc::new(Self { wake })
    }

    /// Marks a call running; wakes the ticker if it sleeps. Nearly always one relaxed load.
    #[inline]
    pub(crate) fn running(&self) {
        let wake = &self.wake;
        if !wake.active.load(Ordering::Relaxed) {
            // Paired with the ticker's `sleeping` store then `active` load: one of the two sides
            // sees the other's write, so a call never starts unseen by a ticker going to sleep.
            wake.active.store(true, Ordering::SeqCst);
            if wake.sleeping.load(Ordering::SeqCst)
                && let Some(thread) = wake.thread.get()
            {
                thread.unpark();
            }
        }
    }

    /// Marks a call caught running at a tick (from its deadline callback): the ticker ticks
    /// every [`EPOCH_TICK`] while calls are caught, so a long call is sliced that finely.
    #[inline]
    pub(crate) fn caught_running(&self) {
        self.running();
        if !self.wake.caught.load(Ordering::Relaxed) {
            self.wake.caught.store(true, Ordering::Relaxed);
        }
    }

    fn stop(&self) {
        self.wake.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.wake.thread.get() {
            thread.unpark();
        }
    }
}

/// The ticker thread: an epoch per [`QUIET_TICK`] while calls run, per [`EPOCH_TICK`] while
/// the last tick caught one running; asleep (at most [`IDLE_TICK`] at a time) once none has run
/// for [`IDLE_AFTER`].
///
/// The flag read after a tick was set by the calls the tick before caught, so a long call's
/// first two stretches may each last a quiet tick; every later one lasts an [`EPOCH_TICK`].
fn tick(engine: &Engine, wake: &TickerWake) {
    let mut idle = Duration::ZERO;
    let mut period = QUIET_TICK;
    while !wake.stop.load(Ordering::Relaxed) {
        std::thread::sleep(period);
        engine.increment_epoch();
        wake.ticks.fetch_add(1, Ordering::Relaxed);
        let slept = period;
        period = if wake.caught.swap(false, Ordering::Relaxed) { EPOCH_TICK } else { QUIET_TICK };
        if wake.active.swap(false, Ordering::SeqCst) {
            idle = Duration::ZERO;
            continue;
        }
        idle += slept;
        if idle < IDLE_AFTER {
            continue;
        }
        wake.sleeping.store(true, Ordering::SeqCst);
        if !wake.active.load(Ordering::SeqCst) && !wake.stop.load(Ordering::Relaxed) {
            std::thread::park_timeout(IDLE_TICK);
        }
        wake.sleeping.store(false, Ordering::SeqCst);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Polls `condition` every millisecond for up to five seconds.
    fn eventually(condition: impl Fn() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if condition() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn the_ticker_sleeps_while_no_plugin_runs_and_a_starting_call_wakes_it() {
        let ticker = EpochTicker::start(Engine::default());
        let wake = ticker.wake.clone();
        assert!(eventually(|| wake.sleeping.load(Ordering::SeqCst)), "an idle ticker went on ticking");
        ticker.running();
        assert!(eventually(|| !wake.sleeping.load(Ordering::SeqCst)), "a starting call did not wake the ticker");
        // And, the calls gone, it sleeps again.
        assert!(eventually(|| wake.sleeping.load(Ordering::SeqCst)), "the ticker did not go back to sleep");
        ticker.stop();
    }

    /// Ticks counted while `call` is made in a loop for `window`, and the window's length.
    fn ticks_while(ticker: &EpochTicker, window: Duration, call: impl Fn(&EpochTicker)) -> (u64, Duration) {
        let started = Instant::now();
        let before = ticker.wake.ticks.load(Ordering::Relaxed);
        while started.elapsed() < window {
            call(ticker);
            std::thread::sleep(Duration::from_micros(100));
        }
        (ticker.wake.ticks.load(Ordering::Relaxed) - before, started.elapsed())
    }

    #[test]
    fn the_ticker_ticks_finely_only_while_a_call_is_caught_running() {
        let ticker = EpochTicker::start(Engine::default());
        let window = Duration::from_millis(300);
        let quiet_ticks = |elapsed: Duration| (elapsed.as_micros() / QUIET_TICK.as_micros()) as u64 + 1;
        // Calls starting all the time, none caught running at a tick: a quiet tick at most.
        let (ticks, elapsed) = ticks_while(&ticker, window, EpochTicker::running);
        assert!(ticks <= quiet_ticks(elapsed), "{ticks} ticks in {elapsed:?} with no call caught running");
        // A call caught at every tick (its deadline callback): ticks every EPOCH_TICK, four times
        // as often. Asserted only as more than the quiet rate could give: a machine loaded by
        // the whole suite wakes the thread late (95 ticks in 300 ms seen, for ~300 idle).
        let (ticks, elapsed) = ticks_while(&ticker, window, EpochTicker::caught_running);
        assert!(ticks > quiet_ticks(elapsed), "{ticks} ticks in {elapsed:?} with a call running long");
        ticker.stop();
    }
}
