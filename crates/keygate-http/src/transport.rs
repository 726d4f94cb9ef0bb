//! A connection's byte stream: plain TCP, or TLS over TCP (`tokio-rustls`, server or client
//! side). One enum rather than a type parameter: the server, the wire pieces and the upstream
//! client stay one compiled copy each, and the plain path costs one branch.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    /// Boxed: a TLS session is a few KiB.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Self::Plain(s)
    }
}

impl Stream {
    /// An accepted connection as the listener serves it: plain, or after the TLS handshake
    /// with `tls` (within [`crate::tls::HANDSHAKE_TIMEOUT`]).
    ///
    /// # Errors
    /// The handshake failed or took too long.
    pub async fn accept(tcp: TcpStream, tls: Option<&crate::Tls>) -> io::Result<Self> {
        match tls {
            None => Ok(Self::Plain(tcp)),
            Some(tls) => tls.accept(tcp).await,
        }
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the stream is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// Whether the client chose HTTP/2 in the TLS handshake (ALPN `h2`).
    pub fn is_http2(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }

    /// Whether nothing (no bytes, no close) has arrived: an idle pooled connection that is not
    /// quiet was closed or broke the protocol. Never waits; on plain TCP no syscall unless the
    /// reactor saw the socket become readable. Over TLS, records that carry no data (session
    /// tickets) are taken in and do not count.
    pub fn is_quiet(&mut self) -> bool {
        match self {
            Self::Plain(s) => {
                let mut probe = [0u8; 1];
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Self::Tls(s) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                Pin::new(s.as_mut()).poll_read(&mut cx, &mut buf).is_pending()
            }
        }
    }

    /// Writes all of `buf` and pushes it to the socket, by `limit` after the first time the
    /// socket is full (`deadline` keeps that instant across calls for one answer). On plain TCP
    /// a socket with room takes the bytes without a timer: the timer is armed only when the
    /// peer is not reading fast enough. Over TLS the whole write is bounded by the deadline.
    pub async fn write_all_within(
        &mut self,
        buf: &[u8],
        limit: Option<Duration>,
        deadline: &mut Option<Instant>,
    ) -> io::Result<()> {
        match self {
            Self::Plain(s) => write_all_plain(s, buf, limit, deadline).await,
            Self::Tls(s) => {
                let write = async {
                    s.write_all(buf).await?;
                    // rustls keeps what the socket did not take: flushing writes it out.
                    s.flush().await
                };
                match limit {
                    None => write.await,
                    Some(limit) => {
                        let at = *deadline.get_or_insert_with(|| Instant::now() + limit);
                        tokio::time::timeout_at(at, write)
                            .await
                            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
                    }
                }
            }
        }
    }
}

async fn write_all_plain(
    stream: &mut TcpStream,
    mut buf: &[u8],
    limit: Option<Duration>,
    deadline: &mut Option<Instant>,
) -> io::Result<()> {
    use io::ErrorKind;
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => match limit {
                None => stream.writable().await?,
                Some(limit) => {
                    let at = *deadline.get_or_insert_with(|| Instant::now() + limit);
                    tokio::time::timeout_at(at, stream.writable())
                        .await
                        .map_err(|_| io::Error::from(ErrorKind::TimedOut))??;
                }
            },
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}
