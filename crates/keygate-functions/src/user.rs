//! Who function processes run as, and keeping keygate's own process out of their reach.
//!
//! When keygate runs as root, functions run as an unprivileged user ([`RunAs::for_host`],
//! `nobody` unless the operator names another): a function must not read keygate's data
//! directory (`admin.key`, the store) or signal, trace or read other processes. Supplementary
//! groups are dropped too (the standard library calls `setgroups(0)` when it changes the user
//! as root). When keygate does not run as root, functions run as its user, and
//! [`protect_host_process`] keeps them from reading its memory and environment.

use nix::unistd::{Gid, Group, Uid, User};

/// The user and group a function process runs as (`HostOptions::run_as`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Why a function user cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunAsError {
    #[error("function user {spec:?}: no such user; give a user name or a numeric UID[:GID]")]
    NoSuchUser { spec: String },
    #[error("function user {spec:?}: no such group; give a group name or a numeric GID")]
    NoSuchGroup { spec: String },
    #[error("function user {spec:?}: cannot read the user database: {message}")]
    Lookup { spec: String, message: String },
    #[error(
        "function user {spec:?}: running functions as another user needs keygate to run as root \
         (it runs as uid {uid}); drop --function-user / KEYGATE_FUNCTION_USER"
    )]
    NeedsRoot { spec: String, uid: u32 },
}

/// The user functions run as when keygate runs as root and none is named.
pub const DEFAULT_FUNCTION_USER: &str = "nobody";

impl RunAs {
    /// Parses `NAME`, `UID`, `NAME:GROUP` or `UID:GID`. A name is looked up in the user database
    /// (NSS); the group defaults to the user's primary group, or to the UID for a numeric user
    /// with no entry.
    pub fn resolve(spec: &str) -> Result<Self, RunAsError> {
        let lookup =
            |e: nix::Error| RunAsError::Lookup { spec: spec.to_owned(), message: e.to_string() };
        let (user, group) = match spec.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (spec, None),
        };
        let (uid, primary_gid) = match user.parse::<u32>() {
            Ok(uid) => {
                let entry = User::from_uid(Uid::from_raw(uid)).map_err(lookup)?;
                (uid, entry.map_or(uid, |u| u.gid.as_raw()))
            }
            Err(_) => match User::from_name(user).map_err(lookup)? {
                Some(u) => (u.uid.as_raw(), u.gid.as_raw()),
                None => return Err(RunAsError::NoSuchUser { spec: spec.to_owned() }),
            },
        };
        let gid = match group {
            None => primary_gid,
            Some(group) => match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => match Group::from_name(group).map_err(lookup)? {
                    Some(g) => g.gid.as_raw(),
                    None => return Err(RunAsError::NoSuchGroup { spec: spec.to_owned() }),
                },
            },
        };
        Ok(Self { uid, gid })
    }

    /// The user functions run as, given the one the operator named (`--function-user`): as root,
    /// that one or [`DEFAULT_FUNCTION_USER`]; otherwise keygate's own user (`None`: no change),
    /// and naming another one is an error, since only root may switch users.
    pub fn for_host(requested: Option<&str>) -> Result<Option<Self>, RunAsError> {
        let euid = Uid::effective();
        if euid.is_root() {
            return Self::resolve(requested.unwrap_or(DEFAULT_FUNCTION_USER)).map(Some);
        }
        let Some(spec) = requested else { return Ok(None) };
        let wanted = Self::resolve(spec)?;
        if wanted.uid == euid.as_raw() && wanted.gid == Gid::effective().as_raw() {
            return Ok(None);
        }
        Err(RunAsError::NeedsRoot { spec: spec.to_owned(), uid: euid.as_raw() })
    }
}

/// Makes this process non-dumpable (`PR_SET_DUMPABLE` 0): processes of the same user, such as
/// functions when keygate does not run as root, can then neither read its memory and
/// `/proc/<pid>/environ` (where `KEYGATE_MASTER_KEY` may be) nor trace it. Core dumps are off
/// too. Linux only; elsewhere it does nothing.
pub fn protect_host_process() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_resolve_by_name_and_number() {
        let root = RunAs::resolve("root").unwrap();
        assert_eq!(root, RunAs { uid: 0, gid: 0 });
        assert_eq!(RunAs::resolve("0").unwrap(), root);
        assert_eq!(RunAs::resolve("1234:5678").unwrap(), RunAs { uid: 1234, gid: 5678 });
        // A numeric user without an entry gets its own number as group.
        assert_eq!(RunAs::resolve("4000000").unwrap(), RunAs { uid: 4_000_000, gid: 4_000_000 });
        assert_eq!(RunAs::resolve("root:0").unwrap(), root);
        assert!(matches!(RunAs::resolve("no-such-user-here"), Err(RunAsError::NoSuchUser { .. })));
        assert!(matches!(
            RunAs::resolve("root:no-such-group-here"),
            Err(RunAsError::NoSuchGroup { .. })
        ));
    }

    #[test]
    fn as_root_functions_default_to_nobody_and_otherwise_to_keygates_user() {
        let chosen = RunAs::for_host(None).unwrap();
        if Uid::effective().is_root() {
            let nobody = RunAs::resolve(DEFAULT_FUNCTION_USER).unwrap();
            assert_eq!(chosen, Some(nobody));
            assert_ne!(nobody.uid, 0);
            assert_eq!(RunAs::for_host(Some("1234")).unwrap().map(|r| r.uid), Some(1234));
        } else {
            assert_eq!(chosen, None);
            assert!(matches!(RunAs::for_host(Some("0")), Err(RunAsError::NeedsRoot { .. })));
        }
    }
}
