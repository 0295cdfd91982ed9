//! `builtin:cors`: Cross-Origin Resource Sharing (the Fetch standard's CORS protocol) at the
//! gateway.
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:cors"              # put it before authentication: preflights carry no credentials
//! [routes.plugins.config]
//! origins = [
//!   "https://app.example.com",         # exact (scheme, host and port)
//!   "https://*.example.com",           # any subdomain (one or more labels), not example.com itself
//!   "regex:^https://pr-[0-9]+\\.preview\\.example\\.net$",  # a regular expression, anchored
//! ]                                    # or ["*"]: any origin (not with credentials)
//! methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]  # the default
//! headers = ["content-type", "authorization"]  # allowed request headers; default: echo the requested ones
//! expose_headers = ["x-request-id"]    # response headers scripts may read (default none)
//! credentials = false                  # Access-Control-Allow-Credentials: true
//! max_age = 600                        # seconds browsers may cache a preflight (default: not sent)
//! ```
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here and
//! never reaches the upstream: `204` with `Access-Control-Allow-Origin`,
//! `-Allow-Methods`, `-Allow-Headers`, `-Max-Age` and `-Allow-Credentials` as configured, if the
//! origin, the method and every requested header are allowed; otherwise `403` without any CORS
//! header, which the browser reports as a CORS failure. Other requests go on; on their response,
//! an allowed `Origin` gets `Access-Control-Allow-Origin` (the origin itself, or `*` when
//! `origins = ["*"]` without credentials), `-Allow-Credentials` and `-Expose-Headers`, replacing
//! whatever the upstream sent (its own of these, and its preflight-only ones, are removed); a
//! disallowed origin gets no CORS headers (the browser then hides
//! the response from the script). Every response whose headers depend on `Origin` (all of them,
//! unless `origins = ["*"]`) carries `Vary: Origin` so that caches keep them apart. These
//! response headers are decided in the request phase, from the `Origin` the request has when it
//! reaches this plugin, and made by the gateway on the way back as response edits: the plugin
//! has no `on-response`, one call per request.
//!
//! `*` with `credentials = true` is refused at configure (browsers reject it, and reflecting any
//! origin with credentials would let every site act as the user), and so is a `regex:` that
//! matches any origin; so is a wildcard right under a top-level domain (`https://*.com`).
//! Methods are case-sensitive tokens, except the six browsers upper-case themselves (`get` is
//! taken as `GET`); header names are compared case-insensitively.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[cfg(target_arch = "wasm32")]
use airlock_sdk::export_plugin;
use airlock_sdk::{Action, Descriptor, Plugin, Request, RequestEdit, ResponseEdit, ResponseInit};
use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    origins: Vec<String>,
    #[serde(default = "default_methods")]
    methods: Vec<String>,
    #[serde(default)]
    headers: Option<Vec<String>>,
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    credentials: bool,
    #[serde(default)]
    max_age: Option<u32>,
    /// Filled in by the gateway for built-in plugins; not used here.
    #[serde(default)]
    #[allow(dead_code)]
    consumers: serde_json::Value,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].map(String::from).to_vec()
}

/// One `origins` entry.
#[derive(Debug)]
enum OriginRule {
    Any,
    Exact(String),
    /// `scheme://*.suffix[:port]`: (`scheme://`, `.suffix[:port]`).
    Subdomain(String, String),
    Regex(regex_lite::Regex),
}

/// The configured plugin.
struct Cors {
    origins: Vec<OriginRule>,
    /// `origins = ["*"]` (without credentials): answers `*`, responses do not vary.
    any_origin: bool,
    methods: Vec<String>,
    /// Allowed request headers, lower-case; `None` echoes what the preflight asks for.
    headers: Option<Vec<String>>,
    expose_headers: String,
    credentials: bool,
    max_age: Option<u32>,
}

