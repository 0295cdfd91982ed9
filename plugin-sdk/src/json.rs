//! JSON to Rust values, with errors that name the key path instead of a line and column.

use serde::de::DeserializeOwned;
use serde_json::error::Category;

/// Deserializes a plugin config from the JSON text the gateway hands to `configure`.
///
/// An empty text counts as `{}`, and `{}` is also accepted by types that take no config at all
/// (`()`, unit structs), which deserialize from `null` but not from an empty map. Deserializes
/// straight from the text, so tables keep the order they were written in.
pub(crate) fn config_from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    match from_slice(text.as_bytes(), "the config") {
        Ok(config) => Ok(config),
        Err(first) => {
            let given = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).ok();
            // `()` and unit structs deserialize from `null` only.
            match (serde_json::from_str::<T>("null"), given) {
                (Ok(config), Some(given)) if given.is_empty() => Ok(config),
                // serde's "invalid type: map, expected unit" says nothing an operator can act on.
                (Ok(_), Some(given)) => Err(takes_no_config(&given)),
                _ => Err(first),
            }
        }
    }
}

/// Why a config was refused by a plugin that takes none: the keys it was given.
fn takes_no_config(given: &serde_json::Map<String, serde_json::Value>) -> String {
    let keys: Vec<String> = given.keys().map(|k| format!("`{k}`")).collect();
    let mut message = format!("this plugin takes no config, but was given {}: remove it", keys.join(", "));
    if given.contains_key("consumers") {
        message.push_str(
            " (`consumers` is the gateway's, added when the plugin is granted `consumers`: a plugin granted it \
             declares it in its config type)",
        );
    }
    message
}

/// Deserializes a JSON body.
pub(crate) fn body_from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    from_slice(bytes, "the body")
}

/// What `json_body` returns for a body as `body()` gives it: `Ok(None)` when there is no buffered
/// body, or when it is empty or only JSON whitespace (space, tab, CR, LF: no JSON value at all, as
/// a `GET` or a `204` carries); otherwise the body deserialized as [`body_from_slice`] does.
pub(crate) fn optional_body<T: DeserializeOwned>(body: Option<&[u8]>) -> Result<Option<T>, String> {
    match body {
        Some(bytes) if !is_json_whitespace(bytes) => body_from_slice(bytes).map(Some),
        _ => Ok(None),
    }
}

/// Whether `bytes` is empty or only the whitespace JSON allows between tokens (RFC 8259).
fn is_json_whitespace(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Deserializes JSON text. Errors in the data read "`a.b[2].c`: message" (just "message" at the
/// root), without a line and column; syntax errors keep their position.
fn from_slice<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.classify() != Category::Data {
            return format!("{what} is not valid JSON: {inner}");
        }
        let mut message = inner.to_string();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        if let Some(stripped) = message.strip_suffix(&position) {
            message.truncate(stripped.len());
        }
        if path == "." || path.chars().all(|c| c == '?' || c == '.') { message } else { format!("`{path}`: {message}") }
    })?;
    de.end().map_err(|e| format!("{what} is not valid JSON: {e}"))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Rules {
        set: BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Config {
        request: Rules,
    }

    #[test]
    fn errors_name_the_key_path_without_positions() {
        let err = config_from_str::<Config>(r#"{"request": {"set": {"x-a": 5}}}"#).unwrap_err();
        assert_eq!(err, "`request.set.x-a`: invalid type: integer `5`, expected a string");
        let err = config_from_str::<Config>(r#"{"request": {"sett": {}}}"#).unwrap_err();
        assert_eq!(err, "`request.sett`: unknown field `sett`, expected `set`");
        let err = config_from_str::<Config>(r#"{"nope": 1}"#).unwrap_err();
        assert_eq!(err, "`nope`: unknown field `nope`, expected `request`");
    }

    #[test]
    fn empty_config_fits_unit_and_defaulted_structs() {
        config_from_str::<()>("{}").unwrap();
        config_from_str::<()>("").unwrap();
        // A config given to one that takes none: its keys, not serde's "expected unit".
        let err = config_from_str::<()>(r#"{"tag": "v1", "limit": 3}"#).unwrap_err();
        assert_eq!(err, "this plugin takes no config, but was given `tag`, `limit`: remove it");
        let err = config_from_str::<()>(r#"{"consumers": []}"#).unwrap_err();
        assert!(err.contains("`consumers` is the gateway's"), "{err}");
        assert_eq!(config_from_str::<Config>("{}").unwrap(), Config::default());
        #[derive(Deserialize)]
        struct Unit;
        config_from_str::<Unit>("{}").unwrap();
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Required {
            ms: u32,
        }
        assert_eq!(config_from_str::<Required>("{}").unwrap_err(), "missing field `ms`");
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let err = config_from_str::<Config>("{").unwrap_err();
        assert!(err.starts_with("the config is not valid JSON: EOF"), "{err}");
        let err = body_from_slice::<Config>(b"{\"request\": ").unwrap_err();
        assert!(err.starts_with("the body is not valid JSON"), "{err}");
        let err = body_from_slice::<Config>(b"{} x").unwrap_err();
        assert_eq!(err, "the body is not valid JSON: trailing characters at line 1 column 4");
    }

    #[test]
    fn empty_or_blank_body_is_no_body() {
        assert_eq!(optional_body::<Config>(None), Ok(None));
        assert_eq!(optional_body::<Config>(Some(b"")), Ok(None));
        assert_eq!(optional_body::<Config>(Some(b" \r\n\t\n")), Ok(None));
        // Even for types that would accept `null`: an empty body is not `null`.
        assert_eq!(optional_body::<Option<Config>>(Some(b"")), Ok(None));
        assert_eq!(optional_body::<serde_json::Value>(Some(b"\n")), Ok(None));
    }

    #[test]
    fn non_blank_body_is_parsed() {
        assert_eq!(optional_body::<Config>(Some(b" {} \n")), Ok(Some(Config::default())));
        assert_eq!(optional_body::<serde_json::Value>(Some(b"null")), Ok(Some(serde_json::Value::Null)));
        assert_eq!(optional_body::<Option<Config>>(Some(b"null")), Ok(Some(None)));
        let err = optional_body::<Config>(Some(br#"{"request": {"set": {"x-a": 5}}}"#)).unwrap_err();
        assert_eq!(err, "`request.set.x-a`: invalid type: integer `5`, expected a string");
        // Other whitespace is not JSON whitespace: still a syntax error, not "no body".
        let err = optional_body::<Config>(Some("\u{a0}".as_bytes())).unwrap_err();
        assert!(err.starts_with("the body is not valid JSON"), "{err}");
        let err = optional_body::<Config>(Some(b"{")).unwrap_err();
        assert!(err.starts_with("the body is not valid JSON: EOF"), "{err}");
    }

    #[test]
    fn tables_keep_their_order() {
        #[derive(Deserialize)]
        struct Ordered(#[serde(deserialize_with = "keys")] Vec<String>);
        fn keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Vec<String>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(keys)
                }
            }
            d.deserialize_map(V)
        }
        let Ordered(keys) = config_from_str(r#"{"b": 1, "a": 2, "c": 3}"#).unwrap();
        assert_eq!(keys, ["b", "a", "c"]);
    }
}
