//! Which gRPC method answers which HTTP request: the `google.api.http` annotations in the
//! descriptor set, and the explicit `[[mappings]]` of the config, checked once at configure.

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};
use serde::Deserialize;

use crate::json::Twins;
use crate::template::Template;

/// `[[mappings]]`: one HTTP binding of a method, written in the config instead of (or beside) the
/// annotations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// `package.Service/Method` (or `package.Service.Method`).
    pub method: String,
    /// `VERB /path/template`, e.g. `GET /v1/users/{id}`.
    pub http: String,
    /// Where the JSON request body goes: `*` (the whole message), a field name, or absent (no body).
    pub body: Option<String>,
    /// A field of the response message to answer instead of the whole message.
    pub response_body: Option<String>,
}

/// One HTTP binding of a unary method.
#[derive(Debug, Clone)]
pub struct Binding {
    /// HTTP method, upper-case.
    pub verb: String,
    /// The path template.
    pub template: Template,
    /// The request body's place: `None` (no body), `Some("*")`, or a field.
    pub body: Option<String>,
    /// The response field answered, if not the whole message.
    pub response_body: Option<String>,
    /// The method called.
    pub method: MethodDescriptor,
    /// The fields of the request message (and those it holds) that have two names, for the body
    /// reader to notice one field given twice.
    pub twins: Twins,
}

impl Binding {
    /// A binding of `method`; nothing is checked yet (`check` does, at configure).
    pub fn new(verb: String, template: Template, body: Option<String>, response_body: Option<String>, method: MethodDescriptor) -> Self {
        let twins = Twins::of(&method.input());
        Self { verb, template, body, response_body, method, twins }
    }

    /// The upstream path of the method, `/package.Service/Method`.
    pub fn grpc_path(&self) -> String {
        grpc_path(&self.method)
    }
}

