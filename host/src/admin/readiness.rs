//! `/ready`: whether this gateway can serve: its config is loaded and its plugins are
//! instantiated (both hold once a [`Gateway`] exists: building one loads and configures every
//! chain entry). Its state backend is probed and reported too; a Redis that does not serve the
//! limiters fails readiness only with `[state] required_for_ready`: every replica shares that
//! Redis, so failing on it would take the whole fleet out of rotation at once, while limiters that
//! fail open go on serving.

use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::state::{StateError, StateStore};

/// Key probed on the state backend. In memory it is read (which changes nothing); in Redis it is
/// written with a short expiry and deleted by a script, as the limiters write theirs
/// ([`crate::state::redis::RedisStore::probe`]): a Redis that answers reads but refuses the
/// limiters' scripts or writes (out of memory, a permission missing) is not ready.
const PROBE_KEY: &str = "airlock:ready-probe";

/// The readiness checks, and whether all passed.
pub async fn check(gateway: &Gateway) -> (bool, Value) {
    let entries: usize = gateway.routes.routes().iter().map(|r| r.chain.entries().len()).sum();
    let (state, required) = match &*gateway.state {
        StateStore::Redis(redis) => {
            let probed = redis.probe(PROBE_KEY).await;
            // Counted and logged as the store counts its own operations' failures.
            if let Err(e @ StateError::Unavailable(_)) = &probed {
                gateway.state.stats().record_unavailable(gateway.state.backend(), e);
            }
            (probed, redis.required_for_ready())
        }
        memory => (memory.get(PROBE_KEY).await.map(|_| ()), true),
    };
    let state_ok = state.is_ok();
    let ready = state_ok || !required;
    let body = json!({
        "ready": ready,
        "checks": {
            "config_loaded": true,
            "plugins_instantiated": { "ok": true, "chain_entries": entries },
            "state_backend": {
                "ok": state_ok,
                "required": required,
                "backend": gateway.state.backend(),
                "error": state.err().map(|e| e.to_string()),
            },
        },
    });
    (ready, body)
}
