//! A plugin built against `airlock:plugin@0.2.0` exactly as it was released (`wit/plugin.wit`
//! is a frozen copy, never to be edited): what every plugin compiled by the 0.2.0 SDK imports and
//! exports. A gateway speaking any later 0.2.x must load it and run both of its phases; this is
//! the compatibility promise plugin authors rely on when they upgrade the gateway and not their
//! plugins.
//!
//! - request phase: sets `x-contract: 0.2.0` and the context value `contract`, and answers 418
//!   itself when the path is `/teapot` (so a `respond` action crosses the boundary too);
//! - response phase: copies the context value into the response header `x-contract-seen`.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use airlock::plugin::types::{Action, Descriptor, Header, Request, Response, ResponseInit};

struct Contract020;

impl exports::airlock::plugin::handler::Guest for Contract020 {
    fn describe() -> Descriptor {
        Descriptor { on_request: true, on_response: true, request_body: false, response_body: false }
    }

    fn configure(_config: String) -> Result<Descriptor, String> {
        Ok(Self::describe())
    }

    fn on_request(req: &Request) -> Action {
        if req.path() == "/teapot" {
            return Action::Respond(ResponseInit {
                status: 418,
                headers: vec![Header { name: "x-contract".into(), value: b"0.2.0".to_vec() }],
                body: b"short and stout".to_vec(),
            });
        }
        req.set_header("x-contract", b"0.2.0");
        req.context_set("contract", "0.2.0");
        Action::Continue
    }

    fn on_response(req: &Request, resp: &Response) {
        if let Some(seen) = req.context_get("contract") {
            resp.set_header("x-contract-seen", seen.as_bytes());
        }
    }
}

export!(Contract020);
