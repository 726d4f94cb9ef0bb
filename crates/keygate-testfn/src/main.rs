//! keygate-testfn: a real Lambda function, built on the official `lambda_runtime` crate, that
//! keygate's tests deploy and invoke through the function host exactly as AWS Lambda would run it.
//!
//! The behaviour is chosen by `_HANDLER` (the function's `handler:` in `serverless.yml`), or per
//! invocation by a top-level `"testfn"` string in the event (a REST proxy event never has one), so
//! one warm process can play several parts in a test:
//!
//! | handler     | does |
//! |-------------|------|
//! | `echo`      | 200 proxy response whose `body` is the whole event JSON as a string |
//! | `crash`     | `process::exit(3)` while handling the invocation |
//! | `garbage`   | prints junk bytes to stdout and returns the JSON string `"this is not a proxy response"` |
//! | `nonstring` | `{"statusCode":200,"body":{"a":1}}` (a malformed proxy response) |
//! | `error`     | the handler returns `Err`, so `lambda_runtime` posts `/error` |
//! | `sleep`     | sleeps the event's `sleep_ms`, else `SLEEP_MS`, else 10 s, then returns 200 |
//! | `status`    | status from `queryStringParameters.code`, `headers` (with framing and a request id of its own, which the gateway must drop), two `set-cookie` multi-value headers, text body |
//! | `base64`    | `isBase64Encoded: true`, body = base64 of the bytes 0..16 |
//! | `env`       | 200 with the process environment as a JSON object body |
//!
//! `env` and `sleep` responses carry `x-pid` (and `env` also `x-cwd`) headers so tests can tell
//! warm reuse from cold starts; `sleep` also `x-started-ms` and `x-ended-ms`. The runtime loop is
//! `run_concurrent`, so a Lambda Managed Instances function (`AWS_LAMBDA_MAX_CONCURRENCY`) takes
//! several events at once, unless `TESTFN_SEQUENTIAL` is set (then it is `run`, one at a time). An unknown `_HANDLER` is reported to `/runtime/init/error` with
//! `Runtime.NoSuchHandler`, as a real runtime does, and the process exits.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

const HANDLERS: &[&str] =
    &["echo", "crash", "garbage", "nonstring", "error", "sleep", "status", "base64", "env"];

/// Base64 of the bytes `0..16`, spelled out so the test function needs no base64 crate.
const BYTES_0_TO_16_BASE64: &str = "AAECAwQFBgcICQoLDA0ODw==";

// `run_concurrent`: with `AWS_LAMBDA_MAX_CONCURRENCY` > 1 (a Lambda Managed Instances function)
// it polls for that many events at once; without it, one at a time as `run` does.
#[tokio::main]
async fn main() -> Result<(), Error> {
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    if !HANDLERS.contains(&handler.as_str()) {
        report_init_error(&format!("keygate-testfn has no handler {handler:?}"));
        std::process::exit(1);
    }
    let service = service_fn(move |event| {
        let handler = handler.clone();
        async move { handle(&handler, event).await }
    });
    // `TESTFN_SEQUENTIAL`: a runtime that ignores AWS_LAMBDA_MAX_CONCURRENCY (polls one at a time).
    if std::env::var_os("TESTFN_SEQUENTIAL").is_some() {
        lambda_runtime::run(service).await
    } else {
        lambda_runtime::run_concurrent(service).await
    }
}

/// Now as Unix epoch milliseconds (`sleep`'s `x-started-ms` / `x-ended-ms`: tests check that
/// invocations overlapped).
fn epoch_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

async fn handle(default: &str, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let payload = event.payload;
    let name = payload.get("testfn").and_then(Value::as_str).unwrap_or(default).to_owned();
    let pid = std::process::id().to_string();
    match name.as_str() {
        "echo" => Ok(json!({
            "statusCode": 200,
            "headers": {"content-type": "application/json"},
            "body": payload.to_string(),
        })),
        "crash" => {
            eprintln!("keygate-testfn: crashing on purpose");
            std::process::exit(3)
        }
        "garbage" => {
            let mut out = std::io::stdout().lock();
            out.write_all(b"\xff\xfe\x00garbage \x1b[31m not utf-8 \xc3\x28\n")?;
            out.write_all(&[b'x'; 20_000])?; // a very long line without a newline
            out.write_all(b"\n\r\n\n")?;
            out.flush()?;
            Ok(Value::String("this is not a proxy response".to_owned()))
        }
        "nonstring" => Ok(json!({"statusCode": 200, "body": {"a": 1}})),
        "error" => Err("keygate-testfn was asked to fail".into()),
        "sleep" => {
            let ms = payload
                .get("sleep_ms")
                .and_then(Value::as_u64)
                .or_else(|| std::env::var("SLEEP_MS").ok()?.parse().ok())
                .unwrap_or(10_000);
            let started = epoch_ms();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let ended = epoch_ms();
            Ok(json!({
                "statusCode": 200,
                "headers": {
                    "content-type": "text/plain",
                    "x-pid": pid,
                    "x-started-ms": started.to_string(),
                    "x-ended-ms": ended.to_string(),
                },
                "body": format!("slept {ms} ms"),
            }))
        }
        "status" => {
            let code = payload
                .pointer("/queryStringParameters/code")
                .and_then(Value::as_str)
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(200);
            Ok(json!({
                "statusCode": code,
                "headers": {
                    "content-type": "text/plain",
                    "x-testfn": "status",
                    "content-length": "99999",
                    "transfer-encoding": "chunked",
                    "x-amzn-RequestId": "chosen-by-the-function",
                },
                "multiValueHeaders": {"set-cookie": ["a=1; Path=/", "b=2; Path=/"]},
                "body": format!("status {code}"),
            }))
        }
        "base64" => Ok(json!({
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "isBase64Encoded": true,
            "body": BYTES_0_TO_16_BASE64,
        })),
        "env" => {
            let env: BTreeMap<String, String> = std::env::vars_os()
                .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
                .collect();
            let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
            Ok(json!({
                "statusCode": 200,
                "headers": {"content-type": "application/json", "x-pid": pid, "x-cwd": cwd},
                "body": serde_json::to_string(&env)?,
            }))
        }
        other => Err(format!("keygate-testfn has no handler {other:?}").into()),
    }
}

/// Posts `/runtime/init/error` by hand (lambda_runtime has no public call for it) over a plain
/// HTTP/1.1 connection, as a runtime that cannot find its handler does.
fn report_init_error(message: &str) {
    eprintln!("keygate-testfn: {message}");
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else { return };
    let body = json!({
        "errorMessage": message,
        "errorType": "Runtime.NoSuchHandler",
        "stackTrace": [],
    })
    .to_string();
    let Ok(mut stream) = std::net::TcpStream::connect(&api) else { return };
    let request = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Runtime-Function-Error-Type: Runtime.NoSuchHandler\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
    }
}
