//! `integration: lambda-proxy` (Serverless's default): the request as API Gateway's REST proxy
//! event, the function invoked through the function host (the Lambda Runtime API), its answer
//! mapped back as API Gateway maps it; a timeout is a 504, a failure or a malformed answer a
//! 502.

use keygate_functions::{FunctionHost, FunctionRef, InvokeError};
use keygate_http::Response;
use keygate_types::ApiKeySource;
use keygate_types::response::GatewayError;

use super::Call;
use crate::{event, respond};

pub(super) async fn invoke(functions: &FunctionHost, call: &Call<'_>, function: usize) -> Response {
    let Call { route, params, req, path, peer, request_id, key_id, .. } = *call;
    let def = &route.definition;
    let spec = &def.functions[function];
    let event = event::build(&event::EventInput {
        method: req.method.as_str(),
        path,
        stage: &route.stage,
        resource: &route.event.path,
        headers: &req.headers,
        query: req.query(),
        params,
        body: &req.body,
        peer,
        request_id,
        api_id: &route.api_id,
        deployment_id: &route.deployment_id,
        // The value as presented (the route is private when a key id is known): the header's,
        // or with `apiKeySourceType: AUTHORIZER` the authorizer's.
        api_key: key_id.and_then(|id| {
            let v = match def.api_key_source {
                ApiKeySource::Header => std::str::from_utf8(req.headers.get("x-api-key")?).ok()?,
                ApiKeySource::Authorizer => call.authorized?.usage_identifier_key()?,
            };
            Some((v, id))
        }),
        time: time::OffsetDateTime::now_utc(),
        authorizer: call.authorized,
        authorizer_request: None,
    });
    let f = FunctionRef::of(def, spec);
    let raw = match functions.invoke(&f, event).await {
        Ok(raw) => raw,
        Err(InvokeError::Timeout) => {
            tracing::warn!(function = %spec.name, request_id, "function timed out");
            return respond::error(GatewayError::EndpointRequestTimedOut, call.cors.clone());
        }
        Err(e) => {
            tracing::warn!(function = %spec.name, request_id, error = %e, "function failed");
            return respond::error(GatewayError::InternalServerError, call.cors.clone());
        }
    };
    match event::parse_response(&raw) {
        Ok(p) => {
            let mut headers = p.headers;
            // Framing is the server's; the request id the gateway's.
            headers.retain(|n, _| {
                !n.eq_ignore_ascii_case(b"content-length")
                    && !n.eq_ignore_ascii_case(b"transfer-encoding")
                    && !n.eq_ignore_ascii_case(respond::X_AMZN_REQUEST_ID.as_bytes())
            });
            Response { status: p.status, headers, body: p.body }
        }
        Err(why) => {
            tracing::warn!(
                function = %spec.name,
                request_id,
                "Execution failed due to configuration error: Malformed Lambda proxy response: {why}"
            );
            respond::error(GatewayError::InternalServerError, call.cors.clone())
        }
    }
}
