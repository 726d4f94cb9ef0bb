//! Usage-plan operations: create, find, update, delete, and the key and API-stage associations.
//! Every input is validated here, before the store is touched, so bad input changes nothing.

use std::collections::BTreeMap;

use keygate_types::HttpMethod;
use keygate_types::model::{ApiKey, ApiStage, NewUsagePlan, UsagePlan, UsagePlanPatch};
use keygate_types::plan::{Quota, Throttle};

use keygate_store::Change;

use crate::{Error, Result, Store, keys};

/// Checks a throttle: a finite, non-negative rate.
///
/// # Errors
/// [`Error::Invalid`] naming the field.
pub fn check_throttle(t: &Throttle, field: &str) -> Result<()> {
    if !t.rate_limit.is_finite() || t.rate_limit < 0.0 {
        return Err(Error::Invalid(format!(
            "{field}rateLimit must be a number of requests per second, 0 or more (fractions \
             allowed), not {}",
            t.rate_limit
        )));
    }
    Ok(())
}

/// Checks a quota's offset against its period.
///
/// # Errors
/// [`Error::Invalid`] naming the field.
pub fn check_quota(q: &Quota, field: &str) -> Result<()> {
    if q.offset > q.period.max_offset() {
        let meaning = match q.period {
            keygate_types::plan::QuotaPeriod::Day => "a DAY quota takes no offset",
            keygate_types::plan::QuotaPeriod::Week => {
                "for WEEK the offset is the weekday the week starts on, 0 = Sunday .. 6 = Saturday"
            }
            keygate_types::plan::QuotaPeriod::Month => {
                "for MONTH the offset is the number of days after the 1st the month starts, 0-27"
            }
        };
        return Err(Error::Invalid(format!(
            "{field}offset {} is out of range: {meaning}",
            q.offset
        )));
    }
    Ok(())
}

/// Creates a plan, with its API stages (API id or name, stage name, method throttles) if any:
/// all in one transaction, so a bad stage creates nothing (as on AWS).
///
/// # Errors
/// [`Error::Invalid`] for bad limits or name or a method a stage does not have,
/// [`Error::NotFound`] for a stage that is not deployed, [`Error::Conflict`] for a taken name.
pub async fn create(
    store: &Store,
    plan: NewUsagePlan,
    stages: Vec<(String, String, BTreeMap<String, Throttle>)>,
) -> Result<UsagePlan> {
    check_name(&plan.name)?;
    if let Some(d) = &plan.description {
        crate::keys::check_text("description", d)?;
    }
    if let Some(t) = &plan.throttle {
        check_throttle(t, "throttle.")?;
    }
    if let Some(q) = &plan.quota {
        check_quota(q, "quota.")?;
    }
    let mut checked = Vec::with_capacity(stages.len());
    for (api, stage, throttle) in stages {
        checked.push(checked_stage(store, &api, &stage, throttle).await?);
    }
    let stages = checked;
    Ok(store.apply(Change::CreatePlan { plan, stages }).await?.into_plan()?)
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::Invalid("a usage plan name must not be empty".to_owned()));
    }
    crate::keys::check_text("name", name)
}

/// Finds a plan by id, else by name.
///
/// # Errors
/// [`Error::NotFound`] when neither matches.
pub async fn find(store: &Store, id_or_name: &str) -> Result<UsagePlan> {
    if let Some(p) = store.get_plan(id_or_name).await? {
        return Ok(p);
    }
    store.get_plan_by_name(id_or_name).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "usage plan {id_or_name:?} not found (give a plan id or name; `keygate plans list` \
             shows them)"
        ))
    })
}

/// Updates a plan's name, description, throttle or quota. Running gateways apply the change
/// within a second; usage counted so far is kept.
///
/// # Errors
/// As [`create`], plus [`Error::NotFound`].
pub async fn update(store: &Store, id_or_name: &str, patch: UsagePlanPatch) -> Result<UsagePlan> {
    let plan = find(store, id_or_name).await?;
    if let Some(n) = &patch.name {
        check_name(n)?;
    }
    if let Some(Some(d)) = &patch.description {
        crate::keys::check_text("description", d)?;
    }
    if let Some(Some(t)) = &patch.throttle {
        check_throttle(t, "throttle.")?;
    }
    if let Some(Some(q)) = &patch.quota {
        check_quota(q, "quota.")?;
    }
    Ok(store.apply(Change::UpdatePlan { id: plan.id, patch }).await?.into_plan()?)
}

