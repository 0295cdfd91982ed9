//! JSON Schemas from the config: read (inline, JSON text or `file:`), compiled once with boon,
//! and run against a request's values.

use std::collections::HashMap;

use boon::{CompileError, Compiler, Draft, ErrorKind, InstanceToken, SchemaIndex, Schemas, UrlLoader, ValidationError};
use serde_json::{Map, Value};

use crate::exact;
use crate::pattern;
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
    /// The schema's regexes as the plugin rewrote them ([`pattern::ecma`]), to the text the
    /// operator wrote: messages quote the latter.
    originals: HashMap<String, String>,
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
        let mut value = document.value.clone();
        let mut regexes = Regexes::default();
        rewrite_regexes(&mut value, &mut Vec::new(), &mut regexes);
        for (at, regex) in &regexes.found {
            if let Err(regex::Error::CompiledTooBig(limit)) = regex::Regex::new(regex) {
                let written = regexes.originals.get(regex).unwrap_or(regex);
                return Err(format!(
                    "{}: `{written}` is not a regex the plugin can run: it compiles to more than {limit} bytes; write it with smaller repetition counts",
                    located(key, document.inline, at)
                ));
            }
        }
        let mut compiler = Compiler::new();
        compiler.set_default_draft(Draft::V2020_12);
        compiler.use_loader(Box::new(Refuse));
        let mut schemas = Schemas::new();
        if let Err(e) = compiler.add_resource(ROOT, value) {
            return Err(compile_error(key, document, &regexes, &e));
        }
        let index = compiler.compile(ROOT, &mut schemas).map_err(|e| compile_error(key, document, &regexes, &e))?;
        let schema = Self { schemas, index, originals: regexes.originals };
        schema.refuse_loops(key)?;
        Ok(schema)
    }

    /// Refuses a schema whose references loop without reading the value (`{"$ref": "#"}`, two
    /// `$defs` referring to each other): boon finds such a loop only when a value reaches it,
    /// and then fails that value. A few values of each type are run through it here, so the
    /// loops they reach are the operator's error at configure and not every client's 400.
    fn refuse_loops(&self, key: &str) -> Result<(), String> {
        let probes = [Value::Null, Value::Bool(true), Value::from(0), Value::from(0.5), Value::from(""), Value::Array(Vec::new()), Value::Object(Map::new())];
        for probe in &probes {
            let Err(error) = self.schemas.validate(probe, self.index) else { continue };
            let mut found = None;
            reported(&error, &mut |node| {
                if let (None, ErrorKind::RefCycle { url, kw_loc1, kw_loc2 }) = (&found, &node.kind) {
                    found = Some(format!(
                        "`{key}`: the schema's references loop without reading the value: `{kw_loc1}` and `{kw_loc2}` both lead to `{}` \
                         (a `$ref` back to the schema that holds it, directly or through others); every value reaching it would be refused",
                        shown_url(url)
                    ));
                }
            });
            if let Some(message) = found {
                return Err(message);
            }
        }
        Ok(())
    }

    /// Validates `instance`, adding what fails to `failures` as `failure(pointer, message)`
    /// makes it. Messages quote the client's values (`'...' does not match pattern`) and
    /// pointers its keys: both are cut at [`MAX_MESSAGE`] and [`MAX_POINTER`] bytes, so that a
    /// huge value does not come back ten times over.
    pub fn check(&self, instance: &Value, failures: &mut Failures, failure: &dyn Fn(String, String) -> Failure) {
        let Some(error) = self.failed(instance) else { return };
        reported(&error, &mut |node| {
            if let ErrorKind::RefCycle { .. } = node.kind {
                // The schema's fault, found by no probe at configure: its detail (the schema's
                // URIs and keys) is for the log, not the client.
                airlock_sdk::log::debug(format!("request-validator: the schema loops at `{}`: {}", node.instance_location, node.kind));
            }
            failures.push_with(|| failure(clip(node.instance_location.to_string(), MAX_POINTER), clip(self.message(node), MAX_MESSAGE)))
        });
    }

    /// Whether `instance` passes.
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.failed(instance).is_none()
    }

    /// Boon's errors for `instance`, without the `multipleOf` ones that exact decimal
    /// arithmetic disproves ([`exact::prune`]); `None`: it passes.
    fn failed<'s, 'v>(&'s self, instance: &'v Value) -> Option<ValidationError<'s, 'v>> {
        self.schemas.validate(instance, self.index).err().and_then(exact::prune)
    }

    /// The message of a reported error: [`kind_text`], with an `anyOf`/`oneOf`'s alternatives'
    /// first failures after it.
    fn message(&self, error: &ValidationError<'_, '_>) -> String {
        message(error, &|kind| self.kind_text(kind))
    }

    /// What boon says of an error, except that a pattern is quoted as the operator wrote it
    /// and a reference loop says nothing of the schema's insides.
    fn kind_text(&self, kind: &ErrorKind<'_, '_>) -> String {
        match kind {
            ErrorKind::Pattern { got, want } => match self.originals.get(*want) {
                Some(original) => ErrorKind::Pattern { got: got.clone(), want: original }.to_string(),
                None => kind.to_string(),
            },
            ErrorKind::RefCycle { .. } => "the schema cannot be evaluated for this value (its references loop: a gateway configuration error)".to_owned(),
            _ => kind.to_string(),
        }
    }
}

