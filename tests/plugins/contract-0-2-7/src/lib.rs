//! A plugin built against `airlock:plugin@0.2.7` exactly as it was released (`wit/plugin.wit`
//! is a frozen copy, never to be edited), declaring its changes with that release's
//! `fixed-edits.declare-templated`: a gateway speaking any later 0.2.x must take them and make
//! them with no call, as 0.2.7 did.
//!
//! At configure it declares `x-contract: 0.2.7` and `x-contract-route: route-<route id>` on the
//! request and `x-contract-id: <request id>` on the response, and turns both phases off.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use airlock::plugin::fixed_edits::{FixedEdit, TemplatedHeader, ValuePart, declare_templated};
use airlock::plugin::types::{Action, Descriptor, Header, Request, RequestEdit, Response};

struct Contract027;

impl exports::airlock::plugin::handler::Guest for Contract027 {
    fn describe() -> Descriptor {
        Descriptor { on_request: true, on_response: true, request_body: false, response_body: false }
    }

    fn configure(_config: String) -> Result<Descriptor, String> {
        declare_templated(&[
            FixedEdit::Same(RequestEdit::SetHeader(Header { name: "x-contract".into(), value: b"0.2.7".to_vec() })),
            FixedEdit::SetHeader(TemplatedHeader {
                name: "x-contract-route".into(),
                value: vec![ValuePart::Literal(b"route-".to_vec()), ValuePart::RouteId],
            }),
            FixedEdit::ResponseSet(TemplatedHeader { name: "x-contract-id".into(), value: vec![ValuePart::RequestId] }),
        ])?;
        Ok(Descriptor { on_request: false, on_response: false, request_body: false, response_body: false })
    }

    /// Never called: both phases are off.
    fn on_request(req: &Request) -> Action {
        req.set_header("x-contract-called", b"on-request");
        Action::Continue
    }

    /// Never called: both phases are off.
    fn on_response(_req: &Request, resp: &Response) {
        resp.set_header("x-contract-called", b"on-response");
    }
}

export!(Contract027);
