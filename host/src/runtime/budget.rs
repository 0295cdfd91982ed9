//! The sandbox's instance budget: at most `runtime.max_instances` plugin instances serve requests
//! at once, over every plugin and every config a reload keeps alive.
//!
//! The pooling allocator has a fixed number of instance slots; without a budget, the call that
//! found them all taken failed as if its plugin had trapped (a 500 blaming the plugin), and warm
//! instances idle in one pool could starve every other pool for good. So every instance a pool
//! makes for serving holds an [`InstancePermit`] until it is dropped, and a pool that needs one
//! when none is free:
//!
//! 1. reclaims idle warm instances of any pool (they are a cache: dropping one frees its slot);
//! 2. else waits, in arrival order, for a busy instance to be dropped, up to the call's own
//!    limit; while anyone waits, instances finishing a call are dropped rather than kept idle,
//!    so their slots go to the waiters;
//! 3. else gives up: the call fails as `busy` (503 `plugin_busy`, or skipped if the entry fails
//!    open), naming the plugin and the setting to raise.
//!
//! A few slots beyond the budget ([`LOAD_RESERVE`]) are kept for the instances made while
//! loading a config (describing and configuring each plugin once), so a reload at full load
//! does not fail for want of a slot.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Instance slots kept beyond `runtime.max_instances` for config loading (describe and first
/// configure of each plugin, one or two at a time).
pub const LOAD_RESERVE: u32 = 8;

/// A serving instance's claim on the budget, given back when the instance is dropped (it must be
/// dropped after the instance's store, which frees the slot).
pub type InstancePermit = OwnedSemaphorePermit;

/// Idle instances the budget may reclaim: each warm pool registers its idle queue.
pub trait IdleInstances: Send + Sync {
    /// Drops one idle instance, if there is one; true if one was dropped.
    fn reclaim_one(&self) -> bool;
}

/// The budget of one sandbox (shared by every config it serves).
pub struct InstanceBudget {
    permits: Arc<Semaphore>,
    limit: usize,
    waiting: AtomicUsize,
    pools: Mutex<Pools>,
    waits: AtomicU64,
    reclaimed: AtomicU64,
}

/// The registered idle queues, and where the next reclaim starts (so it spreads over pools).
#[derive(Default)]
struct Pools {
    queues: Vec<Weak<dyn IdleInstances>>,
    next: usize,
}

impl InstanceBudget {
    /// A budget of `limit` serving instances.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            waiting: AtomicUsize::new(0),
            pools: Mutex::default(),
            waits: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
        }
    }

    /// Calls so far that found the sandbox full and waited for a place (metrics).
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Idle warm instances dropped so far to make room for a new one (metrics).
    pub fn reclaimed(&self) -> u64 {
        self.reclaimed.load(Ordering::Relaxed)
    }

    /// Most serving instances alive at once (`runtime.max_instances`).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Serving instances alive now (busy or idle in a pool).
    pub fn in_use(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Whether calls are waiting for a slot: a finished instance should then be dropped, not
    /// kept idle.
    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Lets the budget reclaim `pool`'s idle instances. Held weakly: a dropped pool leaves.
    pub fn register(&self, pool: Weak<dyn IdleInstances>) {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.queues.retain(|q| q.strong_count() > 0);
        pools.queues.push(pool);
    }

    /// A permit at once if one is free (no reclaiming, no waiting).
    pub fn try_acquire(&self) -> Option<InstancePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A permit for a new instance: a free one, else one freed by reclaiming idle instances, else
    /// the first one a busy instance gives back within `wait`. `None` when none came.
    pub async fn acquire(&self, wait: Duration) -> Option<InstancePermit> {
        loop {
            if let Some(permit) = self.try_acquire() {
                return Some(permit);
            }
            // A reclaimed slot goes to the longest waiter first (the semaphore is fair), so keep
            // reclaiming until one is left for this call or nothing idle is left.
            if !self.reclaim_one() {
                break;
            }
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting::enter(&self.waiting);
        match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            // The semaphore is never closed; a timeout is the only other way out.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Drops one idle instance of some pool, taking pools in turn. False if every pool is empty.
    fn reclaim_one(&self) -> bool {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let count = pools.queues.len();
        for step in 0..count {
            let index = (pools.next + step) % count;
            let Some(queue) = pools.queues[index].upgrade() else { continue };
            pools.next = index + 1;
            // The instance is dropped inside `reclaim_one`, under this lock: a store's drop is a
            // few microseconds, and this path runs only when the sandbox is full.
            if queue.reclaim_one() {
                self.reclaimed.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }
}

impl std::fmt::Debug for InstanceBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceBudget").field("limit", &self.limit).field("in_use", &self.in_use()).finish_non_exhaustive()
    }
}

/// One call waiting for a slot, counted while it waits (however the wait ends).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool's idle queue of plain permits standing in for instances.
    struct Idle(Mutex<Vec<InstancePermit>>);

    impl IdleInstances for Idle {
        fn reclaim_one(&self) -> bool {
            self.0.lock().unwrap().pop().is_some()
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn idle_instances_of_other_pools_are_reclaimed_before_waiting() {
        let budget = Arc::new(InstanceBudget::new(2));
        let idle = Arc::new(Idle(Mutex::new(vec![budget.try_acquire().unwrap(), budget.try_acquire().unwrap()])));
        let weak: Weak<dyn IdleInstances> = Arc::downgrade(&(idle.clone() as Arc<dyn IdleInstances>));
        budget.register(weak);
        assert!(budget.try_acquire().is_none());
        assert_eq!(budget.in_use(), 2);

        let first = budget.acquire(Duration::ZERO).await.expect("an idle instance is reclaimed");
        assert_eq!(idle.0.lock().unwrap().len(), 1);
        let second = budget.acquire(Duration::ZERO).await.expect("and the other");
        assert!(idle.0.lock().unwrap().is_empty());
        assert!(budget.acquire(Duration::from_millis(20)).await.is_none(), "nothing idle, nothing freed: busy");
        drop((first, second));
        assert_eq!(budget.in_use(), 0);
        assert_eq!((budget.reclaimed(), budget.waits()), (2, 1));
    }

    #[tokio::test]
    async fn a_waiter_gets_the_next_slot_given_back_and_is_counted_while_it_waits() {
        let budget = Arc::new(InstanceBudget::new(1));
        let busy = budget.try_acquire().unwrap();
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(WAIT).await.is_some() }
        });
        while !budget.has_waiters() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(busy);
        assert!(waiter.await.unwrap());
        assert!(!budget.has_waiters());
    }

    #[tokio::test]
    async fn a_dropped_pool_is_skipped_and_forgotten() {
        let budget = InstanceBudget::new(1);
        let held = budget.try_acquire().unwrap();
        let idle: Arc<dyn IdleInstances> = Arc::new(Idle(Mutex::new(Vec::new())));
        budget.register(Arc::downgrade(&idle));
        drop(idle);
        assert!(budget.acquire(Duration::from_millis(10)).await.is_none());
        budget.register(Arc::downgrade(&(Arc::new(Idle(Mutex::new(Vec::new()))) as Arc<dyn IdleInstances>)));
        assert_eq!(budget.pools.lock().unwrap().queues.len(), 1, "the dead entry was pruned");
        drop(held);
    }
}
