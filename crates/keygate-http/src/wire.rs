//! HTTP/1.1 wire pieces shared by the server ([`crate::server`]) and the data plane's upstream
//! client: a connection with its read buffer and deadline, body readers for the three framings
//! (length, chunked, until close), and the step from `httparse`'s borrowed headers to spans into
//! the head's bytes ([`Fields`]).

use std::pin::Pin;
use std::time::Duration;

use crate::transport::Stream;
use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;
use tokio::io::AsyncReadExt;
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

/// The `Content-Length` of `headers`; `Ok(None)` when there is none. A value beyond `usize` reads
/// as `usize::MAX` (over any limit). More than one field, a list (`5, 5`), or a value that is not
/// only digits (a sign, hex, inner space): [`ReadError::Malformed`]. RFC 9110 §8.6 lets a
/// recipient accept equal repeats; keygate refuses them, as nginx does, because a front proxy
/// that reads them differently could frame the message another way.
pub fn content_length(headers: &Fields) -> Result<Option<usize>, ReadError> {
    let mut values = headers.get_all("content-length");
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(ReadError::Malformed);
    }
    Ok(Some(
        value
            .iter()
            .fold(0usize, |n, &d| n.saturating_mul(10).saturating_add(usize::from(d - b'0'))),
    ))
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

    /// Sets the deadline to `len` from now, once (the next [`Deadline::restart`] goes back to the
    /// length it was made with).
    pub fn expire_in(&mut self, len: Duration) {
        self.at = Instant::now() + len;
        // The timer fires no later than `at`; pulled back only when it would be late.
        if self.timer.deadline() > self.at {
            let at = self.at;
            self.timer.as_mut().reset(at);
        }
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
    pub stream: Stream,
    pub buf: BytesMut,
    /// `None`: reads never time out.
    pub deadline: Option<Deadline>,
    /// Whether every read that makes progress restarts the deadline (the server's "no bytes for
    /// that long") or only the owner does (the client's "whole exchange within that long").
    restart_on_progress: bool,
}

impl Wire {
    pub fn new(
        stream: impl Into<Stream>,
        timeout: Option<Duration>,
        restart_on_progress: bool,
    ) -> Self {
        Self {
            stream: stream.into(),
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

    /// Sets the deadline to `len` from now, once (creating it if there was none); a later
    /// [`Wire::restart_deadline`] goes back to the length the deadline was made with.
    pub fn expire_in(&mut self, len: Duration) {
        match self.deadline.as_mut() {
            Some(d) => d.expire_in(len),
            None => self.deadline = Some(Deadline::new(len)),
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
            let size = self.read_chunk_size().await?;
            if size == 0 {
                return self.read_trailers().await.map(|()| body.freeze());
            }
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > max - body.len() {
                return Err(ReadError::TooLarge);
            }
            self.read_chunk_data(size, &mut body).await?;
        }
    }

    /// Reads a chunk line ([`parse_chunk_line`]'s rules) and returns its size.
    pub async fn read_chunk_size(&mut self) -> Result<u64, ReadError> {
        loop {
            if let Some((consumed, size)) = parse_chunk_line(&self.buf)? {
                self.buf.advance(consumed);
                return Ok(size);
            }
            self.fill().await?;
        }
    }

    /// Appends a chunk's `size` bytes of data to `body` as they arrive (so they are not held
    /// twice), then reads the CRLF that must end them.
    pub async fn read_chunk_data(
        &mut self,
        size: usize,
        body: &mut BytesMut,
    ) -> Result<(), ReadError> {
        body.reserve(size);
        let mut left = size;
        loop {
            let take = left.min(self.buf.len());
            body.extend_from_slice(&self.buf[..take]);
            self.buf.advance(take);
            left -= take;
            if left == 0 {
                break;
            }
            self.fill().await?;
        }
        while self.buf.len() < 2 {
            self.fill().await?;
        }
        if &self.buf[..2] != b"\r\n" {
            return Err(ReadError::Malformed);
        }
        self.buf.advance(2);
        Ok(())
    }

    /// The trailer section after the last chunk, up to its empty line: fields as in a head,
    /// CRLF line ends only.
    pub async fn read_trailers(&mut self) -> Result<(), ReadError> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            match httparse::parse_headers(&self.buf, &mut slots) {
                Ok(httparse::Status::Complete((len, _))) if !has_bare_lf(&self.buf[..len]) => {
                    self.buf.advance(len);
                    return Ok(());
                }
                Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => self.fill().await?,
                _ => return Err(ReadError::Malformed),
            }
        }
    }
}

/// Whether `bytes` hold a line feed that is not preceded by a carriage return. `httparse` takes
/// a bare LF for a line end; a front proxy may not, and then the two read different fields or
/// messages out of the same bytes (RFC 9112 §2.2 lets a recipient refuse it; keygate does).
pub fn has_bare_lf(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|i| i == 0 || bytes[i - 1] != b'\r')
}

