//! candidate-service: the seed story's REST service (submit, list and fetch
//! job candidates) written as AWS Lambda functions on the official
//! [`lambda_http`] crate, for keygate's example deployment.
//!
//! One binary serves all three functions. Which one a process runs is chosen
//! once, at init, from the `_HANDLER` environment variable (see [`Handler`]),
//! exactly as Lambda's `provided.al2023` runtime would pass it. Candidates are
//! stored in SQLite (see [`App`]); every process opens the database once at
//! cold start and reuses the connection for all warm invocations.
//!
//! The HTTP-facing logic lives in [`handle`], which takes a plain
//! [`lambda_http::Request`] so it can be exercised without a Runtime API.

mod config;
mod handlers;
mod store;

pub use config::{Config, ConfigError, DB_ENV, TABLE_ENV, TableName, TableNameError};
pub use handlers::{Handler, UnknownHandler, handle};
pub use store::{App, Candidate, Experience, OpenError};
