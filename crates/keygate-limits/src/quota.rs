//! The usage-plan quota: at most `limit` (+ `extra`) requests per UTC calendar period.
//!
//! [`check_quota`] is the pure decision from a count kept elsewhere. [`AtomicQuotaCounter`] keeps
//! the count itself, for one key, lock-free:
//!
//! - **One word.** The counter is a single `AtomicU64` holding a 16-bit *period tag* (the
//!   period's first day number, modulo 2^16), an "opened" bit and a 47-bit count. Admitting a request is one compare-and-swap
//!   that increments the count only while it is below the allowance, so a quota of 100 admits
//!   exactly 100 however many threads race for it.
//! - **Rollover in the same CAS.** When the caller's period is newer than the stored tag, the CAS
//!   writes the new tag with a count of 1: the reset and the first admission of the new period
//!   are one atomic step, so no admission is lost or double-counted at the boundary, and no lock
//!   is needed. A caller whose `now` is slightly behind (read just before midnight, arriving just
//!   after another caller rolled over) counts into the newer period instead of rolling it back.
//! - **Limits per call.** The allowance (`limit + extra`) is an argument, so grants and plan
//!   changes take effect on the next request without touching the counter.
//!
//! Tags are compared on a ring of 2^16 days, so "newer" is meaningful as long as a counter is not
//! left untouched for ~89 years (half the ring). Counts saturate at 2^47 − 1 (1.4 × 10^14
//! requests per period; allowances above that are treated as that).

use std::sync::atomic::{AtomicU64, Ordering};

use keygate_types::plan::Quota;

use crate::calendar::{DAY_MS, QuotaWindow};

/// Outcome of asking for one request of quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaDecision {
    /// Admitted and counted; `remaining` requests are left in this period after this one.
    Allowed { remaining: u64 },
    /// Refused (and not counted): the period's allowance is used up. `retry_after_secs` is the
    /// whole seconds until the period ends, rounded up, at least 1.
    Exceeded { retry_after_secs: u64 },
}

impl QuotaDecision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, QuotaDecision::Allowed { .. })
    }
}

/// Requests allowed in a period: `limit` raised (or, when negative, lowered) by a usage grant's
/// `extra`, clamped to `0..=u64::MAX`.
pub fn allowance(limit: u64, extra: i64) -> u64 {
    if extra >= 0 {
        limit.saturating_add(extra.unsigned_abs())
    } else {
        limit.saturating_sub(extra.unsigned_abs())
    }
}

fn exceeded(window: &QuotaWindow, now_ms: i64) -> QuotaDecision {
    QuotaDecision::Exceeded { retry_after_secs: window.secs_until_end(now_ms).max(1) }
}

/// The decision for one more request when `used` requests were already admitted in the current
/// period of `quota`, with a grant of `extra` for that period.
pub fn check_quota(quota: &Quota, used: u64, extra: i64, now_ms: i64) -> QuotaDecision {
    let allowance = allowance(quota.limit, extra);
    if used < allowance {
        QuotaDecision::Allowed { remaining: allowance - used - 1 }
    } else {
        exceeded(&QuotaWindow::for_quota(now_ms, quota), now_ms)
    }
}

/// The word: `[opened: 1 bit][period tag: 16 bits][count: 47 bits]`.
const COUNT_BITS: u32 = 47;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
/// Set in every tag of an opened period, so that tag 0 means "no period yet".
const OPENED: u64 = 1 << 16;
const RING_MASK: u64 = 0xFFFF;
const EMPTY: u64 = 0;

/// The tag of the period starting at `start_ms`: its first day number, modulo 2^16.
#[inline]
fn tag_of(start_ms: i64) -> u64 {
    // Window starts are whole days, so plain division is exact (and monotonic regardless).
    OPENED | ((start_ms / DAY_MS) as u64 & RING_MASK)
}

