//! `airlock:plugin/fixed-edits`: the changes a chain entry makes to every request, declared once
//! while it is configured and then made by the gateway itself, natively, with no call into the
//! plugin per request.
//!
//! `declare` checks each change as the `request` methods check it per request, but answers a
//! bad one with an `err` (the plugin returns it as its config error) rather than a log line: a
//! fixed change that is wrong is wrong on every request. `declare-templated` takes the same
//! changes and header writes whose value the gateway builds per request, where the change is
//! made, from what the `request` methods would have given the plugin there (a route parameter,
//! the request id, the route's id, the client's IP, a request header, a query parameter, a
//! context value): such a value is checked as it is built, as `request.edit` checks one.
//! `declare-rules` adds the request header rules that look at the request to decide what to
//! write (set if absent, rename), made as the plugin's own reads and writes would have made them.
//! [`FixedEdits`] is what the chain entry keeps; [`FixedEdits::apply_to_request`] and
//! [`FixedEdits::apply_to_response`] make the changes under the same header limits as
//! `request.edit`.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{Entry, HOST, HeaderName, HeaderValue};

use super::HostState;
use super::airlock::plugin::fixed_edits::{FixedEdit as WitFixedEdit, FixedRule as WitFixedRule, Host, StatusRange, ValuePart};
use crate::runtime::response_bodies::ResponseBodies;
use super::airlock::plugin::types::{RequestEdit as WitRequestEdit, ResponseEdit as WitResponseEdit};
use super::log::plugin_warn;
use super::types::{MAX_EDITS_PER_CALL, MAX_HEADER_VALUE_BYTES};
use crate::exchange::{Context, HeaderBound, HeaderTally, RefusalLog, RequestState, ResponseEdit};
use crate::telemetry::warn_throttle::WarnThrottle;

/// Most bytes of names and values all of an entry's fixed changes may hold together: the gateway
/// keeps them for as long as the config serves, outside the plugin's memory cap. Four times the
/// default response header limit (a request's is half that), so no header set a request or a
/// response could carry is refused for it.
pub const MAX_FIXED_BYTES: usize = 256 * 1024;

/// Most pieces one built value may have: each variable is a copy per request, so a value of
/// thousands of them would make the gateway write megabytes a request for a short declaration.
pub const MAX_VALUE_PARTS: usize = 64;

/// Least time between two log lines about built values not written (a parameter or header an
/// attacker can fill with a control character on every request).
const BUILT_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A chain entry's fixed changes, checked: what its `configure` declared.
#[derive(Debug)]
pub struct FixedEdits {
    /// Changes to the request, in order.
    request: Vec<RequestChange>,
    /// Changes to the response, in order, made where the entry's response phase runs.
    response: Vec<ResponseChange>,
    /// Built values not written for being invalid, logged at most once per interval.
    refused_values: WarnThrottle,
}

impl Default for FixedEdits {
    fn default() -> Self {
        Self { request: Vec::new(), response: Vec::new(), refused_values: WarnThrottle::new(BUILT_REFUSAL_LOG_INTERVAL) }
    }
}

/// One fixed change to the request.
#[derive(Debug, PartialEq)]
enum RequestChange {
    /// Write the header (a `host` is always replaced: there is one).
    Write(Write, HeaderName, Value),
    /// Move every value of the first header to the second, replacing the second's; nothing
    /// when the request has none of the first.
    Rename(HeaderName, HeaderName),
    /// Remove every value of the header.
    Remove(HeaderName),
    /// Set a context key to a value.
    ContextSet(String, String),
    /// Remove a context key.
    ContextRemove(String),
}

/// One fixed change to the response.
#[derive(Debug, PartialEq)]
enum ResponseChange {
    /// The same change on every response.
    Same(ResponseEdit),
    /// Set, add or append a header with a value built per request.
    Built(Write, HeaderName, BuiltValue),
}

/// What a header write does with the values the header has.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Write {
    /// Replaces them.
    Set,
    /// Writes only when there are none.
    Add,
    /// Adds the value after them.
    Append,
}

impl Write {
    /// This write of `value` to the response header `name`, as a response edit.
    fn on_response(self, name: HeaderName, value: HeaderValue) -> ResponseEdit {
        match self {
            Write::Set => ResponseEdit::Set(name, value),
            Write::Add => ResponseEdit::Add(name, value),
            Write::Append => ResponseEdit::Append(name, value),
        }
    }
}

/// The value of a request header write: the same on every request, or built per request.
#[derive(Debug, PartialEq)]
enum Value {
    Same(HeaderValue),
    Built(BuiltValue),
}

/// A header value the gateway builds on each request from its pieces.
#[derive(Debug, PartialEq)]
struct BuiltValue(Vec<Piece>);

/// One piece of a [`BuiltValue`].
#[derive(Debug, PartialEq)]
enum Piece {
    Literal(Bytes),
    RequestId,
    RouteId,
    ClientIp,
    Param(String),
    Header(HeaderName),
    Query(String),
    Context(String),
}

impl BuiltValue {
    /// The pieces a plugin declared, checked: at most [`MAX_VALUE_PARTS`], and literal text a
    /// header value can hold.
    fn checked(parts: Vec<ValuePart>) -> Result<Self, String> {
        if parts.len() > MAX_VALUE_PARTS {
            return Err(format!("a built value of {} pieces: at most {MAX_VALUE_PARTS}", parts.len()));
        }
        let piece = |part: ValuePart| match part {
            ValuePart::Literal(text) => {
                if HeaderValue::from_bytes(&text).is_err() {
                    return Err("a literal piece holds control characters".to_owned());
                }
                Ok(Piece::Literal(Bytes::from(text)))
            }
            ValuePart::RequestId => Ok(Piece::RequestId),
            ValuePart::RouteId => Ok(Piece::RouteId),
            ValuePart::ClientIp => Ok(Piece::ClientIp),
            ValuePart::Param(name) => Ok(Piece::Param(name)),
            ValuePart::Header(name) => header_name(&name).map(Piece::Header),
            ValuePart::Query(name) => Ok(Piece::Query(name)),
            ValuePart::Context(key) => Ok(Piece::Context(key)),
        };
        parts.into_iter().map(piece).collect::<Result<_, _>>().map(Self)
    }

