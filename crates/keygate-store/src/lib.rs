//! keygate storage.
//!
//! Layout:
//! - [`ConfigStore`]: the control-plane store (APIs, stages, deployments, API keys, usage plans and
//!   their associations). Durable, rarely written. Rate counters get their own trait later.
//! - [`sqlite`]: the embedded default implementation (one file in the data directory).
//! - [`private`]: the modes of the data directory (`0711`) and its private files (`0600`).
//!
//! Only `keygate-types` values cross this boundary; no sqlx type appears in the trait, so a
//! PostgreSQL implementation can follow without changing callers. Each backend maps its errors
//! into the small [`Error`] enum (a unique violation becomes [`Error::Conflict`]).

use async_trait::async_trait;
use keygate_types::ServiceDefinition;
use keygate_types::model::{
    AdminCredential, AdminToken, Api, ApiKey, ApiKeyPatch, ApiStage, AuditEntry, DailyUsage,
    Deployment, GatewaySnapshot, NewApiKey, NewUsagePlan, Stage, UsageGrant, UsagePlan,
    UsagePlanPatch,
};

pub mod private;
pub mod sqlite;

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

/// Everything one `deploy` writes, applied in one transaction.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The validated definition (its key declarations carry no values: see `keys`).
    pub definition: ServiceDefinition,
    /// One entry per declared key, in declaration order, each with the value to use if the key has
    /// to be created (the declared custom value or a freshly generated one) and the name of the
    /// plan it joins.
    pub keys: Vec<(NewApiKey, String)>,
    /// The plans of this API stage, by full name. Existing plans are updated in place (same id,
    /// so the usage counted so far is kept); missing ones are created.
    pub plans: Vec<NewUsagePlan>,
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

