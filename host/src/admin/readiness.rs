//! `/ready`: whether this gateway can serve: its config is loaded and its plugins are
//! instantiated (both hold once a [`Gateway`] exists: building one loads and configures every
//! chain entry). Its state backend is probed and reported too; a Redis that does not serve the
//! limiters fails readiness only with `[state] required_for_ready`: every replica shares that
//! Redis, so failing on it would take the whole fleet out of rotation at once, while limiters that
//! fail open go on serving.
//!
//! `/ready` is open to anyone who reaches the admin listener (load balancers need no token), so a
//! failing state backend is reported by a fixed word ([`failure`]), never by its error text, which
//! can name internal hosts and addresses. The error itself goes to the log ([`ReadinessLog`]).

use std::sync::{Mutex, PoisonError};

use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::state::{StateError, StateStore};

/// Key probed on the state backend. In memory it is read (which changes nothing); in Redis it is
/// written with a short expiry and deleted by a script, as the limiters write theirs
/// ([`crate::state::redis::RedisStore::probe`]): a Redis that answers reads but refuses the
/// limiters' scripts or writes (out of memory, a permission missing) is not ready.
const PROBE_KEY: &str = "airlock:ready-probe";

/// The state backend's failure as `/ready` last saw it, so its detail is logged when it changes
/// rather than at every probe (a balancer probes every few seconds).
#[derive(Debug, Default)]
pub struct ReadinessLog {
    last: Mutex<Option<String>>,
}

impl ReadinessLog {
    /// Logs the probe's outcome: a failure at `warn` when it is new or its text changed, at
    /// `debug` otherwise; the first success after a failure at `info`.
    fn record(&self, backend: &str, address: &str, outcome: Result<(), &StateError>) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(()) => {
                if last.take().is_some() {
                    tracing::info!(backend, address, "readiness: the state backend passes its check again");
                }
            }
            Err(e) => {
                let detail = e.to_string();
                if last.as_deref() == Some(detail.as_str()) {
                    tracing::debug!(backend, address, "readiness: the state backend still fails its check: {detail}");
                } else {
                    tracing::warn!(backend, address, "readiness: the state backend fails its check: {detail} (`/ready` shows only `{}`)", failure(e));
                    *last = Some(detail);
                }
            }
        }
    }
}

/// The word `/ready` reports a state backend failure by (`checks.state_backend.error`): fixed,
/// so the open endpoint shows nothing of the error's text (hosts, addresses, Redis's answer).
pub fn failure(error: &StateError) -> &'static str {
    match error {
        StateError::Unavailable(_) => "unavailable",
        StateError::Invalid(_) => "invalid",
        StateError::Full => "full",
    }
}

/// The readiness checks, and whether all passed; the state backend's errors are logged to `log`.
pub async fn check(gateway: &Gateway, log: &ReadinessLog) -> (bool, Value) {
    let entries: usize = gateway.routes.routes().iter().map(|r| r.chain.entries().len()).sum();
    let (state, required) = match &*gateway.state {
        StateStore::Redis(redis) => {
            let probed = redis.probe(PROBE_KEY).await;
            // Counted and logged as the store counts its own operations' failures.
            if let Err(e @ StateError::Unavailable(_)) = &probed {
                gateway.state.stats().record_unavailable(gateway.state.backend(), gateway.state.address(), e);
            }
            (probed, redis.required_for_ready())
        }
        memory => (memory.get(PROBE_KEY).await.map(|_| ()), true),
    };
    log.record(gateway.state.backend(), gateway.state.address(), state.as_ref().map(|_| ()));
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
                "error": state.as_ref().err().map(failure),
            },
        },
    });
    (ready, body)
}