    /// The value for `request` as it is where the change is made: what the plugin would have
    /// read through `request` there and written back. `Err` says why none can be written (a
    /// parameter holding a control character).
    fn build(&self, request: &RequestState) -> Result<HeaderValue, &'static str> {
        // A request header or the request id alone is already a header value: shared, not
        // copied (an absent header is an empty value, as below).
        match self.0.as_slice() {
            [Piece::Header(name)] => {
                return match request.headers.get(name) {
                    Some(value) if value.len() > MAX_HEADER_VALUE_BYTES => Err("is longer than 64 KiB"),
                    Some(value) => Ok(value.clone()),
                    None => Ok(HeaderValue::from_static("")),
                };
            }
            [Piece::RequestId] if let Some(id) = &request.request_id_header => return Ok(id.clone()),
            _ => {}
        }
        let mut out = Vec::new();
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => out.extend_from_slice(text),
                Piece::RequestId => out.extend_from_slice(request.request_id.as_bytes()),
                Piece::RouteId => out.extend_from_slice(request.route_id.as_bytes()),
                Piece::ClientIp => out.extend_from_slice(crate::proxy::headers::ip_string(request.client_ip).as_bytes()),
                Piece::Param(name) => {
                    if let Some((_, value)) = request.params.iter().find(|(k, _)| k == name) {
                        out.extend_from_slice(value.as_bytes());
                    }
                }
                Piece::Header(name) => {
                    if let Some(value) = request.headers.get(name) {
                        out.extend_from_slice(value.as_bytes());
                    }
                }
                Piece::Query(name) => {
                    if let Some(value) = request.query.as_deref().and_then(|q| super::types::query_param(q, name)) {
                        out.extend_from_slice(value.as_bytes());
                    }
                }
                Piece::Context(key) => {
                    if let Some(value) = request.context.get(key) {
                        out.extend_from_slice(value.as_bytes());
                    }
                }
            }
            if out.len() > MAX_HEADER_VALUE_BYTES {
                return Err("is longer than 64 KiB");
            }
        }
        HeaderValue::from_maybe_shared(Bytes::from(out)).map_err(|_| "holds control characters")
    }

    /// The value's bytes when every piece is literal (nothing to build per request).
    fn literal(&self) -> Option<Vec<u8>> {
        let literal = |piece: &Piece| match piece {
            Piece::Literal(text) => Some(text.clone()),
            _ => None,
        };
        self.0.iter().map(literal).collect::<Option<Vec<Bytes>>>().map(|texts| texts.concat())
    }

    /// The bytes of the literal pieces and the names read.
    fn bytes(parts: &[ValuePart]) -> usize {
        parts.iter().map(|p| match p {
            ValuePart::Literal(text) => text.len(),
            ValuePart::Param(name) | ValuePart::Header(name) | ValuePart::Query(name) | ValuePart::Context(name) => name.len(),
            ValuePart::RequestId | ValuePart::RouteId | ValuePart::ClientIp => 0,
        }).sum()
    }
}

impl Host for HostState {
    fn declare(&mut self, edits: Vec<WitRequestEdit>) -> Result<(), String> {
        self.declare_templated(edits.into_iter().map(WitFixedEdit::Same).collect())
    }

    fn declare_templated(&mut self, edits: Vec<WitFixedEdit>) -> Result<(), String> {
        self.declare_rules(edits.into_iter().map(WitFixedRule::Edit).collect())
    }

    fn declare_rules(&mut self, edits: Vec<WitFixedRule>) -> Result<(), String> {
        if !self.configuring {
            plugin_warn!(&self.log, "fixed-edits declaration ignored: it is only heard during configure");
            return Err("fixed edits are declared during `configure` only".to_owned());
        }
        let fixed = FixedEdits::checked(edits)?;
        self.fixed_edits = (!fixed.is_empty()).then_some(fixed);
        Ok(())
    }

    fn declare_response_bodies(&mut self, statuses: Vec<StatusRange>, media_types: Vec<String>) -> Result<(), String> {
        if !self.configuring {
            plugin_warn!(&self.log, "response-body declaration ignored: it is only heard during configure");
            return Err("the responses read are declared during `configure` only".to_owned());
        }
        let ranges = statuses.into_iter().map(|r| (r.first, r.last)).collect();
        self.response_bodies = Some(ResponseBodies::checked(ranges, media_types)?);
        Ok(())
    }
}

impl FixedEdits {
    /// The changes `edits` ask for, each checked; an `Err` names the first refused one (counted
    /// from 1) and why.
    pub fn checked(edits: Vec<WitFixedRule>) -> Result<Self, String> {
        if edits.len() > MAX_EDITS_PER_CALL {
            return Err(format!("{} fixed edits declared: at most {MAX_EDITS_PER_CALL}", edits.len()));
        }
        let bytes: usize = edits.iter().map(fixed_rule_bytes).sum();
        if bytes > MAX_FIXED_BYTES {
            return Err(format!("the fixed edits hold {bytes} bytes of names and values: at most {MAX_FIXED_BYTES}"));
        }
        let mut fixed = Self::default();
        // The context the changes leave, to hold them to its limits as a request's context is.
        let mut context = Context::default();
        for (at, edit) in edits.into_iter().enumerate() {
            fixed.check(edit, &mut context).map_err(|(what, why)| format!("fixed edit {} (`{what}`): {why}", at + 1))?;
        }
        Ok(fixed)
    }

