//! [`Action`]: what a request phase tells the gateway to do next.

use serde::Serialize;

use crate::bindings::airlock::plugin::types as raw;

/// What the gateway does after [`Plugin::on_request`](crate::Plugin::on_request) returns.
///
/// ```
/// use airlock_sdk::{Action, ResponseInit};
///
/// let go_on = Action::Continue;
/// let not_found = Action::text(404, "no such thing\n");
/// let moved = Action::Respond(ResponseInit::new(308).header("location", "/v2/"));
/// let wait = Action::Delay(250);
/// # let _ = (go_on, not_found, moved, wait);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Action {
    /// Go on to the next plugin's request phase, then to the upstream. Changes made to the request
    /// are kept.
    #[default]
    Continue,
    /// Answer the client now with this response. Later request phases and the upstream are
    /// skipped; the response phases of this plugin and of the plugins that ran before it still see
    /// the response.
    Respond(ResponseInit),
    /// Wait this many milliseconds (asynchronously: no gateway thread is held), then continue with
    /// the next plugin. For throttling; the gateway caps the wait at the route's request timeout.
    Delay(u32),
    /// Wait for one of a limited number of concurrency slots, then continue holding it until the
    /// response has been sent (or the client went away); refused with [`SlotRequest::refuse`] when
    /// the queue is full or the wait too long.
    AcquireSlot(SlotRequest),
}

/// A concurrency slot to wait for: see [`Action::AcquireSlot`].
///
/// ```
/// use airlock_sdk::{Action, ResponseInit, SlotRequest};
///
/// // At most 4 requests per route in flight, 8 more waiting up to 2 s each.
/// let busy = ResponseInit::new(503).header("retry-after", "1");
/// let action = Action::AcquireSlot(SlotRequest::new("route=orders", 4, busy).queue(8).max_wait_ms(2000));
/// # let _ = action;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// Requests of this chain entry with the same key share `limit` slots (per gateway process).
    pub key: String,
    /// Most requests with this key in flight at once (at least 1).
    pub limit: u32,
    /// Most requests waiting for a slot, served in arrival order; one more is refused at once.
    pub queue: u32,
    /// Longest wait for a slot, in ms (capped by the gateway at the route's request timeout).
    pub max_wait_ms: u32,
    /// A delay to wait before queueing (a rate throttle's), in ms.
    pub delay_ms: u32,
    /// The answer when the request is refused.
    pub refuse: ResponseInit,
}

impl SlotRequest {
    /// `limit` slots for `key`, no queue, no wait, refused with `refuse`.
    pub fn new(key: impl Into<String>, limit: u32, refuse: ResponseInit) -> Self {
        Self { key: key.into(), limit, queue: 0, max_wait_ms: 0, delay_ms: 0, refuse }
    }

    /// Lets up to `queue` requests wait for a slot.
    pub fn queue(mut self, queue: u32) -> Self {
        self.queue = queue;
        self
    }

    /// Waits at most `ms` for a slot.
    pub fn max_wait_ms(mut self, ms: u32) -> Self {
        self.max_wait_ms = ms;
        self
    }

    /// Waits `ms` before queueing.
    pub fn delay_ms(mut self, ms: u32) -> Self {
        self.delay_ms = ms;
        self
    }
}

impl Action {
    /// Answers now with `status`, no headers and an empty body.
    pub fn respond(status: u16) -> Self {
        Action::Respond(ResponseInit::new(status))
    }

    /// Answers now with `status` and a text body (`content-type: text/plain; charset=utf-8`).
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Action::Respond(ResponseInit::new(status).header("content-type", "text/plain; charset=utf-8").body(body.into()))
    }

    /// Answers now with `status` and `value` serialized as a JSON body
    /// (`content-type: application/json`).
    ///
    /// If `value` cannot be serialized (a map with non-string keys, a failing `Serialize` impl),
    /// the error is logged and the answer is a 500 with a short text body instead.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                Action::Respond(ResponseInit::new(status).header("content-type", "application/json").body(body))
            }
            Err(e) => {
                crate::log::error(format!("cannot serialize the JSON response: {e}"));
                Action::text(500, "internal error: unserializable response\n")
            }
        }
    }

    /// Answers now with an error in the gateway's own format (see [`error_json`]), so clients
    /// see one error shape whether the gateway or a plugin refused the request.
    pub fn error(status: u16, code: &str, message: &str, request_id: &str) -> Self {
        Action::Respond(ResponseInit::error(status, code, message, request_id))
    }

    pub(crate) fn into_raw(self) -> raw::Action {
        match self {
            Action::Continue => raw::Action::Continue,
            Action::Respond(init) => raw::Action::Respond(init.into_raw()),
            Action::Delay(ms) => raw::Action::Delay(ms),
            Action::AcquireSlot(slot) => raw::Action::AcquireSlot(raw::SlotRequest {
                key: slot.key,
                limit: slot.limit,
                queue: slot.queue,
                max_wait_ms: slot.max_wait_ms,
                delay_ms: slot.delay_ms,
                refuse: slot.refuse.into_raw(),
            }),
        }
    }
}

