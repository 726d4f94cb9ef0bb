//! The audit log: every change made through the control plane, by whom.
//!
//! [`Audited`] wraps a store and records an entry after every successful change, so the CLI and
//! the admin API (which both call the operations in this crate with an audited store) cannot
//! forget one. Entries name the actor, the action (AWS operation names), the target id and the
//! time; never a key value or a secret. Usage counters (`add_usage`) are data, not changes, and
//! are not audited.

use std::sync::Arc;

use async_trait::async_trait;
use keygate_store::{ConfigStore, DeployOutcome, DeployRequest, Result};
use keygate_types::ServiceDefinition;
use keygate_types::model::{
    AdminCredential, AdminToken, Api, ApiKey, ApiKeyPatch, ApiStage, AuditEntry, DailyUsage,
    Deployment, GatewaySnapshot, NewApiKey, NewUsagePlan, Stage, UsageGrant, UsagePlan,
    UsagePlanPatch,
};

/// A store that records every change it makes in the audit log, as `actor`.
pub struct Audited {
    inner: Arc<dyn ConfigStore>,
    actor: String,
}

impl Audited {
    /// Wraps `inner`; `actor` is e.g. `cli:alice`, `sigv4:AKKG...`, `token:abc123`.
    pub fn new(inner: Arc<dyn ConfigStore>, actor: impl Into<String>) -> Self {
        Self { inner, actor: actor.into() }
    }

    async fn record(&self, action: &str, target: String) {
        let entry = AuditEntry {
            seq: 0,
            time: 0,
            actor: self.actor.clone(),
            action: action.to_owned(),
            target,
            detail: None,
        };
        // The change is done; failing to log it must not report the change as failed.
        if let Err(e) = self.inner.append_audit(entry).await {
            tracing::error!(error = %e, action, "cannot write the audit log");
        }
    }
}

#[async_trait]
impl ConfigStore for Audited {
    async fn deploy(&self, req: DeployRequest) -> Result<DeployOutcome> {
        let target = req.definition.service.clone();
        let out = self.inner.deploy(req).await?;
        self.record("Deploy", target).await;
        Ok(out)
    }

    async fn list_apis(&self) -> Result<Vec<Api>> {
        self.inner.list_apis().await
    }

    async fn get_api_by_name(&self, name: &str) -> Result<Option<Api>> {
        self.inner.get_api_by_name(name).await
    }

    async fn list_stages(&self, api_id: &str) -> Result<Vec<Stage>> {
        self.inner.list_stages(api_id).await
    }

    async fn delete_stage(&self, api_id: &str, stage: &str) -> Result<()> {
        let out = self.inner.delete_stage(api_id, stage).await?;
        self.record("DeleteStage", format!("{api_id}:{stage}")).await;
        Ok(out)
    }

    async fn get_api(&self, id: &str) -> Result<Option<Api>> {
        self.inner.get_api(id).await
    }

    async fn get_api_definition(&self, api_id: &str) -> Result<Option<ServiceDefinition>> {
        self.inner.get_api_definition(api_id).await
    }

    async fn put_api_definition(&self, api_id: &str, definition: &ServiceDefinition) -> Result<()> {
        let target = api_id.to_owned();
        let out = self.inner.put_api_definition(api_id, definition).await?;
        self.record("UpdateRestApiDefinition", target).await;
        Ok(out)
    }

    async fn create_deployment(&self, api_id: &str, stage: &str) -> Result<Deployment> {
        let target = format!("{api_id}/{stage}");
        let out = self.inner.create_deployment(api_id, stage).await?;
        self.record("CreateDeployment", target).await;
        Ok(out)
    }

    async fn list_deployments(&self, api_id: &str) -> Result<Vec<Deployment>> {
        self.inner.list_deployments(api_id).await
    }

    async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>> {
        self.inner.get_deployment(id).await
    }

