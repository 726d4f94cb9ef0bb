//! A client of DynamoDB's JSON protocol (1.0): `POST /` with `X-Amz-Target:
//! DynamoDB_20120810.<Operation>` (or `DynamoDBStreams_20120810.<Operation>`), a JSON body, and a
//! SigV4 signature for the `dynamodb` service. Only plain `http://` endpoints: DynamoDB Local and
//! other local engines (TLS to AWS itself comes with keygate's TLS support).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long one call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers larger than this are refused (a `DescribeTable` is a few KB; `GetRecords` at most
/// 1 MB of records plus framing).
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// Credentials the client signs with.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Credentials {
    /// The credentials keygate uses with its local engine and gives its functions: DynamoDB
    /// Local checks only that the access key is alphanumeric, and with `-sharedDb` every key
    /// sees the same tables.
    pub fn local() -> Self {
        Self { access_key_id: "keygate".to_owned(), secret_access_key: "keygate-local".to_owned() }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("DynamoDB endpoint {0:?} is not an http://host:port URL")]
    BadEndpoint(String),
    #[error("cannot reach DynamoDB at {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    /// DynamoDB answered with an error: its type (the part of `__type` after `#`) and message.
    #[error("DynamoDB {operation}: {kind}: {message}")]
    Service { operation: String, kind: String, message: String },
    #[error("DynamoDB {operation}: unexpected answer ({status}): {message}")]
    BadAnswer { operation: String, status: u16, message: String },
}

impl Error {
    /// The DynamoDB error type (`ResourceNotFoundException`, ...), if DynamoDB answered one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Self::Service { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// A DynamoDB endpoint with the region and credentials to sign for.
#[derive(Clone)]
pub struct Client {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    endpoint: String,
    authority: String,
    region: String,
    credentials: Credentials,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str, region: &str, credentials: Credentials) -> Result<Self, Error> {
        let bad = || Error::BadEndpoint(endpoint.to_owned());
        let rest = endpoint.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(bad());
        }
        authority.parse::<http::uri::Authority>().map_err(|_| bad())?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let http = HttpClient::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            http,
            endpoint: format!("http://{authority}"),
            authority: authority.to_owned(),
            region: region.to_owned(),
            credentials,
        })
    }

    /// `http://host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Calls a DynamoDB operation (`CreateTable`) with its JSON input.
    pub async fn call(&self, operation: &str, input: &Value) -> Result<Value, Error> {
        self.call_target(&format!("DynamoDB_20120810.{operation}"), operation, input).await
    }

    /// Calls a DynamoDB Streams operation (`GetRecords`) with its JSON input.
    pub async fn call_streams(&self, operation: &str, input: &Value) -> Result<Value, Error> {
        self.call_target(&format!("DynamoDBStreams_20120810.{operation}"), operation, input).await
    }

    async fn call_target(
        &self,
        target: &str,
        operation: &str,
        input: &Value,
    ) -> Result<Value, Error> {
        let body = serde_json::to_vec(input).unwrap_or_default();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let amz_date = keygate_sigv4::format_amz_date(i64::try_from(now).unwrap_or(0));
        let content_type = "application/x-amz-json-1.0";
        let headers = [
            ("host", self.authority.as_str()),
            ("content-type", content_type),
            ("x-amz-target", target),
        ];
        let signed = keygate_sigv4::SignedRequest {
            method: "POST",
            path: "/",
            query: None,
            headers: &headers,
            body: &body,
        };
        let authorization = keygate_sigv4::sign(
            &signed,
            &self.credentials.access_key_id,
            &self.credentials.secret_access_key,
            &self.region,
            "dynamodb",
            &amz_date,
        );
        let request = http::Request::post(format!("{}/", self.endpoint))
            .header("host", &self.authority)
            .header("content-type", content_type)
            .header("x-amz-target", target)
            .header("x-amz-date", &amz_date)
            .header("authorization", authorization)
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| Error::BadEndpoint(self.endpoint.clone()))?;
        let unreachable =
            |message: String| Error::Unreachable { endpoint: self.endpoint.clone(), message };
        let answer = tokio::time::timeout(CALL_TIMEOUT, async {
            let response =
                self.http.request(request).await.map_err(|e| unreachable(e.to_string()))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, Error>((status, body))
        })
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))??;
        let (status, body) = answer;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return json.ok_or_else(|| Error::BadAnswer {
                operation: operation.to_owned(),
                status: status.as_u16(),
                message: "not JSON".to_owned(),
            });
        }
        let kind = json
            .as_ref()
            .and_then(|j| j.get("__type"))
            .and_then(Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned());
        let message = json
            .as_ref()
            .and_then(|j| j.get("message").or_else(|| j.get("Message")))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match kind {
            Some(kind) => Err(Error::Service { operation: operation.to_owned(), kind, message }),
            None => Err(Error::BadAnswer {
                operation: operation.to_owned(),
                status: status.as_u16(),
                message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_endpoints_are_taken() {
        for ok in ["http://127.0.0.1:8000", "http://localhost:8000/", "http://[::1]:8000"] {
            let c = Client::new(ok, "us-east-1", Credentials::local()).unwrap();
            assert!(c.endpoint().starts_with("http://") && !c.endpoint().ends_with('/'), "{ok}");
        }
        for bad in [
            "https://dynamodb.us-east-1.amazonaws.com",
            "127.0.0.1:8000",
            "http://",
            "http://a/b",
            "http://u@h:1",
        ] {
            assert!(Client::new(bad, "us-east-1", Credentials::local()).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_do_not_show_the_secret() {
        let shown = format!("{:?}", Credentials::local());
        assert!(shown.contains("keygate") && !shown.contains("keygate-local"), "{shown}");
    }
}
