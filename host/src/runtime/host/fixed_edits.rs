//! `airlock:plugin/fixed-edits`: the changes a chain entry makes to every request, declared once
//! while it is configured and then made by the gateway itself, natively, with no call into the
//! plugin per request.
//!
//! `declare` checks each change as the `request` methods check it per request, but answers a
//! bad one with an `err` (the plugin returns it as its config error) rather than a log line: a
//! fixed change that is wrong is wrong on every request. [`FixedEdits`] is what the chain entry
//! keeps; [`FixedEdits::apply_to_request`] and [`FixedEdits::apply_to_response`] make the
//! changes under the same header limits as `request.edit`.

use bytes::Bytes;
use http::HeaderMap;
use http::header::{HOST, HeaderName, HeaderValue};

use super::HostState;
use super::airlock::plugin::fixed_edits::Host;
use super::airlock::plugin::types::{RequestEdit as WitRequestEdit, ResponseEdit as WitResponseEdit};
use super::log::plugin_warn;
use super::types::{MAX_EDITS_PER_CALL, MAX_HEADER_VALUE_BYTES};
use crate::exchange::{Context, HeaderBound, HeaderTally, RefusalLog, RequestState, ResponseEdit};

/// Most bytes of names and values all of an entry's fixed changes may hold together: the gateway
/// keeps them for as long as the config serves, outside the plugin's memory cap. Four times the
/// default response header limit (a request's is half that), so no header set a request or a
/// response could carry is refused for it.
pub const MAX_FIXED_BYTES: usize = 256 * 1024;

/// A chain entry's fixed changes, checked: what its `configure` declared.
#[derive(Debug, Default, PartialEq)]
pub struct FixedEdits {
    /// Changes to the request, in order.
    request: Vec<RequestChange>,
    /// Changes to the response, in order, made where the entry's response phase runs.
    response: Vec<ResponseEdit>,
}

/// One fixed change to the request.
#[derive(Debug, PartialEq)]
enum RequestChange {
    /// Replace every value of the header (a `host` is always replaced: there is one).
    Set(HeaderName, HeaderValue),
    /// Add a value after the header's existing ones.
    Append(HeaderName, HeaderValue),
    /// Remove every value of the header.
    Remove(HeaderName),
    /// Set a context key to a value.
    ContextSet(String, String),
    /// Remove a context key.
    ContextRemove(String),
}

impl Host for HostState {
    fn declare(&mut self, edits: Vec<WitRequestEdit>) -> Result<(), String> {
        if !self.configuring {
            plugin_warn!(&self.log, "fixed-edits.declare ignored: it is only heard during configure");
            return Err("fixed edits are declared during `configure` only".to_owned());
        }
        let fixed = FixedEdits::checked(edits)?;
        self.fixed_edits = (!fixed.is_empty()).then_some(fixed);
        Ok(())
    }
}

