//! Would-be refusals of report-only routes: counted per hour, route, reason and client.

use keygate_types::model::WouldRefuse;
use sqlx::PgPool;

use super::map_err;
use crate::Result;

/// How long would-be refusals are kept.
const KEEP_SECS: i64 = 31 * 86_400;

pub(super) async fn add_would_refuse(pool: &PgPool, rows: &[WouldRefuse]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&WouldRefuse) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let hours: Vec<i64> = rows.iter().map(|r| r.hour).collect();
    let counts: Vec<i64> =
        rows.iter().map(|r| i64::try_from(r.count).unwrap_or(i64::MAX)).collect();
    let firsts: Vec<i64> = rows.iter().map(|r| r.first_seen).collect();
    let lasts: Vec<i64> = rows.iter().map(|r| r.last_seen).collect();
    let mut tx = pool.begin().await.map_err(map_err)?;
    // One statement for the batch (rows as arrays), added to what the hour has.
    sqlx::query(
        "INSERT INTO would_refuse (hour, api_id, stage, method, path, reason, key_id, client, \
                                   user_agent, count, first_seen, last_seen) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], \
                              $11::bigint[], $12::bigint[]) \
         ON CONFLICT (hour, api_id, stage, method, path, reason, key_id, client, user_agent) \
         DO UPDATE SET count = would_refuse.count + excluded.count, \
                       first_seen = LEAST(would_refuse.first_seen, excluded.first_seen), \
                       last_seen = GREATEST(would_refuse.last_seen, excluded.last_seen)",
    )
    .bind(&hours)
    .bind(column(|r| r.api_id.clone()))
    .bind(column(|r| r.stage.clone()))
    .bind(column(|r| r.method.clone()))
    .bind(column(|r| r.path.clone()))
    .bind(column(|r| r.reason.clone()))
    .bind(column(|r| r.key_id.clone().unwrap_or_default()))
    .bind(column(|r| r.client.clone()))
    .bind(column(|r| r.user_agent.clone()))
    .bind(&counts)
    .bind(&firsts)
    .bind(&lasts)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    let oldest = hours.iter().max().copied().unwrap_or(0) - KEEP_SECS;
    sqlx::query("DELETE FROM would_refuse WHERE hour < $1")
        .bind(oldest)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)
}

pub(super) async fn would_refuse(
    pool: &PgPool,
    stage: Option<&str>,
    since: i64,
) -> Result<Vec<WouldRefuse>> {
    let rows = sqlx::query_as::<_, crate::rows::WouldRefuseRow>(
        "SELECT hour, api_id, stage, method, path, reason, key_id, client, user_agent, count, \
                first_seen, last_seen \
         FROM would_refuse WHERE last_seen >= $1 AND ($2::text IS NULL OR stage = $2) \
         ORDER BY hour, api_id, stage, method, path, reason, key_id, client, user_agent",
    )
    .bind(since)
    .bind(stage)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(rows.into_iter().map(WouldRefuse::from).collect())
}
