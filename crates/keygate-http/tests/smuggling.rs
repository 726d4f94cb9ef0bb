//! Request-smuggling vectors against keygate's HTTP/1.1 server: each is sent as raw bytes on a
//! fresh connection, followed (in the same write) by a probe request that closes the
//! connection. What the server answered (statuses in order), how many requests reached the
//! service, and whether the probe was answered (the connection stayed in step) or not (the
//! server closed after refusing) tell how the server framed the bytes. A front proxy that reads
//! the same bytes another way is the attack; the expected answers are the ones that leave no
//! second reading: refuse and close.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use keygate_http::{Admit, Options, Request, Response, Service, serve};
use tokio::net::TcpListener;

/// Appended to every vector: answered only if the server is still reading requests in step.
const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n";
const MAX_BODY: usize = 1024 * 1024;

/// Answers `<path> <body length>`; refuses `/refuse` on its head; counts the requests it is
/// called with.
struct Echo {
    calls: AtomicUsize,
}

impl Service for Echo {
    type Admitted = ();

    async fn admit(&self, head: &Request, _peer: SocketAddr) -> Admit<()> {
        if head.path() == "/refuse" {
            return Admit::Respond(Response::empty(StatusCode::FORBIDDEN));
        }
        Admit::Proceed(())
    }

    async fn call(&self, req: Request, (): (), _peer: SocketAddr) -> Response {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let body = format!("{} {}", req.path(), req.body.len());
        Response::new(StatusCode::OK, Bytes::from(body))
    }

    fn too_large(&self, _head: &Request) -> Response {
        Response::empty(StatusCode::PAYLOAD_TOO_LARGE)
    }
}

/// One vector and how the server must answer it.
struct Case {
    name: &'static str,
    raw: &'static [u8],
    /// Statuses in order, the probe's included when it is answered.
    statuses: &'static [u16],
    /// Requests that reached the service, the probe's included.
    seen: usize,
    /// The body of the first answer, when it matters (how the request was read).
    first_body: Option<&'static str>,
}

const fn case(
    name: &'static str,
    raw: &'static [u8],
    statuses: &'static [u16],
    seen: usize,
) -> Case {
    Case { name, raw, statuses, seen, first_body: None }
}

/// Refused, and the connection closed: nothing after the vector is read as a request.
const fn refused(name: &'static str, raw: &'static [u8], status: &'static [u16]) -> Case {
    case(name, raw, status, 0)
}

