//! What the host has done per function, for the metrics: counters kept for the host's life
//! (shared by every pool of a function, so a redeploy does not reset them) and the processes
//! and busy slots of its pools at the moment they are read ([`crate::FunctionHost::stats`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::InvokeError;

/// One function's counters (by `AWS_LAMBDA_FUNCTION_NAME`). Adding is a relaxed atomic add.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    invocations: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    cold_starts: AtomicU64,
}

impl Counters {
    /// Counts one invocation's outcome: a handler error, a crash or a process that could not
    /// start is an error; a timeout is counted apart.
    pub(crate) fn answered(&self, result: &Result<bytes::Bytes, InvokeError>) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {}
            Err(InvokeError::Timeout) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A process started for an invocation (Lambda's cold start).
    pub(crate) fn cold_start(&self) {
        self.cold_starts.fetch_add(1, Ordering::Relaxed);
    }
}

/// One function's figures at the moment [`crate::FunctionHost::stats`] read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionStats {
    /// `AWS_LAMBDA_FUNCTION_NAME` (`service-stage-function`).
    pub function: String,
    /// Processes running (warm or busy).
    pub processes: u64,
    /// Invocations holding a slot (running, or starting the process they will run on).
    pub busy: u64,
    /// Invocations answered, failed or timed out since keygate started.
    pub invocations: u64,
    /// Invocations that failed: a handler error, a crash, a process that could not start.
    pub errors: u64,
    /// Invocations that ran past the function's timeout.
    pub timeouts: u64,
    /// Processes started for an invocation.
    pub cold_starts: u64,
}

impl FunctionStats {
    pub(crate) fn new(function: &str, counters: &Counters) -> Self {
        Self {
            function: function.to_owned(),
            processes: 0,
            busy: 0,
            invocations: counters.invocations.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            timeouts: counters.timeouts.load(Ordering::Relaxed),
            cold_starts: counters.cold_starts.load(Ordering::Relaxed),
        }
    }
}
