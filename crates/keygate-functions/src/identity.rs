//! Which uid and gid each function's processes get ([`FunctionUsers`]).
//!
//! Processes of one uid may trace each other, read each other's memory and take each other's
//! file descriptors (`ptrace`, `pidfd_getfd`): a function sharing a uid with another could take
//! over its Runtime API connection, read its events (with the caller's API key) and forge its
//! answers. So when keygate runs as root, every function gets a uid of its own and every service
//! stage a gid of its own, both taken from a range no account uses (by default systemd's range
//! for dynamic users, 61184-65519), as systemd's `DynamicUser=` does. The gid lets the functions
//! of one service share their state directory; their processes stay apart.
//!
//! An id is leased: a lock file per id under [`IdRange::lock_dir`] (`/run/keygate/ids`), held
//! (`flock`) for as long as this keygate runs, so two keygates on one machine never hand out
//! the same id. Ids that the user or group database knows are skipped. A name starts its search
//! at a hash of itself, so a function usually gets the same uid across restarts.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use nix::unistd::{Gid, Group, Uid, User};

use crate::user::{RunAs, RunAsError};

/// The first and last id of systemd's range for dynamic users (`DynamicUser=`), which account
/// managers leave free.
pub const DEFAULT_ID_RANGE: (u32, u32) = (61_184, 65_519);

/// Who function processes run as (`HostOptions::users`).
#[derive(Debug, Clone, Default)]
pub enum FunctionUsers {
    /// keygate's own user: it does not run as root, so it cannot switch users.
    #[default]
    Own,
    /// One user for every function (`--function-user`): functions can reach each other's
    /// processes.
    Shared(RunAs),
    /// As root: a uid per function and a gid per service stage, leased from a range.
    PerFunction(IdRange),
}

impl FunctionUsers {
    /// What keygate does when `requested` (`--function-user`) is or is not given: as root, that
    /// user for all functions, or by default an identity per function from `range`; otherwise
    /// keygate's own user (naming another is then an error, see [`RunAs::for_host`]).
    pub fn for_host(requested: Option<&str>, range: IdRange) -> Result<Self, RunAsError> {
        if requested.is_none() && Uid::effective().is_root() {
            return Ok(Self::PerFunction(range));
        }
        Ok(RunAs::for_host(requested)?.map_or(Self::Own, Self::Shared))
    }

    /// A user whose access to files is any function's (the shared one, or an id of the range,
    /// which owns no file), to check up front that functions can reach their code. `None`:
    /// functions run as keygate's user.
    pub fn probe(&self) -> Option<RunAs> {
        match self {
            Self::Own => None,
            Self::Shared(who) => Some(*who),
            Self::PerFunction(range) => Some(RunAs { uid: range.first, gid: range.first }),
        }
    }
}

/// A range of ids to lease uids and gids from, and where the leases are recorded.
/// Clones share their leases.
#[derive(Debug, Clone)]
pub struct IdRange {
    first: u32,
    last: u32,
    lock_dir: PathBuf,
    leases: Arc<Mutex<HashMap<String, Lease>>>,
}

#[derive(Debug)]
struct Lease {
    id: u32,
    /// Holds the id's lock for as long as keygate runs.
    _lock: File,
}

impl Default for IdRange {
    /// [`DEFAULT_ID_RANGE`], leases in [`Self::default_lock_dir`].
    fn default() -> Self {
        let (first, last) = DEFAULT_ID_RANGE;
        Self { first, last, lock_dir: Self::default_lock_dir(), leases: Arc::default() }
    }
}

impl IdRange {
    /// `first..=last`, with the leases recorded in `lock_dir` (made 0700 on first need).
    pub fn new(first: u32, last: u32, lock_dir: PathBuf) -> Result<Self, String> {
        if first == 0 || first > last {
            return Err(format!(
                "function id range {first}-{last}: give FIRST-LAST with 0 < FIRST <= LAST"
            ));
        }
        Ok(Self { first, last, lock_dir, leases: Arc::default() })
    }

    /// `FIRST-LAST` (`--function-ids`), leases in [`Self::default_lock_dir`].
    pub fn parse(spec: &str) -> Result<Self, String> {
        let bad = || format!("function id range {spec:?}: give FIRST-LAST, such as 61184-65519");
        let (first, last) = spec.split_once('-').ok_or_else(bad)?;
        let first = first.trim().parse().map_err(|_| bad())?;
        let last = last.trim().parse().map_err(|_| bad())?;
        Self::new(first, last, Self::default_lock_dir())
    }

    /// `/run/keygate/ids`, or under the temporary directory where there is no `/run`.
    pub fn default_lock_dir() -> PathBuf {
        let run = std::path::Path::new("/run");
        let base = if run.is_dir() { run.to_path_buf() } else { std::env::temp_dir() };
        base.join("keygate").join("ids")
    }

    /// The first and last id.
    pub fn bounds(&self) -> (u32, u32) {
        (self.first, self.last)
    }

