//! keygate-functions: the function host. It runs the functions of a deployed `serverless.yml`
//! as local processes behind the Lambda Runtime API, as AWS Lambda runs them: a `provided.*`
//! handler built with the official `lambda_runtime` / `lambda_http` crates, a Node.js or a Python
//! handler, each unchanged.
//!
//! Layout:
//! - [`artifact`]: staging a function's build output (`bootstrap` file, directory or cargo-lambda
//!   `.zip`) into an immutable, content-addressed directory at deploy time.
//! - `runtime_api`: the Lambda Runtime API (2018-06-01) one function process talks to; `peer`:
//!   which local process is at the other end of one of its connections.
//! - `launcher`: what a process of each runtime kind executes (`provided`: the function's own
//!   `bootstrap`; `node`, `python`: the machine's interpreter running keygate's bootstrap for
//!   that language, shipped inside the binary), and the deploy-time checks of a function
//!   ([`check_runtime`], [`check_handler`]).
//! - `process`: starting one function process (environment, working directory, user, process
//!   group) and killing/reaping it with its group; `output`: its stdout/stderr as log events,
//!   within the function's output budget ([`OutputLimit`]).
//! - `reaper`: keygate as a child subreaper, killing and reaping what escapes a function's
//!   process group.
//! - [`GroupWatch`]: an optional watcher told of each function process group (keygate's
//!   watchdog, which kills them if keygate dies without stopping them).
//! - `user`: a user to run as ([`RunAs`]) and [`protect_host_process`]; `identity`: who each
//!   function runs as ([`FunctionUsers`]: as root, a uid of its own per function).
//! - `pool`: the warm processes of one function version and its concurrency limit; `cpu`:
//!   whether another process would add throughput (scale-out).
//! - this file: [`FunctionHost`], the public entry point, and [`InvokeError`].
//!
//! Design: every process gets its own Runtime API listener on `127.0.0.1:0`, so the host always
//! knows which process is asking and can kill exactly the one that timed out. Processes start
//! lazily on the first invocation and stay warm; at most `reserved_concurrency` invocations of a
//! function run at once ([`default_reserved_concurrency`] processes' worth when unset) and further
//! invocations queue (FIFO) up to their own deadline. A process takes one invocation at a time, or
//! up to `maxConcurrency` for a Lambda Managed Instances function (`capacityProvider:` in
//! serverless.yml; the process sees `AWS_LAMBDA_MAX_CONCURRENCY` and polls `/next` that many
//! times, as `lambda_runtime::run_concurrent` does). There, as on AWS, a timeout fails only its
//! own invocation: the process is not killed, and its slot is taken until it answers (for
//! another `timeout` at most; then the process is taken as stuck and stopped). As on Lambda, a function runs with its task root (its staged
//! code) as its working directory.
//!
//! A one-at-a-time Node.js or Python process that keeps up also holds up to 8 events queued behind the
//! one it runs (queued delivery: see `runtime_api` and `pool`): one wakeup serves several, the
//! handler still sees one event at a time, and none runs twice. Queued events are not running,
//! so they do not count against `reserved_concurrency`, which then bounds the processes.
//!
//! The Runtime API listeners are on loopback only, and each admits connections only from its own
//! process and that process's descendants (`peer`: the client socket's owner uid from a netlink
//! lookup, and where functions share a uid its holder, found through `/proc`); any other local
//! process is closed on without an answer. Request ids are random
//! UUIDs and every input from that side is treated as untrusted.
//!
//! Event and response bodies are never logged: events carry API keys
//! (`requestContext.identity.apiKey`). A function's stdout/stderr lines are emitted as `tracing`
//! events with target `keygate::function` and a `function` field.

mod ansi;
pub mod artifact;
mod cpu;
mod identity;
mod launcher;
mod output;
mod peer;
mod pool;
mod process;
mod reaper;
mod runtime_api;
mod stats;
mod user;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use keygate_types::{FunctionSpec, ServiceDefinition};
use tokio::time::Instant;

pub use artifact::{ArtifactError, stage_artifact, stage_code};
pub use identity::{DEFAULT_ID_RANGE, FunctionUsers, IdRange};
pub use launcher::{check_handler, check_runtime};
pub use output::OutputLimit;
pub use reaper::spare_process;
pub use stats::FunctionStats;
pub use user::{DEFAULT_FUNCTION_USER, RunAs, RunAsError, check_reachable, protect_host_process};

