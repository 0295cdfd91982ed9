//! The `state` capability's operations on each backend (issue 8's micro-benchmark): a counter
//! increment and a fixed-window rate-limit decision, in memory and on a real Redis (started by
//! this bench on a free loopback port; `redis-server` must be installed, as `tests/run.sh` does).
//! Redis figures include the loopback round trip. Run: `cargo bench -p airlock --bench state`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock::config::{StateBackend, StateConfig};
use airlock::state::StateStore;
use criterion::{Criterion, criterion_group, criterion_main};

/// A throwaway `redis-server`, stopped when dropped.
struct Redis(Child);

impl Redis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn store(backend: StateBackend, redis_url: Option<String>) -> StateStore {
    let redis_url = redis_url.map(|url| toml::Spanned::new(0..0, url));
    let mut config = StateConfig::default();
    (config.backend, config.redis_url) = (backend, redis_url);
    StateStore::from_config(&config).expect("state store")
}

fn operations(c: &mut Criterion, rt: &tokio::runtime::Runtime, label: &str, store: &StateStore) {
    // Check the operations do what is measured.
    rt.block_on(async {
        assert_eq!(store.incr("bench:check", 2, 60_000).await.expect("incr"), 2);
        assert!(store.window("bench:check-window", 1_000_000_000, 60_000, 1).await.expect("window").allowed);
    });
    c.bench_function(&format!("state/{label}/incr"), |b| {
        b.to_async(rt).iter(|| async { store.incr("bench:counter", 1, 60_000).await.expect("incr") })
    });
    c.bench_function(&format!("state/{label}/window_decision"), |b| {
        b.to_async(rt).iter(|| async { store.window("bench:window", 1_000_000_000, 60_000, 1).await.expect("window") })
    });
}

fn state(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    operations(c, &rt, "memory", &store(StateBackend::Memory, None));

    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
    let Some(_redis) = Redis::start(port) else {
        eprintln!("redis-server not found or not starting: the Redis cases are skipped");
        return;
    };
    let redis = rt.block_on(async { store(StateBackend::Redis, Some(format!("redis://127.0.0.1:{port}"))) });
    operations(c, &rt, "redis", &redis);
}

criterion_group!(benches, state);
criterion_main!(benches);
