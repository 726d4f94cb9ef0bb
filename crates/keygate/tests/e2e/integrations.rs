//! http-proxy and mock integrations.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::support::*;

/// An upstream that answers with what it received, as JSON.
async fn echo_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let method = req.method().to_string();
                    let uri = req.uri().to_string();
                    let headers: serde_json::Map<String, serde_json::Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
                        .collect();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let out = json!({
                        "method": method, "uri": uri, "headers": headers,
                        "body": String::from_utf8_lossy(&body),
                    });
                    let mut res = hyper::Response::new(Full::new(Bytes::from(out.to_string())));
                    *res.status_mut() = hyper::StatusCode::ACCEPTED;
                    res.headers_mut().insert("x-upstream", "yes".parse().unwrap());
                    res.headers_mut().insert("connection", "keep-alive".parse().unwrap());
                    Ok::<_, Infallible>(res)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn http_proxy_and_mock() {
    let upstream = echo_upstream().await;
    let env = Env::new();
    let extra = format!(
        r#"  proxied:
    handler: unused
    events:
      - http:
          path: api/{{proxy+}}
          method: any
          private: true
          integration: http-proxy
          request:
            uri: {upstream}/v1/{{proxy}}
      - http:
          path: users/{{id}}/profile
          method: get
          integration: http-proxy
          request:
            uri: {upstream}/users/{{id}}
      - http:
          path: down
          method: get
          integration: http-proxy
          request:
            uri: http://127.0.0.1:9/nothing-listens-here
      - http:
          path: fixed
          method: any
          integration: http-proxy
          request:
            uri: {upstream}/static/path?a=1
  mocked:
    handler: unused
    events:
      - http:
          path: mock
          method: get
          integration: mock
"#
    );
    let yml = env.write("serverless.yml", &testfn_yml("px", &extra));
    let report = env.deploy(&yml, &[]);
    let key = Env::key_value(&report);
    let srv = env.serve();

    get(&srv.url("/dev/api/a/b"), None).await.assert_forbidden();
    let r = send(
        client()
            .put(srv.url("/dev/api/a/b%20c?x=1"))
            .header("x-api-key", &key)
            .header("x-custom", "kept")
            .header("connection", "keep-alive, x-drop")
            .header("x-drop", "dropped")
            .body("payload"),
    )
    .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert!(r.header("x-amzn-requestid").is_some());
    let seen = r.json();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["uri"], "/v1/a/b%20c?x=1");
    assert_eq!(seen["body"], "payload");
    assert_eq!(seen["headers"]["x-custom"], "kept");
    assert!(seen["headers"].get("x-drop").is_none(), "hop-by-hop header named in Connection");

    let r = get(&srv.url("/dev/users/42/profile"), None).await;
    assert_eq!(r.json()["uri"], "/users/42");

    // Path traversal through a path parameter (security finding 1): encoded or raw dot
    // segments never reach the upstream, whose answer would echo the path it was sent.
    let host = srv.base.trim_start_matches("http://").to_owned();
    for path in [
        "/dev/api/%2e%2e/%2e%2e/admin/x",
        "/dev/api/..%2F..%2Fadmin/x",
        "/dev/api/../../admin/x",
        "/dev/api/a/%2E/b",
        "/dev/api/a%5C..%5Cadmin",
        "/dev/users/%2e%2e/profile",
    ] {
        let raw = raw_exchange(
            &host,
            &format!(
                "GET {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(raw.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{path}: {raw}");
        assert!(raw.contains("\r\nx-amzn-errortype: BadRequestException\r\n"), "{raw}");
        assert!(raw.ends_with(r#"{"message":"Invalid request path"}"#), "{raw}");
    }
    // Dots inside names still pass.
    let r = get(&srv.url("/dev/users/v1.2/profile"), None).await;
    assert_eq!(r.json()["uri"], "/users/v1.2");
    // An encoded slash in a plain `{id}` stays inside that one segment upstream (issue 25,
    // finding 8): it used to be sent on as `/`, reaching another upstream path.
    let r = get(&srv.url("/dev/users/42%2Fdelete/profile"), None).await;
    assert_eq!(r.json()["uri"], "/users/42%2Fdelete");

    let r = get(&srv.url("/dev/down"), None).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.body, r#"{"message": "Internal server error"}"#);

    // A URI without parameters is parsed once; the request's query is still appended.
    assert_eq!(get(&srv.url("/dev/fixed"), None).await.json()["uri"], "/static/path?a=1");
    assert_eq!(get(&srv.url("/dev/fixed?b=2"), None).await.json()["uri"], "/static/path?a=1&b=2");

    // A chunked request body is decoded and forwarded with its length.
    let raw = raw_exchange(
        &host,
        "POST /dev/fixed HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 202 Accepted\r\n"), "{raw}");
    let body: serde_json::Value =
        serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["body"], "abcdefg");
    assert_eq!(body["headers"]["content-length"], "7");
    assert!(body["headers"].get("transfer-encoding").is_none());

    // A body over API Gateway's 10 MB limit: 413 before it is read, with a request id.
    let raw = raw_exchange(
        &host,
        "POST /dev/fixed HTTP/1.1\r\nhost: x\r\ncontent-length: 10485761\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 413 Payload Too Large\r\n"), "{raw}");
    assert!(raw.contains("\r\nx-amzn-requestid: "), "{raw}");
    assert!(raw.contains("\r\nx-amzn-errortype: RequestEntityTooLargeException\r\n"), "{raw}");
    assert!(raw.ends_with(r#"{"message":"Request Too Long"}"#), "{raw}");

    let r = get(&srv.url("/dev/mock"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    srv.stop();
}

/// Writes `request` on a new connection and reads until the server closes it.
async fn raw_exchange(host: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// A raw HTTP/1.1 upstream answering `ok` that counts its connections. With `close_each`, it
/// closes every connection after its first answer without saying so (no `Connection: close`):
/// a pooled connection is dead by the next request, as with an upstream whose keep-alive
/// timeout is shorter than the gateway's. Without, it keeps connections open.
async fn raw_upstream(
    close_each: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                loop {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    if close_each {
                        return; // closed without saying so beforehand
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn http_proxy_reuses_connections_and_survives_upstreams_closing_them() {
    let (closing, accepted) = raw_upstream(true).await;
    let (keeping, kept) = raw_upstream(false).await;
    let env = Env::new();
    let extra = format!(
        r#"  proxied:
    handler: unused
    events:
      - http:
          path: closing
          method: get
          integration: http-proxy
          request:
            uri: {closing}/x
      - http:
          path: keeping
          method: get
          integration: http-proxy
          request:
            uri: {keeping}/x
"#
    );
    let yml = env.write("serverless.yml", &testfn_yml("pxc", &extra));
    env.deploy(&yml, &[]);
    let srv = env.serve();
    for i in 0..5 {
        let r = get(&srv.url("/dev/closing"), None).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "request {i}: {r:?}");
        // Give the close time to arrive in some rounds and none in others.
        if i % 2 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5, "one connection per request");
    for i in 0..5 {
        let r = get(&srv.url("/dev/keeping"), None).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "request {i}: {r:?}");
    }
    assert_eq!(kept.load(std::sync::atomic::Ordering::SeqCst), 1, "one pooled connection");
    srv.stop();
}

/// Issue 27, item 4: a browser's preflight (OPTIONS, no key) to a private `method: any` route
/// with `cors: true` got 403. On AWS, Serverless gives every CORS resource an OPTIONS mock that
/// ANY does not take over and that needs no key; its allowed methods are real verbs, never
/// `ANY`. A declared `options` method stays the user's.
#[tokio::test(flavor = "multi_thread")]
async fn a_preflight_to_a_cors_any_route_needs_no_key() {
    let env = Env::new();
    let yml = env.write(
        "serverless.yml",
        "service: pre
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys: [pre-key]
functions:
  all:
    handler: unused
    events:
      - http: {path: things, method: any, private: true, cors: true, integration: mock}
      - http: {path: own, method: any, private: true, cors: true, integration: mock}
      - http: {path: own, method: options, private: true, integration: mock}
      - http: {path: plain, method: any, private: true, integration: mock}
",
    );
    let key = Env::key_value(&env.deploy(&yml, &[]));
    let srv = env.serve();
    let preflight = |path: &str| {
        client()
            .request(reqwest::Method::OPTIONS, srv.url(path))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "PUT")
    };
    let r = send(preflight("/dev/things")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let methods = r.header("access-control-allow-methods").unwrap().to_owned();
    assert!(!methods.contains("ANY") && methods.contains("PUT") && methods.contains("OPTIONS"));
    assert!(r.header("access-control-allow-headers").unwrap().contains("X-Api-Key"), "{r:?}");
    // The route itself still wants its key.
    get(&srv.url("/dev/things"), None).await.assert_forbidden();
    assert_eq!(get(&srv.url("/dev/things"), Some(&key)).await.status, 200);
    // A declared OPTIONS method is the user's (and private here); without CORS there is no
    // preflight to answer, so OPTIONS is ANY's, as on AWS.
    send(preflight("/dev/own")).await.assert_forbidden();
    assert_eq!(send(preflight("/dev/own").header("x-api-key", &key)).await.status, 200);
    send(preflight("/dev/plain")).await.assert_forbidden();
    srv.stop();
}