    /// Checks one change and keeps it; `Err` is the change's kind and why it is refused.
    fn check(&mut self, rule: WitFixedRule, context: &mut Context) -> Result<(), (&'static str, String)> {
        // The header writes: which, named how in an error, and whether on the request.
        let (write, what, header, on_request) = match rule {
            WitFixedRule::Edit(WitFixedEdit::Same(edit)) => return self.check_same(edit, context),
            WitFixedRule::Edit(WitFixedEdit::SetHeader(h)) => (Write::Set, "set-header", h, true),
            WitFixedRule::Edit(WitFixedEdit::AppendHeader(h)) => (Write::Append, "append-header", h, true),
            WitFixedRule::AddHeader(h) => (Write::Add, "add-header", h, true),
            WitFixedRule::Edit(WitFixedEdit::ResponseSet(h)) => (Write::Set, "response-set", h, false),
            WitFixedRule::Edit(WitFixedEdit::ResponseAdd(h)) => (Write::Add, "response-add", h, false),
            WitFixedRule::Edit(WitFixedEdit::ResponseAppend(h)) => (Write::Append, "response-append", h, false),
            WitFixedRule::RenameHeader(rename) => {
                let from = header_name(&rename.old_name).map_err(|why| ("rename-header", why))?;
                let to = writable_name(&rename.new_name).map_err(|why| ("rename-header", why))?;
                if from == to {
                    return Err(("rename-header", format!("renames `{from}` to itself")));
                }
                self.request.push(RequestChange::Rename(from, to));
                return Ok(());
            }
        };
        let name = writable_name(&header.name).map_err(|why| (what, why))?;
        let built = BuiltValue::checked(header.value).map_err(|why| (what, why))?;
        // Nothing to build: the value is checked now, whole, as `declare` checks a literal one.
        let literal = match built.literal() {
            Some(bytes) if on_request => Some(request_header(&header.name, bytes).map_err(|why| (what, why))?.1),
            Some(bytes) => Some(self::header(&header.name, bytes).map_err(|why| (what, why))?.1),
            None => None,
        };
        if on_request {
            // One `Host`: an append replaces it, as `request.append-header` does.
            let write = if write == Write::Append && name == HOST { Write::Set } else { write };
            self.request.push(RequestChange::Write(write, name, literal.map_or(Value::Built(built), Value::Same)));
        } else {
            self.response.push(match literal {
                Some(value) => ResponseChange::Same(write.on_response(name, value)),
                None => ResponseChange::Built(write, name, built),
            });
        }
        Ok(())
    }

    /// Checks a change made the same on every request (`declare`'s kind) and keeps it.
    fn check_same(&mut self, edit: WitRequestEdit, context: &mut Context) -> Result<(), (&'static str, String)> {
        match edit {
            WitRequestEdit::SetHeader(h) => {
                let (name, value) = request_header(&h.name, h.value).map_err(|why| ("set-header", why))?;
                self.request.push(RequestChange::Write(Write::Set, name, Value::Same(value)));
            }
            WitRequestEdit::AppendHeader(h) => {
                let (name, value) = request_header(&h.name, h.value).map_err(|why| ("append-header", why))?;
                // One `Host`: an append replaces it, as `request.append-header` does.
                let write = if name == HOST { Write::Set } else { Write::Append };
                self.request.push(RequestChange::Write(write, name, Value::Same(value)));
            }
            WitRequestEdit::RemoveHeader(name) => {
                self.request.push(RequestChange::Remove(header_name(&name).map_err(|why| ("remove-header", why))?));
            }
            WitRequestEdit::ContextSet((key, value)) => {
                if context.set(key.clone(), value.clone()).is_err() {
                    let why = format!("the context holds at most {} keys and {} bytes", Context::MAX_KEYS, Context::MAX_BYTES);
                    return Err(("context-set", why));
                }
                self.request.push(RequestChange::ContextSet(key, value));
            }
            WitRequestEdit::ContextRemove(key) => {
                context.remove(&key);
                self.request.push(RequestChange::ContextRemove(key));
            }
            WitRequestEdit::EditResponse(edit) => {
                self.response.push(ResponseChange::Same(response_edit(edit).map_err(|why| ("edit-response", why))?));
            }
        }
        Ok(())
    }

    /// Whether there is no change at all.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    /// How many changes there are, request and response: for the admin inventory, which shows
    /// the count and not the values (a fixed header may carry a credential for the upstream).
    pub fn len(&self) -> usize {
        self.request.len() + self.response.len()
    }

    /// Whether there are changes to the response.
    pub fn edits_response(&self) -> bool {
        !self.response.is_empty()
    }

    /// Whether a response change's value is built from a request header: the request's headers
    /// must then outlast the upstream call (they are otherwise moved into it).
    pub fn response_reads_request_headers(&self) -> bool {
        self.response.iter().any(|change| match change {
            ResponseChange::Built(_, _, BuiltValue(pieces)) => pieces.iter().any(|p| matches!(p, Piece::Header(_))),
            ResponseChange::Same(_) => false,
        })
    }

    /// Makes the request changes on `request`, in order, for the entry `plugin`, each add and
    /// rename decided on the request as the changes before it left it: a header write that would
    /// take the request past its header limits is not made (logged once), nor a built value that
    /// is not a valid one, nor a value renamed to `host` that is not `host[:port]` (logged at most
    /// once per interval).
    pub fn apply_to_request(&self, request: &mut RequestState, plugin: &str) {
        let mut refusals = RefusalLog::default();
        for change in &self.request {
            match change {
                RequestChange::Write(write, name, value) => {
                    if *write == Write::Add && request.headers.contains_key(name) {
                        continue;
                    }
                    let value = match value {
                        Value::Same(value) => value.clone(),
                        Value::Built(value) => match value.build(request).and_then(|v| plugin_value(name, v)) {
                            Ok(value) => value,
                            Err(why) => {
                                self.refused_value(plugin, &request.request_id, name, why);
                                // A set replaces every value: the client's do not stay for want
                                // of the new one (a claim with a control character must not
                                // leave a forged `x-tenant` in place).
                                if *write == Write::Set && *name != HOST {
                                    request.remove_header(name);
                                }
                                continue;
                            }
                        },
                    };
                    write_request_header(request, &mut refusals, plugin, name.clone(), value, *write != Write::Append);
                }
                RequestChange::Rename(from, to) => {
                    let Entry::Occupied(moved) = request.headers.entry(from) else { continue };
                    let values: Vec<HeaderValue> = moved.remove_entry_mult().1.collect();
                    // Both names lose the client's values: neither may come back as a trailer.
                    request.removed_headers.insert(from);
                    request.removed_headers.insert(to);
                    request.header_tally.forget();
                    request.header_tally.remove(&mut request.headers, to);
                    for value in values {
                        match plugin_value(to, value) {
                            // Each as `request.append-header` writes it (a `host` replaced).
                            Ok(value) => write_request_header(request, &mut refusals, plugin, to.clone(), value, *to == HOST),
                            Err(why) => self.refused_value(plugin, &request.request_id, to, why),
                        }
                    }
                }
                RequestChange::Remove(name) => request.remove_header(name),
                RequestChange::ContextSet(key, value) => {
                    if request.context.set(key.clone(), value.clone()).is_err() {
                        let request_id = &*request.request_id;
                        tracing::warn!(plugin, request_id, key, "fixed context value ignored: the request's context is full");
                    }
                }
                RequestChange::ContextRemove(key) => request.context.remove(key),
            }
        }
    }

