//! The three Lambda handlers (`candidates.submit`, `candidates.list`,
//! `candidates.get`) and the JSON responses they produce.
//!
//! Routing is done by the gateway, not here: a function process is bound to
//! one [`Handler`] at init and answers every event it receives with it. The
//! handlers therefore ignore the request path (which `lambda_http` prefixes
//! with the stage, e.g. `/dev/candidates`) and the method, and read only the
//! body and the `id` path parameter. Request bodies and headers are never
//! logged: events carry the caller's API key.

use std::fmt;
use std::str::FromStr;

use lambda_http::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE};
use lambda_http::http::{Response, StatusCode};
use lambda_http::{Body, Error, Request, RequestExt, tracing};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::store::{App, Candidate, Experience};

/// Which function this process implements, from the `_HANDLER` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handler {
    /// `candidates.submit`: `POST /candidates`.
    Submit,
    /// `candidates.list`: `GET /candidates`.
    List,
    /// `candidates.get`: `GET /candidates/{id}`.
    Get,
}

impl Handler {
    /// Every handler, in documentation order.
    pub const ALL: [Self; 3] = [Self::Submit, Self::List, Self::Get];

    /// The `handler:` value used in `serverless.yml`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Submit => "candidates.submit",
            Self::List => "candidates.list",
            Self::Get => "candidates.get",
        }
    }
}

impl fmt::Display for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Handler {
    type Err = UnknownHandler;

    /// Accepts `candidates.submit` etc., optionally behind a directory prefix
    /// as in the seed (`api/candidates.submit`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.rsplit('/').next().unwrap_or(s);
        Self::ALL.into_iter().find(|h| h.name() == name).ok_or_else(|| UnknownHandler(s.to_owned()))
    }
}

/// `_HANDLER` named no known function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownHandler(pub String);

impl fmt::Display for UnknownHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Handler::ALL.iter().map(|h| h.name()).collect();
        write!(f, "unknown handler {:?}; expected one of {}", self.0, known.join(", "))
    }
}

impl std::error::Error for UnknownHandler {}

/// Runs `handler` for one request. Client mistakes become 4xx JSON responses
/// and storage failures a 500 JSON response (logged without request data);
/// `Err` is returned only if a response cannot be built at all.
pub async fn handle(app: &App, handler: Handler, req: Request) -> Result<Response<Body>, Error> {
    let outcome = match handler {
        Handler::Submit => submit(app, &req).await,
        Handler::List => list(app).await,
        Handler::Get => get(app, &req).await,
    };
    let (status, body) = match outcome {
        Ok(reply) => reply,
        Err(Failure::Client(status, message)) => (status, json!({ "message": message })),
        Err(Failure::Storage(err)) => {
            tracing::error!(handler = handler.name(), error = %err, "storage error");
            (StatusCode::INTERNAL_SERVER_ERROR, json!({ "message": "internal server error" }))
        }
    };
    json_response(status, &body)
}

/// Why a handler did not produce its normal reply.
enum Failure {
    Client(StatusCode, String),
    Storage(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(err: rusqlite::Error) -> Self {
        Self::Storage(err)
    }
}

fn bad_request(message: impl Into<String>) -> Failure {
    Failure::Client(StatusCode::BAD_REQUEST, message.into())
}

type Reply = Result<(StatusCode, Value), Failure>;

/// `POST /candidates`: validates `{fullname, email, experience}` and stores
/// it. 201 with the new id (the seed answered 200; 201 is the REST norm for
/// a created resource).
async fn submit(app: &App, req: &Request) -> Reply {
    let submission = Submission::parse(req.body())?;
    let candidate = app.insert(submission.fullname, submission.email, submission.experience)?;
    tracing::info!(candidate_id = %candidate.id, "candidate submitted");
    Ok((
        StatusCode::CREATED,
        // Written in sorted order, so the text is the same whether serde_json keeps insertion
        // order or not (its `preserve_order` feature is on when built with keygate's workspace).
        json!({
            "candidateId": candidate.id,
            // Spelling kept from the seed story's response.
            "message": format!("Sucessfully submitted candidate with email {}", candidate.email),
        }),
    ))
}

/// `GET /candidates`: every stored candidate.
async fn list(app: &App) -> Reply {
    let candidates = app.list()?;
    Ok((StatusCode::OK, json!({ "candidates": candidates })))
}

/// `GET /candidates/{id}`: one candidate or 404.
async fn get(app: &App, req: &Request) -> Reply {
    let params = req.path_parameters();
    let Some(id) = params.first("id").filter(|id| !id.is_empty()) else {
        return Err(bad_request("path parameter id is required"));
    };
    match app.get(id)? {
        Some(candidate) => Ok((StatusCode::OK, to_value(&candidate))),
        None => Err(Failure::Client(StatusCode::NOT_FOUND, format!("candidate {id} not found"))),
    }
}

fn to_value(candidate: &Candidate) -> Value {
    // Serialising a struct of strings and numbers cannot fail.
    serde_json::to_value(candidate).unwrap_or(Value::Null)
}

/// A validated submission body.
#[derive(Debug)]
struct Submission {
    fullname: String,
    email: String,
    experience: Experience,
}

impl Submission {
    fn parse(body: &[u8]) -> Result<Self, Failure> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(bad_request("request body is not valid JSON: the body is empty"));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| bad_request(format!("request body is not valid JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(bad_request("request body must be a JSON object"));
        };
        Ok(Self {
            fullname: required_string(&fields, "fullname")?,
            email: required_string(&fields, "email")?,
            experience: required_experience(&fields)?,
        })
    }
}

fn required_string(fields: &Map<String, Value>, name: &str) -> Result<String, Failure> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(bad_request(format!("{name} is required"))),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(bad_request(format!("{name} must not be empty")))
        }
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(_) => Err(bad_request(format!("{name} must be a string"))),
    }
}

