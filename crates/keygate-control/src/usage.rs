//! Usage reports (AWS get-usage) and quota grants (AWS update-usage).
//!
//! Usage is counted by gateways per key, plan and UTC day and written to the store at most a
//! second after the requests; reports read those daily counts. `remaining` is what the quota
//! left at the end of each day, within that day's quota period.

use std::collections::BTreeMap;

use keygate_limits::calendar::{Date, QuotaWindow};
use keygate_limits::quota::allowance;
use keygate_types::model::UsageGrant;
use serde::Serialize;

use keygate_store::Change;

use crate::{Error, Result, Store, keys, plans};

/// Longest report accepted, in days (a bound on output, not on stored data).
pub const MAX_REPORT_DAYS: i64 = 366;

/// A usage report in AWS's shape: per key id, one `[used, remaining]` pair per day.
/// `remaining` is `null` when the plan has no quota.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub usage_plan_id: String,
    pub usage_plan_name: String,
    pub start_date: String,
    pub end_date: String,
    pub values: BTreeMap<String, Vec<(u64, Option<u64>)>>,
    /// The name of each key in `values`, by id.
    pub key_names: BTreeMap<String, String>,
}

/// Parses a `YYYY-MM-DD` date of a CLI or API argument.
///
/// # Errors
/// [`Error::Invalid`] naming the argument.
pub fn parse_day(s: &str, what: &str) -> Result<Date> {
    s.parse::<Date>().map_err(|e| Error::Invalid(format!("{what}: {e}")))
}

/// The usage of `key` (or every key) of `plan` on the UTC day that holds `unix_ms`: what AWS's
/// update-usage answers with.
pub async fn report_day(
    store: &Store,
    plan: &str,
    key: Option<&str>,
    unix_ms: i64,
) -> Result<UsageReport> {
    let day = Date::from_unix_ms(unix_ms);
    report(store, plan, key, day, day).await
}

/// Daily usage of `plan` (id or name) between two days, for every key of the plan or just `key`.
///
/// # Errors
/// [`Error::NotFound`] for an unknown plan or key, [`Error::Invalid`] for a bad range.
pub async fn report(
    store: &Store,
    plan: &str,
    key: Option<&str>,
    from: Date,
    to: Date,
) -> Result<UsageReport> {
    if to < from {
        return Err(Error::Invalid(format!("--to {to} is before --from {from}")));
    }
    let days = to.days_since_epoch() - from.days_since_epoch() + 1;
    if days > MAX_REPORT_DAYS {
        return Err(Error::Invalid(format!(
            "the range has {days} days; ask for at most {MAX_REPORT_DAYS} at a time"
        )));
    }
    let plan = plans::find(store, plan).await?;
    let key = match key {
        Some(k) => Some(keys::find(store, k).await?),
        None => None,
    };
    let key_id = key.as_ref().map(|k| k.id.clone());
    // Counts from the start of `from`'s quota period, so `remaining` on `from` is right.
    let first = match &plan.quota {
        Some(q) => QuotaWindow::for_quota(from.start_unix_ms(), q).start_date().min(from),
        None => from,
    };
    let rows = store.usage(Some(&plan.id), key_id.as_deref(), first, to).await?;
    let mut by_key: BTreeMap<String, BTreeMap<Date, u64>> = BTreeMap::new();
    let mut key_names = BTreeMap::new();
    match key {
        Some(k) => {
            by_key.insert(k.id.clone(), BTreeMap::new());
            key_names.insert(k.id, k.name);
        }
        None => {
            for k in plans::all_keys(store, &plan.id).await? {
                by_key.insert(k.id.clone(), BTreeMap::new());
                key_names.insert(k.id, k.name);
            }
        }
    }
    for r in rows {
        *by_key.entry(r.key_id).or_default().entry(r.day).or_default() += r.used;
    }
    // Keys that left the plan since keep their usage; name them if they still exist.
    for id in by_key.keys() {
        if !key_names.contains_key(id)
            && let Some(k) = store.get_key(id).await?
        {
            key_names.insert(k.id, k.name);
        }
    }
    let grants = grants_of(store, &plan.id).await?;
    let mut values = BTreeMap::new();
    for (key_id, daily) in by_key {
        let mut pairs = Vec::with_capacity(days as usize);
        for i in 0..days {
            let day = from.add_days(i);
            let used = daily.get(&day).copied().unwrap_or(0);
            let remaining = plan.quota.as_ref().map(|q| {
                let window = QuotaWindow::for_quota(day.start_unix_ms(), q);
                let start = window.start_date();
                let used_so_far: u64 = daily.range(start..=day).map(|(_, n)| n).sum();
                let extra = grants.get(&(key_id.clone(), start)).copied().unwrap_or(0);
                allowance(q.limit, extra).saturating_sub(used_so_far)
            });
            pairs.push((used, remaining));
        }
        values.insert(key_id, pairs);
    }
    Ok(UsageReport {
        usage_plan_id: plan.id,
        usage_plan_name: plan.name,
        start_date: from.to_string(),
        end_date: to.to_string(),
        values,
        key_names,
    })
}

