//! The request workers: `runtime.worker_threads` OS threads (one per core by default), each running its own
//! single-threaded tokio runtime. A worker accepts connections on every listener and serves each
//! one start to finish: the client connection, its plugin calls and the upstream connections it
//! uses all stay on one thread, so a request never waits for a wake-up from another core. The
//! kernel hands a new connection to whichever worker is free to accept it first.
//!
//! Everything else (admin listener, reload, background exporters) runs on the main runtime.

use std::cell::Cell;
use std::future::Future;

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
    handles: Vec<Handle>,
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
        Ok(Self { handles, _stop: stop })
    }

    /// How many workers run.
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `task` on worker `index`.
    pub fn spawn<F>(&self, index: usize, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[index % self.handles.len()].spawn(task)
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
}
