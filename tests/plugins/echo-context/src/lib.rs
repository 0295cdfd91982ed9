//! Probes the chain: the request context and the order of both phases.
//!
//! Config: `{ tag = "a", expose = ["k1", ...], fixed_append = { "name" = "value" } }`, each optional.
//! - configure: each `fixed_append` pair is declared as a fixed edit appending that request
//!   header, unchecked (the gateway checks it), so the gateway appends it before the request
//!   phase runs;
//! - request phase: every `x-set-context: key=value` request header sets that context value, and
//!   `tag` is appended to the request header `x-chain` (the upstream sees the chain order);
//! - response phase: each context key listed in `expose` that has a value is copied into the
//!   response header `x-context-<key>`, and `tag` is appended to the response header
//!   `x-chain-resp` (the client sees the reverse order).
use std::collections::BTreeMap;

use airlock_sdk::{Action, Plugin, Request, RequestEdit, Response, export_plugin};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    tag: Option<String>,
    expose: Vec<String>,
    fixed_append: BTreeMap<String, String>,
}

struct EchoContext(Config);

impl Plugin for EchoContext {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(EchoContext(config))
    }

    fn fixed_edits(&self) -> Vec<RequestEdit<'_>> {
        self.0.fixed_append.iter().map(|(name, value)| RequestEdit::AppendHeader(name, value.as_bytes())).collect()
    }

    fn on_request(&self, req: &Request) -> Action {
        for header in req.header_all("x-set-context") {
            let header = String::from_utf8_lossy(&header);
            if let Some((key, value)) = header.split_once('=') {
                req.context_set(key.trim(), value.trim());
            }
        }
        if let Some(tag) = &self.0.tag {
            req.append_header("x-chain", tag);
        }
        Action::Continue
    }

    fn on_response(&self, req: &Request, resp: &Response) {
        for key in &self.0.expose {
            if let Some(value) = req.context_get(key) {
                resp.set_header(&format!("x-context-{key}"), value);
            }
        }
        if let Some(tag) = &self.0.tag {
            resp.append_header("x-chain-resp", tag);
        }
    }
}

export_plugin!(EchoContext);
