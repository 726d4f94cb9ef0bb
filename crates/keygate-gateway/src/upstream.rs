//! The `http-proxy` integration: forward the request to `request.uri` with path parameters
//! substituted, over pooled keep-alive HTTP/1.1 connections, plain or TLS (`https://`, with
//! `upstream_tls`'s connectors: the certificate verified unless the route opted out).
//!
//! The client is keygate's own, on the same wire pieces as the server (`keygate_http::wire`): the
//! request's head is written with its body in one `write()`, the response head is parsed with
//! `httparse` and its body read whole (length, chunked or until close). hyper's client (with
//! hyper-util's pool, then with a pool of ours) spent about a third of the instructions of a
//! proxied request in its dispatcher, body streams and header encoding (docs/benchmarks.md,
//! changes 18 and 20).
//!
//! A pooled connection the upstream closed while idle is noticed when it is checked out (the
//! reactor has seen it become readable: no syscall otherwise) or by the sweeper. When a reused
//! connection fails before any byte of the answer arrives, an idempotent request is sent once
//! more on a new connection, as nginx does (`proxy_next_upstream`); other methods get the 502,
//! since the upstream may have acted on them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri, Version};
use keygate_types::response::GatewayError;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use keygate_http::wire::{self as h1, MAX_HEAD, MAX_HEADERS, ReadError, Wire};
use keygate_http::{Fields, Headers, Request, Response, Stream};

use crate::upstream_tls;

use crate::respond::X_AMZN_REQUEST_ID;

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
/// Bodies up to this size are copied behind the head and sent with it in one write.
const COALESCE: usize = 16 * 1024;

/// One upstream connection, idle in the pool or carrying one exchange. Its deadline (set once
/// per exchange) bounds the whole exchange to [`TIMEOUT`].
struct Pooled {
    wire: Wire,
    idle_since: Instant,
}

impl Pooled {
    /// Whether an idle connection still looks open: nothing (no bytes, no close) arrived while
    /// it was idle. No syscall unless the reactor saw the socket become readable.
    fn usable(&mut self) -> bool {
        if !self.wire.buf.is_empty() {
            return false;
        }
        self.wire.stream.is_quiet()
    }

    fn fresh(&mut self) -> bool {
        self.idle_since.elapsed() < IDLE_TIMEOUT && self.usable()
    }
}

type IdleMap = HashMap<String, Vec<Pooled>, foldhash::fast::RandomState>;

#[derive(Default)]
struct Pool {
    idle: Mutex<IdleMap>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdleMap> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `authority` that is still usable.
    fn checkout(&self, authority: &str) -> Option<Pooled> {
        let mut idle = self.lock();
        let list = idle.get_mut(authority)?;
        while let Some(mut c) = list.pop() {
            if c.fresh() {
                return Some(c);
            }
        }
        None
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
    fn sweep(&self) {
        let mut idle = self.lock();
        for list in idle.values_mut() {
            list.retain_mut(Pooled::fresh);
        }
        idle.retain(|_, list| !list.is_empty());
    }
}

/// Why an exchange failed: a 504 or a 502.
enum Failure {
    TimedOut,
    Broken(String),
}

impl From<ReadError> for Failure {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::TimedOut => Self::TimedOut,
            ReadError::Closed => Self::Broken("connection closed during the response".into()),
            ReadError::Malformed => Self::Broken("malformed response body".into()),
            ReadError::TooLarge => Self::Broken(format!("response body over {MAX_BODY} bytes")),
        }
    }
}

