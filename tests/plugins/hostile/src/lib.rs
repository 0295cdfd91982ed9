//! Misbehaves as `mode` says, in its request phase:
//! - `recursion`: recurses without bound (stack overflow);
//! - `response-headers`: answers with `count` headers (default 200 000);
//! - `request-headers`: appends `count` headers to the request going upstream;
//! - `host-calls`: calls the host (`req.header`) `count` times (default 50 000 000);
//! - `env`: answers 200 with `x-env-count` / `x-args-count`: what the environment exposes;
//! - `response-edits`: asks for invalid response edits, then `count` valid ones (default 100 000);
//! - `wait-on-host`: outbound calls to `url` (granted, never answering), one after the other, forever;
//! - `crafted-host`: calls `url` (granted) with `host: <host>`, and answers with what came back;
//! - `status`: answers with status `count`, whatever it is (a 1xx included);
//! - `managed-headers`: sets every header the gateway manages (`Content-Length: 5`,
//!   `Transfer-Encoding`, `Connection`, `Upgrade: h2c`, ...) on the request and, as response
//!   edits, on the response, each beside `x-kept`; with `count = 1` it answers itself instead,
//!   with those headers and a 22-byte body;
//! - `response-status`: in its response phase instead, sets the upstream's answer's status to
//!   `count` (a 101 included);
//! - `read-request-body`: in its response phase instead, having declared only `response-body`,
//!   copies the request's body (or `none`) into the response header `x-request-body`;
//! - `exit`: calls `std::process::exit(count)`;
//! - `big-respond`: answers 200 with a body of `count` bytes;
//! - `slot-key`: asks for one slot (no queue) under a key of the request's `x-key` header and
//!   `count` bytes more, refused with a 503;
//! - `log-flood`: `count` times each: a warning through `log`, a line on stderr and an invalid
//!   header name (which the host warns about), then answers 200 with `count` invalid headers;
//! - `edit-flood`: `count` times (default 1 000 000), in batched `request.edit` calls: a 1 KiB
//!   context value (under sixteen keys, then one), an invalid header name and an `x-edit` line;
//!   answers 200 with how many of the sixteen keys and `x-edit` lines were kept;
//! - `raw-edit`: one `request.edit` call through the generated bindings (the SDK batches its own),
//!   with every kind of change, a 5 KB name, a value past 64 KiB and invalid ones,
//!   then 300 context values (past the 256 changes a call makes); the context it finds after
//!   goes upstream in `x-context`;
//! - `configure-log`: writes a warning through `log` and a line on stderr while it is configured,
//!   outside any request;
//! - `configure-sleep`: sleeps an hour while it is configured (a wait, not CPU);
//! - `configure-refuse`: refuses its config with a message holding a line break, a CR, an ESC
//!   and a forged log line, padded to `count` bytes;
//! - `digest-loop`: asks the host for the SHA-256 of 8 MiB, `count` times (default 1000): host
//!   work with no epoch check in it, which the call's deadline must count;
//! - `long-values`: hands the host values it refuses, each `count` bytes long and holding a line
//!   break followed by `FORGED` (a header name, a query, a path, a method, a response header
//!   name, an outbound call's URL), which the gateway warns about; answers 200;
//! - `random-bytes`: asks `wasi:random` for `count` bytes in one call; answers 200 with how many
//!   came in `x-random-bytes`.
use airlock_sdk::{Action, Descriptor, Plugin, Request, RequestEdit, Response, ResponseEdit, ResponseInit, SlotRequest, export_plugin, http_client};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: String,
    count: Option<u64>,
    url: Option<String>,
    host: Option<String>,
    /// The body `status` answers with.
    body: Option<String>,
}

struct Hostile(Config);

