//! Report-only enforcement (`private: report`): requests keys or plans would refuse are let
//! through and recorded; `keygate enforcement report` lists who would break; one deploy with
//! `private: true` locks the route.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// A service with one mock route `a` whose `private:` is `private` (and `custom` appended),
/// under a plan of 2 requests a day.
fn service(env: &Env, private: &str, custom: &str) -> std::path::PathBuf {
    env.write(
        "serverless.yml",
        &format!(
            "service: opening
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys:
      - opening-key
    usagePlan:
      quota: {{limit: 2, period: DAY}}
functions:
  mocked:
    handler: unused
    events:
      - http: {{path: a, method: get, private: {private}, integration: mock}}
{custom}"
        ),
    )
}

/// `keygate enforcement report --json` once every would-be refusal is written (gateways write
/// them twice a second), with `expected` requests in all.
async fn report(env: &Env, expected: u64) -> Value {
    let mut last = Value::Null;
    eventually(Duration::from_secs(3), || {
        last = env.json(&["enforcement", "report"]);
        let total: u64 = last["clients"]
            .as_array()
            .map_or(0, |c| c.iter().filter_map(|c| c["count"].as_u64()).sum());
        std::future::ready(total == expected)
    })
    .await;
    last
}

async fn get_as(url: &str, key: Option<&str>, agent: &str) -> Reply {
    let mut req = client().get(url).header("user-agent", agent);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    send(req).await
}