/// A boon URL as shown to an operator: the schema's own without the plugin's base.
fn shown_url(url: &str) -> String {
    url.replace(ROOT, "").replace(BASE, "")
}

/// The regexes of a schema, as [`rewrite_regexes`] found them.
#[derive(Debug, Default)]
struct Regexes {
    /// Each regex rewritten, to the text written.
    originals: HashMap<String, String>,
    /// Where each regex is (a `pattern`, or a `patternProperties` key's object), and the
    /// regex as boon gets it.
    found: Vec<(Vec<Token>, String)>,
}

/// The keywords whose value is a schema, a list of schemas, or an object of schemas, in every
/// draft: the places [`rewrite_regexes`] goes.
const ONE_SCHEMA: &[&str] =
    &["additionalItems", "additionalProperties", "contains", "contentSchema", "else", "if", "items", "not", "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties"];
const SCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "items", "oneOf", "prefixItems"];
const SCHEMA_MAPS: &[&str] = &["$defs", "definitions", "dependencies", "dependentSchemas", "patternProperties", "properties"];

/// Rewrites the regexes of the schema `node` (at `at`) and of its subschemas with
/// [`pattern::ecma`], so that boon runs them with ECMA-262's `\s`, `\d`, `\w` and `\b`; notes
/// each one in `regexes`. Only keywords that hold schemas are entered (an `enum`, `const` or
/// `default` value is data).
fn rewrite_regexes(node: &mut Value, at: &mut Vec<Token>, regexes: &mut Regexes) {
    let Value::Object(object) = node else { return };
    if let Some(Value::String(text)) = object.get_mut("pattern") {
        if let Some(rewritten) = pattern::ecma(text) {
            regexes.originals.insert(rewritten.clone(), std::mem::replace(text, rewritten));
        }
        let mut here = at.clone();
        here.push(Token::Key("pattern".to_owned()));
        regexes.found.push((here, text.clone()));
    }
    if let Some(Value::Object(properties)) = object.get_mut("patternProperties") {
        let written = std::mem::take(properties);
        let mut renamed = Map::new();
        for (name, schema) in &written {
            let name = match pattern::ecma(name) {
                // Two keys that would become one are left to boon's own translation.
                Some(rewritten) if !written.contains_key(&rewritten) && !renamed.contains_key(&rewritten) => {
                    regexes.originals.insert(rewritten.clone(), name.clone());
                    rewritten
                }
                _ => name.clone(),
            };
            let mut here = at.clone();
            here.push(Token::Key("patternProperties".to_owned()));
            regexes.found.push((here, name.clone()));
            renamed.insert(name, schema.clone());
        }
        *properties = renamed;
    }
    for (key, value) in object.iter_mut() {
        let key = key.as_str();
        at.push(Token::Key(key.to_owned()));
        match value {
            Value::Object(_) if ONE_SCHEMA.contains(&key) => rewrite_regexes(value, at, regexes),
            Value::Array(list) if SCHEMA_LISTS.contains(&key) => {
                for (i, item) in list.iter_mut().enumerate() {
                    at.push(Token::Index(i));
                    rewrite_regexes(item, at, regexes);
                    at.pop();
                }
            }
            Value::Object(map) if SCHEMA_MAPS.contains(&key) => {
                for (name, item) in map.iter_mut() {
                    at.push(Token::Key(name.clone()));
                    rewrite_regexes(item, at, regexes);
                    at.pop();
                }
            }
            _ => {}
        }
        at.pop();
    }
}

/// The longest message of a failure, in bytes.
pub const MAX_MESSAGE: usize = 300;

/// The longest pointer of a failure, in bytes.
pub const MAX_POINTER: usize = 1000;

/// `text` cut to at most `max` bytes (at a character boundary), ending in `…` when cut.
pub fn clip(mut text: String, max: usize) -> String {
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

/// The message of a reported error: `text` of its kind, with an `anyOf`/`oneOf`'s
/// alternatives' first failures after it.
fn message(error: &ValidationError<'_, '_>, text: &dyn Fn(&ErrorKind<'_, '_>) -> String) -> String {
    let own = text(&error.kind);
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
            let what = text(&leaf.kind);
            parts.push(if at == here { what } else { format!("`{at}`: {what}") });
        });
    }
    let more = if more > 0 { format!("; {more} more") } else { String::new() };
    format!("{own} ({}{more})", parts.join("; "))
}

