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
    env.write(
        "api/candidates.js",
        &std::fs::read_to_string(example.join("api/candidates.js")).unwrap(),
    );
    env.write("package.json", &std::fs::read_to_string(example.join("package.json")).unwrap());
    std::os::unix::fs::symlink(
        node_modules(&["aws-sdk@2.1693.0", "uuid@9.0.1"]),
        env.path().join("node_modules"),
    )
    .unwrap();
    env.write("serverless.yml", &std::fs::read_to_string(example.join("serverless.yml")).unwrap())
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
