//! Control-plane operations: deploying a service definition and managing API keys.
//!
//! The one door for changes: the CLI, the admin API (and later the console) call these and
//! nothing else, so every rule about keys, plans and deployments lives once, here. Operations take
//! validated input (`keygate-types`) and a [`Store`]; they never parse YAML or speak HTTP.
//!
//! [`Store`] is the only store handle those callers get: it reads, and it changes the store only
//! through [`Store::apply`] (this crate's), which names the actor, so the store records every
//! change in the audit log in the change's own transaction (see `keygate_store::Change`).
//!
//! Layout: [`deploy`] turns a `ServiceDefinition` into a deployment; [`keys`], [`plans`],
//! [`usage`], [`admin`] manage keys, usage plans, grants and admin credentials; [`import`] reads
//! key CSVs; [`info`] and [`remove`] report and remove deployed stages.

use std::sync::Arc;

use keygate_store::{Applied, Change, Page};
pub use keygate_store::{ConfigStore, Reads};

pub mod admin;
pub mod apis;
pub mod deploy;
pub mod enforcement;
pub mod import;
pub mod info;
pub mod keys;
pub mod plans;
pub mod remove;
mod rules;
pub mod usage;
pub mod whatif;

pub use deploy::{DeployReport, deploy};

/// Errors of control-plane operations. Messages never contain a key value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input that cannot be accepted; the message says what and how to fix it.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(keygate_store::Error),
}

impl From<keygate_store::Error> for Error {
    fn from(e: keygate_store::Error) -> Self {
        match e {
            keygate_store::Error::NotFound(m) => Self::NotFound(m),
            keygate_store::Error::Conflict(m) => Self::Conflict(m),
            other => Self::Store(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `apply_checked!(store, { checks...; change })`: reads the store's version, runs the block
/// (which checks the change's rules against the store with `?` and ends with the [`Change`]),
/// and applies the change only if the store has not changed since the version was read; if it
/// has, runs the block again (five tries in all, then [`Error::Conflict`]). So two changes made
/// at once cannot each pass a check and together break a rule.
macro_rules! apply_checked {
    ($store:expr, $check:block) => {{
        let mut tries = 0;
        loop {
            let version = $store.version().await?;
            let change = $check;
            match $store.apply_at(change, version).await? {
                Some(applied) => break applied,
                None if tries < 4 => tries += 1,
                None => {
                    return Err($crate::Error::Conflict(
                        "the store kept changing while the change was checked; nothing was made, \
                         try again"
                            .to_owned(),
                    ));
                }
            }
        }
    }};
}
pub(crate) use apply_checked;

/// The store handle every operation takes: reads (it dereferences to [`Reads`]) and, inside this
/// crate only, changes made as its actor and audited by the store.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn ConfigStore>,
    actor: Arc<str>,
}

impl Store {
    /// A handle on `backend` whose changes are recorded as `actor` (e.g. `cli:alice`,
    /// `sigv4:AKKG...`, `token:abc123`).
    pub fn new(backend: Arc<dyn ConfigStore>, actor: impl Into<String>) -> Self {
        Self { backend, actor: Arc::from(actor.into()) }
    }

    /// The same store, acting as `actor` (the admin API: one per request).
    pub fn acting_as(&self, actor: impl Into<String>) -> Self {
        Self::new(Arc::clone(&self.backend), actor)
    }

    /// Who this handle's changes are recorded as.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// Makes a change, recorded in the audit log as this handle's actor.
    pub(crate) async fn apply(&self, change: Change) -> Result<Applied> {
        Ok(self.backend.apply(&self.actor, change).await?)
    }

    /// Applies `change`, checked against the store at `version` ([`rules`]), only if the store
    /// is still at that version; `None` (nothing made) if it has moved: check again. Used through
    /// [`apply_checked!`].
    pub(crate) async fn apply_at(&self, change: Change, version: i64) -> Result<Option<Applied>> {
        match self.backend.apply_at(&self.actor, change, version).await {
            Err(keygate_store::Error::Stale) => Ok(None),
            applied => Ok(Some(applied?)),
        }
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Reads;

    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("actor", &self.actor).finish_non_exhaustive()
    }
}

/// The store's own error, for callers that map it (the admin API's AWS errors).
pub use keygate_store::Error as StoreError;

/// Opens the embedded store in `data_dir` (created if needed). The handle it returns is the
/// backend itself: give it to the gateway, and wrap it in a [`Store`] for everything else.
///
/// # Errors
/// [`StoreError::Unavailable`] when the directory or database cannot be opened.
pub async fn open(data_dir: &std::path::Path) -> Result<Arc<dyn ConfigStore>, StoreError> {
    // The path as it is (a URL would need it as text): the same store `sqlite:<data_dir>` opens.
    Ok(Arc::new(keygate_store::SqliteStore::open(data_dir).await?))
}

/// Opens the store `url` names (`postgres://...`, or `sqlite:<data directory>`) and applies
/// pending migrations: see [`keygate_store::open`].
///
/// # Errors
/// [`StoreError::Unavailable`] for an unknown scheme, an unreachable database, or one migrated
/// by a newer keygate.
pub async fn open_url(url: &str) -> Result<Arc<dyn ConfigStore>, StoreError> {
    keygate_store::open(url).await
}

/// `url` without its password, for messages.
pub fn redact_url(url: &str) -> String {
    keygate_store::redact_url(url)
}

/// Whether `data_dir` holds keygate's database (without creating anything).
pub fn has_store(data_dir: &std::path::Path) -> bool {
    data_dir.join(keygate_store::sqlite::DB_FILE).is_file()
}

/// Most items one page may hold (AWS's limit for its list calls).
pub const MAX_PAGE: u32 = 500;

/// What a list call asks for: at most `limit` items after the position the previous page
/// returned, with names starting with `name`.
#[derive(Debug, Clone)]
pub struct ListQuery {
    limit: u32,
    /// The last name of the previous page (a position decoded).
    after: Option<String>,
    name: Option<String>,
}

impl ListQuery {
    /// Checks a list call's parameters: `limit` from 1 to [`MAX_PAGE`], `position` as a previous
    /// page returned it.
    ///
    /// # Errors
    /// [`Error::Invalid`] saying which is wrong.
    pub fn new(limit: u32, position: Option<&str>, name: Option<String>) -> Result<Self> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::Invalid(format!("limit must be a number from 1 to {MAX_PAGE}")));
        }
        let after = position
            .map(|p| {
                hex::decode(p).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| {
                    Error::Invalid(
                        "invalid position: pass the position the previous page returned".to_owned(),
                    )
                })
            })
            .transpose()?;
        Ok(Self { limit, after, name })
    }

    /// The first `limit` items (at most [`MAX_PAGE`]).
    pub fn first(limit: u32) -> Self {
        Self { limit: limit.clamp(1, MAX_PAGE), after: None, name: None }
    }

    /// The page after `listed`, or `None` when `listed` was the last.
    pub fn next<T>(&self, listed: &Listed<T>) -> Option<Self> {
        let after = Some(listed.last.clone()?);
        Some(Self { limit: self.limit, after, name: self.name.clone() })
    }

    /// The store's page: one item more than asked, to know whether another page follows.
    fn page(&self) -> Page<'_> {
        Page { after: self.after.as_deref(), prefix: self.name.as_deref(), limit: self.limit + 1 }
    }
}

