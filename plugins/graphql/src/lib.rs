//! `builtin:graphql`: serves a REST route from one GraphQL operation.
//!
//! ```toml
//! [[routes]]
//! path = "/users/{id}"
//! methods = ["GET"]
//! upstream = "graphql"
//! [[routes.plugins]]
//! plugin = "builtin:graphql"
//! [routes.plugins.config]
//! query = "query User($id: ID!, $posts: Int) { user(id: $id) { id name posts(first: $posts) { title } } }"
//! result = "user"                           # the response is data.user (default: all of data)
//! [routes.plugins.config.variables]
//! id = { from = "param.id" }                # string (default), int, float, bool or json
//! posts = { from = "query.posts", type = "int", default = 3 }
//! [[routes.plugins.config.errors]]
//! code = "NOT_FOUND"                        # extensions.code (and/or `message` containing text)
//! status = 404
//! ```
//!
//! The request sent upstream is `POST {path}` (default `/graphql`) with the JSON body
//! `{"query", "variables", "operationName"}`; the client's query string is dropped and its method
//! replaced. Variables come from `param.NAME`, `query.NAME`, `header.NAME`, `body` (the whole
//! JSON request body) or `body.PATH` (a dotted path into it) and are converted to their `type`;
//! a missing value (or an empty one, for any type but `string`) takes `default`, is answered
//! 400 if `required`, and is otherwise left out.
//!
//! The response: `data` (or the value at `result` under it) with status 200. When `data` is null
//! and there are `errors`, the status is the first `[[errors]]` rule matching any error, else 400
//! if any error's `extensions.code` is `GRAPHQL_VALIDATION_FAILED`, `GRAPHQL_PARSE_FAILED` or
//! `BAD_USER_INPUT`, else 502; the body is the gateway's error format with the GraphQL `errors`
//! under `errors`. Partial data (`data` and `errors`) is a 200, with the errors added under
//! `errors_field` (default `errors`) when the result is an object, or the answer
//! `{"data": result, "<errors_field>": [...]}` otherwise. An upstream answer that is not a GraphQL
//! response is a 502 if its status is 2xx and passed through as it is otherwise (a 401 from the
//! GraphQL server reaches the client).
//!
//! The query is inline, or `query = "file:<path>"`: read at configure from the directory granted
//! to the plugin (`capabilities = ["files"]`, `files = { dir = "..." }`).

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod errors;
pub mod variables;

use std::collections::BTreeMap;

use airlock_sdk::{Action, Descriptor, Plugin, Request, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

use errors::ErrorRule;
use variables::{From, Raw, Variable};

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The GraphQL document, inline or `file:<path>` in the granted directory.
    pub query: String,
    /// `operationName`, for a document with several operations.
    pub operation_name: Option<String>,
    /// The upstream path of the GraphQL endpoint.
    #[serde(default = "default_path")]
    pub path: String,
    /// The operation's variables, by name.
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    /// A dotted path under `data` whose value is the response (default: all of `data`).
    pub result: Option<String>,
    /// Where partial responses keep the GraphQL `errors`.
    #[serde(default = "default_errors_field")]
    pub errors_field: String,
    /// Error to status rules, first match wins.
    #[serde(default)]
    pub errors: Vec<ErrorRule>,
}

fn default_path() -> String {
    "/graphql".to_owned()
}

fn default_errors_field() -> String {
    "errors".to_owned()
}

/// The configured plugin.
#[derive(Debug)]
pub struct GraphQl {
    query: String,
    operation_name: Option<String>,
    path: String,
    variables: Vec<(String, Variable)>,
    reads_body: bool,
    result_pointer: String,
    errors_field: String,
    errors: Vec<ErrorRule>,
}

impl Plugin for GraphQl {
    type Config = Config;

