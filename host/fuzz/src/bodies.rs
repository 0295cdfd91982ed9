//! The fuzz targets' bodies: plain functions of the input bytes that panic on a broken invariant.
//!
//! Shared by the libFuzzer targets in `fuzz_targets/` (nightly, `cargo +nightly fuzz run NAME`)
//! and by the stable test `tests/tests/fuzz_corpus.rs`, which runs every body over the checked-in
//! seed corpus (`corpus/NAME/`) and every crash the fuzzer found (`regressions/NAME/`).
//!
//! Inputs are text, one thing per line, so seeds are readable and a crash file says what broke.

use std::path::PathBuf;

use airlock::config::ConfigSource;
use airlock::config::EncodedSlashes;
use airlock::proxy::path::{normalize, normalize_with};
use airlock::router::{HeaderMatch, PathMatch, RouteSpec, RouteTable, served_methods};
use airlock_sdk::template::{Source, Template};
use http::Method;
use serde_json::Value;

/// `config`: the whole input is an `airlock.toml`. Parsing never panics; every error renders
/// (file, line, column, snippet); a parsed config's routes build a route table or a located error.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = ConfigSource::inline("fuzz.toml", text, PathBuf::from("."));
    let config = match source.parse() {
        Ok(config) => config,
        Err(e) => {
            let rendered = e.to_string();
            assert!(!rendered.is_empty(), "an error with no text");
            for issue in e.issues() {
                assert!(issue.line.is_none_or(|l| (1..=text.split('\n').count()).contains(&l)), "line out of the file: {issue:?}");
            }
            return;
        }
    };
    let _ = airlock::admin::config_issues(&source, &config);
    let mut specs = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        let path = match (&route.path, &route.path_prefix) {
            (Some(p), None) => PathMatch::Exact(p.get_ref().clone()),
            (None, Some(p)) => PathMatch::Prefix(p.get_ref().clone()),
            _ => continue,
        };
        let methods = route.methods.iter().filter_map(|m| Method::from_bytes(m.get_ref().as_bytes()).ok()).collect();
        let hosts = route.hosts.iter().map(|h| h.get_ref().clone()).collect();
        // Header conditions as the gateway reads them (the valid ones): requests probed below
        // carry no headers, so a route with conditions must never be their match.
        let headers = route
            .headers
            .iter()
            .filter_map(|(name, values)| {
                let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
                let values = values.get_ref().0.iter().filter_map(|v| http::HeaderValue::from_str(v).ok()).collect();
                Some(HeaderMatch { name, values })
            })
            .collect();
        specs.push(RouteSpec { id: format!("route-{i}"), hosts, methods, path, headers });
    }
    let probes: Vec<(String, String)> = specs
        .iter()
        .map(|s| {
            let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = &s.path;
            (s.hosts.first().cloned().unwrap_or_default(), p.clone())
        })
        .collect();
    check_routes(&specs, probes.iter().map(|(h, p)| (Some(h.as_str()), Method::GET, p.as_str())));
}

/// `router`: lines `R HOSTS METHODS path|prefix PATTERN` (lists comma-separated, `-` for none)
/// build a route table; lines `Q HOST|- METHOD PATH` are requests. Building never panics, and a
/// request is only ever matched to a route whose host, method and path it really matches.
pub fn router(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut specs = Vec::new();
    let mut requests = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.splitn(5, ' ').collect();
        match fields.as_slice() {
            ["R", hosts, methods, kind, pattern] => {
                let list = |s: &str| if s == "-" { Vec::new() } else { s.split(',').map(str::to_owned).collect() };
                let Ok(methods) = list(methods).iter().map(|m| Method::from_bytes(m.as_bytes())).collect() else { continue };
                let path = if *kind == "prefix" { PathMatch::Prefix(pattern.to_string()) } else { PathMatch::Exact(pattern.to_string()) };
                specs.push(RouteSpec { id: format!("r{}", specs.len()), hosts: list(hosts), methods, path, headers: Vec::new() });
            }
            ["Q", host, method, path] | ["Q", host, method, path, _] => {
                let Ok(method) = Method::from_bytes(method.as_bytes()) else { continue };
                let host = (*host != "-").then_some(*host);
                requests.push((host, method, *path));
            }
            _ => {}
        }
    }
    for (_, _, path) in &requests {
        check_normalized(path);
    }
    check_routes(&specs, requests.into_iter());
}

