//! The shared `state` backend: Redis. Every operation is one Lua script (sent by EVALSHA; when
//! Redis does not know it yet, `redis::Script` loads it with SCRIPT LOAD and sends it again), so the
//! check and the update are one atomic step on the server, and times come from Redis's clock
//! (`TIME`), so gateways with skewed clocks agree. Each script touches exactly one key, so the
//! backend is Redis Cluster-safe (see `ScopedState::key` for how keys are hashed).
//!
//! Connections: one multiplexed connection per gateway (`redis`'s `MultiplexedConnection`, which
//! pipelines concurrent requests), kept by this module as a `Link`. It is made lazily, at the
//! first operation, so a gateway starts while Redis is down; an operation waits for a connection
//! being made (the first one, or the one replacing a connection found dead), within its deadline.
//! A failed attempt (refused, or no answer to the client's handshake within the connect timeout:
//! a server that accepts connections and answers nothing) opens a circuit breaker: for
//! [`RETRY_INTERVAL`], operations fail at once with that attempt's error (the real cause:
//! refused, wrong password, no such database, no answer), so limiters apply their
//! `on_state_error` policy at normal latency during an outage; then the next operation starts
//! another attempt, which runs in the background while that operation and the others still fail
//! at once, so Redis coming back is noticed within [`RETRY_INTERVAL`] of traffic and no operation
//! waits on an attempt during an outage. Every operation runs under the `[state] timeout_ms` deadline,
//! connecting and a retry included: past it, it fails as `unavailable`, nothing waits longer. A
//! connection on which nothing at all was answered during an operation's whole deadline (a host
//! gone without closing it, a Redis stalled) opens the breaker too (`RedisStore::silent_since`).
//!
//! Retrying an operation whose connection failed (`RedisStore::run`): a connection-level error
//! (an I/O error: broken pipe, reset, end of stream) does not tell whether the request reached
//! Redis. redis-rs reports "the connection's driver had already stopped, nothing was sent" and
//! "the connection dropped with the request written, perhaps executed" alike, as a broken pipe.
//! So an operation that is safe to repeat (GET, SET, DEL, the readiness probe) is retried once on
//! a new connection after any connection-level error; a script that must not run twice (the
//! limiters' steps and `incr`, which count) is retried only when it is known not to have been sent: before
//! using a connection that has been quiet for [`QUIET_CHECK`], it sends a PING, which fails when
//! the connection died unnoticed (Redis restarted, or closed it as idle), before the script was
//! sent; the script then goes to a new connection. Once the script is sent, a connection failure
//! leaves it failed (the limiter applies its policy to that one request). A command error (OOM,
//! NOPERM, WRONGTYPE, a script error) is Redis's answer, never retried.
//!
//! An operation's error names the operation before the cause (`GET: connection lost: broken
//! pipe`): redis-rs's own text for a dropped connection is a bare "broken pipe", which says
//! nothing an operator can act on. Redis's address is not in it, as plugins are given the text:
//! the gateway's log lines add it ([`RedisStore::address`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

use super::{Decision, Gcra, MAX_VALUE_BYTES, StateConfigError, StateError, StateStats};
use crate::config::RedisFiles;

/// After a failed connection attempt, how long operations fail at once before the next attempt
/// (Redis coming back is noticed within this, and a dead Redis sees at most one attempt per
/// interval from each gateway).
pub const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// A connection with no answer for this long is checked with a PING before a script that must
/// not run twice is sent on it (one round trip, only while traffic is this sparse): a connection
/// in use answers more often, and a Redis restart takes longer than this.
pub const QUIET_CHECK: Duration = Duration::from_millis(20);

/// Expiry of the key the readiness probe writes (it deletes it too; this bounds what a probe cut
/// short leaves).
const PROBE_TTL_MS: u64 = 1000;

/// GCRA token bucket: `KEYS[1]` holds the theoretical arrival time (ms, Redis clock).
/// ARGV: emission interval (ms), burst, cost. Returns {allowed, remaining, reset_ms, retry_ms}.
/// Mirrors `Gcra::step`.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local tolerance = emission * burst
local used_after = tat + emission * cost - now
if used_after <= tolerance + 0.000001 then
  local ttl = math.max(1, math.ceil(used_after))
  redis.call('SET', KEYS[1], string.format('%.4f', now + used_after), 'PX', ttl)
  local remaining = math.max(0, math.floor((tolerance - used_after) / emission + 0.000000001))
  return {1, remaining, math.ceil(used_after), 0}
