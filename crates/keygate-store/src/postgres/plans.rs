//! Usage plans, their API stages (with method throttles) and their keys.

use keygate_types::model::{ApiKey, ApiStage, NewUsagePlan, UsagePlan, UsagePlanPatch, new_id};
use keygate_types::plan::Fallback;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use super::keys::{KEY_COLUMNS, key_by, key_from_row};
use super::{bind_page, map_err, now, paged, parse_json, to_json};
use crate::{Error, Page, Result};

pub(super) const PLAN_COLUMNS: &str = "id, name, description, throttle, quota, fallback";

pub(super) async fn plan_by(
    conn: &mut PgConnection,
    column: &str,
    v: &str,
) -> Result<Option<UsagePlan>> {
    let sql = format!("SELECT {PLAN_COLUMNS} FROM usage_plans WHERE {column} = $1");
    let Some(row) = sqlx::query(AssertSqlSafe(sql))
        .bind(v)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?
    else {
        return Ok(None);
    };
    plan_from_row(conn, &row).await.map(Some)
}

pub(super) async fn plan_from_row(conn: &mut PgConnection, row: &PgRow) -> Result<UsagePlan> {
    let id: String = row.get("id");
    let stages = sqlx::query(
        "SELECT api_id, stage, throttle FROM usage_plan_stages WHERE plan_id = $1 \
         ORDER BY api_id, stage",
    )
    .bind(&id)
    .fetch_all(conn)
    .await
    .map_err(map_err)?;
    let mut api_stages = Vec::with_capacity(stages.len());
    for r in &stages {
        api_stages.push(ApiStage {
            api_id: r.get("api_id"),
            stage: r.get("stage"),
            throttle: parse_json(r.get("throttle"), "method throttles")?,
        });
    }
    let throttle: Option<String> = row.get("throttle");
    let quota: Option<String> = row.get("quota");
    Ok(UsagePlan {
        name: row.get("name"),
        description: row.get("description"),
        throttle: throttle.as_deref().map(|s| parse_json(s, "plan throttle")).transpose()?,
        quota: quota.as_deref().map(|s| parse_json(s, "plan quota")).transpose()?,
        fallback: crate::fallback_from(row.get("fallback"))?,
        api_stages,
        id,
    })
}

pub(super) fn plan_name_conflict(e: sqlx::Error, name: &str) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::Conflict(format!("a usage plan named {name:?} already exists"))
        }
        _ => map_err(e),
    }
}

pub(super) async fn insert_plan(conn: &mut PgConnection, plan: &NewUsagePlan) -> Result<String> {
    let id = new_id(6);
    sqlx::query(
        "INSERT INTO usage_plans (id, name, description, throttle, quota, fallback, \
         created_date) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&plan.name)
    .bind(&plan.description)
    .bind(plan.throttle.as_ref().map(to_json).transpose()?)
    .bind(plan.quota.as_ref().map(to_json).transpose()?)
    .bind(plan.fallback.map(Fallback::as_str))
    .bind(now())
    .execute(conn)
    .await
    .map_err(|e| plan_name_conflict(e, &plan.name))?;
    Ok(id)
}

pub(super) async fn add_key_to_plan(
    conn: &mut PgConnection,
    plan_id: &str,
    key_id: &str,
) -> Result<()> {
    require_plan(conn, plan_id).await?;
    sqlx::query(
        "INSERT INTO usage_plan_keys (plan_id, key_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(plan_id)
    .bind(key_id)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn require_plan(conn: &mut PgConnection, plan_id: &str) -> Result<()> {
    let found = sqlx::query("SELECT 1 FROM usage_plans WHERE id = $1")
        .bind(plan_id)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    found.map(|_| ()).ok_or_else(|| Error::NotFound(format!("usage plan {plan_id} not found")))
}

pub(super) async fn create_plan(
    tx: &mut PgConnection,
    plan: NewUsagePlan,
    stages: Vec<ApiStage>,
) -> Result<UsagePlan> {
    let id = insert_plan(&mut *tx, &plan).await?;
    for stage in stages {
        put_plan_stage(&mut *tx, &id, stage).await?;
    }
    let created = plan_by(&mut *tx, "id", &id).await?;
    created.ok_or_else(|| Error::corrupt("created plan vanished"))
}

pub(super) async fn update_plan(
    tx: &mut PgConnection,
    id: &str,
    patch: UsagePlanPatch,
) -> Result<UsagePlan> {
    let mut plan = plan_by(&mut *tx, "id", id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("usage plan {id} not found")))?;
    if let Some(n) = patch.name {
        plan.name = n;
    }
    if let Some(d) = patch.description {
        plan.description = d;
    }
    if let Some(t) = patch.throttle {
        plan.throttle = t;
    }
    if let Some(q) = patch.quota {
        plan.quota = q;
    }
    if let Some(f) = patch.fallback {
        plan.fallback = f;
    }
    sqlx::query(
        "UPDATE usage_plans SET name = $1, description = $2, throttle = $3, quota = $4, \
         fallback = $5 WHERE id = $6",
    )
    .bind(&plan.name)
    .bind(&plan.description)
    .bind(plan.throttle.as_ref().map(to_json).transpose()?)
    .bind(plan.quota.as_ref().map(to_json).transpose()?)
    .bind(plan.fallback.map(Fallback::as_str))
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(|e| plan_name_conflict(e, &plan.name))?;
    Ok(plan)
}

pub(super) async fn delete_plan(tx: &mut PgConnection, id: &str) -> Result<()> {
    let done = sqlx::query("DELETE FROM usage_plans WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("usage plan {id} not found")));
    }
    Ok(())
}

pub(super) async fn add_plan_key(tx: &mut PgConnection, plan_id: &str, key_id: &str) -> Result<()> {
    let key = key_by(&mut *tx, "id", key_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("API key {key_id} not found")))?;
    add_key_to_plan(&mut *tx, plan_id, &key.id).await?;
    Ok(())
}

pub(super) async fn remove_plan_key(
    tx: &mut PgConnection,
    plan_id: &str,
    key_id: &str,
) -> Result<()> {
    let done = sqlx::query("DELETE FROM usage_plan_keys WHERE plan_id = $1 AND key_id = $2")
        .bind(plan_id)
        .bind(key_id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("API key {key_id} is not in usage plan {plan_id}")));
    }
    Ok(())
}

