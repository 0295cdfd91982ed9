//! `airlock:plugin/log`: a plugin's log lines, into the gateway's log under the plugin's name,
//! and the per-call budget that bounds every line a plugin causes.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::HostState;
use super::airlock::plugin::log::{Host, Level};

/// Longest log message kept from a plugin; longer ones are cut (a plugin must not flood the log).
/// Its refusal of a config is cut the same.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Most log lines one phase call may cause: its own (`log.write`, stdout, stderr) and the
/// gateway's warnings about what it asked for (an invalid header, say). Past it the call's
/// lines are dropped, with one line saying so: a plugin logging in a loop within its CPU
/// deadline would otherwise write tens of thousands of lines per request.
pub const MAX_LOG_LINES_PER_CALL: u32 = 64;

/// A plugin's warning or error repeated word for word within this long of its first showing is
/// counted, not logged: a plugin warning about one outage in every call, in every instance
/// (each instance throttles only itself), would otherwise write a line per request.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// Most (plugin, text) pairs remembered for [`REPEAT_WINDOW`]; past it, those whose window has
/// ended are forgotten, and if none has, all are (a plugin writing ever new texts is bounded by
/// its per-call budget anyway).
const MAX_REMEMBERED_REPEATS: usize = 1024;

/// The warnings and errors plugins wrote lately, by a hash of plugin and text: when each was
/// last logged, and how many repeats were dropped since.
static RECENT_WARNINGS: LazyLock<Mutex<HashMap<u64, Repeats>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// One remembered warning (see [`RECENT_WARNINGS`]).
#[derive(Debug, Clone, Copy)]
struct Repeats {
    logged_at: Instant,
    dropped: u64,
}

/// Whether a plugin's warning or error `key` (its plugin and text, hashed) is logged at `now`:
/// `None` drops it as a repeat within [`REPEAT_WINDOW`]; `Some(n)` logs it, `n` repeats having
/// been dropped since it was last logged.
fn admit_repeat(recent: &mut HashMap<u64, Repeats>, key: u64, now: Instant) -> Option<u64> {
    if let Some(seen) = recent.get_mut(&key) {
        if now.saturating_duration_since(seen.logged_at) < REPEAT_WINDOW {
            seen.dropped += 1;
            return None;
        }
        let dropped = seen.dropped;
        *seen = Repeats { logged_at: now, dropped: 0 };
        return Some(dropped);
    }
    if recent.len() >= MAX_REMEMBERED_REPEATS {
        recent.retain(|_, seen| now.saturating_duration_since(seen.logged_at) < REPEAT_WINDOW);
        if recent.len() >= MAX_REMEMBERED_REPEATS {
            recent.clear();
        }
    }
    recent.insert(key, Repeats { logged_at: now, dropped: 0 });
    Some(0)
}

/// How much of the end of a call's stderr is kept for its failure report (a Rust panic's
/// location and message).
const MAX_STDERR_TAIL_BYTES: usize = 400;

/// The hint Rust's panic handler prints: nothing a plugin's operator or author can act on (a
/// plugin has no environment to set it in), so it is neither logged nor kept.
const BACKTRACE_HINT: &str = "note: run with `RUST_BACKTRACE=";

/// The log lines the current call of one instance may still cause, and the request the call
/// serves (every line names it). Shared with the instance's stdout and stderr streams, which
/// live in the WASI context, not the host state.
#[derive(Debug)]
pub struct LogBudget {
    plugin: Arc<str>,
    left: AtomicU32,
    request_id: Mutex<Option<Arc<str>>>,
    /// The end of what the current call wrote to stderr, joined into one line: a trap's report
    /// carries it, so a panic's message reaches the error and not only the log.
    stderr_tail: Mutex<String>,
    /// Whether `stderr_tail` holds anything (checked per call without the lock).
    stderr_written: AtomicBool,
    /// What was written to stdout and stderr after their last newline: Rust's `eprintln!`
    /// writes its pieces one at a time to the unbuffered stderr, and each write made a log line
    /// of its own (`stderr ` and `0`). Completed by a later write, or let out as a line of its
    /// own when the next call begins ([`LogBudget::reset`]).
    partial: Mutex<[String; 2]>,
    /// Whether `partial` holds anything (checked per call without the lock).
    partial_written: AtomicBool,
}

