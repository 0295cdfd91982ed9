//! Needs both bodies: uppercases the request body (ASCII) and appends `!` to the response body.
use airlock_sdk::{Action, Descriptor, Plugin, Request, Response, export_plugin};

struct BodyUpper;

impl Plugin for BodyUpper {
    type Config = ();

    fn new((): ()) -> Result<Self, String> {
        Ok(BodyUpper)
    }

    fn descriptor() -> Descriptor {
        Descriptor::new().with_request_body().with_response_body()
    }

    fn on_request(&self, req: &Request) -> Action {
        if let Some(body) = req.body() {
            req.set_body(body.to_ascii_uppercase());
        }
        Action::Continue
    }

    fn on_response(&self, _req: &Request, resp: &Response) {
        if let Some(mut body) = resp.body() {
            body.push(b'!');
            resp.set_body(body);
        }
    }
}

export_plugin!(BodyUpper);