use pool::{Pool, PoolKey};
use process::{Launch, Spawn};

/// How many processes of one function may run at once when its `reservedConcurrency` is unset:
/// twice the CPUs this process may run on (`taskset`, cgroups), at least 2. AWS's limit is the
/// account's unreserved concurrency, typically 1000; on one machine, processes beyond the CPUs
/// only take turns on them: pinned to one CPU, 4 processes of the example served 6.4k req/s at
/// 60 MiB and 2 served 8.4k at 48 MiB (docs/benchmarks.md). Functions that mostly wait (on a
/// database, another service) should set `reservedConcurrency` to what they need.
pub fn default_reserved_concurrency() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u32::try_from(cpus.saturating_mul(2)).unwrap_or(u32::MAX).max(2)
}

/// Settings of a [`FunctionHost`].
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// How long a warm process may sit idle before it is stopped (default 10 minutes). The next
    /// invocation after that is a cold start again.
    pub idle_timeout: Duration,
    /// Processes per function when its `reservedConcurrency` is unset (default
    /// [`default_reserved_concurrency`]).
    pub default_concurrency: u32,
    /// With every process of a function busy, how long an invocation waits for one to come back
    /// before another process is started (default 20 ms). A function that answers faster runs
    /// on as few processes as its load needs; one that waits on I/O scales out to its reserved
    /// concurrency, each new process that much later.
    pub scale_out_after: Duration,
    /// Queued delivery (Node.js and Python, one invocation at a time): with every process busy,
    /// waiting invocations are handed ahead of time to one whose recent invocations took under
    /// this long on average (default 1 ms), so that one wakeup of it serves several. Zero: never.
    pub queue_behind: Duration,
    /// A process that has answered this many invocations per slot (one, or a managed-instances
    /// function's `maxConcurrency`) is stopped and replaced on the next demand (default 25,000),
    /// as Lambda recycles execution environments: what a long-lived process accumulates is
    /// bounded. (Every `lambda_runtime` function polling one event at a time grows ~130 bytes per
    /// invocation: it `setenv`s each trace id and glibc keeps every value, ~3 MB per 25,000;
    /// docs/benchmarks.md.)
    pub max_invocations: u64,
    /// Who function processes run as: keygate's own user, one named user, or (as root, by
    /// default) a uid per function and a gid per service stage. See [`FunctionUsers::for_host`].
    pub users: FunctionUsers,
    /// How much of a function's output is logged; the rest is dropped and counted.
    pub output_limit: OutputLimit,
    /// Told of every function process group as it starts and once it is stopped, for a watcher
    /// that kills the groups still running if keygate dies without stopping them (see
    /// [`GroupWatch`]).
    pub group_watch: Option<Arc<dyn GroupWatch>>,
    /// Gets every line a function prints (within its output budget) and Lambda's platform lines
    /// for each invocation (`START`, `END`, `REPORT`), for `keygate logs` and `keygate invoke`
    /// (see [`FunctionLog`]).
    pub function_log: Option<Arc<dyn FunctionLog>>,
    /// Where each service's state directory goes (`<root>/<service>/<stage>`, made on first
    /// need, private to the function user): a writable place kept across restarts, in
    /// `KEYGATE_STATE_DIR`, which the functions of one service and stage share and nothing else
    /// sees. `None`: functions get none (the variable is not set).
    pub state_root: Option<PathBuf>,
}

/// Where a function's log lines go besides `tracing`: its own output and Lambda's platform
/// lines (`START RequestId: <id> Version: $LATEST`, `END RequestId: <id>`, `REPORT RequestId:
/// <id>\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 41
/// MB`, plus `\tInit Duration: ...` after a cold start). Called from output tasks and serving
/// tasks: it must return at once (queue the line, never write a file in the call).
pub trait FunctionLog: fmt::Debug + Send + Sync {
    /// One line of the function `function` (its `AWS_LAMBDA_FUNCTION_NAME`), without its line
    /// break.
    fn line(&self, function: &str, line: &str);
}

