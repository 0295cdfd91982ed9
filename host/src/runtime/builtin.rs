//! The built-in plugins' component bytes, compiled from `plugins/*` by `build.rs` and embedded in
//! the binary. `builtin:<name>` in a config resolves here; everything after that is the same path
//! a third-party `.wasm` file takes.

/// One built-in plugin as the binary carries it.
#[derive(Debug)]
pub struct Builtin {
    /// Its name after `builtin:`.
    pub name: &'static str,
    /// Its component bytes.
    pub bytes: &'static [u8],
    /// The hex SHA-256 of `bytes`, computed by `build.rs`: the compile cache's key, so a start
    /// with a warm cache never reads the bytes themselves (the 21 built-ins are ~10 MiB of the
    /// binary, which reading kept resident in the gateway's memory).
    pub sha256: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Built-in plugin `name`.
pub fn get(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The component bytes of built-in plugin `name`.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    get(name).map(|b| b.bytes)
}

/// Names of every built-in plugin.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}