/// The path the gateway routes on: normal once normalized (no `//`, no dot segment, a second
/// pass changes nothing), or refused; with `encoded_slashes = "decode"` also free of `%2F` and
/// `%5C`, and with `"reject"` refused whenever it holds one.
fn check_normalized(path: &str) {
    let encoded = |p: &str| ["%2f", "%5c"].iter().any(|e| p.to_ascii_lowercase().contains(e));
    if let Ok(decoded) = normalize_with(path, EncodedSlashes::Decode) {
        let decoded = decoded.unwrap_or_else(|| path.to_owned());
        assert!(!path.starts_with('/') || !encoded(&decoded), "{path} -> {decoded}");
        assert_eq!(normalize_with(&decoded, EncodedSlashes::Decode), Ok(None), "{path} -> {decoded} is not stable");
    }
    if path.starts_with('/') && encoded(path) {
        assert!(normalize_with(path, EncodedSlashes::Reject).is_err(), "{path} was not refused");
    }
    let Ok(normalized) = normalize(path) else { return };
    let Some(normalized) = normalized else { return };
    assert!(normalized.starts_with('/'), "{path} -> {normalized}");
    assert!(!normalized.contains("//"), "{path} -> {normalized}");
    assert!(normalized.split('/').all(|s| s != "." && s != ".."), "{path} -> {normalized}");
    assert_eq!(normalize(&normalized), Ok(None), "{path} -> {normalized} is not stable");
}

/// Builds the table and checks every request's match against the spec it names.
fn check_routes<'a>(specs: &[RouteSpec], requests: impl Iterator<Item = (Option<&'a str>, Method, &'a str)>) {
    let Ok(table) = RouteTable::build(specs, (0..specs.len()).collect()) else { return };
    for (host, method, path) in requests {
        let Some(found) = table.find(host, &method, path, &http::HeaderMap::new()) else { continue };
        let spec = &specs[*found.route];
        assert!(spec.headers.is_empty(), "{method} {path} without headers matched a route that needs some: {spec:?}");
        // A route listing GET takes HEAD too (`served_methods`).
        assert!(spec.methods.is_empty() || served_methods(&spec.methods).contains(&method), "{method} {path} matched {spec:?}");
        if !spec.hosts.is_empty() {
            let host = host.map(|h| strip_port(h).to_ascii_lowercase()).unwrap_or_default();
            let host_ok = spec.hosts.iter().any(|h| {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
                    None => h == host,
                }
            });
            assert!(host_ok, "host {host:?} matched {spec:?}");
        }
        match &spec.path {
            PathMatch::Prefix(prefix) => {
                let rest = path.strip_prefix(prefix.trim_end_matches('/'));
                assert!(rest.is_some_and(|r| r.is_empty() || r.starts_with('/')), "{path} matched prefix {spec:?}");
            }
            PathMatch::Exact(pattern) if !pattern.contains(['{', '}']) => assert_eq!(path, pattern, "{spec:?}"),
            // `{{` and `}}` are matchit's escaped braces: names are only compared without them.
            PathMatch::Exact(pattern) if pattern.contains("{{") || pattern.contains("}}") => {}
            PathMatch::Exact(pattern) => {
                for (name, _) in &found.params {
                    assert!(pattern.contains(&format!("{{{name}}}")), "param {name} is not in {pattern}");
                }
            }
        }
    }
}

/// The router's rule: a trailing `:digits` is a port; `[v6]:port` gives `v6`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(h, _)| h);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
}

/// Values for template variables: the fuzz input's values, picked by the variable name's length;
/// or nothing at all ([`FuzzSource::EMPTY`]), the baseline a template's literal text gives.
struct FuzzSource<'a> {
    values: &'a [&'a str],
}

impl FuzzSource<'_> {
    const EMPTY: FuzzSource<'static> = FuzzSource { values: &[] };

    fn pick(&self, name: &str) -> Option<String> {
        (!self.values.is_empty()).then(|| self.values[name.len() % self.values.len()].to_owned())
    }
}

impl Source for FuzzSource<'_> {
    fn context(&self, key: &str) -> Option<String> {
        self.pick(key)
    }
    fn param(&self, name: &str) -> Option<String> {
        self.pick(name)
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.pick(name).map(String::into_bytes)
    }
    fn query(&self, name: &str) -> Option<String> {
        self.pick(name)
    }
    fn request_id(&self) -> String {
        self.pick("request_id").unwrap_or_default()
    }
    fn route(&self) -> String {
        self.pick("route").unwrap_or_default()
    }
}

