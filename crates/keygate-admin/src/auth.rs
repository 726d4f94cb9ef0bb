//! Authentication of every admin request: AWS Signature Version 4 against credentials issued by
//! `keygate admin credentials create`, or `Authorization: Bearer <token>`. The actor it names
//! (`sigv4:<access key id>`, `token:<token id>`) goes into the audit log.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keygate_control::admin;
use keygate_types::clock::Clock;

use crate::error::AwsError;
use crate::{AdminState, sigv4};

/// Largest admin request body (an import of many keys).
const MAX_BODY: usize = 10 * 1024 * 1024;

/// The service every SigV4 credential scope must name, as AWS's API Gateway control plane does.
pub(crate) const SERVICE: &str = "apigateway";

/// Who made the request, for the audit log.
#[derive(Debug, Clone)]
pub(crate) struct Actor(pub(crate) String);

fn missing() -> AwsError {
    AwsError::forbidden("MissingAuthenticationTokenException", "Missing Authentication Token")
}

pub(crate) async fn authenticate(
    State(state): State<Arc<AdminState>>,
    req: Request,
    next: Next,
) -> Response {
    match check(&state, req).await {
        Ok((actor, mut req)) => {
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn check(state: &AdminState, req: Request) -> Result<(Actor, Request), AwsError> {
    let Some(auth) = req.headers().get(http::header::AUTHORIZATION) else { return Err(missing()) };
    let auth = auth.to_str().map_err(|_| missing())?.to_owned();
    if let Some(token) = auth.strip_prefix("Bearer ") {
        let found = admin::check_token(&state.store, token.trim()).await?;
        return match found {
            Some(t) => Ok((Actor(format!("token:{}", t.id)), req)),
            None => Err(AwsError::forbidden(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )),
        };
    }
    let parsed = sigv4::parse_authorization(&auth).map_err(sig_error)?;
    sigv4::check_scope(&parsed, &state.region, SERVICE).map_err(sig_error)?;
    let Some(secret) =
        admin::credential_secret(&state.store, &state.master, &parsed.access_key_id).await?
    else {
        return Err(AwsError::forbidden(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    // The signature covers the body: read it, check, and hand the request on rebuilt.
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| AwsError::bad_request("the request body is too large or unreadable"))?;
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let header_refs: Vec<(&str, &str)> =
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let signed = sigv4::SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &header_refs,
        body: &body,
    };
    let now = keygate_types::clock::SystemClock.now_unix_ms() / 1000;
    sigv4::verify(&signed, &parsed, &secret, now).map_err(sig_error)?;
    Ok((
        Actor(format!("sigv4:{}", parsed.access_key_id)),
        Request::from_parts(parts, Body::from(body)),
    ))
}

fn sig_error(e: sigv4::SigError) -> AwsError {
    let (error_type, message) = e.aws_error();
    AwsError::forbidden(error_type, message)
}
