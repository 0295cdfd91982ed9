//! Keys from a JWKS document (RFC 7517), read from a file in the plugin's granted directory
//! (capability `files`) or fetched from the identity provider (capability `http-client`), and
//! kept fresh:
//!
//! - the keys are reloaded once they are `jwks_refresh_secs` old;
//! - a token whose `kid` is unknown triggers a reload, at most once per `jwks_min_refresh_secs`
//!   across every instance and gateway (a `state` window), so a flood of made-up `kid`s cannot
//!   hammer the identity provider;
//! - a fetched document is shared through `state` for `jwks_refresh_secs`, so each gateway
//!   instance does not fetch it on its own;
//! - a failed reload keeps the keys already held (and logs why), so an identity provider outage
//!   does not lock every client out.

use airlock_sdk::{http_client, log, state};
use serde_json::Value;

use crate::keys::{self, Key};

/// Where the document comes from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A path inside the granted directory.
    File(String),
    /// An `http(s)://` URL whose origin is in the `http_client.allow` grant.
    Url(String),
}

/// The keys of a JWKS document and when they were loaded.
pub(crate) struct Jwks {
    source: Source,
    refresh_ms: u64,
    min_refresh_ms: u64,
    /// The keys held now.
    pub(crate) keys: Vec<Key>,
    /// When `keys` were loaded (ms since the epoch); 0 if never.
    loaded_at: u64,
    /// Whether a document was ever installed: until then a token may be valid under keys not
    /// had yet, and its refusal is an outage, not the client's fault.
    installed: bool,
    /// When a reload was last forced by an unknown `kid` here.
    forced_at: u64,
}

impl Jwks {
    /// Loads the document once. A file that cannot be read, or a URL the grant does not allow,
    /// is a config error; an identity provider that does not answer yet is only logged (the keys
    /// are fetched again on the next request).
    pub(crate) fn load(source: Source, refresh_ms: u64, min_refresh_ms: u64) -> Result<Self, String> {
        let mut jwks = Self { source, refresh_ms, min_refresh_ms, keys: Vec::new(), loaded_at: 0, installed: false, forced_at: 0 };
        match jwks.fetch(false) {
            Ok(text) => jwks.install(&text, now_ms())?,
            Err(Fetch::Config(e)) => return Err(e),
            Err(Fetch::Transient(e)) => log::warn(format!("JWKS not loaded yet, retrying on the next request: {e}")),
        }
        Ok(jwks)
    }

    /// Whether no document has ever been loaded (the identity provider unreachable since the
    /// plugin started).
    pub(crate) fn never_loaded(&self) -> bool {
        !self.installed
    }

    /// Reloads if the keys are older than `jwks_refresh_secs`.
    pub(crate) fn refresh_if_stale(&mut self) {
        let now = now_ms();
        if now.saturating_sub(self.loaded_at) >= self.refresh_ms {
            self.reload(false, now);
        }
    }

    /// Reloads because a token named a `kid` not held, unless that was done too recently.
    /// Returns whether the keys were reloaded.
    pub(crate) fn refresh_for_unknown_kid(&mut self) -> bool {
        let now = now_ms();
        if now.saturating_sub(self.forced_at) < self.min_refresh_ms {
            return false;
        }
        let shared_turn = match state::window(&format!("jwks-forced:{}", self.name()), 1, self.min_refresh_ms, 1) {
            Ok(decision) => decision.allowed,
            Err(e) => {
                log::warn(format!("state unavailable, reloading the JWKS on this instance's own schedule: {e}"));
                true
            }
        };
        self.forced_at = now;
        if !shared_turn {
            // Another instance reloaded just now: take its document from the shared cache.
            return self.reload(false, now);
        }
        self.reload(true, now)
    }

    fn reload(&mut self, forced: bool, now: u64) -> bool {
        let result = self.fetch(forced).map_err(|e| match e {
            Fetch::Config(e) | Fetch::Transient(e) => e,
        });
        match result.and_then(|text| self.install(&text, now)) {
            Ok(()) => true,
            Err(e) => {
                log::warn(format!("JWKS reload failed, keeping the {} keys held: {e}", self.keys.len()));
                // Try again after the short interval rather than hammering on every request.
                self.loaded_at = now.saturating_sub(self.refresh_ms).saturating_add(self.min_refresh_ms);
                false
            }
        }
    }

    fn name(&self) -> &str {
        match &self.source {
            Source::File(p) | Source::Url(p) => p,
        }
    }

    /// The document's text: from the file, or from the shared cache, or from the network.
    fn fetch(&self, skip_cache: bool) -> Result<String, Fetch> {
        match &self.source {
            Source::File(path) => keys::read_granted_file("jwks_file", path).map_err(Fetch::Config),
            Source::Url(url) => {
                let cache_key = format!("jwks:{url}");
                if !skip_cache
                    && let Ok(Some(cached)) = state::get(&cache_key)
                    && let Ok(text) = String::from_utf8(cached)
                {
                    return Ok(text);
                }
                let response = http_client::get(url).map_err(|e| match e {
                    http_client::HttpError::Denied(m) | http_client::HttpError::Invalid(m) => {
                        Fetch::Config(format!("`jwks_url`: {m}"))
                    }
                    other => Fetch::Transient(format!("fetching `{url}`: {other:?}")),
                })?;
                if response.status != 200 {
                    return Err(Fetch::Transient(format!("`{url}` answered {}", response.status)));
                }
                let text = String::from_utf8(response.body)
                    .map_err(|_| Fetch::Transient(format!("`{url}` sent a body that is not UTF-8")))?;
                if let Err(e) = state::set(&cache_key, text.as_bytes(), self.refresh_ms) {
                    log::debug(format!("JWKS not shared through state: {e}"));
                }
                Ok(text)
            }
        }
    }

    /// Replaces the keys held with those of `text`.
    fn install(&mut self, text: &str, now: u64) -> Result<(), String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
        let entries = doc.get("keys").and_then(Value::as_array).ok_or("the JWKS has no `keys` array")?;
        let mut keys = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let Some(jwk) = entry.as_object() else { continue };
            match keys::from_jwks_entry(jwk) {
                Ok(key) => keys.push(key),
                Err(e) => log::debug(format!("JWKS key {i} skipped: {e}")),
            }
        }
        self.keys = keys;
        self.loaded_at = now;
        self.installed = true;
        Ok(())
    }
}

/// Why a document could not be had.
enum Fetch {
    /// The operator must fix the config (file missing, origin not granted).
    Config(String),
    /// Worth retrying later (identity provider down or answering errors).
    Transient(String),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