pub(crate) struct Upstream {
    pool: Arc<Pool>,
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
        let pool = Arc::new(Pool::default());
        let weak: Weak<Pool> = Arc::downgrade(&pool);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                pool.sweep();
            }
        });
        Self { pool }
    }

    /// Forwards one request (`insecure`: the route's `tlsConfig.insecureSkipVerification`).
    /// Gateway errors: 502 `Internal server error` for an unreachable or
    /// broken upstream (API Gateway's answer to an integration failure), 504 after [`TIMEOUT`].
    /// `resource` is the route's path template (`users/{id}`, `{proxy+}`): it says which
    /// parameters may span segments.
    pub(crate) async fn forward(
        &self,
        template: &str,
        resource: &str,
        fixed: Option<&Target>,
        insecure: bool,
        params: &[(String, String)],
        request: &Request,
    ) -> Result<Response, GatewayError> {
        let body = &request.body;
        let built;
        let target = match fixed {
            Some(t) if request.query().is_none_or(str::is_empty) => t,
            _ => {
                let path = Target::new(template, resource, params, request.query())
                    .map(|t| t.verification(insecure));
                built = path.map_err(|e| match e {
                    TargetError::Path(why) => {
                        tracing::info!(uri = %template, "http-proxy path parameter refused: {why}");
                        GatewayError::BadRequestPath
                    }
                    TargetError::Config(why) => {
                        tracing::warn!(uri = %template, "http-proxy target is not usable: {why}");
                        GatewayError::InternalServerError
                    }
                })?;
                &built
            }
        };
        let mut out = Vec::with_capacity(512 + if body.len() <= COALESCE { body.len() } else { 0 });
        encode_request(&mut out, target, request);
        match self.exchange(target, &request.method, &out, body).await {
            Ok(res) => Ok(res),
            Err(Failure::TimedOut) => Err(GatewayError::EndpointRequestTimedOut),
            Err(Failure::Broken(why)) => {
                tracing::warn!(uri = %template, authority = %target.authority, "http-proxy upstream failed: {why}");
                Err(GatewayError::InternalServerError)
            }
        }
    }

    /// Sends the encoded request (`head`, which holds a small body too, then `body` if it is
    /// large) on a pooled or new connection and reads the whole response.
    async fn exchange(
        &self,
        target: &Target,
        method: &Method,
        head: &[u8],
        body: &Bytes,
    ) -> Result<Response, Failure> {
        let mut reuse = true;
        loop {
            let pooled = if reuse { self.pool.checkout(&target.pool_key) } else { None };
            let reused = pooled.is_some();
            let mut c = match pooled {
                Some(c) => c,
                None => connect(target).await?,
            };
            c.wire.restart_deadline();
            match round_trip(&mut c, method, head, body).await {
                Ok((res, keep)) => {
                    if keep {
                        self.pool.checkin(&target.pool_key, c);
                    }
                    return Ok(res);
                }
                // The upstream closed a kept-alive connection before answering: once more on a
                // new connection, when repeating the request is safe.
                Err(Trip::Unanswered(_)) if reused && idempotent(method) => reuse = false,
                Err(Trip::Unanswered(f) | Trip::Failed(f)) => return Err(f),
            }
        }
    }
}

/// How a round trip failed: before any byte of the answer (the request may be repeated on
/// another connection if it is idempotent), or after.
enum Trip {
    Unanswered(Failure),
    Failed(Failure),
}

