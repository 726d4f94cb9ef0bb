//! The HTTP/1.1 server: one task per connection reads a request head with `httparse`, asks the
//! [`Service`] whether the request is wanted ([`Service::admit`], on the head alone), and only
//! then reads the whole body (Content-Length or chunked, at most [`Options::max_body`]), hands a
//! [`Request`] to [`Service::call`] with what `admit` decided, and writes its [`Response`] back
//! with one `write()`. Connections belong to the [`serve`] future: dropping it (aborting its
//! task) closes them all, which the Runtime API relies on when its process is gone.
//!
//! A request refused on its head (no route, no key, over a limit) never has its body buffered:
//! when the body is already in the read buffer whole it is dropped and the connection stays
//! open; otherwise the answer says `connection: close` and the connection is closed with a
//! lingering close (what the client still sends is read and dropped, for [`LINGER`] at most,
//! through the connection's small read buffer). Bodies that are read are held against a budget
//! shared by every connection of the server ([`Options::max_buffered`]): a body that does not
//! fit is not read and gets [`Service::busy`] (503 with `Retry-After`), and its connection is
//! closed; the bytes go back to the budget once the answer is written.
//!
//! Time limits, none of them pushed back by a trickle of bytes: the whole head must arrive within
//! [`Options::read_timeout`] of the first wait for it (idle keep-alive included), the whole body
//! within [`Options::body_timeout`] of the end of the head, and the whole answer must be taken
//! by the client within [`Options::write_timeout`]; a connection that misses one is closed.
//! At most [`Options::max_connections`] connections are open at once, and never more than three
//! quarters of the process's open-file limit (the rest is for everything else the process
//! opens); past that the server stops accepting (new connections wait in the kernel's backlog)
//! until one closes. One client address may hold at most [`Options::max_per_client`] of them: a
//! connection beyond that is closed as soon as it is accepted, so that one client holding idle
//! connections cannot take the slots (and file descriptors) every other client needs. When
//! accepting fails (out of file descriptors), the server waits before it tries again instead of
//! spinning.
//!
//! Framing rules (RFC 9112), strict because a gateway in front of other servers must not let a
//! request be read two ways: `Transfer-Encoding` other than `chunked` is refused (501); both
//! `Transfer-Encoding` and `Content-Length`, `Transfer-Encoding` in HTTP/1.0, more than one
//! `Content-Length` (equal or not, or as a list `5, 5`) or one that is not only digits are a
//! 400 and the connection is closed; so are a head with a bare LF line end (`httparse` would
//! take it), an HTTP/1.1 request without exactly one `Host` (RFC 9112 §3.2; any request with two),
//! and chunk lines that break [`crate::wire::parse_chunk_line`]'s rules (no whitespace after the
//! size, extensions as tokens or quoted strings, CRLF only, at most 16 hex digits). A head over
//! [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers is a 431. `crates/keygate-http/tests/smuggling.rs`
//! holds the request-smuggling vectors and how each is answered.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::message::{Fields, Request, Response};
use crate::transport::Stream;
use crate::wire::{self as h1, MAX_HEAD, MAX_HEADERS, ReadError, Wire};

/// How a server reads requests and stops.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest request body read; a larger one gets [`Service::too_large`] and the connection is
    /// closed.
    pub max_body: usize,
    /// How long a connection may take to send a whole request head, counted from the first wait
    /// for it (idle keep-alive included); `None`: no limit.
    pub read_timeout: Option<Duration>,
    /// How long a connection may take to send a whole request body, counted from the end of its
    /// head (not pushed back by each byte); `None`: no limit.
    pub body_timeout: Option<Duration>,
    /// How long the client may take to take a whole answer off the connection; `None`: no limit.
    pub write_timeout: Option<Duration>,
    /// Most connections open at once; past it the server stops accepting until one closes.
    /// Lowered to three quarters of the open-file limit (`RLIMIT_NOFILE`) when that is lower.
    pub max_connections: usize,
    /// Most connections open at once from one client address (0: no such cap); one more is
    /// closed at once. Clients behind one proxy or load balancer share its address.
    pub max_per_client: usize,
    /// Most request-body bytes held at once by all connections together; a body that would go
    /// over it is not read ([`Service::busy`]).
    pub max_buffered: usize,
    /// After shutdown starts, how long connections may take to finish the request they are on.
    pub drain: Duration,
    /// Serve HTTPS with this certificate (`None`: plain HTTP). The handshake happens on the
    /// connection's own task, within [`crate::tls::HANDSHAKE_TIMEOUT`].
    pub tls: Option<crate::Tls>,
    /// After an answer cannot be written (the client went away), go on reading and calling the
    /// requests the client had sent before it went, dropping their answers, until the end of
    /// what it sent. The Runtime API needs every answer a dead process posted; a public listener
    /// has no use for it (`false`).
    pub read_after_peer_gone: bool,
}
/// Bodies up to this size are copied behind the head and sent with it in one write.
const COALESCE: usize = 16 * 1024;
/// How long a connection closed after an error answer goes on reading (and dropping) what the
/// client still sends.
pub const LINGER: Duration = Duration::from_secs(5);

/// What [`Service::admit`] decided about a request, on its head.
#[derive(Debug)]
pub enum Admit<T> {
    /// Read the body and call [`Service::call`] with this (what the decision found, so it is not
    /// looked up twice).
    Proceed(T),
    /// Answer with this without reading the body.
    Respond(Response),
}

