//! What the proto3 JSON writer gets wrong on its own in a response message, checked before it
//! writes one: a `google.protobuf.Duration` whose seconds and nanos have different signs (it
//! writes the sum with a flipped sign: 1 s and -5 ns as `-0.999999995s`) and a
//! `google.protobuf.Timestamp` whose nanos are outside 0 to 999,999,999 (it writes another
//! instant). protojson refuses to write either: such an answer is not a valid message, and the
//! client gets a 502 as for any other malformed answer, never a wrong value.
//!
//! And a `google.protobuf.FloatValue` or `DoubleValue` holding NaN or an infinity, which the
//! writer hands serde_json as a float that it writes `null`: proto3 JSON writes these
//! `"NaN"`, `"Infinity"` and `"-Infinity"`, as it does for plain float fields. The walk says
//! whether the message holds one; only then the written JSON is walked beside the message and
//! those values put in ([`write_non_finite`]): the usual answer is written once, as before.

use prost_reflect::{DynamicMessage, MapKey, ReflectMessage, Value};
use serde_json::Value as Json;

/// How deep the walk follows nested messages (prost's decoder stops at 100 levels too).
const MAX_DEPTH: usize = 100;

/// A value the writer would get wrong: its path in the message (`took`, `items[2].took`,
/// `byName[a].at`, in JSON names) and why.
type Wrong = (String, String);

/// Refuses a message holding a value the writer would get wrong (the module says which); the
/// error names the field's path. `Ok(true)`: the message holds a non-finite `FloatValue` or
/// `DoubleValue`, which [`write_non_finite`] must then put in the written JSON.
pub fn check(message: &DynamicMessage) -> Result<bool, String> {
    check_message(message, 0).map_err(|(path, why)| format!("field `{path}` {why}"))
}

/// [`check`] for one message at `depth`: a well-known type by its own rule, any other by its
/// fields.
fn check_message(message: &DynamicMessage, depth: usize) -> Result<bool, Wrong> {
    // First: an `Any` recurses too (a chain of them nested in an answer).
    if depth >= MAX_DEPTH {
        return Ok(false);
    }
    match message.descriptor().full_name() {
        "google.protobuf.Duration" => return duration(message).map(|()| false).map_err(|why| (String::new(), why)),
        "google.protobuf.Timestamp" => return timestamp(message).map(|()| false).map_err(|why| (String::new(), why)),
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => return Ok(non_finite(message).is_some()),
        "google.protobuf.Any" => return any_payload(message).map_or(Ok(false), |inner| check_message(&inner, depth + 1)),
        name if name.starts_with("google.protobuf.") => return Ok(false),
        _ => {}
    }
    let mut found = false;
    for (field, value) in message.fields() {
        found |= check_value(value, depth).map_err(|(path, why)| (within(field.json_name(), &path), why))?;
    }
    Ok(found)
}

/// [`check`] for one field's value: a message, or each item of a list or map.
fn check_value(value: &Value, depth: usize) -> Result<bool, Wrong> {
    let mut found = false;
    match value {
        Value::Message(message) => found = check_message(message, depth + 1)?,
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                found |= check_value(item, depth).map_err(|(path, why)| (within(&format!("[{i}]"), &path), why))?;
            }
        }
        Value::Map(entries) => {
            for (key, item) in entries {
                found |= check_value(item, depth).map_err(|(path, why)| (within(&format!("[{}]", key_text(key)), &path), why))?;
            }
        }
        _ => {}
    }
    Ok(found)
}

/// Puts into `json`, `message` as the writer wrote it, the proto3 JSON text of each non-finite
/// `FloatValue` and `DoubleValue` (`"NaN"`, `"Infinity"`, `"-Infinity"`) where it wrote `null`:
/// the message and its JSON walked side by side, each field under its JSON name.
pub fn write_non_finite(message: &DynamicMessage, json: &mut Json) {
    patch_message(message, json, 0);
}

/// [`write_non_finite`] for one message at `depth` and the JSON written for it.
fn patch_message(message: &DynamicMessage, json: &mut Json, depth: usize) {
    if depth >= MAX_DEPTH {
        return;
    }
    match message.descriptor().full_name() {
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => {
            if let Some(text) = non_finite(message) {
                *json = Json::String(text.to_owned());
            }
            return;
        }
        // Written `{"@type", "value": ...}` for a well-known type, `{"@type", fields...}` else.
        "google.protobuf.Any" => {
            if let Some(inner) = any_payload(message) {
                let slot = if inner.descriptor().full_name().starts_with("google.protobuf.") { json.get_mut("value") } else { Some(json) };
                if let Some(slot) = slot {
                    patch_message(&inner, slot, depth + 1);
                }
            }
            return;
        }
        name if name.starts_with("google.protobuf.") => return,
        _ => {}
    }
    let Json::Object(object) = json else { return };
    for (field, value) in message.fields() {
        if let Some(slot) = object.get_mut(field.json_name()) {
            patch_value(value, slot, depth);
        }
    }
}

