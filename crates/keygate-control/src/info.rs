//! `info`: what is deployed for a service and stage (like `serverless info`), and every deployed
//! stage (what `keygate serve` serves).

use keygate_types::model::{ApiKey, UsagePlan};
use serde::Serialize;

use crate::deploy::{Endpoint, Function, endpoints};
use crate::{Error, Result, Store};

/// A deployed stage, ready to print.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    pub service: String,
    pub stage: String,
    pub region: String,
    pub api_id: String,
    pub deployment_id: String,
    pub deployed_date: i64,
    pub endpoints: Vec<Endpoint>,
    pub functions: Vec<Function>,
    /// Keys of the stage's usage plans (no values: keygate does not keep them).
    pub api_keys: Vec<ApiKey>,
    /// Usage plans covering this API stage.
    pub usage_plans: Vec<UsagePlan>,
    /// The DynamoDB tables of `resources`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<InfoTable>,
}

/// A table of a deployed stage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InfoTable {
    pub logical_id: String,
    pub table_name: String,
    /// The key schema, e.g. `id (S, HASH)`.
    pub key: String,
    /// The stream's view type, if the table has a stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// `DeletionPolicy: Retain`.
    pub retain: bool,
}

/// Describes `service`'s deployed `stage`.
///
/// # Errors
/// [`Error::NotFound`] when the service or stage was never deployed.
pub async fn info(store: &Store, service: &str, stage: &str, base_url: &str) -> Result<Info> {
    let hint = format!("run `keygate deploy -c <file> --stage {stage}`");
    let (api, deployment, plans, switch) = deployed_stage(store, service, stage, &hint).await?;
    let def = &deployment.definition.clone().switched(switch);
    let mut api_keys = Vec::new();
    for p in &plans {
        api_keys.extend(crate::plans::all_keys(store, &p.id).await?);
    }
    Ok(Info {
        service: service.to_owned(),
        stage: stage.to_owned(),
        region: def.region.clone(),
        api_id: api.id,
        deployment_id: deployment.id.clone(),
        deployed_date: deployment.created_date,
        endpoints: endpoints(def, base_url),
        functions: def.functions.iter().map(Function::of).collect(),
        api_keys,
        usage_plans: plans,
        tables: def
            .tables
            .iter()
            .map(|t| InfoTable {
                logical_id: t.logical_id.clone(),
                table_name: t.table_name.clone(),
                key: t.describe_key(),
                stream: t.stream_view_type.clone(),
                retain: t.retain,
            })
            .collect(),
    })
}

/// A deployed stage as `keygate serve` lists it at start.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServedStage {
    pub service: String,
    pub stage: String,
    pub api_id: String,
    pub deployment_id: String,
    pub endpoints: Vec<Endpoint>,
}

/// Every deployed stage, by service then stage, with its endpoints under `base_url`.
///
/// # Errors
/// A store error.
/// A deployed stage: its API, current deployment, the usage plans covering it and the
/// operator's switch of its key checks.
/// [`Error::NotFound`] (ending with `hint`) when the service or stage is not deployed.
pub(crate) async fn deployed_stage(
    store: &Store,
    service: &str,
    stage: &str,
    hint: &str,
) -> Result<(
    keygate_types::model::Api,
    keygate_types::model::Deployment,
    Vec<UsagePlan>,
    Option<keygate_types::Enforcement>,
)> {
    let not_deployed =
        || Error::NotFound(format!("service {service} has no deployed stage {stage}; {hint}"));
    let api = store.get_api_by_name(service).await?.ok_or_else(not_deployed)?;
    let st = store
        .list_stages(&api.id)
        .await?
        .into_iter()
        .find(|s| s.name == stage)
        .ok_or_else(not_deployed)?;
    let deployment = store.get_deployment(&st.deployment_id).await?.ok_or_else(not_deployed)?;
    let plans: Vec<UsagePlan> = crate::plans::all(store)
        .await?
        .into_iter()
        .filter(|p| p.api_stages.iter().any(|s| s.api_id == api.id && s.stage == stage))
        .collect();
    Ok((api, deployment, plans, st.enforcement))
}

/// The definition of every stage's current deployment.
pub async fn deployed_definitions(store: &Store) -> Result<Vec<keygate_types::ServiceDefinition>> {
    let mut out = Vec::new();
    for api in store.list_apis().await? {
        for st in store.list_stages(&api.id).await? {
            if let Some(d) = store.get_deployment(&st.deployment_id).await? {
                out.push(d.definition);
            }
        }
    }
    Ok(out)
}

pub async fn served(store: &Store, base_url: &str) -> Result<Vec<ServedStage>> {
    let mut out = Vec::new();
    let mut apis = store.list_apis().await?;
    apis.sort_by(|a, b| a.name.cmp(&b.name));
    for api in apis {
        let mut stages = store.list_stages(&api.id).await?;
        stages.sort_by(|a, b| a.name.cmp(&b.name));
        for st in stages {
            let Some(d) = store.get_deployment(&st.deployment_id).await? else { continue };
            out.push(ServedStage {
                service: api.name.clone(),
                stage: st.name.clone(),
                api_id: api.id.clone(),
                deployment_id: d.id.clone(),
                endpoints: endpoints(&d.definition.clone().switched(st.enforcement), base_url),
            });
        }
    }
    Ok(out)
}
