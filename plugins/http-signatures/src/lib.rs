//! `builtin:http-signatures`: verifies an HTTP Message Signature (RFC 9421) on the request and
//! names the consumer, so partners and services authenticate by signing requests (what Kong's
//! hmac-auth or AWS SigV4 give, on the IETF standard).
//!
//! ```toml
//! [[consumers]]
//! id = "partner-a"
//! groups = ["partners"]
//! # Keys bound to a consumer: a signature verified with one of them authenticates that consumer.
//! # A shared secret (`openssl rand -base64 64`), and a public key of the partner's (here RFC 9421's
//! # test key).
//! credentials = { http_signatures = [
//!   { keyid = "partner-a-2026", alg = "hmac-sha256", secret_base64 = "UmVwbGFjZSB0aGlzIHdpdGggNjQgcmFuZG9tIGJ5dGVzOiBvcGVuc3NsIHJhbmQgLWJhc2U2NCA2NA==" },
//!   { keyid = "partner-a-ed", alg = "ed25519", pem = """-----BEGIN PUBLIC KEY-----
//! MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
//! -----END PUBLIC KEY-----""" },
//! ] }
//!
//! [[routes.plugins]]
//! plugin = "builtin:http-signatures"
//! [routes.plugins.config]                        # every key is optional
//! keys = [                                       # plugin-level keys (no consumer bound)
//!   { keyid = "billing", alg = "ecdsa-p256-sha256", pem_file = "keys/billing.pem" },
//! ]
//! required_components = ["@method", "@target-uri"]   # the default
//! content_digest = "required"                    # or "if-signed", "off" (below)
//! max_age_s = 300                                # a signature's `created` at most this old
//! leeway_s = 30                                  # clock skew allowed on `created` and `expires`
//! require_nonce = false                          # true: every signature carries a single-use `nonce`
//! label = "sig1"                                 # verify this label only (default: below)
//! tag = "partner-api"                            # the signature's `tag` must be this (default: not checked)
//! structured_fields = { "x-dict" = "dictionary" } # types for `;sf` on fields not known already
//! hide_credentials = false                       # true: remove Signature/Signature-Input before the upstream
//! upstream_headers = true                        # X-Consumer-Id / X-Consumer-Groups when a consumer is known
//! anonymous = "guest"                            # consumer id used when no valid signature is presented
//! www_authenticate = 'Signature realm="partners"' # the 401's challenge (default `Signature`)
//!                                                # (and a request an earlier auth plugin authenticated is left alone)
//! ```
//!
//! Keys (`keys[i]` and consumers' `credentials.http_signatures[i]`, one shape): `keyid` (the
//! `keyid` signers write, unique across all keys), `alg` (RFC 9421 3.3: `hmac-sha256`,
//! `rsa-pss-sha512`, `rsa-v1_5-sha256`, `ecdsa-p256-sha256`, `ecdsa-p384-sha384`, `ed25519`) and
//! exactly one of `secret` (text), `secret_base64` or `secret_file` for `hmac-sha256` (at least 32
//! bytes: refused shorter), or `pem`, `pem_file` or `jwk` for the others (RSA of at least 2048
//! bits). Every key has its one algorithm: a signature whose `alg` parameter names another is
//! refused, so an HMAC-with-a-public-key confusion cannot happen. HMAC is computed in the plugin
//! and compared in constant time; public-key signatures are verified natively by the gateway
//! (`airlock_sdk::crypto`). `secret_file` and `pem_file` read the directory granted to the plugin
//! (`capabilities = ["files"]`, `files = { dir = "..." }`).
//!
//! Which signature: with `label`, the one of that label; without, the first in
//! `Signature-Input` whose `keyid` names a key held here (and whose `tag` is `tag`, when set).
//! Other signatures (an intermediary's, say) are left alone.
//!
//! What it must cover: every `required_components` entry (default `@method` and `@target-uri`:
//! the method and the whole target, scheme, authority, path and query, so the signature cannot be
//! replayed on another method, host, path or query), and, with `content_digest = "required"`
//! (the default), `content-digest` whenever the request has a body; the `Content-Digest` field
//! (RFC 9530, `sha-256` or `sha-512`) is then checked against the body, so the body cannot be
//! swapped either. `"if-signed"` checks `Content-Digest` only when the signature covers it;
//! `"off"` never reads the body (it streams to the upstream): the signature then does not bind
//! the body, which the upstream must check itself. The body is buffered (up to the route's
//! `max_body_bytes`) unless `"off"`.
//!
//! When: `created` is required, no more than `max_age_s` old and not in the future (both with
//! `leeway_s`); `expires`, when given, must not have passed. A `nonce` (required with
//! `require_nonce`) is single use: remembered in `state` for `max_age_s` + 2 x `leeway_s` under
//! its key's `keyid`, so a replay within the window is refused, across gateways sharing Redis.
//!
//! Components (RFC 9421 2): the derived `@method`, `@target-uri`, `@authority`, `@scheme`,
//! `@request-target`, `@path`, `@query`, `@query-param;name="..."`, and request fields by
//! lower-case name (all instances trimmed and joined with ", "), with `;sf` (strict
//! re-serialization: for fields whose structured type is known, see `structured_fields`), `;key`
//! (one Dictionary member) and `;bs` (each instance as a byte sequence). `;req` and `;tr` are
//! refused. `@authority` and `@target-uri` are derived from the `Host` (HTTP/2's `:authority`) as
//! received, lower-cased, without the scheme's default port; the scheme is the one the client
//! used (behind `trusted_proxies`, their `X-Forwarded-Proto`); `@request-target` is the origin
//! form (path and query). The path is the gateway's normalized one (what it routes on and
//! forwards), the query byte for byte as received. At most 64 components per signature
//! (`signature::MAX_COMPONENTS`) and 64 KiB of fields parsed as structured fields
//! (`components::MAX_PARSED_BYTES`). Put this plugin before any that rewrites the request: it
//! verifies the request as the plugins before it left it.
//!
//! Outcome: the consumer owning the key that verified is named as `builtin:jwt` names it
//! (context `consumer`/`consumer.groups`, upstream `X-Consumer-Id`/`X-Consumer-Groups`, the
//! client's own copies always removed); a plugin-level key names no consumer. The context also
//! gets `signature.keyid`. Without a valid signature: the `anonymous` consumer if configured,
//! otherwise `401` with `WWW-Authenticate` (`www_authenticate`: RFC 9110 has every 401 carry a
//! challenge) and `Accept-Signature` (RFC 9421 5.1: the label, the components to cover and
//! `created`) and `{"status":401,"error":"unauthorized","message":...,"request_id":...}`, whose message only says whether a
//! signature was found. The reason is logged at debug level, never with a signature or secret.
//! A nonce that cannot be checked (`state` unavailable) is a `503` with `Retry-After: 1`.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::collections::BTreeMap;