/// Whether period tag `a` is newer than tag `b` (both opened), on the ring of 2^16 days.
#[inline]
fn is_newer(a: u64, b: u64) -> bool {
    let diff = a.wrapping_sub(b) & RING_MASK;
    diff != 0 && diff < 1 << 15
}

fn pack(tag: u64, count: u64) -> u64 {
    (tag << COUNT_BITS) | count
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> COUNT_BITS, word & COUNT_MAX)
}

/// A lock-free quota counter for one key (see the [module docs](self)). Starts with no period;
/// the first request opens one.
#[derive(Debug, Default)]
pub struct AtomicQuotaCounter {
    word: AtomicU64,
}

impl AtomicQuotaCounter {
    /// A counter with nothing used.
    pub const fn new() -> Self {
        Self { word: AtomicU64::new(EMPTY) }
    }

    /// A counter that already has `used` requests in `window` (restoring from the store).
    pub fn with_used(window: &QuotaWindow, used: u64) -> Self {
        Self { word: AtomicU64::new(pack(tag_of(window.start_ms), used.min(COUNT_MAX))) }
    }

    /// Admits one request of `quota` with a grant of `extra` at `now_ms`, counting it, or refuses
    /// it without counting.
    pub fn try_acquire(&self, quota: &Quota, extra: i64, now_ms: i64) -> QuotaDecision {
        let window = QuotaWindow::for_quota(now_ms, quota);
        self.try_acquire_in(&window, allowance(quota.limit, extra), now_ms)
    }

