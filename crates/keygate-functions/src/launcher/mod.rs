//! How a function's process is started, one [`Launcher`] per [`RuntimeKind`]: `provided`
//! (the function's own `bootstrap`), `node` (the machine's `node` running keygate's bootstrap,
//! `bootstrap.js`). Every launcher's process is then handled alike by `process`: its own Runtime
//! API listener, process group, user, output budget and watchdog entry. A new runtime is one
//! file here and one arm in [`for_kind`].
//!
//! The same launchers check a function at deploy: the interpreter is on `PATH` and which version
//! runs ([`check_runtime`]), the handler's file is in the staged code ([`check_handler`]).

mod node;
mod provided;
mod python;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use keygate_types::{Runtime, RuntimeKind};

use crate::process::Launch;
use crate::{InvokeError, RunAs};

/// Events queued behind the one a process runs, for keygate's own bootstraps (see
/// `runtime_api`): each wakeup of the process serves up to this many more, while one that keeps
/// up delays an event by at most this many short invocations.
const QUEUE_DEPTH: u32 = 8;

/// What to execute for one process of a function.
#[derive(Debug)]
pub(crate) struct Program {
    /// The executable, an absolute path.
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    /// The working directory.
    pub(crate) cwd: PathBuf,
    /// `LAMBDA_TASK_ROOT`: where the function's code is.
    pub(crate) task_root: PathBuf,
    /// Variables this runtime sets, whatever the function's `environment` says
    /// (`AWS_EXECUTION_ENV`).
    pub(crate) env: Vec<(&'static str, OsString)>,
    /// Variables this runtime sets unless the function's `environment` does (`NODE_PATH`).
    pub(crate) default_env: Vec<(&'static str, OsString)>,
}

/// Starts the processes of one runtime kind.
pub(crate) trait Launcher: Sync {
    /// The interpreter this runtime runs on (`node`), looked up on `PATH`; `None`: the function
    /// is its own executable.
    fn interpreter(&self) -> Option<&'static str>;

    /// What to execute for a process of `launch`. Fails, with what to do about it, when the code
    /// or the interpreter is missing.
    fn program(&self, launch: &Launch, run_as: Option<RunAs>) -> Result<Program, InvokeError>;

    /// Whether the handler's code is in the staged code at `task_root`; the problem otherwise.
    fn check_handler(&self, handler: &str, task_root: &Path) -> Result<(), String>;

    /// How many events a one-at-a-time process may hold queued behind the one it runs (queued
    /// delivery, `runtime_api`): only a bootstrap of keygate's own that runs them in order, one
    /// after another, each only once the previous answer is written, may take any.
    fn queue_depth(&self) -> u32 {
        0
    }
}

/// The launcher of a runtime kind.
pub(crate) fn for_kind(kind: RuntimeKind) -> &'static dyn Launcher {
    match kind {
        RuntimeKind::Provided => &provided::Provided,
        RuntimeKind::Node => &node::Node,
        RuntimeKind::Python => &python::Python,
    }
}

/// The staged code of a Node.js or Python function: the directory its artifact names.
pub(crate) fn code_dir(launch: &Launch) -> Result<PathBuf, InvokeError> {
    let dir = launch.cwd.join(&launch.artifact);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(InvokeError::Spawn(format!(
            "the code of function {} is missing ({} is not a directory); deploy again",
            launch.name,
            dir.display()
        )))
    }
}

/// The interpreter `name` on `PATH` that the function's user may run, or what is missing.
pub(crate) fn interpreter(
    launch: &Launch,
    name: &str,
    run_as: Option<RunAs>,
) -> Result<PathBuf, InvokeError> {
    find_on_path(name, run_as).ok_or_else(|| {
        InvokeError::Spawn(format!(
            "function {} (runtime {}) needs `{name}` on PATH{}, and there is none",
            launch.name,
            launch.runtime,
            for_user(run_as)
        ))
    })
}

/// ` runnable by uid N` when functions run as another user.
fn for_user(run_as: Option<RunAs>) -> String {
    run_as.map(|r| format!(" runnable by uid {} (the function user)", r.uid)).unwrap_or_default()
}

/// `AWS_EXECUTION_ENV` and the other variables every interpreted runtime sets.
pub(crate) fn execution_env(launch: &Launch) -> Vec<(&'static str, OsString)> {
    launch.runtime.execution_env().map(|v| ("AWS_EXECUTION_ENV", v.into())).into_iter().collect()
}

