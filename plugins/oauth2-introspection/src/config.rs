//! The plugin's config, checked once at configure and turned into the [`Settings`] every
//! request reads.

use std::collections::BTreeMap;
use std::fmt;

use airlock_sdk::header_rules::{header_name, settable_header_name};
use serde::Deserialize;

use crate::wire;

/// Longest `timeout_ms`: the most a grant's own `timeout_ms` can be, which bounds every call anyway.
const MAX_TIMEOUT_MS: u32 = 60_000;

/// Longest `cache_ttl_s`: a day. The cache TTL is how long a revoked token may still be let
/// through, so a longer one is a mistake, not a tuning.
pub const MAX_CACHE_TTL_S: u64 = 86_400;

/// Longest `negative_cache_ttl_s`: an hour.
pub const MAX_NEGATIVE_CACHE_TTL_S: u64 = 3_600;

/// Largest `leeway_s`: five minutes of clock skew.
const MAX_LEEWAY_S: u64 = 300;

/// Headers through which gateway auth plugins name the consumer to the upstream: the plugin
/// removes the client's copies and sets them itself (with `anonymous`, a request an earlier auth
/// plugin authenticated keeps that plugin's).
pub use airlock_sdk::consumer::HEADERS as CONSUMER_HEADERS;

/// Most entries of `required_scopes`, `audiences`, `issuers` and `claims_to_headers` (each is
/// read on every request).
const MAX_LIST: usize = 32;

/// The chain entry's `config` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The introspection endpoint: an absolute `http://` or `https://` URL whose origin the
    /// plugin's `http_client.allow` grant lists.
    pub endpoint: String,
    /// The gateway's client id at the authorization server.
    pub client_id: String,
    /// Its client secret, or `file:<path>` in the directory granted with `files`.
    pub client_secret: String,
    /// The request header holding the token.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// A query parameter that may hold the token instead.
    #[serde(default)]
    pub token_query: Option<String>,
    /// The `token_type_hint` sent with each call (`""`: none).
    #[serde(default = "default_token_type_hint")]
    pub token_type_hint: String,
    /// Timeout of the call in milliseconds; none: the grant's `timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Seconds of clock skew allowed for `exp` and `nbf`.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Scopes the token must all have (its `scope`: space-separated, or a list of strings).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// The token's `aud` must name one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The token's `iss` must be exactly this: one issuer. The same as `issuers = ["..."]`; not
    /// with `issuers`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The token's `iss` must be exactly one of these (as `builtin:jwt`'s `issuers`): several
    /// issuers, say two realms or an old and a new issuer URL. Not empty, no empty entry, at most
    /// 32; not with `issuer`.
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
    /// The claim whose value names the consumer.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// The member of the introspection answer listing the consumer's groups (`groups`, `roles`,
    /// or `scope` itself...); none by default (the consumer has no groups). Its value, a list of
    /// strings or a string of groups separated by spaces (as `scope`), becomes the context's
    /// `consumer.groups` and `X-Consumer-Groups`, as `builtin:jwt` and `builtin:key-auth` set
    /// them, for `acl`'s `group:` rules and `rate-limit`'s and `quota`'s `plans`. Groups belong
    /// to a named consumer: an answer without `consumer_claim` names neither. An unusable value
    /// ([`crate::introspection::groups`]: another type, a name with `,`, control characters or
    /// white space at either end, more than 64 groups or 4 KiB) names no consumer either: the
    /// request goes on as with an unusable `consumer_claim` (no consumer: `acl` refuses it), and
    /// a warning says why (at most every 10 s per instance). Never a part of the list.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Claim name to the upstream request header that carries its value.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// With a consumer named: `X-Consumer-Id` to the upstream, `X-Consumer-Groups` when it has
    /// groups, `X-Anonymous-Consumer: true` for the `anonymous` one.
    #[serde(default = "yes")]
    pub upstream_headers: bool,
    /// Leave the token in the request sent upstream.
    #[serde(default)]
    pub keep_token: bool,
    /// Longest an active answer is cached, in seconds (0: not cached).
    #[serde(default = "default_cache_ttl_s")]
    pub cache_ttl_s: u64,
    /// How long an inactive answer is cached, in seconds (0: not cached).
    #[serde(default = "default_negative_cache_ttl_s")]
    pub negative_cache_ttl_s: u64,
    /// The realm of the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// What an endpoint that cannot answer (down, timing out, 5xx, no usable JSON) means.
    #[serde(default)]
    pub failure: Failure,
    /// The id of the `[[consumers]]` entry a request runs as when it presents no valid token,
    /// as `builtin:jwt`'s `anonymous` (none by default: such a request is refused). Where this
    /// plugin would answer 401 (no token, or a token refused: inactive, expired, another issuer
    /// or audience, unreadable) or 403 (a required scope missing), the request goes on as this
    /// consumer instead, with its `[[consumers]]` groups, `consumer.anonymous` in the context and
    /// `X-Anonymous-Consumer: true` upstream, and without the refused token (unless
    /// `keep_token`); with `failure = "open"`, a request the endpoint could not answer for goes on
    /// as it too. A request an earlier auth plugin authenticated is left as it is (two auth
    /// plugins with `anonymous`: either credential). Still refused: a token sent twice (400),
    /// and, with `failure = "closed"`, a request the endpoint could not answer for (503). The
    /// plugin sees `[[consumers]]` only when its definition grants `consumers`
    /// (`capabilities = ["http-client", "consumers"]`).
    #[serde(default)]
    pub anonymous: Option<String>,
    /// `[[consumers]]`, filled in by the gateway when the definition grants `consumers` (never
    /// written in the config): only the ids and groups are read, for `anonymous`; credentials
    /// are not kept.
    #[serde(default)]
    pub consumers: Vec<ConsumerEntry>,
}

