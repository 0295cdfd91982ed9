//! [`Json`]: the body documents the rules change, with every number kept as the text it was
//! written with.
//!
//! Why not `serde_json::Value`: without serde_json's `arbitrary_precision` feature, a number
//! beyond `u64`/`i64` (`123456789012345678901234567890`) or a decimal with more than 17
//! significant digits is read as an `f64` and written back rounded (`1.2345678901234568e29`),
//! and a gateway must not change numbers it was not asked to change. Turning the feature on is
//! not scoped to this plugin: cargo unifies features across one build, and the host's build
//! script builds every built-in plugin in one `cargo build --target wasm32-wasip2`, so it would
//! reach `airlock-sdk` and every other plugin's config parsing too (where numbers inside
//! `untagged`/`flatten` types, or read with `deserialize_any`, stop deserializing). So the
//! document is this plugin's own type instead, and serde_json stays as it is for everything else:
//!
//! - [`Json::parse`] has serde_json check the text first (walking it as it would to build a
//!   `Value`, keeping nothing), so invalid bodies get exactly serde_json's errors, and its
//!   nesting limit; then reads the checked text into a [`Json`], numbers as their text, strings
//!   unescaped by serde_json, duplicate keys as serde_json's `preserve_order` map has them (the
//!   last value, in the first one's place);
//! - [`Json::to_vec`] writes compact JSON as `serde_json::to_vec` does, strings escaped by
//!   serde_json, numbers as they were read.
//!
//! Numbers from the config (`set`, `add`) come in as `serde_json::Value` and are written as
//! serde_json writes them (`Json::from`).

use indexmap::IndexMap;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// An object: fields in the order written.
pub type Object = IndexMap<String, Json>;

/// A JSON document whose numbers are the exact text they were written with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Json {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written (`123456789012345678901234567890`, `0.10000000000000000000001`,
    /// `1E+2`): never rounded nor respelled.
    Number(String),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object.
    Object(Object),
}

/// Deeper than serde_json reads (it refuses a 128th level): never reached by checked text.
const MAX_DEPTH: usize = 128;

impl Json {
    /// Reads a JSON document (no byte order mark). `Err` is serde_json's complaint about the text.
    pub fn parse(text: &[u8]) -> Result<Json, String> {
        serde_json::from_slice::<Checked>(text).map_err(|e| e.to_string())?;
        let mut reader = Reader { text, at: 0 };
        let document = reader.value(0)?;
        reader.skip_whitespace();
        match reader.at == text.len() {
            true => Ok(document),
            false => Err(reader.unexpected()),
        }
    }

    /// The document as compact JSON text.
    pub fn to_vec(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::new();
        self.write(&mut out)?;
        Ok(out)
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(true) => out.extend_from_slice(b"true"),
            Json::Bool(false) => out.extend_from_slice(b"false"),
            Json::Number(text) => out.extend_from_slice(text.as_bytes()),
            Json::String(text) => serde_json::to_writer(&mut *out, text)?,
            Json::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out)?;
                }
                out.push(b']');
            }
            Json::Object(fields) => {
                out.push(b'{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key)?;
                    out.push(b':');
                    value.write(out)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }
}

impl From<Value> for Json {
    /// A config value; its numbers written as serde_json writes them.
    fn from(value: Value) -> Self {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(b),
            Value::Number(n) => Json::Number(n.to_string()),
            Value::String(s) => Json::String(s),
            Value::Array(items) => Json::Array(items.into_iter().map(Json::from).collect()),
            Value::Object(fields) => Json::Object(fields.into_iter().map(|(k, v)| (k, Json::from(v))).collect()),
        }
    }
}

