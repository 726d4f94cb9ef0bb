//! Test harness: a temp data directory, the `keygate` binary, and a running gateway.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Directory holding the workspace's built binaries (beside `keygate`).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_keygate")).parent().unwrap().to_path_buf()
}

/// A built workspace binary; fails with the command to run when it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (the README's test command does)",
        p.display()
    );
    p
}

pub fn example_yml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/candidate-service/serverless.yml")
}

/// One isolated keygate installation: its own data directory and candidate database.
pub struct Env {
    pub dir: TempDir,
    /// `KEYGATE_DATABASE_URL` for every command (none: the embedded store).
    pub database_url: Option<String>,
}

impl Env {
    pub fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Run as root, keygate runs functions as users of their own: they must reach the data
        // directory's artifacts (search bit only, as for any data directory under a private
        // parent). The example keeps its candidates in each stage's state directory there.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        Self { dir, database_url: None }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// `keygate` with this environment's data directory and example settings.
    pub fn cmd(&self) -> Command {
        self.cmd_of(Command::new(env!("CARGO_BIN_EXE_keygate")))
    }

    /// `c` (keygate, or a wrapper that runs it) with this environment's settings.
    pub fn cmd_of(&self, mut c: Command) -> Command {
        c.env("KEYGATE_DATA_DIR", self.data_dir())
            .env("CANDIDATE_SERVICE_ARTIFACT", workspace_bin("candidate-service"))
            .env_remove("CANDIDATE_DB")
            .env_remove("RUST_LOG")
            .env_remove("KEYGATE_LISTEN")
            .env_remove("KEYGATE_DATABASE_URL")
            .current_dir(self.path());
        if let Some(url) = &self.database_url {
            c.env("KEYGATE_DATABASE_URL", url);
        }
        c
    }

    /// Runs keygate and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs keygate, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "keygate {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs keygate with `--json`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Writes a file in the environment's directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Deploys `yml` (with `--json`) and returns the report.
    pub fn deploy(&self, yml: &Path, extra: &[&str]) -> Value {
        let mut args = vec!["deploy", "-c", yml.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// The first generated key value of a deploy report.
    pub fn key_value(report: &Value) -> String {
        report["apiKeys"][0]["value"].as_str().expect("deploy created a key").to_owned()
    }

    /// Starts `keygate serve` on a free port.
    pub fn serve(&self) -> Server {
        self.start(&["serve", "--listen", "127.0.0.1:0"], &[])
    }

    /// Starts keygate with `args` and waits for it to print its address.
    pub fn start(&self, args: &[&str], env: &[(&str, &str)]) -> Server {
        self.start_with(self.cmd(), args, env)
    }

    /// [`Self::start`] through `cmd`: keygate itself, or a wrapper that runs it.
    pub fn start_with(&self, mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = self.path().join(format!("keygate-{}.log", rand_suffix()));
        // Tests run in parallel, so they listen on port 0; the admin API then takes a free port
        // too (never the fixed 4001), which this relies on.
        assert!(args.contains(&"127.0.0.1:0"), "tests listen on free ports: {args:?}");
        cmd.env_remove("KEYGATE_ADMIN_LISTEN");
        cmd.args(args).stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut base = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("keygate listening on ") {
                    base = Some(addr.to_owned());
                }
                if let Some(admin) = line.strip_prefix("keygate admin listening on ") {
                    let _ = tx.send(Ok((
                        base.clone().unwrap_or_default(),
                        admin.to_owned(),
                        lines.clone(),
                    )));
                }
                lines.push(line);
            }
            let _ = tx.send(Err(lines));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok((base, admin, stdout))) => Server { child, base, admin, log, stdout },
            other => {
                let _ = child.kill();
                panic!(
                    "keygate {args:?} did not start: {other:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// A running keygate server, killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    /// Base URL of the admin API.
    pub admin: String,
    pub log: PathBuf,
    /// What it printed before listening (deploy report for `up`).
    pub stdout: Vec<String>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "keygate exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "keygate did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of the running keygate.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for the tests (no connection reuse surprises: a fresh pool per test).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// A response reduced to what tests assert on.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts the exact AWS Forbidden response.
    pub fn assert_forbidden(&self) {
        assert_eq!(self.status, 403, "{self:?}");
        assert_eq!(self.body, r#"{"message":"Forbidden"}"#);
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.header("x-amzn-errortype"), Some("ForbiddenException"));
        assert!(self.header("x-amzn-requestid").is_some());
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.text().await.unwrap();
    Reply { status, headers, body }
}

pub async fn get(url: &str, key: Option<&str>) -> Reply {
    let mut req = client().get(url);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    send(req).await
}

/// Polls until `f` holds or `limit` passes; returns how long it took.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A service of mock routes (`paths`), each private, under `plan` (a `usagePlan:` in flow
/// style).
pub fn mock_service(name: &str, plan: &str, paths: &[&str]) -> String {
    let mut yml = format!(
        "service: {name}
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys: [{name}-key]
    usagePlan: {plan}
functions:
  mocked:
    handler: unused
    events:
"
    );
    for path in paths {
        yml.push_str(&format!(
            "      - http: {{path: {path}, method: get, private: true, integration: mock}}\n"
        ));
    }
    yml
}

/// A serverless.yml whose functions are `keygate-testfn` handlers (see crates/keygate-testfn).
pub fn testfn_yml(service: &str, extra_functions: &str) -> String {
    let artifact = workspace_bin("keygate-testfn");
    format!(
        r#"service: {service}
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys:
      - {service}-key
functions:
  echo:
    handler: echo
    package:
      artifact: {artifact}
    events:
      - http:
          path: echo/{{proxy+}}
          method: any
          private: true
      - http: GET open
{extra_functions}"#,
        artifact = artifact.display()
    )
}

/// Python `packages` (pip requirement specifiers) installed with the machine's `python3 -m pip
/// install --target` once per set, next to the test binaries; returns the directory holding them
/// (a service vendors its packages at its root, as serverless-python-requirements does).
pub fn python_packages(packages: &[&str]) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let name: String =
        packages.iter().map(|p| p.replace(['=', '<', '>'], "_")).collect::<Vec<_>>().join("+");
    let root = bin_dir().join("../e2e-python").join(name);
    if root.join(".complete").exists() {
        return root;
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
        .args(["--no-compile", "--target"])
        .arg(&root)
        .args(packages)
        .output()
        .expect("python3 with pip is needed for the Python tests (apt-get install python3-pip)");
    assert!(
        out.status.success(),
        "pip install {packages:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(root.join(".complete"), "").unwrap();
    root
}

/// A `node_modules` directory with `packages` installed by npm, made once per set of packages
/// under `target/e2e-node/` and reused by later runs; a service directory links to it.
pub fn node_modules(packages: &[&str]) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let name: String =
        packages.iter().map(|p| p.replace(['@', '/'], "_")).collect::<Vec<_>>().join("+");
    let root = bin_dir().join("../e2e-node").join(name);
    let modules = root.join("node_modules");
    if root.join(".complete").exists() {
        return modules;
    }
    std::fs::create_dir_all(&root).unwrap();
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error", "--prefix"])
        .arg(&root)
        .args(packages)
        .output()
        .expect("npm is needed for the Node.js tests (apt-get install npm)");
    assert!(
        out.status.success(),
        "npm install {packages:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(root.join(".complete"), "").unwrap();
    modules
}
