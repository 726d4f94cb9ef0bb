//! SigV4: parsing the `Authorization` header and verifying a request against it. Any header
//! and request are refused or (never, for random input) accepted; never a panic.
//!
//! Input: the `Authorization` value on the first line, then `name: value` header lines, an
//! empty line, and the body; the request is `POST /apikeys?mode=import`.

use keygate_admin::sigv4;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else { return };
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let auth = lines.next().unwrap_or("");
        let headers: Vec<(&str, &str)> =
            lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim(), v)).collect();
        let req = sigv4::SignedRequest {
            method: "POST",
            path: "/apikeys",
            query: Some("mode=import&format=csv"),
            headers: &headers,
            body: body.as_bytes(),
        };
        let _ = sigv4::authorization_header(&req);
        if let Ok(parsed) = sigv4::parse_authorization(auth) {
            let _ = sigv4::check_scope(&parsed, "us-east-1", "apigateway");
            // 2015-08-30T12:36:00Z, the AWS test suite's date.
            let _ = sigv4::verify(&req, &parsed, "secret", 1_440_938_160);
        }
        let _ = sigv4::parse_amz_date(auth);
    });
}
