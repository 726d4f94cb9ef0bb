//! `integration: mock`: an empty 200 with a JSON content type, as API Gateway's mock
//! integration without a template answers.

use bytes::Bytes;
use keygate_http::Response;

pub(super) fn answer() -> Response {
    let mut res = Response::new(http::StatusCode::OK, Bytes::new());
    res.headers.push_static("content-type", "application/json");
    res
}
