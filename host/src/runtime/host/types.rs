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
use http::{HeaderMap, Method};
use wasmtime::component::Resource;

use super::HostState;
use super::log::{LogBudget, plugin_warn, shown};
use super::airlock::plugin::types::{Host, HostRequest, HostResponse, RequestEdit as WitRequestEdit, ResponseEdit as WitResponseEdit};
use crate::exchange::{HeaderBound, HeaderTally, MAX_RESPONSE_EDITS, RequestState, ResponseEdit, ResponseState};
use crate::runtime::failure::Failure;

/// Marker type of the `request` resource (its data lives in [`HostState::request`]).
pub struct RequestHandle;
/// Marker type of the `response` resource (its data lives in [`HostState::response`]).
pub struct ResponseHandle;

/// Most bytes a plugin may set as one header value (larger values are refused).
pub const MAX_HEADER_VALUE_BYTES: usize = 64 * 1024;

/// Most changes one `request.edit` call makes (those past it are ignored and logged): a host
/// call runs to its end, past the plugin's CPU deadline, so its work is bounded by count.
pub const MAX_EDITS_PER_CALL: usize = 256;

impl Host for HostState {}

impl HostState {
    fn req(&self) -> Option<&RequestState> {
        self.request.as_deref()
    }

    /// True (and `what` logged as ignored) when the request may not be changed in this call.
    fn request_locked(&self, what: &str) -> bool {
        if self.request_read_only {
            plugin_warn!(&self.log, "{what} ignored: the request is read-only in on-response");
        }
        self.request_read_only
    }

    /// The request, if it may be changed in this call.
    fn req_mut(&mut self, what: &str) -> Option<&mut RequestState> {
        if self.request_locked(what) {
            return None;
        }
        self.request.as_deref_mut()
    }

    fn resp(&self) -> Option<&ResponseState> {
        self.response.as_deref()
    }

    fn resp_mut(&mut self) -> Option<&mut ResponseState> {
        self.response.as_deref_mut()
    }

    /// The bound the response's headers (and trailers) are held to: the request's response limits.
    fn resp_bound(&self) -> HeaderBound {
        self.request.as_ref().map_or(HeaderBound::NONE, |r| r.header_limits.response)
    }

    /// Sets (`replacing`) or appends a header the plugin asked for on `side`: refused, and
    /// logged, when the name or value is not valid HTTP, when the request is read-only, or when
    /// it would take the headers past their bound (logged once per call). A request's `Host` is
    /// always replaced, and only by a valid `host[:port]`.
    fn put_header(&mut self, side: Side, what: &str, name: &str, value: Vec<u8>, replacing: bool) {
        if side == Side::Request && self.request_read_only {
            plugin_warn!(&self.log, header = shown(name), "{what} ignored: the request is read-only in on-response");
            return;
        }
        let Some((name, value)) = parse_header(&self.log, &mut self.header_names, name, value) else {
            // A set replaces every value: one whose new value is refused leaves none of the old
            // ones (a claim with a control character must not leave a client's forged header).
            if replacing {
                self.remove_for_refused_set(side, name);
            }
            return;
        };
        let response_bound = self.resp_bound();
        // The request's count is kept through the request phases; a response's is made per write.
        let mut uncounted = HeaderTally::default();
        let (headers, bound, tally) = match side {
            Side::Request => match self.request.as_mut() {
                Some(r) => (&mut r.headers, r.header_limits.request, &mut r.header_tally),
                None => return,
            },
            Side::Response => match self.response.as_mut() {
                Some(r) => (&mut r.headers, response_bound, &mut uncounted),
                None => return,
            },
            Side::Trailers => match self.response.as_mut() {
                Some(r) => (r.trailers.get_or_insert_with(HeaderMap::new), response_bound, &mut uncounted),
                None => return,
            },
        };
        let sets_host = side == Side::Request && name == http::header::HOST;
        // One well-formed `Host`, as from a client: a second would split the upstream's (and any
        // proxy's between) idea of the target; `a@b` or `a,b` would reach it as a host.
        if sets_host && !crate::proxy::headers::valid_plugin_host(value.as_bytes()) {
            plugin_warn!(&self.log, header = "host", "host from plugin ignored: not host[:port]");
            return;
        }
        if !bound.write(tally, headers, name, value, replacing || sets_host) {
            if side == Side::Request
                && let Some(req) = self.request.as_mut()
            {
                req.past_limits = true;
            }
            let request_id = self.request.as_ref().map_or("", |r| &*r.request_id);
            self.header_refusals.refused(&self.plugin, request_id, what, bound);
            return;
        }
        if let (true, Some(req)) = (sets_host, self.request.as_mut()) {
            req.host_from_plugin = true;
        }
    }

    /// After a set refused for its value: removes the header's old values on `side` (not a
    /// request's `Host`, which the gateway needs, nor a header plugins may not write).
    fn remove_for_refused_set(&mut self, side: Side, name: &str) {
        let Some(parsed) = self.header_names.parse(name) else { return };
        if parsed == http::header::HOST || crate::proxy::headers::gateway_managed(&parsed) {
            return;
        }
        let headers = match side {
            Side::Request => return self.remove_request_header(name),
            Side::Response => self.resp_mut().map(|r| &mut r.headers),
            Side::Trailers => self.resp_mut().and_then(|r| r.trailers.as_mut()),
        };
        if let Some(headers) = headers {
            headers.remove(&parsed);
        }
    }

