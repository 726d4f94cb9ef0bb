//! The `http-proxy` integration: forward the request to `request.uri` with path parameters
//! substituted, through a pooled keep-alive client.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keygate_types::response::GatewayError;

use crate::respond::Body;

/// API Gateway's default integration timeout.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(29);
/// Largest upstream body passed back (API Gateway's payload limit).
pub(crate) const MAX_BODY: usize = 10 * 1024 * 1024;

/// Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Requests are small: one copied buffer and one write() beat writev() with several
        // slices (docs/benchmarks.md), as on the server side.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http1_writev(false)
            .build(connector);
        Self { client }
    }

    /// Forwards one request. Gateway errors: 502 for an unreachable or broken upstream, 504
    /// after [`TIMEOUT`].
    pub(crate) async fn forward(
        &self,
        template: &str,
        params: &[(String, String)],
        query: Option<&str>,
        method: &http::Method,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<http::Response<Body>, GatewayError> {
        let mut target = substitute(template, params);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(q);
        }
        let uri: Uri = target.parse().map_err(|e| {
            tracing::warn!(uri = %target, error = %e, "http-proxy target is not a valid URI");
            GatewayError::InternalServerError
        })?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Full::new(body))
            .map_err(|_| GatewayError::InternalServerError)?;
        let out = req.headers_mut();
        out.reserve(headers.len());
        let connection = connection_tokens(headers);
        for (name, value) in headers {
            if name == header::HOST || is_hop_by_hop(name, &connection) {
                continue;
            }
            out.append(name.clone(), value.clone());
        }
        let res = match tokio::time::timeout(TIMEOUT, self.client.request(req)).await {
            Err(_) => return Err(GatewayError::EndpointRequestTimedOut),
            Ok(Err(e)) => {
                tracing::warn!(uri = %target, error = %e, "http-proxy upstream failed");
                return Err(GatewayError::InternalServerError);
            }
            Ok(Ok(res)) => res,
        };
        let (mut parts, body) = res.into_parts();
        let body = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
            tracing::warn!(uri = %target, error = %e, "http-proxy upstream body failed");
            GatewayError::InternalServerError
        })?;
        // The upstream's head is passed on as it is, minus hop-by-hop headers and the length
        // (hyper sets it from the collected body).
        let connection = connection_tokens(&parts.headers);
        if !connection.is_empty() || HOP_BY_HOP.iter().any(|h| parts.headers.contains_key(*h)) {
            let names: Vec<HeaderName> =
                parts.headers.keys().filter(|n| is_hop_by_hop(n, &connection)).cloned().collect();
            for n in names {
                parts.headers.remove(n);
            }
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.version = http::Version::HTTP_11;
        parts.extensions.clear();
        Ok(Response::from_parts(parts, Full::new(body.to_bytes())))
    }
}

/// The header names listed in `Connection` (lower case): hop-by-hop for this message.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || connection.iter().any(|t| t == name.as_str())
}

/// Replaces `{name}` and `{name+}` in the URI template with the (re-encoded) path parameters.
fn substitute(template: &str, params: &[(String, String)]) -> String {
    let mut out = template.to_owned();
    if params.is_empty() {
        return out;
    }
    for (name, value) in params {
        let encoded: String = value
            .split('/')
            .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/");
        out = out
            .replace(&format!("{{{name}+}}"), &encoded)
            .replace(&format!("{{{name}}}"), &encoded);
    }
    out
}

const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_params() {
        let p = vec![("proxy".to_owned(), "a/b c".to_owned()), ("id".to_owned(), "7".to_owned())];
        assert_eq!(substitute("http://x/{proxy}", &p), "http://x/a/b%20c");
        assert_eq!(substitute("http://x/u/{id}/{proxy+}", &p), "http://x/u/7/a/b%20c");
    }
}
