//! The backends of the `state` capability: atomic counters, token buckets, fixed windows and
//! keyed values with expiry, in this process's memory ([`memory`]) or in a shared Redis
//! ([`redis`]). The WIT side (`airlock:plugin/state`) is `runtime::host::state`; it reaches a
//! store only through a [`ScopedState`], which prefixes every key with the plugin's namespace.
//!
//! Both backends implement the same operations with the same arithmetic (checked against each
//! other in the tests): GCRA for `acquire`, a first-hit fixed window for `window`. In both, the
//! check and the update are one atomic step, and a refused request takes nothing.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{StateBackend, StateConfig};

/// Longest key kept as a plugin wrote it, in bytes; a longer one is kept as its SHA-256 digest
/// ([`ScopedState::key`]). Keys are per client (a consumer id, an IP, a header's value): a
/// client-chosen value past any fixed length must still name its own counter, not be refused
/// (a refused key would let a rate limiter fail open for whoever pads a header), while what one
/// key costs the backend stays bounded. Ordinary keys (`0:second:ip=203.0.113.7`, a consumer
/// id, an API key) are well below it; a longer one (a JWT in a header) costs 72 bytes, not its
/// length, in memory and in Redis.
pub const MAX_KEY_BYTES: usize = 128;

/// Largest value `set` accepts, in bytes (state is for counters and small records, not a cache).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Longest namespace kept whole in a key, in bytes (names come from the operator's config); a
/// longer one keeps its start and a digest of the whole, so two long names never share keys.
pub const MAX_NAMESPACE_BYTES: usize = 256;

/// Longest backend key [`ScopedState::key`] makes: `airlock:`, the namespace and the key, each
/// escaped (a byte at most three) and ended by `:`. The memory backend's shares hold at least
/// one value of the largest size under it.
pub const MAX_BACKEND_KEY_BYTES: usize = "airlock:".len() + 3 * MAX_NAMESPACE_BYTES + 1 + 3 * MAX_KEY_BYTES;

/// How often the "state backend unavailable" warning is logged at most (an outage must not flood
/// the log with one line per request).
pub const UNAVAILABLE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a state operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The backend could not be reached or did not answer in time.
    #[error("state backend unavailable: {0}")]
    Unavailable(String),
    /// The arguments were refused.
    #[error("invalid state operation: {0}")]
    Invalid(String),
    /// The memory backend is at `max_keys` or `max_bytes` (or the plugin at its share of them)
    /// with nothing that could make way: every entry left was stored without a TTL.
    #[error("state store full")]
    Full,
}