/// Walks a document as deserializing a `serde_json::Value` does, keeping nothing: the same
/// errors, at the same places.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// Reads text serde_json has checked; every step still fails cleanly rather than panic.
struct Reader<'t> {
    text: &'t [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    fn unexpected(&self) -> String {
        format!("unexpected input at byte {}", self.at)
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.skip_whitespace();
        match self.peek() == Some(byte) {
            true => {
                self.at += 1;
                Ok(())
            }
            false => Err(self.unexpected()),
        }
    }

    fn literal(&mut self, word: &[u8], value: Json) -> Result<Json, String> {
        match self.text.get(self.at..self.at + word.len()) == Some(word) {
            true => {
                self.at += word.len();
                Ok(value)
            }
            false => Err(self.unexpected()),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{' | b'[') if depth >= MAX_DEPTH => Err(format!("nested deeper than {MAX_DEPTH} levels")),
            Some(b'{') => {
                self.at += 1;
                let mut fields = Object::new();
                self.skip_whitespace();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(Json::Object(fields));
                }
                loop {
                    self.skip_whitespace();
                    let key = self.string()?;
                    self.expect(b':')?;
                    let value = self.value(depth + 1)?;
                    // As serde_json's map: a repeated key keeps its first place, with the last value.
                    fields.insert(key, value);
                    self.skip_whitespace();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(fields));
                        }
                        _ => return Err(self.unexpected()),
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.skip_whitespace();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.skip_whitespace();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(self.unexpected()),
                    }
                }
            }
            Some(b'"') => self.string().map(Json::String),
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.unexpected()),
        }
    }

    /// The number's text as it is: checked text holds nothing of these bytes right after one.
    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.at += 1;
        }
        match self.text.get(start..self.at).map(std::str::from_utf8) {
            Some(Ok(text)) if !text.is_empty() => Ok(Json::Number(text.to_owned())),
            _ => Err(self.unexpected()),
        }
    }

    /// A string (at its opening quote), unescaped by serde_json when it holds escapes.
    fn string(&mut self) -> Result<String, String> {
        let start = self.at;
        if self.peek() != Some(b'"') {
            return Err(self.unexpected());
        }
        self.at += 1;
        let mut escaped = false;
        loop {
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.at += 2;
                }
                Some(_) => self.at += 1,
                None => return Err(self.unexpected()),
            }
        }
        self.at += 1;
        let quoted = self.text.get(start..self.at).ok_or_else(|| self.unexpected())?;
        if escaped {
            serde_json::from_slice(quoted).map_err(|e| e.to_string())
        } else {
            let inner = quoted.get(1..quoted.len() - 1).ok_or_else(|| self.unexpected())?;
            std::str::from_utf8(inner).map(str::to_owned).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn round_trip(text: &str) -> String {
        String::from_utf8(Json::parse(text.as_bytes()).unwrap().to_vec().unwrap()).unwrap()
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        for number in [
            "123456789012345678901234567890",
            "-123456789012345678901234567890",
            "18446744073709551616",
            "-9223372036854775809",
            "0.1000000000000000055511151231257827021181583404541015625",
            "3.141592653589793238462643383279",
            "1E+2",
            "1.0e-7",
            "-0",
            "-0.0",
            "2.50",
            "0",
        ] {
            let text = format!(r#"{{"n":{number},"list":[{number}, {number}]}}"#);
            assert_eq!(round_trip(&text), format!(r#"{{"n":{number},"list":[{number},{number}]}}"#), "{number}");
            assert_eq!(Json::parse(number.as_bytes()), Ok(Json::Number(number.to_owned())), "{number}");
        }
    }

    #[test]
    fn everything_else_is_written_as_serde_json_writes_it() {
        for text in [
            r#"{"a": [1, 2.5, -3, true, false, null, "s"], "b": {}, "c": [], "d": {"e": {"f": [[]]}}}"#,
            r#"  {"esc": "q\" b\\ s\/ \b\f\n\r\t \u0001 \u00e9 \ud83d\ude00 é 😀", "\u006b": 1}  "#,
            r#"{"dup": 1, "x": 2, "dup": 3}"#,
            r#""just a string""#,
            "[1,[2,[3,[4]]]]",
            "true",
            "null",
        ] {
            let expected = serde_json::to_string(&serde_json::from_str::<Value>(text).unwrap()).unwrap();
            assert_eq!(round_trip(text), expected, "{text}");
            assert_eq!(Json::parse(text.as_bytes()).unwrap(), Json::from(serde_json::from_str::<Value>(text).unwrap()));
        }
    }

    #[test]
    fn invalid_text_gets_serde_json_errors() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        for text in [
            "{\"a\": ",
            "",
            "   ",
            "{\"a\": 1,}",
            "[1 2]",
            "01",
            "1.",
            "-",
            "{\"a\": 1} x",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"a\u{1}\"",
            "nul",
            "{1: 2}",
            // Beyond f64's range: refused as before (serde_json checks the text).
            "1e400",
            deep.as_str(),
        ] {
            let expected = serde_json::from_str::<Value>(text).unwrap_err().to_string();
            assert_eq!(Json::parse(text.as_bytes()), Err(expected), "{text:?}");
        }
        assert!(Json::parse(b"\"\xff\"").unwrap_err().contains("invalid unicode code point"));
        let nested = "[".repeat(127) + &"]".repeat(127);
        assert!(Json::parse(nested.as_bytes()).is_ok(), "127 levels, as serde_json reads");
    }

    #[test]
    fn config_values_convert_as_serde_json_writes_them() {
        let config = json!({"n": 3, "f": 1.5, "neg": -7, "big": 1e300, "u": u64::MAX, "tiny": 5e-324});
        assert_eq!(Json::from(config.clone()).to_vec().unwrap(), serde_json::to_vec(&config).unwrap());
    }
}
