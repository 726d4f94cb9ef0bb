//! The reaper of processes that leave their function's process group (security finding 7).
//!
//! The reaper is process-wide: keygate (here: this test binary) is a child subreaper, and every
//! function process that stops, in any host of the process, kills every orphan. So these tests
//! run in a binary of their own, one at a time; among the other function tests, another test's
//! function stop could kill an escaper before its test had looked at it.

#[allow(dead_code)]
#[path = "functions/common.rs"]
mod common;

use serde_json::json;
use std::time::Duration;

use common::{Service, alive, gone, invoke, spawning_spec_with};
use keygate_functions::FunctionHost;

/// Held by every test here: each stops function processes, which kills every orphan.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a hostile bootstrap leaves its process group: `setsid` in a background job (the sleeper
/// stays the function's child, in a session of its own), and a double fork (a subshell that
/// starts it and exits, so it is an orphan from the start).
const ESCAPES: [&str; 2] = [
    "setsid sleep 1000 &\necho $! > grandchild.pid",
    "(setsid sleep 1000 & echo $! > grandchild.pid) &\nwait",
];

/// Waits (10 s at most) for the escaper's pid file: the double fork writes it asynchronously.
async fn escaper(svc: &Service) -> u32 {
    let path = svc.base_dir().join("grandchild.pid");
    for _ in 0..100 {
        if let Ok(pid) = std::fs::read_to_string(&path)
            && let Ok(pid) = pid.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bootstrap did not write {}", path.display());
}

// Keygate (here: this test binary, since the flag is process-wide) is a child subreaper, so what
// leaves the group is re-parented to it, and killed with the function (security finding 7).
#[tokio::test]
async fn a_process_that_left_the_group_dies_with_its_function() {
    let _alone = ONE_AT_A_TIME.lock().await;
    for start in ESCAPES {
        let host = FunctionHost::default();
        let svc = Service::new();
        let spec = spawning_spec_with(&svc, start);
        let result = invoke(&host, &svc.f(&spec), json!({"sleep_ms": 5000})).await;
        assert!(matches!(result, Err(keygate_functions::InvokeError::Timeout)), "{result:?}");
        let sleeper = escaper(&svc).await;
        assert!(gone(sleeper).await, "{start:?}: {sleeper} survived its function's timeout");
        host.shutdown().await;
    }
}

#[tokio::test]
async fn a_process_that_left_the_group_dies_at_shutdown() {
    let _alone = ONE_AT_A_TIME.lock().await;
    for start in ESCAPES {
        let host = FunctionHost::default();
        let svc = Service::new();
        let spec = spawning_spec_with(&svc, start);
        invoke(&host, &svc.f(&spec), json!({"sleep_ms": 1})).await.unwrap();
        let sleeper = escaper(&svc).await;
        assert!(alive(sleeper), "{start:?}: the sleeper should run while its function is warm");
        host.shutdown().await;
        assert!(gone(sleeper).await, "{start:?}: {sleeper} survived the host's shutdown");
    }
}
