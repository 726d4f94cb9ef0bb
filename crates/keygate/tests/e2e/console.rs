//! The web console in a real browser: Debian's Chromium driven by `playwright-core` runs
//! `console/browser.cjs` against a keygate serving the candidate-service (sign in, create a key
//! and read its value once, the key gets 200 on the private route, disable it -> 403 within a
//! second, delete it; a plan with a 3/DAY quota and a key in it -> the fourth request
//! gets 429 and the usage chart shows 3 used; import a CSV with a bad row -> the
//! warning names its line; a key's page adds it to a plan, sets an expiry, rotates it; switch off "API key required" on `GET /candidates`, see the
//! undeployed-changes banner, deploy -> the route answers without a key; the audit log, sign out; screenshots at 1440 and 375 px under
//! `target/console-screenshots/`). Over plain HTTP: the console is not on the traffic listener.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// The version of `playwright-core` the browser test drives Chromium with.
const PLAYWRIGHT: &str = "playwright-core@1.65.2";

const CHROMIUM: &str = "/usr/bin/chromium";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_is_not_served_on_the_traffic_listener() {
    let env = Env::new();
    env.deploy(&example_yml(), &[]);
    let srv = env.serve();
    for path in ["/", "/console/keys", "/console/signin", "/console/assets/console.js"] {
        let r = get(&srv.url(path), None).await;
        assert!(r.status == 403 || r.status == 404, "{path}: {r:?}");
        assert!(!r.body.contains("<html"), "{path}: {r:?}");
    }
    let r = get(&format!("{}/console/signin", srv.admin), None).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_steps_in_a_real_browser() {
    if !Path::new(CHROMIUM).exists() {
        assert!(!ci(), "{CHROMIUM} is missing: apt-get install -y chromium");
        eprintln!("skipped: {CHROMIUM} is missing (apt-get install -y chromium)");
        return;
    }
    let modules = node_modules(&[PLAYWRIGHT]);
    let env = Env::new();
    env.deploy(&example_yml(), &[]);
    // The usage plan the example's deploy makes for its `provider.apiKeys` (stage dev).
    let plan = "candidate-service-dev";
    let token =
        env.json(&["admin", "token", "create"])["token"].as_str().expect("a token").to_owned();
    let srv = env.serve();
    let shots = bin_dir().join("../console-screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/console/browser.cjs");
    let out = Command::new("node")
        .arg(&script)
        .env("PLAYWRIGHT", modules.join("playwright-core"))
        .env("CHROMIUM", CHROMIUM)
        .env("CONSOLE", &srv.admin)
        .env("TRAFFIC", &srv.base)
        .env("TOKEN", &token)
        .env("SHOTS", PathBuf::from(&shots))
        .env("PLAN", plan)
        .output()
        .expect("node is needed for the browser test (apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\nkeygate's log:\n{}",
        srv.logs()
    );
    assert!(stdout.contains(r#"{"ok":true}"#), "{stdout}");
    for page in [
        "signin",
        "keys",
        "key-new",
        "key-created",
        "key-delete",
        "plan-new",
        "plan",
        "usage",
        "apis",
        "api",
        "audit",
    ] {
        for width in [1440, 375] {
            let shot = shots.join(format!("{page}-{width}.png"));
            assert!(shot.exists(), "no screenshot {}", shot.display());
        }
    }
}
