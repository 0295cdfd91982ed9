//! `builtin:key-auth`: authenticates the caller by an API key and names the consumer.
//!
//! ```toml
//! [[consumers]]
//! id = "alice"
//! groups = ["admin", "beta"]
//! # Plain keys are hashed (SHA-256) at configure; `sha256:<64 hex digits>` keeps the key itself
//! # out of the config file (`printf %s "$KEY" | sha256sum`).
//! credentials = { keys = ["alice-key-1", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"] }
//! # `file:<path>`: the key (plain or `sha256:`) is read from that file in the directory granted
//! # to the plugin (`capabilities = ["files"]`, `files = { dir = "..." }`), its newline dropped.
//!
//! [[routes.plugins]]
//! plugin = "builtin:key-auth"
//! [routes.plugins.config]            # every key is optional
//! header_names = ["x-api-key"]       # headers searched in order; [] to use only the query
//! query_param = "apikey"             # also accept ?apikey=... (default: no query parameter)
//! realm = "airlock"                  # WWW-Authenticate: Key realm="airlock"
//! hide_credentials = true            # remove every configured key header and the query parameter before the upstream
//! upstream_headers = true            # send X-Consumer-Id / X-Consumer-Groups upstream
//! anonymous = "guest"                # consumer id used when no valid key is presented
//!                                    # (and a request an earlier auth plugin authenticated is left alone: either credential)
//! ```
//!
//! Consumers come from the gateway's `[[consumers]]` (the gateway fills in `consumers`; a consumer
//! without `credentials.keys` cannot log in with a key). A key is found by its SHA-256 digest, by
//! binary search over the stored digests (at most 17 comparisons with a hundred thousand keys).
//! Its time depends on the digest alone, which says nothing about the key's bytes (a key whose
//! digest agrees with a stored one in more places is no nearer to being that key), so neither
//! timing nor the error tells which part of a key was wrong. The same key given to two consumers
//! rejects the config.
//!
//! On success the request context gets `consumer` (the id) and `consumer.groups` (the groups,
//! comma-joined), for `builtin:acl`, rate limiting and the access log. With `upstream_headers`
//! the upstream also receives `X-Consumer-Id` and `X-Consumer-Groups`; whatever the client sent
//! under those names (and `X-Anonymous-Consumer`) is always removed first, so they cannot be
//! forged.
//!
//! Without a valid key: with `anonymous`, the request goes on as that consumer (context
//! `consumer.anonymous = "true"`, upstream header `X-Anonymous-Consumer: true`); a wrong key
//! counts as no key, as in Kong, and is removed whatever `hide_credentials` says (an upstream
//! reading the key it is given must never get one the gateway refused). When an earlier
//! authentication plugin named the consumer ("either credential", both with `anonymous`), a key
//! here is never checked, and removed too. Otherwise the answer is `401` with
//! `WWW-Authenticate: Key realm="<realm>"` and `{"status":401,"error":"unauthorized","message":...,"request_id":...}`, whose
//! message only says whether a key was found, never why it did not match. A request presenting
//! two different keys (two key header lines, a header and the query parameter, the parameter
//! twice) is a `400` (`bad_request`): only one could be checked, and the other would reach the
//! upstream unchecked (without `hide_credentials`).

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[cfg(target_arch = "wasm32")]
use airlock_sdk::export_plugin;
use airlock_sdk::{Action, Descriptor, Plugin, Request, RequestEdit};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    header_names: Vec<String>,
    query_param: Option<String>,
    realm: String,
    hide_credentials: bool,
    upstream_headers: bool,
    anonymous: Option<String>,
    consumers: Vec<Consumer>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header_names: vec!["x-api-key".to_owned()],
            query_param: None,
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
    keys: Vec<String>,
}

/// Who a request runs as, once authenticated.
#[derive(Debug, Clone)]
struct Identity {
    id: String,
    groups: String,
}

