//! `/restapis`: the deployed services as REST APIs, their resources and methods (with
//! `apiKeyRequired`), deployments and stages; and `/audit`.
//!
//! A resource is a path of the API's current definition; its id is derived from the API id and
//! the path, so it is stable across deploys. As on AWS, changing a method changes the API's
//! current definition only: the stages keep serving their deployment until `create-deployment`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use keygate_control::apis;
use keygate_types::model::{Api, Deployment};
use keygate_types::{HttpMethod, ServiceDefinition};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AdminState;
use crate::apikeys::{audited, bool_value, page, parse_patch};
use crate::auth::Actor;
use crate::error::{ApiResult, AwsError};

fn api_json(a: &Api) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "createdDate": a.created_date,
        "rootResourceId": resource_id(&a.id, "/"),
        "apiKeySource": "HEADER",
        "endpointConfiguration": { "types": ["REGIONAL"] },
        "disableExecuteApiEndpoint": false,
    })
}

async fn find_api(state: &AdminState, id: &str) -> ApiResult<Api> {
    state
        .store
        .get_api(id)
        .await?
        .ok_or_else(|| AwsError::not_found(format!("Invalid API identifier specified {id}")))
}

pub(crate) async fn list(
    State(state): State<Arc<AdminState>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let items = state.store.list_apis().await?.iter().map(api_json).collect();
    Ok(Json(page(items, &q)?))
}

pub(crate) async fn get(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(api_json(&find_api(&state, &id).await?)))
}

fn resource_id(api_id: &str, path: &str) -> String {
    let h = Sha256::digest(format!("{api_id}{path}").as_bytes());
    hex::encode(&h[..5])
}

/// Every resource (each path and its prefixes, and the root) with its methods.
fn resources_of(api_id: &str, def: &ServiceDefinition) -> BTreeMap<String, BTreeMap<String, bool>> {
    let mut out: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    out.insert("/".to_owned(), BTreeMap::new());
    for e in def.functions.iter().flat_map(|f| &f.events) {
        let mut prefix = String::new();
        for seg in e.path.split('/').filter(|s| !s.is_empty()) {
            prefix.push('/');
            prefix.push_str(seg);
            out.entry(prefix.clone()).or_default();
        }
        out.entry(e.path.clone()).or_default().insert(e.method.as_str().to_owned(), e.private);
    }
    let _ = api_id;
    out
}

