//! The PostgreSQL store, for several gateway nodes sharing one database: `postgres://` URLs
//! (`--database-url`), schema from the embedded migrations in `migrations/postgres` (the same
//! tables and meaning as the SQLite schema, in PostgreSQL's types).
//!
//! Layout as in the SQLite store, one file per concern. What differs is PostgreSQL's, not the
//! rules: changes are serialised by a row lock on `meta` (the role of SQLite's `BEGIN
//! IMMEDIATE`), a snapshot is one repeatable-read transaction, bulk writes bind arrays
//! (`UNNEST`), and names sort bytewise (`COLLATE "C"`) as they do in SQLite.

mod admin;
mod apis;
mod keys;
mod plans;
mod refusals;
mod rotation;
mod snapshot;
mod usage;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate_types::model::{
    AdminCredential, AdminToken, Api, ApiKey, AuditEntry, DailyUsage, Deployment, GatewaySnapshot,
    OldValue, OldValueUse, Stage, UsageGrant, UsagePlan, WouldRefuse,
};
use keygate_types::{KeyDigest, ServiceDefinition};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use crate::{Applied, Change, Error, Page, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel every change that moves the version notifies (on commit), so every node's
/// [`SnapshotReads::change_signal`](crate::SnapshotReads::change_signal) moves within milliseconds.
const CHANNEL: &str = "keygate_changes";

/// PostgreSQL implementation of [`ConfigStore`](crate::ConfigStore). Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    changes: tokio::sync::watch::Receiver<u64>,
    /// The task listening on [`CHANNEL`], stopped with the last clone.
    _listener: std::sync::Arc<Listening>,
}

