//! One function process: how it is started (its `bootstrap`, environment, working directory, user
//! and process group), how an event is handed to it and its answer awaited, and how it is killed
//! (with its whole process group) and reaped. Its output goes to [`crate::output`].
//!
//! Each process owns a Runtime API listener ([`crate::runtime_api`]) and a reaper task that owns
//! the child: the reaper waits for the exit (or a kill request), always `wait`s so no zombie is
//! left, then records the exit as the process's [`Failure`] and stops the listener.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use keygate_types::Runtime;

use crate::launcher::{self, Program};
use crate::output::{self, OutputBudget};
use crate::runtime_api::{self, Failure, Invocation, Outcome, Owner, Phase, RuntimeApi, Start};
use crate::{FunctionRef, GroupWatch, InvokeError, RunAs};

/// Host variables a function inherits; everything else in the host's environment (keygate's own
/// settings, `RUST_LOG`, credentials) is withheld, as Lambda starts from a clean environment.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "RUST_BACKTRACE"];
/// `PATH` when keygate has none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Variables Lambda reserves: set by keygate, never by the function's `environment`.
const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_EXECUTION_ENV",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_TIMEOUT",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_MAX_CONCURRENCY",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];
/// How long to wait for a killed process to be reaped before giving up waiting (the reaper
/// keeps waiting in the background). SIGKILL normally takes milliseconds.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// How long the Runtime API connections of a dead process may take to be read to their end
/// (milliseconds, normally: the kernel closed them with the process).
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// The shell that sets a function's umask before it becomes the function's program.
const SHELL: &str = "/bin/sh";

/// What the processes of one pool share besides their [`Launch`]: the host's settings.
pub(crate) struct Spawn {
    /// The host's service variables (`FunctionHost::set_service_env`).
    pub(crate) service_env: Arc<std::sync::RwLock<Vec<(String, String)>>>,
    /// The service's state directory (`HostOptions::state_root`), made on the first start.
    pub(crate) state_dir: Option<PathBuf>,
    /// The user and group to run as (`HostOptions::users`).
    pub(crate) run_as: Option<RunAs>,
    /// The function has a uid of its own and shares its gid with its service stage: the state
    /// directory is the group's (setgid, 2770, owned by keygate's user) and the process runs
    /// with umask 007, so what one function writes there the others may read and write.
    pub(crate) shared_group: bool,
    /// Told of each process group (`HostOptions::group_watch`).
    pub(crate) group_watch: Option<Arc<dyn GroupWatch>>,
    /// The function's output budget, shared by all its processes.
    pub(crate) output: Arc<OutputBudget>,
    /// `HostOptions::queue_behind`.
    pub(crate) queue_behind: Duration,
}

/// Everything that shapes a function's process, as deployed. Invocations whose function matches
/// a `Launch` ([`Launch::is_for`]) share its warm processes; it is part of the pool fingerprint.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The key under `functions:`, for messages.
    pub(crate) name: String,
    /// `AWS_LAMBDA_FUNCTION_NAME` (`<service>-<stage>-<fn>`), also the log field.
    pub(crate) function_name: String,
    /// `spec.artifact`: normally a staged (content-addressed, immutable) directory, so a redeploy
    /// of changed code has a different path. Resolved to a `bootstrap` at each process start.
    pub(crate) artifact: PathBuf,
    /// The service directory: relative artifact paths resolve against it.
    pub(crate) cwd: PathBuf,
    pub(crate) handler: String,
    /// What starts the process (see `crate::launcher`).
    pub(crate) runtime: Runtime,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) memory_size: u32,
    pub(crate) timeout_secs: u32,
    pub(crate) region: String,
    /// Invocations one process takes at once (`AWS_LAMBDA_MAX_CONCURRENCY`); `None`: one, and the
    /// variable is not set (classic Lambda).
    pub(crate) max_concurrency: Option<u32>,
}

