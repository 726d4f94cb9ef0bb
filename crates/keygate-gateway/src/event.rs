//! Lambda proxy integration: the REST API payload format 1.0 event, and mapping the function's
//! answer back to HTTP exactly as API Gateway does (anything malformed is a 502).
//!
//! Both directions run on every function invocation, so neither builds a `serde_json::Value`
//! tree: the event is serialized straight from the request (borrowed strings, maps written from
//! iterators), and the answer is read into a small tree borrowing from the raw bytes before it is
//! checked.
//!
//! Public (and hidden from the docs) only so the benches in `benches/hot_path.rs` can call
//! [`build`] and [`parse_response`]; not a stable API.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::StatusCode;
use keygate_http::{Fields, Headers};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

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
    pub headers: &'a Fields,
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
    /// What the route's Lambda authorizer let through (`requestContext.authorizer`; `null`
    /// without one).
    pub authorizer: Option<&'a crate::authorizer::Authorized>,
    /// `Some(methodArn)`: the event of a REQUEST authorizer instead of the function's (`type`
    /// and `methodArn` first, no body), as API Gateway sends it.
    pub authorizer_request: Option<&'a str>,
}

const CLF: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
);

/// Builds the event JSON.
///
/// Every field of the payload is always present (`null` when there is nothing to say), as API
/// Gateway sends it: `headers`/`multiValueHeaders` are `null` without headers, the query maps
/// are `null` without a query string, `pathParameters` is `null` without parameters, and a body
/// that is not UTF-8 is sent base64-encoded with `isBase64Encoded: true`.
///
/// Written by hand rather than through serde: the keys are constants written as they are (serde
/// escapes every key byte by byte), and strings that need no escaping (nearly all) are copied
/// in one piece. That halves the gateway's instructions for an event (docs/benchmarks.md); the
/// test `build_writes_the_same_event_as_the_value_builder` holds it to the `serde_json::Value`
/// builder it replaced.
pub fn build(i: &EventInput<'_>) -> Bytes {
    let header = |n: &str| i.headers.get(n).and_then(|v| std::str::from_utf8(v).ok());
    let host = header("host").unwrap_or("127.0.0.1");
    let query = i.query.filter(|q| !q.is_empty()).map(Query::parse);
    let mut o = Json(Vec::with_capacity(capacity_hint(i)));
    match i.authorizer_request {
        Some(method_arn) => {
            o.field("{\"type\":\"REQUEST\",\"methodArn\":", method_arn);
            o.field(",\"resource\":", i.resource);
        }
        None => o.field("{\"resource\":", i.resource),
    }
    o.field(",\"path\":", i.path);
    o.field(",\"httpMethod\":", i.method);
    o.raw(",\"headers\":");
    headers(&mut o, i.headers, false);
    o.raw(",\"multiValueHeaders\":");
    headers(&mut o, i.headers, true);
    o.raw(",\"queryStringParameters\":");
    query_map(&mut o, query.as_ref(), false);
    o.raw(",\"multiValueQueryStringParameters\":");
    query_map(&mut o, query.as_ref(), true);
    o.raw(",\"pathParameters\":");
    path_params(&mut o, i.params);
    o.field(
        ",\"stageVariables\":null,\"requestContext\":{\"accountId\":\"000000000000\",\"apiId\":",
        i.api_id,
    );
    o.field(",\"resourceId\":", i.deployment_id);
    o.field(",\"resourcePath\":", i.resource);
    o.field(",\"httpMethod\":", i.method);
    o.raw(",\"path\":\"/");
    o.contents(i.stage);
    o.contents(i.path);
    o.field("\",\"stage\":", i.stage);
    o.field(",\"requestId\":", i.request_id);
    o.field(",\"extendedRequestId\":", i.request_id);
    o.raw(",\"requestTime\":");
    request_time(&mut o, i.time);
    o.raw(",\"requestTimeEpoch\":");
    o.raw(&(i.time.unix_timestamp_nanos() / 1_000_000).to_string());
    o.field(",\"protocol\":\"HTTP/1.1\",\"domainName\":", host);
    o.field(",\"domainPrefix\":", host.split('.').next().unwrap_or(host));
    o.opt_field(",\"identity\":{\"apiKey\":", i.api_key.map(|(value, _)| value));
    o.opt_field(",\"apiKeyId\":", i.api_key.map(|(_, id)| id));
    o.raw(",\"sourceIp\":\"");
    // An IP address needs no escaping.
    let _ = write!(o.0, "{}", i.peer.ip());
    o.opt_field("\",\"userAgent\":", header("user-agent"));
    o.raw(
        ",\"accountId\":null,\"caller\":null,\"user\":null,\"userArn\":null,\"accessKey\":null,\
         \"cognitoIdentityPoolId\":null,\"cognitoIdentityId\":null,\
         \"cognitoAuthenticationType\":null,\"cognitoAuthenticationProvider\":null,\
         \"principalOrgId\":null,\"clientCert\":null},\"authorizer\":",
    );
    match i.authorizer {
        Some(authorized) => authorizer(&mut o, authorized),
        None => o.raw("null"),
    }
    if i.authorizer_request.is_some() {
        o.raw("}}");
        return Bytes::from(o.0);
    }
    o.raw("},\"body\":");
    if i.body.is_empty() {
        o.raw("null,\"isBase64Encoded\":false}");
    } else {
        match std::str::from_utf8(i.body) {
            Ok(s) => {
                o.str(s);
                o.raw(",\"isBase64Encoded\":false}");
            }
            Err(_) => {
                o.0.push(b'"');
                // Base64 needs no escaping.
                o.raw(&B64.encode(i.body));
                o.raw("\",\"isBase64Encoded\":true}");
            }
        }
    }
    Bytes::from(o.0)
}

