//! JSON Schemas from the config: read (inline, JSON text or `file:`), compiled once with boon,
//! and run against a request's values.

use boon::{CompileError, Compiler, Draft, ErrorKind, InstanceToken, SchemaIndex, Schemas, UrlLoader, ValidationError};
use serde_json::Value;

use crate::report::{Failure, Failures};

/// Where each schema is compiled: a base that no `$ref` can reach, so that a relative `$ref`
/// (`other.json`) resolves under it and is refused by [`Refuse`], like an absolute one.
const BASE: &str = "https://schema.request-validator.invalid/";

/// The URL each schema is compiled as (one compiler per schema).
const ROOT: &str = "https://schema.request-validator.invalid/schema.json";

/// A compiled schema.
pub struct Schema {
    schemas: Schemas,
    index: SchemaIndex,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("index", &self.index).finish_non_exhaustive()
    }
}

/// A schema's document, and whether it was written inline (a TOML table, whose keys are the
/// config's own: errors can name them).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The schema.
    pub value: Value,
    /// Written as a table in the config (not a JSON text or a file).
    pub inline: bool,
}

impl Document {
    /// Reads the schema at config key `key`: a table (or a boolean) as it is, a string as a JSON
    /// document, or `file:<path>` as the JSON file at `path` in the granted directory.
    pub fn read(key: &str, raw: Value) -> Result<Self, String> {
        let Value::String(text) = raw else { return Ok(Self { value: raw, inline: true }) };
        let (text, from) = match text.strip_prefix("file:") {
            Some(path) => (airlock_sdk::files::read_to_string(path).map_err(|e| format!("`{key}`: {e}"))?, format!("the file `{path}`")),
            None => (text, "the string".to_owned()),
        };
        match serde_json::from_str(&text) {
            Ok(value) => Ok(Self { value, inline: false }),
            Err(e) => Err(format!(
                "`{key}`: {from} is not a JSON document ({e}); give a JSON Schema as a table, a JSON text or `file:<path>`"
            )),
        }
    }
}

/// The loader boon asks for any document not in the config: it refuses all of them, so a schema
/// can make the plugin read no file and fetch nothing.
struct Refuse;

impl UrlLoader for Refuse {
    fn load(&self, url: &str) -> Result<Value, Box<dyn std::error::Error>> {
        Err(format!("`{url}` is not loaded").into())
    }
}

impl Schema {
    /// Compiles the schema at config key `key` (the draft: its `$schema`, else 2020-12). The
    /// error starts with the key, deeper when the schema is inline and the fault is at a key
    /// of its own (`body_schema.properties.name.pattern`).
    pub fn compile(key: &str, document: &Document) -> Result<Self, String> {
        let mut compiler = Compiler::new();
        compiler.set_default_draft(Draft::V2020_12);
        compiler.use_loader(Box::new(Refuse));
        let mut schemas = Schemas::new();
        if let Err(e) = compiler.add_resource(ROOT, document.value.clone()) {
            return Err(compile_error(key, document.inline, &e));
        }
        match compiler.compile(ROOT, &mut schemas) {
            Ok(index) => Ok(Self { schemas, index }),
            Err(e) => Err(compile_error(key, document.inline, &e)),
        }
    }

    /// Validates `instance`, adding what fails to `failures` as `failure(pointer, message)`
    /// makes it. Messages quote the client's values (`'...' does not match pattern`) and
    /// pointers its keys: both are cut at [`MAX_MESSAGE`] and [`MAX_POINTER`] bytes, so that a
    /// huge value does not come back ten times over.
    pub fn check(&self, instance: &Value, failures: &mut Failures, failure: &dyn Fn(String, String) -> Failure) {
        if let Err(error) = self.schemas.validate(instance, self.index) {
            reported(&error, &mut |node| {
                failures.push_with(|| failure(clip(node.instance_location.to_string(), MAX_POINTER), clip(message(node), MAX_MESSAGE)))
            });
        }
    }