/// Why a store could not be built from `[state]` (the key it is about: [`Self::key`]).
#[derive(Debug, thiserror::Error)]
pub enum StateConfigError {
    /// `backend = "redis"` without `redis_url`.
    #[error("required with `backend = \"redis\"`")]
    MissingUrl,
    /// The Redis URL does not parse.
    #[error("{0}")]
    BadUrl(String),
    /// A bound is zero.
    #[error("must be at least 1")]
    Zero(&'static str),
    /// `redis_ca_file` with a `redis://` URL, which never uses it.
    #[error("a CA file is for TLS: use a `rediss://` URL (and the server's TLS port)")]
    CaWithoutTls,
    /// `redis_ca_file` holds no usable certificate.
    #[error("not a PEM CA bundle: {0}")]
    BadCa(String),
    /// `redis_cert_file` with a `redis://` URL, which never uses it.
    #[error("a client certificate is for TLS: use a `rediss://` URL (and the server's TLS port)")]
    ClientCertWithoutTls,
    /// `redis_cert_file` or `redis_key_file` does not hold what it should.
    #[error("not a PEM certificate chain with its private key: {0}")]
    BadClientCert(String),
    /// A Redis setting (named) with the memory backend, which would ignore it: every gateway
    /// would count alone, admitting its replicas' sum of the limits.
    #[error("is a Redis setting, but `backend` is `memory` (the default): set `backend = \"redis\"` for state shared by every gateway, or remove it")]
    RedisSettingUnused(&'static str),
    /// A password in `redis_url` and `redis_password_file` both.
    #[error("`redis_url` already holds a password: give it in one place, `redis_url` or `redis_password_file`")]
    PasswordTwice,
}

impl StateConfigError {
    /// The `[state]` key the problem is with, as a config error names it.
    pub fn key(&self) -> String {
        match self {
            StateConfigError::MissingUrl | StateConfigError::BadUrl(_) => "state.redis_url".to_owned(),
            StateConfigError::Zero(field) => format!("state.{field}"),
            StateConfigError::CaWithoutTls | StateConfigError::BadCa(_) => "state.redis_ca_file".to_owned(),
            StateConfigError::ClientCertWithoutTls | StateConfigError::BadClientCert(_) => "state.redis_cert_file".to_owned(),
            StateConfigError::PasswordTwice => "state.redis_password_file".to_owned(),
            StateConfigError::RedisSettingUnused(field) => format!("state.{field}"),
        }
    }

    /// Where in `config` the problem is written, if it is at one key's value.
    pub fn span(&self, config: &StateConfig) -> Option<std::ops::Range<usize>> {
        let at = match self {
            StateConfigError::BadUrl(_) => &config.redis_url,
            StateConfigError::CaWithoutTls | StateConfigError::BadCa(_) => &config.redis_ca_file,
            StateConfigError::ClientCertWithoutTls | StateConfigError::BadClientCert(_) => &config.redis_cert_file,
            StateConfigError::PasswordTwice => &config.redis_password_file,
            StateConfigError::RedisSettingUnused(field) => return config.redis_setting(field).map(toml::Spanned::span),
            StateConfigError::MissingUrl | StateConfigError::Zero(_) => return None,
        };
        at.as_ref().map(toml::Spanned::span)
    }
}

/// The outcome of a limiter step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the cost was taken.
    pub allowed: bool,
    /// Units left after this step.
    pub remaining: u64,
    /// The limit the numbers refer to (burst or window limit).
    pub limit: u64,
    /// Milliseconds until the limit is fully available again.
    pub reset_after_ms: u64,
    /// When refused, milliseconds until the same cost would fit; 0 when allowed.
    pub retry_after_ms: u64,
}

/// Counters describing a store's health, for logs and metrics.
#[derive(Debug, Default)]
pub struct StateStats {
    /// Operations that failed because the backend was unreachable or slow.
    pub unavailable: AtomicU64,
    /// Keys (or values) refused because the memory backend was at `max_keys` or `max_bytes`.
    pub cap_hits: AtomicU64,
    /// Expired keys evicted by the memory backend's sweeps.
    pub evicted: AtomicU64,
    /// Live keys nearest their expiry that gave their place to a new key at `max_keys` or
    /// `max_bytes` (or at their namespace's share of them).
    pub displaced: AtomicU64,
    unavailable_log: LogThrottle,
    full_log: LogThrottle,
}

/// Lets a recurring warning through at most once per [`UNAVAILABLE_LOG_INTERVAL`].
#[derive(Debug, Default)]
struct LogThrottle {
    /// When last let through: milliseconds since `started`, plus one (0: never).
    last_logged: AtomicU64,
    /// The clock origin of `last_logged`: the first occurrence.
    started: std::sync::OnceLock<std::time::Instant>,
}

impl LogThrottle {
    /// Whether to log now.
    fn due(&self) -> bool {
        let started = *self.started.get_or_init(std::time::Instant::now);
        let now = started.elapsed().as_millis() as u64 + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        let interval = UNAVAILABLE_LOG_INTERVAL.as_millis() as u64;
        (last == 0 || now.saturating_sub(last) >= interval)
            && self.last_logged.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

impl StateStats {
    /// Counts an unavailable error and logs it, at most once per [`UNAVAILABLE_LOG_INTERVAL`].
    pub fn record_unavailable(&self, backend: &str, address: &str, error: &StateError) {
        let total = self.unavailable.fetch_add(1, Ordering::Relaxed) + 1;
        if self.unavailable_log.due() {
            tracing::warn!(
                backend,
                address,
                failures_so_far = total,
                "{error}; limiters apply their on_state_error policy (logged at most every {}s)",
                UNAVAILABLE_LOG_INTERVAL.as_secs()
            );
        }
    }

    /// Counts a key or value the memory backend refused (`what`: the bound it hit), and logs it
    /// at most once per [`UNAVAILABLE_LOG_INTERVAL`]: a full store is an operator's problem.
    pub fn record_full(&self, what: &str) {
        let total = self.cap_hits.fetch_add(1, Ordering::Relaxed) + 1;
        if self.full_log.due() {
            tracing::warn!(
                refused_so_far = total,
                "state store full at `[state] {what}`: a new key or value was refused (logged at most every {}s)",
                UNAVAILABLE_LOG_INTERVAL.as_secs()
            );
        }
    }

    /// Counts a live key displaced at `max_keys` or `max_bytes`, logged like
    /// [`Self::record_full`].
    pub fn record_displaced(&self) {
        let total = self.displaced.fetch_add(1, Ordering::Relaxed) + 1;
        if self.full_log.due() {
            tracing::warn!(
                displaced_so_far = total,
                "state store at `[state] max_keys` or `max_bytes` (or a plugin at its share of them): keys nearest their expiry make way for new ones (logged at most every {}s)",
                UNAVAILABLE_LOG_INTERVAL.as_secs()
            );
        }
    }
}

/// A state backend, shared by every plugin of a gateway.
pub enum StateStore {
    /// In-process memory.
    Memory(memory::MemoryStore),
    /// A shared Redis (boxed: it is much larger than the memory store's handle).
    Redis(Box<redis::RedisStore>),
}

impl StateStore {
    /// The longest one operation can wait on the backend (connecting included); zero in memory.
    pub fn max_wait(&self) -> Duration {
        match self {
            StateStore::Memory(_) => Duration::ZERO,
            StateStore::Redis(r) => r.max_wait(),
        }
    }

    /// Builds the store `[state]` asks for. Redis is not contacted here: the first operation
    /// connects, so a gateway starts (and its limiters apply their policy) while Redis is down.
    pub fn from_config(config: &StateConfig) -> Result<Self, StateConfigError> {
        match config.backend {
            StateBackend::Memory => {
                if let Some(field) = crate::config::StateConfig::REDIS_SETTINGS.into_iter().find(|f| config.redis_setting(f).is_some()) {
                    return Err(StateConfigError::RedisSettingUnused(field));
                }
                if config.max_keys == 0 {
                    return Err(StateConfigError::Zero("max_keys"));
                }
                Ok(Self::Memory(memory::MemoryStore::with_budget(config.max_keys, config.max_bytes)))
            }
            StateBackend::Redis => {
                let url = config.redis_url.as_ref().map(|u| u.get_ref().as_str()).ok_or(StateConfigError::MissingUrl)?;
                if config.timeout_ms == 0 {
                    return Err(StateConfigError::Zero("timeout_ms"));
                }
                if config.connect_timeout_ms == 0 {
                    return Err(StateConfigError::Zero("connect_timeout_ms"));
                }
                let client = redis::client(url, &config.redis_files)?;
                let store = redis::RedisStore::with_client(
                    client,
                    config.max_keys.max(1),
                    Duration::from_millis(config.connect_timeout_ms),
                    Duration::from_millis(config.timeout_ms),
                )
                .with_required_for_ready(config.required_for_ready);
                Ok(Self::Redis(Box::new(store)))
            }
        }
    }

    /// After a reload that leaves `[state]` as it was but whose `redis_*_file`s now hold
    /// something else (a rotated password, CA or client certificate): the Redis client to
    /// connect with from now on, checked as at start. `Ok(None)`: nothing to change.
    pub fn rotated_redis_client(old: &StateConfig, new: &StateConfig) -> Result<Option<::redis::Client>, StateConfigError> {
        if new.backend != StateBackend::Redis || old.redis_files == new.redis_files {
            return Ok(None);
        }
        let url = new.redis_url.as_ref().map(|u| u.get_ref().as_str()).ok_or(StateConfigError::MissingUrl)?;
        redis::client(url, &new.redis_files).map(Some)
    }

    /// Connects to Redis with `client` from now on (see [`StateStore::rotated_redis_client`]);
    /// nothing for the memory backend.
    pub fn replace_redis_client(&self, client: ::redis::Client) {
        if let StateStore::Redis(store) = self {
            store.replace_client(client);
        }
    }

    /// The backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Where the backend is, for the gateway's log lines (never for plugins): Redis's address,
    /// or `local` for the memory store.
    pub fn address(&self) -> &str {
        match self {
            Self::Memory(_) => "local",
            Self::Redis(r) => r.address(),
        }
    }

    /// Health counters.
    pub fn stats(&self) -> &StateStats {
        match self {
            Self::Memory(m) => m.stats(),
            Self::Redis(r) => r.stats(),
        }
    }

    /// Counts (and logs, rate-limited) an unavailable backend.
    fn observe<T>(&self, result: Result<T, StateError>) -> Result<T, StateError> {
        if let Err(e @ StateError::Unavailable(_)) = &result {
            self.stats().record_unavailable(self.backend(), self.address(), e);
        }
        result
    }

    /// Adds `delta` to a counter; a new key expires after `ttl_ms` (0: never).
    pub async fn incr(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StateError> {
        let r = match self {
            Self::Memory(m) => m.incr(key, delta, ttl_ms),
            Self::Redis(r) => r.incr(key, delta, ttl_ms).await,
        };
        self.observe(r)
    }

    /// This gateway's own memory: the store itself for `memory`, the local fallback for `redis`.
    pub fn local(&self) -> &memory::MemoryStore {
        match self {
            Self::Memory(m) => m,
            Self::Redis(r) => r.local(),
        }
    }

    /// GCRA token bucket step.
    pub async fn acquire(&self, key: &str, limit: &Gcra, cost: u64) -> Result<Decision, StateError> {
        let r = match self {
            Self::Memory(m) => m.acquire(key, limit, cost),
            Self::Redis(r) => r.acquire(key, limit, cost).await,
        };
        self.observe(r)
    }

    /// Fixed window step.
    pub async fn window(&self, key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
        let r = match self {
            Self::Memory(m) => m.window(key, limit, window_ms, cost),
            Self::Redis(r) => r.window(key, limit, window_ms, cost).await,
        };
        self.observe(r)
    }

    /// Sliding window step (see [`sliding_step`]).
    pub async fn sliding_window(&self, key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
        let r = match self {
            Self::Memory(m) => m.sliding_window(key, limit, window_ms, cost),
            Self::Redis(r) => r.sliding_window(key, limit, window_ms, cost).await,
        };
        self.observe(r)
    }

    /// Reads a value.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let r = match self {
            Self::Memory(m) => m.get(key),
            Self::Redis(r) => r.get(key).await,
        };
        self.observe(r)
    }

    /// Stores a value expiring after `ttl_ms` (0: never).
    pub async fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StateError> {
        let r = match self {
            Self::Memory(m) => m.set(key, value, ttl_ms),
            Self::Redis(r) => r.set(key, value, ttl_ms).await,
        };
        self.observe(r)
    }

    /// Removes every key of one namespace (keys starting with `prefix`, a
    /// [`ScopedState::prefix`]): an operator clearing a plugin's state (`POST
    /// /admin/state/clear`: a cache purged, counters reset). Returns how many keys went.
    pub async fn clear_namespace(&self, prefix: &str) -> Result<usize, StateError> {
        let r = match self {
            Self::Memory(m) => Ok(m.clear_namespace(prefix)),
            Self::Redis(r) => r.clear_namespace(prefix).await,
        };
        self.observe(r)
    }

    /// Removes a key.
    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        let r = match self {
            Self::Memory(m) => m.delete(key),
            Self::Redis(r) => r.delete(key).await,
        };
        self.observe(r)
    }
}

/// A token bucket's parameters, validated: `burst` units of capacity, refilled at `rate` units
/// per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gcra {
    /// Milliseconds between two units of refill (`period_ms / rate`), fractional.
    pub emission_ms: f64,
    /// Capacity, in units.
    pub burst: u64,
}

