//! Behaviour every `ConfigStore` must have. The functions that take an `Arc<dyn ConfigStore>`
//! are the suite every backend runs (`suite!` at the end instantiates them per backend: a
//! PostgreSQL backend adds one line); the `#[tokio::test]`s that open SQLite themselves test what
//! is the SQLite backend's own (its files, two processes on one file, a broken table).

use std::path::PathBuf;
use std::sync::Arc;

use keygate_store::prelude::*;
use keygate_store::{
    Change, DeployOutcome, DeployRequest, Error, KeyStatus, Page, Placed, PlacedKey, SqliteStore,
};
use keygate_types::model::{
    ApiKey, ApiKeyPatch, ApiStage, DailyUsage, NewApiKey, NewUsagePlan, UsageGrant, UsagePlan,
    UsagePlanPatch,
};
use keygate_types::plan::{Fallback, Quota, QuotaPeriod, Throttle};
use keygate_types::{
    ApiKeyValue, FunctionSpec, HttpEvent, HttpMethod, Integration, ServiceDefinition,
};

/// The store's changes as methods, for these tests (callers outside the store make them through
/// keygate-control); each is applied, and audited, as `test`.
trait Writes: Reads {
    async fn change(&self, change: Change) -> keygate_store::Result<keygate_store::Applied>;

    /// Deploys `d` as keygate-control plans it (the API, plans and keys that exist by name are
    /// kept, the others created; these tests never move a key between a stage's plans), for the
    /// store to write as told.
    async fn deploy(&self, d: Declared) -> keygate_store::Result<DeployOutcome> {
        let api_id = self.get_api_by_name(&d.definition.service).await?.map(|a| a.id);
        let mut plans = Vec::new();
        for plan in d.plans {
            plans.push((self.get_plan_by_name(&plan.name).await?.map(|p| p.id), plan));
        }
        let mut keys = Vec::new();
        for (key, plan_name) in d.keys {
            let plan = plans.iter().position(|(_, p)| p.name == plan_name).unwrap();
            let key = match self.get_key_by_name(&key.name).await? {
                Some(found) => Placed::Existing(found),
                None => Placed::New(key),
            };
            keys.push(PlacedKey { key, plan, leaves: Vec::new() });
        }
        let req = DeployRequest { definition: d.definition, api_id, plans, keys };
        self.change(Change::Deploy(req)).await?.into_deployed()
    }
    async fn create_key(&self, key: NewApiKey, plans: &[String]) -> keygate_store::Result<ApiKey> {
        let plan_ids = plans.to_vec();
        self.change(Change::CreateKey { key, plan_ids }).await?.into_key()
    }
    async fn import_keys(
        &self,
        keys: Vec<(NewApiKey, Vec<String>)>,
    ) -> keygate_store::Result<Vec<ApiKey>> {
        self.change(Change::ImportKeys(keys)).await?.into_keys()
    }
    async fn rotate_key(
        &self,
        id: &str,
        value: ApiKeyValue,
        grace_secs: i64,
    ) -> keygate_store::Result<ApiKey> {
        let id = id.to_owned();
        self.change(Change::RotateKey { id, value, grace_secs, retire_idle: None })
            .await?
            .into_key()
    }
    async fn revoke_old_values(&self, id: &str) -> keygate_store::Result<u64> {
        self.change(Change::RevokeOldValues { id: id.to_owned() }).await?.into_count()
    }
    async fn update_key(&self, id: &str, patch: ApiKeyPatch) -> keygate_store::Result<ApiKey> {
        self.change(Change::UpdateKey { id: id.to_owned(), patch }).await?.into_key()
    }
    async fn delete_key(&self, id: &str) -> keygate_store::Result<()> {
        self.change(Change::DeleteKey { id: id.to_owned() }).await.map(drop)
    }
    async fn create_plan(&self, plan: NewUsagePlan) -> keygate_store::Result<UsagePlan> {
        self.change(Change::CreatePlan { plan, stages: Vec::new() }).await?.into_plan()
    }
    async fn update_plan(
        &self,
        id: &str,
        patch: UsagePlanPatch,
    ) -> keygate_store::Result<UsagePlan> {
        self.change(Change::UpdatePlan { id: id.to_owned(), patch }).await?.into_plan()
    }
    async fn delete_plan(&self, id: &str) -> keygate_store::Result<()> {
        self.change(Change::DeletePlan { id: id.to_owned() }).await.map(drop)
    }
    async fn add_plan_key(&self, plan_id: &str, key_id: &str) -> keygate_store::Result<()> {
        let (plan_id, key_id) = (plan_id.to_owned(), key_id.to_owned());
        self.change(Change::AddPlanKey { plan_id, key_id }).await.map(drop)
    }
    async fn remove_plan_key(&self, plan_id: &str, key_id: &str) -> keygate_store::Result<()> {
        let (plan_id, key_id) = (plan_id.to_owned(), key_id.to_owned());
        self.change(Change::RemovePlanKey { plan_id, key_id }).await.map(drop)
    }
    async fn put_plan_stage(&self, plan_id: &str, stage: ApiStage) -> keygate_store::Result<()> {
        let plan_id = plan_id.to_owned();
        self.change(Change::PutPlanStage { plan_id, stage }).await.map(drop)
    }
    async fn remove_plan_stage(
        &self,
        plan_id: &str,
        api_id: &str,
        stage: &str,
    ) -> keygate_store::Result<()> {
        let (plan_id, api_id, stage) = (plan_id.to_owned(), api_id.to_owned(), stage.to_owned());
        self.change(Change::RemovePlanStage { plan_id, api_id, stage }).await.map(drop)
    }
    async fn put_grant(&self, grant: UsageGrant) -> keygate_store::Result<()> {
        self.change(Change::PutGrant(grant)).await.map(drop)
    }
    async fn delete_stage(&self, api_id: &str, stage: &str) -> keygate_store::Result<()> {
        let (api_id, stage) = (api_id.to_owned(), stage.to_owned());
        self.change(Change::DeleteStage { api_id, stage }).await.map(drop)
    }
}

impl<T: ConfigStore + ?Sized> Writes for T {
    async fn change(&self, change: Change) -> keygate_store::Result<keygate_store::Applied> {
        self.apply("test", change).await
    }
}

fn definition(stage: &str, private: bool) -> ServiceDefinition {
    ServiceDefinition {
        service: "svc".into(),
        stage: stage.into(),
        region: "us-east-1".into(),
        base_dir: PathBuf::from("/tmp"),
        functions: vec![FunctionSpec {
            name: "f".into(),
            function_name: format!("svc-{stage}-f"),
            handler: "h".into(),
            runtime: keygate_types::Runtime::provided_al2023(),
            environment: Default::default(),
            timeout_secs: 6,
            memory_size: 1024,
            description: None,
            reserved_concurrency: None,
            max_concurrency: None,
            artifact: None,
            package_patterns: vec![],
            events: vec![HttpEvent {
                path: "/x".into(),
                method: HttpMethod::Get,
                private,
                report: false,
                cors: None,
                integration: Integration::LambdaProxy,
                authorizer: None,
            }],
            streams: vec![],
        }],
        api_keys: vec![],
        usage_plans: vec![],
        tables: vec![],
        api_key_source: Default::default(),
        key_introspection: None,
    }
}