    /// [`try_acquire`](Self::try_acquire) with the period and allowance precomputed (a gateway
    /// can compute the window once per plan and reuse it until it ends). `window` must contain
    /// `now_ms`.
    #[inline]
    pub fn try_acquire_in(
        &self,
        window: &QuotaWindow,
        allowance: u64,
        now_ms: i64,
    ) -> QuotaDecision {
        let allowance = allowance.min(COUNT_MAX);
        let now_tag = tag_of(window.start_ms);
        // Relaxed: the word publishes no other memory; the CAS alone orders admissions.
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let (tag, count) = unpack(word);
            let (tag, used) =
                if tag == EMPTY || is_newer(now_tag, tag) { (now_tag, 0) } else { (tag, count) };
            if used >= allowance {
                return exceeded(window, now_ms);
            }
            let new = pack(tag, used + 1);
            match self.word.compare_exchange_weak(word, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return QuotaDecision::Allowed { remaining: allowance - used - 1 },
                Err(current) => word = current,
            }
        }
    }

    /// Requests counted in `window` (0 if the counter's period is older).
    pub fn used(&self, window: &QuotaWindow) -> u64 {
        let (tag, count) = unpack(self.word.load(Ordering::Relaxed));
        let now_tag = tag_of(window.start_ms);
        if tag == EMPTY || is_newer(now_tag, tag) { 0 } else { count }
    }

    /// Requests left in `window` under `allowance` (for response headers; never consumes).
    pub fn remaining(&self, window: &QuotaWindow, allowance: u64) -> u64 {
        allowance.min(COUNT_MAX).saturating_sub(self.used(window))
    }

    /// Overwrites the count of `window` (restoring from the store, or an operator's reset).
    pub fn set_used(&self, window: &QuotaWindow, used: u64) {
        self.word.store(pack(tag_of(window.start_ms), used.min(COUNT_MAX)), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use keygate_types::plan::QuotaPeriod;

    use super::*;
    use crate::calendar::Date;
    use crate::clock::{Clock, ManualClock};

    fn day_ms(s: &str) -> i64 {
        s.parse::<Date>().unwrap().start_unix_ms()
    }

    fn quota(limit: u64, period: QuotaPeriod, offset: u32) -> Quota {
        Quota { limit, period, offset }
    }

    #[test]
    fn check_quota_counts_down_and_says_when_the_period_ends() {
        let q = quota(3, QuotaPeriod::Day, 0);
        let now = day_ms("2025-06-01") + 86_400_000 - 1_500; // 1.5 s before midnight
        assert_eq!(check_quota(&q, 0, 0, now), QuotaDecision::Allowed { remaining: 2 });
        assert_eq!(check_quota(&q, 2, 0, now), QuotaDecision::Allowed { remaining: 0 });
        assert_eq!(check_quota(&q, 3, 0, now), QuotaDecision::Exceeded { retry_after_secs: 2 });
        assert_eq!(check_quota(&q, 9, 0, now), QuotaDecision::Exceeded { retry_after_secs: 2 });
        // Extra raises (or lowers) the allowance.
        assert_eq!(check_quota(&q, 3, 2, now), QuotaDecision::Allowed { remaining: 1 });
        assert!(!check_quota(&q, 2, -1, now).is_allowed());
        assert!(check_quota(&q, 1, -1, now).is_allowed());
        // Never less than 1 s, even in the last millisecond.
        let last = day_ms("2025-06-02") - 1;
        assert_eq!(check_quota(&q, 3, 0, last), QuotaDecision::Exceeded { retry_after_secs: 1 });
        // A month quota says how long until the month (offset 27: the 28th) ends.
        let m = quota(1, QuotaPeriod::Month, 27);
        let at = day_ms("2025-03-27");
        assert_eq!(check_quota(&m, 1, 0, at), QuotaDecision::Exceeded { retry_after_secs: 86_400 });
    }

    #[test]
    fn allowance_saturates() {
        assert_eq!(allowance(10, 5), 15);
        assert_eq!(allowance(10, -4), 6);
        assert_eq!(allowance(10, -40), 0);
        assert_eq!(allowance(u64::MAX, 1), u64::MAX);
        assert_eq!(allowance(0, i64::MIN), 0);
        assert_eq!(allowance(0, i64::MAX), i64::MAX as u64);
    }

    #[test]
    fn counter_admits_the_limit_then_rolls_over() {
        let q = quota(3, QuotaPeriod::Week, 1); // weeks start on Monday
        let c = AtomicQuotaCounter::new();
        let wed = day_ms("2026-11-25");
        for remaining in [2, 1, 0] {
            assert_eq!(c.try_acquire(&q, 0, wed), QuotaDecision::Allowed { remaining });
        }
        // Refused until Monday 2026-11-30 00:00, 5 days away.
        assert_eq!(
            c.try_acquire(&q, 0, wed),
            QuotaDecision::Exceeded { retry_after_secs: 5 * 86_400 }
        );
        let window = QuotaWindow::for_quota(wed, &q);
        assert_eq!(c.used(&window), 3);
        assert_eq!(c.remaining(&window, 3), 0);
        // A grant of 1 more for this week.
        assert_eq!(c.try_acquire(&q, 1, wed), QuotaDecision::Allowed { remaining: 0 });
        assert!(!c.try_acquire(&q, 1, wed).is_allowed());
        // The last millisecond of Sunday is still this week; Monday 00:00 is a new one.
        let monday = day_ms("2026-11-30");
        assert!(!c.try_acquire(&q, 0, monday - 1).is_allowed());
        assert_eq!(c.try_acquire(&q, 0, monday), QuotaDecision::Allowed { remaining: 2 });
        let next = QuotaWindow::for_quota(monday, &q);
        assert_eq!(c.used(&next), 1);
        // A caller still reading last week's clock counts into the new week, not the old one.
        assert_eq!(c.try_acquire(&q, 0, monday - 1), QuotaDecision::Allowed { remaining: 1 });
        assert_eq!(c.used(&next), 2);
        assert_eq!(c.used(&window), 2, "the older window sees the newer period's count");
    }

    #[test]
    fn counter_restores_and_overwrites() {
        let q = quota(10, QuotaPeriod::Month, 0);
        let now = day_ms("2024-02-29");
        let window = QuotaWindow::for_quota(now, &q);
        let c = AtomicQuotaCounter::with_used(&window, 8);
        assert_eq!(c.try_acquire(&q, 0, now), QuotaDecision::Allowed { remaining: 1 });
        c.set_used(&window, 10);
        assert!(!c.try_acquire(&q, 0, now).is_allowed());
        // Restored counts of an older period do not carry into the next one.
        let march = day_ms("2024-03-01");
        assert_eq!(c.used(&QuotaWindow::for_quota(march, &q)), 0);
        assert_eq!(c.try_acquire(&q, 0, march), QuotaDecision::Allowed { remaining: 9 });
        assert_eq!(AtomicQuotaCounter::new().used(&window), 0);
        // Counts and allowances beyond 47 bits saturate instead of spilling into the tag.
        let big = AtomicQuotaCounter::with_used(&window, u64::MAX);
        assert_eq!(big.used(&window), COUNT_MAX);
        assert!(!big.try_acquire_in(&window, u64::MAX, now).is_allowed());
    }

    #[test]
    fn zero_quota_admits_nothing() {
        let q = quota(0, QuotaPeriod::Day, 0);
        let c = AtomicQuotaCounter::new();
        assert!(!c.try_acquire(&q, 0, 0).is_allowed());
        assert!(c.try_acquire(&q, 1, 0).is_allowed());
    }

    #[test]
    fn period_tags_order_on_the_ring() {
        const TAG_RING: i64 = 1 << 16;
        let t = |day: i64| tag_of(day * DAY_MS);
        assert!(is_newer(t(20_000), t(19_999)));
        assert!(!is_newer(t(19_999), t(20_000)));
        assert!(!is_newer(t(20_000), t(20_000)));
        assert!(is_newer(t(20_000), t(20_000 - 31)));
        // Across the wrap of the ring.
        assert!(is_newer(t(TAG_RING), t(TAG_RING - 1)));
        assert!(is_newer(t(TAG_RING + 3), t(TAG_RING - 3)));
        assert!(!is_newer(t(TAG_RING - 3), t(TAG_RING + 3)));
        // Before 1970.
        assert!(is_newer(t(0), t(-1)));
        for day in [-TAG_RING - 1, -1, 0, 1, TAG_RING - 1, TAG_RING, 1 << 30] {
            assert_ne!(t(day), EMPTY, "{day}");
            assert_eq!(unpack(pack(t(day), COUNT_MAX)), (t(day), COUNT_MAX));
        }
    }

    #[test]
    fn eight_threads_get_exactly_the_quota() {
        let q = quota(100, QuotaPeriod::Day, 0);
        let c = AtomicQuotaCounter::new();
        let admitted = AtomicU64::new(0);
        let now = day_ms("2026-11-28") + 3_600_000;
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..5_000 {
                        if c.try_acquire(&q, 0, now).is_allowed() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 100);
        assert_eq!(c.used(&QuotaWindow::for_quota(now, &q)), 100);
    }

    #[test]
    fn concurrent_rollover_admits_exactly_the_new_quota() {
        // The old day is used up. 8 threads race across midnight: half read a clock just before
        // it, half just after. Exactly the new day's 100 are admitted: no admission is lost to a
        // racing reset, and the stale readers never roll the counter back.
        let q = quota(100, QuotaPeriod::Day, 0);
        let midnight = day_ms("2026-11-29");
        let c = AtomicQuotaCounter::with_used(&QuotaWindow::for_quota(midnight - 1, &q), 100);
        let clock = ManualClock::starting_at(crate::Nanos::ZERO, midnight);
        let admitted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for i in 0..8 {
                let (c, admitted, clock, q) = (&c, &admitted, &clock, &q);
                s.spawn(move || {
                    for _ in 0..5_000 {
                        let now = if i % 2 == 0 { clock.now_unix_ms() } else { midnight - 1 };
                        if c.try_acquire(q, 0, now).is_allowed() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 100);
        assert_eq!(c.used(&QuotaWindow::for_quota(midnight, &q)), 100);
    }
}
