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
//! 400 if `required`, and is otherwise left out. An explicit JSON `null` in the body is sent as
//! null (over a `default`, as GraphQL's own variable defaults are; a 400 if `required`), so a
//! mutation can clear a field. A body giving one key twice in an object is a 400: which value
//! was meant is ambiguous. A query parameter given more than once
//! (`?posts=1&posts=2`), or a header, is answered 400 naming it: no type takes a list of them,
//! and which one was meant is ambiguous. A `required` `param.NAME` without a `default`, naming a param the
//! route's `path` does not capture, cannot be refused at load (`configure` is not given the
//! route): every request on that route is then a 500 `config_error`, the log naming the
//! `variables` key, never a 400 blaming the client. (An optional or defaulted one takes its
//! default, or is left out, as for any missing value.)
//!
//! The query is parsed once, at configure, and the config is refused for a syntax error (with
//! its line:column in the query), a document that is not exactly one operation unless
//! `operation_name` names one of its operations, a `[variables]` entry the operation does not
//! declare, or a non-null variable without a default in the query (`$id: ID!`) that
//! `[variables]` does not give.
//!
//! The response: `data` (or the value at `result` under it) with status 200. When that result is
//! null (`data` null, or the `result` field null or left out, as in the usual GraphQL "not found"
//! `{"data": {"user": null}, "errors": [{"path": ["user"], "extensions": {"code": "NOT_FOUND"}, ...}]}`)
//! and there are `errors` (at the result's path or any other), the status is the first
//! `[[errors]]` rule matching any error, else 400 if any error's `extensions.code` is
//! `GRAPHQL_VALIDATION_FAILED`, `GRAPHQL_PARSE_FAILED` or `BAD_USER_INPUT`, else 502; the body is
//! the gateway's error format with the first error's message and the GraphQL `errors` under
//! `errors`. `data: null` without errors (an empty or absent `errors`, or one that is not a list)
//! is a 502 whose message says so, and so is a `result` path that is not in a `data` without
//! errors (an object on the way has no such key, or a key is asked of a scalar or a list: a
//! mistyped path, unlike a field present with null). Partial data (a result and `errors`) is a 200, with the
//! errors added under `errors_field` (default `errors`) when the result is an object without a
//! field of that name, or the answer `{"data": result, "<errors_field>": [...]}` otherwise (a
//! result's own `errors` field is never overwritten); a null result without errors is a 200
//! with `null`. An upstream answer that is not a GraphQL response is a 502 if its status is 2xx
//! and passed through as it is otherwise (a 401 from the GraphQL server reaches the client); a
//! redirect (3xx) is a 502 whatever its body, saying the endpoint is not where it is looked for. An
//! error status (4xx/5xx) with GraphQL `errors` is a GraphQL-over-HTTP request error (Apollo
//! Router's 401 `{"errors": [...]}`): that status (or the first matching rule's) with the
//! gateway's error format; without a non-empty `errors` list, it is passed through as it is.
//!
//! The query is inline, or `query = "file:<path>"`: read at configure from the directory granted
//! to the plugin (`capabilities = ["files"]`, `files = { dir = "..." }`).

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod document;
pub mod errors;
pub mod variables;

use std::collections::BTreeMap;

use airlock_sdk::{Action, Descriptor, Plugin, Request, Response, strict_json};
use serde::Deserialize;
use serde_json::{Map, Value};

