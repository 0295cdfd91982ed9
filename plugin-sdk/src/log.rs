//! Writing to the gateway's log.
//!
//! Lines carry the plugin's name and the request id, so messages need neither. Logging is always
//! allowed; each call copies one string to the gateway. Natively (a plugin's `cargo test`) lines
//! go to stderr, so code that logs can be unit-tested.
//!
//! ```no_run
//! use airlock_sdk::log;
//!
//! log::info("cache miss");
//! log::warn(format!("unknown tenant `{}`, using the default", "acme"));
//! ```

#[cfg(target_arch = "wasm32")]
use crate::bindings::airlock::plugin::log as raw;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing, usually off.
    Trace,
    /// Diagnostics for plugin authors.
    Debug,
    /// Normal operational events.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

/// Writes one line to the gateway log at `level`.
///
/// Natively (not wasm32: a plugin's unit tests, which have no gateway to log to) the line goes
/// to stderr instead (`[Warn] message`), so `cargo test` of a `Plugin::new` that logs (via
/// [`configure`](crate::configure)) runs.
pub fn write(level: Level, message: impl AsRef<str>) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        eprintln!("[{level:?}] {}", message.as_ref());
    }
    #[cfg(target_arch = "wasm32")]
    write_to_gateway(level, message.as_ref());
}

#[cfg(target_arch = "wasm32")]
fn write_to_gateway(level: Level, message: &str) {
    let level = match level {
        Level::Trace => raw::Level::Trace,
        Level::Debug => raw::Level::Debug,
        Level::Info => raw::Level::Info,
        Level::Warn => raw::Level::Warn,
        Level::Error => raw::Level::Error,
    };
    raw::write(level, message);
}

/// Writes a [`Level::Trace`] line: very detailed tracing, usually off.
pub fn trace(message: impl AsRef<str>) {
    write(Level::Trace, message);
}

/// Writes a [`Level::Debug`] line: diagnostics for plugin authors.
pub fn debug(message: impl AsRef<str>) {
    write(Level::Debug, message);
}

/// Writes a [`Level::Info`] line: a normal operational event.
pub fn info(message: impl AsRef<str>) {
    write(Level::Info, message);
}

/// Writes a [`Level::Warn`] line: something unexpected that the plugin handled.
pub fn warn(message: impl AsRef<str>) {
    write(Level::Warn, message);
}

/// Writes a [`Level::Error`] line: something failed.
pub fn error(message: impl AsRef<str>) {
    write(Level::Error, message);
}

#[cfg(test)]
mod tests {
    /// Natively a log line goes to stderr: before, reaching the gateway's import aborted the
    /// whole test process.
    #[test]
    fn logging_natively_does_not_abort() {
        super::warn("a warning from a unit test");
        super::write(super::Level::Error, String::from("an error line"));
    }
}