/// One `[[consumers]]` entry as the gateway hands it over: what `anonymous` needs of it. Other
/// members (`credentials`) are skipped, not kept.
#[derive(Deserialize)]
pub struct ConsumerEntry {
    /// The consumer's id.
    pub id: String,
    /// Its groups (the gateway has checked their names).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A consumer a request may run as without a token: the `anonymous` one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its id.
    pub id: String,
    /// Its groups, comma-separated, as the context's `consumer.groups` carries them.
    pub groups: String,
}

/// The default `token_header`.
fn default_token_header() -> String {
    "authorization".into()
}

/// The default `token_type_hint`.
fn default_token_type_hint() -> String {
    "access_token".into()
}

/// The default `leeway_s`.
fn default_leeway_s() -> u64 {
    30
}

/// The default `consumer_claim`.
fn default_consumer_claim() -> String {
    "sub".into()
}

/// `true`, for defaults.
fn yes() -> bool {
    true
}

/// The default `cache_ttl_s`.
fn default_cache_ttl_s() -> u64 {
    60
}

/// The default `negative_cache_ttl_s`.
fn default_negative_cache_ttl_s() -> u64 {
    5
}

/// The default `realm`.
fn default_realm() -> String {
    "airlock".into()
}

/// What happens to a request when the introspection endpoint gives no usable answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// Refuse the request: 503 in the gateway's error format.
    #[default]
    Closed,
    /// Let the request through unauthenticated (no consumer, no claim headers).
    Open,
}

