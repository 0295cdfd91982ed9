//! The once-only part of the sandbox: the wasmtime engine (pooling allocator, epoch interruption),
//! the linker holding exactly the granted host interfaces, the instance budget, and the epoch
//! ticker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::budget::{InstanceBudget, LOAD_RESERVE};
use super::host::{HostState, Plugin, wasi};
use crate::config::RuntimeConfig;

/// How often the epoch advances. Deadlines are checked at this granularity, and a plugin running
/// long yields to the async runtime this often, so other requests on its thread keep moving.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

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
    ticker: Arc<EpochTicker>,
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
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        wasi::add_baseline_to_linker(&mut linker)?;
        wasi::add_files_to_linker(&mut linker)?;

        let ticker = EpochTicker::start(engine.clone());
        let budget = Arc::new(InstanceBudget::new(serving as usize));
        Ok(Self { engine, linker: Arc::new(linker), budget, ticker })
    }

    /// Stops the epoch ticker (also done when the last clone is dropped).
    pub fn stop(&self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
    }
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`] until stopped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Arc<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new().name("airlock-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the epoch ticker thread, plugin deadlines are not enforced: {e}");
        }
        Arc::new(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