/// `template`: line 1 is a template (as an operator writes in config), line 2 a request path,
/// the other lines variable values (request data). Parsing never panics; a path template
/// (`builtin:transform`'s `request.path`, a route's `rewrite`) expanded with any values has the
/// segments, `?` and `#` its literal text gives, and no `.`/`..` segment a value brought in;
/// `builtin:grpc-transcode`'s `google.api.http` templates match only fields they declare.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let template = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    let values: Vec<&str> = lines.collect();
    let source = FuzzSource { values: &values };

    let parsed = Template::parse(template);
    if let Ok(t) = &parsed {
        let _ = t.expand(&source);
        let _ = t.expand_string(&source);
    }
    if let Ok(header) = Template::parse_header_value(template) {
        assert_eq!(Some(&header), parsed.as_ref().ok(), "a header value template parses as a template");
    }

    if let Ok(path_template) = serde_json::from_value::<airlock_plugin_transform::PathTemplate>(Value::String(template.into())) {
        let expanded = path_template.expand(&source);
        let baseline = path_template.expand(&FuzzSource::EMPTY);
        check_path_expansion(template, &expanded, &baseline);
    }

    let params: Vec<(String, String)> = template
        .split("${param.")
        .skip(1)
        .filter_map(|s| s.split_once('}'))
        .map(|(name, _)| (name.to_owned(), source.pick(name).unwrap_or_default()))
        .collect();
    let empty: Vec<(String, String)> = params.iter().map(|(n, _)| (n.clone(), String::new())).collect();
    check_path_expansion(template, &airlock::gateway::rewrite_path(template, &params), &airlock::gateway::rewrite_path(template, &empty));

    if let Ok(grpc) = airlock_plugin_grpc_transcode::template::Template::parse(template) {
        let fields = grpc.fields();
        for (field, _) in grpc.matches(path).unwrap_or_default() {
            assert!(fields.contains(&field.as_str()), "captured undeclared field {field} from {path}");
        }
    }
}

/// `expanded` (with values) against `baseline` (every value empty): values add no segment, no
/// `?` or `#`, and no dot segment.
fn check_path_expansion(template: &str, expanded: &str, baseline: &str) {
    let got: Vec<&str> = expanded.split('/').collect();
    let base: Vec<&str> = baseline.split('/').collect();
    assert_eq!(got.len(), base.len(), "values added path segments to `{template}`: {expanded}");
    for c in ['?', '#'] {
        assert_eq!(expanded.matches(c).count(), baseline.matches(c).count(), "a value added `{c}` to `{template}`: {expanded}");
    }
    for (g, b) in got.iter().zip(&base) {
        if matches!(*g, "." | "..") {
            assert_eq!(g, b, "a value made a dot segment in `{template}`: {expanded}");
        }
    }
}

/// `transform`: line 1 is a field path (`builtin:transform`'s path language), line 2 the
/// plugin's config as JSON, the rest a body (JSON document or query string). Nothing panics;
/// `get`, `take`, `put` and `wrap` agree with each other; a changed body is valid JSON.
pub fn transform(data: &[u8]) {
    use airlock_plugin_transform::Config;
    use airlock_plugin_transform::body::Outcome;
    use airlock_plugin_transform::path::{FieldPath, Pattern};

    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.splitn(3, '\n');
    let path = lines.next().unwrap_or_default();
    let rules = lines.next().unwrap_or_default();
    let body = lines.next().unwrap_or_default();
    let document: Option<Value> = serde_json::from_str(body).ok();
    let values = [body];
    let source = FuzzSource { values: &values };

    if let (Ok(pattern), Some(doc)) = (Pattern::parse(path), &document) {
        let mut removed = doc.clone();
        pattern.remove_all(&mut removed);
        let mut renamed = doc.clone();
        pattern.rename_all(&mut renamed, "renamed");
    }
    if let (Ok(field), Some(doc)) = (FieldPath::parse(path), &document) {
        let before = field.get(doc).cloned();
        let mut taken = doc.clone();
        assert_eq!(field.take(&mut taken), before, "take and get disagree on `{path}`");
        let wrapped = field.wrap(doc.clone());
        assert_eq!(field.get(&wrapped), Some(doc), "wrap then get is not the document for `{path}`");
        let mut put = doc.clone();
        let marker = Value::String("fuzz-marker".into());
        let ends = field.to_string().split(['.', '/']).any(|k| k == "-");
        if field.put(&mut put, marker.clone(), false) == Ok(true) && !ends {
            assert_eq!(field.get(&put), Some(&marker), "put then get lost the value at `{path}`");
        }
    }

    let Ok(config) = serde_json::from_str::<Config>(rules) else { return };
    let _ = config.request.query.validate("request.query");
    let _ = config.request.query.apply(Some(body), &source);
    let _ = config.request.query.apply(None, &source);
    if let Some(template) = &config.request.path {
        let _ = template.expand(&source);
    }
    for (direction, rules) in [("request", &config.request.body), ("response", &config.response.body)] {
        if rules.validate(direction).is_err() {
            continue;
        }
        for content_type in [None, Some("application/json"), Some("text/plain")] {
            let mut warnings = Vec::new();
            if let Outcome::Changed(json) = rules.transform(body.as_bytes(), content_type, &source, &mut warnings) {
                assert!(serde_json::from_slice::<Value>(&json).is_ok(), "a changed body is not JSON");
            }
        }
    }
}
