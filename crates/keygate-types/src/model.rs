//! Control-plane records as the store keeps them, and the snapshot the data plane serves from.
//!
//! Timestamps are epoch seconds, as Amazon API Gateway returns them.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::key::ApiKeyValue;
use crate::plan::{Quota, Throttle};
use crate::service::ServiceDefinition;

/// Lowercase letters and digits: the alphabet of ids.
pub const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Letters and digits: the alphabet of secrets.
pub const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters drawn uniformly from `alphabet` by the thread-local CSPRNG (seeded from the
/// OS): every random id and admin secret keygate makes comes from here.
pub fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

/// A new random id of `len` lowercase alphanumerics (AWS-style: 10 for keys and APIs, 6 for plans
/// and deployments).
pub fn new_id(len: usize) -> String {
    random_string(len, ID_CHARS)
}

/// A REST API: one per `service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Api {
    pub id: String,
    pub name: String,
    pub created_date: i64,
}

/// A stage of an API and the deployment it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub api_id: String,
    pub name: String,
    pub deployment_id: String,
    pub created_date: i64,
    pub last_updated_date: i64,
    /// The operator's switch of its key checks, if any (keygate's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<crate::Enforcement>,
}

/// An immutable snapshot of a service definition. Deploying creates one; nothing edits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub api_id: String,
    pub created_date: i64,
    pub definition: ServiceDefinition,
}

/// An API key's stored fields. The value is not among them: only its digest and prefix are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub customer_id: Option<String>,
    pub created_date: i64,
    pub last_updated_date: i64,
    /// First characters of the value, safe to show (`AbC1…`).
    pub prefix: String,
    /// Unix seconds after which the key is refused (beyond AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// Unix seconds of the last request the key made (written by gateways, ~1 s behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_date: Option<i64>,
}

/// What is needed to create a key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub value: ApiKeyValue,
    pub description: Option<String>,
    pub customer_id: Option<String>,
    pub enabled: bool,
    /// Unix seconds after which the key is refused.
    pub expires: Option<i64>,
}

/// A change to a key's mutable fields; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ApiKeyPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub customer_id: Option<Option<String>>,
    pub expires: Option<Option<i64>>,
}

/// A usage plan: which keys may call which API stages, how fast and how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsagePlan {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub throttle: Option<Throttle>,
    pub quota: Option<Quota>,
    pub api_stages: Vec<ApiStage>,
    /// What decides its limits while the shared limiter does not answer (`None`: the node's
    /// `--redis-unavailable`). keygate's own setting, not AWS's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<crate::plan::Fallback>,
}

/// An API stage a usage plan covers, with optional per-method throttles keyed like AWS
/// (`"/candidates/GET"`, root `"//GET"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiStage {
    pub api_id: String,
    pub stage: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub throttle: BTreeMap<String, Throttle>,
}

/// What is needed to create a usage plan.
#[derive(Debug, Clone, Default)]
pub struct NewUsagePlan {
    pub name: String,
    pub description: Option<String>,
    pub throttle: Option<Throttle>,
    pub quota: Option<Quota>,
    pub fallback: Option<crate::plan::Fallback>,
}

/// A change to a plan; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct UsagePlanPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub throttle: Option<Option<Throttle>>,
    pub quota: Option<Option<Quota>>,
    pub fallback: Option<Option<crate::plan::Fallback>>,
}

/// Requests a key made through a plan on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUsage {
    pub plan_id: String,
    pub key_id: String,
    pub day: crate::date::Date,
    pub used: u64,
    /// When the last of these requests was admitted (unix seconds), where known: where a key's
    /// lastUsedDate comes from.
    pub last_used: Option<i64>,
}

/// A value a rotation replaced: until when it works, and who still sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldValue {
    /// Its display prefix (`None`: rotated before prefixes were kept).
    pub prefix: Option<String>,
    /// Unix seconds from which it is refused.
    pub expires: i64,
    /// When the rotation replaced it (unix seconds; `None`: before this was kept).
    pub rotated_at: Option<i64>,
    /// `--retire-when-idle`: it is refused once it has not been used for this many seconds.
    pub retire_idle: Option<i64>,
    /// The clients that sent it during its grace period, most recent first.
    pub uses: Vec<OldValueUse>,
}

