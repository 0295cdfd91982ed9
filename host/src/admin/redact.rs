//! The effective config as the admin API shows it: every value the gateway runs with, secrets
//! replaced by `[redacted]` (consumer credentials, the Redis password, the admin token, and any
//! key in a plugin's config whose name says it holds a secret, credential headers included).

use serde_json::Value;

use crate::config::Config;

/// What a secret is replaced by.
pub const REDACTED: &str = "[redacted]";

/// What an error's excerpt of a config line shows in place of a value that may hold a secret:
/// plainly not the line's TOML.
const REDACTED_VALUE: &str = "<value redacted>";

/// Parts of key names that mark a value as secret: config keys, and the header names a
/// `headers` or `transform` rule may set (`"authorization" = "Bearer ..."`).
const SECRET_KEY_PARTS: [&str; 22] = [
    "secret",
    "password",
    "passwd",
    "passphrase",
    "token",
    "credential",
    "private",
    "api_key",
    "api-key",
    "apikey",
    // `authorization`, `authentication`, `x-auth`, `x-auth-key` (not bare `auth`: the
    // gateway's own `auth_failure_threshold` holds no secret).
    "authori",
    "authenti",
    "x-auth",
    "cookie",
    "session",
    "signature",
    "bearer",
    // Cloud providers' header and parameter names (`Ocp-Apim-Subscription-Key`,
    // `x-functions-key`, `X-Amz-Security-Token` is `token`), `access_key` and `AccessKey`.
    "subscription-key",
    "functions-key",
    "access_key",
    "access-key",
    "accesskey",
];

/// Names that are secrets whole but too short to look for inside others (`key` in `monkey`):
/// a query parameter `key` (Google's API keys) or `sig` (Azure SAS), a JWT entry's `key`. Also
/// secrets as one word of a name split at `-`, `_` and `.` (`x-internal-key`, `x-signing-key`,
/// `x-service-psk`).
const SECRET_KEY_NAMES: [&str; 5] = ["key", "sig", "sid", "jwt", "psk"];

/// Keys an error's excerpt of a line never shows the value of, though `/admin/config` (which
/// redacts the values under them one by one) shows their other parts: a consumer's `keys` (API
/// keys) and `consumers` (a plugin config listing consumers inline with their credentials,
/// refused, and the error quotes the line).
const EXCERPT_SECRET_NAMES: [&str; 2] = ["keys", "consumers"];

/// Endings of config keys that say where a secret is found or kept, not what it is: the value
/// of `token_header`, `token_query`, `consumer_claim`, `token_type_hint` or `token_file` is a
/// name or a path (`authorization`, `access_token`, `secrets/token`), shown as any other.
const LOCATION_KEY_ENDINGS: [&str; 7] = ["_header", "_headers", "_query", "_param", "_claim", "_hint", "_file"];

/// The gateway's own config keys that hold a part of [`SECRET_KEY_PARTS`] but no secret:
/// `upstreams.<name>.hash_cookie` (a cookie's path and lifetime). Taken out of a key before it is
/// searched, so a key that also names a secret (`hash_cookie_secret`) is still one.
const SETTING_WORDS: [&str; 1] = ["hash_cookie"];

/// Whether a config key (or a header or parameter name a rule sets) names a secret.
pub fn names_secret(key: &str) -> bool {
    let mut lower = key.to_ascii_lowercase();
    for word in SETTING_WORDS {
        lower = lower.replace(word, "");
    }
    let lower = lower.trim();
    if LOCATION_KEY_ENDINGS.iter().any(|ending| lower.ends_with(ending)) {
        return false;
    }
    SECRET_KEY_PARTS.iter().any(|part| lower.contains(part)) || lower.split(['-', '_', '.']).any(|word| SECRET_KEY_NAMES.contains(&word))
}

/// A config file's line as an error shows it, with its value redacted when its key, or the
/// key path the error is about, names a secret: error messages reach logs and the admin API's
/// reload answer, where `/admin/config` would have redacted the same value.
pub fn redacted_line(key_path: &str, line: &str) -> String {
    let Some((key, value)) = line.split_once('=') else { return line.to_owned() };
    // `redis_url` may carry a password (the admin API redacts just that part of it), and so
    // may any URL written with user info (`otlp.endpoint`, refused for it).
    // A JWK written inline (`jwk = { kty = "oct", k = "..." }`) may hold a key's secret part.
    // An inline table (`config = { realm = 5, client_secret = "..." }`) is redacted whole when
    // a key inside it names a secret: the error may be about another of its keys.
    if matches!(value.trim(), "true" | "false") {
        return line.to_owned();
    }
    if names_secret(key_path)
        || names_secret(key)
        || key.trim() == "redis_url"
        || has_url_user_info(value)
        || line.contains("kty")
        || inline_keys(line).iter().any(|k| names_secret(k) || EXCERPT_SECRET_NAMES.contains(k))
    {
        // Not written as TOML: a quoted "[redacted]" read as a line of the operator's file.
        format!("{} = {REDACTED_VALUE}", key.trim_end())
    } else {
        line.to_owned()
    }
}

