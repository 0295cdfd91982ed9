//! The built-in plugins' component bytes, compiled from `plugins/*` by `build.rs` and embedded in
//! the binary. `builtin:<name>` in a config resolves here; everything after that is the same path
//! a third-party `.wasm` file takes.
//!
//! The bytes (~8 MiB for the 21 built-ins) are one constant, apart from the names and digests:
//! each built-in's own `include_bytes!` put its name and digest between two plugins' bytes, and
//! reading the names to find one faulted in the bytes around them (the kernel maps up to 64 KiB
//! around a fault), 1.7-3.6 MiB of them resident after every start.

use std::ops::Range;

/// One built-in plugin as the binary carries it.
#[derive(Debug)]
pub struct Builtin {
    /// Its name after `builtin:`.
    pub name: &'static str,
    /// Where its bytes are in `BUNDLE`.
    at: Range<usize>,
    /// The hex SHA-256 of its bytes, computed by `build.rs`: the compile cache's key, so a start
    /// with a warm cache never reads the bytes themselves (reading them kept them resident in
    /// the gateway's memory).
    pub sha256: &'static str,
}

impl Builtin {
    /// Its component bytes.
    pub fn bytes(&self) -> &'static [u8] {
        // `build.rs` made the ranges with the bundle; an empty slice would fail to load plainly.
        BUNDLE.get(self.at.clone()).unwrap_or_default()
    }
}

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Built-in plugin `name`.
pub fn get(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The component bytes of built-in plugin `name`.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    get(name).map(Builtin::bytes)
}

/// Names of every built-in plugin.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}
