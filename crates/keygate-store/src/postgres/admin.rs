//! Admin API credentials and tokens, and the audit log.

use std::time::{SystemTime, UNIX_EPOCH};

use keygate_types::model::{AdminCredential, AdminToken, AuditEntry};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use super::{Record, map_err, now};
use crate::{Error, Result};

pub(super) fn credential_from_row(r: &PgRow) -> AdminCredential {
    AdminCredential {
        access_key_id: r.get("access_key_id"),
        secret_sealed: r.get("secret_sealed"),
        description: r.get("description"),
        created_date: r.get("created_date"),
        revoked_date: r.get("revoked_date"),
    }
}

pub(super) fn token_from_row(r: &PgRow) -> AdminToken {
    AdminToken {
        id: r.get("id"),
        digest: r.get("digest"),
        prefix: r.get("prefix"),
        description: r.get("description"),
        created_date: r.get("created_date"),
        revoked_date: r.get("revoked_date"),
    }
}

pub(super) async fn create_admin_credential(
    tx: &mut PgConnection,
    c: AdminCredential,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO admin_credentials (access_key_id, secret_sealed, description, created_date) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&c.access_key_id)
    .bind(&c.secret_sealed)
    .bind(&c.description)
    .bind(c.created_date)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn revoke_admin_credential(
    tx: &mut PgConnection,
    access_key_id: &str,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE admin_credentials SET revoked_date = COALESCE(revoked_date, $1) \
         WHERE access_key_id = $2",
    )
    .bind(now())
    .bind(access_key_id)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("admin credential {access_key_id} not found")));
    }
    Ok(())
}

pub(super) async fn create_admin_token(tx: &mut PgConnection, t: AdminToken) -> Result<()> {
    sqlx::query(
        "INSERT INTO admin_tokens (id, digest, prefix, description, created_date) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&t.id)
    .bind(&t.digest)
    .bind(&t.prefix)
    .bind(&t.description)
    .bind(t.created_date)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn revoke_admin_token(tx: &mut PgConnection, id: &str) -> Result<()> {
    let done = sqlx::query(
        "UPDATE admin_tokens SET revoked_date = COALESCE(revoked_date, $1) WHERE id = $2",
    )
    .bind(now())
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("admin token {id} not found")));
    }
    Ok(())
}

pub(super) async fn get_admin_credential(
    pool: &PgPool,
    access_key_id: &str,
) -> Result<Option<AdminCredential>> {
    let row = sqlx::query(
        "SELECT access_key_id, secret_sealed, description, created_date, revoked_date \
         FROM admin_credentials WHERE access_key_id = $1",
    )
    .bind(access_key_id)
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    Ok(row.as_ref().map(credential_from_row))
}

pub(super) async fn list_admin_credentials(pool: &PgPool) -> Result<Vec<AdminCredential>> {
    let rows = sqlx::query(
        "SELECT access_key_id, secret_sealed, description, created_date, revoked_date \
         FROM admin_credentials ORDER BY created_date, access_key_id",
    )
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(rows.iter().map(credential_from_row).collect())
}

pub(super) async fn find_admin_token(pool: &PgPool, digest: &[u8]) -> Result<Option<AdminToken>> {
    let row = sqlx::query(
        "SELECT id, digest, prefix, description, created_date, revoked_date FROM admin_tokens \
         WHERE digest = $1",
    )
    .bind(digest)
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    Ok(row.as_ref().map(token_from_row))
}

pub(super) async fn list_admin_tokens(pool: &PgPool) -> Result<Vec<AdminToken>> {
    let rows = sqlx::query(
        "SELECT id, digest, prefix, description, created_date, revoked_date FROM admin_tokens \
         ORDER BY created_date, id",
    )
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(rows.iter().map(token_from_row).collect())
}

pub(super) async fn list_audit(
    pool: &PgPool,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let rows = sqlx::query(
        "SELECT seq, time_ms, actor, action, target, detail FROM audit_log WHERE seq > $1 \
         ORDER BY seq LIMIT $2",
    )
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(rows
        .iter()
        .map(|r| AuditEntry {
            seq: r.get("seq"),
            time: r.get("time_ms"),
            actor: r.get("actor"),
            action: r.get("action"),
            target: r.get("target"),
            detail: r.get("detail"),
        })
        .collect())
}

/// Appends the audit entry of the change being applied, in its transaction.
pub(super) async fn append_audit(tx: &mut PgConnection, record: &Record<'_>) -> Result<()> {
    let time_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    sqlx::query(
        "INSERT INTO audit_log (time_ms, actor, action, target, detail) VALUES ($1, $2, $3, $4, NULL)",
    )
    .bind(time_ms)
    .bind(record.actor)
    .bind(record.action)
    .bind(&record.target)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}