impl Gcra {
    /// Validates the parameters of `acquire`.
    pub fn new(rate: u64, period_ms: u64, burst: u64) -> Result<Self, StateError> {
        if rate == 0 || period_ms == 0 || burst == 0 {
            return Err(StateError::Invalid("rate, period-ms and burst must be at least 1".into()));
        }
        Ok(Self { emission_ms: period_ms as f64 / rate as f64, burst })
    }

    /// One GCRA step at time `now_ms` against the stored theoretical arrival time `tat_ms` (None:
    /// a fresh, full bucket). Returns the decision and, when allowed, the new TAT to store.
    pub fn step(&self, tat_ms: Option<f64>, now_ms: f64, cost: u64) -> (Decision, Option<f64>) {
        let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
        let tolerance = self.emission_ms * self.burst as f64;
        let new_tat = tat + self.emission_ms * cost as f64;
        let used_after = new_tat - now_ms;
        if used_after <= tolerance + 1e-6 {
            let remaining = ((tolerance - used_after) / self.emission_ms + 1e-9).floor().max(0.0) as u64;
            let decision = Decision {
                allowed: true,
                remaining,
                limit: self.burst,
                reset_after_ms: used_after.ceil().max(0.0) as u64,
                retry_after_ms: 0,
            };
            (decision, Some(new_tat))
        } else {
            let used = tat - now_ms;
            let remaining = ((tolerance - used) / self.emission_ms + 1e-9).floor().max(0.0) as u64;
            let decision = Decision {
                allowed: false,
                remaining,
                limit: self.burst,
                reset_after_ms: used.ceil().max(0.0) as u64,
                retry_after_ms: (used_after - tolerance).ceil().max(1.0) as u64,
            };
            (decision, None)
        }
    }
}