/// What the request phase reads: the config, checked, names lower-cased, the client's
/// credentials encoded once.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The introspection endpoint, as written.
    pub endpoint: String,
    /// The client id (for the cache key: two clients may be told different things).
    pub client_id: String,
    /// `Basic <base64(form(client_id):form(client_secret))>`, RFC 6749 2.3.1.
    pub client_authorization: String,
    /// The header the token is read from, lower-case.
    pub token_header: String,
    /// Whether that header's value is `Bearer <token>` (the `authorization` header) rather than
    /// the token alone.
    pub bearer_scheme: bool,
    /// The query parameter the token may be read from.
    pub token_query: Option<String>,
    /// `token_type_hint` (empty: not sent).
    pub token_type_hint: String,
    /// Timeout asked for the call (0: the grant's).
    pub timeout_ms: u32,
    /// Clock skew allowed, in seconds.
    pub leeway_s: i64,
    /// Scopes the token must all have.
    pub required_scopes: Vec<String>,
    /// `aud` must name one of these (empty: not checked).
    pub audiences: Vec<String>,
    /// `iss` must be one of these (empty: not checked): `issuer`, or `issuers` without repeats.
    pub issuers: Vec<String>,
    /// The claim naming the consumer.
    pub consumer_claim: String,
    /// The claim listing the consumer's groups (none: no groups).
    pub groups_claim: Option<String>,
    /// (claim, header) pairs, headers lower-case and distinct.
    pub claims_to_headers: Vec<(String, String)>,
    /// `X-Consumer-Id` (and `X-Consumer-Groups`, `X-Anonymous-Consumer`) to the upstream when a
    /// consumer is named.
    pub upstream_headers: bool,
    /// The token stays in the request sent upstream.
    pub keep_token: bool,
    /// Longest an active answer is cached, in milliseconds (0: not cached).
    pub cache_ttl_ms: u64,
    /// How long an inactive answer is cached, in milliseconds (0: not cached).
    pub negative_cache_ttl_ms: u64,
    /// `Bearer realm="<realm>"`.
    pub challenge: String,
    /// Closed or open on failure.
    pub failure: Failure,
    /// The consumer a request without a valid token runs as (none: refused).
    pub anonymous: Option<Identity>,
}