/// The configured plugin.
struct KeyAuth {
    header_names: Vec<String>,
    query_param: Option<String>,
    challenge: String,
    hide_credentials: bool,
    upstream_headers: bool,
    anonymous: Option<Identity>,
    /// SHA-256 digests of every key with the index of the consumer owning each, sorted by
    /// digest for [`KeyAuth::owner_of`]'s binary search.
    digests: Vec<([u8; 32], usize)>,
    identities: Vec<Identity>,
}

impl Plugin for KeyAuth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let mut header_names = Vec::new();
        for (i, name) in config.header_names.iter().enumerate() {
            header_names.push(header_name(name).map_err(|e| format!("`header_names[{i}]`: {e}"))?);
        }
        if let Some(q) = &config.query_param
            && q.is_empty()
        {
            return Err("`query_param`: cannot be empty (leave it out to accept no query parameter)".into());
        }
        if header_names.is_empty() && config.query_param.is_none() {
            return Err("`header_names` is empty and no `query_param` is set: the key could never be found".into());
        }
        let challenge = format!("Key realm=\"{}\"", quoted(&config.realm).map_err(|e| format!("`realm`: {e}"))?);

        let at = |i: usize, k: usize| format!("`consumers[{i}].credentials.keys[{k}]` (consumer `{}`)", config.consumers[i].id);
        let mut identities = Vec::new();
        // Each key's digest with where it was given (consumer, then key), in config order.
        let mut given: Vec<([u8; 32], usize, usize)> = Vec::new();
        for (i, consumer) in config.consumers.iter().enumerate() {
            identities.push(Identity { id: consumer.id.clone(), groups: consumer.groups.join(",") });
            for (k, key) in consumer.credentials.keys.iter().enumerate() {
                let key = airlock_sdk::files::secret(key).map_err(|e| format!("{}: {e}", at(i, k)))?;
                given.push((key_digest(&key).map_err(|e| format!("{}: {e}", at(i, k)))?, i, k));
            }
        }
        // Sorted, a key given twice is two neighbours: the first repeat in config order is named,
        // with the consumer that had it first.
        given.sort_unstable();
        let repeated = given.windows(2).filter(|pair| pair[0].0 == pair[1].0).map(|pair| (pair[1].1, pair[1].2, pair[0].1)).min();
        if let Some((i, k, owner)) = repeated {
            return Err(format!(
                "{}: the same key is already given to consumer `{}`; each key must name one consumer",
                at(i, k),
                config.consumers[owner].id
            ));
        }
        let digests = given.into_iter().map(|(digest, i, _)| (digest, i)).collect();
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
            header_names,
            query_param: config.query_param,
            challenge,
            hide_credentials: config.hide_credentials,
            upstream_headers: config.upstream_headers,
            anonymous,
            digests,
            identities,
        })
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        // Either credential (two auth plugins with `anonymous`): the first one's consumer stands,
        // and a key here, never checked, does not go on (an upstream could take it, someone's
        // real key included, for the consumer's), whatever `hide_credentials` says.
        if self.anonymous.is_some() && req.authenticated_before() {
            req.edit(self.key_headers_removed(true));
            self.remove_query_key(req);
            return Action::Continue;
        }
        // The consumer headers a client sent are replaced or removed by `admit`, the only way
        // to the upstream; a 401 goes nowhere.
        let Ok(found) = self.find_key(req) else {
            // Only one could be checked, and with `hide_credentials = false` the others would
            // reach the upstream unchecked beside the consumer the first named.
            return Action::error(400, "bad_request", "more than one API key in the request: send one", &req.request_id());
        };
        let identity = match &found {
            Some(key) => self.lookup(key.as_bytes()),
            None => None,
        };
        let admitted = match (identity, &self.anonymous) {
            (Some(identity), _) => Some((identity, false)),
            (None, Some(anonymous)) => Some((anonymous, true)),
            (None, None) => None,
        };
        if let Some((identity, anonymous)) = admitted {
            // With `hide_credentials` the upstream gets no key, and none from the other places a
            // key is read from (a second key there is someone's credential as well). A wrong key
            // let through as anonymous is removed whatever `hide_credentials` says: an upstream
            // that reads the key it is given must never get one the gateway refused.
            let hide = self.hide_credentials || (anonymous && found.is_some());
            if hide {
                self.remove_query_key(req);
            }
            let naming = airlock_sdk::consumer::naming(&identity.id, &identity.groups, anonymous, self.upstream_headers);
            req.edit(self.key_headers_removed(hide).chain(naming));
            return Action::Continue;
        }
        let message = if found.is_some() { "invalid API key" } else { "no API key found in the request" };
        airlock_sdk::consumer::unauthorized(req, "www-authenticate", &self.challenge, message)
    }
}