/// Deletes a plan, its associations and its usage records.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn delete(store: &Store, id_or_name: &str) -> Result<UsagePlan> {
    let plan = find(store, id_or_name).await?;
    store.apply(Change::DeletePlan { id: plan.id.clone() }).await?;
    Ok(plan)
}

/// Adds a key (id or name) to a plan.
///
/// # Errors
/// [`Error::NotFound`] for an unknown plan or key; [`Error::Conflict`] when the key is already
/// in another plan covering one of this plan's stages.
pub async fn add_key(store: &Store, plan: &str, key: &str) -> Result<(UsagePlan, String)> {
    let key = keys::find(store, key).await?;
    let mut found;
    crate::apply_checked!(store, {
        let plan = find(store, plan).await?;
        crate::rules::key_may_join(store, &key, &plan).await?;
        let change = Change::AddPlanKey { plan_id: plan.id.clone(), key_id: key.id.clone() };
        found = plan;
        change
    });
    Ok((found, key.id))
}

/// Removes a key (id or name) from a plan.
///
/// # Errors
/// [`Error::NotFound`] for an unknown plan or key or a key not in the plan.
pub async fn remove_key(store: &Store, plan: &str, key: &str) -> Result<(UsagePlan, String)> {
    let plan = find(store, plan).await?;
    let key = keys::find(store, key).await?;
    store.apply(Change::RemovePlanKey { plan_id: plan.id.clone(), key_id: key.id.clone() }).await?;
    Ok((plan, key.id))
}

/// Parses a method throttle `"/candidates/GET=5:10"` (rate:burst) into its method key and
/// throttle.
///
/// # Errors
/// [`Error::Invalid`] saying what the expected form is.
pub fn parse_method_throttle(s: &str) -> Result<(String, Throttle)> {
    let bad = |why: &str| {
        Error::Invalid(format!(
            "method throttle {s:?}: {why}; expected <resource path>/<METHOD>=<rateLimit>:<burstLimit>, \
             e.g. /candidates/GET=5:10"
        ))
    };
    let (key, limits) = s.split_once('=').ok_or_else(|| bad("missing '='"))?;
    let (path, method) = key.rsplit_once('/').ok_or_else(|| bad("missing the method"))?;
    if !path.starts_with('/') {
        return Err(bad("the resource path must start with '/'"));
    }
    if method != "*" && HttpMethod::parse(method).is_none() {
        return Err(bad(&format!("{method:?} is not an HTTP method")));
    }
    let (rate, burst) = limits.split_once(':').ok_or_else(|| bad("missing ':'"))?;
    let rate_limit: f64 = rate.trim().parse().map_err(|_| bad("rateLimit is not a number"))?;
    let burst_limit: u32 =
        burst.trim().parse().map_err(|_| bad("burstLimit is not a whole number, 0 or more"))?;
    let t = Throttle { rate_limit, burst_limit };
    check_throttle(&t, "")?;
    Ok((format!("{path}/{}", method.to_ascii_uppercase()), t))
}

/// Adds an API stage (API id or name, stage name) to a plan, with optional method throttles.
/// The stage must be deployed, and each throttled method must exist in it.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Invalid`] or [`Error::Conflict`] as the cause is.
pub async fn add_stage(
    store: &Store,
    plan: &str,
    api: &str,
    stage: &str,
    throttle: BTreeMap<String, Throttle>,
) -> Result<UsagePlan> {
    let stage = checked_stage(store, api, stage, throttle).await?;
    let mut plan_id = String::new();
    crate::apply_checked!(store, {
        let plan = find(store, plan).await?;
        crate::rules::plan_may_cover(store, &plan, &stage.api_id, &stage.stage).await?;
        plan_id.clone_from(&plan.id);
        Change::PutPlanStage { plan_id: plan.id, stage: stage.clone() }
    });
    find(store, &plan_id).await
}

