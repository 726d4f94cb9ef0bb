//! keygate storage.
//!
//! Layout:
//! - The read traits, one per concern: [`ServiceReads`] (APIs, stages, definitions,
//!   deployments), [`KeyReads`], [`PlanReads`] (plans, their stages, keys and grants),
//!   [`UsageReads`], [`AdminReads`] (credentials, tokens, the audit log) and [`SnapshotReads`]
//!   (what gateways serve from and its version). [`Reads`] is all of them.
//! - [`UsageCounters`]: the data plane's counters (`add_usage`, `fold_usage`): data, not changes.
//! - [`ConfigStore`]: [`Reads`], [`UsageCounters`] and the one door for changes. Every change is
//!   one [`Change`] value, applied by [`ConfigStore::apply`] together with its audit-log entry in
//!   one transaction: a change that cannot be recorded is not made, and no write can skip the
//!   record (audited by construction). The rules a change must keep (one plan per stage, patch
//!   merging, deploy planning) live above the store, in keygate-control: a backend stores.
//! - [`prelude`]: the traits, for calling their methods on a `dyn ConfigStore`.
//! - [`sqlite`]: the embedded default implementation (one file in the data directory), one file
//!   per concern.
//! - [`postgres`]: the same for several gateway nodes sharing one PostgreSQL database.
//! - [`private`]: the modes of the data directory (`0711`) and its private files (`0600`).
//!
//! Only `keygate-types` values cross this boundary; no sqlx type appears in the trait, so a
//! PostgreSQL implementation can follow without changing callers. Each backend maps its errors
//! into the small [`Error`] enum (a unique violation becomes [`Error::Conflict`]).

use async_trait::async_trait;
use keygate_types::model::{
    AdminCredential, AdminToken, Api, ApiKey, ApiKeyPatch, ApiStage, AuditEntry, DailyUsage,
    Deployment, GatewaySnapshot, NewApiKey, NewUsagePlan, OldValue, OldValueUse, Stage, UsageGrant,
    UsagePlan, UsagePlanPatch, WouldRefuse,
};
use keygate_types::{ApiKeyValue, KeyDigest, ServiceDefinition};

