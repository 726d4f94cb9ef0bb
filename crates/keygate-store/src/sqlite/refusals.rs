//! Would-be refusals of report-only routes: counted per hour, route, reason and client.

use keygate_types::model::WouldRefuse;
use sqlx::SqlitePool;

use super::map_err;
use crate::{Error, Result};

/// How long would-be refusals are kept.
const KEEP_SECS: i64 = 31 * 86_400;

pub(super) async fn add_would_refuse(pool: &SqlitePool, rows: &[WouldRefuse]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // One statement for the batch (rows as one JSON array), added to what the hour has.
    let encoded: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.hour,
                &r.api_id,
                &r.stage,
                &r.method,
                &r.path,
                &r.reason,
                r.key_id.as_deref().unwrap_or(""),
                &r.client,
                &r.user_agent,
                r.count,
                r.first_seen,
                r.last_seen,
            )
        })
        .collect();
    let encoded = serde_json::to_string(&encoded)
        .map_err(|e| Error::other("cannot encode would-be refusals", e))?;
    let mut tx = pool.begin().await.map_err(map_err)?;
    sqlx::query(
        "INSERT INTO would_refuse (hour, api_id, stage, method, path, reason, key_id, client, \
                                   user_agent, count, first_seen, last_seen) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
                value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11 \
         FROM json_each(?) WHERE true \
         ON CONFLICT (hour, api_id, stage, method, path, reason, key_id, client, user_agent) \
         DO UPDATE SET count = count + excluded.count, \
                       first_seen = MIN(first_seen, excluded.first_seen), \
                       last_seen = MAX(last_seen, excluded.last_seen)",
    )
    .bind(encoded)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    let oldest = rows.iter().map(|r| r.hour).max().unwrap_or(0) - KEEP_SECS;
    sqlx::query("DELETE FROM would_refuse WHERE hour < ?")
        .bind(oldest)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)
}

pub(super) async fn would_refuse(
    pool: &SqlitePool,
    stage: Option<&str>,
    since: i64,
) -> Result<Vec<WouldRefuse>> {
    let rows = sqlx::query_as::<_, crate::rows::WouldRefuseRow>(
        "SELECT hour, api_id, stage, method, path, reason, key_id, client, user_agent, count, \
                first_seen, last_seen \
         FROM would_refuse WHERE last_seen >= ? AND (? IS NULL OR stage = ?) \
         ORDER BY hour, api_id, stage, method, path, reason, key_id, client, user_agent",
    )
    .bind(since)
    .bind(stage)
    .bind(stage)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(rows.into_iter().map(WouldRefuse::from).collect())
}
