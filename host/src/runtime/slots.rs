//! Concurrency slots for the `acquire-slot` action: per chain entry and key, at most `limit`
//! requests in flight and at most `queue` more waiting, served in arrival order (tokio's semaphore
//! is fair). A granted slot is a [`SlotGuard`] that the request carries until its response body
//! has been sent or dropped, so a finished, failed or abandoned request always gives its slot
//! back; a waiter whose client goes away is dropped with its request future and leaves the queue.
//!
//! Keys are kept only while a slot is held or awaited, and at most [`MAX_KEYS`] at once, so a
//! key built from client data (an IP, a header) cannot grow the table without end; one longer
//! than [`MAX_KEY_BYTES`] is kept as its SHA-256 digest ([`bounded_key`]), so neither can a long
//! one (a plugin's key lives as long as its request, past the plugin's memory cap).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most keys one chain entry tracks at once; a request for a new key beyond it is refused.
pub const MAX_KEYS: usize = 65_536;

/// Longest key kept as it is; a longer one is kept as its digest.
pub const MAX_KEY_BYTES: usize = 256;

/// `key`, or for one longer than [`MAX_KEY_BYTES`] `sha256:` and its digest in hex: the same
/// key gets the same slots, and what the table and each held slot keep is bounded.
pub fn bounded_key(key: String) -> String {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    format!("sha256:{}", hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes())))
}

/// The slots of one chain entry, by key.
#[derive(Debug, Default)]
pub struct SlotTable {
    keys: Mutex<HashMap<Box<str>, Arc<KeySlots>>>,
}

/// One key's slots and its waiting count.
#[derive(Debug)]
struct KeySlots {
    permits: Arc<Semaphore>,
    waiting: AtomicU32,
}

/// Why no slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefused {
    /// `queue` requests were already waiting.
    #[error("the wait queue is full")]
    QueueFull,
    /// No slot came free within the wait.
    #[error("no slot came free in time")]
    TimedOut,
    /// The entry tracks [`MAX_KEYS`] keys already.
    #[error("too many distinct keys are in use")]
    TooManyKeys,
}

/// A held slot: given back when dropped.
#[derive(Debug)]
pub struct SlotGuard {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<KeySlots>,
    key: Box<str>,
    table: Arc<SlotTable>,
}

impl SlotTable {
    /// Waits (up to `max_wait`, behind at most `queue` others) for one of `limit` slots of `key`.
    /// `limit` is the one the key's first request gave while the key is in use.
    pub async fn acquire(
        self: &Arc<Self>,
        key: &str,
        limit: u32,
        queue: u32,
        max_wait: Duration,
    ) -> Result<SlotGuard, SlotRefused> {
        let slots = self.slots_for(key, limit)?;
        let guard = |permit| SlotGuard { permit: Some(permit), slots: slots.clone(), key: key.into(), table: self.clone() };
        if let Ok(permit) = slots.permits.clone().try_acquire_owned() {
            return Ok(guard(permit));
        }
        // The waiting count is taken before queueing and given back however the wait ends,
        // including the request future being dropped because its client went away.
        let waiting = Waiting::enter(&slots, queue);
        let result = match waiting {
            None => Err(SlotRefused::QueueFull),
            Some(_waiting) => match tokio::time::timeout(max_wait, slots.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Ok(guard(permit)),
                // The semaphore is never closed; a timeout is the only other way out.
                Ok(Err(_)) | Err(_) => Err(SlotRefused::TimedOut),
            },
        };
        if result.is_err() {
            self.release_if_idle(key, &slots);
        }
        result
    }

    /// The key's slots, made on first use.
    fn slots_for(&self, key: &str, limit: u32) -> Result<Arc<KeySlots>, SlotRefused> {
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slots) = keys.get(key) {
            return Ok(slots.clone());
        }
        if keys.len() >= MAX_KEYS {
            return Err(SlotRefused::TooManyKeys);
        }
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        let slots = Arc::new(KeySlots { permits: Arc::new(Semaphore::new(limit)), waiting: AtomicU32::new(0) });
        keys.insert(key.into(), slots.clone());
        Ok(slots)
    }

    /// Forgets `key` when nobody holds or awaits its slots (the table's reference and the
    /// caller's are the only ones left).
    fn release_if_idle(&self, key: &str, slots: &Arc<KeySlots>) {
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if Arc::strong_count(slots) == 2 && keys.get(key).is_some_and(|s| Arc::ptr_eq(s, slots)) {
            keys.remove(key);
        }
    }

    /// Keys in use now (for tests and the admin API).
    pub fn keys_in_use(&self) -> usize {
        self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.table.release_if_idle(&self.key, &self.slots);
    }
}

/// One place in a key's wait queue, given back on drop.
struct Waiting<'a> {
    slots: &'a KeySlots,
}

impl<'a> Waiting<'a> {
    /// Takes a place if fewer than `queue` requests are waiting.
    fn enter(slots: &'a KeySlots, queue: u32) -> Option<Self> {
        slots
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < queue).then_some(n + 1))
            .ok()
            .map(|_| Self { slots })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.slots.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn a_long_key_is_kept_as_its_digest_and_stays_the_same_key() {
        let short = "ip:192.0.2.1".to_owned();
        assert_eq!(bounded_key(short.clone()), short);
        let at_limit = "k".repeat(MAX_KEY_BYTES);
        assert_eq!(bounded_key(at_limit.clone()), at_limit);
        let long = bounded_key("k".repeat(1 << 20));
        assert_eq!(long.len(), 7 + 64, "{long}");
        assert!(long.starts_with("sha256:"), "{long}");
        assert_eq!(bounded_key("k".repeat(1 << 20)), long, "the same key, the same slots");
        assert_ne!(bounded_key(format!("{}j", "k".repeat(1 << 20))), long, "another key, other slots");
    }

    #[tokio::test]
    async fn limit_queue_and_order() {
        let table = Arc::new(SlotTable::default());
        let first = table.acquire("k", 1, 2, WAIT).await.unwrap();
        // Two wait, in order; a third is refused at once.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for i in 0..2 {
            let (table, tx) = (table.clone(), tx.clone());
            waiters.push(tokio::spawn(async move {
                let slot = table.acquire("k", 1, 2, WAIT).await.unwrap();
                tx.send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(slot);
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(table.acquire("k", 1, 2, WAIT).await.unwrap_err(), SlotRefused::QueueFull);
        // Another key is independent.
        drop(table.acquire("other", 1, 0, WAIT).await.unwrap());
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!((rx.recv().await, rx.recv().await), (Some(0), Some(1)));
        assert_eq!(table.keys_in_use(), 0, "idle keys are forgotten");
    }

    #[tokio::test]
    async fn a_wait_times_out_and_a_dropped_waiter_leaves_the_queue() {
        let table = Arc::new(SlotTable::default());
        let held = table.acquire("k", 1, 1, WAIT).await.unwrap();
        let refused = table.acquire("k", 1, 1, Duration::from_millis(30)).await.unwrap_err();
        assert_eq!(refused, SlotRefused::TimedOut);
        // A waiter abandoned mid-wait frees its queue place.
        let abandoned = tokio::spawn({
            let table = table.clone();
            async move { table.acquire("k", 1, 1, WAIT).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        abandoned.abort();
        let _ = abandoned.await;
        let next = tokio::spawn({
            let table = table.clone();
            async move { table.acquire("k", 1, 1, WAIT).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert_eq!(next.await.unwrap(), Ok(()));
        assert_eq!(table.keys_in_use(), 0);
    }
}
