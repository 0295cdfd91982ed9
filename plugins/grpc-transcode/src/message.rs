//! Messages both ways: the request message built from path variables, query parameters and the
//! JSON body (proto3 JSON mapping, unknown fields refused), framed for gRPC; the response message
//! unframed and written as proto3 JSON.

use std::collections::HashSet;

use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions};
use serde_json::{Map, Value};

use crate::mapping::Binding;

/// A JSON body read as `serde_json::Value` in one pass, but refusing a key given twice in one
/// object (as protojson does), where `Value` keeps the last: a proxy, WAF or plugin that reads
/// the first would see another value than the gRPC server gets.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let Strict(value) = access.next_value()?;
            if map.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("the key `{key}` is given twice")));
            }
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}
use crate::template::decode;

/// Bytes of the gRPC message prefix: compressed flag, then the length as a big-endian u32.
const PREFIX: usize = 5;

/// The field at a dotted path (`user.id`) of `message`, by proto or JSON name; every step but
/// the last must be a singular message field.
pub fn field_path(message: &MessageDescriptor, path: &str) -> Result<FieldDescriptor, String> {
    resolve(message, path).map(|(field, _)| field)
}

/// [`field_path`], with the path in proto names (`userId.x` and `user_id.x` are both `user_id.x`):
/// one name for a field however the client spelled it.
fn resolve(message: &MessageDescriptor, path: &str) -> Result<(FieldDescriptor, String), String> {
    let mut current = message.clone();
    let mut canonical = String::new();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))
            .ok_or_else(|| format!("message `{}` has no field `{part}`", current.full_name()))?;
        if !canonical.is_empty() {
            canonical.push('.');
        }
        canonical.push_str(field.name());
        if parts.peek().is_none() {
            return Ok((field, canonical));
        }
        match field.kind() {
            Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
            _ => return Err(format!("field `{part}` of `{}` is not a message", current.full_name())),
        }
    }
    Err("empty field path".into())
}

/// The JSON value a text from a path or query string stands for, for this field's type.
fn leaf(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let boolean = |t: &str| match t {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        other => Err(format!("field `{}` expects true or false, not `{other}`", field.name())),
    };
    // A finite number that a float cannot hold is refused, as in the body, never Infinity.
    let float = match field.kind() {
        Kind::Float => true,
        Kind::Message(m) => m.full_name() == "google.protobuf.FloatValue",
        _ => false,
    };
    if float && text.parse::<f64>().is_ok_and(|v| v.is_finite() && (v as f32).is_infinite()) {
        return Err(format!("{text} is out of range for field `{}` (float)", field.name()));
    }
    match field.kind() {
        Kind::Bool => boolean(text),
        Kind::Message(m) if m.full_name() == "google.protobuf.BoolValue" => boolean(text),
        Kind::Message(m) if !m.full_name().starts_with("google.protobuf.") => {
            Err(format!("field `{}` is a message: it cannot be set from a path or query string", field.name()))
        }
        // An enum by number, as in the body (and grpc-gateway's parameters); names start with a
        // letter, so a number is never a name.
        Kind::Enum(_) => Ok(text.parse::<i32>().map_or_else(|_| Value::String(text.to_owned()), Value::from)),
        // Strings, bytes (base64), enum names, numbers and the well-known types' text forms:
        // proto3 JSON takes each as a string.
        _ => Ok(Value::String(text.to_owned())),
    }
}

/// The type of `field`, for messages: `int64`, `string`, `demo.v1.Role`.
fn type_name(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        scalar => format!("{scalar:?}").to_ascii_lowercase(),
    }
}

/// Checks that `value`, from the path or query, fits `field` on its own, so that the 400 names
/// `what` (`path variable `id``) rather than only the request message.
fn check_fits(field: &FieldDescriptor, value: &Value, what: &str) -> Result<(), BadRequest> {
    let parent = field.parent_message();
    let value = if field.is_list() { Value::Array(vec![value.clone()]) } else { value.clone() };
    let mut object = Map::new();
    object.insert(field.name().to_owned(), value);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(parent.clone(), &Value::Object(object), &options).map(drop).map_err(|e| {
        BadRequest(format!("{what} does not fit field `{}` ({}) of `{}`: {e}", field.name(), type_name(field), parent.full_name()))
    })
}