impl Plugin for Hostile {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.mode == "configure-log" {
            airlock_sdk::log::warn("configure-time warning");
            eprintln!("configure-time stderr line");
        }
        if config.mode == "configure-refuse" {
            let mut message = "refused\n2026-01-01T00:00:00Z ERROR airlock: FORGED\r\n\u{1b}[31mred".to_owned();
            let padding = usize::try_from(config.count.unwrap_or(0)).unwrap_or(0).saturating_sub(message.len());
            message.push_str(&"x".repeat(padding));
            return Err(message);
        }
        if config.mode == "configure-sleep" {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        Ok(Hostile(config))
    }

    /// Everything any mode uses; [`Plugin::configured_descriptor`] narrows it to the mode's.
    fn descriptor() -> Descriptor {
        Descriptor::request_only().with_on_response(true).with_response_body()
    }

    /// `response-status` and `response-then-panic` work in the response phase only; every other
    /// mode in the request's.
    fn configured_descriptor(&self) -> Descriptor {
        let on_response = matches!(self.0.mode.as_str(), "response-status" | "response-then-panic" | "read-request-body");
        let descriptor = Descriptor::request_only().with_on_request(!on_response).with_on_response(on_response);
        if self.0.mode == "read-request-body" { descriptor.with_response_body() } else { descriptor }
    }

    fn on_response(&self, req: &Request, resp: &Response) {
        if self.0.mode == "response-then-panic" {
            resp.set_header("x-set-before-panic", "1");
            resp.set_status(418);
            req.context_set("set-before-panic", "1");
            panic!("after changing the response");
        }
        if self.0.mode == "read-request-body" {
            let body = req.body().map_or_else(|| "none".to_owned(), |b| String::from_utf8_lossy(&b).into_owned());
            resp.set_header("x-request-body", &body);
            return;
        }
        resp.set_status(self.0.count.and_then(|s| u16::try_from(s).ok()).unwrap_or(0));
    }

