//! HTTP/2 for clients that negotiate it (ALPN `h2`, over TLS only: [`crate::Tls::offering_http2`]).
//! The framing (frames, HPACK, flow control, stream limits, resets) is hyper's and the `h2`
//! crate's; what keygate adds is the bridge to the same [`Service`] the HTTP/1.1 server calls, with
//! the same rules:
//!
//! - Every request head is written out as an HTTP/1.1 head (`:authority` as `Host`, cookie
//!   crumbs joined with `; ` as RFC 9113 §8.2.3 asks) and parsed by the HTTP/1.1 server's own
//!   strict parser ([`crate::server::parse_request`]), so that a request is read one way whatever
//!   the protocol: the same target, header and size rules, the same 400 and 431 answers. A `Host`
//!   that differs from `:authority` is a 400 (RFC 9113 §8.3.1).
//! - [`Service::admit`] decides on the head before any body byte is read; a refused request's body
//!   is never read (its stream is reset once the answer is sent).
//! - Bodies are read whole, within [`Options::body_timeout`] (else 408, the stream's own answer;
//!   the connection's other streams go on), at most [`Options::max_body`] bytes
//!   ([`Service::too_large`]), held against the server's shared budget ([`Service::busy`]).
//! - A connection idle (no open stream) for [`Options::read_timeout`] is closed with GOAWAY, as
//!   one that stops answering pings is; on shutdown every connection gets a GOAWAY and finishes
//!   the streams it has.
//! - Connection-specific response fields (`connection`, `transfer-encoding`, `keep-alive`, ...)
//!   are left out; `content-length` is hyper's, from the body (a HEAD answer keeps its own).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::message::{Request, Response};
use crate::server::{Admit, Held, Options, Service};
use crate::transport::Stream;
use crate::wire::MAX_HEAD;