impl Launch {
    /// The launch of `f`. Touches no file: the artifact is only checked when a process starts.
    pub(crate) fn from_ref(f: &FunctionRef<'_>) -> Result<Self, InvokeError> {
        let spec = f.spec;
        let Some(artifact) = &spec.artifact else {
            return Err(InvokeError::Spawn(format!(
                "function {} has no artifact: set `package.artifact` to its bootstrap (a file, a \
                 directory holding `bootstrap`, or a cargo-lambda .zip) and deploy again",
                spec.name
            )));
        };
        Ok(Self {
            name: spec.name.clone(),
            function_name: spec.function_name.clone(),
            artifact: artifact.clone(),
            cwd: f.base_dir.to_owned(),
            handler: spec.handler.clone(),
            runtime: spec.runtime.clone(),
            env: spec.environment.clone(),
            memory_size: spec.memory_size,
            timeout_secs: spec.timeout_secs,
            region: f.region.to_owned(),
            max_concurrency: spec.max_concurrency,
        })
    }

    /// Whether `f` is the function this launch was made from (`Launch::from_ref(f)` would be
    /// equal), compared field by field without allocating: the per-invocation pool lookup.
    pub(crate) fn is_for(&self, f: &FunctionRef<'_>) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            name,
            function_name,
            artifact,
            cwd,
            handler,
            runtime,
            env,
            memory_size,
            timeout_secs,
            region,
            max_concurrency,
        } = self;
        let spec = f.spec;
        *function_name == spec.function_name
            && *memory_size == spec.memory_size
            && *timeout_secs == spec.timeout_secs
            && *handler == spec.handler
            && *runtime == spec.runtime
            && *region == f.region
            && *max_concurrency == spec.max_concurrency
            && spec.artifact.as_deref() == Some(artifact.as_path())
            && cwd == f.base_dir
            && *env == spec.environment
            && *name == spec.name
    }

    fn arn(&self) -> String {
        format!("arn:aws:lambda:{}:000000000000:function:{}", self.region, self.function_name)
    }

    /// The whole environment of a new process.
    fn environment(
        &self,
        runtime_api: SocketAddr,
        program: &Program,
        run_as: Option<RunAs>,
        service_env: &[(String, String)],
    ) -> BTreeMap<String, OsString> {
        let task_root = program.task_root.as_path();
        let mut env: BTreeMap<String, OsString> = BTreeMap::new();
        for key in INHERITED_ENV {
            if let Some(value) = std::env::var_os(key) {
                env.insert((*key).to_owned(), value);
            }
        }
        if run_as.is_some() {
            // keygate's home is no use to another user; /tmp is the writable place, as on Lambda.
            env.insert("HOME".to_owned(), "/tmp".into());
        }
        env.entry("PATH".to_owned()).or_insert_with(|| DEFAULT_PATH.into());
        env.entry("LANG".to_owned()).or_insert_with(|| "en_US.UTF-8".into());
        env.insert("TZ".to_owned(), "UTC".into());
        for (key, value) in &self.env {
            if RESERVED_ENV.contains(&key.as_str()) {
                tracing::warn!(
                    function = %self.function_name,
                    variable = %key,
                    "ignoring a reserved Lambda environment variable set in serverless.yml"
                );
                continue;
            }
            env.insert(key.clone(), value.into());
        }
        let now = time::OffsetDateTime::now_utc();
        let log_stream = format!(
            "{:04}/{:02}/{:02}/[$LATEST]{}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            uuid::Uuid::new_v4().simple()
        );
        let task_root: OsString = task_root.into();
        let reserved: [(&str, OsString); 13] = [
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string().into()),
            ("AWS_LAMBDA_FUNCTION_NAME", self.function_name.clone().into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", self.memory_size.to_string().into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_FUNCTION_TIMEOUT", self.timeout_secs.to_string().into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", self.function_name).into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream.into()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
            ("_HANDLER", self.handler.clone().into()),
            ("LAMBDA_TASK_ROOT", task_root.clone()),
            ("LAMBDA_RUNTIME_DIR", task_root),
            ("AWS_REGION", self.region.clone().into()),
            ("AWS_DEFAULT_REGION", self.region.clone().into()),
        ];
        env.extend(reserved.into_iter().map(|(k, v)| (k.to_owned(), v)));
        if let Some(n) = self.max_concurrency {
            env.insert("AWS_LAMBDA_MAX_CONCURRENCY".to_owned(), n.to_string().into());
        }
        let queue_depth = self.queue_depth();
        if queue_depth > 0 {
            env.insert("KEYGATE_QUEUE_DEPTH".to_owned(), queue_depth.to_string().into());
        }
        for (key, value) in &program.env {
            env.insert((*key).to_owned(), value.clone());
        }
        for (key, value) in &program.default_env {
            env.entry((*key).to_owned()).or_insert_with(|| value.clone());
        }
        for (key, value) in service_env {
            if RESERVED_ENV.contains(&key.as_str()) {
                env.insert(key.clone(), value.into());
            } else {
                env.entry(key.clone()).or_insert_with(|| value.into());
            }
        }
        env
    }

    /// Invocations one process takes at once.
    pub(crate) fn slots(&self) -> u32 {
        slots(self.max_concurrency)
    }

    /// Events one process may hold queued behind the one it runs (queued delivery, see
    /// `runtime_api`): its launcher's depth for a one-at-a-time function, 0 otherwise.
    pub(crate) fn queue_depth(&self) -> u32 {
        if self.max_concurrency.is_some() {
            return 0;
        }
        launcher::for_kind(self.runtime.kind()).queue_depth()
    }
}

