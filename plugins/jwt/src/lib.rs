//! `builtin:jwt`: verifies a JSON Web Token (RFC 7519, JWS compact form) and names the consumer.
//!
//! ```toml
//! [[consumers]]
//! id = "mobile-app"
//! groups = ["apps"]
//! # Keys bound to a consumer: a token verified with one of them authenticates that consumer.
//! # `issuer` (optional, on any key): tokens verified with this key must carry exactly this `iss`.
//! # Without it, a consumer's key verifies tokens with no `iss` or `iss` = the consumer's id, so
//! # it cannot sign as the identity provider a route's `issuers` trust.
//! credentials = { jwt = [{ kid = "app-2026", alg = "ES256", issuer = "mobile-app", pem = """-----BEGIN PUBLIC KEY-----
//! ...
//! -----END PUBLIC KEY-----""" }] }
//!
//! [[routes.plugins]]
//! plugin = "builtin:jwt"
//! [routes.plugins.config]
//! keys = [                                      # plugin-level keys (no consumer bound)
//!   { kid = "idp-1", alg = "RS256", pem = "-----BEGIN PUBLIC KEY-----..." },
//!   { kid = "hs", alg = "HS256", secret = "at least 32 bytes of secret......" },
//!   { jwk = { kty = "OKP", crv = "Ed25519", x = "...", kid = "ed", alg = "EdDSA" } },
//! ]
//! issuers = ["https://idp.example.com/"]       # `iss` must be one of these (default: not checked)
//! audiences = ["orders-api"]                   # `aud` must contain one of these (default: not checked)
//! required_claims = ["sub", "exp"]             # claims that must be present (default ["exp"])
//! leeway = 30                                  # seconds of clock skew allowed for exp/nbf/iat
//! consumer_claim = "sub"                       # consumer id from this claim (for plugin-level keys)
//! cookie = "session"                           # also read the token from this cookie
//! claims_to_headers = { sub = "x-user-id" }    # upstream headers from verified claims (a client's own removed; a null claim sets none)
//! claims_to_context = { tenant = "tenant" }    # request context entries from claims
//! realm = "airlock"                            # WWW-Authenticate: Bearer realm="airlock"
//! hide_credentials = true                      # remove the token (header or cookie) before the upstream
//! upstream_headers = true                      # X-Consumer-Id / X-Consumer-Groups when a consumer is known
//! anonymous = "guest"                          # consumer id used when no valid token is presented
//!                                              # (and a request an earlier auth plugin authenticated is left alone: either credential)
//! algorithms = ["RS256", "ES256"]              # `alg`s a token may name (default: those of the keys)
//! ```
//!
//! Algorithms: HS256/384/512 (`secret`, or a JWK `kty = "oct"`), RS256/384/512 and PS256/384/512
//! (RSA public key of at least 2048 bits, PEM `PUBLIC KEY`/`RSA PUBLIC KEY` or JWK `kty = "RSA"`),
//! ES256/ES384 (P-256/P-384, PEM or JWK `kty = "EC"`), EdDSA (Ed25519, PEM or JWK `kty = "OKP"`).
//! Every key has exactly one algorithm, given by `alg` (or the JWK's `alg`), checked against its
//! key type at configure; a token is only verified with a key of the algorithm its header names,
//! so `alg: none` and HMAC-with-a-public-key are impossible by construction. A token with a `kid`
//! is verified only with the key of that `kid` (an unknown `kid` is refused); a token without one
//! with every key of its algorithm.
//!
//! Public keys (RS*, PS*, ES*, EdDSA) are handed to the gateway, which verifies signatures natively
//! (`airlock_sdk::crypto`: tens of microseconds instead of milliseconds inside Wasm); HMAC secrets
//! stay in the plugin.
//!
//! Secrets and keys can stay out of `airlock.toml`: `secret_file` and `pem_file` read a file from
//! the directory granted to the plugin (`capabilities = ["files"]`, `files = { dir = "..." }`).
//!
//! JWKS (RFC 7517): `jwks_file = "jwks.json"` (in the granted directory) or
//! `jwks_url = "https://idp.example.com/.well-known/jwks.json"` (its origin granted with
//! `capabilities = ["http-client"]`, `http_client = { allow = ["https://idp.example.com"] }`).
//! Keys are selected by `kid`; those without `alg` get it from their type (EC P-256 ES256, P-384
//! ES384, OKP EdDSA, RSA RS256); `use = "enc"` and symmetric keys are ignored. The keys are
//! reloaded every `jwks_refresh_secs` (default 300), and when a token names an unknown `kid`, at
//! most once per `jwks_min_refresh_secs` (default 10) across all gateways sharing `state`; a
//! failed reload keeps the keys held. A fetched document is shared through `state`. While no
//! document has ever loaded (the identity provider down since the gateway started), a token no
//! key verifies is answered `503` (`auth_unavailable`, `Retry-After: 5`), with or without
//! `anonymous`, not a `401` `invalid_token` telling its client to drop a token that may be
//! valid (its claims, expiry included, cannot be trusted before its signature is checked); a
//! malformed one (not three base64url parts, an algorithm not accepted) is still a `401`.
//!
//! Tokens come from `Authorization: Bearer <token>` (scheme case-insensitive), then from the
//! `cookie` if configured; a request with more than one `Authorization` line, two different
//! tokens in cookies of that name, or one in `Authorization` and another in the cookie is
//! refused with a `400` (`error="invalid_request"`, RFC 6750 3.1): only one could be verified,
//! and the other would reach the upstream unverified. With
//! `hide_credentials` the upstream receives neither: the header is removed, and the token's
//! cookie is taken out of `Cookie` while the other cookies stay. A refused token let through as
//! `anonymous` is removed even without `hide_credentials`, and so is one left unchecked because an
//! earlier auth plugin authenticated the request (either credential). `claims_to_headers` cannot write the
//! consumer headers, `host`, `authorization` or `cookie`, nor `claims_to_context` the consumer's
//! entries (`consumer`, `consumer.*`, `credential`) or `jwt.sub`/`jwt.iss`: a claim is the token
//! holder's to choose, and a consumer's own key signs any claims on every `builtin:jwt` route. Checks: signature, `exp` (required unless removed from
//! `required_claims`) and `nbf` against now ± `leeway`, `iat` not in the future, `iss`, `aud`,
//! `required_claims`. A failure is `401` with `WWW-Authenticate: Bearer realm="<realm>",
//! error="invalid_token"` and `{"status":401,"error":"unauthorized","message":"invalid token","request_id":...}`; the reason
//! is only logged at debug level, never sent.
//!
//! Consumer: the consumer owning the key that verified the token; else, with `consumer_claim`,
//! the consumer whose id is that claim's value (a token naming no known consumer is refused).
//! The context gets `consumer`/`consumer.groups` (as `builtin:key-auth`), plus `jwt.sub` and
//! `jwt.iss` when present.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::collections::BTreeMap;

