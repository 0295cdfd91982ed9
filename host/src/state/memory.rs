//! The embedded `state` backend: keys in this process's memory, sharded so concurrent requests
//! rarely meet on a lock, expiring, and bounded by `[state] max_keys` and `[state] max_bytes`.
//!
//! Every entry counts its key's bytes against `max_bytes`, and a stored value its bytes too: a
//! key's length is the plugin's (or a client's) choice, so `max_keys` alone would let keys of a
//! kilobyte each hold a gigabyte. With both bounds, the memory the store holds is at most
//! `max_bytes` plus a fixed cost per key (the map's slot and allocation) times `max_keys`.
//!
//! At `max_keys` or `max_bytes`, expired keys are swept first (at most once a second: a sweep
//! visits every key); if that is not enough, among a few keys sampled (as Redis samples for its
//! eviction) the one with the least at stake makes way for the new one: the fewest units a
//! limiter would forget (a fixed window's count, a sliding window's, a token bucket's lead),
//! then the nearest expiry; a stored value counts as one unit. Every limiter key expires,
//! so a flood of distinct limiter keys (one per client a client can invent), each counted a few
//! times, displaces its own keys first: another client loses a count only as small as what the
//! flood spends on each key, where displacing by expiry alone reset the oldest counts (a
//! client's day-long window a minute in), and refusing new keys would have let every new client
//! through unlimited. An entry stored without a TTL is never displaced: past the cap, with only
//! those left, new keys are refused.
//!
//! No plugin may take the whole store: one plugin's namespace (`airlock:<namespace>:`, see
//! `ScopedState`) holds at most about half of `max_keys` and half of `max_bytes`, so a plugin
//! granted `state` that stores keys without end cannot leave the limiters of every other plugin
//! without room (they would fail open, or closed, for everyone). Past its share a new key of that
//! namespace displaces its own keys nearest expiry in the shard, or is refused (`full`); other
//! namespaces are untouched. The share is kept per shard (keys hash evenly over the shards), so
//! it is counted under the shard's lock, with no lock of its own; a namespace storing values
//! near the largest size (64 KiB) may meet its share in one shard somewhat before half of
//! `max_bytes` in all.
//!
//! Expired keys are also swept in the background, every [`BACKGROUND_SWEEP_INTERVAL`], one
//! shard at a time with a yield between them ([`MemoryStore::start_sweeping`]): without it a
//! key that expired stayed, counted in `airlock_state_keys`/`airlock_state_bytes` and held in
//! memory, until the store next met a cap.
//!
//! A limiter's step on a key it already holds changes no count (its entry keeps its size), so
//! it touches neither the store's counters nor its namespace's: the shard's lock and map only.
//!
//! Each operation holds one shard's lock for a few hash-map steps and never awaits or does I/O
//! under it, so a `std::sync::Mutex` is right here (tokio's docs recommend it for this case).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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

    /// What displacing the entry at `now` would give away, to choose what makes way at a cap:
    /// the units a limiter would forget (a counter's count, a sliding window's two counts, a
    /// token bucket's seconds of lead over a full bucket, plus one), so a flood of new keys,
    /// each counted a few times, displaces its own kind before a client's well-used count; a
    /// stored value (a cached answer: fetched again, nothing forgotten) as one unit, so it
    /// competes by expiry with limiter keys counted once, and a large one at `max_bytes` frees
    /// its bytes rather than thousands of clients' counts. An expired entry gives away nothing.
    fn at_stake(&self, now: Instant) -> u64 {
        match (&self.value, self.expires) {
            (_, Some(at)) if at <= now => 0,
            (Value::Counter(n), _) => *n,
            (Value::Sliding { prev, curr, .. }, _) => prev.saturating_add(*curr),
            (Value::Tat(_), Some(at)) => at.duration_since(now).as_secs().saturating_add(1),
            (Value::Bytes(_), _) => 1,
            (Value::Tat(_), None) => u64::MAX,
        }
    }

    /// What the entry counts against `max_bytes`: its key, and a stored value's bytes. A
    /// limiter's entry is fixed-size but for its key, whose length the plugin (or a client,
    /// through a header it sends) chooses: counted, so long keys fill `max_bytes`, not memory.
    fn stored_bytes(&self, key: &str) -> usize {
        key.len()
            + match &self.value {
                Value::Bytes(b) => b.len(),
                _ => 0,
            }
    }
}

