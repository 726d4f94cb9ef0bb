//! The usage-plan quota: at most `limit` (+ `extra`) requests per UTC calendar period.
//!
//! [`check_quota`] is the pure decision from a count kept elsewhere (the gateway keeps it per key
//! and plan, under its own lock, with the throttle: one decision for both).

use keygate_types::plan::Quota;

use crate::calendar::QuotaWindow;

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

#[cfg(test)]
mod tests {
    use keygate_types::plan::QuotaPeriod;

    use super::*;
    use crate::calendar::Date;

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
}
