//! Functions' log lines (their output and Lambda's `START`/`END`/`REPORT` lines) kept for
//! `keygate logs`: one bounded file per function under `<data dir>/logs/`, written by a thread
//! of its own from a bounded queue, so a function that prints never slows a serving thread
//! (a line that finds the queue full is dropped and counted, as the main log does). The writer
//! takes the queue every [`WRITE_EVERY`] and is never woken per line: a wakeup per line (three
//! per invocation: `START`, `END`, `REPORT`) cost two context switches each on the CPU the
//! gateway serves from, most of the function routes' time (docs/benchmarks.md).
//!
//! A file holds lines `<unix ms>\t<line>`; past [`MAX_FILE_BYTES`] it becomes `<name>.log.1`
//! (replacing the older one), so a function keeps at most twice that. `keygate logs` reads both,
//! oldest first, and can follow the current one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use keygate_functions::FunctionLog;

/// A function's file is rotated past this size.
pub(crate) const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Lines waiting for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;
/// How often the writer takes the queued lines (`keygate logs -t` reads every 200 ms).
const WRITE_EVERY: Duration = Duration::from_millis(50);

/// The file of a function's log lines in `dir` (its name made safe for a path).
pub(crate) fn file_of(dir: &Path, function_name: &str) -> PathBuf {
    let safe: String = function_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    let safe = safe.trim_start_matches('.');
    dir.join(format!("{}.log", if safe.is_empty() { "_" } else { safe }))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A line on its way: the function, the line, when (Unix ms).
type Entry = (String, String, u64);

/// The lines waiting for the writer, and whether it should finish.
#[derive(Debug, Default)]
struct Queue {
    lines: Vec<Entry>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Only signalled to close: lines wait for the writer's next round.
    closing: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every critical section is a push or a swap: a panic elsewhere leaves the queue whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps every function's lines in `<dir>/<function>.log`. Dropping it writes what is queued.
#[derive(Debug)]
pub(crate) struct FileLog {
    shared: Arc<Shared>,
    dropped: AtomicU64,
    writer: Option<JoinHandle<()>>,
}

impl FileLog {
    /// Starts the writer thread for `dir`, which it makes (`0700`) on the first line: by then
    /// the data directory holding it exists with its own modes (a recursive create here would
    /// make the data directory too, with the wrong ones).
    pub(crate) fn start(dir: &Path) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let dir = dir.to_owned();
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("keygate-function-log".to_owned())
                .spawn(move || write_lines(&dir, &shared))
                .context("cannot start the function log writer")?
        };
        Ok(Self { shared, dropped: AtomicU64::new(0), writer: Some(writer) })
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.closing.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl FunctionLog for FileLog {
    fn line(&self, function: &str, line: &str) {
        {
            let mut queue = self.shared.lock();
            if !queue.closed && queue.lines.len() < QUEUE_LINES {
                queue.lines.push((function.to_owned(), line.to_owned(), now_ms()));
                return;
            }
        }
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped == 1 || dropped.is_multiple_of(10_000) {
            tracing::warn!(
                dropped,
                "function log lines dropped: the function log writer cannot keep up \
                 (keygate logs will miss them; the main log has them)"
            );
        }
    }
}

/// One open log file.
struct Open {
    out: BufWriter<File>,
    size: u64,
}

/// The writer thread: every [`WRITE_EVERY`] appends the queued lines to their functions'
/// files, rotating a file when it is full, and flushes them; once closed, writes the rest.
fn write_lines(dir: &Path, shared: &Shared) {
    let mut files: HashMap<String, Open> = HashMap::new();
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut queue = shared.lock();
            if !queue.closed {
                queue = shared
                    .closing
                    .wait_timeout(queue, WRITE_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut batch, &mut queue.lines);
            queue.closed
        };
        for (function, line, ms) in batch.drain(..) {
            write_line(dir, &mut files, function, &line, ms);
        }
        for open in files.values_mut() {
            let _ = open.out.flush();
        }
        if closed {
            break;
        }
    }
}

/// Appends one line to `function`'s file, rotating it first when it is full.
fn write_line(
    dir: &Path,
    files: &mut HashMap<String, Open>,
    function: String,
    line: &str,
    ms: u64,
) {
    let path = file_of(dir, &function);
    if files.get(&function).is_some_and(|o| o.size >= MAX_FILE_BYTES) {
        if let Some(mut full) = files.remove(&function) {
            let _ = full.out.flush();
        }
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        let _ = std::fs::rename(&path, rotated);
    }
    let open = match files.entry(function) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            if !dir.is_dir() {
                let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
            }
            let Ok(file) = OpenOptions::new().create(true).append(true).mode(0o600).open(&path)
            else {
                return;
            };
            let size = file.metadata().map_or(0, |m| m.len());
            e.insert(Open { out: BufWriter::new(file), size })
        }
    };
    let record = format!("{ms}\t{line}\n");
    if open.out.write_all(record.as_bytes()).is_ok() {
        open.size += record.len() as u64;
    }
}