impl Plugin for Cors {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.origins.is_empty() {
            return Err("`origins`: give at least one origin, `*`, `https://*.example.com` or `regex:...`".into());
        }
        let mut origins = Vec::new();
        for (i, origin) in config.origins.iter().enumerate() {
            origins.push(origin_rule(origin).map_err(|e| format!("`origins[{i}]`: {e}"))?);
        }
        let has_any = origins.iter().any(|o| matches!(o, OriginRule::Any));
        if has_any && config.credentials {
            return Err("`credentials`: cannot be true with `*` in `origins`: browsers refuse `Access-Control-Allow-Origin: *` \
                        with credentials; list the allowed origins instead"
                .into());
        }
        if has_any && origins.len() > 1 {
            return Err("`origins`: `*` allows every origin; give it alone".into());
        }
        if config.credentials
            && let Some(i) = origins.iter().position(|o| matches!(o, OriginRule::Regex(re) if re.is_match(STRANGER)))
        {
            return Err(format!(
                "`origins[{i}]`: with `credentials = true` this regex lets any site act as the user (it matches `{STRANGER}`): \
                 anchor it to your own domains"
            ));
        }
        let mut methods = config.methods;
        for (i, method) in methods.iter_mut().enumerate() {
            if !airlock_sdk::header_rules::is_token(method) || method == "*" {
                return Err(format!("`methods[{i}]`: `{method}` is not an HTTP method"));
            }
            // Browsers send these six upper-cased whatever the script wrote (Fetch's method
            // normalization): `get` here would never match their preflight's `GET`.
            if let Some(normal) = FETCH_NORMALIZED.iter().find(|m| m.eq_ignore_ascii_case(method)) {
                *method = (*normal).to_owned();
            }
        }
        let headers = match config.headers {
            None => None,
            Some(list) => Some(header_names(&list, "headers")?),
        };
        let expose = header_names(&config.expose_headers, "expose_headers")?;
        Ok(Self {
            any_origin: has_any,
            origins,
            methods,
            headers,
            expose_headers: expose.join(", "),
            credentials: config.credentials,
            max_age: config.max_age,
        })
    }

    /// Request phase only: the headers of a non-preflight response are response edits the
    /// gateway makes on the way back (`Request::edit_response`), with no `on-response` call.
    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        let Some((origin, method)) = preflight(req) else {
            self.edit_actual_response(req);
            return Action::Continue;
        };
        let requested = req.header_str("access-control-request-headers").unwrap_or_default();
        let requested: Vec<String> =
            requested.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
        let method_ok = self.methods.contains(&method);
        let headers_ok =
            requested.iter().all(|h| airlock_sdk::header_rules::is_token(h) && self.headers.as_ref().is_none_or(|allowed| allowed.contains(h)));
        if !self.allows(&origin) || !method_ok || !headers_ok {
            return Action::error(403, "forbidden", "CORS preflight refused", &req.request_id());
        }
        let mut answer = ResponseInit::new(204)
            .header("access-control-allow-origin", self.allow_origin_value(&origin))
            .header("access-control-allow-methods", self.methods.join(", "));
        let allow_headers = match &self.headers {
            Some(list) => list.join(", "),
            None => requested.join(", "),
        };
        if !allow_headers.is_empty() {
            answer = answer.header("access-control-allow-headers", allow_headers);
        }
        if self.credentials {
            answer = answer.header("access-control-allow-credentials", "true");
        }
        if let Some(age) = self.max_age {
            answer = answer.header("access-control-max-age", age.to_string());
        }
        answer.header("vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers").into()
    }
}

