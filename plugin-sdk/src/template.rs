//! Templates: literal text with `${...}` variables taken from the request, parsed once at
//! configure and expanded per request. Shared by the built-in plugins that write values from
//! config (`builtin:headers`, `builtin:transform`), so every plugin understands the same variables:
//!
//! | variable            | expands to                                              |
//! |---------------------|---------------------------------------------------------|
//! | `${context.KEY}`    | the request context value `KEY`                         |
//! | `${param.NAME}`     | the route parameter `NAME` (`/users/{id}` gives `id`)    |
//! | `${header.NAME}`    | the first value of the *request* header `NAME`          |
//! | `${query.NAME}`     | the first value of query parameter `NAME`, decoded       |
//! | `${request_id}`     | the gateway's request id                                 |
//! | `${route}`          | the id of the route that matched                         |
//! | `${client_ip}`      | the client's IP ([`Request::client_ip`]: behind `trusted_proxies`, the one they vouch for) |
//!
//! `$${` is a literal `${` (before a `{`, each `$$` is one literal `$`, so `$$${param.id}` is a
//! `$` then the parameter); any other `$` is literal. A variable without a value expands to
//! nothing.
//!
//! ```
//! use airlock_sdk::template::Template;
//!
//! let t = Template::parse("user-${param.id}").unwrap();
//! assert!(!t.is_literal());
//! let err = Template::parse("${nope}").unwrap_err();
//! assert!(err.starts_with("unknown variable `${nope}`"));
//! ```
//!
//! In a plugin config, a `Template` field deserializes from a string and a malformed template is
//! a config error naming the key.

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer};

use crate::Request;
use crate::header_rules::header_name;