/// What the server calls for each request.
pub trait Service: Send + Sync + 'static {
    /// What [`Service::admit`] hands on to [`Service::call`].
    type Admitted: Send + 'static;

    /// Decides on a request from its head alone (its body is empty: not read yet), before any
    /// body byte is read or held: a refusal (or any answer the head is enough for) is written
    /// without reading the body. Most decisions are made at once (the future is ready on its
    /// first poll); one that asks another server (a shared limiter) waits for it here, with
    /// nothing read yet.
    fn admit(
        &self,
        head: &Request,
        peer: SocketAddr,
    ) -> impl Future<Output = Admit<Self::Admitted>> + Send;

    /// Answers one admitted request whose body has been read.
    fn call(
        &self,
        req: Request,
        admitted: Self::Admitted,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send;

    /// Answers a request whose body is over [`Options::max_body`] (not read, so `head.body` is
    /// empty; the connection is closed after the answer). A declared length over the limit is
    /// answered before [`Service::admit`]; a chunked body found over it while read, after.
    fn too_large(&self, head: &Request) -> Response;

    /// Answers a request whose body would take the bytes held by the server over
    /// [`Options::max_buffered`] (not read; the connection is closed after the answer). By
    /// default a 503 with `Retry-After: 1` and no body.
    fn busy(&self, _head: &Request) -> Response {
        let mut res = Response::empty(StatusCode::SERVICE_UNAVAILABLE);
        res.headers.push_static("retry-after", "1");
        res
    }

    /// Decides once per connection, before anything is read from it, whether `peer` may talk to
    /// this service at all; a refused connection is closed without an answer. Everyone is
    /// admitted unless the service says otherwise (the Runtime API admits only its function's
    /// processes).
    fn admit_connection(&self, peer: SocketAddr) -> impl Future<Output = bool> + Send {
        let _ = peer;
        std::future::ready(true)
    }

    /// Told when a connection [`Service::admit_connection`] admitted has ended: every request
    /// read from it has been answered (or the connection failed) and it is closed. The Runtime
    /// API waits for its dead process's connections to end this way before it judges which
    /// events were started.
    fn connection_closed(&self, peer: SocketAddr) {
        let _ = peer;
    }
}

/// An admitted connection; tells its service when it ends, however it ends.
pub(crate) struct AdmittedConnection<S: Service> {
    service: Arc<S>,
    peer: SocketAddr,
}

impl<S: Service> AdmittedConnection<S> {
    /// Asks `service` whether `peer` may connect; the guard of the admitted connection.
    pub(crate) async fn admit(service: &Arc<S>, peer: SocketAddr) -> Option<Self> {
        service.admit_connection(peer).await.then(|| Self { service: Arc::clone(service), peer })
    }
}

impl<S: Service> Drop for AdmittedConnection<S> {
    fn drop(&mut self) {
        self.service.connection_closed(self.peer);
    }
}

