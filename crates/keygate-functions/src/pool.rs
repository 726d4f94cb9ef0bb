//! The warm processes of one function version (one [`PoolKey`]) and its concurrency limit.
//!
//! Concurrency: a fair (FIFO) semaphore with `reserved_concurrency` permits gates invocations.
//! Each process has slots: one for a classic Lambda function, `maxConcurrency` for a Lambda
//! Managed Instances one (`AWS_LAMBDA_MAX_CONCURRENCY`). A slot is only ever used by the holder of
//! a permit, and a new process is spawned only when no free slot exists, so busy slots never
//! exceed the permits. Slots are reused most-recently-used first (the warmest process, and the
//! fullest one with several slots); a process that fails in any way other than a handler error
//! is killed (whatever else it was running fails with it) and replaced on the next demand.
//!
//! Queued delivery (a Node.js or Python function one at a time, `runtime_api`): each process also has
//! `queue_depth` slots for events queued behind the one it runs, used only when no process is
//! free and the busy one keeps up (answers in under a millisecond lately): an event that would
//! wait for a slot anyway waits in the process's socket instead, and one wakeup of the process
//! serves several. A free process is always preferred to a queue. Queued events are not
//! running: the concurrency bounds the processes, and the permits are the concurrency times one
//! plus the depth. When a process dies, the
//! events queued behind the one it ran never started and run on another process; one that
//! times out while queued is a 504 without stopping the process (the bootstrap skips it).
//!
//! Scale-out on demand: when every process is busy, a permit holder first waits up to
//! `scale_out_after` for one to come back, and starts another process only if none does; while
//! the only process is still starting, it waits for that start rather than starting its own.
//! Waiters are served in arrival order: a slot that comes back is handed to the one that has
//! waited longest, so that a waiter is not overtaken again and again until its wait passes the
//! delay (with a race for the slot instead, the Node benchmark ran on two processes where one
//! does: docs/benchmarks.md). A function that answers within that delay runs on as few processes
//! as its load needs (pinned to one CPU, the example served 11.0k req/s on one process against
//! 8.4k on two, at less memory); one that waits on I/O still reaches its reserved concurrency.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use crate::process::{Handed, Launch, ProcShared, Process, Spawn};
use crate::stats::Counters;

use crate::{FunctionRef, InvokeError};

/// The right to hand one invocation to a process. A process lives as long as one of its slots.
pub(crate) struct Slot {
    process: Arc<Process>,
    idle_since: Instant,
    /// Handed out (counted in the process's [`Process::handed`]) rather than idle.
    taken: bool,
}

impl Slot {
    fn new(process: Arc<Process>) -> Self {
        Self { process, idle_since: Instant::now(), taken: false }
    }

    /// Marks the slot handed out to an invocation.
    fn hand_out(mut self) -> Self {
        if !self.taken {
            self.taken = true;
            self.process.handed(1);
        }
        self
    }

