//! Messages both ways: the request message built from path variables, query parameters and the
//! JSON body (proto3 JSON mapping, unknown fields refused), framed for gRPC; the response message
//! unframed and written as proto3 JSON.

use std::collections::HashSet;

use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions};
use serde_json::{Map, Value};

use crate::json::{self, Floats, Signals};
use crate::mapping::Binding;
use crate::numbers;
use crate::response;
use crate::template::decode;
use crate::walk;

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
    // More than nanoseconds, or a leap second, is refused, as in the body, never changed.
    if numbers::is_time(&field.kind()) {
        numbers::check_time(text, &type_name(field)).map_err(|e| format!("field `{}`: {e}", field.name()))?;
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
/// The value is read as in the whole request: an integral value in exponent form is taken.
fn check_fits(field: &FieldDescriptor, value: &Value, what: &str) -> Result<(), BadRequest> {
    let parent = field.parent_message();
    let value = if field.is_list() { Value::Array(vec![value.clone()]) } else { value.clone() };
    let mut object = Map::new();
    object.insert(field.name().to_owned(), value);
    let misfit = |why: String| {
        BadRequest(format!("{what} does not fit field `{}` ({}) of `{}`: {why}", field.name(), type_name(field), parent.full_name()))
    };
    walk::request(parent, &mut object).map_err(|m| misfit(m.why))?;
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(parent.clone(), &Value::Object(object), &options).map(drop).map_err(|e| misfit(e.to_string()))
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

/// Sets `value` at the dotted `path` inside `object`, creating objects on the way (a `null` one
/// too: proto3 JSON's null is an unset message); a repeated field collects values into an array.
/// A step the body gave as something else (`"user": [1, 2]` for a message field) is an error,
/// never replaced: replacing it would drop what the client sent and call the server anyway.
fn insert(object: &mut Map<String, Value>, path: &str, value: Value, repeated: bool) -> Result<(), Misplaced> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let slot = object.entry(head.to_owned()).or_insert(Value::Null);
    match rest {
        Some(rest) => {
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(inner) = slot else { return Err(Misplaced::at(head, slot)) };
            insert(inner, rest, value, repeated).map_err(|m| m.within(head))
        }
        None if repeated => match slot {
            Value::Null => {
                *slot = Value::Array(vec![value]);
                Ok(())
            }
            Value::Array(items) => {
                items.push(value);
                Ok(())
            }
            other => Err(Misplaced::at(head, other)),
        },
        None => {
            *slot = value;
            Ok(())
        }
    }
}

/// Where [`insert`] found a value of the body in the way: its dotted path and what JSON type it
/// is, for the 400.
#[derive(Debug)]
struct Misplaced {
    path: String,
    found: &'static str,
}

impl Misplaced {
    /// The value `found` under `key`, in the object [`insert`] was setting a field in.
    fn at(key: &str, found: &Value) -> Self {
        let found = match found {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        Self { path: key.to_owned(), found }
    }

    /// The same, seen from the object holding `key`: its path one step longer.
    fn within(mut self, key: &str) -> Self {
        self.path = format!("{key}.{}", self.path);
        self
    }

    /// The 400 for `what` (`path variable `user.id``), which could not be set.
    fn refuse(&self, what: &str) -> BadRequest {
        BadRequest(format!(
            "{what} sets a field inside `{}`, which the request body gives as {}: the body must give it as a JSON object (or leave it out)",
            self.path, self.found
        ))
    }
}

/// Whether the field at dotted proto-name path `outer` holds the one at `inner` (or is it).
fn covers(outer: &str, inner: &str) -> bool {
    inner.strip_prefix(outer).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Why query parameter `name` is not one, if it is not: google/api/http.proto makes query
/// parameters of the fields that neither the body nor the path covers. With `body: "*"`, none;
/// with `body: "f"`, none inside `f` (`f.x` would silently override the body's value, or replace
/// a body that is not an object); a path variable's field, or one holding it or inside it, is
/// the path's (which would win over it silently). `canonical`: `name` in proto names, `None`
/// when it names no field (the caller says so).
fn not_a_query_parameter(binding: &Binding, input: &MessageDescriptor, name: &str, canonical: Option<&str>) -> Option<String> {
    let body = binding.body.as_deref()?;
    if body == "*" {
        return Some(format!("unknown query parameter `{name}`: the request body is the whole message (`body: \"*\"`), so every field the path does not set is given in the body"));
    }
    let head = name.split('.').next().unwrap_or(name);
    let head = input.get_field_by_name(head).or_else(|| input.get_field_by_json_name(head))?;
    if head.name() != body {
        return None;
    }
    Some(if canonical == Some(body) {
        format!("query parameter `{name}` is the request body's field: give it in the body")
    } else {
        format!("query parameter `{name}` is inside the request body's field `{body}`: give it in the body (only fields outside the body are taken from the query)")
    })
}

/// Why query parameter `name` (`canonical` in proto names) is not one, if a path variable sets
/// its field, one inside it or one holding it: the path's value would silently win.
fn set_by_path(binding: &Binding, input: &MessageDescriptor, name: &str, canonical: &str) -> Option<String> {
    binding.template.fields().into_iter().find_map(|variable| {
        let (_, path) = resolve(input, variable).ok()?;
        (covers(&path, canonical) || covers(canonical, &path))
            .then(|| format!("query parameter `{name}` sets the field of path variable `{variable}`: it is taken from the path only"))
    })
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
    let (parsed, signals) = match body {
        Some(bytes) if binding.body.is_some() => {
            let (value, signals) =
                json::read(bytes, &binding.twins).map_err(|e| BadRequest(format!("the request body is not valid JSON: {e}")))?;
            (Some(value), signals)
        }
        Some(_) => return Err(BadRequest(format!("{} {path} takes no request body", binding.verb))),
        None => (None, Signals::default()),
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
    // The body alone, before the query and path join it: what its reader signalled.
    if let (true, Some(bytes)) = (signals.any(), body) {
        let floats = signals.floats.then(|| Floats::of(bytes));
        walk::body(&input, &mut object, floats).map_err(|m| does_not_fit(&input, &m))?;
    }
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
            let resolved = resolve(&input, &name);
            let canonical = resolved.as_ref().ok().map(|(_, canonical)| canonical.as_str());
            if let Some(why) = not_a_query_parameter(binding, &input, &name, canonical) {
                return Err(BadRequest(why));
            }
            let (field, canonical) = resolved.map_err(|e| BadRequest(format!("unknown query parameter `{name}`: {e}")))?;
            if let Some(why) = set_by_path(binding, &input, &name, &canonical) {
                return Err(BadRequest(why));
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
            insert(&mut object, &name, value, field.is_list()).map_err(|m| m.refuse(&what))?;
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
        insert(&mut object, name, value, field.is_list()).map_err(|m| m.refuse(&what))?;
    }
    Ok(Value::Object(object))
}

/// The request message `binding` makes of the path's `captures`, the `query` and the `body`,
/// encoded and framed. When it does not fit, the 400 names the path or query parameter that does
/// not fit its field (a second, checking pass over them: the failure path only), else the body
/// field ([`encode_request`]).
///
/// An integral value given as a string in another form than plain digits (`"1e3"`, `"2.0"`, from
/// the body, query or path) fails the first encoding: only then the request is walked, such
/// values made plain integers (others refused, naming the field), and encoded again.
pub fn encode(binding: &Binding, path: &str, captures: &[(String, Vec<u8>)], query: Option<&str>, body: Option<&[u8]>) -> Result<Vec<u8>, BadRequest> {
    let input = binding.method.input();
    let mut json = request_json(binding, path, captures, query, body, false)?;
    if let Ok(framed) = encode_request(&input, &json) {
        return Ok(framed);
    }
    let walked = match &mut json {
        Value::Object(object) => walk::request(&input, object),
        _ => Ok(()),
    };
    let whole = match walked {
        Ok(()) => match encode_request(&input, &json) {
            Ok(framed) => return Ok(framed),
            Err(whole) => whole,
        },
        Err(mistake) => does_not_fit(&input, &mistake),
    };
    match request_json(binding, path, captures, query, body, true) {
        Err(named) => Err(named),
        Ok(_) => Err(whole),
    }
}

/// The 400 for a value of the request the typed pass refused.
fn does_not_fit(input: &MessageDescriptor, mistake: &walk::Mistake) -> BadRequest {
    BadRequest(format!("the request does not fit `{}`: field `{}`: {}", input.full_name(), mistake.path(), mistake.why))
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

/// A message as proto3 JSON (64-bit integers as strings, enums by name, defaults left out). A
/// value the writer would write wrongly is refused first, and a non-finite float wrapper it
/// writes `null` is written as proto3 JSON has it ([`response`]).
pub fn to_json(message: &DynamicMessage, field: Option<&str>) -> Result<Vec<u8>, String> {
    let non_finite =
        response::check(message).map_err(|e| format!("the gRPC answer is not a valid `{}`: {e}", message.descriptor().full_name()))?;
    let options = SerializeOptions::new();
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &options)
        .map_err(|e| format!("cannot write `{}` as JSON: {e}", message.descriptor().full_name()))?;
    if !non_finite && field.is_none() {
        return Ok(out);
    }
    let mut value: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    if non_finite {
        response::write_non_finite(message, &mut value);
    }
    let Some(field) = field else { return serde_json::to_vec(&value).map_err(|e| e.to_string()) };
    let json_name = message.descriptor().get_field_by_name(field).map(|f| f.json_name().to_owned()).unwrap_or_else(|| field.to_owned());
    let picked = match value.get_mut(&json_name) {
        Some(picked) => picked.take(),
        None => unset_field(&message.descriptor(), &json_name)?,
    };
    serde_json::to_vec(&picked).map_err(|e| e.to_string())
}

/// The proto3 JSON of a field the writer left out because it holds its default: `[]` for a list,
/// `{}` for a map, `0`, `"0"` (64-bit), `false`, `""` or the enum's first value for a scalar, and
/// `null` for a field that has presence (a message, an `optional` scalar, a oneof member) and is
/// unset. Asked of prost-reflect itself, by writing an empty message with its defaults in.
fn unset_field(descriptor: &MessageDescriptor, json_name: &str) -> Result<Value, String> {
    let empty = DynamicMessage::new(descriptor.clone());
    let mut out = Vec::new();
    empty
        .serialize_with_options(&mut serde_json::Serializer::new(&mut out), &SerializeOptions::new().skip_default_fields(false))
        .map_err(|e| format!("cannot write `{}` as JSON: {e}", descriptor.full_name()))?;
    let mut defaults: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    Ok(defaults.get_mut(json_name).map(Value::take).unwrap_or(Value::Null))
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
    /// `i64`, `tags` (repeated), `maybe_flag` and `filter` (a message with `limit` and
    /// `name_prefix`).
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
        let filter = DescriptorProto {
            name: Some("Filter".into()),
            field: vec![field("limit", 1, Type::Uint32, Label::Optional, None), field("name_prefix", 2, Type::String, Label::Optional, None)],
            ..Default::default()
        };
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
        Binding::new(verb.into(), Template::parse(path).unwrap(), body.map(str::to_owned), None, method)
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
            request(&b, "/v1/things", "", Some(r#"{"text": "a", "tags": ["x", "x"], "filter": {"limit": 1.5e1}}"#)).unwrap(),
            json!({"text": "a", "tags": ["x", "x"], "filter": {"limit": 15}}),
            "repeated array items are fine; an integral exponent form is an integer"
        );
    }

    /// The message the request makes, as the server decodes it.
    fn sent(binding: &Binding, path: &str, query: &str, body: Option<&str>) -> Result<DynamicMessage, String> {
        let framed = encoded(binding, path, query, body)?;
        Ok(DynamicMessage::decode(binding.method.input(), &framed[PREFIX..]).unwrap())
    }

    fn get(message: &DynamicMessage, path: &str) -> prost_reflect::Value {
        match path.split_once('.') {
            Some((head, rest)) => match message.get_field_by_name(head).unwrap().as_ref() {
                prost_reflect::Value::Message(inner) => get(inner, rest),
                other => panic!("{head} is {other:?}"),
            },
            None => message.get_field_by_name(path).unwrap().into_owned(),
        }
    }

    /// protojson's "duplicate field": one field under its JSON name and its proto name, where the
    /// proto3 JSON reader keeps the last.
    #[test]
    fn one_field_under_both_its_names_is_refused() {
        let b = binding("POST", "/v1/things", Some("*"));
        let err = request(&b, "/v1/things", "", Some(r#"{"maybeFlag": true, "maybe_flag": false}"#)).unwrap_err();
        assert_eq!(
            err,
            "the request does not fit `t.v1.Thing`: field `maybe_flag`: `maybeFlag` and `maybe_flag` both name field `maybe_flag` of `t.v1.Thing`: give it once"
        );
        let err = request(&b, "/v1/things", "", Some(r#"{"filter": {"name_prefix": "a", "limit": 1, "namePrefix": "b"}}"#)).unwrap_err();
        assert!(err.starts_with("the request does not fit `t.v1.Thing`: field `filter.namePrefix`: `name_prefix` and `namePrefix`"), "{err}");
        // The same names in two objects, or either name alone, are fine.
        assert!(sent(&b, "/v1/things", "", Some(r#"{"maybeFlag": true, "filter": {"name_prefix": "a"}}"#)).is_ok());
        let b = binding("POST", "/v1/things/{text}", Some("filter"));
        let err = request(&b, "/v1/things/x", "", Some(r#"{"namePrefix": "a", "name_prefix": "b"}"#)).unwrap_err();
        assert!(err.contains("field `filter.name_prefix`: `namePrefix` and `name_prefix` both name field `name_prefix` of `t.v1.Filter`"), "{err}");
        // A path variable sets the field the body gave under its other name, and wins, even once
        // the request is walked again (an integral string in exponent form).
        let b = binding("PATCH", "/v1/things/{maybe_flag}", Some("*"));
        let got = sent(&b, "/v1/things/true", "", Some(r#"{"maybeFlag": false, "i64": "1e3"}"#)).unwrap();
        assert_eq!((get(&got, "maybe_flag"), get(&got, "i64")), (prost_reflect::Value::Bool(true), prost_reflect::Value::I64(1000)));
    }

    /// protojson takes an integral value in any number form, in a number or a string, exactly;
    /// before, a number went through a float (rounded, saturated past 64 bits) and a string in
    /// exponent form was refused.
    #[test]
    fn integral_values_in_exponent_or_decimal_form_are_taken_exactly() {
        let b = binding("POST", "/v1/things", Some("*"));
        let i64_of = |body: &str| sent(&b, "/v1/things", "", Some(body)).map(|m| get(&m, "i64"));
        assert_eq!(i64_of(r#"{"i64": 9007199254740993.0}"#), Ok(prost_reflect::Value::I64(9_007_199_254_740_993)));
        assert_eq!(i64_of(r#"{"i64": "9007199254740993"}"#), Ok(prost_reflect::Value::I64(9_007_199_254_740_993)));
        assert_eq!(i64_of(r#"{"i64": "1e3"}"#), Ok(prost_reflect::Value::I64(1000)));
        assert_eq!(i64_of(r#"{"i64": 1e3}"#), Ok(prost_reflect::Value::I64(1000)));
        assert_eq!(i64_of(r#"{"i64": -2.50E1}"#), Ok(prost_reflect::Value::I64(-25)));
        assert_eq!(i64_of(r#"{"i64": "-9.223372036854775808e18"}"#), Ok(prost_reflect::Value::I64(i64::MIN)));
        let limit = sent(&b, "/v1/things", "", Some(r#"{"text": "x", "filter": {"limit": 4.0, "name_prefix": "1e3"}}"#)).unwrap();
        assert_eq!((get(&limit, "filter.limit"), get(&limit, "filter.name_prefix")), (prost_reflect::Value::U32(4), prost_reflect::Value::String("1e3".into())));

        // Floats where the message has none, or not where a field wants an integer, keep their turn.
        assert_eq!(
            request(&b, "/v1/things", "", Some(r#"{"i64": [1.5, {"x": 2.5}], "tags": [0.5], "filter": {"limit": 3.0}}"#)).unwrap(),
            json!({"i64": [1.5, {"x": 2.5}], "tags": [0.5], "filter": {"limit": 3}})
        );

        let err = i64_of(r#"{"i64": 1.5}"#).unwrap_err();
        assert_eq!(err, "the request does not fit `t.v1.Thing`: field `i64`: 1.5 is not an integer (int64)");
        let err = i64_of(r#"{"i64": "15e-1"}"#).unwrap_err();
        assert_eq!(err, "the request does not fit `t.v1.Thing`: field `i64`: 15e-1 is not an integer (int64)");
        let err = i64_of(r#"{"i64": 9223372036854775808.0}"#).unwrap_err();
        assert_eq!(err, "the request does not fit `t.v1.Thing`: field `i64`: 9223372036854775808.0 is out of range for int64");
        let err = i64_of(r#"{"filter": {"limit": 4294967296e0}}"#).unwrap_err();
        assert_eq!(err, "the request does not fit `t.v1.Thing`: field `filter.limit`: 4294967296e0 is out of range for uint32");

        // The query and the path, too: taken once the plain reading failed; a value that is not
        // integral still names its parameter.
        let b = binding("GET", "/v1/things/{i64}", None);
        let got = sent(&b, "/v1/things/2e1", "filter.limit=3.0", None).unwrap();
        assert_eq!((get(&got, "i64"), get(&got, "filter.limit")), (prost_reflect::Value::I64(20), prost_reflect::Value::U32(3)));
        let err = encoded(&b, "/v1/things/1", "filter.limit=0.5", None).unwrap_err();
        assert_eq!(err, "query parameter `filter.limit` does not fit field `limit` (uint32) of `t.v1.Filter`: 0.5 is not an integer (uint32)");
        let err = encoded(&b, "/v1/things/1e19", "", None).unwrap_err();
        assert_eq!(err, "path variable `i64` does not fit field `i64` (int64) of `t.v1.Thing`: 1e19 is out of range for int64");
    }

    /// google/api/http.proto: the query sets only the fields neither the body nor the path
    /// covers. Before, `?filter.limit=` was merged into the body (overriding the body's value,
    /// or replacing a body that is not an object), and `?text=` lost silently to the path.
    #[test]
    fn query_parameters_inside_the_body_field_or_the_path_are_refused() {
        let b = binding("POST", "/v1/things/{text}", Some("filter"));
        let body = Some(r#"{"limit": 1}"#);
        let err = request(&b, "/v1/things/x", "filter.limit=5", body).unwrap_err();
        assert_eq!(
            err,
            "query parameter `filter.limit` is inside the request body's field `filter`: give it in the body (only fields outside the body are taken from the query)"
        );
        let err = request(&b, "/v1/things/x", "filter.namePrefix=q", Some("[1, 2]")).unwrap_err();
        assert!(err.starts_with("query parameter `filter.namePrefix` is inside the request body's field `filter`"), "{err}");
        let err = request(&b, "/v1/things/x", "filter.nope=1", body).unwrap_err();
        assert!(err.starts_with("query parameter `filter.nope` is inside the request body's field `filter`"), "{err}");
        assert_eq!(request(&b, "/v1/things/x", "filter=1", body).unwrap_err(), "query parameter `filter` is the request body's field: give it in the body");
        let err = request(&b, "/v1/things/x", "text=y", body).unwrap_err();
        assert_eq!(err, "query parameter `text` sets the field of path variable `text`: it is taken from the path only");
        // The fields outside both are query parameters, as before.
        assert_eq!(
            request(&b, "/v1/things/x", "i64=3&tags=a", body).unwrap(),
            json!({"filter": {"limit": 1}, "i64": "3", "tags": ["a"], "text": "x"})
        );

        // `body: "*"`: no query parameter at all (http.proto: "there is no URL query parameter").
        let b = binding("POST", "/v1/things", Some("*"));
        let err = request(&b, "/v1/things", "i64=3", Some("{}")).unwrap_err();
        assert!(err.starts_with("unknown query parameter `i64`: the request body is the whole message"), "{err}");
    }

    /// A path variable inside the body's field sets it (and wins), but never replaces a body
    /// that is not an object: before, `[1, 2]` became `{"name_prefix": ...}` and the call went on.
    #[test]
    fn a_path_variable_inside_a_body_that_is_not_an_object_is_refused() {
        let b = binding("PATCH", "/v1/things/{filter.name_prefix}", Some("filter"));
        let err = request(&b, "/v1/things/p", "", Some("[1, 2]")).unwrap_err();
        assert_eq!(
            err,
            "path variable `filter.name_prefix` sets a field inside `filter`, which the request body gives as an array: the body must give it as a JSON object (or leave it out)"
        );
        assert_eq!(request(&b, "/v1/things/p", "", Some(r#"{"limit": 2, "name_prefix": "q"}"#)).unwrap(), json!({"filter": {"limit": 2, "name_prefix": "p"}}));
        assert_eq!(request(&b, "/v1/things/p", "", Some("null")).unwrap(), json!({"filter": {"name_prefix": "p"}}), "null is an unset message");
        let b = binding("PATCH", "/v1/things/{filter.limit}", Some("*"));
        let err = request(&b, "/v1/things/3", "", Some(r#"{"filter": "x"}"#)).unwrap_err();
        assert!(err.starts_with("path variable `filter.limit` sets a field inside `filter`, which the request body gives as a string"), "{err}");
    }

    #[test]
    fn a_body_for_a_binding_without_one_names_what_the_client_sent() {
        let b = binding("DELETE", "/v1/things/{text}", None);
        assert_eq!(request(&b, "/v1/things/a%20b", "", Some("{}")).unwrap_err(), "DELETE /v1/things/a%20b takes no request body");
        assert_eq!(request(&b, "/v1/things/a%20b", "", Some(" \n")).unwrap(), json!({"text": "a b"}), "an empty body is no body");
    }
    /// `response_body` naming a field left at its default answers that default as proto3 JSON
    /// writes it (`[]`, `0`, `"0"`, `false`, `""`), and `null` for an unset message: before, every
    /// one answered `null`, which a client reading a list or a count cannot take.
    #[test]
    fn response_body_naming_a_default_field_answers_its_default() {
        let output = binding("GET", "/v1/things", None).method.output();
        let framed = |message: &DynamicMessage| {
            let payload = message.encode_to_vec();
            let mut framed = vec![0];
            framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            framed.extend_from_slice(&payload);
            framed
        };
        let empty = framed(&DynamicMessage::new(output.clone()));
        let answer = |body: &[u8], field: &str| String::from_utf8(decode_response(&output, body, Some(field)).unwrap()).unwrap();
        assert_eq!(answer(&empty, "tags"), "[]");
        assert_eq!(answer(&empty, "i64"), r#""0""#);
        assert_eq!(answer(&empty, "text"), r#""""#);
        assert_eq!(answer(&empty, "maybe_flag"), "false");
        assert_eq!(answer(&empty, "filter"), "null");
        let mut set = DynamicMessage::new(output.clone());
        set.set_field_by_name("tags", prost_reflect::Value::List(vec![prost_reflect::Value::String("a".into())]));
        set.set_field_by_name("filter", prost_reflect::Value::Message(DynamicMessage::new(output.parent_pool().get_message_by_name("t.v1.Filter").unwrap())));
        assert_eq!(answer(&framed(&set), "tags"), r#"["a"]"#);
        assert_eq!(answer(&framed(&set), "filter"), "{}", "a set message with default fields is an empty object");
    }
}
