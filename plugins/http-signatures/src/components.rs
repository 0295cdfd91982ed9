//! Covered components and the signature base (RFC 9421 sections 2 and 2.5).
//!
//! A component identifier is a structured-field string (the component name) with parameters.
//! Its value is derived from the message: HTTP fields (2.1: every instance, trimmed, joined with
//! ", "; `;sf` re-serialized strictly, `;key` one dictionary member, `;bs` each instance as a
//! byte sequence) and the derived components of a request (2.2). The base is one line per
//! covered component, `"<identifier>": <value>`, then the `"@signature-params"` line.

use std::collections::BTreeMap;

use base64::Engine as _;
use sfv::{BareItem, Dictionary, FieldType as _, Item, List, ListEntry, Parser};

/// A message whose components can be covered: the request the plugin is handed, or (in tests)
/// a message written out by hand.
pub(crate) trait Message {
    /// The method, as received.
    fn method(&self) -> String;
    /// `http` or `https`.
    fn scheme(&self) -> String;
    /// The `Host` (HTTP/2's `:authority`) as received.
    fn host(&self) -> Option<Vec<u8>>;
    /// The path, percent-encoding kept, without the query.
    fn path(&self) -> String;
    /// The query without its `?`, if the target has one.
    fn query(&self) -> Option<String>;
    /// Every value of a field, in order (empty if absent).
    fn field(&self, name: &str) -> Vec<Vec<u8>>;
    /// A response's status: `None` for a request.
    fn status(&self) -> Option<u16> {
        None
    }
    /// Whether the message has a body (of any length).
    fn has_body(&self) -> bool {
        false
    }
    /// The body, when it was read.
    fn body(&self) -> Option<Vec<u8>> {
        None
    }
}

/// The top-level type of a structured field, which `;sf` needs to know to re-serialize it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SfType {
    /// An Item (RFC 9651 3.3).
    Item,
    /// A List (3.1).
    List,
    /// A Dictionary (3.2).
    Dictionary,
}

impl SfType {
    /// The type named in the config (`item`, `list`, `dictionary`).
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "item" => Some(Self::Item),
            "list" => Some(Self::List),
            "dictionary" => Some(Self::Dictionary),
            _ => None,
        }
    }
}

/// Fields whose structured type is known without config: those the IETF defined as
/// structured fields that a signed request may carry.
const KNOWN_STRUCTURED: [(&str, SfType); 13] = [
    ("accept-signature", SfType::Dictionary),
    ("cache-status", SfType::List),
    ("cdn-cache-control", SfType::Dictionary),
    ("client-cert", SfType::Item),
    ("client-cert-chain", SfType::List),
    ("content-digest", SfType::Dictionary),
    ("priority", SfType::Dictionary),
    ("proxy-status", SfType::List),
    ("repr-digest", SfType::Dictionary),
    ("signature", SfType::Dictionary),
    ("signature-input", SfType::Dictionary),
    ("want-content-digest", SfType::Dictionary),
    ("want-repr-digest", SfType::Dictionary),
];

/// Structured-field types by field name: the known ones and the config's `structured_fields`.
#[derive(Debug, Clone)]
pub(crate) struct FieldTypes(BTreeMap<String, SfType>);

impl Default for FieldTypes {
    /// The known types only.
    fn default() -> Self {
        Self::new(BTreeMap::new())
    }
}

impl FieldTypes {
    /// The known types, with `extra` (lower-case names) added or overriding.
    pub(crate) fn new(extra: BTreeMap<String, SfType>) -> Self {
        let mut types: BTreeMap<String, SfType> = KNOWN_STRUCTURED.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect();
        types.extend(extra);
        Self(types)
    }

    fn get(&self, name: &str) -> Option<SfType> {
        self.0.get(name).copied()
    }
}

/// What a component identifier names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `@method` (2.2.1).
    Method,
    /// `@target-uri` (2.2.2).
    TargetUri,
    /// `@authority` (2.2.3).
    Authority,
    /// `@scheme` (2.2.4).
    Scheme,
    /// `@request-target` (2.2.5).
    RequestTarget,
    /// `@path` (2.2.6).
    Path,
    /// `@query` (2.2.7).
    Query,
    /// `@query-param;name="..."` (2.2.8), with the encoded name.
    QueryParam(String),
    /// `@status` (2.2.9): a response's, so never found on a request.
    Status,
    /// An HTTP field (2.1), with its `sf`, `key` and `bs` parameters.
    Field {
        /// The lower-case field name.
        name: String,
        /// `;sf`: strictly re-serialized as its structured type.
        sf: bool,
        /// `;key="..."`: one member of a Dictionary field.
        key: Option<String>,
        /// `;bs`: each instance wrapped as a byte sequence.
        bs: bool,
    },
}

