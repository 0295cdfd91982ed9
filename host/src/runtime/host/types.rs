//! `airlock:plugin/types`: the `request` and `response` resources a plugin is handed.
//!
//! The guest only ever holds `borrow` handles for the duration of one phase call. The request and
//! response themselves live in the store's [`HostState`] slots, moved there (not copied) before
//! the call and moved back after it, so a handle needs no table entry: the handle's rep is unused.
//! Each method copies across the boundary only what it names. Setters validate and ignore bad
//! input with a log line naming the plugin, rather than trapping: a plugin's typo should not fail
//! the request.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use wasmtime::component::Resource;

use super::HostState;
use super::log::{LogBudget, plugin_warn};
use super::airlock::plugin::types::{Host, HostRequest, HostResponse, ResponseEdit as WitResponseEdit};
use crate::exchange::{HeaderBound, MAX_RESPONSE_EDITS, RequestState, ResponseEdit, ResponseState};

/// Marker type of the `request` resource (its data lives in [`HostState::request`]).
pub struct RequestHandle;
/// Marker type of the `response` resource (its data lives in [`HostState::response`]).
pub struct ResponseHandle;

/// Most bytes a plugin may set as one header value (larger values are refused).
const MAX_HEADER_VALUE_BYTES: usize = 64 * 1024;

impl Host for HostState {}

impl HostState {
    fn req(&self) -> Option<&RequestState> {
        self.request.as_ref()
    }

    /// The request, if it may be changed in this call.
    fn req_mut(&mut self, what: &str) -> Option<&mut RequestState> {
        if self.request_read_only {
            plugin_warn!(&self.log, "{what} ignored: the request is read-only in on-response");
            return None;
        }
        self.request.as_mut()
    }

    fn resp(&self) -> Option<&ResponseState> {
        self.response.as_ref()
    }

    fn resp_mut(&mut self) -> Option<&mut ResponseState> {
        self.response.as_mut()
    }

    /// The bound the response's headers (and trailers) are held to: the request's response limits.
    fn resp_bound(&self) -> HeaderBound {
        self.request.as_ref().map_or(HeaderBound::NONE, |r| r.header_limits.response)
    }

    /// The response's headers and their bound.
    fn resp_headers_mut(&mut self) -> Option<(&mut HeaderMap, HeaderBound)> {
        let bound = self.resp_bound();
        self.response.as_mut().map(|r| (&mut r.headers, bound))
    }

    /// Logs (once per call) a header change refused for taking the headers past their bound.
    fn refused(&mut self, admitted: bool, what: &str, bound: HeaderBound) {
        if !admitted {
            self.header_refusals.refused(&self.plugin, what, bound);
        }
    }

    /// The request's headers and their bound, if the request may be changed in this call.
    fn req_headers_mut(&mut self, what: &str) -> Option<(&mut HeaderMap, HeaderBound)> {
        self.req_mut(what).map(|r| (&mut r.headers, r.header_limits.request))
    }
}

fn header_first(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    headers.get(name).map(|v| v.as_bytes().to_vec())
}

fn header_all(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    headers.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect()
}

fn header_names(headers: &HeaderMap) -> Vec<String> {
    headers.keys().map(|k| k.as_str().to_owned()).collect()
}

/// Parses a plugin-supplied header name; logs and returns `None` when it is not valid HTTP.
fn parse_name(log: &LogBudget, name: &str) -> Option<HeaderName> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).ok();
    if parsed.is_none() {
        plugin_warn!(log, header = name, "invalid header name from plugin ignored");
    }
    parsed
}

/// Parses a plugin-supplied header; logs and returns `None` when it is not valid HTTP.
fn parse_header(log: &LogBudget, name: &str, value: Vec<u8>) -> Option<(HeaderName, HeaderValue)> {
    let name = parse_name(log, name)?;
    if value.len() > MAX_HEADER_VALUE_BYTES {
        plugin_warn!(log, header = %name, len = value.len(), "oversized header value from plugin ignored");
        return None;
    }
    // Takes the lifted bytes as they are: validated, not copied.
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        Ok(value) => Some((name, value)),
        Err(_) => {
            plugin_warn!(log, header = %name, "header value with control characters from plugin ignored");
            None
        }
    }
}

