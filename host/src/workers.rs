//! The request workers: `runtime.worker_threads` OS threads (one per core by default), each running its own
//! single-threaded tokio runtime. A worker accepts connections on every listener and serves each
//! one start to finish: the client connection, its plugin calls and the upstream connections it
//! uses all stay on one thread, so a request never waits for a wake-up from another core. The
//! kernel wakes every worker for a new connection and the first to call `accept` gets it, so one
//! worker can take a whole burst; each accepted connection is therefore placed on the worker
//! serving the fewest ([`ConnectionBalancer`], as Envoy's exact connection balance), which is the
//! one that accepted it unless another serves fewer. The balancer also holds the workers to
//! `limits.max_connections` together: at the cap the accept loops wait ([`ConnectionBalancer::room`])
//! until a connection closes.
//!
//! Everything else (admin listener, reload, background exporters) runs on the main runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How often an accept loop waiting at the connection cap looks again even if no connection
/// closed: a reload may have raised the cap.
const RECHECK_ROOM: Duration = Duration::from_secs(1);

thread_local! {
    /// Which worker this thread is (0 outside the workers).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker running the current thread, `0..count`; 0 on any other thread. Per-worker
/// resources (the upstream connection pools) are indexed by it.
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// Running worker threads. Dropping it stops them: tasks still on them are dropped, so the
/// server drops it only after draining.
pub struct Workers {
    balancer: ConnectionBalancer,
    _stop: watch::Sender<()>,
}

impl Workers {
    /// Starts `count` (at least one) worker threads, each with its own runtime.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let (stop, stopped) = watch::channel(());
        let mut handles = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            std::thread::Builder::new().name(format!("airlock-w{index}")).spawn(move || {
                INDEX.with(|i| i.set(index));
                // Runs spawned tasks until the owner is dropped; then dropping the runtime
                // drops what is left on it.
                runtime.block_on(async move { while stopped.changed().await.is_ok() {} });
            })?;
        }
        let connections = handles.iter().map(|_| AtomicUsize::new(0)).collect();
        let shared = Shared {
            handles: handles.into(),
            connections,
            open: AtomicUsize::new(0),
            limit: AtomicUsize::new(usize::MAX),
            room: Notify::new(),
        };
        let balancer = ConnectionBalancer { shared: Arc::new(shared) };
        Ok(Self { balancer, _stop: stop })
    }

    /// How many workers run.
    pub fn count(&self) -> usize {
        self.balancer.count()
    }

    /// Runs `task` on worker `index`.
    pub fn spawn<F>(&self, index: usize, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.balancer.spawn(index, task)
    }

    /// Where the accept loops place connections (it does not keep the workers running).
    pub fn balancer(&self) -> &ConnectionBalancer {
        &self.balancer
    }
}

/// Places each accepted connection on the worker serving the fewest client connections, so a
/// burst of connections accepted by one worker is still served by all of them. Cloned into
/// every accept loop; also read by `/metrics` (`airlock_worker_connections`).
#[derive(Clone)]
pub struct ConnectionBalancer {
    shared: Arc<Shared>,
}

struct Shared {
    handles: Box<[Handle]>,
    /// Client connections placed on each worker and not yet closed.
    connections: Box<[AtomicUsize]>,
    /// Client connections placed on any worker and not yet closed: the sum of `connections`,
    /// kept at or below `limit`.
    open: AtomicUsize,
    /// Most client connections placed at once (`limits.max_connections`).
    limit: AtomicUsize,
    /// Wakes accept loops waiting at the cap when a connection closes (only then: a closing
    /// connection below the cap touches no lock).
    room: Notify,
}

impl Shared {
    fn full(&self) -> bool {
        self.open.load(Ordering::SeqCst) >= self.limit.load(Ordering::Relaxed)
    }

    /// Waits until a connection closes below the cap (or [`RECHECK_ROOM`] passes); returns at
    /// once if there is room already.
    async fn wait_for_room(&self) {
        let notified = self.room.notified();
        tokio::pin!(notified);
        // Registered before looking, so a close between the look and the wait still wakes it.
        notified.as_mut().enable();
        if self.full() {
            let _ = tokio::time::timeout(RECHECK_ROOM, notified).await;
        }
    }
}

