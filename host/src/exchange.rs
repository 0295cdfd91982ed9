//! The request and response as the plugin chain sees and changes them.
//!
//! The proxy builds a [`RequestState`] from the client's request, moves it through the chain (each
//! phase call moves it into the plugin's store and back, without copying), then builds the upstream
//! request from it. [`ResponseState`] does the same on the way back.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
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
}
