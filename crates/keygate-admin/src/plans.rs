//! `/usageplans`: plans, their keys, and their usage (AWS get-usage / update-usage).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use keygate_control::{plans, usage};
use keygate_types::model::{NewUsagePlan, UsagePlan, UsagePlanPatch};
use keygate_types::plan::{Quota, QuotaPeriod, Throttle};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AdminState;
use crate::apikeys::{audited, list_query, listed_json, page, parse_patch};
use crate::auth::Actor;
use crate::error::{ApiResult, AwsError};

fn plan_json(p: &UsagePlan) -> Value {
    json!(p)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiStageBody {
    api_id: String,
    stage: String,
    #[serde(default)]
    throttle: BTreeMap<String, Throttle>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    name: Option<String>,
    description: Option<String>,
    throttle: Option<Throttle>,
    quota: Option<Quota>,
    #[serde(default)]
    api_stages: Vec<ApiStageBody>,
    /// keygate's own: what decides the plan's limits while Redis does not answer (`local` or
    /// `refuse`; absent: the node's `--redis-unavailable`).
    fallback: Option<keygate_types::plan::Fallback>,
}

pub(crate) async fn create(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| AwsError::bad_request(format!("invalid request body: {e}")))?;
    let name = b.name.ok_or_else(|| AwsError::bad_request("name is required"))?;
    let store = audited(&state, &actor);
    let plan = NewUsagePlan {
        name,
        description: b.description,
        throttle: b.throttle,
        quota: b.quota,
        fallback: b.fallback,
    };
    let stages = b.api_stages.into_iter().map(|s| (s.api_id, s.stage, s.throttle)).collect();
    // All or nothing, as on AWS: the plan and its stages are one change.
    let plan = plans::create(&store, plan, stages).await?;
    Ok((StatusCode::CREATED, Json(plan_json(&plan))))
}

pub(crate) async fn list(
    State(state): State<Arc<AdminState>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    if let Some(key_id) = q.get("keyId") {
        // The plans of one key: a handful, read by id.
        let mut items = Vec::new();
        for id in state.store.key_plan_ids(key_id).await? {
            if let Some(p) = state.store.get_plan(&id).await? {
                items.push(plan_json(&p));
            }
        }
        return Ok(Json(page(items, &q)?));
    }
    let listed = plans::list(&state.store, &list_query(&q)?).await?;
    Ok(Json(listed_json(listed, plan_json)))
}

async fn find(state: &AdminState, id: &str) -> ApiResult<UsagePlan> {
    state
        .store
        .get_plan(id)
        .await?
        .ok_or_else(|| AwsError::not_found(format!("Invalid Usage Plan ID specified: {id}")))
}

pub(crate) async fn get(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(plan_json(&find(&state, &id).await?)))
}

fn number<T: std::str::FromStr>(value: Option<&str>, path: &str) -> ApiResult<T> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| AwsError::bad_request(format!("{path} needs a numeric value")))
}

pub(crate) async fn update(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let current = find(&state, &id).await?;
    let patch = parse_patch(&body)?;
    let store = audited(&state, &actor);
    let mut p = UsagePlanPatch::default();
    let mut throttle = current.throttle;
    let mut quota = current.quota;
    let mut stages_add = Vec::new();
    let mut stages_remove = Vec::new();
    for op in &patch.patch_operations {
        let v = op.value.as_deref();
        match (op.op.as_str(), op.path.as_str()) {
            ("replace", "/name") => p.name = v.map(str::to_owned),
            ("replace", "/description") => p.description = Some(v.map(str::to_owned)),
            ("replace", "/throttle/rateLimit") => {
                let t = throttle.get_or_insert(Throttle { rate_limit: 0.0, burst_limit: 0 });
                t.rate_limit = number(v, &op.path)?;
            }
            ("replace", "/throttle/burstLimit") => {
                let t = throttle.get_or_insert(Throttle { rate_limit: 0.0, burst_limit: 0 });
                t.burst_limit = number(v, &op.path)?;
            }
            ("remove", "/throttle") => throttle = None,
            ("replace", "/quota/limit") => {
                let q =
                    quota.get_or_insert(Quota { limit: 0, period: QuotaPeriod::Day, offset: 0 });
                q.limit = number(v, &op.path)?;
            }
            ("replace", "/quota/offset") => {
                let q =
                    quota.get_or_insert(Quota { limit: 0, period: QuotaPeriod::Day, offset: 0 });
                q.offset = number(v, &op.path)?;
            }
            ("replace", "/quota/period") => {
                let q =
                    quota.get_or_insert(Quota { limit: 0, period: QuotaPeriod::Day, offset: 0 });
                q.period = v.and_then(QuotaPeriod::parse).ok_or_else(|| {
                    AwsError::bad_request("/quota/period must be DAY, WEEK or MONTH")
                })?;
            }
            ("remove", "/quota") => quota = None,
            ("replace", "/fallback") => {
                let policy = v.unwrap_or_default().parse().map_err(|e: String| {
                    AwsError::bad_request(format!(
                        "/fallback: {e} (what decides the plan's \
                         limits while Redis does not answer)"
                    ))
                })?;
                p.fallback = Some(Some(policy));
            }
            ("remove", "/fallback") => p.fallback = Some(None),
            ("add" | "remove", "/apiStages") => {
                let (api, stage) = v.and_then(|v| v.split_once(':')).ok_or_else(|| {
                    AwsError::bad_request("/apiStages takes the value <apiId>:<stage>")
                })?;
                if op.op == "add" {
                    stages_add.push((api.to_owned(), stage.to_owned()));
                } else {
                    stages_remove.push((api.to_owned(), stage.to_owned()));
                }
            }
            (o, path) => {
                return Err(AwsError::bad_request(format!(
                    "Invalid patch operation {o} {path}: supported are replace /name, \
                     /description, /throttle/rateLimit, /throttle/burstLimit, /quota/limit, \
                     /quota/period, /quota/offset, /fallback; remove /throttle, /quota, \
                     /fallback; add/remove /apiStages"
                )));
            }
        }
    }
    if throttle != current.throttle {
        p.throttle = Some(throttle);
    }
    if quota != current.quota {
        p.quota = Some(quota);
    }
    plans::update(&store, &current.id, p).await?;
    for (api, stage) in stages_add {
        plans::add_stage(&store, &current.id, &api, &stage, BTreeMap::new()).await?;
    }
    for (api, stage) in stages_remove {
        plans::remove_stage(&store, &current.id, &api, &stage).await?;
    }
    Ok(Json(plan_json(&find(&state, &id).await?)))
}

