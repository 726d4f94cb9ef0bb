//! API keys: their values (as digests), rotations, and bulk imports.

use keygate_types::model::{ApiKey, ApiKeyPatch, NewApiKey, new_id};
use keygate_types::{ApiKeyValue, KeyDigest};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use super::admin::append_audit;
use super::plans::add_key_to_plan;
use super::{Record, bind_page, bump_at, map_err, now, paged};
use crate::{Error, Page, Result};

/// The columns of [`key_from_row`], selected `FROM api_keys`. lastUsedDate is the latest use in
/// the usage rows (days and the log not folded yet; one index lookup each) or, for keys last used
/// before usage rows carried it, the column.
pub(super) const KEY_COLUMNS: &str = "id, name, prefix, description, customer_id, enabled, created_date, \
     last_updated_date, expires, GREATEST(last_used_date, \
       (SELECT MAX(at) FROM usage_days WHERE key_id = api_keys.id), \
       (SELECT MAX(at) FROM usage_log WHERE key_id = api_keys.id)) AS last_used_date";

pub(super) fn key_from_row(r: &PgRow) -> ApiKey {
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
    conn: &mut PgConnection,
    column: &str,
    v: &str,
) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = $1");
    let row =
        sqlx::query(AssertSqlSafe(sql)).bind(v).fetch_optional(conn).await.map_err(map_err)?;
    Ok(row.as_ref().map(key_from_row))
}

pub(super) async fn insert_key(conn: &mut PgConnection, key: &NewApiKey) -> Result<ApiKey> {
    let id = new_id(10);
    let t = now();
    let digest = key.value.digest();
    let res = sqlx::query(
        "INSERT INTO api_keys (id, name, digest, prefix, description, customer_id, enabled, \
         created_date, last_updated_date, expires) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
    tx: &mut PgConnection,
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
    tx: &mut PgConnection,
    id: &str,
    value: ApiKeyValue,
    grace_secs: i64,
    retire_idle: Option<i64>,
) -> Result<ApiKey> {
    let old: Option<(Vec<u8>, String)> =
        sqlx::query_as("SELECT digest, prefix FROM api_keys WHERE id = $1")
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
        sqlx::query("UPDATE api_key_old_values SET expires = LEAST(expires, $1) WHERE key_id = $2")
            .bind(grace_end)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO api_key_old_values (digest, key_id, expires, prefix, rotated_at, \
                                             retire_idle) VALUES ($1, $2, $3, $4, $5, $6)",
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
        sqlx::query("DELETE FROM api_key_old_values WHERE key_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    sqlx::query(
        "UPDATE api_keys SET digest = $1, prefix = $2, last_updated_date = $3 WHERE id = $4",
    )
    .bind(&value.digest().as_bytes()[..])
    .bind(value.prefix())
    .bind(t)
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    // Old values past their grace period are of no use any more.
    sqlx::query("DELETE FROM api_key_old_values WHERE expires < $1")
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let key = key_by(&mut *tx, "id", id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("API key {id} not found")))?;
    Ok(key)
}

pub(super) async fn revoke_old_values(tx: &mut PgConnection, id: &str) -> Result<u64> {
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    if exists.is_none() {
        return Err(Error::NotFound(format!("API key {id} not found")));
    }
    let done = sqlx::query("DELETE FROM api_key_old_values WHERE key_id = $1 AND expires >= $2")
        .bind(id)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
    sqlx::query("DELETE FROM api_key_old_values WHERE key_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    Ok(done)
}

pub(super) async fn update_key(
    tx: &mut PgConnection,
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
        "UPDATE api_keys SET name = $1, description = $2, enabled = $3, customer_id = $4, \
         last_updated_date = $5, expires = $6 WHERE id = $7",
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

pub(super) async fn delete_key(tx: &mut PgConnection, id: &str) -> Result<()> {
    let done = sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("API key {id} not found")));
    }
    Ok(())
}

pub(super) async fn key_digest_exists(pool: &PgPool, digest: &KeyDigest) -> Result<bool> {
    let found = sqlx::query(
        "SELECT 1 FROM api_keys WHERE digest = $1 UNION ALL \
         SELECT 1 FROM api_key_old_values WHERE digest = $2",
    )
    .bind(&digest.as_bytes()[..])
    .bind(&digest.as_bytes()[..])
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    Ok(found.is_some())
}

pub(super) async fn existing_key_digests(
    pool: &PgPool,
    digests: &[KeyDigest],
) -> Result<std::collections::HashSet<KeyDigest>> {
    // Digests per query, as one array parameter.
    const CHUNK: usize = 10_000;
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let mut found = std::collections::HashSet::new();
    for chunk in digests.chunks(CHUNK) {
        let chunk: Vec<&[u8]> = chunk.iter().map(|d| &d.as_bytes()[..]).collect();
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT digest FROM api_keys WHERE digest = ANY($1) UNION ALL \
             SELECT digest FROM api_key_old_values WHERE digest = ANY($1)",
        )
        .bind(&chunk)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        found.extend(rows.iter().filter_map(|b| KeyDigest::from_slice(b)));
    }
    Ok(found)
}

