//! API keys: their values (as digests), rotations, and bulk imports.

use keygate_types::model::{ApiKey, ApiKeyPatch, NewApiKey, new_id};
use keygate_types::{ApiKeyValue, KeyDigest};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection, SqlitePool};

use super::admin::append_audit;
use super::plans::add_key_to_plan;
use super::{Record, bind_page, bump_at, map_err, now, paged};
use crate::{Error, Page, Result};

/// The columns of [`key_from_row`], selected `FROM api_keys`. lastUsedDate is the latest use in
/// the usage rows (days and the log not folded yet; one index lookup each) or, for keys last used
/// before usage rows carried it, the column.
pub(super) const KEY_COLUMNS: &str = "id, name, prefix, description, customer_id, enabled, created_date, \
     last_updated_date, expires, NULLIF(MAX(COALESCE(last_used_date, 0), \
       COALESCE((SELECT MAX(at) FROM usage_days WHERE key_id = api_keys.id), 0), \
       COALESCE((SELECT MAX(at) FROM usage_log WHERE key_id = api_keys.id), 0)), 0) \
     AS last_used_date";

pub(super) fn key_from_row(r: &SqliteRow) -> ApiKey {
    ApiKey {
        id: r.get("id"),
        name: r.get("name"),
        prefix: r.get("prefix"),
        description: r.get("description"),
        customer_id: r.get("customer_id"),
        enabled: r.get::<i64, _>("enabled") != 0,
        created_date: r.get("created_date"),
        last_updated_date: r.get("last_updated_date"),
        expires: r.get("expires"),
        last_used_date: r.get("last_used_date"),
    }
}

pub(super) async fn key_by(
    conn: &mut SqliteConnection,
    column: &str,
    v: &str,
) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = ?");
    let row =
        sqlx::query(AssertSqlSafe(sql)).bind(v).fetch_optional(conn).await.map_err(map_err)?;
    Ok(row.as_ref().map(key_from_row))
}