/// The trait impls of a backend whose module has the same per-concern files (`apis`, `keys`,
/// `plans`, `usage`, `admin`, `snapshot`, each function taking `&self.pool`, the usage
/// counters' writes `self.usage_pool()`) and an `apply_inner`: every method forwards to them, so each backend states only its storage.
/// `$extra` are further [`SnapshotReads`] methods (a backend's own `change_signal`).
macro_rules! backend_impls {
    ($store:ty { $($extra:item)* }) => {
        #[async_trait::async_trait]
        impl $crate::ServiceReads for $store {
            async fn list_apis(&self) -> Result<Vec<Api>> {
                apis::list_apis(&self.pool).await
            }

            async fn get_api_by_name(&self, name: &str) -> Result<Option<Api>> {
                apis::get_api_by_name(&self.pool, name).await
            }

            async fn list_stages(&self, api_id: &str) -> Result<Vec<Stage>> {
                apis::list_stages(&self.pool, api_id).await
            }

            async fn get_api(&self, id: &str) -> Result<Option<Api>> {
                apis::get_api(&self.pool, id).await
            }

            async fn get_api_definition(&self, api_id: &str) -> Result<Option<ServiceDefinition>> {
                apis::get_api_definition(&self.pool, api_id).await
            }

            async fn list_deployments(&self, api_id: &str) -> Result<Vec<Deployment>> {
                apis::list_deployments(&self.pool, api_id).await
            }

            async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>> {
                apis::get_deployment(&self.pool, id).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::KeyReads for $store {
            async fn key_digest_exists(&self, digest: &KeyDigest) -> Result<bool> {
                keys::key_digest_exists(&self.pool, digest).await
            }

            async fn existing_key_digests(
                &self,
                digests: &[KeyDigest],
            ) -> Result<std::collections::HashSet<KeyDigest>> {
                keys::existing_key_digests(&self.pool, digests).await
            }

            async fn existing_key_names(
                &self,
                names: &[&str],
            ) -> Result<std::collections::HashSet<String>> {
                keys::existing_key_names(&self.pool, names).await
            }

            async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
                keys::get_key(&self.pool, id).await
            }

            async fn get_key_by_name(&self, name: &str) -> Result<Option<ApiKey>> {
                keys::get_key_by_name(&self.pool, name).await
            }

            async fn list_keys(&self, page: Page<'_>, customer_id: Option<&str>) -> Result<Vec<ApiKey>> {
                keys::list_keys(&self.pool, page, customer_id).await
            }

            async fn old_values(&self, key_id: &str, now: i64) -> Result<Vec<OldValue>> {
                rotation::old_values(&self.pool, key_id, now).await
            }

            async fn idle_old_values(&self, now: i64) -> Result<u64> {
                rotation::idle_old_values(&self.pool, now).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::PlanReads for $store {
            async fn get_plan(&self, id: &str) -> Result<Option<UsagePlan>> {
                plans::get_plan(&self.pool, id).await
            }

            async fn get_plan_by_name(&self, name: &str) -> Result<Option<UsagePlan>> {
                plans::get_plan_by_name(&self.pool, name).await
            }

            async fn list_plans(&self, page: Page<'_>) -> Result<Vec<UsagePlan>> {
                plans::list_plans(&self.pool, page).await
            }

            async fn list_plan_keys(&self, plan_id: &str, page: Page<'_>) -> Result<Vec<ApiKey>> {
                plans::list_plan_keys(&self.pool, plan_id, page).await
            }

            async fn key_plan_ids(&self, key_id: &str) -> Result<Vec<String>> {
                plans::key_plan_ids(&self.pool, key_id).await
            }

            async fn plans_covering(&self, api_id: &str, stage: &str) -> Result<Vec<UsagePlan>> {
                plans::plans_covering(&self.pool, api_id, stage).await
            }

            async fn shared_key(&self, plan_a: &str, plan_b: &str) -> Result<Option<String>> {
                plans::shared_key(&self.pool, plan_a, plan_b).await
            }

            async fn usage_grants(&self, plan_id: &str) -> Result<Vec<UsageGrant>> {
                usage::usage_grants(&self.pool, plan_id).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::UsageReads for $store {
            async fn usage(
                &self,
                plan_id: Option<&str>,
                key_id: Option<&str>,
                from: keygate_types::date::Date,
                to: keygate_types::date::Date,
            ) -> Result<Vec<DailyUsage>> {
                usage::usage(&self.pool, plan_id, key_id, from, to).await
            }

            async fn would_refuse(&self, stage: Option<&str>, since: i64) -> Result<Vec<WouldRefuse>> {
                refusals::would_refuse(&self.pool, stage, since).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::AdminReads for $store {
            async fn get_admin_credential(&self, access_key_id: &str) -> Result<Option<AdminCredential>> {
                admin::get_admin_credential(&self.pool, access_key_id).await
            }

            async fn list_admin_credentials(&self) -> Result<Vec<AdminCredential>> {
                admin::list_admin_credentials(&self.pool).await
            }

            async fn find_admin_token(&self, digest: &[u8]) -> Result<Option<AdminToken>> {
                admin::find_admin_token(&self.pool, digest).await
            }

            async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>> {
                admin::list_admin_tokens(&self.pool).await
            }

            async fn list_audit(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>> {
                admin::list_audit(&self.pool, after_seq, limit).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::SnapshotReads for $store {
            async fn version(&self) -> Result<i64> {
                snapshot::version(&self.pool).await
            }

            async fn snapshot(&self) -> Result<GatewaySnapshot> {
                snapshot::snapshot(&self.pool).await
            }

            $($extra)*
        }

        #[async_trait::async_trait]
        impl $crate::UsageCounters for $store {
            async fn add_usage(&self, usage: &[DailyUsage]) -> Result<()> {
                usage::add_usage(self.usage_pool(), usage).await
            }

            async fn fold_usage(&self) -> Result<u64> {
                usage::fold_usage(self.usage_pool()).await
            }

            async fn add_would_refuse(&self, rows: &[WouldRefuse]) -> Result<()> {
                refusals::add_would_refuse(self.usage_pool(), rows).await
            }

            async fn add_old_value_uses(&self, uses: &[OldValueUse]) -> Result<()> {
                rotation::add_old_value_uses(self.usage_pool(), uses).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::ConfigStore for $store {
            async fn apply(&self, actor: &str, change: Change) -> Result<Applied> {
                self.apply_inner(actor, change, None).await
            }

            async fn apply_at(&self, actor: &str, change: Change, version: i64) -> Result<Applied> {
                self.apply_inner(actor, change, Some(version)).await
            }
        }
    };
}

pub mod postgres;
pub mod private;
mod rows;
pub mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The backend's own error under a store error, kept so callers can show the whole chain.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Store errors: small and backend-neutral. Messages never contain a key value. The backend's
/// error (an IO or database error) is kept as the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// [`ConfigStore::apply_at`]: the store changed since the version the change was checked
    /// at; nothing was made (check again and retry).
    #[error("the store changed while the change was checked; nothing was made")]
    Stale,
    /// The store cannot be reached (directory, file, connection pool, IO); `context` says what
    /// was being done.
    #[error("the store is unavailable: {context}")]
    Unavailable { context: String, source: Source },
    /// Anything else: a failed query, a corrupt record.
    #[error("store error: {context}")]
    Other { context: String, source: Option<Source> },
}

impl Error {
    /// [`Error::Unavailable`] while doing `context`, caused by `source`.
    pub fn unavailable(context: impl Into<String>, source: impl Into<Source>) -> Self {
        Self::Unavailable { context: context.into(), source: source.into() }
    }

    /// [`Error::Other`] while doing `context`, caused by `source`.
    pub fn other(context: impl Into<String>, source: impl Into<Source>) -> Self {
        Self::Other { context: context.into(), source: Some(source.into()) }
    }

    /// [`Error::Other`] with no underlying error (e.g. a corrupt record).
    pub fn corrupt(context: impl Into<String>) -> Self {
        Self::Other { context: context.into(), source: None }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `url` without its password (`postgres://user:***@host/db`), for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Whether `sql` has a `WHERE` of its own, outside the parentheses of its subqueries: where a
/// paged list adds its conditions with `AND` instead of `WHERE`.
pub(crate) fn filters(sql: &str) -> bool {
    let mut depth = 0usize;
    sql.char_indices().any(|(i, c)| {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        depth == 0 && sql[i..].starts_with(" WHERE ")
    })
}

/// A failed migration of the database `db`, in words: a database migrated by a newer keygate
/// (a migration this one does not know) is refused, and says so.
pub(crate) fn migrate_error(db: &str, e: sqlx::migrate::MigrateError) -> Error {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => Error::unavailable(
            format!("cannot use {db}"),
            format!(
                "the database was migrated by a newer keygate (its migration {v} is unknown to \
                 this one); run a keygate at least as new as the one that migrated it"
            ),
        ),
        e => Error::unavailable(format!("cannot migrate {db}"), e),
    }
}

/// A stage's stored switch of its key checks (unknown text is a corrupt row: refused, never
/// served unlocked).
pub(crate) fn enforcement_from(text: Option<String>) -> Result<Option<keygate_types::Enforcement>> {
    text.map(|t| t.parse().map_err(|()| Error::corrupt("a stored stage's enforcement is corrupt")))
        .transpose()
}

/// A plan's `fallback` column as both backends store it: NULL, `local` or `refuse`.
pub(crate) fn fallback_from(v: Option<String>) -> Result<Option<keygate_types::plan::Fallback>> {
    v.map(|v| v.parse().map_err(|_| Error::corrupt(format!("plan fallback {v:?}")))).transpose()
}

/// Opens the store a URL names, choosing the backend by its scheme: `sqlite:<data directory>`
/// (also `sqlite://<data directory>`; the path is taken as it is written, not percent-decoded)
/// is the embedded store, created if needed; `postgres://` (or `postgresql://`) is a PostgreSQL
/// database ([`PgStore::open`]). Any other scheme is refused, naming the ones this build has,
/// so a mistyped URL never falls back to another store. Pending migrations are applied.
///
/// # Errors
/// [`Error::Unavailable`] for an unknown scheme or a store that cannot be opened.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn ConfigStore>> {
    let (scheme, rest) = url.split_once(':').unwrap_or(("", url));
    match scheme {
        "sqlite" => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(Error::unavailable(
                    "opening the store",
                    format!("{url:?} names no data directory (sqlite:<directory>)"),
                ));
            }
            Ok(std::sync::Arc::new(SqliteStore::open(std::path::Path::new(path)).await?))
        }
        "postgres" | "postgresql" => Ok(std::sync::Arc::new(PgStore::open(url).await?)),
        _ => Err(Error::unavailable(
            "opening the store",
            format!(
                "{:?}: unknown store; this keygate has sqlite:<data directory> and \
                 postgres://user@host/database",
                scheme
            ),
        )),
    }
}

/// Everything one `deploy` writes, applied in one transaction, as keygate-control planned it
/// from what the store holds (the diff is made there: which API, plans and keys exist, which of
/// the stage's plans a key leaves): the store writes it as told and decides nothing.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The validated definition (its key declarations carry no values: see `keys`).
    pub definition: ServiceDefinition,
    /// The API named by the service: `Some(id)` when it exists (its definition is replaced),
    /// `None` to create it.
    pub api_id: Option<String>,
    /// The plans of this API stage, each linked to it: `Some(id)` updates an existing plan in
    /// place (same id, so the usage counted so far is kept), `None` creates it.
    pub plans: Vec<(Option<String>, NewUsagePlan)>,
    /// The declared keys, in declaration order.
    pub keys: Vec<PlacedKey>,
}

/// A declared key as a deploy places it.
#[derive(Debug, Clone)]
pub struct PlacedKey {
    pub key: Placed,
    /// The plan it joins: an index into [`DeployRequest::plans`].
    pub plan: usize,
    /// Plans (ids) of the stage it leaves: a key moved to another of the stage's plans.
    pub leaves: Vec<String>,
}

/// An existing key, kept as it is, or a new one to create (with the declared custom value or a
/// freshly generated one).
#[derive(Debug, Clone)]
pub enum Placed {
    Existing(ApiKey),
    New(NewApiKey),
}

/// What a deployment did.
#[derive(Debug, Clone)]
pub struct DeployOutcome {
    pub api: Api,
    pub deployment: Deployment,
    pub plans: Vec<UsagePlan>,
    /// Declared keys, in declaration order, with whether this deploy created them and their plan.
    pub keys: Vec<(ApiKey, KeyStatus, String)>,
    /// Keys in the stage's plans that the definition no longer declares. Kept, not deleted.
    pub undeclared: Vec<ApiKey>,
}

/// Whether a declared key already existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Created,
    Existing,
}

/// Every change the store can make. [`ConfigStore::apply`] makes one and records it in the audit
/// log in the same transaction, under [`Change::action`] (AWS's operation names) and a target
/// naming what changed, never a key value or a secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Change {
    /// Writes a deploy as keygate-control planned it ([`DeployRequest`]): the API, the stage's
    /// plans and the declared keys as told, then snapshots the definition as a new deployment and
    /// points the stage at it. [`Applied::Deployed`].
    Deploy(DeployRequest),
    /// Deletes a stage (AWS DeleteStage): its routes stop being served, and usage plans no
    /// longer cover it. Its deployments stay, as history. [`Error::NotFound`] if there is none.
    DeleteStage {
        api_id: String,
        stage: String,
    },
    /// Replaces the API's current definition; deployed stages are unchanged until a deployment.
    PutApiDefinition {
        api_id: String,
        definition: ServiceDefinition,
    },
    /// Snapshots the API's current definition as a new deployment of `stage` (the definition's
    /// stage field is set to `stage`) and points the stage at it. [`Applied::Deployment`].
    CreateDeployment {
        api_id: String,
        stage: String,
    },
    /// Creates a key and adds it to the given usage plans (by id). [`Applied::Key`].
    CreateKey {
        key: NewApiKey,
        plan_ids: Vec<String>,
    },
    /// Creates several keys and their plan memberships: all or nothing. [`Applied::Keys`].
    ImportKeys(Vec<(NewApiKey, Vec<String>)>),
    /// Gives a key a new value. The old value keeps working for `grace_secs` (0: not at all),
    /// with the same plans and counters; values replaced earlier end then at the latest (with 0:
    /// now). [`Applied::Key`].
    RotateKey {
        id: String,
        value: ApiKeyValue,
        grace_secs: i64,
        /// `--retire-when-idle`: the replaced value is refused once unused this many seconds.
        retire_idle: Option<i64>,
    },
    /// Sets (or with `None` clears) an operator's switch of a deployed stage's key checks; the
    /// stage keeps it across deploys. [`Error::NotFound`] for a stage that is not deployed.
    SetStageEnforcement {
        api_id: String,
        stage: String,
        enforcement: Option<keygate_types::Enforcement>,
    },
    /// Ends now every rotated-out value with a `retire_idle` that has not been used for that
    /// long (its last use, else its rotation); gateways make it when
    /// [`KeyReads::idle_old_values`] finds some. [`Applied::Count`]: how many.
    RetireIdleOldValues {
        now: i64,
    },
    /// Ends every rotated-out value of a key now (its current value keeps working).
    /// [`Applied::Count`]: how many were still working.
    RevokeOldValues {
        id: String,
    },
    /// [`Applied::Key`].
    UpdateKey {
        id: String,
        patch: ApiKeyPatch,
    },
    DeleteKey {
        id: String,
    },
    /// Creates a plan with its API stages, in one transaction. [`Applied::Plan`].
    CreatePlan {
        plan: NewUsagePlan,
        stages: Vec<ApiStage>,
    },
    /// [`Applied::Plan`].
    UpdatePlan {
        id: String,
        patch: UsagePlanPatch,
    },
    /// Deletes a plan with its key and stage associations and its usage records.
    DeletePlan {
        id: String,
    },
    /// Adds a key to a plan (nothing if it is in it already). The one-plan-per-API-stage rule is
    /// keygate-control's to check.
    AddPlanKey {
        plan_id: String,
        key_id: String,
    },
    RemovePlanKey {
        plan_id: String,
        key_id: String,
    },
    /// Adds an API stage to a plan, or replaces its method throttles if it is there already.
    /// (The one-plan-per-API-stage rule is keygate-control's to check.)
    PutPlanStage {
        plan_id: String,
        stage: ApiStage,
    },
    RemovePlanStage {
        plan_id: String,
        api_id: String,
        stage: String,
    },
    /// Sets the extra quota of a key in a plan for one period (replacing an earlier grant).
    PutGrant(UsageGrant),
    CreateAdminCredential(AdminCredential),
    /// Marks a credential revoked (kept for the audit trail).
    RevokeAdminCredential {
        access_key_id: String,
    },
    CreateAdminToken(AdminToken),
    RevokeAdminToken {
        id: String,
    },
}

impl Change {
    /// The audit log's action: AWS's operation name where there is one.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Deploy(_) => "Deploy",
            Self::DeleteStage { .. } => "DeleteStage",
            Self::PutApiDefinition { .. } => "UpdateRestApiDefinition",
            Self::CreateDeployment { .. } => "CreateDeployment",
            Self::CreateKey { .. } => "CreateApiKey",
            Self::ImportKeys(_) => "ImportApiKeys",
            Self::RotateKey { .. } => "RotateApiKey",
            Self::RevokeOldValues { .. } => "RevokeOldApiKeyValues",
            Self::RetireIdleOldValues { .. } => "RetireIdleOldApiKeyValues",
            Self::SetStageEnforcement { .. } => "SetStageEnforcement",
            Self::UpdateKey { .. } => "UpdateApiKey",
            Self::DeleteKey { .. } => "DeleteApiKey",
            Self::CreatePlan { .. } => "CreateUsagePlan",
            Self::UpdatePlan { .. } => "UpdateUsagePlan",
            Self::DeletePlan { .. } => "DeleteUsagePlan",
            Self::AddPlanKey { .. } => "CreateUsagePlanKey",
            Self::RemovePlanKey { .. } => "DeleteUsagePlanKey",
            Self::PutPlanStage { .. } => "UpdateUsagePlan:addApiStage",
            Self::RemovePlanStage { .. } => "UpdateUsagePlan:removeApiStage",
            Self::PutGrant(_) => "UpdateUsage",
            Self::CreateAdminCredential(_) => "CreateAdminCredential",
            Self::RevokeAdminCredential { .. } => "RevokeAdminCredential",
            Self::CreateAdminToken(_) => "CreateAdminToken",
            Self::RevokeAdminToken { .. } => "RevokeAdminToken",
        }
    }

    /// What changed, as the audit log names it: ids (`api/stage`, `plan/key`), never a value.
    /// `None` when only the outcome knows (a created key's or plan's id): see [`Applied::target`].
    pub fn target(&self) -> Option<String> {
        Some(match self {
            Self::Deploy(req) => format!("{}/{}", req.definition.service, req.definition.stage),
            Self::DeleteStage { api_id, stage }
            | Self::CreateDeployment { api_id, stage }
            | Self::SetStageEnforcement { api_id, stage, .. } => {
                format!("{api_id}/{stage}")
            }
            Self::PutApiDefinition { api_id, .. } => api_id.clone(),
            Self::CreateKey { .. } | Self::CreatePlan { .. } => return None,
            Self::ImportKeys(keys) => format!("{} keys", keys.len()),
            Self::RotateKey { id, .. }
            | Self::RevokeOldValues { id }
            | Self::UpdateKey { id, .. }
            | Self::DeleteKey { id }
            | Self::UpdatePlan { id, .. }
            | Self::DeletePlan { id }
            | Self::RevokeAdminToken { id } => id.clone(),
            Self::AddPlanKey { plan_id, key_id } | Self::RemovePlanKey { plan_id, key_id } => {
                format!("{plan_id}/{key_id}")
            }
            Self::PutPlanStage { plan_id, stage } => {
                format!("{plan_id}/{}/{}", stage.api_id, stage.stage)
            }
            Self::RemovePlanStage { plan_id, api_id, stage } => {
                format!("{plan_id}/{api_id}/{stage}")
            }
            Self::PutGrant(g) => format!("{}/{}", g.plan_id, g.key_id),
            Self::CreateAdminCredential(c) => c.access_key_id.clone(),
            Self::RevokeAdminCredential { access_key_id } => access_key_id.clone(),
            Self::CreateAdminToken(t) => t.id.clone(),
            Self::RetireIdleOldValues { .. } => "idle old values".to_owned(),
        })
    }

    /// Whether the change alters what gateways serve (then the store's version moves and they
    /// reload). Admin credentials and tokens are read per request instead.
    pub fn is_served(&self) -> bool {
        !matches!(
            self,
            Self::CreateAdminCredential(_)
                | Self::RevokeAdminCredential { .. }
                | Self::CreateAdminToken(_)
                | Self::RevokeAdminToken { .. }
        )
    }
}

/// What [`ConfigStore::apply`] made; each [`Change`] says which variant it answers with.
#[derive(Debug)]
#[non_exhaustive]
pub enum Applied {
    Done,
    Deployed(Box<DeployOutcome>),
    Deployment(Deployment),
    Key(ApiKey),
    Keys(Vec<ApiKey>),
    Plan(UsagePlan),
    Count(u64),
}

impl Applied {
    /// The audit target of a change whose [`Change::target`] is `None`: the created record's id.
    pub fn target(&self) -> String {
        match self {
            Self::Key(k) => k.id.clone(),
            Self::Plan(p) => p.id.clone(),
            _ => String::new(),
        }
    }

    fn unexpected(self, wanted: &str) -> Error {
        Error::corrupt(format!("the store answered a change with {self:?} instead of {wanted}"))
    }

    /// The outcome of [`Change::Deploy`].
    ///
    /// # Errors
    /// [`Error::Other`] when the store answered with another variant (a backend bug).
    pub fn into_deployed(self) -> Result<DeployOutcome> {
        match self {
            Self::Deployed(d) => Ok(*d),
            other => Err(other.unexpected("a deployment outcome")),
        }
    }

    /// The outcome of [`Change::CreateDeployment`].
    ///
    /// # Errors
    /// As [`into_deployed`](Self::into_deployed).
    pub fn into_deployment(self) -> Result<Deployment> {
        match self {
            Self::Deployment(d) => Ok(d),
            other => Err(other.unexpected("a deployment")),
        }
    }

    /// The key a key change made or changed.
    ///
    /// # Errors
    /// As [`into_deployed`](Self::into_deployed).
    pub fn into_key(self) -> Result<ApiKey> {
        match self {
            Self::Key(k) => Ok(k),
            other => Err(other.unexpected("a key")),
        }
    }

    /// The keys [`Change::ImportKeys`] created.
    ///
    /// # Errors
    /// As [`into_deployed`](Self::into_deployed).
    pub fn into_keys(self) -> Result<Vec<ApiKey>> {
        match self {
            Self::Keys(k) => Ok(k),
            other => Err(other.unexpected("keys")),
        }
    }

    /// The plan a plan change made or changed.
    ///
    /// # Errors
    /// As [`into_deployed`](Self::into_deployed).
    pub fn into_plan(self) -> Result<UsagePlan> {
        match self {
            Self::Plan(p) => Ok(p),
            other => Err(other.unexpected("a plan")),
        }
    }

    /// The count [`Change::RevokeOldValues`] answers.
    ///
    /// # Errors
    /// As [`into_deployed`](Self::into_deployed).
    pub fn into_count(self) -> Result<u64> {
        match self {
            Self::Count(n) => Ok(n),
            other => Err(other.unexpected("a count")),
        }
    }
}

/// One page of a list ordered by name (keys, plans, a plan's keys): the items whose names come
/// after `after` and start with `prefix`, at most `limit`. Keyset pagination: the store seeks to
/// `after` in its name index, so a page costs the same at the millionth key as at the first.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    pub after: Option<&'a str>,
    pub prefix: Option<&'a str>,
    pub limit: u32,
}

impl Page<'_> {
    /// The first `limit` items.
    pub fn first(limit: u32) -> Self {
        Self { after: None, prefix: None, limit }
    }

    /// The least name greater than every name that starts with the prefix (`None`: no bound), so
    /// that a prefix search is a range of the name index: the prefix with its last character
    /// moved to the next code point (UTF-8 sorts as code points do).
    pub fn prefix_end(&self) -> Option<String> {
        let mut end = self.prefix?.to_owned();
        while let Some(last) = end.pop() {
            let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
            if let Some(next) = next {
                end.push(next);
                return Some(end);
            }
        }
        None
    }
}

/// What the store answers of services: APIs, their stages, definitions and deployments.
#[async_trait]
pub trait ServiceReads: Send + Sync + 'static {
    async fn list_apis(&self) -> Result<Vec<Api>>;
    async fn get_api_by_name(&self, name: &str) -> Result<Option<Api>>;
    async fn list_stages(&self, api_id: &str) -> Result<Vec<Stage>>;
    async fn get_api(&self, id: &str) -> Result<Option<Api>>;
    /// The API's current definition: what the next deployment snapshots.
    async fn get_api_definition(&self, api_id: &str) -> Result<Option<ServiceDefinition>>;
    async fn list_deployments(&self, api_id: &str) -> Result<Vec<Deployment>>;
    async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>>;
}

/// What the store answers of API keys (never a value: only their digests).
#[async_trait]
pub trait KeyReads: Send + Sync + 'static {
    /// Whether a key with this value digest exists.
    async fn key_digest_exists(&self, digest: &KeyDigest) -> Result<bool>;
    /// Which of `digests` a key has, as its value or as a rotated-out value still kept: what
    /// [`key_digest_exists`](Self::key_digest_exists) answers for one, for many at once (an
    /// import checks all its rows with one call).
    async fn existing_key_digests(
        &self,
        digests: &[KeyDigest],
    ) -> Result<std::collections::HashSet<KeyDigest>>;
    /// Which of `names` a key has (an import checks all its rows with one call).
    async fn existing_key_names(&self, names: &[&str])
    -> Result<std::collections::HashSet<String>>;
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>>;
    async fn get_key_by_name(&self, name: &str) -> Result<Option<ApiKey>>;
    /// Keys by name: one [`Page`], optionally only those of one customer.
    async fn list_keys(&self, page: Page<'_>, customer_id: Option<&str>) -> Result<Vec<ApiKey>>;
    /// The values a rotation replaced that still work at `now`, with who still sends them.
    async fn old_values(&self, key_id: &str, now: i64) -> Result<Vec<OldValue>>;
    /// How many rotated-out values [`Change::RetireIdleOldValues`] would end at `now`.
    async fn idle_old_values(&self, now: i64) -> Result<u64>;
}

/// What the store answers of usage plans, their stages, keys and grants.
#[async_trait]
pub trait PlanReads: Send + Sync + 'static {
    async fn get_plan(&self, id: &str) -> Result<Option<UsagePlan>>;
    async fn get_plan_by_name(&self, name: &str) -> Result<Option<UsagePlan>>;
    /// Plans by name: one [`Page`].
    async fn list_plans(&self, page: Page<'_>) -> Result<Vec<UsagePlan>>;
    /// Keys of a usage plan by name: one [`Page`].
    async fn list_plan_keys(&self, plan_id: &str, page: Page<'_>) -> Result<Vec<ApiKey>>;
    /// Ids of the usage plans a key belongs to.
    async fn key_plan_ids(&self, key_id: &str) -> Result<Vec<String>>;
    /// The plans that cover an API stage, by name.
    async fn plans_covering(&self, api_id: &str, stage: &str) -> Result<Vec<UsagePlan>>;
    /// The name of a key in both plans, if any.
    async fn shared_key(&self, plan_a: &str, plan_b: &str) -> Result<Option<String>>;
    /// The extra quota granted in a plan (every key, every period).
    async fn usage_grants(&self, plan_id: &str) -> Result<Vec<UsageGrant>>;
}

/// What the store answers of usage: the daily counters, and report-only routes' would-be
/// refusals.
#[async_trait]
pub trait UsageReads: Send + Sync + 'static {
    /// Daily usage between two days (inclusive), optionally for one plan and key.
    async fn usage(
        &self,
        plan_id: Option<&str>,
        key_id: Option<&str>,
        from: keygate_types::date::Date,
        to: keygate_types::date::Date,
    ) -> Result<Vec<DailyUsage>>;

    /// The would-be refusals of report-only routes seen since `since` (unix seconds), of one
    /// stage or all, by hour, route, reason and client.
    async fn would_refuse(&self, stage: Option<&str>, since: i64) -> Result<Vec<WouldRefuse>>;
}

/// What the store answers of the admin side: credentials, tokens and the audit log.
#[async_trait]
pub trait AdminReads: Send + Sync + 'static {
    async fn get_admin_credential(&self, access_key_id: &str) -> Result<Option<AdminCredential>>;
    async fn list_admin_credentials(&self) -> Result<Vec<AdminCredential>>;
    async fn find_admin_token(&self, digest: &[u8]) -> Result<Option<AdminToken>>;
    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>>;
    /// Audit entries after `after_seq`, oldest first, at most `limit`.
    async fn list_audit(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>>;
}

/// What gateways serve from: the snapshot, and how they learn that it changed.
#[async_trait]
pub trait SnapshotReads: Send + Sync + 'static {
    /// A number that changes whenever anything gateways serve changes. Cheap: gateways poll it.
    async fn version(&self) -> Result<i64>;
    /// A signal that moves when the [`version`](Self::version) may have moved, on any node, so a
    /// gateway can reload at once instead of at its next poll; it may also move for nothing
    /// (after a lost connection, say), and it is never the only way a change arrives: the poll
    /// stays. `None` (the default): the backend has no such signal.
    fn change_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Everything the data plane serves from, read consistently.
    async fn snapshot(&self) -> Result<GatewaySnapshot>;
}

