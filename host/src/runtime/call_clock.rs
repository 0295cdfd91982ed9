//! The clock of one phase call: how long the plugin has been *running*, for its CPU deadline,
//! and how long it has held the request, for its wall-clock limit.
//!
//! A call into a guest is a future. It is suspended in two ways: on a host wait (a Redis reply,
//! an outbound HTTP call), and every epoch tick, when the deadline callback yields so that one
//! long call cannot starve the other requests on its worker thread. Neither is the plugin
//! running, so neither counts against its CPU deadline: [`Metered`] stops the clock whenever the
//! call is suspended and restarts it when the call is polled again. Without that, a busy worker
//! turns fair sharing into failures: sixteen calls of 6 ms interleaved tick by tick all take
//! ~100 ms of wall time and all hit a 100 ms deadline.
//!
//! Nor is a stall of the thread under the call: descheduled, blocked in the kernel on a page
//! fault, its VM paused. Guest code passes an epoch check at every function entry and loop
//! back-edge, and the deadline callback suspends the call at the first check after each tick,
//! so a call that is really running is suspended at least once per [`QUIET_TICK`] (once per
//! [`EPOCH_TICK`] after its first two: `engine::tick`). A stretch
//! between two suspensions far longer than that is mostly time the thread was not running the
//! call, so each stretch counts for at most [`LONGEST_STRETCH`]. Without that, one 100 ms
//! stall of the thread fails a ~2 us call at its 100 ms deadline.
//!
//! A host function whose work grows with what the plugin hands it (a digest of 50 MB, a key
//! parsed from a huge PEM) runs with no epoch check: its stretch would count for
//! [`LONGEST_STRETCH`] at most, and a plugin calling it in a loop held its worker for seconds
//! under a 100 ms deadline. Such a function times its work and charges it to the call
//! ([`CallClock::charge`]): counted in full, never taken for a stall.
//!
//! The wall-clock limit ([`within_wall_limit`]) bounds what the CPU deadline leaves out, the
//! waits on the host; the time a call spent yielded to other requests, and stalled beyond
//! [`LONGEST_STRETCH`], is added back to it. So is a host wait's time past its own bound
//! ([`CallClock::excuse`]): an outbound call that took its whole timeout ends when its worker
//! next turns its timers, which on a worker busy with hundreds of requests is late, and the
//! call then failed its limit (a 500) for the runtime's delay, not the plugin's.
//!
//! The clock is shared by the poller and the deadline callback, which runs inside the call on
//! the same thread; its fields are atomics only so that the store stays `Send`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::engine::{EPOCH_TICK, QUIET_TICK};
use super::failure::WallClockExceeded;

/// The most running time one stretch of a call (from a resumption to the next suspension or
/// deadline check) is counted for: the longest a call that is really running goes between
/// suspensions (a quiet tick), with room for a late tick.
pub const LONGEST_STRETCH: Duration = QUIET_TICK.saturating_add(EPOCH_TICK);
const LONGEST_STRETCH_NANOS: u64 = LONGEST_STRETCH.as_nanos() as u64;

/// Running and yielded time of the call in progress on one store.
#[derive(Debug)]
pub struct CallClock {
    /// Origin of the nanosecond fields below.
    origin: Instant,
    /// When the call began.
    started: AtomicU64,
    /// When the call was last resumed (it is running since then, unless suspended).
    resumed: AtomicU64,
    /// Running time of the call before its last resumption.
    ran: AtomicU64,
    /// When the call was last suspended.
    suspended: AtomicU64,
    /// Time the call spent yielded to other requests (not waiting on the host).
    queued: AtomicU64,
    /// Time of the call's running stretches beyond [`LONGEST_STRETCH`] each: the thread stalled
    /// under the call.
    stalled: AtomicU64,
    /// Set by the deadline callback when it yields: the coming suspension is a turn given to
    /// other requests, not a wait on the host.
    yielding: AtomicBool,
    /// Time host waits lasted past their own bounds ([`CallClock::excuse`]).
    overdue: AtomicU64,
    /// Host work charged in the current stretch ([`CallClock::charge`]): running time, never
    /// clamped as a stall.
    charged: AtomicU64,
}

