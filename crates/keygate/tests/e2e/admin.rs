//! The admin API: authentication, its own listener, one code path with the CLI, the audit log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_authenticates_and_audits() {
    let env = Env::new();
    let report = env.deploy(&example_yml(), &[]);
    let traffic_key = Env::key_value(&report);
    let token = env.json(&["admin", "token", "create"]);
    let (token_id, token) = (token["id"].as_str().unwrap(), token["token"].as_str().unwrap());
    let srv = env.serve();
    let admin = |path: &str| format!("{}{path}", srv.admin);

    // No credentials, a bad token, a SigV4 header with an unknown key: 403 as AWS answers.
    let r = get(&admin("/apikeys"), None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body, r#"{"message":"Missing Authentication Token"}"#);
    let r = send(client().get(admin("/apikeys")).bearer_auth("kgt_nope")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-amzn-errortype"), Some("UnrecognizedClientException"));
    // The traffic listener serves no admin path.
    for path in ["/apikeys", "/usageplans", "/restapis", "/audit"] {
        let r = send(client().get(srv.url(path)).bearer_auth(token)).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.body, r#"{"message":"Missing Authentication Token"}"#, "{path}");
    }

    // A bearer token works; the API and the CLI share one code path and one store.
    let r = send(
        client()
            .post(admin("/apikeys"))
            .bearer_auth(token)
            .json(&json!({"name": "api-made", "enabled": true})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let created = r.json();
    let value = created["value"].as_str().unwrap().to_owned();
    assert_eq!(value.len(), 40);
    assert_eq!(env.json(&["keys", "get", "api-made"])["id"], created["id"]);
    let r = send(
        client()
            .get(admin(&format!("/apikeys/{}?includeValue=true", created["id"].as_str().unwrap())))
            .bearer_auth(token),
    )
    .await;
    assert!(r.json().get("value").is_none(), "values are hashed: shown only at creation");
    // Disable through the API: the gateway refuses the traffic key within a second.
    let key_id = report["apiKeys"][0]["id"].as_str().unwrap();
    let r = send(client().patch(admin(&format!("/apikeys/{key_id}"))).bearer_auth(token).json(
        &json!({"patchOperations": [{"op": "replace", "path": "/enabled", "value": "false"}]}),
    ))
    .await;
    assert_eq!(r.json()["enabled"], false, "{r:?}");
    let url = srv.url("/dev/candidates");
    eventually(Duration::from_secs(1), || async {
        get(&url, Some(&traffic_key)).await.status == 403
    })
    .await;
    // Errors in AWS's shape.
    let r = send(client().get(admin("/apikeys/nope")).bearer_auth(token)).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-amzn-errortype"), Some("NotFoundException"));
    let r = send(
        client().post(admin("/apikeys")).bearer_auth(token).json(&json!({"name": "api-made"})),
    )
    .await;
    assert_eq!((r.status, r.header("x-amzn-errortype")), (409, Some("ConflictException")));

    // Revoked: refused at once.
    env.ok(&["admin", "token", "revoke", token_id]);
    let r = send(client().get(admin("/apikeys")).bearer_auth(token)).await;
    assert_eq!(r.status, 403);

    // The audit log has every change, with actors, and no secret.
    let audit = env.json(&["audit"]);
    let text = audit.to_string();
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["Deploy", "CreateAdminToken", "CreateApiKey", "UpdateApiKey", "RevokeAdminToken"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(text.contains(&format!("token:{token_id}")), "{text}");
    assert!(text.contains("cli:"), "{text}");
    for secret in [value.as_str(), traffic_key.as_str(), token] {
        assert!(!text.contains(secret), "a secret is in the audit log");
    }
    srv.stop();
}

/// A plan's policy while Redis does not answer (keygate's own `fallback`) is set through the
/// admin API as through the CLI: in the create body, and with `replace`/`remove /fallback`.
#[tokio::test(flavor = "multi_thread")]
async fn a_plans_redis_policy_through_the_admin_api() {
    let env = Env::new();
    let token = env.json(&["admin", "token", "create"]);
    let token = token["token"].as_str().unwrap().to_owned();
    let srv = env.serve();
    let plans = format!("{}/usageplans", srv.admin);
    let shown = || env.ok(&["plans", "get", "strict"]);
    let r = send(
        client()
            .post(&plans)
            .bearer_auth(&token)
            .json(&json!({"name": "strict", "fallback": "refuse"})),
    )
    .await;
    assert_eq!((r.status, &r.json()["fallback"]), (201, &json!("refuse")), "{r:?}");
    assert!(shown().contains("while Redis does not answer: refuse"), "{}", shown());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let patch = |op: &str, value: Option<&str>| {
        let mut op = json!({"op": op, "path": "/fallback"});
        if let Some(v) = value {
            op["value"] = json!(v);
        }
        send(
            client()
                .patch(format!("{plans}/{id}"))
                .bearer_auth(&token)
                .json(&json!({"patchOperations": [op]})),
        )
    };
    let r = patch("replace", Some("local")).await;
    assert_eq!(r.json()["fallback"], "local", "{r:?}");
    let r = patch("remove", None).await;
    assert!(r.json().get("fallback").is_none(), "{r:?}");
    assert!(!shown().contains("while Redis"), "the node's policy again: {}", shown());
    let r = patch("replace", Some("maybe")).await;
    assert_eq!((r.status, r.header("x-amzn-errortype")), (400, Some("BadRequestException")));
    assert!(r.body.contains("/fallback"), "{}", r.body);
    let r = send(
        client().post(&plans).bearer_auth(&token).json(&json!({"name": "x", "fallback": "open"})),
    )
    .await;
    assert_eq!(r.status, 400, "an unknown policy is refused: {r:?}");
    srv.stop();
}

/// Every change the CLI makes is in the audit log as `cli:<user>`, under its AWS action, with a
/// target and never a key value (the admin API's side: tests/aws/test_zz_audit.py).
#[test]
fn every_cli_change_is_in_the_audit_log() {
    let env = Env::new();
    let yml = example_yml();
    let yml = yml.to_str().unwrap();
    let deployed = env.deploy(&example_yml(), &[]);
    let value = Env::key_value(&deployed);
    let made = env.json(&["keys", "create", "--name", "audited"]);
    let made_value = made["value"].as_str().unwrap().to_owned();
    env.ok(&["keys", "disable", "audited"]);
    env.ok(&["keys", "expire", "audited", "+30d"]);
    let rotated = env.json(&["keys", "rotate", "audited", "--grace", "1h"]);
    let rotated_value = rotated["value"].as_str().unwrap().to_owned();
    env.ok(&["keys", "revoke-old", "audited"]);
    let csv =
        env.write("keys.csv", "Name,Key,Enabled\nimported,Imported0123456789abcdefghijklmn,true\n");
    env.ok(&["keys", "import", csv.to_str().unwrap()]);
    env.ok(&[
        "plans",
        "create",
        "--name",
        "extra",
        "--quota-limit",
        "100",
        "--quota-period",
        "DAY",
    ]);
    env.ok(&["plans", "update", "extra", "--description", "more"]);
    let refused =
        env.run(&["plans", "add-stage", "extra", "--api", "candidate-service", "--stage", "qa"]);
    assert!(!refused.status.success(), "there is no stage qa");
    env.ok(&["plans", "add-key", "extra", "audited"]);
    env.ok(&["usage", "set-remaining", "--plan", "extra", "--key", "audited", "5"]);
    env.ok(&["plans", "remove-key", "extra", "audited"]);
    env.ok(&["keys", "delete", "audited"]);
    env.ok(&["plans", "delete", "extra"]);
    let cred = env.json(&["admin", "credentials", "create"]);
    let access_key = cred["accessKeyId"].as_str().unwrap();
    env.ok(&["admin", "credentials", "revoke", access_key]);
    let token = env.json(&["admin", "token", "create"]);
    env.ok(&["admin", "token", "revoke", token["id"].as_str().unwrap()]);
    env.ok(&["remove", "-c", yml]);

    let log = env.json(&["audit"]);
    let entries = log.as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in [
        "Deploy",
        "CreateApiKey",
        "UpdateApiKey",
        "RotateApiKey",
        "RevokeOldApiKeyValues",
        "ImportApiKeys",
        "CreateUsagePlan",
        "UpdateUsagePlan",
        "CreateUsagePlanKey",
        "UpdateUsage",
        "DeleteUsagePlanKey",
        "DeleteApiKey",
        "DeleteUsagePlan",
        "CreateAdminCredential",
        "RevokeAdminCredential",
        "CreateAdminToken",
        "RevokeAdminToken",
        "DeleteStage",
    ] {
        assert!(actions.contains(&action), "{action} is not in the audit log: {actions:?}");
    }
    assert!(!actions.contains(&"UpdateUsagePlan:addApiStage"), "a refused change is not logged");
    for e in entries {
        assert!(e["actor"].as_str().unwrap().starts_with("cli:"), "{e}");
        assert!(!e["target"].as_str().unwrap().is_empty(), "{e}");
    }
    let text = log.to_string();
    let imported = "Imported0123456789abcdefghijklmn";
    for secret in [value.as_str(), &made_value, &rotated_value, imported] {
        assert!(!text.contains(secret), "a key value is in the audit log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_on_the_admin_listener_and_the_opt_in_traffic_path() {
    let env = Env::new();
    env.deploy(&example_yml(), &[]);
    let srv =
        env.start(&["serve", "--listen", "127.0.0.1:0", "--ready-path", "/_keygate/ready"], &[]);
    let r = get(&format!("{}/healthz", srv.admin), None).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"status":"ok"}"#), "{r:?}");
    let r = get(&format!("{}/readyz", srv.admin), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "ready");
    let r = get(&srv.url("/_keygate/ready"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "ready");
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Only GET, only that path; the routes are as before.
    let r = send(client().post(srv.url("/_keygate/ready"))).await;
    assert_eq!(r.status, 403, "{r:?}");
    get(&srv.url("/dev/candidates"), None).await.assert_forbidden();
    srv.stop();
    // Off by default: the path is routed like any other.
    let srv = env.serve();
    let r = get(&srv.url("/_keygate/ready"), None).await;
    assert_eq!(r.status, 403, "{r:?}");
    srv.stop();
    // A path that is not one is refused at start.
    let out = env.run(&["serve", "--listen", "127.0.0.1:0", "--ready-path", "ready"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a path"));
}

/// `/metrics` parsed by the official Prometheus client's strict OpenMetrics parser (Python's
/// `prometheus_client`): `(name, labels, value)` of every sample.
fn parse_openmetrics(text: &str) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    use std::io::Write as _;
    let packages = python_packages(&["prometheus-client==0.21.1"]);
    let script = "import json, sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        print(json.dumps([[s.name, s.labels, s.value] for f in \
        text_string_to_metric_families(sys.stdin.read()) for s in f.samples]))\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", &packages)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<(String, serde_json::Map<String, Value>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    parsed
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_openmetrics_and_count_the_requests_made() {
    let env = Env::new();
    let report = env.deploy(&example_yml(), &[]);
    let key = Env::key_value(&report);
    let srv = env.serve();
    let list = srv.url("/dev/candidates");
    for _ in 0..2 {
        get(&list, None).await.assert_forbidden();
    }
    for _ in 0..3 {
        assert_eq!(get(&list, Some(&key)).await.status, 200);
    }
    assert_eq!(get(&srv.url("/nostage/x"), None).await.status, 403);
    let r = get(&format!("{}/metrics", srv.admin), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    assert!(!r.body.contains(&key), "a key value in the metrics");
    let samples = parse_openmetrics(&r.body);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels.iter().all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(v))
            })
            .map(|(_, _, v)| *v)
            .sum()
    };
    let route = [
        ("api", "candidate-service"),
        ("stage", "dev"),
        ("route", "/candidates"),
        ("method", "GET"),
    ];
    let with = |status: &'static str| {
        let mut l = route.to_vec();
        l.push(("status", status));
        l
    };
    assert_eq!(value("keygate_requests_total", &with("2xx")), 3.0);
    assert_eq!(value("keygate_requests_total", &with("4xx")), 2.0);
    assert_eq!(value("keygate_requests_total", &[("api", ""), ("status", "4xx")]), 1.0);
    assert_eq!(value("keygate_key_decisions_total", &[("decision", "allowed")]), 3.0);
    assert_eq!(value("keygate_key_decisions_total", &[("decision", "forbidden")]), 2.0);
    let stage = [("api", "candidate-service"), ("stage", "dev")];
    assert_eq!(value("keygate_gateway_duration_seconds_count", &stage), 5.0);
    assert_eq!(value("keygate_integration_duration_seconds_count", &stage), 3.0);
    assert!(value("keygate_table_version", &[]) >= 1.0);
    assert!(value("keygate_store_last_refresh_timestamp_seconds", &[]) > 1.7e9);
    // The three admitted requests ran the example's list function: one process, warm.
    assert_eq!(value("keygate_function_invocations_total", &[]), 3.0);
    assert_eq!(value("keygate_function_errors_total", &[]), 0.0);
    assert_eq!(value("keygate_function_timeouts_total", &[]), 0.0);
    assert!(value("keygate_function_cold_starts_total", &[]) >= 1.0);
    assert!(value("keygate_function_processes", &[]) >= 1.0);
    assert_eq!(value("keygate_function_busy_slots", &[]), 0.0);
    assert!(samples.iter().any(|(n, l, _)| n == "keygate_function_invocations_total"
        && l.get("function").and_then(Value::as_str)
            == Some("candidate-service-dev-listCandidates")));
    // The log queues kept up: present, and nothing dropped.
    for log in ["access", "other"] {
        let dropped = [("log", log)];
        assert!(samples.iter().any(|(n, l, _)| n == "keygate_log_lines_dropped_total"
            && l.get("log").and_then(Value::as_str) == Some(log)));
        assert_eq!(value("keygate_log_lines_dropped_total", &dropped), 0.0);
    }
    srv.stop();
}