end
local used = tat - now
local remaining = math.max(0, math.floor((tolerance - used) / emission + 0.000000001))
return {0, remaining, math.max(0, math.ceil(used)), math.max(1, math.ceil(used_after - tolerance))}
";

/// Fixed window starting at the first hit: `KEYS[1]` holds the count, expiring with the window.
/// ARGV: limit, window (ms), cost. Returns {allowed, remaining, reset_ms, retry_ms}.
/// Mirrors `window_step`.
const WINDOW: &str = r"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local count = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  count = 0
  ttl = window
end
if count + cost <= limit then
  if count == 0 then
    redis.call('SET', KEYS[1], cost, 'PX', ttl)
  else
    redis.call('INCRBY', KEYS[1], cost)
  end
  return {1, limit - count - cost, ttl, 0}
end
return {0, math.max(0, limit - count), ttl, math.max(1, ttl)}
";

/// Sliding window: `KEYS[1]` is a hash of the current window's index `i` (Redis clock ms divided by
/// the window) and the units counted in the previous (`p`) and current (`c`) windows.
/// ARGV: limit, window (ms), cost. Returns {allowed, remaining, reset_ms, retry_ms}.
/// Mirrors `sliding_step` and `MemoryStore::sliding_window`.
const SLIDING: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local index = math.floor(now / w)
local e = now - index * w
local v = redis.call('HMGET', KEYS[1], 'i', 'p', 'c')
local i = tonumber(v[1])
local prev, curr = 0, 0
if i == index then
  prev, curr = tonumber(v[2]) or 0, tonumber(v[3]) or 0
elseif i == index - 1 then
  prev = tonumber(v[3]) or 0
end
local estimate = prev * (w - e) / w + curr
if estimate + cost <= limit + 0.000000001 then
  redis.call('HSET', KEYS[1], 'i', index, 'p', prev, 'c', curr + cost)
  redis.call('PEXPIRE', KEYS[1], 2 * w - e)
  local reset = w - e
  if curr + cost > 0 then reset = 2 * w - e end
  return {1, math.max(0, math.floor(limit - estimate - cost + 0.000000001)), math.ceil(reset), 0}
end
local retry
if curr + cost <= limit and prev > 0 then
  retry = (w - (limit - curr - cost) * w / prev) - e
elseif cost <= limit and curr > 0 then
  retry = (w - e) + math.max(0, w - (limit - cost) * w / curr)
else
  retry = 2 * w - e
end
local reset = w - e
if curr > 0 then reset = 2 * w - e end
return {0, math.max(0, math.floor(limit - estimate + 0.000000001)), math.ceil(reset), math.max(1, math.ceil(retry))}
";

/// Counter: INCRBY, with an expiry set only when this call created the key.
/// ARGV: delta, ttl (ms, 0: none). Returns the new value.
const INCR: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
";