/// `requestContext.authorizer`: a Lambda authorizer's principal, latency and `context`, or a
/// JWT authorizer's `claims`; every value a string, as API Gateway's REST payload has them
/// (numbers and booleans as text, arrays and objects as JSON text).
fn authorizer(o: &mut Json, a: &crate::authorizer::Authorized) {
    use crate::authorizer::Authorized;
    match a {
        Authorized::Lambda { answer, latency_ms } => {
            o.field("{\"principalId\":", &answer.principal_id);
            o.raw(",\"integrationLatency\":");
            o.raw(itoa::Buffer::new().format(*latency_ms));
            for (name, value) in &answer.context {
                // `principalId` and `integrationLatency` are API Gateway's own.
                if name == "principalId" || name == "integrationLatency" {
                    continue;
                }
                o.raw(",");
                string_pair(o, name, value);
            }
            o.raw("}");
        }
        Authorized::Jwt(claims) => {
            o.raw("{\"claims\":{");
            for (i, (name, value)) in claims.iter().enumerate() {
                if i > 0 {
                    o.raw(",");
                }
                string_pair(o, name, value);
            }
            o.raw("}}");
        }
    }
}

/// `"name":"value"`, the value as text.
fn string_pair(o: &mut Json, name: &str, value: &serde_json::Value) {
    o.str(name);
    o.raw(":");
    match value {
        serde_json::Value::String(s) => o.str(s),
        other => o.str(&other.to_string()),
    }
}

/// Roughly how long the event will be, so it is written without reallocating: the fixed part
/// plus every header twice (single and multi), the query twice, and the body (grown by base64).
fn capacity_hint(i: &EventInput<'_>) -> usize {
    let headers: usize = i.headers.iter().map(|(n, v)| n.len() + v.len() + 8).sum();
    let params: usize = i.params.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    1280 + 2 * headers
        + 2 * i.query.map_or(0, str::len)
        + params
        + i.body.len() / 3 * 4
        + 2 * (i.path.len() + i.resource.len())
}

/// A JSON text being written.
struct Json(Vec<u8>);

impl Json {
    /// JSON written as it is (constants, numbers).
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A JSON string.
    fn str(&mut self, s: &str) {
        self.0.push(b'"');
        self.contents(s);
        self.0.push(b'"');
    }

    /// `prefix` as it is (a key with its `,`/`{` and `:`), then `value` as a JSON string.
    fn field(&mut self, prefix: &str, value: &str) {
        self.raw(prefix);
        self.str(value);
    }

    /// As [`Json::field`], `null` for `None`.
    fn opt_field(&mut self, prefix: &str, value: Option<&str>) {
        self.raw(prefix);
        self.opt_str(value);
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    /// The inside of a JSON string, escaped as serde_json escapes (`"`, `\` and control
    /// characters; everything else, non-ASCII included, as it is).
    fn contents(&mut self, s: &str) {
        if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            self.0.extend_from_slice(s.as_bytes());
            return;
        }
        // Rare: let serde_json escape it, then drop its quotes.
        let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
        self.0.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
    }
}