#[cfg(target_arch = "wasm32")]
use airlock_sdk::export_plugin;
use airlock_sdk::{Action, Descriptor, Plugin, Request, RequestEdit, ResponseInit};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

mod jwks;
mod keys;

use std::cell::RefCell;

use jwks::Jwks;
use keys::{Alg, Key};

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    keys: Vec<keys::KeyConfig>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    required_claims: Vec<String>,
    leeway: u64,
    consumer_claim: Option<String>,
    cookie: Option<String>,
    claims_to_headers: BTreeMap<String, String>,
    claims_to_context: BTreeMap<String, String>,
    realm: String,
    hide_credentials: bool,
    upstream_headers: bool,
    anonymous: Option<String>,
    jwks_file: Option<String>,
    jwks_url: Option<String>,
    jwks_refresh_secs: u64,
    jwks_min_refresh_secs: u64,
    algorithms: Vec<String>,
    consumers: Vec<Consumer>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            issuers: Vec::new(),
            audiences: Vec::new(),
            required_claims: vec!["exp".to_owned()],
            leeway: 30,
            consumer_claim: None,
            cookie: None,
            claims_to_headers: BTreeMap::new(),
            claims_to_context: BTreeMap::new(),
            realm: "airlock".to_owned(),
            hide_credentials: true,
            upstream_headers: true,
            anonymous: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 10,
            algorithms: Vec::new(),
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
    jwt: Vec<keys::KeyConfig>,
}

/// Who a request runs as, once authenticated.
#[derive(Debug, Clone)]
struct Identity {
    id: String,
    groups: String,
}

/// The configured plugin.
struct Jwt {
    /// Keys from the config, each with the index of the consumer it authenticates, if any.
    keys: Vec<(Key, Option<usize>)>,
    /// Keys from a JWKS document (no consumer bound), reloaded as it changes.
    jwks: Option<RefCell<Jwks>>,
    /// The `alg`s a token may name; empty: any algorithm one of the keys has.
    algorithms: Vec<Alg>,
    identities: Vec<Identity>,
    /// Indexes into `identities`, sorted by consumer id: `consumer_claim`'s consumer is found by
    /// binary search, however many consumers there are.
    by_id: Vec<usize>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    required_claims: Vec<String>,
    leeway: i64,
    consumer_claim: Option<String>,
    cookie: Option<String>,
    claims_to_headers: Vec<(String, String)>,
    claims_to_context: Vec<(String, String)>,
    challenge: String,
    hide_credentials: bool,
    upstream_headers: bool,
    anonymous: Option<Identity>,
}

