//! Where a service's DynamoDB tables live: `--dynamodb-endpoint` (any DynamoDB), else DynamoDB
//! Local run by keygate (`keygate_dynamodb::engine`) with its data in `<data dir>/dynamodb`.
//!
//! `serve` and `up` start the engine when a deployed service declares a table and stop it at
//! shutdown; `deploy` creates its tables on the engine a serving keygate runs on the same data
//! directory, else on one it starts for the deploy and stops after.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use keygate_dynamodb::engine::{DIR_VARIABLE, cache_dir};
use keygate_dynamodb::{Client, Credentials, Engine, Install, PidWatch};

use crate::cli::DynamoArgs;

/// The tables' engine of one keygate command.
pub(crate) struct Dynamo {
    external: Option<String>,
    db_dir: PathBuf,
    engine: Option<Engine>,
    endpoint: Option<String>,
    watch: Option<PidWatch>,
}

impl Dynamo {
    pub(crate) fn new(args: &DynamoArgs, data_dir: &Path) -> Self {
        Self {
            external: args.dynamodb_endpoint.clone(),
            db_dir: data_dir.join("dynamodb"),
            engine: None,
            endpoint: None,
            watch: None,
        }
    }

    /// Tells `watch` of the engine's java processes (keygate's watchdog).
    pub(crate) fn watched_by(mut self, watch: Option<PidWatch>) -> Self {
        self.watch = watch;
        self
    }

    /// The endpoint, starting DynamoDB Local on first need. With `reuse`, an engine that another
    /// keygate serves on this data directory is used instead of a second one on its files.
    pub(crate) async fn endpoint(&mut self, reuse: bool) -> Result<String> {
        if let Some(endpoint) = &self.endpoint {
            return Ok(endpoint.clone());
        }
        let endpoint = match &self.external {
            Some(endpoint) => endpoint.clone(),
            None => match Engine::running(&self.db_dir).await.filter(|_| reuse) {
                Some(endpoint) => endpoint,
                None => {
                    let engine = self.start().await?;
                    let endpoint = engine.endpoint().to_owned();
                    self.engine = Some(engine);
                    endpoint
                }
            },
        };
        self.endpoint = Some(endpoint.clone());
        Ok(endpoint)
    }

    async fn start(&self) -> Result<Engine> {
        let env_dir = std::env::var_os(DIR_VARIABLE).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cache = cache_dir().context(
            "no cache directory for DynamoDB Local (set XDG_CACHE_HOME or HOME, or \
             KEYGATE_DYNAMODB_LOCAL_DIR)",
        )?;
        let install = tokio::task::spawn_blocking(move || {
            Install::ensure(env_dir.as_deref(), &cache, |message| eprintln!("note: {message}"))
        })
        .await??;
        let engine = Engine::start(&install, &self.db_dir, self.watch.clone()).await?;
        Ok(engine)
    }

    /// A client of the endpoint for `region`.
    pub(crate) async fn client(&mut self, region: &str, reuse: bool) -> Result<Client> {
        let endpoint = self.endpoint(reuse).await?;
        Ok(Client::new(&endpoint, region, self.credentials())?)
    }

    /// Credentials for the engine: keygate's local ones, or for another endpoint the
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` keygate runs with (if set).
    fn credentials(&self) -> Credentials {
        if self.external.is_some()
            && let (Ok(access_key_id), Ok(secret_access_key)) =
                (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY"))
        {
            return Credentials { access_key_id, secret_access_key };
        }
        Credentials::local()
    }

    /// What functions get to reach the tables: the endpoint (SDK v3, boto3, aws-sdk-rust read
    /// it; keygate's Node bootstrap points aws-sdk v2 at it) and credentials. Empty until an
    /// endpoint is known.
    pub(crate) fn function_env(&self) -> Vec<(String, String)> {
        let Some(endpoint) = &self.endpoint else { return Vec::new() };
        let credentials = self.credentials();
        vec![
            ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), endpoint.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB_STREAMS".to_owned(), endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".to_owned(), credentials.access_key_id),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), credentials.secret_access_key),
        ]
    }

    /// Whether this process runs the engine.
    pub(crate) fn runs_engine(&self) -> bool {
        self.engine.is_some()
    }

    /// Stops the engine this process started, if any.
    pub(crate) async fn stop(self) {
        if let Some(engine) = self.engine {
            engine.stop().await;
        }
    }
}
