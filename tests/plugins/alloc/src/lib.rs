//! Allocates and touches memory without bound in its request phase, until the allocation fails
//! at the instance's memory cap (an abort, so a trap).
use airlock_sdk::{Action, Descriptor, Plugin, Request, export_plugin};

struct Alloc;

/// Grows by this much at a time: 1 MiB, so the cap is reached in a few steps.
const CHUNK: usize = 1 << 20;

impl Plugin for Alloc {
    type Config = ();

    fn new((): ()) -> Result<Self, String> {
        Ok(Alloc)
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, _req: &Request) -> Action {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = vec![0u8; CHUNK];
            // Touch every page so the memory is really used.
            for page in chunk.chunks_mut(4096) {
                page[0] = 1;
            }
            hoard.push(std::hint::black_box(chunk));
        }
    }
}

export_plugin!(Alloc);
