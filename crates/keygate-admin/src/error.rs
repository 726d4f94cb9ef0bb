//! Control-plane errors in AWS's shape: status, `x-amzn-ErrorType`, and `{"message": ...}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered the way Amazon API Gateway's control plane answers it.
#[derive(Debug)]
pub struct AwsError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
}

impl AwsError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error_type: "BadRequestException",
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            error_type: "NotFoundException",
            message: message.into(),
        }
    }

    pub fn forbidden(error_type: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, error_type, message: message.into() }
    }
}

impl From<keygate_control::Error> for AwsError {
    fn from(e: keygate_control::Error) -> Self {
        use keygate_control::Error as E;
        match e {
            E::Invalid(m) => Self::bad_request(m),
            E::NotFound(m) => Self::not_found(m),
            E::Conflict(m) => {
                Self { status: StatusCode::CONFLICT, error_type: "ConflictException", message: m }
            }
            // The database is down or unreachable (several nodes on PostgreSQL): nothing was
            // changed, gateways keep serving what they have; the client may retry (AWS's 503).
            E::Store(e @ keygate_control::StoreError::Unavailable { .. }) => {
                tracing::warn!(error = %e, "admin request refused: the store is unavailable");
                Self {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    error_type: "ServiceUnavailableException",
                    message: "keygate's store is unavailable: nothing was changed; gateways keep \
                              serving the keys and plans they have. Retry when the database is back"
                        .to_owned(),
                }
            }
            other => {
                tracing::error!(error = %other, "admin request failed");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    error_type: "InternalFailure",
                    message: "internal error; see the keygate log".to_owned(),
                }
            }
        }
    }
}

impl From<keygate_control::StoreError> for AwsError {
    fn from(e: keygate_control::StoreError) -> Self {
        keygate_control::Error::from(e).into()
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(json!({ "message": self.message }))).into_response();
        res.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static(self.error_type));
        res
    }
}

/// Unknown admin path.
pub(crate) async fn not_found() -> AwsError {
    AwsError::not_found("Invalid URI or method: this path is not part of keygate's admin API")
}

pub(crate) type ApiResult<T> = Result<T, AwsError>;