use document::Operation;
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
    reads_query: bool,
    /// The `result` path's keys under `data` (empty: all of `data`).
    result_path: Vec<String>,
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
        // Parsed once, here: a typo in the query, or an operation the config does not match,
        // would otherwise be found by the GraphQL server on every request.
        let operation = Operation::parse(&config.query, config.operation_name.as_deref())?;
        if !config.path.starts_with('/') || config.path.contains(['?', '#', ' ']) {
            return Err(format!("`path`: `{}` is not a path (it starts with `/`, without `?`, `#` or spaces)", config.path));
        }
        if config.errors_field.is_empty() {
            return Err("`errors_field`: empty field name".to_owned());
        }
        for (i, rule) in config.errors.iter().enumerate() {
            rule.validate(&format!("errors[{i}]"))?;
        }
        let result_path = match &config.result {
            None => Vec::new(),
            Some(path) if path.is_empty() || path.split('.').any(str::is_empty) => {
                return Err(format!("`result`: `{path}` is not a dotted path (e.g. `user` or `users.edges`)"));
            }
            Some(path) => path.split('.').map(str::to_owned).collect(),
        };
        operation.check_variables(&config.variables.iter().map(|(name, v)| (name.as_str(), v.kind)).collect::<Vec<_>>())?;
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
            reads_query: variables.iter().any(|(_, v)| matches!(v.from, From::Query(_))),
            query: config.query,
            operation_name: config.operation_name,
            path: config.path,
            variables,
            result_path,
            errors_field: config.errors_field,
            errors: config.errors,
        })
    }

    /// Both bodies: the request body is replaced by the GraphQL request, the response unwrapped.
    fn descriptor() -> Descriptor {
        Descriptor::new().with_request_body().with_response_body()
    }

    fn on_request(&self, req: &Request) -> Action {
        if let Some(message) = self.uncaptured_param(req) {
            airlock_sdk::log::warn(&message);
            let told = "this route's `builtin:graphql` config reads a route parameter its path does not capture (the gateway's log says which)";
            return Action::error(500, "config_error", told, &req.request_id());
        }
        let body = if self.reads_body { req.body().filter(|b| !b.is_empty()) } else { None };
        // Strictly: a key given twice would be read here as its last value, and as its first by
        // anything between that keeps the first (which value became the variable is ambiguous).
        let body: Option<Value> = match body.map(|b| strict_json::parse(&b)) {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(strict_json::Refused::Invalid(e))) => {
                let message = format!("the request body is not valid JSON: {e}");
                return Action::error(400, "invalid_json", &message, &req.request_id());
            }
            Some(Err(strict_json::Refused::Duplicate { pointer, key })) => {
                // Both are the client's own text, cut so the answer stays short.
                let (key, pointer): (String, String) = (key.chars().take(100).collect(), pointer.chars().take(200).collect());
                let at = if pointer.is_empty() { "the body's object".to_owned() } else { format!("the object at `{pointer}`") };
                let message = format!("the request body gives key `{key}` more than once in {at}: send it once");
                return Action::error(400, "invalid_json", &message, &req.request_id());
            }
        };
        // The raw query string, read once: a parameter given twice is refused, not guessed at.
        let query = if self.reads_query { req.query() } else { None };
        let read = |from: &From| match from {
            From::Param(name) => Ok(req.param(name).map(Raw::Text)),
            From::Query(name) => Ok(match &query {
                Some(query) => variables::query_value(query, name)?.map(Raw::Text),
                None => None,
            }),
            // Two lines are as ambiguous as a query parameter given twice.
            From::Header(name) => {
                let mut lines = req.header_all(name).into_iter();
                match (lines.next(), lines.next()) {
                    (first, None) => Ok(first.map(|v| Raw::Text(String::from_utf8_lossy(&v).into_owned()))),
                    (_, Some(_)) => Err("given more than once; send one value".to_owned()),
                }
            }
            From::Body(pointer) => Ok(body.as_ref().and_then(|b| variables::body_value(b, pointer)).map(Raw::Json)),
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
        match self.answer(&body, resp.status()) {
            Answer::PassThrough => {}
            Answer::Result(result) => resp.replace_with_json(200, &result),
            Answer::Error { status, code, message, errors } => {
                if errors.is_none() {
                    // No GraphQL errors to show: the upstream's answer itself is wrong.
                    airlock_sdk::log::warn(&message);
                }
                resp.replace_with_json(status, &error_json(req, status, code, &message, errors));
            }
        }
    }
}