/// `requestContext.requestTime` in the common log format, e.g. `18/Nov/2026:09:30:00 +0000`.
fn request_time(o: &mut Json, t: time::OffsetDateTime) {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let year = match u16::try_from(t.year()) {
        Ok(y) if y <= 9999 => y,
        // `[year]` writes a sign and more digits out there; leave that to `time`.
        _ => return o.str(&t.format(CLF).unwrap_or_default()),
    };
    fn two(out: &mut [u8], n: u8) {
        out[0] = b'0' + n / 10 % 10;
        out[1] = b'0' + n % 10;
    }
    let mut buf = *b"dd/Mon/yyyy:hh:mm:ss +0000";
    two(&mut buf[0..2], t.day());
    buf[3..6].copy_from_slice(MONTHS[usize::from(u8::from(t.month())) - 1]);
    two(&mut buf[7..9], (year / 100) as u8);
    two(&mut buf[9..11], (year % 100) as u8);
    two(&mut buf[12..14], t.hour());
    two(&mut buf[15..17], t.minute());
    two(&mut buf[18..20], t.second());
    // Digits, letters, `/`, `:`, ` ` and `+`: nothing to escape.
    o.0.push(b'"');
    o.0.extend_from_slice(&buf);
    o.0.push(b'"');
}

/// A header value as a JSON string: invalid UTF-8 is replaced.
fn text(o: &mut Json, bytes: &[u8]) {
    // ASCII (nearly every value) is UTF-8 already: no decoding, only the escape check.
    if bytes.is_ascii() && !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        o.0.push(b'"');
        o.0.extend_from_slice(bytes);
        o.0.push(b'"');
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => o.str(s),
        Err(_) => o.str(&String::from_utf8_lossy(bytes)),
    }
}

/// `headers` (each name with its last value) or, with `multi`, `multiValueHeaders` (each name
/// with all its values, in order); `null` without headers. Names are written in lower case, each
/// where it first appears (a repeated name is grouped, case ignored).
fn headers(o: &mut Json, headers: &Fields, multi: bool) {
    if headers.is_empty() {
        o.raw("null");
        return;
    }
    let fields: smallvec::SmallVec<[(&[u8], &[u8]); 16]> = headers.iter().collect();
    o.0.push(b'{');
    for (at, &(name, value)) in fields.iter().enumerate() {
        if fields[..at].iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            continue; // written with its first appearance
        }
        if o.0.last() != Some(&b'{') {
            o.0.push(b',');
        }
        // Header names are tokens: nothing to escape.
        o.0.push(b'"');
        o.0.extend(name.iter().map(u8::to_ascii_lowercase));
        o.raw("\":");
        let mut repeats =
            fields[at + 1..].iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|f| f.1);
        if multi {
            o.0.push(b'[');
            text(o, value);
            for v in repeats {
                o.0.push(b',');
                text(o, v);
            }
            o.0.push(b']');
        } else {
            text(o, repeats.next_back().unwrap_or(value));
        }
    }
    o.0.push(b'}');
}

/// The decoded query pairs, sorted by name (stable: the values of one name keep their order).
struct Query<'q> {
    pairs: Vec<(Cow<'q, str>, Cow<'q, str>)>,
}

impl<'q> Query<'q> {
    fn parse(query: &'q str) -> Self {
        let mut pairs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Self { pairs }
    }

    /// One run of equal names at a time.
    fn groups(&self) -> impl Iterator<Item = &[(Cow<'q, str>, Cow<'q, str>)]> {
        self.pairs.chunk_by(|a, b| a.0 == b.0)
    }
}

/// `queryStringParameters` (each name with its last value) or, with `multi`,
/// `multiValueQueryStringParameters` (each name with all its values, in order); `null` without
/// a query string.
fn query_map(o: &mut Json, query: Option<&Query<'_>>, multi: bool) {
    let Some(query) = query else {
        o.raw("null");
        return;
    };
    o.0.push(b'{');
    for (n, group) in query.groups().enumerate() {
        let (Some((name, _)), Some((_, last))) = (group.first(), group.last()) else { continue };
        if n > 0 {
            o.0.push(b',');
        }
        o.str(name);
        o.0.push(b':');
        if multi {
            o.0.push(b'[');
            for (k, (_, value)) in group.iter().enumerate() {
                if k > 0 {
                    o.0.push(b',');
                }
                o.str(value);
            }
            o.0.push(b']');
        } else {
            o.str(last);
        }
    }
    o.0.push(b'}');
}