impl fmt::Debug for Settings {
    /// Every field but the client's credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_authorization", &"<redacted>")
            .field("token_header", &self.token_header)
            .field("bearer_scheme", &self.bearer_scheme)
            .field("token_query", &self.token_query)
            .field("token_type_hint", &self.token_type_hint)
            .field("timeout_ms", &self.timeout_ms)
            .field("leeway_s", &self.leeway_s)
            .field("required_scopes", &self.required_scopes)
            .field("audiences", &self.audiences)
            .field("issuers", &self.issuers)
            .field("consumer_claim", &self.consumer_claim)
            .field("groups_claim", &self.groups_claim)
            .field("claims_to_headers", &self.claims_to_headers)
            .field("upstream_headers", &self.upstream_headers)
            .field("keep_token", &self.keep_token)
            .field("cache_ttl_ms", &self.cache_ttl_ms)
            .field("negative_cache_ttl_ms", &self.negative_cache_ttl_ms)
            .field("challenge", &self.challenge)
            .field("failure", &self.failure)
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl Settings {
    /// Checks the config. Errors start with the key, as the gateway shows them beside the route.
    /// `read_secret` resolves `client_secret` (`file:<path>` in the plugin's granted directory).
    pub fn from_config(c: Config, read_secret: impl Fn(&str) -> Result<String, String>) -> Result<Self, String> {
        airlock_sdk::http_client::check_url(&c.endpoint).map_err(|e| format!("`endpoint`: {e}"))?;
        if c.client_id.is_empty() {
            return Err("`client_id`: empty: give the client id the authorization server knows the gateway by".into());
        }
        if c.client_id.chars().any(char::is_control) {
            return Err("`client_id`: holds control characters".into());
        }
        let secret = read_secret(&c.client_secret).map_err(|e| format!("`client_secret`: {e}"))?;
        if secret.is_empty() {
            return Err("`client_secret`: empty: give the client's secret, or `file:<path>` in the directory granted with `files`".into());
        }
        let token_header = header_name(&c.token_header).map_err(|e| format!("`token_header`: {e}"))?;
        if token_header == "host" || settable_header_name(&token_header).is_err() || CONSUMER_HEADERS.contains(&token_header.as_str()) {
            return Err(format!("`token_header`: `{token_header}` cannot carry a token"));
        }
        let token_query = match c.token_query {
            None => None,
            Some(name) if name.is_empty() => return Err("`token_query`: empty: give the query parameter's name, or leave the key out".into()),
            Some(name) if name.chars().any(|ch| ch.is_control() || matches!(ch, '&' | '=' | '#' | ' ')) => {
                return Err(format!("`token_query`: `{name}` is not a query parameter name (no spaces, controls, `&`, `=` or `#`)"));
            }
            Some(name) => Some(name),
        };
        if c.token_type_hint.chars().any(|ch| ch.is_control() || ch == ' ') {
            return Err("`token_type_hint`: holds spaces or control characters (RFC 7662 hints are `access_token`, `refresh_token`)".into());
        }
        let timeout_ms = match c.timeout_ms {
            None => 0,
            Some(0) => return Err("`timeout_ms` must be at least 1 (leave it out to use the grant's `timeout_ms`)".into()),
            Some(ms) if ms > MAX_TIMEOUT_MS => {
                return Err(format!("`timeout_ms`: at most {MAX_TIMEOUT_MS} (the grant's `timeout_ms` bounds the call anyway)"));
            }
            Some(ms) => ms,
        };
        if c.leeway_s > MAX_LEEWAY_S {
            return Err(format!("`leeway_s`: at most {MAX_LEEWAY_S} seconds"));
        }
        let required_scopes = list("required_scopes", c.required_scopes, |scope| {
            if wire::is_scope_token(scope) {
                Ok(())
            } else {
                Err(format!("`{scope}` is not a scope (printable ASCII without spaces, `\"` or `\\`, RFC 6749 3.3)"))
            }
        })?;
        let audiences = list("audiences", c.audiences, |aud| if aud.is_empty() { Err("empty".into()) } else { Ok(()) })?;
        let issuers = match (c.issuer, c.issuers) {
            (Some(_), Some(_)) => {
                return Err("`issuers`: give `issuer` (one) or `issuers` (a list), not both".into());
            }
            (Some(issuer), None) if issuer.is_empty() => {
                return Err("`issuer`: empty: give the `iss` the authorization server writes, or leave the key out".into());
            }
            (Some(issuer), None) => vec![issuer],
            (None, Some(list)) if list.is_empty() => {
                return Err("`issuers`: empty: give the `iss` values the authorization server writes, or leave the key out".into());
            }
            (None, Some(list)) => self::list("issuers", list, |iss| if iss.is_empty() { Err("empty".into()) } else { Ok(()) })?,
            (None, None) => Vec::new(),
        };
        if c.consumer_claim.is_empty() {
            return Err("`consumer_claim`: empty: give the claim naming the consumer (`sub`, `client_id`, `username`...)".into());
        }
        if c.groups_claim.as_deref() == Some("") {
            return Err("`groups_claim`: empty: give the answer's member listing the consumer's groups (`groups`, `roles`...), or leave the key out".into());
        }
        if c.claims_to_headers.len() > MAX_LIST {
            return Err(format!("`claims_to_headers`: at most {MAX_LIST} claims"));
        }
        let mut claims_to_headers: Vec<(String, String)> = Vec::new();
        for (claim, header) in c.claims_to_headers {
            let header = settable_header_name(&header).map_err(|e| format!("`claims_to_headers.{claim}`: {e}"))?;
            if header == "host" {
                return Err(format!("`claims_to_headers.{claim}`: `host` cannot carry a claim: it says where the request goes"));
            }
            if header == token_header {
                return Err(format!("`claims_to_headers.{claim}`: `{header}` is `token_header`, where the token is read from"));
            }
            if CONSUMER_HEADERS.contains(&header.as_str()) {
                return Err(format!("`claims_to_headers.{claim}`: `{header}` names the consumer (`consumer_claim`, `upstream_headers`)"));
            }
            if let Some((other, _)) = claims_to_headers.iter().find(|(_, h)| *h == header) {
                return Err(format!("`claims_to_headers.{claim}`: `{header}` is already the header of claim `{other}`"));
            }
            claims_to_headers.push((claim, header));
        }
        if c.cache_ttl_s > MAX_CACHE_TTL_S {
            return Err(format!(
                "`cache_ttl_s`: at most {MAX_CACHE_TTL_S} (a day): a revoked token is let through for as long as its answer is cached"
            ));
        }
        if c.negative_cache_ttl_s > MAX_NEGATIVE_CACHE_TTL_S {
            return Err(format!("`negative_cache_ttl_s`: at most {MAX_NEGATIVE_CACHE_TTL_S} (an hour)"));
        }
        let anonymous = match c.anonymous {
            None => None,
            Some(id) => match c.consumers.iter().find(|consumer| consumer.id == id) {
                Some(consumer) => Some(Identity { id, groups: consumer.groups.join(",") }),
                None if c.consumers.is_empty() => {
                    return Err(format!(
                        "`anonymous`: no consumer with id `{id}` in [[consumers]] (this plugin sees [[consumers]] only when its definition grants them: `capabilities = [\"http-client\", \"consumers\"]`)"
                    ));
                }
                None => return Err(format!("`anonymous`: no consumer with id `{id}` in [[consumers]]")),
            },
        };
        let realm = &c.realm;
        if realm.chars().any(|ch| ch == '"' || ch == '\\' || ch.is_control()) {
            return Err("`realm`: cannot contain quotes, backslashes or control characters".into());
        }
        Ok(Self {
            client_authorization: wire::basic_authorization(&c.client_id, &secret),
            endpoint: c.endpoint,
            client_id: c.client_id,
            bearer_scheme: token_header == "authorization",
            token_header,
            token_query,
            token_type_hint: c.token_type_hint,
            timeout_ms,
            // At most MAX_LEEWAY_S: it fits.
            leeway_s: i64::try_from(c.leeway_s).unwrap_or(0),
            required_scopes,
            audiences,
            issuers,
            consumer_claim: c.consumer_claim,
            groups_claim: c.groups_claim,
            claims_to_headers,
            upstream_headers: c.upstream_headers,
            keep_token: c.keep_token,
            cache_ttl_ms: c.cache_ttl_s * 1000,
            negative_cache_ttl_ms: c.negative_cache_ttl_s * 1000,
            challenge: format!("Bearer realm=\"{realm}\""),
            failure: c.failure,
            anonymous,
        })
    }

    /// Whether any answer is cached.
    pub fn caches(&self) -> bool {
        self.cache_ttl_ms > 0 || self.negative_cache_ttl_ms > 0
    }
}

/// Checks a list of strings with `check` (errors name the entry), drops repeats; at most
/// [`MAX_LIST`] entries.
fn list(key: &str, items: Vec<String>, check: impl Fn(&str) -> Result<(), String>) -> Result<Vec<String>, String> {
    if items.len() > MAX_LIST {
        return Err(format!("`{key}`: at most {MAX_LIST} entries"));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        check(&item).map_err(|e| format!("`{key}[{i}]`: {e}"))?;
        if !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `client_secret` as written (no files natively).
    fn plain(secret: &str) -> Result<String, String> {
        Ok(secret.to_owned())
    }

    fn settings(json: &str) -> Result<Settings, String> {
        let config: Config = airlock_sdk::serde_json::from_str(json).map_err(|e| e.to_string())?;
        Settings::from_config(config, plain)
    }

    const BASE: &str = r#""endpoint": "https://idp.example.com/oauth2/introspect", "client_id": "gateway", "client_secret": "s3cret""#;

    fn with(extra: &str) -> String {
        if extra.is_empty() { format!("{{{BASE}}}") } else { format!("{{{BASE}, {extra}}}") }
    }

    #[test]
    fn defaults_are_those_documented() {
        let s = settings(&with("")).unwrap();
        assert_eq!(s.token_header, "authorization");
        assert!(s.bearer_scheme);
        assert_eq!(s.token_query, None);
        assert_eq!(s.token_type_hint, "access_token");
        assert_eq!(s.timeout_ms, 0);
        assert_eq!(s.leeway_s, 30);
        assert!(s.required_scopes.is_empty() && s.audiences.is_empty() && s.issuers.is_empty());
        assert_eq!(s.consumer_claim, "sub");
        assert_eq!(s.groups_claim, None);
        assert!(s.claims_to_headers.is_empty());
        assert!(s.upstream_headers && !s.keep_token);
        assert_eq!((s.cache_ttl_ms, s.negative_cache_ttl_ms), (60_000, 5_000));
        assert_eq!(s.challenge, "Bearer realm=\"airlock\"");
        assert_eq!(s.failure, Failure::Closed);
        assert_eq!(s.anonymous, None);
        assert!(s.caches());
        assert!(!format!("{s:?}").contains("s3cret"), "the secret is never in a debug print");
    }

    #[test]
    fn names_are_lower_cased_and_lists_deduplicated() {
        let s = settings(&with(
            r#""token_header": "X-Access-Token", "token_query": "access_token", "required_scopes": ["read", "read", "write"],
               "claims_to_headers": {"sub": "X-User-Id", "scope": "x-scopes"}, "cache_ttl_s": 0, "negative_cache_ttl_s": 0, "failure": "open""#,
        ))
        .unwrap();
        assert_eq!(s.token_header, "x-access-token");
        assert!(!s.bearer_scheme, "only `authorization` takes the `Bearer` scheme");
        assert_eq!(s.token_query.as_deref(), Some("access_token"));
        assert_eq!(s.required_scopes, ["read", "write"]);
        assert_eq!(s.claims_to_headers, [("scope".to_owned(), "x-scopes".to_owned()), ("sub".to_owned(), "x-user-id".to_owned())]);
        assert!(!s.caches());
        assert_eq!(s.failure, Failure::Open);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (r#"{"client_id": "a", "client_secret": "b"}"#.to_owned(), "missing field `endpoint`"),
            (r#"{"endpoint": "http://a", "client_secret": "b"}"#.to_owned(), "missing field `client_id`"),
            (r#"{"endpoint": "http://a", "client_id": "a"}"#.to_owned(), "missing field `client_secret`"),
            (r#"{"endpoint": "ftp://a/x", "client_id": "a", "client_secret": "b"}"#.to_owned(), "`endpoint`: `ftp://a/x` is not an absolute"),
            (r#"{"endpoint": "/introspect", "client_id": "a", "client_secret": "b"}"#.to_owned(), "`endpoint`: `/introspect` is not an absolute"),
            (r#"{"endpoint": "https://u:p@idp/x", "client_id": "a", "client_secret": "b"}"#.to_owned(), "`endpoint`: `https://u:p@idp/x` has user info"),
            (r#"{"endpoint": "http://idp:99999/", "client_id": "a", "client_secret": "b"}"#.to_owned(), "`endpoint`: `http://idp:99999/` has an invalid port"),
            (r#"{"endpoint": "http://a", "client_id": "", "client_secret": "b"}"#.to_owned(), "`client_id`: empty"),
            (r#"{"endpoint": "http://a", "client_id": "a", "client_secret": ""}"#.to_owned(), "`client_secret`: empty"),
            (with(r#""token_header": "bad name""#), "`token_header`: invalid header name"),
            (with(r#""token_header": "Host""#), "`token_header`: `host` cannot carry a token"),
            (with(r#""token_header": "content-length""#), "`token_header`: `content-length` cannot carry a token"),
            (with(r#""token_query": """#), "`token_query`: empty"),
            (with(r#""token_query": "a&b""#), "`token_query`: `a&b` is not a query parameter name"),
            (with(r#""token_type_hint": "access token""#), "`token_type_hint`: holds spaces"),
            (with(r#""timeout_ms": 0"#), "`timeout_ms` must be at least 1"),
            (with(r#""timeout_ms": 60001"#), "`timeout_ms`: at most 60000"),
            (with(r#""leeway_s": 301"#), "`leeway_s`: at most 300"),
            (with(r#""leeway_s": -1"#), "invalid value: integer `-1`"),
            (with(r#""required_scopes": ["read", "a b"]"#), "`required_scopes[1]`: `a b` is not a scope"),
            (with(r#""required_scopes": ["say\"hi"]"#), "`required_scopes[0]`: `say\"hi` is not a scope"),
            (with(r#""audiences": [""]"#), "`audiences[0]`: empty"),
            (with(r#""issuer": """#), "`issuer`: empty"),
            (with(r#""issuers": []"#), "`issuers`: empty"),
            (with(r#""issuers": ["https://a/", ""]"#), "`issuers[1]`: empty"),
            (with(r#""issuer": "https://a/", "issuers": ["https://b/"]"#), "`issuers`: give `issuer` (one) or `issuers` (a list), not both"),
            (with(r#""issuers": "https://a/""#), "invalid type: string"),
            (with(r#""consumer_claim": """#), "`consumer_claim`: empty"),
            (with(r#""groups_claim": """#), "`groups_claim`: empty"),
            (with(r#""groups_claim": ["groups"]"#), "invalid type: sequence"),
            (with(r#""claims_to_headers": {"sub": "Content-Length"}"#), "`claims_to_headers.sub`: `content-length` is set by the gateway"),
            (with(r#""claims_to_headers": {"sub": "x user"}"#), "`claims_to_headers.sub`: invalid header name"),
            (with(r#""claims_to_headers": {"sub": "host"}"#), "`claims_to_headers.sub`: `host` cannot carry a claim"),
            (with(r#""claims_to_headers": {"a": "x-u", "b": "X-U"}"#), "`claims_to_headers.b`: `x-u` is already the header of claim `a`"),
            (with(r#""claims_to_headers": {"sub": "authorization"}"#), "`claims_to_headers.sub`: `authorization` is `token_header`"),
            (with(r#""claims_to_headers": {"sub": "X-Consumer-Id"}"#), "`claims_to_headers.sub`: `x-consumer-id` names the consumer"),
            (with(r#""token_header": "x-consumer-id""#), "`token_header`: `x-consumer-id` cannot carry a token"),
            (with(r#""cache_ttl_s": 86401"#), "`cache_ttl_s`: at most 86400"),
            (with(r#""negative_cache_ttl_s": 3601"#), "`negative_cache_ttl_s`: at most 3600"),
            (with(r#""realm": "a\"b""#), "`realm`: cannot contain quotes"),
            (with(r#""failure": "maybe""#), "unknown variant `maybe`"),
            (with(r#""ttl": 5"#), "unknown field `ttl`"),
        ];
        for (json, expected) in cases {
            let err = settings(&json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
            if expected.starts_with('`') {
                assert!(err.starts_with(expected), "{json}: {err}");
            }
        }
    }

    #[test]
    fn anonymous_names_a_consumer_the_gateway_handed_over() {
        let consumers = r#""consumers": [{"id": "alice", "credentials": {"keys": ["k"]}}, {"id": "guest", "groups": ["public", "free"]}]"#;
        let s = settings(&with(&format!(r#""anonymous": "guest", {consumers}"#))).unwrap();
        assert_eq!(s.anonymous, Some(Identity { id: "guest".into(), groups: "public,free".into() }));
        assert!(!format!("{s:?}").contains("\"k\""), "credentials are not kept");
        let err = settings(&with(&format!(r#""anonymous": "nobody", {consumers}"#))).unwrap_err();
        assert_eq!(err, "`anonymous`: no consumer with id `nobody` in [[consumers]]");
        // Without the `consumers` grant (or without [[consumers]]) the plugin sees none: say so.
        let err = settings(&with(r#""anonymous": "guest""#)).unwrap_err();
        assert!(err.starts_with("`anonymous`: no consumer with id `guest` in [[consumers]] (this plugin sees"), "{err}");
        assert!(err.contains(r#"capabilities = ["http-client", "consumers"]"#), "{err}");
        // Consumers without `anonymous` are only read, never required.
        assert_eq!(settings(&with(consumers)).unwrap().anonymous, None);
    }

    #[test]
    fn issuer_is_a_list_of_one_and_issuers_drop_repeats() {
        assert_eq!(settings(&with(r#""issuer": "https://a/""#)).unwrap().issuers, ["https://a/"]);
        let s = settings(&with(r#""issuers": ["https://a/", "https://b/", "https://a/"]"#)).unwrap();
        assert_eq!(s.issuers, ["https://a/", "https://b/"]);
        let many = (0..=MAX_LIST).map(|i| format!("\"https://{i}/\"")).collect::<Vec<_>>().join(", ");
        assert!(settings(&with(&format!(r#""issuers": [{many}]"#))).unwrap_err().starts_with("`issuers`: at most 32"));
    }

    #[test]
    fn the_secret_is_read_through_the_resolver_and_its_errors_name_the_key() {
        let config = |secret: &str| -> Config {
            airlock_sdk::serde_json::from_str(&format!(r#"{{"endpoint": "http://a", "client_id": "gw", "client_secret": "{secret}"}}"#)).unwrap()
        };
        let from_file = |value: &str| if value == "file:secret.txt" { Ok("from-file".to_owned()) } else { Err(format!("cannot read `{value}`")) };
        let s = Settings::from_config(config("file:secret.txt"), from_file).unwrap();
        assert_eq!(s.client_authorization, wire::basic_authorization("gw", "from-file"));
        let err = Settings::from_config(config("file:missing"), from_file).unwrap_err();
        assert_eq!(err, "`client_secret`: cannot read `file:missing`");
    }

}