/// Aborts the listening task when dropped.
#[derive(Debug)]
struct Listening(tokio::task::JoinHandle<()>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Listens on [`CHANNEL`] and moves `signal` for each notification, and also when the
/// connection was lost (a change may have been missed meanwhile). sqlx reconnects and listens
/// again on the next receive.
async fn listen(mut listener: sqlx::postgres::PgListener, signal: tokio::sync::watch::Sender<u64>) {
    let mut failing = false;
    loop {
        match listener.try_recv().await {
            Ok(_) => {
                failing = false;
                signal.send_modify(|n| *n = n.wrapping_add(1));
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "lost the change notifications; polling meanwhile");
                    failing = true;
                }
                signal.send_modify(|n| *n = n.wrapping_add(1));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The audit entry of the change being applied.
pub(super) struct Record<'a> {
    actor: &'a str,
    action: &'static str,
    target: String,
}

impl PgStore {
    /// Connects to the database `url` names (`postgres://user@host:port/database`, with
    /// libpq's parameters such as `sslmode` or `options=-c search_path=...`) and applies pending
    /// migrations, one node at a time (sqlx takes an advisory lock).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the URL is malformed, the server cannot be reached, or the
    /// database holds a newer schema than this keygate knows (it says which migration).
    pub async fn open(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url).map_err(|e| {
            Error::unavailable("opening the store", format!("{}: {e}", crate::redact_url(url)))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|e| {
                Error::unavailable(format!("cannot connect to {}", crate::redact_url(url)), e)
            })?;
        MIGRATOR.run(&pool).await.map_err(|e| crate::migrate_error(&crate::redact_url(url), e))?;
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.map_err(|e| {
            Error::unavailable(format!("cannot listen to {}", crate::redact_url(url)), e)
        })?;
        listener.listen(CHANNEL).await.map_err(|e| {
            Error::unavailable(format!("cannot listen to {}", crate::redact_url(url)), e)
        })?;
        let (signal, changes) = tokio::sync::watch::channel(0);
        let task = tokio::spawn(listen(listener, signal));
        Ok(Self { pool, changes, _listener: std::sync::Arc::new(Listening(task)) })
    }

    /// Where the usage counters are written: the one pool (the work is the server's).
    fn usage_pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// [`ConfigStore::apply`](crate::ConfigStore::apply), from the version `at` when given ([`ConfigStore::apply_at`](crate::ConfigStore::apply_at)).
    async fn apply_inner(&self, actor: &str, change: Change, at: Option<i64>) -> Result<Applied> {
        let action = change.action();
        let target = change.target();
        if let Change::ImportKeys(rows) = change {
            let record = Record { actor, action, target: target.unwrap_or_default() };
            return Ok(Applied::Keys(keys::import_keys(&self.pool, &record, rows, at).await?));
        }
        let served = change.is_served();
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let mut tx = begin(&mut conn).await?;
        let made = async {
            if served || at.is_some() {
                bump_at(&mut tx, at).await?;
            }
            let applied = Self::make(&mut tx, change).await?;
            let target = target.unwrap_or_else(|| applied.target());
            admin::append_audit(&mut tx, &Record { actor, action, target }).await?;
            Ok(applied)
        }
        .await;
        finish(tx, made).await
    }

    /// Makes one change in the open transaction `tx`.
    async fn make(tx: &mut PgConnection, change: Change) -> Result<Applied> {
        use Change as C;
        Ok(match change {
            C::Deploy(req) => Applied::Deployed(Box::new(apis::deploy(tx, req).await?)),
            C::DeleteStage { api_id, stage } => {
                apis::delete_stage(tx, &api_id, &stage).await?;
                Applied::Done
            }
            C::SetStageEnforcement { api_id, stage, enforcement } => {
                apis::set_stage_enforcement(tx, &api_id, &stage, enforcement).await?;
                Applied::Done
            }
            C::PutApiDefinition { api_id, definition } => {
                apis::put_api_definition(tx, &api_id, &definition).await?;
                Applied::Done
            }
            C::CreateDeployment { api_id, stage } => {
                Applied::Deployment(apis::create_deployment(tx, &api_id, &stage).await?)
            }
            C::CreateKey { key, plan_ids } => {
                Applied::Key(keys::create_key(tx, key, &plan_ids).await?)
            }
            C::ImportKeys(_) => unreachable!("imports have a connection of their own"),
            C::RotateKey { id, value, grace_secs, retire_idle } => {
                Applied::Key(keys::rotate_key(tx, &id, value, grace_secs, retire_idle).await?)
            }
            C::RetireIdleOldValues { now } => {
                Applied::Count(rotation::retire_idle_old_values(tx, now).await?)
            }
            C::RevokeOldValues { id } => Applied::Count(keys::revoke_old_values(tx, &id).await?),
            C::UpdateKey { id, patch } => Applied::Key(keys::update_key(tx, &id, patch).await?),
            C::DeleteKey { id } => {
                keys::delete_key(tx, &id).await?;
                Applied::Done
            }
            C::CreatePlan { plan, stages } => {
                Applied::Plan(plans::create_plan(tx, plan, stages).await?)
            }
            C::UpdatePlan { id, patch } => Applied::Plan(plans::update_plan(tx, &id, patch).await?),
            C::DeletePlan { id } => {
                plans::delete_plan(tx, &id).await?;
                Applied::Done
            }
            C::AddPlanKey { plan_id, key_id } => {
                plans::add_plan_key(tx, &plan_id, &key_id).await?;
                Applied::Done
            }
            C::RemovePlanKey { plan_id, key_id } => {
                plans::remove_plan_key(tx, &plan_id, &key_id).await?;
                Applied::Done
            }
            C::PutPlanStage { plan_id, stage } => {
                plans::put_plan_stage(tx, &plan_id, stage).await?;
                Applied::Done
            }
            C::RemovePlanStage { plan_id, api_id, stage } => {
                plans::remove_plan_stage(tx, &plan_id, &api_id, &stage).await?;
                Applied::Done
            }
            C::PutGrant(grant) => {
                usage::put_grant(tx, grant).await?;
                Applied::Done
            }
            C::CreateAdminCredential(c) => {
                admin::create_admin_credential(tx, c).await?;
                Applied::Done
            }
            C::RevokeAdminCredential { access_key_id } => {
                admin::revoke_admin_credential(tx, &access_key_id).await?;
                Applied::Done
            }
            C::CreateAdminToken(t) => {
                admin::create_admin_token(tx, t).await?;
                Applied::Done
            }
            C::RevokeAdminToken { id } => {
                admin::revoke_admin_token(tx, &id).await?;
                Applied::Done
            }
        })
    }
}

/// Starts a write transaction and takes the lock every change takes first (the `meta` row), so
/// changes are made one at a time, on every node, as SQLite's `BEGIN IMMEDIATE` makes them:
/// what a change checks in its transaction still holds when it commits.
pub(super) async fn begin(
    conn: &mut PgConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>> {
    let mut tx = sqlx::Connection::begin(conn).await.map_err(map_err)?;
    sqlx::query("SELECT version FROM meta WHERE id = 1 FOR UPDATE")
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    Ok(tx)
}

/// Ends the write transaction `tx`: commits when `made` is a success; otherwise rolls it back
/// at once, not when its connection next goes back to the pool (until then it would hold the
/// lock on `meta` that every change waits for), and returns `made`'s error.
pub(super) async fn finish<T>(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    made: Result<T>,
) -> Result<T> {
    match made {
        Ok(v) => {
            tx.commit().await.map_err(map_err)?;
            Ok(v)
        }
        Err(e) => {
            // A connection that cannot roll back is broken: the server ends its transaction.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

pub(super) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub(super) fn map_err(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::Conflict(format!("already exists ({})", db.message()))
        }
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            Error::NotFound(format!("a referenced record does not exist ({})", db.message()))
        }
        // A connection that broke or could not be made (the server or the network is down, a
        // handshake cut short), or a server that refuses work for now: unavailable, so callers
        // answer 503 and retry, rather than report a failed operation.
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => Error::unavailable("cannot reach the database", e),
        sqlx::Error::Database(db) if db.code().is_some_and(|c| unavailable_code(&c)) => {
            Error::unavailable("the database refuses work for now", e)
        }
        _ => Error::other("a database operation failed", e),
    }
}

/// SQLSTATEs of a server that cannot serve now: connection exceptions (class 08), too many
/// connections (53300), shutting down or starting (57P01-57P03), read-only (25006: a standby).
fn unavailable_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "53300" | "57P01" | "57P02" | "57P03" | "25006")
}

/// [`bump`], only from `at` when given: [`Error::Stale`] (and nothing moved) when the version
/// is no longer `at` ([`ConfigStore::apply_at`](crate::ConfigStore::apply_at)).
pub(super) async fn bump_at(conn: &mut PgConnection, at: Option<i64>) -> Result<()> {
    let Some(at) = at else { return bump(conn).await };
    let done = sqlx::query("UPDATE meta SET version = version + 1 WHERE id = 1 AND version = $1")
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::Stale);
    }
    notify(conn).await
}

