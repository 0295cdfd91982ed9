//! `airlock:plugin/state`: atomic counters, token buckets, fixed and sliding windows, and keyed values with
//! expiry (capability `state`). Every key goes through the instance's [`ScopedState`](crate::state::ScopedState), which
//! prefixes it with the chain entry's namespace, so a plugin reaches only its own keys. The
//! operations are async: with Redis they wait on the network, holding no thread, and the wait
//! is not counted against the plugin's CPU deadline (the call is suspended, see `call_clock`).

use super::HostState;
use super::airlock::plugin::state::{Decision as WitDecision, Host, StateError as WitError};
use crate::state::{Decision, Gcra, StateError};

fn to_wit(e: StateError) -> WitError {
    match e {
        StateError::Unavailable(m) => WitError::Unavailable(m),
        StateError::Invalid(m) => WitError::Invalid(m),
        StateError::Full => WitError::Full,
    }
}

fn decision(d: Decision) -> WitDecision {
    WitDecision {
        allowed: d.allowed,
        remaining: d.remaining,
        limit: d.limit,
        reset_after_ms: d.reset_after_ms,
        retry_after_ms: d.retry_after_ms,
    }
}

/// The instance's scope, or the error a plugin sees if the host gave it none (only possible for
/// a component that imports `state` and was loaded outside a gateway).
macro_rules! scoped {
    ($self:ident, $key:expr) => {{
        let Some(scope) = $self.state.clone() else {
            return Err(WitError::Unavailable("no state store is configured for this plugin".into()));
        };
        // A long key is digested: work that grows with the key, charged to the call.
        let key = $self.charged($key.len(), || scope.key(&$key));
        let key = key.map_err(to_wit)?;
        (scope, key)
    }};
}

impl Host for HostState {
    async fn incr(&mut self, key: String, delta: u64, ttl_ms: u64) -> Result<u64, WitError> {
        let (scope, key) = scoped!(self, key);
        scope.store().incr(&key, delta, ttl_ms).await.map_err(to_wit)
    }

    async fn acquire(&mut self, key: String, rate: u64, period_ms: u64, burst: u64, cost: u64) -> Result<WitDecision, WitError> {
        let (scope, key) = scoped!(self, key);
        let gcra = Gcra::new(rate, period_ms, burst).map_err(to_wit)?;
        scope.store().acquire(&key, &gcra, cost).await.map(decision).map_err(to_wit)
    }

    async fn window(&mut self, key: String, limit: u64, window_ms: u64, cost: u64) -> Result<WitDecision, WitError> {
        let (scope, key) = scoped!(self, key);
        scope.store().window(&key, limit, window_ms, cost).await.map(decision).map_err(to_wit)
    }

    async fn acquire_local(&mut self, key: String, rate: u64, period_ms: u64, burst: u64, cost: u64) -> Result<WitDecision, WitError> {
        let (scope, key) = scoped!(self, key);
        let gcra = Gcra::new(rate, period_ms, burst).map_err(to_wit)?;
        scope.store().local().acquire(&key, &gcra, cost).map(decision).map_err(to_wit)
    }

    async fn window_local(&mut self, key: String, limit: u64, window_ms: u64, cost: u64) -> Result<WitDecision, WitError> {
        let (scope, key) = scoped!(self, key);
        scope.store().local().window(&key, limit, window_ms, cost).map(decision).map_err(to_wit)
    }

    async fn sliding_window(&mut self, key: String, limit: u64, window_ms: u64, cost: u64) -> Result<WitDecision, WitError> {
        let (scope, key) = scoped!(self, key);
        scope.store().sliding_window(&key, limit, window_ms, cost).await.map(decision).map_err(to_wit)
    }

    async fn sliding_window_local(&mut self, key: String, limit: u64, window_ms: u64, cost: u64) -> Result<WitDecision, WitError> {
        let (scope, key) = scoped!(self, key);
        scope.store().local().sliding_window(&key, limit, window_ms, cost).map(decision).map_err(to_wit)
    }

    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        let (scope, key) = scoped!(self, key);
        scope.store().get(&key).await.map_err(to_wit)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), WitError> {
        let (scope, key) = scoped!(self, key);
        scope.store().set(&key, &value, ttl_ms).await.map_err(to_wit)
    }

    async fn delete(&mut self, key: String) -> Result<(), WitError> {
        let (scope, key) = scoped!(self, key);
        scope.store().delete(&key).await.map_err(to_wit)
    }
}
