//! The access log: one line per request, written off the serving threads.
//!
//! A serving thread appends its request's line (text or JSON, hand-formatted: no `core::fmt`
//! on the common path) to one of a few in-memory buffers ([`SHARDS`], picked per thread, so
//! threads rarely share a lock) and goes on: it never writes, never waits for a write and never
//! allocates once its buffer has grown. A thread of its own ([`AccessLog::start`]) takes every
//! buffer's contents every [`WRITE_EVERY`] (a swap under the lock) and writes them with one call
//! each, to stderr or to a file that [`AccessLog::reopen`] (SIGHUP) reopens after logrotate
//! moved it. A buffer holds at most [`SHARD_BYTES`]: a line that finds it full is dropped and
//! counted ([`AccessLog::dropped`], the `keygate_log_lines_dropped_total` metric).
//!
//! Why not a queue of records formatted by the writer: on one core the writer's work is the
//! serving thread's loss all the same, and the record's copy, allocation and queue cost more
//! than the formatting they moved (bench/callgrind.sh, docs/benchmarks.md). Waking a writer
//! parked on a queue cost a futex call and a context switch per line.
//!
//! Key values never reach a line: only the key's id.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Buffers lines are appended to; a thread always uses the same one.
pub const SHARDS: usize = 8;

/// Most bytes a buffer holds before lines are dropped: with [`WRITE_EVERY`], 100 MB/s of log
/// per serving thread (some 300,000 lines a second).
pub const SHARD_BYTES: usize = 512 * 1024;

/// How often the writer takes the buffers' contents.
pub const WRITE_EVERY: Duration = Duration::from_millis(5);

/// How a line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// `2026-12-06T13:38:42.123456Z  INFO keygate::access: request_id=… status=200 …`, the
    /// shape of keygate's other log lines, the path quoted and escaped.
    #[default]
    Text,
    /// One JSON object per line, with API Gateway's `$context` names where one exists.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown access-log format {s:?}: use `text` or `json`")),
        }
    }
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    /// Appended to (created with mode 0640); reopened by [`AccessLog::reopen`].
    File(PathBuf),
}

/// The serving side of the access log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    shards: [Mutex<Shard>; SHARDS],
    format: Format,
    dropped: Arc<AtomicU64>,
    reopen: AtomicBool,
    stop: AtomicBool,
}

/// One buffer and what its lines are formatted with.
#[derive(Debug, Default)]
struct Shard {
    buf: String,
    cache: LineCache,
}

impl Shared {
    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A line is appended whole or not at all; a panic midway cannot leave half of one.
        self.shards[i].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer thread; [`Writer::finish`] writes what is buffered and joins it.
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

impl AccessLog {
    /// Opens `destination` (a file is created if missing and appended to) and starts the writer
    /// thread.
    ///
    /// # Errors
    /// The file cannot be opened, or the thread cannot be started.
    pub fn start(destination: Destination, format: Format) -> io::Result<(Self, Writer)> {
        let out = Output::open(destination)?;
        let shared = Arc::new(Shared {
            shards: std::array::from_fn(|_| Mutex::default()),
            format,
            dropped: Arc::new(AtomicU64::new(0)),
            reopen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("keygate-access-log".to_owned())
            .spawn(move || write_loop(&writer, out))?;
        Ok((Self { shared: Arc::clone(&shared) }, Writer { shared, thread }))
    }

    /// Reopens the file before the next write (after logrotate moved it); stderr stays.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }

    /// Lines dropped so far because their buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The counter behind [`AccessLog::dropped`] (for the metrics).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shared.dropped)
    }

    /// Appends the line of `f` to this thread's buffer, or counts it dropped when the buffer
    /// is full. Never blocks on a write.
    pub(crate) fn record(&self, f: &Finished<'_>) {
        let mut shard = self.shared.shard(shard_index());
        if shard.buf.len() >= SHARD_BYTES {
            drop(shard);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Shard { buf, cache } = &mut *shard;
        match self.shared.format {
            Format::Text => text(f, cache, buf),
            Format::Json => json(f, cache, buf),
        }
    }
}

/// This thread's buffer: given out in turn the first time a thread logs.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl Writer {
    /// Writes every line buffered so far and stops the thread, waiting at most `wait`.
    pub fn finish(self, wait: Duration) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let deadline = Instant::now() + wait;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.thread.join();
    }
}

/// What the gateway knows of a finished request.
pub(crate) struct Finished<'a> {
    /// When the answer was made (the end of `latency`).
    pub(crate) at: Instant,
    pub(crate) request_id: &'a str,
    pub(crate) method: &'a http::Method,
    pub(crate) path: &'a str,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) route: Option<&'a str>,
    pub(crate) key_id: Option<&'a str>,
    pub(crate) status: u16,
    pub(crate) latency: Duration,
    pub(crate) integration: Option<Duration>,
    pub(crate) bytes: usize,
    pub(crate) reason: &'static str,
    pub(crate) hint: Option<&'static str>,
}