/// Where variables get their values: a [`Request`] (in both phases), or a fake one in tests.
pub trait Source {
    /// A request context value.
    fn context(&self, key: &str) -> Option<String>;
    /// A route parameter.
    fn param(&self, name: &str) -> Option<String>;
    /// The first value of a request header.
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    /// Every line of a request header, in order (by default the first only, for a source that
    /// holds one).
    fn header_lines(&self, name: &str) -> Vec<Vec<u8>> {
        self.header(name).into_iter().collect()
    }
    /// The first value of a query parameter, decoded.
    fn query(&self, name: &str) -> Option<String>;
    /// The request id.
    fn request_id(&self) -> String;
    /// The route id.
    fn route(&self) -> String;
    /// The client's IP (`${client_ip}`); none unless the source has one.
    fn client_ip(&self) -> String {
        String::new()
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as is.
    Literal(Vec<u8>),
    /// `${context.KEY}`.
    Context(String),
    /// `${param.NAME}`.
    Param(String),
    /// `${header.NAME}` (name lower-cased).
    Header(String),
    /// `${query.NAME}`.
    Query(String),
    /// `${request_id}`.
    RequestId,
    /// `${route}`.
    Route,
    /// `${client_ip}`: nginx's `$remote_addr` behind `real_ip` (an `X-Real-IP` to send upstream).
    ClientIp,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

const VARIABLES: &str = "${context.KEY}, ${param.NAME}, ${header.NAME}, ${query.NAME}, ${request_id}, ${route} or ${client_ip}";

impl Template {
    /// Parses `text`; the error says what is wrong and what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            rest = &rest[dollar..];
            let run = rest.len() - rest.trim_start_matches('$').len();
            let Some(after) = rest[run..].strip_prefix('{') else {
                // Dollars not followed by `{` are literal.
                literal.push_str(&rest[..run]);
                rest = &rest[run..];
                continue;
            };
            // Before a `{`, `$$` is a literal `$` and a last single `$` opens a variable.
            literal.push_str(&rest[..run / 2]);
            if run.is_multiple_of(2) {
                literal.push('{');
                rest = after;
                continue;
            }
            let Some(end) = after.find('}') else {
                return Err(format!(
                    "unclosed `${{` in `{text}`: close the variable with `}}`, or write `$${{` for a literal `${{`"
                ));
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal).into_bytes()));
            }
            parts.push(variable(&after[..end])?);
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal.into_bytes()));
        }
        Ok(Self { parts })
    }

    /// Parses `text` as a header value: as [`Template::parse`], and its literal text may hold no
    /// control character but tab.
    pub fn parse_header_value(text: &str) -> Result<Self, String> {
        let template = Self::parse(text)?;
        for part in &template.parts {
            if let Part::Literal(bytes) = part
                && let Some(bad) = String::from_utf8_lossy(bytes).chars().find(|&c| (c.is_control() && c != '\t') || c == '\u{7f}')
            {
                return Err(format!("a header value cannot contain the control character {bad:?}"));
            }
        }
        Ok(template)
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// True if the template has no variable (it always expands to the same text).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The text of a template with no variable, when it is one piece: borrowed by a caller
    /// that would otherwise expand it into a new copy for every request.
    pub fn as_literal(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(b""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// [`Template::expand`], but a literal's text is borrowed, not copied.
    pub fn expand_borrowed(&self, source: &impl Source) -> Cow<'_, [u8]> {
        self.as_literal().map_or_else(|| Cow::Owned(self.expand(source)), Cow::Borrowed)
    }

    /// True if the template expands to the same text at every point of a request's way through
    /// the chain: it reads only what no plugin can change (the route's params, the request id,
    /// the route, the client's IP), not headers, the query or the context, which later plugins
    /// may still set.
    pub fn is_settled_at_request(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_) | Part::Param(_) | Part::RequestId | Part::Route | Part::ClientIp))
    }

    /// Expands the template for one request.
    pub fn expand(&self, source: &impl Source) -> Vec<u8> {
        // The common cases, a constant or a single variable, without a second copy.
        if let [only] = self.parts.as_slice() {
            return expand_part(only, source);
        }
        self.expand_with(source, |value, out| out.extend_from_slice(value))
    }

    /// Expands the template as text; bytes that are not UTF-8 (in header values) become U+FFFD.
    pub fn expand_string(&self, source: &impl Source) -> String {
        String::from_utf8_lossy(&self.expand(source)).into_owned()
    }

    /// Expands the template, writing each variable's value through `encode` (literal text is
    /// copied as it is): for example to percent-encode values put into a path.
    pub fn expand_with(&self, source: &impl Source, mut encode: impl FnMut(&[u8], &mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Literal(bytes) => out.extend_from_slice(bytes),
                other => encode(&expand_part(other, source), &mut out),
            }
        }
        out
    }
}

impl<'de> Deserialize<'de> for Template {
    /// From a string, parsed with [`Template::parse`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse(&text).map_err(de::Error::custom)
    }
}

/// A [`Source`] holding fixed values: for unit-testing templates (and the plugins that expand
/// them) without a gateway.
///
/// ```
/// use airlock_sdk::template::{MapSource, Template};
///
/// let source = MapSource::default().param("id", "42").context("consumer", "alice");
/// let t = Template::parse("${context.consumer}/${param.id}").unwrap();
/// assert_eq!(t.expand_string(&source), "alice/42");
/// ```
#[derive(Debug, Clone, Default)]
pub struct MapSource {
    values: Vec<(&'static str, String, Vec<u8>)>,
}

impl MapSource {
    fn with(mut self, kind: &'static str, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.values.push((kind, name.to_owned(), value.as_ref().to_vec()));
        self
    }

    fn get(&self, kind: &str, name: &str) -> Option<Vec<u8>> {
        self.values.iter().find(|(k, n, _)| *k == kind && n == name).map(|(_, _, v)| v.clone())
    }