impl Plugin for Jwt {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, key) in config.keys.iter().enumerate() {
            keys.push((key.build().map_err(|e| format!("`keys[{i}]`: {e}"))?, None));
        }
        let mut identities = Vec::new();
        for (c, consumer) in config.consumers.iter().enumerate() {
            identities.push(Identity { id: consumer.id.clone(), groups: consumer.groups.join(",") });
            for (i, key) in consumer.credentials.jwt.iter().enumerate() {
                let key = key
                    .build()
                    .map_err(|e| format!("`consumers[{c}].credentials.jwt[{i}]` (consumer `{}`): {e}", consumer.id))?;
                keys.push((key, Some(c)));
            }
        }
        let mut algorithms = Vec::new();
        for (i, name) in config.algorithms.iter().enumerate() {
            algorithms.push(Alg::parse(name).ok_or_else(|| format!("`algorithms[{i}]`: `{name}` is not a JWS algorithm this plugin verifies"))?);
        }
        if !algorithms.is_empty()
            && let Some((key, _)) = keys.iter().find(|(k, _)| !algorithms.contains(&k.alg))
        {
            return Err(format!("a key has `alg = \"{:?}\"`, which `algorithms` does not allow", key.alg));
        }
        let refresh_ms = config.jwks_refresh_secs.max(1).saturating_mul(1000);
        let min_refresh_ms = config.jwks_min_refresh_secs.saturating_mul(1000);
        let jwks = match (config.jwks_file, config.jwks_url) {
            (Some(_), Some(_)) => return Err("give one of `jwks_file` and `jwks_url`, not both".into()),
            (Some(path), None) => Some(jwks::Source::File(path)),
            (None, Some(url)) => Some(jwks::Source::Url(url)),
            (None, None) => None,
        };
        let jwks = jwks.map(|source| Jwks::load(source, refresh_ms, min_refresh_ms).map(RefCell::new)).transpose()?;
        if keys.is_empty() && jwks.is_none() {
            return Err("no keys: give `keys`, `jwks_file`, `jwks_url`, or `credentials.jwt` keys to [[consumers]]".into());
        }
        for (i, (key, _)) in keys.iter().enumerate() {
            if let Some(kid) = &key.kid
                && keys[..i].iter().any(|(other, _)| other.kid.as_ref() == Some(kid))
            {
                return Err(format!("two keys have the kid `{kid}`; each kid must name one key"));
            }
        }
        let mut claims_to_headers = Vec::new();
        for (claim, header) in &config.claims_to_headers {
            // As `builtin:headers` checks its names: a framing header would only be ignored
            // (and warned about) on every request.
            let header = airlock_sdk::header_rules::settable_header_name(header)
                .map_err(|e| format!("`claims_to_headers.{claim}`: {e}"))?;
            // A claim is the token holder's to choose (a consumer's own key signs any `sub`):
            // it cannot stand in for who the gateway says the caller is, where the request
            // goes, or a credential.
            if airlock_sdk::consumer::HEADERS.contains(&header.as_str()) {
                return Err(format!("`claims_to_headers.{claim}`: `{header}` names the consumer (set from the key or `consumer_claim`, with `upstream_headers`)"));
            }
            if matches!(header.as_str(), "host" | "authorization" | "cookie") {
                return Err(format!("`claims_to_headers.{claim}`: `{header}` cannot carry a claim"));
            }
            claims_to_headers.push((claim.clone(), header));
        }
        for (claim, key) in &config.claims_to_context {
            // Any consumer's own key signs any claims, and is good on every `builtin:jwt` route:
            // a claim copied to `consumer.groups` would choose the holder's own `acl` groups.
            if airlock_sdk::consumer::is_identity_key(key) {
                return Err(format!(
                    "`claims_to_context.{claim}`: `{key}` says who the caller is (set from the key or `consumer_claim`, the consumer's groups from [[consumers]]): a claim is the token holder's to choose"
                ));
            }
            if matches!(key.as_str(), "jwt.sub" | "jwt.iss") {
                return Err(format!("`claims_to_context.{claim}`: `{key}` is set from the token's own `{}`", &key[4..]));
            }
        }
        let realm = &config.realm;
        if realm.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err("`realm`: cannot contain quotes, backslashes or control characters".into());
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
        let mut by_id: Vec<usize> = (0..identities.len()).collect();
        by_id.sort_unstable_by(|&a, &b| identities[a].id.cmp(&identities[b].id));
        Ok(Self {
            keys,
            jwks,
            algorithms,
            identities,
            by_id,
            issuers: config.issuers,
            audiences: config.audiences,
            required_claims: config.required_claims,
            leeway: i64::try_from(config.leeway).map_err(|_| "`leeway`: too large")?,
            consumer_claim: config.consumer_claim,
            cookie: config.cookie,
            claims_to_headers,
            claims_to_context: config.claims_to_context.into_iter().collect(),
            challenge: format!("Bearer realm=\"{realm}\""),
            hide_credentials: config.hide_credentials,
            upstream_headers: config.upstream_headers,
            anonymous,
        })
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        // What the upstream reads as verified claims comes only from a verified token: a
        // client's own `x-user-id` must not pass on the anonymous path either.
        req.edit(self.claims_to_headers.iter().map(|(_, header)| RequestEdit::RemoveHeader(header)));
        // Either credential (two auth plugins with `anonymous`): the first one's consumer stands,
        // and a token here, never checked, does not go on (an upstream could take it for one).
        if self.anonymous.is_some() && req.authenticated_before() {
            let unchecked = match self.find_token(req) {
                Ok(Some((_, from_header))) => self.remove_token(req, from_header),
                Ok(None) => None,
                Err(_) => self.remove_token(req, true),
            };
            if let Some(edit) = unchecked {
                req.edit([edit]);
            }
            return Action::Continue;
        }
        airlock_sdk::consumer::remove_forged(req);
        let (token, from_header) = match self.find_token(req) {
            Ok(Some(found)) => found,
            Ok(None) => return self.fallback(req, None),
            Err(refusal) => return refusal,
        };
        let now = now();
        let (claims, owner) = match self.verify(&token, now) {
            Ok(verified) => verified,
            // No key could be had to check it: the identity provider's outage, not the token's
            // fault (RFC 6750's `invalid_token` makes a client drop a valid token), answered as
            // forward-auth and oauth2-introspection answer theirs.
            Err(reason) if self.jwks.as_ref().is_some_and(|j| j.borrow().never_loaded()) && reason.starts_with(NO_KEY) => {
                debug(&format!("token not checked: {reason}, and the JWKS has not loaded"));
                return ResponseInit::error(503, "auth_unavailable", "the request could not be authenticated now; try again later", &req.request_id())
                    .header("retry-after", JWKS_RETRY_AFTER_SECS.to_string())
                    .into();
            }
            Err(reason) => {
                debug(&format!("token refused: {reason}"));
                return self.fallback(req, Some(from_header));
            }
        };
        let identity = match (owner, &self.consumer_claim) {
            (Some(index), _) => Some(&self.identities[index]),
            (None, Some(claim)) => {
                let value = claims.get(claim).and_then(Value::as_str);
                match value.and_then(|id| self.consumer(id)) {
                    Some(identity) => Some(identity),
                    None => {
                        debug(&format!("token refused: claim `{claim}` names no consumer"));
                        return self.fallback(req, Some(from_header));
                    }
                }
            }
            (None, None) => None,
        };
        let hidden = self.hide_token(req, from_header);
        let naming = identity.map(|identity| airlock_sdk::consumer::naming(&identity.id, &identity.groups, false, self.upstream_headers));
        // A route-level key names no consumer: what follows (a cache keyed by consumer) must
        // still tell this token's holder from another's (`airlock_sdk::consumer::credential`).
        let credential = identity.is_none().then(|| credential_id(&token));
        let (to_headers, to_context) = (claim_texts(&claims, &self.claims_to_headers), claim_texts(&claims, &self.claims_to_context));
        // All of it in one call into the gateway, in this order.
        let edits = hidden
            .into_iter()
            .chain(naming.into_iter().flatten())
            .chain(credential.as_deref().map(|id| RequestEdit::ContextSet(airlock_sdk::consumer::CREDENTIAL, id)))
            .chain([("sub", "jwt.sub"), ("iss", "jwt.iss")].into_iter().filter_map(|(claim, key)| Some(RequestEdit::ContextSet(key, claims.get(claim)?.as_str()?))))
            .chain(to_headers.iter().map(|(header, value)| RequestEdit::SetHeader(header, value.as_bytes())))
            .chain(to_context.iter().map(|(key, value)| RequestEdit::ContextSet(key, value)));
        req.edit(edits);
        Action::Continue
    }
}

