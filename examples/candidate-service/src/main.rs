//! `candidate-service` binary: the Lambda entry point for all three
//! functions of the example service.
//!
//! Init (cold start): pick the handler from `_HANDLER`, read `CANDIDATE_DB`
//! and `CANDIDATE_TABLE`, open the SQLite database. If any of that fails the
//! error is reported to the Runtime API's `/runtime/init/error` (when
//! `AWS_LAMBDA_RUNTIME_API` is set), printed to stderr, and the process exits
//! with status 1. Otherwise the official `lambda_http` runtime polls
//! `/runtime/invocation/next` and answers every event with the chosen handler.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use candidate_service::{App, Config, Handler, handle};
use lambda_http::lambda_runtime::Diagnostic;
use lambda_http::{Error, service_fn, tracing};
use lambda_runtime_api_client::{PooledClient, build_request};

/// Why init failed; `error_type` becomes the Runtime API `errorType`.
struct InitFailure {
    error_type: &'static str,
    message: String,
}

impl InitFailure {
    fn new(error_type: &'static str, err: impl std::fmt::Display) -> Self {
        Self { error_type, message: err.to_string() }
    }
}

// One thread is enough: a classic Lambda process handles one event at a time (the Runtime API
// hands out the next only after the previous response), and a Lambda Managed Instances one
// (`AWS_LAMBDA_MAX_CONCURRENCY`) interleaves its events on this thread, the handlers being short
// and their SQLite calls quick. A current-thread runtime saves the cross-thread wakeups of a worker
// pool on every invocation (docs/benchmarks.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing::init_default_subscriber();

    let (handler, app) = match init() {
        Ok(ready) => ready,
        Err(failure) => {
            eprintln!("candidate-service: init failed: {}", failure.message);
            report_init_error(&failure).await;
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(handler = handler.name(), table = %app.table(), "candidate-service ready");

    // `run_concurrent` polls for `AWS_LAMBDA_MAX_CONCURRENCY` events at once when that is set
    // (`capacityProvider.maxConcurrency` in serverless.yml), one at a time otherwise.
    let app = Arc::new(app);
    let service = service_fn(move |req| {
        let app = Arc::clone(&app);
        async move { handle(&app, handler, req).await }
    });
    match lambda_http::run_concurrent(service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "runtime loop failed");
            ExitCode::FAILURE
        }
    }
}

fn init() -> Result<(Handler, App), InitFailure> {
    let name = std::env::var("_HANDLER").map_err(|_| {
        InitFailure::new("Runtime.HandlerNotFound", "environment variable _HANDLER is not set")
    })?;
    let handler: Handler =
        name.parse().map_err(|e| InitFailure::new("Runtime.HandlerNotFound", e))?;
    let config = Config::from_env().map_err(|e| InitFailure::new("Runtime.InitError", e))?;
    let app = App::connect(&config).map_err(|e| {
        InitFailure::new(
            "Runtime.InitError",
            format!("cannot open database {}: {e}", config.db_path.display()),
        )
    })?;
    Ok((handler, app))
}

/// Posts the failure to `/2018-06-01/runtime/init/error` with the official
/// Runtime API client. Best effort: errors and a 2 s timeout are only logged.
async fn report_init_error(failure: &InitFailure) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else { return };
    if let Err(err) = try_report_init_error(&api, failure).await {
        eprintln!("candidate-service: could not report init error to the Runtime API: {err}");
    }
}

async fn try_report_init_error(api: &str, failure: &InitFailure) -> Result<(), Error> {
    let endpoint = format!("http://{api}").parse()?;
    let client = PooledClient::builder().with_endpoint(endpoint).build();
    let diagnostic = Diagnostic {
        error_type: failure.error_type.to_owned(),
        error_message: failure.message.clone(),
    };
    let request = build_request()
        .method("POST")
        .uri("/2018-06-01/runtime/init/error")
        .header("lambda-runtime-function-error-type", failure.error_type)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&diagnostic)?.into())?;
    let response = tokio::time::timeout(Duration::from_secs(2), client.call(request)).await??;
    if !response.status().is_success() {
        return Err(format!("runtime API answered {}", response.status()).into());
    }
    Ok(())
}