/// Streams one connection may have open at once (nginx's default).
const MAX_STREAMS: u32 = 128;
/// How often an idle-looking connection is pinged, and how long the answer may take.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one HTTP/2 connection until the client closes it, it is idle past
/// [`Options::read_timeout`], or the server stops (`stopped`).
pub(crate) async fn serve_connection<S: Service>(
    stream: Stream,
    peer: SocketAddr,
    service: Arc<S>,
    options: Arc<Options>,
    budget: Arc<AtomicUsize>,
    mut stopped: watch::Receiver<bool>,
) {
    let Some(_admitted) = crate::server::AdmittedConnection::admit(&service, peer).await else {
        return;
    };
    let streams = Arc::new(Streams::default());
    let handler = {
        let streams = Arc::clone(&streams);
        let options = Arc::clone(&options);
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let open = streams.open();
            let (service, options, budget) =
                (Arc::clone(&service), Arc::clone(&options), Arc::clone(&budget));
            // Boxed: the service's future is large, and hyper moves the stream's future (into
            // the task it spawns, and on); a pointer moves cheaper than kilobytes.
            Box::pin(async move {
                let res = answer(&*service, &options, budget, peer, req).await;
                drop(open);
                Ok::<_, Infallible>(res)
            })
        })
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(MAX_HEAD).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(PING_EVERY))
        .keep_alive_timeout(PING_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), handler);
    tokio::pin!(conn);
    let idle_limit = options.read_timeout;
    let mut closing = false;
    loop {
        let idle_check = async {
            match idle_limit {
                Some(limit) => tokio::time::sleep_until(streams.idle_until(limit)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "HTTP/2 connection ended");
                }
                return;
            }
            _ = stopped.wait_for(|stop| *stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = idle_check, if !closing => {
                if idle_limit.is_some_and(|limit| streams.idle_for(limit)) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Open streams and when the last one closed, for the idle timeout.
struct Streams {
    open: AtomicUsize,
    since: std::sync::Mutex<Instant>,
}

impl Default for Streams {
    fn default() -> Self {
        Self { open: AtomicUsize::new(0), since: std::sync::Mutex::new(Instant::now()) }
    }
}

impl Streams {
    fn open(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenStream(Arc::clone(self))
    }

    fn last_closed(&self) -> Instant {
        *self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When the connection will have been idle for `limit` if nothing opens meanwhile.
    fn idle_until(&self, limit: Duration) -> Instant {
        if self.open.load(Ordering::Acquire) > 0 {
            return Instant::now() + limit;
        }
        self.last_closed() + limit
    }

    fn idle_for(&self, limit: Duration) -> bool {
        self.open.load(Ordering::Acquire) == 0 && self.last_closed().elapsed() >= limit
    }
}

/// A stream counted in [`Streams`] until it is answered (or its task dropped).
struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let streams = &self.0;
        *streams.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        streams.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One stream: its head through the strict parser, admission, its body, the call.
async fn answer<S: Service>(
    service: &S,
    options: &Options,
    budget: Arc<AtomicUsize>,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, mut incoming) = req.into_parts();
    let mut head = match head(&parts) {
        Ok(head) => head,
        Err(status) => {
            tracing::debug!(%peer, %status, "malformed HTTP/2 request head");
            return to_hyper(Response::empty(status), false);
        }
    };
    let head_request = head.method == Method::HEAD;
    let declared = crate::wire::content_length(&head.headers).ok().flatten();
    if declared.is_some_and(|n| n > options.max_body) {
        return to_hyper(service.too_large(&head), head_request);
    }
    let admitted = match service.admit(&head, peer).await {
        Admit::Proceed(admitted) => admitted,
        Admit::Respond(res) => return to_hyper(res, head_request),
    };
    let mut held = Held::new(budget);
    if !incoming.is_end_stream() {
        let deadline = options.body_timeout.map(|limit| Instant::now() + limit);
        let mut body = BytesMut::with_capacity(declared.unwrap_or(0));
        if let Some(n) = declared
            && !held.take(n)
        {
            return to_hyper(service.busy(&head), head_request);
        }
        loop {
            let frame = match deadline {
                Some(at) => match tokio::time::timeout_at(at, incoming.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => {
                        tracing::debug!(%peer, "HTTP/2 request body not sent in time");
                        return to_hyper(Response::empty(StatusCode::REQUEST_TIMEOUT), false);
                    }
                },
                None => incoming.frame().await,
            };
            let Some(frame) = frame else { break };
            let Ok(frame) = frame else {
                // The client reset the stream: nobody is left to answer.
                return to_hyper(Response::empty(StatusCode::BAD_REQUEST), false);
            };
            let Ok(data) = frame.into_data() else { continue }; // Trailers are dropped.
            if data.len() > options.max_body - body.len() {
                return to_hyper(service.too_large(&head), head_request);
            }
            if declared.is_none() && !held.take(data.len()) {
                return to_hyper(service.busy(&head), head_request);
            }
            body.extend_from_slice(&data);
        }
        head.body = body.freeze();
    }
    let res = service.call(head, admitted, peer).await;
    let res = to_hyper(res, head_request);
    drop(held);
    res
}

/// The request head as the HTTP/1.1 server would have parsed it (see the module docs).
fn head(parts: &http::request::Parts) -> Result<Request, StatusCode> {
    let target = parts.uri.path_and_query().map(|p| p.as_str()).ok_or(StatusCode::BAD_REQUEST)?;
    let authority = parts.uri.authority().map(|a| a.as_str());
    let mut out = BytesMut::with_capacity(256);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(StatusCode::BAD_REQUEST);
    }
    let host = match (authority, first) {
        (Some(a), Some(h)) if h.as_bytes() != a.as_bytes() => return Err(StatusCode::BAD_REQUEST),
        (Some(a), _) => a.as_bytes(),
        (None, Some(h)) => h.as_bytes(),
        (None, None) => return Err(StatusCode::BAD_REQUEST),
    };
    push_field(&mut out, b"host", host);
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        if name == http::header::HOST {
            continue;
        }
        if name == http::header::COOKIE {
            cookies.push(value.as_bytes());
            continue;
        }
        push_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
        if out.len() > MAX_HEAD {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
    }
    if !cookies.is_empty() {
        push_field(&mut out, b"cookie", &cookies.join(&b"; "[..]));
    }
    out.extend_from_slice(b"\r\n");
    if out.len() > MAX_HEAD {
        return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    let mut request = crate::server::parse_request(&mut out)?.ok_or(StatusCode::BAD_REQUEST)?;
    request.version = Version::HTTP_2;
    Ok(request)
}

fn push_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Fields HTTP/2 forbids in a message (RFC 9113 §8.2.2).
fn connection_specific(name: &[u8]) -> bool {
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

fn to_hyper(res: Response, head_request: bool) -> hyper::Response<Full<Bytes>> {
    let status = res.status;
    let bodiless =
        head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut out = hyper::Response::new(Full::new(if bodiless { Bytes::new() } else { res.body }));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    headers.reserve(res.headers.len() + 1);
    for (name, value) in res.headers.raw() {
        if connection_specific(name)
            || (!head_request && name.eq_ignore_ascii_case(b"content-length"))
        {
            continue;
        }
        match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::debug!("a response field HTTP/2 cannot carry was left out"),
        }
    }
    if !headers.contains_key(http::header::DATE) {
        crate::server::date::with(|date| {
            if let Ok(value) = HeaderValue::from_bytes(date) {
                headers.insert(http::header::DATE, value);
            }
        });
    }
    out
}
