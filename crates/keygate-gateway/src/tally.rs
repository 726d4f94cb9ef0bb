//! Bounded tallies of what the data plane records beside usage (report-only routes' would-be
//! refusals, uses of rotated-out key values): counts with the first and last time seen, per key,
//! held until the next write to the store.
//!
//! At most [`MAX_PENDING`] distinct keys wait for a write; an event that finds the tally full is
//! counted in [`Tallies::dropped`] instead of growing the gateway's memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Distinct keys a tally holds between two writes.
pub const MAX_PENDING: usize = 10_000;

/// How many times a key was seen, and when first and last (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// Counts by key, not written yet.
#[derive(Debug)]
pub struct Tallies<K> {
    pending: Mutex<HashMap<K, Counts>>,
    dropped: AtomicU64,
}

impl<K> Default for Tallies<K> {
    fn default() -> Self {
        Self { pending: Mutex::new(HashMap::new()), dropped: AtomicU64::new(0) }
    }
}

impl<K: Hash + Eq> Tallies<K> {
    /// One event of `key` at `unix_secs`.
    pub fn record(&self, key: K, unix_secs: i64) {
        self.add(key, Counts { count: 1, first_seen: unix_secs, last_seen: unix_secs });
    }

    /// Adds `counts` to `key`'s (a failed write's rows put back, say).
    pub fn add(&self, key: K, counts: Counts) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let full = pending.len() >= MAX_PENDING;
        match pending.get_mut(&key) {
            Some(c) => {
                c.count = c.count.saturating_add(counts.count);
                c.first_seen = c.first_seen.min(counts.first_seen);
                c.last_seen = c.last_seen.max(counts.last_seen);
            }
            None if full => {
                self.dropped.fetch_add(counts.count, Ordering::Relaxed);
            }
            None => {
                pending.insert(key, counts);
            }
        }
    }

    /// Takes everything pending.
    pub fn take(&self) -> Vec<(K, Counts)> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *pending).into_iter().collect()
    }

    /// Events not tallied because the tally was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_the_tally_stays_bounded() {
        let t = Tallies::default();
        t.record("a", 10);
        t.record("a", 7);
        t.add("b", Counts { count: 3, first_seen: 1, last_seen: 2 });
        let mut got = t.take();
        got.sort_by_key(|(k, _)| *k);
        assert_eq!(
            got,
            [
                ("a", Counts { count: 2, first_seen: 7, last_seen: 10 }),
                ("b", Counts { count: 3, first_seen: 1, last_seen: 2 }),
            ]
        );
        assert!(t.take().is_empty());
        let t = Tallies::default();
        for i in 0..MAX_PENDING + 5 {
            t.record(i, 1);
        }
        t.add(MAX_PENDING + 9, Counts { count: 4, first_seen: 1, last_seen: 1 });
        assert_eq!(t.dropped(), 9);
        assert_eq!(t.take().len(), MAX_PENDING);
    }
}
