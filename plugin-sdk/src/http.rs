//! [`Request`] and [`Response`]: handles to the gateway's request and response.

use std::mem::MaybeUninit;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::airlock::plugin::types as raw;
use crate::export::{Body, body_writable};

/// The client's request as it will be sent upstream, handed to both phases.
///
/// A handle to the gateway's copy: each method copies only what it names across the sandbox
/// boundary (reading one header copies one header), so read what you need, when you need it.
/// Changes made in [`Plugin::on_request`](crate::Plugin::on_request) are what the upstream
/// receives; in [`Plugin::on_response`](crate::Plugin::on_response) the request is read-only:
/// its setters (and [`Request::edit_response`]) are ignored and logged. The context is the
/// exception: it can be read and written in both phases (see [`Request::context_set`]).
///
/// Header names are matched case-insensitively; values are raw bytes, never re-encoded.
#[repr(transparent)]
pub struct Request(raw::Request);

/// The response on its way back to the client (the upstream's, or one a plugin produced), handed
/// to [`Plugin::on_response`](crate::Plugin::on_response).
///
/// A handle, like [`Request`]: each method copies only what it names.
#[repr(transparent)]
pub struct Response(raw::Response);

impl Request {
    /// Views a borrowed WIT handle as the SDK type.
    pub(crate) fn from_raw(raw: &raw::Request) -> &Self {
        // SAFETY: `Request` is `repr(transparent)` over `raw::Request`.
        unsafe { &*(raw as *const raw::Request).cast::<Self>() }
    }

    /// The WIT handle underneath, for code that calls the generated bindings itself: the
    /// gateway's own tests do, to send what the SDK never would. Not part of the supported API.
    #[doc(hidden)]
    pub fn raw(&self) -> &raw::Request {
        &self.0
    }

    /// Request method, e.g. `"GET"`.
    pub fn method(&self) -> String {
        self.0.method()
    }

    /// Replaces the method sent upstream.
    pub fn set_method(&self, method: &str) {
        self.0.set_method(method)
    }

    /// Path without the query string, e.g. `"/users/42"`: the client's path as the gateway
    /// normalized it before routing, the path the route matched. `.` and `..` segments are
    /// resolved (`%2e` counting as a dot), empty segments merged (`//` is `/`), and
    /// percent-encoded unreserved characters (letters, digits, `-`, `.`, `_`, `~`) decoded:
    /// `/a/./b//%63` reads `/a/b/c`. Every other percent-encoding (`%2F`, `%20`) is kept as sent,
    /// and so is the case. The route's `strip_prefix` or `rewrite` is not applied yet: it is
    /// applied as the request goes upstream, unless a plugin set another path. After
    /// [`Request::set_path`], the path that set, normalized the same way.
    pub fn path(&self) -> String {
        self.0.path()
    }

    /// Replaces the path sent upstream. Must start with `/`; an invalid path is ignored and logged
    /// by the gateway.
    pub fn set_path(&self, path: &str) {
        self.0.set_path(path)
    }

    /// Raw query string without the leading `?`, if the request has one.
    pub fn query(&self) -> Option<String> {
        self.0.query()
    }

    /// Replaces the query string sent upstream (`None` removes it).
    pub fn set_query(&self, query: Option<&str>) {
        self.0.set_query(query)
    }

