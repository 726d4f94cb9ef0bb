//! Python functions through keygate's bootstrap (`src/launcher/bootstrap.py`), pinned to what
//! Lambda's Python runtime (awslambdaric) does: handler resolution, `context`, results as JSON
//! (Decimal as a number), errors with Lambda's shape, init errors with Lambda's error types, init
//! once per process, timeouts and exits. Needs `python3` on PATH.

use keygate_functions::{FunctionHost, InvokeError};
use serde_json::json;

use crate::common::{Service, body, code_function, invoke, json};

const HANDLER_PY: &str = r#"
import decimal
import json
import logging
import os
import sys
import time

INITS = 0
INITS += 1
logger = logging.getLogger()


def respond(value):
    return {"statusCode": 200, "body": json.dumps(value)}


def info(event, context):
    return respond({
        "event": event,
        "inits": INITS,
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "requestId": context.aws_request_id,
        "functionName": context.function_name,
        "memoryLimitInMB": context.memory_limit_in_mb,
        "arn": context.invoked_function_arn,
        "remaining": context.get_remaining_time_in_millis(),
        "env": dict(os.environ),
    })


def decimals(event, context):
    return {"int": decimal.Decimal("3"), "float": decimal.Decimal("1.5"), "none": None}


def nothing(event, context):
    return None


def fails(event, context):
    raise ValueError("Invalid candidate")


def record(event, context):
    with open(event["file"], "a") as f:
        f.write(f"{event['n']}\n")
    if event.get("ms"):
        time.sleep(event["ms"] / 1000)
    if event.get("exit"):
        os._exit(1)
    if event.get("big"):
        return "x" * (7 * 1024 * 1024)
    return respond({"pid": os.getpid(), "n": event["n"]})


def maybe_fail(event, context):
    if event.get("fail"):
        raise KeyError("fail")
    return respond({"pid": os.getpid()})


def sleep(event, context):
    time.sleep(event["s"])
    return respond({})


def exits(event, context):
    os._exit(3)


def log(event, context):
    print("printed line")
    logger.info("logged line")
    return respond({"requestId": context.aws_request_id})
"#;

fn python(handler: &str) -> (tempfile::TempDir, keygate_types::FunctionSpec) {
    code_function(
        "python3.12",
        handler,
        &[
            ("handler.py", HANDLER_PY),
            ("src/pkg/__init__.py", ""),
            ("src/pkg/api.py", "def main(event, context):\n    return 'nested'\n"),
            ("broken.py", "def handler(event, context)\n    return 1\n"),
            ("initfails.py", "raise RuntimeError('cannot connect at init')\n"),
        ],
    )
}

async fn once(handler: &str, event: serde_json::Value) -> Result<bytes::Bytes, InvokeError> {
    let host = FunctionHost::default();
    let svc = Service::new();
    let (_code, spec) = python(handler);
    let result = invoke(&host, &svc.f(&spec), event).await;
    host.shutdown().await;
    result
}

#[tokio::test]
async fn a_handler_gets_the_event_the_context_and_lambda_environment_and_inits_once() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let (_code, mut spec) = python("handler.info");
    spec.environment.insert("CANDIDATE_TABLE".to_owned(), "candidate-dev".to_owned());
    let event = json!({"httpMethod": "POST", "body": "{\"a\": 1}"});
    let info = body(&invoke(&host, &svc.f(&spec), event.clone()).await.unwrap());
    assert_eq!(info["event"], event);
    assert_eq!(info["functionName"], "svc-dev-fn");
    assert_eq!(info["memoryLimitInMB"], "128");
    assert_eq!(info["arn"], "arn:aws:lambda:eu-west-1:000000000000:function:svc-dev-fn");
    assert_eq!(info["requestId"].as_str().unwrap().len(), 36);
    let remaining = info["remaining"].as_i64().unwrap();
    assert!(remaining > 0 && remaining <= 30_000, "{remaining}");
    let env = &info["env"];
    assert_eq!(env["CANDIDATE_TABLE"], "candidate-dev");
    assert_eq!(env["AWS_EXECUTION_ENV"], "AWS_Lambda_python3.12");
    assert_eq!(env["_HANDLER"], "handler.info");
    let task_root = spec.artifact.as_ref().unwrap().to_str().unwrap();
    assert_eq!(env["LAMBDA_TASK_ROOT"], task_root);
    assert_eq!(info["cwd"], task_root);
    for _ in 0..10 {
        let again = body(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
        assert_eq!((&again["inits"], &again["pid"]), (&json!(1), &info["pid"]));
    }
    host.shutdown().await;
}

