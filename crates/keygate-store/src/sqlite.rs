//! The embedded SQLite store: one file (`keygate.db`) in the data directory, WAL journal, foreign
//! keys on, schema from the embedded migrations in `migrations/sqlite`.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use keygate_types::keyset::{KeyRecord, KeySet};
use keygate_types::model::{
    AdminCredential, AdminToken, Api, ApiKey, ApiKeyPatch, ApiStage, AuditEntry, DailyUsage,
    DeployedStage, Deployment, GatewaySnapshot, NewApiKey, NewUsagePlan, Stage, UsageGrant,
    UsagePlan, UsagePlanPatch, new_id,
};
use keygate_types::{ApiKeyValue, KeyDigest, ServiceDefinition};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
// `AssertSqlSafe` wraps SQL built only from this file's constant column and table names.
use sqlx::{AssertSqlSafe, Row, SqliteConnection, SqlitePool};

use crate::{ConfigStore, DeployOutcome, DeployRequest, Error, KeyStatus, Result};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "keygate.db";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite implementation of [`ConfigStore`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
            .connect_with(opts)
            .await
            .map_err(|e| Error::unavailable(format!("cannot open {}", path.display()), e))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::unavailable(format!("cannot migrate {}", path.display()), e))?;
        Ok(Self { pool })
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction. `BEGIN IMMEDIATE` takes the write lock at once, waiting out
    /// other writers with the busy timeout. A deferred `BEGIN` that reads first and writes later
    /// fails at once with SQLITE_BUSY ("database is locked"), whatever the timeout, when another
    /// process (a gateway flushing last uses) committed in between: its snapshot is stale.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::unavailable("cannot reach the database", e)
}

fn map_err(e: sqlx::Error) -> Error {
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

async fn bump(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query("UPDATE meta SET version = version + 1 WHERE id = 1")
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

const KEY_COLUMNS: &str = "id, name, prefix, description, customer_id, enabled, created_date, \
                           last_updated_date, expires, last_used_date";

fn key_from_row(r: &SqliteRow) -> ApiKey {
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

fn api_from_row(r: &SqliteRow) -> Api {
    Api { id: r.get("id"), name: r.get("name"), created_date: r.get("created_date") }
}

fn deployment_from_row(r: &SqliteRow) -> Result<Deployment> {
    Ok(Deployment {
        id: r.get("id"),
        api_id: r.get("api_id"),
        created_date: r.get("created_date"),
        definition: parse_json(r.get("definition"), "deployment")?,
    })
}

fn credential_from_row(r: &SqliteRow) -> AdminCredential {
    AdminCredential {
        access_key_id: r.get("access_key_id"),
        secret_sealed: r.get("secret_sealed"),
        description: r.get("description"),
        created_date: r.get("created_date"),
        revoked_date: r.get("revoked_date"),
    }
}

fn token_from_row(r: &SqliteRow) -> AdminToken {
    AdminToken {
        id: r.get("id"),
        digest: r.get("digest"),
        prefix: r.get("prefix"),
        description: r.get("description"),
        created_date: r.get("created_date"),
        revoked_date: r.get("revoked_date"),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::other(format!("stored {what} is unreadable"), e))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::other("cannot encode a record", e))
}

async fn key_by(conn: &mut SqliteConnection, column: &str, v: &str) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = ?");
    let row =
        sqlx::query(AssertSqlSafe(sql)).bind(v).fetch_optional(conn).await.map_err(map_err)?;
    Ok(row.as_ref().map(key_from_row))
}

async fn insert_key(conn: &mut SqliteConnection, key: &NewApiKey) -> Result<ApiKey> {
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
fn inserted_key(key: &NewApiKey, id: String, prefix: String, t: i64) -> ApiKey {
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

const PLAN_COLUMNS: &str = "id, name, description, throttle, quota";

async fn plan_by(conn: &mut SqliteConnection, column: &str, v: &str) -> Result<Option<UsagePlan>> {
    let sql = format!("SELECT {PLAN_COLUMNS} FROM usage_plans WHERE {column} = ?");
    let Some(row) = sqlx::query(AssertSqlSafe(sql))
        .bind(v)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?
    else {
        return Ok(None);
    };
    plan_from_row(conn, &row).await.map(Some)
}

async fn plan_from_row(conn: &mut SqliteConnection, row: &SqliteRow) -> Result<UsagePlan> {
    let id: String = row.get("id");
    let stages = sqlx::query(
        "SELECT api_id, stage, throttle FROM usage_plan_stages WHERE plan_id = ? \
         ORDER BY api_id, stage",
    )
    .bind(&id)
    .fetch_all(conn)
    .await
    .map_err(map_err)?;
    let mut api_stages = Vec::with_capacity(stages.len());
    for r in &stages {
        api_stages.push(ApiStage {
            api_id: r.get("api_id"),
            stage: r.get("stage"),
            throttle: parse_json(r.get("throttle"), "method throttles")?,
        });
    }
    let throttle: Option<String> = row.get("throttle");
    let quota: Option<String> = row.get("quota");
    Ok(UsagePlan {
        name: row.get("name"),
        description: row.get("description"),
        throttle: throttle.as_deref().map(|s| parse_json(s, "plan throttle")).transpose()?,
        quota: quota.as_deref().map(|s| parse_json(s, "plan quota")).transpose()?,
        api_stages,
        id,
    })
}

fn plan_name_conflict(e: sqlx::Error, name: &str) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::Conflict(format!("a usage plan named {name:?} already exists"))
        }
        _ => map_err(e),
    }
}