fn cases() -> Vec<Case> {
    vec![
        // Content-Length and Transfer-Encoding.
        refused(
            "CL then TE",
            b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "TE then CL",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "duplicate differing CL",
            b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            &[400],
        ),
        refused(
            "duplicate equal CL",
            b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
            &[400],
        ),
        refused(
            "CL as a list",
            b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5, 5\r\n\r\nhello",
            &[400],
        ),
        refused("CL with a plus sign", b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: +5\r\n\r\nhello", &[400]),
        refused("CL with a minus sign", b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: -5\r\n\r\n", &[400]),
        refused("CL with an inner space", b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 1 0\r\n\r\n", &[400]),
        refused("CL in hex", b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0x5\r\n\r\nhello", &[400]),
        refused("CL empty", b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: \r\n\r\n", &[400]),
        refused(
            "CL over the limit",
            b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            &[413],
        ),
        refused(
            "TE chunked, identity",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            &[501],
        ),
        refused(
            "TE xchunked",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\n",
            &[501],
        ),
        refused(
            "TE chunked twice",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            &[501],
        ),
        refused(
            "TE line starting with a space (obs-fold)",
            b"POST / HTTP/1.1\r\nhost: h\r\n transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "TE line starting with a tab (obs-fold)",
            b"POST / HTTP/1.1\r\nhost: h\r\n\ttransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "TE value on a folded line",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "TE name with a space before the colon",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "chunked in HTTP/1.0",
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        // Line ends and odd bytes in the head.
        refused("bare LF line ends", b"GET / HTTP/1.1\nhost: h\n\n", &[400]),
        refused("one bare LF between fields", b"GET / HTTP/1.1\r\nhost: h\nx-a: b\r\n\r\n", &[400]),
        refused("bare LF ending the head", b"GET / HTTP/1.1\r\nhost: h\r\n\n", &[400]),
        refused("bare CR inside a field", b"GET / HTTP/1.1\r\nhost: h\rx-a: b\r\n\r\n", &[400]),
        refused("bare CR after the request line", b"GET / HTTP/1.1\rhost: h\r\n\r\n", &[400]),
        refused("NUL in a field value", b"GET / HTTP/1.1\r\nhost: h\r\nx-a: a\0b\r\n\r\n", &[400]),
        refused("space before the colon", b"GET / HTTP/1.1\r\nhost: h\r\nx-a : b\r\n\r\n", &[400]),
        refused("two spaces in the request line", b"GET  / HTTP/1.1\r\nhost: h\r\n\r\n", &[400]),
        refused("trailing space in the request line", b"GET / HTTP/1.1 \r\nhost: h\r\n\r\n", &[400]),
        refused("lowercase version", b"GET / http/1.1\r\nhost: h\r\n\r\n", &[400]),
        // Host (RFC 9112 §3.2).
        refused("two Host fields", b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", &[400]),
        refused("no Host on HTTP/1.1", b"GET / HTTP/1.1\r\nx-a: b\r\n\r\n", &[400]),
        case("no Host on HTTP/1.0 (allowed; closes)", b"GET /old HTTP/1.0\r\n\r\n", &[200], 1),
        Case {
            first_body: Some("/ 0"),
            ..case(
                "absolute-form target with a fragment right after the authority (panicked once)",
                b"GET http://other.example#f HTTP/1.1\r\nhost: h\r\n\r\n",
                &[200, 200],
                2,
            )
        },
        Case {
            first_body: Some("/x 0"),
            ..case(
                "absolute-form target: the path is the target's",
                b"GET http://other.example/x HTTP/1.1\r\nhost: h\r\n\r\n",
                &[200, 200],
                2,
            )
        },
        // Chunk lines.
        refused(
            "bare LF after the chunk size",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n2\nxx\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "bare LF in a chunk extension",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n2;\nxx\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "bare LF inside an extension name",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n2;a\nb\r\nxx\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "bare CR in a chunk line",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n2\rxx\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "CR LF inside a quoted extension value",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n2;a=\"x\r\nxx\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "extension value that is not a token",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n2;a=b c\r\nxx\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "empty chunk size",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n\r\nxx\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "chunk size with a trailing space",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "chunk size with a leading space",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "chunk size of 17 hex digits (overflow)",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "chunk size 0x-prefixed",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "no CRLF after the chunk data",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            &[400],
        ),
        refused(
            "bare LF after the chunk data",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
            &[400],
        ),
        refused(
            "bare LF in the trailers",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-t: v\n\r\n",
            &[400],
        ),
        refused(
            "chunk over the body limit",
            b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\nfffffff\r\n",
            &[413],
        ),
        // What is allowed is read one way only, and the probe after it is answered.
        Case {
            first_body: Some("/ 5"),
            ..case(
                "chunk extensions: BWS before `;` and around `=`, token and quoted values",
                b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3 ;a = b;c=\"x y\\\"\"\r\nhel\r\n2;d\r\nlo\r\n0\r\nx-t: v\r\n\r\n",
                &[200, 200],
                2,
            )
        },
        Case {
            first_body: Some("/ 10"),
            ..case(
                "TE value in another case, hex size in upper case",
                b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
                &[200, 200],
                2,
            )
        },
        Case {
            first_body: Some("/ 5"),
            ..case(
                "a request after a CL body is a request of its own",
                b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nhost: h\r\n\r\n",
                &[200, 200, 200],
                3,
            )
        },
        case(
            "a refused request's buffered body is dropped, not read as a request",
            b"POST /refuse HTTP/1.1\r\nhost: h\r\ncontent-length: 46\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: h\r\nx-a: bc\r\n\r\n",
            &[403, 200],
            1,
        ),
        refused(
            "a refused request whose body is not all here closes: the rest is never a request",
            b"POST /refuse HTTP/1.1\r\nhost: h\r\ncontent-length: 100000\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: h\r\n\r\n",
            &[403],
        ),
        refused(
            "a refused chunked request closes",
            b"POST /refuse HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: h\r\n\r\n",
            &[403],
        ),
    ]
}

/// Sends `raw` and the probe in one write and reads answers until the server closes:
/// (status, body) of each.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = raw.to_vec();
    all.extend_from_slice(PROBE);
    // The server may close before taking it all.
    let _ = s.write_all(&all);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // Reset after a lingering close: what arrived before counts.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no close within 10 s: {e}"),
        }
    }
    let mut out = Vec::new();
    let mut rest = &buf[..];
    while !rest.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut res = httparse::Response::new(&mut slots);
        let Ok(httparse::Status::Complete(len)) = res.parse(rest) else {
            panic!("not a response: {}", rest.escape_ascii())
        };
        let length = res
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap());
        let body = String::from_utf8_lossy(&rest[len..len + length]).into_owned();
        out.push((res.code.unwrap(), body));
        rest = &rest[len + length..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_vectors_are_framed_one_way_only() {
    let mut failures = Vec::new();
    for case in cases() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = Arc::new(Echo { calls: AtomicUsize::new(0) });
        let options = Options {
            max_body: MAX_BODY,
            read_timeout: Some(Duration::from_secs(10)),
            body_timeout: Some(Duration::from_secs(10)),
            write_timeout: Some(Duration::from_secs(10)),
            max_connections: 16,
            max_per_client: 0,
            max_buffered: 4 * MAX_BODY,
            drain: Duration::from_secs(1),
            tls: None,
            read_after_peer_gone: false,
        };
        let server =
            tokio::spawn(serve(listener, Arc::clone(&echo), options, std::future::pending()));
        let got = tokio::task::spawn_blocking(move || exchange(addr, case.raw)).await.unwrap();
        server.abort();
        let statuses: Vec<u16> = got.iter().map(|&(s, _)| s).collect();
        let seen = echo.calls.load(Ordering::SeqCst);
        let body_ok = case.first_body.is_none_or(|b| got.first().is_some_and(|(_, g)| g == b));
        if statuses != case.statuses || seen != case.seen || !body_ok {
            failures.push(format!(
                "{}: got {statuses:?} with {seen} request(s) seen ({got:?}), want {:?} with {}{}",
                case.name,
                case.statuses,
                case.seen,
                case.first_body.map(|b| format!(", first body {b:?}")).unwrap_or_default(),
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
