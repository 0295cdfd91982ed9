//! Per-instance resource caps: linear memory and table growth.

/// Caps one instance's memory and tables, and remembers when the cap was hit so the failure can
/// be reported as "out of memory" rather than as a bare trap.
#[derive(Debug)]
pub struct MemoryLimiter {
    /// Most bytes of linear memory (all memories of the instance together are capped each).
    pub memory_bytes: usize,
    /// Most table elements.
    pub table_elements: usize,
    /// Set when a growth was refused in the current call.
    pub oom_hit: bool,
}

/// Most elements of one Wasm table: generous for indirect-call tables of real plugins.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryLimiter {
    /// A limiter allowing `memory_bytes` of linear memory. (The resource table has its own cap,
    /// set on the table: `host::MAX_TABLE_ENTRIES`.)
    pub fn new(memory_bytes: usize) -> Self {
        Self { memory_bytes, table_elements: MAX_TABLE_ELEMENTS, oom_hit: false }
    }
}

/// The error a refused memory growth traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {cap} bytes exceeded (wanted {desired} bytes)")]
pub struct MemoryCapExceeded {
    /// The cap in force.
    pub cap: usize,
    /// The size the plugin asked to grow to.
    pub desired: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.oom_hit = true;
            return Err(MemoryCapExceeded { cap: self.memory_bytes, desired }.into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }
}
