//! `parameters`: query, header and path parameters, their values converted from the wire's
//! strings to what their schema's `type` says (as OpenAPI does) before they are validated.

use serde::Deserialize;
use serde_json::{Number, Value};

use crate::report::{Failure, Failures, Place};
use crate::schema::{Document, Schema};

/// A parameter as configured.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterConfig {
    /// The parameter's name (a header's in any case).
    pub name: String,
    /// `query`, `header` or `path`.
    #[serde(rename = "in")]
    pub location: Location,
    /// Whether a request without it is refused (path parameters always are).
    pub required: Option<bool>,
    /// Its JSON Schema (inline, JSON text or `file:`); none: only presence is checked.
    pub schema: Option<Value>,
}

/// Where a parameter is: the config's `in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// The query string (`?name=value`), form-decoded.
    Query,
    /// A request header.
    Header,
    /// A parameter the route's path pattern captures (`/users/{id}`).
    Path,
}

impl Location {
    /// As a place in errors.
    pub fn place(self) -> Place {
        match self {
            Location::Query => Place::Query,
            Location::Header => Place::Header,
            Location::Path => Place::Path,
        }
    }
}

/// A configured parameter, checked and compiled.
#[derive(Debug)]
pub struct Parameter {
    /// The name as configured.
    pub name: String,
    /// Where it is.
    pub location: Location,
    /// Refused when absent.
    pub required: bool,
    /// What its values are converted to.
    pub shape: Shape,
    /// Its compiled schema.
    pub schema: Option<Schema>,
}

impl Parameter {
    /// Checks and compiles `parameters[index]`.
    pub fn from_config(index: usize, config: ParameterConfig) -> Result<Self, String> {
        let key = format!("parameters[{index}]");
        if config.name.is_empty() {
            return Err(format!("`{key}.name`: empty name"));
        }
        if config.location == Location::Header && !config.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
            return Err(format!("`{key}.name`: `{}` is not a header name", config.name));
        }
        if config.location == Location::Path && config.required == Some(false) {
            return Err(format!("`{key}.required`: a path parameter is always required (the route's path captures it); leave `required` out"));
        }
        let (shape, schema) = match config.schema {
            None => (Shape::default(), None),
            Some(raw) => {
                let key = format!("{key}.schema");
                let document = Document::read(&key, raw)?;
                let schema = Schema::compile(&key, &document)?;
                (Shape::of(&document.value), Some(schema))
            }
        };
        let required = config.location == Location::Path || config.required.unwrap_or(false);
        Ok(Self { name: config.name, location: config.location, required, shape, schema })
    }

    /// The (name, location) pair two parameters may not share: header names in lower case.
    pub fn identity(&self) -> (String, Location) {
        match self.location {
            Location::Header => (self.name.to_ascii_lowercase(), self.location),
            _ => (self.name.clone(), self.location),
        }
    }

    /// Checks the parameter's values as found in the request (each occurrence; empty: absent).
    pub fn check(&self, values: &[String], failures: &mut Failures) {
        let place = self.location.place();
        if values.is_empty() {
            if self.required {
                failures.push(Failure::missing(place, &self.name));
            }
            return;
        }
        let value = match self.shape.convert(self.location, values) {
            Ok(value) => value,
            Err(message) => {
                failures.push(Failure::parameter(place, &self.name, String::new(), message));
                return;
            }
        };
        if let Some(schema) = &self.schema {
            schema.check(&value, failures, &|pointer, message| Failure::parameter(place, &self.name, pointer, message));
        }
    }
}

/// What a scalar string may become, tried in the order the schema's `type` lists them; a value
/// none of them takes stays a string (so the schema reports the type it wanted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// `integer` or `number`: a JSON number (`42`, `-1.5`, `1e3`).
    Number,
    /// `boolean`: `true` or `false`.
    Boolean,
}

/// How a parameter's values are converted: from the schema's `type` (and, for an array,
/// `items` / `prefixItems`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// The scalar conversions, in order.
    scalars: Vec<Scalar>,
    /// The value is an array of these, by index (`prefixItems`, then `items`).
    array: Option<Items>,
}

/// The conversions of an array's items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Items {
    /// The first items' (`prefixItems`, or draft 4-2019 `items` as a list).
    prefix: Vec<Vec<Scalar>>,
    /// The other items'.
    rest: Vec<Scalar>,
}

