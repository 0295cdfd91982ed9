//! `airlock:plugin/log`: a plugin's log lines, into the gateway's log under the plugin's name.

use super::HostState;
use super::airlock::plugin::log::{Host, Level};

/// Longest log message kept from a plugin; longer ones are cut (a plugin must not flood the log).
const MAX_MESSAGE_BYTES: usize = 4096;

impl Host for HostState {
    fn write(&mut self, level: Level, message: String) {
        let message = truncate(&message, MAX_MESSAGE_BYTES);
        let plugin = &*self.plugin;
        let request_id = self.request.as_ref().map(|r| &*r.request_id).unwrap_or("");
        match level {
            Level::Trace => tracing::trace!(target: "airlock::plugin", plugin, request_id, "{message}"),
            Level::Debug => tracing::debug!(target: "airlock::plugin", plugin, request_id, "{message}"),
            Level::Info => tracing::info!(target: "airlock::plugin", plugin, request_id, "{message}"),
            Level::Warn => tracing::warn!(target: "airlock::plugin", plugin, request_id, "{message}"),
            Level::Error => tracing::error!(target: "airlock::plugin", plugin, request_id, "{message}"),
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("abc", 10), "abc");
    }
}
