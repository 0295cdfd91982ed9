//! Logging state backend failures without a line per request: while Redis is down every request
//! fails open, and each would otherwise log the same warning.

use std::cell::Cell;

/// Least time between two warnings from one instance, in milliseconds (the gateway's own
/// "state backend unavailable" warning is limited the same way, per process).
pub const WARN_INTERVAL_MS: u64 = 10_000;

/// When an instance last warned. An instance serves one request at a time: a `Cell` is enough.
#[derive(Debug, Default)]
pub struct OutageLog {
    last_warned_ms: Cell<Option<u64>>,
}

impl OutageLog {
    /// Whether a failure at `now_ms` is logged as a warning (else at debug level).
    pub fn warn_now(&self, now_ms: u64) -> bool {
        match self.last_warned_ms.get() {
            Some(last) if now_ms.saturating_sub(last) < WARN_INTERVAL_MS && now_ms >= last => false,
            _ => {
                self.last_warned_ms.set(Some(now_ms));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_interval() {
        let log = OutageLog::default();
        assert!(log.warn_now(1_000));
        assert!(!log.warn_now(1_001));
        assert!(!log.warn_now(10_999));
        assert!(log.warn_now(11_000));
        assert!(log.warn_now(5_000), "a clock that went back warns rather than staying quiet");
    }
}
