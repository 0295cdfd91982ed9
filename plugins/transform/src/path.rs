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
//!
//! Paths act on any [`Tree`]: the bodies' [`Json`] (numbers kept as written), and
//! `serde_json::Value`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer};
use serde_json::Value;

use crate::json::Json;

/// A JSON document a path acts on: objects (fields in order), arrays and scalars. Implemented
/// alike (one macro) for the bodies' [`Json`] and for `serde_json::Value`.
pub trait Tree: Sized {
    /// An empty object.
    fn empty_object() -> Self;
    /// An empty array.
    fn empty_array() -> Self;
    /// `{key: value}`.
    fn object_with(key: &str, value: Self) -> Self;
    /// The field `key` of an object, or the element at index `key` of an array.
    fn child(&self, key: &str) -> Option<&Self>;
    /// As [`Tree::child`], to change it.
    fn child_mut(&mut self, key: &str) -> Option<&mut Self>;
    /// Removes and returns the field or element (later elements shift down).
    fn take_child(&mut self, key: &str) -> Option<Self>;
    /// Every field or element, in order.
    fn children(&mut self) -> Box<dyn Iterator<Item = &mut Self> + '_>;
    /// Empties an object or an array; true if it held something.
    fn clear(&mut self) -> bool;
    /// Renames the field `from` of an object to `to` in place (a field already called `to` is
    /// replaced); true if it did.
    fn rename_key(&mut self, from: &str, to: &str) -> bool;
    /// The field or element `key`, made with `make` when missing (an index may be `-` or the
    /// length: appended).
    fn child_or_insert(&mut self, key: &str, make: impl FnOnce() -> Self) -> Result<&mut Self, Refused>;
    /// Puts `value` at `key` (an index may be `-` or the length: appended); with
    /// `only_if_absent`, an existing one is left alone. True if it was put.
    fn put_child(&mut self, key: &str, value: Self, only_if_absent: bool) -> Result<bool, Refused>;
}

/// Why a value cannot be put under another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It is neither an object nor an array.
    NotContainer,
    /// It is an array, and the key is not an index in it (nor `-`, its end).
    NotIndex,
}

/// [`Tree`] for JSON enums with `Object` (a `preserve_order` map: `get`, `shift_remove`,
/// `entry`, ...) and `Array(Vec)` variants.
macro_rules! tree {
    ($($value:ty),*) => {$(
        impl Tree for $value {
            fn empty_object() -> Self {
                Self::Object(Default::default())
            }

            fn empty_array() -> Self {
                Self::Array(Vec::new())
            }

            fn object_with(key: &str, value: Self) -> Self {
                let mut object = Self::empty_object();
                if let Self::Object(map) = &mut object {
                    map.insert(key.to_owned(), value);
                }
                object
            }

            fn child(&self, key: &str) -> Option<&Self> {
                match self {
                    Self::Object(map) => map.get(key),
                    Self::Array(items) => index(key, items.len()).and_then(|i| items.get(i)),
                    _ => None,
                }
            }

            fn child_mut(&mut self, key: &str) -> Option<&mut Self> {
                match self {
                    Self::Object(map) => map.get_mut(key),
                    Self::Array(items) => index(key, items.len()).and_then(|i| items.get_mut(i)),
                    _ => None,
                }
            }

            fn take_child(&mut self, key: &str) -> Option<Self> {
                match self {
                    Self::Object(map) => map.shift_remove(key),
                    Self::Array(items) => index(key, items.len()).filter(|&i| i < items.len()).map(|i| items.remove(i)),
                    _ => None,
                }
            }

            fn children(&mut self) -> Box<dyn Iterator<Item = &mut Self> + '_> {
                match self {
                    Self::Object(map) => Box::new(map.values_mut()),
                    Self::Array(items) => Box::new(items.iter_mut()),
                    _ => Box::new(std::iter::empty()),
                }
            }

            fn clear(&mut self) -> bool {
                match self {
                    Self::Object(map) if !map.is_empty() => {
                        map.clear();
                        true
                    }
                    Self::Array(items) if !items.is_empty() => {
                        items.clear();
                        true
                    }
                    _ => false,
                }
            }

            fn rename_key(&mut self, from: &str, to: &str) -> bool {
                let Self::Object(map) = self else { return false };
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

            fn child_or_insert(&mut self, key: &str, make: impl FnOnce() -> Self) -> Result<&mut Self, Refused> {
                match self {
                    Self::Object(map) => Ok(map.entry(key.to_owned()).or_insert_with(make)),
                    Self::Array(items) => {
                        let at = index(key, items.len()).ok_or(Refused::NotIndex)?;
                        if at == items.len() {
                            items.push(make());
                        }
                        items.get_mut(at).ok_or(Refused::NotIndex)
                    }
                    _ => Err(Refused::NotContainer),
                }
            }

            fn put_child(&mut self, key: &str, value: Self, only_if_absent: bool) -> Result<bool, Refused> {
                match self {
                    Self::Object(map) => {
                        if only_if_absent && map.contains_key(key) {
                            return Ok(false);
                        }
                        map.insert(key.to_owned(), value);
                        Ok(true)
                    }
                    Self::Array(items) => {
                        let at = index(key, items.len()).ok_or(Refused::NotIndex)?;
                        match items.get_mut(at) {
                            None => items.push(value),
                            Some(_) if only_if_absent => return Ok(false),
                            Some(slot) => *slot = value,
                        }
                        Ok(true)
                    }
                    _ => Err(Refused::NotContainer),
                }
            }
        }
    )*};
}

