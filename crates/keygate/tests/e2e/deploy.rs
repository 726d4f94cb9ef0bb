//! Deploy semantics: idempotent keys, immutable deployments, undeclared keys kept.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn deploy_is_idempotent_and_deployments_are_snapshots() {
    let env = Env::new();
    let yml = env.write("serverless.yml", &testfn_yml("svc", ""));
    let first = env.deploy(&yml, &[]);
    let key = Env::key_value(&first);
    let second = env.deploy(&yml, &[]);
    assert_eq!(first["apiKeys"][0]["id"], second["apiKeys"][0]["id"]);
    assert!(second["apiKeys"][0].get("value").is_none(), "no new value on redeploy");
    assert_ne!(first["deploymentId"], second["deploymentId"]);
    assert_eq!(env.json(&["keys", "list"]).as_array().unwrap().len(), 1);
    // camelCase throughout, functions as objects.
    assert_eq!(first["apiKeys"][0]["usagePlan"], "svc-dev", "{first}");
    assert!(!first.to_string().contains("usage_plan"), "{first}");
    assert_eq!(first["functions"][0]["name"], "echo");
    assert_eq!(first["functions"][0]["functionName"], "svc-dev-echo");
    let endpoints = first["endpoints"].as_array().unwrap();
    assert_eq!(endpoints[0]["method"], "ANY");
    assert!(endpoints[0]["url"].as_str().unwrap().ends_with("/dev/echo/{proxy+}"));

    let srv = env.serve();
    let url = srv.url("/dev/echo/a/b");
    get(&url, None).await.assert_forbidden();
    assert_eq!(get(&url, Some(&key)).await.status, 200);

    // Editing the file changes nothing until deploy.
    let open = testfn_yml("svc", "").replace("          private: true\n", "");
    std::fs::write(&yml, &open).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    get(&url, None).await.assert_forbidden();

    // Deploying the edit opens the route on the running gateway.
    env.deploy(&yml, &[]);
    eventually(Duration::from_secs(1), || async { get(&url, None).await.status == 200 }).await;
    srv.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn undeclared_keys_are_kept_and_reported() {
    let env = Env::new();
    let yml = env.write("serverless.yml", &testfn_yml("svc", ""));
    let first = env.deploy(&yml, &[]);
    let key = Env::key_value(&first);
    std::fs::write(&yml, testfn_yml("svc", "").replace("svc-key", "svc-key-2")).unwrap();
    // A key added to the stage's plan from the CLI was never declared: no note for it.
    env.json(&["keys", "create", "--name", "cli-made", "--usage-plan", "svc-dev"]);
    let second = env.deploy(&yml, &[]);
    assert_eq!(second["undeclaredApiKeys"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["undeclaredApiKeys"][0]["name"], "svc-key");
    assert!(second["notes"].to_string().contains("no longer declared"));
    assert!(!second["notes"].to_string().contains("cli-made"), "{second}");
    let srv = env.serve();
    assert_eq!(get(&srv.url("/dev/echo/x"), Some(&key)).await.status, 200, "old key still works");
    srv.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn many_undeclared_keys_are_summed_up_in_one_note() {
    let env = Env::new();
    let names: Vec<String> = (0..13).map(|n| format!("      - k{n:02}\n")).collect();
    let many = testfn_yml("svc", "").replace("      - svc-key\n", &names.concat());
    let yml = env.write("serverless.yml", &many);
    env.deploy(&yml, &[]);
    std::fs::write(&yml, testfn_yml("svc", "")).unwrap();
    let report = env.deploy(&yml, &[]);
    assert_eq!(report["undeclaredApiKeys"].as_array().unwrap().len(), 13, "all in the report");
    let notes: Vec<&str> =
        report["notes"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
    let named = notes.iter().filter(|n| n.starts_with("API key k")).count();
    assert_eq!(named, 10, "{notes:#?}");
    assert!(
        notes.iter().any(|n| n.starts_with("3 more API keys are no longer declared")),
        "{notes:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn info_shows_the_deployed_stage() {
    let env = Env::new();
    let yml = example_yml();
    let out = env.run(&["info", "-c", yml.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no keygate data in"));
    let report = env.deploy(&yml, &[]);
    // With data, a stage that was never deployed is named.
    let out = env.run(&["info", "-c", yml.to_str().unwrap(), "--stage", "prod"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no deployed stage prod"));
    let key = Env::key_value(&report);
    let info = env.json(&["info", "-c", yml.to_str().unwrap()]);
    assert_eq!(info["service"], "candidate-service");
    assert_eq!(info["stage"], "dev");
    assert_eq!(info["endpoints"].as_array().unwrap().len(), 3);
    assert_eq!(info["apiKeys"][0]["name"], "candidate-service-api-key");
    assert_eq!(
        info["functions"][1],
        serde_json::json!({"name": "listCandidates",
            "functionName": "candidate-service-dev-listCandidates"})
    );
    assert!(info["deployedDate"].as_str().unwrap().ends_with('Z'), "{info}");
    assert!(!info.to_string().contains(&key));
    let text = env.ok(&["info", "-c", yml.to_str().unwrap()]);
    assert!(text.contains("POST - http://127.0.0.1:4000/dev/candidates"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_artifact_deploys_nothing() {
    let env = Env::new();
    let second = "  other:
    handler: other
    package:
      artifact: ./target/gone/bootstrap
    events:
      - http: GET other
";
    let yml = env.write(
        "serverless.yml",
        &testfn_yml("svc", second)
            .replace(workspace_bin("keygate-testfn").to_str().unwrap(), "./target/nope/bootstrap"),
    );
    let out = env.run(&["deploy", "-c", "serverless.yml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Every function with a missing artifact, each where its artifact is written.
    assert!(err.contains("serverless.yml:12:17: functions.echo.package.artifact: "), "{err}");
    assert!(err.contains("target/nope/bootstrap"), "{err}");
    assert!(err.contains("serverless.yml:22:17: functions.other.package.artifact: "), "{err}");
    assert!(err.contains("target/gone/bootstrap"), "{err}");
    assert!(yml.exists());
    assert_eq!(env.json(&["keys", "list"]).as_array().unwrap().len(), 0);
}

/// `serve` lists what it serves; with nothing deployed it warns and says where it looked.
#[tokio::test(flavor = "multi_thread")]
async fn serve_lists_what_it_serves_or_warns() {
    let env = Env::new();
    let srv = env.serve();
    let warning = srv.logs();
    let data = env.data_dir();
    assert!(
        warning.contains(&format!("warning: nothing is deployed in {}", data.display()))
            && warning.contains("did not exist and was created empty"),
        "{warning}"
    );
    srv.stop();
    let yml = env.write("serverless.yml", &testfn_yml("svc", ""));
    env.deploy(&yml, &[]);
    let srv = env.serve();
    let printed = srv.stdout.join("\n");
    assert!(printed.contains(&format!("serving from {}:", data.display())), "{printed}");
    assert!(printed.contains("svc stage dev (api "), "{printed}");
    assert!(
        printed.contains(&format!("  ANY - {}/dev/echo/{{proxy+}}  (api key required)", srv.base))
    );
    assert!(!srv.logs().contains("nothing is deployed"), "{}", srv.logs());
    // Port 0 for traffic: a free admin port too, not 4001.
    assert!(!srv.admin.ends_with(":4001") && srv.admin != srv.base, "{}", srv.admin);
    srv.stop();
}
