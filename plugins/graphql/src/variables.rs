//! Operation variables: where each one comes from (route param, query parameter, header, JSON
//! body) and the type it is converted to.

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::{Map, Number, Value};

/// Where a variable's value is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    /// `param.NAME`: a route parameter.
    Param(String),
    /// `query.NAME`: a query parameter (decoded).
    Query(String),
    /// `header.NAME`: a request header.
    Header(String),
    /// `body` (the whole JSON body) or `body.PATH` (a dotted path, e.g. `body.user.name`), kept
    /// as a JSON Pointer.
    Body(String),
}

impl From {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "body" {
            return Ok(From::Body(String::new()));
        }
        let Some((namespace, name)) = text.split_once('.') else {
            return Err(format!("`{text}`: expected `param.NAME`, `query.NAME`, `header.NAME`, `body` or `body.PATH`"));
        };
        if name.is_empty() || name.split('.').any(str::is_empty) && namespace == "body" {
            return Err(format!("`{text}` names nothing after `{namespace}.`"));
        }
        match namespace {
            "param" => Ok(From::Param(name.to_owned())),
            "query" => Ok(From::Query(name.to_owned())),
            "header" => airlock_sdk::header_rules::header_name(name).map(From::Header),
            "body" => Ok(From::Body(pointer(name))),
            _ => Err(format!("`{text}`: expected `param.NAME`, `query.NAME`, `header.NAME`, `body` or `body.PATH`")),
        }
    }

    /// Describes the place for error messages (`query parameter `limit``).
    pub fn describe(&self) -> String {
        match self {
            From::Param(n) => format!("route parameter `{n}`"),
            From::Query(n) => format!("query parameter `{n}`"),
            From::Header(n) => format!("header `{n}`"),
            From::Body(p) if p.is_empty() => "the JSON body".to_owned(),
            From::Body(p) => format!("JSON body field `{}`", p[1..].replace('/', ".")),
        }
    }

    /// True if the value comes from the request body.
    pub fn is_body(&self) -> bool {
        matches!(self, From::Body(_))
    }
}

impl<'de> Deserialize<'de> for From {
    /// From a string such as `param.id`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        From::parse(&String::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

/// The GraphQL type a value is converted to before it is sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A string (`String`, `ID`), the default.
    #[default]
    String,
    /// An integer (`Int`).
    Int,
    /// A number (`Float`).
    Float,
    /// `true` / `false` (`Boolean`); text `true`, `false`, `1`, `0`.
    Bool,
    /// Any JSON value (input objects, lists); text is parsed as JSON.
    Json,
}

/// One variable's declaration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Where the value is read.
    pub from: From,
    /// The type it is converted to.
    #[serde(default, rename = "type")]
    pub kind: Kind,
    /// Used when the request has no value; without it a missing value is left out of
    /// `variables` (so the operation's own default applies), unless `required`.
    pub default: Option<Value>,
    /// A missing value is answered 400.
    #[serde(default)]
    pub required: bool,
}

/// A raw value read from the request: text (params, query, headers) or JSON (body).
#[derive(Debug)]
pub enum Raw {
    /// From a param, query parameter or header.
    Text(String),
    /// From the JSON body.
    Json(Value),
}