/// A compile error as a config error naming the key.
fn compile_error(key: &str, document: &Document, regexes: &Regexes, error: &CompileError) -> String {
    let inline = document.inline;
    let original = |regex: &str| regexes.originals.get(regex).cloned().unwrap_or_else(|| regex.to_owned());
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
                    // A regex is quoted as the operator wrote it.
                    let text = |kind: &ErrorKind<'_, '_>| {
                        let text = kind.to_string();
                        let rewritten = match kind {
                            ErrorKind::Format { got, .. } => got.as_str(),
                            _ => None,
                        };
                        match rewritten.and_then(|r| regexes.originals.get(r).map(|written| (r, written))) {
                            Some((rewritten, written)) => text.replace(rewritten, written),
                            None => text,
                        }
                    };
                    let message = one_line(&message(node, &text));
                    first = Some((tokens, name.map_or(message.clone(), |name| format!("the key `{}`: {message}", original(name)))));
                }
            });
            let Some((tokens, message)) = first else { return format!("`{key}`: not a valid JSON Schema") };
            let more = if count > 1 { format!(" (and {} more)", count - 1) } else { String::new() };
            format!("{}: not a valid JSON Schema: {message}{more}", located(key, inline, &tokens))
        }
        CompileError::InvalidRegex { url, regex, src } => {
            let tokens = fragment_tokens(url);
            format!("{}: `{}` is not a regex the plugin can run: {}", located(key, inline, &tokens), original(regex), one_line(&src.to_string()))
        }
        CompileError::JsonPointerNotFound(url) | CompileError::AnchorNotFound { url, .. } => {
            let target = match error {
                CompileError::AnchorNotFound { reference, .. } => reference.clone(),
                _ => url.clone(),
            };
            let shown = shown_url(&target);
            let mut at = Vec::new();
            match dangling_ref(&document.value, &shown, &mut at) {
                true => format!("{}: `{shown}` refers to nothing in the schema", located(key, inline, &at)),
                false => format!("`{key}`: `{shown}` refers to nothing in the schema"),
            }
        }
        CompileError::Bug(src) => format!("`{key}`: {}", one_line(&src.to_string())),
        other => format!("`{key}`: {}", one_line(&shown_url(&format!("{other:#}")))),
    }
}