/// One page of a list, and where the next one starts.
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    /// The last name of this page when another page follows: where the store seeks next.
    last: Option<String>,
}

impl<T> Listed<T> {
    /// `items` as the store gave them for `query.page()`, cut to the page.
    fn cut(query: &ListQuery, mut items: Vec<T>, name_of: fn(&T) -> &str) -> Self {
        let last = if items.len() > query.limit as usize {
            items.truncate(query.limit as usize);
            items.last().map(|last| name_of(last).to_owned())
        } else {
            None
        };
        Self { items, last }
    }

    /// Where the next page starts, as callers pass it back (`None`: this is the last page):
    /// opaque and safe in a URL, the hex of this page's last name.
    pub fn position(&self) -> Option<String> {
        self.last.as_deref().map(hex::encode)
    }
}

/// Every item from `query` on, page by page (each page one seek of the store): what `fetch`
/// lists, for a caller that wants the whole list.
///
/// # Errors
/// The first error `fetch` returns.
pub async fn every_page<T, Fut>(
    mut query: ListQuery,
    mut fetch: impl FnMut(ListQuery) -> Fut,
) -> Result<Vec<T>>
where
    Fut: std::future::Future<Output = Result<Listed<T>>>,
{
    let mut all = Vec::new();
    loop {
        let page = fetch(query.clone()).await?;
        let next = query.next(&page);
        all.extend(page.items);
        match next {
            Some(next) => query = next,
            None => return Ok(all),
        }
    }
}
