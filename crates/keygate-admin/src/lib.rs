//! keygate admin API: Amazon API Gateway's control-plane paths and JSON on a listener of its own,
//! so `aws apigateway ... --endpoint-url` and boto3 work against keygate.
//!
//! Layout:
//! - [`sigv4`]: AWS Signature Version 4 verification (pure).
//! - `auth`: the middleware that authenticates every request (SigV4 or `Bearer` token) and names
//!   the actor for the audit log.
//! - `error`: control-plane errors in AWS's shape (`{"message"}` + `x-amzn-ErrorType`).
//! - `apikeys`, `plans`, `restapis`: one module per resource family, mirroring the URL paths.
//!
//! Architecture invariant: handlers only translate between AWS's JSON and `keygate-control`
//! operations, called with an audited store; no rule about keys or plans lives here.

pub mod sigv4;

mod apikeys;
mod auth;
mod error;
mod plans;
mod restapis;

use std::future::Future;
use std::sync::Arc;

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
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

/// The admin router (every route behind authentication).
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
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
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

/// Serves the admin API on `listener` until `shutdown` completes.
///
/// # Errors
/// An IO error of the listener.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