/// Writes the request on `c` and reads the answer; also tells whether `c` can be reused.
async fn round_trip(
    c: &mut Pooled,
    method: &Method,
    head: &[u8],
    body: &Bytes,
) -> Result<(Response, bool), Trip> {
    let wire = &mut c.wire;
    let write = async {
        wire.stream.write_all(head).await?;
        if body.len() > COALESCE {
            wire.stream.write_all(body).await?;
        }
        // TLS keeps what the socket did not take until flushed (nothing to do on plain TCP).
        wire.stream.flush().await?;
        Ok::<_, std::io::Error>(())
    };
    let written = tokio::select! {
        biased;
        w = write => w,
        () = h1::passed(&mut wire.deadline) => return Err(Trip::Failed(Failure::TimedOut)),
    };
    if let Err(e) = written {
        return Err(Trip::Unanswered(Failure::Broken(format!("cannot send the request: {e}"))));
    }

    // The head; informational answers (100 Continue, 103 Early Hints) are skipped.
    let mut answered = false;
    let (status, version, headers) = loop {
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, &wire.buf, &mut slots)
        {
            Ok(httparse::Status::Complete(len)) => {
                let code = res.code.unwrap_or_default();
                let version =
                    if res.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
                if (100..200).contains(&code) && code != 101 {
                    let _ = wire.buf.split_to(len);
                    answered = true;
                    continue;
                }
                let status = StatusCode::from_u16(code)
                    .ok()
                    .filter(|s| *s != StatusCode::SWITCHING_PROTOCOLS)
                    .ok_or_else(|| {
                        Trip::Failed(Failure::Broken(format!("unusable status {code}")))
                    })?;
                let spans = h1::spans(&wire.buf, res.headers);
                let head = wire.buf.split_to(len).freeze();
                break (status, version, Fields::new(head, spans));
            }
            Ok(httparse::Status::Partial) if wire.buf.len() < MAX_HEAD => {
                let got_nothing = !answered && wire.buf.is_empty();
                match wire.fill().await {
                    Ok(()) => {}
                    Err(ReadError::Closed) if got_nothing => {
                        return Err(Trip::Unanswered(Failure::Broken(
                            "connection closed before the response".into(),
                        )));
                    }
                    Err(e) => return Err(Trip::Failed(e.into())),
                }
            }
            Ok(httparse::Status::Partial) => {
                return Err(Trip::Failed(Failure::Broken("response head too large".into())));
            }
            Err(e) => {
                return Err(Trip::Failed(Failure::Broken(format!("malformed response: {e}"))));
            }
        }
    };

    // The body (RFC 9112 §6.3).
    let (close, keep_alive) = h1::connection_tokens(&headers);
    let mut reusable = !close && (version == Version::HTTP_11 || keep_alive);
    let bodiless = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let body = if bodiless {
        Bytes::new()
    } else {
        let read = match (h1::chunked(&headers), h1::content_length(&headers)) {
            (Some(true), _) => wire.read_chunked(MAX_BODY).await,
            (None, Ok(Some(n))) if n > MAX_BODY => Err(ReadError::TooLarge),
            (None, Ok(Some(n))) => wire.read_length(n).await,
            (None, Err(e)) => Err(e),
            // No length: the body ends when the upstream closes.
            (Some(false), _) | (None, Ok(None)) => {
                reusable = false;
                wire.read_to_close(MAX_BODY).await
            }
        };
        read.map_err(|e| Trip::Failed(e.into()))?
    };
    // The server writes the length of the body it sends; a HEAD answer keeps this one.
    let res = Response { status, headers: end_to_end(&headers), body };
    Ok((res, reusable && wire.buf.is_empty()))
}

/// Whether repeating `method` is safe (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A new connection to `target`, its TLS handshake done for an `https://` one; connecting and
/// the handshake together within [`TIMEOUT`].
async fn connect(target: &Target) -> Result<Pooled, Failure> {
    let started = tokio::time::Instant::now();
    let stream = match tokio::time::timeout(
        TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    {
        Err(_) => return Err(Failure::TimedOut),
        Ok(Err(e)) => return Err(Failure::Broken(format!("cannot connect: {e}"))),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let connector = match target.tls {
        Tls::Plain => None,
        Tls::Verified => Some(upstream_tls::verified().map_err(Failure::Broken)?),
        Tls::AnyIssuer => Some(upstream_tls::any_issuer()),
    };
    let stream = match connector {
        None => Stream::Plain(stream),
        Some(connector) => {
            let name = ServerName::try_from(target.host.clone()).map_err(|e| {
                Failure::Broken(format!("{:?} cannot be a TLS server name: {e}", target.host))
            })?;
            let handshake = connector.connect(name, stream);
            match tokio::time::timeout_at(started + TIMEOUT, handshake).await {
                Err(_) => return Err(Failure::TimedOut),
                Ok(Err(e)) => return Err(Failure::Broken(format!("TLS handshake failed: {e}"))),
                Ok(Ok(s)) => Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s))),
            }
        }
    };
    Ok(Pooled { wire: Wire::new(stream, Some(TIMEOUT), false), idle_since: Instant::now() })
}

