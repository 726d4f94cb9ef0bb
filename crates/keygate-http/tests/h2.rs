//! HTTP/2 on a TLS listener that offers it (`Tls::offering_http2`): a client that negotiates `h2`
//! reaches the same `Service` with the head the HTTP/1.1 parser would have made, the same
//! admission before the body, the same body limits; one that asks for `http/1.1` gets HTTP/1.1;
//! an idle connection is closed and shutdown sends GOAWAY.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate_http::{Admit, Options, Request, Response, Service, Tls, serve};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_BODY: usize = 64 * 1024;

/// Answers with what it was handed: method, target, version, the fields in order and the body
/// length; `/refuse` is refused on its head; `/hop` answers with connection-specific fields.
struct Echo {
    calls: AtomicUsize,
}

impl Service for Echo {
    type Admitted = ();

    async fn admit(&self, head: &Request, _peer: SocketAddr) -> Admit<()> {
        if head.path() == "/refuse" {
            return Admit::Respond(Response::new(StatusCode::FORBIDDEN, Bytes::from("refused")));
        }
        Admit::Proceed(())
    }

    async fn call(&self, req: Request, (): (), _peer: SocketAddr) -> Response {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut text = format!("{} {} {:?}\n", req.method, req.target(), req.version);
        for (name, value) in req.headers.iter() {
            text.push_str(&format!(
                "{}: {}\n",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value)
            ));
        }
        text.push_str(&format!("body {}", req.body.len()));
        let mut res = Response::new(StatusCode::OK, Bytes::from(text));
        res.headers.push_static("x-echo", "1");
        if req.path() == "/hop" {
            res.headers.push_static("connection", "close");
            res.headers.push_static("transfer-encoding", "chunked");
            res.headers.push_static("keep-alive", "timeout=5");
        }
        res
    }

    fn too_large(&self, _head: &Request) -> Response {
        Response::new(StatusCode::PAYLOAD_TOO_LARGE, Bytes::from("too large"))
    }
}

struct Server {
    addr: SocketAddr,
    echo: Arc<Echo>,
    roots: rustls::RootCertStore,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn tls(dir: &Path) -> (Tls, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    (Tls::load(&cert, &key).unwrap().offering_http2(), generated.cert.der().clone())
}

async fn start(read_timeout: Duration) -> Server {
    start_with(read_timeout, Duration::from_secs(5)).await
}

async fn start_with(read_timeout: Duration, body_timeout: Duration) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (tls, der) = tls(dir.path());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Arc::new(Echo { calls: AtomicUsize::new(0) });
    let options = Options {
        max_body: MAX_BODY,
        read_timeout: Some(read_timeout),
        body_timeout: Some(body_timeout),
        write_timeout: Some(Duration::from_secs(5)),
        max_connections: 64,
        max_per_client: 0,
        max_buffered: 4 * MAX_BODY,
        drain: Duration::from_secs(5),
        tls: Some(tls),
        read_after_peer_gone: false,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, Arc::clone(&echo), options, async {
        let _ = stopped.await;
    }));
    Server { addr, echo, roots, stop: Some(stop), task }
}

impl Server {
    async fn tls_connect(&self, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
    }

