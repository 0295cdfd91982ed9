//! `builtin:request-validator`: validates a request before it goes upstream, its JSON body
//! against a JSON Schema and its query, header and path parameters against theirs (Kong's
//! request-validator, AWS API Gateway's request validation, OpenAPI request checks).
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:request-validator"
//! [routes.plugins.config]
//! body_schema = { type = "object", required = ["name"], properties = { name = { type = "string", minLength = 1 } } }
//! # or a JSON text (for schemas needing `null`):  body_schema = '''{"type": ["object", "null"]}'''
//! # or a JSON file in the directory granted with `files`:  body_schema = "file:schemas/user.json"
//! body_required = true                     # default: a request without a body is a 400
//! content_types = ["application/json"]     # default; `type/*` and `type/*+json` patterns too
//! verbose = true                           # default: the 400 lists what failed
//! [[routes.plugins.config.parameters]]
//! name = "limit"
//! in = "query"                             # query, header or path
//! required = false                         # default (path parameters always are)
//! schema = { type = "integer", minimum = 1, maximum = 100 }
//! ```
//!
//! Schemas are compiled once, at configure, with boon (drafts 4, 6, 7, 2019-09 and 2020-12:
//! the schema's `$schema`, else 2020-12); references outside the schema (`$ref` to a URL or a
//! file) are refused there, since a plugin fetches nothing. Parameter values are strings on the
//! wire: they are converted by their schema's `type` before validating (numbers, booleans,
//! arrays from repeats or commas), as OpenAPI does; a value that does not convert stays a
//! string, and the schema reports the type it wanted.
//!
//! A request that fails is answered 400 (`invalid_request`) in the gateway's error format, with
//! the failures (`in`, `name`, `pointer`, `message`; at most 10) under `errors` unless
//! `verbose = false`; a body of a content type not listed (or with none) is a 415
//! (`unsupported_media_type`). Neither reaches the upstream. Only the request phase runs, and
//! the body is buffered only with `body_schema`.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod exact;
pub mod media;
pub mod params;
pub mod pattern;
pub mod report;
pub mod schema;

use airlock_sdk::{Action, Descriptor, Plugin, Request, ResponseInit, export_plugin, strict_json};
use serde::Deserialize;
use serde_json::Value;

use media::MediaTypes;
use params::{Location, Parameter, ParameterConfig};
use report::{Failure, Failures};
use schema::{Document, Schema};

/// The plugin's config, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The body's JSON Schema: a table, a JSON text, or `file:<path>` in the granted directory.
    pub body_schema: Option<Value>,
    /// With `body_schema`: a request without a body is refused (default true).
    pub body_required: Option<bool>,
    /// With `body_schema`: the media types a body may have (default `application/json`).
    pub content_types: Option<Vec<String>>,
    /// Query, header and path parameters.
    pub parameters: Vec<ParameterConfig>,
    /// List the failures in a 400 (default true).
    pub verbose: Option<bool>,
}

/// The configured plugin.
#[derive(Debug)]
pub struct RequestValidator {
    body: Option<BodyRules>,
    parameters: Vec<Parameter>,
    reads_query: bool,
    verbose: bool,
}

/// What a body must be.
#[derive(Debug)]
struct BodyRules {
    schema: Schema,
    required: bool,
    content_types: MediaTypes,
}

/// The longest part of a client's `Content-Type` repeated in a 415's message.
const SHOWN_CONTENT_TYPE: usize = 100;

