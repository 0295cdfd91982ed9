//! `builtin:grpc-transcode`: REST/JSON clients calling unary gRPC methods.
//!
//! ```toml
//! [upstreams.users]
//! targets = ["127.0.0.1:50051"]
//! protocol = "h2c"                          # or "h2" (TLS): gRPC needs HTTP/2
//!
//! [plugins.users-grpc]
//! source = "builtin:grpc-transcode"
//! capabilities = ["files"]
//! files = { dir = "protos" }                # the descriptor set is read from here
//!
//! [[routes]]
//! path_prefix = "/v1"
//! upstream = "users"
//! [[routes.plugins]]
//! plugin = "users-grpc"
//! [routes.plugins.config]
//! descriptor = "users.pb"                   # a FileDescriptorSet (protoc -o / protox), imports included
//! services = ["demo.v1.Users"]              # default: every service in the set
//! # annotations = false                     # ignore google.api.http, use only `mappings`
//! [[routes.plugins.config.mappings]]        # explicit bindings, beside the annotations
//! method = "demo.v1.Users/Ping"
//! http = "POST /v1/ping"
//! body = "*"                                # "*", a field name, or absent for no body
//! # response_body = "field"                 # answer one field of the response message
//! ```
//!
//! A request is matched against the bindings (the annotations and `mappings`): method and path
//! template (`{field}`, `{field=a/*/b/*}`, `**`, `:verb`). A request path's verb is what follows
//! the last colon of its last segment, when that is a verb some binding uses (as Envoy's
//! transcoder splits): `POST /v2/things/a:b:run` reaches `/v2/things/{text}:run` with `a:b`;
//! any other colon is part of its segment, so `GET /v1/echo/urn:isbn:123` reaches
//! `/v1/echo/{text}` with `urn:isbn:123` (a value whose last segment ends in `:run`, `run` being
//! a bound verb, writes that colon `%3A`). The most specific binding matching
//! wins, whatever the order they are listed in, as with Envoy's transcoder and grpc-gateway:
//! segment by segment, a literal before a variable or `*`, before `**` (`GET /v1/users/me` before
//! `GET /v1/users/{id}`); the bindings are sorted so at load, and two of one HTTP method that
//! match the same paths (`/v1/users/{id}`, `/v1/{name=users/*}`) are refused there, and so is
//! a template no request can match (a query `GET /v1/x?a=b`, a fragment `/v1/x#f`, an empty
//! verb `/v1/x:`), naming `mappings[N].http` (or the annotated method). None
//! matching is a 404, never a request passed through untranscoded. Path variables are
//! percent-decoded as google/api/http.proto says: a single-segment one entirely, a multi-segment
//! one (`{field=**}`, `{field=a/*/b/*}`) all but `%2F` / `%2f`, which stay as they are. The
//! request message is built from the JSON body (`body: "*"`: the whole message; `body: "f"`:
//! field `f`), then the query parameters (dotted field paths, repeated fields by repeating the
//! parameter, a singular field given once), then the path variables. As google/api/http.proto
//! says, the query sets only the fields neither the body nor the path covers: a query parameter
//! is a 400 when the body is the whole message, when it is the body's field or inside it
//! (`?user.id=5` with `body: "user"`), or when it is a path variable's field (`?id=6` on
//! `/v1/users/{id}`), never merged over what the body or path gave. A path variable inside the
//! body's field (`{user.id}` with `body: "user"`) sets it, and wins, in a body that gives that
//! field as an object (or not at all); anything else there (`[1, 2]`) is a 400. The proto3 JSON mapping applies, as Go's protojson reads it (int64 as
//! strings or numbers, enums by name or number, well-known types); an integer field takes an
//! integral value in any number form, as a number or a string (`1e3`, `"2.50e1"`, `4.0`), exactly:
//! worked out on the decimal digits, never through a float (`9007199254740993.0` stays that). An
//! unknown field or query parameter, a singular field given twice in the query, a key given twice
//! in one object of the body or one field under both its JSON and proto names (`{"userId": 1,
//! "user_id": 2}`), a path or query value that is not UTF-8 once percent-decoded (`%E9`), a body
//! sent to a binding without `body` (but a GET's, which HTTP gives no meaning and is ignored, as
//! grpc-gateway does), or a value that does not fit its field (a float out of
//! range, an integer that is not integral (`1.5`) or out of range, a `Timestamp` or `Duration`
//! with more than nine fractional digits, a `Timestamp` at second 60, `23:59:60Z`, which protojson
//! refuses and would otherwise become :59), is a 400 naming the path variable, query parameter or
//! body field. The checks the proto3 JSON reader does not do cost nothing on the usual request:
//! the body reader notes what might need them (a number with a fraction or exponent, two keys
//! that may name one field, a string ending like a too fine time or a leap second) and only then
//! the body is walked with its types; an integral string in exponent form is read once the plain
//! reading failed. Each binding answers with its own `response_body`, whatever other bindings its
//! method has; a `response_body` field left at its default is answered as that default (`[]`,
//! `{}`, `0`, `"0"`, `false`, `""`), or `null` when it has presence (a message, an `optional`
//! scalar, a oneof member) and is unset. A binding whose path variables (or path variable and
//! `body` field) are two members of one oneof is refused at load: no request could be taken.
//!
//! The upstream gets `POST /package.Service/Method` with `content-type: application/grpc`,
//! `te: trailers` and the framed message (uncompressed); the client's other headers go on as the
//! call's metadata, but its `grpc-*` headers other than `grpc-timeout`, which are not sent on,
//! and a header ending in `-bin` (binary metadata, base64) whose value is not base64, which is
//! a 400 naming it; and the gateway sends the shorter of that and the route's
//! timeout as `grpc-timeout`. The answer: `grpc-status` (from the trailers, or the headers of a
//! trailers-only response) `0` gives 200 with the response message as proto3 JSON (64-bit
//! integers as strings, enums by name, fields with default values left out, NaN and the
//! infinities of a float field or a `FloatValue` / `DoubleValue` as `"NaN"`, `"Infinity"`,
//! `"-Infinity"`); any other code
//! gives the HTTP status of the Envoy / grpc-gateway table with the `google.rpc.Status` JSON body
//! `{"code", "message", "details"}`; a missing or unparsable `grpc-status` is a 502, and so is a
//! response message that protojson would not write: a `Duration` whose seconds and nanos have
//! different signs (written with a flipped sign otherwise), a `Timestamp` whose nanos are outside
//! 0 to 999,999,999.
//!
//! A HEAD request is transcoded as the GET bound to its path, whose answer the gateway sends
//! without its body (RFC 9110 9.3.2); a path bound to GET lists HEAD in a 405's `Allow`.
//!
//! Streaming methods are refused at load: a server- or client-streaming method with a mapping
//! fails `configure` with a message naming it.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod json;
pub mod mapping;
pub mod message;
pub mod metadata;
pub mod numbers;
pub mod response;
pub mod status;
pub mod template;
pub mod upstream_status;
pub mod walk;