#[cfg(target_arch = "wasm32")]
use airlock_sdk::export_plugin;
use airlock_sdk::{Action, Descriptor, Plugin, Request, RequestEdit, ResponseInit};
use serde::Deserialize;
use sha2::Digest as _;

mod components;
mod digest;
mod keys;
mod signature;

use components::{Component, FieldTypes, Message, SfType};
use keys::{Key, KeyConfig};
use signature::Fields;

/// How the body is bound to a signature through `Content-Digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ContentDigest {
    /// A request with a body must cover `content-digest`, and the field must match the body.
    Required,
    /// The field is checked against the body when the signature covers it.
    IfSigned,
    /// The body is not read: a covered `content-digest` is signed, but not matched to the body.
    Off,
}

/// The plugin's config.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Keys not bound to a consumer.
    keys: Vec<KeyConfig>,
    /// Verify only the signature of this label.
    label: Option<String>,
    /// Components every signature must cover.
    required_components: Vec<String>,
    /// How the body is bound (see [`ContentDigest`]).
    content_digest: ContentDigest,
    /// Oldest `created` accepted, in seconds.
    max_age_s: u64,
    /// Clock skew allowed on `created` and `expires`, in seconds.
    leeway_s: u64,
    /// Whether every signature must carry a `nonce`.
    require_nonce: bool,
    /// The `tag` every signature must carry.
    tag: Option<String>,
    /// Structured types (`item`, `list`, `dictionary`) of fields covered with `;sf`.
    structured_fields: BTreeMap<String, String>,
    /// Remove `Signature` and `Signature-Input` before the upstream.
    hide_credentials: bool,
    /// Send `X-Consumer-Id` / `X-Consumer-Groups` upstream.
    upstream_headers: bool,
    /// The consumer a request without a valid signature runs as.
    anonymous: Option<String>,
    /// The `WWW-Authenticate` challenge of a 401 (RFC 9110 15.5.2: every 401 carries one).
    www_authenticate: String,
    /// `[[consumers]]`, filled in by the gateway.
    consumers: Vec<Consumer>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            label: None,
            required_components: vec!["@method".to_owned(), "@target-uri".to_owned()],
            content_digest: ContentDigest::Required,
            max_age_s: 300,
            leeway_s: 30,
            require_nonce: false,
            tag: None,
            structured_fields: BTreeMap::new(),
            hide_credentials: false,
            upstream_headers: true,
            anonymous: None,
            www_authenticate: DEFAULT_CHALLENGE.to_owned(),
            consumers: Vec::new(),
        }
    }
}