fn date(day: &str) -> keygate_types::date::Date {
    day.parse().unwrap()
}

fn new_key(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        value: ApiKeyValue::generate(),
        description: None,
        customer_id: None,
        enabled: true,
        expires: None,
    }
}

fn plan(name: &str) -> NewUsagePlan {
    NewUsagePlan { name: name.into(), ..Default::default() }
}

/// A deploy as declared (what keygate-control's deploy starts from): the definition, the
/// stage's plans by name, each key with its plan's name.
struct Declared {
    definition: ServiceDefinition,
    keys: Vec<(NewApiKey, String)>,
    plans: Vec<NewUsagePlan>,
}

fn request(stage: &str, keys: &[&str]) -> Declared {
    let plan_name = format!("svc-{stage}");
    Declared {
        definition: definition(stage, true),
        keys: keys.iter().map(|k| (new_key(k), plan_name.clone())).collect(),
        plans: vec![plan(&plan_name)],
    }
}

async fn store() -> Option<(tempfile::TempDir, Arc<dyn ConfigStore>)> {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    Some((dir, Arc::new(s)))
}

/// The PostgreSQL server the tests use: `KEYGATE_TEST_DATABASE_URL`, or the local one `.ci/run`
/// starts (user postgres, trust).
fn postgres_url() -> String {
    std::env::var("KEYGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A schema of its own on the test server, dropped when the test ends (tests run in parallel).
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        // Drop runs inside the test's runtime: the cleanup gets a thread and a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&postgres_url()).await {
                    // A test that failed inside a transaction may leave it open: never wait long.
                    let drop =
                        format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut c).await;
                }
            });
        })
        .join();
    }
}

/// A fresh, empty PostgreSQL store in a schema of its own. Without a server the test is
/// skipped, except under `CI=true`, where it fails.
async fn postgres_store() -> Option<(Schema, Arc<dyn ConfigStore>)> {
    use sqlx::Connection;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let url = postgres_url();
    let mut admin = match sqlx::PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL at {url} is needed under CI=true: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no PostgreSQL at {url} ({e}); CI=true makes this a failure");
            return None;
        }
    };
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("keygate_test_{}_{n}", std::process::id());
    let create = format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut admin).await.unwrap();
    let schema = Schema(name);
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}options=-c%20search_path%3D{}", schema.0);
    let store = keygate_store::open(&url).await.unwrap();
    Some((schema, store))
}

async fn deploy_creates_keys_once_and_snapshots(s: Arc<dyn ConfigStore>) {
    let v0 = s.version().await.unwrap();
    let first = s.deploy(request("dev", &["k1"])).await.unwrap();
    assert_eq!(first.keys[0].1, KeyStatus::Created);
    assert!(s.version().await.unwrap() > v0);
    let second = s.deploy(request("dev", &["k1"])).await.unwrap();
    assert_eq!(second.keys[0].1, KeyStatus::Existing);
    assert_eq!(second.keys[0].0.id, first.keys[0].0.id);
    assert_eq!(second.api.id, first.api.id);
    assert_eq!(second.plans[0].id, first.plans[0].id);
    assert_ne!(second.deployment.id, first.deployment.id);
    assert_eq!(s.list_keys(Page::first(100), None).await.unwrap().len(), 1);

    // The old deployment is still there, unchanged.
    let old = s.get_deployment(&first.deployment.id).await.unwrap().unwrap();
    assert_eq!(old.definition, first.deployment.definition);

    // The snapshot grants the key on svc/dev only.
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.stages.len(), 1);
    assert_eq!(snap.stages[0].deployment_id, second.deployment.id);
    assert_eq!(snap.keys.len(), 1);
    let key = snap.keys.records()[0];
    assert_eq!(snap.keys.plans(&key), [first.plans[0].id.clone()]);
    let plan = snap.plans.iter().find(|p| p.id == first.plans[0].id).unwrap();
    assert_eq!(plan.api_stages.len(), 1);
    assert_eq!(plan.api_stages[0].stage, "dev");

    // A second stage: the same key is reused and granted there too, through the new plan.
    let prod = s.deploy(request("prod", &["k1"])).await.unwrap();
    assert_eq!(prod.keys[0].0.id, first.keys[0].0.id);
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.stages.len(), 2);
    let key = snap.keys.records()[0];
    assert_eq!(snap.keys.plans(&key).len(), 2, "one plan per stage");
}

async fn undeclared_keys_are_reported_not_deleted(s: Arc<dyn ConfigStore>) {
    s.deploy(request("dev", &["a", "b"])).await.unwrap();
    let out = s.deploy(request("dev", &["a"])).await.unwrap();
    assert_eq!(out.undeclared.len(), 1);
    assert_eq!(out.undeclared[0].name, "b");
    assert_eq!(s.list_keys(Page::first(100), None).await.unwrap().len(), 2);
}

