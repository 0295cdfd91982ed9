//! `builtin:respond`: answers every request with a fixed response; the upstream is never called.
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:respond"
//! [routes.plugins.config]
//! status = 503                                   # 200-599, default 200
//! headers = { "retry-after" = "3600" }           # name -> value, optional
//! body = "Down for maintenance.\n"               # a text body, or:
//! # json = { status = "down" }                   # any value, sent as JSON
//! # content_type = "text/html"                   # optional
//! ```
//!
//! `body` and `json` are exclusive; with neither the body is empty. The content type is
//! `content_type` if given (or a `content-type` entry in `headers`), otherwise
//! `application/json` for `json` and `text/plain; charset=utf-8` for a non-empty `body`.
//! Everything is validated and the response built once, at configure. Only the request phase
//! runs.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use airlock_sdk::header_rules::settable_header_name;
use airlock_sdk::{Action, Descriptor, Plugin, Request, ResponseInit, export_plugin};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_status", deserialize_with = "status")]
    status: u16,
    #[serde(default)]
    headers: Headers,
    body: Option<String>,
    json: Option<serde_json::Value>,
    content_type: Option<String>,
}

fn default_status() -> u16 {
    200
}

fn status<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    struct StatusVisitor;

    impl Visitor<'_> for StatusVisitor {
        type Value = u16;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a final HTTP status code, 200-599")
        }

        fn visit_i64<E: de::Error>(self, status: i64) -> Result<u16, E> {
            match u16::try_from(status) {
                Ok(s @ 200..=599) => Ok(s),
                _ => Err(E::custom(format!("invalid status {status}: expected a final HTTP status code, 200-599"))),
            }
        }

        fn visit_u64<E: de::Error>(self, status: u64) -> Result<u16, E> {
            self.visit_i64(i64::try_from(status).unwrap_or(i64::MAX))
        }
    }

    deserializer.deserialize_i64(StatusVisitor)
}

/// `headers`: name to value, in the order written.
#[derive(Debug, Default)]
struct Headers(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;

        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = Headers;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of header name = value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut headers: Vec<(String, String)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let name = answer_header_name(&name).map_err(de::Error::custom)?;
                    if headers.iter().any(|(seen, _)| *seen == name) {
                        // `Content-Type` and `content-type` are one field: both would be sent.
                        return Err(de::Error::custom(format!("`{name}` is given twice (names are case-insensitive): keep one")));
                    }
                    let value: HeaderValue = map.next_value()?;
                    headers.push((name, value.0));
                }
                Ok(Headers(headers))
            }
        }

        deserializer.deserialize_map(HeadersVisitor)
    }
}

/// A header name the answer may carry: settable by a plugin ([`settable_header_name`]), and
/// not one about a hop (`te`, `trailer`, `proxy-*`: the answer has no trailers and no proxy
/// between) nor `date`, which the gateway sets on every answer as it is sent (a fixed one would
/// be wrong from the first second).
fn answer_header_name(name: &str) -> Result<String, String> {
    let name = settable_header_name(name)?;
    if name == "te" || name == "trailer" || name.starts_with("proxy-") {
        return Err(format!("`{name}` is about a hop of the connection, not this answer"));
    }
    if name == "date" {
        return Err("`date` is set by the gateway as each answer is sent".into());
    }
    Ok(name)
}

/// A header value: a string without control characters, nor white space at either end (a
/// field value is read without it: what was configured would not be what a client reads).
struct HeaderValue(String);

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        header_value(&value).map_err(de::Error::custom)?;
        Ok(HeaderValue(value))
    }
}

fn header_value(value: &str) -> Result<(), String> {
    match value.chars().find(|&c| (c.is_control() && c != '\t') || c == '\u{7f}') {
        Some(bad) => Err(format!("a header value cannot contain the control character {bad:?}")),
        None if value.trim_matches([' ', '\t']) != value => Err("a header value cannot start or end with a space or tab".into()),
        None => Ok(()),
    }
}

/// The configured plugin: the response, built once.
#[derive(Debug)]
struct Respond {
    response: ResponseInit,
}

impl Plugin for Respond {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let Config { status, headers, body, json, content_type } = config;
        let has_content_type = headers.0.iter().any(|(name, _)| name == "content-type");
        if content_type.is_some() && has_content_type {
            return Err(
                "the content type is given twice: use `content_type` or `headers.content-type`, not both".into()
            );
        }
        if let Some(ct) = &content_type {
            header_value(ct).map_err(|e| format!("`content_type`: {e}"))?;
        }
        let (body, default_type) = match (body, json) {
            (Some(_), Some(_)) => {
                return Err("`body` and `json` are exclusive: give a text `body` or a `json` value, not both".into());
            }
            (Some(text), None) if text.is_empty() => (Vec::new(), None),
            (Some(text), None) => (text.into_bytes(), Some("text/plain; charset=utf-8")),
            (None, Some(value)) => {
                let bytes = serde_json::to_vec(&value).map_err(|e| format!("`json`: cannot serialize: {e}"))?;
                (bytes, Some("application/json"))
            }
            (None, None) => (Vec::new(), None),
        };
        if matches!(status, 204 | 205 | 304) && !body.is_empty() {
            // RFC 9110 15.3.5, 15.3.6, 15.4.5: no content; the gateway would drop it unseen.
            return Err(format!("`body`: a {status} response has no content: remove `body`/`json`, or answer 200"));
        }
        let mut response = ResponseInit::new(status);
        for (name, value) in headers.0 {
            response = response.header(name, value);
        }
        match (content_type, has_content_type, default_type) {
            (Some(ct), _, _) => response = response.header("content-type", ct),
            (None, false, Some(ct)) => response = response.header("content-type", ct),
            _ => {}
        }
        Ok(Self { response: response.body(body) })
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, _req: &Request) -> Action {
        Action::Respond(self.response.clone())
    }
}

