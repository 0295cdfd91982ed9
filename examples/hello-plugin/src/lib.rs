//! A third-party Airlock plugin: greets every request and tags every response.
use airlock_sdk::{Action, Plugin, Request, Response, export_plugin};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config { #[serde(default = "hello")] greeting: String }
fn hello() -> String { "hello".into() }

struct Hello(Config);

impl Plugin for Hello {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> { Ok(Hello(config)) }
    fn on_request(&self, req: &Request) -> Action {
        req.set_header("x-hello", &self.0.greeting);
        if req.path() == "/hello/teapot" { Action::text(418, "I'm a teapot\n") } else { Action::Continue }
    }
    fn on_response(&self, _req: &Request, resp: &Response) { resp.set_header("x-hello-plugin", "seen") }
}

export_plugin!(Hello);