impl Kind {
    /// As the config spells it (`type = "int"`).
    pub fn config_name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Bool => "bool",
            Kind::Json => "json",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Int => "a 32-bit integer (GraphQL's `Int`)",
            Kind::Float => "a number",
            Kind::Bool => "a boolean (true or false)",
            Kind::Json => "JSON",
        }
    }

    /// Converts a raw value; the error says what was expected.
    pub fn convert(self, raw: Raw) -> Result<Value, String> {
        let shown = match &raw {
            Raw::Text(t) => format!("`{t}`"),
            Raw::Json(v) => format!("`{v}`"),
        };
        let converted = match (self, raw) {
            (Kind::Json, Raw::Json(v)) => Some(v),
            (Kind::Json, Raw::Text(t)) => serde_json::from_str(&t).ok(),
            (Kind::String, Raw::Text(t)) | (Kind::String, Raw::Json(Value::String(t))) => Some(Value::String(t)),
            (Kind::String, Raw::Json(n @ Value::Number(_))) => Some(Value::String(n.to_string())),
            // GraphQL's `Int` is 32 bits (spec 3.5.1): a server must refuse a wider one, so it is
            // refused here with the other conversion errors, naming the variable.
            (Kind::Int, Raw::Text(t)) | (Kind::Int, Raw::Json(Value::String(t))) => t.trim().parse::<i32>().ok().map(Value::from),
            (Kind::Int, Raw::Json(Value::Number(n))) => n.as_i64().and_then(|n| i32::try_from(n).ok()).map(Value::from),
            (Kind::Float, Raw::Text(t)) | (Kind::Float, Raw::Json(Value::String(t))) => {
                t.trim().parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number)
            }
            (Kind::Float, Raw::Json(Value::Number(n))) => Some(Value::Number(n)),
            (Kind::Bool, Raw::Text(t)) | (Kind::Bool, Raw::Json(Value::String(t))) => match t.trim() {
                "true" | "1" => Some(Value::Bool(true)),
                "false" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
            (Kind::Bool, Raw::Json(Value::Bool(b))) => Some(Value::Bool(b)),
            _ => None,
        };
        converted.ok_or_else(|| format!("{shown} is not {}", self.name()))
    }
}

/// The JSON Pointer for a dotted path (`user.name` gives `/user/name`).
pub fn pointer(dotted: &str) -> String {
    dotted.split('.').map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1"))).collect()
}

/// Looks up a body value by the pointer kept in [`From::Body`]; an explicit `null` is a value
/// (GraphQL tells it from an absent one: a mutation's `bio: null` clears the field).
pub fn body_value(body: &Value, pointer: &str) -> Option<Value> {
    body.pointer(pointer).cloned()
}