impl KeyAuth {
    /// The key the request presents: the non-empty one among the configured headers' lines and
    /// the query parameter's values. `Err` when there are different ones.
    fn find_key(&self, req: &Request) -> Result<Option<String>, MoreThanOneKey> {
        let mut found: Option<String> = None;
        let mut take = |key: String| match &found {
            Some(first) if *first != key => Err(MoreThanOneKey),
            Some(_) => Ok(()),
            None => {
                found = Some(key);
                Ok(())
            }
        };
        for name in &self.header_names {
            for value in req.header_all(name) {
                // Only the field's own whitespace (SP, HTAB) is not part of the key: trimming
                // Unicode spaces too would make `key\u{a0}` the same consumer, and a fresh
                // bucket for a limiter keyed on the header.
                let key = String::from_utf8_lossy(&value).trim_matches([' ', '\t']).to_owned();
                if !key.is_empty() {
                    take(key)?;
                }
            }
        }
        if let Some(param) = &self.query_param
            && let Some(query) = req.query()
        {
            for key in param_values(&query, param) {
                if !key.is_empty() {
                    take(key)?;
                }
            }
        }
        Ok(found)
    }

    /// The consumer owning `key`. The gateway hashes it (`crypto::sha256`, natively): inside
    /// Wasm SHA-256 was the largest part of this plugin's own work per request.
    fn lookup(&self, key: &[u8]) -> Option<&Identity> {
        self.owner_of(&airlock_sdk::crypto::sha256(key))
    }

    /// The consumer whose key has this SHA-256 digest, found by binary search (the module
    /// comment says why its timing gives nothing away).
    fn owner_of(&self, digest: &[u8; 32]) -> Option<&Identity> {
        let found = self.digests.binary_search_by(|(stored, _)| stored.cmp(digest)).ok()?;
        self.digests.get(found).and_then(|(_, owner)| self.identities.get(*owner))
    }

    /// Names the consumer in the context and, with `upstream_headers`, to the upstream, and
    /// with `hide_credentials` removes the key headers, all in one call into the gateway. Each
    /// consumer header is set or removed, so whatever the client sent under those names never
    /// reaches the upstream.
    /// The removal of every configured key header, if `hide`: made in one edit with the
    /// consumer's headers.
    fn key_headers_removed(&self, hide: bool) -> impl Iterator<Item = RequestEdit<'_>> {
        self.header_names.iter().filter(move |_| hide).map(|name| RequestEdit::RemoveHeader(name))
    }

    /// Removes the key's query parameter (the query is read only when a key may be in it).
    fn remove_query_key(&self, req: &Request) {
        if let Some(param) = &self.query_param
            && let Some(query) = req.query()
        {
            let kept = without_param(&query, param);
            if kept.len() != query.len() {
                req.set_query(if kept.is_empty() { None } else { Some(&kept) });
            }
        }
    }
}