    fn new(mut config: Config) -> Result<Self, String> {
        if let Some(path) = config.query.strip_prefix("file:") {
            config.query = airlock_sdk::files::read_to_string(path).map_err(|e| format!("`query`: {e}"))?;
        }
        if config.query.trim().is_empty() {
            return Err("`query`: empty GraphQL document".to_owned());
        }
        if let Some(name) = &config.operation_name
            && !config.query.contains(name.as_str())
        {
            return Err(format!("`operation_name`: `{name}` does not appear in `query`"));
        }
        if !config.path.starts_with('/') || config.path.contains(['?', '#', ' ']) {
            return Err(format!("`path`: `{}` is not a path (it starts with `/`, without `?`, `#` or spaces)", config.path));
        }
        if config.errors_field.is_empty() {
            return Err("`errors_field`: empty field name".to_owned());
        }
        for (i, rule) in config.errors.iter().enumerate() {
            rule.validate(&format!("errors[{i}]"))?;
        }
        let result_pointer = match &config.result {
            None => String::new(),
            Some(path) if path.is_empty() || path.split('.').any(str::is_empty) => {
                return Err(format!("`result`: `{path}` is not a dotted path (e.g. `user` or `users.edges`)"));
            }
            Some(path) => variables::pointer(path),
        };
        let mut variables: Vec<(String, Variable)> = config.variables.into_iter().collect();
        for (name, variable) in &mut variables {
            // Checked (and converted: `default = "3"` for an int is 3) once, here: a default of
            // the wrong type would reach the upstream as its own GraphQL error on every request.
            if let Some(default) = variable.default.take() {
                let converted = variable.kind.convert(Raw::Json(default)).map_err(|why| format!("`variables.{name}.default`: {why}"))?;
                variable.default = Some(converted);
            }
        }
        Ok(Self {
            reads_body: variables.iter().any(|(_, v)| v.from.is_body()),
            query: config.query,
            operation_name: config.operation_name,
            path: config.path,
            variables,
            result_pointer,
            errors_field: config.errors_field,
            errors: config.errors,
        })
    }

    /// Both bodies: the request body is replaced by the GraphQL request, the response unwrapped.
    fn descriptor() -> Descriptor {
        Descriptor::new().with_request_body().with_response_body()
    }

    fn on_request(&self, req: &Request) -> Action {
        let body = if self.reads_body { req.body().filter(|b| !b.is_empty()) } else { None };
        let body: Option<Value> = match body.map(|b| serde_json::from_slice(&b)) {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(e)) => {
                let message = format!("the request body is not valid JSON: {e}");
                return Action::error(400, "invalid_json", &message, &req.request_id());
            }
        };
        let read = |from: &From| match from {
            From::Param(name) => req.param(name).map(Raw::Text),
            From::Query(name) => req.query_param(name).map(Raw::Text),
            From::Header(name) => req.header_str(name).map(Raw::Text),
            From::Body(pointer) => body.as_ref().and_then(|b| variables::body_value(b, pointer)).map(Raw::Json),
        };
        let variables = match variables::build(&self.variables, read) {
            Ok(variables) => variables,
            Err(message) => return Action::error(400, "invalid_variable", &message, &req.request_id()),
        };
        let mut payload = Map::new();
        payload.insert("query".into(), Value::String(self.query.clone()));
        payload.insert("variables".into(), Value::Object(variables));
        if let Some(name) = &self.operation_name {
            payload.insert("operationName".into(), Value::String(name.clone()));
        }
        req.set_method("POST");
        req.set_path(&self.path);
        req.set_query(None);
        req.set_header("content-type", "application/json");
        req.set_header("accept", "application/graphql-response+json, application/json");
        req.set_body(Value::Object(payload).to_string());
        Action::Continue
    }

    fn on_response(&self, req: &Request, resp: &Response) {
        let Some(body) = resp.body() else { return };
        let upstream_ok = (200..300).contains(&resp.status());
        let document = serde_json::from_slice::<Value>(&body).ok().filter(|d| d.get("data").is_some() || d.get("errors").is_some());
        let Some(mut document) = document else {
            if upstream_ok {
                let message = "the GraphQL upstream's answer is not a GraphQL response (no `data` or `errors`)".to_owned();
                airlock_sdk::log::warn(&message);
                resp.replace_with_json(502, &error_json(req, 502, "upstream_not_graphql", &message, None));
            }
            return;
        };
        let errors = match document.get_mut("errors").map(Value::take) {
            Some(Value::Array(errors)) => errors,
            _ => Vec::new(),
        };
        let data = document.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        if data.is_null() {
            let status = if errors.is_empty() { 502 } else { errors::status_for(&self.errors, &errors) };
            let message = errors
                .first()
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("the GraphQL response has neither data nor errors")
                .to_owned();
            let errors = (!errors.is_empty()).then_some(Value::Array(errors));
            resp.replace_with_json(status, &error_json(req, status, "graphql_error", &message, errors));
            return;
        }
        let mut result =
            if self.result_pointer.is_empty() { data } else { data.pointer(&self.result_pointer).cloned().unwrap_or(Value::Null) };
        if !errors.is_empty() {
            result = match result {
                Value::Object(mut fields) => {
                    fields.insert(self.errors_field.clone(), Value::Array(errors));
                    Value::Object(fields)
                }
                other => {
                    let mut wrapped = Map::new();
                    wrapped.insert("data".into(), other);
                    wrapped.insert(self.errors_field.clone(), Value::Array(errors));
                    Value::Object(wrapped)
                }
            };
        }
        resp.replace_with_json(200, &result);
    }
}