/// Longest chunk line (size, extensions, CRLF) read.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Parses the chunk line at the start of `buf` (RFC 9112 §7.1): `Ok(Some((length of the line,
/// chunk size)))`, `Ok(None)` while incomplete. Strict, so that keygate and any proxy in front
/// of it cut a chunked body in the same places:
/// - the size is 1 to 16 hex digits (more would overflow 64 bits);
/// - extensions are `;name[=value]`, the name a token, the value a token or a quoted string,
///   with optional spaces or tabs (BWS) only around `;` and `=`; none after the size or an
///   extension when the line ends there (`5 \r\n` is refused);
/// - the line ends with CRLF; a bare LF or CR anywhere is refused;
/// - a line longer than [`MAX_CHUNK_LINE`] is refused.
///
/// # Errors
/// [`ReadError::Malformed`] when the line breaks any of these rules.
pub fn parse_chunk_line(buf: &[u8]) -> Result<Option<(usize, u64)>, ReadError> {
    let line = &buf[..buf.len().min(MAX_CHUNK_LINE)];
    let partial = if buf.len() >= MAX_CHUNK_LINE { Err(ReadError::Malformed) } else { Ok(None) };
    let mut size: u64 = 0;
    let mut i = 0;
    while let Some(digit) = line.get(i).and_then(|&b| char::from(b).to_digit(16)) {
        if i == 16 {
            return Err(ReadError::Malformed);
        }
        size = (size << 4) | u64::from(digit);
        i += 1;
    }
    if i == line.len() {
        return partial;
    }
    if i == 0 {
        return Err(ReadError::Malformed);
    }
    loop {
        // Here: after the size, an extension name or an extension value.
        let ws = skip_ws(line, i);
        match line.get(ws) {
            None => return partial,
            Some(b'\r') if ws == i => {
                return match line.get(i + 1) {
                    None => partial,
                    Some(b'\n') => Ok(Some((i + 2, size))),
                    Some(_) => Err(ReadError::Malformed),
                };
            }
            Some(b';') => {}
            Some(_) => return Err(ReadError::Malformed),
        }
        let name = skip_ws(line, ws + 1);
        i = token_end(line, name);
        if i == line.len() {
            return partial;
        }
        if i == name {
            return Err(ReadError::Malformed);
        }
        let eq = skip_ws(line, i);
        match line.get(eq) {
            None => return partial,
            Some(b'=') => {}
            // No value: what follows is checked at the top of the loop.
            Some(_) => continue,
        }
        let value = skip_ws(line, eq + 1);
        match line.get(value) {
            None => return partial,
            Some(b'"') => match quoted_end(line, value + 1)? {
                Some(end) => i = end,
                None => return partial,
            },
            Some(_) => {
                i = token_end(line, value);
                if i == line.len() {
                    return partial;
                }
                if i == value {
                    return Err(ReadError::Malformed);
                }
            }
        }
    }
}

/// Where the spaces and tabs from `at` end.
fn skip_ws(line: &[u8], mut at: usize) -> usize {
    while matches!(line.get(at), Some(b' ' | b'\t')) {
        at += 1;
    }
    at
}

/// Where the token (RFC 9110 §5.6.2) from `at` ends.
fn token_end(line: &[u8], mut at: usize) -> usize {
    while line.get(at).is_some_and(|&b| is_tchar(b)) {
        at += 1;
    }
    at
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where the quoted string (RFC 9110 §5.6.4) whose opening quote is just before `at` ends
/// (after its closing quote); `Ok(None)` when it does not end in `line`.
fn quoted_end(line: &[u8], mut at: usize) -> Result<Option<usize>, ReadError> {
    let text = |b: u8| b == b'\t' || b == b' ' || (b >= 0x21 && b != 0x7f);
    loop {
        let Some(&b) = line.get(at) else { return Ok(None) };
        match b {
            b'"' => return Ok(Some(at + 1)),
            b'\\' => match line.get(at + 1) {
                None => return Ok(None),
                Some(&escaped) if text(escaped) => at += 2,
                Some(_) => return Err(ReadError::Malformed),
            },
            b if text(b) => at += 1,
            _ => return Err(ReadError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines_are_strict_and_every_prefix_of_a_good_one_waits_for_more() {
        for (line, size) in [
            (&b"5\r\n"[..], 5),
            (b"fF\r\n", 255),
            (b"ffffffffffffffff\r\n", u64::MAX),
            (b"5;a\r\n", 5),
            (b"5 ;a=b\r\n", 5),
            (b"5;a = b ;c=\"q \\\" \"\r\n", 5),
        ] {
            assert_eq!(
                parse_chunk_line(line),
                Ok(Some((line.len(), size))),
                "{}",
                line.escape_ascii()
            );
            for end in 0..line.len() {
                assert_eq!(
                    parse_chunk_line(&line[..end]),
                    Ok(None),
                    "{}",
                    line[..end].escape_ascii()
                );
            }
        }
        for bad in [
            &b"\r\n"[..],
            b"5 \r\n",
            b"5\t\r\n",
            b"5;\r\n",
            b"5;a \r\n",
            b"5;a=\r\n",
            b"5;a=\"x\r\n",
            b"5\n",
            b"5\rx",
            b"5;a\n",
            b"g\r\n",
            b"10000000000000000\r\n",
        ] {
            assert_eq!(parse_chunk_line(bad), Err(ReadError::Malformed), "{}", bad.escape_ascii());
        }
        let mut long = b"1;a=".to_vec();
        long.resize(MAX_CHUNK_LINE, b'x');
        assert_eq!(parse_chunk_line(&long), Err(ReadError::Malformed));
    }

    #[test]
    fn bare_line_feeds_are_found() {
        assert!(!has_bare_lf(b"a\r\nb\r\n\r\n"));
        assert!(has_bare_lf(b"\na"));
        assert!(has_bare_lf(b"a\r\nb\n"));
    }
}