/// The SHA-256 digest of a configured key: `sha256:<hex>` as given, anything else hashed.
fn key_digest(key: &str) -> Result<[u8; 32], String> {
    if key.is_empty() {
        return Err("an empty key is not allowed".into());
    }
    match key.strip_prefix("sha256:") {
        Some(hex) => {
            let bytes = decode_hex(hex).filter(|b| b.len() == 32).ok_or_else(|| {
                "`sha256:` must be followed by 64 hex digits (the SHA-256 digest of the key)".to_owned()
            })?;
            let mut digest = [0; 32];
            digest.copy_from_slice(&bytes);
            Ok(digest)
        }
        None => Ok(Sha256::digest(key.as_bytes()).into()),
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// Checks an HTTP header name (an RFC 9110 token) and lower-cases it.
fn header_name(name: &str) -> Result<String, String> {
    let valid = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(valid) {
        return Err(format!("invalid header name `{name}`: use letters, digits and !#$%&'*+-.^_`|~"));
    }
    Ok(name.to_ascii_lowercase())
}

/// Checks that `text` can stand inside a quoted string of a header value.
fn quoted(text: &str) -> Result<&str, String> {
    if text.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(format!("`{text}` cannot contain quotes, backslashes or control characters"));
    }
    Ok(text)
}

/// A request presenting different keys (two header lines, a header and the query parameter).
struct MoreThanOneKey;

/// The values of every `param=...` pair of `query`, decoded (names compared after decoding), as
/// the gateway's `query-param` decodes the first.
fn param_values<'a>(query: &'a str, param: &'a str) -> impl Iterator<Item = String> + 'a {
    query.split('&').filter_map(move |pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (!pair.is_empty() && percent_decode(name) == param).then(|| percent_decode(value))
    })
}

/// `query` without any `param=...` pair (the name compared after percent-decoding).
fn without_param(query: &str, param: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            !pair.is_empty() && percent_decode(name) != param
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Form-decoding (`+` a space, then percent-decoding, invalid UTF-8 replaced), exactly as the
/// gateway's `query-param` decodes: a key is read the same way wherever it is compared.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
}

// Natively (unit tests) there is no component to export: the export symbols are wasm-only.
#[cfg(target_arch = "wasm32")]
export_plugin!(KeyAuth);

#[cfg(test)]
mod tests {
    use super::*;

    fn build(json: &str) -> Result<KeyAuth, String> {
        airlock_sdk::configure::<KeyAuth>(json)
    }