/// Readiness probe: every command the scripts and the plain operations use, through the same
/// EVALSHA path, on `KEYS[1]` only, which it leaves deleted (and expiring after `ARGV[1]` ms should
/// a command fail half-way). A Redis that refuses writes (`maxmemory` reached with `noeviction`),
/// or a user missing a permission, fails it as it fails the limiters.
const PROBE: &str = r"
redis.call('TIME')
redis.call('SET', KEYS[1], '0', 'PX', ARGV[1])
redis.call('GET', KEYS[1])
redis.call('PTTL', KEYS[1])
redis.call('EXISTS', KEYS[1])
redis.call('INCRBY', KEYS[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'i', 0)
redis.call('HMGET', KEYS[1], 'i')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
";

/// The Redis backend.
pub struct RedisStore {
    shared: Arc<Shared>,
    timeout: Duration,
    scripts: Scripts,
    stats: StateStats,
    local: super::memory::MemoryStore,
    /// `[state] required_for_ready`: `/ready` fails while this store fails its probe.
    required_for_ready: bool,
}

struct Scripts {
    acquire: redis::Script,
    window: redis::Script,
    sliding: redis::Script,
    incr: redis::Script,
    probe: redis::Script,
}

/// What the store and its connection attempts share.
struct Shared {
    /// Replaced when a reload reads new credentials or CAs ([`RedisStore::replace_client`]);
    /// read only when a connection is made.
    client: std::sync::Mutex<redis::Client>,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    /// The connection's state; operations waiting for an attempt watch it.
    link: watch::Sender<Link>,
    /// Numbers connections, so a failure is pinned on the connection that had it.
    next_id: AtomicU64,
    /// Where it connects, for messages ([`address`]): a reload may rotate credentials, never
    /// the URL (that builds a new store).
    address: Arc<str>,
    /// The origin of [`Connection::answered_ms`].
    epoch: Instant,
}

/// The state of the store's connection to Redis.
#[derive(Clone)]
enum Link {
    /// Nothing tried yet: the first operation starts an attempt.
    Idle,
    /// An attempt is running (the first one, or the replacement of a connection found dead):
    /// operations wait for it, within their deadline.
    Connecting,
    /// Connected.
    Up(Arc<Connection>),
    /// The last attempt failed with `error`: operations fail at once with it until `retry_at`,
    /// when the next operation starts an attempt (the circuit breaker is open).
    Down { error: Arc<str>, retry_at: Instant },
    /// An attempt after a failure is running: only the operation that started it waits for it,
    /// the others still fail at once with `error`.
    Retrying { error: Arc<str> },
}

/// One connection to Redis.
struct Connection {
    conn: MultiplexedConnection,
    id: u64,
    /// When Redis last answered on it (any answer, errors included): ms since `Shared::epoch`.
    answered_ms: AtomicU64,
}

/// Whether an operation may be sent again after a connection-level failure (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Repeating it leaves Redis as running it once (reads, SET, DEL, the probe).
    Safe,
    /// It must not run twice (the scripts that count): sent again only when it was not sent.
    IfUnsent,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Moves the link to `next` if `when` holds for it, and then starts a connection attempt
    /// (on this runtime; it runs to its end even if the operation that started it gives up).
    /// Returns whether it did: of operations racing, exactly one starts each attempt.
    fn begin_attempt(self: &Arc<Self>, when: impl FnOnce(&Link) -> bool, next: Link) -> bool {
        let started = self.link.send_if_modified(|link| {
            if when(link) {
                *link = next;
                true
            } else {
                false
            }
        });
        if started {
            tokio::spawn(self.clone().attempt());
        }
        started
    }

    /// One connection attempt (connect, authenticate, select the database), its outcome stored.
    async fn attempt(self: Arc<Self>) {
        let client = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let outcome = tokio::time::timeout(self.connect_timeout, client.get_multiplexed_async_connection_with_config(&self.config)).await;
        let was_down = matches!(&*self.link.borrow(), Link::Retrying { .. });
        let next = match outcome {
            Ok(Ok(conn)) => {
                if was_down {
                    tracing::info!(backend = "redis", "state backend (Redis at {}) reachable again", self.address);
                }
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                Link::Up(Arc::new(Connection { conn, id, answered_ms: AtomicU64::new(self.now_ms()) }))
            }
            Ok(Err(e)) => Link::Down { error: format!("cannot connect: {}", error_text(&e)).into(), retry_at: Instant::now() + RETRY_INTERVAL },
            Err(_) => Link::Down {
                error: format!("cannot connect: no answer within {} ms", self.connect_timeout.as_millis()).into(),
                retry_at: Instant::now() + RETRY_INTERVAL,
            },
        };
        // Only an attempt moves the link out of `Connecting` or `Retrying`, and only one runs.
        self.link.send_replace(next);
    }
}

/// Where `client` connects, as messages name it: `host:port` (with ` (TLS)` for `rediss://`) or
/// a Unix socket's path; never the credentials.
fn address(client: &redis::Client) -> Arc<str> {
    let addr = client.get_connection_info().addr();
    match addr {
        redis::ConnectionAddr::TcpTls { .. } => format!("{addr} (TLS)").into(),
        _ => addr.to_string().into(),
    }
}

/// What is wrong with `url`, which redis refused, said without its credentials: not a URL, not
/// a Redis scheme, no host, or a database that is not a number.
fn url_problem(url: &str) -> String {
    const EXPECTED: &str = "expected redis://[user:password@]host[:port][/db] (rediss:// for TLS)";
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return format!("not a Redis URL ({e}): {EXPECTED}"),
    };
    let scheme = parsed.scheme();
    if !matches!(scheme, "redis" | "rediss" | "unix" | "redis+unix") {
        return format!("the scheme is `{scheme}`, not `redis` or `rediss`: {EXPECTED}");
    }
    // A host and a database number are for TCP; a Unix socket's URL is a path.
    let tcp = matches!(scheme, "redis" | "rediss");
    if tcp && parsed.host_str().is_none_or(str::is_empty) {
        return format!("no host: {EXPECTED}");
    }
    let db = parsed.path().trim_start_matches('/');
    if tcp && !db.is_empty() && db.parse::<u32>().is_err() {
        let shown = crate::runtime::host::log::truncate(db, 32);
        return format!("`/{}` is not a database number (`/0`, `/1`, ...): {EXPECTED}", shown.escape_debug());
    }
    format!("not a Redis URL: {EXPECTED}")
}

