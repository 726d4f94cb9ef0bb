//! The embedded SQLite store: one file (`keygate.db`) in the data directory, WAL journal, foreign
//! keys on, schema from the embedded migrations in `migrations/sqlite`.
//!
//! Layout, one file per concern, each with its reads (on the pool) and its writes (on the
//! transaction [`ConfigStore::apply`](crate::ConfigStore::apply) opened): `apis` (APIs, stages, deployments, the deploy
//! itself), `keys`, `plans`, `usage` (counters and grants), `admin` (credentials, tokens and the
//! audit log), `snapshot` (what gateways load). This file opens the database and routes each
//! [`Change`] to its writer, then records it in the audit log in the same transaction.

mod admin;
mod apis;
mod keys;
mod plans;
mod refusals;
mod rotation;
mod snapshot;
mod usage;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate_types::model::{
    AdminCredential, AdminToken, Api, ApiKey, AuditEntry, DailyUsage, Deployment, GatewaySnapshot,
    OldValue, OldValueUse, Stage, UsageGrant, UsagePlan, WouldRefuse,
};
use keygate_types::{KeyDigest, ServiceDefinition};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{SqliteConnection, SqlitePool};

use crate::{Applied, Change, Error, Page, Result};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "keygate.db";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite implementation of [`ConfigStore`](crate::ConfigStore). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection of its own for the usage counters' writes, whose worker thread runs at a
    /// lower CPU priority ([`USAGE_NICE`]): appending and folding usage is background work, and
    /// with a million keys a fold is seconds of CPU that would otherwise share the serving
    /// core evenly with requests.
    usage: SqlitePool,
}

/// The name of the usage connection's worker thread (Linux keeps 15 bytes of it).
const USAGE_THREAD: &str = "keygate-usage";
/// How much lower [`USAGE_THREAD`]'s `nice` value is than the process's: when the CPU is busy
/// with requests, usage writing gets about a tenth of a core (weight 110 against 1024), and all
/// of what is idle.
const USAGE_NICE: i32 = 10;

