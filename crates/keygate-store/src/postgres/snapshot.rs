//! What gateways load: the store's version and, consistently, every deployed stage, key, plan
//! and grant.

use std::collections::HashMap;

use keygate_types::KeyDigest;
use keygate_types::keyset::{KeyRecord, KeySet};
use keygate_types::model::{DeployedStage, GatewaySnapshot};
use sqlx::{PgConnection, PgPool, Row};

use super::plans::{PLAN_COLUMNS, plan_from_row};
use super::{map_err, parse_json};
use crate::{Error, Result};

/// Rows per query while loading keys and memberships.
const SCAN_CHUNK: i64 = 8192;

/// Every accepted key value, packed (see [`KeySet`]).
///
/// Keys in id order and memberships in key-id order, each read in chunks that seek the primary
/// key (or the membership index) from the last row read, then merged in memory as the SQLite
/// store does: no per-key allocation beyond the key set's own.
pub(super) async fn load_keys(conn: &mut PgConnection) -> Result<KeySet> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    let count = usize::try_from(count).unwrap_or(0);
    let mut keys = KeySet::with_capacity(count, count * 12);
    let mut after = String::new();
    loop {
        let rows = sqlx::query(
            "SELECT id, digest, enabled, expires FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(&after)
        .bind(SCAN_CHUNK)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        let Some(last) = rows.last() else { break };
        after = last.get("id");
        for r in &rows {
            let digest = KeyDigest::from_slice(r.get("digest"))
                .ok_or_else(|| Error::corrupt("a stored API key row is corrupt"))?;
            keys.push(r.get("id"), digest, r.get::<i64, _>("enabled") != 0, r.get("expires"), &[]);
        }
    }
    // Memberships: (record, plan number), then each record's plans set at once.
    let mut plan_names: Vec<String> = Vec::new();
    let mut members: Vec<(u32, u32)> = Vec::new();
    {
        let records = keys.records();
        // Keys and memberships come in the same (id) order: the record after (or at) the last
        // one found is tried first; the id index is built only when that guess fails, once.
        let mut index: Option<HashMap<&str, u32, foldhash::fast::RandomState>> = None;
        let mut next = 0usize;
        let (mut after_key, mut after_plan) = (String::new(), String::new());
        loop {
            let rows = sqlx::query(
                "SELECT key_id, plan_id FROM usage_plan_keys WHERE (key_id, plan_id) > ($1, $2) \
                 ORDER BY key_id, plan_id LIMIT $3",
            )
            .bind(&after_key)
            .bind(&after_plan)
            .bind(SCAN_CHUNK)
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
            let Some(last) = rows.last() else { break };
            (after_key, after_plan) = (last.get("key_id"), last.get("plan_id"));
            for r in &rows {
                let (key_id, plan_id): (&str, &str) = (r.get("key_id"), r.get("plan_id"));
                let guess = [next.wrapping_sub(1), next]
                    .into_iter()
                    .find(|&i| records.get(i).is_some_and(|r| keys.id(r) == key_id));
                let record = match guess {
                    Some(i) => i,
                    None => {
                        let index = index.get_or_insert_with(|| {
                            records
                                .iter()
                                .enumerate()
                                .map(|(i, r)| (keys.id(r), u32::try_from(i).unwrap_or(u32::MAX)))
                                .collect()
                        });
                        let Some(&record) = index.get(key_id) else { continue };
                        record as usize
                    }
                };
                next = record + 1;
                let plan = match plan_names.iter().position(|p| p == plan_id) {
                    Some(n) => n,
                    None => {
                        plan_names.push(plan_id.to_owned());
                        plan_names.len() - 1
                    }
                };
                members.push((
                    u32::try_from(record).unwrap_or(u32::MAX),
                    u32::try_from(plan).unwrap_or(u32::MAX),
                ));
            }
        }
    }
    members.sort_unstable();
    let mut plan_ids: Vec<&str> = Vec::new();
    for group in members.chunk_by(|a, b| a.0 == b.0) {
        plan_ids.clear();
        plan_ids.extend(group.iter().map(|&(_, p)| plan_names[p as usize].as_str()));
        keys.set_plans(group[0].0 as usize, &plan_ids);
    }
    // Values replaced by a rotation: the same key, until the grace period ends.
    let old = sqlx::query("SELECT digest, key_id, expires FROM api_key_old_values")
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
    if !old.is_empty() {
        let by_id: HashMap<&str, KeyRecord> =
            keys.records().iter().map(|r| (keys.id(r), *r)).collect();
        let mut aliases = Vec::new();
        for r in &old {
            let key_id: &str = r.get("key_id");
            let digest: &[u8] = r.get("digest");
            let grace_end: i64 = r.get("expires");
            if let (Some(k), Some(digest)) = (by_id.get(key_id), KeyDigest::from_slice(digest)) {
                aliases.push((*k, digest, k.expires.min(grace_end)));
            }
        }
        drop(by_id);
        for (k, digest, expires) in aliases {
            keys.push_alias(&k, digest, Some(expires));
        }
    }
    Ok(keys)
}

pub(super) async fn version(pool: &PgPool) -> Result<i64> {
    sqlx::query_scalar("SELECT version FROM meta WHERE id = 1")
        .fetch_one(pool)
        .await
        .map_err(map_err)
}

pub(super) async fn snapshot(pool: &PgPool) -> Result<GatewaySnapshot> {
    // One read-only snapshot (repeatable read) so version, stages and keys agree.
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(map_err)?;
    let made = read(&mut tx).await;
    super::finish(tx, made).await
}

/// The reads of [`snapshot`], in its transaction.
async fn read(tx: &mut PgConnection) -> Result<GatewaySnapshot> {
    let version: i64 = sqlx::query_scalar("SELECT version FROM meta WHERE id = 1")
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
    let rows = sqlx::query(
        "SELECT s.api_id, s.name, s.deployment_id, s.enforcement, d.definition FROM stages s \
         JOIN deployments d ON d.id = s.deployment_id ORDER BY s.api_id, s.name",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?;
    let mut stages = Vec::with_capacity(rows.len());
    for r in &rows {
        stages.push(DeployedStage {
            api_id: r.get("api_id"),
            stage: r.get("name"),
            deployment_id: r.get("deployment_id"),
            definition: parse_json(r.get("definition"), "deployment")?,
            enforcement: crate::enforcement_from(r.get("enforcement"))?,
        });
    }
    let keys = load_keys(&mut *tx).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PLAN_COLUMNS} FROM usage_plans ORDER BY id"
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?;
    let mut plans = Vec::with_capacity(rows.len());
    for r in &rows {
        plans.push(plan_from_row(&mut *tx, r).await?);
    }
    let grants = sqlx::query("SELECT plan_id, key_id, period_start, extra FROM usage_grants")
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?
        .iter()
        .map(super::usage::grant_from_row)
        .collect::<Result<Vec<_>>>()?;
    let lookalikes: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM api_keys WHERE prefix = 'kgk1') \
         OR EXISTS (SELECT 1 FROM api_key_old_values \
                    WHERE (prefix IS NULL OR prefix = 'kgk1') AND expires >= $1)",
    )
    .bind(super::now())
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(GatewaySnapshot { version, stages, keys, plans, grants, lookalikes })
}
