//! Burns CPU in its request phase without calling the host, then lets the request through: the
//! request header `x-spin` says how many loop iterations (a well-behaved but CPU-heavy plugin,
//! like a transform of a large body). Sets `x-spun` on the request to the iterations done.
use airlock_sdk::{Action, Descriptor, Plugin, Request, export_plugin};

struct Spin;

impl Plugin for Spin {
    type Config = ();

    fn new((): ()) -> Result<Self, String> {
        Ok(Spin)
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        let iterations: u64 = req.header_str("x-spin").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut counter = 0u64;
        while counter < iterations {
            // Volatile, so the compiler can neither remove the loop nor fold it.
            // SAFETY: reads and writes a local through a valid, aligned pointer.
            unsafe {
                let value = std::ptr::read_volatile(&counter);
                std::ptr::write_volatile(&mut counter, value + 1);
            }
        }
        req.set_header("x-spun", counter.to_string());
        Action::Continue
    }
}

export_plugin!(Spin);