#[tokio::test]
async fn results_are_json_and_packages_resolve() {
    let decimals = json(&once("handler.decimals", json!({})).await.unwrap());
    assert_eq!(decimals, json!({"int": 3, "float": 1.5, "none": null}));
    assert_eq!(&once("handler.nothing", json!({})).await.unwrap()[..], b"null");
    assert_eq!(&once("src/pkg/api.main", json!({})).await.unwrap()[..], br#""nested""#);
    assert_eq!(&once("src.pkg.api.main", json!({})).await.unwrap()[..], br#""nested""#);
}

#[tokio::test]
async fn an_exception_is_a_function_error_and_the_process_serves_on() {
    match once("handler.fails", json!({})).await {
        Err(InvokeError::FunctionError { error_type, message }) => {
            assert_eq!(
                (error_type.as_str(), message.as_str()),
                ("ValueError", "Invalid candidate")
            );
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    let host = FunctionHost::default();
    let svc = Service::new();
    let (_code, spec) = python("handler.maybe_fail");
    let pid = |raw: bytes::Bytes| body(&raw)["pid"].as_u64().unwrap();
    let before = pid(invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    assert!(invoke(&host, &svc.f(&spec), json!({"fail": true})).await.is_err());
    let after = pid(invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    assert_eq!(before, after);
    host.shutdown().await;
}

#[tokio::test]
async fn a_timeout_and_an_exit_leave_the_function_serving_on_a_fresh_process() {
    let host = FunctionHost::default();
    let svc = Service::new();
    let (_code, mut spec) = python("handler.sleep");
    spec.timeout_secs = 1;
    assert_eq!(invoke(&host, &svc.f(&spec), json!({"s": 10})).await, Err(InvokeError::Timeout));
    let answer = invoke(&host, &svc.f(&spec), json!({"s": 0})).await.unwrap();
    assert_eq!(json(&answer)["statusCode"], 200);
    let (_code2, exits) = python("handler.exits");
    assert!(matches!(invoke(&host, &svc.f(&exits), json!({})).await, Err(InvokeError::Crashed(_))));
    assert!(matches!(invoke(&host, &svc.f(&exits), json!({})).await, Err(InvokeError::Crashed(_))));
    host.shutdown().await;
}

#[tokio::test]
async fn init_errors_are_reported_with_lambdas_error_types() {
    for (handler, expected) in [
        ("missing.handler", "Runtime.ImportModuleError"),
        ("handler.nope", "Runtime.HandlerNotFound"),
        ("broken.handler", "Runtime.UserCodeSyntaxError"),
        ("nodot", "Runtime.MalformedHandlerName"),
        ("sys.handler", "Runtime.BuiltInModuleConflict"),
        ("initfails.handler", "cannot connect at init"),
    ] {
        match once(handler, json!({})).await {
            Err(InvokeError::InitFailed(why)) => {
                assert!(why.contains(expected), "{handler}: {why}")
            }
            other => panic!("{handler}: expected an init failure, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn print_and_logging_reach_the_log_with_the_request_id() {
    let (captured, _guard) = crate::logs::capture();
    let host = FunctionHost::default();
    let svc = Service::new();
    let (_code, spec) = python("handler.log");
    let answer = body(&invoke(&host, &svc.f(&spec), json!({})).await.unwrap());
    let id = answer["requestId"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let lines: Vec<String> = captured
            .events()
            .into_iter()
            .filter(|(target, _)| target == "keygate::function")
            .map(|(_, fields)| fields)
            .collect();
        let printed = lines.iter().any(|l| l.contains("message=printed line"));
        let logged = lines
            .iter()
            .any(|l| l.contains("[INFO]") && l.contains(&format!("\t{id}\tlogged line")));
        if printed && logged {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lines not seen: {lines:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    host.shutdown().await;
}

#[tokio::test]
async fn many_invocations_at_once_queue_on_one_process_and_each_runs_once() {
    let (_code, spec) = python("handler.record");
    crate::node::many_at_once_run_once_each(&spec).await;
}

#[tokio::test(flavor = "current_thread")]
async fn events_queued_behind_a_process_that_dies_run_once_on_a_fresh_one() {
    let (_code, spec) = python("handler.record");
    crate::node::queued_behind_a_death_run_once_elsewhere(&spec).await;
}

#[tokio::test]
async fn an_answer_over_the_limit_fails_only_its_invocation_with_events_queued_behind_it() {
    let (_code, spec) = python("handler.record");
    crate::node::too_large_fails_only_its_invocation(&spec).await;
}

#[tokio::test]
async fn an_answer_over_the_limit_fails_only_its_invocation_without_queued_delivery() {
    // With maxConcurrency the Python bootstrap (one event at a time, as the process is) sends
    // each answer and the next poll in one write, the exchange path.
    let (_code, spec) = python("handler.record");
    let spec = keygate_types::FunctionSpec { max_concurrency: Some(4), ..spec };
    crate::node::too_large_fails_only_its_invocation(&spec).await;
}
