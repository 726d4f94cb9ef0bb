//! Responses the gateway makes itself: AWS gateway errors (from the one table in
//! `keygate_types::response`) and CORS preflight answers.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use keygate_types::response::GatewayError;
use keygate_types::{Cors, HttpMethod};

pub(crate) type Body = Bytes;

pub(crate) static X_AMZN_REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");
pub(crate) static X_AMZN_ERROR_TYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");
static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A gateway-made error. On a CORS route it also carries `Access-Control-Allow-Origin`, so a
/// browser can read the 403 (API Gateway needs a custom gateway response for that; keygate does
/// it by default).
pub(crate) fn error(
    err: GatewayError,
    cors: Option<(&Cors, Option<&HeaderValue>)>,
) -> Response<Body> {
    let spec = err.spec();
    let mut res = Response::new(Bytes::from_static(spec.body.as_bytes()));
    *res.status_mut() = StatusCode::from_u16(spec.status).unwrap_or(StatusCode::FORBIDDEN);
    // Sized once for these, the request id and CORS, instead of growing twice.
    *res.headers_mut() = HeaderMap::with_capacity(6);
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, APPLICATION_JSON.clone());
    h.insert(X_AMZN_ERROR_TYPE.clone(), HeaderValue::from_static(spec.error_type));
    if let Some((cors, origin)) = cors {
        allow_origin(h, cors, origin);
    }
    res
}

/// A 429 with `Retry-After` (beyond AWS, which sends none), when waiting can help.
pub(crate) fn limited(
    err: GatewayError,
    retry_after: Option<u64>,
    cors: Option<(&Cors, Option<&HeaderValue>)>,
) -> Response<Body> {
    let mut res = error(err, cors);
    if let Some(secs) = retry_after {
        res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// The answer to an `OPTIONS` preflight on a CORS resource: 200, no key needed, with the
/// resource's methods.
pub(crate) fn preflight(
    cors: &Cors,
    methods: &[HttpMethod],
    origin: Option<&HeaderValue>,
) -> Response<Body> {
    let mut res = Response::new(Bytes::new());
    let h = res.headers_mut();
    allow_origin(h, cors, origin);
    if let Ok(v) = HeaderValue::from_str(&cors.headers.join(",")) {
        h.insert("access-control-allow-headers", v);
    }
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
    if let Ok(v) = HeaderValue::from_str(&listed.join(",")) {
        h.insert("access-control-allow-methods", v);
    }
    if cors.allow_credentials {
        h.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
    }
    if let Some(age) = cors.max_age {
        h.insert("access-control-max-age", HeaderValue::from(age));
    }
    if let Some(cc) = cors.cache_control.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert("cache-control", cc);
    }
    res
}

/// `Access-Control-Allow-Origin`: `*`, the request's origin when it is allowed, else the first
/// configured origin (browsers then refuse, as they should).
fn allow_origin(h: &mut HeaderMap, cors: &Cors, origin: Option<&HeaderValue>) {
    let value = if cors.origins.iter().any(|o| o == "*") && !cors.allow_credentials {
        HeaderValue::from_static("*")
    } else if let Some(o) = origin.filter(|o| origin_allowed(cors, o)) {
        o.clone()
    } else {
        match cors.origins.first().and_then(|o| HeaderValue::from_str(o).ok()) {
            Some(v) => v,
            None => return,
        }
    };
    h.insert("access-control-allow-origin", value);
    if value_is_specific(h) {
        h.append(http::header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn value_is_specific(h: &HeaderMap) -> bool {
    h.get("access-control-allow-origin").is_some_and(|v| v != "*")
}

fn origin_allowed(cors: &Cors, origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else { return false };
    cors.origins.iter().any(|allowed| {
        allowed == "*"
            || allowed == origin
            || allowed
                .split_once('*')
                .is_some_and(|(pre, post)| origin.starts_with(pre) && origin.ends_with(post))
    })
}
