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

/// A warning repeated while something stays broken (a backend down fails every request), logged
/// at most once per `interval_ms` per instance; the repeats in between go out at debug level.
/// An instance serves one request at a time, so a `Cell` is enough.
#[derive(Debug)]
pub struct Throttled {
    interval_ms: u64,
    last_warned_ms: std::cell::Cell<Option<u64>>,
}

impl Throttled {
    /// At most one warning per `interval_ms`.
    pub const fn new(interval_ms: u64) -> Self {
        Self { interval_ms, last_warned_ms: std::cell::Cell::new(None) }
    }

    /// Logs `message` as a warning, or at debug level if one went out less than the interval ago.
    pub fn warn(&self, message: impl AsRef<str>) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let level = if self.warns_at(now_ms) { Level::Warn } else { Level::Debug };
        write(level, message);
    }

    /// Whether a repeat at `now_ms` is a warning (and the interval starts again from it). A clock
    /// that went back warns rather than staying quiet.
    pub fn warns_at(&self, now_ms: u64) -> bool {
        match self.last_warned_ms.get() {
            Some(last) if now_ms >= last && now_ms - last < self.interval_ms => false,
            _ => {
                self.last_warned_ms.set(Some(now_ms));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_throttled_warning_goes_out_once_per_interval() {
        let log = super::Throttled::new(10_000);
        assert!(log.warns_at(1_000));
        assert!(!log.warns_at(1_001) && !log.warns_at(10_999));
        assert!(log.warns_at(11_000));
        assert!(log.warns_at(5_000), "a clock that went back warns rather than staying quiet");
    }

    /// Natively a log line goes to stderr: before, reaching the gateway's import aborted the
    /// whole test process.
    #[test]
    fn logging_natively_does_not_abort() {
        super::warn("a warning from a unit test");
        super::write(super::Level::Error, String::from("an error line"));
    }
}
