//! Node.js and Python functions through the binary: the seed's own shape of service (Node.js
//! callback handlers, `runtime: nodejs4.3`, the old `provider.apiKeys`) deploys from its
//! directory unchanged and is served behind keys; deploy checks handlers and interpreters.

use crate::support::*;

const SEED_YML: &str = "service: candidate-service
provider:
  name: aws
  runtime: nodejs4.3
  stage: dev
  region: us-east-1
  environment:
    CANDIDATE_TABLE: candidate-${opt:stage, self:provider.stage}
  apiKeys:
    - candidate-service-api-key
functions:
  candidateSubmission:
    handler: api/candidates.submit
    memorySize: 128
    events:
      - http:
          path: candidates
          method: post
          private: true
  whoami:
    handler: api/candidates.whoami
    events:
      - http:
          path: whoami
          method: get
          private: true
  pyList:
    handler: py/handler.list
    runtime: python3.11
    events:
      - http:
          path: py
          method: get
          private: true
";

const CANDIDATES_JS: &str = r#"'use strict';
const table = process.env.CANDIDATE_TABLE;
module.exports.submit = (event, context, callback) => {
  const requestBody = JSON.parse(event.body);
  const fullname = requestBody.fullname;
  const email = requestBody.email;
  if (typeof fullname !== 'string' || typeof email !== 'string') {
    console.error('Validation Failed');
    callback(new Error("Couldn't submit candidate because of validation errors."));
    return;
  }
  callback(null, {
    statusCode: 200,
    body: JSON.stringify({ message: `Sucessfully submitted candidate with email ${email}`, table }),
  });
};
module.exports.whoami = async (event) => ({
  statusCode: 200,
  body: JSON.stringify({ apiKey: event.requestContext.identity.apiKey, uid: process.getuid() }),
});
"#;

const HANDLER_PY: &str = "import json, os

def list(event, context):
    return {'statusCode': 200, 'body': json.dumps({'candidates': [], 'uid': os.getuid()})}
";

fn seed_service(env: &Env) -> std::path::PathBuf {
    env.write("api/candidates.js", CANDIDATES_JS);
    env.write("py/handler.py", HANDLER_PY);
    env.write("serverless.yml", SEED_YML)
}

/// The uid functions run as: keygate's own, or `nobody`'s when the tests run as root.
fn function_uid() -> u32 {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        nix::unistd::User::from_name("nobody").unwrap().expect("a nobody user").uid.as_raw()
    } else {
        uid.as_raw()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_node_service_runs_unchanged_behind_keys() {
    let env = Env::new();
    let yml = seed_service(&env);
    let report = env.deploy(&yml, &[]);
    let notes = report["notes"].to_string();
    assert!(notes.contains("Node.js functions run on node v"), "{notes}");
    assert!(notes.contains("Python functions run on python3 3."), "{notes}");
    let key = Env::key_value(&report);
    let srv = env.serve();
    let c = client();

    let candidates = srv.url("/dev/candidates");
    let candidate = r#"{"fullname": "Ada Lovelace", "email": "ada@example.com", "experience": 12}"#;
    send(c.post(&candidates).body(candidate)).await.assert_forbidden();
    let ok = send(c.post(&candidates).header("x-api-key", &key).body(candidate)).await;
    assert_eq!(ok.status, 200, "{ok:?}\n{}", srv.logs());
    assert_eq!(
        ok.json(),
        serde_json::json!({
            "message": "Sucessfully submitted candidate with email ada@example.com",
            "table": "candidate-dev",
        })
    );
    // callback(new Error(...)): API Gateway's 502.
    let invalid = send(c.post(&candidates).header("x-api-key", &key).body("{}")).await;
    assert_eq!(invalid.status, 502, "{invalid:?}");
    assert_eq!(invalid.body, r#"{"message": "Internal server error"}"#);

    // The handler sees the real key, and runs as the function user.
    let who = get(&srv.url("/dev/whoami"), Some(&key)).await;
    assert_eq!(who.status, 200, "{who:?}");
    assert_eq!(who.json()["apiKey"], key.as_str());
    assert_eq!(who.json()["uid"], function_uid());

    get(&srv.url("/dev/py"), None).await.assert_forbidden();
    let py = get(&srv.url("/dev/py"), Some(&key)).await;
    assert_eq!(py.status, 200, "{py:?}\n{}", srv.logs());
    assert_eq!(py.json()["candidates"], serde_json::json!([]));
    assert_eq!(py.json()["uid"], function_uid());

    let logs = srv.logs();
    assert!(logs.contains("Couldn't submit candidate because of validation errors."), "{logs}");
    assert!(!logs.contains(&key), "a key value reached the log");
    srv.stop();
}

#[test]
fn deploy_names_a_missing_handler_file_and_a_missing_interpreter_where_they_are_written() {
    let env = Env::new();
    let yml = seed_service(&env);
    std::fs::remove_file(env.path().join("py/handler.py")).unwrap();
    let out = env.run(&["deploy", "-c", yml.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("serverless.yml:28:14: functions.pyList.handler: handler \"py/handler.list\": no module py/handler.py"),
        "{err}"
    );

    // No node on PATH: the runtime's line says what to install; nothing is deployed.
    env.write("py/handler.py", HANDLER_PY);
    let empty = env.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let out = env
        .cmd()
        .env("PATH", &empty)
        .args(["deploy", "-c", yml.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("serverless.yml:4:12: functions.candidateSubmission.runtime: runtime nodejs4.3 needs `node` on PATH")
            && err.contains("apt-get install nodejs"),
        "{err}"
    );
    let info = env.run(&["info", "-c", yml.to_str().unwrap()]);
    assert!(!info.status.success(), "nothing may be deployed");
}