/// A watcher of function process groups. Both calls are made from serving tasks and must
/// return at once (queue the news, never write to a pipe or file in the call).
pub trait GroupWatch: fmt::Debug + Send + Sync {
    /// A function process started in process group `pgid` (its pid).
    fn started(&self, pgid: u32);
    /// The function process leading group `pgid` has been reaped and its group killed a last
    /// time: the id may be reused from now on, so the group must not be signalled any more.
    fn stopped(&self, pgid: u32);
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(600),
            default_concurrency: default_reserved_concurrency(),
            scale_out_after: Duration::from_millis(20),
            queue_behind: Duration::from_millis(1),
            max_invocations: 25_000,
            users: FunctionUsers::Own,
            output_limit: OutputLimit::default(),
            group_watch: None,
            function_log: None,
            state_root: None,
        }
    }
}

/// The function to invoke: its spec plus the service facts that shape its process.
#[derive(Debug, Clone, Copy)]
pub struct FunctionRef<'a> {
    pub spec: &'a FunctionSpec,
    /// The service directory (`ServiceDefinition::base_dir`): relative artifact paths resolve
    /// against it.
    pub base_dir: &'a Path,
    /// `ServiceDefinition::region`: `AWS_REGION` and the region in the function ARN.
    pub region: &'a str,
    /// `ServiceDefinition::service` and `::stage`: whose state directory the function gets
    /// ([`HostOptions::state_root`]).
    pub service: &'a str,
    pub stage: &'a str,
}

impl<'a> FunctionRef<'a> {
    /// `spec`, a function of `def`, with the service facts `def` holds.
    pub fn of(def: &'a ServiceDefinition, spec: &'a FunctionSpec) -> Self {
        Self {
            spec,
            base_dir: &def.base_dir,
            region: &def.region,
            service: &def.service,
            stage: &def.stage,
        }
    }
}

/// Why an invocation produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The function ran past `timeout_secs` (or waited that long for a free slot); its process
    /// was killed.
    #[error("task timed out")]
    Timeout,
    /// The handler failed and the runtime posted `/runtime/invocation/{id}/error`.
    #[error("function error {error_type}: {message}")]
    FunctionError { error_type: String, message: String },
    /// The process exited (or was killed) before answering.
    #[error("function process crashed: {0}")]
    Crashed(String),
    /// The runtime posted `/runtime/init/error`.
    #[error("function failed to initialise: {0}")]
    InitFailed(String),
    /// Keygate cannot run this function (runtime, configuration).
    #[error("{0}")]
    Unsupported(String),
    /// The process could not be started (missing artifact, not executable, host shutting down).
    #[error("cannot start function: {0}")]
    Spawn(String),
}

/// Runs functions as warm local processes. Cheap to clone: clones share the same pools.
///
/// Dropping the last clone stops every process in the background; call [`FunctionHost::shutdown`]
/// to stop them and wait until they are gone.
#[derive(Clone)]
pub struct FunctionHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    opts: HostOptions,
    /// One pool per function fingerprint ([`PoolKey`]), grouped by `AWS_LAMBDA_FUNCTION_NAME`: a
    /// redeploy that changes anything about the process gets a fresh pool (next to the old one
    /// until the sweeper forgets it) while an unchanged function keeps its warm processes.
    pools: Mutex<Pools>,
    /// Each function's counters, by `AWS_LAMBDA_FUNCTION_NAME`, for the host's life (its pools
    /// come and go).
    counters: Mutex<HashMap<String, Arc<stats::Counters>>>,
    /// Variables for every function process started from now on (see
    /// [`FunctionHost::set_service_env`]).
    service_env: Arc<RwLock<Vec<(String, String)>>>,
    shutting_down: AtomicBool,
    sweeper_started: AtomicBool,
}

/// The pools by `AWS_LAMBDA_FUNCTION_NAME`.
type Pools = HashMap<String, Vec<Arc<Pool>>>;

impl fmt::Debug for FunctionHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pools: usize = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(Vec::len)
            .sum();
        f.debug_struct("FunctionHost")
            .field("opts", &self.inner.opts)
            .field("pools", &pools)
            .finish_non_exhaustive()
    }
}

impl Default for FunctionHost {
    fn default() -> Self {
        Self::new(HostOptions::default())
    }
}