impl LogBudget {
    /// A full budget for the instances of `plugin`.
    pub fn new(plugin: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            plugin,
            left: AtomicU32::new(MAX_LOG_LINES_PER_CALL),
            request_id: Mutex::new(None),
            stderr_tail: Mutex::new(String::new()),
            stderr_written: AtomicBool::new(false),
            partial: Mutex::new([String::new(), String::new()]),
            partial_written: AtomicBool::new(false),
        })
    }

    /// Joins `text`, written to stream `index` (0: stdout, 1: stderr), to what the stream wrote
    /// since its last newline, and returns the lines now complete, to be logged; the rest waits
    /// for its newline, up to `max` bytes (past them, it is a line all the same).
    pub fn complete_lines(&self, index: usize, text: &str, max: usize) -> String {
        let mut partial = self.partial.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(pending) = partial.get_mut(index) else { return String::new() };
        pending.push_str(text);
        let done = match pending.rfind('\n') {
            Some(end) => {
                let rest = pending.split_off(end + 1);
                std::mem::replace(pending, rest)
            }
            None if pending.len() > max => std::mem::take(pending),
            None => String::new(),
        };
        self.partial_written.store(partial.iter().any(|p| !p.is_empty()), Ordering::Relaxed);
        done
    }

    /// Logs `line`, written to `stream`, as the current call's: stdout is what a plugin prints
    /// on purpose (INFO); stderr carries panics and errors (WARN).
    pub fn stdio_line(&self, stream: &'static str, line: &str) {
        let request_id = self.request_id();
        let line = one_line(line);
        if stream == "stdout" {
            tracing::info!(target: "airlock::plugin", plugin = &*self.plugin, request_id = request_id.as_deref(), stream, "{line}");
        } else {
            tracing::warn!(target: "airlock::plugin", plugin = &*self.plugin, request_id = request_id.as_deref(), stream, "{line}");
        }
    }

    /// What the streams wrote after their last newline, taken: the end of a call's output.
    fn take_partial(&self) -> [String; 2] {
        if !self.partial_written.swap(false, Ordering::Relaxed) {
            return Default::default();
        }
        std::mem::take(&mut *self.partial.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The plugin's name, for the lines themselves.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The id of the request the current call serves; none outside a request (in `configure`),
    /// where a line then carries no `request_id` field rather than an empty one.
    pub fn request_id(&self) -> Option<Arc<str>> {
        self.request_id.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Fills the budget again: a call for the request `request_id` begins.
    pub fn reset(&self, request_id: Option<Arc<str>>) {
        // The last call's output without a newline at its end, logged as that call's.
        let [stdout, stderr] = self.take_partial();
        for (stream, line) in [("stdout", stdout), ("stderr", stderr)] {
            if !line.trim().is_empty() && self.take() {
                self.stdio_line(stream, line.trim_end());
            }
        }
        self.left.store(MAX_LOG_LINES_PER_CALL, Ordering::Relaxed);
        *self.request_id.lock().unwrap_or_else(PoisonError::into_inner) = request_id;
        // A plain load per call: the flag is only ever set during a call of this instance.
        if self.stderr_written.load(Ordering::Relaxed) {
            self.stderr_written.store(false, Ordering::Relaxed);
            self.stderr_tail.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    /// Keeps a line the current call wrote to stderr (see `stderr_tail`); false for the panic
    /// handler's backtrace hint, which is dropped.
    pub fn note_stderr(&self, line: &str) -> bool {
        let line = line.trim();
        if line.starts_with(BACKTRACE_HINT) {
            return false;
        }
        self.stderr_written.store(true, Ordering::Relaxed);
        let mut tail = self.stderr_tail.lock().unwrap_or_else(PoisonError::into_inner);
        if !tail.is_empty() {
            tail.push(' ');
        }
        tail.push_str(line);
        if tail.len() > MAX_STDERR_TAIL_BYTES {
            let mut cut = tail.len() - MAX_STDERR_TAIL_BYTES;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail.drain(..cut);
        }
        true
    }

    /// The end of what the current call wrote to stderr, if anything.
    pub fn stderr_tail(&self) -> Option<String> {
        if !self.stderr_written.load(Ordering::Relaxed) {
            return None;
        }
        let tail = self.stderr_tail.lock().unwrap_or_else(PoisonError::into_inner);
        (!tail.is_empty()).then(|| tail.clone())
    }

    /// Takes one line from the budget: false once it is spent (the line that spends it says
    /// that the rest of the call's lines are dropped).
    pub fn take(&self) -> bool {
        match self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1)) {
            Ok(1) => {
                tracing::warn!(
                    plugin = &*self.plugin,
                    request_id = self.request_id().as_deref(),
                    limit = MAX_LOG_LINES_PER_CALL,
                    "this plugin call reached its log line limit: its further lines are dropped"
                );
                false
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }
}

/// A warning about what a plugin asked for, logged with its name if its call's
/// [`LogBudget`] allows: `plugin_warn!(budget, field = value, "message")`.
macro_rules! plugin_warn {
    ($budget:expr, $($rest:tt)+) => {{
        let budget: &$crate::runtime::host::log::LogBudget = $budget;
        if budget.take() {
            tracing::warn!(plugin = budget.plugin(), request_id = budget.request_id().as_deref(), $($rest)+);
        }
    }};
}
pub(crate) use plugin_warn;

impl Host for HostState {
    fn write(&mut self, level: Level, message: String) {
        // Lines below the log level are free: they cost nothing and spend no budget.
        let enabled = match level {
            Level::Trace => tracing::enabled!(target: "airlock::plugin", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "airlock::plugin", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "airlock::plugin", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "airlock::plugin", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "airlock::plugin", tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        let plugin = &*self.plugin;
        // Warnings and errors are what operators are paged on: one repeated by every call is
        // logged once per window, with the count of those dropped (never spending the budget).
        let dropped_repeats = match level {
            Level::Warn | Level::Error => {
                let mut hasher = DefaultHasher::new();
                (plugin, message.as_str()).hash(&mut hasher);
                let mut recent = RECENT_WARNINGS.lock().unwrap_or_else(PoisonError::into_inner);
                match admit_repeat(&mut recent, hasher.finish(), Instant::now()) {
                    Some(dropped) => dropped,
                    None => return,
                }
            }
            _ => 0,
        };
        if !self.log.take() {
            return;
        }
        let message = one_line(truncate(&message, MAX_MESSAGE_BYTES));
        let request_id = self.request.as_ref().map(|r| &*r.request_id);
        match (level, dropped_repeats) {
            (Level::Trace, _) => tracing::trace!(target: "airlock::plugin", plugin, request_id, "{message}"),
            (Level::Debug, _) => tracing::debug!(target: "airlock::plugin", plugin, request_id, "{message}"),
            (Level::Info, _) => tracing::info!(target: "airlock::plugin", plugin, request_id, "{message}"),
            (Level::Warn, 0) => tracing::warn!(target: "airlock::plugin", plugin, request_id, "{message}"),
            (Level::Warn, n) => tracing::warn!(target: "airlock::plugin", plugin, request_id, repeats_dropped = n, "{message}"),
            (Level::Error, 0) => tracing::error!(target: "airlock::plugin", plugin, request_id, "{message}"),
            (Level::Error, n) => tracing::error!(target: "airlock::plugin", plugin, request_id, repeats_dropped = n, "{message}"),
        }
    }
}

/// Whether `c`, shown as it is, could break a log line or change how the rest of it reads: a
/// control character but tab (C1's U+0085 included), the Unicode line and paragraph separators
/// (U+2028, U+2029: lines to many viewers and to Python's `splitlines`), and the bidirectional
/// controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C), which reorder how a
/// terminal or log viewer shows the rest of the line ("Trojan Source").
pub fn breaks_or_reorders(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// `s` as one log line: each character that [`breaks_or_reorders`] it a plugin writes is shown
/// escaped (`\n`, `\u{2028}`), so its text cannot start a line of its own that reads as the
/// gateway's, nor reorder the line.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(breaks_or_reorders) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if breaks_or_reorders(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A plugin's value (a header name, a path, a query it set) as the gateway's warnings about it
/// show it: its first [`MAX_SHOWN_BYTES`]. The warning is about the value, and a value of
/// megabytes would make each line megabytes (the host's formatting, which no CPU deadline
/// charges); in a field, `tracing` escapes its line breaks.
pub fn shown(value: &str) -> &str {
    truncate(value, MAX_SHOWN_BYTES)
}

/// How much of a plugin's value a warning about it shows ([`shown`]).
pub const MAX_SHOWN_BYTES: usize = 256;

/// `s` cut to at most `max` bytes, at a character boundary.
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
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use super::{LogBudget, MAX_REMEMBERED_REPEATS, admit_repeat};

    /// `eprintln!("stderr {i}")` writes `stderr `, `0` and a newline one at a time: one line.
    #[test]
    fn the_pieces_of_a_line_make_one_line() {
        let log = LogBudget::new("p".into());
        assert_eq!(log.complete_lines(1, "stderr ", 4096), "");
        assert_eq!(log.complete_lines(1, "0", 4096), "");
        assert_eq!(log.complete_lines(0, "out", 4096), "", "each stream its own");
        assert_eq!(log.complete_lines(1, "\nnext ", 4096), "stderr 0\n");
        assert_eq!(log.complete_lines(1, "a\nb\nc", 4096), "next a\nb\n");
        // Past `max` without a newline: a line all the same.
        assert_eq!(log.complete_lines(0, "put", 5), "output");
        // What is left when the next call begins is taken (and logged as the last call's).
        assert_eq!(log.take_partial(), [String::new(), "c".to_owned()]);
        assert_eq!(log.take_partial(), [String::new(), String::new()]);
    }

    #[test]
    fn a_repeated_warning_is_logged_once_per_window_with_the_count_dropped() {
        let mut recent = HashMap::new();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(admit_repeat(&mut recent, 1, at(0)), Some(0), "the first is logged");
        assert_eq!(admit_repeat(&mut recent, 1, at(10)), None);
        assert_eq!(admit_repeat(&mut recent, 1, at(9_999)), None);
        assert_eq!(admit_repeat(&mut recent, 2, at(20)), Some(0), "another text is its own");
        assert_eq!(admit_repeat(&mut recent, 1, at(10_000)), Some(2), "after the window, logged with the two dropped");
        assert_eq!(admit_repeat(&mut recent, 1, at(10_001)), None);
        assert_eq!(admit_repeat(&mut recent, 1, at(30_000)), Some(1));
        assert_eq!(admit_repeat(&mut recent, 1, at(40_001)), Some(0));
    }

    #[test]
    fn remembered_warnings_are_bounded() {
        let mut recent = HashMap::new();
        let now = Instant::now();
        for key in 0..(MAX_REMEMBERED_REPEATS as u64 * 3) {
            assert_eq!(admit_repeat(&mut recent, key, now), Some(0));
            assert!(recent.len() <= MAX_REMEMBERED_REPEATS);
        }
    }
    #[test]
    fn a_call_s_log_budget_is_spent_then_refilled() {
        let budget = super::LogBudget::new("p".into());
        let taken = (0..super::MAX_LOG_LINES_PER_CALL * 2).filter(|_| budget.take()).count();
        assert_eq!(taken, super::MAX_LOG_LINES_PER_CALL as usize - 1, "the last place says the rest are dropped");
        assert_eq!(budget.request_id(), None, "no request yet");
        budget.reset(Some("req-7".into()));
        assert!(budget.take());
        assert_eq!(budget.request_id().as_deref(), Some("req-7"), "the lines of the next call name its request");
    }

    #[test]
    fn plugin_text_stays_on_one_line() {
        assert_eq!(super::one_line("plain\ttext é"), "plain\ttext é");
        let forged = super::one_line("ok\n2026-12-03T12:00:00Z  INFO airlock: admin token accepted\r\x1b[2K");
        assert_eq!(forged, "ok\\n2026-12-03T12:00:00Z  INFO airlock: admin token accepted\\r\\u{1b}[2K");
        assert!(!forged.contains('\n') && !forged.contains('\r'));
        assert_eq!(super::one_line("user \u{202e}nimda"), "user \\u{202e}nimda", "a bidi override is shown, not obeyed");
    }

    #[test]
    fn a_calls_stderr_tail_is_kept_until_the_next_call() {
        let budget = super::LogBudget::new("p".into());
        assert_eq!(budget.stderr_tail(), None);
        assert!(budget.note_stderr("thread '<unnamed>' panicked at src/lib.rs:5:9:"));
        assert!(budget.note_stderr("boom in new\n"));
        assert!(!budget.note_stderr("note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"));
        assert_eq!(budget.stderr_tail().as_deref(), Some("thread '<unnamed>' panicked at src/lib.rs:5:9: boom in new"));
        budget.note_stderr(&"x".repeat(1000));
        assert_eq!(budget.stderr_tail().map(|t| t.len()), Some(super::MAX_STDERR_TAIL_BYTES), "the end is kept, bounded");
        budget.reset(None);
        assert_eq!(budget.stderr_tail(), None, "a new call starts empty");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("abc", 10), "abc");
    }
}