fn resource_json(api_id: &str, path: &str, methods: &BTreeMap<String, bool>) -> Value {
    let parent = path.rsplit_once('/').map(|(p, _)| if p.is_empty() { "/" } else { p });
    let mut v = json!({
        "id": resource_id(api_id, path),
        "path": path,
    });
    if path != "/" {
        v["pathPart"] = json!(path.rsplit('/').next().unwrap_or(""));
        if let Some(p) = parent {
            v["parentId"] = json!(resource_id(api_id, p));
        }
    }
    if !methods.is_empty() {
        v["resourceMethods"] = methods
            .iter()
            .map(|(m, private)| (m.clone(), method_json(m, *private)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    v
}

fn method_json(method: &str, private: bool) -> Value {
    json!({ "httpMethod": method, "authorizationType": "NONE", "apiKeyRequired": private })
}

async fn definition(state: &AdminState, api_id: &str) -> ApiResult<ServiceDefinition> {
    state
        .store
        .get_api_definition(api_id)
        .await?
        .ok_or_else(|| AwsError::not_found(format!("Invalid API identifier specified {api_id}")))
}

pub(crate) async fn resources(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let api = find_api(&state, &id).await?;
    let def = definition(&state, &api.id).await?;
    let items = resources_of(&api.id, &def)
        .iter()
        .map(|(path, methods)| resource_json(&api.id, path, methods))
        .collect();
    Ok(Json(page(items, &q)?))
}

fn find_resource(
    api_id: &str,
    def: &ServiceDefinition,
    rid: &str,
) -> ApiResult<(String, BTreeMap<String, bool>)> {
    resources_of(api_id, def)
        .into_iter()
        .find(|(path, _)| resource_id(api_id, path) == rid)
        .ok_or_else(|| AwsError::not_found(format!("Invalid Resource identifier specified {rid}")))
}

pub(crate) async fn resource(
    State(state): State<Arc<AdminState>>,
    Path((id, rid)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let api = find_api(&state, &id).await?;
    let def = definition(&state, &api.id).await?;
    let (path, methods) = find_resource(&api.id, &def, &rid)?;
    Ok(Json(resource_json(&api.id, &path, &methods)))
}

pub(crate) async fn method(
    State(state): State<Arc<AdminState>>,
    Path((id, rid, method)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let api = find_api(&state, &id).await?;
    let def = definition(&state, &api.id).await?;
    let (_, methods) = find_resource(&api.id, &def, &rid)?;
    let m = method.to_ascii_uppercase();
    let private = methods
        .get(&m)
        .ok_or_else(|| AwsError::not_found("Invalid Method identifier specified"))?;
    Ok(Json(method_json(&m, *private)))
}

pub(crate) async fn update_method(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Path((id, rid, method)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let api = find_api(&state, &id).await?;
    let def = definition(&state, &api.id).await?;
    let (path, methods) = find_resource(&api.id, &def, &rid)?;
    let m = HttpMethod::parse(&method)
        .filter(|m| methods.contains_key(m.as_str()))
        .ok_or_else(|| AwsError::not_found("Invalid Method identifier specified"))?;
    let patch = parse_patch(&body)?;
    let mut private = methods[m.as_str()];
    for op in &patch.patch_operations {
        match (op.op.as_str(), op.path.as_str()) {
            ("replace", "/apiKeyRequired") => private = bool_value(op)?,
            (o, p) => {
                return Err(AwsError::bad_request(format!(
                    "Invalid patch operation {o} {p}: keygate supports replace /apiKeyRequired"
                )));
            }
        }
    }
    apis::set_key_required(&audited(&state, &actor), &api.id, &path, m, private).await?;
    Ok(Json(method_json(m.as_str(), private)))
}

fn deployment_json(d: &Deployment) -> Value {
    let mut summary: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for e in d.definition.functions.iter().flat_map(|f| &f.events) {
        summary.entry(e.path.clone()).or_default().insert(
            e.method.as_str().to_owned(),
            json!({ "authorizationType": "NONE", "apiKeyRequired": e.private }),
        );
    }
    json!({ "id": d.id, "createdDate": d.created_date, "apiSummary": summary })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeploymentBody {
    stage_name: Option<String>,
    description: Option<String>,
}

pub(crate) async fn create_deployment(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b: DeploymentBody = serde_json::from_slice(&body)
        .map_err(|e| AwsError::bad_request(format!("invalid request body: {e}")))?;
    let stage = b.stage_name.ok_or_else(|| {
        AwsError::bad_request("stageName is required: keygate deploys to a stage")
    })?;
    apis::check_stage_name(&stage)?;
    let api = find_api(&state, &id).await?;
    let d = apis::create_deployment(&audited(&state, &actor), &api.id, &stage).await?;
    let mut out = deployment_json(&d);
    // FIXME: the description is echoed, not stored, so get-deployment does not return it.
    if let Some(desc) = b.description {
        out["description"] = json!(desc);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

pub(crate) async fn deployments(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let api = find_api(&state, &id).await?;
    let items = state.store.list_deployments(&api.id).await?.iter().map(deployment_json).collect();
    Ok(Json(page(items, &q)?))
}

pub(crate) async fn deployment(
    State(state): State<Arc<AdminState>>,
    Path((id, did)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let api = find_api(&state, &id).await?;
    let d = state.store.get_deployment(&did).await?.filter(|d| d.api_id == api.id).ok_or_else(
        || AwsError::not_found(format!("Invalid Deployment identifier specified {did}")),
    )?;
    Ok(Json(deployment_json(&d)))
}

fn stage_json(s: &keygate_types::model::Stage) -> Value {
    json!({
        "stageName": s.name,
        "deploymentId": s.deployment_id,
        "createdDate": s.created_date,
        "lastUpdatedDate": s.last_updated_date,
    })
}

pub(crate) async fn stages(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let api = find_api(&state, &id).await?;
    let items: Vec<Value> =
        state.store.list_stages(&api.id).await?.iter().map(stage_json).collect();
    Ok(Json(json!({ "item": items })))
}

pub(crate) async fn stage(
    State(state): State<Arc<AdminState>>,
    Path((id, stage)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let api = find_api(&state, &id).await?;
    let s =
        state.store.list_stages(&api.id).await?.into_iter().find(|s| s.name == stage).ok_or_else(
            || AwsError::not_found(format!("Invalid Stage identifier specified {stage}")),
        )?;
    Ok(Json(stage_json(&s)))
}

/// `GET /audit?position=&limit=`: the audit log, oldest first (beyond AWS).
pub(crate) async fn audit(
    State(state): State<Arc<AdminState>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let after: i64 = q.get("position").and_then(|p| p.parse().ok()).unwrap_or(0);
    let limit: u32 = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(500).clamp(1, 1000);
    let entries = state.store.list_audit(after, limit).await?;
    let mut out = json!({ "item": entries });
    if entries.len() == limit as usize
        && let Some(last) = entries.last()
    {
        out["position"] = json!(last.seq.to_string());
    }
    Ok(Json(out))
}
