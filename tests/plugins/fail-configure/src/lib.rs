//! Refuses every config, whatever it holds: the gateway must reject its config at load, with this
//! plugin's message, the route and the line of the chain entry.
use airlock_sdk::{Plugin, export_plugin};
use serde::de::IgnoredAny;

struct FailConfigure;

impl Plugin for FailConfigure {
    /// Anything parses, so the refusal always comes from `new`.
    type Config = IgnoredAny;

    fn new(_: IgnoredAny) -> Result<Self, String> {
        Err("this plugin refuses every config: expected nothing".to_owned())
    }
}

export_plugin!(FailConfigure);