    /// The identity of function `function` (its unique name) of service stage `group`: a uid of
    /// its own and the stage's gid, each leased on first need and kept. `group_had` is the gid
    /// the stage's files already have (its state directory's), taken again when it is free, so
    /// that they stay the group's across restarts.
    pub(crate) fn identity(
        &self,
        function: &str,
        group: &str,
        group_had: Option<u32>,
    ) -> std::io::Result<RunAs> {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        let gid = self.lease(&mut leases, &format!("group {group}"), group_had)?;
        let uid = self.lease(&mut leases, &format!("function {function}"), None)?;
        Ok(RunAs { uid, gid })
    }

    fn lease(
        &self,
        leases: &mut HashMap<String, Lease>,
        name: &str,
        preferred: Option<u32>,
    ) -> std::io::Result<u32> {
        if let Some(lease) = leases.get(name) {
            return Ok(lease.id);
        }
        make_private_dir(&self.lock_dir)?;
        let size = u64::from(self.last - self.first) + 1;
        let start = fnv1a(name.as_bytes()) % size;
        let preferred = preferred.filter(|id| (self.first..=self.last).contains(id));
        let candidates =
            (0..size).map(|step| self.first + u32::try_from((start + step) % size).unwrap_or(0));
        for id in preferred.into_iter().chain(candidates) {
            if leases.values().any(|l| l.id == id) || known_to_the_system(id) {
                continue;
            }
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.lock_dir.join(id.to_string()))?;
            if lock.try_lock().is_ok() {
                leases.insert(name.to_owned(), Lease { id, _lock: lock });
                return Ok(id);
            }
        }
        Err(std::io::Error::other(format!(
            "every id of the function id range {}-{} is in use (by accounts, or by other \
             keygates on this machine); give a larger one with --function-ids",
            self.first, self.last
        )))
    }
}

/// Whether the user or group database has an entry for `id` (an account, not ours to lease).
fn known_to_the_system(id: u32) -> bool {
    !matches!(User::from_uid(Uid::from_raw(id)), Ok(None))
        || !matches!(Group::from_gid(Gid::from_raw(id)), Ok(None))
}

fn make_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases, so the same name starts
/// its search at the same id after an upgrade.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u32, last: u32, dir: &std::path::Path) -> IdRange {
        IdRange::new(first, last, dir.join("ids")).unwrap()
    }

    #[test]
    fn every_function_gets_its_own_uid_and_a_service_stage_one_gid() {
        let dir = tempfile::tempdir().unwrap();
        let ids = range(3_000_000_000, 3_000_000_099, dir.path());
        let a = ids.identity("svc-dev-a", "svc/dev", None).unwrap();
        let b = ids.identity("svc-dev-b", "svc/dev", None).unwrap();
        let c = ids.identity("other-dev-a", "other/dev", None).unwrap();
        assert_ne!(a.uid, b.uid);
        assert_eq!(a.gid, b.gid, "one service stage, one group");
        assert_ne!(a.gid, c.gid);
        let all = [a.uid, b.uid, c.uid, a.gid, c.gid];
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "uids and gids never collide: {all:?}");
        assert!(all.iter().all(|id| (3_000_000_000..=3_000_000_099).contains(id)));
        // Asked again, the same.
        assert_eq!(ids.identity("svc-dev-a", "svc/dev", None).unwrap(), a);
        // A stage whose files have a free gid of the range keeps it; one outside is not taken.
        let free = (3_000_000_000..).find(|id| !all.contains(id)).unwrap();
        let kept = ids.identity("third-dev-a", "third/dev", Some(free)).unwrap();
        assert_eq!(kept.gid, free);
        let outside = ids.identity("fourth-dev-a", "fourth/dev", Some(0)).unwrap();
        assert_ne!(outside.gid, 0);
    }

    #[test]
    fn two_keygates_never_lease_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        // Two hosts on one lock directory, three ids between them.
        let one = range(3_000_000_000, 3_000_000_002, dir.path());
        let two = range(3_000_000_000, 3_000_000_002, dir.path());
        let a = one.identity("svc-dev-a", "svc/dev", None).unwrap();
        let b = two.identity("svc-dev-a", "svc/dev", None).unwrap_err();
        assert!(b.to_string().contains("--function-ids"), "{b}");
        let c = two.identity("x", "x", None).unwrap_err();
        assert!(c.to_string().contains("in use"), "only one id was left: {c}");
        let taken = [a.uid, a.gid];
        drop(one);
        // The first host's ids are free again once it is gone.
        let d = two.identity("svc-dev-a", "svc/dev", None).unwrap();
        assert!(taken.contains(&d.uid), "{d:?} {taken:?}");
    }

    #[test]
    fn ids_of_accounts_are_skipped_and_ranges_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        // 0 is root's: never leased, even when it is all the range has.
        assert!(IdRange::new(0, 10, dir.path().into()).is_err());
        // 65534 is `nobody` / `nogroup` on Debian: an account's id is never leased.
        let accounts = range(65_534, 65_534, dir.path());
        if known_to_the_system(65_534) {
            assert!(accounts.identity("f", "g", None).is_err());
        }
        assert!(IdRange::parse("100-50").is_err());
        assert!(IdRange::parse("61184").is_err());
        assert_eq!(IdRange::parse(" 61184-65519").unwrap().bounds(), DEFAULT_ID_RANGE);
    }
}