/// The API stage a plan may cover: deployed, and with every method it throttles.
async fn checked_stage(
    store: &Store,
    api: &str,
    stage: &str,
    throttle: BTreeMap<String, Throttle>,
) -> Result<ApiStage> {
    let (api_id, deployed) = deployed_stage(store, api, stage).await?;
    for method_key in throttle.keys() {
        let (path, method) = method_key.rsplit_once('/').unwrap_or((method_key, ""));
        let path = if path.is_empty() { "/" } else { path };
        let exists = deployed.functions.iter().flat_map(|f| &f.events).any(|e| {
            (e.path == path || path == "/*")
                && (method == "*" || e.method == HttpMethod::Any || e.method.as_str() == method)
        });
        if !exists {
            return Err(Error::Invalid(format!(
                "method throttle {method_key}: stage {stage} of {api} has no method {method} on \
                 {path}"
            )));
        }
    }
    Ok(ApiStage { api_id, stage: stage.to_owned(), throttle })
}

/// Removes an API stage from a plan.
///
/// # Errors
/// [`Error::NotFound`] when the plan, API or association does not exist.
pub async fn remove_stage(store: &Store, plan: &str, api: &str, stage: &str) -> Result<UsagePlan> {
    let plan = find(store, plan).await?;
    let api_id = find_api(store, api).await?;
    let change =
        Change::RemovePlanStage { plan_id: plan.id.clone(), api_id, stage: stage.to_owned() };
    store.apply(change).await?;
    find(store, &plan.id).await
}

async fn find_api(store: &Store, api: &str) -> Result<String> {
    let apis = store.list_apis().await?;
    apis.into_iter().find(|a| a.id == api || a.name == api).map(|a| a.id).ok_or_else(|| {
        Error::NotFound(format!("API {api:?} not found (give its id or service name)"))
    })
}

async fn deployed_stage(
    store: &Store,
    api: &str,
    stage: &str,
) -> Result<(String, keygate_types::ServiceDefinition)> {
    let api_id = find_api(store, api).await?;
    let st = store
        .list_stages(&api_id)
        .await?
        .into_iter()
        .find(|s| s.name == stage)
        .ok_or_else(|| Error::NotFound(format!("API {api} has no deployed stage {stage}")))?;
    let d = store
        .get_deployment(&st.deployment_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("deployment {} not found", st.deployment_id)))?;
    Ok((api_id, d.definition))
}

/// One page of plans by name.
///
/// # Errors
/// A store error.
pub async fn list(store: &Store, query: &crate::ListQuery) -> Result<crate::Listed<UsagePlan>> {
    let items = store.list_plans(query.page()).await?;
    Ok(crate::Listed::cut(query, items, |p| &p.name))
}

/// One page of a plan's keys by name.
///
/// # Errors
/// A store error.
pub async fn keys(
    store: &Store,
    plan_id: &str,
    query: &crate::ListQuery,
) -> Result<crate::Listed<ApiKey>> {
    let items = store.list_plan_keys(plan_id, query.page()).await?;
    Ok(crate::Listed::cut(query, items, |k| &k.name))
}

/// Every plan, page by page (plans are few: a deployment has one per stage).
///
/// # Errors
/// A store error.
pub async fn all(store: &Store) -> Result<Vec<UsagePlan>> {
    let first = crate::ListQuery::first(crate::MAX_PAGE);
    crate::every_page(first, |q| async move { list(store, &q).await }).await
}

/// Every key of a plan, page by page.
///
/// # Errors
/// A store error.
pub async fn all_keys(store: &Store, plan_id: &str) -> Result<Vec<ApiKey>> {
    let first = crate::ListQuery::first(crate::MAX_PAGE);
    crate::every_page(first, |q| async move { keys(store, plan_id, &q).await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_throttles_parse() {
        let (k, t) = parse_method_throttle("/candidates/get=2.5:10").unwrap();
        assert_eq!(k, "/candidates/GET");
        assert_eq!(t, Throttle { rate_limit: 2.5, burst_limit: 10 });
        for bad in
            ["/x/GET", "/x/FETCH=1:1", "x/GET=1:1", "/x/GET=a:1", "/x/GET=1:-1", "/x/GET=-1:1"]
        {
            assert!(parse_method_throttle(bad).is_err(), "{bad}");
        }
    }
}