/// Serves `listener` until `shutdown` completes, then lets open connections finish the request
/// they are on for up to [`Options::drain`]; idle connections close at once.
pub async fn serve<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    // Shared by the connections' tasks (they need it past the TLS handshake).
    let options = Arc::new(options);
    let budget = Arc::new(AtomicUsize::new(options.max_buffered));
    let max_connections = connection_cap(options.max_connections);
    let clients = Arc::new(Clients::new(options.max_per_client));
    let mut refusals = Refusals::default();
    let mut connections = JoinSet::new();
    let mut capped = false;
    tokio::pin!(shutdown);
    loop {
        let open = connections.len() < max_connections;
        if !open && !capped {
            tracing::warn!(
                max = max_connections,
                "connection limit reached; not accepting until a connection closes"
            );
        }
        capped = !open;
        let (stream, peer) = tokio::select! {
            accepted = listener.accept(), if open => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    refusals.accept_failed(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        // Over its address's share: closed now (dropping the stream), before any read.
        let Some(slot) = clients.take(peer.ip()) else {
            refusals.over_client_cap(peer.ip(), options.max_per_client);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (service, options, budget, stopped) =
            (Arc::clone(&service), Arc::clone(&options), Arc::clone(&budget), stopped.clone());
        connections.spawn(async move {
            let stream = match Stream::accept(stream, options.tls.as_ref()).await {
                Ok(stream) => stream,
                Err(e) => {
                    // A scanner, a client that distrusts the certificate, plain HTTP on the
                    // HTTPS port: nothing to answer.
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            if stream.is_http2() {
                crate::h2::serve_connection(stream, peer, service, options, budget, stopped).await;
            } else {
                Connection::new(stream, peer, service, &options, budget, stopped).run().await;
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(options.drain, drained).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
    // Dropping the set aborts what is left.
}

/// `wanted`, or three quarters of this process's soft open-file limit when that is lower (said
/// once per process, not per server: a Runtime API server starts with each function process):
/// every connection is a file descriptor, and the process needs others (its store, upstream
/// connections, function processes' pipes, other listeners).
fn connection_cap(wanted: usize) -> usize {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    else {
        return wanted;
    };
    let room = usize::try_from(soft / 4 * 3).unwrap_or(usize::MAX).max(1);
    if room >= wanted {
        return wanted;
    }
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            open_files = soft,
            max = room,
            "the open-file limit (ulimit -n) allows fewer connections than wanted ({wanted}): \
             at most {room} at once; raise the hard limit to serve more"
        );
    }
    room
}

/// Open connections per client address, for [`Options::max_per_client`] (0: no cap, counted
/// all the same).
struct Clients {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count, given back when dropped (when the
/// connection's task ends, however it ends).
struct ClientSlot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    fn new(max: usize) -> Self {
        let max = if max == 0 { usize::MAX } else { max };
        Self { max, open: Mutex::new(HashMap::new()) }
    }

    /// A slot for a connection from `ip`, or `None` when that address holds its share already.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot { clients: Arc::clone(self), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Connections the server could not take or would not keep, logged as a summary at most every
/// [`Refusals::EVERY`] rather than a line each (a flood must not become a flood of log lines).
#[derive(Default)]
struct Refusals {
    over_cap: u64,
    accept_failed: u64,
    last_said: Option<Instant>,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn over_client_cap(&mut self, ip: IpAddr, max: usize) {
        self.over_cap += 1;
        if self.due() {
            tracing::warn!(
                client = %ip,
                max_per_client = max,
                refused = std::mem::take(&mut self.over_cap),
                "a client address holds as many connections as one may; closed its new ones"
            );
        }
    }

    fn accept_failed(&mut self, e: &std::io::Error) {
        self.accept_failed += 1;
        if self.due() {
            tracing::warn!(
                error = %e,
                failures = std::mem::take(&mut self.accept_failed),
                "accepting connections failed (out of file descriptors?); retrying every 50 ms"
            );
        }
    }

    fn due(&mut self) -> bool {
        let now = Instant::now();
        let due = self.last_said.is_none_or(|at| now.duration_since(at) >= Self::EVERY);
        if due {
            self.last_said = Some(now);
        }
        due
    }
}

/// Why a connection stops reading requests.
#[derive(Debug)]
enum Stop {
    /// The peer closed, timed out or failed; nothing more is written.
    Quiet,
    /// The request cannot be read: answer with this status and close.
    Answer(StatusCode),
    /// The body is over the limit: the service's answer, then close.
    TooLarge,
    /// The body does not fit in the server's budget: the service's answer, then close.
    Busy,
}

impl From<ReadError> for Stop {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Closed | ReadError::TimedOut => Self::Quiet,
            ReadError::Malformed => Self::Answer(StatusCode::BAD_REQUEST),
            ReadError::TooLarge => Self::TooLarge,
        }
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

/// A parsed head (the request without its body yet) and how to read the rest.
struct Head {
    request: Request,
    framing: Framing,
    keep_alive: bool,
    expects_continue: bool,
}

struct Connection<S> {
    wire: Wire,
    peer: SocketAddr,
    service: Arc<S>,
    /// Whether the server is stopping (read after each response).
    stopped: watch::Receiver<bool>,
    /// Completes when the server starts stopping; polled only while the connection is idle.
    /// Made once per connection: a new `changed()` per request cost a waiter-list lock each.
    stop_signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    out: Vec<u8>,
    max_body: usize,
    read_timeout: Option<Duration>,
    body_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// What this connection holds of the server's body budget for the request it is on.
    held: Held,
    /// [`Options::read_after_peer_gone`].
    read_after_peer_gone: bool,
    /// An answer could not be written: the later ones are dropped unwritten.
    peer_gone: bool,
}

/// Request-body bytes taken from the budget all of a server's connections share
/// ([`Options::max_buffered`]), given back by [`Held::release`] or when dropped (a connection or
/// stream dropped mid-request gives its bytes back too).
pub(crate) struct Held {
    budget: Arc<AtomicUsize>,
    n: usize,
}

impl Held {
    pub(crate) fn new(budget: Arc<AtomicUsize>) -> Self {
        Self { budget, n: 0 }
    }

    /// Takes `n` more bytes; `false` (nothing taken) when the budget has not that many left.
    pub(crate) fn take(&mut self, n: usize) -> bool {
        let taken = self
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(n))
            .is_ok();
        if taken {
            self.n += n;
        }
        taken
    }

    /// Gives back everything taken.
    pub(crate) fn release(&mut self) {
        if self.n > 0 {
            self.budget.fetch_add(std::mem::take(&mut self.n), Ordering::AcqRel);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

impl<S> Connection<S> {
    /// Takes `n` bytes from the shared budget for the current request.
    fn reserve(&mut self, n: usize) -> Result<(), Stop> {
        if self.held.take(n) { Ok(()) } else { Err(Stop::Busy) }
    }

    /// Gives back what the current request took.
    fn release(&mut self) {
        self.held.release();
    }
}

impl<S: Service> Connection<S> {
    fn new(
        stream: Stream,
        peer: SocketAddr,
        service: Arc<S>,
        options: &Options,
        budget: Arc<AtomicUsize>,
        stopped: watch::Receiver<bool>,
    ) -> Self {
        let mut signal = stopped.clone();
        let stop_signal = Box::pin(async move {
            // An error means the server is gone: stopping too.
            let _ = signal.wait_for(|stopping| *stopping).await;
        });
        Self {
            // Deadlines are total: set for the head and for the body, never pushed back by reads.
            wire: Wire::new(stream, options.read_timeout, false),
            peer,
            service,
            stopped,
            stop_signal,
            out: Vec::with_capacity(1024),
            max_body: options.max_body,
            read_timeout: options.read_timeout,
            body_timeout: options.body_timeout,
            write_timeout: options.write_timeout,
            held: Held::new(budget),
            read_after_peer_gone: options.read_after_peer_gone,
            peer_gone: false,
        }
    }

    async fn run(mut self) {
        let Some(_admitted) = AdmittedConnection::admit(&self.service, self.peer).await else {
            return;
        };
        loop {
            let head = match self.read_head().await {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(stop) => return self.stop(stop, None).await,
            };
            let Head { mut request, framing, keep_alive, expects_continue } = head;
            if matches!(framing, Framing::Length(n) if n > self.max_body) {
                return self.stop(Stop::TooLarge, Some(&request)).await;
            }
            let head_request = request.method == Method::HEAD;
            let version = request.version;
            let admitted = match self.service.admit(&request, self.peer).await {
                Admit::Proceed(admitted) => admitted,
                Admit::Respond(res) => {
                    // The body is not wanted: dropped if it is all here already, else the
                    // connection is closed without reading it.
                    if keep_alive && !*self.stopped.borrow() && self.skip_buffered_body(framing) {
                        if self.write(&res, head_request, version, true).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    return self.close_with(&res, head_request).await;
                }
            };
            request.body = match self.read_body(framing, expects_continue).await {
                Ok(body) => body,
                Err(stop) => return self.stop(stop, Some(&request)).await,
            };
            let Some(res) = self.call(request, admitted).await else { return };
            let keep_alive = keep_alive && !*self.stopped.borrow();
            let written = if self.peer_gone {
                Ok(())
            } else {
                self.write(&res, head_request, version, keep_alive).await
            };
            drop(res);
            self.release();
            if written.is_err() {
                if !self.read_after_peer_gone {
                    return;
                }
                self.peer_gone = true;
            }
            if !keep_alive {
                // Over TLS this sends close_notify, so the client can tell the end of the
                // answer from a cut connection.
                let shutdown = self.wire.stream.shutdown();
                let _ = tokio::time::timeout(self.write_timeout.unwrap_or(LINGER), shutdown).await;
                return;
            }
        }
    }

    /// Drops the body of a refused request if it is already buffered whole; whether it was (or
    /// there is none).
    fn skip_buffered_body(&mut self, framing: Framing) -> bool {
        match framing {
            Framing::Length(n) if n <= self.wire.buf.len() => {
                self.wire.buf.advance(n);
                true
            }
            _ => false,
        }
    }

    /// Runs the service on `req` while watching the connection: a client that closes it before
    /// the answer cancels the call (`None`), as hyper does; bytes it sends meanwhile (the next
    /// request, pipelined) are kept for later.
    async fn call(&mut self, req: Request, admitted: S::Admitted) -> Option<Response> {
        let call = self.service.call(req, admitted, self.peer);
        tokio::pin!(call);
        let wire = &mut self.wire;
        let mut watching = true;
        loop {
            tokio::select! {
                biased;
                res = &mut call => return Some(res),
                read = wire.stream.read_buf(&mut wire.buf), if watching => match read {
                    Ok(0) | Err(_) => return None,
                    // Pipelined bytes; past the head limit, stop reading until the answer.
                    Ok(_) => watching = wire.buf.len() < MAX_HEAD,
                },
            }
        }
    }

    /// Answers what ended the connection, if anything is to be said, and closes it.
    async fn stop(self, stop: Stop, head: Option<&Request>) {
        let head_request = head.is_some_and(|h| h.method == Method::HEAD);
        let res = match (stop, head) {
            (Stop::Quiet, _) => return,
            (Stop::TooLarge, Some(head)) => self.service.too_large(head),
            (Stop::TooLarge, None) => Response::empty(StatusCode::PAYLOAD_TOO_LARGE),
            (Stop::Busy, Some(head)) => self.service.busy(head),
            (Stop::Busy, None) => Response::empty(StatusCode::SERVICE_UNAVAILABLE),
            (Stop::Answer(status), _) => Response::empty(status),
        };
        self.close_with(&res, head_request).await;
    }

    /// Writes `res` saying `connection: close`, then closes the connection.
    async fn close_with(mut self, res: &Response, head_request: bool) {
        self.release();
        if self.write(res, head_request, Version::HTTP_11, false).await.is_err() {
            return;
        }
        // Lingering close, as nginx does: the client may still be sending the body just refused,
        // and closing with unread bytes would reset the connection, so the client could lose the
        // answer. Say we are done (FIN), then read and drop what still comes, for a while, into
        // the connection's own small buffer (no buffer per lingering connection).
        let wire = &mut self.wire;
        let _ = wire.stream.shutdown().await;
        let _ = tokio::time::timeout(LINGER, async {
            loop {
                wire.buf.clear();
                if !matches!(wire.stream.read_buf(&mut wire.buf).await, Ok(n) if n > 0) {
                    break;
                }
            }
        })
        .await;
    }

    /// Reads until a whole head is buffered and parses it. `None`: the peer closed (or the
    /// server is stopping) between requests.
    async fn read_head(&mut self) -> Result<Option<Head>, Stop> {
        let wire = &mut self.wire;
        loop {
            if !wire.buf.is_empty() {
                if let Some(head) = parse_head(&mut wire.buf, self.peer)? {
                    return Ok(Some(head));
                }
                if wire.buf.len() >= MAX_HEAD {
                    return Err(Stop::Answer(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
                }
            }
            let idle = wire.buf.is_empty();
            if idle {
                if *self.stopped.borrow() {
                    return Ok(None);
                }
                // The whole head must arrive within the timeout of the first wait for it.
                wire.restart_deadline();
            }
            let read = tokio::select! {
                biased;
                read = wire.stream.read_buf(&mut wire.buf) => Ok(Some(read)),
                () = &mut self.stop_signal, if idle => Ok(None),
                () = h1::passed(&mut wire.deadline) => Err(()),
            };
            match read {
                Ok(Some(Ok(0))) | Err(()) => {
                    if !wire.buf.is_empty() {
                        tracing::debug!(peer = %self.peer, "connection ended inside a request head");
                    }
                    return Ok(None);
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => {
                    tracing::debug!(peer = %self.peer, error = %e, "read failed");
                    return Ok(None);
                }
                // Stopping while idle: close.
                Ok(None) => return Ok(None),
            }
        }
    }

    /// Reads the whole body as `framing` delimits it, within [`Options::body_timeout`], holding
    /// its bytes against the shared budget.
    async fn read_body(&mut self, framing: Framing, expects_continue: bool) -> Result<Bytes, Stop> {
        let length = match framing {
            Framing::Length(0) => return Ok(Bytes::new()),
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        };
        if let Some(n) = length {
            self.reserve(n)?;
        }
        if expects_continue && self.wire.buf.is_empty() {
            let mut deadline = None;
            self.wire
                .stream
                .write_all_within(
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                    self.write_timeout,
                    &mut deadline,
                )
                .await
                .map_err(|_| Stop::Quiet)?;
        }
        if let Some(limit) = self.body_timeout {
            self.wire.expire_in(limit);
        }
        let body = match length {
            Some(n) => self.wire.read_length(n).await.map_err(Stop::from),
            None => self.read_chunked().await,
        };
        if self.read_timeout.is_none() {
            // The body's deadline must not outlive it.
            self.wire.deadline = None;
        }
        body.inspect_err(|e| {
            if matches!(e, Stop::Quiet) {
                tracing::debug!(peer = %self.peer, "connection ended inside a request body");
            }
        })
    }

    /// A chunked body, decoded, at most [`Options::max_body`] bytes, each chunk taken from the
    /// budget before it is read.
    async fn read_chunked(&mut self) -> Result<Bytes, Stop> {
        let mut body = BytesMut::new();
        loop {
            let size = self.wire.read_chunk_size().await?;
            if size == 0 {
                self.wire.read_trailers().await?;
                return Ok(body.freeze());
            }
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > self.max_body - body.len() {
                return Err(Stop::TooLarge);
            }
            self.reserve(size)?;
            self.wire.read_chunk_data(size, &mut body).await?;
        }
    }

    /// Writes `res`: status line, `date`, the response's headers, `content-length` (from the
    /// body, except that a HEAD answer keeps the one it was given), the body; all of it within
    /// [`Options::write_timeout`].
    async fn write(
        &mut self,
        res: &Response,
        head_request: bool,
        version: Version,
        keep_alive: bool,
    ) -> std::io::Result<()> {
        let out = &mut self.out;
        out.clear();
        encode_head(out, res, head_request, version, keep_alive);
        let status = res.status;
        let body = &res.body;
        let send_body = !head_request
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::NOT_MODIFIED
            && !body.is_empty();
        let stream = &mut self.wire.stream;
        let limit = self.write_timeout;
        let mut deadline = None;
        if send_body && body.len() <= COALESCE {
            out.extend_from_slice(body);
            stream.write_all_within(out, limit, &mut deadline).await
        } else {
            stream.write_all_within(out, limit, &mut deadline).await?;
            if send_body {
                stream.write_all_within(body, limit, &mut deadline).await?;
            }
            Ok(())
        }
    }
}

/// Parses the buffered head, if it is complete, and takes it out of the buffer.
fn parse_head(buf: &mut BytesMut, peer: SocketAddr) -> Result<Option<Head>, Stop> {
    let Some(request) = parse_request(buf).map_err(|e| {
        if e == StatusCode::BAD_REQUEST {
            tracing::debug!(peer = %peer, "malformed request head");
        }
        Stop::Answer(e)
    })?
    else {
        return Ok(None);
    };
    let headers = &request.headers;
    let version = request.version;
    // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host; none or several is a 400.
    let (first, second) = {
        let mut hosts = headers.get_all("host");
        (hosts.next().is_some(), hosts.next().is_some())
    };
    if second || (!first && version == Version::HTTP_11) {
        tracing::debug!(peer = %peer, "request without exactly one host");
        return Err(Stop::Answer(StatusCode::BAD_REQUEST));
    }
    let framing = framing(headers, version)?;
    let (close, keep) = h1::connection_tokens(headers);
    let keep_alive = !close && (version == Version::HTTP_11 || keep);
    let expects_continue = version == Version::HTTP_11
        && headers.get("expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    Ok(Some(Head { request, framing, keep_alive, expects_continue }))
}

/// Parses a complete head at the start of `buf` into a [`Request`] (without its body) and takes
/// it out of `buf`; `Ok(None)` while the head is incomplete. Errors: the status to answer with.
pub(crate) fn parse_request(buf: &mut BytesMut) -> Result<Option<Request>, StatusCode> {
    // Uninitialised slots: zeroing 100 of them cost more than parsing a small head.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    // `httparse` takes a bare LF for a line end; a proxy in front may not (see `has_bare_lf`).
    if h1::has_bare_lf(&buf[..len]) {
        return Err(StatusCode::BAD_REQUEST);
    }
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    let target = req.path.unwrap_or_default().as_bytes();
    // `httparse` lets bytes over 0x7f through in the target; keygate's paths are ASCII (a
    // client percent-encodes anything else).
    if !target.is_ascii() {
        return Err(StatusCode::BAD_REQUEST);
    }
    let (target_at, target_len) = h1::span(buf, target);
    let version = if req.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let spans = h1::spans(buf, req.headers);
    // The head's bytes become shared: the target and the fields point into them.
    let head = buf.split_to(len).freeze();
    let target = head.slice(target_at as usize..(target_at + target_len) as usize);
    Request::new(method, version, target, Fields::new(head, spans))
        .map(Some)
        .ok_or(StatusCode::BAD_REQUEST)
}

/// How the body is delimited (RFC 9112 §6.3), refusing what could be read two ways.
fn framing(headers: &Fields, version: Version) -> Result<Framing, Stop> {
    match h1::chunked(headers) {
        Some(_) if version == Version::HTTP_10 || headers.contains("content-length") => {
            Err(Stop::Answer(StatusCode::BAD_REQUEST))
        }
        // Only `chunked`, once, is understood.
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Err(Stop::Answer(StatusCode::NOT_IMPLEMENTED)),
        None => match h1::content_length(headers) {
            Ok(length) => Ok(Framing::Length(length.unwrap_or(0))),
            Err(_) => Err(Stop::Answer(StatusCode::BAD_REQUEST)),
        },
    }
}

/// Writes the status line and headers of `res`, ending with the empty line.
fn encode_head(
    out: &mut Vec<u8>,
    res: &Response,
    head_request: bool,
    version: Version,
    keep_alive: bool,
) {
    let status = res.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let headers = &res.headers;
    // An upstream's own `date` is passed on; otherwise the server's.
    if !headers.contains("date") {
        out.extend_from_slice(b"date: ");
        date::with(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    let mut length_given = false;
    for (name, value) in headers.raw() {
        if name.eq_ignore_ascii_case(b"content-length") {
            if !head_request {
                continue;
            }
            length_given = true;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"connection")
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational();
    if !bodiless && !length_given {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(res.body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The `date` header's value, formatted once per second per thread.
pub(crate) mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    pub(crate) fn with(f: impl FnOnce(&[u8])) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs || c.1.is_empty() {
                *c = (secs, httpdate::fmt_http_date(now));
            }
            f(c.1.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;
    /// The size of `/big`'s answer: more than loopback socket buffers hold.
    const BIG: usize = 32 * 1024 * 1024;

    /// Answers with the method, target, body length and body, and `x-seen-<header>` for every
    /// request header, so a test can read back what the server handed over.
    struct Echo;

    impl Service for Echo {
        type Admitted = ();

        /// Refuses `/refuse` on its head; admits the rest.
        async fn admit(&self, head: &Request, _peer: SocketAddr) -> Admit<()> {
            if head.path() == "/refuse" {
                return Admit::Respond(Response::new(StatusCode::FORBIDDEN, Bytes::from("no")));
            }
            Admit::Proceed(())
        }

        async fn call(&self, req: Request, (): (), _peer: SocketAddr) -> Response {
            if req.path() == "/hang" {
                // Never answers; records being dropped (cancelled).
                struct Flag;
                impl Drop for Flag {
                    fn drop(&mut self) {
                        HANG_DROPPED.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                let _flag = Flag;
                std::future::pending::<()>().await;
            }
            let text = format!("{} {} {} ", req.method, req.target(), req.body.len());
            let mut out = text.into_bytes();
            out.extend_from_slice(&req.body);
            let mut res = Response::new(StatusCode::OK, Bytes::from(out));
            if req.path() == "/big" {
                return Response::new(StatusCode::OK, Bytes::from(vec![b'x'; BIG]));
            }
            if req.path() == "/created" {
                res.status = StatusCode::NO_CONTENT;
            }
            if req.path() == "/length" {
                res.headers.push_static("content-length", "99");
            }
            if let Some(v) = req.headers.get("x-probe") {
                res.headers.push_value("x-seen-probe", req.headers.share(v));
            }
            res
        }

        fn too_large(&self, _head: &Request) -> Response {
            Response::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                Bytes::from_static(br#"{"message":"Request Too Long"}"#),
            )
        }
    }

    static HANG_DROPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// Admits no connection at all.
    struct Closed(std::sync::atomic::AtomicBool);

    impl Service for Closed {
        type Admitted = ();

        async fn admit(&self, _head: &Request, _peer: SocketAddr) -> Admit<()> {
            Admit::Proceed(())
        }

        async fn call(&self, _req: Request, (): (), _peer: SocketAddr) -> Response {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            Response::new(StatusCode::OK, Bytes::from_static(b"served"))
        }

        fn too_large(&self, _head: &Request) -> Response {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            Response::new(StatusCode::PAYLOAD_TOO_LARGE, Bytes::new())
        }

        async fn admit_connection(&self, _peer: SocketAddr) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_closed_before_any_request_is_read() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Arc::new(Closed(std::sync::atomic::AtomicBool::new(false)));
        let options = Options { max_body: 16, drain: Duration::from_millis(100), ..options() };
        let server = tokio::spawn(serve(listener, Arc::clone(&service), options, async {
            std::future::pending::<()>().await;
        }));
        let raw: &[u8] =
            b"GET / HTTP/1.1\r\nhost: x\r\n\r\nPOST / HTTP/1.1\r\ncontent-length: 99\r\n\r\n";
        let answers = tokio::task::spawn_blocking(move || exchange(addr, raw, 2)).await.unwrap();
        assert!(answers.is_empty(), "{answers:?}");
        assert!(!service.0.load(std::sync::atomic::Ordering::SeqCst), "the service was called");
        server.abort();
    }

    /// Counts calls, and the calls made by the time each connection was told closed.
    #[derive(Default)]
    struct Counting {
        calls: std::sync::atomic::AtomicUsize,
        closed: std::sync::Mutex<Vec<usize>>,
    }

    impl Service for Counting {
        type Admitted = ();

        async fn admit(&self, _head: &Request, _peer: SocketAddr) -> Admit<()> {
            Admit::Proceed(())
        }

        async fn call(&self, _req: Request, (): (), _peer: SocketAddr) -> Response {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Response::new(StatusCode::ACCEPTED, Bytes::new())
        }

        fn too_large(&self, _head: &Request) -> Response {
            Response::empty(StatusCode::PAYLOAD_TOO_LARGE)
        }

        fn connection_closed(&self, _peer: SocketAddr) {
            let calls = self.calls.load(std::sync::atomic::Ordering::SeqCst);
            self.closed.lock().unwrap().push(calls);
        }
    }

    /// A client that pipelines requests and resets the connection at once (as a process that
    /// dies with unread bytes does), so that answers cannot be written: with
    /// `read_after_peer_gone` every request it sent is still read and called, and only then is
    /// the service told the connection ended (the Runtime API relies on both to see a dead
    /// process's last answers).
    #[tokio::test]
    async fn a_connection_is_reported_closed_after_every_request_sent_on_it_was_called() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Arc::new(Counting::default());
        let options = Options { read_after_peer_gone: true, ..options() };
        let server = tokio::spawn(serve(listener, Arc::clone(&service), options, async {
            std::future::pending::<()>().await;
        }));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let one: &[u8] = b"POST /r HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc";
        s.write_all(&one.repeat(50)).await.unwrap();
        #[allow(deprecated)] // (`set_zero_linger` is newer than the tokio this builds with.)
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
        let started = std::time::Instant::now();
        while service.closed.lock().unwrap().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(10), "never told of the close");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*service.closed.lock().unwrap(), [50]);
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_goes_away_cancels_the_call() {
        let srv = start().await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /hang HTTP/1.1\r\nhost: h\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(s);
        })
        .await
        .unwrap();
        let started = std::time::Instant::now();
        while !HANG_DROPPED.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(started.elapsed() < Duration::from_secs(10), "the call was never cancelled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A server on an ephemeral port with a stop switch.
    struct Running {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<()>,
    }

    fn options() -> Options {
        Options {
            max_body: MAX_REQUEST_BODY,
            read_timeout: Some(Duration::from_secs(30)),
            body_timeout: Some(Duration::from_secs(30)),
            write_timeout: Some(Duration::from_secs(30)),
            max_connections: 1000,
            max_per_client: 0,
            max_buffered: 4 * MAX_REQUEST_BODY,
            drain: Duration::from_secs(5),
            tls: None,
            read_after_peer_gone: false,
        }
    }

    async fn start() -> Running {
        start_with(options()).await
    }

    async fn start_with(options: Options) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(serve(listener, Arc::new(Echo), options, async move {
            let _ = stopped.await;
        }));
        Running { addr, stop: Some(stop), done }
    }

    /// Sends `raw` on a new blocking connection and reads until the server closes it or
    /// `responses` responses are complete.
    fn exchange(addr: SocketAddr, raw: &[u8], responses: usize) -> Vec<(u16, String, String)> {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw).unwrap();
        read_responses(&mut s, responses)
    }

    /// Reads `n` responses (status, head, body) off `s`, or until it closes.
    fn read_responses(s: &mut std::net::TcpStream, n: usize) -> Vec<(u16, String, String)> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while out.len() < n {
            // Parse what is buffered first.
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut res = httparse::Response::new(&mut slots);
            if let Ok(httparse::Status::Complete(len)) = res.parse(&buf) {
                let status = res.code.unwrap();
                let head = String::from_utf8_lossy(&buf[..len]).to_lowercase();
                let body_len = if status == 100 || status == 204 || head.contains("\r\nx-head: 1") {
                    0
                } else {
                    head.split("\r\n")
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.parse().unwrap())
                };
                if buf.len() >= len + body_len {
                    let body = String::from_utf8_lossy(&buf[len..len + body_len]).into_owned();
                    buf.drain(..len + body_len);
                    out.push((status, head, body));
                    continue;
                }
            }
            let got = s.read(&mut chunk).unwrap_or(0);
            if got == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..got]);
        }
        out
    }

    fn closed(s: &mut std::net::TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(0))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_connections_alive_and_answers_pipelined_requests_in_order() {
        let srv = start().await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let raw = b"GET /a?x=1 HTTP/1.1\r\nhost: h\r\nx-probe: one\r\n\r\n\
                        POST /b HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nhello\
                        GET /c HTTP/1.1\r\nhost: h\r\n\r\n";
            let got = exchange(addr, raw, 3);
            assert_eq!(got.len(), 3);
            assert_eq!(got[0].0, 200);
            assert_eq!(got[0].2, "GET /a?x=1 0 ");
            assert!(got[0].1.contains("\r\nx-seen-probe: one\r\n"), "{}", got[0].1);
            assert!(got[0].1.contains("\r\ndate: "), "{}", got[0].1);
            assert!(!got[0].1.contains("connection: close"));
            assert_eq!(got[1].2, "POST /b 5 hello");
            assert_eq!(got[2].2, "GET /c 0 ");
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decodes_chunked_bodies_with_extensions_and_trailers() {
        let srv = start().await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let raw = b"POST /c HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n\
                        5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n\
                        GET /next HTTP/1.1\r\nhost: h\r\n\r\n";
            let got = exchange(addr, raw, 2);
            assert_eq!(got[0].2, "POST /c 11 hello world");
            assert_eq!(got[1].2, "GET /next 0 ");
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_framing_that_could_be_read_two_ways_and_closes() {
        let srv = start().await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            for (raw, status) in [
                (
                    &b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"[..],
                    400,
                ),
                (&b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"[..], 400),
                (&b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5, 6\r\n\r\nhello!"[..], 400),
                (&b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: -5\r\n\r\n"[..], 400),
                (&b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: gzip, chunked\r\n\r\n"[..], 501),
                (&b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"[..], 400),
                (&b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"[..], 400),
                (&b"GET / HTTP/1.1\r\nhost: h\r\nbad header\r\n\r\n"[..], 400),
                (&b"\x00\x01garbage\r\n\r\n"[..], 400),
            ] {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.write_all(raw).unwrap();
                let got = read_responses(&mut s, 1);
                assert_eq!(got[0].0, status, "{}", String::from_utf8_lossy(raw));
                assert!(got[0].1.contains("connection: close"));
                assert!(closed(&mut s), "{}", String::from_utf8_lossy(raw));
            }
            // Equal repeated lengths are refused too, as a list or as two fields.
            let got = exchange(addr, b"POST /same HTTP/1.1\r\nhost: h\r\ncontent-length: 2, 2\r\n\r\nok", 1);
            assert_eq!(got[0].0, 400);
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_over_the_limit_get_the_services_refusal_without_being_read() {
        let srv = start().await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let raw = format!(
                "POST / HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
                MAX_REQUEST_BODY + 1
            );
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(raw.as_bytes()).unwrap();
            let got = read_responses(&mut s, 1);
            assert_eq!(got[0].0, 413);
            assert_eq!(got[0].2, r#"{"message":"Request Too Long"}"#);
            assert!(closed(&mut s));

            // A client that sends the whole body anyway still reads the answer (lingering close).
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut writer = s.try_clone().unwrap();
            let sent = std::thread::spawn(move || {
                let head = format!(
                    "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: {}\r\n\r\n",
                    MAX_REQUEST_BODY + 1
                );
                writer.write_all(head.as_bytes())?;
                writer.write_all(&vec![b'x'; MAX_REQUEST_BODY + 1])
            });
            assert_eq!(read_responses(&mut s, 1)[0].0, 413);
            assert!(closed(&mut s));
            sent.join().unwrap().expect("the body is read and dropped, not reset");

            // Chunked: counted as it arrives.
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let big = format!(
                "POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
                MAX_REQUEST_BODY + 1
            );
            s.write_all(big.as_bytes()).unwrap();
            assert_eq!(read_responses(&mut s, 1)[0].0, 413);
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_100_continue_before_reading_an_expected_body() {
        let srv = start().await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(
                b"PUT /up HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n",
            )
            .unwrap();
            assert_eq!(read_responses(&mut s, 1)[0].0, 100);
            s.write_all(b"abc").unwrap();
            assert_eq!(read_responses(&mut s, 1)[0].2, "PUT /up 3 abc");
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_1_0_closes_unless_asked_to_keep_alive() {
        let srv = start().await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /old HTTP/1.0\r\n\r\n").unwrap();
            let got = read_responses(&mut s, 1);
            assert!(got[0].1.contains("connection: close"));
            assert!(closed(&mut s));

            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /old HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").unwrap();
            let got = read_responses(&mut s, 1);
            assert!(got[0].1.contains("connection: keep-alive"), "{}", got[0].1);
            s.write_all(b"GET /again HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n").unwrap();
            let got = read_responses(&mut s, 1);
            assert_eq!(got[0].2, "GET /again 0 ");
            assert!(closed(&mut s));
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn head_and_no_content_answers_carry_no_body() {
        let srv = start().await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // HEAD: the length of the body it would have had, or the one the service gave.
            s.write_all(b"HEAD /h HTTP/1.1\r\nhost: h\r\nx-head: 1\r\n\r\nHEAD /length HTTP/1.1\r\nhost: h\r\nx-head: 1\r\n\r\nGET /created HTTP/1.1\r\nhost: h\r\n\r\nGET /z HTTP/1.1\r\nhost: h\r\n\r\n")
                .unwrap();
            // The echo does not copy x-head; read the raw bytes instead.
            let mut all = Vec::new();
            let mut chunk = [0u8; 4096];
            while !String::from_utf8_lossy(&all).contains("GET /z 0 ") {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0);
                all.extend_from_slice(&chunk[..n]);
            }
            let text = String::from_utf8_lossy(&all);
            let parts: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
            assert_eq!(parts.len(), 4, "{text}");
            assert!(parts[0].starts_with("200 OK") && parts[0].contains("content-length: 10\r\n"));
            assert!(parts[0].ends_with("\r\n\r\n"), "no body after a HEAD answer: {text}");
            assert!(parts[1].contains("content-length: 99\r\n") && parts[1].ends_with("\r\n\r\n"));
            assert!(parts[2].starts_with("204 No Content") && !parts[2].contains("content-length"));
            assert!(parts[3].ends_with("GET /z 0 "));
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heads_over_the_limit_are_431() {
        let srv = start().await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let mut raw = b"GET / HTTP/1.1\r\nhost: h\r\n".to_vec();
            for i in 0..=MAX_HEADERS {
                raw.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
            }
            raw.extend_from_slice(b"\r\n");
            assert_eq!(exchange(addr, &raw, 1)[0].0, 431);

            let mut raw = b"GET / HTTP/1.1\r\nhost: h\r\nx-long: ".to_vec();
            raw.resize(MAX_HEAD + 10, b'a');
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // The server may close before reading it all.
            let _ = s.write_all(&raw);
            assert_eq!(read_responses(&mut s, 1)[0].0, 431);
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_closes_idle_connections_and_finishes_the_drain() {
        let mut srv = start().await;
        let addr = srv.addr;
        let mut idle = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /first HTTP/1.1\r\nhost: h\r\n\r\n").unwrap();
            assert_eq!(read_responses(&mut s, 1)[0].0, 200);
            s
        })
        .await
        .unwrap();
        srv.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), &mut srv.done)
            .await
            .expect("the drain ends when the idle connection is closed")
            .unwrap();
        tokio::task::spawn_blocking(move || assert!(closed(&mut idle))).await.unwrap();
        assert!(std::net::TcpStream::connect(addr).is_err(), "the listener is closed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_trickled_byte_by_byte_is_cut_off_at_the_total_deadline() {
        let srv =
            start_with(Options { body_timeout: Some(Duration::from_secs(1)), ..options() }).await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 100\r\n\r\n").unwrap();
            // One byte every 100 ms would take 10 s; a deadline pushed back by each byte would
            // never pass while it lasts.
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(100));
                if s.write_all(b"x").is_err() {
                    return;
                }
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 1];
                let gone = matches!(s.read(&mut b), Ok(0))
                    || matches!(&s.read(&mut b), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock);
                s.set_nonblocking(false).unwrap();
                if gone {
                    return;
                }
            }
            panic!("the server still took body bytes after 10 s");
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_beyond_the_shared_budget_are_503_unread_and_the_budget_comes_back() {
        let srv = start_with(Options { max_buffered: 100, ..options() }).await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let raw = format!(
                "POST /a HTTP/1.1\r\nhost: h\r\ncontent-length: 101\r\n\r\n{}",
                "x".repeat(101)
            );
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(raw.as_bytes()).unwrap();
            let got = read_responses(&mut s, 1);
            assert_eq!(got[0].0, 503);
            assert!(got[0].1.contains("\r\nretry-after: 1\r\n"), "{}", got[0].1);
            assert!(closed(&mut s));
            // Bodies that fit, one after the other on one connection and chunked: each gives
            // its bytes back once answered.
            let body = "y".repeat(80);
            let raw = format!(
                "POST /b HTTP/1.1\r\nhost: h\r\ncontent-length: 80\r\n\r\n{body}\
                 POST /c HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n50\r\n{body}\r\n0\r\n\r\n\
                 POST /d HTTP/1.1\r\nhost: h\r\ncontent-length: 80\r\n\r\n{body}"
            );
            let got = exchange(addr, raw.as_bytes(), 3);
            let statuses: Vec<u16> = got.iter().map(|r| r.0).collect();
            assert_eq!(statuses, [200, 200, 200]);
            // Chunks are counted as they come: 60 + 60 is over 100.
            let raw = format!(
                "POST /e HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3c\r\n{}\r\n3c\r\n{}\r\n0\r\n\r\n",
                "z".repeat(60),
                "z".repeat(60)
            );
            assert_eq!(exchange(addr, raw.as_bytes(), 1)[0].0, 503);
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_does_not_read_its_answer_is_dropped_at_the_write_timeout() {
        let srv =
            start_with(Options { write_timeout: Some(Duration::from_secs(1)), ..options() }).await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /big HTTP/1.1\r\nhost: h\r\n\r\n").unwrap();
            // Not reading, for three times the write timeout.
            std::thread::sleep(Duration::from_secs(3));
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut total = 0;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            assert!(total < BIG, "the whole answer was written to a client that did not read");
        })
        .await
        .unwrap();
    }

    #[test]
    fn a_client_address_gets_at_most_its_share_and_gets_it_back() {
        let clients = Arc::new(Clients::new(2));
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        let one = clients.take(a).expect("a first slot");
        let two = clients.take(a).expect("a second slot");
        assert!(clients.take(a).is_none(), "a third connection from one address");
        assert!(clients.take(b).is_some(), "another address has its own share");
        drop(one);
        assert!(clients.take(a).is_some(), "a closed connection's slot is free again");
        drop(two);
        assert!(clients.open.lock().unwrap().is_empty(), "no address is kept once it is gone");
        let uncapped = Arc::new(Clients::new(0));
        let held: Vec<_> = (0..10_000).map(|_| uncapped.take(a)).collect();
        assert!(held.iter().all(Option::is_some), "0: no cap");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_connection_cap_the_server_waits_before_accepting() {
        let srv = start_with(Options { max_connections: 1, ..options() }).await;
        let addr = srv.addr;
        tokio::task::spawn_blocking(move || {
            let mut first = std::net::TcpStream::connect(addr).unwrap();
            first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            first.write_all(b"GET /one HTTP/1.1\r\nhost: h\r\n\r\n").unwrap();
            assert_eq!(read_responses(&mut first, 1)[0].0, 200);
            // The kernel completes the handshake, but the server does not take the connection.
            let mut second = std::net::TcpStream::connect(addr).unwrap();
            second.write_all(b"GET /two HTTP/1.1\r\nhost: h\r\n\r\n").unwrap();
            second.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut b = [0u8; 1];
            assert!(
                matches!(&second.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "the second connection was served while the first was open"
            );
            drop(first);
            second.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            assert_eq!(read_responses(&mut second, 1)[0].2, "GET /two 0 ");
        })
        .await
        .unwrap();
    }
}