    #[test]
    fn keys_are_stored_as_digests_and_matched() {
        let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // sha256("test")
        let plugin = build(&format!(
            r#"{{"consumers": [{{"id": "alice", "groups": ["a", "b"], "credentials": {{"keys": ["k1", "sha256:{digest}"]}}}},
                               {{"id": "bob", "credentials": {{"basic": {{"username": "bob"}}}}}}]}}"#
        ))
        .unwrap();
        // Natively there is no gateway to hash a presented key (`lookup`): hashed here as the
        // gateway does; the e2e tests (tests/tests/auth.rs) run `lookup` itself.
        let lookup = |key: &[u8]| plugin.owner_of(&Sha256::digest(key).into());
        assert_eq!(lookup(b"k1").unwrap().id, "alice");
        assert_eq!(lookup(b"test").unwrap().groups, "a,b");
        assert!(lookup(b"k2").is_none());
        assert!(lookup(b"").is_none());
    }

    /// Query values are form-decoded as the gateway's `query-param` decodes them: `+` a space,
    /// then `%` with two hex digits only (`%+f` is `% f`, not byte 0x0F); every value of the
    /// parameter.
    #[test]
    fn query_keys_are_decoded_as_the_gateway_decodes_them() {
        assert_eq!(percent_decode("a%2Bb+c%+f%zz%"), "a+b c% f%zz%");
        assert_eq!(param_values("x=1&api%6Bey=k1&apikey=k%202&apikeyx=3", "apikey").collect::<Vec<_>>(), ["k1", "k 2"]);
    }

    /// Found by binary search: among thousands of keys, each finds its own consumer and only
    /// its own, in any order they were given, and a repeat far from its first use is named.
    #[test]
    fn every_key_of_thousands_finds_its_consumer() {
        let consumers: Vec<String> = (0..3000)
            .map(|i| format!(r#"{{"id": "c{i}", "credentials": {{"keys": ["key-{i}-a", "key-{i}-b"]}}}}"#))
            .collect();
        let plugin = build(&format!(r#"{{"consumers": [{}]}}"#, consumers.join(","))).unwrap();
        let lookup = |key: &str| plugin.owner_of(&Sha256::digest(key.as_bytes()).into()).map(|c| c.id.clone());
        for i in (0..3000).step_by(7).chain([0, 1, 2998, 2999]) {
            assert_eq!(lookup(&format!("key-{i}-a")).as_deref(), Some(&*format!("c{i}")), "key {i} a");
            assert_eq!(lookup(&format!("key-{i}-b")).as_deref(), Some(&*format!("c{i}")), "key {i} b");
            assert_eq!(lookup(&format!("key-{i}-c")), None, "key {i} c was never given");
        }
        assert_eq!(lookup("key-3000-a"), None);

        // The second and third repeats come later in the config: the first one is named.
        let mut repeated = consumers.clone();
        repeated[2500] = r#"{"id": "late", "credentials": {"keys": ["fresh", "key-7-b"]}}"#.into();
        repeated[2700] = r#"{"id": "later", "credentials": {"keys": ["key-1-a"]}}"#.into();
        repeated[2900] = r#"{"id": "latest", "credentials": {"keys": ["key-2600-a"]}}"#.into();
        let err = build(&format!(r#"{{"consumers": [{}]}}"#, repeated.join(","))).err().unwrap();
        assert!(err.starts_with("`consumers[2500].credentials.keys[1]` (consumer `late`): the same key is already given to consumer `c7`"), "{err}");
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = build(r#"{"consumers": [{"id": "a", "credentials": {"keys": ["sha256:zz"]}}]}"#).err().unwrap();
        assert!(err.starts_with("`consumers[0].credentials.keys[0]` (consumer `a`): `sha256:`"), "{err}");
        let err = build(r#"{"consumers": [{"id": "a", "credentials": {"keys": ["x"]}}, {"id": "b", "credentials": {"keys": ["x"]}}]}"#)
            .err()
            .unwrap();
        assert!(err.contains("`consumers[1].credentials.keys[0]`") && err.contains("consumer `a`"), "{err}");
        assert!(!err.contains("\"x\""), "never echoes the key: {err}");
        let err = build(r#"{"anonymous": "ghost"}"#).err().unwrap();
        assert_eq!(err, "`anonymous`: no consumer with id `ghost` in [[consumers]]");
        let err = build(r#"{"header_names": ["bad name"]}"#).err().unwrap();
        assert!(err.starts_with("`header_names[0]`: invalid header name"), "{err}");
        let err = build(r#"{"header_names": []}"#).err().unwrap();
        assert!(err.contains("could never be found"), "{err}");
        let err = build(r#"{"realm": "a\"b"}"#).err().unwrap();
        assert!(err.starts_with("`realm`:"), "{err}");
        let err = build(r#"{"header": "x"}"#).err().unwrap();
        assert!(err.starts_with("`header`: unknown field"), "{err}");
        assert!(build(r#"{"header_names": [], "query_param": "apikey"}"#).is_ok());
    }

    #[test]
    fn query_param_is_removed_by_decoded_name() {
        assert_eq!(without_param("a=1&apikey=s&b=2", "apikey"), "a=1&b=2");
        assert_eq!(without_param("api%6Bey=s", "apikey"), "");
        assert_eq!(without_param("apikey=s&apikey=t&x", "apikey"), "x");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz+"), "A%zz ");
    }
}