/// [`write_non_finite`] for one field's value and its JSON: a message, or each item of a list
/// or map.
fn patch_value(value: &Value, json: &mut Json, depth: usize) {
    match (value, json) {
        (Value::Message(message), json) => patch_message(message, json, depth + 1),
        (Value::List(items), Json::Array(slots)) => {
            for (item, slot) in items.iter().zip(slots.iter_mut()) {
                patch_value(item, slot, depth);
            }
        }
        (Value::Map(entries), Json::Object(slots)) => {
            for (key, item) in entries {
                if let Some(slot) = slots.get_mut(&key_text(key)) {
                    patch_value(item, slot, depth);
                }
            }
        }
        _ => {}
    }
}

/// The proto3 JSON text of a `FloatValue` or `DoubleValue` holding NaN or an infinity; `None`
/// for a finite value, which the writer writes right.
fn non_finite(wrapper: &DynamicMessage) -> Option<&'static str> {
    let value = match wrapper.get_field_by_name("value")?.as_ref() {
        Value::F32(f) => f64::from(*f),
        Value::F64(f) => *f,
        _ => return None,
    };
    match value {
        v if v.is_nan() => Some("NaN"),
        v if v == f64::INFINITY => Some("Infinity"),
        v if v == f64::NEG_INFINITY => Some("-Infinity"),
        _ => None,
    }
}

