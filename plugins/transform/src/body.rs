//! JSON body rules: what they are in config, and how they change one body.
//!
//! Applied in this order: `unwrap`, `remove`, `rename`, `move`, `copy`, `set`, `add`, `wrap`; so
//! paths in every rule but `unwrap` are written against the unwrapped document, and `wrap` puts
//! the finished document under its key.

use airlock_sdk::template::Source;
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::json::Json;
use crate::path::{FieldPath, Pattern};
use crate::table::Table;
use crate::value::ValueTemplate;

/// What to do with a body that is not JSON (its `content-type` is neither `application/json`
/// nor `*/*+json`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonJson {
    /// Leave it as it is (the default).
    #[default]
    Pass,
    /// Refuse it: 415 for a request, 502 for an upstream response.
    Reject,
}

/// A new name for a field (`rename`): a key, not a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewName(pub String);

impl<'de> Deserialize<'de> for NewName {
    /// From a non-empty string without `.` or `/`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if name.is_empty() {
            return Err(de::Error::custom("empty name: `rename` gives the field a new name"));
        }
        if name.contains(['.', '/']) {
            return Err(de::Error::custom(format!(
                "`{name}` is a path, but `rename` gives the field a new name in the same place: use `move` to move a field elsewhere"
            )));
        }
        Ok(NewName(name))
    }
}

/// A response status the body rules apply to: one code (`200`) or a class (`"2xx"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// This status.
    Code(u16),
    /// Every status of this hundred (2 for `"2xx"`).
    Class(u16),
}

impl StatusMatch {
    /// Whether `status` is this one.
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(code) => code == status,
            StatusMatch::Class(class) => status / 100 == class,
        }
    }
}

