//! The admin listener against hostile clients: silent, idle and trickling connections are
//! closed, and a SigV4 signature made for another service or region is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate_admin::{ServeLimits, sigv4};
use keygate_control::admin::{create_credential, create_token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

use support::Running as Admin;

/// Short limits, so the tests wait a second or two instead of the defaults' tens.
fn limits() -> ServeLimits {
    ServeLimits {
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        max_connection_age: Duration::from_secs(60),
        max_connections: 16,
    }
}

async fn start() -> Admin {
    start_with(limits()).await
}

async fn start_with(limits: ServeLimits) -> Admin {
    support::start(keygate_admin::console::Console::default(), limits, "test:listener").await
}

/// Reads until the server closes the connection (bounded: a server that never closes fails the
/// test instead of hanging it). Returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open; read so far: {out:?}");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_silent_connection_is_closed() {
    let admin = start().await;
    let mut stream = TcpStream::connect(admin.addr).await.unwrap();
    read_until_closed(&mut stream).await;
}

#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed() {
    let admin = start().await;
    let token = create_token(&admin.state.store, None).await.unwrap().token;
    let mut stream = TcpStream::connect(admin.addr).await.unwrap();
    let req = format!("GET /apikeys HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {token}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_the_connection_ends() {
    let admin = start().await;
    let token = create_token(&admin.state.store, None).await.unwrap().token;
    let mut stream = TcpStream::connect(admin.addr).await.unwrap();
    let head = format!(
        "POST /usageplans HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {token}\r\n\
         content-length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn past_the_connection_cap_a_client_waits_until_a_slot_is_free() {
    let limits =
        ServeLimits { max_connections: 1, header_read_timeout: Duration::from_secs(3), ..limits() };
    let admin = start_with(limits).await;
    let token = create_token(&admin.state.store, None).await.unwrap().token;
    // The one slot, held by a silent client until the header timeout closes it.
    let mut holder = TcpStream::connect(admin.addr).await.unwrap();
    let mut waiter = TcpStream::connect(admin.addr).await.unwrap();
    let req = format!(
        "GET /apikeys HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {token}\r\n\
         connection: close\r\n\r\n"
    );
    waiter.write_all(req.as_bytes()).await.unwrap();
    // Without the cap the answer would come at once; with it, not while the holder is open.
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), waiter.read(&mut byte)).await;
    assert!(early.is_err(), "answered past the cap: {early:?}");
    read_until_closed(&mut holder).await;
    let answer = read_until_closed(&mut waiter).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_unauthenticated_body_is_refused_before_it_is_read() {
    let admin =
        start_with(ServeLimits { body_read_timeout: Duration::from_secs(30), ..limits() }).await;
    let mut stream = TcpStream::connect(admin.addr).await.unwrap();
    let head = "POST /apikeys HTTP/1.1\r\nhost: a\r\ncontent-length: 10000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // No body byte is sent: the refusal cannot have waited for it (nor for the body deadline).
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

fn amz_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    sigv4::format_amz_date(i64::try_from(now).unwrap())
}

/// A `GET /apikeys` signed for `region` and `service`; returns the status line and body.
async fn signed_get(admin: &Admin, region: &str, service: &str) -> String {
    let cred = create_credential(&admin.state.store, &admin.state.master, None).await.unwrap();
    let date = amz_now();
    let host = admin.addr.to_string();
    let headers = [("host", host.as_str()), ("x-amz-date", date.as_str())];
    let req = sigv4::SignedRequest {
        method: "GET",
        path: "/apikeys",
        query: None,
        headers: &headers,
        body: b"",
    };
    let auth =
        sigv4::sign(&req, &cred.access_key_id, &cred.secret_access_key, region, service, &date);
    let mut stream = TcpStream::connect(admin.addr).await.unwrap();
    let raw = format!(
        "GET /apikeys HTTP/1.1\r\nhost: {host}\r\nx-amz-date: {date}\r\nauthorization: {auth}\r\n\
         connection: close\r\n\r\n"
    );
    stream.write_all(raw.as_bytes()).await.unwrap();
    read_until_closed(&mut stream).await
}

#[tokio::test]
async fn sigv4_must_be_scoped_to_apigateway_in_the_configured_region() {
    let admin = start().await;
    let ok = signed_get(&admin, "us-east-1", "apigateway").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let region = signed_get(&admin, "eu-west-1", "apigateway").await;
    assert!(region.starts_with("HTTP/1.1 403"), "{region}");
    assert!(region.contains("region"), "{region}");
    let service = signed_get(&admin, "us-east-1", "s3").await;
    assert!(service.starts_with("HTTP/1.1 403"), "{service}");
    assert!(service.contains("service"), "{service}");
}

#[tokio::test]
async fn health_and_readiness_need_no_credentials_and_readiness_follows_the_gateway() {
    let admin = start().await;
    let get = |path: &'static str| {
        let addr = admin.addr;
        async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
            stream.write_all(req.as_bytes()).await.unwrap();
            read_until_closed(&mut stream).await
        }
    };
    let alive = get("/healthz").await;
    assert!(alive.starts_with("HTTP/1.1 200") && alive.ends_with(r#"{"status":"ok"}"#), "{alive}");
    // Nothing loaded yet: 503, saying why.
    let ready = get("/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("the routing table is not loaded yet"), "{ready}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    admin.state.health.table_loaded(3);
    admin.state.health.store_answered(now);
    let ready = get("/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains(r#""status":"ready","tableVersion":3"#), "{ready}");
    admin.state.health.store_failed();
    let ready = get("/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("cannot be reached"), "{ready}");
}
