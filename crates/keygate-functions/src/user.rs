//! Who function processes run as, and keeping keygate's own process out of their reach.
//!
//! When keygate runs as root, functions run as an unprivileged user ([`RunAs::for_host`],
//! `nobody` unless the operator names another): a function must not read keygate's data
//! directory (`admin.key`, the store) or signal, trace or read other processes. Supplementary
//! groups are dropped too (the standard library calls `setgroups(0)` when it changes the user
//! as root). When keygate does not run as root, functions run as its user, and
//! [`protect_host_process`] keeps them from reading its memory and environment.

use std::path::Path;

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

/// The `rwx` bits (0-7) of `meta` that apply to a process of `who`'s uid and gid without
/// supplementary groups (which function processes drop): the owner's, else the group's, else
/// everyone's, as the kernel picks them. Root is not special-cased here.
pub(crate) fn permission_bits(meta: &std::fs::Metadata, who: RunAs) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    let shift = if meta.uid() == who.uid {
        6
    } else if meta.gid() == who.gid {
        3
    } else {
        0
    };
    (mode >> shift) & 0o7
}

/// Checks that `who` can reach `path` as a function process does: search permission on every
/// directory down to it, and read (and, for a directory, search) permission on it, judged as the
/// kernel judges them for that uid and gid without supplementary groups (which function
/// processes drop). The error names the first place that stops it and what to do.
///
/// Run as root, keygate runs functions as an unprivileged user; a data directory under `/root`
/// or a `mktemp -d` (mode 0700) then stops every function from starting. Deploy and serve call
/// this up front, so that this is said at once rather than as a 502 on the first request.
pub fn check_reachable(path: &Path, who: RunAs) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if who.uid == 0 {
        return Ok(());
    }
    let bits = |meta: &std::fs::Metadata| permission_bits(meta, who);
    let fix = "functions run as this unprivileged user because keygate runs as root: keep the \
               data directory (--data-dir / KEYGATE_DATA_DIR) under directories every user may \
               enter (such as /srv or /var/lib/keygate; not /root or a `mktemp -d`), let that \
               user enter them (chmod o+x), or name another user with --function-user / \
               KEYGATE_FUNCTION_USER";
    let refuse = |place: &Path, meta: &std::fs::Metadata, what: &str| {
        Err(format!(
            "the function user (uid {}, gid {}) cannot {what} {} (mode {:04o}, owner uid {}, \
             gid {}), so no function could start; {fix}",
            who.uid,
            who.gid,
            place.display(),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
        ))
    };
    let ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    for dir in ancestors.into_iter().rev() {
        let meta =
            std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if bits(&meta) & 0o1 == 0 {
            return refuse(dir, &meta, "enter the directory");
        }
    }
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let need = if meta.is_dir() { 0o5 } else { 0o4 };
    if bits(&meta) & need != need {
        let what = if meta.is_dir() { "read the directory" } else { "read the file" };
        return refuse(path, &meta, what);
    }
    Ok(())
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
    fn reachability_is_judged_on_every_directory_down_to_the_code() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("data/artifacts/abc");
        std::fs::create_dir_all(&code).unwrap();
        std::fs::write(code.join("bootstrap"), "x").unwrap();
        let stranger = RunAs { uid: 54_321, gid: 54_321 };
        // Everyone may enter and read: fine. (The temp root's own parents are /tmp and /.)
        for p in [dir.path(), &dir.path().join("data"), &dir.path().join("data/artifacts")] {
            mode(p, 0o711);
        }
        mode(&code, 0o755);
        mode(&code.join("bootstrap"), 0o644);
        assert_eq!(check_reachable(&code, stranger), Ok(()));
        assert_eq!(check_reachable(&code.join("bootstrap"), stranger), Ok(()));
        // A private parent (a `mktemp -d`): named, with the way out.
        mode(dir.path(), 0o700);
        let err = check_reachable(&code, stranger).unwrap_err();
        assert!(
            err.contains(&format!(
                "cannot enter the directory {} (mode 0700",
                dir.path().display()
            )),
            "{err}"
        );
        assert!(err.contains("uid 54321") && err.contains("--function-user"), "{err}");
        // Its owner, and root, may.
        let meta = std::fs::metadata(dir.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(check_reachable(&code, RunAs { uid: meta.uid(), gid: meta.gid() }), Ok(()));
        assert_eq!(check_reachable(&code, RunAs { uid: 0, gid: 0 }), Ok(()));
        // Code that cannot be read.
        mode(dir.path(), 0o711);
        mode(&code, 0o711);
        let err = check_reachable(&code, stranger).unwrap_err();
        assert!(err.contains("cannot read the directory"), "{err}");
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
