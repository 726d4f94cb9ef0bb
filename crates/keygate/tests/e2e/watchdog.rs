//! Function processes do not outlive a keygate that is SIGKILLed: its watchdog kills their
//! process groups (issue 12, finding 7).

use std::time::Duration;

use crate::support::*;

/// Whether `pid` is a live process (a zombie, which only waits to be reaped, is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (10 s at most) for the pid file `path` and reads it.
async fn pid_in(path: &std::path::Path) -> u32 {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} was not written", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_keygate_takes_its_function_processes_with_it() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    // `db/` is writable by the function's user (`nobody` when the tests run as root).
    let (sleeper_file, function_file) =
        (env.path().join("db/sleeper.pid"), env.path().join("db/function.pid"));
    let bootstrap = env.write(
        "bootstrap",
        &format!(
            "#!/bin/sh\nsleep 1000 &\necho $! > '{}'\necho $$ > '{}'\nexec '{}'\n",
            sleeper_file.display(),
            function_file.display(),
            workspace_bin("keygate-testfn").display()
        ),
    );
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
    let yml = env.write(
        "serverless.yml",
        &format!(
            "service: wd\nprovider: {{name: aws, runtime: provided.al2023}}\nfunctions:\n  \
             echo:\n    handler: echo\n    package: {{artifact: {}}}\n    events: [{{http: GET \
             open}}]\n",
            bootstrap.display()
        ),
    );
    env.deploy(&yml, &[]);
    let srv = env.serve();
    let r = get(&srv.url("/dev/open"), None).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", srv.logs());
    let (sleeper, function) = (pid_in(&sleeper_file).await, pid_in(&function_file).await);
    assert!(alive(sleeper) && alive(function), "the function should run while warm");

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &srv.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut left = vec![sleeper, function];
    for _ in 0..100 {
        left.retain(|&pid| alive(pid));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing else stops them when the assertion fails.
    for &pid in &left {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    assert!(
        left.is_empty(),
        "processes {left:?} (sleeper {sleeper}, function {function}) outlived keygate\n{}",
        srv.logs()
    );
}