/// `pathParameters`; should a name repeat, its last value wins. `null` without parameters.
fn path_params(o: &mut Json, params: &[(String, String)]) {
    if params.is_empty() {
        o.raw("null");
        return;
    }
    o.0.push(b'{');
    let mut first = true;
    for (n, (name, value)) in params.iter().enumerate() {
        // A handful of parameters at most (one per `{...}` of the template).
        if params[n + 1..].iter().any(|(later, _)| later == name) {
            continue;
        }
        if !std::mem::take(&mut first) {
            o.0.push(b',');
        }
        o.str(name);
        o.0.push(b':');
        o.str(value);
    }
    o.0.push(b'}');
}

/// A function's answer, ready to send.
#[derive(Debug)]
pub struct ProxyResponse {
    /// The response status (`statusCode`).
    pub status: StatusCode,
    /// The response headers, `headers` merged with `multiValueHeaders`, in order; names as the
    /// function wrote them.
    pub headers: Headers,
    /// The response body (base64-decoded when `isBase64Encoded`).
    pub body: Bytes,
}

/// Maps a lambda-proxy answer. `Err` says why it is malformed (logged; the client gets a 502).
///
/// The whole answer must be valid JSON (unknown fields included); then, in this order:
/// `statusCode`, `multiValueHeaders`, `headers`, `isBase64Encoded` and `body` are checked. Object
/// keys are taken in sorted order and a repeated key keeps its last value, so headers come out
/// sorted by name, `headers` first (minus the names in `multiValueHeaders`, which wins), then
/// `multiValueHeaders`.
pub fn parse_response(raw: &[u8]) -> Result<ProxyResponse, String> {
    let v: Raw<'_> =
        serde_json::from_slice(raw).map_err(|e| format!("response is not JSON ({e})"))?;
    let Raw::Object(obj) = v else {
        return Err("response is not a JSON object".to_owned());
    };
    // A repeated key keeps its last value.
    let get = |name: &str| obj.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    let status = match get("statusCode") {
        Some(Raw::Num(n)) => n.as_u64(),
        Some(Raw::Str(s)) => s.parse().ok(),
        _ => None,
    }
    .and_then(|n| u16::try_from(n).ok())
    .and_then(|n| StatusCode::from_u16(n).ok())
    .ok_or("statusCode is missing or not an HTTP status")?;
    let mut headers = Headers::default();
    // multiValueHeaders wins for names present in both, as API Gateway merges them.
    let multi = match get("multiValueHeaders") {
        None | Some(Raw::Null) => Vec::new(),
        Some(Raw::Object(m)) => sorted(m),
        Some(_) => return Err("multiValueHeaders is not an object".to_owned()),
    };
    match get("headers") {
        None | Some(Raw::Null) => {}
        Some(Raw::Object(m)) => {
            for (k, v) in sorted(m) {
                if multi.binary_search_by(|(name, _)| (*name).cmp(k)).is_ok() {
                    continue;
                }
                header(
                    &mut headers,
                    k,
                    &scalar(v).ok_or_else(|| format!("header {k} is not a string"))?,
                )?;
            }
        }
        Some(_) => return Err("headers is not an object".to_owned()),
    }
    for (k, v) in &multi {
        let Raw::List(values) = v else {
            return Err(format!("multiValueHeaders.{k} is not a list"));
        };
        for v in values {
            header(
                &mut headers,
                k,
                &scalar(v).ok_or_else(|| format!("header {k} is not a string"))?,
            )?;
        }
    }
    let is_b64 = match get("isBase64Encoded") {
        None | Some(Raw::Null) => false,
        Some(Raw::Bool(b)) => *b,
        Some(_) => return Err("isBase64Encoded is not a boolean".to_owned()),
    };
    let body = match get("body") {
        None | Some(Raw::Null) => Bytes::new(),
        Some(Raw::Str(s)) if is_b64 => {
            Bytes::from(B64.decode(&**s).map_err(|e| format!("body is not valid base64 ({e})"))?)
        }
        Some(Raw::Str(s)) => Bytes::copy_from_slice(s.as_bytes()),
        Some(_) => return Err("body is not a string".to_owned()),
    };
    Ok(ProxyResponse { status, headers, body })
}