impl<'de> Deserialize<'de> for StatusMatch {
    /// From a status code 100-599 or a class `"1xx"` to `"5xx"`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = StatusMatch;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a status code (200) or a class (\"2xx\")")
            }

            fn visit_u64<E: de::Error>(self, code: u64) -> Result<StatusMatch, E> {
                match u16::try_from(code) {
                    Ok(code @ 100..=599) => Ok(StatusMatch::Code(code)),
                    _ => Err(E::custom(format!("{code} is not a status code, 100-599"))),
                }
            }

            fn visit_i64<E: de::Error>(self, code: i64) -> Result<StatusMatch, E> {
                match u64::try_from(code) {
                    Ok(code) => self.visit_u64(code),
                    Err(_) => Err(E::custom(format!("{code} is not a status code, 100-599"))),
                }
            }

            fn visit_str<E: de::Error>(self, class: &str) -> Result<StatusMatch, E> {
                match class.as_bytes() {
                    [digit @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Ok(StatusMatch::Class(u16::from(digit - b'0'))),
                    _ => Err(E::custom(format!("`{class}` is not a status class: write \"2xx\", or a code as a number"))),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The body rules of one direction; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BodyRules {
    /// Replace the document with the value at this path (`null` if there is none).
    pub unwrap: Option<FieldPath>,
    /// Remove every match of each pattern.
    pub remove: Vec<Pattern>,
    /// Give every match of the pattern (key) the new name (value), in place.
    pub rename: Table<Pattern, NewName>,
    /// Move the value at the key's path to the value's path.
    #[serde(rename = "move")]
    pub move_to: Table<FieldPath, FieldPath>,
    /// Copy the value at the key's path to the value's path.
    pub copy: Table<FieldPath, FieldPath>,
    /// Put this value at the path, replacing what is there.
    pub set: Table<FieldPath, ValueTemplate>,
    /// Put this value at the path only if nothing is there.
    pub add: Table<FieldPath, ValueTemplate>,
    /// Put the document under this path in a new object.
    pub wrap: Option<FieldPath>,
    /// What to do with a body that is not JSON.
    pub non_json: NonJson,
    /// Response bodies only: the statuses the rules apply to (empty: every status). A body
    /// under another status (an upstream's error, say) goes through untouched.
    pub statuses: Vec<StatusMatch>,
}

/// What became of one body.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Left as it was: empty, not JSON and passed, or no rule matched.
    Unchanged,
    /// The rules changed it: the new JSON text.
    Changed(Vec<u8>),
    /// Not JSON, and `non_json = "reject"`: the content type found.
    NotJson(String),
    /// Declared JSON (or undeclared) but not valid JSON: why.
    Invalid(String),
}

impl BodyRules {
    /// True if the rules need the body at all (then the gateway must buffer it).
    pub fn needs_body(&self) -> bool {
        self.has_rules() || self.non_json == NonJson::Reject
    }

    fn has_rules(&self) -> bool {
        self.unwrap.is_some()
            || !self.remove.is_empty()
            || !self.rename.is_empty()
            || !self.move_to.is_empty()
            || !self.copy.is_empty()
            || !self.set.is_empty()
            || !self.add.is_empty()
            || self.wrap.is_some()
    }

    /// Checks what deserializing cannot; `key` is where the rules sit (e.g. `request.body`).
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if key.starts_with("request") && !self.statuses.is_empty() {
            return Err(format!("`{key}.statuses`: a request has no status; `statuses` is for `response.body`"));
        }
        if let Some((pattern, _)) = self.rename.iter().find(|(p, _)| p.last_key().is_none()) {
            return Err(format!(
                "`{key}.rename.{pattern}`: a rename must end in a field name, not a wildcard (`a.*.old`, not `a.*`)"
            ));
        }
        Ok(())
    }

    /// Whether the rules apply to a response with this status.
    pub fn applies_to(&self, status: u16) -> bool {
        self.statuses.is_empty() || self.statuses.iter().any(|s| s.matches(status))
    }

    /// Transforms one body. `content_type` is the body's `content-type` header; without one the
    /// body is taken for JSON. Problems that do not stop the body (a `set` through a string) are
    /// pushed to `warnings`, for the log.
    pub fn transform(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        source: &impl Source,
        warnings: &mut Vec<String>,
    ) -> Outcome {
        if body.is_empty() {
            return Outcome::Unchanged;
        }
        if let Some(ct) = content_type
            && !is_json(ct)
        {
            return match self.non_json {
                NonJson::Pass => Outcome::Unchanged,
                NonJson::Reject => Outcome::NotJson(ct.to_owned()),
            };
        }
        // RFC 8259 8.1: a parser may ignore a byte order mark; some Windows clients send one.
        let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        // Not `serde_json::Value`: its numbers would come out rounded ([`Json`]).
        let document = match Json::parse(text) {
            Ok(document) => document,
            Err(why) => return Outcome::Invalid(why),
        };
        match self.apply(document, source, warnings) {
            (document, true) => match document.to_vec() {
                Ok(text) => Outcome::Changed(text),
                Err(e) => {
                    warnings.push(format!("cannot write the changed body, left as it was: {e}"));
                    Outcome::Unchanged
                }
            },
            (_, false) => Outcome::Unchanged,
        }
    }

    /// Applies the rules in order; returns the document and whether it changed.
    pub fn apply(&self, mut doc: Json, source: &impl Source, warnings: &mut Vec<String>) -> (Json, bool) {
        let mut changed = false;
        if let Some(path) = &self.unwrap {
            doc = path.get(&doc).cloned().unwrap_or(Json::Null);
            changed = true;
        }
        for pattern in &self.remove {
            changed |= pattern.remove_all(&mut doc);
        }
        for (pattern, NewName(to)) in self.rename.iter() {
            changed |= pattern.rename_all(&mut doc, to);
        }
        for (from, to) in self.move_to.iter() {
            if let Some(value) = from.take(&mut doc) {
                changed = true;
                if let Err(e) = to.put(&mut doc, value, false) {
                    warnings.push(format!("move `{from}`: {e}; the value is dropped"));
                }
            }
        }
        for (from, to) in self.copy.iter() {
            if let Some(value) = from.get(&doc).cloned() {
                changed |= put(&mut doc, to, value, false, "copy", warnings);
            }
        }
        for (path, template) in self.set.iter() {
            changed |= put(&mut doc, path, template.expand(source), false, "set", warnings);
        }
        for (path, template) in self.add.iter() {
            changed |= put(&mut doc, path, template.expand(source), true, "add", warnings);
        }
        if let Some(path) = &self.wrap {
            doc = path.wrap(doc);
            changed = true;
        }
        (doc, changed)
    }
}

fn put(doc: &mut Json, path: &FieldPath, value: Json, only_if_absent: bool, rule: &str, warnings: &mut Vec<String>) -> bool {
    path.put(doc, value, only_if_absent).unwrap_or_else(|e| {
        warnings.push(format!("{rule}: {e}; skipped"));
        false
    })
}

/// True for `application/json` and `*/*+json` media types (parameters ignored).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.contains('/') && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use airlock_sdk::template::MapSource;
    use serde_json::{Value, json};

    use super::*;

    fn fake() -> MapSource {
        MapSource::default().context("consumer", "alice").param("id", "42")
    }

    fn rules(config: Value) -> BodyRules {
        let rules: BodyRules = serde_json::from_value(config).unwrap();
        rules.validate("body").unwrap();
        rules
    }

    fn run(rules: &BodyRules, doc: Value) -> Json {
        rules.apply(doc.into(), &fake(), &mut Vec::new()).0
    }

    #[test]
    fn rules_apply_in_order_on_nested_documents() {
        let r = rules(json!({
            "unwrap": "data",
            "remove": ["**.password", "user.ssn"],
            "rename": {"user.mail": "email"},
            "move": {"user.tmp": "meta.moved"},
            "copy": {"/items/0/id": "first_id"},
            "set": {"meta.by": "${context.consumer}", "user.id": "${param.id}", "meta.n": 3},
            "add": {"user.role": "member", "user.name": "not used"},
            "wrap": "result"
        }));
        let out = run(
            &r,
            json!({"data": {
                "user": {"name": "a", "mail": "a@x", "password": "p", "ssn": "1", "tmp": [1]},
                "items": [{"id": 7, "password": "q"}]
            }, "ignored": true}),
        );
        assert_eq!(
            out,
            Json::from(json!({"result": {
                "user": {"name": "a", "email": "a@x", "id": "42", "role": "member"},
                "items": [{"id": 7}],
                "meta": {"moved": [1], "by": "alice", "n": 3},
                "first_id": 7
            }}))
        );
        let user = FieldPath::parse("result.user").unwrap();
        let Some(Json::Object(user)) = user.get(&out) else { panic!("{out:?}") };
        let keys: Vec<&String> = user.keys().collect();
        assert_eq!(keys, ["name", "email", "id", "role"], "renamed fields keep their place");
    }

    #[test]
    fn missing_paths_change_nothing() {
        let r = rules(json!({"remove": ["a.b", "**.x"], "rename": {"c": "d"}, "move": {"e": "f"}, "copy": {"g": "h"}}));
        let (doc, changed) = r.apply(json!({"k": [1, {"y": 2}]}).into(), &fake(), &mut Vec::new());
        assert!(!changed);
        assert_eq!(doc, json!({"k": [1, {"y": 2}]}).into());
        let r = rules(json!({"unwrap": "data.items"}));
        assert_eq!(run(&r, json!({"error": "x"})), Json::Null, "unwrapping a missing path gives null");
    }

    #[test]
    fn values_that_cannot_be_put_are_warned_about() {
        let r = rules(json!({"set": {"name.first": "x", "ok": true}}));
        let mut warnings = Vec::new();
        let (doc, changed) = r.apply(json!({"name": "text"}).into(), &fake(), &mut warnings);
        assert!(changed);
        assert_eq!(doc, json!({"name": "text", "ok": true}).into());
        assert_eq!(warnings, ["set: cannot put `name.first`: `name` is neither an object nor an array; skipped"]);
    }

    #[test]
    fn transform_handles_content_types_and_invalid_json() {
        let r = rules(json!({"remove": ["secret"]}));
        let t = |body: &[u8], ct: Option<&str>| r.transform(body, ct, &fake(), &mut Vec::new());
        assert_eq!(t(br#"{"secret":1,"a":2}"#, Some("application/json")), Outcome::Changed(br#"{"a":2}"#.to_vec()));
        assert_eq!(t(br#"{"a":2}"#, Some("application/json")), Outcome::Unchanged, "no match: bytes kept");
        assert_eq!(t(br#"{"secret":1}"#, None), Outcome::Changed(b"{}".to_vec()), "no content-type: taken for JSON");
        assert_eq!(t(br#"{"secret":1}"#, Some("application/vnd.api+json; charset=utf-8")), Outcome::Changed(b"{}".to_vec()));
        assert_eq!(t(b"secret=1", Some("application/x-www-form-urlencoded")), Outcome::Unchanged);
        assert_eq!(t(b"", Some("application/json")), Outcome::Unchanged, "an empty body is left empty");
        assert_eq!(t(b"\xEF\xBB\xBF{\"secret\":1}", Some("application/json")), Outcome::Changed(b"{}".to_vec()), "a BOM is read past");
        match t(b"{\"a\": ", Some("application/json")) {
            Outcome::Invalid(why) => assert_eq!(why, "EOF while parsing a value at line 1 column 6"),
            other => panic!("{other:?}"),
        }
        let strict = rules(json!({"non_json": "reject"}));
        assert!(strict.needs_body());
        assert_eq!(
            strict.transform(b"x", Some("text/plain"), &fake(), &mut Vec::new()),
            Outcome::NotJson("text/plain".into())
        );
    }

    /// Numbers serde_json's `Value` would round (beyond 64 bits, more than 17 significant
    /// digits) and spellings it would change keep their text: where no rule touches them, and
    /// where `move`, `copy`, `rename`, `unwrap` and `wrap` carry them.
    #[test]
    fn numbers_keep_their_exact_digits_through_every_rule() {
        let r = rules(json!({
            "unwrap": "data",
            "remove": ["secret"],
            "rename": {"old": "renamed"},
            "move": {"price": "amounts.price"},
            "copy": {"/ids/0": "first_id"},
            "set": {"meta.n": 3, "meta.f": 0.5},
            "add": {"meta.by": "${context.consumer}"},
            "wrap": "result"
        }));
        let body = br#"{"data": {
            "secret": 1,
            "big": 123456789012345678901234567890,
            "negative": -123456789012345678901234567890,
            "long": 3.14159265358979323846264338327950288,
            "small": 1.0E-400,
            "ids": [18446744073709551616, 7, 2.50],
            "price": 0.1000000000000000055511151231257827,
            "old": -9223372036854775809
        }}"#;
        let out = r.transform(body, Some("application/json"), &fake(), &mut Vec::new());
        let expected = concat!(
            r#"{"result":{"big":123456789012345678901234567890,"negative":-123456789012345678901234567890,"#,
            r#""long":3.14159265358979323846264338327950288,"small":1.0E-400,"ids":[18446744073709551616,7,2.50],"#,
            r#""renamed":-9223372036854775809,"amounts":{"price":0.1000000000000000055511151231257827},"#,
            r#""first_id":18446744073709551616,"meta":{"n":3,"f":0.5,"by":"alice"}}}"#
        );
        assert_eq!(out, Outcome::Changed(expected.as_bytes().to_vec()), "{}", match &out {
            Outcome::Changed(text) => String::from_utf8_lossy(text).into_owned(),
            other => format!("{other:?}"),
        });
    }

    #[test]
    fn config_errors_are_clear() {
        let err = |v: Value| match serde_json::from_value::<BodyRules>(v) {
            Ok(r) => r.validate("body").unwrap_err(),
            Err(e) => e.to_string(),
        };
        assert!(err(json!({"rename": {"a.b": "c.d"}})).contains("use `move`"));
        assert!(err(json!({"rename": {"a.*": "x"}})).contains("must end in a field name"));
        assert!(err(json!({"set": {"a.*.b": 1}})).contains("only allowed in `remove` and `rename`"));
        assert!(err(json!({"remove": ["a..b"]})).contains("empty segment"));
        assert!(err(json!({"set": {"a": "${nope}"}})).contains("unknown variable `${nope}`"));
        assert!(err(json!({"non_json": "drop"})).contains("expected `pass` or `reject`"));
        assert!(err(json!({"sett": {}})).contains("unknown field `sett`"));
        assert!(err(json!({"set": {"a.b": 1, "/a/b": 2}})).contains("`/a/b` appears twice"));
    }

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json("+json"));
    }
}
