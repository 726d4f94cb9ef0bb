//! The rule a change must keep that spans records: a key is in at most one usage plan per API
//! stage (AWS's rule: which plan's limits would apply otherwise?). It is checked here, as plain
//! code over what the store returns, so a backend stores and never decides. A check reads the
//! store, and the change it allowed is applied only if the store has not changed since
//! ([`apply_checked!`](crate::apply_checked)): two changes made at once cannot each pass the check and together
//! break the rule.

use keygate_types::model::{ApiKey, ApiStage, UsagePlan};

use crate::{Error, Result, Store};

/// Whether `plan` covers `stage`'s API stage.
fn covers(plan: &UsagePlan, stage: &ApiStage) -> bool {
    plan.api_stages.iter().any(|s| s.api_id == stage.api_id && s.stage == stage.stage)
}

/// `key` may join `plan`: no other plan the key is in covers one of `plan`'s API stages.
pub(crate) async fn key_may_join(store: &Store, key: &ApiKey, plan: &UsagePlan) -> Result<()> {
    for id in store.key_plan_ids(&key.id).await? {
        if id == plan.id {
            continue;
        }
        let Some(other) = store.get_plan(&id).await? else { continue };
        if let Some(s) = other.api_stages.iter().find(|s| covers(plan, s)) {
            return Err(Error::Conflict(format!(
                "API key {} is already in usage plan {}, which covers {}/{} too; a key may be in \
                 only one plan per API stage (remove it from {} first)",
                key.name, other.name, s.api_id, s.stage, other.name
            )));
        }
    }
    Ok(())
}

/// `plan` may cover the API stage `api_id`/`stage`: none of its keys is in another plan that
/// covers it.
pub(crate) async fn plan_may_cover(
    store: &Store,
    plan: &UsagePlan,
    api_id: &str,
    stage: &str,
) -> Result<()> {
    for other in store.plans_covering(api_id, stage).await? {
        if other.id == plan.id {
            continue;
        }
        if let Some(key) = store.shared_key(&plan.id, &other.id).await? {
            return Err(Error::Conflict(format!(
                "API key {key} of this plan is also in usage plan {}, which covers \
                 {api_id}/{stage}; a key may be in only one plan per API stage",
                other.name
            )));
        }
    }
    Ok(())
}

/// A new key named `key` may join every plan of `plan_ids` (those that exist: a missing one is
/// the store's to refuse): no two of them cover the same API stage.
pub(crate) async fn plans_may_share_a_key(
    store: &Store,
    key: &str,
    plan_ids: &[String],
) -> Result<()> {
    let mut plans: Vec<UsagePlan> = Vec::with_capacity(plan_ids.len());
    for id in plan_ids {
        if plans.iter().any(|p| p.id == *id) {
            continue;
        }
        let Some(plan) = store.get_plan(id).await? else { continue };
        if let Some((other, s)) =
            plans.iter().find_map(|o| plan.api_stages.iter().find(|s| covers(o, s)).map(|s| (o, s)))
        {
            return Err(Error::Conflict(format!(
                "API key {key} cannot be in usage plans {} and {}: both cover {}/{}, and a key \
                 may be in only one plan per API stage",
                other.name, plan.name, s.api_id, s.stage
            )));
        }
        plans.push(plan);
    }
    Ok(())
}

/// A key named `key` in plan `other` may also be in `plan`: the two cover no API stage in
/// common.
pub(crate) fn plans_stay_apart(key: &str, plan: &UsagePlan, other: &UsagePlan) -> Result<()> {
    match other.api_stages.iter().find(|s| covers(plan, s)) {
        Some(s) => Err(Error::Conflict(format!(
            "API key {key} is in usage plan {}, which also covers {}/{}; a key may be in only one \
             plan per API stage",
            other.name, s.api_id, s.stage
        ))),
        None => Ok(()),
    }
}
