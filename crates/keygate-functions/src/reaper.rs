//! Processes that escape a function's process group (`setsid`, a double fork) cannot outlive
//! the host: keygate is a child subreaper (`PR_SET_CHILD_SUBREAPER`, Linux), so such orphans
//! are re-parented to keygate instead of init, and are killed and reaped here.
//!
//! An orphan is a child of keygate's process that is not a live function process (the pids in
//! [`spawn`]'s registry) and is not in keygate's own process group, or runs as another user than
//! keygate: every function process runs in a group of its own, so whatever it leaves behind is in
//! that group or in one it made itself, while children the embedding program starts with the
//! standard library stay in keygate's group and are left alone. A process that joins keygate's
//! own group (`setpgid`, possible within keygate's session) passes for one of those, unless it
//! runs as another user: as root, functions run as uids of their own, so such a process is known
//! for a function's whatever its group (issue 25, finding 9). An orphan and every process below it are SIGKILLed
//! ([`kill_orphans`]) whenever a function process stops (timeout, crash, retirement, idle) and
//! at the host's shutdown: which function an orphan came from is not known once its parent is
//! gone, so an escaped process lives at most until the host next stops a function process. The
//! host's periodic sweep only reaps orphans that have exited by themselves ([`reap_exited`]),
//! so none stays a zombie. Only orphans are ever waited for by pid: never `waitpid(-1)`, which
//! would take tokio's own children.
//!
//! Elsewhere than Linux this does nothing.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// The pids of the live function processes of every host in this process (the subreaper flag
/// is process-wide, so the registry is too).
static FUNCTIONS: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

fn functions() -> MutexGuard<'static, Option<HashSet<u32>>> {
    FUNCTIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Children of the embedding program that run in a process group of their own and are not
/// functions (keygate's DynamoDB Local): never taken for orphans.
static SPARED: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// Tells the reaper that `pid`, a child the embedding program started in a process group of
/// its own, is not a function's escaper (`spared`), or no longer needs to be told (it was
/// reaped). Without this, such a child would be killed whenever a function process stops.
pub fn spare_process(pid: u32, spared: bool) {
    let mut set = SPARED.lock().unwrap_or_else(PoisonError::into_inner);
    let set = set.get_or_insert_with(HashSet::new);
    if spared {
        set.insert(pid);
    } else {
        set.remove(&pid);
    }
}

fn is_spared(pid: u32) -> bool {
    SPARED.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|s| s.contains(&pid))
}

/// Makes this process a child subreaper, once; a failure is logged (the host still runs, and an
/// escaped process is re-parented to init as before).
pub(crate) fn enable() {
    static ENABLED: OnceLock<()> = OnceLock::new();
    ENABLED.get_or_init(|| {
        #[cfg(target_os = "linux")]
        if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(
                %err,
                "cannot make keygate a child subreaper: a function process that leaves its \
                 process group (setsid) may outlive the function"
            );
        }
    });
}

/// Spawns a function process and records its pid, under the registry's lock so that no sweep
/// sees the new child before it is known.
pub(crate) fn spawn(
    command: &mut tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let mut registry = functions();
    let child = command.spawn()?;
    if let Some(pid) = child.id() {
        registry.get_or_insert_with(HashSet::new).insert(pid);
    }
    Ok(child)
}

/// Forgets a function process once it has been waited for.
pub(crate) fn forget(pid: Option<u32>) {
    if let (Some(pid), Some(registry)) = (pid, functions().as_mut()) {
        registry.remove(&pid);
    }
}

/// SIGKILLs every orphan and every process below it, then reaps the orphans (blocking, a few
/// tens of milliseconds at most per round; call it on the blocking pool). Processes an orphan
/// starts meanwhile become orphans themselves when it dies, so this repeats until none is left
/// (a bounded number of rounds).
pub(crate) fn kill_orphans() {
    #[cfg(target_os = "linux")]
    linux::kill_orphans();
}

/// Reaps orphans that have exited by themselves (zombies), leaving live ones alone.
pub(crate) fn reap_exited() {
    #[cfg(target_os = "linux")]
    linux::reap_exited();
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::{HashMap, HashSet};
    use std::time::Duration;

    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::Pid;

    use super::functions;

    /// Rounds of [`kill_orphans`]: each takes the orphans the previous one's victims left.
    const ROUNDS: usize = 16;
    /// How long one orphan's zombie is waited for after SIGKILL (normally milliseconds).
    const REAP_TRIES: usize = 100;
    const REAP_PAUSE: Duration = Duration::from_millis(5);

    /// One process as `/proc/<pid>/stat` tells it.
    struct Stat {
        pid: i32,
        ppid: i32,
        pgrp: i32,
        /// The owner of `/proc/<pid>` (the process's effective uid); `None` if unreadable.
        uid: Option<u32>,
        zombie: bool,
    }

    fn all() -> Vec<Stat> {
        let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
        all.flatten()
            .filter_map(|p| {
                let uid = p.uid().ok();
                let s = p.stat().ok()?;
                Some(Stat { pid: s.pid, ppid: s.ppid, pgrp: s.pgrp, uid, zombie: s.state == 'Z' })
            })
            .collect()
    }

    /// The orphans among `all` (see the module documentation).
    fn orphans<'a>(all: &'a [Stat], known: Option<&HashSet<u32>>) -> Vec<&'a Stat> {
        let (me, my_group) = (Pid::this().as_raw(), nix::unistd::getpgrp().as_raw());
        let my_uid = nix::unistd::geteuid().as_raw();
        all.iter()
            .filter(|s| s.ppid == me && (s.pgrp != my_group || s.uid.is_some_and(|u| u != my_uid)))
            .filter(|s| !known.is_some_and(|k| u32::try_from(s.pid).is_ok_and(|p| k.contains(&p))))
            .filter(|s| !u32::try_from(s.pid).is_ok_and(super::is_spared))
            .collect()
    }

    pub(super) fn kill_orphans() {
        for _ in 0..ROUNDS {
            let victims: Vec<i32> = {
                // Under the registry's lock: no function process starts meanwhile.
                let registry = functions();
                let all = all();
                let orphans: Vec<i32> =
                    orphans(&all, registry.as_ref()).iter().map(|s| s.pid).collect();
                if orphans.is_empty() {
                    return;
                }
                let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
                for s in &all {
                    children.entry(s.ppid).or_default().push(s.pid);
                }
                let mut doomed = orphans.clone();
                let mut at = 0;
                while let Some(&pid) = doomed.get(at) {
                    at += 1;
                    doomed.extend(children.get(&pid).map_or(&[][..], Vec::as_slice));
                }
                for pid in doomed {
                    // ESRCH: already gone.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                orphans
            };
            tracing::debug!(count = victims.len(), "killed processes that left their function");
            for pid in victims {
                reap(pid);
            }
        }
    }

    /// Waits (briefly) for orphan `pid`, a child of this process, to be reaped.
    fn reap(pid: i32) {
        for _ in 0..REAP_TRIES {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(REAP_PAUSE),
                // Reaped, or not (any more) our child.
                _ => return,
            }
        }
    }

    pub(super) fn reap_exited() {
        let registry = functions();
        let all = all();
        for s in orphans(&all, registry.as_ref()).into_iter().filter(|s| s.zombie) {
            let _ = waitpid(Pid::from_raw(s.pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}
