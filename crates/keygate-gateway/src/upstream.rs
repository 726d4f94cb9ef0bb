//! The `http-proxy` integration: forward the request to `request.uri` with path parameters
//! substituted, over pooled keep-alive HTTP/1.1 connections.
//!
//! Each proxied request checks a connection out of the pool and drives it from its own task
//! (the connection future and the response future are polled together), then puts it back.
//! hyper-util's pooled client instead runs every connection in a task of its own, so a request
//! crossed tasks through a channel both ways, and its pool hashed the upstream's authority byte
//! by byte with SipHash three times per request; callgrind counted ~13% fewer instructions per
//! proxied request this way (docs/benchmarks.md).
//!
//! A pooled connection the upstream closed while idle is noticed when it is checked out (or by
//! the sweeper); a request that hyper reports as never written is retried once on a new
//! connection, as hyper-util's client does.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use keygate_types::response::GatewayError;
use tokio::net::TcpStream;

use crate::respond::Body;

/// API Gateway's default integration timeout.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(29);
/// Largest upstream body passed back (API Gateway's payload limit).
pub(crate) const MAX_BODY: usize = 10 * 1024 * 1024;
/// An idle pooled connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream authority; more are closed when they come back.
const MAX_IDLE_PER_HOST: usize = 512;
/// How often idle connections are checked for expiry and for being closed by the upstream.
const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded in either direction.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One upstream connection: the handle requests are sent through and the connection future that
/// does the I/O, polled by whichever request holds it.
struct Pooled {
    sender: SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended.
    conn: Option<Conn>,
    idle_since: Instant,
}

impl Pooled {
    /// Drives the connection's I/O; once it has ended, drops it. Dropping the connection
    /// completes whatever waits on it (with an error, or with the request handed back when it
    /// was never written).
    fn poll_conn(&mut self, cx: &mut std::task::Context<'_>) {
        if let Some(conn) = self.conn.as_mut()
            && Pin::new(conn).poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    /// Polls the connection once (without waiting) so it notices a close by the upstream, and
    /// tells whether it can take a request now.
    async fn usable(&mut self) -> bool {
        poll_fn(|cx| {
            self.poll_conn(cx);
            Poll::Ready(self.conn.is_some() && !self.sender.is_closed() && self.sender.is_ready())
        })
        .await
    }

    /// Runs `fut` while driving the connection; the connection ends (and is dropped) if the
    /// upstream closes it, which also resolves `fut`.
    async fn drive<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            self.poll_conn(cx);
            match fut.as_mut().poll(cx) {
                Poll::Ready(out) => Poll::Ready(Some(out)),
                Poll::Pending if self.conn.is_none() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<String, Vec<Pooled>, foldhash::fast::RandomState>>,
}

impl Pool {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Pooled>, foldhash::fast::RandomState>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `authority` that is still usable.
    async fn checkout(&self, authority: &str) -> Option<Pooled> {
        loop {
            let mut c = self.lock().get_mut(authority)?.pop()?;
            if c.idle_since.elapsed() < IDLE_TIMEOUT && c.usable().await {
                return Some(c);
            }
        }
    }

    fn checkin(&self, authority: &str, mut c: Pooled) {
        c.idle_since = Instant::now();
        let mut idle = self.lock();
        if let Some(list) = idle.get_mut(authority) {
            if list.len() < MAX_IDLE_PER_HOST {
                list.push(c);
            }
        } else {
            idle.insert(authority.to_owned(), vec![c]);
        }
    }

    /// Closes idle connections that expired or that the upstream closed.
    async fn sweep(&self) {
        let taken: Vec<(String, Vec<Pooled>)> = self.lock().drain().collect();
        let mut kept = Vec::with_capacity(taken.len());
        for (authority, list) in taken {
            let mut alive = Vec::with_capacity(list.len());
            for mut c in list {
                if c.idle_since.elapsed() < IDLE_TIMEOUT && c.usable().await {
                    alive.push(c);
                }
            }
            kept.push((authority, alive));
        }
        let mut idle = self.lock();
        for (authority, mut alive) in kept {
            if alive.is_empty() {
                continue;
            }
            // Connections checked in meanwhile are newer: keep them on top.
            let list = idle.entry(authority).or_default();
            alive.append(list);
            *list = alive;
            list.truncate(MAX_IDLE_PER_HOST);
        }
    }
}

pub(crate) struct Upstream {
    pool: Arc<Pool>,
    builder: http1::Builder,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

impl Upstream {
    /// A client with an empty pool; its sweeper runs on the current runtime until the client is
    /// dropped.
    pub(crate) fn new() -> Self {
        let mut builder = http1::Builder::new();
        // Requests are small: one copied buffer and one write() beat writev() with several
        // slices (docs/benchmarks.md), as on the server side.
        builder.writev(false);
        let pool = Arc::new(Pool::default());
        let weak: Weak<Pool> = Arc::downgrade(&pool);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                pool.sweep().await;
            }
        });
        Self { pool, builder }
    }

