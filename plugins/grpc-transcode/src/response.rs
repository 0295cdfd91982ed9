//! What the proto3 JSON writer gets wrong on its own in a response message, checked before it
//! writes one: a `google.protobuf.Duration` whose seconds and nanos have different signs (it
//! writes the sum with a flipped sign: 1 s and -5 ns as `-0.999999995s`) and a
//! `google.protobuf.Timestamp` whose nanos are outside 0 to 999,999,999 (it writes another
//! instant). protojson refuses to write either: such an answer is not a valid message, and the
//! client gets a 502 as for any other malformed answer, never a wrong value.

use prost_reflect::{DynamicMessage, MapKey, ReflectMessage, Value};

/// How deep the walk follows nested messages (prost's decoder stops at 100 levels too).
const MAX_DEPTH: usize = 100;

/// A value the writer would get wrong: its path in the message (`took`, `items[2].took`,
/// `byName[a].at`, in JSON names) and why.
type Wrong = (String, String);

/// Refuses a message holding a value the module lists; the error names the field's path.
pub fn check(message: &DynamicMessage) -> Result<(), String> {
    check_message(message, 0).map_err(|(path, why)| format!("field `{path}` {why}"))
}

/// [`check`] for one message at `depth`: a well-known type by its own rule, any other by its
/// fields.
fn check_message(message: &DynamicMessage, depth: usize) -> Result<(), Wrong> {
    match message.descriptor().full_name() {
        "google.protobuf.Duration" => return duration(message).map_err(|why| (String::new(), why)),
        "google.protobuf.Timestamp" => return timestamp(message).map_err(|why| (String::new(), why)),
        "google.protobuf.Any" => return any_payload(message).map_or(Ok(()), |inner| check_message(&inner, depth + 1)),
        name if name.starts_with("google.protobuf.") => return Ok(()),
        _ => {}
    }
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    for (field, value) in message.fields() {
        check_value(value, depth).map_err(|(path, why)| (within(field.json_name(), &path), why))?;
    }
    Ok(())
}

/// [`check`] for one field's value: a message, or each item of a list or map.
fn check_value(value: &Value, depth: usize) -> Result<(), Wrong> {
    match value {
        Value::Message(message) => check_message(message, depth + 1),
        Value::List(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            check_value(item, depth).map_err(|(path, why)| (within(&format!("[{i}]"), &path), why))
        }),
        Value::Map(entries) => entries.iter().try_for_each(|(key, item)| {
            check_value(item, depth).map_err(|(path, why)| (within(&format!("[{}]", key_text(key)), &path), why))
        }),
        _ => Ok(()),
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