/// The default 401 challenge: RFC 9421 registers no authentication scheme, and `Signature` is
/// the one its predecessor (draft-cavage-http-signatures) and its users (ActivityPub servers)
/// name; `Accept-Signature` beside it says what to sign.
const DEFAULT_CHALLENGE: &str = "Signature";

/// One `[[consumers]]` entry as the gateway hands it over.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Consumer {
    /// The consumer's id.
    id: String,
    /// Its groups.
    #[serde(default)]
    groups: Vec<String>,
    /// Its credentials, of every kind.
    #[serde(default)]
    credentials: Credentials,
}

/// The credential kinds this plugin reads; other kinds belong to other plugins.
#[derive(Default, Deserialize)]
struct Credentials {
    /// The consumer's signing keys.
    #[serde(default)]
    http_signatures: Vec<KeyConfig>,
}

/// Who a request runs as, once authenticated.
#[derive(Debug, Clone)]
struct Identity {
    /// The consumer id.
    id: String,
    /// Its groups, comma-joined.
    groups: String,
}

/// The configured plugin.
struct HttpSignatures {
    /// Every key, with the index of the consumer it authenticates, if any, sorted by keyid:
    /// a signature's key is found by binary search, however many partners sign.
    keys: Vec<(Key, Option<usize>)>,
    /// The consumers, by index.
    identities: Vec<Identity>,
    /// `label`: the one label verified, if set.
    label: Option<String>,
    /// `required_components`, parsed.
    required: Vec<Component>,
    /// `content_digest`.
    content_digest: ContentDigest,
    /// `max_age_s`.
    max_age: i64,
    /// `leeway_s`.
    leeway: i64,
    /// `require_nonce`.
    require_nonce: bool,
    /// How long a nonce is remembered, in ms.
    nonce_ttl_ms: u64,
    /// `tag`.
    tag: Option<String>,
    /// Structured types for `;sf`: the known ones and `structured_fields`.
    types: FieldTypes,
    /// `hide_credentials`.
    hide_credentials: bool,
    /// `upstream_headers`.
    upstream_headers: bool,
    /// The `anonymous` consumer.
    anonymous: Option<Identity>,
    /// `Accept-Signature` for a 401: for a request without a body, and with one.
    accept: [String; 2],
    /// `www_authenticate`.
    challenge: String,
}

/// Why a request was not authenticated.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// No valid signature (the reason, for the debug log).
    Invalid(String),
    /// A nonce could not be checked: `state` did not answer.
    Unavailable(String),
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Self::Invalid(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Self::Invalid(reason.to_owned())
    }
}

/// A verified signature: the consumer owning its key (if any) and the key's id.
#[derive(Debug, PartialEq, Eq)]
struct Verified {
    /// The index of the consumer owning the key, if any.
    owner: Option<usize>,
    /// The key's `keyid`.
    keyid: String,
}

impl Plugin for HttpSignatures {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let mut keys: Vec<(Key, Option<usize>)> = Vec::new();
        // Where each keyid was first given, to name it when it is given again.
        let mut given: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        let mut add = |key: Key, owner: Option<usize>, at: String| -> Result<(), String> {
            if let Some(first) = given.get(&key.keyid) {
                return Err(format!("{at}: the keyid `{}` is already the keyid of {first}; each keyid must name one key", key.keyid));
            }
            given.insert(key.keyid.clone(), at);
            keys.push((key, owner));
            Ok(())
        };
        for (i, key) in config.keys.iter().enumerate() {
            let at = format!("`keys[{i}]`");
            add(key.build().map_err(|e| format!("{at}: {e}"))?, None, at)?;
        }
        let mut identities = Vec::new();
        for (c, consumer) in config.consumers.iter().enumerate() {
            identities.push(Identity { id: consumer.id.clone(), groups: consumer.groups.join(",") });
            for (i, key) in consumer.credentials.http_signatures.iter().enumerate() {
                let at = format!("`consumers[{c}].credentials.http_signatures[{i}]` (consumer `{}`)", consumer.id);
                let built = key.build().map_err(|e| format!("{at}: {e} (keyid `{}`)", key.keyid()))?;
                add(built, Some(c), at)?;
            }
        }
        if keys.is_empty() {
            return Err("no keys: give `keys`, or `credentials.http_signatures` keys to [[consumers]]".into());
        }
        keys.sort_unstable_by(|(a, _), (b, _)| a.keyid.cmp(&b.keyid));