    /// `request.remove-header`: an invalid name names no header, so removes nothing.
    fn remove_request_header(&mut self, name: &str) {
        if self.request_locked("remove-header") {
            return;
        }
        if let (Some(name), Some(req)) = (self.header_names.parse(name), self.request.as_deref_mut()) {
            req.remove_header(&name);
        }
    }

    /// `request.context-set`, in either phase: later ones read the context, and the access log
    /// its `consumer`.
    fn set_context(&mut self, key: String, value: String) {
        if let Some(req) = self.request.as_mut()
            && let Err(key) = req.context.set(key, value)
        {
            let (keys, bytes) = (crate::exchange::Context::MAX_KEYS, crate::exchange::Context::MAX_BYTES);
            plugin_warn!(&self.log, key = shown(&key), keys, bytes, "context value ignored: the request's context is full");
        }
    }

    /// `request.context-remove`, in either phase.
    fn remove_context(&mut self, key: &str) {
        if let Some(req) = self.request.as_mut() {
            req.context.remove(key);
        }
    }

    /// `request.edit-response`: validated, then recorded for the response phases.
    fn record_response_edit(&mut self, edit: WitResponseEdit) {
        if self.request_locked("edit-response") {
            return;
        }
        let Some(edit) = response_edit(&self.log, &mut self.header_names, edit) else { return };
        if let Some(req) = self.request.as_mut()
            && !req.response_edits.record(edit, req.header_limits.response.bytes)
            // Once a call: a plugin editing in a loop would spend the call's log budget on it.
            && !std::mem::replace(&mut self.response_edits_refused, true)
        {
            plugin_warn!(
                &self.log,
                limit = MAX_RESPONSE_EDITS,
                max_bytes = req.header_limits.response.bytes,
                "response edit ignored: too many for one request, or more bytes than limits.max_response_header_bytes \
                 (further ones in this call are not logged)"
            );
        }
    }
}

/// Which header map of the exchange a setter changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
    Trailers,
}

/// The header names this instance's plugin used last, parsed: naming one again costs a lookup
/// and a reference count, where parsing a custom name copies it into a new allocation (and its
/// first clone into a header map another). Each is kept under the plugin's own spelling
/// (`X-Api-Key` as well as `x-api-key`), so a lookup is a plain byte comparison, not a
/// case-insensitive one byte by byte. Per instance, at most [`HeaderNames::MAX`].
#[derive(Debug, Default)]
pub struct HeaderNames(Vec<(Box<str>, HeaderName)>);

impl HeaderNames {
    /// Most names kept: a plugin's fixed few, not every name a request carries.
    const MAX: usize = 16;

