//! Per-request cost of usage analytics: `Analytics::record` (per-thread shard buffers, folded
//! into the shared aggregate every 256 samples) against `record_direct` (every sample applied
//! under the one shared lock: the design it replaces), on one thread and on two threads at once.
//! Each sample has a route, one of 50 consumers and a latency, like a request with an auth plugin.
//! Run: `cargo bench -p airlock --bench analytics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::config::{AnalyticsConfig, ConfigSource};
use airlock::telemetry::analytics::{Analytics, AnalyticsSettings, Sample};
use criterion::{Criterion, criterion_group, criterion_main};

fn analytics() -> Arc<Analytics> {
    let source = ConfigSource::inline("bench.toml", "", ".".into());
    let mut issues = Vec::new();
    let settings = AnalyticsSettings::from_config(&source, &AnalyticsConfig::default(), &mut issues);
    assert!(issues.is_empty());
    Arc::new(Analytics::new(settings, Default::default()))
}

fn samples() -> Vec<Sample> {
    let routes: Vec<Arc<str>> = ["api", "login", "search", "static"].into_iter().map(Arc::from).collect();
    (0..1024u64)
        .map(|i| Sample {
            at: Instant::now(),
            route: Some(routes[(i % 4) as usize].clone()),
            consumer: Some(format!("consumer-{}", i % 50)),
            client_ip: [10, 0, (i % 7) as u8, 1].into(),
            status: if i % 97 == 0 { 503 } else { 200 },
            latency: Duration::from_micros(200 + (i * 37) % 5000),
            bytes_in: 100,
            bytes_out: 2000,
        })
        .collect()
}

/// Times `iters` records spread over `threads` threads; returns the time per record.
fn run(threads: usize, iters: u64, direct: bool) -> Duration {
    let a = analytics();
    let samples = Arc::new(samples());
    let per_thread = iters.div_ceil(threads as u64);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (a, samples) = (a.clone(), samples.clone());
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let sample = samples[(i % 1024) as usize].clone();
                    if direct { a.record_direct(sample) } else { a.record(sample) }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("bench thread");
    }
    // Wall time for all `iters` records: with two threads, what two cores recording at once achieve.
    started.elapsed()
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("analytics_record");
    for (name, threads, direct) in [
        ("sharded_1_thread", 1, false),
        ("global_lock_1_thread", 1, true),
        ("sharded_2_threads", 2, false),
        ("global_lock_2_threads", 2, true),
    ] {
        group.bench_function(name, |b| b.iter_custom(|iters| run(threads, iters, direct)));
    }
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
