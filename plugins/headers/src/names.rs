//! Config value types: header names, templates and ordered maps of them, validated while the
//! config is deserialized so that errors carry the key path.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::template::Template;

/// Checks an HTTP header name (an RFC 9110 token) and lower-cases it.
pub fn header_name(name: &str) -> Result<String, String> {
    let valid = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() {
        return Err("empty header name".to_owned());
    }
    if !name.bytes().all(valid) {
        return Err(format!("invalid header name `{name}`: use letters, digits and !#$%&'*+-.^_`|~"));
    }
    Ok(name.to_ascii_lowercase())
}

/// A valid header name, lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderName(pub String);

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        header_name(&text).map(HeaderName).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse(&text).map_err(de::Error::custom)
    }
}

/// A table of header name to `V`, in the order written; a header may appear once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMap<V>(pub Vec<(String, V)>);

impl<V> Default for HeaderMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for HeaderMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = HeaderMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of header names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some(HeaderName(name)) = map.next_key()? {
                    let value = map.next_value()?;
                    if entries.iter().any(|(seen, _)| *seen == name) {
                        return Err(de::Error::custom(format!(
                            "header `{name}` appears twice (header names are case-insensitive)"
                        )));
                    }
                    entries.push((name, value));
                }
                Ok(HeaderMap(entries))
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}