async fn key_crud_and_conflicts(s: Arc<dyn ConfigStore>) {
    let k = new_key("one");
    let value = k.value.clone();
    let created = s.create_key(k, &[]).await.unwrap();
    assert_eq!(created.prefix, value.expose()[..8]);
    assert_eq!(s.get_key(&created.id).await.unwrap().unwrap(), created);
    assert_eq!(s.get_key_by_name("one").await.unwrap().unwrap().id, created.id);

    // Same name, same value: conflicts that say which, without the value.
    match s.create_key(new_key("one"), &[]).await {
        Err(Error::Conflict(m)) => assert!(m.contains("named"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut same_value = new_key("two");
    same_value.value = value.clone();
    match s.create_key(same_value, &[]).await {
        Err(Error::Conflict(m)) => {
            assert!(m.contains("value"), "{m}");
            assert!(!m.contains(value.expose()));
        }
        other => panic!("{other:?}"),
    }
    // A failed create leaves nothing behind.
    assert_eq!(s.list_keys(Page::first(100), None).await.unwrap().len(), 1);
    match s.create_key(new_key("three"), &["nope".into()]).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.list_keys(Page::first(100), None).await.unwrap().len(), 1);

    let updated = s
        .update_key(&created.id, ApiKeyPatch { enabled: Some(false), ..Default::default() })
        .await
        .unwrap();
    assert!(!updated.enabled);
    let snap = s.snapshot().await.unwrap();
    assert!(!snap.keys.records()[0].enabled);
    assert_eq!(snap.keys.records()[0].digest, value.digest());

    s.delete_key(&created.id).await.unwrap();
    assert!(s.get_key(&created.id).await.unwrap().is_none());
    assert!(matches!(s.delete_key(&created.id).await, Err(Error::NotFound(_))));
    assert!(s.snapshot().await.unwrap().keys.is_empty());
}

#[tokio::test]
async fn keys_join_plans_and_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_id;
    {
        let s = SqliteStore::open(&data).await.unwrap();
        let out = s.deploy(request("dev", &[])).await.unwrap();
        let k =
            s.create_key(new_key("later"), std::slice::from_ref(&out.plans[0].id)).await.unwrap();
        assert_eq!(s.key_plan_ids(&k.id).await.unwrap(), vec![out.plans[0].id.clone()]);
        assert_eq!(s.list_plan_keys(&out.plans[0].id, Page::first(10)).await.unwrap()[0].id, k.id);
        key_id = k.id;
        s.close().await;
    }
    let s = SqliteStore::open(&data).await.unwrap();
    assert!(s.get_key(&key_id).await.unwrap().is_some());
    assert_eq!(s.list_apis().await.unwrap().len(), 1);
    assert_eq!(s.list_plans(Page::first(100)).await.unwrap()[0].api_stages.len(), 1);
}

async fn plans_keep_their_id_and_usage_across_deploys(s: Arc<dyn ConfigStore>) {
    let first = s.deploy(request("dev", &["k"])).await.unwrap();
    let plan_id = first.plans[0].id.clone();
    let key_id = first.keys[0].0.id.clone();
    let day = |d: &str| DailyUsage {
        plan_id: plan_id.clone(),
        key_id: key_id.clone(),
        day: date(d),
        used: 3,
        last_used: None,
    };
    let at = |d: &str, at: i64| DailyUsage { last_used: Some(at), ..day(d) };
    let v = s.version().await.unwrap();
    let report = async |s: &Arc<dyn ConfigStore>| {
        let all = s.usage(None, None, date("2026-01-01"), date("2026-12-31")).await.unwrap();
        all.iter().map(|u| (u.day.to_string(), u.used, u.last_used)).collect::<Vec<_>>()
    };
    let last_used = async |s: &Arc<dyn ConfigStore>| {
        let by_id = s.get_key(&key_id).await.unwrap().unwrap().last_used_date;
        let listed = s.list_keys(Page::first(100), None).await.unwrap()[0].last_used_date;
        assert_eq!(by_id, listed, "one lastUsedDate, however the key is read");
        by_id
    };
    assert_eq!(last_used(&s).await, None, "never used");
    s.add_usage(&[day("2026-11-01"), at("2026-11-01", 200), day("2026-11-02")]).await.unwrap();
    assert_eq!(s.version().await.unwrap(), v, "usage is data: no reload for gateways");
    let expected = [("2026-11-01".to_owned(), 6, Some(200)), ("2026-11-02".to_owned(), 3, None)];
    assert_eq!(report(&s).await, expected, "recorded, and read before it is folded");
    assert_eq!(last_used(&s).await, Some(200));
    assert_eq!(s.fold_usage().await.unwrap(), 3, "three appended rows folded");
    assert_eq!(report(&s).await, expected, "the same after folding");
    assert_eq!(s.fold_usage().await.unwrap(), 0, "nothing left to fold");

    // Usage of a deleted key or plan is dropped, not an error.
    s.add_usage(&[DailyUsage { key_id: "gone".into(), ..day("2026-11-02") }]).await.unwrap();
    assert_eq!(s.fold_usage().await.unwrap(), 0, "nothing was appended");

    // lastUsedDate only moves forward, whatever order batches bring, folded or not.
    s.add_usage(&[at("2026-11-01", 150), at("2026-11-02", 100)]).await.unwrap();
    assert_eq!(last_used(&s).await, Some(200), "the latest use, not the last written");
    s.add_usage(&[at("2026-11-02", 300)]).await.unwrap();
    assert_eq!(last_used(&s).await, Some(300), "a later use, still in the log");
    assert_eq!(s.fold_usage().await.unwrap(), 3);
    assert_eq!(last_used(&s).await, Some(300), "and folded");
    assert_eq!(
        report(&s).await,
        [("2026-11-01".to_owned(), 9, Some(200)), ("2026-11-02".to_owned(), 9, Some(300))]
    );
    assert_eq!(s.version().await.unwrap(), v, "lastUsedDate is data too");

    let mut req = request("dev", &["k"]);
    req.plans[0].quota = Some(Quota { limit: 100, period: QuotaPeriod::Day, offset: 0 });
    req.plans[0].throttle = Some(Throttle { rate_limit: 0.5, burst_limit: 2 });
    // keygate's own per-plan setting: kept by the plan, and by a deploy that edits its limits.
    let patch = UsagePlanPatch { fallback: Some(Some(Fallback::Refuse)), ..Default::default() };
    assert_eq!(s.update_plan(&plan_id, patch).await.unwrap().fallback, Some(Fallback::Refuse));
    let second = s.deploy(req).await.unwrap();
    assert_eq!(second.plans[0].id, plan_id, "editing limits updates the plan");
    assert_eq!(second.plans[0].quota.unwrap().limit, 100);
    assert_eq!(s.snapshot().await.unwrap().plans[0].fallback, Some(Fallback::Refuse));
    // A deploy that says the policy (`custom.keygate.redisUnavailable`) sets it.
    let mut req = request("dev", &["k"]);
    req.plans[0].fallback = Some(Fallback::Local);
    s.deploy(req).await.unwrap();
    assert_eq!(s.snapshot().await.unwrap().plans[0].fallback, Some(Fallback::Local));
    let patch = UsagePlanPatch { fallback: Some(None), ..Default::default() };
    assert_eq!(s.update_plan(&plan_id, patch).await.unwrap().fallback, None);
    assert_eq!(s.list_plans(Page::first(100)).await.unwrap().len(), 1);
    let used = s.usage(Some(&plan_id), None, date("2026-11-01"), date("2026-11-30")).await.unwrap();
    assert_eq!(
        used.iter().map(|u| (u.day.to_string(), u.used)).collect::<Vec<_>>(),
        [("2026-11-01".to_owned(), 9), ("2026-11-02".to_owned(), 9)]
    );
    assert_eq!(
        s.usage(None, Some(&key_id), date("2026-11-02"), date("2026-11-02")).await.unwrap().len(),
        1
    );

    s.put_grant(UsageGrant {
        plan_id: plan_id.clone(),
        key_id: key_id.clone(),
        period_start: date("2026-11-02"),
        extra: 7,
    })
    .await
    .unwrap();
    assert!(s.version().await.unwrap() > v);
    assert_eq!(s.snapshot().await.unwrap().grants[0].extra, 7);
}

/// Usage appended while two folds run at once (two gateway nodes) is counted exactly once: a fold
/// moves what it deletes, and rows appended meanwhile wait for the next fold.
async fn usage_folded_while_appended_is_counted_once(s: Arc<dyn ConfigStore>) {
    let out = s.deploy(request("dev", &["a", "b"])).await.unwrap();
    let plan = out.plans[0].id.clone();
    let keys: Vec<String> = out.keys.iter().map(|k| k.0.id.clone()).collect();
    let writer = {
        let (s, plan, keys) = (s.clone(), plan.clone(), keys.clone());
        tokio::spawn(async move {
            for i in 0..200i64 {
                let row = |key: &String| DailyUsage {
                    plan_id: plan.clone(),
                    key_id: key.clone(),
                    day: date(if i % 2 == 0 { "2026-11-01" } else { "2026-11-02" }),
                    used: 1,
                    last_used: Some(i),
                };
                s.add_usage(&keys.iter().map(row).collect::<Vec<_>>()).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let folder = || {
        let s = s.clone();
        tokio::spawn(async move {
            let mut moved = 0;
            for _ in 0..50 {
                moved += s.fold_usage().await.unwrap();
                tokio::task::yield_now().await;
            }
            moved
        })
    };
    let (a, b) = (folder(), folder());
    writer.await.unwrap();
    let moved = a.await.unwrap() + b.await.unwrap() + s.fold_usage().await.unwrap();
    assert_eq!(moved, 400, "every appended row folded once");
    let used = s.usage(Some(&plan), None, date("2026-11-01"), date("2026-11-30")).await.unwrap();
    let total: u64 = used.iter().map(|u| u.used).sum();
    assert_eq!(total, 400, "{used:?}");
    assert!(used.iter().all(|u| u.used == 100), "100 per key and day: {used:?}");
    for key in &keys {
        assert_eq!(s.get_key(key).await.unwrap().unwrap().last_used_date, Some(199));
    }
}

/// A log longer than one fold transaction takes (50,000 rows) is folded whole, once.
async fn a_long_usage_log_folds_in_chunks(s: Arc<dyn ConfigStore>) {
    let out = s.deploy(request("dev", &["k"])).await.unwrap();
    let row = DailyUsage {
        plan_id: out.plans[0].id.clone(),
        key_id: out.keys[0].0.id.clone(),
        day: date("2026-11-01"),
        used: 1,
        last_used: None,
    };
    let batch = vec![row; 60_000];
    s.add_usage(&batch).await.unwrap();
    s.add_usage(&batch).await.unwrap();
    assert_eq!(s.fold_usage().await.unwrap(), 120_000);
    assert_eq!(s.fold_usage().await.unwrap(), 0);
    let used = s.usage(None, None, date("2026-11-01"), date("2026-11-01")).await.unwrap();
    assert_eq!(used.iter().map(|u| u.used).collect::<Vec<_>>(), [120_000]);
}

/// The store keeps memberships and stages as told (the one-plan-per-API-stage rule is
/// keygate-control's: `crates/keygate-control/tests/rules.rs`), and a change checked at a version
/// the store has moved past is refused whole ([`ConfigStore::apply_at`]).
async fn plan_memberships_and_checked_changes(s: Arc<dyn ConfigStore>) {
    let out = s.deploy(request("dev", &["k"])).await.unwrap();
    let key = out.keys[0].0.id.clone();
    let api = out.api.id.clone();
    let other = s.create_plan(plan("other")).await.unwrap();
    s.add_plan_key(&other.id, &key).await.unwrap();
    let stage = ApiStage { api_id: api.clone(), stage: "dev".into(), throttle: Default::default() };
    assert!(s.plans_covering(&api, "dev").await.unwrap().iter().all(|p| p.id != other.id));
    assert_eq!(s.shared_key(&other.id, &out.plans[0].id).await.unwrap().as_deref(), Some("k"));
    // At the version read now: made, and the version moves.
    let v = s.version().await.unwrap();
    let put = Change::PutPlanStage { plan_id: other.id.clone(), stage: stage.clone() };
    s.apply_at("test", put, v).await.unwrap();
    assert!(s.version().await.unwrap() > v);
    assert_eq!(s.plans_covering(&api, "dev").await.unwrap().len(), 2);
    // At a version the store has moved past: nothing made, nothing audited.
    let audited = s.list_audit(0, 1000).await.unwrap().len();
    let remove = Change::RemovePlanKey { plan_id: other.id.clone(), key_id: key.clone() };
    assert!(matches!(s.apply_at("test", remove, v).await, Err(Error::Stale)));
    assert_eq!(s.shared_key(&other.id, &out.plans[0].id).await.unwrap().as_deref(), Some("k"));
    assert_eq!(s.list_audit(0, 1000).await.unwrap().len(), audited);
    let import = Change::ImportKeys(vec![(new_key("late"), vec![other.id.clone()])]);
    assert!(matches!(s.apply_at("test", import, v).await, Err(Error::Stale)));
    assert!(s.get_key_by_name("late").await.unwrap().is_none());
    s.remove_plan_key(&other.id, &key).await.unwrap();
    // Updates and deletes.
    let renamed = s
        .update_plan(
            &other.id,
            UsagePlanPatch { name: Some("renamed".into()), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "renamed");
    assert!(matches!(
        s.update_plan(
            &other.id,
            UsagePlanPatch { name: Some("svc-dev".into()), ..Default::default() }
        )
        .await,
        Err(Error::Conflict(_))
    ));
    s.delete_plan(&other.id).await.unwrap();
    assert!(matches!(s.delete_plan(&other.id).await, Err(Error::NotFound(_))));
    assert!(matches!(s.remove_plan_stage(&other.id, &api, "dev").await, Err(Error::NotFound(_))));
}

/// The snapshot reads keys in chunks of a few thousand rows: every key of a store larger than
/// several chunks comes back once, with its digest, state, expiry and plans, and a rotated key's
/// old value shares the key's id and plans.
async fn the_snapshot_has_every_key_across_chunks(s: Arc<dyn ConfigStore>) {
    let (a, b) = (s.create_plan(plan("a")).await.unwrap(), s.create_plan(plan("b")).await.unwrap());
    let n = 20_000;
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let mut key = new_key(&format!("k{i:05}"));
        key.enabled = i % 7 != 0;
        key.expires = (i % 5 == 0).then_some(1_000_000 + i as i64);
        let plans = match i % 3 {
            0 => vec![],
            1 => vec![a.id.clone()],
            _ => vec![a.id.clone(), b.id.clone()],
        };
        rows.push((key, plans));
    }
    let expected: Vec<(String, keygate_types::KeyDigest, bool, Option<i64>, usize)> = rows
        .iter()
        .map(|(k, p)| (k.name.clone(), k.value.digest(), k.enabled, k.expires, p.len()))
        .collect();
    let created = s.import_keys(rows).await.unwrap();
    let rotated = s.rotate_key(&created[1].id, ApiKeyValue::generate(), 3600).await.unwrap();

    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.keys.len(), n + 1, "every key once, plus the rotated key's old value");
    let by_id: std::collections::HashMap<&str, &keygate_types::keyset::KeyRecord> =
        snap.keys.records().iter().map(|r| (snap.keys.id(r), r)).collect();
    for (i, (_, digest, enabled, expires, plans)) in expected.iter().enumerate() {
        let r = by_id[created[i].id.as_str()];
        // Key 1 was rotated: its values are checked below.
        if i != 1 {
            assert_eq!(r.digest, *digest, "key {i}");
            assert_eq!(r.expires, expires.unwrap_or(i64::MAX), "key {i}");
        }
        assert_eq!(r.enabled, *enabled, "key {i}");
        assert_eq!(snap.keys.plans(r).len(), *plans, "key {i}");
    }
    let values: Vec<_> =
        snap.keys.records().iter().filter(|r| snap.keys.id(r) == rotated.id).collect();
    assert_eq!(values.len(), 2, "the new value and the old one in its grace period");
    assert!(values.iter().any(|r| r.digest == expected[1].1), "the old value is still accepted");
    assert_eq!(snap.keys.plans(values[0]), snap.keys.plans(values[1]));
    assert_eq!(snap.keys.plans(values[0]).len(), expected[1].4);
}

/// Memberships stored out of their keys' order (keys added to plans later, in any order, some
/// twice over, one key in none) still reach the right keys: the snapshot's sequential guess
/// falls back to its id index.
async fn the_snapshot_matches_memberships_stored_in_any_order(s: Arc<dyn ConfigStore>) {
    let (a, b) = (s.create_plan(plan("a")).await.unwrap(), s.create_plan(plan("b")).await.unwrap());
    let rows: Vec<_> = (0..50).map(|i| (new_key(&format!("k{i:02}")), vec![])).collect();
    let created = s.import_keys(rows).await.unwrap();
    // Reverse order, every third key in both plans, key 0 in none.
    for (i, key) in created.iter().enumerate().rev().filter(|(i, _)| *i != 0) {
        s.add_plan_key(&a.id, &key.id).await.unwrap();
        if i % 3 == 0 {
            s.add_plan_key(&b.id, &key.id).await.unwrap();
        }
    }
    let snap = s.snapshot().await.unwrap();
    for (i, key) in created.iter().enumerate() {
        let r = snap.keys.records().iter().find(|r| snap.keys.id(r) == key.id).unwrap();
        let mut plans: Vec<&str> = snap.keys.plans(r).iter().map(String::as_str).collect();
        plans.sort_unstable();
        let mut want: Vec<&str> = match i {
            0 => vec![],
            i if i % 3 == 0 => vec![a.id.as_str(), b.id.as_str()],
            _ => vec![a.id.as_str()],
        };
        want.sort_unstable();
        assert_eq!(plans, want, "key {i}");
    }
}

/// Values accepted for one key in the snapshot.
async fn values_of(s: &Arc<dyn ConfigStore>, id: &str) -> Vec<keygate_types::KeyDigest> {
    let snap = s.snapshot().await.unwrap();
    snap.keys.records().iter().filter(|r| snap.keys.id(r) == id).map(|r| r.digest).collect()
}

/// Rotating with a grace and then with none ends every older value, the original one too (it
/// used to keep working until its own grace period ended).
async fn a_rotation_without_grace_ends_every_older_value(s: Arc<dyn ConfigStore>) {
    let k = s.create_key(new_key("leaky"), &[]).await.unwrap();
    s.rotate_key(&k.id, ApiKeyValue::generate(), 3600).await.unwrap();
    s.rotate_key(&k.id, ApiKeyValue::generate(), 600).await.unwrap();
    assert_eq!(values_of(&s, &k.id).await.len(), 3, "two old values in their grace period");
    let v = ApiKeyValue::generate();
    s.rotate_key(&k.id, v.clone(), 0).await.unwrap();
    assert_eq!(values_of(&s, &k.id).await, vec![v.digest()], "only the newest value is left");
}

/// `revoke_old_values` ends rotated-out values now and keeps the current one.
async fn old_values_can_be_revoked(s: Arc<dyn ConfigStore>) {
    let k = s.create_key(new_key("k"), &[]).await.unwrap();
    let v = ApiKeyValue::generate();
    s.rotate_key(&k.id, v.clone(), 3600).await.unwrap();
    let before = s.snapshot().await.unwrap().version;
    assert_eq!(s.revoke_old_values(&k.id).await.unwrap(), 1);
    assert_eq!(values_of(&s, &k.id).await, vec![v.digest()]);
    assert!(s.snapshot().await.unwrap().version > before, "gateways reload");
    assert_eq!(s.revoke_old_values(&k.id).await.unwrap(), 0);
    assert!(matches!(s.revoke_old_values("nope").await, Err(Error::NotFound(_))));
}

/// Generated values check themselves; the snapshot says whether the store holds a value of
/// their form that does not (an imported lookalike, or one rotated out and still in its grace
/// period), and stops saying so once it is gone.
async fn the_snapshot_says_when_a_lookalike_value_is_stored(s: Arc<dyn ConfigStore>) {
    let lookalikes = async |s: &Arc<dyn ConfigStore>| s.snapshot().await.unwrap().lookalikes;
    let k = s.create_key(new_key("generated"), &[]).await.unwrap();
    assert!(k.prefix.starts_with("kgk1") && k.prefix.len() == 8, "{}", k.prefix);
    s.rotate_key(&k.id, ApiKeyValue::generate(), 3600).await.unwrap();
    assert!(!lookalikes(&s).await, "generated values only");

    let value = ApiKeyValue::parse(&format!("kgk1{}", "Q".repeat(36))).unwrap();
    let imported = NewApiKey { value, ..new_key("imported") };
    let look = s.create_key(imported, &[]).await.unwrap();
    assert_eq!(look.prefix, "kgk1");
    assert!(lookalikes(&s).await, "an imported value of the form");
    // Rotated out with a grace period: still accepted for an hour, so still a lookalike.
    s.rotate_key(&look.id, ApiKeyValue::generate(), 3600).await.unwrap();
    assert!(lookalikes(&s).await, "the old value in its grace period");
    s.revoke_old_values(&look.id).await.unwrap();
    assert!(!lookalikes(&s).await, "gone");

    let value = ApiKeyValue::parse(&format!("kgk1{}", "R".repeat(36))).unwrap();
    let other = s.create_key(NewApiKey { value, ..new_key("other") }, &[]).await.unwrap();
    assert!(lookalikes(&s).await);
    s.delete_key(&other.id).await.unwrap();
    assert!(!lookalikes(&s).await, "deleted");
}

/// Would-be refusals add up per hour, route, reason and client; reads filter by stage and by
/// the last time seen; rows older than 31 days go.
async fn would_be_refusals_add_up_by_hour_and_client(s: Arc<dyn ConfigStore>) {
    use keygate_types::model::WouldRefuse;
    let row = |hour: i64, stage: &str, client: &str, key: Option<&str>, count: u64, at: i64| {
        WouldRefuse {
            hour,
            api_id: "api1".into(),
            stage: stage.into(),
            method: "GET".into(),
            path: "/candidates/{id}".into(),
            reason: if key.is_some() { "throttled" } else { "missing_key" }.into(),
            key_id: key.map(str::to_owned),
            client: client.into(),
            user_agent: "curl/8.5.0".into(),
            count,
            first_seen: at,
            last_seen: at,
        }
    };
    let h = 1_800_000_000 / 3600 * 3600;
    s.add_would_refuse(&[row(h, "dev", "10.0.0.1", None, 2, h + 5)]).await.unwrap();
    s.add_would_refuse(&[
        row(h, "dev", "10.0.0.1", None, 3, h + 1),
        row(h, "dev", "10.0.0.2", Some("k1"), 1, h + 9),
        row(h, "prod", "10.0.0.1", None, 7, h + 9),
        row(h + 3600, "dev", "10.0.0.1", None, 1, h + 3700),
    ])
    .await
    .unwrap();
    let all = s.would_refuse(None, 0).await.unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    let first = &all[0];
    assert_eq!((first.count, first.first_seen, first.last_seen), (5, h + 1, h + 5));
    assert_eq!(first.key_id, None);
    let dev = s.would_refuse(Some("dev"), 0).await.unwrap();
    assert_eq!(dev.iter().map(|r| r.count).sum::<u64>(), 7);
    assert!(dev.iter().any(|r| r.key_id.as_deref() == Some("k1") && r.reason == "throttled"));
    let recent = s.would_refuse(Some("dev"), h + 3600).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].hour, h + 3600);
    // 31 days on, the first hour is gone.
    let later = h + 31 * 86_400 + 3600;
    s.add_would_refuse(&[row(later, "dev", "10.0.0.3", None, 1, later)]).await.unwrap();
    let all = s.would_refuse(None, 0).await.unwrap();
    assert!(all.iter().all(|r| r.hour > h), "{all:?}");
}

/// A rotated-out value's uses add up per client; `--retire-when-idle` ends it once unused for
/// its idle time (counted from its last use, else from the rotation), not before.
async fn idle_old_values_are_retired_and_their_clients_kept(s: Arc<dyn ConfigStore>) {
    use keygate_types::model::OldValueUse;
    let k = s.create_key(new_key("rot"), &[]).await.unwrap();
    let old_digest = s.snapshot().await.unwrap().keys.records()[0].digest;
    let rotate = Change::RotateKey {
        id: k.id.clone(),
        value: ApiKeyValue::generate(),
        grace_secs: 86_400,
        retire_idle: Some(60),
    };
    let rotated = s.change(rotate).await.unwrap().into_key().unwrap();
    let t = rotated.last_updated_date;
    let used = |client: &str, at: i64| OldValueUse {
        digest: old_digest,
        client: client.into(),
        user_agent: "ua".into(),
        count: 1,
        first_seen: at,
        last_seen: at,
    };
    s.add_old_value_uses(&[used("10.0.0.1", t + 10), used("10.0.0.2", t + 30)]).await.unwrap();
    s.add_old_value_uses(&[used("10.0.0.1", t + 40)]).await.unwrap();
    // A value that is no old value: dropped, not an error.
    let stranger =
        OldValueUse { digest: keygate_types::KeyDigest::of(b"x"), ..used("10.0.0.9", t) };
    s.add_old_value_uses(&[stranger]).await.unwrap();
    let old = s.old_values(&k.id, t + 41).await.unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!((old[0].rotated_at, old[0].retire_idle), (Some(t), Some(60)));
    let clients: Vec<(&str, u64, i64)> =
        old[0].uses.iter().map(|u| (u.client.as_str(), u.count, u.last_seen)).collect();
    assert_eq!(clients, [("10.0.0.1", 2, t + 40), ("10.0.0.2", 1, t + 30)]);
    // Idle from its last use (t + 40): not at t + 99, at t + 100.
    assert_eq!(s.idle_old_values(t + 99).await.unwrap(), 0);
    assert_eq!(s.idle_old_values(t + 100).await.unwrap(), 1);
    let before = s.snapshot().await.unwrap().version;
    let n = s.change(Change::RetireIdleOldValues { now: t + 100 }).await.unwrap().into_count();
    assert_eq!(n.unwrap(), 1);
    assert!(s.snapshot().await.unwrap().version > before, "gateways reload");
    assert!(s.old_values(&k.id, t + 100).await.unwrap().is_empty());
    assert_eq!(s.idle_old_values(t + 200).await.unwrap(), 0, "retired once");
    assert_eq!(values_of(&s, &k.id).await.len(), 2, "kept until cleaned, refused from t + 100");
}

/// An operator's switch of a stage's key checks: set and cleared through a change (gateways
/// reload), read in the snapshot and the stage list, kept by a redeploy, refused for a stage that
/// is not deployed.
async fn a_stage_keeps_its_enforcement_switch_across_deploys(s: Arc<dyn ConfigStore>) {
    use keygate_types::Enforcement;
    let first = s.deploy(request("dev", &["k1"])).await.unwrap();
    let api_id = first.api.id.clone();
    let switch = |e: Option<Enforcement>| Change::SetStageEnforcement {
        api_id: api_id.clone(),
        stage: "dev".into(),
        enforcement: e,
    };
    assert_eq!(s.snapshot().await.unwrap().stages[0].enforcement, None);
    let before = s.version().await.unwrap();
    s.change(switch(Some(Enforcement::Report))).await.unwrap();
    assert!(s.version().await.unwrap() > before, "gateways reload");
    s.deploy(request("dev", &["k1"])).await.unwrap();
    assert_eq!(s.snapshot().await.unwrap().stages[0].enforcement, Some(Enforcement::Report));
    assert_eq!(s.list_stages(&api_id).await.unwrap()[0].enforcement, Some(Enforcement::Report));
    s.change(switch(None)).await.unwrap();
    assert_eq!(s.snapshot().await.unwrap().stages[0].enforcement, None);
    let nowhere = Change::SetStageEnforcement {
        api_id: api_id.clone(),
        stage: "prod".into(),
        enforcement: Some(Enforcement::Report),
    };
    assert!(matches!(s.change(nowhere).await, Err(Error::NotFound(_))));
}

/// A store error keeps the backend's error as its source, so callers can show the whole chain.
#[tokio::test]
async fn store_errors_keep_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let Err(e) = SqliteStore::open(&not_a_dir.join("data")).await else {
        panic!("a data directory under a file cannot be created")
    };
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().starts_with("the store is unavailable: cannot create data directory"));
    let source = std::error::Error::source(&e).expect("the IO error is kept");
    assert!(source.downcast_ref::<std::io::Error>().is_some(), "{source:?}");
}

