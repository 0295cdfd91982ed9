//! Reading a JSON request body in one pass, strictly: a key given twice in one object is refused,
//! and the reader notes, cheaply, what the proto3 JSON reader would get wrong on its own, for the
//! typed pass ([`crate::walk`]) to check: a number with a fraction or exponent (its exact text is
//! needed), two keys that may name one field (`userId` and `user_id`), and a string that may be
//! a `Timestamp` or `Duration` finer than nanoseconds or at a leap second. A body with none of
//! these (the usual one: no number with a fraction or exponent, each field under one name) is
//! read once and never walked; the cost on it is a look at each string's last bytes (and four
//! fixed ones) and, for a key that is one of a field's two names, a lookup.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use prost_reflect::{Kind, MessageDescriptor};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::numbers::may_be_misread_time;

/// The names of the fields reachable from a request message that have two names, the proto
/// name and another JSON name (`user_id` / `userId`, or a `json_name` option), each mapped to its
/// other names: an object holding a name and one of its twins may give one field twice. Built
/// once per binding, at configure.
#[derive(Debug, Clone, Default)]
pub struct Twins {
    names: HashMap<String, Vec<String>>,
    /// Bit `n` is set when a name of length `n` (63 for longer) is in `names`: most keys are told
    /// apart by their length alone, without hashing.
    lengths: u64,
}

impl Twins {
    /// The twins of every message reachable from `message` through its fields.
    pub fn of(message: &MessageDescriptor) -> Self {
        let mut twins = Self::default();
        let mut seen = HashSet::new();
        let mut pending = vec![message.clone()];
        while let Some(message) = pending.pop() {
            // The well-known types have JSON forms of their own, not objects of their fields.
            if message.full_name().starts_with("google.protobuf.") || !seen.insert(message.full_name().to_owned()) {
                continue;
            }
            for field in message.fields() {
                if field.name() != field.json_name() {
                    twins.add(field.name(), field.json_name());
                    twins.add(field.json_name(), field.name());
                }
                // A map field's values are its entry message's `value` field.
                if let Kind::Message(inner) = field.kind() {
                    pending.push(inner);
                }
            }
        }
        twins
    }

    fn add(&mut self, name: &str, twin: &str) {
        self.lengths |= length_bit(name);
        let entry = self.names.entry(name.to_owned()).or_default();
        if !entry.iter().any(|t| t == twin) {
            entry.push(twin.to_owned());
        }
    }

    /// Whether `object` already holds a twin of `key`.
    fn clash(&self, key: &str, object: &Map<String, Value>) -> bool {
        self.lengths & length_bit(key) != 0 && self.names.get(key).is_some_and(|twins| twins.iter().any(|t| object.contains_key(t)))
    }
}

fn length_bit(name: &str) -> u64 {
    1 << name.len().min(63)
}

/// What the reader saw that the typed pass must look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// A number with a fraction or an exponent, or an integer too large for 64 bits: read as a
    /// float, which an integer field must not take rounded.
    pub floats: bool,
    /// An object holding two names of one field (or two keys that look so: a map's keys).
    pub twins: bool,
    /// A string that may be a `Timestamp` or `Duration` the proto3 JSON reader would change
    /// silently: more than nine fractional digits, or a leap second.
    pub fine_times: bool,
}

impl Signals {
    /// Whether the typed pass has anything to look at.
    pub fn any(self) -> bool {
        self.floats || self.twins || self.fine_times
    }
}

/// Reads `bytes` as one JSON value, refusing a key given twice in one object (as protojson does),
/// where `Value` keeps the last: a proxy, WAF or plugin that reads the first would see another
/// value than the gRPC server gets. Also says what the typed pass must look at.
pub fn read(bytes: &[u8], twins: &Twins) -> Result<(Value, Signals), serde_json::Error> {
    let signals = Cell::new(Signals::default());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Reader { twins, signals: &signals }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok((value, signals.get()))
}

/// The strict reader: a [`DeserializeSeed`] and its own visitor, carried down the value.
#[derive(Clone, Copy)]
struct Reader<'a> {
    twins: &'a Twins,
    signals: &'a Cell<Signals>,
}

