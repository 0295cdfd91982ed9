//! The built-in plugins' component bytes, compiled from `plugins/*` by `build.rs` and embedded in
//! the binary. `builtin:<name>` in a config resolves here; everything after that is the same path
//! a third-party `.wasm` file takes.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The component bytes of built-in plugin `name`.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Names of every built-in plugin.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(n, _)| *n).collect()
}