pub(super) async fn insert_key(conn: &mut SqliteConnection, key: &NewApiKey) -> Result<ApiKey> {
    let id = new_id(10);
    let t = now();
    let digest = key.value.digest();
    let res = sqlx::query(
        "INSERT INTO api_keys (id, name, digest, prefix, description, customer_id, enabled, \
         created_date, last_updated_date, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&key.name)
    .bind(&digest.as_bytes()[..])
    .bind(key.value.prefix())
    .bind(&key.description)
    .bind(&key.customer_id)
    .bind(key.enabled as i64)
    .bind(t)
    .bind(t)
    .bind(key.expires)
    .execute(&mut *conn)
    .await;
    if let Err(sqlx::Error::Database(db)) = &res
        && db.is_unique_violation()
    {
        // Say which constraint without echoing the value.
        let msg = if db.message().contains("digest") {
            "another API key already has this value; key values must be unique".to_owned()
        } else {
            format!("an API key named {:?} already exists", key.name)
        };
        return Err(Error::Conflict(msg));
    }
    res.map_err(map_err)?;
    Ok(inserted_key(key, id, key.value.prefix(), t))
}

/// The stored record of `key` as just inserted (single or bulk) at `t`.
pub(super) fn inserted_key(key: &NewApiKey, id: String, prefix: String, t: i64) -> ApiKey {
    ApiKey {
        id,
        name: key.name.clone(),
        description: key.description.clone(),
        enabled: key.enabled,
        customer_id: key.customer_id.clone(),
        created_date: t,
        last_updated_date: t,
        prefix,
        expires: key.expires,
        last_used_date: None,
    }
}

pub(super) async fn create_key(
    tx: &mut SqliteConnection,
    key: NewApiKey,
    plan_ids: &[String],
) -> Result<ApiKey> {
    let created = insert_key(&mut *tx, &key).await?;
    for plan_id in plan_ids {
        add_key_to_plan(&mut *tx, plan_id, &created.id).await?;
    }
    Ok(created)
}

pub(super) async fn rotate_key(
    tx: &mut SqliteConnection,
    id: &str,
    value: ApiKeyValue,
    grace_secs: i64,
    retire_idle: Option<i64>,
) -> Result<ApiKey> {
    let old: Option<(Vec<u8>, String)> =
        sqlx::query_as("SELECT digest, prefix FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
    let (old, old_prefix) =
        old.ok_or_else(|| Error::NotFound(format!("API key {id} not found")))?;
    let t = now();
    let grace_end = t.saturating_add(grace_secs);
    // Every older value ends with the grace period at the latest: a rotation because a
    // value leaked must not leave an earlier value working longer than the one it replaces.
    if grace_secs > 0 {
        sqlx::query("UPDATE api_key_old_values SET expires = MIN(expires, ?) WHERE key_id = ?")
            .bind(grace_end)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO api_key_old_values (digest, key_id, expires, prefix, rotated_at, \
                                             retire_idle) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&old)
        .bind(id)
        .bind(grace_end)
        .bind(&old_prefix)
        .bind(t)
        .bind(retire_idle)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    } else {
        sqlx::query("DELETE FROM api_key_old_values WHERE key_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    sqlx::query("UPDATE api_keys SET digest = ?, prefix = ?, last_updated_date = ? WHERE id = ?")
        .bind(&value.digest().as_bytes()[..])
        .bind(value.prefix())
        .bind(t)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    // Old values past their grace period are of no use any more.
    sqlx::query("DELETE FROM api_key_old_values WHERE expires < ?")
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let key = key_by(&mut *tx, "id", id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("API key {id} not found")))?;
    Ok(key)
}

pub(super) async fn revoke_old_values(tx: &mut SqliteConnection, id: &str) -> Result<u64> {
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM api_keys WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    if exists.is_none() {
        return Err(Error::NotFound(format!("API key {id} not found")));
    }
    let done = sqlx::query("DELETE FROM api_key_old_values WHERE key_id = ? AND expires >= ?")
        .bind(id)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
    sqlx::query("DELETE FROM api_key_old_values WHERE key_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    Ok(done)
}

pub(super) async fn update_key(
    tx: &mut SqliteConnection,
    id: &str,
    patch: ApiKeyPatch,
) -> Result<ApiKey> {
    let mut key = key_by(&mut *tx, "id", id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("API key {id} not found")))?;
    if let Some(name) = patch.name {
        key.name = name;
    }
    if let Some(d) = patch.description {
        key.description = d;
    }
    if let Some(e) = patch.enabled {
        key.enabled = e;
    }
    if let Some(c) = patch.customer_id {
        key.customer_id = c;
    }
    if let Some(x) = patch.expires {
        key.expires = x;
    }
    key.last_updated_date = now();
    let res = sqlx::query(
        "UPDATE api_keys SET name = ?, description = ?, enabled = ?, customer_id = ?, \
         last_updated_date = ?, expires = ? WHERE id = ?",
    )
    .bind(&key.name)
    .bind(&key.description)
    .bind(key.enabled as i64)
    .bind(&key.customer_id)
    .bind(key.last_updated_date)
    .bind(key.expires)
    .bind(id)
    .execute(&mut *tx)
    .await;
    if let Err(sqlx::Error::Database(db)) = &res
        && db.is_unique_violation()
    {
        return Err(Error::Conflict(format!("an API key named {:?} already exists", key.name)));
    }
    res.map_err(map_err)?;
    Ok(key)
}

pub(super) async fn delete_key(tx: &mut SqliteConnection, id: &str) -> Result<()> {
    let done = sqlx::query("DELETE FROM api_keys WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("API key {id} not found")));
    }
    Ok(())
}

pub(super) async fn key_digest_exists(pool: &SqlitePool, digest: &KeyDigest) -> Result<bool> {
    let found = sqlx::query(
        "SELECT 1 FROM api_keys WHERE digest = ? UNION ALL \
         SELECT 1 FROM api_key_old_values WHERE digest = ?",
    )
    .bind(&digest.as_bytes()[..])
    .bind(&digest.as_bytes()[..])
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    Ok(found.is_some())
}

pub(super) async fn existing_key_digests(
    pool: &SqlitePool,
    digests: &[KeyDigest],
) -> Result<std::collections::HashSet<KeyDigest>> {
    // Digests per query; each is bound twice, well under SQLite's limit of 32766 parameters.
    const CHUNK: usize = 5000;
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let mut found = std::collections::HashSet::new();
    for chunk in digests.chunks(CHUNK) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT digest FROM api_keys WHERE digest IN ({marks}) UNION ALL \
             SELECT digest FROM api_key_old_values WHERE digest IN ({marks})"
        );
        let mut q = sqlx::query_scalar::<_, Vec<u8>>(AssertSqlSafe(sql));
        for d in chunk.iter().chain(chunk) {
            q = q.bind(&d.as_bytes()[..]);
        }
        let rows = q.fetch_all(&mut *conn).await.map_err(map_err)?;
        found.extend(rows.iter().filter_map(|b| KeyDigest::from_slice(b)));
    }
    Ok(found)
}

