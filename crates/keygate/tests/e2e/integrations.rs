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

    let r = get(&srv.url("/dev/down"), None).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.body, r#"{"message": "Internal server error"}"#);

    let r = get(&srv.url("/dev/mock"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    srv.stop();
}
