//! The access log: one line per request, formatted and written off the serving threads.
//!
//! A serving thread fills an [`Entry`] (numbers, the request id inline, the path, route
//! template and key id in one small buffer) and offers it to a bounded queue of [`QUEUE`]
//! entries. It never formats, never writes and never waits: an entry that finds the queue full
//! is dropped and counted ([`AccessLog::dropped`], the `keygate_log_lines_dropped_total`
//! metric). A thread of its own ([`AccessLog::start`]) takes the queued entries in batches,
//! formats them as text or JSON into one buffer and writes each batch with one call, to stderr
//! or to a file that [`AccessLog::reopen`] (SIGHUP) reopens after logrotate moved it.
//!
//! Key values never reach an entry: only the key's id.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Entries waiting for the writer thread before new ones are dropped.
pub const QUEUE: usize = 4096;

/// A batch is written once it holds this many bytes (or the queue is empty).
const BATCH_BYTES: usize = 64 * 1024;

/// How a line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// `2026-12-06T13:38:42.123456Z  INFO keygate::access: request_id=… status=200 …`, the
    /// shape of keygate's other log lines, strings quoted and escaped.
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

enum Message {
    Entry(Entry),
    /// Wakes the writer (to reopen its file before the next entry arrives).
    Wake,
    /// Write what is queued and stop.
    Stop,
}

/// The serving side of the access log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Entry(_) => "Entry",
            Self::Wake => "Wake",
            Self::Stop => "Stop",
        })
    }
}

