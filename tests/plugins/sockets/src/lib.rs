//! Connects to `target` (config, `ip:port`) with `std::net::TcpStream`, which makes the component
//! import `wasi:sockets/*`. Airlock never links WASI sockets: the gateway must refuse to load it,
//! naming the plugin and the import, and no connection may ever reach `target`.
//!
//! Were it loaded, each request would try the connection and report the outcome upstream in
//! `x-connect` (`connected` or `error: ...`).
use std::io::Write;
use std::net::TcpStream;

use airlock_sdk::{Action, Plugin, Request, export_plugin};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    target: String,
}

struct Sockets {
    target: String,
}

impl Plugin for Sockets {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        // Try at configure time too: loading must not get this far.
        let _ = TcpStream::connect(&config.target);
        Ok(Sockets { target: config.target })
    }

    fn on_request(&self, req: &Request) -> Action {
        let outcome = match TcpStream::connect(&self.target) {
            Ok(mut stream) => {
                let _ = stream.write_all(b"escaped the sandbox\n");
                "connected".to_owned()
            }
            Err(e) => format!("error: {e}"),
        };
        req.set_header("x-connect", outcome);
        Action::Continue
    }
}

export_plugin!(Sockets);
