//! The request and response as the plugin chain sees and changes them.
//!
//! The proxy builds a [`RequestState`] from the client's request, moves it through the chain (each
//! phase call moves it into the plugin's store and back, without copying), then builds the upstream
//! request from it. [`ResponseState`] does the same on the way back.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{Entry, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

/// Values captured from the route's path pattern (`/users/{id}` gives `id`).
pub type RouteParams = Vec<(String, String)>;

/// The per-request context map shared along the chain (`consumer`, `consumer.groups`, ...).
/// A small vector: a handful of keys, looked up linearly, cheaper than hashing. Held outside
/// any plugin's memory cap, so bounded itself: [`Context::MAX_KEYS`] keys, [`Context::MAX_BYTES`]
/// of keys and values.
#[derive(Debug, Default, Clone)]
pub struct Context {
    entries: Vec<(String, String)>,
    bytes: usize,
}

impl Context {
    /// Most keys one request's context holds.
    pub const MAX_KEYS: usize = 64;
    /// Most bytes of keys and values one request's context holds.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`, replacing an earlier value. `Err` with the key handed back (for the
    /// warning to name it) and nothing changed when that would take the context past
    /// [`Context::MAX_KEYS`] or [`Context::MAX_BYTES`].
    pub fn set(&mut self, key: String, value: String) -> Result<(), String> {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => {
                let bytes = self.bytes - slot.1.len() + value.len();
                if bytes > Self::MAX_BYTES {
                    return Err(key);
                }
                self.bytes = bytes;
                slot.1 = value;
            }
            None => {
                let bytes = self.bytes + key.len() + value.len();
                if bytes > Self::MAX_BYTES || self.entries.len() >= Self::MAX_KEYS {
                    return Err(key);
                }
                self.bytes = bytes;
                self.entries.push((key, value));
            }
        }
        Ok(())
    }

    /// Removes `key` and its value, if set; the others keep their order.
    pub fn remove(&mut self, key: &str) {
        if let Some(at) = self.entries.iter().position(|(k, _)| k == key) {
            let (k, v) = self.entries.remove(at);
            self.bytes -= k.len() + v.len();
        }
    }

    /// Every key and value, in the order first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// How many header lines, and how many bytes of them, one side of an exchange may carry: the
/// gateway holds plugins' header changes to the same `[limits]` it holds clients and upstreams
/// to, so no plugin can build a request the upstream refuses or a response the client refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderBound {
    /// Most header lines (`limits.max_headers`, `limits.max_response_headers`).
    pub count: usize,
    /// Most bytes of header lines, each counted as name, value and four bytes of framing
    /// (`limits.max_header_bytes`, `limits.max_response_header_bytes`).
    pub bytes: usize,
}

impl HeaderBound {
    /// No bound at all: for the tools that run a plugin outside the gateway.
    pub const NONE: HeaderBound = HeaderBound { count: usize::MAX, bytes: usize::MAX };

    /// Whether `headers` stays within the bound once `value` is added under `name`, after every
    /// value of `name` is removed first when `replacing` (an insert rather than an append),
    /// counting the map afresh. The gateway writes through [`HeaderBound::write`]; the tests
    /// check it, and the tally, against this.
    #[cfg(test)]
    fn admits(&self, headers: &HeaderMap, name: &HeaderName, value: &HeaderValue, replacing: bool) -> bool {
        self.admit(&mut HeaderTally::default(), headers, name, value, replacing)
    }

    /// Whether `headers` stays within the bound once `value` is added under `name` (after every
    /// value of `name` goes, when `replacing`), as one of a run of writes to `headers`, counting
    /// the map's bytes once for the whole run: `tally` is counted at the run's first write and, when this one is
    /// admitted, moved on to the map as the write will leave it. So the caller makes every write
    /// admitted, and [`HeaderTally::forget`]s after any other change to the map.
    pub fn admit(&self, tally: &mut HeaderTally, headers: &HeaderMap, name: &HeaderName, value: &HeaderValue, replacing: bool) -> bool {
        let line = |v: &HeaderValue| line_bytes(name, v);
        let (gone_count, gone_bytes) = if replacing {
            headers.get_all(name).iter().fold((0, 0), |(n, b), v| (n + 1, b + line(v)))
        } else {
            (0, 0)
        };
        if headers.len() - gone_count >= self.count {
            return false;
        }
        // Counted only when the line count allows it: the common case is a short map.
        let before = *tally.bytes.get_or_insert_with(|| header_lines_bytes(headers));
        let after = before.saturating_sub(gone_bytes) + line(value);
        if after > self.bytes {
            return false;
        }
        tally.bytes = Some(after);
        true
    }