/// `/package.Service/Method`.
pub fn grpc_path(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

/// Every binding: from the annotations (unless `annotations` is false) of `services` (every
/// service when empty), then from `mappings`; sorted most specific first
/// ([`Template::precedence`]), so that the first one matching a request is the one to call.
pub fn bindings(pool: &DescriptorPool, services: &[String], annotations: bool, mappings: &[MappingConfig]) -> Result<Vec<Binding>, String> {
    for name in services {
        if pool.get_service_by_name(name).is_none() {
            return Err(format!("`services`: no service `{name}` in the descriptor set (it has: {})", service_names(pool)));
        }
    }
    let mut out = Vec::new();
    if annotations
        && let Some(http) = pool.get_extension_by_name("google.api.http") {
            for service in pool.services().filter(|s| services.is_empty() || services.iter().any(|n| n == s.full_name())) {
                for method in service.methods() {
                    let options = method.options();
                    if !options.has_extension(&http) {
                        continue;
                    }
                    if let Value::Message(rule) = options.get_extension(&http).as_ref() {
                        from_rule(rule, &method, &mut out, 0)?;
                    }
                }
            }
        }
    for (i, mapping) in mappings.iter().enumerate() {
        out.push(from_config(pool, mapping).map_err(|(key, why)| format!("`mappings[{i}].{key}`: {why}"))?);
    }
    // Two bindings of one verb matching the same paths: the first listed would always win, the
    // second never be reached (grpc-gateway and Envoy's transcoder refuse it too).
    for (i, later) in out.iter().enumerate() {
        if let Some(earlier) = out[..i].iter().find(|b| b.verb == later.verb && b.template.same_paths(&later.template)) {
            return Err(format!(
                "`{}` and `{}` are bound to the same {} path: a request could reach only the first; give one another path",
                earlier.method.full_name(),
                later.method.full_name(),
                later.verb
            ));
        }
    }
    // The most specific binding first, whatever the order they were listed in: the first one
    // matching a request is then the one Envoy's transcoder and grpc-gateway pick (a literal
    // segment before a variable, before `**`). Decided here, once: a request still tries the
    // bindings in order and takes the first match. Equally specific bindings of one HTTP method
    // match different paths (the same paths are refused above), so their order does not matter.
    out.sort_by_cached_key(|b| b.template.precedence());
    if out.is_empty() {
        return Err(format!(
            "no method is mapped: the descriptor set has no `google.api.http` annotation{} and `mappings` is empty",
            if services.is_empty() { String::new() } else { format!(" on {}", services.join(", ")) }
        ));
    }
    Ok(out)
}

fn service_names(pool: &DescriptorPool) -> String {
    pool.services().map(|s| s.full_name().to_owned()).collect::<Vec<_>>().join(", ")
}

fn string_field(message: &DynamicMessage, name: &str) -> Option<String> {
    match message.get_field_by_name(name)?.as_ref() {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Adds the bindings of one `HttpRule` (and its `additional_bindings`).
fn from_rule(rule: &DynamicMessage, method: &MethodDescriptor, out: &mut Vec<Binding>, depth: u32) -> Result<(), String> {
    let at = || format!("`{}` (google.api.http)", method.full_name());
    let mut pattern = None;
    for verb in ["get", "put", "post", "delete", "patch"] {
        if let Some(path) = string_field(rule, verb) {
            pattern = Some((verb.to_ascii_uppercase(), path));
        }
    }
    if let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref()
        && let (Some(kind), Some(path)) = (string_field(custom, "kind"), string_field(custom, "path")) {
            pattern = Some((kind.to_ascii_uppercase(), path));
        }
    if let Some((verb, path)) = pattern {
        let template = Template::parse(&path).map_err(|e| format!("{}: {e}", at()))?;
        let binding = Binding::new(verb, template, string_field(rule, "body"), string_field(rule, "response_body"), method.clone());
        out.push(check(binding).map_err(|(key, why)| match key {
            "body" | "response_body" => format!("{}: `{key}`: {why}", at()),
            _ => format!("{}: {why}", at()),
        })?);
    }
    if depth == 0
        && let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
            for extra in more {
                if let Value::Message(extra) = extra {
                    from_rule(extra, method, out, depth + 1)?;
                }
            }
        }
    Ok(())
}

/// What is wrong with one binding: the key of its `[[mappings]]` entry (`method`, `http`,
/// `body`, `response_body`) and why.
type Refusal = (&'static str, String);

/// The binding of one `[[mappings]]` entry; the error names the entry's key at fault.
fn from_config(pool: &DescriptorPool, mapping: &MappingConfig) -> Result<Binding, Refusal> {
    let (service, name) = mapping
        .method
        .rsplit_once('/')
        .or_else(|| mapping.method.rsplit_once('.'))
        .ok_or_else(|| ("method", format!("`{}` is not `package.Service/Method`", mapping.method)))?;
    let service = pool
        .get_service_by_name(service)
        .ok_or_else(|| ("method", format!("no service `{service}` in the descriptor set (it has: {})", service_names(pool))))?;
    let method = service
        .methods()
        .find(|m| m.name() == name)
        .ok_or_else(|| ("method", format!("service `{}` has no method `{name}`", service.full_name())))?;
    let (verb, path) = mapping.http.split_once(' ').ok_or_else(|| ("http", format!("`{}` is not `VERB /path`", mapping.http)))?;
    let verb = verb.trim().to_ascii_uppercase();
    if verb.is_empty() || !verb.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(("http", format!("`{verb}` is not an HTTP method")));
    }
    let template = Template::parse(path.trim()).map_err(|e| ("http", e))?;
    check(Binding::new(verb, template, mapping.body.clone(), mapping.response_body.clone(), method))
}

/// Refuses streaming methods and fields the messages do not have.
fn check(binding: Binding) -> Result<Binding, Refusal> {
    let method = &binding.method;
    if method.is_server_streaming() || method.is_client_streaming() {
        return Err(("method", format!(
            "method `{}` is {}-streaming: grpc-transcode calls unary methods only (remove its mapping, or call it with a gRPC client)",
            method.full_name(),
            if method.is_server_streaming() { "server" } else { "client" }
        )));
    }
    let input = method.input();
    let mut seen = std::collections::HashSet::new();
    // Each oneof a path variable sets a member of, by the message path it is in: a second member
    // of the same oneof would make every request a 400 ("sets two members of oneof").
    let mut oneofs: Vec<(&str, String, &str)> = Vec::new();
    for field in binding.template.fields() {
        let descriptor = crate::message::field_path(&input, field).map_err(|e| ("http", format!("path variable `{field}`: {e}")))?;
        if !seen.insert(field) {
            return Err(("http", format!("path variable `{field}` is used twice: one field takes one value from the path")));
        }
        if let Some(oneof) = descriptor.containing_oneof().filter(|o| !o.is_synthetic()) {
            let parent = field.rsplit_once('.').map_or("", |(parent, _)| parent);
            if let Some((_, _, other)) = oneofs.iter().find(|(p, o, _)| *p == parent && *o == oneof.full_name()) {
                return Err(("http", format!(
                    "path variables `{other}` and `{field}` set two members of oneof `{}`, which holds one: every request would be refused",
                    oneof.full_name()
                )));
            }
            oneofs.push((parent, oneof.full_name().to_owned(), field));
        }
        // A path sets scalars, enums and the well-known types' text forms, never a message.
        if let prost_reflect::Kind::Message(m) = descriptor.kind()
            && !m.full_name().starts_with("google.protobuf.")
        {
            return Err(("http", format!(
                "path variable `{field}` names a field of message type `{}`: a path can set only scalar, enum or well-known-type fields",
                m.full_name()
            )));
        }
    }
    if let Some(body) = binding.body.as_deref().filter(|b| *b != "*") {
        let Some(descriptor) = input.get_field_by_name(body) else {
            return Err(("body", format!("message `{}` has no field `{body}`", input.full_name())));
        };
        if let Some(oneof) = descriptor.containing_oneof().filter(|o| !o.is_synthetic())
            && let Some((_, _, other)) = oneofs.iter().find(|(p, o, _)| p.is_empty() && *o == oneof.full_name())
        {
            return Err(("body", format!(
                "`{body}` and path variable `{other}` are two members of oneof `{}`, which holds one: every request would be refused",
                oneof.full_name()
            )));
        }
    }
    if let Some(field) = &binding.response_body
        && method.output().get_field_by_name(field).is_none() {
            return Err(("response_body", format!("message `{}` has no field `{field}`", method.output().full_name())));
        }
    Ok(binding)
}
