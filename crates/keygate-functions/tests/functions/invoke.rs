//! Invocations: answers passed through verbatim, handler errors, crashes, timeouts, concurrency.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keygate_functions::{FunctionHost, FunctionRef, HostOptions, InvokeError};
use serde_json::{Value, json};

use crate::common::{Service, fref, invoke, json, pid, process_exists, spec};

#[tokio::test]
async fn echo_gets_the_event_and_the_answer_comes_back_verbatim() {
    let host = FunctionHost::new(HostOptions::default());
    let svc = Service::new();
    let spec = spec("echo");
    let event = json!({"httpMethod": "GET", "path": "/x", "requestContext": {"identity": {"apiKey": "secret"}}});
    let raw = invoke(&host, &svc.f(&spec), event.clone()).await.unwrap();
    let answer = json(&raw);
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(answer["headers"]["content-type"], "application/json");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, event);
    host.shutdown().await;
}

#[tokio::test]
async fn a_warm_process_is_reused() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let spec = spec("env");
    let first = pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    let second = pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    assert_eq!(first, second, "the second invocation should reuse the warm process");
    host.shutdown().await;
    assert!(!process_exists(first), "shutdown must kill and reap the process");
}

#[tokio::test]
async fn malformed_proxy_answers_are_returned_as_is() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let garbage = spec("garbage");
    let raw = invoke(&host, &svc.f(&garbage), json!({})).await.unwrap();
    assert_eq!(&raw[..], br#""this is not a proxy response""#);
    // Garbage on stdout does not hurt the process: it answers again.
    let raw = invoke(&host, &svc.f(&garbage), json!({})).await.unwrap();
    assert_eq!(&raw[..], br#""this is not a proxy response""#);

    let nonstring = spec("nonstring");
    let raw = invoke(&host, &svc.f(&nonstring), json!({})).await.unwrap();
    assert_eq!(json(&raw), json!({"statusCode": 200, "body": {"a": 1}}));

    let base64 = spec("base64");
    let answer = json(&invoke(&host, &svc.f(&base64), json!({})).await.unwrap());
    assert_eq!(answer["isBase64Encoded"], true);
    assert_eq!(answer["body"], "AAECAwQFBgcICQoLDA0ODw==");

    let status = spec("status");
    let event = json!({"queryStringParameters": {"code": "418"}});
    let answer = json(&invoke(&host, &svc.f(&status), event).await.unwrap());
    assert_eq!(answer["statusCode"], 418);
    assert_eq!(answer["multiValueHeaders"]["set-cookie"].as_array().unwrap().len(), 2);
    host.shutdown().await;
}

#[tokio::test]
async fn a_handler_error_is_a_function_error_and_the_process_stays_warm() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let spec = spec("env");
    let before = pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    match invoke(&host, &svc.f(&spec), json!({"testfn": "error"})).await {
        Err(InvokeError::FunctionError { error_type, message }) => {
            assert!(!error_type.is_empty());
            assert!(message.contains("asked to fail"), "{message}");
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    let after = pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    assert_eq!(before, after, "a handler error must not cost the warm process");
    host.shutdown().await;
}

#[tokio::test]
async fn a_crash_is_reported_and_the_next_invocation_gets_a_fresh_process() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let spec = spec("env");
    let before = pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    match invoke(&host, &svc.f(&spec), json!({"testfn": "crash"})).await {
        Err(InvokeError::Crashed(why)) => {
            assert!(why.contains("while handling an invocation"), "{why}");
            assert!(why.contains('3'), "exit status 3 expected in {why}");
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    assert!(!process_exists(before), "the crashed process must be reaped (no zombie)");
    let after = pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    assert_ne!(before, after);
    // What the metrics show: three invocations, the crash an error, two cold starts.
    let stats = host.stats();
    assert_eq!(stats.len(), 1, "{stats:?}");
    let s = &stats[0];
    assert_eq!(s.function, spec.function_name);
    assert_eq!((s.invocations, s.errors, s.timeouts, s.cold_starts), (3, 1, 0, 2), "{s:?}");
    assert_eq!((s.processes, s.busy), (1, 0), "{s:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn a_timeout_kills_the_process_promptly() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let mut spec = spec("sleep");
    spec.timeout_secs = 1;
    let before = pid(&invoke(&host, &svc.f(&spec), json!({"sleep_ms": 0})).await.unwrap());

    let started = Instant::now();
    let result = invoke(&host, &svc.f(&spec), json!({"sleep_ms": 10_000})).await;
    let took = started.elapsed();
    assert_eq!(result, Err(InvokeError::Timeout));
    assert!(took >= Duration::from_millis(900), "timed out too early: {took:?}");
    assert!(took < Duration::from_secs(6), "timeout took {took:?}");
    assert!(!process_exists(before), "the timed-out process must be killed and reaped");

    let after = pid(&invoke(&host, &svc.f(&spec), json!({"sleep_ms": 0})).await.unwrap());
    assert_ne!(before, after, "the next invocation needs a fresh process");
    let s = &host.stats()[0];
    assert_eq!((s.invocations, s.errors, s.timeouts, s.cold_starts), (3, 0, 1, 2), "{s:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn reserved_concurrency_caps_the_processes_and_the_rest_wait_their_turn() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let mut spec = spec("sleep");
    spec.reserved_concurrency = Some(2);
    spec.timeout_secs = 120;
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (host, spec, dir) = (host.clone(), spec.clone(), svc.base_dir().to_owned());
        calls.spawn(async move {
            let f = fref(&spec, &dir);
            invoke(&host, &f, json!({"sleep_ms": 400})).await
        });
    }
    let results = calls.join_all().await;
    let took = started.elapsed();
    let pids: HashSet<u32> =
        results.iter().map(|r| pid(r.as_ref().expect("every call completes"))).collect();
    assert!(pids.len() <= 2, "at most 2 processes, got {pids:?}");
    // 5 calls of 400 ms on 2 processes need at least 3 rounds.
    assert!(took >= Duration::from_millis(1150), "the calls did not queue: {took:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn processes_scale_out_only_when_busy_ones_do_not_come_back_in_time() {
    async fn concurrent(
        host: &FunctionHost,
        spec: &keygate_types::FunctionSpec,
        svc: &Service,
        n: usize,
        sleep_ms: u64,
    ) -> HashSet<u32> {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (host, spec, dir) = (host.clone(), spec.clone(), svc.base_dir().to_owned());
            calls.spawn(async move {
                let f = fref(&spec, &dir);
                invoke(&host, &f, json!({"sleep_ms": sleep_ms})).await
            });
        }
        calls
            .join_all()
            .await
            .iter()
            .map(|r| pid(r.as_ref().expect("every call completes")))
            .collect()
    }
    let svc = Service::new();
    let mut spec = spec("sleep");
    spec.reserved_concurrency = Some(4);

    // Quick answers come back within the delay: concurrent calls share the one warm process.
    let host = FunctionHost::new(HostOptions {
        scale_out_after: Duration::from_secs(10),
        ..HostOptions::default()
    });
    // From cold, they wait for the process being started rather than each starting one.
    let cold = concurrent(&host, &spec, &svc, 6, 0).await;
    assert_eq!(cold.len(), 1, "one cold start for all: {cold:?}");
    let warm = pid(&invoke(&host, &svc.f(&spec), json!({"sleep_ms": 0})).await.unwrap());
    let pids = concurrent(&host, &spec, &svc, 8, 0).await;
    assert_eq!(pids, HashSet::from([warm]), "no process beyond the warm one");
    host.shutdown().await;

    // Slow answers outlast the default delay: calls run side by side up to the reserved
    // concurrency.
    spec.reserved_concurrency = Some(2);
    let host = FunctionHost::default();
    let pids = concurrent(&host, &spec, &svc, 3, 400).await;
    assert_eq!(pids.len(), 2, "scaled out to the reserved concurrency: {pids:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_goes_away_does_not_break_the_pool() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let mut spec = spec("sleep");
    spec.reserved_concurrency = Some(1);
    let f = svc.f(&spec);
    // Give up on a slow call; it keeps running in the background and keeps its slot.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        invoke(&host, &f, json!({"sleep_ms": 800})),
    )
    .await;
    assert!(gave_up.is_err());
    let raw = invoke(&host, &f, json!({"sleep_ms": 0})).await.unwrap();
    assert_eq!(json(&raw)["statusCode"], 200);
    host.shutdown().await;
}

#[tokio::test]
async fn a_process_that_dies_while_idle_is_replaced_transparently() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let spec = spec("env");
    let first = pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    let killed =
        std::process::Command::new("kill").args(["-9", &first.to_string()]).status().unwrap();
    assert!(killed.success());
    // The host reaps its children: once the process is gone from /proc the host knows it died.
    // (An event racing the death itself may fail as Crashed, as on Lambda.)
    let started = Instant::now();
    while process_exists(first) {
        assert!(started.elapsed() < Duration::from_secs(10), "process {first} was never reaped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = pid(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    assert_ne!(first, second);
    host.shutdown().await;
}

/// A Lambda Managed Instances function (`capacityProvider.maxConcurrency`): one process takes
/// several invocations at once.
fn managed(handler: &str, max_concurrency: u32) -> keygate_types::FunctionSpec {
    keygate_types::FunctionSpec { max_concurrency: Some(max_concurrency), ..spec(handler) }
}

/// The `x-started-ms` and `x-ended-ms` headers of a `sleep` response.
fn span(raw: &[u8]) -> (u128, u128) {
    let headers = &json(raw)["headers"];
    let at = |name: &str| headers[name].as_str().unwrap().parse::<u128>().unwrap();
    (at("x-started-ms"), at("x-ended-ms"))
}

#[tokio::test]
async fn a_managed_instances_process_runs_its_max_concurrency_at_once() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let spec = managed("sleep", 4);
    let env = invoke(&host, &svc.f(&managed("env", 4)), json!({})).await.unwrap();
    let env: Value = serde_json::from_str(json(&env)["body"].as_str().unwrap()).unwrap();
    assert_eq!(env["AWS_LAMBDA_MAX_CONCURRENCY"], "4");

    let f = svc.f(&spec);
    let call = || invoke(&host, &f, json!({"sleep_ms": 1500}));
    let (a, b, c, d) = tokio::join!(call(), call(), call(), call());
    let answers = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    let pids: Vec<u32> = answers.iter().map(|a| pid(a)).collect();
    assert!(pids.iter().all(|&p| p == pids[0]), "one process took all four: {pids:?}");
    // Every call started before any ended: they ran at the same time, not in turn.
    let spans: Vec<(u128, u128)> = answers.iter().map(|a| span(a)).collect();
    let last_start = spans.iter().map(|s| s.0).max().unwrap();
    let first_end = spans.iter().map(|s| s.1).min().unwrap();
    assert!(last_start < first_end, "the invocations did not overlap: {spans:?}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invocations_arriving_together_at_a_cold_function_start_one_process() {
    // On several threads, the first invocations all find nothing running; the first to look
    // counts its start before it lets go of the pool, and the others wait for that start instead
    // of each starting a process (the e2e managed-instances test once saw two).
    for round in 0..10 {
        let host = Arc::new(FunctionHost::default());
        let svc = Arc::new(Service::new());
        let spec = managed("sleep", 8);
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (host, svc, spec) = (Arc::clone(&host), Arc::clone(&svc), spec.clone());
                tokio::spawn(async move {
                    invoke(&host, &svc.f(&spec), json!({"sleep_ms": 300})).await.map(|a| pid(&a))
                })
            })
            .collect();
        let mut pids = Vec::new();
        for call in calls {
            pids.push(call.await.unwrap().unwrap());
        }
        assert!(pids.iter().all(|&p| p == pids[0]), "round {round}: {pids:?}");
        host.shutdown().await;
    }
}

/// A managed `sleep` function with two slots and `timeout_secs`.
fn managed_with_timeout(timeout_secs: u32) -> keygate_types::FunctionSpec {
    keygate_types::FunctionSpec {
        timeout_secs,
        reserved_concurrency: Some(2),
        ..managed("sleep", 2)
    }
}

/// Invokes `f` sleeping `slow_ms` and, once that has its slot, a quick call; returns the slow
/// call's result and the pid that answered the quick one.
async fn slow_beside_quick(
    host: &FunctionHost,
    f: &FunctionRef<'_>,
    slow_ms: u64,
) -> (Result<Bytes, InvokeError>, u32) {
    let slow = invoke(host, f, json!({"sleep_ms": slow_ms}));
    let quick = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        invoke(host, f, json!({"sleep_ms": 10})).await
    };
    let (slow, quick) = tokio::join!(slow, quick);
    (slow, pid(&quick.unwrap()))
}

#[tokio::test]
async fn a_managed_instances_timeout_fails_one_invocation_and_keeps_the_process() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let spec = managed_with_timeout(2);
    let f = svc.f(&spec);
    // Times out at 2 s, answers at 3 s: within another timeout's length, so the process lives.
    let (slow, process) = slow_beside_quick(&host, &f, 3000).await;
    assert_eq!(slow.unwrap_err(), InvokeError::Timeout);
    // The process that timed out lives on and, once it has answered late, has both slots again:
    // two calls at once run on it (a lost slot would start a second process).
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(process_exists(process));
    let call = || invoke(&host, &f, json!({"sleep_ms": 300}));
    let (a, b) = tokio::join!(call(), call());
    assert_eq!((pid(&a.unwrap()), pid(&b.unwrap())), (process, process));
    host.shutdown().await;
}

#[tokio::test]
async fn a_runtime_that_polls_one_at_a_time_still_serves_a_managed_function() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let mut spec = managed("sleep", 3);
    spec.environment.insert("TESTFN_SEQUENTIAL".to_owned(), "1".to_owned());
    let f = svc.f(&spec);
    let call = || invoke(&host, &f, json!({"sleep_ms": 200}));
    let (a, b, c) = tokio::join!(call(), call(), call());
    let answers = [a.unwrap(), b.unwrap(), c.unwrap()];
    let pids: Vec<u32> = answers.iter().map(|a| pid(a)).collect();
    assert!(pids.iter().all(|&p| p == pids[0]), "one process: {pids:?}");
    // Its events waited their turn: no two ran at the same time.
    let mut spans: Vec<(u128, u128)> = answers.iter().map(|a| span(a)).collect();
    spans.sort_unstable();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "overlapping: {spans:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn a_managed_instances_invocation_that_never_answers_gets_its_process_stopped() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let spec = managed_with_timeout(1);
    let f = svc.f(&spec);
    let (stuck, first) = slow_beside_quick(&host, &f, 60_000).await;
    assert_eq!(stuck.unwrap_err(), InvokeError::Timeout);
    // Another timeout's length later the process is stopped (its stuck slot and permit are
    // freed with it), and the function answers from a new one.
    let started = Instant::now();
    while process_exists(first) {
        assert!(started.elapsed() < Duration::from_secs(20), "the stuck process still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = invoke(&host, &f, json!({"sleep_ms": 10})).await.unwrap();
    assert_ne!(pid(&again), first);
    host.shutdown().await;
}
