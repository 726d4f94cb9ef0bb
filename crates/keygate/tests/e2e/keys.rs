//! Which keys the gateway refuses, and key management from the CLI while it runs.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn refused_keys() {
    let env = Env::new();
    let yml = example_yml();
    let dev = env.deploy(&yml, &[]);
    let key = Env::key_value(&dev);
    // A prod stage with its own key (the shared declared key is reused across stages, as on AWS).
    env.deploy(&yml, &["--stage", "prod"]);
    let prod_only = env.json(&[
        "keys",
        "create",
        "--name",
        "prod-only",
        "--usage-plan",
        "candidate-service-prod",
    ]);
    let prod_value = prod_only["value"].as_str().unwrap().to_owned();
    let srv = env.serve();
    let url = srv.url("/dev/candidates");

    assert_eq!(get(&srv.url("/prod/candidates"), Some(&prod_value)).await.status, 200);
    get(&url, Some(&prod_value)).await.assert_forbidden();
    get(&url, Some("")).await.assert_forbidden();
    get(&url, Some(&"A".repeat(10 * 1024))).await.assert_forbidden();
    let mut one_off = key.clone().into_bytes();
    one_off[17] = if one_off[17] == b'a' { b'b' } else { b'a' };
    get(&url, Some(std::str::from_utf8(&one_off).unwrap())).await.assert_forbidden();
    // A key in no plan at all.
    let loose = env.json(&["keys", "create", "--name", "loose"]);
    get(&url, Some(loose["value"].as_str().unwrap())).await.assert_forbidden();
    // Header name in any case.
    let r = send(client().get(&url).header("X-API-KEY", &key)).await;
    assert_eq!(r.status, 200);

    // Disabled from the CLI while the gateway runs: refused within a second.
    let id = dev["apiKeys"][0]["id"].as_str().unwrap().to_owned();
    let k = env.json(&["keys", "disable", &id]);
    assert_eq!(k["enabled"], false);
    eventually(Duration::from_secs(1), || async { get(&url, Some(&key)).await.status == 403 })
        .await;
    get(&url, Some(&key)).await.assert_forbidden();
    env.json(&["keys", "enable", "candidate-service-api-key"]);
    eventually(Duration::from_secs(1), || async { get(&url, Some(&key)).await.status == 200 })
        .await;

    // Deleted: refused.
    env.ok(&["keys", "delete", &id]);
    eventually(Duration::from_secs(1), || async { get(&url, Some(&key)).await.status == 403 })
        .await;
    get(&url, Some(&key)).await.assert_forbidden();
    srv.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn key_management_cli() {
    let env = Env::new();
    let created = env.json(&[
        "keys",
        "create",
        "--name",
        "partner",
        "--value",
        "PartnerKey0123456789abcd",
        "--description",
        "for the partner",
        "--customer-id",
        "cust-1",
        "--disabled",
    ]);
    assert_eq!(created["value"], "PartnerKey0123456789abcd");
    assert_eq!(created["enabled"], false);
    assert_eq!(created["customerId"], "cust-1");
    assert_eq!(created["prefix"], "Part");
    let id = created["id"].as_str().unwrap();
    assert_eq!(id.len(), 10);

    // Get by id or name never shows the value.
    for who in [id, "partner"] {
        let k = env.json(&["keys", "get", who]);
        assert_eq!(k["id"], id);
        assert!(k.get("value").is_none());
    }
    let listed = env.json(&["keys", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(!serde_json::to_string(&listed).unwrap().contains("PartnerKey0123456789abcd"));

    // Generated values: 40 alphanumerics.
    let generated = env.json(&["keys", "create", "--name", "generated"]);
    let v = generated["value"].as_str().unwrap();
    assert_eq!(v.len(), 40);
    assert!(v.bytes().all(|b| b.is_ascii_alphanumeric()));

    // Bad input: clear error, exit non-zero, nothing stored, the value never echoed.
    for (args, expect) in [
        (vec!["keys", "create", "--name", "x", "--value", "short-secret!"], "letters"),
        (vec!["keys", "create", "--name", "y", "--value", "TooShortSecret"], "20 to 128"),
        (vec!["keys", "create", "--name", "partner"], "already exists"),
        (vec!["keys", "create", "--name", "dup", "--value", "PartnerKey0123456789abcd"], "unique"),
        (vec!["keys", "create", "--name", "z", "--usage-plan", "nope"], "usage plan"),
        (vec!["keys", "get", "nope"], "not found"),
        (vec!["keys", "disable", "nope"], "not found"),
    ] {
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("short-secret") && !err.contains("TooShortSecret"), "{err}");
        assert!(!err.contains("PartnerKey0123456789abcd"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one-line cause: {err}");
    }
    assert_eq!(env.json(&["keys", "list"]).as_array().unwrap().len(), 2);
    env.ok(&["keys", "delete", "partner"]);
    assert_eq!(env.json(&["keys", "list"]).as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_grace_expiry_and_last_use() {
    let env = Env::new();
    let yml = env.write(
        "serverless.yml",
        "service: rot
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys: [rot-key]
    usagePlan:
      quota: {limit: 5, period: DAY}
functions:
  mocked:
    handler: unused
    events:
      - http: {path: a, method: get, private: true, integration: mock}
",
    );
    let old = Env::key_value(&env.deploy(&yml, &[]));
    let srv = env.serve();
    let url = srv.url("/dev/a");
    assert_eq!(get(&url, Some(&old)).await.status, 200);
    assert_eq!(get(&url, Some(&old)).await.status, 200);

    // Rotate with a 3 s grace: both values pass and share one quota.
    let rotated = env.json(&["keys", "rotate", "rot-key", "--grace", "3s"]);
    let new = rotated["value"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    eventually(Duration::from_secs(1), || async { get(&url, Some(&new)).await.status == 200 })
        .await;
    assert_eq!(get(&url, Some(&old)).await.status, 200);
    assert_eq!(get(&url, Some(&new)).await.status, 200);
    // 2 + 3 = 5: the quota is used up for both values.
    assert_eq!(get(&url, Some(&old)).await.status, 429);
    assert_eq!(get(&url, Some(&new)).await.status, 429);
    // After the grace period the old value is refused.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    get(&url, Some(&old)).await.assert_forbidden();
    assert_eq!(get(&url, Some(&new)).await.status, 429, "the new value still works (over quota)");

    // lastUsedDate is recorded (within a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let k = env.json(&["keys", "get", "rot-key"]);
    let used = k["lastUsedDate"].as_str().unwrap_or_default();
    assert!(used.ends_with('Z') && used.as_bytes().get(10) == Some(&b'T'), "RFC 3339: {k}");

    // Expiry: a key past its expiry is refused; clearing it restores access.
    let exp = env.json(&[
        "keys",
        "create",
        "--name",
        "temp",
        "--usage-plan",
        "rot-dev",
        "--expires",
        "+2s",
    ]);
    let temp = exp["value"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(1), || async { get(&url, Some(&temp)).await.status == 200 })
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    get(&url, Some(&temp)).await.assert_forbidden();
    env.json(&["keys", "expire", "temp", "never"]);
    eventually(Duration::from_secs(1), || async { get(&url, Some(&temp)).await.status == 200 })
        .await;
    let out = env.run(&["keys", "expire", "temp", "next tuesday"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an expiry"));
    srv.stop();
}

#[test]
fn csv_import_from_the_cli() {
    let env = Env::new();
    // AWS's documented format: header names in any case and order, quoted lists, spaces.
    let good = env.write(
        "keys.csv",
        "key,name,description,Enabled\n\
         KeyValue0123456789abcdefghij, partner-a, first partner, TRUE\n\
         KeyValue0123456789abcdefghik,partner-b,,tRuE\n",
    );
    let out = env.json(&["keys", "import", good.to_str().unwrap()]);
    assert_eq!(out["ids"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(env.json(&["keys", "get", "partner-a"])["description"], "first partner");

    // One bad row: with --fail-on-warnings nothing is imported; without, the rest is.
    let mixed = env
        .write("mixed.csv", "Name,Key\npartner-c,KeyValue0123456789abcdefghil\npartner-d,short\n");
    let r = env.run(&["keys", "import", mixed.to_str().unwrap(), "--fail-on-warnings"]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("line 3") && !err.contains("short,"), "{err}");
    assert_eq!(env.json(&["keys", "list"]).as_array().unwrap().len(), 2);
    let out = env.json(&["keys", "import", mixed.to_str().unwrap()]);
    assert_eq!(out["ids"].as_array().unwrap().len(), 1);
    assert!(out["warnings"][0].as_str().unwrap().starts_with("line 3"), "{out}");
    // Duplicate values are refused.
    let out = env.json(&["keys", "import", good.to_str().unwrap()]);
    assert_eq!(out["ids"].as_array().unwrap().len(), 0);
    assert_eq!(out["warnings"].as_array().unwrap().len(), 2);
}

/// Issue 25, finding 7: NUL, ESC and BEL in key names and descriptions were accepted (CLI, API,
/// CSV) and printed raw by `keys list`. They are refused with a clear error.
#[test]
fn control_characters_in_key_names_and_descriptions_are_refused() {
    let env = Env::new();
    for args in [
        &["keys", "create", "--name", "red\x1b[31mkey"][..],
        &["keys", "create", "--name", "bell", "--description", "ring\x07"][..],
        &["plans", "create", "--name", "tab\tplan"][..],
    ] {
        let r = env.run(args);
        assert!(!r.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains("control character (U+00"), "{args:?}: {err}");
        assert!(!err.contains('\x1b') && !err.contains('\x07'), "echoed raw: {err:?}");
    }
    let csv = env.write(
        "keys.csv",
        "Name,Key,Description\n\
         ok,KeyValue0123456789abcdefghij,fine\n\
         nul\u{0}name,KeyValue0123456789abcdefghik,\n\
         esc,KeyValue0123456789abcdefghil,\x1b[2Jcleared\n",
    );
    let out = env.json(&["keys", "import", csv.to_str().unwrap()]);
    assert_eq!(out["ids"].as_array().unwrap().len(), 1, "{out}");
    let warnings: Vec<&str> =
        out["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert!(warnings[0].starts_with("line 3: the Name has a control character"), "{warnings:?}");
    assert!(warnings[1].starts_with("line 4: the Description has a control"), "{warnings:?}");
    let list = env.ok(&["keys", "list"]);
    assert!(list.contains(" ok ") && !list.contains("nul"), "{list}");
}

/// A mock-integration service with one declared key in a plan `rot-dev`.
fn rot_service(env: &Env) -> std::path::PathBuf {
    env.write(
        "serverless.yml",
        "service: rot
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys: [rot-key]
functions:
  mocked:
    handler: unused
    events:
      - http: {path: a, method: get, private: true, integration: mock}
",
    )
}

/// Acceptance: rotating twice with `--grace 0` refuses both older values within a second, and
/// `--grace 1h` then `--grace 0` refuses the original value too (it used to keep working).
#[tokio::test(flavor = "multi_thread")]
async fn rotating_without_grace_refuses_every_older_value() {
    let env = Env::new();
    let yml = rot_service(&env);
    let first = Env::key_value(&env.deploy(&yml, &[]));
    let srv = env.serve();
    let url = srv.url("/dev/a");
    assert_eq!(get(&url, Some(&first)).await.status, 200);

    let second = env.json(&["keys", "rotate", "rot-key", "--grace", "0"]);
    assert!(second["oldValuesWorkUntil"].is_null(), "{second}");
    let second = second["value"].as_str().unwrap().to_owned();
    let third = env.json(&["keys", "rotate", "rot-key", "--grace", "0"]);
    let third = third["value"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(1), || async {
        get(&url, Some(&first)).await.status == 403 && get(&url, Some(&second)).await.status == 403
    })
    .await;
    get(&url, Some(&first)).await.assert_forbidden();
    get(&url, Some(&second)).await.assert_forbidden();
    assert_eq!(get(&url, Some(&third)).await.status, 200);

    // A graced rotation says until when the old value works, in RFC 3339 (UTC).
    let text = env.ok(&["keys", "rotate", "rot-key", "--grace", "1h"]);
    let fourth = text.lines().find_map(|l| l.strip_prefix("value: ")).unwrap().to_owned();
    let until = text.lines().find_map(|l| l.strip_prefix("older values work until ")).unwrap();
    assert!(until.len() > 20 && until.as_bytes()[10] == b'T' && until.contains("Z ("), "{text}");
    eventually(Duration::from_secs(1), || async { get(&url, Some(&fourth)).await.status == 200 })
        .await;
    assert_eq!(get(&url, Some(&third)).await.status, 200, "in its grace period");
    // ... and `--grace 0` then ends the value still in its grace period as well.
    let fifth = env.json(&["keys", "rotate", "rot-key", "--grace", "0"]);
    let fifth = fifth["value"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(1), || async {
        get(&url, Some(&third)).await.status == 403 && get(&url, Some(&fourth)).await.status == 403
    })
    .await;
    assert_eq!(get(&url, Some(&fifth)).await.status, 200);

    // revoke-old ends older values without a new value.
    env.ok(&["keys", "rotate", "rot-key", "--grace", "1h"]);
    let out = env.ok(&["keys", "revoke-old", "rot-key"]);
    assert!(out.starts_with("ended 1 older value of API key rot-key ("), "{out}");
    eventually(Duration::from_secs(1), || async { get(&url, Some(&fifth)).await.status == 403 })
        .await;
    let out = env.ok(&["keys", "revoke-old", "rot-key"]);
    assert!(out.contains("has no older value that still works"), "{out}");
    srv.stop();
}

/// Changes print one line saying when running gateways apply them; dates are RFC 3339 in text
/// and JSON; the audit actor is the uid's name when `$USER` is unset.
#[test]
fn key_changes_print_one_line_and_dates_are_rfc3339() {
    let env = Env::new();
    let created = env.json(&["keys", "create", "--name", "k1", "--expires", "2030-01-02"]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["expires"], "2030-01-02T00:00:00Z");
    let date = created["createdDate"].as_str().unwrap();
    assert!(date.ends_with('Z') && date.as_bytes()[10] == b'T', "{created}");
    for (cmd, line) in [
        ("disable", format!("disabled API key k1 ({id}); running gateways refuse it within 1 s\n")),
        ("enable", format!("enabled API key k1 ({id}); running gateways accept it within 1 s\n")),
    ] {
        assert_eq!(env.ok(&["keys", cmd, "k1"]), line);
    }
    let text = env.ok(&["keys", "get", "k1"]);
    assert!(text.contains("expires: 2030-01-02T00:00:00Z\n"), "{text}");
    assert!(text.contains(&format!("createdDate: {date}\n")), "{text}");

    let out = env.cmd().args(["keys", "delete", "k1"]).env_remove("USER").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("deleted API key k1 ({id}); running gateways refuse it within 1 s\n")
    );
    let audit = env.json(&["audit"]);
    let last = audit.as_array().unwrap().last().unwrap().clone();
    let uid_name = std::process::Command::new("id").arg("-un").output().unwrap();
    let uid_name = String::from_utf8(uid_name.stdout).unwrap();
    assert_eq!(last["actor"], format!("cli:{}", uid_name.trim()), "{last}");
    assert!(last["time"].as_str().unwrap().ends_with('Z'), "{last}");
    let help = env.ok(&["admin", "token", "--help"]);
    assert!(!help.contains("console"), "{help}");
}

/// `keys list` shows every key by default, fetched page by page; `--limit` shows one page and
/// prints where the next starts, `--position` continues there and `--name` is a prefix.
#[test]
fn keys_list_pages_by_name() {
    let env = Env::new();
    env.ok(&["admin", "token", "create"]); // Makes the data directory.
    for i in 0..7 {
        env.ok(&["keys", "create", "--name", &format!("page-{i}")]);
    }
    env.ok(&["keys", "create", "--name", "other"]);
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&env.json(&["keys", "list"])).len(), 8);

    let mut seen = Vec::new();
    let mut position: Option<String> = None;
    loop {
        let mut args = vec!["keys", "list", "--limit", "3", "--name", "page-", "--json"];
        if let Some(p) = &position {
            args.extend(["--position", p.as_str()]);
        }
        let out = env.run(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        seen.extend(names(&serde_json::from_slice(&out.stdout).unwrap()));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        match stderr.lines().find_map(|l| l.strip_prefix("more: --position ")) {
            Some(p) => position = Some(p.trim().to_owned()),
            None => break,
        }
        assert!(seen.len() < 10, "paging does not end: {seen:?}");
    }
    assert_eq!(seen, (0..7).map(|i| format!("page-{i}")).collect::<Vec<_>>());
    let out = env.run(&["keys", "list", "--position", "not-hex"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid position"));
}

/// Generated values check themselves: the one deploy makes has keygate's form, and with one
/// character changed it is refused before any lookup (the access log says `bad_checksum`);
/// imported values of other forms work as they are. Once the store holds a value of the
/// self-checking form that is not one (an imported lookalike), every value is looked up: the
/// lookalike works, and the same typo is an unknown key.
#[tokio::test(flavor = "multi_thread")]
async fn generated_values_check_themselves_and_imported_ones_still_work() {
    let env = Env::new();
    let aws = "Sd8fJk2lQp4ZxY7uN0vB1mC3rT5wE9aH6gL8kJ2d";
    let lookalike = format!("kgk1{}", "Q".repeat(36));
    let yml = |keys: &str| {
        env.write(
            "serverless.yml",
            &format!(
                "service: sc
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys:
      - sc-generated
{keys}functions:
  mocked:
    handler: unused
    events:
      - http: {{path: a, method: get, private: true, integration: mock}}
"
            ),
        )
    };
    let imported = format!("      - {{name: sc-aws, value: {aws}}}\n");
    let report = env.deploy(&yml(&imported), &[]);
    let key = Env::key_value(&report);
    assert!(key.starts_with("kgk1") && key.len() == 40, "the generated form");
    let listed = env.ok(&["keys", "list"]);
    assert!(listed.contains(&format!("{}…", &key[..8])), "{listed}");
    let mut typo = key.clone().into_bytes();
    typo[17] = if typo[17] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();

    let srv = env.serve();
    let url = srv.url("/dev/a");
    assert_eq!(get(&url, Some(&key)).await.status, 200);
    assert_eq!(get(&url, Some(aws)).await.status, 200, "an imported AWS value works");
    get(&url, Some(&typo)).await.assert_forbidden();
    let first_log = srv.log.clone();
    srv.stop();

    // An imported value of the generated form without its checksum: looked up like any other.
    let both = format!("{imported}      - {{name: sc-look, value: {lookalike}}}\n");
    env.deploy(&yml(&both), &[]);
    let srv = env.serve();
    let url = srv.url("/dev/a");
    assert_eq!(get(&url, Some(&lookalike)).await.status, 200, "the lookalike works");
    get(&url, Some(&typo)).await.assert_forbidden();
    assert_eq!(get(&url, Some(&key)).await.status, 200);
    let log = srv.log.clone();
    srv.stop();
    let logs = std::fs::read_to_string(first_log).unwrap() + &std::fs::read_to_string(log).unwrap();
    let reasons: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("keygate::access") && l.contains("status=403"))
        .filter_map(|l| l.split("reason=").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(reasons, ["\"bad_checksum\"", "\"unknown_key\""], "{logs}");
    for secret in [key.as_str(), &typo, aws, &lookalike] {
        assert!(!logs.contains(secret), "a key value is in the logs");
    }
}

/// Traffic-aware rotation: during the grace period `keys get` shows who still sends the old
/// value; with `--retire-when-idle` a gateway retires it once no request has used it for that
/// long, and it is then refused while the new value works.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_value_shows_who_still_sends_it_and_retires_when_idle() {
    let env = Env::new();
    let yml = env.write(
        "serverless.yml",
        "service: rot
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys:
      - rot-key
functions:
  mocked:
    handler: unused
    events:
      - http: {path: a, method: get, private: true, integration: mock}
",
    );
    let old = Env::key_value(&env.deploy(&yml, &[]));
    let out = env.run(&["keys", "rotate", "rot-key", "--grace", "0", "--retire-when-idle", "5s"]);
    assert!(!out.status.success(), "no grace, nothing to retire");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--retire-when-idle needs a grace period")
    );

    let srv = env.serve();
    let url = srv.url("/dev/a");
    let rotated =
        env.json(&["keys", "rotate", "rot-key", "--grace", "1h", "--retire-when-idle", "3s"]);
    let new = rotated["value"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(2), || async { get(&url, Some(&new)).await.status == 200 })
        .await;
    // One client still sends the old value, for two seconds (never idle for 3 s).
    let by_old_client = || {
        send(client().get(&url).header("x-api-key", &old).header("user-agent", "old-client/1.0"))
    };
    let mut last_use = std::time::Instant::now();
    for _ in 0..4 {
        assert_eq!(by_old_client().await.status, 200);
        last_use = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut shown = serde_json::Value::Null;
    eventually(Duration::from_secs(2), || {
        shown = env.json(&["keys", "get", "rot-key"]);
        std::future::ready(shown["oldValues"][0]["clients"][0]["requests"] == 4)
    })
    .await;
    let client = &shown["oldValues"][0]["clients"][0];
    assert_eq!(
        (&client["client"], &client["userAgent"]),
        (&"127.0.0.1".into(), &"old-client/1.0".into()),
        "{shown}"
    );
    assert_eq!(shown["oldValues"][0]["retireWhenIdleSeconds"], 3, "{shown}");
    assert_eq!(shown["oldValues"][0]["prefix"], serde_json::json!(&old[..8]), "{shown}");
    let text = env.ok(&["keys", "get", "rot-key"]);
    assert!(text.contains("still sent by 127.0.0.1  old-client/1.0: 4 request(s)"), "{text}");
    assert!(text.contains("or once unused for 3 s"), "{text}");

    // Idle from now on (asking with the old value would be a use): retired within its 3 s (and
    // a check a second), then refused by the gateway.
    eventually(Duration::from_secs(8), || {
        std::future::ready(env.json(&["keys", "get", "rot-key"]).get("oldValues").is_none())
    })
    .await;
    // Uses are kept to the second: idle for 3 s means at least 2 s after the last request.
    let idle = last_use.elapsed();
    assert!(idle >= Duration::from_secs(2), "retired {idle:?} after its last use");
    eventually(Duration::from_secs(2), || async { get(&url, Some(&old)).await.status == 403 })
        .await;
    get(&url, Some(&old)).await.assert_forbidden();
    assert_eq!(get(&url, Some(&new)).await.status, 200, "the new value works");
    let audit = env.ok(&["audit"]);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("keygate:serve") && l.contains("RetireIdleOldApiKeyValues")),
        "{audit}"
    );
    let after = env.json(&["keys", "get", "rot-key"]);
    assert!(after.get("oldValues").is_none(), "{after}");
    srv.stop();
}