    /// Whether `instance` passes.
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.schemas.validate(instance, self.index).is_ok()
    }
}

/// The longest message of a failure, in bytes.
pub const MAX_MESSAGE: usize = 300;

/// The longest pointer of a failure, in bytes.
pub const MAX_POINTER: usize = 1000;

/// `text` cut to at most `max` bytes (at a character boundary), ending in `…` when cut.
fn clip(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// The errors worth telling a client, in order: the leaves of boon's error tree, except that
/// an `anyOf` or `oneOf` none of whose schemas matched is one error (its alternatives' failures
/// are in its message), since no single one of them has to be fixed.
fn reported<'a, 's, 'v>(error: &'a ValidationError<'s, 'v>, visit: &mut dyn FnMut(&'a ValidationError<'s, 'v>)) {
    if error.causes.is_empty() || matches!(error.kind, ErrorKind::AnyOf | ErrorKind::OneOf(None)) {
        visit(error);
    } else {
        for cause in &error.causes {
            reported(cause, visit);
        }
    }
}

/// The message of a reported error: boon's, with an `anyOf`/`oneOf`'s alternatives' first
/// failures after it.
fn message(error: &ValidationError<'_, '_>) -> String {
    let own = error.kind.to_string();
    if error.causes.is_empty() || !matches!(error.kind, ErrorKind::AnyOf | ErrorKind::OneOf(None)) {
        return own;
    }
    const SHOWN: usize = 3;
    let here = error.instance_location.to_string();
    let (mut parts, mut more) = (Vec::new(), 0);
    for cause in &error.causes {
        reported(cause, &mut |leaf| {
            if parts.len() == SHOWN {
                more += 1;
                return;
            }
            let at = leaf.instance_location.to_string();
            // Nested alternatives are named, not expanded.
            let what = leaf.kind.to_string();
            parts.push(if at == here { what } else { format!("`{at}`: {what}") });
        });
    }
    let more = if more > 0 { format!("; {more} more") } else { String::new() };
    format!("{own} ({}{more})", parts.join("; "))
}

/// A compile error as a config error naming the key.
fn compile_error(key: &str, inline: bool, error: &CompileError) -> String {
    match error {
        CompileError::LoadUrlError { url, .. } | CompileError::UnsupportedUrlScheme { url } => {
            let shown = url.strip_prefix(BASE).unwrap_or(url);
            format!(
                "`{key}`: refers to `{shown}` (a `$ref`, or a `$schema` that is no known draft), which is not loaded: \
                 the plugin reads no file and fetches nothing; put that schema under `$defs` and refer to it as `#/$defs/<name>`"
            )
        }
        CompileError::ValidationError { url, src } => {
            let base = fragment_tokens(url);
            let mut first = None;
            let mut count = 0;
            schema_faults(src, None, &mut |at, name, node| {
                count += 1;
                if first.is_none() {
                    let mut tokens = base.clone();
                    tokens.extend(at);
                    let message = one_line(&message(node));
                    first = Some((tokens, name.map_or(message.clone(), |name| format!("the key `{name}`: {message}"))));
                }
            });
            let Some((tokens, message)) = first else { return format!("`{key}`: not a valid JSON Schema") };
            let more = if count > 1 { format!(" (and {} more)", count - 1) } else { String::new() };
            format!("{}: not a valid JSON Schema: {message}{more}", located(key, inline, &tokens))
        }
        CompileError::InvalidRegex { url, regex, src } => {
            let tokens = fragment_tokens(url);
            format!("{}: `{regex}` is not a regex the plugin can run: {}", located(key, inline, &tokens), one_line(&src.to_string()))
        }
        CompileError::Bug(src) => format!("`{key}`: {}", one_line(&src.to_string())),
        other => format!("`{key}`: {}", one_line(&format!("{other:#}").replace(ROOT, "the schema").replace(BASE, ""))),
    }
}

/// The faults a metaschema found in a schema, as [`reported`] walks them, each with where it is
/// in the schema, and the key it is about when it is a key that is wrong (`patternProperties`
/// keys must be regexes): boon does not say where that key is.
fn schema_faults<'a, 's, 'v>(
    error: &'a ValidationError<'s, 'v>,
    name: Option<&'a str>,
    visit: &mut dyn FnMut(Vec<Token>, Option<&'a str>, &'a ValidationError<'s, 'v>),
) {
    let name = match &error.kind {
        ErrorKind::PropertyName { prop } => Some(prop.as_str()),
        _ => name,
    };
    if error.causes.is_empty() || matches!(error.kind, ErrorKind::AnyOf | ErrorKind::OneOf(None)) {
        let at = match name {
            Some(_) => Vec::new(),
            None => error
                .instance_location
                .tokens
                .iter()
                .map(|t| match t {
                    InstanceToken::Prop(p) => Token::Key(p.to_string()),
                    InstanceToken::Item(i) => Token::Index(*i),
                })
                .collect(),
        };
        visit(at, name, error);
    } else {
        for cause in &error.causes {
            schema_faults(cause, name, visit);
        }
    }
}

