//! Process lifecycle: environment, working directory, start-up failures, fingerprints, idle
//! reaping and shutdown.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keygate_functions::{FunctionHost, HostOptions, InvokeError};
use serde_json::json;

use crate::common::{Service, fref, invoke, json, pid, process_exists, script, spec};

#[tokio::test]
async fn the_process_gets_the_lambda_environment_and_runs_in_its_task_root() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let mut spec = spec("env");
    spec.environment = BTreeMap::from([
        ("TABLE".to_owned(), "candidates".to_owned()),
        ("AWS_REGION".to_owned(), "mars-1".to_owned()), // reserved: ignored
    ]);
    spec.memory_size = 256;
    spec.timeout_secs = 7;
    let raw = invoke(&host, &svc.f(&spec), json!({})).await.unwrap();
    let answer = json(&raw);
    let env: BTreeMap<String, String> =
        serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    let get = |k: &str| env.get(k).map(String::as_str);

    assert_eq!(get("TABLE"), Some("candidates"));
    assert_eq!(get("AWS_LAMBDA_FUNCTION_NAME"), Some("svc-dev-fn"));
    assert_eq!(get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), Some("256"));
    assert_eq!(get("AWS_LAMBDA_FUNCTION_VERSION"), Some("$LATEST"));
    assert_eq!(get("AWS_LAMBDA_FUNCTION_TIMEOUT"), Some("7"));
    assert_eq!(get("AWS_LAMBDA_LOG_GROUP_NAME"), Some("/aws/lambda/svc-dev-fn"));
    assert!(get("AWS_LAMBDA_LOG_STREAM_NAME").is_some_and(|s| s.contains("[$LATEST]")));
    assert_eq!(get("AWS_LAMBDA_INITIALIZATION_TYPE"), Some("on-demand"));
    assert!(get("AWS_LAMBDA_RUNTIME_API").is_some_and(|s| s.starts_with("127.0.0.1:")));
    assert_eq!(get("_HANDLER"), Some("env"));
    let staged = crate::common::staged_testfn().to_str().unwrap();
    assert_eq!(get("LAMBDA_TASK_ROOT"), Some(staged));
    assert!(get("LAMBDA_RUNTIME_DIR").is_some());
    assert_eq!(get("AWS_REGION"), Some("eu-west-1"));
    assert_eq!(get("AWS_DEFAULT_REGION"), Some("eu-west-1"));
    assert_eq!(get("TZ"), Some("UTC"));
    assert!(get("PATH").is_some());
    // Nothing else leaks from the host (cargo sets CARGO_* for tests).
    for absent in
        ["RUST_LOG", "IS_OFFLINE", "AWS_EXECUTION_ENV", "CARGO_PKG_NAME", "CARGO_MANIFEST_DIR"]
    {
        assert_eq!(get(absent), None, "{absent} must not be set");
    }
    // As on Lambda, the function runs in its task root (the deployed copy of its code).
    let cwd = answer["headers"]["x-cwd"].as_str().unwrap();
    assert_eq!(std::fs::canonicalize(cwd).unwrap(), std::fs::canonicalize(staged).unwrap());
    host.shutdown().await;
}

#[tokio::test]
async fn an_init_error_is_reported() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let spec = spec("no-such-handler");
    match invoke(&host, &svc.f(&spec), json!({})).await {
        Err(InvokeError::InitFailed(why)) => {
            assert!(why.contains("Runtime.NoSuchHandler"), "{why}")
        }
        other => panic!("expected InitFailed, got {other:?}"),
    }
    host.shutdown().await;
}