    /// Forwards one request. Gateway errors: 502 `Internal server error` for an unreachable or
    /// broken upstream (API Gateway's answer to an integration failure), 504 after [`TIMEOUT`].
    pub(crate) async fn forward(
        &self,
        template: &str,
        params: &[(String, String)],
        query: Option<&str>,
        method: &http::Method,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<http::Response<Body>, GatewayError> {
        let target = Target::new(template, params, query).map_err(|why| {
            tracing::warn!(uri = %template, "http-proxy target is not usable: {why}");
            GatewayError::InternalServerError
        })?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method.clone();
        *req.uri_mut() = Uri::from(target.path.clone());
        let out = req.headers_mut();
        out.reserve(headers.len() + 1);
        if let Ok(host) = HeaderValue::from_str(&target.authority) {
            out.insert(header::HOST, host);
        }
        // Names the client's `Connection` header lists are only looked for when it has one.
        let connection = headers.contains_key(header::CONNECTION).then_some(headers);
        for (name, value) in headers {
            if name != header::HOST && !is_hop_by_hop(name, connection) {
                out.append(name.clone(), value.clone());
            }
        }
        match tokio::time::timeout(TIMEOUT, self.exchange(&target, req)).await {
            Err(_) => Err(GatewayError::EndpointRequestTimedOut),
            Ok(Err(why)) => {
                tracing::warn!(uri = %template, authority = %target.authority, "http-proxy upstream failed: {why}");
                Err(GatewayError::InternalServerError)
            }
            Ok(Ok(res)) => Ok(res),
        }
    }

    /// Sends `req` on a pooled (or new) connection and reads the whole response.
    async fn exchange(
        &self,
        target: &Target,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<Body>, String> {
        let mut req = Some(req);
        let mut reused = true;
        let (mut c, res) = loop {
            // A retry always takes a new connection (and leaves the pool alone).
            let pooled = if reused { self.pool.checkout(&target.authority).await } else { None };
            let mut c = match pooled {
                Some(c) => c,
                None => {
                    reused = false;
                    self.connect(target).await?
                }
            };
            let Some(r) = req.take() else { return Err("no request to send".into()) };
            let sent = c.sender.try_send_request(r);
            match c.drive(sent).await {
                Some(Ok(res)) => break (c, res),
                Some(Err(mut e)) => match e.take_message() {
                    // Never written: the pooled connection had been closed. Once more, fresh.
                    Some(r) if reused => {
                        req = Some(r);
                        reused = false;
                    }
                    _ => return Err(e.into_error().to_string()),
                },
                None => return Err("connection closed before the response".into()),
            }
        };
        let (mut parts, mut body) = res.into_parts();
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        let mut total = 0usize;
        loop {
            match c.drive(body.frame()).await {
                Some(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    total += data.len();
                    if total > MAX_BODY {
                        return Err(format!("response body over {MAX_BODY} bytes"));
                    }
                    match &first {
                        None => first = Some(data),
                        Some(f) => {
                            if rest.is_empty() {
                                rest.extend_from_slice(f);
                            }
                            rest.extend_from_slice(&data);
                        }
                    }
                }
                Some(None) => break,
                Some(Some(Err(e))) => return Err(format!("response body failed: {e}")),
                None => return Err("connection closed during the response body".into()),
            }
        }
        let body = if rest.is_empty() { first.unwrap_or_default() } else { rest.freeze() };
        if c.usable().await {
            self.pool.checkin(&target.authority, c);
        }
        strip_hop_by_hop(&mut parts.headers);
        // hyper sets the length from the body.
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.version = http::Version::HTTP_11;
        parts.extensions.clear();
        Ok(http::Response::from_parts(parts, Full::new(body)))
    }

    async fn connect(&self, target: &Target) -> Result<Pooled, String> {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake failed: {e}"))?;
        Ok(Pooled { sender, conn: Some(conn), idle_since: Instant::now() })
    }
}

/// Where one request goes: the pool key, the address and the request target.
struct Target {
    /// `host[:port]` as written in the template: the pool key and the `Host` header.
    authority: String,
    host: String,
    port: u16,
    path: PathAndQuery,
}

impl Target {
    fn new(
        template: &str,
        params: &[(String, String)],
        query: Option<&str>,
    ) -> Result<Self, String> {
        let mut target = substitute(template, params);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(q);
        }
        let uri: Uri = target.parse().map_err(|e| format!("not a valid URI: {e}"))?;
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
            return Err("only http:// upstreams are supported".into());
        }
        let authority = uri.authority().ok_or("no host")?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(80);
        let authority = authority.as_str().rsplit('@').next().unwrap_or_default().to_owned();
        let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Self { authority, host, port, path })
    }
}

