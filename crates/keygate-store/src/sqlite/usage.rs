//! Usage: the data plane's counters (daily usage, last use of keys) and extra quota grants.

use keygate_types::date::Date;
use keygate_types::model::{DailyUsage, UsageGrant};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection, SqlitePool};

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
    // Appended to the log (sequential pages; `fold_usage` moves it into the days in key order).
    // One statement for the batch (rows as one JSON array), atomic as a whole; usage of a key or
    // plan deleted meanwhile is dropped with it.
    let rows: Vec<(&str, &str, String, u64, Option<i64>)> = usage
        .iter()
        .map(|u| (u.plan_id.as_str(), u.key_id.as_str(), u.day.to_string(), u.used, u.last_used))
        .collect();
    let rows = serde_json::to_string(&rows).map_err(|e| Error::other("cannot encode usage", e))?;
    sqlx::query(
        "INSERT INTO usage_log (plan_id, key_id, day, used, at) \
         SELECT u.plan_id, u.key_id, u.day, u.used, u.at FROM \
           (SELECT json_extract(value, '$[0]') AS plan_id, json_extract(value, '$[1]') AS key_id, \
                   json_extract(value, '$[2]') AS day, json_extract(value, '$[3]') AS used, \
                   json_extract(value, '$[4]') AS at \
            FROM json_each(?)) AS u \
         WHERE EXISTS (SELECT 1 FROM usage_plans WHERE id = u.plan_id) \
           AND EXISTS (SELECT 1 FROM api_keys WHERE id = u.key_id)",
    )
    .bind(rows)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Log rows folded per transaction: big enough that a fold writes each page of the counters
/// it touches about once, small enough that other writers (the CLI, the admin API) never wait
/// long for the write lock.
const FOLD_CHUNK: i64 = 50_000;

/// Moves the usage log (as far as it went when called) into the daily counters, in key order,
/// [`FOLD_CHUNK`] rows per transaction; returns the log rows moved.
pub(super) async fn fold_usage(pool: &SqlitePool) -> Result<u64> {
    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(rowid) FROM usage_log")
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    let Some(last) = last else { return Ok(0) };
    let mut moved = 0;
    loop {
        // Immediate: the write lock first, so no writer commits between the read of the log's
        // start and the writes (a deferred transaction would fail with SQLITE_BUSY; see
        // `SqliteStore::begin`).
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
        let first: Option<i64> = sqlx::query_scalar("SELECT MIN(rowid) FROM usage_log")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        let Some(first) = first.filter(|&first| first <= last) else { return Ok(moved) };
        let end = last.min(first.saturating_add(FOLD_CHUNK - 1));
        // `WHERE` keeps SQLite's parser from reading `ON CONFLICT` as a join constraint.
        sqlx::query(
            "INSERT INTO usage_days (plan_id, key_id, day, used, at) \
             SELECT plan_id, key_id, day, SUM(used), MAX(at) FROM usage_log WHERE rowid <= ? \
             GROUP BY plan_id, key_id, day ORDER BY plan_id, key_id, day \
             ON CONFLICT (plan_id, key_id, day) DO UPDATE SET used = used + excluded.used, \
               at = COALESCE(MAX(at, excluded.at), at, excluded.at)",
        )
        .bind(end)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let done = sqlx::query("DELETE FROM usage_log WHERE rowid <= ?")
            .bind(end)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        moved += done.rows_affected();
    }
}

pub(super) async fn usage(
    pool: &SqlitePool,
    plan_id: Option<&str>,
    key_id: Option<&str>,
    from: Date,
    to: Date,
) -> Result<Vec<DailyUsage>> {
    // The days plus the log not folded yet. One statement per filter: `plan_id = COALESCE(?,
    // plan_id)` would keep SQLite from using the indexes and scan every row of every key.
    let (filter, order) = match (plan_id.is_some(), key_id.is_some()) {
        (true, true) => ("plan_id = ?1 AND key_id = ?2 AND day >= ?3 AND day <= ?4", "day"),
        (true, false) => ("plan_id = ?1 AND day >= ?2 AND day <= ?3", "key_id, day"),
        (false, true) => ("key_id = ?1 AND day >= ?2 AND day <= ?3", "plan_id, day"),
        (false, false) => ("day >= ?1 AND day <= ?2", "plan_id, key_id, day"),
    };
    let sql = format!(
        "SELECT plan_id, key_id, day, SUM(used) AS used, MAX(at) AS at FROM \
           (SELECT plan_id, key_id, day, used, at FROM usage_days WHERE {filter} \
            UNION ALL SELECT plan_id, key_id, day, used, at FROM usage_log WHERE {filter}) \
         GROUP BY plan_id, key_id, day ORDER BY {order}"
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
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
                last_used: r.get("at"),
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
