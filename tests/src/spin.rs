//! Driving the `spin` test plugin, which burns as many loop iterations as the request's `x-spin`
//! header asks: a CPU-heavy but well-behaved plugin whose running time a test chooses.

use std::time::{Duration, Instant};

use crate::HttpClient;

/// Sends one request to a spin route's `url` that burns `iterations`; returns the status, the
/// body and the latency.
pub async fn spin(client: &HttpClient, url: &str, iterations: u64) -> (u16, String, Duration) {
    let started = Instant::now();
    let r = client.request("GET", url, &[("x-spin", &iterations.to_string())], b"").await;
    if r.status == 200 {
        assert_eq!(r.upstream_header("x-spun"), vec![iterations.to_string()], "the plugin ran to the end");
    }
    (r.status.as_u16(), r.text(), started.elapsed())
}

/// Iterations of the spin plugin (at `url`) that run for about `target` alone on the worker
/// (scaled from the median of three timed calls of at least 8 ms).
pub async fn iterations_for(client: &HttpClient, url: &str, target: Duration) -> u64 {
    let (_, _, base) = spin(client, url, 0).await;
    let mut iterations = 1u64 << 20;
    loop {
        let mut took: Vec<Duration> = Vec::new();
        for _ in 0..3 {
            let (status, body, t) = spin(client, url, iterations).await;
            assert_eq!(status, 200, "{iterations} iterations alone: {body}");
            took.push(t.saturating_sub(base));
        }
        took.sort();
        let median = took[1];
        if median >= Duration::from_millis(8) || iterations >= 1 << 34 {
            return (iterations as f64 * target.as_secs_f64() / median.as_secs_f64().max(1e-6)) as u64;
        }
        iterations *= 2;
    }
}