    /// Writes `value` under `name` if [`HeaderBound::admit`] admits it, and says whether it did:
    /// `replacing`, every earlier value of `name` goes (`HeaderMap::insert`); otherwise `value`
    /// comes after them (`HeaderMap::append`). A replacing write finds `name` in the map once, for
    /// both the lines it replaces and the write, where a check and then a write hashed it twice.
    pub fn write(&self, tally: &mut HeaderTally, headers: &mut HeaderMap, name: HeaderName, value: HeaderValue, replacing: bool) -> bool {
        if !replacing {
            if !self.admit(tally, headers, &name, &value, false) {
                return false;
            }
            headers.append(name, value);
            return true;
        }
        let (lines, line) = (headers.len(), line_bytes(&name, &value));
        // Counted before the entry holds the map (a refused write leaves it true).
        let before = *tally.bytes.get_or_insert_with(|| header_lines_bytes(headers));
        let (gone_count, gone_bytes, entry) = match headers.entry(name) {
            Entry::Occupied(entry) => {
                let (n, b) = entry.iter().fold((0, 0), |(n, b), v| (n + 1, b + line_bytes(entry.key(), v)));
                (n, b, Entry::Occupied(entry))
            }
            vacant => (0, 0, vacant),
        };
        let after = before.saturating_sub(gone_bytes) + line;
        if lines - gone_count >= self.count || after > self.bytes {
            return false;
        }
        match entry {
            Entry::Occupied(mut entry) => {
                entry.insert(value);
            }
            Entry::Vacant(entry) => {
                entry.insert(value);
            }
        }
        tally.bytes = Some(after);
        true
    }
}

/// The bytes of a header map's lines, as `[limits]` counts them, kept through a run of writes
/// to it ([`HeaderBound::admit`]): a plugin's answer of n headers, or a chain's response edits,
/// read the map once rather than once per header.
#[derive(Debug, Default)]
pub struct HeaderTally {
    /// `None` until the run's first write counts them.
    bytes: Option<usize>,
}

impl HeaderTally {
    /// Forgets the count after a change [`HeaderBound::admit`] did not see (a removal): the
    /// next write counts the map again.
    pub fn forget(&mut self) {
        self.bytes = None;
    }

    /// Removes every line of `name` from `headers` (one lookup, as `HeaderMap::remove`), the
    /// count kept true: moved on by the line when one went (the usual case), forgotten when
    /// several did (`remove` shows only the first), untouched when none did.
    pub fn remove(&mut self, headers: &mut HeaderMap, name: &HeaderName) {
        let lines = headers.len();
        let Some(first) = headers.remove(name) else { return };
        match &mut self.bytes {
            Some(bytes) if headers.len() + 1 == lines => *bytes = bytes.saturating_sub(line_bytes(name, &first)),
            _ => self.forget(),
        }
    }

    /// The count kept, if any: for the tests to hold against [`header_lines_bytes`].
    #[cfg(test)]
    pub fn counted(&self) -> Option<usize> {
        self.bytes
    }
}

/// Bytes of one header line: name, value, and four of framing (`: ` and CRLF).
fn line_bytes(name: &HeaderName, value: &HeaderValue) -> usize {
    name.as_str().len() + value.len() + 4
}

/// Bytes of every header line of `headers`, as `[limits]` counts them.
pub fn header_lines_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| line_bytes(name, value)).sum()
}

/// A status a plugin may give a response: a final one (200-599). A 1xx answers nothing: hyper
/// would send a 101 to an HTTP/1.1 client with no protocol behind it and reset an HTTP/2 stream;
/// a switch comes only from the upstream's own `101` (`proxy::upgrade`). Beyond 599 there is no
/// status class (RFC 9110 15): the gateway refuses one from an upstream too.
pub fn final_status(status: u16) -> Option<StatusCode> {
    StatusCode::from_u16(status).ok().filter(|s| (200..=599).contains(&s.as_u16()))
}

/// The header bounds of one request: what plugins may make of the request sent upstream and of
/// the response sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLimits {
    /// The request's headers (`limits.max_headers`, `limits.max_header_bytes`).
    pub request: HeaderBound,
    /// The response's headers (`limits.max_response_headers`, `limits.max_response_header_bytes`).
    pub response: HeaderBound,
}

impl HeaderLimits {
    /// No bounds: for the tools that run a plugin outside the gateway.
    pub const NONE: HeaderLimits = HeaderLimits { request: HeaderBound::NONE, response: HeaderBound::NONE };
}

/// Most response edits one request may carry (`request.edit-response`): past it a plugin's edits
/// are ignored and logged, so a plugin cannot grow host memory by asking in a loop.
pub const MAX_RESPONSE_EDITS: usize = 256;