impl Cors {
    /// The CORS headers of a non-preflight request's response (the upstream's, or one a later
    /// plugin made), decided from the request's `Origin` as it reaches this plugin and made by
    /// the gateway where the response phase would run.
    fn edit_actual_response(&self, req: &Request) {
        let origin = req.header_str("origin");
        // The answer depends on the origin: caches must keep one per origin.
        let vary = (!self.any_origin).then_some(ResponseEdit::AddToken("vary", "Origin"));
        // The plugin's CORS headers replace the upstream's entirely: an upstream's
        // `allow-credentials: true` beside the plugin's `allow-origin` would grant what the
        // operator did not (`credentials = false`), and a refused origin gets none.
        let cors = match origin.as_deref() {
            None => None,
            Some(origin) if !self.allows(origin) => {
                Some(["access-control-allow-origin", "access-control-allow-credentials", "access-control-expose-headers"].map(ResponseEdit::Remove))
            }
            Some(origin) => Some([
                ResponseEdit::Set("access-control-allow-origin", self.allow_origin_value(origin).as_bytes()),
                match self.credentials {
                    true => ResponseEdit::Set("access-control-allow-credentials", b"true"),
                    false => ResponseEdit::Remove("access-control-allow-credentials"),
                },
                match self.expose_headers.is_empty() {
                    false => ResponseEdit::Set("access-control-expose-headers", self.expose_headers.as_bytes()),
                    true => ResponseEdit::Remove("access-control-expose-headers"),
                },
            ]),
        };
        // A preflight's own headers have no place on an actual response to a cross-origin request.
        let preflight_only = cors.is_some().then(|| ["access-control-allow-methods", "access-control-allow-headers", "access-control-max-age"].map(ResponseEdit::Remove));
        // Asked for with `vary` in one call (from the stack, no allocation).
        let edits = vary.into_iter().chain(cors.into_iter().flatten()).chain(preflight_only.into_iter().flatten());
        req.edit(edits.map(RequestEdit::Response));
    }

    fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim();
        if origin.is_empty() {
            return false;
        }
        let lower = origin.to_ascii_lowercase();
        self.origins.iter().any(|rule| match rule {
            OriginRule::Any => true,
            OriginRule::Exact(exact) => *exact == lower,
            OriginRule::Subdomain(scheme, suffix) => lower
                .strip_prefix(scheme.as_str())
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                .is_some_and(|labels| {
                    !labels.is_empty()
                        && !labels.starts_with('.')
                        && !labels.ends_with('.')
                        && !labels.contains("..")
                        && labels.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                }),
            OriginRule::Regex(re) => re.is_match(origin),
        })
    }

    fn allow_origin_value<'a>(&self, origin: &'a str) -> &'a str {
        if self.any_origin { "*" } else { origin.trim() }
    }
}

/// `(origin, requested method)` if the request is a CORS preflight.
fn preflight(req: &Request) -> Option<(String, String)> {
    if req.method() != "OPTIONS" {
        return None;
    }
    let origin = req.header_str("origin")?;
    let method = req.header_str("access-control-request-method")?;
    Some((origin, method.trim().to_owned()))
}

/// The methods Fetch upper-cases before sending (every other method goes as written).
const FETCH_NORMALIZED: [&str; 6] = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];

/// An origin no operator means to allow: a regex that matches it matches any site.
const STRANGER: &str = "https://airlock-cors-probe.invalid";

fn origin_rule(origin: &str) -> Result<OriginRule, String> {
    if origin == "*" {
        return Ok(OriginRule::Any);
    }
    if let Some(pattern) = origin.strip_prefix("regex:") {
        let re = regex_lite::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("invalid regex: {e}"))?;
        return Ok(OriginRule::Regex(re));
    }
    let lower = origin.to_ascii_lowercase();
    let (scheme, rest) = lower
        .split_once("://")
        .filter(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty() && !rest.contains('/'))
        .ok_or_else(|| {
            format!("`{origin}` is not an origin like \"https://app.example.com\" (no path, no trailing `/`)")
        })?;
    if let Some(suffix) = rest.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains('*') {
            return Err(format!("`{origin}`: a wildcard is `scheme://*.domain`"));
        }
        let host = suffix.rsplit_once(':').map_or(suffix, |(host, _port)| host);
        if !host.contains('.') {
            return Err(format!(
                "`{origin}`: a wildcard right under `{host}` allows every site there: give your domain (`{scheme}://*.example.{host}`)"
            ));
        }
        return Ok(OriginRule::Subdomain(format!("{scheme}://"), format!(".{suffix}")));
    }
    if rest.contains('*') {
        return Err(format!("`{origin}`: `*` is only allowed as the first label (`https://*.example.com`)"));
    }
    Ok(OriginRule::Exact(lower))
}

