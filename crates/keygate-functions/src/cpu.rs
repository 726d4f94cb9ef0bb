//! Whether another process of a function would add throughput, or only memory.
//!
//! It would not when the function's processes are CPU-bound (they run or wait to run most of
//! the time, rather than sleep on I/O: a database, another service) and there is no CPU left
//! for one more: they already number as many as the CPUs keygate may use, or they wait for a
//! CPU (others keep the CPUs busy). The signal is the kernel's own account, per task, of time
//! spent on a CPU and time spent runnable but waiting for one (`/proc/<pid>/schedstat`, in
//! nanoseconds). Measured on the Node benchmark (keygate and one Node process pinned to one CPU
//! at 7.5k req/s), the Node process ran 44% of the time and waited for the CPU 33% of it; a
//! process just started ran nearly all the time.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// How long [`no_room`] watches.
pub(crate) const WINDOW: Duration = Duration::from_millis(4);

/// CPUs keygate may use (its affinity mask and cgroup quota).
fn usable_cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Nanoseconds task `pid` has spent on a CPU and runnable waiting for one. `None` where the
/// kernel does not say (no schedstat, or the process is gone).
fn schedstat(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let mut fields = text.split_ascii_whitespace();
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// Watches processes `pids` for `window`: whether they wanted a CPU (ran or waited to run) at
/// least half of it on average, and either waited for one at least 1/8 of it or already number
/// as many as the usable CPUs. `false` when none of them can be watched (then the pool scales
/// out, as it would without this).
pub(crate) async fn no_room(pids: &[u32], window: Duration) -> bool {
    let before: Vec<(u32, (u64, u64))> =
        pids.iter().filter_map(|&pid| Some((pid, schedstat(pid)?))).collect();
    if before.is_empty() {
        return false;
    }
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = start.elapsed().as_nanos().max(1);
    let (mut ran, mut waited, mut watched) = (0u128, 0u128, 0u128);
    for (pid, (run0, wait0)) in before {
        if let Some((run1, wait1)) = schedstat(pid) {
            ran += u128::from(run1.saturating_sub(run0));
            waited += u128::from(wait1.saturating_sub(wait0));
            watched += 1;
        }
    }
    let span = elapsed * watched;
    let cpu_bound = watched > 0 && (ran + waited) * 2 >= span;
    cpu_bound && (waited * 8 >= span || watched >= usable_cpus() as u128)
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};

    use super::*;

    struct Kill(Vec<Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn spawn(args: &[&str]) -> Child {
        Command::new(args[0]).args(&args[1..]).spawn().expect("spawn")
    }

    const BUSY: [&str; 3] = ["sh", "-c", "while :; do :; done"];

    #[tokio::test]
    async fn sleeping_processes_leave_room() {
        // A handler waiting on I/O: whatever the CPUs do, another process can make progress.
        let children = Kill((0..4).map(|_| spawn(&["sleep", "30"])).collect());
        let pids: Vec<u32> = children.0.iter().map(Child::id).collect();
        assert!(schedstat(pids[0]).is_some(), "this kernel has /proc/<pid>/schedstat");
        assert!(!no_room(&pids, Duration::from_millis(50)).await);
    }

    #[tokio::test]
    async fn processes_sharing_one_cpu_leave_none() {
        // Two busy loops pinned to the same CPU: each waits for it about half the time.
        let pinned: Vec<&str> = ["taskset", "-c", "0"].into_iter().chain(BUSY).collect();
        let children = Kill(vec![spawn(&pinned), spawn(&pinned)]);
        let pids: Vec<u32> = children.0.iter().map(Child::id).collect();
        tokio::time::sleep(Duration::from_millis(50)).await; // Both running.
        assert!(no_room(&pids, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn as_many_busy_processes_as_cpus_leave_none() {
        let children = Kill((0..usable_cpus()).map(|_| spawn(&BUSY)).collect());
        let pids: Vec<u32> = children.0.iter().map(Child::id).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(no_room(&pids, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn nothing_to_watch_leaves_room() {
        assert!(!no_room(&[], WINDOW).await);
        assert!(!no_room(&[u32::MAX], WINDOW).await);
    }
}