/// What the client gets for the GraphQL upstream's answer.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// The upstream's answer as it is: an error status whose body is not a GraphQL response.
    PassThrough,
    /// 200 with the result (and the errors of a partial answer).
    Result(Value),
    /// An error in the gateway's format.
    Error {
        /// The HTTP status.
        status: u16,
        /// The `error` code: `graphql_error` or `upstream_not_graphql`.
        code: &'static str,
        /// The first GraphQL error's message, or what is wrong with the answer.
        message: String,
        /// The GraphQL `errors`, if there are some.
        errors: Option<Value>,
    },
}

impl GraphQl {
    /// What is wrong with the config, if a `param.NAME` variable names a param the route's path
    /// pattern does not capture: every request would lack it, the operator's mistake rather than
    /// the client's (a 400, or the GraphQL server's error, blamed the client). `configure` cannot
    /// tell: it is given the plugin's config only, not the route's path.
    fn uncaptured_param(&self, req: &Request) -> Option<String> {
        // Only a variable the request cannot go without: one with a `default`, or optional, works
        // without the param (a definition shared by `/users` and `/users/{id}`).
        self.variables.iter().filter(|(_, v)| v.required && v.default.is_none()).find_map(|(name, variable)| match &variable.from {
            From::Param(param) if req.param(param).is_none() => Some(format!(
                "`variables.{name}.from` reads route parameter `{param}`, which route `{}` does not capture: give its `path` a `{{{param}}}` segment, or take the value from elsewhere",
                req.route_id()
            )),
            _ => None,
        })
    }

    /// The answer for the upstream's response `body` with HTTP status `upstream_status`.
    pub fn answer(&self, body: &[u8], upstream_status: u16) -> Answer {
        let upstream_ok = (200..300).contains(&upstream_status);
        if (300..400).contains(&upstream_status) {
            // The gateway's POST to the GraphQL endpoint was redirected: not an answer to the
            // client's REST request, whatever its body (data in it was never the operation's
            // answer), and a client following it would reach the GraphQL endpoint, not this route.
            let message = format!(
                "the GraphQL upstream answered {upstream_status}, a redirect the gateway does not follow: point the route's upstream and `path` at the GraphQL endpoint itself"
            );
            return Answer::Error { status: 502, code: "upstream_not_graphql", message, errors: None };
        }
        let document = serde_json::from_slice::<Value>(body).ok().filter(|d| d.get("data").is_some() || d.get("errors").is_some());
        let Some(mut document) = document else {
            if !upstream_ok {
                return Answer::PassThrough;
            }
            let message = "the GraphQL upstream's answer is not a GraphQL response (no `data` or `errors`)".to_owned();
            return Answer::Error { status: 502, code: "upstream_not_graphql", message, errors: None };
        };
        if (400..=599).contains(&upstream_status) {
            return self.request_error(&mut document, upstream_status);
        }
        let has_data = document.get("data").is_some();
        let (errors, errors_not_a_list) = match document.get_mut("errors").map(Value::take) {
            Some(Value::Array(errors)) => (errors, false),
            None | Some(Value::Null) => (Vec::new(), false),
            Some(_) => (Vec::new(), true),
        };
        let mut data = document.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        let data_is_null = data.is_null();
        let result = take_result(&mut data, &self.result_path);
        if result.as_ref().is_none_or(Value::is_null) && !errors.is_empty() {
            // No result, and errors saying why: `data: null`, or the route's `result` null or
            // left out (the usual GraphQL "not found": `{"data": {"user": null}, "errors": [...]}`).
            let status = errors::status_for(&self.errors, &errors);
            let message = match errors.first().and_then(|e| e.get("message")).and_then(Value::as_str) {
                Some(message) => message.to_owned(),
                None => "the GraphQL response's first error has no `message`".to_owned(),
            };
            return Answer::Error { status, code: "graphql_error", message, errors: Some(Value::Array(errors)) };
        }
        if data_is_null {
            let message = match (has_data, errors_not_a_list) {
                (true, true) => "the GraphQL response has `data: null` and its `errors` is not a list",
                (true, false) => "the GraphQL response has `data: null` and no errors",
                (false, true) => "the GraphQL response has no `data` and its `errors` is not a list",
                (false, false) => "the GraphQL response has neither data nor errors",
            };
            return Answer::Error { status: 502, code: "graphql_error", message: message.to_owned(), errors: None };
        }
        let Some(result) = result else {
            // `data` is there, without errors, but not the route's `result`: the route's path
            // does not match the operation (a typo), which the client cannot fix.
            let message = format!("the route's `result` path `{}` is not in the GraphQL response's `data`", self.result_path.join("."));
            return Answer::Error { status: 502, code: "graphql_error", message, errors: None };
        };
        Answer::Result(if errors.is_empty() { result } else { self.with_errors(result, errors) })
    }

