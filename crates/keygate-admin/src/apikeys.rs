//! `/apikeys`: create, import, list, get, update (patchOperations), delete.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use keygate_control::keys::{self, CreateKey};
use keygate_control::{ListQuery, Listed, MAX_PAGE, Store, import};
use keygate_types::model::{ApiKey, ApiKeyPatch};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AdminState;
use crate::auth::Actor;
use crate::error::{ApiResult, AwsError};

/// The store as this request's actor: the store records every change it makes as theirs.
pub(crate) fn audited(state: &AdminState, actor: &Actor) -> Store {
    state.store.acting_as(actor.0.clone())
}

/// An API key in AWS's shape. `value` only where keygate still has it (creation, import).
pub(crate) fn key_json(k: &ApiKey, value: Option<&str>) -> Value {
    let mut v = json!({
        "id": k.id,
        "name": k.name,
        "enabled": k.enabled,
        "createdDate": k.created_date,
        "lastUpdatedDate": k.last_updated_date,
        "stageKeys": [],
    });
    if let Some(d) = &k.description {
        v["description"] = json!(d);
    }
    if let Some(c) = &k.customer_id {
        v["customerId"] = json!(c);
    }
    if let Some(value) = value {
        v["value"] = json!(value);
    }
    if let Some(e) = k.expires {
        v["expires"] = json!(e);
    }
    if let Some(u) = k.last_used_date {
        v["lastUsedDate"] = json!(u);
    }
    v
}

/// `item`/`position` paging as AWS does it: `position` is an opaque cursor (here an offset).
pub(crate) fn page(items: Vec<Value>, q: &HashMap<String, String>) -> ApiResult<Value> {
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| AwsError::bad_request("limit must be a number from 1 to 500"))?,
        None => 25,
    };
    let start = match q.get("position") {
        Some(p) => p.parse::<usize>().map_err(|_| AwsError::bad_request("invalid position"))?,
        None => 0,
    };
    let end = (start + limit).min(items.len());
    let mut out = json!({ "item": items.get(start..end).unwrap_or_default() });
    if end < items.len() {
        out["position"] = json!(end.to_string());
    }
    Ok(out)
}

/// AWS's `limit` (default 25), `position` and `name` (a prefix) of a list ordered by name.
pub(crate) fn list_query(q: &HashMap<String, String>) -> ApiResult<ListQuery> {
    let limit = match q.get("limit") {
        Some(l) => l.parse::<u32>().map_err(|_| {
            AwsError::bad_request(format!("limit must be a number from 1 to {MAX_PAGE}"))
        })?,
        None => 25,
    };
    Ok(ListQuery::new(limit, q.get("position").map(String::as_str), q.get("name").cloned())?)
}

/// A page as AWS answers a list: `{"item": [...], "position": ...}` (no position on the last).
pub(crate) fn listed_json<T>(listed: Listed<T>, json_of: impl Fn(&T) -> Value) -> Value {
    let items: Vec<Value> = listed.items.iter().map(json_of).collect();
    let mut out = json!({ "item": items });
    if let Some(position) = listed.position() {
        out["position"] = json!(position);
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateBody {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    enabled: bool,
    value: Option<String>,
    customer_id: Option<String>,
    /// Unix seconds (beyond AWS).
    expires: Option<i64>,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| AwsError::bad_request(format!("invalid request body: {e}")))
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

pub(crate) async fn create_or_import(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let store = audited(&state, &actor);
    if q.get("mode").is_some_and(|m| m == "import") {
        if q.get("format").is_some_and(|f| !f.eq_ignore_ascii_case("csv")) {
            return Err(AwsError::bad_request("format must be csv"));
        }
        let text = import::decode(&body)?;
        let result = import::import(&store, text, flag(&q, "failonwarnings")).await?;
        return Ok((StatusCode::CREATED, Json(json!(result))));
    }
    let b: CreateBody = parse_json(&body)?;
    let name = b.name.ok_or_else(|| AwsError::bad_request("name is required"))?;
    let (key, value) = keys::create(
        &store,
        CreateKey {
            name,
            value: b.value,
            description: b.description,
            customer_id: b.customer_id,
            enabled: b.enabled,
            usage_plan: None,
            expires: b.expires,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(key_json(&key, Some(value.expose())))))
}

pub(crate) async fn list(
    State(state): State<Arc<AdminState>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let query = list_query(&q)?;
    let listed = keys::list(&state.store, &query, q.get("customerId").map(String::as_str)).await?;
    Ok(Json(listed_json(listed, |k| key_json(k, None))))
}

pub(crate) async fn get(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let k = state
        .store
        .get_key(&id)
        .await?
        .ok_or_else(|| AwsError::not_found("Invalid API Key identifier specified"))?;
    Ok(Json(key_json(&k, None)))
}

/// `{"patchOperations": [{"op", "path", "value"}]}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Patch {
    #[serde(default)]
    pub(crate) patch_operations: Vec<PatchOp>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PatchOp {
    pub(crate) op: String,
    pub(crate) path: String,
    pub(crate) value: Option<String>,
}

pub(crate) fn parse_patch(body: &[u8]) -> ApiResult<Patch> {
    if body.is_empty() {
        return Ok(Patch { patch_operations: Vec::new() });
    }
    parse_json(body)
}

pub(crate) fn bool_value(op: &PatchOp) -> ApiResult<bool> {
    match op.value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(AwsError::bad_request(format!("{} takes the value true or false", op.path))),
    }
}

pub(crate) async fn update(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let patch = parse_patch(&body)?;
    let mut p = ApiKeyPatch::default();
    for op in &patch.patch_operations {
        let clear = op.op == "remove";
        if op.op != "replace" && !clear {
            return Err(AwsError::bad_request(format!(
                "op {:?} is not supported for API keys; use replace",
                op.op
            )));
        }
        match op.path.as_str() {
            "/name" => {
                p.name = Some(
                    op.value.clone().ok_or_else(|| AwsError::bad_request("/name needs a value"))?,
                )
            }
            "/description" => p.description = Some(if clear { None } else { op.value.clone() }),
            "/customerId" => p.customer_id = Some(if clear { None } else { op.value.clone() }),
            "/enabled" => p.enabled = Some(bool_value(op)?),
            other => {
                return Err(AwsError::bad_request(format!(
                    "Invalid patch path {other}: API keys accept /name, /description, /enabled \
                     and /customerId (the value cannot be changed; rotate the key instead)"
                )));
            }
        }
    }
    let store = audited(&state, &actor);
    let updated = keys::update(&store, &id, p).await?;
    Ok(Json(key_json(&updated, None)))
}

pub(crate) async fn delete(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let store = audited(&state, &actor);
    if store.get_key(&id).await?.is_none() {
        return Err(AwsError::not_found("Invalid API Key identifier specified"));
    }
    keys::delete(&store, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /apikeys/{id}/rotate?grace=24h` (beyond AWS): a new value, returned once; the old one
/// keeps working for the grace period with the same plans and quota.
pub(crate) async fn rotate(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let grace = match q.get("grace") {
        Some(g) => keys::parse_duration(g)?,
        None => 0,
    };
    let (key, value) = keys::rotate(&audited(&state, &actor), &id, grace, None).await?;
    Ok(Json(key_json(&key, Some(value.expose()))))
}