/// An object's entries sorted by key, the last of repeated keys winning (as a JSON object read
/// into a sorted map).
fn sorted<'r, 'a>(entries: &'r [(Cow<'a, str>, Raw<'a>)]) -> Vec<(&'r str, &'r Raw<'a>)> {
    let mut all: Vec<(&str, &Raw<'a>)> = entries.iter().map(|(k, v)| (k.as_ref(), v)).collect();
    all.sort_by(|a, b| a.0.cmp(b.0)); // stable: repeated keys stay in document order
    let mut out: Vec<(&str, &Raw<'a>)> = Vec::with_capacity(all.len());
    for entry in all {
        match out.last_mut() {
            Some(last) if last.0 == entry.0 => *last = entry,
            _ => out.push(entry),
        }
    }
    out
}

fn scalar<'r>(v: &'r Raw<'_>) -> Option<Cow<'r, str>> {
    match v {
        Raw::Str(s) => Some(Cow::Borrowed(s)),
        Raw::Num(n) => Some(Cow::Owned(n.to_string())),
        Raw::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// Adds `name: value` after checking both (a function's answer must not be able to end the head
/// or smuggle a field in).
fn header(headers: &mut Headers, name: &str, value: &str) -> Result<(), String> {
    let n = Bytes::copy_from_slice(name.as_bytes());
    let v = Bytes::copy_from_slice(value.as_bytes());
    headers.push(n, v).map_err(|e| match e {
        keygate_http::InvalidHeader::Name => format!("{name:?} is not a valid header name"),
        keygate_http::InvalidHeader::Value => format!("header {name} has an invalid value"),
    })
}

/// A JSON value borrowing its strings from the input where it can. Reading one accepts exactly
/// the documents a `serde_json::Value` accepts (every value goes through `deserialize_any`), so
/// the "not JSON" cases and their messages are the same.
enum Raw<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    List(Vec<Raw<'a>>),
    Object(Vec<(Cow<'a, str>, Raw<'a>)>),
}

/// An object key, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Raw::Num(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Raw::Num(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // As `Value` does: a non-finite float (never produced by the parser) is null.
        Ok(Number::from_f64(v).map_or(Raw::Null, Raw::Num))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            list.push(v);
        }
        Ok(Raw::List(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some((Key(k), v)) = map.next_entry()? {
            entries.push((k, v));
        }
        Ok(Raw::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

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
            r.headers.iter().map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v))).collect();
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

    /// The `serde_json::Value` mapping `parse_response` replaced, kept as the reference.
    fn reference_parse(raw: &[u8]) -> Result<ProxyResponse, String> {
        fn scalar(v: &Value) -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        }
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
        let mut headers = Headers::default();
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
                    let v = scalar(v).ok_or_else(|| format!("header {k} is not a string"))?;
                    header(&mut headers, k, &v)?;
                }
            }
            Some(_) => return Err("headers is not an object".to_owned()),
        }
        for (k, v) in &multi {
            let Value::Array(values) = v else {
                return Err(format!("multiValueHeaders.{k} is not a list"));
            };
            for v in values {
                header(
                    &mut headers,
                    k,
                    &scalar(v).ok_or_else(|| format!("header {k} is not a string"))?,
                )?;
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

    /// Everything about a mapping result, comparable.
    fn summary(r: Result<ProxyResponse, String>) -> Result<String, String> {
        r.map(|p| format!("{} {:?} {:?}", p.status, p.headers, p.body))
    }

    #[test]
    fn parse_response_behaves_as_the_value_mapping() {
        let deep = format!(r#"{{"statusCode":200,"x":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let cases: Vec<Vec<u8>> = [
            r#"{"statusCode":200}"#,
            r#"{"statusCode":"404","body":null,"headers":null,"multiValueHeaders":null}"#,
            r#"{"statusCode":200.0}"#,
            r#"{"statusCode":-1}"#,
            r#"{"statusCode":1e400}"#,
            r#"{"statusCode":"abc"}"#,
            r#"{"statusCode":true}"#,
            r#"{"statusCode":[200]}"#,
            r#"{"statusCode":99}"#,
            r#"{"statusCode":1000}"#,
            r#"{"statusCode":65736}"#,
            r#"{"statusCode":200,"statusCode":500}"#,
            r#"{"statusCode":"x","statusCode":201}"#,
            r#"{"statusCode":200,"headers":{"b":"2","a":"1","c":3,"d":true,"e":1.5,"f":-7}}"#,
            r#"{"statusCode":200,"headers":{"a":"1","a":"2"}}"#,
            r#"{"statusCode":200,"headers":{"a":{"x":1},"a":"2"}}"#,
            r#"{"statusCode":200,"headers":{"a":"2","a":{"x":1}}}"#,
            r#"{"statusCode":200,"headers":{"a":null}}"#,
            r#"{"statusCode":200,"headers":{"a":[1]},"multiValueHeaders":{"a":["1"]}}"#,
            r#"{"statusCode":200,"headers":{"z":"1","b":"x"},"multiValueHeaders":{"b":["2",3,false],"a":[]}}"#,
            r#"{"statusCode":200,"multiValueHeaders":{"b":"2"}}"#,
            r#"{"statusCode":200,"multiValueHeaders":{"b":[null]}}"#,
            r#"{"statusCode":200,"multiValueHeaders":[]}"#,
            r#"{"statusCode":200,"headers":"x"}"#,
            r#"{"statusCode":200,"headers":"x","multiValueHeaders":1}"#,
            r#"{"statusCode":200,"headers":{"bad name":"1"}}"#,
            r#"{"statusCode":200,"headers":{"a":"line\nbreak"}}"#,
            r#"{"statusCode":200,"headers":{"\u0041b":"\u00e9"}}"#,
            r#"{"statusCode":200,"headers":{"x":"é"}}"#,
            r#"{"statusCode":200,"isBase64Encoded":"true"}"#,
            r#"{"statusCode":200,"isBase64Encoded":false,"body":"aGk="}"#,
            r#"{"statusCode":200,"isBase64Encoded":true,"body":"!!"}"#,
            r#"{"statusCode":200,"isBase64Encoded":true,"body":5}"#,
            r#"{"statusCode":200,"isBase64Encoded":true}"#,
            r#"{"statusCode":200,"body":"esc\"aped\\ \u00e9 \ud83d\ude00"}"#,
            r#"{"statusCode":200,"body":["x"]}"#,
            r#"{"statusCode":200,"body":"x","body":"y"}"#,
            r#"{"statusCode":200,"extra":{"nested":[1,2,{"k":"v"}],"n":1e5},"body":"ok"}"#,
            r#"{"statusCode":200,"extra":1e400}"#,
            r#"{"statusCode":200,"extra":"\ud800"}"#,
            r#"{"statusCode":200,"extra":"\q"}"#,
            r#"{"statusCode":200,"body":"x",}"#,
            r#"{"statusCode":200} trailing"#,
            r#"{"statusCode":200"#,
            r#"[1,2,"#,
            r#"[1,{"a":1e400}]"#,
            r#"[]"#,
            r#"null"#,
            r#"12"#,
            r#"-3.5"#,
            r#"true"#,
            r#""s""#,
            "",
            "  {\"statusCode\" : 204 }  ",
            &deep,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .chain([
            b"{\"statusCode\":200,\"body\":\"\xff\"}".to_vec(),
            b"{\"statusCode\":200,\"extra\":\"\xff\"}".to_vec(),
            b"{\"statusCode\":200,\"headers\":{\"\xff\":\"1\"}}".to_vec(),
        ])
        .collect();
        for raw in &cases {
            assert_eq!(
                summary(parse_response(raw)),
                summary(reference_parse(raw)),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    /// The `serde_json::Value` builder `build` replaced, kept as the reference.
    fn reference_build(i: &EventInput<'_>) -> Value {
        let mut headers = Map::new();
        let mut multi_headers: Map<String, Value> = Map::new();
        for (name, value) in i.headers.iter() {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let v = String::from_utf8_lossy(value).into_owned();
            headers.insert(name.clone(), Value::String(v.clone()));
            match multi_headers.get_mut(&name) {
                Some(Value::Array(a)) => a.push(Value::String(v)),
                _ => {
                    multi_headers.insert(name, json!([v]));
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
            Value::Object(
                i.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect(),
            )
        };
        let (body, is_b64) = if i.body.is_empty() {
            (Value::Null, false)
        } else {
            match std::str::from_utf8(i.body) {
                Ok(s) => (Value::String(s.to_owned()), false),
                Err(_) => (Value::String(B64.encode(i.body)), true),
            }
        };
        let header = |n: &str| i.headers.get(n).and_then(|v| std::str::from_utf8(v).ok());
        let host = header("host").unwrap_or("127.0.0.1");
        let (api_key, api_key_id) = match i.api_key {
            Some((v, id)) => (json!(v), json!(id)),
            None => (Value::Null, Value::Null),
        };
        let mut event = json!({
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
        let text = |v: &Value| match v {
            Value::String(s) => Value::String(s.clone()),
            other => Value::String(other.to_string()),
        };
        match i.authorizer {
            Some(crate::authorizer::Authorized::Lambda { answer, latency_ms }) => {
                let mut authorizer = serde_json::Map::new();
                for (k, v) in &answer.context {
                    authorizer.insert(k.clone(), text(v));
                }
                authorizer.insert("principalId".into(), json!(answer.principal_id));
                authorizer.insert("integrationLatency".into(), json!(latency_ms));
                event["requestContext"]["authorizer"] = Value::Object(authorizer);
            }
            Some(crate::authorizer::Authorized::Jwt(claims)) => {
                let claims: serde_json::Map<_, _> =
                    claims.iter().map(|(k, v)| (k.clone(), text(v))).collect();
                event["requestContext"]["authorizer"] = json!({ "claims": claims });
            }
            None => {}
        }
        if let Some(arn) = i.authorizer_request {
            let o = event.as_object_mut().unwrap();
            o.remove("body");
            o.remove("isBase64Encoded");
            o.insert("type".into(), json!("REQUEST"));
            o.insert("methodArn".into(), json!(arn));
        }
        event
    }

    /// The fields of a request head holding `pairs`, parsed as the server parses them.
    fn header_map(pairs: &[(&'static str, &[u8])]) -> Fields {
        keygate_http::Request::build("GET", "/", pairs).expect("a valid head").headers
    }

    #[test]
    fn build_writes_the_same_event_as_the_value_builder() {
        let rich = header_map(&[
            ("host", b"api.example.com"),
            ("user-agent", b"curl/8.5"),
            ("x-multi", b"1"),
            ("accept", b"*/*"),
            ("x-multi", b"2"),
            ("x-quote", b"a \"q\" \\ b"),
            ("x-latin1", b"caf\xe9"),
            ("x-multi", b"3"),
        ]);
        let odd = header_map(&[("host", b"localhost:3000"), ("user-agent", b"\xff\xfe")]);
        let empty = header_map(&[]);
        let params = vec![
            ("id".to_owned(), "42".to_owned()),
            ("proxy".to_owned(), "a/b c".to_owned()),
            ("id".to_owned(), "43".to_owned()),
        ];
        let times = [
            time::macros::datetime!(2026-11-18 09:05:07.123456 UTC),
            time::macros::datetime!(1999-01-01 00:00:00 UTC),
            time::macros::datetime!(0042-12-31 23:59:59.999 UTC),
            time::macros::datetime!(2026-06-30 12:00:00 +02:00),
        ];
        let peers: [SocketAddr; 2] =
            ["127.0.0.1:5555".parse().unwrap(), "[::1]:80".parse().unwrap()];
        let queries = [
            None,
            Some(""),
            Some("&"),
            Some("x=1&y=z&x=2&=e&flag&x=3"),
            Some("a+b=c%20d&%E2%82%AC=%ff&b=1&a+b=2"),
        ];
        let bodies: [&[u8]; 4] =
            [b"", b"hello \"json\" \n\t\x01", b"\xff\x00\x01binary", "é".as_bytes()];
        let mut n = 0;
        for (h, headers) in [&rich, &odd, &empty].into_iter().enumerate() {
            for (q, query) in queries.iter().enumerate() {
                let input = EventInput {
                    method: "POST",
                    path: "/candidates/42",
                    stage: "dev",
                    resource: "/candidates/{id}",
                    headers,
                    query: *query,
                    params: if q % 2 == 0 { &params } else { &[] },
                    body: bodies[(h + q) % bodies.len()],
                    peer: peers[q % 2],
                    request_id: "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
                    api_id: "a1b2c3d4e5",
                    deployment_id: "dep123",
                    api_key: (q % 2 == 1).then_some(("secret-key-value", "key-id-1")),
                    time: times[(h + q) % times.len()],
                    authorizer: None,
                    authorizer_request: None,
                };
                let built: Value = serde_json::from_slice(&build(&input)).unwrap();
                assert_eq!(built, reference_build(&input), "headers #{h}, query {query:?}");
                n += 1;
            }
        }
        assert_eq!(n, 15);

        // Strings that need escaping in every position the writer fills (the stage path is
        // written in two pieces).
        let odd_strings = header_map(&[("host", b"h\"ost"), ("user-agent", b"ua\t\\")]);
        let params = vec![("i\"d".to_owned(), "v\u{1}\\".to_owned())];
        let input = EventInput {
            method: "GET",
            path: "/a\"b/\u{7}c",
            stage: "st\\age",
            resource: "/{i\"d}",
            headers: &odd_strings,
            query: Some("k%22=%5C%0A"),
            params: &params,
            body: b"\"",
            peer: peers[0],
            request_id: "r\"id",
            api_id: "a\\",
            deployment_id: "d\n",
            api_key: Some(("v\"", "i\\")),
            time: times[0],
            authorizer: None,
            authorizer_request: None,
        };
        let built: Value = serde_json::from_slice(&build(&input)).unwrap();
        assert_eq!(built, reference_build(&input));

        // What an authorizer let through, and a REQUEST authorizer's own event.
        let answer = crate::authorizer::Answer::parse(
            br#"{"principalId":"u\"1","policyDocument":{"Version":"2012-10-17","Statement":[]},
                "context":{"n":12,"b":true,"s":"x\ny","principalId":"spoof"}}"#,
        )
        .unwrap();
        let authorized = crate::authorizer::Authorized::Lambda {
            answer: std::sync::Arc::new(answer),
            latency_ms: 7,
        };
        let with = EventInput { authorizer: Some(&authorized), ..input };
        let built: Value = serde_json::from_slice(&build(&with)).unwrap();
        assert_eq!(built, reference_build(&with));
        assert_eq!(
            built["requestContext"]["authorizer"],
            json!({"principalId": "u\"1", "integrationLatency": 7, "n": "12", "b": "true",
                   "s": "x\ny"})
        );
        let claims: crate::authorizer::Claims = serde_json::from_value(json!({
            "sub": "u\"1", "exp": 1_700_000_000, "email_verified": true, "groups": ["a", "b"]
        }))
        .unwrap();
        let authorized = crate::authorizer::Authorized::Jwt(std::sync::Arc::new(claims));
        let with = EventInput { authorizer: Some(&authorized), ..input };
        let built: Value = serde_json::from_slice(&build(&with)).unwrap();
        assert_eq!(built, reference_build(&with));
        assert_eq!(
            built["requestContext"]["authorizer"],
            json!({"claims": {"sub": "u\"1", "exp": "1700000000", "email_verified": "true",
                              "groups": "[\"a\",\"b\"]"}})
        );
        let request =
            EventInput { authorizer_request: Some("arn:aws:execute-api:r:a:i/s/GET/x"), ..input };
        let built: Value = serde_json::from_slice(&build(&request)).unwrap();
        assert_eq!(built, reference_build(&request));
        assert_eq!(built["type"], "REQUEST");
        assert!(built.get("body").is_none());
    }

    #[test]
    fn build_fields() {
        let headers = header_map(&[("host", b"abc.execute-api.eu-west-1.amazonaws.com")]);
        let input = EventInput {
            method: "GET",
            path: "/x",
            stage: "prod",
            resource: "/x",
            headers: &headers,
            query: None,
            params: &[],
            body: b"",
            peer: "10.0.0.1:1".parse().unwrap(),
            request_id: "rid",
            api_id: "api",
            deployment_id: "dep",
            api_key: None,
            time: time::macros::datetime!(2026-11-18 09:05:07.123 UTC),
            authorizer: None,
            authorizer_request: None,
        };
        let ev: Value = serde_json::from_slice(&build(&input)).unwrap();
        assert_eq!(ev["headers"], json!({"host": "abc.execute-api.eu-west-1.amazonaws.com"}));
        assert_eq!(ev["queryStringParameters"], Value::Null);
        assert_eq!(ev["body"], Value::Null);
        assert_eq!(ev["isBase64Encoded"], false);
        let ctx = &ev["requestContext"];
        assert_eq!(ctx["requestTime"], "18/Nov/2026:09:05:07 +0000");
        assert_eq!(ctx["requestTimeEpoch"], 1_794_992_707_123_i64);
        assert_eq!(ctx["path"], "/prod/x");
        assert_eq!(ctx["domainPrefix"], "abc");
        assert_eq!(ctx["identity"]["sourceIp"], "10.0.0.1");
        assert_eq!(ctx["identity"]["userAgent"], Value::Null);
        assert_eq!(ctx["identity"].as_object().unwrap().len(), 15);
        assert_eq!(ev.as_object().unwrap().len(), 12);
        assert_eq!(ctx.as_object().unwrap().len(), 16);
    }
}