    fn text(&self, kind: &str, name: &str) -> Option<String> {
        self.get(kind, name).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// Adds a context value.
    pub fn context(self, key: &str, value: &str) -> Self {
        self.with("context", key, value)
    }

    /// Adds a route parameter.
    pub fn param(self, name: &str, value: &str) -> Self {
        self.with("param", name, value)
    }

    /// Adds a request header (raw bytes).
    pub fn header(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.with("header", name, value)
    }

    /// Adds a query parameter (decoded).
    pub fn query(self, name: &str, value: &str) -> Self {
        self.with("query", name, value)
    }

    /// Sets the request id.
    pub fn request_id(self, id: &str) -> Self {
        self.with("request_id", "", id)
    }

    /// Sets the route id.
    pub fn route(self, id: &str) -> Self {
        self.with("route", "", id)
    }

    /// Sets the client's IP.
    pub fn client_ip(self, ip: &str) -> Self {
        self.with("client_ip", "", ip)
    }
}

impl Source for MapSource {
    fn context(&self, key: &str) -> Option<String> {
        self.text("context", key)
    }
    fn param(&self, name: &str) -> Option<String> {
        self.text("param", name)
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.get("header", name)
    }
    fn query(&self, name: &str) -> Option<String> {
        self.text("query", name)
    }
    fn request_id(&self) -> String {
        self.text("request_id", "").unwrap_or_default()
    }
    fn route(&self) -> String {
        self.text("route", "").unwrap_or_default()
    }
    fn client_ip(&self) -> String {
        self.text("client_ip", "").unwrap_or_default()
    }
}

impl Source for Request {
    fn context(&self, key: &str) -> Option<String> {
        self.context_get(key)
    }
    fn param(&self, name: &str) -> Option<String> {
        Request::param(self, name)
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        Request::header(self, name)
    }
    fn header_lines(&self, name: &str) -> Vec<Vec<u8>> {
        self.header_all(name)
    }
    fn query(&self, name: &str) -> Option<String> {
        self.query_param(name)
    }
    fn request_id(&self) -> String {
        Request::request_id(self)
    }
    fn route(&self) -> String {
        self.route_id()
    }
    fn client_ip(&self) -> String {
        Request::client_ip(self)
    }
}

fn expand_part(part: &Part, source: &impl Source) -> Vec<u8> {
    match part {
        Part::Literal(bytes) => bytes.clone(),
        Part::Context(key) => source.context(key).map(String::into_bytes).unwrap_or_default(),
        Part::Param(name) => source.param(name).map(String::into_bytes).unwrap_or_default(),
        Part::Header(name) => source.header(name).unwrap_or_default(),
        Part::Query(name) => source.query(name).map(String::into_bytes).unwrap_or_default(),
        Part::RequestId => source.request_id().into_bytes(),
        Part::Route => source.route().into_bytes(),
        Part::ClientIp => source.client_ip().into_bytes(),
    }
}

/// Parses the inside of `${...}`.
fn variable(expr: &str) -> Result<Part, String> {
    match expr {
        "request_id" => return Ok(Part::RequestId),
        "route" => return Ok(Part::Route),
        "client_ip" => return Ok(Part::ClientIp),
        _ => {}
    }
    let Some((namespace, name)) = expr.split_once('.') else {
        return Err(if expr.is_empty() {
            format!("empty variable `${{}}`: expected {VARIABLES}")
        } else {
            format!("unknown variable `${{{expr}}}`: expected {VARIABLES}")
        });
    };
    let known = ["context", "param", "header", "query"];
    if !known.contains(&namespace) {
        return Err(format!("unknown variable `${{{expr}}}`: expected {VARIABLES}"));
    }
    if name.is_empty() {
        return Err(format!("`${{{expr}}}` names no {namespace}: write `${{{namespace}.NAME}}`"));
    }
    Ok(match namespace {
        "context" => Part::Context(name.to_owned()),
        "param" => Part::Param(name.to_owned()),
        "query" => Part::Query(name.to_owned()),
        _ => Part::Header(header_name(name).map_err(|e| format!("in `${{{expr}}}`: {e}"))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> MapSource {
        MapSource::default()
            .context("consumer", "alice")
            .param("id", "42")
            .header("user-agent", b"curl/8\xff")
            .query("q", "search me")
            .request_id("req-1")
            .route("users")
            .client_ip("203.0.113.7")
    }

    fn expand(text: &str) -> Vec<u8> {
        Template::parse(text).unwrap().expand(&fake())
    }

    #[test]
    fn literals_and_variables() {
        assert_eq!(Template::parse("plain").unwrap().parts(), [Part::Literal(b"plain".to_vec())]);
        assert_eq!(Template::parse("").unwrap().parts(), []);
        assert_eq!(
            Template::parse("user-${param.id}/${route}").unwrap().parts(),
            [Part::Literal(b"user-".to_vec()), Part::Param("id".into()), Part::Literal(b"/".to_vec()), Part::Route,]
        );
        assert_eq!(Template::parse("${header.User-Agent}").unwrap().parts(), [Part::Header("user-agent".into())]);
        assert_eq!(Template::parse("${context.a.b}").unwrap().parts(), [Part::Context("a.b".into())]);
    }

    #[test]
    fn expansion() {
        assert_eq!(expand("${param.id}"), b"42");
        assert_eq!(expand("id=${param.id};q=${query.q}"), b"id=42;q=search me");
        assert_eq!(expand("${context.consumer}@${route}#${request_id}"), b"alice@users#req-1");
        assert_eq!(expand("${client_ip}"), b"203.0.113.7");
        assert!(Template::parse("${client_ip}").unwrap().is_settled_at_request(), "no plugin changes the client's IP");
        assert_eq!(expand("${header.user-agent}"), b"curl/8\xff", "bytes are kept as they are");
        assert_eq!(expand("[${param.missing}][${context.nope}][${header.x}][${query.x}]"), b"[][][][]");
    }

    #[test]
    fn literals_are_lent_not_copied() {
        let borrowed = |text: &str| {
            let template = Template::parse(text).unwrap();
            (template.as_literal().map(<[u8]>::to_vec), matches!(template.expand_borrowed(&fake()), Cow::Borrowed(_)))
        };
        assert_eq!(borrowed("plain"), (Some(b"plain".to_vec()), true));
        assert_eq!(borrowed(""), (Some(Vec::new()), true));
        assert_eq!(borrowed("id-${param.id}"), (None, false));
        assert_eq!(Template::parse("id-${param.id}").unwrap().expand_borrowed(&fake()).as_ref(), b"id-42");
    }

    #[test]
    fn dollars() {
        assert_eq!(expand("$${param.id}"), b"${param.id}");
        assert_eq!(expand("$$${param.id}"), b"$42");
        assert_eq!(expand("$$$${param.id}"), b"$${param.id}");
        assert_eq!(expand("a$${b}c"), b"a${b}c");
        assert_eq!(expand("{}$"), b"{}$");
        assert_eq!(expand("cost: $5, $"), b"cost: $5, $");
        assert_eq!(expand("$$"), b"$$");
        assert_eq!(expand("${param.id}$"), b"42$");
    }

    #[test]
    fn malformed_templates_are_errors() {
        let err = |text: &str| Template::parse(text).unwrap_err();
        assert_eq!(
            err("x-${param.id"),
            "unclosed `${` in `x-${param.id`: close the variable with `}`, or write `$${` for a literal `${`"
        );
        assert_eq!(
            err("${}"),
            "empty variable `${}`: expected ${context.KEY}, ${param.NAME}, ${header.NAME}, ${query.NAME}, ${request_id}, ${route} or ${client_ip}"
        );
        assert!(err("${env.HOME}").starts_with("unknown variable `${env.HOME}`: expected ${context.KEY}"));
        assert!(err("${params.id}").starts_with("unknown variable `${params.id}`"));
        assert!(err("${request-id}").starts_with("unknown variable `${request-id}`"));
        assert!(err("${ param.id }").starts_with("unknown variable `${ param.id }`"));
        assert_eq!(err("${param.}"), "`${param.}` names no param: write `${param.NAME}`");
        assert!(err("${header.bad name}").starts_with("in `${header.bad name}`: invalid header name `bad name`"));
        assert_eq!(
            Template::parse_header_value("a\r\nb").unwrap_err(),
            "a header value cannot contain the control character '\\r'"
        );
        assert!(Template::parse("a\r\nb").is_ok(), "only header values refuse control characters");
    }
}