/// A CLI's write transaction that reads before it writes (`revoke_old_values`, `update_key`)
/// while a gateway flushes and folds usage into the same file: each waits for the other within the
/// busy timeout. With deferred transactions, a flush committed between the read and the write
/// made the CLI fail at once with "database is locked" (seen in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_in_two_processes_wait_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cli = SqliteStore::open(&data).await.unwrap();
    let gateway = SqliteStore::open(&data).await.unwrap();
    let out = cli.deploy(request("dev", &["k"])).await.unwrap();
    let (key, plan) = (out.keys[0].0.id.clone(), out.plans[0].id.clone());
    cli.rotate_key(&key, ApiKeyValue::generate(), 3600).await.unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = {
        let (stop, key, plan) = (stop.clone(), key.clone(), plan.clone());
        tokio::spawn(async move {
            let mut at = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                at += 1;
                let used = DailyUsage {
                    plan_id: plan.clone(),
                    key_id: key.clone(),
                    day: date("2026-11-01"),
                    used: 1,
                    last_used: Some(at),
                };
                gateway.add_usage(&[used]).await.unwrap();
                if at % 10 == 0 {
                    gateway.fold_usage().await.unwrap();
                }
            }
            at
        })
    };
    for i in 0..300 {
        cli.revoke_old_values(&key).await.unwrap();
        let patch =
            ApiKeyPatch { description: Some(Some(format!("round {i}"))), ..Default::default() };
        cli.update_key(&key, patch).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(flusher.await.unwrap() > 0, "the gateway flushed while the CLI wrote");
}

