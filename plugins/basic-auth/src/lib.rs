//! `builtin:basic-auth`: authenticates the caller with HTTP Basic credentials (RFC 7617).
//!
//! ```toml
//! [[consumers]]
//! id = "alice"
//! groups = ["admin"]
//! # One table, or a list of them for several logins.
//! credentials = { basic = { username = "alice", password = "bcrypt:$2b$10$..." } }
//!
//! [[routes.plugins]]
//! plugin = "builtin:basic-auth"
//! [routes.plugins.config]            # every key is optional
//! realm = "airlock"                  # WWW-Authenticate: Basic realm="airlock", charset="UTF-8"
//! hide_credentials = true            # remove `Authorization` before the upstream
//! upstream_headers = true            # send X-Consumer-Id / X-Consumer-Groups upstream
//! anonymous = "guest"                # consumer id used when no valid credentials are presented
//!                                    # (and a request an earlier auth plugin authenticated is left alone: either credential)
//! ```
//!
//! Passwords are stored as one of:
//! - `bcrypt:<hash>`: a `$2a$`/`$2b$`/`$2y$` bcrypt hash (`htpasswd -nbBC 8 user pass`);
//! - `argon2:<PHC string>`: `$argon2id$v=19$m=...,t=...,p=...$salt$hash` (also argon2i/argon2d);
//! - `file:<path>`: any of these, read from that file in the directory granted to the plugin
//!   (`capabilities = ["files"]`, `files = { dir = "..." }`), its newline dropped;
//! - `sha256:<64 hex digits>`: an unsalted SHA-256 of the password (fast: for long random
//!   passwords only);
//! - `plain:<password>` (or any text without a `scheme:` prefix): the password itself, accepted
//!   but warned about in the log at configure. An unknown lower-case `scheme:` prefix is an error.
//!
//! bcrypt reads at most 72 bytes (a password's, then a NUL): a password of 72 bytes or more is
//! refused, never matched on its first 72. argon2 has no such limit.
//!
//! A bcrypt or argon2 check runs inside the sandbox, under the plugin's CPU deadline (`cpu_ms`,
//! 100 ms by default). Measured on a 2-core machine: bcrypt at cost 10 takes just over 100 ms in
//! the sandbox and fails the request (500) with the default deadline; any wrong password for that
//! user does it, so the 500 (where an unknown user gets a 401) also tells which users exist, and
//! with `failure = "open"` it would let the request through unauthenticated. Use cost 8 or below, argon2
//! with modest parameters, or give the plugin a larger deadline through a definition:
//!
//! ```toml
//! [plugins.basic]
//! source = "builtin:basic-auth"
//! cpu_ms = 1000
//! # and in the chain: plugin = "basic"
//! ```
//!
//! Each warm instance remembers (bounded, in memory, as SHA-256 digests) the credentials it has
//! already verified, so a returning client costs one hash, not one bcrypt. Wrong passwords are
//! never remembered: each costs a full check, so put rate limiting in front of public logins.
//!
//! The `Authorization` header is parsed strictly: scheme `Basic` (any case), base64 (padding
//! optional), UTF-8, `user-id:password` split at the first colon. Anything else is a plain 401,
//! never a 500; more than one `Authorization` line is a 400. On success the request context gets `consumer` and `consumer.groups`
//! (comma-joined); `X-Consumer-Id`/`X-Consumer-Groups`/`X-Anonymous-Consumer` sent by the client
//! are always removed, and set by this plugin when `upstream_headers` is on. Without valid
//! credentials the request goes on as `anonymous` if configured (context
//! `consumer.anonymous = "true"`, header `X-Anonymous-Consumer: true`; refused credentials are
//! removed even without `hide_credentials`, as are Basic credentials left unchecked because an
//! earlier auth plugin authenticated the request), otherwise gets a 401
//! with the `WWW-Authenticate` challenge and `{"status":401,"error":"unauthorized","message":...,"request_id":...}`, whose
//! message never says whether the user or the password was wrong. (An unknown user-id is answered
//! without running a password hash, so response timing can tell a known user-id from an
//! unknown one.)

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::cell::RefCell;
use std::collections::HashMap;

