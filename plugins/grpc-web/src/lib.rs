//! `builtin:grpc-web`: browsers calling gRPC servers. A browser cannot speak gRPC (it cannot
//! read HTTP/2 trailers); gRPC-web (the gRPC project's PROTOCOL-WEB.md, the `grpc-web` and
//! Connect clients) carries the same calls over HTTP/1.1 or HTTP/2 with the trailers in the
//! body. This plugin translates both ways, as Envoy's `grpc_web` filter does, so one gRPC
//! server (an `h2c` or `h2` upstream) serves browsers through the gateway.
//!
//! ```toml
//! [upstreams.users]
//! targets = ["127.0.0.1:50051"]
//! protocol = "h2c"
//!
//! [[routes]]
//! path_prefix = "/demo.v1.Users/"
//! upstream = "users"
//! [[routes.plugins]]
//! plugin = "builtin:grpc-web"
//! ```
//!
//! A request whose `Content-Type` is `application/grpc-web[+proto]` (binary) or
//! `application/grpc-web-text[+proto]` (base64) goes upstream as `application/grpc[+proto]`
//! with `te: trailers`, its body decoded from base64 for `-text`; its answer comes back with
//! the client's content type, the trailers appended to the body as a frame with flag `0x80`
//! (`grpc-status`, `grpc-message`, ...), the whole base64-encoded for `-text`. A native gRPC
//! request (and a CORS preflight) passes untouched, its answer streamed; any other is a 415 (a
//! gRPC server would reset it, and the 502 would count against its target's `max_fails`). The answer is buffered whole (up to
//! the route's `max_body_bytes`): a server-streaming call reaches the browser when it ends.
//! A `-text` body that is not base64 is answered `400` with `grpc-status: 3`.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod wire;

use airlock_sdk::{Action, Descriptor, Plugin, Request, Response, ResponseInit, export_plugin};
use serde::Deserialize;

use wire::{Mode, WebType};

/// The request context key handing the client's gRPC-web content type to the response phase.
pub const CONTEXT_KEY: &str = "grpc-web.content-type";

/// The plugin takes no settings (`{}`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// The configured plugin.
#[derive(Debug)]
pub struct GrpcWeb;

impl Plugin for GrpcWeb {
    type Config = Config;

    fn new(_: Config) -> Result<Self, String> {
        Ok(Self)
    }

    /// Both phases, and both bodies: a `-text` request body is decoded, and every answer's
    /// trailers go into its body.
    fn descriptor() -> Descriptor {
        Descriptor::new().with_request_body().with_response_body()
    }

    /// A gRPC-web request becomes a gRPC one; a native gRPC one (or a CORS preflight) goes on as
    /// it is, its answer streamed; anything else is refused here, 415.
    fn on_request(&self, req: &Request) -> Action {
        let content_type = req.header_str("content-type");
        let Some(web) = content_type.as_deref().and_then(WebType::parse) else {
            let native = content_type.is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("application/grpc"));
            if !native && req.method() != "OPTIONS" {
                // A gRPC server resets such a request: a 502 that would count against the
                // target's `max_fails` (any client could take it out of rotation).
                return Action::Respond(not_grpc());
            }
            req.limit_response_body(0);
            return Action::Continue;
        };
        if web.mode == Mode::Text {
            match wire::decode_text(&req.body().unwrap_or_default()) {
                Ok(frames) => req.set_body(frames),
                Err(e) => return Action::Respond(refused(&web, &e)),
            }
        }
        req.set_header("content-type", web.upstream_type());
        req.set_header("te", "trailers");
        req.context_set(CONTEXT_KEY, &web.client_type());
        Action::Continue
    }

    /// A gRPC answer to a gRPC-web request: its trailers moved into the body, in the client's
    /// content type (and encoding). Anything else (an error page from a proxy) is left alone.
    fn on_response(&self, req: &Request, resp: &Response) {
        let Some(web) = req.context_get(CONTEXT_KEY).as_deref().and_then(WebType::parse) else { return };
        if !resp.header_str("content-type").is_some_and(|t| t.to_ascii_lowercase().starts_with("application/grpc")) {
            return;
        }
        resp.set_header("content-type", web.client_type());
        let Some(mut body) = resp.body() else {
            // Not handed over (only a body the gateway could not decode): say so in gRPC terms.
            resp.set_header("grpc-status", "13");
            resp.set_header("grpc-message", "the gateway could not read the upstream's answer");
            resp.set_body(b"");
            return;
        };
        let names = resp.trailer_names();
        if !names.is_empty() {
            // Every value: gRPC metadata may repeat a name (WIT 0.2.3 `trailer-all`).
            let trailers: Vec<(String, Vec<u8>)> =
                names.iter().flat_map(|name| resp.trailer_all(name).into_iter().map(move |value| (name.clone(), value))).collect();
            body.extend(wire::trailer_frame(&trailers));
            for name in &names {
                resp.remove_trailer(name);
            }
        }
        if web.mode == Mode::Text {
            body = wire::encode_text(&body);
        }
        resp.set_body(body);
    }
}

/// The answer to a request that cannot be translated: `400`, and the gRPC status
/// `INVALID_ARGUMENT` in the headers (a trailers-only answer), which gRPC-web clients read.
fn refused(web: &WebType, why: &str) -> ResponseInit {
    ResponseInit::new(400)
        .header("content-type", web.client_type())
        .header("grpc-status", "3")
        .header("grpc-message", grpc_message(why))
}

/// The answer to a request that is neither gRPC-web nor gRPC (a browser's `GET`, a form post).
fn not_grpc() -> ResponseInit {
    ResponseInit::new(415).header("content-type", "application/json").body(
        br#"{"error":"unsupported_media_type","message":"this route serves gRPC: send Content-Type application/grpc-web[+proto], application/grpc-web-text[+proto] or application/grpc"}"#
            .to_vec(),
    )
}

/// A `grpc-message` value: percent-encoded outside printable ASCII and `%` (gRPC's HTTP/2 spec).
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

export_plugin!(GrpcWeb);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_no_settings() {
        assert!(airlock_sdk::configure::<GrpcWeb>("{}").is_ok());
        let err = airlock_sdk::configure::<GrpcWeb>(r#"{"mode": "text"}"#).unwrap_err();
        assert!(err.contains("unknown field `mode`"), "{err}");
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("bad body: 100%"), "bad body: 100%25");
        assert_eq!(grpc_message("é\n"), "%C3%A9%0A");
    }
}
