//! Delays each request once: if the request header `x-delayed` is absent, sets `x-delayed: 1`
//! and returns `Action::Delay(ms)`; the gateway waits, then continues with the next plugin.
//!
//! Config: `{ ms = 300 }` (required).
use airlock_sdk::{Action, Descriptor, Plugin, Request, export_plugin};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    ms: u32,
}

struct Delay(u32);

impl Plugin for Delay {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Delay(config.ms))
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        if req.header("x-delayed").is_some() {
            return Action::Continue;
        }
        req.set_header("x-delayed", "1");
        Action::Delay(self.0)
    }
}

export_plugin!(Delay);
