//! APIs, their stages and deployments, and the deploy that writes them all.

use keygate_types::ServiceDefinition;
use keygate_types::model::{Api, Deployment, Stage, new_id};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use super::keys::{KEY_COLUMNS, insert_key, key_from_row};
use super::plans::{insert_plan, plan_by};
use super::{map_err, now, parse_json, to_json};
use crate::{DeployOutcome, DeployRequest, Error, KeyStatus, Placed, Result};

pub(super) fn api_from_row(r: &PgRow) -> Api {
    Api { id: r.get("id"), name: r.get("name"), created_date: r.get("created_date") }
}

pub(super) fn deployment_from_row(r: &PgRow) -> Result<Deployment> {
    Ok(Deployment {
        id: r.get("id"),
        api_id: r.get("api_id"),
        created_date: r.get("created_date"),
        definition: parse_json(r.get("definition"), "deployment")?,
    })
}

/// Writes the deployment keygate-control planned ([`DeployRequest`]): nothing is looked up by
/// name or decided here.
pub(super) async fn deploy(tx: &mut PgConnection, req: DeployRequest) -> Result<DeployOutcome> {
    let def = &req.definition;
    let t = now();
    let def_json = to_json(def)?;

    let api = match &req.api_id {
        Some(id) => {
            sqlx::query("UPDATE apis SET definition = $1 WHERE id = $2")
                .bind(&def_json)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            let row = sqlx::query("SELECT id, name, created_date FROM apis WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?
                .ok_or_else(|| Error::NotFound(format!("REST API {id} not found")))?;
            api_from_row(&row)
        }
        None => {
            let api = Api { id: new_id(10), name: def.service.clone(), created_date: t };
            sqlx::query(
                "INSERT INTO apis (id, name, definition, created_date) VALUES ($1, $2, $3, $4)",
            )
            .bind(&api.id)
            .bind(&api.name)
            .bind(&def_json)
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            api
        }
    };

    // The stage's plans, each linked to the stage.
    let mut plan_ids = Vec::with_capacity(req.plans.len());
    for (existing, plan) in &req.plans {
        let id = match existing {
            Some(id) => {
                let done =
                    // A deploy that does not say the Redis policy keeps the plan's.
                    sqlx::query(
                        "UPDATE usage_plans SET throttle = $1, quota = $2, \
                         fallback = COALESCE($3, fallback) WHERE id = $4",
                    )
                    .bind(plan.throttle.as_ref().map(to_json).transpose()?)
                    .bind(plan.quota.as_ref().map(to_json).transpose()?)
                    .bind(plan.fallback.map(keygate_types::plan::Fallback::as_str))
                    .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(Error::NotFound(format!("usage plan {id} not found")));
                }
                id.clone()
            }
            None => insert_plan(&mut *tx, plan).await?,
        };
        sqlx::query(
            "INSERT INTO usage_plan_stages (plan_id, api_id, stage) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&api.id)
        .bind(&def.stage)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        plan_ids.push(id);
    }

    // The declared keys: created or kept, out of the plans they leave, into their plan.
    let mut keys = Vec::with_capacity(req.keys.len());
    for placed in req.keys {
        let (Some(plan_id), Some((_, plan))) =
            (plan_ids.get(placed.plan), req.plans.get(placed.plan))
        else {
            return Err(Error::corrupt(format!(
                "a deploy's key joins plan #{}, which the deploy does not have",
                placed.plan
            )));
        };
        let (key, status) = match placed.key {
            Placed::Existing(key) => (key, KeyStatus::Existing),
            Placed::New(key) => (insert_key(&mut *tx, &key).await?, KeyStatus::Created),
        };
        for left in &placed.leaves {
            sqlx::query("DELETE FROM usage_plan_keys WHERE key_id = $1 AND plan_id = $2")
                .bind(&key.id)
                .bind(left)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        sqlx::query(
            "INSERT INTO usage_plan_keys (plan_id, key_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(plan_id)
        .bind(&key.id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        keys.push((key, status, plan.name.clone()));
    }

    // Keys still in this stage's plans that the file no longer declares: reported, never
    // deleted.
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE id IN \
         (SELECT pk.key_id FROM usage_plan_keys pk JOIN usage_plan_stages s \
          ON s.plan_id = pk.plan_id WHERE s.api_id = $1 AND s.stage = $2) ORDER BY name"
    );
    let undeclared = sqlx::query(AssertSqlSafe(sql))
        .bind(&api.id)
        .bind(&def.stage)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?
        .iter()
        .map(key_from_row)
        .filter(|k| !keys.iter().any(|(d, _, _)| d.id == k.id))
        .collect();

    // The immutable snapshot, and the stage pointing at it.
    let deployment = Deployment {
        id: new_id(6),
        api_id: api.id.clone(),
        created_date: t,
        definition: def.clone(),
    };
    sqlx::query(
        "INSERT INTO deployments (id, api_id, created_date, definition) VALUES ($1, $2, $3, $4)",
    )
    .bind(&deployment.id)
    .bind(&api.id)
    .bind(t)
    .bind(&def_json)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "INSERT INTO stages (api_id, name, deployment_id, created_date, last_updated_date) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (api_id, name) DO UPDATE SET \
         deployment_id = excluded.deployment_id, last_updated_date = excluded.last_updated_date",
    )
    .bind(&api.id)
    .bind(&def.stage)
    .bind(&deployment.id)
    .bind(t)
    .bind(t)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;

    let mut plans = Vec::with_capacity(plan_ids.len());
    for id in &plan_ids {
        plans.extend(plan_by(&mut *tx, "id", id).await?);
    }
    Ok(DeployOutcome { api, deployment, plans, keys, undeclared })
}

pub(super) async fn delete_stage(tx: &mut PgConnection, api_id: &str, stage: &str) -> Result<()> {
    sqlx::query("DELETE FROM usage_plan_stages WHERE api_id = $1 AND stage = $2")
        .bind(api_id)
        .bind(stage)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let done = sqlx::query("DELETE FROM stages WHERE api_id = $1 AND name = $2")
        .bind(api_id)
        .bind(stage)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("no stage {stage} of API {api_id}")));
    }
    Ok(())
}