/// One fixed-window step: `count` units used so far in a window ending in `ttl_ms`.
pub fn window_step(count: u64, limit: u64, ttl_ms: u64, cost: u64) -> Decision {
    if count.saturating_add(cost) <= limit {
        Decision {
            allowed: true,
            remaining: limit - count - cost,
            limit,
            reset_after_ms: ttl_ms,
            retry_after_ms: 0,
        }
    } else {
        Decision {
            allowed: false,
            remaining: limit.saturating_sub(count),
            limit,
            reset_after_ms: ttl_ms,
            // A cost above the limit never fits; the end of the window is still the honest answer.
            retry_after_ms: ttl_ms.max(1),
        }
    }
}

/// One sliding-window step (Kong's `window_type = "sliding"`, the approximation Cloudflare
/// describes): windows of `window_ms` aligned to the backend's clock, and a request counted
/// against the current window's units plus the previous window's, weighted by how much of the
/// previous window the sliding window still covers. `prev` and `curr` are the units counted in the
/// previous and current window, `elapsed_ms` the time since the current window began. Returns the
/// decision; when allowed, the caller adds `cost` to `curr`. Mirrored by the Redis script.
pub fn sliding_step(prev: u64, curr: u64, elapsed_ms: u64, window_ms: u64, limit: u64, cost: u64) -> Decision {
    let w = window_ms.max(1) as f64;
    let e = (elapsed_ms as f64).min(w);
    let (prev_f, curr_f, limit_f, cost_f) = (prev as f64, curr as f64, limit as f64, cost as f64);
    let estimate = prev_f * (w - e) / w + curr_f;
    let floor = |x: f64| (x + 1e-9).floor().max(0.0) as u64;
    if estimate + cost_f <= limit_f + 1e-9 {
        let reset = if curr + cost > 0 { 2.0 * w - e } else { w - e };
        return Decision {
            allowed: true,
            remaining: floor(limit_f - estimate - cost_f),
            limit,
            reset_after_ms: reset.ceil() as u64,
            retry_after_ms: 0,
        };
    }
    let retry = if curr_f + cost_f <= limit_f && prev > 0 {
        // Later in this window the previous window's weight has fallen enough.
        (w - (limit_f - curr_f - cost_f) * w / prev_f) - e
    } else if cost_f <= limit_f && curr > 0 {
        // In the next window, once this window's weight has fallen enough.
        (w - e) + (w - (limit_f - cost_f) * w / curr_f).max(0.0)
    } else {
        // A cost above the limit never fits; the end of the next window is the honest answer.
        2.0 * w - e
    };
    Decision {
        allowed: false,
        remaining: floor(limit_f - estimate),
        limit,
        reset_after_ms: (if curr > 0 { 2.0 * w - e } else { w - e }).ceil() as u64,
        retry_after_ms: retry.ceil().max(1.0) as u64,
    }
}