fn micros(d: Duration) -> u64 {
    // Not `as_micros`: its u128 division costs more than the rest of this.
    d.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(d.subsec_micros()))
}

/// The text line, written piece by piece (`core::fmt` with `{:?}` and `Ipv4Addr`'s `Display`
/// cost more than the whole 403 answer). Writing into a stack buffer first, then appending it
/// whole, cost more still (zeroing it, checking it as UTF-8): bench/callgrind.sh.
fn text(f: &Finished<'_>, cache: &mut LineCache, out: &mut String) {
    let mut n = itoa::Buffer::new();
    cache.write_time(f.at, out);
    out.push_str("  INFO keygate::access: request_id=");
    out.push_str(f.request_id);
    out.push_str(" ip=");
    cache.write_ip(f.ip, out);
    out.push_str(" method=");
    out.push_str(f.method.as_str());
    out.push_str(" path=");
    quoted(f.path, out);
    // Route templates, key ids and reasons are keygate's own, checked when they were made:
    // only the path comes from the client.
    out.push_str(" route=\"");
    out.push_str(f.route.unwrap_or("-"));
    out.push_str("\" status=");
    out.push_str(n.format(f.status));
    out.push_str(" key_id=");
    quoted(f.key_id.unwrap_or("-"), out);
    out.push_str(" reason=\"");
    out.push_str(f.reason);
    out.push('"');
    if let Some(hint) = f.hint {
        out.push_str(" hint=\"");
        out.push_str(hint);
        out.push('"');
    }
    out.push_str(" micros=");
    out.push_str(n.format(micros(f.latency)));
    if let Some(i) = f.integration {
        out.push_str(" integration_micros=");
        out.push_str(n.format(micros(i)));
    }
    out.push_str(" bytes=");
    out.push_str(n.format(f.bytes));
    out.push('\n');
}

fn json(f: &Finished<'_>, cache: &mut LineCache, out: &mut String) {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Line<'a> {
        request_time: &'a str,
        request_id: &'a str,
        ip: Option<&'a str>,
        http_method: &'a str,
        path: &'a str,
        resource_path: Option<&'a str>,
        status: u16,
        api_key_id: Option<&'a str>,
        reason: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<&'a str>,
        response_latency_us: u64,
        integration_latency_us: Option<u64>,
        response_length: usize,
    }
    let mut time = String::with_capacity(27);
    cache.write_time(f.at, &mut time);
    let mut ip = String::with_capacity(15);
    cache.write_ip(f.ip, &mut ip);
    let line = Line {
        request_time: &time,
        request_id: f.request_id,
        ip: f.ip.map(|_| ip.as_str()),
        http_method: f.method.as_str(),
        path: f.path,
        resource_path: f.route,
        status: f.status,
        api_key_id: f.key_id,
        reason: (f.reason != "-").then_some(f.reason),
        hint: f.hint,
        response_latency_us: micros(f.latency),
        integration_latency_us: f.integration.map(micros),
        response_length: f.bytes,
    };
    if let Ok(s) = serde_json::to_string(&line) {
        out.push_str(&s);
        out.push('\n');
    }
}