/// Finds (in `at`) the `$ref` in `node` whose value is `target` (`#/$defs/nope`, as written or
/// percent-encoded).
fn dangling_ref(node: &Value, target: &str, at: &mut Vec<Token>) -> bool {
    match node {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get("$ref")
                && (reference == target || percent_decode(reference) == percent_decode(target))
            {
                at.push(Token::Key("$ref".to_owned()));
                return true;
            }
            for (key, value) in object {
                at.push(Token::Key(key.clone()));
                if dangling_ref(value, target, at) {
                    return true;
                }
                at.pop();
            }
            false
        }
        Value::Array(list) => {
            for (i, value) in list.iter().enumerate() {
                at.push(Token::Index(i));
                if dangling_ref(value, target, at) {
                    return true;
                }
                at.pop();
            }
            false
        }
        _ => false,
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
    fn multiple_of_is_exact_in_decimal() {
        let schema = compile(json!({"properties": {"price": {"type": "number", "multipleOf": 0.01}, "q": {"multipleOf": 0.1}, "n": {"multipleOf": 2}, "big": {"multipleOf": 1e-308}}})).unwrap();
        for price in [19.99, 0.07, 4.35, 1.1, 100.01, 0.0, -19.99] {
            assert!(schema.is_valid(&json!({"price": price})), "{price}");
        }
        assert!(schema.is_valid(&json!({"q": 0.3})));
        assert_eq!(failures(&schema, json!({"price": 19.999})), [("/price".to_owned(), "19.999 is not multipleOf 0.01".to_owned())]);
        assert_eq!(failures(&schema, json!({"n": 7, "q": 0.35})).len(), 2);
        assert_eq!(failures(&schema, json!({"n": 7}))[0].0, "/n");
        // Beyond 128-bit arithmetic boon's verdict stands, without a panic.
        let _ = failures(&schema, json!({"big": 1e308}));
        let point_two = compile(json!({"multipleOf": 0.2})).unwrap();
        assert!(!point_two.is_valid(&json!(0.3)) && point_two.is_valid(&json!(0.6)));
        // An alternative that passes once checked exactly satisfies `anyOf`, `oneOf`, `contains`.
        let any = compile(json!({"anyOf": [{"multipleOf": 0.01}, {"type": "string"}]})).unwrap();
        assert!(any.is_valid(&json!(19.99)) && !any.is_valid(&json!(19.999)));
        let one = compile(json!({"oneOf": [{"multipleOf": 0.01}, {"type": "string"}]})).unwrap();
        assert!(one.is_valid(&json!(19.99)));
        let contains = compile(json!({"contains": {"multipleOf": 0.01}})).unwrap();
        assert!(contains.is_valid(&json!([19.99])) && !contains.is_valid(&json!([0.001])));
    }

    #[test]
    fn reference_loops_are_refused_at_configure() {
        for schema in [
            json!({"$ref": "#"}),
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            json!({"type": "object", "allOf": [{"$ref": "#"}]}),
        ] {
            let err = compile(schema.clone()).unwrap_err();
            assert!(err.starts_with("`body_schema`: the schema's references loop without reading the value"), "{schema}: {err}");
            assert!(!err.contains("request-validator.invalid"), "{err}");
        }
        // Recursion that reads the value is fine.
        let tree = compile(json!({"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}})).unwrap();
        assert!(tree.is_valid(&json!({"children": [{"children": []}]})));
        // A loop no probe reaches: the client is told nothing of the schema's insides.
        let hidden = compile(json!({"properties": {"a": {"$ref": "#/properties/a"}}})).unwrap();
        let found = failures(&hidden, json!({"a": 1}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "/a");
        assert!(found[0].1.contains("configuration error") && !found[0].1.contains("request-validator.invalid") && !found[0].1.contains("$ref"), "{found:?}");
    }

    #[test]
    fn patterns_follow_ecma_262() {
        let schema = compile(json!({"properties": {
            "s": {"pattern": "^a\\sb$"}, "S": {"pattern": "^\\S+$"}, "not_s": {"pattern": "^[^\\s]+$"}, "b": {"pattern": "\\bx\\b"}, "d": {"pattern": "^\\d+$"}
        }, "patternProperties": {"^\\s+$": {"type": "integer"}}}))
        .unwrap();
        for space in ['\u{20}', '\u{a0}', '\u{1680}', '\u{2000}', '\u{2009}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}', '\u{feff}', '\t', '\u{b}'] {
            assert!(schema.is_valid(&json!({ "s": format!("a{space}b") })), "{:x}", space as u32);
            assert!(!schema.is_valid(&json!({ "S": format!("a{space}b") })), "{:x}", space as u32);
            assert!(!schema.is_valid(&json!({ "not_s": format!("a{space}b") })), "{:x}", space as u32);
        }
        for not_space in ['\u{85}', '\u{200b}', 'x'] {
            assert!(!schema.is_valid(&json!({ "s": format!("a{not_space}b") })), "{:x}", not_space as u32);
            assert!(schema.is_valid(&json!({ "S": format!("a{not_space}b") })), "{:x}", not_space as u32);
        }
        assert!(schema.is_valid(&json!({"b": "éxé"})) && !schema.is_valid(&json!({"b": "axa"})), "an ASCII word boundary");
        assert!(!schema.is_valid(&json!({"d": "٣"})));
        assert!(!schema.is_valid(&json!({"\u{3000}": "x"})), "patternProperties keys too");
        // Messages quote the pattern as written.
        assert_eq!(failures(&schema, json!({"d": "x"})), [("/d".to_owned(), r"'x' does not match pattern '^\\d+$'".to_owned())], "boon's quoting");
        // Data is not rewritten.
        let data = compile(json!({"const": {"pattern": "\\s"}})).unwrap();
        assert!(data.is_valid(&json!({"pattern": "\\s"})));
    }

    #[test]
    fn dangling_references_and_huge_regexes_name_the_key() {
        let err = compile(json!({"properties": {"a": {"$ref": "#/$defs/nope"}}})).unwrap_err();
        assert_eq!(err, "`body_schema`: at `/properties/a/$ref`: `#/$defs/nope` refers to nothing in the schema");
        let err = compile(json!({"items": {"$ref": "#nowhere"}})).unwrap_err();
        assert_eq!(err, "`body_schema`: at `/items/$ref`: `#nowhere` refers to nothing in the schema");
        let err = compile(json!({"properties": {"a": {"pattern": "^(a{1000}){1000}$"}}})).unwrap_err();
        assert!(err.starts_with("`body_schema.properties.a.pattern`: `^(a{1000}){1000}$` is not a regex the plugin can run: "), "{err}");
        let err = compile(json!({"properties": {"a": {"pattern": "\\d(?=x)"}}})).unwrap_err();
        assert!(err.starts_with(r"`body_schema.properties.a.pattern`: not a valid JSON Schema: '\d(?=x)' is not valid regex"), "{err}");
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