impl Jwt {
    /// The token and whether it came from the `Authorization` header. `Err` is the 400 for a
    /// request with several `Authorization` lines (RFC 6750 3.1 `invalid_request`): only one
    /// would be verified, and the others would reach the upstream unverified.
    fn find_token(&self, req: &Request) -> Result<Option<(String, bool)>, Action> {
        let mut lines = req.header_all("authorization");
        if lines.len() > 1 {
            return Err(self.ambiguous(req, "more than one Authorization header"));
        }
        let mut from_header = None;
        if let Some(value) = lines.pop() {
            let value = String::from_utf8_lossy(&value);
            let value = value.trim();
            if let Some((scheme, token)) = value.split_once(' ')
                && scheme.eq_ignore_ascii_case("bearer")
                && !token.trim().is_empty()
            {
                from_header = Some(token.trim().to_owned());
            }
        }
        let Some(name) = self.cookie.as_ref() else { return Ok(from_header.map(|token| (token, true))) };
        // Every token the cookie holds: one verified while another goes on unverified beside it
        // would reach an upstream that reads its session cookie, as two `Authorization` lines.
        let mut from_cookie: Option<String> = None;
        for header in req.header_all("cookie") {
            let header = String::from_utf8_lossy(&header);
            for pair in header.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=')
                    && k.trim() == name
                    && !v.trim().is_empty()
                {
                    let value = v.trim().trim_matches('"');
                    match &from_cookie {
                        Some(seen) if seen != value => return Err(self.ambiguous(req, &format!("more than one `{name}` cookie"))),
                        Some(_) => {}
                        None => from_cookie = Some(value.to_owned()),
                    }
                }
            }
        }
        match (from_header, from_cookie) {
            (Some(header), Some(cookie)) if header != cookie => {
                Err(self.ambiguous(req, &format!("one bearer token in Authorization and another in the `{name}` cookie")))
            }
            (Some(header), _) => Ok(Some((header, true))),
            (None, Some(cookie)) => Ok(Some((cookie, false))),
            (None, None) => Ok(None),
        }
    }

    /// The 400 for a request holding more than one token: only one would be verified, and the
    /// others would reach the upstream unverified.
    fn ambiguous(&self, req: &Request, what: &str) -> Action {
        let challenge = format!("{}, error=\"invalid_request\"", self.challenge);
        ResponseInit::error(400, "bad_request", what, &req.request_id()).header("www-authenticate", challenge).into()
    }

    /// The verified claims and the consumer owning the key, or why the token is refused.
    fn verify(&self, token: &str, now: i64) -> Result<(serde_json::Map<String, Value>, Option<usize>), String> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not three dot-separated parts".into());
        };
        let header: serde_json::Map<String, Value> =
            serde_json::from_slice(&b64(header_b64).ok_or("header is not base64url")?)
                .map_err(|_| "header is not a JSON object")?;
        let alg_name = header.get("alg").and_then(Value::as_str).ok_or("no `alg` in the header")?;
        let alg = Alg::parse(alg_name)
            .filter(|a| self.algorithms.is_empty() || self.algorithms.contains(a))
            .ok_or_else(|| format!("algorithm `{alg_name}` is not accepted"))?;
        if header.get("crit").is_some() {
            return Err("`crit` header parameters are not supported".into());
        }
        let signature = b64(signature_b64).ok_or("signature is not base64url")?;
        let message = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err("`kid` is not a string".into()),
        };
        if let Some(jwks) = &self.jwks {
            jwks.borrow_mut().refresh_if_stale();
        }
        let mut found = self.find_key(kid, alg, message, &signature);
        if matches!(found, Err(KeyMiss::UnknownKid))
            && let Some(jwks) = &self.jwks
            && jwks.borrow_mut().refresh_for_unknown_kid()
        {
            found = self.find_key(kid, alg, message, &signature);
        }
        let (owner, issuer) = found.map_err(|miss| match miss {
            KeyMiss::UnknownKid => format!("{NO_KEY}: unknown `kid`"),
            KeyMiss::BadSignature => format!("{NO_KEY}: bad signature, or no key for this algorithm"),
        })?;
        let claims: serde_json::Map<String, Value> =
            serde_json::from_slice(&b64(payload_b64).ok_or("payload is not base64url")?)
                .map_err(|_| "payload is not a JSON object")?;
        self.check_claims(&claims, now)?;
        let iss = claims.get("iss");
        match (issuer, owner) {
            (Some(issuer), _) if iss.and_then(Value::as_str) != Some(issuer.as_str()) => {
                return Err("`iss` is not the issuer bound to the key".into());
            }
            // A consumer's key speaks for that consumer only: without an `issuer` of its own it
            // may not sign as anyone else (the identity provider whose `iss` the route trusts,
            // say), so its tokens carry no `iss` or the consumer's id (RFC 8725 3.8).
            (None, Some(index)) if iss.is_some_and(|iss| iss.as_str() != self.identities.get(index).map(|c| c.id.as_str())) => {
                return Err("`iss` is not the consumer's: a consumer's key without `issuer` signs tokens with no `iss` or its consumer id".into());
            }
            _ => {}
        }
        Ok((claims, owner))
    }

    /// The consumer with this id.
    fn consumer(&self, id: &str) -> Option<&Identity> {
        let found = self.by_id.binary_search_by(|&i| self.identities.get(i).map_or("", |c| c.id.as_str()).cmp(id)).ok()?;
        self.by_id.get(found).and_then(|&i| self.identities.get(i))
    }

    /// The key that verifies `signature`: its consumer and bound issuer. With a `kid`, only the
    /// key of that `kid` is tried; without, every key of the token's algorithm.
    fn find_key(&self, kid: Option<&str>, alg: Alg, message: &[u8], signature: &[u8]) -> Result<(Option<usize>, Option<String>), KeyMiss> {
        let jwks = self.jwks.as_ref().map(RefCell::borrow);
        let from_jwks = jwks.iter().flat_map(|j| j.keys.iter().map(|k| (k, None)));
        let all = self.keys.iter().map(|(k, owner)| (k, *owner)).chain(from_jwks);
        let mut known_kid = kid.is_none();
        for (key, owner) in all {
            if kid.is_some() && key.kid.as_deref() != kid {
                continue;
            }
            known_kid = true;
            if key.alg == alg && key.verify(message, signature) {
                return Ok((owner, key.issuer.clone()));
            }
        }
        Err(if known_kid { KeyMiss::BadSignature } else { KeyMiss::UnknownKid })
    }

    fn check_claims(&self, claims: &serde_json::Map<String, Value>, now: i64) -> Result<(), String> {
        for claim in &self.required_claims {
            if !claims.contains_key(claim) {
                return Err(format!("claim `{claim}` is missing"));
            }
        }
        let time = |name: &str| -> Result<Option<i64>, String> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v.as_f64().map(|f| Some(f as i64)).ok_or_else(|| format!("`{name}` is not a number")),
            }
        };
        // RFC 7519 4.1.4: refused on or after `exp`.
        if let Some(exp) = time("exp")?
            && now >= exp.saturating_add(self.leeway)
        {
            return Err("expired".into());
        }
        if let Some(nbf) = time("nbf")?
            && now < nbf.saturating_sub(self.leeway)
        {
            return Err("not valid yet".into());
        }
        if let Some(iat) = time("iat")?
            && now < iat.saturating_sub(self.leeway)
        {
            return Err("issued in the future".into());
        }
        if !self.issuers.is_empty() {
            let iss = claims.get("iss").and_then(Value::as_str).ok_or("no `iss`")?;
            if !self.issuers.iter().any(|i| i == iss) {
                return Err("wrong issuer".into());
            }
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => self.audiences.contains(aud),
                Some(Value::Array(list)) => {
                    list.iter().filter_map(Value::as_str).any(|a| self.audiences.iter().any(|x| x == a))
                }
                _ => false,
            };
            if !ok {
                return Err("wrong audience".into());
            }
        }
        Ok(())
    }

    /// Removes the token from where it was found, when `hide_credentials`: a cookie here, the
    /// `authorization` header as the change returned, for the caller to make with its others.
    fn hide_token(&self, req: &Request, from_header: bool) -> Option<RequestEdit<'static>> {
        if !self.hide_credentials {
            return None;
        }
        self.remove_token(req, from_header)
    }

    /// Removes the token from where it was found, whatever `hide_credentials` says: from the
    /// cookie too when it holds the header's token as well (the same one, or the request was
    /// refused).
    fn remove_token(&self, req: &Request, from_header: bool) -> Option<RequestEdit<'static>> {
        if let Some(cookie) = &self.cookie
            && (!from_header || has_cookie(req, cookie))
        {
            strip_cookie(req, cookie);
        }
        from_header.then_some(RequestEdit::RemoveHeader("authorization"))
    }

    /// No valid token (`presented`: one was found, in the header or not): the anonymous
    /// consumer if configured, otherwise 401. A refused token let through as anonymous is
    /// removed whatever `hide_credentials` says: an upstream that reads the token it is given
    /// (why `hide_credentials = false`) must never get one the gateway refused.
    fn fallback(&self, req: &Request, presented: Option<bool>) -> Action {
        if let Some(anonymous) = &self.anonymous {
            let hidden = presented.and_then(|from_header| self.remove_token(req, from_header));
            let naming = airlock_sdk::consumer::naming(&anonymous.id, &anonymous.groups, true, self.upstream_headers);
            req.edit(hidden.into_iter().chain(naming));
            return Action::Continue;
        }
        let (challenge, message) = if presented.is_some() {
            (format!("{}, error=\"invalid_token\"", self.challenge), "invalid token")
        } else {
            (self.challenge.clone(), "no bearer token found in the request")
        };
        airlock_sdk::consumer::unauthorized(req, "www-authenticate", &challenge, message)
    }
}