impl FixedEdits {
    /// The changes `edits` ask for, each checked; an `Err` names the first refused one (counted
    /// from 1) and why.
    pub fn checked(edits: Vec<WitRequestEdit>) -> Result<Self, String> {
        if edits.len() > MAX_EDITS_PER_CALL {
            return Err(format!("{} fixed edits declared: at most {MAX_EDITS_PER_CALL}", edits.len()));
        }
        let bytes: usize = edits.iter().map(edit_bytes).sum();
        if bytes > MAX_FIXED_BYTES {
            return Err(format!("the fixed edits hold {bytes} bytes of names and values: at most {MAX_FIXED_BYTES}"));
        }
        let mut fixed = Self::default();
        // The context the changes leave, to hold them to its limits as a request's context is.
        let mut context = Context::default();
        for (at, edit) in edits.into_iter().enumerate() {
            let refused = |what: &str, why: String| format!("fixed edit {} (`{what}`): {why}", at + 1);
            match edit {
                WitRequestEdit::SetHeader(h) => {
                    let (name, value) = request_header(&h.name, h.value).map_err(|why| refused("set-header", why))?;
                    fixed.request.push(RequestChange::Set(name, value));
                }
                WitRequestEdit::AppendHeader(h) => {
                    let (name, value) = request_header(&h.name, h.value).map_err(|why| refused("append-header", why))?;
                    // One `Host`: an append replaces it, as `request.append-header` does.
                    fixed.request.push(if name == HOST { RequestChange::Set(name, value) } else { RequestChange::Append(name, value) });
                }
                WitRequestEdit::RemoveHeader(name) => {
                    fixed.request.push(RequestChange::Remove(header_name(&name).map_err(|why| refused("remove-header", why))?));
                }
                WitRequestEdit::ContextSet((key, value)) => {
                    if context.set(key.clone(), value.clone()).is_err() {
                        let why = format!("the context holds at most {} keys and {} bytes", Context::MAX_KEYS, Context::MAX_BYTES);
                        return Err(refused("context-set", why));
                    }
                    fixed.request.push(RequestChange::ContextSet(key, value));
                }
                WitRequestEdit::ContextRemove(key) => {
                    context.remove(&key);
                    fixed.request.push(RequestChange::ContextRemove(key));
                }
                WitRequestEdit::EditResponse(edit) => {
                    fixed.response.push(response_edit(edit).map_err(|why| refused("edit-response", why))?);
                }
            }
        }
        Ok(fixed)
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

    /// Makes the request changes on `request`, in order, for the entry `plugin`: a header write
    /// that would take the request past its header limits is not made (logged once).
    pub fn apply_to_request(&self, request: &mut RequestState, plugin: &str) {
        let bound = request.header_limits.request;
        let mut refusals = RefusalLog::default();
        for change in &self.request {
            match change {
                RequestChange::Set(name, value) | RequestChange::Append(name, value) => {
                    let replacing = matches!(change, RequestChange::Set(..));
                    if !bound.write(&mut request.header_tally, &mut request.headers, name.clone(), value.clone(), replacing) {
                        refusals.refused(plugin, &request.request_id, "fixed edit", bound);
                    } else if name == HOST {
                        request.host_from_plugin = true;
                    }
                }
                RequestChange::Remove(name) => request.header_tally.remove(&mut request.headers, name),
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

    /// Makes the response changes on `headers`, in order, as one run of writes counted in
    /// `tally`: one that would take them past `bound` is not made (logged once).
    pub fn apply_to_response(&self, headers: &mut HeaderMap, bound: HeaderBound, tally: &mut HeaderTally, plugin: &str, request_id: &str) {
        let mut refusals = RefusalLog::default();
        for edit in &self.response {
            if !edit.clone().make(headers, bound, tally) {
                refusals.refused(plugin, request_id, "fixed response edit", bound);
            }
        }
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

/// A header a plugin writes on the request: as [`header`], and a `host` only as `host[:port]`.
fn request_header(name: &str, value: Vec<u8>) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = header(name, value)?;
    if name == HOST && (value.is_empty() || !crate::proxy::headers::valid_host(value.as_bytes())) {
        return Err("a `host` must be host[:port]".to_owned());
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
    use super::super::airlock::plugin::types::Header;
    use super::*;

    fn header(name: &str, value: &[u8]) -> Header {
        Header { name: name.into(), value: value.to_vec() }
    }

    fn request() -> RequestState {
        crate::plugin_trial::parse_request("t.http", b"GET / HTTP/1.1\nhost: example.com\nx-gone: 1\n\n").expect("a request")
    }

    fn values(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
        headers.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect()
    }

    #[test]
    fn each_declared_change_is_checked_and_a_refused_one_is_named() {
        let refused = |edit: WitRequestEdit| {
            let edits = vec![WitRequestEdit::SetHeader(header("x-ok", b"1")), edit];
            FixedEdits::checked(edits).expect_err("refused")
        };
        assert_eq!(refused(WitRequestEdit::SetHeader(header("bad name", b"1"))), "fixed edit 2 (`set-header`): `bad name` is not a valid header name");
        assert!(refused(WitRequestEdit::AppendHeader(header("Content-Length", b"1"))).starts_with("fixed edit 2 (`append-header`): `content-length` is set by the gateway"));
        assert_eq!(refused(WitRequestEdit::SetHeader(header("x-a", b"a\r\nb"))), "fixed edit 2 (`set-header`): the value of `x-a` holds control characters");
        assert_eq!(refused(WitRequestEdit::SetHeader(header("host", b"a@b"))), "fixed edit 2 (`set-header`): a `host` must be host[:port]");
        assert!(refused(WitRequestEdit::SetHeader(header("x-a", &vec![b'a'; MAX_HEADER_VALUE_BYTES + 1]))).contains("at most 65536"));
        assert!(refused(WitRequestEdit::RemoveHeader("a b".into())).starts_with("fixed edit 2 (`remove-header`)"));
        assert!(refused(WitRequestEdit::EditResponse(WitResponseEdit::Rename(("x-a".into(), "upgrade".into())))).starts_with("fixed edit 2 (`edit-response`): `upgrade`"));
        let big = "v".repeat(Context::MAX_BYTES);
        assert!(refused(WitRequestEdit::ContextSet(("k".into(), big))).starts_with("fixed edit 2 (`context-set`): the context holds at most"));
        let many = (0..=MAX_EDITS_PER_CALL).map(|_| WitRequestEdit::RemoveHeader("x-a".into())).collect();
        assert_eq!(FixedEdits::checked(many).expect_err("too many"), "257 fixed edits declared: at most 256");
        let value = vec![b'v'; MAX_HEADER_VALUE_BYTES - 8];
        let large = |n: usize| (0..n).map(|i| WitRequestEdit::AppendHeader(header(&format!("x-{i}"), &value))).collect::<Vec<_>>();
        assert!(FixedEdits::checked(large(4)).is_ok(), "256 KiB all together");
        assert!(FixedEdits::checked(large(5)).expect_err("too large").ends_with("at most 262144"));
        // Removing the gateway's own headers is allowed, as `request.remove-header` allows it.
        assert!(FixedEdits::checked(vec![WitRequestEdit::RemoveHeader("upgrade".into())]).is_ok());
    }

    #[test]
    fn declare_is_heard_only_during_configure_and_the_last_call_counts() {
        let mut state = HostState::new("p".into(), 1 << 20, std::time::Duration::from_millis(10));
        let set = || vec![WitRequestEdit::SetHeader(header("x-a", b"1"))];
        assert!(state.declare(set()).is_err(), "outside configure");
        assert_eq!(state.fixed_edits, None);
        state.configuring = true;
        assert_eq!(state.declare(set()), Ok(()));
        assert!(state.fixed_edits.as_ref().is_some_and(|f| !f.is_empty() && !f.edits_response()));
        assert!(state.declare(vec![WitRequestEdit::SetHeader(header("bad name", b"1"))]).is_err());
        assert!(state.fixed_edits.is_some(), "a refused declaration keeps the one before");
        assert_eq!(state.declare(vec![]), Ok(()));
        assert_eq!(state.fixed_edits, None, "`[]` declares none");
    }

    #[test]
    fn the_changes_are_made_on_every_request_in_order_within_the_limits() {
        let fixed = FixedEdits::checked(vec![
            WitRequestEdit::RemoveHeader("X-Gone".into()),
            WitRequestEdit::SetHeader(header("x-a", b"1")),
            WitRequestEdit::AppendHeader(header("x-a", b"2")),
            WitRequestEdit::AppendHeader(header("host", b"upstream.internal")),
            WitRequestEdit::ContextSet(("consumer".into(), "fixed".into())),
            WitRequestEdit::ContextRemove("consumer.anonymous".into()),
            WitRequestEdit::EditResponse(WitResponseEdit::Set(header("x-served-by", b"airlock"))),
            WitRequestEdit::EditResponse(WitResponseEdit::Add(header("x-kept", b"fixed"))),
        ])
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
            fixed.apply_to_response(&mut response, HeaderBound::NONE, &mut HeaderTally::default(), "p", "id");
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
        fixed.apply_to_response(&mut response, HeaderBound { count: 1, bytes: usize::MAX }, &mut HeaderTally::default(), "p", "id");
        assert_eq!(response.len(), 1, "one line allowed: {response:?}");
    }
}