/// Every kind of change is recorded in the audit log, in order, as its actor, with a target that
/// names what changed and never a key value; admin credentials and tokens leave the version
/// gateways poll alone, every other change moves it.
async fn every_change_is_recorded_in_the_audit_log(s: Arc<dyn ConfigStore>) {
    use keygate_types::model::{AdminCredential, AdminToken};
    let out = s.deploy(request("dev", &["k1"])).await.unwrap();
    let (api, plan_id, k1) =
        (out.api.id.clone(), out.plans[0].id.clone(), out.keys[0].0.id.clone());
    let fresh = new_key("k2");
    let fresh_value = fresh.value.expose().to_owned();
    let k2 = s.create_key(fresh, &[]).await.unwrap().id;
    let imported = new_key("k3");
    let imported_value = imported.value.expose().to_owned();
    s.import_keys(vec![(imported, vec![])]).await.unwrap();
    let rotated = ApiKeyValue::generate();
    let rotated_value = rotated.expose().to_owned();
    s.rotate_key(&k1, rotated, 60).await.unwrap();
    assert_eq!(s.revoke_old_values(&k1).await.unwrap(), 1);
    s.update_key(&k2, ApiKeyPatch { enabled: Some(false), ..Default::default() }).await.unwrap();
    let stage = ApiStage { api_id: api.clone(), stage: "dev".into(), throttle: Default::default() };
    let change = Change::CreatePlan { plan: plan("second"), stages: vec![] };
    let second = s.change(change).await.unwrap().into_plan().unwrap().id;
    let patch = UsagePlanPatch { description: Some(Some("d".into())), ..Default::default() };
    s.update_plan(&second, patch).await.unwrap();
    s.add_plan_key(&second, &k2).await.unwrap();
    s.remove_plan_key(&second, &k2).await.unwrap();
    s.put_plan_stage(&second, stage).await.unwrap();
    s.remove_plan_stage(&second, &api, "dev").await.unwrap();
    let grant = UsageGrant {
        plan_id: plan_id.clone(),
        key_id: k1.clone(),
        period_start: date("2026-12-01"),
        extra: 5,
    };
    s.put_grant(grant).await.unwrap();
    let definition = s.get_api_definition(&api).await.unwrap().unwrap();
    s.change(Change::PutApiDefinition { api_id: api.clone(), definition }).await.unwrap();
    let change = Change::CreateDeployment { api_id: api.clone(), stage: "qa".into() };
    s.change(change).await.unwrap().into_deployment().unwrap();
    s.delete_stage(&api, "qa").await.unwrap();
    s.delete_key(&k2).await.unwrap();
    s.delete_plan(&second).await.unwrap();
    let version = s.version().await.unwrap();
    let credential = AdminCredential {
        access_key_id: "AKKGTEST".into(),
        secret_sealed: vec![1, 2, 3],
        description: None,
        created_date: 1,
        revoked_date: None,
    };
    s.change(Change::CreateAdminCredential(credential)).await.unwrap();
    let id = "AKKGTEST".to_owned();
    s.change(Change::RevokeAdminCredential { access_key_id: id }).await.unwrap();
    let token = AdminToken {
        id: "t1".into(),
        digest: vec![9; 32],
        prefix: "kgt_abcd".into(),
        description: None,
        created_date: 1,
        revoked_date: None,
    };
    s.change(Change::CreateAdminToken(token)).await.unwrap();
    s.change(Change::RevokeAdminToken { id: "t1".into() }).await.unwrap();
    assert_eq!(s.version().await.unwrap(), version, "admin changes are not served");

    let log = s.list_audit(0, 100).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "Deploy",
            "CreateApiKey",
            "ImportApiKeys",
            "RotateApiKey",
            "RevokeOldApiKeyValues",
            "UpdateApiKey",
            "CreateUsagePlan",
            "UpdateUsagePlan",
            "CreateUsagePlanKey",
            "DeleteUsagePlanKey",
            "UpdateUsagePlan:addApiStage",
            "UpdateUsagePlan:removeApiStage",
            "UpdateUsage",
            "UpdateRestApiDefinition",
            "CreateDeployment",
            "DeleteStage",
            "DeleteApiKey",
            "DeleteUsagePlan",
            "CreateAdminCredential",
            "RevokeAdminCredential",
            "CreateAdminToken",
            "RevokeAdminToken",
        ]
    );
    assert!(log.iter().all(|e| e.actor == "test"), "{log:?}");
    let target = |action: &str| log.iter().find(|e| e.action == action).unwrap().target.clone();
    assert_eq!(target("Deploy"), "svc/dev");
    assert_eq!(target("CreateApiKey"), k2, "a created key is named by its id");
    assert_eq!(target("CreateUsagePlan"), second);
    assert_eq!(target("ImportApiKeys"), "1 keys");
    assert_eq!(target("CreateUsagePlanKey"), format!("{second}/{k2}"));
    assert_eq!(target("UpdateUsagePlan:removeApiStage"), format!("{second}/{api}/dev"));
    let text = format!("{log:?}");
    for value in [&fresh_value, &imported_value, &rotated_value] {
        assert!(!text.contains(value.as_str()), "a key value is in the audit log");
    }
}

