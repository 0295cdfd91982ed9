//! Values that `set` and `add` put into a JSON body: any JSON value from the config, whose strings
//! are [templates](airlock_sdk::template) (`"${param.id}"`, `"by ${context.consumer}"`).
//! Read from the config as `serde_json::Value`, put into bodies as [`Json`] (its numbers written
//! as serde_json writes them).

use airlock_sdk::template::{Source, Template};
use serde::de::{self, Deserialize, Deserializer};
use serde_json::Value;

use crate::json::{Json, Object};

/// A JSON value with templates in its strings, parsed once at configure.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    /// A value without any variable: put as it is.
    Fixed(Json),
    /// A string with variables: expanded to a string.
    Text(Template),
    /// An array holding variables somewhere.
    Array(Vec<ValueTemplate>),
    /// An object holding variables somewhere, keys in the order written.
    Object(Vec<(String, ValueTemplate)>),
}

impl ValueTemplate {
    /// Parses the templates in `value`'s strings.
    pub fn from_value(value: Value) -> Result<Self, String> {
        Ok(match value {
            Value::String(text) => {
                let template = Template::parse(&text)?;
                if template.is_literal() { ValueTemplate::Fixed(Json::String(text)) } else { ValueTemplate::Text(template) }
            }
            Value::Array(items) => {
                let items = items.into_iter().map(Self::from_value).collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(Self::is_fixed) {
                    ValueTemplate::Fixed(Json::Array(items.into_iter().map(Self::into_fixed).collect()))
                } else {
                    ValueTemplate::Array(items)
                }
            }
            Value::Object(map) => {
                let fields =
                    map.into_iter().map(|(k, v)| Ok((k, Self::from_value(v)?))).collect::<Result<Vec<_>, String>>()?;
                if fields.iter().all(|(_, v)| v.is_fixed()) {
                    ValueTemplate::Fixed(Json::Object(fields.into_iter().map(|(k, v)| (k, v.into_fixed())).collect()))
                } else {
                    ValueTemplate::Object(fields)
                }
            }
            other => ValueTemplate::Fixed(Json::from(other)),
        })
    }

    fn is_fixed(&self) -> bool {
        matches!(self, ValueTemplate::Fixed(_))
    }

    fn into_fixed(self) -> Json {
        match self {
            ValueTemplate::Fixed(v) => v,
            // Only called after `is_fixed`.
            _ => Json::Null,
        }
    }

    /// The value for one request.
    pub fn expand(&self, source: &impl Source) -> Json {
        match self {
            ValueTemplate::Fixed(v) => v.clone(),
            ValueTemplate::Text(t) => Json::String(t.expand_string(source)),
            ValueTemplate::Array(items) => Json::Array(items.iter().map(|v| v.expand(source)).collect()),
            ValueTemplate::Object(fields) => {
                Json::Object(fields.iter().map(|(k, v)| (k.clone(), v.expand(source))).collect::<Object>())
            }
        }
    }
}

impl<'de> Deserialize<'de> for ValueTemplate {
    /// From any JSON (TOML) value.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ValueTemplate::from_value(Value::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}
