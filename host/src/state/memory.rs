//! The embedded `state` backend: keys in this process's memory, sharded so concurrent requests
//! rarely meet on a lock, expiring, and bounded by `[state] max_keys` and (for plugins' stored
//! values) `[state] max_bytes`.
//!
//! At `max_keys`, expired keys are swept first; if none had expired, a new key takes the place
//! of the key nearest its expiry among a few sampled in its shard (Redis's `volatile-ttl`,
//! approximated as Redis does). Every limiter key expires, so a flood of distinct limiter keys
//! (one per client a client can invent) costs other clients at most a counter reset near its
//! end, where refusing new keys would have let every new client through unlimited. A value
//! stored without a TTL is never displaced: past the cap, new keys are refused.
//!
//! Each operation holds one shard's lock for a few hash-map steps and never awaits or does I/O
//! under it, so a `std::sync::Mutex` is right here (tokio's docs recommend it for this case).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Decision, Gcra, StateError, StateStats, window_step};

/// Number of shards: enough that the worker threads of a large machine rarely contend on one lock,
/// few enough that a full sweep stays cheap.
pub const SHARDS: usize = 64;

/// A stored value.
#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    /// A token bucket's theoretical arrival time, in ms since the store's epoch.
    Tat(f64),
    /// A sliding window: the index of the current window (ms since the store's epoch divided by
    /// the window) and the units counted in the previous and current windows.
    Sliding { index: u64, prev: u64, curr: u64 },
    Bytes(Vec<u8>),
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }

    /// What the entry counts against `max_bytes`: a stored value's key and bytes; limiters'
    /// fixed-size entries count nothing (`max_keys` bounds them).
    fn stored_bytes(&self, key: &str) -> usize {
        match &self.value {
            Value::Bytes(b) => key.len() + b.len(),
            _ => 0,
        }
    }
}

/// Entries sampled in a full shard for the one nearest its expiry.
const EVICTION_SAMPLE: usize = 16;

/// The default `[state] max_bytes`: 64 MiB of plugins' stored values.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The in-memory backend.
pub struct MemoryStore {
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
    len: AtomicUsize,
    max_keys: usize,
    /// Bytes of stored values (keys included) held, against `max_bytes`.
    bytes: AtomicUsize,
    max_bytes: usize,
    epoch: Instant,
    stats: StateStats,
}

fn expiry(now: Instant, ttl_ms: u64) -> Option<Instant> {
    (ttl_ms > 0).then(|| now + Duration::from_millis(ttl_ms))
}

impl MemoryStore {
    /// An empty store holding at most `max_keys` keys and [`DEFAULT_MAX_BYTES`] of values.
    pub fn new(max_keys: usize) -> Self {
        Self::with_budget(max_keys, DEFAULT_MAX_BYTES)
    }