pub(super) async fn put_plan_stage(
    tx: &mut PgConnection,
    plan_id: &str,
    stage: ApiStage,
) -> Result<()> {
    require_plan(&mut *tx, plan_id).await?;
    sqlx::query(
        "INSERT INTO usage_plan_stages (plan_id, api_id, stage, throttle) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (plan_id, api_id, stage) DO UPDATE SET throttle = excluded.throttle",
    )
    .bind(plan_id)
    .bind(&stage.api_id)
    .bind(&stage.stage)
    .bind(to_json(&stage.throttle)?)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn remove_plan_stage(
    tx: &mut PgConnection,
    plan_id: &str,
    api_id: &str,
    stage: &str,
) -> Result<()> {
    let done = sqlx::query(
        "DELETE FROM usage_plan_stages WHERE plan_id = $1 AND api_id = $2 AND stage = $3",
    )
    .bind(plan_id)
    .bind(api_id)
    .bind(stage)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!(
            "usage plan {plan_id} does not cover {api_id}/{stage}"
        )));
    }
    Ok(())
}

pub(super) async fn get_plan(pool: &PgPool, id: &str) -> Result<Option<UsagePlan>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    plan_by(&mut conn, "id", id).await
}

pub(super) async fn get_plan_by_name(pool: &PgPool, name: &str) -> Result<Option<UsagePlan>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    plan_by(&mut conn, "name", name).await
}

pub(super) async fn list_plans(pool: &PgPool, page: Page<'_>) -> Result<Vec<UsagePlan>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let sql = paged(&format!("SELECT {PLAN_COLUMNS} FROM usage_plans"), "name", page, 0);
    let rows = bind_page(sqlx::query(AssertSqlSafe(sql)), page)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
    let mut plans = Vec::with_capacity(rows.len());
    for r in &rows {
        plans.push(plan_from_row(&mut conn, r).await?);
    }
    Ok(plans)
}

pub(super) async fn list_plan_keys(
    pool: &PgPool,
    plan_id: &str,
    page: Page<'_>,
) -> Result<Vec<ApiKey>> {
    // Walks the name index from the page's start and checks each key's membership in the plan by
    // its primary key; `id IN (SELECT ...)` made SQLite collect every key of the plan first, a
    // million for a plan with a million keys, for each page.
    let base = format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE EXISTS \
         (SELECT 1 FROM usage_plan_keys pk WHERE pk.plan_id = $1 AND pk.key_id = api_keys.id)"
    );
    let sql = paged(&base, "name", page, 1);
    let q = sqlx::query(AssertSqlSafe(sql)).bind(plan_id);
    let rows = bind_page(q, page).fetch_all(pool).await.map_err(map_err)?;
    Ok(rows.iter().map(key_from_row).collect())
}

pub(super) async fn key_plan_ids(pool: &PgPool, key_id: &str) -> Result<Vec<String>> {
    let rows =
        sqlx::query("SELECT plan_id FROM usage_plan_keys WHERE key_id = $1 ORDER BY plan_id")
            .bind(key_id)
            .fetch_all(pool)
            .await
            .map_err(map_err)?;
    Ok(rows.iter().map(|r| r.get("plan_id")).collect())
}

pub(super) async fn plans_covering(
    pool: &PgPool,
    api_id: &str,
    stage: &str,
) -> Result<Vec<UsagePlan>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let sql = format!(
        "SELECT {PLAN_COLUMNS} FROM usage_plans WHERE id IN \
         (SELECT plan_id FROM usage_plan_stages WHERE api_id = $1 AND stage = $2) ORDER BY name"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(api_id)
        .bind(stage)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(plan_from_row(&mut conn, row).await?);
    }
    Ok(out)
}

pub(super) async fn shared_key(
    pool: &PgPool,
    plan_a: &str,
    plan_b: &str,
) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT k.name FROM usage_plan_keys a JOIN usage_plan_keys b ON b.key_id = a.key_id \
         JOIN api_keys k ON k.id = a.key_id WHERE a.plan_id = $1 AND b.plan_id = $2 LIMIT 1",
    )
    .bind(plan_a)
    .bind(plan_b)
    .fetch_optional(pool)
    .await
    .map_err(map_err)
}
