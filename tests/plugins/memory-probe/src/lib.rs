//! Reports what its linear memory remembers from earlier calls, so tests can check that
//! `isolation = "request"` gives every request a clean memory: sets the request headers
//! `x-calls` (calls this instance has served, this one included) and `x-leftover` (`seen` if a
//! marker written by an earlier call is still in zero-initialised memory several pages away
//! from the data segment, else `none`), then writes the marker.
//!
//! Config: `{}`.
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use airlock_sdk::{Action, Descriptor, Plugin, Request, export_plugin};
use serde::Deserialize;

/// Calls served by this instance.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// Zero-initialised memory (not in the module's data image) spanning many Wasm pages' worth of
/// host pages; the marker goes near its end.
static SCRATCH: [AtomicU8; 256 * 1024] = [const { AtomicU8::new(0) }; 256 * 1024];
const MARKER_AT: usize = 200 * 1024;
const MARKER: u8 = 0xA5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {}

struct MemoryProbe;

impl Plugin for MemoryProbe {
    type Config = Config;

    fn new(_config: Config) -> Result<Self, String> {
        Ok(MemoryProbe)
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let leftover = SCRATCH[MARKER_AT].swap(MARKER, Ordering::Relaxed) == MARKER;
        req.set_header("x-calls", &calls.to_string());
        req.set_header("x-leftover", if leftover { "seen" } else { "none" });
        Action::Continue
    }
}

export_plugin!(MemoryProbe);