fn header_names(names: &[String], key: &str) -> Result<Vec<String>, String> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if !airlock_sdk::header_rules::is_token(name) || name == "*" {
                return Err(format!("`{key}[{i}]`: `{name}` is not a header name"));
            }
            Ok(name.to_ascii_lowercase())
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
export_plugin!(Cors);

#[cfg(test)]
mod tests {
    use super::*;

    fn build(json: &str) -> Result<Cors, String> {
        airlock_sdk::configure::<Cors>(json)
    }

    #[test]
    fn origin_rules() {
        let cors = build(
            r#"{"origins": ["https://app.example.com", "https://*.example.org", "http://*.dev.test:8080", "regex:https://pr-[0-9]+\\.preview\\.net"]}"#,
        )
        .unwrap();
        assert!(cors.allows("https://app.example.com"));
        assert!(cors.allows("HTTPS://APP.EXAMPLE.COM"));
        assert!(!cors.allows("http://app.example.com"), "scheme matters");
        assert!(!cors.allows("https://app.example.com:8443"), "port matters");
        assert!(!cors.allows("https://app.example.com.evil.net"));
        assert!(cors.allows("https://a.example.org"));
        assert!(cors.allows("https://a.b.example.org"));
        assert!(!cors.allows("https://example.org"), "the wildcard needs a label");
        assert!(!cors.allows("https://evilexample.org"));
        assert!(!cors.allows("https://a.example.org.evil.net"));
        assert!(!cors.allows("https://a/b.example.org"));
        assert!(cors.allows("http://x.dev.test:8080"));
        assert!(!cors.allows("http://x.dev.test"));
        assert!(cors.allows("https://pr-12.preview.net"));
        assert!(!cors.allows("https://pr-12.preview.net.evil.com"), "regexes are anchored");
        assert!(!cors.allows("null"));
        assert!(!cors.allows(""));
        // The methods browsers upper-case are taken upper-cased; others as written.
        let cors = build(r#"{"origins": ["*"], "methods": ["get", "Post", "patch"]}"#).unwrap();
        assert_eq!(cors.methods, ["GET", "POST", "patch"]);
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |json: &str| build(json).err().unwrap();
        assert!(err(r#"{"origins": ["*"], "credentials": true}"#).starts_with("`credentials`: cannot be true"));
        assert!(err(r#"{"origins": []}"#).starts_with("`origins`:"));
        assert!(err(r#"{}"#).contains("missing field `origins`"));
        assert!(err(r#"{"origins": ["https://a.com/"]}"#).starts_with("`origins[0]`:"));
        assert!(err(r#"{"origins": ["a.com"]}"#).starts_with("`origins[0]`:"));
        assert!(err(r#"{"origins": ["https://a.*.com"]}"#).starts_with("`origins[0]`:"));
        assert!(err(r#"{"origins": ["regex:("]}"#).starts_with("`origins[0]`: invalid regex"));
        assert!(err(r#"{"origins": ["*", "https://a.com"]}"#).contains("alone"));
        assert!(err(r#"{"origins": ["*"], "methods": ["GET", "P T"]}"#).starts_with("`methods[1]`:"));
        assert!(err(r#"{"origins": ["https://*.com"]}"#).contains("allows every site there"));
        assert!(err(r#"{"origins": ["https://*.dev:8443"]}"#).contains("allows every site there"));
        let any = err(r#"{"origins": ["regex:.*"], "credentials": true}"#);
        assert!(any.starts_with("`origins[0]`: with `credentials = true` this regex lets any site act as the user"), "{any}");
        assert!(err(r#"{"origins": ["https://a.example", "regex:https://.+"], "credentials": true}"#).starts_with("`origins[1]`"));
        assert!(err(r#"{"origins": ["*"], "headers": ["x y"]}"#).starts_with("`headers[0]`:"));
        assert!(err(r#"{"origins": ["*"], "expose_headers": ["*"]}"#).starts_with("`expose_headers[0]`:"));
        assert!(build(r#"{"origins": ["*"], "max_age": 60, "consumers": []}"#).is_ok());
    }
}
