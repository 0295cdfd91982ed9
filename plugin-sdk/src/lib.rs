//! Write plugins for the Airlock API gateway in Rust.
//!
//! An Airlock plugin is a WebAssembly component that the gateway runs, sandboxed, in a route's
//! plugin chain. With this crate a plugin is one type implementing [`Plugin`] and one
//! [`export_plugin!`] line; the WIT bindings are generated and wired up for you.
//!
//! # A complete plugin
//!
//! ```
//! use airlock_sdk::{Action, Descriptor, Plugin, Request, export_plugin};
//!
//! /// Refuses requests without the configured header. Config: `{ header = "x-token" }`.
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct RequireHeader { #[serde(default = "default_header")] header: String }
//! fn default_header() -> String { "x-api-key".into() }
//!
//! impl Plugin for RequireHeader {
//!     type Config = Self;
//!     fn new(config: Self) -> Result<Self, String> { Ok(config) }
//!     fn descriptor() -> Descriptor { Descriptor::request_only() }
//!     fn on_request(&self, req: &Request) -> Action {
//!         match req.header(&self.header) {
//!             Some(_) => Action::Continue,
//!             None => Action::text(401, format!("missing header `{}`\n", self.header)),
//!         }
//!     }
//! }
//!
//! export_plugin!(RequireHeader);
//! ```
//!
//! The crate is a `cdylib` that depends on this crate and `serde`. `airlock-sdk` is not published
//! on crates.io: depend on it by path (the `plugin-sdk/` directory of an Airlock checkout) or by
//! git (the Airlock repository; Cargo finds the `airlock-sdk` package in its workspace).
//! `airlock plugin new` writes such a crate, with the dependency line filled in:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! airlock-sdk = { path = "../airlock/plugin-sdk" }
//! # or: airlock-sdk = { git = "<URL of the Airlock repository>" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! Build it (once: `rustup target add wasm32-wasip2`) and point a route at the component:
//!
//! ```text
//! cargo build --target wasm32-wasip2 --release
//! ```
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "./target/wasm32-wasip2/release/require_header.wasm"
//! config = { header = "x-token" }
//! ```
//!
//! # How the gateway calls a plugin
//!
//! 1. [`Plugin::descriptor`] once per loaded component: which phases run, whether bodies are
//!    needed.
//! 2. For every warm instance, the chain entry's `config` table is parsed into
//!    [`Plugin::Config`] and handed to [`Plugin::new`]. Any error rejects the gateway config at
//!    load time, shown to the operator beside the route and plugin. Parse errors name the key,
//!    e.g. ``"`request.set.x-a`: invalid type: integer `5`, expected a string"``.
//! 3. For every request: [`Plugin::on_request`] in chain order, then [`Plugin::on_response`] in
//!    reverse chain order.
//!
//! An instance handles one request at a time, so `&self` needs no locking; keep per-request
//! data in the request context ([`Request::context_set`]), never in the plugin. A panic or an
//! exhausted CPU or memory budget fails the request (500, or skipped if the chain entry is
//! fail-open) and the instance is thrown away.
//!
//! What a plugin can reach is exactly what its component imports: a plugin built with this crate
//! imports the request and response it is handed, [`log`], and the WASI basics every Rust
//! program links (stdio, clocks, random); stdout and stderr go to the gateway log. A plugin that
//! uses [`state`] also imports that capability, which the operator must grant; likewise
//! [`metrics`] (the plugin's own counters, gauges and histograms on the gateway's `/metrics`),
//! [`http_client`] and [`files`]. [`crypto`] is always granted.
//!
//! # Unit tests
//!
//! [`configure`] runs a plugin's config path natively, under `cargo test`, and [`log`] writes to
//! stderr there. Nothing else that reaches the gateway works natively: a [`Request`] or
//! [`Response`] cannot be made outside one, and a call into [`state`], [`metrics`],
//! [`http_client`] or [`crypto`] aborts the test process ("entered unreachable code", then
//! "panic in a function that cannot unwind"). Keep the logic worth testing in plain functions,
//! and try the built component with `airlock plugin test`.
//!
//! # Shared config building blocks
//!
//! [`template`] (values with `${param.id}`, `${header.x}`, `${context.consumer}`, ...) and
//! [`header_rules`] (remove, rename, set, add, append) are what the built-in plugins use to read
//! values and header edits from config; a plugin that takes the same kind of config can use them
//! too, so operators meet one syntax everywhere.
#![deny(missing_docs)]

mod action;
pub mod consumer;
pub mod crypto;
mod export;
pub mod files;
pub mod fixed_edits;
pub mod header_rules;
mod http;
pub mod http_client;
mod json;
pub mod limit_key;
pub mod log;
pub mod metrics;
mod plugin;
pub mod state;
pub mod strict_json;
pub mod template;

pub use action::{Action, ResponseInit, SlotRequest, error_json};
pub use fixed_edits::{FixedEdit, ResponseBodies};
pub use http::{Request, RequestEdit, Response, ResponseEdit};
pub use plugin::{Descriptor, Plugin};
/// The `serde_json` this crate's API uses ([`error_json`], [`Response::replace_with_json`],
/// `json_body::<serde_json::Value>()`), re-exported so a plugin can name `Value` without a
/// dependency of its own: `use airlock_sdk::serde_json::{Value, json};`.
pub use serde_json;

/// Builds a plugin from a config in JSON text, exactly as the gateway's `configure` call does:
/// deserializes [`Plugin::Config`] (an empty text or `{}` is an empty table; errors name the key
/// path, e.g. ``"`request.set.x-a`: invalid type: integer `5`, expected a string"``), then calls
/// [`Plugin::new`].
///
/// Runs natively too, so a plugin's config validation can be unit-tested with `cargo test`:
///
/// ```
/// # use airlock_sdk::Plugin;
/// # #[derive(serde::Deserialize)] #[serde(deny_unknown_fields)] struct Config { ms: u32 }
/// # struct Delay(u32);
/// # impl Plugin for Delay {
/// #     type Config = Config;
/// #     fn new(c: Config) -> Result<Self, String> { Ok(Delay(c.ms)) }
/// # }
/// assert!(airlock_sdk::configure::<Delay>(r#"{"ms": 10}"#).is_ok());
/// let err = airlock_sdk::configure::<Delay>(r#"{"ms": "ten"}"#).err().unwrap();
/// assert_eq!(err, "`ms`: invalid type: string \"ten\", expected u32");
/// ```
pub fn configure<P: Plugin>(config_json: &str) -> Result<P, String> {
    let config: P::Config = json::config_from_str(config_json)?;
    P::new(config)
}

/// The generated WIT bindings (`wit/plugin.wit`, world `plugin`). Used by [`export_plugin!`];
/// not part of the supported API.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "airlock_sdk::bindings",
        export_macro_name: "export",
        // Records and variants passed to the gateway borrow their strings and bytes: a list of
        // changes (`request.edit`) is lent from the plugin's own names and values, not copied
        // into new allocations for each call.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

/// What [`export_plugin!`] expands to. Not part of the supported API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::airlock::plugin::types::{
        Action as RawAction, Descriptor as RawDescriptor, Request as RawRequest, Response as RawResponse,
    };
    pub use crate::bindings::exports::airlock::plugin::handler::Guest;
    pub use crate::export::{configure, describe, on_request, on_response};
}
