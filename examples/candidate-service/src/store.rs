//! SQLite storage for candidates (replacing the seed's DynamoDB table).
//!
//! The database file is shared by several function processes (one per
//! deployed function), so it runs in WAL mode with a 5 s busy timeout. The
//! table name comes from configuration and is validated and quoted before it
//! is spliced into SQL; all values are bound parameters.

use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};
use serde::Serialize;

use crate::config::{Config, TableName};

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Columns in the order the `SELECT`s return them (see [`candidate_from_row`]).
const COLUMNS: &str = "id, fullname, email, experience, submitted_at, updated_at";

/// Process-wide state: the database connection and the SQL text for the
/// configured table. Built once per process (cold start) and shared by every
/// invocation.
///
/// Queries run synchronously on the calling thread, a current-thread runtime:
/// a classic Lambda process handles one event at a time, and a Lambda Managed
/// Instances one interleaves its events on that thread, so a quick blocking
/// SQLite call holds up little, while handing each query to a worker thread
/// (as an async driver does) costs thread wakeups on every invocation. The
/// `Mutex` is there because `lambda_http::run_concurrent` needs a `Send`
/// handler future, hence a `Sync` `App`; it is never held across an `.await`,
/// so on one thread it is never contended.
#[derive(Debug)]
pub struct App {
    conn: Mutex<Connection>,
    table: TableName,
    sql: Statements,
}

/// SQL text per operation; the prepared statements live in the connection's
/// statement cache (`prepare_cached`), keyed by this text.
#[derive(Debug)]
struct Statements {
    insert: String,
    list: String,
    get: String,
}

/// Why [`App::open`] failed.
#[derive(Debug)]
pub enum OpenError {
    /// The database file's parent directory could not be created.
    CreateDir(std::io::Error),
    /// The database file could not be created.
    CreateFile(std::io::Error),
    /// SQLite could not open or set up the database.
    Sqlite(rusqlite::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateDir(err) => write!(f, "cannot create its directory: {err}"),
            Self::CreateFile(err) => write!(f, "cannot create it: {err}"),
            Self::Sqlite(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::CreateDir(err) | Self::CreateFile(err) => Some(err),
            Self::Sqlite(err) => Some(err),
        }
    }
}

impl From<rusqlite::Error> for OpenError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Sqlite(err)
    }
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

/// Creates the empty file `path` with mode 0660 (less the umask) unless it
/// exists.
fn create_group_writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o660).open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl App {
    /// Opens (creating if needed) the database at `config.db_path` and the
    /// table `config.table`.
    pub fn connect(config: &Config) -> Result<Self, OpenError> {
        Self::open(&config.db_path, config.table.clone())
    }

    /// Opens (creating if needed) the database file at `path`, its parent
    /// directories, and the table `table`.
    pub fn open(path: &Path, table: TableName) -> Result<Self, OpenError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(OpenError::CreateDir)?;
        }
        // The service's functions share the file, and keygate may run each as
        // a user of its own in one group (as root): the file is made group-
        // writable (SQLite makes it 0644), and its -wal and -shm files take
        // its mode.
        create_group_writable(path).map_err(OpenError::CreateFile)?;
        // One connection per process, opened now so that a bad path fails the
        // cold start instead of the first request. The busy timeout is set
        // before switching to WAL, which may have to wait for another process.
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;

        let quoted = table.quoted();
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {quoted} (
                id TEXT PRIMARY KEY NOT NULL,
                fullname TEXT NOT NULL,
                email TEXT NOT NULL,
                experience NUMERIC NOT NULL,
                submitted_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            )"
        ))?;

        let sql = Statements {
            insert: format!("INSERT INTO {quoted} ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            list: format!("SELECT {COLUMNS} FROM {quoted} ORDER BY submitted_at, rowid"),
            get: format!("SELECT {COLUMNS} FROM {quoted} WHERE id = ?1"),
        };
        Ok(Self { conn: Mutex::new(conn), table, sql })
    }

    /// The table this process reads and writes.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Stores a new candidate with a fresh id and timestamps and returns it.
    pub(crate) fn insert(
        &self,
        fullname: String,
        email: String,
        experience: Experience,
    ) -> rusqlite::Result<Candidate> {
        let now = now_millis();
        let candidate = Candidate {
            id: uuid::Uuid::new_v4().to_string(),
            fullname,
            email,
            experience,
            submitted_at: now,
            updated_at: now,
        };
        let experience: &dyn ToSql = match &candidate.experience {
            Experience::Whole(n) => n,
            Experience::Fractional(x) => x,
        };
        let conn = self.conn();
        conn.prepare_cached(&self.sql.insert)?.execute(params![
            candidate.id,
            candidate.fullname,
            candidate.email,
            experience,
            candidate.submitted_at,
            candidate.updated_at,
        ])?;
        Ok(candidate)
    }

    /// All candidates, oldest submission first.
    pub(crate) fn list(&self) -> rusqlite::Result<Vec<Candidate>> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(&self.sql.list)?;
        statement.query_map([], candidate_from_row)?.collect()
    }

    /// The candidate with `id`, if any.
    pub(crate) fn get(&self, id: &str) -> rusqlite::Result<Option<Candidate>> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(&self.sql.get)?;
        statement.query_row([id], candidate_from_row).optional()
    }

    /// The connection. A panic while it was held cannot leave it unusable
    /// (a cached statement is reset when dropped), so poisoning is ignored.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads a row of [`COLUMNS`].
fn candidate_from_row(row: &Row<'_>) -> rusqlite::Result<Candidate> {
    // NUMERIC affinity keeps whole numbers as INTEGER and others as REAL.
    let experience = match row.get_ref(3)? {
        ValueRef::Integer(n) => Experience::Whole(n),
        ValueRef::Real(x) => Experience::Fractional(x),
        other => {
            return Err(rusqlite::Error::InvalidColumnType(
                3,
                "experience".to_owned(),
                other.data_type(),
            ));
        }
    };
    Ok(Candidate {
        id: row.get(0)?,
        fullname: row.get(1)?,
        email: row.get(2)?,
        experience,
        submitted_at: row.get(4)?,
        updated_at: row.get(5)?,
    })
}

fn now_millis() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
