//! HTTP/1.1 wire pieces shared by the server ([`crate::server`]) and the data plane's upstream
//! client: a connection with its read buffer and deadline, body readers for the three framings
//! (length, chunked, until close), and the step from `httparse`'s borrowed headers to spans into
//! the head's bytes ([`Fields`]).

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::message::Fields;

/// Largest head (request or status line and headers) read.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers in one head.
pub const MAX_HEADERS: usize = 100;

/// Where a name or value is in the buffer it was parsed from: (start, length). 32 bits: heads
/// are at most a few times [`MAX_HEAD`], and a request carrying these is moved between futures,
/// so its size counts (docs/benchmarks.md, change 23).
pub type Span = (u32, u32);

/// The name and value spans of parsed headers (most heads have fewer than 8 fields).
pub type Spans = SmallVec<[(Span, Span); 8]>;

/// Records where `headers` (parsed from `buf`) are, so `buf` can be frozen and shared.
pub fn spans(buf: &[u8], headers: &[httparse::Header<'_>]) -> Spans {
    headers.iter().map(|h| (span(buf, h.name.as_bytes()), span(buf, h.value))).collect()
}

/// Where `part`, a slice of `buf` (a head's buffer, far below 4 GiB), is in it.
pub fn span(buf: &[u8], part: &[u8]) -> Span {
    let at = part.as_ptr() as usize - buf.as_ptr() as usize;
    (at as u32, part.len() as u32)
}

/// The bytes at `span` in `buf`.
pub fn at(buf: &[u8], (at, len): Span) -> &[u8] {
    &buf[at as usize..(at + len) as usize]
}

/// Whether the `Connection` header says `close`, and whether it says `keep-alive`.
pub fn connection_tokens(headers: &Fields) -> (bool, bool) {
    let (mut close, mut keep) = (false, false);
    for value in headers.get_all("connection") {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    (close, keep)
}

/// The single `Content-Length` of `headers` (repeats must agree); `Ok(None)` when there is none.
/// A value beyond `usize` reads as `usize::MAX` (over any limit). A value that is not digits, or
/// repeats that differ: [`ReadError::Malformed`].
pub fn content_length(headers: &Fields) -> Result<Option<usize>, ReadError> {
    let mut length: Option<usize> = None;
    for value in headers.get_all("content-length") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(ReadError::Malformed);
            }
            let n = part
                .iter()
                .fold(0usize, |n, &d| n.saturating_mul(10).saturating_add(usize::from(d - b'0')));
            if length.is_some_and(|l| l != n) {
                return Err(ReadError::Malformed);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Whether `Transfer-Encoding` is exactly `chunked` (`Some(true)`), something else
/// (`Some(false)`), or absent (`None`).
pub fn chunked(headers: &Fields) -> Option<bool> {
    if !headers.contains("transfer-encoding") {
        return None;
    }
    let mut codings = headers
        .get_all("transfer-encoding")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    Some(matches!(
        (codings.next(), codings.next()),
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked")
    ))
}

/// Why reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed the connection (or reading failed).
    Closed,
    /// The deadline passed.
    TimedOut,
    /// The bytes are not HTTP/1.1 framing.
    Malformed,
    /// The body is over the limit it was read with.
    TooLarge,
}

/// A deadline that can be pushed back on every read without touching the timer wheel each
/// time: the timer is set once, and when it fires early (the deadline moved on meanwhile) it is
/// set again. A timer per read was ~10% of the instructions of a 403 (docs/benchmarks.md).
pub struct Deadline {
    timer: Pin<Box<Sleep>>,
    at: Instant,
    len: Duration,
}

impl Deadline {
    pub fn new(len: Duration) -> Self {
        let at = Instant::now() + len;
        Self { timer: Box::pin(tokio::time::sleep_until(at)), at, len }
    }

    /// Starts the deadline again from now.
    pub fn restart(&mut self) {
        self.at = Instant::now() + self.len;
    }

    /// Completes once the deadline has passed.
    pub async fn passed(&mut self) {
        loop {
            self.timer.as_mut().await;
            if Instant::now() >= self.at {
                return;
            }
            let at = self.at;
            self.timer.as_mut().reset(at);
        }
    }
}

/// Completes once `deadline` has passed; never without one.
pub async fn passed(deadline: &mut Option<Deadline>) {
    match deadline {
        Some(d) => d.passed().await,
        None => std::future::pending().await,
    }
}

/// One connection: the stream, what has been read and not consumed, and the read deadline.
pub struct Wire {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// `None`: reads never time out.
    pub deadline: Option<Deadline>,
    /// Whether every read that makes progress restarts the deadline (the server's "no bytes for
    /// that long") or only the owner does (the client's "whole exchange within that long").
    restart_on_progress: bool,
}

impl Wire {
    pub fn new(stream: TcpStream, timeout: Option<Duration>, restart_on_progress: bool) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(4096),
            deadline: timeout.map(Deadline::new),
            restart_on_progress,
        }
    }

    /// Starts the deadline again from now (if there is one).
    pub fn restart_deadline(&mut self) {
        if let Some(d) = self.deadline.as_mut() {
            d.restart();
        }
    }

    /// Reads more bytes into the buffer.
    pub async fn fill(&mut self) -> Result<(), ReadError> {
        if self.restart_on_progress {
            self.restart_deadline();
        }
        let read = tokio::select! {
            biased;
            read = self.stream.read_buf(&mut self.buf) => read,
            () = passed(&mut self.deadline) => return Err(ReadError::TimedOut),
        };
        match read {
            Ok(n) if n > 0 => Ok(()),
            _ => Err(ReadError::Closed),
        }
    }

    /// The next `n` bytes.
    pub async fn read_length(&mut self, n: usize) -> Result<Bytes, ReadError> {
        self.buf.reserve(n.saturating_sub(self.buf.len()));
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.split_to(n).freeze())
    }

    /// Everything until the peer closes, at most `max` bytes.
    pub async fn read_to_close(&mut self, max: usize) -> Result<Bytes, ReadError> {
        loop {
            if self.buf.len() > max {
                return Err(ReadError::TooLarge);
            }
            match self.fill().await {
                Ok(()) => {}
                Err(ReadError::Closed) => return Ok(self.buf.split().freeze()),
                Err(e) => return Err(e),
            }
        }
    }

    /// A chunked body, decoded, at most `max` bytes; extensions and trailers are dropped.
    pub async fn read_chunked(&mut self, max: usize) -> Result<Bytes, ReadError> {
        let mut body = BytesMut::new();
        loop {
            let (consumed, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) if self.buf.len() < 1024 => self.fill().await?,
                    _ => return Err(ReadError::Malformed),
                }
            };
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > max - body.len() {
                return Err(ReadError::TooLarge);
            }
            let _ = self.buf.split_to(consumed);
            if size == 0 {
                return self.read_trailers().await.map(|()| body.freeze());
            }
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ReadError::Malformed);
            }
            let _ = self.buf.split_to(size + 2);
        }
    }

    /// The trailer section after the last chunk, up to its empty line.
    async fn read_trailers(&mut self) -> Result<(), ReadError> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            match httparse::parse_headers(&self.buf, &mut slots) {
                Ok(httparse::Status::Complete((len, _))) => {
                    let _ = self.buf.split_to(len);
                    return Ok(());
                }
                Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => self.fill().await?,
                _ => return Err(ReadError::Malformed),
            }
        }
    }
}