/// A covered component: what it names and its identifier as the base writes it.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    /// What it names.
    pub(crate) kind: Kind,
    /// The serialized identifier, e.g. `"@query-param";name="Pet"`.
    pub(crate) id: String,
}

impl PartialEq for Component {
    /// One component, however its parameters were ordered.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Component {
    /// The component an item of a `Signature-Input` inner list identifies.
    pub(crate) fn from_item(item: &Item) -> Result<Self, String> {
        let BareItem::String(name) = &item.bare_item else {
            return Err("a component identifier is not a string".into());
        };
        let name = name.as_str();
        let param = |key: &str| item.params.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v);
        let flag = |key: &str| -> Result<bool, String> {
            match param(key) {
                None => Ok(false),
                Some(BareItem::Boolean(true)) => Ok(true),
                Some(_) => Err(format!("`{name}`: the `{key}` parameter takes no value")),
            }
        };
        let known = |allowed: &[&str]| -> Result<(), String> {
            match item.params.keys().find(|k| !allowed.contains(&k.as_str())) {
                None => Ok(()),
                Some(k) if k.as_str() == "req" => Err(format!(
                    "`{name}`: the `req` parameter names a component of the request a response answers; a request has none"
                )),
                Some(k) if k.as_str() == "tr" => Err(format!("`{name}`: trailers (`tr`) cannot be covered: the gateway verifies before the body, and its trailers, have arrived")),
                Some(k) => Err(format!("`{name}`: unknown parameter `{}`", k.as_str())),
            }
        };
        let kind = if let Some(derived) = name.strip_prefix('@') {
            let kind = match derived {
                "method" => Kind::Method,
                "target-uri" => Kind::TargetUri,
                "authority" => Kind::Authority,
                "scheme" => Kind::Scheme,
                "request-target" => Kind::RequestTarget,
                "path" => Kind::Path,
                "query" => Kind::Query,
                "status" => Kind::Status,
                "query-param" => {
                    known(&["name"])?;
                    return match param("name") {
                        Some(BareItem::String(encoded)) => {
                            Ok(Self { kind: Kind::QueryParam(encoded.as_str().to_owned()), id: item.serialize() })
                        }
                        _ => Err("`@query-param` needs a `name` parameter (a string): `\"@query-param\";name=\"id\"`".into()),
                    };
                }
                "signature-params" => {
                    return Err("`@signature-params` cannot be covered: it is the base's own last line".into());
                }
                _ => return Err(format!("`{name}` is not a derived component this plugin knows (RFC 9421 2.2)")),
            };
            known(&[])?;
            kind
        } else {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)) {
                return Err(format!("`{name}` is not a lower-case field name"));
            }
            known(&["sf", "key", "bs"])?;
            let key = match param("key") {
                None => None,
                Some(BareItem::String(key)) => Some(key.as_str().to_owned()),
                Some(_) => return Err(format!("`{name}`: the `key` parameter is a string")),
            };
            let (sf, bs) = (flag("sf")?, flag("bs")?);
            if bs && (sf || key.is_some()) {
                return Err(format!("`{name}`: `bs` cannot be combined with `sf` or `key` (RFC 9421 2.1.3)"));
            }
            Kind::Field { name: name.to_owned(), sf, key, bs }
        };
        Ok(Self { kind, id: item.serialize() })
    }

    /// A component as the config writes it: `@method`, `content-digest`,
    /// `@query-param;name="id"`, or the identifier itself (`"example-dict";key="a"`).
    pub(crate) fn parse_config(text: &str) -> Result<Self, String> {
        let quoted = if text.starts_with('"') {
            text.to_owned()
        } else {
            let (name, params) = text.split_once(';').map_or((text, ""), |(n, p)| (n, p));
            if name.contains(['"', '\\']) {
                return Err(format!("`{text}` is not a component identifier"));
            }
            if params.is_empty() { format!("\"{name}\"") } else { format!("\"{name}\";{params}") }
        };
        let item: Item = Parser::new(&quoted).parse().map_err(|e| format!("`{text}` is not a component identifier ({e})"))?;
        let component = Self::from_item(&item)?;
        if component.kind == Kind::Status {
            return Err("`@status` is a response's: a request cannot cover it".into());
        }
        Ok(component)
    }

    /// Whether this is the field `name`, with any parameters.
    pub(crate) fn is_field(&self, field: &str) -> bool {
        matches!(&self.kind, Kind::Field { name, .. } if name == field)
    }

    /// The field this component parses as a Structured Field (`;sf`, `;key`), if it does.
    fn parsed_field(&self) -> Option<&str> {
        match &self.kind {
            Kind::Field { name, sf, key, .. } if *sf || key.is_some() => Some(name),
            _ => None,
        }
    }

    /// The component's value in `message` (RFC 9421 2.1, 2.2), or why there is none.
    pub(crate) fn value(&self, message: &impl Message, types: &FieldTypes) -> Result<Vec<u8>, String> {
        Ok(match &self.kind {
            Kind::Method => message.method().into_bytes(),
            Kind::TargetUri => {
                let mut uri = format!("{}://{}", message.scheme().to_ascii_lowercase(), authority(message)?);
                push_target(&mut uri, message);
                uri.into_bytes()
            }
            Kind::Authority => authority(message)?.into_bytes(),
            Kind::Scheme => message.scheme().to_ascii_lowercase().into_bytes(),
            Kind::RequestTarget => {
                let mut target = String::new();
                push_target(&mut target, message);
                target.into_bytes()
            }
            Kind::Path => path(message).into_bytes(),
            Kind::Query => format!("?{}", message.query().unwrap_or_default()).into_bytes(),
            Kind::QueryParam(name) => query_param(message.query().as_deref().unwrap_or(""), name)?.into_bytes(),
            Kind::Status => message.status().ok_or("`@status` is a response's: a request has none")?.to_string().into_bytes(),
            Kind::Field { name, sf, key, bs } => {
                let values = message.field(name);
                if values.is_empty() {
                    return Err(format!("covers the field `{name}`, which the message does not have"));
                }
                if *bs {
                    let wrapped: Vec<String> = values
                        .iter()
                        .map(|v| format!(":{}:", base64::engine::general_purpose::STANDARD.encode(trim(v))))
                        .collect();
                    return Ok(wrapped.join(", ").into_bytes());
                }
                let combined = combine(&values);
                if let Some(key) = key {
                    let text = std::str::from_utf8(&combined).map_err(|_| format!("`{name}` is not a structured field"))?;
                    let dict: Dictionary = Parser::new(text).parse().map_err(|e| format!("`{name}` is not a dictionary ({e})"))?;
                    let member = dict.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v);
                    return match member {
                        Some(ListEntry::Item(item)) => Ok(item.serialize().into_bytes()),
                        Some(entry) => Ok(serialize_list(std::slice::from_ref(entry)).into_bytes()),
                        None => Err(format!("`{name}` has no member `{key}`")),
                    };
                }
                if *sf {
                    let text = std::str::from_utf8(&combined).map_err(|_| format!("`{name}` is not a structured field"))?;
                    let not = |e: sfv::Error| format!("`{name}` is not a valid structured field ({e})");
                    return Ok(match types.get(name) {
                        Some(SfType::Item) => Parser::new(text).parse::<Item>().map_err(not)?.serialize(),
                        Some(SfType::List) => serialize_list(&Parser::new(text).parse::<List>().map_err(not)?),
                        Some(SfType::Dictionary) => {
                            Parser::new(text).parse::<Dictionary>().map_err(not)?.serialize().unwrap_or_default()
                        }
                        None => {
                            return Err(format!(
                                "`{name};sf`: the structured type of `{name}` is not known (name it in `structured_fields`)"
                            ));
                        }
                    }
                    .into_bytes());
                }
                combined
            }
        })
    }
}

