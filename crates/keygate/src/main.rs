//! The `keygate` binary: command-line parsing and composition of the library crates.
//!
//! Glue only: every rule lives in `keygate-control` (operations), `keygate-config` (the yml),
//! `keygate-gateway` (the data plane). `anyhow` lives here and nowhere else; `main` turns any
//! failure into a non-zero exit and a cause on stderr.

mod cgroup;
mod cli;
mod cmd;
mod config_file;
mod dynamodb;
mod function_log;
mod output;
mod stream_pollers;
mod watchdog;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Log lines queued for the writer thread before new ones are dropped (and counted). Function
/// output lines are at most 16 KiB, access-log lines a few hundred bytes: the queue holds at
/// most 64 MiB however slow stderr is.
const LOG_QUEUE_LINES: usize = 4096;

/// How often a server reports log lines dropped since the last report.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

/// The other log lines' drop counter, for the metrics (set once, by `main`).
static LOG_DROPS: std::sync::OnceLock<ErrorCounter> = std::sync::OnceLock::new();

/// Log lines other than the access log's dropped so far.
pub(crate) fn log_lines_dropped() -> u64 {
    LOG_DROPS.get().map_or(0, |c| c.dropped_lines() as u64)
}

fn main() -> ExitCode {
    // Before clap builds the whole command tree: the watchdog runs as long as the server, and
    // every page it touches counts in the server's memory.
    if std::env::args_os().nth(1).is_some_and(|a| a == watchdog::SUBCOMMAND) {
        return watchdog::run();
    }
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(message) => {
            eprintln!("keygate: error: {message}");
            return ExitCode::from(2);
        }
    };
    let server = cli.command.is_server();
    // Held to the end of `main`: dropping it flushes the queued lines.
    let (guard, dropped) = init_tracing(server, cli.verbose);
    let _ = LOG_DROPS.set(dropped.clone());
    if server {
        spawn_drop_reporter(dropped.clone());
        raise_open_file_limit();
    }
    // Before anything secret is read: processes of the same user (functions, when keygate does
    // not run as root) can then read neither keygate's memory nor its /proc/<pid>/environ.
    if let Err(e) = keygate_functions::protect_host_process() {
        tracing::warn!(error = %e, "cannot make keygate non-dumpable");
    }
    let code = run(cli);
    drop(guard);
    let lost = dropped.dropped_lines();
    if lost > 0 {
        eprintln!("keygate: {lost} log lines were dropped because stderr could not keep up");
    }
    code
}

/// The command line, with a keygate.toml's settings (`--config`, `KEYGATE_CONFIG`) as the
/// defaults of the flags they stand for. Exits as clap does on a bad command line.
fn parse_cli() -> Result<cli::Cli, String> {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = cli::Cli::command();
    // `config check` reports the file's problems itself, all of them.
    let checking = args.get(1).is_some_and(|a| a == "config");
    if let Some(path) = config_file::path_from(&args).filter(|_| !checking) {
        let settings = config_file::load(&path, &cmd)?;
        cmd = config_file::apply(cmd, &settings);
    }
    let matches = cmd.get_matches_from(args);
    cli::Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
}

/// Raises the soft open-file limit to the hard one, as nginx (`worker_rlimit_nofile`) and Go do:
/// every connection is a file descriptor, and a soft limit of 1024 (a common default) would run
/// out long before the connection cap. What the hard limit still allows is what the listeners
/// use (`keygate_http::Options::max_connections`). Function processes inherit the raised limit.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

fn run(cli: cli::Cli) -> ExitCode {
    let runtime = match runtime_builder().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: error: {}", output::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// One worker thread per CPU this process may run on (`taskset` and cgroup limits count), and no
/// worker pool at all when that is one CPU: a current-thread runtime then serves everything on
/// the main thread, without the cross-thread wakeups of a one-worker pool (see
/// docs/benchmarks.md). `KEYGATE_WORKER_THREADS` overrides the count; 1 means current-thread.
fn runtime_builder() -> tokio::runtime::Builder {
    let threads = std::env::var("KEYGATE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(std::num::NonZeroUsize::get))
        .unwrap_or(1);
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    }
}

/// Logs go to stderr, filtered by `RUST_LOG`; servers default to `info` (one access-log line per
/// request), one-shot commands to `warn`, and `-v` raises both a level (keygate's own crates to
/// `debug` for servers). Lines are written by a thread of their own through a bounded queue: a
/// serving thread never waits for stderr, and a line that finds the queue full is dropped and
/// counted (see [`log_writer`]). Colours only when stderr is a terminal.
fn init_tracing(server: bool, verbose: bool) -> (WorkerGuard, ErrorCounter) {
    let default = match (server, verbose) {
        (true, true) => {
            "info,keygate=debug,keygate_control=debug,keygate_gateway=debug,\
             keygate_functions=debug,keygate_dynamodb=debug,keygate_store=debug"
        }
        (true, false) | (false, true) => "info",
        (false, false) => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let (writer, guard) = log_writer(std::io::stderr());
    let dropped = writer.error_counter();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer)
        .init();
    (guard, dropped)
}

/// The non-blocking, lossy writer every log line goes through: at most [`LOG_QUEUE_LINES`]
/// lines wait for `out`; past that a line is dropped and counted in its `error_counter`.
fn log_writer<W: std::io::Write + Send + 'static>(out: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .thread_name("keygate-log")
        .finish(out)
}

/// Reports, as a warning, the log lines dropped since the last report (checked every
/// [`DROP_REPORT_EVERY`]; nothing is logged while none are dropped).
fn spawn_drop_reporter(dropped: ErrorCounter) {
    let spawned =
        std::thread::Builder::new().name("keygate-log-drops".to_owned()).spawn(move || {
            let mut reported = 0;
            loop {
                std::thread::sleep(DROP_REPORT_EVERY);
                let now = dropped.dropped_lines();
                if now > reported {
                    tracing::warn!(
                        dropped = now - reported,
                        total = now,
                        "log lines dropped: stderr could not keep up"
                    );
                    reported = now;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the dropped-log-lines reporter");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar, Mutex};

    use super::*;

    /// A writer stuck until released, like a stderr pipe nobody reads.
    #[derive(Clone)]
    struct Stuck(Arc<(Mutex<bool>, Condvar)>);

    impl std::io::Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (released, cv) = &*self.0;
            let mut r = released.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while !*r {
                r = cv.wait(r).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_stderr_never_blocks_logging_and_drops_are_counted() {
        let stuck = Stuck(Arc::new((Mutex::new(false), Condvar::new())));
        let (writer, guard) = log_writer(stuck.clone());
        let counter = writer.error_counter();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(writer).finish();
        let lines = LOG_QUEUE_LINES + 500;
        // Were the writer blocking, this loop would hang on the first line.
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..lines {
                tracing::info!(i, "access log line");
            }
        });
        // The writer thread holds at most one line and the queue the rest.
        assert!(
            counter.dropped_lines() >= lines - LOG_QUEUE_LINES - 1,
            "{}",
            counter.dropped_lines()
        );
        let (released, cv) = &*stuck.0;
        *released.lock().unwrap() = true;
        cv.notify_all();
        drop(guard);
    }
}