/// How a refusal for want of a key that verifies begins (told from a malformed or expired
/// token, which no key would make valid).
const NO_KEY: &str = "no key verifies it";

/// `Retry-After` of the 503 while the JWKS has never loaded, in seconds.
const JWKS_RETRY_AFTER_SECS: u64 = 5;

/// Why no key verified a token.
enum KeyMiss {
    /// The token's `kid` names no key held.
    UnknownKid,
    /// No key of the token's `kid` or algorithm verified the signature.
    BadSignature,
}

/// How a verified token that names no consumer is recorded as the request's credential
/// (`airlock_sdk::consumer::credential`): `jwt:` and the token's signature, which tells tokens
/// apart (two tokens share one only if they sign the same header and claims with the same key)
/// and is no credential by itself: later plugins cannot present it without the token's other two
/// parts, which the context never holds. No digest to compute per request.
fn credential_id(token: &str) -> String {
    let signature = token.rsplit('.').next().unwrap_or(token);
    let mut id = String::with_capacity(4 + signature.len());
    id.push_str("jwt:");
    id.push_str(signature);
    id
}

/// Whether the request carries a cookie named `name`.
fn has_cookie(req: &Request, name: &str) -> bool {
    req.header_all("cookie").iter().any(|header| {
        String::from_utf8_lossy(header).split(';').any(|pair| pair.split_once('=').map_or(pair, |(k, _)| k).trim() == name)
    })
}