/// A list's serialization ("" when empty).
fn serialize_list(entries: &[ListEntry]) -> String {
    entries.to_vec().serialize().unwrap_or_default()
}

/// Field values as 2.1 combines them: each trimmed (and obsolete line folding replaced by a
/// space), joined with ", ".
fn combine(values: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        let mut folding = false;
        for &b in trim(value) {
            match b {
                b'\r' | b'\n' => folding = true,
                b' ' | b'\t' if folding => {}
                _ => {
                    if folding {
                        out.push(b' ');
                        folding = false;
                    }
                    out.push(b);
                }
            }
        }
    }
    out
}

/// A field value without leading and trailing whitespace (SP, HTAB).
fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &value[start..end]
}

/// The authority (2.2.3): the `Host`, normalized as RFC 9110 4.2.3 says: lower-case, without
/// the scheme's default port.
fn authority(message: &impl Message) -> Result<String, String> {
    let host = message.host().ok_or("no `Host` (or `:authority`) to derive the authority from")?;
    let host = String::from_utf8(host).map_err(|_| "the `Host` is not text")?;
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() {
        return Err("the `Host` is empty".into());
    }
    let default_port = match message.scheme().to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => "",
    };
    Ok(match host.strip_suffix(default_port) {
        Some(bare) if !default_port.is_empty() && !bare.is_empty() => bare.to_owned(),
        _ => host,
    })
}

