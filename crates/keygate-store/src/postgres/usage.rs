//! Usage: the data plane's counters (daily usage, last use of keys) and extra quota grants.

use keygate_types::date::Date;
use keygate_types::model::{DailyUsage, UsageGrant};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

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
    // Appended to the log (no row locks, no random page writes; `fold_usage` moves it into the
    // days in key order). One statement for the batch (rows as arrays), atomic as a whole; usage
    // of a key or plan deleted meanwhile is dropped with it.
    let mut plans = Vec::with_capacity(usage.len());
    let mut keys = Vec::with_capacity(usage.len());
    let mut days = Vec::with_capacity(usage.len());
    let mut used = Vec::with_capacity(usage.len());
    let mut at = Vec::with_capacity(usage.len());
    for u in usage {
        plans.push(u.plan_id.as_str());
        keys.push(u.key_id.as_str());
        days.push(u.day.to_string());
        used.push(i64::try_from(u.used).unwrap_or(i64::MAX));
        at.push(u.last_used);
    }
    sqlx::query(
        "INSERT INTO usage_log (plan_id, key_id, day, used, at) \
         SELECT u.plan_id, u.key_id, u.day, u.used, u.at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) \
           AS u (plan_id, key_id, day, used, at) \
         WHERE EXISTS (SELECT 1 FROM usage_plans WHERE id = u.plan_id) \
           AND EXISTS (SELECT 1 FROM api_keys WHERE id = u.key_id)",
    )
    .bind(&plans)
    .bind(&keys)
    .bind(&days)
    .bind(&used)
    .bind(&at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Log rows folded per statement: big enough that a fold writes each counter it touches about
/// once, small enough that no transaction runs long.
const FOLD_CHUNK: i64 = 50_000;
/// Chunks one call folds at most: a node that cannot keep up leaves the rest to the next call
/// instead of chasing appends forever.
const FOLD_CHUNKS: u32 = 100;

/// Moves the usage log into the daily counters, in key order, [`FOLD_CHUNK`] rows per statement;
/// returns the log rows moved. Each statement deletes what it adds, and takes only rows no other
/// fold holds (`SKIP LOCKED`): nodes folding at once share the log and never count a row twice;
/// they lock counters in the same (key) order.
pub(super) async fn fold_usage(pool: &PgPool) -> Result<u64> {
    let mut total = 0;
    for _ in 0..FOLD_CHUNKS {
        let moved: i64 = sqlx::query_scalar(
            "WITH moved AS ( \
               DELETE FROM usage_log WHERE ctid IN \
                 (SELECT ctid FROM usage_log LIMIT $1 FOR UPDATE SKIP LOCKED) \
               RETURNING plan_id, key_id, day, used, at), \
             folded AS ( \
               INSERT INTO usage_days (plan_id, key_id, day, used, at) \
               SELECT plan_id, key_id, day, SUM(used)::BIGINT, MAX(at) FROM moved \
               GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 \
               ON CONFLICT (plan_id, key_id, day) DO UPDATE \
                 SET used = usage_days.used + excluded.used, \
                     at = GREATEST(usage_days.at, excluded.at)) \
             SELECT COUNT(*) FROM moved",
        )
        .bind(FOLD_CHUNK)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
        total += u64::try_from(moved).unwrap_or(0);
        if moved < FOLD_CHUNK {
            break;
        }
    }
    Ok(total)
}

pub(super) async fn usage(
    pool: &PgPool,
    plan_id: Option<&str>,
    key_id: Option<&str>,
    from: Date,
    to: Date,
) -> Result<Vec<DailyUsage>> {
    // The days plus the log not folded yet. One statement per filter: `plan_id = COALESCE(?,
    // plan_id)` would keep PostgreSQL from using the indexes and scan every row of every key.
    let (filter, order) = match (plan_id.is_some(), key_id.is_some()) {
        (true, true) => ("plan_id = $1 AND key_id = $2 AND day >= $3 AND day <= $4", "day"),
        (true, false) => ("plan_id = $1 AND day >= $2 AND day <= $3", "key_id, day"),
        (false, true) => ("key_id = $1 AND day >= $2 AND day <= $3", "plan_id, day"),
        (false, false) => ("day >= $1 AND day <= $2", "plan_id, key_id, day"),
    };
    let sql = format!(
        "SELECT plan_id, key_id, day, SUM(used)::BIGINT AS used, MAX(at) AS at FROM \
           (SELECT plan_id, key_id, day, used, at FROM usage_days WHERE {filter} \
            UNION ALL SELECT plan_id, key_id, day, used, at FROM usage_log WHERE {filter}) AS u \
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
