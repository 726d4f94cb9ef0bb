//! The watchdog: a small process that kills the function process groups keygate leaves behind
//! when keygate dies without stopping them (SIGKILL, a crash, the OOM killer).
//!
//! A server starts it ([`spawn`]) as `keygate __watchdog` (its own executable, a fresh image:
//! no secret of keygate's memory, and an empty environment) with a pipe on its stdin. The
//! function host reports each function process group through [`GroupWatch`]: `+<pgid>` when it
//! starts, `-<pgid>` once it has been stopped. These lines are queued and written by a thread of
//! their own, so a serving task never waits for the pipe. When the pipe reaches end of file
//! (keygate closed it after its own shutdown, or the kernel did because keygate is gone), the
//! watchdog SIGKILLs every group still listed and exits ([`run`]).
//!
//! When keygate runs in a cgroup of its own (see the `cgroup` module), it also sends
//! `c<directory>`: at end of file the watchdog then kills every process in that cgroup too,
//! whatever group or session it moved to, and removes the cgroup. The watchdog itself was
//! started before keygate moved into it, so it is not among them.
//!
//! The watchdog stays in keygate's process group, where keygate's subreaper leaves children of
//! the binary alone, and ignores the signals a terminal or a service manager sends the whole
//! group (SIGINT, SIGTERM, SIGHUP, SIGQUIT): keygate shuts down gracefully and closes the pipe,
//! and the watchdog outlives it just long enough to find nothing left. It is killed only by
//! SIGKILL; killed first, it leaves the function groups as they were before it existed.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use keygate_functions::GroupWatch;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::cgroup::{self, Cgroup};

/// The hidden subcommand that runs the watchdog.
pub(crate) const SUBCOMMAND: &str = "__watchdog";

/// How long [`Watchdog::finish`] waits for the watchdog to exit.
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// What the writer thread is told.
enum Message {
    Started(u32),
    Stopped(u32),
    Cgroup(PathBuf),
    /// keygate has stopped its functions: close the pipe.
    Close,
}

/// The function host's side: queues each group's news for the writer thread.
#[derive(Debug)]
struct Reporter(mpsc::Sender<Message>);

impl GroupWatch for Reporter {
    fn started(&self, pgid: u32) {
        let _ = self.0.send(Message::Started(pgid));
    }

    fn stopped(&self, pgid: u32) {
        let _ = self.0.send(Message::Stopped(pgid));
    }
}

/// A running watchdog, for the server to close once its functions are stopped.
pub(crate) struct Watchdog {
    queue: mpsc::Sender<Message>,
    writer: JoinHandle<()>,
    child: Child,
    /// keygate's cgroup, if it could make one.
    cgroup: Option<Cgroup>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog").field("pid", &self.child.id()).finish_non_exhaustive()
    }
}

/// Starts the watchdog; `None` (with a warning logged) when it cannot be started: keygate then
/// serves on, its function groups as unprotected against keygate's own death as before.
pub(crate) fn spawn() -> Option<(Watchdog, std::sync::Arc<dyn GroupWatch>)> {
    let started = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .arg(SUBCOMMAND)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
    });
    let mut child = match started {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot start the watchdog: if keygate is killed (SIGKILL) or crashes, its \
                 function processes live on"
            );
            return None;
        }
    };
    let Some(stdin) = child.stdin.take() else {
        let _ = child.kill();
        let _ = child.wait();
        tracing::warn!("cannot start the watchdog: no pipe to it");
        return None;
    };
    let (queue, news) = mpsc::channel();
    let writer = match std::thread::Builder::new()
        .name("keygate-watchdog".to_owned())
        .spawn(move || write_news(&news, stdin))
    {
        Ok(writer) => writer,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            tracing::warn!(error = %e, "cannot start the watchdog's writer thread");
            return None;
        }
    };
    tracing::debug!(pid = child.id(), "watchdog started");
    // After the watchdog started: it stays outside the cgroup it is to kill.
    let cgroup = match Cgroup::enter() {
        Ok(cgroup) => {
            tracing::debug!(dir = %cgroup.dir().display(), "keygate runs in a cgroup of its own");
            let _ = queue.send(Message::Cgroup(cgroup.dir().to_owned()));
            Some(cgroup)
        }
        Err(e) => {
            let message = "no cgroup of its own: a function process that leaves its process \
                           group (setsid, setpgid) can outlive keygate";
            if nix::unistd::geteuid().is_root() {
                tracing::warn!(error = %e, "{message}");
            } else {
                tracing::info!(error = %e, "{message} (run keygate as root to confine them)");
            }
            None
        }
    };
    let reporter = std::sync::Arc::new(Reporter(queue.clone()));
    Some((Watchdog { queue, writer, child, cgroup }, reporter))
}

