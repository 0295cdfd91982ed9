//! Reads (or, asked to, writes) a file through `std::fs`, which makes the component import
//! `wasi:filesystem`. Without the `files` capability the gateway must refuse to load it, naming the
//! plugin and the capability; with it, the plugin must reach only its granted directory, read-only.
//!
//! The path comes from the request header `x-path` (default `/etc/passwd`); the first line read,
//! or `error: ...`, goes upstream in `x-file`. With `x-write: <text>` it also tries to write that
//! text to the path and reports the outcome in `x-write-result`. With `x-leak: <n>` it opens the
//! path `n` times and never closes those files (how many opened goes in `x-leaked`).
use airlock_sdk::{Action, Plugin, Request, export_plugin};

struct ReadsFile;

impl Plugin for ReadsFile {
    type Config = ();

    fn new((): ()) -> Result<Self, String> {
        Ok(ReadsFile)
    }

    fn on_request(&self, req: &Request) -> Action {
        let path = req.header_str("x-path").unwrap_or_else(|| "/etc/passwd".to_owned());
        let read = match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().next().unwrap_or("").to_owned(),
            Err(e) => format!("error: {e}"),
        };
        req.set_header("x-file", read);
        if let Some(n) = req.header_str("x-leak").and_then(|n| n.parse::<usize>().ok()) {
            let opened = (0..n).map_while(|_| std::fs::File::open(&path).ok()).map(std::mem::forget).count();
            req.set_header("x-leaked", opened.to_string());
        }
        if let Some(text) = req.header_str("x-write") {
            let outcome = match std::fs::write(&path, text) {
                Ok(()) => "written".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            req.set_header("x-write-result", outcome);
        }
        Action::Continue
    }
}

export_plugin!(ReadsFile);
