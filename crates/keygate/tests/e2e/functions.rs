//! Functions that misbehave get AWS's 502/504 while the gateway keeps serving; the event is the
//! full REST payload 1.0.

use crate::support::*;

const BAD: &str = r#"
  crash:
    handler: crash
    package: {artifact: ART}
    events: [{http: GET crash}]
  garbage:
    handler: garbage
    package: {artifact: ART}
    events: [{http: GET garbage}]
  nonstring:
    handler: nonstring
    package: {artifact: ART}
    events: [{http: GET nonstring}]
  failing:
    handler: error
    package: {artifact: ART}
    events: [{http: GET error}]
  slow:
    handler: sleep
    timeout: 1
    environment: {SLEEP_MS: "5000"}
    package: {artifact: ART}
    events: [{http: GET sleep}]
  status:
    handler: status
    package: {artifact: ART}
    events: [{http: GET status}]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_functions_get_aws_errors() {
    let env = Env::new();
    let art = workspace_bin("keygate-testfn");
    let yml =
        env.write("serverless.yml", &testfn_yml("bad", &BAD.replace("ART", art.to_str().unwrap())));
    let report = env.deploy(&yml, &[]);
    let key = Env::key_value(&report);
    let srv = env.serve();

    let internal = r#"{"message": "Internal server error"}"#;
    // The slow one runs alongside the others: the gateway keeps serving while it waits.
    let slow = tokio::spawn(get(srv.url("/dev/sleep").leak(), None));
    for path in ["/dev/crash", "/dev/garbage", "/dev/nonstring", "/dev/error", "/dev/crash"] {
        let r = get(&srv.url(path), None).await;
        assert_eq!(r.status, 502, "{path}: {r:?}");
        assert_eq!(r.body, internal, "{path}");
        assert!(r.header("x-amzn-requestid").is_some());
        let ok = get(&srv.url("/dev/echo/still-alive"), Some(&key)).await;
        assert_eq!(ok.status, 200, "after {path}");
    }
    let r = slow.await.unwrap();
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.body, r#"{"message": "Endpoint request timed out"}"#);
    // The timed-out process was replaced: the function answers (and times out) again.
    assert_eq!(get(&srv.url("/dev/sleep"), None).await.status, 504);

    // Status, headers and multi-value headers are mapped as API Gateway does.
    let r = get(&srv.url("/dev/status?code=418"), None).await;
    assert_eq!(r.status, 418, "{r:?}");
    assert_eq!(r.header("x-testfn"), Some("status"));
    assert_eq!(r.headers.get_all("set-cookie").iter().count(), 2);
    // Framing is the gateway's and the request id too: the function's own are dropped.
    assert_eq!(r.body, "status 418");
    assert_eq!(r.header("content-length"), Some("10"), "{r:?}");
    assert!(r.header("transfer-encoding").is_none(), "{r:?}");
    assert_eq!(r.headers.get_all("x-amzn-requestid").iter().count(), 1, "{r:?}");
    let id = r.header("x-amzn-requestid").unwrap();
    assert!(id.len() == 36 && id.matches('-').count() == 4, "not the gateway's UUID: {id}");
    srv.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_is_the_rest_payload() {
    let env = Env::new();
    let yml = env.write("serverless.yml", &testfn_yml("ev", ""));
    let report = env.deploy(&yml, &[]);
    let key = Env::key_value(&report);
    let key_id = report["apiKeys"][0]["id"].as_str().unwrap();
    let srv = env.serve();
    let r = send(
        client()
            .post(srv.url("/dev/echo/a/b%20c?x=1&x=2&y=z"))
            .header("x-api-key", &key)
            .header("x-multi", "1")
            .body("hello"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let ev = r.json();
    assert_eq!(ev["resource"], "/echo/{proxy+}");
    assert_eq!(ev["path"], "/echo/a/b%20c");
    assert_eq!(ev["httpMethod"], "POST");
    assert_eq!(ev["pathParameters"]["proxy"], "a/b c");
    assert_eq!(ev["queryStringParameters"]["x"], "2");
    assert_eq!(ev["multiValueQueryStringParameters"]["x"], serde_json::json!(["1", "2"]));
    assert_eq!(ev["headers"]["x-multi"], "1");
    assert_eq!(ev["body"], "hello");
    assert_eq!(ev["isBase64Encoded"], false);
    let ctx = &ev["requestContext"];
    assert_eq!(ctx["stage"], "dev");
    assert_eq!(ctx["resourcePath"], "/echo/{proxy+}");
    assert_eq!(ctx["path"], "/dev/echo/a/b%20c");
    assert_eq!(ctx["identity"]["apiKey"], key.as_str());
    assert_eq!(ctx["identity"]["apiKeyId"], key_id);
    assert_eq!(ctx["identity"]["sourceIp"], "127.0.0.1");
    assert!(ctx["requestTimeEpoch"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(ctx["requestId"].as_str(), r.header("x-amzn-requestid"));

    // A public route: no key in the event.
    let r = get(&srv.url("/dev/open"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["requestContext"]["identity"]["apiKey"].is_null());
    srv.stop();
}

const MANAGED: &str = r#"
  managed:
    handler: sleep
    package: {artifact: ART}
    environment: {SLEEP_MS: "1500"}
    capacityProvider:
      name: default
      maxConcurrency: 4
    events: [{http: GET managed}]
"#;

/// A Lambda Managed Instances function deployed from serverless.yml: one process answers four
/// requests at the same time (a one-at-a-time process would answer them in turn).
#[tokio::test(flavor = "multi_thread")]
async fn a_managed_instances_function_takes_several_requests_per_process() {
    let env = Env::new();
    let art = workspace_bin("keygate-testfn");
    let extra = MANAGED.replace("ART", art.to_str().unwrap());
    let yml = env.write("serverless.yml", &testfn_yml("mi", &extra));
    env.deploy(&yml, &[]);
    let srv = env.serve();
    let url = srv.url("/dev/managed");
    let (a, b, c, d) =
        tokio::join!(get(&url, None), get(&url, None), get(&url, None), get(&url, None));
    let replies = [a, b, c, d];
    for r in &replies {
        assert_eq!(r.status, 200, "{r:?}");
    }
    let header = |r: &Reply, name: &str| r.header(name).unwrap().to_owned();
    let pids: Vec<String> = replies.iter().map(|r| header(r, "x-pid")).collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "one process: {pids:?}");
    let ms = |r: &Reply, name: &str| header(r, name).parse::<u128>().unwrap();
    let last_start = replies.iter().map(|r| ms(r, "x-started-ms")).max().unwrap();
    let first_end = replies.iter().map(|r| ms(r, "x-ended-ms")).min().unwrap();
    assert!(last_start < first_end, "the four did not run at the same time");
    srv.stop();
}
