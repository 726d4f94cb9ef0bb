//! Process configuration read from the function's environment:
//! `CANDIDATE_DB` (SQLite file path; default `candidates.db` in keygate's
//! state directory for the service and stage, `KEYGATE_STATE_DIR`) and
//! `CANDIDATE_TABLE` (table name).

use std::fmt;
use std::path::PathBuf;

/// Environment variable holding the SQLite database path. A relative path is
/// resolved against the process working directory (keygate starts function
/// processes in the directory that holds `serverless.yml`).
pub const DB_ENV: &str = "CANDIDATE_DB";

/// The directory keygate gives the functions of one service and stage, kept
/// across restarts and private to them: where the database goes by default,
/// so that two keygate data directories (two checkouts) never share it and
/// removing one resets it.
pub(crate) const STATE_DIR_ENV: &str = "KEYGATE_STATE_DIR";

/// The database's file name in [`STATE_DIR_ENV`].
pub(crate) const DEFAULT_DB_FILE: &str = "candidates.db";

/// Environment variable holding the table name, e.g. `candidate-dev`.
pub const TABLE_ENV: &str = "CANDIDATE_TABLE";

/// Everything a function process needs to open its storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Path of the SQLite database file (created with its parent directories
    /// if missing).
    pub db_path: PathBuf,
    /// Validated table name.
    pub table: TableName,
}

impl Config {
    /// Reads `CANDIDATE_DB` (else `KEYGATE_STATE_DIR`) and `CANDIDATE_TABLE` from
    /// the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Same as [`Config::from_env`] but with an explicit variable lookup, so
    /// tests never have to mutate the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |name| lookup(name).filter(|v: &String| !v.trim().is_empty());
        let db = match (set(DB_ENV), set(STATE_DIR_ENV)) {
            (Some(db), _) => PathBuf::from(db),
            (None, Some(dir)) => PathBuf::from(dir).join(DEFAULT_DB_FILE),
            (None, None) => return Err(ConfigError::Missing(DB_ENV)),
        };
        let table =
            lookup(TABLE_ENV).filter(|v| !v.is_empty()).ok_or(ConfigError::Missing(TABLE_ENV))?;
        let table = TableName::new(&table).map_err(ConfigError::Table)?;
        Ok(Self { db_path: db, table })
    }
}

/// Why [`Config`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    Missing(&'static str),
    /// `CANDIDATE_TABLE` is not a valid table name.
    Table(TableNameError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(DB_ENV) => write!(
                f,
                "environment variable {DB_ENV} is not set, and neither is {STATE_DIR_ENV} \
                 (keygate sets it): set {DB_ENV} to the SQLite file to use"
            ),
            Self::Missing(var) => write!(f, "environment variable {var} is not set"),
            Self::Table(err) => write!(f, "{TABLE_ENV}: {err}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A table name matching `[A-Za-z0-9_-]{1,128}`, safe to splice into SQL
/// once double-quoted (see [`TableName::quoted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

/// Longest accepted table name (DynamoDB's limit was 255; keep it modest).
const MAX_TABLE_NAME: usize = 128;

impl TableName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, TableNameError> {
        if name.is_empty() {
            return Err(TableNameError::Empty);
        }
        if name.len() > MAX_TABLE_NAME {
            return Err(TableNameError::TooLong);
        }
        if let Some(c) =
            name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(TableNameError::InvalidChar(c));
        }
        Ok(Self(name.to_owned()))
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a double-quoted SQL identifier. Validation guarantees it
    /// contains no quote characters, so no escaping is needed.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a table name was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableNameError {
    /// The name is empty.
    Empty,
    /// The name is longer than 128 bytes.
    TooLong,
    /// The name contains a character outside `[A-Za-z0-9_-]`.
    InvalidChar(char),
}

impl fmt::Display for TableNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("table name is empty"),
            Self::TooLong => write!(f, "table name is longer than {MAX_TABLE_NAME} characters"),
            Self::InvalidChar(c) => {
                write!(f, "table name contains {c:?}; only [A-Za-z0-9_-] is allowed")
            }
        }
    }
}

impl std::error::Error for TableNameError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated() {
        assert_eq!(TableName::new("candidate-dev").unwrap().quoted(), "\"candidate-dev\"");
        assert_eq!(TableName::new("A_b-9").unwrap().as_str(), "A_b-9");
        assert_eq!(TableName::new(""), Err(TableNameError::Empty));
        assert_eq!(TableName::new("x\"; DROP"), Err(TableNameError::InvalidChar('"')));
        assert_eq!(TableName::new("a b"), Err(TableNameError::InvalidChar(' ')));
        assert_eq!(TableName::new(&"a".repeat(129)), Err(TableNameError::TooLong));
    }

    #[test]
    fn config_requires_both_variables() {
        let vars = |db: Option<&str>, table: Option<&str>| {
            let (db, table) = (db.map(str::to_owned), table.map(str::to_owned));
            Config::from_lookup(move |name| match name {
                DB_ENV => db.clone(),
                TABLE_ENV => table.clone(),
                _ => None,
            })
        };
        // Without CANDIDATE_DB, keygate's state directory holds the database.
        let state = Config::from_lookup(|name| match name {
            DB_ENV => Some(String::new()),
            STATE_DIR_ENV => Some("/data/state/candidate-service/dev".to_owned()),
            TABLE_ENV => Some("candidate-dev".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(state.db_path, PathBuf::from("/data/state/candidate-service/dev/candidates.db"));
        let ok = vars(Some(".keygate/c.db"), Some("candidate-dev")).unwrap();
        assert_eq!(ok.db_path, PathBuf::from(".keygate/c.db"));
        assert_eq!(ok.table.as_str(), "candidate-dev");
        assert_eq!(vars(None, Some("t")), Err(ConfigError::Missing(DB_ENV)));
        assert_eq!(vars(Some(" "), Some("t")), Err(ConfigError::Missing(DB_ENV)));
        assert_eq!(vars(Some("x.db"), None), Err(ConfigError::Missing(TABLE_ENV)));
        let err = vars(Some("x.db"), Some("bad name")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CANDIDATE_TABLE: table name contains ' '; only [A-Za-z0-9_-] is allowed"
        );
    }
}