pub(super) async fn existing_key_names(
    pool: &SqlitePool,
    names: &[&str],
) -> Result<std::collections::HashSet<String>> {
    // Names per query, under SQLite's limit of 32766 parameters.
    const CHUNK: usize = 10_000;
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let mut found = std::collections::HashSet::new();
    for chunk in names.chunks(CHUNK) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!("SELECT name FROM api_keys WHERE name IN ({marks})");
        let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
        for name in chunk {
            q = q.bind(*name);
        }
        found.extend(q.fetch_all(&mut *conn).await.map_err(map_err)?);
    }
    Ok(found)
}

pub(super) async fn get_key(pool: &SqlitePool, id: &str) -> Result<Option<ApiKey>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    key_by(&mut conn, "id", id).await
}

pub(super) async fn get_key_by_name(pool: &SqlitePool, name: &str) -> Result<Option<ApiKey>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    key_by(&mut conn, "name", name).await
}

pub(super) async fn list_keys(
    pool: &SqlitePool,
    page: Page<'_>,
    customer_id: Option<&str>,
) -> Result<Vec<ApiKey>> {
    let base = match customer_id {
        Some(_) => format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE customer_id = ?"),
        None => format!("SELECT {KEY_COLUMNS} FROM api_keys"),
    };
    let sql = paged(&base, "name", page);
    let mut q = sqlx::query(AssertSqlSafe(sql));
    if let Some(c) = customer_id {
        q = q.bind(c);
    }
    let rows = bind_page(q, page).fetch_all(pool).await.map_err(map_err)?;
    Ok(rows.iter().map(key_from_row).collect())
}

