//! File modes of keygate's state: other local users must not read it.
//!
//! The data directory is `0711`: other users may pass through it (function processes running
//! as another user reach the world-readable `artifacts/` tree under it) but not list it or read
//! what it holds unless a file says so. The database (`keygate.db`, and the `-wal` and `-shm`
//! files SQLite creates with the database file's mode) and `admin.key` are `0600`. Modes are set
//! explicitly, whatever the umask; an existing directory or file with looser modes is tightened
//! at start, with a warning in the log.

use std::io;
use std::path::Path;

/// Mode of a data directory keygate creates.
pub const DATA_DIR_MODE: u32 = 0o711;

/// Mode of keygate's private files (database, master key).
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) with mode [`DATA_DIR_MODE`], or takes the group and other
/// read and write bits off an existing one. A sticky directory (such as `/tmp`, shared by
/// design) is left as it is, with a warning.
///
/// # Errors
/// The directory cannot be created or its mode set.
pub fn prepare_data_dir(dir: &Path) -> io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) => tighten_dir(dir, &meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            set_mode(dir, DATA_DIR_MODE)
        }
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn tighten_dir(dir: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o066 == 0 {
        return Ok(());
    }
    if mode & 0o1000 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format_args!("{mode:o}"),
            "the data directory is shared (sticky) and readable by other users; use a \
             directory of keygate's own for --data-dir"
        );
        return Ok(());
    }
    let tight = mode & !0o066;
    if let Err(e) = set_mode(dir, tight) {
        // Not keygate's own directory: say so, and go on (its files are still 0600).
        tracing::warn!(
            dir = %dir.display(),
            mode = format_args!("{mode:o}"),
            error = %e,
            "the data directory is readable or writable by other users and its mode cannot \
             be changed; run `chmod go-rw` on it"
        );
        return Ok(());
    }
    tracing::warn!(
        dir = %dir.display(),
        was = format_args!("{mode:o}"),
        now = format_args!("{tight:o}"),
        "the data directory was readable or writable by other users: its mode was tightened"
    );
    Ok(())
}

#[cfg(not(unix))]
fn tighten_dir(_dir: &Path, _meta: &std::fs::Metadata) -> io::Result<()> {
    Ok(())
}

/// Creates `path` empty with mode [`PRIVATE_FILE_MODE`] when it does not exist, whatever the
/// umask; an existing file readable or writable by group or others is set to it, with a
/// warning.
///
/// # Errors
/// The file cannot be created or its mode read or set.
pub fn prepare_private_file(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .open(path)
        {
            // The umask may only have removed bits: nothing to add back to 0600.
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten_file(path),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Sets an existing `path` to [`PRIVATE_FILE_MODE`] if group or others have any access to it,
/// with a warning; a missing file is fine.
///
/// # Errors
/// The mode cannot be read or set.
pub fn tighten_file(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(meta) => meta.permissions().mode() & 0o7777,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            set_mode(path, PRIVATE_FILE_MODE)?;
            tracing::warn!(
                file = %path.display(),
                was = format_args!("{mode:o}"),
                "the file was readable or writable by other users: its mode was set to 600"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}
