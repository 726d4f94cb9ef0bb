//! Lambda proxy integration: the REST API payload format 1.0 event, and mapping the function's
//! answer back to HTTP exactly as API Gateway does (anything malformed is a 502).
//!
//! Public (and hidden from the docs) only so the benches in `benches/hot_path.rs` can call
//! [`build`] and [`parse_response`]; not a stable API.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

/// What the event is built from.
pub struct EventInput<'a> {
    /// The request method, e.g. `GET`.
    pub method: &'a str,
    /// Request path without the stage, e.g. `/candidates/42`.
    pub path: &'a str,
    /// The stage name, e.g. `dev`.
    pub stage: &'a str,
    /// The resource template, e.g. `/candidates/{id}`.
    pub resource: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw query string (without `?`), if any.
    pub query: Option<&'a str>,
    /// The path parameters matched by the router (already percent-decoded).
    pub params: &'a [(String, String)],
    /// The request body.
    pub body: &'a [u8],
    /// The client's address (`identity.sourceIp`).
    pub peer: SocketAddr,
    /// The request id (`x-amzn-RequestId`).
    pub request_id: &'a str,
    /// The id of the API serving the route.
    pub api_id: &'a str,
    /// The id of the deployment the stage serves.
    pub deployment_id: &'a str,
    /// The key used (value, id) on a private route.
    pub api_key: Option<(&'a str, &'a str)>,
    /// When the request was received (`requestTime`, `requestTimeEpoch`).
    pub time: time::OffsetDateTime,
}

const CLF: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
);

/// Builds the event JSON.
pub fn build(i: &EventInput<'_>) -> Bytes {
    let mut headers = Map::new();
    let mut multi_headers: Map<String, Value> = Map::new();
    for (name, value) in i.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.insert(name.as_str().to_owned(), Value::String(v.clone()));
        match multi_headers.get_mut(name.as_str()) {
            Some(Value::Array(a)) => a.push(Value::String(v)),
            _ => {
                multi_headers.insert(name.as_str().to_owned(), json!([v]));
            }
        }
    }
    let (query, multi_query) = match i.query.filter(|q| !q.is_empty()) {
        Some(q) => {
            let mut single = Map::new();
            let mut multi: Map<String, Value> = Map::new();
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                single.insert(k.to_string(), Value::String(v.to_string()));
                match multi.get_mut(k.as_ref()) {
                    Some(Value::Array(a)) => a.push(Value::String(v.into_owned())),
                    _ => {
                        multi.insert(k.into_owned(), json!([v]));
                    }
                }
            }
            (Value::Object(single), Value::Object(multi))
        }
        None => (Value::Null, Value::Null),
    };
    let path_params = if i.params.is_empty() {
        Value::Null
    } else {
        Value::Object(i.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
    };
    let (body, is_b64) = if i.body.is_empty() {
        (Value::Null, false)
    } else {
        match std::str::from_utf8(i.body) {
            Ok(s) => (Value::String(s.to_owned()), false),
            Err(_) => (Value::String(B64.encode(i.body)), true),
        }
    };
    let header = |n: &str| i.headers.get(n).and_then(|v| v.to_str().ok());
    let host = header("host").unwrap_or("127.0.0.1");
    let (api_key, api_key_id) = match i.api_key {
        Some((v, id)) => (json!(v), json!(id)),
        None => (Value::Null, Value::Null),
    };
    let event = json!({
        "resource": i.resource,
        "path": i.path,
        "httpMethod": i.method,
        "headers": if headers.is_empty() { Value::Null } else { Value::Object(headers) },
        "multiValueHeaders": if multi_headers.is_empty() { Value::Null } else { Value::Object(multi_headers) },
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": path_params,
        "stageVariables": Value::Null,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": i.api_id,
            "resourceId": i.deployment_id,
            "resourcePath": i.resource,
            "httpMethod": i.method,
            "path": format!("/{}{}", i.stage, i.path),
            "stage": i.stage,
            "requestId": i.request_id,
            "extendedRequestId": i.request_id,
            "requestTime": i.time.format(CLF).unwrap_or_default(),
            "requestTimeEpoch": i.time.unix_timestamp_nanos() / 1_000_000,
            "protocol": "HTTP/1.1",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or(host),
            "identity": {
                "apiKey": api_key,
                "apiKeyId": api_key_id,
                "sourceIp": i.peer.ip().to_string(),
                "userAgent": header("user-agent"),
                "accountId": null, "caller": null, "user": null, "userArn": null,
                "accessKey": null, "cognitoIdentityPoolId": null, "cognitoIdentityId": null,
                "cognitoAuthenticationType": null, "cognitoAuthenticationProvider": null,
                "principalOrgId": null, "clientCert": null,
            },
            "authorizer": null,
        },
        "body": body,
        "isBase64Encoded": is_b64,
    });
    Bytes::from(serde_json::to_vec(&event).unwrap_or_default())
}

