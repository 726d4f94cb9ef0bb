//! `provided.*`: the function is its own executable, `bootstrap` (a Rust or Go function built
//! for Lambda), run with its task root (the staged artifact directory) as its working directory,
//! as on Lambda. (serverless-offline runs functions in the service directory; keygate runs the
//! deployed copy, which the function user can always reach, and a relative path would otherwise
//! read the live service directory instead of the deployment.)

use std::path::{Path, PathBuf};

use super::{Launcher, Program};
use crate::process::Launch;
use crate::{InvokeError, RunAs};

pub(crate) struct Provided;

impl Launcher for Provided {
    fn interpreter(&self) -> Option<&'static str> {
        None
    }

    fn program(&self, launch: &Launch, _run_as: Option<RunAs>) -> Result<Program, InvokeError> {
        let (bootstrap, task_root) = resolve_artifact(launch)?;
        check_bootstrap(launch, &bootstrap)?;
        Ok(Program {
            program: bootstrap,
            args: Vec::new(),
            cwd: task_root.clone(),
            task_root,
            env: Vec::new(),
            default_env: Vec::new(),
        })
    }

    fn check_handler(&self, _handler: &str, _task_root: &Path) -> Result<(), String> {
        // The handler string is the bootstrap's business (`lambda_runtime` ignores it).
        Ok(())
    }
}

/// Where a function's `bootstrap` and task root are. The artifact is normally a directory made
/// by [`crate::stage_artifact`]; a plain executable file also works (its directory is the task
/// root). Relative paths are taken from the service directory.
fn resolve_artifact(launch: &Launch) -> Result<(PathBuf, PathBuf), InvokeError> {
    let base_dir = &launch.cwd;
    let artifact = base_dir.join(&launch.artifact);
    if artifact.is_dir() {
        return Ok((artifact.join("bootstrap"), artifact));
    }
    if artifact.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
        return Err(InvokeError::Spawn(format!(
            "artifact {} of function {} is a zip that was never staged (deploying stages it)",
            artifact.display(),
            launch.name
        )));
    }
    let task_root = artifact.parent().map_or_else(|| base_dir.to_owned(), Path::to_path_buf);
    Ok((artifact, task_root))
}

/// Refuses clearly before spawning: a missing or non-executable bootstrap would otherwise surface
/// as a bare "No such file or directory".
fn check_bootstrap(launch: &Launch, bootstrap: &Path) -> Result<(), InvokeError> {
    let path = bootstrap;
    match std::fs::metadata(path) {
        Err(err) => Err(InvokeError::Spawn(format!(
            "bootstrap {} of function {}: {err}",
            path.display(),
            launch.function_name
        ))),
        Ok(meta) if !meta.is_file() => Err(InvokeError::Spawn(format!(
            "bootstrap {} of function {} is not a file",
            path.display(),
            launch.function_name
        ))),
        Ok(meta) if !crate::artifact::is_executable(&meta) => Err(InvokeError::Spawn(format!(
            "bootstrap {} of function {} is not executable; run `chmod +x {}`",
            path.display(),
            launch.function_name,
            path.display()
        ))),
        Ok(_) => Ok(()),
    }
}