    /// A partial result with its `errors`: added under `errors_field` to an object result that
    /// has no such field, else (another value, or an object whose own field of that name would
    /// be lost) answered as `{"data": result, "<errors_field>": errors}`.
    fn with_errors(&self, result: Value, errors: Vec<Value>) -> Value {
        match result {
            Value::Object(mut fields) if !fields.contains_key(&self.errors_field) => {
                fields.insert(self.errors_field.clone(), Value::Array(errors));
                Value::Object(fields)
            }
            other => {
                let mut wrapped = Map::new();
                wrapped.insert("data".into(), other);
                wrapped.insert(self.errors_field.clone(), Value::Array(errors));
                Value::Object(wrapped)
            }
        }
    }

    /// A GraphQL response with an error status: GraphQL-over-HTTP's request error (the plugin
    /// asks for `application/graphql-response+json`), such as Apollo Router's 401 for a missing
    /// token. The status is kept (a matching `errors` rule still gives its own) and the errors
    /// take the gateway's error format; without a list of errors, the answer is passed through.
    fn request_error(&self, document: &mut Value, upstream_status: u16) -> Answer {
        let errors = match document.get_mut("errors").map(Value::take) {
            Some(Value::Array(errors)) if !errors.is_empty() => errors,
            _ => return Answer::PassThrough,
        };
        let status = errors::rule_status(&self.errors, &errors).unwrap_or(upstream_status);
        let message = match errors.first().and_then(|e| e.get("message")).and_then(Value::as_str) {
            Some(message) => message.to_owned(),
            None => "the GraphQL response's first error has no `message`".to_owned(),
        };
        Answer::Error { status, code: "graphql_error", message, errors: Some(Value::Array(errors)) }
    }
}