impl ConnectionBalancer {
    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.shared.handles.len()
    }

    /// Sets the most client connections served at once (`limits.max_connections`, at least 1);
    /// connections already open over a lowered cap are kept. Cheap when unchanged.
    pub fn set_limit(&self, limit: usize) {
        let limit = limit.max(1);
        let before = self.shared.limit.swap(limit, Ordering::Relaxed);
        if limit > before {
            self.shared.room.notify_waiters();
        }
    }

    /// The cap set last ([`Self::set_limit`]).
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::Relaxed)
    }

    /// Client connections open now over all workers.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Whether the cap is reached: as many connections open as it allows, or more.
    pub fn full(&self) -> bool {
        self.shared.full()
    }

    /// While the cap is reached, waits until a connection closes or the cap is raised, or at
    /// most a second (the caller then looks again, at a cap a reload may have changed); at once
    /// if there is room. Reserves nothing: the accept loops call it before `accept`, so that at
    /// the cap further connections wait in the listen backlog, and [`Self::place`] takes the place.
    pub async fn room(&self) {
        self.shared.wait_for_room().await;
    }

    /// Takes a place under the cap for a connection accepted on worker `here` (waiting for one
    /// if another accept loop took the last since [`Self::room`]), and picks the worker to serve
    /// it: the one serving the fewest connections, `here` itself unless another serves strictly
    /// fewer (so a balanced gateway never moves a connection). The connection counts there, and
    /// against the cap, until the placement is dropped.
    pub async fn place(&self, here: usize) -> Placement {
        let open = &self.shared.open;
        loop {
            let limit = self.shared.limit.load(Ordering::Relaxed);
            let taken = open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1));
            if taken.is_ok() {
                break;
            }
            self.shared.wait_for_room().await;
        }
        let counts = &self.shared.connections;
        let here = here % counts.len();
        let mut worker = here;
        let mut fewest = counts[here].load(Ordering::Relaxed);
        for (i, count) in counts.iter().enumerate() {
            let n = count.load(Ordering::Relaxed);
            if n < fewest {
                (worker, fewest) = (i, n);
            }
        }
        counts[worker].fetch_add(1, Ordering::Relaxed);
        Placement { shared: self.shared.clone(), worker }
    }

    /// Runs `task` on worker `index`.
    pub fn spawn<F>(&self, index: usize, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.handles[index % self.shared.handles.len()].spawn(task)
    }

    /// Client connections each worker serves now, by worker index.
    pub fn connections(&self) -> Vec<usize> {
        self.shared.connections.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// A client connection counted on the worker [`ConnectionBalancer::place`] chose, until dropped
/// (held by the connection's task).
pub struct Placement {
    shared: Arc<Shared>,
    worker: usize,
}

impl Placement {
    /// The worker that serves the connection.
    pub fn worker(&self) -> usize {
        self.worker
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.shared.connections[self.worker].fetch_sub(1, Ordering::Relaxed);
        let before = self.shared.open.fetch_sub(1, Ordering::SeqCst);
        // At (or over) the cap an accept loop may be waiting for this place.
        if before >= self.shared.limit.load(Ordering::Relaxed) {
            self.shared.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_worker_knows_its_index_and_stops_when_dropped() {
        let workers = Workers::start(3).unwrap();
        assert_eq!(workers.count(), 3);
        for i in 0..3 {
            assert_eq!(workers.spawn(i, async { current() }).await.unwrap(), i);
        }
        assert_eq!(current(), 0, "not a worker");
        // A task left on a worker is dropped with it.
        let pending = workers.spawn(1, std::future::pending::<()>());
        drop(workers);
        assert!(pending.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn connections_go_to_the_worker_serving_fewest_and_stay_where_accepted_when_balanced() {
        let workers = Workers::start(3).unwrap();
        let balancer = workers.balancer().clone();
        // A burst accepted by worker 1 alone is spread over all three, worker 1 first on ties.
        let mut burst = Vec::new();
        for _ in 0..6 {
            burst.push(balancer.place(1).await);
        }
        assert_eq!(burst.iter().map(Placement::worker).collect::<Vec<_>>(), [1, 0, 2, 1, 0, 2]);
        assert_eq!(balancer.connections(), [2, 2, 2]);
        // Balanced: the accepting worker keeps the connection.
        let kept = balancer.place(2).await;
        assert_eq!(kept.worker(), 2);
        // A closed connection frees its place, which the next connection takes.
        drop(kept);
        let closed = burst.remove(1);
        assert_eq!(closed.worker(), 0);
        drop(closed);
        assert_eq!(balancer.connections(), [1, 2, 2]);
        assert_eq!(balancer.place(2).await.worker(), 0);
        assert_eq!(balancer.connections(), [1, 2, 2], "the last placement was dropped at once");
    }

    #[tokio::test]
    async fn at_the_cap_the_next_place_waits_until_a_connection_closes() {
        let workers = Workers::start(2).unwrap();
        let balancer = workers.balancer().clone();
        balancer.set_limit(2);
        assert!(!balancer.full());
        balancer.room().await;
        let first = balancer.place(0).await;
        let _second = balancer.place(0).await;
        assert_eq!((balancer.open(), balancer.limit()), (2, 2));
        assert!(balancer.full());
        // Full: neither waiting for room nor taking a place finishes...
        let waiting = tokio::spawn({
            let balancer = balancer.clone();
            async move {
                balancer.room().await;
                balancer.place(1).await.worker()
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a place was given over the cap");
        // ...until a connection closes: the waiter is woken at once, not at the next recheck.
        drop(first);
        let worker = tokio::time::timeout(Duration::from_millis(500), waiting).await.expect("woken by the close").unwrap();
        assert_eq!(worker, 0, "the freed worker serves it");
        assert_eq!(balancer.open(), 1, "the waiter's placement was dropped with its task");
        // A raised cap lets waiters through too.
        let _third = balancer.place(0).await;
        let raised = tokio::spawn({
            let balancer = balancer.clone();
            async move { balancer.room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!raised.is_finished());
        balancer.set_limit(3);
        tokio::time::timeout(Duration::from_millis(500), raised).await.expect("woken by the raise").unwrap();
    }
}
