//! The seed series' candidate service as its readers have it (`examples/candidate-service-node`):
//! Node.js callback handlers on aws-sdk v2's `DocumentClient` (no endpoint in the code, the table
//! name from `process.env.CANDIDATE_TABLE`), the table declared under `resources` with
//! `DeletionPolicy: Retain` and a stream. keygate creates the table on DynamoDB Local, points the
//! SDK at it, and adopts it on the next deploy with its data.

use std::path::Path;

use crate::support::*;

/// `examples/candidate-service-node`, copied into `env` with its dependencies linked in.
fn node_example(env: &Env) -> std::path::PathBuf {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/candidate-service-node");
    for file in ["api/candidates.js", "api/notify.js", "api/recruiters.js"] {
        env.write(file, &std::fs::read_to_string(example.join(file)).unwrap());
    }
    env.write("package.json", &std::fs::read_to_string(example.join("package.json")).unwrap());
    std::os::unix::fs::symlink(
        node_modules(&["aws-sdk@2.1693.0", "uuid@9.0.1"]),
        env.path().join("node_modules"),
    )
    .unwrap();
    env.write("serverless.yml", &std::fs::read_to_string(example.join("serverless.yml")).unwrap())
}

/// The stream function's log (`keygate logs -f candidateNotification`) once it mentions `id`,
/// or as it is after `within`.
fn notified(env: &Env, id: &str, within: std::time::Duration) -> String {
    log_of(env, "candidateNotification", id, within)
}