/// How deep [`locate`] follows nested messages: each level deserializes its part again.
const LOCATE_DEPTH: usize = 8;

/// The dotted path (`nested.limit`, `nestedList[1].limit`) of the field of `value` that does not
/// fit `message`, and why: each field is deserialized alone, and a failing message field is
/// searched in turn. `None` when every field fits alone (a oneof given twice).
fn locate(message: &MessageDescriptor, value: &Value, depth: usize) -> Option<(String, String)> {
    let Value::Object(fields) = value else { return None };
    // The well-known types have JSON forms of their own, not objects of fields.
    if message.full_name().starts_with("google.protobuf.") {
        return None;
    }
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    for (key, item) in fields {
        let mut alone = Map::new();
        alone.insert(key.clone(), item.clone());
        let Err(error) = DynamicMessage::deserialize_with_options(message.clone(), &Value::Object(alone), &options) else {
            continue;
        };
        let field = message.get_field_by_name(key).or_else(|| message.get_field_by_json_name(key));
        let inner = field.filter(|_| depth < LOCATE_DEPTH).and_then(|f| match f.kind() {
            Kind::Message(m) if f.is_list() => item.as_array()?.iter().enumerate().find_map(|(i, v)| {
                locate(&m, v, depth + 1).map(|(path, why)| (format!("{key}[{i}].{path}"), why))
            }),
            Kind::Message(m) if !f.is_map() => locate(&m, item, depth + 1).map(|(path, why)| (format!("{key}.{path}"), why)),
            _ => None,
        });
        return Some(inner.unwrap_or_else(|| (key.clone(), error.to_string())));
    }
    None
}

/// Sets `value` at the dotted `path` inside `object`, creating objects on the way; a repeated
/// field collects values into an array.
fn insert(object: &mut Map<String, Value>, path: &str, value: Value, repeated: bool) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    match rest {
        Some(rest) => {
            let slot = object.entry(head.to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                insert(inner, rest, value, repeated);
            }
        }
        None if repeated => match object.entry(head.to_owned()).or_insert_with(|| Value::Array(Vec::new())) {
            Value::Array(items) => items.push(value),
            other => *other = Value::Array(vec![value]),
        },
        None => {
            object.insert(head.to_owned(), value);
        }
    }
}

/// What is wrong with the client's request (answered 400).
#[derive(Debug)]
pub struct BadRequest(pub String);

/// The request message as JSON: the body (whole, or under the binding's body field), the query
/// parameters (when the body is not the whole message) and the path variables, which win.
/// `path` is the client's request path (the binding matched it), for messages; `captures` are
/// what the binding's template captured from it.
///
/// With `check_each`, each path and query value is also checked against its field on its own,
/// so the 400 names the parameter: an extra deserialization per parameter, done only once the
/// whole message failed to encode ([`encode_request`]), never on a request that fits.
pub fn request_json(
    binding: &Binding,
    path: &str,
    captures: &[(String, Vec<u8>)],
    query: Option<&str>,
    body: Option<&[u8]>,
    check_each: bool,
) -> Result<Value, BadRequest> {
    let input = binding.method.input();
    let body = body.filter(|b| !b.iter().all(u8::is_ascii_whitespace));
    let parsed: Option<Value> = match body {
        Some(bytes) if binding.body.is_some() => {
            let strict: Strict = serde_json::from_slice(bytes).map_err(|e| BadRequest(format!("the request body is not valid JSON: {e}")))?;
            Some(strict.0)
        }
        Some(_) => return Err(BadRequest(format!("{} {path} takes no request body", binding.verb))),
        None => None,
    };
    let mut object = match (binding.body.as_deref(), parsed) {
        (Some("*"), Some(Value::Object(map))) => map,
        (Some("*"), Some(_)) => return Err(BadRequest("the request body must be a JSON object".into())),
        (Some(field), Some(value)) => {
            let mut map = Map::new();
            map.insert(field.to_owned(), value);
            map
        }
        (None, Some(_)) | (_, None) => Map::new(),
    };
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        // The singular fields set so far, by proto-name path: a second value is a 400 (as
        // grpc-gateway's "too many values"), never the last one silently winning.
        let mut given = HashSet::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(&raw_name.replace('+', " "))
                .ok_or_else(|| BadRequest(format!("query parameter name `{raw_name}` is not valid UTF-8 once percent-decoded")))?;
            let value = decode(&raw_value.replace('+', " "))
                .ok_or_else(|| BadRequest(format!("query parameter `{name}` is not valid UTF-8 once percent-decoded")))?;
            if binding.body.as_deref() == Some("*") {
                return Err(BadRequest(format!("unknown query parameter `{name}`: the request body is the whole message")));
            }
            let (field, canonical) = resolve(&input, &name).map_err(|e| BadRequest(format!("unknown query parameter `{name}`: {e}")))?;
            if binding.body.as_deref() == Some(name.as_str()) {
                return Err(BadRequest(format!("query parameter `{name}` is the request body's field")));
            }
            if !field.is_list() && !given.insert(canonical) {
                return Err(BadRequest(format!(
                    "query parameter `{name}` is given more than once, but field `{}` of `{}` is not repeated: it takes one value",
                    field.name(),
                    field.parent_message().full_name()
                )));
            }
            let what = format!("query parameter `{name}`");
            let value = leaf(&field, &value).map_err(|e| BadRequest(format!("{what}: {e}")))?;
            if check_each {
                check_fits(&field, &value, &what)?;
            }
            insert(&mut object, &name, value, field.is_list());
        }
    }
    for (name, value) in captures {
        let field = field_path(&input, name).map_err(BadRequest)?;
        let value = std::str::from_utf8(value)
            .map_err(|_| BadRequest(format!("path variable `{name}` is not valid UTF-8 once percent-decoded")))?;
        let what = format!("path variable `{name}`");
        let value = leaf(&field, value).map_err(|e| BadRequest(format!("{what}: {e}")))?;
        if check_each {
            check_fits(&field, &value, &what)?;
        }
        insert(&mut object, name, value, field.is_list());
    }
    Ok(Value::Object(object))
}