impl Default for CallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl CallClock {
    /// A clock with no call in progress.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            started: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            ran: AtomicU64::new(0),
            suspended: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            yielding: AtomicBool::new(false),
            overdue: AtomicU64::new(0),
            charged: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Starts a new call at `now`: it is running from then on.
    pub fn begin(&self, now: Instant) {
        let at = self.nanos(now);
        self.started.store(at, Relaxed);
        self.resumed.store(at, Relaxed);
        self.ran.store(0, Relaxed);
        self.queued.store(0, Relaxed);
        self.stalled.store(0, Relaxed);
        self.yielding.store(false, Relaxed);
        self.overdue.store(0, Relaxed);
        self.charged.store(0, Relaxed);
    }

    /// When the current call began.
    pub fn started(&self) -> Instant {
        self.origin + Duration::from_nanos(self.started.load(Relaxed))
    }

    /// How long the current call has been running, as of `now` (called while it runs).
    pub fn running(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.ran.load(Relaxed).saturating_add(self.stretch(now)))
    }

    /// Running time of the stretch since the last resumption, as of `now`: the host work charged
    /// in it, and the rest counted up to [`LONGEST_STRETCH`].
    fn stretch(&self, now: Instant) -> u64 {
        Self::split(self.since_resumed(now), self.charged.load(Relaxed)).0
    }

    /// A stretch of `stretch` ns with `charged` ns of host work in it: (running, stalled).
    fn split(stretch: u64, charged: u64) -> (u64, u64) {
        let rest = stretch.saturating_sub(charged);
        (rest.min(LONGEST_STRETCH_NANOS).saturating_add(charged), rest.saturating_sub(LONGEST_STRETCH_NANOS))
    }

    /// Charges `work`, done by a host function for the plugin, to the call's running time in
    /// full (see the module's doc).
    pub fn charge(&self, work: Duration) {
        let work = u64::try_from(work.as_nanos()).unwrap_or(u64::MAX);
        self.charged.store(self.charged.load(Relaxed).saturating_add(work), Relaxed);
    }

    fn since_resumed(&self, now: Instant) -> u64 {
        self.nanos(now).saturating_sub(self.resumed.load(Relaxed))
    }

    /// Time the current call has spent yielded to other requests.
    pub fn queued(&self) -> Duration {
        Duration::from_nanos(self.queued.load(Relaxed))
    }

    /// Wall time of the current call so far that neither deadline holds against it: its turns
    /// yielded to other requests, the stalls of its thread, and its host waits past their own
    /// bounds ([`CallClock::excuse`]).
    pub fn excused(&self) -> Duration {
        let excused = self.queued.load(Relaxed).saturating_add(self.stalled.load(Relaxed));
        Duration::from_nanos(excused.saturating_add(self.overdue.load(Relaxed)))
    }

    /// Leaves `late` out of the wall-clock limit: the time a host wait lasted past its own
    /// bound (an outbound call's timeout), which the limit already counts in full.
    pub fn excuse(&self, late: Duration) {
        let late = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        if late > 0 {
            self.overdue.store(self.overdue.load(Relaxed).saturating_add(late), Relaxed);
        }
    }

    /// Called by the deadline callback as it yields to the runtime.
    pub fn yielding(&self) {
        self.yielding.store(true, Relaxed);
    }

    /// The call returned `Pending`: it stops running.
    fn suspend(&self) {
        let now = Instant::now();
        let (ran, stalled) = Self::split(self.since_resumed(now), self.charged.swap(0, Relaxed));
        self.ran.store(self.ran.load(Relaxed).saturating_add(ran), Relaxed);
        if stalled > 0 {
            self.stalled.store(self.stalled.load(Relaxed).saturating_add(stalled), Relaxed);
        }
        self.suspended.store(self.nanos(now), Relaxed);
    }

    /// The call is polled again after a suspension: it runs from now on.
    fn resume(&self) {
        let now = self.nanos(Instant::now());
        if self.yielding.swap(false, Relaxed) {
            let gap = now.saturating_sub(self.suspended.load(Relaxed));
            self.queued.store(self.queued.load(Relaxed).saturating_add(gap), Relaxed);
        }
        self.resumed.store(now, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A call into the guest whose [`CallClock`] runs only while the call is being polled.
    /// A call that completes in its first poll (most do) costs no clock reading here: the one
    /// taken when the call began is enough.
    pub struct Metered<'c, F> {
        #[pin]
        call: F,
        clock: &'c CallClock,
        suspended: bool,
    }
}