/// The request line, `host`, the client's end-to-end headers, the length, and a small body.
fn encode_request(out: &mut Vec<u8>, target: &Target, request: &Request) {
    let body = &request.body;
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.path.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(target.authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    let headers = &request.headers;
    let hop = HopByHop::of(headers);
    for (name, value) in headers.iter() {
        // The body is whole: its length is written below, and there is nothing to expect.
        if name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"expect")
            || hop.contains(name)
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let method = &request.method;
    if !body.is_empty()
        || *method == Method::POST
        || *method == Method::PUT
        || *method == Method::PATCH
    {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if body.len() <= COALESCE {
        out.extend_from_slice(body);
    }
}

/// Where one request goes: the pool key, the address, TLS and the request target.
#[derive(Debug)]
pub(crate) struct Target {
    /// `host[:port]` as written in the template: the `Host` header.
    authority: String,
    /// Connections are shared by the targets with the same one: scheme, authority and whether
    /// the certificate was verified.
    pool_key: String,
    host: String,
    port: u16,
    tls: Tls,
    path: PathAndQuery,
}

/// How a target's connections are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// `http://`.
    Plain,
    /// `https://`, the certificate verified against the system's roots.
    Verified,
    /// `https://` with `insecureSkipVerification`: any issuer, the rest verified.
    AnyIssuer,
}

impl Target {
    /// The target of an `http-proxy` URI that has no parameters to substitute (parsed once,
    /// when the table is built); `None` when it has some.
    pub(crate) fn fixed(uri: &str, insecure: bool) -> Option<Self> {
        if uri.contains('{') {
            None
        } else {
            Self::new(uri, "", &[], None).ok().map(|t| t.verification(insecure))
        }
    }

    /// With `insecure` (`insecureSkipVerification`), an `https://` target accepts any issuer.
    fn verification(mut self, insecure: bool) -> Self {
        if insecure && self.tls == Tls::Verified {
            self.tls = Tls::AnyIssuer;
            self.pool_key.push_str("#any-issuer");
        }
        self
    }

    fn new(
        template: &str,
        resource: &str,
        params: &[(String, String)],
        query: Option<&str>,
    ) -> Result<Self, TargetError> {
        let mut target = substitute(template, resource, params)?;
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(q);
        }
        let config = |why: String| TargetError::Config(why);
        let uri: Uri = target.parse().map_err(|e| config(format!("not a valid URI: {e}")))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("http") => (Tls::Plain, 80),
            Some("https") => (Tls::Verified, 443),
            _ => return Err(config("only http:// and https:// upstreams are supported".into())),
        };
        let authority = uri.authority().ok_or_else(|| config("no host".into()))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(default_port);
        let authority = authority.as_str().rsplit('@').next().unwrap_or_default().to_owned();
        let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        // The backstop: whatever the parameters held, the path still starts with the
        // template's own fixed prefix and has no dot segment an upstream would resolve.
        if !params.is_empty() {
            let prefix = fixed_path_prefix(template);
            if !path.path().starts_with(prefix) || path.path().split('/').any(is_dot_segment) {
                return Err(TargetError::Path("the path would leave the integration's URI"));
            }
        }
        let scheme = if tls == Tls::Plain { "http" } else { "https" };
        let pool_key = format!("{scheme}://{authority}");
        Ok(Self { authority, pool_key, host, port, tls, path })
    }
}

/// Why an `http-proxy` target could not be built.
#[derive(Debug, PartialEq, Eq)]
enum TargetError {
    /// The client's path parameters would leave the URI template's path (400).
    Path(&'static str),
    /// The integration's URI itself is unusable (a deployment problem: 502).
    Config(String),
}

/// `.` and `..`, and what Tomcat-style servers read as one (`..;x`).
fn is_dot_segment(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or_default();
    name == "." || name == ".."
}

/// The path of `template` up to its first `{`, e.g. `/api/public/` for
/// `http://up/api/public/{proxy}`.
fn fixed_path_prefix(template: &str) -> &str {
    let fixed = &template[..template.find('{').unwrap_or(template.len())];
    let after_scheme = fixed.find("://").map_or(0, |i| i + 3);
    fixed[after_scheme..].find('/').map_or("/", |i| &fixed[after_scheme + i..])
}

/// The hop-by-hop headers of one message (RFC 9110 §7.6.1: not forwarded in either
/// direction): RFC 9110's list and the names its `Connection` header lists. The list is read
/// once per message; checking a name costs no allocation.
struct HopByHop<'a> {
    listed: smallvec::SmallVec<[&'a [u8]; 2]>,
}

impl<'a> HopByHop<'a> {
    /// Names every message treats as hop-by-hop.
    const ALWAYS: [&'static str; 9] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];

    fn of(headers: &'a Fields) -> Self {
        let listed = headers
            .get_all("connection")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"close"))
            .collect();
        Self { listed }
    }

