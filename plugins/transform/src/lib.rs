//! `builtin:transform`: declarative rewrites of the request (path, query, headers, JSON body) and
//! the response (headers, JSON body). No code: rules in the chain entry's config.
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:transform"
//! [routes.plugins.config.request]
//! path = "/v2/accounts/${param.id}"                    # a template; variables percent-encoded
//! query = { set = { "api-version" = "2" }, remove = ["debug"] }
//! headers = { set = { "x-consumer" = "${context.consumer}" } }
//! [routes.plugins.config.request.body]
//! remove = ["password", "**.ssn"]
//! set = { "meta.requested_by" = "${context.consumer}" }
//! non_json = "reject"                                  # 415 for bodies that are not JSON
//! [routes.plugins.config.response.body]
//! unwrap = "data.items"
//! remove = ["**.token"]
//! ```
//!
//! - `request`: `path`, `query`, `headers`, `body`, applied in the order `body`, `path`, `query`,
//!   `headers` (a template reads the request as the sections before it left it).
//! - `response`: `body`, then `headers`. Header rules alone, whose templates read only what no
//!   later plugin can change (literals, params, request id, route), are made from `on-request`
//!   as response edits, with no `on-response` call (as `builtin:headers` does).
//! - Header rules and nothing else: the same changes on every request, declared to the
//!   gateway once at configure (`Plugin::templated_fixed_edits`) and made by it, each templated
//!   value built and each request `add` or `rename` decided where the change is made, with no
//!   call into the plugin, as `builtin:headers` does.
//! - `headers` and `query`: `remove`, `rename`, `set`, `add`, `append`, in that order
//!   (`airlock_sdk::header_rules`, shared with `builtin:headers`; [`query`]).
//! - `body`: `unwrap`, `remove`, `rename`, `move`, `copy`, `set`, `add`, `wrap`, in that order,
//!   with paths in the [`path`] language (dotted with `*` and `**`, or JSON Pointer), and
//!   `non_json = "pass" | "reject"` ([`body`]); a response's also `statuses` (codes or `"2xx"`
//!   classes; empty: every status).
//!
//! Templates are `airlock_sdk::template`s: `${param.NAME}`, `${query.NAME}`, `${header.NAME}`,
//! `${context.KEY}`, `${request_id}`, `${route}`, `${client_ip}`. Everything is parsed and checked at configure;
//! an error names the key.
//!
//! The gateway buffers a body only for a direction whose `body` has a rule (or `non_json =
//! "reject"`): `configured_descriptor` asks for nothing else, so routes without body rules keep
//! streaming; on the response side only those of the `statuses` and (with `non_json = "pass"`)
//! JSON types the rules apply to (`response_bodies`). A body is JSON when its `content-type` is `application/json` or `*/*+json`, or when
//! it has no `content-type` (or an empty one). Invalid JSON is answered 400 on the request side and 502 on the
//! response side, with a JSON error naming the parser's complaint; an empty body is left empty.
//! Numbers go through as they were written, digit for digit, however large or long ([`json`]).

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod body;
pub mod json;
pub mod path;
pub mod query;
pub mod table;
pub mod value;

use airlock_sdk::header_rules::{self, HeaderRules};
use airlock_sdk::template::{Source, Template};
use airlock_sdk::{Action, Descriptor, FixedEdit, Plugin, Request, Response, ResponseBodies};
use percent_encoding::{AsciiSet, CONTROLS, percent_encode};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use body::{BodyRules, NonJson, Outcome, StatusMatch};
use query::QueryRules;

/// The plugin's config: rules for each direction.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Rules applied to the request before it goes upstream.
    pub request: RequestRules,
    /// Rules applied to the response before it goes to the client.
    pub response: ResponseRules,
}

/// The request's rules; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestRules {
    /// The path sent upstream.
    pub path: Option<PathTemplate>,
    /// Query parameter rules.
    pub query: QueryRules,
    /// Header rules.
    pub headers: HeaderRules,
    /// JSON body rules.
    pub body: BodyRules,
}

/// The response's rules; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseRules {
    /// Header rules.
    pub headers: HeaderRules,
    /// JSON body rules.
    pub body: BodyRules,
}

/// A path template: starts with `/`; variables are percent-encoded as one path segment each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate(pub Template);

/// Bytes escaped when a variable's value is put into a path segment: those that cannot stand
/// in one (RFC 3986 `pchar`), and `;` and `\\`, which some servers read as a path parameter's
/// start (Tomcat, Spring: `a;b` reaches them as `a`) or as `/`. The route's own `rewrite`
/// escapes the same (the gateway's `PATH_SEGMENT`).
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b';')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

