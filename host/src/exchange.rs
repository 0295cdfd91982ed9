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
/// A small vector: a handful of keys, looked up linearly, cheaper than hashing.
#[derive(Debug, Default, Clone)]
pub struct Context(Vec<(String, String)>);

impl Context {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn set(&mut self, key: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Every key and value, in the order first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Most response edits one request may carry (`request.edit-response`): past it a plugin's edits
/// are ignored and logged, so a plugin cannot grow host memory by asking in a loop.
pub const MAX_RESPONSE_EDITS: usize = 256;

/// Response header edits plugins asked for from their request phase (`request.edit-response`),
/// each kept with the chain entry that asked: the chain makes them at that entry's place in the
/// response phases, as if its `on-response` had, without a call into the plugin. Unallocated
/// until a plugin asks.
#[derive(Debug, Default)]
pub struct ResponseEdits {
    /// The chain entry whose request phase is running: edits recorded now are its.
    running: usize,
    edits: Vec<(usize, ResponseEdit)>,
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

impl ResponseEdits {
    /// Edits recorded from now on belong to chain entry `entry` (the chain calls this before
    /// each request phase).
    pub fn begin(&mut self, entry: usize) {
        self.running = entry;
    }

    /// Records an edit for the running entry; false (and nothing recorded) past
    /// [`MAX_RESPONSE_EDITS`].
    pub fn record(&mut self, edit: ResponseEdit) -> bool {
        if self.edits.len() >= MAX_RESPONSE_EDITS {
            return false;
        }
        self.edits.push((self.running, edit));
        true
    }

    /// Whether any entry asked for an edit.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Whether an entry before `ran` asked for an edit (those past it never ran).
    pub fn any_before(&self, ran: usize) -> bool {
        self.edits.iter().any(|(entry, _)| *entry < ran)
    }

    /// Makes the edits of chain entry `entry`, in the order asked.
    pub fn apply(&self, entry: usize, headers: &mut HeaderMap) {
        for (_, edit) in self.edits.iter().filter(|(e, _)| *e == entry) {
            match edit {
                ResponseEdit::Set(name, value) => {
                    headers.insert(name, value.clone());
                }
                ResponseEdit::Add(name, value) => {
                    if let Entry::Vacant(slot) = headers.entry(name) {
                        slot.insert(value.clone());
                    }
                }
                ResponseEdit::Append(name, value) => {
                    headers.append(name, value.clone());
                }
                ResponseEdit::AddToken(name, token) => {
                    if !lists_token(headers, name, token) {
                        headers.append(name, token.clone());
                    }
                }
                ResponseEdit::Remove(name) => {
                    headers.remove(name);
                }
                ResponseEdit::Rename(from, to) => {
                    if let Entry::Occupied(moved) = headers.entry(from) {
                        let values: Vec<HeaderValue> = moved.remove_entry_mult().1.collect();
                        headers.remove(to);
                        for value in values {
                            headers.append(to, value);
                        }
                    }
                }
            }
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
    /// "http" or "https".
    pub scheme: &'static str,
    /// The request id (also in `x-request-id`).
    pub request_id: Arc<str>,
    /// The buffered body, present only when a plugin in the chain declared request-body access.
    pub body: Option<Bytes>,
    /// The per-request context.
    pub context: Context,
    /// Response header edits asked for in the request phases.
    pub response_edits: ResponseEdits,
}

/// The response on its way back through the response phases to the client.
#[derive(Debug)]
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
    fn context_set_replaces_and_keeps_order() {
        let mut cx = Context::default();
        cx.set("a".into(), "1".into());
        cx.set("b".into(), "2".into());
        cx.set("a".into(), "3".into());
        assert_eq!(cx.get("a"), Some("3"));
        assert_eq!(cx.iter().collect::<Vec<_>>(), vec![("a", "3"), ("b", "2")]);
        assert_eq!(cx.get("zz"), None);
    }

    fn name(s: &'static str) -> HeaderName {
        HeaderName::from_static(s)
    }

    fn value(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn response_edits_are_made_per_entry_in_the_order_asked() {
        let mut edits = ResponseEdits::default();
        edits.begin(0);
        assert!(edits.record(ResponseEdit::Set(name("x-a"), value("0"))));
        edits.begin(2);
        edits.record(ResponseEdit::Remove(name("server")));
        edits.record(ResponseEdit::Rename(name("x-old"), name("x-new")));
        edits.record(ResponseEdit::Add(name("x-a"), value("kept-if-absent")));
        edits.record(ResponseEdit::Append(name("x-multi"), value("2")));
        edits.record(ResponseEdit::AddToken(name("vary"), value("Origin")));
        edits.record(ResponseEdit::AddToken(name("x-listed"), value("Origin")));
        edits.record(ResponseEdit::Set(name("x-a"), value("2")));
        assert!(edits.any_before(3) && edits.any_before(1) && !edits.any_before(0));

        let mut headers = HeaderMap::new();
        headers.insert("server", value("upstream"));
        headers.append("x-old", value("o1"));
        headers.append("x-old", value("o2"));
        headers.insert("x-new", value("replaced"));
        headers.insert("x-multi", value("1"));
        headers.insert("vary", value("Accept-Encoding"));
        headers.insert("x-listed", value("accept, origin"));
        edits.apply(1, &mut headers);
        assert_eq!(headers.len(), 7, "entry 1 asked for nothing");
        edits.apply(2, &mut headers);
        assert!(headers.get("server").is_none() && headers.get("x-old").is_none());
        let all = |h: &HeaderMap, n: &str| h.get_all(n).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(all(&headers, "x-new"), ["o1", "o2"]);
        assert_eq!(all(&headers, "x-multi"), ["1", "2"]);
        assert_eq!(all(&headers, "vary"), ["Accept-Encoding", "Origin"]);
        assert_eq!(all(&headers, "x-listed"), ["accept, origin"], "listed already, in any case");
        let mut star = HeaderMap::new();
        star.insert("vary", value("*"));
        edits.apply(2, &mut star);
        assert_eq!(all(&star, "vary"), ["*"], "`*` lists everything");
        assert_eq!(all(&headers, "x-a"), ["2"], "add when absent, then set");
        edits.apply(0, &mut headers);
        assert_eq!(all(&headers, "x-a"), ["0"], "entry 0 comes last on the way back and has the last word");

        let mut no_source = HeaderMap::new();
        no_source.insert("x-new", value("stays"));
        edits.apply(2, &mut no_source);
        assert_eq!(all(&no_source, "x-new"), ["stays"], "renaming an absent header changes nothing");
    }

    #[test]
    fn response_edits_are_bounded() {
        let mut edits = ResponseEdits::default();
        for _ in 0..MAX_RESPONSE_EDITS {
            assert!(edits.record(ResponseEdit::Append(name("x-n"), value("1"))));
        }
        assert!(!edits.record(ResponseEdit::Append(name("x-n"), value("1"))));
        let mut headers = HeaderMap::new();
        edits.apply(0, &mut headers);
        assert_eq!(headers.get_all("x-n").iter().count(), MAX_RESPONSE_EDITS);
    }
}
