//! The field path language: where in a JSON document a rule acts.
//!
//! Two spellings, told apart by the first character:
//!
//! - dotted: `user.address.city`, `items.0.id`; a segment `*` is any one field or array element
//!   (`items.*.secret`), `**` is any depth, zero levels included (`**.token` is `token` wherever
//!   it appears). Keys holding a `.`, or named `*` / `**`, need the other spelling;
//! - JSON Pointer (RFC 6901): `/items/0/id`, with `~1` for `/` and `~0` for `~` in keys; no
//!   wildcards (`*` is a key).
//!
//! A segment that is a decimal number without leading zeros is an index in an array and a key in
//! an object; `-` in an array is the place after the last element (for adding to the end).
//! Wildcards are only allowed where a rule acts on every match ([`Pattern`]: `remove`,
//! `rename`); other rules take a [`FieldPath`], one place.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer};
use serde_json::{Map, Value};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A key in an object, or an index (or `-`) in an array.
    Key(String),
    /// `*`: every field of an object or element of an array.
    Any,
    /// `**`: this value and every value below it.
    Deep,
}

/// A parsed path that may hold wildcards: the places `remove` and `rename` act on. Two patterns
/// are equal when they name the same places (`a.b` and `/a/b`).
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.segments == other.segments
    }
}

impl Eq for Pattern {}

/// A parsed path to exactly one place (no wildcards): what `set`, `add`, `move`, `copy`, `wrap`
/// and `unwrap` take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Pattern);

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Pattern {
    /// Parses a dotted path or a JSON Pointer; the error says what is wrong and what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let segments = if text.starts_with('/') { pointer(text)? } else { dotted(text)? };
        Ok(Self { text: text.to_owned(), segments })
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The last segment when it is a key (what `rename` renames).
    pub fn last_key(&self) -> Option<&str> {
        match self.segments.last() {
            Some(Segment::Key(key)) => Some(key),
            _ => None,
        }
    }

    /// Calls `f(parent, last)` for every value matched by all but the last segment, in document
    /// order; `f` acts on the last step itself (removes or renames it). Returns true if any call
    /// did (`f` returned true).
    pub fn for_each_parent(&self, root: &mut Value, f: &mut impl FnMut(&mut Value, &Segment) -> bool) -> bool {
        match self.segments.split_last() {
            Some((last, parents)) => visit(root, parents, last, f),
            None => false,
        }
    }

    /// Removes every value the pattern matches; true if one was there.
    pub fn remove_all(&self, root: &mut Value) -> bool {
        self.for_each_parent(root, &mut |parent, last| match last {
            Segment::Key(key) => take_child(parent, key).is_some(),
            Segment::Any => clear(parent),
            // `**` last is refused when parsing.
            Segment::Deep => false,
        })
    }

    /// Renames the last key of every match to `to`, keeping its place among its siblings (a field
    /// already called `to` there is replaced). Array elements are not renamed. True if one was.
    pub fn rename_all(&self, root: &mut Value, to: &str) -> bool {
        self.for_each_parent(root, &mut |parent, last| match (parent, last) {
            (Value::Object(map), Segment::Key(from)) => rename_key(map, from, to),
            _ => false,
        })
    }
}

