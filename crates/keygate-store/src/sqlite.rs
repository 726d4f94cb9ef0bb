//! The embedded SQLite store: one file (`keygate.db`) in the data directory, WAL journal, foreign
//! keys on, schema from the embedded migrations in `migrations/sqlite`.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use keygate_types::KeyDigest;
use keygate_types::model::{
    Api, ApiKey, ApiKeyPatch, ApiStage, DeployedStage, Deployment, GatewaySnapshot, KeyGrant,
    NewApiKey, Stage, UsagePlan, new_id,
};
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
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::Unavailable(format!("cannot create data directory {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(DB_FILE);
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(unavailable)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot migrate {}: {e}", path.display())))?;
        Ok(Self { pool })
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        // BEGIN IMMEDIATE would be ideal; a plain BEGIN upgraded by the first write is fine with the
        // busy timeout, because every write transaction bumps `meta` first.
        self.pool.begin().await.map_err(map_err)
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable(e.to_string())
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
            Error::Unavailable(e.to_string())
        }
        _ => Error::Other(e.to_string()),
    }
}

async fn bump(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query("UPDATE meta SET version = version + 1 WHERE id = 1")
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

const KEY_COLUMNS: &str =
    "id, name, prefix, description, customer_id, enabled, created_date, last_updated_date";

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
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Other(format!("stored {what} is unreadable: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Other(e.to_string()))
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
         created_date, last_updated_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    Ok(ApiKey {
        id,
        name: key.name.clone(),
        description: key.description.clone(),
        enabled: key.enabled,
        customer_id: key.customer_id.clone(),
        created_date: t,
        last_updated_date: t,
        prefix: key.value.prefix(),
    })
}

async fn plan_by(conn: &mut SqliteConnection, column: &str, v: &str) -> Result<Option<UsagePlan>> {
    let sql = format!("SELECT id, name, description, limits FROM usage_plans WHERE {column} = ?");
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
        "SELECT api_id, stage FROM usage_plan_stages WHERE plan_id = ? ORDER BY api_id, stage",
    )
    .bind(&id)
    .fetch_all(conn)
    .await
    .map_err(map_err)?;
    let limits: Option<String> = row.get("limits");
    Ok(UsagePlan {
        name: row.get("name"),
        description: row.get("description"),
        api_stages: stages
            .iter()
            .map(|r| ApiStage { api_id: r.get("api_id"), stage: r.get("stage") })
            .collect(),
        limits: limits.as_deref().map(|s| parse_json(s, "usage plan limits")).transpose()?,
        id,
    })
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

        // Declared keys: created once, reused by every later deploy.
        let mut keys = Vec::with_capacity(req.keys.len());
        for k in &req.keys {
            match key_by(&mut tx, "name", &k.name).await? {
                Some(existing) => keys.push((existing, KeyStatus::Existing)),
                None => keys.push((insert_key(&mut tx, k).await?, KeyStatus::Created)),
            }
        }

        // The usage plan `<service>-<stage>`, its keys and its API stage.
        let limits = req.plan_limits.as_ref().map(to_json).transpose()?;
        let plan_id = match sqlx::query("SELECT id FROM usage_plans WHERE name = ?")
            .bind(&req.plan_name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
        {
            Some(r) => {
                let id: String = r.get("id");
                sqlx::query("UPDATE usage_plans SET limits = ? WHERE id = ?")
                    .bind(&limits)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                id
            }
            None => {
                let id = new_id(6);
                sqlx::query(
                    "INSERT INTO usage_plans (id, name, description, limits, created_date) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&id)
                .bind(&req.plan_name)
                .bind(format!("Usage plan for {} {} stage", def.service, def.stage))
                .bind(&limits)
                .bind(t)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                id
            }
        };
        for (k, _) in &keys {
            sqlx::query("INSERT OR IGNORE INTO usage_plan_keys (plan_id, key_id) VALUES (?, ?)")
                .bind(&plan_id)
                .bind(&k.id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        sqlx::query(
            "INSERT OR IGNORE INTO usage_plan_stages (plan_id, api_id, stage) VALUES (?, ?, ?)",
        )
        .bind(&plan_id)
        .bind(&api.id)
        .bind(&def.stage)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;

        // Keys still in the plan that the file no longer declares: reported, never deleted.
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id IN \
             (SELECT key_id FROM usage_plan_keys WHERE plan_id = ?) ORDER BY name"
        );
        let undeclared = sqlx::query(AssertSqlSafe(sql))
            .bind(&plan_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?
            .iter()
            .map(key_from_row)
            .filter(|k| !keys.iter().any(|(d, _)| d.id == k.id))
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

        let plan = plan_by(&mut tx, "id", &plan_id)
            .await?
            .ok_or_else(|| Error::Other("usage plan vanished during deployment".to_owned()))?;
        tx.commit().await.map_err(map_err)?;
        Ok(DeployOutcome { api, deployment, plan, keys, undeclared })
    }

    async fn list_apis(&self) -> Result<Vec<Api>> {
        let rows = sqlx::query("SELECT id, name, created_date FROM apis ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| Api {
                id: r.get("id"),
                name: r.get("name"),
                created_date: r.get("created_date"),
            })
            .collect())
    }

    async fn get_api_by_name(&self, name: &str) -> Result<Option<Api>> {
        let row = sqlx::query("SELECT id, name, created_date FROM apis WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(row.map(|r| Api {
            id: r.get("id"),
            name: r.get("name"),
            created_date: r.get("created_date"),
        }))
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

    async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>> {
        let row = sqlx::query(
            "SELECT id, api_id, created_date, definition FROM deployments WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.map(|r| {
            Ok(Deployment {
                id: r.get("id"),
                api_id: r.get("api_id"),
                created_date: r.get("created_date"),
                definition: parse_json(r.get("definition"), "deployment")?,
            })
        })
        .transpose()
    }

    async fn create_key(&self, key: NewApiKey, plan_ids: &[String]) -> Result<ApiKey> {
        let mut tx = self.begin().await?;
        bump(&mut tx).await?;
        let created = insert_key(&mut tx, &key).await?;
        for plan_id in plan_ids {
            if plan_by(&mut tx, "id", plan_id).await?.is_none() {
                return Err(Error::NotFound(format!("usage plan {plan_id} not found")));
            }
            sqlx::query("INSERT OR IGNORE INTO usage_plan_keys (plan_id, key_id) VALUES (?, ?)")
                .bind(plan_id)
                .bind(&created.id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(created)
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
        key.last_updated_date = now();
        let res = sqlx::query(
            "UPDATE api_keys SET name = ?, description = ?, enabled = ?, customer_id = ?, \
             last_updated_date = ? WHERE id = ?",
        )
        .bind(&key.name)
        .bind(&key.description)
        .bind(key.enabled as i64)
        .bind(&key.customer_id)
        .bind(key.last_updated_date)
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
        let rows =
            sqlx::query("SELECT id, name, description, limits FROM usage_plans ORDER BY name")
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
        let rows = sqlx::query(
            "SELECT k.id, k.digest, k.enabled, s.api_id, s.stage FROM api_keys k \
             LEFT JOIN usage_plan_keys pk ON pk.key_id = k.id \
             LEFT JOIN usage_plan_stages s ON s.plan_id = pk.plan_id ORDER BY k.id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut keys: Vec<KeyGrant> = Vec::new();
        for r in &rows {
            let id: String = r.get("id");
            if keys.last().is_none_or(|k| k.id != id) {
                let digest: Vec<u8> = r.get("digest");
                let digest = KeyDigest::from_slice(&digest)
                    .ok_or_else(|| Error::Other(format!("stored digest of key {id} is corrupt")))?;
                keys.push(KeyGrant {
                    id,
                    digest,
                    enabled: r.get::<i64, _>("enabled") != 0,
                    stages: Vec::new(),
                });
            }
            let api_id: Option<String> = r.get("api_id");
            let stage: Option<String> = r.get("stage");
            if let (Some(api_id), Some(stage), Some(k)) = (api_id, stage, keys.last_mut()) {
                k.stages.push(ApiStage { api_id, stage });
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(GatewaySnapshot { version, stages, keys })
    }
}
