//! Values that `set` and `add` put into a JSON body: any JSON value from the config, whose strings
//! are [templates](airlock_sdk::template) (`"${param.id}"`, `"by ${context.consumer}"`).

use airlock_sdk::template::{Source, Template};
use serde::de::{self, Deserialize, Deserializer};
use serde_json::{Map, Value};

/// A JSON value with templates in its strings, parsed once at configure.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    /// A value without any variable: put as it is.
    Fixed(Value),
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
                if template.is_literal() { ValueTemplate::Fixed(Value::String(text)) } else { ValueTemplate::Text(template) }
            }
            Value::Array(items) => {
                let items = items.into_iter().map(Self::from_value).collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(Self::is_fixed) {
                    ValueTemplate::Fixed(Value::Array(items.into_iter().map(Self::into_fixed).collect()))
                } else {
                    ValueTemplate::Array(items)
                }
            }
            Value::Object(map) => {
                let fields =
                    map.into_iter().map(|(k, v)| Ok((k, Self::from_value(v)?))).collect::<Result<Vec<_>, String>>()?;
                if fields.iter().all(|(_, v)| v.is_fixed()) {
                    ValueTemplate::Fixed(Value::Object(fields.into_iter().map(|(k, v)| (k, v.into_fixed())).collect()))
                } else {
                    ValueTemplate::Object(fields)
                }
            }
            other => ValueTemplate::Fixed(other),
        })
    }

    fn is_fixed(&self) -> bool {
        matches!(self, ValueTemplate::Fixed(_))
    }

    fn into_fixed(self) -> Value {
        match self {
            ValueTemplate::Fixed(v) => v,
            // Only called after `is_fixed`.
            _ => Value::Null,
        }
    }

    /// The value for one request.
    pub fn expand(&self, source: &impl Source) -> Value {
        match self {
            ValueTemplate::Fixed(v) => v.clone(),
            ValueTemplate::Text(t) => Value::String(t.expand_string(source)),
            ValueTemplate::Array(items) => Value::Array(items.iter().map(|v| v.expand(source)).collect()),
            ValueTemplate::Object(fields) => {
                Value::Object(fields.iter().map(|(k, v)| (k.clone(), v.expand(source))).collect::<Map<_, _>>())
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