    /// Makes the response changes on `headers` for `request`, in order, as one run of writes
    /// counted in `tally`: one that would take them past `bound` is not made (logged once), nor
    /// a built value that is not a valid one (logged at most once per interval).
    pub fn apply_to_response(&self, headers: &mut HeaderMap, bound: HeaderBound, tally: &mut HeaderTally, plugin: &str, request: &RequestState) {
        let mut refusals = RefusalLog::default();
        for change in &self.response {
            let edit = match change {
                ResponseChange::Same(edit) => edit.clone(),
                ResponseChange::Built(write, name, value) => match value.build(request) {
                    Ok(value) => write.on_response(name.clone(), value),
                    Err(why) => {
                        self.refused_value(plugin, &request.request_id, name, why);
                        // As on the request: a set leaves none of the old values.
                        if *write != Write::Set {
                            continue;
                        }
                        ResponseEdit::Remove(name.clone())
                    }
                },
            };
            if !edit.make(headers, bound, tally) {
                refusals.refused(plugin, &request.request_id, "fixed response edit", bound);
            }
        }
    }

    /// Logs a built value not written, at most once per [`BUILT_REFUSAL_LOG_INTERVAL`] with the
    /// count since the last line: a client can make one on every request.
    fn refused_value(&self, plugin: &str, request_id: &str, name: &HeaderName, why: &str) {
        if let Some(count) = self.refused_values.record() {
            tracing::warn!(plugin, request_id, header = %name, count, "fixed edit's built value ignored: it {why} (count: such values since the last line)");
        }
    }
}

/// Writes a request header a fixed change makes, held to the request's header limits (a write
/// past them is not made, logged once per request) as `request.edit` holds one.
fn write_request_header(request: &mut RequestState, refusals: &mut RefusalLog, plugin: &str, name: HeaderName, value: HeaderValue, replacing: bool) {
    let bound = request.header_limits.request;
    let host = name == HOST;
    if !bound.write(&mut request.header_tally, &mut request.headers, name, value, replacing) {
        request.past_limits = true;
        refusals.refused(plugin, &request.request_id, "fixed edit", bound);
    } else if host {
        request.host_from_plugin = true;
    }
}

/// `value`, unless it is longer than 64 KiB or for `host` and not `host[:port]`: held to the
/// rules `request.set-header` holds a plugin's value to. For values the gateway did not check
/// when they were declared (built, or moved by a rename).
fn plugin_value(name: &HeaderName, value: HeaderValue) -> Result<HeaderValue, &'static str> {
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err("is longer than 64 KiB");
    }
    if *name != HOST || crate::proxy::headers::valid_plugin_host(value.as_bytes()) { Ok(value) } else { Err("is not host[:port]") }
}

/// The bytes of the names and values `rule` holds.
fn fixed_rule_bytes(rule: &WitFixedRule) -> usize {
    match rule {
        WitFixedRule::Edit(edit) => fixed_edit_bytes(edit),
        WitFixedRule::AddHeader(h) => h.name.len() + BuiltValue::bytes(&h.value),
        WitFixedRule::RenameHeader(rename) => rename.old_name.len() + rename.new_name.len(),
    }
}

/// The bytes of the names and values `edit` holds.
fn fixed_edit_bytes(edit: &WitFixedEdit) -> usize {
    match edit {
        WitFixedEdit::Same(edit) => edit_bytes(edit),
        WitFixedEdit::SetHeader(h)
        | WitFixedEdit::AppendHeader(h)
        | WitFixedEdit::ResponseSet(h)
        | WitFixedEdit::ResponseAdd(h)
        | WitFixedEdit::ResponseAppend(h) => h.name.len() + BuiltValue::bytes(&h.value),
    }
}

/// The bytes of the names and values `edit` holds.
fn edit_bytes(edit: &WitRequestEdit) -> usize {
    let header = |h: &super::airlock::plugin::types::Header| h.name.len() + h.value.len();
    match edit {
        WitRequestEdit::SetHeader(h) | WitRequestEdit::AppendHeader(h) => header(h),
        WitRequestEdit::RemoveHeader(name) | WitRequestEdit::ContextRemove(name) => name.len(),
        WitRequestEdit::ContextSet((key, value)) => key.len() + value.len(),
        WitRequestEdit::EditResponse(edit) => match edit {
            WitResponseEdit::Set(h) | WitResponseEdit::Add(h) | WitResponseEdit::Append(h) | WitResponseEdit::AddToken(h) => header(h),
            WitResponseEdit::Remove(name) => name.len(),
            WitResponseEdit::Rename((from, to)) => from.len() + to.len(),
        },
    }
}

/// A valid header name.
fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not a valid header name"))
}

/// The name of a header a plugin writes: valid, and not one the gateway manages.
fn writable_name(name: &str) -> Result<HeaderName, String> {
    let name = header_name(name)?;
    if crate::proxy::headers::gateway_managed(&name) {
        return Err(format!("`{name}` is set by the gateway for each hop (message framing and connection), not by plugins"));
    }
    Ok(name)
}

/// A header a plugin writes: a writable name and a valid value of at most 64 KiB.
fn header(name: &str, value: Vec<u8>) -> Result<(HeaderName, HeaderValue), String> {
    let name = writable_name(name)?;
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err(format!("the value of `{name}` is {} bytes: at most {MAX_HEADER_VALUE_BYTES}", value.len()));
    }
    let value = HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| format!("the value of `{name}` holds control characters"))?;
    Ok((name, value))
}

/// Most bytes of a refused `host` value an error message shows.
const SHOWN_HOST_BYTES: usize = 80;

/// A header a plugin writes on the request: as [`header`], and a `host` only as `host[:port]`.
fn request_header(name: &str, value: Vec<u8>) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = header(name, value)?;
    if name == HOST && !crate::proxy::headers::valid_plugin_host(value.as_bytes()) {
        // The value, so the operator finds the key that wrote it (the first 80 bytes).
        let bytes = value.as_bytes();
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN_HOST_BYTES)]);
        let more = if bytes.len() > SHOWN_HOST_BYTES { "..." } else { "" };
        return Err(format!("a `host` must be host[:port], not `{shown}{more}`"));
    }
    Ok((name, value))
}

