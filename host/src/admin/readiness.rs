//! `/ready`: whether this gateway can serve: its config is loaded, its plugins are instantiated
//! (both hold once a [`Gateway`] exists: building one loads and configures every chain entry) and
//! its state backend answers.

use serde_json::{Value, json};

use crate::gateway::Gateway;

/// Key read to probe the state backend (reading a missing key changes nothing).
const PROBE_KEY: &str = "airlock:ready-probe";

/// The readiness checks, and whether all passed.
pub async fn check(gateway: &Gateway) -> (bool, Value) {
    let entries: usize = gateway.routes.routes().iter().map(|r| r.chain.entries().len()).sum();
    let state = gateway.state.get(PROBE_KEY).await;
    let state_ok = state.is_ok();
    let body = json!({
        "ready": state_ok,
        "checks": {
            "config_loaded": true,
            "plugins_instantiated": { "ok": true, "chain_entries": entries },
            "state_backend": {
                "ok": state_ok,
                "backend": gateway.state.backend(),
                "error": state.err().map(|e| e.to_string()),
            },
        },
    });
    (state_ok, body)
}