impl PathTemplate {
    /// The path for one request.
    pub fn expand(&self, source: &impl Source) -> String {
        let bytes = self.0.expand_with(source, |value, out| match value {
            // A whole segment `.` or `..` would be resolved by the upstream: sent encoded.
            b"." => out.extend_from_slice(b"%2E"),
            b".." => out.extend_from_slice(b"%2E%2E"),
            _ => out.extend(percent_encode(value, PATH_SEGMENT).flat_map(str::bytes)),
        });
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl<'de> Deserialize<'de> for PathTemplate {
    /// From a template string starting with `/`, without `?` or `#` in its literal text.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if !text.starts_with('/') {
            return Err(de::Error::custom(format!("`{text}`: a path starts with `/`")));
        }
        if text.contains(['?', '#', ' ']) {
            return Err(de::Error::custom(format!(
                "`{text}`: a path holds no `?`, `#` or space (set query parameters with `request.query`)"
            )));
        }
        Template::parse(&text).map(PathTemplate).map_err(de::Error::custom)
    }
}

impl RequestRules {
    fn is_empty(&self) -> bool {
        self.path.is_none() && self.query.is_empty() && self.headers.is_empty() && !self.body.needs_body()
    }

    /// No rule but header rules.
    fn headers_only(&self) -> bool {
        self.path.is_none() && self.query.is_empty() && !self.body.needs_body()
    }
}

impl ResponseRules {
    fn is_empty(&self) -> bool {
        self.headers.is_empty() && !self.body.needs_body()
    }

    /// Header rules only, reading nothing a later plugin can change: they are made from
    /// `on-request` as response edits (`Request::edit_response`), with no `on-response` call.
    fn made_in_request_phase(&self) -> bool {
        !self.headers.is_empty() && !self.body.needs_body() && self.headers.settled_at_request()
    }
}

/// The configured plugin.
#[derive(Debug)]
pub struct Transform {
    request: RequestRules,
    response: ResponseRules,
    /// [`ResponseRules::made_in_request_phase`], decided once at configure.
    response_from_request: bool,
    /// Header rules only, making the same changes on every request: declared to the gateway as
    /// fixed edits, made without a call.
    fixed: bool,
}

impl Plugin for Transform {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let Config { request, response } = config;
        request.headers.validate("request.headers")?;
        request.query.validate("request.query")?;
        request.body.validate("request.body")?;
        response.headers.validate("response.headers")?;
        response.body.validate("response.body")?;
        let response_from_request = response.made_in_request_phase();
        let fixed = request.headers_only()
            && !response.body.needs_body()
            && header_rules::templated_fixed_edits(&request.headers, &response.headers).is_some();
        Ok(Self { request, response, response_from_request, fixed })
    }

    /// Fixed header rules are the gateway's to make.
    fn templated_fixed_edits(&self) -> Vec<FixedEdit<'_>> {
        if !self.fixed {
            return Vec::new();
        }
        header_rules::templated_fixed_edits(&self.request.headers, &self.response.headers).unwrap_or_default()
    }

    fn fixed_edit_keys(&self) -> Vec<String> {
        header_rules::fixed_edit_keys(&self.request.headers, "request.headers", &self.response.headers, "response.headers")
    }

    /// The response body rules apply to the `statuses` given, and to JSON bodies unless others
    /// are refused (`non_json = "reject"`): the gateway buffers no other response for them (a
    /// download, an error page), which streams as it comes.
    fn response_bodies(&self) -> Option<ResponseBodies> {
        let rules = &self.response.body;
        if !rules.needs_body() {
            return None;
        }
        let mut statuses: Vec<_> = rules
            .statuses
            .iter()
            .map(|s| match *s {
                StatusMatch::Code(code) => code..=code,
                StatusMatch::Class(class) => class * 100..=class * 100 + 99,
            })
            .collect();
        // Past what a gateway takes (64 ranges): narrowed by media type alone.
        if statuses.len() > 64 {
            statuses.clear();
        }
        let media_types = match rules.non_json {
            NonJson::Pass => vec!["application/json".to_owned(), "*/*+json".to_owned()],
            NonJson::Reject => Vec::new(),
        };
        Some(ResponseBodies { statuses, media_types })
    }

    fn descriptor() -> Descriptor {
        Descriptor::new().with_request_body().with_response_body()
    }

    /// Only the directions with rules run, and a body is asked for only where a body rule is;
    /// fixed rules need no call at all.
    fn configured_descriptor(&self) -> Descriptor {
        if self.fixed {
            return Descriptor::default().with_on_request(false).with_on_response(false);
        }
        Descriptor {
            on_request: !self.request.is_empty() || self.response_from_request,
            on_response: !self.response.is_empty() && !self.response_from_request,
            request_body: self.request.body.needs_body(),
            response_body: self.response.body.needs_body(),
        }
    }

    fn on_request(&self, req: &Request) -> Action {
        // First, so a refused body still gets them, as it would from on-response.
        if self.response_from_request {
            self.response.headers.apply_to_response(req, req);
        }
        let rules = &self.request;
        if rules.body.needs_body()
            && let Some(refused) = transform_request_body(&rules.body, req)
        {
            return refused;
        }
        if let Some(path) = &rules.path {
            let path = path.expand(req);
            req.set_path(&path);
            // The gateway normalizes a path a plugin sets as it does a client's, and ignores one
            // it refuses. A value that is empty, `.` or `..` (or hides one behind `/`) would so
            // move the request to another path or leave it on the client's: refused here.
            if req.path() != path {
                return Action::error(
                    400,
                    "bad_request",
                    "the upstream path cannot be built from this request: a value in it is empty, `.` or `..`, or hides one",
                    &req.request_id(),
                );
            }
        }
        if !rules.query.is_empty() {
            let query = rules.query.apply(req.query().as_deref(), req);
            req.set_query(query.as_deref());
        }
        if !rules.headers.is_empty() {
            rules.headers.apply(req, req);
        }
        Action::Continue
    }

    fn on_response(&self, req: &Request, resp: &Response) {
        let rules = &self.response;
        if self.response_from_request {
            return;
        }
        if rules.body.needs_body() {
            transform_response_body(&rules.body, req, resp);
        }
        if !rules.headers.is_empty() {
            rules.headers.apply(resp, req);
        }
    }
}

