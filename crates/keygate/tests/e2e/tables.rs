//! The seed series' candidate service as its readers have it: Node.js callback handlers on
//! aws-sdk v2's `DocumentClient` (no endpoint in the code, the table name from
//! `process.env.CANDIDATE_TABLE`), the table declared under `resources` with `DeletionPolicy:
//! Retain` and a stream. keygate creates the table on DynamoDB Local, points the SDK at it, and
//! adopts it on the next deploy with its data.

use crate::support::*;

const YML: &str = "service: candidate-service
provider:
  name: aws
  runtime: nodejs4.3
  stage: dev
  region: us-east-1
  environment:
    CANDIDATE_TABLE: ${self:service}-${opt:stage, self:provider.stage}
  apiKeys:
    - candidate-service-api-key
functions:
  candidateSubmission:
    handler: api/candidates.submit
    events:
      - http: {path: candidates, method: post, private: true}
  listCandidates:
    handler: api/candidates.list
    events:
      - http: {path: candidates, method: get, private: true}
  candidateDetails:
    handler: api/candidates.get
    events:
      - http: {path: 'candidates/{id}', method: get, private: true}
resources:
  Resources:
    CandidatesDynamoDbTable:
      Type: 'AWS::DynamoDB::Table'
      DeletionPolicy: Retain
      Properties:
        AttributeDefinitions:
          - AttributeName: id
            AttributeType: S
        KeySchema:
          - AttributeName: id
            KeyType: HASH
        ProvisionedThroughput:
          ReadCapacityUnits: 1
          WriteCapacityUnits: 1
        StreamSpecification:
          StreamViewType: NEW_AND_OLD_IMAGES
        TableName: ${self:provider.environment.CANDIDATE_TABLE}
";

const CANDIDATES_JS: &str = r#"'use strict';
const crypto = require('crypto');
const AWS = require('aws-sdk');
const dynamoDb = new AWS.DynamoDB.DocumentClient();

module.exports.submit = (event, context, callback) => {
  const requestBody = JSON.parse(event.body);
  const { fullname, email, experience } = requestBody;
  if (typeof fullname !== 'string' || typeof email !== 'string' || typeof experience !== 'number') {
    console.error('Validation Failed');
    callback(new Error("Couldn't submit candidate because of validation errors."));
    return;
  }
  const candidate = { id: crypto.randomUUID(), fullname, email, experience, submittedAt: Date.now() };
  dynamoDb.put({ TableName: process.env.CANDIDATE_TABLE, Item: candidate }).promise()
    .then(() => callback(null, {
      statusCode: 200,
      body: JSON.stringify({ message: `Sucessfully submitted candidate with email ${email}`, candidateId: candidate.id }),
    }))
    .catch((err) => {
      console.log(err);
      callback(null, { statusCode: 500, body: JSON.stringify({ message: `Unable to submit candidate with email ${email}` }) });
    });
};

module.exports.list = (event, context, callback) => {
  const params = { TableName: process.env.CANDIDATE_TABLE, ProjectionExpression: 'id, fullname, email' };
  dynamoDb.scan(params, (err, data) => {
    if (err) return callback(err);
    callback(null, { statusCode: 200, body: JSON.stringify({ candidates: data.Items }) });
  });
};

module.exports.get = (event, context, callback) => {
  const params = { TableName: process.env.CANDIDATE_TABLE, Key: { id: event.pathParameters.id } };
  dynamoDb.get(params).promise()
    .then((result) => callback(null, { statusCode: 200, body: JSON.stringify(result.Item) }))
    .catch((error) => callback(new Error("Couldn't fetch candidate.")));
};
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_dynamodb_service_runs_unchanged_and_keeps_its_data() {
    let env = Env::new();
    env.write("api/candidates.js", CANDIDATES_JS);
    std::os::unix::fs::symlink(
        node_modules(&["aws-sdk@2.1693.0"]),
        env.path().join("node_modules"),
    )
    .unwrap();
    let yml = env.write("serverless.yml", YML);

    let report = env.deploy(&yml, &[]);
    assert_eq!(report["tables"][0]["tableName"], "candidate-service-dev", "{report}");
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
    env.write("api/candidates.js", CANDIDATES_JS);
    let yml = env.write("serverless.yml", YML);
    env.deploy(&yml, &[]);
    let changed = YML.replace("AttributeName: id", "AttributeName: email");
    let yml = env.write("serverless.yml", &changed);
    let out = env.run(&["deploy", "-c", yml.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("resources.Resources.CandidatesDynamoDbTable: table candidate-service-dev exists with the key schema id (S, HASH), but CandidatesDynamoDbTable declares email (S, HASH)"),
        "{err}"
    );
}