/// The request message `binding` makes of the path's `captures`, the `query` and the `body`,
/// encoded and framed. When it does not fit, the 400 names the path or query parameter that does
/// not fit its field (a second, checking pass over them: the failure path only), else the body
/// field ([`encode_request`]).
pub fn encode(binding: &Binding, path: &str, captures: &[(String, Vec<u8>)], query: Option<&str>, body: Option<&[u8]>) -> Result<Vec<u8>, BadRequest> {
    let json = request_json(binding, path, captures, query, body, false)?;
    encode_request(&binding.method.input(), &json).map_err(|whole| match request_json(binding, path, captures, query, body, true) {
        Err(named) => named,
        Ok(_) => whole,
    })
}

/// The request message for `json`, encoded and framed (uncompressed).
pub fn encode_request(input: &MessageDescriptor, json: &Value) -> Result<Vec<u8>, BadRequest> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let message = DynamicMessage::deserialize_with_options(input.clone(), json, &options).map_err(|e| {
        BadRequest(match locate(input, json, 0) {
            Some((path, why)) => format!("the request does not fit `{}`: field `{path}`: {why}", input.full_name()),
            None => format!("the request does not fit `{}`: {e}", input.full_name()),
        })
    })?;
    let length = message.encoded_len();
    let mut framed = Vec::with_capacity(PREFIX + length);
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes());
    message.encode(&mut framed).map_err(|e| BadRequest(format!("cannot encode the request: {e}")))?;
    Ok(framed)
}

