//! The typed pass over a request's JSON, before the proto3 JSON reader, for what that reader gets
//! wrong on its own (protojson refuses or reads each of these otherwise):
//! - one field given under two names in one object of the body (`{"userId": 1, "user_id": 2}`):
//!   refused, where the reader keeps the last;
//! - an integer field given a number or string with a fraction or exponent (`1e3`, `"2.0"`):
//!   taken when integral, exactly (from the number's text, never a float), refused otherwise or
//!   out of range, where the reader rounds numbers through a float (and saturates past 64 bits)
//!   and refuses such strings;
//! - a `Timestamp` or `Duration` with more than nine fractional digits: refused, where the
//!   reader cuts it to nanoseconds;
//! - a `Timestamp` at second 60 (a leap second): refused, where the reader makes it :59.
//!
//! It runs on the body alone ([`body`]) only when its reader signalled one of these
//! ([`crate::json::Signals`]), and on the whole request ([`request`]) only once it failed to
//! encode (an integral string in exponent form, from the body, query or path): never on the
//! usual request.

use std::collections::HashMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::json::Floats;
use crate::numbers::{check_time, integer_in, integer_range, is_time};

/// A value the typed pass refuses: where (a path of keys and indexes, built on the way out) and
/// why.
#[derive(Debug)]
pub struct Mistake {
    steps: Vec<Step>,
    /// What is wrong with the value.
    pub why: String,
}

#[derive(Debug)]
enum Step {
    Key(String),
    Index(usize),
}

impl Mistake {
    fn new(why: String) -> Self {
        Self { steps: Vec::new(), why }
    }

    fn in_key(mut self, key: &str) -> Self {
        self.steps.push(Step::Key(key.to_owned()));
        self
    }

    fn in_index(mut self, index: usize) -> Self {
        self.steps.push(Step::Index(index));
        self
    }

    /// The dotted path of the value, as the client spelled it: `nested.limit`, `nestedList[1].limit`.
    pub fn path(&self) -> String {
        let mut path = String::new();
        for step in self.steps.iter().rev() {
            match step {
                Step::Key(key) if path.is_empty() => path.push_str(key),
                Step::Key(key) => {
                    path.push('.');
                    path.push_str(key);
                }
                Step::Index(index) => path.push_str(&format!("[{index}]")),
            }
        }
        path
    }
}

/// Checks `object`, the body of a request for `message` as read (alone, before the query and
/// path join it), as the module says, changing integral values given in another form into plain
/// integers. `floats`: the texts of the body's float numbers, when it has some (a float of an
/// integer field is then taken exactly from its text); `None` leaves floats as they are.
pub fn body(message: &MessageDescriptor, object: &mut Map<String, Value>, floats: Option<Floats<'_>>) -> Result<(), Mistake> {
    Walk { floats, once: true }.object(message, object)
}

/// Checks `object`, a whole request for `message` (body, query and path joined) or one value of
/// the query or path, changing integral strings given in another form into plain integers. A
/// field under both its names is not refused here: a path variable may set, and win over, the
/// field the body gave under its other name.
pub fn request(message: &MessageDescriptor, object: &mut Map<String, Value>) -> Result<(), Mistake> {
    Walk { floats: None, once: false }.object(message, object)
}

struct Walk<'a> {
    floats: Option<Floats<'a>>,
    /// Whether a field under two names in one object is refused.
    once: bool,
}

impl Walk<'_> {
    fn object(&mut self, message: &MessageDescriptor, object: &mut Map<String, Value>) -> Result<(), Mistake> {
        // The key each field was given under, by field number: a second key is a field given twice.
        let mut given: HashMap<u32, &str> = HashMap::new();
        for (key, item) in object.iter_mut() {
            // As the proto3 JSON reader looks fields up; an unknown key is its to refuse.
            let Some(field) = message.get_field_by_json_name(key).or_else(|| message.get_field_by_name(key)) else {
                self.skip(item);
                continue;
            };
            if let Some(first) = given.insert(field.number(), key).filter(|_| self.once) {
                let why = format!("`{first}` and `{key}` both name field `{}` of `{}`: give it once", field.name(), message.full_name());
                return Err(Mistake::new(why).in_key(key));
            }
            self.field(&field, item).map_err(|m| m.in_key(key))?;
        }
        Ok(())
    }

    fn field(&mut self, field: &FieldDescriptor, value: &mut Value) -> Result<(), Mistake> {
        let kind = field.kind();
        match (value, &kind) {
            (Value::Array(items), _) if field.is_list() => {
                for (index, item) in items.iter_mut().enumerate() {
                    self.kind(&kind, item).map_err(|m| m.in_index(index))?;
                }
                Ok(())
            }
            (Value::Object(entries), Kind::Message(entry)) if field.is_map() => {
                let value_kind = entry.map_entry_value_field().kind();
                for (key, item) in entries.iter_mut() {
                    self.kind(&value_kind, item).map_err(|m| m.in_key(key))?;
                }
                Ok(())
            }
            (value, _) if field.is_list() || field.is_map() => {
                self.skip(value);
                Ok(())
            }
            (value, _) => self.kind(&kind, value),
        }
    }

    fn kind(&mut self, kind: &Kind, value: &mut Value) -> Result<(), Mistake> {
        if let Some(range) = integer_range(kind) {
            return self.integer(kind, range, value);
        }
        match (kind, value) {
            (Kind::Message(m), Value::String(text)) if is_time(kind) => check_time(text, m.full_name()).map_err(Mistake::new),
            (Kind::Message(m), Value::Object(object)) if !m.full_name().starts_with("google.protobuf.") => self.object(m, object),
            (_, value) => {
                self.skip(value);
                Ok(())
            }
        }
    }

    /// An integer field's value (an enum's, for numbers): a float or a string that is an integer
    /// in another form becomes that integer, exactly.
    fn integer(&mut self, kind: &Kind, range: (i128, i128, &str), value: &mut Value) -> Result<(), Mistake> {
        let exact = match &mut *value {
            Value::Number(number) if number.is_f64() => {
                let text = number.as_f64().and_then(|f| self.floats.as_mut().and_then(|floats| floats.take(f)));
                match text {
                    Some(text) => integer_in(text, range).map_err(Mistake::new)?,
                    None => None,
                }
            }
            // An enum's string is a name.
            Value::String(text) if !matches!(kind, Kind::Enum(_)) => integer_in(text, range).map_err(Mistake::new)?,
            // Not an integer at all (the reader refuses it), but its floats come in the body's order.
            other => {
                self.skip(other);
                None
            }
        };
        if let Some(exact) = exact {
            *value = integer_value(exact);
        }
        Ok(())
    }

    /// Passes over a value the pass does not check, taking its floats' texts in turn.
    fn skip(&mut self, value: &Value) {
        let Some(floats) = self.floats.as_mut() else { return };
        skip_floats(floats, value);
    }
}

fn skip_floats(floats: &mut Floats<'_>, value: &Value) {
    match value {
        Value::Number(number) if number.is_f64() => {
            if let Some(f) = number.as_f64() {
                floats.take(f);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| skip_floats(floats, item)),
        Value::Object(object) => object.values().for_each(|item| skip_floats(floats, item)),
        _ => {}
    }
}

/// A JSON integer for a value [`integer_in`] accepted (within 64 bits, signed or not).
fn integer_value(n: i128) -> Value {
    match (u64::try_from(n), i64::try_from(n)) {
        (Ok(n), _) => Value::from(n),
        (_, Ok(n)) => Value::from(n),
        _ => Value::String(n.to_string()),
    }
}