/// A response edit, checked as `request.edit-response` checks one.
fn response_edit(edit: WitResponseEdit) -> Result<ResponseEdit, String> {
    Ok(match edit {
        WitResponseEdit::Set(h) => header(&h.name, h.value).map(|(n, v)| ResponseEdit::Set(n, v))?,
        WitResponseEdit::Add(h) => header(&h.name, h.value).map(|(n, v)| ResponseEdit::Add(n, v))?,
        WitResponseEdit::Append(h) => header(&h.name, h.value).map(|(n, v)| ResponseEdit::Append(n, v))?,
        WitResponseEdit::AddToken(h) => header(&h.name, h.value).map(|(n, v)| ResponseEdit::AddToken(n, v))?,
        WitResponseEdit::Remove(name) => ResponseEdit::Remove(header_name(&name)?),
        WitResponseEdit::Rename((from, to)) => ResponseEdit::Rename(header_name(&from)?, writable_name(&to)?),
    })
}

#[cfg(test)]
mod tests {
    use super::super::airlock::plugin::fixed_edits::{HeaderRename, TemplatedHeader};
    use super::super::airlock::plugin::types::Header;
    use super::*;

    fn header(name: &str, value: &[u8]) -> Header {
        Header { name: name.into(), value: value.to_vec() }
    }

    fn request() -> RequestState {
        crate::plugin_trial::parse_request("t.http", b"GET / HTTP/1.1\nhost: example.com\nx-gone: 1\n\n").expect("a request")
    }

    /// `declare`'s changes as `declare-rules` takes them.
    fn same(edits: Vec<WitRequestEdit>) -> Vec<WitFixedRule> {
        rules(edits.into_iter().map(WitFixedEdit::Same).collect())
    }

    /// `declare-templated`'s changes as `declare-rules` takes them.
    fn rules(edits: Vec<WitFixedEdit>) -> Vec<WitFixedRule> {
        edits.into_iter().map(WitFixedRule::Edit).collect()
    }

    fn values(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
        headers.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect()
    }

    #[test]
    fn each_declared_change_is_checked_and_a_refused_one_is_named() {
        let refused = |edit: WitRequestEdit| {
            let edits = vec![WitRequestEdit::SetHeader(header("x-ok", b"1")), edit];
            FixedEdits::checked(same(edits)).expect_err("refused")
        };
        assert_eq!(refused(WitRequestEdit::SetHeader(header("bad name", b"1"))), "fixed edit 2 (`set-header`): `bad name` is not a valid header name");
        assert!(refused(WitRequestEdit::AppendHeader(header("Content-Length", b"1"))).starts_with("fixed edit 2 (`append-header`): `content-length` is set by the gateway"));
        assert_eq!(refused(WitRequestEdit::SetHeader(header("x-a", b"a\r\nb"))), "fixed edit 2 (`set-header`): the value of `x-a` holds control characters");
        assert_eq!(refused(WitRequestEdit::SetHeader(header("host", b"a@b"))), "fixed edit 2 (`set-header`): a `host` must be host[:port], not `a@b`");
        assert_eq!(refused(WitRequestEdit::SetHeader(header("host", b""))), "fixed edit 2 (`set-header`): a `host` must be host[:port], not ``");
        let long = refused(WitRequestEdit::SetHeader(header("host", &[b'@'; 200])));
        assert!(long.ends_with(&format!("not `{}...`", "@".repeat(SHOWN_HOST_BYTES))), "{long}");
        assert!(refused(WitRequestEdit::SetHeader(header("x-a", &vec![b'a'; MAX_HEADER_VALUE_BYTES + 1]))).contains("at most 65536"));
        assert!(refused(WitRequestEdit::RemoveHeader("a b".into())).starts_with("fixed edit 2 (`remove-header`)"));
        assert!(refused(WitRequestEdit::EditResponse(WitResponseEdit::Rename(("x-a".into(), "upgrade".into())))).starts_with("fixed edit 2 (`edit-response`): `upgrade`"));
        let big = "v".repeat(Context::MAX_BYTES);
        assert!(refused(WitRequestEdit::ContextSet(("k".into(), big))).starts_with("fixed edit 2 (`context-set`): the context holds at most"));
        let many = (0..=MAX_EDITS_PER_CALL).map(|_| WitRequestEdit::RemoveHeader("x-a".into())).collect();
        assert_eq!(FixedEdits::checked(same(many)).expect_err("too many"), "257 fixed edits declared: at most 256");
        let value = vec![b'v'; MAX_HEADER_VALUE_BYTES - 8];
        let large = |n: usize| (0..n).map(|i| WitRequestEdit::AppendHeader(header(&format!("x-{i}"), &value))).collect::<Vec<_>>();
        assert!(FixedEdits::checked(same(large(4))).is_ok(), "256 KiB all together");
        assert!(FixedEdits::checked(same(large(5))).expect_err("too large").ends_with("at most 262144"));
        // Removing the gateway's own headers is allowed, as `request.remove-header` allows it.
        assert!(FixedEdits::checked(same(vec![WitRequestEdit::RemoveHeader("upgrade".into())])).is_ok());
    }

    #[test]
    fn declare_is_heard_only_during_configure_and_the_last_call_counts() {
        let mut state = HostState::new("p".into(), 1 << 20, std::time::Duration::from_millis(10));
        let set = || vec![WitRequestEdit::SetHeader(header("x-a", b"1"))];
        assert!(state.declare(set()).is_err(), "outside configure");
        assert!(state.fixed_edits.is_none());
        state.configuring = true;
        assert_eq!(state.declare(set()), Ok(()));
        assert!(state.fixed_edits.as_ref().is_some_and(|f| !f.is_empty() && !f.edits_response()));
        assert!(state.declare(vec![WitRequestEdit::SetHeader(header("bad name", b"1"))]).is_err());
        assert!(state.fixed_edits.is_some(), "a refused declaration keeps the one before");
        assert_eq!(state.declare(vec![]), Ok(()));
        assert!(state.fixed_edits.is_none(), "`[]` declares none");
    }