impl Shape {
    /// The shape a schema describes. Its `type` is read at its top, or at the target of a
    /// local `$ref` there (`#/$defs/id`); a schema without one takes strings.
    pub fn of(root: &Value) -> Self {
        let top = types(root, root);
        let array = top.iter().any(|t| t == "array").then(|| {
            let schema = resolve(root, root);
            let prefix_list = schema.get("prefixItems").or_else(|| schema.get("items").filter(|i| i.is_array()));
            let prefix = match prefix_list {
                Some(Value::Array(items)) => items.iter().map(|item| scalars(&types(root, item))).collect(),
                _ => Vec::new(),
            };
            let rest = match (schema.get("items"), schema.get("additionalItems")) {
                (Some(items @ Value::Object(_)), _) => scalars(&types(root, items)),
                (Some(Value::Array(_)), Some(additional @ Value::Object(_))) => scalars(&types(root, additional)),
                _ => Vec::new(),
            };
            Items { prefix, rest }
        });
        Self { scalars: scalars(&top), array }
    }

    /// The JSON value of a parameter from its occurrences in the request (at least one). An
    /// array takes each occurrence as an item (`?tag=a&tag=b`), or one occurrence split at commas
    /// (`?tag=a,b`; empty: no item); a header's lines are each split at commas (items trimmed,
    /// empty ones dropped, as for any list header). Anything else given more than once is
    /// ambiguous: the error says so.
    pub fn convert(&self, location: Location, values: &[String]) -> Result<Value, String> {
        let Some(items) = &self.array else {
            return match values {
                [one] => Ok(convert(&decoded(location, one), &self.scalars)),
                _ => Err(format!("given {} times; the schema takes one value", values.len())),
            };
        };
        let pieces: Vec<&str> = match (location, values) {
            (Location::Header, _) => values.iter().flat_map(|v| v.split(',')).map(|p| p.trim_matches([' ', '\t'])).filter(|p| !p.is_empty()).collect(),
            (_, [one]) if one.is_empty() => Vec::new(),
            (_, [one]) => one.split(',').collect(),
            _ => values.iter().map(String::as_str).collect(),
        };
        // A query value is split at its literal commas, then decoded: `%2C` is a comma in an
        // item (OpenAPI's `form` style).
        let converted = pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| convert(&decoded(location, piece), items.prefix.get(i).unwrap_or(&items.rest)))
            .collect();
        Ok(Value::Array(converted))
    }
}

/// A scalar string as the first of `scalars` that takes it, else as a string.
fn convert(value: &str, scalars: &[Scalar]) -> Value {
    for scalar in scalars {
        match scalar {
            Scalar::Number => {
                if let Some(number) = number(value) {
                    return Value::Number(number);
                }
            }
            Scalar::Boolean => match value {
                "true" => return Value::Bool(true),
                "false" => return Value::Bool(false),
                _ => {}
            },
        }
    }
    Value::String(value.to_owned())
}

/// A JSON number, written as JSON writes one (`01`, `+1`, ` 1`, `0x1`, `NaN` are not).
fn number(value: &str) -> Option<Number> {
    let starts = value.bytes().next().is_some_and(|b| b == b'-' || b.is_ascii_digit());
    let ends = value.bytes().last().is_some_and(|b| b.is_ascii_digit());
    if !starts || !ends {
        return None;
    }
    serde_json::from_str::<Number>(value).ok()
}

/// The scalar conversions for a list of JSON Schema types, in its order.
fn scalars(types: &[String]) -> Vec<Scalar> {
    let mut out = Vec::new();
    for t in types {
        let scalar = match t.as_str() {
            "integer" | "number" => Scalar::Number,
            "boolean" => Scalar::Boolean,
            _ => continue,
        };
        if !out.contains(&scalar) {
            out.push(scalar);
        }
    }
    out
}

/// The `type` of `schema` (a string or a list), after a local `$ref` at its top.
fn types(root: &Value, schema: &Value) -> Vec<String> {
    match resolve(root, schema).get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(list)) => list.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// `schema`, or what its `$ref` points at in the same document (`#/...`), followed a few times.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut here = schema;
    for _ in 0..8 {
        let Some(target) = here.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) else { break };
        match root.pointer(&crate::schema::percent_decode(target)) {
            Some(next) => here = next,
            None => break,
        }
    }
    here
}

/// Every value of query parameter `name` in a raw query string, in order, as sent (names are
/// compared form-decoded): [`Shape::convert`] decodes them once an array's are split.
pub fn query_values(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(key) == name).then(|| value.to_owned())
        })
        .collect()
}

