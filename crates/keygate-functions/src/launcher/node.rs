//! `nodejs*`: the machine's `node` runs keygate's bootstrap (`bootstrap.js`, shipped inside the
//! binary and passed with `-e`), which loads the handler from the staged code, the task root,
//! also the working directory (as on Lambda). Every `nodejsN.x` runs on that one `node`; the
//! deploy says which version it is.

use std::ffi::OsString;
use std::path::Path;

use super::{Launcher, Program, code_dir, execution_env, interpreter};
use crate::process::Launch;
use crate::{InvokeError, RunAs};

/// The bootstrap, pinned by `tests/functions/node.rs`.
const BOOTSTRAP: &str = include_str!("bootstrap.js");

/// Extensions tried for a handler module, in the bootstrap's order.
const EXTENSIONS: &[&str] = &["", ".js", ".mjs", ".cjs"];

pub(crate) struct Node;

impl Launcher for Node {
    fn interpreter(&self) -> Option<&'static str> {
        Some("node")
    }

    fn program(&self, launch: &Launch, run_as: Option<RunAs>) -> Result<Program, InvokeError> {
        let task_root = code_dir(launch)?;
        let node = interpreter(launch, "node", run_as)?;
        let (semi_space, old_space) = heap_limits(launch.memory_size);
        Ok(Program {
            program: node,
            args: vec![
                format!("--max-semi-space-size={semi_space}").into(),
                format!("--max-old-space-size={old_space}").into(),
                "-e".into(),
                BOOTSTRAP.into(),
            ],
            cwd: task_root.clone(),
            env: execution_env(launch),
            // As Lambda's NODE_PATH ends with /var/task.
            default_env: vec![("NODE_PATH", OsString::from(&task_root))],
            task_root,
        })
    }

    /// `bootstrap.js` keeps this many `/next` polls open behind the event it runs.
    fn queue_depth(&self) -> u32 {
        super::QUEUE_DEPTH
    }

    fn check_handler(&self, handler: &str, task_root: &Path) -> Result<(), String> {
        let (module_root, module, export) = split_handler(handler).ok_or_else(|| {
            format!(
                "handler {handler:?} is not `path/module.export` (e.g. `api/candidates.submit` \
                 for the export `submit` of api/candidates.js)"
            )
        })?;
        let base = task_root.join(module_root).join(module);
        let found = EXTENSIONS.iter().any(|ext| {
            let mut file = base.clone().into_os_string();
            file.push(ext);
            Path::new(&file).is_file()
        });
        // A handler may also be a package (`require.resolve` from the task root).
        if found || task_root.join("node_modules").join(module).is_dir() {
            return Ok(());
        }
        Err(format!(
            "handler {handler:?}: no file {}{{.js,.mjs,.cjs}} in the function's code (looked in \
             {}); the handler is `path/module.export`, with the path relative to serverless.yml, \
             for `export {export}`",
            Path::new(module_root).join(module).display(),
            task_root.display()
        ))
    }
}

/// V8's heap limits in MB for a function of `memory_size` MB, as Lambda's own Node.js bootstrap
/// sets them: a tenth of the memory for the young generation (two semi-spaces), the rest for the
/// old one. A function that fits its `memorySize` on Lambda fits it here, and one that does not
/// fails here too instead of growing without bound.
fn heap_limits(memory_size: u32) -> (u32, u32) {
    let new_space = memory_size / 10;
    ((new_space / 2).max(1), memory_size.saturating_sub(new_space).max(16))
}

/// `api/candidates.submit` -> (`api/`, `candidates`, `submit`): the basename splits at its first
/// dot, further dots walk properties of the export. `None` for a name Lambda refuses (no dot,
/// `..`).
fn split_handler(handler: &str) -> Option<(&str, &str, &str)> {
    if handler.contains("..") {
        return None;
    }
    let base_start = handler.rfind('/').map_or(0, |i| i + 1);
    let (module_root, base) = handler.split_at(base_start);
    let (module, export) = base.split_once('.')?;
    (!module.is_empty() && !export.is_empty()).then_some((module_root, module, export))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_split_as_lambda_splits_them() {
        assert_eq!(split_handler("api/candidates.submit"), Some(("api/", "candidates", "submit")));
        assert_eq!(split_handler("handler.list"), Some(("", "handler", "list")));
        assert_eq!(
            split_handler("src/api/users.handlers.create"),
            Some(("src/api/", "users", "handlers.create"))
        );
        for bad in ["handler", "../x.y", "a/..b.c", ".x", "x.", "dir/"] {
            assert_eq!(split_handler(bad), None, "{bad}");
        }
    }

    #[test]
    fn heap_limits_follow_the_memory_size_as_on_lambda() {
        assert_eq!(heap_limits(128), (6, 116));
        assert_eq!(heap_limits(1024), (51, 922));
    }

    #[test]
    fn a_handler_file_is_found_with_any_extension() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("api")).unwrap();
        std::fs::write(dir.path().join("api/candidates.js"), "").unwrap();
        std::fs::write(dir.path().join("esm.mjs"), "").unwrap();
        assert_eq!(Node.check_handler("api/candidates.submit", dir.path()), Ok(()));
        assert_eq!(Node.check_handler("esm.handler", dir.path()), Ok(()));
        let err = Node.check_handler("api/candidate.submit", dir.path()).unwrap_err();
        assert!(err.contains("no file api/candidate{.js,.mjs,.cjs}"), "{err}");
        assert!(Node.check_handler("handler", dir.path()).is_err());
    }
}