/// Whether an "unknown field `field`" error (`message`, serde's, which lists the expected
/// fields) is about a misspelt secret: the field names one, or the expected field nearest to it,
/// at most two edits away, the one the operator most likely meant, does (`tokn` for `token`,
/// `pasword` for `password`).
pub fn unknown_field_is_secret(field: &str, message: &str) -> bool {
    if names_secret(field) {
        return true;
    }
    let Some((_, expected)) = message.split_once("expected") else { return false };
    let nearest = expected.split('`').skip(1).step_by(2).min_by_key(|name| strsim::levenshtein(field, name));
    nearest.is_some_and(|name| strsim::levenshtein(field, name) <= 2 && names_secret(name))
}

/// A config line an "unknown field `field`" error shows: when the line is that key's own
/// (`tokn = "..."`), its value redacted whatever the key, since a misspelt secret's key (`tokn`,
/// `pasword`, `api_kye`) does not read as one, and the key, not its value, is what the operator
/// has to fix. Other lines (an inline table holding the key) as [`redacted_line`] shows them;
/// `true` and `false` are kept, as there.
pub fn redacted_unknown_key_line(key_path: &str, field: &str, line: &str) -> String {
    match line.split_once('=') {
        Some((key, value)) if key.trim().trim_matches('"') == field && !matches!(value.trim(), "true" | "false") => {
            format!("{} = {REDACTED_VALUE}", key.trim_end())
        }
        _ => redacted_line(key_path, line),
    }
}

/// An error message about the value at `key_path`, with the value taken out when the key names a
/// secret: serde quotes what it refuses (`invalid type: string "sk-live-...", expected a
/// sequence`), and the message reaches logs and the admin API's reload answer as the line does.
pub fn redacted_message(key_path: &str, message: &str) -> String {
    // A consumer's `keys` (API keys); not `consumers` itself, whose `groups` and `id` are shown.
    if !names_secret(key_path) && !key_path.split(['.', '[', ']']).any(|s| s == "keys") {
        return message.to_owned();
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        // serde's echoes of a refused value: `string "..."` (JSON-escaped), `integer `...``,
        // `floating point `...``.
        let found = ["string \"", "integer `", "floating point `"].iter().filter_map(|m| rest.find(m).map(|at| (at, *m))).min();
        let Some((at, marker)) = found else { break };
        let value_start = at + marker.len();
        let close = if marker.ends_with('"') { '"' } else { '`' };
        let mut escaped = false;
        let end = rest[value_start..].char_indices().find_map(|(i, c)| {
            let end = (c == close && !escaped).then_some(value_start + i);
            escaped = close == '"' && c == '\\' && !escaped;
            end
        });
        let Some(end) = end else { break };
        out.push_str(&rest[..at]);
        out.push_str(marker.trim_end_matches(['"', '`']));
        out.push_str(REDACTED_VALUE);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether `text` holds a URL with user info (`scheme://user:password@host`): a config line's
/// value, or a URL alone.
pub(crate) fn has_url_user_info(text: &str) -> bool {
    text.split("://").skip(1).any(|rest| rest.split(['/', '"', '\'', ' ', '?', '#']).next().is_some_and(|authority| authority.contains('@')))
}

/// The keys of the `key = value` pairs on a TOML line (inline tables' included), quotes
/// stripped; an `=` inside a string is not one.
fn inline_keys(line: &str) -> Vec<&str> {
    let mut keys = Vec::new();
    let (mut quote, mut escaped, mut key_start) = (None, false, 0);
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | ',' | '[') => key_start = i + 1,
            (None, '=') => {
                keys.push(line[key_start..i].trim().trim_matches(['"', '\'']));
                key_start = i + 1;
            }
            (None, _) => {}
        }
        escaped = false;
    }
    keys
}