impl FunctionHost {
    /// Creates a host. No process starts until a function is invoked.
    pub fn new(opts: HostOptions) -> Self {
        reaper::enable();
        Self {
            inner: Arc::new(HostInner {
                opts,
                pools: Mutex::new(HashMap::new()),
                counters: Mutex::new(HashMap::new()),
                service_env: Arc::default(),
                shutting_down: AtomicBool::new(false),
                sweeper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Who function processes run as.
    pub fn users(&self) -> &FunctionUsers {
        &self.inner.opts.users
    }

    /// Invokes `f` with the raw event JSON and returns the function's response body verbatim (the
    /// gateway judges whether it is a valid proxy response).
    ///
    /// Waits (FIFO) for a free slot when the function already runs `reserved_concurrency`
    /// invocations; the function's timeout covers that wait, a cold start and the run. Dropping
    /// the returned future while it waits in the queue leaves the queue; once the event has been
    /// handed to a process the invocation runs to completion (or timeout) in the background, as
    /// a Lambda function keeps running after its caller has gone.
    pub async fn invoke(&self, f: &FunctionRef<'_>, event: Bytes) -> Result<Bytes, InvokeError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(InvokeError::Spawn("the function host is shutting down".to_owned()));
        }
        let spec = f.spec;
        // Unset: the default number of processes, each taking as many invocations at once as it
        // may (one, or a Lambda Managed Instances function's `maxConcurrency`).
        let concurrency = spec.reserved_concurrency.unwrap_or_else(|| {
            self.inner.opts.default_concurrency.saturating_mul(process::slots(spec.max_concurrency))
        });
        if concurrency == 0 {
            return Err(InvokeError::Unsupported(format!(
                "function {} has reservedConcurrency 0, so every invocation is throttled",
                spec.name
            )));
        }
        // The deadline starts now: queueing and a cold start count against the timeout, so a
        // caller never waits longer than `timeout_secs` (plus the kill) for an answer.
        let deadline = Instant::now() + Duration::from_secs(u64::from(spec.timeout_secs.max(1)));
        let pool = self.pool_for(f, concurrency)?;
        self.start_sweeper();
        pool.invoke(event, deadline).await
    }

    /// Sets the variables of the AWS services keygate provides to functions (the DynamoDB
    /// endpoint, the local credentials), for every process started from now on. Names Lambda
    /// reserves (`AWS_ACCESS_KEY_ID`, ...) win over a function's `environment`; the others
    /// (`AWS_ENDPOINT_URL_DYNAMODB`) yield to it, so a function can still be pointed elsewhere.
    pub fn set_service_env(&self, env: Vec<(String, String)>) {
        *self.inner.service_env.write().unwrap_or_else(PoisonError::into_inner) = env;
    }

    /// Stops every function process and waits until all have exited. Invocations in flight fail
    /// with [`InvokeError::Crashed`]; later ones fail with [`InvokeError::Spawn`].
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        let pools: Vec<Arc<Pool>> = {
            let mut map = self.inner.pools.lock().unwrap_or_else(PoisonError::into_inner);
            map.drain().flat_map(|(_, pools)| pools).collect()
        };
        for pool in pools {
            pool.close().await;
        }
        let _ = tokio::task::spawn_blocking(reaper::kill_orphans).await;
    }

    /// Each function's figures now, by `AWS_LAMBDA_FUNCTION_NAME` (sorted): every function
    /// invoked since the host started, its processes and busy slots summed over its pools.
    pub fn stats(&self) -> Vec<FunctionStats> {
        let mut stats: Vec<FunctionStats> = {
            let counters = self.inner.counters.lock().unwrap_or_else(PoisonError::into_inner);
            counters.iter().map(|(name, c)| FunctionStats::new(name, c)).collect()
        };
        stats.sort_by(|a, b| a.function.cmp(&b.function));
        let pools = self.inner.pools.lock().unwrap_or_else(PoisonError::into_inner);
        for s in &mut stats {
            for pool in pools.get(&s.function).map_or(&[][..], Vec::as_slice) {
                let (processes, busy) = pool.load();
                s.processes += processes;
                s.busy += busy;
            }
        }
        stats
    }

    /// The pool of `f`. Once it exists this is one map lookup by function name and a field-by-field
    /// comparison with the pool's key: no allocation, no file access.
    fn pool_for(&self, f: &FunctionRef<'_>, concurrency: u32) -> Result<Arc<Pool>, InvokeError> {
        if let Some(pool) = self.existing_pool(f, concurrency)? {
            return Ok(pool);
        }
        let key = PoolKey { launch: Launch::from_ref(f)?, concurrency };
        let mut map = self.lock_pools()?;
        let pools = map.entry(key.launch.function_name.clone()).or_default();
        // Another invocation may have created it meanwhile.
        if let Some(pool) = pools.iter().find(|p| p.key().is_for(f, concurrency)) {
            return Ok(Arc::clone(pool));
        }
        let opts = &self.inner.opts;
        let state_dir = opts.state_root.as_deref().and_then(|root| state_dir(root, f));
        let (run_as, shared_group) = match &opts.users {
            FunctionUsers::Own => (None, false),
            FunctionUsers::Shared(who) => (Some(*who), false),
            FunctionUsers::PerFunction(ids) => {
                use std::os::unix::fs::MetadataExt;
                let group_had =
                    state_dir.as_deref().and_then(|d| d.metadata().ok()).map(|m| m.gid());
                let group = format!("{}/{}", f.service, f.stage);
                let who =
                    ids.identity(&key.launch.function_name, &group, group_had).map_err(|e| {
                        InvokeError::Spawn(format!(
                            "cannot give function {} a user of its own: {e}",
                            key.launch.function_name
                        ))
                    })?;
                (Some(who), true)
            }
        };
        let spawn = Spawn {
            service_env: Arc::clone(&self.inner.service_env),
            state_dir,
            run_as,
            shared_group,
            group_watch: opts.group_watch.clone(),
            queue_behind: opts.queue_behind,
            output: Arc::new(output::OutputBudget::new(
                &key.launch.function_name,
                opts.output_limit,
                opts.function_log.clone(),
            )),
        };
        let max_invocations = opts.max_invocations.max(1);
        let counters = Arc::clone(
            self.inner
                .counters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key.launch.function_name.clone())
                .or_default(),
        );
        let pool = Arc::new(Pool::new(key, opts.scale_out_after, max_invocations, spawn, counters));
        pools.push(Arc::clone(&pool));
        Ok(pool)
    }

    fn existing_pool(
        &self,
        f: &FunctionRef<'_>,
        concurrency: u32,
    ) -> Result<Option<Arc<Pool>>, InvokeError> {
        let map = self.lock_pools()?;
        let pools = map.get(f.spec.function_name.as_str()).map_or(&[][..], Vec::as_slice);
        Ok(pools.iter().find(|p| p.key().is_for(f, concurrency)).map(Arc::clone))
    }

    fn lock_pools(&self) -> Result<MutexGuard<'_, Pools>, InvokeError> {
        let map = self.inner.pools.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the map lock: `shutdown` sets the flag before draining under the same
        // lock, so no pool can be added after the drain and escape the shutdown.
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(InvokeError::Spawn("the function host is shutting down".to_owned()));
        }
        Ok(map)
    }

    /// Starts (once, from inside the tokio runtime) the task that stops processes idle for longer
    /// than `idle_timeout`. It holds only a `Weak` so it ends when the host is dropped.
    fn start_sweeper(&self) {
        if self.inner.sweeper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<HostInner> = Arc::downgrade(&self.inner);
        let idle_timeout = self.inner.opts.idle_timeout;
        let period = (idle_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.shutting_down.load(Ordering::Acquire) {
                    break;
                }
                inner.sweep(idle_timeout);
                drop(inner);
                let _ = tokio::task::spawn_blocking(reaper::reap_exited).await;
            }
        });
    }
}

impl HostInner {
    /// Stops idle processes past `idle_timeout` and forgets pools nobody uses any more (for
    /// example the old version of a redeployed function).
    fn sweep(&self, idle_timeout: Duration) {
        let mut map = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, pools| {
            pools.retain(|pool| {
                pool.reap_idle(idle_timeout);
                // strong_count == 1: only the map holds the pool, so no invocation is queued or
                // running on it, and none can start without taking the map lock we hold.
                !(Arc::strong_count(pool) == 1 && pool.is_unused_for(idle_timeout))
            });
            !pools.is_empty()
        });
    }
}

/// The state directory of `f`'s service and stage under `root`, if their names can be path
/// components (the config allows letters, digits, `-` and `_`; anything else gets none rather
/// than a path outside `root`).
fn state_dir(root: &Path, f: &FunctionRef<'_>) -> Option<PathBuf> {
    let plain = |name: &str| {
        !name.is_empty()
            && name.len() <= 128
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    (plain(f.service) && plain(f.stage)).then(|| root.join(f.service).join(f.stage))
}