tree!(Json, Value);

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
    pub fn for_each_parent<T: Tree>(&self, root: &mut T, f: &mut impl FnMut(&mut T, &Segment) -> bool) -> bool {
        match self.segments.split_last() {
            Some((last, parents)) => visit(root, parents, last, f),
            None => false,
        }
    }

    /// Removes every value the pattern matches; true if one was there.
    pub fn remove_all<T: Tree>(&self, root: &mut T) -> bool {
        self.for_each_parent(root, &mut |parent, last| match last {
            Segment::Key(key) => parent.take_child(key).is_some(),
            Segment::Any => parent.clear(),
            // `**` last is refused when parsing.
            Segment::Deep => false,
        })
    }

    /// Renames the last key of every match to `to`, keeping its place among its siblings (a field
    /// already called `to` there is replaced). Array elements are not renamed. True if one was.
    pub fn rename_all<T: Tree>(&self, root: &mut T, to: &str) -> bool {
        self.for_each_parent(root, &mut |parent, last| match last {
            Segment::Key(from) => parent.rename_key(from, to),
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
    pub fn get<'v, T: Tree>(&self, root: &'v T) -> Option<&'v T> {
        self.keys().try_fold(root, |value, key| value.child(key))
    }

    /// Removes and returns the value at this path, if there is one.
    pub fn take<T: Tree>(&self, root: &mut T) -> Option<T> {
        let mut taken = None;
        self.0.for_each_parent(root, &mut |parent: &mut T, last| {
            if let Segment::Key(key) = last {
                taken = parent.take_child(key);
            }
            taken.is_some()
        });
        taken
    }

    /// Puts `value` at this path, creating missing parents as objects. With `only_if_absent`, an
    /// existing value is left alone. `Err` says why it could not be put (a parent is not an object
    /// or an array, an index is past the end); the document is then unchanged.
    pub fn put<T: Tree>(&self, root: &mut T, value: T, only_if_absent: bool) -> Result<bool, String> {
        let keys: Vec<&str> = self.keys().collect();
        let Some((last, parents)) = keys.split_last() else {
            return Ok(false);
        };
        // A missing parent is made an array when the key after it is `-` (its end: `tags.-`
        // starts a list), else an object.
        let new_parent = |depth: usize| match keys.get(depth + 1) {
            Some(&"-") => T::empty_array(),
            _ => T::empty_object(),
        };
        let mut current = root;
        for (depth, key) in parents.iter().enumerate() {
            current = current.child_or_insert(key, || new_parent(depth)).map_err(|why| self.refused(why, depth))?;
        }
        current.put_child(last, value, only_if_absent).map_err(|why| self.refused(why, parents.len()))
    }

    /// Wraps `root` so that it sits at this path in a new document (`data` gives
    /// `{"data": root}`).
    pub fn wrap<T: Tree>(&self, root: T) -> T {
        self.keys().collect::<Vec<_>>().into_iter().rev().fold(root, |inner, key| T::object_with(key, inner))
    }

    fn prefix(&self, depth: usize) -> String {
        self.keys().take(depth).collect::<Vec<_>>().join(".")
    }

    /// Why `put` failed under the first `depth` keys.
    fn refused(&self, why: Refused, depth: usize) -> String {
        match why {
            Refused::NotContainer => self.not_container(depth),
            Refused::NotIndex => self.not_there(depth),
        }
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
fn visit<T: Tree>(value: &mut T, parents: &[Segment], last: &Segment, f: &mut impl FnMut(&mut T, &Segment) -> bool) -> bool {
    let Some((first, rest)) = parents.split_first() else {
        return f(value, last);
    };
    match first {
        Segment::Key(key) => value.child_mut(key).is_some_and(|c| visit(c, rest, last, f)),
        Segment::Any => value.children().fold(false, |hit, c| visit(c, rest, last, f) | hit),
        Segment::Deep => {
            // Zero levels here, then every level below (each value is reached once).
            let here = visit(value, rest, last, f);
            value.children().fold(here, |hit, c| visit(c, parents, last, f) | hit)
        }
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