/// The writer thread; [`Writer::finish`] writes what is queued and joins it.
#[derive(Debug)]
pub struct Writer {
    tx: SyncSender<Message>,
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
        let (tx, rx) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reopen);
        let thread = std::thread::Builder::new()
            .name("keygate-access-log".to_owned())
            .spawn(move || write_loop(&rx, out, format, &flag))?;
        let log = Self { tx: tx.clone(), dropped: Arc::new(AtomicU64::new(0)), reopen };
        Ok((log, Writer { tx, thread }))
    }

    /// Reopens the file before the next line (after logrotate moved it); stderr stays.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        let _ = self.tx.try_send(Message::Wake);
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The counter behind [`AccessLog::dropped`] (for the metrics).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    /// Queues `entry`, or counts it dropped when the queue is full. Never blocks.
    pub(crate) fn record(&self, entry: Entry) {
        match self.tx.try_send(Message::Entry(entry)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Writer {
    /// Writes every line queued so far and stops the thread, waiting at most `wait`.
    pub fn finish(self, wait: Duration) {
        // Blocks only while the queue is full, which the thread is emptying.
        if self.tx.send(Message::Stop).is_err() {
            return;
        }
        let deadline = Instant::now() + wait;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.thread.join();
    }
}

/// One request's line, before formatting.
#[derive(Debug)]
pub(crate) struct Entry {
    /// When the answer was made, in microseconds since the Unix epoch.
    time_us: u64,
    request_id: [u8; uuid::fmt::Hyphenated::LENGTH],
    method: http::Method,
    ip: Option<IpAddr>,
    status: u16,
    latency_us: u64,
    integration_us: Option<u64>,
    bytes: u64,
    reason: &'static str,
    hint: Option<&'static str>,
    /// The path, then the route template, then the key id.
    texts: String,
    /// Where the path and the route template end in `texts`; a `None` field is empty.
    ends: [u32; 2],
    has_route: bool,
    has_key: bool,
}

/// What the gateway knows of a finished request.
pub(crate) struct Finished<'a> {
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

impl Entry {
    pub(crate) fn new(f: &Finished<'_>) -> Self {
        let time_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let mut request_id = [b'-'; uuid::fmt::Hyphenated::LENGTH];
        let id = f.request_id.as_bytes();
        let n = id.len().min(request_id.len());
        request_id[..n].copy_from_slice(&id[..n]);
        let route = f.route.unwrap_or("");
        let key_id = f.key_id.unwrap_or("");
        let mut texts = String::with_capacity(f.path.len() + route.len() + key_id.len());
        texts.push_str(f.path);
        let path_end = texts.len();
        texts.push_str(route);
        let route_end = texts.len();
        texts.push_str(key_id);
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Self {
            time_us,
            request_id,
            method: f.method.clone(),
            ip: f.ip,
            status: f.status,
            latency_us: micros(f.latency),
            integration_us: f.integration.map(micros),
            bytes: f.bytes as u64,
            reason: f.reason,
            hint: f.hint,
            // Paths are at most the head's size (64 KiB): the offsets fit.
            ends: [path_end as u32, route_end as u32],
            texts,
            has_route: f.route.is_some(),
            has_key: f.key_id.is_some(),
        }
    }

    fn path(&self) -> &str {
        &self.texts[..self.ends[0] as usize]
    }

    fn route(&self) -> Option<&str> {
        self.has_route.then(|| &self.texts[self.ends[0] as usize..self.ends[1] as usize])
    }

    fn key_id(&self) -> Option<&str> {
        self.has_key.then(|| &self.texts[self.ends[1] as usize..])
    }

    fn request_id(&self) -> &str {
        std::str::from_utf8(&self.request_id).unwrap_or("-")
    }

    /// RFC 3339 in UTC with microseconds, as keygate's other log lines.
    fn time(&self) -> String {
        let nanos = i128::from(self.time_us) * 1000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| {
                t.format(time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
                ))
                .ok()
            })
            .unwrap_or_else(|| "-".to_owned())
    }

    /// Appends the line (with its newline) to `out`.
    fn format(&self, format: Format, out: &mut String) {
        match format {
            Format::Text => self.text(out),
            Format::Json => self.json(out),
        }
    }

    fn text(&self, out: &mut String) {
        // `{:?}` quotes and escapes: a path or id cannot forge a line.
        let _ = write!(
            out,
            "{}  INFO keygate::access: request_id={} ip={} method={} path={:?} route={:?} \
             status={} key_id={:?} reason={:?}",
            self.time(),
            self.request_id(),
            self.ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            self.method,
            self.path(),
            self.route().unwrap_or("-"),
            self.status,
            self.key_id().unwrap_or("-"),
            self.reason,
        );
        if let Some(hint) = self.hint {
            let _ = write!(out, " hint={hint:?}");
        }
        let _ = write!(out, " micros={}", self.latency_us);
        if let Some(i) = self.integration_us {
            let _ = write!(out, " integration_micros={i}");
        }
        let _ = writeln!(out, " bytes={}", self.bytes);
    }

    fn json(&self, out: &mut String) {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Line<'a> {
            request_time: String,
            request_id: &'a str,
            ip: Option<String>,
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
            response_length: u64,
        }
        let line = Line {
            request_time: self.time(),
            request_id: self.request_id(),
            ip: self.ip.map(|ip| ip.to_string()),
            http_method: self.method.as_str(),
            path: self.path(),
            resource_path: self.route(),
            status: self.status,
            api_key_id: self.key_id(),
            reason: (self.reason != "-").then_some(self.reason),
            hint: self.hint,
            response_latency_us: self.latency_us,
            integration_latency_us: self.integration_us,
            response_length: self.bytes,
        };
        if let Ok(s) = serde_json::to_string(&line) {
            out.push_str(&s);
            out.push('\n');
        }
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

fn write_loop(rx: &Receiver<Message>, mut out: Output, format: Format, reopen: &AtomicBool) {
    let mut buf = String::with_capacity(BATCH_BYTES + 1024);
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut stop = false;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Entry(e) => e.format(format, &mut buf),
                Message::Wake => {}
                Message::Stop => {
                    stop = true;
                    break;
                }
            }
            if buf.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if reopen.swap(false, Ordering::AcqRel) {
            out.reopen();
        }
        if !buf.is_empty() {
            match out.write(buf.as_bytes()) {
                Ok(()) => failed = false,
                // Once per run of failures (a full disk), not once per batch.
                Err(e) if !failed => {
                    failed = true;
                    tracing::warn!(error = %e, "cannot write the access log");
                }
                Err(_) => {}
            }
            buf.clear();
        }
        if stop {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished<'a>(path: &'a str, key_id: Option<&'a str>) -> Finished<'a> {
        Finished {
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
        let e = Entry::new(&finished("/dev/candidates/a\"b\n", Some("k1")));
        let mut s = String::new();
        e.format(Format::Text, &mut s);
        assert!(s.ends_with('\n') && s.matches('\n').count() == 1, "{s}");
        assert!(s.contains(" INFO keygate::access: request_id=0f6b1c2e-8a44-4c1e-9a57-1b2f3c4d5e6f ip=127.0.0.1 method=GET path=\"/dev/candidates/a\\\"b\\n\" route=\"/candidates/{id}\" status=200 key_id=\"k1\" reason=\"-\" micros=250 integration_micros=200 bytes=17"), "{s}");
    }

    #[test]
    fn json_lines_use_api_gateway_names() {
        let e = Entry::new(&finished("/dev/candidates/1", None));
        let mut s = String::new();
        e.format(Format::Json, &mut s);
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
        log.record(Entry::new(&finished("/dev/one", None)));
        // Wait until the line is written before the rotation, as logrotate would find it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path).unwrap_or_default().is_empty() {
            assert!(Instant::now() < deadline, "the first line never reached the file");
            std::thread::sleep(Duration::from_millis(5));
        }
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.record(Entry::new(&finished("/dev/two", None)));
        writer.finish(Duration::from_secs(5));
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.contains("/dev/one") && !old.contains("/dev/two"), "{old}");
        assert!(new.contains("/dev/two") && !new.contains("/dev/one"), "{new}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        use std::os::fd::AsRawFd;
        // A pipe nobody reads: the writer blocks once it is full, then the queue fills, then
        // entries are counted, and `record` never waits.
        let (reader, writer_end) = std::io::pipe().unwrap();
        let fd = PathBuf::from(format!("/proc/self/fd/{}", writer_end.as_raw_fd()));
        let (log, writer) = AccessLog::start(Destination::File(fd), Format::Text).unwrap();
        drop(writer_end);
        let sent = QUEUE * 40;
        for _ in 0..sent {
            log.record(Entry::new(&finished("/dev/candidates", None)));
        }
        assert!(log.dropped() > 0, "nothing was dropped");
        assert!(log.dropped() < sent as u64);
        // No reader left: the writer's writes fail and it drains the queue, then stops.
        drop(reader);
        writer.finish(Duration::from_secs(5));
    }
}
