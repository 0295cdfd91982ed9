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
//! No plugin may take the whole store: one plugin's namespace (`airlock:<namespace>:`, see
//! `ScopedState`) holds at most about half of `max_keys` and half of `max_bytes`, so a plugin
//! granted `state` that stores keys without end cannot leave the limiters of every other plugin
//! without room (they would fail open, or closed, for everyone). Past its share a new key of that
//! namespace displaces its own key nearest expiry in the shard, or is refused (`full`); other
//! namespaces are untouched. The share is kept per shard (keys hash evenly over the shards), so
//! it is counted under the shard's lock, with no lock of its own; a namespace storing values
//! near the largest size (64 KiB) may meet its share in one shard somewhat before half of
//! `max_bytes` in all.
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

/// One shard: its entries, and what each namespace holds in it.
#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    /// Keys and stored bytes held per namespace ([`namespace`]), for the namespace's share.
    held: HashMap<Box<str>, Held>,
}

/// What one namespace holds in one shard.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    keys: usize,
    bytes: usize,
}

/// The namespace of a backend key: `airlock:<namespace>:` (what `ScopedState` puts before a
/// plugin's key), or `None` for a key made by the gateway itself (no share applies).
fn namespace(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("airlock:")?;
    let end = rest.find(':')?;
    Some(&key[..="airlock:".len() + end])
}

impl Shard {
    fn held(&self, key: &str) -> Held {
        namespace(key).and_then(|ns| self.held.get(ns).copied()).unwrap_or_default()
    }

    fn count(&mut self, key: &str, keys: isize, bytes: isize) {
        let Some(ns) = namespace(key) else { return };
        let held = match self.held.get_mut(ns) {
            Some(held) => held,
            None => self.held.entry(ns.into()).or_default(),
        };
        held.keys = held.keys.saturating_add_signed(keys);
        held.bytes = held.bytes.saturating_add_signed(bytes);
        if held.keys == 0 {
            self.held.remove(ns);
        }
    }

    /// Adds a new key.
    fn insert(&mut self, key: &str, entry: Entry) {
        self.count(key, 1, entry.stored_bytes(key) as isize);
        self.entries.insert(key.to_owned(), entry);
    }

    /// Replaces the entry at `key` (present).
    fn replace(&mut self, key: &str, entry: Entry) {
        let after = entry.stored_bytes(key) as isize;
        if let Some(slot) = self.entries.get_mut(key) {
            let before = slot.stored_bytes(key) as isize;
            *slot = entry;
            // A limiter's step (no stored bytes) does not look its namespace up.
            if after != before {
                self.count(key, 0, after - before);
            }
        }
    }

    /// Removes `key`.
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.count(key, -1, -(entry.stored_bytes(key) as isize));
        Some(entry)
    }
}

/// The in-memory backend.
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    len: AtomicUsize,
    max_keys: usize,
    /// Bytes of stored values (keys included) held, against `max_bytes`.
    bytes: AtomicUsize,
    max_bytes: usize,
    /// One namespace's share of a shard: keys, and stored bytes.
    share_keys: usize,
    share_bytes: usize,
    epoch: Instant,
    stats: StateStats,
}