    #[test]
    fn the_responses_read_are_declared_only_during_configure_and_checked() {
        let mut state = HostState::new("p".into(), 1 << 20, std::time::Duration::from_millis(10));
        let ok = || (vec![StatusRange { first: 200, last: 299 }], vec!["*/*+json".to_owned()]);
        let (statuses, media) = ok();
        assert!(state.declare_response_bodies(statuses, media).is_err(), "outside configure");
        assert!(state.response_bodies.is_none());
        state.configuring = true;
        let (statuses, media) = ok();
        assert_eq!(state.declare_response_bodies(statuses, media), Ok(()));
        let json = state.response_bodies.clone().expect("declared");
        let refused = state.declare_response_bodies(vec![StatusRange { first: 299, last: 200 }], Vec::new());
        assert!(refused.is_err_and(|e| e.contains("299-200")));
        assert_eq!(state.response_bodies, Some(json), "a refused declaration keeps the one before");
    }

    #[test]
    fn the_changes_are_made_on_every_request_in_order_within_the_limits() {
        let fixed = FixedEdits::checked(same(vec![
            WitRequestEdit::RemoveHeader("X-Gone".into()),
            WitRequestEdit::SetHeader(header("x-a", b"1")),
            WitRequestEdit::AppendHeader(header("x-a", b"2")),
            WitRequestEdit::AppendHeader(header("host", b"upstream.internal")),
            WitRequestEdit::ContextSet(("consumer".into(), "fixed".into())),
            WitRequestEdit::ContextRemove("consumer.anonymous".into()),
            WitRequestEdit::EditResponse(WitResponseEdit::Set(header("x-served-by", b"airlock"))),
            WitRequestEdit::EditResponse(WitResponseEdit::Add(header("x-kept", b"fixed"))),
        ]))
        .expect("valid");
        for _ in 0..2 {
            let mut req = request();
            req.context.set("consumer.anonymous".into(), "true".into()).expect("room");
            fixed.apply_to_request(&mut req, "p");
            assert_eq!(req.headers.get("x-gone"), None);
            assert_eq!(values(&req.headers, "x-a"), [b"1".to_vec(), b"2".to_vec()], "set, then append");
            assert_eq!(values(&req.headers, "host"), [b"upstream.internal".to_vec()], "one host, replaced");
            assert!(req.host_from_plugin);
            assert_eq!(req.context.get("consumer"), Some("fixed"));
            assert_eq!(req.context.get("consumer.anonymous"), None);
            let mut response = HeaderMap::new();
            response.insert("x-kept", HeaderValue::from_static("upstream"));
            fixed.apply_to_response(&mut response, HeaderBound::NONE, &mut HeaderTally::default(), "p", &req);
            assert_eq!(values(&response, "x-served-by"), [b"airlock".to_vec()]);
            assert_eq!(values(&response, "x-kept"), [b"upstream".to_vec()], "add keeps what is there");
        }
        // Past the request's header limits a write is not made; the rest still are.
        let mut req = request();
        req.header_limits.request = HeaderBound { count: 2, bytes: usize::MAX };
        fixed.apply_to_request(&mut req, "p");
        assert_eq!(values(&req.headers, "x-a"), [b"1".to_vec()], "the append would make a third line");
        assert_eq!(req.context.get("consumer"), Some("fixed"));
        let mut response = HeaderMap::new();
        fixed.apply_to_response(&mut response, HeaderBound { count: 1, bytes: usize::MAX }, &mut HeaderTally::default(), "p", &req);
        assert_eq!(response.len(), 1, "one line allowed: {response:?}");
    }

    fn templated(name: &str, value: Vec<ValuePart>) -> TemplatedHeader {
        TemplatedHeader { name: name.into(), value }
    }

    #[test]
    fn built_values_are_checked_when_declared() {
        let refused = |edit: WitFixedEdit| FixedEdits::checked(rules(vec![edit])).expect_err("refused");
        let literal = |text: &[u8]| ValuePart::Literal(text.to_vec());
        assert_eq!(
            refused(WitFixedEdit::SetHeader(templated("x-a", vec![literal(b"a\nb"), ValuePart::RequestId]))),
            "fixed edit 1 (`set-header`): a literal piece holds control characters"
        );
        assert_eq!(
            refused(WitFixedEdit::ResponseAdd(templated("x-a", vec![ValuePart::RequestId; MAX_VALUE_PARTS + 1]))),
            "fixed edit 1 (`response-add`): a built value of 65 pieces: at most 64"
        );
        assert!(refused(WitFixedEdit::AppendHeader(templated("Transfer-Encoding", vec![ValuePart::RouteId]))).starts_with("fixed edit 1 (`append-header`): `transfer-encoding` is set by the gateway"));
        assert!(refused(WitFixedEdit::ResponseSet(templated("bad name", vec![]))).starts_with("fixed edit 1 (`response-set`): `bad name`"));
        assert_eq!(
            refused(WitFixedEdit::SetHeader(templated("x-a", vec![ValuePart::Header("bad name".into())]))),
            "fixed edit 1 (`set-header`): `bad name` is not a valid header name"
        );
        let big = vec![b'v'; MAX_FIXED_BYTES];
        assert!(refused(WitFixedEdit::SetHeader(templated("x-a", vec![literal(&big)]))).ends_with("at most 262144"), "literal pieces count toward the bytes");
        // A value with nothing to build is checked whole now, on the response as on the request.
        let halves = vec![literal(&[b'v'; 40_000]), literal(&[b'v'; 40_000])];
        assert!(refused(WitFixedEdit::ResponseAppend(templated("x-a", halves))).starts_with("fixed edit 1 (`response-append`): the value of `x-a` is 80000 bytes"));
    }

