//! `python3.*`: the machine's `python3` runs keygate's bootstrap (`bootstrap.py`, shipped inside
//! the binary and passed with `-c`), which imports the handler's module from the staged code,
//! the task root, also the working directory (as on Lambda). Every `python3.N` runs on that one
//! `python3`; the deploy says which version it is.

use std::ffi::OsString;
use std::path::Path;

use super::{Launcher, Program, code_dir, execution_env, interpreter};
use crate::process::Launch;
use crate::{InvokeError, RunAs};

/// The bootstrap, pinned by `tests/functions/python.rs`.
const BOOTSTRAP: &str = include_str!("bootstrap.py");

pub(crate) struct Python;

impl Launcher for Python {
    fn interpreter(&self) -> Option<&'static str> {
        Some("python3")
    }

    fn program(&self, launch: &Launch, run_as: Option<RunAs>) -> Result<Program, InvokeError> {
        let task_root = code_dir(launch)?;
        let python = interpreter(launch, "python3", run_as)?;
        Ok(Program {
            program: python,
            // -s: not the user's site-packages of whoever runs keygate; as on Lambda.
            args: vec!["-s".into(), "-c".into(), BOOTSTRAP.into()],
            cwd: task_root.clone(),
            env: execution_env(launch),
            // `print` reaches the log at once, as on Lambda.
            default_env: vec![("PYTHONUNBUFFERED", OsString::from("1"))],
            task_root,
        })
    }

    /// `bootstrap.py` keeps this many `/next` polls open behind the event it runs.
    fn queue_depth(&self) -> u32 {
        super::QUEUE_DEPTH
    }

    fn check_handler(&self, handler: &str, task_root: &Path) -> Result<(), String> {
        let (module, function) = handler
            .rsplit_once('.')
            .filter(|(m, f)| !m.is_empty() && !f.is_empty() && !m.contains(".."))
            .ok_or_else(|| {
                format!(
                    "handler {handler:?} is not `path/module.function` (e.g. `handler.list` for \
                     the function `list` of handler.py)"
                )
            })?;
        let path = task_root.join(module.replace('.', "/"));
        let mut file = path.clone().into_os_string();
        file.push(".py");
        // A module file, or a package (namespace packages have no __init__.py).
        if Path::new(&file).is_file() || path.is_dir() {
            return Ok(());
        }
        Err(format!(
            "handler {handler:?}: no module {}.py in the function's code (looked in {}); the \
             handler is `path/module.function`, with the path relative to serverless.yml, for \
             `def {function}(event, context)`",
            module.replace('.', "/"),
            task_root.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_module_is_a_file_or_a_package() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("handler.py"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("src/pkg")).unwrap();
        assert_eq!(Python.check_handler("handler.list", dir.path()), Ok(()));
        assert_eq!(Python.check_handler("src/pkg.main", dir.path()), Ok(()));
        assert_eq!(Python.check_handler("src.pkg.main", dir.path()), Ok(()));
        let err = Python.check_handler("handlers.list", dir.path()).unwrap_err();
        assert!(err.contains("no module handlers.py"), "{err}");
        assert!(Python.check_handler("handler", dir.path()).is_err());
    }
}