/// A value (or an array's item) as the schema sees it: a query's form-decoded (`+` is a space,
/// `%XX` a byte), others as they are (path parameters come decoded from the gateway).
fn decoded(location: Location, value: &str) -> std::borrow::Cow<'_, str> {
    match location {
        Location::Query => std::borrow::Cow::Owned(form_decode(value)),
        _ => std::borrow::Cow::Borrowed(value),
    }
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space, then `%XX` escapes.
fn form_decode(text: &str) -> String {
    if !text.contains(['%', '+']) {
        return text.to_owned();
    }
    crate::schema::percent_decode(&text.replace('+', " "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shape(schema: Value) -> Shape {
        Shape::of(&schema)
    }

    fn values(vs: &[&str]) -> Vec<String> {
        vs.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn scalars_convert_by_type_and_stay_strings_otherwise() {
        let int = shape(json!({"type": "integer"}));
        assert_eq!(int.convert(Location::Query, &values(&["42"])), Ok(json!(42)));
        assert_eq!(int.convert(Location::Query, &values(&["-7"])), Ok(json!(-7)));
        assert_eq!(int.convert(Location::Query, &values(&["1.5"])), Ok(json!(1.5)), "a number: the schema says it is no integer");
        for not_a_number in ["abc", "", " 1", "1 ", "+1", "01", "0x10", "NaN", "1e999", "1.", "-"] {
            assert_eq!(int.convert(Location::Path, &values(&[not_a_number])), Ok(json!(not_a_number)), "{not_a_number:?}");
        }
        let num = shape(json!({"type": "number"}));
        assert_eq!(num.convert(Location::Header, &values(&["2.5e1"])), Ok(json!(25.0)));
        let flag = shape(json!({"type": "boolean"}));
        assert_eq!(flag.convert(Location::Query, &values(&["true"])), Ok(json!(true)));
        assert_eq!(flag.convert(Location::Query, &values(&["false"])), Ok(json!(false)));
        assert_eq!(flag.convert(Location::Query, &values(&["True"])), Ok(json!("True")));
        assert_eq!(flag.convert(Location::Query, &values(&["1"])), Ok(json!("1")));
        let none = shape(json!({"enum": ["1", "2"]}));
        assert_eq!(none.convert(Location::Path, &values(&["1"])), Ok(json!("1")), "no type: a string");
        let either = shape(json!({"type": ["boolean", "integer", "null"]}));
        assert_eq!(either.convert(Location::Query, &values(&["3"])), Ok(json!(3)));
        assert_eq!(either.convert(Location::Query, &values(&["true"])), Ok(json!(true)));
        let referenced = shape(json!({"$ref": "#/$defs/id", "$defs": {"id": {"type": "integer"}}}));
        assert_eq!(referenced.convert(Location::Path, &values(&["9"])), Ok(json!(9)));
    }

    #[test]
    fn a_scalar_given_twice_is_ambiguous() {
        let int = shape(json!({"type": "integer"}));
        assert_eq!(int.convert(Location::Query, &values(&["1", "2"])), Err("given 2 times; the schema takes one value".to_owned()));
        assert!(shape(json!({})).convert(Location::Header, &values(&["a", "b"])).is_err());
    }

    #[test]
    fn arrays_come_from_repeats_or_commas_with_items_converted() {
        let ints = shape(json!({"type": "array", "items": {"type": "integer"}}));
        assert_eq!(ints.convert(Location::Query, &values(&["1", "2"])), Ok(json!([1, 2])));
        assert_eq!(ints.convert(Location::Query, &values(&["1,2,x"])), Ok(json!([1, 2, "x"])));
        assert_eq!(ints.convert(Location::Query, &values(&["1,2", "3"])), Ok(json!(["1,2", 3])), "repeated: each value is one item");
        assert_eq!(ints.convert(Location::Query, &values(&[""])), Ok(json!([])));
        assert_eq!(ints.convert(Location::Query, &values(&["1,,2"])), Ok(json!([1, "", 2])));
        assert_eq!(ints.convert(Location::Path, &values(&["4,5"])), Ok(json!([4, 5])));
        assert_eq!(ints.convert(Location::Header, &values(&["1, 2", " 3 ,", ""])), Ok(json!([1, 2, 3])), "header lines, trimmed");
        let strings = shape(json!({"type": "array"}));
        assert_eq!(strings.convert(Location::Query, &values(&["a,b"])), Ok(json!(["a", "b"])));
        let tuple = shape(json!({"type": "array", "prefixItems": [{"type": "boolean"}], "items": {"type": "number"}}));
        assert_eq!(tuple.convert(Location::Query, &values(&["true,1,x"])), Ok(json!([true, 1, "x"])));
        let old_tuple = shape(json!({"type": "array", "items": [{"type": "integer"}, {"type": "string"}], "additionalItems": {"type": "boolean"}}));
        assert_eq!(old_tuple.convert(Location::Query, &values(&["1,2,true"])), Ok(json!([1, "2", true])));
    }

    #[test]
    fn query_values_are_form_decoded() {
        let decoded = |query: &str, name: &str| {
            query_values(query, name).iter().map(|v| shape(json!({})).convert(Location::Query, std::slice::from_ref(v)).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(query_values("a=1&tag=x+y%21&tag=%7A&b", "tag"), ["x+y%21", "%7A"], "as sent");
        assert_eq!(decoded("a=1&tag=x+y%21&tag=%7A&b", "tag"), [json!("x y!"), json!("z")]);
        assert_eq!(query_values("t%61g=1&flag", "tag"), ["1"]);
        assert_eq!(query_values("flag&a=1", "flag"), [""]);
        assert_eq!(decoded("a=%zz%+1", "a"), [json!("%zz% 1")]);
        assert_eq!(decoded("a=%2B", "a"), [json!("+")], "an encoded plus is a plus");
        assert!(query_values("a=1", "b").is_empty());
        let int = shape(json!({"type": "integer"}));
        assert_eq!(int.convert(Location::Query, &values(&["%35"])), Ok(json!(5)), "decoded, then converted");
    }

    #[test]
    fn an_encoded_comma_is_data_in_a_query_array() {
        let strings = shape(json!({"type": "array", "items": {"type": "string"}}));
        assert_eq!(strings.convert(Location::Query, &values(&["abc%2Cdef"])), Ok(json!(["abc,def"])));
        assert_eq!(strings.convert(Location::Query, &values(&["a%2cb,c+d"])), Ok(json!(["a,b", "c d"])));
        assert_eq!(strings.convert(Location::Query, &values(&["a%2Cb", "c"])), Ok(json!(["a,b", "c"])), "repeated: each decoded");
        let ints = shape(json!({"type": "array", "items": {"type": "integer"}}));
        assert_eq!(ints.convert(Location::Query, &values(&["1%2C2"])), Ok(json!(["1,2"])));
    }

    #[test]
    fn parameter_config_errors_name_the_key() {
        let err = |json: Value| Parameter::from_config(2, serde_json::from_value(json).unwrap()).unwrap_err();
        assert_eq!(err(json!({"name": "", "in": "query"})), "`parameters[2].name`: empty name");
        assert_eq!(err(json!({"name": "x y", "in": "header"})), "`parameters[2].name`: `x y` is not a header name");
        assert!(err(json!({"name": "id", "in": "path", "required": false})).starts_with("`parameters[2].required`: a path parameter is always required"));
        assert!(err(json!({"name": "id", "in": "path", "schema": {"type": "intger"}})).starts_with("`parameters[2].schema.type`: not a valid JSON Schema"));
        assert!(err(json!({"name": "id", "in": "path", "schema": "{"})).starts_with("`parameters[2].schema`: the string is not a JSON document"));
        let path = Parameter::from_config(0, serde_json::from_value(json!({"name": "id", "in": "path"})).unwrap()).unwrap();
        assert!(path.required);
        let header = Parameter::from_config(0, serde_json::from_value(json!({"name": "X-Version", "in": "header"})).unwrap()).unwrap();
        assert_eq!(header.identity(), ("x-version".to_owned(), Location::Header));
        assert!(!header.required);
    }

    #[test]
    fn checks_report_missing_repeated_and_invalid_values() {
        let param = |json: Value| Parameter::from_config(0, serde_json::from_value(json).unwrap()).unwrap();
        let limit = param(json!({"name": "limit", "in": "query", "required": true, "schema": {"type": "integer", "maximum": 100}}));
        let run = |p: &Parameter, vs: &[&str]| {
            let mut failures = Failures::default();
            p.check(&values(vs), &mut failures);
            failures.kept().iter().map(|f| (f.pointer.clone(), f.message.clone())).collect::<Vec<_>>()
        };
        assert!(run(&limit, &["5"]).is_empty());
        assert_eq!(run(&limit, &[]), [(String::new(), "required parameter is missing".to_owned())]);
        assert_eq!(run(&limit, &["500"]), [(String::new(), "must be <=100, but got 500".to_owned())]);
        assert_eq!(run(&limit, &["five"]), [(String::new(), "want integer, but got string".to_owned())]);
        assert_eq!(run(&limit, &["1", "2"]), [(String::new(), "given 2 times; the schema takes one value".to_owned())]);
        let optional = param(json!({"name": "q", "in": "query"}));
        assert!(run(&optional, &[]).is_empty());
        let tags = param(json!({"name": "tag", "in": "query", "schema": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}}));
        assert_eq!(run(&tags, &["1", "x"]), [("/1".to_owned(), "want integer, but got string".to_owned())]);
        assert_eq!(run(&tags, &["1,2,3"]), [(String::new(), "maximum 2 items required, but got 3 items".to_owned())]);
    }
}
