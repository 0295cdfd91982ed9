//! Tries to read `/etc/passwd` through `std::fs`, which makes the component import
//! `wasi:filesystem`: the gateway must refuse to load it, naming the plugin and the capability.
use airlock_sdk::{Action, Plugin, Request, export_plugin};

struct ReadsFile;

impl Plugin for ReadsFile {
    type Config = ();

    fn new((): ()) -> Result<Self, String> {
        Ok(ReadsFile)
    }

    fn on_request(&self, req: &Request) -> Action {
        let leaked = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        req.set_header("x-leaked", leaked.lines().next().unwrap_or(""));
        Action::Continue
    }
}

export_plugin!(ReadsFile);
