//! The API key CSV import's parsing (decoding, strict quoting, rows and fields): any bytes are
//! read or refused, never a panic.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        keygate_control::import::fuzz_parse(data);
    });
}