impl FieldPath {
    /// Parses a path to one place: as [`Pattern::parse`], without wildcards.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pattern = Pattern::parse(text)?;
        if pattern.segments.iter().any(|s| !matches!(s, Segment::Key(_))) {
            return Err(format!(
                "`{text}`: wildcards (`*`, `**`) are only allowed in `remove` and `rename`, which act on every match"
            ));
        }
        Ok(Self(pattern))
    }

    /// The keys, in order.
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.segments.iter().filter_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            _ => None,
        })
    }

    /// The value at this path, if there is one.
    pub fn get<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.keys().try_fold(root, |value, key| child(value, key))
    }

    /// Removes and returns the value at this path, if there is one.
    pub fn take(&self, root: &mut Value) -> Option<Value> {
        let mut taken = None;
        self.0.for_each_parent(root, &mut |parent, last| {
            if let Segment::Key(key) = last {
                taken = take_child(parent, key);
            }
            taken.is_some()
        });
        taken
    }

    /// Puts `value` at this path, creating missing parents as objects. With `only_if_absent`, an
    /// existing value is left alone. `Err` says why it could not be put (a parent is not an object
    /// or an array, an index is past the end); the document is then unchanged.
    pub fn put(&self, root: &mut Value, value: Value, only_if_absent: bool) -> Result<bool, String> {
        let keys: Vec<&str> = self.keys().collect();
        let Some((last, parents)) = keys.split_last() else {
            return Ok(false);
        };
        // A missing parent is made an array when the key after it is `-` (its end: `tags.-`
        // starts a list), else an object.
        let new_parent = |depth: usize| match keys.get(depth + 1) {
            Some(&"-") => Value::Array(Vec::new()),
            _ => Value::Object(Map::new()),
        };
        let mut current = root;
        for (depth, key) in parents.iter().enumerate() {
            current = match current {
                Value::Object(map) => map.entry(key.to_string()).or_insert_with(|| new_parent(depth)),
                Value::Array(items) => {
                    let at = index(key, items.len()).ok_or_else(|| self.not_there(depth))?;
                    if at == items.len() {
                        items.push(new_parent(depth));
                    }
                    &mut items[at]
                }
                _ => return Err(self.not_container(depth)),
            };
        }
        match current {
            Value::Object(map) => {
                if only_if_absent && map.contains_key(*last) {
                    return Ok(false);
                }
                map.insert(last.to_string(), value);
                Ok(true)
            }
            Value::Array(items) => {
                let at = index(last, items.len()).ok_or_else(|| self.not_there(parents.len()))?;
                if at == items.len() {
                    items.push(value);
                } else if only_if_absent {
                    return Ok(false);
                } else {
                    items[at] = value;
                }
                Ok(true)
            }
            _ => Err(self.not_container(parents.len())),
        }
    }

    /// Wraps `root` so that it sits at this path in a new document (`data` gives
    /// `{"data": root}`).
    pub fn wrap(&self, root: Value) -> Value {
        self.keys().collect::<Vec<_>>().into_iter().rev().fold(root, |inner, key| {
            let mut map = Map::new();
            map.insert(key.to_owned(), inner);
            Value::Object(map)
        })
    }

    fn prefix(&self, depth: usize) -> String {
        self.keys().take(depth).collect::<Vec<_>>().join(".")
    }

    fn not_container(&self, depth: usize) -> String {
        let at = self.prefix(depth);
        let at = if at.is_empty() { "the document".to_owned() } else { format!("`{at}`") };
        format!("cannot put `{self}`: {at} is neither an object nor an array")
    }

    fn not_there(&self, depth: usize) -> String {
        format!("cannot put `{self}`: `{}` is not an index of the array (nor `-`, its end)", self.prefix(depth + 1))
    }
}

/// Walks `parents` from `value`, calling `f` on every match with `last`.
fn visit(value: &mut Value, parents: &[Segment], last: &Segment, f: &mut impl FnMut(&mut Value, &Segment) -> bool) -> bool {
    let Some((first, rest)) = parents.split_first() else {
        return f(value, last);
    };
    match first {
        Segment::Key(key) => child_mut(value, key).is_some_and(|c| visit(c, rest, last, f)),
        Segment::Any => children(value).fold(false, |hit, c| visit(c, rest, last, f) | hit),
        Segment::Deep => {
            // Zero levels here, then every level below (each value is reached once).
            let here = visit(value, rest, last, f);
            children(value).fold(here, |hit, c| visit(c, parents, last, f) | hit)
        }
    }
}

fn children(value: &mut Value) -> Box<dyn Iterator<Item = &mut Value> + '_> {
    match value {
        Value::Object(map) => Box::new(map.values_mut()),
        Value::Array(items) => Box::new(items.iter_mut()),
        _ => Box::new(std::iter::empty()),
    }
}

/// An array index: a decimal number without leading zeros, or `-` (the end, `len`). Only
/// positions up to `len` are returned.
fn index(key: &str, len: usize) -> Option<usize> {
    if key == "-" {
        return Some(len);
    }
    if key.is_empty() || (key.len() > 1 && key.starts_with('0')) || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse::<usize>().ok().filter(|&i| i <= len)
}

fn child<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => index(key, items.len()).and_then(|i| items.get(i)),
        _ => None,
    }
}

fn child_mut<'v>(value: &'v mut Value, key: &str) -> Option<&'v mut Value> {
    match value {
        Value::Object(map) => map.get_mut(key),
        Value::Array(items) => index(key, items.len()).and_then(|i| items.get_mut(i)),
        _ => None,
    }
}

fn take_child(value: &mut Value, key: &str) -> Option<Value> {
    match value {
        Value::Object(map) => map.shift_remove(key),
        Value::Array(items) => index(key, items.len()).filter(|&i| i < items.len()).map(|i| items.remove(i)),
        _ => None,
    }
}

fn clear(value: &mut Value) -> bool {
    match value {
        Value::Object(map) if !map.is_empty() => {
            map.clear();
            true
        }
        Value::Array(items) if !items.is_empty() => {
            items.clear();
            true
        }
        _ => false,
    }
}