    fn contains(&self, name: &[u8]) -> bool {
        Self::ALWAYS.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
            || self.listed.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// The fields of an upstream answer that are passed on: not the hop-by-hop ones, and not a
/// request id (the gateway sets its own). Values share the answer's head.
fn end_to_end(fields: &Fields) -> Headers {
    let hop = HopByHop::of(fields);
    // Room for what the gateway adds: request id, two `RateLimit` fields, CORS.
    let mut headers = Headers::with_capacity(fields.len() + 4);
    for (name, value) in fields.iter() {
        if !hop.contains(name) && !name.eq_ignore_ascii_case(X_AMZN_REQUEST_ID.as_bytes()) {
            headers.push_field(fields, name, value);
        }
    }
    headers
}

/// Replaces `{name}` and `{name+}` in the URI template with the (re-encoded) path parameters.
///
/// The values are percent-decoded (as the router matched them), so a client's `%2e%2e` or
/// `..%2F` is a `..` here: no value may hold a `.` or `..` segment (split at `/`), a `\` or a
/// NUL. API Gateway refuses such paths too; keygate answers 400 and never sends them upstream.
/// A value keeps the segments it had in the request: one matched by a greedy `{name+}` of the
/// route's `resource` spans segments (Serverless's http-proxy pattern puts a `{proxy+}`
/// resource into a `{proxy}` URI), one matched by a plain `{name}` was one segment and stays
/// one, a `/` in it (`%2F` from the client) sent on as `%2F`: `users/{id}` with `a%2Fdelete`
/// never reaches the upstream's `users/a/delete`.
fn substitute(
    template: &str,
    resource: &str,
    params: &[(String, String)],
) -> Result<String, TargetError> {
    let mut out = template.to_owned();
    for (name, value) in params {
        let greedy = format!("{{{name}+}}");
        let single = format!("{{{name}}}");
        if !out.contains(&greedy) && !out.contains(&single) {
            continue;
        }
        if value.contains(['\\', '\0']) {
            return Err(TargetError::Path("a path parameter holds a backslash or NUL"));
        }
        if value.split('/').any(is_dot_segment) {
            return Err(TargetError::Path("a path parameter holds a `.` or `..` segment"));
        }
        let encoded: String = if resource.contains(&greedy) {
            value
                .split('/')
                .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
                .collect::<Vec<_>>()
                .join("/")
        } else {
            percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
        };
        out = out.replace(&greedy, &encoded).replace(&single, &encoded);
    }
    Ok(out)
}

const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn substitutes_params() {
        let p = vec![("proxy".to_owned(), "a/b c".to_owned()), ("id".to_owned(), "7".to_owned())];
        let resource = "u/{id}/{proxy+}";
        assert_eq!(substitute("http://x/{proxy+}", resource, &p).unwrap(), "http://x/a/b%20c");
        assert_eq!(
            substitute("http://x/u/{id}/{proxy+}", resource, &p).unwrap(),
            "http://x/u/7/a/b%20c"
        );
        // The Serverless pattern: a greedy resource into a plain `{proxy}` of the URI.
        assert_eq!(substitute("http://x/{proxy}", resource, &p).unwrap(), "http://x/a/b%20c");
    }

    /// Issue 25, finding 8: `%2F` in a plain `{id}` was decoded and sent on as `/`, so
    /// `users/{id}` with `a%2Fdelete` reached the upstream's `users/a/delete`. A plain
    /// parameter's value is one segment upstream too.
    #[test]
    fn a_plain_parameter_stays_one_segment() {
        let p = vec![("id".to_owned(), "a/delete".to_owned())];
        assert_eq!(
            substitute("http://x/users/{id}", "users/{id}", &p).unwrap(),
            "http://x/users/a%2Fdelete"
        );
        // Dot segments stay refused inside it, as an upstream may decode `%2F` itself.
        let p = vec![("id".to_owned(), "a/../../admin".to_owned())];
        assert!(substitute("http://x/users/{id}", "users/{id}", &p).is_err());
    }

    /// Finding 1 of the security review: decoded dot segments (`%2e%2e/`, `..%2F`, raw `../`)
    /// used to be sent upstream, escaping the URI's prefix.
    #[test]
    fn refuses_path_parameters_that_would_leave_the_uri_prefix() {
        let template = "http://up/api/public/{proxy+}";
        // What the router hands over for each attack: values are already percent-decoded.
        for value in [
            "../../admin/x",
            "a/../../admin",
            "..",
            ".",
            "./x",
            "x/..",
            "..;jsessionid=1/admin",
            "a\\..\\admin",
            "a\0b",
        ] {
            let params = vec![("proxy".to_owned(), value.to_owned())];
            assert!(
                matches!(
                    Target::new(template, "{proxy+}", &params, None),
                    Err(TargetError::Path(_))
                ),
                "{value:?} must be refused"
            );
        }
        // The reproduction: a greedy resource substituted into `{proxy}`.
        let params = vec![("proxy".to_owned(), "../../admin/x".to_owned())];
        assert!(matches!(
            Target::new("http://up/api/public/{proxy}", "{proxy+}", &params, None),
            Err(TargetError::Path(_))
        ));
        // Dots inside names are fine.
        let params = vec![("proxy".to_owned(), "v1.2/..x/a..b/.well-known".to_owned())];
        let t = Target::new(template, "{proxy+}", &params, Some("q=..")).unwrap();
        assert_eq!(t.path.as_str(), "/api/public/v1.2/..x/a..b/.well-known?q=..");
    }

    #[test]
    fn the_fixed_prefix_is_the_templates_path_up_to_its_first_parameter() {
        assert_eq!(fixed_path_prefix("http://up/api/public/{proxy+}"), "/api/public/");
        assert_eq!(fixed_path_prefix("http://up:80/{proxy+}"), "/");
        assert_eq!(fixed_path_prefix("http://up{proxy}"), "/");
        assert_eq!(fixed_path_prefix("http://up/u/{id}/x"), "/u/");
    }

    #[test]
    fn targets_keep_the_port_in_the_host_header_and_append_the_query() {
        let t = Target::new("http://user@127.0.0.1:8080/a?x=1", "", &[], Some("y=2")).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.host.as_str(), t.port),
            ("127.0.0.1:8080", "127.0.0.1", 8080)
        );
        assert_eq!(t.path.as_str(), "/a?x=1&y=2");
        let t = Target::new("http://[::1]/", "", &[], None).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        let t = Target::new("https://example.com/", "", &[], None).unwrap();
        assert_eq!(
            (t.port, t.tls, t.pool_key.as_str()),
            (443, Tls::Verified, "https://example.com")
        );
        let t = t.verification(true);
        assert_eq!(
            (t.tls, t.pool_key.as_str()),
            (Tls::AnyIssuer, "https://example.com#any-issuer")
        );
        // Plain http has nothing to skip.
        let t = Target::new("http://example.com/", "", &[], None).unwrap().verification(true);
        assert_eq!((t.tls, t.pool_key.as_str()), (Tls::Plain, "http://example.com"));
        assert!(Target::new("ftp://example.com/", "", &[], None).is_err());
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_lists_are_dropped() {
        let answer = parts(
            "GET",
            "/",
            &[
                ("Connection", "keep-alive, X-Trace"),
                ("x-trace", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Content-Type", "text/plain"),
                ("x-amzn-RequestId", "upstream's"),
            ],
        );
        let h = &answer.headers;
        let hop = HopByHop::of(h);
        assert!(hop.contains(b"X-Trace"));
        assert!(!HopByHop::of(&Fields::default()).contains(b"x-trace"));
        assert!(hop.contains(b"Transfer-Encoding"));
        assert!(!hop.contains(b"content-type"));
        let kept = end_to_end(h);
        let kept: Vec<&str> = kept.iter().map(|(n, _)| n).collect();
        assert_eq!(kept, ["Content-Type"]);
    }

    /// A scripted upstream: answers the n-th request it reads (on any connection) with
    /// `answers[n]`, then closes that connection when the answer's `close` flag says so, without
    /// saying so beforehand. Returns its address, the requests it read and its connection count.
    type Seen = Arc<Mutex<Vec<String>>>;

    async fn scripted(
        answers: Vec<(&'static str, bool)>,
    ) -> (String, Seen, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let conns = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(answers);
        let (seen2, conns2) = (Arc::clone(&seen), Arc::clone(&conns));
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                conns2.fetch_add(1, Ordering::SeqCst);
                let (seen, next, answers) =
                    (Arc::clone(&seen2), Arc::clone(&next), Arc::clone(&answers));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: head, then content-length bytes.
                        let mut chunk = [0u8; 4096];
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let n = s.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len: usize = head
                            .split("\r\n")
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.parse().unwrap());
                        while buf.len() < end + len {
                            let n = s.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let request = String::from_utf8_lossy(&buf[..end + len]).into_owned();
                        buf.drain(..end + len);
                        seen.lock().unwrap().push(request);
                        let (answer, close) = answers[next.fetch_add(1, Ordering::SeqCst)];
                        s.write_all(answer.as_bytes()).await.unwrap();
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/up"), seen, conns)
    }

    /// A request head as a client would send it (the body is given to `forward`).
    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|&(n, v)| (n, v.as_bytes())).collect();
        Request::build(method, uri, &headers).expect("a valid head")
    }