/// The identity headers the built-in authentication plugins vouch for to the upstream (they
/// remove a client's copies before setting their own). A request that fails open past one of
/// them with no consumer established loses these, so a client's forged copies never pass.
pub const CONSUMER_HEADERS: [&str; 3] = ["x-consumer-id", "x-consumer-groups", "x-anonymous-consumer"];

/// What plugins asked of the response from their request phase, each kept with the chain entry
/// that asked: header edits (`request.edit-response`), which the chain makes at that entry's
/// place in the response phases, as if its `on-response` had, without a call into the plugin;
/// and response body limits (`request.limit-response-body`), which decide whether the upstream's
/// body is buffered for the response phases. Unallocated until a plugin asks.
#[derive(Debug, Default)]
pub struct ResponseEdits {
    /// The chain entry whose request phase is running: edits recorded now are its.
    running: usize,
    edits: Vec<(usize, ResponseEdit)>,
    /// The names' and values' bytes of `edits`.
    bytes: usize,
    /// Per entry that narrowed its need, the longest response body it reads.
    body_limits: Vec<(usize, u64)>,
}

/// One response header edit, validated when recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseEdit {
    /// Replace every value of the header.
    Set(HeaderName, HeaderValue),
    /// Set the header only if the response does not have it.
    Add(HeaderName, HeaderValue),
    /// Add a value after the existing ones.
    Append(HeaderName, HeaderValue),
    /// Add a token to a comma-separated list header unless it is listed already (or `*` is).
    AddToken(HeaderName, HeaderValue),
    /// Remove every value.
    Remove(HeaderName),
    /// Move every value of the first name to the second, replacing the second's.
    Rename(HeaderName, HeaderName),
}

impl ResponseEdit {
    /// The bytes of the names and value it holds.
    fn bytes(&self) -> usize {
        match self {
            ResponseEdit::Set(n, v) | ResponseEdit::Add(n, v) | ResponseEdit::Append(n, v) | ResponseEdit::AddToken(n, v) => {
                n.as_str().len() + v.len()
            }
            ResponseEdit::Remove(n) => n.as_str().len(),
            ResponseEdit::Rename(from, to) => from.as_str().len() + to.as_str().len(),
        }
    }
}

impl ResponseEdits {
    /// Edits recorded from now on belong to chain entry `entry` (the chain calls this before
    /// each request phase).
    pub fn begin(&mut self, entry: usize) {
        self.running = entry;
    }

    /// Records an edit for the running entry; false (and nothing recorded) past
    /// [`MAX_RESPONSE_EDITS`], or once the edits' names and values would hold more than
    /// `max_bytes` (the response header bytes limit: no response could carry more, and the
    /// edits are kept in host memory until the response comes, outside any plugin's memory cap).
    pub fn record(&mut self, edit: ResponseEdit, max_bytes: usize) -> bool {
        let bytes = self.bytes.saturating_add(edit.bytes());
        if self.edits.len() >= MAX_RESPONSE_EDITS || bytes > max_bytes {
            return false;
        }
        self.bytes = bytes;
        self.edits.push((self.running, edit));
        true
    }

    /// Whether any entry asked for an edit.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Forgets the edits and body limit the running entry recorded: its call failed and is skipped.
    pub fn drop_running(&mut self) {
        let running = self.running;
        self.edits.retain(|(entry, _)| *entry != running);
        self.bytes = self.edits.iter().map(|(_, edit)| edit.bytes()).sum();
        self.body_limits.retain(|(entry, _)| *entry != running);
    }

    /// Records that the running entry reads this request's response body only if it is at most
    /// `max` bytes long; a later call of the same entry replaces it.
    pub fn limit_body(&mut self, max: u64) {
        let running = self.running;
        match self.body_limits.iter_mut().find(|(entry, _)| *entry == running) {
            Some(limit) => limit.1 = max,
            None => self.body_limits.push((running, max)),
        }
    }

    /// The response body limit chain entry `entry` asked for, if it narrowed its need.
    pub fn body_limit(&self, entry: usize) -> Option<u64> {
        self.body_limits.iter().find(|(e, _)| *e == entry).map(|(_, max)| *max)
    }

    /// Whether an entry before `ran` asked for an edit (those past it never ran).
    pub fn any_before(&self, ran: usize) -> bool {
        self.edits.iter().any(|(entry, _)| *entry < ran)
    }

    /// Makes the edits of chain entry `entry`, in the order asked, and forgets them (each entry's
    /// are made once, where its response phase runs: moved into the response, not copied). An
    /// edit that would take the response past `bound` is not made (logged once with `plugin`,
    /// the entry's name).
    #[cfg(test)]
    pub fn apply(&mut self, entry: usize, headers: &mut HeaderMap, bound: HeaderBound, plugin: &str, request_id: &str) {
        self.apply_counted(entry, headers, bound, plugin, request_id, &mut HeaderTally::default());
    }