/// The audit entry of the change being applied.
pub(super) struct Record<'a> {
    actor: &'a str,
    action: &'static str,
    target: String,
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/keygate.db` and applies pending migrations.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the directory cannot be created or the file cannot be opened or
    /// migrated.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        crate::private::prepare_data_dir(data_dir).map_err(|e| {
            Error::unavailable(format!("cannot create data directory {}", data_dir.display()), e)
        })?;
        let path = data_dir.join(DB_FILE);
        // SQLite creates `-wal` and `-shm` with the database file's mode: 0600 for all three.
        crate::private::prepare_private_file(&path)
            .and_then(|()| crate::private::tighten_file(&data_dir.join(format!("{DB_FILE}-wal"))))
            .and_then(|()| crate::private::tighten_file(&data_dir.join(format!("{DB_FILE}-shm"))))
            .map_err(|e| {
                Error::unavailable(format!("cannot make {} private", path.display()), e)
            })?;
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(unavailable)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Rows come from the connection's worker thread through a channel; sqlx's default of
            // 50 rows woke the reader per handful of rows, which made loading a million keys
            // mostly context switches (docs/benchmarks.md).
            .row_buffer_size(4096);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.clone())
            .await
            .map_err(|e| Error::unavailable(format!("cannot open {}", path.display()), e))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| crate::migrate_error(&path.display().to_string(), e))?;
        let usage = SqlitePoolOptions::new()
            .max_connections(1)
            .after_connect(|_, _| {
                Box::pin(async {
                    if let Err(e) = lower_usage_threads() {
                        tracing::warn!(error = %e, "cannot lower the usage writer's CPU priority");
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(opts.thread_name(|_| USAGE_THREAD.to_owned()));
        Ok(Self { pool, usage })
    }

    /// Where the usage counters are written: [`SqliteStore::usage`].
    fn usage_pool(&self) -> &SqlitePool {
        &self.usage
    }

    /// Closes the pools, waiting for connections to finish.
    pub async fn close(&self) {
        self.usage.close().await;
        self.pool.close().await;
    }

    /// Starts a write transaction. `BEGIN IMMEDIATE` takes the write lock at once, waiting out
    /// other writers with the busy timeout. A deferred `BEGIN` that reads first and writes later
    /// fails at once with SQLITE_BUSY ("database is locked"), whatever the timeout, when another
    /// process (a gateway flushing last uses) committed in between: its snapshot is stale.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)
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
        let mut tx = self.begin().await?;
        if served || at.is_some() {
            bump_at(&mut tx, at).await?;
        }
        let applied = Self::make(&mut tx, change).await?;
        let target = target.unwrap_or_else(|| applied.target());
        admin::append_audit(&mut tx, &Record { actor, action, target }).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(applied)
    }

    /// Makes one change in the open transaction `tx`.
    async fn make(tx: &mut SqliteConnection, change: Change) -> Result<Applied> {
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

/// Lowers the threads named [`USAGE_THREAD`] [`USAGE_NICE`] steps below the calling thread (on
/// Linux each thread has its own priority; elsewhere, without `/proc/self/task`, nothing to do).
fn lower_usage_threads() -> std::io::Result<()> {
    use rustix::process::{Pid, getpriority_process, setpriority_process};
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Ok(()) };
    let target = (getpriority_process(None)? + USAGE_NICE).min(19);
    for task in tasks {
        let task = task?;
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else { continue };
        let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
        if name.trim_end() == USAGE_THREAD
            && let Some(tid) = tid.and_then(Pid::from_raw)
            && getpriority_process(Some(tid))? < target
        {
            setpriority_process(Some(tid), target)?;
        }
    }
    Ok(())
}

pub(super) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::unavailable("cannot reach the database", e)
}

pub(super) fn map_err(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::Conflict(format!("already exists ({})", db.message()))
        }
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            Error::NotFound(format!("a referenced record does not exist ({})", db.message()))
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Error::unavailable("cannot reach the database", e)
        }
        _ => Error::other("a database operation failed", e),
    }
}

/// [`bump`], only from `at` when given: [`Error::Stale`] (and nothing moved) when the version
/// is no longer `at` ([`ConfigStore::apply_at`](crate::ConfigStore::apply_at)).
pub(super) async fn bump_at(conn: &mut SqliteConnection, at: Option<i64>) -> Result<()> {
    let Some(at) = at else { return bump(conn).await };
    let done = sqlx::query("UPDATE meta SET version = version + 1 WHERE id = 1 AND version = ?")
        .bind(at)
        .execute(conn)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::Stale);
    }
    Ok(())
}

/// Moves the version gateways poll: what they serve changed.
pub(super) async fn bump(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query("UPDATE meta SET version = version + 1 WHERE id = 1")
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// `query` with the conditions of `page` on the name column `name` (after `query`'s own `WHERE`
/// condition, if it ends with one), ordered by `name` and limited; [`bind_page`] binds the
/// page's values after `query`'s own. Only this crate's constant SQL goes in.
pub(super) fn paged(query: &str, name: &str, page: Page<'_>) -> String {
    let mut sql = query.to_owned();
    let mut join = if crate::filters(query) { " AND " } else { " WHERE " };
    let mut cond = |c: String| {
        sql.push_str(join);
        sql.push_str(&c);
        join = " AND ";
    };
    if page.after.is_some() {
        cond(format!("{name} > ?"));
    }
    if page.prefix.is_some() {
        cond(format!("{name} >= ?"));
        if page.prefix_end().is_some() {
            cond(format!("{name} < ?"));
        }
    }
    sql.push_str(&format!(" ORDER BY {name} LIMIT {}", page.limit));
    sql
}

/// Binds the values [`paged`] asked for, in its order.
pub(super) fn bind_page<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    page: Page<'q>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
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

backend_impls!(SqliteStore {});

#[cfg(test)]
mod tests {
    use super::*;

    /// The usage connection's worker thread runs at the lower priority; the store's other
    /// connections (answering the admin API, loading the gateway) do not.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn usage_is_written_at_a_lower_cpu_priority() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        crate::UsageCounters::add_usage(&store, &[]).await.unwrap();
        assert_eq!(crate::UsageCounters::fold_usage(&store).await.unwrap(), 0);
        let mut nice = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap();
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
            let Some(tid) = tid.and_then(rustix::process::Pid::from_raw) else { continue };
            let prio = rustix::process::getpriority_process(Some(tid)).unwrap();
            nice.push((name.trim_end().to_owned(), prio));
        }
        let usage: Vec<i32> =
            nice.iter().filter(|(n, _)| n == USAGE_THREAD).map(|&(_, p)| p).collect();
        let base = rustix::process::getpriority_process(None).unwrap();
        assert_eq!(usage, [(base + USAGE_NICE).min(19)], "{nice:?}");
        assert!(nice.iter().any(|(n, p)| n.starts_with("sqlx-sqlite") && *p == base), "{nice:?}");
    }
}
