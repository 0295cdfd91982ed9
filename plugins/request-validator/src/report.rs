//! What a refused request is told: the failures found, at most [`MAX_ERRORS`] of them listed.

use serde_json::{Map, Value, json};

/// The most failures listed in a 400's `errors`; the rest are counted in `errors_omitted`.
pub const MAX_ERRORS: usize = 10;

/// The part of the request a failure is in: the `in` of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The JSON body.
    Body,
    /// A query parameter.
    Query,
    /// A request header.
    Header,
    /// A parameter captured by the route's path pattern.
    Path,
}

impl Place {
    /// The name written in errors and config: `body`, `query`, `header`, `path`.
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Body => "body",
            Place::Query => "query",
            Place::Header => "header",
            Place::Path => "path",
        }
    }
}

/// One thing wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Where: the body or a kind of parameter.
    pub place: Place,
    /// The parameter's name (`None` for the body).
    pub name: Option<String>,
    /// A JSON Pointer to the failing value in the body or converted parameter (`""`: all of it).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
    /// The headline used as the response's `message` when this failure is the first, when the
    /// message alone says it all (`request body is required`).
    headline: Option<String>,
}

impl Failure {
    /// A failure of the body at `pointer`.
    pub fn body(pointer: String, message: String) -> Self {
        Self { place: Place::Body, name: None, pointer, message, headline: None }
    }

    /// A failure of a parameter (at `pointer` in its converted value).
    pub fn parameter(place: Place, name: &str, pointer: String, message: String) -> Self {
        Self { place, name: Some(name.to_owned()), pointer, message, headline: None }
    }

    /// The body is missing (or blank) and `body_required` is on.
    pub fn body_required() -> Self {
        let message = "request body is required".to_owned();
        Self { headline: Some(message.clone()), ..Self::body(String::new(), message) }
    }

    /// The body does not parse as JSON.
    pub fn invalid_json(error: &serde_json::Error) -> Self {
        let message = format!("the request body is not valid JSON: {error}");
        Self { headline: Some(message.clone()), ..Self::body(String::new(), message) }
    }

    /// An object of the body (at `pointer`) has `key` more than once.
    pub fn duplicate_key(pointer: String, key: &str) -> Self {
        const SHOWN: usize = 100;
        let mut shown: String = key.chars().take(SHOWN).collect();
        if shown.len() < key.len() {
            shown.push('…');
        }
        let shown = serde_json::to_string(&shown).unwrap_or_default();
        Self::body(crate::schema::clip(pointer, crate::schema::MAX_POINTER), format!("the key {shown} is given more than once in this object"))
    }

    /// A required parameter is not in the request.
    pub fn missing(place: Place, name: &str) -> Self {
        let headline = format!("missing required {} parameter `{name}`", place.as_str());
        Self { headline: Some(headline), ..Self::parameter(place, name, String::new(), "required parameter is missing".to_owned()) }
    }

    /// One line saying where and what: `query parameter `limit`: want integer, but got string`.
    pub fn summary(&self) -> String {
        if let Some(headline) = &self.headline {
            return headline.clone();
        }
        let at = if self.pointer.is_empty() { String::new() } else { format!(" at `{}`", self.pointer) };
        match &self.name {
            None => format!("request body{at}: {}", self.message),
            Some(name) => format!("{} parameter `{name}`{at}: {}", self.place.as_str(), self.message),
        }
    }

    /// The failure as listed in `errors`.
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("in".into(), self.place.as_str().into());
        if let Some(name) = &self.name {
            out.insert("name".into(), name.as_str().into());
        }
        out.insert("pointer".into(), self.pointer.as_str().into());
        out.insert("message".into(), self.message.as_str().into());
        Value::Object(out)
    }
}

/// The failures of one request: every one counted, the first [`MAX_ERRORS`] kept.
#[derive(Debug, Default)]
pub struct Failures {
    kept: Vec<Failure>,
    total: usize,
}