    /// An HTTP/2 client connection (its driver runs on a task; `done` completes when it ends).
    async fn h2(
        &self,
    ) -> (hyper::client::conn::http2::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>) {
        let tls = self.tls_connect(&[b"h2", b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the server chose h2");
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        let done = tokio::spawn(async move {
            let _ = conn.await;
        });
        (send, done)
    }
}

async fn send(
    client: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, String) {
    let res = client.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(uri: &str) -> http::request::Builder {
    http::Request::get(uri)
}

#[tokio::test]
async fn an_h2_request_reaches_the_service_as_the_http1_parser_reads_it() {
    let server = start(Duration::from_secs(30)).await;
    let (mut client, _done) = server.h2().await;
    let req = get("https://localhost/candidates?limit=2&x=%20")
        .header("x-api-key", "k")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(&mut client, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("GET /candidates?limit=2&x=%20 HTTP/2.0\n"), "{body}");
    assert!(body.contains("\nhost: localhost\n"), "{body}");
    assert!(body.contains("\nx-api-key: k\n"), "{body}");
    assert!(body.contains("\ncookie: a=1; b=2\n"), "cookie crumbs are joined: {body}");
    assert!(body.ends_with("body 0"), "{body}");
    assert_eq!(headers["x-echo"], "1");
    assert!(headers.contains_key("date"));

    // A body is read whole and handed over.
    let req = http::Request::post("https://localhost/candidates")
        .body(Full::new(Bytes::from(vec![b'x'; 3000])))
        .unwrap();
    let (status, _, body) = send(&mut client, req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.ends_with("body 3000"), "{body}");

    // Connection-specific fields never reach an HTTP/2 answer (they would be a protocol error).
    let (status, headers, _) =
        send(&mut client, get("https://localhost/hop").body(Full::default()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    for name in ["connection", "transfer-encoding", "keep-alive"] {
        assert!(!headers.contains_key(name), "{name} in {headers:?}");
    }

    // Many streams at once on the one connection.
    let mut answers = Vec::new();
    for i in 0..50 {
        let mut client = client.clone();
        answers.push(tokio::spawn(async move {
            let req = get(&format!("https://localhost/n/{i}")).body(Full::default()).unwrap();
            send(&mut client, req).await
        }));
    }
    for (i, answer) in answers.into_iter().enumerate() {
        let (status, _, body) = answer.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with(&format!("GET /n/{i} ")), "{body}");
    }
    assert_eq!(server.echo.calls.load(Ordering::SeqCst), 53);
}

#[tokio::test]
async fn heads_are_refused_as_on_http1_and_refused_bodies_are_never_read() {
    let server = start(Duration::from_secs(30)).await;
    let (mut client, _done) = server.h2().await;
    // `Host` naming another authority than `:authority`: malformed (RFC 9113 §8.3.1).
    let req = get("https://localhost/x").header("host", "elsewhere").body(Full::default()).unwrap();
    let (status, _, _) = send(&mut client, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The same host twice is fine; two different ones are not.
    let req = get("https://localhost/x").header("host", "localhost").body(Full::default()).unwrap();
    assert_eq!(send(&mut client, req).await.0, StatusCode::OK);
    // More fields than the HTTP/1.1 server takes: 431, as there.
    let mut req = get("https://localhost/x");
    for i in 0..120 {
        req = req.header(format!("x-f{i}"), "v");
    }
    let (status, _, _) = send(&mut client, req.body(Full::default()).unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // Refused on its head: answered without the body being read, the service never called.
    let before = server.echo.calls.load(Ordering::SeqCst);
    let req = http::Request::post("https://localhost/refuse")
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .unwrap();
    let (status, _, body) = send(&mut client, req).await;
    assert_eq!((status, body.as_str()), (StatusCode::FORBIDDEN, "refused"));
    // Over the body limit, declared or streamed: the service's own answer, no call.
    let req = http::Request::post("https://localhost/big")
        .body(Full::new(Bytes::from(vec![b'x'; MAX_BODY + 1])))
        .unwrap();
    let (status, _, body) = send(&mut client, req).await;
    assert_eq!((status, body.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "too large"));
    assert_eq!(server.echo.calls.load(Ordering::SeqCst), before);

    // The connection is still good.
    let (status, _, _) =
        send(&mut client, get("https://localhost/after").body(Full::default()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_asking_for_http1_gets_http1_on_the_same_listener() {
    let server = start(Duration::from_secs(30)).await;
    let mut tls = server.tls_connect(&[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET /one HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("GET /one HTTP/1.1\n"), "{text}");
    // No ALPN at all: HTTP/1.1 too.
    let tls = server.tls_connect(&[]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_and_shutdown_says_goaway() {
    let mut server = start(Duration::from_millis(300)).await;
    let (mut client, done) = server.h2().await;
    let (status, _, _) =
        send(&mut client, get("https://localhost/x").body(Full::default()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    // Nothing open for the read timeout: the server closes the connection.
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap();

    // Shutdown: an open connection is told to go away and the server finishes.
    let (mut client, done) = server.h2().await;
    let (status, _, _) =
        send(&mut client, get("https://localhost/y").body(Full::default()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("the connection ends on shutdown")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("the server stops")
        .unwrap();
}

#[tokio::test]
async fn a_rapid_reset_flood_neither_runs_the_service_nor_stops_the_server() {
    let server = start(Duration::from_secs(30)).await;
    let tls = server.tls_connect(&[b"h2"]).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let flood_conn = tokio::spawn(conn);
    // CVE-2023-44487: open a stream, reset it at once, again and again. Each is a POST whose
    // body never comes, so nothing may reach `call`.
    let mut client = Some(client);
    let mut opened = 0;
    for _ in 0..20_000 {
        let Some(ready) = client.take() else { break };
        // An error: the server had enough (GOAWAY), which is fine too.
        let Ok(mut ready) = ready.ready().await else { break };
        let req = http::Request::post("https://localhost/flood").body(()).unwrap();
        let Ok((_answer, mut stream)) = ready.send_request(req, false) else { break };
        stream.send_reset(h2::Reason::CANCEL);
        opened += 1;
        client = Some(ready);
    }
    assert!(opened > 0);
    drop(client);
    // Another client is served at once, and the flood reached no handler.
    let (mut other, _done) = server.h2().await;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        send(&mut other, get("https://localhost/after").body(Full::default()).unwrap()),
    )
    .await
    .expect("the server answers while and after being flooded");
    assert_eq!(answer.0, StatusCode::OK);
    assert_eq!(server.echo.calls.load(Ordering::SeqCst), 1, "only /after was called");
    // The flooding connection ends (the client dropped its handle; the server closes it idle
    // or has sent GOAWAY) rather than lingering with its streams.
    let _ = tokio::time::timeout(Duration::from_secs(5), flood_conn).await;
}

#[tokio::test]
async fn an_h2_body_that_does_not_come_in_time_is_a_408_and_no_call() {
    let slow = start_with(Duration::from_secs(30), Duration::from_millis(300)).await;
    let tls = slow.tls_connect(&[b"h2"]).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post("https://localhost/slow").body(()).unwrap();
    // The head, then one piece of the body, then nothing.
    let (answer, mut body) = client.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"part"), false).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("answered within the body timeout")
        .unwrap();
    assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(slow.echo.calls.load(Ordering::SeqCst), 0);
}
