//! Atomic counters, token buckets, fixed windows and keyed values with expiry, kept by the
//! gateway (in its memory, or in a Redis shared by every gateway): capability `state`.
//!
//! A plugin that calls anything in this module imports `airlock:plugin/state`, and the gateway
//! loads it only if its `[plugins.<name>]` definition grants it (`capabilities = ["state"]`;
//! built-in plugins have it). Plugins that never call it do not import it.
//!
//! Keys are the plugin's own: the gateway prefixes them with a namespace the plugin cannot
//! choose, so two plugins never see each other's keys. The namespace is the `[plugins.<name>]`
//! definition's name (for a `.wasm` or `builtin:` source written directly in a chain, the route
//! and the entry's position), not the route: every route whose chain uses one definition shares
//! its keys (and, with the `redis` backend, so does every gateway sharing that Redis). For a
//! count per route, put the route in the key (`format!("{}:{consumer}", req.route_id())`).
//! Each call is one atomic step in the backend, and a refused [`acquire`] or [`window`] takes
//! nothing.
//!
//! ```no_run
//! use airlock_sdk::state;
//!
//! // 10 requests per second, bursts of up to 20.
//! match state::acquire("client:203.0.113.7", 10, 1000, 20, 1) {
//!     Ok(d) if d.allowed => { /* go on */ }
//!     Ok(d) => { let _wait_ms = d.retry_after_ms; /* answer 429 */ }
//!     Err(e) => state_unavailable(e),
//! }
//! # fn state_unavailable(_: state::StateError) {}
//! ```

use crate::bindings::airlock::plugin::state as raw;

/// Why a state operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The backend could not be reached or did not answer within its timeout: apply the
    /// plugin's fail-open or fail-closed policy.
    Unavailable(String),
    /// The arguments were refused (value too large, zero rate or period). A key of any length
    /// is accepted: one longer than 128 bytes is kept as its SHA-256 digest.
    Invalid(String),
    /// The gateway's memory backend is full and the key was not created.
    Full,
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(m) => write!(f, "state backend unavailable: {m}"),
            Self::Invalid(m) => write!(f, "invalid state operation: {m}"),
            Self::Full => f.write_str("state store full"),
        }
    }
}

impl std::error::Error for StateError {}

impl From<raw::StateError> for StateError {
    fn from(e: raw::StateError) -> Self {
        match e {
            raw::StateError::Unavailable(m) => Self::Unavailable(m),
            raw::StateError::Invalid(m) => Self::Invalid(m),
            raw::StateError::Full => Self::Full,
        }
    }
}

/// The outcome of [`acquire`] or [`window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// True if the cost was taken; false if refused (then nothing was taken).
    pub allowed: bool,
    /// Units still available after this step.
    pub remaining: u64,
    /// The limit the numbers refer to (the burst, or the window's limit).
    pub limit: u64,
    /// Milliseconds until the limit is fully available again.
    pub reset_after_ms: u64,
    /// When refused: milliseconds until the same cost would be allowed (0 when allowed).
    pub retry_after_ms: u64,
}

impl From<raw::Decision> for Decision {
    fn from(d: raw::Decision) -> Self {
        Self {
            allowed: d.allowed,
            remaining: d.remaining,
            limit: d.limit,
            reset_after_ms: d.reset_after_ms,
            retry_after_ms: d.retry_after_ms,
        }
    }
}

/// Adds `delta` to the counter at `key` and returns the new value. A key created by this call
/// expires after `ttl_ms` milliseconds (0: never); an existing key keeps its expiry.
pub fn incr(key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StateError> {
    raw::incr(key, delta, ttl_ms).map_err(Into::into)
}

/// Token bucket (GCRA): up to `burst` units, refilled at `rate` units per `period_ms`. Takes
/// `cost` units if they are there, else takes nothing and says when they will be.
pub fn acquire(key: &str, rate: u64, period_ms: u64, burst: u64, cost: u64) -> Result<Decision, StateError> {
    raw::acquire(key, rate, period_ms, burst, cost).map(Into::into).map_err(Into::into)
}

/// Fixed window: at most `limit` units per `window_ms`, the window starting at its first
/// request. Takes `cost` units if they fit, else takes nothing.
pub fn window(key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
    raw::window(key, limit, window_ms, cost).map(Into::into).map_err(Into::into)
}

/// Sliding window: `limit` units per `window_ms`, counting the current window plus the previous
/// one weighted by how much of it the last `window_ms` still covers. Takes `cost` units if they
/// fit, else takes nothing.
pub fn sliding_window(key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
    raw::sliding_window(key, limit, window_ms, cost).map(Into::into).map_err(Into::into)
}

/// Like [`sliding_window`], but always in this gateway's own memory (see [`acquire_local`]).
pub fn sliding_window_local(key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
    raw::sliding_window_local(key, limit, window_ms, cost).map(Into::into).map_err(Into::into)
}

/// Like [`acquire`], but always in this gateway's own memory, whatever the configured backend:
/// the local limit to fall back to while the shared backend is [`StateError::Unavailable`].
pub fn acquire_local(key: &str, rate: u64, period_ms: u64, burst: u64, cost: u64) -> Result<Decision, StateError> {
    raw::acquire_local(key, rate, period_ms, burst, cost).map(Into::into).map_err(Into::into)
}

/// Like [`window`], but always in this gateway's own memory (see [`acquire_local`]).
pub fn window_local(key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
    raw::window_local(key, limit, window_ms, cost).map(Into::into).map_err(Into::into)
}

/// Reads the value at `key`, if present and not expired.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, StateError> {
    raw::get(key).map_err(Into::into)
}

/// Stores `value` at `key`, expiring after `ttl_ms` milliseconds (0: never).
pub fn set(key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StateError> {
    raw::set(key, value, ttl_ms).map_err(Into::into)
}

/// Removes `key` (not an error if it is absent).
pub fn delete(key: &str) -> Result<(), StateError> {
    raw::delete(key).map_err(Into::into)
}
