//! keygate storage.
//!
//! Layout:
//! - [`ConfigStore`]: the control-plane store (APIs, stages, deployments, API keys, usage plans and
//!   their associations). Durable, rarely written. Rate counters get their own trait later.
//! - [`sqlite`]: the embedded default implementation (one file in the data directory).
//!
//! Only `keygate-types` values cross this boundary; no sqlx type appears in the trait, so a
//! PostgreSQL implementation can follow without changing callers. Each backend maps its errors
//! into the small [`Error`] enum (a unique violation becomes [`Error::Conflict`]).

use async_trait::async_trait;
use keygate_types::ServiceDefinition;
use keygate_types::model::{
    Api, ApiKey, ApiKeyPatch, Deployment, GatewaySnapshot, NewApiKey, Stage, UsagePlan,
};

pub mod sqlite;

pub use sqlite::SqliteStore;

/// Store errors: small and backend-neutral. Messages never contain a key value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything one `deploy` writes, applied in one transaction.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The validated definition (its key declarations carry no values: see `keys`).
    pub definition: ServiceDefinition,
    /// One entry per declared key, in declaration order, each with the value to use if the key has
    /// to be created (the declared custom value or a freshly generated one).
    pub keys: Vec<NewApiKey>,
    /// Name of the usage plan that ties the keys to this API stage (`<service>-<stage>`).
    pub plan_name: String,
    /// The plan's declared limits, kept verbatim.
    pub plan_limits: Option<serde_json::Value>,
}

/// What a deployment did.
#[derive(Debug, Clone)]
pub struct DeployOutcome {
    pub api: Api,
    pub deployment: Deployment,
    pub plan: UsagePlan,
    /// Declared keys, in declaration order, with whether this deploy created them.
    pub keys: Vec<(ApiKey, KeyStatus)>,
    /// Keys in the plan that the definition no longer declares. They are kept, not deleted.
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
    async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>>;

    /// Creates a key and adds it to the given usage plans (by id).
    async fn create_key(&self, key: NewApiKey, plan_ids: &[String]) -> Result<ApiKey>;
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>>;
    async fn get_key_by_name(&self, name: &str) -> Result<Option<ApiKey>>;
    async fn list_keys(&self) -> Result<Vec<ApiKey>>;
    async fn update_key(&self, id: &str, patch: ApiKeyPatch) -> Result<ApiKey>;
    async fn delete_key(&self, id: &str) -> Result<()>;

    async fn get_plan(&self, id: &str) -> Result<Option<UsagePlan>>;
    async fn get_plan_by_name(&self, name: &str) -> Result<Option<UsagePlan>>;
    async fn list_plans(&self) -> Result<Vec<UsagePlan>>;
    /// Keys of a usage plan, by name.
    async fn list_plan_keys(&self, plan_id: &str) -> Result<Vec<ApiKey>>;
    /// Ids of the usage plans a key belongs to.
    async fn key_plan_ids(&self, key_id: &str) -> Result<Vec<String>>;

    /// A number that changes whenever anything in the store changes. Cheap: gateways poll it.
    async fn version(&self) -> Result<i64>;
    /// Everything the data plane serves from, read consistently.
    async fn snapshot(&self) -> Result<GatewaySnapshot>;
}