/// Everything the store answers: every focused read trait. Reads never change anything, so a
/// handle that only reads (a report, the admin API's GETs) needs nothing else; code that needs
/// one concern takes that trait. Implemented for every type that has them all.
pub trait Reads:
    ServiceReads + KeyReads + PlanReads + UsageReads + AdminReads + SnapshotReads
{
}

impl<T> Reads for T where
    T: ServiceReads + KeyReads + PlanReads + UsageReads + AdminReads + SnapshotReads + ?Sized
{
}

/// The data plane's counters: admitted requests, appended as they come and folded later, and
/// report-only routes' would-be refusals. Data, not changes: not audited, and gateways do not
/// reload for them.
#[async_trait]
pub trait UsageCounters: Send + Sync + 'static {
    /// Adds admitted requests to the daily counters (increments, never overwrites), and with
    /// their [`last_used`](DailyUsage::last_used) to the keys' lastUsedDate (which never moves
    /// back). Appended in arrival order: cheap at any number of keys; reads see it at once.
    async fn add_usage(&self, usage: &[DailyUsage]) -> Result<()>;
    /// Folds what [`add_usage`](Self::add_usage) appended into the daily counters, in key order
    /// (one write per key and day however many batches brought it); returns the appended rows
    /// folded. Reads answer the same before and after. Any node may fold at any time.
    async fn fold_usage(&self) -> Result<u64>;
    /// Adds would-be refusals of report-only routes to their hours' counts (those older than
    /// 31 days are dropped).
    async fn add_would_refuse(&self, rows: &[WouldRefuse]) -> Result<()>;
    /// Adds requests sent with rotated-out values to their clients' counts (uses of a value
    /// that is gone are dropped).
    async fn add_old_value_uses(&self, uses: &[OldValueUse]) -> Result<()>;
}

