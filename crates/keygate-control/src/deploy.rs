//! `deploy`: snapshot a service definition as a deployment of one stage.
//!
//! Artifacts are copied into the data directory first (content-addressed), so a deployment keeps
//! running the code it was deployed with even when the build output changes. Keys named in the
//! definition are created once and reused by every later deploy: never a new value per deploy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use keygate_store::{DeployRequest, KeyStatus, Placed, PlacedKey};
use keygate_types::model::{ApiKey, NewApiKey, NewUsagePlan, UsagePlan};
use keygate_types::{
    ApiKeyValue, FunctionPlaces, HttpMethod, Integration, RuntimeKind, ServiceDefinition,
};
use serde::Serialize;

use keygate_store::Change;

use crate::{Error, Result, Store};

/// The deploy's diff against what the store holds, for the store to write as told: whether the
/// API exists, which declared plans exist (updated in place, so their usage is kept) and which
/// are new, which declared keys exist (kept, never a new value) and which are new, and which of
/// the stage's other plans each existing key leaves (a key moved between groups); with the
/// one-plan-per-API-stage rule for each key it places ([`crate::rules`]).
async fn plan_deploy(
    store: &Store,
    definition: &ServiceDefinition,
    plans: &[NewUsagePlan],
    keys: &[(NewApiKey, String)],
) -> Result<DeployRequest> {
    let api = store.get_api_by_name(&definition.service).await?;
    let mut existing = Vec::with_capacity(plans.len());
    for plan in plans {
        existing.push(store.get_plan_by_name(&plan.name).await?);
    }
    // The stage's plans once deployed: those that cover it now, and the declared ones.
    let mut stage_plans: Vec<String> = match &api {
        Some(api) => {
            let covering = store.plans_covering(&api.id, &definition.stage).await?;
            covering.into_iter().map(|p| p.id).collect()
        }
        None => Vec::new(),
    };
    stage_plans.extend(existing.iter().flatten().map(|p| p.id.clone()));
    let mut placed = Vec::with_capacity(keys.len());
    for (key, plan_name) in keys {
        let plan = plans.iter().position(|p| p.name == *plan_name).ok_or_else(|| {
            Error::Invalid(format!(
                "API key {} joins usage plan {plan_name}, which is not declared",
                key.name
            ))
        })?;
        let Some(found) = store.get_key_by_name(&key.name).await? else {
            placed.push(PlacedKey { key: Placed::New(key.clone()), plan, leaves: Vec::new() });
            continue;
        };
        let target = existing[plan].as_ref();
        let mut leaves = Vec::new();
        for id in store.key_plan_ids(&found.id).await? {
            if target.is_some_and(|t| t.id == id) {
                continue;
            }
            if stage_plans.contains(&id) {
                leaves.push(id);
            } else if let (Some(target), Some(other)) = (target, store.get_plan(&id).await?) {
                // A plan of the key that stays may not cover a stage its new plan covers (a new
                // plan covers this stage only, which the key's remaining plans do not).
                crate::rules::plans_stay_apart(&found.name, target, &other)?;
            }
        }
        placed.push(PlacedKey { key: Placed::Existing(found), plan, leaves });
    }
    Ok(DeployRequest {
        definition: definition.clone(),
        api_id: api.map(|a| a.id),
        plans: existing.into_iter().map(|e| e.map(|p| p.id)).zip(plans.iter().cloned()).collect(),
        keys: placed,
    })
}

/// Undeclared keys named one note each; more are counted in one further note.
const MAX_KEY_NOTES: usize = 10;

/// What a deploy did, ready to print (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployReport {
    pub service: String,
    pub stage: String,
    pub api_id: String,
    pub deployment_id: String,
    pub usage_plans: Vec<UsagePlan>,
    pub endpoints: Vec<Endpoint>,
    pub api_keys: Vec<DeployedKey>,
    /// Keys in the stage's plan that an earlier deployment declared and the file no longer does
    /// (kept, not deleted).
    pub undeclared_api_keys: Vec<DeployedKey>,
    pub functions: Vec<Function>,
    /// The DynamoDB tables of `resources`, created or adopted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<DeployedTable>,
    /// Notes for the user (deprecations, ignored settings, functions keygate cannot run).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub method: HttpMethod,
    pub url: String,
    pub private: bool,
    /// `private: report`: keys checked, would-be refusals recorded, nothing refused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub report: bool,
    /// The route's authorizer: a Lambda authorizer's function, or a JWT authorizer's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<String>,
}

/// A function of a deployment: its name in the file and its deployed name.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Function {
    pub name: String,
    /// `<service>-<stage>-<name>` unless the file names it.
    pub function_name: String,
}

