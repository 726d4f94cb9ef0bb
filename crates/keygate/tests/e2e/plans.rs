//! Usage plans on the running gateway: throttle accuracy, quotas, method throttles, usage
//! reports, grants, restarts, and bad input.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::*;

/// A service whose private routes are mock integrations (no function in the way), with
/// `usage_plan` as the body of `provider.apiGateway.usagePlan`.
fn mock_service(env: &Env, usage_plan: &str) -> std::path::PathBuf {
    env.write(
        "serverless.yml",
        &format!(
            "service: lim
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys:
      - lim-key
    usagePlan:
{usage_plan}
functions:
  mocked:
    handler: unused
    events:
      - http: {{path: a, method: get, private: true, integration: mock}}
      - http: {{path: b, method: get, private: true, integration: mock}}
      - http: {{path: c, method: any, private: true, integration: mock}}
      - http: {{path: d, method: get, private: true, integration: mock, cors: true}}
"
        ),
    )
}

/// Sends requests on `clients` connections for `secs`; returns (admitted, throttled).
async fn hammer(url: &str, key: &str, clients: usize, secs: f64) -> (u64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (ok, limited) = (Arc::clone(&ok), Arc::clone(&limited));
        let (url, key) = (url.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let c = client();
            while Instant::now() < deadline {
                let r = c.get(&url).header("x-api-key", &key).send().await.unwrap();
                match r.status().as_u16() {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    429 => limited.fetch_add(1, Ordering::Relaxed),
                    s => panic!("unexpected status {s}"),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::Relaxed), limited.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread")]
async fn throttle_is_accurate_for_one_and_many_clients() {
    let env = Env::new();
    let yml = mock_service(&env, "      throttle: {rateLimit: 20, burstLimit: 10}");
    let key = Env::key_value(&env.deploy(&yml, &[]));
    let srv = env.serve();
    // 10 + 20 * 3 = 70, within 2% (69..=71).
    let (ok, limited) = hammer(&srv.url("/dev/a"), &key, 1, 3.0).await;
    assert!((69..=71).contains(&ok), "one client: {ok} admitted, {limited} throttled");
    assert!(limited > 0);
    // Let the bucket refill, then the same with 8 concurrent clients on the key.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (ok, limited) = hammer(&srv.url("/dev/b"), &key, 8, 3.0).await;
    assert!((69..=71).contains(&ok), "8 clients: {ok} admitted, {limited} throttled");

    // Empty the bucket again and look at a refusal.
    let mut r = get(&srv.url("/dev/a"), Some(&key)).await;
    for _ in 0..100 {
        if r.status == 429 {
            break;
        }
        r = get(&srv.url("/dev/a"), Some(&key)).await;
    }
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Too Many Requests"}"#);
    assert_eq!(r.header("x-amzn-errortype"), Some("TooManyRequestsException"));
    assert_eq!(r.header("retry-after"), Some("1"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = get(&srv.url("/dev/a"), Some(&key)).await;
    assert_eq!(r.status, 200);
    assert!(r.header("ratelimit-policy").unwrap().contains(r#""burst";q=10;w=1"#), "{r:?}");
    assert!(r.header("ratelimit").unwrap().starts_with(r#""burst";r="#), "{r:?}");
    srv.stop();
}

fn secs_to_utc_midnight() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    86_400 - now % 86_400
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_admits_exactly_the_limit_then_points_at_midnight() {
    let env = Env::new();
    let yml = mock_service(&env, "      quota: {limit: 100, period: DAY}");
    let report = env.deploy(&yml, &[]);
    let key = Env::key_value(&report);
    let srv = env.serve();
    let (ok, limited) = hammer(&srv.url("/dev/a"), &key, 8, 1.5).await;
    assert_eq!(ok, 100, "{limited} refused");
    let r = get(&srv.url("/dev/b"), Some(&key)).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Limit Exceeded"}"#);
    assert_eq!(r.header("x-amzn-errortype"), Some("LimitExceededException"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry.abs_diff(secs_to_utc_midnight()) <= 2, "Retry-After {retry}");

    // The report counts exactly the admitted requests (after the background flush).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let today = today();
    let usage = env.json(&["usage", "--plan", "lim-dev", "--from", &today, "--to", &today]);
    let key_id = report["apiKeys"][0]["id"].as_str().unwrap();
    assert_eq!(usage["values"][key_id], serde_json::json!([[100, 0]]), "{usage}");
    // Without dates: the current period (today, for a DAY quota), keys named beside their ids.
    let current = env.json(&["usage", "--plan", "lim-dev"]);
    assert_eq!(
        (&current["startDate"], &current["endDate"]),
        (&usage["startDate"], &usage["endDate"])
    );
    assert_eq!(current["keyNames"][key_id], "lim-key", "{current}");
    let text = env.ok(&["usage", "--plan", "lim-dev"]);
    assert!(text.contains(&format!("key lim-key ({key_id}):\n  {today}  used      100")), "{text}");

    // update-usage: 3 more, taken into account by the running gateway.
    env.json(&["usage", "set-remaining", "--plan", "lim-dev", "--key", "lim-key", "3"]);
    eventually(Duration::from_secs(1), || async {
        get(&srv.url("/dev/a"), Some(&key)).await.status == 200
    })
    .await;
    let mut admitted = 1;
    for _ in 0..5 {
        let r = get(&srv.url("/dev/a"), Some(&key)).await;
        if r.status == 200 {
            admitted += 1;
            // The policy shows the configured limit, not the limit plus the grant (was q=103).
            let policy = r.header("ratelimit-policy").unwrap_or_default();
            assert_eq!(policy, r#""quota";q=100;w=86400"#, "{r:?}");
        }
    }
    assert_eq!(admitted, 3);

    // Raising the limit by redeploying keeps what was counted: 100 + 3 used of 110.
    std::fs::write(
        &yml,
        std::fs::read_to_string(&yml).unwrap().replace("limit: 100", "limit: 110"),
    )
    .unwrap();
    let redeployed = env.deploy(&yml, &[]);
    assert_eq!(redeployed["usagePlans"][0]["id"], report["usagePlans"][0]["id"]);
    // The grant of +3 for today still applies on top of the new limit: 113 - 103 = 10 more.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (ok, _) = hammer(&srv.url("/dev/a"), &key, 2, 1.0).await;
    assert_eq!(ok, 10);
    srv.stop();
}

fn today() -> String {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    keygate_limits::calendar::Date::from_unix_ms(now_ms).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn method_throttles_override_the_plan_throttle_for_their_method_only() {
    let env = Env::new();
    let yml = mock_service(&env, "      throttle: {rateLimit: 1, burstLimit: 1}");
    let key = Env::key_value(&env.deploy(&yml, &[]));
    // More generous for GET /a than the plan; /b keeps the plan's 1 request.
    env.json(&[
        "plans",
        "add-stage",
        "lim-dev",
        "--api",
        "lim",
        "--stage",
        "dev",
        "--method-throttle",
        "/a/GET=100:50",
    ]);
    let srv = env.serve();
    let mut a_ok = 0;
    for _ in 0..20 {
        if get(&srv.url("/dev/a"), Some(&key)).await.status == 200 {
            a_ok += 1;
        }
    }
    assert_eq!(a_ok, 20, "the method throttle (burst 50) applies to GET /a");
    assert_eq!(get(&srv.url("/dev/b"), Some(&key)).await.status, 200);
    assert_eq!(
        get(&srv.url("/dev/b"), Some(&key)).await.status,
        429,
        "the plan throttle applies to /b"
    );

    // Stricter than the plan, changed while the gateway runs.
    env.json(&[
        "plans",
        "add-stage",
        "lim-dev",
        "--api",
        "lim",
        "--stage",
        "dev",
        "--method-throttle",
        "/a/GET=0.5:2",
    ]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(get(&srv.url("/dev/a"), Some(&key)).await.status);
        }
        v
    };
    // Tokens consumed under the old limits stay consumed (measured in time), so at most the new
    // burst of 2 passes and the third request is refused.
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert_eq!(statuses[2], 429, "{statuses:?}");
    srv.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_restart_during_load_loses_no_usage() {
    let env = Env::new();
    let yml = mock_service(&env, "      throttle: {rateLimit: 10000, burstLimit: 10000}");
    let report = env.deploy(&yml, &[]);
    let key = Env::key_value(&report);
    let key_id = report["apiKeys"][0]["id"].as_str().unwrap().to_owned();
    let mut admitted = 0u64;
    for _round in 0..2 {
        let srv = env.serve();
        let url = srv.url("/dev/a");
        let ok = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (ok, stop, url, key) =
                (Arc::clone(&ok), Arc::clone(&stop), url.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    // Connection errors while the server stops are expected: not admitted.
                    if let Ok(r) = c.get(&url).header("x-api-key", &key).send().await
                        && r.status() == 200
                    {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        // SIGTERM under load, then let the clients notice.
        tokio::task::spawn_blocking(move || srv.stop()).await.unwrap();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        admitted += ok.load(Ordering::Relaxed);
    }
    assert!(admitted > 50, "the load ran: {admitted}");
    let today = today();
    let usage = env.json(&[
        "usage", "--plan", "lim-dev", "--key", "lim-key", "--from", &today, "--to", &today,
    ]);
    assert_eq!(usage["values"][&key_id][0][0], admitted, "{usage}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_plan_input_changes_nothing() {
    let env = Env::new();
    let yml = mock_service(&env, "      quota: {limit: 5, period: DAY}");
    env.deploy(&yml, &[]);
    let before = env.json(&["plans", "list"]);
    for (args, expect) in [
        (vec!["plans", "create", "--name", "x", "--rate", "-1", "--burst", "1"], "not a rate"),
        (vec!["plans", "create", "--name", "x", "--rate", "abc", "--burst", "1"], "not a number"),
        (vec!["plans", "create", "--name", "x", "--rate", "1", "--burst", "-3"], "-3"),
        (vec!["plans", "create", "--name", "x", "--rate", "1"], "both --rate and --burst"),
        (
            vec!["plans", "create", "--name", "x", "--quota-limit", "5", "--quota-period", "YEAR"],
            "DAY, WEEK or MONTH",
        ),
        (
            vec![
                "plans",
                "create",
                "--name",
                "x",
                "--quota-limit",
                "5",
                "--quota-period",
                "WEEK",
                "--quota-offset",
                "7",
            ],
            "0 = Sunday",
        ),
        (vec!["plans", "create", "--name", "lim-dev"], "already exists"),
        (vec!["plans", "update", "nope", "--rate", "1", "--burst", "1"], "not found"),
        (vec!["plans", "update", "lim-dev", "--quota-period", "fortnight"], "DAY, WEEK or MONTH"),
        (vec!["plans", "add-key", "nope", "lim-key"], "not found"),
        (vec!["plans", "add-key", "lim-dev", "nope"], "not found"),
        (
            vec!["plans", "add-stage", "lim-dev", "--api", "lim", "--stage", "prod"],
            "no deployed stage",
        ),
        (
            vec![
                "plans",
                "add-stage",
                "lim-dev",
                "--api",
                "lim",
                "--stage",
                "dev",
                "--method-throttle",
                "/zzz/GET=1:1",
            ],
            "no method",
        ),
        (vec!["plans", "delete", "nope"], "not found"),
        (
            vec!["usage", "--plan", "nope", "--from", "2026-01-01", "--to", "2026-01-02"],
            "not found",
        ),
        (
            vec!["usage", "--plan", "lim-dev", "--from", "2026-02-30", "--to", "2026-03-01"],
            "2026-02-30",
        ),
        (vec!["usage", "set-remaining", "--plan", "lim-dev", "--key", "nope", "3"], "not found"),
        (vec!["usage", "set-remaining", "--plan", "lim-dev", "--key", "lim-key", "-3"], "-3"),
    ] {
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    assert_eq!(env.json(&["plans", "list"]), before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_moved_between_plans_gets_its_new_limits() {
    let env = Env::new();
    let yml = mock_service(&env, "      quota: {limit: 2, period: DAY}");
    let key = Env::key_value(&env.deploy(&yml, &[]));
    env.json(&[
        "plans",
        "create",
        "--name",
        "gold",
        "--quota-limit",
        "1000",
        "--quota-period",
        "DAY",
    ]);
    let srv = env.serve();
    let url = srv.url("/dev/a");
    for expected in [200, 200, 429] {
        assert_eq!(get(&url, Some(&key)).await.status, expected);
    }
    // Moving: out of the old plan, into gold, and gold onto the stage.
    env.json(&["plans", "remove-key", "lim-dev", "lim-key"]);
    env.json(&["plans", "add-key", "gold", "lim-key"]);
    env.json(&["plans", "add-stage", "gold", "--api", "lim", "--stage", "dev"]);
    eventually(Duration::from_secs(1), || async { get(&url, Some(&key)).await.status == 200 })
        .await;
    for _ in 0..5 {
        assert_eq!(get(&url, Some(&key)).await.status, 200);
    }
    let r = get(&url, Some(&key)).await;
    assert!(r.header("ratelimit-policy").unwrap().contains("q=1000"), "{r:?}");
    srv.stop();
}

/// A method throttle for `ANY` covers every method of an `ANY` route that has no throttle of
/// its own (AWS's `/resource/ANY` key), and a method's own throttle wins over it.
#[tokio::test(flavor = "multi_thread")]
async fn a_method_without_its_own_throttle_falls_back_to_the_any_throttle() {
    let env = Env::new();
    let yml = mock_service(&env, "      throttle: {rateLimit: 1, burstLimit: 1}");
    let key = Env::key_value(&env.deploy(&yml, &[]));
    let throttles = ["--method-throttle", "/c/ANY=100:50", "--method-throttle", "/c/POST=0.5:1"];
    let mut args = vec!["plans", "add-stage", "lim-dev", "--api", "lim", "--stage", "dev"];
    args.extend(throttles);
    env.json(&args);
    let srv = env.serve();
    let url = srv.url("/dev/c");
    for method in ["GET", "DELETE", "PATCH"] {
        for i in 0..5 {
            let r = send(client().request(method.parse().unwrap(), &url).header("x-api-key", &key));
            assert_eq!(r.await.status, 200, "{method} #{i}: the ANY throttle (burst 50) applies");
        }
    }
    let post = || send(client().post(&url).header("x-api-key", &key));
    assert_eq!(post().await.status, 200);
    assert_eq!(post().await.status, 429, "POST has a throttle of its own (burst 1)");
    srv.stop();
}

/// A refusal for a limit on a CORS route carries the CORS headers, so a browser's script can
/// read the 429 (and its Retry-After) instead of seeing a CORS error.
#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_cors_route_answers_429_with_its_cors_headers() {
    let env = Env::new();
    let yml = mock_service(&env, "      throttle: {rateLimit: 1, burstLimit: 1}");
    let key = Env::key_value(&env.deploy(&yml, &[]));
    let srv = env.serve();
    let url = srv.url("/dev/d");
    let get = || {
        send(client().get(&url).header("x-api-key", &key).header("origin", "https://app.example"))
    };
    let first = get().await;
    assert_eq!(first.status, 200);
    let limited = get().await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.json(), serde_json::json!({"message": "Too Many Requests"}));
    let allowed = limited.header("access-control-allow-origin");
    assert!(allowed.is_some_and(|o| o == "*" || o == "https://app.example"), "{limited:?}");
    srv.stop();
}

/// Wildcard method throttles (`/*/*` for every method of every resource, `/a/*` for every method
/// of one) are enforced, and a method's own throttle wins over them: the CLI and the admin API
/// accept them, so a request must never slip past one.
#[tokio::test(flavor = "multi_thread")]
async fn wildcard_method_throttles_are_enforced() {
    let env = Env::new();
    let yml = mock_service(&env, "      throttle: {rateLimit: 1000, burstLimit: 1000}");
    let key = Env::key_value(&env.deploy(&yml, &[]));
    let mut args = vec!["plans", "add-stage", "lim-dev", "--api", "lim", "--stage", "dev"];
    args.extend(["--method-throttle", "/*/*=0.5:1", "--method-throttle", "/a/*=0.5:2"]);
    args.extend(["--method-throttle", "/b/GET=100:50"]);
    env.json(&args);
    let srv = env.serve();
    let statuses = |path: &'static str, n: usize| {
        let (url, key) = (srv.url(path), key.clone());
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(get(&url, Some(&key)).await.status);
            }
            out
        }
    };
    assert_eq!(statuses("/dev/d", 2).await, [200, 429], "/*/* (burst 1) applies to /d");
    assert_eq!(statuses("/dev/a", 3).await, [200, 200, 429], "/a/* (burst 2) wins for /a");
    assert_eq!(statuses("/dev/b", 10).await, [200; 10], "/b/GET (burst 50) wins for GET /b");
    srv.stop();
}

/// `custom.keygate.redisUnavailable` sets a plan's policy while Redis does not answer at
/// deploy; a deploy whose yml does not say it keeps what the plan has (set by the CLI, say).
#[test]
fn the_yml_says_a_plans_policy_while_redis_does_not_answer() {
    let env = Env::new();
    let plain =
        crate::support::mock_service("guarded", "{quota: {limit: 10, period: DAY}}", &["a"]);
    let policy = |p: &str| format!("{plain}custom:\n  keygate:\n    redisUnavailable: {p}\n");
    let shown = || env.ok(&["plans", "get", "guarded-dev"]);
    let yml = env.write("serverless.yml", &policy("refuse"));
    env.deploy(&yml, &[]);
    assert!(shown().contains("while Redis does not answer: refuse"), "{}", shown());

    env.ok(&["plans", "update", "guarded-dev", "--redis-unavailable", "local"]);
    env.write("serverless.yml", &plain);
    env.deploy(&yml, &[]);
    assert!(shown().contains("while Redis does not answer: local"), "{}", shown());

    env.write("serverless.yml", &policy("refuse"));
    env.deploy(&yml, &[]);
    assert!(shown().contains("while Redis does not answer: refuse"), "{}", shown());
}

/// `plans what-if`: today's recorded usage replayed against a stricter quota names the key it
/// would have cut off and by how much, and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn what_if_names_the_keys_a_stricter_quota_would_cut_off() {
    let env = Env::new();
    let yml = mock_service(&env, "      quota: {limit: 100, period: DAY}");
    let key = Env::key_value(&env.deploy(&yml, &[]));
    let srv = env.serve();
    for _ in 0..7 {
        assert_eq!(get(&srv.url("/dev/a"), Some(&key)).await.status, 200);
    }
    srv.stop(); // writes the last usage
    let args = ["plans", "what-if", "lim-dev", "--quota-limit", "5", "--quota-period", "DAY"];
    let w = env.json(&[&args[..], &["--days", "1"]].concat());
    assert_eq!(w["keys"][0]["keyName"], "lim-key", "{w}");
    assert_eq!((&w["keys"][0]["requests"], &w["keys"][0]["cutOff"]), (&7.into(), &2.into()), "{w}");
    let text = env.ok(&args);
    assert!(text.contains("1 of 1 key(s) with usage would have been cut off (429 Limit Exceeded), 2 request(s) in all"), "{text}");
    let plan = env.json(&["plans", "get", "lim-dev"]);
    assert_eq!(plan["quota"]["limit"], 100, "unchanged: {plan}");
    let out = env.run(&[&args[..], &["--days", "400"]].concat());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--days must be 1 to 366"));
}
