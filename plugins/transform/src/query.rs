//! Query string rules: remove, rename, set, add and append query parameters.
//!
//! Parameters are matched by their decoded name (`a%20b` is `a b`); parameters no rule touches
//! keep their exact bytes and order. Values written by rules are templates, percent-encoded.

use airlock_sdk::template::{Source, Template};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::table::Table;

/// Bytes escaped in names and values written into the query: all but RFC 3986 unreserved.
const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A query parameter name: any non-empty text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamName(pub String);

impl std::fmt::Display for ParamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ParamName {
    /// From a non-empty string.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if name.is_empty() {
            return Err(de::Error::custom("empty query parameter name"));
        }
        Ok(ParamName(name))
    }
}

/// The query rules of the request; every key is optional. Applied in the order remove, rename,
/// set, add, append.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryRules {
    /// Parameters removed (every value).
    pub remove: Vec<ParamName>,
    /// Every value of the key's parameter moves to the value's name (replacing it).
    pub rename: Table<ParamName, ParamName>,
    /// Every value replaced with this one (added if absent).
    pub set: Table<ParamName, Template>,
    /// Added only if the parameter is absent.
    pub add: Table<ParamName, Template>,
    /// Another value added.
    pub append: Table<ParamName, Template>,
}

/// One `name=value` pair as it came (raw) and its decoded name.
#[derive(Debug)]
struct Pair {
    raw: String,
    name: String,
}

impl Pair {
    fn new(name: &str, value: &str) -> Self {
        let raw = format!("{}={}", encode(name), encode(value));
        Self { raw, name: name.to_owned() }
    }

    fn parse(raw: &str) -> Self {
        let name = raw.split_once('=').map_or(raw, |(n, _)| n);
        Self { raw: raw.to_owned(), name: decode(name) }
    }

    /// The raw value part, `=` included (empty for a bare `name`).
    fn raw_value(&self) -> &str {
        self.raw.find('=').map_or("", |i| &self.raw[i..])
    }
}

impl QueryRules {
    /// True if there is no rule.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.rename.is_empty() && self.set.is_empty() && self.add.is_empty() && self.append.is_empty()
    }

    /// Checks what deserializing cannot; `key` is where the rules sit (e.g. `request.query`).
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if let Some((name, _)) = self.rename.iter().find(|(from, to)| from == to) {
            return Err(format!("`{key}.rename.{name}`: renames `{name}` to itself"));
        }
        Ok(())
    }

    /// The query string after the rules, from the one the request has (`None`: no query).
    pub fn apply(&self, query: Option<&str>, source: &impl Source) -> Option<String> {
        let mut pairs: Vec<Pair> =
            query.unwrap_or_default().split('&').filter(|p| !p.is_empty()).map(Pair::parse).collect();
        for ParamName(name) in &self.remove {
            pairs.retain(|p| p.name != *name);
        }
        for (ParamName(from), ParamName(to)) in self.rename.iter() {
            if pairs.iter().any(|p| p.name == *from) {
                pairs.retain(|p| p.name != *to);
                for pair in pairs.iter_mut().filter(|p| p.name == *from) {
                    pair.raw = format!("{}{}", encode(to), pair.raw_value());
                    pair.name = to.clone();
                }
            }
        }
        for (ParamName(name), template) in self.set.iter() {
            let pair = Pair::new(name, &template.expand_string(source));
            match pairs.iter().position(|p| p.name == *name) {
                Some(first) => {
                    pairs[first] = pair;
                    let mut index = 0;
                    pairs.retain(|p| {
                        index += 1;
                        index - 1 == first || p.name != *name
                    });
                }
                None => pairs.push(pair),
            }
        }
        for (ParamName(name), template) in self.add.iter() {
            if !pairs.iter().any(|p| p.name == *name) {
                pairs.push(Pair::new(name, &template.expand_string(source)));
            }
        }
        for (ParamName(name), template) in self.append.iter() {
            pairs.push(Pair::new(name, &template.expand_string(source)));
        }
        let raw: Vec<&str> = pairs.iter().map(|p| p.raw.as_str()).collect();
        (!raw.is_empty()).then(|| raw.join("&"))
    }
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, QUERY_COMPONENT).to_string()
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
fn decode(text: &str) -> String {
    percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use airlock_sdk::template::MapSource;
    use serde_json::json;

    use super::*;

    fn fake() -> MapSource {
        MapSource::default().context("consumer", "alice & bob")
    }

    fn rules(config: serde_json::Value) -> QueryRules {
        serde_json::from_value(config).unwrap()
    }

    #[test]
    fn rules_edit_the_query_and_keep_the_rest_as_is() {
        let r = rules(json!({
            "remove": ["debug"],
            "rename": {"q": "search"},
            "set": {"user": "${context.consumer}", "page": "1"},
            "add": {"limit": "10", "sort": "no"},
            "append": {"tag": "x y"}
        }));
        let out = r.apply(Some("q=a%2Bb&debug=1&sort=name&page=3&page=4&tag=t&keep=%7E"), &fake());
        assert_eq!(out.as_deref(), Some("search=a%2Bb&sort=name&page=1&tag=t&keep=%7E&user=alice%20%26%20bob&limit=10&tag=x%20y"));
        assert_eq!(r.apply(None, &fake()).as_deref(), Some("user=alice%20%26%20bob&page=1&limit=10&sort=no&tag=x%20y"));
    }

    #[test]
    fn names_are_matched_decoded_and_empty_queries_vanish() {
        let r = rules(json!({"remove": ["a b", "flag"]}));
        assert_eq!(r.apply(Some("a+b=1&a%20b=2&flag"), &fake()), None);
        assert_eq!(r.apply(Some("x=1&&flag"), &fake()).as_deref(), Some("x=1"));
    }

    #[test]
    fn config_errors_name_the_problem() {
        let r = rules(json!({"rename": {"a": "a"}}));
        assert_eq!(r.validate("request.query").unwrap_err(), "`request.query.rename.a`: renames `a` to itself");
        let err = serde_json::from_value::<QueryRules>(json!({"remove": [""]})).unwrap_err().to_string();
        assert!(err.contains("empty query parameter name"), "{err}");
    }
}