        if let Some(label) = &config.label {
            sfv::KeyRef::from_str(label).map_err(|_| {
                format!("`label`: `{label}` is not a signature label (lower-case letters, digits, `_`, `-`, `.`, `*`, starting with a letter or `*`)")
            })?;
        }
        let mut required: Vec<Component> = Vec::new();
        for (i, text) in config.required_components.iter().enumerate() {
            let component = Component::parse_config(text).map_err(|e| format!("`required_components[{i}]`: {e}"))?;
            if required.contains(&component) {
                return Err(format!("`required_components[{i}]`: `{text}` is listed twice"));
            }
            required.push(component);
        }
        if config.max_age_s == 0 {
            return Err("`max_age_s`: at least 1: a signature's `created` is how old it may be".into());
        }
        let max_age = i64::try_from(config.max_age_s).map_err(|_| "`max_age_s`: too large")?;
        let leeway = i64::try_from(config.leeway_s).map_err(|_| "`leeway_s`: too large")?;
        let tag = match config.tag {
            Some(tag) => Some(
                sfv::StringRef::from_str(&tag)
                    .map(|_| tag.clone())
                    .map_err(|_| format!("`tag`: `{tag}` is not a structured-field string (printable ASCII)"))?,
            ),
            None => None,
        };
        let mut structured = BTreeMap::new();
        for (name, kind) in &config.structured_fields {
            if name.is_empty() || name.bytes().any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b))) {
                return Err(format!("`structured_fields.{name}`: not a lower-case field name"));
            }
            let kind = SfType::parse(kind)
                .ok_or_else(|| format!("`structured_fields.{name}`: `{kind}` is not `item`, `list` or `dictionary`"))?;
            structured.insert(name.clone(), kind);
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
        if !airlock_sdk::consumer::valid_challenge(&config.www_authenticate) {
            return Err("`www_authenticate`: a challenge is one line of printable ASCII, e.g. 'Signature realm=\"partners\"'".into());
        }
        let accept = [false, true].map(|body| {
            accept_signature(config.label.as_deref(), &required, body && config.content_digest == ContentDigest::Required, tag.as_deref())
        });
        Ok(Self {
            keys,
            identities,
            label: config.label,
            required,
            content_digest: config.content_digest,
            max_age,
            leeway,
            require_nonce: config.require_nonce,
            nonce_ttl_ms: config.max_age_s.saturating_add(config.leeway_s.saturating_mul(2)).saturating_mul(1000),
            tag,
            types: FieldTypes::new(structured),
            hide_credentials: config.hide_credentials,
            upstream_headers: config.upstream_headers,
            anonymous,
            accept,
            challenge: config.www_authenticate,
        })
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only().with_request_body()
    }

    fn configured_descriptor(&self) -> Descriptor {
        match self.content_digest {
            ContentDigest::Off => Descriptor::request_only(),
            ContentDigest::Required | ContentDigest::IfSigned => Descriptor::request_only().with_request_body(),
        }
    }

    fn on_request(&self, req: &Request) -> Action {
        // Either credential (two auth plugins with `anonymous`): the first one's consumer stands;
        // its signature fields, never checked, go on only as `hide_credentials` says.
        if self.anonymous.is_some() && req.authenticated_before() {
            self.hide(req);
            return Action::Continue;
        }
        airlock_sdk::consumer::remove_forged(req);
        let inputs = req.header_all("signature-input");
        let signatures = req.header_all("signature");
        if inputs.is_empty() && signatures.is_empty() {
            return self.fallback(req, false);
        }
        let mut nonces = |keyid: &str, nonce: &str| first_use(keyid, nonce, self.nonce_ttl_ms);
        match self.verify(&RequestMessage(req), &inputs, &signatures, now(), &mut nonces) {
            Ok(verified) => {
                self.hide(req);
                match verified.owner.and_then(|i| self.identities.get(i)) {
                    Some(identity) => self.admit(req, identity, false),
                    // A route-level key names no consumer: what follows (a cache keyed by
                    // consumer) tells its signer from another's by the key id, which is no secret.
                    None => airlock_sdk::consumer::credential(req, &format!("keyid:{}", verified.keyid)),
                }
                req.context_set("signature.keyid", &verified.keyid);
                Action::Continue
            }
            Err(Refusal::Invalid(reason)) => {
                airlock_sdk::log::debug(format!("signature refused: {reason}"));
                self.fallback(req, true)
            }
            Err(Refusal::Unavailable(reason)) => {
                airlock_sdk::log::warn(format!("signature nonce not checked, request refused: {reason}"));
                let message = "the signature's nonce cannot be checked right now";
                ResponseInit::error(503, "unavailable", message, &req.request_id()).header("retry-after", "1").into()
            }
        }
    }
}