/// A store seen through one plugin's namespace: every key is prefixed, so plugins never meet.
#[derive(Clone)]
pub struct ScopedState {
    store: Arc<StateStore>,
    prefix: Arc<str>,
}

impl std::fmt::Debug for ScopedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedState").field("backend", &self.store.backend()).field("prefix", &self.prefix).finish()
    }
}

impl ScopedState {
    /// The longest one operation can wait on the backend.
    pub fn max_wait(&self) -> std::time::Duration {
        self.store.max_wait()
    }

    /// Scopes `store` to `namespace` (escaped, so no namespace is a prefix of another's keys).
    pub fn new(store: Arc<StateStore>, namespace: &str) -> Self {
        let mut prefix = String::from("airlock:");
        if namespace.len() <= MAX_NAMESPACE_BYTES {
            escape_into(&mut prefix, namespace, true);
        } else {
            // Cut, it would share keys with every name of the same start: the digest of the
            // whole name (after `~`, which no name of at most the limit gets) tells them apart.
            use sha2::{Digest, Sha256};
            escape_into(&mut prefix, super::runtime::host::log::truncate(namespace, MAX_NAMESPACE_BYTES - 33), true);
            prefix.push('~');
            prefix.push_str(&hex::encode(&Sha256::digest(namespace.as_bytes())[..16]));
        }
        prefix.push(':');
        Self { store, prefix: prefix.into() }
    }

