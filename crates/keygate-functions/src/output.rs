//! A function's stdout and stderr: each line becomes a `tracing` event (target
//! `keygate::function`), within the function's output budget.
//!
//! The pipes are read by tasks of their own (never by a request's task), in 64 KiB chunks, so a
//! function that prints a lot costs reads, not stalls. What it prints beyond its budget (a token
//! bucket of bytes and one of lines per second, shared by every process and both streams of the
//! function: [`OutputLimit`]) is dropped, counted, and reported in one warning per second at
//! most: a function printing 100 MB per call must not fill the disk or slow the routes of
//! others. Once over its budget, a pipe is read only every [`THROTTLE_PAUSE`] (one chunk at
//! most each time, dropped past the budget): the pipe fills and the function's own writes wait,
//! so a flood costs the host a few reads per second instead of copying (and the flooder burning)
//! whole CPUs the gateway's routes need (issue 25, finding 10).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::time::Instant;

/// Output lines longer than this are split: a function printing without newlines must not make
/// the host buffer without bound.
const MAX_LOG_LINE_BYTES: usize = 16 * 1024;
/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 64 * 1024;
/// At most one warning about dropped output per function per this long.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Over its budget, a pipe is read once per this long: at most [`READ_CHUNK`] bytes each time.
const THROTTLE_PAUSE: Duration = Duration::from_millis(50);
/// Lines handled between two yields to the other tasks of the thread.
const LINES_PER_YIELD: u32 = 16;

/// How much output of one function is logged (`HostOptions::output_limit`): token buckets of
/// bytes and of lines, refilled every second by the rate, holding at most the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimit {
    pub bytes_per_second: u64,
    pub burst_bytes: u64,
    pub lines_per_second: u64,
    pub burst_lines: u64,
}

impl Default for OutputLimit {
    /// 1 MiB/s with bursts of 4 MiB, 10,000 lines/s with bursts of 40,000: far more than any
    /// useful log, far less than a function can print.
    fn default() -> Self {
        Self {
            bytes_per_second: 1024 * 1024,
            burst_bytes: 4 * 1024 * 1024,
            lines_per_second: 10_000,
            burst_lines: 40_000,
        }
    }
}

/// The output budget of one function, shared by its processes' output tasks.
pub(crate) struct OutputBudget {
    function: Arc<str>,
    limit: OutputLimit,
    state: Mutex<Budget>,
    /// Also gets every line logged (`HostOptions::function_log`).
    log: Option<Arc<dyn crate::FunctionLog>>,
}

impl OutputBudget {
    /// A platform line of this function (`START ...`), to the function log only.
    pub(crate) fn platform(&self, line: &str) {
        if let Some(log) = &self.log {
            log.line(&self.function, line);
        }
    }

    /// Whether a function log takes platform lines (they cost a little to make).
    pub(crate) fn has_log(&self) -> bool {
        self.log.is_some()
    }
}

struct Budget {
    bytes: f64,
    lines: f64,
    refilled: Instant,
    dropped_bytes: u64,
    dropped_lines: u64,
    reported: Option<Instant>,
    /// Bytes logged and dropped since the start (for tests).
    #[cfg(test)]
    totals: (u64, u64),
}

impl OutputBudget {
    pub(crate) fn new(
        function: &str,
        limit: OutputLimit,
        log: Option<Arc<dyn crate::FunctionLog>>,
    ) -> Self {
        let state = Budget {
            bytes: limit.burst_bytes as f64,
            lines: limit.burst_lines as f64,
            refilled: Instant::now(),
            dropped_bytes: 0,
            dropped_lines: 0,
            reported: None,
            #[cfg(test)]
            totals: (0, 0),
        };
        Self { function: Arc::from(function), limit, state: Mutex::new(state), log }
    }

    /// Takes one line of `len` bytes from the budget: whether it may be logged. A refused line is
    /// counted, and the count reported at most once per [`REPORT_EVERY`].
    fn take(&self, len: usize) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        state.refilled = now;
        let limit = &self.limit;
        state.bytes =
            (state.bytes + elapsed * limit.bytes_per_second as f64).min(limit.burst_bytes as f64);
        state.lines =
            (state.lines + elapsed * limit.lines_per_second as f64).min(limit.burst_lines as f64);
        let len_f = len as f64;
        if state.bytes >= len_f && state.lines >= 1.0 {
            state.bytes -= len_f;
            state.lines -= 1.0;
            #[cfg(test)]
            {
                state.totals.0 += len as u64;
            }
            return true;
        }
        #[cfg(test)]
        {
            state.totals.1 += len as u64;
        }
        state.dropped_bytes += len as u64;
        state.dropped_lines += 1;
        if state.reported.is_none_or(|at| now.duration_since(at) >= REPORT_EVERY) {
            self.report(&mut state, now);
        }
        false
    }

    /// Reports what was dropped and not reported yet (at the end of a stream).
    fn flush(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.report(&mut state, Instant::now());
    }

    fn report(&self, state: &mut Budget, now: Instant) {
        if state.dropped_lines == 0 {
            return;
        }
        let (bytes, lines) = (state.dropped_bytes, state.dropped_lines);
        state.dropped_bytes = 0;
        state.dropped_lines = 0;
        state.reported = Some(now);
        tracing::warn!(
            function = %self.function,
            dropped_bytes = bytes,
            dropped_lines = lines,
            "function {}: {bytes} bytes of output dropped (over its output limit)",
            self.function
        );
    }
}

