//! The [`Plugin`] trait and its [`Descriptor`].

use serde::de::DeserializeOwned;

use crate::{Action, FixedEdit, Request, RequestEdit, Response};

/// A gateway plugin. Implement it on your type and register the type with
/// [`export_plugin!`](crate::export_plugin).
///
/// Only [`Plugin::new`] is required; every phase defaults to doing nothing, so a plugin implements
/// just the phases it needs (and says so in [`Plugin::descriptor`], so the gateway can skip the
/// others).
///
/// One value of the type is created per warm instance of the component, from the chain entry's
/// config. An instance serves one request at a time, but serves many requests one after the
/// other: keep configuration in `self`, and per-request data in the request context
/// ([`Request::context_set`]).
pub trait Plugin: Sized + 'static {
    /// The plugin's config: the chain entry's `config` table in `airlock.toml`, deserialized with
    /// serde from JSON. A chain entry without a `config` table is an empty table (`{}`), which
    /// `()`, unit structs and structs marked `#[serde(default)]` accept.
    ///
    /// Use `#[serde(deny_unknown_fields)]` so that a misspelt key is an error instead of being
    /// silently ignored.
    type Config: DeserializeOwned;

    /// Builds the plugin from its config. Runs once per warm instance, before any phase.
    ///
    /// Validate everything here and precompute what the phases need (parsed templates, compiled
    /// patterns, fixed responses), so the phases cannot fail on config. An `Err` rejects the whole
    /// gateway config at load time (or a reload, keeping the old config serving); its text is
    /// shown to the operator next to the route and plugin, so say what is wrong and what is
    /// expected. Errors while deserializing [`Plugin::Config`] are reported the same way, prefixed
    /// with the key path (`` `limits[1].rate`: ... ``). Start your own messages with the key in
    /// backticks too: the gateway then points the operator at that key's line in the config file.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Tells the gateway which phases this plugin implements and whether it needs bodies.
    ///
    /// Called once per loaded component, before any config is seen, so it cannot depend on
    /// config. A phase turned off here is never called; asking for a body makes the gateway buffer
    /// it (up to the route's body limit) for every request through this plugin, so only ask when
    /// the phase reads or replaces it.
    ///
    /// The default, [`Descriptor::default`], turns both phases on and asks for no bodies.
    fn descriptor() -> Descriptor {
        Descriptor::default()
    }

    /// The phases and bodies this configured instance actually uses, reported to the gateway right
    /// after [`Plugin::new`] succeeds. The gateway only narrows with it: anything
    /// [`Plugin::descriptor`] left off stays off. Turn off what the config makes a no-op (a headers
    /// plugin without response rules needs no `on_response` call) and every request through this
    /// chain entry skips it.
    ///
    /// The default returns [`Plugin::descriptor`] unchanged.
    fn configured_descriptor(&self) -> Descriptor {
        Self::descriptor()
    }

    /// Changes this configured plugin makes to every request, the same on each one: headers with
    /// fixed values, a fixed context key, fixed response headers ([`RequestEdit::Response`]).
    /// Reported to the gateway once, right after [`Plugin::new`] (and checked there: a change the
    /// gateway refuses, such as an invalid header value, fails the config with a message naming
    /// it). The gateway then makes them itself, natively, on every request that reaches this
    /// chain entry, with no call into the plugin: before [`Plugin::on_request`] runs, and also
    /// when it is off; a response change where [`Plugin::on_response`] would run, before it.
    ///
    /// A plugin whose work for a config is all fixed changes turns both phases off in
    /// [`Plugin::configured_descriptor`], and its chain entry then costs no call per request
    /// (`builtin:headers` with literal values does). Borrow the names and values from `self`.
    ///
    /// The default declares none. Declaring some needs a gateway speaking
    /// `airlock:plugin@0.2.6` or later; a plugin that declares none, built with `--release`,
    /// does not import `fixed-edits` and loads on earlier 0.2 gateways, and one that declares
    /// these but no [`Plugin::templated_fixed_edits`] imports only `declare` and loads on 0.2.6
    /// (a debug build imports the other functions all the same, and needs a 0.2.8 gateway).
    fn fixed_edits(&self) -> Vec<RequestEdit<'_>> {
        Vec::new()
    }

    /// As [`Plugin::fixed_edits`], with header values the gateway builds from each request out
    /// of a [`Template`](crate::template::Template), where the change is made, from what the
    /// plugin's own call would have read there ([`FixedEdit`]; `builtin:headers`'
    /// `x-user-id = "${param.id}"` or `x-consumer = "${context.consumer}"`): the same value the
    /// plugin would have written, without the call; and request header rules that look at the
    /// request there to decide ([`FixedEdit::AddHeader`], [`FixedEdit::RenameHeader`]). When it returns any, they are declared
    /// instead of [`Plugin::fixed_edits`]' (put those in as [`FixedEdit::Same`], in order among
    /// the built ones).
    ///
    /// The default declares none. Declaring some needs a gateway speaking
    /// `airlock:plugin@0.2.8` or later (they are declared with `fixed-edits.declare-rules`).
    fn templated_fixed_edits(&self) -> Vec<FixedEdit<'_>> {
        Vec::new()
    }

    /// Which upstream responses this plugin reads the body of, when its descriptor reads response
    /// bodies: by status and media type, as its config says (a rewrite of 2xx JSON answers, a
    /// cache of the statuses it stores). The gateway then buffers no other response for it (a
    /// download, an error page past the route's `max_body_bytes`, which would otherwise be a
    /// 502): they stream as they come, and this plugin's [`Response::body`] is `None` for them
    /// (its response phase still runs on their head).
    ///
    /// The default, `None`, reads every response's body. Declaring one needs a gateway speaking
    /// `airlock:plugin@0.2.9` or later (`fixed-edits.declare-response-bodies`).
    fn response_bodies(&self) -> Option<crate::ResponseBodies> {
        None
    }

    /// Where each change of [`Plugin::templated_fixed_edits`] (or, without those,
    /// [`Plugin::fixed_edits`]) comes from in the plugin's config, in the same order, as a key
    /// path (`request.set.host`): a change the gateway refuses is then named by that key (and the
    /// gateway points at its line) instead of by its place in the list. The default names none.
    /// `header_rules::fixed_edit_keys` gives them for header rules.
    fn fixed_edit_keys(&self) -> Vec<String> {
        Vec::new()
    }

    /// Request phase: runs for every request on a route whose chain holds this plugin, before the
    /// upstream is called, in chain order (global entries first).
    ///
    /// Read and change the request through `req`; the upstream receives it as the last request
    /// phase left it. The returned [`Action`] tells the gateway what to do next:
    /// [`Action::Continue`] goes on to the next plugin and then the upstream,
    /// [`Action::Respond`] answers the client now (later request phases and the upstream are
    /// skipped; the response phases of this plugin and of the plugins before it still run), and
    /// [`Action::Delay`] waits, then continues with the next plugin, and [`Action::AcquireSlot`]
    /// waits for a concurrency slot held until the response is sent.
    ///
    /// The default returns [`Action::Continue`] without touching the request.
    fn on_request(&self, req: &Request) -> Action {
        let _ = req;
        Action::Continue
    }

    /// Response phase: runs once the upstream (or a plugin's [`Action::Respond`]) has answered,
    /// in reverse chain order, before the response is sent to the client.
    ///
    /// Change the response through `resp`. `req` is the request as it was sent upstream; it is
    /// read-only here (setters are ignored and logged), except for its context, which still
    /// carries what the request phases stored and stays writable: a value set with
    /// [`Request::context_set`] here is seen by the response phases after this one (and a
    /// `consumer` set here is the one the access log records). Runs for every request whose request phase ran for this plugin, including
    /// when this plugin or a later one short-circuited.
    ///
    /// The default does nothing.
    fn on_response(&self, req: &Request, resp: &Response) {
        let _ = (req, resp);
    }
}

