//! Key values never reach the logs, even at trace level.

use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn no_key_value_in_trace_logs() {
    let env = Env::new();
    let report = env.deploy(&example_yml(), &[]);
    let key = Env::key_value(&report);
    let custom = env.json(&[
        "keys",
        "create",
        "--name",
        "custom",
        "--value",
        "CustomSecretValue0123456789",
        "--usage-plan",
        "candidate-service-dev",
    ]);
    assert_eq!(custom["value"], "CustomSecretValue0123456789");
    let srv = env.start(&["serve", "--listen", "127.0.0.1:0"], &[("RUST_LOG", "trace")]);
    let url = srv.url("/dev/candidates");
    for k in [key.as_str(), "CustomSecretValue0123456789"] {
        assert_eq!(get(&url, Some(k)).await.status, 200);
        let r = send(
            client()
                .post(&url)
                .header("x-api-key", k)
                .body(r#"{"fullname":"A","email":"a@example.com","experience":1}"#),
        )
        .await;
        assert!(r.status < 300, "{r:?}");
    }
    // Wrong keys too: a near miss must not be logged either.
    get(&url, Some(&key[..39])).await.assert_forbidden();
    // After a clean stop: log lines are written by a thread of their own, flushed at exit.
    let log = srv.log.clone();
    srv.stop();
    let logs = std::fs::read_to_string(log).unwrap();
    assert!(logs.contains("keygate::access"), "access log missing:\n{logs}");
    assert!(logs.contains(report["apiKeys"][0]["id"].as_str().unwrap()), "key id is logged");
    assert!(logs.len() > 1000, "trace logging was not on");
    for secret in [key.as_str(), &key[..39], "CustomSecretValue0123456789"] {
        assert!(!logs.contains(secret), "a key value is in the logs");
    }
}

/// `--access-log FILE --access-log-format json`: one JSON object per request in the file (with
/// API Gateway's names, the key's id, never its value), nothing of it on stderr; after
/// logrotate's rename, SIGHUP makes keygate write to a new file at the path and keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_goes_to_a_file_in_json_and_is_reopened_on_sighup() {
    let env = Env::new();
    let report = env.deploy(&example_yml(), &[]);
    let key = Env::key_value(&report);
    let key_id = report["apiKeys"][0]["id"].as_str().unwrap().to_owned();
    let file = env.path().join("access.log");
    let file_arg = file.to_str().unwrap();
    let args = ["serve", "--listen", "127.0.0.1:0", "--access-log", file_arg];
    let srv = env.start(&[&args[..], &["--access-log-format", "json"]].concat(), &[]);
    let url = srv.url("/dev/candidates");
    let refused = get(&url, None).await;
    refused.assert_forbidden();
    let served = get(&url, Some(&key)).await;
    assert_eq!(served.status, 200);
    let lines = |path: &std::path::Path, n: usize| -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= n {
                assert!(!text.contains(&key), "a key value is in the access log");
                return text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            }
            assert!(std::time::Instant::now() < deadline, "{n} lines never came:\n{text}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let first = lines(&file, 2);
    assert_eq!(first.len(), 2, "{first:?}");
    let (no_key, with_key) = (&first[0], &first[1]);
    assert_eq!(no_key["status"], 403);
    assert_eq!(no_key["reason"], "missing_key");
    assert_eq!(no_key["apiKeyId"], Value::Null);
    assert_eq!(no_key["requestId"].as_str(), refused.header("x-amzn-requestid"));
    assert_eq!(with_key["status"], 200);
    assert_eq!(with_key["reason"], Value::Null);
    assert_eq!(with_key["apiKeyId"], key_id.as_str());
    assert_eq!(with_key["httpMethod"], "GET");
    assert_eq!(with_key["path"], "/dev/candidates");
    assert_eq!(with_key["resourcePath"], "/candidates");
    assert_eq!(with_key["ip"], "127.0.0.1");
    assert_eq!(with_key["responseLength"], served.body.len());
    assert!(
        with_key["integrationLatencyUs"].as_u64().unwrap()
            <= with_key["responseLatencyUs"].as_u64().unwrap()
    );
    assert_eq!(with_key["requestId"].as_str(), served.header("x-amzn-requestid"));

    // logrotate: rename, then SIGHUP.
    let rotated = env.path().join("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    let hup =
        std::process::Command::new("kill").args(["-HUP", &srv.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    // The signal is handled by a task: keep asking until the line reaches the new file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !file.exists() {
        get(&url, None).await.assert_forbidden();
        assert!(std::time::Instant::now() < deadline, "the access log was never reopened");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(get(&url, Some(&key)).await.status, 200, "keygate serves after SIGHUP");
    let after = lines(&file, 1);
    assert!(after.iter().all(|l| l["path"] == "/dev/candidates"));
    let log = srv.log.clone();
    srv.stop();
    let stderr = std::fs::read_to_string(log).unwrap();
    assert!(!stderr.contains("keygate::access"), "access lines on stderr too:\n{stderr}");
    assert!(stderr.contains("reopening the access log"), "{stderr}");
    assert!(lines(&file, 1).last().unwrap()["status"] == 200, "the last line was written at stop");

    // Off on request; a file that cannot be opened stops keygate before it serves.
    let srv = env.start(&["serve", "--listen", "127.0.0.1:0", "--no-access-log"], &[]);
    get(&srv.url("/dev/candidates"), None).await.assert_forbidden();
    let log = srv.log.clone();
    srv.stop();
    assert!(!std::fs::read_to_string(log).unwrap().contains("keygate::access"));
    let out =
        env.run(&["serve", "--listen", "127.0.0.1:0", "--access-log", "/nonexistent/dir/a.log"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the access log /nonexistent/dir/a.log"), "{err}");
}
