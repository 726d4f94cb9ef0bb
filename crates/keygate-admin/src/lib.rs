//! keygate admin API: Amazon API Gateway's control-plane paths and JSON on a listener of its own,
//! so `aws apigateway ... --endpoint-url` and boto3 work against keygate.
//!
//! Layout:
//! - [`sigv4`]: AWS Signature Version 4 verification (pure).
//! - `auth`: the middleware that authenticates every request (SigV4 or `Bearer` token) and names
//!   the actor for the audit log.
//! - `error`: control-plane errors in AWS's shape (`{"message"}` + `x-amzn-ErrorType`).
//! - `apikeys`, `plans`, `restapis`: one module per resource family, mirroring the URL paths.
//! - [`console`]: the web console at `/` (server-rendered pages, its own session sign-in).
//!
//! Architecture invariant: handlers only translate between AWS's JSON and `keygate-control`
//! operations, called with an audited store; no rule about keys or plans lives here.

pub use keygate_sigv4 as sigv4;

mod apikeys;
mod auth;
pub mod console;
mod deadline;
mod error;
mod plans;
mod restapis;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use keygate_control::Store;
use keygate_control::admin::MasterKey;
use tokio::net::TcpListener;

pub use error::AwsError;

/// Shared state of the admin API.
pub struct AdminState {
    /// The store, unaudited; handlers wrap it with the request's actor.
    pub store: Store,
    pub master: MasterKey,
    /// The region SigV4 credential scopes must name (`--admin-region`, default `us-east-1`).
    pub region: String,
    /// The web console's settings and sessions.
    pub console: console::Console,
    /// The process's readiness (written by the gateway), for `/readyz`.
    pub health: Arc<keygate_types::health::Health>,
    /// The process's metrics (the gateway's are registered in it), for `/metrics`.
    pub metrics: Arc<prometheus_client::registry::Registry>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

/// The admin router: the API's routes (and unknown paths) behind authentication, the console's
/// pages beside them with their own session sign-in.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/apikeys", post(apikeys::create_or_import).get(apikeys::list))
        .route("/apikeys/{id}", get(apikeys::get).patch(apikeys::update).delete(apikeys::delete))
        .route("/apikeys/{id}/rotate", post(apikeys::rotate))
        .route("/usageplans", post(plans::create).get(plans::list))
        .route("/usageplans/{id}", get(plans::get).patch(plans::update).delete(plans::delete))
        .route("/usageplans/{id}/keys", post(plans::add_key).get(plans::list_keys))
        .route("/usageplans/{id}/keys/{key}", get(plans::get_key).delete(plans::remove_key))
        .route("/usageplans/{id}/keys/{key}/usage", axum::routing::patch(plans::update_usage))
        .route("/usageplans/{id}/usage", get(plans::usage))
        .route("/restapis", get(restapis::list))
        .route("/restapis/{id}", get(restapis::get))
        .route("/restapis/{id}/resources", get(restapis::resources))
        .route("/restapis/{id}/resources/{rid}", get(restapis::resource))
        .route(
            "/restapis/{id}/resources/{rid}/methods/{method}",
            get(restapis::method).patch(restapis::update_method),
        )
        .route(
            "/restapis/{id}/deployments",
            post(restapis::create_deployment).get(restapis::deployments),
        )
        .route("/restapis/{id}/deployments/{did}", get(restapis::deployment))
        .route("/restapis/{id}/stages", get(restapis::stages))
        .route("/restapis/{id}/stages/{stage}", get(restapis::stage))
        .route("/audit", get(restapis::audit))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), auth::authenticate))
        // Added after the authentication layer, so not behind it.
        .merge(console::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// `/healthz`: the process is alive and serving its admin listener (no authentication, for a
/// load balancer or an orchestrator's liveness probe).
async fn healthz() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        "{\"status\":\"ok\"}",
    )
        .into_response()
}

/// `/readyz`: 200 when the routing table is loaded and the store answered within the last five
/// seconds, else 503; the body says which (no authentication: nothing in it is secret).
async fn readyz(
    axum::extract::State(state): axum::extract::State<Arc<AdminState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use keygate_types::clock::Clock;
    let readiness = state.health.readiness(keygate_types::clock::SystemClock.now_unix_ms());
    let status = if readiness.is_ready() {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        readiness.to_json(),
    )
        .into_response()
}

/// `/metrics`: the process's metrics in the OpenMetrics text format Prometheus scrapes (no
/// authentication, like the health endpoints: no label holds a key or a secret; keep the admin
/// listener off public networks).
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<AdminState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &state.metrics) {
        tracing::error!(error = %e, "cannot encode the metrics");
        return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [
            (
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        out,
    )
        .into_response()
}

/// Every admin response carries `x-amzn-RequestId`, as AWS's do (outermost layer, so refusals
/// by the authentication layer carry it too).
async fn request_id(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut res = next.run(req).await;
    if let Ok(v) = http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        res.headers_mut().insert("x-amzn-requestid", v);
    }
    res
}

/// Bounds on the admin listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time a connection has to send a complete request head, counted from its start and, on a
    /// kept-alive connection, from the end of the previous response: it is also the idle timeout.
    pub header_read_timeout: Duration,
    /// Time a request has from its head to its last body byte.
    pub body_read_timeout: Duration,
    /// Longest life of one connection, however busy (then it is closed after its current
    /// request).
    pub max_connection_age: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(300),
            max_connections: 256,
        }
    }
}

/// Serves the admin API on `listener` until `shutdown` completes, with [`ServeLimits::default`].
///
/// # Errors
/// An IO error of the listener.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, ServeLimits::default(), None).await
}

/// Serves the admin API on `listener` until `shutdown` completes: HTTP/1.1 only (HTTPS with
/// `tls`, the handshake on the connection's own task), each connection bounded by `limits`. On shutdown it stops accepting, asks every connection to
/// close after its current request and waits up to five seconds for them.
///
/// # Errors
/// An IO error of the listener.
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
    tls: Option<keygate_http::Tls>,
) -> std::io::Result<()> {
    let service = hyper_util::service::TowerToHyperService::new(
        router(state).layer(axum::middleware::from_fn_with_state(limits, deadline::body_deadline)),
    );
    let max = limits.max_connections.clamp(1, 1 << 20);
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, connections wait in the backlog instead of being accepted.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: the listener itself is fine.
                    tracing::warn!(error = %e, "admin API cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let mut stopping = stopping.clone();
        let (http, service, tls) = (http.clone(), service.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match keygate_http::Stream::accept(stream, tls.as_ref()).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "admin API: TLS handshake failed");
                    return;
                }
            };
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                () = tokio::time::sleep(limits.max_connection_age) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
            // Ends the connection after the request under way, if any.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.body_read_timeout, conn).await;
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    // Every connection gives its slot back when it ends.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(all)).await;
    Ok(())
}