/// A change whose audit entry cannot be written is not made: the entry is written in the
/// change's own transaction, so a failure rolls both back.
#[tokio::test]
async fn a_change_that_cannot_be_audited_is_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = SqliteStore::open(&data).await.unwrap();
    let out = s.deploy(request("dev", &["k1"])).await.unwrap();
    let k1 = out.keys[0].0.id.clone();
    // Another connection makes every audit insert fail, as a full disk or a broken table would.
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("keygate.db").display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'the audit log cannot be written'); END",
    )
    .execute(&raw)
    .await
    .unwrap();
    let version = s.version().await.unwrap();

    let err = s.create_key(new_key("k2"), &[]).await.unwrap_err();
    assert!(format!("{err:?}").contains("the audit log cannot be written"), "{err:?}");
    assert!(s.get_key_by_name("k2").await.unwrap().is_none(), "the key was created anyway");
    s.delete_key(&k1).await.unwrap_err();
    assert!(s.get_key(&k1).await.unwrap().is_some(), "the key was deleted anyway");
    let rows = vec![(new_key("k3"), vec![]), (new_key("k4"), vec![])];
    s.import_keys(rows).await.unwrap_err();
    assert!(s.get_key_by_name("k3").await.unwrap().is_none(), "the import was kept anyway");
    s.deploy(request("qa", &["k5"])).await.unwrap_err();
    assert!(s.get_key_by_name("k5").await.unwrap().is_none(), "the deploy was kept anyway");
    assert_eq!(s.version().await.unwrap(), version, "nothing moved the served version");

    sqlx::query("DROP TRIGGER audit_fails").execute(&raw).await.unwrap();
    s.create_key(new_key("k2"), &[]).await.unwrap();
    let log = s.list_audit(0, 100).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["Deploy", "CreateApiKey"]);
}