    /// First value of a query parameter, percent-decoded (`+` is a space; bytes that are not
    /// UTF-8 once decoded read as U+FFFD: decode [`Request::query`] to keep them).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.0.query_param(name)
    }

    /// First value of a header, as raw bytes.
    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0.header(name)
    }

    /// First value of a header as text; bytes that are not UTF-8 become U+FFFD.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.0.header(name).map(lossy)
    }

    /// Every value of a header, in order (empty if absent).
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.0.header_all(name)
    }

    /// Names of every header present, lower-case, each once.
    pub fn header_names(&self) -> Vec<String> {
        self.0.header_names()
    }

    /// Replaces every value of a header with this one. Invalid names or values are ignored and
    /// logged by the gateway. A change past its header limits (`[limits]`: 100 lines by
    /// default) is not made, and the gateway answers the request 431 once the call returns
    /// (unless the plugin answered it): it never goes upstream without the header.
    pub fn set_header(&self, name: &str, value: impl AsRef<[u8]>) {
        self.0.set_header(name, value.as_ref())
    }

    /// Adds a value to a header, keeping the values already there (within the gateway's header
    /// limits, as `set_header`).
    pub fn append_header(&self, name: &str, value: impl AsRef<[u8]>) {
        self.0.append_header(name, value.as_ref())
    }

    /// Removes every value of a header.
    pub fn remove_header(&self, name: &str) {
        self.0.remove_header(name)
    }

    /// A route parameter captured by the route's path pattern (`/users/{id}` gives `id`).
    pub fn param(&self, name: &str) -> Option<String> {
        self.0.param(name)
    }

    /// The id of the route that matched, as written in the config.
    pub fn route_id(&self) -> String {
        self.0.route_id()
    }

    /// The client's address as the gateway saw it (the TCP peer), e.g. `"203.0.113.7:51234"`.
    /// Behind a load balancer this is the balancer: see [`Request::client_ip`].
    pub fn client_addr(&self) -> String {
        self.0.client_addr()
    }

    /// The client's IP, e.g. `"203.0.113.7"`: the TCP peer's, or, when the listener trusts the
    /// peer as a proxy (`trusted_proxies`), the rightmost `X-Forwarded-For` address that is not
    /// a trusted proxy. What per-client limits should key on.
    pub fn client_ip(&self) -> String {
        self.0.client_ip()
    }

    /// `"http"` or `"https"`: the scheme the client used to reach the gateway (behind the
    /// listener's `trusted_proxies`, the one their `X-Forwarded-Proto` names).
    pub fn scheme(&self) -> String {
        self.0.scheme()
    }

    /// The gateway's id for this request (also sent upstream and back as `x-request-id`).
    pub fn request_id(&self) -> String {
        self.0.request_id()
    }

    /// Whether the client sent a body (any length, chunked or not), whether or not it is
    /// buffered for this plugin: a cache, whose key has no body, tells a `GET` with one apart
    /// without declaring request-body access (which would buffer every upload).
    pub fn has_body(&self) -> bool {
        self.0.has_body()
    }

    /// The buffered request body. `None` unless [`Descriptor::request_body`](crate::Descriptor)
    /// is set (and in the response phase).
    pub fn body(&self) -> Option<Vec<u8>> {
        self.0.body()
    }

    /// Replaces the request body sent upstream; `content-length` is fixed up by the gateway.
    /// Ignored unless [`Descriptor::request_body`](crate::Descriptor) is set.
    pub fn set_body(&self, body: impl AsRef<[u8]>) {
        self.0.set_body(body.as_ref())
    }

    /// The buffered request body parsed as JSON into `T`.
    ///
    /// `Ok(None)` if there is no buffered body (see [`Request::body`]) or the body is empty or
    /// only JSON whitespace (spaces, tabs, CR, LF), as for a `GET` without a body: there is no
    /// JSON value to parse, whatever `T` is. `Ok(Some(_))` for any other body that parses as a
    /// `T` (a body `null` is `Some`, for types that accept it); `Err` if it is not JSON or does
    /// not fit `T`, with the key path in the message.
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<Option<T>, String> {
        crate::json::optional_body(self.0.body().as_deref())
    }

    /// Replaces the request body with `value` serialized as JSON and sets
    /// `content-type: application/json`, from [`Plugin::on_request`](crate::Plugin::on_request).
    /// Needs [`Descriptor::request_body`](crate::Descriptor), like [`Request::set_body`].
    ///
    /// `Err`, with nothing changed (`content-type` neither), when `value` cannot be serialized,
    /// and when the gateway would ignore the body: the plugin has no request-body access (its
    /// [`Plugin::descriptor`](crate::Plugin::descriptor) did not ask for it, or its
    /// [`Plugin::configured_descriptor`](crate::Plugin::configured_descriptor) gave it up), or
    /// this is `on_response`, where the request is read-only. Told apart by the SDK itself, at
    /// no cost. One case it cannot see: a body longer than the route's `max_body_bytes`, which
    /// no call reveals. The gateway does not set such a body and fails the call once it returns
    /// (`too_large`, the entry's `failure` policy decides), so the request never goes on with
    /// the old body; this returns `Ok`. Keep a body built from a bounded input bounded, or check
    /// its length against a limit of the plugin's config.
    pub fn set_json_body(&self, value: &impl Serialize) -> Result<(), String> {
        body_writable(Body::Request)?;
        let body = serde_json::to_vec(value).map_err(|e| format!("cannot serialize the JSON body: {e}"))?;
        self.0.set_body(&body);
        self.0.set_header("content-type", b"application/json");
        Ok(())
    }

    /// Reads a value of the per-request context shared along the chain (e.g. `consumer`, set by
    /// an authentication plugin).
    pub fn context_get(&self, key: &str) -> Option<String> {
        self.0.context_get(key)
    }

    /// Whether an authentication plugin earlier in the chain has already named a consumer (the
    /// context's `consumer`, not as its anonymous fallback). An authentication plugin with an
    /// anonymous fallback leaves such a request alone, so two of them on one route mean "either
    /// credential", as in Kong: the second must not replace the first's consumer with its
    /// anonymous one.
    pub fn authenticated_before(&self) -> bool {
        self.0.context_get("consumer").is_some() && self.0.context_get("consumer.anonymous").is_none()
    }

    /// Sets a value in the per-request context, which later plugins and the response phases see.
    /// Of the context, the access log records only `consumer` (the identity an authentication
    /// plugin set); other keys are for plugins. Unlike the rest of the request, the context stays
    /// writable in [`Plugin::on_response`](crate::Plugin::on_response): a value set there is seen
    /// by the response phases that run after it (those of plugins earlier in the chain), and a
    /// `consumer` set there is the one logged.
    pub fn context_set(&self, key: &str, value: &str) {
        self.0.context_set(key, value)
    }

    /// Removes a value from the per-request context, if set (in both phases, like
    /// [`Request::context_set`]): an auth plugin that names a consumer after an earlier one
    /// fell back to an anonymous one removes `consumer.anonymous`.
    pub fn context_remove(&self, key: &str) {
        self.0.context_remove(key)
    }

    /// Changes the response this request will get, from
    /// [`Plugin::on_request`](crate::Plugin::on_request): the gateway records the edit and makes
    /// it when the response passes this plugin on its way back (where its `on_response` would
    /// run, just before it), whether the response is the upstream's or one a plugin made. A
    /// plugin that only adds or changes response headers so needs no `on_response` (turn it off
    /// in its descriptor), which saves a call into it per request. Edits are made in the order
    /// asked; ignored in `on_response`. Made on the gateway's own answers too (a 502 when the
    /// upstream is down), where no `on_response` runs.
    pub fn edit_response(&self, edit: ResponseEdit<'_>) {
        self.0.edit_response(edit.to_raw())
    }

    /// Makes several changes in one call into the gateway, in order, each exactly as its own
    /// method would ([`Request::set_header`], [`Request::append_header`],
    /// [`Request::remove_header`], [`Request::context_set`], [`Request::context_remove`],
    /// [`Request::edit_response`]): the same checks, limits and log lines. A call into the
    /// gateway costs more than most changes it carries, so a plugin making several per request
    /// is faster making them together ([`crate::consumer::name`] makes its six so). Takes an
    /// array, a `Vec` or any iterator of changes, and lends them to the gateway from the stack,
    /// [`Request::EDITS_PER_CALL`] per call, without copying a name or value. Reads after it
    /// see every change. Needs a gateway speaking `airlock:plugin@0.2.5` or later.
    ///
    /// ```no_run
    /// # use airlock_sdk::{Request, RequestEdit, ResponseEdit};
    /// # fn f(req: &Request) {
    /// req.edit([
    ///     RequestEdit::RemoveHeader("x-api-key"),
    ///     RequestEdit::SetHeader("x-consumer-id", b"alice"),
    ///     RequestEdit::ContextSet("consumer", "alice"),
    ///     RequestEdit::Response(ResponseEdit::Set("x-served-by", b"airlock")),
    /// ]);
    /// # }
    /// ```
    pub fn edit<'a>(&self, edits: impl IntoIterator<Item = RequestEdit<'a>>) {
        // Filled from the front and never read past `len`, so left unwritten until then: every
        // call would otherwise write all sixteen entries first.
        let mut batch = [const { MaybeUninit::<raw::RequestEdit<'a>>::uninit() }; Self::EDITS_PER_CALL];
        let mut len = 0;
        for edit in edits {
            batch[len].write(edit.to_raw());
            len += 1;
            if len == Self::EDITS_PER_CALL {
                // SAFETY: the loop wrote entries `0..len`.
                self.0.edit(unsafe { written(&batch, len) });
                len = 0;
            }
        }
        if len > 0 {
            // SAFETY: the loop wrote entries `0..len` since the last batch went.
            self.0.edit(unsafe { written(&batch, len) });
        }
    }

    /// Most changes [`Request::edit`] hands the gateway per call (the gateway takes up to 256).
    pub const EDITS_PER_CALL: usize = 16;

    /// Narrows, for this request, the response body the plugin's
    /// [`Descriptor::with_response_body`](crate::Descriptor::with_response_body) reads: it is
    /// needed only if at most `max_bytes` long. A longer one streams to the client untouched
    /// (instead of a 502 past the route's `max_body_bytes`) and [`Response::body`] is `None` in
    /// this plugin's `on_response`. A cache calls it on each miss with its size limit, and with
    /// 0 on requests it will not store, so the gateway buffers only what it may keep. Ignored
    /// in `on_response` and without `with_response_body`.
    pub fn limit_response_body(&self, max_bytes: u64) {
        self.0.limit_response_body(max_bytes)
    }
}

// A change is made of borrowed names and values: an entry of a batch written over is never
// dropped, and need not be.
const _: () = assert!(!std::mem::needs_drop::<raw::RequestEdit<'static>>());

/// The first `len` entries of `batch`, as [`Request::edit`] wrote them.
///
/// # Safety
///
/// Each of the first `len` entries of `batch` must have been written.
unsafe fn written<'b, 'a>(batch: &'b [MaybeUninit<raw::RequestEdit<'a>>], len: usize) -> &'b [raw::RequestEdit<'a>] {
    let written = &batch[..len];
    // SAFETY: the caller wrote each of these entries, and `MaybeUninit<T>` has the layout of `T`.
    unsafe { &*(written as *const [MaybeUninit<raw::RequestEdit<'a>>] as *const [raw::RequestEdit<'a>]) }
}