/// A `Duration` the writer writes as it is: seconds and nanos of one sign (or zero).
fn duration(message: &DynamicMessage) -> Result<(), String> {
    let seconds = message.get_field_by_name("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
    let nanos = message.get_field_by_name("nanos").and_then(|v| v.as_i32()).unwrap_or(0);
    if (seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0) {
        return Err(format!(
            "is a google.protobuf.Duration of {seconds} seconds and {nanos} nanos: their signs differ, which no duration's do"
        ));
    }
    Ok(())
}

/// A `Timestamp` the writer writes as it is: nanos within a second.
fn timestamp(message: &DynamicMessage) -> Result<(), String> {
    let nanos = message.get_field_by_name("nanos").and_then(|v| v.as_i32()).unwrap_or(0);
    if !(0..=999_999_999).contains(&nanos) {
        return Err(format!("is a google.protobuf.Timestamp with {nanos} nanos: they must be 0 to 999999999"));
    }
    Ok(())
}

/// The message an `Any` holds, as the writer decodes it (its type from the same pool); `None`
/// when it cannot, which the writer refuses itself.
fn any_payload(any: &DynamicMessage) -> Option<DynamicMessage> {
    let url = any.get_field_by_name("type_url")?;
    let name = url.as_str()?.rsplit_once('/')?.1;
    let descriptor = any.descriptor().parent_pool().get_message_by_name(name)?;
    let value = any.get_field_by_name("value")?;
    DynamicMessage::decode(descriptor, value.as_bytes()?.as_ref()).ok()
}

/// A map key as proto3 JSON writes it: the key's text.
fn key_text(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// `rest` (a path inside the value at `key`) as a path from `key`'s parent: `key.rest`, or
/// `key[1]...` for an index.
fn within(key: &str, rest: &str) -> String {
    match rest {
        "" => key.to_owned(),
        index if index.starts_with('[') => format!("{key}{index}"),
        rest => format!("{key}.{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
    use prost_reflect::prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};
    use prost_reflect::{DescriptorPool, MessageDescriptor};

    use crate::message::decode_response;

    use super::*;

    /// A message-typed field of `type_name`.
    fn field(name: &str, number: i32, label: Label, type_name: &str) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(label as i32),
            r#type: Some(Type::Message as i32),
            type_name: Some(type_name.into()),
            ..Default::default()
        }
    }

    /// `w.v1.Wkt`: `at` (Timestamp), `took` (Duration), `ratio` (FloatValue), `big`
    /// (DoubleValue), `ratios` (repeated FloatValue), `inner` (a `Wkt`), `items` (repeated `Wkt`).
    fn wkt() -> MessageDescriptor {
        let message = DescriptorProto {
            name: Some("Wkt".into()),
            field: vec![
                field("at", 1, Label::Optional, ".google.protobuf.Timestamp"),
                field("took", 2, Label::Optional, ".google.protobuf.Duration"),
                field("ratio", 3, Label::Optional, ".google.protobuf.FloatValue"),
                field("big", 4, Label::Optional, ".google.protobuf.DoubleValue"),
                field("ratios", 5, Label::Repeated, ".google.protobuf.FloatValue"),
                field("inner", 6, Label::Optional, ".w.v1.Wkt"),
                field("items", 7, Label::Repeated, ".w.v1.Wkt"),
            ],
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("w.proto".into()),
            package: Some("w.v1".into()),
            syntax: Some("proto3".into()),
            dependency: vec!["google/protobuf/timestamp.proto".into(), "google/protobuf/duration.proto".into(), "google/protobuf/wrappers.proto".into()],
            message_type: vec![message],
            ..Default::default()
        };
        let mut pool = DescriptorPool::global();
        pool.add_file_descriptor_proto(file).unwrap();
        pool.get_message_by_name("w.v1.Wkt").unwrap()
    }

    /// A well-known-type message of `name` with `fields` set.
    fn known(pool: &DescriptorPool, name: &str, fields: &[(&str, Value)]) -> Value {
        let mut message = DynamicMessage::new(pool.get_message_by_name(name).unwrap());
        for (field, value) in fields {
            message.set_field_by_name(field, value.clone());
        }
        Value::Message(message)
    }

    /// What the client gets for `message` as the upstream's answer: the JSON, or the 502's message.
    fn answer(message: &DynamicMessage) -> Result<String, String> {
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
        framed.extend_from_slice(&message.encode_to_vec());
        decode_response(&message.descriptor(), &framed, None).map(|json| String::from_utf8(json).unwrap())
    }

    /// Proto3 JSON writes a non-finite float wrapper as it writes a plain float field; before,
    /// serde_json wrote each `null`, as if the field were unset.
    #[test]
    fn non_finite_float_wrappers_are_written_nan_and_infinity() {
        let descriptor = wkt();
        let pool = descriptor.parent_pool().clone();
        let float = |f: f32| known(&pool, "google.protobuf.FloatValue", &[("value", Value::F32(f))]);
        let double = |f: f64| known(&pool, "google.protobuf.DoubleValue", &[("value", Value::F64(f))]);
        let mut inner = DynamicMessage::new(descriptor.clone());
        inner.set_field_by_name("big", double(f64::INFINITY));
        let mut message = DynamicMessage::new(descriptor.clone());
        message.set_field_by_name("ratio", float(f32::NAN));
        message.set_field_by_name("big", double(f64::NEG_INFINITY));
        message.set_field_by_name("ratios", Value::List(vec![float(f32::INFINITY), float(1.5), float(f32::NEG_INFINITY)]));
        message.set_field_by_name("inner", Value::Message(inner.clone()));
        message.set_field_by_name("items", Value::List(vec![Value::Message(DynamicMessage::new(descriptor.clone())), Value::Message(inner)]));
        assert_eq!(
            answer(&message).unwrap(),
            r#"{"ratio":"NaN","big":"-Infinity","ratios":["Infinity",1.5,"-Infinity"],"inner":{"big":"Infinity"},"items":[{},{"big":"Infinity"}]}"#
        );
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
        framed.extend_from_slice(&message.encode_to_vec());
        assert_eq!(decode_response(&descriptor, &framed, Some("ratio")).unwrap(), br#""NaN""#, "`response_body` too");
        // Finite values are written as before.
        let mut message = DynamicMessage::new(descriptor.clone());
        message.set_field_by_name("ratio", float(0.25));
        message.set_field_by_name("big", double(-2.5));
        assert_eq!(answer(&message).unwrap(), r#"{"ratio":0.25,"big":-2.5}"#);
    }

    /// protojson refuses to write these; before, a Duration of 1 s and -5 ns was written
    /// `-0.999999995s` and a Timestamp's nanos out of range another instant.
    #[test]
    fn a_duration_of_mixed_signs_or_a_timestamp_with_nanos_out_of_range_is_refused() {
        let descriptor = wkt();
        let pool = descriptor.parent_pool().clone();
        let mut message = DynamicMessage::new(descriptor.clone());
        message.set_field_by_name("took", known(&pool, "google.protobuf.Duration", &[("seconds", Value::I64(1)), ("nanos", Value::I32(-5))]));
        assert_eq!(
            answer(&message).unwrap_err(),
            "the gRPC answer is not a valid `w.v1.Wkt`: field `took` is a google.protobuf.Duration of 1 seconds and -5 nanos: their signs differ, which no duration's do"
        );

        let mut inner = DynamicMessage::new(descriptor.clone());
        inner.set_field_by_name("at", known(&pool, "google.protobuf.Timestamp", &[("seconds", Value::I64(1)), ("nanos", Value::I32(-1))]));
        let mut message = DynamicMessage::new(descriptor.clone());
        message.set_field_by_name("items", Value::List(vec![Value::Message(DynamicMessage::new(descriptor.clone())), Value::Message(inner)]));
        let err = answer(&message).unwrap_err();
        assert!(err.ends_with("field `items[1].at` is a google.protobuf.Timestamp with -1 nanos: they must be 0 to 999999999"), "{err}");

        // One sign, or zero seconds, is a duration.
        for (seconds, nanos, text) in [(-1, -5, "-1.000000005s"), (0, -5, "-0.000000005s"), (2, 500_000_000, "2.500s")] {
            let mut message = DynamicMessage::new(descriptor.clone());
            message.set_field_by_name("took", known(&pool, "google.protobuf.Duration", &[("seconds", Value::I64(seconds)), ("nanos", Value::I32(nanos))]));
            assert_eq!(answer(&message).unwrap(), format!(r#"{{"took":"{text}"}}"#));
        }
    }
}
