//! Key introspection (`custom.keygate.keyIntrospection`): off by default; when on, a key reads
//! its own plan, limits and quota standing without spending any of it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::support::*;

/// A service with one private mock route under a plan of 5 requests a day, with `custom` as the
/// yml's `custom:` section (empty: none).
fn service(env: &Env, custom: &str) -> std::path::PathBuf {
    env.write(
        "serverless.yml",
        &format!(
            "service: intro
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys:
      - intro-key
    usagePlan:
      throttle: {{rateLimit: 50, burstLimit: 20}}
      quota: {{limit: 5, period: DAY}}
functions:
  mocked:
    handler: unused
    events:
      - http: {{path: a, method: get, private: true, integration: mock}}
      - http: {{path: '{{proxy+}}', method: get, integration: mock}}
{custom}"
        ),
    )
}

/// The next UTC midnight, as RFC 3339.
fn next_midnight() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let days = i64::try_from(now / 86_400 + 1).unwrap();
    let (y, m, d) = keygate_types::date::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T00:00:00Z")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_reads_its_standing_without_spending_it() {
    let env = Env::new();
    // Off by default: the path is nobody's (the stage's `{proxy+}` route is public, so the
    // request is that route's, not a key's answer).
    let yml = service(&env, "");
    let key = Env::key_value(&env.deploy(&yml, &[]));
    let srv = env.serve();
    let off = get(&srv.url("/dev/.keygate/key"), Some(&key)).await;
    assert_eq!(off.status, 200, "the public {{proxy+}} route answers: {off:?}");
    assert!(!off.body.contains("usagePlan"), "{off:?}");
    // Without a route there either: Missing Authentication Token, as any unknown path.
    let none = get(&srv.url("/nostage/.keygate/key"), Some(&key)).await;
    assert_eq!(none.status, 403);
    assert_eq!(none.json(), json!({"message": "Missing Authentication Token"}));
    srv.stop();

    // On: the default path takes precedence over the `{proxy+}` route.
    let yml = service(&env, "custom:\n  keygate:\n    keyIntrospection: true\n");
    env.deploy(&yml, &[]);
    let srv = env.serve();
    let intro = srv.url("/dev/.keygate/key");
    let url = srv.url("/dev/a");
    let first = get(&url, Some(&key)).await;
    assert_eq!(first.status, 200);
    let second = get(&url, Some(&key)).await;
    assert_eq!(second.status, 200);
    // The headers of the second request: 3 left of 5.
    let ratelimit = second.header("ratelimit").unwrap_or_default().to_owned();
    assert!(ratelimit.contains("\"quota\";r=3"), "{ratelimit}");

    let id = env.json(&["keys", "get", "intro-key"])["id"].as_str().unwrap().to_owned();
    let standing = get(&intro, Some(&key)).await;
    assert_eq!(standing.status, 200, "{standing:?}");
    assert_eq!(standing.header("content-type"), Some("application/json"));
    assert_eq!(standing.header("cache-control"), Some("no-store"));
    let body = standing.json();
    assert_eq!(body["id"], json!(id));
    assert_eq!(body["name"], json!("intro-key"));
    assert_eq!(body["stage"], json!("dev"));
    assert_eq!(body["usagePlan"]["name"], json!("intro-dev"));
    assert_eq!(body["usagePlan"]["throttle"], json!({"rateLimit": 50.0, "burstLimit": 20}));
    let quota = &body["usagePlan"]["quota"];
    assert_eq!(quota["limit"], json!(5));
    assert_eq!(quota["period"], json!("DAY"));
    assert_eq!(quota["used"], json!(2), "{body}");
    assert_eq!(quota["remaining"], json!(3), "{body}");
    assert_eq!(quota["resetsAt"], json!(next_midnight()));
    assert!(quota["resetsInSeconds"].as_u64().is_some_and(|s| s <= 86_400), "{body}");
    assert_eq!(body["expiresAt"], json!(null));
    assert_eq!(body["valueExpiresAt"], json!(null));
    assert_eq!(body["rotationDeadline"], json!(null));
    assert!(!standing.body.contains(&key), "never the value");

    // Asking again spends nothing.
    for _ in 0..3 {
        let again = get(&intro, Some(&key)).await.json();
        assert_eq!(again["usagePlan"]["quota"]["remaining"], json!(3), "{again}");
    }
    // Three more requests use the quota up; the sixth is refused, and the standing says so.
    for _ in 0..3 {
        assert_eq!(get(&url, Some(&key)).await.status, 200);
    }
    assert_eq!(get(&url, Some(&key)).await.status, 429);
    let spent = get(&intro, Some(&key)).await.json();
    assert_eq!(spent["usagePlan"]["quota"]["used"], json!(5), "{spent}");
    assert_eq!(spent["usagePlan"]["quota"]["remaining"], json!(0), "{spent}");

    // Only keys: none, a wrong one, two of them get the routes' own 403.
    get(&intro, None).await.assert_forbidden();
    get(&intro, Some("not-a-key-of-this-gateway-0123456789")).await.assert_forbidden();
    let two = send(client().get(&intro).header("x-api-key", &key).header("x-api-key", &key)).await;
    two.assert_forbidden();
    // Only GET: other methods go to the routes (none here takes POST).
    let post = send(client().post(&intro).header("x-api-key", &key)).await;
    assert_eq!(post.status, 403);
    assert_eq!(post.json(), json!({"message": "Missing Authentication Token"}));

    // A rotated-out value in its grace period says when it stops working; the usage is the
    // key's, whichever value asks.
    let rotated = env.json(&["keys", "rotate", "intro-key", "--grace", "1h"]);
    let new = rotated["value"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(2), || async { get(&intro, Some(&new)).await.status == 200 })
        .await;
    let old = get(&intro, Some(&key)).await.json();
    let deadline = old["rotationDeadline"].as_str().unwrap_or_default().to_owned();
    assert!(deadline.ends_with('Z') && deadline.len() == 20, "{old}");
    assert_eq!(old["valueExpiresAt"], json!(deadline));
    assert_eq!(old["usagePlan"]["quota"]["used"], json!(5), "{old}");
    let current = get(&intro, Some(&new)).await.json();
    assert_eq!(current["rotationDeadline"], json!(null), "{current}");
    assert_eq!(current["usagePlan"]["quota"]["remaining"], json!(0), "{current}");

    // A disabled key is refused here as on its routes, and the access log names the reason.
    env.ok(&["keys", "disable", "intro-key"]);
    eventually(Duration::from_secs(2), || async { get(&intro, Some(&new)).await.status == 403 })
        .await;
    // Log lines are written by a thread of their own, flushed at exit.
    let log = srv.log.clone();
    srv.stop();
    let logs = std::fs::read_to_string(log).unwrap();
    assert!(logs.contains("key_introspection"), "{logs}");
    assert!(!logs.contains(&key) && !logs.contains(&new), "no key value in the logs");
}

#[test]
fn a_path_that_is_a_route_is_refused_at_deploy() {
    let env = Env::new();
    let yml = service(&env, "custom:\n  keygate:\n    keyIntrospection: /a\n");
    let out = env.run(&["deploy", "-c", yml.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serverless.yml:19:23"), "{err}");
    assert!(err.contains("is also a route of the service (GET /a)"), "{err}");
}
