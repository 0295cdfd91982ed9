//! The request workers: `runtime.worker_threads` OS threads (one per core by default), each running its own
//! single-threaded tokio runtime. A worker accepts connections on every listener and serves each
//! one start to finish: the client connection, its plugin calls and the upstream connections it
//! uses all stay on one thread, so a request never waits for a wake-up from another core. The
//! kernel wakes every worker for a new connection and the first to call `accept` gets it, so one
//! worker can take a whole burst; each accepted connection is therefore placed on the worker
//! serving the fewest ([`ConnectionBalancer`], as Envoy's exact connection balance), which is the
//! one that accepted it unless another serves fewer.
//!
//! Everything else (admin listener, reload, background exporters) runs on the main runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
        let balancer = ConnectionBalancer { shared: Arc::new(Shared { handles: handles.into(), connections }) };
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
}

impl ConnectionBalancer {
    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.shared.handles.len()
    }

    /// Picks the worker to serve a connection accepted on worker `here`: the one serving the
    /// fewest connections, `here` itself unless another serves strictly fewer (so a balanced
    /// gateway never moves a connection). The connection counts there until the placement is
    /// dropped.
    pub fn place(&self, here: usize) -> Placement {
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
        let burst: Vec<Placement> = (0..6).map(|_| balancer.place(1)).collect();
        assert_eq!(burst.iter().map(Placement::worker).collect::<Vec<_>>(), [1, 0, 2, 1, 0, 2]);
        assert_eq!(balancer.connections(), [2, 2, 2]);
        // Balanced: the accepting worker keeps the connection.
        let kept = balancer.place(2);
        assert_eq!(kept.worker(), 2);
        // A closed connection frees its place, which the next connection takes.
        drop(kept);
        let mut burst = burst;
        let closed = burst.remove(1);
        assert_eq!(closed.worker(), 0);
        drop(closed);
        assert_eq!(balancer.connections(), [1, 2, 2]);
        assert_eq!(balancer.place(2).worker(), 0);
        assert_eq!(balancer.connections(), [1, 2, 2], "the last placement was dropped at once");
    }
}
