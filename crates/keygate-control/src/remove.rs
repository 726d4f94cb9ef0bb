//! `remove` (like `sls remove`): a stage of a service stops being served and its tables go,
//! except those its deployment says `DeletionPolicy: Retain`. Keys and usage plans are kept (a
//! redeploy finds them, their users keep their values) unless the caller asks for them too.

use keygate_types::ServiceDefinition;
use serde::Serialize;

use keygate_store::Change;

use crate::{Error, Result, Store};

/// What a remove did, ready to print.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveReport {
    pub service: String,
    pub stage: String,
    /// Tables deleted.
    pub deleted_tables: Vec<String>,
    /// Tables kept (`DeletionPolicy: Retain`).
    pub retained_tables: Vec<String>,
    /// Keys deleted (with `keys`), by name.
    pub deleted_keys: Vec<String>,
    /// Usage plans deleted (with `keys`), by name: those that covered only this stage.
    pub deleted_plans: Vec<String>,
}

/// Removes the stage `stage` of the service `service` (as deployed: its tables are those of the
/// stage's current deployment). `dynamodb` must be given when that deployment has tables to
/// delete. With `keys`, the keys the deployment declared and the usage plans that covered only
/// this stage are deleted too.
///
/// # Errors
/// [`Error::NotFound`] when the stage is not deployed; a DynamoDB or store error (the stage is
/// removed before the tables, so a failure there leaves tables, never a half-served stage).
pub async fn remove(
    store: &Store,
    service: &str,
    stage: &str,
    dynamodb: Option<&keygate_dynamodb::Client>,
    keys: bool,
) -> Result<RemoveReport> {
    // The plans of this stage are read before the stage (and so their link to it) goes.
    let (api, deployment, plans, _) =
        crate::info::deployed_stage(store, service, stage, "nothing to remove").await?;
    let definition: ServiceDefinition = deployment.definition;
    store.apply(Change::DeleteStage { api_id: api.id.clone(), stage: stage.to_owned() }).await?;

    let mut report = RemoveReport {
        service: service.to_owned(),
        stage: stage.to_owned(),
        deleted_tables: Vec::new(),
        retained_tables: Vec::new(),
        deleted_keys: Vec::new(),
        deleted_plans: Vec::new(),
    };
    for t in &definition.tables {
        if t.retain {
            report.retained_tables.push(t.table_name.clone());
            continue;
        }
        let client = dynamodb.ok_or_else(|| {
            Error::Invalid(format!(
                "the table {} needs a DynamoDB engine to be deleted",
                t.table_name
            ))
        })?;
        let deleted = keygate_dynamodb::tables::delete(client, &t.table_name)
            .await
            .map_err(|e| Error::Invalid(format!("resources.Resources.{}: {e}", t.logical_id)))?;
        if deleted {
            report.deleted_tables.push(t.table_name.clone());
        }
    }
    if keys {
        for k in &definition.api_keys {
            if let Some(key) = store.get_key_by_name(&k.name).await? {
                store.apply(Change::DeleteKey { id: key.id.clone() }).await?;
                report.deleted_keys.push(key.name);
            }
        }
        for plan in plans {
            let others = plan.api_stages.iter().any(|s| !(s.api_id == api.id && s.stage == stage));
            if !others {
                store.apply(Change::DeletePlan { id: plan.id.clone() }).await?;
                report.deleted_plans.push(plan.name);
            }
        }
    }
    Ok(report)
}
