//! Handler tests: call [`candidate_service::handle`] directly with
//! `lambda_http::Request` values (built by hand or deserialised from a real
//! REST v1 proxy event) against a temporary SQLite file. No network.

use std::collections::HashMap;
use std::path::Path;

use candidate_service::{App, Config, Handler, TableName, handle};
use lambda_http::http::{Request as HttpRequest, Response, StatusCode};
use lambda_http::{Body, Request, RequestExt};
use serde_json::{Value, json};

fn open(path: &Path) -> App {
    App::open(path, TableName::new("candidate-dev").unwrap()).unwrap()
}

fn app_in(dir: &tempfile::TempDir) -> App {
    open(&dir.path().join("candidates.db"))
}

fn post(body: &str) -> Request {
    HttpRequest::builder()
        .method("POST")
        .uri("/dev/candidates")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn list_request() -> Request {
    HttpRequest::builder().method("GET").uri("/dev/candidates").body(Body::Empty).unwrap()
}

fn get_request(id: &str) -> Request {
    HttpRequest::builder()
        .method("GET")
        .uri(format!("/dev/candidates/{id}"))
        .body(Body::Empty)
        .unwrap()
        .with_path_parameters(HashMap::from([("id".to_owned(), id.to_owned())]))
}

fn text(response: &Response<Body>) -> &str {
    match response.body() {
        Body::Text(text) => text,
        other => panic!("expected a text body, got {other:?}"),
    }
}

fn json_of(response: &Response<Body>) -> Value {
    serde_json::from_str(text(response)).unwrap()
}

fn assert_headers(response: &Response<Body>) {
    let headers = response.headers();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["access-control-allow-origin"], "*");
}

async fn submit(app: &App, body: Value) -> String {
    let response = handle(app, Handler::Submit, post(&body.to_string())).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{}", text(&response));
    json_of(&response)["candidateId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn submit_list_and_get_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir);

    let body = json!({"fullname": "Shekhar Gulati", "email": "test@test.com", "experience": 12});
    let response = handle(&app, Handler::Submit, post(&body.to_string())).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_headers(&response);
    let created = json_of(&response);
    assert_eq!(created["message"], "Sucessfully submitted candidate with email test@test.com");
    let id = created["candidateId"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);

    let response = handle(&app, Handler::List, list_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_headers(&response);
    let listed = json_of(&response);
    let candidates = listed["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 1);
    let candidate = &candidates[0];
    assert_eq!(candidate["id"], id.as_str());
    assert_eq!(candidate["fullname"], "Shekhar Gulati");
    assert_eq!(candidate["email"], "test@test.com");
    assert_eq!(candidate["experience"], 12);
    let submitted = candidate["submittedAt"].as_i64().unwrap();
    assert!(submitted > 1_600_000_000_000, "epoch milliseconds, got {submitted}");
    assert_eq!(candidate["updatedAt"], submitted);
    let keys: Vec<&str> = candidate.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6, "{keys:?}");

    let response = handle(&app, Handler::Get, get_request(&id)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_headers(&response);
    assert_eq!(&json_of(&response), candidate);
}

#[tokio::test]
async fn list_when_empty_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir);
    let response = handle(&app, Handler::List, list_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_headers(&response);
    assert_eq!(text(&response), r#"{"candidates":[]}"#);
}

#[tokio::test]
async fn list_keeps_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir);
    let mut ids = Vec::new();
    for n in 0..3 {
        let body =
            json!({"fullname": format!("C{n}"), "email": format!("c{n}@x.io"), "experience": n});
        ids.push(submit(&app, body).await);
    }
    let listed = json_of(&handle(&app, Handler::List, list_request()).await.unwrap());
    let got: Vec<&str> = listed["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids);
}

#[tokio::test]
async fn get_unknown_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir);
    let response = handle(&app, Handler::Get, get_request("nope-123")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_headers(&response);
    assert_eq!(text(&response), r#"{"message":"candidate nope-123 not found"}"#);
}

#[tokio::test]
async fn get_without_path_parameter_is_400() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir);
    let response = handle(&app, Handler::Get, list_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&response)["message"], "path parameter id is required");
}

#[tokio::test]
async fn bad_json_is_400_with_detail() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir);
    let response = handle(&app, Handler::Submit, post("{not json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_headers(&response);
    let message = json_of(&response)["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("request body is not valid JSON: key must be a string"),
        "{message}"
    );

    let response = handle(&app, Handler::Submit, post("")).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&response)["message"], "request body is not valid JSON: the body is empty");

    // Nothing was stored.
    let listed = handle(&app, Handler::List, list_request()).await.unwrap();
    assert_eq!(text(&listed), r#"{"candidates":[]}"#);
}

#[tokio::test]
async fn invalid_fields_are_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir);
    let cases = [
        (json!({"email": "a@x.io", "experience": 1}), "fullname is required"),
        (json!({"fullname": "", "email": "a@x.io", "experience": 1}), "fullname must not be empty"),
        (json!({"fullname": "A", "experience": 1}), "email is required"),
        (json!({"fullname": "A", "email": 5, "experience": 1}), "email must be a string"),
        (json!({"fullname": "A", "email": "a@x.io"}), "experience is required"),
        (
            json!({"fullname": "A", "email": "a@x.io", "experience": "3"}),
            "experience must be a number",
        ),
        (
            json!({"fullname": "A", "email": "a@x.io", "experience": -2}),
            "experience must be a non-negative number",
        ),
        (json!(["fullname"]), "request body must be a JSON object"),
    ];
    for (body, expected) in cases {
        let response = handle(&app, Handler::Submit, post(&body.to_string())).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_headers(&response);
        assert_eq!(text(&response), json!({ "message": expected }).to_string(), "{body}");
    }
}

