//! Panics in its request phase: the gateway must fail the request closed (500 with a request id,
//! no trap details), or skip the entry when it is fail-open, and replace the instance.
use airlock_sdk::{Action, Descriptor, Plugin, Request, export_plugin};

struct Panic;

impl Plugin for Panic {
    type Config = ();

    fn new((): ()) -> Result<Self, String> {
        Ok(Panic)
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        panic!("test plugin `panic` panics on purpose (request {})", req.request_id());
    }
}

export_plugin!(Panic);
