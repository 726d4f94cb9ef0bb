//! Domain types shared by every keygate crate.
//!
//! Layout:
//! - [`clock`]: time as keygate reads it (a monotonic instant, UTC unix milliseconds), with a
//!   system and a manual clock; shared by the limiters, the gateway and the admin API.
//! - [`service`]: the validated form of a `serverless.yml` (what `keygate-config` produces and what
//!   a deployment snapshots); [`runtime`]: a function's runtime as a type (which launcher runs it);
//!   [`authorizer`]: a route's Lambda authorizer as declared.
//! - [`health`]: whether the process is ready (table loaded, store answering), for `/readyz`.
//! - [`key`]: API keys, their secret values and digests.
//! - [`keyset`]: every accepted key value, packed for the gateway (millions of keys).
//! - [`plan`]: usage-plan settings (throttle, quota).
//! - [`model`]: stored control-plane records (APIs, stages, deployments, usage plans).
//! - [`response`]: the one table of gateway-made responses (status, body, AWS error type).
//!
//! Architecture invariant: this crate does no IO and knows nothing of tokio, hyper or sqlx.

pub mod authorizer;
pub mod clock;
pub mod date;
pub mod health;
pub mod key;
pub mod keyset;
pub mod model;
pub mod plan;
pub mod response;
pub mod runtime;
pub mod service;

pub use authorizer::{Authorizer, AuthorizerKind, IdentitySource, Jwt};
pub use key::{ApiKeyValue, KeyDigest};
pub use runtime::{Runtime, RuntimeKind};
pub use service::{
    ApiKeySource, Cors, DEFAULT_INTROSPECTION_PATH, Enforcement, FunctionPlaces, FunctionSpec,
    HttpEvent, HttpMethod, IndexSpec, Integration, KeySchema, ServiceDefinition, StreamEvent,
    StreamTable, TableSpec,
};