#[tokio::test]
async fn fractional_experience_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir);
    let id = submit(&app, json!({"fullname": "A", "email": "a@x.io", "experience": 2.5})).await;
    let other = submit(&app, json!({"fullname": "B", "email": "b@x.io", "experience": 0})).await;
    let got = json_of(&handle(&app, Handler::Get, get_request(&id)).await.unwrap());
    assert_eq!(got["experience"], 2.5);
    let got = handle(&app, Handler::Get, get_request(&other)).await.unwrap();
    assert!(text(&got).contains(r#""experience":0,"#), "{}", text(&got));
}

#[tokio::test]
async fn processes_share_the_database_file() {
    // Two Apps on one file stand in for two function processes (submit and
    // list); the parent directories do not exist yet.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join(".keygate").join("candidates.db");
    let submitter = open(&path);
    let lister = open(&path);
    let id = submit(&submitter, json!({"fullname": "A", "email": "a@x.io", "experience": 1})).await;
    let listed = json_of(&handle(&lister, Handler::List, list_request()).await.unwrap());
    assert_eq!(listed["candidates"][0]["id"], id.as_str());
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn tables_are_separate_per_stage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("candidates.db");
    let dev = open(&path);
    let prod = App::open(&path, TableName::new("candidate-prod").unwrap()).unwrap();
    submit(&dev, json!({"fullname": "A", "email": "a@x.io", "experience": 1})).await;
    let listed = handle(&prod, Handler::List, list_request()).await.unwrap();
    assert_eq!(text(&listed), r#"{"candidates":[]}"#);
}

#[tokio::test]
async fn connect_uses_config() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db").to_string_lossy().into_owned();
    let config = Config::from_lookup(|name| match name {
        "CANDIDATE_DB" => Some(db.clone()),
        "CANDIDATE_TABLE" => Some("candidate-test".to_owned()),
        _ => None,
    })
    .unwrap();
    let app = App::connect(&config).unwrap();
    assert_eq!(app.table().as_str(), "candidate-test");
    let listed = handle(&app, Handler::List, list_request()).await.unwrap();
    assert_eq!(text(&listed), r#"{"candidates":[]}"#);
}

/// A REST API (v1) lambda-proxy event for `GET /dev/candidates/{id}` as API
/// Gateway (and keygate) sends it.
fn rest_event(
    method: &str,
    resource: &str,
    path: &str,
    id: Option<&str>,
    body: Option<&str>,
) -> String {
    json!({
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {
            "Host": "localhost:3000",
            "x-api-key": "not-a-real-key-0123456789",
            "Content-Type": "application/json"
        },
        "multiValueHeaders": {
            "Host": ["localhost:3000"],
            "x-api-key": ["not-a-real-key-0123456789"],
            "Content-Type": ["application/json"]
        },
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": id.map(|id| json!({ "id": id })),
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "keygate",
            "resourceId": "abc123",
            "resourcePath": resource,
            "httpMethod": method,
            "path": format!("/dev{path}"),
            "stage": "dev",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "requestTime": "09/Apr/2015:12:34:56 +0000",
            "requestTimeEpoch": 1428582896000_i64,
            "protocol": "HTTP/1.1",
            "domainName": "localhost",
            "identity": {
                "apiKey": "not-a-real-key-0123456789",
                "apiKeyId": "k1",
                "sourceIp": "127.0.0.1",
                "userAgent": "curl/8.0"
            }
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

#[tokio::test]
async fn rest_v1_proxy_event_yields_path_parameter() {
    let id = "3f1c2e9a-0b7d-4c1e-9a53-6d2f8e4b7c10";
    let event = rest_event("GET", "/candidates/{id}", &format!("/candidates/{id}"), Some(id), None);
    let request: Request = lambda_http::request::from_str(&event).unwrap();
    assert_eq!(request.path_parameters().first("id"), Some(id));
    assert_eq!(request.method(), "GET");
    // lambda_http puts the stage in the URI path; the raw path has none.
    assert_eq!(request.uri().path(), format!("/dev/candidates/{id}"));
    assert_eq!(request.raw_http_path(), format!("/candidates/{id}"));

    // Same through the explicit LambdaRequest type.
    let lambda_request: lambda_http::request::LambdaRequest = serde_json::from_str(&event).unwrap();
    let request: Request = lambda_request.into();
    assert_eq!(request.path_parameters().first("id"), Some(id));
}

#[tokio::test]
async fn handlers_work_on_deserialised_events() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir);

    let body = json!({"fullname": "Event Person", "email": "e@x.io", "experience": 4}).to_string();
    let event = rest_event("POST", "/candidates", "/candidates", None, Some(&body));
    let response = handle(&app, Handler::Submit, lambda_http::request::from_str(&event).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = json_of(&response)["candidateId"].as_str().unwrap().to_owned();

    let event =
        rest_event("GET", "/candidates/{id}", &format!("/candidates/{id}"), Some(&id), None);
    let response =
        handle(&app, Handler::Get, lambda_http::request::from_str(&event).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(&response)["fullname"], "Event Person");

    let event = rest_event("GET", "/candidates/{id}", "/candidates/missing", Some("missing"), None);
    let response =
        handle(&app, Handler::Get, lambda_http::request::from_str(&event).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