impl<'c, F: Future> Metered<'c, F> {
    /// Meters `call`, which begins now (see [`CallClock::begin`]).
    pub fn new(clock: &'c CallClock, call: F) -> Self {
        Self { call, clock, suspended: false }
    }
}

impl<F: Future> Future for Metered<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if *this.suspended {
            this.clock.resume();
            *this.suspended = false;
        }
        let out = this.call.poll(cx);
        if out.is_pending() {
            this.clock.suspend();
            *this.suspended = true;
        }
        out
    }
}

/// Runs a metered call that may hold its request at most `limit`, not counting the time it
/// spent yielded to other requests on a busy worker nor the stalls of its thread (see
/// [`CallClock::excused`]). Dropping the call on timeout cancels it.
pub fn within_wall_limit<'c, T, F>(clock: &'c CallClock, limit: Duration, call: F) -> WallLimited<'c, F>
where
    F: Future<Output = wasmtime::Result<T>>,
{
    WallLimited { call: Metered::new(clock, call), clock, limit, timer: None }
}

pin_project_lite::pin_project! {
    /// A metered call held to its wall-clock limit ([`within_wall_limit`]).
    pub struct WallLimited<'c, F> {
        #[pin]
        call: Metered<'c, F>,
        clock: &'c CallClock,
        limit: Duration,
        // Set when the call first yields. Most calls complete in their first poll, and making a
        // timer looks up the runtime and counts a reference on its handle, which every worker
        // shares: a cache line both cores wrote on every plugin call.
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl<T, F: Future<Output = wasmtime::Result<T>>> Future for WallLimited<'_, F> {
    type Output = wasmtime::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The call first: one that completes as its limit passes has completed.
        if let Poll::Ready(out) = this.call.poll(cx) {
            return Poll::Ready(out);
        }
        let started = this.clock.started();
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep_until((started + *this.limit).into())));
        }
        if let Some(mut timer) = this.timer.as_pin_mut() {
            while timer.as_mut().poll(cx).is_ready() {
                let extended = started + *this.limit + this.clock.excused();
                if extended <= Instant::now() {
                    return Poll::Ready(Err(WallClockExceeded(*this.limit).into()));
                }
                timer.as_mut().reset(extended.into());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that runs busily for `work`, then yields its turn as the deadline callback does,
    /// `left` times, then completes.
    struct Busy<'c> {
        clock: &'c CallClock,
        left: u32,
        work: Duration,
    }

    impl Future for Busy<'_> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let until = Instant::now() + self.work;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            if self.left == 0 {
                return Poll::Ready(());
            }
            self.left -= 1;
            self.clock.yielding();
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn time_yielded_to_other_calls_is_not_running_time() {
        let clocks: [CallClock; 4] = std::array::from_fn(|_| CallClock::new());
        let work = Duration::from_millis(2);
        let call = |clock: &'static CallClock| async move {
            clock.begin(Instant::now());
            Metered::new(clock, Busy { clock, left: 5, work }).await
        };
        let clocks: &'static [CallClock; 4] = Box::leak(Box::new(clocks));
        // Four calls interleaved on one thread, as on a worker's current-thread runtime.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let started = Instant::now();
        rt.block_on(async { tokio::join!(call(&clocks[0]), call(&clocks[1]), call(&clocks[2]), call(&clocks[3])) });
        let wall = started.elapsed();
        for clock in clocks {
            // Six slices of 2 ms each (five before a suspension); the others' in between are not.
            let ran = Duration::from_nanos(clock.ran.load(Relaxed));
            assert!(ran >= 5 * work, "ran {ran:?}");
            assert!(ran < wall / 2, "ran {ran:?} of {wall:?}: the others' turns were counted");
            assert!(clock.queued() >= 3 * work, "yielded turns are recorded as queued: {:?}", clock.queued());
        }
    }

    #[test]
    fn a_stretch_counts_for_at_most_the_longest_a_running_call_goes_unchecked() {
        let clock = CallClock::new();
        clock.begin(Instant::now());
        // The thread stops under the call (here: sleeps) for far longer than a tick.
        std::thread::sleep(LONGEST_STRETCH * 6);
        assert_eq!(clock.running(Instant::now()), LONGEST_STRETCH);
        // And the stretch ends there: suspended, then resumed and running on. The rest of the
        // stall is excused from the wall-clock limit.
        clock.suspend();
        assert!(clock.excused() >= LONGEST_STRETCH * 5, "excused {:?}", clock.excused());
        clock.resume();
        let resumed = Instant::now();
        let short = Duration::from_micros(300);
        while resumed.elapsed() < short {
            std::hint::spin_loop();
        }
        let running = clock.running(Instant::now());
        assert!(running >= LONGEST_STRETCH + short, "{running:?}");
        assert!(running < LONGEST_STRETCH * 2, "{running:?}");
    }

    /// Host work a function charges counts in full, a long stretch and all: a plugin digesting
    /// 50 MB in a loop is not taken for a stalled thread, and meets its deadline.
    #[test]
    fn charged_host_work_counts_in_full() {
        let clock = CallClock::new();
        clock.begin(Instant::now());
        let work = LONGEST_STRETCH * 6;
        std::thread::sleep(work);
        clock.charge(work);
        let running = clock.running(Instant::now());
        assert!(running >= work && running < work + LONGEST_STRETCH * 2, "{running:?}");
        // Kept when the stretch ends; nothing of it excused from the wall-clock limit.
        clock.suspend();
        assert!(clock.excused() < LONGEST_STRETCH, "excused {:?}", clock.excused());
        clock.resume();
        assert!(clock.running(Instant::now()) >= work);
    }

    #[tokio::test]
    async fn the_wall_limit_leaves_out_turns_given_to_others_but_not_host_waits() {
        // Waiting on the host (suspensions not marked as turns) runs into the limit.
        let clock = CallClock::new();
        clock.begin(Instant::now());
        let waits = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        };
        let out = within_wall_limit(&clock, Duration::from_millis(50), waits).await;
        assert!(out.unwrap_err().is::<WallClockExceeded>());

        // The same wall time spent yielded to other requests does not.
        let clock = CallClock::new();
        clock.begin(Instant::now());
        let turns = async {
            let until = Instant::now() + Duration::from_millis(200);
            while Instant::now() < until {
                clock.yielding();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        };
        within_wall_limit(&clock, Duration::from_millis(50), turns).await.unwrap();
        assert!(clock.queued() >= Duration::from_millis(150), "queued {:?}", clock.queued());
    }

    #[test]
    fn a_call_done_in_its_first_poll_makes_no_timer() {
        // Polled outside any runtime: making a timer there panics (no time driver).
        let clock = CallClock::new();
        clock.begin(Instant::now());
        let mut call = std::pin::pin!(within_wall_limit(&clock, Duration::from_millis(50), async { Ok(7) }));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(call.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));

        // One that yields gets its timer, and its limit, once it does.
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let out = rt.block_on(async {
            clock.begin(Instant::now());
            let yields = async {
                tokio::task::yield_now().await;
                std::future::pending::<()>().await;
                Ok(())
            };
            within_wall_limit(&clock, Duration::from_millis(20), yields).await
        });
        assert!(out.unwrap_err().is::<WallClockExceeded>());
    }

    #[test]
    fn a_host_wait_counts_for_at_most_its_own_bound() {
        // A 100 ms limit (50 ms of CPU, a 50 ms host wait) on a one-thread worker that another
        // request keeps busy for 200 ms: the wait's timer (and the limit's) are seen ~150 ms
        // late. `excuse` on the late part, as the http-client host function does: the call
        // succeeds; without it, it fails its limit.
        for excused in [true, false] {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let clock = CallClock::new();
            let out = rt.block_on(async {
                clock.begin(Instant::now());
                let call = async {
                    let bound = Duration::from_millis(50);
                    let waited = Instant::now();
                    tokio::time::sleep(bound).await;
                    if excused {
                        clock.excuse(waited.elapsed().saturating_sub(bound));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(())
                };
                let busy = async {
                    tokio::task::yield_now().await;
                    std::thread::sleep(Duration::from_millis(200));
                };
                tokio::join!(within_wall_limit(&clock, Duration::from_millis(100), call), busy).0
            });
            match out {
                Ok(()) => assert!(excused && clock.excused() >= Duration::from_millis(100), "excused {:?}", clock.excused()),
                Err(e) => assert!(!excused && e.is::<WallClockExceeded>(), "{e}"),
            }
        }
    }
}