/// `function`'s log (`keygate logs -f FUNCTION`) once it mentions `text`, or as it is after
/// `within`.
fn log_of(env: &Env, function: &str, text: &str, within: std::time::Duration) -> String {
    let since = std::time::Instant::now();
    loop {
        let out = env.run(&["logs", "-f", function]);
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        if log.contains(text) || since.elapsed() >= within {
            return log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_dynamodb_service_runs_unchanged_and_keeps_its_data() {
    let env = Env::new();
    let yml = node_example(&env);

    let report = env.deploy(&yml, &[]);
    assert_eq!(report["tables"][0]["tableName"], "candidate-service-dev", "{report}");
    assert_eq!(report["tables"][0]["logicalId"], "CandidatesDynamoDbTable");
    assert_eq!(report["tables"][0]["status"], "created");
    assert_eq!(report["tables"][0]["retain"], true);
    let key = Env::key_value(&report);
    let info = env.ok(&["info"]);
    assert!(
        info.contains("tables:\n  candidate-service-dev (CandidatesDynamoDbTable): id (S, HASH), stream NEW_AND_OLD_IMAGES, DeletionPolicy: Retain"),
        "{info}"
    );

    let srv = env.serve();
    let c = client();
    let url = srv.url("/dev/candidates");
    get(&url, None).await.assert_forbidden();
    let empty = get(&url, Some(&key)).await;
    assert_eq!(empty.status, 200, "{empty:?}\n{}", srv.logs());
    assert_eq!(empty.json(), serde_json::json!({"candidates": []}));

    let candidate = r#"{"fullname": "Ada Lovelace", "email": "ada@example.com", "experience": 12}"#;
    let submitted = send(c.post(&url).header("x-api-key", &key).body(candidate)).await;
    assert_eq!(submitted.status, 200, "{submitted:?}\n{}", srv.logs());
    let id = submitted.json()["candidateId"].as_str().unwrap().to_owned();
    // The stream function gets the INSERT (Lambda's event source mapping).
    let inserted = std::time::Instant::now();
    let notified = notified(&env, &id, std::time::Duration::from_secs(10));
    assert!(
        notified.contains(&format!("New candidate Ada Lovelace <ada@example.com> ({id})")),
        "the stream function did not report the insert: {notified}\n{}",
        srv.logs()
    );
    eprintln!("stream record handled {} ms after the insert", inserted.elapsed().as_millis());
    let listed = get(&url, Some(&key)).await.json();
    assert_eq!(listed["candidates"][0]["id"], id.as_str(), "{listed}");
    let one = get(&srv.url(&format!("/dev/candidates/{id}")), Some(&key)).await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.json()["email"], "ada@example.com");
    assert_eq!(one.json()["experience"], 12);
    let invalid = send(c.post(&url).header("x-api-key", &key).body("{}")).await;
    assert_eq!(invalid.status, 502);
    assert_eq!(invalid.body, r#"{"message": "Internal server error"}"#);
    srv.stop();

    // Redeployed (the seed's "candidate-dev already exists" must not happen) and restarted: the
    // table is adopted with its data.
    let again = env.deploy(&yml, &[]);
    assert_eq!(again["tables"][0]["status"], "adopted", "{again}");
    let srv = env.serve();
    let one = get(&srv.url(&format!("/dev/candidates/{id}")), Some(&key)).await;
    assert_eq!(one.status, 200, "{one:?}\n{}", srv.logs());
    assert_eq!(one.json()["fullname"], "Ada Lovelace");
    // The stream resumes after the record it handled (its checkpoint): no second delivery.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let notified = env.ok(&["logs", "-f", "candidateNotification"]);
    assert_eq!(notified.matches(&format!("({id})")).count(), 1, "{notified}");

    // Removing is for recruiters: the key and a recruiter's token (the example's TOKEN
    // authorizer, `RECRUITER_TOKENS` defaulting to ada:change-me).
    let one = srv.url(&format!("/dev/candidates/{id}"));
    let unauthorized = r#"{"message":"Unauthorized"}"#;
    let no_token = send(c.delete(&one).header("x-api-key", &key)).await;
    assert_eq!((no_token.status, no_token.body.as_str()), (401, unauthorized));
    let wrong = send(c.delete(&one).header("x-api-key", &key).header("authorization", "Bearer x"));
    let wrong = wrong.await;
    assert_eq!((wrong.status, wrong.body.as_str()), (401, unauthorized), "{wrong:?}");
    let recruiter = "Bearer change-me";
    send(c.delete(&one).header("authorization", recruiter)).await.assert_forbidden();
    let removed = send(c.delete(&one).header("x-api-key", &key).header("authorization", recruiter));
    let removed = removed.await;
    assert_eq!(removed.status, 204, "{removed:?}\n{}", srv.logs());
    let said = format!("Candidate {id} removed by ada");
    let logs = log_of(&env, "candidateRemoval", &said, std::time::Duration::from_secs(10));
    assert!(logs.contains(&said), "{logs}");
    let listed = get(&srv.url("/dev/candidates"), Some(&key)).await.json();
    assert_eq!(listed, serde_json::json!({"candidates": []}));
    srv.stop();
}

/// The seed series' next post adds the stream function to a service already deployed and
/// served: a `keygate deploy` beside the serving keygate starts the stream's poller there, with
/// no restart (it used to read the stream events only when it started).
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_event_deployed_beside_a_serving_keygate_runs_without_a_restart() {
    let env = Env::new();
    let yml = node_example(&env);
    let full = std::fs::read_to_string(&yml).unwrap();
    let start = full.find("  candidateNotification:").unwrap();
    let end = full.find("resources:").unwrap();
    env.write("serverless.yml", &format!("{}{}", &full[..start], &full[end..]));
    let key = Env::key_value(&env.deploy(&yml, &[]));

    let srv = env.serve();
    let c = client();
    let url = srv.url("/dev/candidates");
    let submit = |name: &str| {
        let body =
            format!(r#"{{"fullname": "{name}", "email": "x@example.com", "experience": 1}}"#);
        send(c.post(&url).header("x-api-key", &key).body(body))
    };
    let before = submit("Before Stream").await;
    assert_eq!(before.status, 200, "{before:?}\n{}", srv.logs());
    let before = before.json()["candidateId"].as_str().unwrap().to_owned();

    env.write("serverless.yml", &full);
    env.deploy(&yml, &[]);
    let deployed = std::time::Instant::now();
    // (The follower looks every second; a busy CI machine gets a generous bound.) The mapping
    // reads from LATEST: what is written before it has its position is not read, as on AWS.
    while !srv.logs().contains("stream mapping enabled: reading the table's stream") {
        assert!(
            deployed.elapsed() < std::time::Duration::from_secs(30),
            "the serving keygate did not start the new stream event:\n{}",
            srv.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let after = submit("After Stream").await;
    assert_eq!(after.status, 200, "{after:?}\n{}", srv.logs());
    let after = after.json()["candidateId"].as_str().unwrap().to_owned();
    let notified = notified(&env, &after, std::time::Duration::from_secs(30));
    assert!(
        notified.contains(&format!("New candidate After Stream <x@example.com> ({after})")),
        "the new stream function did not report the insert: {notified}\n{}",
        srv.logs()
    );
    // `startingPosition: LATEST`: what was written before the poller started is not read.
    assert!(!notified.contains(&before), "{notified}");
    srv.stop();
}

/// A Python handler reaches the table through boto3 with no endpoint in its code: boto3 honours
/// the `AWS_ENDPOINT_URL_DYNAMODB` keygate gives functions (with local credentials and the
/// service's region), as SDK v3 and aws-sdk-rust do.
#[tokio::test(flavor = "multi_thread")]
async fn a_python_handler_uses_the_table_through_boto3() {
    let env = Env::new();
    let packages = python_packages(&["boto3==1.43.64"]);
    for entry in std::fs::read_dir(&packages).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_name().to_string_lossy().starts_with('.') {
            std::os::unix::fs::symlink(entry.path(), env.path().join(entry.file_name())).unwrap();
        }
    }
    env.write(
        "candidates.py",
        "import json, os, uuid\nimport boto3\n\n\
         table = boto3.resource('dynamodb').Table(os.environ['CANDIDATE_TABLE'])\n\n\
         def submit(event, context):\n\
         \x20   item = dict(json.loads(event['body']), id=str(uuid.uuid4()))\n\
         \x20   table.put_item(Item=item)\n\
         \x20   return {'statusCode': 200, 'body': json.dumps({'candidateId': item['id']})}\n\n\
         def get(event, context):\n\
         \x20   found = table.get_item(Key={'id': event['pathParameters']['id']}).get('Item')\n\
         \x20   return {'statusCode': 200 if found else 404, 'body': json.dumps(found or {})}\n",
    );
    let yml = env.write(
        "serverless.yml",
        "service: candidate-py
provider:
  name: aws
  runtime: python3.11
  stage: dev
  region: eu-west-1
  # A cold start imports boto3 (about a second, more on a busy machine).
  timeout: 30
  environment:
    CANDIDATE_TABLE: ${self:service}-${opt:stage, self:provider.stage}
  apiKeys:
    - candidate-py-key
functions:
  submit:
    handler: candidates.submit
    events:
      - http: {path: candidates, method: post, private: true}
  get:
    handler: candidates.get
    events:
      - http: {path: 'candidates/{id}', method: get, private: true}
resources:
  Resources:
    CandidatesTable:
      Type: AWS::DynamoDB::Table
      Properties:
        TableName: ${self:provider.environment.CANDIDATE_TABLE}
        AttributeDefinitions:
          - {AttributeName: id, AttributeType: S}
        KeySchema:
          - {AttributeName: id, KeyType: HASH}
        BillingMode: PAY_PER_REQUEST
",
    );
    let report = env.deploy(&yml, &[]);
    assert_eq!(report["tables"][0]["status"], "created", "{report}");
    let key = Env::key_value(&report);
    let srv = env.serve();
    let c = client();
    let body = r#"{"fullname": "Grace Hopper", "email": "grace@example.com"}"#;
    let submitted =
        send(c.post(srv.url("/dev/candidates")).header("x-api-key", &key).body(body)).await;
    assert_eq!(submitted.status, 200, "{submitted:?}\n{}", srv.logs());
    let id = submitted.json()["candidateId"].as_str().unwrap().to_owned();
    let one = get(&srv.url(&format!("/dev/candidates/{id}")), Some(&key)).await;
    assert_eq!(one.status, 200, "{one:?}\n{}", srv.logs());
    assert_eq!(one.json()["fullname"], "Grace Hopper");
    let none = get(&srv.url("/dev/candidates/nobody"), Some(&key)).await;
    assert_eq!(none.status, 404, "{none:?}");
    srv.stop();
}

#[test]
fn a_table_whose_keys_changed_is_refused_and_nothing_is_deployed() {
    let env = Env::new();
    let yml = node_example(&env);
    env.deploy(&yml, &[]);
    let changed = std::fs::read_to_string(&yml)
        .unwrap()
        .replace("AttributeName: \"id\"", "AttributeName: \"email\"");
    let yml = env.write("serverless.yml", &changed);
    let out = env.run(&["deploy", "-c", yml.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("resources.Resources.CandidatesDynamoDbTable: table candidate-service-dev exists with the key schema id (S, HASH), but CandidatesDynamoDbTable declares email (S, HASH)"),
        "{err}"
    );
}

/// `keygate remove` (like `sls remove`), run in the service directory: the stage stops being
/// served, a `DeletionPolicy: Retain` table stays with its data for the next deploy, another
/// table goes; keys stay unless `--keys`.
#[tokio::test(flavor = "multi_thread")]
async fn remove_stops_the_stage_keeps_retained_tables_and_keys_unless_asked() {
    let env = Env::new();
    let yml = node_example(&env);
    let report = env.deploy(&yml, &[]);
    let key = Env::key_value(&report);

    let out = env.ok(&["remove"]);
    assert!(out.contains("Removed stage dev of candidate-service"), "{out}");
    assert!(out.contains("table candidate-service-dev: kept (DeletionPolicy: Retain)"), "{out}");
    assert!(out.contains("api keys and usage plans: kept"), "{out}");
    let info = env.run(&["info"]);
    assert!(!info.status.success(), "the stage is still deployed");
    let srv = env.serve();
    let gone = get(&srv.url("/dev/candidates"), Some(&key)).await;
    assert_eq!(gone.status, 403);
    assert_eq!(gone.body, r#"{"message":"Missing Authentication Token"}"#);
    srv.stop();
    let again = env.deploy(&yml, &[]);
    assert_eq!(again["tables"][0]["status"], "adopted", "{again}");
    assert!(again["apiKeys"][0]["value"].is_null(), "the kept key must not get a new value");

    // Without Retain, and with --keys: the table and the key go.
    let text = std::fs::read_to_string(&yml)
        .unwrap()
        .replace("DeletionPolicy: Retain", "DeletionPolicy: Delete");
    env.write("serverless.yml", &text);
    env.deploy(&yml, &[]);
    let removed = env.json(&["remove", "--keys"]);
    assert_eq!(removed["deletedTables"], serde_json::json!(["candidate-service-dev"]), "{removed}");
    assert_eq!(removed["deletedKeys"], serde_json::json!(["candidate-service-api-key"]));
    assert_eq!(removed["deletedPlans"], serde_json::json!(["candidate-service-dev"]));
    let fresh = env.deploy(&yml, &[]);
    assert_eq!(fresh["tables"][0]["status"], "created", "{fresh}");
    assert_ne!(Env::key_value(&fresh), key);
    let out = env.run(&["remove", "--stage", "prod"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no deployed stage prod"));
}

/// `startingPosition: LATEST` is a position keygate saves when the mapping starts: a record
/// written while keygate is stopped, before the mapping ever read one, is delivered after the
/// restart (DynamoDB's `LATEST` iterator alone would lose it); one written before the first
/// start is not.
#[tokio::test(flavor = "multi_thread")]
async fn a_latest_mapping_reads_what_was_written_while_keygate_was_stopped() {
    let env = Env::new();
    let yml = node_example(&env);
    env.deploy(&yml, &[]);
    let submit = |name: &str| {
        // Through the function itself, run once with no stream poller (`sls invoke local`).
        let body = serde_json::json!({"fullname": name, "email": "x@example.com", "experience": 1});
        let event = serde_json::json!({"body": body.to_string()}).to_string();
        let out = env.ok(&["invoke", "-f", "candidateSubmission", "-d", &event]);
        let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let body: serde_json::Value =
            serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        body["candidateId"].as_str().unwrap().to_owned()
    };
    let before = submit("Before Start");
    let srv = env.serve();
    assert!(srv.logs().contains("stream mapping enabled"), "{}", srv.logs());
    srv.stop();
    let meanwhile = submit("While Stopped");
    let srv = env.serve();
    let notified = notified(&env, &meanwhile, std::time::Duration::from_secs(30));
    assert!(
        notified.contains(&format!("New candidate While Stopped <x@example.com> ({meanwhile})")),
        "the record written while keygate was stopped was not delivered: {notified}\n{}",
        srv.logs()
    );
    assert!(!notified.contains(&before), "{notified}");
    srv.stop();
}
