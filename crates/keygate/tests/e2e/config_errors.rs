//! A bad serverless.yml: one clear error with file, line and column, non-zero exit, nothing
//! deployed.

use crate::support::*;

/// Deploys `yml`, expects failure naming `line` and every fragment in `expect`, then checks
/// that the store is unchanged.
fn check(env: &Env, yml: &str, line: usize, expect: &[&str]) {
    let path = env.write("serverless.yml", yml);
    let out = env.run(&["deploy", "-c", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "deploy succeeded for:\n{yml}");
    let located = format!("serverless.yml:{line}:");
    assert!(err.contains(&located), "expected {located} in: {err}\n{yml}");
    // line:column, both numbers.
    let after = &err[err.find(&located).unwrap() + located.len()..];
    assert!(after.starts_with(|c: char| c.is_ascii_digit()), "no column in: {err}");
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    assert!(!err.contains("SecretValue"), "a key value leaked: {err}");
    assert_eq!(env.json(&["keys", "list"]).as_array().unwrap().len(), 0);
    let info = env.run(&["info", "-c", example_yml().to_str().unwrap()]);
    assert!(!info.status.success(), "something was deployed");
}

fn yml(function: &str, provider_extra: &str) -> String {
    format!(
        "service: svc
provider:
  name: aws
  runtime: provided.al2023
{provider_extra}functions:
{function}"
    )
}

const OK_FN: &str = "  hello:
    handler: hello
    package:
      artifact: ./bootstrap
    events:
      - http:
          path: hello
          method: get
";

#[test]
fn bad_files_are_refused_with_a_location() {
    let env = Env::new();
    // Broken YAML (the parser notices the unclosed flow sequence on the next line).
    check(&env, &yml(&OK_FN.replace("path: hello", "path: [hello"), ""), 13, &["YAML"]);
    // Unknown variable.
    check(
        &env,
        &yml(OK_FN, "  environment:\n    X: ${env:KEYGATE_SURELY_UNSET_VAR}\n"),
        6,
        &["provider.environment.X", "KEYGATE_SURELY_UNSET_VAR"],
    );
    // Missing handler.
    check(&env, &yml(&OK_FN.replace("    handler: hello\n", ""), ""), 6, &["handler"]);
    // Bad method.
    check(&env, &yml(&OK_FN.replace("method: get", "method: fetch"), ""), 13, &["method", "fetch"]);
    // Bad path.
    check(&env, &yml(&OK_FN.replace("path: hello", "path: a//b"), ""), 12, &["path"]);
    // Bad key value: says what is wrong, never echoes the value.
    check(
        &env,
        &yml(OK_FN, "  apiGateway:\n    apiKeys:\n      - name: k\n        value: SecretValue\n"),
        8,
        &["value", "20 to 128"],
    );
}

#[test]
fn the_seed_snippet_loads() {
    // The seed's provider block as written (nodejs4.3, old provider.apiKeys form).
    let env = Env::new();
    let path = env.write(
        "serverless.yml",
        "service: candidate-service
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
    description: Submit candidate information and starts interview process.
    events:
      - http:
          path: candidates
          method: post
          cors: true
          private: true
",
    );
    // Without the handler's file: the deploy says which file is missing, where the handler is.
    let out = env.run(&["deploy", "-c", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("serverless.yml:13:14: functions.candidateSubmission.handler")
            && err.contains("no file api/candidates{.js,.mjs,.cjs}"),
        "{err}"
    );
    env.write("api/candidates.js", "exports.submit = (event, context, callback) => {};\n");
    let out = env.run(&["deploy", "-c", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("provider.apiGateway.apiKeys"), "deprecation note: {err}");
    assert!(err.contains("Node.js functions run on node v") && err.contains("nodejs4.3"), "{err}");
}

/// Issue 13: `privat: true` under an http event deployed the route public, with exit 0 and only
/// a note. Now the deploy fails with the key's position and a "did you mean", and the stage has
/// no deployment afterwards.
#[test]
fn a_misspelt_private_deploys_nothing() {
    let env = Env::new();
    let typo = yml(&OK_FN.replace("method: get\n", "method: get\n          privat: true\n"), "");
    check(&env, &typo, 14, &["functions.hello.events[0].http.privat", "did you mean `private`?"]);
    // Not even with --allow-unknown: a misspelt auth setting stays an error (issue 25).
    let path = env.path().join("serverless.yml");
    let r = env.run(&["deploy", "-c", path.to_str().unwrap(), "--allow-unknown"]);
    assert!(!r.status.success(), "deployed with --allow-unknown");
    assert!(String::from_utf8_lossy(&r.stderr).contains("stays an error"), "{r:?}");
    // The file's own stage (svc/dev) has no deployment: `info`, reading the file with the typo
    // fixed, finds none.
    env.write("serverless.yml", &yml(OK_FN, ""));
    let info = env.run(&["info", "-c", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&info.stderr);
    assert!(!info.status.success(), "svc was deployed: {}", String::from_utf8_lossy(&info.stdout));
    assert!(err.contains("svc") && err.contains("dev"), "{err}");
}