/// A namespace's share of one shard: half of `total` spread over the shards, with room for an
/// uneven spread (a quarter more, and a few keys), and never less than `least`.
fn share_per_shard(total: usize, least: usize) -> usize {
    (total / 2).div_ceil(SHARDS).saturating_mul(5).div_ceil(4).saturating_add(4).max(least)
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
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
            len: AtomicUsize::new(0),
            max_keys,
            bytes: AtomicUsize::new(0),
            max_bytes,
            share_keys: share_per_shard(max_keys, 1),
            // A shard's share holds at least one value of the largest size.
            share_bytes: share_per_shard(max_bytes, super::MAX_KEY_BYTES + super::MAX_VALUE_BYTES),
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

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
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
            let expired: Vec<String> = map.entries.iter().filter(|(_, e)| !e.live(now)).map(|(k, _)| k.clone()).collect();
            for key in expired {
                if let Some(entry) = map.remove(&key) {
                    freed += entry.stored_bytes(&key);
                    removed += 1;
                }
            }
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        self.stats.evicted.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Removes every key of the namespace whose keys start with `prefix` (`airlock:<ns>:`, what
    /// [`super::ScopedState`] puts before a plugin's keys); returns how many. Shards holding
    /// none of the namespace's keys are passed over without a scan.
    pub fn clear_namespace(&self, prefix: &str) -> usize {
        let Some(ns) = namespace(prefix).filter(|ns| ns.len() == prefix.len()) else { return 0 };
        let (mut removed, mut freed) = (0, 0);
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            if !map.held.contains_key(ns) {
                continue;
            }
            let keys: Vec<String> = map.entries.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
            for key in keys {
                if let Some(entry) = map.remove(&key) {
                    freed += entry.stored_bytes(&key);
                    removed += 1;
                }
            }
        }
        self.len.fetch_sub(removed, Ordering::AcqRel);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
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
        self.update_held(key, false, |current, _, now| step(current, now))
    }

    /// [`Self::update`], `step` also told what the key's namespace holds in its shard (with
    /// `tell_held`; else nothing: the limiters' steps need not pay for the lookup).
    fn update_held<T>(
        &self,
        key: &str,
        tell_held: bool,
        step: impl FnOnce(Option<&Entry>, Held, Instant) -> (T, Option<Entry>),
    ) -> Result<T, StateError> {
        let mut swept = false;
        let mut displaced = 0;
        loop {
            let now = Instant::now();
            let mut map = self.shard(key);
            if let Some(slot) = map.entries.get(key) {
                let before = slot.stored_bytes(key);
                let held = if tell_held { map.held(key) } else { Held::default() };
                let (out, new) = step(map.entries.get(key).filter(|e| e.live(now)), held, now);
                if let Some(entry) = new {
                    self.bytes.fetch_add(entry.stored_bytes(key), Ordering::Relaxed);
                    self.bytes.fetch_sub(before, Ordering::Relaxed);
                    map.replace(key, entry);
                }
                return Ok(out);
            }
            // The key's namespace is at its share of this shard: its own key nearest expiry
            // here makes way, or the new key is refused. Other namespaces are not touched.
            if map.held(key).keys >= self.share_keys && !self.displace_own(&mut map, key) {
                self.stats.record_full("one plugin's share of max_keys");
                return Err(StateError::Full);
            }
            if self.len.fetch_add(1, Ordering::AcqRel) < self.max_keys {
                let held = if tell_held { map.held(key) } else { Held::default() };
                let (out, new) = step(None, held, now);
                match new {
                    Some(entry) => {
                        self.bytes.fetch_add(entry.stored_bytes(key), Ordering::Relaxed);
                        map.insert(key, entry);
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
            for (at, k) in map.entries.iter().filter_map(|(k, e)| e.expires.map(|at| (at, k))).take(EVICTION_SAMPLE - sampled) {
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

    /// Frees a slot for `key` in its own shard (`map`, locked) by removing the key of the same
    /// namespace nearest its expiry among the first [`EVICTION_SAMPLE`] that expire; `false` if
    /// none does.
    fn displace_own(&self, map: &mut Shard, key: &str) -> bool {
        let Some(ns) = namespace(key) else { return false };
        let nearest = map
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(ns))
            .filter_map(|(k, e)| e.expires.map(|at| (at, k)))
            .take(EVICTION_SAMPLE)
            .min_by_key(|(at, _)| *at)
            .map(|(_, k)| k.clone());
        let Some(entry) = nearest.and_then(|k| map.remove(&k).map(|e| (k, e))) else { return false };
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(entry.1.stored_bytes(&entry.0), Ordering::Relaxed);
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
        Ok(map.entries.get(key).filter(|e| e.live(now)).map(|e| match &e.value {
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
        self.update_held(key, true, |current, held_here, now| {
            // What the key holds now is given back when it is replaced.
            let replaced = current.map_or(0, |e| e.stored_bytes(key));
            let held = self.bytes.load(Ordering::Relaxed).saturating_sub(replaced);
            if held + adds > self.max_bytes {
                self.stats.record_full("max_bytes");
                return (Err(StateError::Full), None);
            }
            // One plugin's share of the bytes, counted in the key's shard.
            if held_here.bytes.saturating_sub(replaced) + adds > self.share_bytes {
                self.stats.record_full("one plugin's share of max_bytes");
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
    fn a_namespace_is_cleared_whole_and_alone() {
        let m = MemoryStore::new(1000);
        for i in 0..50 {
            m.set(&format!("airlock:cache:k{i}"), b"entry", 0).unwrap();
            m.incr(&format!("airlock:cache:c{i}"), 1, 0).unwrap();
            m.set(&format!("airlock:cache2:k{i}"), b"other", 0).unwrap();
        }
        m.set("airlock:cachex", b"no namespace", 0).unwrap();
        let before = m.stored_bytes();
        assert_eq!(m.clear_namespace("airlock:cache:"), 100);
        assert_eq!(m.len(), 51, "another namespace sharing the start, and a gateway key, stay");
        assert_eq!(m.get("airlock:cache:k1").unwrap(), None);
        assert_eq!(m.get("airlock:cache2:k1").unwrap(), Some(b"other".to_vec()));
        assert_eq!(m.stored_bytes(), before - 50 * ("airlock:cache:k1".len() + 5) - 40, "bytes given back (keys k10-k49 are a byte longer)");
        assert_eq!(m.clear_namespace("airlock:cache:"), 0, "nothing left");
        assert_eq!(m.clear_namespace("airlock:cache"), 0, "not a namespace prefix");
        // The namespace's share is given back: it can fill its shards again.
        for i in 0..50 {
            m.set(&format!("airlock:cache:k{i}"), b"entry", 0).unwrap();
        }
        assert_eq!(m.len(), 101);
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

    /// A plugin storing keys without end fills its own share, not the store: another plugin's
    /// limiters still get their keys, and a hog's own expiring keys make way for its new ones.
    #[test]
    fn one_namespace_takes_at_most_its_share_of_keys_and_bytes() {
        let m = MemoryStore::with_budget(6_400, 64 * 1024 * 1024);
        let stored = (0..8_000).filter(|i| m.set(&format!("airlock:hog:k{i}"), b"x", 0).is_ok()).count();
        assert!((3_200..=4_400).contains(&stored), "about half of max_keys: {stored}");
        for client in 0..1_000 {
            assert!(m.incr(&format!("airlock:limiter:c{client}"), 1, 60_000).is_ok(), "client {client}: the limiter has room");
        }
        // Keys made by the gateway itself (no namespace) are held only to max_keys.
        assert!(m.incr("internal", 1, 0).is_ok());
        // Expiring keys of a full share make way for the same namespace's new ones.
        let m = MemoryStore::with_budget(6_400, 64 * 1024 * 1024);
        for i in 0..10_000 {
            assert!(m.incr(&format!("airlock:windows:k{i}"), 1, 60_000).is_ok(), "key {i}");
        }
        assert!(m.len() <= 4_400, "{} keys held", m.len());
        // Bytes: one namespace's values stop at about half of max_bytes (16 MiB here).
        let m = MemoryStore::with_budget(1_000_000, 16 * 1024 * 1024);
        let value = vec![7u8; 1024];
        let bytes = (0..16 * 1024).filter(|i| m.set(&format!("airlock:big:v{i}"), &value, 0).is_ok()).count() * value.len();
        assert!((7 * 1024 * 1024..=11 * 1024 * 1024).contains(&bytes), "{bytes} bytes stored by one plugin");
        assert!(m.set("airlock:other:v", &value, 0).is_ok(), "another plugin still stores a value");
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
