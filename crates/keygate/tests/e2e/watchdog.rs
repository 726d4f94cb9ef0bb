//! Function processes do not outlive keygate, stopped or SIGKILLed: its watchdog kills their
//! process groups and, run as root, every process in keygate's cgroup, where a process that
//! left its group (`setsid`, `setpgid` into keygate's own group) still is (issue 12, finding 7).

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

/// A warm function whose bootstrap leaves processes behind: a plain `sleep` in the function's
/// group and, when `escape` is set, one in a session of its own and one that joined keygate's
/// process group. Returns the server and every pid that must not outlive it.
async fn function_with_children(env: &Env, escape: bool) -> (Server, Vec<(&'static str, u32)>) {
    use std::os::unix::fs::PermissionsExt;
    // `pids/` is writable by the function's user (a uid of its own when the tests run as root).
    let pids = env.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    std::fs::set_permissions(&pids, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pid_file = |name: &str| pids.join(format!("{name}.pid"));
    let escapes = format!(
        "setsid sh -c 'echo $$ > \"{session}\"; exec sleep 1000' &\n\
         python3 -c 'import os, sys, time\n\
         os.setpgid(0, os.getpgid(int(sys.argv[1])))\n\
         open(sys.argv[2], \"w\").write(str(os.getpid()))\n\
         time.sleep(1000)' $PPID '{joined}' &\n",
        session = pid_file("session").display(),
        joined = pid_file("joined").display(),
    );
    // A copy the function user can run: the checkout may sit where `nobody` cannot go (CI clones
    // into a `mktemp -d`).
    let testfn = env.path().join("keygate-testfn");
    std::fs::copy(workspace_bin("keygate-testfn"), &testfn).unwrap();
    std::fs::set_permissions(&testfn, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bootstrap = env.write(
        "bootstrap",
        &format!(
            "#!/bin/sh\nsleep 1000 &\necho $! > '{}'\n{}echo $$ > '{}'\nexec '{}'\n",
            pid_file("sleeper").display(),
            if escape { escapes.as_str() } else { "" },
            pid_file("function").display(),
            testfn.display()
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
    let mut pids = Vec::new();
    let names: &[&'static str] = if escape {
        &["sleeper", "function", "session", "joined"]
    } else {
        &["sleeper", "function"]
    };
    for &name in names {
        let pid = pid_in(&pid_file(name)).await;
        assert!(alive(pid), "the {name} process should run while the function is warm");
        pids.push((name, pid));
    }
    (srv, pids)
}

/// Waits (10 s at most) for every process in `pids` to end, then kills and names the others.
async fn assert_all_gone(mut pids: Vec<(&'static str, u32)>, logs: &str) {
    for _ in 0..100 {
        pids.retain(|&(_, pid)| alive(pid));
        if pids.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing else stops them when the assertion fails.
    for &(_, pid) in &pids {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    panic!("processes {pids:?} outlived keygate\n{logs}");
}

/// Whether keygate can confine its functions in a cgroup here: as root with cgroup v2. CI runs
/// as root, so there a missing cgroup fails the tests that need it.
fn cgroups_expected() -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root || std::env::var("CI").is_ok_and(|v| v == "true")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_keygate_takes_its_function_processes_with_it() {
    let env = Env::new();
    let (srv, pids) = function_with_children(&env, false).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &srv.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_all_gone(pids, &srv.logs()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_that_left_the_function_group_die_with_a_sigkilled_keygate() {
    if !cgroups_expected() {
        eprintln!("skipped: not root, keygate cannot make a cgroup");
        return;
    }
    let env = Env::new();
    let (srv, pids) = function_with_children(&env, true).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &srv.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_all_gone(pids, &srv.logs()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_that_left_the_function_group_die_with_a_stopped_keygate() {
    if !cgroups_expected() {
        eprintln!("skipped: not root, keygate cannot make a cgroup");
        return;
    }
    let env = Env::new();
    let (srv, pids) = function_with_children(&env, true).await;
    let (pid, log) = (srv.pid(), srv.log.clone());
    // Exits 0: keygate left its cgroup before the watchdog killed what was in it.
    srv.stop();
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert_all_gone(pids, &logs).await;
    let leftover = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" - ").filter(|(_, fs)| fs.starts_with("cgroup2 ")))
        .filter_map(|(m, _)| m.split(' ').nth(4).map(std::path::PathBuf::from))
        .flat_map(|mount| walk(&mount))
        .find(|dir| dir.file_name().is_some_and(|n| n == format!("keygate-{pid}").as_str()));
    assert_eq!(leftover, None, "the watchdog removes keygate's cgroup\n{logs}");
}

/// Every directory under `dir` (a cgroup tree: a few levels).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = vec![dir.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.extend(walk(&entry.path()));
            }
        }
    }
    found
}