    #[test]
    fn built_values_are_made_from_each_request_in_order_with_the_same_changes() {
        let literal = |text: &[u8]| ValuePart::Literal(text.to_vec());
        let fixed = FixedEdits::checked(rules(vec![
            WitFixedEdit::Same(WitRequestEdit::SetHeader(header("x-a", b"1"))),
            WitFixedEdit::AppendHeader(templated("x-a", vec![literal(b"user-"), ValuePart::Param("id".into()), literal(b"@"), ValuePart::RouteId])),
            WitFixedEdit::SetHeader(templated("x-real-ip", vec![ValuePart::ClientIp])),
            // Read where it is made: the first `x-a`, which the changes above just set.
            WitFixedEdit::SetHeader(templated(
                "x-echo",
                vec![ValuePart::Header("x-a".into()), literal(b"|"), ValuePart::Query("q".into()), literal(b"|"), ValuePart::Context("consumer".into())],
            )),
            WitFixedEdit::SetHeader(templated("x-missing", vec![literal(b"["), ValuePart::Param("nope".into()), literal(b"]")])),
            WitFixedEdit::Same(WitRequestEdit::EditResponse(WitResponseEdit::Set(header("x-served-by", b"airlock")))),
            WitFixedEdit::ResponseSet(templated("x-request-id-copy", vec![ValuePart::RequestId])),
            WitFixedEdit::ResponseAdd(templated("x-kept", vec![ValuePart::RouteId])),
            WitFixedEdit::ResponseAppend(templated("x-served-by", vec![ValuePart::Param("id".into())])),
        ]))
        .expect("valid");
        assert_eq!(fixed.len(), 9);
        for id in ["42", "7"] {
            let mut req = request();
            req.params = vec![("id".into(), id.into())];
            req.route_id = "users".into();
            req.client_ip = "2001:db8::7".parse().expect("an address");
            req.query = Some("q=a+b%21&q=second".into());
            req.context.set("consumer".into(), format!("c{id}")).expect("room");
            if id == "7" {
                // An id with no header value made for it: `${request_id}` built from its text.
                req.request_id = "rid-7".into();
                req.request_id_header = None;
            }
            fixed.apply_to_request(&mut req, "p");
            assert_eq!(values(&req.headers, "x-echo"), [format!("1|a b!|c{id}").into_bytes()], "header, decoded query, context");
            assert_eq!(values(&req.headers, "x-a"), [b"1".to_vec(), format!("user-{id}@users").into_bytes()], "the literal set, then the built append");
            assert_eq!(values(&req.headers, "x-real-ip"), [b"2001:db8::7".to_vec()]);
            assert_eq!(values(&req.headers, "x-missing"), [b"[]".to_vec()], "a parameter the route lacks is nothing");
            let mut response = HeaderMap::new();
            response.insert("x-kept", HeaderValue::from_static("upstream"));
            fixed.apply_to_response(&mut response, HeaderBound::NONE, &mut HeaderTally::default(), "p", &req);
            assert_eq!(values(&response, "x-served-by"), [b"airlock".to_vec(), id.as_bytes().to_vec()]);
            assert_eq!(values(&response, "x-request-id-copy"), [req.request_id.as_bytes().to_vec()]);
            assert_eq!(values(&response, "x-kept"), [b"upstream".to_vec()], "add keeps what is there");
        }
    }

    #[test]
    fn a_built_value_that_cannot_be_written_is_skipped_and_the_rest_are_made() {
        let fixed = FixedEdits::checked(rules(vec![
            WitFixedEdit::SetHeader(templated("x-user", vec![ValuePart::Param("id".into())])),
            WitFixedEdit::SetHeader(templated("host", vec![ValuePart::Param("id".into()), ValuePart::Literal(b".internal".to_vec())])),
            WitFixedEdit::Same(WitRequestEdit::SetHeader(header("x-after", b"1"))),
            WitFixedEdit::ResponseSet(templated("x-user", vec![ValuePart::Param("id".into())])),
        ]))
        .expect("valid");
        // A percent-decoded parameter can hold what no header value may.
        let mut req = request();
        req.params = vec![("id".into(), "a\r\nx-injected: 1".into())];
        req.headers.append("x-user", HeaderValue::from_static("forged"));
        fixed.apply_to_request(&mut req, "p");
        assert_eq!(req.headers.get("x-user"), None, "a set replaces: the client's value does not stay");
        assert_eq!(values(&req.headers, "host"), [b"example.com".to_vec()], "the client's host stays");
        assert!(!req.host_from_plugin);
        assert_eq!(values(&req.headers, "x-after"), [b"1".to_vec()]);
        let mut response = HeaderMap::new();
        response.insert("x-user", HeaderValue::from_static("upstream"));
        fixed.apply_to_response(&mut response, HeaderBound::NONE, &mut HeaderTally::default(), "p", &req);
        assert!(response.is_empty(), "{response:?}");
        // A host built to something that is not host[:port] is not written either.
        let mut req = request();
        req.params = vec![("id".into(), "a@b".into())];
        fixed.apply_to_request(&mut req, "p");
        assert_eq!(values(&req.headers, "host"), [b"example.com".to_vec()]);
        assert_eq!(values(&req.headers, "x-user"), [b"a@b".to_vec()], "any other header takes it");
        let mut req = request();
        req.params = vec![("id".into(), "api".into())];
        fixed.apply_to_request(&mut req, "p");
        assert_eq!(values(&req.headers, "host"), [b"api.internal".to_vec()]);
        assert!(req.host_from_plugin);
    }

    /// A value that is one request header is that header's first value as the request has it
    /// where the entry is, an absent one an empty value, one past 64 KiB none, as when built.
    #[test]
    fn a_value_that_is_one_header_is_its_first_value() {
        let fixed = FixedEdits::checked(rules(vec![
            WitFixedEdit::Same(WitRequestEdit::AppendHeader(header("x-in", b"second"))),
            WitFixedEdit::SetHeader(templated("x-copy", vec![ValuePart::Header("x-in".into())])),
            WitFixedEdit::SetHeader(templated("x-none", vec![ValuePart::Header("x-absent".into())])),
            WitFixedEdit::ResponseSet(templated("x-echo", vec![ValuePart::Header("x-in".into())])),
        ]))
        .expect("valid");
        let mut req = request();
        req.headers.insert("x-in", HeaderValue::from_static("first"));
        fixed.apply_to_request(&mut req, "p");
        assert_eq!(values(&req.headers, "x-copy"), [b"first".to_vec()]);
        assert_eq!(values(&req.headers, "x-none"), [Vec::<u8>::new()]);
        let mut response = HeaderMap::new();
        fixed.apply_to_response(&mut response, HeaderBound::NONE, &mut HeaderTally::default(), "p", &req);
        assert_eq!(values(&response, "x-echo"), [b"first".to_vec()]);

        let mut req = request();
        req.header_limits = crate::exchange::HeaderLimits::NONE;
        let long = HeaderValue::from_bytes(&vec![b'a'; MAX_HEADER_VALUE_BYTES + 1]).expect("a value");
        req.headers.insert("x-in", long);
        fixed.apply_to_request(&mut req, "p");
        assert_eq!(req.headers.get("x-copy"), None, "past 64 KiB: not written");
        assert_eq!(values(&req.headers, "x-none"), [Vec::<u8>::new()], "the rest are made");
    }