    async fn forward(
        up: &Upstream,
        uri: &str,
        req: &Request,
        body: &'static str,
    ) -> Result<Response, GatewayError> {
        let fixed = Target::new(uri, "", &[], None).ok();
        let mut req = req.clone();
        req.body = Bytes::from_static(body.as_bytes());
        up.forward(uri, "", fixed.as_ref(), false, &[], &req).await
    }

    #[tokio::test]
    async fn reads_every_framing_and_reuses_connections_that_allow_it() {
        let (uri, seen, conns) = scripted(vec![
            ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nok", false),
            (
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n\
                 3;x=y\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: t\r\n\r\n",
                false,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil close", true),
            ("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold", true),
        ])
        .await;
        let up = Upstream::new();
        let get =
            parts("GET", "/x", &[("x-api-key", "k"), ("connection", "x-gone"), ("x-gone", "1")]);
        let r = forward(&up, &uri, &get, "").await.unwrap();
        assert_eq!((r.status, r.body.as_ref()), (StatusCode::OK, &b"ok"[..]));
        assert_eq!(r.headers.get("x-a"), Some(&b"1"[..]));
        let post = parts("POST", "/x", &[("expect", "100-continue"), ("content-length", "4")]);
        let r = forward(&up, &uri, &post, "data").await.unwrap();
        assert_eq!((r.status, r.body.as_ref()), (StatusCode::CREATED, &b"abcde"[..]));
        assert!(r.headers.get("transfer-encoding").is_none());
        let r = forward(&up, &uri, &get, "").await.unwrap();
        assert_eq!((r.status, r.body.len()), (StatusCode::NO_CONTENT, 0));
        // A HEAD answer has no body, whatever its length says; the length is passed on.
        let head = parts("HEAD", "/x", &[]);
        let r = forward(&up, &uri, &head, "").await.unwrap();
        assert_eq!((r.body.len(), r.headers.get("content-length")), (0, Some(&b"5"[..])));
        let r = forward(&up, &uri, &get, "").await.unwrap();
        assert_eq!(r.body.as_ref(), b"until close");
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1, "kept alive until then");
        let r = forward(&up, &uri, &get, "").await.unwrap();
        assert_eq!(r.body.as_ref(), b"old");
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);