    /// Makes the edits of chain entry `entry` (as the tests' `ResponseEdits::apply` does) as one
    /// of a run of writes to `headers`, counted in `tally` ([`HeaderBound::admit`]): the edits of
    /// several entries made one after another.
    pub fn apply_counted(&mut self, entry: usize, headers: &mut HeaderMap, bound: HeaderBound, plugin: &str, request_id: &str, tally: &mut HeaderTally) {
        // Recorded in chain order (the request phases run in it), so an entry's edits are one run.
        let start = self.edits.partition_point(|(e, _)| *e < entry);
        let end = self.edits.partition_point(|(e, _)| *e <= entry);
        if start == end {
            return;
        }
        let mut refusals = RefusalLog::default();
        for (_, edit) in self.edits.drain(start..end) {
            if !edit.make(headers, bound, tally) {
                refusals.refused(plugin, request_id, "response edit", bound);
            }
        }
    }
}

impl ResponseEdit {
    /// Makes the edit on `headers`, one of a run of writes counted in `tally`
    /// ([`HeaderBound::write`]); false (nothing changed) when it would take the headers past
    /// `bound`. One that changes nothing always fits.
    pub fn make(self, headers: &mut HeaderMap, bound: HeaderBound, tally: &mut HeaderTally) -> bool {
        match self {
            ResponseEdit::Set(name, value) => bound.write(tally, headers, name, value, true),
            ResponseEdit::Add(name, value) => headers.contains_key(&name) || bound.write(tally, headers, name, value, false),
            ResponseEdit::Append(name, value) => bound.write(tally, headers, name, value, false),
            ResponseEdit::AddToken(name, token) => lists_token(headers, &name, &token) || bound.write(tally, headers, name, token, false),
            ResponseEdit::Remove(name) => {
                headers.remove(&name);
                tally.forget();
                true
            }
            ResponseEdit::Rename(from, to) => {
                let Entry::Occupied(moved) = headers.entry(&from) else { return true };
                let values: Vec<HeaderValue> = moved.remove_entry_mult().1.collect();
                headers.remove(&to);
                tally.forget();
                // Each value written as `response.append-header` writes it: one past 64 KiB, or
                // that would take the headers past `bound`, is not.
                let mut all = true;
                for value in values {
                    all &= value.len() <= crate::runtime::host::types::MAX_HEADER_VALUE_BYTES && bound.write(tally, headers, to.clone(), value, false);
                }
                all
            }
        }
    }
}

/// Logs the first of a plugin's header changes refused for taking the headers past their bound,
/// and no further ones: a plugin adding headers in a loop gets one log line, not one per header.
#[derive(Debug, Default)]
pub struct RefusalLog {
    logged: bool,
}

impl RefusalLog {
    /// Records a refusal of `what` (e.g. "set-header") by `plugin` in its call for the request
    /// `request_id`; logs only the first.
    pub fn refused(&mut self, plugin: &str, request_id: &str, what: &str, bound: HeaderBound) {
        if !std::mem::replace(&mut self.logged, true) {
            tracing::warn!(
                plugin,
                request_id,
                max_headers = bound.count,
                max_bytes = bound.bytes,
                "{what} ignored: it would take the headers past the gateway's [limits] (further ones in this call are not logged)"
            );
        }
    }
}

/// Whether a value of the list header `name` lists `token` (ASCII case-insensitively) or `*`.
fn lists_token(headers: &HeaderMap, name: &HeaderName, token: &HeaderValue) -> bool {
    let token = token.as_bytes().trim_ascii();
    headers.get_all(name).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii).any(|t| t == b"*" || t.eq_ignore_ascii_case(token))
    })
}