/// Keyset pages: each page starts after the last name of the previous one, a prefix is a range of
/// names (including names past the ASCII range), and a customer filter applies within the page.
async fn lists_come_in_pages_by_name(s: Arc<dyn ConfigStore>) {
    let names = ["a1", "a2", "a3", "b1", "b2", "é1", "é2", "zz"];
    let mut keys = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut key = new_key(name);
        key.customer_id = Some(if i % 2 == 0 { "even" } else { "odd" }.into());
        keys.push((key, vec![]));
    }
    keys.reverse();
    s.import_keys(keys).await.unwrap();
    let page = |after, prefix, limit| Page { after, prefix, limit };
    let names_of = |keys: Vec<ApiKey>| keys.into_iter().map(|k| k.name).collect::<Vec<_>>();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let next = Page { after: after.as_deref(), prefix: None, limit: 3 };
        let got = names_of(s.list_keys(next, None).await.unwrap());
        if got.is_empty() {
            break;
        }
        after = got.last().cloned();
        seen.extend(got);
    }
    // Byte order of UTF-8, which is code point order: é (U+00E9) after z.
    assert_eq!(seen, ["a1", "a2", "a3", "b1", "b2", "zz", "é1", "é2"], "every key once, in order");
    let a = names_of(s.list_keys(page(None, Some("a"), 10), None).await.unwrap());
    assert_eq!(a, ["a1", "a2", "a3"]);
    let a = names_of(s.list_keys(page(Some("a1"), Some("a"), 1), None).await.unwrap());
    assert_eq!(a, ["a2"]);
    let e = names_of(s.list_keys(page(None, Some("é"), 10), None).await.unwrap());
    assert_eq!(e, ["é1", "é2"]);
    assert!(s.list_keys(page(None, Some("q"), 10), None).await.unwrap().is_empty());
    let even = names_of(s.list_keys(page(Some("a1"), None, 3), Some("even")).await.unwrap());
    assert_eq!(even, ["a3", "b2", "é2"]);

    for name in ["p-b", "p-a", "q"] {
        s.create_plan(plan(name)).await.unwrap();
    }
    let plans = s.list_plans(page(Some("p-a"), Some("p-"), 5)).await.unwrap();
    assert_eq!(plans.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["p-b"]);
}