/// Requests one client sent with a rotated-out value (counted by gateways, ~1 s behind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldValueUse {
    /// The old value's digest (what a gateway knows of it).
    pub digest: crate::KeyDigest,
    pub client: String,
    pub user_agent: String,
    pub count: u64,
    /// The first and the last of these requests (unix seconds).
    pub first_seen: i64,
    pub last_seen: i64,
}

/// Requests a report-only route (`private: report`) let through that its key check or usage
/// plan would have refused, counted per UTC hour, route, reason and client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WouldRefuse {
    /// Start of the UTC hour (unix seconds).
    pub hour: i64,
    pub api_id: String,
    pub stage: String,
    pub method: String,
    /// The route's path template (`/candidates/{id}`).
    pub path: String,
    /// What would have been refused, as the access log says it (`missing_key`, `throttled`, ...).
    pub reason: String,
    /// The key, when the value sent is a known key's.
    pub key_id: Option<String>,
    /// The client's address (behind trusted balancers, from `X-Forwarded-For`).
    pub client: String,
    /// Its `User-Agent` (at most 256 characters; empty when it sent none).
    pub user_agent: String,
    pub count: u64,
    /// The first and the last of these requests (unix seconds).
    pub first_seen: i64,
    pub last_seen: i64,
}

/// Quota granted on top of a plan's limit for one period (AWS update-usage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageGrant {
    pub plan_id: String,
    pub key_id: String,
    /// First day of the period.
    pub period_start: crate::date::Date,
    /// May be negative (remaining cut below what the limit leaves).
    pub extra: i64,
}

/// Everything the data plane needs, read in one go from the store.
#[derive(Debug, Clone, Default)]
pub struct GatewaySnapshot {
    /// Changes whenever anything in the store changes; the gateway reloads when it moves.
    pub version: i64,
    pub stages: Vec<DeployedStage>,
    /// Every accepted key value (a rotated key's old value too, until its grace period ends).
    pub keys: crate::keyset::KeySet,
    pub plans: Vec<UsagePlan>,
    pub grants: Vec<UsageGrant>,
    /// Whether a value of the self-checking form that is not self-checking may be among
    /// `keys` (imported, or generated before values checked themselves): then a bad checksum
    /// proves nothing and every value is looked up (`keygate_types::key::fails_checksum`).
    pub lookalikes: bool,
}

/// A stage and the definition of the deployment it serves.
#[derive(Debug, Clone)]
pub struct DeployedStage {
    pub api_id: String,
    pub stage: String,
    pub deployment_id: String,
    /// As deployed; gateways serve it [`switched`](ServiceDefinition::switched) by
    /// `enforcement`.
    pub definition: ServiceDefinition,
    pub enforcement: Option<crate::Enforcement>,
}

/// An admin credential for AWS Signature Version 4. The secret is sealed (encrypted) at rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminCredential {
    pub access_key_id: String,
    #[serde(skip)]
    pub secret_sealed: Vec<u8>,
    pub description: Option<String>,
    pub created_date: i64,
    pub revoked_date: Option<i64>,
}

/// An admin bearer token; only its digest and a display prefix are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminToken {
    pub id: String,
    #[serde(skip)]
    pub digest: Vec<u8>,
    pub prefix: String,
    pub description: Option<String>,
    pub created_date: i64,
    pub revoked_date: Option<i64>,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub seq: i64,
    /// Unix milliseconds.
    pub time: i64,
    /// `cli:<user>`, `sigv4:<access key id>` or `token:<token id>`.
    pub actor: String,
    /// AWS-style operation name, e.g. `CreateApiKey`.
    pub action: String,
    /// The id (or name) of what changed.
    pub target: String,
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_use_only_their_alphabet() {
        let id = new_id(10);
        assert_eq!(id.len(), 10);
        assert!(id.bytes().all(|b| ID_CHARS.contains(&b)), "{id}");
        let secret = random_string(40, ALPHANUMERIC);
        assert!(secret.len() == 40 && secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(secret, random_string(40, ALPHANUMERIC));
    }
}