/// The client for `url` (`redis://`, or `rediss://` for TLS), checked here, with what `files`
/// holds: a PEM CA bundle the server's certificate must chain to instead of the built-in Mozilla
/// roots (webpki-roots: nothing is read from the system at connect time), a client certificate
/// and key for a Redis that asks for one, and the password sent with `AUTH`.
pub fn client(url: &str, files: &RedisFiles) -> Result<redis::Client, StateConfigError> {
    // redis' own message names its error kind (`InvalidClientConfig`): say what is wrong.
    let bad_url = || StateConfigError::BadUrl(url_problem(url));
    let mut info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|_| bad_url())?;
    if let Some(password) = &files.password {
        if info.redis_settings().password().is_some() {
            return Err(StateConfigError::PasswordTwice);
        }
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    if files.ca_pem.is_none() && files.client.is_none() {
        return redis::Client::open(info).map_err(|_| bad_url());
    }
    if !tls {
        return Err(if files.ca_pem.is_some() { StateConfigError::CaWithoutTls } else { StateConfigError::ClientCertWithoutTls });
    }
    // Checked here, as the connection would only find it at the first operation.
    if let Some(pem) = &files.ca_pem {
        let parsed: Vec<_> = <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(pem).collect();
        if parsed.is_empty() || parsed.iter().any(Result::is_err) {
            return Err(StateConfigError::BadCa("no PEM certificate in it, or one that does not parse".into()));
        }
    }
    let client_tls = files.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.clone() });
    let certificates = redis::TlsCertificates { client_tls, root_cert: files.ca_pem.clone() };
    // Parses the client certificate and key too: a bad one is refused at load.
    redis::Client::build_with_tls(info, certificates).map_err(|e| {
        if files.client.is_some() { StateConfigError::BadClientCert(e.to_string()) } else { StateConfigError::BadCa(e.to_string()) }
    })
}

impl RedisStore {
    /// A store for `url` (checked here; nothing is contacted until the first operation).
    /// `max_keys` bounds the local fallback store (`acquire-local`, `window-local`).
    pub fn new(url: &str, max_keys: usize, connect_timeout: Duration, timeout: Duration) -> Result<Self, StateConfigError> {
        Ok(Self::with_client(client(url, &RedisFiles::default())?, max_keys, connect_timeout, timeout))
    }

