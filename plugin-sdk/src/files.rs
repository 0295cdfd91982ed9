//! Files from the directory the operator granted the plugin (capability `files`), read-only.
//!
//! The gateway preopens the granted directory as `/`: plain `std::fs` works on it, and these
//! helpers add what plugins keep needing, a path relative to that root and an error that tells the
//! operator what to check. A plugin that reads files imports `wasi:filesystem`; the gateway loads a
//! third-party one only with `capabilities = ["files"]` and `files = { dir = "..." }`.
//!
//! ```no_run
//! // Config: `key = "file:keys/service.key"` keeps the secret out of airlock.toml.
//! let key = airlock_sdk::files::secret("file:keys/service.key")?;
//! # Ok::<(), String>(())
//! ```

use std::borrow::Cow;

/// Reads a UTF-8 file from the granted directory; `path` may be relative to it or start with `/`.
pub fn read_to_string(path: &str) -> Result<String, String> {
    let full = if path.starts_with('/') { Cow::Borrowed(path) } else { Cow::Owned(format!("/{path}")) };
    std::fs::read_to_string(full.as_ref())
        .map_err(|e| format!("cannot read `{path}` ({e}); is it inside the directory granted by `files`?"))
}

/// A secret as configured: `file:<path>` is the content of that file in the granted directory
/// (without its trailing newline), anything else is the value itself.
pub fn secret(value: &str) -> Result<Cow<'_, str>, String> {
    match value.strip_prefix("file:") {
        Some(path) => Ok(Cow::Owned(read_to_string(path)?.trim_end_matches(['\r', '\n']).to_owned())),
        None => Ok(Cow::Borrowed(value)),
    }
}
