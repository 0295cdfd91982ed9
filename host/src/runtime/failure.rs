//! How a call into a plugin can fail, told apart so logs and metrics say what happened.

use std::fmt;
use std::time::Duration;

use super::host::HostState;
use super::limits::{MemoryBudgetExhausted, MemoryCapExceeded};

/// A plugin call that did not return normally. The instance is discarded afterwards.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The call ran past its CPU deadline and was interrupted.
    Deadline(Duration),
    /// The call held the request past its wall-clock limit (its CPU deadline plus the longest
    /// single wait its capabilities allow), e.g. by waiting on the host again and again.
    WallClock(Duration),
    /// The plugin tried to grow its memory past its cap.
    OutOfMemory(usize),
    /// The plugin tried to grow its memory while every instance's together had used up the
    /// gateway's budget (`runtime.plugin_memory_mb`, in bytes here).
    BudgetExhausted(usize),
    /// The plugin trapped (a panic, `unreachable`, a bad memory access, a stack overflow, exit).
    Trap(String),
    /// No instance could be made: the sandbox's `limit` instances (`runtime.max_instances`), or
    /// the plugin's share of them, stayed taken for `waited`. The gateway's capacity, not the
    /// plugin's fault.
    Busy {
        /// The sandbox's instance limit.
        limit: usize,
        /// How long the call waited for a place.
        waited: Duration,
    },
    /// The plugin answered with a status that is not a final HTTP status (a 1xx, or outside
    /// 100-599): its headers and body would pass for a deliberate answer.
    InvalidStatus(u16),
    /// The plugin answered with a body longer than the route's body limit
    /// (`limits.max_body_bytes`): held until the client has read it, such an answer would keep
    /// host memory past the plugin's own memory cap.
    TooLarge {
        /// What was too large (`respond` body, `acquire-slot` refusal body).
        what: &'static str,
        /// Its length.
        bytes: usize,
        /// The route's body limit.
        limit: u64,
    },
    /// The plugin set a request or response body longer than the route's `max_body_bytes`. Not
    /// made, and the call fails: the request or response must not go on with the old body and
    /// the call's other changes (a translated request's new method and path with the client's
    /// own body, a translated answer's new content type with the upstream's).
    BodyTooLarge {
        /// Which body (`request body`, `response body`).
        what: &'static str,
        /// Its length.
        bytes: usize,
        /// The route's `max_body_bytes`.
        limit: u64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Deadline(d) => write!(f, "CPU deadline of {} ms exceeded", d.as_millis()),
            Failure::WallClock(d) => write!(f, "ran past its wall-clock limit of {} ms (CPU deadline plus host waits)", d.as_millis()),
            Failure::OutOfMemory(cap) => write!(f, "memory cap of {} MiB exceeded", cap / (1024 * 1024)),
            Failure::BudgetExhausted(cap) => write!(
                f,
                "could not grow its memory: the plugins' memory budget of {} MiB (runtime.plugin_memory_mb) is used up by every instance together",
                cap / (1024 * 1024)
            ),
            Failure::Trap(msg) => write!(f, "trapped: {msg}"),
            Failure::Busy { limit, waited } => write!(
                f,
                "no instance free within {} ms: the {limit} places of runtime.max_instances, or this entry's share of \
                 them (three quarters), stayed taken",
                waited.as_millis()
            ),
            Failure::InvalidStatus(status) => write!(f, "answered with status {status}, which is not a final HTTP status (200-599)"),
            Failure::TooLarge { what, bytes, limit } => {
                write!(f, "its {what} of {bytes} bytes is longer than the {limit} a plugin's answer may have (the route's max_body_bytes, at least 1 MiB)")
            }
            Failure::BodyTooLarge { what, bytes, limit } => write!(
                f,
                "set a {what} of {bytes} bytes, longer than the route's max_body_bytes ({limit}): not sent on with the old body instead"
            ),
        }
    }
}

impl Failure {
    /// A short label for metrics and log fields: `deadline`, `out_of_memory`, `trap`, `busy`,
    /// `invalid_status` or `too_large`.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Deadline(_) | Failure::WallClock(_) => "deadline",
            Failure::OutOfMemory(_) | Failure::BudgetExhausted(_) => "out_of_memory",
            Failure::Trap(_) => "trap",
            Failure::Busy { .. } => "busy",
            Failure::InvalidStatus(_) => "invalid_status",
            Failure::TooLarge { .. } | Failure::BodyTooLarge { .. } => "too_large",
        }
    }
}

/// Marks an epoch-deadline interruption raised by the store's deadline callback.
#[derive(Debug, thiserror::Error)]
#[error("CPU deadline exceeded")]
pub struct DeadlineExceeded;

/// Marks a call cancelled because it held the request past its wall-clock limit.
#[derive(Debug, thiserror::Error)]
#[error("wall-clock limit of {} ms exceeded", .0.as_millis())]
pub struct WallClockExceeded(pub Duration);

/// Works out why a call failed, from the error and what the store recorded during the call.
pub fn classify(state: &HostState, error: wasmtime::Error) -> Failure {
    if let Some(WallClockExceeded(limit)) = error.downcast_ref::<WallClockExceeded>() {
        return Failure::WallClock(*limit);
    }
    if state.deadline_hit || error.is::<DeadlineExceeded>() {
        return Failure::Deadline(state.cpu_deadline);
    }
    if state.limiter.budget_hit || error.is::<MemoryBudgetExhausted>() {
        return Failure::BudgetExhausted(state.limiter.shared.as_ref().map_or(0, |b| b.cap()));
    }
    if state.limiter.oom_hit || error.is::<MemoryCapExceeded>() {
        return Failure::OutOfMemory(state.limiter.memory_bytes);
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        // `std::process::exit` in a plugin: WASI 0.2's exit carries only success or failure.
        return Failure::Trap(format!(
            "called `exit` (status {}; any non-zero code reads as 1 under WASI 0.2): a plugin returns from its phase instead",
            exit.0
        ));
    }
    // A Rust plugin's own stack lives in its linear memory, below its data, with no guard page:
    // running off it is an out-of-bounds access rather than wasmtime's stack-overflow trap.
    let trap = error.downcast_ref::<wasmtime::Trap>().map(|t| match t {
        wasmtime::Trap::MemoryOutOfBounds => format!("{t} (or a stack overflow in the plugin's linear memory: deep recursion, large locals)"),
        _ => t.to_string(),
    });
    let root = error.root_cause().to_string();
    let what = match trap {
        Some(t) if t != root => format!("{t} ({root})"),
        Some(t) => t,
        None => root,
    };
    // A Rust plugin's panic prints its location and message to stderr before it traps.
    Failure::Trap(match state.log.stderr_tail() {
        Some(stderr) => format!("{what}; its stderr: {stderr}"),
        None => what,
    })
}