pub(crate) async fn delete(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let plan = find(&state, &id).await?;
    plans::delete(&audited(&state, &actor), &plan.id).await?;
    Ok(StatusCode::ACCEPTED)
}

fn plan_key_json(k: &keygate_types::model::ApiKey) -> Value {
    json!({ "id": k.id, "name": k.name, "type": "API_KEY" })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanKeyBody {
    key_id: Option<String>,
    key_type: Option<String>,
}

pub(crate) async fn add_key(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b: PlanKeyBody = serde_json::from_slice(&body)
        .map_err(|e| AwsError::bad_request(format!("invalid request body: {e}")))?;
    if b.key_type.as_deref().is_some_and(|t| t != "API_KEY") {
        return Err(AwsError::bad_request("keyType must be API_KEY"));
    }
    let key_id = b.key_id.ok_or_else(|| AwsError::bad_request("keyId is required"))?;
    let plan = find(&state, &id).await?;
    let key = state
        .store
        .get_key(&key_id)
        .await?
        .ok_or_else(|| AwsError::not_found("Invalid API Key identifier specified"))?;
    plans::add_key(&audited(&state, &actor), &plan.id, &key.id).await?;
    Ok((StatusCode::CREATED, Json(plan_key_json(&key))))
}

pub(crate) async fn list_keys(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let plan = find(&state, &id).await?;
    let listed = plans::keys(&state.store, &plan.id, &list_query(&q)?).await?;
    Ok(Json(listed_json(listed, plan_key_json)))
}

pub(crate) async fn get_key(
    State(state): State<Arc<AdminState>>,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let plan = find(&state, &id).await?;
    let k = state
        .store
        .get_key(&key)
        .await?
        .ok_or_else(|| AwsError::not_found("Invalid API Key identifier specified"))?;
    if !state.store.key_plan_ids(&k.id).await?.contains(&plan.id) {
        return Err(AwsError::not_found("Invalid API Key identifier specified"));
    }
    Ok(Json(plan_key_json(&k)))
}

pub(crate) async fn remove_key(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let plan = find(&state, &id).await?;
    if !state.store.key_plan_ids(&key).await?.contains(&plan.id) {
        return Err(AwsError::not_found("Invalid API Key identifier specified"));
    }
    plans::remove_key(&audited(&state, &actor), &plan.id, &key).await?;
    Ok(StatusCode::ACCEPTED)
}

fn usage_json(r: &usage::UsageReport) -> Value {
    json!({
        "usagePlanId": r.usage_plan_id,
        "startDate": r.start_date,
        "endDate": r.end_date,
        "values": r.values.iter().map(|(k, days)| {
            // AWS sends integers; without a quota keygate reports the used count as remaining 0.
            let pairs: Vec<[u64; 2]> = days.iter().map(|(u, r)| [*u, r.unwrap_or(0)]).collect();
            (k.clone(), json!(pairs))
        }).collect::<serde_json::Map<_, _>>(),
    })
}

pub(crate) async fn usage(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let from = q.get("startDate").ok_or_else(|| AwsError::bad_request("startDate is required"))?;
    let to = q.get("endDate").ok_or_else(|| AwsError::bad_request("endDate is required"))?;
    let from = usage::parse_day(from, "startDate")?;
    let to = usage::parse_day(to, "endDate")?;
    let plan = find(&state, &id).await?;
    let report =
        usage::report(&state.store, &plan.id, q.get("keyId").map(String::as_str), from, to).await?;
    Ok(Json(usage_json(&report)))
}

pub(crate) async fn update_usage(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    Path((id, key)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let patch = parse_patch(&body)?;
    let store = audited(&state, &actor);
    let plan = find(&state, &id).await?;
    let now = keygate_types::clock::Clock::now_unix_ms(&keygate_types::clock::SystemClock);
    for op in &patch.patch_operations {
        if op.op != "replace" || op.path != "/remaining" {
            return Err(AwsError::bad_request(format!(
                "Invalid patch operation {} {}: use replace /remaining",
                op.op, op.path
            )));
        }
        let remaining: u64 = number(op.value.as_deref(), "/remaining")?;
        usage::set_remaining(&store, &plan.id, &key, remaining, now).await?;
    }
    let report = usage::report_day(&state.store, &plan.id, Some(&key), now).await?;
    Ok(Json(usage_json(&report)))
}