impl Reader<'_> {
    fn note(&self, change: impl FnOnce(&mut Signals)) {
        let mut signals = self.signals.get();
        change(&mut signals);
        self.signals.set(signals);
    }
}

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
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
        self.note(|s| s.floats = true);
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.visit_string(v.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        if may_be_misread_time(&v) {
            self.note(|s| s.fine_times = true);
        }
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(self)?;
            if map.contains_key(&key) {
                return Err(A::Error::custom(format!("the key `{key}` is given twice")));
            }
            if self.twins.clash(&key, &map) {
                self.note(|s| s.twins = true);
            }
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// The texts of the numbers of a body that [`read`] read as floats (a fraction, an exponent, `-0`,
/// or past 64 bits), in the body's order, with the float read for each: the typed pass takes
/// them one by one as it meets float values in the same order (objects keep their keys' order:
/// serde_json's `preserve_order`), and an integer field gets the exact value of the text.
pub struct Floats<'a> {
    texts: Vec<(&'a str, f64)>,
    next: usize,
}

impl<'a> Floats<'a> {
    /// The float numbers of `bytes`, a body [`read`] accepted.
    pub fn of(bytes: &'a [u8]) -> Self {
        let mut texts = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => i = string_end(bytes, i + 1),
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                        i += 1;
                    }
                    // The body is valid JSON, so the text is ASCII; serde_json reads it again to
                    // tell a float from an integer as it did, and to give the float it made.
                    let text = std::str::from_utf8(&bytes[start..i]).unwrap_or_default();
                    if let Some(float) = serde_json::from_str::<Number>(text).ok().filter(Number::is_f64).and_then(|n| n.as_f64()) {
                        texts.push((text, float));
                    }
                }
                _ => i += 1,
            }
        }
        Self { texts, next: 0 }
    }

    /// The text of the next float of the body, which must be `value` (else the order was not the
    /// body's, and `None` keeps the float as it is).
    pub fn take(&mut self, value: f64) -> Option<&'a str> {
        let (text, float) = *self.texts.get(self.next)?;
        self.next += 1;
        debug_assert!(float.to_bits() == value.to_bits(), "float {value} met where the body has {text}");
        (float.to_bits() == value.to_bits()).then_some(text)
    }
}

/// The index just past the string whose contents start at `i` (after its opening quote).
fn string_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn signals(body: &str) -> Signals {
        read(body.as_bytes(), &Twins::default()).map(|(_, s)| s).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    #[test]
    fn a_key_given_twice_in_one_object_is_refused_at_any_depth() {
        let err = read(br#"{"a": 1, "a": 2}"#, &Twins::default()).unwrap_err().to_string();
        assert!(err.starts_with("the key `a` is given twice"), "{err}");
        let err = read(br#"{"a": [{"b": {"c": 1, "c": 1}}]}"#, &Twins::default()).unwrap_err().to_string();
        assert!(err.starts_with("the key `c` is given twice"), "{err}");
        assert_eq!(read(br#"{"a": [1, 1], "b": {"a": 1}}"#, &Twins::default()).unwrap().0, json!({"a": [1, 1], "b": {"a": 1}}));
    }

    #[test]
    fn the_usual_body_needs_no_typed_pass() {
        assert!(!signals(r#"{"id": "9007199254740993", "n": -5, "tags": ["a"], "at": "2024-01-01T00:00:00.123Z", "d": "1.5s"}"#).any());
        assert_eq!(signals(r#"{"x": 1.5}"#), Signals { floats: true, ..Signals::default() });
        assert_eq!(signals(r#"[1e3]"#), Signals { floats: true, ..Signals::default() });
        assert_eq!(signals(r#"{"x": -0}"#), Signals { floats: true, ..Signals::default() }, "serde_json reads -0 as a float");
        assert_eq!(signals(r#"{"x": 18446744073709551616}"#), Signals { floats: true, ..Signals::default() });
        assert_eq!(signals(r#"{"d": "1.0000000001s"}"#), Signals { fine_times: true, ..Signals::default() });
    }

    #[test]
    fn twin_names_of_one_field_are_noticed_in_either_order() {
        let mut twins = Twins::default();
        twins.add("user_id", "userId");
        twins.add("userId", "user_id");
        let saw = |body: &str| read(body.as_bytes(), &twins).unwrap().1.twins;
        assert!(saw(r#"{"userId": 1, "user_id": 2}"#));
        assert!(saw(r#"{"user_id": 1, "x": {}, "userId": 2}"#));
        assert!(saw(r#"{"a": {"user_id": 1, "userId": 2}}"#));
        assert!(!saw(r#"{"userId": 1, "a": {"user_id": 2}}"#), "two objects");
        assert!(!saw(r#"{"userId": 1, "user_ids": 2}"#));
    }

    #[test]
    fn float_texts_come_in_the_bodys_order_strings_skipped() {
        let body = br#"{"a\"1.5": 2.50e1, "b": [1, "3.5", -0, 7], "c": {"d": 9007199254740993.0}, "e": 18446744073709551616}"#;
        let mut floats = Floats::of(body);
        assert_eq!(floats.texts.iter().map(|(t, _)| *t).collect::<Vec<_>>(), ["2.50e1", "-0", "9007199254740993.0", "18446744073709551616"]);
        assert_eq!(floats.take(25.0), Some("2.50e1"));
        assert_eq!(floats.take(-0.0), Some("-0"));
    }
}