pub(super) async fn existing_key_names(
    pool: &PgPool,
    names: &[&str],
) -> Result<std::collections::HashSet<String>> {
    // Names per query, as one array parameter.
    const CHUNK: usize = 10_000;
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let mut found = std::collections::HashSet::new();
    for chunk in names.chunks(CHUNK) {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT name FROM api_keys WHERE name = ANY($1)")
                .bind(chunk)
                .fetch_all(&mut *conn)
                .await
                .map_err(map_err)?;
        found.extend(rows);
    }
    Ok(found)
}

pub(super) async fn get_key(pool: &PgPool, id: &str) -> Result<Option<ApiKey>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    key_by(&mut conn, "id", id).await
}

pub(super) async fn get_key_by_name(pool: &PgPool, name: &str) -> Result<Option<ApiKey>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    key_by(&mut conn, "name", name).await
}

pub(super) async fn list_keys(
    pool: &PgPool,
    page: Page<'_>,
    customer_id: Option<&str>,
) -> Result<Vec<ApiKey>> {
    let base = match customer_id {
        Some(_) => format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE customer_id = $1"),
        None => format!("SELECT {KEY_COLUMNS} FROM api_keys"),
    };
    let sql = paged(&base, "name", page, usize::from(customer_id.is_some()));
    let mut q = sqlx::query(AssertSqlSafe(sql));
    if let Some(c) = customer_id {
        q = q.bind(c);
    }
    let rows = bind_page(q, page).fetch_all(pool).await.map_err(map_err)?;
    Ok(rows.iter().map(key_from_row).collect())
}

/// [`Change::ImportKeys`](crate::Change::ImportKeys) in one transaction with its audit entry:
/// keys and memberships as arrays ([`IMPORT_BATCH`] rows per statement). A bad row (a taken
/// name or value, a missing plan) fails the bulk statement; the import then starts over row by
/// row, which stops at the first bad row with the error `create_key` would give.
pub(super) async fn import_keys(
    pool: &PgPool,
    record: &Record<'_>,
    keys: Vec<(NewApiKey, Vec<String>)>,
    at: Option<i64>,
) -> Result<Vec<ApiKey>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    if let Ok(created) = import_keys_in_bulk(&mut conn, record, &keys, at).await {
        return Ok(created);
    }
    let mut tx = super::begin(&mut conn).await?;
    let made = async {
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
        Ok(out)
    }
    .await;
    super::finish(tx, made).await
}

/// Keys per statement of a bulk import.
const IMPORT_BATCH: usize = 10_000;

/// [`import_keys`] with one statement per batch, in one transaction: all or nothing.
async fn import_keys_in_bulk(
    conn: &mut PgConnection,
    record: &Record<'_>,
    keys: &[(NewApiKey, Vec<String>)],
    at: Option<i64>,
) -> Result<Vec<ApiKey>> {
    let mut tx = super::begin(&mut *conn).await?;
    let made = bulk_rows(&mut tx, record, keys, at).await;
    super::finish(tx, made).await
}

/// The statements of [`import_keys_in_bulk`], in its transaction.
async fn bulk_rows(
    tx: &mut PgConnection,
    record: &Record<'_>,
    keys: &[(NewApiKey, Vec<String>)],
    at: Option<i64>,
) -> Result<Vec<ApiKey>> {
    bump_at(&mut *tx, at).await?;
    let t = now();
    let mut out = Vec::with_capacity(keys.len());
    for batch in keys.chunks(IMPORT_BATCH) {
        let ids: Vec<String> = batch.iter().map(|_| new_id(10)).collect();
        let names: Vec<&str> = batch.iter().map(|(k, _)| k.name.as_str()).collect();
        let digests: Vec<Vec<u8>> =
            batch.iter().map(|(k, _)| k.value.digest().as_bytes().to_vec()).collect();
        let prefixes: Vec<String> = batch.iter().map(|(k, _)| k.value.prefix()).collect();
        let descriptions: Vec<Option<&str>> =
            batch.iter().map(|(k, _)| k.description.as_deref()).collect();
        let customers: Vec<Option<&str>> =
            batch.iter().map(|(k, _)| k.customer_id.as_deref()).collect();
        let enabled: Vec<i64> = batch.iter().map(|(k, _)| i64::from(k.enabled)).collect();
        let expires: Vec<Option<i64>> = batch.iter().map(|(k, _)| k.expires).collect();
        sqlx::query(
            "INSERT INTO api_keys (id, name, digest, prefix, description, customer_id, enabled, \
             created_date, last_updated_date, expires) \
             SELECT id, name, digest, prefix, description, customer_id, enabled, $9, $9, expires \
             FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], \
                         $6::text[], $7::bigint[], $8::bigint[]) \
               AS k (id, name, digest, prefix, description, customer_id, enabled, expires)",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&digests)
        .bind(&prefixes)
        .bind(&descriptions)
        .bind(&customers)
        .bind(&enabled)
        .bind(&expires)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let (mut plan_ids, mut key_ids) = (Vec::new(), Vec::new());
        for ((_, plans), id) in batch.iter().zip(&ids) {
            for plan in plans {
                plan_ids.push(plan.as_str());
                key_ids.push(id.as_str());
            }
        }
        sqlx::query(
            "INSERT INTO usage_plan_keys (plan_id, key_id) \
             SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&plan_ids)
        .bind(&key_ids)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        out.extend(
            batch
                .iter()
                .zip(ids.into_iter().zip(prefixes))
                .map(|((key, _), (id, prefix))| inserted_key(key, id, prefix, t)),
        );
    }
    append_audit(&mut *tx, record).await?;
    Ok(out)
}