impl Watchdog {
    /// Leaves keygate's cgroup, closes the pipe after every queued line (the watchdog then kills
    /// whatever is left in the cgroup), and waits (bounded) for the watchdog to exit.
    pub(crate) fn finish(mut self) {
        if let Some(cgroup) = &self.cgroup
            && let Err(e) = cgroup.leave()
        {
            // The watchdog then spares keygate and kills the others one by one.
            tracing::warn!(error = %e, "cannot leave keygate's cgroup");
        }
        let _ = self.queue.send(Message::Close);
        let _ = self.writer.join();
        for _ in 0..FINISH_WAIT.as_millis() / 10 {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                _ => return,
            }
        }
        tracing::warn!(pid = self.child.id(), "the watchdog did not exit");
    }
}

/// The writer thread: one line per message until [`Message::Close`] (or every sender is gone).
/// Once the watchdog cannot be written to, the rest is drained and dropped.
fn write_news(news: &mpsc::Receiver<Message>, mut pipe: ChildStdin) {
    let mut broken = false;
    while let Ok(message) = news.recv() {
        let line = match message {
            Message::Started(pgid) => format!("+{pgid}\n"),
            Message::Stopped(pgid) => format!("-{pgid}\n"),
            // A path with a line break could not be sent; keygate's never has one.
            Message::Cgroup(dir) => match dir.to_str() {
                Some(dir) if !dir.contains('\n') => format!("c{dir}\n"),
                _ => continue,
            },
            Message::Close => break,
        };
        if broken {
            continue;
        }
        if let Err(e) = pipe.write_all(line.as_bytes()) {
            broken = true;
            tracing::warn!(
                error = %e,
                "the watchdog is gone: if keygate is killed (SIGKILL) or crashes, its function \
                 processes live on"
            );
        }
    }
}

/// The watchdog process itself (`keygate __watchdog`): reads the groups from stdin until end of
/// file, then SIGKILLs the ones still listed and every process in keygate's cgroup.
pub(crate) fn run() -> ExitCode {
    // keygate, whose pid is spared if it is still in its cgroup (it could not leave it).
    let keygate = nix::unistd::getppid().as_raw();
    // Holding the streams keeps the handlers installed: these signals are then only recorded.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build();
    let ignored = runtime.as_ref().map(|rt| {
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            [
                SignalKind::interrupt(),
                SignalKind::terminate(),
                SignalKind::hangup(),
                SignalKind::quit(),
            ]
            .into_iter()
            .map(signal)
            .collect::<Vec<_>>()
        })
    });
    if !matches!(&ignored, Ok(all) if all.iter().all(Result::is_ok)) {
        eprintln!("keygate watchdog: cannot ignore SIGINT/SIGTERM; a Ctrl-C may stop it");
    }
    let mut watched = Watched::default();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        watched.apply(&line);
    }
    for pgid in watched.groups {
        // ESRCH: the group is empty already.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    if let Some(dir) = watched.cgroup {
        cgroup::kill_all(&dir, Some(keygate));
        if !cgroup::remove(&dir) {
            eprintln!("keygate watchdog: cannot remove the cgroup {}", dir.display());
        }
    }
    drop(ignored);
    ExitCode::SUCCESS
}

/// What keygate has reported.
#[derive(Debug, Default)]
struct Watched {
    groups: HashSet<i32>,
    cgroup: Option<PathBuf>,
}

impl Watched {
    /// Applies one line. Anything but `+<n>` / `-<n>` with `n` > 1 and not the watchdog's own
    /// group (group 0 would be its own, 1 is init's), or `c<dir>` naming a keygate cgroup, is
    /// ignored.
    fn apply(&mut self, line: &str) {
        if let Some(dir) = line.strip_prefix('c') {
            let dir = Path::new(dir);
            if cgroup::is_keygate_cgroup(dir) {
                self.cgroup = Some(dir.to_owned());
            }
            return;
        }
        let (add, number) = match line.split_at_checked(1) {
            Some(("+", n)) => (true, n),
            Some(("-", n)) => (false, n),
            _ => return,
        };
        let Ok(pgid) = number.parse::<i32>() else { return };
        if pgid <= 1 || pgid == nix::unistd::getpgrp().as_raw() {
            return;
        }
        if add {
            self.groups.insert(pgid);
        } else {
            self.groups.remove(&pgid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_foreign_groups_are_listed() {
        let mut watched = Watched::default();
        let own = nix::unistd::getpgrp().as_raw();
        for line in ["+0", "+1", "+-5", &format!("+{own}"), "+abc", "x12", "", "+", "+4242"] {
            watched.apply(line);
        }
        assert_eq!(watched.groups, HashSet::from([4242]));
        watched.apply("-4242");
        assert!(watched.groups.is_empty());
    }

    #[test]
    fn only_a_keygate_cgroup_is_watched() {
        let tmp = tempfile::tempdir().unwrap();
        let mut watched = Watched::default();
        for line in ["c/", "c", "crelative/keygate-1", &format!("c{}", tmp.path().display())] {
            watched.apply(line);
        }
        assert_eq!(watched.cgroup, None);
        let dir = tmp.path().join("keygate-7");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        watched.apply(&format!("c{}", dir.display()));
        assert_eq!(watched.cgroup, Some(dir));
    }
}