/// The one value of query parameter `name` in the raw query string `query`, decoded as
/// `application/x-www-form-urlencoded` like `Request::query_param`; a parameter given more than
/// once is an error (no variable type takes a list of them: which one was meant is ambiguous).
pub fn query_value(query: &str, name: &str) -> Result<Option<String>, String> {
    let mut values = query.split('&').filter(|pair| !pair.is_empty()).filter_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key) == name).then(|| form_decode(value))
    });
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        (_, Some(_)) => Err("given more than once; send one value".to_owned()),
    }
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space, `%XX` a byte (an invalid
/// escape is kept as it is), and the bytes are read as UTF-8 (lossily), as the gateway does.
fn form_decode(text: &str) -> String {
    if !text.contains(['%', '+']) {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%').then(|| hex_byte(text.get(i + 1..i + 3))).flatten();
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte of two hex digits (`from_str_radix` alone would also take `+1`).
fn hex_byte(hex: Option<&str>) -> Option<u8> {
    hex.filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit())).and_then(|h| u8::from_str_radix(h, 16).ok())
}

/// The variables object sent upstream, or the 400 message for the first bad or missing one.
/// `read` gives a variable's raw value, if the request has one, or why it cannot be read.
pub fn build(
    declared: &[(String, Variable)],
    mut read: impl FnMut(&From) -> Result<Option<Raw>, String>,
) -> Result<Map<String, Value>, String> {
    let mut variables = Map::new();
    for (name, variable) in declared {
        let raw = read(&variable.from).map_err(|why| format!("variable `{name}` from {}: {why}", variable.from.describe()))?;
        // An empty text value (`?posts=`) is no value for a typed variable: its default applies.
        let raw = raw.filter(|raw| !matches!((raw, variable.kind), (Raw::Text(t), kind) if t.is_empty() && kind != Kind::String));
        match raw {
            // An explicit JSON `null` is sent as null, whatever the type, over any default (as
            // GraphQL's own variable defaults are); a required variable needs a value.
            Some(Raw::Json(Value::Null)) if variable.required => {
                return Err(format!("variable `{name}` from {} is null, but it is required: send a value", variable.from.describe()));
            }
            Some(Raw::Json(Value::Null)) => {
                variables.insert(name.clone(), Value::Null);
            }
            Some(raw) => {
                let value = variable
                    .kind
                    .convert(raw)
                    .map_err(|why| format!("variable `{name}` from {}: {why}", variable.from.describe()))?;
                variables.insert(name.clone(), value);
            }
            None => match (&variable.default, variable.required) {
                (Some(default), _) => {
                    variables.insert(name.clone(), default.clone());
                }
                (None, true) => {
                    return Err(format!("variable `{name}` is required: send {}", variable.from.describe()));
                }
                (None, false) => {}
            },
        }
    }
    Ok(variables)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sources_parse_and_describe_themselves() {
        assert_eq!(From::parse("param.id").unwrap(), From::Param("id".into()));
        assert_eq!(From::parse("header.X-Token").unwrap(), From::Header("x-token".into()));
        assert_eq!(From::parse("body").unwrap(), From::Body(String::new()));
        assert_eq!(From::parse("body.user.a/b").unwrap(), From::Body("/user/a~1b".into()));
        assert_eq!(From::parse("body.items.0").unwrap().describe(), "JSON body field `items.0`");
        assert!(From::parse("cookie.x").unwrap_err().contains("expected `param.NAME`"));
        assert!(From::parse("query.").unwrap_err().contains("names nothing"));
        assert!(From::parse("header.a b").unwrap_err().starts_with("invalid header name `a b`"));
        assert!(From::parse("body.a..b").unwrap_err().contains("names nothing"));
    }

    #[test]
    fn values_convert_to_their_declared_types() {
        let text = |k: Kind, t: &str| k.convert(Raw::Text(t.into()));
        assert_eq!(text(Kind::Int, "42"), Ok(json!(42)));
        assert_eq!(text(Kind::Int, "4.2").unwrap_err(), "`4.2` is not a 32-bit integer (GraphQL's `Int`)");
        assert_eq!(text(Kind::Int, "2147483647"), Ok(json!(2147483647)));
        assert_eq!(text(Kind::Int, "-2147483648"), Ok(json!(-2147483648)));
        assert!(text(Kind::Int, "2147483648").is_err(), "past GraphQL's Int, which a server must refuse");
        assert_eq!(text(Kind::Float, "4.5"), Ok(json!(4.5)));
        assert_eq!(text(Kind::Bool, "1"), Ok(json!(true)));
        assert_eq!(text(Kind::Bool, "yes").unwrap_err(), "`yes` is not a boolean (true or false)");
        assert_eq!(text(Kind::Json, r#"{"a":[1]}"#), Ok(json!({"a": [1]})));
        assert_eq!(text(Kind::String, "x y"), Ok(json!("x y")));
        let body = |k: Kind, v: Value| k.convert(Raw::Json(v));
        assert_eq!(body(Kind::Int, json!(7)), Ok(json!(7)));
        assert!(body(Kind::Int, json!(99_999_999_999_i64)).is_err());
        assert_eq!(body(Kind::Int, json!("7")), Ok(json!(7)));
        assert_eq!(body(Kind::String, json!(7)), Ok(json!("7")));
        assert_eq!(body(Kind::String, json!({"a": 1})).unwrap_err(), "`{\"a\":1}` is not a string");
        assert_eq!(body(Kind::Bool, json!(false)), Ok(json!(false)));
    }

    #[test]
    fn missing_values_use_defaults_or_are_required() {
        let declared: Vec<(String, Variable)> = serde_json::from_value::<Vec<(String, Variable)>>(json!([
            ["id", {"from": "param.id", "type": "int"}],
            ["limit", {"from": "query.limit", "type": "int", "default": 10}],
            ["after", {"from": "query.after"}],
            ["token", {"from": "header.x-token", "required": true}]
        ]))
        .unwrap();
        let all = build(&declared, |from| {
            Ok(match from {
                From::Param(_) => Some(Raw::Text("5".into())),
                From::Header(_) => Some(Raw::Text("t".into())),
                _ => None,
            })
        })
        .unwrap();
        assert_eq!(Value::Object(all), json!({"id": 5, "limit": 10, "token": "t"}));
        let err = build(&declared, |from| Ok(matches!(from, From::Param(_)).then(|| Raw::Text("5".into())))).unwrap_err();
        assert_eq!(err, "variable `token` is required: send header `x-token`");
        let err = build(&declared, |_| Ok(Some(Raw::Text("x".into())))).unwrap_err();
        assert_eq!(err, "variable `id` from route parameter `id`: `x` is not a 32-bit integer (GraphQL's `Int`)");
        // `?limit=` is no value for an int: the default; for a string, the empty string.
        let empty = build(&declared, |from| {
            Ok(match from {
                From::Param(_) => Some(Raw::Text("5".into())),
                From::Header(_) => Some(Raw::Text("t".into())),
                From::Query(_) => Some(Raw::Text(String::new())),
                From::Body(_) => None,
            })
        })
        .unwrap();
        assert_eq!(Value::Object(empty), json!({"id": 5, "limit": 10, "after": "", "token": "t"}));
    }

    #[test]
    fn a_query_parameter_is_decoded_and_given_once() {
        assert_eq!(query_value("a=1&posts=x+y%21&b", "posts"), Ok(Some("x y!".into())));
        assert_eq!(query_value("flag&a=1", "flag"), Ok(Some(String::new())));
        assert_eq!(query_value("p%6Fsts=2&&a=%zz%+1%2", "posts"), Ok(Some("2".into())), "the name is decoded too");
        assert_eq!(query_value("a=%zz%+1%2", "a"), Ok(Some("%zz% 1%2".into())), "invalid escapes are kept");
        assert_eq!(query_value("a=%C3%A9%FF", "a"), Ok(Some("é\u{fffd}".into())));
        assert_eq!(query_value("a=1", "posts"), Ok(None));
        let twice = Err("given more than once; send one value".to_owned());
        assert_eq!(query_value("posts=1&posts=2", "posts"), twice);
        assert_eq!(query_value("posts=1&p%6Fsts=1", "posts"), twice, "even with the same value, however written");
        assert_eq!(query_value("posts&posts=", "posts"), twice);
        // As an error of the variable read from it, naming the parameter.
        let declared: Vec<(String, Variable)> = serde_json::from_value(json!([["posts", {"from": "query.posts", "type": "json"}]])).unwrap();
        let err = build(&declared, |_| query_value("posts=[1]&posts=[2]", "posts").map(|v| v.map(Raw::Text))).unwrap_err();
        assert_eq!(err, "variable `posts` from query parameter `posts`: given more than once; send one value");
    }

    /// An explicit `null` in the body is sent as null (over a default, as GraphQL's own defaults
    /// are); absent is still absent. Before, null was taken for absent: a mutation could not
    /// clear a field.
    #[test]
    fn an_explicit_null_in_the_body_is_sent_as_null() {
        let declared: Vec<(String, Variable)> = serde_json::from_value(json!([
            ["bio", {"from": "body.bio"}],
            ["posts", {"from": "body.posts", "type": "int", "default": 3}],
            ["name", {"from": "body.name", "required": true}]
        ]))
        .unwrap();
        let body = json!({"bio": null, "posts": null, "name": "ann"});
        let read = |body: &Value| {
            let body = body.clone();
            move |from: &From| Ok(match from {
                From::Body(pointer) => body_value(&body, pointer).map(Raw::Json),
                _ => None,
            })
        };
        assert_eq!(Value::Object(build(&declared, read(&body)).unwrap()), json!({"bio": null, "posts": null, "name": "ann"}));
        assert_eq!(Value::Object(build(&declared, read(&json!({"name": "ann"}))).unwrap()), json!({"posts": 3, "name": "ann"}), "absent is not null");
        let err = build(&declared, read(&json!({"name": null}))).unwrap_err();
        assert_eq!(err, "variable `name` from JSON body field `name` is null, but it is required: send a value");
    }
}
