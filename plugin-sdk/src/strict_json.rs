//! A JSON body parsed as serde_json parses it, except that a key given twice in one object is
//! refused: serde_json keeps the last one, and a body goes upstream as it came, so an upstream
//! that keeps the first would act on a value the plugin never saw (a validator's schema, a
//! facade's variables). Use it wherever a plugin decides on a client's JSON.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not a JSON value a plugin can decide on.
#[derive(Debug)]
pub enum Refused {
    /// Not JSON (or nested too deep: serde_json's recursion limit, 128 levels, holds here too).
    Invalid(serde_json::Error),
    /// An object at `pointer` has `key` more than once.
    Duplicate {
        /// Where the object is, as a JSON Pointer (`""` for the root, `/a/1/b~1c`).
        pointer: String,
        /// The key given twice, unescaped.
        key: String,
    },
}

/// Parses a body: one JSON value, whitespace around it, no object with a key twice.
pub fn parse(body: &[u8]) -> Result<Value, Refused> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = Node { path: Path::Root, duplicate: &duplicate }.deserialize(&mut deserializer).and_then(|value| deserializer.end().map(|()| value));
    match (parsed, duplicate.into_inner()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some((pointer, key))) => Err(Refused::Duplicate { pointer, key }),
        (Err(e), None) => Err(Refused::Invalid(e)),
    }
}

/// Where a value is in the body, written as a JSON Pointer only when an object there has a
/// key twice.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn pointer(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Key(parent, key) => format!("{}/{}", parent.pointer(), key.replace('~', "~0").replace('/', "~1")),
            Path::Index(parent, index) => format!("{}/{index}", parent.pointer()),
        }
    }
}

/// Builds the value at `path`, noting the first duplicate key in `duplicate`.
struct Node<'a> {
    path: Path<'a>,
    duplicate: &'a RefCell<Option<(String, String)>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
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

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let Node { path, duplicate } = self;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(Node { path: Path::Index(&path, items.len()), duplicate })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Node { path, duplicate } = self;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                *duplicate.borrow_mut() = Some((path.pointer(), key));
                return Err(A::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(Node { path: Path::Key(&path, &key), duplicate })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn duplicate(body: &str) -> Option<(String, String)> {
        match parse(body.as_bytes()) {
            Err(Refused::Duplicate { pointer, key }) => Some((pointer, key)),
            _ => None,
        }
    }

    #[test]
    fn values_are_what_serde_json_makes() {
        let text = r#" {"a": [1, -2, 1.5, 2.5e3, "x"], "b": {"c": null, "d": true}, "e": 18446744073709551615} "#;
        assert_eq!(parse(text.as_bytes()).ok(), serde_json::from_str::<Value>(text).ok());
        assert_eq!(parse(br#"{"z": 1, "a": 2}"#).ok().map(|v| v.to_string()), Some(r#"{"z":1,"a":2}"#.to_owned()), "order kept");
        assert!(matches!(parse(b"{} x"), Err(Refused::Invalid(_))), "trailing characters");
        assert!(matches!(parse(b"[1,"), Err(Refused::Invalid(_))));
        assert_eq!(parse(br#""\u00e9""#).ok(), Some(json!("é")));
    }

    #[test]
    fn a_key_twice_is_refused_with_where() {
        assert_eq!(duplicate(r#"{"price": "x", "price": 1}"#), Some((String::new(), "price".to_owned())));
        assert_eq!(duplicate(r#"{"a": [{}, {"b/c": {"k": 1, "k": 2}}]}"#), Some(("/a/1/b~1c".to_owned(), "k".to_owned())));
        assert_eq!(duplicate(r#"{"a": 1, "\u0061": 2}"#), Some((String::new(), "a".to_owned())), "the same key escaped");
        assert_eq!(duplicate(r#"{"a": {"x": 1}, "b": {"x": 1}}"#), None, "one key in two objects");
    }

    #[test]
    fn the_recursion_limit_holds() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        match parse(deep.as_bytes()) {
            Err(Refused::Invalid(e)) => assert!(e.to_string().contains("recursion limit"), "{e}"),
            other => panic!("{other:?}"),
        }
        let ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(parse(ok.as_bytes()).is_ok());
        let over = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(parse(over.as_bytes()).is_err());
    }
}
