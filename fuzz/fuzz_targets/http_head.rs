//! The HTTP/1.1 request head parser: any bytes give a request, "incomplete" or an error status.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        keygate_http::fuzz_parse_request(data);
    });
}