    /// Marks the slot back from its invocation.
    fn give_back(&mut self) {
        if self.taken {
            self.taken = false;
            self.process.handed(-1);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Everything that affects a function's processes. Invocations of a function matching a key
/// ([`PoolKey::is_for`]) share its warm processes; a redeploy that changes any of it gets a fresh
/// pool.
#[derive(Debug)]
pub(crate) struct PoolKey {
    pub(crate) launch: Launch,
    pub(crate) concurrency: u32,
}

impl PoolKey {
    /// Whether invoking `f` with `concurrency` slots belongs to this pool. Cheap (compares, never
    /// allocates nor touches a file): it runs on every invocation.
    pub(crate) fn is_for(&self, f: &FunctionRef<'_>, concurrency: u32) -> bool {
        self.concurrency == concurrency && self.launch.is_for(f)
    }
}

pub(crate) struct Pool {
    key: PoolKey,
    permits: Arc<Semaphore>,
    state: Mutex<PoolState>,
    /// Signalled when waiters should look again: a process started (its other slots are free)
    /// or was discarded (it will give nothing back).
    look_again: Notify,
    /// The last [`Pool::no_room_for_another`] verdict and when it was made.
    room: Mutex<Option<(Instant, bool)>>,
    scale_out_after: Duration,
    max_invocations: u64,
    /// Slots per process: `slots()` plus the queue depth.
    slots_per_process: u32,
    /// Queued delivery ([`crate::process::Launch::queue_depth`] > 0).
    queued: bool,
    /// Processes at most: the concurrency (with queued delivery the permits also cover queued
    /// events, so the permits alone do not bound the processes).
    max_processes: usize,
    /// Invocations let in at once: the concurrency, times one plus the queue depth.
    total_permits: usize,
    spawn_with: Spawn,
    /// The function's counters (shared with its other pools).
    counters: Arc<Counters>,
}

struct PoolState {
    /// Free slots, oldest first.
    idle: Vec<Slot>,
    /// Invocations waiting for a slot, longest first: a slot that comes back is handed to the
    /// first one still waiting.
    waiting: VecDeque<oneshot::Sender<Slot>>,
    /// Every process started and not yet known to be reaped, busy ones included, so that
    /// shutdown can kill them all.
    live: Vec<Arc<ProcShared>>,
    last_used: Instant,
    /// Processes being spawned (not in `live` yet).
    starting: usize,
    /// Set by shutdown: nothing new starts and returning processes are killed.
    closed: bool,
}

/// What waiting for a free slot came to ([`Pool::wait_for_idle`]).
enum Waited<'a> {
    Slot(Slot),
    /// None came back: start a process, this one reserved already (none was running or
    /// starting), or, past the scale-out delay, another if the pool may have it.
    Start(Option<Starting<'a>>),
}

/// A process start counted in [`PoolState::starting`] (so that other invocations wait for it);
/// the count is given back when it is dropped unless [`Starting::end`] did.
struct Starting<'a> {
    pool: &'a Pool,
    ended: bool,
}

impl<'a> Starting<'a> {
    fn reserve(pool: &'a Pool, state: &mut PoolState) -> Self {
        state.starting += 1;
        Self { pool, ended: false }
    }

    /// Ends the start inside the critical section that records its outcome.
    fn end(mut self, state: &mut PoolState) {
        state.starting -= 1;
        self.ended = true;
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.pool.lock().starting -= 1;
            // Those waiting for this start look again.
            self.pool.look_again.notify_waiters();
        }
    }
}

/// How many scale-out delays invocations wait for a busy process that has not answered yet
/// before another starts: a cold Node.js process's first invocations (30-60 ms on the
/// benchmark's host) otherwise made the pool start a second process it then kept.
const WARMING_FACTOR: u32 = 10;

impl Pool {
    /// A pool whose processes retire after `max_invocations` answers per slot.
    pub(crate) fn new(
        key: PoolKey,
        scale_out_after: Duration,
        max_invocations: u64,
        spawn_with: Spawn,
        counters: Arc<Counters>,
    ) -> Self {
        let max_invocations = max_invocations.saturating_mul(u64::from(key.launch.slots()));
        let queue_depth = key.launch.queue_depth();
        let slots_per_process = key.launch.slots() + queue_depth;
        // Queued events are not running: the concurrency bounds the processes (each runs one
        // event at a time), and each may hold its queue besides.
        let max_processes = (key.concurrency as usize).max(1);
        let total_permits = max_processes.saturating_mul(1 + queue_depth as usize);
        let permits = Arc::new(Semaphore::new(total_permits));
        let state = PoolState {
            idle: Vec::new(),
            waiting: VecDeque::new(),
            live: Vec::new(),
            last_used: Instant::now(),
            starting: 0,
            closed: false,
        };
        Self {
            key,
            permits,
            state: Mutex::new(state),
            look_again: Notify::new(),
            room: Mutex::new(None),
            scale_out_after,
            max_invocations,
            slots_per_process,
            queued: queue_depth > 0,
            max_processes,
            total_permits,
            spawn_with,
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Critical sections never panic midway, so a poisoned lock still guards consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn key(&self) -> &PoolKey {
        &self.key
    }

    /// Processes running and slots in use now.
    pub(crate) fn load(&self) -> (u64, u64) {
        let processes = self.lock().live.iter().filter(|p| !p.is_reaped()).count() as u64;
        let free = self.permits.available_permits();
        (processes, self.total_permits.saturating_sub(free) as u64)
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
                let timed_out = Err(InvokeError::Timeout);
                self.counters.answered(&timed_out);
                return timed_out;
            }
        };
        // From here on the invocation runs in its own task, holding the permit: if the caller
        // drops us (client gone), the process still finishes or times out, goes back to the pool
        // or is killed, and only then frees its slot. That keeps "busy processes <= permits" true
        // and never leaves a process stranded outside the pool.
        let pool = Arc::clone(self);
        let task = tokio::spawn(async move {
            let result = pool.run(event, deadline, permit).await;
            // Counted here, so an invocation whose caller went away counts too.
            pool.counters.answered(&result);
            result
        });
        match task.await {
            Ok(result) => result,
            Err(err) => {
                Err(InvokeError::Crashed(format!("internal error in the function host: {err}")))
            }
        }
    }