impl Failures {
    /// Counts a failure, and keeps it while fewer than [`MAX_ERRORS`] are.
    pub fn push(&mut self, failure: Failure) {
        self.push_with(|| failure);
    }

    /// Counts a failure, making it only if it is kept (messages cost a little to write).
    pub fn push_with(&mut self, failure: impl FnOnce() -> Failure) {
        self.total += 1;
        if self.kept.len() < MAX_ERRORS {
            self.kept.push(failure());
        }
    }

    /// No failure found.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many were found.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The ones kept, in the order found.
    pub fn kept(&self) -> &[Failure] {
        &self.kept
    }

    /// The 400 body in the gateway's error format (`error: invalid_request`): with `verbose`,
    /// the first failure as `message` and the kept ones under `errors` (and `errors_omitted`
    /// when more were found); without, only `request validation failed`.
    pub fn response_body(&self, request_id: &str, verbose: bool) -> Value {
        let first = self.kept.first().filter(|_| verbose);
        let message = match first {
            None => "request validation failed".to_owned(),
            Some(first) if self.total == 1 => first.summary(),
            Some(first) => format!("{} (and {} more)", first.summary(), self.total - 1),
        };
        let mut body = airlock_sdk::error_json(400, "invalid_request", &message, request_id);
        if let (true, Value::Object(fields)) = (verbose, &mut body) {
            fields.insert("errors".into(), self.kept.iter().map(Failure::to_json).collect());
            if self.total > self.kept.len() {
                fields.insert("errors_omitted".into(), json!(self.total - self.kept.len()));
            }
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_ten_are_listed_and_the_rest_counted() {
        let mut failures = Failures::default();
        for i in 0..25 {
            failures.push_with(|| Failure::body(format!("/{i}"), "want integer, but got string".into()));
        }
        assert_eq!((failures.total(), failures.kept().len()), (25, MAX_ERRORS));
        let body = failures.response_body("req-1", true);
        assert_eq!(body["status"], 400);
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["errors"].as_array().map(Vec::len), Some(10));
        assert_eq!(body["errors"][9], json!({"in": "body", "pointer": "/9", "message": "want integer, but got string"}));
        assert_eq!(body["errors_omitted"], 15);
        assert_eq!(body["message"], "request body at `/0`: want integer, but got string (and 24 more)");
        // Past the cap, failures are only counted: they are never made.
        failures.push_with(|| unreachable!("not made"));
        assert_eq!(failures.total(), 26);
    }

    #[test]
    fn not_verbose_says_nothing_of_the_schema() {
        let mut failures = Failures::default();
        failures.push(Failure::parameter(Place::Query, "limit", String::new(), "must be <=100, but got 1000".into()));
        let body = failures.response_body("r", false);
        assert_eq!(body, json!({"status": 400, "error": "invalid_request", "message": "request validation failed", "request_id": "r"}));
        let body = failures.response_body("r", true);
        assert_eq!(body["message"], "query parameter `limit`: must be <=100, but got 1000");
        assert_eq!(body["errors"], json!([{"in": "query", "name": "limit", "pointer": "", "message": "must be <=100, but got 1000"}]));
        assert!(body.get("errors_omitted").is_none());
    }

    #[test]
    fn summaries_say_where() {
        assert_eq!(Failure::body_required().summary(), "request body is required");
        assert_eq!(Failure::missing(Place::Header, "X-Version").summary(), "missing required header parameter `X-Version`");
        assert_eq!(Failure::missing(Place::Path, "id").message, "required parameter is missing");
        assert_eq!(Failure::body(String::new(), "want object, but got array".into()).summary(), "request body: want object, but got array");
        let item = Failure::parameter(Place::Query, "tag", "/1".into(), "want integer, but got string".into());
        assert_eq!(item.summary(), "query parameter `tag` at `/1`: want integer, but got string");
        let err = serde_json::from_str::<Value>("{").unwrap_err();
        assert!(Failure::invalid_json(&err).summary().starts_with("the request body is not valid JSON: EOF"));
    }
}