/// `s` in double quotes, escaped as `{:?}` escapes it when it holds anything but printable
/// ASCII other than `"` and `\\` (a path cannot forge a line).
fn quoted(s: &str, out: &mut String) {
    if s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// What lines are formatted with, kept from one line to the next. Times are RFC 3339 in UTC
/// with microseconds, as keygate's other log lines: the date and the second formatted once per
/// second, an `Instant` turned into wall-clock time through an anchor the writer sets again
/// every few milliseconds (so a clock step shows at once). Also the last client address's text:
/// most lines repeat the one before.
#[derive(Debug)]
struct LineCache {
    /// An instant and the wall-clock time then, in microseconds since the Unix epoch.
    anchor: (Instant, u64),
    second: Option<u64>,
    /// `2026-12-06T13:38:42`
    prefix: String,
    last_ip: Option<(IpAddr, String)>,
}

impl Default for LineCache {
    fn default() -> Self {
        let mut clock = Self {
            anchor: (Instant::now(), 0),
            second: None,
            prefix: String::new(),
            last_ip: None,
        };
        clock.set_anchor();
        clock
    }
}

impl LineCache {
    fn set_anchor(&mut self) {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, micros);
        self.anchor = (Instant::now(), wall);
    }

    /// `at` in microseconds since the Unix epoch.
    fn unix_micros(&self, at: Instant) -> u64 {
        let (instant, wall) = self.anchor;
        match at.checked_duration_since(instant) {
            Some(after) => wall.saturating_add(micros(after)),
            None => wall.saturating_sub(micros(instant - at)),
        }
    }

    fn write_time(&mut self, at: Instant, out: &mut String) {
        self.write(self.unix_micros(at), out);
    }

    fn write(&mut self, time_us: u64, out: &mut String) {
        let second = time_us / 1_000_000;
        if self.second != Some(second) {
            self.second = Some(second);
            self.prefix = i64::try_from(second)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .and_then(|t| {
                    t.format(time::macros::format_description!(
                        "[year]-[month]-[day]T[hour]:[minute]:[second]"
                    ))
                    .ok()
                })
                .unwrap_or_else(|| "-".to_owned());
        }
        out.push_str(&self.prefix);
        out.push('.');
        let mut n = itoa::Buffer::new();
        let digits = n.format(time_us % 1_000_000);
        out.push_str(&"000000"[digits.len().min(6)..]);
        out.push_str(digits);
        out.push('Z');
    }

    /// An IPv4 address with `itoa` (its `Display` pads and is slow), IPv6 with `Display`; `-`
    /// for none.
    fn write_ip(&mut self, ip: Option<IpAddr>, out: &mut String) {
        let Some(ip) = ip else {
            out.push('-');
            return;
        };
        if let Some((last, text)) = &self.last_ip
            && *last == ip
        {
            out.push_str(text);
            return;
        }
        let mut text = String::with_capacity(15);
        match ip {
            IpAddr::V4(v4) => {
                let mut n = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push('.');
                    }
                    text.push_str(n.format(octet));
                }
            }
            IpAddr::V6(_) => {
                let _ = write!(text, "{ip}");
            }
        }
        out.push_str(&text);
        self.last_ip = Some((ip, text));
    }
}

/// The writer thread's destination.
enum Output {
    Stderr,
    File { path: PathBuf, file: File },
}

impl Output {
    fn open(destination: Destination) -> io::Result<Self> {
        match destination {
            Destination::Stderr => Ok(Self::Stderr),
            Destination::File(path) => {
                let file = open_append(&path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot open the access log {}: {e}", path.display()),
                    )
                })?;
                Ok(Self::File { path, file })
            }
        }
    }

    fn reopen(&mut self) {
        if let Self::File { path, file } = self {
            match open_append(path) {
                Ok(f) => *file = f,
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot reopen the access log: writing to the file open before"
                ),
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            // One locked `write_all`: a batch is never interleaved with keygate's other lines.
            Self::Stderr => io::stderr().lock().write_all(buf),
            Self::File { file, .. } => file.write_all(buf),
        }
    }
}

