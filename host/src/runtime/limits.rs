//! Resource caps: one instance's linear memory and table growth, and the linear memory of
//! every instance together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The linear memory all plugin instances hold together, and the most they may
/// (`runtime.plugin_memory_mb`): each instance's cap bounds one plugin call, but `max_instances`
/// of them at their caps (512 x 64 MiB by default) could take far more than the machine has, and
/// one plugin may hold three quarters of the places. Growth past it is refused as past an
/// instance's own cap: that call fails (out of memory, named), the gateway goes on.
#[derive(Debug)]
pub struct PluginMemoryBudget {
    used: AtomicUsize,
    cap: usize,
}

impl PluginMemoryBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self { used: AtomicUsize::new(0), cap }
    }

    /// The budget in bytes.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Bytes held by every instance now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` more, if they fit.
    fn take(&self, bytes: usize) -> bool {
        self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| used.checked_add(bytes).filter(|&n| n <= self.cap)).is_ok()
    }

    /// Gives `bytes` back.
    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

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
    /// The gateway-wide budget this instance's memory is counted in, if any.
    pub shared: Option<Arc<PluginMemoryBudget>>,
    /// Bytes this instance holds of `shared`, given back when it is dropped.
    held: usize,
    /// Set when a growth was refused because `shared` was used up (not the instance's cap).
    pub budget_hit: bool,
}

/// Most elements of one Wasm table: generous for indirect-call tables of real plugins.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryLimiter {
    /// A limiter allowing `memory_bytes` of linear memory. (The resource table has its own cap,
    /// set on the table: `host::MAX_TABLE_ENTRIES`.)
    pub fn new(memory_bytes: usize) -> Self {
        Self { memory_bytes, table_elements: MAX_TABLE_ELEMENTS, oom_hit: false, shared: None, held: 0, budget_hit: false }
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.give_back(self.held);
        }
    }
}

/// The error a growth refused by the gateway-wide budget traps with.
#[derive(Debug, thiserror::Error)]
#[error("the plugins' memory budget of {cap} bytes (runtime.plugin_memory_mb) is used up")]
pub struct MemoryBudgetExhausted {
    /// The budget.
    pub cap: usize,
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
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.oom_hit = true;
            return Err(MemoryCapExceeded { cap: self.memory_bytes, desired }.into());
        }
        if let Some(shared) = &self.shared {
            let more = desired.saturating_sub(current);
            if !shared.take(more) {
                self.oom_hit = true;
                self.budget_hit = true;
                return Err(MemoryBudgetExhausted { cap: shared.cap() }.into());
            }
            self.held += more;
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter as _;

    use super::*;

    /// Instances' growth is counted together, refused past the budget (the instance's own cap
    /// aside), and what an instance held is given back when it goes.
    #[test]
    fn the_budget_counts_every_instance_and_gets_back_what_a_dropped_one_held() {
        let budget = Arc::new(PluginMemoryBudget::new(100));
        let limiter = |shared: &Arc<PluginMemoryBudget>| MemoryLimiter { shared: Some(shared.clone()), ..MemoryLimiter::new(80) };
        let (mut a, mut b) = (limiter(&budget), limiter(&budget));
        assert!(a.memory_growing(0, 60, None).unwrap_or(false));
        assert!(b.memory_growing(0, 30, None).unwrap_or(false));
        assert_eq!(budget.used(), 90);
        assert!(b.memory_growing(30, 50, None).is_err(), "past the budget, within the instance's cap");
        assert!(b.budget_hit && b.oom_hit);
        assert_eq!(budget.used(), 90, "a refused growth takes nothing");
        drop(a);
        assert_eq!(budget.used(), 30);
        assert!(b.memory_growing(30, 80, None).unwrap_or(false), "room again");
        assert!(b.memory_growing(80, 81, None).is_err(), "the instance's own cap still holds");
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