/// Invocations one process of a function with this `maxConcurrency` takes at once: one for a
/// classic Lambda function (`None`).
pub(crate) fn slots(max_concurrency: Option<u32>) -> u32 {
    max_concurrency.unwrap_or(1).max(1)
}

/// What the pool, the reaper and shutdown share about one process.
pub(crate) struct ProcShared {
    pub(crate) api: Arc<RuntimeApi>,
    pub(crate) pid: Option<u32>,
    /// Wakes the reaper to kill the child. `notify_one` keeps a permit, so a kill requested before
    /// the reaper first waits is not lost.
    kill: Notify,
    killed_by_host: AtomicBool,
    /// Set once the process is to take no new invocations (retired, or failed): its slots are
    /// dropped as they come back, and the process is stopped with the last one.
    retired: AtomicBool,
    /// Set at the process's first answer: until then it is still warming up (a Node.js process's
    /// first invocations run cold code), and the pool does not count it as a busy process that
    /// is slow to come back.
    warm: AtomicBool,
    reaped: watch::Sender<bool>,
}

impl ProcShared {
    /// Asks the reaper to kill the process (idempotent, returns at once).
    pub(crate) fn kill(&self) {
        self.killed_by_host.store(true, Ordering::Release);
        self.kill.notify_one();
    }

    /// Whether the process takes no new invocations (its busy slots will not come back).
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Whether the process has answered an invocation.
    pub(crate) fn is_warm(&self) -> bool {
        self.warm.load(Ordering::Acquire)
    }

    pub(crate) fn is_reaped(&self) -> bool {
        *self.reaped.borrow()
    }

    /// Waits until the child has been waited for (bounded by [`REAP_WAIT`]).
    pub(crate) async fn wait_reaped(&self) {
        let mut reaped = self.reaped.subscribe();
        let _ = tokio::time::timeout(REAP_WAIT, reaped.wait_for(|r| *r)).await;
    }
}

/// A running function process, shared by its slots (one per invocation it may hold at once: the
/// pool's idle list holds the free ones, each running invocation its own). Dropping the last
/// slot, and so this, kills the process.
pub(crate) struct Process {
    shared: Arc<ProcShared>,
    inbox: mpsc::Sender<Invocation>,
    /// Invocations this process has answered (see `HostOptions::max_invocations`).
    answered: AtomicU64,
    /// Events queued behind the one it runs, at most ([`Launch::queue_depth`]).
    queue_depth: u32,
    /// The pool's slots of this process handed out to invocations (changed under the pool's
    /// lock).
    in_flight: std::sync::atomic::AtomicI64,
    /// For Lambda's platform lines (`END`, `REPORT`).
    report: Report,
}