/// Entries sampled in a full shard for the one nearest its expiry.
const EVICTION_SAMPLE: usize = 16;

/// Least time between two sweeps of the whole store at a cap. A sweep visits every key: run for
/// every new key at a cap (a flood of new keys keeps the store there), it would cost each of
/// them a pass over up to `max_keys` entries. Between sweeps, an expired key sampled is the
/// nearest expiry, so it is what makes way.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often expired keys are swept in the background ([`MemoryStore::start_sweeping`]): one
/// wake-up of an idle gateway every half minute; the keys an expiry left stay at most this long.
pub const BACKGROUND_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The default `[state] max_bytes`: 256 MiB of keys and stored values. Room for the default
/// `max_keys` (a million) of ordinary limiter keys (`airlock:`, a namespace of 20-60 bytes and a
/// key of 20-60, about 50-130 bytes in all) beside 64 MiB of stored values (`proxy-cache`
/// entries), so `max_keys` stays the bound limiters meet; with a namespace's share of about half
/// of each, the same holds for one plugin's keys. 64 MiB, the default when only stored values
/// counted, would have refused or displaced limiter keys from about 500 000 on.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

/// One shard: its entries, and what each namespace holds in it.
#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    /// Keys, and bytes of keys and values, held per namespace ([`namespace`]), for its share.
    held: HashMap<Box<str>, Held>,
}

/// What one namespace holds in one shard.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    keys: usize,
    bytes: usize,
}

/// What one step on a key takes of the caps before it runs: a slot of `max_keys` (a new key),
/// and bytes of `max_bytes` (what the entry grows by; a limiter's on a key it holds: none).
#[derive(Debug, Clone, Copy)]
struct Need {
    key: bool,
    bytes: usize,
}

impl Need {
    /// A step that takes nothing: the key is held and its entry already has the bytes.
    const NOTHING: Need = Need { key: false, bytes: 0 };

    /// Whether the step takes anything.
    fn any(self) -> bool {
        self.key || self.bytes > 0
    }
}

/// The namespace of a backend key: `airlock:<namespace>:` (what `ScopedState` puts before a
/// plugin's key), or `None` for a key made by the gateway itself (no share applies).
fn namespace(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("airlock:")?;
    let end = rest.find(':')?;
    Some(&key[..="airlock:".len() + end])
}

impl Shard {
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
            // A limiter's step (its entry's size unchanged) does not look its namespace up.
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
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    len: AtomicUsize,
    max_keys: usize,
    /// Bytes of keys and stored values held ([`Entry::stored_bytes`]), against `max_bytes`.
    bytes: AtomicUsize,
    max_bytes: usize,
    /// One namespace's share of a shard: keys, and bytes of keys and stored values.
    share_keys: usize,
    share_bytes: usize,
    epoch: Instant,
    /// When the store was last swept at a cap: milliseconds since `epoch`, plus one (0: never).
    last_sweep: AtomicU64,
    /// Whether the background sweep has started ([`MemoryStore::start_sweeping`]).
    sweeping: std::sync::atomic::AtomicBool,
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
    /// An empty store holding at most `max_keys` keys and [`DEFAULT_MAX_BYTES`] of keys and
    /// values.
    pub fn new(max_keys: usize) -> Self {
        Self::with_budget(max_keys, DEFAULT_MAX_BYTES)
    }