#[tokio::test]
async fn a_bootstrap_that_exits_during_init_is_a_crash_and_its_output_is_just_logs() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let bootstrap = svc.base_dir().join("bootstrap");
    script(&bootstrap, "printf 'garbage \\377\\376 no newline'; echo oops >&2; exit 1");
    let mut spec = spec("whatever");
    spec.artifact = Some(bootstrap);
    match invoke(&host, &svc.f(&spec), json!({})).await {
        Err(InvokeError::Crashed(why)) => assert!(why.contains("during init"), "{why}"),
        other => panic!("expected Crashed, got {other:?}"),
    }
    host.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_unusable_artifact_is_a_spawn_error() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let mut no_artifact = spec("env");
    no_artifact.artifact = None;
    assert!(matches!(
        invoke(&host, &svc.f(&no_artifact), json!({})).await,
        Err(InvokeError::Spawn(_))
    ));

    let mut missing = spec("env");
    missing.artifact = Some(svc.base_dir().join("gone"));
    match invoke(&host, &svc.f(&missing), json!({})).await {
        Err(InvokeError::Spawn(why)) => assert!(why.contains("gone"), "{why}"),
        other => panic!("expected Spawn, got {other:?}"),
    }

    let not_exec = svc.base_dir().join("plain");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let mut spec = spec("env");
    spec.artifact = Some(not_exec);
    match invoke(&host, &svc.f(&spec), json!({})).await {
        Err(InvokeError::Spawn(why)) => assert!(why.contains("chmod +x"), "{why}"),
        other => panic!("expected Spawn, got {other:?}"),
    }
}

#[tokio::test]
async fn a_changed_function_gets_a_fresh_pool_and_an_unchanged_one_stays_warm() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let v1 = spec("env");
    let first = pid(&invoke(&host, &svc.f(&v1), json!({})).await.unwrap());
    let same = v1.clone();
    assert_eq!(pid(&invoke(&host, &svc.f(&same), json!({})).await.unwrap()), first);
    let mut v2 = v1.clone();
    v2.environment.insert("VERSION".to_owned(), "2".to_owned());
    let second = pid(&invoke(&host, &svc.f(&v2), json!({})).await.unwrap());
    assert_ne!(first, second);
    host.shutdown().await;
    assert!(!process_exists(first) && !process_exists(second));
}

#[tokio::test]
async fn idle_processes_are_stopped_after_the_idle_timeout() {
    let host = FunctionHost::new(HostOptions {
        idle_timeout: Duration::from_millis(500),
        ..HostOptions::default()
    });
    let svc = Service::new();
    let spec = spec("env");
    let first = pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    let started = Instant::now();
    while process_exists(first) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "idle process {first} was never stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    assert_ne!(first, second);
    host.shutdown().await;
}

#[tokio::test]
async fn a_process_is_retired_after_max_invocations() {
    let host = FunctionHost::new(HostOptions { max_invocations: 3, ..HostOptions::default() });
    let svc = Service::new();
    let spec = spec("env");
    let mut pids = Vec::new();
    for _ in 0..4 {
        pids.push(pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap()));
    }
    assert_eq!((pids[0], pids[0]), (pids[1], pids[2]), "three answers from one process");
    assert_ne!(pids[2], pids[3], "the fourth from a new one");
    let started = Instant::now();
    while process_exists(pids[0]) {
        assert!(started.elapsed() < Duration::from_secs(20), "the retired process still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.shutdown().await;
}

#[tokio::test]
async fn a_managed_process_is_retired_after_max_invocations_per_slot() {
    let host = FunctionHost::new(HostOptions { max_invocations: 2, ..HostOptions::default() });
    let svc = Service::new();
    let spec = keygate_types::FunctionSpec { max_concurrency: Some(2), ..spec("env") };
    let mut pids = Vec::new();
    for _ in 0..5 {
        pids.push(pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap()));
    }
    assert!(pids[..4].iter().all(|&p| p == pids[0]), "2 slots x 2: four answers: {pids:?}");
    assert_ne!(pids[3], pids[4], "the fifth from a new process");
    host.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_busy_processes_and_refuses_new_work() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let spec = spec("sleep");
    let busy = {
        let (host, spec, dir) = (host.clone(), spec.clone(), svc.base_dir().to_owned());
        tokio::spawn(async move {
            let f = fref(&spec, &dir);
            invoke(&host, &f, json!({"sleep_ms": 20_000})).await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    host.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(busy.await.unwrap(), Err(InvokeError::Crashed(_) | InvokeError::Spawn(_))));
    assert!(matches!(invoke(&host, &svc.f(&spec), json!({})).await, Err(InvokeError::Spawn(_))));
}