/// Renames `from` to `to` in place (a field already called `to` is replaced).
fn rename_key(map: &mut Map<String, Value>, from: &str, to: &str) -> bool {
    if from == to || !map.contains_key(from) {
        return false;
    }
    let old = std::mem::take(map);
    for (key, value) in old {
        if key == from {
            map.insert(to.to_owned(), value);
        } else if key != to {
            map.insert(key, value);
        }
    }
    true
}

fn dotted(text: &str) -> Result<Vec<Segment>, String> {
    if text.is_empty() {
        return Err("empty path: write a dotted path (`user.name`) or a JSON Pointer (`/user/name`)".to_owned());
    }
    let mut segments = Vec::new();
    for part in text.split('.') {
        segments.push(match part {
            "" => {
                return Err(format!(
                    "`{text}` has an empty segment: write `a.b` (a JSON Pointer, `/a/b`, for keys holding dots)"
                ));
            }
            "*" => Segment::Any,
            "**" => {
                if segments.last() == Some(&Segment::Deep) {
                    return Err(format!("`{text}`: `**.**` is the same as `**`"));
                }
                Segment::Deep
            }
            key => Segment::Key(key.to_owned()),
        });
    }
    if segments.last() == Some(&Segment::Deep) {
        return Err(format!("`{text}` ends in `**`: name the field to find at any depth, e.g. `**.token`"));
    }
    Ok(segments)
}

fn pointer(text: &str) -> Result<Vec<Segment>, String> {
    text[1..]
        .split('/')
        .map(|token| {
            let mut key = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => key.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => key.push('~'),
                        Some('1') => key.push('/'),
                        _ => {
                            return Err(format!(
                                "JSON Pointer `{text}`: `~` must be followed by `0` (for `~`) or `1` (for `/`)"
                            ));
                        }
                    },
                }
            }
            Ok(Segment::Key(key))
        })
        .collect()
}