/// [`Change::ImportKeys`](crate::Change::ImportKeys), on a connection of its own (a bigger cache),
/// with its audit entry in the transaction that keeps the keys.
pub(super) async fn import_keys(
    pool: &SqlitePool,
    record: &Record<'_>,
    keys: Vec<(NewApiKey, Vec<String>)>,
    at: Option<i64>,
) -> Result<Vec<ApiKey>> {
    /// [`import_keys`] with multi-row statements, in one transaction; `None`
    /// (having written nothing) when a row would fail: the caller then imports row by row to
    /// report it.
    async fn import_keys_in_bulk(
        conn: &mut SqliteConnection,
        record: &Record<'_>,
        keys: &[(NewApiKey, Vec<String>)],
        at: Option<i64>,
    ) -> Result<Option<Vec<ApiKey>>> {
        use std::collections::HashSet;

        // Keys per INSERT: 10 parameters each, under SQLite's limit of 32766.
        const BATCH: usize = 3000;
        const KEY_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

        let mut tx =
            sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await.map_err(map_err)?;
        bump_at(&mut tx, at).await?;
        // Every plan must exist (checked once each); the one-plan-per-API-stage rule was
        // checked by keygate-control.
        let mut plans: HashSet<&str> = HashSet::new();
        for plan_id in keys.iter().flat_map(|(_, ids)| ids) {
            if plans.contains(plan_id.as_str()) {
                continue;
            }
            let found = sqlx::query("SELECT 1 FROM usage_plans WHERE id = ?")
                .bind(plan_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
            if found.is_none() {
                return Ok(None);
            }
            plans.insert(plan_id);
        }
        let t = now();
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(BATCH) {
            let ids: Vec<String> = batch.iter().map(|_| new_id(10)).collect();
            let digests: Vec<KeyDigest> = batch.iter().map(|(k, _)| k.value.digest()).collect();
            let prefixes: Vec<String> = batch.iter().map(|(k, _)| k.value.prefix()).collect();
            // OR IGNORE, so that SQLite needs no statement journal; a taken id, name or value
            // shows as a missing row, and then nothing of this transaction is kept.
            let sql = format!(
                "INSERT OR IGNORE INTO api_keys (id, name, digest, prefix, description, \
                 customer_id, enabled, created_date, last_updated_date, expires) VALUES {}",
                vec![KEY_ROW; batch.len()].join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (i, (key, _)) in batch.iter().enumerate() {
                q = q
                    .bind(&ids[i])
                    .bind(&key.name)
                    .bind(&digests[i].as_bytes()[..])
                    .bind(&prefixes[i])
                    .bind(&key.description)
                    .bind(&key.customer_id)
                    .bind(key.enabled as i64)
                    .bind(t)
                    .bind(t)
                    .bind(key.expires);
            }
            let inserted = q.execute(&mut *tx).await.map_err(map_err)?.rows_affected();
            if inserted != batch.len() as u64 {
                return Ok(None);
            }
            let members: Vec<(&String, &String)> = batch
                .iter()
                .zip(&ids)
                .flat_map(|((_, plan_ids), id)| plan_ids.iter().map(move |p| (p, id)))
                .collect();
            for chunk in members.chunks(BATCH * 5) {
                let sql = format!(
                    "INSERT OR IGNORE INTO usage_plan_keys (plan_id, key_id) VALUES {}",
                    vec!["(?, ?)"; chunk.len()].join(", ")
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (plan_id, key_id) in chunk {
                    q = q.bind(*plan_id).bind(*key_id);
                }
                q.execute(&mut *tx).await.map_err(map_err)?;
            }
            out.extend(
                batch
                    .iter()
                    .zip(ids.into_iter().zip(prefixes))
                    .map(|((key, _), (id, prefix))| inserted_key(key, id, prefix, t)),
            );
        }
        append_audit(&mut tx, record).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(out))
    }

    // Big imports touch pages all over the key tables' indexes: with SQLite's default 2 MiB
    // page cache they keep spilling and re-reading them (a million keys: 18 s instead of 8).
    // This connection gets a 64 MiB cache (a limit, not an allocation) and in-memory
    // temporary files; it is closed afterwards rather than returned to the pool like that.
    let mut conn = pool.acquire().await.map_err(map_err)?;
    conn.close_on_drop();
    sqlx::query("PRAGMA cache_size = -65536").execute(&mut *conn).await.map_err(map_err)?;
    sqlx::query("PRAGMA temp_store = MEMORY").execute(&mut *conn).await.map_err(map_err)?;
    // The bulk way fails for any bad row (a taken name or value, a missing plan, two plans
    // sharing an API stage); then the import starts over row by row, which stops at the
    // first bad row with the same error `create_key` would give. It checks that the plans
    // exist in its own (write) transaction, so the memberships it adds cannot break a foreign
    // key; with foreign keys off, SQLite need not journal each multi-row INSERT to undo it.
    sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await.map_err(map_err)?;
    if let Ok(Some(created)) = import_keys_in_bulk(&mut conn, record, &keys, at).await {
        return Ok(created);
    }
    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await.map_err(map_err)?;
    let mut tx =
        sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await.map_err(map_err)?;
    bump_at(&mut tx, at).await?;
    let mut out = Vec::with_capacity(keys.len());
    for (key, plans) in &keys {
        let created = insert_key(&mut tx, key).await?;
        for plan_id in plans {
            add_key_to_plan(&mut tx, plan_id, &created.id).await?;
        }
        out.push(created);
    }
    append_audit(&mut tx, record).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(out)
}
