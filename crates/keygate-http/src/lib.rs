//! keygate's own HTTP/1.1: the server that the data plane and the Lambda Runtime API listen with
//! ([`server`]), and the wire pieces the data plane's upstream client shares with it ([`wire`]).
//!
//! Why not hyper, as the admin API uses (through axum): keygate's listeners read bodies whole
//! (once the head has been admitted) and answer whole, so hyper's general machinery (dispatcher state machines, body streams, a timer
//! registration per read) was most of what keygate added per request (docs/benchmarks.md,
//! change 20). Heads are parsed with `httparse`, what hyper uses inside; the messages keep their
//! header fields as flat lists rather than `http::HeaderMap`s ([`message`]).
//!
//! HTTP/2 (a TLS listener whose [`Tls`] offers `h2`) is hyper's and the `h2` crate's framing in
//! front of the same [`Service`]: each request head goes through the HTTP/1.1 parser, so both
//! protocols read a request the same way (`h2`, private).

mod h2;
pub mod message;
pub mod server;
pub mod tls;
pub mod transport;
pub mod wire;

pub use message::{Fields, Headers, InvalidHeader, Request, Response};
pub use server::{Admit, Options, Service, serve};
pub use tls::Tls;
pub use transport::Stream;

/// For the fuzz targets (`fuzz/`) only: parses every complete request head at the start of
/// `data`, as the server does, until one is incomplete or refused.
#[doc(hidden)]
pub fn fuzz_parse_request(data: &[u8]) {
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(_)) = server::parse_request(&mut buf) {}
}