/// Takes the value at `path` out of `data`: `Some` of it (null if a null, or a list too short,
/// comes first on the way, as GraphQL nulls a field's parents when it fails), or `None` when an
/// object on the way has no such key or a scalar is in the way, so that `path` cannot be the
/// operation's (a mistyped `result`).
fn take_result(data: &mut Value, path: &[String]) -> Option<Value> {
    let mut here = data;
    for key in path {
        here = match here {
            Value::Null => return Some(Value::Null),
            Value::Object(fields) => fields.get_mut(key)?,
            Value::Array(items) => match items.get_mut(key.parse::<usize>().ok()?) {
                Some(item) => item,
                None => return Some(Value::Null),
            },
            _ => return None,
        };
    }
    Some(here.take())
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
    use serde_json::json;

    use super::*;

    fn configure(json: &str) -> Result<GraphQl, String> {
        airlock_sdk::configure::<GraphQl>(json)
    }

    #[test]
    fn a_config_parses_and_body_reading_is_noticed() {
        let p = configure(
            r#"{"query": "query U($id: ID!, $input: UserInput) { user(id: $id, input: $input) { id } }", "operation_name": "U", "result": "user.profile",
                "variables": {"id": {"from": "param.id"}, "input": {"from": "body.user", "type": "json"}}}"#,
        )
        .unwrap();
        assert!(p.reads_body);
        assert_eq!(p.result_path, ["user", "profile"]);
        assert_eq!(p.path, "/graphql");
        assert!(!configure(r#"{"query": "{ a }"}"#).unwrap().reads_body);
    }

    /// The status and body (`Value::Null` for a pass-through) answered for `body`.
    fn answer(p: &GraphQl, body: Value) -> (u16, Value) {
        match p.answer(body.to_string().as_bytes(), 200) {
            Answer::PassThrough => (0, Value::Null),
            Answer::Result(result) => (200, result),
            Answer::Error { status, code, message, errors } => (status, json!({"error": code, "message": message, "errors": errors})),
        }
    }

    #[test]
    fn a_null_result_with_errors_takes_the_error_rules_like_null_data() {
        let p = configure(r#"{"query": "{ user { id } }", "result": "user", "errors": [{"code": "NOT_FOUND", "status": 404}]}"#).unwrap();
        let not_found = json!([{"message": "no such user", "path": ["user"], "extensions": {"code": "NOT_FOUND"}}]);
        let expected = json!({"error": "graphql_error", "message": "no such user", "errors": not_found});
        assert_eq!(answer(&p, json!({"data": {"user": null}, "errors": not_found})), (404, expected.clone()));
        assert_eq!(answer(&p, json!({"data": {}, "errors": not_found})), (404, expected.clone()), "a result left out is null");
        assert_eq!(answer(&p, json!({"data": null, "errors": not_found})), (404, expected));
        // Errors at another path still explain the missing result; no rule: the default classes.
        let (status, body) = answer(&p, json!({"data": {"user": null}, "errors": [{"message": "db down", "path": ["other"]}]}));
        assert_eq!((status, body["message"].clone()), (502, json!("db down")));
        let bad_input = json!([{"message": "bad id", "extensions": {"code": "BAD_USER_INPUT"}}]);
        assert_eq!(answer(&p, json!({"data": {"user": null}, "errors": bad_input})).0, 400);
        // A result with errors is partial data; a null result without errors is the result.
        let (status, body) = answer(&p, json!({"data": {"user": {"id": "1"}}, "errors": not_found}));
        assert_eq!((status, body), (200, json!({"id": "1", "errors": not_found})));
        assert_eq!(answer(&p, json!({"data": {"user": null}})), (200, Value::Null));
        // Without `result`, only `data: null` is no result.
        let all = configure(r#"{"query": "{ user { id } }", "errors": [{"code": "NOT_FOUND", "status": 404}]}"#).unwrap();
        let (status, body) = answer(&all, json!({"data": {"user": null}, "errors": not_found}));
        assert_eq!((status, body), (200, json!({"user": null, "errors": not_found})));
    }

    #[test]
    fn a_result_path_not_in_the_data_is_a_502_unlike_a_null_result() {
        let p = configure(r#"{"query": "{ user { profile { id } } }", "result": "user.profile"}"#).unwrap();
        let missing = "the route's `result` path `user.profile` is not in the GraphQL response's `data`";
        let (status, body) = answer(&p, json!({"data": {"usr": {"profile": {"id": "1"}}}}));
        assert_eq!((status, body["message"].as_str()), (502, Some(missing)), "an object without the key");
        assert_eq!(answer(&p, json!({"data": {"user": {}}})).0, 502, "the last key too");
        assert_eq!(answer(&p, json!({"data": {"user": "x"}})).0, 502, "a scalar in the way");
        assert_eq!(answer(&p, json!({"data": {"user": [{"profile": 1}]}})).0, 502, "a list where a key is named");
        // Present with null (or a null on the way): the result is null.
        assert_eq!(answer(&p, json!({"data": {"user": {"profile": null}}})), (200, Value::Null));
        assert_eq!(answer(&p, json!({"data": {"user": null}})), (200, Value::Null));
        // Left out beside errors: the errors explain it (the rules, as for null).
        let errors = json!([{"message": "no profile", "extensions": {"code": "NOT_FOUND"}}]);
        assert_eq!(answer(&p, json!({"data": {"user": {}}, "errors": errors})).0, 502);
        let rules = configure(r#"{"query": "{ user { profile { id } } }", "result": "user.profile", "errors": [{"code": "NOT_FOUND", "status": 404}]}"#);
        assert_eq!(answer(&rules.unwrap(), json!({"data": {"user": {}}, "errors": errors})).0, 404);
        // List indexes: one past the end is no item (null), not a mistyped path.
        let first = configure(r#"{"query": "{ users { id } }", "result": "users.0"}"#).unwrap();
        assert_eq!(answer(&first, json!({"data": {"users": [{"id": "1"}]}})), (200, json!({"id": "1"})));
        assert_eq!(answer(&first, json!({"data": {"users": []}})), (200, Value::Null));
    }

    #[test]
    fn partial_errors_never_overwrite_a_field_of_the_result() {
        let p = configure(r#"{"query": "{ user { id errors } }", "result": "user"}"#).unwrap();
        let errors = json!([{"message": "flaky", "path": ["user", "x"]}]);
        let own = json!({"id": "1", "errors": ["its own"]});
        assert_eq!(answer(&p, json!({"data": {"user": own}, "errors": errors})), (200, json!({"data": own, "errors": errors})));
        let other = configure(r#"{"query": "{ user { id errors } }", "result": "user", "errors_field": "graphql_errors"}"#).unwrap();
        let (_, body) = answer(&other, json!({"data": {"user": own}, "errors": errors}));
        assert_eq!(body, json!({"id": "1", "errors": ["its own"], "graphql_errors": errors}), "no clash: added to the object");
        assert_eq!(answer(&p, json!({"data": {"user": [1]}, "errors": errors})).1, json!({"data": [1], "errors": errors}));
    }

    #[test]
    fn null_data_without_a_list_of_errors_is_a_502_saying_so() {
        let p = configure(r#"{"query": "{ a }", "result": "a"}"#).unwrap();
        let message = |body: Value| {
            let (status, body) = answer(&p, body);
            assert_eq!(status, 502, "{body}");
            body["message"].as_str().unwrap_or_default().to_owned()
        };
        assert_eq!(message(json!({"data": null, "errors": []})), "the GraphQL response has `data: null` and no errors");
        assert_eq!(message(json!({"data": null})), "the GraphQL response has `data: null` and no errors");
        assert_eq!(message(json!({"data": null, "errors": {"message": "x"}})), "the GraphQL response has `data: null` and its `errors` is not a list");
        assert_eq!(message(json!({"errors": {"message": "x"}})), "the GraphQL response has no `data` and its `errors` is not a list");
        assert_eq!(message(json!({"errors": []})), "the GraphQL response has neither data nor errors");
        assert_eq!(message(json!({"data": null, "errors": [{"path": ["a"]}]})), "the GraphQL response's first error has no `message`");
        assert_eq!(answer(&p, json!({"nothing": 1})).1["error"], "upstream_not_graphql");
        assert_eq!(p.answer(b"not json", 404), Answer::PassThrough);
    }

    #[test]
    fn an_error_status_with_graphql_errors_keeps_its_status_unless_a_rule_matches() {
        let p = configure(r#"{"query": "{ user { id } }", "result": "user", "errors": [{"code": "NOT_FOUND", "status": 404}]}"#).unwrap();
        let unauthenticated = json!([{"message": "unauthenticated", "extensions": {"code": "UNAUTHENTICATED"}}]);
        let body = json!({"errors": unauthenticated}).to_string();
        let expected = Answer::Error { status: 401, code: "graphql_error", message: "unauthenticated".into(), errors: Some(unauthenticated.clone()) };
        assert_eq!(p.answer(body.as_bytes(), 401), expected);
        // A 5xx too, and even beside data: the status is the server's word.
        let body = json!({"data": {"user": {"id": "1"}}, "errors": [{"message": "overloaded"}]}).to_string();
        assert!(matches!(p.answer(body.as_bytes(), 503), Answer::Error { status: 503, .. }));
        // A matching rule wins over the upstream's status, as over the default classes.
        let body = json!({"data": null, "errors": [{"message": "gone", "extensions": {"code": "NOT_FOUND"}}]}).to_string();
        assert!(matches!(p.answer(body.as_bytes(), 400), Answer::Error { status: 404, .. }));
        // No list of errors to show: the upstream's answer as it is.
        assert_eq!(p.answer(br#"{"data": null}"#, 500), Answer::PassThrough);
        assert_eq!(p.answer(br#"{"errors": []}"#, 403), Answer::PassThrough);
        // Other statuses keep the 2xx rules.
        assert_eq!(p.answer(json!({"data": {"user": {"id": "1"}}}).to_string().as_bytes(), 203), Answer::Result(json!({"id": "1"})));
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |json: &str| configure(json).unwrap_err();
        assert_eq!(err(r#"{}"#), "missing field `query`");
        assert_eq!(err(r#"{"query": " "}"#), "`query`: empty GraphQL document");
        assert_eq!(err(r#"{"query": "{ a }", "operation_name": "B"}"#), "`operation_name`: the query has no operation `B` (its operations: (anonymous))");
        assert_eq!(err(r#"{"query": "query A { a } query B { b }", "operation_name": "b"}"#), "`operation_name`: the query has no operation `b` (its operations: `A`, `B`)");
        assert!(configure(r#"{"query": "query A { a } query B { b }", "operation_name": "B"}"#).is_ok());
        assert!(err(r#"{"query": "query A { a } query B { b }"}"#).starts_with("`query`: the document has 2 operations (`A`, `B`)"));
        assert!(err(r#"{"query": "{ a { b }"}"#).starts_with("`query`: GraphQL syntax error at 1:10 (line:column in the query): "));
        assert_eq!(
            err(r#"{"query": "query($id: ID!) { a(id: $id) }", "variables": {"ids": {"from": "param.id"}}}"#),
            "`variables.ids`: the operation declares no `$ids` (it declares: `$id`)"
        );
        assert!(
            err(r#"{"query": "query($id: ID!, $n: Int) { a(id: $id) }", "variables": {"n": {"from": "query.n", "type": "int"}}}"#)
                .starts_with("`variables`: the operation requires `$id: ID!` (non-null, no default in the query)")
        );
        assert!(err(r#"{"query": "{ a }", "path": "graphql"}"#).starts_with("`path`: `graphql` is not a path"));
        assert!(err(r#"{"query": "{ a }", "result": "a..b"}"#).starts_with("`result`: `a..b` is not a dotted path"));
        assert_eq!(
            err(r#"{"query": "query($id: ID) { a }", "variables": {"id": {"from": "param.id", "type": "uuid"}}}"#),
            "`variables.id.type`: unknown variant `uuid`, expected one of `string`, `int`, `float`, `bool`, `json`"
        );
        assert!(err(r#"{"query": "query($id: ID) { a }", "variables": {"id": {"from": "cookie.id"}}}"#).starts_with("`variables.id.from`: `cookie.id`"));
        assert_eq!(
            err(r#"{"query": "query($n: Int) { a }", "variables": {"n": {"from": "query.n", "type": "int", "default": "abc"}}}"#),
            "`variables.n.default`: `\"abc\"` is not a 32-bit integer (GraphQL's `Int`)"
        );
        let ok = configure(r#"{"query": "query($n: Int) { a }", "variables": {"n": {"from": "query.n", "type": "int", "default": "3"}}}"#).unwrap();
        assert_eq!(ok.variables[0].1.default, Some(serde_json::json!(3)), "converted once, at configure");
        assert_eq!(
            err(r#"{"query": "{ a }", "errors": [{"code": "X", "status": 302}]}"#),
            "`errors[0].status`: 302 is not an error status (400-599)"
        );
        assert!(err(r#"{"query": "{ a }", "querry": "x"}"#).starts_with("`querry`: unknown field `querry`"));
    }
}
