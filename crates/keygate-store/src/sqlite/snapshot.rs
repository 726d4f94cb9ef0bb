//! What gateways load: the store's version and, consistently, every deployed stage, key, plan
//! and grant.

use std::collections::HashMap;

use keygate_types::KeyDigest;
use keygate_types::keyset::{KeyRecord, KeySet};
use keygate_types::model::{DeployedStage, GatewaySnapshot};
use sqlx::{AssertSqlSafe, Row, SqliteConnection, SqlitePool};

use super::plans::{PLAN_COLUMNS, plan_from_row};
use super::{map_err, parse_json};
use crate::{Error, Result};

/// Rows of `table` per chunk in [`scan_chunks`].
pub(super) const SCAN_CHUNK: i64 = 8192;

/// Every accepted key value, packed (see [`KeySet`]).
///
/// Two plain table scans merged in memory: SQLite reads each table in storage order in ~0.1 s per
/// million rows, while joining keys to their plans (or ordering either table by key id) seeks an
/// index per key and took seconds. Rows come in chunks that SQLite concatenates into one text
/// value each ([`scan_chunks`]): sqlx's cost per row (a channel hop from its worker thread and a
/// row allocation) was most of the load time. No per-key allocation: the merge goes through a
/// map of ids borrowed from the key set and a list of (record, plan number) pairs.
pub(super) async fn load_keys(conn: &mut SqliteConnection) -> Result<KeySet> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    let count = usize::try_from(count).unwrap_or(0);
    let mut keys = KeySet::with_capacity(count, count * 12);
    // One line per key: hex digest (64), enabled (0/1), `,`, expires (may be empty), `,`, id.
    scan_chunks(
        conn,
        "api_keys",
        "hex(digest) || enabled || ',' || coalesce(expires, '') || ',' || id",
        |line| {
            let corrupt = || Error::corrupt("a stored API key row is corrupt");
            let (digest, rest) = line.split_at_checked(64).ok_or_else(corrupt)?;
            let digest = decode_digest(digest).ok_or_else(corrupt)?;
            let (enabled, rest) = rest.split_at_checked(1).ok_or_else(corrupt)?;
            let (expires, id) =
                rest.strip_prefix(',').and_then(|r| r.split_once(',')).ok_or_else(corrupt)?;
            let expires = match expires {
                "" => None,
                e => Some(e.parse::<i64>().map_err(|_| corrupt())?),
            };
            keys.push(id, digest, enabled == "1", expires, &[]);
            Ok(())
        },
    )
    .await?;
    // Memberships: (record, plan number), then each record's plans set at once.
    let mut plan_names: Vec<String> = Vec::new();
    let mut members: Vec<(u32, u32)> = Vec::new();
    {
        let records = keys.records();
        // Memberships are usually stored in their keys' order (an import writes both in one
        // pass), so the record after (or at) the last one found is tried first: a sequential
        // walk instead of a hash probe into a million ids, which missed the cache on every
        // lookup (docs/benchmarks.md, change 25). The id index is built only when that guess
        // fails, once. Ids are the store's own (no untrusted input): a fast hasher is enough.
        let mut index: Option<HashMap<&str, u32, foldhash::fast::RandomState>> = None;
        let mut next = 0usize;
        scan_chunks(conn, "usage_plan_keys", "key_id || ',' || plan_id", |line| {
            let (key_id, plan_id) = line
                .split_once(',')
                .ok_or_else(|| Error::corrupt("a stored usage plan membership is corrupt"))?;
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
                    let Some(&record) = index.get(key_id) else { return Ok(()) };
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
            Ok(())
        })
        .await?;
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

/// Reads every row of `table` (a rowid table) in storage order as the text `line_sql`, in chunks
/// of [`SCAN_CHUNK`] rows that SQLite joins with newlines, and calls `each` per line. The lines
/// must not contain newlines (ids, digests in hex and numbers do not). Within a chunk the lines
/// come in the order SQLite aggregates them (nothing depends on it): asking `group_concat` for
/// `ORDER BY r` made SQLite sort every chunk through a temporary b-tree, a third of the load of a
/// million keys.
pub(super) async fn scan_chunks(
    conn: &mut SqliteConnection,
    table: &'static str,
    line_sql: &'static str,
    mut each: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    // `table` and `line_sql` are this file's constants.
    let sql = format!(
        "SELECT max(r), group_concat(line, char(10)) FROM \
         (SELECT rowid AS r, {line_sql} AS line FROM {table} WHERE rowid > ?1 \
          ORDER BY rowid LIMIT {SCAN_CHUNK})"
    );
    let mut after = i64::MIN;
    loop {
        let (last, lines): (Option<i64>, Option<String>) =
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(after)
                .fetch_one(&mut *conn)
                .await
                .map_err(map_err)?;
        let (Some(last), Some(lines)) = (last, lines) else { return Ok(()) };
        for line in lines.split('\n') {
            each(line)?;
        }
        after = last;
    }
}

/// A digest from its 64 hexadecimal digits (as SQLite's `hex()` writes them). Table-driven: it
/// runs once per key at load, a million times for a million keys.
pub(super) fn decode_digest(hex: &str) -> Option<KeyDigest> {
    /// Each byte's value as a hex digit, or 0xff.
    const NIBBLE: [u8; 256] = {
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    // A non-digit set the high bits of `bad` (0xff); digits never do.
    (bad & 0xf0 == 0).then_some(KeyDigest(out))
}

pub(super) async fn version(pool: &SqlitePool) -> Result<i64> {
    sqlx::query_scalar("SELECT version FROM meta WHERE id = 1")
        .fetch_one(pool)
        .await
        .map_err(map_err)
}

pub(super) async fn snapshot(pool: &SqlitePool) -> Result<GatewaySnapshot> {
    // One read transaction so version, stages and keys agree with each other.
    let mut tx = pool.begin().await.map_err(map_err)?;
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
    let keys = load_keys(&mut tx).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PLAN_COLUMNS} FROM usage_plans ORDER BY id"
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?;
    let mut plans = Vec::with_capacity(rows.len());
    for r in &rows {
        plans.push(plan_from_row(&mut tx, r).await?);
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
                    WHERE (prefix IS NULL OR prefix = 'kgk1') AND expires >= ?)",
    )
    .bind(super::now())
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(GatewaySnapshot { version, stages, keys, plans, grants, lookalikes })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_decode_from_either_case_and_refuse_anything_else() {
        let bytes: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37)).collect();
        let lower: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let want = KeyDigest::from_slice(&bytes).unwrap();
        assert_eq!(decode_digest(&lower), Some(want));
        assert_eq!(decode_digest(&lower.to_uppercase()), Some(want));
        for bad in [&lower[..62], "", &format!("{}g", &lower[..63]), &format!("{} ", &lower[..63])]
        {
            assert_eq!(decode_digest(bad), None, "{bad:?}");
        }
    }
}