impl HttpSignatures {
    /// The key of `keyid` and the consumer owning it.
    fn key(&self, keyid: &str) -> Option<&(Key, Option<usize>)> {
        let found = self.keys.binary_search_by(|(k, _)| k.keyid.as_str().cmp(keyid)).ok()?;
        self.keys.get(found)
    }

    /// Verifies the chosen signature of `message` (the `Signature-Input` and `Signature`
    /// instances given) at `now` (Unix seconds). `nonces` says whether a nonce is used for the
    /// first time with a key (and records it).
    fn verify(
        &self,
        message: &impl Message,
        inputs: &[Vec<u8>],
        signatures: &[Vec<u8>],
        now: i64,
        nonces: &mut dyn FnMut(&str, &str) -> Result<bool, String>,
    ) -> Result<Verified, Refusal> {
        let fields = Fields::parse(inputs, signatures)?;
        let label = match &self.label {
            Some(label) => label.clone(),
            None => fields
                .labels()
                .find(|(_, keyid, tag)| {
                    keyid.is_some_and(|k| self.key(k).is_some()) && self.tag.as_deref().is_none_or(|t| *tag == Some(t))
                })
                .map(|(label, _, _)| label.to_owned())
                .ok_or(if self.tag.is_some() {
                    "no signature with a known `keyid` and the required `tag`"
                } else {
                    "no signature with a known `keyid`"
                })?,
        };
        let signed = fields.signed(&label)?;
        let keyid = signed.keyid.as_deref().ok_or_else(|| format!("`{label}` has no `keyid`"))?;
        let (key, owner) = self.key(keyid).ok_or_else(|| format!("`{label}`: unknown `keyid`"))?;
        if let Some(alg) = &signed.alg
            && alg != key.alg.name()
        {
            return Err(format!("`{label}`: `alg` is not the algorithm of key `{keyid}`").into());
        }
        if let Some(tag) = &self.tag
            && signed.tag.as_deref() != Some(tag)
        {
            return Err(format!("`{label}`: `tag` is not the required one").into());
        }
        let created = signed.created.ok_or_else(|| format!("`{label}` has no `created`"))?;
        if created > now.saturating_add(self.leeway) {
            return Err(format!("`{label}`: `created` is in the future").into());
        }
        if now.saturating_sub(created) > self.max_age.saturating_add(self.leeway) {
            return Err(format!("`{label}`: `created` is older than `max_age_s`").into());
        }
        if let Some(expires) = signed.expires
            && now > expires.saturating_add(self.leeway)
        {
            return Err(format!("`{label}`: expired").into());
        }
        if self.require_nonce && signed.nonce.is_none() {
            return Err(format!("`{label}` has no `nonce`").into());
        }
        if let Some(missing) = self.required.iter().find(|r| !signed.components.contains(r)) {
            return Err(format!("`{label}` does not cover {}", missing.id).into());
        }
        let digest_covered = signed.components.iter().any(|c| c.is_field("content-digest"));
        if self.content_digest == ContentDigest::Required && message.has_body() && !digest_covered {
            return Err(format!("`{label}` does not cover \"content-digest\", and the request has a body").into());
        }
        let base = components::signature_base(&signed.components, &signed.params, message, &self.types)
            .map_err(|e| format!("`{label}`: {e}"))?;
        if !key.verify(&base, &signed.signature) {
            return Err(format!("`{label}`: the signature does not verify with key `{keyid}`").into());
        }
        if digest_covered && self.content_digest != ContentDigest::Off {
            let body = match message.body() {
                Some(body) => body,
                None if !message.has_body() => Vec::new(),
                None => return Err("the body was not read".into()),
            };
            digest::check(&message.field("content-digest"), &body).map_err(|e| format!("`{label}`: {e}"))?;
        }
        if let Some(nonce) = &signed.nonce
            && !nonces(keyid, nonce).map_err(Refusal::Unavailable)?
        {
            return Err(format!("`{label}`: the nonce was already used").into());
        }
        Ok(Verified { owner: *owner, keyid: keyid.to_owned() })
    }

