//! The warm processes of one function version (one [`PoolKey`]) and its concurrency limit.
//!
//! Concurrency: a fair (FIFO) semaphore with `reserved_concurrency` permits gates invocations. A
//! process is only ever used by the holder of a permit, and a new one is spawned only when no idle
//! process exists, so the number of live processes never exceeds the number of permits. Processes
//! are reused most-recently-used first (the warmest); one that fails in any way other than a
//! handler error is killed and replaced on the next demand.
//!
//! Scale-out on demand: when every process is busy, a permit holder first waits up to
//! `scale_out_after` for one to come back, and starts another process only if none does; while
//! the only process is still starting, it waits for that start rather than starting its own. A
//! function that answers within that delay runs on as few processes as its load needs (pinned to
//! one CPU, the example served 11.0k req/s on one process against 8.4k on two, at less memory:
//! docs/benchmarks.md); one that waits on I/O still reaches its reserved concurrency.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::process::{Launch, ProcShared, Process};
use crate::{FunctionRef, InvokeError};

/// Everything that affects a function's processes. Invocations of a function matching a key
/// ([`PoolKey::is_for`]) share its warm processes; a redeploy that changes any of it gets a fresh
/// pool.
#[derive(Debug)]
pub(crate) struct PoolKey {
    pub(crate) launch: Launch,
    pub(crate) runtime: String,
    pub(crate) concurrency: u32,
}

impl PoolKey {
    /// Whether invoking `f` with `concurrency` slots belongs to this pool. Cheap (compares, never
    /// allocates nor touches a file): it runs on every invocation.
    pub(crate) fn is_for(&self, f: &FunctionRef<'_>, concurrency: u32) -> bool {
        self.concurrency == concurrency && self.runtime == f.spec.runtime && self.launch.is_for(f)
    }
}

pub(crate) struct Pool {
    key: PoolKey,
    permits: Arc<Semaphore>,
    state: Mutex<PoolState>,
    /// Signalled when a process goes back to `idle`.
    freed: Notify,
    scale_out_after: Duration,
    max_invocations: u64,
}

struct PoolState {
    /// Processes waiting for an event, oldest first.
    idle: Vec<Process>,
    /// Every process started and not yet known to be reaped, busy ones included, so that
    /// shutdown can kill them all.
    live: Vec<Arc<ProcShared>>,
    last_used: Instant,
    /// Processes being spawned (not in `live` yet).
    starting: usize,
    /// Set by shutdown: nothing new starts and returning processes are killed.
    closed: bool,
}

