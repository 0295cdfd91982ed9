//! The shared `state` backend: Redis. Every operation is one Lua script (sent by EVALSHA, with
//! EVAL as the fallback when Redis does not know it yet, which `redis::Script` does), so the
//! check and the update are one atomic step on the server, and times come from Redis's clock
//! (`TIME`), so gateways with skewed clocks agree. Each script touches exactly one key, so the
//! backend is Redis Cluster-safe (see `ScopedState::key` for how keys are hashed).
//!
//! Connections: one multiplexed connection per gateway through `redis`'s `ConnectionManager`,
//! which pipelines concurrent requests and reconnects by itself after Redis goes away. It is made
//! lazily, at the first operation, so a gateway starts while Redis is down. Every operation runs
//! under the `[state] timeout_ms` deadline: past it, it fails as `unavailable`, nothing waits longer.

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Decision, Gcra, MAX_VALUE_BYTES, StateError, StateStats};

/// Longest wait between two reconnection attempts: Redis coming back is noticed within this.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Shortest wait between two reconnection attempts (don't spin against a dead server).
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(20);

/// Reconnection attempts per failed request before the error is returned (the per-operation
/// deadline bounds the total anyway; requests after it trigger new attempts).
const RECONNECT_RETRIES: usize = 2;

/// GCRA token bucket: KEYS[1] holds the theoretical arrival time (ms, Redis clock).
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

/// Fixed window starting at the first hit: KEYS[1] holds the count, expiring with the window.
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

/// Sliding window: KEYS[1] is a hash of the current window's index `i` (Redis clock ms divided by
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

/// The Redis backend.
pub struct RedisStore {
    client: redis::Client,
    connection: OnceLock<ConnectionManager>,
    connect_timeout: Duration,
    timeout: Duration,
    scripts: Scripts,
    stats: StateStats,
    local: super::memory::MemoryStore,
}

struct Scripts {
    acquire: redis::Script,
    window: redis::Script,
    sliding: redis::Script,
    incr: redis::Script,
}

impl RedisStore {
    /// A store for `url` (checked here; nothing is contacted until the first operation).
    /// `max_keys` bounds the local fallback store (`acquire-local`, `window-local`).
    pub fn new(url: &str, max_keys: usize, connect_timeout: Duration, timeout: Duration) -> Result<Self, String> {
        // redis' own message names its error kind (`InvalidClientConfig`): say what is expected.
        let client = redis::Client::open(url)
            .map_err(|_| "not a Redis URL: expected redis://[user:password@]host[:port][/db] (rediss:// for TLS)".to_owned())?;
        Ok(Self {
            client,
            connection: OnceLock::new(),
            connect_timeout,
            timeout,
            scripts: Scripts {
                acquire: redis::Script::new(ACQUIRE),
                window: redis::Script::new(WINDOW),
                sliding: redis::Script::new(SLIDING),
                incr: redis::Script::new(INCR),
            },
            stats: StateStats::default(),
            local: super::memory::MemoryStore::new(max_keys),
        })
    }

    /// This gateway's local store, for fail-open limiters while Redis is unavailable.
    pub fn local(&self) -> &super::memory::MemoryStore {
        &self.local
    }

    /// Health counters (operations that found Redis unavailable).
    pub fn stats(&self) -> &StateStats {
        &self.stats
    }

    fn connection(&self) -> Result<ConnectionManager, StateError> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(MIN_RECONNECT_DELAY)
            .set_max_delay(MAX_RECONNECT_DELAY);
        let manager = self.client.get_connection_manager_lazy(config).map_err(unavailable)?;
        // Two first calls racing both build one; the loser's is dropped unused.
        let _ = self.connection.set(manager);
        self.connection.get().cloned().ok_or_else(|| StateError::Unavailable("no connection".into()))
    }

    /// The longest one operation can wait: connecting, then the exchange.
    pub fn max_wait(&self) -> Duration {
        self.connect_timeout + self.timeout
    }

    /// Runs one Redis exchange under the per-operation deadline.
    async fn timed<T>(&self, f: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StateError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(StateError::Unavailable(format!("no answer within {} ms", self.timeout.as_millis()))),
        }
    }

    async fn decision(&self, script: &redis::Script, key: &str, args: [String; 3], limit: u64) -> Result<Decision, StateError> {
        let mut conn = self.connection()?;
        let mut invocation = script.key(key);
        for a in &args {
            invocation.arg(a);
        }
        let r: Vec<i64> = self.timed(invocation.invoke_async(&mut conn)).await?;
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
        self.decision(&self.scripts.acquire, key, args, gcra.burst).await
    }

    /// See `StateStore::window`.
    pub async fn window(&self, key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
        if window_ms == 0 {
            return Err(StateError::Invalid("window-ms must be at least 1".into()));
        }
        self.decision(&self.scripts.window, key, [limit.to_string(), window_ms.to_string(), cost.to_string()], limit).await
    }

    /// See `StateStore::sliding_window`.
    pub async fn sliding_window(&self, key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
        if window_ms == 0 {
            return Err(StateError::Invalid("window-ms must be at least 1".into()));
        }
        self.decision(&self.scripts.sliding, key, [limit.to_string(), window_ms.to_string(), cost.to_string()], limit).await
    }

    /// See `StateStore::incr`.
    pub async fn incr(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StateError> {
        let delta = i64::try_from(delta).map_err(|_| StateError::Invalid("delta too large".into()))?;
        let mut conn = self.connection()?;
        let mut invocation = self.scripts.incr.key(key);
        invocation.arg(delta).arg(ttl_ms);
        let v: i64 = self.timed(invocation.invoke_async(&mut conn)).await?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    /// See `StateStore::get`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let mut conn = self.connection()?;
        self.timed(redis::cmd("GET").arg(key).query_async(&mut conn)).await
    }

    /// See `StateStore::set`.
    pub async fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StateError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(StateError::Invalid(format!("value larger than {MAX_VALUE_BYTES} bytes")));
        }
        let mut conn = self.connection()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if ttl_ms > 0 {
            cmd.arg("PX").arg(ttl_ms);
        }
        self.timed(cmd.query_async::<()>(&mut conn)).await
    }

    /// See `StateStore::delete`.
    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        let mut conn = self.connection()?;
        self.timed(redis::cmd("DEL").arg(key).query_async::<()>(&mut conn)).await
    }
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    //! The Lua scripts against a real `redis-server` (skipped, loudly, where none is installed;
    //! `tests/run.sh` installs it), checked against the memory backend's arithmetic.

    use std::process::{Child, Command, Stdio};

    use super::*;
    use crate::state::memory::MemoryStore;

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