/// Moves the version gateways poll: what they serve changed.
pub(super) async fn bump(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("UPDATE meta SET version = version + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    notify(conn).await
}

/// Tells every node's listener, when the transaction commits, that the version moved.
async fn notify(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(conn).await.map_err(map_err)?;
    Ok(())
}

/// `query` with the conditions of `page` on the name column `name` (after `query`'s own `WHERE`
/// condition, if it ends with one), ordered by `name` and limited; its parameters are numbered
/// after the `used` that `query` has, and [`bind_page`] binds them after `query`'s own. Only
/// this crate's constant SQL goes in.
pub(super) fn paged(query: &str, name: &str, page: Page<'_>, used: usize) -> String {
    let mut sql = query.to_owned();
    let mut join = if crate::filters(query) { " AND " } else { " WHERE " };
    let mut n = used;
    let mut cond = |op: &str| {
        n += 1;
        sql.push_str(join);
        sql.push_str(&format!("{name} {op} ${n}"));
        join = " AND ";
    };
    if page.after.is_some() {
        cond(">");
    }
    if page.prefix.is_some() {
        cond(">=");
        if page.prefix_end().is_some() {
            cond("<");
        }
    }
    sql.push_str(&format!(" ORDER BY {name} LIMIT {}", page.limit));
    sql
}

/// Binds the values [`paged`] asked for, in its order.
pub(super) fn bind_page<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    page: Page<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    if let Some(after) = page.after {
        q = q.bind(after);
    }
    if let Some(prefix) = page.prefix {
        q = q.bind(prefix);
        if let Some(end) = page.prefix_end() {
            q = q.bind(end);
        }
    }
    q
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::other(format!("stored {what} is unreadable"), e))
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::other("cannot encode a record", e))
}

backend_impls!(PgStore {
    fn change_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.clone())
    }
});