impl Plugin for RequestValidator {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let body = match config.body_schema {
            Some(raw) => {
                let document = Document::read("body_schema", raw)?;
                let schema = Schema::compile("body_schema", &document)?;
                let content_types = match &config.content_types {
                    Some(list) => MediaTypes::parse(list)?,
                    None => MediaTypes::parse(&["application/json".to_owned()])?,
                };
                Some(BodyRules { schema, required: config.body_required.unwrap_or(true), content_types })
            }
            None => {
                for (key, set) in [("body_required", config.body_required.is_some()), ("content_types", config.content_types.is_some())] {
                    if set {
                        return Err(format!("`{key}` goes with `body_schema`, which is not set: without it the body is not read"));
                    }
                }
                None
            }
        };
        let mut parameters: Vec<Parameter> = Vec::with_capacity(config.parameters.len());
        for (index, entry) in config.parameters.into_iter().enumerate() {
            let parameter = Parameter::from_config(index, entry)?;
            if let Some(earlier) = parameters.iter().position(|p| p.identity() == parameter.identity()) {
                let place = parameter.location.place().as_str();
                return Err(format!("`parameters[{index}]`: {place} parameter `{}` is already `parameters[{earlier}]`", parameter.name));
            }
            parameters.push(parameter);
        }
        if body.is_none() && parameters.is_empty() {
            return Err("nothing to validate: give `body_schema` and/or `parameters`".to_owned());
        }
        Ok(Self {
            body,
            reads_query: parameters.iter().any(|p| p.location == Location::Query),
            parameters,
            verbose: config.verbose.unwrap_or(true),
        })
    }

    /// The request phase, with the request body (a config without `body_schema` narrows it off).
    fn descriptor() -> Descriptor {
        Descriptor::request_only().with_request_body()
    }

    fn configured_descriptor(&self) -> Descriptor {
        if self.body.is_some() { Self::descriptor() } else { Descriptor::request_only() }
    }

    fn on_request(&self, req: &Request) -> Action {
        let mut failures = Failures::default();
        if let Some(rules) = &self.body {
            let body = req.body().unwrap_or_default();
            if is_blank(&body) {
                if rules.required {
                    failures.push(Failure::body_required());
                }
            } else {
                let content_types: Vec<String> = req.header_all("content-type").iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
                if let Some(reason) = rules.refused_content_type(&content_types) {
                    let message = format!("{reason} (accepted: {})", rules.content_types.list());
                    return Action::Respond(ResponseInit::error(415, "unsupported_media_type", &message, &req.request_id()));
                }
                // serde_json's recursion limit (128 levels) turns a deeply nested body into a
                // parse error here, before anything recursive runs over it. A key twice in an
                // object is refused before the schema runs: it would see only the last one.
                match strict_json::parse(&body) {
                    Ok(value) => rules.schema.check(&value, &mut failures, &Failure::body),
                    Err(strict_json::Refused::Invalid(e)) => failures.push(Failure::invalid_json(&e)),
                    Err(strict_json::Refused::Duplicate { pointer, key }) => failures.push(Failure::duplicate_key(pointer, &key)),
                }
            }
        }
        let query = if self.reads_query { req.query() } else { None };
        for parameter in &self.parameters {
            let values: Vec<String> = match parameter.location {
                Location::Query => query.as_deref().map(|q| params::query_values(q, &parameter.name)).unwrap_or_default(),
                Location::Header => req.header_all(&parameter.name).iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect(),
                Location::Path => req.param(&parameter.name).into_iter().collect(),
            };
            parameter.check(&values, &mut failures);
        }
        if failures.is_empty() {
            return Action::Continue;
        }
        let body = failures.response_body(&req.request_id(), self.verbose);
        Action::Respond(ResponseInit::new(400).header("content-type", "application/json").body(body.to_string().into_bytes()))
    }
}

impl BodyRules {
    /// Why a body with these `Content-Type` values is refused (415), if it is: none, one not
    /// listed, or several that differ.
    fn refused_content_type(&self, values: &[String]) -> Option<String> {
        match values {
            [] => Some("the request body has no `Content-Type`".to_owned()),
            [first, rest @ ..] if rest.iter().any(|v| v != first) => Some("the request has several different `Content-Type` headers".to_owned()),
            [first, ..] if self.content_types.accepts(first) => None,
            [first, ..] => {
                let shown: String = first.chars().take(SHOWN_CONTENT_TYPE).collect();
                Some(format!("content type `{shown}` is not accepted"))
            }
        }
    }
}

