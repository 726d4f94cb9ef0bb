//! Responses the gateway makes itself: AWS gateway errors (from the one table in
//! `keygate_types::response`) and CORS preflight answers.

use bytes::Bytes;
use http::StatusCode;
use keygate_http::{Headers, Response};
use keygate_types::response::GatewayError;
use keygate_types::{Cors, HttpMethod};

/// The request id header on every answer.
pub(crate) const X_AMZN_REQUEST_ID: &str = "x-amzn-requestid";

/// The CORS configuration of the route and the request's `Origin`, if it sent one (shared from
/// the request's head, not copied).
pub(crate) type CorsOrigin<'a> = Option<(&'a Cors, Option<Bytes>)>;

/// What an error answer on a resource with CORS settings `cors` needs to carry for `req`: the
/// settings and the request's `Origin` (read only when there are settings).
pub(crate) fn cors_origin<'a>(
    cors: Option<&'a Cors>,
    req: &keygate_http::Request,
) -> CorsOrigin<'a> {
    let cors = cors?;
    Some((cors, req.headers.get("origin").map(|o| req.headers.share(o))))
}

/// A gateway-made error. On a CORS route it also carries `Access-Control-Allow-Origin`, so a
/// browser can read the 403 (API Gateway needs a custom gateway response for that; keygate does
/// it by default). Everything but CORS is static: no formatting, no copies.
pub(crate) fn error(err: GatewayError, cors: CorsOrigin<'_>) -> Response {
    let spec = err.spec();
    let status = StatusCode::from_u16(spec.status).unwrap_or(StatusCode::FORBIDDEN);
    let mut res = Response::new(status, Bytes::from_static(spec.body.as_bytes()));
    res.headers.push_static("content-type", "application/json");
    res.headers.push_static("x-amzn-errortype", spec.error_type);
    if let Some((cors, origin)) = cors {
        allow_origin(&mut res.headers, cors, origin.as_ref());
    }
    res
}

/// A 429 with `Retry-After` (beyond AWS, which sends none), when waiting can help.
pub(crate) fn limited(
    err: GatewayError,
    retry_after: Option<u64>,
    cors: CorsOrigin<'_>,
) -> Response {
    let mut res = error(err, cors);
    if let Some(secs) = retry_after {
        let secs = itoa::Buffer::new().format(secs).as_bytes().to_vec();
        res.headers.push_value("retry-after", Bytes::from(secs));
    }
    res
}

/// The answer to an `OPTIONS` preflight on a CORS resource: 200, no key needed, with the
/// resource's methods.
pub(crate) fn preflight(cors: &Cors, methods: &[HttpMethod], origin: Option<&Bytes>) -> Response {
    let mut res = Response::new(StatusCode::OK, Bytes::new());
    let h = &mut res.headers;
    allow_origin(h, cors, origin);
    push_text(h, "access-control-allow-headers", cors.headers.join(","));
    let mut listed: Vec<&str> = if cors.methods.is_empty() {
        let mut m: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
        if m.contains(&"ANY") {
            m = vec!["DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"];
        }
        m
    } else {
        cors.methods.iter().map(String::as_str).collect()
    };
    if !listed.contains(&"OPTIONS") {
        listed.push("OPTIONS");
    }
    push_text(h, "access-control-allow-methods", listed.join(","));
    if cors.allow_credentials {
        h.push_static("access-control-allow-credentials", "true");
    }
    if let Some(age) = cors.max_age {
        push_text(h, "access-control-max-age", age.to_string());
    }
    if let Some(cc) = &cors.cache_control {
        push_text(h, "cache-control", cc.clone());
    }
    res
}

/// Adds `name: value` when `value` is a valid header value (configuration is checked when it is
/// loaded; this is the last guard).
fn push_text(h: &mut Headers, name: &'static str, value: String) {
    let _ = h.push(Bytes::from_static(name.as_bytes()), Bytes::from(value));
}

/// `Access-Control-Allow-Origin`: `*`, the request's origin when it is allowed, else the first
/// configured origin (browsers then refuse, as they should).
fn allow_origin(h: &mut Headers, cors: &Cors, origin: Option<&Bytes>) {
    const NAME: &str = "access-control-allow-origin";
    if cors.origins.iter().any(|o| o == "*") && !cors.allow_credentials {
        h.push_static(NAME, "*");
        return;
    }
    let value = match origin.filter(|o| origin_allowed(cors, o)) {
        // A value of the request's head, checked by the parser.
        Some(o) => o.clone(),
        None => match cors.origins.first() {
            Some(o) => Bytes::from(o.clone()),
            None => return,
        },
    };
    let specific = value != "*";
    if h.push(Bytes::from_static(NAME.as_bytes()), value).is_ok() && specific {
        h.push_static("vary", "Origin");
    }
}

fn origin_allowed(cors: &Cors, origin: &[u8]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else { return false };
    cors.origins.iter().any(|allowed| {
        allowed == "*"
            || allowed == origin
            || allowed
                .split_once('*')
                .is_some_and(|(pre, post)| origin.starts_with(pre) && origin.ends_with(post))
    })
}