    /// Runs the invocation holding `permit`, which is freed when it returns (or, for a
    /// managed-instances invocation that timed out, when its slot comes back).
    async fn run(
        self: &Arc<Self>,
        event: Bytes,
        deadline: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Result<Bytes, InvokeError> {
        loop {
            let (slot, warm) = match self.take_idle() {
                Some(slot) => (slot, true),
                None => match self.wait_for_idle(deadline).await {
                    Waited::Slot(slot) => (slot, true),
                    Waited::Start(reserved) => match self.spawn(reserved).await? {
                        Some(slot) => (slot, false),
                        // As many processes as the concurrency allows: wait for one of theirs.
                        None if Instant::now() < deadline => continue,
                        None => return Err(InvokeError::Timeout),
                    },
                },
            };
            let process = &slot.process;
            let Handed { result, delivered, late } = process.invoke(event.clone(), deadline).await;
            match &result {
                // A handler error leaves the runtime healthy: it polls `/next` again.
                Ok(_) | Err(InvokeError::FunctionError { .. }) => {
                    if process.mark_warm() {
                        // Waiters held back for a warming process now count from here.
                        self.look_again.notify_waiters();
                    }
                    if process.count_answer(self.max_invocations) {
                        // Retired, as Lambda recycles execution environments: whatever the
                        // process accumulated (the `setenv` of every trace id by lambda_runtime
                        // and by Node's `process.env`, say) goes with it. It is stopped when its
                        // last slot is dropped (its other invocations finish first); the next
                        // demand starts a new one. (Starting the successor first, so that no
                        // invocation waits for a cold start, had two processes' memory at the
                        // handover: the Node benchmark's peak RSS doubled.)
                        tracing::debug!(
                            function = %self.function(),
                            pid = process.pid(),
                            answered = process.answered(),
                            "retiring function process"
                        );
                        process.retire();
                        self.discard(slot);
                    } else {
                        self.put_idle(slot);
                    }
                    return result;
                }
                Err(InvokeError::Timeout)
                    if self.key.launch.slots() > 1 || (self.queued && !delivered) =>
                {
                    // Lambda Managed Instances, or an event still queued (never started): a
                    // timeout fails that invocation only; the process and its other invocations
                    // run on (a queued event past its deadline is skipped by the bootstrap, which
                    // answers it so). The slot (and the permit) stay taken
                    // until the process answers, so it never holds more events than it asked
                    // for and a function whose handlers hang cannot make the pool grow without
                    // bound. One that has not answered after another timeout's length is stuck:
                    // its process is stopped, freeing every slot it held.
                    tracing::warn!(
                        function = %self.function(),
                        pid = process.pid(),
                        "Task timed out after {}.00 seconds",
                        self.key.launch.timeout_secs
                    );
                    let pool = Arc::clone(self);
                    let grace = Duration::from_secs(u64::from(self.key.launch.timeout_secs.max(1)));
                    tokio::spawn(async move {
                        let _permit = permit;
                        // (`late` is always there after a timeout; without it, nothing will
                        // bring the slot back, as with a stuck invocation.)
                        let answered = match late {
                            Some(late) => {
                                tokio::time::timeout(grace, slot.process.until_answered(late))
                                    .await
                                    .is_ok()
                            }
                            None => false,
                        };
                        if answered {
                            pool.put_idle(slot);
                            return;
                        }
                        tracing::warn!(
                            function = %pool.function(),
                            pid = slot.process.pid(),
                            "a timed-out invocation has still not answered after another {} \
                             seconds; stopping its process",
                            grace.as_secs()
                        );
                        slot.process.kill_and_wait().await;
                        pool.discard(slot);
                    });
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
                    self.discard(slot);
                    // A warm process that died while idle never saw the event: running it on a
                    // fresh process cannot run the handler twice. A fresh process that dies is
                    // the function's own fault and is reported.
                    if warm && !delivered && !matches!(err, InvokeError::Timeout) {
                        if self.queued {
                            tracing::info!(
                                function = %self.function(),
                                pid,
                                "an event queued on a process that stopped never started; \
                                 running it on another process"
                            );
                        }
                        continue;
                    }
                    return result;
                }
            }
        }
    }

    fn take_idle(&self) -> Option<Slot> {
        self.take_idle_from(&mut self.lock())
    }

    fn take_idle_from(&self, state: &mut PoolState) -> Option<Slot> {
        if self.queued {
            // Dead or retired: dropping the slot makes sure the process is stopped and reaped.
            state.idle.retain(|s| s.process.is_usable());
            // A process with nothing to do first (the most recently used), else a place in
            // the queue of one that keeps up.
            let at = state
                .idle
                .iter()
                .rposition(|s| s.process.in_flight() == 0)
                .or_else(|| state.idle.iter().rposition(|s| s.process.takes_another()))?;
            return Some(state.idle.remove(at).hand_out());
        }
        while let Some(slot) = state.idle.pop() {
            if slot.process.is_usable() {
                return Some(slot.hand_out());
            }
            // Dead or retired: dropping the slot makes sure the process is stopped and reaped.
        }
        None
    }

    /// Gives up `slot`, whose process takes no more work (retired, or killed): its free slots go
    /// too, so the process stops once its running invocations are done, and invocations waiting
    /// for a slot look again (at another process, or at starting one).
    fn discard(&self, slot: Slot) {
        let forgotten: Vec<Slot> = {
            let mut state = self.lock();
            let (forgotten, keep) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|s| Arc::ptr_eq(&s.process, &slot.process));
            state.idle = keep;
            forgotten
        };
        // Outside the lock: the last slot of a process kills it.
        drop(forgotten);
        drop(slot);
        self.look_again.notify_waiters();
    }