/// Applies the body rules to the request body; `Some` is the answer refusing the request.
fn transform_request_body(rules: &BodyRules, req: &Request) -> Option<Action> {
    let body = req.body()?;
    // An empty `content-type` says no more than none: taken as none.
    let content_type = req.header_str("content-type").filter(|ct| !ct.trim().is_empty());
    let mut warnings = Vec::new();
    let outcome = rules.transform(&body, content_type.as_deref(), req, &mut warnings);
    log_warnings("request", &warnings);
    match outcome {
        Outcome::Unchanged => None,
        Outcome::Changed(json) => {
            req.set_body(json);
            if content_type.is_none() {
                req.set_header("content-type", "application/json");
            }
            None
        }
        Outcome::NotJson(ct) => Some(Action::error(
            415,
            "unsupported_media_type",
            &format!("this route takes a JSON request body (content-type `application/json`), not `{ct}`"),
            &req.request_id(),
        )),
        Outcome::Invalid(why) => Some(Action::error(
            400,
            "invalid_json",
            &format!("the request body is not valid JSON: {why}"),
            &req.request_id(),
        )),
    }
}

/// Applies the body rules to the response body; a body that cannot be transformed becomes a 502.
fn transform_response_body(rules: &BodyRules, req: &Request, resp: &Response) {
    if !rules.applies_to(resp.status()) {
        return;
    }
    let Some(body) = resp.body() else { return };
    let content_type = resp.header_str("content-type").filter(|ct| !ct.trim().is_empty());
    let mut warnings = Vec::new();
    let outcome = rules.transform(&body, content_type.as_deref(), req, &mut warnings);
    log_warnings("response", &warnings);
    let (code, message) = match outcome {
        Outcome::Unchanged => return,
        Outcome::Changed(json) => {
            resp.set_body(json);
            // Validators of the upstream's bytes do not describe the changed body.
            resp.remove_header("etag");
            resp.remove_header("content-md5");
            if content_type.is_none() {
                resp.set_header("content-type", "application/json");
            }
            return;
        }
        Outcome::NotJson(ct) => {
            ("upstream_not_json", format!("the upstream answered `{ct}`, but this route transforms JSON response bodies"))
        }
        Outcome::Invalid(why) => ("upstream_invalid_json", format!("the upstream's response body is not valid JSON: {why}")),
    };
    airlock_sdk::log::warn(&message);
    resp.replace_with_json(502, &airlock_sdk::error_json(502, code, &message, &req.request_id()));
}

