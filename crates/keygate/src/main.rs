//! The `keygate` binary: command-line parsing and composition of the library crates.
//!
//! Glue only: every rule lives in `keygate-control` (operations), `keygate-config` (the yml),
//! `keygate-gateway` (the data plane). `anyhow` lives here and nowhere else; `main` turns any
//! failure into a non-zero exit and a cause on stderr.

mod cli;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.command.is_server());
    // Before anything secret is read: processes of the same user (functions, when keygate does
    // not run as root) can then read neither keygate's memory nor its /proc/<pid>/environ.
    if let Err(e) = keygate_functions::protect_host_process() {
        tracing::warn!(error = %e, "cannot make keygate non-dumpable");
    }
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
/// request), one-shot commands to `warn`.
fn init_tracing(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