/// A change made through one PostgreSQL store (one node) moves every other's change signal
/// (NOTIFY on commit), so their gateways reload without waiting for the poll; a rolled-back
/// change does not.
#[tokio::test]
async fn postgres_signals_changes_to_every_node() {
    let Some((schema, a)) = postgres_store().await else { return };
    let url = format!(
        "{}{}options=-c%20search_path%3D{}",
        postgres_url(),
        if postgres_url().contains('?') { '&' } else { '?' },
        schema.0
    );
    let b = keygate_store::open(&url).await.unwrap();
    let mut signal = a.change_signal().expect("PostgreSQL signals changes");
    let wait = std::time::Duration::from_secs(10);
    // A change that fails (a key in a plan that does not exist) is rolled back: no signal.
    b.create_key(new_key("lost"), &["no-such-plan".to_owned()]).await.unwrap_err();
    b.create_key(new_key("k1"), &[]).await.unwrap();
    tokio::time::timeout(wait, signal.changed()).await.expect("signalled").unwrap();
    assert!(a.get_key_by_name("k1").await.unwrap().is_some());
    assert!(!signal.has_changed().unwrap(), "one change, one signal");
    assert!(
        SqliteStore::open(&tempfile::tempdir().unwrap().path().join("d"))
            .await
            .unwrap()
            .change_signal()
            .is_none()
    );
}

/// The same for the embedded store: a database file migrated by a newer keygate is refused.
#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    SqliteStore::open(&data).await.unwrap().close().await;
    {
        use sqlx::Connection;
        let file = data.join(keygate_store::sqlite::DB_FILE);
        let mut c =
            sqlx::SqliteConnection::connect(&format!("sqlite:{}", file.display())).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', 1, x'00', 0)",
        )
        .execute(&mut c)
        .await
        .unwrap();
    }
    let Err(err) = SqliteStore::open(&data).await else { panic!("a newer schema was opened") };
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("newer keygate") && chain.contains("9999"), "{chain}");
}

/// A database migrated by a newer keygate is refused with a message that says so, and nothing
/// is written to it.
#[tokio::test]
async fn postgres_refuses_a_newer_schema() {
    let Some((schema, store)) = postgres_store().await else { return };
    drop(store);
    let url = format!(
        "{}{}options=-c%20search_path%3D{}",
        postgres_url(),
        if postgres_url().contains('?') { '&' } else { '?' },
        schema.0
    );
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', true, '\\x00', 0)",
        )
        .execute(&mut c)
        .await
        .unwrap();
    }
    let Err(err) = keygate_store::open(&url).await else { panic!("a newer schema was opened") };
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("newer keygate") && chain.contains("9999"), "{chain}");
}

/// The behaviour every backend must have, run once per backend: a backend adds one line here
/// with the function that opens a fresh, empty store of its own (and whatever keeps it alive).
macro_rules! suite {
    ($backend:ident, $open:path, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some((_alive, store)) = $open().await else { return };
                    super::$test(store).await;
                }
            )*
        }
    };
}

suite!(
    sqlite,
    super::store,
    [
        deploy_creates_keys_once_and_snapshots,
        undeclared_keys_are_reported_not_deleted,
        key_crud_and_conflicts,
        plans_keep_their_id_and_usage_across_deploys,
        usage_folded_while_appended_is_counted_once,
        a_long_usage_log_folds_in_chunks,
        plan_memberships_and_checked_changes,
        the_snapshot_has_every_key_across_chunks,
        the_snapshot_matches_memberships_stored_in_any_order,
        a_rotation_without_grace_ends_every_older_value,
        old_values_can_be_revoked,
        the_snapshot_says_when_a_lookalike_value_is_stored,
        would_be_refusals_add_up_by_hour_and_client,
        idle_old_values_are_retired_and_their_clients_kept,
        a_stage_keeps_its_enforcement_switch_across_deploys,
        every_change_is_recorded_in_the_audit_log,
        lists_come_in_pages_by_name,
    ]
);

suite!(
    postgres,
    super::postgres_store,
    [
        deploy_creates_keys_once_and_snapshots,
        undeclared_keys_are_reported_not_deleted,
        key_crud_and_conflicts,
        plans_keep_their_id_and_usage_across_deploys,
        usage_folded_while_appended_is_counted_once,
        a_long_usage_log_folds_in_chunks,
        plan_memberships_and_checked_changes,
        the_snapshot_has_every_key_across_chunks,
        the_snapshot_matches_memberships_stored_in_any_order,
        a_rotation_without_grace_ends_every_older_value,
        old_values_can_be_revoked,
        the_snapshot_says_when_a_lookalike_value_is_stored,
        would_be_refusals_add_up_by_hour_and_client,
        idle_old_values_are_retired_and_their_clients_kept,
        a_stage_keeps_its_enforcement_switch_across_deploys,
        every_change_is_recorded_in_the_audit_log,
        lists_come_in_pages_by_name,
    ]
);