    async fn create_key(&self, key: NewApiKey, plan_ids: &[String]) -> Result<ApiKey> {
        let target = key.name.clone();
        let out = self.inner.create_key(key, plan_ids).await?;
        self.record("CreateApiKey", target).await;
        Ok(out)
    }

    async fn import_keys(&self, keys: Vec<(NewApiKey, Vec<String>)>) -> Result<Vec<ApiKey>> {
        let target = format!("{} keys", keys.len());
        let out = self.inner.import_keys(keys).await?;
        self.record("ImportApiKeys", target).await;
        Ok(out)
    }

    async fn key_digest_exists(&self, digest: &keygate_types::KeyDigest) -> Result<bool> {
        self.inner.key_digest_exists(digest).await
    }

    async fn existing_key_digests(
        &self,
        digests: &[keygate_types::KeyDigest],
    ) -> Result<std::collections::HashSet<keygate_types::KeyDigest>> {
        self.inner.existing_key_digests(digests).await
    }

    async fn rotate_key(
        &self,
        id: &str,
        value: keygate_types::ApiKeyValue,
        grace_secs: i64,
    ) -> Result<ApiKey> {
        let target = id.to_owned();
        let out = self.inner.rotate_key(id, value, grace_secs).await?;
        self.record("RotateApiKey", target).await;
        Ok(out)
    }

    async fn revoke_old_values(&self, id: &str) -> Result<u64> {
        let out = self.inner.revoke_old_values(id).await?;
        self.record("RevokeOldApiKeyValues", id.to_owned()).await;
        Ok(out)
    }

    async fn set_last_used(&self, used: &[(String, i64)]) -> Result<()> {
        self.inner.set_last_used(used).await
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        self.inner.get_key(id).await
    }

    async fn get_key_by_name(&self, name: &str) -> Result<Option<ApiKey>> {
        self.inner.get_key_by_name(name).await
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        self.inner.list_keys().await
    }

    async fn update_key(&self, id: &str, patch: ApiKeyPatch) -> Result<ApiKey> {
        let target = id.to_owned();
        let out = self.inner.update_key(id, patch).await?;
        self.record("UpdateApiKey", target).await;
        Ok(out)
    }

    async fn delete_key(&self, id: &str) -> Result<()> {
        let target = id.to_owned();
        let out = self.inner.delete_key(id).await?;
        self.record("DeleteApiKey", target).await;
        Ok(out)
    }

    async fn create_plan(&self, plan: NewUsagePlan) -> Result<UsagePlan> {
        let target = plan.name.clone();
        let out = self.inner.create_plan(plan).await?;
        self.record("CreateUsagePlan", target).await;
        Ok(out)
    }

    async fn update_plan(&self, id: &str, patch: UsagePlanPatch) -> Result<UsagePlan> {
        let target = id.to_owned();
        let out = self.inner.update_plan(id, patch).await?;
        self.record("UpdateUsagePlan", target).await;
        Ok(out)
    }

    async fn delete_plan(&self, id: &str) -> Result<()> {
        let target = id.to_owned();
        let out = self.inner.delete_plan(id).await?;
        self.record("DeleteUsagePlan", target).await;
        Ok(out)
    }

    async fn add_plan_key(&self, plan_id: &str, key_id: &str) -> Result<()> {
        let target = format!("{plan_id}/{key_id}");
        let out = self.inner.add_plan_key(plan_id, key_id).await?;
        self.record("CreateUsagePlanKey", target).await;
        Ok(out)
    }

    async fn remove_plan_key(&self, plan_id: &str, key_id: &str) -> Result<()> {
        let target = format!("{plan_id}/{key_id}");
        let out = self.inner.remove_plan_key(plan_id, key_id).await?;
        self.record("DeleteUsagePlanKey", target).await;
        Ok(out)
    }