/// The request on its way through the request phases to the upstream.
#[derive(Debug)]
pub struct RequestState {
    /// Method sent upstream.
    pub method: Method,
    /// Path sent upstream (percent-encoded, without the query).
    pub path: String,
    /// Query string sent upstream, without `?`.
    pub query: Option<String>,
    /// Headers sent upstream (hop-by-hop headers already removed).
    pub headers: HeaderMap,
    /// Params captured by the route pattern.
    pub params: RouteParams,
    /// The matched route's id.
    pub route_id: Arc<str>,
    /// The client's TCP peer address.
    pub client_addr: SocketAddr,
    /// The client's IP: the peer's, or the one the listener's trusted proxies name.
    pub client_ip: std::net::IpAddr,
    /// "http" or "https".
    pub scheme: &'static str,
    /// The request id (also in `x-request-id`).
    pub request_id: Arc<str>,
    /// The request id as a header value sharing the id's allocation (`None` for an id no
    /// header can hold): a fixed edit's `${request_id}` value is a reference-counted clone of
    /// it, not a copy assembled per entry.
    pub request_id_header: Option<HeaderValue>,
    /// The buffered body, present only when a plugin in the chain declared request-body access.
    pub body: Option<Bytes>,
    /// The per-request context.
    pub context: Context,
    /// Response header edits asked for in the request phases.
    pub response_edits: ResponseEdits,
    /// What plugins may make of this request's and its response's headers.
    pub header_limits: HeaderLimits,
    /// The route's `max_body_bytes`: the largest body a plugin may set on the request or its
    /// response, as the gateway takes from a client or buffers from an upstream.
    pub body_limit: u64,
    /// A plugin set or appended `Host`: it goes upstream as the plugin left it, whatever the
    /// route's `host_header` (a plugin that routes by tenant, say, names the virtual host).
    pub host_from_plugin: bool,
    /// The client sent a body (of any length, buffered or streaming): `request.has-body`.
    pub client_body: bool,
    /// The bytes of [`RequestState::headers`], as `[limits]` counts them, kept through the
    /// request phases' header writes and removals, so that each plugin's header set in a chain
    /// does not count the whole map again. The request phases forget it as they begin (the
    /// gateway's own changes before them are not counted in it), and so does
    /// [`RequestState::restore`]; anything else that changes the headers outside a phase call
    /// must forget it too.
    pub header_tally: HeaderTally,
    /// A plugin's change to the request's headers or request line was refused for taking them
    /// past `[limits]`: the chain answers 431 after that entry rather than send the request on
    /// without the change (an identity header an authentication plugin vouches for, say, which
    /// a client could crowd out with padding).
    pub past_limits: bool,
    /// The headers the plugins removed ([`RequestState::remove_header`]): the client's trailers
    /// may not bring one back.
    pub removed_headers: crate::proxy::headers::RemovedNames,
}

/// What a request phase can change of a request, kept before a call whose failure is skipped
/// (`failure = "open"`), so the request goes on as it was, not with the failed call's changes
/// half made (a header an auth plugin set before it trapped, say).
#[derive(Debug)]
pub struct RequestSnapshot {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Option<Bytes>,
    context: Context,
    host_from_plugin: bool,
}

impl RequestState {
    /// What a request phase can change, copied.
    pub fn snapshot(&self) -> RequestSnapshot {
        RequestSnapshot {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            context: self.context.clone(),
            host_from_plugin: self.host_from_plugin,
        }
    }

    /// Removes every value of request header `name`, for a plugin: counted in
    /// [`RequestState::header_tally`] and recorded in [`RequestState::removed_headers`].
    pub fn remove_header(&mut self, name: &HeaderName) {
        self.header_tally.remove(&mut self.headers, name);
        self.removed_headers.insert(name);
    }

    /// Undoes the running call's changes: back to `snapshot`, its response edits dropped.
    ///
    /// The failed call may have been an authentication plugin that had removed a client's
    /// forged `X-Consumer-Id` before it failed (or would have, had it not failed first): with no
    /// consumer established by an earlier plugin, the identity headers ([`CONSUMER_HEADERS`])
    /// cannot be anyone's but the client's, and are removed, so failing open never vouches for
    /// an identity nobody checked.
    pub fn restore(&mut self, snapshot: RequestSnapshot) {
        let RequestSnapshot { method, path, query, headers, body, context, host_from_plugin } = snapshot;
        (self.method, self.path, self.query, self.headers, self.body) = (method, path, query, headers, body);
        (self.context, self.host_from_plugin) = (context, host_from_plugin);
        self.header_tally.forget();
        self.past_limits = false;
        self.response_edits.drop_running();
        if self.context.get("consumer").is_none() {
            for name in CONSUMER_HEADERS {
                self.headers.remove(name);
            }
        }
    }
}

/// The response on its way back through the response phases to the client.
#[derive(Debug, Clone)]
pub struct ResponseState {
    /// Status sent to the client.
    pub status: StatusCode,
    /// Headers sent to the client.
    pub headers: HeaderMap,
    /// The buffered body: always present for plugin-made responses, and for upstream responses
    /// when a plugin in the chain declared response-body access.
    pub body: Option<Bytes>,
    /// The trailers sent after the body: the upstream's when the body was buffered (gRPC puts
    /// `grpc-status` there), or set by a plugin. Streamed bodies carry theirs in the stream.
    pub trailers: Option<HeaderMap>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_give_final_statuses_only() {
        assert_eq!(final_status(200), Some(StatusCode::OK));
        assert_eq!(final_status(599), Some(StatusCode::from_u16(599).unwrap()));
        for no in [0, 42, 100, 101, 103, 199, 600, 999, 1000] {
            assert_eq!(final_status(no), None, "{no}");
        }
    }