    /// An empty store holding at most `max_keys` keys and `max_bytes` of keys and stored values.
    pub fn with_budget(max_keys: usize, max_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
            len: AtomicUsize::new(0),
            max_keys,
            bytes: AtomicUsize::new(0),
            max_bytes,
            share_keys: share_per_shard(max_keys, 1),
            // A shard's share holds at least one value of the largest size under the longest key.
            share_bytes: share_per_shard(max_bytes, super::MAX_BACKEND_KEY_BYTES + super::MAX_VALUE_BYTES),
            epoch: Instant::now(),
            last_sweep: AtomicU64::new(0),
            sweeping: std::sync::atomic::AtomicBool::new(false),
            stats: StateStats::default(),
        }
    }

    /// Bytes of keys and stored values held right now (what `max_bytes` bounds).
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
        (0..SHARDS).map(|i| self.sweep_shard(i)).sum()
    }

    /// Removes the expired keys of shard `i` (of [`SHARDS`]), under its lock alone; returns how
    /// many.
    fn sweep_shard(&self, i: usize) -> usize {
        let Some(shard) = self.shards.get(i) else { return 0 };
        let now = Instant::now();
        let (mut removed, mut freed) = (0, 0);
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let expired: Vec<String> = map.entries.iter().filter(|(_, e)| !e.live(now)).map(|(k, _)| k.clone()).collect();
        for key in expired {
            if let Some(entry) = map.remove(&key) {
                freed += entry.stored_bytes(&key);
                removed += 1;
            }
        }
        drop(map);
        self.len.fetch_sub(removed, Ordering::Relaxed);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        self.stats.evicted.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Starts sweeping `store`'s expired keys every [`BACKGROUND_SWEEP_INTERVAL`] (once per
    /// store: later calls do nothing), on the current runtime, until the store is dropped. Each
    /// pass takes one shard's lock at a time and yields between shards, so no request waits on
    /// more than one shard's sweep and no worker is held for a whole pass.
    pub fn start_sweeping(store: &Arc<super::StateStore>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if store.local().sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let store = Arc::downgrade(store);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(BACKGROUND_SWEEP_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                for i in 0..SHARDS {
                    let Some(store) = store.upgrade() else { return };
                    store.local().sweep_shard(i);
                    drop(store);
                    tokio::task::yield_now().await;
                }
            }
        });
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
    /// `value_bytes`: the most value bytes `step` stores (a `set`'s value; 0 for a limiter,
    /// whose entry counts its key alone).
    ///
    /// A new key takes a slot of `max_keys`, and any entry the bytes it adds of `max_bytes`,
    /// before `step` runs (given back if `step` stores less). Past its namespace's share of the
    /// shard, the namespace's own keys nearest expiry make way ([`Self::within_share`]). At a
    /// cap, the lock is released, expired keys are swept from every shard (at most once per
    /// [`SWEEP_INTERVAL`]), and the step starts over; still at it, the keys nearest their expiry
    /// make way ([`Self::make_room`]) and the step starts over again (a few times, as other
    /// requests may take the room first). With no key that expires, the new key is refused. A
    /// step on a key whose entry keeps its size (a limiter's, every time but its first) reserves
    /// nothing and touches no shared counter.
    fn update<T>(
        &self,
        key: &str,
        value_bytes: usize,
        step: impl FnOnce(Option<&Entry>, Instant) -> (T, Option<Entry>),
    ) -> Result<T, StateError> {
        let needs = key.len().saturating_add(value_bytes);
        if needs > self.max_bytes {
            self.stats.record_full("max_bytes");
            return Err(StateError::Full);
        }
        let mut swept = false;
        let mut rounds = 0;
        loop {
            let now = Instant::now();
            let mut map = self.shard(key);
            // A step on a key that already holds what it needs (a limiter's, every time but its
            // first) reserves nothing: one lookup, and its entry changed in place.
            if let Some(slot) = map.entries.get_mut(key) {
                let before = slot.stored_bytes(key);
                if needs <= before {
                    let (out, new) = step(Some(&*slot).filter(|e| e.live(now)), now);
                    match new {
                        Some(entry) if entry.stored_bytes(key) == before => *slot = entry,
                        new => self.settle(&mut map, key, Some(before), Need::NOTHING, new),
                    }
                    return Ok(out);
                }
            }
            let before = map.entries.get(key).map(|e| e.stored_bytes(key));
            let need = Need { key: before.is_none(), bytes: needs.saturating_sub(before.unwrap_or(0)) };
            if need.any() && !self.within_share(&mut map, key, need) {
                self.stats.record_full("one plugin's share of max_keys and max_bytes");
                return Err(StateError::Full);
            }
            let cap = match self.reserve(need) {
                Ok(()) => {
                    let (out, new) = step(map.entries.get(key).filter(|e| e.live(now)), now);
                    self.settle(&mut map, key, before, need, new);
                    return Ok(out);
                }
                Err(cap) => cap,
            };
            drop(map);
            if !swept {
                swept = true;
                if self.sweep_due() {
                    self.sweep();
                    continue;
                }
            }
            if rounds < 3 && self.make_room(key, need) {
                rounds += 1;
            } else {
                self.stats.record_full(cap);
                return Err(StateError::Full);
            }
        }
    }

    /// Whether a sweep at a cap may run now: the first, and then one per [`SWEEP_INTERVAL`].
    fn sweep_due(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let last = self.last_sweep.load(Ordering::Relaxed);
        let interval = u64::try_from(SWEEP_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= interval)
            && self.last_sweep.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Takes `need` from `max_keys` and `max_bytes`; `Err` names the cap it would pass, and
    /// takes nothing. Nothing needed (a limiter's step on its own key), nothing touched.
    fn reserve(&self, need: Need) -> Result<(), &'static str> {
        if need.key && self.len.fetch_add(1, Ordering::AcqRel) >= self.max_keys {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err("max_keys");
        }
        if need.bytes > 0 && self.bytes.fetch_add(need.bytes, Ordering::Relaxed).saturating_add(need.bytes) > self.max_bytes {
            self.bytes.fetch_sub(need.bytes, Ordering::Relaxed);
            if need.key {
                self.len.fetch_sub(1, Ordering::AcqRel);
            }
            return Err("max_bytes");
        }
        Ok(())
    }

    /// Stores what a step returned for `key` (whose entry held `before` bytes, `None`: no
    /// entry), `reserved` having been taken for it: the counts end at what is held.
    fn settle(&self, map: &mut Shard, key: &str, before: Option<usize>, reserved: Need, new: Option<Entry>) {
        let Some(entry) = new else {
            if reserved.key {
                self.len.fetch_sub(1, Ordering::AcqRel);
            }
            if reserved.bytes > 0 {
                self.bytes.fetch_sub(reserved.bytes, Ordering::Relaxed);
            }
            return;
        };
        // What the entry changes by, less what was reserved for it: 0 but when a value shrinks.
        let change = entry.stored_bytes(key) as isize - before.unwrap_or(0) as isize - reserved.bytes as isize;
        if change > 0 {
            self.bytes.fetch_add(change.unsigned_abs(), Ordering::Relaxed);
        } else if change < 0 {
            self.bytes.fetch_sub(change.unsigned_abs(), Ordering::Relaxed);
        }
        match before {
            Some(_) => map.replace(key, entry),
            None => map.insert(key, entry),
        }
    }

    /// Whether `need` fits `key`'s namespace's share of its shard (`map`, locked), once the
    /// namespace's own keys nearest expiry there have made way as needed (never `key` itself).
    /// Keys made by the gateway itself have no namespace, and no share.
    fn within_share(&self, map: &mut Shard, key: &str, need: Need) -> bool {
        let Some(ns) = namespace(key) else { return true };
        loop {
            let held = map.held.get(ns).copied().unwrap_or_default();
            let keys_fit = !need.key || held.keys < self.share_keys;
            if keys_fit && held.bytes.saturating_add(need.bytes) <= self.share_bytes {
                return true;
            }
            if !self.displace_own(map, key) {
                return false;
            }
        }
    }

    /// Frees what `need` takes at `max_keys` and `max_bytes`: keys nearest their expiry make
    /// way ([`Self::displace_one`]) until it fits. `false` if nothing fits and no key in the
    /// store expires.
    fn make_room(&self, key: &str, need: Need) -> bool {
        // Each key that makes way frees a slot and a byte at least: more rounds than that are
        // other requests taking the room as it is freed (the caller tries again, or gives up).
        for _ in 0..=need.bytes {
            let keys_full = need.key && self.len.load(Ordering::Acquire) >= self.max_keys;
            let bytes_full = need.bytes > 0 && self.bytes.load(Ordering::Relaxed).saturating_add(need.bytes) > self.max_bytes;
            if !keys_full && !bytes_full {
                return true;
            }
            if !self.displace_one(key) {
                return false;
            }
        }
        true
    }

    /// Frees one key's room at `max_keys` and `max_bytes`: among the first [`EVICTION_SAMPLE`]
    /// keys that expire, sampled shard by shard from `key`'s, the one with the least at stake
    /// ([`Entry::at_stake`]), then nearest its expiry. `false` if no key in the store expires.
    /// Each shard is locked on its own, never two at once.
    fn displace_one(&self, key: &str) -> bool {
        let start = (self.hasher.hash_one(key) as usize) % SHARDS;
        let now = Instant::now();
        let mut nearest: Option<((u64, Instant), usize, String)> = None;
        let mut sampled = 0;
        for offset in 0..SHARDS {
            let shard = (start + offset) % SHARDS;
            let map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
            let expiring = map.entries.iter().filter_map(|(k, e)| e.expires.map(|at| ((e.at_stake(now), at), k)));
            for (rank, k) in expiring.take(EVICTION_SAMPLE - sampled) {
                sampled += 1;
                if nearest.as_ref().is_none_or(|(best, ..)| rank < *best) {
                    nearest = Some((rank, shard, k.clone()));
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
        self.record_made_way(&entry);
        true
    }

    /// Counts an entry removed to make way: displaced if it was live, else evicted (expired,
    /// found between sweeps).
    fn record_made_way(&self, entry: &Entry) {
        if entry.live(Instant::now()) {
            self.stats.record_displaced();
        } else {
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frees room for `key` in its own shard (`map`, locked) by removing, among the first
    /// [`EVICTION_SAMPLE`] keys of the same namespace that expire (`key` itself aside), the one
    /// with the least at stake, then nearest its expiry (as [`Self::displace_one`]); `false` if
    /// none expires.
    fn displace_own(&self, map: &mut Shard, key: &str) -> bool {
        let Some(ns) = namespace(key) else { return false };
        let now = Instant::now();
        let nearest = map
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(ns) && k.as_str() != key)
            .filter_map(|(k, e)| e.expires.map(|at| ((e.at_stake(now), at), k)))
            .take(EVICTION_SAMPLE)
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, k)| k.clone());
        let Some(entry) = nearest.and_then(|k| map.remove(&k).map(|e| (k, e))) else { return false };
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(entry.1.stored_bytes(&entry.0), Ordering::Relaxed);
        self.record_made_way(&entry.1);
        true
    }

    /// See `StateStore::incr`.
    pub fn incr(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StateError> {
        let mut bad_type = false;
        let value = self.update(key, 0, |entry, now| match entry {
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
        self.update(key, 0, |entry, now| {
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
        self.update(key, 0, |entry, now| {
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
        self.update(key, 0, |entry, now| {
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

    /// See `StateStore::set`. The key and the value count against `max_bytes` (and its
    /// namespace's share): past it, entries nearest their expiry make way, or, with none that
    /// expires, the value is refused as `Full`.
    pub fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StateError> {
        if value.len() > super::MAX_VALUE_BYTES {
            return Err(StateError::Invalid(format!("value larger than {} bytes", super::MAX_VALUE_BYTES)));
        }
        self.update(key, value.len(), |_, now| ((), Some(Entry { value: Value::Bytes(value.to_vec()), expires: expiry(now, ttl_ms) })))
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

    /// Expired keys go without the store meeting a cap, by the background sweep, which keeps
    /// the live ones, runs once per store however often it is started, and ends with the store.
    #[tokio::test(start_paused = true)]
    async fn expired_keys_are_swept_in_the_background() {
        let store = Arc::new(crate::state::StateStore::Memory(MemoryStore::new(1000)));
        let m = store.local();
        for i in 0..200 {
            m.incr(&format!("airlock:rl:short{i}"), 1, 1).unwrap();
        }
        m.incr("airlock:rl:long", 1, 3_600_000).unwrap();
        m.set("airlock:cache:kept", b"value", 0).unwrap();
        let live_bytes = "airlock:rl:long".len() + "airlock:cache:kept".len() + 5;
        // The entries' expiry reads the real clock; the sweep's interval, tokio's paused one.
        std::thread::sleep(Duration::from_millis(5));
        MemoryStore::start_sweeping(&store);
        MemoryStore::start_sweeping(&store);
        tokio::time::sleep(BACKGROUND_SWEEP_INTERVAL / 2).await;
        assert_eq!(m.len(), 202, "not before its interval");
        tokio::time::sleep(BACKGROUND_SWEEP_INTERVAL).await;
        assert_eq!(m.len(), 2, "expired keys swept, live ones kept");
        assert_eq!(m.stored_bytes(), live_bytes);
        assert_eq!(m.stats().evicted.load(Ordering::Relaxed), 200, "swept once, by one task");
        let weak = Arc::downgrade(&store);
        drop(store);
        tokio::time::sleep(BACKGROUND_SWEEP_INTERVAL * 2).await;
        assert!(weak.upgrade().is_none(), "the sweep does not keep the store alive");
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
        // Values give back their key and bytes, counters their key (k10-k49 are a byte longer).
        let given_back = 50 * ("airlock:cache:k1".len() + 5) + 40 + 50 * "airlock:cache:c1".len() + 40;
        assert_eq!(m.stored_bytes(), before - given_back, "bytes given back");
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
        assert_eq!(m.stored_bytes(), "k9".len(), "expired values give their bytes back; the new counter holds its key's");
    }

    /// A flood of new keys counted once each displaces its own keys, not a client's count: by
    /// expiry alone, the client's day-long window (the oldest key) was the first to go.
    #[test]
    fn at_the_cap_the_key_with_least_at_stake_makes_way() {
        let m = MemoryStore::new(100);
        for _ in 0..3 {
            m.incr("victim", 1, 86_400_000).unwrap();
        }
        for i in 0..300 {
            assert_eq!(m.incr(&format!("junk{i}"), 1, 86_400_000).unwrap(), 1, "junk {i}");
        }
        assert_eq!(m.get("victim").unwrap(), Some(b"3".to_vec()), "the client's count survives the flood");
        assert_eq!(m.len(), 100);
        // A token bucket well ahead of full outranks a counter counted once; a stored value is
        // one unit; an expired entry has nothing at stake.
        let now = Instant::now();
        let entry = |value, secs: u64| Entry { value, expires: Some(now + Duration::from_secs(secs)) };
        assert!(entry(Value::Tat(0.0), 600).at_stake(now) > entry(Value::Counter(1), 86_400).at_stake(now));
        assert_eq!(entry(Value::Bytes(b"v".to_vec()), 1).at_stake(now), 1, "a cached value is fetched again");
        assert_eq!(entry(Value::Sliding { index: 0, prev: 4, curr: 2 }, 60).at_stake(now), 6);
        assert_eq!(Entry { value: Value::Counter(9), expires: Some(now) }.at_stake(now), 0);
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
        // Replacing a value counts what it gives back; a counter counts its key.
        m.set("a", b"123", 0).unwrap();
        assert_eq!(m.stored_bytes(), 9);
        m.incr("n", 1, 0).unwrap();
        assert_eq!(m.stored_bytes(), 10);
        assert_eq!(m.incr("o", 1, 0), Err(StateError::Full), "a counter's key past max_bytes");
        assert_eq!(m.incr("n", 1, 0), Ok(2), "a counter held keeps counting at the cap");
        m.delete("b").unwrap();
        assert_eq!(m.stored_bytes(), 5);
        m.set("c", b"1234", 0).unwrap();
        assert_eq!(m.stored_bytes(), 10);
        // A value growing past the cap is refused, and the old one kept.
        assert_eq!(m.set("c", b"12345", 0), Err(StateError::Full));
        assert_eq!(m.get("c").unwrap(), Some(b"1234".to_vec()));
        assert_eq!(m.set("too-long-for-any-store", b"", 0), Err(StateError::Full));
    }

    /// Long keys cost what they hold: counters with keys of half a kilobyte, without end, stay
    /// within `max_bytes`. Those with a TTL make way for new ones, nearest expiry first (as at
    /// `max_keys`); those without are never displaced, and once only they are left a new key
    /// is refused.
    #[test]
    fn long_keys_count_against_max_bytes_and_only_expiring_ones_make_way() {
        const MAX_BYTES: usize = 64 * 1024;
        let long = |i: u64| format!("airlock:flood:{i}-{}", "k".repeat(500));
        let per_key = long(0).len();
        let m = MemoryStore::with_budget(1_000_000, MAX_BYTES);
        for i in 0..1_000 {
            assert_eq!(m.incr(&long(i), 1, 60_000 + i), Ok(1), "key {i}: an expiring key makes way for it");
            assert!(m.stored_bytes() <= MAX_BYTES, "{} bytes held at key {i}", m.stored_bytes());
        }
        assert!(m.len() <= MAX_BYTES / per_key, "{} keys held", m.len());
        assert!(m.stats().displaced.load(Ordering::Relaxed) >= 1_000 - (MAX_BYTES / per_key) as u64);
        assert_eq!(m.get(&long(999)).unwrap(), Some(b"1".to_vec()), "the newest key is held");
        assert_eq!(m.get(&long(0)).unwrap(), None, "the key nearest its expiry made way");
        // Limiters keep working at the cap: a bucket displaces an expiring counter.
        assert!(m.acquire(&long(5_000), &Gcra::new(1, 1_000, 1).unwrap(), 1).unwrap().allowed);
        assert_eq!(m.stats().cap_hits.load(Ordering::Relaxed), 0);

        let m = MemoryStore::with_budget(1_000_000, MAX_BYTES);
        m.incr(&long(0), 1, 60_000).unwrap();
        let stored = (1..1_000).take_while(|i| m.incr(&long(*i), 1, 0).is_ok()).count();
        assert!(stored < 999 && m.len() <= MAX_BYTES / per_key, "{stored} keys stored, {} held", m.len());
        assert!(m.stored_bytes() <= MAX_BYTES);
        assert_eq!(m.get(&long(0)).unwrap(), None, "the one expiring key made way for keys without a TTL");
        assert_eq!(m.incr(&long(5_000), 1, 0), Err(StateError::Full), "nothing left to make way");
        assert_eq!(m.incr(&long(5_001), 1, 60_000), Err(StateError::Full), "keys without a TTL never make way");
        assert_eq!(m.set(&long(5_002), b"v", 60_000), Err(StateError::Full));
        assert!(m.stats().cap_hits.load(Ordering::Relaxed) >= 3);
        assert_eq!(m.incr(&long(1), 1, 0), Ok(2), "a key held keeps counting");
        assert!(m.stored_bytes() <= MAX_BYTES);
    }

    /// A plugin's long keys fill its own share of `max_bytes`, not the store: another plugin's
    /// limiters still get their keys.
    #[test]
    fn one_namespace_takes_at_most_its_share_of_bytes_in_long_keys() {
        const MAX_BYTES: usize = 16 * 1024 * 1024;
        let m = MemoryStore::with_budget(1_000_000, MAX_BYTES);
        let long = |i: usize| format!("airlock:hog:{i}-{}", "k".repeat(500));
        let held = (0..40_000).filter(|i| m.incr(&long(*i), 1, 0).is_ok()).count();
        let held_bytes = held * long(10_000).len();
        assert!((MAX_BYTES * 2 / 5..=MAX_BYTES * 7 / 10).contains(&held_bytes), "{held_bytes} bytes in {held} keys held by one plugin");
        assert!(m.stored_bytes() <= MAX_BYTES * 7 / 10);
        for client in 0..1_000 {
            assert!(m.incr(&format!("airlock:limiter:c{client}"), 1, 60_000).is_ok(), "client {client}: the limiter has room");
        }
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