    async fn put_plan_stage(&self, plan_id: &str, stage: ApiStage) -> Result<()> {
        let target = format!("{plan_id}/{}:{}", stage.api_id, stage.stage);
        let out = self.inner.put_plan_stage(plan_id, stage).await?;
        self.record("UpdateUsagePlan:addApiStage", target).await;
        Ok(out)
    }

    async fn remove_plan_stage(&self, plan_id: &str, api_id: &str, stage: &str) -> Result<()> {
        let target = format!("{plan_id}/{api_id}:{stage}");
        let out = self.inner.remove_plan_stage(plan_id, api_id, stage).await?;
        self.record("UpdateUsagePlan:removeApiStage", target).await;
        Ok(out)
    }

    async fn get_plan(&self, id: &str) -> Result<Option<UsagePlan>> {
        self.inner.get_plan(id).await
    }

    async fn get_plan_by_name(&self, name: &str) -> Result<Option<UsagePlan>> {
        self.inner.get_plan_by_name(name).await
    }

    async fn list_plans(&self) -> Result<Vec<UsagePlan>> {
        self.inner.list_plans().await
    }

    async fn list_plan_keys(&self, plan_id: &str) -> Result<Vec<ApiKey>> {
        self.inner.list_plan_keys(plan_id).await
    }

    async fn key_plan_ids(&self, key_id: &str) -> Result<Vec<String>> {
        self.inner.key_plan_ids(key_id).await
    }

    async fn add_usage(&self, usage: &[DailyUsage]) -> Result<()> {
        self.inner.add_usage(usage).await
    }

    async fn usage(
        &self,
        plan_id: Option<&str>,
        key_id: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<DailyUsage>> {
        self.inner.usage(plan_id, key_id, from, to).await
    }

    async fn put_grant(&self, grant: UsageGrant) -> Result<()> {
        let target = format!("{}/{}", grant.plan_id, grant.key_id);
        let out = self.inner.put_grant(grant).await?;
        self.record("UpdateUsage", target).await;
        Ok(out)
    }

    async fn create_admin_credential(&self, c: AdminCredential) -> Result<()> {
        let target = c.access_key_id.clone();
        let out = self.inner.create_admin_credential(c).await?;
        self.record("CreateAdminCredential", target).await;
        Ok(out)
    }

    async fn get_admin_credential(&self, access_key_id: &str) -> Result<Option<AdminCredential>> {
        self.inner.get_admin_credential(access_key_id).await
    }

    async fn list_admin_credentials(&self) -> Result<Vec<AdminCredential>> {
        self.inner.list_admin_credentials().await
    }

    async fn revoke_admin_credential(&self, access_key_id: &str) -> Result<()> {
        let target = access_key_id.to_owned();
        let out = self.inner.revoke_admin_credential(access_key_id).await?;
        self.record("RevokeAdminCredential", target).await;
        Ok(out)
    }

    async fn create_admin_token(&self, t: AdminToken) -> Result<()> {
        let target = t.id.clone();
        let out = self.inner.create_admin_token(t).await?;
        self.record("CreateAdminToken", target).await;
        Ok(out)
    }

    async fn find_admin_token(&self, digest: &[u8]) -> Result<Option<AdminToken>> {
        self.inner.find_admin_token(digest).await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminToken>> {
        self.inner.list_admin_tokens().await
    }

    async fn revoke_admin_token(&self, id: &str) -> Result<()> {
        let target = id.to_owned();
        let out = self.inner.revoke_admin_token(id).await?;
        self.record("RevokeAdminToken", target).await;
        Ok(out)
    }

    async fn append_audit(&self, e: AuditEntry) -> Result<()> {
        self.inner.append_audit(e).await
    }

    async fn list_audit(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.inner.list_audit(after_seq, limit).await
    }

    async fn version(&self) -> Result<i64> {
        self.inner.version().await
    }

    async fn snapshot(&self) -> Result<GatewaySnapshot> {
        self.inner.snapshot().await
    }
}