/// Empty, or only the whitespace JSON allows between tokens: no body to validate.
fn is_blank(body: &[u8]) -> bool {
    body.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

export_plugin!(RequestValidator);

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(json: &str) -> Result<RequestValidator, String> {
        airlock_sdk::configure::<RequestValidator>(json)
    }

    fn error(json: &str) -> String {
        configure(json).unwrap_err()
    }

    #[test]
    fn config_errors_name_the_key() {
        assert!(error(r#"{"body_schema": {}, "verbos": false}"#).starts_with("`verbos`: unknown field `verbos`"));
        assert!(error(r#"{"parameters": [{"name": "a", "in": "cookie"}]}"#).starts_with("`parameters[0].in`: unknown variant `cookie`, expected one of `query`, `header`, `path`"));
        assert!(error(r#"{"parameters": [{"name": "a", "in": "query", "shema": {}}]}"#).starts_with("`parameters[0].shema`: unknown field"));
        assert_eq!(
            error(r#"{"parameters": [{"name": "X-Id", "in": "header"}, {"name": "id", "in": "query"}, {"name": "x-id", "in": "header"}]}"#),
            "`parameters[2]`: header parameter `x-id` is already `parameters[0]`"
        );
        assert!(configure(r#"{"parameters": [{"name": "id", "in": "query"}, {"name": "id", "in": "path"}]}"#).is_ok(), "one name in two places");
        assert_eq!(error("{}"), "nothing to validate: give `body_schema` and/or `parameters`");
        assert!(error(r#"{"body_required": false, "parameters": [{"name": "a", "in": "query"}]}"#).starts_with("`body_required` goes with `body_schema`"));
        assert!(error(r#"{"content_types": ["application/json"], "parameters": [{"name": "a", "in": "query"}]}"#).starts_with("`content_types` goes with `body_schema`"));
        assert!(error(r#"{"body_schema": {}, "content_types": []}"#).starts_with("`content_types`: empty"));
        assert!(error(r#"{"body_schema": {}, "content_types": ["json"]}"#).starts_with("`content_types[0]`: `json` is not a media type"));
        assert_eq!(error(r#"{"body_schema": {"type": "object", "properties": {"age": {"minimum": "5"}}}}"#), "`body_schema.properties.age.minimum`: not a valid JSON Schema: want number, but got string");
        assert!(error(r#"{"body_schema": {"properties": {"name": {"pattern": "(?<!x)y"}}}}"#).starts_with("`body_schema.properties.name.pattern`: not a valid JSON Schema: '(?<!x)y' is not valid regex"));
        assert!(error(r#"{"body_schema": {"$ref": "https://example.com/schemas/user.json"}}"#).contains("put that schema under `$defs`"));
        assert!(error(r#"{"body_schema": "{\"type\": "}"#).starts_with("`body_schema`: the string is not a JSON document"));
        assert!(error(r#"{"body_schema": "file:schemas/user.json"}"#).starts_with("`body_schema`: cannot read `schemas/user.json`"));
        assert!(error(r#"{"parameters": [{"name": "id", "in": "path", "schema": {"type": "integer", "minimum": "1"}}]}"#).starts_with("`parameters[0].schema.minimum`: "));
    }

    #[test]
    fn defaults_and_the_descriptor() {
        let p = configure(r#"{"body_schema": {"type": "object"}}"#).unwrap();
        let rules = p.body.as_ref().unwrap();
        assert!(rules.required && p.verbose && !p.reads_query);
        assert_eq!(rules.content_types.list(), "application/json");
        assert_eq!(p.configured_descriptor(), Descriptor::request_only().with_request_body());
        let params_only = configure(r#"{"parameters": [{"name": "q", "in": "query"}], "verbose": false}"#).unwrap();
        assert!(params_only.reads_query && !params_only.verbose);
        assert_eq!(params_only.configured_descriptor(), Descriptor::request_only(), "no body read without `body_schema`");
        assert!(RequestValidator::descriptor().request_body);
        let json_text = configure(r#"{"body_schema": "{\"type\": [\"object\", \"null\"]}", "body_required": false}"#).unwrap();
        assert!(!json_text.body.as_ref().unwrap().required);
        assert!(json_text.body.as_ref().unwrap().schema.is_valid(&Value::Null));
    }

    #[test]
    fn content_types_are_refused_when_missing_unlisted_or_conflicting() {
        let p = configure(r#"{"body_schema": {}, "content_types": ["application/json", "application/*+json"]}"#).unwrap();
        let rules = p.body.as_ref().unwrap();
        let refused = |values: &[&str]| rules.refused_content_type(&values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>());
        assert_eq!(refused(&["application/json; charset=utf-8"]), None);
        assert_eq!(refused(&["application/merge-patch+json"]), None);
        assert_eq!(refused(&[]).as_deref(), Some("the request body has no `Content-Type`"));
        assert_eq!(refused(&["text/plain"]).as_deref(), Some("content type `text/plain` is not accepted"));
        assert_eq!(refused(&["application/json", "application/json"]), None);
        assert!(refused(&["application/json", "text/plain"]).is_some_and(|r| r.contains("several")));
        let long = format!("text/{}", "x".repeat(500));
        assert_eq!(refused(&[&long]).map(|r| r.len()), Some("content type `` is not accepted".len() + 100));
    }

    #[test]
    fn blank_bodies_are_no_bodies() {
        assert!(is_blank(b"") && is_blank(b" \r\n\t"));
        assert!(!is_blank(b"{}") && !is_blank("\u{a0}".as_bytes()));
    }
}