    fn on_request(&self, req: &Request) -> Action {
        let c = &self.0;
        match c.mode.as_str() {
            "recursion" => {
                let depth = recurse(std::hint::black_box(1));
                Action::text(200, format!("returned from {depth} levels\n"))
            }
            "response-headers" => {
                let mut init = ResponseInit::new(200);
                for i in 0..c.count.unwrap_or(200_000) {
                    init = init.header(format!("x-flood-{i}"), "v");
                }
                Action::Respond(init)
            }
            "request-headers" => {
                for i in 0..c.count.unwrap_or(200_000) {
                    req.append_header("x-flood", i.to_string());
                }
                Action::Continue
            }
            "digest-loop" => {
                let data = vec![7u8; 8 << 20];
                let mut first = 0u8;
                for _ in 0..c.count.unwrap_or(1000) {
                    first ^= airlock_sdk::crypto::sha256(&data)[0];
                }
                Action::text(200, format!("{first}\n"))
            }
            "host-calls" => {
                let mut seen = 0u64;
                for _ in 0..c.count.unwrap_or(50_000_000) {
                    seen += u64::from(req.header("x-probe").is_some());
                }
                Action::text(200, format!("{seen}\n"))
            }
            "managed-headers" => {
                const MANAGED: [(&str, &str); 6] = [
                    ("content-length", "5"),
                    ("transfer-encoding", "chunked"),
                    ("connection", "upgrade, x-kept"),
                    ("upgrade", "h2c"),
                    ("keep-alive", "timeout=1"),
                    ("proxy-connection", "close"),
                ];
                if c.count == Some(1) {
                    let answer = MANAGED.iter().fold(ResponseInit::new(200), |a, (n, v)| a.header(*n, v));
                    return Action::Respond(answer.header("x-kept", "respond").body("answered by the plugin"));
                }
                for (name, value) in MANAGED {
                    req.set_header(name, value);
                    req.append_header(name, value);
                    req.edit_response(ResponseEdit::Set(name, value.as_bytes()));
                    req.edit_response(ResponseEdit::Append(name, value.as_bytes()));
                }
                req.edit_response(ResponseEdit::Rename("x-kept", "content-length"));
                req.set_header("x-kept", "req");
                req.edit_response(ResponseEdit::Set("x-kept", b"resp"));
                Action::Continue
            }
            "status" => Action::Respond(
                ResponseInit::new(c.count.and_then(|s| u16::try_from(s).ok()).unwrap_or(0))
                    .body(c.body.clone().unwrap_or_default().into_bytes()),
            ),
            "exit" => std::process::exit(c.count.unwrap_or(0) as i32),
            "big-respond" => Action::Respond(ResponseInit::new(200).body(vec![b'x'; c.count.unwrap_or(0) as usize])),
            "long-values" => {
                let long = format!("bad value\n2026-01-01T00:00:00Z ERROR airlock: FORGED {}", "x".repeat(c.count.unwrap_or(0) as usize));
                req.set_header(&long, "v");
                req.set_query(Some(&long));
                req.set_path(&long);
                req.set_method(&long);
                req.edit_response(ResponseEdit::Set(&long, b"v"));
                // A valid name that long, with a value the host refuses: warned about too.
                req.set_header(&"x".repeat(c.count.unwrap_or(0).min(60_000) as usize), "bad\nvalue");
                // Not a URL: the gateway's warning about the failed call quotes it.
                let _ = http_client::get(&format!("http://127.0.0.1:9/{long}"));
                Action::Respond(ResponseInit::new(200))
            }
            "random-bytes" => {
                let got = wasip2::random::random::get_random_bytes(c.count.unwrap_or(0)).len();
                Action::Respond(ResponseInit::new(200).header("x-random-bytes", got.to_string()))
            }
            "slot-key" => {
                let mut key = req.header_str("x-key").unwrap_or_default();
                key.push_str(&"k".repeat(c.count.unwrap_or(0) as usize));
                Action::AcquireSlot(SlotRequest::new(key, 1, ResponseInit::new(503).body("no slot")))
            }
            "env" => Action::Respond(
                ResponseInit::new(200)
                    .header("x-env-count", std::env::vars_os().count().to_string())
                    .header("x-args-count", std::env::args_os().count().to_string()),
            ),
            "wait-on-host" => loop {
                let request = http_client::Request {
                    method: "GET".into(),
                    url: c.url.clone().unwrap_or_default(),
                    headers: Vec::new(),
                    body: None,
                    timeout_ms: 0,
                };
                let _ = http_client::send(&request);
            },
            "log-flood" => {
                let mut answer = ResponseInit::new(200);
                for i in 0..c.count.unwrap_or(100_000) {
                    airlock_sdk::log::warn(format!("flood line {i}"));
                    eprintln!("stderr line {i}");
                    req.set_header("bad name", "v");
                    answer = answer.header("bad name", "v");
                }
                Action::Respond(answer)
            }
            "response-edits" => {
                // Invalid edits first (refused one by one), then far more valid ones than allowed.
                req.edit_response(ResponseEdit::Set("bad name", b"v"));
                req.edit_response(ResponseEdit::Set("x-split", b"line\nbreak"));
                req.edit_response(ResponseEdit::Rename("x-edit", "bad:name"));
                for _ in 0..c.count.unwrap_or(100_000) {
                    req.edit_response(ResponseEdit::Append("x-edit", b"v"));
                }
                Action::Continue
            }
            "edit-flood" => {
                // `count` changes in batched calls, invalid ones among them: how many were made?
                const KEYS: [&str; 16] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "ka", "kb", "kc", "kd", "ke", "kf"];
                let value = "v".repeat(1024);
                let edits = (0..c.count.unwrap_or(1_000_000)).flat_map(|i| {
                    let key = usize::try_from(i).ok().and_then(|i| KEYS.get(i)).copied().unwrap_or("n");
                    [RequestEdit::ContextSet(key, &value), RequestEdit::SetHeader("bad name", b"v"), RequestEdit::AppendHeader("x-edit", b"v")]
                });
                req.edit(edits);
                let kept = KEYS.iter().filter(|key| req.context_get(key).is_some()).count();
                Action::text(200, format!("kept={kept} lines={}\n", req.header_all("x-edit").len()))
            }
            "raw-edit" => {
                use airlock_sdk::bindings::airlock::plugin::types::{HeaderParam as Header, RequestEdit as Raw, ResponseEdit as RawResponse};
                fn header<'a>(name: &'a str, value: &'a [u8]) -> Header<'a> {
                    Header { name, value }
                }
                let long = format!("x-long-{}", "a".repeat(5000));
                let big = vec![b'a'; 70_000];
                let numbers: Vec<String> = (0..300).map(|i| i.to_string()).collect();
                let mut edits = vec![
                    Raw::SetHeader(header(&long, b"long")),
                    Raw::SetHeader(header("x-big", &big)),
                    Raw::SetHeader(header("bad name", b"v")),
                    Raw::AppendHeader(header("X-Two", b"1")),
                    Raw::AppendHeader(header("x-two", b"2")),
                    Raw::RemoveHeader("X-Drop"),
                    Raw::ContextSet(("who", "raw")),
                    Raw::ContextSet(("gone", "soon")),
                    Raw::ContextRemove("gone"),
                    Raw::EditResponse(RawResponse::Set(header("x-resp", b"1"))),
                    Raw::EditResponse(RawResponse::Add(header("x-add", b"a"))),
                    Raw::EditResponse(RawResponse::Append(header("x-app", b"1"))),
                    Raw::EditResponse(RawResponse::AddToken(header("vary", b"x-raw"))),
                    Raw::EditResponse(RawResponse::Remove("x-nothing")),
                    Raw::EditResponse(RawResponse::Rename(("content-type", "x-renamed-type"))),
                ];
                edits.extend(numbers.iter().map(|n| Raw::ContextSet(("n", n))));
                req.raw().edit(&edits);
                let context = |key| req.context_get(key).unwrap_or_else(|| "-".into());
                req.set_header("x-context", format!("{}|{}|{}", context("who"), context("gone"), context("n")));
                Action::Continue
            }
            "set-then-panic" => {
                req.set_header("x-set-before-panic", "1");
                req.set_path("/rewritten-before-panic");
                req.edit_response(ResponseEdit::Set("x-edit-before-panic", b"1"));
                req.context_set("set-before-panic", "1");
                panic!("after changing the request");
            }
            "context-flood" => {
                // One value of 1 MiB, then `count` keys of 1 KiB: answers how many were kept.
                req.context_set("big", &"x".repeat(1 << 20));
                let value = "v".repeat(1024);
                for i in 0..c.count.unwrap_or(100_000) {
                    req.context_set(&format!("k{i}"), &value);
                }
                let kept = (0..c.count.unwrap_or(100_000)).filter(|i| req.context_get(&format!("k{i}")).is_some()).count();
                Action::text(200, format!("big={} kept={kept}\n", req.context_get("big").is_some()))
            }
            "crafted-host" => {
                let url = c.url.clone().unwrap_or_default();
                let headers = c.host.iter().map(|h| ("host".to_owned(), h.as_bytes().to_vec())).collect();
                let request = http_client::Request { method: "GET".into(), url, headers, body: None, timeout_ms: 0 };
                match http_client::send(&request) {
                    Ok(r) => Action::text(200, String::from_utf8_lossy(&r.body).into_owned()),
                    Err(e) => Action::text(502, format!("{e:?}\n")),
                }
            }
            other => Action::text(500, format!("unknown mode {other}\n")),
        }
    }
}

/// Recurses with a frame the optimizer cannot drop.
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    if std::hint::black_box(frame[0]) == 0 { 0 } else { recurse(depth + 1) + frame[63] }
}

export_plugin!(Hostile);