fn open_append(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

fn write_loop(shared: &Shared, mut out: Output) {
    let mut batch = String::new();
    let mut failed = false;
    loop {
        // Read before taking the lines: once it is seen, nothing more is appended.
        let stop = shared.stop.load(Ordering::Acquire);
        // Before taking the lines: those appended after the signal go to the new file.
        if shared.reopen.swap(false, Ordering::AcqRel) {
            out.reopen();
        }
        for i in 0..SHARDS {
            {
                let mut shard = shared.shard(i);
                shard.cache.set_anchor();
                if shard.buf.is_empty() {
                    continue;
                }
                // The buffer's memory goes back and forth: no allocation once both have grown.
                std::mem::swap(&mut shard.buf, &mut batch);
            }
            match out.write(batch.as_bytes()) {
                Ok(()) => failed = false,
                // Once per run of failures (a full disk), not once per batch.
                Err(e) if !failed => {
                    failed = true;
                    tracing::warn!(error = %e, "cannot write the access log");
                }
                Err(_) => {}
            }
            batch.clear();
        }
        if stop {
            return;
        }
        std::thread::park_timeout(WRITE_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished<'a>(path: &'a str, key_id: Option<&'a str>) -> Finished<'a> {
        Finished {
            at: Instant::now(),
            request_id: "0f6b1c2e-8a44-4c1e-9a57-1b2f3c4d5e6f",
            method: &http::Method::GET,
            path,
            ip: Some(IpAddr::from([127, 0, 0, 1])),
            route: Some("/candidates/{id}"),
            key_id,
            status: 200,
            latency: Duration::from_micros(250),
            integration: Some(Duration::from_micros(200)),
            bytes: 17,
            reason: "-",
            hint: None,
        }
    }

    #[test]
    fn text_lines_quote_what_a_client_sent() {
        let mut s = String::new();
        text(&finished("/dev/candidates/a\"b\n", Some("k1")), &mut LineCache::default(), &mut s);
        assert!(s.ends_with('\n') && s.matches('\n').count() == 1, "{s}");
        assert!(s.contains(" INFO keygate::access: request_id=0f6b1c2e-8a44-4c1e-9a57-1b2f3c4d5e6f ip=127.0.0.1 method=GET path=\"/dev/candidates/a\\\"b\\n\" route=\"/candidates/{id}\" status=200 key_id=\"k1\" reason=\"-\" micros=250 integration_micros=200 bytes=17"), "{s}");
    }

    #[test]
    fn a_line_longer_than_the_stack_buffer_is_written_whole() {
        let path = format!("/dev/{}", "a".repeat(3000));
        let mut s = String::new();
        text(&finished(&path, None), &mut LineCache::default(), &mut s);
        assert!(s.contains(&format!("path=\"{path}\" route=")), "{s}");
        assert!(s.ends_with(" bytes=17\n"), "{s}");
    }

    #[test]
    fn times_are_utc_with_microseconds_and_the_second_is_formatted_once() {
        let mut clock = LineCache::default();
        let mut s = String::new();
        clock.write(1_000_001, &mut s);
        s.push(' ');
        clock.write(1_999_999, &mut s);
        s.push(' ');
        clock.write(1_765_000_000_000_000, &mut s);
        assert_eq!(
            s,
            "1970-01-01T00:00:01.000001Z 1970-01-01T00:00:01.999999Z 2025-12-06T05:46:40.000000Z"
        );
    }

    #[test]
    fn json_lines_use_api_gateway_names() {
        let mut s = String::new();
        json(&finished("/dev/candidates/1", None), &mut LineCache::default(), &mut s);
        let v: serde_json::Value = serde_json::from_str(s.trim_end()).unwrap();
        assert_eq!(v["requestId"], "0f6b1c2e-8a44-4c1e-9a57-1b2f3c4d5e6f");
        assert_eq!(v["httpMethod"], "GET");
        assert_eq!(v["resourcePath"], "/candidates/{id}");
        assert_eq!(v["status"], 200);
        assert_eq!(v["apiKeyId"], serde_json::Value::Null);
        assert_eq!(v["reason"], serde_json::Value::Null);
        assert_eq!(v["responseLatencyUs"], 250);
        assert_eq!(v["integrationLatencyUs"], 200);
        assert_eq!(v["responseLength"], 17);
        assert!(v["requestTime"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn lines_reach_the_file_and_a_reopen_follows_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let (log, writer) =
            AccessLog::start(Destination::File(path.clone()), Format::Text).unwrap();
        log.record(&finished("/dev/one", None));
        // Wait until the line is written before the rotation, as logrotate would find it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path).unwrap_or_default().is_empty() {
            assert!(Instant::now() < deadline, "the first line never reached the file");
            std::thread::sleep(Duration::from_millis(5));
        }
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        // The writer reopens at its next round (every few milliseconds).
        std::thread::sleep(WRITE_EVERY * 10);
        log.record(&finished("/dev/two", None));
        writer.finish(Duration::from_secs(5));
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.contains("/dev/one") && !old.contains("/dev/two"), "{old}");
        assert!(new.contains("/dev/two") && !new.contains("/dev/one"), "{new}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn a_full_buffer_drops_and_counts_without_blocking() {
        use std::os::fd::AsRawFd;
        // A pipe nobody reads: the writer blocks once it is full, then the buffer fills, then
        // lines are counted, and `record` never waits.
        let (reader, writer_end) = std::io::pipe().unwrap();
        let fd = PathBuf::from(format!("/proc/self/fd/{}", writer_end.as_raw_fd()));
        let (log, writer) = AccessLog::start(Destination::File(fd), Format::Text).unwrap();
        drop(writer_end);
        let sent = 100_000;
        for _ in 0..sent {
            log.record(&finished("/dev/candidates", None));
        }
        assert!(log.dropped() > 0, "nothing was dropped");
        assert!(log.dropped() < sent);
        // No reader left: the writer's writes fail and it stops once told to.
        drop(reader);
        writer.finish(Duration::from_secs(5));
    }
}