        let seen = seen.lock().unwrap();
        let first = seen[0].to_lowercase();
        assert!(first.starts_with("get /up http/1.1\r\nhost: 127.0.0.1:"), "{first}");
        assert!(first.contains("\r\nx-api-key: k\r\n"), "{first}");
        assert!(!first.contains("x-gone") && !first.contains("connection"), "{first}");
        assert!(!first.contains("content-length"), "a GET without a body gets no length");
        let second = seen[1].to_lowercase();
        assert!(second.ends_with("content-length: 4\r\n\r\ndata"), "{second}");
        assert!(!second.contains("expect"), "{second}");
    }

    #[tokio::test]
    async fn a_reused_connection_closed_before_answering_is_retried_only_when_idempotent() {
        let (uri, _seen, conns) = scripted(vec![
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1", false),
            // Read, then closed without an answer (as an upstream restarting would).
            ("", true),
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n2", false),
            ("", true),
        ])
        .await;
        let up = Upstream::new();
        let get = parts("GET", "/x", &[]);
        assert_eq!(forward(&up, &uri, &get, "").await.unwrap().body.as_ref(), b"1");
        // Retried on a new connection.
        assert_eq!(forward(&up, &uri, &get, "").await.unwrap().body.as_ref(), b"2");
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A POST is not repeated: the upstream may have acted on it.
        let post = parts("POST", "/x", &[]);
        assert_eq!(
            forward(&up, &uri, &post, "x").await.unwrap_err(),
            GatewayError::InternalServerError
        );
    }

    #[tokio::test]
    async fn broken_answers_are_502() {
        for answer in [
            "HTTP/1.1 200 OK\r\ncontent-length: 10485761\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            "nonsense\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        ] {
            let (uri, _, _) = scripted(vec![(answer, true)]).await;
            let up = Upstream::new();
            let r = forward(&up, &uri, &parts("POST", "/x", &[]), "").await;
            assert_eq!(r.unwrap_err(), GatewayError::InternalServerError, "{answer}");
        }
    }

    /// An HTTPS upstream answering `ok` to every request on keep-alive connections, with a
    /// self-signed certificate for `names`: its `https://` URI and how many connections it took.
    async fn tls_upstream(
        names: &[&str],
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>, tempfile::TempDir) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names).unwrap();
        let (cert, key) = (dir.path().join("up.crt"), dir.path().join("up.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
        let tls = keygate_http::Tls::load(&cert, &key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&conns);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let tls = tls.clone();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let Ok(mut s) = tls.accept(tcp).await else { return };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..i + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(answer).await.is_err() || s.flush().await.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                });
            }
        });
        (format!("https://localhost:{port}/up"), conns, dir)
    }

    async fn forward_tls(
        up: &Upstream,
        uri: &str,
        insecure: bool,
    ) -> Result<Response, GatewayError> {
        let fixed = Target::fixed(uri, insecure);
        up.forward(uri, "", fixed.as_ref(), insecure, &[], &parts("GET", "/x", &[])).await
    }

    #[tokio::test]
    async fn https_upstreams_are_verified_unless_the_route_opts_out_and_connections_are_reused() {
        use std::sync::atomic::Ordering;
        let (uri, conns, _dir) = tls_upstream(&["localhost"]).await;
        let up = Upstream::new();
        // Self-signed: no trusted root vouches for it.
        assert_eq!(
            forward_tls(&up, &uri, false).await.unwrap_err(),
            GatewayError::InternalServerError
        );
        // Opted out: the issuer is not checked, the connection is kept and reused.
        for _ in 0..3 {
            let r = forward_tls(&up, &uri, true).await.unwrap();
            assert_eq!((r.status, r.body.as_ref()), (StatusCode::OK, &b"ok"[..]));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1, "one TLS connection for three requests");
        // A path with parameters builds its target per request, opted out the same way.
        let template = uri.replace("/up", "/{proxy}");
        let params = vec![("proxy".to_owned(), "p".to_owned())];
        let r =
            up.forward(&template, "{proxy+}", None, true, &params, &parts("GET", "/x", &[])).await;
        assert_eq!(r.unwrap().status, StatusCode::OK);
        let r =
            up.forward(&template, "{proxy+}", None, false, &params, &parts("GET", "/x", &[])).await;
        assert_eq!(r.unwrap_err(), GatewayError::InternalServerError);
    }

    #[tokio::test]
    async fn opting_out_still_checks_the_name() {
        let (uri, conns, _dir) = tls_upstream(&["other.example"]).await;
        let up = Upstream::new();
        assert_eq!(
            forward_tls(&up, &uri, true).await.unwrap_err(),
            GatewayError::InternalServerError
        );
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 0, "no handshake completed");
    }
}