    /// A store connecting with `client` (see [`client`]).
    pub fn with_client(client: redis::Client, max_keys: usize, connect_timeout: Duration, timeout: Duration) -> Self {
        // No response timeout of redis' own: each operation's deadline covers its whole exchange,
        // and a timeout is not taken as a dead connection (see `connection_level`).
        let config = AsyncConnectionConfig::new().set_connection_timeout(Some(connect_timeout)).set_response_timeout(None);
        let shared = Shared {
            address: address(&client),
            client: std::sync::Mutex::new(client),
            config,
            connect_timeout,
            link: watch::Sender::new(Link::Idle),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        Self {
            shared: Arc::new(shared),
            timeout,
            scripts: Scripts {
                acquire: redis::Script::new(ACQUIRE),
                window: redis::Script::new(WINDOW),
                sliding: redis::Script::new(SLIDING),
                incr: redis::Script::new(INCR),
                probe: redis::Script::new(PROBE),
            },
            stats: StateStats::default(),
            local: super::memory::MemoryStore::new(max_keys),
            required_for_ready: false,
        }
    }

    /// Connects with `client` from now on: a reload read a rotated password, CA or client
    /// certificate. The connection in use stays (it is authenticated already, and Redis keeps
    /// it when a password changes); the next one made, after Redis closes it or the gateway
    /// finds it dead, uses the new settings.
    pub fn replace_client(&self, client: redis::Client) {
        *self.shared.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = client;
    }

    /// This store, with `/ready` failing while it fails its probe (`[state] required_for_ready`).
    #[must_use]
    pub fn with_required_for_ready(mut self, required: bool) -> Self {
        self.required_for_ready = required;
        self
    }

    /// Whether `/ready` fails while this store fails its probe.
    pub fn required_for_ready(&self) -> bool {
        self.required_for_ready
    }

    /// This gateway's local store, for fail-open limiters while Redis is unavailable.
    pub fn local(&self) -> &super::memory::MemoryStore {
        &self.local
    }

    /// Health counters (operations that found Redis unavailable).
    pub fn stats(&self) -> &StateStats {
        &self.stats
    }

    /// The longest one operation can wait: connecting, then the exchange. (Both fit in
    /// `timeout`, the operation's deadline; this stays the bound callers were given.)
    pub fn max_wait(&self) -> Duration {
        self.shared.connect_timeout + self.timeout
    }

    /// The connection to use, waiting (until `deadline`) for an attempt that is under way, except
    /// one after a failure, which runs on its own while every operation fails at once: during
    /// an outage no operation waits, not even the one that starts each retry.
    async fn connection(&self, deadline: tokio::time::Instant) -> Result<Arc<Connection>, StateError> {
        let mut link = self.shared.link.subscribe();
        loop {
            let current = link.borrow_and_update().clone();
            match current {
                Link::Up(connection) => return Ok(connection),
                Link::Connecting => {}
                Link::Retrying { error } => return Err(StateError::Unavailable(error.to_string())),
                Link::Down { error, retry_at } => {
                    if Instant::now() >= retry_at {
                        let still = |l: &Link| matches!(l, Link::Down { retry_at: r, .. } if *r == retry_at);
                        self.shared.begin_attempt(still, Link::Retrying { error: error.clone() });
                    }
                    return Err(StateError::Unavailable(error.to_string()));
                }
                Link::Idle => {
                    self.shared.begin_attempt(|l| matches!(l, Link::Idle), Link::Connecting);
                    continue;
                }
            }
            match tokio::time::timeout_at(deadline, link.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(StateError::Unavailable("connection closed".into())),
                Err(_) => {
                    return Err(StateError::Unavailable(format!("connecting: no answer within {} ms", self.timeout.as_millis())));
                }
            }
        }
    }

    /// `connection` found dead by `error`: the first to see it replaces it (operations wait for
    /// the new one; if Redis refuses it, the breaker opens).
    fn lost(&self, connection: &Connection, error: &redis::RedisError) {
        let current = |l: &Link| matches!(l, Link::Up(c) if c.id == connection.id);
        if self.shared.begin_attempt(current, Link::Connecting) {
            let address = &*self.shared.address;
            tracing::warn!(backend = "redis", "connection to the state backend (Redis at {address}) lost ({error}); reconnecting");
        }
    }

    /// Runs one operation (`name`: the command, or the script and what it does, for its error)
    /// under the per-operation deadline, on a connection (made, replaced or refused as the module
    /// doc says), once more after a connection-level failure when `replay` allows (see the module
    /// doc for which failures are which). Its error names Redis's address and `name`.
    async fn run<T, F, Fut>(&self, name: &str, replay: Replay, op: F) -> Result<T, StateError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let started_ms = self.shared.now_ms();
        let attempts = async {
            let mut connection = self.connection(deadline).await?;
            if replay == Replay::IfUnsent && self.is_quiet(&connection) {
                // A connection-level failure here is one before anything of this operation was
                // sent: it goes to a new connection. Any answer (even NOPERM) shows it alive.
                let ping = &redis::cmd("PING");
                if let Err(e) = self.exchange(&connection, &|mut conn| async move { ping.query_async::<()>(&mut conn).await }).await
                    && connection_level(&e)
                {
                    self.lost(&connection, &e);
                    connection = self.connection(deadline).await?;
                }
            }
            match self.exchange(&connection, &op).await {
                Err(e) if connection_level(&e) && replay == Replay::Safe => {
                    self.lost(&connection, &e);
                    let connection = self.connection(deadline).await?;
                    self.exchange(&connection, &op).await.map_err(|e| self.failed(&connection, e))
                }
                result => result.map_err(|e| self.failed(&connection, e)),
            }
        };
        let result = match tokio::time::timeout_at(deadline, attempts).await {
            Ok(result) => result,
            Err(_) => {
                let error = format!("no answer within {} ms", self.timeout.as_millis());
                self.silent_since(started_ms, &error);
                Err(StateError::Unavailable(error))
            }
        };
        result.map_err(|e| match e {
            StateError::Unavailable(cause) => StateError::Unavailable(format!("{name}: {cause}")),
            other => other,
        })
    }