/// Whether `name` is hop-by-hop in a message whose `Connection` header lists `connection`: one
/// of RFC 9110's, or listed there. Allocation-free: it runs for every forwarded header.
fn is_hop_by_hop(name: &HeaderName, connection: Option<&HeaderMap>) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    ) || connection.is_some_and(|headers| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
    })
}

/// Removes the hop-by-hop headers of an upstream response, the ones its `Connection` lists too.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in listed {
            headers.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Replaces `{name}` and `{name+}` in the URI template with the (re-encoded) path parameters.
fn substitute(template: &str, params: &[(String, String)]) -> String {
    let mut out = template.to_owned();
    if params.is_empty() {
        return out;
    }
    for (name, value) in params {
        let encoded: String = value
            .split('/')
            .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/");
        out = out
            .replace(&format!("{{{name}+}}"), &encoded)
            .replace(&format!("{{{name}}}"), &encoded);
    }
    out
}

const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_params() {
        let p = vec![("proxy".to_owned(), "a/b c".to_owned()), ("id".to_owned(), "7".to_owned())];
        assert_eq!(substitute("http://x/{proxy}", &p), "http://x/a/b%20c");
        assert_eq!(substitute("http://x/u/{id}/{proxy+}", &p), "http://x/u/7/a/b%20c");
    }

    #[test]
    fn targets_keep_the_port_in_the_host_header_and_append_the_query() {
        let t = Target::new("http://user@127.0.0.1:8080/a?x=1", &[], Some("y=2")).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.host.as_str(), t.port),
            ("127.0.0.1:8080", "127.0.0.1", 8080)
        );
        assert_eq!(t.path.as_str(), "/a?x=1&y=2");
        let t = Target::new("http://[::1]/", &[], None).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert!(Target::new("https://example.com/", &[], None).is_err());
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_lists_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Trace"));
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(is_hop_by_hop(&HeaderName::from_static("x-trace"), Some(&h)));
        assert!(!is_hop_by_hop(&HeaderName::from_static("x-trace"), None));
        assert!(is_hop_by_hop(&header::TRANSFER_ENCODING, None));
        assert!(!is_hop_by_hop(&header::CONTENT_TYPE, Some(&h)));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::CONTENT_TYPE]);
    }
}