    /// The store behind this scope.
    pub fn store(&self) -> &Arc<StateStore> {
        &self.store
    }

    /// What every key of this scope starts with (`airlock:<namespace>:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The backend key for a plugin's `key`. `{` and `}` are escaped so a plugin cannot choose a
    /// Redis Cluster hash tag: every key hashes as a whole, and each operation touches one key,
    /// so all of them are cluster-safe and spread over the slots. A key longer than
    /// [`MAX_KEY_BYTES`] becomes `%sha256:` and its digest in hex: the same key still names the
    /// same entry, and no key written whole reads the same (its `%` would be escaped).
    pub fn key(&self, key: &str) -> Result<String, StateError> {
        let mut out = String::with_capacity(self.prefix.len() + key.len().min(MAX_KEY_BYTES) + 8);
        out.push_str(&self.prefix);
        if key.len() > MAX_KEY_BYTES {
            out.push_str(DIGESTED_KEY_MARK);
            // Written in hex straight into the key: a digested key costs no allocation more
            // than a short one.
            for byte in ring::digest::digest(&ring::digest::SHA256, key.as_bytes()).as_ref() {
                out.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
                out.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
            }
        } else {
            escape_into(&mut out, key, false);
        }
        Ok(out)
    }
}

/// Starts the backend key of a plugin key kept as its digest (see [`ScopedState::key`]).
const DIGESTED_KEY_MARK: &str = "%sha256:";