/// What the platform lines of a process's invocations need.
struct Report {
    output: Arc<OutputBudget>,
    memory_size: u32,
    spawned: std::time::Instant,
    /// Whether the next `REPORT` is the process's first (it then carries `Init Duration`).
    first: AtomicBool,
    /// `VmHWM` in kB and when it was read: read at most once a second, not per invocation.
    peak: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl Report {
    /// Peak memory of the process in MB (`VmHWM`, refreshed at most once a second).
    fn max_memory_mb(&self, pid: Option<u32>) -> u64 {
        let mut peak = self.peak.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let fresh = peak.filter(|(at, _)| now.duration_since(*at) < Duration::from_secs(1));
        let kb = match fresh {
            Some((_, kb)) => kb,
            None => {
                let kb = pid.and_then(read_vm_hwm_kb).unwrap_or(0);
                *peak = Some((now, kb));
                kb
            }
        };
        kb.div_ceil(1024)
    }
}

/// Makes `dir` (a service's state directory) and its parents: the parents searchable by every
/// user and listable by none but keygate's (0711); `dir` itself the function user's alone (0700,
/// owned by it when functions run as another user), or with `shared_group` its group's (2770,
/// owned by keygate's user: the group's members cannot change its mode).
fn prepare_state_dir(dir: &Path, run_as: Option<RunAs>, shared_group: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o711).create(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    match run_as {
        Some(RunAs { gid, .. }) if shared_group => {
            std::os::unix::fs::lchown(
                dir,
                Some(nix::unistd::Uid::effective().as_raw()),
                Some(gid),
            )?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2770))
        }
        Some(RunAs { uid, gid }) => {
            std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        None => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)),
    }
}

/// `VmHWM` (peak resident set) of a process, in kB.
fn read_vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for Process {
    fn drop(&mut self) {
        self.shared.kill();
    }
}