#[cfg(target_arch = "wasm32")]
use airlock_sdk::export_plugin;
use airlock_sdk::{Action, Descriptor, Plugin, Request, RequestEdit, ResponseInit};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Verified credentials remembered per warm instance, at most.
const VERIFIED_CACHE_ENTRIES: usize = 1024;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    realm: String,
    hide_credentials: bool,
    upstream_headers: bool,
    anonymous: Option<String>,
    consumers: Vec<Consumer>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            realm: "airlock".to_owned(),
            hide_credentials: true,
            upstream_headers: true,
            anonymous: None,
            consumers: Vec::new(),
        }
    }
}

/// One `[[consumers]]` entry as the gateway hands it over.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Consumer {
    id: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    credentials: Credentials,
}

/// The credential kinds this plugin reads; other kinds belong to other plugins.
#[derive(Debug, Default, Deserialize)]
struct Credentials {
    #[serde(default)]
    basic: OneOrMany,
}

/// `basic = { ... }` or `basic = [{ ... }, ...]`.
#[derive(Debug, Default)]
enum OneOrMany {
    #[default]
    None,
    One(Login),
    Many(Vec<Login>),
}

/// Read by its shape, so a mistyped field is named (`unknown field `pasword`, expected
/// `username` or `password``), where an untagged enum only says no variant matched.
impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Null => Ok(Self::None),
            one @ serde_json::Value::Object(_) => serde_json::from_value(one).map(Self::One).map_err(D::Error::custom),
            many @ serde_json::Value::Array(_) => serde_json::from_value(many).map(Self::Many).map_err(D::Error::custom),
            _ => Err(D::Error::custom("expected `{ username, password }` or a list of them")),
        }
    }
}

/// One user-id and its stored password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

/// A stored password, parsed at configure.
#[derive(Debug)]
enum Stored {
    Bcrypt(String),
    Argon2(String),
    Sha256([u8; 32]),
}

/// Who a request runs as, once authenticated.
#[derive(Debug, Clone)]
struct Identity {
    id: String,
    groups: String,
}

/// The configured plugin.
struct BasicAuth {
    challenge: String,
    hide_credentials: bool,
    upstream_headers: bool,
    anonymous: Option<Identity>,
    /// user-id -> (stored password, consumer index).
    users: HashMap<String, (Stored, usize)>,
    identities: Vec<Identity>,
    /// SHA-256 of `user-id NUL password` of credentials already verified -> consumer index.
    verified: RefCell<HashMap<[u8; 32], usize>>,
}

impl Plugin for BasicAuth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let challenge = format!(
            "Basic realm=\"{}\", charset=\"UTF-8\"",
            quoted(&config.realm).map_err(|e| format!("`realm`: {e}"))?
        );
        let mut identities = Vec::new();
        let mut users: HashMap<String, (Stored, usize)> = HashMap::new();
        for (i, consumer) in config.consumers.iter().enumerate() {
            identities.push(Identity { id: consumer.id.clone(), groups: consumer.groups.join(",") });
            let logins: Vec<(String, &Login)> = match &consumer.credentials.basic {
                OneOrMany::None => Vec::new(),
                OneOrMany::One(login) => vec![(format!("consumers[{i}].credentials.basic"), login)],
                OneOrMany::Many(list) => list
                    .iter()
                    .enumerate()
                    .map(|(k, login)| (format!("consumers[{i}].credentials.basic[{k}]"), login))
                    .collect(),
            };
            for (at, login) in logins {
                if login.username.is_empty() || login.username.contains(':') {
                    return Err(format!("`{at}.username`: must be non-empty and contain no `:` (RFC 7617)"));
                }
                let password = airlock_sdk::files::secret(&login.password).map_err(|e| format!("`{at}.password`: {e}"))?;
                let stored = parse_password(&password).map_err(|e| format!("`{at}.password`: {e}"))?;
                if let Some((_, owner)) = users.get(&login.username) {
                    return Err(format!(
                        "`{at}.username`: `{}` is already a login of consumer `{}`",
                        login.username, config.consumers[*owner].id
                    ));
                }
                users.insert(login.username.clone(), (stored, i));
            }
        }
        let anonymous = match &config.anonymous {
            None => None,
            Some(id) => Some(
                identities
                    .iter()
                    .find(|c| &c.id == id)
                    .cloned()
                    .ok_or_else(|| format!("`anonymous`: no consumer with id `{id}` in [[consumers]]"))?,
            ),
        };
        Ok(Self {
            challenge,
            hide_credentials: config.hide_credentials,
            upstream_headers: config.upstream_headers,
            anonymous,
            users,
            identities,
            verified: RefCell::new(HashMap::new()),
        })
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        // Either credential (two auth plugins with `anonymous`): the first one's consumer stands,
        // and Basic credentials here, never checked, do not go on.
        if self.anonymous.is_some() && req.authenticated_before() {
            if req.header_all("authorization").iter().any(|value| basic_token(value).is_some()) {
                req.remove_header("authorization");
            }
            return Action::Continue;
        }
        airlock_sdk::consumer::remove_forged(req);
        // One `Authorization` line: with two, only one could be checked and the other would
        // reach the upstream unchecked.
        let mut lines = req.header_all("authorization");
        if lines.len() > 1 {
            let answer = ResponseInit::error(400, "bad_request", "more than one Authorization header", &req.request_id());
            return answer.header("www-authenticate", &self.challenge).into();
        }
        let presented = lines.pop().and_then(|value| basic_token(&value));
        let identity = match &presented {
            Some(token) => decode_credentials(token).and_then(|(user, password)| self.verify(&user, &password)),
            None => None,
        };
        if let Some(index) = identity {
            self.admit(req, &self.identities[index], false, self.hide_credentials);
            return Action::Continue;
        }
        if let Some(anonymous) = &self.anonymous {
            // Wrong credentials let through as anonymous are removed whatever
            // `hide_credentials` says: an upstream reading the user name of the credentials it
            // is given must never get ones the gateway refused.
            self.admit(req, anonymous, true, presented.is_some());
            return Action::Continue;
        }
        let message = if presented.is_some() {
            "invalid authentication credentials"
        } else {
            "no Basic credentials found in the request"
        };
        airlock_sdk::consumer::unauthorized(req, "www-authenticate", &self.challenge, message)
    }
}