/// The days of `plan`'s (id or name) current period at `now_unix_ms`, up to today: the quota
/// period when the plan has a quota, else the calendar month (UTC). What `keygate usage`
/// reports when no dates are given.
///
/// # Errors
/// [`Error::NotFound`] for an unknown plan.
pub async fn current_period(store: &Store, plan: &str, now_unix_ms: i64) -> Result<(Date, Date)> {
    let plan = plans::find(store, plan).await?;
    let today = Date::from_unix_ms(now_unix_ms);
    let quota = plan.quota.unwrap_or(keygate_types::plan::Quota {
        limit: 0,
        period: keygate_types::plan::QuotaPeriod::Month,
        offset: 0,
    });
    Ok((QuotaWindow::for_quota(now_unix_ms, &quota).start_date(), today))
}

async fn grants_of(store: &Store, plan_id: &str) -> Result<BTreeMap<(String, Date), i64>> {
    Ok(store
        .usage_grants(plan_id)
        .await?
        .into_iter()
        .map(|g| ((g.key_id, g.period_start), g.extra))
        .collect())
}

/// Sets what remains of `key`'s quota in `plan` for the current period to `remaining` (AWS
/// update-usage `/remaining`). Running gateways apply it within a second. Requests a gateway
/// admitted in the last second before the change (not yet written) still count against it.
///
/// # Errors
/// [`Error::NotFound`] for an unknown plan or key or a key not in the plan, [`Error::Invalid`]
/// when the plan has no quota.
pub async fn set_remaining(
    store: &Store,
    plan: &str,
    key: &str,
    remaining: u64,
    now_unix_ms: i64,
) -> Result<UsageGrant> {
    let plan = plans::find(store, plan).await?;
    let key = keys::find(store, key).await?;
    if !store.key_plan_ids(&key.id).await?.contains(&plan.id) {
        return Err(Error::NotFound(format!(
            "API key {} is not in usage plan {}",
            key.name, plan.name
        )));
    }
    let Some(quota) = plan.quota else {
        return Err(Error::Invalid(format!(
            "usage plan {} has no quota, so there is no remaining quota to set",
            plan.name
        )));
    };
    let window = QuotaWindow::for_quota(now_unix_ms, &quota);
    let start = window.start_date();
    let today = Date::from_unix_ms(now_unix_ms);
    let used: u64 = store
        .usage(Some(&plan.id), Some(&key.id), start, today)
        .await?
        .iter()
        .map(|u| u.used)
        .sum();
    // remaining = limit + extra - used  =>  extra = remaining + used - limit.
    let extra = i64::try_from(remaining.saturating_add(used)).unwrap_or(i64::MAX)
        - i64::try_from(quota.limit).unwrap_or(i64::MAX);
    let grant = UsageGrant { plan_id: plan.id, key_id: key.id, period_start: start, extra };
    store.apply(Change::PutGrant(grant.clone())).await?;
    Ok(grant)
}