/// A function's answer, ready to send.
#[derive(Debug)]
pub struct ProxyResponse {
    /// The response status (`statusCode`).
    pub status: StatusCode,
    /// The response headers, `headers` merged with `multiValueHeaders`, in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The response body (base64-decoded when `isBase64Encoded`).
    pub body: Bytes,
}

/// Maps a lambda-proxy answer. `Err` says why it is malformed (logged; the client gets a 502).
pub fn parse_response(raw: &[u8]) -> Result<ProxyResponse, String> {
    let v: Value =
        serde_json::from_slice(raw).map_err(|e| format!("response is not JSON ({e})"))?;
    let Value::Object(obj) = v else {
        return Err("response is not a JSON object".to_owned());
    };
    let status = match obj.get("statusCode") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .and_then(|n| u16::try_from(n).ok())
    .and_then(|n| StatusCode::from_u16(n).ok())
    .ok_or("statusCode is missing or not an HTTP status")?;
    let mut headers = Vec::new();
    // multiValueHeaders wins for names present in both, as API Gateway merges them.
    let multi = match obj.get("multiValueHeaders") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("multiValueHeaders is not an object".to_owned()),
    };
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if multi.contains_key(k) {
                    continue;
                }
                headers.push(header(k, &scalar(v).ok_or(format!("header {k} is not a string"))?)?);
            }
        }
        Some(_) => return Err("headers is not an object".to_owned()),
    }
    for (k, v) in &multi {
        let Value::Array(values) = v else {
            return Err(format!("multiValueHeaders.{k} is not a list"));
        };
        for v in values {
            headers.push(header(k, &scalar(v).ok_or(format!("header {k} is not a string"))?)?);
        }
    }
    let is_b64 = match obj.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("isBase64Encoded is not a boolean".to_owned()),
    };
    let body = match obj.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if is_b64 => {
            Bytes::from(B64.decode(s).map_err(|e| format!("body is not valid base64 ({e})"))?)
        }
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(_) => return Err("body is not a string".to_owned()),
    };
    Ok(ProxyResponse { status, headers, body })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    let v =
        HeaderValue::from_str(value).map_err(|_| format!("header {name} has an invalid value"))?;
    Ok((n, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_valid_responses() {
        let r = parse_response(
            br#"{"statusCode":201,"headers":{"a":"1","b":"x"},"multiValueHeaders":{"b":["2","3"]},"body":"hi"}"#,
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, "hi");
        let names: Vec<_> =
            r.headers.iter().map(|(n, v)| format!("{n}={}", v.to_str().unwrap())).collect();
        assert_eq!(names, ["a=1", "b=2", "b=3"]);
        let r =
            parse_response(br#"{"statusCode":200,"isBase64Encoded":true,"body":"AAEC"}"#).unwrap();
        assert_eq!(&r.body[..], &[0, 1, 2]);
    }

    #[test]
    fn refuses_malformed_responses() {
        for raw in [
            &br#""this is not a proxy response""#[..],
            br#"{"statusCode":200,"body":{"a":1}}"#,
            br#"{"body":"x"}"#,
            br#"{"statusCode":99999}"#,
            b"garbage",
            br#"{"statusCode":200,"headers":{"a":{"b":1}}}"#,
        ] {
            assert!(parse_response(raw).is_err(), "{}", String::from_utf8_lossy(raw));
        }
    }
}