fn required_experience(fields: &Map<String, Value>) -> Result<Experience, Failure> {
    let number = match fields.get("experience") {
        None | Some(Value::Null) => return Err(bad_request("experience is required")),
        Some(Value::Number(n)) => n,
        Some(_) => return Err(bad_request("experience must be a number")),
    };
    let negative = || bad_request("experience must be a non-negative number");
    if let Some(n) = number.as_i64() {
        return if n < 0 { Err(negative()) } else { Ok(Experience::Whole(n)) };
    }
    if number.is_u64() {
        return Err(bad_request("experience is too large"));
    }
    match number.as_f64() {
        Some(x) if x.is_finite() && x >= 0.0 => Ok(Experience::Fractional(x)),
        Some(x) if x.is_finite() => Err(negative()),
        _ => Err(bad_request("experience is too large")),
    }
}

/// Builds a compact JSON response with the CORS header the gateway expects a
/// lambda-proxy function to set itself (`cors: true` in `serverless.yml`).
fn json_response(status: StatusCode, body: &impl Serialize) -> Result<Response<Body>, Error> {
    let text = serde_json::to_string(body)?;
    let response = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(Body::Text(text))?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Submission, String> {
        Submission::parse(body.as_bytes()).map_err(|f| match f {
            Failure::Client(status, message) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                message
            }
            Failure::Storage(err) => panic!("unexpected storage error {err}"),
        })
    }

    #[test]
    fn handler_names_parse() {
        assert_eq!("candidates.submit".parse(), Ok(Handler::Submit));
        assert_eq!("candidates.list".parse(), Ok(Handler::List));
        assert_eq!("candidates.get".parse(), Ok(Handler::Get));
        assert_eq!("api/candidates.get".parse(), Ok(Handler::Get));
        let err = "candidates.delete".parse::<Handler>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown handler \"candidates.delete\"; expected one of candidates.submit, \
             candidates.list, candidates.get"
        );
        assert!("".parse::<Handler>().is_err());
    }

    #[test]
    fn submission_validation_names_the_field() {
        let ok = parse(r#"{"fullname":" Ann ","email":"a@x.io","experience":3}"#).unwrap();
        assert_eq!((ok.fullname.as_str(), ok.experience), ("Ann", Experience::Whole(3)));
        let frac = parse(r#"{"fullname":"A","email":"a@x.io","experience":2.5}"#).unwrap();
        assert_eq!(frac.experience, Experience::Fractional(2.5));

        let cases = [
            ("", "request body is not valid JSON: the body is empty"),
            ("[1]", "request body must be a JSON object"),
            (r#"{"email":"a@x.io","experience":1}"#, "fullname is required"),
            (r#"{"fullname":null,"email":"a@x.io","experience":1}"#, "fullname is required"),
            (r#"{"fullname":"  ","email":"a@x.io","experience":1}"#, "fullname must not be empty"),
            (r#"{"fullname":7,"email":"a@x.io","experience":1}"#, "fullname must be a string"),
            (r#"{"fullname":"A","experience":1}"#, "email is required"),
            (r#"{"fullname":"A","email":"","experience":1}"#, "email must not be empty"),
            (r#"{"fullname":"A","email":"a@x.io"}"#, "experience is required"),
            (
                r#"{"fullname":"A","email":"a@x.io","experience":"3"}"#,
                "experience must be a number",
            ),
            (
                r#"{"fullname":"A","email":"a@x.io","experience":-1}"#,
                "experience must be a non-negative number",
            ),
            (
                r#"{"fullname":"A","email":"a@x.io","experience":-0.5}"#,
                "experience must be a non-negative number",
            ),
            (
                r#"{"fullname":"A","email":"a@x.io","experience":18446744073709551615}"#,
                "experience is too large",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(parse(body).err().as_deref(), Some(expected), "body {body:?}");
        }
        let bad = parse("{\"fullname\":").unwrap_err();
        assert!(bad.starts_with("request body is not valid JSON: EOF while parsing"), "{bad}");
    }
}
