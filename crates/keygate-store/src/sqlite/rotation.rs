//! Traffic-aware rotation: who still sends a value a rotation replaced, and retiring values
//! whose `--retire-when-idle` time has passed without traffic.

use keygate_types::model::{OldValue, OldValueUse};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::map_err;
use crate::Result;

/// The old values `--retire-when-idle` ends at `?1`: still working, and unused for their idle
/// time (their last use, else their rotation).
const IDLE: &str = "retire_idle IS NOT NULL AND expires > ?1 \
     AND COALESCE((SELECT MAX(u.last_seen) FROM old_value_uses u \
                   WHERE u.digest = api_key_old_values.digest), rotated_at, 0) + retire_idle <= ?1";

pub(super) async fn add_old_value_uses(pool: &SqlitePool, uses: &[OldValueUse]) -> Result<()> {
    if uses.is_empty() {
        return Ok(());
    }
    // A few rows (only clients still sending a replaced value), in one transaction; uses of a
    // value that is gone meanwhile (revoked, expired and cleaned) are dropped.
    let mut tx = pool.begin().await.map_err(map_err)?;
    for u in uses {
        sqlx::query(
            "INSERT INTO old_value_uses (digest, client, user_agent, count, first_seen, last_seen) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 \
             WHERE EXISTS (SELECT 1 FROM api_key_old_values v WHERE v.digest = ?1) \
             ON CONFLICT (digest, client, user_agent) \
             DO UPDATE SET count = count + excluded.count, \
                           first_seen = MIN(first_seen, excluded.first_seen), \
                           last_seen = MAX(last_seen, excluded.last_seen)",
        )
        .bind(&u.digest.as_bytes()[..])
        .bind(&u.client)
        .bind(&u.user_agent)
        .bind(i64::try_from(u.count).unwrap_or(i64::MAX))
        .bind(u.first_seen)
        .bind(u.last_seen)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)
}

pub(super) async fn old_values(pool: &SqlitePool, key_id: &str, now: i64) -> Result<Vec<OldValue>> {
    let values = sqlx::query(
        "SELECT digest, prefix, expires, rotated_at, retire_idle FROM api_key_old_values \
         WHERE key_id = ? AND expires > ? ORDER BY expires DESC",
    )
    .bind(key_id)
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    let mut out = Vec::with_capacity(values.len());
    for v in &values {
        let digest: Vec<u8> = v.get("digest");
        let uses = sqlx::query_as::<_, crate::rows::OldValueUseRow>(
            "SELECT digest, client, user_agent, count, first_seen, last_seen FROM old_value_uses \
             WHERE digest = ? ORDER BY last_seen DESC, client, user_agent",
        )
        .bind(&digest)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
        out.push(OldValue {
            prefix: v.get("prefix"),
            expires: v.get("expires"),
            rotated_at: v.get("rotated_at"),
            retire_idle: v.get("retire_idle"),
            uses: uses.into_iter().map(OldValueUse::try_from).collect::<Result<_>>()?,
        });
    }
    Ok(out)
}

pub(super) async fn idle_old_values(pool: &SqlitePool, now: i64) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM api_key_old_values WHERE {IDLE}"
    )))
    .bind(now)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn retire_idle_old_values(tx: &mut SqliteConnection, now: i64) -> Result<u64> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE api_key_old_values SET expires = ?1 WHERE {IDLE}"
    )))
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected())
}