export_plugin!(Respond);

#[cfg(test)]
mod tests {
    use super::*;

    fn response(json: &str) -> ResponseInit {
        airlock_sdk::configure::<Respond>(json).unwrap().response
    }

    fn error(json: &str) -> String {
        airlock_sdk::configure::<Respond>(json).unwrap_err()
    }

    fn header<'a>(r: &'a ResponseInit, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn defaults_to_an_empty_200() {
        let r = response("{}");
        assert_eq!((r.status, r.headers.len(), r.body.len()), (200, 0, 0));
    }

    #[test]
    fn text_and_json_bodies() {
        let r = response(r#"{"status": 503, "body": "down\n", "headers": {"Retry-After": "3600"}}"#);
        assert_eq!(r.status, 503);
        assert_eq!(r.body, b"down\n");
        assert_eq!(header(&r, "retry-after"), Some("3600"));
        assert_eq!(header(&r, "content-type"), Some("text/plain; charset=utf-8"));

        let r = response(r#"{"json": {"status": "ok", "n": [1, 2]}}"#);
        let sent: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(sent, serde_json::json!({"status": "ok", "n": [1, 2]}));
        assert_eq!(header(&r, "content-type"), Some("application/json"));

        let r = response(r#"{"json": {"a": 1}, "content_type": "application/problem+json"}"#);
        assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
        let r = response(r#"{"body": "<p>hi</p>", "headers": {"content-type": "text/html"}}"#);
        assert_eq!(r.headers, [("content-type".to_owned(), b"text/html".to_vec())]);
    }

    #[test]
    fn config_errors() {
        assert_eq!(error(r#"{"status": 42}"#), "`status`: invalid status 42: expected a final HTTP status code, 200-599");
        assert_eq!(
            error(r#"{"status": 101}"#),
            "`status`: invalid status 101: expected a final HTTP status code, 200-599",
            "a 1xx answers nothing"
        );
        assert_eq!(
            error(r#"{"status": 70000}"#),
            "`status`: invalid status 70000: expected a final HTTP status code, 200-599"
        );
        assert_eq!(
            error(r#"{"status": 999}"#),
            "`status`: invalid status 999: expected a final HTTP status code, 200-599",
            "no status class beyond 5xx (RFC 9110 15): the gateway refuses one from an upstream too"
        );
        assert_eq!(
            error(r#"{"status": "200"}"#),
            "`status`: invalid type: string \"200\", expected a final HTTP status code, 200-599"
        );
        assert_eq!(
            error(r#"{"body": "x", "json": {"a": 1}}"#),
            "`body` and `json` are exclusive: give a text `body` or a `json` value, not both"
        );
        for status in [204, 205, 304] {
            assert_eq!(
                error(&format!(r#"{{"status": {status}, "body": "gone"}}"#)),
                format!("`body`: a {status} response has no content: remove `body`/`json`, or answer 200")
            );
            assert!(error(&format!(r#"{{"status": {status}, "json": {{}}}}"#)).starts_with("`body`: a"));
            assert_eq!(response(&format!(r#"{{"status": {status}}}"#)).headers, [], "no content type for no content");
        }
        assert!(error(r#"{"headers": {"bad name": "x"}}"#).starts_with("`headers`: invalid header name `bad name`"));
        // One field under two spellings would go as two.
        let twice = error(r#"{"headers": {"Content-Type": "text/html", "content-type": "text/plain"}}"#);
        assert!(twice.starts_with("`headers`: `content-type` is given twice"), "{twice}");
        for hop in ["te", "Trailer", "proxy-authenticate"] {
            assert!(error(&format!(r#"{{"headers": {{"{hop}": "x"}}}}"#)).contains("is about a hop"), "{hop}");
        }
        assert!(error(r#"{"headers": {"Date": "yesterday"}}"#).contains("`date` is set by the gateway"));
        assert!(error(r#"{"headers": {"x-a": "  padded  "}}"#).contains("cannot start or end with a space"));
        assert!(
            error(r#"{"headers": {"Content-Length": "5"}}"#).contains("`content-length` is set by the gateway"),
            "the body's length is the gateway's to state"
        );
        assert_eq!(
            error(r#"{"headers": {"x-a": "1\n2"}}"#),
            "`headers.x-a`: a header value cannot contain the control character '\\n'"
        );
        assert_eq!(error(r#"{"headers": {"x-a": 1}}"#), "`headers.x-a`: invalid type: integer `1`, expected a string");
        assert!(
            error(r#"{"content_type": "a", "headers": {"Content-Type": "b"}}"#)
                .starts_with("the content type is given twice")
        );
        assert!(error(r#"{"stauts": 200}"#).starts_with("`stauts`: unknown field `stauts`, expected one of `status`"));
    }
}