/// Emits each line the function prints as a `tracing` event (target `keygate::function`), within
/// `budget`. Bytes that are not UTF-8 are replaced; over-long lines are split.
pub(crate) async fn forward_output(
    output: impl AsyncRead + Unpin,
    budget: Arc<OutputBudget>,
    stream: &'static str,
) {
    let mut reader = BufReader::with_capacity(READ_CHUNK, output);
    let mut line: Vec<u8> = Vec::new();
    // Whether the budget refused a line: a sign the function prints faster than it may.
    let mut over = false;
    let mut lines_since_yield = 0;
    let emit = |line: &[u8]| {
        let taken = budget.take(line.len());
        if taken {
            emit(&budget.function, stream, line, budget.log.as_deref());
        }
        taken
    };
    loop {
        // Over the budget and out of read bytes: wait before taking more from the pipe.
        if std::mem::take(&mut over) && reader.buffer().is_empty() {
            tokio::time::sleep(THROTTLE_PAUSE).await;
        }
        // A chunk holds up to a thousand lines, and lines already read come without a wait:
        // every few lines the task lets the others on its thread run, so a chunk never holds up
        // the requests served there (a whole chunk at once raised another route's p99 from 0.4
        // to 3.3 ms: `bench/flood.sh`).
        lines_since_yield += 1;
        if lines_since_yield == LINES_PER_YIELD {
            lines_since_yield = 0;
            tokio::task::yield_now().await;
        }
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        match chunk.iter().position(|&b| b == b'\n') {
            Some(newline) => {
                line.extend_from_slice(&chunk[..newline]);
                reader.consume(newline + 1);
                over |= !emit(&line);
                line.clear();
            }
            None => {
                let n = chunk.len();
                line.extend_from_slice(chunk);
                reader.consume(n);
                if line.len() >= MAX_LOG_LINE_BYTES {
                    over |= !emit(&line);
                    line.clear();
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
    budget.flush();
}

fn emit(function: &str, stream: &'static str, line: &[u8], log: Option<&dyn crate::FunctionLog>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = crate::ansi::loggable(line);
    tracing::info!(target: "keygate::function", function, stream, "{text}");
    if let Some(log) = log {
        log.line(function, &text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_cut_to_the_budget_and_every_byte_accounted_for() {
        let limit = OutputLimit {
            bytes_per_second: 1,
            burst_bytes: 64 * 1024,
            lines_per_second: 1,
            burst_lines: 100_000,
        };
        let budget = Arc::new(OutputBudget::new("f", limit, None));
        // 80,000 lines of 99 bytes, 8 MB with the newlines.
        let mut flood = Vec::with_capacity(8_000_000);
        for _ in 0..80_000 {
            flood.extend_from_slice(&[b'x'; 99]);
            flood.push(b'\n');
        }
        let started = Instant::now();
        forward_output(&flood[..], Arc::clone(&budget), "stdout").await;
        let (logged, dropped) = budget.state.lock().unwrap().totals;
        assert_eq!(logged + dropped, 7_920_000);
        let refill = started.elapsed().as_secs() + 1;
        assert!(logged <= limit.burst_bytes + refill, "{logged} bytes logged");
        assert!(logged >= limit.burst_bytes - 99, "the burst is logged: {logged}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_by_its_rate_up_to_its_burst() {
        let limit = OutputLimit {
            bytes_per_second: 100,
            burst_bytes: 300,
            lines_per_second: 2,
            burst_lines: 2,
        };
        let budget = OutputBudget::new("f", limit, None);
        assert!(budget.take(200));
        assert!(!budget.take(101), "only 100 bytes left");
        assert!(budget.take(100));
        assert!(!budget.take(0), "no line left");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(budget.take(10) && budget.take(10));
        assert!(!budget.take(10), "two lines per second");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(budget.take(300) && budget.take(0), "refilled to the bursts");
        assert!(!budget.take(1), "and no more");
    }
}