/// `config` as JSON with its secrets redacted.
pub fn redacted_config(config: &Config) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Some(consumers) = value.get_mut("consumers").and_then(Value::as_array_mut) {
        for consumer in consumers {
            if let Some(credentials) = consumer.get_mut("credentials") {
                redact_all(credentials);
            }
        }
    }
    if let Some(url) = value.pointer_mut("/state/redis_url")
        && let Some(text) = url.as_str()
    {
        *url = Value::String(redact_url_password(text));
    }
    if let Some(token) = value.pointer_mut("/admin/token")
        && !token.is_null()
    {
        *token = Value::String(REDACTED.into());
    }
    redact_secret_keys(&mut value);
    value
}

/// Replaces every leaf under `value`, keeping the shape (so an operator still sees which kinds
/// of credentials a consumer has). A boolean is no secret and stays: `trust.require_signatures`
/// is a setting a security reviewer reads, not a signature.
fn redact_all(value: &mut Value) {
    match value {
        Value::Object(map) => map.values_mut().for_each(redact_all),
        Value::Array(items) => items.iter_mut().for_each(redact_all),
        Value::Null | Value::Bool(_) => {}
        leaf => *leaf = Value::String(REDACTED.into()),
    }
}

/// The members of a JSON Web Key (RFC 7517/7518) that hold its secret: an HMAC key's `k`, and a
/// private RSA, EC or OKP key's parts. A JWK says what it is with `kty`.
const JWK_SECRET_MEMBERS: [&str; 8] = ["k", "d", "p", "q", "dp", "dq", "qi", "oth"];

/// Whether a value reads as an HTTP credential whatever key holds it: `Basic ...`, `Bearer ...`,
/// `Digest ...` (a rule setting `x-upstream-auth = "Basic dXNlcjpwYXNz"`, say).
fn is_credential_value(text: &str) -> bool {
    let scheme = text.split_once(' ').map_or("", |(scheme, _)| scheme);
    ["basic", "bearer", "digest"].iter().any(|s| scheme.eq_ignore_ascii_case(s))
}

