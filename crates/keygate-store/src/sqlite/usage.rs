//! Usage: the data plane's counters (daily usage, last use of keys) and extra quota grants.

use keygate_types::date::Date;
use keygate_types::model::{DailyUsage, UsageGrant};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::map_err;
use crate::{Error, Result};

pub(super) async fn put_grant(tx: &mut SqliteConnection, grant: UsageGrant) -> Result<()> {
    sqlx::query(
        "INSERT INTO usage_grants (plan_id, key_id, period_start, extra) VALUES (?, ?, ?, ?) \
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

pub(super) async fn add_usage(pool: &SqlitePool, usage: &[DailyUsage]) -> Result<()> {
    if usage.is_empty() {
        return Ok(());
    }
    // Counters are data, not configuration: no version bump, so gateways do not reload.
    // One statement for the batch (rows as one JSON array), atomic as a whole; usage of a
    // key or plan deleted meanwhile is dropped with it.
    let rows: Vec<(&str, &str, String, u64)> = usage
        .iter()
        .map(|u| (u.plan_id.as_str(), u.key_id.as_str(), u.day.to_string(), u.used))
        .collect();
    let rows = serde_json::to_string(&rows).map_err(|e| Error::other("cannot encode usage", e))?;
    sqlx::query(
        "INSERT INTO usage_days (plan_id, key_id, day, used) \
         SELECT u.plan_id, u.key_id, u.day, u.used FROM \
           (SELECT json_extract(value, '$[0]') AS plan_id, json_extract(value, '$[1]') AS key_id, \
                   json_extract(value, '$[2]') AS day, json_extract(value, '$[3]') AS used \
            FROM json_each(?)) AS u \
         WHERE EXISTS (SELECT 1 FROM usage_plans WHERE id = u.plan_id) \
           AND EXISTS (SELECT 1 FROM api_keys WHERE id = u.key_id) \
         ON CONFLICT (plan_id, key_id, day) DO UPDATE SET used = used + excluded.used",
    )
    .bind(rows)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn set_last_used(pool: &SqlitePool, used: &[(String, i64)]) -> Result<()> {
    if used.is_empty() {
        return Ok(());
    }
    // Data, not configuration: no version bump. One statement for the whole batch (the rows
    // travel as one JSON array): a flush after traffic on thousands of keys would otherwise
    // cost a round trip to SQLite's worker thread per key.
    let rows =
        serde_json::to_string(used).map_err(|e| Error::other("cannot encode last uses", e))?;
    sqlx::query(
        "UPDATE api_keys SET last_used_date = MAX(COALESCE(last_used_date, 0), u.at) \
         FROM (SELECT json_extract(value, '$[0]') AS id, MAX(json_extract(value, '$[1]')) AS at \
               FROM json_each(?) GROUP BY 1) AS u \
         WHERE api_keys.id = u.id",
    )
    .bind(rows)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn usage(
    pool: &SqlitePool,
    plan_id: Option<&str>,
    key_id: Option<&str>,
    from: Date,
    to: Date,
) -> Result<Vec<DailyUsage>> {
    // One statement per filter: `plan_id = COALESCE(?, plan_id)` would keep SQLite from using
    // the primary key (plan_id, key_id, day) and scan every row of every key.
    let sql = match (plan_id.is_some(), key_id.is_some()) {
        (true, true) => {
            "SELECT plan_id, key_id, day, used FROM usage_days \
             WHERE plan_id = ? AND key_id = ? AND day >= ? AND day <= ? ORDER BY day"
        }
        (true, false) => {
            "SELECT plan_id, key_id, day, used FROM usage_days \
             WHERE plan_id = ? AND day >= ? AND day <= ? ORDER BY key_id, day"
        }
        (false, true) => {
            "SELECT plan_id, key_id, day, used FROM usage_days \
             WHERE key_id = ? AND day >= ? AND day <= ? ORDER BY plan_id, day"
        }
        (false, false) => {
            "SELECT plan_id, key_id, day, used FROM usage_days \
             WHERE day >= ? AND day <= ? ORDER BY plan_id, key_id, day"
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

pub(super) async fn usage_grants(pool: &SqlitePool, plan_id: &str) -> Result<Vec<UsageGrant>> {
    let rows = sqlx::query(
        "SELECT plan_id, key_id, period_start, extra FROM usage_grants WHERE plan_id = ? \
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

pub(super) fn grant_from_row(r: &SqliteRow) -> Result<UsageGrant> {
    Ok(UsageGrant {
        plan_id: r.get("plan_id"),
        key_id: r.get("key_id"),
        period_start: stored_date(r.get("period_start"))?,
        extra: r.get("extra"),
    })
}