    /// Removes the signature fields, with `hide_credentials`.
    fn hide(&self, req: &Request) {
        if self.hide_credentials {
            req.edit([RequestEdit::RemoveHeader("signature"), RequestEdit::RemoveHeader("signature-input")]);
        }
    }

    /// No valid signature (`presented`: one was sent): the anonymous consumer if configured,
    /// otherwise 401 saying what to sign.
    fn fallback(&self, req: &Request, presented: bool) -> Action {
        if let Some(anonymous) = &self.anonymous {
            if presented {
                self.hide(req);
            }
            self.admit(req, anonymous, true);
            return Action::Continue;
        }
        let message = if presented {
            "invalid HTTP message signature"
        } else {
            "no HTTP message signature (Signature-Input and Signature) in the request"
        };
        let accept = &self.accept[usize::from(req.has_body())];
        ResponseInit::error(401, "unauthorized", message, &req.request_id())
            .header("www-authenticate", self.challenge.as_str())
            .header("accept-signature", accept.as_str())
            .into()
    }

    /// Names `identity` in the context and (with `upstream_headers`) to the upstream.
    fn admit(&self, req: &Request, identity: &Identity, anonymous: bool) {
        airlock_sdk::consumer::name(req, &identity.id, &identity.groups, anonymous, self.upstream_headers);
    }
}

/// The `Accept-Signature` value (RFC 9421 5.1) asking for a signature labelled `label` (`sig1`
/// by default) over `required` (and `content-digest` when `digest`), with `created` (and `tag`).
fn accept_signature(label: Option<&str>, required: &[Component], digest: bool, tag: Option<&str>) -> String {
    let mut ids: Vec<&str> = required.iter().map(|c| c.id.as_str()).collect();
    if digest && !required.iter().any(|c| c.is_field("content-digest")) {
        ids.push("\"content-digest\"");
    }
    let mut value = format!("{}=({});created", label.unwrap_or("sig1"), ids.join(" "));
    if let Some(tag) = tag.and_then(|t| sfv::StringRef::from_str(t).ok()) {
        value.push_str(";tag=");
        value.push_str(&sfv::ItemSerializer::new().bare_item(tag).finish());
    }
    value
}

/// Records the use of `nonce` with `keyid` in `state` for `ttl_ms`: `Ok(true)` the first time.
/// The key is a digest, so any nonce fits the backend's key limits and none is stored as sent.
fn first_use(keyid: &str, nonce: &str, ttl_ms: u64) -> Result<bool, String> {
    let mut hash = sha2::Sha256::new();
    hash.update(keyid.as_bytes());
    hash.update([0]);
    hash.update(nonce.as_bytes());
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    airlock_sdk::state::incr(&format!("nonce:{digest}"), 1, ttl_ms).map(|uses| uses == 1).map_err(|e| e.to_string())
}

/// The request the plugin is handed, as a [`Message`].
struct RequestMessage<'a>(&'a Request);

impl Message for RequestMessage<'_> {
    fn method(&self) -> String {
        self.0.method()
    }
    fn scheme(&self) -> String {
        self.0.scheme()
    }
    fn host(&self) -> Option<Vec<u8>> {
        self.0.header("host")
    }
    fn path(&self) -> String {
        self.0.path()
    }
    fn query(&self) -> Option<String> {
        self.0.query()
    }
    fn field(&self, name: &str) -> Vec<Vec<u8>> {
        self.0.header_all(name)
    }
    fn has_body(&self) -> bool {
        self.0.has_body()
    }
    fn body(&self) -> Option<Vec<u8>> {
        self.0.body()
    }
}

/// Unix time in seconds.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(target_arch = "wasm32")]
export_plugin!(HttpSignatures);

#[cfg(test)]
mod tests;
