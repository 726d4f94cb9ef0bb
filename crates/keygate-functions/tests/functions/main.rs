//! Integration tests of the function host, run against the real `keygate-testfn` Lambda function
//! (built on the official `lambda_runtime`). Build it first: `cargo build -p keygate-testfn`.

mod artifacts;
mod common;
mod invoke;
mod isolation;
mod lifecycle;
mod logs;
mod node;
mod python;