/// The gateway's error format, with the GraphQL `errors` when there are some.
fn error_json(req: &Request, status: u16, code: &str, message: &str, errors: Option<Value>) -> Value {
    let mut body = airlock_sdk::error_json(status, code, message, &req.request_id());
    if let (Some(errors), Value::Object(fields)) = (errors, &mut body) {
        fields.insert("errors".into(), errors);
    }
    body
}

#[cfg(target_arch = "wasm32")]
airlock_sdk::export_plugin!(GraphQl);

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(json: &str) -> Result<GraphQl, String> {
        airlock_sdk::configure::<GraphQl>(json)
    }

    #[test]
    fn a_config_parses_and_body_reading_is_noticed() {
        let p = configure(
            r#"{"query": "query U($id: ID!) { user(id: $id) { id } }", "operation_name": "U", "result": "user.profile",
                "variables": {"id": {"from": "param.id"}, "input": {"from": "body.user", "type": "json"}}}"#,
        )
        .unwrap();
        assert!(p.reads_body);
        assert_eq!(p.result_pointer, "/user/profile");
        assert_eq!(p.path, "/graphql");
        assert!(!configure(r#"{"query": "{ a }"}"#).unwrap().reads_body);
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |json: &str| configure(json).unwrap_err();
        assert_eq!(err(r#"{}"#), "missing field `query`");
        assert_eq!(err(r#"{"query": " "}"#), "`query`: empty GraphQL document");
        assert_eq!(err(r#"{"query": "{ a }", "operation_name": "B"}"#), "`operation_name`: `B` does not appear in `query`");
        assert!(err(r#"{"query": "{ a }", "path": "graphql"}"#).starts_with("`path`: `graphql` is not a path"));
        assert!(err(r#"{"query": "{ a }", "result": "a..b"}"#).starts_with("`result`: `a..b` is not a dotted path"));
        assert_eq!(
            err(r#"{"query": "{ a }", "variables": {"id": {"from": "param.id", "type": "uuid"}}}"#),
            "`variables.id.type`: unknown variant `uuid`, expected one of `string`, `int`, `float`, `bool`, `json`"
        );
        assert!(err(r#"{"query": "{ a }", "variables": {"id": {"from": "cookie.id"}}}"#).starts_with("`variables.id.from`: `cookie.id`"));
        assert_eq!(
            err(r#"{"query": "{ a }", "variables": {"n": {"from": "query.n", "type": "int", "default": "abc"}}}"#),
            "`variables.n.default`: `\"abc\"` is not an integer"
        );
        let ok = configure(r#"{"query": "{ a }", "variables": {"n": {"from": "query.n", "type": "int", "default": "3"}}}"#).unwrap();
        assert_eq!(ok.variables[0].1.default, Some(serde_json::json!(3)), "converted once, at configure");
        assert_eq!(
            err(r#"{"query": "{ a }", "errors": [{"code": "X", "status": 302}]}"#),
            "`errors[0].status`: 302 is not an error status (400-599)"
        );
        assert!(err(r#"{"query": "{ a }", "querry": "x"}"#).starts_with("`querry`: unknown field `querry`"));
    }
}
