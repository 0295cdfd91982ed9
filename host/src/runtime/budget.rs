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
//! No one plugin may hold more than its [`PluginShare`] (three quarters of the places), however
//! many chain entries run it: a plugin whose calls wait long on the host (an outbound call to a
//! slow origin) under load would otherwise take every place and leave every other plugin
//! answering 503, and a share per entry let the same plugin on two routes take them all. A
//! plugin at its share waits for one of its own instances instead.
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

/// The part of the places one plugin may hold: numerator and denominator (3/4).
const SHARE: (usize, usize) = (3, 4);

/// A serving instance's claim on the budget (a place, and one of its plugin's share), given back
/// when the instance is dropped (it must be dropped after the instance's store, which frees the
/// slot).
#[derive(Debug)]
pub struct InstancePermit {
    _place: OwnedSemaphorePermit,
    _share: OwnedSemaphorePermit,
}

/// One plugin's share of the places, held by every chain entry that runs it (a
/// [`super::plugin::LoadedPlugin`] keeps it): at most [`SHARE`] of them, however busy it is.
#[derive(Debug)]
pub struct PluginShare {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
}

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

    /// Calls so far that found the sandbox full, or their entry at its share, and waited (metrics).
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

    /// The share of a newly loaded plugin: three quarters of the places (at least one).
    pub fn plugin_share(&self) -> PluginShare {
        let size = (self.limit * SHARE.0).div_ceil(SHARE.1).max(1);
        PluginShare { permits: Arc::new(Semaphore::new(size)), waiting: AtomicUsize::new(0) }
    }

    /// Whether calls are waiting for a place, anywhere or in `share`'s entry: a finished
    /// instance of that entry should then be dropped, not kept idle.
    pub fn has_waiters(&self, share: &PluginShare) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0 || share.waiting.load(Ordering::Relaxed) > 0
    }

    /// Lets the budget reclaim `pool`'s idle instances. Held weakly: a dropped pool leaves.
    pub fn register(&self, pool: Weak<dyn IdleInstances>) {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.queues.retain(|q| q.strong_count() > 0);
        pools.queues.push(pool);
    }

    /// A permit for an instance of `share`'s entry at once if a place is free and the entry is
    /// within its share (no reclaiming, no waiting).
    pub fn try_acquire(&self, share: &PluginShare) -> Option<InstancePermit> {
        let share = share.permits.clone().try_acquire_owned().ok()?;
        let place = self.permits.clone().try_acquire_owned().ok()?;
        Some(InstancePermit { _place: place, _share: share })
    }

    /// A permit for a new instance of `share`'s entry, within `wait`: first a place in the
    /// entry's share (waiting for one of its own instances if it holds its whole share), then a
    /// place in the sandbox ([`Self::acquire_place`]). `None` when either did not come in time.
    pub async fn acquire(&self, share: &PluginShare, wait: Duration) -> Option<InstancePermit> {
        let deadline = tokio::time::Instant::now() + wait;
        let in_share = match share.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.wait_for(&share.permits, &share.waiting, deadline).await?,
        };
        let place = self.acquire_place(deadline).await?;
        Some(InstancePermit { _place: place, _share: in_share })
    }

    /// A place in the sandbox: a free one, else one freed by reclaiming idle instances, else the
    /// first one a busy instance gives back before `deadline`.
    async fn acquire_place(&self, deadline: tokio::time::Instant) -> Option<OwnedSemaphorePermit> {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Some(permit);
            }
            // A reclaimed slot goes to the longest waiter first (the semaphore is fair), so keep
            // reclaiming until one is left for this call or nothing idle is left.
            if !self.reclaim_one() {
                break;
            }
        }
        self.wait_for(&self.permits, &self.waiting, deadline).await
    }

    /// Waits in line on `permits` until `deadline`, counted in `waiting` while it waits (however
    /// the wait ends) and in the waits metric.
    async fn wait_for(&self, permits: &Arc<Semaphore>, waiting: &AtomicUsize, deadline: tokio::time::Instant) -> Option<OwnedSemaphorePermit> {
        self.waits.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting::enter(waiting);
        match tokio::time::timeout_at(deadline, permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            // The semaphores are never closed; a timeout is the only other way out.
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
        let (mine, theirs) = (budget.plugin_share(), budget.plugin_share());
        let idle = Arc::new(Idle(Mutex::new(vec![budget.try_acquire(&theirs).unwrap(), budget.try_acquire(&theirs).unwrap()])));
        let weak: Weak<dyn IdleInstances> = Arc::downgrade(&(idle.clone() as Arc<dyn IdleInstances>));
        budget.register(weak);
        assert!(budget.try_acquire(&mine).is_none());
        assert_eq!(budget.in_use(), 2);

        let first = budget.acquire(&mine, Duration::ZERO).await.expect("an idle instance is reclaimed");
        assert_eq!(idle.0.lock().unwrap().len(), 1);
        let second = budget.acquire(&mine, Duration::ZERO).await.expect("and the other");
        assert!(idle.0.lock().unwrap().is_empty());
        assert!(budget.acquire(&mine, Duration::from_millis(20)).await.is_none(), "nothing idle, nothing freed: busy");
        drop((first, second));
        assert_eq!(budget.in_use(), 0);
        assert_eq!((budget.reclaimed(), budget.waits()), (2, 1));
    }

    #[tokio::test]
    async fn a_waiter_gets_the_next_place_given_back_and_is_counted_while_it_waits() {
        let budget = Arc::new(InstanceBudget::new(1));
        let (share, other) = (Arc::new(budget.plugin_share()), budget.plugin_share());
        let busy = budget.try_acquire(&other).unwrap();
        let waiter = tokio::spawn({
            let (budget, share) = (budget.clone(), share.clone());
            async move { budget.acquire(&share, WAIT).await.is_some() }
        });
        while !budget.has_waiters(&other) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(busy);
        assert!(waiter.await.unwrap());
        assert!(!budget.has_waiters(&other));
    }

    #[tokio::test]
    async fn one_entry_holds_at_most_three_quarters_of_the_places() {
        let budget = Arc::new(InstanceBudget::new(4));
        let (greedy, other) = (Arc::new(budget.plugin_share()), budget.plugin_share());
        let held: Vec<_> = (0..3).map(|_| budget.try_acquire(&greedy).expect("within its share")).collect();
        assert!(budget.try_acquire(&greedy).is_none(), "a fourth is past its share");
        assert!(budget.acquire(&greedy, Duration::from_millis(20)).await.is_none());
        assert!(budget.try_acquire(&other).is_some(), "the last place is there for another entry");
        // An entry waiting at its share gets the place one of its own instances gives back.
        let waiter = tokio::spawn({
            let (budget, greedy) = (budget.clone(), greedy.clone());
            async move { budget.acquire(&greedy, WAIT).await.is_some() }
        });
        while !budget.has_waiters(&greedy) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        assert!(waiter.await.unwrap());
        assert_eq!(InstanceBudget::new(1).plugin_share().permits.available_permits(), 1, "a share is never empty");
    }

    #[tokio::test]
    async fn a_dropped_pool_is_skipped_and_forgotten() {
        let budget = InstanceBudget::new(1);
        let share = budget.plugin_share();
        let held = budget.try_acquire(&budget.plugin_share()).unwrap();
        let idle: Arc<dyn IdleInstances> = Arc::new(Idle(Mutex::new(Vec::new())));
        budget.register(Arc::downgrade(&idle));
        drop(idle);
        assert!(budget.acquire(&share, Duration::from_millis(10)).await.is_none());
        budget.register(Arc::downgrade(&(Arc::new(Idle(Mutex::new(Vec::new()))) as Arc<dyn IdleInstances>)));
        assert_eq!(budget.pools.lock().unwrap().queues.len(), 1, "the dead entry was pruned");
        drop(held);
    }
}