async fn insert_plan(conn: &mut SqliteConnection, plan: &NewUsagePlan) -> Result<String> {
    let id = new_id(6);
    sqlx::query(
        "INSERT INTO usage_plans (id, name, description, throttle, quota, created_date) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&plan.name)
    .bind(&plan.description)
    .bind(plan.throttle.as_ref().map(to_json).transpose()?)
    .bind(plan.quota.as_ref().map(to_json).transpose()?)
    .bind(now())
    .execute(conn)
    .await
    .map_err(|e| plan_name_conflict(e, &plan.name))?;
    Ok(id)
}

/// The plan (other than `plan_id`) through which `key_id` already reaches one of `plan_id`'s
/// stages, if any: a key may be in only one plan per API stage.
async fn key_stage_clash(
    conn: &mut SqliteConnection,
    plan_id: &str,
    key_id: &str,
) -> Result<Option<(String, String, String)>> {
    let row = sqlx::query(
        "SELECT p.name, s1.api_id, s1.stage FROM usage_plan_keys pk \
         JOIN usage_plans p ON p.id = pk.plan_id \
         JOIN usage_plan_stages s1 ON s1.plan_id = pk.plan_id \
         JOIN usage_plan_stages s2 ON s2.api_id = s1.api_id AND s2.stage = s1.stage \
              AND s2.plan_id = ? \
         WHERE pk.key_id = ? AND pk.plan_id <> ? LIMIT 1",
    )
    .bind(plan_id)
    .bind(key_id)
    .bind(plan_id)
    .fetch_optional(conn)
    .await
    .map_err(map_err)?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

async fn add_key_to_plan(
    conn: &mut SqliteConnection,
    plan_id: &str,
    key_id: &str,
    key_name: &str,
) -> Result<()> {
    require_plan(conn, plan_id).await?;
    if let Some((other, api, stage)) = key_stage_clash(conn, plan_id, key_id).await? {
        return Err(Error::Conflict(format!(
            "API key {key_name} is already in usage plan {other}, which covers {api}/{stage} too; \
             a key may be in only one plan per API stage (remove it from {other} first)"
        )));
    }
    sqlx::query("INSERT OR IGNORE INTO usage_plan_keys (plan_id, key_id) VALUES (?, ?)")
        .bind(plan_id)
        .bind(key_id)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

async fn require_plan(conn: &mut SqliteConnection, plan_id: &str) -> Result<()> {
    let found = sqlx::query("SELECT 1 FROM usage_plans WHERE id = ?")
        .bind(plan_id)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    found.map(|_| ()).ok_or_else(|| Error::NotFound(format!("usage plan {plan_id} not found")))
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn deploy(&self, req: DeployRequest) -> Result<DeployOutcome> {
        let def = &req.definition;
        let t = now();
        let def_json = to_json(def)?;
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;

        // The API, by service name.
        let api = match sqlx::query("SELECT id, created_date FROM apis WHERE name = ?")
            .bind(&def.service)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
        {
            Some(r) => {
                let api = Api {
                    id: r.get("id"),
                    name: def.service.clone(),
                    created_date: r.get("created_date"),
                };
                sqlx::query("UPDATE apis SET definition = ? WHERE id = ?")
                    .bind(&def_json)
                    .bind(&api.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                api
            }
            None => {
                let api = Api { id: new_id(10), name: def.service.clone(), created_date: t };
                sqlx::query(
                    "INSERT INTO apis (id, name, definition, created_date) VALUES (?, ?, ?, ?)",
                )
                .bind(&api.id)
                .bind(&api.name)
                .bind(&def_json)
                .bind(t)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                api
            }
        };

        // The stage's plans: updated in place (same id, so usage counted so far is kept).
        let mut plan_ids = Vec::with_capacity(req.plans.len());
        for plan in &req.plans {
            let existing: Option<String> =
                sqlx::query_scalar("SELECT id FROM usage_plans WHERE name = ?")
                    .bind(&plan.name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
            let id = match existing {
                Some(id) => {
                    sqlx::query("UPDATE usage_plans SET throttle = ?, quota = ? WHERE id = ?")
                        .bind(plan.throttle.as_ref().map(to_json).transpose()?)
                        .bind(plan.quota.as_ref().map(to_json).transpose()?)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    id
                }
                None => insert_plan(&mut tx, plan).await?,
            };
            sqlx::query(
                "INSERT OR IGNORE INTO usage_plan_stages (plan_id, api_id, stage) VALUES (?, ?, ?)",
            )
            .bind(&id)
            .bind(&api.id)
            .bind(&def.stage)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            plan_ids.push((plan.name.clone(), id));
        }

        // Declared keys: created once, reused by every later deploy. The file is authoritative
        // for which of this stage's plans a declared key is in, so a key moved between groups
        // leaves its old plan here.
        let mut keys = Vec::with_capacity(req.keys.len());
        for (k, plan_name) in &req.keys {
            let (key, status) = match key_by(&mut tx, "name", &k.name).await? {
                Some(existing) => (existing, KeyStatus::Existing),
                None => (insert_key(&mut tx, k).await?, KeyStatus::Created),
            };
            let plan_id = plan_ids
                .iter()
                .find(|(n, _)| n == plan_name)
                .map(|(_, id)| id.clone())
                .ok_or_else(|| {
                Error::NotFound(format!("usage plan {plan_name} is not declared"))
            })?;
            sqlx::query(
                "DELETE FROM usage_plan_keys WHERE key_id = ? AND plan_id <> ? AND plan_id IN \
                 (SELECT plan_id FROM usage_plan_stages WHERE api_id = ? AND stage = ?)",
            )
            .bind(&key.id)
            .bind(&plan_id)
            .bind(&api.id)
            .bind(&def.stage)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            if let Some((other, a, st)) = key_stage_clash(&mut tx, &plan_id, &key.id).await? {
                return Err(Error::Conflict(format!(
                    "API key {} is in usage plan {other}, which also covers {a}/{st}; a key may be \
                     in only one plan per API stage",
                    key.name
                )));
            }
            sqlx::query("INSERT OR IGNORE INTO usage_plan_keys (plan_id, key_id) VALUES (?, ?)")
                .bind(&plan_id)
                .bind(&key.id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            keys.push((key, status, plan_name.clone()));
        }

        // Keys still in this stage's plans that the file no longer declares: reported, never
        // deleted.
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id IN \
             (SELECT pk.key_id FROM usage_plan_keys pk JOIN usage_plan_stages s \
              ON s.plan_id = pk.plan_id WHERE s.api_id = ? AND s.stage = ?) ORDER BY name"
        );
        let undeclared = sqlx::query(AssertSqlSafe(sql))
            .bind(&api.id)
            .bind(&def.stage)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?
            .iter()
            .map(key_from_row)
            .filter(|k| !keys.iter().any(|(d, _, _)| d.id == k.id))
            .collect();

        // The immutable snapshot, and the stage pointing at it.
        let deployment = Deployment {
            id: new_id(6),
            api_id: api.id.clone(),
            created_date: t,
            definition: def.clone(),
        };
        sqlx::query(
            "INSERT INTO deployments (id, api_id, created_date, definition) VALUES (?, ?, ?, ?)",
        )
        .bind(&deployment.id)
        .bind(&api.id)
        .bind(t)
        .bind(&def_json)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO stages (api_id, name, deployment_id, created_date, last_updated_date) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (api_id, name) DO UPDATE SET \
             deployment_id = excluded.deployment_id, last_updated_date = excluded.last_updated_date",
        )
        .bind(&api.id)
        .bind(&def.stage)
        .bind(&deployment.id)
        .bind(t)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;

        let mut plans = Vec::with_capacity(plan_ids.len());
        for (_, id) in &plan_ids {
            plans.extend(plan_by(&mut tx, "id", id).await?);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(DeployOutcome { api, deployment, plans, keys, undeclared })
    }

    async fn list_apis(&self) -> Result<Vec<Api>> {
        let rows = sqlx::query("SELECT id, name, created_date FROM apis ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(api_from_row).collect())
    }

    async fn get_api_by_name(&self, name: &str) -> Result<Option<Api>> {
        let row = sqlx::query("SELECT id, name, created_date FROM apis WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(api_from_row))
    }

    async fn delete_stage(&self, api_id: &str, stage: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        sqlx::query("DELETE FROM usage_plan_stages WHERE api_id = ? AND stage = ?")
            .bind(api_id)
            .bind(stage)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let done = sqlx::query("DELETE FROM stages WHERE api_id = ? AND name = ?")
            .bind(api_id)
            .bind(stage)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no stage {stage} of API {api_id}")));
        }
        tx.commit().await.map_err(map_err)
    }

    async fn list_stages(&self, api_id: &str) -> Result<Vec<Stage>> {
        let rows = sqlx::query(
            "SELECT api_id, name, deployment_id, created_date, last_updated_date FROM stages \
             WHERE api_id = ? ORDER BY name",
        )
        .bind(api_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| Stage {
                api_id: r.get("api_id"),
                name: r.get("name"),
                deployment_id: r.get("deployment_id"),
                created_date: r.get("created_date"),
                last_updated_date: r.get("last_updated_date"),
            })
            .collect())
    }

    async fn get_api(&self, id: &str) -> Result<Option<Api>> {
        let row = sqlx::query("SELECT id, name, created_date FROM apis WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(api_from_row))
    }

    async fn get_api_definition(&self, api_id: &str) -> Result<Option<ServiceDefinition>> {
        let row: Option<String> = sqlx::query_scalar("SELECT definition FROM apis WHERE id = ?")
            .bind(api_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|d| parse_json(&d, "API definition")).transpose()
    }

    async fn put_api_definition(&self, api_id: &str, definition: &ServiceDefinition) -> Result<()> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let done = sqlx::query("UPDATE apis SET definition = ? WHERE id = ?")
            .bind(to_json(definition)?)
            .bind(api_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("REST API {api_id} not found")));
        }
        tx.commit().await.map_err(map_err)
    }

    async fn create_deployment(&self, api_id: &str, stage: &str) -> Result<Deployment> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let def: Option<String> = sqlx::query_scalar("SELECT definition FROM apis WHERE id = ?")
            .bind(api_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let def = def.ok_or_else(|| Error::NotFound(format!("REST API {api_id} not found")))?;
        let mut definition: ServiceDefinition = parse_json(&def, "API definition")?;
        definition.stage = stage.to_owned();
        let t = now();
        let deployment =
            Deployment { id: new_id(6), api_id: api_id.to_owned(), created_date: t, definition };
        sqlx::query(
            "INSERT INTO deployments (id, api_id, created_date, definition) VALUES (?, ?, ?, ?)",
        )
        .bind(&deployment.id)
        .bind(api_id)
        .bind(t)
        .bind(to_json(&deployment.definition)?)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO stages (api_id, name, deployment_id, created_date, last_updated_date) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (api_id, name) DO UPDATE SET \
             deployment_id = excluded.deployment_id, last_updated_date = excluded.last_updated_date",
        )
        .bind(api_id)
        .bind(stage)
        .bind(&deployment.id)
        .bind(t)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(deployment)
    }

    async fn list_deployments(&self, api_id: &str) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(
            "SELECT id, api_id, created_date, definition FROM deployments WHERE api_id = ? \
             ORDER BY created_date, id",
        )
        .bind(api_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(deployment_from_row).collect()
    }

    async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>> {
        let row = sqlx::query(
            "SELECT id, api_id, created_date, definition FROM deployments WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    async fn create_key(&self, key: NewApiKey, plan_ids: &[String]) -> Result<ApiKey> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let created = insert_key(&mut tx, &key).await?;
        for plan_id in plan_ids {
            add_key_to_plan(&mut tx, plan_id, &created.id, &created.name).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(created)
    }

    async fn import_keys(&self, keys: Vec<(NewApiKey, Vec<String>)>) -> Result<Vec<ApiKey>> {
        /// [`ConfigStore::import_keys`] with multi-row statements, in one transaction; `None`
        /// (having written nothing) when a row would fail: the caller then imports row by row to
        /// report it.
        async fn import_keys_in_bulk(
            conn: &mut SqliteConnection,
            keys: &[(NewApiKey, Vec<String>)],
        ) -> Result<Option<Vec<ApiKey>>> {
            use std::collections::{HashMap, HashSet};

            // Keys per INSERT: 10 parameters each, under SQLite's limit of 32766.
            const BATCH: usize = 3000;
            const KEY_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
                .await
                .map_err(map_err)?;
            bump(&mut tx).await?;
            // Each plan is read once: its API stages, or `None` when there is no such plan.
            let mut plans: HashMap<&str, Option<HashSet<(String, String)>>> = HashMap::new();
            for plan_id in keys.iter().flat_map(|(_, ids)| ids) {
                if plans.contains_key(plan_id.as_str()) {
                    continue;
                }
                let found = sqlx::query("SELECT 1 FROM usage_plans WHERE id = ?")
                    .bind(plan_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let stages = match found {
                    Some(_) => Some(
                        sqlx::query(
                            "SELECT api_id, stage FROM usage_plan_stages WHERE plan_id = ?",
                        )
                        .bind(plan_id)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(map_err)?
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect(),
                    ),
                    None => None,
                };
                plans.insert(plan_id, stages);
            }
            // Every plan must exist, and no key may join two plans that cover the same API stage.
            let plans_ok = |ids: &[String]| {
                ids.iter().enumerate().all(|(i, a)| {
                    let Some(Some(sa)) = plans.get(a.as_str()) else { return false };
                    ids[..i].iter().filter(|b| *b != a).all(
                        |b| matches!(plans.get(b.as_str()), Some(Some(sb)) if sa.is_disjoint(sb)),
                    )
                })
            };
            if !keys.iter().all(|(_, ids)| plans_ok(ids)) {
                return Ok(None);
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
            tx.commit().await.map_err(map_err)?;
            Ok(Some(out))
        }

        // Big imports touch pages all over the key tables' indexes: with SQLite's default 2 MiB
        // page cache they keep spilling and re-reading them (a million keys: 18 s instead of 8).
        // This connection gets a 64 MiB cache (a limit, not an allocation) and in-memory
        // temporary files; it is closed afterwards rather than returned to the pool like that.
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        conn.close_on_drop();
        sqlx::query("PRAGMA cache_size = -65536").execute(&mut *conn).await.map_err(map_err)?;
        sqlx::query("PRAGMA temp_store = MEMORY").execute(&mut *conn).await.map_err(map_err)?;
        // The bulk way fails for any bad row (a taken name or value, a missing plan, two plans
        // sharing an API stage); then the import starts over row by row, which stops at the
        // first bad row with the same error `create_key` would give. It checks that the plans
        // exist in its own (write) transaction, so the memberships it adds cannot break a foreign
        // key; with foreign keys off, SQLite need not journal each multi-row INSERT to undo it.
        sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await.map_err(map_err)?;
        if let Ok(Some(created)) = import_keys_in_bulk(&mut conn, &keys).await {
            return Ok(created);
        }
        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await.map_err(map_err)?;
        let mut tx =
            sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await.map_err(map_err)?;
        bump(&mut tx).await?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, plans) in &keys {
            let created = insert_key(&mut tx, key).await?;
            for plan_id in plans {
                add_key_to_plan(&mut tx, plan_id, &created.id, &created.name).await?;
            }
            out.push(created);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    async fn key_digest_exists(&self, digest: &KeyDigest) -> Result<bool> {
        let found = sqlx::query(
            "SELECT 1 FROM api_keys WHERE digest = ? UNION ALL \
             SELECT 1 FROM api_key_old_values WHERE digest = ?",
        )
        .bind(&digest.as_bytes()[..])
        .bind(&digest.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(found.is_some())
    }

    async fn existing_key_digests(
        &self,
        digests: &[KeyDigest],
    ) -> Result<std::collections::HashSet<KeyDigest>> {
        // Digests per query; each is bound twice, well under SQLite's limit of 32766 parameters.
        const CHUNK: usize = 5000;
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
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

    async fn rotate_key(&self, id: &str, value: ApiKeyValue, grace_secs: i64) -> Result<ApiKey> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let old: Option<Vec<u8>> = sqlx::query_scalar("SELECT digest FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let old = old.ok_or_else(|| Error::NotFound(format!("API key {id} not found")))?;
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
                "INSERT INTO api_key_old_values (digest, key_id, expires) VALUES (?, ?, ?)",
            )
            .bind(&old)
            .bind(id)
            .bind(grace_end)
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
        sqlx::query(
            "UPDATE api_keys SET digest = ?, prefix = ?, last_updated_date = ? WHERE id = ?",
        )
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
        let key = key_by(&mut tx, "id", id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("API key {id} not found")))?;
        tx.commit().await.map_err(map_err)?;
        Ok(key)
    }

    async fn revoke_old_values(&self, id: &str) -> Result<u64> {
        let mut tx = self.begin().await?;
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
        bump(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(done)
    }

    async fn set_last_used(&self, used: &[(String, i64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        // Data, not configuration: no version bump. One statement for the whole batch (the rows
        // travel as one JSON array): a flush after traffic on thousands of keys would otherwise
        // cost a round trip to SQLite's worker thread per key.
        let rows =
            serde_json::to_string(used).map_err(|e| Error::other("cannot encode last uses", e))?;
        sqlx::query(
            "UPDATE api_keys SET last_used_date = MAX(COALESCE(last_used_date, 0), u.at) \
             FROM (SELECT json_extract(value, '$[0]') AS id, MAX(json_extract(value, '$[1]')) AS at \
                   FROM json_each(?) GROUP BY 1) AS u \
             WHERE api_keys.id = u.id",
        )
        .bind(rows)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        key_by(&mut conn, "id", id).await
    }

    async fn get_key_by_name(&self, name: &str) -> Result<Option<ApiKey>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        key_by(&mut conn, "name", name).await
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name");
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&self.pool).await.map_err(map_err)?;
        Ok(rows.iter().map(key_from_row).collect())
    }

    async fn update_key(&self, id: &str, patch: ApiKeyPatch) -> Result<ApiKey> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let mut key = key_by(&mut tx, "id", id)
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
        tx.commit().await.map_err(map_err)?;
        Ok(key)
    }

    async fn delete_key(&self, id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let done = sqlx::query("DELETE FROM api_keys WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("API key {id} not found")));
        }
        tx.commit().await.map_err(map_err)
    }

    async fn create_plan(&self, plan: NewUsagePlan) -> Result<UsagePlan> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let id = insert_plan(&mut tx, &plan).await?;
        let created = plan_by(&mut tx, "id", &id).await?;
        tx.commit().await.map_err(map_err)?;
        created.ok_or_else(|| Error::corrupt("created plan vanished"))
    }

    async fn update_plan(&self, id: &str, patch: UsagePlanPatch) -> Result<UsagePlan> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let mut plan = plan_by(&mut tx, "id", id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("usage plan {id} not found")))?;
        if let Some(n) = patch.name {
            plan.name = n;
        }
        if let Some(d) = patch.description {
            plan.description = d;
        }
        if let Some(t) = patch.throttle {
            plan.throttle = t;
        }
        if let Some(q) = patch.quota {
            plan.quota = q;
        }
        sqlx::query(
            "UPDATE usage_plans SET name = ?, description = ?, throttle = ?, quota = ? WHERE id = ?",
        )
        .bind(&plan.name)
        .bind(&plan.description)
        .bind(plan.throttle.as_ref().map(to_json).transpose()?)
        .bind(plan.quota.as_ref().map(to_json).transpose()?)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| plan_name_conflict(e, &plan.name))?;
        tx.commit().await.map_err(map_err)?;
        Ok(plan)
    }

    async fn delete_plan(&self, id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let done = sqlx::query("DELETE FROM usage_plans WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("usage plan {id} not found")));
        }
        tx.commit().await.map_err(map_err)
    }

    async fn add_plan_key(&self, plan_id: &str, key_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let key = key_by(&mut tx, "id", key_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("API key {key_id} not found")))?;
        add_key_to_plan(&mut tx, plan_id, &key.id, &key.name).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn remove_plan_key(&self, plan_id: &str, key_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let done = sqlx::query("DELETE FROM usage_plan_keys WHERE plan_id = ? AND key_id = ?")
            .bind(plan_id)
            .bind(key_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!(
                "API key {key_id} is not in usage plan {plan_id}"
            )));
        }
        tx.commit().await.map_err(map_err)
    }

    async fn put_plan_stage(&self, plan_id: &str, stage: ApiStage) -> Result<()> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        require_plan(&mut tx, plan_id).await?;
        let clash = sqlx::query(
            "SELECT k.name, p.name FROM usage_plan_keys mine \
             JOIN usage_plan_keys other ON other.key_id = mine.key_id AND other.plan_id <> mine.plan_id \
             JOIN usage_plan_stages s ON s.plan_id = other.plan_id AND s.api_id = ? AND s.stage = ? \
             JOIN api_keys k ON k.id = mine.key_id JOIN usage_plans p ON p.id = other.plan_id \
             WHERE mine.plan_id = ? LIMIT 1",
        )
        .bind(&stage.api_id)
        .bind(&stage.stage)
        .bind(plan_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        if let Some(r) = clash {
            let (key, other): (String, String) = (r.get(0), r.get(1));
            return Err(Error::Conflict(format!(
                "API key {key} of this plan is also in usage plan {other}, which covers {}/{}; a \
                 key may be in only one plan per API stage",
                stage.api_id, stage.stage
            )));
        }
        sqlx::query(
            "INSERT INTO usage_plan_stages (plan_id, api_id, stage, throttle) VALUES (?, ?, ?, ?) \
             ON CONFLICT (plan_id, api_id, stage) DO UPDATE SET throttle = excluded.throttle",
        )
        .bind(plan_id)
        .bind(&stage.api_id)
        .bind(&stage.stage)
        .bind(to_json(&stage.throttle)?)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn remove_plan_stage(&self, plan_id: &str, api_id: &str, stage: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let done = sqlx::query(
            "DELETE FROM usage_plan_stages WHERE plan_id = ? AND api_id = ? AND stage = ?",
        )
        .bind(plan_id)
        .bind(api_id)
        .bind(stage)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!(
                "usage plan {plan_id} does not cover {api_id}/{stage}"
            )));
        }
        tx.commit().await.map_err(map_err)
    }

    async fn add_usage(&self, usage: &[DailyUsage]) -> Result<()> {
        if usage.is_empty() {
            return Ok(());
        }
        // Counters are data, not configuration: no version bump, so gateways do not reload.
        // One statement for the batch (rows as one JSON array), atomic as a whole; usage of a
        // key or plan deleted meanwhile is dropped with it.
        let rows: Vec<(&str, &str, &str, u64)> = usage
            .iter()
            .map(|u| (u.plan_id.as_str(), u.key_id.as_str(), u.day.as_str(), u.used))
            .collect();
        let rows =
            serde_json::to_string(&rows).map_err(|e| Error::other("cannot encode usage", e))?;
        sqlx::query(
            "INSERT INTO usage_days (plan_id, key_id, day, used) \
             SELECT u.plan_id, u.key_id, u.day, u.used FROM \
               (SELECT json_extract(value, '$[0]') AS plan_id, json_extract(value, '$[1]') AS key_id, \
                       json_extract(value, '$[2]') AS day, json_extract(value, '$[3]') AS used \
                FROM json_each(?)) AS u \
             WHERE EXISTS (SELECT 1 FROM usage_plans WHERE id = u.plan_id) \
               AND EXISTS (SELECT 1 FROM api_keys WHERE id = u.key_id) \
             ON CONFLICT (plan_id, key_id, day) DO UPDATE SET used = used + excluded.used",
        )
        .bind(rows)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn usage(
        &self,
        plan_id: Option<&str>,
        key_id: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<DailyUsage>> {
        let rows = sqlx::query(
            "SELECT plan_id, key_id, day, used FROM usage_days \
             WHERE plan_id = COALESCE(?, plan_id) AND key_id = COALESCE(?, key_id) \
             AND day >= ? AND day <= ? ORDER BY plan_id, key_id, day",
        )
        .bind(plan_id)
        .bind(key_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| DailyUsage {
                plan_id: r.get("plan_id"),
                key_id: r.get("key_id"),
                day: r.get("day"),
                used: r.get::<i64, _>("used").max(0) as u64,
            })
            .collect())
    }

    async fn put_grant(&self, grant: UsageGrant) -> Result<()> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        sqlx::query(
            "INSERT INTO usage_grants (plan_id, key_id, period_start, extra) VALUES (?, ?, ?, ?) \
             ON CONFLICT (plan_id, key_id, period_start) DO UPDATE SET extra = excluded.extra",
        )
        .bind(&grant.plan_id)
        .bind(&grant.key_id)
        .bind(&grant.period_start)
        .bind(grant.extra)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_plan(&self, id: &str) -> Result<Option<UsagePlan>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        plan_by(&mut conn, "id", id).await
    }

    async fn get_plan_by_name(&self, name: &str) -> Result<Option<UsagePlan>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        plan_by(&mut conn, "name", name).await
    }

    async fn list_plans(&self) -> Result<Vec<UsagePlan>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let rows = sqlx::query(
            "SELECT id, name, description, throttle, quota FROM usage_plans ORDER BY name",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        let mut plans = Vec::with_capacity(rows.len());
        for r in &rows {
            plans.push(plan_from_row(&mut conn, r).await?);
        }
        Ok(plans)
    }

    async fn list_plan_keys(&self, plan_id: &str) -> Result<Vec<ApiKey>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id IN \
             (SELECT key_id FROM usage_plan_keys WHERE plan_id = ?) ORDER BY name"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(plan_id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(key_from_row).collect())
    }

    async fn key_plan_ids(&self, key_id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT plan_id FROM usage_plan_keys WHERE key_id = ? ORDER BY plan_id")
                .bind(key_id)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
        Ok(rows.iter().map(|r| r.get("plan_id")).collect())
    }

    async fn create_admin_credential(&self, c: AdminCredential) -> Result<()> {
        sqlx::query(
            "INSERT INTO admin_credentials (access_key_id, secret_sealed, description, created_date) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(&c.access_key_id)
        .bind(&c.secret_sealed)
        .bind(&c.description)
        .bind(c.created_date)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_admin_credential(&self, access_key_id: &str) -> Result<Option<AdminCredential>> {
        let row = sqlx::query(
            "SELECT access_key_id, secret_sealed, description, created_date, revoked_date \
             FROM admin_credentials WHERE access_key_id = ?",
        )
        .bind(access_key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(row.as_ref().map(credential_from_row))
    }

    async fn list_admin_credentials(&self) -> Result<Vec<AdminCredential>> {
        let rows = sqlx::query(
            "SELECT access_key_id, secret_sealed, description, created_date, revoked_date \
             FROM admin_credentials ORDER BY created_date, access_key_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows.iter().map(credential_from_row).collect())
    }

    async fn revoke_admin_credential(&self, access_key_id: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE admin_credentials SET revoked_date = COALESCE(revoked_date, ?) \
             WHERE access_key_id = ?",
        )
        .bind(now())
        .bind(access_key_id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("admin credential {access_key_id} not found")));
        }
        Ok(())
    }

    async fn create_admin_token(&self, t: AdminToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO admin_tokens (id, digest, prefix, description, created_date) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.digest)
        .bind(&t.prefix)
        .bind(&t.description)
        .bind(t.created_date)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn find_admin_token(&self, digest: &[u8]) -> Result<Option<AdminToken>> {
        let row = sqlx::query(
            "SELECT id, digest, prefix, description, created_date, revoked_date FROM admin_tokens \
             WHERE digest = ?",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(row.as_ref().map(token_from_row))
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>> {
        let rows = sqlx::query(
            "SELECT id, digest, prefix, description, created_date, revoked_date FROM admin_tokens \
             ORDER BY created_date, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows.iter().map(token_from_row).collect())
    }

    async fn revoke_admin_token(&self, id: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE admin_tokens SET revoked_date = COALESCE(revoked_date, ?) WHERE id = ?",
        )
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("admin token {id} not found")));
        }
        Ok(())
    }

    async fn append_audit(&self, e: AuditEntry) -> Result<()> {
        let time_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        sqlx::query(
            "INSERT INTO audit_log (time_ms, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(time_ms)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.detail)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_audit(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT seq, time_ms, actor, action, target, detail FROM audit_log WHERE seq > ? \
             ORDER BY seq LIMIT ?",
        )
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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

    async fn version(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT version FROM meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn snapshot(&self) -> Result<GatewaySnapshot> {
        // One read transaction so version, stages and keys agree with each other.
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        let rows = sqlx::query(
            "SELECT s.api_id, s.name, s.deployment_id, d.definition FROM stages s \
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
            });
        }
        let keys = load_keys(&mut tx).await?;
        let rows = sqlx::query(
            "SELECT id, name, description, throttle, quota FROM usage_plans ORDER BY id",
        )
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
            .map(|r| UsageGrant {
                plan_id: r.get("plan_id"),
                key_id: r.get("key_id"),
                period_start: r.get("period_start"),
                extra: r.get("extra"),
            })
            .collect();
        tx.commit().await.map_err(map_err)?;
        Ok(GatewaySnapshot { version, stages, keys, plans, grants })
    }
}

