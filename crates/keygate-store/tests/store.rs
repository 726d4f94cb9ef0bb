//! Behaviour every `ConfigStore` must have, run against SQLite. A PostgreSQL implementation will
//! run the same functions.

use std::path::PathBuf;
use std::sync::Arc;

use keygate_store::{ConfigStore, DeployRequest, Error, KeyStatus, SqliteStore};
use keygate_types::model::{ApiKeyPatch, NewApiKey};
use keygate_types::{
    ApiKeyValue, FunctionSpec, HttpEvent, HttpMethod, Integration, ServiceDefinition,
};

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
            runtime: "provided.al2023".into(),
            environment: Default::default(),
            timeout_secs: 6,
            memory_size: 1024,
            description: None,
            reserved_concurrency: None,
            artifact: None,
            events: vec![HttpEvent {
                path: "/x".into(),
                method: HttpMethod::Get,
                private,
                cors: None,
                integration: Integration::LambdaProxy,
            }],
        }],
        api_keys: vec![],
        usage_plan: None,
    }
}

fn new_key(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        value: ApiKeyValue::generate(),
        description: None,
        customer_id: None,
        enabled: true,
    }
}

fn request(stage: &str, keys: &[&str]) -> DeployRequest {
    DeployRequest {
        definition: definition(stage, true),
        keys: keys.iter().map(|k| new_key(k)).collect(),
        plan_name: format!("svc-{stage}"),
        plan_limits: None,
    }
}

async fn store() -> (tempfile::TempDir, Arc<dyn ConfigStore>) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("data")).await.unwrap();
    (dir, Arc::new(s))
}

#[tokio::test]
async fn deploy_creates_keys_once_and_snapshots() {
    let (_dir, s) = store().await;
    let v0 = s.version().await.unwrap();
    let first = s.deploy(request("dev", &["k1"])).await.unwrap();
    assert_eq!(first.keys[0].1, KeyStatus::Created);
    assert!(s.version().await.unwrap() > v0);
    let second = s.deploy(request("dev", &["k1"])).await.unwrap();
    assert_eq!(second.keys[0].1, KeyStatus::Existing);
    assert_eq!(second.keys[0].0.id, first.keys[0].0.id);
    assert_eq!(second.api.id, first.api.id);
    assert_eq!(second.plan.id, first.plan.id);
    assert_ne!(second.deployment.id, first.deployment.id);
    assert_eq!(s.list_keys().await.unwrap().len(), 1);

    // The old deployment is still there, unchanged.
    let old = s.get_deployment(&first.deployment.id).await.unwrap().unwrap();
    assert_eq!(old.definition, first.deployment.definition);

    // The snapshot grants the key on svc/dev only.
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.stages.len(), 1);
    assert_eq!(snap.stages[0].deployment_id, second.deployment.id);
    assert_eq!(snap.keys.len(), 1);
    assert_eq!(snap.keys[0].stages.len(), 1);
    assert_eq!(snap.keys[0].stages[0].stage, "dev");

    // A second stage: the same key is reused and granted there too, through the new plan.
    let prod = s.deploy(request("prod", &["k1"])).await.unwrap();
    assert_eq!(prod.keys[0].0.id, first.keys[0].0.id);
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.stages.len(), 2);
    assert_eq!(snap.keys[0].stages.len(), 2);
}

#[tokio::test]
async fn undeclared_keys_are_reported_not_deleted() {
    let (_dir, s) = store().await;
    s.deploy(request("dev", &["a", "b"])).await.unwrap();
    let out = s.deploy(request("dev", &["a"])).await.unwrap();
    assert_eq!(out.undeclared.len(), 1);
    assert_eq!(out.undeclared[0].name, "b");
    assert_eq!(s.list_keys().await.unwrap().len(), 2);
}

#[tokio::test]
async fn key_crud_and_conflicts() {
    let (_dir, s) = store().await;
    let k = new_key("one");
    let value = k.value.clone();
    let created = s.create_key(k, &[]).await.unwrap();
    assert_eq!(created.prefix, value.expose()[..4]);
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
    assert_eq!(s.list_keys().await.unwrap().len(), 1);
    match s.create_key(new_key("three"), &["nope".into()]).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.list_keys().await.unwrap().len(), 1);

    let updated = s
        .update_key(&created.id, ApiKeyPatch { enabled: Some(false), ..Default::default() })
        .await
        .unwrap();
    assert!(!updated.enabled);
    let snap = s.snapshot().await.unwrap();
    assert!(!snap.keys[0].enabled);
    assert_eq!(snap.keys[0].digest, value.digest());

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
        let k = s.create_key(new_key("later"), std::slice::from_ref(&out.plan.id)).await.unwrap();
        assert_eq!(s.key_plan_ids(&k.id).await.unwrap(), vec![out.plan.id.clone()]);
        assert_eq!(s.list_plan_keys(&out.plan.id).await.unwrap()[0].id, k.id);
        key_id = k.id;
        s.close().await;
    }
    let s = SqliteStore::open(&data).await.unwrap();
    assert!(s.get_key(&key_id).await.unwrap().is_some());
    assert_eq!(s.list_apis().await.unwrap().len(), 1);
    assert_eq!(s.list_plans().await.unwrap()[0].api_stages.len(), 1);
}