impl<'de> Deserialize<'de> for Pattern {
    /// From a string, parsed with [`Pattern::parse`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Pattern::parse(&text).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    /// From a string, parsed with [`FieldPath::parse`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        FieldPath::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys(text: &str) -> Vec<Segment> {
        Pattern::parse(text).unwrap().segments
    }

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_owned())
    }

    #[test]
    fn both_spellings_parse_to_the_same_steps() {
        assert_eq!(keys("items.0.id"), [key("items"), key("0"), key("id")]);
        assert_eq!(keys("/items/0/id"), keys("items.0.id"));
        assert_eq!(keys("/a~1b/c~0d"), [key("a/b"), key("c~d")]);
        assert_eq!(keys("/a.b"), [key("a.b")], "a pointer keeps dots in keys");
        assert_eq!(keys("/*"), [key("*")], "a pointer has no wildcards");
        assert_eq!(keys("/"), [key("")], "the empty key (RFC 6901)");
        assert_eq!(keys("**.token"), [Segment::Deep, key("token")]);
        assert_eq!(keys("items.*.secret"), [key("items"), Segment::Any, key("secret")]);
    }

    #[test]
    fn malformed_paths_are_explained() {
        let err = |text: &str| Pattern::parse(text).unwrap_err();
        assert!(err("").starts_with("empty path"));
        assert!(err("a..b").starts_with("`a..b` has an empty segment"));
        assert!(err("a.").contains("empty segment"));
        assert!(err("a.**").starts_with("`a.**` ends in `**`"));
        assert!(err("**.**.x").contains("is the same as `**`"));
        assert!(err("/a~2").contains("`~` must be followed by `0`"));
        assert!(FieldPath::parse("items.*.id").unwrap_err().contains("only allowed in `remove` and `rename`"));
        assert!(FieldPath::parse("/items/*").is_ok(), "`*` in a pointer is a key");
    }

    #[test]
    fn get_follows_keys_and_indexes() {
        let doc = json!({"items": [{"id": 1}, {"id": 2}], "0": "zero", "a.b": true});
        let get = |p: &str| FieldPath::parse(p).unwrap().get(&doc).cloned();
        assert_eq!(get("items.1.id"), Some(json!(2)));
        assert_eq!(get("/items/0/id"), Some(json!(1)));
        assert_eq!(get("0"), Some(json!("zero")), "a number is a key in an object");
        assert_eq!(get("/a.b"), Some(json!(true)));
        assert_eq!(get("items.2"), None);
        assert_eq!(get("items.01"), None, "leading zeros are not an index");
        assert_eq!(get("items.-"), None, "`-` is past the end");
        assert_eq!(get("missing.deep"), None);
        assert_eq!(get("items.0.id.x"), None, "through a number");
    }

    #[test]
    fn remove_with_wildcards_reaches_every_match() {
        let mut doc = json!({
            "token": "t0", "user": {"name": "a", "token": "t1", "password": "p"},
            "items": [{"token": "t2", "keep": 1}, {"nested": {"token": "t3"}}, "token"]
        });
        assert!(Pattern::parse("**.token").unwrap().remove_all(&mut doc));
        assert_eq!(
            doc,
            json!({"user": {"name": "a", "password": "p"}, "items": [{"keep": 1}, {"nested": {}}, "token"]})
        );
        assert!(!Pattern::parse("**.token").unwrap().remove_all(&mut doc), "nothing left to remove");
        assert!(Pattern::parse("items.*.keep").unwrap().remove_all(&mut doc));
        assert!(Pattern::parse("items.1").unwrap().remove_all(&mut doc));
        assert_eq!(doc["items"], json!([{}, "token"]), "array elements shift down");
        assert!(Pattern::parse("items.*").unwrap().remove_all(&mut doc));
        assert_eq!(doc["items"], json!([]));
        assert!(!Pattern::parse("nope.x").unwrap().remove_all(&mut doc));
    }

    #[test]
    fn rename_keeps_the_field_in_place() {
        let mut doc = json!({"a": 1, "pwd": "x", "z": 2, "list": [{"pwd": "y", "password": "old"}]});
        assert!(Pattern::parse("**.pwd").unwrap().rename_all(&mut doc, "password"));
        assert_eq!(serde_json::to_string(&doc).unwrap(), r#"{"a":1,"password":"x","z":2,"list":[{"password":"y"}]}"#);
        assert!(!Pattern::parse("missing").unwrap().rename_all(&mut doc, "x"));
        assert!(!Pattern::parse("list.0").unwrap().rename_all(&mut doc, "x"), "array elements have no name");
    }

    #[test]
    fn put_creates_parents_and_respects_arrays() {
        let mut doc = json!({"items": [{"id": 1}], "n": 5});
        let put = |doc: &mut Value, p: &str, v: Value, only_if_absent: bool| {
            FieldPath::parse(p).unwrap().put(doc, v, only_if_absent)
        };
        assert_eq!(put(&mut doc, "meta.source.name", json!("gw"), false), Ok(true));
        assert_eq!(doc["meta"], json!({"source": {"name": "gw"}}));
        assert_eq!(put(&mut doc, "items.0.id", json!(9), false), Ok(true));
        assert_eq!(put(&mut doc, "items.-", json!({"id": 2}), false), Ok(true));
        assert_eq!(put(&mut doc, "/items/2/id", json!(3), false), Ok(true), "index == len appends");
        assert_eq!(doc["items"], json!([{"id": 9}, {"id": 2}, {"id": 3}]));
        assert_eq!(put(&mut doc, "items.0.id", json!(0), true), Ok(false), "add keeps what is there");
        assert_eq!(put(&mut doc, "items.0.new", json!(0), true), Ok(true));
        let err = put(&mut doc, "items.7.id", json!(0), false).unwrap_err();
        assert_eq!(err, "cannot put `items.7.id`: `items.7` is not an index of the array (nor `-`, its end)");
        let err = put(&mut doc, "n.x", json!(0), false).unwrap_err();
        assert_eq!(err, "cannot put `n.x`: `n` is neither an object nor an array");
        let mut scalar = json!("text");
        assert!(put(&mut scalar, "a", json!(1), false).unwrap_err().contains("the document is neither"));
        // `-` under a missing parent starts a list there, at any depth.
        assert_eq!(put(&mut doc, "tags.-", json!("new"), false), Ok(true));
        assert_eq!(put(&mut doc, "tags.-", json!("next"), false), Ok(true));
        assert_eq!(doc["tags"], json!(["new", "next"]));
        assert_eq!(put(&mut doc, "meta.notes.-.text", json!("hi"), false), Ok(true));
        assert_eq!(doc["meta"]["notes"], json!([{"text": "hi"}]));
    }

    #[test]
    fn take_and_wrap() {
        let mut doc = json!({"data": {"items": [1, 2]}, "b": 1});
        let path = FieldPath::parse("data.items").unwrap();
        assert_eq!(path.take(&mut doc), Some(json!([1, 2])));
        assert_eq!(path.take(&mut doc), None);
        assert_eq!(FieldPath::parse("a.b").unwrap().wrap(json!([1])), json!({"a": {"b": [1]}}));
    }
}