/// The gateway's error body: `{"status", "error", "message", "request_id"}`, where `error` is a
/// short snake_case code (`invalid_json`) and `message` says what is wrong.
///
/// ```
/// let body = airlock_sdk::error_json(400, "invalid_json", "the body is not JSON", "req-1");
/// assert_eq!(body["error"], "invalid_json");
/// assert_eq!(body["request_id"], "req-1");
/// ```
pub fn error_json(status: u16, code: &str, message: &str, request_id: &str) -> serde_json::Value {
    serde_json::json!({"status": status, "error": code, "message": message, "request_id": request_id})
}

impl From<ResponseInit> for Action {
    /// [`Action::Respond`] with this response.
    fn from(init: ResponseInit) -> Self {
        Action::Respond(init)
    }
}

/// A complete response produced by a plugin instead of the upstream: [`Action::Respond`].
///
/// Built with [`ResponseInit::new`] and the chaining [`header`](ResponseInit::header) and
/// [`body`](ResponseInit::body) methods:
///
/// ```
/// use airlock_sdk::{Action, ResponseInit};
///
/// let action: Action = ResponseInit::new(429)
///     .header("retry-after", "1")
///     .header("content-type", "text/plain")
///     .body("slow down\n")
///     .into();
/// # let _ = action;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInit {
    /// HTTP status code, 200-599. Any other (a 1xx is no final answer) is the plugin's failure,
    /// handled by the chain entry's `failure` policy: see [`ResponseInit::new`].
    pub status: u16,
    /// Headers in order, as (name, raw value bytes). `content-length` is set by the gateway.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes (may be empty).
    pub body: Vec<u8>,
}

impl ResponseInit {
    /// A response with `status`, no headers and an empty body.
    ///
    /// `status` must be 200-599. Any other, 1xx included, is the plugin's failure, like a trap:
    /// logged, counted (`kind="invalid_status"`) and handled by the chain entry's `failure`
    /// policy. Failing closed (the default) the client gets the gateway's own 500
    /// `plugin_failed`; with `failure = "open"` the entry is skipped: the request goes on to the
    /// next plugin, what the call changed undone. Either way this answer's headers and body are
    /// never sent. The same holds for a [`SlotRequest::refuse`] answer.
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new() }
    }

    /// Adds a header (keeping any earlier value of the same name).
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// An error in the gateway's own format ([`error_json`], `content-type: application/json`),
    /// to which headers can still be added (`Retry-After` on a 429, say): what
    /// [`Action::error`] answers.
    ///
    /// ```
    /// let refusal = airlock_sdk::ResponseInit::error(429, "rate_limited", "too many requests", "req-1")
    ///     .header("retry-after", "3");
    /// assert_eq!(refusal.status, 429);
    /// assert!(refusal.body.starts_with(br#"{"status":429,"error":"rate_limited""#));
    /// ```
    pub fn error(status: u16, code: &str, message: &str, request_id: &str) -> Self {
        // A map of strings and a number: serializing it cannot fail.
        let body = serde_json::to_vec(&error_json(status, code, message, request_id)).unwrap_or_default();
        Self::new(status).header("content-type", "application/json").body(body)
    }

    pub(crate) fn into_raw(self) -> raw::ResponseInit {
        raw::ResponseInit {
            status: self.status,
            headers: self.headers.into_iter().map(|(name, value)| raw::HeaderResult { name, value }).collect(),
            body: self.body,
        }
    }
}