    /// With every slot busy, waits up to `scale_out_after` (counted from when one is busy, so a
    /// cold start in progress is waited for, up to `until`) for one to come back, in line behind
    /// the invocations that waited first. [`Waited::Start`]: none did (or none will), so the
    /// caller starts a new process.
    async fn wait_for_idle(&self, until: Instant) -> Waited<'_> {
        let mut scale_out_at: Option<Instant> = None;
        // This invocation's place in `waiting`, once it has one.
        let mut queued: Option<oneshot::Receiver<Slot>> = None;
        let found = loop {
            // Registered before looking, so a start or discard in between is not missed.
            let look_again = self.look_again.notified();
            tokio::pin!(look_again);
            look_again.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(slot) = self.take_idle_from(&mut state) {
                    break Waited::Slot(slot);
                }
                // Only a process that will give a slot back is worth waiting for: not one
                // retiring (it finishes what it runs, then stops).
                let usable = |p: &&Arc<ProcShared>| !p.is_reaped() && !p.is_retired();
                let busy = state.live.iter().any(|p| usable(&p));
                if !busy && state.starting == 0 {
                    // Nothing will come back. The start is counted before the lock is let go,
                    // so that the invocations arriving with this one wait for it rather than
                    // each starting a process of its own.
                    break Waited::Start(Some(Starting::reserve(self, &mut state)));
                }
                if busy {
                    // A process that has not answered yet is still warming up (cold code, a
                    // first connection): it is given longer before another starts beside it.
                    let warm = state.live.iter().filter(usable).any(|p| p.is_warm());
                    let delay = if warm {
                        self.scale_out_after
                    } else {
                        self.scale_out_after.saturating_mul(WARMING_FACTOR)
                    };
                    let at = Instant::now() + delay;
                    scale_out_at = Some(match scale_out_at {
                        // Only warming processes busy now (a retired one's successor, say):
                        // they get their whole delay from now, whatever was due before (a
                        // waiter from the warm one's time would otherwise start another beside
                        // a successor still loading, and the pool kept both).
                        Some(t) if !warm => t.max(at),
                        Some(t) => t.min(at),
                        None => at,
                    });
                }
                if queued.is_none() {
                    let (tx, rx) = oneshot::channel();
                    state.waiting.retain(|w| !w.is_closed());
                    state.waiting.push_back(tx);
                    queued = Some(rx);
                }
            }
            let wait_until = scale_out_at.map_or(until, |at| at.min(until));
            let Some(rx) = queued.as_mut() else { continue };
            tokio::select! {
                handed = rx => match handed {
                    Ok(slot) => return Waited::Slot(slot),
                    // The pool dropped the queue (shutdown): look again.
                    Err(_) => queued = None,
                },
                () = &mut look_again => {}
                () = tokio::time::sleep_until(wait_until) => {
                    // No CPU is left for another process: it would share the busy CPUs, not add
                    // throughput (the wait is for CPU, not for a handler waiting on I/O). Wait
                    // on, and look again after another delay.
                    if wait_until < until && self.no_room_for_another().await {
                        scale_out_at = Some(Instant::now() + self.scale_out_after);
                        continue;
                    }
                    break Waited::Start(None);
                }
            }
        };
        // Leave the line; a slot handed over meanwhile is kept, not lost.
        if let Some(mut rx) = queued {
            rx.close();
            if let Ok(slot) = rx.try_recv() {
                match found {
                    // (A reserved start is given back.)
                    Waited::Start(_) => return Waited::Slot(slot),
                    Waited::Slot(_) => self.put_idle(slot),
                }
            }
        }
        found
    }

    /// Whether another process would add no throughput: keygate and this pool's processes keep
    /// every CPU keygate may use in demand ([`crate::cpu`]). Watched for [`crate::cpu::WINDOW`]
    /// and then trusted for half the scale-out delay, so that the invocations waiting at once do
    /// not each watch.
    async fn no_room_for_another(&self) -> bool {
        {
            let last = self.room.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, verdict)) = *last
                && at.elapsed() < self.scale_out_after / 2
            {
                return verdict;
            }
        }
        // The busy processes and keygate's own threads: they share the CPUs.
        let mut tasks: Vec<u32> = {
            let state = self.lock();
            state
                .live
                .iter()
                .filter(|p| !p.is_reaped() && !p.is_retired())
                .filter_map(|p| p.pid)
                .collect()
        };
        if tasks.is_empty() {
            return false;
        }
        tasks.extend(crate::cpu::own_threads());
        let cpus = crate::cpu::usable_cpus();
        let verdict = crate::cpu::no_room(&tasks, cpus, crate::cpu::WINDOW).await;
        tracing::debug!(
            function = %self.function(),
            no_room = verdict,
            "every process busy past the scale-out delay; CPUs checked for room for another"
        );
        *self.room.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), verdict));
        verdict
    }

    fn put_idle(&self, mut slot: Slot) {
        {
            let mut state = self.lock();
            slot.give_back();
            state.last_used = Instant::now();
            if state.closed || !slot.process.is_usable() {
                return; // `slot` is dropped on return (the last one kills the process).
            }
            slot.idle_since = Instant::now();
            // With queued delivery, a place in the queue of a process that does not keep up is
            // no use to a waiter (it would wait behind a slow invocation rather than for a free
            // process): it goes back to the idle list.
            let handy = !self.queued || slot.process.takes_another();
            while handy && let Some(waiter) = state.waiting.pop_front() {
                match waiter.send(slot.hand_out()) {
                    Ok(()) => return,
                    Err(mut back) => {
                        back.give_back(); // That one stopped waiting.
                        slot = back;
                    }
                }
            }
            state.idle.push(slot);
        }
    }

    /// Starts a process (`reserved` already, or if the pool may have another): returns one of
    /// its slots, and puts the others (a Lambda Managed Instances function's, or its queue's) in
    /// the idle list for the invocations waiting meanwhile. `None`: as many processes run (or
    /// start) as the pool may have.
    async fn spawn(&self, reserved: Option<Starting<'_>>) -> Result<Option<Slot>, InvokeError> {
        let starting = match reserved {
            Some(starting) => starting,
            None => {
                let mut state = self.lock();
                let running =
                    state.live.iter().filter(|p| !p.is_reaped() && !p.is_retired()).count();
                if running + state.starting >= self.max_processes {
                    return Ok(None);
                }
                Starting::reserve(self, &mut state)
            }
        };
        let spawned = Process::spawn(&self.key.launch, &self.spawn_with).await.map(Arc::new);
        if spawned.is_ok() {
            self.counters.cold_start();
        }
        let kept = {
            let mut state = self.lock();
            starting.end(&mut state);
            match &spawned {
                Ok(process) if !state.closed => {
                    state.live.retain(|p| !p.is_reaped());
                    state.live.push(process.shared());
                    for _ in 1..self.slots_per_process {
                        state.idle.push(Slot::new(Arc::clone(process)));
                    }
                    true
                }
                _ => false,
            }
        };
        // Invocations waiting for this start look again: at its free slots, a busy process now,
        // or at nothing.
        self.look_again.notify_waiters();
        let process = spawned?;
        if kept {
            return Ok(Some(Slot::new(process).hand_out()));
        }
        process.kill_and_wait().await;
        Err(InvokeError::Spawn("the function host is shutting down".to_owned()))
    }

    /// Stops processes whose every slot has been free for `idle_timeout`. (A process with one slot
    /// in use or recently used keeps all of them: its capacity does not shrink under light load.)
    pub(crate) fn reap_idle(&self, idle_timeout: Duration) {
        let expired: Vec<Slot> = {
            let mut state = self.lock();
            let now = Instant::now();
            let stale = |s: &Slot| now.duration_since(s.idle_since) >= idle_timeout;
            // Stale free slots per process; a process goes when they are all that holds it.
            let mut stale_slots: HashMap<*const Process, usize> = HashMap::new();
            for slot in state.idle.iter().filter(|s| stale(s)) {
                *stale_slots.entry(Arc::as_ptr(&slot.process)).or_default() += 1;
            }
            let unused = |s: &Slot| {
                stale_slots.get(&Arc::as_ptr(&s.process)) == Some(&Arc::strong_count(&s.process))
            };
            let (expired, keep) = std::mem::take(&mut state.idle).into_iter().partition(unused);
            state.idle = keep;
            state.live.retain(|p| !p.is_reaped());
            expired
        };
        let mut stopped = Vec::new();
        for slot in &expired {
            let pid = slot.process.pid();
            if !stopped.contains(&pid) {
                stopped.push(pid);
                tracing::debug!(function = %self.function(), pid, "stopping idle function process");
            }
        }
        drop(expired); // The last slot of a process kills it; the reapers wait for the exits.
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
            state.waiting.clear();
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
