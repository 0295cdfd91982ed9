//! Loops forever in its request phase without calling the host: only the CPU deadline (epoch
//! interruption) can stop it.
use airlock_sdk::{Action, Descriptor, Plugin, Request, export_plugin};

struct Loop;

impl Plugin for Loop {
    type Config = ();

    fn new((): ()) -> Result<Self, String> {
        Ok(Loop)
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, _req: &Request) -> Action {
        let mut counter = 0u64;
        loop {
            // Volatile, so the compiler can neither remove the loop nor prove it never ends.
            // SAFETY: reads and writes a local through a valid, aligned pointer.
            unsafe {
                let value = std::ptr::read_volatile(&counter);
                std::ptr::write_volatile(&mut counter, value.wrapping_add(1));
            }
        }
    }
}

export_plugin!(Loop);
