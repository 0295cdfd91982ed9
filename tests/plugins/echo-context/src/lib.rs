//! Probes the chain: the request context and the order of both phases.
//!
//! Config: `{ tag = "a", expose = ["k1", ...] }`, both optional.
//! - request phase: every `x-set-context: key=value` request header sets that context value, and
//!   `tag` is appended to the request header `x-chain` (the upstream sees the chain order);
//! - response phase: each context key listed in `expose` that has a value is copied into the
//!   response header `x-context-<key>`, and `tag` is appended to the response header
//!   `x-chain-resp` (the client sees the reverse order).
use airlock_sdk::{Action, Plugin, Request, Response, export_plugin};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    tag: Option<String>,
    expose: Vec<String>,
}

struct EchoContext(Config);

impl Plugin for EchoContext {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(EchoContext(config))
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