/// A change to a response header, asked for from the request phase with
/// [`Request::edit_response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseEdit<'a> {
    /// Replace every value of the header (name, value).
    Set(&'a str, &'a [u8]),
    /// Set the header only if the response does not have it.
    Add(&'a str, &'a [u8]),
    /// Add a value after the header's existing ones.
    Append(&'a str, &'a [u8]),
    /// Add a token to a comma-separated list header (like `vary`) unless one of its values
    /// already lists it, in any case, or lists `*`.
    AddToken(&'a str, &'a str),
    /// Remove every value of the header.
    Remove(&'a str),
    /// Move every value of the first header to the second, replacing the second's.
    Rename(&'a str, &'a str),
}

impl<'a> ResponseEdit<'a> {
    /// The WIT value this edit crosses the boundary as: borrowed, not copied.
    fn to_raw(self) -> raw::ResponseEdit<'a> {
        let header = |name, value| raw::HeaderParam { name, value };
        match self {
            ResponseEdit::Set(name, value) => raw::ResponseEdit::Set(header(name, value)),
            ResponseEdit::Add(name, value) => raw::ResponseEdit::Add(header(name, value)),
            ResponseEdit::Append(name, value) => raw::ResponseEdit::Append(header(name, value)),
            ResponseEdit::AddToken(name, token) => raw::ResponseEdit::AddToken(header(name, token.as_bytes())),
            ResponseEdit::Remove(name) => raw::ResponseEdit::Remove(name),
            ResponseEdit::Rename(from, to) => raw::ResponseEdit::Rename((from, to)),
        }
    }
}

