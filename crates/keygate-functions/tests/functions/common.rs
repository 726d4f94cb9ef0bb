//! Shared fixtures: locating and staging the test function, building specs and reading answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use keygate_functions::{FunctionHost, FunctionRef, InvokeError, stage_artifact};
use keygate_types::FunctionSpec;
use serde_json::Value;
use tempfile::TempDir;

/// The `keygate-testfn` binary: `$KEYGATE_TESTFN`, else next to this test binary's directory
/// (`target/<profile>/`), else `target/debug/` of the workspace.
pub(crate) fn testfn_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KEYGATE_TESTFN") {
        return PathBuf::from(path);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/deps/functions-<hash> -> target/<profile>/keygate-testfn
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("keygate-testfn"));
        }
    }
    candidates
        .push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/keygate-testfn"));
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the keygate-testfn binary is missing: run `cargo build -p keygate-testfn` before \
             `cargo test -p keygate-functions` (or set KEYGATE_TESTFN to its path)"
        )
    })
}

/// The test function staged once per test binary, as a deploy would stage it.
pub(crate) fn staged_testfn() -> &'static Path {
    static STAGED: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    let (_, dir) = STAGED.get_or_init(|| {
        let root = TempDir::new().unwrap();
        let dir = stage_artifact(&testfn_binary(), root.path()).unwrap();
        (root, dir)
    });
    dir
}

/// A service directory for one test.
pub(crate) struct Service {
    pub(crate) dir: TempDir,
}

impl Service {
    pub(crate) fn new() -> Self {
        Self { dir: TempDir::new().unwrap() }
    }

    pub(crate) fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn f<'a>(&'a self, spec: &'a FunctionSpec) -> FunctionRef<'a> {
        fref(spec, self.dir.path())
    }
}

/// The test service's reference to `spec` with its code in `base_dir` (for tasks that own a
/// copy of both).
pub(crate) fn fref<'a>(spec: &'a FunctionSpec, base_dir: &'a Path) -> FunctionRef<'a> {
    FunctionRef { spec, base_dir, region: "eu-west-1", service: "svc", stage: "dev" }
}

/// A spec of the test function with the given handler.
pub(crate) fn spec(handler: &str) -> FunctionSpec {
    FunctionSpec {
        name: "fn".to_owned(),
        function_name: "svc-dev-fn".to_owned(),
        handler: handler.to_owned(),
        runtime: keygate_types::Runtime::provided_al2023(),
        environment: BTreeMap::new(),
        timeout_secs: 30,
        memory_size: 128,
        description: None,
        reserved_concurrency: None,
        max_concurrency: None,
        artifact: Some(staged_testfn().to_owned()),
        package_patterns: Vec::new(),
        events: Vec::new(),
        streams: Vec::new(),
    }
}

pub(crate) async fn invoke(
    host: &FunctionHost,
    f: &FunctionRef<'_>,
    event: Value,
) -> Result<Bytes, InvokeError> {
    host.invoke(f, Bytes::from(event.to_string())).await
}

/// A proxy response as JSON.
pub(crate) fn json(raw: &[u8]) -> Value {
    serde_json::from_slice(raw)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(raw)))
}

/// The `x-pid` header of an `env` or `sleep` response.
pub(crate) fn pid(raw: &[u8]) -> u32 {
    json(raw)["headers"]["x-pid"].as_str().expect("x-pid header").parse().unwrap()
}

/// Whether a process exists at all (a zombie still has a /proc entry).
pub(crate) fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Writes an executable shell script.
pub(crate) fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The code of a Node.js or Python function: `files` written into a fresh directory and staged
/// as a deploy stages a service directory. Returns the staging root (kept alive by the caller)
/// and the spec.
pub(crate) fn code_function(
    runtime: &str,
    handler: &str,
    files: &[(&str, &str)],
) -> (TempDir, FunctionSpec) {
    let root = TempDir::new().unwrap();
    let src = root.path().join("src");
    for (name, text) in files {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let staged = keygate_functions::stage_code(&src, &root.path().join("artifacts"), &[]).unwrap();
    let mut spec = spec(handler);
    spec.runtime = keygate_types::Runtime::parse(runtime).unwrap();
    spec.artifact = Some(staged);
    (root, spec)
}

/// The body of a proxy response as JSON.
pub(crate) fn body(raw: &[u8]) -> Value {
    let answer = json(raw);
    serde_json::from_str(answer["body"].as_str().expect("a string body")).unwrap()
}

/// Whether `pid` is a live process (a zombie, which only waits to be reaped, is not).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (10 s at most) for `pid` to be gone.
pub(crate) async fn gone(pid: u32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A bootstrap that runs `start` (which writes the pid of what it starts to `grandchild.pid`),
/// then becomes the test function.
pub(crate) fn spawning_spec_with(svc: &Service, start: &str) -> keygate_types::FunctionSpec {
    let bootstrap = svc.base_dir().join("bootstrap");
    let testfn = testfn_binary();
    script(&bootstrap, &format!("{start}\nexec '{}'", testfn.display()));
    let mut spec = spec("sleep");
    spec.artifact = Some(bootstrap);
    spec.timeout_secs = 1;
    spec
}
