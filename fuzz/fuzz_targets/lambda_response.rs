//! The Lambda proxy response a function returns: any bytes become a response or an error
//! (a 502 to the client), never a panic.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = keygate_gateway::event::parse_response(data);
    });
}