/// One change to a request, for [`Request::edit`]: each is what the method of the same name
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestEdit<'a> {
    /// [`Request::set_header`] (name, value).
    SetHeader(&'a str, &'a [u8]),
    /// [`Request::append_header`] (name, value).
    AppendHeader(&'a str, &'a [u8]),
    /// [`Request::remove_header`].
    RemoveHeader(&'a str),
    /// [`Request::context_set`] (key, value).
    ContextSet(&'a str, &'a str),
    /// [`Request::context_remove`].
    ContextRemove(&'a str),
    /// [`Request::edit_response`].
    Response(ResponseEdit<'a>),
}

impl<'a> RequestEdit<'a> {
    /// The bytes of the names and values it holds.
    pub(crate) fn bytes(&self) -> usize {
        match *self {
            RequestEdit::SetHeader(name, value) | RequestEdit::AppendHeader(name, value) => name.len() + value.len(),
            RequestEdit::RemoveHeader(name) | RequestEdit::ContextRemove(name) => name.len(),
            RequestEdit::ContextSet(key, value) => key.len() + value.len(),
            RequestEdit::Response(edit) => match edit {
                ResponseEdit::Set(name, value) | ResponseEdit::Add(name, value) | ResponseEdit::Append(name, value) => {
                    name.len() + value.len()
                }
                ResponseEdit::AddToken(name, token) => name.len() + token.len(),
                ResponseEdit::Remove(name) => name.len(),
                ResponseEdit::Rename(from, to) => from.len() + to.len(),
            },
        }
    }

    /// The WIT value this edit crosses the boundary as: borrowed, not copied.
    pub(crate) fn to_raw(self) -> raw::RequestEdit<'a> {
        let header = |name, value| raw::HeaderParam { name, value };
        match self {
            RequestEdit::SetHeader(name, value) => raw::RequestEdit::SetHeader(header(name, value)),
            RequestEdit::AppendHeader(name, value) => raw::RequestEdit::AppendHeader(header(name, value)),
            RequestEdit::RemoveHeader(name) => raw::RequestEdit::RemoveHeader(name),
            RequestEdit::ContextSet(key, value) => raw::RequestEdit::ContextSet((key, value)),
            RequestEdit::ContextRemove(key) => raw::RequestEdit::ContextRemove(key),
            RequestEdit::Response(edit) => raw::RequestEdit::EditResponse(edit.to_raw()),
        }
    }
}

impl Response {
    /// Views a borrowed WIT handle as the SDK type.
    pub(crate) fn from_raw(raw: &raw::Response) -> &Self {
        // SAFETY: `Response` is `repr(transparent)` over `raw::Response`.
        unsafe { &*(raw as *const raw::Response).cast::<Self>() }
    }

    /// HTTP status code.
    pub fn status(&self) -> u16 {
        self.0.status()
    }

    /// Replaces the status code sent to the client (200-599; others, 1xx included, are ignored
    /// and logged: only an upstream's own `101` switches protocols).
    pub fn set_status(&self, status: u16) {
        self.0.set_status(status)
    }

    /// First value of a header, as raw bytes.
    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0.header(name)
    }

    /// First value of a header as text; bytes that are not UTF-8 become U+FFFD.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.0.header(name).map(lossy)
    }

    /// Every value of a header, in order (empty if absent).
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.0.header_all(name)
    }

    /// Names of every header present, lower-case, each once.
    pub fn header_names(&self) -> Vec<String> {
        self.0.header_names()
    }

    /// Replaces every value of a header with this one. Invalid names or values are ignored and
    /// logged by the gateway, and so is a change past its response header limits (`[limits]`:
    /// 100 lines by default).
    pub fn set_header(&self, name: &str, value: impl AsRef<[u8]>) {
        self.0.set_header(name, value.as_ref())
    }

    /// Adds a value to a header, keeping the values already there (within the gateway's header
    /// limits, as `set_header`).
    pub fn append_header(&self, name: &str, value: impl AsRef<[u8]>) {
        self.0.append_header(name, value.as_ref())
    }

    /// Removes every value of a header.
    pub fn remove_header(&self, name: &str) {
        self.0.remove_header(name)
    }

    /// The buffered response body. `None` unless [`Descriptor::response_body`](crate::Descriptor)
    /// is set, and when the body was longer than [`Request::limit_response_body`] allowed.
    pub fn body(&self) -> Option<Vec<u8>> {
        self.0.body()
    }

    /// Replaces the response body; `content-length` is fixed up by the gateway. Ignored unless
    /// [`Descriptor::response_body`](crate::Descriptor) is set.
    ///
    /// The upstream's other headers stay, validators included: when the new body is not the
    /// upstream's bytes, also remove `etag` and `content-md5`, which describe those bytes
    /// (`builtin:transform` does), or a client's cache or `Range` request may pair them with the
    /// wrong body. [`Response::replace_with_json`] removes them itself.
    pub fn set_body(&self, body: impl AsRef<[u8]>) {
        self.0.set_body(body.as_ref())
    }

    /// First value of a trailer (a field sent after the body, such as gRPC's `grpc-status`),
    /// name matched case-insensitively. Trailers are only known for a buffered body: `None`
    /// unless [`Descriptor::response_body`](crate::Descriptor) is set.
    pub fn trailer(&self, name: &str) -> Option<Vec<u8>> {
        self.0.trailer(name)
    }

    /// First value of a trailer as text; bytes that are not UTF-8 become U+FFFD (as with
    /// [`Response::header_str`]).
    pub fn trailer_str(&self, name: &str) -> Option<String> {
        self.0.trailer(name).map(lossy)
    }

    /// Every value of a trailer, in the order received (gRPC metadata may repeat a name); empty
    /// when absent, and unless [`Descriptor::response_body`](crate::Descriptor) is set. Needs a
    /// gateway speaking `airlock:plugin@0.2.3` or later.
    pub fn trailer_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.0.trailer_all(name)
    }

    /// Names of every trailer present, lower-case. Empty unless
    /// [`Descriptor::response_body`](crate::Descriptor) is set.
    pub fn trailer_names(&self) -> Vec<String> {
        self.0.trailer_names()
    }

    /// Replaces every value of a trailer with this one (HTTP/2 clients receive trailers; HTTP/1.1
    /// clients do not). Ignored unless [`Descriptor::response_body`](crate::Descriptor) is set.
    pub fn set_trailer(&self, name: &str, value: impl AsRef<[u8]>) {
        self.0.set_trailer(name, value.as_ref())
    }

    /// Removes every value of a trailer. Ignored unless
    /// [`Descriptor::response_body`](crate::Descriptor) is set.
    pub fn remove_trailer(&self, name: &str) {
        self.0.remove_trailer(name)
    }

    /// The buffered response body parsed as JSON into `T`.
    ///
    /// `Ok(None)` if there is no buffered body (see [`Response::body`]) or the body is empty or
    /// only JSON whitespace (spaces, tabs, CR, LF), as for a `204 No Content`: there is no JSON
    /// value to parse, whatever `T` is. `Ok(Some(_))` for any other body that parses as a `T` (a
    /// body `null` is `Some`, for types that accept it); `Err` if it is not JSON or does not fit
    /// `T`, with the key path in the message.
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<Option<T>, String> {
        crate::json::optional_body(self.0.body().as_deref())
    }

    /// Replaces the response body with `value` serialized as JSON and sets
    /// `content-type: application/json`. Needs [`Descriptor::response_body`](crate::Descriptor),
    /// like [`Response::set_body`]. The status and the other headers stay, the upstream's `etag`
    /// and `content-md5` too: remove them when the body changed (see [`Response::set_body`]).
    ///
    /// `Err`, with nothing changed (`content-type` neither), when `value` cannot be serialized,
    /// and when the plugin has no response-body access (its
    /// [`Plugin::descriptor`](crate::Plugin::descriptor) did not ask for it, or its
    /// [`Plugin::configured_descriptor`](crate::Plugin::configured_descriptor) gave it up): told
    /// apart by the SDK itself, at no cost. Two cases it cannot see, where this returns `Ok`: a
    /// body longer than the route's `max_body_bytes`, which no call reveals (the gateway does
    /// not set it and fails the call once it returns: `too_large`, the entry's `failure` policy
    /// decides), and a response longer than this request's [`Request::limit_response_body`]
    /// (the body is ignored and the `content-type` set over the one that stays; then
    /// [`Response::body`] is `None`: check it first when the plugin narrows).
    pub fn set_json_body(&self, value: &impl Serialize) -> Result<(), String> {
        body_writable(Body::Response)?;
        let body = serde_json::to_vec(value).map_err(|e| format!("cannot serialize the JSON body: {e}"))?;
        self.0.set_body(&body);
        self.0.set_header("content-type", b"application/json");
        Ok(())
    }

    /// Replaces the whole response with `status` and `value` serialized as a JSON body
    /// (`content-type: application/json`), and removes the upstream's validators (`etag`,
    /// `last-modified`, `content-md5`), which described the body that is gone, and the headers
    /// only the upstream's status gave meaning to: `location` unless the new status is a
    /// redirect or a 201 (a 502 for an upstream's 302 must not point anywhere), `content-range`
    /// unless it is a 206 or 416. Takes any
    /// `Serialize` value, a [`serde_json::Value`] included.
    ///
    /// Needs [`Descriptor::response_body`](crate::Descriptor): without response-body access the
    /// gateway would keep the upstream's body, so the error is logged and the response is left
    /// as it was (as [`Response::set_json_body`] refuses; the cases neither can see are listed
    /// there). If `value` cannot be serialized (a map with non-string keys, a failing
    /// `Serialize` impl), the error is logged and the response becomes a 500 with a short text
    /// body instead, as with [`Action::json`](crate::Action::json).
    pub fn replace_with_json(&self, status: u16, value: &impl Serialize) {
        if let Err(why) = body_writable(Body::Response) {
            crate::log::error(format!("replace_with_json left the response as it was: {why}"));
            return;
        }
        let (status, content_type, body) = match serde_json::to_vec(value) {
            Ok(body) => (status, "application/json", body),
            Err(e) => {
                crate::log::error(format!("cannot serialize the JSON response: {e}"));
                (500, "text/plain; charset=utf-8", b"internal error: unserializable response\n".to_vec())
            }
        };
        self.0.set_status(status);
        self.0.set_body(&body);
        self.0.set_header("content-type", content_type.as_bytes());
        for stale in ["etag", "last-modified", "content-md5"] {
            self.0.remove_header(stale);
        }
        if status != 201 && !(300..400).contains(&status) {
            self.0.remove_header("location");
        }
        if status != 206 && status != 416 {
            self.0.remove_header("content-range");
        }
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::lossy;

    /// What `header_str` and `trailer_str` turn a value into.
    #[test]
    fn text_values_are_read_lossily() {
        assert_eq!(lossy(b"grpc ok".to_vec()), "grpc ok");
        assert_eq!(lossy(vec![b'a', 0xff, b'b']), "a\u{fffd}b");
    }
}