/// The store: its [`Reads`], the data plane's [`UsageCounters`], and the one door for changes.
#[async_trait]
pub trait ConfigStore: Reads + UsageCounters {
    /// Makes `change` and appends its audit entry (`actor`, [`Change::action`], its target) in
    /// one transaction: all or nothing. Errors of the change come back unchanged.
    async fn apply(&self, actor: &str, change: Change) -> Result<Applied>;

    /// [`apply`](Self::apply), only if the store's [`version`](SnapshotReads::version) is still
    /// `version`: the version read before the change's rules were checked against the store, so
    /// a change that raced the check is refused with [`Error::Stale`] (nothing made) instead of
    /// breaking the rule. Moves the version.
    async fn apply_at(&self, actor: &str, change: Change, version: i64) -> Result<Applied>;
}

/// The store's traits, for code that calls their methods on a `dyn` [`ConfigStore`] or
/// [`Reads`] (`use keygate_store::prelude::*`).
pub mod prelude {
    pub use crate::{
        AdminReads, ConfigStore, KeyReads, PlanReads, Reads, ServiceReads, SnapshotReads,
        UsageCounters, UsageReads,
    };
}

#[cfg(test)]
mod tests {
    /// The migrations' partial index and the snapshots' query spell the marker out.
    #[test]
    fn the_sql_spells_the_self_checking_marker() {
        assert_eq!(keygate_types::key::MARKER, "kgk1");
    }

    #[test]
    fn filters_sees_only_the_outer_where() {
        assert!(super::filters("SELECT a FROM t WHERE a = 1"));
        assert!(!super::filters("SELECT a FROM t"));
        assert!(!super::filters("SELECT (SELECT b FROM u WHERE u.a = t.a) AS b FROM t"));
        assert!(super::filters("SELECT (SELECT b FROM u WHERE u.a = t.a) FROM t WHERE a > 0"));
    }
}
