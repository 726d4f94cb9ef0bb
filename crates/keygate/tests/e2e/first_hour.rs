//! A newcomer's first hour (issue 26): Serverless CLI habits and commands run in the wrong place.

use crate::support::{Env, example_yml, mock_service};

/// `keygate deploy` in the service's directory finds serverless.yml itself, says which file it
/// read, and takes `sls`'s `-v`, `-s` and `-r`; `info` there finds it too.
#[test]
fn deploy_in_the_service_directory_finds_serverless_yml_and_takes_sls_flags() {
    let env = Env::new();
    let service_dir = example_yml().parent().unwrap().canonicalize().unwrap();
    let out = env
        .cmd()
        .current_dir(&service_dir)
        .args(["deploy", "-v", "-s", "qa", "-r", "eu-west-2", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "deploy failed: {stderr}");
    let using = format!("note: using {}", service_dir.join("serverless.yml").display());
    assert!(stderr.contains(&using), "{using:?} not in:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stage"], "qa", "{report}");

    let out = env.cmd().current_dir(&service_dir).args(["info", "-s", "qa", "--json"]).output();
    let out = out.unwrap();
    assert!(out.status.success(), "info failed: {}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["stage"], "qa", "{info}");
    let text = info.to_string();
    assert!(text.contains("eu-west-2"), "the region from -r: {text}");

    // Where there is no serverless.yml, the error says how to name one.
    let out = env.run(&["deploy"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no serverless.yml (or serverless.yaml) in"), "{stderr}");
    assert!(stderr.contains("-c FILE"), "{stderr}");
}

/// Commands that read what a deploy made refuse a directory with no keygate data, exit non-zero
/// and create nothing there.
#[test]
fn reading_commands_in_an_empty_directory_fail_and_create_nothing() {
    let env = Env::new();
    let data_dir = env.data_dir();
    for args in [
        &["keys", "list"][..],
        &["plans", "list"],
        &["usage", "--plan", "p"],
        &["audit"],
        &["admin", "token", "list"],
        &["info", "-c", example_yml().to_str().unwrap()],
        &["logs", "-c", example_yml().to_str().unwrap(), "-f", "listCandidates"],
    ] {
        let out = env.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "keygate {args:?} succeeded: {stderr}");
        assert!(
            stderr.contains(&format!("no keygate data in {}", data_dir.display())),
            "keygate {args:?}: {stderr}"
        );
        assert!(stderr.contains("--data-dir"), "keygate {args:?}: {stderr}");
        assert!(!data_dir.exists(), "keygate {args:?} created {}", data_dir.display());
    }
    // Issuing an admin token may come first: it makes the data directory.
    env.ok(&["admin", "token", "create"]);
    assert!(data_dir.exists());
}

/// Run as root, keygate runs functions as `nobody`: a data directory under a directory that user
/// cannot enter (a `mktemp -d`, `/root`) fails deploy and serve with what to do, instead of a 502
/// on every function's first request. Run as another user, functions run as keygate's own user
/// and reach it: deploy works.
#[test]
fn a_data_directory_the_function_user_cannot_reach_fails_deploy_and_serve() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let private = env.path().join("private");
    std::fs::create_dir(&private).unwrap();
    let chmod = |mode| {
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(0o700);
    let data = private.join("data");
    let yml = example_yml();
    let deploy = || {
        env.cmd()
            .env("KEYGATE_DATA_DIR", &data)
            .env_remove("KEYGATE_FUNCTION_USER")
            .args(["deploy", "-c", yml.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = deploy();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !nix::unistd::Uid::effective().is_root() {
        assert!(out.status.success(), "deploy failed: {stderr}");
        return;
    }
    assert!(!out.status.success(), "deploy succeeded under a 0700 directory");
    let said = format!("cannot enter the directory {} (mode 0700", private.display());
    assert!(stderr.contains(&said), "{said:?} not in:\n{stderr}");
    assert!(stderr.contains("--function-user") && stderr.contains("--data-dir"), "{stderr}");

    // Deployed while reachable, then closed: serve refuses to start, and says why.
    chmod(0o711);
    let out = deploy();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    chmod(0o700);
    let mut child = env
        .cmd()
        .env("KEYGATE_DATA_DIR", &data)
        .env_remove("KEYGATE_FUNCTION_USER")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("serve kept running with a data directory nobody can reach");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains(&said), "{said:?} not in:\n{stderr}");
    chmod(0o711); // So that the temp directory can be removed.
}

/// Every refusal says why in its access-log line (`reason=`), with the key's id where the value
/// is a known key's, never a value; a key sent in `Authorization` gets a hint. The answers stay
/// AWS's.
#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_says_why_in_the_access_log() {
    use crate::support::{client, get, send};
    let env = Env::new();
    let service = |name: &str, path: &str, plan: &str| mock_service(name, plan, &[path]);
    let throttled =
        env.write("t.yml", &service("throttled", "a", "{throttle: {rateLimit: 1, burstLimit: 1}}"));
    let quota = env.write("q.yml", &service("quota", "b", "{quota: {limit: 1, period: DAY}}"));
    let key = Env::key_value(&env.deploy(&throttled, &[]));
    let quota_key = Env::key_value(&env.deploy(&quota, &[]));
    let created = |name: &str, extra: &[&str]| {
        let mut args = vec!["keys", "create", "--name", name];
        args.extend_from_slice(extra);
        let k = env.json(&args);
        (k["id"].as_str().unwrap().to_owned(), k["value"].as_str().unwrap().to_owned())
    };
    let (off_id, off) = created("off", &["--usage-plan", "throttled-dev", "--disabled"]);
    let (old_id, old) = created("old", &["--usage-plan", "throttled-dev", "--expires", "+1s"]);
    let (loner_id, loner) = created("loner", &[]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // `old` expires.

    let srv = env.start(&["serve", "--listen", "127.0.0.1:0"], &[("RUST_LOG", "info")]);
    let url = srv.url("/dev/a");
    assert_eq!(get(&url, Some(&key)).await.status, 200);
    assert_eq!(get(&url, Some(&key)).await.status, 429, "throttled");
    let quota_url = srv.url("/dev/b");
    assert_eq!(get(&quota_url, Some(&quota_key)).await.status, 200);
    assert_eq!(get(&quota_url, Some(&quota_key)).await.status, 429, "over quota");
    get(&url, None).await.assert_forbidden();
    get(&url, Some("NoSuchKey0123456789abcdef")).await.assert_forbidden();
    get(&url, Some(&off)).await.assert_forbidden();
    get(&url, Some(&old)).await.assert_forbidden();
    get(&url, Some(&loner)).await.assert_forbidden();
    let bearer = send(client().get(&url).header("authorization", format!("Bearer {key}"))).await;
    bearer.assert_forbidden();
    // Two keys, a good one first (security round 2, finding 5): refused, whichever is good.
    for pair in [[&key, &loner], [&loner, &key]] {
        let r = send(client().get(&url).header("x-api-key", pair[0]).header("x-api-key", pair[1]));
        r.await.assert_forbidden();
    }
    for (path, method) in [("/nostage/a", "GET"), ("/dev/nothing", "GET"), ("/dev/a", "DELETE")] {
        let req = client().request(method.parse().unwrap(), srv.url(path));
        let r = send(req.header("x-api-key", &key)).await;
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(r.json(), serde_json::json!({"message": "Missing Authentication Token"}));
    }
    let log = srv.log.clone();
    srv.stop();
    let logs = std::fs::read_to_string(log).unwrap();
    let access: Vec<&str> = logs.lines().filter(|l| l.contains("keygate::access")).collect();
    let line = |reason: &str| -> &str {
        let field = format!("reason=\"{reason}\"");
        access
            .iter()
            .find(|l| l.contains(&field))
            .unwrap_or_else(|| panic!("no access line with {field}:\n{}", access.join("\n")))
    };
    assert!(line("throttled").contains("status=429"));
    assert!(line("quota_exceeded").contains("status=429"));
    assert!(line("missing_key").contains("status=403"));
    assert!(line("unknown_key").contains("key_id=\"-\""));
    assert!(line("disabled_key").contains(&off_id));
    assert!(line("expired_key").contains(&old_id));
    assert!(line("key_not_in_plan").contains(&loner_id));
    assert!(line("no_such_stage").contains("/nostage/a"));
    assert!(line("no_such_route").contains("/dev/nothing"));
    assert!(line("method_not_allowed").contains("DELETE"));
    assert_eq!(access.iter().filter(|l| l.contains("reason=\"several_keys\"")).count(), 2);
    let hinted: Vec<&&str> = access.iter().filter(|l| l.contains("hint=")).collect();
    assert_eq!(hinted.len(), 1, "{hinted:?}");
    assert!(hinted[0].contains("Authorization header but no x-api-key"), "{}", hinted[0]);
    assert!(access.iter().any(|l| l.contains("status=200") && l.contains("reason=\"-\"")));
    for secret in [&key, &quota_key, &off, &old, &loner] {
        assert!(!logs.contains(secret.as_str()), "a key value is in the logs");
    }
}

/// The example keeps its candidates in the state directory keygate gives the service and stage
/// (`KEYGATE_STATE_DIR`, under the data directory): two data directories deploying the same
/// example never see each other's candidates, and it works when functions run as `nobody`.
#[tokio::test(flavor = "multi_thread")]
async fn two_data_directories_keep_their_own_candidates() {
    use crate::support::{client, get, send};
    let deploy = |env: &Env| {
        // No CANDIDATE_DB: the example's default.
        let out = env
            .cmd()
            .env_remove("CANDIDATE_DB")
            .args(["deploy", "-c", example_yml().to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Env::key_value(&report)
    };
    let (a, b) = (Env::new(), Env::new());
    let (key_a, key_b) = (deploy(&a), deploy(&b));
    let (srv_a, srv_b) = (a.serve(), b.serve());
    let (list_a, list_b) = (srv_a.url("/dev/candidates"), srv_b.url("/dev/candidates"));
    let r = send(client().post(&list_a).header("x-api-key", &key_a).json(&serde_json::json!({
        "fullname": "Ada Lovelace", "email": "ada@example.com", "experience": 12
    })))
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = get(&list_a, Some(&key_a)).await;
    assert_eq!(r.json()["candidates"][0]["email"], "ada@example.com", "{r:?}");
    let r = get(&list_b, Some(&key_b)).await;
    assert_eq!(r.body, r#"{"candidates":[]}"#, "the other data directory's candidates leaked");

    let state = a.data_dir().join("state/candidate-service/dev");
    assert!(state.join("candidates.db").is_file(), "{} holds the database", state.display());
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&state).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        // Each function its own uid, the service stage's group sharing the directory.
        let (first, last) = keygate_functions::DEFAULT_ID_RANGE;
        assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o2770, 0), "the group's");
        assert!((first..=last).contains(&meta.gid()), "gid {}", meta.gid());
        let db = std::fs::metadata(state.join("candidates.db")).unwrap();
        assert_eq!((db.gid(), db.mode() & 0o060), (meta.gid(), 0o060), "group-writable");
    } else {
        assert_eq!(meta.mode() & 0o777, 0o700, "private to keygate's user");
    }
    srv_a.stop();
    srv_b.stop();
}
