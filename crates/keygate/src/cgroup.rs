//! keygate's own cgroup (v2): the boundary no function process can leave.
//!
//! A process group is a courtesy: a function may `setsid`, double-fork, or `setpgid` into
//! keygate's own group, and then neither the function host (which kills the function's group)
//! nor the watchdog (which kills the groups it was told of) can find it. A cgroup is where the
//! kernel keeps every descendant, whatever it does with sessions and groups, and moving out of
//! one needs write access to the `cgroup.procs` of a common ancestor, which root owns: a function
//! run as `nobody` stays in.
//!
//! So a server (`serve`, `up`) run as root makes a child cgroup `keygate-<pid>` of the one it
//! was started in and moves itself in ([`Cgroup::enter`]) after starting the watchdog, which stays
//! outside. Every function process is then born inside. The watchdog is told the directory; when
//! keygate's pipe ends it kills every process in the cgroup ([`kill_all`]) and removes it. On a
//! graceful shutdown keygate first moves itself back out ([`Cgroup::leave`]); if it cannot, the
//! watchdog spares keygate's pid and kills the rest one by one.
//!
//! Without cgroup v2, or without the right to make a cgroup (keygate not run as root), keygate
//! serves on with process groups only and says so once: its functions then run as keygate's own
//! user and could do anything keygate can anyway.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The prefix of the cgroups keygate makes; the rest is keygate's pid.
pub(crate) const PREFIX: &str = "keygate-";

/// How long [`remove`] waits for the killed processes to leave the cgroup.
const REMOVE_WAIT: Duration = Duration::from_secs(3);

/// keygate's cgroup, which it is in.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
    parent: PathBuf,
}

impl Cgroup {
    /// Makes `keygate-<pid>` under the cgroup this process was started in and moves this
    /// process (every thread of it) in.
    pub(crate) fn enter() -> io::Result<Cgroup> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let membership = std::fs::read_to_string("/proc/self/cgroup")?;
        let parent = own_cgroup_dir(&mountinfo, &membership).ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "no cgroup v2 hierarchy is mounted")
        })?;
        remove_stale(&parent);
        let pid = std::process::id();
        let dir = parent.join(format!("{PREFIX}{pid}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // A leftover of an earlier process with this pid (its watchdog was killed too).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_dir(&dir)?;
                std::fs::create_dir(&dir)?;
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(Cgroup { dir, parent })
    }

    /// The cgroup's directory (for the watchdog).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves this process back to the cgroup it was started in, so that killing the cgroup
    /// kills only what keygate leaves behind.
    pub(crate) fn leave(&self) -> io::Result<()> {
        std::fs::write(self.parent.join("cgroup.procs"), std::process::id().to_string())
    }
}

/// The directory of this process's cgroup v2, from `/proc/self/mountinfo` and
/// `/proc/self/cgroup`: the cgroup2 mount point joined with the `0::` path (relative to the
/// mount's root, which is `/` unless a subtree was bind-mounted).
fn own_cgroup_dir(mountinfo: &str, membership: &str) -> Option<PathBuf> {
    let own = membership.lines().find_map(|line| line.strip_prefix("0::"))?;
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split(' ').next() != Some("cgroup2") {
            return None;
        }
        // id parent major:minor root mount-point ...
        let mut fields = mount.split(' ').skip(3);
        let (root, point) = (fields.next()?, fields.next()?);
        let relative = if root == "/" { own } else { own.strip_prefix(root)? };
        if !(relative.is_empty() || relative.starts_with('/')) {
            return None;
        }
        let relative = relative.trim_start_matches('/');
        // The kernel escapes blanks in mount points as octal; such a mount is not ours to parse.
        if point.contains('\\') || relative.split('/').any(|part| part == "..") {
            return None;
        }
        Some(Path::new(point).join(relative))
    })
}

/// Removes the empty `keygate-<pid>` cgroups of processes that are gone (a keygate whose
/// watchdog was killed with it). A populated one stays: `rmdir` refuses it.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Whether `dir` looks like a cgroup keygate made: the watchdog acts on nothing else.
pub(crate) fn is_keygate_cgroup(dir: &Path) -> bool {
    dir.is_absolute()
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(PREFIX))
            .is_some_and(|pid| pid.parse::<u32>().is_ok())
        && dir.join("cgroup.procs").is_file()
}

/// The pids in the cgroup.
fn members(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs every process in the cgroup but `spare` (keygate itself, when it could not leave).
/// With nothing to spare the kernel does it at once (`cgroup.kill`, Linux 5.14), which no
/// forking process can race; otherwise, or on an older kernel, the members are frozen
/// (`cgroup.freeze`, so none forks meanwhile) and killed one by one, in a few bounded rounds.
pub(crate) fn kill_all(dir: &Path, spare: Option<i32>) {
    let spared = |pid: &i32| Some(*pid) == spare;
    if !members(dir).iter().any(spared) && std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    // Freezing keygate would stop the shutdown: only without it in the cgroup.
    let frozen = spare.is_none() && std::fs::write(dir.join("cgroup.freeze"), "1").is_ok();
    for _ in 0..20 {
        let targets: Vec<i32> = members(dir).into_iter().filter(|p| !spared(p)).collect();
        if targets.is_empty() {
            break;
        }
        for pid in targets {
            // SIGKILL ends a frozen process too.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if frozen {
        let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    }
}

/// Removes the cgroup once its killed members have left it (bounded wait); `false` if it is
/// still there.
pub(crate) fn remove(dir: &Path) -> bool {
    for _ in 0..REMOVE_WAIT.as_millis() / 20 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_dir_joins_the_mount_point_and_the_membership() {
        let unified = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let v1 = "40 31 0:37 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let info = format!("{v1}{unified}");
        assert_eq!(
            own_cgroup_dir(&info, "12:pids:/\n0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            own_cgroup_dir(&info, "0::/system.slice/keygate.service\n"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/system.slice/keygate.service"))
        );
        let bound = "50 31 0:38 /system.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup_dir(bound, "0::/system.slice/a.service\n"),
            Some(PathBuf::from("/sys/fs/cgroup/a.service"))
        );
        // No v2 mount, no v2 membership, a path outside the bind-mounted root: nothing.
        assert_eq!(own_cgroup_dir(v1, "0::/\n"), None);
        assert_eq!(own_cgroup_dir(unified, "12:pids:/\n"), None);
        assert_eq!(own_cgroup_dir(bound, "0::/user.slice\n"), None);
        assert_eq!(own_cgroup_dir(bound, "0::/system.slicex\n"), None);
        assert_eq!(own_cgroup_dir(unified, "0::/a/../b\n"), None);
    }

    #[test]
    fn the_watchdog_acts_only_on_keygate_cgroups() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join("keygate-12");
        std::fs::create_dir(&fake).unwrap();
        assert!(!is_keygate_cgroup(&fake), "no cgroup.procs: not a cgroup");
        std::fs::write(fake.join("cgroup.procs"), "").unwrap();
        assert!(is_keygate_cgroup(&fake));
        for other in ["/", "relative/keygate-12", "/sys/fs/cgroup/keygate-x", "/sys/fs/cgroup"] {
            assert!(!is_keygate_cgroup(Path::new(other)), "{other}");
        }
    }
}
