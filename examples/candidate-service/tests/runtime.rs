//! End-to-end test of the real binary against a tiny fake Lambda Runtime API
//! (the 2018-06-01 endpoints the official client uses): each process gets
//! REST v1 proxy events from `/runtime/invocation/next` and its answers are
//! captured from `/response`; init failures must reach `/runtime/init/error`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// What the function posted back: the endpoint path, the error-type header
/// (if any) and the JSON body.
#[derive(Debug)]
struct Posted {
    path: String,
    error_type: Option<String>,
    body: Value,
}

struct FakeRuntimeApi {
    addr: String,
    events: Arc<Mutex<VecDeque<String>>>,
    posted: mpsc::UnboundedReceiver<Posted>,
}

impl FakeRuntimeApi {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let events: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (tx, posted) = mpsc::unbounded_channel();
        let queue = events.clone();
        tokio::spawn(async move {
            let mut next_id = 0_u64;
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (queue, tx) = (queue.clone(), tx.clone());
                next_id += 1000;
                let base = next_id;
                tokio::spawn(async move {
                    let counter = Arc::new(Mutex::new(base));
                    let service = hyper::service::service_fn(move |req| {
                        let (queue, tx, counter) = (queue.clone(), tx.clone(), counter.clone());
                        async move { Ok::<_, Infallible>(serve(req, &queue, &tx, &counter).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, events, posted }
    }

    fn push_event(&self, event: String) {
        self.events.lock().unwrap().push_back(event);
    }

    async fn next_posted(&mut self) -> Posted {
        tokio::time::timeout(Duration::from_secs(60), self.posted.recv())
            .await
            .expect("function did not answer within 60 s")
            .expect("fake runtime API stopped")
    }
}

async fn serve(
    req: Request<Incoming>,
    queue: &Mutex<VecDeque<String>>,
    tx: &mpsc::UnboundedSender<Posted>,
    counter: &Mutex<u64>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if req.method() == "GET" && path == "/2018-06-01/runtime/invocation/next" {
        let event = loop {
            let popped = queue.lock().unwrap().pop_front();
            match popped {
                Some(event) => break event,
                // Long poll, like the real API.
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let id = {
            let mut counter = counter.lock().unwrap();
            *counter += 1;
            format!("req-{counter}")
        };
        let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() + 60_000;
        return Response::builder()
            .header("lambda-runtime-aws-request-id", id)
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:candidate-service-dev-fn",
            )
            .header("lambda-runtime-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793")
            .body(Full::new(Bytes::from(event)))
            .unwrap();
    }
    let error_type = req
        .headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let _ = tx.send(Posted { path, error_type, body });
    Response::builder().status(202).body(Full::new(Bytes::from_static(b"{}"))).unwrap()
}

fn spawn_function(api: &FakeRuntimeApi, dir: &Path, handler: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_candidate-service"))
        .current_dir(dir)
        .env_clear()
        .env("_HANDLER", handler)
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", "candidate-service-dev-fn")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "us-east-1")
        .env("CANDIDATE_TABLE", "candidate-dev")
        // Relative: resolved against the working directory, as keygate does.
        .env("CANDIDATE_DB", ".keygate/candidates.db")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn event(method: &str, resource: &str, path: &str, id: Option<&str>, body: Option<&str>) -> String {
    json!({
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Host": "localhost:3000", "x-api-key": "not-a-real-key-0123456789"},
        "multiValueHeaders": {
            "Host": ["localhost:3000"],
            "x-api-key": ["not-a-real-key-0123456789"]
        },
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": id.map(|id| json!({ "id": id })),
        "stageVariables": null,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": format!("/dev{path}"),
            "stage": "dev",
            "requestId": "r-1",
            "identity": {"apiKey": "not-a-real-key-0123456789", "sourceIp": "127.0.0.1"}
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

/// Sends one event to a running function and returns its proxy response.
async fn invoke(api: &mut FakeRuntimeApi, event: String) -> Value {
    api.push_event(event);
    let posted = api.next_posted().await;
    assert!(posted.path.ends_with("/response"), "unexpected post {posted:?}");
    posted.body
}

/// A response header. lambda_http answers REST v1 events with every header in
/// `multiValueHeaders` and an empty `headers` map, so look in both.
fn header<'a>(response: &'a Value, name: &str) -> &'a str {
    let find = |field: &str| {
        let map = response[field].as_object()?;
        map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    };
    match (find("multiValueHeaders"), find("headers")) {
        (Some(Value::Array(values)), _) if values.len() == 1 => values[0].as_str().unwrap(),
        (None, Some(Value::String(value))) => value,
        _ => panic!("header {name} not found once in {response}"),
    }
}

fn body_json(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn functions_run_on_the_runtime_api() {
    let dir = tempfile::tempdir().unwrap();

    // candidates.submit
    let mut api = FakeRuntimeApi::start().await;
    let mut submit = spawn_function(&api, dir.path(), "candidates.submit");
    let body =
        json!({"fullname": "Runtime Person", "email": "rt@x.io", "experience": 5}).to_string();
    let response =
        invoke(&mut api, event("POST", "/candidates", "/candidates", None, Some(&body))).await;
    assert_eq!(response["statusCode"], 201, "{response}");
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(header(&response, "access-control-allow-origin"), "*");
    let id = body_json(&response)["candidateId"].as_str().unwrap().to_owned();
    // Warm: a second event in the same process.
    let response =
        invoke(&mut api, event("POST", "/candidates", "/candidates", None, Some("{"))).await;
    assert_eq!(response["statusCode"], 400);
    submit.kill().await.unwrap();
    assert!(dir.path().join(".keygate/candidates.db").is_file(), "relative CANDIDATE_DB");

    // candidates.list (a separate process sharing the file)
    let mut api = FakeRuntimeApi::start().await;
    let mut list = spawn_function(&api, dir.path(), "candidates.list");
    let response = invoke(&mut api, event("GET", "/candidates", "/candidates", None, None)).await;
    assert_eq!(response["statusCode"], 200);
    assert_eq!(body_json(&response)["candidates"][0]["id"], id.as_str());
    list.kill().await.unwrap();

    // candidates.get
    let mut api = FakeRuntimeApi::start().await;
    let mut get = spawn_function(&api, dir.path(), "candidates.get");
    let path = format!("/candidates/{id}");
    let response = invoke(&mut api, event("GET", "/candidates/{id}", &path, Some(&id), None)).await;
    assert_eq!(response["statusCode"], 200);
    assert_eq!(body_json(&response)["email"], "rt@x.io");
    let response =
        invoke(&mut api, event("GET", "/candidates/{id}", "/candidates/x", Some("x"), None)).await;
    assert_eq!(response["statusCode"], 404);
    assert_eq!(response["body"], r#"{"message":"candidate x not found"}"#);
    get.kill().await.unwrap();
}

#[tokio::test]
async fn unknown_handler_fails_init() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = FakeRuntimeApi::start().await;
    let child = spawn_function(&api, dir.path(), "candidates.delete");
    let posted = api.next_posted().await;
    assert_eq!(posted.path, "/2018-06-01/runtime/init/error");
    assert_eq!(posted.error_type.as_deref(), Some("Runtime.HandlerNotFound"));
    assert_eq!(posted.body["errorType"], "Runtime.HandlerNotFound");
    let message = posted.body["errorMessage"].as_str().unwrap();
    assert!(message.starts_with("unknown handler \"candidates.delete\""), "{message}");

    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("init failed: unknown handler"), "{stderr}");
    assert!(!dir.path().join(".keygate").exists(), "no database opened for a bad handler");
}