    #[test]
    fn context_set_replaces_and_keeps_order() {
        let mut cx = Context::default();
        cx.set("a".into(), "1".into()).expect("room");
        cx.set("b".into(), "2".into()).expect("room");
        cx.set("a".into(), "3".into()).expect("room");
        assert_eq!(cx.get("a"), Some("3"));
        assert_eq!(cx.iter().collect::<Vec<_>>(), vec![("a", "3"), ("b", "2")]);
        assert_eq!(cx.get("zz"), None);
        cx.set("c".into(), "4".into()).expect("room");
        cx.remove("a");
        cx.remove("zz");
        assert_eq!(cx.iter().collect::<Vec<_>>(), vec![("b", "2"), ("c", "4")]);
        // What a removed entry held is free again.
        assert_eq!(cx.bytes, 4);
    }

    fn name(s: &'static str) -> HeaderName {
        HeaderName::from_static(s)
    }

    fn value(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn response_edits_are_made_per_entry_in_the_order_asked() {
        // Entry 2's edits, recorded again for each response they are tried on.
        let entry_two = || {
            let mut edits = ResponseEdits::default();
            edits.begin(0);
            assert!(edits.record(ResponseEdit::Set(name("x-a"), value("0")), usize::MAX));
            edits.begin(2);
            edits.record(ResponseEdit::Remove(name("server")), usize::MAX);
            edits.record(ResponseEdit::Rename(name("x-old"), name("x-new")), usize::MAX);
            edits.record(ResponseEdit::Add(name("x-a"), value("kept-if-absent")), usize::MAX);
            edits.record(ResponseEdit::Append(name("x-multi"), value("2")), usize::MAX);
            edits.record(ResponseEdit::AddToken(name("vary"), value("Origin")), usize::MAX);
            edits.record(ResponseEdit::AddToken(name("x-listed"), value("Origin")), usize::MAX);
            edits.record(ResponseEdit::Set(name("x-a"), value("2")), usize::MAX);
            edits
        };
        let mut edits = entry_two();
        assert!(edits.any_before(3) && edits.any_before(1) && !edits.any_before(0));

        let mut headers = HeaderMap::new();
        headers.insert("server", value("upstream"));
        headers.append("x-old", value("o1"));
        headers.append("x-old", value("o2"));
        headers.insert("x-new", value("replaced"));
        headers.insert("x-multi", value("1"));
        headers.insert("vary", value("Accept-Encoding"));
        headers.insert("x-listed", value("accept, origin"));
        edits.apply(1, &mut headers, HeaderBound::NONE, "test", "req-1");
        assert_eq!(headers.len(), 7, "entry 1 asked for nothing");
        edits.apply(2, &mut headers, HeaderBound::NONE, "test", "req-1");
        assert!(headers.get("server").is_none() && headers.get("x-old").is_none());
        let all = |h: &HeaderMap, n: &str| h.get_all(n).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(all(&headers, "x-new"), ["o1", "o2"]);
        assert_eq!(all(&headers, "x-multi"), ["1", "2"]);
        assert_eq!(all(&headers, "vary"), ["Accept-Encoding", "Origin"]);
        assert_eq!(all(&headers, "x-listed"), ["accept, origin"], "listed already, in any case");
        assert_eq!(all(&headers, "x-a"), ["2"], "add when absent, then set");
        let before = headers.clone();
        edits.apply(2, &mut headers, HeaderBound::NONE, "test", "req-1");
        assert_eq!(headers, before, "an entry's edits are made once");
        edits.apply(0, &mut headers, HeaderBound::NONE, "test", "req-1");
        assert_eq!(all(&headers, "x-a"), ["0"], "entry 0 comes last on the way back and has the last word");
        assert!(edits.is_empty());

        let mut star = HeaderMap::new();
        star.insert("vary", value("*"));
        entry_two().apply(2, &mut star, HeaderBound::NONE, "test", "req-1");
        assert_eq!(all(&star, "vary"), ["*"], "`*` lists everything");

        let mut no_source = HeaderMap::new();
        no_source.insert("x-new", value("stays"));
        entry_two().apply(2, &mut no_source, HeaderBound::NONE, "test", "req-1");
        assert_eq!(all(&no_source, "x-new"), ["stays"], "renaming an absent header changes nothing");
        assert_eq!(all(&no_source, "x-a"), ["2"]);
    }

    #[test]
    fn response_edits_are_bounded() {
        let mut edits = ResponseEdits::default();
        for _ in 0..MAX_RESPONSE_EDITS {
            assert!(edits.record(ResponseEdit::Append(name("x-n"), value("1")), usize::MAX));
        }
        assert!(!edits.record(ResponseEdit::Append(name("x-n"), value("1")), usize::MAX));
        // And by bytes: no more than a response could carry (names and values counted), given
        // back when a failed entry's edits are dropped.
        let mut by_bytes = ResponseEdits::default();
        by_bytes.begin(1);
        assert!(by_bytes.record(ResponseEdit::Set(name("x-a"), value("12345")), 16), "3 + 5 bytes");
        assert!(by_bytes.record(ResponseEdit::Rename(name("x-b"), name("x-c")), 16), "6 bytes more, 14");
        assert!(!by_bytes.record(ResponseEdit::Remove(name("x-d")), 16), "17 bytes would be past 16");
        assert!(by_bytes.record(ResponseEdit::Remove(name("x")), 16), "15 bytes");
        by_bytes.begin(2);
        by_bytes.drop_running();
        assert!(!by_bytes.record(ResponseEdit::Remove(name("x-e")), 16), "entry 1's edits still count");
        by_bytes.begin(1);
        by_bytes.drop_running();
        assert!(by_bytes.record(ResponseEdit::Set(name("x-f"), value("0123456789abc")), 16), "entry 1's dropped: 16 bytes fit");
        let mut headers = HeaderMap::new();
        edits.apply(0, &mut headers, HeaderBound::NONE, "test", "req-1");
        assert_eq!(headers.get_all("x-n").iter().count(), MAX_RESPONSE_EDITS);
    }

    #[test]
    fn response_body_limits_are_per_entry_the_last_call_counts_and_a_skipped_call_leaves_none() {
        let mut edits = ResponseEdits::default();
        edits.begin(0);
        edits.limit_body(100);
        edits.limit_body(0);
        edits.begin(2);
        edits.limit_body(7);
        assert_eq!((edits.body_limit(0), edits.body_limit(1), edits.body_limit(2)), (Some(0), None, Some(7)));
        // Entry 2's call failed open: what it asked is forgotten, entry 0's stays.
        edits.drop_running();
        assert_eq!((edits.body_limit(0), edits.body_limit(2)), (Some(0), None));
    }

    #[test]
    fn header_bounds_count_lines_and_bytes_and_credit_what_a_set_replaces() {
        // Lines of `x-a: 12` are 3 + 2 + 4 = 9 bytes.
        let bound = HeaderBound { count: 3, bytes: 27 };
        let mut headers = HeaderMap::new();
        headers.append("x-a", value("12"));
        headers.append("x-a", value("34"));
        assert!(bound.admits(&headers, &name("x-b"), &value("56"), false), "third line, 27 bytes");
        assert!(!bound.admits(&headers, &name("x-b"), &value("567"), false), "28 bytes");
        headers.append("x-b", value("56"));
        assert!(!bound.admits(&headers, &name("x-c"), &value(""), false), "a fourth line");
        assert!(bound.admits(&headers, &name("x-a"), &value("99"), true), "a set replaces both x-a lines");
        assert!(!bound.admits(&headers, &name("x-a"), &value("99"), false), "an append does not");

        let mut edits = ResponseEdits::default();
        edits.record(ResponseEdit::Append(name("x-c"), value("1")), usize::MAX);
        edits.record(ResponseEdit::Set(name("x-a"), value("long value")), usize::MAX);
        edits.record(ResponseEdit::Set(name("x-b"), value("7")), usize::MAX);
        edits.apply(0, &mut headers, bound, "test", "req-1");
        let all = |h: &HeaderMap, n: &str| h.get_all(n).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert!(all(&headers, "x-c").is_empty(), "a fourth line is refused");
        assert_eq!(all(&headers, "x-a"), ["long value"], "3 + 10 + 4 + 9 = 26 bytes fit once both old lines go");
        assert_eq!(all(&headers, "x-b"), ["7"]);
        assert_eq!(headers.len(), 2);
        assert!(HeaderBound::NONE.admits(&headers, &name("x-z"), &value("1"), false));
    }

    /// A rename writes each moved value as an append would: one past the bound, or past 64
    /// KiB, is not written (the old name is gone either way, as after the plugin's own calls).
    #[test]
    fn a_rename_holds_each_moved_value_to_the_bound() {
        // `x-a: value` is 3 + 5 + 4 = 12 bytes; under the longer name it would be 23.
        let bound = HeaderBound { count: 10, bytes: 12 };
        let mut headers = HeaderMap::new();
        headers.insert("x-a", value("value"));
        let rename = |to: &'static str| ResponseEdit::Rename(name("x-a"), name(to));
        assert!(!rename("x-a-much-longer").make(&mut headers, bound, &mut HeaderTally::default()), "refused");
        assert!(headers.is_empty(), "{headers:?}");
        headers.insert("x-a", value("value"));
        assert!(rename("x-b").make(&mut headers, bound, &mut HeaderTally::default()), "the same size fits");
        assert_eq!(headers.get("x-b"), Some(&value("value")));

        let long = HeaderValue::from_bytes(&vec![b'v'; crate::runtime::host::types::MAX_HEADER_VALUE_BYTES + 1]).unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-a", long);
        headers.append("x-a", value("short"));
        assert!(!rename("x-b").make(&mut headers, HeaderBound::NONE, &mut HeaderTally::default()));
        assert_eq!(headers.get_all("x-b").iter().collect::<Vec<_>>(), [&value("short")], "only the value an append takes");
        assert!(headers.get("x-a").is_none());
    }

    /// Counted once for a run of writes, the bound admits what counting the map before each
    /// write admits; a removal the tally did not see is counted again after `forget`, in a run of
    /// writes and in a run of response edits alike.
    #[test]
    fn a_tally_kept_through_a_run_of_writes_admits_what_counting_each_time_admits() {
        let bound = HeaderBound { count: 10, bytes: 40 };
        let mut headers = HeaderMap::new();
        let mut tally = HeaderTally::default();
        // (name, value, replacing): each line is the name, the value and 4 bytes.
        let writes = [
            ("x-a", "1234", false),      // 11
            ("x-a", "1234", false),      // 22
            ("x-a", "12", true),         // both x-a lines go: 9
            ("x-b", "123456789", false), // 25
            ("x-c", "12345", false),     // 37
            ("x-d", "", false),          // 44: refused
            ("x-c", "", true),           // 37 - 12 + 7 = 32
        ];
        for (i, (n, v, replacing)) in writes.into_iter().enumerate() {
            let counted_each_time = bound.admits(&headers, &name(n), &value(v), replacing);
            assert_eq!(bound.admit(&mut tally, &headers, &name(n), &value(v), replacing), counted_each_time, "write {i}");
            if counted_each_time && replacing {
                headers.insert(name(n), value(v));
            } else if counted_each_time {
                headers.append(name(n), value(v));
            }
        }
        assert_eq!(header_lines_bytes(&headers), 32);

        // `write` checks and writes in one: the same answers and the same map, the tally true
        // after each write, admitted or not.
        let (mut written, mut kept) = (HeaderMap::new(), HeaderTally::default());
        for (i, (n, v, replacing)) in writes.into_iter().enumerate() {
            let before = written.clone();
            let admitted = bound.admits(&written, &name(n), &value(v), replacing);
            assert_eq!(bound.write(&mut kept, &mut written, name(n), value(v), replacing), admitted, "write {i}");
            if !admitted {
                assert_eq!(written, before, "write {i} refused changes nothing");
            }
            assert_eq!(kept.bytes, Some(header_lines_bytes(&written)), "write {i}");
        }
        assert_eq!(written, headers);
        let line_bound = HeaderBound { count: 3, bytes: 1000 };
        assert!(line_bound.write(&mut HeaderTally::default(), &mut written, name("x-c"), value("9"), true), "a set replacing one of the three lines");
        assert!(!line_bound.write(&mut HeaderTally::default(), &mut written, name("x-e"), value("9"), true), "a set of a fourth line");
        assert_eq!(written.get("x-c"), Some(&value("9")));

        assert!(!bound.admit(&mut tally, &headers, &name("x-d"), &value("123456"), false), "32 + 13 > 40");
        headers.remove("x-b");
        tally.forget();
        assert!(bound.admit(&mut tally, &headers, &name("x-d"), &value("123456"), false), "16 + 13 once x-b is gone");

        // Response edits: the second append fits only once the removal between them is counted.
        let mut headers = HeaderMap::new();
        headers.insert("x-big", value("12345678901234567890"));
        let mut edits = ResponseEdits::default();
        edits.record(ResponseEdit::Append(name("x-a"), value("1")), usize::MAX);
        edits.record(ResponseEdit::Remove(name("x-big")), usize::MAX);
        edits.record(ResponseEdit::Append(name("x-b"), value("12345678901234567890")), usize::MAX);
        edits.apply(0, &mut headers, bound, "test", "req-1");
        assert_eq!(headers.get("x-b").map(|v| v.len()), Some(20), "{headers:?}");
        assert_eq!(header_lines_bytes(&headers), 8 + 27);
    }
}