    /// A request rename moves each value as `request.append-header` writes it: one past 64
    /// KiB (possible when `limits.max_header_bytes` is raised) is not written.
    #[test]
    fn a_request_rename_leaves_a_value_past_64_kib() {
        let fixed = FixedEdits::checked(vec![rename("x-big", "x-moved")]).expect("valid");
        let mut req = request();
        req.header_limits = crate::exchange::HeaderLimits::NONE;
        req.headers.append("x-big", HeaderValue::from_bytes(&vec![b'b'; MAX_HEADER_VALUE_BYTES + 1]).expect("a value"));
        req.headers.append("x-big", HeaderValue::from_static("small"));
        fixed.apply_to_request(&mut req, "p");
        assert_eq!(values(&req.headers, "x-moved"), [b"small".to_vec()]);
        assert!(req.headers.get("x-big").is_none());
    }

    fn rename(from: &str, to: &str) -> WitFixedRule {
        WitFixedRule::RenameHeader(HeaderRename { old_name: from.into(), new_name: to.into() })
    }

    #[test]
    fn request_rules_are_checked_when_declared() {
        let refused = |rule: WitFixedRule| FixedEdits::checked(vec![rule]).expect_err("refused");
        assert_eq!(refused(rename("x-a", "X-A")), "fixed edit 1 (`rename-header`): renames `x-a` to itself");
        assert!(refused(rename("x-a", "content-length")).starts_with("fixed edit 1 (`rename-header`): `content-length` is set by the gateway"));
        assert_eq!(refused(rename("bad name", "x-a")), "fixed edit 1 (`rename-header`): `bad name` is not a valid header name");
        let literal = |text: &[u8]| vec![ValuePart::Literal(text.to_vec())];
        assert_eq!(refused(WitFixedRule::AddHeader(templated("host", literal(b"a@b")))), "fixed edit 1 (`add-header`): a `host` must be host[:port], not `a@b`");
        assert!(refused(WitFixedRule::AddHeader(templated("upgrade", vec![ValuePart::RequestId]))).starts_with("fixed edit 1 (`add-header`): `upgrade`"));
        // A value with nothing to build is checked whole now, as `declare`'s literal values are.
        let halves = vec![ValuePart::Literal(vec![b'v'; 40_000]), ValuePart::Literal(vec![b'v'; 40_000])];
        assert!(refused(WitFixedRule::AddHeader(templated("x-a", halves))).contains("at most 65536"));
        // Removing the header renamed from the gateway's own is allowed, as a removal is.
        assert!(FixedEdits::checked(vec![rename("upgrade", "x-upgrade")]).is_ok());
    }

    #[test]
    fn add_and_rename_decide_from_the_request_where_they_are_made() {
        let literal = |text: &[u8]| ValuePart::Literal(text.to_vec());
        let fixed = FixedEdits::checked(vec![
            // Present: kept.
            WitFixedRule::AddHeader(templated("x-gone", vec![literal(b"default")])),
            // Set by the change before it: kept as that change left it.
            WitFixedRule::Edit(WitFixedEdit::Same(WitRequestEdit::SetHeader(header("x-set", b"1")))),
            WitFixedRule::AddHeader(templated("x-set", vec![literal(b"2")])),
            // Absent: written, built from the request.
            WitFixedRule::AddHeader(templated("x-user", vec![literal(b"u-"), ValuePart::Param("id".into())])),
            rename("x-multi", "x-moved"),
            rename("x-absent", "x-kept"),
            rename("x-target", "host"),
            // Reads the renamed header: the rename came first.
            WitFixedRule::Edit(WitFixedEdit::SetHeader(templated("x-echo", vec![ValuePart::Header("x-moved".into())]))),
        ])
        .expect("valid");
        assert_eq!(fixed.len(), 8);
        for id in ["42", "7"] {
            let mut req = crate::plugin_trial::parse_request(
                "t.http",
                b"GET / HTTP/1.1\nhost: example.com\nx-gone: 1\nx-multi: a\nx-moved: old\nx-multi: b\nx-kept: k\nx-target: api.internal:8443\n\n",
            )
            .expect("a request");
            req.params = vec![("id".into(), id.into())];
            fixed.apply_to_request(&mut req, "p");
            assert_eq!(values(&req.headers, "x-gone"), [b"1".to_vec()], "an add keeps what is there");
            assert_eq!(values(&req.headers, "x-set"), [b"1".to_vec()]);
            assert_eq!(values(&req.headers, "x-user"), [format!("u-{id}").into_bytes()]);
            assert_eq!(req.headers.get("x-multi"), None);
            assert_eq!(values(&req.headers, "x-moved"), [b"a".to_vec(), b"b".to_vec()], "every value, in order, replacing the old");
            assert_eq!(values(&req.headers, "x-kept"), [b"k".to_vec()], "nothing to rename: the new name is untouched");
            assert_eq!(values(&req.headers, "host"), [b"api.internal:8443".to_vec()]);
            assert!(req.host_from_plugin);
            assert_eq!(req.headers.get("x-target"), None);
            assert_eq!(values(&req.headers, "x-echo"), [b"a".to_vec()]);
        }
        // A value renamed to `host` that is not host[:port] is not written, as
        // `request.append-header` would not write it; the rest are made.
        let mut req = crate::plugin_trial::parse_request("t.http", b"GET / HTTP/1.1\nhost: example.com\nx-target: a@b\nx-multi: a\n\n").expect("a request");
        fixed.apply_to_request(&mut req, "p");
        assert_eq!(req.headers.get("host"), None);
        assert!(!req.host_from_plugin);
        assert_eq!(values(&req.headers, "x-moved"), [b"a".to_vec()]);
        // Each value moved is held to the header limits as an append is.
        let mut req = crate::plugin_trial::parse_request("t.http", b"GET / HTTP/1.1\nhost: example.com\nx-multi: a\nx-multi: b\n\n").expect("a request");
        req.header_limits.request = HeaderBound { count: 2, bytes: usize::MAX };
        FixedEdits::checked(vec![rename("x-multi", "x-moved")]).expect("valid").apply_to_request(&mut req, "p");
        assert_eq!(values(&req.headers, "x-moved"), [b"a".to_vec()], "a third line would pass the limit");
    }
}
