//! Control-plane operations: deploying a service definition and managing API keys.
//!
//! The CLI (and later the admin API) call these and nothing else, so every rule about keys and
//! deployments lives once, here. Operations take validated input (`keygate-types`) and a
//! [`ConfigStore`]; they never parse YAML or speak HTTP.
//!
//! Layout: [`deploy`] turns a `ServiceDefinition` into a deployment; [`keys`] creates, finds,
//! enables, disables and deletes keys.

use std::sync::Arc;

use keygate_store::ConfigStore;

pub mod admin;
pub mod audit;
pub mod deploy;
pub mod import;
pub mod info;
pub mod keys;
pub mod plans;
pub mod remove;
pub mod usage;

pub use deploy::{DeployReport, deploy};

/// Errors of control-plane operations. Messages never contain a key value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input that cannot be accepted; the message says what and how to fix it.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(keygate_store::Error),
}

impl From<keygate_store::Error> for Error {
    fn from(e: keygate_store::Error) -> Self {
        match e {
            keygate_store::Error::NotFound(m) => Self::NotFound(m),
            keygate_store::Error::Conflict(m) => Self::Conflict(m),
            other => Self::Store(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The store handle every operation takes.
pub type Store = Arc<dyn ConfigStore>;
