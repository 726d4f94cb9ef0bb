//! Key values never reach the logs, even at trace level.

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