#[tokio::test(flavor = "multi_thread")]
async fn report_mode_lets_requests_through_and_says_who_would_break() {
    let env = Env::new();
    let report_only = service(&env, "report", "");
    let deployed = env.deploy(&report_only, &[]);
    let key = Env::key_value(&deployed);
    let key_id = deployed["apiKeys"][0]["id"].as_str().unwrap().to_owned();
    let info = env.ok(&["info", "-c", report_only.to_str().unwrap()]);
    assert!(info.contains("(api key: report only, nothing refused)"), "{info}");
    let srv = env.serve();
    let url = srv.url("/dev/a");

    // Nothing is refused: no key, a wrong key, and a key over its quota all get through.
    assert_eq!(get_as(&url, None, "legacy-app/1.0").await.status, 200);
    assert_eq!(get_as(&url, None, "legacy-app/1.0").await.status, 200);
    assert_eq!(get_as(&url, Some("not-a-key-at-all-0123456789"), "typo-app/2.0").await.status, 200);
    for _ in 0..3 {
        assert_eq!(get_as(&url, Some(&key), "keyed-app/3.0").await.status, 200);
    }

    // Who would break, by client: the one without a key, the one with a wrong key, and the
    // keyed one's third request (over the quota of 2); the two counted requests are not there.
    let r = report(&env, 4).await;
    let clients = r["clients"].as_array().unwrap();
    let by_agent = |agent: &str| {
        clients.iter().find(|c| c["userAgent"] == agent).unwrap_or_else(|| panic!("{agent}: {r}"))
    };
    let legacy = by_agent("legacy-app/1.0");
    assert_eq!(legacy["client"], json!("127.0.0.1"));
    assert_eq!(legacy["count"], json!(2));
    assert_eq!(legacy["reasons"], json!({"missing_key": 2}));
    assert_eq!(
        legacy["routes"],
        json!([{"api": "opening", "stage": "dev", "method": "GET", "path": "/a", "count": 2}])
    );
    assert_eq!(legacy["keys"], json!([]));
    assert_eq!(by_agent("typo-app/2.0")["reasons"], json!({"unknown_key": 1}));
    let keyed = by_agent("keyed-app/3.0");
    assert_eq!(keyed["reasons"], json!({"quota_exceeded": 1}));
    assert_eq!(keyed["keys"], json!([key_id]));
    assert_eq!(clients[0]["count"], json!(2), "most requests first");

    // The text report says the same for people, and a stage filter keeps it to the stage.
    let text = env.ok(&["enforcement", "report", "--stage", "dev"]);
    assert!(
        text.contains("4 request(s) from 3 client(s) would have been refused on stage dev"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1  legacy-app/1.0"), "{text}");
    assert!(text.contains("GET /dev/a  (opening, 2 request(s))"), "{text}");
    let other = env.ok(&["enforcement", "report", "--stage", "prod"]);
    assert!(other.starts_with("nothing would have been refused on stage prod"), "{other}");

    // Counted apart in the metrics, by reason.
    let metrics = get(&format!("{}/metrics", srv.admin), None).await.body;
    for line in [
        "keygate_would_refuse_total{reason=\"missing_key\"} 2",
        "keygate_would_refuse_total{reason=\"unknown_key\"} 1",
        "keygate_would_refuse_total{reason=\"quota_exceeded\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(!metrics.contains(&key), "a key value in the metrics");

    // One deploy with `private: true`: the same requests are refused, within a second.
    env.deploy(&service(&env, "true", ""), &[]);
    eventually(Duration::from_secs(2), || async {
        get_as(&url, None, "legacy-app/1.0").await.status == 403
    })
    .await;
    get_as(&url, None, "legacy-app/1.0").await.assert_forbidden();
    get_as(&url, Some("not-a-key-at-all-0123456789"), "typo-app/2.0").await.assert_forbidden();
    assert_eq!(get_as(&url, Some(&key), "keyed-app/3.0").await.status, 429);
    srv.stop();
}

/// `custom.keygate.enforcement: report` puts every `private: true` route of the service in
/// report mode (a stage-wide switch, e.g. from a variable per stage); `enforce` is the default.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_wide_switch_reports_instead_of_refusing() {
    let env = Env::new();
    let custom = "custom:\n  keygate:\n    enforcement: report\n";
    let yml = service(&env, "true", custom);
    let deployed = env.deploy(&yml, &[]);
    assert_eq!(deployed["endpoints"][0]["report"], json!(true), "{deployed}");
    let srv = env.serve();
    let url = srv.url("/dev/a");
    assert_eq!(get_as(&url, None, "old-client").await.status, 200);
    let r = report(&env, 1).await;
    assert_eq!(r["clients"][0]["userAgent"], json!("old-client"), "{r}");

    env.deploy(&service(&env, "true", "custom:\n  keygate:\n    enforcement: enforce\n"), &[]);
    eventually(Duration::from_secs(2), || async {
        get_as(&url, None, "old-client").await.status == 403
    })
    .await;
    srv.stop();

    // A value that is neither: refused at deploy with its line.
    let bad = service(&env, "true", "custom:\n  keygate:\n    enforcement: maybe\n");
    let out = env.run(&["deploy", "-c", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("custom.keygate.enforcement: expected enforce or report, found \"maybe\""),
        "{err}"
    );
}

/// `keygate enforcement set`: an operator switches a deployed stage to report without a deploy,
/// the switch outlives a deploy, and `deployed` hands the key checks back to the file.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_switches_a_stage_to_report_and_back() {
    let env = Env::new();
    let yml = service(&env, "true", "");
    let yml_arg = yml.to_str().unwrap().to_owned();
    env.deploy(&yml, &[]);
    let srv = env.serve();
    let url = srv.url("/dev/a");
    get_as(&url, None, "old-client").await.assert_forbidden();

    let said = env.ok(&["enforcement", "set", "report", "--stage", "dev"]);
    assert!(
        said.contains("opening stage dev: private routes now let every request through"),
        "{said}"
    );
    eventually(Duration::from_secs(2), || async {
        get_as(&url, None, "old-client").await.status == 200
    })
    .await;
    let info = env.ok(&["info", "-c", &yml_arg]);
    assert!(info.contains("(api key: report only, nothing refused)"), "{info}");
    // A deploy keeps the switch, and says so.
    let deployed = env.deploy(&yml, &[]);
    let notes = deployed["notes"].to_string();
    assert!(notes.contains("switched to `report` by `keygate enforcement set`"), "{notes}");
    assert_eq!(deployed["endpoints"][0]["report"], json!(true), "{deployed}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get_as(&url, None, "old-client").await.status, 200);
    let r = report(&env, 2).await;
    assert_eq!(r["clients"][0]["userAgent"], json!("old-client"), "{r}");

    env.ok(&["enforcement", "set", "deployed", "--stage", "dev"]);
    eventually(Duration::from_secs(2), || async {
        get_as(&url, None, "old-client").await.status == 403
    })
    .await;
    let audit = env.ok(&["audit"]);
    assert_eq!(audit.matches("SetStageEnforcement").count(), 2, "{audit}");
    // Nothing deployed there: said, nothing changed.
    let out = env.run(&["enforcement", "set", "report", "--stage", "prod"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service is deployed to stage prod"));
    let out = env.run(&["enforcement", "set", "report", "--stage", "dev", "--service", "other"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("service other has no stage dev deployed")
    );
    srv.stop();
}