    /// An empty store holding at most `max_keys` keys and `max_bytes` of stored values.
    pub fn with_budget(max_keys: usize, max_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            len: AtomicUsize::new(0),
            max_keys,
            bytes: AtomicUsize::new(0),
            max_bytes,
            epoch: Instant::now(),
            stats: StateStats::default(),
        }
    }

    /// Bytes of stored values (keys included) held right now.
    pub fn stored_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Health counters (cap hits, evictions).
    pub fn stats(&self) -> &StateStats {
        &self.stats
    }

    /// Keys held right now (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, Entry>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A poisoned shard only means a panic elsewhere mid-step; its map is still consistent
        // (every step writes whole entries), so keep serving it.
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes every expired key; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let (mut removed, mut freed) = (0, 0);
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|key, e| {
                let live = e.live(now);
                if !live {
                    freed += e.stored_bytes(key);
                }
                live
            });
            removed += before - map.len();
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        self.stats.evicted.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Runs `step` on the live entry at `key` (None if absent or expired) and stores what it
    /// returns (None: leave the key as it is), all under the shard's lock: one atomic step.
    ///
    /// A new key takes a slot of `max_keys` before `step` runs (and gives it back if `step`
    /// stores nothing). At the cap, the lock is released, expired keys are swept from every
    /// shard, and the step starts over; still at the cap, a key nearest its expiry gives up its
    /// slot ([`Self::displace_one`]) and the step starts over again (a few times, as other
    /// requests may take the slot first). With no key that expires, the new key is refused.
    fn update<T>(
        &self,
        key: &str,
        step: impl FnOnce(Option<&Entry>, Instant) -> (T, Option<Entry>),
    ) -> Result<T, StateError> {
        let mut swept = false;
        let mut displaced = 0;
        loop {
            let now = Instant::now();
            let mut map = self.shard(key);
            if map.contains_key(key) {
                let current = map.get(key).filter(|e| e.live(now));
                let (out, new) = step(current, now);
                if let (Some(entry), Some(slot)) = (new, map.get_mut(key)) {
                    self.bytes.fetch_add(entry.stored_bytes(key), Ordering::Relaxed);
                    self.bytes.fetch_sub(slot.stored_bytes(key), Ordering::Relaxed);
                    *slot = entry;
                }
                return Ok(out);
            }
            if self.len.fetch_add(1, Ordering::AcqRel) < self.max_keys {
                let (out, new) = step(None, now);
                match new {
                    Some(entry) => {
                        self.bytes.fetch_add(entry.stored_bytes(key), Ordering::Relaxed);
                        map.insert(key.to_owned(), entry);
                    }
                    None => {
                        self.len.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                return Ok(out);
            }
            self.len.fetch_sub(1, Ordering::AcqRel);
            drop(map);
            if !swept {
                self.sweep();
                swept = true;
            } else if displaced < 3 && self.displace_one(key) {
                displaced += 1;
            } else {
                self.stats.record_full("max_keys");
                return Err(StateError::Full);
            }
        }
    }

    /// Frees one slot of `max_keys`: the key nearest its expiry among the first
    /// [`EVICTION_SAMPLE`] keys that expire, sampled shard by shard from `key`'s. `false` if no
    /// key in the store expires. Each shard is locked on its own, never two at once.
    fn displace_one(&self, key: &str) -> bool {
        let start = (self.hasher.hash_one(key) as usize) % SHARDS;
        let mut nearest: Option<(Instant, usize, String)> = None;
        let mut sampled = 0;
        for offset in 0..SHARDS {
            let shard = (start + offset) % SHARDS;
            let map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
            for (at, k) in map.iter().filter_map(|(k, e)| e.expires.map(|at| (at, k))).take(EVICTION_SAMPLE - sampled) {
                sampled += 1;
                if nearest.as_ref().is_none_or(|(best, ..)| at < *best) {
                    nearest = Some((at, shard, k.clone()));
                }
            }
            if sampled == EVICTION_SAMPLE {
                break;
            }
        }
        let Some((_, shard, key)) = nearest else { return false };
        // Taken unless another request replaced or removed it meanwhile (then the caller tries
        // again, or gives up after a few rounds).
        let removed = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        let Some(entry) = removed else { return false };
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(entry.stored_bytes(&key), Ordering::Relaxed);
        self.stats.record_displaced();
        true
    }

    /// See `StateStore::incr`.
    pub fn incr(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StateError> {
        let mut bad_type = false;
        let value = self.update(key, |entry, now| match entry {
            Some(Entry { value: Value::Counter(n), expires }) => {
                let n = n.saturating_add(delta);
                (n, Some(Entry { value: Value::Counter(n), expires: *expires }))
            }
            Some(_) => {
                bad_type = true;
                (0, None)
            }
            None => (delta, Some(Entry { value: Value::Counter(delta), expires: expiry(now, ttl_ms) })),
        })?;
        if bad_type {
            return Err(StateError::Invalid("the key holds a value that is not a counter".into()));
        }
        Ok(value)
    }

    /// See `StateStore::acquire`.
    pub fn acquire(&self, key: &str, gcra: &Gcra, cost: u64) -> Result<Decision, StateError> {
        let epoch = self.epoch;
        self.update(key, |entry, now| {
            let now_ms = now.duration_since(epoch).as_secs_f64() * 1000.0;
            let tat = match entry {
                Some(Entry { value: Value::Tat(t), .. }) => Some(*t),
                _ => None,
            };
            let (decision, new_tat) = gcra.step(tat, now_ms, cost);
            let new = new_tat.map(|t| Entry {
                value: Value::Tat(t),
                // The bucket is full again at the TAT: the key can go then.
                expires: Some(now + Duration::from_secs_f64(((t - now_ms) / 1000.0).max(0.001))),
            });
            (decision, new)
        })
    }

    /// See `StateStore::sliding_window`.
    pub fn sliding_window(&self, key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
        if window_ms == 0 {
            return Err(StateError::Invalid("window-ms must be at least 1".into()));
        }
        let epoch = self.epoch;
        self.update(key, |entry, now| {
            let now_ms = u64::try_from(now.duration_since(epoch).as_millis()).unwrap_or(u64::MAX);
            let index = now_ms / window_ms;
            let elapsed = now_ms % window_ms;
            let (prev, curr) = match entry {
                Some(Entry { value: Value::Sliding { index: i, prev, curr }, .. }) if *i == index => (*prev, *curr),
                Some(Entry { value: Value::Sliding { index: i, curr, .. }, .. }) if i + 1 == index => (*curr, 0),
                _ => (0, 0),
            };
            let decision = super::sliding_step(prev, curr, elapsed, window_ms, limit, cost);
            let new = decision.allowed.then(|| Entry {
                value: Value::Sliding { index, prev, curr: curr + cost },
                // Counted until the end of the next window, when it stops weighing.
                expires: Some(now + Duration::from_millis(2 * window_ms - elapsed)),
            });
            (decision, new)
        })
    }

    /// See `StateStore::window`.
    pub fn window(&self, key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<Decision, StateError> {
        if window_ms == 0 {
            return Err(StateError::Invalid("window-ms must be at least 1".into()));
        }
        self.update(key, |entry, now| {
            let (count, expires) = match entry {
                Some(e @ Entry { value: Value::Counter(n), .. }) => (*n, e.expires),
                _ => (0, expiry(now, window_ms)),
            };
            let ttl = expires.map(|e| e.saturating_duration_since(now).as_millis() as u64).unwrap_or(window_ms);
            let decision = window_step(count, limit, ttl, cost);
            let new = decision.allowed.then(|| Entry { value: Value::Counter(count + cost), expires });
            (decision, new)
        })
    }

    /// See `StateStore::get`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let now = Instant::now();
        let map = self.shard(key);
        Ok(map.get(key).filter(|e| e.live(now)).map(|e| match &e.value {
            Value::Bytes(b) => b.clone(),
            Value::Counter(n) => n.to_string().into_bytes(),
            // A limiter's internal state means nothing outside this store.
            Value::Tat(_) | Value::Sliding { .. } => Vec::new(),
        }))
    }

    /// See `StateStore::set`. Past `max_bytes` of stored values (once expired ones are swept),
    /// the value is refused as `Full`.
    pub fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StateError> {
        if value.len() > super::MAX_VALUE_BYTES {
            return Err(StateError::Invalid(format!("value larger than {} bytes", super::MAX_VALUE_BYTES)));
        }
        let adds = key.len() + value.len();
        if self.bytes.load(Ordering::Relaxed) + adds > self.max_bytes {
            self.sweep();
        }
        self.update(key, |current, now| {
            // What the key holds now is given back when it is replaced.
            let held = self.bytes.load(Ordering::Relaxed).saturating_sub(current.map_or(0, |e| e.stored_bytes(key)));
            if held + adds > self.max_bytes {
                self.stats.record_full("max_bytes");
                return (Err(StateError::Full), None);
            }
            (Ok(()), Some(Entry { value: Value::Bytes(value.to_vec()), expires: expiry(now, ttl_ms) }))
        })?
    }

    /// See `StateStore::delete`.
    pub fn delete(&self, key: &str) -> Result<(), StateError> {
        if let Some(entry) = self.shard(key).remove(key) {
            self.len.fetch_sub(1, Ordering::AcqRel);
            self.bytes.fetch_sub(entry.stored_bytes(key), Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn counters_expire_and_restart() {
        let m = MemoryStore::new(100);
        assert_eq!(m.incr("a", 2, 30).unwrap(), 2);
        assert_eq!(m.incr("a", 3, 30).unwrap(), 5);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(m.incr("a", 1, 30).unwrap(), 1);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn values_get_set_delete() {
        let m = MemoryStore::new(100);
        assert_eq!(m.get("k").unwrap(), None);
        m.set("k", b"v", 0).unwrap();
        assert_eq!(m.get("k").unwrap(), Some(b"v".to_vec()));
        m.set("k", b"w", 20).unwrap();
        assert_eq!(m.len(), 1);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(m.get("k").unwrap(), None);
        m.set("k2", b"x", 0).unwrap();
        m.delete("k2").unwrap();
        assert_eq!(m.get("k2").unwrap(), None);
        assert!(m.incr("k", 1, 0).is_ok(), "an expired value is replaced by a counter");
        m.set("s", b"text", 0).unwrap();
        assert!(matches!(m.incr("s", 1, 0), Err(StateError::Invalid(_))));
        assert!(matches!(m.set("big", &vec![0; super::super::MAX_VALUE_BYTES + 1], 0), Err(StateError::Invalid(_))));
    }

    #[test]
    fn the_key_cap_holds_and_expired_keys_make_room() {
        let m = MemoryStore::new(4);
        for i in 0..4 {
            m.set(&format!("k{i}"), b"kept", 20).unwrap();
        }
        // Existing keys still work at the cap.
        m.set("k0", b"again", 20).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(m.incr("k9", 1, 0).unwrap(), 1);
        assert_eq!(m.len(), 1);
        assert_eq!(m.stats().evicted.load(Ordering::Relaxed), 4);
        assert_eq!(m.stored_bytes(), 0, "expired values give their bytes back");
    }

    #[test]
    fn at_the_cap_the_key_nearest_its_expiry_makes_way_and_keys_without_one_never_do() {
        let m = MemoryStore::new(3);
        m.incr("soon", 1, 5_000).unwrap();
        m.incr("later", 1, 60_000).unwrap();
        m.set("forever", b"v", 0).unwrap();
        // A new limiter key (a client the store has not seen) takes the place of `soon`.
        assert_eq!(m.incr("new", 1, 60_000).unwrap(), 1);
        assert_eq!((m.len(), m.stats().displaced.load(Ordering::Relaxed)), (3, 1));
        assert_eq!(m.get("soon").unwrap(), None);
        assert_eq!(m.get("later").unwrap(), Some(b"1".to_vec()));
        // Then `later` and `new` in turn; `forever` stays, and once only it is left to give way,
        // a new key is refused.
        m.incr("new2", 1, 0).unwrap();
        m.incr("new3", 1, 0).unwrap();
        assert_eq!(m.get("forever").unwrap(), Some(b"v".to_vec()));
        assert_eq!(m.incr("new4", 1, 0), Err(StateError::Full));
        assert_eq!(m.stats().cap_hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stored_values_are_held_to_the_byte_budget() {
        let m = MemoryStore::with_budget(100, 10);
        m.set("a", b"1234", 0).unwrap();
        assert_eq!(m.stored_bytes(), 5);
        m.set("b", b"1234", 0).unwrap();
        assert_eq!(m.set("c", b"1", 0), Err(StateError::Full), "11 bytes > 10");
        assert_eq!(m.get("c").unwrap(), None);
        // Replacing a value counts what it gives back; counters count nothing.
        m.set("a", b"123", 0).unwrap();
        assert_eq!(m.stored_bytes(), 9);
        m.incr("n", 1, 0).unwrap();
        m.delete("b").unwrap();
        assert_eq!(m.stored_bytes(), 4);
        m.set("c", b"12345", 0).unwrap();
        assert_eq!(m.stored_bytes(), 10);
    }

    #[test]
    fn concurrent_windows_admit_exactly_the_limit() {
        let m = Arc::new(MemoryStore::new(1000));
        let admitted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (m, admitted) = (m.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if m.window("w", 1000, 60_000, 1).unwrap().allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn the_first_hit_on_a_new_key_is_atomic_too() {
        let m = Arc::new(MemoryStore::new(10_000));
        for round in 0..200 {
            let key = format!("fresh{round}");
            let admitted = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (m, admitted, barrier, key) = (m.clone(), admitted.clone(), barrier.clone(), key.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        if m.window(&key, 1, 60_000, 1).unwrap().allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(admitted.load(Ordering::Relaxed), 1, "round {round}");
        }
        assert_eq!(m.len(), 200);
    }

    #[test]
    fn concurrent_buckets_admit_burst_plus_refill() {
        let m = Arc::new(MemoryStore::new(1000));
        let gcra = Gcra::new(100, 1000, 50).unwrap();
        let admitted = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (m, admitted) = (m.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if m.acquire("b", &gcra, 1).unwrap().allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
        let max = 50 + (elapsed_ms / 10.0).floor() as usize + 1;
        let got = admitted.load(Ordering::Relaxed);
        assert!((50..=max).contains(&got), "admitted {got}, expected 50..={max}");
    }
}