/// The control-plane store.
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// Creates or updates the API named by the service, creates missing keys and the usage plan,
    /// associates them, snapshots the definition as a new deployment and points the stage at it.
    /// All or nothing.
    async fn deploy(&self, req: DeployRequest) -> Result<DeployOutcome>;

    async fn list_apis(&self) -> Result<Vec<Api>>;
    async fn get_api_by_name(&self, name: &str) -> Result<Option<Api>>;
    async fn list_stages(&self, api_id: &str) -> Result<Vec<Stage>>;
    /// Deletes a stage (AWS DeleteStage): its routes stop being served, and usage plans no
    /// longer cover it. Its deployments stay, as history. [`Error::NotFound`] if there is none.
    async fn delete_stage(&self, api_id: &str, stage: &str) -> Result<()>;
    async fn get_api(&self, id: &str) -> Result<Option<Api>>;
    /// The API's current definition: what the next deployment snapshots.
    async fn get_api_definition(&self, api_id: &str) -> Result<Option<ServiceDefinition>>;
    /// Replaces the API's current definition; deployed stages are unchanged until a deployment.
    async fn put_api_definition(&self, api_id: &str, definition: &ServiceDefinition) -> Result<()>;
    /// Snapshots the API's current definition as a new deployment of `stage` (the definition's
    /// stage field is set to `stage`) and points the stage at it.
    async fn create_deployment(&self, api_id: &str, stage: &str) -> Result<Deployment>;
    async fn list_deployments(&self, api_id: &str) -> Result<Vec<Deployment>>;
    async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>>;

    /// Creates a key and adds it to the given usage plans (by id).
    async fn create_key(&self, key: NewApiKey, plan_ids: &[String]) -> Result<ApiKey>;
    /// Creates several keys and their plan memberships in one transaction: all or nothing.
    async fn import_keys(&self, keys: Vec<(NewApiKey, Vec<String>)>) -> Result<Vec<ApiKey>>;
    /// Whether a key with this value digest exists.
    async fn key_digest_exists(&self, digest: &keygate_types::KeyDigest) -> Result<bool>;
    /// Which of `digests` a key has, as its value or as a rotated-out value still kept: what
    /// [`key_digest_exists`](Self::key_digest_exists) answers for one, for many at once (an
    /// import checks all its rows with one call).
    async fn existing_key_digests(
        &self,
        digests: &[keygate_types::KeyDigest],
    ) -> Result<std::collections::HashSet<keygate_types::KeyDigest>>;
    /// Gives a key a new value. The old value keeps working for `grace_secs` (0: not at all),
    /// with the same plans and counters; values replaced earlier end then at the latest (with 0:
    /// now).
    async fn rotate_key(
        &self,
        id: &str,
        value: keygate_types::ApiKeyValue,
        grace_secs: i64,
    ) -> Result<ApiKey>;
    /// Ends every rotated-out value of a key now (its current value keeps working); returns how
    /// many were still working. [`Error::NotFound`] for an unknown key.
    async fn revoke_old_values(&self, id: &str) -> Result<u64>;
    /// Records when keys were last used (`(key id, unix seconds)`); never moves a date back.
    async fn set_last_used(&self, used: &[(String, i64)]) -> Result<()>;
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>>;
    async fn get_key_by_name(&self, name: &str) -> Result<Option<ApiKey>>;
    async fn list_keys(&self) -> Result<Vec<ApiKey>>;
    async fn update_key(&self, id: &str, patch: ApiKeyPatch) -> Result<ApiKey>;
    async fn delete_key(&self, id: &str) -> Result<()>;

    async fn create_plan(&self, plan: NewUsagePlan) -> Result<UsagePlan>;
    async fn update_plan(&self, id: &str, patch: UsagePlanPatch) -> Result<UsagePlan>;
    /// Deletes a plan with its key and stage associations and its usage records.
    async fn delete_plan(&self, id: &str) -> Result<()>;
    /// Adds a key to a plan. [`Error::Conflict`] when the key is already in another plan that
    /// covers one of this plan's API stages (a key may be in only one plan per API stage).
    async fn add_plan_key(&self, plan_id: &str, key_id: &str) -> Result<()>;
    async fn remove_plan_key(&self, plan_id: &str, key_id: &str) -> Result<()>;
    /// Adds an API stage to a plan, or replaces its method throttles if it is there already.
    /// [`Error::Conflict`] when one of the plan's keys is in another plan covering that stage.
    async fn put_plan_stage(&self, plan_id: &str, stage: ApiStage) -> Result<()>;
    async fn remove_plan_stage(&self, plan_id: &str, api_id: &str, stage: &str) -> Result<()>;
    async fn get_plan(&self, id: &str) -> Result<Option<UsagePlan>>;
    async fn get_plan_by_name(&self, name: &str) -> Result<Option<UsagePlan>>;
    async fn list_plans(&self) -> Result<Vec<UsagePlan>>;
    /// Keys of a usage plan, by name.
    async fn list_plan_keys(&self, plan_id: &str) -> Result<Vec<ApiKey>>;
    /// Ids of the usage plans a key belongs to.
    async fn key_plan_ids(&self, key_id: &str) -> Result<Vec<String>>;

    /// Adds admitted requests to the daily counters (increments, never overwrites).
    async fn add_usage(&self, usage: &[DailyUsage]) -> Result<()>;
    /// Daily usage between two days (inclusive, `YYYY-MM-DD`), optionally for one plan and key.
    async fn usage(
        &self,
        plan_id: Option<&str>,
        key_id: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<DailyUsage>>;
    /// Sets the extra quota of a key in a plan for one period (replacing an earlier grant).
    async fn put_grant(&self, grant: UsageGrant) -> Result<()>;

    async fn create_admin_credential(&self, c: AdminCredential) -> Result<()>;
    async fn get_admin_credential(&self, access_key_id: &str) -> Result<Option<AdminCredential>>;
    async fn list_admin_credentials(&self) -> Result<Vec<AdminCredential>>;
    /// Marks a credential revoked (kept for the audit trail).
    async fn revoke_admin_credential(&self, access_key_id: &str) -> Result<()>;
    async fn create_admin_token(&self, t: AdminToken) -> Result<()>;
    async fn find_admin_token(&self, digest: &[u8]) -> Result<Option<AdminToken>>;
    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>>;
    async fn revoke_admin_token(&self, id: &str) -> Result<()>;
    /// Appends to the audit log (`seq` and `time` of the entry are ignored and assigned).
    async fn append_audit(&self, e: AuditEntry) -> Result<()>;
    /// Audit entries after `after_seq`, oldest first, at most `limit`.
    async fn list_audit(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>>;

    /// A number that changes whenever anything in the store changes. Cheap: gateways poll it.
    async fn version(&self) -> Result<i64>;
    /// Everything the data plane serves from, read consistently.
    async fn snapshot(&self) -> Result<GatewaySnapshot>;
}