/// Every accepted key value, packed (see [`KeySet`]).
///
/// Two plain table scans merged in memory: SQLite reads each table in storage order in ~0.1 s per
/// million rows, while joining keys to their plans (or ordering either table by key id) seeks an
/// index per key and took seconds. Rows come in chunks that SQLite concatenates into one text
/// value each ([`scan_chunks`]): sqlx's cost per row (a channel hop from its worker thread and a
/// row allocation) was most of the load time. No per-key allocation: the merge goes through a
/// map of ids borrowed from the key set and a list of (record, plan number) pairs.
async fn load_keys(conn: &mut SqliteConnection) -> Result<KeySet> {
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

/// Rows of `table` per chunk in [`scan_chunks`].
const SCAN_CHUNK: i64 = 8192;

/// Reads every row of `table` (a rowid table) in storage order as the text `line_sql`, in chunks
/// of [`SCAN_CHUNK`] rows that SQLite joins with newlines, and calls `each` per line. The lines
/// must not contain newlines (ids, digests in hex and numbers do not). Within a chunk the lines
/// come in the order SQLite aggregates them (nothing depends on it): asking `group_concat` for
/// `ORDER BY r` made SQLite sort every chunk through a temporary b-tree, a third of the load of a
/// million keys.
async fn scan_chunks(
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
fn decode_digest(hex: &str) -> Option<KeyDigest> {
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