/// Removes the cookie `name` from the request's `Cookie` headers, keeping the others.
fn strip_cookie(req: &Request, name: &str) {
    let mut kept = Vec::new();
    for header in req.header_all("cookie") {
        let header = String::from_utf8_lossy(&header).into_owned();
        for pair in header.split(';') {
            let pair = pair.trim();
            let key = pair.split_once('=').map_or(pair, |(k, _)| k).trim();
            if !pair.is_empty() && key != name {
                kept.push(pair.to_owned());
            }
        }
    }
    req.remove_header("cookie");
    if !kept.is_empty() {
        req.set_header("cookie", kept.join("; "));
    }
}

/// The text of each claim of `map` (claim, where it goes) the token carries, beside where it goes.
fn claim_texts<'a>(claims: &serde_json::Map<String, Value>, map: &'a [(String, String)]) -> Vec<(&'a str, String)> {
    // A `null` claim is no value: it sets nothing, as an absent one (not the text `null`).
    map.iter().filter_map(|(claim, to)| Some((to.as_str(), claim_text(claims.get(claim).filter(|v| !v.is_null())?)))).collect()
}

/// A claim as header or context text: strings as they are, anything else as JSON.
fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// base64url without padding, as JWS writes every segment (RFC 7515 2): a padded segment is
/// refused, so one token has one spelling.
pub(crate) fn b64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn debug(message: &str) {
    #[cfg(target_arch = "wasm32")]
    airlock_sdk::log::debug(message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = message;
}

#[cfg(target_arch = "wasm32")]
export_plugin!(Jwt);

#[cfg(test)]
mod tests {
    use super::*;

    fn build(json: &str) -> Result<Jwt, String> {
        airlock_sdk::configure::<Jwt>(json)
    }

    fn hs256(secret: &[u8], header: &str, claims: &str) -> String {
        use hmac::Mac;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let message = format!("{}.{}", enc(header), enc(claims));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(message.as_bytes());
        format!("{message}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn hs256_and_claims() {
        let secret = "0123456789abcdef0123456789abcdef";
        let jwt = build(&format!(
            r#"{{"keys": [{{"kid": "k", "alg": "HS256", "secret": "{secret}"}}], "issuers": ["i"], "audiences": ["a"], "leeway": 10}}"#
        ))
        .unwrap();
        let h = r#"{"alg":"HS256","kid":"k"}"#;
        let ok = hs256(secret.as_bytes(), h, r#"{"exp": 1000, "iss": "i", "aud": ["x", "a"]}"#);
        assert!(jwt.verify(&ok, 1005).is_ok());
        assert_eq!(jwt.verify(&ok, 1011).unwrap_err(), "expired");
        // One token, one spelling: a padded segment is not base64url as JWS writes it.
        assert_eq!(jwt.verify(&format!("{ok}=="), 1005).unwrap_err(), "signature is not base64url");
        let wrong = hs256(b"another secret of 32 bytes......", h, r#"{"exp": 1000}"#);
        assert!(jwt.verify(&wrong, 0).is_err());
        let listed = build(&format!(
            r#"{{"algorithms": ["HS256", "HS512"], "keys": [{{"kid": "k", "alg": "HS256", "secret": "{secret}"}}]}}"#
        ))
        .unwrap();
        assert!(listed.verify(&hs256(secret.as_bytes(), h, r#"{"exp": 1000}"#), 0).is_ok());
        let narrowed = build(&format!(
            r#"{{"algorithms": ["HS512"], "keys": [{{"kid": "k", "alg": "HS512", "secret": "{secret}{secret}"}}]}}"#
        ))
        .unwrap();
        assert!(narrowed.verify(&ok, 1005).unwrap_err().contains("not accepted"), "HS256 is not in `algorithms`");
        let unknown = hs256(secret.as_bytes(), r#"{"alg":"HS256","kid":"zz"}"#, r#"{"exp": 1000}"#);
        assert_eq!(jwt.verify(&unknown, 0).unwrap_err(), "no key verifies it: unknown `kid`");
        let none = hs256(secret.as_bytes(), r#"{"alg":"none"}"#, r#"{"exp": 1000}"#);
        assert!(jwt.verify(&none, 0).unwrap_err().contains("not accepted"));
        let aud = hs256(secret.as_bytes(), h, r#"{"exp": 1000, "iss": "i", "aud": "b"}"#);
        assert_eq!(jwt.verify(&aud, 0).unwrap_err(), "wrong audience");
        let nbf = hs256(secret.as_bytes(), h, r#"{"exp": 1000, "nbf": 500, "iss": "i", "aud": "a"}"#);
        assert_eq!(jwt.verify(&nbf, 400).unwrap_err(), "not valid yet");
        let bound =
            build(&format!(r#"{{"keys": [{{"alg": "HS256", "issuer": "i", "secret": "{secret}"}}]}}"#)).unwrap();
        let from_i = hs256(secret.as_bytes(), r#"{"alg":"HS256"}"#, r#"{"exp": 1000, "iss": "i"}"#);
        assert!(bound.verify(&from_i, 0).is_ok());
        let from_j = hs256(secret.as_bytes(), r#"{"alg":"HS256"}"#, r#"{"exp": 1000, "iss": "j"}"#);
        assert_eq!(bound.verify(&from_j, 0).unwrap_err(), "`iss` is not the issuer bound to the key");
        let no_iss = hs256(secret.as_bytes(), r#"{"alg":"HS256"}"#, r#"{"exp": 1000}"#);
        assert!(bound.verify(&no_iss, 0).is_err());
        // A consumer's key without `issuer`: no `iss`, or the consumer's id, never another's
        // (the identity provider's a route trusts).
        let consumer = build(&format!(
            r#"{{"keys": [{{"alg": "HS256", "issuer": "idp", "secret": "{secret}{secret}"}}], "consumers": [{{"id": "app", "credentials": {{"jwt": [{{"alg": "HS256", "secret": "{secret}"}}]}}}}]}}"#
        ))
        .unwrap();
        for (claims, owned) in [(r#"{"exp": 1000}"#, true), (r#"{"exp": 1000, "iss": "app"}"#, true), (r#"{"exp": 1000, "iss": "idp"}"#, false), (r#"{"exp": 1000, "iss": 7}"#, false)] {
            let token = hs256(secret.as_bytes(), r#"{"alg":"HS256"}"#, claims);
            assert_eq!(consumer.verify(&token, 0).is_ok(), owned, "{claims}");
        }
        for bad in ["", "a", "a.b", "a.b.c.d", "!.!.!", "e30.e30.", "e30.e30.e30"] {
            assert!(jwt.verify(bad, 0).is_err(), "{bad}");
        }
    }

    /// `consumer_claim`'s consumer is found by binary search: among thousands of consumers in
    /// scrambled order, each id finds its own, and an id no consumer has finds none.
    #[test]
    fn a_claimed_consumer_is_found_among_thousands() {
        let consumers: Vec<String> = (0..3000).map(|i| (i * 1009) % 3000).map(|n| format!(r#"{{"id": "user-{n}", "groups": ["g{n}"]}}"#)).collect();
        let jwt = build(&format!(
            r#"{{"keys": [{{"alg": "HS256", "secret": "a secret of at least thirty-two bytes"}}], "consumer_claim": "sub", "consumers": [{}]}}"#,
            consumers.join(",")
        ))
        .unwrap();
        for n in [0, 1, 1009, 1500, 2998, 2999] {
            let found = jwt.consumer(&format!("user-{n}")).map(|c| (c.id.clone(), c.groups.clone()));
            assert_eq!(found, Some((format!("user-{n}"), format!("g{n}"))), "user {n}");
        }
        assert!(jwt.consumer("user-3000").is_none() && jwt.consumer("").is_none() && jwt.consumer("user-").is_none());
    }

    #[test]
    fn rfc_example_tokens_verify() {
        // RFC 7515 appendix A.1: HS256 with the example JWK `k`; exp = 1300819380.
        let k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
        let jwt = build(&format!(r#"{{"keys": [{{"jwk": {{"kty": "oct", "k": "{k}", "alg": "HS256"}}}}]}}"#)).unwrap();
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
                     .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
                     .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let (claims, _) = jwt.verify(token, 1300819380).unwrap();
        assert_eq!(claims["iss"], "joe");
        assert_eq!(jwt.verify(token, 1300819380 + 31).unwrap_err(), "expired");
        // RFC 7519 4.1.4: on or after `exp` (with the default 30 s leeway) is too late.
        assert!(jwt.verify(token, 1300819380 + 29).is_ok());
        assert_eq!(jwt.verify(token, 1300819380 + 30).unwrap_err(), "expired");
        // Public-key algorithms are verified by the gateway (host crypto): see its unit tests
        // and tests/tests/auth.rs.
    }

    /// Claims become header and context text: a string as it is, anything else as JSON, and
    /// a `null` or absent claim nothing.
    #[test]
    fn claims_become_text_and_null_is_nothing() {
        let claims = serde_json::json!({"sub": "bob", "n": 7, "roles": ["a", "b"], "gone": null});
        let claims = claims.as_object().expect("an object");
        let map: Vec<(String, String)> =
            ["sub", "n", "roles", "gone", "absent"].iter().map(|c| ((*c).to_owned(), format!("x-{c}"))).collect();
        let texts: Vec<(&str, String)> = claim_texts(claims, &map);
        assert_eq!(texts, [("x-sub", "bob".to_owned()), ("x-n", "7".to_owned()), ("x-roles", r#"["a","b"]"#.to_owned())]);
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |json: &str| build(json).err().unwrap();
        assert!(err("{}").starts_with("no keys"));
        assert!(err(r#"{"keys": [{"alg": "none", "secret": "x"}]}"#).starts_with("`keys[0]`:"));
        assert!(
            err(r#"{"keys": [{"alg": "RS256", "secret": "0123456789abcdef0123456789abcdef"}]}"#)
                .starts_with("`keys[0]`:")
        );
        assert!(err(r#"{"keys": [{"alg": "HS256", "secret": "short"}]}"#).contains("at least"));
        assert!(err(r#"{"jwks_file": "a", "jwks_url": "b"}"#).contains("not both"));
        assert!(err(r#"{"algorithms": ["none"], "keys": []}"#).starts_with("`algorithms[0]`: `none`"));
        assert!(
            err(r#"{"algorithms": ["RS256"], "keys": [{"alg": "HS256", "secret": "0123456789abcdef0123456789abcdef"}]}"#)
                .contains("`algorithms` does not allow")
        );
        assert!(
            err(r#"{"keys": [{"alg": "HS256", "secret": "0123456789abcdef0123456789abcdef", "pem": "x"}]}"#)
                .starts_with("`keys[0]`:")
        );
        let key = r#""keys": [{"alg": "HS256", "secret": "0123456789abcdef0123456789abcdef"}]"#;
        assert_eq!(
            err(&format!(r#"{{{key}, "claims_to_headers": {{"sub": "Content-Length"}}}}"#)),
            "`claims_to_headers.sub`: `content-length` is set by the gateway for each hop (message framing and connection), not by plugins"
        );
        assert!(err(&format!(r#"{{{key}, "claims_to_headers": {{"sub": "x user"}}}}"#)).starts_with("`claims_to_headers.sub`: invalid header name"));
        assert!(build(&format!(r#"{{{key}, "claims_to_headers": {{"sub": "X-User-Id"}}}}"#)).is_ok());
        // A claim cannot stand in for the consumer the gateway names, a credential or the host.
        for header in ["X-Consumer-Id", "x-consumer-groups", "x-anonymous-consumer", "authorization", "host", "cookie"] {
            let message = err(&format!(r#"{{{key}, "claims_to_headers": {{"sub": "{header}"}}}}"#));
            assert!(message.starts_with("`claims_to_headers.sub`: `") && message.contains(&header.to_ascii_lowercase()), "{message}");
        }
        // Nor can it say who the caller is to what reads the context (acl, quota, rate-limit
        // plans): a consumer's own key signs any claims.
        for entry in ["consumer", "consumer.groups", "consumer.anonymous", "credential", "jwt.sub", "jwt.iss"] {
            let message = err(&format!(r#"{{{key}, "claims_to_context": {{"groups": "{entry}"}}}}"#));
            assert!(message.starts_with(&format!("`claims_to_context.groups`: `{entry}`")), "{message}");
        }
        assert!(build(&format!(r#"{{{key}, "claims_to_context": {{"tenant": "tenant", "groups": "jwt.groups", "c": "consumers"}}}}"#)).is_ok());
    }
}