/// Lower-case hex digits, for a digested key.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Percent-escapes `%`, `{`, `}` (and `:` and `~` in a namespace, which ends at the first `:`).
/// Runs between them are copied whole: a key with none (the common case: every rate-limit
/// step names one) is one copy, not a push per character.
fn escape_into(out: &mut String, s: &str, namespace: bool) {
    let special = |b: &u8| matches!(b, b'%' | b'{' | b'}') || (namespace && matches!(b, b':' | b'~'));
    let mut rest = s;
    // Every special character is ASCII, so the byte after one starts a character.
    while let Some(at) = rest.as_bytes().iter().position(special) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'%' => "%25",
            b'{' => "%7B",
            b'}' => "%7D",
            b':' => "%3A",
            // Marks a long namespace's digest (`ScopedState::new`): no name written whole has one.
            _ => "%7E",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_windows_weigh_the_previous_window() {
        // Fresh: the current window alone counts.
        let d = sliding_step(0, 9, 0, 1000, 10, 1);
        assert!(d.allowed && d.remaining == 0);
        assert!(!sliding_step(0, 10, 0, 1000, 10, 1).allowed);
        // 10 used in the previous window, 250 ms into this one: 7.5 still weigh, 2 fit.
        let d = sliding_step(10, 0, 250, 1000, 10, 1);
        assert!(d.allowed && d.remaining == 1, "{d:?}");
        let d = sliding_step(10, 2, 250, 1000, 10, 1);
        assert!(!d.allowed, "{d:?}");
        // 10 * (1000 - t) / 1000 + 3 <= 10  <=>  t >= 300: 50 ms from now.
        assert_eq!(d.retry_after_ms, 50);
        // The current window is full: wait into the next one, until its weight allows the cost.
        let d = sliding_step(0, 10, 600, 1000, 10, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 400 + 100, "{d:?}");
        // A cost above the limit never fits, and still gets a finite, non-zero answer.
        let d = sliding_step(0, 0, 0, 1000, 10, 11);
        assert!(!d.allowed && d.retry_after_ms == 2000);
    }

    #[test]
    fn escaping_copies_runs_and_escapes_each_special_character() {
        let escaped = |s: &str, namespace: bool| {
            let mut out = String::from(">");
            escape_into(&mut out, s, namespace);
            out
        };
        assert_eq!(escaped("", false), ">");
        assert_eq!(escaped("c=alice|ip=203.0.113.7", false), ">c=alice|ip=203.0.113.7");
        assert_eq!(escaped("%{a}:~é%", false), ">%25%7Ba%7D:~é%25");
        assert_eq!(escaped("%{a}:~é%", true), ">%25%7Ba%7D%3A%7Eé%25");
        assert_eq!(escaped("日本:語~", true), ">日本%3A語%7E", "multi-byte characters around the escapes");
    }

    #[test]
    fn keys_are_namespaced_and_escaped() {
        let store = Arc::new(StateStore::Memory(memory::MemoryStore::new(10)));
        let a = ScopedState::new(store.clone(), "a:b");
        let b = ScopedState::new(store.clone(), "a");
        assert_eq!(a.key("c").unwrap(), "airlock:a%3Ab:c");
        assert_eq!(b.key("b:c").unwrap(), "airlock:a:b:c");
        assert_ne!(a.key("c").unwrap(), b.key("b:c").unwrap());
        assert_eq!(b.key("{x}%").unwrap(), "airlock:a:%7Bx%7D%25");
    }

    #[test]
    fn a_key_past_the_limit_is_kept_as_its_digest() {
        let store = Arc::new(StateStore::Memory(memory::MemoryStore::new(10)));
        let b = ScopedState::new(store, "a");
        let at_limit = "k".repeat(MAX_KEY_BYTES);
        assert_eq!(b.key(&at_limit).unwrap(), format!("airlock:a:{at_limit}"));
        let long = |end: &str| b.key(&format!("{at_limit}{end}")).unwrap();
        assert_eq!(long("1"), long("1"), "the same key names the same entry");
        assert_ne!(long("1"), long("2"), "two long keys sharing a start do not share an entry");
        assert!(long("1").starts_with("airlock:a:%sha256:") && long("1").len() == "airlock:a:%sha256:".len() + 64, "{}", long("1"));
        // A plugin writing what a digested key reads as gets its own, escaped, entry.
        let forged = long("1").trim_start_matches("airlock:a:").to_owned();
        assert_ne!(b.key(&forged).unwrap(), long("1"));
    }

    #[test]
    fn long_namespaces_sharing_a_start_keep_their_own_keys() {
        let store = Arc::new(StateStore::Memory(memory::MemoryStore::new(10)));
        let long = |end: &str| ScopedState::new(store.clone(), &format!("{}{end}", "n".repeat(MAX_NAMESPACE_BYTES)));
        let (one, two) = (long("1").key("k").unwrap(), long("2").key("k").unwrap());
        assert_ne!(one, two);
        assert!(one.len() < MAX_NAMESPACE_BYTES + 20, "{one}");
        assert_eq!(one, long("1").key("k").unwrap(), "the same name, the same keys");
        // A name at the limit is kept whole, and is no other name's cut.
        let exact = ScopedState::new(store.clone(), &"n".repeat(MAX_NAMESPACE_BYTES)).key("k").unwrap();
        assert_eq!(exact, format!("airlock:{}:k", "n".repeat(MAX_NAMESPACE_BYTES)));
        assert_ne!(exact, one);
        // Nor can a short name spell a long one's digest form.
        let spelled = one.trim_start_matches("airlock:").trim_end_matches(":k");
        assert_ne!(ScopedState::new(store.clone(), spelled).key("k").unwrap(), one);
    }

    #[test]
    fn gcra_admits_burst_then_rate() {
        // 10 per second, burst 5.
        let g = Gcra::new(10, 1000, 5).unwrap();
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..20 {
            let (d, t) = g.step(tat, 0.0, 1);
            if d.allowed {
                allowed += 1;
                tat = t;
            } else {
                assert_eq!(d.retry_after_ms, 100);
                assert_eq!(d.remaining, 0);
            }
        }
        assert_eq!(allowed, 5);
        // 250 ms later: 2 more units (one every 100 ms).
        let mut later = 0;
        for _ in 0..5 {
            let (d, t) = g.step(tat, 250.0, 1);
            if d.allowed {
                later += 1;
                tat = t;
            }
        }
        assert_eq!(later, 2);
        // A refused step leaves the TAT alone: nothing was taken.
        let (d, t) = g.step(tat, 250.0, 1);
        assert!(!d.allowed && t.is_none());
        assert_eq!(d.retry_after_ms, 50);
    }

    #[test]
    fn gcra_remaining_and_reset() {
        let g = Gcra::new(1, 1000, 3).unwrap();
        let (d, tat) = g.step(None, 0.0, 1);
        assert_eq!((d.allowed, d.remaining, d.limit, d.reset_after_ms), (true, 2, 3, 1000));
        let (d, _) = g.step(tat, 0.0, 2);
        assert_eq!((d.allowed, d.remaining, d.reset_after_ms), (true, 0, 3000));
        let (d, _) = g.step(None, 0.0, 4);
        assert!(!d.allowed);
        assert!(Gcra::new(0, 1000, 1).is_err());
    }

    #[test]
    fn window_refusals_take_nothing() {
        let d = window_step(9, 10, 500, 1);
        assert_eq!((d.allowed, d.remaining, d.reset_after_ms), (true, 0, 500));
        let d = window_step(10, 10, 500, 1);
        assert_eq!((d.allowed, d.remaining, d.retry_after_ms), (false, 0, 500));
        let d = window_step(8, 10, 400, 5);
        assert_eq!((d.allowed, d.remaining), (false, 2));
    }

    #[test]
    fn config_errors() {
        let mut c = StateConfig { backend: StateBackend::Redis, ..StateConfig::default() };
        assert!(matches!(StateStore::from_config(&c), Err(StateConfigError::MissingUrl)));
        c.redis_url = Some(toml::Spanned::new(0..0, "nonsense".into()));
        assert!(matches!(StateStore::from_config(&c), Err(StateConfigError::BadUrl(_))));
        c.redis_url = Some(toml::Spanned::new(0..0, "redis://127.0.0.1:1".into()));
        assert_eq!(StateStore::from_config(&c).unwrap().backend(), "redis");
    }
}
