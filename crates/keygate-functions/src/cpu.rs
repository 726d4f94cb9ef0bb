//! Whether another process of a function would add throughput, or only memory.
//!
//! It would not when the CPUs keygate may use are already in demand: keygate's own threads and
//! the function's busy processes together ran or waited to run (runnable, with no CPU free) for
//! most of the CPUs' time while watched. The signal is the kernel's own account, per task,
//! of time spent on a CPU and time spent runnable but waiting for one (`/proc/<tid>/schedstat`,
//! in nanoseconds). A handler waiting on I/O (a database, another service) sleeps and adds no
//! demand, so its function still scales out, whatever else the machine does. Measured on the
//! Node benchmark (keygate and one Node process pinned to one CPU), the Node process ran 44% of
//! the time and waited for the CPU 33% of it, keygate took the rest: another Node process would
//! only have shared that CPU.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// How long [`no_room`] watches.
pub(crate) const WINDOW: Duration = Duration::from_millis(10);

/// CPUs keygate may use (its affinity mask and cgroup quota); function processes inherit them.
pub(crate) fn usable_cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The tasks (threads) of this process, for [`no_room`].
pub(crate) fn own_threads() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Nanoseconds task `tid` has spent on a CPU plus runnable waiting for one. `None` where the
/// kernel does not say (no schedstat, or the task is gone).
fn demand_ns(tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let ran: u64 = fields.next()?.parse().ok()?;
    let waited: u64 = fields.next()?.parse().ok()?;
    Some(ran.saturating_add(waited))
}

/// Watches tasks `tids` for `window`: whether, together, they ran or waited to run for at
/// least 3/4 of the time of `cpus` CPUs. (Not all of it: keygate and a function process
/// handing invocations back and forth on one CPU leave it idle for a moment at each hand-over,
/// 11% of a 4 ms window on the Node benchmark while it was starting.) `false` when none can be
/// watched (then the pool scales out, as it would without this).
pub(crate) async fn no_room(tids: &[u32], cpus: usize, window: Duration) -> bool {
    let before: Vec<(u32, u64)> =
        tids.iter().filter_map(|&tid| Some((tid, demand_ns(tid)?))).collect();
    if before.is_empty() {
        return false;
    }
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = start.elapsed().as_nanos().max(1);
    let demand: u128 = before
        .into_iter()
        .filter_map(|(tid, then)| Some(u128::from(demand_ns(tid)?.saturating_sub(then))))
        .sum();
    demand * 4 >= elapsed * 3 * cpus as u128
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

    fn pids(children: &Kill) -> Vec<u32> {
        children.0.iter().map(Child::id).collect()
    }

    #[tokio::test]
    async fn sleeping_processes_leave_room() {
        // Handlers waiting on I/O: whatever the CPUs do, another process can make progress.
        let children = Kill((0..4).map(|_| spawn(&["sleep", "30"])).collect());
        assert!(demand_ns(pids(&children)[0]).is_some(), "this kernel has /proc/<pid>/schedstat");
        assert!(!no_room(&pids(&children), 1, Duration::from_millis(50)).await);
    }

    #[tokio::test]
    async fn busy_processes_waiting_for_one_cpu_leave_none() {
        // Two busy loops pinned to one CPU: each runs half the time and waits the other half,
        // a demand of two CPUs' time, whatever the machine has.
        let pinned: Vec<&str> = ["taskset", "-c", "0"].into_iter().chain(BUSY).collect();
        let children = Kill(vec![spawn(&pinned), spawn(&pinned)]);
        tokio::time::sleep(Duration::from_millis(50)).await; // Both running.
        assert!(no_room(&pids(&children), 2, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn one_busy_process_leaves_room_on_two_cpus_and_none_on_one() {
        let children = Kill(vec![spawn(&BUSY)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(no_room(&pids(&children), 1, Duration::from_millis(100)).await);
        assert!(!no_room(&pids(&children), 2, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn nothing_to_watch_leaves_room() {
        assert!(!no_room(&[], 1, WINDOW).await);
        assert!(!no_room(&[u32::MAX], 1, WINDOW).await);
        assert!(own_threads().contains(&std::process::id()), "{:?}", own_threads());
    }
}
