//! The one-plan-per-API-stage rule, kept by keygate-control over any backend (the store only
//! stores): adding a key to a plan, a stage to a plan, a key in several plans (create, import)
//! and a deploy that places a key are each refused when a key would reach an API stage through
//! two plans; and a change checked against a store that changed meanwhile is checked again.

use std::collections::BTreeMap;
use std::path::PathBuf;

mod common;

use common::key_in;
use keygate_control::keys;
use keygate_control::{Error, Store, plans};
use keygate_types::ServiceDefinition;
use keygate_types::model::NewUsagePlan;
use keygate_types::service::ApiKeyDecl;

fn service(stage: &str, keys: &[&str]) -> ServiceDefinition {
    ServiceDefinition {
        service: "svc".into(),
        stage: stage.into(),
        region: "us-east-1".into(),
        base_dir: PathBuf::from("/tmp"),
        functions: vec![],
        api_keys: keys
            .iter()
            .map(|k| ApiKeyDecl {
                name: (*k).into(),
                value: None,
                description: None,
                customer_id: None,
                enabled: true,
                usage_plan: None,
            })
            .collect(),
        usage_plans: vec![],
        tables: vec![],
        api_key_source: Default::default(),
        key_introspection: None,
    }
}

async fn deploy(store: &Store, stage: &str, keys: &[&str]) -> keygate_control::DeployReport {
    let artifacts = tempfile::tempdir().unwrap();
    keygate_control::deploy(
        store,
        service(stage, keys),
        vec![],
        &BTreeMap::new(),
        artifacts.path(),
        "http://127.0.0.1:0",
        None,
    )
    .await
    .unwrap()
}

fn conflict<T: std::fmt::Debug>(result: keygate_control::Result<T>, says: &str) {
    match result {
        Err(Error::Conflict(m)) => {
            assert!(m.contains("only one plan per API stage"), "{m}");
            assert!(m.contains(says), "{m} should name {says}");
        }
        other => panic!("expected a conflict naming {says}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_key_reaches_an_api_stage_through_one_plan_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(keygate_control::open(dir.path()).await.unwrap(), "test:rules");
    deploy(&store, "dev", &["k"]).await;
    let other = NewUsagePlan { name: "other".into(), ..Default::default() };
    plans::create(&store, other, vec![]).await.unwrap();

    // Not covering the stage yet: the key may join; then the plan may not cover the stage.
    plans::add_key(&store, "other", "k").await.unwrap();
    conflict(plans::add_stage(&store, "other", "svc", "dev", BTreeMap::new()).await, "svc-dev");
    // Without the key it may; then the key may not join it.
    plans::remove_key(&store, "other", "k").await.unwrap();
    plans::add_stage(&store, "other", "svc", "dev", BTreeMap::new()).await.unwrap();
    conflict(plans::add_key(&store, "other", "k").await, "svc-dev");
    // Adding the key to its own plan again is no change, not a conflict.
    plans::add_key(&store, "svc-dev", "k").await.unwrap();

    // A new key in two plans that cover the same stage, by import: refused, nothing imported.
    let (a, b) = (
        plans::find(&store, "svc-dev").await.unwrap(),
        plans::find(&store, "other").await.unwrap(),
    );
    let csv = format!("name,key,usageplanIds\nnew,{},\"{},{}\"\n", "v".repeat(30), a.id, b.id);
    conflict(keygate_control::import::import(&store, &csv, false).await, "other");
    assert!(keys::find(&store, "new").await.is_err(), "a refused import created its key");
    // In one plan it may.
    let csv = format!("name,key,usageplanIds\nnew,{},{}\n", "v".repeat(30), a.id);
    keygate_control::import::import(&store, &csv, false).await.unwrap();
    keys::create(&store, key_in("solo", "other")).await.unwrap();
}

/// A deploy takes a declared key out of the stage's other plans and into its own, but refuses to
/// place it in a plan that also covers a stage the key reaches through another plan.
#[tokio::test]
async fn a_deploy_places_a_key_only_where_no_other_plan_reaches_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(keygate_control::open(dir.path()).await.unwrap(), "test:rules");
    deploy(&store, "dev", &["k0"]).await;
    deploy(&store, "prod", &[]).await;
    // An admin makes the dev plan cover prod too, and keeps a key in a prod plan of its own.
    plans::add_stage(&store, "svc-dev", "svc", "prod", BTreeMap::new()).await.unwrap();
    let extra = NewUsagePlan { name: "extra".into(), ..Default::default() };
    plans::create(&store, extra, vec![]).await.unwrap();
    plans::add_stage(&store, "extra", "svc", "prod", BTreeMap::new()).await.unwrap();
    keys::create(&store, key_in("k", "extra")).await.unwrap();
    // Declaring it in dev would make it reach prod through svc-dev and extra.
    let artifacts = tempfile::tempdir().unwrap();
    let places = BTreeMap::new();
    let again = keygate_control::deploy(
        &store,
        service("dev", &["k0", "k"]),
        vec![],
        &places,
        artifacts.path(),
        "http://127.0.0.1:0",
        None,
    );
    conflict(again.await, "extra");
    let extra = plans::find(&store, "extra").await.unwrap();
    assert_eq!(plans::all_keys(&store, &extra.id).await.unwrap().len(), 1, "nothing moved");
}