/// The path (2.2.6): as received, an empty one as `/`.
fn path(message: &impl Message) -> String {
    let path = message.path();
    if path.is_empty() { "/".to_owned() } else { path }
}

/// Appends the origin-form target (path and query).
fn push_target(out: &mut String, message: &impl Message) {
    out.push_str(&path(message));
    if let Some(query) = message.query() {
        out.push('?');
        out.push_str(&query);
    }
}

/// The value of the one query parameter whose encoded name is `name` (2.2.8): parsed as HTML
/// form parameters (`+` a space, `%XX` decoded), re-encoded with the
/// `application/x-www-form-urlencoded` percent-encode set (a space as `%20`, as the RFC's own
/// example shows). A name that is absent or repeated fails.
fn query_param(query: &str, name: &str) -> Result<String, String> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_encode(&form_decode(n)) != name {
            continue;
        }
        if found.is_some() {
            return Err(format!("the query parameter `{name}` is repeated: cover `@query` instead"));
        }
        found = Some(form_encode(&form_decode(v)));
    }
    found.ok_or_else(|| format!("covers the query parameter `{name}`, which the request does not have"))
}

/// `application/x-www-form-urlencoded` parsing of a name or value: `+` is a space, `%XX` a byte
/// (a `%` not followed by two hex digits is itself), then UTF-8 decoded (bytes that are not
/// UTF-8 become U+FFFD), as the WHATWG URL standard's parser does.
fn form_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned().into_bytes()
}

/// Percent-encodes all but ASCII alphanumerics and `*-._` (the
/// `application/x-www-form-urlencoded` percent-encode set), upper-case hex.
fn form_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"*-._".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The most bytes of field values one signature base may parse as Structured Fields (`;sf`,
/// `;key`), counted once per component: each parses its field whole, so 64 components over one
/// large dictionary parsed it 64 times, past the plugin's CPU deadline (a 500 for one 30 KB
/// unauthenticated request). Real structured fields are a few hundred bytes.
pub(crate) const MAX_PARSED_BYTES: usize = 64 * 1024;

/// The signature base (2.5) of `components` in `message`, ending with the `@signature-params`
/// line, whose value is `params` (the serialized inner list with its parameters).
pub(crate) fn signature_base(components: &[Component], params: &str, message: &impl Message, types: &FieldTypes) -> Result<Vec<u8>, String> {
    let mut base = Vec::new();
    let mut parsed = 0usize;
    for (i, component) in components.iter().enumerate() {
        if components[..i].contains(component) {
            return Err(format!("the component {} is covered twice", component.id));
        }
        if let Some(name) = component.parsed_field() {
            parsed = parsed.saturating_add(message.field(name).iter().map(Vec::len).sum());
            if parsed > MAX_PARSED_BYTES {
                return Err(format!("the structured fields it covers (`;sf`, `;key`) are over {MAX_PARSED_BYTES} bytes to parse"));
            }
        }
        let value = component.value(message, types)?;
        base.extend_from_slice(component.id.as_bytes());
        base.extend_from_slice(b": ");
        base.extend_from_slice(&value);
        base.push(b'\n');
    }
    base.extend_from_slice(b"\"@signature-params\": ");
    base.extend_from_slice(params.as_bytes());
    Ok(base)
}
