//! What-if for a plan change (not on AWS): the stored per-key daily usage of a plan replayed
//! against a proposed quota, to see which keys would have been cut off (429 Limit Exceeded),
//! on how many days and for how many requests, before the change is made.
//!
//! Replayed as gateways count: only admitted requests count against a quota, so once a period's
//! allowance is spent, the rest of that period's requests would have been refused and would not
//! have counted. Grants (update-usage) are not replayed: they belong to the current limits.
//! Periods are the proposal's (UTC calendar days, weeks from the offset's weekday, months from
//! the offset's day), and a period that began before the first day replayed counts its earlier
//! days too.

use std::collections::BTreeMap;

use keygate_limits::calendar::{Date, QuotaWindow};
use keygate_types::plan::Quota;
use serde::Serialize;

use crate::{Error, Result, Store, plans};

/// Longest history replayed, in days.
pub const MAX_DAYS: i64 = 366;

/// What one key's history would have met under the proposed quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyOutcome {
    pub key_id: String,
    /// The key's name, when the key still exists.
    pub key_name: Option<String>,
    /// Requests admitted in the days replayed (what the usage counts).
    pub requests: u64,
    /// Of those, requests the proposed quota would have refused.
    pub cut_off: u64,
    /// Days on which it would have refused at least one request, oldest first.
    pub cut_off_days: Vec<String>,
}

/// The replay of a plan's history against a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhatIf {
    pub usage_plan_id: String,
    pub usage_plan_name: String,
    pub quota: Quota,
    pub start_date: String,
    pub end_date: String,
    /// Every key with usage in the days replayed, the most cut off first.
    pub keys: Vec<KeyOutcome>,
}

/// Replays `plan`'s (id or name) usage of the `days` days up to `today` against `quota`.
///
/// # Errors
/// [`Error::NotFound`] for an unknown plan, [`Error::Invalid`] for a bad number of days or a
/// quota that cannot be one.
pub async fn quota(
    store: &Store,
    plan: &str,
    quota: Quota,
    days: i64,
    today: Date,
) -> Result<WhatIf> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(Error::Invalid(format!("--days must be 1 to {MAX_DAYS}, not {days}")));
    }
    plans::check_quota(&quota, "--quota-")?;
    let plan = plans::find(store, plan).await?;
    let from = today.add_days(1 - days);
    // From the start of the proposal's period holding `from`, so that period's earlier days
    // count against it too.
    let first = QuotaWindow::for_quota(from.start_unix_ms(), &quota).start_date().min(from);
    let rows = store.usage(Some(&plan.id), None, first, today).await?;
    let mut by_key: BTreeMap<String, BTreeMap<Date, u64>> = BTreeMap::new();
    for r in rows {
        *by_key.entry(r.key_id).or_default().entry(r.day).or_default() += r.used;
    }
    let mut outcomes = Vec::with_capacity(by_key.len());
    for (key_id, daily) in by_key {
        let mut outcome = replay(&quota, &daily, from, today);
        if outcome.requests == 0 {
            continue;
        }
        outcome.key_name = store.get_key(&key_id).await?.map(|k| k.name);
        outcome.key_id = key_id;
        outcomes.push(outcome);
    }
    outcomes.sort_by(|a, b| b.cut_off.cmp(&a.cut_off).then_with(|| a.key_id.cmp(&b.key_id)));
    Ok(WhatIf {
        usage_plan_id: plan.id,
        usage_plan_name: plan.name,
        quota,
        start_date: from.to_string(),
        end_date: today.to_string(),
        keys: outcomes,
    })
}

/// One key's daily requests (from the start of `from`'s period on) against `quota`: what the
/// days `from..=to` would have admitted and refused.
pub fn replay(quota: &Quota, daily: &BTreeMap<Date, u64>, from: Date, to: Date) -> KeyOutcome {
    let mut out = KeyOutcome {
        key_id: String::new(),
        key_name: None,
        requests: 0,
        cut_off: 0,
        cut_off_days: Vec::new(),
    };
    // Requests the proposal would have admitted in the current period so far.
    let mut period: Option<(Date, u64)> = None;
    for (&day, &used) in daily.range(..=to) {
        let start = QuotaWindow::for_quota(day.start_unix_ms(), quota).start_date();
        let admitted = match period {
            Some((s, n)) if s == start => n,
            _ => 0,
        };
        let admitted_today = used.min(quota.limit.saturating_sub(admitted));
        period = Some((start, admitted + admitted_today));
        if day >= from {
            out.requests += used;
            let refused = used - admitted_today;
            if refused > 0 {
                out.cut_off += refused;
                out.cut_off_days.push(day.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use keygate_types::plan::QuotaPeriod;

    use super::*;

    fn day(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn history(days: &[(&str, u64)]) -> BTreeMap<Date, u64> {
        days.iter().map(|&(d, n)| (day(d), n)).collect()
    }

    #[test]
    fn a_daily_quota_cuts_each_day_on_its_own() {
        let q = Quota { limit: 5, period: QuotaPeriod::Day, offset: 0 };
        let h = history(&[("2026-12-01", 7), ("2026-12-02", 5), ("2026-12-03", 12)]);
        let o = replay(&q, &h, day("2026-12-01"), day("2026-12-03"));
        assert_eq!((o.requests, o.cut_off), (24, 9));
        assert_eq!(o.cut_off_days, ["2026-12-01", "2026-12-03"]);
    }

    #[test]
    fn a_weekly_quota_counts_only_what_it_would_have_admitted() {
        // Weeks from Monday (offset 1): 2026-11-30 is a Monday, 2026-12-07 the next.
        let q = Quota { limit: 10, period: QuotaPeriod::Week, offset: 1 };
        let h = history(&[
            ("2026-11-29", 50), // Sunday: the week before, not replayed
            ("2026-11-30", 6),
            ("2026-12-01", 6), // 4 admitted, 2 cut off: the week's 10 are spent
            ("2026-12-02", 3), // all cut off
            ("2026-12-07", 9), // a new week: all admitted
        ]);
        let o = replay(&q, &h, day("2026-11-30"), day("2026-12-07"));
        assert_eq!((o.requests, o.cut_off), (24, 5));
        assert_eq!(o.cut_off_days, ["2026-12-01", "2026-12-02"]);
    }

    #[test]
    fn earlier_days_of_the_first_period_count_against_it() {
        let q = Quota { limit: 10, period: QuotaPeriod::Month, offset: 0 };
        let h = history(&[("2026-12-01", 8), ("2026-12-05", 4)]);
        // Replaying from the 5th: the 1st's 8 already count in December.
        let o = replay(&q, &h, day("2026-12-05"), day("2026-12-05"));
        assert_eq!((o.requests, o.cut_off), (4, 2));
    }
}