/// A step of a path into a schema document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Key(String),
    Index(usize),
}

/// Where in the schema a fault is: the config key when the schema is inline and every key on
/// the way is one the gateway can point at (`body_schema.properties.name.pattern`), else the
/// schema's key and a JSON Pointer (`` `body_schema`: at `/properties/first name` ``).
fn located(key: &str, inline: bool, tokens: &[Token]) -> String {
    let plain = |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if inline && tokens.iter().all(|t| matches!(t, Token::Index(_)) || matches!(t, Token::Key(k) if plain(k))) {
        let mut path = key.to_owned();
        for token in tokens {
            match token {
                Token::Key(k) => {
                    path.push('.');
                    path.push_str(k);
                }
                Token::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        return format!("`{path}`");
    }
    if tokens.is_empty() {
        return format!("`{key}`");
    }
    let pointer: String = tokens
        .iter()
        .map(|t| match t {
            Token::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Token::Index(i) => format!("/{i}"),
        })
        .collect();
    format!("`{key}`: at `{pointer}`")
}

/// The JSON Pointer in a boon location's fragment (`...schema.json#/properties/a%20b`), as
/// tokens; an index is told from a key only by the document, so numbers are kept as keys
/// unless every step can be read as written.
fn fragment_tokens(url: &str) -> Vec<Token> {
    let Some((_, fragment)) = url.split_once('#') else { return Vec::new() };
    let fragment = percent_decode(fragment);
    fragment
        .split('/')
        .skip(1)
        .map(|t| {
            let key = t.replace("~1", "/").replace("~0", "~");
            match key.parse::<usize>() {
                Ok(i) if key == i.to_string() => Token::Index(i),
                _ => Token::Key(key),
            }
        })
        .collect()
}

/// Decodes `%XX` escapes (an invalid one is kept as it is); bytes that are not UTF-8 become
/// U+FFFD.
pub fn percent_decode(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A multi-line message (regex syntax errors draw the pattern and a caret) as one line: what
/// came before the drawing and its last `error: ...` line when it has one. A message of one
/// line is kept as it is.
fn one_line(message: &str) -> String {
    if !message.contains('\n') {
        return message.to_owned();
    }
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    match message.rsplit_once("\nerror: ") {
        Some((drawing, last)) => {
            // What came before the drawing (`'(?=a)' is not valid regex: `) is kept.
            let before = drawing.split("regex parse error:").next().unwrap_or("");
            words(&format!("{before}{last}"))
        }
        None => words(message),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::report::Place;

    fn compile(value: Value) -> Result<Schema, String> {
        Schema::compile("body_schema", &Document { value, inline: true })
    }

    fn failures(schema: &Schema, instance: Value) -> Vec<(String, String)> {
        let mut out = Failures::default();
        schema.check(&instance, &mut out, &|p, m| Failure::body(p, m));
        out.kept().iter().map(|f| (f.pointer.clone(), f.message.clone())).collect()
    }

    #[test]
    fn failures_have_a_pointer_and_a_message() {
        let schema = compile(json!({
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}, "tags": {"type": "array", "items": {"type": "integer"}}},
            "additionalProperties": false
        }))
        .unwrap();
        assert!(schema.is_valid(&json!({"name": "a", "tags": [1, 2]})));
        assert_eq!(failures(&schema, json!([])), [(String::new(), "want object, but got array".to_owned())]);
        let found = failures(&schema, json!({"tags": [1, "x"], "extra": 1}));
        assert!(found.contains(&(String::new(), "missing properties 'name'".to_owned())), "{found:?}");
        assert!(found.contains(&("/tags/1".to_owned(), "want integer, but got string".to_owned())), "{found:?}");
        assert!(found.iter().any(|(p, m)| p.is_empty() && m.contains("'extra'")), "{found:?}");
        assert_eq!(found.len(), 3);
        let mut out = Failures::default();
        schema.check(&json!({"name": "", "tags": ["a"]}), &mut out, &|p, m| Failure::parameter(Place::Query, "q", p, m));
        assert_eq!(out.kept()[0].pointer, "/name");
    }

    #[test]
    fn any_of_is_one_failure_with_its_alternatives() {
        let schema = compile(json!({"properties": {"id": {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 1}]}}})).unwrap();
        let found = failures(&schema, json!({"id": 0}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "/id");
        assert_eq!(found[0].1, "anyOf failed (want string, but got number; must be >=1, but got 0)");
    }

    #[test]
    fn the_draft_is_the_schemas_own_else_2020_12() {
        // Draft 4: `exclusiveMaximum` is a boolean beside `maximum`.
        let v4 = compile(json!({"$schema": "http://json-schema.org/draft-04/schema#", "maximum": 5, "exclusiveMaximum": true})).unwrap();
        assert!(!v4.is_valid(&json!(5)) && v4.is_valid(&json!(4)));
        // 2020-12: `prefixItems`, and `$defs` references.
        let latest = compile(json!({"prefixItems": [{"type": "integer"}], "items": {"$ref": "#/$defs/s"}, "$defs": {"s": {"type": "string"}}})).unwrap();
        assert!(latest.is_valid(&json!([1, "a"])) && !latest.is_valid(&json!([1, 2])) && !latest.is_valid(&json!(["a"])));
        // A boolean schema.
        assert!(!compile(json!(false)).unwrap().is_valid(&json!({})));
        // `format` asserts in draft 7 and before; it is an annotation in 2019-09 and 2020-12.
        let v7 = compile(json!({"$schema": "http://json-schema.org/draft-07/schema#", "format": "email"})).unwrap();
        assert!(!v7.is_valid(&json!("nope")) && v7.is_valid(&json!("a@example.com")));
        assert!(compile(json!({"format": "email"})).unwrap().is_valid(&json!("nope")));
    }

    #[test]
    fn remote_references_are_refused() {
        for reference in ["https://example.com/user.json", "user.json", "file:///etc/passwd", "#/$defs/missing"] {
            let err = compile(json!({"$ref": reference})).err().unwrap_or_default();
            assert!(err.starts_with("`body_schema`"), "{reference}: {err}");
            if !reference.starts_with('#') {
                assert!(err.contains("put that schema under `$defs`"), "{reference}: {err}");
                assert!(err.contains(&format!("refers to `{}`", reference.trim_start_matches("file://").trim_start_matches("/etc/").replace("passwd", ""))) || err.contains(reference), "{err}");
            }
        }
        let err = compile(json!({"$schema": "https://example.com/my-meta"})).unwrap_err();
        assert!(err.contains("refers to `https://example.com/my-meta`"), "{err}");
    }

    #[test]
    fn invalid_schemas_name_the_key() {
        let err = compile(json!({"type": "object", "properties": {"age": {"minimum": "5"}}})).unwrap_err();
        assert_eq!(err, "`body_schema.properties.age.minimum`: not a valid JSON Schema: want number, but got string");
        let err = compile(json!({"properties": {"name": {"pattern": "(?<=a)b"}}})).unwrap_err();
        assert!(err.starts_with("`body_schema.properties.name.pattern`: not a valid JSON Schema: '(?<=a)b' is not valid regex"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = compile(json!({"patternProperties": {"^(?!x)": {}}})).unwrap_err();
        assert!(err.starts_with("`body_schema`: not a valid JSON Schema: the key `^(?!x)`: '^(?!x)' is not valid regex: look-around"), "{err}");
        // Not inline, or a key the gateway cannot point at: the schema's key and a pointer.
        let err = Schema::compile("body_schema", &Document { value: json!({"properties": {"age": {"type": 5}}}), inline: false }).unwrap_err();
        assert!(err.starts_with("`body_schema`: at `/properties/age/type`: not a valid JSON Schema: "), "{err}");
        let err = compile(json!({"properties": {"first name": {"maxLength": -1}}})).unwrap_err();
        assert!(err.starts_with("`body_schema`: at `/properties/first name/maxLength`: "), "{err}");
        let err = compile(json!({"allOf": [{"type": "string"}, {"required": "name"}]})).unwrap_err();
        assert!(err.starts_with("`body_schema.allOf[1].required`: "), "{err}");
        assert!(compile(json!(5)).unwrap_err().starts_with("`body_schema`: not a valid JSON Schema"));
    }

    #[test]
    fn documents_are_tables_json_texts_or_files() {
        let inline = Document::read("body_schema", json!({"type": "object"})).unwrap();
        assert!(inline.inline);
        let text = Document::read("body_schema", json!(r#"{"type": ["string", "null"]}"#)).unwrap();
        assert_eq!(text, Document { value: json!({"type": ["string", "null"]}), inline: false });
        let err = Document::read("parameters[0].schema", json!("{type: string}")).unwrap_err();
        assert!(err.starts_with("`parameters[0].schema`: the string is not a JSON document"), "{err}");
        let err = Document::read("body_schema", json!("file:no/such/schema.json")).unwrap_err();
        assert!(err.starts_with("`body_schema`: cannot read `no/such/schema.json`"), "{err}");
    }

    #[test]
    fn long_values_are_cut_in_messages_and_pointers() {
        let schema = compile(json!({"additionalProperties": {"type": "string", "pattern": "^a"}})).unwrap();
        let long = "é".repeat(5000);
        let found = failures(&schema, json!({ long.clone(): long.clone() }));
        assert_eq!(found.len(), 1);
        let (pointer, message) = &found[0];
        assert!(pointer.len() <= MAX_POINTER && pointer.starts_with("/éé") && pointer.ends_with('…'), "{}", pointer.len());
        assert!(message.len() <= MAX_MESSAGE && message.starts_with("'éé") && message.ends_with('…'), "{message}");
        assert_eq!(clip("short".into(), 3), "…");
        assert_eq!(clip("abc".into(), 3), "abc");
        assert_eq!(one_line("'a  b' does not match pattern '^x'"), "'a  b' does not match pattern '^x'", "one line: as it is");
    }

    #[test]
    fn helpers() {
        assert_eq!(percent_decode("a%20b%zz%2"), "a b%zz%2");
        assert_eq!(fragment_tokens("x#/properties/a~1b/items/0"), [
            Token::Key("properties".into()),
            Token::Key("a/b".into()),
            Token::Key("items".into()),
            Token::Index(0)
        ]);
        assert_eq!(one_line("regex parse error:\n    (?=a)\n    ^^^\nerror: look-around is\n not supported"), "look-around is not supported");
        assert_eq!(one_line("'(?=a)' is not valid regex: regex parse error:\n    (?=a)\n    ^^^\nerror: no"), "'(?=a)' is not valid regex: no");
    }
}
