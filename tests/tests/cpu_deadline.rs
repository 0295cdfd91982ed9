//! The CPU deadline counts a call's own running time. A CPU-heavy but well-behaved plugin on a
//! busy worker shares the thread with the other requests (each call yields every epoch tick),
//! so its calls take many times their running time in wall time: they must not fail for it.
//! A call that really runs past its deadline is still stopped.
//!
//! Its own test binary: it loads one worker thread on purpose, and other test files measure the
//! process's memory.

use std::time::{Duration, Instant};

use airlock_tests::spin::{iterations_for, spin};
use airlock_tests::{Gateway, GatewayProcess, HttpClient, Upstream, metric_value};

/// One worker thread, a plugin that burns what the request asks, the default 100 ms deadline.
const SPIN: &str = r#"
[runtime]
worker_threads = 1

[upstreams.backend]
targets = ["{upstream}"]

[plugins.spin]
source = "{plugin:spin}"

[[routes]]
path = "/spin"
upstream = "backend"
[[routes.plugins]]
plugin = "spin"
"#;

/// Held by each test for its whole run: both measure a plugin's running time, which the other's
/// load on this machine's two cores would inflate (the stall test failed its deadline once in
/// CI while the burst ran beside it).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Requests at once in the burst: with calls of ~20 ms each, ~1 s of work on one thread.
const BURST: usize = 48;

/// The running time of one call of the burst.
const TWENTY_MS: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_turns_on_a_busy_worker_do_not_count_against_its_cpu_deadline() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(SPIN, Some(&upstream)).await;
    let client = HttpClient::http1();
    let iterations = iterations_for(&client, &gw.url("/spin"), TWENTY_MS).await;

    // The burst shares the one worker: every call is interleaved with the others tick by tick,
    // so each takes many times its ~20 ms in wall time, well past 100 ms.
    let calls: Vec<_> = (0..BURST)
        .map(|_| {
            let url = gw.url("/spin");
            tokio::spawn(async move {
                let client = HttpClient::http1();
                let started = Instant::now();
                let r = client.request("GET", &url, &[("x-spin", &iterations.to_string())], b"").await;
                (r.status.as_u16(), r.text(), started.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (status, body, took) = call.await.expect("request task");
        assert_eq!(status, 200, "a call well within its CPU deadline failed on a busy worker: {body}");
        slowest = slowest.max(took);
    }
    assert!(slowest > Duration::from_millis(150), "the calls did not share the worker (slowest {slowest:?}): the test proves nothing");
    let deadline_failures = || metric_value(&gw, "airlock_plugin_failures_total", &[("plugin", "spin"), ("kind", "deadline")]);
    assert_eq!(deadline_failures().await, 0.0);

    // The plugin's own work is still bounded: far more than 100 ms of it is stopped at the deadline.
    let (status, body, took) = spin(&client, &gw.url("/spin"), iterations * 50).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("plugin_failed"), "{body}");
    assert!(took < Duration::from_secs(1), "stopped after {took:?}");
    assert_eq!(deadline_failures().await, 1.0);

    // And the worker serves on.
    let (status, body, _) = spin(&client, &gw.url("/spin"), 0).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}

/// The thread running a call can stop without the plugin doing anything: descheduled, blocked
/// in the kernel on a page fault, its VM paused. Such a stall is not the plugin running and
/// must not spend its CPU deadline. Here the whole gateway process is stopped (SIGSTOP) for
/// 900 ms, three times the deadline (300 ms here: a call's short preemptions on this loaded
/// two-core machine still count as running, and must not fail the ~120 ms call on their own), in
/// the middle of a ~120 ms call: the call completes. The call is long enough that the stop (a
/// `kill` process started on a busy machine) lands inside it. The real binary, so that stopping
/// it does not stop the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_of_the_thread_mid_call_does_not_count_against_the_cpu_deadline() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let upstream = Upstream::start().await;
    let config = SPIN.replace("[plugins.spin]\n", "[plugins.spin]\ncpu_ms = 300\n");
    assert_ne!(config, SPIN);
    let mut airlock = GatewayProcess::start(&config, &upstream, &[]).await;
    let url = airlock.url("/spin");
    let client = HttpClient::http1();
    let iterations = iterations_for(&client, &url, TWENTY_MS).await * 6;

    let call = {
        let url = url.clone();
        tokio::spawn(async move { spin(&HttpClient::http1(), &url, iterations).await })
    };
    // Well inside the call (it starts within a few ms of the request being sent).
    tokio::time::sleep(Duration::from_millis(15)).await;
    airlock.signal("STOP");
    tokio::time::sleep(Duration::from_millis(900)).await;
    airlock.signal("CONT");
    let (status, body, took) = call.await.expect("request task");
    assert!(took > Duration::from_millis(900), "the stall was not inside the request ({took:?}): the test proves nothing");
    assert_eq!(status, 200, "a ~120 ms call failed after a 900 ms stall of its thread: {body}");

    // The deadline still stops a call that runs past it (~1.2 s of work).
    let (status, body, _) = spin(&client, &url, iterations * 10).await;
    assert_eq!(status, 500, "{body}");

    airlock.signal("TERM");
    assert!(airlock.exit_within(Duration::from_secs(15)).await.success());
}

/// The epoch ticker sleeps while no plugin runs (an idle gateway would otherwise wake 1,000
/// times a second): a call that starts after a quiet spell must get it ticking again (the call
/// wakes it, and its deadline callback keeps it awake), or a runaway call would be checked only
/// at the sleeping ticker's 100 ms safety tick, each such stretch counted as 5 ms of running,
/// and would run its whole second of work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_call_after_a_quiet_spell_is_still_stopped_at_its_deadline() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(SPIN, Some(&upstream)).await;
    let client = HttpClient::http1();
    let iterations = iterations_for(&client, &gw.url("/spin"), TWENTY_MS).await;

    // Well past the ticker's 100 idle ticks: it is asleep when the next call starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body, took) = spin(&client, &gw.url("/spin"), iterations * 50).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("plugin_failed"), "{body}");
    // ~1 s of work, stopped at the 100 ms deadline.
    assert!(took < Duration::from_millis(700), "stopped after {took:?}");
    gw.stop().await;
}