impl Process {
    /// Starts `launch`'s bootstrap with its own Runtime API listener.
    pub(crate) async fn spawn(launch: &Launch, spawn: &Spawn) -> Result<Self, InvokeError> {
        let program = launcher::for_kind(launch.runtime.kind()).program(launch, spawn.run_as)?;
        if let Some(dir) = &spawn.state_dir {
            prepare_state_dir(dir, spawn.run_as, spawn.shared_group).map_err(|e| {
                InvokeError::Spawn(format!(
                    "cannot prepare the state directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let spawned = std::time::Instant::now();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| InvokeError::Spawn(format!("cannot open a Runtime API listener: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| InvokeError::Spawn(format!("cannot open a Runtime API listener: {e}")))?;
        let log = spawn.output.has_log().then(|| Arc::clone(&spawn.output));
        let (api, inbox) = RuntimeApi::new(
            &launch.arn(),
            launch.slots(),
            launch.queue_depth(),
            spawn.queue_behind,
            log,
        );
        let server = tokio::spawn(runtime_api::serve(listener, Arc::clone(&api)));

        // With a group shared by the service's functions, files they make are the group's to
        // write: umask 007, set by the shell that then becomes the program (`exec`: same pid).
        // (Setting it in the child before exec would take `pre_exec`, which is unsafe code.)
        let mut command = if spawn.shared_group {
            let mut sh = Command::new(SHELL);
            sh.args(["-c", "umask 007 && exec \"$0\" \"$@\""]).arg(&program.program);
            sh
        } else {
            Command::new(&program.program)
        };
        command
            .args(&program.args)
            .current_dir(&program.cwd)
            .env_clear()
            .envs(launch.environment(
                addr,
                &program,
                spawn.run_as,
                &spawn.service_env.read().unwrap_or_else(std::sync::PoisonError::into_inner),
            ))
            .envs(spawn.state_dir.as_ref().map(|dir| ("KEYGATE_STATE_DIR", dir)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group (pgid = its pid), so that stopping the function also stops
            // every process it started (see `Group`).
            .process_group(0)
            // Backstop for a reaper task dropped with the tokio runtime; normally the reaper
            // kills and waits itself.
            .kill_on_drop(true);
        if let Some(RunAs { uid, gid }) = spawn.run_as {
            // As root, the standard library also drops supplementary groups (`setgroups(0)`).
            command.uid(uid).gid(gid);
        }
        let mut child = match crate::reaper::spawn(&mut command) {
            Ok(child) => child,
            Err(err) => {
                server.abort();
                let hint = match spawn.run_as {
                    Some(RunAs { uid, gid })
                        if err.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        format!(
                            " (functions run as uid {uid}, gid {gid}: the directory {} and the \
                             function's code must be readable and searchable by that user; see \
                             --function-user)",
                            program.cwd.display()
                        )
                    }
                    _ => String::new(),
                };
                return Err(InvokeError::Spawn(format!(
                    "cannot start {}: {err}{hint}",
                    program.program.display()
                )));
            }
        };
        let pid = child.id();
        if let (Some(groups), Some(pid)) = (&spawn.group_watch, pid) {
            groups.started(pid);
        }
        let group_watch = spawn.group_watch.clone();
        let function: Arc<str> = Arc::from(launch.function_name.as_str());
        // (No pid: already reaped, so nobody may connect; the reaper records the exit.)
        if let Some(pid) = pid {
            // The uid its processes run as; with a uid of its own (`shared_group`: as root, a
            // uid per function) that alone identifies them.
            let uid = spawn.run_as.map_or_else(|| nix::unistd::geteuid().as_raw(), |r| r.uid);
            api.set_owner(Owner {
                expected: crate::peer::Expected { root: pid, uid, exclusive: spawn.shared_group },
                listener: addr,
                function: Arc::clone(&function),
            });
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(output::forward_output(stdout, Arc::clone(&spawn.output), "stdout"));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(output::forward_output(stderr, Arc::clone(&spawn.output), "stderr"));
        }
        tracing::info!(
            function = %function,
            pid,
            runtime_api = %addr,
            "started function process (cold start)"
        );

        let shared = Arc::new(ProcShared {
            api,
            pid,
            kill: Notify::new(),
            killed_by_host: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            warm: AtomicBool::new(false),
            reaped: watch::channel(false).0,
        });
        let reaper_shared = Arc::clone(&shared);
        let group = Group(pid);
        tokio::spawn(async move {
            let shared = reaper_shared;
            let status = tokio::select! {
                status = child.wait() => status,
                () = shared.kill.notified() => {
                    group.kill();
                    if let Err(err) = child.start_kill() {
                        tracing::debug!(function = %function, pid, %err, "kill failed (already exited?)");
                    }
                    child.wait().await
                }
            };
            crate::reaper::forget(pid);
            // The function is gone, and so goes whatever it left running in its group (as Lambda
            // tears down the whole environment), and whatever left its group (`crate::reaper`).
            group.kill_last();
            if let (Some(groups), Some(pid)) = (&group_watch, pid) {
                groups.stopped(pid);
            }
            let _ = tokio::task::spawn_blocking(crate::reaper::kill_orphans).await;
            let status = match status {
                Ok(status) => status.to_string(),
                Err(err) => format!("wait failed: {err}"),
            };
            let killed = shared.killed_by_host.load(Ordering::Acquire);
            let phase = match shared.api.phase() {
                Phase::Init => "during init, before asking for an invocation",
                Phase::Idle => "between invocations",
                Phase::Busy => "while handling an invocation",
            };
            let message = if killed {
                format!("the process was stopped by the function host ({status})")
            } else {
                format!("the process exited {phase} ({status})")
            };
            // Record the death first: from now on the pool skips this process and a `/next`
            // still parked for it hands out no event. Then read what it sent to its end: an
            // answer it wrote just before dying still counts (and says which queued event
            // started).
            shared.api.fail(Failure::Exited(message));
            shared.api.drain(DRAIN_WAIT).await;
            server.abort();
            if killed {
                tracing::debug!(function = %function, pid, %status, "function process stopped");
            } else {
                tracing::warn!(function = %function, pid, %status, "function process exited {phase}");
            }
            shared.reaped.send_replace(true);
        });

        let report = Report {
            output: Arc::clone(&spawn.output),
            memory_size: launch.memory_size,
            spawned,
            first: AtomicBool::new(true),
            peak: std::sync::Mutex::new(None),
        };
        Ok(Self {
            shared,
            inbox,
            answered: AtomicU64::new(0),
            queue_depth: launch.queue_depth(),
            in_flight: std::sync::atomic::AtomicI64::new(0),
            report,
        })
    }

    pub(crate) fn shared(&self) -> Arc<ProcShared> {
        Arc::clone(&self.shared)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.shared.pid
    }

    /// Whether the process can still take an event.
    pub(crate) fn is_usable(&self) -> bool {
        !self.shared.is_retired() && self.shared.api.failure().borrow().is_none()
    }

    /// Counts an answered invocation; true when that makes `limit`, so the process is to retire.
    /// Marks the process warm; `true` the first time.
    pub(crate) fn mark_warm(&self) -> bool {
        !self.shared.warm.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn count_answer(&self, limit: u64) -> bool {
        self.answered.fetch_add(1, Ordering::AcqRel) + 1 == limit
    }

    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }

    /// Counts a slot handed out (`1`) or given back (`-1`).
    pub(crate) fn handed(&self, change: i64) {
        self.in_flight.fetch_add(change, Ordering::AcqRel);
    }

    /// Slots of this process handed out to invocations now.
    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether a free slot of this process is of use to an invocation now: it runs nothing, or
    /// it [keeps up](Process::keeps_up) so an event may wait behind the one it runs.
    pub(crate) fn takes_another(&self) -> bool {
        self.in_flight() == 0 || self.keeps_up()
    }

    /// Whether an event may be queued behind the one this process runs: it takes queued events
    /// and answers them fast ([`RuntimeApi::keeps_up`]).
    pub(crate) fn keeps_up(&self) -> bool {
        self.queue_depth > 0 && self.shared.api.keeps_up()
    }

    /// Takes no new invocations from now on; those running finish.
    pub(crate) fn retire(&self) {
        self.shared.retired.store(true, Ordering::Release);
    }

    /// Hands `event` to the process and waits for its answer, its death or `deadline`, whichever
    /// comes first.
    pub(crate) async fn invoke(&self, event: Bytes, deadline: Instant) -> Handed {
        let mut failure = self.shared.api.failure();
        if let Some(f) = failure.borrow().clone() {
            return Handed::refused(f.into());
        }
        let (reply, answer) = oneshot::channel();
        let start = Arc::new(Start::default());
        let mut request_id = [0; uuid::fmt::Hyphenated::LENGTH];
        let request_id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut request_id).to_owned();
        // Platform lines only with a function log: no copy of the id otherwise. (`START` is the
        // Runtime API's, said when the event starts.)
        let logged = self.report.output.has_log().then(|| request_id.clone());
        let invocation = Invocation {
            request_id,
            event,
            deadline_ms: epoch_ms(deadline),
            trace_id: runtime_api::new_trace_id(),
            reply,
            start: Arc::clone(&start),
        };
        // The caller holds one of the process's slots, and the inbox has room for one event per
        // slot, so it is never full; a closed inbox means the process is unusable.
        if self.inbox.try_send(invocation).is_err() {
            return Handed::refused(InvokeError::Crashed(
                "the process no longer takes events".to_owned(),
            ));
        }
        let mut answer = answer;
        let mut late = None;
        // `biased`: an answer that arrived just before the process exited still counts.
        let result = tokio::select! {
            biased;
            answer = &mut answer => Ok(match answer {
                Ok(Outcome::Response(body)) => Ok(body),
                Ok(Outcome::Error { error_type, message }) => {
                    Err(InvokeError::FunctionError { error_type, message })
                }
                Err(_) => Err(InvokeError::Crashed("the runtime dropped the invocation".to_owned())),
            }),
            // (The failure, cloned: the watch's guard must not be held across an await.)
            failed = failure.wait_for(Option::is_some) => Err(failed.ok().and_then(|f| f.clone())),
            () = tokio::time::sleep_until(deadline) => {
                late = Some(answer);
                Ok(Err(InvokeError::Timeout))
            }
        };
        let result = match result {
            Err(failed) => {
                // Queued delivery: whether this event started is known once what the dead
                // process sent has been read (the reaper drains its connections right after).
                if matches!(failed, Some(Failure::Exited(_))) && self.queue_depth > 0 {
                    self.shared.api.until_drained().await;
                }
                Err(failed.map_or_else(
                    || InvokeError::Crashed("the process is gone".to_owned()),
                    InvokeError::from,
                ))
            }
            Ok(answered) => answered,
        };
        let started = start.at();
        if let (Some(id), Some(started)) = (&logged, started) {
            self.log_end(id, started, &result);
        }
        Handed { result, delivered: started.is_some(), late }
    }

    /// Lambda's `END` and `REPORT` lines for an invocation the runtime `started` (and a
    /// `Task timed out` line before them for a timeout).
    fn log_end(
        &self,
        request_id: &str,
        started: std::time::Instant,
        result: &Result<Bytes, InvokeError>,
    ) {
        let now = std::time::Instant::now();
        let init_end = self.shared.api.initialized_at();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let duration = ms(now.saturating_duration_since(started));
        let out = &self.report.output;
        if matches!(result, Err(InvokeError::Timeout)) {
            let stamp = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            out.platform(&format!(
                "{stamp} {request_id} Task timed out after {:.2} seconds",
                duration / 1000.0
            ));
        }
        out.platform(&format!("END RequestId: {request_id}"));
        let mut line = format!(
            "REPORT RequestId: {request_id}\tDuration: {duration:.2} ms\tBilled Duration: {} ms\t\
             Memory Size: {} MB\tMax Memory Used: {} MB",
            duration.ceil() as u64,
            self.report.memory_size,
            self.report.max_memory_mb(self.shared.pid)
        );
        if self.report.first.swap(false, Ordering::AcqRel)
            && let Some(init_end) = init_end
        {
            let init = ms(init_end.saturating_duration_since(self.report.spawned));
            line.push_str(&format!("\tInit Duration: {init:.2} ms"));
        }
        out.platform(&line);
    }

    /// Waits until the process answers an invocation that timed out (`late`), or dies.
    pub(crate) async fn until_answered(&self, late: oneshot::Receiver<Outcome>) {
        let mut failure = self.shared.api.failure();
        tokio::select! {
            _ = late => {}
            _ = failure.wait_for(Option::is_some) => {}
        }
    }

    /// Kills the process (whoever else holds its slots) and waits until it has been reaped.
    pub(crate) async fn kill_and_wait(&self) {
        self.retire();
        self.shared.kill();
        self.shared.wait_reaped().await;
    }
}

/// A function's process group (its pgid is the function's pid), killed with SIGKILL on
/// [`Group::kill`] and when dropped: a reaper task dropped with the runtime (keygate exiting
/// without a shutdown) still stops every process the function started. Processes that leave the
/// group (`setsid`, `setpgid`) escape it and are left to [`crate::reaper`]; a whole-environment
/// boundary (a cgroup, a PID namespace) needs privileges keygate does not assume.
struct Group(Option<u32>);

impl Group {
    fn kill(&self) {
        let Some(pgid) = self.0.and_then(|pid| i32::try_from(pid).ok()) else { return };
        // ESRCH (nothing left in the group) is the usual outcome after a clean exit.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

impl Group {
    /// Kills the group a last time, after the function itself has been reaped: from then on the
    /// group may be empty and its id free for reuse, so it is never signalled again.
    fn kill_last(mut self) {
        self.kill();
        self.0.take();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What became of an event handed to a process.
pub(crate) struct Handed {
    pub(crate) result: Result<Bytes, InvokeError>,
    /// Whether the event reached the process (one that did not may be retried elsewhere).
    pub(crate) delivered: bool,
    /// On a timeout, the answer the process may still post.
    pub(crate) late: Option<oneshot::Receiver<Outcome>>,
}

impl Handed {
    fn refused(err: InvokeError) -> Self {
        Self { result: Err(err), delivered: false, late: None }
    }
}

impl From<Failure> for InvokeError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::InitError(message) => Self::InitFailed(message),
            Failure::Exited(message) => Self::Crashed(message),
        }
    }
}

/// `deadline` as Unix epoch milliseconds (`Lambda-Runtime-Deadline-Ms`).
fn epoch_ms(deadline: Instant) -> u64 {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let at = SystemTime::now() + remaining;
    at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use keygate_types::FunctionSpec;

    use super::*;

    fn spec() -> FunctionSpec {
        FunctionSpec {
            name: "fn".to_owned(),
            function_name: "svc-dev-fn".to_owned(),
            handler: "bootstrap".to_owned(),
            runtime: keygate_types::Runtime::provided_al2023(),
            environment: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
            timeout_secs: 30,
            memory_size: 128,
            description: None,
            reserved_concurrency: None,
            max_concurrency: None,
            artifact: Some(PathBuf::from("/artifacts/0123456789abcdef")),
            package_patterns: Vec::new(),
            events: Vec::new(),
            streams: Vec::new(),
        }
    }

    #[test]
    fn a_launch_is_for_exactly_the_function_it_was_made_from() {
        let base = spec();
        let dir = Path::new("/srv/service");
        fn f(spec: &FunctionSpec) -> FunctionRef<'_> {
            FunctionRef {
                spec,
                base_dir: Path::new("/srv/service"),
                region: "eu-west-1",
                service: "svc",
                stage: "dev",
            }
        }
        let launch = Launch::from_ref(&f(&base)).unwrap();
        assert!(launch.is_for(&f(&base)));
        assert!(launch.is_for(&f(&base.clone())));
        // Fields that do not shape the process.
        let mut other = base.clone();
        other.description = Some("docs".to_owned());
        other.events = Vec::new();
        assert!(launch.is_for(&f(&other)));

        let changes: [fn(&mut FunctionSpec); 10] = [
            |s| s.name = "other".to_owned(),
            |s| s.function_name = "svc-prod-fn".to_owned(),
            |s| s.handler = "other".to_owned(),
            |s| _ = s.environment.insert("A".to_owned(), "2".to_owned()),
            |s| _ = s.environment.insert("B".to_owned(), "1".to_owned()),
            |s| s.timeout_secs = 31,
            |s| s.memory_size = 256,
            |s| s.artifact = Some(PathBuf::from("/artifacts/fedcba9876543210")),
            |s| s.max_concurrency = Some(4),
            |s| s.runtime = keygate_types::Runtime::parse("provided.al2").unwrap(),
        ];
        for (n, change) in changes.iter().enumerate() {
            let mut changed = base.clone();
            change(&mut changed);
            assert!(!launch.is_for(&f(&changed)), "change #{n}");
        }
        let mut no_artifact = base.clone();
        no_artifact.artifact = None;
        assert!(!launch.is_for(&f(&no_artifact)));
        assert!(Launch::from_ref(&f(&no_artifact)).is_err());
        let elsewhere = FunctionRef {
            spec: &base,
            base_dir: Path::new("/srv/other"),
            region: "eu-west-1",
            service: "svc",
            stage: "dev",
        };
        assert!(!launch.is_for(&elsewhere));
        let region = FunctionRef {
            spec: &base,
            base_dir: dir,
            region: "us-east-1",
            service: "svc",
            stage: "dev",
        };
        assert!(!launch.is_for(&region));
    }
}
