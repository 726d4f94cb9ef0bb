//! `integration: http-proxy`: the request forwarded to its upstream by the pooled client
//! (`upstream`); an upstream failure is API Gateway's 502/504.

use keygate_http::Response;

use super::Call;
use crate::respond;
use crate::upstream::{Target, Upstream};

pub(super) async fn forward(
    upstream: &Upstream,
    call: &Call<'_>,
    uri: &str,
    fixed: Option<&Target>,
    insecure: bool,
) -> Response {
    let resource = &call.route.event.path;
    match upstream.forward(uri, resource, fixed, insecure, call.params, call.req).await {
        Ok(res) => res,
        Err(e) => respond::error(e, call.cors.clone()),
    }
}