/// What a plugin tells the gateway about itself: returned by [`Plugin::descriptor`].
///
/// ```
/// use airlock_sdk::Descriptor;
///
/// // Only a request phase, which rewrites the request body.
/// let d = Descriptor::request_only().with_request_body();
/// assert!(d.on_request && d.request_body && !d.on_response && !d.response_body);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Descriptor {
    /// [`Plugin::on_request`] does something; `false` lets the gateway skip the call.
    pub on_request: bool,
    /// [`Plugin::on_response`] does something; `false` lets the gateway skip the call.
    pub on_response: bool,
    /// [`Plugin::on_request`] reads or replaces the request body: the gateway buffers it (413
    /// beyond the route's body limit). Without it, [`Request::body`] is `None` and the body streams
    /// to the upstream untouched.
    pub request_body: bool,
    /// [`Plugin::on_response`] reads or replaces the response body: the gateway buffers it (502
    /// beyond the route's body limit). Without it, [`Response::body`] is `None`.
    pub response_body: bool,
}

impl Default for Descriptor {
    /// Both phases on, no bodies.
    fn default() -> Self {
        Self { on_request: true, on_response: true, request_body: false, response_body: false }
    }
}

impl Descriptor {
    /// Both phases on, no bodies (the same as [`Descriptor::default`]).
    pub const fn new() -> Self {
        Self { on_request: true, on_response: true, request_body: false, response_body: false }
    }

    /// Only the request phase, no bodies.
    pub const fn request_only() -> Self {
        Self { on_request: true, on_response: false, request_body: false, response_body: false }
    }

    /// Only the response phase, no bodies.
    pub const fn response_only() -> Self {
        Self { on_request: false, on_response: true, request_body: false, response_body: false }
    }

    /// Turns the request phase on or off.
    pub const fn with_on_request(mut self, on: bool) -> Self {
        self.on_request = on;
        self
    }

    /// Turns the response phase on or off.
    pub const fn with_on_response(mut self, on: bool) -> Self {
        self.on_response = on;
        self
    }

    /// Asks for the buffered request body (and turns the request phase on).
    pub const fn with_request_body(mut self) -> Self {
        self.request_body = true;
        self.on_request = true;
        self
    }

    /// Asks for the buffered response body (and turns the response phase on).
    pub const fn with_response_body(mut self) -> Self {
        self.response_body = true;
        self.on_response = true;
        self
    }
}
