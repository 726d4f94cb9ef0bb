//! Several keygate nodes on one PostgreSQL database (`--database-url`): what one node's CLI
//! changes, every node serves; the usage every node counts lands in one report.
//!
//! Needs the PostgreSQL server `.ci/run` starts (or `KEYGATE_TEST_DATABASE_URL`): without one
//! these tests are skipped, except under `CI=true`, where they fail.

use std::time::Duration;

use sqlx::Connection;

use crate::support::*;

/// The server the tests use.
fn server_url() -> String {
    std::env::var("KEYGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A schema of its own on the test server, and the URL that makes it keygate's store.
async fn fresh_database() -> Option<(String, String)> {
    let url = server_url();
    let mut c = match sqlx::PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL at {url} is needed under CI=true: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no PostgreSQL at {url} ({e}); CI=true makes this a failure");
            return None;
        }
    };
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let schema = format!("keygate_e2e_{}_{nanos}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut c)
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    Some((format!("{url}{sep}options=-c%20search_path%3D{schema}"), schema))
}

/// Two nodes, each with its own data directory, share one database: a deploy and a key made
/// through one are served by both, a key disabled through the other is refused by both within
/// a second, and `keygate usage` on either shows what both admitted.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_keys_changes_and_usage() {
    let Some((url, schema)) = fresh_database().await else { return };
    let mut a = Env::new();
    a.database_url = Some(url.clone());
    let mut b = Env::new();
    b.database_url = Some(url);

    assert!(a.ok(&["migrate"]).contains("schema is up to date"));
    let report = a.deploy(&example_yml(), &[]);
    let key = Env::key_value(&report);
    let id = report["apiKeys"][0]["id"].as_str().unwrap().to_owned();
    assert!(!a.data_dir().join("keygate.db").exists(), "the store is the database, not a file");
    let node_a = a.serve();
    let node_b = b.serve();
    for node in [&node_a, &node_b] {
        let url = node.url("/dev/candidates");
        get(&url, None).await.assert_forbidden();
        assert_eq!(get(&url, Some(&key)).await.status, 200, "{url}");
    }

    // A key made through node B's CLI works on node A.
    let made =
        b.json(&["keys", "create", "--name", "from-b", "--usage-plan", "candidate-service-dev"]);
    let from_b = made["value"].as_str().unwrap().to_owned();
    let on_a = node_a.url("/dev/candidates");
    eventually(Duration::from_secs(1), || async { get(&on_a, Some(&from_b)).await.status == 200 })
        .await;

    // Disabled through B: refused by both within a second.
    b.json(&["keys", "disable", &id]);
    for node in [&node_a, &node_b] {
        let url = node.url("/dev/candidates");
        eventually(Duration::from_secs(1), || async { get(&url, Some(&key)).await.status == 403 })
            .await;
    }

    // Usage counted on both nodes, in one report.
    for _ in 0..3 {
        assert_eq!(get(&node_a.url("/dev/candidates"), Some(&from_b)).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&node_b.url("/dev/candidates"), Some(&from_b)).await.status, 200);
    }
    let key_id = made["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(5), || async {
        let usage = a.ok(&["usage", "--plan", "candidate-service-dev", "--json"]);
        used_by(&usage, &key_id) >= 6
    })
    .await;
    node_a.stop();
    node_b.stop();
    let mut c = sqlx::PgConnection::connect(&server_url()).await.unwrap();
    let drop = format!("DROP SCHEMA {schema} CASCADE");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut c).await.unwrap();
}

/// The requests a `keygate usage --json` report counts for one key, over all its days.
fn used_by(report: &str, key_id: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(report).unwrap();
    v["values"][key_id]
        .as_array()
        .map(|days| days.iter().map(|d| d[0].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}
