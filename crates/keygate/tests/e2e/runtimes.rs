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
/// Checks the uid a function reported: as root, one of the function range (a uid of its own);
/// otherwise keygate's.
fn assert_function_uid(uid: &serde_json::Value) {
    let uid = uid.as_u64().and_then(|u| u32::try_from(u).ok()).expect("a uid");
    let own = nix::unistd::geteuid();
    if own.is_root() {
        let (first, last) = keygate_functions::DEFAULT_ID_RANGE;
        assert!((first..=last).contains(&uid), "uid {uid} is not from the function range");
    } else {
        assert_eq!(uid, own.as_raw());
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
    assert_function_uid(&who.json()["uid"]);

    get(&srv.url("/dev/py"), None).await.assert_forbidden();
    let py = get(&srv.url("/dev/py"), Some(&key)).await;
    assert_eq!(py.status, 200, "{py:?}\n{}", srv.logs());
    assert_eq!(py.json()["candidates"], serde_json::json!([]));
    assert_function_uid(&py.json()["uid"]);

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

/// `keygate invoke` (like `sls invoke local`), run in the service directory without `-c`.
#[test]
fn invoke_prints_the_result_or_lambdas_error() {
    let env = Env::new();
    seed_service(&env);
    let event = r#"{"requestContext": {"identity": {"apiKey": "from-the-event"}}}"#;
    let out = env.ok(&["invoke", "-f", "whoami", "-d", event]);
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["statusCode"], 200, "{out}");
    let body: serde_json::Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["apiKey"], "from-the-event");
    assert_function_uid(&body["uid"]);

    env.write("event.json", r#"{"httpMethod": "GET"}"#);
    let out = env.ok(&["invoke", "-f", "pyList", "--path", "event.json"]);
    assert!(out.contains("\"statusCode\": 200"), "{out}");

    // A handler error: Lambda's error on stdout, the handler's output on stderr, exit 1.
    let out = env.run(&["invoke", "-f", "candidateSubmission", "-d", r#"{"body": "{}"}"#]);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(stdout.contains("\"errorType\": \"Error\""), "{stdout}");
    assert!(stdout.contains("Couldn't submit candidate because of validation errors."), "{stdout}");
    assert!(stderr.contains("\tERROR\tValidation Failed"), "{stderr}");
    assert!(stderr.contains("REPORT RequestId: "), "{stderr}");

    let out = env.run(&["invoke", "-f", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no function \"nope\"") && err.contains("whoami"), "{err}");
}

/// `keygate logs -f FN [-t]` shows what the function printed, with its request id, and
/// Lambda's START/END/REPORT lines, from the keygate serving this data directory.
#[tokio::test(flavor = "multi_thread")]
async fn logs_show_the_functions_lines_with_request_ids_and_reports() {
    let env = Env::new();
    let yml = seed_service(&env);
    let report = env.deploy(&yml, &[]);
    let key = Env::key_value(&report);
    let srv = env.serve();
    let c = client();
    let invalid =
        send(c.post(srv.url("/dev/candidates")).header("x-api-key", &key).body("{}")).await;
    assert_eq!(invalid.status, 502);

    // Lines reach the file shortly after the request (a writer thread of their own, which makes
    // the file with the first lines: until then `logs` says there are none yet).
    let mut text = String::new();
    for _ in 0..100 {
        let out = env.run(&["logs", "-f", "candidateSubmission"]);
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains("REPORT") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let start = text.lines().find(|l| l.starts_with("START RequestId: ")).expect(&text);
    let id = start.split_whitespace().nth(2).unwrap();
    assert!(start.ends_with("Version: $LATEST"), "{start}");
    assert!(text.contains(&format!("\t{id}\tERROR\tValidation Failed")), "{text}");
    assert!(
        text.contains(&format!("\t{id}\tERROR\tInvoke Error \t{{\"errorType\":\"Error\"")),
        "{text}"
    );
    assert!(text.contains(&format!("END RequestId: {id}")), "{text}");
    let report_line = text.lines().find(|l| l.starts_with("REPORT RequestId: ")).unwrap();
    for part in [
        "\tDuration: ",
        " ms\tBilled Duration: ",
        "\tMemory Size: 128 MB",
        "\tMax Memory Used: ",
        "\tInit Duration: ",
    ] {
        assert!(report_line.contains(part), "{part:?} missing in {report_line}");
    }
    assert!(!text.contains(&key), "a key value reached the function log");
    // --since: only lines from that long ago on (0s: none of these).
    assert_eq!(env.ok(&["logs", "-f", "candidateSubmission", "--since", "1h"]), text);
    assert_eq!(env.ok(&["logs", "-f", "candidateSubmission", "--since", "0s"]), "");

    // -t follows: a new invocation's lines appear.
    let mut follow = env
        .cmd()
        .args(["logs", "-f", "whoami", "-t"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(get(&srv.url("/dev/whoami"), Some(&key)).await.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
        match line {
            Ok(line) if line.starts_with("REPORT RequestId: ") => break,
            Ok(_) => {}
            Err(e) => panic!("no REPORT line followed: {e}"),
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    srv.stop();
}
