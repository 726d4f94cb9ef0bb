//! SQLite storage for candidates (replacing the seed's DynamoDB table).
//!
//! The database file is shared by several function processes (one per
//! deployed function), so it runs in WAL mode with a 5 s busy timeout. The
//! table name comes from configuration and is validated and quoted before it
//! is spliced into SQL; all values are bound parameters.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use crate::config::{Config, TableName};

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Columns in the order the `SELECT`s return them.
const COLUMNS: &str = "id, fullname, email, experience, submitted_at, updated_at";

/// Process-wide state: the connection pool and the prepared SQL text for the
/// configured table. Built once per process (cold start) and shared by every
/// invocation.
#[derive(Debug)]
pub struct App {
    pool: SqlitePool,
    table: TableName,
    sql: Statements,
}

#[derive(Debug)]
struct Statements {
    insert: String,
    list: String,
    get: String,
}

/// Years of experience, kept as an integer when the client sent one so that
/// `3` round-trips as `3` rather than `3.0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Experience {
    /// A whole number of years.
    Whole(i64),
    /// A fractional number of years (always finite and non-negative).
    Fractional(f64),
}

/// A stored candidate, serialised exactly as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// UUID v4 assigned on submission.
    pub id: String,
    /// Full name as submitted (surrounding whitespace trimmed).
    pub fullname: String,
    /// Email as submitted (surrounding whitespace trimmed).
    pub email: String,
    /// Years of experience.
    pub experience: Experience,
    /// Submission time, milliseconds since the Unix epoch (like the seed's
    /// `new Date().getTime()`).
    pub submitted_at: i64,
    /// Last update time, milliseconds since the Unix epoch.
    pub updated_at: i64,
}

impl App {
    /// Opens (creating if needed) the database at `config.db_path` and the
    /// table `config.table`.
    pub async fn connect(config: &Config) -> Result<Self, sqlx::Error> {
        Self::open(&config.db_path, config.table.clone()).await
    }

    /// Opens (creating if needed) the database file at `path`, its parent
    /// directories, and the table `table`.
    pub async fn open(path: &Path, table: TableName) -> Result<Self, sqlx::Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        // A function process handles one invocation at a time, so a single
        // connection is enough; `connect_with` opens it eagerly, which makes a
        // bad path fail the cold start instead of the first request.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;

        let quoted = table.quoted();
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {quoted} (
                id TEXT PRIMARY KEY NOT NULL,
                fullname TEXT NOT NULL,
                email TEXT NOT NULL,
                experience NUMERIC NOT NULL,
                submitted_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            )"
        );
        sqlx::query(AssertSqlSafe(create)).execute(&pool).await?;

        let sql = Statements {
            insert: format!("INSERT INTO {quoted} ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            list: format!("SELECT {COLUMNS} FROM {quoted} ORDER BY submitted_at, rowid"),
            get: format!("SELECT {COLUMNS} FROM {quoted} WHERE id = ?1"),
        };
        Ok(Self { pool, table, sql })
    }

    /// The table this process reads and writes.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Stores a new candidate with a fresh id and timestamps and returns it.
    pub(crate) async fn insert(
        &self,
        fullname: String,
        email: String,
        experience: Experience,
    ) -> Result<Candidate, sqlx::Error> {
        let now = now_millis();
        let candidate = Candidate {
            id: uuid::Uuid::new_v4().to_string(),
            fullname,
            email,
            experience,
            submitted_at: now,
            updated_at: now,
        };
        let query = sqlx::query(AssertSqlSafe(self.sql.insert.as_str()))
            .bind(&candidate.id)
            .bind(&candidate.fullname)
            .bind(&candidate.email);
        let query = match candidate.experience {
            Experience::Whole(n) => query.bind(n),
            Experience::Fractional(x) => query.bind(x),
        };
        query.bind(candidate.submitted_at).bind(candidate.updated_at).execute(&self.pool).await?;
        Ok(candidate)
    }

    /// All candidates, oldest submission first.
    pub(crate) async fn list(&self) -> Result<Vec<Candidate>, sqlx::Error> {
        let rows = sqlx::query(AssertSqlSafe(self.sql.list.as_str())).fetch_all(&self.pool).await?;
        rows.iter().map(candidate_from_row).collect()
    }

    /// The candidate with `id`, if any.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<Candidate>, sqlx::Error> {
        let row = sqlx::query(AssertSqlSafe(self.sql.get.as_str()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(candidate_from_row).transpose()
    }
}

fn candidate_from_row(row: &SqliteRow) -> Result<Candidate, sqlx::Error> {
    // NUMERIC affinity keeps whole numbers as INTEGER and others as REAL;
    // sqlx checks the stored value's type, so try the integer first.
    let experience = match row.try_get::<i64, _>("experience") {
        Ok(n) => Experience::Whole(n),
        Err(_) => Experience::Fractional(row.try_get::<f64, _>("experience")?),
    };
    Ok(Candidate {
        id: row.try_get("id")?,
        fullname: row.try_get("fullname")?,
        email: row.try_get("email")?,
        experience,
        submitted_at: row.try_get("submitted_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn now_millis() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