pub(super) async fn put_api_definition(
    tx: &mut PgConnection,
    api_id: &str,
    definition: &ServiceDefinition,
) -> Result<()> {
    let done = sqlx::query("UPDATE apis SET definition = $1 WHERE id = $2")
        .bind(to_json(definition)?)
        .bind(api_id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("REST API {api_id} not found")));
    }
    Ok(())
}

pub(super) async fn create_deployment(
    tx: &mut PgConnection,
    api_id: &str,
    stage: &str,
) -> Result<Deployment> {
    let def: Option<String> = sqlx::query_scalar("SELECT definition FROM apis WHERE id = $1")
        .bind(api_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    let def = def.ok_or_else(|| Error::NotFound(format!("REST API {api_id} not found")))?;
    let mut definition: ServiceDefinition = parse_json(&def, "API definition")?;
    definition.stage = stage.to_owned();
    let t = now();
    let deployment =
        Deployment { id: new_id(6), api_id: api_id.to_owned(), created_date: t, definition };
    sqlx::query(
        "INSERT INTO deployments (id, api_id, created_date, definition) VALUES ($1, $2, $3, $4)",
    )
    .bind(&deployment.id)
    .bind(api_id)
    .bind(t)
    .bind(to_json(&deployment.definition)?)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "INSERT INTO stages (api_id, name, deployment_id, created_date, last_updated_date) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (api_id, name) DO UPDATE SET \
         deployment_id = excluded.deployment_id, last_updated_date = excluded.last_updated_date",
    )
    .bind(api_id)
    .bind(stage)
    .bind(&deployment.id)
    .bind(t)
    .bind(t)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(deployment)
}

pub(super) async fn list_apis(pool: &PgPool) -> Result<Vec<Api>> {
    let rows = sqlx::query("SELECT id, name, created_date FROM apis ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    Ok(rows.iter().map(api_from_row).collect())
}

pub(super) async fn get_api_by_name(pool: &PgPool, name: &str) -> Result<Option<Api>> {
    let row = sqlx::query("SELECT id, name, created_date FROM apis WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    Ok(row.as_ref().map(api_from_row))
}

pub(super) async fn list_stages(pool: &PgPool, api_id: &str) -> Result<Vec<Stage>> {
    let rows = sqlx::query(
        "SELECT api_id, name, deployment_id, created_date, last_updated_date, enforcement \
         FROM stages \
         WHERE api_id = $1 ORDER BY name",
    )
    .bind(api_id)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(rows
        .iter()
        .map(|r| Stage {
            api_id: r.get("api_id"),
            name: r.get("name"),
            deployment_id: r.get("deployment_id"),
            created_date: r.get("created_date"),
            last_updated_date: r.get("last_updated_date"),
            enforcement: r.get::<Option<String>, _>("enforcement").and_then(|e| e.parse().ok()),
        })
        .collect())
}

pub(super) async fn get_api(pool: &PgPool, id: &str) -> Result<Option<Api>> {
    let row = sqlx::query("SELECT id, name, created_date FROM apis WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    Ok(row.as_ref().map(api_from_row))
}

pub(super) async fn get_api_definition(
    pool: &PgPool,
    api_id: &str,
) -> Result<Option<ServiceDefinition>> {
    let row: Option<String> = sqlx::query_scalar("SELECT definition FROM apis WHERE id = $1")
        .bind(api_id)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    row.map(|d| parse_json(&d, "API definition")).transpose()
}

pub(super) async fn list_deployments(pool: &PgPool, api_id: &str) -> Result<Vec<Deployment>> {
    let rows = sqlx::query(
        "SELECT id, api_id, created_date, definition FROM deployments WHERE api_id = $1 \
         ORDER BY created_date, id",
    )
    .bind(api_id)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    rows.iter().map(deployment_from_row).collect()
}

pub(super) async fn get_deployment(pool: &PgPool, id: &str) -> Result<Option<Deployment>> {
    let row =
        sqlx::query("SELECT id, api_id, created_date, definition FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(map_err)?;
    row.as_ref().map(deployment_from_row).transpose()
}

pub(super) async fn set_stage_enforcement(
    tx: &mut PgConnection,
    api_id: &str,
    stage: &str,
    enforcement: Option<keygate_types::Enforcement>,
) -> Result<()> {
    let done = sqlx::query("UPDATE stages SET enforcement = $1 WHERE api_id = $2 AND name = $3")
        .bind(enforcement.map(keygate_types::Enforcement::as_str))
        .bind(api_id)
        .bind(stage)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("API {api_id} has no stage {stage}")));
    }
    Ok(())
}