    /// An operation started at `started_ms` got no answer within its deadline. If its connection
    /// has answered nothing at all since then (no operation's reply, not even an error), Redis has
    /// stopped answering on it: a host that vanished without closing the connection, or a Redis
    /// stalled. Waiting on it would cost every operation its whole deadline, so the breaker opens
    /// as for a refused connection: operations fail at once for [`RETRY_INTERVAL`], then one
    /// tries a new connection. (A connection that answered something meanwhile is slow, not
    /// gone, and is kept.)
    fn silent_since(&self, started_ms: u64, error: &str) {
        let stalled = self.shared.link.send_if_modified(|link| {
            if matches!(link, Link::Up(c) if c.answered_ms.load(Ordering::Relaxed) < started_ms) {
                *link = Link::Down { error: error.into(), retry_at: Instant::now() + RETRY_INTERVAL };
                true
            } else {
                false
            }
        });
        if stalled {
            let address = &*self.shared.address;
            tracing::warn!(backend = "redis", "the state backend (Redis at {address}) stopped answering ({error}); dropping the connection");
        }
    }

    /// Sends `op` on `connection`, noting when Redis answers (an error reply is an answer too).
    async fn exchange<T, F, Fut>(&self, connection: &Connection, op: &F) -> redis::RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let result = op(connection.conn.clone()).await;
        if !matches!(&result, Err(e) if connection_level(e)) {
            connection.answered_ms.store(self.shared.now_ms(), Ordering::Relaxed);
        }
        result
    }

    /// Where this store connects, as the gateway's log lines name it (`host:port`, ` (TLS)` for
    /// `rediss://`, or a Unix socket's path; never the credentials). Not in its errors, which
    /// plugins see.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// The error of an operation that is not retried (a connection found dead is replaced, and
    /// the error says so: redis-rs says only "broken pipe").
    fn failed(&self, connection: &Connection, e: redis::RedisError) -> StateError {
        if connection_level(&e) {
            self.lost(connection, &e);
            return StateError::Unavailable(format!("connection lost: {}", error_text(&e)));
        }
        unavailable(e)
    }

    fn is_quiet(&self, connection: &Connection) -> bool {
        let quiet = u64::try_from(QUIET_CHECK.as_millis()).unwrap_or(u64::MAX);
        self.shared.now_ms().saturating_sub(connection.answered_ms.load(Ordering::Relaxed)) >= quiet
    }

    async fn decision(&self, name: &str, script: &redis::Script, key: &str, args: [String; 3], limit: u64) -> Result<Decision, StateError> {
        let mut invocation = script.key(key);
        for a in &args {
            invocation.arg(a);
        }
        let invocation = &invocation;
        let r: Vec<i64> = self.run(name, Replay::IfUnsent, |mut conn| async move { invocation.invoke_async(&mut conn).await }).await?;
        let [allowed, remaining, reset, retry] = r[..] else {
            return Err(StateError::Unavailable(format!("unexpected script answer {r:?}")));
        };
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Decision {
            allowed: allowed == 1,
            remaining: n(remaining),
            limit,
            reset_after_ms: n(reset),
            retry_after_ms: n(retry),
        })
    }

    /// See `StateStore::acquire`.
    pub async fn acquire(&self, key: &str, gcra: &Gcra, cost: u64) -> Result<Decision, StateError> {
        let args = [format!("{:.6}", gcra.emission_ms), gcra.burst.to_string(), cost.to_string()];
        self.decision("token bucket step (EVALSHA)", &self.scripts.acquire, key, args, gcra.burst).await
    }

    /// See `StateStore::window`.
    pub async fn window(&self, key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
        if window_ms == 0 {
            return Err(StateError::Invalid("window-ms must be at least 1".into()));
        }
        let args = [limit.to_string(), window_ms.to_string(), cost.to_string()];
        self.decision("fixed window step (EVALSHA)", &self.scripts.window, key, args, limit).await
    }

    /// See `StateStore::sliding_window`.
    pub async fn sliding_window(&self, key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
        if window_ms == 0 {
            return Err(StateError::Invalid("window-ms must be at least 1".into()));
        }
        let args = [limit.to_string(), window_ms.to_string(), cost.to_string()];
        self.decision("sliding window step (EVALSHA)", &self.scripts.sliding, key, args, limit).await
    }

    /// See `StateStore::incr`.
    pub async fn incr(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StateError> {
        let delta = i64::try_from(delta).map_err(|_| StateError::Invalid("delta too large".into()))?;
        let mut invocation = self.scripts.incr.key(key);
        invocation.arg(delta).arg(ttl_ms);
        let invocation = &invocation;
        let v: i64 = self.run("incr (EVALSHA)", Replay::IfUnsent, |mut conn| async move { invocation.invoke_async(&mut conn).await }).await?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    /// See `StateStore::get`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let cmd = &redis::cmd("GET").arg(key).to_owned();
        self.run("GET", Replay::Safe, |mut conn| async move { cmd.query_async(&mut conn).await }).await
    }

    /// See `StateStore::set`.
    pub async fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StateError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(StateError::Invalid(format!("value larger than {MAX_VALUE_BYTES} bytes")));
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if ttl_ms > 0 {
            cmd.arg("PX").arg(ttl_ms);
        }
        let cmd = &cmd;
        self.run("SET", Replay::Safe, |mut conn| async move { cmd.query_async::<()>(&mut conn).await }).await
    }

    /// See `StateStore::delete`.
    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        let cmd = &redis::cmd("DEL").arg(key).to_owned();
        self.run("DEL", Replay::Safe, |mut conn| async move { cmd.query_async::<()>(&mut conn).await }).await
    }

    /// See `StateStore::clear_namespace`: every key starting with `prefix`, found with `SCAN`
    /// (a batch at a time, never `KEYS`, which blocks Redis) and removed with `UNLINK` (freed
    /// off Redis' main thread), each step within the store's timeout; the local fallback
    /// store's keys of the namespace too. Returns how many keys Redis removed plus the local ones.
    pub async fn clear_namespace(&self, prefix: &str) -> Result<usize, StateError> {
        let pattern = format!("{}*", glob_escaped(prefix));
        let mut cursor: u64 = 0;
        let mut removed = self.local.clear_namespace(prefix);
        loop {
            let scan = &redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_BATCH).to_owned();
            let (next, keys): (u64, Vec<String>) = self.run("SCAN", Replay::Safe, |mut conn| async move { scan.query_async(&mut conn).await }).await?;
            if !keys.is_empty() {
                let unlink = &redis::cmd("UNLINK").arg(&keys).to_owned();
                let n: usize = self.run("UNLINK", Replay::Safe, |mut conn| async move { unlink.query_async(&mut conn).await }).await?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Whether Redis would serve the limiters now: runs a script through the same path (EVALSHA,
    /// EVAL fallback) using the same commands, writing `key` with a short expiry and deleting it.
    /// Fails as they would: Redis unreachable, out of memory for writes, a permission missing.
    pub async fn probe(&self, key: &str) -> Result<(), StateError> {
        let mut invocation = self.scripts.probe.key(key);
        invocation.arg(PROBE_TTL_MS);
        let invocation = &invocation;
        self.run("readiness probe (EVALSHA)", Replay::Safe, |mut conn| async move { invocation.invoke_async::<()>(&mut conn).await }).await
    }
}

/// Keys one `SCAN` step looks at (a hint to Redis: each step stays short).
const SCAN_BATCH: usize = 1000;

/// `s` with the characters a `SCAN MATCH` pattern gives a meaning (`*`, `?`, `[`, `]`, `\`)
/// escaped, so it matches itself.
fn glob_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `e` says the connection is unusable (and no answer from Redis): I/O errors (broken
/// pipe, reset, end of stream) and a protocol the client could not parse. Command errors are
/// answers; a timeout is our deadline's, not the connection's (Redis may just be slow).
fn connection_level(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error()
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(error_text(&e))
}

/// `e` as one line: a parse error quotes what the server sent (a server that is no Redis, an
/// HTTP one say), line breaks and control characters included, and this text reaches log lines.
fn error_text(e: &redis::RedisError) -> String {
    crate::runtime::host::log::one_line(&e.to_string()).into_owned()
}

#[cfg(test)]
mod tests {
    //! The Lua scripts against a real `redis-server` (skipped, loudly, where none is installed;
    //! `tests/run.sh` installs it), checked against the memory backend's arithmetic.

    use std::process::{Child, Command, Stdio};

    use super::*;
    use crate::state::memory::MemoryStore;

    #[test]
    fn a_refused_url_is_said_what_is_wrong_with_it_without_its_password() {
        let problem = |url: &str| match client(url, &RedisFiles::default()) {
            Err(StateConfigError::BadUrl(message)) => message,
            other => panic!("{url}: {other:?}"),
        };
        assert!(problem("redis://:hunter2@127.0.0.1:6379/notadb").starts_with("`/notadb` is not a database number"));
        assert!(problem("redis:///0").starts_with("no host"), "{}", problem("redis:///0"));
        assert!(problem("redis://:hunter2@/0").contains("empty host"), "{}", problem("redis://:hunter2@/0"));
        assert!(problem("https://user:hunter2@cache:6379").starts_with("the scheme is `https`"));
        for url in ["redis://:hunter2@127.0.0.1:6379/notadb", "redis://:hunter2@/0", "https://user:hunter2@cache:6379", "hunter2"] {
            assert!(!problem(url).contains("hunter2"), "{url}: {}", problem(url));
        }
        assert!(client("redis://:hunter2@127.0.0.1:6379/3", &RedisFiles::default()).is_ok());
    }

    struct Server(Child, u16);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn server() -> Option<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            eprintln!("SKIPPED: redis-server is not installed (tests/run.sh installs it)");
            return None;
        };
        let server = Server(child, port);
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start on port {port}");
    }

    #[tokio::test]
    async fn scripts_match_the_memory_backend() {
        let Some(server) = server() else { return };
        let url = format!("redis://127.0.0.1:{}", server.1);
        let redis = RedisStore::new(&url, 100, Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        let memory = MemoryStore::new(100);

        let gcra = Gcra::new(10, 60_000, 3).unwrap();
        for i in 0..5 {
            let r = redis.acquire("b", &gcra, 1).await.unwrap();
            let m = memory.acquire("b", &gcra, 1).unwrap();
            assert_eq!((r.allowed, r.remaining, r.limit), (m.allowed, m.remaining, m.limit), "step {i}");
            assert!(r.reset_after_ms.abs_diff(m.reset_after_ms) <= 50 && r.retry_after_ms.abs_diff(m.retry_after_ms) <= 50);
        }
        let refused = redis.acquire("b", &gcra, 1).await.unwrap();
        assert!(!refused.allowed && (5_900..=6_000).contains(&refused.retry_after_ms), "{refused:?}");

        for i in 0..4 {
            let r = redis.window("w", 2, 60_000, 1).await.unwrap();
            let m = memory.window("w", 2, 60_000, 1).unwrap();
            assert_eq!((r.allowed, r.remaining, r.limit), (m.allowed, m.remaining, m.limit), "step {i}");
            assert!(r.reset_after_ms.abs_diff(m.reset_after_ms) <= 50);
        }

        for i in 0..3 {
            let r = redis.sliding_window("s", 2, 60_000, 1).await.unwrap();
            let m = memory.sliding_window("s", 2, 60_000, 1).unwrap();
            assert_eq!((r.allowed, r.remaining, r.limit), (m.allowed, m.remaining, m.limit), "sliding step {i}");
            assert_eq!(r.allowed, i < 2, "sliding step {i}");
        }

        assert_eq!(redis.incr("c", 2, 50).await.unwrap(), 2);
        assert_eq!(redis.incr("c", 3, 50).await.unwrap(), 5);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(redis.incr("c", 1, 50).await.unwrap(), 1, "the counter expired with its first ttl");

        assert_eq!(redis.get("v").await.unwrap(), None);
        redis.set("v", b"\xffbytes", 0).await.unwrap();
        assert_eq!(redis.get("v").await.unwrap(), Some(b"\xffbytes".to_vec()));
        redis.delete("v").await.unwrap();
        assert_eq!(redis.get("v").await.unwrap(), None);
    }

    #[test]
    fn an_error_quoting_what_the_server_sent_is_one_line() {
        let e = redis::RedisError::from(std::io::Error::other("Parse error\nUnexpected `84`\nWARN forged line"));
        let text = error_text(&e);
        assert!(!text.contains('\n') && text.contains("Unexpected `84`"), "{text}");
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_as_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let redis = RedisStore::new(&format!("redis://127.0.0.1:{port}"), 10, Duration::from_millis(100), Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let e = redis.window("w", 1, 1000, 1).await.unwrap_err();
        assert!(matches!(e, StateError::Unavailable(_)), "{e:?}");
        assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
        assert!(redis.local().window("w", 1, 1000, 1).unwrap().allowed, "the local fallback still works");
    }
}
