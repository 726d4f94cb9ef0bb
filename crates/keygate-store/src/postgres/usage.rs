//! Usage: the data plane's counters (daily usage, last use of keys) and extra quota grants.

use keygate_types::date::Date;
use keygate_types::model::{DailyUsage, UsageGrant};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use super::map_err;
use crate::{Error, Result};

pub(super) async fn put_grant(tx: &mut PgConnection, grant: UsageGrant) -> Result<()> {
    sqlx::query(
        "INSERT INTO usage_grants (plan_id, key_id, period_start, extra) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (plan_id, key_id, period_start) DO UPDATE SET extra = excluded.extra",
    )
    .bind(&grant.plan_id)
    .bind(&grant.key_id)
    .bind(grant.period_start.to_string())
    .bind(grant.extra)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn add_usage(pool: &PgPool, usage: &[DailyUsage]) -> Result<()> {
    if usage.is_empty() {
        return Ok(());
    }
    // Counters are data, not configuration: no version bump, so gateways do not reload.
    // One statement for the batch (rows as four arrays), atomic as a whole; usage of a key or
    // plan deleted meanwhile is dropped with it. Rows are grouped (one upsert may not touch a
    // row twice) and taken in key order, so nodes flushing at once lock rows in the same order.
    let mut plans = Vec::with_capacity(usage.len());
    let mut keys = Vec::with_capacity(usage.len());
    let mut days = Vec::with_capacity(usage.len());
    let mut used = Vec::with_capacity(usage.len());
    for u in usage {
        plans.push(u.plan_id.as_str());
        keys.push(u.key_id.as_str());
        days.push(u.day.to_string());
        used.push(i64::try_from(u.used).unwrap_or(i64::MAX));
    }
    sqlx::query(
        "INSERT INTO usage_days (plan_id, key_id, day, used) \
         SELECT u.plan_id, u.key_id, u.day, SUM(u.used)::BIGINT \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u (plan_id, key_id, day, used) \
         WHERE EXISTS (SELECT 1 FROM usage_plans WHERE id = u.plan_id) \
           AND EXISTS (SELECT 1 FROM api_keys WHERE id = u.key_id) \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 \
         ON CONFLICT (plan_id, key_id, day) DO UPDATE SET used = usage_days.used + excluded.used",
    )
    .bind(&plans)
    .bind(&keys)
    .bind(&days)
    .bind(&used)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn set_last_used(pool: &PgPool, used: &[(String, i64)]) -> Result<()> {
    if used.is_empty() {
        return Ok(());
    }
    // Data, not configuration: no version bump. One statement for the whole batch.
    let ids: Vec<&str> = used.iter().map(|(id, _)| id.as_str()).collect();
    let at: Vec<i64> = used.iter().map(|&(_, at)| at).collect();
    sqlx::query(
        "UPDATE api_keys SET last_used_date = GREATEST(COALESCE(api_keys.last_used_date, 0), u.at) \
         FROM (SELECT id, MAX(at) AS at FROM UNNEST($1::text[], $2::bigint[]) AS t (id, at) \
               GROUP BY id ORDER BY id) AS u \
         WHERE api_keys.id = u.id",
    )
    .bind(&ids)
    .bind(&at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn usage(
    pool: &PgPool,
    plan_id: Option<&str>,
    key_id: Option<&str>,
    from: Date,
    to: Date,
) -> Result<Vec<DailyUsage>> {
    // One statement per filter: `plan_id = COALESCE(?, plan_id)` would keep PostgreSQL from using
    // the primary key (plan_id, key_id, day) and scan every row of every key.
    let sql = match (plan_id.is_some(), key_id.is_some()) {
        (true, true) => {
            "SELECT plan_id, key_id, day, used FROM usage_days \
             WHERE plan_id = $1 AND key_id = $2 AND day >= $3 AND day <= $4 ORDER BY day"
        }
        (true, false) => {
            "SELECT plan_id, key_id, day, used FROM usage_days \
             WHERE plan_id = $1 AND day >= $2 AND day <= $3 ORDER BY key_id, day"
        }
        (false, true) => {
            "SELECT plan_id, key_id, day, used FROM usage_days \
             WHERE key_id = $1 AND day >= $2 AND day <= $3 ORDER BY plan_id, day"
        }
        (false, false) => {
            "SELECT plan_id, key_id, day, used FROM usage_days \
             WHERE day >= $1 AND day <= $2 ORDER BY plan_id, key_id, day"
        }
    };
    let mut query = sqlx::query(sql);
    if let Some(plan_id) = plan_id {
        query = query.bind(plan_id);
    }
    if let Some(key_id) = key_id {
        query = query.bind(key_id);
    }
    let rows =
        query.bind(from.to_string()).bind(to.to_string()).fetch_all(pool).await.map_err(map_err)?;
    rows.iter()
        .map(|r| {
            Ok(DailyUsage {
                plan_id: r.get("plan_id"),
                key_id: r.get("key_id"),
                day: stored_date(r.get("day"))?,
                used: r.get::<i64, _>("used").max(0) as u64,
            })
        })
        .collect()
}

pub(super) async fn usage_grants(pool: &PgPool, plan_id: &str) -> Result<Vec<UsageGrant>> {
    let rows = sqlx::query(
        "SELECT plan_id, key_id, period_start, extra FROM usage_grants WHERE plan_id = $1 \
         ORDER BY key_id, period_start",
    )
    .bind(plan_id)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    rows.iter().map(grant_from_row).collect()
}

/// A date as the store keeps it (`YYYY-MM-DD`), read back.
pub(super) fn stored_date(text: &str) -> Result<Date> {
    text.parse().map_err(|e| Error::other("a stored date is unreadable", e))
}

pub(super) fn grant_from_row(r: &PgRow) -> Result<UsageGrant> {
    Ok(UsageGrant {
        plan_id: r.get("plan_id"),
        key_id: r.get("key_id"),
        period_start: stored_date(r.get("period_start"))?,
        extra: r.get("extra"),
    })
}
