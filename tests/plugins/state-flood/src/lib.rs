//! Does what a third-party plugin granted `state` can do without end: each request increments
//! counters under keys of `key_bytes` bytes (`<i>-kkk...`, `i` from the request's `x-from`
//! header, `x-count` of them), each expiring after `ttl_ms` (0: never), and stops at the first
//! the store refuses. Answers 200 with `stored=<keys incremented> error=<none, or the refusal>`.
use airlock_sdk::{Action, Plugin, Request, export_plugin, state};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    key_bytes: usize,
    ttl_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self { key_bytes: 500, ttl_ms: 0 }
    }
}

struct StateFlood(Config);

/// A numeric request header, or `default`.
fn number(req: &Request, name: &str, default: u64) -> u64 {
    req.header_str(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Plugin for StateFlood {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(StateFlood(config))
    }

    fn on_request(&self, req: &Request) -> Action {
        let from = number(req, "x-from", 0);
        let count = number(req, "x-count", 2_000);
        let pad = "k".repeat(self.0.key_bytes);
        let mut stored = 0;
        let mut error = "none".to_owned();
        for i in from..from + count {
            match state::incr(&format!("{i}-{pad}"), 1, self.0.ttl_ms) {
                Ok(_) => stored += 1,
                Err(state::StateError::Full) => {
                    error = "full".to_owned();
                    break;
                }
                Err(e) => {
                    error = e.to_string();
                    break;
                }
            }
        }
        Action::text(200, format!("stored={stored} error={error}\n"))
    }
}

export_plugin!(StateFlood);
