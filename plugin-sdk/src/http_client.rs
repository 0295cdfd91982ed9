//! Outbound HTTP calls to the origins the operator granted (capability `http-client`).
//!
//! A plugin that calls anything here imports `airlock:plugin/http-client`, and the gateway loads
//! it only with a grant naming the origins it may reach:
//!
//! ```toml
//! [plugins.my-plugin]
//! source = "./my_plugin.wasm"
//! capabilities = ["http-client"]
//! http_client = { allow = ["https://idp.example.com"], timeout_ms = 2000 }
//! ```
//!
//! Calls block the plugin (not the gateway: it waits asynchronously) until the whole response is
//! read, so keep them off the common path: cache what you fetch, e.g. in [`crate::state`].
//!
//! ```no_run
//! let response = airlock_sdk::http_client::get("https://idp.example.com/.well-known/jwks.json");
//! match response {
//!     Ok(r) if r.status == 200 => { let _jwks = r.body; }
//!     Ok(r) => { /* the IdP answered r.status */ }
//!     Err(e) => { /* denied, timeout, connection refused... */ let _ = e; }
//! }
//! ```

use crate::bindings::airlock::plugin::http_client as raw;

pub use raw::{HttpError, IncomingResponse as Response, OutgoingRequest as Request};

impl Response {
    /// The first value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

/// Sends `request` and waits for the whole response.
pub fn send(request: &Request) -> Result<Response, HttpError> {
    raw::send(request)
}

/// Whether a call to `url` would be let through (its origin granted), without sending anything:
/// for checking, at configure, the URLs a config names (`Err(HttpError::Denied(..))` when the
/// grant does not cover it).
pub fn allows(url: &str) -> Result<(), HttpError> {
    raw::allows(url)
}

/// `GET url` with no extra headers and the grant's timeout.
pub fn get(url: &str) -> Result<Response, HttpError> {
    send(&Request { method: "GET".into(), url: url.into(), headers: Vec::new(), body: None, timeout_ms: 0 })
}
