//! Probes the response trailer API: copies the upstream's `x-upstream-trailer` trailer into the
//! header `x-seen-trailer` (and every trailer name into `x-trailer-names`), sets the trailer
//! `x-added`, removes the trailer `x-secret`.
use airlock_sdk::{Descriptor, Plugin, Request, Response, export_plugin};

struct Trailers;

impl Plugin for Trailers {
    type Config = ();

    fn new((): ()) -> Result<Self, String> {
        Ok(Trailers)
    }

    fn descriptor() -> Descriptor {
        Descriptor::new().with_response_body()
    }

    fn on_response(&self, _req: &Request, resp: &Response) {
        if let Some(value) = resp.trailer("x-upstream-trailer") {
            resp.set_header("x-seen-trailer", value);
        }
        let mut names = resp.trailer_names();
        names.sort();
        resp.set_header("x-trailer-names", names.join(","));
        resp.set_trailer("x-added", "1");
        resp.remove_trailer("x-secret");
    }
}

export_plugin!(Trailers);