    /// `name` parsed, from the cache when it was used before; `None` when it is not valid HTTP.
    fn parse(&mut self, name: &str) -> Option<HeaderName> {
        if let Some((_, known)) = self.0.iter().find(|(spelled, _)| **spelled == *name) {
            return Some(known.clone());
        }
        let parsed = HeaderName::from_bytes(name.as_bytes()).ok()?;
        if self.0.len() < Self::MAX {
            self.0.push((name.into(), parsed.clone()));
        }
        Some(parsed)
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
fn parse_name(log: &LogBudget, names: &mut HeaderNames, name: &str) -> Option<HeaderName> {
    let parsed = names.parse(name);
    if parsed.is_none() {
        plugin_warn!(log, header = shown(name), "invalid header name from plugin ignored");
    }
    parsed
}

/// Parses the name of a header a plugin writes; logs and returns `None` when it is not valid
/// or is one the gateway manages ([`crate::proxy::headers::gateway_managed`]).
fn parse_writable(log: &LogBudget, names: &mut HeaderNames, name: &str) -> Option<HeaderName> {
    let name = parse_name(log, names, name)?;
    if crate::proxy::headers::gateway_managed(&name) {
        plugin_warn!(log, header = %name, "framing or connection header from plugin ignored: the gateway sets it");
        return None;
    }
    Some(name)
}

/// Parses a plugin-supplied header; logs and returns `None` when it is not valid HTTP or not
/// the plugin's to write.
fn parse_header(log: &LogBudget, names: &mut HeaderNames, name: &str, value: Vec<u8>) -> Option<(HeaderName, HeaderValue)> {
    let name = parse_writable(log, names, name)?;
    if value.len() > MAX_HEADER_VALUE_BYTES {
        plugin_warn!(log, header = shown(name.as_str()), len = value.len(), "oversized header value from plugin ignored");
        return None;
    }
    // Takes the lifted bytes as they are: validated, not copied.
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        Ok(value) => Some((name, value)),
        Err(_) => {
            plugin_warn!(log, header = shown(name.as_str()), "header value with control characters from plugin ignored");
            None
        }
    }
}

/// Validates a plugin's response edit like the header setters do; `None` (logged) when invalid.
fn response_edit(log: &LogBudget, names: &mut HeaderNames, edit: WitResponseEdit) -> Option<ResponseEdit> {
    Some(match edit {
        WitResponseEdit::Set(h) => parse_header(log, names, &h.name, h.value).map(|(n, v)| ResponseEdit::Set(n, v))?,
        WitResponseEdit::Add(h) => parse_header(log, names, &h.name, h.value).map(|(n, v)| ResponseEdit::Add(n, v))?,
        WitResponseEdit::Append(h) => parse_header(log, names, &h.name, h.value).map(|(n, v)| ResponseEdit::Append(n, v))?,
        WitResponseEdit::AddToken(h) => parse_header(log, names, &h.name, h.value).map(|(n, v)| ResponseEdit::AddToken(n, v))?,
        WitResponseEdit::Remove(n) => ResponseEdit::Remove(parse_name(log, names, &n)?),
        WitResponseEdit::Rename((from, to)) => ResponseEdit::Rename(parse_name(log, names, &from)?, parse_writable(log, names, &to)?),
    })
}

/// First value of `name` in a query string, decoded as `application/x-www-form-urlencoded`.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key) == name).then(|| form_decode(value))
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then percent-decoding (invalid
/// UTF-8 replaced). What plugins' `query-param` and the admin API's parameters are read with.
pub fn form_decode(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space).decode_utf8_lossy().into_owned()
}

/// An origin-form path: `http` would take a `#` as the start of a fragment and drop the rest
/// silently, so one is refused like any other invalid path.
fn valid_path(path: &str) -> bool {
    // ASCII only: the request line has no place for other bytes (RFC 9112 3.2), which the
    // `http` crate lets through; a plugin percent-encodes them.
    path.starts_with('/')
        && path.is_ascii()
        && !path.contains('#')
        && http::uri::PathAndQuery::try_from(path).is_ok_and(|pq| pq.query().is_none())
}

/// A query string (without `?`); a `#` is refused as in [`valid_path`].
fn valid_query(query: &str) -> bool {
    query.is_ascii() && !query.contains('#') && http::uri::PathAndQuery::try_from(format!("/?{query}")).is_ok()
}

/// Whether the request line `method path?query` and the request's headers stay within
/// `limits.max_header_bytes` (counted as for a client's request, `proxy::headers::header_bytes`):
/// a plugin cannot send the upstream a request line the gateway would refuse from a client.
fn line_fits(req: &crate::exchange::RequestState, method: &str, path: &str, query: Option<&str>) -> bool {
    let line = method.len() + path.len() + query.map_or(0, |q| q.len() + 1) + 12;
    line.saturating_add(crate::exchange::header_lines_bytes(&req.headers)) <= req.header_limits.request.bytes
}

impl HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.method.as_str().to_owned()).unwrap_or_default()
    }

    fn set_method(&mut self, _: Resource<RequestHandle>, method: String) {
        let log = self.log.clone();
        if let Some(req) = self.req_mut("set-method") {
            match Method::from_bytes(method.as_bytes()) {
                // CONNECT would make the upstream call a tunnel to the target (the path gone);
                // TRACE echoes the request, credentials included, to whoever asked.
                Ok(Method::CONNECT | Method::TRACE) => plugin_warn!(&log, method, "method from plugin ignored: CONNECT and TRACE are not proxied"),
                Ok(_) if !line_fits(req, &method, &req.path, req.query.as_deref()) => {
                    req.past_limits = true;
                    plugin_warn!(&log, method_bytes = method.len(), "method from plugin ignored: the request line would pass limits.max_header_bytes");
                }
                Ok(m) => req.method = m,
                Err(_) => plugin_warn!(&log, method = shown(&method), "invalid method from plugin ignored"),
            }
        }
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.path.clone()).unwrap_or_default()
    }

    fn set_path(&mut self, _: Resource<RequestHandle>, path: String) {
        let log = self.log.clone();
        if let Some(req) = self.req_mut("set-path") {
            if !valid_path(&path) {
                plugin_warn!(&log, path = shown(&path), "invalid path from plugin ignored");
                return;
            }
            if !line_fits(req, req.method.as_str(), &path, req.query.as_deref()) {
                req.past_limits = true;
                plugin_warn!(&log, path_bytes = path.len(), "path from plugin ignored: the request line would pass limits.max_header_bytes");
                return;
            }
            // Normalized as a client's path is (proxy::path): what later plugins and the
            // upstream see is one path, not one each resolves its own way.
            match crate::proxy::path::normalize(&path) {
                Ok(None) => req.path = path,
                Ok(Some(normal)) => req.path = normal,
                Err(e) => plugin_warn!(&log, path = shown(&path), "path from plugin ignored: {e}"),
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
                Some(q) if !valid_query(&q) => {
                    plugin_warn!(&log, query = shown(&q), "invalid query from plugin ignored");
                }
                Some(q) if !line_fits(req, req.method.as_str(), &req.path, Some(&q)) => {
                    req.past_limits = true;
                    plugin_warn!(&log, query_bytes = q.len(), "query from plugin ignored: the request line would pass limits.max_header_bytes");
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
        self.put_header(Side::Request, "set-header", &name, value, true);
    }

    fn append_header(&mut self, _: Resource<RequestHandle>, name: String, value: Vec<u8>) {
        self.put_header(Side::Request, "append-header", &name, value, false);
    }

    fn remove_header(&mut self, _: Resource<RequestHandle>, name: String) {
        self.remove_request_header(&name);
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

    fn client_ip(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| crate::proxy::headers::ip_string(r.client_ip)).unwrap_or_default()
    }

    fn scheme(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.scheme.to_owned()).unwrap_or_default()
    }

    fn request_id(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.request_id.to_string()).unwrap_or_default()
    }

    fn body(&mut self, _: Resource<RequestHandle>) -> Option<Vec<u8>> {
        if !self.body_access.request {
            return None;
        }
        self.req().and_then(|r| r.body.as_ref()).map(|b| b.to_vec())
    }

    fn set_body(&mut self, _: Resource<RequestHandle>, body: Vec<u8>) {
        if self.request_locked("set-body") {
            return;
        }
        if !self.body_access.request {
            plugin_warn!(&self.log, "set-body ignored: the plugin did not declare request-body access");
            return;
        }
        let limit = self.req().map_or(u64::MAX, |r| r.body_limit);
        if body.len() as u64 > limit {
            self.body_too_large.get_or_insert(Failure::BodyTooLarge { what: "request body", bytes: body.len(), limit });
            return;
        }
        if let Some(req) = self.req_mut("set-body") {
            req.body = Some(Bytes::from(body));
            // The client's digests of the body it sent would not match the one that goes on.
            for digest in &crate::proxy::headers::CONTENT_DIGESTS {
                req.header_tally.remove(&mut req.headers, digest);
            }
        }
    }

    fn has_body(&mut self, _: Resource<RequestHandle>) -> bool {
        self.req().is_some_and(|r| r.client_body)
    }

    fn context_get(&mut self, _: Resource<RequestHandle>, key: String) -> Option<String> {
        self.req().and_then(|r| r.context.get(&key)).map(str::to_owned)
    }

    fn context_set(&mut self, _: Resource<RequestHandle>, key: String, value: String) {
        self.set_context(key, value);
    }

    fn context_remove(&mut self, _: Resource<RequestHandle>, key: String) {
        self.remove_context(&key);
    }

    fn edit_response(&mut self, _: Resource<RequestHandle>, edit: WitResponseEdit) {
        self.record_response_edit(edit);
    }

    fn edit(&mut self, _: Resource<RequestHandle>, edits: Vec<WitRequestEdit>) {
        let asked = edits.len();
        for edit in edits.into_iter().take(MAX_EDITS_PER_CALL) {
            match edit {
                WitRequestEdit::SetHeader(h) => self.put_header(Side::Request, "set-header", &h.name, h.value, true),
                WitRequestEdit::AppendHeader(h) => self.put_header(Side::Request, "append-header", &h.name, h.value, false),
                WitRequestEdit::RemoveHeader(name) => self.remove_request_header(&name),
                WitRequestEdit::ContextSet((key, value)) => self.set_context(key, value),
                WitRequestEdit::ContextRemove(key) => self.remove_context(&key),
                WitRequestEdit::EditResponse(edit) => self.record_response_edit(edit),
            }
        }
        if asked > MAX_EDITS_PER_CALL {
            plugin_warn!(&self.log, asked, limit = MAX_EDITS_PER_CALL, "request edits past the limit of one call ignored");
        }
    }

    fn limit_response_body(&mut self, _: Resource<RequestHandle>, max_bytes: u64) {
        if self.request_locked("limit-response-body") {
            return;
        }
        if !self.reads_response_body {
            plugin_warn!(&self.log, "limit-response-body ignored: the plugin did not declare response-body access");
            return;
        }
        if let Some(req) = self.request.as_mut() {
            req.response_edits.limit_body(max_bytes);
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
            match crate::exchange::final_status(status) {
                Some(s) => resp.status = s,
                // A 1xx is no final answer; a 101 switches only as the upstream's own.
                None if status == resp.status.as_u16() => {}
                None => plugin_warn!(&log, status, "invalid or informational (1xx) status from plugin ignored"),
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
        self.put_header(Side::Response, "set-header", &name, value, true);
    }

    fn append_header(&mut self, _: Resource<ResponseHandle>, name: String, value: Vec<u8>) {
        self.put_header(Side::Response, "append-header", &name, value, false);
    }

    fn remove_header(&mut self, _: Resource<ResponseHandle>, name: String) {
        if let Some(resp) = self.resp_mut() {
            resp.headers.remove(name.as_str());
        }
    }

    fn body(&mut self, _: Resource<ResponseHandle>) -> Option<Vec<u8>> {
        if !self.body_access.response {
            return None;
        }
        self.resp().and_then(|r| r.body.as_ref()).map(|b| b.to_vec())
    }

    fn set_body(&mut self, _: Resource<ResponseHandle>, body: Vec<u8>) {
        if !self.body_access.response {
            plugin_warn!(&self.log, "set-body ignored: the plugin did not declare response-body access");
            return;
        }
        let limit = self.req().map_or(u64::MAX, |r| r.body_limit);
        if body.len() as u64 > limit {
            self.body_too_large.get_or_insert(Failure::BodyTooLarge { what: "response body", bytes: body.len(), limit });
            return;
        }
        if let Some(resp) = self.resp_mut() {
            resp.body = Some(Bytes::from(body));
            for digest in &crate::proxy::headers::CONTENT_DIGESTS {
                resp.headers.remove(digest);
            }
        }
    }

    fn trailer(&mut self, _: Resource<ResponseHandle>, name: String) -> Option<Vec<u8>> {
        if !self.body_access.response {
            return None;
        }
        self.resp().and_then(|r| r.trailers.as_ref()).and_then(|t| header_first(t, &name))
    }

    fn trailer_all(&mut self, _: Resource<ResponseHandle>, name: String) -> Vec<Vec<u8>> {
        if !self.body_access.response {
            return Vec::new();
        }
        self.resp().and_then(|r| r.trailers.as_ref()).map(|t| header_all(t, &name)).unwrap_or_default()
    }

    fn trailer_names(&mut self, _: Resource<ResponseHandle>) -> Vec<String> {
        if !self.body_access.response {
            return Vec::new();
        }
        self.resp().and_then(|r| r.trailers.as_ref()).map(header_names).unwrap_or_default()
    }

    fn set_trailer(&mut self, _: Resource<ResponseHandle>, name: String, value: Vec<u8>) {
        if !self.body_access.response {
            plugin_warn!(&self.log, "set-trailer ignored: the plugin did not declare response-body access");
            return;
        }
        self.put_header(Side::Trailers, "set-trailer", &name, value, true);
    }

    fn remove_trailer(&mut self, _: Resource<ResponseHandle>, name: String) {
        if !self.body_access.response {
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

    /// A plugin's state in a call of `on-request` (`response_phase` false) or `on-response`, for a
    /// plain GET, the chain entry at index 0 running.
    fn in_call(reads_response_body: bool, response_phase: bool) -> HostState {
        let mut state = HostState::new("p".into(), 1 << 20, std::time::Duration::from_millis(10));
        let request = crate::plugin_trial::parse_request("t.http", b"GET / HTTP/1.1\n\n").expect("a request");
        state.request = Some(Box::new(request));
        state.reads_response_body = reads_response_body;
        state.begin_call(super::super::BodyAccess::NONE, response_phase, std::time::Instant::now());
        state
    }

    #[test]
    fn limit_response_body_counts_only_from_on_request_of_a_body_reading_plugin() {
        let limit = |state: &HostState| state.request.as_ref().and_then(|r| r.response_edits.body_limit(0));
        let mut reads = in_call(true, false);
        reads.limit_response_body(Resource::new_borrow(0), 1024);
        assert_eq!(limit(&reads), Some(1024));
        // Undeclared, or too late: ignored (and logged), the body stays as the descriptor says.
        let mut undeclared = in_call(false, false);
        undeclared.limit_response_body(Resource::new_borrow(0), 1024);
        assert_eq!(limit(&undeclared), None);
        let mut late = in_call(true, true);
        late.limit_response_body(Resource::new_borrow(0), 1024);
        assert_eq!(limit(&late), None);
    }

    #[test]
    fn context_remove_works_in_both_phases_and_has_body_tells_what_the_client_sent() {
        for response_phase in [false, true] {
            let mut state = in_call(false, response_phase);
            state.context_set(Resource::new_borrow(0), "consumer.anonymous".into(), "true".into());
            state.context_remove(Resource::new_borrow(0), "consumer.anonymous".into());
            state.context_remove(Resource::new_borrow(0), "never-set".into());
            assert_eq!(state.context_get(Resource::new_borrow(0), "consumer.anonymous".into()), None);
            assert!(!state.has_body(Resource::new_borrow(0)));
        }
        let mut state = in_call(false, false);
        if let Some(r) = state.request.as_mut() {
            r.client_body = true;
        }
        assert!(state.has_body(Resource::new_borrow(0)));
    }

    /// A set replaces every value: one refused for its value leaves none of the old ones, on
    /// the request (not its `Host`) and the response; an append or an invalid name changes
    /// nothing.
    #[test]
    fn a_set_refused_for_its_value_leaves_none_of_the_old_ones() {
        let mut state = in_call(false, false);
        if let Some(r) = state.request.as_mut() {
            for (name, value) in [("x-tenant", "forged"), ("x-kept", "client"), ("host", "example.com")] {
                r.headers.insert(name, HeaderValue::from_static(value));
            }
        }
        HostRequest::set_header(&mut state, Resource::new_borrow(0), "x-tenant".into(), b"t1\x01".to_vec());
        HostRequest::append_header(&mut state, Resource::new_borrow(0), "x-kept".into(), b"a\nb".to_vec());
        HostRequest::set_header(&mut state, Resource::new_borrow(0), "host".into(), b"a\nb".to_vec());
        HostRequest::set_header(&mut state, Resource::new_borrow(0), "x kept".into(), b"1".to_vec());
        let headers = &state.request.as_ref().expect("a request").headers;
        assert_eq!(headers.get("x-tenant"), None);
        assert_eq!(headers.get("x-kept"), Some(&HeaderValue::from_static("client")));
        assert_eq!(headers.get("host"), Some(&HeaderValue::from_static("example.com")));
    }

    /// `request.edit` makes each change as its own method would: validated, in order, the
    /// request read-only in `on-response` but for the context, and at most
    /// [`MAX_EDITS_PER_CALL`] per call.
    #[test]
    fn edit_makes_each_change_as_its_own_method_would() {
        use super::super::airlock::plugin::types::Header;
        let header = |name: &str, value: &[u8]| Header { name: name.into(), value: value.to_vec() };
        let mut state = in_call(false, false);
        if let Some(r) = state.request.as_mut() {
            r.headers.insert("x-gone", HeaderValue::from_static("secret"));
            r.context.set("consumer.anonymous".into(), "true".into()).expect("room");
        }
        state.edit(
            Resource::new_borrow(0),
            vec![
                WitRequestEdit::SetHeader(header("X-A", b"1")),
                WitRequestEdit::AppendHeader(header("x-a", b"2")),
                WitRequestEdit::RemoveHeader("X-Gone".into()),
                WitRequestEdit::SetHeader(header("bad name", b"1")),
                WitRequestEdit::SetHeader(header("content-length", b"1")),
                WitRequestEdit::AppendHeader(header("x-ctl", b"a\nb")),
                WitRequestEdit::ContextSet(("consumer".into(), "alice".into())),
                WitRequestEdit::ContextRemove("consumer.anonymous".into()),
                WitRequestEdit::EditResponse(WitResponseEdit::Set(header("x-r", b"1"))),
                WitRequestEdit::EditResponse(WitResponseEdit::Remove("bad name".into())),
            ],
        );
        let request = state.request.as_deref_mut().expect("request");
        assert_eq!(header_all(&request.headers, "x-a"), [b"1".to_vec(), b"2".to_vec()], "set, then append");
        assert_eq!(request.headers.get("x-gone"), None);
        assert_eq!(request.headers.get("content-length"), None, "the gateway's own header is not a plugin's to set");
        assert_eq!(request.headers.get("x-ctl"), None, "a value with a line break is ignored");
        assert_eq!(request.headers.keys_len(), 1, "only x-a");
        assert_eq!(request.context.get("consumer"), Some("alice"));
        assert_eq!(request.context.get("consumer.anonymous"), None);
        let mut response = HeaderMap::new();
        request.response_edits.apply(0, &mut response, HeaderBound::NONE, "p", "id");
        assert_eq!(response.len(), 1, "the valid response edit was recorded, the invalid one not: {response:?}");
        assert_eq!(response.get("x-r").map(|v| v.as_bytes()), Some(&b"1"[..]));

        // In on-response only the context changes.
        let mut state = in_call(false, true);
        state.edit(
            Resource::new_borrow(0),
            vec![
                WitRequestEdit::SetHeader(header("x-a", b"1")),
                WitRequestEdit::ContextSet(("consumer".into(), "bob".into())),
                WitRequestEdit::EditResponse(WitResponseEdit::Set(header("x-r", b"1"))),
            ],
        );
        let request = state.request.as_deref_mut().expect("request");
        assert_eq!(request.headers.get("x-a"), None, "read-only in on-response");
        assert_eq!(request.context.get("consumer"), Some("bob"), "the context stays writable");
        let mut response = HeaderMap::new();
        request.response_edits.apply(0, &mut response, HeaderBound::NONE, "p", "id");
        assert!(response.is_empty(), "no response edit from on-response");

        // Past MAX_EDITS_PER_CALL, the rest of the call is ignored.
        let mut state = in_call(false, false);
        let edits = (0..MAX_EDITS_PER_CALL + 10).map(|i| WitRequestEdit::ContextSet(("n".into(), i.to_string()))).collect();
        state.edit(Resource::new_borrow(0), edits);
        let last = (MAX_EDITS_PER_CALL - 1).to_string();
        assert_eq!(state.request.as_ref().and_then(|r| r.context.get("n")), Some(last.as_str()));
    }

    #[test]
    fn header_names_are_kept_as_each_plugin_spells_them() {
        let mut names = HeaderNames::default();
        let lower = HeaderName::from_static("x-api-key");
        assert_eq!(names.parse("X-Api-Key"), Some(lower.clone()));
        assert_eq!(names.parse("x-api-key"), Some(lower.clone()));
        assert_eq!(names.parse("X-Api-Key"), Some(lower));
        assert_eq!(names.0.len(), 2, "one entry per spelling");
        assert_eq!(names.parse("bad name"), None);
        assert_eq!(names.0.len(), 2, "an invalid name is not kept");
        for i in 0..HeaderNames::MAX {
            assert!(names.parse(&format!("x-{i}")).is_some());
        }
        assert_eq!(names.0.len(), HeaderNames::MAX, "at most MAX kept; names past it are still parsed");
        assert_eq!(names.parse("x-past-the-cap"), Some(HeaderName::from_static("x-past-the-cap")));
    }

    #[test]
    fn response_edits_from_plugins_are_validated() {
        let log = LogBudget::new("p".into());
        let mut names = HeaderNames::default();
        use super::super::airlock::plugin::types::Header;
        let header = |name: &str, value: &[u8]| Header { name: name.into(), value: value.to_vec() };
        assert_eq!(
            response_edit(&log, &mut names, WitResponseEdit::Set(header("X-A", b"1"))),
            Some(ResponseEdit::Set(HeaderName::from_static("x-a"), HeaderValue::from_static("1")))
        );
        assert_eq!(response_edit(&log, &mut names, WitResponseEdit::Append(header("bad name", b"1"))), None);
        assert_eq!(response_edit(&log, &mut names, WitResponseEdit::Add(header("x-a", b"line\nbreak"))), None);
        assert_eq!(response_edit(&log, &mut names, WitResponseEdit::Remove("".into())), None);
        assert_eq!(response_edit(&log, &mut names, WitResponseEdit::Rename(("x-a".into(), "bad:name".into()))), None);
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
        assert!(!valid_path("/a#frag"), "a fragment would be dropped with what follows");
        assert!(!valid_path("/\u{f8}"), "raw non-ASCII is not a request target");
        assert!(valid_path("/%C3%B8"));
        assert!(valid_query("a=1&b=%23"));
        assert!(!valid_query("a#b"));
        assert!(!valid_query("a b"));
        assert!(!valid_query("q=\u{f8}"));
    }

    #[test]
    fn connect_and_trace_are_not_methods_a_plugin_can_set() {
        let mut state = HostState::new("t".into(), 1 << 20, std::time::Duration::from_millis(10));
        state.request = Some(Box::new(crate::plugin_trial::parse_request("t.http", b"GET / HTTP/1.1\n\n").unwrap()));
        for (asked, got) in [("PUT", "PUT"), ("CONNECT", "PUT"), ("TRACE", "PUT"), ("bad method", "PUT"), ("PURGE", "PURGE")] {
            state.set_method(Resource::new_own(0), asked.into());
            assert_eq!(state.request.as_ref().unwrap().method.as_str(), got, "{asked}");
        }
    }

    #[test]
    fn setters_validate_keep_bytes_and_hold_the_bound() {
        let mut state = HostState::new("t".into(), 1 << 20, std::time::Duration::from_millis(10));
        let mut request = crate::plugin_trial::parse_request("t.http", b"GET / HTTP/1.1\n\n").unwrap();
        request.header_limits.request = HeaderBound { count: 2, bytes: usize::MAX };
        state.request = Some(Box::new(request));
        let headers = |state: &HostState| state.request.as_ref().unwrap().headers.clone();
        state.put_header(Side::Request, "set-header", "X-Bin", vec![0xff, 0xfe, b'a'], true);
        assert_eq!(header_first(&headers(&state), "x-bin"), Some(vec![0xff, 0xfe, b'a']), "non-UTF-8 bytes survive");
        state.put_header(Side::Request, "set-header", "bad name", b"v".to_vec(), true);
        state.put_header(Side::Request, "set-header", "x-ctl", b"a\nb".to_vec(), true);
        assert_eq!(headers(&state).len(), 1, "an invalid name or value is ignored");
        state.put_header(Side::Request, "append-header", "X-N", b"1".to_vec(), false);
        state.put_header(Side::Request, "append-header", "x-n", b"2".to_vec(), false);
        assert_eq!(header_all(&headers(&state), "x-n"), [b"1".to_vec()], "a third line is past the bound");
        state.put_header(Side::Request, "set-header", "x-N", b"3".to_vec(), true);
        assert_eq!(header_all(&headers(&state), "x-n"), [b"3".to_vec()], "a set replaces");
        assert_eq!(state.header_names.0.len(), 5, "X-Bin, x-ctl, X-N, x-n and x-N: each spelling parsed once");
        state.request_read_only = true;
        state.put_header(Side::Request, "set-header", "x-bin", b"v".to_vec(), true);
        assert_eq!(header_first(&headers(&state), "x-bin"), Some(vec![0xff, 0xfe, b'a']), "read-only in on-response");
    }

    /// The request headers' byte count is kept through the writes and removals of one call and
    /// of the calls after it (each plugin of a chain), and stays what counting the map gives: a
    /// removal frees its bytes for the next write, a write takes them, a refused write none.
    #[test]
    fn the_request_headers_count_is_kept_true_across_calls() {
        let fresh = || HostState::new("t".into(), 1 << 20, std::time::Duration::from_millis(10));
        let mut request = crate::plugin_trial::parse_request("t.http", b"GET / HTTP/1.1\nx-big: 0123456789012345678901234567890123456789\n\n").unwrap();
        // x-big's line is 49 bytes of the 70.
        request.header_limits.request = HeaderBound { count: 100, bytes: 70 };
        let true_count = |state: &HostState| {
            let r = state.request.as_ref().unwrap();
            if let Some(counted) = r.header_tally.counted() {
                assert_eq!(counted, crate::exchange::header_lines_bytes(&r.headers), "{:?}", r.headers);
            }
            r.header_tally.counted()
        };
        let mut first = fresh();
        first.request = Some(Box::new(request));
        first.put_header(Side::Request, "set-header", "x-a", b"1".to_vec(), true);
        assert_eq!(true_count(&first), Some(49 + 8), "counted at the first write, with it");
        first.put_header(Side::Request, "set-header", "x-long", vec![b'v'; 20], true);
        assert_eq!(true_count(&first), Some(57), "30 more bytes would pass 70: refused, not counted");
        first.remove_request_header("X-Big");
        assert_eq!(true_count(&first), Some(8), "a removal frees its line's bytes");
        // The next plugin's call: the same request, the count with it.
        let mut second = fresh();
        second.request = first.request.take();
        second.put_header(Side::Request, "set-header", "x-long", vec![b'v'; 20], true);
        assert_eq!(true_count(&second), Some(38), "admitted now that x-big is gone");
        second.put_header(Side::Request, "append-header", "x-a", vec![b'w'; 20], false);
        assert_eq!(true_count(&second), Some(65), "an append adds its line");
        second.put_header(Side::Request, "set-header", "x-a", b"2".to_vec(), true);
        assert_eq!(true_count(&second), Some(38), "a set replaces both x-a lines with one");
        second.put_header(Side::Request, "set-header", "x-c", vec![b'c'; 25], true);
        assert_eq!(true_count(&second), Some(70), "up to the bound exactly");
        second.remove_request_header("x-nothing");
        second.put_header(Side::Request, "set-header", "x-d", Vec::new(), true);
        assert_eq!(true_count(&second), Some(70), "nothing removed, and no room for x-d");
        second.remove_request_header("x-c");
        second.put_header(Side::Request, "append-header", "x-r", b"1".to_vec(), false);
        second.put_header(Side::Request, "append-header", "x-r", b"2".to_vec(), false);
        assert_eq!(true_count(&second), Some(38 + 8 + 8));
        second.remove_request_header("x-r");
        assert_eq!(true_count(&second), None, "two lines removed at once: counted again at the next write");
        second.put_header(Side::Request, "set-header", "x-e", b"1".to_vec(), true);
        assert_eq!(true_count(&second), Some(38 + 8));
        let r = second.request.as_mut().unwrap();
        let snapshot = r.snapshot();
        r.restore(snapshot);
        assert_eq!(r.header_tally.counted(), None, "a restore forgets it");
    }

    /// The request line a plugin makes is held to `limits.max_header_bytes` with the headers, as
    /// a client's is: a path, query or method past it is ignored (the upstream got a 60 KB path).
    #[test]
    fn a_plugins_request_line_is_held_to_the_header_byte_limit() {
        let mut state = HostState::new("t".into(), 1 << 20, std::time::Duration::from_millis(10));
        let mut request = crate::plugin_trial::parse_request("t.http", b"GET /start HTTP/1.1\nx-a: b\n\n").unwrap();
        request.header_limits.request = HeaderBound { count: 100, bytes: 200 };
        state.request = Some(Box::new(request));
        let long = format!("/{}", "a".repeat(300));
        state.set_path(Resource::new_borrow(0), long);
        assert_eq!(state.request.as_ref().unwrap().path, "/start", "a path past the limit is ignored");
        state.set_path(Resource::new_borrow(0), format!("/{}", "a".repeat(100)));
        assert_eq!(state.request.as_ref().unwrap().path.len(), 101, "one within it is taken");
        state.set_query(Resource::new_borrow(0), Some(format!("q={}", "b".repeat(150))));
        assert_eq!(state.request.as_ref().unwrap().query, None, "a query taking the line past it is ignored");
        state.set_method(Resource::new_own(0), "X".repeat(150));
        assert_eq!(state.request.as_ref().unwrap().method.as_str(), "GET", "so is a method");
        state.set_method(Resource::new_own(0), "PURGE".into());
        assert_eq!(state.request.as_ref().unwrap().method.as_str(), "PURGE");
    }

    #[test]
    fn a_plugins_path_is_normalized_like_a_clients() {
        let mut state = HostState::new("t".into(), 1 << 20, std::time::Duration::from_millis(10));
        state.request = Some(Box::new(crate::plugin_trial::parse_request("t.http", b"GET /start HTTP/1.1\n\n").unwrap()));
        let mut set = |path: &str| {
            state.set_path(Resource::new_borrow(0), path.to_owned());
            state.request.as_ref().unwrap().path.clone()
        };
        assert_eq!(set("/v2/users/../orders/./7"), "/v2/orders/7");
        assert_eq!(set("/a/%2e%2e/b"), "/b", "an encoded dot counts");
        // Above the root, or a dot segment behind an encoded slash: refused, the path kept.
        for refused in ["/../secret", "/a/%2e%2e/%2E%2E/secret", "/..%2fadmin", "/a#frag"] {
            assert_eq!(set(refused), "/b", "{refused}");
        }
    }
}