impl BasicAuth {
    /// The consumer index if `password` is `user`'s.
    fn verify(&self, user: &str, password: &str) -> Option<usize> {
        let (stored, index) = self.users.get(user)?;
        let mut hasher = Sha256::new();
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        let fingerprint: [u8; 32] = hasher.finalize().into();
        if let Some(&cached) = self.verified.borrow().get(&fingerprint) {
            return Some(cached);
        }
        let ok = match stored {
            // bcrypt reads 72 bytes (with the NUL): a longer password would match anything
            // sharing its first 72 (`non_truncating_verify` refuses it instead of truncating).
            Stored::Bcrypt(hash) => bcrypt::non_truncating_verify(password, hash).unwrap_or(false),
            Stored::Argon2(hash) => {
                use argon2::password_hash::{PasswordHash, PasswordVerifier};
                PasswordHash::new(hash)
                    .map(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                    .unwrap_or(false)
            }
            Stored::Sha256(digest) => {
                let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                bool::from(given.ct_eq(digest))
            }
        };
        if !ok {
            return None;
        }
        let mut verified = self.verified.borrow_mut();
        if verified.len() >= VERIFIED_CACHE_ENTRIES {
            verified.clear();
        }
        verified.insert(fingerprint, *index);
        Some(*index)
    }

    /// Names the consumer and, when `hide`, removes `Authorization`: one call into the gateway.
    fn admit(&self, req: &Request, identity: &Identity, anonymous: bool, hide: bool) {
        let naming = airlock_sdk::consumer::naming(&identity.id, &identity.groups, anonymous, self.upstream_headers);
        req.edit(hide.then_some(RequestEdit::RemoveHeader("authorization")).into_iter().chain(naming));
    }
}

/// The token of an `Authorization: Basic <token>` value, if the scheme is Basic.
fn basic_token(value: &[u8]) -> Option<Vec<u8>> {
    let value = value.trim_ascii();
    let split = value.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(value.len());
    let (scheme, rest) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    Some(rest.trim_ascii().to_vec())
}

/// `user-id:password` from a base64 token; `None` if it is not base64, UTF-8, or has no colon.
fn decode_credentials(token: &[u8]) -> Option<(String, String)> {
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = LENIENT.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Parses a configured password (see the crate docs for the schemes).
fn parse_password(password: &str) -> Result<Stored, String> {
    let (scheme, rest) = match password.split_once(':') {
        Some((scheme, rest))
            if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            (Some(scheme), rest)
        }
        _ => (None, password),
    };
    match scheme {
        Some("bcrypt") => {
            let b = rest.as_bytes();
            let valid = b.len() == 60
                && matches!(&b[..4], b"$2a$" | b"$2b$" | b"$2y$" | b"$2x$")
                && b[4].is_ascii_digit()
                && b[5].is_ascii_digit()
                && b[6] == b'$';
            if !valid {
                return Err("`bcrypt:` must be followed by a 60-character `$2b$<cost>$...` bcrypt hash".into());
            }
            Ok(Stored::Bcrypt(rest.to_owned()))
        }
        Some("argon2") => {
            let parsed = argon2::password_hash::PasswordHash::new(rest).map_err(|e| {
                format!("`argon2:` must be followed by an argon2 PHC string ($argon2id$v=19$m=...): {e}")
            })?;
            if !parsed.algorithm.as_str().starts_with("argon2") || parsed.hash.is_none() {
                return Err("`argon2:` must be followed by an argon2 PHC string ($argon2id$v=19$m=...)".into());
            }
            Ok(Stored::Argon2(rest.to_owned()))
        }
        Some("sha256") => {
            let bytes = decode_hex(rest)
                .filter(|b| b.len() == 32)
                .ok_or("`sha256:` must be followed by 64 hex digits (the SHA-256 digest of the password)")?;
            let mut digest = [0; 32];
            digest.copy_from_slice(&bytes);
            Ok(Stored::Sha256(digest))
        }
        Some("plain") | None => {
            if rest.is_empty() {
                return Err("an empty password is not allowed".into());
            }
            warn("a password is stored in plain text; store `bcrypt:`, `argon2:` or `sha256:` hashes instead");
            Ok(Stored::Sha256(Sha256::digest(rest.as_bytes()).into()))
        }
        Some(other) => Err(format!(
            "unknown password scheme `{other}:`; use `bcrypt:`, `argon2:`, `sha256:`, or `plain:` for a password in plain text"
        )),
    }
}

/// A warning in the gateway log (natively, in unit tests, there is no gateway to log to).
fn warn(message: &str) {
    #[cfg(target_arch = "wasm32")]
    airlock_sdk::log::warn(message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = message;
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// Checks that `text` can stand inside a quoted string of a header value.
fn quoted(text: &str) -> Result<&str, String> {
    if text.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(format!("`{text}` cannot contain quotes, backslashes or control characters"));
    }
    Ok(text)
}

#[cfg(target_arch = "wasm32")]
export_plugin!(BasicAuth);

#[cfg(test)]
mod tests {
    use super::*;

    fn build(json: &str) -> Result<BasicAuth, String> {
        airlock_sdk::configure::<BasicAuth>(json)
    }

    #[test]
    fn every_password_scheme_verifies() {
        let bcrypt = bcrypt::hash("b-pass", 4).unwrap();
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // sha256("test")
        let argon = {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let params = argon2::Params::new(64, 1, 1, None).unwrap();
            let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            hasher.hash_password(b"a-pass", &SaltString::from_b64("c2FsdHNhbHQ").unwrap()).unwrap().to_string()
        };
        let json = serde_json::json!({"consumers": [
            {"id": "a", "credentials": {"basic": [{"username": "ub", "password": format!("bcrypt:{bcrypt}")},
                                                  {"username": "us", "password": format!("sha256:{sha}")}]}},
            {"id": "b", "groups": ["g"], "credentials": {"basic": {"username": "up", "password": "plain:p:w"}}},
            {"id": "c", "credentials": {"basic": {"username": "ua", "password": format!("argon2:{argon}")}}},
        ]});
        let plugin = build(&json.to_string()).unwrap();
        assert_eq!(plugin.verify("ub", "b-pass"), Some(0));
        assert_eq!(plugin.verify("ub", "b-pass"), Some(0), "cached");
        assert_eq!(plugin.verify("ub", "b-pasS"), None);
        assert_eq!(plugin.verify("us", "test"), Some(0));
        assert_eq!(plugin.verify("up", "p:w"), Some(1));
        assert_eq!(plugin.verify("up", "p"), None);
        assert_eq!(plugin.verify("nobody", "test"), None);
        assert_eq!(plugin.verify("ua", "a-pass"), Some(2));
        assert_eq!(plugin.verify("ua", "a-pasS"), None);
    }

    /// bcrypt reads only 72 bytes (a password's and its terminating NUL): a longer password is
    /// refused, or anyone knowing its first 72 bytes would pass with any ending.
    #[test]
    fn a_password_beyond_bcrypts_72_bytes_is_refused() {
        let long = format!("{}-secret-suffix", "A".repeat(72));
        let truncated = bcrypt::hash(&long[..71], 4).unwrap();
        let json = serde_json::json!({"consumers": [{"id": "a", "credentials": {"basic": {"username": "u", "password": format!("bcrypt:{truncated}")}}}]});
        let plugin = build(&json.to_string()).unwrap();
        assert_eq!(plugin.verify("u", &long[..71]), Some(0), "71 bytes and bcrypt's NUL: all read");
        assert_eq!(plugin.verify("u", &long), None);
        assert_eq!(plugin.verify("u", &format!("{}anything", "A".repeat(72))), None);
    }

    #[test]
    fn authorization_parsing_is_strict_and_total() {
        assert_eq!(basic_token(b"Basic YTpi"), Some(b"YTpi".to_vec()));
        assert_eq!(basic_token(b"bAsIc   YTpi "), Some(b"YTpi".to_vec()));
        assert_eq!(basic_token(b"Bearer YTpi"), None);
        assert_eq!(basic_token(b"Basic"), Some(Vec::new()));
        assert_eq!(decode_credentials(b"YTpi"), Some(("a".into(), "b".into())));
        assert_eq!(decode_credentials(b"YTpiOmM="), Some(("a".into(), "b:c".into())));
        assert_eq!(decode_credentials(b"YTpiOmM"), Some(("a".into(), "b:c".into())), "padding optional");
        assert_eq!(decode_credentials(b"YWI="), None, "no colon");
        assert_eq!(decode_credentials(b"!!!"), None);
        assert_eq!(decode_credentials(b""), None);
        assert_eq!(decode_credentials(b"/w=="), None, "not UTF-8");
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = build(
            r#"{"consumers": [{"id": "a", "credentials": {"basic": {"username": "u", "password": "bcrypt:x"}}}]}"#,
        )
        .err()
        .unwrap();
        assert!(err.starts_with("`consumers[0].credentials.basic.password`: `bcrypt:`"), "{err}");
        let err =
            build(r#"{"consumers": [{"id": "a", "credentials": {"basic": [{"username": "u:v", "password": "x"}]}}]}"#)
                .err()
                .unwrap();
        assert!(err.starts_with("`consumers[0].credentials.basic[0].username`:"), "{err}");
        let err = build(
            r#"{"consumers": [{"id": "a", "credentials": {"basic": {"username": "u", "password": "md5:abc"}}}]}"#,
        )
        .err()
        .unwrap();
        assert!(err.contains("unknown password scheme `md5:`"), "{err}");
        let err = build(
            r#"{"consumers": [{"id": "a", "credentials": {"basic": {"username": "u", "password": "x"}}},
                              {"id": "b", "credentials": {"basic": {"username": "u", "password": "y"}}}]}"#,
        )
        .err()
        .unwrap();
        assert!(err.contains("already a login of consumer `a`"), "{err}");
        let err = build(
            r#"{"consumers": [{"id": "a", "credentials": {"basic": {"username": "u", "password": "argon2:$x"}}}]}"#,
        )
        .err()
        .unwrap();
        assert!(err.contains("argon2 PHC string"), "{err}");
        // A mistyped field is named, in either shape.
        for basic in [r#"{"username": "u", "pasword": "x"}"#, r#"[{"username": "u", "pasword": "x"}]"#] {
            let err = build(&format!(r#"{{"consumers": [{{"id": "a", "credentials": {{"basic": {basic}}}}}]}}"#)).err().unwrap();
            assert!(err.contains("consumers[0].credentials.basic") && err.contains("unknown field `pasword`"), "{err}");
        }
        let err = build(r#"{"consumers": [{"id": "a", "credentials": {"basic": "u:x"}}]}"#).err().unwrap();
        assert!(err.contains("expected `{ username, password }`"), "{err}");
        assert_eq!(
            build(r#"{"anonymous": "x"}"#).err().unwrap(),
            "`anonymous`: no consumer with id `x` in [[consumers]]"
        );
        assert!(build(r#"{"realm": "a\nb"}"#).err().unwrap().starts_with("`realm`:"));
    }
}