/// Validates a plugin's response edit like the header setters do; `None` (logged) when invalid.
fn response_edit(log: &LogBudget, edit: WitResponseEdit) -> Option<ResponseEdit> {
    let name = |name: &str| parse_name(log, name);
    Some(match edit {
        WitResponseEdit::Set(h) => parse_header(log, &h.name, h.value).map(|(n, v)| ResponseEdit::Set(n, v))?,
        WitResponseEdit::Add(h) => parse_header(log, &h.name, h.value).map(|(n, v)| ResponseEdit::Add(n, v))?,
        WitResponseEdit::Append(h) => parse_header(log, &h.name, h.value).map(|(n, v)| ResponseEdit::Append(n, v))?,
        WitResponseEdit::AddToken(h) => parse_header(log, &h.name, h.value).map(|(n, v)| ResponseEdit::AddToken(n, v))?,
        WitResponseEdit::Remove(n) => ResponseEdit::Remove(name(&n)?),
        WitResponseEdit::Rename((from, to)) => ResponseEdit::Rename(name(&from)?, name(&to)?),
    })
}

/// Sets (`replacing`) or appends a header unless invalid (logged) or past `bound`: false only in
/// the second case.
fn put_header(log: &LogBudget, (headers, bound): (&mut HeaderMap, HeaderBound), name: String, value: Vec<u8>, replacing: bool) -> bool {
    let Some((name, value)) = parse_header(log, &name, value) else { return true };
    if !bound.admits(headers, &name, &value, replacing) {
        return false;
    }
    if replacing {
        headers.insert(name, value);
    } else {
        headers.append(name, value);
    }
    true
}

fn set_header(log: &LogBudget, headers: (&mut HeaderMap, HeaderBound), name: String, value: Vec<u8>) -> bool {
    put_header(log, headers, name, value, true)
}

fn append_header(log: &LogBudget, headers: (&mut HeaderMap, HeaderBound), name: String, value: Vec<u8>) -> bool {
    put_header(log, headers, name, value, false)
}

/// First value of `name` in a query string, decoded as `application/x-www-form-urlencoded`.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key) == name).then(|| form_decode(value))
    })
}

fn form_decode(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space).decode_utf8_lossy().into_owned()
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/') && http::uri::PathAndQuery::try_from(path).is_ok_and(|pq| pq.query().is_none())
}