/// The response message of a gRPC body (one framed message), as proto3 JSON; `field` picks one
/// field of it instead of the whole message.
pub fn decode_response(output: &MessageDescriptor, body: &[u8], field: Option<&str>) -> Result<Vec<u8>, String> {
    if body.len() < PREFIX {
        return Err(format!("the gRPC answer holds no message ({} bytes)", body.len()));
    }
    if body[0] != 0 {
        return Err("the gRPC answer is compressed (grpc-encoding), which grpc-transcode does not request or decode".into());
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let payload = body
        .get(PREFIX..PREFIX + length)
        .ok_or_else(|| format!("the gRPC message is cut short: {} of {length} bytes", body.len() - PREFIX))?;
    if body.len() > PREFIX + length {
        return Err("the gRPC answer holds more than one message (a streaming method?)".into());
    }
    let message = DynamicMessage::decode(output.clone(), payload)
        .map_err(|e| format!("the gRPC answer is not a valid `{}`: {e}", output.full_name()))?;
    to_json(&message, field)
}

/// A message as proto3 JSON (64-bit integers as strings, enums by name, defaults left out).
pub fn to_json(message: &DynamicMessage, field: Option<&str>) -> Result<Vec<u8>, String> {
    let options = SerializeOptions::new();
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &options)
        .map_err(|e| format!("cannot write `{}` as JSON: {e}", message.descriptor().full_name()))?;
    let Some(field) = field else { return Ok(out) };
    let json_name = message.descriptor().get_field_by_name(field).map(|f| f.json_name().to_owned()).unwrap_or_else(|| field.to_owned());
    let mut value: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    let picked = value.get_mut(&json_name).map(Value::take).unwrap_or(Value::Null);
    serde_json::to_vec(&picked).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;
    use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
    use prost_reflect::prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto};
    use serde_json::json;

    use super::*;
    use crate::template::Template;

    fn field(name: &str, number: i32, kind: Type, label: Label, type_name: Option<&str>) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(label as i32),
            r#type: Some(kind as i32),
            type_name: type_name.map(str::to_owned),
            json_name: None,
            ..Default::default()
        }
    }

    /// `t.v1.T/Get(Thing) returns (Thing)` bound to `verb path` with `body`; `Thing` has `text`,
    /// `i64`, `tags` (repeated), `maybe_flag` and `filter` (a message with `limit`).
    fn binding(verb: &str, path: &str, body: Option<&str>) -> Binding {
        let thing = DescriptorProto {
            name: Some("Thing".into()),
            field: vec![
                field("text", 1, Type::String, Label::Optional, None),
                field("i64", 2, Type::Int64, Label::Optional, None),
                field("tags", 3, Type::String, Label::Repeated, None),
                field("maybe_flag", 4, Type::Bool, Label::Optional, None),
                field("filter", 5, Type::Message, Label::Optional, Some(".t.v1.Filter")),
            ],
            ..Default::default()
        };
        let filter = DescriptorProto { name: Some("Filter".into()), field: vec![field("limit", 1, Type::Uint32, Label::Optional, None)], ..Default::default() };
        let get = MethodDescriptorProto {
            name: Some("Get".into()),
            input_type: Some(".t.v1.Thing".into()),
            output_type: Some(".t.v1.Thing".into()),
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t.v1".into()),
            syntax: Some("proto3".into()),
            message_type: vec![thing, filter],
            service: vec![ServiceDescriptorProto { name: Some("T".into()), method: vec![get], ..Default::default() }],
            ..Default::default()
        };
        let mut pool = DescriptorPool::new();
        pool.add_file_descriptor_proto(file).unwrap();
        let method = pool.get_service_by_name("t.v1.T").unwrap().methods().next().unwrap();
        Binding { verb: verb.into(), template: Template::parse(path).unwrap(), body: body.map(str::to_owned), response_body: None, method }
    }

    /// What `request_json` makes of `path` and `query` (and `body`) for `binding`.
    fn request(binding: &Binding, path: &str, query: &str, body: Option<&str>) -> Result<Value, String> {
        let captures = binding.template.matches(path).unwrap_or_else(|| panic!("{path} does not match"));
        request_json(binding, path, &captures, Some(query), body.map(str::as_bytes), false).map_err(|BadRequest(message)| message)
    }

    #[test]
    fn values_that_are_not_utf8_are_refused_naming_the_parameter() {
        let b = binding("GET", "/v1/things/{text}", None);
        assert_eq!(request(&b, "/v1/things/%E9", "", None).unwrap_err(), "path variable `text` is not valid UTF-8 once percent-decoded");
        assert_eq!(request(&b, "/v1/things/x", "i64=%E9", None).unwrap_err(), "query parameter `i64` is not valid UTF-8 once percent-decoded");
        assert_eq!(request(&b, "/v1/things/x", "t%FFgs=a", None).unwrap_err(), "query parameter name `t%FFgs` is not valid UTF-8 once percent-decoded");
        assert_eq!(request(&b, "/v1/things/%C3%A9", "tags=%E2%9C%93", None).unwrap(), json!({"tags": ["\u{2713}"], "text": "\u{e9}"}));
    }

    #[test]
    fn a_singular_field_takes_one_query_value_a_repeated_one_several() {
        let b = binding("GET", "/v1/things/{text}", None);
        let err = request(&b, "/v1/things/x", "i64=1&i64=2", None).unwrap_err();
        assert_eq!(err, "query parameter `i64` is given more than once, but field `i64` of `t.v1.Thing` is not repeated: it takes one value");
        let err = request(&b, "/v1/things/x", "maybe_flag=true&maybeFlag=false", None).unwrap_err();
        assert!(err.starts_with("query parameter `maybeFlag` is given more than once, but field `maybe_flag`"), "{err}");
        let err = request(&b, "/v1/things/x", "filter.limit=1&filter.limit=2", None).unwrap_err();
        assert!(err.contains("field `limit` of `t.v1.Filter` is not repeated"), "{err}");
        assert_eq!(
            request(&b, "/v1/things/x", "tags=a&tags=b&i64=3&filter.limit=4", None).unwrap(),
            json!({"tags": ["a", "b"], "i64": "3", "filter": {"limit": "4"}, "text": "x"})
        );
    }

    /// What `request_json` then `encode_request` say about `path`, `query` and `body`.
    fn encoded(binding: &Binding, path: &str, query: &str, body: Option<&str>) -> Result<Vec<u8>, String> {
        let captures = binding.template.matches(path).unwrap_or_else(|| panic!("{path} does not match"));
        encode(binding, path, &captures, Some(query), body.map(str::as_bytes)).map_err(|BadRequest(message)| message)
    }

    #[test]
    fn a_value_that_does_not_fit_names_its_parameter_or_field() {
        let b = binding("GET", "/v1/things/{i64}", None);
        let err = encoded(&b, "/v1/things/abc", "", None).unwrap_err();
        assert!(err.starts_with("path variable `i64` does not fit field `i64` (int64) of `t.v1.Thing`: "), "{err}");
        let err = encoded(&b, "/v1/things/1", "filter.limit=-1", None).unwrap_err();
        assert!(err.starts_with("query parameter `filter.limit` does not fit field `limit` (uint32) of `t.v1.Filter`: "), "{err}");
        let err = encoded(&b, "/v1/things/1", "maybeFlag=yes", None).unwrap_err();
        assert_eq!(err, "query parameter `maybeFlag`: field `maybe_flag` expects true or false, not `yes`");
        assert!(encoded(&b, "/v1/things/1", "filter.limit=3&tags=x", None).is_ok());

        let b = binding("POST", "/v1/things", Some("*"));
        let err = encoded(&b, "/v1/things", "", Some(r#"{"text": "ok", "maybe_flag": 1}"#)).unwrap_err();
        assert!(err.starts_with("the request does not fit `t.v1.Thing`: field `maybe_flag`: invalid type: integer `1`"), "{err}");
        let err = encoded(&b, "/v1/things", "", Some(r#"{"filter": {"limit": "x"}}"#)).unwrap_err();
        assert!(err.starts_with("the request does not fit `t.v1.Thing`: field `filter.limit`: "), "{err}");
    }

    /// A key given twice is a 400 (protojson's "duplicate field"), at any depth, where
    /// `serde_json::Value` would keep the last silently.
    #[test]
    fn a_key_given_twice_in_the_body_is_refused() {
        let b = binding("POST", "/v1/things", Some("*"));
        let err = request(&b, "/v1/things", "", Some(r#"{"text": "a", "text": "b"}"#)).unwrap_err();
        assert!(err.starts_with("the request body is not valid JSON: the key `text` is given twice"), "{err}");
        let err = request(&b, "/v1/things", "", Some(r#"{"filter": {"limit": 1, "limit": 2}}"#)).unwrap_err();
        assert!(err.contains("the key `limit` is given twice"), "{err}");
        assert_eq!(
            request(&b, "/v1/things", "", Some(r#"{"text": "a", "tags": ["x", "x"], "filter": {"limit": 1.5e0}}"#)).unwrap(),
            json!({"text": "a", "tags": ["x", "x"], "filter": {"limit": 1.5}}),
            "values as serde_json reads them; repeated array items are fine"
        );
    }

    #[test]
    fn a_body_for_a_binding_without_one_names_what_the_client_sent() {
        let b = binding("DELETE", "/v1/things/{text}", None);
        assert_eq!(request(&b, "/v1/things/a%20b", "", Some("{}")).unwrap_err(), "DELETE /v1/things/a%20b takes no request body");
        assert_eq!(request(&b, "/v1/things/a%20b", "", Some(" \n")).unwrap(), json!({"text": "a b"}), "an empty body is no body");
    }
}