impl Pool {
    pub(crate) fn new(key: PoolKey, scale_out_after: Duration, max_invocations: u64) -> Self {
        let permits = Arc::new(Semaphore::new(key.concurrency as usize));
        let state = PoolState {
            idle: Vec::new(),
            live: Vec::new(),
            last_used: Instant::now(),
            starting: 0,
            closed: false,
        };
        Self {
            key,
            permits,
            state: Mutex::new(state),
            freed: Notify::new(),
            scale_out_after,
            max_invocations,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Critical sections never panic midway, so a poisoned lock still guards consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn key(&self) -> &PoolKey {
        &self.key
    }

    fn function(&self) -> &str {
        &self.key.launch.function_name
    }

    /// Runs one invocation: waits for a slot (until `deadline`), then runs it on a warm or new
    /// process.
    pub(crate) async fn invoke(
        self: &Arc<Self>,
        event: Bytes,
        deadline: Instant,
    ) -> Result<Bytes, InvokeError> {
        self.lock().last_used = Instant::now();
        // Waiting here is cancel-safe: a caller that goes away simply leaves the queue.
        let permit = match tokio::time::timeout_at(
            deadline,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => {
                return Err(InvokeError::Spawn("the function host is shutting down".to_owned()));
            }
            Err(_elapsed) => {
                tracing::warn!(
                    function = %self.function(),
                    concurrency = self.key.concurrency,
                    "invocation waited for a free slot until its timeout"
                );
                return Err(InvokeError::Timeout);
            }
        };
        // From here on the invocation runs in its own task, holding the permit: if the caller
        // drops us (client gone), the process still finishes or times out, goes back to the pool
        // or is killed, and only then frees its slot. That keeps "busy processes <= permits" true
        // and never leaves a process stranded outside the pool.
        let pool = Arc::clone(self);
        let task = tokio::spawn(async move {
            let result = pool.run(event, deadline).await;
            drop(permit);
            result
        });
        match task.await {
            Ok(result) => result,
            Err(err) => {
                Err(InvokeError::Crashed(format!("internal error in the function host: {err}")))
            }
        }
    }

    async fn run(&self, event: Bytes, deadline: Instant) -> Result<Bytes, InvokeError> {
        loop {
            let (mut process, warm) = match self.take_idle() {
                Some(process) => (process, true),
                None => match self.wait_for_idle(deadline).await {
                    Some(process) => (process, true),
                    None => (self.spawn().await?, false),
                },
            };
            let (result, delivered) = process.invoke(event.clone(), deadline).await;
            match &result {
                // A handler error leaves the runtime healthy: it polls `/next` again.
                Ok(_) | Err(InvokeError::FunctionError { .. }) => {
                    process.answered += 1;
                    if process.answered >= self.max_invocations {
                        // Retired, as Lambda recycles execution environments: whatever the
                        // process accumulated (lambda_runtime's `setenv` of every trace id, say)
                        // goes with it. Dropping it kills it; the next demand starts a new one.
                        tracing::debug!(
                            function = %self.function(),
                            pid = process.pid(),
                            answered = process.answered,
                            "retiring function process"
                        );
                        drop(process);
                        self.freed.notify_waiters();
                    } else {
                        self.put_idle(process);
                    }
                    return result;
                }
                Err(err) => {
                    let pid = process.pid();
                    if matches!(err, InvokeError::Timeout) {
                        tracing::warn!(
                            function = %self.function(),
                            pid,
                            "Task timed out after {}.00 seconds; killing the process",
                            self.key.launch.timeout_secs
                        );
                    } else {
                        tracing::warn!(function = %self.function(), pid, %err, "invocation failed");
                    }
                    process.kill_and_wait().await;
                    // A warm process that died while idle never saw the event: running it on a
                    // fresh process cannot run the handler twice. A fresh process that dies is
                    // the function's own fault and is reported.
                    if warm && !delivered && !matches!(err, InvokeError::Timeout) {
                        continue;
                    }
                    return result;
                }
            }
        }
    }

    fn take_idle(&self) -> Option<Process> {
        let mut state = self.lock();
        while let Some(process) = state.idle.pop() {
            if process.is_usable() {
                return Some(process);
            }
            // Dead while idle: dropping it makes sure it is reaped.
        }
        None
    }

    /// With processes busy, waits up to `scale_out_after` (counted from when one is busy, so a
    /// cold start in progress is waited for, up to `until`) for one to come back. `None`: none
    /// did (or none will), so the caller starts a new one.
    async fn wait_for_idle(&self, until: Instant) -> Option<Process> {
        let mut scale_out_at: Option<Instant> = None;
        loop {
            // Registered before looking, so a process returned in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(process) = self.take_idle() {
                return Some(process);
            }
            {
                let state = self.lock();
                if !state.idle.is_empty() {
                    continue; // One came back just now: take it.
                }
                let busy = state.live.iter().any(|p| !p.is_reaped());
                if !busy && state.starting == 0 {
                    return None; // Nothing will come back.
                }
                if busy && scale_out_at.is_none() {
                    scale_out_at = Some(Instant::now() + self.scale_out_after);
                }
            }
            let wait_until = scale_out_at.map_or(until, |at| at.min(until));
            if tokio::time::timeout_at(wait_until, freed).await.is_err() {
                return None;
            }
        }
    }

    fn put_idle(&self, mut process: Process) {
        {
            let mut state = self.lock();
            state.last_used = Instant::now();
            if state.closed {
                return; // `process` is dropped (killed) on return.
            }
            process.idle_since = Instant::now();
            state.idle.push(process);
        }
        self.freed.notify_one();
    }

    async fn spawn(&self) -> Result<Process, InvokeError> {
        self.lock().starting += 1;
        let spawned = Process::spawn(&self.key.launch).await;
        let kept = {
            let mut state = self.lock();
            state.starting -= 1;
            match &spawned {
                Ok(process) if !state.closed => {
                    state.live.retain(|p| !p.is_reaped());
                    state.live.push(process.shared());
                    true
                }
                _ => false,
            }
        };
        // Invocations waiting for this start look again: at a busy process now, or at nothing.
        self.freed.notify_waiters();
        let process = spawned?;
        if kept {
            return Ok(process);
        }
        process.kill_and_wait().await;
        Err(InvokeError::Spawn("the function host is shutting down".to_owned()))
    }

    /// Stops idle processes unused for `idle_timeout`.
    pub(crate) fn reap_idle(&self, idle_timeout: Duration) {
        let expired: Vec<Process> = {
            let mut state = self.lock();
            let (expired, keep) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|p| p.idle_since.elapsed() >= idle_timeout);
            state.idle = keep;
            state.live.retain(|p| !p.is_reaped());
            expired
        };
        for process in &expired {
            tracing::debug!(function = %self.function(), pid = process.pid(), "stopping idle function process");
        }
        drop(expired); // Drop kills; the reapers wait for the exits.
    }

    /// No process left and nothing ran for `idle_timeout`.
    pub(crate) fn is_unused_for(&self, idle_timeout: Duration) -> bool {
        let state = self.lock();
        state.idle.is_empty()
            && state.live.iter().all(|p| p.is_reaped())
            && state.last_used.elapsed() >= idle_timeout
    }

    /// Shutdown: refuses new work, kills every process (idle or busy) and waits until each has
    /// been reaped.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let (idle, live) = {
            let mut state = self.lock();
            state.closed = true;
            (std::mem::take(&mut state.idle), std::mem::take(&mut state.live))
        };
        drop(idle);
        for process in &live {
            process.kill();
        }
        for process in live {
            process.wait_reaped().await;
        }
    }
}