impl HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.method.as_str().to_owned()).unwrap_or_default()
    }

    fn set_method(&mut self, _: Resource<RequestHandle>, method: String) {
        let log = self.log.clone();
        if let Some(req) = self.req_mut("set-method") {
            match Method::from_bytes(method.as_bytes()) {
                Ok(m) => req.method = m,
                Err(_) => plugin_warn!(&log, method, "invalid method from plugin ignored"),
            }
        }
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.path.clone()).unwrap_or_default()
    }

    fn set_path(&mut self, _: Resource<RequestHandle>, path: String) {
        let log = self.log.clone();
        if let Some(req) = self.req_mut("set-path") {
            if valid_path(&path) {
                req.path = path;
            } else {
                plugin_warn!(&log, path, "invalid path from plugin ignored");
            }
        }
    }

    fn query(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        self.req().and_then(|r| r.query.clone())
    }

    fn set_query(&mut self, _: Resource<RequestHandle>, query: Option<String>) {
        let log = self.log.clone();
        if let Some(req) = self.req_mut("set-query") {
            match query {
                Some(q) if http::uri::PathAndQuery::try_from(format!("/?{q}")).is_err() => {
                    plugin_warn!(&log, query = q, "invalid query from plugin ignored");
                }
                q => req.query = q.filter(|q| !q.is_empty()),
            }
        }
    }

    fn query_param(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        self.req().and_then(|r| r.query.as_deref()).and_then(|q| query_param(q, &name))
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Option<Vec<u8>> {
        self.req().and_then(|r| header_first(&r.headers, &name))
    }

    fn header_all(&mut self, _: Resource<RequestHandle>, name: String) -> Vec<Vec<u8>> {
        self.req().map(|r| header_all(&r.headers, &name)).unwrap_or_default()
    }

    fn header_names(&mut self, _: Resource<RequestHandle>) -> Vec<String> {
        self.req().map(|r| header_names(&r.headers)).unwrap_or_default()
    }

    fn set_header(&mut self, _: Resource<RequestHandle>, name: String, value: Vec<u8>) {
        let log = self.log.clone();
        if let Some(headers) = self.req_headers_mut("set-header") {
            let bound = headers.1;
            let admitted = set_header(&log, headers, name, value);
            self.refused(admitted, "set-header", bound);
        }
    }

    fn append_header(&mut self, _: Resource<RequestHandle>, name: String, value: Vec<u8>) {
        let log = self.log.clone();
        if let Some(headers) = self.req_headers_mut("append-header") {
            let bound = headers.1;
            let admitted = append_header(&log, headers, name, value);
            self.refused(admitted, "append-header", bound);
        }
    }

    fn remove_header(&mut self, _: Resource<RequestHandle>, name: String) {
        if let Some(req) = self.req_mut("remove-header") {
            req.headers.remove(name.as_str());
        }
    }

    fn param(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        self.req().and_then(|r| r.params.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
    }

    fn route_id(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.route_id.to_string()).unwrap_or_default()
    }

    fn client_addr(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.client_addr.to_string()).unwrap_or_default()
    }

    fn scheme(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.scheme.to_owned()).unwrap_or_default()
    }

    fn request_id(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.request_id.to_string()).unwrap_or_default()
    }

    fn body(&mut self, _: Resource<RequestHandle>) -> Option<Vec<u8>> {
        if !self.body_access {
            return None;
        }
        self.req().and_then(|r| r.body.as_ref()).map(|b| b.to_vec())
    }

    fn set_body(&mut self, _: Resource<RequestHandle>, body: Vec<u8>) {
        if !self.body_access {
            plugin_warn!(&self.log, "set-body ignored: the plugin did not declare request-body access");
            return;
        }
        if let Some(req) = self.req_mut("set-body") {
            req.body = Some(Bytes::from(body));
        }
    }

    fn context_get(&mut self, _: Resource<RequestHandle>, key: String) -> Option<String> {
        self.req().and_then(|r| r.context.get(&key)).map(str::to_owned)
    }

    fn context_set(&mut self, _: Resource<RequestHandle>, key: String, value: String) {
        // The context stays writable in response phases: it feeds the access log.
        if let Some(req) = self.request.as_mut() {
            req.context.set(key, value);
        }
    }

    fn edit_response(&mut self, _: Resource<RequestHandle>, edit: WitResponseEdit) {
        let log = self.log.clone();
        let Some(edit) = response_edit(&log, edit) else { return };
        if let Some(req) = self.req_mut("edit-response")
            && !req.response_edits.record(edit)
        {
            plugin_warn!(&log, limit = MAX_RESPONSE_EDITS, "response edit ignored: too many for one request");
        }
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl HostResponse for HostState {
    fn status(&mut self, _: Resource<ResponseHandle>) -> u16 {
        self.resp().map(|r| r.status.as_u16()).unwrap_or_default()
    }

    fn set_status(&mut self, _: Resource<ResponseHandle>, status: u16) {
        let log = self.log.clone();
        if let Some(resp) = self.resp_mut() {
            match StatusCode::from_u16(status) {
                Ok(s) => resp.status = s,
                Err(_) => plugin_warn!(&log, status, "invalid status from plugin ignored"),
            }
        }
    }

    fn header(&mut self, _: Resource<ResponseHandle>, name: String) -> Option<Vec<u8>> {
        self.resp().and_then(|r| header_first(&r.headers, &name))
    }

    fn header_all(&mut self, _: Resource<ResponseHandle>, name: String) -> Vec<Vec<u8>> {
        self.resp().map(|r| header_all(&r.headers, &name)).unwrap_or_default()
    }

    fn header_names(&mut self, _: Resource<ResponseHandle>) -> Vec<String> {
        self.resp().map(|r| header_names(&r.headers)).unwrap_or_default()
    }

    fn set_header(&mut self, _: Resource<ResponseHandle>, name: String, value: Vec<u8>) {
        let log = self.log.clone();
        if let Some(headers) = self.resp_headers_mut() {
            let bound = headers.1;
            let admitted = set_header(&log, headers, name, value);
            self.refused(admitted, "set-header", bound);
        }
    }

    fn append_header(&mut self, _: Resource<ResponseHandle>, name: String, value: Vec<u8>) {
        let log = self.log.clone();
        if let Some(headers) = self.resp_headers_mut() {
            let bound = headers.1;
            let admitted = append_header(&log, headers, name, value);
            self.refused(admitted, "append-header", bound);
        }
    }

    fn remove_header(&mut self, _: Resource<ResponseHandle>, name: String) {
        if let Some(resp) = self.resp_mut() {
            resp.headers.remove(name.as_str());
        }
    }

    fn body(&mut self, _: Resource<ResponseHandle>) -> Option<Vec<u8>> {
        if !self.body_access {
            return None;
        }
        self.resp().and_then(|r| r.body.as_ref()).map(|b| b.to_vec())
    }

    fn set_body(&mut self, _: Resource<ResponseHandle>, body: Vec<u8>) {
        if !self.body_access {
            plugin_warn!(&self.log, "set-body ignored: the plugin did not declare response-body access");
            return;
        }
        if let Some(resp) = self.resp_mut() {
            resp.body = Some(Bytes::from(body));
        }
    }

    fn trailer(&mut self, _: Resource<ResponseHandle>, name: String) -> Option<Vec<u8>> {
        if !self.body_access {
            return None;
        }
        self.resp().and_then(|r| r.trailers.as_ref()).and_then(|t| header_first(t, &name))
    }

    fn trailer_names(&mut self, _: Resource<ResponseHandle>) -> Vec<String> {
        if !self.body_access {
            return Vec::new();
        }
        self.resp().and_then(|r| r.trailers.as_ref()).map(header_names).unwrap_or_default()
    }

    fn set_trailer(&mut self, _: Resource<ResponseHandle>, name: String, value: Vec<u8>) {
        if !self.body_access {
            plugin_warn!(&self.log, "set-trailer ignored: the plugin did not declare response-body access");
            return;
        }
        let log = self.log.clone();
        let bound = self.resp_bound();
        if let Some(resp) = self.resp_mut() {
            let admitted = set_header(&log, (resp.trailers.get_or_insert_with(HeaderMap::new), bound), name, value);
            self.refused(admitted, "set-trailer", bound);
        }
    }

    fn remove_trailer(&mut self, _: Resource<ResponseHandle>, name: String) {
        if !self.body_access {
            plugin_warn!(&self.log, "remove-trailer ignored: the plugin did not declare response-body access");
            return;
        }
        if let Some(trailers) = self.resp_mut().and_then(|r| r.trailers.as_mut()) {
            trailers.remove(name.as_str());
        }
    }

    fn drop(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_edits_from_plugins_are_validated() {
        let log = LogBudget::new("p".into());
        use super::super::airlock::plugin::types::Header;
        let header = |name: &str, value: &[u8]| Header { name: name.into(), value: value.to_vec() };
        assert_eq!(
            response_edit(&log, WitResponseEdit::Set(header("X-A", b"1"))),
            Some(ResponseEdit::Set(HeaderName::from_static("x-a"), HeaderValue::from_static("1")))
        );
        assert_eq!(response_edit(&log, WitResponseEdit::Append(header("bad name", b"1"))), None);
        assert_eq!(response_edit(&log, WitResponseEdit::Add(header("x-a", b"line\nbreak"))), None);
        assert_eq!(response_edit(&log, WitResponseEdit::Remove("".into())), None);
        assert_eq!(response_edit(&log, WitResponseEdit::Rename(("x-a".into(), "bad:name".into()))), None);
    }

    #[test]
    fn query_param_decodes_form_encoding() {
        assert_eq!(query_param("a=1&b=x+y%21", "b").as_deref(), Some("x y!"));
        assert_eq!(query_param("flag&a=1", "flag").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "b"), None);
    }

    #[test]
    fn paths_are_validated() {
        assert!(valid_path("/users/42"));
        assert!(!valid_path("users"));
        assert!(!valid_path("/a?b"));
        assert!(!valid_path("/a b"));
    }

    #[test]
    fn non_utf8_header_values_survive() {
        let log = LogBudget::new("t".into());
        let mut headers = HeaderMap::new();
        assert!(set_header(&log, (&mut headers, HeaderBound::NONE), "X-Bin".into(), vec![0xff, 0xfe, b'a']));
        assert_eq!(header_first(&headers, "x-bin"), Some(vec![0xff, 0xfe, b'a']));
        set_header(&log, (&mut headers, HeaderBound::NONE), "bad name".into(), b"v".to_vec());
        set_header(&log, (&mut headers, HeaderBound::NONE), "x-ctl".into(), b"a\nb".to_vec());
        assert_eq!(headers.len(), 1);
        let two = HeaderBound { count: 2, bytes: usize::MAX };
        assert!(append_header(&log, (&mut headers, two), "x-n".into(), b"1".to_vec()));
        assert!(!append_header(&log, (&mut headers, two), "x-n".into(), b"2".to_vec()), "a third line");
        assert!(set_header(&log, (&mut headers, two), "x-n".into(), b"3".to_vec()), "a set replaces");
        assert_eq!(header_all(&headers, "x-n"), [b"3".to_vec()]);
    }
}