impl Function {
    pub(crate) fn of(f: &keygate_types::FunctionSpec) -> Self {
        Self { name: f.name.clone(), function_name: f.function_name.clone() }
    }
}

/// A DynamoDB table of the deployment.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployedTable {
    pub logical_id: String,
    pub table_name: String,
    /// `created`, or `adopted` (it existed with the declared key schema; its data is kept).
    pub status: &'static str,
    /// `DeletionPolicy: Retain`: `keygate remove` keeps it.
    pub retain: bool,
}

/// A key of the deployment. `value` is set only for keys this deploy created: it is shown once.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployedKey {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_plan: Option<String>,
}

/// Deploys `definition` to its stage.
///
/// `artifacts_root` is where function artifacts are staged; `base_url` prefixes endpoint URLs;
/// `places` says where each function's settings are written (`file:line:column` by function
/// name, from `keygate-config`), for the errors about them. `dynamodb` is where the service's
/// tables are created (or adopted); a definition with tables and no engine is refused.
///
/// # Errors
/// [`Error::Invalid`] naming every function whose code, handler or runtime is missing or
/// unusable, one per line (nothing is written then), or a store error.
pub async fn deploy(
    store: &Store,
    mut definition: ServiceDefinition,
    mut notes: Vec<String>,
    places: &BTreeMap<String, FunctionPlaces>,
    artifacts_root: &Path,
    base_url: &str,
    dynamodb: Option<&keygate_dynamodb::Client>,
) -> Result<DeployReport> {
    // Stage artifacts before touching the store, so a bad artifact deploys nothing.
    stage_functions(&mut definition, &mut notes, places, artifacts_root, None)?;
    // Then the tables: a deployment whose tables do not exist is never stored.
    let tables = ensure_tables(&definition, dynamodb).await?;

    // The stage's plans: as declared, else `<service>-<stage>` without limits when keys are
    // declared (as Serverless compiles them).
    let mut plans: Vec<NewUsagePlan> = definition
        .usage_plans
        .iter()
        .map(|p| NewUsagePlan {
            name: p.name.clone(),
            description: Some(format!("{} {} stage", definition.service, definition.stage)),
            throttle: p.throttle,
            quota: p.quota,
            fallback: p.fallback,
        })
        .collect();
    if plans.is_empty() && !definition.api_keys.is_empty() {
        plans.push(NewUsagePlan {
            name: format!("{}-{}", definition.service, definition.stage),
            description: Some(format!("{} {} stage", definition.service, definition.stage)),
            throttle: None,
            quota: None,
            fallback: None,
        });
    }
    let mut keys = Vec::with_capacity(definition.api_keys.len());
    for k in &definition.api_keys {
        let plan = match &k.usage_plan {
            Some(short) => definition
                .usage_plans
                .iter()
                .find(|p| p.short_name.as_deref() == Some(short))
                .map(|p| p.name.clone()),
            None if plans.len() == 1 => Some(plans[0].name.clone()),
            None => None,
        }
        .ok_or_else(|| {
            Error::Invalid(format!(
                "API key {} belongs to no declared usage plan; group it under one of: {}",
                k.name,
                plans.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let new = NewApiKey {
            name: k.name.clone(),
            value: k.value.clone().unwrap_or_else(ApiKeyValue::generate),
            description: k.description.clone(),
            customer_id: k.customer_id.clone(),
            enabled: k.enabled,
            expires: None,
        };
        keys.push((new, plan));
    }
    // Values the deploy may create, by name, so they can be shown once.
    let values: Vec<(String, ApiKeyValue)> =
        keys.iter().map(|(k, _)| (k.name.clone(), k.value.clone())).collect();
    let outcome = crate::apply_checked!(store, {
        Change::Deploy(plan_deploy(store, &definition, &plans, &keys).await?)
    })
    .into_deployed()?;

    let def = &outcome.deployment.definition;
    // An operator's switch of the stage's key checks outlives deploys: the endpoints as served.
    let switch = store
        .list_stages(&outcome.api.id)
        .await?
        .into_iter()
        .find(|s| s.name == def.stage)
        .and_then(|s| s.enforcement);
    if let Some(switch) = switch {
        notes.push(format!(
            "stage {} is switched to `{}` by `keygate enforcement set` (kept across deploys; \
             `keygate enforcement set --stage {} deployed` hands its key checks back to the file)",
            def.stage,
            switch.as_str(),
            def.stage
        ));
    }
    let endpoints = endpoints(&def.clone().switched(switch), base_url);
    let api_keys = outcome
        .keys
        .iter()
        .map(|(k, status, plan)| DeployedKey {
            id: k.id.clone(),
            name: k.name.clone(),
            usage_plan: Some(plan.clone()),
            value: (*status == KeyStatus::Created).then(|| {
                values
                    .iter()
                    .find(|(n, _)| *n == k.name)
                    .map(|(_, v)| v.expose().to_owned())
                    .unwrap_or_default()
            }),
        })
        .collect();
    // Only keys an earlier deployment of the file declared are "no longer declared": keys made
    // with `keygate keys create --usage-plan` (or the admin API) never were.
    let mut once_declared = BTreeSet::new();
    if !outcome.undeclared.is_empty() {
        for d in store.list_deployments(&outcome.api.id).await? {
            once_declared.extend(d.definition.api_keys.into_iter().map(|k| k.name));
        }
    }
    let undeclared_api_keys: Vec<DeployedKey> = outcome
        .undeclared
        .iter()
        .filter(|k| once_declared.contains(&k.name))
        .map(key_ref)
        .collect();
    // One note per key, up to a screenful: a file that stopped declaring 10,000 imported keys
    // (they are managed with `keygate keys` now) must not print 10,000 lines.
    for k in undeclared_api_keys.iter().take(MAX_KEY_NOTES) {
        notes.push(format!(
            "API key {} ({}) is no longer declared in the file; it was kept so its users are not \
             locked out (delete it with `keygate keys delete {}`)",
            k.name, k.id, k.id
        ));
    }
    let more = undeclared_api_keys.len().saturating_sub(MAX_KEY_NOTES);
    if more > 0 {
        notes.push(format!(
            "{more} more API keys are no longer declared in the file and were kept (all are \
             listed under undeclaredApiKeys in `keygate deploy --json`)"
        ));
    }
    Ok(DeployReport {
        service: def.service.clone(),
        stage: def.stage.clone(),
        api_id: outcome.api.id.clone(),
        deployment_id: outcome.deployment.id.clone(),
        usage_plans: outcome.plans.clone(),
        endpoints,
        api_keys,
        undeclared_api_keys,
        functions: def.functions.iter().map(Function::of).collect(),
        tables,
        notes,
    })
}

/// Copies the code of every function that runs into `artifacts_root` (content-addressed) and
/// points its `artifact` there: a `provided.*` function's `package.artifact` (its bootstrap), a
/// Node.js or Python function's `package.artifact` or, without one, the service directory. Checks
/// that each interpreter is installed (noting once which version runs each kind) and each
/// handler's file exists. Every problem is reported, each with the place in the file it is about.
fn stage_functions(
    definition: &mut ServiceDefinition,
    notes: &mut Vec<String>,
    places: &BTreeMap<String, FunctionPlaces>,
    artifacts_root: &Path,
    only: Option<&str>,
) -> Result<()> {
    let base_dir = definition.base_dir.clone();
    // Interpreters and the reach of the staged code are checked for a user functions run as (as
    // root, an id of the function range, which owns no file, unless KEYGATE_FUNCTION_USER, which
    // `serve --function-user` also reads, names one user for all).
    let requested = std::env::var("KEYGATE_FUNCTION_USER").ok().filter(|u| !u.is_empty());
    let run_as = keygate_functions::FunctionUsers::for_host(
        requested.as_deref(),
        keygate_functions::IdRange::default(),
    )
    .ok()
    .and_then(|users| users.probe());
    let mut problems = Vec::new();
    // The staged copy of each code source (functions share the service directory).
    let mut staged_code: BTreeMap<(std::path::PathBuf, Vec<String>), std::path::PathBuf> =
        BTreeMap::new();
    // Whether each runtime kind's interpreter was found (checked and noted once).
    let mut interpreters: Vec<(RuntimeKind, bool)> = Vec::new();
    // Why the function user cannot reach the staged code, if it cannot.
    let mut unreachable: Option<String> = None;
    // Functions that guard routes as Lambda authorizers run too, whatever their own events.
    let authorizers: std::collections::BTreeSet<String> = definition
        .functions
        .iter()
        .flat_map(|f| &f.events)
        .filter_map(|e| e.authorizer.as_ref()?.lambda_function().map(str::to_owned))
        .collect();
    for f in &mut definition.functions {
        match only {
            Some(name) if f.name != name => continue,
            Some(_) => {}
            // A function reached only through http-proxy or mock events never runs.
            None if f.streams.is_empty()
                && !authorizers.contains(&f.name)
                && !f.events.iter().any(|e| e.integration == Integration::LambdaProxy) =>
            {
                continue;
            }
            None => {}
        }
        let place = places.get(&f.name).cloned().unwrap_or_default();
        let at = |place: &str| if place.is_empty() { String::new() } else { format!("{place}: ") };
        let kind = f.runtime.kind();
        let interpreter_ok = match interpreters.iter().find(|(k, _)| *k == kind) {
            Some((_, ok)) => *ok,
            None => {
                let ok = match keygate_functions::check_runtime(&f.runtime, run_as) {
                    Ok(None) => true,
                    Ok(Some(runs_on)) => {
                        notes.push(format!(
                            "{} functions run on {runs_on}, whatever version their runtime names \
                             ({})",
                            kind.family(),
                            f.runtime
                        ));
                        true
                    }
                    Err(e) => {
                        problems.push(format!(
                            "{}functions.{}.runtime: {e}",
                            at(&place.runtime),
                            f.name
                        ));
                        false
                    }
                };
                interpreters.push((kind, ok));
                ok
            }
        };
        let staged = if kind == RuntimeKind::Provided {
            let Some(src) = &f.artifact else {
                problems.push(format!(
                    "{}functions.{}.package.artifact: required for runtime {}: the path of the \
                     function's bootstrap executable, a directory holding `bootstrap`, or a zip \
                     holding it",
                    at(&place.artifact),
                    f.name,
                    f.runtime
                ));
                continue;
            };
            keygate_functions::stage_artifact(src, artifacts_root)
        } else {
            let src = f.artifact.clone().unwrap_or_else(|| base_dir.clone());
            let key = (src, f.package_patterns.clone());
            match staged_code.get(&key) {
                Some(staged) => Ok(staged.clone()),
                None => keygate_functions::stage_code(&key.0, artifacts_root, &key.1).inspect(
                    |staged| {
                        staged_code.insert(key.clone(), staged.clone());
                    },
                ),
            }
        };
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                problems.push(format!(
                    "{}functions.{}.package.artifact: {e}",
                    at(&place.artifact),
                    f.name
                ));
                continue;
            }
        };
        if interpreter_ok
            && let Err(e) = keygate_functions::check_handler(&f.runtime, &f.handler, &staged)
        {
            problems.push(format!("{}functions.{}.handler: {e}", at(&place.handler), f.name));
        }
        // Said once: it is about the data directory, the same for every function.
        if let Some(who) = run_as
            && unreachable.is_none()
            && let Err(e) = keygate_functions::check_reachable(&staged, who)
        {
            unreachable = Some(e);
        }
        f.artifact = Some(staged);
    }
    problems.extend(unreachable);
    if problems.is_empty() { Ok(()) } else { Err(Error::Invalid(problems.join("\n"))) }
}

/// Stages the code of the one function `name` of `definition` as a deploy would (checked the
/// same way), whatever its events: `keygate invoke` runs it from there.
pub fn stage_function(
    definition: &mut ServiceDefinition,
    name: &str,
    places: &BTreeMap<String, FunctionPlaces>,
    artifacts_root: &Path,
) -> Result<()> {
    let mut notes = Vec::new();
    stage_functions(definition, &mut notes, places, artifacts_root, Some(name))
}

/// Creates the definition's tables, or adopts existing ones with the declared keys. Every table
/// is tried; the problems are reported together.
async fn ensure_tables(
    definition: &ServiceDefinition,
    dynamodb: Option<&keygate_dynamodb::Client>,
) -> Result<Vec<DeployedTable>> {
    if definition.tables.is_empty() {
        return Ok(Vec::new());
    }
    let Some(client) = dynamodb else {
        return Err(Error::Invalid(format!(
            "{} declares DynamoDB tables, and no DynamoDB engine was given",
            definition.service
        )));
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for t in &definition.tables {
        match keygate_dynamodb::tables::ensure(client, t).await {
            Ok(outcome) => out.push(DeployedTable {
                logical_id: t.logical_id.clone(),
                table_name: t.table_name.clone(),
                status: match outcome {
                    keygate_dynamodb::tables::Outcome::Created => "created",
                    keygate_dynamodb::tables::Outcome::Adopted => "adopted",
                },
                retain: t.retain,
            }),
            Err(e) => problems.push(format!("resources.Resources.{}: {e}", t.logical_id)),
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(Error::Invalid(problems.join("\n"))) }
}

/// The endpoint URLs of a definition, in file order.
pub fn endpoints(def: &ServiceDefinition, base_url: &str) -> Vec<Endpoint> {
    let base = base_url.trim_end_matches('/');
    let mut out = Vec::new();
    for f in &def.functions {
        for e in &f.events {
            let path = if e.path == "/" { "" } else { e.path.as_str() };
            out.push(Endpoint {
                method: e.method,
                url: format!("{base}/{}{path}", def.stage),
                private: e.private,
                report: e.report && !e.private,
                authorizer: e.authorizer.as_ref().map(|a| a.function.clone()),
            });
        }
    }
    out
}

fn key_ref(k: &ApiKey) -> DeployedKey {
    DeployedKey { id: k.id.clone(), name: k.name.clone(), value: None, usage_plan: None }
}