/// Redacts, anywhere in the tree, values under keys that name a secret, values that read as a
/// credential, and the secret members of anything shaped as a JWK.
pub(crate) fn redact_secret_keys(value: &mut Value) {
    match value {
        Value::String(text) if is_credential_value(text) => *value = Value::String(REDACTED.into()),
        Value::String(text) if text.contains("://") && text.contains('?') => *text = redact_url_query(text),
        Value::Object(map) => {
            let jwk = map.contains_key("kty");
            for (key, inner) in map.iter_mut() {
                if names_secret(key) || (jwk && JWK_SECRET_MEMBERS.contains(&key.as_str())) {
                    redact_all(inner);
                } else {
                    redact_secret_keys(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_secret_keys),
        _ => {}
    }
}

/// A URL as a log line may show it: a password and secret-named query parameters redacted, as
/// `/admin/config` shows them (logs reach more readers than the token-guarded admin API).
pub fn redacted_url(url: &str) -> String {
    redact_url_password(&redact_url_query(url))
}

/// A URL with the values of its query parameters whose names say they hold a secret redacted
/// (`https://auth/check?access_token=...&apikey=...`: a forward-auth `url`, an OTLP endpoint).
fn redact_url_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let (query, fragment) = query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if names_secret(name) => format!("{name}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{base}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// `redis://user:secret@host` becomes `redis://user:[redacted]@host`.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let redacted = if userinfo.contains(':') || !user.is_empty() { format!("{user}:{REDACTED}") } else { String::new() };
    format!("{scheme}://{redacted}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::ConfigSource;

    #[test]
    fn a_misspelt_secrets_value_is_not_shown_by_its_unknown_field_error() {
        let admin = "unknown field `tokn`, expected one of `enabled`, `address`, `token`, `token_file`";
        assert!(unknown_field_is_secret("tokn", admin));
        assert!(!unknown_field_is_secret("adress", &admin.replace("tokn", "adress")));
        let route = "unknown field `upstrem`, expected one of `id`, `upstream`, `plugins`";
        assert!(!unknown_field_is_secret("upstrem", route));
        assert!(unknown_field_is_secret("clinet_secret", "unknown field `clinet_secret`, expected `client_id` or `client_secret`"));
        assert!(unknown_field_is_secret("api_token", "unknown field `api_token`"));
        assert!(!unknown_field_is_secret("colour", "unknown field `colour`"));
        assert_eq!(redacted_unknown_key_line("admin.tokn", "tokn", "tokn = \"s3cr3t\""), "tokn = <value redacted>");
        assert_eq!(redacted_unknown_key_line("x.api_kye", "api_kye", "  api_kye=\"k\"  # note"), "  api_kye = <value redacted>");
        assert_eq!(redacted_unknown_key_line("x.enabeld", "enabeld", "enabeld = true"), "enabeld = true");
        // Another key's line (an inline table holding the unknown key) is shown as usual.
        let inline = "mirror = { upstream = \"shadow\", ratio = 0.5 }";
        assert_eq!(redacted_unknown_key_line("routes[0].mirror.ratio", "ratio", inline), inline);
        assert_eq!(redacted_unknown_key_line("admin.tokn", "tokn", "[admin]"), "[admin]");
    }

    #[test]
    fn a_refused_secret_is_not_quoted_back_in_the_message() {
        let said = "`keys`: invalid type: string \"sk-live-\\\"12\", expected a sequence";
        assert_eq!(
            redacted_message("consumers[0].credentials.keys", said),
            "`keys`: invalid type: string <value redacted>, expected a sequence"
        );
        assert_eq!(redacted_message("admin.token", "invalid type: integer `1234`, expected a string"), "invalid type: integer <value redacted>, expected a string");
        assert_eq!(redacted_message("keys[0].secret", "floating point `1.5` and string \"x\""), "floating point <value redacted> and string <value redacted>");
        // Other keys' values are quoted, as they help.
        let status = "invalid type: string \"200\", expected u16";
        assert_eq!(redacted_message("routes[0].plugins[0].config.status", status), status);
        let groups = "invalid type: string \"admin\", expected a sequence";
        assert_eq!(redacted_message("consumers[0].groups", groups), groups);
        assert_eq!(redacted_message("keys", "string \"unclosed"), "string \"unclosed");
    }

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let text = r#"
[admin]
token = "admin-secret-1"
[trust]
require_signatures = true
[state]
backend = "redis"
redis_url = "redis://app:redis-secret-2@127.0.0.1:6379/0"
[[consumers]]
id = "alice"
credentials = { keys = ["alice-key-3"], basic = { password = "pw-4" } }
[[routes]]
path = "/"
[[routes.plugins]]
plugin = "builtin:jwt"
config = { hs256_secret = "jwt-secret-5", issuer = "me", keys = [{ jwk = { kty = "oct", k = "jwk-secret-8", kid = "o1" } }, { jwk = { kty = "EC", crv = "P-256", x = "public-x", d = "jwk-private-9" } }] }
[[routes.plugins]]
plugin = "builtin:headers"
[routes.plugins.config.request.set]
"Authorization" = "Bearer upstream-secret-6"
"x-api-key" = "upstream-key-7"
"x-tenant" = "acme"
"x-upstream-auth" = "Basic upstream-basic-10"
"#;
        let config = ConfigSource::inline("a.toml", text, PathBuf::new()).parse().unwrap();
        let value = redacted_config(&config);
        let shown = value.to_string();
        for secret in ["admin-secret-1", "redis-secret-2", "alice-key-3", "pw-4", "jwt-secret-5", "upstream-secret-6", "upstream-key-7", "jwk-secret-8", "jwk-private-9", "upstream-basic-10"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert_eq!(value["state"]["redis_url"], "redis://app:[redacted]@127.0.0.1:6379/0");
        assert_eq!(value["consumers"][0]["id"], "alice");
        assert_eq!(value["consumers"][0]["credentials"]["keys"][0], REDACTED);
        assert_eq!(value["routes"][0]["plugins"][0]["config"]["issuer"], "me");
        assert_eq!(value["routes"][0]["plugins"][0]["config"]["keys"][0]["jwk"]["kid"], "o1");
        assert_eq!(value["routes"][0]["plugins"][0]["config"]["keys"][1]["jwk"]["x"], "public-x", "a public key's parts are shown");
        assert_eq!(value["routes"][0]["plugins"][1]["config"]["request"]["set"]["x-tenant"], "acme");
        assert_eq!(value["trust"]["require_signatures"], true, "a boolean is a setting, never a secret");
        assert_eq!(redacted_line("trust.require_signatures", "require_signatures = true"), "require_signatures = true");
        let url = r#"endpoint = "http://u:p@collector:4318/v1/traces""#;
        assert_eq!(redacted_line("otlp.endpoint", url), "endpoint = <value redacted>", "a URL's user info is never shown");
        assert_eq!(redacted_line("otlp.endpoint", r#"endpoint = "http://collector:4318/v1/traces?a=b@c""#), r#"endpoint = "http://collector:4318/v1/traces?a=b@c""#);
    }

    #[test]
    fn the_names_cloud_apis_give_their_secrets_are_secrets() {
        for name in [
            "Ocp-Apim-Subscription-Key",
            "x-functions-key",
            "x-auth",
            "authentication",
            "access_key",
            "AccessKey",
            "key",
            "sig",
            "X-Session-Id",
            "signature",
            "x-internal-key",
            "x-signing-key",
            "x-service-psk",
            "upstream.key",
        ] {
            assert!(names_secret(name), "{name}");
        }
        for name in ["x-tenant", "issuer", "monkey", "design", "status", "limits", "path", "auth_failure_threshold", "x-keyword", "keys-per-page"] {
            assert!(!names_secret(name), "{name}");
        }
    }

    #[test]
    fn keys_saying_where_a_secret_is_are_not_secrets() {
        for name in ["token_header", "token_query", "consumer_claim", "token_type_hint", "token_file", "redis_password_file", "secret_file"] {
            assert!(!names_secret(name), "{name}");
        }
        for name in ["client_secret", "token", "access_token", "x-api-token", "password"] {
            assert!(names_secret(name), "{name}");
        }
    }

    #[test]
    fn inline_consumers_and_their_keys_are_never_quoted() {
        let line = r#"config = { consumers = [{ id = "bob", keys = ["sk_live_SECRET123"] }] }"#;
        assert_eq!(redacted_line("routes[0].plugins[0].config.consumers", line), "config = <value redacted>");
        let line = r#"credentials = { keys = ["k1"] }"#;
        assert_eq!(redacted_line("consumers[0].id", line), "credentials = <value redacted>");
    }

    #[test]
    fn an_upstreams_hash_cookie_is_a_setting_not_a_secret() {
        for name in ["hash_cookie", "upstreams.web.hash_cookie", "upstreams.web.hash_cookie.path"] {
            assert!(!names_secret(name), "{name}");
        }
        for name in ["hash_cookie_secret", "session_cookie", "cookie"] {
            assert!(names_secret(name), "{name}");
        }
        let line = "hash_cookie = { path = \"/app\", max_age_s = 3600 }";
        assert_eq!(redacted_line("upstreams.web.hash_cookie.path", line), line);
    }

    #[test]
    fn an_error_line_holding_a_secret_is_redacted() {
        assert_eq!(redacted_line("admin.token", "token = \"\""), "token = <value redacted>");
        assert_eq!(
            redacted_line("consumers[0].credentials.keys[0]", "credentials = { keys = [\"sha256:zz\"] }"),
            "credentials = <value redacted>"
        );
        assert_eq!(redacted_line("routes[0].plugins[0].config", "  secret = 5"), "  secret = <value redacted>");
        assert_eq!(redacted_line("limits.max_headers", "max_headers = \"many\""), "max_headers = \"many\"");
        assert_eq!(
            redacted_line("routes[0].plugins[0].config", "config = { keys = [{ jwk = { kty = \"oct\", k = \"s\" } }] }"),
            "config = <value redacted>"
        );
        assert_eq!(redacted_line("routes[1]", "[[routes]]"), "[[routes]]");
        // The error is about `realm`, but the line holds a secret too.
        assert_eq!(
            redacted_line("routes[0].plugins[0].config", "config = { realm = 5, client_secret = \"hunter2\" }"),
            "config = <value redacted>"
        );
        assert_eq!(
            redacted_line("routes[0].plugins[0].config", "config = { realm = \"a = b, password = c\", x = 1 }"),
            "config = { realm = \"a = b, password = c\", x = 1 }",
            "a key-like text inside a string is not a key"
        );
        assert_eq!(redacted_line("routes[0].plugins[0].config", "config = { \"client_secret\" = \"s\" }"), "config = <value redacted>");
    }

    #[test]
    fn secret_query_parameters_of_a_url_are_redacted() {
        let mut config = serde_json::json!({ "url": "http://auth.internal/check?access_token=qs-secret-1&apikey=qs2&tenant=acme#f" });
        redact_secret_keys(&mut config);
        assert_eq!(config["url"], "http://auth.internal/check?access_token=[redacted]&apikey=[redacted]&tenant=acme#f");
        let mut plain = serde_json::json!({ "url": "http://h/v1/traces?x=1" });
        redact_secret_keys(&mut plain);
        assert_eq!(plain["url"], "http://h/v1/traces?x=1");
    }

    #[test]
    fn urls_without_passwords_are_unchanged() {
        assert_eq!(redact_url_password("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url_password("redis://:pw@h:1"), "redis://:[redacted]@h:1");
    }
}