/// Prints a function's lines as they come, to stderr (`keygate invoke`).
#[derive(Debug)]
pub(crate) struct StderrLog;

impl FunctionLog for StderrLog {
    fn line(&self, _function: &str, line: &str) {
        eprintln!("{line}");
    }
}

/// Prints the kept lines of `function_name` newer than `since_ms` (oldest first); with `follow`,
/// then waits for new ones until interrupted.
pub(crate) fn print(dir: &Path, function_name: &str, since_ms: u64, follow: bool) -> Result<()> {
    let path = file_of(dir, function_name);
    let mut rotated = path.clone().into_os_string();
    rotated.push(".1");
    let mut out = std::io::stdout().lock();
    let mut any = false;
    for file in [PathBuf::from(rotated), path.clone()] {
        if let Ok(f) = File::open(&file) {
            any = true;
            print_from(BufReader::new(f), since_ms, &mut out)?;
        }
    }
    if !any && !follow {
        anyhow::bail!(
            "no log lines of {function_name} yet ({} does not exist): the function has not run \
             under a keygate serving from this data directory",
            path.display()
        );
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    // Follow: read what is appended; a rotated (replaced or shorter) file is read from its start.
    let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(mut f) = File::open(&path) else { continue };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < offset {
            offset = 0;
        }
        if len == offset {
            continue;
        }
        f.seek(SeekFrom::Start(offset))?;
        let mut chunk = Vec::new();
        f.take(len - offset).read_to_end(&mut chunk)?;
        // Only whole lines; a partial last line is read again next time.
        let whole = chunk.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        print_from(&chunk[..whole], 0, &mut out)?;
        out.flush()?;
        offset += whole as u64;
    }
}

fn print_from(reader: impl BufRead, since_ms: u64, out: &mut impl Write) -> Result<()> {
    for line in reader.lines() {
        let Ok(line) = line else { continue };
        let Some((ms, text)) = line.split_once('\t') else { continue };
        if ms.parse::<u64>().is_ok_and(|ms| ms >= since_ms) {
            writeln!(out, "{text}")?;
        }
    }
    Ok(())
}

/// `5m`, `2h`, `30s`, `1d` as milliseconds.
pub(crate) fn parse_since(text: &str) -> Result<u64> {
    let text = text.trim();
    let (number, unit) =
        text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number
        .parse()
        .with_context(|| format!("--since {text:?}: expected e.g. 5m, 2h, 30s or 1d"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" | "" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("--since {text:?}: expected e.g. 5m, 2h, 30s or 1d"),
    };
    Ok(now_ms().saturating_sub(n.saturating_mul(unit_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_in_the_directory() {
        let dir = Path::new("/data/logs");
        assert_eq!(file_of(dir, "svc-dev-fn"), dir.join("svc-dev-fn.log"));
        assert_eq!(file_of(dir, "../../etc/x"), dir.join("_.._etc_x.log"));
        assert_eq!(file_of(dir, ".."), dir.join("_.log"));
    }

    #[test]
    fn lines_are_kept_and_printed_since_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let log = FileLog::start(&dir).unwrap();
        log.line("svc-dev-fn", "START RequestId: 1 Version: $LATEST");
        log.line("svc-dev-fn", "hello");
        drop(log);
        let path = file_of(&dir, "svc-dev-fn");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path).map_or(true, |t| !t.contains("hello")) {
            assert!(std::time::Instant::now() < deadline, "lines not written");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = Vec::new();
        print_from(BufReader::new(File::open(&path).unwrap()), 0, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "START RequestId: 1 Version: $LATEST\nhello\n");
        let mut none = Vec::new();
        print_from(BufReader::new(File::open(&path).unwrap()), now_ms() + 1000, &mut none).unwrap();
        assert!(none.is_empty());
        assert!(parse_since("5m").unwrap() < now_ms());
        assert!(parse_since("5 weeks").is_err());
    }
}