use airlock_sdk::{Action, Descriptor, Plugin, Request, ResponseInit, Response};
use prost_reflect::DescriptorPool;
use serde::Deserialize;

use mapping::{Binding, MappingConfig};
use template::{Target, Verbs};

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The FileDescriptorSet file in the granted directory (`file:` prefix allowed).
    pub descriptor: String,
    /// Services whose annotations are used (default: all).
    #[serde(default)]
    pub services: Vec<String>,
    /// Whether `google.api.http` annotations are used (default true).
    #[serde(default = "yes")]
    pub annotations: bool,
    /// Explicit bindings.
    #[serde(default)]
    pub mappings: Vec<MappingConfig>,
}

fn yes() -> bool {
    true
}

/// The request context key under which the request phase leaves the index (in `bindings`) of
/// the binding it transcoded the request for: the response phase answers with that binding's
/// `response_body`, whichever other bindings the method has.
const BINDING_CONTEXT_KEY: &str = "grpc-transcode.binding";

/// The configured plugin.
pub struct GrpcTranscode {
    bindings: Vec<Binding>,
    /// The bindings' verbs: which colons of a request's path start one.
    verbs: Verbs,
    pool: DescriptorPool,
}

impl Plugin for GrpcTranscode {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let path = config.descriptor.strip_prefix("file:").unwrap_or(&config.descriptor);
        let full = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        let bytes = std::fs::read(&full)
            .map_err(|e| format!("`descriptor`: cannot read `{path}` ({e}); is it inside the directory granted by `files`?"))?;
        let pool = DescriptorPool::decode(bytes.as_slice())
            .map_err(|e| format!("`descriptor`: `{path}` is not a FileDescriptorSet (protoc -o / protox): {e}"))?;
        let bindings = mapping::bindings(&pool, &config.services, config.annotations, &config.mappings)?;
        let verbs = Verbs::of(bindings.iter().map(|b| &b.template));
        Ok(Self { bindings, verbs, pool })
    }

    /// Both bodies: the JSON request becomes a gRPC message, the gRPC answer JSON.
    fn descriptor() -> Descriptor {
        Descriptor::new().with_request_body().with_response_body()
    }

    fn on_request(&self, req: &Request) -> Action {
        let method = req.method();
        let path = req.path();
        // The gateway hands plugins a path starting with `/`; anything else is bound to nothing.
        let Some(target) = Target::split(&path, &self.verbs) else {
            return error(status::NOT_FOUND, 404, &format!("no gRPC method is mapped to {method} {path}"));
        };
        let bound_to = |verb: &str| {
            self.bindings.iter().enumerate().find_map(|(index, b)| {
                if b.verb != verb {
                    return None;
                }
                b.template.matches_target(&target).map(|captures| (index, b, captures))
            })
        };
        // HEAD is GET without the answer's body (RFC 9110 9.3.2), as for the gateway's routes:
        // unless a custom binding names HEAD itself, transcoded as the GET, whose JSON the
        // gateway does not send.
        let found = bound_to(&method).or_else(|| if method == "HEAD" { bound_to("GET") } else { None });
        let Some((index, binding, captures)) = found else {
            // The path is bound, to other methods: 405 with `Allow` (RFC 9110 15.5.6), as
            // grpc-gateway's router refuses it (UNIMPLEMENTED), not a 404 saying nothing is there.
            let mut allowed: Vec<&str> = self.bindings.iter().filter(|b| b.template.matches_target(&target).is_some()).map(|b| b.verb.as_str()).collect();
            if allowed.contains(&"GET") {
                allowed.push("HEAD");
            }
            allowed.sort_unstable();
            allowed.dedup();
            if !allowed.is_empty() {
                let allow = allowed.join(", ");
                let message = format!("{method} is not mapped to a gRPC method at {path}: {allow} is");
                let body = status_body(status::UNIMPLEMENTED, &message, Vec::new());
                return ResponseInit::new(405).header("content-type", "application/json").header("allow", allow).body(body).into();
            }
            let message = format!("no gRPC method is mapped to {method} {path}");
            return error(status::NOT_FOUND, 404, &message);
        };
        let query = req.query();
        let body = if binding.body.is_some() || binding.verb != "GET" { req.body() } else { None };
        let framed = message::encode(binding, &path, &captures, query.as_deref(), body.as_deref());
        let framed = match framed {
            Ok(framed) => framed,
            Err(message::BadRequest(message)) => return error(status::INVALID_ARGUMENT, 400, &message),
        };
        req.set_method("POST");
        req.set_path(&binding.grpc_path());
        req.set_query(None);
        req.set_header("content-type", "application/grpc");
        req.set_header("te", "trailers");
        for stale in ["content-encoding", "accept-encoding", "content-length"] {
            req.remove_header(stale);
        }
        // The plugin owns the gRPC framing: a client's reserved `grpc-*` headers (`grpc-encoding`,
        // `grpc-accept-encoding` inviting a compressed answer, `grpc-status`, ...) are not sent
        // on. `grpc-timeout` stays: the gateway sends the shorter of it and the route's timeout.
        for name in req.header_names() {
            if name.starts_with("grpc-") && name != "grpc-timeout" {
                req.remove_header(&name);
            } else if name.ends_with("-bin")
                && let Some(bad) = req.header_all(&name).into_iter().find(|v| !metadata::is_binary_value(v))
            {
                // gRPC reads a `-bin` header as base64 binary metadata: one that is not would
                // fail the call at the server (an INTERNAL error the client cannot act on).
                let shown = String::from_utf8_lossy(&bad[..bad.len().min(64)]).into_owned();
                let message = format!("header `{name}` ends in `-bin`, which gRPC reads as base64 binary metadata, but `{shown}` is not base64");
                return error(status::INVALID_ARGUMENT, 400, &message);
            }
        }
        req.set_body(framed);
        req.context_set(BINDING_CONTEXT_KEY, &index.to_string());
        Action::Continue
    }

    fn on_response(&self, req: &Request, resp: &Response) {
        // The binding the request phase transcoded for: none when this plugin answered the
        // request itself (404/400), so there is nothing to transcode.
        let binding = req.context_get(BINDING_CONTEXT_KEY).and_then(|i| i.parse::<usize>().ok()).and_then(|i| self.bindings.get(i));
        let Some(binding) = binding else { return };
        if req.path() != binding.grpc_path()
            || req.method() != "POST"
            || req.header_str("content-type").as_deref() != Some("application/grpc")
        {
            return;
        }
        // An error answer that is not gRPC: a later plugin's (rate-limit's 429, an auth plugin's
        // 401) or an HTTP error from something between. Passed on as it is, as Envoy's
        // transcoder does; only a success without gRPC framing is the upstream misconfigured
        // (the 502 below says so).
        let grpc = resp.header_str("content-type").is_some_and(|c| c.starts_with("application/grpc"))
            || resp.header_str("grpc-status").is_some()
            || resp.trailer_str("grpc-status").is_some();
        if !grpc && !(200..300).contains(&resp.status()) {
            return;
        }
        let (output, field) = (binding.method.output(), binding.response_body.as_deref());
        let (status, body) = match upstream_status::read(resp) {
            upstream_status::Outcome::Ok => match resp.body().map(|b| message::decode_response(&output, &b, field)) {
                Some(Ok(json)) => (200, json),
                Some(Err(message)) => {
                    airlock_sdk::log::warn(&message);
                    (502, status_body(status::INTERNAL, &message, Vec::new()))
                }
                None => (502, status_body(status::INTERNAL, "no gRPC answer body", Vec::new())),
            },
            upstream_status::Outcome::Error { code, message, details } => {
                let details = upstream_status::details_json(&self.pool, details.as_deref());
                (status::http_status(code), status_body(code, &message, details))
            }
            upstream_status::Outcome::Missing(message) => {
                airlock_sdk::log::warn(&message);
                (502, status_body(status::UNAVAILABLE, &message, Vec::new()))
            }
        };
        resp.set_status(status);
        resp.set_body(body);
        resp.set_header("content-type", "application/json");
        for name in resp.header_names() {
            if name.starts_with("grpc-") {
                resp.remove_header(&name);
            }
        }
        for name in resp.trailer_names() {
            resp.remove_trailer(&name);
        }
    }
}

fn status_body(code: i32, message: &str, details: Vec<serde_json::Value>) -> Vec<u8> {
    status::body(code, message, details).to_string().into_bytes()
}

/// An answer made by the plugin: HTTP `http` with a `google.rpc.Status` body of `code`.
fn error(code: i32, http: u16, message: &str) -> Action {
    ResponseInit::new(http).header("content-type", "application/json").body(status_body(code, message, Vec::new())).into()
}

airlock_sdk::export_plugin!(GrpcTranscode);