fn log_warnings(direction: &str, warnings: &[String]) {
    for warning in warnings {
        airlock_sdk::log::warn(format!("{direction} body: {warning}"));
    }
}

#[cfg(target_arch = "wasm32")]
airlock_sdk::export_plugin!(Transform);

#[cfg(test)]
mod tests {
    use airlock_sdk::template::MapSource;

    use super::*;

    fn configure(json: &str) -> Result<Transform, String> {
        airlock_sdk::configure::<Transform>(json)
    }

    #[test]
    fn body_access_is_asked_for_only_where_a_body_rule_is() {
        let d = configure(r#"{"request": {"path": "/v2", "headers": {"add": {"x-a": "1"}}}}"#).unwrap().configured_descriptor();
        assert_eq!((d.on_request, d.request_body, d.on_response, d.response_body), (true, false, false, false));
        let d = configure(r#"{"response": {"body": {"remove": ["**.token"]}}}"#).unwrap().configured_descriptor();
        assert_eq!((d.on_request, d.request_body, d.on_response, d.response_body), (false, false, true, true));
        let d = configure(r#"{"request": {"body": {"non_json": "reject"}, "path": "/x"}}"#).unwrap().configured_descriptor();
        assert_eq!((d.on_request, d.request_body), (true, true), "rejecting non-JSON needs the body");
        let d = configure(r#"{"request": {"body": {"non_json": "pass"}}}"#).unwrap().configured_descriptor();
        assert_eq!((d.on_request, d.request_body), (false, false), "passing everything needs nothing");
    }

    #[test]
    fn settled_response_header_rules_are_made_from_the_request_phase() {
        let phases = |json: &str| {
            let d = configure(json).unwrap().configured_descriptor();
            (d.on_request, d.on_response)
        };
        // Beside a request rule only a call can make (alone, they would be fixed edits).
        assert_eq!(phases(r#"{"request": {"path": "/v2"}, "response": {"headers": {"set": {"x-r": "${route}"}, "remove": ["server"]}}}"#), (true, false));
        assert_eq!(phases(r#"{"request": {"path": "/v2"}, "response": {"headers": {"set": {"x-c": "${context.consumer}"}}}}"#), (true, true));
        assert_eq!(
            phases(r#"{"response": {"headers": {"set": {"x-a": "1"}}, "body": {"remove": ["token"]}}}"#),
            (false, true),
            "with body rules the headers follow the body in on-response"
        );
    }

    #[test]
    fn header_rules_alone_the_gateway_can_make_are_fixed_edits_and_no_phase_is_called() {
        use airlock_sdk::{RequestEdit, ResponseEdit};
        let fixed = configure(
            r#"{"request": {"headers": {"remove": ["x-secret"], "set": {"x-a": "1", "x-user": "${param.id}"}}}, "response": {"headers": {"append": {"x-b": "2"}}}}"#,
        )
        .unwrap();
        let d = fixed.configured_descriptor();
        assert!(!d.on_request && !d.on_response && !d.request_body && !d.response_body, "{d:?}");
        let edits = fixed.templated_fixed_edits();
        assert_eq!(edits.len(), 4);
        assert_eq!(edits[0], FixedEdit::Same(RequestEdit::RemoveHeader("x-secret")));
        assert_eq!(edits[1], FixedEdit::Same(RequestEdit::SetHeader("x-a", b"1")));
        assert!(matches!(edits[2], FixedEdit::SetHeader("x-user", _)), "built by the gateway from each request");
        assert_eq!(edits[3], FixedEdit::Same(RequestEdit::Response(ResponseEdit::Append("x-b", b"2"))));
        // A header rule that looks at the request to decide what to write is made there too.
        let deciding = configure(r#"{"request": {"headers": {"add": {"x-a": "1"}, "rename": {"x-b": "x-c"}}}}"#).unwrap();
        assert!(matches!(deciding.templated_fixed_edits()[..], [FixedEdit::RenameHeader("x-b", "x-c"), FixedEdit::AddHeader("x-a", _)]));
        assert!(!deciding.configured_descriptor().on_request);
        // Any other rule keeps the calls.
        for json in [
            r#"{"request": {"headers": {"set": {"x-a": "1"}}, "path": "/v2"}}"#,
            r#"{"request": {"headers": {"set": {"x-a": "1"}}, "query": {"set": {"v": "2"}}}}"#,
            r#"{"request": {"headers": {"set": {"x-a": "1"}}, "body": {"remove": ["a"]}}}"#,
            r#"{"request": {"headers": {"set": {"x-a": "1"}}}, "response": {"body": {"remove": ["a"]}}}"#,
        ] {
            let called = configure(json).unwrap();
            assert!(called.templated_fixed_edits().is_empty(), "{json}");
            let d = called.configured_descriptor();
            assert!(d.on_request || d.on_response, "{json}: {d:?}");
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |json: &str| configure(json).unwrap_err();
        assert_eq!(
            err(r#"{"request": {"body": {"set": {"a..b": 1}}}}"#),
            "`request.body.set.a..b`: `a..b` has an empty segment: write `a.b` (a JSON Pointer, `/a/b`, for keys holding dots)"
        );
        assert_eq!(
            err(r#"{"response": {"body": {"unwrapp": "data"}}}"#),
            "`response.body.unwrapp`: unknown field `unwrapp`, expected one of `unwrap`, `remove`, `rename`, `move`, `copy`, `set`, `add`, `wrap`, `non_json`, `statuses`"
        );
        assert_eq!(
            err(r#"{"request": {"body": {"unwrap": "data", "statuses": [200]}}}"#),
            "`request.body.statuses`: a request has no status; `statuses` is for `response.body`"
        );
        assert!(err(r#"{"response": {"body": {"unwrap": "data", "statuses": [600]}}}"#).contains("600 is not a status code"));
        assert!(err(r#"{"response": {"body": {"unwrap": "data", "statuses": ["20x"]}}}"#).contains("`20x` is not a status class"));
        let ok = configure(r#"{"response": {"body": {"unwrap": "data", "statuses": ["2xx", 404]}}}"#).unwrap();
        assert!(ok.response.body.applies_to(201) && ok.response.body.applies_to(404));
        assert!(!ok.response.body.applies_to(503) && !ok.response.body.applies_to(400));
        assert_eq!(
            err(r#"{"request": {"body": {"set": {"user.id": "${params.id}"}}}}"#),
            "`request.body.set.user.id`: unknown variable `${params.id}`: expected ${context.KEY}, ${param.NAME}, ${header.NAME}, ${query.NAME}, ${request_id}, ${route} or ${client_ip}"
        );
        assert_eq!(err(r#"{"request": {"path": "v2/x"}}"#), "`request.path`: `v2/x`: a path starts with `/`");
        assert!(err(r#"{"request": {"path": "/x?a=1"}}"#).contains("set query parameters with `request.query`"));
        assert_eq!(
            err(r#"{"response": {"body": {"wrap": "a.*"}}}"#),
            "`response.body.wrap`: `a.*`: wildcards (`*`, `**`) are only allowed in `remove` and `rename`, which act on every match"
        );
        assert_eq!(
            err(r#"{"request": {"headers": {"rename": {"x-a": "X-A"}}}}"#),
            "`request.headers.rename.x-a`: renames `x-a` to itself"
        );
        assert_eq!(
            err(r#"{"response": {"path": "/x"}}"#),
            "`response.path`: unknown field `path`, expected `headers` or `body`"
        );
        assert_eq!(
            err(r#"{"request": {"body": {"rename": {"**.pwd": "a.b"}}}}"#),
            "`request.body.rename.**.pwd`: `a.b` is a path, but `rename` gives the field a new name in the same place: use `move` to move a field elsewhere"
        );
    }

    #[test]
    fn path_variables_are_encoded_as_one_segment() {
        let p = configure(r#"{"request": {"path": "/v2/users/${param.id}/x"}}"#).unwrap();
        assert_eq!(p.request.path.unwrap().expand(&MapSource::default().param("id", "a b/c")), "/v2/users/a%20b%2Fc/x");
    }

    #[test]
    fn path_variable_cannot_climb_out_with_dot_segments() {
        // Found by the `template` fuzz target: a param `..` (from `/users/%2e%2e`) was put into the
        // path as is, and the upstream resolves `/v2/users/../x` to `/v2/x`.
        let p = configure(r#"{"request": {"path": "/v2/users/${param.id}/x"}}"#).unwrap().request.path.unwrap();
        assert_eq!(p.expand(&MapSource::default().param("id", "..")), "/v2/users/%2E%2E/x");
        assert_eq!(p.expand(&MapSource::default().param("id", ".")), "/v2/users/%2E/x");
        assert_eq!(p.expand(&MapSource::default().param("id", "..a")), "/v2/users/..a/x");
    }
}