/// Looks `name` up on the `PATH` function processes get (keygate's own, else the default): the
/// first that the function user (`run_as`; keygate's own when `None`) may execute. As root,
/// `python3` on PATH is often a shim in root's home (pyenv, nvm) that `nobody` cannot reach; the
/// system's interpreter further down the PATH is then the one that runs.
pub(crate) fn find_on_path(name: &str, run_as: Option<RunAs>) -> Option<PathBuf> {
    let path =
        std::env::var_os("PATH").unwrap_or_else(|| OsString::from(crate::process::DEFAULT_PATH));
    find_in(name, &path, run_as)
}

fn find_in(name: &str, path: &OsStr, run_as: Option<RunAs>) -> Option<PathBuf> {
    std::env::split_paths(path).filter(|dir| dir.is_absolute()).map(|dir| dir.join(name)).find(
        |candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && crate::artifact::is_executable(&m))
                && run_as.is_none_or(|who| executable_by(candidate, who))
        },
    )
}

/// Whether `who` may execute `path`: search permission on every directory to it and to its real
/// location, and execute permission on the file, judged as the kernel judges them for a process
/// of that uid and gid without supplementary groups (which function processes drop).
fn executable_by(path: &Path, who: RunAs) -> bool {
    use std::os::unix::fs::MetadataExt;
    let allows = |meta: &std::fs::Metadata| {
        if who.uid == 0 {
            return meta.is_dir() || meta.mode() & 0o111 != 0;
        }
        crate::user::permission_bits(meta, who) & 0o1 != 0
    };
    let Ok(real) = std::fs::canonicalize(path) else { return false };
    let reachable = |p: &Path| {
        p.ancestors().skip(1).all(|dir| std::fs::metadata(dir).is_ok_and(|m| allows(&m)))
    };
    reachable(path) && reachable(&real) && std::fs::metadata(&real).is_ok_and(|m| allows(&m))
}

/// Checks, at deploy, that the interpreter `runtime` runs on is installed, and says which one
/// runs it: `Some("node v20.20.2 (/usr/bin/node)")`, `None` for `provided.*`. The error says what
/// to install.
///
/// `run_as` is the user functions will run as ([`RunAs::for_host`]): the interpreter must be
/// one that user may execute.
pub fn check_runtime(runtime: &Runtime, run_as: Option<RunAs>) -> Result<Option<String>, String> {
    match for_kind(runtime.kind()).interpreter() {
        None => Ok(None),
        Some(name) => interpreter_version(runtime, name, run_as).map(Some),
    }
}

/// Checks, at deploy, that the file `handler` names is in the staged code at `task_root` (for
/// `provided.*`, the handler is the bootstrap's business: always fine). The error says what was
/// looked for.
pub fn check_handler(runtime: &Runtime, handler: &str, task_root: &Path) -> Result<(), String> {
    for_kind(runtime.kind()).check_handler(handler, task_root)
}

/// `node v20.20.2 (/usr/bin/node)`, or why it cannot be run.
fn interpreter_version(
    runtime: &Runtime,
    name: &str,
    run_as: Option<RunAs>,
) -> Result<String, String> {
    let missing = || {
        format!(
            "runtime {runtime} needs `{name}` on PATH{}, and there is none; install {} (on \
             Debian: `apt-get install {}`) and deploy again",
            for_user(run_as),
            runtime.kind().family(),
            if name == "node" { "nodejs" } else { "python3" },
        )
    };
    let path = find_on_path(name, run_as).ok_or_else(missing)?;
    let output = std::process::Command::new(&path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("runtime {runtime}: cannot run {}: {e}", path.display()))?;
    // Python 2 and 3.3 print the version on stderr.
    let text = if output.stdout.is_empty() { &output.stderr } else { &output.stdout };
    let version = String::from_utf8_lossy(text).trim().to_owned();
    if !output.status.success() || version.is_empty() {
        return Err(format!(
            "runtime {runtime}: `{} --version` failed ({})",
            path.display(),
            output.status
        ));
    }
    Ok(format!("{name} {} ({})", version.trim_start_matches("Python "), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_executable_files_on_path_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("plain"), "").unwrap();
        std::fs::create_dir(bin.join("dir")).unwrap();
        let exe = bin.join("exe");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([Path::new("relative"), &bin]).unwrap();
        assert_eq!(find_in("exe", &path, None), Some(exe.clone()));
        assert_eq!(find_in("plain", &path, None), None);
        assert_eq!(find_in("dir", &path, None), None);
        assert_eq!(find_in("missing", &path, None), None);

        // Another user finds it only through directories it may search.
        let stranger = RunAs { uid: 54_321, gid: 54_321 };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_in("exe", &path, Some(stranger)), Some(exe.clone()));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(find_in("exe", &path, Some(stranger)), None);
        // A link to it from a reachable directory does not help.
        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&exe, open.path().join("exe")).unwrap();
        assert_eq!(find_in("exe", open.path().as_os_str(), Some(stranger)), None);
    }
}
